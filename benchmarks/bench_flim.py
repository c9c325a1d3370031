"""FLIM LABS spectroscopy exports: SP01 decay curves, SPF1 phasors, and the writers.

Run with ``python bench.py --only flim``. Inputs are generated with numpy from the byte
layouts (docs/formats/), not with bindf's writers, so a writer bug cannot make a reader
look fast.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import _harness as h
import numpy as np
import polars as pl

import bindf

SP01_CHANNELS = [1, 3]


def _preamble(magic: bytes, header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return magic + struct.pack("<I", len(raw)) + raw


def make_sp01(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"sp01_{target_bytes}.bin"
    record = 8 + 1024 * len(SP01_CHANNELS)
    n = target_bytes // record
    if not path.exists() or path.stat().st_size < n * record:
        rng = np.random.default_rng(1)
        dtype = np.dtype([("t", "<f8"), ("c", "<u4", (len(SP01_CHANNELS), 256))])
        rec = np.empty(n, dtype=dtype)
        rec["t"] = np.arange(1, n + 1) * 1e8
        rec["c"] = rng.integers(0, 200, size=(n, len(SP01_CHANNELS), 256), dtype=np.uint32)
        with open(path, "wb") as f:
            f.write(_preamble(b"SP01", {"channels": SP01_CHANNELS, "laser_period_ns": 25.0}))
            rec.tofile(f)
    return path


def make_spf1(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"spf1_{target_bytes}.bin"
    n = target_bytes // 32
    if not path.exists() or path.stat().st_size < n * 32:
        rng = np.random.default_rng(2)
        dtype = np.dtype([("t", "<u8"), ("c", "<u4"), ("h", "<u4"), ("g", "<f8"), ("s", "<f8")])
        rec = np.empty(n, dtype=dtype)
        rec["t"] = (np.arange(n) // 4 + 1) * 100_000_000
        rec["c"] = np.tile([1, 1, 3, 3], n // 4 + 1)[:n]
        rec["h"] = np.tile([1, 2, 1, 2], n // 4 + 1)[:n]
        rec["g"] = rng.random(n)
        rec["s"] = rng.random(n)
        with open(path, "wb") as f:
            f.write(_preamble(b"SPF1", {"channels": [1, 3], "harmonics": 2}))
            rec.tofile(f)
    return path


def sp01_tidy(path: Path) -> pl.DataFrame:
    return bindf.read_sp01(path, output="polars")


def sp01_tidy_counts(path: Path) -> pl.DataFrame:
    return bindf.read_sp01(path, output="polars", columns=["time_ns", "channel", "bin", "count"])


def sp01_wide(path: Path) -> pl.DataFrame:
    return bindf.read_sp01(path, output="polars", shape="wide")


def spf1_polars(path: Path) -> pl.DataFrame:
    return bindf.read_spf1(path, output="polars")


def spf1_pandas(path: Path):
    return bindf.read_spf1(path)


_FRAMES: dict[str, pl.DataFrame] = {}


def write_spectro_stt1(path: Path) -> pl.DataFrame:
    """Writer throughput: the frame is read once and cached, later repeats only write."""
    key = str(path)
    if key not in _FRAMES:
        _FRAMES[key] = bindf.read_spectro(path, output="polars",
                                          columns=["event", "microtime_ns", "macrotime_ns"])
    frame = _FRAMES[key]
    bindf.write_spectro(Path(path).with_suffix(".stt1.out"), frame, {"channels": [0, 1, 2, 3]})
    return frame


def write_sp01_wide(path: Path) -> pl.DataFrame:
    key = f"{path}:wide"
    if key not in _FRAMES:
        _FRAMES[key] = bindf.read_sp01(path, output="polars", shape="wide")
    frame = _FRAMES[key]
    bindf.write_sp01(Path(path).with_suffix(".sp01.out"), frame, {"channels": SP01_CHANNELS})
    return frame


CASES = [
    h.Case("flim sp01 → polars wide", make_sp01, "bench_flim:sp01_wide"),
    h.Case("flim sp01 → polars tidy (4 columns)", make_sp01, "bench_flim:sp01_tidy_counts"),
    h.Case("flim sp01 → polars tidy (all 5 columns)", make_sp01, "bench_flim:sp01_tidy"),
    h.Case("flim spf1 → polars", make_spf1, "bench_flim:spf1_polars", goal_ratio=1.0),
    h.Case("flim spf1 → pandas", make_spf1, "bench_flim:spf1_pandas"),
    h.Case("flim writer: STT1 events (polars frame)", h.make_yardstick_file,
           "bench_flim:write_spectro_stt1",
           notes=["time: best of the repeats (frame cached after the first); "
                  "peak/out includes reading the frame"]),
    h.Case("flim writer: SP01 (wide polars frame)", make_sp01, "bench_flim:write_sp01_wide",
           notes=["as above: write time only; peak/out includes the read"]),
]
