"""AstroPix 3 ``.apx`` benchmarks (``readout_uid`` 3000; goal ≥ 0.25× the yardstick).

The input is a synthetic run of ~70 MB (as for AstroPix 4): realistic readouts of 2–12
half-hits (a row and a column half-hit per pixel hit), 0–2 idle bytes between hits, 2
leading and 4 trailing idle bytes, random fields; written with the AstroPix 3 encoder
(:func:`bindf.formats._apx3_hits.encode_hits` and
:func:`bindf.formats._apx_writer.readout_records`).

Read with ``bindf.read_apx`` (it dispatches on the header's ``readout_uid``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import _harness as h
import numpy as np
import polars as pl

import bindf
from bindf.formats import _apx3_hits as apx3
from bindf.formats._apx_writer import readout_records

#: Same size as the AstroPix 4 case, whatever --size-mb says.
APX3_BYTES = 70_000_000
#: Mean bytes per readout of the generator below (19 header + 2 + 7 × 5 + ~6 + 4).
_BYTES_PER_READOUT = 66
_THREE_COLUMNS = ["readout_id", "column", "location"]


def make_apx3(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"apx3_{APX3_BYTES}.apx"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    n_readouts = APX3_BYTES // _BYTES_PER_READOUT
    per_readout = 2 * rng.integers(1, 7, n_readouts)
    n = int(per_readout.sum())
    raw = apx3.encode_hits({
        "chip_id": np.zeros(n, np.uint8),
        "column": np.tile([0, 1], n // 2),
        "location": rng.integers(0, 35, n),
        "chip_timestamp": np.repeat(rng.integers(0, 256, n // 2), 2),
        "tot_dec": rng.integers(10, 600, n),
    })
    records = readout_records(
        raw, np.arange(n_readouts, dtype=np.uint32),
        1_753_810_368_000_000_000 + np.arange(n_readouts, dtype=np.uint64) * 50_000_000,
        per_readout, idle_between=rng.integers(0, 3, n))
    header = json.dumps({"readout_uid": 3000, "options": {"chipVer": 3, "synthetic": True}})
    with open(path, "wb") as f:
        f.write(b"%APXDF" + struct.pack("<I", len(header)) + header.encode())
        f.write(records.data)
    return path


def _read(path: Path, columns: list[str] | None, level: str = "hits") -> pl.DataFrame:
    return bindf.read_apx(path, output="polars", columns=columns, level=level)


def read_polars(path: Path) -> pl.DataFrame:
    return _read(path, None)


def read_polars_3_columns(path: Path) -> pl.DataFrame:
    return _read(path, _THREE_COLUMNS)


def read_readouts(path: Path) -> pl.DataFrame:
    return _read(path, None, level="readouts")


CASES = [
    h.Case("apx3 → polars (all 12 hit columns)", make_apx3, "bench_apx3:read_polars",
           goal_ratio=0.25, unit="hits"),
    h.Case("apx3 → polars (3 hit columns)", make_apx3, "bench_apx3:read_polars_3_columns",
           unit="hits"),
    h.Case("apx3 → polars (readout table)", make_apx3, "bench_apx3:read_readouts",
           unit="readouts"),
]
