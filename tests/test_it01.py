"""FLIM LABS IT01 (intensity tracing v1): the real example (a cut of it in tests/data, the
whole file when the shared sample set is around), slot → channel mapping and its
warning, raw slots, writer round trips, edge cases; the headerless 40-byte recipe."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bindf
from bindf.errors import AmbiguousChannelMappingWarning, HeaderError, TruncatedFileWarning

CUT = Path(__file__).parent / "data" / "it01_intensity-tracing-first1000.bin"
#: The whole example export (483 KB, 12,078 records).
FULL = CUT.parent / "it01_intensity-tracing-export-data-example.bin"
HEADER = {"channels": [0, 1], "bin_width_micros": 3000, "acquisition_time_millis": None,
          "laser_period_ns": 25.0}
# The record spelled out independently of bindf: struct '<d8I'.
RAW = np.dtype([("t", "<f8"), ("s", "<u4", (8,))])
assert RAW.itemsize == 40


def numpy_parse(path: Path) -> tuple[dict, np.ndarray]:
    data = path.read_bytes()
    assert data[:4] == b"IT01"
    (length,) = struct.unpack_from("<I", data, 4)
    body = data[8 + length:]
    return json.loads(data[8:8 + length]), np.frombuffer(body[:len(body) // 40 * 40], RAW)


def it01_bytes(header: dict, records: np.ndarray | bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    body = records if isinstance(records, bytes) else records.tobytes()
    return b"IT01" + struct.pack("<I", len(raw)) + raw + body


def test_real_cut_values() -> None:
    df = bindf.read(CUT, output="polars")  # detected by magic
    assert df.bindf.format == "it01" and df.bindf.header == HEADER
    assert df.columns == ["time_ns", "ch1", "ch2"] and df.height == 1000
    assert df.schema["ch1"] == pl.UInt32 and df.schema["time_ns"] == pl.Float64
    assert df.row(0) == (3000035.15625, 5624, 0)
    assert df.row(1) == (6000120.1171875, 31396, 0)
    assert df.row(2) == (9000229.98046875, 31391, 0)
    assert df.row(-1) == (3000047233.8867188, 31059, 0)
    assert df["ch1"].sum() == 31192766 and df["ch1"].max() == 31515
    header, raw = numpy_parse(CUT)
    np.testing.assert_array_equal(df["time_ns"].to_numpy(), raw["t"])
    np.testing.assert_array_equal(df["ch1"].to_numpy(), raw["s"][:, 0])
    assert (df["ch2"] == 0).all()


def test_real_full_file_values() -> None:
    assert FULL.stat().st_size == 483224
    df = bindf.read_it01(FULL, output="polars")
    assert df.height == 12078
    assert df.row(-1) == (36234779874.02344, 25531, 0)
    assert df["ch1"].sum() == 327927561 and df["ch1"].max() == 31515
    slots = bindf.read_it01(FULL, slots=True, output="polars")
    assert all(slots[f"slot_{i}"].sum() == 0 for i in range(1, 8))


def test_slots_option_gives_the_raw_slots() -> None:
    df = bindf.read_it01(CUT, slots=True, output="polars")
    assert df.columns == ["time_ns"] + [f"slot_{i}" for i in range(8)]
    _, raw = numpy_parse(CUT)
    np.testing.assert_array_equal(df.select(pl.exclude("time_ns")).to_numpy(), raw["s"])


def _random_records(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, RAW)
    rec["t"] = (np.arange(n) + 1) * 1e6 + rng.random(n)
    rec["s"] = rng.integers(0, 2**32, size=(n, 8), dtype=np.uint32)
    return rec


def test_slot_i_is_channels_i_with_a_warning_when_ambiguous(tmp_path: Path) -> None:
    rec = _random_records(30)
    path = tmp_path / "x.bin"
    path.write_bytes(it01_bytes({"channels": [1, 4, 6]}, rec))
    with pytest.warns(AmbiguousChannelMappingWarning, match="ambiguous") as caught:
        df = bindf.read_it01(path, output="polars")
    assert isinstance(caught[0].message, bindf.BindfWarning)
    assert caught[0].message.path == str(path)
    assert df.columns == ["time_ns", "ch2", "ch5", "ch7"]
    for i, name in enumerate(["ch2", "ch5", "ch7"]):
        np.testing.assert_array_equal(df[name].to_numpy(), rec["s"][:, i])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bindf.read_it01(path, slots=True)  # raw slots: nothing to be ambiguous about
        path.write_bytes(it01_bytes({"channels": [0, 1, 2]}, rec))
        bindf.read_it01(path)  # [0..k-1]: both readings agree


def test_projection_reads_only_the_asked_slots(tmp_path: Path) -> None:
    rec = _random_records(100)
    path = tmp_path / "x.bin"
    path.write_bytes(it01_bytes({"channels": [0, 1, 2, 3]}, rec))
    df = bindf.read_it01(path, columns=["ch3"], output="polars")
    np.testing.assert_array_equal(df["ch3"].to_numpy(), rec["s"][:, 2])
    assert_frame_equal(pl.scan_it01(path).select("ch4").collect(),
                       bindf.read_it01(path, output="polars").select("ch4"))


@pytest.mark.parametrize("header, why", [
    ({}, "channels"), ({"channels": [0, 0]}, "twice"), ({"channels": list(range(9))}, "8 slots"),
    ({"channels": [-1]}, "non-negative"), ({"channels": []}, "empty"),
])
def test_unusable_channels_are_header_errors(header: dict, why: str, tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(it01_bytes(header, _random_records(2)))
    with pytest.raises(HeaderError, match=why) as raised:
        bindf.read_it01(path)
    # at the JSON header, past the magic and its length field
    assert (raised.value.path, raised.value.offset) == (str(path), 8)
    assert bindf.read_it01(path, slots=True).shape == (2, 9)  # raw slots need no channels


def test_bad_option_value(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="slots"):
        bindf.read_it01(CUT, slots="yes")


def test_empty_body_and_truncation_at_every_offset(tmp_path: Path) -> None:
    data = CUT.read_bytes()[:8 + 96 + 4 * 40]
    start = 8 + 96
    whole = bindf.read_it01(CUT, output="arrow", n_rows=4).replace_schema_metadata(None)
    path = tmp_path / "cut.bin"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < start:
            with pytest.raises(bindf.BindfError) as info:
                bindf.read_it01(path)
            assert info.value.offset is not None
            continue
        complete, partial = divmod(cut - start, 40)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = bindf.read_it01(path, output="arrow").replace_schema_metadata(None)
        assert table.equals(whole.slice(0, complete))  # cut == start: an empty table
        assert [type(w.message) for w in caught] == ([TruncatedFileWarning] if partial else [])
        if partial:
            assert caught[0].message.offset == start + 40 * complete


def test_header_length_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "bomb.bin"
    path.write_bytes(b"IT01" + struct.pack("<I", 10**9) + b"{}" + bytes(40))
    with pytest.raises(HeaderError) as info:
        bindf.read_it01(path)
    assert info.value.offset == 4


def test_round_trips(tmp_path: Path) -> None:
    df = bindf.read_it01(CUT)
    out = tmp_path / "again.bin"
    bindf.write_it01(out, df)  # header inherited; slots 2..7 written as zeros
    assert out.read_bytes() == CUT.read_bytes()  # the real slots 2..7 are all zero
    slots = bindf.read_it01(CUT, slots=True)
    bindf.write_it01(out, slots)
    assert out.read_bytes() == CUT.read_bytes()
    rec = _random_records(20)
    src = tmp_path / "src.bin"
    src.write_bytes(it01_bytes({"channels": [0, 1, 2, 3, 4, 5, 6, 7]}, rec))
    bindf.write_it01(out, bindf.read_it01(src, slots=True))
    assert out.read_bytes() == src.read_bytes()
    bindf.write_it01(out, {"time_ns": [1.0, 2.0], "ch3": [5, 6]})  # channels from names
    again = bindf.read_it01(out, output="polars", slots=True)
    assert again.bindf.header == {"channels": [2]} and again["slot_0"].to_list() == [5, 6]


def test_dask_partitions(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    import bindf.dask

    ddf = bindf.dask.read_it01(CUT, blocksize=40 * 300)
    assert ddf.npartitions > 1
    assert ddf.compute().reset_index(drop=True).equals(bindf.read_it01(CUT))


def test_intensity_helpers_work_on_it01_frames() -> None:
    df = bindf.read_it01(CUT, output="polars")
    rebinned = df.bindf.rebin(6000)
    assert rebinned["ch1"][0] == 5624 + 31396
    assert df.bindf.count_rate()["ch1"][0] == pytest.approx(5624 / 3e-3)


def test_headerless_variant_recipe(tmp_path: Path) -> None:
    """The 2023 headerless file (no magic, no header, '<d8I' records) is not a built-in
    format; the docs' read_records recipe reads it."""
    rec = _random_records(25)
    path = tmp_path / "photons-tracing.bin"
    path.write_bytes(rec.tobytes() + b"\x00" * 7)
    with pytest.warns(TruncatedFileWarning):
        df = bindf.read_records(path, dtype=[("time", "<f8"), ("slot", "<u4", (8,))])
    assert list(df.columns) == ["time"] + [f"slot_{i}" for i in range(8)]
    np.testing.assert_array_equal(df["time"].to_numpy(), rec["t"])
    np.testing.assert_array_equal(df[[f"slot_{i}" for i in range(8)]].to_numpy(), rec["s"])
    with pytest.raises(bindf.UnknownFormatError):
        bindf.read(path)  # not detected: nothing in the bytes identifies it
