"""FLIM LABS spectroscopy decay curves, ``SP01`` (``read_sp01``).

Layout: ``docs/formats/sp01.md`` (FLIM LABS ``spectroscopy-py`` export documentation,
checked against the real example export in ``tests/data/``)::

    "SP01" | u32 J | J bytes of JSON header | records …
    record = f64 time_ns | for each enabled channel: 256 × u32 histogram bins

The header's ``channels`` (0-based channel indices, shown by the vendor software as
"Channel i+1") fixes both the number of histograms per record and their order, so the
record size is ``8 + 1024·N``. Each histogram splits one laser period
(``laser_period_ns``) into 256 bins. The vendor's writer emits one record per
``bin_width_micros`` of acquisition with the counts of that interval (the real example
has ~100 counts per bin per record; they are not cumulative).

Fixed-size records need no kernel: chunks are read into a packed structured array and
reshaped with numpy (:mod:`._fixed`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._atomic import atomic_output
from .._header import positive_number, read_preamble
from .._writing import (
    WRITE_CHUNK_ROWS,
    column_values,
    encode_preamble,
    inherited_header,
    to_arrow_table,
    write_records,
)
from ..errors import HeaderError
from ._fixed import FixedRecordReader

SP01_MAGIC = b"SP01"
#: Header offset of the JSON text (after magic and length): where header errors point.
JSON_OFFSET = 8

#: Histogram bins per channel per record: the laser period split in 256.
BINS = 256

#: ``shape=`` choices; "long" is an alias of "tidy".
SHAPES = ("tidy", "long", "wide")

#: Columns of the tidy (default) output, one row per record × channel × bin.
TIDY_SCHEMA = pa.schema(
    [
        pa.field("time_ns", pa.float64(), nullable=False),
        pa.field("channel", pa.uint8(), nullable=False),
        pa.field("bin", pa.uint16(), nullable=False),
        pa.field("count", pa.uint32(), nullable=False),
        # Null for every row when the header has no usable laser_period_ns.
        pa.field("bin_time_ns", pa.float64()),
    ]
)

#: Type of one channel's histogram in the wide output.
HISTOGRAM_TYPE = pa.list_(pa.field("item", pa.uint32(), nullable=False), BINS)


def record_dtype(n_channels: int) -> np.dtype:
    """The packed record of a file with ``n_channels`` enabled channels."""
    return np.dtype([("time_ns", "<f8"), ("counts", "<u4", (n_channels, BINS))])


def wide_record_dtype(channels: list[int]) -> np.dtype:
    """The same packed record, with one named field per channel's histogram.

    Reading with this dtype hands each wide output column its own contiguous
    ``(n, 256)`` array straight from the read loop, without a second copy.
    """
    return np.dtype(
        [("time_ns", "<f8")] + [(wide_column_name(c), "<u4", (BINS,)) for c in channels]
    )


def wide_column_name(channel: int) -> str:
    """Name of a channel's histogram column in the wide output: the vendor's label."""
    return f"ch{channel + 1}"


def header_channels(header: Mapping[str, Any], *, path: str | None = None) -> list[int]:
    """The header's ``channels`` list, validated (it decides the record layout)."""
    channels = header.get("channels")
    if not isinstance(channels, list) or not channels:
        raise HeaderError(
            "SP01 header needs a non-empty 'channels' list (it fixes the record size), "
            f"found {channels!r}",
            path=path, offset=JSON_OFFSET,
        )
    bad = [c for c in channels if type(c) is not int or not 0 <= c <= 255]
    if bad:
        raise HeaderError(
            f"SP01 header 'channels' must be channel indices 0..255, found {bad[:5]!r}",
            path=path, offset=JSON_OFFSET,
        )
    if len(set(channels)) != len(channels):
        raise HeaderError(
            f"SP01 header 'channels' lists a channel twice: {channels!r}",
            path=path, offset=JSON_OFFSET,
        )
    return list(channels)


