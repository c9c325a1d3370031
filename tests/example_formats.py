"""Formats the tests add to bindf, one per way in (see ``conftest.py``):

* ``tpl``: a package declaring it only through the ``bindf.formats`` entry point
  (``tests/plugin_site``);
* ``stamp``: registered at run time with ``bindf.register_format``, with a structured
  binary header and a derived column (``transform``);
* ``raw16``: headerless records detected by their extension alone.

Each must get everything a built-in gets: readers, scans with pushdown, dask partitions,
CLI info/convert, truncation warnings, the robustness sweep and a fuzz target.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import bindf

PLUGIN_SITE = Path(__file__).parent / "plugin_site"


def _with_ratio(table: pa.Table, header: dict) -> pa.Table:
    """Derived column: ``ratio = value / header["scale"]`` (float64)."""
    ratio = pc.divide(pc.cast(table.column("value"), pa.float64()), float(header["scale"]))
    return table.append_column(pa.field("ratio", pa.float64(), nullable=False), ratio)


#: "STMP" | header record (u32 scale, u32 n_fields) | records (u64 t, i32 value)
STAMP = bindf.FixedRecordFormat(
    "stamp", magic=b"STMP", header=[("scale", "<u4"), ("spare", "<u4")],
    dtype=[("t", "<u8"), ("value", "<i4")], transform=_with_ratio,
    description="test stamp records (STMP, binary header)",
    example_header={"scale": 4, "spare": 0},
)

#: No magic, no header: 16-byte records, recognised by the ``.r16`` extension.
RAW16 = bindf.FixedRecordFormat(
    "raw16", dtype=[("a", "<u8"), ("b", "<f4"), ("c", "<i2"), ("d", "<u2")],
    extensions=(".r16",), description="test headerless 16-byte records",
)


def install() -> None:
    """Make all three known to bindf (idempotent)."""
    if str(PLUGIN_SITE) not in sys.path:
        sys.path.insert(0, str(PLUGIN_SITE))
        bindf.discover_plugins()
    for spec in (STAMP, RAW16):
        if spec.name not in bindf.registry.format_names():
            bindf.register_format(spec)
