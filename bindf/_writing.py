"""Shared plumbing of the format writers (``write_spectro``, ``write_sp01`` …).

Writers accept whatever frame the user holds (pandas, polars, Arrow, or a dict of
columns), look at it through Arrow, and pull out each needed column as a numpy array of
the on-disk type. The conversions are *safe* casts: a value that does not fit the file's
type (an event of 300, a negative channel, a fractional count) is a ``ValueError`` rather
than a silently wrapped number in the output file.

Headers are serialised as strict JSON and then parsed back with the reader's own parser,
so a writer can never produce a file that bindf itself would refuse to read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._frames import info_of, to_arrow_table  # noqa: F401 - writers import it from here
from ._header import parse_json_header
from .errors import HeaderError

#: Rows converted and written per step: bounds the writer's extra memory on big frames.
WRITE_CHUNK_ROWS = 1 << 20

_U32_MAX = 2**32 - 1


def require_columns(table: pa.Table, names: Sequence[str], what: str) -> None:
    """Raise a ``ValueError`` naming every missing column."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"cannot write {what}: missing column(s) {missing}; the frame has {table.column_names}"
        )


def column_values(table: pa.Table, name: str, dtype: np.dtype | str) -> np.ndarray:
    """Column ``name`` as a contiguous numpy array of ``dtype`` (safe cast, no nulls)."""
    column = table.column(name)
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null value(s); files cannot store them")
    target = pa.from_numpy_dtype(np.dtype(dtype))
    if column.type != target:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        try:
            column = pc.cast(column, target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"column {name!r} ({column.type}) cannot be stored as {target}: {exc}"
            ) from None
    values = column.to_numpy() if column.num_chunks != 1 else column.chunk(0).to_numpy()
    return np.ascontiguousarray(values, dtype=dtype)


def inherited_header(frame: Any, header: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``header`` if given, else the header a bindf reader attached to ``frame`` (or None).

    Lets ``write_x(path, read_x(other))`` keep the metadata without the user passing it.
    """
    if header is not None:
        if not isinstance(header, Mapping):
            raise TypeError(f"header must be a dict, not {type(header).__name__}")
        return dict(header)
    try:
        info = info_of(frame)
    except TypeError:
        return None
    if info is None or not isinstance(info.get("header"), dict):
        return None
    return dict(info["header"])


def encode_preamble(magic: bytes, header: Mapping[str, Any]) -> bytes:
    """``magic | u32 length | JSON`` for ``header``, checked by the reader's own parser."""
    try:
        text = json.dumps(dict(header), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        raw = text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"header cannot be written as strict JSON: {exc}") from None
    if len(raw) > _U32_MAX:
        raise ValueError(f"header JSON is {len(raw)} bytes; the length field holds at most {_U32_MAX}")
    try:
        parse_json_header(raw)
    except HeaderError as exc:
        # e.g. {1: .., "1": ..} (duplicate keys once stringified) or absurd nesting.
        raise ValueError(f"header would not read back: {exc.reason}") from None
    return magic + struct.pack("<I", len(raw)) + raw


def write_records(f: Any, records: np.ndarray) -> None:
    """Write a packed structured array's bytes (no per-record Python work)."""
    if records.size:
        f.write(memoryview(records.view(np.uint8)))


def write_fixed_record_file(
    path: Any, preamble: bytes, table: pa.Table, dtype: np.dtype, *, overwrite: bool = True
) -> None:
    """Write ``preamble`` then ``table``'s rows as packed ``dtype`` records, atomically.

    Converts and writes :data:`WRITE_CHUNK_ROWS` rows at a time, so the writer's extra
    memory stays bounded whatever the frame's size. Column names are the dtype's fields.
    """
    from ._atomic import atomic_output

    with atomic_output(path, overwrite=overwrite) as f:
        f.write(preamble)
        for start in range(0, table.num_rows, WRITE_CHUNK_ROWS):
            part = table.slice(start, WRITE_CHUNK_ROWS)
            records = np.empty(part.num_rows, dtype=dtype)
            for name in dtype.names:
                records[name] = column_values(part, name, dtype[name])
            write_records(f, records)
