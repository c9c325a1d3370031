"""Quick-look analysis of AstroPix hit tables (``read_apx``): hit maps, ToT histograms,
hits per readout, and their plots.

Columns used are the ones ``read_apx`` produces (``docs/formats/apx.md``):
``chip_id``, ``row``, ``column`` (5-bit fields, uint8), ``tot_us``, ``readout_id`` and
``timestamp`` (ns since the Unix epoch).

Pixel matrix: ``row`` and ``column`` are 5-bit fields, so an AstroPix 4 hit can name at
most 32 × 32 pixels. AstroPix 3 (``readout_uid`` 3000, 35 × 35 pixels; its headers
configure ``col0`` … ``col34``) sends each pixel hit as two half-hits, a row and a
column, each with a 6-bit ``location``: :func:`match_rows_columns` pairs them into pixel
hits with ``row`` and ``column``, which the other helpers then take. AstroPix 4
(``readout_uid`` 4000) has 13 rows × 16 columns: the AstroPix collaboration's own
analysis code (``astropix-analysis``, ``Run._NUM_ROWS/_NUM_COLS``) uses that grid, and
real AstroPix 4 headers configure 16 columns (``col0`` … ``col15``). Other readouts get
the full 32 × 32 range. The grid grows to cover any hit outside it: a map never drops
hits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from .._frames import set_pandas_info, set_polars_info
from ._common import (
    bin_edges,
    column_names,
    columns_of,
    dense_groups,
    file_columns,
    file_label,
    float_values,
    grouped_histogram,
    like_input,
    new_axes,
    sort_by_file,
)

#: The ``df.bindf`` methods this module serves.
HELPERS = (
    "hit_map", "tot_histogram", "hits_per_readout",
    "plot_hit_map", "plot_tot", "plot_hits_per_readout", "match_rows_columns",
)

#: Grid side (rows and columns) when the header names no chip bindf knows: AstroPix 4's
#: ``row`` and ``column`` are 5-bit fields, so 32 × 32 holds any hit such a chip sends
#: (AstroPix 3's 35 × 35 matrix comes from :func:`pixel_matrix`).
FIELD_RANGE = 32

#: ``tot_histogram(by=...)`` choices and the columns that identify a group.
TOT_GROUPS: dict[str, list[str]] = {"chip": ["chip_id"], "pixel": ["chip_id", "row", "column"]}

Frame = pd.DataFrame | pl.DataFrame


# --- tables ---------------------------------------------------------------------------


def hit_map(frame: Any, info: Mapping[str, Any], *, per_chip: bool = False,
            shape: tuple[int, int] | None = None) -> Frame:
    """Hits per pixel over the whole pixel grid, zeros included (dead pixels show).

    Columns: ``chip_id`` (with ``per_chip=True``), ``row``, ``column`` (uint8), ``hits``
    (int64); one row per pixel of the grid (per chip present), sorted. Hits with a
    null ``chip_id``, ``row`` or ``column`` (the unmatched half-hits of
    ``match_rows_columns(keep_unmatched=True)``) name no pixel and are not counted.
    Frames from several files are summed. An AstroPix 3 hit table holds half-hits (a
    ``location``, no ``row``): pair them into pixel hits with :func:`match_rows_columns`
    first.
    """
    data = _pixel_columns_of(frame, ["chip_id", "row", "column"], "hit_map")
    return like_input(_hit_map(data, info["header"], per_chip, shape), frame)


def tot_histogram(frame: Any, info: Mapping[str, Any], *, by: str = "chip",
                  bins: int | Sequence[float] | str = 100,
                  range: tuple[float, float] | None = None, tot: str | None = None) -> Frame:
    """Histogram of ``tot_us`` per chip or per pixel, with the same bin edges for all.

    Columns: the group (``chip_id``, or ``chip_id, row, column``), ``tot_us_low``,
    ``tot_us_high`` (bin edges, µs) and ``count`` (int64); every bin of every group
    that has hits. ``bins``/``range`` as in ``numpy.histogram`` (the last bin includes
    its right edge; hits outside the edges are not counted). ``tot``: the column of ToT
    values (default ``tot_us``; the pixel table of :func:`match_rows_columns` has two,
    ``tot_us_row`` and ``tot_us_column``, and one must be named).
    """
    keys = _tot_keys(by)
    column = _tot_column(frame, tot, "tot_histogram")
    data = _pixel_columns_of(frame, [*keys, column], "tot_histogram")
    return like_input(_tot_histogram(data.rename({column: "tot_us"}), keys, bins, range),
                      frame)


def hits_per_readout(frame: Any, info: Mapping[str, Any]) -> Frame:
    """Number of hits in each readout, in time order.

    Columns: ``readout_id``, ``timestamp`` (as in the hit table; ``wall_timestamp`` for
    AstroPix 3 tables, which call it so) and ``hits`` (int64). Readouts without any hit
    have no row in a hit table, so they do not appear here. A frame read from several
    files with ``include_file_paths="file"`` is counted file by file (readout ids
    restart in every file): the result starts with that column, files in frame order.
    """
    time = _readout_time_column(frame)
    files = file_columns(frame, info, "hits_per_readout", ["readout_id", time])
    data = columns_of(frame, [*files, "readout_id", time], "hits_per_readout")
    table = _hits_per_readout(data.rename({time: "timestamp"}), files)
    return like_input(table.rename({"timestamp": time}), frame)


def match_rows_columns(frame: Any, info: Mapping[str, Any] | None = None, *,
                       same_chip_timestamp: bool = True,
                       max_tot_difference_us: float | None = None,
                       keep_unmatched: bool = False) -> Frame:
    """AstroPix 3 half-hits → pixel hits: pair each row half-hit with a column half-hit.

    An AstroPix 3 pixel that fires sends two hits: a *row* half-hit (``column == 0``,
    ``location`` = its row) and a *column* half-hit (``column == 1``, ``location`` = its
    column), each with its own ToT. The rule:

    1. Candidates: a row half-hit and a column half-hit of the same ``readout_id`` and
       ``chip_id`` and, with ``same_chip_timestamp`` (default, when the frame has the
       column), the same ``chip_timestamp`` (the chip clock latched for the pixel hit;
       both halves of a hit carry it). With ``max_tot_difference_us``, only pairs whose
       ``tot_us`` differ by at most that much.
    2. Greedy by ToT: the candidate pair with the smallest ``|tot_us_row -
       tot_us_column|`` is matched first, its two half-hits leave the pool, and so on
       until no candidate is left. Ties go to the row half-hit that comes first in the
       frame, then to the column half-hit that comes first. (Computed as rounds of
       "each half's best remaining partner is mutual", which gives exactly the greedy
       matching; the number of rounds is bounded by the largest group, not the frame.)
    3. Half-hits left without a partner are dropped, or, with ``keep_unmatched=True``,
       kept as rows with a null ``row`` or ``column`` (and null ToT on that side).

    Columns: ``readout_id``, ``wall_timestamp`` (when the frame has it), ``chip_id``,
    ``row``, ``column`` (the pixel's, uint8), ``tot_us_row``, ``tot_us_column``
    (float64), ``chip_timestamp`` (when present; the row half's, or the column half's for
    an unmatched column half), ``decoding_order_row``, ``decoding_order_column`` (when
    present), one row per pixel hit, in the order of the frame (by the earlier of the two
    half-hits). ``hit_map`` and ``plot_hit_map`` take this table, and so do
    ``tot_histogram`` and ``plot_tot`` with ``tot="tot_us_row"`` or ``"tot_us_column"``.
    A frame read from several files with ``include_file_paths="file"`` is matched file
    by file (a half-hit never pairs with one of another file), and the result keeps that
    column first.

    In the public AstroPix 3 sample the two halves of a pixel hit share the chip
    timestamp, and the row half's ToT is the larger by about 0.1 µs (19 clock cycles,
    median): matching on the timestamp first keeps the ToT rule from pairing halves of
    different pixel hits of one readout.
    """
    names = column_names(frame)
    optional = [c for c in ("chip_timestamp", "wall_timestamp", "decoding_order") if c in names]
    needed = ["readout_id", "chip_id", "column", "location", "tot_us", *optional]
    # (an AstroPix 4 frame has row and column already: no location, nothing to pair)
    half_hits = ("it is for AstroPix 3 hits, whose row and column come as two half-hits "
                 "with a location; select location when reading" if "row" not in names
                 else "AstroPix 4 hits have their row and column already: nothing to match")
    files = file_columns(frame, info, "match_rows_columns", needed)
    data = columns_of(frame, [*files, *needed], "match_rows_columns", half_hits)
    result = like_input(_match_rows_columns(data, files, same_chip_timestamp,
                                            max_tot_difference_us, keep_unmatched), frame)
    if info is not None:  # the pixel table keeps the run's metadata: .bindf.hit_map() works
        if isinstance(result, pd.DataFrame):
            set_pandas_info(result, info)
        else:
            set_polars_info(result, dict(info))
    return result


# --- plots ----------------------------------------------------------------------------


def plot_hit_map(frame: Any, info: Mapping[str, Any], *, chip: int | None = None,
                 shape: tuple[int, int] | None = None, ax: Any = None,
                 **imshow_kwargs: Any) -> Any:
    """Image of the hit map (row up, column across); one chip, or all chips summed."""
    data = _pixel_columns_of(frame, ["chip_id", "row", "column"], "plot_hit_map")
    if chip is not None:
        chips = data["chip_id"].drop_nulls().unique().sort().to_list()
        if chips and chip not in chips:
            raise ValueError(f"plot_hit_map(chip={chip!r}): this frame has no hit of that "
                             f"chip; its chips are {chips}")
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
             range: tuple[float, float] | None = None, ax: Any = None,
             tot: str | None = None) -> Any:
    """ToT histogram, one step line per chip (``tot``: as for :func:`tot_histogram`)."""
    column = _tot_column(frame, tot, "plot_tot")
    data = columns_of(frame, ["chip_id", column], "plot_tot")
    table = _tot_histogram(data.rename({column: "tot_us"}), ["chip_id"], bins, range)
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
    """Hits per readout against time since the first readout (of each file, one line
    per file for a frame read with ``include_file_paths="file"``).

    Tables without a per-readout time (AstroPix 3 runs converted from text logs have
    ``wall_timestamp`` 0 everywhere) are drawn against ``readout_id`` instead.
    """
    time = _readout_time_column(frame)
    files = file_columns(frame, info, "plot_hits_per_readout", ["readout_id", time])
    data = columns_of(frame, [*files, "readout_id", time], "plot_hits_per_readout")
    table = _hits_per_readout(data.rename({time: "timestamp"}), files)
    ax = new_axes(ax)
    title = f"{_chip_name(info['header'])} hits per readout"
    timed = bool(table.height) and bool((table["timestamp"].fill_null(0) != 0).any())
    parts = table.group_by(files, maintain_order=True) if files else [((), table)]
    for key, part in parts:
        part = part.drop_nulls(["readout_id", "timestamp"])
        if not part.height:
            continue
        if timed:
            stamps = part["timestamp"].to_numpy().astype(np.int64)
            x = (stamps - stamps[0]) / 1e9
        else:
            x = part["readout_id"].to_numpy()
        ax.plot(x, part["hits"].to_numpy(), marker=".", linewidth=0.5,
                label=file_label(key) if files else None)
    if timed and not files:
        first = int(table["timestamp"].drop_nulls()[0])
        start = dt.datetime.fromtimestamp(first // 10**9, tz=dt.timezone.utc)
        title += f" (from {start:%Y-%m-%d %H:%M:%S} UTC)"
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Time since first readout [s]" if timed else "Readout id")
    ax.set_ylabel("Hits per readout")
    ax.set_title(title)
    if files and table.height:
        ax.legend()
    return ax


# --- computation (polars in, polars out) ---------------------------------------------


#: The most rows (and columns) a hit map has: hits' rows and columns are uint8.
MAX_GRID_SIDE = 256


def grid_shape(header: Mapping[str, Any], rows: np.ndarray, columns: np.ndarray,
               shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rows, columns) of the map: ``shape`` if given (it must hold every hit), else
    the readout's pixel matrix, grown to cover the hits."""
    top_row = int(rows.max()) + 1 if len(rows) else 0
    top_col = int(columns.max()) + 1 if len(columns) else 0
    if shape is not None:
        # (the map's row and column are uint8, as the hits' are: at most 256 of each)
        if (isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence)
                or len(shape) != 2
                or not all(isinstance(n, Integral) and not isinstance(n, bool)
                           and 1 <= n <= MAX_GRID_SIDE for n in shape)):
            raise ValueError(f"shape must be (rows, columns): two integers from 1 to "
                             f"{MAX_GRID_SIDE}, not {shape!r}")
        n_rows, n_cols = int(shape[0]), int(shape[1])
        if top_row > n_rows or top_col > n_cols:
            raise ValueError(
                f"shape {shape!r} is too small: hits reach row {top_row - 1}, "
                f"column {top_col - 1}"
            )
        return n_rows, n_cols
    n_rows, n_cols = pixel_matrix(header.get("readout_uid"))
    return max(n_rows, top_row), max(n_cols, top_col)


