"""A-STEP layer-frame streams: reader, kernel, probe and writer (docs/formats/astep.md).

Ground truth: the real quad-chip run ``quad_chip_data.bin`` and its expected frame table
(``quad_chip_data_frames.csv``). Generated streams cover every edge case of the layout:
truncation at every offset, empty files, filler, resynchronisation, wrong-length frames,
both timestamp byte orders and every timestamp width. The compiled kernel is checked
against the pure-Python model ``bindf._kernels.astep_reference`` on random noisy streams,
whole and cut into pieces at every split point.

The reader is not registered yet (the registry is being rewritten); these tests open
:class:`~bindf.formats.astep.AstepReader` directly, or register it for one test.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import DATA

import bindf
from bindf import registry
from bindf._kernels import _astep
from bindf._kernels import astep_reference as ref
from bindf._source import Source
from bindf.errors import CorruptDataError, CorruptDataWarning, TruncatedFileWarning
from bindf.formats import _astep_writer, astep
from bindf.formats._astep_writer import write_astep
from bindf.formats.apx_log import looks_like_apx_log
from bindf.formats.astep import AstepReader, looks_like_astep
from bindf.formats.spectro import looks_like_legacy_spectro, write_spectro

SAMPLE = DATA / "quad_chip_data.bin"
GOLDEN = DATA / "quad_chip_data_frames.csv"
SAMPLES_DIR = Path(bindf.__file__).parent / "samples"


# -- helpers (independent of the code under test) -----------------------------------
def frame_bytes(layer: int, sensor: bytes, ts: int, width: int = 4, order: str = "little") -> bytes:
    """One layer frame: ``L | layer | sensor | timestamp``."""
    return bytes([1 + len(sensor) + width, layer]) + sensor + ts.to_bytes(width, order)


def v3_sensor(chip: int, is_col: int, location: int, chip_ts: int, tot: int) -> bytes:
    return bytes([chip << 3 | 4, is_col << 7 | location, chip_ts, tot >> 8, tot & 0xFF])


def v4_sensor(fields: dict[str, int]) -> bytes:
    word = 0
    for name, (_first, end) in astep.V4_BITS.items():
        word |= fields.get(name, 7 if name == "payload" else 0) << (64 - end)
    return word.to_bytes(8, "big")


def read(path, columns=None, batch_size=None, n_rows=None, **options) -> pa.Table:
    reader = AstepReader(Source(str(path)), **options)
    batches = list(reader.iter_batches(columns, batch_size, n_rows))
    return pa.Table.from_batches(batches, schema=pa.schema(
        [reader.schema.field(c) for c in reader.resolve_columns(columns)]))


def read_with_reader(path, **options) -> tuple[pa.Table, AstepReader]:
    reader = AstepReader(Source(str(path)), **options)
    table = pa.Table.from_batches(list(reader.iter_batches()), schema=reader.schema)
    return table, reader


def random_v3_stream(rng: random.Random, n: int, width: int = 4, order: str = "little",
                     t0: int = 1_000_000) -> tuple[bytes, list[int]]:
    """``n`` AstroPix 3 frames with increasing timestamps; returns bytes and frame offsets."""
    out = bytearray()
    offsets = []
    ts = t0 % (1 << (8 * width))
    for _ in range(n):
        offsets.append(len(out))
        sensor = v3_sensor(rng.randrange(4), rng.randrange(2), rng.randrange(64),
                           rng.randrange(256), rng.randrange(4096))
        out += frame_bytes(rng.randrange(1, 4), sensor, ts, width, order)
        ts = min(ts + rng.randrange(0, 50), (1 << (8 * width)) - 1)
    return bytes(out), offsets


def noisy_stream(rng: random.Random, n_items: int) -> bytes:
    """Frames of every payload and width, filler runs and random debris."""
    out = bytearray()
    for _ in range(n_items):
        r = rng.random()
        if r < 0.55:
            p = rng.choice([4, 4, 7, 7, rng.randrange(8)])
            width = rng.choice([2, 4, 6, 8])
            sensor = bytes([rng.randrange(32) << 3 | p]) + rng.randbytes(p)
            out += frame_bytes(rng.randrange(256), sensor, rng.getrandbits(8 * width), width)
        elif r < 0.75:
            out += b"\xff" * rng.randrange(1, 6)
        else:
            out += rng.randbytes(rng.randrange(1, 5))
    return bytes(out)


# -- the kernel against the reference -----------------------------------------------
def kernel_in_pieces(data: bytes, cuts: list[int], ts_bytes: int = 0, frame_cap: int = 64,
                     gap_cap: int = 16):
    """Feed ``data`` to the kernel in the pieces ``cuts`` makes, as the reader does.

    Returns (frames, gaps, filler, skipped, truncated_at) in the reference's terms.
    """
    state = _astep.new_state()
    out = [np.empty(frame_cap, np.int64), np.empty(frame_cap, np.uint8),
           np.empty(frame_cap, np.uint8), np.empty(frame_cap, np.uint64),
           np.empty(frame_cap, np.uint64)]
    sensor_views = np.empty(frame_cap * 16, np.uint8)  # filled from the walk's sensor words
    gap_start, gap_length = np.empty(gap_cap, np.int64), np.empty(gap_cap, np.int64)
    frames, gaps = [], []
    buf = np.empty(0, np.uint8)
    base = 0
    bounds = [*sorted(set(cuts)), len(data)]
    fed = 0
    for stop_at in bounds:
        buf = np.concatenate([buf, np.frombuffer(data[fed:stop_at], np.uint8)])
        fed = stop_at
        pos = 0
        while True:
            n, n_gaps, pos, code = _astep.parse_frames(buf, pos, len(buf), base, ts_bytes,
                                                       state, *out, gap_start, gap_length)
            _astep.sensor_views(out[3][:n], sensor_views)
            for i in range(n):
                offset, length, layer, sensor, ts = (int(a[i]) for a in out)
                p = (sensor >> 56) & 7
                width = length - 2 - p
                view = sensor_views[16 * i : 16 * i + 16].tobytes()  # Arrow binary view
                assert view[:4] == (p + 1).to_bytes(4, "little")
                raw = view[4 : 5 + p]
                assert raw == sensor.to_bytes(8, "big")[: p + 1]
                assert view[5 + p :] == bytes(11 - p)
                frames.append(ref.Frame(offset, length, layer, raw,
                                        ts.to_bytes(8, "little")[:width]))
            gaps.extend(zip(gap_start[:n_gaps].tolist(), gap_length[:n_gaps].tolist(), strict=True))
            if code != _astep.PARSE_FULL:
                break
        assert len(buf) - pos < astep.MAX_FRAME_BYTES  # the carried tail stays small
        buf = buf[pos:].copy()
        base += pos
    truncated_at = base if len(buf) else None
    if state[_astep.STATE_GAP_OPEN_AT] >= 0:
        gaps.append((int(state[_astep.STATE_GAP_OPEN_AT]),
                     base - int(state[_astep.STATE_GAP_OPEN_AT])))
    return (frames, gaps, int(state[_astep.STATE_FILLER_BYTES]),
            int(state[_astep.STATE_RESYNC_BYTES]), truncated_at)


def reference_result(data: bytes, ts_bytes: int | None = None):
    parsed = ref.parse_stream(data, ts_bytes)
    return (parsed.frames, parsed.gaps, parsed.filler_bytes, parsed.resync_bytes,
            parsed.truncated_at)


@pytest.mark.parametrize("seed", range(40))
def test_kernel_matches_reference_on_noisy_streams(seed):
    rng = random.Random(seed)
    data = noisy_stream(rng, rng.randrange(0, 300))
    ts_bytes = rng.choice([0, 0, 2, 4, 6, 8])
    expected = reference_result(data, ts_bytes or None)
    assert kernel_in_pieces(data, [], ts_bytes, frame_cap=4096, gap_cap=4096) == expected
    # small output arrays (PARSE_FULL on frames and on stretches) and random pieces
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, 12)))
    assert kernel_in_pieces(data, cuts, ts_bytes, frame_cap=3, gap_cap=1) == expected


@pytest.mark.parametrize("seed", range(3))
def test_kernel_every_split_point_and_one_byte_pieces(seed):
    rng = random.Random(100 + seed)
    data = noisy_stream(rng, 60)
    expected = reference_result(data)
    for cut in range(len(data) + 1):
        assert kernel_in_pieces(data, [cut]) == expected, cut
    assert kernel_in_pieces(data, list(range(len(data)))) == expected


def test_kernel_reference_known_cases():
    frame = frame_bytes(1, v3_sensor(3, 1, 17, 11, 202), 0x51719124)
    assert ref.parse_stream(frame).frames == [ref.Frame(0, 10, 1, frame[2:7], frame[7:])]
    # filler before, between and after; debris of 3 bytes (one stretch)
    parsed = ref.parse_stream(b"\xff\xff" + frame + b"\x00\x01\x02" + frame + b"\xff")
    assert [f.offset for f in parsed.frames] == [2, 16]
    assert (parsed.filler_bytes, parsed.resync_bytes, parsed.gaps) == (3, 3, [(13, 3)])
    # a length byte outside 4..17 is debris even when the stream ends right after it
    assert ref.parse_stream(frame + b"\x00").gaps == [(11, 1)]
    assert ref.parse_stream(frame + b"\x0a").truncated_at == 11
    assert kernel_in_pieces(frame + b"\x00", []) == reference_result(frame + b"\x00")


@pytest.mark.parametrize("seed", range(12))
def test_v3_fields_match_reference(seed):
    """The AstroPix 3 column pass against the reference, frame for frame: wrong-length
    frames (short and long payloads), every column alone or together, blocks of 2048."""
    rng = random.Random(300 + seed)
    # long streams cross the kernel's 2048-frame blocks; short ones end mid-bitmap-byte
    data = noisy_stream(rng, rng.choice([rng.randrange(0, 40), rng.randrange(2040, 4200)]))
    frames = ref.parse_stream(data).frames
    parsed, _, _, _ = astep.parse_buffer(data)
    tick = rng.choice([10.0, 25.0, 3.3])
    expected = ref.v3_fields(frames, tick)
    n = len(frames)
    dtypes = astep._V3_KERNEL_COLUMNS
    wanted = [c for c in dtypes if rng.random() < 0.6] if seed % 3 else list(dtypes)
    outputs = {c: np.full(n, 0xAB).astype(dtypes[c]) for c in wanted}  # garbage to overwrite
    valid = np.full((n + 7) // 8, 0xAB, np.uint8)
    good = _astep.v3_fields(parsed.sensor, parsed.length, tick, valid=valid, **outputs)
    assert good == sum(expected["valid"])
    for name, values in outputs.items():
        assert values.tolist() == expected[name], name
    bits = np.unpackbits(valid, bitorder="little")[:n].astype(bool)
    assert bits.tolist() == expected["valid"]


def test_v3_fields_refuses_short_outputs():
    parsed, _, _, _ = astep.parse_buffer(frame_bytes(1, v3_sensor(3, 1, 17, 11, 202), 7) * 9)
    assert _astep.v3_fields(parsed.sensor, parsed.length, 10.0) == 9
    with pytest.raises(ValueError, match="chip_id holds fewer than the 9 values"):
        _astep.v3_fields(parsed.sensor, parsed.length, 10.0, chip_id=np.empty(8, np.uint8))
    with pytest.raises(ValueError, match="valid"):
        _astep.v3_fields(parsed.sensor, parsed.length, 10.0, valid=np.empty(1, np.uint8))
    with pytest.raises(ValueError, match="length"):
        _astep.v3_fields(parsed.sensor, parsed.length[:3], 10.0)


def test_kernel_refuses_bad_arguments():
    buf = np.zeros(4, np.uint8)
    arrays = [np.empty(1, t) for t in (np.int64, np.uint8, np.uint8, np.uint64, np.uint64)]
    gaps = [np.empty(1, np.int64), np.empty(1, np.int64)]
    with pytest.raises(ValueError, match="state"):
        _astep.parse_frames(buf, 0, 4, 0, 0, np.zeros(2, np.int64), *arrays, *gaps)
    with pytest.raises(ValueError, match="ts_bytes"):
        _astep.parse_frames(buf, 0, 4, 0, 3, _astep.new_state(), *arrays, *gaps)
    # positions outside the buffer are clamped, empty outputs stop at once
    assert _astep.parse_frames(buf, -5, 10**9, 0, 0, _astep.new_state(), *arrays, *gaps)[2] == 4
    frame = np.frombuffer(frame_bytes(1, v3_sensor(0, 0, 0, 0, 0), 7), np.uint8)
    empty = [a[:0] for a in arrays]
    assert _astep.parse_frames(frame, 0, len(frame), 0, 0, _astep.new_state(), *empty,
                               *gaps)[:4] == (0, 0, 0, _astep.PARSE_FULL)
    # too little room for the sensor bytes' views: refused, nothing written
    views = np.zeros(31, np.uint8)
    with pytest.raises(ValueError, match="32 bytes"):
        _astep.sensor_views(np.zeros(2, np.uint64), views)
    assert not views.any()


# -- the real quad-chip run ---------------------------------------------------------
def test_real_file_equals_expected_table():
    table, reader = read_with_reader(SAMPLE)
    assert reader.header["chip"] == 3
    assert reader.header["ts_order"] == "little"
    assert reader.header["auto"]["ts_decreases"] == {"little": 0, "big": 664}
    assert reader.errors == {}
    df = table.to_pandas()
    golden = pd.read_csv(GOLDEN)
    assert len(df) == 2004
    assert (golden.kind == "wrong_length").sum() == 20
    for name in golden.columns:
        if name == "sensor_hex":
            assert df.sensor.map(bytes.hex).tolist() == golden.sensor_hex.tolist()
        elif name == "kind":
            assert df.kind.astype(str).tolist() == golden.kind.tolist()
        else:
            np.testing.assert_array_equal(df[name].astype(float), golden[name].astype(float),
                                          err_msg=name)


def test_real_file_schema_and_dtypes_in_polars(monkeypatch):
    register(monkeypatch)
    frame = bindf.read(str(SAMPLE), format="astep", output="polars")
    assert frame.columns == [
        "frame_index", "byte_offset", "length", "layer", "chip_id", "payload", "column",
        "location", "chip_timestamp", "tot_msb", "tot_lsb", "tot_total", "tot_us", "fpga_ts",
        "ts_bytes", "kind", "sensor"]
    assert frame.schema["frame_index"] == pl.Int64
    assert frame.schema["tot_total"] == pl.UInt16
    assert frame.schema["fpga_ts"] == pl.UInt64
    assert frame.schema["sensor"] == pl.Binary
    assert frame.schema["kind"] in (pl.Categorical, pl.Enum)
    assert frame.filter(pl.col("kind") == "wrong_length")["location"].null_count() == 20
    assert frame.bindf.header["ts_order"] == "little"
    # pandas: nullable integers where wrong-length frames have no value
    pdf = bindf.read(str(SAMPLE), format="astep")
    assert str(pdf["location"].dtype) == "UInt8"
    assert pdf.attrs["bindf"]["header"]["chip"] == 3


def register(monkeypatch) -> None:
    """A local registration (the lead registers the format for real after the refactor)."""
    spec = registry.FormatSpec("astep", "A-STEP layer-frame stream",
                               "bindf.formats.astep:AstepReader",
                               extensions=(".bin",), probe=looks_like_astep)
    monkeypatch.setattr(registry, "FORMATS", (*registry.FORMATS, spec))
    monkeypatch.setattr(registry, "_BY_NAME", {**registry._BY_NAME, "astep": spec})


@pytest.mark.parametrize("chunk_bytes", [18, 19, 64, 1000])
@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_batched_equals_whole(chunk_bytes, batch_size):
    whole = read(SAMPLE)
    assert read(SAMPLE, chunk_bytes=chunk_bytes, batch_size=batch_size).equals(whole)


def test_walks_without_frames_do_not_reuse_frames_still_held():
    """The sensor words are reused from walk to walk, in ``slots`` sets taken in turn. A
    walk over filler alone hands nothing out; it counted as a turn, so with a prefetch
    worker (threads > 1) the walk after it overwrote frames the consumer still held."""
    stream = SAMPLE.read_bytes()
    frames = np.frombuffer(stream[:2000], dtype=np.uint8)
    filler = np.full(1000, 0xFF, dtype=np.uint8)
    walker = astep._FrameWalker(1000, None, slots=2)
    n, *_ = walker.walk(frames, 0, len(frames), 0)
    held = walker.parsed(n, 0)
    kept = held.sensor.copy()
    assert walker.walk(filler, 0, len(filler), 0)[0] == 0  # nothing to hand out
    walker.state = _astep.new_state()
    other = np.frombuffer(stream[2000:4000], dtype=np.uint8)
    walker.walk(other, 0, len(other), 0)
    assert np.array_equal(held.sensor, kept)


def test_prefetched_walks_over_filler_give_the_frames_of_one_thread(tmp_path):
    """End to end: a run with idle stretches of 0xFF filler (the FIFO read empty), read
    with a prefetch worker, equals the one-thread read (frames got other frames' sensor
    bytes: 319 wrong rows on every run of this file)."""
    one = SAMPLE.read_bytes()
    path = tmp_path / "idle.bin"
    path.write_bytes((one[:30_000] + b"\xff" * 9_000) * 4)
    expected = read(path, chunk_bytes=4096, threads=1)
    for _ in range(3):
        assert read(path, chunk_bytes=4096, threads=2).equals(expected)


def test_projection_and_n_rows():
    whole = read(SAMPLE)
    for columns in (["tot_us"], ["sensor", "frame_index"], ["kind", "location", "fpga_ts"]):
        part = read(SAMPLE, columns=columns)
        assert part.column_names == [c for c in whole.column_names if c in columns]
        assert part.equals(whole.select(part.column_names))
    assert read(SAMPLE, n_rows=5, chunk_bytes=20).equals(whole.slice(0, 5))


def test_only_projected_columns_are_computed(monkeypatch):
    computed = []
    original = astep.FrameColumns._compute

    def spy(self, name):
        computed.append(name)
        return original(self, name)

    monkeypatch.setattr(astep.FrameColumns, "_compute", spy)
    read(SAMPLE, columns=["layer"])
    assert set(computed) == {"layer"}


def test_real_file_truncated_at_sampled_offsets(tmp_path):
    data = SAMPLE.read_bytes()
    whole = read(SAMPLE).to_pandas()
    ends = (whole.byte_offset + whole.length + 1).to_numpy()
    rng = random.Random(7)
    for cut in sorted(rng.sample(range(len(data)), 60)):
        path = tmp_path / "cut.bin"
        path.write_bytes(data[:cut])
        complete = int(np.count_nonzero(ends <= cut))
        on_boundary = cut in set(ends.tolist()) or cut == 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = read(path).to_pandas()
        assert len(got) == complete
        assert bool(caught) == (not on_boundary)
        pd.testing.assert_frame_equal(got, whole.iloc[:complete].reset_index(drop=True))


# -- generated streams ----------------------------------------------------------------
def test_truncation_at_every_offset(tmp_path):
    rng = random.Random(1)
    data, offsets = random_v3_stream(rng, 12)
    data = b"\xff\xff" + data[: offsets[4]] + b"\xff" * 3 + data[offsets[4] :]
    whole = read_bytes(tmp_path, data)
    ends = (whole["byte_offset"].to_numpy() + whole["length"].to_numpy() + 1).tolist()
    for cut in range(len(data) + 1):
        path = tmp_path / "cut.bin"
        path.write_bytes(data[:cut])
        complete = sum(1 for e in ends if e <= cut)
        inside_frame = any(start < cut < end for start, end in
                           zip(whole["byte_offset"].to_pylist(), ends, strict=True))
        if inside_frame:
            with pytest.warns(TruncatedFileWarning) as caught:
                got = read(path)
            start = max(s for s in whole["byte_offset"].to_pylist() if s < cut)
            assert caught[0].message.offset == start
        else:
            got = read(path)  # warnings are errors in this suite
        assert got.equals(whole.slice(0, complete)), cut


def read_bytes(tmp_path, data: bytes, **options) -> pa.Table:
    path = tmp_path / "stream.bin"
    path.write_bytes(data)
    return read(path, **options)


def test_empty_file(tmp_path):
    table, reader = read_with_reader(write_bytes(tmp_path, b""))
    assert table.num_rows == 0
    assert table.schema == astep.SCHEMAS[3]
    assert reader.header["chip"] == 3 and reader.header["ts_order"] == "little"
    table, reader = read_with_reader(write_bytes(tmp_path, b""), chip=4)
    assert table.schema == astep.SCHEMAS[4]


def write_bytes(tmp_path, data: bytes, name: str = "stream.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_filler_is_counted_and_skipped(tmp_path):
    rng = random.Random(2)
    data, _ = random_v3_stream(rng, 20)
    clean = read_bytes(tmp_path, data)
    frames = clean.to_pandas()
    write_astep(tmp_path / "filled.bin", frames, filler=np.arange(20) % 4)
    table, reader = read_with_reader(tmp_path / "filled.bin")
    assert reader.errors == {"filler_bytes": int((np.arange(20) % 4).sum())}
    assert table.drop(["byte_offset"]).equals(clean.drop(["byte_offset"]))
    only_filler, reader = read_with_reader(write_bytes(tmp_path, b"\xff" * 100))
    assert only_filler.num_rows == 0 and reader.errors == {"filler_bytes": 100}


def test_resync_follows_on_error(tmp_path):
    rng = random.Random(3)
    data, offsets = random_v3_stream(rng, 10)
    damaged = data[: offsets[3]] + b"\x00\x99\x02" + data[offsets[3] : offsets[7]] + b"\x20" + data[offsets[7]:]
    path = write_bytes(tmp_path, damaged, "damaged.bin")
    with pytest.raises(CorruptDataError) as info:
        read(path)
    assert info.value.offset == offsets[3]
    assert "0x00" in str(info.value)
    clean = read_bytes(tmp_path, data, chunk_bytes=64).drop(["byte_offset"])
    with pytest.warns(CorruptDataWarning) as caught:
        table, reader = read_with_reader(path, on_error="warn")
    assert [w.message.offset for w in caught] == [offsets[3], offsets[7] + 3]
    assert reader.errors == {"resync_bytes": 4, "resyncs": 2}
    assert table.drop(["byte_offset"]).equals(clean)
    table, reader = read_with_reader(path, on_error="skip", chunk_bytes=18)
    assert reader.errors == {"resync_bytes": 4, "resyncs": 2}
    assert table.drop(["byte_offset"]).equals(clean)
    # debris at the very end is a resync stretch, not a truncation
    with pytest.warns(CorruptDataWarning):
        read_bytes(tmp_path, data + b"\x01\x02", on_error="warn")


def test_raise_keeps_the_frames_before_the_damage(tmp_path):
    data, offsets = random_v3_stream(random.Random(4), 6)
    reader = AstepReader(Source(str(write_bytes(tmp_path, data[: offsets[4]] + b"\x00" + data[offsets[4]:]))))
    got = []
    with pytest.raises(CorruptDataError):
        for batch in reader.iter_batches():
            got.append(batch)
    assert sum(b.num_rows for b in got) == 4


def test_wrong_length_frames_are_kept_with_their_bytes(tmp_path):
    frames = [frame_bytes(1, v3_sensor(1, 0, 5, 9, 300), 10),
              frame_bytes(2, bytes([0x11, 0x62]), 11),  # payload 1
              frame_bytes(3, v4_sensor({"row": 3}), 12),  # payload 7 in an AstroPix 3 run
              frame_bytes(1, bytes([0x08]), 13)]  # payload 0
    table = read_bytes(tmp_path, b"".join(frames) * 3, chip=3)
    df = table.to_pandas()
    assert df.kind.astype(str).tolist()[:4] == ["v3", "wrong_length", "wrong_length", "wrong_length"]
    assert df.sensor.tolist()[:4] == [f[2:-4] for f in frames]
    assert df.payload.tolist()[:4] == [4, 1, 7, 0]
    assert df.chip_id.tolist()[:4] == [1, 2, 0, 1]
    assert df.location.isna().tolist()[:4] == [False, True, True, True]
    assert df.tot_total[0] == 300 and df.tot_us[0] == 3.0
    # the same bytes read as AstroPix 4: the payload-7 frame is the hit now
    df4 = read_bytes(tmp_path, b"".join(frames), chip=4).to_pandas()
    assert df4.kind.astype(str).tolist() == ["wrong_length", "wrong_length", "v4", "wrong_length"]
    assert df4.row.isna().tolist() == [True, True, False, True] and df4.row[2] == 3


@pytest.mark.parametrize("width", [2, 4, 6, 8])
@pytest.mark.parametrize("order", ["little", "big"])
def test_timestamp_widths_and_orders(tmp_path, width, order):
    rng = random.Random(width)
    data, _ = random_v3_stream(rng, 40, width, order, t0=0x0102030405060708)
    expected = [int.from_bytes(data[o + 7 : o + 7 + width], order)
                for o in read_bytes(tmp_path, data, ts_order="little")["byte_offset"].to_pylist()]
    table, reader = read_with_reader(write_bytes(tmp_path, data))
    assert reader.header["ts_order"] == order
    assert table["fpga_ts"].to_pylist() == expected
    assert set(table["ts_bytes"].to_pylist()) == {width}
    explicit = read_bytes(tmp_path, data, ts_order=order, ts_bytes=width)
    assert explicit["fpga_ts"].to_pylist() == expected
    assert "auto" not in AstepReader(Source(str(tmp_path / "stream.bin")), ts_order=order, chip=3).header


def test_configured_width_rejects_other_widths(tmp_path):
    four = frame_bytes(1, v3_sensor(0, 0, 1, 2, 3), 5, 4)
    two = frame_bytes(1, v3_sensor(0, 0, 1, 2, 3), 5, 2)
    data = four + two + four
    assert read_bytes(tmp_path, data).num_rows == 3
    table, reader = read_with_reader(write_bytes(tmp_path, data), ts_bytes=4, on_error="skip")
    assert table.num_rows == 2 and reader.errors["resync_bytes"] == len(two)


def v4_fields(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "layer": rng.integers(1, 4, n), "fpga_ts": np.cumsum(rng.integers(0, 100, n)),
        "chip_id": rng.integers(0, 4, n), "row": rng.integers(0, 32, n),
        "column": rng.integers(0, 32, n), "ts_neg1": rng.integers(0, 2, n),
        "ts_coarse1": rng.integers(0, 1 << 14, n), "ts_fine1": rng.integers(0, 8, n),
        "ts_tdc1": rng.integers(0, 32, n), "ts_neg2": rng.integers(0, 2, n),
        "ts_coarse2": rng.integers(0, 1 << 14, n), "ts_fine2": rng.integers(0, 8, n),
        "ts_tdc2": rng.integers(0, 32, n),
    }


def gray_to_binary(g: int) -> int:
    b = 0
    while g:
        b ^= g
        g >>= 1
    return b


def test_astropix4_fields_and_tot_modes(tmp_path):
    rng = np.random.default_rng(5)
    fields = v4_fields(rng, 300)
    # equal stamps, rollover and the firmware's 2**18 - 1 quirk must all appear
    fields["ts_coarse2"][:3] = fields["ts_coarse1"][:3]
    fields["ts_fine2"][:3] = fields["ts_fine1"][:3]
    fields["ts_neg2"][:3] = fields["ts_neg1"][:3]
    write_astep(tmp_path / "v4.bin", fields, ts_order="big", ts_bytes=8)
    table, reader = read_with_reader(tmp_path / "v4.bin")
    assert reader.header["chip"] == 4 and reader.header["ts_order"] == "big"
    assert reader.header["tot_mode"] == "firmware" and reader.header["tot_tick_ns"] == 25
    df = table.to_pandas()
    for name in astep.V4_BITS:
        if name != "payload":
            np.testing.assert_array_equal(df[name].to_numpy(int), fields[name], err_msg=name)
    assert set(df.kind.astype(str)) == {"v4"}
    np.testing.assert_array_equal(df.fpga_ts.to_numpy(np.uint64), fields["fpga_ts"])
    for i in range(len(df)):  # astep-fw's decode.py, one frame at a time
        ts1 = gray_to_binary(int(fields["ts_coarse1"][i]) << 3 | int(fields["ts_fine1"][i])) << 1 | int(fields["ts_neg1"][i])
        ts2 = gray_to_binary(int(fields["ts_coarse2"][i]) << 3 | int(fields["ts_fine2"][i])) << 1 | int(fields["ts_neg2"][i])
        tot = ts2 - ts1 if ts2 > ts1 else 2**18 - 1 + ts2 - ts1
        assert (df.ts_dec1[i], df.ts_dec2[i], df.tot_total[i]) == (ts1, ts2, tot)
        assert df.tot_us[i] == tot * 25 / 1000
    assert (df.tot_total[:3] == 2**18 - 1).all()
    modular = read(tmp_path / "v4.bin", tot_mode="modular", v4_tick_ns=12.5).to_pandas()
    np.testing.assert_array_equal(modular.tot_total, (df.ts_dec2.astype(int) - df.ts_dec1.astype(int)) % 2**18)
    np.testing.assert_array_equal(modular.tot_us, modular.tot_total * 12.5 / 1000)
    assert (modular.tot_total[:3] == 0).all()


def test_writer_module():
    # the writer lives apart from the reader; the registry's writer= and the old path
    # (bindf.formats.astep.write_astep) reach it
    import importlib

    module, name = registry.get_format("astep").writer.split(":")
    assert getattr(importlib.import_module(module), name) is _astep_writer.write_astep
    assert astep.write_astep is _astep_writer.write_astep


def test_apx_tot_mode_matches_read_apx(tmp_path):
    rng = np.random.default_rng(6)
    fields = v4_fields(rng, 200)
    write_astep(tmp_path / "v4.bin", fields)
    hits = {k: v for k, v in fields.items() if k not in ("layer", "fpga_ts")}
    hits["readout_id"] = np.arange(200)
    hits["timestamp"] = np.zeros(200, np.uint64)
    bindf.write_apx(tmp_path / "same.apx", hits)
    apx_hits = bindf.read_apx(tmp_path / "same.apx")
    got = read(tmp_path / "v4.bin", tot_mode="apx").to_pandas()
    for name in ("ts_dec1", "ts_dec2", "tot_us"):
        np.testing.assert_array_equal(got[name].to_numpy(), apx_hits[name].to_numpy(), err_msg=name)


def test_writer_round_trips_the_real_file(tmp_path):
    frames = read(SAMPLE)
    write_astep(tmp_path / "copy.bin", frames)
    assert (tmp_path / "copy.bin").read_bytes() == SAMPLE.read_bytes()
    write_astep(tmp_path / "copy.bin", pl.from_arrow(frames))
    assert (tmp_path / "copy.bin").read_bytes() == SAMPLE.read_bytes()


def test_writer_from_astropix3_fields(tmp_path):
    frames = read(SAMPLE).to_pandas()
    hits = frames[frames.kind == "v3"].drop(columns=["sensor"])
    write_astep(tmp_path / "v3.bin", hits)
    again = read(tmp_path / "v3.bin").to_pandas()
    for name in ("layer", "chip_id", "column", "location", "chip_timestamp", "tot_total", "fpga_ts"):
        np.testing.assert_array_equal(again[name].to_numpy(float), hits[name].to_numpy(float))


def test_writer_refuses_what_would_not_read_back(tmp_path):
    base = {"layer": [1], "fpga_ts": [5]}
    with pytest.raises(ValueError, match="announces"):
        write_astep(tmp_path / "x.bin", {**base, "sensor": [b"\x14\x00"]})
    with pytest.raises(ValueError, match="1 to 8"):
        write_astep(tmp_path / "x.bin", {**base, "sensor": [b""]})
    with pytest.raises(ValueError, match="does not fit"):
        write_astep(tmp_path / "x.bin", {"layer": [1], "fpga_ts": [70000], "sensor": [b"\x08"]},
                    ts_bytes=2)
    with pytest.raises(ValueError, match="does not fit"):
        write_astep(tmp_path / "x.bin", {**base, "chip_id": [40], "column": [0], "location": [1],
                                         "chip_timestamp": [0], "tot_total": [1]})
    with pytest.raises(ValueError, match="missing"):
        write_astep(tmp_path / "x.bin", {**base, "chip_id": [1]}, chip=3)
    assert not (tmp_path / "x.bin").exists()  # atomic: nothing left behind


def test_option_validation(tmp_path):
    path = str(SAMPLE)
    for bad in ({"ts_order": "middle"}, {"ts_bytes": 3}, {"chip": 5}, {"tot_mode": "x"},
                {"v3_tick_ns": 0}, {"v4_tick_ns": float("nan")}, {"chunk_bytes": 5}):
        with pytest.raises(ValueError):
            AstepReader(Source(path), **bad)
    with pytest.raises(TypeError, match="unexpected"):
        AstepReader(Source(path), level="hits")


def test_v3_tick_option():
    df = read(SAMPLE, v3_tick_ns=5).to_pandas()
    golden = pd.read_csv(GOLDEN)
    np.testing.assert_array_equal(df.tot_us.to_numpy(float), (golden.tot_total * 5 / 1000).to_numpy())


# -- detection --------------------------------------------------------------------------
def probe(path: Path, fn=looks_like_astep) -> bool:
    source = Source(str(path))
    return fn(source.read_head(registry.PROBE_BYTES), source)


def flim_files() -> list[Path]:
    found = [p for p in [*DATA.iterdir(), *SAMPLES_DIR.iterdir()]
             if p.suffix in (".bin", ".apx", ".csv", ".log")]
    return [p for p in found if "quad_chip" not in p.name]


def test_probe_accepts_astep_streams(tmp_path):
    assert probe(SAMPLE)
    data, _ = random_v3_stream(random.Random(8), 30, 6, "big")
    assert probe(write_bytes(tmp_path, data))
    assert probe(write_bytes(tmp_path, b"\xff" * 50 + data))
    assert probe(write_bytes(tmp_path, data[5:]))  # starts inside a frame (≤ 17 bytes)
    write_astep(tmp_path / "v4.bin", v4_fields(np.random.default_rng(0), 40))
    assert probe(tmp_path / "v4.bin")


@pytest.mark.parametrize("path", flim_files(), ids=lambda p: p.name)
def test_probe_rejects_other_samples(path):
    assert not probe(path)


def test_probe_rejects_legacy_spectro_random_and_degenerate(tmp_path):
    rng = np.random.default_rng(9)
    n = 500
    write_spectro(tmp_path / "legacy.bin", {
        "event": rng.integers(0, 18, n), "microtime_ns": rng.random(n) * 25,
        "macrotime_ns": np.cumsum(rng.random(n) * 100)}, container="legacy")
    assert not probe(tmp_path / "legacy.bin")
    for seed in range(300):
        noise = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        assert not probe(write_bytes(tmp_path, noise)), seed
    for degenerate in (b"", b"\xff" * 4096, b"\x00" * 4096, b"\x0a" * 4096):
        assert not probe(write_bytes(tmp_path, degenerate))
    data, _ = random_v3_stream(random.Random(10), 10)  # too few frames to be sure
    assert not probe(write_bytes(tmp_path, data))
    # debris in the middle of the head: not a clean run
    data, offsets = random_v3_stream(random.Random(11), 40)
    assert not probe(write_bytes(tmp_path, data[: offsets[20]] + b"\x00" + data[offsets[20]:]))


@pytest.mark.parametrize("fn", [looks_like_legacy_spectro, looks_like_apx_log])
def test_other_probes_do_not_claim_astep_files(tmp_path, fn):
    assert not probe(SAMPLE, fn)
    for seed in range(20):
        rng = random.Random(seed)
        data, _ = random_v3_stream(rng, 300, rng.choice([2, 4, 6, 8]), rng.choice(["little", "big"]))
        assert not probe(write_bytes(tmp_path, data), fn)
        write_astep(tmp_path / "v4.bin", v4_fields(np.random.default_rng(seed), 300),
                    ts_order=rng.choice(["little", "big"]))
        assert not probe(tmp_path / "v4.bin", fn)


def test_detection_through_a_registered_spec(monkeypatch, tmp_path):
    register(monkeypatch)
    assert registry.detect_format(Source(str(SAMPLE))).name == "astep"
    for path in flim_files():
        if path.suffix == ".bin":
            assert registry.detect_format(Source(str(path))).name != "astep", path


def test_header_round_trips_as_json():
    import json

    header = AstepReader(Source(str(SAMPLE))).header
    assert json.loads(json.dumps(header)) == header
    assert os.path.getsize(SAMPLE) == 22010


@pytest.mark.parametrize("copies", [1, 15])  # 22 KB; 330 KB, beyond a full sample
@pytest.mark.parametrize("first_flush", [12, 1000])
def test_follow_from_a_short_start_equals_the_finished_read(tmp_path, first_flush, copies):
    """The automatic choices (timestamp order, chip) made from the first flush of a file
    still being written may differ from those of the finished file: a follower waits
    for a full sample (or the end of the file) before it decides, so that its frames
    equal the read of the finished file."""
    import threading
    import time

    frames = pa.concat_tables([bindf.read(DATA / "quad_chip_data.bin", output="arrow")] * copies)
    big = tmp_path / "big_endian.bin"
    write_astep(big, frames, ts_order="big")  # a short start looks little-endian
    data = big.read_bytes()
    live = tmp_path / "live.bin"
    live.write_bytes(data[:first_flush])

    def write_the_rest() -> None:
        time.sleep(0.3)  # the follower has polled the short file many times by then
        with open(live, "ab") as f:
            f.write(data[first_flush:])

    writer = threading.Thread(target=write_the_rest)
    writer.start()
    try:
        got = list(bindf.follow(live, format="astep", poll_interval=0.01, idle_timeout=1.0,
                                output="arrow"))
    finally:
        writer.join()
    expected = bindf.read(live, format="astep", output="arrow")
    assert bindf.read_header(live, format="astep")["ts_order"] == "big"
    table = pa.concat_tables(t.replace_schema_metadata(None) for t in got)
    assert table.equals(expected.replace_schema_metadata(None))


def test_a_read_that_stops_early_reports_only_the_damage_it_read(data_dir, tmp_path,
                                                                 monkeypatch):
    """Under ``"warn"`` a read of the first rows warns of, and counts, the damage and
    filler of the chunks it read only, on two threads as on one (the prefetch worker's
    chunks decoded ahead reached the read's warnings and counts at once)."""
    data = (data_dir / "quad_chip_data.bin").read_bytes() * 40
    frame_starts = bindf.read(data_dir / "quad_chip_data.bin", format="astep",
                              output="arrow")["byte_offset"].to_pylist()
    starts = [o + len(data) // 40 * r for r in range(40) for o in frame_starts]
    damaged = bytearray(data)
    at = [min(s for s in starts if s >= target) for target in (100, 70_000, 300_000)]
    for offset in at:  # the first chunk (64 KiB), the second, a later one
        damaged[offset] = 0x01  # a length byte that starts no frame
    path = tmp_path / "damaged.bin"
    path.write_bytes(bytes(damaged))
    made = astep.FrameColumns

    def slow_columns(*args, **kwargs):  # (the worker gets as far ahead as it may go)
        time.sleep(0.02)
        return made(*args, **kwargs)

    monkeypatch.setattr(astep, "FrameColumns", slow_columns)

    def stop_early(threads: int) -> tuple[list[int | None], dict[str, int]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            head = bindf.read(path, format="astep", n_rows=5, threads=threads,
                              on_error="warn", chunk_bytes=64 << 10, output="arrow")
        return ([w.message.offset for w in caught],
                bindf.arrow.table_info(head).get("errors"))

    one = stop_early(1)
    assert one[0] == [at[0]] and one[1]["resyncs"] == 1
    for _ in range(3):
        assert stop_early(2) == one


@pytest.mark.parametrize("threads", [1, 2])
def test_a_read_that_stops_before_damage_counts_no_resync_under_raise(data_dir, tmp_path,
                                                                      threads):
    """Under ``on_error="raise"`` nothing is skipped: a read of the first rows, which
    stops before the damage, reports no resync, whatever the threads (on two, the
    prefetch thread decodes the damaged chunk ahead and counted one)."""
    data = (data_dir / "quad_chip_data.bin").read_bytes() * 136  # ~3 MB: prefetched
    first = bindf.read(data_dir / "quad_chip_data.bin", format="astep", output="arrow")
    starts = [o + len(data) // 136 * r for r in range(136)
              for o in first["byte_offset"].to_pylist()]
    at = min(s for s in starts if s >= 150_000)
    damaged = bytearray(data)
    damaged[at] = 0x01  # a length byte that starts no frame
    path = tmp_path / "damaged.bin"
    path.write_bytes(bytes(damaged))
    head = bindf.read(path, format="astep", n_rows=5, threads=threads, output="arrow")
    assert head.num_rows == 5 and "errors" not in bindf.arrow.table_info(head)
    with pytest.raises(bindf.CorruptDataError, match=f"at byte offset {at}"):
        bindf.read(path, format="astep", threads=threads)
