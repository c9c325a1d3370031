"""Source paths in metadata and path columns: names that are not valid UTF-8, names that
look like JSON, and the ``bindf.source`` text of files written by older versions."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bindf
from bindf import cli
from bindf.arrow import info_from_metadata, path_text, repeated, table_info
from bindf.frontends.batches import ReadPlan

SAMPLE = Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin"


def test_path_text_escapes_only_what_utf8_cannot_hold() -> None:
    assert path_text("/data/mesure_\udce9.bin") == "/data/mesure_\\xe9.bin"
    assert path_text("/data/mesure_é [1].bin") == "/data/mesure_é [1].bin"
    # a surrogate that stands for no byte: its UTF-8 form, escaped
    assert path_text("x\ud800") == "x\\xed\\xa0\\x80"


@pytest.fixture
def latin1_name(tmp_path: Path) -> tuple[str, str]:
    """(the path as Python gives it, the text bindf shows) of a copy of the IT02 sample
    whose name holds a Latin-1 ``é`` (the byte 0xE9, not UTF-8)."""
    raw = os.path.join(os.fsencode(tmp_path), b"mesure_\xe9.bin")
    try:
        shutil.copy(SAMPLE, raw)
    except OSError:  # a file system that takes UTF-8 names only (macOS, Windows)
        pytest.skip("this file system refuses names that are not UTF-8")
    return os.fsdecode(raw), f"{tmp_path}/mesure_\\xe9.bin"


def test_non_utf8_name_in_arrow_metadata(latin1_name: tuple[str, str]) -> None:
    path, shown = latin1_name
    table = bindf.read(path, output="arrow")
    assert table.schema.metadata[b"bindf.source"] == json.dumps(shown, ensure_ascii=False).encode()
    assert table_info(table)["source"] == shown
    assert table.equals(bindf.read(SAMPLE, output="arrow").replace_schema_metadata(
        table.schema.metadata))
    assert sum(b.num_rows for b in bindf.iter_batches(path)) == 200
    with bindf.open(path) as f:
        assert pa.table(f).num_rows == 200
    # pandas attrs keep the path as Python gave it: it opens the file again
    assert pd.read_it02(path).attrs["bindf"]["source"] == path


def test_non_utf8_name_in_file_path_column_and_headers(latin1_name: tuple[str, str],
                                                       tmp_path: Path) -> None:
    path, shown = latin1_name
    shutil.copy(SAMPLE, tmp_path / "other.bin")
    frame = pd.read_it02(str(tmp_path / "*.bin"), include_file_paths="file")
    # sorted by the real names: b"mesure_\xe9" < b"other"
    assert frame["file"].tolist() == [shown] * 200 + [str(tmp_path / "other.bin")] * 200
    one = pd.read_it02(path, include_file_paths="file")
    assert one["file"].tolist() == [shown] * 200
    headers = bindf.read_headers(path)
    assert headers["path"].tolist() == [shown]
    assert headers["rows"].tolist() == [200]


def test_non_utf8_name_to_parquet_and_convert(latin1_name: tuple[str, str],
                                              tmp_path: Path) -> None:
    path, shown = latin1_name
    frame = pd.read_it02(path)
    bindf.to_parquet(frame, tmp_path / "api.parquet")
    back = bindf.read_parquet(tmp_path / "api.parquet")
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back.attrs["bindf"]["source"] == shown
    assert cli.main(["convert", path, "-o", str(tmp_path / "cli.parquet"), "-q"]) == 0
    converted = bindf.read_parquet(tmp_path / "cli.parquet")
    assert converted.attrs["bindf"]["source"] == shown
    pd.testing.assert_frame_equal(converted, frame, check_exact=True)


def test_non_utf8_output_names(latin1_name: tuple[str, str], tmp_path: Path) -> None:
    """Outputs named with a non-UTF-8 byte: pyarrow encodes a str path as UTF-8, and its
    writers raised UnicodeEncodeError (the CLI called it bad data, exit 65)."""
    path, _ = latin1_name
    frame = pd.read_it02(path)
    named = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"sortie_\xe9"))
    bindf.to_parquet(frame, named + ".parquet")
    pd.testing.assert_frame_equal(bindf.read_parquet(named + ".parquet"), frame)
    for kind in ("parquet", "csv", "arrow"):
        assert cli.main(["convert", path, "-o", f"{named}_cli.{kind}", "-q"]) == 0
    pd.testing.assert_frame_equal(bindf.read_parquet(named + "_cli.parquet"), frame)
    assert pd.read_csv(named + "_cli.csv")["ch2"].tolist() == frame["ch2"].tolist()
    with open(named + "_cli.arrow", "rb") as f:
        assert pa.ipc.open_file(f).read_all().num_rows == 200
    assert cli.main(["convert", path, "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    assert os.listdir(os.fsencode(tmp_path / "out")) == [b"mesure_\xe9.parquet"]


@pytest.mark.parametrize("name", ["[run 1].bin", "[1]", '"quoted".bin'])
def test_name_that_looks_like_json_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              name: str) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(SAMPLE, tmp_path / name)
    table = bindf.read(name, output="arrow")
    assert table.schema.metadata[b"bindf.source"] == json.dumps(name).encode()
    assert table_info(table)["source"] == name
    with bindf.open(name) as f:
        assert table_info(pa.table(f))["source"] == name
    bindf.to_parquet(table, "out.parquet")
    assert bindf.read_parquet("out.parquet").attrs["bindf"]["source"] == name
    assert bindf.read_parquet("out.parquet", output="polars").bindf.source == name
    both = bindf.read([name, str(SAMPLE)], output="arrow")
    assert table_info(both)["source"] == [name, str(SAMPLE)]


@pytest.mark.parametrize(("stored", "source"), [
    (b"/data/run 1.bin", "/data/run 1.bin"),
    (b"[run 1].bin", "[run 1].bin"),
    (b"[1]", "[1]"),
    (b"2024", "2024"),
    (b'["a.bin", "b.bin"]', ["a.bin", "b.bin"]),  # a multi-file read: always JSON
])
def test_source_written_by_older_versions(tmp_path: Path, stored: bytes,
                                          source: str | list[str]) -> None:
    """Older versions stored one path as plain text (a list of paths as JSON)."""
    metadata = {b"bindf.format": b"it02", b"bindf.header": b'{"a": 1}',
                b"bindf.source": stored, b"bindf.version": b"0.0.9"}
    assert info_from_metadata(metadata) == {"format": "it02", "header": {"a": 1},
                                            "source": source, "version": "0.0.9"}
    out = tmp_path / "old.parquet"
    pq.write_table(pa.table({"x": [1, 2]}).replace_schema_metadata(metadata), out)
    back = bindf.read_parquet(out)
    assert back.attrs["bindf"]["source"] == source
    assert back["x"].tolist() == [1, 2]


def test_latin1_name_in_scans_follow_and_ingest(latin1_name: tuple[str, str],
                                                tmp_path: Path) -> None:
    """The polars scan (its explain text and a filter on the path column), follow's
    path column and ingestion's source column show the name as text."""
    import polars as pl

    path, shown = latin1_name
    expected = len(bindf.read(SAMPLE))
    lazy = bindf.scan(path, include_file_paths="file")
    assert lazy.collect().height == expected
    assert lazy.filter(pl.col("file") == shown).collect().height == expected
    assert lazy.filter(pl.col("file") != shown).collect().height == 0
    import inspect

    from polars.io.plugins import register_io_source

    explained = lazy.explain()  # the file name is in it where polars shows a detail (2.0+)
    if "explain_detail" in inspect.signature(register_io_source).parameters:
        assert "mesure_\\xe9.bin" in explained
    with bindf.follow(path, idle_timeout=0, poll_interval=0.01, output="polars",
                      include_file_paths="file") as frames:
        got = pl.concat(list(frames))
    assert got.height == expected and got["file"].unique().to_list() == [shown]
    report = bindf.ingest(path, tmp_path / "dataset")
    assert not report.failed and report.rows == expected
    again = bindf.ingest(path, tmp_path / "dataset")  # found again: nothing to do
    assert not again.ingested and not again.failed
    dataset = bindf.read_dataset(tmp_path / "dataset").collect()
    assert dataset.height == expected
    assert dataset["source"].unique().to_list() == [shown]


