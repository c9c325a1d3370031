"""AstroPix ``.apx`` reader, kernel and writer (docs/formats/apx.md).

Ground truth: the real run ``20250723_092534_data.apx`` and the upstream decoder's table of
it (``.csv``). Hand-made payloads cover each decoding rule; the compiled kernel is checked
against the pure-Python model ``bindf._kernels.apx_reference`` on random noisy payloads.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bindf
from bindf._kernels import _apx
from bindf._kernels import apx_reference as ref
from bindf.errors import (
    CorruptDataError,
    CorruptDataWarning,
    HeaderError,
    TruncatedFileWarning,
    UnknownFormatError,
    UnsupportedReadoutError,
)
from bindf.formats import _apx_hits as apx_hits
from bindf.formats import apx
from bindf.formats._apx_hits import WORD_COLUMNS

SAMPLE = "20250723_092534_data.apx"
GOLDEN = "20250723_092534_data.csv"

#: Hit-field dtypes, upstream column order.
HIT_DTYPES = {
    "chip_id": "uint8", "payload": "uint8", "readout_id": "uint32", "timestamp": "uint64",
    "decoding_order": "uint8", "row": "uint8", "column": "uint8", "ts_neg1": "uint8",
    "ts_coarse1": "uint16", "ts_fine1": "uint8", "ts_tdc1": "uint8", "ts_neg2": "uint8",
    "ts_coarse2": "uint16", "ts_fine2": "uint8", "ts_tdc2": "uint8", "ts_dec1": "uint32",
    "ts_dec2": "uint32", "tot_us": "float64",
}
FIELDS = [  # name, first bit, end bit (MSB first, after per-byte bit reversal)
    ("chip_id", 0, 5), ("payload", 5, 8), ("row", 8, 13), ("column", 13, 18),
    ("ts_neg1", 18, 19), ("ts_coarse1", 19, 33), ("ts_fine1", 33, 36), ("ts_tdc1", 36, 41),
    ("ts_neg2", 41, 42), ("ts_coarse2", 42, 56), ("ts_fine2", 56, 59), ("ts_tdc2", 59, 64),
]
STATUS_BITS = {name: 1 << i for i, name in enumerate(apx.STATUS_FLAGS)}


# -- helpers (independent of the code under test) -----------------------------------
def apx_file_bytes(readouts, header=None) -> bytes:
    """``.apx`` bytes from ``[(readout_id, timestamp, payload), ...]``."""
    text = json.dumps({"readout_uid": 4000} if header is None else header).encode()
    out = [b"%APXDF", struct.pack("<I", len(text)), text]
    for rid, ts, payload in readouts:
        out.append(b"\xfe\xdc\xba" + struct.pack("<IQI", rid, ts, len(payload)) + bytes(payload))
    return b"".join(out)


def write_file(tmp_path: Path, data: bytes, name: str = "run.apx") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def encode_hit(**fields: int) -> bytes:
    """The 8 raw bytes of a hit, via a bit string (slow and obviously right)."""
    fields.setdefault("payload", 7)
    bits = ["0"] * 64
    for name, start, end in FIELDS:
        value = fields.get(name, 0)
        bits[start:end] = f"{value:0{end - start}b}"
    word = "".join(bits)
    return bytes(int(word[8 * i : 8 * i + 8][::-1], 2) for i in range(8))


def decode_hit(raw: bytes) -> dict[str, int]:
    bits = "".join(f"{b:08b}"[::-1] for b in raw)
    return {name: int(bits[start:end], 2) for name, start, end in FIELDS}


def gray_to_int(g: int) -> int:
    value = 0
    while g:
        value ^= g
        g >>= 1
    return value


def expected_derived(fields: dict[str, int]) -> tuple[int, int, float]:
    d1 = gray_to_int((fields["ts_coarse1"] << 3) | fields["ts_fine1"])
    d2 = gray_to_int((fields["ts_coarse2"] << 3) | fields["ts_fine2"])
    if d2 < d1:
        d2 += 1 << 17
    return d1, d2, (d2 - d1) / 20.0


def hit(seed: int, start_inside: bool = False, chip: int = 0) -> bytes:
    """A deterministic hit; with ``start_inside`` one of bytes 1..7 is a start byte."""
    rng = random.Random(seed)
    while True:
        raw = encode_hit(chip_id=chip, row=rng.randrange(32), column=rng.randrange(32),
                         ts_neg1=rng.randrange(2), ts_coarse1=rng.randrange(1 << 14),
                         ts_fine1=rng.randrange(8), ts_tdc1=rng.randrange(32),
                         ts_neg2=rng.randrange(2), ts_coarse2=rng.randrange(1 << 14),
                         ts_fine2=rng.randrange(8), ts_tdc2=rng.randrange(32))
        inside = any(ref.is_start_byte(b) for b in raw[1:])
        if inside == start_inside and 0xBC not in raw and 0xFF not in raw:
            return raw
        rng.random()


def kernel_decode(payloads, carry=None):
    """Run the compiled kernel over consecutive payloads held in one buffer."""
    lens = np.array([len(p) for p in payloads], dtype=np.uint32)
    buf = np.frombuffer(b"".join(payloads) or b"\0", dtype=np.uint8)
    pos = np.zeros(len(payloads), dtype=np.int64)
    if len(payloads) > 1:
        pos[1:] = np.cumsum(lens[:-1], dtype=np.int64)
    decoder = apx.HitDecoder()
    if carry is not None:
        decoder.carry[: len(carry)] = np.frombuffer(carry, np.uint8)
        decoder.carry_len = len(carry)
    n = len(payloads)
    decoded = decoder.decode(buf, pos, lens, np.arange(n, dtype=np.uint32),
                             np.arange(n, dtype=np.uint64) * 10)
    hits = [bytes(h) for h in decoded.hits]
    return hits, decoded, decoder.carried


def reference_decode(payloads, carry=None):
    results, extra = ref.decode_payloads(payloads, carry)
    return [h for r in results for h in r.hits], results, extra


def assert_kernel_matches_reference(payloads, carry=None):
    hits, decoded, carried = kernel_decode(payloads, carry)
    ref_hits, results, ref_carry = reference_decode(payloads, carry)
    assert hits == ref_hits
    assert decoded.status.tolist() == [r.status for r in results]
    assert decoded.readout_hits.tolist() == [len(r.hits) for r in results]
    assert decoded.hit_order.tolist() == [i for r in results for i in range(len(r.hits))]
    assert decoded.hit_readout_id.tolist() == [k for k, r in enumerate(results) for _ in r.hits]
    assert carried == ref_carry
    return results


IDLE2 = b"\xbc\xbc"
TAIL = b"\xbc" * 6


# -- the real run ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden(data_dir: Path) -> tuple[dict, pd.DataFrame]:
    path = data_dir / GOLDEN
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("#")
    # integers as int64 (timestamps ~1.75e18 would lose digits as float), then exact compare
    table = pd.read_csv(path, comment="#", dtype={c: "int64" for c in HIT_DTYPES
                                                  if c != "tot_us"})
    return json.loads(first[1:]), table


def test_real_run_matches_upstream_table(data_dir, golden):
    header, table = golden
    df = bindf.read_apx(data_dir / SAMPLE)
    assert list(df.columns) == list(HIT_DTYPES) == list(table.columns)
    assert {c: str(t) for c, t in df.dtypes.items()} == HIT_DTYPES
    assert len(df) == len(table) == 776
    for column in HIT_DTYPES:
        if column == "tot_us":
            np.testing.assert_array_equal(df[column].to_numpy(), table[column].to_numpy())
        else:
            np.testing.assert_array_equal(df[column].to_numpy().astype(np.int64),
                                          table[column].to_numpy(), err_msg=column)
    assert df.attrs["bindf"]["header"] == header
    assert df.attrs["bindf"]["format"] == "apx"


def test_real_run_timestamps_are_exact_uint64(data_dir, golden):
    _, table = golden
    df = bindf.read_apx(data_dir / SAMPLE, output="polars")
    assert df.schema["timestamp"] == pl.UInt64
    assert df["timestamp"][0] == 1753255536707629800 == table["timestamp"][0]


def test_real_run_header_kept_verbatim(data_dir):
    raw = (data_dir / SAMPLE).read_bytes()
    (length,) = struct.unpack_from("<I", raw, 6)
    expected = json.loads(raw[10 : 10 + length])
    assert bindf.read_header(data_dir / SAMPLE) == expected
    assert expected["readout_uid"] == 4000 and "configuration" in expected and "args" in expected
    frame = bindf.read_apx(data_dir / SAMPLE, output="polars")
    assert frame.bindf.header == expected
    table = bindf.read_apx(data_dir / SAMPLE, output="arrow")
    assert json.loads(table.schema.metadata[b"bindf.header"]) == expected


def test_real_run_readout_table(data_dir):
    readouts = bindf.read_apx(data_dir / SAMPLE, level="readouts")
    hits = bindf.read_apx(data_dir / SAMPLE)
    assert list(readouts.columns) == [
        "readout_id", "timestamp", "payload_length", "n_hits", "status", *apx.STATUS_FLAGS,
        "byte_offset",
    ]
    assert str(readouts["status"].dtype) == "uint8"
    assert str(readouts["readout_id"].dtype) == "uint32"
    assert str(readouts["timestamp"].dtype) == "uint64"
    assert str(readouts["byte_offset"].dtype) == "uint64"
    assert all(str(readouts[f].dtype) == "bool" for f in apx.STATUS_FLAGS)
    assert len(readouts) == 775
    assert readouts["n_hits"].sum() == len(hits) == 776
    assert (readouts["status"] == 0).all()
    assert readouts.loc[readouts["readout_id"] == 423, "n_hits"].item() == 2
    raw = (data_dir / SAMPLE).read_bytes()
    for offset, length in zip(readouts["byte_offset"], readouts["payload_length"], strict=True):
        assert raw[offset : offset + 3] == b"\xfe\xdc\xba"
        assert struct.unpack_from("<I", raw, offset + 15)[0] == length
    np.testing.assert_array_equal(
        np.repeat(readouts["readout_id"].to_numpy(), readouts["n_hits"].to_numpy()),
        hits["readout_id"].to_numpy(),
    )


def test_detected_by_magic(data_dir, tmp_path):
    renamed = write_file(tmp_path, (data_dir / SAMPLE).read_bytes(), "run.bin")
    assert len(bindf.read(renamed)) == 776
    assert bindf.detect_format(bindf._source.Source(str(renamed))).name == "apx"


# -- the worked example ---------------------------------------------------------------
WORKED = bytes.fromhex("bcbc e05042030620d701 bcbc e05041130620d701 bcbcbcbcbcbc ffffffff")


def test_tot_us_divides_by_the_kernels_clock_rate(tmp_path):
    """tot_us is computed in the kernel; ``_apx.CLOCK_CYCLES_PER_US`` is the rate it uses
    (read_astep's ``tot_mode="apx"`` takes it from there)."""
    from bindf.formats import astep

    assert _apx.CLOCK_CYCLES_PER_US == 20.0  # upstream's 20 MHz clock
    assert astep._APX_CYCLES_PER_US == _apx.CLOCK_CYCLES_PER_US
    df = bindf.read_apx(write_file(tmp_path, apx_file_bytes([(7, 1234, WORKED)])))
    ticks = df["ts_dec2"].to_numpy(np.float64) - df["ts_dec1"].to_numpy(np.float64)
    np.testing.assert_array_equal(df["tot_us"], ticks / _apx.CLOCK_CYCLES_PER_US)


def test_worked_example(tmp_path):
    path = write_file(tmp_path, apx_file_bytes([(7, 1234, WORKED)]))
    df = bindf.read_apx(path)
    assert len(df) == 2
    first, second = df.iloc[0], df.iloc[1]
    assert (first.chip_id, first.payload, first.row, first.column) == (0, 7, 1, 9)
    assert (first.ts_dec1, first.ts_dec2, first.tot_us) == (14331, 14952, 31.05)
    assert (second.row, second.column) == (1, 10)
    assert (second.ts_dec1, second.ts_dec2, second.tot_us) == (14084, 14952, 43.4)
    assert df["decoding_order"].tolist() == [0, 1]
    assert df["readout_id"].tolist() == [7, 7] and df["timestamp"].tolist() == [1234, 1234]
    for k in range(2):  # the independent bit-string decoder agrees on every raw field
        raw = WORKED[2 + 10 * k : 10 + 10 * k]
        for name, value in decode_hit(raw).items():
            assert df[name].iloc[k] == value, name
    readout = bindf.read_apx(path, level="readouts").iloc[0]
    assert readout.payload_length == len(WORKED) and readout.status == 0


def test_rollover_and_gray_decoding(tmp_path):
    # ts_dec2 < ts_dec1 gets 2**17 added; values are Gray codes of (coarse << 3 | fine)
    fields = {"ts_coarse1": 0x3FFF, "ts_fine1": 5, "ts_coarse2": 1, "ts_fine2": 2}
    raw = encode_hit(**fields)
    path = write_file(tmp_path, apx_file_bytes([(0, 0, IDLE2 + raw + TAIL)]))
    row = bindf.read_apx(path).iloc[0]
    d1, d2, tot = expected_derived(decode_hit(raw))
    assert d2 > 1 << 17  # rolled over
    assert (row.ts_dec1, row.ts_dec2, row.tot_us) == (d1, d2, tot)


# -- decoding rule by rule (hand-made payloads) ------------------------------------------
def test_no_idle_between_hits():
    h1, h2, h3 = hit(1), hit(2), hit(3)
    results = assert_kernel_matches_reference([IDLE2 + h1 + h2 + h3 + TAIL])
    assert results[0].hits == [h1, h2, h3] and results[0].status == 0


def test_hit_split_across_two_readouts():
    h1, h2, h3 = hit(1), hit(2), hit(3)
    first = IDLE2 + h1 + h2[:3]  # ends inside h2: 3 extra bytes with a valid start byte
    second = h2[3:] + IDLE2 + h3 + TAIL  # begins with the 5 orphan bytes
    hits, decoded, _ = kernel_decode([first, second])
    assert hits == [h1, h2, h3]
    assert decoded.status.tolist() == [STATUS_BITS["extra_bytes_kept"],
                                       STATUS_BITS["orphans_matched"]]
    assert decoded.hit_readout_id.tolist() == [0, 1, 1]  # re-assembled hit: second readout
    assert decoded.hit_order.tolist() == [0, 0, 1]  # ... with decoding_order 0
    assert_kernel_matches_reference([first, second])


def test_split_hit_with_idle_after_orphans_and_leading_idle():
    h1, h2 = hit(4), hit(5)
    second = IDLE2 + h1[2:] + b"\xbc\xbc\xbc" + h2 + TAIL  # trailing idle of orphans stripped
    results = assert_kernel_matches_reference([second], carry=h1[:2])
    assert results[0].hits == [h1, h2]
    assert results[0].status == STATUS_BITS["orphans_matched"]


def test_first_hit_missing_two_bytes():
    h1, h2 = hit(6), hit(7)
    payload = IDLE2 + h1[2:] + h2 + TAIL  # the readout starts 2 bytes into a hit
    no_carry = assert_kernel_matches_reference([payload])
    assert no_carry[0].hits == [h2] and no_carry[0].status == STATUS_BITS["orphans_unused"]
    wrong_carry = assert_kernel_matches_reference([payload], carry=h1[:3])
    assert wrong_carry[0].hits == [h2] and wrong_carry[0].status == STATUS_BITS["orphans_dropped"]
    matched = assert_kernel_matches_reference([payload], carry=h1[:2])
    assert matched[0].hits == [h1, h2]


def test_incomplete_hit_dropped():
    # a hit cut after 6 bytes, directly followed by a complete hit: the tentative hit
    # holds the next start byte at k = 6 and the byte after it is not a start byte
    h1, h2, h3 = hit(8), hit(9), hit(10)
    payload = IDLE2 + h1[:6] + h2 + b"\xbc" + h3 + TAIL
    results = assert_kernel_matches_reference([payload])
    assert results[0].hits == [h2, h3]
    assert results[0].status == STATUS_BITS["incomplete_hit_dropped"]


def test_start_byte_inside_a_legitimate_hit_is_kept():
    h1, h2 = hit(11, start_inside=True), hit(12)
    for payload in (IDLE2 + h1 + h2 + TAIL, IDLE2 + h1 + b"\xbc\xbc" + h2 + TAIL,
                    IDLE2 + h2 + h1 + TAIL):
        results = assert_kernel_matches_reference([payload])
        assert sorted(results[0].hits) == sorted([h1, h2])
        assert results[0].status == 0


def test_padding_runs_between_hits():
    h1, h2, h3 = hit(13), hit(14), hit(15)
    payload = b"\xff\xbc\xff" + h1 + b"\xff\xff\xbc" + h2 + b"\xbc\xff" * 3 + h3 + TAIL + b"\xff" * 9
    results = assert_kernel_matches_reference([payload])
    assert results[0].hits == [h1, h2, h3] and results[0].status == 0


def test_padding_after_a_hit_holding_a_start_byte_drops_it():
    # upstream's look-ahead skips only idle bytes: 0xFF after a hit that contains a start
    # byte makes it "incomplete" (kept as a quirk)
    h1, h2 = hit(16, start_inside=True), hit(17)
    results = assert_kernel_matches_reference([IDLE2 + h1 + b"\xff" + h2 + TAIL])
    assert h2 in results[0].hits and h1 not in results[0].hits
    assert results[0].status & STATUS_BITS["incomplete_hit_dropped"]


def test_payload_of_only_idle_bytes_is_a_decoder_failure():
    h1, h2 = hit(18), hit(19)
    readouts = [IDLE2 + h1 + h2[:4], b"\xbc" * 12, h2[4:] + IDLE2 + h1 + TAIL]
    hits, decoded, _ = kernel_decode(readouts)
    assert decoded.status.tolist() == [STATUS_BITS["extra_bytes_kept"],
                                       STATUS_BITS["decoder_failure"],
                                       STATUS_BITS["orphans_unused"]]  # carry was reset
    assert hits == [h1, h1]
    assert_kernel_matches_reference(readouts)


def test_empty_payload_is_a_decoder_failure():
    h1 = hit(20)
    readouts = [IDLE2 + h1 + h1[:2], b"", b"\xff\xff", IDLE2 + h1 + TAIL]
    hits, decoded, _ = kernel_decode(readouts)
    assert decoded.status.tolist() == [STATUS_BITS["extra_bytes_kept"],
                                       STATUS_BITS["decoder_failure"],
                                       STATUS_BITS["decoder_failure"], 0]
    assert decoded.readout_hits.tolist() == [1, 0, 0, 1]
    assert_kernel_matches_reference(readouts)


def test_complete_hit_ending_the_payload_is_extra_bytes():
    # the upstream ">=" quirk: c + 8 >= n also catches a complete final hit
    h1, h2, h3 = hit(21), hit(22), hit(23)
    readouts = [IDLE2 + h1 + h2, IDLE2 + h3 + TAIL]
    hits, decoded, carried = kernel_decode(readouts)
    assert hits == [h1, h3]  # h2 is lost: the next readout starts with a start byte
    assert decoded.status.tolist() == [STATUS_BITS["extra_bytes_kept"], 0]
    assert carried is None
    _, _, carried = kernel_decode(readouts[:1])
    assert carried == h2
    # with orphans after it, 8 + len(orphans) != 8: dropped
    results = assert_kernel_matches_reference([readouts[0], b"\x01\x02" + h3 + TAIL])
    assert results[1].status == STATUS_BITS["orphans_dropped"]


def test_invalid_extra_bytes():
    h1 = hit(24)
    results = assert_kernel_matches_reference([IDLE2 + h1 + b"\x12\x34\x56"])
    assert results[0].hits == [h1] and results[0].status == STATUS_BITS["extra_bytes_invalid"]


def test_bytes_left_unvisited():
    h1, h2 = hit(25), hit(26)
    results = assert_kernel_matches_reference([IDLE2 + h1 + b"\x12\x34\x56" + h2 + TAIL])
    assert results[0].hits == [h1, h2] and results[0].status == STATUS_BITS["bytes_unvisited"]


def test_failures_keep_the_hits_before_them():
    h1 = hit(27)
    no_start = IDLE2 + h1 + bytes(range(0x10, 0x1A))  # rule 3.3 runs off the end
    short = IDLE2 + h1 + bytes(range(0x10, 0x18)) + b"\xe0\x01\x02"  # hit of 3 bytes
    orphans_only = b"\x01\x02\x03" + b"\xbc" * 4  # no start byte after the orphans
    for payload, bits in ((no_start, {"bytes_unvisited", "decoder_failure"}),
                          (short, {"bytes_unvisited", "decoder_failure"}),
                          (orphans_only, {"decoder_failure"})):
        results = assert_kernel_matches_reference([payload], carry=h1[:5])
        assert results[0].status == sum(STATUS_BITS[b] for b in bits)
        assert results[0].hits == ([] if payload is orphans_only else [h1])
        assert results[0].extra is None


def test_decoding_order_saturates():
    payload = IDLE2 + hit(28) * 300 + TAIL
    hits, decoded, _ = kernel_decode([payload])
    assert len(hits) == 300
    assert decoded.hit_order[:256].tolist() == list(range(256))
    assert set(decoded.hit_order[255:].tolist()) == {255}


# -- kernel vs reference on noisy payloads -------------------------------------------
def noisy_payloads(rng: random.Random, n: int) -> list[bytes]:
    """Random readouts: streams of hits cut anywhere, plus idle/padding runs and junk."""
    payloads = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.15:
            payloads.append(bytes(rng.choice([0xBC, 0xFF, 0xE0, 0x00, rng.randrange(256)])
                                  for _ in range(rng.randrange(24))))
            continue
        parts = [b"\xbc" * rng.choice([0, 0, 1, 2, 3])]
        for _ in range(rng.randrange(6)):
            h = hit(rng.randrange(10_000), start_inside=rng.random() < 0.3,
                    chip=rng.randrange(31))
            if rng.random() < 0.2:  # truncated hit
                h = h[: rng.randrange(1, 8)] if rng.random() < 0.5 else h[rng.randrange(1, 8):]
            parts.append(h)
            parts.append(rng.choice([b"", b"", b"\xbc", b"\xbc\xbc", b"\xff", b"\xff\xbc\xff",
                                     bytes([rng.randrange(256)])]))
        payload = b"".join(parts)
        if rng.random() < 0.4:
            payload = payload[rng.randrange(len(payload) + 1):]
        if rng.random() < 0.4:
            payload = payload[: rng.randrange(len(payload) + 1)]
        payloads.append(payload + b"\xff" * rng.choice([0, 0, 2]))
    return payloads


def test_kernel_matches_reference_on_noisy_payloads():
    rng = random.Random(20250723)
    seen = 0
    for _ in range(400):
        payloads = noisy_payloads(rng, rng.randrange(1, 9))
        carry = rng.choice([None, None, b"\xe0", bytes([0xE3]) + bytes(4), hit(1)[:7]])
        for r in assert_kernel_matches_reference(payloads, carry):
            seen |= r.status
    assert seen == 0xFF  # every status bit was exercised


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6),
       st.one_of(st.none(), st.binary(min_size=1, max_size=8)))
