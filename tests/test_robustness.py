"""Damaged input, every format: only three outcomes are allowed.

1. success;
2. a bindf error that names the file and the byte offset;
3. a truncation warning, with every complete record before the cut — checked against the
   read of the undamaged file (the damaged result must be a prefix of it).

Anything else fails: another exception type, a crash, a hang (every read is timed, and a
``faulthandler`` watchdog kills a read stuck in C code with a traceback), more rows than
the file's size allows, or a large allocation. The subjects are small real and synthetic
files of every format (APX real and written, APX readout level, the AstroPix text log,
IT02 dense real and sparse written, STT1, legacy spectroscopy, SP01, SPF1), fed to the
readers truncated at every byte offset, with 1–8 random bytes changed, with absurd
declared lengths, empty and header-only. The number of inputs tried is printed at the end
of the run (``conftest.pytest_terminal_summary``; the README "Reliability" figures).

The Cython kernels are fuzzed directly in ``test_kernel_fuzz.py``, the ``on_error``
policies in ``test_on_error.py``; crash inputs found by the atheris targets in ``fuzz/``
are replayed by ``test_fuzz_regressions.py``.
"""

from __future__ import annotations

import faulthandler
import json
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
from conftest import DATA, FUZZ_INPUTS, FUZZ_SCALE, count_inputs, cpu_seconds, write_stt1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bindf
from bindf._kernels import _fields
from bindf._source import Source
from bindf.errors import BindfError, CorruptDataError, TruncatedFileWarning
from bindf.registry import open_reader

#: No read of a small damaged file may take longer than this (a loop that stops making
#: progress would); generous, because CI machines are shared.
READ_SECONDS = 2.0
#: A read still running after this long is stuck (probably in C, where no Python-level
#: timeout can interrupt it): faulthandler prints every thread's stack and exits.
WATCHDOG_SECONDS = 60.0
#: The issue's target for one CI run of this file (README "Reliability").
CI_TARGET_INPUTS = 20_000

APX_SAMPLE = DATA / "20250723_092534_data.apx"
IT02_SAMPLE = DATA / "intensity-tracing-export-data-example.bin"


# -- the subjects ------------------------------------------------------------------------


@dataclass
class Subject:
    """A valid small file of one format and how to read it."""

    name: str
    #: Format family, for the per-format counts.
    family: str
    make: Callable[[], bytes]
    #: ``format=`` for bindf.read (None: detect).
    format: str | None
    options: dict[str, Any] = field(default_factory=dict)
    #: Byte offset where the records start (cuts before it damage the header).
    data_offset: Callable[[bytes], int] = lambda data: 0
    #: The file starts with ``magic | u32 length | header``: every cut from byte 10 to
    #: ``data_offset`` must be an error.
    preamble: bool = True
    #: Also read every truncation with format and layout detection; from this offset on
    #: the result must still be a prefix of the full read. (IT02 decides dense vs sparse
    #: from the first records: a file cut inside them may be "cannot tell", an error, or
    #: even a clean file of the other layout: 20 bytes of sparse data are one valid dense
    #: record of three channels.)
    detect_from: Callable[[bytes], int] | None = None
    #: A valid row needs at least this many bytes of file: no input of ``n`` bytes may
    #: give more than ``n // bytes_per_row`` rows (counts are capped by the file size).
    bytes_per_row: int = 1
    #: Random byte-flip inputs per CI run (times BINDF_FUZZ_SCALE).
    flips: int = 600
    #: An empty file is a valid file of zero records (no magic, no header).
    empty_is_valid: bool = False
    #: A file of just the header is incomplete, not empty (FCS1: the data block is
    #: missing): a truncation warning and no rows.
    header_only_is_truncated: bool = False


def _preamble(magic: bytes, header: bytes) -> bytes:
    return magic + struct.pack("<I", len(header)) + header


def _preamble_end(data: bytes) -> int:
    return 8 + struct.unpack_from("<I", data, 4)[0]


def _apx_data_offset(data: bytes) -> int:
    return 10 + struct.unpack_from("<I", data, 6)[0]


def _apx_real_bytes(sample: Path = APX_SAMPLE, readouts: int = 40) -> bytes:
    """The real run's header and its first 40 readouts."""
    data = sample.read_bytes()
    pos = _apx_data_offset(data)
    for _ in range(readouts):
        pos += 19 + struct.unpack_from("<I", data, pos + 15)[0]
    return data[:pos]


def _apx3_real_bytes() -> bytes:
    """The real AstroPix 3 run (readout_uid 3000): its header and first 30 readouts."""
    return _apx_real_bytes(APX_SAMPLE.parent / "vinj0_th1030_20250729-185248.apx", 30)


