"""Quick-look analysis of FLIM LABS intensity traces (``read_it02``): coarser bins, count
rates and the trace plot.

Columns used: ``time_ns`` (float64) and one ``ch{i+1}`` count column per enabled
channel ``i`` (0-based, as in the header's ``channels``); the header gives
``bin_width_micros`` and, optionally, ``channel_names`` (``{"<index>": name}``).

``time_ns`` marks the *end* of a bin: in the real dense export the first record is one
bin width after the start and the last one at ``acquisition_time_millis``. Its clock
also drifts against the nominal bin width (by ~0.03 % in that file), so rebinning
counts bins by the steps between consecutive records, not by ``time_ns / width``,
which would open a false gap wherever the drift reaches half a bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from .._frames import set_pandas_info, set_polars_info
from ._common import (
    CHANNEL_COLUMN,
    channel_label,
    column_names,
    columns_of,
    file_columns,
    file_label,
    header_number,
    like_input,
    new_axes,
    positive_number,
    sort_by_file,
)

#: The ``df.bindf`` methods this module serves.
HELPERS = ("rebin", "count_rate", "plot_trace")

#: How far ``width_us / bin_width_micros`` may be from an integer (float round-off).
_MULTIPLE_TOLERANCE = 1e-9

Frame = pd.DataFrame | pl.DataFrame


def rebin(frame: Any, info: Mapping[str, Any], width_us: float, *,
          drop_partial: bool = False) -> Frame:
    """Sum every ``width_us / bin_width_micros`` consecutive bins into one.

    The coarse bins start at the first record. Each keeps the ``time_ns`` of its last
    fine bin (bin ends, like the input); missing fine bins (sparse files drop all-zero
    bins) count as zeros, and a coarse bin made of missing fine bins only is a row of
    zeros (its ``time_ns`` whole fine bins after the last record before it). The last
    coarse bin covers fewer fine bins when the trace
    does not divide evenly; ``drop_partial=True`` leaves it out.

    A frame read from several files with ``include_file_paths="file"`` is rebinned file
    by file (coarse bins never mix two files): the result starts with that column,
    files in the order they come in the frame, each file's bins in time order.

    Counts become uint64 (sums of uint32 can exceed 2**32); a channel of signed values
    (background subtracted) sums as int64, one of floats (a correction applied) as
    float64. The result carries the
    frame's bindf metadata with ``bin_width_micros`` set to ``width_us``, so
    ``.bindf.count_rate()`` and ``.bindf.plot_trace()`` work on it.
    """
    bin_us = _bin_width(info, "rebin")
    factor = _rebin_factor(width_us, bin_us)
    names = ["time_ns", *_channel_columns(frame, "rebin")]
    files = file_columns(frame, info, "rebin", names)
    table = _rebin(columns_of(frame, [*files, *names], "rebin"), files, bin_us, factor,
                   drop_partial)
    result = like_input(table, frame)
    header = dict(info["header"])
    header["bin_width_micros"] = int(width_us) if float(width_us).is_integer() else width_us
    new_info = {**info, "header": header}
    if isinstance(result, pd.DataFrame):
        set_pandas_info(result, new_info)
    else:
        set_polars_info(result, new_info)
    return result


def count_rate(frame: Any, info: Mapping[str, Any]) -> Frame:
    """Counts per second: each ``ch*`` count divided by the bin width of the header.

    Columns: ``time_ns`` and the same ``ch*`` names, as float64 counts/s (after the
    file column of a frame read with ``include_file_paths="file"``), in frame order.
    """
    bin_s = _bin_width(info, "count_rate") * 1e-6
    channels = _channel_columns(frame, "count_rate")
    files = file_columns(frame, {}, "count_rate", ["time_ns", *channels])
    data = columns_of(frame, [*files, "time_ns", *channels], "count_rate")
    return like_input(_rates(data, channels, bin_s), frame)


def plot_trace(frame: Any, info: Mapping[str, Any], *, rate: bool = False,
               ax: Any = None) -> Any:
    """The intensity trace: one line per channel, counts per bin (or counts/s with
    ``rate=True``) against time. Lines are labelled with the header's
    ``channel_names``, else "Channel i+1" as in the vendor software; a frame read
    from several files with ``include_file_paths="file"`` gets one line per file and
    channel, the file's name in the label."""
    header = info["header"]
    channels = _channel_columns(frame, "plot_trace")
    files = file_columns(frame, info, "plot_trace", ["time_ns", *channels])
    data = columns_of(frame, [*files, "time_ns", *channels], "plot_trace")
    bin_us = positive_number(header.get("bin_width_micros"))
    if rate:
        data = _rates(data, channels, _bin_width(info, "plot_trace") * 1e-6)
        ylabel = "Count rate [counts/s]"
    else:
        ylabel = f"Counts per {bin_us:g} µs bin" if bin_us else "Counts per bin"
    ax = new_axes(ax)
    parts = (data.group_by(files, maintain_order=True) if files and data.height
             else [((), data)])
    for key, part in parts:
        part = part.sort("time_ns")
        seconds = part["time_ns"].to_numpy() / 1e9
        for name in channels:
            index = int(CHANNEL_COLUMN.fullmatch(name).group(1)) - 1  # type: ignore[union-attr]
            label = channel_label(index, header)
            if files:
                label += f" ({file_label(key)})"
            ax.plot(seconds, part[name].to_numpy(), label=label, linewidth=0.8)
    ax.set_xlabel("Time [s]")
    ax.set_ylabel(ylabel)
    ax.set_title("Intensity trace")
    ax.legend()
    return ax


