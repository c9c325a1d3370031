"""Quick-look analysis of FLIM LABS spectroscopy photons (``read_spectro``): the decay
histogram (photon microtimes within the laser period) and its plot.

Columns used: ``channel`` (0-based, null on marker rows) and ``microtime_ns``; the header
gives ``laser_period_ns`` and ``channels``. The histogram has the shape of an ``SP01``
decay-curve export summed over time: ``bin`` ``k`` starts at
``bin_time_ns = k * laser_period_ns / bins``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ._common import (
    channel_label,
    columns_of,
    float_values,
    grouped_histogram,
    header_number,
    like_input,
    new_axes,
    positive_number,
)

#: The ``df.bindf`` methods this module serves.
HELPERS = ("decay_histogram", "plot_decay")

#: The vendor's decay curves split the laser period in 256 bins.
DEFAULT_BINS = 256
#: ``bin`` is a uint16 column.
MAX_BINS = 65536

Frame = pd.DataFrame | pl.DataFrame


def decay_histogram(frame: Any, info: Mapping[str, Any], *, bins: int = DEFAULT_BINS,
                    laser_period_ns: float | None = None) -> Frame:
    """Photons per microtime bin over ``[0, laser_period_ns)``, per channel.

    Marker rows (null ``channel``) are left out, and so are photons whose microtime is
    outside the period. Every channel of the header's ``channels`` gets its bins, even
    without photons, as does any other channel found in the data.

    Columns: ``channel`` (uint8), ``bin`` (uint16), ``bin_time_ns`` (start of the bin)
    and ``count`` (int64), sorted by channel and bin. ``laser_period_ns`` overrides the
    header's (legacy raw files have no header at all).
    """
    period = _laser_period(info, laser_period_ns, "decay_histogram")
    data = columns_of(frame, ["channel", "microtime_ns"], "decay_histogram")
    return like_input(_decay_histogram(data, info["header"], bins, period), frame)


def plot_decay(frame: Any, info: Mapping[str, Any], *, bins: int = DEFAULT_BINS,
               laser_period_ns: float | None = None, ax: Any = None) -> Any:
    """The decay histogram on a log scale, one step line per channel (labelled with the
    header's ``channel_names``, else "Channel i+1")."""
    header = info["header"]
    period = _laser_period(info, laser_period_ns, "plot_decay")
    data = columns_of(frame, ["channel", "microtime_ns"], "plot_decay")
    table = _decay_histogram(data, header, bins, period)
    edges = _edges(period, bins)
    ax = new_axes(ax)
    for (channel,), part in table.group_by(["channel"], maintain_order=True):
        ax.stairs(part["count"].to_numpy(), edges, label=channel_label(channel, header))
    ax.set_yscale("log")
    ax.set_xlim(0, period)
    ax.set_xlabel("Microtime [ns]")
    ax.set_ylabel(f"Photons per bin ({period / bins:.3g} ns)")
    ax.set_title(f"Decay histogram (laser period {period:g} ns)")
    if table.height:
        ax.legend()
    return ax


# --- computation (polars in, polars out) ---------------------------------------------


def _laser_period(info: Mapping[str, Any], override: float | None, helper: str) -> float:
    if override is not None:
        period = positive_number(override)
        if period is None:
            raise ValueError(f"laser_period_ns must be a positive number, not {override!r}")
        return period
    return header_number(
        info, "laser_period_ns", helper,
        hint="pass laser_period_ns=... (legacy raw spectroscopy files have no header)",
    )


def _edges(period: float, bins: int) -> np.ndarray:
    edges = np.arange(bins + 1) * period / bins
    edges[-1] = period
    return edges


def _decay_histogram(data: pl.DataFrame, header: Mapping[str, Any], bins: int,
                     period: float) -> pl.DataFrame:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) \
            or not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be an integer from 1 to {MAX_BINS}, not {bins!r}")
    photons = data.filter(pl.col("channel").is_not_null())
    channel = photons["channel"].to_numpy()
    if channel.dtype != np.uint8:
        if len(channel) and (channel.min() < 0 or channel.max() > 255):
            raise ValueError("column 'channel' has values outside 0..255")
        channel = channel.astype(np.int64)
    micro = float_values(photons["microtime_ns"])
    declared = header.get("channels")
    declared = [c for c in declared if type(c) is int and 0 <= c <= 255] \
        if isinstance(declared, list) else []
    present = np.zeros(256, dtype=bool)
    present[declared] = True
    present[channel] = True  # O(n) "unique" of 8-bit values
    channels = np.flatnonzero(present)
    lookup = np.cumsum(present) - 1
    edges = _edges(period, bins)
    counts = grouped_histogram(micro, edges, closed_last=False, codes=channel,
                               lookup=lookup, n_groups=len(channels))
    return pl.DataFrame({
        "channel": pl.Series(np.repeat(channels, bins), dtype=pl.UInt8),
        "bin": pl.Series(np.tile(np.arange(bins), len(channels)), dtype=pl.UInt16),
        "bin_time_ns": pl.Series(np.tile(edges[:-1], len(channels)), dtype=pl.Float64),
        "count": pl.Series(counts.ravel(), dtype=pl.Int64),
    })