def _apx_written_bytes() -> bytes:
    """30 readouts of 1–3 hits written by bindf.write_apx, idle gaps of 0–2 bytes."""
    rng = np.random.default_rng(8)
    per_readout = rng.integers(1, 4, 30)
    n = int(per_readout.sum())
    hits = {
        "readout_id": np.repeat(np.arange(30, dtype=np.uint32) * 3, per_readout),
        "timestamp": np.repeat(1_750_000_000_000_000_000 + np.arange(30, dtype=np.uint64),
                               per_readout),
        "chip_id": rng.integers(0, 4, n), "row": rng.integers(0, 32, n),
        "column": rng.integers(0, 32, n), "ts_neg1": rng.integers(0, 2, n),
        "ts_coarse1": rng.integers(0, 1 << 14, n), "ts_fine1": rng.integers(0, 8, n),
        "ts_tdc1": rng.integers(0, 32, n), "ts_neg2": rng.integers(0, 2, n),
        "ts_coarse2": rng.integers(0, 1 << 14, n), "ts_fine2": rng.integers(0, 8, n),
        "ts_tdc2": rng.integers(0, 32, n),
    }
    return _written(lambda p: bindf.write_apx(p, hits, {"run": "fuzz"},
                                              idle_between=rng.integers(0, 3, n)))


def _it02_dense_bytes() -> bytes:
    """The real dense export cut to its first 100 records."""
    data = IT02_SAMPLE.read_bytes()
    return data[: _preamble_end(data) + 100 * (8 + 4 * 3)]


def _it02_sparse_bytes() -> bytes:
    """120 one-ms bins of 3 channels, a third of the counts zero (so masks vary and some
    all-zero bins are left out), written sparse by bindf.write_it02 (with end marker)."""
    rng = np.random.default_rng(2)
    n = 120
    counts = {f"ch{c + 1}": np.where(rng.random(n) < 0.35, 0, rng.integers(1, 5000, n))
              for c in (1, 3, 4)}
    frame = {"time_ns": (np.arange(n) + 1) * 1e6, **counts}
    header = {"channels": [1, 3, 4], "bin_width_micros": 1000, "laser_period_ns": 25.0}
    return _written(lambda p: bindf.write_it02(p, frame, header, layout="sparse"))


def _written(write: Callable[[Path], None]) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "written.bin"
        write(path)
        return path.read_bytes()


def _stt1_bytes() -> bytes:
    return _written(lambda p: write_stt1(p, n=120, seed=3))


def _legacy_bytes() -> bytes:
    data = _stt1_bytes()
    return data[_preamble_end(data):]


def _sp01_bytes() -> bytes:
    counts = np.arange(2 * 256, dtype="<u4").reshape(2, 256)
    records = b"".join(struct.pack("<d", t) + c.tobytes() for t, c in zip((1e8, 2e8), counts))
    return _preamble(b"SP01", b'{"channels":[1],"laser_period_ns":25.0}') + records


def _spf1_bytes() -> bytes:
    rec = np.zeros(24, dtype=[("t", "<u8"), ("c", "<u4"), ("h", "<u4"), ("g", "<f8"), ("s", "<f8")])
    rec["t"] = np.arange(24) // 4 * 100_000_000
    rec["c"] = [1, 1, 3, 3] * 6
    rec["h"] = [1, 2] * 12
    rec["g"] = np.linspace(-1, 1, 24)
    rec["s"] = np.linspace(0, 1, 24)
    return _preamble(b"SPF1", b'{"channels":[1,3],"harmonics":2}') + rec.tobytes()


def _apx_log_bytes() -> bytes:
    from test_apx_log import METADATA, _apx_readouts

    readouts = _apx_readouts(APX_SAMPLE)[:25]
    lines = "".join(f"{rid}\t b'{payload.hex()}'\n" for rid, payload in readouts)
    return (METADATA + lines).encode()


def _apx_log_data_offset(data: bytes) -> int:
    from test_apx_log import METADATA

    return len(METADATA)


def _it02_after_records(k: int) -> Callable[[bytes], int]:
    """Offset after the first ``k`` records of an IT02 file (dense or sparse, 3 channels)."""
    def offset(data: bytes) -> int:
        pos = _preamble_end(data)
        for _ in range(k):
            mask = data[pos + 8] if pos + 8 < len(data) else 0
            dense = mask > 7  # the real dense sample: the first count byte is no mask
            pos += 8 + 4 * 3 if dense else 9 + 4 * bin(mask).count("1")
        return pos
    return offset


def _itt1_bytes() -> bytes:
    """100 events (photons on 4 channels and the three markers) by bindf.write_itt1."""
    rng = np.random.default_rng(13)
    events = {"event": rng.choice(np.array([0, 1, 2, 3, 70, 76, 80], np.uint8), 100),
              "time_ns": np.cumsum(rng.random(100) * 100)}
    return _written(lambda p: bindf.write_itt1(p, events, {"channels": [0, 1, 2, 3]}))


