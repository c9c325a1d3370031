"""Spectroscopy photon-event benchmarks (issue: read_spectro ≥ 1.0× the yardstick)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import _harness as h
import polars as pl

import bindf


def make_legacy(workdir: Path, target_bytes: int) -> Path:
    # Same bytes as the yardstick file: legacy raw output is exactly that layout.
    return h.make_yardstick_file(workdir, target_bytes)


def read_polars(path: Path) -> pl.DataFrame:
    return bindf.read_spectro(path, output="polars")


def read_polars_raw_columns(path: Path) -> pl.DataFrame:
    return bindf.read_spectro(
        path, output="polars", columns=["event", "microtime_ns", "macrotime_ns"]
    )


def vendor_struct_loop_rate(path: Path, max_bytes: int = 20_000_000) -> float:
    """MB/s of the FLIM LABS example script's approach: ``struct.unpack`` per 17 bytes."""
    t0 = time.perf_counter()
    done = 0
    with open(path, "rb") as f:
        while done < max_bytes:
            data = f.read(17)
            if len(data) < 17:
                break
            struct.unpack("<Bdd", data)
            done += 17
    return done / (time.perf_counter() - t0) / 1e6


CASES = [
    h.Case("spectro legacy → polars (all 5 columns)", make_legacy,
           "bench_spectro:read_polars", goal_ratio=1.0),
    h.Case("spectro legacy → polars (3 raw columns)", make_legacy,
           "bench_spectro:read_polars_raw_columns", goal_ratio=1.0),
]
