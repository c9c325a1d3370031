"""FLIM LABS IT02 intensity tracing: real sample, hand-made files, kernel parity, round trips."""

from __future__ import annotations

import json
import math
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import raises_from_scan
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bindf
from bindf._kernels import _it02
from bindf._kernels import it02_reference as ref
from bindf._source import Source
from bindf.errors import (
    CorruptDataError,
    CorruptDataWarning,
    HeaderError,
    TruncatedFileWarning,
    UnknownFormatError,
)
from bindf.formats import _it02_layout, _it02_writer, it02
from bindf.formats.it02 import IT02Reader, write_it02

SAMPLE = "intensity-tracing-export-data-example.bin"
SAMPLE_HEADER = {"channels": [1, 3, 4], "bin_width_micros": 1000,
                 "acquisition_time_millis": 3000, "laser_period_ns": 25.0}
HYPOTHESIS = settings(max_examples=40, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- helpers ------------------------------------------------------------------------------


def preamble(header: dict) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    return b"IT02" + struct.pack("<I", len(text)) + text


def sparse_record(time: float, counts_by_position: dict[int, int]) -> bytes:
    """One sparse record, built by hand: counts for the set bits, lowest bit first."""
    mask = sum(1 << k for k in counts_by_position)
    values = [counts_by_position[k] for k in sorted(counts_by_position)]
    return struct.pack("<dB", time, mask) + struct.pack(f"<{len(values)}I", *values)


def end_marker(time: float) -> bytes:
    return struct.pack("<dB", time, 0)


def write(tmp_path: Path, data: bytes, name: str = "f.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read(path, **kw) -> pd.DataFrame:
    return bindf.read_it02(path, **kw)


def numpy_parse_dense(path: Path) -> tuple[dict, np.ndarray]:
    raw = path.read_bytes()
    (length,) = struct.unpack_from("<I", raw, 4)
    header = json.loads(raw[8:8 + length])
    n = len(header["channels"])
    dtype = np.dtype([("t", "<f8"), ("c", "<u4", (n,))])
    return header, np.frombuffer(raw, dtype=dtype, offset=8 + length)


@contextmanager
def small_chunks(n_bytes: int, rows: int = 3):
    """Make the reader's read buffer tiny, so chunk boundaries cut records, and its
    output/scratch arrays a few rows long, so batches end inside chunks too."""
    with mock.patch.object(it02, "CHUNK_BYTES", n_bytes), \
            mock.patch.object(it02, "OUTPUT_ROWS", rows), \
            mock.patch.object(it02, "SCRATCH_ROWS", rows):
        yield


def frame(times, counts: dict[str, list[int]]) -> pd.DataFrame:
    data = {"time_ns": np.asarray(times, dtype=np.float64)}
    data.update({k: np.asarray(v, dtype=np.uint32) for k, v in counts.items()})
    return pd.DataFrame(data)


def fill_model(times: np.ndarray, counts: np.ndarray, bin_ns: float):
    """Every bin from first to last; the documented rule, written as a plain loop."""
    bins = []
    last_t = last_b = None
    for t in times:
        if last_t is None:
            b = math.floor(t / bin_ns + 0.5)
        else:
            step = math.floor((t - last_t) / bin_ns + 0.5)
            assert step >= 1
            b = last_b + step
        bins.append(b)
        last_t, last_b = t, b
    if not bins:
        return np.empty(0), np.empty((0, counts.shape[1]), np.uint32)
    out = np.zeros((bins[-1] - bins[0] + 1, counts.shape[1]), dtype=np.uint32)
    out[np.array(bins) - bins[0]] = counts
    return np.arange(bins[0], bins[-1] + 1) * bin_ns, out


# -- the real sample ------------------------------------------------------------------------


def test_real_sample_matches_numpy_parse(data_dir):
    path = data_dir / SAMPLE
    header, records = numpy_parse_dense(path)
    df = read(path)
    assert list(df.columns) == ["time_ns", "ch2", "ch4", "ch5"]
    assert len(df) == 2999 == len(records)
    assert df["time_ns"].dtype == np.float64
    assert all(df[c].dtype == np.uint32 for c in ["ch2", "ch4", "ch5"])
    np.testing.assert_array_equal(df["time_ns"].to_numpy(), records["t"])
    for i, name in enumerate(["ch2", "ch4", "ch5"]):
        np.testing.assert_array_equal(df[name].to_numpy(), records["c"][:, i])
    assert df["time_ns"].iloc[0] == 1000875.0
    assert df["ch2"].iloc[:3].tolist() == [123, 3, 1093]
    info = df.attrs["bindf"]
    assert info["format"] == "it02"
    assert info["header"] == {**header, "layout": "dense"}
    assert "acquisition_end_ns" not in info["header"]


def test_bundled_sample_is_the_head_of_the_real_export(data_dir):
    bundled = Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin"
    df = bindf.read(bundled, output="polars")  # format detected from the magic
    assert df.bindf.format == "it02"
    assert df.equals(pl.read_it02(data_dir / SAMPLE).head(200))


def test_real_sample_is_detected_dense_and_counts_rows(data_dir):
    reader = IT02Reader(Source(str(data_dir / SAMPLE)))
    assert reader.layout == "dense"
    assert reader.count_rows() == 2999
    assert bindf.detect_format(Source(str(data_dir / SAMPLE))).name == "it02"
    assert bindf.read_header(data_dir / SAMPLE)["channels"] == [1, 3, 4]


def test_real_sample_layout_override(data_dir):
    path = data_dir / SAMPLE
    assert read(path, layout="dense").equals(read(path))
    # Read as sparse, the first record's "mask" is the low byte of the first count (123).
    with pytest.raises(CorruptDataError) as err:
        read(path, layout="sparse")
    assert err.value.offset == 106
    assert "0x7b" in str(err.value)


def test_real_sample_pandas_polars_scan(data_dir):
    path = data_dir / SAMPLE
    pdf = pd.read_it02(path)
    assert pdf.attrs["bindf"]["header"]["channels"] == [1, 3, 4]
    assert pdf.bindf.header["bin_width_micros"] == 1000
    plf = pl.read_it02(path)
    assert plf.bindf.header == pdf.bindf.header
    assert plf.shape == (2999, 4)
    lazy = pl.scan_it02(path)
    assert lazy.bindf.header["layout"] == "dense"
    assert lazy.collect().equals(plf)
    assert pl.from_pandas(pdf).equals(plf)
    # projection, predicate, head pushed into the scan
    got = lazy.filter(pl.col("ch2") > 2250).select("time_ns").head(7).collect()
    want = plf.filter(pl.col("ch2") > 2250).select("time_ns").head(7)
    assert got.equals(want) and got.height == 7
    assert lazy.select("ch4").collect().equals(plf.select("ch4"))
    assert lazy.head(3).collect().equals(plf.head(3))
    assert bindf.scan_it02(path).select(pl.len()).collect().item() == 2999


def test_real_sample_batched_equals_whole(data_dir):
    path = data_dir / SAMPLE
    whole = read(path, output="arrow")
    for size in (1, 7, 1000, 5000):
        batches = list(bindf.iter_batches(path, format="it02", batch_size=size))
        assert all(b.num_rows <= size for b in batches)
        assert pa.Table.from_batches(batches).equals(whole.replace_schema_metadata(None))
    chunks = list(read(path, chunksize=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 999]
    assert pd.concat(chunks, ignore_index=True).equals(read(path))


def test_real_sample_columns_and_n_rows(data_dir):
    path = data_dir / SAMPLE
    full = read(path)
    assert read(path, columns=["ch5", "ch2"]).equals(full[["ch5", "ch2"]])
    assert read(path, n_rows=10).equals(full.head(10))


def test_real_sample_fill_gaps_follows_drifting_clock(data_dir):
    # The device clock drifts by ~1 bin over the run: bins are indexed by time
    # *differences*, so no bin is invented or merged; times become nominal.
    path = data_dir / SAMPLE
    full = read(path)
    filled = read(path, fill_gaps=True)
    assert len(filled) == 2999
    np.testing.assert_array_equal(filled["time_ns"], np.arange(1, 3000) * 1e6)
    assert filled[["ch2", "ch4", "ch5"]].equals(full[["ch2", "ch4", "ch5"]])


def test_real_sample_rewrites_byte_identical(data_dir, tmp_path):
    path = data_dir / SAMPLE
    df = read(path)
    out = tmp_path / "copy.bin"
    write_it02(out, df, df.bindf.header, layout="dense")
    assert out.read_bytes() == path.read_bytes()


def test_real_sample_as_sparse_round_trip(data_dir, tmp_path):
    df = pl.read_it02(data_dir / SAMPLE)
    out = tmp_path / "sparse.bin"
    bindf.write_it02(out, df, df.bindf.header, layout="sparse")
    back = pl.read_it02(out)
    assert back.bindf.header["layout"] == "sparse"
    assert back.bindf.header["acquisition_end_ns"] == df["time_ns"].max()
    # rows where every channel is 0 are omitted by the sparse writer: none in the sample
    assert back.equals(df)
    # 2999 records with one set bit: 13 bytes each, plus the 9-byte end marker
    assert out.stat().st_size == len(preamble(SAMPLE_HEADER)) + 2999 * 13 + 9


def test_multi_file_read(data_dir, tmp_path):
    df = read(data_dir / SAMPLE)
    other = tmp_path / "other.bin"
    write_it02(other, df.head(5), SAMPLE_HEADER, layout="sparse")
    both = read([data_dir / SAMPLE, other], include_file_paths="path")
    assert len(both) == 3004
    assert both["path"].iloc[-1] == str(other)


# -- hand-made sparse files ---------------------------------------------------------------


HEADER3 = {"channels": [0, 2, 5], "bin_width_micros": 10, "acquisition_time_millis": None,
           "channel_names": {"2": "GFP"}}


def sparse_sample() -> tuple[bytes, pd.DataFrame]:
    records = [
        sparse_record(10_000.0, {0: 5}),
        sparse_record(20_000.0, {1: 7, 2: 1}),
        sparse_record(30_000.0, {0: 1, 1: 2, 2: 3}),
        # bins 4 and 5 (all zero) omitted
        sparse_record(60_000.0, {2: 4_000_000_000}),
    ]
    expected = frame([1e4, 2e4, 3e4, 6e4],
                     {"ch1": [5, 0, 1, 0], "ch3": [0, 7, 2, 0], "ch6": [0, 1, 3, 4_000_000_000]})
    return preamble(HEADER3) + b"".join(records) + end_marker(65_000.0), expected


def test_sparse_hand_made(tmp_path):
    data, expected = sparse_sample()
    path = write(tmp_path, data)
    df = read(path)
    assert df.equals(expected)
    assert df.attrs["bindf"]["header"] == {**HEADER3, "layout": "sparse",
                                           "acquisition_end_ns": 65_000.0}
    reader = IT02Reader(Source(str(path)))
    assert reader.layout == "sparse" and reader.count_rows() is None
    assert read(path, layout="sparse").equals(expected)


def test_sparse_batched_and_tiny_chunks_equal_whole(tmp_path):
    data, expected = sparse_sample()
    path = write(tmp_path, data)
    for chunk in (1, 9, 10, 13, 20, 50):
        with small_chunks(chunk):
            for size in (1, 2, 3, 100):
                got = pd.concat(list(read(path, chunksize=size)), ignore_index=True)
                assert got.equals(expected), (chunk, size)


def test_sparse_fill_gaps(tmp_path):
    data, expected = sparse_sample()
    path = write(tmp_path, data)
    filled = read(path, fill_gaps=True)
    np.testing.assert_array_equal(filled["time_ns"], np.arange(1, 7) * 1e4)
    assert filled["ch6"].tolist() == [0, 1, 3, 0, 0, 4_000_000_000]
    assert filled["ch1"].tolist() == [5, 0, 1, 0, 0, 0]
    for chunk in (1, 13, 40):
        with small_chunks(chunk):
            for size in (1, 2, 4, 100):
                got = pd.concat(list(read(path, fill_gaps=True, chunksize=size)),
                                ignore_index=True)
                assert got.equals(filled), (chunk, size)
    assert read(path, fill_gaps=True, n_rows=4).equals(filled.head(4))
    lazy = pl.scan_it02(path, fill_gaps=True)
    assert lazy.collect().equals(pl.from_pandas(filled))
    assert lazy.filter(pl.col("ch1") == 0).select("time_ns").collect()["time_ns"].to_list() \
        == [2e4, 4e4, 5e4, 6e4]


def test_fill_gaps_huge_gap_is_produced_in_windows(tmp_path):
    header = {"channels": [0], "bin_width_micros": 1}
    data = preamble(header) + sparse_record(1000.0, {0: 1}) + sparse_record(5e6, {0: 2}) \
        + end_marker(5e6)
    path = write(tmp_path, data)
    batches = list(bindf.iter_batches(path, fill_gaps=True, batch_size=1000))
    assert sum(b.num_rows for b in batches) == 5000
    assert max(b.num_rows for b in batches) <= 1000
    table = pa.Table.from_batches(batches)
    assert table["ch1"][0].as_py() == 1 and table["ch1"][-1].as_py() == 2
    assert pa.compute.sum(table["ch1"]).as_py() == 3


def test_fill_gaps_rejects_records_in_the_same_bin(tmp_path):
    header = {"channels": [0], "bin_width_micros": 1}
    records = [sparse_record(1000.0, {0: 1}), sparse_record(2000.0, {0: 2}),
               sparse_record(2300.0, {0: 3}), sparse_record(4000.0, {0: 4})]
    path = write(tmp_path, preamble(header) + b"".join(records))
    offset = len(preamble(header)) + 2 * 13
    with pytest.raises(CorruptDataError) as err:
        read(path, fill_gaps=True)
    assert err.value.offset == offset
    assert "half a bin" in str(err.value)
    # without fill_gaps the records are simply returned
    assert read(path)["ch1"].tolist() == [1, 2, 3, 4]
    with pytest.warns(CorruptDataWarning):
        df = read(path, fill_gaps=True, on_error="warn")
    assert df["ch1"].tolist() == [1, 2, 0, 4]
    assert df.attrs["bindf"]["errors"] == {"time_not_increasing": 1}
    with small_chunks(13):
        skipped = read(path, fill_gaps=True, on_error="skip")
    assert skipped.equals(df)


def test_fill_gaps_non_finite_time(tmp_path):
    header = {"channels": [0], "bin_width_micros": 1}
    records = [sparse_record(1000.0, {0: 1}), sparse_record(math.nan, {0: 2}),
               sparse_record(2000.0, {0: 3})]
    path = write(tmp_path, preamble(header) + b"".join(records))
    with pytest.raises(CorruptDataError) as err:
        read(path, fill_gaps=True, layout="sparse")
    assert err.value.offset == len(preamble(header)) + 13
    df = read(path, fill_gaps=True, layout="sparse", on_error="skip")
    assert df["ch1"].tolist() == [1, 3]
    assert math.isnan(read(path, layout="sparse")["time_ns"][1])


def test_fill_gaps_needs_bin_width(tmp_path):
    data = preamble({"channels": [0]}) + sparse_record(1.0, {0: 1}) + end_marker(2.0)
    path = write(tmp_path, data)
    assert read(path)["ch1"].tolist() == [1]
    with pytest.raises(HeaderError, match="bin_width_micros"):
        read(path, fill_gaps=True)


def test_sparse_corrupt_mask_names_offset(tmp_path):
    header = {"channels": [0, 1], "bin_width_micros": 1}
    good = sparse_record(1000.0, {0: 1}) + sparse_record(2000.0, {0: 2, 1: 3})
    bad = struct.pack("<dB", 3000.0, 0b100) + struct.pack("<I", 9)
    after = sparse_record(4000.0, {1: 1})
    path = write(tmp_path, preamble(header) + good + bad + after + end_marker(5000.0))
    offset = len(preamble(header)) + len(good)
    for chunk in (None, 10):
        with small_chunks(chunk or it02.CHUNK_BYTES):
            with pytest.raises(CorruptDataError) as err:
                read(path, layout="sparse")
        assert err.value.offset == offset
        assert err.value.path == str(path)
        assert "0x04" in str(err.value)
    with pytest.warns(CorruptDataWarning) as caught:
        df = read(path, layout="sparse", on_error="warn")
    assert caught[0].message.offset == offset
    assert df["ch1"].tolist() == [1, 2]
    assert df.attrs["bindf"]["errors"] == {"bad_mask": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read(path, layout="sparse", on_error="skip")["ch2"].tolist() == [0, 3]


SPARSE_DAMAGE_HEADER = {"channels": [0, 3], "bin_width_micros": 10}


def sparse_trace(tmp_path: Path, n: int, name: str) -> tuple[Path, list[int]]:
    """A realistic sparse file of ``n`` bins (all-zero ones left out by the writer) and the
    byte offset of each record, found by walking the chain by hand."""
    rng = np.random.default_rng(n)
    df = frame((np.arange(1, n + 1) + rng.normal(0, 0.05, n)) * 1e4,
               {"ch1": rng.poisson(2, n), "ch4": rng.poisson(0.3, n)})
    path = tmp_path / name
    write_it02(path, df, SPARSE_DAMAGE_HEADER, layout="sparse")
    data = path.read_bytes()
    pos = len(preamble(SPARSE_DAMAGE_HEADER))
    offsets = []
    while pos < len(data) - 9:  # the last 9 bytes are the end marker
        offsets.append(pos)
        pos += 9 + 4 * bin(data[pos + 8]).count("1")
    return path, offsets


def with_bad_mask(tmp_path: Path, clean: Path, offset: int, name: str = "bad.bin") -> Path:
    data = bytearray(clean.read_bytes())
    data[offset + 8] = 0xF0  # bits for channel positions 4-7; the header enables 2
    return write(tmp_path, bytes(data), name)


def expect_bad_mask_error(path: Path, offset: int, **kw) -> None:
    with pytest.raises(CorruptDataError) as err:
        got = read(path, **kw)
        if kw.get("chunksize"):
            list(got)
    assert err.value.path == str(path) and err.value.offset == offset
    assert "0xf0" in str(err.value) and "cannot tell" not in str(err.value)


def check_damaged_sparse_read(path: Path, offset: int, before: pd.DataFrame) -> None:
    """Every read path of a sparse file with a bad mask at ``offset`` and layout detected:
    the records before it (``before``), reported per on_error with path and offset."""
    bin_ns = SPARSE_DAMAGE_HEADER["bin_width_micros"] * 1000.0
    times, counts = fill_model(before["time_ns"].to_numpy(), before.iloc[:, 1:].to_numpy(),
                               bin_ns)
    filled = frame(times, {c: counts[:, k] for k, c in enumerate(before.columns[1:])})
    assert IT02Reader(Source(str(path))).layout == "sparse"

    for kw in ({}, {"chunksize": 64}, {"fill_gaps": True}):
        expect_bad_mask_error(path, offset, **kw)
    with raises_from_scan(CorruptDataError, path=path, offset=offset):
        bindf.scan_it02(path).collect()

    with pytest.warns(CorruptDataWarning) as caught:
        df = read(path, on_error="warn")
    assert [(w.message.path, w.message.offset) for w in caught] == [(str(path), offset)]
    assert df.equals(before)
    assert df.attrs["bindf"]["errors"] == {"bad_mask": 1}
    with pytest.warns(CorruptDataWarning) as caught:
        lazy = bindf.scan_it02(path, on_error="warn").collect()
    assert caught[0].message.offset == offset
    assert lazy.equals(pl.from_pandas(before))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read(path, on_error="skip").equals(before)
        chunks = list(read(path, on_error="skip", chunksize=64))
        assert pd.concat(chunks, ignore_index=True).equals(before)
        assert bindf.scan_it02(path, on_error="skip").collect().equals(pl.from_pandas(before))
        assert read(path, on_error="skip", fill_gaps=True).equals(filled)
    with pytest.warns(CorruptDataWarning):
        assert read(path, on_error="warn", fill_gaps=True).equals(filled)


SMALL_SPARSE_BINS = 300
LARGE_SPARSE_BINS = 6001
MIN_BEFORE_BAD_MASK = _it02_layout.MIN_RECORDS_BEFORE_BAD_MASK


@pytest.mark.parametrize("record", [MIN_BEFORE_BAD_MASK, 30, 63, 64, 150, -1])
def test_sparse_bad_mask_detected_as_damage_small_file(tmp_path, record):
    """The whole file fits the detection probe: a bad mask anywhere after the first few
    records is damage to a sparse file, read per on_error like with layout='sparse'."""
    clean, offsets = sparse_trace(tmp_path, SMALL_SPARSE_BINS, "clean.bin")
    assert clean.stat().st_size < _it02_layout.LAYOUT_PROBE_BYTES
    record %= len(offsets)  # -1: the last record before the end marker
    path = with_bad_mask(tmp_path, clean, offsets[record])
    before = read(clean).head(record)
    assert read(path, layout="sparse", on_error="skip").equals(before)
    check_damaged_sparse_read(path, offsets[record], before)


@pytest.fixture(scope="module")
def large_sparse(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("large_sparse")
    clean, offsets = sparse_trace(tmp, LARGE_SPARSE_BINS, "clean.bin")
    data_offset = len(preamble(SPARSE_DAMAGE_HEADER))
    assert clean.stat().st_size - data_offset > _it02_layout.LAYOUT_PROBE_BYTES
    return clean, offsets, read(clean)


def _last_record_inside_probe(offsets: list[int]) -> int:
    data_offset = len(preamble(SPARSE_DAMAGE_HEADER))
    return max(i for i, o in enumerate(offsets)
               if o + 9 + 4 * 2 <= data_offset + _it02_layout.LAYOUT_PROBE_BYTES)


@pytest.mark.parametrize("record", [MIN_BEFORE_BAD_MASK, 10, 63, 64, "probe end", "past probe"])
def test_sparse_bad_mask_detected_as_damage_large_file(tmp_path, large_sparse, record):
    """Over 64 KiB: the probe covers the first 64 records; a bad mask inside them must not
    hide the layout, and one beyond them is found by the read alone."""
    clean, offsets, full = large_sparse
    last = _last_record_inside_probe(offsets)
    record = {"probe end": last, "past probe": last + 100}.get(record, record)
    path = with_bad_mask(tmp_path, clean, offsets[record])
    before = full.head(record)
    check_damaged_sparse_read(path, offsets[record], before)


@pytest.mark.parametrize("record", [0, 1, MIN_BEFORE_BAD_MASK - 1])
@pytest.mark.parametrize("size", [SMALL_SPARSE_BINS, LARGE_SPARSE_BINS])
def test_sparse_bad_mask_near_the_start_stays_ambiguous(tmp_path, record, size):
    """Too few records before the bad mask to tell a damaged sparse file from other bytes:
    detection asks for layout= whatever on_error says; with it, the read is as usual."""
    clean, offsets = sparse_trace(tmp_path, size, "clean.bin")
    path = with_bad_mask(tmp_path, clean, offsets[record])
    data_offset = len(preamble(SPARSE_DAMAGE_HEADER))
    # Not a whole number of dense records: otherwise dense would win by ending cleanly.
    assert (path.stat().st_size - data_offset) % (8 + 4 * 2) != 0
    for on_error in ("raise", "warn", "skip"):
        with pytest.raises(CorruptDataError, match="layout=") as err:
            read(path, on_error=on_error)
        assert err.value.path == str(path) and err.value.offset == data_offset
        assert f"invalid mask 0xf0 after only {record} record(s)" in str(err.value)
    with raises_from_scan(CorruptDataError, match="layout="):
        bindf.scan_it02(path, on_error="skip").collect()
    with pytest.warns(CorruptDataWarning) as caught:
        df = read(path, layout="sparse", on_error="warn")
    assert caught[0].message.offset == offsets[record]
    assert df.equals(read(clean).head(record))


def test_sparse_bad_mask_wins_over_dense_that_only_ends_cleanly(tmp_path):
    # Padded so that the data is a whole number of dense records: dense then "ends
    # cleanly" with garbage times, which must not outrank 150 plausible sparse records.
    clean, offsets = sparse_trace(tmp_path, SMALL_SPARSE_BINS, "clean.bin")
    path = with_bad_mask(tmp_path, clean, offsets[150])
    data = path.read_bytes()
    dense_size = 8 + 4 * len(SPARSE_DAMAGE_HEADER["channels"])
    data_offset = len(preamble(SPARSE_DAMAGE_HEADER))
    path = write(tmp_path, data + bytes(-(len(data) - data_offset) % dense_size), "padded.bin")
    assert (path.stat().st_size - data_offset) % dense_size == 0
    check_damaged_sparse_read(path, offsets[150], read(clean).head(150))


def test_damaged_sparse_evidence_never_beats_plausible_dense_times():
    """Bytes built to read both ways with plausible times (1 channel, no bin width): dense
    12-byte records, and 8 sparse 9-byte records followed by a bad mask. The damaged
    sparse reading ties with dense that does not end cleanly and loses to dense that does."""

    def head(n_bytes: int) -> bytes:
        data = bytearray(n_bytes)
        # Byte 7 (sign, exponent) and byte 6 of each double order the times: ~2 to 3 ns.
        for k, b6 in enumerate([0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80]):
            if 12 * k + 8 <= n_bytes:
                data[12 * k + 6:12 * k + 8] = bytes([b6, 0x40])
        for j, b6 in enumerate([0x10, 0x18, 0x28, 0x38, 0x40, 0x48, 0x58, 0x68]):
            data[9 * j + 6:9 * j + 9] = bytes([b6, 0x40, 0])  # time, then mask 0
        data[9 * 8 + 8] = 0xF0
        return bytes(data)

    tie = head(85)
    decided = _it02_layout.detect_layout(tie, len(tie), 1, None, False)
    assert decided == (None, "as dense: plausible, does not end cleanly; as sparse: "
                       "plausible, then the record at data byte 72 has an invalid mask 0xf0")
    clean_dense = head(96)
    assert _it02_layout.detect_layout(clean_dense, len(clean_dense), 1, None, False) == "dense"



def test_a_sparse_file_cut_in_its_first_records_reads_right_or_asks_for_the_layout(tmp_path):
    """Cut a sparse file (3 channels) at every byte of its first records: each read is
    the intact read's first rows (with a truncation warning when the cut is inside a
    record), or, when both layouts read one plausible record, a CorruptDataError asking
    for ``layout=``. The cut at exactly one dense record's length (20 data bytes) read
    as a dense row of garbage counts with no warning; cuts inside the third sparse
    record raised although two sparse records with plausibly spaced times preceded."""
    header = {"channels": [0, 1, 2], "bin_width_micros": 1}
    records = [sparse_record(1000.0, {0: 123}), sparse_record(2000.0, {1: 7}),
               sparse_record(3000.0, {0: 1, 2: 9}), sparse_record(4000.0, {2: 5}),
               end_marker(4000.0)]
    data = preamble(header) + b"".join(records)
    start = len(preamble(header))
    intact = read(write(tmp_path, data, "intact.bin"))
    ends = np.cumsum([len(r) for r in records])
    asked = []
    for size in range(1, len(data) - start):
        path = write(tmp_path, data[:start + size], "cut.bin")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                df = read(path)
            except CorruptDataError as err:
                assert "layout=" in str(err) and "(one record)" in str(err)
                asked.append(size)
                continue
        assert df.bindf.header["layout"] in ("sparse", None), size
        n = len(df)
        assert df.reset_index(drop=True).equals(intact.head(n).reset_index(drop=True)), size
        assert bool(caught) == (size not in ends), size
    assert asked == list(range(20, 26))  # one dense record, and one sparse record + a cut
    # Told the layout, those cuts read as the sparse file they are.
    path = write(tmp_path, data[:start + 20], "cut.bin")
    with pytest.warns(TruncatedFileWarning):
        assert read(path, layout="sparse").equals(intact.head(1))

def test_damaged_dense_files_are_never_detected_sparse(tmp_path, data_dir):
    """Only a sparse chain broken by a bad mask gained evidence: dense files, clean or with
    implausible times, read exactly as before."""
    sample = (data_dir / SAMPLE).read_bytes()
    start = len(sample) - 2999 * 20
    for record in (0, 5, 40):
        data = bytearray(sample)
        data[start + 20 * record: start + 20 * record + 8] = struct.pack("<d", math.nan)
        path = write(tmp_path, bytes(data), f"nan{record}.bin")
        assert IT02Reader(Source(str(path))).layout == "dense"
        assert math.isnan(read(path)["time_ns"][record])
    rng = np.random.default_rng(3)
    for n_channels in range(1, 8):
        header = {"channels": list(range(n_channels)), "bin_width_micros": 10}
        for lam in (0, 0.3, 3, 300, 3e6):
            df = frame(np.arange(1, 200) * 1e4,
                       {f"ch{c + 1}": rng.poisson(lam, 199) for c in range(n_channels)})
            path = tmp_path / "dense.bin"
            write_it02(path, df, header, layout="dense")
            assert IT02Reader(Source(str(path))).layout == "dense"
            data = bytearray(path.read_bytes())
            first = len(preamble(header))
            data[first:first + 8] = struct.pack("<d", -5.0)  # dense times now implausible
            path.write_bytes(bytes(data))
            try:
                layout = IT02Reader(Source(str(path))).layout
            except CorruptDataError as err:  # all-zero counts: as sparse, it chains too
                assert "layout=" in str(err)
                layout = None
            assert layout != "sparse", (n_channels, lam)


def test_sparse_mask_zero_record_inside_is_a_zero_row(tmp_path):
    header = {"channels": [0, 1], "bin_width_micros": 1}
    data = preamble(header) + sparse_record(1000.0, {0: 1}) + end_marker(2000.0) \
        + sparse_record(3000.0, {1: 4}) + end_marker(3500.0)
    df = read(write(tmp_path, data))
    assert df["time_ns"].tolist() == [1000.0, 2000.0, 3000.0]
    assert df["ch1"].tolist() == [1, 0, 0] and df["ch2"].tolist() == [0, 0, 4]
    assert df.bindf.header["acquisition_end_ns"] == 3500.0


def test_sparse_without_end_marker(tmp_path):
    header = {"channels": [0, 1], "bin_width_micros": 1}
    data = preamble(header) + sparse_record(1000.0, {0: 1}) + sparse_record(2000.0, {0: 1, 1: 5})
    df = read(write(tmp_path, data))
    assert df.bindf.header["acquisition_end_ns"] is None
    assert df["ch2"].tolist() == [0, 5]


def test_only_end_marker_and_empty_data(tmp_path):
    header = {"channels": [0, 1], "bin_width_micros": 1}
    df = read(write(tmp_path, preamble(header) + end_marker(123.0)))
    assert len(df) == 0 and list(df.columns) == ["time_ns", "ch1", "ch2"]
    assert df.bindf.header["layout"] == "sparse"
    assert df.bindf.header["acquisition_end_ns"] == 123.0
    empty = write(tmp_path, preamble(header), "empty.bin")
    for layout in (None, "dense", "sparse"):
        table = read(empty, layout=layout, output="arrow")
        assert table.num_rows == 0
        assert table.schema.field("ch2").type == pa.uint32()
        assert not table.schema.field("time_ns").nullable
    assert IT02Reader(Source(str(empty))).count_rows() == 0
    assert read(empty, layout="sparse").bindf.header["acquisition_end_ns"] is None
    assert len(read(empty, fill_gaps=True)) == 0


def test_sparse_truncated_mid_record(tmp_path):
    data, expected = sparse_sample()
    body = data[: -9]  # drop the end marker
    for cut in (1, 5, 9, 12):
        path = write(tmp_path, body[:-cut], f"cut{cut}.bin")
        with pytest.warns(TruncatedFileWarning) as caught:
            df = read(path)
        assert df.equals(expected.head(3))
        assert caught[0].message.offset == len(body) - 13
    with pytest.warns(TruncatedFileWarning):
        assert read(path, fill_gaps=True)["ch3"].tolist() == [0, 7, 2]


def test_every_cut_of_a_sparse_file_gives_the_complete_records(tmp_path):
    """Truncate a realistic sparse file at every byte: no false end marker, no error."""
    rng = np.random.default_rng(1)
    n = 60
    counts = {f"ch{c + 1}": rng.poisson(lam, n) for c, lam in zip([0, 1, 2, 3],
                                                                   [3, 0.5, 0.05, 300],
                                                                   strict=True)}
    df = frame(np.arange(1, n + 1) * 1e5 + rng.normal(0, 50, n), counts)
    header = {"channels": [0, 1, 2, 3], "bin_width_micros": 100}
    full = tmp_path / "full.bin"
    write_it02(full, df, header, layout="sparse")
    data = full.read_bytes()
    start = len(preamble(header))
    expected = read(full)
    ends = start + np.cumsum([9 + 4 * int((expected.iloc[i, 1:] != 0).sum())
                              for i in range(len(expected))])
    cut_path = tmp_path / "cut.bin"
    for cut in range(start + 1, len(data) - 9):
        cut_path.write_bytes(data[:cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = read(cut_path, layout="sparse")
        complete = int(np.searchsorted(ends, cut, side="right"))
        assert got.equals(expected.head(complete)), cut
        assert got.bindf.header["acquisition_end_ns"] is None, cut
        assert bool(caught) == (cut not in ends), cut
    cut_path.write_bytes(data[: start + 1000])
    assert IT02Reader(Source(str(cut_path))).layout == "sparse"  # detection agrees


def test_truncated_tail_that_looks_like_an_end_marker(tmp_path):
    # Found by a random search: the cut leaves 9 bytes ending in 0 whose "time" is a
    # finite double and 4 plausible-looking records chaining back onto it. The
    # 16-record check rejects it, and so, since the chain's times must also lie between
    # the first record's and the next one's, does a check of 4, so the file reads as
    # truncated, not as corrupt.
    body = bytes.fromhex(
        "000000000070a740020f1e9c00000000000040af4002a2000000000000000070b7400693b941"
        "00a1884300000000000058bb400c91124100ff5d4100000000000040bf40058b000000df0000"
        "0000000000007cc54000000000000058cb400b710d4300")
    header = {"channels": [0, 1, 2, 3], "bin_width_micros": 1}
    assert _it02_layout._find_end_marker(body, 0, 0, 4, 3000.0) is None
    with mock.patch.object(_it02_layout, "MARKER_CHECK_DEPTH", 4):
        assert _it02_layout._find_end_marker(body, 0, 0, 4, 3000.0) is None
    path = write(tmp_path, preamble(header) + body)
    assert bindf.read_header(path, layout="sparse")["acquisition_end_ns"] is None
    with pytest.warns(TruncatedFileWarning):
        df = read(path)  # detected as sparse
    assert df["time_ns"].tolist() == [3000.0, 4000.0, 6000.0, 7000.0, 8000.0, 11000.0]


def test_truncated_tail_of_small_counts_is_not_an_end_marker(tmp_path):
    """Photon counts are small integers full of zero bytes: cut inside a record, such a
    file's tail chained back 16 records when only the framing was checked (about one
    cut in 3,000 in a sweep), and the read raised CorruptDataError ("the record chain
    does not end at the end-of-acquisition marker") with an invented end time. The
    "times" of misframed records are bytes of counts: not between the first record's
    time and the next one's."""
    body = bytes.fromhex(
        "0000000080842e41576f000000e4000000250000001e010000240000000000000060e34641ded700"
        "000056000000460000006a000000f40000004200000000000000d012534129ff0000000a01000072"
        "0000000000000060e35641d7bb000000b20000005b00000026000000140000004800000000000000"
        "f0b35a41d0640000000b0000008b0000000000000080845e41e3f5000000cd0000002c010000f800"
        "0000a300000000000000d0126341444c000000530000000000000018fb6441fb24000000cc000000"
        "25010000e10000005d000000ac000000ec0000000000000060e36641ef7d000000af000000690000"
        "00c20000009400000023010000af00000000000000a8cb6841ec2600000028010000200100000f01"
        "00007e00000000000000f0b36a4166a600000003000000aa0000007400000000000000389c6c4137"
        "17000000df0000004b000000cf000000f90000000000000080846e41aefd000000240000006b0000"
        "00d70000002501000000000000882a71412ec6000000eb0000007c0000007f00000000000000ac1e"
        "7241f375000000d60000006300000041000000580000007300000000000000d01273415c1c010000"
        "75000000ee0000003400000000000000f4067441bf2a010000ad000000e500000061000000cf0000"
        "0022010000270000000000000018fb74418b1a00000091000000e100000097000000000000003cef"
        "7541bba2000000f7000000db000000a900000046000000050000000000000060e37641b1e3000000"
        "c800000001000000100000000000000084d7774169fc000000d30000006f00000029010000000000"
        "00a8cb78417faf0000007700000044000000220100005e000000030000001500000000000000ccbf"
        "7941160d000000090100009e00000000000000f0b37a41dea9000000fe0000007500000052000000"
        "e9000000320000000000000014a87b41e6da0000000300000082000000bb000000dc000000000000"
        "005c907d41ce37000000330000009c0000005d000000e700000000000000a4787f417b34000000f5"
        "000000ba000000e6000000ef000000f40000000000000064368041ff0c010000dc0000003b000000"
        "a9000000f200000026000000ef000000c60000000000000076b0804105fc000000bb000000000000"
        "009aa48141e8f40000007e000000500000001700000000000000ac1e8241d58e0000003300000009"
        "000000150100009500000000000000be988241fa6000000068000000cb0000002f0000004200")
    header = {"channels": list(range(8)), "bin_width_micros": 1000}
    path = write(tmp_path, preamble(header) + body)
    assert bindf.read_header(path, layout="sparse")["acquisition_end_ns"] is None
    with pytest.warns(TruncatedFileWarning, match="incomplete record"):
        df = read(path, layout="sparse")
    assert df.bindf.header["acquisition_end_ns"] is None and len(df) == 31


@pytest.mark.parametrize("times", [
    [1e6, 2e6, 3e6, 4e6, 3.99e6],  # the end marker's time before the last record's
    [1e6, float("nan"), 3e6, 4e6, 4.5e6],  # a damaged time among the last records
    [1e6, 2e6, 3e6, 4e6, float("nan")],  # the end marker's own time damaged
    [1e6, 2e6, 3e6, 4e6, float("inf")],
])
def test_final_mask_zero_record_is_the_end_marker_whatever_its_times(tmp_path, times):
    """A final mask-0 record ends the acquisition and is not a bin. The guess from the
    last bytes checks times and misses these; the whole read walks the chain onto the
    last 9 bytes and finds the marker there (an extra zero row before)."""
    header = {"channels": [0, 1], "bin_width_micros": 1000}
    body = b"".join(sparse_record(t, {i % 2: i + 1}) for i, t in enumerate(times[:-1]))
    path = write(tmp_path, preamble(header) + body + end_marker(times[-1]))
    assert bindf.read_header(path, layout="sparse")["acquisition_end_ns"] is None  # a guess
    for on_error in ("raise", "skip"):
        df = read(path, layout="sparse", on_error=on_error)
        assert len(df) == 4 and df["ch1"].tolist() == [1, 0, 3, 0]
        # a non-finite end time is none (headers are strict JSON: it was NaN there)
        end = times[-1] if math.isfinite(times[-1]) else None
        assert df.bindf.header["acquisition_end_ns"] == end
    table = read(path, layout="sparse", output="arrow", columns=["ch2"])
    json.loads(table.schema.metadata[b"bindf.header"], parse_constant=pytest.fail)
    assert table.column("ch2").to_pylist() == [0, 2, 0, 4]
    assert read(path, layout="sparse", n_rows=2)["ch1"].tolist() == [1, 0]
    if math.isfinite(times[1]):  # (a NaN time is damage to fill_gaps)
        filled = read(path, layout="sparse", fill_gaps=True)
        assert filled["time_ns"].tolist() == [1e6, 2e6, 3e6, 4e6]


def test_sparse_shrinking_file_is_a_truncation(tmp_path):
    data, expected = sparse_sample()
    path = write(tmp_path, data)
    reader = IT02Reader(Source(str(path)))
    path.write_bytes(data[:-20])  # the DAQ truncated it after we opened it
    with pytest.warns(TruncatedFileWarning, match="shrank"):
        table = pa.Table.from_batches(list(reader.iter_batches()))
    assert table.num_rows == 3


# -- dense files --------------------------------------------------------------------------


def test_dense_truncated(tmp_path, data_dir):
    data = (data_dir / SAMPLE).read_bytes()
    full = read(data_dir / SAMPLE)
    start = len(data) - 2999 * 20
    path = write(tmp_path, data[: start + 20 * 10])  # at a record boundary: no warning
    assert read(path).equals(full.head(10))
    for cut in (1, 8, 19):
        path = write(tmp_path, data[: start + 20 * 10 + cut], f"c{cut}.bin")
        with pytest.warns(TruncatedFileWarning) as caught:
            df = read(path)
        assert df.equals(full.head(10))
        assert caught[0].message.offset == start + 200
        assert IT02Reader(Source(str(path))).count_rows() == 10


def test_file_cut_inside_its_first_record_has_no_row_and_warns(tmp_path, data_dir):
    """A file cut inside its first record (or whose first record is still being written)
    read "cannot tell dense or sparse"; either layout gives no row, so it is a truncation:
    no row, a warning at the data's first byte, the layout None while both are possible."""
    dense = (data_dir / SAMPLE).read_bytes()
    sparse, _ = sparse_sample()
    sparse_start = len(preamble(HEADER3))
    cases = [  # data, where its records start, its first record's size, its columns
        (dense, len(dense) - 2999 * 20, 20, ["time_ns", "ch2", "ch4", "ch5"]),
        (sparse, sparse_start, 9 + 4 * bin(sparse[sparse_start + 8]).count("1"),
         ["time_ns", "ch1", "ch3", "ch6"]),
    ]
    for data, start, first, columns in cases:
        for cut in range(1, first):
            path = write(tmp_path, data[: start + cut], f"cut{cut}.bin")
            for on_error in ("raise", "warn"):
                with pytest.warns(TruncatedFileWarning, match="incomplete") as caught:
                    df = read(path, on_error=on_error)
                assert len(df) == 0 and list(df.columns) == columns
                assert caught[0].message.offset == start
            # Bytes 0-8 are a time and a mask: when the mask byte cannot be one of this
            # file's masks (the dense sample's is 0x7b), only the dense layout is left.
            layout = "dense" if cut >= 9 and data is dense else None
            assert df.bindf.header["layout"] == layout, cut
            assert bindf.read_header(path)["layout"] == layout


def test_dense_more_than_eight_channels(tmp_path):
    header = {"channels": list(range(10)), "bin_width_micros": 5}
    df = frame(np.arange(1, 4) * 5000.0, {f"ch{i + 1}": [i, i + 1, 0] for i in range(10)})
    path = tmp_path / "ten.bin"
    write_it02(path, df, header, layout="dense")
    assert read(path).equals(df)
    with pytest.raises(HeaderError, match="one-byte"):
        read(path, layout="sparse")
    with pytest.raises(ValueError, match="at most 8"):
        write_it02(path, df, header, layout="sparse")


def test_dense_with_all_zero_counts_is_detected_dense(tmp_path):
    header = {"channels": [0], "bin_width_micros": 1}
    df = frame(np.arange(1, 50) * 1000.0, {"ch1": [0] * 49})
    path = tmp_path / "zeros.bin"
    write_it02(path, df, header, layout="dense")
    assert IT02Reader(Source(str(path))).layout == "dense"
    assert read(path).equals(df)


def test_ambiguous_layout_asks_for_override(tmp_path):
    # 36 zero bytes, 1 channel: three dense records or four sparse records, all at t=0.
    path = write(tmp_path, preamble({"channels": [0], "bin_width_micros": 1}) + bytes(36))
    with pytest.raises(CorruptDataError, match="layout="):
        read(path)
    assert len(read(path, layout="dense")) == 3
    assert len(read(path, layout="sparse")) == 3  # the last all-zero record is the end marker


# -- header and container damage ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error", "offset"),
    [
        (b"", UnknownFormatError, 0),
        (b"IT01\x02\x00\x00\x00{}", UnknownFormatError, 0),
        (b"IT02\x00", HeaderError, 4),
        (b"IT02\xff\xff\xff\x7f{}", HeaderError, 4),
        (b"IT02\x02\x00\x00\x00[]", HeaderError, 8),
        (b"IT02\x05\x00\x00\x00{\"a\":", HeaderError, None),
    ],
)
def test_container_damage(tmp_path, data, error, offset):
    path = write(tmp_path, data)
    with pytest.raises(error) as err:
        bindf.read_it02(path)
    assert err.value.path == str(path)
    if offset is not None:
        assert err.value.offset == offset


@pytest.mark.parametrize(
    "header",
    [{}, {"channels": []}, {"channels": "1,2"}, {"channels": [1, 1]}, {"channels": [-1]},
     {"channels": [True]}, {"channels": [1.5]}],
)
def test_bad_channels_header(tmp_path, header):
    path = write(tmp_path, preamble(header))
    with pytest.raises(HeaderError, match="channels"):
        read(path)


def test_header_keeps_file_keys_verbatim(tmp_path):
    header = {"channels": [0], "bin_width_micros": 1, "layout": "vendor-value",
              "channel_names": {"0": "Ch A"}, "nested": {"x": [1, None]}}
    path = write(tmp_path, preamble(header) + sparse_record(1000.0, {0: 1}) + end_marker(1500.0))
    got = read(path).bindf.header
    assert got == {**header, "acquisition_end_ns": 1500.0}
    reader = IT02Reader(Source(str(path)))
    assert reader.layout == "sparse"


def test_options_are_checked(data_dir):
    path = data_dir / SAMPLE
    with pytest.raises(ValueError, match="layout"):
        read(path, layout="packed")
    with pytest.raises(TypeError, match="unexpected"):
        read(path, nonsense=1)
    with pytest.raises(TypeError, match="fill_gaps"):
        read(path, fill_gaps="yes")


# -- writer -------------------------------------------------------------------------------


def test_writer_inputs_and_validation(tmp_path):
    header = {"channels": [0, 2], "bin_width_micros": 1}
    df = frame([1000.0, 2000.0, 3000.0], {"ch1": [1, 0, 0], "ch3": [2, 0, 5]})
    path = tmp_path / "w.bin"
    for data in (df, pl.from_pandas(df), pa.Table.from_pandas(df),
                 pa.RecordBatch.from_pandas(df)):
        write_it02(path, data, header)
        assert read(path).equals(df.iloc[[0, 2]].reset_index(drop=True))
    write_it02(path, df, header, layout="dense")
    assert read(path).equals(df)

    with pytest.raises(ValueError, match="ch3"):
        write_it02(path, df.drop(columns="ch3"), header)
    with pytest.raises(ValueError, match="not channels"):
        write_it02(path, df.assign(ch9=1), header)
    with pytest.raises(ValueError, match="cannot be stored"):
        write_it02(path, df.assign(ch1=[-1, 0, 0]), header)
    with pytest.raises(ValueError, match="cannot be stored"):
        write_it02(path, df.assign(ch1=[2**32, 0, 0]), header)
    with pytest.raises(ValueError, match="cannot be stored"):
        write_it02(path, df.assign(ch1=[0.5, 0, 0]), header)
    with pytest.raises(ValueError, match="null"):
        write_it02(path, pa.table({"time_ns": [1.0], "ch1": pa.array([None], pa.uint32()),
                                   "ch3": [1]}), header)
    with pytest.raises(ValueError, match="acquisition_end_ns"):
        write_it02(path, df, header, acquisition_end_ns=2500.0)
    with pytest.raises(ValueError, match="finite"):
        write_it02(path, df.assign(time_ns=[1.0, np.nan, 3.0]), header)
    with pytest.raises(ValueError, match="channels"):
        write_it02(path, df, {"channels": [0, 0]})
    with pytest.raises(ValueError, match="only stored in the sparse"):
        write_it02(path, df, header, layout="dense", acquisition_end_ns=5000.0)
    with pytest.raises(TypeError):
        write_it02(path, [1, 2], header)
    with pytest.raises(FileExistsError):
        write_it02(path, df, header, overwrite=False)
    # failed writes leave the previous file untouched
    assert read(path).equals(df)
    # a dict of columns and a polars LazyFrame are accepted too
    write_it02(path, {"time_ns": [1000.0], "ch1": [1], "ch3": [0]}, header)
    assert read(path)["ch1"].tolist() == [1]
    write_it02(path, pl.from_pandas(df).lazy(), header, layout="dense")
    assert read(path).equals(df)


def test_writer_inherits_header_and_layout(tmp_path, data_dir):
    df = pl.read_it02(data_dir / SAMPLE)
    out = tmp_path / "copy.bin"
    write_it02(out, df)  # header and layout ("dense") from the frame bindf read
    assert out.read_bytes() == (data_dir / SAMPLE).read_bytes()
    bare = pl.DataFrame({"time_ns": [1e3, 2e3], "ch3": [1, 0], "ch1": [0, 0]})
    write_it02(out, bare)  # no metadata: channels from the columns, sparse layout
    back = read(out)
    assert back.bindf.header == {"channels": [2, 0], "layout": "sparse",
                                 "acquisition_end_ns": 2000.0}
    assert back["ch3"].tolist() == [1]


def test_writer_end_marker_and_derived_keys(tmp_path):
    header = {"channels": [0], "bin_width_micros": 1, "layout": "sparse",
              "acquisition_end_ns": 9000.0}
    df = frame([1000.0, 2000.0], {"ch1": [1, 0]})
    path = tmp_path / "w.bin"
    write_it02(path, df, header)
    raw = path.read_bytes()
    assert json.loads(raw[8:8 + struct.unpack_from("<I", raw, 4)[0]]) == {
        "channels": [0], "bin_width_micros": 1}
    assert raw[-9:] == end_marker(9000.0)
    assert read(path).bindf.header["acquisition_end_ns"] == 9000.0
    write_it02(path, df, header, acquisition_end_ns=2500.0)
    assert read(path).bindf.header["acquisition_end_ns"] == 2500.0
    write_it02(path, df, {"channels": [0]})
    assert read(path).bindf.header["acquisition_end_ns"] == 2000.0
    write_it02(path, df.head(0), {"channels": [0]})
    assert path.read_bytes().endswith(end_marker(0.0))


# -- hypothesis round trips -----------------------------------------------------------------


@st.composite
def trace(draw, realistic: bool):
    n_channels = draw(st.integers(1, 8))
    channels = draw(st.lists(st.integers(0, 15), min_size=n_channels, max_size=n_channels,
                             unique=True))
    n = draw(st.integers(0, 60))
    bin_us = draw(st.sampled_from([1, 10, 1000, 2.5]))
    if realistic:
        steps = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
        jitter = draw(st.lists(st.floats(-0.2, 0.2), min_size=n, max_size=n))
        times = (np.cumsum(steps) + np.array(jitter)) * bin_us * 1000.0 if n else np.empty(0)
    else:
        times = np.array(draw(st.lists(st.floats(-1e12, 1e12), min_size=n, max_size=n)))
    count = st.one_of(st.just(0), st.integers(0, 5), st.integers(0, 2**32 - 1))
    counts = {f"ch{c + 1}": draw(st.lists(count, min_size=n, max_size=n)) for c in channels}
    header = {"channels": channels, "bin_width_micros": bin_us, "acquisition_time_millis": None}
    return header, frame(times, counts)


def _nonzero_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df.iloc[:, 1:] != 0).any(axis=1)].reset_index(drop=True)


@HYPOTHESIS
@given(data=trace(realistic=True), chunk=st.integers(9, 200), size=st.integers(1, 50),
       rows=st.integers(1, 70))
def test_round_trip_realistic_autodetected(tmp_path, data, chunk, size, rows):
    header, df = data
    sparse_path, dense_path = tmp_path / "s.bin", tmp_path / "d.bin"
    write_it02(sparse_path, df, header, layout="sparse")
    write_it02(dense_path, df, header, layout="dense")
    # A one-record dense file may read as one plausible sparse record too (a zero bin
    # and a cut one): detection then asks for layout=, as documented (see
    # test_a_sparse_file_cut_in_its_first_records_reads_right_or_asks_for_the_layout).
    told: dict[Path, dict[str, str]] = {dense_path: {}, sparse_path: {}}
    if len(df) == 1:
        try:
            assert read(dense_path).bindf.header["layout"] == "dense"
        except CorruptDataError as err:
            assert "layout=" in str(err) and "(one record)" in str(err)
            told[dense_path] = {"layout": "dense"}
    with small_chunks(chunk, rows):
        got_dense = pd.concat(list(read(dense_path, chunksize=size, **told[dense_path]))
                              or [read(dense_path)], ignore_index=True)
        got_sparse = pd.concat(list(read(sparse_path, chunksize=size)) or [read(sparse_path)],
                               ignore_index=True)
    assert got_dense.equals(df)
    assert got_dense.bindf.header["layout"] == "dense" or len(df) == 0
    assert got_sparse.astype(df.dtypes).equals(_nonzero_rows(df))
    sparse_header = read(sparse_path).bindf.header
    assert sparse_header["layout"] == "sparse"
    assert sparse_header["acquisition_end_ns"] == (df["time_ns"].max() if len(df) else 0.0)

    # fill_gaps, batched, follows the documented rule; the sparse file lacks the all-zero
    # bins, so its filled trace is the dense one without leading/trailing zero bins.
    bin_ns = header["bin_width_micros"] * 1000.0
    filled = {}
    for path, stored in ((dense_path, df), (sparse_path, _nonzero_rows(df))):
        times, counts = fill_model(stored["time_ns"].to_numpy(), stored.iloc[:, 1:].to_numpy(),
                                   bin_ns)
        with small_chunks(chunk, rows):
            parts = list(read(path, fill_gaps=True, chunksize=size, **told[path]))
        got = pd.concat(parts, ignore_index=True) if parts else read(path, fill_gaps=True)
        np.testing.assert_array_equal(got["time_ns"].to_numpy(), times)
        np.testing.assert_array_equal(got.iloc[:, 1:].to_numpy(), counts)
        filled[path] = got
    dense_filled, sparse_filled = filled[dense_path], filled[sparse_path]
    inside = dense_filled["time_ns"].isin(sparse_filled["time_ns"])
    assert dense_filled[inside].reset_index(drop=True).equals(sparse_filled)


@HYPOTHESIS
@given(data=trace(realistic=False), chunk=st.integers(9, 100))
def test_round_trip_any_times_with_layout_given(tmp_path, data, chunk):
    header, df = data
    path = tmp_path / "x.bin"
    write_it02(path, df, header, layout="dense")
    with small_chunks(chunk):
        assert read(path, layout="dense").equals(df)
    write_it02(path, df, header, layout="sparse")
    with small_chunks(chunk):
        got = read(path, layout="sparse")
    assert got.astype(df.dtypes).equals(_nonzero_rows(df))


# -- kernel parity --------------------------------------------------------------------------


def _both(name, *args):
    """Run the compiled kernel and the reference on copies of the same arguments."""
    outs = []
    for module in (_it02, ref):
        copied = [a.copy() if isinstance(a, np.ndarray)
                  else [x.copy() for x in a] if isinstance(a, list) else a for a in args]
        try:
            result = getattr(module, name)(*copied)
        except ValueError:
            result = "ValueError"
        outs.append((result, copied))
    return outs


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


@st.composite
def chain_buffer(draw):
    """Random bytes, or a valid record chain possibly damaged and cut."""
    n_channels = draw(st.integers(0, 8))
    if draw(st.booleans()):
        buf = draw(st.binary(max_size=300))
    else:
        parts = []
        for _ in range(draw(st.integers(0, 20))):
            mask = draw(st.integers(0, (1 << n_channels) - 1))
            parts.append(struct.pack("<dB", draw(st.floats()), mask))
            parts.append(bytes(draw(st.binary(min_size=4 * bin(mask).count("1"),
                                              max_size=4 * bin(mask).count("1")))))
        buf = b"".join(parts)
        if buf and draw(st.booleans()):
            i = draw(st.integers(0, len(buf) - 1))
            buf = buf[:i] + bytes([draw(st.integers(0, 255))]) + buf[i + 1:]
        buf = buf[: draw(st.integers(0, len(buf)))]
    return np.frombuffer(buf, dtype=np.uint8).copy(), n_channels


@settings(max_examples=300, deadline=None)
@given(data=chain_buffer(), pos=st.integers(-2, 320), max_rows=st.integers(-1, 40),
       n_channels_delta=st.sampled_from([0, 0, 0, 1, -1, 9]), want_time=st.booleans(),
       slot_seed=st.integers(0, 2**32 - 1), room=st.integers(-1, 1))
def test_kernel_parity_sparse(data, pos, max_rows, n_channels_delta, want_time, slot_seed, room):
    buf, n_channels = data
    n_channels += n_channels_delta
    (a, _), (b, _) = _both("scan_sparse", buf, pos, n_channels, max_rows)
    assert a == b
    rng = np.random.default_rng(slot_seed)
    n_out = int(rng.integers(0, 9))
    slots = rng.integers(-1, max(n_out, 1) + (1 if room < 0 else 0),
                         size=max(n_channels, 0) + 1).astype(np.int8)
    cap = max(max_rows, 0) + room
    counts = [np.full(max(cap, 0), 7, np.uint32) for _ in range(n_out)]
    time = np.full(max(cap, 0), -1.0)
    (a, out_a), (b, out_b) = _both("decode_sparse", buf, pos, n_channels, max_rows, time,
                                   counts, slots, want_time)
    assert a == b
    if a != "ValueError":
        assert a == _it02.scan_sparse(buf, pos, n_channels, max_rows)
        assert _same(out_a[4], out_b[4]) and _same(out_a[5], out_b[5])


def test_kernel_decode_matches_writer_records():
    rng = np.random.default_rng(5)
    for n_channels in range(1, 9):
        n = 500
        counts = [np.where(rng.random(n) < 0.5, 0, rng.integers(0, 2**32, n)).astype(np.uint32)
                  for _ in range(n_channels)]
        counts[0][:] = np.maximum(counts[0], 1)  # no all-zero bin: every row is written
        times = rng.random(n) * 1e9
        buf = _it02_writer._encode_sparse(times, counts)
        time_out = np.empty(n)
        outs = [np.empty(n, np.uint32) for _ in range(n_channels)]
        slots = np.arange(n_channels, dtype=np.int8)
        rows, pos, status = _it02.decode_sparse(buf, 0, n_channels, n, time_out, outs, slots,
                                                True)
        assert (rows, pos, status) == (n, len(buf), _it02.STATUS_LIMIT)
        np.testing.assert_array_equal(time_out, times)
        for got, want in zip(outs, counts, strict=True):
            np.testing.assert_array_equal(got, want)
        # resumable: decoding from any cut point continues the same chain
        rows1, mid, _ = _it02.scan_sparse(buf, 0, n_channels, 137)
        rows2, end, _ = _it02.scan_sparse(buf, mid, n_channels, n)
        assert rows1 + rows2 == n and end == len(buf)


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(st.one_of(st.floats(), st.floats(-1e4, 1e4), st.integers(-5, 50)
                             .map(float)), max_size=30),
    bin_ns=st.sampled_from([1.0, 0.5, 3.0, 1e-300, 0.0, math.nan]),
    have_last=st.booleans(), last_t=st.floats(), last_bin=st.integers(-2**52, 2**52),
)
def test_kernel_parity_assign_bins(times, bin_ns, have_last, last_t, last_bin):
    t = np.array(times, dtype=np.float64)
    bins = np.zeros(len(t), np.int64)
    status = np.zeros(len(t), np.uint8)
    (a, out_a), (b, out_b) = _both("assign_bins", t, bin_ns, have_last, last_t, last_bin,
                                   bins, status)
    assert _same(a, b)
    if a != "ValueError":
        ok = out_a[6] == 0
        assert _same(out_a[6], out_b[6])
        assert _same(out_a[5][ok], out_b[5][ok])


def test_kernel_assign_bins_resumes():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.choice([0.2, 1.0, 1.0, 2.9, 7.0], 400)) * 10.0
    times[[5, 77]] = np.nan
    whole_bins = np.empty(400, np.int64)
    whole_status = np.empty(400, np.uint8)
    whole_state = _it02.assign_bins(times, 10.0, False, math.nan, 0, whole_bins, whole_status)
    state = (False, math.nan, 0)
    bins = np.empty(400, np.int64)
    status = np.empty(400, np.uint8)
    for lo, hi in [(0, 1), (1, 77), (77, 78), (78, 300), (300, 400)]:
        _, *state = _it02.assign_bins(times[lo:hi], 10.0, *state, bins[lo:hi], status[lo:hi])
    assert tuple(state) == tuple(whole_state[1:])
    np.testing.assert_array_equal(status, whole_status)
    np.testing.assert_array_equal(bins[status == 0], whole_bins[whole_status == 0])


def test_kernel_argument_checks():
    buf = np.zeros(20, np.uint8)
    with pytest.raises(ValueError):
        _it02.scan_sparse(buf, 21, 1, 1)
    with pytest.raises(ValueError):
        _it02.scan_sparse(buf, 0, 9, 1)
    with pytest.raises(ValueError):
        _it02.decode_sparse(buf, 0, 1, 2, np.empty(1), [np.empty(1, np.uint32)],
                            np.zeros(1, np.int8), True)
    with pytest.raises(ValueError):
        _it02.decode_sparse(buf, 0, 1, 1, np.empty(1), [np.empty(1, np.uint32)],
                            np.array([1], np.int8), True)
    with pytest.raises(ValueError):
        _it02.assign_bins(np.zeros(2), 1.0, False, 0.0, 0, np.empty(1, np.int64),
                          np.empty(2, np.uint8))


# -- fill_gaps: outliers and the gap bound ------------------------------------------------

BUNDLED = Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin"


def _sample_with_times(changes: dict[int, float]) -> tuple[bytes, int]:
    """The bundled sample (dense, 20-byte records, 200 records, 1 ms bins) with the
    times of some records replaced; returns the bytes and where the records start."""
    data = bytearray(BUNDLED.read_bytes())
    start = 8 + struct.unpack_from("<I", data, 4)[0]
    for record, time in changes.items():
        struct.pack_into("<d", data, start + 20 * record, time)
    return bytes(data), start


def _filled_without(records: list[int]) -> pd.DataFrame:
    """The sample's filled trace with the counts of ``records`` zeroed: what dropping
    those records gives when their neighbours' bins stay."""
    df = read(BUNDLED, fill_gaps=True)
    df.iloc[records, 1:] = 0
    return df


def _warned(path, **kw) -> tuple[pd.DataFrame, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = read(path, fill_gaps=True, on_error="warn", **kw)
    return df, [w for w in caught if issubclass(w.category, CorruptDataWarning)]


def test_fill_gaps_drops_a_lone_outlier_not_the_records_after_it(tmp_path):
    data, start = _sample_with_times({2: 5e8})  # record 2: bin 500 instead of 3
    path = write(tmp_path, data)
    assert len(read(path)) == 200  # without fill_gaps: unchanged
    df, caught = _warned(path)
    assert len(df) == 200
    assert df.equals(_filled_without([2]))
    assert [w.message.offset for w in caught] == [start + 40]
    assert "out of line" in str(caught[0].message)
    assert "dropped 1 such record(s)" in str(caught[0].message)
    assert df.attrs["bindf"]["errors"] == {"time_outlier": 1}
    assert read(path, fill_gaps=True, on_error="skip").equals(df)
    with pytest.raises(CorruptDataError) as err:
        read(path, fill_gaps=True)
    assert err.value.offset == start + 40
    assert err.value.path == str(path)


def test_fill_gaps_outlier_at_the_first_record(tmp_path):
    data, start = _sample_with_times({0: 5e8})
    path = write(tmp_path, data)
    df, caught = _warned(path)
    assert df.equals(_filled_without([]).iloc[1:].reset_index(drop=True))
    assert len(df) == 199
    assert [w.message.offset for w in caught] == [start]
    assert df.attrs["bindf"]["errors"] == {"time_outlier": 1}


def test_fill_gaps_two_consecutive_outliers(tmp_path):
    data, start = _sample_with_times({2: 5e8, 3: 5.01e8})
    path = write(tmp_path, data)
    df, caught = _warned(path)
    assert len(df) == 200
    assert df.equals(_filled_without([2, 3]))
    assert [w.message.offset for w in caught] == [start + 40]
    assert "dropped 2 such record(s)" in str(caught[0].message)
    assert df.attrs["bindf"]["errors"] == {"time_outlier": 2}


def test_fill_gaps_outlier_at_the_last_record(tmp_path):
    # no record after it to contradict it: a genuine gap
    data, _ = _sample_with_times({199: 5e8})
    df = read(write(tmp_path, data, "near.bin"), fill_gaps=True)
    assert len(df) == 500
    assert df.iloc[:199].equals(_filled_without([]).iloc[:199])
    assert (df.iloc[199:-1, 1:] == 0).all().all()
    assert df["ch2"].iloc[-1] == 2253


def test_fill_gaps_zeroed_time_is_not_an_outlier_of_its_neighbours(tmp_path):
    # a record far *behind* (a dip) is dropped itself, as before
    data, start = _sample_with_times({5: 0.0})
    df, caught = _warned(write(tmp_path, data))
    assert df.equals(_filled_without([5]))
    assert [w.message.offset for w in caught] == [start + 100]
    assert df.attrs["bindf"]["errors"] == {"time_not_increasing": 1}


@pytest.mark.parametrize("records_per_chunk", [1, 2, 3, 4, 5, 7])
def test_fill_gaps_outliers_across_chunk_boundaries(tmp_path, records_per_chunk):
    # with 3 records a chunk, chunk 1 ends right after the outlier (record 2)
    cases = {(2,): {2: 5e8}, (2, 3): {2: 5e8, 3: 5.01e8}, (0,): {0: 5e8},
             (8, 9): {8: 1e15, 9: 1e15 + 1e6}, (197,): {197: 1e15}}
    for dropped, changes in cases.items():
        data, _ = _sample_with_times(changes)
        path = write(tmp_path, data)
        whole = read(path, fill_gaps=True, on_error="skip")
        expected = _filled_without([d for d in dropped if d]).iloc[(1 if 0 in dropped else 0):]
        assert whole.equals(expected.reset_index(drop=True)), dropped
        with small_chunks(20 * records_per_chunk):
            for size in (1, 3, 200):
                got = pd.concat(list(read(path, fill_gaps=True, on_error="skip",
                                          chunksize=size)), ignore_index=True)
                assert got.equals(whole), (dropped, size)


def test_fill_gaps_sparse_outlier_at_chunk_boundary(tmp_path):
    header = {"channels": [0, 1], "bin_width_micros": 1}
    times = [1000.0 * k for k in range(1, 11)]
    times[4] = 7e14
    records = [sparse_record(t, {0: k + 1} if k % 2 else {0: k + 1, 1: 7})
               for k, t in enumerate(times)]
    # no end marker: it is accepted only when the records before it chain up to it
    path = write(tmp_path, preamble(header) + b"".join(records))
    offset = len(preamble(header)) + sum(len(r) for r in records[:4])
    df, caught = _warned(path, layout="sparse")
    assert df["ch1"].tolist() == [1, 2, 3, 4, 0, 6, 7, 8, 9, 10]
    assert df["ch2"].tolist() == [7, 0, 7, 0, 0, 0, 7, 0, 7, 0]
    assert [w.message.offset for w in caught] == [offset]
    # chunks that end right after the outlier, inside it, or inside the next record
    cut_after = sum(len(r) for r in records[:5])
    for chunk in (cut_after, cut_after - 3, cut_after + 4, 13, 9):
        with small_chunks(chunk):
            df_c, caught_c = _warned(path, layout="sparse")
            assert df_c.equals(df), chunk
            assert [w.message.offset for w in caught_c] == [offset], chunk


def test_fill_gaps_far_future_time_is_bounded(tmp_path):
    import time
    import tracemalloc
    for changes, rows in (({2: 1e15}, 200), ({2: 1e15, 3: 2e15}, 200)):
        data, _ = _sample_with_times(changes)
        path = write(tmp_path, data)
        for on_error in ("skip", "warn", "raise"):
            tracemalloc.start()
            began = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CorruptDataWarning)
                    df = read(path, fill_gaps=True, on_error=on_error)
            except CorruptDataError:
                assert on_error == "raise"
            else:
                assert on_error != "raise"
                assert len(df) == rows
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert time.perf_counter() - began < 5
            assert peak < 64 << 20, (changes, on_error, peak)


def test_outlier_runs_rule():
    w = 1.0
    t = np.array([1, 2, 50, 3, 4, 5], dtype=float)
    assert it02._outlier_runs(t, w, at_start=False).tolist() == [0, 0, 1, 0, 0, 0]
    # the record after the jump is ahead of the jump: no outlier (the dip rule applies)
    t = np.array([10, 20, 15, 25, 30], dtype=float)
    assert not it02._outlier_runs(t, w, at_start=True).any()
    # not enough records after it: not judged
    t = np.array([1, 2, 50, 3], dtype=float)
    assert not it02._outlier_runs(t, w, at_start=True).any()
    # the first record has no record before it: only at the start of the file
    t = np.array([50, 1, 2, 3], dtype=float)
    assert it02._outlier_runs(t, w, at_start=True).tolist() == [1, 0, 0, 0]
    assert not it02._outlier_runs(t, w, at_start=False).any()
    # runs longer than MAX_OUTLIER_RUN are not outliers
    t = np.array([1, 50, 51, 52, 2, 3, 4, 5], dtype=float)
    assert not it02._outlier_runs(t, w, at_start=False).any()
    # valid traces have none
    t = np.cumsum(np.random.default_rng(1).integers(1, 5, 1000)).astype(float)
    assert not it02._outlier_runs(t, w, at_start=True).any()


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_streamed_reads_allocate_the_batches_they_ask_for(tmp_path, layout, monkeypatch):
    """Chunks and scans get batches of their size (a first chunk of 1,000 rows read
    84 MB of a dense file: every batch was 4 Mi rows); eager reads keep the large
    output arrays. Same rows either way."""
    sample = (Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin")
    path = tmp_path / f"{layout}.bin"
    bindf.write_it02(path, bindf.read_it02(sample, output="polars"), layout=layout)
    whole = bindf.read_it02(path, output="polars")
    capacities: list[int] = []
    real_init = it02._Outputs.__init__

    def recording(self, capacity, *args, **kwargs):
        capacities.append(capacity)
        real_init(self, capacity, *args, **kwargs)

    monkeypatch.setattr(it02._Outputs, "__init__", recording)
    chunks = list(bindf.read_it02(path, output="polars", chunksize=30))
    assert [c.height for c in chunks] == [30] * 6 + [20]
    assert capacities and max(capacities) <= 30
    assert pl.concat(chunks).equals(whole)
    capacities.clear()
    assert bindf.read_it02(path, output="polars").equals(whole)
    # one batch for the whole file (OUTPUT_ROWS, capped by what the bytes can hold)
    assert len(capacities) == 1 and capacities[0] >= 200


def test_chunks_carry_what_the_header_learns_during_the_read(tmp_path: Path) -> None:
    """A sparse file's end marker is only told from a last record once the chain reaches
    it: the chunk read after that carries its time in the header, as a whole read does
    (chunk info made once, at the first chunk, lost it)."""
    times = [1e6, 2e6, 3e6, 4e6]
    body = b"".join(sparse_record(t, {i % 2: i + 1}) for i, t in enumerate(times))
    path = tmp_path / "s.bin"
    path.write_bytes(preamble({"channels": [0, 1], "bin_width_micros": 1000}) + body
                     + end_marker(3.99e6))
    whole = bindf.read(path, layout="sparse").attrs["bindf"]["header"]
    assert whole["acquisition_end_ns"] == 3.99e6
    for output in ("pandas", "polars"):
        chunks = list(bindf.read(path, layout="sparse", chunksize=2, output=output))
        headers = [(c.attrs["bindf"] if output == "pandas" else c.bindf.info)["header"]
                   for c in chunks]
        assert [h["acquisition_end_ns"] for h in headers] == [None, 3.99e6]


@pytest.mark.parametrize(("damage", "record"), [("nan", 500), ("nan", 3), ("back", 1200)])
def test_fill_gaps_hands_out_the_bins_before_the_damage_then_raises(data_dir, tmp_path,
                                                                     damage, record):
    """``fill_gaps=True`` under ``on_error="raise"``: every way of reading first hands
    out the bins of the records before the damaged one (as a read of the file cut there
    gives), then raises at its offset (a batch of rows was lost, all of them through
    ``bindf.open``)."""
    data = bytearray((data_dir / SAMPLE).read_bytes())
    offset = 8 + struct.unpack_from("<I", data, 4)[0]
    size = 8 + 4 * 3  # time + three channels
    at = offset + record * size
    time = struct.unpack_from("<d", data, at)[0]
    struct.pack_into("<d", data, at, math.nan if damage == "nan" else time - 5e6)
    path = tmp_path / "damaged.bin"
    path.write_bytes(bytes(data))
    cut = tmp_path / "cut.bin"
    cut.write_bytes(bytes(data[:at]))
    expected = bindf.read(cut, fill_gaps=True, output="arrow").replace_schema_metadata(None)
    assert expected.num_rows > 0

    def batches_of(read):
        got = []
        with pytest.raises((bindf.errors.CorruptDataError, pa.ArrowInvalid)) as caught:
            got.extend(read())
        assert f"(at byte offset {at})" in str(caught.value)
        table = pa.Table.from_batches(got) if got else expected.slice(0, 0)
        return table.replace_schema_metadata(None)

    def chunks():
        for frame in bindf.read(path, fill_gaps=True, chunksize=64, output="arrow"):
            yield from frame.to_batches()

    def stream():
        with bindf.open(path, fill_gaps=True) as f:
            yield from pa.RecordBatchReader.from_stream(f)

    reads = {"iter_batches": lambda: bindf.iter_batches(path, fill_gaps=True, batch_size=100),
             "chunks": chunks, "stream": stream}
    for name, read in reads.items():
        assert batches_of(read).equals(expected), name
