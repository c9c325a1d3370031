"""SPF1 phasors (docs/formats/spf1.md, real-file layout): the real example export, writer round
trips, damage, and eager/lazy parity."""

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
from bindf.formats.spf1 import SPF1Reader

REAL = "spf1_phasors_example.bin"
# The layout spelled out independently of bindf: u64 time, u32 channel, u32 harmonic, f64 g, s.
RAW = np.dtype([("t", "<u8"), ("c", "<u4"), ("h", "<u4"), ("g", "<f8"), ("s", "<f8")])
assert RAW.itemsize == 32
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EDGE_FLOATS = [0.0, -0.0, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan, 1e9]


def numpy_parse(path) -> tuple[dict, np.ndarray, int]:
    data = open(path, "rb").read()
    assert data[:4] == b"SPF1"
    (length,) = struct.unpack_from("<I", data, 4)
    body = data[8 + length :]
    n = len(body) // 32
    return json.loads(data[8 : 8 + length]), np.frombuffer(body[: n * 32], dtype=RAW).copy(), 8 + length


def spf1_bytes(header: dict | bytes, rec: np.ndarray | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return b"SPF1" + struct.pack("<I", len(raw)) + raw + (b"" if rec is None else rec.tobytes())


@pytest.fixture(scope="module")
def real(data_dir):
    return data_dir / REAL


# -- the real example --------------------------------------------------------------------


def test_real_values(real):
    header, rec, _ = numpy_parse(real)
    df = bindf.read_spf1(real)
    assert df.shape == (400, 5)
    assert list(df.columns) == ["time_ns", "channel", "harmonic", "g", "s"]
    assert df.dtypes.astype(str).tolist() == ["uint64", "uint32", "uint32", "float64", "float64"]
    assert df.attrs["bindf"]["header"] == header
    for column, raw in zip(df.columns, RAW.names, strict=True):
        np.testing.assert_array_equal(df[column].to_numpy(), rec[raw])
    first = df.iloc[0]
    assert (first["time_ns"], first["channel"], first["harmonic"]) == (100000565, 1, 1)
    assert first["g"] == pytest.approx(-0.68132072) and first["s"] == pytest.approx(-0.72701152)


def test_real_channel_and_harmonic_meaning(real):
    """``channel`` holds the header's channel indices themselves; harmonics are 1-based."""
    df = bindf.read_spf1(real, output="polars")
    header = df.bindf.header
    assert header["channels"] == [1, 3] and header["harmonics"] == 2
    assert sorted(df["channel"].unique().to_list()) == header["channels"]
    assert sorted(df["harmonic"].unique().to_list()) == list(range(1, header["harmonics"] + 1))
    # One record per channel × harmonic at every time, 100 times (= the SP01 records).
    per_time = df.group_by("time_ns").agg(pl.len(), pl.col("channel").n_unique(),
                                          pl.col("harmonic").n_unique())
    assert per_time.height == 100
    assert per_time["len"].unique().to_list() == [4]
    assert per_time["channel"].unique().to_list() == [2]
    assert per_time["harmonic"].unique().to_list() == [2]


def test_real_phasors_join_their_sp01_curves_with_the_documented_casts(real, data_dir):
    """docs/formats/spf1.md: the keys are typed as stored (SP01: f64 times, uint8 channels),
    and the cast it shows puts every phasor beside the curves of its interval."""
    curves = bindf.read_sp01(data_dir / "sp01_decay_curves_example.bin", output="polars")
    phasors = bindf.read_spf1(real, output="polars")
    totals = curves.group_by("time_ns", "channel").agg(pl.col("count").sum())
    joined = phasors.join(totals.with_columns(pl.col("time_ns").cast(pl.UInt64),
                                              pl.col("channel").cast(pl.UInt32)),
                          on=["time_ns", "channel"])
    assert joined.height == phasors.height == 400
    assert (joined["count"] > 0).all()


def test_real_count_rows(real):
    assert SPF1Reader(Source(str(real))).count_rows() == 400


@pytest.mark.parametrize("output", ["pandas", "polars", "arrow"])
def test_real_rewrite_is_byte_identical(real, tmp_path, output):
    out = tmp_path / "copy.bin"
    bindf.write_spf1(out, bindf.read_spf1(real, output=output))
    assert out.read_bytes() == real.read_bytes()


def test_scan_parity(real):
    eager = pl.read_spf1(real)
    lazy = pl.scan_spf1(real)
    assert lazy.collect_schema() == eager.schema
    assert lazy.collect().equals(eager)
    cases = [
        lambda f: f.select("s", "g"),
        lambda f: f.filter((pl.col("channel") == 3) & (pl.col("harmonic") == 2)),
        lambda f: f.filter(pl.col("g") > 0).select("time_ns"),
        lambda f: f.head(5),
        lambda f: f.filter(pl.col("harmonic") == 1).head(17),
    ]
    for case in cases:
        assert case(lazy).collect().equals(case(eager))
    # Float aggregates may sum in another order over differently chunked data.
    def agg(f):
        return f.group_by("channel", "harmonic").agg(pl.col("g").mean()).sort("channel", "harmonic")

    # np.testing: polars.testing names its tolerance rtol or rel_tol, by polars version.
    lazy_agg, eager_agg = agg(lazy).collect(), agg(eager)
    assert lazy_agg.select("channel", "harmonic").equals(eager_agg.select("channel", "harmonic"))
    np.testing.assert_allclose(lazy_agg["g"].to_numpy(), eager_agg["g"].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("batch_size", [1, 3, 64, 399, 400, 10**6])
def test_batches_equal_whole(real, batch_size):
    whole = bindf.read_spf1(real, output="arrow")
    assert bindf.read_spf1(real, output="arrow", batch_size=batch_size).equals(whole)
    sizes = [b.num_rows for b in bindf.iter_batches(real, batch_size=batch_size)]
    assert sum(sizes) == 400 and max(sizes) <= batch_size
    assert pl.scan_spf1(real, batch_size=batch_size).collect().equals(pl.from_arrow(whole))


def test_n_rows_columns_chunksize(real):
    full = bindf.read_spf1(real)
    assert bindf.read_spf1(real, n_rows=9).equals(full.head(9))
    assert list(bindf.read_spf1(real, columns=["s", "channel"]).columns) == ["s", "channel"]
    chunks = list(pd.read_spf1(real, chunksize=150))
    assert [len(c) for c in chunks] == [150, 150, 100]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), full)
    with pytest.raises(TypeError, match="unexpected option"):
        bindf.read_spf1(real, shape="wide")


