"""The Cython kernels, fuzzed directly: random bytes and adversarial arguments.

The kernels are compiled without Cython's bounds checks and check every access by hand,
so they must stay memory safe whatever they are given, not only what the readers give
them. Each call here gets random bytes (biased towards the bytes that steer the state
machines: readout markers, start bytes, idle, padding, sparse masks) and arguments a
reader would never pass: positions past the end or negative (down to -2**63 and up to
2**63 - 1), empty arrays, per-readout or output arrays of mismatched lengths, slots out
of range, non-finite bin widths. Allowed outcomes:

* a result whose invariants hold (counts within the output capacity, positions within
  the buffer, records that really are where the result says);
* ``ValueError`` for arguments the docstring says are refused (and, at call time,
  ``TypeError``/``OverflowError`` from Cython's argument conversion: see
  :func:`test_argument_conversion_errors`).

Memory safety is checked three ways: input bytes sit flush against ``PROT_NONE`` guard
pages (one byte read outside the buffer faults: "electric fence"), output arrays are
views with canary bytes on both sides that must survive every call, and CI reruns this
file against kernels built with ``boundscheck=True`` (``.ci/run``); ``fuzz/run_all.sh``
runs the same kernels under AddressSanitizer with atheris.

Call counts go to ``conftest.KERNEL_CALLS`` (README "Reliability"); ``BINDF_FUZZ_SCALE``
multiplies them for long local runs.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import pytest
from conftest import FUZZ_SCALE, count_kernel_calls

from bindf._kernels import _apx, _apx3, _astep, _fields, _it02, _jsonparse
from bindf._kernels import apx3_reference as apx3_ref
from bindf._kernels import apx_reference as apx_ref
from bindf._kernels import astep_reference as astep_ref
from bindf._kernels import jsonparse_reference as jsonparse_ref

MARKER = b"\xfe\xdc\xba"
EXTREMES = (-(2**63), -(2**31), -1, 2**31, 2**63 - 1)
CANARY = 0xA5
GUARD = 64  # canary elements on each side of an output array


def runs(n: int) -> int:
    return max(1, int(n * FUZZ_SCALE))


# -- guard pages and canaries ----------------------------------------------------------------


class GuardedPages:
    """One read/write page between two ``PROT_NONE`` pages.

    :meth:`place` copies bytes flush against the right guard (or the left one): a kernel
    that reads one byte past the end (or before the start) of its buffer faults at once,
    instead of silently reading a neighbour's memory.
    """

    def __init__(self) -> None:
        self.page = mmap.PAGESIZE
        self.map = mmap.mmap(-1, 3 * self.page)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for offset in (0, 2 * self.page):
            if libc.mprotect(address + offset, self.page, 0) != 0:  # PROT_NONE
                raise OSError(ctypes.get_errno(), "mprotect failed")

    def place(self, data: bytes | np.ndarray, right: bool = True) -> np.ndarray:
        raw = bytes(data)
        assert len(raw) <= self.page
        offset = 2 * self.page - len(raw) if right else self.page
        self.map[offset : offset + len(raw)] = raw
        return np.frombuffer(self.map, dtype=np.uint8, count=len(raw), offset=offset)


@pytest.fixture(scope="module")
def guarded() -> GuardedPages:
    if not sys.platform.startswith("linux"):
        pytest.skip("guard pages use mprotect (Linux)")
    return GuardedPages()


class Canaried:
    """Output arrays that are views into larger arrays filled with canary bytes."""

    def __init__(self) -> None:
        self.bases: list[tuple[np.ndarray, int, int]] = []

    def array(self, n: int, dtype: type, columns: int | None = None) -> np.ndarray:
        shape = (n + 2 * GUARD,) if columns is None else (n + 2 * GUARD, columns)
        base = np.empty(shape, dtype=dtype)
        base.view(np.uint8)[...] = CANARY
        self.bases.append((base, GUARD, GUARD + n))
        return base[GUARD : GUARD + n]

    def check(self) -> None:
        for base, lo, hi in self.bases:
            flat = base.reshape(-1).view(np.uint8)
            row = base.nbytes // base.shape[0]
            assert (flat[: lo * row] == CANARY).all(), "write before an output array"
            assert (flat[hi * row :] == CANARY).all(), "write past an output array"


def steering_bytes(rng: np.random.Generator, n: int, alphabet: bytes) -> bytes:
    """Random bytes, half of them drawn from ``alphabet`` (the bytes the kernel tests)."""
    data = rng.integers(0, 256, n, dtype=np.uint8)
    pick = rng.random(n) < 0.5
    symbols = np.frombuffer(alphabet, np.uint8)
    data[pick] = symbols[rng.integers(0, len(symbols), int(pick.sum()))]
    return data.tobytes()


def position(rng: np.random.Generator, size: int) -> int:
    """A position: usually inside ``[0, size]``, sometimes just outside, sometimes absurd."""
    r = rng.random()
    if r < 0.75:
        return int(rng.integers(0, size + 1))
    if r < 0.9:
        return int(rng.integers(-3, size + 4))
    return int(rng.choice(EXTREMES))


# -- A-STEP frame-stream kernel -------------------------------------------------------------

#: Length bytes of short and long frames, filler, impossible lengths, payload-carrying headers.
ASTEP_ALPHABET = bytes([0x04, 0x07, 0x0A, 0x0D, 0x11, 0x12, 0xFF, 0x00, 0x1C, 0x07, 0x3F])


def test_parse_frames(guarded: GuardedPages) -> None:
    rng = np.random.default_rng(131)
    n_runs = runs(12_000)
    seen_codes: set[int] = set()
    for i in range(n_runs):
        raw = steering_bytes(rng, int(rng.integers(0, 120)), ASTEP_ALPHABET)
        buf = guarded.place(raw, right=i % 5 != 0)
        pos, end = position(rng, len(raw)), position(rng, len(raw))
        if rng.random() < 0.5:
            pos, end = 0, len(raw)
        caps = rng.integers(0, 6, 6) if rng.random() < 0.3 else [int(rng.integers(0, 6))] * 6
        out = Canaried()
        arrays = [out.array(int(caps[0]), np.int64), out.array(int(caps[1]), np.uint8),
                  out.array(int(caps[2]), np.uint8), out.array(int(caps[3]), np.uint64),
                  out.array(int(caps[4]), np.uint64)]
        gaps = [out.array(int(caps[5]), np.int64), out.array(int(caps[5]), np.int64)]
        ts_bytes = int(rng.choice([0, 0, 2, 4, 6, 8]))
        state = _astep.new_state()
        base = int(rng.choice([0, 0, 1000, 2**62]))
        n, n_gaps, stop, code = _astep.parse_frames(buf, pos, end, base, ts_bytes, state,
                                                    *arrays, *gaps)
        out.check()
        seen_codes.add(code)
        assert code in (_astep.PARSE_END, _astep.PARSE_FULL, _astep.PARSE_INCOMPLETE)
        assert 0 <= n <= min(caps[:5]) and 0 <= n_gaps <= caps[5]
        assert max(pos, 0) <= stop or n == n_gaps == 0
        if pos == 0 and end == len(raw) and code != _astep.PARSE_FULL:
            expected = astep_ref.parse_stream(raw, ts_bytes or None)
            assert [base + f.offset for f in expected.frames] == arrays[0][:n].tolist()
            assert expected.filler_bytes == state[_astep.STATE_FILLER_BYTES]
            assert expected.resync_bytes == state[_astep.STATE_RESYNC_BYTES]
            assert (expected.truncated_at is not None) == (code == _astep.PARSE_INCOMPLETE)
    count_kernel_calls("astep.parse_frames", n_runs)
    assert seen_codes == {0, 1, 2}


# -- AstroPix kernels ------------------------------------------------------------------------

APX_ALPHABET = bytes([0xFE, 0xDC, 0xBA, 0xBC, 0xFF, 0xE0, 0xE3, 0xF1, 0x00])


def apx_frames(rng: np.random.Generator) -> bytes:
    """Readout-like bytes: runs of framed readouts (some lengths absurd) and noise."""
    parts = []
    for _ in range(rng.integers(0, 6)):
        kind = rng.random()
        if kind < 0.6:
            payload = steering_bytes(rng, int(rng.integers(0, 40)), APX_ALPHABET)
            length = len(payload) if rng.random() < 0.8 else int(
                rng.choice([0, 1, 2**31, 2**32 - 16, 2**32 - 1, len(payload) + 1]))
            parts.append(MARKER + rng.bytes(12) + length.to_bytes(4, "little") + payload)
        elif kind < 0.8:
            parts.append(MARKER[: rng.integers(1, 4)])
        else:
            parts.append(steering_bytes(rng, int(rng.integers(0, 30)), APX_ALPHABET))
    return b"".join(parts)


def test_frame_readouts(guarded: GuardedPages) -> None:
    rng = np.random.default_rng(101)
    n_runs = runs(12_000)
    seen_codes: set[int] = set()
    for i in range(n_runs):
        raw = apx_frames(rng)
        buf = guarded.place(raw, right=i % 5 != 0)
        pos, end = position(rng, len(raw)), position(rng, len(raw))
        if rng.random() < 0.5:
            end = len(raw)
        caps = rng.integers(0, 8, 4) if rng.random() < 0.3 else [int(rng.integers(0, 8))] * 4
        out = Canaried()
        header_pos = out.array(int(caps[0]), np.int64)
        readout_id = out.array(int(caps[1]), np.uint32)
        timestamp = out.array(int(caps[2]), np.uint64)
        length = out.array(int(caps[3]), np.uint32)
        n, stop, code = _apx.frame_readouts(buf, pos, end, header_pos, readout_id, timestamp,
                                            length)
        out.check()
        seen_codes.add(code)
        limit = min(max(end, 0), len(raw))
        assert code in (_apx.FRAME_END, _apx.FRAME_FULL, _apx.FRAME_INCOMPLETE,
                        _apx.FRAME_BAD_MARKER)
        assert 0 <= n <= min(caps)
        expect = max(pos, 0)
        for k in range(n):  # each framed readout is where the result says, inside [pos, end)
            assert header_pos[k] == expect
            assert raw[expect : expect + 3] == MARKER
            assert int.from_bytes(raw[expect + 15 : expect + 19], "little") == length[k]
            expect += 19 + int(length[k])
            assert expect <= limit
        assert stop == expect
        if 0 <= pos <= len(raw) and end == len(raw) and code != _apx.FRAME_FULL:
            readouts, ref_stop, why = apx_ref.split_readouts(raw, pos)
            assert (n, stop) == (len(readouts), ref_stop)
            assert code == {"end": _apx.FRAME_END, "truncated": _apx.FRAME_INCOMPLETE,
                            "bad_marker": _apx.FRAME_BAD_MARKER}[why]
    count_kernel_calls("apx.frame_readouts", n_runs)
    assert seen_codes == {0, 1, 2, 3}


def test_find_marker(guarded: GuardedPages) -> None:
    rng = np.random.default_rng(102)
    n_runs = runs(12_000)
    for i in range(n_runs):
        raw = steering_bytes(rng, int(rng.integers(0, 64)), MARKER + MARKER + b"\xfe\xdc")
        buf = guarded.place(raw, right=i % 2 == 0)
        start, end = position(rng, len(raw)), position(rng, len(raw))
        found = _apx.find_marker(buf, start, end)
        s, e = max(start, 0), min(max(end, 0), len(raw))
        assert found == (raw[:e].find(MARKER, s) if s <= e else -1), (raw, start, end)
    count_kernel_calls("apx.find_marker", n_runs)


def _decode_hits_args(rng: np.random.Generator, guarded: GuardedPages, i: int):
    raw = steering_bytes(rng, int(rng.integers(0, 120)), APX_ALPHABET)
    buf = guarded.place(raw, right=i % 4 != 0)
    n = int(rng.integers(0, 6))
    # Payloads: consecutive slices of the buffer, or random (possibly outside) ones.
    if rng.random() < 0.7 and n:
        cuts = np.sort(rng.integers(0, len(raw) + 1, n + 1))
        pos, lens = cuts[:-1], np.diff(cuts)
    else:
        pos = np.array([position(rng, len(raw)) for _ in range(n)], dtype=np.int64)
        lens = rng.integers(0, len(raw) + 3, n)
        lens[rng.random(n) < 0.1] = 2**32 - 1
    mismatch = rng.random() < 0.1
    per_readout = [n - (mismatch and rng.random() < 0.5 and n > 0) for _ in range(5)]
    out = Canaried()
    payload_pos = out.array(n, np.int64)
    payload_pos[:] = pos
    payload_len = out.array(per_readout[0], np.uint32)
    payload_len[:] = lens[: per_readout[0]]
    readout_id = out.array(per_readout[1], np.uint32)
    readout_id[:] = np.arange(per_readout[1])
    timestamp = out.array(per_readout[2], np.uint64)
    timestamp[:] = 7
    carry = out.array(8 if rng.random() < 0.9 else int(rng.integers(0, 8)), np.uint8)
    carry[:] = rng.choice(np.frombuffer(APX_ALPHABET, np.uint8), len(carry))
    carry_len = int(rng.integers(-3, 9)) if rng.random() < 0.9 else int(
        rng.choice([9, 100, *EXTREMES]))
    fitting = np.minimum(lens, len(raw))  # absurd lengths are refused before any output
    capacity = int(fitting.sum() // 8 + n) if rng.random() < 0.7 else int(rng.integers(0, 4))
    width = 8 if rng.random() < 0.95 else int(rng.choice([0, 7, 9]))
    hits = out.array(capacity, np.uint8, columns=width)
    hit_order = out.array(capacity, np.uint8)
    hit_readout_id = out.array(capacity, np.uint32)
    hit_timestamp = out.array(capacity, np.uint64)
    status = out.array(per_readout[3], np.uint8)
    n_hits = out.array(per_readout[4], np.uint32)
    store = bool(rng.random() < 0.8)
    args = (buf, payload_pos, payload_len, readout_id, timestamp, carry, carry_len, hits,
            hit_order, hit_readout_id, hit_timestamp, status, n_hits, store)
    return raw, args, out


def test_decode_hits(guarded: GuardedPages) -> None:
    rng = np.random.default_rng(103)
    n_runs = runs(12_000)
    outcomes = {"ok": 0, "ValueError": 0, "parity": 0}
    for i in range(n_runs):
        raw, args, out = _decode_hits_args(rng, guarded, i)
        (buf, payload_pos, payload_len, _, _, carry, carry_len, hits, *_,
         status, n_hits, store) = args
        carry_in = carry.copy()
        try:
            total, carried = _apx.decode_hits(*args)
        except ValueError:
            outcomes["ValueError"] += 1
            out.check()
            continue
        out.check()
        outcomes["ok"] += 1
        n = len(payload_pos)
        assert -1 <= carried <= 8
        assert int(n_hits[:n].sum()) == total
        if store:
            assert total <= len(hits)
        # Parity with the pure-Python model (it takes the payloads as bytes).
        if i % 4 == 0 and len(carry) == 8:
            payloads = [raw[p : p + length] for p, length in zip(payload_pos, payload_len)]
            extra = None if carry_len < 0 else bytes(carry_in[:carry_len])
            results, ref_extra = apx_ref.decode_payloads(payloads, extra)
            assert n_hits[:n].tolist() == [len(r.hits) for r in results]
            assert status[:n].tolist() == [r.status for r in results]
            assert (None if carried < 0 else bytes(carry[:carried])) == ref_extra
            if store:
                assert [bytes(h) for h in hits[:total]] == [h for r in results for h in r.hits]
            outcomes["parity"] += 1
    count_kernel_calls("apx.decode_hits", n_runs)
    assert min(outcomes.values()) > n_runs // 50, outcomes


def _mostly_clean_payload(rng: np.random.Generator) -> bytes:
    """A readout payload as a healthy run writes it (idle bytes, hits that begin with a
    start byte, idle bytes), or, one time in three, with one of the things that make
    ``decode_hits`` leave its fast path for clean readouts at that point: padding at
    either end, a hit flush with the end (carried on), a run of eight idle bytes or more,
    a byte after a hit that is not a start byte, orphans, a readout too short to hold a
    hit, or more hits than the decoding order counts (255)."""
    n_hits = int(rng.integers(1, 6)) if rng.random() > 0.01 else int(rng.integers(250, 300))
    # the hits' bytes drawn at once (a start byte, then 7 steering bytes each)
    bodies = steering_bytes(rng, 7 * n_hits, APX_ALPHABET)
    starts = rng.integers(0xE0, 0xFF, n_hits).tolist()
    idle_after = rng.integers(0, 3, n_hits)
    idle_after[-1] = rng.integers(1, 3)  # the last hit is not flush with the end
    parts = [b"\xbc" * int(rng.integers(0, 4))]
    for k in range(n_hits):
        parts.append(bytes([starts[k]]) + bodies[7 * k:7 * k + 7])
        parts.append(b"\xbc" * int(idle_after[k]))
    payload = b"".join(parts)
    if rng.random() < 1 / 3:
        damage = int(rng.integers(0, 8))
        if damage == 0:
            payload += b"\xff" * int(rng.integers(1, 4))
        elif damage == 1:
            payload = b"\xff" * int(rng.integers(1, 3)) + payload
        elif damage == 2:
            payload = payload.rstrip(b"\xbc")
        elif damage == 3:
            cut = int(rng.integers(0, len(payload)))
            payload = payload[:cut] + b"\xbc" * int(rng.integers(8, 20)) + payload[cut:]
        elif damage == 4:
            cut = int(rng.integers(0, len(payload)))
            payload = payload[:cut] + bytes([int(rng.integers(0, 0xE0))]) + payload[cut:]
        elif damage == 5:
            payload = steering_bytes(rng, int(rng.integers(1, 8)), APX_ALPHABET) + payload
        elif damage == 6:
            payload = payload[: int(rng.integers(0, 10))]
        else:
            payload = steering_bytes(rng, len(payload), APX_ALPHABET)
    return payload


def test_decode_hits_on_mostly_clean_runs(guarded: GuardedPages) -> None:
    """decode_hits' fast path for clean readouts (``decode_clean``) against the model:
    runs of healthy readouts with damage at random places, across its windows of 64
    readouts, with the last payload flush against the guard page (the buffer ends within
    a word of it), output capacities that are exact or short, and any carried bytes."""
    rng = np.random.default_rng(211)
    n_runs = runs(1_000)
    outcomes = {"ok": 0, "ValueError": 0}
    for i in range(n_runs):
        payloads: list[bytes] = []
        size = 0
        for _ in range(int(rng.integers(1, 200))):
            payload = _mostly_clean_payload(rng)
            if size + len(payload) + 2 > guarded.page:
                break
            payloads.append(payload)
            size += len(payload) + 2
        gaps = [bytes(steering_bytes(rng, 2, APX_ALPHABET)) for _ in payloads]
        raw = b"".join(gap + payload for gap, payload in zip(gaps, payloads))
        buf = guarded.place(raw, right=i % 3 != 0)
        lens = np.array([len(p) for p in payloads], np.uint32)
        pos = np.cumsum([len(g) + len(p) for g, p in zip(gaps, payloads)]) - lens
        n = len(payloads)
        out = Canaried()
        payload_pos = out.array(n, np.int64)
        payload_pos[:] = pos
        payload_len = out.array(n, np.uint32)
        payload_len[:] = lens
        readout_id = out.array(n, np.uint32)
        readout_id[:] = rng.integers(0, 2**32, n, dtype=np.uint32)
        timestamp = out.array(n, np.uint64)
        timestamp[:] = rng.integers(0, 2**63, n, dtype=np.uint64)
        carry = out.array(8, np.uint8)
        carry[:] = [int(rng.integers(0xE0, 0xFF))] + list(steering_bytes(rng, 7, APX_ALPHABET))
        carry_len = int(rng.integers(-1, 9))
        carry_in = carry.copy()
        bound = int(lens.sum() // 8 + n)
        capacity = bound if rng.random() < 0.8 else int(rng.integers(0, bound + 1))
        hits = out.array(capacity, np.uint8, columns=8)
        hit_order = out.array(capacity, np.uint8)
        hit_readout_id = out.array(capacity, np.uint32)
        hit_timestamp = out.array(capacity, np.uint64)
        status = out.array(n, np.uint8)
        n_hits = out.array(n, np.uint32)
        results, ref_extra = apx_ref.decode_payloads(
            payloads, None if carry_len < 0 else bytes(carry_in[:carry_len]))
        expected = [h for r in results for h in r.hits]
        try:
            total, carried = _apx.decode_hits(
                buf, payload_pos, payload_len, readout_id, timestamp, carry, carry_len, hits,
                hit_order, hit_readout_id, hit_timestamp, status, n_hits, True)
        except ValueError as exc:
            assert "too small" in str(exc) and len(expected) > capacity
            outcomes["ValueError"] += 1
            out.check()
            continue
        out.check()
        outcomes["ok"] += 1
        assert [bytes(h) for h in hits[:total]] == expected
        assert n_hits.tolist() == [len(r.hits) for r in results]
        assert status.tolist() == [r.status for r in results]
        assert (None if carried < 0 else bytes(carry[:carried])) == ref_extra
        owner = np.repeat(np.arange(n), n_hits)
        assert np.array_equal(hit_readout_id[:total], readout_id[owner])
        assert np.array_equal(hit_timestamp[:total], timestamp[owner])
        order = np.concatenate([np.arange(k) for k in n_hits.tolist()] or [[]])
        assert np.array_equal(hit_order[:total], np.minimum(order, 255))
    count_kernel_calls("apx.decode_hits (mostly clean runs)", n_runs)
    assert min(outcomes.values()) > n_runs // 50, outcomes


def _readouts(rng: np.random.Generator, payloads: list[bytes]) -> bytes:
    """Framed readouts of ``payloads``, with random ids and timestamps."""
    return b"".join(
        MARKER + rng.bytes(12) + len(payload).to_bytes(4, "little") + payload
        for payload in payloads)


def test_intact_run_decoder() -> None:
    """IntactRunDecoder (a small run in one call) against frame_readouts + decode_hits
    on the same bytes: runs of mostly clean readouts (damage inside payloads, which it
    decodes as they do), a stand-in header before them, sometimes cut or followed by
    noise (then it must refuse, as framing would not reach the end), one decoder reused
    for runs of any size (its scratch grows), and starts outside the bytes."""
    from bindf.formats.apx import PACKED_HIT

    rng = np.random.default_rng(311)
    decoder = _apx.IntactRunDecoder()
    n_runs = runs(3_000)
    outcomes = {"intact": 0, "refused": 0, "parity": 0}
    for i in range(n_runs):
        n = int(rng.integers(0, 8)) if rng.random() < 0.8 else int(rng.integers(8, 400))
        body = _readouts(rng, [_mostly_clean_payload(rng) for _ in range(n)])
        kind = rng.random()
        if kind < 0.15 and body:
            body = body[: int(rng.integers(0, len(body)))]
        elif kind < 0.25:
            body += steering_bytes(rng, int(rng.integers(1, 30)), APX_ALPHABET + MARKER)
        prefix = rng.bytes(int(rng.integers(0, 40)))
        data = prefix + body
        start = len(prefix) if rng.random() < 0.95 else position(rng, len(data))
        packed = decoder.decode(data, start)
        if not 0 <= start <= len(data):
            assert packed is None
            outcomes["refused"] += 1
            continue
        buf = np.frombuffer(data, dtype=np.uint8)
        cap = len(body) // 19 + 1
        header_pos, length = np.empty(cap, np.int64), np.empty(cap, np.uint32)
        readout_id, timestamp = np.empty(cap, np.uint32), np.empty(cap, np.uint64)
        framed, stop, code = _apx.frame_readouts(buf, start, len(data), header_pos,
                                                 readout_id, timestamp, length)
        if code != _apx.FRAME_END or stop != len(data):
            assert packed is None, (code, stop, len(data))
            outcomes["refused"] += 1
            continue
        assert packed is not None
        outcomes["intact"] += 1
        bound = len(body) // 8 + framed
        hits = np.empty((bound, 8), np.uint8)
        order, hit_id = np.empty(bound, np.uint8), np.empty(bound, np.uint32)
        hit_ts = np.empty(bound, np.uint64)
        total, _ = _apx.decode_hits(
            buf, header_pos[:framed] + 19, length[:framed], readout_id[:framed],
            timestamp[:framed], np.zeros(8, np.uint8), -1, hits, order, hit_id, hit_ts,
            np.empty(framed, np.uint8), np.empty(framed, np.uint32), True)
        records = np.frombuffer(packed, dtype=PACKED_HIT)
        assert len(packed) == total * _apx.PACKED_HIT_SIZE
        assert np.array_equal(records["hit"], hits[:total])
        assert np.array_equal(records["order"], order[:total])
        assert np.array_equal(records["readout_id"], hit_id[:total])
        assert np.array_equal(records["timestamp"], hit_ts[:total])
        if i % 4 == 0:  # and with the pure-Python model
            payloads = [data[p + 19 : p + 19 + k] for p, k in zip(header_pos[:framed],
                                                                   length[:framed])]
            results, _ = apx_ref.decode_payloads(payloads, None)
            assert [bytes(h) for h in records["hit"]] == [h for r in results for h in r.hits]
            outcomes["parity"] += 1
    count_kernel_calls("apx.IntactRunDecoder.decode", n_runs)
    assert min(outcomes.values()) > n_runs // 50, outcomes


APX3_ALPHABET = bytes([0xBC, 0xFF, 0x20, 0x23, 0x3F, 0x40, 0x1F, 0x00])


def _apx3_decode_hits_args(rng: np.random.Generator, guarded: GuardedPages, i: int):
    """Arguments of ``_apx3.decode_hits``: AstroPix 3 steering bytes, the rest as above."""
    raw = steering_bytes(rng, int(rng.integers(0, 120)), APX3_ALPHABET)
    buf = guarded.place(raw, right=i % 4 != 0)
    n = int(rng.integers(0, 6))
    if rng.random() < 0.7 and n:
        cuts = np.sort(rng.integers(0, len(raw) + 1, n + 1))
        pos, lens = cuts[:-1], np.diff(cuts)
    else:
        pos = np.array([position(rng, len(raw)) for _ in range(n)], dtype=np.int64)
        lens = rng.integers(0, len(raw) + 3, n)
        lens[rng.random(n) < 0.1] = 2**32 - 1
    mismatch = rng.random() < 0.1
    per_readout = [n - (mismatch and rng.random() < 0.5 and n > 0) for _ in range(5)]
    out = Canaried()
    payload_pos = out.array(n, np.int64)
    payload_pos[:] = pos
    payload_len = out.array(per_readout[0], np.uint32)
    payload_len[:] = lens[: per_readout[0]]
    readout_id = out.array(per_readout[1], np.uint32)
    readout_id[:] = np.arange(per_readout[1])
    timestamp = out.array(per_readout[2], np.uint64)
    timestamp[:] = 7
    carry = out.array(5 if rng.random() < 0.9 else int(rng.integers(0, 5)), np.uint8)
    carry[:] = rng.choice(np.frombuffer(APX3_ALPHABET, np.uint8), len(carry))
    carry_len = int(rng.integers(-3, 6)) if rng.random() < 0.9 else int(
        rng.choice([6, 100, *EXTREMES]))
    stitch = bool(rng.random() < 0.7)
    fitting = np.minimum(lens, len(raw))
    capacity = int(fitting.sum() // 5 + n) if rng.random() < 0.7 else int(rng.integers(0, 4))
    width = 5 if rng.random() < 0.95 else int(rng.choice([0, 4, 8]))
    hits = out.array(capacity, np.uint8, columns=width)
    hit_order = out.array(capacity, np.uint16)
    hit_readout_id = out.array(capacity, np.uint32)
    hit_timestamp = out.array(capacity, np.uint64)
    status = out.array(per_readout[3], np.uint8)
    n_hits = out.array(per_readout[4], np.uint32)
    store = bool(rng.random() < 0.8)
    args = (buf, payload_pos, payload_len, readout_id, timestamp, carry, carry_len, stitch,
            hits, hit_order, hit_readout_id, hit_timestamp, status, n_hits, store)
    return raw, args, out


def test_apx3_decode_hits(guarded: GuardedPages) -> None:
    rng = np.random.default_rng(303)
    n_runs = runs(12_000)
    outcomes = {"ok": 0, "ValueError": 0, "parity": 0}
    for i in range(n_runs):
        raw, args, out = _apx3_decode_hits_args(rng, guarded, i)
        (buf, payload_pos, payload_len, _, _, carry, carry_len, stitch, hits, *_,
         status, n_hits, store) = args
        carry_in = carry.copy()
        try:
            total, carried = _apx3.decode_hits(*args)
        except ValueError:
            outcomes["ValueError"] += 1
            out.check()
            continue
        out.check()
        outcomes["ok"] += 1
        n = len(payload_pos)
        assert -1 <= carried <= 5 and (stitch or carried == -1)
        assert int(n_hits[:n].sum()) == total
        if store:
            assert total <= len(hits)
        if i % 4 == 0 and len(carry) == 5:  # parity with the pure-Python model
            payloads = [raw[p : p + length] for p, length in zip(payload_pos, payload_len)]
            extra = None if carry_len < 0 else bytes(carry_in[:carry_len])
            results, ref_extra = apx3_ref.decode_payloads(payloads, extra, stitch=stitch)
            assert n_hits[:n].tolist() == [len(r.hits) for r in results]
            assert status[:n].tolist() == [r.status for r in results]
            assert (None if carried < 0 else bytes(carry[:carried])) == ref_extra
            if store:
                assert [bytes(h) for h in hits[:total]] == [h for r in results for h in r.hits]
            outcomes["parity"] += 1
    count_kernel_calls("apx3.decode_hits", n_runs)
    assert min(outcomes.values()) > n_runs // 50, outcomes


# -- hit field kernels (AstroPix 4 and 3) -----------------------------------------------------


@pytest.mark.parametrize("kernel, hit_size, word_columns", [
    ("apx", 8, "bindf.formats._apx_hits:WORD_COLUMNS"),
    ("apx3", 5, "bindf.formats._apx3_hits:Apx3HitColumns.word_columns"),
])
def test_hit_fields(guarded: GuardedPages, kernel: str, hit_size: int,
                    word_columns: str) -> None:
    """Raw hits flush against a guard page, outputs between canaries: every output either
    refused (shorter than the hits: ValueError) or written exactly on its n values."""
    import importlib

    module_name, _, attr = word_columns.partition(":")
    dtypes = importlib.import_module(module_name)
    for part in attr.split("."):
        dtypes = getattr(dtypes, part)
    function = {"apx": _apx.hit_fields, "apx3": _apx3.hit_fields}[kernel]
    # AstroPix 4 has one compiled loop per instruction set, and "words": each this CPU
    # runs, in turn
    isas = _apx.HIT_FIELDS_ISAS if kernel == "apx" else (None,)
    rng = np.random.default_rng(606)
    n_runs = runs(3_000)
    outcomes = {"ok": 0, "ValueError": 0}
    for run in range(n_runs):
        n = int(rng.integers(0, (guarded.page // hit_size) + 1))
        hits = guarded.place(rng.bytes(n * hit_size)).reshape(n, hit_size)
        out = Canaried()
        columns = {}
        for name, dtype in dtypes.items():
            r = rng.random()
            if r < 0.3:
                continue  # not wanted
            size = n if r < 0.95 else int(rng.integers(0, n + 1))
            columns[name] = out.array(size, dtype)
        isa = isas[run % len(isas)]
        try:
            function(hits, **columns, **({"isa": isa} if isa else {}))
        except ValueError:
            outcomes["ValueError"] += 1
            assert any(len(c) < n for c in columns.values())
        else:
            outcomes["ok"] += 1
        out.check()
    count_kernel_calls(f"{kernel}.hit_fields", n_runs)
    assert min(outcomes.values()) > n_runs // 100, outcomes


def guarded_sensor_words(guarded: GuardedPages, rng: np.random.Generator) -> np.ndarray:
    """A random number (up to a page's worth) of random A-STEP sensor words, flush
    against the guard page."""
    n = int(rng.integers(0, (guarded.page // 8) + 1))
    return guarded.place(rng.bytes(n * 8)).view(np.uint64)


def test_astep_v3_fields(guarded: GuardedPages) -> None:
    """Sensor words and lengths flush against a guard page, outputs between canaries:
    every output either refused (too short: ValueError) or written exactly on its n
    values (the bitmap on its (n + 7) // 8 bytes)."""
    from bindf.formats.astep import _V3_KERNEL_COLUMNS

    dtypes = _V3_KERNEL_COLUMNS
    rng = np.random.default_rng(607)
    n_runs = runs(3_000)
    outcomes = {"ok": 0, "ValueError": 0}
    for _ in range(n_runs):
        sensor = guarded_sensor_words(guarded, rng)
        n = len(sensor)
        short = rng.random() < 0.05
        length = np.frombuffer(rng.bytes(n - 1 if short and n else n), np.uint8)
        out = Canaried()
        columns = {}
        for name, dtype in {**dtypes, "valid": np.uint8}.items():
            r = rng.random()
            if r < 0.3:
                continue  # not wanted
            need = (n + 7) // 8 if name == "valid" else n
            size = need if r < 0.95 else int(rng.integers(0, need + 1))
            columns[name] = out.array(size, dtype)
        try:
            _astep.v3_fields(sensor, length, float(rng.choice([10.0, 25.0])), **columns)
        except ValueError:
            outcomes["ValueError"] += 1
            assert len(length) < n or any(
                len(c) < ((n + 7) // 8 if name == "valid" else n) for name, c in columns.items())
        else:
            outcomes["ok"] += 1
        out.check()
    count_kernel_calls("astep.v3_fields", n_runs)
    assert min(outcomes.values()) > n_runs // 100, outcomes


def test_astep_sensor_views(guarded: GuardedPages) -> None:
    """Sensor words flush against a guard page, the views between canaries: refused when
    shorter than 16 bytes per word, else written on exactly those bytes, as the
    reference lays them out."""
    rng = np.random.default_rng(608)
    n_runs = runs(3_000)
    outcomes = {"ok": 0, "ValueError": 0}
    for _ in range(n_runs):
        sensor = guarded_sensor_words(guarded, rng)
        n = len(sensor)
        size = 16 * n if rng.random() < 0.9 else int(rng.integers(0, 16 * n + 1))
        out = Canaried()
        views = out.array(size, np.uint8)
        try:
            _astep.sensor_views(sensor, views)
        except ValueError:
            outcomes["ValueError"] += 1
            assert size < 16 * n
        else:
            outcomes["ok"] += 1
            if n and rng.random() < 0.05:
                assert views[: 16 * n].tobytes() == astep_ref.sensor_views(sensor.tolist())
        out.check()
    count_kernel_calls("astep.sensor_views", n_runs)
    assert min(outcomes.values()) > n_runs // 100, outcomes


# -- IT02 kernels ------------------------------------------------------------------------


def sparse_chain(rng: np.random.Generator, n_channels: int) -> bytes:
    """A sparse record chain (masks mostly valid), possibly damaged and cut, or noise."""
    if rng.random() < 0.2:
        return rng.bytes(int(rng.integers(0, 200)))
    parts = []
    for _ in range(rng.integers(0, 20)):
        mask = int(rng.integers(0, 1 << min(max(n_channels, 0), 8))) if rng.random() < 0.95 \
            else int(rng.integers(0, 256))
        time = rng.choice([rng.random() * 1e9, np.nan, np.inf, -1.0])
        parts.append(np.float64(time).tobytes() + bytes([mask])
                     + rng.bytes(4 * bin(mask).count("1")))
    data = bytearray(b"".join(parts))
    if data and rng.random() < 0.3:
        data[rng.integers(0, len(data))] = rng.integers(0, 256)
    return bytes(data[: rng.integers(0, len(data) + 1)])


def _channels(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 9)) if rng.random() < 0.9 else int(
        rng.choice([-1, 9, 64, -(2**31), 2**31 - 1]))


def _check_scan(raw: bytes, pos: int, n_channels: int, max_rows: int,
                result: tuple[int, int, int]) -> None:
    rows, stop, status = result
    assert status in (_it02.STATUS_END, _it02.STATUS_LIMIT, _it02.STATUS_BAD_MASK)
    assert 0 <= rows <= max_rows and pos + 9 * rows <= stop <= len(raw)
    if status == _it02.STATUS_BAD_MASK:
        assert raw[stop + 8] >> n_channels
    elif status == _it02.STATUS_END:
        rest = len(raw) - stop
        assert rest < 9 or rest < 9 + 4 * bin(raw[stop + 8]).count("1")


def test_scan_sparse(guarded: GuardedPages) -> None:
    rng = np.random.default_rng(104)
    n_runs = runs(12_000)
    errors = 0
    for i in range(n_runs):
        n_channels = _channels(rng)
        raw = sparse_chain(rng, n_channels)
        buf = guarded.place(raw, right=i % 4 != 0)
        pos = position(rng, len(raw))
        max_rows = int(rng.integers(0, 30)) if rng.random() < 0.9 else int(
            rng.choice([-1, 2**63 - 1]))
        try:
            result = _it02.scan_sparse(buf, pos, n_channels, max_rows)
        except ValueError:
            assert not (0 <= pos <= len(raw) and 0 <= n_channels <= 8 and max_rows >= 0)
            errors += 1
            continue
        _check_scan(raw, pos, n_channels, max_rows, result)
    count_kernel_calls("it02.scan_sparse", n_runs)
    assert 0 < errors < n_runs


def test_decode_sparse(guarded: GuardedPages) -> None:
    rng = np.random.default_rng(105)
    n_runs = runs(12_000)
    errors = 0
    for i in range(n_runs):
        n_channels = _channels(rng)
        raw = sparse_chain(rng, n_channels)
        buf = guarded.place(raw, right=i % 4 != 0)
        pos = position(rng, len(raw))
        max_rows = int(rng.integers(0, 30)) if rng.random() < 0.95 else -1
        room = max(max_rows, 0) + (int(rng.integers(-2, 2)) if rng.random() < 0.2 else 0)
        out = Canaried()
        n_out = int(rng.integers(0, 9)) if rng.random() < 0.95 else 9
        counts = [out.array(max(room, 0), np.uint32) for _ in range(n_out)]
        time_out = out.array(max(room, 0), np.float64)
        slots = out.array(max(n_channels, 0) + int(rng.integers(-1, 2)) if 0 <= n_channels <= 8
                          else int(rng.integers(0, 9)), np.int8)
        slots[:] = rng.integers(-1, max(n_out, 1), len(slots))
        if rng.random() < 0.1 and len(slots):
            slots[rng.integers(0, len(slots))] = rng.choice([-128, -2, n_out, 127])
        want_time = bool(rng.random() < 0.7)
        try:
            result = _it02.decode_sparse(buf, pos, n_channels, max_rows, time_out, counts,
                                         slots, want_time)
        except ValueError:
            out.check()
            errors += 1
            continue
        out.check()
        assert result == _it02.scan_sparse(buf, pos, n_channels, max_rows)
        _check_scan(raw, pos, n_channels, max_rows, result)
    count_kernel_calls("it02.decode_sparse", n_runs)
    assert 0 < errors < n_runs


def test_assign_bins() -> None:
    rng = np.random.default_rng(106)
    n_runs = runs(12_000)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 2.0**53])
    errors = 0
    for _ in range(n_runs):
        n = int(rng.integers(0, 40))
        times = np.cumsum(rng.choice([0.2, 1.0, 1.0, 3.0, -2.0], n)) * 1e3
        odd = rng.random(n) < 0.1
        times[odd] = rng.choice(specials, int(odd.sum()))
        bin_ns = float(rng.choice([1e3, 1e3, 0.5, 1e-300, 0.0, -1e3, np.nan, np.inf]))
        out = Canaried()
        bins = out.array(n if rng.random() < 0.9 else int(rng.integers(0, n + 1)), np.int64)
        status = out.array(n if rng.random() < 0.9 else int(rng.integers(0, n + 1)), np.uint8)
        last_bin = int(rng.integers(-(2**52), 2**52)) if rng.random() < 0.9 else int(
            rng.choice([-(2**63), 2**63 - 1]))
        try:
            n_bad, have_last, last_t, new_last_bin = _it02.assign_bins(
                times, bin_ns, bool(rng.random() < 0.5), float(rng.choice(specials)),
                last_bin, bins, status)
        except ValueError:
            out.check()
            errors += 1
            continue
        out.check()
        ok = status[:n] == _it02.BIN_OK
        assert n_bad == n - int(ok.sum())
        assert set(status[:n].tolist()) <= {0, 1, 2, 3}
        assert (np.abs(bins[:n][ok]) <= 2**52).all()
        assert (np.diff(bins[:n][ok]) >= 1).all()
    count_kernel_calls("it02.assign_bins", n_runs)
    assert 0 < errors < n_runs


#: Pieces of JSON (and of almost-JSON) that steer the header parser into every branch:
#: escapes cut anywhere, surrogates, numbers of every shape, literals and their prefixes.
JSON_PIECES = [b"{", b"}", b"[", b"]", b",", b":", b" ", b"\n", b'"', b'"a"', b'"k": ',
               b"\\", b"\\u", b"\\ud83d", b"\\ude00", b"\\u00e9", b"\\n", b"00", b"-",
               b"1", b"1.5", b"e", b"E+", b"1e400", b"9" * 20, b"9" * 70, b"true", b"fals",
               b"null", b"NaN", b"\xc3\xa9", b"\xe2\x82", b"\xff", b"\x01"]


def _json_value(rng: np.random.Generator, depth: int = 0) -> object:
    r = rng.random()
    if depth < 4 and r < 0.25:
        return {str(rng.choice(["a", "b", "é", "\\", '"', "k:"])) + str(k): _json_value(rng, depth + 1)
                for k in range(int(rng.integers(0, 4)))}
    if depth < 4 and r < 0.4:
        return [_json_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return rng.choice([None, True, False, 0, -7, 2**64, -(10**25), 0.1, -0.0, 1e300, "",
                       "é€😀", "a\"b\\c/\n\t\x01", "\x7f"])


def _json_like(rng: np.random.Generator) -> bytes:
    """A header-like object, valid, then sometimes damaged: cut, or a piece spliced in."""
    import json

    r = rng.random()
    if r < 0.2:  # soup of pieces
        pieces = rng.integers(0, len(JSON_PIECES), int(rng.integers(0, 40)))
        return b"{" + b"".join(JSON_PIECES[k] for k in pieces)
    value = {f"k{i}": _json_value(rng) for i in range(int(rng.integers(0, 5)))}
    raw = json.dumps(value, ensure_ascii=bool(rng.random() < 0.5)).encode()
    if r < 0.6:
        return raw
    at = int(rng.integers(0, len(raw) + 1))
    if r < 0.75:
        return raw[:at]
    return raw[:at] + JSON_PIECES[int(rng.integers(0, len(JSON_PIECES)))] + raw[at:]


def test_json_parse_object(guarded: GuardedPages) -> None:
    """The compiled header parser reads nothing outside its bytes, and what it accepts
    the standard library accepts with the same value (no repeated keys, no constants)."""
    import json

    rng = np.random.default_rng(110)
    n_runs = runs(6_000)
    accepted = 0
    for i in range(n_runs):
        raw = _json_like(rng) if rng.random() < 0.9 else steering_bytes(
            rng, int(rng.integers(0, 64)), b'{}[]":,\\0123456789.eE-+ ')
        buf = guarded.place(raw, right=i % 2 == 0)
        value = _jsonparse.parse_object(buf, int(rng.integers(0, 4)) if rng.random() < 0.2 else 64)
        if value is not None:
            accepted += 1
            pairs_seen: list[list] = []
            json.loads(raw.decode("utf-8"), parse_constant=pytest.fail,
                       object_pairs_hook=pairs_seen.append)  # every object's pairs
            assert all(len(dict(p)) == len(p) for p in pairs_seen), raw  # no repeated key
            assert repr(value) == repr(json.loads(raw.decode("utf-8"))), raw
        assert _jsonparse.nesting_depth(buf) == jsonparse_ref.nesting_depth(raw)
    count_kernel_calls("jsonparse.parse_object", n_runs)
    count_kernel_calls("jsonparse.nesting_depth", n_runs)
    assert accepted > n_runs // 3  # most inputs are valid headers, or near misses


# -- fixed-record fields --------------------------------------------------------------------


def random_record_dtype(rng: np.random.Generator) -> np.dtype:
    """A packed record of 1-5 fields of the sizes the kernel treats apart (1, 2, 4, 8
    bytes) and others (3, 16 bytes, a subarray), in any order, byte order and padding."""
    kinds = ["u1", "<u2", ">i2", "<f4", ">u4", "<f8", ">i8", "S3", "V16", ("<u2", (3,))]
    fields, offset = [], 0
    for k in range(int(rng.integers(1, 6))):
        kind = kinds[int(rng.integers(0, len(kinds)))]
        dtype = np.dtype(kind)
        offset += int(rng.integers(0, 3))  # bytes no field covers
        fields.append((f"f{k}", dtype, offset))
        offset += dtype.itemsize
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields],
                     "itemsize": offset + int(rng.integers(0, 3))})


