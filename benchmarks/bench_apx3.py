"""AstroPix 3 ``.apx`` benchmarks (``readout_uid`` 3000; goal ≥ 0.25× the yardstick).

The input is a synthetic run of ~70 MB (as for AstroPix 4): realistic readouts of 2–12
half-hits (a row and a column half-hit per pixel hit), 0–2 idle bytes between hits, 2
leading and 4 trailing idle bytes, random fields; written with the AstroPix 3 encoder
(:func:`bindf.formats._apx3_hits.encode_hits` and ``readout_records``).

Until ``read_apx`` dispatches on ``readout_uid``, :func:`read_polars` runs the same
pieces the reader will: the file is framed with ``_apx.frame_readouts`` in blocks of
readouts, each block is decoded by the AstroPix 3 kernel and turned into columns, and
the record batches become one polars frame. When the reader is wired, replace its body
by ``bindf.read_apx(path, output="polars")`` (and the same for the other two cases).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import _harness as h
import numpy as np
import polars as pl
import pyarrow as pa

from bindf._kernels import _apx
from bindf.formats import _apx3_hits as apx3

#: Same size as the AstroPix 4 case, whatever --size-mb says.
APX3_BYTES = 70_000_000
#: Mean bytes per readout of the generator below (19 header + 2 + 7 × 5 + ~6 + 4).
_BYTES_PER_READOUT = 66
_THREE_COLUMNS = ["readout_id", "column", "location"]
#: Readouts per decode call (as the AstroPix 4 reader).
_READOUTS_PER_CALL = 1 << 15


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
    records = apx3.readout_records(
        raw, np.arange(n_readouts, dtype=np.uint32),
        1_753_810_368_000_000_000 + np.arange(n_readouts, dtype=np.uint64) * 50_000_000,
        per_readout, idle_between=rng.integers(0, 3, n))
    header = json.dumps({"readout_uid": 3000, "options": {"chipVer": 3, "synthetic": True}})
    with open(path, "wb") as f:
        f.write(b"%APXDF" + struct.pack("<I", len(header)) + header.encode())
        f.write(records.data)
    return path


def _read(path: Path, columns: list[str] | None, level: str = "hits") -> pl.DataFrame:
    """Frame + decode + columns, block by block (stand-in for ``read_apx``)."""
    buf = np.fromfile(path, dtype=np.uint8)
    (header_len,) = struct.unpack_from("<I", buf, 6)
    pos = 10 + header_len
    hits = level == "hits"
    schema = apx3.HITS_SCHEMA if hits else apx3.READOUTS_SCHEMA
    names = columns or schema.names
    out_schema = pa.schema([schema.field(c) for c in names])
    framing = [np.empty(_READOUTS_PER_CALL, t) for t in (np.int64, np.uint32, np.uint64,
                                                         np.uint32)]
    decoder = apx3.Apx3HitDecoder(store_hits=hits)
    to_columns = apx3.Apx3HitColumns()
    batches = []
    while True:
        n, pos, code = _apx.frame_readouts(buf, pos, len(buf), *framing)
        header_pos, readout_id, timestamp, length = (a[:n] for a in framing)
        decoded = decoder.decode(buf, header_pos + 19, length, readout_id, timestamp)
        if hits:
            arrays = to_columns(decoded, names)
        else:
            arrays = apx3.readout_columns(
                decoded, names, readout_id=readout_id.copy(), wall_timestamp=timestamp.copy(),
                payload_length=length.copy(), byte_offset=header_pos.astype(np.uint64))
        batches.append(pa.RecordBatch.from_arrays([pa.array(a) for a in arrays],
                                                  schema=out_schema))
        if code != _apx.FRAME_FULL:
            break
    # as the reader's polars output: the batches stay polars chunks (no concatenating copy)
    return pl.from_arrow(pa.Table.from_batches(batches, schema=out_schema), rechunk=False)


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