def _it01_bytes() -> bytes:
    """The real IT01 export cut to its first 60 records."""
    data = (DATA / "it01_intensity-tracing-first1000.bin").read_bytes()
    return data[: _preamble_end(data) + 60 * 40]


def _fcs1_bytes() -> bytes:
    from bindf.formats.fcs1 import sample

    return sample()


SUBJECTS: list[Subject] = [
    Subject("apx-real", "apx", _apx_real_bytes, "apx", data_offset=_apx_data_offset,
            bytes_per_row=8),
    # Small reads (chunk_bytes) and no worker thread: the buffer refill/growth path.
    Subject("apx-written", "apx", _apx_written_bytes, "apx",
            {"chunk_bytes": 64, "threads": False}, data_offset=_apx_data_offset,
            bytes_per_row=8),
    Subject("apx-readouts", "apx", _apx_written_bytes, "apx", {"level": "readouts"},
            data_offset=_apx_data_offset, bytes_per_row=19, flips=400),
    # AstroPix 3 (readout_uid 3000): same container, 5-byte hits; with and without
    # stitching (the carried bytes are the state that differs).
    Subject("apx3-real", "apx", _apx3_real_bytes, "apx", data_offset=_apx_data_offset,
            bytes_per_row=5),
    Subject("apx3-stitch", "apx", _apx3_real_bytes, "apx",
            {"stitch": True, "chunk_bytes": 64, "threads": False},
            data_offset=_apx_data_offset, bytes_per_row=5, flips=400),
    Subject("apx-log", "apx_log", _apx_log_bytes, "apx_log", data_offset=_apx_log_data_offset,
            preamble=False, bytes_per_row=16),
    Subject("it02-dense", "it02", _it02_dense_bytes, "it02", {"layout": "dense"},
            # 12: a damaged header may enable fewer channels (8 + 4·N bytes per record)
            data_offset=_preamble_end, detect_from=_it02_after_records(3), bytes_per_row=12),
    Subject("it02-sparse", "it02", _it02_sparse_bytes, "it02", {"layout": "sparse"},
            data_offset=_preamble_end, detect_from=_it02_after_records(3), bytes_per_row=9),
    Subject("stt1", "spectro", _stt1_bytes, "spectro", data_offset=_preamble_end,
            bytes_per_row=17),
    Subject("legacy-spectro", "spectro", _legacy_bytes, "spectro", {"container": "legacy"},
            preamble=False, bytes_per_row=17),
    Subject("sp01", "sp01", _sp01_bytes, "sp01", data_offset=_preamble_end, bytes_per_row=4),
    Subject("spf1", "spf1", _spf1_bytes, "spf1", data_offset=_preamble_end, bytes_per_row=32),
    Subject("itt1", "itt1", _itt1_bytes, "itt1", data_offset=_preamble_end, bytes_per_row=9),
    Subject("it01-real", "it01", _it01_bytes, "it01", data_offset=_preamble_end,
            bytes_per_row=40),
    Subject("it01-slots", "it01", _it01_bytes, "it01", {"slots": True},
            data_offset=_preamble_end, bytes_per_row=40, flips=200),
    # JSON curves: every row is one G value, at least two bytes of text ("0,"). Either
    # length running past the end is a file still being written: every cut after the
    # magic is a truncation, the metadata's too.
    Subject("fcs1", "fcs1", _fcs1_bytes, "fcs1", data_offset=lambda data: 4, preamble=False,
            bytes_per_row=2, header_only_is_truncated=True),
]



def _registry_subjects() -> list[Subject]:
    """A subject for every registered format that has no hand-written one above
    (plugins, formats registered at run time): its spec's sample file. A format without
    a sample is a failure, so no registered format escapes the sweep."""
    covered = {s.family for s in SUBJECTS}
    out = []
    for spec in bindf.list_formats():
        if not spec.public or spec.name in covered:
            continue
        layout = getattr(spec, "layout", None)
        sample = spec.sample_bytes()
        # No magic and no header at all (data from byte 0, like an A-STEP stream): an
        # empty file is an empty stream, zero rows when the format is forced.
        headerless = (layout.header is None if layout is not None
                      else sample is not None and _sample_data_offset(spec.name)(sample) == 0)
        out.append(Subject(
            f"{spec.name}-sample", spec.name, spec.sample_bytes, spec.name,
            data_offset=_sample_data_offset(spec.name),
            preamble=layout is not None and layout.header == "json",
            empty_is_valid=not spec.magics and headerless,
            flips=200))
    return out


def _sample_data_offset(name: str) -> Callable[[bytes], int]:
    def offset(data: bytes) -> int:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(data)
            f.flush()
            return int(open_reader(Source(f.name), name).data_offset)
    return offset


SUBJECTS += _registry_subjects()

_BYTES: dict[str, bytes] = {}


