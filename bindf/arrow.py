"""How the file header travels with the data.

Arrow schema metadata holds, as UTF-8 JSON text:

* ``bindf.format``: the format name (``"it02"``, ``"apx"`` …);
* ``bindf.header``: the file header (the first file's, for multi-file reads);
* ``bindf.source``: the path, or a JSON list of paths for multi-file reads;
* ``bindf.version``: the bindf version that decoded the file;
* ``bindf.errors``: counts of damaged records skipped under ``on_error="warn"/"skip"``
  (only present when something was skipped).

pandas frames get the same content as a dict in ``df.attrs["bindf"]``; polars frames
(which have no metadata slot) expose it through the ``df.bindf`` namespace.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from ._version import __version__

FORMAT_KEY = "bindf.format"
HEADER_KEY = "bindf.header"
SOURCE_KEY = "bindf.source"
VERSION_KEY = "bindf.version"
ERRORS_KEY = "bindf.errors"


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
    meta = {
        FORMAT_KEY: info["format"],
        HEADER_KEY: json.dumps(info["header"], ensure_ascii=False),
        VERSION_KEY: info.get("version", __version__),
    }
    source = info.get("source")
    if source is not None:
        meta[SOURCE_KEY] = source if isinstance(source, str) else json.dumps(source)
    if info.get("errors"):
        meta[ERRORS_KEY] = json.dumps(info["errors"])
    return {k.encode(): v.encode("utf-8") for k, v in meta.items()}


def info_from_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The inverse of :func:`info_to_metadata`; ``None`` if the metadata has no bindf keys."""
    if not metadata or HEADER_KEY.encode() not in metadata:
        return None
    meta = {k.decode("utf-8", "replace"): v.decode("utf-8") for k, v in metadata.items()}
    source: Any = meta.get(SOURCE_KEY)
    if source is not None and source.startswith("["):
        source = json.loads(source)
    info = build_info(
        meta.get(FORMAT_KEY, "unknown"),
        json.loads(meta[HEADER_KEY]),
        source,
        json.loads(meta[ERRORS_KEY]) if ERRORS_KEY in meta else None,
    )
    info["version"] = meta.get(VERSION_KEY)
    return info


def attach_info(table: pa.Table, info: dict[str, Any]) -> pa.Table:
    """Return ``table`` with the bindf keys added to its schema metadata (others kept)."""
    metadata = dict(table.schema.metadata or {})
    metadata.update(info_to_metadata(info))
    return table.replace_schema_metadata(metadata)


def table_info(table: pa.Table | pa.RecordBatch | pa.Schema) -> dict[str, Any] | None:
    """The bindf info of an Arrow table/batch/schema, or ``None``."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    return info_from_metadata(schema.metadata)
