"""Quick-look analysis of AstroPix hit tables (``read_apx``): hit maps, ToT histograms,
hits per readout, and their plots.

Columns used are the ones ``read_apx`` produces (``docs/formats/apx.md``):
``chip_id``, ``row``, ``column`` (5-bit fields, uint8), ``tot_us``, ``readout_id`` and
``timestamp`` (ns since the Unix epoch).

Pixel matrix: ``row`` and ``column`` are 5-bit fields, so a hit can name at most 32 × 32
pixels; a 35 × 35 matrix (AstroPix 3) cannot be addressed by them. AstroPix 4
(``readout_uid`` 4000) has 13 rows × 16 columns: the AstroPix collaboration's own
analysis code (``astropix-analysis``, ``Run._NUM_ROWS/_NUM_COLS``) uses that grid, and
real AstroPix 4 headers configure 16 columns (``col0`` … ``col15``). Other readouts get
the full 32 × 32 range. The grid grows to cover any hit outside it: a map never drops
hits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ._common import (
    bin_edges,
    columns_of,
    dense_groups,
    float_values,
    grouped_histogram,
    like_input,
    new_axes,
)

#: The ``df.bindf`` methods this module serves.
HELPERS = (
    "hit_map", "tot_histogram", "hits_per_readout",
    "plot_hit_map", "plot_tot", "plot_hits_per_readout",
)

#: Pixel matrix (rows, columns) by header ``readout_uid``.
GEOMETRY: dict[int, tuple[int, int]] = {4000: (13, 16)}
#: Row and column are 5-bit fields: the range any readout can address.
FIELD_RANGE = 32

#: Display names of readouts in plot titles.
CHIP_NAMES: dict[int, str] = {4000: "AstroPix 4"}

#: ``tot_histogram(by=...)`` choices and the columns that identify a group.
TOT_GROUPS: dict[str, list[str]] = {"chip": ["chip_id"], "pixel": ["chip_id", "row", "column"]}

Frame = pd.DataFrame | pl.DataFrame


# --- tables ---------------------------------------------------------------------------


def hit_map(frame: Any, info: Mapping[str, Any], *, per_chip: bool = False,
            shape: tuple[int, int] | None = None) -> Frame:
    """Hits per pixel over the whole pixel grid, zeros included (dead pixels show).

    Columns: ``chip_id`` (with ``per_chip=True``), ``row``, ``column`` (uint8), ``hits``
    (int64); one row per pixel of the grid (per chip present), sorted.
    """
    data = columns_of(frame, ["chip_id", "row", "column"], "hit_map")
    return like_input(_hit_map(data, info["header"], per_chip, shape), frame)


def tot_histogram(frame: Any, info: Mapping[str, Any], *, by: str = "chip",
                  bins: int | Sequence[float] | str = 100,
                  range: tuple[float, float] | None = None) -> Frame:
    """Histogram of ``tot_us`` per chip or per pixel, with the same bin edges for all.

    Columns: the group (``chip_id``, or ``chip_id, row, column``), ``tot_us_low``,
    ``tot_us_high`` (bin edges, µs) and ``count`` (int64); every bin of every group
    that has hits. ``bins``/``range`` as in ``numpy.histogram`` (the last bin includes
    its right edge; hits outside the edges are not counted).
    """
    keys = _tot_keys(by)
    data = columns_of(frame, [*keys, "tot_us"], "tot_histogram")
    return like_input(_tot_histogram(data, keys, bins, range), frame)


def hits_per_readout(frame: Any, info: Mapping[str, Any]) -> Frame:
    """Number of hits in each readout, in time order.

    Columns: ``readout_id``, ``timestamp`` (as in the hit table) and ``hits`` (int64).
    Readouts without any hit have no row in a hit table, so they do not appear here.
    """
    data = columns_of(frame, ["readout_id", "timestamp"], "hits_per_readout")
    return like_input(_hits_per_readout(data), frame)


# --- plots ----------------------------------------------------------------------------


def plot_hit_map(frame: Any, info: Mapping[str, Any], *, chip: int | None = None,
                 shape: tuple[int, int] | None = None, ax: Any = None,
                 **imshow_kwargs: Any) -> Any:
    """Image of the hit map (row up, column across); one chip, or all chips summed."""
    data = columns_of(frame, ["chip_id", "row", "column"], "plot_hit_map")
    if chip is not None:
        data = data.filter(pl.col("chip_id") == chip)
    header = info["header"]
    table = _hit_map(data, header, False, shape)
    n_rows = int(table["row"].max()) + 1
    grid = table["hits"].to_numpy().reshape(n_rows, -1)
    ax = new_axes(ax)
    imshow_kwargs.setdefault("interpolation", "nearest")
    image = ax.imshow(grid, origin="lower", **imshow_kwargs)
    ax.figure.colorbar(image, ax=ax, label="Hits")
    ax.set_xlabel("Column")
    ax.set_ylabel("Row")
    which = f"chip {chip}" if chip is not None else _chips_text(data)
    ax.set_title(f"{_chip_name(header)} hit map ({which}, {int(grid.sum())} hits)")
    return ax


def plot_tot(frame: Any, info: Mapping[str, Any], *,
             bins: int | Sequence[float] | str = 100,
             range: tuple[float, float] | None = None, ax: Any = None) -> Any:
    """ToT histogram, one step line per chip."""
    data = columns_of(frame, ["chip_id", "tot_us"], "plot_tot")
    table = _tot_histogram(data, ["chip_id"], bins, range)
    ax = new_axes(ax)
    for (chip,), part in table.group_by(["chip_id"], maintain_order=True):
        edges = np.append(part["tot_us_low"].to_numpy(), part["tot_us_high"][-1])
        ax.stairs(part["count"].to_numpy(), edges, label=f"chip {chip}")
    ax.set_xlabel("Time over threshold [µs]")
    ax.set_ylabel("Hits per bin")
    ax.set_title(f"{_chip_name(info['header'])} time over threshold")
    if table.height:
        ax.legend()
    return ax


def plot_hits_per_readout(frame: Any, info: Mapping[str, Any], *, ax: Any = None) -> Any:
    """Hits per readout against time since the first readout."""
    data = columns_of(frame, ["readout_id", "timestamp"], "plot_hits_per_readout")
    table = _hits_per_readout(data)
    ax = new_axes(ax)
    title = f"{_chip_name(info['header'])} hits per readout"
    if table.height:
        stamps = table["timestamp"].to_numpy().astype(np.int64)
        seconds = (stamps - stamps[0]) / 1e9
        ax.plot(seconds, table["hits"].to_numpy(), marker=".", linewidth=0.5)
        start = dt.datetime.fromtimestamp(int(stamps[0]) // 10**9, tz=dt.timezone.utc)
        title += f" (from {start:%Y-%m-%d %H:%M:%S} UTC)"
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Time since first readout [s]")
    ax.set_ylabel("Hits per readout")
    ax.set_title(title)
    return ax


# --- computation (polars in, polars out) ---------------------------------------------


def grid_shape(header: Mapping[str, Any], rows: np.ndarray, columns: np.ndarray,
               shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rows, columns) of the map: ``shape`` if given (it must hold every hit), else
    the readout's pixel matrix, grown to cover the hits."""
    top_row = int(rows.max()) + 1 if len(rows) else 0
    top_col = int(columns.max()) + 1 if len(columns) else 0
    if shape is not None:
        n_rows, n_cols = (int(n) for n in shape)
        if n_rows < 1 or n_cols < 1:
            raise ValueError(f"shape must be two positive numbers, not {shape!r}")
        if top_row > n_rows or top_col > n_cols:
            raise ValueError(
                f"shape {shape!r} is too small: hits reach row {top_row - 1}, "
                f"column {top_col - 1}"
            )
        return n_rows, n_cols
    uid = header.get("readout_uid")  # anything may be there: only look up an int
    known = GEOMETRY.get(uid) if type(uid) is int else None
    n_rows, n_cols = known or (FIELD_RANGE, FIELD_RANGE)
    return max(n_rows, top_row), max(n_cols, top_col)


