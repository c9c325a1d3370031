"""FLIM LABS intensity tracing, first version ``IT01`` (``read_it01``, ``write_it01``).

Layout (the format page in docs/, from the vendor's ``plot_data_file.py`` and
``plot_data_file.m`` readers of January 2024, and the published example export)::

    "IT01" | u32 H | H bytes of JSON header | records …
    record (40 bytes, '<d8I') = f64 time_ns | 8 × u32 counts (slots 0 … 7)

Header: ``channels`` (0-based), ``bin_width_micros``, ``acquisition_time_millis`` (null
in free-running mode), ``laser_period_ns``. ``time_ns`` is the end of each bin, with
floating-point jitter.

Columns: ``time_ns`` then ``ch{c+1}`` for each ``c`` in ``channels``, the names
``read_it02`` gives, where slot ``i`` holds ``channels[i]`` — the mapping of both vendor
file readers. The vendor's live display of the same version maps by physical channel
number instead; the two readings differ only when ``channels`` is not ``[0, 1, …, k-1]``,
and then :class:`AmbiguousChannelMappingWarning` says so. ``slots=True`` returns the eight
raw slots ``slot_0 … slot_7`` instead (no header key needed).

The channel columns are fields of the record dtype at their slot's byte offset, so a
projection copies only the requested counts out of the read buffer (no transform).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._params import check_flag
from .._warnings import warn as _warn
from .._writing import (
    column_values,
    encode_preamble,
    inherited_header,
    refuse_unlisted_channels,
    require_columns,
    to_arrow_table,
    write_fixed_record_file,
)
from ..errors import AmbiguousChannelMappingWarning
from ..registry import get_format
from ._it02_layout import _channels_problem, channel_column
from .fixed_format import FixedRecordFormat

IT01_MAGIC = b"IT01"
N_SLOTS = 8
RECORD_SIZE = 40
#: The record as stored: time, then the eight counter slots.
SLOTS_DTYPE = np.dtype([("time_ns", "<f8")] + [(f"slot_{i}", "<u4") for i in range(N_SLOTS)])
assert SLOTS_DTYPE.itemsize == RECORD_SIZE


def channels_of(header: Mapping[str, Any]) -> list[int]:
    """The header's ``channels``, checked: non-negative, distinct, at most 8 (one slot
    each). A ``ValueError`` saying why otherwise (the reader reports it as a
    :class:`~bindf.errors.HeaderError`)."""
    problem = _channels_problem(dict(header))
    if problem:
        raise ValueError(f"IT01 header: {problem}")
    channels = list(header["channels"])
    if len(channels) > N_SLOTS:
        raise ValueError(f"IT01 header enables {len(channels)} channels; records have "
                         f"{N_SLOTS} slots")
    return channels


def record_dtype(header: Mapping[str, Any], *, slots: bool = False) -> np.dtype:
    """The 40-byte record with the fields to return: ``time_ns`` and ``slot_0..7``
    (``slots=True``), or ``time_ns`` and ``ch{c+1}`` at the offset of slot ``i`` for
    ``c = channels[i]``."""
    if slots:
        return SLOTS_DTYPE
    channels = channels_of(header)
    return np.dtype({
        "names": ["time_ns"] + [channel_column(c) for c in channels],
        "formats": ["<f8"] + ["<u4"] * len(channels),
        "offsets": [0] + [8 + 4 * i for i in range(len(channels))],
        "itemsize": RECORD_SIZE,
    })


def sample() -> bytes:
    """A small valid file for the robustness and fuzz sweeps (two channels, 3 ms bins)."""
    records = np.zeros(40, dtype=SLOTS_DTYPE)
    records["time_ns"] = (np.arange(40) + 1) * 3e6
    records["slot_0"] = np.arange(40) * 7
    records["slot_1"] = np.arange(40) % 5
    header = {"channels": [0, 1], "bin_width_micros": 3000, "acquisition_time_millis": None,
              "laser_period_ns": 25.0}
    return encode_preamble(IT01_MAGIC, header) + records.tobytes()


#: The ``slots=`` option, as the registry declares it (one declaration, two users).
_SLOTS = next(p for p in get_format("it01").options if p.name == "slots")

#: The whole reader: a declared fixed-record format (see :class:`bindf.FixedRecordFormat`).
SPEC = FixedRecordFormat(
    "it01", magic=IT01_MAGIC, header="json", dtype=record_dtype, options=(_SLOTS,),
    writer=False, description="FLIM LABS IT01 intensity tracing (2024 v1)",
    example_header={"channels": [0, 1], "bin_width_micros": 3000},
)


class IT01Reader(SPEC.reader_class()):  # type: ignore[misc]
    """FLIM LABS intensity tracing, first version (``IT01``, January 2024): one row per
    bin.

    Columns
    -------
    time_ns : float64
        End of the bin, ns since the start of the acquisition (with float jitter).
    ch{c+1} : uint32, one per enabled channel ``c``, in header order
        Slot ``i`` of the record read as channel ``channels[i]``, as the vendor's file
        readers do; the names are those of ``read_it02`` (channels [0, 1] give ``ch1,
        ch2``). When ``channels`` is not ``[0, 1, …, k-1]`` this mapping is ambiguous
        and an :class:`AmbiguousChannelMappingWarning` says so; ``slots=True`` gives the
        raw slots either way.

    Options
    -------
    slots : bool
        ``True``: ``time_ns`` and the 8 raw slots ``slot_0 … slot_7`` (uint32) instead
        of the channel columns; the header's ``channels`` is then not needed.

    A file that ends inside a record gives a :class:`~bindf.errors.TruncatedFileWarning`
    and all complete records; an empty body gives an empty frame.
    """

    #: the IT02 analysis helpers divide by it (see IT02Reader)
    analysis_header_keys: ClassVar[tuple[str, ...]] = ("bin_width_micros",)

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        slots = self.options.get("slots", False)
        check_flag("slots", slots)
        header = super()._read_header(f)
        channels = header.get("channels")
        if not slots and channels != list(range(len(channels))):
            _warn(AmbiguousChannelMappingWarning(
                f"IT01 channels {channels} are not [0..{len(channels) - 1}]: slot i was read "
                "as channels[i] (the vendor's file readers), but slot c may hold physical "
                "channel c (the vendor's live display); the mapping is ambiguous, compare "
                "with read_it01(..., slots=True)", path=self.path, offset=8))
        return header


def write_it01(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write an intensity trace as an ``IT01`` file, atomically.

    Parameters
    ----------
    frame:
        pandas/polars/Arrow frame (or dict of columns) with ``time_ns`` and either one
        ``ch{c+1}`` count column per channel ``c`` of the header's ``channels`` (written
        to slot ``i`` for ``channels[i]``, the reader's mapping; other slots are 0), or
        the raw ``slot_0 … slot_7`` (all eight, written as they are). Counts must fit
        uint32. A ``ch{c+1}`` column of a channel the header does not list is a
        ``ValueError`` (the file has no slot for it), not dropped.
    header:
        The JSON header. When omitted, the header a bindf reader attached to ``frame``
        is reused; else, for channel columns, ``channels`` is derived from their names,
        and for raw slots ``{"channels": [0, …, 7]}``.
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    table = to_arrow_table(frame)
    header = inherited_header(frame, header)
    raw_slots = all(f"slot_{i}" in table.column_names for i in range(N_SLOTS))
    if header is None:
        if raw_slots:
            header = {"channels": list(range(N_SLOTS))}
        else:
            found = sorted(int(n[2:]) - 1 for n in table.column_names
                           if n.startswith("ch") and n[2:].isdigit() and int(n[2:]) > 0)
            header = {"channels": found}
    if raw_slots:
        require_columns(table, SLOTS_DTYPE.names, "IT01 records")
        write_fixed_record_file(path, encode_preamble(IT01_MAGIC, header), table, SLOTS_DTYPE,
                                overwrite=overwrite)
        return
    try:
        channels = channels_of(header)
    except ValueError as exc:
        raise ValueError(f"cannot write IT01: {exc}") from None
    names = ["time_ns"] + [channel_column(c) for c in channels]
    require_columns(table, names, "IT01 records")
    refuse_unlisted_channels(table, names[1:], "IT01")
    # Build the full slot layout (unused slots zero) and write it like raw slots.
    columns = {"time_ns": column_values(table, "time_ns", np.float64)}
    for i in range(N_SLOTS):
        columns[f"slot_{i}"] = (column_values(table, channel_column(channels[i]), np.uint32)
                                if i < len(channels) else np.zeros(table.num_rows, np.uint32))
    write_fixed_record_file(path, encode_preamble(IT01_MAGIC, header), pa.table(columns),
                            SLOTS_DTYPE, overwrite=overwrite)
