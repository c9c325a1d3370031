"""What every analysis helper shares: getting columns out of any frame, giving the result
back in the caller's library, binning, header numbers, channel labels and matplotlib.

The helpers compute once, in polars/numpy, whatever library the frame came from:
:func:`columns_of` turns the input (pandas, polars, LazyFrame) into a polars frame of just
the columns needed, and :func:`like_input` converts the polars result back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ..errors import HeaderError, missing_dependency

#: Intensity-tracing count columns: ``ch{i+1}`` for the 0-based channel index ``i``.
CHANNEL_COLUMN = re.compile(r"ch([1-9][0-9]*)")


def column_names(frame: Any) -> list[str]:
    if isinstance(frame, pl.LazyFrame):
        return frame.collect_schema().names()
    return [str(name) for name in frame.columns]


def require_columns(frame: Any, needed: Sequence[str], helper: str) -> None:
    missing = [name for name in needed if name not in column_names(frame)]
    if missing:
        raise ValueError(
            f"{helper}() needs the column(s) {list(needed)}; this frame lacks {missing} "
            "(select them when reading, or do not drop them)"
        )


def columns_of(frame: Any, names: Sequence[str], helper: str) -> pl.DataFrame:
    """Just ``names`` of ``frame`` as a polars DataFrame.

    A LazyFrame is collected with only these columns, so ``scan_*`` + a helper reads no
    other column. pandas columns go through Arrow, which keeps nullable integers
    (spectroscopy ``channel``) as integers with nulls.
    """
    require_columns(frame, names, helper)
    names = list(names)
    if isinstance(frame, pd.DataFrame):
        return pl.from_pandas(frame[names])
    if isinstance(frame, pl.LazyFrame):
        return frame.select(names).collect()
    if isinstance(frame, pl.DataFrame):
        return frame.select(names)
    raise TypeError(f"expected a pandas or polars frame, not {type(frame).__name__}")


def like_input(result: pl.DataFrame, frame: Any) -> pd.DataFrame | pl.DataFrame:
    """``result`` in the library of ``frame``: pandas for pandas, polars otherwise.

    A LazyFrame gets an eager polars DataFrame: the helper has already computed it.
    """
    if isinstance(frame, pd.DataFrame):
        return result.to_pandas()
    return result


# --- header values --------------------------------------------------------------------


def positive_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite positive number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


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


def bin_index(values: np.ndarray, edges: np.ndarray, *, closed_last: bool) -> np.ndarray:
    """The bin of each value, ``-1`` for values outside the edges (and NaN).

    Bins are half-open ``[lo, hi)``; with ``closed_last`` the last one also takes its
    right edge, as ``numpy.histogram`` does.
    """
    index = np.searchsorted(edges, values, side="right") - 1
    n_bins = len(edges) - 1
    if closed_last:
        index[values == edges[-1]] = n_bins - 1
    index[(index < 0) | (index >= n_bins)] = -1  # NaN sorts last: index n_bins
    return index


def grouped_counts(group: np.ndarray, n_groups: int, index: np.ndarray,
                   n_bins: int) -> np.ndarray:
    """Counts per (group, bin) as an ``(n_groups, n_bins)`` int64 array; ``index -1``
    (outside every bin) is not counted."""
    inside = index >= 0
    flat = group[inside].astype(np.int64) * n_bins + index[inside]
    return np.bincount(flat, minlength=n_groups * n_bins).reshape(n_groups, n_bins)


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
