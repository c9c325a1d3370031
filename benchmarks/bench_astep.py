"""A-STEP layer-frame stream benchmarks (issue: read_astep ≥ 0.5× the yardstick).

The input is a synthetic AstroPix 3 run written by ``write_astep``: 11-byte frames with
32-bit little-endian FPGA timestamps, as in the real quad-chip sample, with 1 % wrong-length
frames (payload 1) and a ``0xFF`` filler run after 1 frame in 50, random pixel and ToT
fields, timestamps increasing.
"""

from __future__ import annotations

from pathlib import Path

import _harness as h
import numpy as np
import polars as pl
import pyarrow as pa

import bindf
from bindf.formats.astep import write_astep

#: Mean bytes per frame of the generator below (11-byte frames, a few shorter, filler).
_BYTES_PER_FRAME = 11.1
_THREE_COLUMNS = ["layer", "location", "fpga_ts"]


def make_astep(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"astep_{target_bytes}.bin"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    n = int(target_bytes / _BYTES_PER_FRAME)
    chip_id = rng.integers(0, 4, n, dtype=np.uint8)
    sensor = np.empty((n, 5), dtype=np.uint8)
    sensor[:, 0] = chip_id << 3 | 4
    sensor[:, 1] = rng.integers(0, 2, n, dtype=np.uint8) << 7 | rng.integers(0, 35, n, dtype=np.uint8)
    sensor[:, 2] = rng.integers(0, 256, n, dtype=np.uint8)
    sensor[:, 3] = rng.integers(0, 16, n, dtype=np.uint8)
    sensor[:, 4] = rng.integers(0, 256, n, dtype=np.uint8)
    wrong = rng.random(n) < 0.01
    count = np.where(wrong, 2, 5)
    sensor[wrong, 0] = chip_id[wrong] << 3 | 1
    flat = sensor[np.arange(5) < count[:, None]]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    frames = pa.table({
        "layer": rng.integers(1, 4, n, dtype=np.uint8),
        "fpga_ts": (1_366_301_106 + np.cumsum(rng.integers(0, 60, n))) % (1 << 32),
        "sensor": pa.Array.from_buffers(pa.large_binary(), n,
                                        [None, pa.py_buffer(offsets), pa.py_buffer(flat)]),
    })
    filler = np.where(rng.random(n) < 0.02, rng.integers(1, 20, n), 0)
    write_astep(path, frames, filler=filler)
    return path


def _read(path: Path, **options: object) -> pl.DataFrame:
    return bindf.read_astep(path, output="polars", **options)


def read_polars(path: Path) -> pl.DataFrame:
    return _read(path)


def read_polars_3_columns(path: Path) -> pl.DataFrame:
    return _read(path, columns=_THREE_COLUMNS)


def extra_report(workdir: Path, args: object) -> None:
    """Printed by bench.py after the table: frames/s and the projection ratio."""
    path = make_astep(workdir, int(getattr(args, "size_mb", 200.0) * 1e6))
    full, frame = h.best_time(lambda: read_polars(path))
    frames = frame.height
    del frame
    three, _ = h.best_time(lambda: read_polars_3_columns(path))
    print("astep comparisons (same process, best of 3):")
    print(f"    frames/s (all 17 columns): {frames / full / 1e6:.1f} M")
    print(f"    3 of 17 columns: {three:.3f} s vs all 17: {full:.3f} s (ratio {three / full:.2f})")


CASES = [
    h.Case("astep → polars (all 17 frame columns)", make_astep, "bench_astep:read_polars",
           goal_ratio=0.5, unit="frames"),
    h.Case("astep → polars (3 frame columns)", make_astep, "bench_astep:read_polars_3_columns",
           unit="frames"),
]