def test_multi_file(real, tmp_path):
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(real.read_bytes())
    pattern = str(tmp_path / "*.bin")
    df = bindf.read_spf1(pattern, include_file_paths="file", row_index_name="row", output="polars")
    assert df.height == 800
    assert df["row"].to_list() == list(range(800))
    assert df["file"].value_counts().sort("file")["count"].to_list() == [400, 400]
    lazy = pl.scan_spf1(pattern, include_file_paths="file", row_index_name="row")
    assert lazy.collect().equals(df)
    assert lazy.filter(pl.col("row") > 390).head(20).collect().equals(
        df.filter(pl.col("row") > 390).head(20)
    )


# -- writer round trips --------------------------------------------------------------------

floats = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats())
phasor_rows = st.lists(
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
              floats, floats),
    max_size=30,
)


@SETTINGS
@given(rows=phasor_rows, kind=st.sampled_from(["pandas", "polars", "arrow"]),
       header=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)))
def test_round_trip(tmp_path_factory, rows, kind, header):
    rec = np.zeros(len(rows), dtype=RAW)
    if rows:
        for name, values in zip(RAW.names, zip(*rows, strict=True), strict=True):
            rec[name] = values
    columns = {"time_ns": rec["t"], "channel": rec["c"], "harmonic": rec["h"], "g": rec["g"],
               "s": rec["s"]}
    frame = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.table}[kind](columns)
    path = tmp_path_factory.mktemp("spf1") / "out.bin"
    bindf.write_spf1(path, frame, header)
    parsed_header, parsed, _ = numpy_parse(path)
    assert parsed.tobytes() == rec.tobytes()  # every bit, NaN payloads included
    if header is None:
        assert parsed_header == {"channels": sorted(set(rec["c"].tolist())),
                                 "harmonics": int(rec["h"].max()) if len(rec) else 0}
    else:
        assert parsed_header == header
    back = bindf.read(path, output="arrow")
    assert back.column("time_ns").to_pylist() == rec["t"].tolist()
    assert back.column("harmonic").to_pylist() == rec["h"].tolist()