def test_kernel_matches_reference_on_random_bytes(payloads, carry):
    assert_kernel_matches_reference(payloads, carry)


def test_kernel_groupings_give_identical_hits():
    rng = random.Random(7)
    payloads = noisy_payloads(rng, 60)
    whole, _, _ = kernel_decode(payloads)
    for size in (1, 3, 7):
        decoder = apx.HitDecoder()
        hits = []
        for start in range(0, len(payloads), size):
            group = payloads[start : start + size]
            buf = np.frombuffer(b"".join(group) or b"\0", np.uint8)
            lens = np.array([len(p) for p in group], np.uint32)
            pos = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)[:-1]]).astype(np.int64)
            decoded = decoder.decode(buf, pos, lens, np.zeros(len(group), np.uint32),
                                     np.zeros(len(group), np.uint64))
            hits += [bytes(h) for h in decoded.hits]
        assert hits == whole


@pytest.mark.parametrize("isa", _apx.HIT_FIELDS_ISAS)
def test_hit_fields_kernel_matches_reference(isa):
    # every bit pattern of each field, then random words; the loops' blocks (1024 hits
    # for "planes", 2048 for "words") and AVX2's 32-hit vectors are cut inside (n is not
    # a multiple), and the columns are filled one hit range at a time (one hit: only a
    # vector loop's tail). Each loop this CPU runs; "baseline" and "words" always.
    hit_fields = functools.partial(_apx.hit_fields, isa=isa)
    rng = np.random.default_rng(17)
    n = 5000
    hits = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    hits[:256] = np.arange(256, dtype=np.uint8)[:, None]
    expected = [ref.hit_fields(bytes(h)) for h in hits]
    columns = {name: np.zeros(n, dtype) for name, dtype in WORD_COLUMNS.items()}
    for a, b in ((0, 1), (1, 2049), (2049, n)):
        hit_fields(hits[a:b], **{k: v[a:b] for k, v in columns.items()})
    for name, values in columns.items():
        assert values.tolist() == [e[name] for e in expected], name
    # a projection writes only what it is given
    row = np.zeros(n, np.uint8)
    hit_fields(hits, row=row)
    assert np.array_equal(row, columns["row"])
    # the Gray-decoded stamps and ToT, alone or together: an unwanted stamp goes to the
    # kernel's scratch, and tot_us is computed from the stamps either way
    stamps = ("ts_dec1", "ts_dec2", "tot_us")
    for wanted in [(name,) for name in stamps] + [("ts_dec1", "tot_us"), ("ts_dec2", "tot_us")]:
        some = {name: np.zeros(n, WORD_COLUMNS[name]) for name in wanted}
        hit_fields(hits, **some)
        for name, values in some.items():
            assert np.array_equal(values, columns[name]), (wanted, name)