def subject_bytes(subject: Subject) -> bytes:
    if subject.name not in _BYTES:
        _BYTES[subject.name] = subject.make()
    return _BYTES[subject.name]


# -- reading one input ---------------------------------------------------------------------


def timed_read(path: Path, limit: float = READ_SECONDS, **kwargs: Any) -> Any:
    """``bindf.read(path, output="arrow")`` (or the ``output`` given), bounded in time
    (``limit`` seconds: see READ_SECONDS)."""
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    t0 = time.perf_counter()
    try:
        return bindf.read(path, **{"output": "arrow", **kwargs})
    finally:
        elapsed = time.perf_counter() - t0
        faulthandler.cancel_dump_traceback_later()
        assert elapsed < limit, f"reading {path.stat().st_size} bytes took {elapsed:.1f} s"


def read_outcome(path: Path, subject: Subject, full: pa.Table | None,
                 detect: bool = False) -> str:
    """Read ``path`` and check that the outcome is one of the three allowed ones.

    ``full`` (the undamaged read) turns on the prefix check; ``detect`` reads without
    ``format=`` and options, so format and layout detection see the damage too.
    """
    kwargs = {} if detect else {"format": subject.format, **subject.options}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = timed_read(path, **kwargs)
        except BindfError as exc:
            assert exc.offset is not None, f"error without an offset: {exc!r}"
            assert exc.path == str(path), f"error names {exc.path!r}"
            return "error"
    others = [w for w in caught if not issubclass(w.category, bindf.BindfWarning)]
    assert not others, [str(w.message) for w in others]
    assert all(w.message.offset is not None for w in caught), [str(w.message) for w in caught]
    if not detect:
        size = path.stat().st_size
        assert table.num_rows <= size // subject.bytes_per_row, (
            f"{table.num_rows} rows from {size} bytes")
    if full is not None:
        got = table.replace_schema_metadata(None)
        assert got.num_rows <= full.num_rows
        assert got.equals(full.slice(0, got.num_rows)), "damaged read is not a prefix"
    truncated = any(issubclass(w.category, TruncatedFileWarning) for w in caught)
    return "truncated" if truncated else "ok"


def _full_read(path: Path, subject: Subject) -> pa.Table:
    table = bindf.read(path, format=subject.format, output="arrow", **subject.options)
    return table.replace_schema_metadata(None)


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_truncation_at_every_offset(subject: Subject, tmp_path: Path) -> None:
    data = subject_bytes(subject)
    original = tmp_path / "original.bin"
    original.write_bytes(data)
    full = _full_read(original, subject)
    assert full.num_rows > 0
    path = tmp_path / "cut.bin"
    outcomes: dict[str, int] = {}
    start = subject.data_offset(data)
    detect_from = subject.detect_from(data) if subject.detect_from else None
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        outcome = read_outcome(path, subject, full)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if cut >= start and outcome == "error":
            pytest.fail(f"cut at {cut} (inside the records) raised instead of warning")
        if subject.preamble and 10 <= cut < start:
            assert outcome == "error", f"cut at {cut} (inside the header) did not raise"
        if detect_from is not None:
            detected = read_outcome(path, subject, full if cut >= detect_from else None,
                                    detect=True)
            assert cut < detect_from or detected == outcome, (cut, detected, outcome)
    count_inputs(subject.family, len(data))
    assert outcomes.get("truncated", 0) > 0


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_random_byte_flips(subject: Subject, tmp_path: Path) -> None:
    data = subject_bytes(subject)
    rng = np.random.default_rng(1234)
    path = tmp_path / "flipped.bin"
    outcomes: dict[str, int] = {}
    n = max(1, int(subject.flips * FUZZ_SCALE))
    for i in range(n):
        damaged = bytearray(data)
        # Mostly inside the records; every fourth input anywhere, header included.
        lo = 0 if i % 4 == 0 else subject.data_offset(data)
        for pos in rng.integers(lo, len(data), rng.integers(1, 9)):
            damaged[pos] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        outcome = read_outcome(path, subject, None)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if i % 3 == 0:  # format (and IT02 layout) detection must be just as robust
            read_outcome(path, subject, None, detect=True)
    count_inputs(subject.family, n)
    assert outcomes.get("ok", 0) > 0


# -- absurd declared lengths -----------------------------------------------------------------


def _cheap_rejection(path: Path, expect: type[Warning] | type[BindfError]) -> None:
    """Read ``path`` (expecting an error or a warning): under 50 ms, under 1 MiB peak."""

    def attempt() -> None:
        if issubclass(expect, Warning):
            with pytest.warns(expect) as caught:
                table = bindf.read(path, output="arrow")
            assert table.num_rows == 0 and caught[0].message.offset is not None
        else:
            with pytest.raises(expect) as info:
                bindf.read(path, output="arrow")
            assert info.value.offset is not None

    attempt()  # warm-up: the first use imports the format's module
    allocated_before = pa.total_allocated_bytes()
    tracemalloc.start()
    with cpu_seconds() as elapsed:
        attempt()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed() < 0.05, f"{elapsed() * 1e3:.1f} ms"
    assert peak < 1 << 20, f"peak {peak} bytes"
    assert pa.total_allocated_bytes() - allocated_before < 1 << 20