def _hit_map(data: pl.DataFrame, header: Mapping[str, Any], per_chip: bool,
             shape: tuple[int, int] | None) -> pl.DataFrame:
    data = data.drop_nulls()
    rows = _small_ints(data, "row")
    cols = _small_ints(data, "column")
    n_rows, n_cols = grid_shape(header, rows, cols, shape)
    if per_chip:
        chip = _small_ints(data, "chip_id")
        chips, lookup = dense_groups(chip, 256)
        group = lookup[chip]
        n_groups = len(chips)
    else:
        group = np.zeros(len(rows), dtype=np.int64)
        n_groups = 1
    cells = n_rows * n_cols
    flat = group.astype(np.int64) * cells + rows * n_cols + cols
    counts = np.bincount(flat, minlength=n_groups * cells)
    columns: dict[str, pl.Series] = {}
    if per_chip:
        columns["chip_id"] = pl.Series(np.repeat(chips, cells), dtype=pl.UInt8)
    columns["row"] = pl.Series(np.tile(np.repeat(np.arange(n_rows), n_cols), n_groups),
                               dtype=pl.UInt8)
    columns["column"] = pl.Series(np.tile(np.arange(n_cols), n_rows * n_groups),
                                  dtype=pl.UInt8)
    columns["hits"] = pl.Series(counts, dtype=pl.Int64)
    return pl.DataFrame(columns)