def test_hit_fields_kernel_refuses_short_outputs():
    hits = np.zeros((3, 8), np.uint8)
    with pytest.raises(ValueError, match="tot_us holds fewer"):
        _apx.hit_fields(hits, tot_us=np.zeros(2))
    with pytest.raises(ValueError, match="8 columns"):
        _apx.hit_fields(np.zeros((3, 7), np.uint8))
    _apx.hit_fields(np.zeros((0, 8), np.uint8), row=np.zeros(0, np.uint8))  # nothing to do


def test_hit_fields_kernel_runs_only_instruction_sets_this_cpu_has():
    assert _apx.HIT_FIELDS_ISAS[-2:] == ("baseline", "words")  # built and run everywhere
    assert set(_apx.HIT_FIELDS_ISAS) <= {"avx512", "avx2", "baseline", "words"}
    hits = np.zeros((3, 8), np.uint8)
    with pytest.raises(ValueError, match="isa must be one of"):
        _apx.hit_fields(hits, row=np.zeros(3, np.uint8), isa="sse9")
    missing = {"avx512", "avx2"} - set(_apx.HIT_FIELDS_ISAS)
    for isa in missing:  # never run where it would be an illegal instruction
        with pytest.raises(ValueError, match="on this machine"):
            _apx.hit_fields(hits, row=np.zeros(3, np.uint8), isa=isa)


