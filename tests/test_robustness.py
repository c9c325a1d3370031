"""Damaged input, every format: only three outcomes are allowed.

1. success;
2. a bindf error that names the byte offset;
3. a truncation warning, with every complete record before the cut — checked against the
   read of the undamaged file (the damaged result must be a prefix of it).

Anything else (another exception type, a crash, a hang, a huge allocation) fails. The
sweeps below feed every reader: truncation at every byte offset of small samples, random
byte flips, absurd declared lengths, zero-length and header-only files. The number of
inputs tried is printed at the end of the session (see ``conftest``-free counter below).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import write_stt1

import bindf
from bindf.errors import BindfError, TruncatedFileWarning

#: Inputs tried per subject, reported by test_report_counts (for the README figures).
TRIED: dict[str, int] = {}


@dataclass
class Subject:
    """A valid small file of one format and how to read it."""

    name: str
    make: Callable[[Path], bytes]
    format: str | None
    options: dict[str, Any] = field(default_factory=dict)
    #: Byte offset where the records start (truncations before it are header damage).
    data_offset: Callable[[bytes], int] = lambda data: 0


def _stt1_bytes(tmp: Path) -> bytes:
    return write_stt1(tmp / "s.bin", n=120, seed=3).read_bytes()


def _legacy_bytes(tmp: Path) -> bytes:
    data = _stt1_bytes(tmp)
    (length,) = struct.unpack_from("<I", data, 4)
    return data[8 + length :]


def _preamble_end(data: bytes) -> int:
    return 8 + struct.unpack_from("<I", data, 4)[0]


def _sp01_bytes(tmp: Path) -> bytes:
    counts = np.arange(2 * 256, dtype="<u4").reshape(2, 256)
    records = b"".join(struct.pack("<d", t) + c.tobytes() for t, c in zip((1e8, 2e8), counts))
    return _preamble(b"SP01", b'{"channels":[1],"laser_period_ns":25.0}') + records


def _spf1_bytes(tmp: Path) -> bytes:
    rec = np.zeros(24, dtype=[("t", "<u8"), ("c", "<u4"), ("h", "<u4"), ("g", "<f8"), ("s", "<f8")])
    rec["t"] = np.arange(24) // 4 * 100_000_000
    rec["c"] = [1, 1, 3, 3] * 6
    rec["h"] = [1, 2] * 12
    rec["g"] = np.linspace(-1, 1, 24)
    rec["s"] = np.linspace(0, 1, 24)
    return _preamble(b"SPF1", b'{"channels":[1,3],"harmonics":2}') + rec.tobytes()


def _preamble(magic: bytes, header: bytes) -> bytes:
    return magic + struct.pack("<I", len(header)) + header


def _apx_log_bytes(tmp: Path) -> bytes:
    from test_apx_log import METADATA, _apx_readouts

    readouts = _apx_readouts(Path(__file__).parent / "data" / "20250723_092534_data.apx")[:25]
    lines = "".join(f"{rid}\t b'{payload.hex()}'\n" for rid, payload in readouts)
    return (METADATA + lines).encode()


SUBJECTS: list[Subject] = [
    Subject("apx-log", _apx_log_bytes, "apx_log", data_offset=lambda d: len(
        __import__("test_apx_log").METADATA)),
    Subject("stt1", _stt1_bytes, "spectro", data_offset=_preamble_end),
    Subject("legacy-spectro", _legacy_bytes, "spectro", {"container": "legacy"}),
    Subject("sp01", _sp01_bytes, "sp01", data_offset=_preamble_end),
    Subject("spf1", _spf1_bytes, "spf1", data_offset=_preamble_end),
]


def read_outcome(path: Path, subject: Subject, full: pa.Table | None) -> str:
    """Read ``path`` and check the outcome is one of the three allowed ones."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = bindf.read(path, format=subject.format, output="arrow", **subject.options)
        except BindfError as exc:
            assert exc.offset is not None, f"error without an offset: {exc!r}"
            assert exc.path == str(path)
            return "error"
    truncated = [w for w in caught if issubclass(w.category, TruncatedFileWarning)]
    others = [w for w in caught if not issubclass(w.category, bindf.BindfWarning)]
    assert not others, [str(w.message) for w in others]
    if full is not None:
        got = table.replace_schema_metadata(None)
        assert got.num_rows <= full.num_rows
        assert got.equals(full.slice(0, got.num_rows)), "damaged read is not a prefix"
    return "truncated" if truncated else "ok"


