"""IT02 intensity tracing benchmarks (issue: sparse read ≥ 0.5× the yardstick, peak ≤ 1.1× out).

The sparse file imitates the current software: 4 channels with very different count
rates (so masks vary: most records carry 2-3 counts), bin times with a little jitter, and
a sample that is dark 10% of the time: those bins count zero everywhere and are left out.
The dense file holds the same kind of bins in the older fixed-size layout.
"""

from __future__ import annotations

from pathlib import Path

import _harness as h
import numpy as np
import polars as pl

import bindf

CHANNELS = [0, 1, 2, 3]
BIN_MICROS = 100
#: Mean photon counts per bin of each channel while the sample is lit.
RATES = (40.0, 2.0, 0.4, 0.02)
LIT = 0.9
#: Average sparse bytes per bin (9 + 4 per non-zero count; dark bins are not written).
_SPARSE_BYTES_PER_BIN = LIT * (9 + 4 * sum(1 - np.exp(-r) for r in RATES))


def _frame(n_bins: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    bin_ns = BIN_MICROS * 1000.0
    lit = rng.random(n_bins) < LIT
    data = {"time_ns": np.arange(1, n_bins + 1) * bin_ns + rng.normal(0, 1000.0, n_bins)}
    for channel, rate in zip(CHANNELS, RATES, strict=True):
        data[f"ch{channel + 1}"] = (rng.poisson(rate, n_bins) * lit).astype(np.uint32)
    return pl.DataFrame(data)


def _header() -> dict:
    return {"channels": CHANNELS, "bin_width_micros": BIN_MICROS,
            "acquisition_time_millis": None, "laser_period_ns": 12.5}


def make_sparse(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"it02_sparse_v2_{target_bytes}.bin"
    if not path.exists():
        n_bins = int(target_bytes / _SPARSE_BYTES_PER_BIN)
        bindf.write_it02(path, _frame(n_bins), _header(), layout="sparse")
    return path


def make_dense(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"it02_dense_v2_{target_bytes}.bin"
    if not path.exists():
        n_bins = target_bytes // (8 + 4 * len(CHANNELS))
        bindf.write_it02(path, _frame(n_bins), _header(), layout="dense")
    return path


def read_polars(path: Path) -> pl.DataFrame:
    return bindf.read_it02(path, output="polars")


def read_polars_filled(path: Path) -> pl.DataFrame:
    return bindf.read_it02(path, output="polars", fill_gaps=True)


CASES = [
    h.Case("it02 sparse → polars", make_sparse, "bench_it02:read_polars", goal_ratio=0.5),
    h.Case("it02 sparse → polars (fill_gaps)", make_sparse, "bench_it02:read_polars_filled"),
    h.Case("it02 dense → polars", make_dense, "bench_it02:read_polars"),
]