def test_repeated_refuses_what_string_offsets_cannot_hold() -> None:
    """pa.repeat makes an invalid array there (offsets wrapped around: reading its last
    rows crashed Python); refused before anything is allocated."""
    with pytest.raises(pa.ArrowCapacityError, match="3000000 rows of a 1000-byte value "
                       "need 3000000000 bytes, beyond string's 2 GiB"):
        repeated(pa.scalar("x" * 1000), 3_000_000)
    assert len(repeated(pa.scalar("x" * 1000, pa.large_string()), 3)) == 3


def _two_runs(tmp_path: Path) -> tuple[str, list[str]]:
    """A glob of two copies of the IT02 sample, and the path column it reads as."""
    for name in ("a.bin", "b.bin"):
        shutil.copy(SAMPLE, tmp_path / name)
    return str(tmp_path / "*.bin"), [str(tmp_path / "a.bin")] * 200 + [
        str(tmp_path / "b.bin")] * 200


def test_path_column_type_per_output(tmp_path: Path) -> None:
    """Arrow consumers get ``string``; polars frames are made from ``string_view``
    batches (polars' own string type, taken as it is), whose rows all point at one copy
    of their path: the same values either way, and the same in every entry point."""
    glob, expected = _two_runs(tmp_path)
    arrow = bindf.read(glob, output="arrow", include_file_paths="file")
    assert arrow.schema.field("file").type == pa.string()
    assert arrow["file"].to_pylist() == expected
    assert pd.read_it02(glob, include_file_paths="file")["file"].tolist() == expected
    frame = pl.read_it02(glob, include_file_paths="file")
    assert frame.schema["file"] == pl.String
    assert frame["file"].to_list() == expected
    assert pl.scan_it02(glob, include_file_paths="file").collect()["file"].to_list() == expected
    with bindf.open(glob, include_file_paths="file") as f:
        assert f.schema.field("file").type == pa.string()
        assert f.to_polars()["file"].to_list() == expected  # (a pass of another type)
        assert f.to_arrow()["file"].to_pylist() == expected
        assert f.to_pandas()["file"].tolist() == expected
    # pandas: the dtype pd.read_parquet gives a text column, whichever the backend
    pq.write_table(pa.table({"file": expected}), tmp_path / "paths.parquet")
    for backend in (None, "numpy_nullable", "pyarrow"):
        asked = {"dtype_backend": backend} if backend else {}
        got = pd.read_it02(glob, include_file_paths="file", **asked)["file"]
        want = pd.read_parquet(tmp_path / "paths.parquet", **asked)["file"]
        assert got.dtype == want.dtype
        assert got.tolist() == want.tolist()
    got = pd.read_it02(glob, include_file_paths="file")["file"]
    if got.dtype == object:  # (pandas 2) one Python string a path, not one a row
        assert got.iloc[0] is got.iloc[199] and got.iloc[200] is got.iloc[399]
    plan = ReadPlan.from_kwargs(expected[0], include_file_paths="file",
                                path_type=pa.string_view())
    column = plan.all_batches()[0].column("file")
    assert column.type == pa.string_view()
    assert column.buffers()[2].size == len(expected[0])  # the path once, not per row