def header_laser_period(header: Mapping[str, Any]) -> float | None:
    """``laser_period_ns`` if it is a positive finite number, else None."""
    return positive_number(header.get("laser_period_ns"))


class SP01Reader(FixedRecordReader):
    """FLIM LABS spectroscopy decay curves (``SP01``): one 256-bin histogram per channel
    per record.

    Columns (``shape="tidy"``, the default; one row per record × channel × bin)
    ----------------------------------------------------------------------------
    time_ns : float64
        The record's time, ns from the start of the acquisition.
    channel : uint8
        The channel index from the header's ``channels`` list (0-based; the vendor
        software shows it as "Channel channel+1").
    bin : uint16
        Histogram bin, 0..255.
    count : uint32
        Photons counted in that bin.
    bin_time_ns : float64
        Start of the bin within the laser period: ``bin * laser_period_ns / 256``. Null
        when the header has no positive ``laser_period_ns``. (The vendor's plotting
        script labels the 256 bins with ``linspace(0, laser_period_ns, 256)`` instead,
        i.e. ``bin * period / 255``; bindf uses the bin start, which is what "the laser
        period split in 256" means.)

    Columns (``shape="wide"``; one row per record)
    ----------------------------------------------
    time_ns : float64
    ch{i+1} : fixed_size_list<uint32>[256]
        One histogram column per enabled channel ``i``, in header order (channels
        ``[1, 3]`` give ``ch2`` and ``ch4``, the vendor's labels). polars shows these as
        ``Array(UInt32, 256)``; pandas as an object column of numpy arrays.

    Options
    -------
    shape : "tidy" | "long" | "wide"
        Output shape (``"long"`` is the same as ``"tidy"``).

    A file that ends inside a record gives a :class:`~bindf.errors.TruncatedFileWarning`
    and all complete records. ``n_rows`` counts output rows (tidy rows or records).
    """

    name: ClassVar[str] = "sp01"
    label: ClassVar[str] = "FLIM LABS SP01 decay curves"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        shape = self.options.pop("shape", "tidy")
        self.refuse_options(self.options)
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")
        self.shape = "tidy" if shape == "long" else shape
        header, data_offset = read_preamble(
            f, magic=SP01_MAGIC, file_size=self.source.size, path=self.path,
            format_label="SP01 decay curves",
        )
        self.channels = header_channels(header, path=self.path)
        self.laser_period_ns = header_laser_period(header)
        self.record_dtype = (wide_record_dtype(self.channels) if self.shape == "wide"
                             else record_dtype(len(self.channels)))
        self.data_offset = data_offset
        n = len(self.channels)
        self._periodic_cache: dict[str, pa.Array] = {}
        # Per-record patterns of the tidy columns, tiled per chunk.
        self._channel_pattern = np.repeat(np.array(self.channels, dtype=np.uint8), BINS)
        self._bin_pattern = np.tile(np.arange(BINS, dtype=np.uint16), n)
        if self.laser_period_ns is not None:
            self._bin_time_pattern = self._bin_pattern * (self.laser_period_ns / BINS)
        if self.shape == "wide":
            self._schema = pa.schema(
                [TIDY_SCHEMA.field("time_ns")]
                + [pa.field(wide_column_name(c), HISTOGRAM_TYPE, nullable=False)
                   for c in self.channels]
            )
        else:
            self._schema = TIDY_SCHEMA
        return header

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def rows_per_record(self) -> int:  # type: ignore[override]  # (a class attribute in the base)
        return 1 if self.shape == "wide" else len(self.channels) * BINS

    def raw_fields_for(self, columns: list[str]) -> list[str]:
        if self.shape == "wide":
            fields = set(columns)  # the wide record dtype names its fields like the columns
        else:
            fields = {"time_ns"} & set(columns)
            if "count" in columns:
                fields.add("counts")
        # Always read something: the batch length comes from the raw arrays.
        return [f for f in self.record_dtype.names if f in fields] or ["time_ns"]

    def build_columns(self, raw: dict[str, np.ndarray], columns: list[str],
                      first_offset: int | None = None) -> list[pa.Array]:
        n = len(next(iter(raw.values())))
        if self.shape == "wide":
            return [self._decode_wide(raw, c) for c in columns]
        return [self._decode_tidy(n, raw, c) for c in columns]

    def _decode_tidy(self, n: int, arrays: dict[str, np.ndarray], name: str) -> pa.Array:
        if name == "time_ns":
            return pa.array(np.repeat(arrays["time_ns"], self.rows_per_record))
        if name == "count":
            return pa.array(arrays["counts"].reshape(-1))
        return self._periodic_column(name, n)

    def _periodic_column(self, name: str, n: int) -> pa.Array:
        """``channel``, ``bin`` or ``bin_time_ns`` for ``n`` records.

        These columns repeat the same pattern every record and depend on nothing but
        ``n``, so every full batch can share one immutable Arrow array: a read then holds
        a single copy of them per batch size instead of one per batch.
        """
        cached = self._periodic_cache.get(name)
        if cached is not None and len(cached) == n * self.rows_per_record:
            return cached
        if name == "channel":
            array = pa.array(np.tile(self._channel_pattern, n))
        elif name == "bin":
            array = pa.array(np.tile(self._bin_pattern, n))
        elif self.laser_period_ns is None:  # bin_time_ns without a usable laser period
            array = pa.nulls(n * self.rows_per_record, pa.float64())
        else:
            array = pa.array(np.tile(self._bin_time_pattern, n))
        self._periodic_cache[name] = array
        return array

    def _decode_wide(self, raw: dict[str, np.ndarray], name: str) -> pa.Array:
        if name == "time_ns":
            return pa.array(raw["time_ns"])
        return pa.FixedSizeListArray.from_arrays(pa.array(raw[name].reshape(-1)),
                                                 type=HISTOGRAM_TYPE)