def pixel_matrix(readout_uid: Any) -> tuple[int, int]:
    """(rows, columns) of the chip a header's ``readout_uid`` names: 13 × 16 for
    AstroPix 4, 35 × 35 for AstroPix 3, else :data:`FIELD_RANGE` squared."""
    # (imported here: ``import bindf`` loads this module and must load no format module)
    from ..formats.apx import APX3_READOUT_UID, APX4_READOUT_UID

    if type(readout_uid) is not int:  # anything may be there: only look up an int
        return FIELD_RANGE, FIELD_RANGE
    matrices = {APX4_READOUT_UID: (13, 16), APX3_READOUT_UID: (35, 35)}
    return matrices.get(readout_uid, (FIELD_RANGE, FIELD_RANGE))


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


def _readout_time_column(frame: Any) -> str:
    """``timestamp`` (AstroPix 4), or ``wall_timestamp`` in a frame that only has that."""
    names = column_names(frame)
    return "wall_timestamp" if "timestamp" not in names and "wall_timestamp" in names \
        else "timestamp"


def _match_rows_columns(data: pl.DataFrame, files: list[str], same_chip_timestamp: bool,
                        max_difference: float | None, keep_unmatched: bool) -> pl.DataFrame:
    if max_difference is not None and not max_difference >= 0:
        raise ValueError(f"max_tot_difference_us must be >= 0 or None, not {max_difference!r}")
    keys = [*files, "readout_id", "chip_id"]
    if same_chip_timestamp and "chip_timestamp" in data.columns:
        keys.append("chip_timestamp")
    data = data.with_row_index("_hit").drop_nulls(["readout_id", "chip_id", "column",
                                                    "location"])
    # fields a pixel hit takes from its half-hits (from the row half when both exist)
    shared = [*files, *(c for c in ("readout_id", "wall_timestamp", "chip_id",
                                     "chip_timestamp") if c in data.columns)]
    has_order = "decoding_order" in data.columns

    def half(flag: int, side: str) -> pl.DataFrame:
        extra = [pl.col("decoding_order").alias(f"decoding_order_{side}")] if has_order else []
        return data.filter(pl.col("column") == flag).select(
            pl.col("_hit").alias(f"_{side}"), *shared,
            pl.col("location").cast(pl.UInt8).alias(side),
            pl.col("tot_us").cast(pl.Float64).alias(f"tot_us_{side}"), *extra)

    rows, columns = half(0, "row"), half(1, "column")
    candidates = (
        rows.select(*keys, "_row", "tot_us_row")
        .join(columns.select(*keys, "_column", "tot_us_column"), on=keys, how="inner")
        .select("_row", "_column",
                (pl.col("tot_us_row") - pl.col("tot_us_column")).abs().alias("_difference"))
        .filter(pl.col("_difference").is_not_nan())  # a half without ToT (null or NaN)
    )
    if max_difference is not None:
        candidates = candidates.filter(pl.col("_difference") <= max_difference)
    candidates = candidates.sort(["_difference", "_row", "_column"])
    rounds = []
    while candidates.height:
        ranked = candidates.with_columns(
            pl.int_range(pl.len()).over("_row").alias("_rank_row"),
            pl.int_range(pl.len()).over("_column").alias("_rank_column"))
        best = ranked.filter((pl.col("_rank_row") == 0) & (pl.col("_rank_column") == 0))
        rounds.append(best.select("_row", "_column"))
        candidates = (candidates.join(best.select("_row"), on="_row", how="anti")
                      .join(best.select("_column"), on="_column", how="anti"))
    pairs = (pl.concat(rounds) if rounds
             else pl.DataFrame(schema={"_row": pl.UInt32, "_column": pl.UInt32}))
    matched = (pairs.join(rows, on="_row", how="inner")
               .join(columns.drop(shared), on="_column", how="inner"))
    parts = [matched]
    if keep_unmatched:
        lone_rows = rows.join(pairs.select("_row"), on="_row", how="anti")
        lone_columns = columns.join(pairs.select("_column"), on="_column", how="anti")
        parts += [lone_rows, lone_columns]
    table = pl.concat(parts, how="diagonal_relaxed")
    first = pl.min_horizontal(pl.col("_row"), pl.col("_column"))
    table = table.with_columns(first.alias("_first")).sort("_first")
    wanted = [*files, "readout_id", "wall_timestamp", "chip_id", "row", "column", "tot_us_row",
              "tot_us_column", "chip_timestamp", "decoding_order_row", "decoding_order_column"]
    return table.select([c for c in wanted if c in table.columns])


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