def test_copy_fields(guarded: GuardedPages) -> None:
    """Records flush against a guard page, columns between canaries and at every
    alignment, with and without streaming stores: each column holds exactly numpy's copy
    of its field, or the call is refused (ValueError) with nothing written."""
    rng = np.random.default_rng(808)
    n_runs = runs(2_000)
    outcomes = {"ok": 0, "ValueError": 0}
    for _ in range(n_runs):
        dtype = random_record_dtype(rng)
        n = int(rng.integers(0, guarded.page // dtype.itemsize + 1))
        raw = guarded.place(rng.bytes(n * dtype.itemsize))
        records = raw.view(dtype)
        wanted = [name for name in dtype.names if rng.random() < 0.8] or [dtype.names[0]]
        out = Canaried()
        columns = []
        for name in wanted:
            size = dtype[name].itemsize
            rows = n if rng.random() < 0.9 else int(rng.integers(0, n + 1))
            shift = int(rng.integers(0, 8))  # any alignment of the column's first byte
            columns.append(out.array(rows * size + shift, np.uint8)[shift:])
        offsets = np.array([dtype.fields[name][1] for name in wanted], dtype=np.int64)
        sizes = np.array([dtype[name].itemsize for name in wanted], dtype=np.int64)
        if rng.random() < 0.05:  # a field outside the record
            offsets[int(rng.integers(0, len(wanted)))] = int(rng.choice(
                [-1, dtype.itemsize, dtype.itemsize - 1 + int(rng.integers(1, 4)), 2**62]))
        before = [column.copy() for column in columns]
        stream = bool(rng.random() < 0.5)
        try:
            _fields.copy_fields(raw, n, dtype.itemsize, offsets, sizes, columns, stream)
        except ValueError:
            outcomes["ValueError"] += 1
            assert all((c == b).all() for c, b in zip(columns, before))  # nothing written
            assert (any(len(c) < n * size for c, size in zip(columns, sizes))
                    or any(o < 0 or o + s > dtype.itemsize for o, s in zip(offsets, sizes)))
        else:
            outcomes["ok"] += 1
            for name, column in zip(wanted, columns):
                expected = np.ascontiguousarray(records[name]).reshape(-1).view(np.uint8)
                assert bytes(column[: len(expected)]) == expected.tobytes()
        out.check()
    count_kernel_calls("fields.copy_fields", n_runs)
    assert min(outcomes.values()) > n_runs // 100, outcomes


@pytest.mark.skipif(not _fields.HAVE_PREAD, reason="no pread on this platform")
def test_fill_from_descriptor(tmp_path) -> None:
    """The compiled read loop of local files: records from any position of a real file
    (inside a record, at its end, past it), in chunks of any whole number of records,
    into columns between canaries at every alignment: each column holds exactly numpy's
    copy of its field for the records the file holds, the count is those records (the
    partial one at the end left out), or the call is refused (ValueError) with nothing
    written."""
    import os

    rng = np.random.default_rng(909)
    n_runs = runs(1_500)
    outcomes = {"ok": 0, "short": 0, "ValueError": 0}
    path = tmp_path / "records.bin"
    for _ in range(n_runs):
        dtype = random_record_dtype(rng)
        size = dtype.itemsize
        content = rng.bytes(int(rng.integers(0, 40 * size)))
        path.write_bytes(content)
        position = int(rng.integers(0, len(content) + 2 * size))
        n = int(rng.integers(0, 30))
        wanted = [name for name in dtype.names if rng.random() < 0.8] or [dtype.names[0]]
        out = Canaried()
        columns = []
        for name in wanted:
            rows = n if rng.random() < 0.9 else int(rng.integers(0, n + 1))
            shift = int(rng.integers(0, 8))
            columns.append(out.array(rows * dtype[name].itemsize + shift, np.uint8)[shift:])
        offsets = np.array([dtype.fields[name][1] for name in wanted], dtype=np.int64)
        sizes = np.array([dtype[name].itemsize for name in wanted], dtype=np.int64)
        if rng.random() < 0.05:  # a field outside the record
            offsets[int(rng.integers(0, len(wanted)))] = int(rng.choice([-1, size, 2**62]))
        buffer = np.empty(int(rng.integers(0, 5 * size + 1)), np.uint8)
        before = [column.copy() for column in columns]
        stream = bool(rng.random() < 0.5)
        fd = os.open(path, os.O_RDONLY)
        try:
            got = _fields.fill_from_descriptor(fd, position, n, size, buffer, offsets, sizes,
                                               columns, stream)
            assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # pread: the descriptor never moved
        except ValueError:
            outcomes["ValueError"] += 1
            assert all((c == b).all() for c, b in zip(columns, before))  # nothing written
            assert n and (len(buffer) < size
                          or any(len(c) < n * s for c, s in zip(columns, sizes))
                          or any(o < 0 or o + s > size for o, s in zip(offsets, sizes)))
        else:
            held = max(len(content) - position, 0) // size
            assert got == min(n, held)
            outcomes["short" if got < n else "ok"] += 1
            records = np.frombuffer(content[position:position + got * size], dtype)
            for name, column, before_column in zip(wanted, columns, before):
                expected = np.ascontiguousarray(records[name]).reshape(-1).view(np.uint8)
                assert bytes(column[: len(expected)]) == expected.tobytes()
                assert (column[len(expected):] == before_column[len(expected):]).all()
        finally:
            os.close(fd)
        out.check()
    count_kernel_calls("fields.fill_from_descriptor", n_runs)
    assert min(outcomes.values()) > n_runs // 100, outcomes


@pytest.mark.skipif(not _fields.HAVE_PREAD, reason="no pread on this platform")
def test_fill_from_descriptor_errors(tmp_path) -> None:
    """A failed read is the operating system's error (the descriptor is not open), and
    a negative position is refused, as a ``readinto`` would."""
    import errno
    import os

    one = np.array([0], dtype=np.int64)
    columns = [np.zeros(8, np.uint8)]
    path = tmp_path / "r.bin"
    path.write_bytes(bytes(64))
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as caught:
        _fields.fill_from_descriptor(fd, 0, 1, 8, np.zeros(64, np.uint8), one,
                                     np.array([8], np.int64), columns)
    assert caught.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        _fields.fill_from_descriptor(0, -1, 1, 8, np.zeros(64, np.uint8), one,
                                     np.array([8], np.int64), columns)
    count_kernel_calls("fields.fill_from_descriptor", 2)


def test_copy_fields_refuses_counts_that_would_overflow() -> None:
    """A huge ``n`` must not pass the size checks by wrapping around."""
    records = np.zeros(64, np.uint8)
    one = np.array([0], dtype=np.int64)
    for n, size in ((2**62, 4), (2**61 + 1, 8), (2**63 - 1, 1)):
        with pytest.raises(ValueError):
            _fields.copy_fields(records, n, size, one, np.array([size], np.int64),
                                [np.zeros(64, np.uint8)])
    with pytest.raises(ValueError):  # the field's size alone overflows offset + size
        _fields.copy_fields(records, 1, 8, np.array([4], np.int64),
                            np.array([2**63 - 2], np.int64), [np.zeros(64, np.uint8)])
    with pytest.raises(ValueError):
        _fields.copy_fields(records, 1, 0, one, one, [np.zeros(64, np.uint8)])
    with pytest.raises(ValueError):
        _fields.copy_fields(records, 1, 8, one, np.array([1, 1], np.int64),
                            [np.zeros(64, np.uint8)])
    _fields.copy_fields(None, 0, 8, one, one, [None])  # nothing to copy: nothing touched
    count_kernel_calls("fields.copy_fields", 7)


# -- argument conversion -------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: _apx.find_marker(np.zeros(4, np.uint8), 2**64, 0),
    lambda: _apx.find_marker(np.zeros(4, np.int32), 0, 4),
    lambda: _apx.find_marker(np.zeros((2, 2), np.uint8), 0, 4),
    lambda: _apx.frame_readouts(np.zeros(4, np.uint8), 0, 4, *([np.zeros(2, np.float64)] * 4)),
    lambda: _apx.decode_hits(np.zeros(8, np.uint8)[::2], *([None] * 12)),
    lambda: _it02.scan_sparse(np.zeros(9, np.uint8), 0, 2**40, 1),
    lambda: _it02.decode_sparse(np.zeros(9, np.uint8), 0, 1, 1, np.zeros(1), (np.zeros(1, np.uint32),),
                                np.zeros(1, np.int8), True),
    lambda: _it02.decode_sparse(np.zeros(9, np.uint8), 0, 1, 1, np.zeros(1), [np.zeros(1, np.int64)],
                                np.zeros(1, np.int8), True),
    lambda: _it02.assign_bins(np.zeros(2, np.float32), 1.0, False, 0.0, 0, np.zeros(2, np.int64),
                              np.zeros(2, np.uint8)),
    lambda: _fields.copy_fields(np.zeros(16, np.uint8)[::2], 1, 8, np.zeros(1, np.int64),
                                np.ones(1, np.int64), [np.zeros(8, np.uint8)]),
    lambda: _fields.copy_fields(np.zeros(16, np.uint8), 1, 8, np.zeros(1, np.int64),
                                np.ones(1, np.int64), [np.zeros(8, np.float64)]),
], ids=["pos-overflow", "buf-dtype", "buf-2d", "out-dtype", "strided", "channels-overflow",
        "counts-tuple", "counts-dtype", "times-dtype", "records-strided", "column-dtype"])
