"""Analysis-helper benchmarks (``df.bindf`` hit maps, histograms, rebinning).

Each case reads a file and then runs helpers on the frame, and returns the frame it read:
the throughput ratio, compared with the plain read of the same format in the same run
(``spectro legacy → polars``), shows what the helpers add, and ``peak/out`` shows the
memory the helpers need beyond the frame itself.

AstroPix and IT02 readers are not on this branch: their cases read a synthetic hit /
trace table from a bindf Parquet file (same columns and types as ``read_apx`` /
``read_it02``), so compare them with ``plots: … (read only)``.
"""

from __future__ import annotations

from pathlib import Path

import _harness as h
import numpy as np
import polars as pl

import bindf
from bindf.arrow import build_info
from bindf.frontends.output import set_polars_info

#: Bytes per hit of a read_apx frame (18 columns).
APX_ROW_BYTES = 36


def make_legacy(workdir: Path, target_bytes: int) -> Path:
    return h.make_yardstick_file(workdir, target_bytes)


def spectro_decay_polars(path: Path) -> pl.DataFrame:
    df = bindf.read_spectro(path, output="polars")
    df.bindf.decay_histogram(laser_period_ns=25.0)
    return df


def spectro_decay_pandas(path: Path):
    df = bindf.read_spectro(path)
    df.bindf.decay_histogram(laser_period_ns=25.0)
    return df


def make_apx_parquet(workdir: Path, target_bytes: int) -> Path:
    n = target_bytes // APX_ROW_BYTES
    path = workdir / f"plots_apx_{n}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(1)
    readout = np.sort(rng.integers(0, n // 3, n)).astype(np.uint32)
    columns = {
        "chip_id": rng.integers(0, 4, n, dtype=np.uint8),
        "payload": np.full(n, 7, np.uint8),
        "readout_id": readout,
        "timestamp": (1_753_255_536_000_000_000 + readout.astype(np.uint64) * 77_000),
        "decoding_order": np.zeros(n, np.uint8),
        "row": rng.integers(0, 13, n, dtype=np.uint8),
        "column": rng.integers(0, 16, n, dtype=np.uint8),
    }
    for name, dtype in (("ts_neg1", np.uint8), ("ts_coarse1", np.uint16),
                        ("ts_fine1", np.uint8), ("ts_tdc1", np.uint8), ("ts_neg2", np.uint8),
                        ("ts_coarse2", np.uint16), ("ts_fine2", np.uint8),
                        ("ts_tdc2", np.uint8), ("ts_dec1", np.uint32),
                        ("ts_dec2", np.uint32)):
        columns[name] = np.zeros(n, dtype)
    columns["tot_us"] = rng.normal(230.0, 20.0, n)
    frame = pl.DataFrame(columns)
    set_polars_info(frame, build_info("apx", {"readout_uid": 4000}, None))
    bindf.to_parquet(frame, path, compression="none")
    return path


def apx_read_only(path: Path) -> pl.DataFrame:
    return bindf.read_parquet(path, output="polars")


def apx_helpers(path: Path) -> pl.DataFrame:
    df = bindf.read_parquet(path, output="polars")
    df.bindf.hit_map(per_chip=True)
    df.bindf.tot_histogram(by="pixel", bins=100)
    df.bindf.hits_per_readout()
    return df


CASES = [
    h.Case("plots: spectro read + decay_histogram (polars)", make_legacy,
           "bench_plots:spectro_decay_polars"),
    h.Case("plots: spectro read + decay_histogram (pandas)", make_legacy,
           "bench_plots:spectro_decay_pandas"),
    h.Case("plots: apx parquet (read only)", make_apx_parquet, "bench_plots:apx_read_only",
           unit="hits"),
    h.Case("plots: apx parquet + hit_map/tot/per readout", make_apx_parquet,
           "bench_plots:apx_helpers", unit="hits"),
]