#: The largest value a u32 length field can declare short of 2**32, and others.
DECLARED = [2**32 - 16, 2**32 - 1, 2**31, 10**9]


@pytest.mark.parametrize("magic", [b"STT1", b"IT02", b"SP01", b"SPF1", b"%APXDF", b"ITT1",
                                   b"IT01", b"FCS1"])
@pytest.mark.parametrize("declared", DECLARED)
def test_absurd_header_length_is_rejected_cheaply(magic: bytes, declared: int,
                                                  tmp_path: Path) -> None:
    """A header length far past the end: a HeaderError, or for FCS1 (whose writer
    writes the file in pieces once the curves are computed) a truncation warning."""
    path = tmp_path / "bomb.bin"
    data = magic + struct.pack("<I", declared) + b"{"
    path.write_bytes(data + b" " * (40 - len(data)))  # 40 bytes
    _cheap_rejection(path, TruncatedFileWarning if magic == b"FCS1" else BindfError)
    count_inputs("bombs")


@pytest.mark.parametrize("declared", DECLARED)
def test_absurd_apx_payload_length_is_a_cheap_truncation(declared: int, tmp_path: Path) -> None:
    """A readout declaring L = 2**32 - 16 payload bytes in a file of a few dozen bytes."""
    header = b'{"readout_uid":4000}'
    readout = b"\xfe\xdc\xba" + struct.pack("<IQI", 1, 2, declared) + b"\xbc" * 8
    path = tmp_path / "bomb.apx"
    path.write_bytes(b"%APXDF" + struct.pack("<I", len(header)) + header + readout)
    _cheap_rejection(path, TruncatedFileWarning)
    count_inputs("bombs")


def test_a_header_that_widens_the_records_is_read_in_bounded_time(tmp_path: Path) -> None:
    """A header value that sets the record width (the docs' own ``cols`` example) with
    one bit flipped asks for tens of thousands of columns and holds no whole record: the
    pandas conversion was quadratic in columns (12,000 columns: ~9 s, 20,000: 26 s). Now
    the read gives the empty frame of that layout, with the truncation warning, in time
    linear in its columns (12,000: ~0.7 s on the machine that measured those; the bound
    leaves room for slower ones)."""
    cols = 12_000
    path = tmp_path / "wide.bin"
    path.write_bytes(np.array([cols], "<u4").tobytes() + bytes(3000))
    with pytest.warns(TruncatedFileWarning, match="incomplete 96000-byte record"):
        frame = timed_read(path, limit=5.0, format="records", header=[("cols", "<u4")],
                           dtype=lambda h: np.dtype(("<f8", (h["cols"],))), output="pandas")
    assert frame.shape == (0, cols) and list(frame.columns[:2]) == ["value_0", "value_1"]


def test_every_apx_length_field_set_absurd(tmp_path: Path) -> None:
    """Each readout's L of the real slice in turn set to 2**32 - 16: damage at that
    readout when whole readouts follow it (raised; skipped with every other readout
    intact under on_error="skip"), a truncation warning with the readouts before it
    intact for the last readout, and no allocation beyond the file size."""
    data = subject_bytes(SUBJECTS[0])
    original = _write(tmp_path / "full.apx", data)
    full = _full_read(original, SUBJECTS[0])
    n_hits = bindf.read_apx(original, level="readouts")["n_hits"].to_numpy()
    hits_before = np.concatenate([[0], np.cumsum(n_hits)]).astype(int)
    pos = _apx_data_offset(data)
    path = tmp_path / "bomb.apx"
    tracemalloc.start()
    k = 0
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos + 15)[0]
        damaged = bytearray(data)
        damaged[pos + 15 : pos + 19] = struct.pack("<I", 2**32 - 16)
        path.write_bytes(bytes(damaged))
        tracemalloc.reset_peak()
        if pos + 19 + length < len(data):  # readouts follow: its length field is damaged
            with pytest.raises(CorruptDataError, match="damaged length field") as raised:
                timed_read(path)
            assert raised.value.offset == pos
            table = timed_read(path, on_error="skip")
            kept = pa.concat_tables([full.slice(0, hits_before[k]),
                                     full.slice(hits_before[k + 1])])
        else:
            with pytest.warns(TruncatedFileWarning) as caught:
                table = timed_read(path)
            assert caught[0].message.offset == pos
            kept = full.slice(0, hits_before[k])
        assert table.replace_schema_metadata(None).equals(kept)
        assert tracemalloc.get_traced_memory()[1] < (1 << 20) + 4 * len(data)
        pos += 19 + length
        k += 1
    tracemalloc.stop()
    count_inputs("apx", k)