def write_sp01(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write decay curves as an ``SP01`` file, from a tidy or a wide frame.

    Parameters
    ----------
    frame:
        Either the tidy shape (columns ``time_ns, channel, bin, count``; one row per
        record × channel × bin, as :func:`read_sp01` returns it; ``bin_time_ns`` is
        derived and ignored) or the wide shape (``time_ns`` plus one list column of 256
        counts per channel named ``ch{i+1}``). Tidy rows in another order are sorted by
        time, channel position and bin; every record must have all 256 bins of every
        channel exactly once.
    header:
        The JSON header. Its ``channels`` list decides which channels are written and in
        which order. When omitted, the header a bindf reader attached to ``frame`` is
        used, else ``{"channels": [...]}`` from the frame (tidy: the sorted distinct
        ``channel`` values; wide: the ``ch{i+1}`` columns in frame order).
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    table = to_arrow_table(frame)
    header = inherited_header(frame, header)
    tidy = all(c in table.column_names for c in ("time_ns", "channel", "bin", "count"))
    if header is None:
        header = {"channels": _frame_channels(table, tidy)}
    try:
        channels = header_channels(header)
    except HeaderError as exc:
        raise ValueError(f"cannot write SP01: {exc.reason}") from None
    preamble = encode_preamble(SP01_MAGIC, header)
    if tidy:
        times, counts = _records_from_tidy(table, channels)
    else:
        times, counts = _records_from_wide(table, channels)
    # counts[k] is channel k's (n, 256) histograms, usually a view of the frame's memory.
    dtype = record_dtype(len(channels))
    step = max(1, WRITE_CHUNK_ROWS // (len(channels) * BINS))
    with atomic_output(path, overwrite=overwrite) as f:
        f.write(preamble)
        for start in range(0, len(times), step):
            records = np.empty(min(step, len(times) - start), dtype=dtype)
            records["time_ns"] = times[start : start + step]
            for k, histograms in enumerate(counts):
                records["counts"][:, k, :] = histograms[start : start + step]
            write_records(f, records)


def _frame_channels(table: pa.Table, tidy: bool) -> list[int]:
    if tidy:
        return sorted(int(c) for c in np.unique(column_values(table, "channel", np.int64)))
    channels = []
    for name in table.column_names:
        if name.startswith("ch") and name[2:].isdigit() and int(name[2:]) >= 1:
            channels.append(int(name[2:]) - 1)
    if not channels:
        raise ValueError(
            "cannot write SP01: the frame has neither the tidy columns (time_ns, channel, "
            "bin, count) nor wide ch{i+1} histogram columns"
        )
    return channels


def _records_from_tidy(
    table: pa.Table, channels: list[int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Tidy rows → (times[n], [counts[n, 256] per channel]), checking the grid is complete."""
    n_channels = len(channels)
    per = n_channels * BINS
    time = column_values(table, "time_ns", np.float64)
    channel = column_values(table, "channel", np.int64)
    bins = column_values(table, "bin", np.int64)
    count = column_values(table, "count", np.uint32)
    if len(time) % per:
        raise ValueError(
            f"cannot write SP01: {len(time)} tidy rows is not a whole number of records "
            f"({n_channels} channel(s) × {BINS} bins = {per} rows each)"
        )
    lookup = np.full(256, -1, dtype=np.int64)
    lookup[channels] = np.arange(n_channels)
    in_range = (channel >= 0) & (channel <= 255)
    position = np.where(in_range, lookup[np.clip(channel, 0, 255)], -1)
    if (position < 0).any():
        stray = np.unique(channel[position < 0])[:5].tolist()
        raise ValueError(f"cannot write SP01: channel(s) {stray} are not in the header's {channels}")
    n = len(time) // per
    expected_slot = np.tile(np.arange(per), n)
    slot = position * BINS + bins
    if not np.array_equal(slot, expected_slot):
        # Not in record order: sort stably by (time, channel position, bin).
        order = np.lexsort((bins, position, time))
        time, slot, count, bins = time[order], slot[order], count[order], bins[order]
    if ((bins < 0) | (bins >= BINS)).any() or not np.array_equal(slot, expected_slot):
        raise ValueError(
            "cannot write SP01: the tidy rows do not form complete records (every record "
            f"needs each of the {BINS} bins of each channel in {channels} exactly once)"
        )
    times = time.reshape(n, per)
    # NaN != NaN: compare bit patterns so that NaN times round-trip too.
    bits = times.view(np.uint64)
    if (bits != bits[:, :1]).any():
        raise ValueError("cannot write SP01: time_ns differs within one record's rows")
    per_channel = count.reshape(n, n_channels, BINS)
    return np.ascontiguousarray(times[:, 0]), [per_channel[:, k, :] for k in range(n_channels)]


def _records_from_wide(
    table: pa.Table, channels: list[int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Wide rows → (times[n], [counts[n, 256] per channel])."""
    names = [wide_column_name(c) for c in channels]
    missing = [c for c in ["time_ns", *names] if c not in table.column_names]
    if missing:
        raise ValueError(
            f"cannot write SP01: missing column(s) {missing} for channels {channels}; "
            f"the frame has {table.column_names}"
        )
    times = column_values(table, "time_ns", np.float64)
    counts = []
    for name in names:  # per channel, not per record
        column = table.column(name).combine_chunks()
        if len(column) == 0:
            counts.append(np.empty((0, BINS), dtype=np.uint32))
            continue  # an empty pandas column has no element type to check
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)):
            raise ValueError(f"cannot write SP01: column {name!r} ({column.type}) is not a list of counts")
        if column.null_count:
            raise ValueError(f"cannot write SP01: column {name!r} has null histograms")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != BINS).any():
            raise ValueError(f"cannot write SP01: every {name!r} histogram needs {BINS} values")
        flat = pa.table({name: pc.list_flatten(column)})
        counts.append(column_values(flat, name, np.uint32, values_per_row=BINS)
                      .reshape(len(times), BINS))
    return times, counts
