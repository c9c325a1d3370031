"""``bindf.to_parquet`` → ``bindf.read_parquet``: pandas dtypes whoever wrote the file, the
pandas index, a header given with ``header=``, and every kind of source and destination."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

import bindf
from bindf import cli
from bindf.errors import BindfError, UnknownFormatError

SAMPLES = Path(bindf.__file__).parent / "samples"
SPECTRO = SAMPLES / "photon_events_stt1.bin"
SPECTRO_DTYPES = {"event": "uint8", "microtime_ns": "float64", "macrotime_ns": "float64",
                  "channel": "UInt8", "marker": "category"}


@pytest.mark.parametrize("writer", ["cli", "arrow", "pandas"])
def test_pandas_dtypes_are_the_readers_whoever_wrote_the_file(tmp_path: Path,
                                                                writer: str) -> None:
    out = tmp_path / "x.parquet"
    if writer == "cli":
        assert cli.main(["convert", str(SPECTRO), "-o", str(out), "-q"]) == 0
    else:
        bindf.to_parquet(bindf.read(SPECTRO, output=writer), out)
    expected = pd.read_spectro(SPECTRO)
    back = bindf.read_parquet(out)
    assert back.dtypes.astype(str).to_dict() == SPECTRO_DTYPES
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    assert back.attrs["bindf"]["header"] == expected.attrs["bindf"]["header"]


def test_pandas_dtypes_of_a_file_written_from_polars(tmp_path: Path) -> None:
    """polars declares every column nullable: the data says which integers can be null."""
    out = tmp_path / "x.parquet"
    bindf.to_parquet(pl.read_spectro(SPECTRO), out)
    back = bindf.read_parquet(out)
    assert back.dtypes.astype(str).to_dict() == SPECTRO_DTYPES
    expected = pd.read_spectro(SPECTRO)
    assert back["channel"].isna().sum() == 2
    pd.testing.assert_series_equal(back["channel"], expected["channel"], check_exact=True)
    pd.testing.assert_series_equal(back["event"], expected["event"], check_exact=True)


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.iterdir()
                                        if p.suffix in (".bin", ".apx")))
def test_every_sample_converted_reads_back_as_its_reader_gives_it(tmp_path: Path,
                                                                    name: str) -> None:
    out = tmp_path / "x.parquet"
    assert cli.main(["convert", str(SAMPLES / name), "-o", str(out), "-q"]) == 0
    pd.testing.assert_frame_equal(bindf.read_parquet(out), bindf.read(SAMPLES / name),
                                  check_exact=True)


def _summary() -> pd.DataFrame:
    frame = pd.read_spectro(SPECTRO)
    return frame.groupby("channel").agg(photons=("microtime_ns", "size"),
                                        mean_ns=("microtime_ns", "mean"))


def test_index_is_kept(tmp_path: Path) -> None:
    summary = _summary()
    out = tmp_path / "summary.parquet"
    bindf.to_parquet(summary, out)
    back = bindf.read_parquet(out)
    assert back.index.name == "channel"
    assert back.index.tolist() == [0, 2]
    assert back["photons"].tolist() == [85, 95]
    pd.testing.assert_frame_equal(back, pd.read_parquet(out), check_exact=True)
    # the UInt8 keys come back uint8, as pandas' own round trip gives them
    pd.testing.assert_frame_equal(back, summary.set_axis(summary.index.astype("uint8")),
                                  check_exact=True)
    # polars has no index: the keys are a column, as in polars' own read of the file
    assert bindf.read_parquet(out, output="polars").columns == ["photons", "mean_ns", "channel"]
    # read_parquet(columns=) keeps the index too, as pd.read_parquet does
    assert bindf.read_parquet(out, columns=["photons"]).index.tolist() == [0, 2]
    # as do the other dtype backends
    assert bindf.read_parquet(out, dtype_backend="pyarrow").index.tolist() == [0, 2]
    assert bindf.read_parquet(out, dtype_backend="numpy_nullable").index.tolist() == [0, 2]


def test_multi_index_and_range_index(tmp_path: Path) -> None:
    frame = pd.read_spectro(SPECTRO)
    pairs = frame.groupby(["event", "marker"], observed=True).size().to_frame("n")
    bindf.to_parquet(pairs, tmp_path / "pairs.parquet")
    back = bindf.read_parquet(tmp_path / "pairs.parquet")
    assert back.index.names == ["event", "marker"]
    pd.testing.assert_frame_equal(back, pairs, check_exact=True)
    rows = frame.iloc[10:20]
    bindf.to_parquet(rows, tmp_path / "rows.parquet")
    back = bindf.read_parquet(tmp_path / "rows.parquet")
    assert back.index.equals(pd.RangeIndex(10, 20))
    pd.testing.assert_frame_equal(back, rows, check_exact=True)
    # a default RangeIndex is no column of the file
    bindf.to_parquet(frame, tmp_path / "all.parquet")
    assert pq.read_schema(tmp_path / "all.parquet").names == list(frame.columns)


def test_header_argument_for_a_polars_frame_that_lost_it(tmp_path: Path) -> None:
    frame = pl.read_spectro(SPECTRO)
    photons = frame.filter(pl.col("channel").is_not_null())
    out = tmp_path / "photons.parquet"
    bindf.to_parquet(photons, out, header=frame.bindf.header, format="spectro")
    back = bindf.read_parquet(out, output="polars")
    assert back.bindf.header == frame.bindf.header
    assert back.bindf.format == "spectro"
    assert back.height == 180
    bindf.to_parquet(photons, out, header={"note": "mine"})
    info = bindf.read_parquet(out).attrs["bindf"]
    assert info["header"] == {"note": "mine"} and info["format"] == "unknown"
    assert b"bindf.format" not in pq.read_schema(out).metadata


def test_header_argument_replaces_a_pandas_frames_header_everywhere(tmp_path: Path) -> None:
    frame = pd.read_spectro(SPECTRO)
    out = tmp_path / "x.parquet"
    bindf.to_parquet(frame, out, header={"laser_period_ns": 25.0})
    assert json.loads(pq.read_schema(out).metadata[b"bindf.header"]) == {"laser_period_ns": 25.0}
    assert pd.read_parquet(out).attrs["bindf"]["header"] == {"laser_period_ns": 25.0}
    info = bindf.read_parquet(out).attrs["bindf"]
    assert info["header"] == {"laser_period_ns": 25.0} and info["format"] == "spectro"
    assert frame.attrs["bindf"]["header"]["laser_period_ns"] == 12.5  # the caller's frame


@pytest.mark.parametrize(("value", "message"), [
    (float("nan"), "strict JSON: Out of range float values"),
    (float("inf"), "strict JSON: Out of range float values"),
    (np.int64(3), "strict JSON: Object of type int64 is not JSON serializable"),
])
def test_header_must_be_strict_json(tmp_path: Path, value: object, message: str) -> None:
    frame = pd.read_itt1(SAMPLES / "time_tagger_itt1.bin")
    header = {**frame.attrs["bindf"]["header"], "offset_ns": value}
    out = tmp_path / "x.parquet"
    with pytest.raises(ValueError, match=message):
        bindf.to_parquet(frame, out, header=header)
    # inherited from the frame: the same check (the read's info is read-only: replaced)
    frame.attrs["bindf"] = {**frame.attrs["bindf"], "header": header}
    with pytest.raises(ValueError, match=message):
        bindf.to_parquet(frame, out)
    assert os.listdir(tmp_path) == []


def test_format_without_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass header= too"):
        bindf.to_parquet(pl.DataFrame({"a": [1]}), tmp_path / "x.parquet", format="it02")


def _parquet_bytes(tmp_path: Path) -> tuple[bytes, pd.DataFrame]:
    frame = pd.read_it02(SAMPLES / "intensity_tracing_it02.bin")
    bindf.to_parquet(frame, tmp_path / "x.parquet")
    return (tmp_path / "x.parquet").read_bytes(), frame


def test_read_parquet_from_file_objects_and_bytes(tmp_path: Path) -> None:
    data, frame = _parquet_bytes(tmp_path)
    buffer = io.BytesIO(data)
    buffer.seek(100)  # Parquet is read from its footer: the position does not matter
    for source in (buffer, data, bytearray(data), memoryview(data)):
        back = bindf.read_parquet(source)
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
        assert back.attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
    assert not buffer.closed
    with open(tmp_path / "x.parquet", "rb") as f:
        assert bindf.read_parquet(f, output="polars").height == 200
        assert not f.closed
    with open(tmp_path / "x.parquet") as f, pytest.raises(BindfError, match="text mode"):
        bindf.read_parquet(f)


def test_read_parquet_from_fsspec(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    data, frame = _parquet_bytes(tmp_path)
    memory = fsspec.filesystem("memory")
    memory.pipe("/bindf-test/x.parquet", data)
    memory.pipe("/bindf-test/set/part-0.parquet", data)
    try:
        back = bindf.read_parquet("memory://bindf-test/x.parquet", storage_options={})
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
        assert back.attrs["bindf"]["format"] == "it02"
        with fsspec.open("memory://bindf-test/x.parquet", "rb") as f:
            assert bindf.read_parquet(f, output="arrow").num_rows == 200
        assert bindf.read_parquet(fsspec.open("memory://bindf-test/x.parquet"),
                                  output="polars").height == 200
        folder = bindf.read_parquet("memory://bindf-test/set", output="polars")
        assert folder.height == 200 and folder.bindf.format == "it02"
        with pytest.raises(FileNotFoundError, match="memory://bindf-test/nope.parquet"):
            bindf.read_parquet("memory://bindf-test/nope.parquet")
    finally:
        memory.rm("/bindf-test", recursive=True)


def test_read_parquet_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "not.parquet").write_bytes(b"no Parquet here, just bytes")
    with pytest.raises(UnknownFormatError, match=r"not\.parquet: not a Parquet file"):
        bindf.read_parquet(tmp_path / "not.parquet")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        bindf.read_parquet(tmp_path / "missing.parquet")
    _parquet_bytes(tmp_path)
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['nope'\]; available: "
                                         r"\['time_ns', 'ch2', 'ch4', 'ch5'\]"):
        bindf.read_parquet(tmp_path / "x.parquet", columns=["ch2", "nope"])


def test_to_parquet_to_file_objects(tmp_path: Path) -> None:
    frame = pd.read_it02(SAMPLES / "intensity_tracing_it02.bin")
    buffer = io.BytesIO()
    bindf.to_parquet(frame, buffer)
    assert not buffer.closed
    pd.testing.assert_frame_equal(bindf.read_parquet(buffer.getvalue()), frame,
                                  check_exact=True)
    with open(tmp_path / "text.parquet", "w") as f, pytest.raises(TypeError, match="'wb'"):
        bindf.to_parquet(frame, f)


def test_to_parquet_to_fsspec(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    frame = pd.read_it02(SAMPLES / "intensity_tracing_it02.bin")
    memory = fsspec.filesystem("memory")
    try:
        bindf.to_parquet(frame, fsspec.open("memory://bindf-out/x.parquet", "wb"))
        back = bindf.read_parquet("memory://bindf-out/x.parquet")
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
        with pytest.raises(ValueError, match=r"memory://bindf-out/y\.parquet: .*"
                                             r"fsspec\.open\(url, 'wb'\)"):
            bindf.to_parquet(frame, "memory://bindf-out/y.parquet")
        assert not memory.exists("/bindf-out/y.parquet")
    finally:
        memory.rm("/bindf-out", recursive=True)
    assert not any(Path().glob("memory:*"))  # no local folder made of the URL


def test_to_parquet_destination_checked_before_writing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    dest = tmp_path / "no_such_folder" / "x.parquet"
    with pytest.raises(FileNotFoundError) as missing:
        bindf.to_parquet(frame, dest)
    assert missing.value.filename == str(dest)
    assert str(missing.value) == (f"[Errno 2] no folder {tmp_path / 'no_such_folder'} "
                                  f"to write into: '{dest}'")
    (tmp_path / "folder.parquet").mkdir()
    with pytest.raises(IsADirectoryError, match="the destination is a folder"):
        bindf.to_parquet(frame, tmp_path / "folder.parquet")
    assert os.listdir(tmp_path) == ["folder.parquet"]
    assert os.listdir(tmp_path / "folder.parquet") == []
    monkeypatch.setenv("HOME", str(tmp_path))
    bindf.to_parquet(frame, "~/home.parquet")
    assert pd.read_parquet(tmp_path / "home.parquet")["a"].tolist() == [1, 2]


def test_arrow_table_round_trip_keeps_the_schema(tmp_path: Path) -> None:
    table = bindf.read(SPECTRO, output="arrow")
    bindf.to_parquet(table, tmp_path / "x.parquet")
    back = bindf.read_parquet(tmp_path / "x.parquet", output="arrow")
    assert back.schema.remove_metadata() == table.schema.remove_metadata()
    assert back.equals(table)
    assert back.schema.field("channel").nullable and not back.schema.field("event").nullable
    assert back.num_rows == 182