_APX_HEAD = _preamble(b"%APXDF", b'{"readout_uid":4000}')[:6] + _preamble(
    b"", b'{"readout_uid":4000}')
_MIB = 1 << 20


def _sparse_preamble(header: bytes) -> bytes:
    return _preamble(b"IT02", header)


WORST_CASES = [
    # a bad marker, then a marker at every 19th byte whose payload cannot fit: the
    # resynchronisation tries each (55k candidates) and moves on by one byte each time
    ("apx-resync-markers", _APX_HEAD + b"?" + (b"\xfe\xdc\xba" + b"\xff" * 16) * (_MIB // 19),
     {"format": "apx", "on_error": "skip"}, 0),
    # 55k readouts of empty payloads: every one framed, every one a decoder failure
    ("apx-empty-readouts", _APX_HEAD + (b"\xfe\xdc\xba" + bytes(16)) * (_MIB // 19),
     {"format": "apx", "level": "readouts"}, _MIB // 19),
    ("apx-partial-markers", _APX_HEAD + b"\xfe\xdc" * (_MIB // 2),
     {"format": "apx", "on_error": "skip"}, 0),
    # one readout of a million start bytes: 131071 hits (the last 8 bytes are "extra")
    ("apx-log-one-long-line", b"1\t b'" + b"e0" * _MIB + b"'\n", {"format": "apx_log"},
     _MIB // 8 - 1),
    ("apx-log-junk-lines", b"junk\n" * (_MIB // 5), {"format": "apx_log", "on_error": "skip"},
     0),
    ("it02-sparse-minimal-records", _sparse_preamble(b'{"channels":[1]}') + bytes(9) * (_MIB // 9),
     {"format": "it02", "layout": "sparse"}, _MIB // 9 - 1),  # the last is the end marker
    # fill_gaps: 2**51 empty bins between two records (documented: the output follows the
    # times, not the file size); n_rows bounds it
    ("it02-fill-gaps-huge-gap",
     _sparse_preamble(b'{"channels":[1],"bin_width_micros":0.001}')
     + struct.pack("<dBI", 1.0, 1, 1) + struct.pack("<dBI", 2.0**51, 1, 2),
     {"format": "it02", "layout": "sparse", "fill_gaps": True, "n_rows": 10**6}, 10**6),
]


@pytest.mark.parametrize("name, data, options, rows", WORST_CASES,
                         ids=[case[0] for case in WORST_CASES])
def test_worst_case_inputs_finish_quickly(name: str, data: bytes, options: dict[str, Any],
                                          rows: int, tmp_path: Path) -> None:
    """Every step of every reader moves the read position forward (by a byte at least,
    usually by a record), so a megabyte of the most unhelpful bytes takes well under the
    READ_SECONDS bound."""
    path = _write(tmp_path / ("input.log" if "log" in name else "input.bin"), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bindf.BindfWarning)
        table = timed_read(path, **options)
    assert table.num_rows == rows
    count_inputs(options["format"])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_zero_length_and_header_only(subject: Subject, tmp_path: Path) -> None:
    data = subject_bytes(subject)
    path = _write(tmp_path / "x.bin", b"")
    with pytest.raises(BindfError) as info:
        bindf.read(path)  # detection: empty file
    assert info.value.offset == 0
    try:  # a legacy spectroscopy file or a text log may be empty: zero records
        empty = bindf.read(path, format=subject.format, output="arrow", **subject.options)
    except BindfError as exc:
        assert exc.offset == 0
    else:
        # without container=, "spectro" reads a file lacking the STT1 magic as legacy
        assert empty.num_rows == 0 and (subject.family in ("spectro", "apx_log")
                                        or subject.empty_is_valid)
    header_only = data[: subject.data_offset(data)]
    if header_only:
        path.write_bytes(header_only)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = bindf.read(path, format=subject.format, output="arrow", **subject.options)
        expected = [TruncatedFileWarning] if subject.header_only_is_truncated else []
        assert [w.category for w in caught] == expected
        assert table.num_rows == 0
        full = _full_read(_write(tmp_path / "full.bin", data), subject)
        assert table.schema.names == full.schema.names
    count_inputs(subject.family, 2)


# -- random bytes into every reader (hypothesis; HYPOTHESIS_PROFILE=nightly for 10k) -----


_PREFIXES = {
    "apx": [b"", b"%APXDF", b'%APXDF\x14\x00\x00\x00{"readout_uid":4000}',
            b'%APXDF\x14\x00\x00\x00{"readout_uid":4000}\xfe\xdc\xba'],
    "apx_log": [b"", b"1\t b'", b"Namespace(a=1)\n0\t b'e0"],
    "it02": [b"IT02", b'IT02\x10\x00\x00\x00{"channels":[1]}',
             b'IT02\x12\x00\x00\x00{"channels":[0,2]}'],
    "spectro": [b"", b"STT1", b'STT1\x02\x00\x00\x00{}'],
    "sp01": [b"SP01", b'SP01\x10\x00\x00\x00{"channels":[1]}'],
    "spf1": [b"SPF1", b'SPF1\x10\x00\x00\x00{"channels":[1]}'],
}


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(_PREFIXES)), prefix=st.integers(0, 3),
       body=st.binary(max_size=400), detect=st.booleans())
def test_random_bytes_into_every_reader(random_dir: Path, fmt: str, prefix: int, body: bytes,
                                        detect: bool) -> None:
    options = _PREFIXES[fmt]
    path = _write(random_dir / f"random.{'log' if fmt == 'apx_log' else 'bin'}",
                  options[prefix % len(options)] + body)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            timed_read(path, **({} if detect else {"format": fmt}))
        except BindfError as exc:
            assert exc.offset is not None and exc.path == str(path), repr(exc)
    assert all(issubclass(w.category, bindf.BindfWarning) for w in caught), caught
    count_inputs(fmt)


# -- files that change while they are read ---------------------------------------------------


_CONCURRENT_TRUNCATION = r"""
import json, os, sys, threading, time, warnings
import bindf
from bindf.errors import BindfError, BindfWarning
path, options = sys.argv[1], json.loads(sys.argv[2])
full = bindf.read(path, output="arrow", **options).replace_schema_metadata(None)
outcomes = []
def read():
    for _ in range(20):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                table = bindf.read(path, output="arrow", batch_size=4096, **options)
            assert all(issubclass(w.category, BindfWarning) for w in caught), caught
            got = table.replace_schema_metadata(None)
            assert got.equals(full.slice(0, got.num_rows)), "not a prefix"
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


def _big_apx(path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300_000
    fields = ["chip_id", "row", "column", "ts_neg1", "ts_coarse1", "ts_fine1", "ts_tdc1",
              "ts_neg2", "ts_coarse2", "ts_fine2", "ts_tdc2"]
    hits = {name: rng.integers(0, 2, n) for name in fields}
    hits["readout_id"] = np.arange(n, dtype=np.uint32) // 2
    hits["timestamp"] = hits["readout_id"].astype(np.uint64)
    bindf.write_apx(path, hits)


def _big_it02(layout: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        rng = np.random.default_rng(1)
        n = 400_000
        frame = {"time_ns": (np.arange(n) + 1) * 1e6,
                 **{f"ch{c}": rng.integers(0, 3, n) for c in (2, 4)}}
        bindf.write_it02(path, frame, {"channels": [1, 3], "bin_width_micros": 1000},
                         layout=layout)
    return write


def _big_apx_log(path: Path) -> None:
    from test_apx_log import METADATA, _apx_readouts

    lines = "".join(f"{rid}\t b'{payload.hex()}'\n" for rid, payload in _apx_readouts(APX_SAMPLE))
    path.write_text(METADATA + lines * 200)


@pytest.mark.parametrize("make, options", [
    (lambda p: write_stt1(p, n=400_000), {}),
    (_big_apx_log, {"format": "apx_log"}),
    (_big_apx, {}),
    (_big_apx, {"level": "readouts", "threads": False}),
    (_big_it02("dense"), {}),
    (_big_it02("sparse"), {}),
], ids=["stt1", "apx-log", "apx", "apx-readouts", "it02-dense", "it02-sparse"])
def test_file_truncated_while_read_never_crashes(make: Callable[[Path], Any],
                                                 options: dict[str, Any],
                                                 tmp_path: Path) -> None:
    # A mmap of a file that shrinks raises SIGBUS and kills the interpreter; bindf reads
    # with readinto, so the worst case is a truncation warning (with a prefix of the
    # records) or a bindf error. Run in a subprocess so that a crash fails this test
    # instead of the whole suite.
    path = tmp_path / "shrinking.bin"
    make(path)
    result = subprocess.run(
        [sys.executable, "-c", _CONCURRENT_TRUNCATION, str(path), json.dumps(options)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "20"


def test_bytes_cut_off_during_a_read_are_not_returned(tmp_path: Path) -> None:
    """Linux can hand a read that races with a truncation zeros for the range being cut
    (see ``bindf._source.still_in_file``); found by the concurrent test above (sparse
    IT02 rows of zeros). Here the race is staged: the file is cut right after the bytes
    were copied, and only the bytes it still holds count."""
    import io
    import os

    from bindf._source import read_into

    path = _write(tmp_path / "race.bin", bytes(range(1, 101)))

    class CutAfterRead(io.FileIO):
        def readinto(self, buffer):  # noqa: ANN001
            n = super().readinto(buffer)
            os.truncate(path, 40)
            return n

    with CutAfterRead(path, "rb") as f:
        f.seek(10)
        buffer = np.zeros(80, np.uint8)
        assert read_into(f, buffer) == 30
    with open(path, "rb") as f:  # an ordinary read is unaffected
        assert read_into(f, np.zeros(50, np.uint8)) == 40


def test_small_file_read_whole_keeps_only_the_bytes_it_still_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race for a small file read whole through its descriptor
    (``Source.held``), with short reads on the way: the bytes cut off during the read
    are dropped, and the bytes before them are all kept. (The Python read, used where
    there is no POSIX ``open``; the compiled one: the next test.)"""
    import os

    from bindf import _source

    path = _write(tmp_path / "race.bin", bytes(range(1, 101)))
    original = os.read

    def trickle_then_cut(fd: int, n: int) -> bytes:
        data = original(fd, min(n, 7))
        if os.lseek(fd, 0, os.SEEK_CUR) >= 70:  # cut the file under the reader
            os.truncate(path, 40)
        return data

    monkeypatch.setattr(os, "read", trickle_then_cut)
    assert _source._whole_local_file_in_python(str(path), 100) == bytes(range(1, 41))
    monkeypatch.setattr(os, "read", lambda fd, n: original(fd, min(n, 7)))
    assert _source._whole_local_file_in_python(str(path), 100) == bytes(range(1, 41))  # now short


@pytest.mark.skipif(not _fields.HAVE_PREAD, reason="no POSIX open on this platform")
def test_small_file_read_whole_by_one_compiled_call(tmp_path: Path) -> None:
    """``read_local_file`` (``Source.held`` on POSIX systems) gives what the Python read
    gives: the first ``size`` bytes, fewer where the file ends or where its size after
    the read ends (a ``/proc`` file reports 0 bytes and reads some: they are not
    kept), and the errors ``open()`` raises, with the path."""
    from bindf import _source

    data = np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    path = _write(tmp_path / "whole.bin", data)
    for size in (0, 1, 4999, 5000, 6000):
        got = _fields.read_local_file(str(path), size)
        assert got == data[:size] == _source._whole_local_file_in_python(str(path), size)
    if Path("/proc/self/status").exists():
        assert _fields.read_local_file("/proc/self/status", 100) == b""
        assert _source._whole_local_file_in_python("/proc/self/status", 100) == b""
    missing = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError) as caught:
        _fields.read_local_file(str(missing), 10)
    assert caught.value.filename == str(missing)
    with pytest.raises(IsADirectoryError):
        _fields.read_local_file(str(tmp_path), 10)
    with pytest.raises(ValueError, match="null"):
        _fields.read_local_file(str(path) + "\0x", 10)
    with pytest.raises(ValueError, match="negative"):
        _fields.read_local_file(str(path), -1)


@pytest.mark.parametrize("subject", SUBJECTS, ids=lambda s: s.name)
def test_file_shrinking_after_open(subject: Subject, tmp_path: Path) -> None:
    """The reader measured the size when it opened the file; then the file is cut in
    the middle of its records (a DAQ crashed, a copy was interrupted). The read that
    follows must end with a truncation warning and a prefix of the records, never loop
    waiting for bytes that will not come."""
    from bindf._source import Source
    from bindf.registry import open_reader

    data = subject_bytes(subject)
    path = _write(tmp_path / "shrinks.bin", data)
    full = _full_read(path, subject)
    cuts = np.linspace(subject.data_offset(data) + 1, len(data) - 1, 12).astype(int)
    for cut in cuts:
        path.write_bytes(data)
        reader = open_reader(Source(str(path)), subject.format, **subject.options)
        with open(path, "r+b") as f:
            f.truncate(cut)
        faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                batches = list(reader.iter_batches())
        except BindfError as exc:
            assert exc.offset is not None
            continue
        finally:
            faulthandler.cancel_dump_traceback_later()
        got = pa.Table.from_batches(batches, schema=full.schema)
        assert got.equals(full.slice(0, got.num_rows)), f"cut at {cut}: not a prefix"
        lost = got.num_rows < full.num_rows  # (a cut inside an IT02 end marker loses none)
        assert not lost or any(issubclass(w.category, TruncatedFileWarning) for w in caught), cut
    count_inputs(subject.family, len(cuts))


def test_ci_run_reaches_the_input_target(request: pytest.FixtureRequest) -> None:
    """When the whole file ran, it fed at least CI_TARGET_INPUTS malformed inputs."""
    sweeps = [item for item in request.session.items
              if item.module is request.module and item.name.startswith(
                  ("test_truncation_at_every_offset", "test_random_byte_flips"))]
    if len(sweeps) < 2 * len(SUBJECTS) or request.session.testsfailed:
        pytest.skip("only part of the robustness sweep ran")
    assert sum(FUZZ_INPUTS.values()) >= CI_TARGET_INPUTS, FUZZ_INPUTS
