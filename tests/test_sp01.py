"""SP01 decay curves (docs/formats/sp01.md): the real example export, writer round trips,
damage, and eager/lazy parity."""

from __future__ import annotations

import json
import math
import os
import struct
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bindf
from bindf._source import Source
from bindf.errors import BindfError, HeaderError, TruncatedFileWarning, UnknownFormatError
from bindf.formats.sp01 import SP01Reader

REAL = "sp01_decay_curves_example.bin"
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EDGE_FLOATS = [0.0, -0.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan, 1e8]


def numpy_parse(path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Direct parse of the byte layout, independent of bindf: header, times, counts[n,N,256]."""
    data = open(path, "rb").read()
    assert data[:4] == b"SP01"
    (length,) = struct.unpack_from("<I", data, 4)
    header = json.loads(data[8 : 8 + length])
    n_channels = len(header["channels"])
    body = data[8 + length :]
    size = 8 + 1024 * n_channels
    n = len(body) // size
    rec = np.frombuffer(body[: n * size], dtype=np.dtype(
        [("t", "<f8"), ("c", "<u4", (n_channels, 256))]
    ))
    return header, rec["t"].copy(), rec["c"].copy()


def sp01_bytes(header: dict | bytes, times=(), counts=None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    out = [b"SP01", struct.pack("<I", len(raw)), raw]
    for i, t in enumerate(times):
        out.append(struct.pack("<d", t))
        out.append(np.ascontiguousarray(counts[i], dtype="<u4").tobytes())
    return b"".join(out)


@pytest.fixture(scope="module")
def real(data_dir):
    return data_dir / REAL


# -- the real example --------------------------------------------------------------------


def test_real_tidy(real):
    header, times, counts = numpy_parse(real)
    assert header["channels"] == [1, 3] and header["laser_period_ns"] == 25.0
    assert len(times) == 100
    df = bindf.read_sp01(real)
    assert df.shape == (51200, 5)
    assert list(df.columns) == ["time_ns", "channel", "bin", "count", "bin_time_ns"]
    assert df.dtypes.astype(str).tolist() == ["float64", "uint8", "uint16", "uint32", "float64"]
    assert df.attrs["bindf"]["header"] == header
    np.testing.assert_array_equal(df["time_ns"].to_numpy(), np.repeat(times, 512))
    np.testing.assert_array_equal(df["channel"].to_numpy(), np.tile(np.repeat([1, 3], 256), 100))
    np.testing.assert_array_equal(df["bin"].to_numpy(), np.tile(np.arange(256), 200))
    np.testing.assert_array_equal(df["count"].to_numpy(), counts.reshape(-1))
    np.testing.assert_allclose(df["bin_time_ns"].to_numpy(), df["bin"].to_numpy() * 25.0 / 256)
    # Spot checks against hand-read bytes of the first record.
    assert df["time_ns"].iloc[0] == 100000565.0
    assert df["count"].iloc[:3].tolist() == [110, 95, 98]
    assert df["count"].iloc[256:259].tolist() == [107, 102, 111]
    # Counts are per interval, not cumulative.
    assert counts.max() < 1000


def test_real_wide(real):
    _, times, counts = numpy_parse(real)
    df = bindf.read_sp01(real, shape="wide", output="polars")
    assert df.columns == ["time_ns", "ch2", "ch4"]
    assert df.schema["ch2"] == pl.Array(pl.UInt32, 256)
    assert df.height == 100
    np.testing.assert_array_equal(df["time_ns"].to_numpy(), times)
    np.testing.assert_array_equal(df["ch2"].to_numpy(), counts[:, 0, :])
    np.testing.assert_array_equal(df["ch4"].to_numpy(), counts[:, 1, :])
    table = bindf.read_sp01(real, shape="wide", output="arrow")
    assert table.schema.field("ch4").type == pa.list_(pa.field("item", pa.uint32(), nullable=False), 256)
    pdf = bindf.read_sp01(real, shape="wide")
    np.testing.assert_array_equal(np.stack(pdf["ch2"].to_numpy()), counts[:, 0, :])
    # The tidy frame is the wide one unpivoted.
    tidy = bindf.read_sp01(real, shape="long", output="polars")
    assert tidy.filter(pl.col("channel") == 3)["count"].to_list() == counts[:, 1, :].reshape(-1).tolist()


def test_real_count_rows_and_header(real):
    assert SP01Reader(Source(str(real))).count_rows() == 51200
    assert SP01Reader(Source(str(real)), shape="wide").count_rows() == 100
    assert bindf.read_header(real)["channels"] == [1, 3]


@pytest.mark.parametrize("output", ["pandas", "polars", "arrow"])
@pytest.mark.parametrize("shape", ["tidy", "wide"])
def test_real_rewrite_is_byte_identical(real, tmp_path, output, shape):
    df = bindf.read_sp01(real, output=output, shape=shape)
    out = tmp_path / "copy.bin"
    bindf.write_sp01(out, df)
    assert out.read_bytes() == real.read_bytes()


def test_real_times_match_phasors(real, data_dir):
    sp01 = bindf.read_sp01(real, shape="wide", output="polars")
    spf1 = bindf.read_spf1(data_dir / "spf1_phasors_example.bin", output="polars")
    phasor_times = spf1["time_ns"].unique(maintain_order=True).to_numpy()
    np.testing.assert_array_equal(sp01["time_ns"].to_numpy(), phasor_times.astype(np.float64))


def test_scan_parity_real(real):
    eager = pl.read_sp01(real)
    lazy = pl.scan_sp01(real)
    assert lazy.collect_schema() == eager.schema
    assert lazy.collect().equals(eager)
    cases = [
        lambda f: f.select("count", "time_ns"),
        lambda f: f.filter((pl.col("channel") == 3) & (pl.col("bin") < 10)),
        lambda f: f.filter(pl.col("count") > 140).select("bin_time_ns"),
        lambda f: f.head(300),
        lambda f: f.filter(pl.col("time_ns") > 5e9).head(600),
        lambda f: f.group_by("channel", "bin").agg(pl.col("count").sum()).sort("channel", "bin"),
    ]
    for case in cases:
        assert case(lazy).collect().equals(case(eager))
    wide_eager = pl.read_sp01(real, shape="wide")
    wide_lazy = pl.scan_sp01(real, shape="wide")
    assert wide_lazy.collect().equals(wide_eager)
    assert wide_lazy.select("ch4").head(5).collect().equals(wide_eager.select("ch4").head(5))
    assert wide_lazy.filter(pl.col("time_ns") < 3e8).collect().equals(
        wide_eager.filter(pl.col("time_ns") < 3e8)
    )


@pytest.mark.parametrize("batch_size", [7, 100, 256, 511, 512, 5000, 10**7])
def test_batches_equal_whole(real, batch_size):
    # Batch sizes below one record's 512 rows still work (a record is cut into pieces).
    whole = bindf.read_sp01(real, output="arrow")
    assert bindf.read_sp01(real, output="arrow", batch_size=batch_size).equals(whole)
    sizes = [b.num_rows for b in bindf.iter_batches(real, batch_size=batch_size)]
    assert sum(sizes) == 51200 and max(sizes) <= batch_size


@pytest.mark.parametrize("batch_size", [1, 3, 99, 100, 1000])
def test_wide_batches_equal_whole(real, batch_size):
    wide = bindf.read_sp01(real, output="arrow", shape="wide")
    assert bindf.read_sp01(real, output="arrow", shape="wide", batch_size=batch_size).equals(wide)
    sizes = [b.num_rows for b in bindf.iter_batches(real, shape="wide", batch_size=batch_size)]
    assert sum(sizes) == 100 and max(sizes) <= batch_size


def test_n_rows_and_columns(real):
    full = bindf.read_sp01(real, output="polars")
    assert bindf.read_sp01(real, n_rows=300, output="polars").equals(full.head(300))
    assert bindf.read_sp01(real, n_rows=10**9, output="polars").equals(full)
    picked = bindf.read_sp01(real, columns=["count", "channel"], output="polars")
    assert picked.columns == ["count", "channel"]
    assert bindf.read_sp01(real, shape="wide", n_rows=7, output="polars").height == 7
    with pytest.raises(ValueError, match="unknown column"):
        bindf.read_sp01(real, shape="wide", columns=["ch1"])


def test_chunksize(real):
    chunks = list(bindf.read_sp01(real, chunksize=5000))
    # pandas' convention: chunksize rows each (a record's rows may span two chunks);
    # the decoder's batches hold whole records (9 × 512 rows here)
    assert [len(c) for c in chunks] == [5000] * 10 + [1200]
    assert [b.num_rows for b in bindf.iter_batches(real, batch_size=5000)] == \
        [4608] * 11 + [512]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), bindf.read_sp01(real))


def test_options(real):
    with pytest.raises(ValueError, match="shape must be"):
        bindf.read_sp01(real, shape="square")
    with pytest.raises(TypeError, match="unexpected option"):
        bindf.read_sp01(real, container="stt1")


# -- writer round trips --------------------------------------------------------------------


@st.composite
def decay_curves(draw):
    channels = draw(st.lists(st.integers(0, 255), min_size=1, max_size=3, unique=True))
    n = draw(st.integers(0, 4))
    times = draw(st.lists(st.one_of(st.sampled_from(EDGE_FLOATS), st.floats()),
                          min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**32 - 1))
    counts = np.random.default_rng(seed).integers(
        0, 2**32, size=(n, len(channels), 256), dtype=np.uint64
    ).astype(np.uint32)
    if n and draw(st.booleans()):
        counts[0, 0, :3] = [0, 2**32 - 1, 1]
    period = draw(st.one_of(st.none(), st.floats(0.1, 1000.0)))
    header = {"channels": channels, "note": draw(st.text(max_size=5))}
    if period is not None:
        header["laser_period_ns"] = period
    return header, np.array(times, dtype=np.float64), counts


def to_frame(kind: str, columns: dict):
    if kind == "pandas":
        return pd.DataFrame(columns)
    if kind == "polars":
        return pl.DataFrame(columns)
    return pa.table(columns)


@SETTINGS
@given(curves=decay_curves(), kind=st.sampled_from(["pandas", "polars", "arrow"]))
def test_round_trip_tidy(tmp_path_factory, curves, kind):
    header, times, counts = curves
    n, n_channels, _ = counts.shape
    tidy = {
        "time_ns": np.repeat(times, n_channels * 256),
        "channel": np.tile(np.repeat(np.array(header["channels"], dtype=np.uint8), 256), n),
        "bin": np.tile(np.arange(256, dtype=np.uint16), n * n_channels),
        "count": counts.reshape(-1),
    }
    path = tmp_path_factory.mktemp("sp01") / "out.bin"
    bindf.write_sp01(path, to_frame(kind, tidy), header)
    parsed_header, parsed_times, parsed_counts = numpy_parse(path)
    assert parsed_header == header
    assert parsed_times.view(np.uint64).tolist() == times.view(np.uint64).tolist()
    np.testing.assert_array_equal(parsed_counts, counts)
    back = bindf.read_sp01(path, output="arrow")
    assert back.num_rows == n * n_channels * 256
    assert back.column("count").to_numpy().tolist() == counts.reshape(-1).tolist()
    assert back.column("channel").to_numpy().tolist() == tidy["channel"].tolist()
    bin_time = back.column("bin_time_ns")
    if "laser_period_ns" in header:
        np.testing.assert_allclose(
            bin_time.to_numpy(), tidy["bin"] * header["laser_period_ns"] / 256
        )
    else:
        assert bin_time.null_count == back.num_rows


@SETTINGS
@given(curves=decay_curves(), kind=st.sampled_from(["pandas", "polars", "arrow"]))
def test_round_trip_wide(tmp_path_factory, curves, kind):
    header, times, counts = curves
    columns: dict = {"time_ns": times}
    for k, channel in enumerate(header["channels"]):
        columns[f"ch{channel + 1}"] = list(counts[:, k, :]) if kind == "pandas" else (
            pa.FixedSizeListArray.from_arrays(pa.array(counts[:, k, :].reshape(-1)), 256)
        )
    frame = pd.DataFrame(columns) if kind == "pandas" else to_frame("arrow", columns)
    if kind == "polars":
        frame = pl.from_arrow(frame)
    path = tmp_path_factory.mktemp("sp01w") / "out.bin"
    bindf.write_sp01(path, frame, header)
    _, parsed_times, parsed_counts = numpy_parse(path)
    assert parsed_times.view(np.uint64).tolist() == times.view(np.uint64).tolist()
    np.testing.assert_array_equal(parsed_counts, counts)
    wide = bindf.read_sp01(path, shape="wide", output="polars")
    assert wide.columns == ["time_ns"] + [f"ch{c + 1}" for c in header["channels"]]


def test_writer_defaults_channels_from_frame(tmp_path):
    tidy = pd.DataFrame({
        "time_ns": np.repeat([1.0, 2.0], 512),
        "channel": np.tile(np.repeat([4, 0], 256), 2),
        "bin": np.tile(np.arange(256), 4),
        "count": np.arange(1024),
    })
    out = tmp_path / "a.bin"
    # Channel order in the file follows the header; without one, sorted channel values.
    bindf.write_sp01(out, tidy)
    header, _, counts = numpy_parse(out)
    assert header == {"channels": [0, 4]}
    np.testing.assert_array_equal(counts[0, 0], np.arange(256, 512))
    np.testing.assert_array_equal(counts[0, 1], np.arange(0, 256))
    wide = pa.table({
        "time_ns": [1.0],
        "ch3": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(256, np.uint32)), 256),
        "ch1": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(256, np.uint32)), 256),
    })
    bindf.write_sp01(out, wide)
    header, _, counts = numpy_parse(out)
    assert header == {"channels": [2, 0]}
    assert counts[0, 1].tolist() == [1] * 256


def test_writer_sorts_shuffled_tidy_rows(real, tmp_path):
    df = bindf.read_sp01(real)
    shuffled = df.sample(frac=1.0, random_state=1)
    out = tmp_path / "s.bin"
    bindf.write_sp01(out, shuffled)
    assert out.read_bytes() == real.read_bytes()


def test_writer_rejects_bad_frames(real, tmp_path):
    out = tmp_path / "bad.bin"
    df = bindf.read_sp01(real, output="polars")
    with pytest.raises(ValueError, match="whole number of records"):
        bindf.write_sp01(out, df.head(300))
    with pytest.raises(ValueError, match="not in the header"):
        bindf.write_sp01(out, df, {"channels": [1, 2]})
    with pytest.raises(ValueError, match="complete records"):
        bindf.write_sp01(out, df.with_columns(pl.when(pl.col("bin") == 5).then(6)
                                              .otherwise(pl.col("bin")).alias("bin")))
    with pytest.raises(ValueError, match="complete records"):
        bindf.write_sp01(out, df.with_columns(pl.col("bin").cast(pl.Int32) + 1))
    with pytest.raises(ValueError, match="differs within one record"):
        bindf.write_sp01(out, df.with_columns(
            pl.when((pl.col("bin") == 7) & (pl.col("time_ns") < 2e8)).then(1.5e8)
            .otherwise(pl.col("time_ns")).alias("time_ns")))
    with pytest.raises(ValueError, match="cannot be stored"):
        bindf.write_sp01(out, df.with_columns(pl.col("count").cast(pl.Int64) - 10**6))
    with pytest.raises(ValueError, match="channels"):
        bindf.write_sp01(out, df, {"channels": []})
    with pytest.raises(ValueError, match="neither the tidy columns"):
        bindf.write_sp01(out, {"time_ns": [1.0]})
    wide = bindf.read_sp01(real, shape="wide", output="arrow")
    with pytest.raises(ValueError, match="missing column"):
        bindf.write_sp01(out, wide, {"channels": [1, 5]})
    short = pa.table({"time_ns": [1.0], "ch1": pa.array([[1, 2, 3]], pa.list_(pa.uint32()))})
    with pytest.raises(ValueError, match="needs 256 values"):
        bindf.write_sp01(out, short)
    with pytest.raises(ValueError, match="not a list"):
        bindf.write_sp01(out, pa.table({"time_ns": [1.0], "ch1": [3]}))
    assert os.listdir(tmp_path) == []


# -- damage ----------------------------------------------------------------------------------


def test_truncated_mid_record(real, tmp_path):
    data = real.read_bytes()
    header, times, counts = numpy_parse(real)
    data_start = len(data) - 100 * 2056
    for cut in (1, 8, 9, 2055):
        path = tmp_path / f"cut{cut}.bin"
        path.write_bytes(data[: data_start + 10 * 2056 + cut])
        with pytest.warns(TruncatedFileWarning) as caught:
            df = bindf.read_sp01(path, output="polars")
        assert df.height == 10 * 512
        assert caught[0].message.offset == data_start + 10 * 2056
        np.testing.assert_array_equal(df["count"].to_numpy(), counts[:10].reshape(-1))
        with pytest.warns(TruncatedFileWarning):
            assert pl.scan_sp01(path, shape="wide").collect().height == 10
    path = tmp_path / "boundary.bin"
    path.write_bytes(data[: data_start + 10 * 2056])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bindf.read_sp01(path).shape[0] == 10 * 512


def test_header_only(tmp_path):
    path = tmp_path / "h.bin"
    path.write_bytes(sp01_bytes({"channels": [0, 1, 2], "laser_period_ns": 12.5}))
    assert bindf.read(path).shape == (0, 5)
    assert bindf.read_sp01(path, shape="wide", output="polars").columns == ["time_ns", "ch1", "ch2", "ch3"]


def test_empty_and_bad_magic(tmp_path):
    path = tmp_path / "e.bin"
    path.write_bytes(b"")
    with pytest.raises(UnknownFormatError, match="empty"):
        bindf.read_sp01(path)
    path.write_bytes(sp01_bytes({"channels": [0]}).replace(b"SP01", b"SP02", 1))
    with pytest.raises(UnknownFormatError, match="expected magic b'SP01'") as exc:
        bindf.read_sp01(path)
    assert exc.value.offset == 0


def test_header_length_beyond_eof(tmp_path):
    path = tmp_path / "l.bin"
    path.write_bytes(b"SP01" + struct.pack("<I", 10**9) + b'{"channels": [1]}')
    with pytest.raises(HeaderError, match="declares 1000000000 bytes") as exc:
        bindf.read(path)
    assert exc.value.offset == 4 and exc.value.path == str(path)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({}, "non-empty 'channels'"),
        ({"channels": []}, "non-empty 'channels'"),
        ({"channels": "1,3"}, "non-empty 'channels'"),
        ({"channels": [1, "3"]}, "0..255"),
        ({"channels": [True]}, "0..255"),
        ({"channels": [1.0]}, "0..255"),
        ({"channels": [256]}, "0..255"),
        ({"channels": [-1]}, "0..255"),
        ({"channels": [1, 1]}, "twice"),
    ],
)
def test_bad_channels(tmp_path, header, match):
    path = tmp_path / "c.bin"
    path.write_bytes(sp01_bytes(header))
    with pytest.raises(HeaderError, match=match) as exc:
        bindf.read(path)
    assert exc.value.offset == 8


def test_json_damage(tmp_path):
    path = tmp_path / "j.bin"
    path.write_bytes(sp01_bytes(b'{"channels": [1], "channels": [2]}'))
    with pytest.raises(HeaderError, match="duplicate key"):
        bindf.read_sp01(path)
    path.write_bytes(sp01_bytes(b'{"channels": [1], "laser_period_ns": NaN}'))
    with pytest.raises(HeaderError, match="NaN"):
        bindf.read_sp01(path)


@pytest.mark.parametrize("period", [None, 0, -25.0, "25", True, [25]])
def test_unusable_laser_period_gives_null_bin_time(tmp_path, period):
    path = tmp_path / "p.bin"
    header = {"channels": [0]} if period is None else {"channels": [0], "laser_period_ns": period}
    path.write_bytes(sp01_bytes(header, [1.0], np.zeros((1, 1, 256))))
    df = bindf.read_sp01(path, output="polars")
    assert df["bin_time_ns"].null_count() == 256
    assert df["count"].to_list() == [0] * 256


def test_many_channels_layout(tmp_path):
    channels = list(range(40))
    counts = np.arange(2 * 40 * 256, dtype=np.uint32).reshape(2, 40, 256)
    path = tmp_path / "many.bin"
    path.write_bytes(sp01_bytes({"channels": channels}, [5.0, 6.0], counts))
    df = bindf.read_sp01(path, output="polars")
    assert df.height == 2 * 40 * 256
    np.testing.assert_array_equal(df["count"].to_numpy(), counts.reshape(-1))
    assert bindf.read_sp01(path, shape="wide", output="polars").width == 41


def test_multi_file(tmp_path):
    counts = np.ones((2, 1, 256), dtype=np.uint32)
    (tmp_path / "a.bin").write_bytes(sp01_bytes({"channels": [0]}, [1.0, 2.0], counts))
    (tmp_path / "b.bin").write_bytes(sp01_bytes({"channels": [2]}, [1.0, 2.0], counts * 2))
    pattern = str(tmp_path / "*.bin")
    # Tidy frames of different channel sets share one schema: they concatenate.
    df = bindf.read_sp01(pattern, include_file_paths="file", row_index_name="i", output="polars")
    assert df.height == 1024
    assert df["channel"].unique().sort().to_list() == [0, 2]
    assert df["i"].to_list() == list(range(1024))
    assert df.filter(pl.col("channel") == 2)["file"].unique().to_list() == [str(tmp_path / "b.bin")]
    assert pl.scan_sp01(pattern, include_file_paths="file", row_index_name="i").collect().equals(df)
    # Wide frames have one column per channel: different channel sets do not mix.
    with pytest.raises(BindfError, match="columns differ"):
        bindf.read_sp01(pattern, shape="wide")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=3000), mutate=st.integers(0, 40), byte=st.integers(0, 255))
def test_fuzz_never_crashes(tmp_path_factory, body, mutate, byte):
    """Arbitrary bytes, and bytes after a (possibly mutated) valid preamble: a frame,
    a BindfError, or a truncation warning, never anything else."""
    data = bytearray(sp01_bytes({"channels": [0]}) + body)
    if mutate < len(data):
        data[mutate] = byte
    path = tmp_path_factory.mktemp("fuzz") / "f.bin"
    for candidate in (bytes(data), body):
        path.write_bytes(candidate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedFileWarning)
            try:
                df = bindf.read_sp01(path, output="arrow")
            except BindfError:
                continue
        assert df.num_rows % 256 == 0


def test_a_laser_period_too_large_for_a_float_is_no_period(tmp_path) -> None:  # noqa: ANN001
    """An integer of 400 digits is valid JSON but no float: the period is unknown, as
    when the key is missing (it raised OverflowError, a foreign error)."""
    counts = np.arange(2 * 256, dtype=np.uint32).reshape(1, 2, 256)
    frames = {}
    for name, period in (("huge", 10**400), ("none", None)):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(sp01_bytes({"channels": [0, 1], "laser_period_ns": period},
                                    times=[5.0], counts=counts))
        frames[name] = bindf.read_sp01(path, output="polars")
        assert bindf.read_header(path)["laser_period_ns"] == period
    assert frames["huge"].equals(frames["none"])