# --- computation (polars in, polars out) ---------------------------------------------


def _bin_width(info: Mapping[str, Any], helper: str) -> float:
    return header_number(info, "bin_width_micros", helper)


def _channel_columns(frame: Any, helper: str) -> list[str]:
    names = [name for name in column_names(frame) if CHANNEL_COLUMN.fullmatch(name)]
    if not names:
        raise ValueError(f"{helper}() found no channel count columns ('ch1', 'ch2', …)")
    return names


def _rebin_factor(width_us: Any, bin_us: float) -> int:
    """How many fine bins make one bin of ``width_us``; a ValueError unless whole."""
    width = positive_number(width_us)
    if width is None:
        raise ValueError(f"width_us must be a positive number of µs, not {width_us!r}")
    ratio = width / bin_us
    factor = round(ratio)
    if factor < 1 or abs(ratio - factor) > _MULTIPLE_TOLERANCE * max(1.0, ratio):
        lower = max(1, math.floor(ratio)) * bin_us
        raise ValueError(
            f"width_us={width_us!r} is not a multiple of the file's bin width "
            f"({bin_us:g} µs); try {lower:g} or {lower + bin_us:g}"
        )
    return factor


#: The type a channel's sums take, by the kind of its values.
_NUMPY_SUM = {pl.UInt64: np.uint64, pl.Int64: np.int64, pl.Float64: np.float64}


def _sum_type(name: str, dtype: pl.DataType) -> pl.DataType:
    """What the sums of a channel of ``dtype`` are: counts (unsigned) as uint64 (sums of
    uint32 can exceed 2**32), signed values (background subtracted) as int64, floats
    (a correction factor applied) as float64; a TypeError for anything else (they were
    all cast to uint64: fractions dropped, negative values wrapped)."""
    if dtype.is_unsigned_integer() or dtype in (pl.Boolean, pl.Null):  # (Null: no counts)
        return pl.UInt64
    if dtype.is_signed_integer():
        return pl.Int64
    if dtype.is_float():
        return pl.Float64
    raise TypeError(f"rebin sums the channel columns: {name!r} holds {dtype}, not numbers")


