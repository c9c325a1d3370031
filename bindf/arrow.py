"""How the file header travels with the data.

Arrow schema metadata holds, as UTF-8 JSON text:

* ``bindf.format``: the format name (``"it02"``, ``"apx"`` …);
* ``bindf.header``: the file header (the first file's, for multi-file reads);
* ``bindf.source``: the path as a JSON string, or a JSON list of paths for multi-file
  reads (as :func:`path_text` gives them: valid UTF-8 whatever the file name);
* ``bindf.version``: the bindf version that decoded the file;
* ``bindf.errors``: counts of damaged records skipped under ``on_error="warn"/"skip"``
  (only present when something was skipped).

pandas frames get the same content as a dict in ``df.attrs["bindf"]``; polars frames
(which have no metadata slot) expose it through the ``df.bindf`` namespace.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from ._version import __version__

FORMAT_KEY = "bindf.format"
HEADER_KEY = "bindf.header"
SOURCE_KEY = "bindf.source"
VERSION_KEY = "bindf.version"
ERRORS_KEY = "bindf.errors"


def path_text(path: str) -> str:
    """``path`` as text that Arrow strings and metadata can hold (valid UTF-8).

    On POSIX a file name is bytes, and Python gives a name that is not valid UTF-8 (a
    Latin-1 ``é`` written by an instrument PC, a zip unpacked with the wrong code page)
    as a str with surrogate escapes, which UTF-8 cannot encode. Its undecodable bytes
    become ``\\xNN`` escapes here (``mesure_\\xe9.bin``): text to show and compare,
    not a name to open again. Readers keep opening the real path. Valid names come
    back unchanged.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate that stands for no byte (not from a file name)
        raw = path.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


#: The most bytes an Arrow ``string`` or ``binary`` array holds (its offsets are int32).
STRING_BYTES_MAX = (1 << 31) - 1


def repeated(value: pa.Scalar, n: int) -> pa.Array:
    """``pa.repeat(value, n)``: a column of one value (a file's path, a header value),
    refusing with ``pa.ArrowCapacityError`` a ``string`` or ``binary`` value too long
    for :data:`STRING_BYTES_MAX` over ``n`` rows, where ``pa.repeat`` hands back an
    invalid array (its offsets wrap around; reading the last rows crashes Python)."""
    size = text_bytes(value)
    if n > rows_within_limit([size]):
        raise pa.ArrowCapacityError(f"{n} rows of a {size}-byte value need {n * size} "
                                    f"bytes, beyond {value.type}'s 2 GiB")
    return pa.repeat(value, n)


def text_bytes(value: pa.Scalar) -> int:
    """The bytes ``value`` puts in a ``string`` or ``binary`` column on each row it is
    repeated on (0 for other types and nulls, whose columns have no such limit)."""
    if value.is_valid and (pa.types.is_string(value.type) or pa.types.is_binary(value.type)):
        return value.as_buffer().size
    return 0


def rows_within_limit(sizes: Iterable[int]) -> int:
    """How many rows a batch may have for columns repeating values of these ``sizes``
    (:func:`text_bytes`: a file's path, header values) to stay within
    :data:`STRING_BYTES_MAX` each."""
    longest = max(sizes, default=0)
    return STRING_BYTES_MAX // longest if longest else sys.maxsize


def build_info(
    format: str,
    header: dict[str, Any],
    source: str | list[str] | None,
    errors: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The dict stored in ``df.attrs["bindf"]`` (and, as JSON, in Arrow metadata)."""
    info: dict[str, Any] = {"format": format, "header": header, "source": source}
    if errors:
        info["errors"] = dict(errors)
    return info


def info_to_metadata(info: dict[str, Any]) -> dict[bytes, bytes]:
    """Serialise a bindf info dict to Arrow schema metadata."""
    meta: dict[str, str] = {}
    if info.get("format") is not None:  # None: a header given without a format name
        meta[FORMAT_KEY] = info["format"]
    meta[HEADER_KEY] = json.dumps(info["header"], ensure_ascii=False)
    meta[VERSION_KEY] = info.get("version") or __version__
    source = info.get("source")
    if source is not None:
        # Always JSON (a string or a list), so that no path can pass for a list.
        meta[SOURCE_KEY] = json.dumps(path_text(source) if isinstance(source, str)
                                      else [path_text(s) for s in source], ensure_ascii=False)
    if info.get("errors"):
        meta[ERRORS_KEY] = json.dumps(info["errors"])
    return {k.encode(): v.encode("utf-8") for k, v in meta.items()}


def info_from_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The inverse of :func:`info_to_metadata`; ``None`` if the metadata has no bindf keys."""
    if not metadata or HEADER_KEY.encode() not in metadata:
        return None
    meta = {k.decode("utf-8", "replace"): v.decode("utf-8") for k, v in metadata.items()}
    source = _source_from_text(meta[SOURCE_KEY]) if SOURCE_KEY in meta else None
    info = build_info(
        meta.get(FORMAT_KEY, "unknown"),
        json.loads(meta[HEADER_KEY]),
        source,
        json.loads(meta[ERRORS_KEY]) if ERRORS_KEY in meta else None,
    )
    info["version"] = meta.get(VERSION_KEY)
    return info


def _source_from_text(text: str) -> str | list[str]:
    """The ``bindf.source`` value: a JSON string or list of strings, or, as files written
    before the value was always JSON hold it, one path as plain text. A plain path that
    happens to be JSON of another kind (``[1]``, ``2024``) is taken as text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return text


def attach_info(table: pa.Table, info: dict[str, Any]) -> pa.Table:
    """Return ``table`` with the bindf keys added to its schema metadata (others kept)."""
    metadata = dict(table.schema.metadata or {})
    metadata.update(info_to_metadata(info))
    return with_metadata(table, metadata)


def with_metadata(table: pa.Table, metadata: dict[Any, Any] | None) -> pa.Table:
    """``table`` with its schema metadata replaced by ``metadata``, its rows kept.

    ``Table.replace_schema_metadata`` gives a table of no columns zero rows (pyarrow up
    to 26 at least), so a read of ``columns=[]`` (a row count) would lose its height:
    such a table is rebuilt from its batches, which keep theirs."""
    if table.num_columns:
        return table.replace_schema_metadata(metadata)
    return pa.Table.from_batches(table.to_batches(),
                                 schema=table.schema.with_metadata(metadata or {}))


def table_info(table: pa.Table | pa.RecordBatch | pa.Schema) -> dict[str, Any] | None:
    """The bindf info of an Arrow table/batch/schema, or ``None``."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    return info_from_metadata(schema.metadata)
