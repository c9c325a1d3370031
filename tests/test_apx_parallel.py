"""Parallel AstroPix hit decoding equals the sequential kernel on every hit and status bit."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
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


# -- an eager read cut into byte ranges (bindf.formats._apx_parts) ---------------------

def _apx_bytes(payloads: list[bytes]) -> bytes:
    import json
    import struct

    text = json.dumps({"readout_uid": 4000}).encode()
    out = [b"%APXDF", struct.pack("<I", len(text)), text]
    for i, payload in enumerate(payloads):
        out.append(b"\xfe\xdc\xba" + struct.pack("<IQI", i, 10**18 + i, len(payload)) + payload)
    return b"".join(out)


def _noisy_run(seed: int, n_readouts: int) -> bytes:
    """Readouts whose payloads cut hits anywhere (carries at many boundaries), with
    empty and idle-only ones, and payloads that hold readout markers."""
    rng = np.random.default_rng(seed)
    buf, pos, length, _, _ = noisy_payloads(rng, n_readouts)
    payloads = [bytes(buf[p:p + n]) for p, n in zip(pos, length)]
    for k in range(0, n_readouts, 7):  # a marker (and a plausible header) inside payloads
        payloads[k] = payloads[k][:2] + b"\xfe\xdc\xba" + bytes(4 + 8) + b"\x08\0\0\0" + payloads[k][2:]
    return _apx_bytes(payloads)


def _read(path, threads, **kwargs):
    """The table, the warnings (category, text, offset) and the damage counts of an
    eager read."""
    import warnings

    import bindf
    from bindf.arrow import table_info

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = bindf.read_apx(path, output="arrow", threads=threads, **kwargs)
        except bindf.BindfError as exc:
            return None, [(type(exc), str(exc), getattr(exc, "offset", None))], None
    said = [(w.category, str(w.message), getattr(w.message, "offset", None)) for w in caught]
    return table, said, (table_info(table) or {}).get("errors")


@pytest.fixture
def cut_everywhere(monkeypatch):
    """Ranges for files of any size, and no whole-file path for small runs."""
    import bindf._source
    import bindf.formats._apx_parts as parts
    import bindf.formats.apx as apx_module

    monkeypatch.setattr(parts, "PART_MIN_BYTES", 1)
    monkeypatch.setattr(parts, "CUT_WINDOW_BYTES", 300)
    monkeypatch.setattr(apx_module, "PREFETCH_MIN_BYTES", 0)
    # the reading thread's ranges share its one held file handle, as with large files
    monkeypatch.setattr(bindf._source, "HOLD_IN_MEMORY_BYTES", 0)
    return parts


def test_ranges_take_small_blocks_for_small_shares(tmp_path, cut_everywhere, monkeypatch):
    """Each range has lanes of its own, with small blocks when its share of the run is
    small (not 16 MiB per column and range whatever the run's size); the table is one
    pass's."""
    from bindf import _lanes

    path = tmp_path / "noisy.apx"
    path.write_bytes(_noisy_run(5, 3000))
    expected = _read(path, 1)
    requested: list[int] = []
    original = _lanes.new_block

    def spy(nbytes: int):
        requested.append(nbytes)
        return original(nbytes)

    monkeypatch.setattr(_lanes, "MIN_INPUT_BYTES", 0)
    monkeypatch.setattr(_lanes, "new_block", spy)
    got = _read(path, 4)
    assert got[0].equals(expected[0]) and got[1:] == expected[1:]
    assert requested and max(requested) <= _lanes.SMALL_BLOCK_BYTES + 64


@pytest.mark.parametrize("kwargs", [{}, {"level": "readouts"}, {"chunk_bytes": 64},
                                    {"columns": ["tot_us", "readout_id"]}, {"stitch": True}])
def test_read_in_ranges_equals_one_pass(tmp_path, cut_everywhere, kwargs):
    from pathlib import Path

    import bindf

    data = Path(__file__).parent / "data"
    noisy = tmp_path / "noisy.apx"
    noisy.write_bytes(_noisy_run(3, 600))
    for path in (data / "20250723_092534_data.apx", data / "vinj0_th1030_20250729-185248.apx",
                 Path(bindf.__file__).parent / "samples" / "astropix_threshold_scan.apx",
                 noisy):
        expected = _read(path, 1, **kwargs)
        for threads in (2, 3, 7, 16):
            got = _read(path, threads, **kwargs)
            assert got[0].equals(expected[0]) and got[1:] == expected[1:], (path, threads)


def _every_cut(monkeypatch, parts_module, path, threads=2, sample=None, **kwargs):
    """The read with the first cut at every byte offset of the data (or ``sample`` random
    ones: guessed readout starts inside headers, payloads, carried hits …), and with
    random sets of cuts."""
    size = path.stat().st_size
    expected = _read(path, 1, **kwargs)
    rng = np.random.default_rng(0)
    offsets = list(range(1, size))
    if sample is not None:
        offsets = sorted(rng.choice(offsets, sample, replace=False).tolist())
    sets = [[k] for k in offsets] + [sorted(rng.choice(offsets, 5, replace=False)) for _ in range(30)]
    for cuts in sets:
        def fake(f, first, end, parts, cuts=cuts):
            inner = [int(c) for c in cuts if first < c < end]
            return [first, *inner, end]

        monkeypatch.setattr(parts_module, "cut_points", fake)
        got = _read(path, threads, **kwargs)
        if expected[0] is None:
            assert got[0] is None and got[1] == expected[1], cuts
        else:
            assert got[0].equals(expected[0]) and got[1:] == expected[1:], cuts


@pytest.mark.parametrize("stitch", [False, True])
def test_cuts_anywhere_in_an_astropix3_run(cut_everywhere, monkeypatch, stitch):
    from pathlib import Path

    path = Path(__file__).parent / "data" / "vinj0_th1030_20250729-185248.apx"
    _every_cut(monkeypatch, cut_everywhere, path, sample=150, stitch=stitch)


def test_cuts_anywhere_in_a_noisy_run(tmp_path, cut_everywhere, monkeypatch):
    path = tmp_path / "noisy.apx"
    path.write_bytes(_noisy_run(8, 60))
    _every_cut(monkeypatch, cut_everywhere, path)
    _every_cut(monkeypatch, cut_everywhere, path, threads=4, sample=200, level="readouts")


@pytest.mark.parametrize("damage", ["bad_marker", "junk_between", "truncated", "cut_header",
                                    "bad_length"])
@pytest.mark.parametrize("on_error", ["raise", "warn", "skip"])
def test_cuts_anywhere_in_a_damaged_run(tmp_path, cut_everywhere, monkeypatch, damage,
                                        on_error):
    """Warnings (text, offset, order), damage counts, errors and the rows kept are
    those of one pass, wherever the ranges start."""
    data = bytearray(_noisy_run(9, 16))
    markers = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xfe\xdc\xba"]
    middle = markers[len(markers) // 2]
    if damage == "bad_marker":
        data[middle + 1] = 0
        data[markers[-3]] = 0
    elif damage == "junk_between":
        data[middle:middle] = b"junk\xfe\xdc"
    elif damage == "truncated":
        data = data[:-5]
    elif damage == "bad_length":  # a length past the end of the file, readouts after it
        data[middle + 15:middle + 19] = (1 << 24).to_bytes(4, "little")
    else:
        data = data[:markers[-1] + 7]
    path = tmp_path / "damaged.apx"
    path.write_bytes(bytes(data))
    _every_cut(monkeypatch, cut_everywhere, path, on_error=on_error)


@pytest.mark.parametrize("damage", [None, "bad_marker", "junk_between", "truncated",
                                    "bad_length"])
def test_framing_hands_hit_finding_the_payload_total(tmp_path, monkeypatch, damage):
    """The readouts framed in one call lie back to back, so the stream gives hit finding
    their payloads' total (the framed bytes less the headers) for its bound of hits
    instead of summing the lengths: it must be that sum, in every chunk, across
    damaged stretches, partial readouts at chunk ends and the end of a cut run."""
    import bindf
    import bindf._source
    from bindf.formats import _apx_hits

    # (a file this small is otherwise read whole, in one framing call)
    monkeypatch.setattr(bindf._source, "HOLD_IN_MEMORY_BYTES", 0)
    data = bytearray(_noisy_run(5, 4000))  # beyond the first read (64 KiB)
    markers = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xfe\xdc\xba"]
    if damage == "bad_marker":
        data[markers[3500] + 1] = 0
    elif damage == "junk_between":
        data[markers[3600]:markers[3600]] = b"junk\xfe\xdc"
    elif damage == "truncated":
        data = data[:-5]
    elif damage == "bad_length":
        data[markers[3500] + 15:markers[3500] + 19] = (1 << 24).to_bytes(4, "little")
    path = tmp_path / "run.apx"
    path.write_bytes(bytes(data))
    given = []
    bound = _apx_hits.most_hits

    def spy(payload_len, payload_bytes=None):
        given.append((payload_bytes, int(payload_len.sum(dtype=np.int64))))
        return bound(payload_len, payload_bytes)

    monkeypatch.setattr(_apx_hits, "most_hits", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for chunk_bytes in (97, 1000, 1 << 20):
            bindf.read_apx(path, output="arrow", threads=1, on_error="skip",
                           chunk_bytes=chunk_bytes, n_rows=10**9)
    assert len(given) > 100, len(given)
    assert all(total == summed for total, summed in given)


def test_cut_points_are_readout_starts(tmp_path):
    """On an intact run, the guessed cuts are where one pass finds readouts."""
    import bindf
    from bindf.formats import _apx_parts

    path = tmp_path / "run.apx"
    path.write_bytes(_noisy_run(4, 3000))
    readouts = bindf.read_apx(path, level="readouts", output="arrow", threads=1)
    starts = set(readouts.column("byte_offset").to_pylist())
    reader = bindf.open(path)
    first = readouts.column("byte_offset")[0].as_py()
    with open(path, "rb") as f:
        cuts = _apx_parts.cut_points(f, first, path.stat().st_size, 5)
    assert len(cuts) == 6 and cuts[0] == first and cuts[-1] == path.stat().st_size
    assert all(c in starts for c in cuts[1:-1]), cuts
    assert reader is not None


def test_ranges_of_bytes_but_not_of_a_file_object(tmp_path, cut_everywhere):
    """Bytes in memory are cut into ranges; a file object is not (its one position would
    be taken in turn, and a decompressing stream would start over at each backward
    seek), and reads the same."""
    import io

    import bindf
    from bindf._inputs import expand_sources

    path = tmp_path / "noisy.apx"
    path.write_bytes(_noisy_run(5, 2000))
    with open(path, "rb") as f:
        assert not expand_sources(f)[0].reads_in_parallel
    assert expand_sources(path.read_bytes())[0].reads_in_parallel
    expected = bindf.read_apx(path, output="arrow", threads=1)
    for threads in (2, 5):
        with open(path, "rb") as f:
            assert bindf.read_apx(f, output="arrow", threads=threads).equals(expected)
        assert bindf.read_apx(io.BytesIO(path.read_bytes()), output="arrow",
                              threads=threads).equals(expected)
        assert bindf.read_apx(path.read_bytes(), output="arrow",
                              threads=threads).equals(expected)


@pytest.mark.parametrize("where", [0, 1, 2])
def test_an_interrupt_in_a_range_stops_the_read(tmp_path, cut_everywhere, monkeypatch, where):
    """Ctrl-C (KeyboardInterrupt) in any range's thread ends the read with it: it is not
    kept for later like a decoding error, nor lost with a range that is dropped (range
    1 starts inside a readout header: a wrong guess)."""
    import bindf

    path = tmp_path / "noisy.apx"
    path.write_bytes(_noisy_run(6, 3000))
    cuts: list[int] = []

    def guessed(f, a, b, n):
        cuts[:] = [a, a + 7, (a + b) // 2, b]
        return list(cuts)

    monkeypatch.setattr(cut_everywhere, "cut_points", guessed)
    original = cut_everywhere._Part._decode_to

    def interrupted(self, stop, last, source):
        if self.start == cuts[where]:
            raise KeyboardInterrupt
        original(self, stop, last, source)

    monkeypatch.setattr(cut_everywhere._Part, "_decode_to", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bindf.read_apx(path, output="arrow", threads=2)


def test_ranges_after_damage_stand(tmp_path, cut_everywhere, monkeypatch):
    """A damaged stretch early in the run does not keep the later ranges from standing
    (out of the stretch, the decoder's state is the same whatever damage came before)."""
    import bindf

    path = tmp_path / "damaged.apx"
    path.write_bytes(_noisy_run(7, 400))
    starts = bindf.read_apx(path, level="readouts", output="arrow", threads=1,
                            columns=["byte_offset"]).column(0).to_pylist()
    intact = path.read_bytes()
    data = bytearray(intact)
    data[starts[3] + 1] = 0  # readout 3's marker
    path.write_bytes(bytes(data))
    markers = starts[50::100]
    standing = []
    original = cut_everywhere._standing

    def spy(pieces, fresh, source):
        result = original(pieces, fresh, source)
        standing.append((len(pieces), len(result)))
        return result

    monkeypatch.setattr(cut_everywhere, "_standing", spy)
    monkeypatch.setattr(cut_everywhere, "cut_points",
                        lambda f, a, b, n: [a, *markers, b])
    expected = _read(path, 1, on_error="skip")
    assert expected[2] == {"bad_readout_marker": 1, "skipped_bytes": expected[2]["skipped_bytes"]}
    got = _read(path, 3, on_error="skip")
    assert got[0].equals(expected[0]) and got[1:] == expected[1:]
    # as many ranges stand as with no damage (some do not: a hit cut across readouts)
    (tmp_path / "intact.apx").write_bytes(intact)
    _read(tmp_path / "intact.apx", 3, on_error="skip")
    assert standing[0] == standing[1] and standing[0][1] > 1


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8, 1.0])
def test_a_run_that_shrinks_under_the_ranges(tmp_path, cut_everywhere, keep):
    """The file is cut shorter after it was opened (its size taken): the ranges give the
    rows, the truncation warning and its offset that one pass gives."""
    import warnings

    from bindf._source import Source
    from bindf.formats.apx import ApxReader

    data = _noisy_run(11, 1500)

    def read(threads):
        path = tmp_path / f"shrinking_{threads}.apx"
        path.write_bytes(data)
        reader = ApxReader(Source(str(path)), threads=threads)
        reader.keeps_every_batch = True
        path.write_bytes(data[:int(len(data) * keep)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = pa.Table.from_batches(list(reader.iter_batches()), schema=reader.schema)
        return table, [(str(w.message).replace(str(path), ""), w.message.offset)
                       for w in caught]

    expected = read(1)
    for threads in (2, 3):
        got = read(threads)
        assert got[0].equals(expected[0]) and got[1] == expected[1], threads
    if keep < 1:
        assert expected[1] and "shrank" in expected[1][0][0]
