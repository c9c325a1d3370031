"""``bindf.to_parquet`` → ``bindf.read_parquet``: pandas dtypes whoever wrote the file, the
pandas index, a header given with ``header=``, and every kind of source and destination."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import polars.testing
import pyarrow as pa
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


# -- several files: a glob or a list ------------------------------------------------------


def _info(frame: object) -> dict:
    """The bindf info of a pandas, polars or Arrow frame, as a plain dict, without
    ``version`` (checked): a Parquet file says which bindf decoded it, a read of the
    binary file does not (but for Arrow output, whose metadata says it)."""
    from bindf._frames import info_of

    info = dict(info_of(frame))
    assert info.pop("version", bindf.__version__) == bindf.__version__
    return info


def _assert_same(back: object, expected: object) -> None:
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(back, expected, check_exact=True)
    elif isinstance(expected, pl.DataFrame):
        pl.testing.assert_frame_equal(back, expected)
    else:
        # (values and types; a pandas-written file does not declare columns non-nullable)
        assert back.cast(expected.schema).equals(expected)
        assert back.column_names == expected.column_names


def _converted(paths: list[Path], folder: Path, writer: str) -> None:
    """Each of ``paths`` to ``folder/<name>.parquet``, by ``bindf convert`` or by
    ``to_parquet`` of a frame read with ``writer`` as output."""
    if writer == "cli":
        assert cli.main(["convert", *map(str, paths), "--output-dir", str(folder),
                         "--to", "parquet", "-q"]) == 0
        return
    folder.mkdir()
    for path in paths:
        bindf.to_parquet(bindf.read(path, output=writer), folder / f"{path.stem}.parquet")


@pytest.mark.parametrize("writer", ["cli", "pandas", "polars"])
@pytest.mark.parametrize("output", ["pandas", "polars", "arrow"])
def test_a_glob_of_converted_files_reads_as_the_binary_files_do(
        stt1_files: list[Path], tmp_path: Path, writer: str, output: str) -> None:
    _converted(stt1_files, tmp_path / "out", writer)
    binary = bindf.read(str(tmp_path / "run*.bin"), output=output)
    back = bindf.read_parquet(str(tmp_path / "out" / "*.parquet"), output=output)
    _assert_same(back, binary)
    assert _info(back) == _info(binary) == {
        "format": "spectro", "header": {"channels": [0, 1, 2, 3], "laser_period_ns": 25.0},
        "source": [str(p) for p in stt1_files]}
    # the same with n_rows, columns and the path column (placed by columns=), as
    # bindf.read takes them
    options = {"n_rows": 1100, "columns": ["marker", "file", "event"],
               "include_file_paths": "file"}
    binary = bindf.read(str(tmp_path / "run*.bin"), output=output, **options)
    back = bindf.read_parquet(str(tmp_path / "out" / "*.parquet"), output=output, **options)
    # (the path column names the Parquet files where the binary read names its files)
    assert _column(back, "file") == ([str(tmp_path / "out" / "run0.parquet")] * 1000
                                     + [str(tmp_path / "out" / "run1.parquet")] * 100)
    _assert_same(_dropped(back, "file"), _dropped(binary, "file"))
    # the sources of the files read: the third is not opened, and its source unknown
    assert _info(back) == {**_info(binary),
                                             "source": [str(p) for p in stt1_files[:2]]}


def _column(frame: object, name: str) -> list:
    if isinstance(frame, pd.DataFrame):
        return frame[name].tolist()
    return frame[name].to_list() if isinstance(frame, pl.DataFrame) else \
        frame.column(name).to_pylist()


def _dropped(frame: object, name: str) -> object:
    if isinstance(frame, pd.DataFrame):
        return frame.drop(columns=name)
    return frame.drop(name) if isinstance(frame, pl.DataFrame) else frame.drop_columns(name)


def test_damage_skipped_is_summed_as_the_binary_read_sums_it(data_dir: Path,
                                                            tmp_path: Path) -> None:
    from test_on_error import apx_readout_offsets

    original = (data_dir / "20250723_092534_data.apx").read_bytes()
    bad = []
    for i, readout in enumerate((3, 5)):
        data = bytearray(original)
        offset, _ = apx_readout_offsets(original)[readout]
        data[offset + 1] ^= 0xFF  # the readout marker
        bad.append(tmp_path / f"bad{i}.apx")
        bad[-1].write_bytes(bytes(data))
    assert cli.main(["convert", *map(str, bad), "--output-dir", str(tmp_path / "out"),
                     "--to", "parquet", "-q", "--option", "on_error=skip"]) == 0
    binary = pd.read_apx(bad, on_error="skip")
    back = bindf.read_parquet(str(tmp_path / "out" / "bad*.parquet"))
    pd.testing.assert_frame_equal(back, binary, check_exact=True)
    assert _info(back) == _info(binary)
    assert back.attrs["bindf"]["errors"]["bad_readout_marker"] == 2
    assert back.attrs["bindf"]["source"] == [str(p) for p in bad]


def test_a_list_reads_in_list_order_any_kind_of_source(stt1_files: list[Path],
                                                       tmp_path: Path) -> None:
    _converted(stt1_files, tmp_path / "out", "cli")
    out = [tmp_path / "out" / f"run{i}.parquet" for i in range(3)]
    expected = pd.read_spectro([stt1_files[2], stt1_files[0], stt1_files[1]])
    with open(out[1], "rb") as f:
        back = bindf.read_parquet([out[2], str(out[0]), f], include_file_paths="file")
        assert not f.closed
    assert back.pop("file").tolist() == ([str(out[2])] * 250 + [str(out[0])] * 1000
                                         + [str(out[1])] * 500)
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    assert back.attrs["bindf"]["source"] == [str(stt1_files[i]) for i in (2, 0, 1)]
    # bytes among them: named <bytes> in the path column
    back = bindf.read_parquet([out[1].read_bytes(), out[1]], output="polars",
                              include_file_paths="file", columns=["file", "event"])
    assert back.columns == ["file", "event"]
    assert back["file"].unique(maintain_order=True).to_list() == ["<bytes>", str(out[1])]
    assert back["event"].to_list() == pl.read_spectro(stt1_files[1])["event"].to_list() * 2


def test_n_rows_reads_no_more_files_than_it_needs(stt1_files: list[Path],
                                                  tmp_path: Path) -> None:
    _converted(stt1_files, tmp_path / "out", "cli")
    (tmp_path / "out" / "run2.parquet").write_bytes(b"not Parquet: never opened")
    pattern = str(tmp_path / "out" / "*.parquet")
    for n in (0, 999, 1000, 1001, 1499, 1500):
        expected = pd.read_spectro(stt1_files[:2], n_rows=n)
        back = bindf.read_parquet(pattern, n_rows=n)
        pd.testing.assert_frame_equal(back, expected, check_exact=True)
        # a source list however few files were read (the files read: the others' are
        # not known)
        read = stt1_files[:1] if n <= 1000 else stt1_files[:2]
        assert back.attrs["bindf"]["source"] == [str(p) for p in read]
    assert bindf.read_parquet(pattern, n_rows=0, output="polars").schema == \
        pl.read_spectro(stt1_files[0], n_rows=0).schema
    with pytest.raises(UnknownFormatError, match=r"run2\.parquet: not a Parquet file"):
        bindf.read_parquet(pattern, n_rows=1501)
    with pytest.raises(ValueError, match=r"n_rows must be an integer >= 0, not -1"):
        bindf.read_parquet(pattern, n_rows=-1)


def test_n_rows_within_a_file_of_row_groups_and_a_dataset(stt1_files: list[Path],
                                                          tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds

    table = bindf.read(stt1_files[0], output="arrow")
    bindf.to_parquet(table, tmp_path / "groups.parquet", row_group_size=100)
    for n in (0, 1, 100, 250, 1000, 5000):
        back = bindf.read_parquet(tmp_path / "groups.parquet", output="arrow", n_rows=n)
        assert back.equals(table.slice(0, n))
    keyed = table.append_column("k", pa.array(np.arange(1000) % 2, pa.int32()))
    ds.write_dataset(keyed, tmp_path / "hive", format="parquet", partitioning=["k"],
                     partitioning_flavor="hive")
    back = bindf.read_parquet(tmp_path / "hive", output="polars", n_rows=700)
    assert back["k"].to_list() == [0] * 500 + [1] * 200
    # a dataset folder in a list is read as it is alone, partition columns and all
    back = bindf.read_parquet([tmp_path / "hive", tmp_path / "hive"], output="polars",
                              n_rows=1200, columns=["k"])
    assert back["k"].to_list() == [0] * 500 + [1] * 500 + [0] * 200


def test_a_glob_matches_files_only(stt1_files: list[Path], tmp_path: Path) -> None:
    _converted(stt1_files[:2], tmp_path / "out", "cli")
    (tmp_path / "out" / "sub").mkdir()
    (tmp_path / "out" / "run1.parquet").rename(tmp_path / "out" / "sub" / "run1.parquet")
    files = bindf.read_parquet(str(tmp_path / "out" / "*"), output="polars",
                               include_file_paths="file")["file"].unique().to_list()
    assert files == [str(tmp_path / "out" / "run0.parquet")]  # not the folder sub
    files = bindf.read_parquet(str(tmp_path / "out" / "**"), output="polars",
                               include_file_paths="file")["file"].unique(maintain_order=True)
    assert files.to_list() == [str(tmp_path / "out" / "run0.parquet"),
                               str(tmp_path / "out" / "sub" / "run1.parquet")]
    with pytest.raises(FileNotFoundError, match=r"no files match '.*nothing\*\.parquet'"):
        bindf.read_parquet(str(tmp_path / "nothing*.parquet"))
    with pytest.raises(FileNotFoundError, match="no input files were given"):
        bindf.read_parquet([])
    with pytest.raises(TypeError, match="not a set: its order"):
        bindf.read_parquet({str(tmp_path / "out" / "run0.parquet")})


def test_files_of_other_columns_read_together_only_for_the_columns_they_share(
        tmp_path: Path) -> None:
    apx = [SAMPLES / "astropix3_injection_run.apx", SAMPLES / "astropix_threshold_scan.apx"]
    _converted(apx, tmp_path / "out", "cli")
    pattern = str(tmp_path / "out" / "*.parquet")
    first, second = (str(tmp_path / "out" / f"{p.stem}.parquet") for p in apx)
    shared = ["chip_id", "payload", "readout_id", "column", "tot_us"]
    message = (f"{second}: cannot read together with {first}: its columns differ (only "
               "here: ['timestamp', 'row', 'ts_neg1', 'ts_coarse1', 'ts_fine1', "
               "'ts_tdc1', 'ts_neg2', 'ts_coarse2', 'ts_fine2', 'ts_tdc2', 'ts_dec1', "
               "'ts_dec2']; missing here: ['wall_timestamp', 'location', 'tot_msb', "
               "'tot_lsb', 'tot_dec', 'chip_timestamp']; 'decoding_order' is uint8 here, "
               f"uint16 in the first file); to read the columns they share, ask for them "
               f"(columns={shared})")
    with pytest.raises(BindfError, match=f"^{re.escape(message)}$"):
        bindf.read_parquet(pattern)
    with pytest.raises(BindfError, match=re.escape("'decoding_order' is uint8 here, uint16 "
                                                   "in the first file)")):
        bindf.read_parquet(pattern, columns=["tot_us", "decoding_order"])
    for output in ("pandas", "polars"):
        binary = bindf.read(apx, columns=shared[::-1], output=output)
        back = bindf.read_parquet(pattern, columns=shared[::-1], output=output)
        _assert_same(back, binary)
        assert _info(back) == _info(binary)
    with pytest.raises(ValueError, match=re.escape(f"{second}: unknown column(s) "
                                                   "['wall_timestamp']")):
        bindf.read_parquet(pattern, columns=["wall_timestamp"])


def test_files_in_another_column_order_or_with_other_headers_are_refused(
        tmp_path: Path) -> None:
    frame = pl.read_spectro(SPECTRO)
    bindf.to_parquet(frame, tmp_path / "a.parquet")
    bindf.to_parquet(frame.select(frame.columns[::-1]), tmp_path / "b.parquet",
                     header=frame.bindf.header, format="spectro")
    with pytest.raises(BindfError, match=re.escape(
            f"{tmp_path / 'b.parquet'}: cannot read together with {tmp_path / 'a.parquet'}: "
            "its columns differ (in another order: ['marker', 'channel', 'macrotime_ns', "
            "'microtime_ns', 'event'] vs ['event', 'microtime_ns', 'macrotime_ns', "
            "'channel', 'marker']); to read the columns they share, ask for them "
            "(columns=['event', 'microtime_ns', 'macrotime_ns', 'channel', 'marker'])")):
        bindf.read_parquet([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    # read together for the columns asked, in the order asked
    back = bindf.read_parquet([tmp_path / "a.parquet", tmp_path / "b.parquet"],
                              output="polars", columns=["channel", "event"])
    pl.testing.assert_frame_equal(back, pl.concat([frame.select("channel", "event")] * 2))
    # no source stored (header= on a frame without one): the file stands for itself
    assert back.bindf.source == [str(SPECTRO), str(tmp_path / "b.parquet")]
    bindf.to_parquet(frame.to_arrow().replace_schema_metadata(None), tmp_path / "plain.parquet")
    with pytest.raises(BindfError, match=re.escape(
            f"{tmp_path / 'plain.parquet'}: cannot read together with "
            f"{tmp_path / 'a.parquet'}: it holds no bindf header, and the first file does; "
            "read them separately")):
        bindf.read_parquet([tmp_path / "a.parquet", tmp_path / "plain.parquet"])
    with pytest.raises(BindfError, match="it holds a bindf header, and the first file "
                                         "does not"):
        bindf.read_parquet([tmp_path / "plain.parquet", tmp_path / "a.parquet"])
    plain = bindf.read_parquet([tmp_path / "plain.parquet"] * 2)
    assert "bindf" not in plain.attrs
    # (no format: the categories are those the file stores, which depend on the polars
    # that wrote it: the file read alone twice, joined, is the reference)
    single = bindf.read_parquet(tmp_path / "plain.parquet")
    expected = pd.concat([single, single], ignore_index=True)
    pd.testing.assert_frame_equal(plain, expected, check_exact=True)
    assert plain["event"].tolist() == pd.read_spectro([SPECTRO, SPECTRO])["event"].tolist()
    bindf.to_parquet(frame, tmp_path / "other.parquet", header=frame.bindf.header,
                     format="sp01")
    with pytest.raises(BindfError, match=re.escape(
            "its header is of format 'sp01', the first file's 'spectro'")):
        bindf.read_parquet([tmp_path / "a.parquet", tmp_path / "other.parquet"])
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path / 'a.parquet'}: column name 'event' (include_file_paths) already "
            "exists in this file; choose another name")):
        bindf.read_parquet([tmp_path / "a.parquet"], include_file_paths="event")


def test_a_header_value_the_helpers_use_differing_is_warned_of(tmp_path: Path) -> None:
    frame = pd.read_it02(SAMPLES / "intensity_tracing_it02.bin")
    bindf.to_parquet(frame, tmp_path / "a.parquet")
    header = {**frame.attrs["bindf"]["header"], "bin_width_micros": 500}
    bindf.to_parquet(frame, tmp_path / "b.parquet", header=header)
    with pytest.warns(bindf.BindfWarning, match=re.escape(
            f"{tmp_path / 'b.parquet'}: its 'bin_width_micros' is 500, the first file's "
            "1000: the frame's header is the first file's")):
        back = bindf.read_parquet(str(tmp_path / "*.parquet"))
    assert back.attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]


def test_files_whose_dictionary_indices_differ_in_width_read_together(tmp_path: Path) -> None:
    """A dictionary column stored with int8 indices in one file and int32 in another (a
    dataset folder read by pyarrow before 19 gives int32) is one column: the first
    file's index type, the values unchanged."""
    frame = bindf.read(SPECTRO, output="arrow")
    marker = frame.schema.get_field_index("marker")
    wide = pa.dictionary(pa.int32(), pa.string())
    other = frame.set_column(marker, frame.schema.field(marker).with_type(wide),
                             frame.column(marker).cast(wide))
    bindf.to_parquet(frame, tmp_path / "a.parquet")
    bindf.to_parquet(other, tmp_path / "b.parquet")
    back = bindf.read_parquet([tmp_path / "a.parquet", tmp_path / "b.parquet"],
                              output="arrow")
    assert back.schema.field("marker").type == frame.schema.field("marker").type
    assert back.replace_schema_metadata(None).equals(
        pa.concat_tables([frame, frame]).replace_schema_metadata(None))