def _full_read(path: Path, subject: Subject) -> pa.Table:
    return bindf.read(path, format=subject.format, output="arrow",
                      **subject.options).replace_schema_metadata(None)


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_truncation_at_every_offset(subject: Subject, tmp_path: Path) -> None:
    data = subject.make(tmp_path)
    original = tmp_path / "original.bin"
    original.write_bytes(data)
    full = _full_read(original, subject)
    path = tmp_path / "cut.bin"
    outcomes: dict[str, int] = {}
    start = subject.data_offset(data)
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        outcome = read_outcome(path, subject, full)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if cut > start and outcome == "error":
            pytest.fail(f"cut at {cut} (inside the records) raised instead of warning")
    TRIED[subject.name] = TRIED.get(subject.name, 0) + len(data)
    assert outcomes.get("truncated", 0) > 0


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_random_byte_flips(subject: Subject, tmp_path: Path) -> None:
    data = subject.make(tmp_path)
    rng = np.random.default_rng(1234)
    path = tmp_path / "flipped.bin"
    n = 600
    for _ in range(n):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), rng.integers(1, 9)):
            damaged[pos] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        read_outcome(path, subject, None)
        # Format detection must be just as robust.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", bindf.BindfWarning)
                bindf.read(path, output="arrow")
        except BindfError:
            pass
        except Exception as exc:  # pragma: no cover - the failure we look for
            pytest.fail(f"detection raised {exc!r}")
    TRIED[subject.name] = TRIED.get(subject.name, 0) + n


@pytest.mark.parametrize("magic", [b"STT1", b"IT02", b"SP01", b"SPF1"])
@pytest.mark.parametrize("declared", [2**32 - 16, 2**31, 10**9])
def test_absurd_header_length_is_rejected_cheaply(magic: bytes, declared: int,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "bomb.bin"
    path.write_bytes(magic + struct.pack("<I", declared) + b"{" + b" " * 31)  # 40 bytes
    with pytest.raises(BindfError):  # warm-up: first use imports the format's module
        bindf.read(path)
    allocated_before = pa.total_allocated_bytes()
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(BindfError) as info:
        bindf.read(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert info.value.offset is not None
    assert elapsed < 0.05
    assert peak < 1 << 20
    assert pa.total_allocated_bytes() - allocated_before < 1 << 20


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_zero_length_and_header_only(subject: Subject, tmp_path: Path) -> None:
    data = subject.make(tmp_path)
    path = tmp_path / "x.bin"
    path.write_bytes(b"")
    with pytest.raises(BindfError):
        bindf.read(path)  # detection: empty file
    header_only = data[: subject.data_offset(data)]
    path.write_bytes(header_only)
    if header_only:
        table = bindf.read(path, format=subject.format, output="arrow", **subject.options)
        assert table.num_rows == 0
        assert table.schema.names == _full_read(tmp_path.joinpath("x.bin"), subject).schema.names


_CONCURRENT_TRUNCATION = r"""
import os, sys, threading, time, warnings
import bindf
from bindf.errors import BindfError
path = sys.argv[1]
outcomes = []
def read():
    for _ in range(20):
        try:
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                bindf.read(path, output="arrow", batch_size=4096)
            outcomes.append("ok")
        except BindfError:
            outcomes.append("error")
def shrink():
    size = os.path.getsize(path)
    for i in range(60):
        with open(path, "r+b") as f:
            f.truncate(max(size - (i + 1) * (size // 61), 64))
        time.sleep(0.002)
t1, t2 = threading.Thread(target=read), threading.Thread(target=shrink)
t1.start(); t2.start(); t1.join(); t2.join()
print(len(outcomes))
"""


def test_file_truncated_while_read_never_crashes(tmp_path: Path) -> None:
    # A mmap of a file that shrinks raises SIGBUS and kills the interpreter; bindf reads
    # with readinto, so the worst case is a truncation warning or a bindf error. Run in a
    # subprocess so that a crash fails this test instead of the whole suite.
    path = write_stt1(tmp_path / "growing.bin", n=400_000)
    result = subprocess.run([sys.executable, "-c", _CONCURRENT_TRUNCATION, str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "20"


def test_report_counts() -> None:
    """Print how many malformed inputs this session tried (README "Reliability")."""
    total = sum(TRIED.values())
    print(f"\nmalformed inputs tried: {TRIED} total={total}")
    if os.environ.get("BINDF_FUZZ_REPORT"):
        Path(os.environ["BINDF_FUZZ_REPORT"]).write_text(f"{TRIED} total={total}\n")
