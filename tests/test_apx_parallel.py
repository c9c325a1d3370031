"""Parallel AstroPix hit decoding equals the sequential kernel on every hit and status bit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bindf._kernels import _apx
from bindf.formats._apx_hits import HIT_SIZE, HitDecoder, decode_in_parallel

# The bytes that steer the hit state machine: idle, padding, start bytes of hits.
ALPHABET = np.frombuffer(bytes([0xBC, 0xFF, 0xE0, 0xE3, 0xE7, 0xF1, 0xFE, 0x00]), np.uint8)


def noisy_payloads(rng: np.random.Generator, n_readouts: int) -> tuple[np.ndarray, ...]:
    """Readout payloads back to back: mostly steering bytes, cut hits carried across
    readouts often (lengths not multiples of 8), some empty and idle-only readouts."""
    lengths = rng.choice([0, 1, 3, 5, 7, 8, 9, 11, 13, 16, 19, 24, 27, 40], n_readouts)
    total = int(lengths.sum())
    data = rng.integers(0, 256, total, dtype=np.uint8)
    pick = rng.random(total) < 0.6
    data[pick] = rng.choice(ALPHABET, int(pick.sum()))
    pos = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return (data, pos, lengths.astype(np.uint32),
            np.arange(n_readouts, dtype=np.uint32),
            np.arange(n_readouts, dtype=np.uint64) * 1000)


def sequential(buf, pos, length, rid, ts, carry, carry_len, store):
    decoder = HitDecoder(store_hits=store)
    decoder.carry[:] = carry
    decoder.carry_len = carry_len
    out = decoder.decode(buf, pos, length, rid, ts)
    copies = [a.copy() for a in (out.hits, out.hit_order, out.hit_readout_id,
                                 out.hit_timestamp, out.status, out.readout_hits)]
    return out.n_hits, copies, decoder.carry.copy(), decoder.carry_len


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("store", [True, False])
def test_parallel_decoding_equals_sequential(seed, store):
    rng = np.random.default_rng(seed)
    n_readouts = int(rng.integers(1, 400))
    buf, pos, length, rid, ts = noisy_payloads(rng, n_readouts)
    carry = rng.integers(0, 256, HIT_SIZE, dtype=np.uint8)
    carry[0] = 0xE3  # a start byte: a carried partial hit
    with ThreadPoolExecutor(4) as pool:
        for carry_len in (-1, 0, 3, 7):
            expected = sequential(buf, pos, length, rid, ts, carry, carry_len, store)
            # Every number of parts up to one readout per range: boundaries land on
            # every awkward place (inside carried hits, after empty readouts …).
            for parts in sorted({1, 2, 3, 5, 7, 16, min(n_readouts, 64), n_readouts}):
                if parts > n_readouts:
                    continue
                given = carry.copy()
                decoded, out_carry, out_len = decode_in_parallel(
                    pool, parts, buf, pos, length, rid, ts, given, carry_len, store)
                n, arrays, exp_carry, exp_len = expected
                assert decoded.n_hits == n, (parts, carry_len)
                got = [decoded.hits, decoded.hit_order, decoded.hit_readout_id,
                       decoded.hit_timestamp, decoded.status, decoded.readout_hits]
                for want, have in zip(arrays, got):
                    np.testing.assert_array_equal(have, want)
                assert out_len == exp_len
                if exp_len > 0:
                    assert bytes(out_carry[:out_len]) == bytes(exp_carry[:exp_len])


def test_carries_cross_many_boundaries():
    """Readouts of 3 bytes: every boundary holds a partial hit, so the fix-up runs at
    each one (and must walk more than one readout before the states agree)."""
    rng = np.random.default_rng(99)
    n = 300
    hits = np.full((n * 3 // 8 + 1, 8), 0xE3, dtype=np.uint8)
    hits[:, 1:] = rng.integers(0, 256, (len(hits), 7), dtype=np.uint8)
    data = hits.reshape(-1)[: n * 3].copy()
    pos = np.arange(n, dtype=np.int64) * 3
    length = np.full(n, 3, dtype=np.uint32)
    rid = np.arange(n, dtype=np.uint32)
    ts = np.arange(n, dtype=np.uint64)
    carry = np.zeros(HIT_SIZE, dtype=np.uint8)
    n_hits, arrays, _, exp_len = sequential(data, pos, length, rid, ts, carry, -1, True)
    with ThreadPoolExecutor(3) as pool:
        for parts in (2, 3, 7, 50, 300):
            decoded, _, out_len = decode_in_parallel(pool, parts, data, pos, length, rid, ts,
                                                     carry.copy(), -1, True)
            assert decoded.n_hits == n_hits and out_len == exp_len
            np.testing.assert_array_equal(decoded.hits, arrays[0])
            np.testing.assert_array_equal(decoded.status, arrays[4])
    assert _apx is not None


@pytest.mark.parametrize("kwargs", [{}, {"level": "readouts"}, {"batch_size": 50},
                                    {"n_rows": 100}, {"columns": ["tot_us", "row"]},
                                    {"chunk_bytes": 4096}])
def test_reader_with_parallel_hit_decoding(monkeypatch, kwargs):
    from pathlib import Path

    import bindf
    import bindf.formats._apx_hits as hits_module

    sample = Path(bindf.__file__).parent / "samples" / "astropix_threshold_scan.apx"
    expected = bindf.read_apx(sample, output="arrow", threads=1, **kwargs)
    monkeypatch.setattr(hits_module, "PARALLEL_MIN_READOUTS", 2)
    for threads in (2, 3, 8):
        got = bindf.read_apx(sample, output="arrow", threads=threads, **kwargs)
        assert got.equals(expected), threads