def test_files_of_text_as_string_or_large_string_read_together(tmp_path: Path) -> None:
    """polars writes ``large_string``, pandas and dask ``string``: the same text, read
    together as the first file's type (as pl.read_parquet and pd.concat read them)."""
    polars_written = pl.DataFrame({"run": ["a", "bb"], "n": [1, 2]})
    polars_written.write_parquet(tmp_path / "a.parquet")
    pa_written = pa.table({"run": pa.array(["c"], pa.string()), "n": pa.array([3])})
    pq.write_table(pa_written, tmp_path / "b.parquet")
    assert pq.read_schema(tmp_path / "a.parquet").field("run").type != pa.string()
    back = bindf.read_parquet(str(tmp_path / "*.parquet"), output="polars")
    polars.testing.assert_frame_equal(back, pl.DataFrame({"run": ["a", "bb", "c"],
                                                          "n": [1, 2, 3]}))


def test_a_pandas_index_one_file_stores_is_named_as_such(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1, 2]}, index=pd.Index([5, 6], name="idx")).to_parquet(
        tmp_path / "a.parquet")
    pl.DataFrame({"a": [3]}).write_parquet(tmp_path / "b.parquet")
    files = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    with pytest.raises(BindfError, match=re.escape(
            "its columns differ (missing here: ['idx']); the others are a pandas index one "
            "of them stores: read them separately, or as polars or Arrow (which keep no "
            "index)")):
        bindf.read_parquet(files, columns=["a"])
    assert bindf.read_parquet(files, columns=["a"], output="polars")["a"].to_list() == [1, 2, 3]