def _hits_per_readout(data: pl.DataFrame, files: list[str]) -> pl.DataFrame:
    # A hit table lists each readout's hits together, readouts in time order: count the
    # runs in one pass. Anything else (shuffled or concatenated frames, several files)
    # is grouped.
    readout = data["readout_id"].to_numpy()
    stamp = data["timestamp"].to_numpy()
    if not files and data.null_count().sum_horizontal().item() == 0 and len(readout):
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
    table = (data.group_by([*files, "readout_id", "timestamp"], maintain_order=True)
             .agg(pl.len().cast(pl.Int64).alias("hits")))
    return sort_by_file(table, files, "timestamp", "readout_id")


def _small_ints(data: pl.DataFrame, name: str) -> np.ndarray:
    """An 8-bit hit field as int64, refusing values no hit can have."""
    values = data[name]
    if values.dtype != pl.UInt8:
        if not values.dtype.is_integer():
            raise TypeError(f"column {name!r} must hold integers, not {values.dtype}")
        if values.len() and (values.min() < 0 or values.max() > 255):
            raise ValueError(f"column {name!r} has values outside 0..255")
    return values.to_numpy().astype(np.int64, copy=False)


def _tot_column(frame: Any, tot: str | None, helper: str) -> str:
    """The ToT column a histogram counts: ``tot``, or ``tot_us``. A pixel table (two ToTs,
    one per half-hit) must say which: the error names both."""
    if tot is not None:
        return tot
    present = column_names(frame)
    if "tot_us" not in present and {"tot_us_row", "tot_us_column"} <= set(present):
        raise ValueError(f"{helper}() counts one ToT per hit, and a pixel table has two: "
                         "pass tot='tot_us_row' or tot='tot_us_column'")
    return "tot_us"


def _pixel_columns_of(frame: Any, names: list[str], helper: str) -> pl.DataFrame:
    """:func:`columns_of` for helpers that need ``row``: an AstroPix 3 hit table
    (``location``, no ``row``) lacks it because its rows are half-hits, which no read
    option turns into pixels, so the error sends its user to :func:`match_rows_columns`."""
    present = column_names(frame)
    if "row" in names and "row" not in present and "location" in present:
        return columns_of(frame, names, helper, "AstroPix 3 hits are half-hits: call "
                                                "df.bindf.match_rows_columns() first")
    return columns_of(frame, names, helper)


def _chip_name(header: Mapping[str, Any]) -> str:
    # (imported here: ``import bindf`` loads this module and must load no format module)
    from ..formats.apx import SUPPORTED_READOUTS

    uid = header.get("readout_uid")
    return SUPPORTED_READOUTS.get(uid, "AstroPix") if type(uid) is int else "AstroPix"


def _chips_text(data: pl.DataFrame) -> str:
    chips = data["chip_id"].unique().sort().to_list()
    if len(chips) == 1:
        return f"chip {chips[0]}"
    return "all chips" if not chips else "chips " + ", ".join(map(str, chips)) + " summed"
