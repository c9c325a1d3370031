"""AstroPix 3 (``readout_uid`` 3000): hit kernel, hit columns, readout table, encoder.

Ground truth: the real run ``vinj0_th1030_20250729-185248.apx`` and its expected hit
table (``_hits.csv.gz``: upstream's columns plus ``chip_timestamp``, equal field for field
to upstream's own table). Hand-made payloads cover each rule of the readout state
machine; the compiled kernel is checked against the pure-Python model
``bindf._kernels.apx3_reference`` on random noisy payloads.

The real run is read through ``read_apx`` (which dispatches on the header's
``readout_uid``); the end of the file checks the wiring: options, logs, writer, scans,
dask, live decoding.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bindf
from bindf._kernels import _apx, _apx3
from bindf._kernels import apx3_reference as ref
from bindf.errors import UnsupportedReadoutError
from bindf.formats import _apx3_hits as apx3
from bindf.formats._apx_writer import readout_records
from bindf.formats.apx_log import log_readout_uid

SAMPLE = "vinj0_th1030_20250729-185248.apx"
GOLDEN = "vinj0_th1030_20250729-185248_hits.csv.gz"

HIT_DTYPES = {
    "chip_id": "uint8", "payload": "uint8", "readout_id": "uint32", "wall_timestamp": "uint64",
    "decoding_order": "uint16", "column": "uint8", "location": "uint8", "tot_msb": "uint8",
    "tot_lsb": "uint8", "tot_dec": "uint16", "tot_us": "float64", "chip_timestamp": "uint8",
}
STATUS_BITS = {name: 1 << i for i, name in enumerate(apx3.STATUS_FLAGS)}
IDLE = b"\xbc"


# -- helpers (independent of the code under test) -----------------------------------------
def mirror(b: int) -> int:
    return int(f"{b:08b}"[::-1], 2)


def make_hit(chip_id: int = 0, column: int = 0, location: int = 0, chip_timestamp: int = 0,
             tot: int = 0, payload: int = 4) -> bytes:
    """The 5 raw bytes of one hit, written from the bit layout (MSB-first, mirrored)."""
    d = [chip_id << 3 | payload, column << 7 | location, chip_timestamp, tot >> 8, tot & 0xFF]
    return bytes(mirror(b) for b in d)


def unpack_hit(raw: bytes) -> dict[str, int]:
    d = [mirror(b) for b in raw]
    return {"chip_id": d[0] >> 3, "payload": d[0] & 7, "column": d[1] >> 7,
            "location": d[1] & 0x3F, "chip_timestamp": d[2], "tot_msb": d[3] & 0xF,
            "tot_lsb": d[4], "tot_dec": (d[3] & 0xF) << 8 | d[4]}


def hit(seed: int, start_inside: bool = False, chip: int | None = None) -> bytes:
    """A deterministic hit; with ``start_inside`` one of bytes 1..4 is a start byte."""
    rng = random.Random(seed)
    while True:
        raw = make_hit(chip_id=rng.randrange(32) if chip is None else chip,
                       column=rng.randrange(2), location=rng.randrange(64),
                       chip_timestamp=rng.randrange(256), tot=rng.randrange(4096))
        inside = any(ref.is_start_byte(b) for b in raw[1:])
        if inside == start_inside and 0xBC not in raw and 0xFF not in raw:
            return raw


def kernel_decode(payloads, carry=None, stitch=True):
    """Run the kernel (through Apx3HitDecoder) over payloads held in one buffer."""
    lens = np.array([len(p) for p in payloads], dtype=np.uint32)
    buf = np.frombuffer(b"".join(payloads) or b"\0", dtype=np.uint8)
    pos = np.zeros(len(payloads), dtype=np.int64)
    if len(payloads) > 1:
        pos[1:] = np.cumsum(lens[:-1], dtype=np.int64)
    decoder = apx3.Apx3HitDecoder(stitch=stitch)
    if carry is not None:
        decoder.carry[: len(carry)] = np.frombuffer(carry, np.uint8)
        decoder.carry_len = len(carry)
    n = len(payloads)
    decoded = decoder.decode(buf, pos, lens, np.arange(n, dtype=np.uint32),
                             np.arange(n, dtype=np.uint64) * 10)
    return [bytes(h) for h in decoded.hits], decoded, decoder.carried


def assert_kernel_matches_reference(payloads, carry=None, stitch=True):
    hits, decoded, carried = kernel_decode(payloads, carry, stitch)
    results, ref_carry = ref.decode_payloads(payloads, carry, stitch=stitch)
    assert hits == [h for r in results for h in r.hits]
    assert decoded.status.tolist() == [r.status for r in results]
    assert decoded.readout_hits.tolist() == [len(r.hits) for r in results]
    assert decoded.hit_order.tolist() == [i for r in results for i in range(len(r.hits))]
    assert decoded.hit_readout_id.tolist() == [k for k, r in enumerate(results) for _ in r.hits]
    assert decoded.hit_timestamp.tolist() == [10 * k for k, r in enumerate(results) for _ in r.hits]
    assert carried == ref_carry
    return results


def one(payload: bytes, carry: bytes | None = None, stitch: bool = True):
    """Hits and status of a single readout."""
    hits, decoded, carried = kernel_decode([payload], carry, stitch)
    results = assert_kernel_matches_reference([payload], carry, stitch)
    assert hits == results[0].hits
    return hits, int(decoded.status[0]), carried


def flags(status: int) -> set[str]:
    return {name for name, bit in STATUS_BITS.items() if status & bit}


def read_run(path: Path, *, stitch: bool = False, level: str = "hits",
             columns: list[str] | None = None, per_call: int | None = None):
    """``read_apx`` of an AstroPix 3 run: ``(header, frame)``.

    ``per_call`` decodes that many readouts per kernel call (``batch_size`` bounds the
    readouts per call; small reads and no worker thread then exercise the carry-over).
    """
    options = {} if per_call is None else {"batch_size": per_call, "chunk_bytes": 4096,
                                          "threads": False}
    frame = bindf.read_apx(path, stitch=stitch, level=level, columns=columns, **options)
    header = frame.attrs["bindf"]["header"]
    frame.attrs.clear()
    return header, frame.reset_index(drop=True)


# -- the real run -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / GOLDEN, dtype={c: "int64" for c in HIT_DTYPES if c != "tot_us"})


def test_real_run_matches_upstream_table(data_dir, golden):
    header, df = read_run(data_dir / SAMPLE)
    assert header["readout_uid"] == 3000 and header["options"]["chipVer"] == 3
    assert list(df.columns) == list(HIT_DTYPES) == list(golden.columns)
    assert {c: str(t) for c, t in df.dtypes.items()} == HIT_DTYPES
    assert len(df) == len(golden) == 11_393
    for column in HIT_DTYPES:
        expected = golden[column].to_numpy()
        got = df[column].to_numpy()
        if column != "tot_us":
            got = got.astype(np.int64)
        np.testing.assert_array_equal(got, expected, err_msg=column)
    np.testing.assert_array_equal(df["tot_us"], df["tot_dec"] / 200.0)


def test_tot_us_divides_by_the_kernels_clock_rate(data_dir):
    assert _apx3.CLOCK_CYCLES_PER_US == 200.0  # the 200 MHz ToT counter
    _, df = read_run(data_dir / SAMPLE)
    np.testing.assert_array_equal(df["tot_us"], df["tot_dec"] / _apx3.CLOCK_CYCLES_PER_US)


def test_real_run_with_stitching(data_dir, golden):
    _, df = read_run(data_dir / SAMPLE, stitch=True)
    assert len(df) == 11_493
    _, readouts = read_run(data_dir / SAMPLE, stitch=True, level="readouts")
    matched = readouts.loc[readouts["orphans_matched"], "readout_id"]
    assert len(matched) == 100
    # the re-assembled hits are the first of their readouts; without them, the stitched
    # table is upstream's table with decoding_order shifted by one in those readouts
    stitched = df["readout_id"].isin(matched) & (df["decoding_order"] == 0)
    assert stitched.sum() == 100
    rest = df[~stitched].reset_index(drop=True)
    shift = rest["readout_id"].isin(matched).to_numpy().astype(np.int64)
    for column in HIT_DTYPES:
        got = rest[column].to_numpy()
        if column == "decoding_order":
            got = got.astype(np.int64) - shift
        np.testing.assert_array_equal(got, golden[column].to_numpy(), err_msg=column)
    # each stitched hit is a valid AstroPix 3 hit of chip 0 (payload 4)
    assert (df.loc[stitched, "payload"] == 4).all() and (df.loc[stitched, "chip_id"] == 0).all()


def test_real_run_readout_table(data_dir):
    _, readouts = read_run(data_dir / SAMPLE, level="readouts")
    assert list(readouts.columns) == [
        "readout_id", "wall_timestamp", "payload_length", "n_hits", "status",
        *apx3.STATUS_FLAGS, "byte_offset",
    ]
    assert str(readouts["status"].dtype) == "uint8"
    assert all(str(readouts[f].dtype) == "bool" for f in apx3.STATUS_FLAGS)
    assert len(readouts) == 979
    assert readouts["n_hits"].sum() == 11_393
    assert readouts["readout_id"].tolist() == list(range(979))
    # without stitching no orphan is ever used; with stitching 100 are
    assert not readouts["orphans_matched"].any()
    assert readouts["orphans_unused"].sum() > 100
    assert not readouts["decoder_failure"].any()
    raw = (data_dir / SAMPLE).read_bytes()
    for offset, length in zip(readouts["byte_offset"], readouts["payload_length"], strict=True):
        assert raw[offset : offset + 3] == b"\xfe\xdc\xba"
        assert struct.unpack_from("<I", raw, offset + 15)[0] == length


@pytest.mark.parametrize("stitch", [False, True])
@pytest.mark.parametrize("per_call", [1, 7, 100])
def test_real_run_batched_equals_whole(data_dir, stitch, per_call):
    _, whole = read_run(data_dir / SAMPLE, stitch=stitch)
    _, batched = read_run(data_dir / SAMPLE, stitch=stitch, per_call=per_call)
    pd.testing.assert_frame_equal(batched, whole)


def test_projection_computes_the_same_values(data_dir):
    _, full = read_run(data_dir / SAMPLE)
    for columns in (["tot_us"], ["location", "readout_id"], ["chip_timestamp", "tot_dec"],
                    ["decoding_order"]):
        _, part = read_run(data_dir / SAMPLE, columns=columns)
        pd.testing.assert_frame_equal(part, full[columns])
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['row'\]"):
        read_run(data_dir / SAMPLE, columns=["row"])
    with pytest.raises(KeyError, match="no AstroPix 3 hit column 'row'"):
        apx3.Apx3HitColumns()(apx3.Apx3HitDecoder().decode(
            np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.uint32),
            np.zeros(0, np.uint32), np.zeros(0, np.uint64)), ["row"])


# -- hand-made payloads: each rule of the state machine ---------------------------------------
A, B, C = hit(1), hit(2), hit(3)


def test_hit_fields_are_unpacked_from_the_mirrored_bytes():
    raw = make_hit(chip_id=5, column=1, location=34, chip_timestamp=151, tot=0xABC)
    decoded = kernel_decode([IDLE * 2 + raw + IDLE * 4])[1]
    values = dict(zip(apx3.HITS_SCHEMA.names,
                      apx3.Apx3HitColumns()(decoded, apx3.HITS_SCHEMA.names), strict=True))
    assert {k: int(v[0]) for k, v in values.items() if k != "tot_us"} == {
        "chip_id": 5, "payload": 4, "readout_id": 0, "wall_timestamp": 0,
        "decoding_order": 0, "column": 1, "location": 34, "tot_msb": 0xA, "tot_lsb": 0xBC,
        "tot_dec": 0xABC, "chip_timestamp": 151,
    }
    assert values["tot_us"][0] == 0xABC / 200.0


def test_real_first_hit_bytes():
    # first hit of the real run: 20 10 e9 00 3b -> row 8, ToT 220 cycles, chip clock 151
    fields = unpack_hit(bytes.fromhex("2010e9003b"))
    assert fields == {"chip_id": 0, "payload": 4, "column": 0, "location": 8,
                      "chip_timestamp": 151, "tot_msb": 0, "tot_lsb": 220, "tot_dec": 220}


def test_start_bytes_are_0x20_to_0x3f():
    assert [b for b in range(256) if ref.is_start_byte(b)] == list(range(0x20, 0x40))
    for chip in (0, 7, 31):
        assert make_hit(chip_id=chip)[0] in range(0x20, 0x40)


def test_plain_hits_with_idle_and_padding():
    hits, status, carried = one(IDLE * 2 + A + B + IDLE * 3 + b"\xff\xff" + C + IDLE * 4)
    assert hits == [A, B, C] and status == 0 and carried is None


@pytest.mark.parametrize("payload", [b"", IDLE * 7, b"\xff" * 3, (IDLE + b"\xff") * 4])
def test_empty_or_idle_readout_gives_no_hits_and_a_failure(payload):
    # upstream raises TypeError here
    hits, status, carried = one(payload, carry=A[:2])
    assert hits == [] and flags(status) == {"decoder_failure"} and carried is None


@pytest.mark.parametrize("payload", [b"\x00\x01\x02", IDLE + b"\x80" * 9 + IDLE * 3,
                                     b"\x47" + IDLE + b"\xff"])
def test_stray_bytes_without_start_byte_give_no_hits_and_a_failure(payload):
    # upstream searches forever for a start byte here
    hits, status, carried = one(payload, carry=A[:2])
    assert hits == [] and flags(status) == {"decoder_failure"} and carried is None


def test_failure_drops_the_carried_bytes():
    results = assert_kernel_matches_reference([IDLE + A + B[:2], IDLE * 5, B[2:] + IDLE + C + IDLE])
    assert [flags(r.status) for r in results] == [
        {"extra_bytes_kept"}, {"decoder_failure"}, {"orphans_unused"}]
    assert results[2].hits == [C]


def test_hit_split_across_readouts_is_stitched_only_on_request():
    payloads = [IDLE * 2 + A + B[:3], B[3:] + IDLE * 2 + C + IDLE * 2]
    hits, decoded, _ = kernel_decode(payloads, stitch=True)
    assert hits == [A, B, C]
    assert decoded.hit_order.tolist() == [0, 0, 1]
    assert [flags(s) for s in decoded.status] == [{"extra_bytes_kept"}, {"orphans_matched"}]
    hits, decoded, carried = kernel_decode(payloads, stitch=False)
    assert hits == [A, C] and carried is None
    assert [flags(s) for s in decoded.status] == [{"extra_bytes_kept"}, {"orphans_unused"}]
    assert_kernel_matches_reference(payloads, stitch=True)
    assert_kernel_matches_reference(payloads, stitch=False)


def test_orphans_lose_their_trailing_idle_bytes():
    hits, status, _ = one(B[2:] + IDLE * 3 + C + IDLE, carry=B[:2])
    assert hits == [B, C] and flags(status) == {"orphans_matched"}


def test_orphans_of_the_wrong_size_are_dropped():
    hits, status, _ = one(B[2:] + IDLE + C + IDLE, carry=B[:1])
    assert hits == [C] and flags(status) == {"orphans_dropped"}


def test_orphans_without_extra_bytes_are_unused():
    hits, status, _ = one(IDLE + B[2:] + IDLE + C + IDLE)
    assert hits == [C] and flags(status) == {"orphans_unused"}


def test_a_complete_word_ending_the_payload_is_extra_bytes():
    # upstream's c + 5 >= n: a hit with nothing after it is treated as cut
    hits, status, carried = one(IDLE * 2 + A + B)
    assert hits == [A] and flags(status) == {"extra_bytes_kept"} and carried == B
    # ... and the next readout cannot complete it (the orphans are at least one byte)
    results = assert_kernel_matches_reference([IDLE + A + B, b"\x00" + IDLE + C + IDLE])
    assert flags(results[1].status) == {"orphans_dropped"} and results[1].hits == [C]


def test_trailing_padding_is_stripped_first():
    # a hit whose last byte is 0xFF loses it to the strip and becomes extra bytes
    cut = A[:4] + b"\xff"
    hits, status, carried = one(IDLE + B + IDLE + cut + b"\xff\xff")
    assert hits == [B] and flags(status) == {"extra_bytes_kept"} and carried == A[:4]


def test_invalid_extra_bytes():
    hits, status, carried = one(IDLE + A + IDLE + b"\x01\x02\x03")
    assert hits == [A] and flags(status) == {"extra_bytes_invalid"} and carried is None


def test_stray_bytes_between_hits_are_skipped():
    hits, status, _ = one(IDLE + A + b"\x01\x02" + B + IDLE * 2)
    assert hits == [A, B] and flags(status) == {"bytes_unvisited"}


def test_stray_bytes_to_the_end_stop_without_failure():
    hits, status, _ = one(IDLE + A + b"\x01\x02\x03\x04\x05\x06\x07")
    assert hits == [A] and flags(status) == {"bytes_unvisited"}


def test_skipping_to_a_word_that_ends_the_payload_emits_it():
    # the c + 5 >= n test is made before the skip, not after it
    hits, status, carried = one(A + b"\x01" + B)
    assert hits == [A, B] and flags(status) == {"bytes_unvisited"} and carried is None


def test_skipping_to_a_word_cut_by_the_end_drops_it():
    hits, status, carried = one(A + b"\x01\x02\x03\x04\x05" + B[:3])
    assert hits == [A] and flags(status) == {"bytes_unvisited"} and carried is None


def test_incomplete_hit_is_dropped():
    # A lost its last two bytes; the word read at A holds B's start byte and is followed
    # by a non-start byte (B's fourth byte): drop A's bytes, restart at B
    hits, status, _ = one(IDLE + A[:3] + B + IDLE + C + IDLE * 2)
    assert hits == [B, C] and flags(status) == {"incomplete_hit_dropped"}


def test_start_byte_inside_a_legitimate_hit_is_kept():
    inside = hit(5, start_inside=True)
    hits, status, _ = one(IDLE + inside + A + IDLE + inside + IDLE * 2 + B + IDLE)
    assert hits == [inside, A, inside, B] and status == 0


def test_padding_after_a_hit_holding_a_start_byte_drops_it():
    inside = hit(6, start_inside=True)
    assert ref.is_start_byte(inside[1])  # the first start byte inside the hit
    hits, status, _ = one(IDLE + A + inside + b"\xff" + B + IDLE)
    # 0xFF is not a start byte: the word is taken as cut and the decoder restarts at the
    # start byte inside it, reading the padding byte as the new word's last byte
    assert flags(status) == {"incomplete_hit_dropped"}
    assert hits == [A, inside[1:] + b"\xff", B]


def test_decoding_order_is_uint16_beyond_255():
    hits, decoded, _ = kernel_decode([IDLE * 2 + A * 300 + IDLE * 4])
    assert len(hits) == 300 and decoded.hit_order.dtype == np.uint16
    assert decoded.hit_order.tolist() == list(range(300))


def test_decoding_order_saturates_at_65535():
    hits, decoded, _ = kernel_decode([IDLE * 2 + A * 70_000 + IDLE * 4])
    assert len(hits) == 70_000
    order = decoded.hit_order
    assert order[65_534] == 65_534 and (order[65_535:] == 65_535).all()


# -- kernel vs reference on noisy payloads ----------------------------------------------------
def noisy_payloads(rng: random.Random, n: int) -> list[bytes]:
    """Random readouts: streams of hits cut anywhere, plus idle/padding runs and junk."""
    payloads = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.15:
            payloads.append(bytes(rng.choice([0xBC, 0xFF, 0x20, 0x00, rng.randrange(256)])
                                  for _ in range(rng.randrange(16))))
            continue
        parts = [IDLE * rng.choice([0, 0, 1, 2, 3])]
        for _ in range(rng.randrange(8)):
            h = hit(rng.randrange(10_000), start_inside=rng.random() < 0.3)
            if rng.random() < 0.2:  # truncated hit
                h = h[: rng.randrange(1, 5)] if rng.random() < 0.5 else h[rng.randrange(1, 5):]
            parts.append(h)
            parts.append(rng.choice([b"", b"", IDLE, IDLE * 2, b"\xff", b"\xff\xbc\xff",
                                     bytes([rng.randrange(256)])]))
        payload = b"".join(parts)
        if rng.random() < 0.4:
            payload = payload[rng.randrange(len(payload) + 1):]
        if rng.random() < 0.4:
            payload = payload[: rng.randrange(len(payload) + 1)]
        payloads.append(payload + b"\xff" * rng.choice([0, 0, 2]))
    return payloads


@pytest.mark.parametrize("stitch", [True, False])
def test_kernel_matches_reference_on_noisy_payloads(stitch):
    rng = random.Random(20250729)
    seen = 0
    for _ in range(500):
        payloads = noisy_payloads(rng, rng.randrange(1, 9))
        carry = rng.choice([None, None, b"\x20", A[:2], A[:4], A])
        for r in assert_kernel_matches_reference(payloads, carry, stitch):
            seen |= r.status
    # every status bit was exercised (without stitching no readout gets extra bytes, so
    # orphans are never matched nor dropped: always unused)
    unreachable = STATUS_BITS["orphans_matched"] | STATUS_BITS["orphans_dropped"]
    assert seen == (0xFF if stitch else 0xFF & ~unreachable)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=30).map(lambda b: bytes(0x20 | (x & 0x1F) if x & 0x40 else x
                                                           for x in b)),
                min_size=1, max_size=6),
       st.one_of(st.none(), st.binary(min_size=0, max_size=5)), st.booleans())
def test_kernel_matches_reference_on_random_bytes(payloads, carry, stitch):
    assert_kernel_matches_reference(payloads, carry, stitch)


@pytest.mark.parametrize("stitch", [True, False])
def test_kernel_groupings_give_identical_hits(stitch):
    rng = random.Random(11)
    payloads = noisy_payloads(rng, 80)
    whole, whole_decoded, _ = kernel_decode(payloads, stitch=stitch)
    for size in (1, 3, 7):
        decoder = apx3.Apx3HitDecoder(stitch=stitch, slots=2)
        hits, status, order = [], [], []
        for start in range(0, len(payloads), size):
            group = payloads[start : start + size]
            buf = np.frombuffer(b"".join(group) or b"\0", np.uint8)
            lens = np.array([len(p) for p in group], np.uint32)
            pos = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)[:-1]]).astype(np.int64)
            decoded = decoder.decode(buf, pos, lens, np.zeros(len(group), np.uint32),
                                     np.zeros(len(group), np.uint64))
            hits += [bytes(h) for h in decoded.hits]
            status += decoded.status.tolist()
            order += decoded.hit_order.tolist()
        assert hits == whole
        assert status == whole_decoded.status.tolist()
        assert order == whole_decoded.hit_order.tolist()


def test_counting_mode_gives_the_same_readout_table():
    payloads = noisy_payloads(random.Random(5), 40)
    _, stored, _ = kernel_decode(payloads)
    buf = np.frombuffer(b"".join(payloads) or b"\0", np.uint8)
    lens = np.array([len(p) for p in payloads], np.uint32)
    pos = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)[:-1]]).astype(np.int64)
    counted = apx3.Apx3HitDecoder(stitch=True, store_hits=False).decode(
        buf, pos, lens, np.zeros(40, np.uint32), np.zeros(40, np.uint64))
    assert counted.n_hits == stored.n_hits
    np.testing.assert_array_equal(counted.status, stored.status)
    np.testing.assert_array_equal(counted.readout_hits, stored.readout_hits)


def test_kernel_is_memory_safe_on_bad_arguments():
    buf = np.frombuffer(IDLE * 2 + A + IDLE * 4, np.uint8)
    args = dict(readout_id=np.zeros(1, np.uint32), timestamp=np.zeros(1, np.uint64),
                carry=np.zeros(5, np.uint8), carry_len=-1, stitch=True,
                hits=np.zeros((4, 5), np.uint8), hit_order=np.zeros(4, np.uint16),
                hit_readout_id=np.zeros(4, np.uint32), hit_timestamp=np.zeros(4, np.uint64),
                status=np.zeros(1, np.uint8), n_hits=np.zeros(1, np.uint32))
    good = (np.array([0], np.int64), np.array([len(buf)], np.uint32))
    assert _apx3.decode_hits(buf, *good, *args.values()) == (1, -1)
    for pos, length in ((-1, 4), (len(buf) + 1, 0), (2, len(buf))):
        with pytest.raises(ValueError, match="outside the buffer"):
            _apx3.decode_hits(buf, np.array([pos], np.int64), np.array([length], np.uint32),
                              *args.values())
    with pytest.raises(ValueError, match="too small"):
        _apx3.decode_hits(buf, *good, *dict(args, hits=np.zeros((0, 5), np.uint8)).values())
    with pytest.raises(ValueError, match="5 columns"):
        _apx3.decode_hits(buf, *good, *dict(args, hits=np.zeros((4, 8), np.uint8)).values())
    with pytest.raises(ValueError, match="carry_len"):
        _apx3.decode_hits(buf, *good, *dict(args, carry_len=6).values())
    with pytest.raises(ValueError, match="carry must hold"):
        _apx3.decode_hits(buf, *good, *dict(args, carry=np.zeros(4, np.uint8)).values())
    with pytest.raises(ValueError, match="shorter than payload_pos"):
        _apx3.decode_hits(buf, np.zeros(2, np.int64), np.zeros(2, np.uint32), *args.values())
    empty = np.zeros(0, np.uint8)  # an empty buffer holds only empty payloads
    assert _apx3.decode_hits(empty, np.array([0], np.int64), np.array([0], np.uint32),
                             *args.values()) == (0, -1)
    assert args["status"][0] == STATUS_BITS["decoder_failure"]
    rng = np.random.default_rng(8)  # random positions and lengths: refused or decoded
    for _ in range(300):
        pos = rng.integers(-5, len(buf) + 5, 3).astype(np.int64)
        length = rng.integers(0, len(buf) + 5, 3).astype(np.uint32)
        out = dict(args, readout_id=np.zeros(3, np.uint32), timestamp=np.zeros(3, np.uint64),
                   status=np.zeros(3, np.uint8), n_hits=np.zeros(3, np.uint32))
        try:
            _apx3.decode_hits(buf, pos, length, *out.values())
        except ValueError as exc:
            assert "outside the buffer" in str(exc) or "too small" in str(exc)


# -- writing: hits → payload bytes → the same hits ----------------------------------------
def random_fields(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "chip_id": rng.integers(0, 32, n),
        "column": rng.integers(0, 2, n),
        "location": rng.integers(0, 64, n),
        "chip_timestamp": rng.integers(0, 256, n),
        "tot_dec": rng.integers(0, 4096, n),
    }


def decode_records(records: np.ndarray, stitch: bool = False):
    """Frame readout records with the AstroPix 4 framing kernel and decode them."""
    cap = len(records) // 19 + 1
    out = [np.empty(cap, np.int64), np.empty(cap, np.uint32), np.empty(cap, np.uint64),
           np.empty(cap, np.uint32)]
    n, stop, code = _apx.frame_readouts(records, 0, len(records), *out)
    assert code == _apx.FRAME_END and stop == len(records)
    header_pos, readout_id, timestamp, length = (a[:n] for a in out)
    decoded = apx3.Apx3HitDecoder(stitch=stitch).decode(records, header_pos + 19, length,
                                                        readout_id, timestamp)
    values = apx3.Apx3HitColumns()(decoded, apx3.HITS_SCHEMA.names)
    return dict(zip(apx3.HITS_SCHEMA.names, values, strict=True)), decoded, readout_id


@pytest.mark.parametrize("gaps", [0, 1, "random"])
def test_write_round_trip(gaps):
    rng = np.random.default_rng(3)
    n = 5000
    fields = random_fields(rng, n)
    per_readout = rng.integers(1, 9, 1200)
    per_readout = per_readout[np.cumsum(per_readout) <= n]
    per_readout = np.append(per_readout, n - per_readout.sum())
    raw = apx3.encode_hits(fields)
    assert raw.shape == (n, 5)
    assert [unpack_hit(bytes(r))["tot_dec"] for r in raw[:50]] == fields["tot_dec"][:50].tolist()
    idle = rng.integers(0, 4, n) if gaps == "random" else gaps
    ids = np.arange(len(per_readout), dtype=np.uint32) * 3
    stamps = np.arange(len(per_readout), dtype=np.uint64) * 1_000_000 + 1_753_000_000 * 10**9
    records = readout_records(raw, ids, stamps, per_readout, idle_between=idle)
    for stitch in (False, True):
        got, decoded, readout_id = decode_records(records, stitch)
        np.testing.assert_array_equal(readout_id, ids)
        assert not decoded.status.any()
        for name, values in fields.items():
            np.testing.assert_array_equal(got[name], values, err_msg=name)
        np.testing.assert_array_equal(got["payload"], 4)
        np.testing.assert_array_equal(got["readout_id"], np.repeat(ids, per_readout))
        np.testing.assert_array_equal(got["wall_timestamp"], np.repeat(stamps, per_readout))
        order = np.arange(n) - np.repeat(np.cumsum(per_readout) - per_readout, per_readout)
        np.testing.assert_array_equal(got["decoding_order"], order)


def test_write_round_trip_with_msb_lsb_and_empty_readouts():
    fields = {"chip_id": np.array([0, 3]), "column": np.array([0, 1]),
              "location": np.array([8, 13]), "tot_msb": np.array([1, 0]),
              "tot_lsb": np.array([13, 255])}
    raw = apx3.encode_hits(fields)
    assert bytes(raw[0]) == make_hit(0, 0, 8, 0, 269)
    records = readout_records(raw, np.array([0, 1, 2], np.uint32),
                              np.zeros(3, np.uint64), np.array([1, 0, 1]))
    got, decoded, _ = decode_records(records)
    assert got["tot_dec"].tolist() == [269, 255] and got["readout_id"].tolist() == [0, 2]
    # the hit-less readout is idle bytes only: flagged as upstream fails on it
    assert [flags(s) for s in decoded.status] == [set(), {"decoder_failure"}, set()]


def test_encoder_matches_the_real_run(data_dir):
    _, df = read_run(data_dir / SAMPLE)
    raw = apx3.encode_hits({c: df[c].to_numpy() for c in df.columns})
    records = readout_records(raw, np.arange(len(df), dtype=np.uint32),
                              np.zeros(len(df), np.uint64), np.ones(len(df), np.int64))
    got, _, _ = decode_records(records)
    for column in ("chip_id", "column", "location", "tot_dec", "chip_timestamp"):
        np.testing.assert_array_equal(got[column], df[column].to_numpy(), err_msg=column)


@pytest.mark.parametrize(("change", "message"), [
    ({"payload": np.array([4, 7])}, r"payload must be 4 \(hit 11 has 7\)"),
    ({"chip_id": np.array([0, 32])}, r"chip_id must be below 32 \(hit 11\)"),
    ({"location": np.array([64, 0])}, r"location must be below 64 \(hit 10\)"),
    ({"tot_dec": np.array([0, 4096])}, r"tot_dec must be below 4096 \(hit 11\)"),
    ({"column": np.array([-1, 0])}, r"negative value \(hit 10\)"),
    ({"chip_timestamp": np.array([0.5, 1.0])}, "must be a 1-d integer array"),
])
def test_encoder_refuses_bad_values(change, message):
    fields = {"chip_id": np.array([0, 1]), "column": np.array([0, 1]),
              "location": np.array([1, 2]), "tot_dec": np.array([5, 6])}
    with pytest.raises(ValueError, match=message):
        apx3.encode_hits({**fields, **change}, first_index=10)


def test_encoder_and_records_refuse_bad_layouts():
    with pytest.raises(ValueError, match="missing column"):
        apx3.encode_hits({"chip_id": np.array([0])})
    raw = apx3.encode_hits({"chip_id": [0], "column": [0], "location": [1], "tot_dec": [2]})
    with pytest.raises(ValueError, match="trailing_idle >= 1"):
        readout_records(raw, [0], [0], [1], trailing_idle=0)
    with pytest.raises(ValueError, match="sum to the number of hits"):
        readout_records(raw, [0], [0], [2])
    with pytest.raises(ValueError, match="idle_between"):
        readout_records(raw, [0], [0], [1], idle_between=-1)


# -- .log files: chip version ----------------------------------------------------------------
@pytest.mark.parametrize(("header", "uid"), [
    ({"Namespace": {"chipVer": 3, "name": "run"}}, 3000),
    ({"Namespace": {"chipVer": 4}}, 4000),
    ({"Namespace": {"chipVer": "3"}}, 3000),
    ({"Namespace": {"name": "run"}}, 4000),
    ({}, 4000),
    ({"readout_uid": 3000, "Namespace": {"chipVer": 4}}, 3000),
])
def test_log_readout_uid(header, uid):
    assert log_readout_uid(header) == uid


@pytest.mark.parametrize("version", [2, 5, True, "three", 3.0])
def test_log_readout_uid_refuses_other_chip_versions(version):
    with pytest.raises(UnsupportedReadoutError, match="chipVer") as info:
        log_readout_uid({"Namespace": {"chipVer": version}}, path="run.log", offset=42)
    assert info.value.path == "run.log" and info.value.offset == 42



@pytest.mark.parametrize("version", ["{[1]: 2}", "-" * 5000 + "1", "0x" + "f" * 4000])
def test_log_readout_uid_refuses_hostile_chip_version_text(version):
    """chipVer text is evaluated as a literal: an unhashable dict, a nesting past
    Python's recursion limit, or an integer too long to print gave a TypeError,
    RecursionError or ValueError (and the CLI exit code of a bug) instead of the
    refusal; the refusal shows the text as written, shortened."""
    with pytest.raises(UnsupportedReadoutError, match="chipVer=") as info:
        log_readout_uid({"Namespace": {"chipVer": version}}, path="run.log", offset=42)
    assert info.value.path == "run.log" and info.value.offset == 42
    assert len(str(info.value)) < 300

# -- analysis: pairing row and column half-hits into pixel hits -------------------------------
def generated_pixel_hits(seed: int, n_readouts: int = 300):
    """Pixel hits with a known answer, and the half-hit table an AstroPix 3 chip sends.

    Within one readout and chip the true ToTs are at least 100 cycles (0.5 µs) apart;
    the row half reads 20 ± 10 cycles more than the column half (as in the real run).
    So every true pair differs by at most 0.15 µs and every false pair by at least
    0.35 µs: the greedy rule must find exactly the true pairs. Some pixel hits lose
    one half (a lone half-hit that must stay unmatched).
    """
    rng = np.random.default_rng(seed)
    pixels, halves = [], []
    for readout in range(n_readouts):
        k = int(rng.integers(1, 7))
        chips = rng.integers(0, 3, k)
        slots = rng.choice(30, k, replace=False)  # distinct ToT slots within the readout
        for chip, slot in zip(chips, slots, strict=True):
            tot = 200 + 100 * int(slot)
            row, column = int(rng.integers(0, 35)), int(rng.integers(0, 35))
            stamp = int(rng.integers(0, 256))
            tot_row = tot + 20 + int(rng.integers(-10, 11))
            tot_column = tot + int(rng.integers(-10, 11))
            fate = rng.random()  # < 0.1: the row half is lost; > 0.9: the column half
            if fate >= 0.1:
                halves.append((readout, chip, 0, row, tot_row, stamp))
            if fate <= 0.9:
                halves.append((readout, chip, 1, column, tot_column, stamp))
            if 0.1 <= fate <= 0.9:
                pixels.append((readout, chip, row, column, tot_row / 200, tot_column / 200))
    order = rng.permutation(len(halves))
    table = pd.DataFrame(halves, columns=["readout_id", "chip_id", "column", "location",
                                          "tot_dec", "chip_timestamp"])
    table = table.iloc[order].sort_values("readout_id", kind="stable").reset_index(drop=True)
    table["decoding_order"] = table.groupby("readout_id").cumcount()
    table["tot_us"] = table["tot_dec"] / 200.0
    truth = pd.DataFrame(pixels, columns=["readout_id", "chip_id", "row", "column",
                                          "tot_us_row", "tot_us_column"])
    return table, truth


def sorted_pixels(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["readout_id", "chip_id", "row", "column", "tot_us_row", "tot_us_column"]
    out = frame[columns].astype({"readout_id": "int64", "chip_id": "int64", "row": "int64",
                                 "column": "int64"})
    return out.sort_values(columns).reset_index(drop=True)


@pytest.mark.parametrize(("same_chip_timestamp", "limit"), [(True, None), (True, 0.25),
                                                            (False, 0.25)])
def test_match_rows_columns_finds_the_generated_pixels(same_chip_timestamp, limit):
    from bindf.analysis.apx import match_rows_columns

    halves, truth = generated_pixel_hits(1)
    pixels = match_rows_columns(halves, {"header": {"readout_uid": 3000}},
                                same_chip_timestamp=same_chip_timestamp,
                                max_tot_difference_us=limit)
    assert isinstance(pixels, pd.DataFrame)
    assert list(pixels.columns) == ["readout_id", "chip_id", "row", "column", "tot_us_row",
                                    "tot_us_column", "chip_timestamp", "decoding_order_row",
                                    "decoding_order_column"]
    assert len(pixels) == len(truth) > 500
    pd.testing.assert_frame_equal(sorted_pixels(pixels), sorted_pixels(truth))
    # in the order of the frame: by the earlier of the two half-hits
    first = np.minimum(pixels["decoding_order_row"], pixels["decoding_order_column"])
    keys = list(zip(pixels["readout_id"], first, strict=True))
    assert keys == sorted(keys)


def test_match_rows_columns_without_timestamp_or_limit_pairs_the_leftovers():
    from bindf.analysis.apx import match_rows_columns

    halves, truth = generated_pixel_hits(1)
    pixels = match_rows_columns(halves, same_chip_timestamp=False)
    # the true pairs are found first; lone halves of one readout and chip then pair up
    # with each other, however far apart their ToTs are
    found = pixels.merge(truth, on=list(truth.columns), how="inner")
    assert len(found) == len(truth) < len(pixels)
    extra = pixels.merge(truth, on=list(truth.columns), how="left", indicator=True)
    extra = extra[extra["_merge"] == "left_only"]
    assert ((extra["tot_us_row"] - extra["tot_us_column"]).abs() > 0.3).all()


def test_match_rows_columns_keeps_unmatched_halves_on_request():
    import polars as pl

    from bindf.analysis.apx import match_rows_columns

    halves, truth = generated_pixel_hits(2, n_readouts=100)
    pixels = match_rows_columns(pl.from_pandas(halves), keep_unmatched=True)
    assert isinstance(pixels, pl.DataFrame)
    lone_rows = pixels.filter(pl.col("column").is_null())
    lone_columns = pixels.filter(pl.col("row").is_null())
    paired = pixels.filter(pl.col("row").is_not_null() & pl.col("column").is_not_null())
    assert paired.height == len(truth)
    assert lone_rows.height == int((halves["column"] == 0).sum()) - len(truth) > 0
    assert lone_columns.height == int((halves["column"] == 1).sum()) - len(truth) > 0
    assert lone_rows["tot_us_column"].null_count() == lone_rows.height


def test_match_rows_columns_is_greedy_by_tot_with_ties_in_frame_order():
    from bindf.analysis.apx import match_rows_columns

    def frame(rows, columns):
        n = len(rows) + len(columns)
        return pd.DataFrame({"readout_id": [7] * n, "chip_id": [0] * n,
                             "column": [0] * len(rows) + [1] * len(columns),
                             "location": list(range(n)), "tot_us": rows + columns})

    # r1-c0 is the closest pair; r0 is left with c1 although c0 is r0's nearest column
    pixels = match_rows_columns(frame([1.0, 1.3], [1.2, 2.0]))
    assert pixels[["row", "column"]].values.tolist() == [[0, 3], [1, 2]]
    limited = match_rows_columns(frame([1.0, 1.3], [1.2, 2.0]), max_tot_difference_us=0.5)
    assert limited[["row", "column"]].values.tolist() == [[1, 2]]
    # equal differences: the earlier row half gets the earlier column half
    ties = match_rows_columns(frame([1.0, 1.0], [1.0, 1.0]))
    assert ties[["row", "column"]].values.tolist() == [[0, 2], [1, 3]]
    # other readouts or chips are never partners
    other = frame([1.0], [1.0])
    other.loc[1, "chip_id"] = 1
    assert len(match_rows_columns(other)) == 0
    assert len(match_rows_columns(frame([], []))) == 0
    with pytest.raises(ValueError, match="max_tot_difference_us"):
        match_rows_columns(frame([1.0], [1.0]), max_tot_difference_us=-1)
    with pytest.raises(ValueError, match="needs the column"):
        match_rows_columns(frame([1.0], [1.0]).drop(columns="location"))


def test_match_rows_columns_through_the_encoder_and_decoder():
    """Generated pixel hits → half-hits → payload bytes → kernel → pairs → the pixels."""
    from bindf.analysis.apx import hit_map, match_rows_columns

    halves, truth = generated_pixel_hits(3, n_readouts=200)
    raw = apx3.encode_hits({c: halves[c].to_numpy() for c in halves.columns})
    counts = halves.groupby("readout_id").size()
    records = readout_records(raw, counts.index.to_numpy(np.uint32),
                              np.zeros(len(counts), np.uint64), counts.to_numpy())
    got, _, _ = decode_records(records)
    pixels = match_rows_columns(pd.DataFrame(got), {"header": {"readout_uid": 3000}})
    pd.testing.assert_frame_equal(sorted_pixels(pixels), sorted_pixels(truth))
    info = {"header": {"readout_uid": 3000}}
    grid = hit_map(pixels, info)
    assert len(grid) == 35 * 35 and grid["hits"].sum() == len(truth)


def test_match_rows_columns_on_the_real_run(data_dir):
    from bindf.analysis.apx import match_rows_columns

    _, df = read_run(data_dir / SAMPLE)
    pixels = match_rows_columns(df)
    # every pixel hit pairs halves of one readout with one chip timestamp; no half is
    # used twice; this injection run fires row 8 / column 13
    assert 4000 < len(pixels) <= (df["column"] == 1).sum()
    assert not pixels.duplicated(["readout_id", "decoding_order_row"]).any()
    assert not pixels.duplicated(["readout_id", "decoding_order_column"]).any()
    assert (pixels.value_counts(["row", "column"]).index[0]) == (8, 13)
    assert str(pixels["wall_timestamp"].dtype) == "uint64"


def test_hits_per_readout_takes_the_wall_timestamp(data_dir):
    from bindf.analysis.apx import hits_per_readout

    _, df = read_run(data_dir / SAMPLE)
    table = hits_per_readout(df, {"header": {"readout_uid": 3000}})
    assert list(table.columns) == ["readout_id", "wall_timestamp", "hits"]
    assert table["hits"].sum() == 11_393 and len(table) == df["readout_id"].nunique()


# -- wiring: options, logs, writer, scans, dask ------------------------------------------------
def _readouts_of(path: Path) -> list[tuple[int, bytes]]:
    """(readout_id, payload) of every readout, parsed plainly."""
    data = path.read_bytes()
    pos = 10 + struct.unpack_from("<I", data, 6)[0]
    out = []
    while pos < len(data):
        _, rid, _, length = struct.unpack_from("<3sIQI", data, pos)
        out.append((rid, data[pos + 19 : pos + 19 + length]))
        pos += 19 + length
    return out


def test_stitch_option_per_generation(data_dir):
    import inspect

    assert "stitch" in inspect.signature(bindf.read_apx).parameters
    assert "stitch" in inspect.signature(bindf.read_apx_log).parameters
    ap4 = data_dir / "20250723_092534_data.apx"  # AstroPix 4
    default = bindf.read_apx(ap4)
    pd.testing.assert_frame_equal(bindf.read_apx(ap4, stitch=True), default)
    with pytest.raises(ValueError, match="only for AstroPix 3"):
        bindf.read_apx(ap4, stitch=False)
    with pytest.raises(TypeError, match="stitch"):
        bindf.read_apx(data_dir / SAMPLE, stitch="yes")


def test_scans_and_n_rows_follow_the_astropix3_schema(data_dir):
    import polars as pl

    lazy = pl.scan_apx(data_dir / SAMPLE, stitch=True)
    assert lazy.collect_schema()["decoding_order"] == pl.UInt16
    got = lazy.select("location", "tot_us").head(50).collect()
    full = bindf.read_apx(data_dir / SAMPLE, stitch=True)
    np.testing.assert_array_equal(got["location"].to_numpy(), full["location"][:50])
    assert len(bindf.read_apx(data_dir / SAMPLE, n_rows=7)) == 7


def test_dask_reads_an_astropix3_run(data_dir):
    pytest.importorskip("dask.dataframe")
    import bindf.dask

    ddf = bindf.dask.read_apx(data_dir / SAMPLE, stitch=True)
    pd.testing.assert_frame_equal(ddf.compute().reset_index(drop=True),
                                  bindf.read_apx(data_dir / SAMPLE, stitch=True))


@pytest.mark.parametrize("stitch", [False, True])
def test_write_apx_round_trips_astropix3(data_dir, tmp_path, stitch):
    df = bindf.read_apx(data_dir / SAMPLE, stitch=stitch)
    out = tmp_path / "copy.apx"
    bindf.write_apx(out, df, df.attrs["bindf"]["header"], idle_between=3)
    back = bindf.read_apx(out, stitch=stitch)
    assert back.attrs["bindf"]["header"] == df.attrs["bindf"]["header"]
    pd.testing.assert_frame_equal(back, df, check_like=False)
    # without a header (given or attached) the AstroPix 3 table is recognised by its columns
    bare_frame = df.drop(columns=["tot_msb", "tot_lsb"])
    bare_frame.attrs = {}
    bindf.write_apx(tmp_path / "bare.apx", bare_frame)
    bare = bindf.read_apx(tmp_path / "bare.apx")
    assert bare.attrs["bindf"]["header"] == {"readout_uid": 3000}
    pd.testing.assert_frame_equal(bare, df[bare.columns.tolist()])
    with pytest.raises(ValueError, match="missing AstroPix 3 hit column"):
        bindf.write_apx(tmp_path / "bad.apx", df.drop(columns=["location"]),
                        {"readout_uid": 3000})
    with pytest.raises(ValueError, match="4000 or 3000"):
        bindf.write_apx(tmp_path / "bad.apx", df, {"readout_uid": 2000})


def test_astropix3_log_is_read_through_chipver(data_dir, tmp_path):
    readouts = _readouts_of(data_dir / SAMPLE)[:200]
    lines = "".join(f"{rid}\t b'{payload.hex()}'\n" for rid, payload in readouts)
    log = tmp_path / "run.log"
    log.write_text("Namespace(name='vinj', chipVer=3, threshold=1030)\n" + lines)
    for stitch in (False, True):
        got = bindf.read_apx_log(log, stitch=stitch)
        assert got.attrs["bindf"]["header"]["readout_uid"] == 3000
        expected = bindf.read_apx(data_dir / SAMPLE, stitch=stitch)
        expected = expected[expected["readout_id"] < 200].reset_index(drop=True)
        expected["wall_timestamp"] = np.uint64(0)  # logs carry no readout time
        pd.testing.assert_frame_equal(got, expected, check_like=False)
    readout_table = bindf.read_apx_log(log, level="readouts")
    assert "wall_timestamp" in readout_table.columns and len(readout_table) == 200
    # the .apx made from the log decodes the same way
    from bindf.formats.apx_log import convert_apx_log

    convert_apx_log(str(log), str(tmp_path / "from_log.apx"))
    pd.testing.assert_frame_equal(bindf.read_apx(tmp_path / "from_log.apx"),
                                  bindf.read_apx_log(log))
    log.write_text("Namespace(name='vinj', chipVer=5)\n" + lines)
    with pytest.raises(UnsupportedReadoutError, match="chipVer=5"):
        bindf.read_apx_log(log)


def test_real_run_through_the_cli(data_dir, capsys):
    from bindf.cli import main

    assert main(["info", str(data_dir / SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "wall_timestamp" in out and "readout_uid: 3000" in out


def test_hit_fields_kernel_matches_reference():
    from bindf._kernels import _apx3, apx3_reference

    rng = np.random.default_rng(5)
    n = 9000  # two blocks of 4096 and a partial one
    hits = rng.integers(0, 256, (n, 5), dtype=np.uint8)
    hits[:256] = np.arange(256, dtype=np.uint8)[:, None]  # every byte value in every byte
    expected = [apx3_reference.hit_fields(bytes(h)) for h in hits]
    columns = {name: np.zeros(n, dtype) for name, dtype in apx3.Apx3HitColumns.word_columns.items()}
    for a, b in ((0, 7), (7, 4200), (4200, n)):
        _apx3.hit_fields(hits[a:b], **{k: v[a:b] for k, v in columns.items()})
    for name, values in columns.items():
        assert values.tolist() == [e[name] for e in expected], name
    with pytest.raises(ValueError, match="5 columns"):
        _apx3.hit_fields(np.zeros((2, 8), np.uint8))
    with pytest.raises(ValueError, match="tot_dec holds fewer"):
        _apx3.hit_fields(hits, tot_dec=np.zeros(3, np.uint16))


def test_hit_columns_in_parallel_equal_one_thread(monkeypatch):
    from bindf.formats import _apx_hits

    monkeypatch.setattr(_apx_hits, "PARALLEL_MIN_HITS", 50)
    rng = np.random.default_rng(8)
    n = 777
    decoded = apx3.Decoded3(n, rng.integers(0, 256, (n, 5), dtype=np.uint8),
                            rng.integers(0, 9, n, dtype=np.uint16),
                            rng.integers(0, 99, n, dtype=np.uint32),
                            rng.integers(0, 1 << 60, n, dtype=np.uint64),
                            np.zeros(0, np.uint8), np.zeros(0, np.uint32))
    names = list(apx3.HITS_SCHEMA.names)
    one = apx3.Apx3HitColumns()(decoded, names)
    many = apx3.Apx3HitColumns(threads=4)
    for a, b in zip(one, many(decoded, names), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