def test_argument_conversion_errors(call) -> None:  # noqa: ANN001
    """Wrong types or values beyond the C types are refused before the kernel runs."""
    with pytest.raises((TypeError, ValueError, OverflowError)):
        call()
    count_kernel_calls("argument conversion")


def test_none_and_empty_arguments() -> None:
    """Cython lets ``None`` through for memoryviews (a view of length 0): still safe."""
    empty8 = np.zeros(0, np.uint8)
    assert _apx.find_marker(None, 0, 10) == -1
    assert _apx.frame_readouts(None, 0, 10, None, None, None, None) == (0, 0, _apx.FRAME_END)
    assert _apx.frame_readouts(np.frombuffer(MARKER * 7, np.uint8), 0, 21, None, None, None,
                               None) == (0, 0, _apx.FRAME_FULL)
    assert _apx.decode_hits(empty8, *([np.zeros(0, t) for t in (np.int64, np.uint32, np.uint32,
                                                                 np.uint64)]),
                            np.zeros(8, np.uint8), -1, None, None, None, None,
                            np.zeros(0, np.uint8), np.zeros(0, np.uint32), False) == (0, -1)
    with pytest.raises(ValueError):
        _apx.decode_hits(empty8, np.zeros(1, np.int64), None, None, None, None, -1,
                         *([None] * 6))
    assert _it02.scan_sparse(None, 0, 1, 5) == (0, 0, _it02.STATUS_END)
    assert _it02.assign_bins(None, 1.0, False, 0.0, 0, None, None)[0] == 0
    with pytest.raises(ValueError):
        _it02.decode_sparse(np.zeros(30, np.uint8), 0, 1, 3, None, [], np.zeros(1, np.int8), True)
    with pytest.raises(ValueError):
        _it02.decode_sparse(np.zeros(30, np.uint8), 0, 1, 3, np.zeros(3), [None],
                            np.zeros(1, np.int8), True)
    assert _jsonparse.parse_object(None, 64) is None
    assert _jsonparse.nesting_depth(None) == 0
    count_kernel_calls("argument conversion", 11)