def test_path_column_past_string_offsets_comes_in_slices(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose ``string`` path column would pass its 2 GiB is handed out in
    slices that do not (here the limit is made 10 paths long); the rows stay the same."""
    glob, expected = _two_runs(tmp_path)
    monkeypatch.setattr(bindf.arrow, "STRING_BYTES_MAX", 10 * len(expected[0]) + 5)
    got = list(bindf.iter_batches(glob, include_file_paths="file"))
    assert [b.num_rows for b in got] == [10] * 40
    assert [v for b in got for v in b.column("file").to_pylist()] == expected
    assert bindf.read(glob, output="arrow", include_file_paths="file",
                      columns=["time_ns"])["file"].to_pylist() == expected
    # (polars' views have no such limit: the two small files make one batch)
    plan = ReadPlan.from_kwargs(glob, include_file_paths="file", path_type=pa.string_view())
    assert [b.num_rows for b in plan.all_batches()] == [400]
    bindf.to_parquet(pd.read_it02(glob), tmp_path / "all.parquet")
    back = bindf.read_parquet([tmp_path / "all.parquet"] * 2, output="arrow",
                              include_file_paths="file")
    name = str(tmp_path / "all.parquet")
    per_chunk = bindf.arrow.STRING_BYTES_MAX // len(name)  # (a longer path than the runs')
    whole, rest = divmod(400, per_chunk)
    assert [len(c) for c in back["file"].chunks] == 2 * (
        [per_chunk] * whole + ([rest] if rest else []))
    assert back["file"].to_pylist() == [name] * 800


def test_path_column_dtype_does_not_depend_on_the_files(tmp_path: Path) -> None:
    """With pandas' future.infer_string on (pandas 2.x's opt-in, pandas 3's default),
    the path column of a glob of two 200-row files, of 300 small files and of a chunked
    read have one dtype, the one a text column of the same read gets (pyarrow 17
    converts an array as the option says, a table not: the column was text of the one
    kind or the other depending on the files)."""
    many = tmp_path / "many"
    many.mkdir()
    for k in range(300):
        shutil.copy(SAMPLE, many / f"r{k:03d}.bin")
    glob, _ = _two_runs(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (pandas 3 deprecates it)
        with pd.option_context("future.infer_string", True):
            dtypes = {str(pd.read_it02(glob, include_file_paths="file")["file"].dtype),
                      str(pd.read_it02(str(many / "*.bin"),
                                       include_file_paths="file")["file"].dtype)}
            with pd.read_it02(glob, include_file_paths="file", chunksize=150) as chunks:
                dtypes |= {str(chunk["file"].dtype) for chunk in chunks}
    assert len(dtypes) == 1, dtypes