def _tot_keys(by: str) -> list[str]:
    try:
        return TOT_GROUPS[by]
    except (KeyError, TypeError):
        raise ValueError(f"by must be one of {list(TOT_GROUPS)}, not {by!r}") from None


def _tot_histogram(data: pl.DataFrame, keys: list[str], bins: Any,
                   value_range: tuple[float, float] | None) -> pl.DataFrame:
    data = data.drop_nulls(keys)
    tot = float_values(data["tot_us"])
    edges = bin_edges(tot, bins, value_range)
    n_bins = len(edges) - 1
    # One integer per group (mixed radix over the keys' ranges), then dense numbering.
    key_values = [_small_ints(data, key) for key in keys]
    radix = [int(values.max()) + 1 if len(values) else 1 for values in key_values]
    code = np.zeros(data.height, dtype=np.int64)
    for values, base in zip(key_values, radix):
        code *= base
        code += values
    groups, lookup = dense_groups(code, int(np.prod(radix)))
    counts = grouped_histogram(tot, edges, closed_last=True, codes=code, lookup=lookup,
                               n_groups=len(groups))
    columns: dict[str, pl.Series] = {}
    remaining = groups.copy()
    for key, base in reversed(list(zip(keys, radix))):
        columns[key] = pl.Series(np.repeat(remaining % base, n_bins), dtype=pl.UInt8)
        remaining //= base
    columns = {key: columns[key] for key in keys}  # back in key order
    columns["tot_us_low"] = pl.Series(np.tile(edges[:-1], len(groups)))
    columns["tot_us_high"] = pl.Series(np.tile(edges[1:], len(groups)))
    columns["count"] = pl.Series(counts.ravel(), dtype=pl.Int64)
    return pl.DataFrame(columns)


def _hits_per_readout(data: pl.DataFrame) -> pl.DataFrame:
    # A hit table lists each readout's hits together, readouts in time order: count the
    # runs in one pass. Anything else (shuffled or concatenated frames) is grouped.
    readout = data["readout_id"].to_numpy()
    stamp = data["timestamp"].to_numpy()
    if data.null_count().sum_horizontal().item() == 0 and len(readout):
        new_run = np.ones(len(readout), dtype=bool)
        new_run[1:] = (readout[1:] != readout[:-1]) | (stamp[1:] != stamp[:-1])
        starts = np.flatnonzero(new_run)
        run_readout, run_stamp = readout[starts], stamp[starts]
        ordered = (run_stamp[1:] > run_stamp[:-1]) | (
            (run_stamp[1:] == run_stamp[:-1]) & (run_readout[1:] > run_readout[:-1]))
        if ordered.all():
            return pl.DataFrame({
                "readout_id": data["readout_id"].gather(starts),
                "timestamp": data["timestamp"].gather(starts),
                "hits": pl.Series(np.diff(starts, append=len(readout)), dtype=pl.Int64),
            })
    return (
        data.group_by(["readout_id", "timestamp"])
        .agg(pl.len().cast(pl.Int64).alias("hits"))
        .sort(["timestamp", "readout_id"])
    )


def _small_ints(data: pl.DataFrame, name: str) -> np.ndarray:
    """An 8-bit hit field as int64, refusing values no hit can have."""
    values = data[name]
    if values.dtype != pl.UInt8:
        if not values.dtype.is_integer():
            raise TypeError(f"column {name!r} must hold integers, not {values.dtype}")
        if values.len() and (values.min() < 0 or values.max() > 255):
            raise ValueError(f"column {name!r} has values outside 0..255")
    return values.to_numpy().astype(np.int64, copy=False)


def _chip_name(header: Mapping[str, Any]) -> str:
    uid = header.get("readout_uid")
    return CHIP_NAMES.get(uid, "AstroPix") if type(uid) is int else "AstroPix"


def _chips_text(data: pl.DataFrame) -> str:
    chips = data["chip_id"].unique().sort().to_list()
    if len(chips) == 1:
        return f"chip {chips[0]}"
    return "all chips" if not chips else "chips " + ", ".join(map(str, chips)) + " summed"
