"""FLIM LABS spectroscopy phasors, ``SPF1`` (``read_spf1``).

Layout: ``docs/formats/spf1.md`` (the real files' layout)::

    "SPF1" | u32 J | J bytes of JSON header | records …
    record (32 bytes) = u64 time_ns | u32 channel | u32 harmonic | f64 g | f64 s

The published prose describes the records differently; the real example export and the
vendor's own reading script (``struct.unpack("QIIdd", …)``) use the layout above, and so
does bindf.

What the fields mean, checked on the real example (header ``channels: [1, 3]``,
``harmonics: 2``): ``channel`` takes exactly the values 1 and 3, i.e. it is the 0-based
channel *index* as listed in the header's ``channels`` (not a position in that list, not
the 1-based label: the vendor software shows it as "Channel channel+1"). ``harmonic`` is
1-based (1 … ``harmonics``). Each ``time_ns`` carries one record per channel ×
harmonic, and the times are those of the matching ``SP01`` decay-curve records.

The vendor's plotting script drops points with ``|g|`` or ``|s|`` ≥ 1e9 (placeholders
for intervals without signal); bindf returns every value as stored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from .._writing import (
    column_values,
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
    write_fixed_record_file,
)
from .fixed_format import FixedRecordFormat

SPF1_MAGIC = b"SPF1"

#: One phasor record, 32 bytes, packed (naturally aligned anyway).
RECORD_DTYPE = np.dtype(
    [("time_ns", "<u8"), ("channel", "<u4"), ("harmonic", "<u4"), ("g", "<f8"), ("s", "<f8")]
)
RECORD_SIZE = RECORD_DTYPE.itemsize

SCHEMA = pa.schema(
    [
        pa.field("time_ns", pa.uint64(), nullable=False),
        pa.field("channel", pa.uint32(), nullable=False),
        pa.field("harmonic", pa.uint32(), nullable=False),
        pa.field("g", pa.float64(), nullable=False),
        pa.field("s", pa.float64(), nullable=False),
    ]
)


#: The whole reader: a declared fixed-record format (see :class:`bindf.FixedRecordFormat`).
SPEC = FixedRecordFormat(
    "spf1", magic=SPF1_MAGIC, header="json", dtype=RECORD_DTYPE,
    description="FLIM LABS SPF1 phasors",
)


class SPF1Reader(SPEC.reader_class()):  # type: ignore[misc]
    """FLIM LABS spectroscopy phasors (``SPF1``): one (g, s) point per time, channel and
    harmonic.

    Columns
    -------
    time_ns : uint64
        Time of the interval, ns from the start of the acquisition.
    channel : uint32
        The 0-based channel index, one of the header's ``channels`` (the vendor software
        shows it as "Channel channel+1").
    harmonic : uint32
        Harmonic number, 1-based (1 … header ``harmonics``).
    g, s : float64
        Phasor coordinates, as stored (no filtering of placeholder values).

    A file that ends inside a record gives a :class:`~bindf.errors.TruncatedFileWarning`
    and all complete records.
    """


def write_spf1(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write phasors as an ``SPF1`` file.

    Parameters
    ----------
    frame:
        pandas/polars/Arrow frame (or dict of columns) with ``time_ns, channel, harmonic,
        g, s``; integer columns must fit their on-disk types (u64, u32, u32).
    header:
        The JSON header. When omitted, the header a bindf reader attached to ``frame``
        is used, else one with ``channels`` (sorted distinct ``channel`` values) and
        ``harmonics`` (the largest ``harmonic``) derived from the data.
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    table = to_arrow_table(frame)
    require_columns(table, RECORD_DTYPE.names, "SPF1 phasors")
    header = inherited_header(frame, header)
    if header is None:
        channel = column_values(table, "channel", np.uint32)
        harmonic = column_values(table, "harmonic", np.uint32)
        header = {
            "channels": np.unique(channel).tolist(),
            "harmonics": int(harmonic.max()) if len(harmonic) else 0,
        }
    preamble = encode_preamble(SPF1_MAGIC, header)
    write_fixed_record_file(path, preamble, table, RECORD_DTYPE, overwrite=overwrite)