def _rebin(data: pl.DataFrame, files: list[str], bin_us: float, factor: int,
           drop_partial: bool) -> pl.DataFrame:
    channels = data.columns[len(files) + 1:]
    data = data.filter(pl.col("time_ns").is_not_null() & pl.col("time_ns").is_not_nan())
    # each file's records together, files in frame order, then by time
    data = sort_by_file(data, files, "time_ns")
    out_schema = {**{name: data.schema[name] for name in files}, "time_ns": pl.Float64,
                  **{name: _sum_type(name, data.schema[name]) for name in channels}}
    if data.height == 0:
        return pl.DataFrame(schema=out_schema)
    bin_ns = bin_us * 1e3
    times = data["time_ns"].to_numpy()
    # Where a new file starts (always at row 0).
    new_file = np.zeros(len(times), dtype=bool)
    new_file[0] = True
    if files:
        changed = data.select(pl.any_horizontal(
            [pl.col(name).ne_missing(pl.col(name).shift(1)) for name in files]))
        new_file |= changed.to_series().fill_null(False).to_numpy()
    file_id = np.cumsum(new_file) - 1
    # Fine-bin position of each record within its file, from the steps between records:
    # robust to the clock drifting against the nominal width, and to missing (all-zero)
    # bins.
    steps = np.zeros(len(times), dtype=np.int64)
    steps[1:] = np.rint(np.diff(times) / bin_ns)
    steps[new_file] = 0
    position = np.cumsum(steps)
    position -= position[new_file][file_id]
    group = position // factor
    new_group = new_file.copy()
    new_group[1:] |= group[1:] != group[:-1]
    starts = np.flatnonzero(new_group)  # first record of each coarse bin that has one
    lasts = np.append(starts[1:] - 1, len(times) - 1)
    file_last = np.append(np.flatnonzero(new_file)[1:] - 1, len(times) - 1)
    # Every coarse bin from a file's first record to its last, those without a record
    # too (a sparse file leaves out all-zero fine bins, which may fill whole coarse
    # bins): row ``first_row[f] + g`` is coarse bin g of file f.
    bins_per_file = group[file_last] + 1
    first_row = np.cumsum(bins_per_file) - bins_per_file
    rows = int(bins_per_file.sum())
    file_of_row = np.repeat(np.arange(len(file_last)), bins_per_file)
    bin_of_row = np.arange(rows) - first_row[file_of_row]
    filled = first_row[file_id[starts]] + group[starts]  # the rows that have records
    # Each row's time comes from the last record at or before it (its own, or that of
    # the bin before it in its file: every file's first bin has one), moved on by whole
    # fine bins.
    row_of_record = np.full(rows, -1, dtype=np.int64)
    row_of_record[filled] = np.arange(len(starts))
    anchor = np.maximum.accumulate(row_of_record)
    last_position = position[file_last][file_of_row]
    group_end = (bin_of_row + 1) * factor - 1  # last fine position of each coarse bin
    end = np.minimum(group_end, last_position)
    columns: dict[str, Any] = {name: data[name].gather(starts[anchor]) for name in files}
    anchor_last = lasts[anchor]
    columns["time_ns"] = times[anchor_last] + (end - position[anchor_last]) * bin_ns
    for name in channels:
        kind = _NUMPY_SUM[out_schema[name]]
        counts = data[name].fill_null(0).to_numpy().astype(kind)
        summed = np.zeros(rows, dtype=kind)
        summed[filled] = np.add.reduceat(counts, starts)
        columns[name] = summed
    table = pl.DataFrame(columns, schema=out_schema)
    if drop_partial:
        table = table.filter(pl.Series(group_end <= last_position))
    return table


def _rates(data: pl.DataFrame, channels: list[str], bin_s: float) -> pl.DataFrame:
    return data.with_columns(
        [(pl.col(name).cast(pl.Float64) / bin_s).alias(name) for name in channels]
    ).with_columns(pl.col("time_ns").cast(pl.Float64))
