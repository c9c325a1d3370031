"""bindf.read_headers: a one-row-per-file catalogue of headers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import write_stt1

import bindf
from bindf.formats.spectro import SpectroReader
from bindf.frontends.headers import FIXED_COLUMNS, flatten_header

HEADERS = [
    {"laser_period_ns": 25.0, "channels": [0, 1], "acq": {"mode": "tcspc", "bins": 256},
     "rows": "user data", "operator": "ada"},
    {"laser_period_ns": 12.5, "channels": [2], "acq": {"mode": "tcspc", "bins": 512},
     "rows": "more", "extra": {}},
    {"laser_period_ns": "unknown", "channels": [], "acq": {"mode": "photon", "bins": None}},
]


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [write_stt1(tmp_path / f"run{i}.bin", n=100 * (i + 1), seed=i, header=h)
            for i, h in enumerate(HEADERS)]


def test_one_row_per_file_with_flattened_headers(runs: list[Path]) -> None:
    df = bindf.read_headers([str(p) for p in runs])
    assert list(df.columns) == ["path", "format", "size_bytes", "rows", "laser_period_ns",
                                "channels", "acq.mode", "acq.bins", "header.rows", "operator",
                                "extra"]
    assert df["path"].tolist() == [str(p) for p in runs]
    assert df["format"].tolist() == ["spectro"] * 3
    assert df["size_bytes"].tolist() == [p.stat().st_size for p in runs]
    assert df["rows"].tolist() == [100, 200, 300]
    # Lists are JSON text; nested dicts dotted; an empty dict is kept as "{}".
    assert [json.loads(v) for v in df["channels"]] == [[0, 1], [2], []]
    assert df["acq.mode"].tolist() == ["tcspc", "tcspc", "photon"]
    assert df["acq.bins"].iloc[:2].tolist() == [256, 512] and pd.isna(df["acq.bins"].iloc[2])
    assert df["extra"].iloc[1] == "{}" and df["extra"].isna().tolist() == [True, False, True]
    # A header key equal to a fixed column is renamed, never overwrites it.
    assert df["header.rows"].iloc[:2].tolist() == ["user data", "more"]
    # One key with several types: JSON text for all.
    assert df["laser_period_ns"].tolist() == ["25.0", "12.5", "unknown"]
    assert df["operator"].iloc[0] == "ada" and df["operator"].isna().sum() == 2
    assert str(df["size_bytes"].dtype) == "int64" and str(df["rows"].dtype) == "Int64"


def test_flatten_false_and_outputs(runs: list[Path], tmp_path: Path) -> None:
    raw = bindf.read_headers(str(tmp_path / "run*.bin"), flatten=False)
    assert list(raw.columns) == ["path", "format", "size_bytes", "rows", "header"]
    assert [json.loads(h) for h in raw["header"]] == HEADERS
    pf = bindf.read_headers(str(tmp_path / "run*.bin"), output="polars")
    assert isinstance(pf, pl.DataFrame) and pf["rows"].to_list() == [100, 200, 300]
    table = bindf.read_headers(str(tmp_path / "run*.bin"), output="arrow")
    assert isinstance(table, pa.Table)
    assert table.schema.field("size_bytes").nullable is False
    assert table.schema.field("acq.bins").type == pa.int64()
    with pytest.raises(ValueError, match="output"):
        bindf.read_headers(str(runs[0]), output="excel")


def test_parallel_equals_serial(tmp_path: Path) -> None:
    """Remote headers are fetched on several threads, local ones read in order; the
    rows are the same either way, in source order."""
    import fsspec

    files = [write_stt1(tmp_path / f"f{i:02d}.bin", n=10 + i, seed=i,
                        header={"index": i, "meta": {"even": i % 2 == 0}})
             for i in range(20)]
    serial = bindf.read_headers(str(tmp_path / "f*.bin"), parallel=False)
    auto = bindf.read_headers(str(tmp_path / "f*.bin"))
    pd.testing.assert_frame_equal(serial, auto)
    memory = fsspec.filesystem("memory")
    for path in files:
        memory.pipe(f"/headers/{path.name}", path.read_bytes())
    remote = bindf.read_headers("memory://headers/f*.bin", threads=3)
    pd.testing.assert_frame_equal(remote.drop(columns="path"), serial.drop(columns="path"))
    assert [Path(p).name for p in remote["path"]] == [f.name for f in files]
    one = bindf.read_headers("memory://headers/f*.bin", threads=1)
    pd.testing.assert_frame_equal(one, remote)
    assert serial["index"].tolist() == list(range(20))
    assert serial["rows"].tolist() == [10 + i for i in range(20)]
    assert serial["meta.even"].tolist() == [i % 2 == 0 for i in range(20)]
    assert [Path(p) for p in serial["path"]] == files


def test_legacy_truncated_and_uncountable(tmp_path: Path, runs: list[Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = tmp_path / "legacy.raw"
    legacy.write_bytes(runs[0].read_bytes()[-17 * 40 - 3:])  # 40 records and 3 stray bytes
    df = bindf.read_headers([str(legacy)], format="spectro", container="legacy")
    assert list(df.columns) == ["path", "format", "size_bytes", "rows"]
    assert df["rows"].tolist() == [40]  # complete records only; no decoding, no warning
    monkeypatch.setattr(SpectroReader, "count_rows", lambda self: None)
    assert bindf.read_headers(str(runs[0]))["rows"].isna().all()


@pytest.mark.parametrize("parallel", [False, True])
def test_errors_name_the_failing_file(tmp_path: Path, runs: list[Path], parallel: bool) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"STT1" + (10_000).to_bytes(4, "little") + b"{}")  # length beyond EOF
    with pytest.raises(bindf.HeaderError, match="bad.bin"):
        bindf.read_headers([*map(str, runs), str(bad)], parallel=parallel)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\xff" * 100)
    with pytest.raises(bindf.UnknownFormatError, match="junk.dat") as info:
        bindf.read_headers([str(runs[0]), str(junk)], parallel=parallel)
    assert info.value.path == str(junk)
    with pytest.raises(FileNotFoundError):
        bindf.read_headers(str(tmp_path / "none*.bin"), parallel=parallel)


def test_flatten_header() -> None:
    assert flatten_header({"a": {"b": {"c": 1}, "d": [1, {"x": 2}]}, "e": {}, "f": None}) == {
        "a.b.c": 1, "a.d": '[1, {"x": 2}]', "e": "{}", "f": None}
    assert flatten_header({}) == {}


@pytest.mark.parametrize(("header", "expected"), [
    ({"a.b": 1, "a": {"b": 2}}, {"a.b": 1, "a": '{"b": 2}'}),
    ({"path": "top", "header": {"path": "nested"}},
     {"header.path": "top", "header": '{"path": "nested"}'}),
    ({"x": {"b.c": 1, "b": {"c": 2}}, "y": {"z": 1}, "rows": 5},
     {"x": '{"b.c": 1, "b": {"c": 2}}', "y.z": 1, "header.rows": 5}),
    ({"path": "x", "header.path": "y"}, {"header.path": "x", "header.header.path": "y"}),
])
def test_header_columns_never_overwrite_each_other(tmp_path: Path, header: dict,
                                                   expected: dict) -> None:
    path = tmp_path / "odd.spf1"
    bindf.write_spf1(path, {"time_ns": [1], "channel": [0], "harmonic": [1], "g": [0.5],
                            "s": [0.25]}, header={"channels": [0], **header})
    row = bindf.read_headers(str(path)).iloc[0].to_dict()
    assert {k: v for k, v in row.items() if k not in FIXED_COLUMNS + ("channels",)} == expected


def test_options_go_to_the_formats_that_take_them(tmp_path: Path, runs: list[Path]) -> None:
    """A glob mixing formats: each file gets the options its format takes (container=
    went to the AstroPix reader too and failed); an option no format takes is a
    TypeError naming it."""
    apx = tmp_path / "run.apx"
    apx.write_bytes((Path(bindf.__file__).parent / "samples"
                     / "astropix_threshold_scan.apx").read_bytes())
    frame = bindf.read_headers([str(runs[0]), str(apx)], container="stt1")
    assert frame["format"].tolist() == ["spectro", "apx"]
    with pytest.raises(TypeError, match="'containr'; did you mean container="):
        bindf.read_headers([str(runs[0]), str(apx)], containr="stt1")