def test_writer_rejects_bad_input(tmp_path):
    out = tmp_path / "x.bin"
    good = {"time_ns": [1], "channel": [1], "harmonic": [1], "g": [0.5], "s": [0.5]}
    with pytest.raises(ValueError, match="missing column"):
        bindf.write_spf1(out, {k: v for k, v in good.items() if k != "s"})
    with pytest.raises(ValueError, match="cannot be stored"):
        bindf.write_spf1(out, {**good, "channel": [2**32]})
    with pytest.raises(ValueError, match="cannot be stored"):
        bindf.write_spf1(out, {**good, "time_ns": [-1]})
    with pytest.raises(ValueError, match="cannot be stored"):
        bindf.write_spf1(out, {**good, "harmonic": [1.5]})
    with pytest.raises(ValueError, match="null"):
        bindf.write_spf1(out, pl.DataFrame({**good, "g": [None]}, schema_overrides={"g": pl.Float64}))
    assert os.listdir(tmp_path) == []


# -- damage ----------------------------------------------------------------------------------


def test_truncated(real, tmp_path):
    data = real.read_bytes()
    _, rec, start = numpy_parse(real)
    for cut in (1, 8, 31):
        path = tmp_path / f"cut{cut}.bin"
        path.write_bytes(data[: start + 50 * 32 + cut])
        with pytest.warns(TruncatedFileWarning, match="incomplete 32-byte record") as caught:
            df = bindf.read(path, output="polars")
        assert df.height == 50
        assert caught[0].message.offset == start + 50 * 32
        np.testing.assert_array_equal(df["g"].to_numpy(), rec["g"][:50])
    path = tmp_path / "boundary.bin"
    path.write_bytes(data[: start + 50 * 32])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bindf.read_spf1(path).shape == (50, 5)
        assert bindf.read_spf1(tmp_path / "cut8.bin", n_rows=50).shape == (50, 5)


def test_header_only_and_empty(tmp_path):
    path = tmp_path / "h.bin"
    path.write_bytes(spf1_bytes({"channels": [0], "harmonics": 1}))
    assert bindf.read(path).shape == (0, 5)
    assert pl.scan_spf1(path).collect().shape == (0, 5)
    path.write_bytes(b"")
    with pytest.raises(UnknownFormatError, match="empty"):
        bindf.read_spf1(path)


def test_bad_magic_and_length(tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(spf1_bytes({}).replace(b"SPF1", b"SPF2"))
    with pytest.raises(UnknownFormatError, match="expected magic b'SPF1'"):
        bindf.read_spf1(path)
    path.write_bytes(b"SPF1" + struct.pack("<I", 4096) + b"{}")
    with pytest.raises(HeaderError, match="declares 4096 bytes") as exc:
        bindf.read(path)
    assert exc.value.offset == 4


@pytest.mark.parametrize(
    ("payload", "match"),
    [(b"[]", "must be an object"), (b'{"a":1,"a":1}', "duplicate"), (b'{"a": Infinity}', "Infinity"),
     (b"{" * 80 + b"}" * 80, "nested deeper"), (b'{"a": "\\udfff"}', "surrogate")],
)
def test_header_damage(tmp_path, payload, match):
    path = tmp_path / "d.bin"
    path.write_bytes(spf1_bytes(payload))
    with pytest.raises(HeaderError, match=match) as exc:
        bindf.read_spf1(path)
    assert exc.value.offset is not None and exc.value.offset >= 8


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=500), mutate=st.integers(0, 20), byte=st.integers(0, 255))
def test_fuzz_never_crashes(tmp_path_factory, body, mutate, byte):
    data = bytearray(spf1_bytes({"channels": [1]}) + body)
    if mutate < len(data):
        data[mutate] = byte
    path = tmp_path_factory.mktemp("fuzz") / "f.bin"
    for candidate in (bytes(data), body):
        path.write_bytes(candidate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedFileWarning)
            try:
                df = bindf.read_spf1(path, output="polars")
            except BindfError:
                continue
        assert df.height == (len(candidate) - 8 - struct.unpack_from("<I", candidate, 4)[0]) // 32