def test_read_parquet_glob_on_fsspec(stt1_files: list[Path], tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    _converted(stt1_files, tmp_path / "out", "cli")
    memory = fsspec.filesystem("memory")
    for i in (2, 0, 1):  # (listed in another order than their names')
        memory.pipe(f"/bindf-many/run{i}.parquet",
                    (tmp_path / "out" / f"run{i}.parquet").read_bytes())
    memory.pipe("/bindf-many/set/part-0.parquet", (tmp_path / "out" / "run0.parquet").read_bytes())
    try:
        back = bindf.read_parquet("memory://bindf-many/*.parquet", output="polars",
                                  include_file_paths="file", storage_options={})
        expected = pl.read_spectro([str(p) for p in stt1_files])
        pl.testing.assert_frame_equal(back.drop("file"), expected)
        assert back["file"].unique(maintain_order=True).to_list() == [
            f"memory://bindf-many/run{i}.parquet" for i in range(3)]
        assert _info(back) == expected.bindf.info
        back = bindf.read_parquet(["memory://bindf-many/run2.parquet",
                                   "memory://bindf-many/set"], n_rows=300, output="arrow")
        assert back.equals(bindf.read([stt1_files[2], stt1_files[0]], n_rows=300,
                                      output="arrow"))
        with pytest.raises(FileNotFoundError, match=re.escape(
                "no files match 'memory://bindf-many/*.nope'")):
            bindf.read_parquet("memory://bindf-many/*.nope")
    finally:
        memory.rm("/bindf-many", recursive=True)
