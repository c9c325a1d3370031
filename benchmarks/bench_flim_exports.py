"""FLIM LABS ITT1 time-tagger events, IT01 intensity tracing and FCS1 correlation curves,
and the ITT1/IT01 writers.

Run with ``python bench.py --only flim``. Inputs are generated with numpy and json from
the byte layouts (the format pages in docs/), not with bindf's writers, so a writer bug
cannot make a reader look fast.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import _harness as h
import numpy as np
import polars as pl

import bindf

#: FCS1 files are JSON text of a few hundred KB in practice; a 200 MB one would only
#: measure json.loads, so its input is capped here.
FCS1_MAX_BYTES = 20_000_000


def _preamble(magic: bytes, header: dict) -> bytes:
    raw = json.dumps(header).encode()
    return magic + struct.pack("<I", len(raw)) + raw


def make_itt1(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"itt1_{target_bytes}.bin"
    n = target_bytes // 9
    if not path.exists() or path.stat().st_size < n * 9:
        rng = np.random.default_rng(3)
        rec = np.empty(n, dtype=np.dtype([("e", "u1"), ("t", "<f8")]))
        rec["e"] = rng.integers(0, 4, n, dtype=np.uint8)
        rec["e"][::64] = 76  # a line marker every 64 events
        rec["t"] = np.cumsum(rng.exponential(500.0, n))
        with open(path, "wb") as f:
            f.write(_preamble(b"ITT1", {"channels": [0, 1, 2, 3], "laser_period_ns": 12.5}))
            rec.tofile(f)
    return path


def make_it01(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"it01_{target_bytes}.bin"
    n = target_bytes // 40
    if not path.exists() or path.stat().st_size < n * 40:
        rng = np.random.default_rng(4)
        rec = np.zeros(n, dtype=np.dtype([("t", "<f8"), ("s", "<u4", (8,))]))
        rec["t"] = (np.arange(n) + 1) * 3e6
        rec["s"][:, :2] = rng.integers(0, 40_000, (n, 2), dtype=np.uint32)
        with open(path, "wb") as f:
            f.write(_preamble(b"IT01", {"channels": [0, 1], "bin_width_micros": 3000,
                                        "acquisition_time_millis": None,
                                        "laser_period_ns": 25.0}))
            rec.tofile(f)
    return path


def make_fcs1(workdir: Path, target_bytes: int) -> Path:
    size = min(target_bytes, FCS1_MAX_BYTES)
    path = workdir / f"fcs1_{size}.bin"
    if not path.exists():
        rng = np.random.default_rng(5)
        lags = np.unique(np.round(np.logspace(0, 6, 82))).astype(int).tolist()
        per_vector = 22 * len(lags)  # ~22 bytes of JSON per value
        n_vectors = max(2, size // per_vector)
        pairs = [[a, b] for a in range(4) for b in range(4)]
        per_pair = max(2, n_vectors // len(pairs))
        curves = [[pair, rng.normal(0, 0.01, (per_pair, len(lags))).tolist()] for pair in pairs]
        data = json.dumps({"g2_correlations": curves, "lag_index": lags}).encode()
        meta = {"acquisition_time": 4000, "bin_width": 10, "correlations": pairs,
                "enabled_channels": [0, 1, 2, 3], "notes": "", "num_acquisitions": per_pair}
        path.write_bytes(_preamble(b"FCS1", meta) + struct.pack("<I", len(data)) + data)
    return path


def itt1_polars(path: Path) -> pl.DataFrame:
    return bindf.read_itt1(path, output="polars")


def itt1_raw_columns(path: Path) -> pl.DataFrame:
    return bindf.read_itt1(path, output="polars", columns=["event", "time_ns"])


def it01_polars(path: Path) -> pl.DataFrame:
    return bindf.read_it01(path, output="polars")


def it01_slots(path: Path) -> pl.DataFrame:
    return bindf.read_it01(path, output="polars", slots=True)


def fcs1_polars(path: Path) -> pl.DataFrame:
    return bindf.read_fcs1(path, output="polars")


_FRAMES: dict[str, pl.DataFrame] = {}


def write_itt1(path: Path) -> pl.DataFrame:
    """Writer throughput: the frame is read once and cached, later repeats only write."""
    key = str(path)
    if key not in _FRAMES:
        _FRAMES[key] = bindf.read_itt1(path, output="polars", columns=["event", "time_ns"])
    frame = _FRAMES[key]
    bindf.write_itt1(Path(path).with_suffix(".itt1.out"), frame, {"channels": [0, 1, 2, 3]})
    return frame


def write_it01(path: Path) -> pl.DataFrame:
    key = f"{path}:it01"
    if key not in _FRAMES:
        _FRAMES[key] = bindf.read_it01(path, output="polars")
    frame = _FRAMES[key]
    bindf.write_it01(Path(path).with_suffix(".it01.out"), frame, {"channels": [0, 1]})
    return frame


CASES = [
    h.Case("flim itt1 → polars (all 4 columns)", make_itt1, "bench_flim_exports:itt1_polars"),
    h.Case("flim itt1 → polars (event, time_ns)", make_itt1,
           "bench_flim_exports:itt1_raw_columns"),
    h.Case("flim it01 → polars (2 channels)", make_it01, "bench_flim_exports:it01_polars"),
    h.Case("flim it01 → polars, slots=True", make_it01, "bench_flim_exports:it01_slots"),
    h.Case("flim fcs1 → polars (JSON curves)", make_fcs1, "bench_flim_exports:fcs1_polars",
           notes=[f"input capped at {FCS1_MAX_BYTES // 1_000_000} MB of JSON"]),
    h.Case("flim writer: ITT1 events (polars frame)", make_itt1, "bench_flim_exports:write_itt1",
           notes=["time: best of the repeats (frame cached after the first); "
                  "peak/out includes reading the frame"]),
    h.Case("flim writer: IT01 (polars frame)", make_it01, "bench_flim_exports:write_it01",
           notes=["as above: write time only; peak/out includes the read"]),
]