def test_hit_columns_in_parallel_equal_one_thread(monkeypatch):
    monkeypatch.setattr(apx_hits, "PARALLEL_MIN_HITS", 100)
    rng = np.random.default_rng(3)
    n = 1001
    decoded = apx_hits.Decoded(n, rng.integers(0, 256, (n, 8), dtype=np.uint8),
                               rng.integers(0, 9, n, dtype=np.uint8),
                               rng.integers(0, 99, n, dtype=np.uint32),
                               rng.integers(0, 1 << 60, n, dtype=np.uint64),
                               np.zeros(0, np.uint8), np.zeros(0, np.uint32))
    names = list(apx.HITS_SCHEMA.names)
    one = apx_hits.HitColumns(threads=1)(decoded, names)
    many = apx_hits.HitColumns(threads=3)
    for a, b in zip(one, many(decoded, names), strict=True):
        assert np.array_equal(a, b)


def test_kernel_is_memory_safe_on_bad_arguments():
    buf = np.frombuffer(IDLE2 + hit(1) + TAIL, np.uint8)
    args = dict(readout_id=np.zeros(1, np.uint32), timestamp=np.zeros(1, np.uint64),
                carry=np.zeros(8, np.uint8), carry_len=-1, hits=np.zeros((4, 8), np.uint8),
                hit_order=np.zeros(4, np.uint8), hit_readout_id=np.zeros(4, np.uint32),
                hit_timestamp=np.zeros(4, np.uint64), status=np.zeros(1, np.uint8),
                n_hits=np.zeros(1, np.uint32))
    good = (np.array([0], np.int64), np.array([len(buf)], np.uint32))
    assert _apx.decode_hits(buf, *good, *args.values())[0] == 1
    for pos, length in ((-1, 4), (len(buf) + 1, 0), (2, len(buf))):
        with pytest.raises(ValueError, match="outside the buffer"):
            _apx.decode_hits(buf, np.array([pos], np.int64), np.array([length], np.uint32),
                             *args.values())
    small = dict(args, hits=np.zeros((0, 8), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        _apx.decode_hits(buf, *good, *small.values())
    with pytest.raises(ValueError, match="carry_len"):
        _apx.decode_hits(buf, *good, *dict(args, carry_len=9).values())


def test_frame_kernel_on_random_bytes():
    rng = np.random.default_rng(3)
    out = [np.zeros(16, np.int64), np.zeros(16, np.uint32), np.zeros(16, np.uint64),
           np.zeros(16, np.uint32)]
    for _ in range(300):
        data = rng.integers(0, 256, rng.integers(0, 80)).astype(np.uint8)
        if rng.random() < 0.5 and len(data) >= 3:
            data[:3] = (0xFE, 0xDC, 0xBA)
        n, stop, code = _apx.frame_readouts(data, 0, len(data), *out)
        readouts, ref_stop, why = ref.split_readouts(data.tobytes(), 0)
        assert n == len(readouts) and stop == ref_stop
        assert code == {"end": _apx.FRAME_END, "truncated": _apx.FRAME_INCOMPLETE,
                        "bad_marker": _apx.FRAME_BAD_MARKER}[why]


def test_frame_kernel_stops_when_full_and_resumes():
    data = np.frombuffer(apx_file_bytes([(i, i, b"\xbc" * i) for i in range(10)])[-(19 * 10 + 45):],
                         np.uint8)
    out = [np.zeros(3, np.int64), np.zeros(3, np.uint32), np.zeros(3, np.uint64),
           np.zeros(3, np.uint32)]
    pos, ids = 0, []
    while True:
        n, pos, code = _apx.frame_readouts(data, pos, len(data), *out)
        ids += out[1][:n].tolist()
        if code != _apx.FRAME_FULL:
            break
    assert code == _apx.FRAME_END and ids == list(range(10))


# -- files: batching, chunking, threads, lazy scans ----------------------------------
def stream_split_into_readouts(rng: random.Random, n_hits: int) -> tuple[list[bytes], int]:
    """One continuous chip byte stream cut at random points: many hits span readouts."""
    parts = [IDLE2]
    for k in range(n_hits):
        parts.append(hit(k, start_inside=rng.random() < 0.3, chip=rng.randrange(4)))
        parts.append(b"\xbc" * rng.choice([0, 0, 1, 2]))
    stream = b"".join(parts)
    cuts = sorted(rng.sample(range(1, len(stream)), len(stream) // 20))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)], n_hits


@pytest.fixture(scope="module")
def split_run(tmp_path_factory) -> Path:
    payloads, _ = stream_split_into_readouts(random.Random(11), 400)
    path = tmp_path_factory.mktemp("apx") / "split.apx"
    path.write_bytes(apx_file_bytes([(i, 10**18 + i, p) for i, p in enumerate(payloads)]))
    return path


def test_split_run_matches_reference(split_run):
    raw = split_run.read_bytes()
    (length,) = struct.unpack_from("<I", raw, 6)
    readouts, _, why = ref.split_readouts(raw, 10 + length)
    assert why == "end"
    hits, results, _ = reference_decode([r.payload for r in readouts])
    df = bindf.read_apx(split_run, output="polars")
    assert df["row"].to_list() == [decode_hit(h)["row"] for h in hits]
    statuses = bindf.read_apx(split_run, level="readouts", output="polars")["status"].to_list()
    assert statuses == [r.status for r in results]
    assert any(s & STATUS_BITS["orphans_matched"] for s in statuses)


@pytest.mark.parametrize("options", [
    {"batch_size": 1}, {"batch_size": 3}, {"batch_size": 7},
    {"chunk_bytes": 19}, {"chunk_bytes": 64, "batch_size": 5}, {"chunk_bytes": 1000},
    {"threads": False}, {"threads": False, "batch_size": 3},
])
def test_batched_equals_whole(split_run, data_dir, options):
    for path in (split_run, data_dir / SAMPLE):
        whole = bindf.read_apx(path, output="arrow")
        batched = bindf.read_apx(path, output="arrow", **options)
        assert batched.equals(whole)
        readouts = bindf.read_apx(path, output="arrow", level="readouts")
        assert bindf.read_apx(path, output="arrow", level="readouts", **options).equals(readouts)


def test_chunked_iteration(split_run):
    whole = bindf.read_apx(split_run, output="polars")
    pieces = list(bindf.read_apx(split_run, output="polars", chunksize=50))
    assert all(p.height <= 50 for p in pieces)
    assert pl.concat(pieces).equals(whole)
    batches = list(bindf.iter_batches(split_run, batch_size=7))
    assert sum(b.num_rows for b in batches) == whole.height


def test_projection_and_n_rows(split_run):
    whole = bindf.read_apx(split_run, output="polars")
    part = bindf.read_apx(split_run, output="polars", columns=["tot_us", "readout_id", "row"])
    assert part.columns == ["tot_us", "readout_id", "row"]
    assert part.equals(whole.select(["tot_us", "readout_id", "row"]))
    assert bindf.read_apx(split_run, output="polars", n_rows=17).equals(whole.head(17))
    for name in whole.columns:  # every column alone equals the full read's
        assert bindf.read_apx(split_run, output="polars", columns=[name]).equals(whole.select(name))


def test_polars_scan_matches_eager(split_run, data_dir):
    for path in (split_run, data_dir / SAMPLE):
        eager = bindf.read_apx(path, output="polars")
        lazy = pl.scan_apx(path)
        assert lazy.collect().equals(eager)
        assert lazy.select(["row", "column"]).collect().equals(eager.select(["row", "column"]))
        assert lazy.head(10).collect().equals(eager.head(10))
        query = lazy.filter(pl.col("tot_us") > 50).select(["readout_id", "tot_us"])
        assert query.collect().equals(
            eager.filter(pl.col("tot_us") > 50).select(["readout_id", "tot_us"]))
        assert (lazy.filter(pl.col("decoding_order") == 1).head(3).collect()
                .equals(eager.filter(pl.col("decoding_order") == 1).head(3)))
        readouts = pl.scan_apx(path, level="readouts")
        assert readouts.collect().equals(bindf.read_apx(path, level="readouts", output="polars"))
        assert (readouts.filter(pl.col("n_hits") > 1).select("readout_id").collect()
                .equals(bindf.read_apx(path, level="readouts", output="polars")
                        .filter(pl.col("n_hits") > 1).select("readout_id")))


def test_pandas_registration(data_dir):
    df = pd.read_apx(data_dir / SAMPLE, columns=["row", "column"])
    assert list(df.columns) == ["row", "column"] and len(df) == 776


def test_options_are_validated(data_dir):
    with pytest.raises(ValueError, match="level"):
        bindf.read_apx(data_dir / SAMPLE, level="pixels")
    with pytest.raises(TypeError, match="unexpected option"):
        bindf.read_apx(data_dir / SAMPLE, layout="dense")
    with pytest.raises(ValueError, match="chunk_bytes"):
        bindf.read_apx(data_dir / SAMPLE, chunk_bytes=5)


@pytest.mark.parametrize("chunk_bytes", [19, 1000, 20_000])
def test_chunk_bytes_bounds_every_read(data_dir, monkeypatch, chunk_bytes):
    """``chunk_bytes`` is the upper bound of one read, the first one included (which is
    otherwise 64 KiB, so that ``head()`` decodes little)."""
    import bindf._source
    from bindf.formats import _stream

    monkeypatch.setattr(bindf._source, "HOLD_IN_MEMORY_BYTES", 0)  # no whole-file read
    whole = bindf.read_apx(data_dir / SAMPLE, output="arrow")
    sizes = []
    read_into = _stream.read_into

    def spy(f, view):
        sizes.append(len(view))
        return read_into(f, view)

    monkeypatch.setattr(_stream, "read_into", spy)
    got = bindf.read_apx(data_dir / SAMPLE, output="arrow", chunk_bytes=chunk_bytes,
                         n_rows=10**9)
    assert got.equals(whole)
    assert sizes and max(sizes) <= chunk_bytes
    assert sizes[0] == chunk_bytes  # (the sample holds 28 KB of data)


# -- damaged files -------------------------------------------------------------------
def test_empty_and_bad_magic(tmp_path):
    with pytest.raises(UnknownFormatError, match="empty"):
        bindf.read_apx(write_file(tmp_path, b""))
    with pytest.raises(UnknownFormatError, match="magic"):
        bindf.read_apx(write_file(tmp_path, b"%APXDX" + bytes(20)))


def test_header_length_beyond_eof(tmp_path):
    data = b"%APXDF" + struct.pack("<I", 10**9) + b'{"readout_uid": 4000}'
    with pytest.raises(HeaderError, match="declares") as info:
        bindf.read_apx(write_file(tmp_path, data))
    assert info.value.offset == 6


@pytest.mark.parametrize("header", [{}, {"readout_uid": 2000}, {"readout_uid": "4000"},
                                    {"readout_uid": 4000.0}, {"readout_uid": True}])
def test_unsupported_readout_uid(tmp_path, header):
    path = write_file(tmp_path, apx_file_bytes([(0, 0, WORKED)], header=header))
    with pytest.raises(UnsupportedReadoutError, match="4000 \\(AstroPix 4\\)") as info:
        bindf.read_apx(path)
    assert info.value.path == str(path)
    assert isinstance(info.value, HeaderError)


def test_truncated_inside_payload(tmp_path, data_dir):
    raw = (data_dir / SAMPLE).read_bytes()
    last = raw.rindex(b"\xfe\xdc\xba")
    path = write_file(tmp_path, raw[: last + 25])  # header complete, payload cut
    with pytest.warns(TruncatedFileWarning) as caught:
        df = bindf.read_apx(path)
    assert caught[0].message.offset == last
    assert len(df) == 775  # every hit of the complete readouts


@pytest.mark.parametrize("keep", [1, 3, 10, 18])
def test_truncated_inside_readout_header(tmp_path, data_dir, keep):
    raw = (data_dir / SAMPLE).read_bytes()
    last = raw.rindex(b"\xfe\xdc\xba")
    path = write_file(tmp_path, raw[: last + keep])
    with pytest.warns(TruncatedFileWarning, match="header") as caught:
        df = bindf.read_apx(path, output="polars")
    assert caught[0].message.offset == last and df.height == 775


def test_truncated_at_a_readout_boundary_is_clean(tmp_path, data_dir):
    raw = (data_dir / SAMPLE).read_bytes()
    path = write_file(tmp_path, raw[: raw.rindex(b"\xfe\xdc\xba")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(bindf.read_apx(path)) == 775


def test_declared_length_beyond_eof_is_truncation_not_allocation(tmp_path):
    readouts = [(0, 0, WORKED), (1, 0, WORKED)]
    data = bytearray(apx_file_bytes(readouts))
    second = data.rindex(b"\xfe\xdc\xba")
    data[second + 15 : second + 19] = struct.pack("<I", 0xFFFFFFFF)
    path = write_file(tmp_path, bytes(data))
    with pytest.warns(TruncatedFileWarning, match="4294967295") as caught:
        df = bindf.read_apx(path, chunk_bytes=64)
    assert caught[0].message.offset == second and len(df) == 2


def test_a_damaged_length_with_readouts_after_it_is_damage_not_a_cut(tmp_path, data_dir):
    """One flipped bit in a readout's length field made it run past the end of the file:
    it was taken for the file's cut last readout (a truncation warning, even under
    on_error="raise"), and every readout after it was lost. Whole readouts after it tell
    damage from a cut: raise there, or skip that readout and read on."""
    raw = bytearray((data_dir / SAMPLE).read_bytes())
    intact = bindf.read_apx(data_dir / SAMPLE, output="polars")
    damaged_at = raw.index(b"\xfe\xdc\xba", len(raw) // 3)
    (readout_id,) = struct.unpack_from("<I", raw, damaged_at + 3)
    raw[damaged_at + 18] ^= 1  # the length's high byte: 16 MiB more than the file holds
    path = write_file(tmp_path, bytes(raw))
    with pytest.raises(CorruptDataError, match="damaged length field") as info:
        bindf.read_apx(path)
    assert info.value.offset == damaged_at and info.value.path == str(path)
    expected = intact.filter(pl.col("readout_id") != readout_id)
    assert 0 < expected.height < intact.height
    with pytest.warns(CorruptDataWarning, match="declares 16777232 payload bytes") as caught:
        warned = bindf.read_apx(path, on_error="warn", output="polars")
    assert [w.message.offset for w in caught] == [damaged_at]
    assert warned.equals(expected)
    assert warned.bindf.info["errors"]["bad_readout_length"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kwargs in ({}, {"chunk_bytes": 64}, {"threads": 1}):
            assert bindf.read_apx(path, on_error="skip", output="polars", **kwargs).equals(warned)
        assert pl.scan_apx(path, on_error="skip").collect().equals(warned)
    # a follower meets it while the file grows: the rows before it, then the error
    follower = bindf.follow(path, output="polars", idle_timeout=0)
    rows = []
    with pytest.raises(CorruptDataError, match="damaged length field"):
        rows.extend(follower)
    assert pl.concat(rows).equals(intact.filter(pl.col("readout_id") < readout_id))


def test_bad_marker_raises_with_offset(tmp_path):
    data = bytearray(apx_file_bytes([(0, 0, WORKED), (1, 0, WORKED), (2, 0, WORKED)]))
    second = data.index(b"\xfe\xdc\xba", data.index(b"\xfe\xdc\xba") + 1)
    data[second + 1] = 0x00
    path = write_file(tmp_path, bytes(data))
    with pytest.raises(CorruptDataError, match="marker") as info:
        bindf.read_apx(path)
    assert info.value.offset == second and info.value.path == str(path)


def test_bad_marker_resynchronises_on_warn_and_skip(tmp_path):
    h1, h2 = hit(1), hit(2)
    good = (IDLE2 + h1 + TAIL)
    readouts = [(0, 0, IDLE2 + h1 + h2[:3]), (1, 0, h2[3:] + TAIL), (2, 0, good), (3, 0, good)]
    data = bytearray(apx_file_bytes(readouts))
    markers = [i for i in range(len(data)) if data[i : i + 3] == b"\xfe\xdc\xba"]
    data[markers[1] : markers[1] + 3] = b"JNK"  # readout 1 unreadable: the split hit is lost
    path = write_file(tmp_path, bytes(data))
    with pytest.warns(CorruptDataWarning, match="skipped 30 damaged bytes") as caught:
        df = bindf.read_apx(path, on_error="warn", output="polars")
    assert caught[0].message.offset == markers[1]
    assert df["readout_id"].to_list() == [0, 2, 3]
    assert df.bindf.info["errors"] == {"bad_readout_marker": 1, "skipped_bytes": 30}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = bindf.read_apx(path, on_error="skip", output="polars", chunk_bytes=19)
    assert quiet.equals(df)
    readouts_table = bindf.read_apx(path, on_error="skip", level="readouts")
    assert readouts_table["readout_id"].tolist() == [0, 2, 3]
    assert readouts_table["orphans_unused"].tolist() == [False, False, False]


@pytest.mark.parametrize("level", ["hits", "readouts"])
def test_many_damaged_markers_give_few_batches_and_every_row(tmp_path, level):
    """Damage cuts the decoded readouts into a unit per undamaged stretch; those small
    units are joined into batches (a batch per damaged readout made a read of 20,000
    gaps 3-5 times slower, and held twice the memory), in file order, nothing lost."""
    good = IDLE2 + hit(1) + hit(2) + TAIL
    data = bytearray(apx_file_bytes([(k, 10 * k, good) for k in range(3000)]))
    markers = [i for i in range(len(data)) if data[i : i + 3] == b"\xfe\xdc\xba"]
    for k in range(1, 3000, 3):  # every third readout unreadable
        data[markers[k] : markers[k] + 3] = b"JNK"
    path = write_file(tmp_path, bytes(data))
    table = bindf.read_apx(path, on_error="skip", output="arrow", level=level)
    assert table.num_rows == 2000 * (2 if level == "hits" else 1)
    readout_ids = [k for k in range(3000) if k % 3 != 1]
    expected = np.repeat(readout_ids, 2 if level == "hits" else 1)
    assert table.column("readout_id").to_pylist() == expected.tolist()
    from bindf._source import Source
    from bindf.registry import open_reader

    reader = open_reader(Source(str(path)), on_error="skip", level=level)
    assert len(list(reader.iter_batches())) == 1  # (was 1,002: one a stretch)
    assert table.replace_schema_metadata(None).equals(bindf.read_apx(
        path, on_error="skip", output="arrow", level=level, batch_size=7, threads=1,
    ).replace_schema_metadata(None))


@pytest.mark.parametrize("how", ["chunked", "n_rows", "scan head"])
def test_a_read_that_stops_early_reports_only_the_damage_it_read(tmp_path, monkeypatch, how):
    """A read that stops after its first rows warns of, and counts, the damage of the
    chunks it read only, on two threads as on one: the prefetch worker decodes chunks
    ahead, and their warnings and counts wait for them to be taken (they reached the
    read's warnings and ``errors`` at once)."""
    monkeypatch.setattr(apx, "PREFETCH_MIN_BYTES", 0)
    monkeypatch.setattr(apx, "PREFETCH_MAX_SKIPPED_ROWS", 0)
    columns = apx.ApxReader._columns

    def slow_columns(self, *args):  # (the worker gets as far ahead as it may go)
        time.sleep(0.02)
        return columns(self, *args)

    monkeypatch.setattr(apx.ApxReader, "_columns", slow_columns)
    good = IDLE2 + hit(1) + hit(2) + TAIL
    data = bytearray(apx_file_bytes([(k, 10 * k, good) for k in range(3000)]))
    markers = [i for i in range(len(data)) if data[i : i + 3] == b"\xfe\xdc\xba"]
    for k in (3, 250, 1500, 2900):  # 250: in the chunk after the first (decoded ahead)
        data[markers[k] : markers[k] + 3] = b"JNK"
    path = write_file(tmp_path, bytes(data))

    def stop_early(threads: int) -> tuple[list[int | None], dict[str, int]]:
        options = dict(on_error="warn", chunk_bytes=8192, threads=threads)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if how == "chunked":
                reader = bindf.read_apx(path, chunksize=10, output="arrow", **options)
                first = next(reader)
                assert first.num_rows == 10
                errors = reader.errors
                reader.close()
            elif how == "n_rows":
                head = bindf.read_apx(path, n_rows=10, output="arrow", **options)
                errors = bindf.arrow.table_info(head)["errors"]
            else:
                assert pl.scan_apx(path, **options).head(10).collect().height == 10
                errors = None  # (polars' head keeps no bindf metadata)
        return [w.message.offset for w in caught], errors

    one = stop_early(1)
    assert one[0] == [markers[3]]
    assert one[1] in (None, {"bad_readout_marker": 1, "skipped_bytes": len(good) + 19})
    for _ in range(3):
        assert stop_early(2) == one


def test_resync_skips_markers_whose_payload_cannot_fit(tmp_path):
    h1 = hit(3)
    fake = b"\xfe\xdc\xba" + struct.pack("<IQI", 9, 9, 10**6)  # inside junk: L too big
    data = bytearray(apx_file_bytes([(0, 0, IDLE2 + h1 + TAIL)]))
    data += b"junk" + fake + b"more junk"
    data += apx_file_bytes([(5, 0, IDLE2 + h1 + TAIL)])[len(apx_file_bytes([])):]
    path = write_file(tmp_path, bytes(data))
    with pytest.warns(CorruptDataWarning):
        df = bindf.read_apx(path, on_error="warn")
    assert df["readout_id"].tolist() == [0, 5]


def test_damage_at_the_end_under_skip(tmp_path):
    data = apx_file_bytes([(0, 0, WORKED)]) + b"garbage without any marker"
    path = write_file(tmp_path, data)
    df = bindf.read_apx(path, on_error="skip")
    assert len(df) == 2 and df.attrs["bindf"]["errors"]["skipped_bytes"] == 26


def test_fuzzed_files_never_crash(tmp_path, data_dir):
    raw = bytearray((data_dir / SAMPLE).read_bytes())
    rng = random.Random(5)
    (length,) = struct.unpack_from("<I", raw, 6)
    for trial in range(40):
        data = bytearray(raw)
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(10 + length, len(data))] = rng.randrange(256)
        data = data[: rng.randrange(10 + length, len(data) + 1)]
        path = write_file(tmp_path, bytes(data), f"fuzz{trial}.apx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                bindf.read_apx(path, chunk_bytes=rng.choice([19, 100, 4096]))
            except CorruptDataError:
                pass
            df = bindf.read_apx(path, on_error="skip")
        assert len(df) <= 776 + 40


# -- writer --------------------------------------------------------------------------
hit_fields = st.fixed_dictionaries({
    "chip_id": st.integers(0, 30), "row": st.integers(0, 31), "column": st.integers(0, 31),
    "ts_neg1": st.integers(0, 1), "ts_coarse1": st.integers(0, (1 << 14) - 1),
    "ts_fine1": st.integers(0, 7), "ts_tdc1": st.integers(0, 31), "ts_neg2": st.integers(0, 1),
    "ts_coarse2": st.integers(0, (1 << 14) - 1), "ts_fine2": st.integers(0, 7),
    "ts_tdc2": st.integers(0, 31),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(readouts=st.lists(st.lists(hit_fields, min_size=1, max_size=5), min_size=1, max_size=12),
       gaps=st.lists(st.integers(0, 3), min_size=60, max_size=60),
       leading=st.integers(0, 3), trailing=st.integers(1, 7),
       output=st.sampled_from(["pandas", "polars", "arrow", "dict"]))
def test_writer_round_trip(tmp_path, readouts, gaps, leading, trailing, output):
    rows = [dict(h, readout_id=1000 + k, timestamp=1_753_255_536_707_629_800 + 7 * k)
            for k, readout in enumerate(readouts) for h in readout]
    frame = pd.DataFrame(rows)
    data = {"pandas": frame, "polars": pl.from_pandas(frame),
            "arrow": pa.Table.from_pandas(frame), "dict": {c: frame[c].to_numpy() for c in frame}}
    path = tmp_path / "round.apx"
    header = {"readout_uid": 4000, "note": "ünïcode", "nested": {"a": [1, 2.5, None]}}
    bindf.write_apx(path, data[output], header, leading_idle=leading,
                    idle_between=np.array(gaps[: len(rows)]), trailing_idle=trailing)
    df = bindf.read_apx(path)
    assert df.attrs["bindf"]["header"] == header
    assert len(df) == len(rows)
    for name, _, _ in FIELDS:
        if name == "payload":
            continue
        assert df[name].tolist() == frame[name].tolist(), name
    assert (df["payload"] == 7).all()
    assert df["readout_id"].tolist() == frame["readout_id"].tolist()
    assert df["timestamp"].tolist() == frame["timestamp"].tolist()
    assert df["decoding_order"].tolist() == [i for r in readouts for i in range(len(r))]
    derived = [expected_derived(r) for r in rows]
    assert df["ts_dec1"].tolist() == [d[0] for d in derived]
    assert df["ts_dec2"].tolist() == [d[1] for d in derived]
    assert df["tot_us"].tolist() == [d[2] for d in derived]
    status = bindf.read_apx(path, level="readouts")["status"]
    assert (status == 0).all()


def test_writer_from_ts_dec_and_real_run(tmp_path, data_dir):
    real = bindf.read_apx(data_dir / SAMPLE)
    header = bindf.read_header(data_dir / SAMPLE)
    path = tmp_path / "copy.apx"
    bindf.write_apx(path, real.drop(columns=["ts_coarse1", "ts_fine1", "ts_coarse2", "ts_fine2"]),
                    header)
    again = bindf.read_apx(path)
    pd.testing.assert_frame_equal(again, real, check_like=False)
    assert again.attrs["bindf"]["header"] == header


@pytest.mark.parametrize("generation", [4, 3])
@pytest.mark.parametrize("output", ["pandas", "polars", "arrow"])
def test_writer_keeps_the_header_the_reader_attached(tmp_path, data_dir, generation, output):
    source = (data_dir / SAMPLE if generation == 4 else
              Path(bindf.__file__).parent / "samples" / "astropix3_injection_run.apx")
    real = bindf.read_apx(source, output=output)
    path = tmp_path / "copy.apx"
    bindf.write_apx(path, real)
    assert bindf.read_header(path) == bindf.read_header(source)
    assert len(bindf.read_header(path)) > 1  # more than the readout_uid
    bindf.write_apx(path, real, {"run": 7})  # a header given wins
    assert bindf.read_header(path) == {"readout_uid": bindf.read_header(source)["readout_uid"],
                                       "run": 7}


def test_writer_layout(tmp_path):
    h = {"chip_id": [0, 0, 0], "row": [1, 1, 2], "column": [9, 10, 3], "ts_neg1": [0] * 3,
         "ts_coarse1": [1408, 1424, 5], "ts_fine1": [6, 6, 1], "ts_tdc1": [0] * 3,
         "ts_neg2": [0] * 3, "ts_coarse2": [1259, 1259, 7], "ts_fine2": [4, 4, 0],
         "ts_tdc2": [0] * 3, "readout_id": [7, 7, 8], "timestamp": [99, 99, 100]}
    path = tmp_path / "layout.apx"
    bindf.write_apx(path, {k: np.array(v) for k, v in h.items()}, idle_between=2)
    raw = path.read_bytes()
    text = json.dumps({"readout_uid": 4000}).encode()
    first = WORKED[:-4]  # the worked example, without the 0xFF padding the DAQ strips
    assert raw == apx_file_bytes([(7, 99, first), (8, 100, IDLE2 + raw[-14:-6] + TAIL)])
    assert raw[10 : 10 + len(text)] == text


def test_writer_rejects_undecodable_input(tmp_path):
    base = {"chip_id": [0], "row": [1], "column": [2], "ts_neg1": [0], "ts_coarse1": [1],
            "ts_fine1": [1], "ts_tdc1": [0], "ts_neg2": [0], "ts_coarse2": [1],
            "ts_fine2": [2], "ts_tdc2": [0], "readout_id": [1], "timestamp": [5]}
    path = tmp_path / "bad.apx"
    cases = [
        (dict(base, payload=[3]), "start byte"),
        (dict(base, chip_id=[31]), "start byte"),
        (dict(base, row=[32]), "row must be below 32"),
        (dict(base, ts_coarse1=[-1]), "negative"),
        (dict(base, ts_fine1=[1.5]), "integer"),
        ({k: v for k, v in base.items() if k != "ts_fine2"}, "missing"),
        (dict(base, timestamp=[-5]), "holds -5 at hit 0, outside a readout.s uint64"),
        (dict(base, readout_id=[2**32]), "uint32"),
        (dict(base, row=[1, 2]), "different lengths"),
        (dict(base, readout_id=[1, 1], timestamp=[5, 6],
              **{k: v * 2 for k, v in base.items() if k not in ("readout_id", "timestamp")}),
         "share its timestamp"),
    ]
    for columns, message in cases:
        with pytest.raises(ValueError, match=message):
            bindf.write_apx(path, {k: np.array(v) for k, v in columns.items()})
    arrays = {k: np.array(v) for k, v in base.items()}
    with pytest.raises(ValueError, match="trailing_idle"):
        bindf.write_apx(path, arrays, trailing_idle=0)
    with pytest.raises(ValueError, match="readout_uid 4000 or 3000"):
        bindf.write_apx(path, arrays, {"readout_uid": 2000})
    with pytest.raises(ValueError, match="missing AstroPix 3 hit column"):  # 3000: AstroPix 3
        bindf.write_apx(path, arrays, {"readout_uid": 3000})
    with pytest.raises(ValueError):
        bindf.write_apx(path, arrays, {"x": float("nan")})
    assert not path.exists()  # nothing half-written
    assert [p for p in os.listdir(tmp_path) if p.startswith(".bad")] == []


def test_writer_does_not_overwrite_when_asked(tmp_path, data_dir):
    path = tmp_path / "x.apx"
    frame = bindf.read_apx(data_dir / SAMPLE)
    bindf.write_apx(path, frame)
    with pytest.raises(FileExistsError):
        bindf.write_apx(path, frame, {"run": 2}, overwrite=False)
    assert bindf.read_header(path) == bindf.read_header(data_dir / SAMPLE)  # the first write


def test_reference_model_on_the_worked_example():
    result = ref.decode_payload(WORKED, None)
    assert result.status == 0 and result.extra is None
    assert result.hits == [WORKED[2:10], WORKED[12:20]]


def test_header_only_file_gives_empty_frames(tmp_path):
    path = write_file(tmp_path, apx_file_bytes([]))
    df = bindf.read_apx(path)
    assert len(df) == 0 and {c: str(t) for c, t in df.dtypes.items()} == HIT_DTYPES
    assert len(bindf.read_apx(path, level="readouts")) == 0
    assert pl.scan_apx(path).collect().height == 0


def test_early_stop_leaves_no_worker_thread(split_run, monkeypatch):
    import threading

    import bindf.formats.apx as apx_module
    from bindf import _threads

    def workers() -> list[threading.Thread]:
        """The threads of one read. Not polars' own (they show up as dummies), nor the
        threads of bindf's shared pools, which stay for the next read, idle (every read
        waits for or cancels its own tasks before it returns)."""
        shared = tuple(_threads._POOLS)
        return [t for t in threading.enumerate()
                if t.name.startswith("bindf-") and not t.name.startswith(shared)]

    # The sample is small: no prefetch thread by default (see the next test). Lower the
    # threshold so that this one runs.
    monkeypatch.setattr(apx_module, "PREFETCH_MIN_BYTES", 0)
    for _ in range(5):
        assert pl.scan_apx(split_run, threads=2).head(3).collect().height == 3
        reader = bindf.read_apx(split_run, chunksize=10, output="polars", threads=2)
        next(reader)
        assert len(workers()) == 1  # the prefetch thread is running ...
        reader.close()
        assert workers() == []  # ... and gone once the reader is closed
        # Several files: after an early stop, no file's prefetch thread is left either,
        # and the shared pools hold no more threads than they were made with.
        reader = bindf.read_apx([split_run] * 4, chunksize=10, output="polars", threads=2)
        next(reader)
        reader.close()
        assert workers() == []
        kept = sorted(t.name for t in threading.enumerate() if t.name.startswith("bindf-"))
        assert len(kept) <= sum(lane._limit for lane in _threads._LANES.values())


def test_small_files_start_no_thread(split_run):
    import threading

    started = []
    original = threading.Thread.start

    def spy(thread: threading.Thread) -> None:
        started.append(thread.name)
        original(thread)

    threading.Thread.start = spy  # type: ignore[method-assign]
    try:
        frame = bindf.read_apx(split_run, output="polars", threads=2)
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    assert frame.height and not [n for n in started if n.startswith("bindf-")]


def test_several_files_in_one_read(split_run, data_dir):
    both = bindf.read_apx([data_dir / SAMPLE, split_run], output="polars",
                          include_file_paths="file")
    single = [bindf.read_apx(p, output="polars") for p in (data_dir / SAMPLE, split_run)]
    assert both.drop("file").equals(pl.concat(single))
    assert both["file"].unique().len() == 2


def test_apx_prefetch_over_many_chunks_equals_one_thread(split_run, data_dir, monkeypatch):
    # decode calls small enough (batch_size readouts each) that every scratch slot of the
    # prefetch worker is reused many times while the consumer still holds the ones
    # before (PREFETCH_AHEAD + 1 slots)
    import bindf.formats.apx as apx_module

    monkeypatch.setattr(apx_module, "PREFETCH_MIN_BYTES", 0)
    # a slow consumer, so that the worker is always as far ahead as it may go while a
    # chunk is being turned into columns (a slot reused too early would show)
    columns = apx_module.ApxReader._columns

    def slow_columns(self, *args):
        time.sleep(0.0005)
        return columns(self, *args)

    monkeypatch.setattr(apx_module.ApxReader, "_columns", slow_columns)
    for path, level, batch_size in itertools.product(
            (split_run, data_dir / SAMPLE), ("hits", "readouts"), (2, 25)):
        one = bindf.read_apx(path, output="arrow", level=level, threads=1,
                             batch_size=batch_size)
        two = bindf.read_apx(path, output="arrow", level=level, threads=2,
                             batch_size=batch_size)
        assert two.equals(one), (path, level, batch_size)
