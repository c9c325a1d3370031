"""What every analysis helper shares: getting columns out of any frame, giving the result
back in the caller's library, binning, header numbers, channel labels and matplotlib.

The helpers compute once, in polars/numpy, whatever library the frame came from:
:func:`columns_of` turns the input (pandas, polars, LazyFrame) into a polars frame of just
the columns needed, and :func:`like_input` converts the polars result back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from .._header import positive_number as positive_number  # the analysis modules' too
from ..errors import HeaderError, missing_dependency
from ..frontends.output import MASKED_DTYPES

#: Intensity-tracing count columns: ``ch{i+1}`` for the 0-based channel index ``i``.
CHANNEL_COLUMN = re.compile(r"ch([1-9][0-9]*)")


def column_names(frame: Any) -> list[str]:
    if isinstance(frame, pl.LazyFrame):
        return frame.collect_schema().names()
    return [str(name) for name in frame.columns]


#: What :func:`require_columns` advises, unless the helper knows better.
SELECT_THEM = "select them when reading, or do not drop them"


def require_columns(frame: Any, needed: Sequence[str], helper: str,
                    hint: str = SELECT_THEM) -> None:
    """A ValueError naming the columns of ``needed`` that ``frame`` lacks, and ``hint``."""
    missing = [name for name in needed if name not in column_names(frame)]
    if missing:
        raise ValueError(
            f"{helper}() needs the column(s) {list(needed)}; this frame lacks {missing} "
            f"({hint})"
        )


def float_values(series: pl.Series) -> np.ndarray:
    """A numeric column as float64 numpy, nulls as NaN (no copy when already float64
    without nulls)."""
    if series.dtype != pl.Float64:
        series = series.cast(pl.Float64)
    if series.null_count():
        series = series.fill_null(np.nan)
    return series.to_numpy()


def columns_of(frame: Any, names: Sequence[str], helper: str,
               hint: str = SELECT_THEM) -> pl.DataFrame:
    """Just ``names`` of ``frame`` as a polars DataFrame (a missing one is a ValueError
    with ``hint``: see :func:`require_columns`).

    A LazyFrame is collected with only these columns, so ``scan_*`` + a helper reads no
    other column. pandas columns go through Arrow, which keeps nullable integers
    (spectroscopy ``channel``) as integers with nulls.
    """
    require_columns(frame, names, helper, hint)
    names = list(names)
    if isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame[names])
    if isinstance(frame, pl.LazyFrame):
        return frame.select(names).collect()
    if isinstance(frame, pl.DataFrame):
        return frame.select(names)
    raise TypeError(f"expected a pandas or polars frame, not {type(frame).__name__}")


def file_columns(frame: Any, info: Mapping[str, Any] | None, helper: str,
                 needed: Sequence[str] = ()) -> list[str]:
    """The columns that tell the files of a multi-file read apart: the frame's text
    columns (``include_file_paths="file"`` adds one; no AstroPix, intensity-tracing or
    FCS column holds text).

    Helpers that follow a trace, a readout or a curve work file by file on them. A frame
    whose metadata lists several source files but that has no such column cannot be
    split: a ValueError says to read it with ``include_file_paths=``. Columns in
    ``needed`` (the helper's own) are never file columns.
    """
    if isinstance(frame, pd.DataFrame):
        names = [str(name) for name, dtype in frame.dtypes.items()
                 if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype)]
    elif isinstance(frame, (pl.DataFrame, pl.LazyFrame)):
        schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
        names = [name for name, dtype in schema.items()
                 if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)]
    else:
        raise TypeError(f"expected a pandas or polars frame, not {type(frame).__name__}")
    names = [name for name in names if name not in needed]
    if not names:
        source = (info or {}).get("source")
        if isinstance(source, (list, tuple)) and len(source) > 1:
            raise ValueError(
                f"{helper}() works file by file, and this frame holds {len(source)} files "
                "with no column telling their rows apart: read them with "
                "include_file_paths='file' (or one file at a time)"
            )
    return names


def sort_by_file(data: pl.DataFrame, files: Sequence[str], *then: str) -> pl.DataFrame:
    """``data`` sorted by file, files in the order they first come in ``data``, then by
    the columns ``then`` (stable: ties keep their order)."""
    if not files:
        return data.sort(list(then), maintain_order=True) if then else data
    order = pl.int_range(pl.len(), dtype=pl.UInt32)
    keyed = data.with_columns(order.alias("_bindf_row")).with_columns(
        pl.col("_bindf_row").min().over(list(files)).alias("_bindf_file"))
    return keyed.sort(["_bindf_file", *then], maintain_order=True).drop(
        "_bindf_row", "_bindf_file")


def file_label(values: Sequence[Any]) -> str:
    """A short label for one file's group in a plot legend: the file's base name."""
    return ", ".join(str(value).replace("\\", "/").rsplit("/", 1)[-1] for value in values)


def like_input(result: pl.DataFrame, frame: Any) -> pd.DataFrame | pl.DataFrame:
    """``result`` in the library of ``frame``: pandas for pandas, polars otherwise.

    A LazyFrame gets an eager polars DataFrame: the helper has already computed it.
    Integer and boolean columns holding nulls become pandas' masked dtypes (``UInt8`` …),
    as bindf's readers give them, not float64 or object.
    """
    if not isinstance(frame, pd.DataFrame):
        return result
    converted = result.to_pandas()
    for name, dtype in result.schema.items():
        if (dtype.is_integer() or dtype == pl.Boolean) and result[name].null_count():
            masked = result[name].to_arrow().to_pandas(types_mapper=MASKED_DTYPES.get)
            converted[name] = masked.array
    return converted


# --- header values --------------------------------------------------------------------


def header_number(info: Mapping[str, Any], key: str, helper: str, hint: str = "") -> float:
    """A positive number the helper needs from the header, or a HeaderError naming it."""
    value = info["header"].get(key)
    number = positive_number(value)
    if number is None:
        source = info.get("source")
        raise HeaderError(
            f"{helper}() needs a positive number in the header's {key!r}, found {value!r}"
            + (f"; {hint}" if hint else ""),
            path=source if isinstance(source, str) else None,
        )
    return number


# --- histograms -----------------------------------------------------------------------


def bin_edges(values: np.ndarray, bins: int | Sequence[float] | str,
              range: tuple[float, float] | None = None) -> np.ndarray:
    """Bin edges the way ``numpy.histogram`` chooses them (int, edges or a rule name)."""
    if isinstance(bins, (bool, np.bool_)):
        raise TypeError("bins must be an int, a sequence of edges or a numpy rule name")
    if isinstance(bins, (int, np.integer)) and bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    values = values[np.isfinite(values)]  # NaN/inf would spoil an automatic range
    edges = np.histogram_bin_edges(values, bins=bins, range=range)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("bin edges must be a 1-D increasing sequence of at least 2 numbers")
    return edges.astype(np.float64)


#: Values histogrammed per step: small enough that the ~12 passes over a block stay in
#: the CPU cache (the trick numpy.histogram uses), large enough to amortise the loop.
BLOCK = 1 << 16


def dense_groups(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``codes`` (non-negative, below ``size``) and a lookup table
    from value to its position among them: ``np.unique(..., return_inverse=True)``
    in O(n + size) instead of a sort."""
    present = np.bincount(codes, minlength=size).astype(bool)
    return np.flatnonzero(present), np.cumsum(present) - 1


def grouped_histogram(values: np.ndarray, edges: np.ndarray, *, closed_last: bool,
                      codes: np.ndarray | None = None, lookup: np.ndarray | None = None,
                      n_groups: int = 1) -> np.ndarray:
    """Histogram of ``values`` per group, as an ``(n_groups, n_bins)`` int64 array.

    A value's group is ``lookup[codes[i]]`` (see :func:`dense_groups`), or group 0
    without ``codes``. Bins are half-open ``[lo, hi)``; with ``closed_last`` the last
    one also takes its right edge, as ``numpy.histogram`` does. NaN and values outside
    the edges are not counted. The result is exactly what ``searchsorted`` on the edges
    gives; equal-width edges are found by a multiplication plus a one-bin correction.
    """
    n_bins = len(edges) - 1
    width = n_bins + 2  # per group: slot 0 below the edges (and NaN), last slot above
    # Edges within a quarter bin of an even grid: the multiplication's guess is at most
    # one bin off, which the correction in _bin_index fixes.
    step = (edges[-1] - edges[0]) / n_bins
    even = edges[0] + np.arange(n_bins + 1) * step
    uniform = bool(np.all(np.abs(edges - even) <= 0.25 * step))
    base = None if codes is None else lookup.astype(np.int64) * width + 1
    size = n_groups * width
    # Few (group, bin) cells: count block by block; many: one flat index, one count.
    counts = np.zeros(size, dtype=np.int64) if size <= BLOCK else None
    flat = None if counts is not None else np.empty(len(values), dtype=np.int64)
    for start in range(0, len(values), BLOCK):
        block = values[start:start + BLOCK]
        index = _bin_index(block, edges, uniform, closed_last)
        if base is None:
            index += 1
        else:
            index += base[codes[start:start + BLOCK]]
        if counts is not None:
            counts += np.bincount(index, minlength=size)
        else:
            flat[start:start + BLOCK] = index
    if counts is None:
        counts = np.bincount(flat, minlength=size)
    return counts.reshape(n_groups, width)[:, 1:-1]


def _bin_index(values: np.ndarray, edges: np.ndarray, uniform: bool,
               closed_last: bool) -> np.ndarray:
    """Bin of each value: ``-1`` below the edges or NaN, ``n_bins`` at or above the
    last edge (unless ``closed_last`` and equal to it)."""
    n_bins = len(edges) - 1
    if uniform:
        guess = np.subtract(values, edges[0], dtype=np.float64)
        guess *= n_bins / (edges[-1] - edges[0])
        np.fmin(guess, n_bins - 1, out=guess)  # fmin/fmax: NaN becomes a bin here,
        np.fmax(guess, 0, out=guess)  # and is set apart below
        index = guess.astype(np.intp)  # truncation is floor for values >= 0
        index -= values < edges[index]
        index += values >= edges[index + 1]
        nan = np.isnan(values)
        if nan.any():
            index[nan] = -1
    else:  # NaN sorts after every edge: index n_bins
        index = np.searchsorted(edges, values, side="right") - 1
    if closed_last:
        index[values == edges[-1]] = n_bins - 1
    return index


# --- channel labels (FLIM LABS) -------------------------------------------------------


def channel_label(channel: int, header: Mapping[str, Any]) -> str:
    """The header's ``channel_names`` entry for a 0-based channel index, else the vendor
    software's ``"Channel i+1"``."""
    names = header.get("channel_names")
    if isinstance(names, Mapping):
        name = names.get(str(channel))
        if isinstance(name, str) and name:
            return name
    return f"Channel {channel + 1}"


# --- matplotlib ----------------------------------------------------------------------


def pyplot() -> Any:
    """``matplotlib.pyplot``, imported only when a plot is asked for."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise missing_dependency("matplotlib", "plot") from None
    return plt


def new_axes(ax: Any) -> Any:
    """``ax``, or the axes of a new figure."""
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots()
    return ax
