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

from ._common import channel_label, columns_of, like_input, new_axes

#: The ``df.bindf`` methods this module serves.
HELPERS = ("mean_curves", "plot_correlation")

_KEYS = ["pair_index", "channel_1", "channel_2", "lag_index", "tau_us"]
_NEEDED = [*_KEYS, "is_mean", "g2"]

Frame = pd.DataFrame | pl.DataFrame


def mean_curves(frame: Any, info: Mapping[str, Any]) -> Frame:
    """The mean G(τ) of each channel pair: one row per pair × lag.

    A pair whose file stores a mean (``is_mean`` rows, layout ``"mean_first"``) gets
    that stored curve; otherwise the arithmetic mean of its acquisitions is computed
    per lag (a NaN in any acquisition gives NaN, as the vendor's sum would).

    Columns: ``pair_index, channel_1, channel_2, lag_index, tau_us, g2`` and
    ``stored`` (True: the file's mean, False: computed here), in file order.
    """
    return like_input(_mean_curves(columns_of(frame, _NEEDED, "mean_curves")), frame)


def plot_correlation(frame: Any, info: Mapping[str, Any], *, curves: str = "mean",
                     ax: Any = None) -> Any:
    """G(τ) against τ (µs) on a log axis, one line per pair (``curves="mean"``, the
    mean curves) or per pair and vector (``curves="all"``). τ = 0 cannot be shown on a
    log axis and is left out. Labels use the header's ``channel_names``, else
    "Channel i+1"."""
    if curves not in ("mean", "all"):
        raise ValueError(f"curves must be 'mean' or 'all', not {curves!r}")
    header = info.get("header") or {}
    data = columns_of(frame, [*_NEEDED, "vector_index"], "plot_correlation")
    if data["tau_us"].null_count() and data.height:
        raise ValueError("plot_correlation() needs tau_us; this file has no positive "
                         "bin_width in its metadata")
    table = _mean_curves(data) if curves == "mean" else data.with_columns(
        stored=pl.col("is_mean"))
    keys = ["pair_index"] if curves == "mean" else ["pair_index", "vector_index"]
    ax = new_axes(ax)
    for _, part in table.filter(pl.col("tau_us") > 0).group_by(keys, maintain_order=True):
        label = (f"{channel_label(int(part['channel_1'][0]), header)} × "
                 f"{channel_label(int(part['channel_2'][0]), header)}")
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


def _mean_curves(data: pl.DataFrame) -> pl.DataFrame:
    has_mean = data.group_by("pair_index").agg(pl.col("is_mean").any().alias("stored"))
    data = data.join(has_mean, on="pair_index", how="left")  # order: sorted below
    stored = data.filter(pl.col("stored") & pl.col("is_mean")).select(*_KEYS, "g2")
    computed = (data.filter(~pl.col("stored") & ~pl.col("is_mean"))
                .group_by(_KEYS, maintain_order=True)
                .agg(pl.col("g2").sum() / pl.len()))  # NaN propagates (polars mean too)
    out = pl.concat([stored.with_columns(stored=pl.lit(True)),
                     computed.with_columns(stored=pl.lit(False))])
    # Pairs in file order (pair_index is the position in the file), lags ascending (the
    # writer sorts them).
    return out.sort(["pair_index", "lag_index"], maintain_order=True)
