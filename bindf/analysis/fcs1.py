"""Quick-look analysis of FLIM LABS FCS correlation curves (``read_fcs1``): the mean
curve of each channel pair and the G(τ) plot.

Columns used: ``pair_index``, ``channel_1``, ``channel_2``, ``is_mean``, ``lag_index``,
``tau_us`` and ``g2``; the header gives ``channel_names`` for the plot's labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import polars as pl

from ._common import (
    channel_label,
    columns_of,
    file_columns,
    file_label,
    like_input,
    new_axes,
)

#: The ``df.bindf`` methods this module serves.
HELPERS = ("mean_curves", "plot_correlation")

_KEYS = ["pair_index", "channel_1", "channel_2", "lag_index", "tau_us"]
_NEEDED = [*_KEYS, "is_mean", "g2"]

Frame = pd.DataFrame | pl.DataFrame


def mean_curves(frame: Any, info: Mapping[str, Any]) -> Frame:
    """The mean G(τ) of each channel pair: one row per pair × lag.

    A pair whose file stores a mean (``is_mean`` rows, layout ``"mean_first"``) gets
    that stored curve; otherwise the arithmetic mean of its acquisitions is computed
    per lag (a NaN or null in any acquisition gives NaN, as the vendor's sum would).

    Columns: ``pair_index, channel_1, channel_2, lag_index, tau_us, g2`` and
    ``stored`` (True: the file's mean, False: computed here), pairs in file order, lags
    ascending. A frame read from several files with ``include_file_paths="file"`` gets
    each file's curves (never a mean across files), that column first.
    """
    files = file_columns(frame, info, "mean_curves", _NEEDED)
    data = columns_of(frame, [*files, *_NEEDED], "mean_curves")
    return like_input(_mean_curves(data, files), frame)


def plot_correlation(frame: Any, info: Mapping[str, Any], *, curves: str = "mean",
                     ax: Any = None) -> Any:
    """G(τ) against τ (µs) on a log axis, one line per pair (``curves="mean"``, the
    mean curves) or per pair and vector (``curves="all"``). τ = 0 cannot be shown on a
    log axis and is left out. Labels use the header's ``channel_names``, else
    "Channel i+1" (and the file's name for a frame read from several files with
    ``include_file_paths="file"``)."""
    if curves not in ("mean", "all"):
        raise ValueError(f"curves must be 'mean' or 'all', not {curves!r}")
    header = info.get("header") or {}
    needed = [*_NEEDED, "vector_index"]
    files = file_columns(frame, info, "plot_correlation", needed)
    data = columns_of(frame, [*files, *needed], "plot_correlation")
    if data["tau_us"].null_count() and data.height:
        raise ValueError("plot_correlation() needs tau_us; this file has no positive "
                         "bin_width in its metadata")
    table = _mean_curves(data, files) if curves == "mean" else data.with_columns(
        stored=pl.col("is_mean"))
    keys = [*files, "pair_index"] + ([] if curves == "mean" else ["vector_index"])
    ax = new_axes(ax)
    for key, part in table.filter(pl.col("tau_us") > 0).group_by(keys, maintain_order=True):
        label = (f"{channel_label(int(part['channel_1'][0]), header)} × "
                 f"{channel_label(int(part['channel_2'][0]), header)}")
        if files:
            label += f" ({file_label(key[:len(files)])})"
        if curves == "all":
            label += " (mean)" if part["stored"][0] else f" #{int(part['vector_index'][0])}"
        ax.plot(part["tau_us"].to_numpy(), part["g2"].to_numpy(), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("τ [µs]")
    ax.set_ylabel("G(τ)")
    ax.set_title("FCS correlation" + (" (mean per pair)" if curves == "mean" else ""))
    if table.height:
        ax.legend()
    return ax


def _mean_curves(data: pl.DataFrame, files: list[str]) -> pl.DataFrame:
    pair = [*files, "pair_index"]
    keys = [*files, *_KEYS]
    data = data.with_columns(pl.col("is_mean").any().over(pair).alias("stored"))
    if files:  # keep the files in frame order whichever kind of mean each has
        keys.insert(0, "_bindf_order")
        data = data.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_bindf_order"))
        data = data.with_columns(pl.col("_bindf_order").min().over(files))
    stored = data.filter(pl.col("stored") & pl.col("is_mean")).select(*keys, "g2")
    # A null g2 counts as NaN (the reader writes JSON null as NaN): sum / len would take
    # it as 0, and mean() would skip it.
    g2 = pl.col("g2").cast(pl.Float64).fill_null(float("nan"))
    computed = (data.filter(~pl.col("stored") & ~pl.col("is_mean"))
                .group_by(keys, maintain_order=True)
                .agg(g2.mean()))  # NaN propagates
    out = pl.concat([stored.with_columns(pl.col("g2").cast(pl.Float64), stored=pl.lit(True)),
                     computed.with_columns(stored=pl.lit(False))])
    # Files in frame order, pairs in file order (pair_index is the position in the
    # file), lags ascending (the writer sorts them).
    if files:
        out = out.sort("_bindf_order", "pair_index", "lag_index", maintain_order=True)
        return out.drop("_bindf_order")
    return out.sort("pair_index", "lag_index", maintain_order=True)
