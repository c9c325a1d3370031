"""The shared frontends: outputs, metadata, registration, multi-file reads, lazy scans.

They are format-independent; the STT1 photon format (simplest fixed-record layout) drives
them here. Each format's own test file checks eager/lazy parity on its own data too.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import DATA, raises_from_scan, write_stt1
from polars.testing import assert_frame_equal

import bindf
from bindf.arrow import HEADER_KEY, table_info


def test_outputs_carry_the_header(stt1_files: list[Path]) -> None:
    path = stt1_files[0]
    header = {"channels": [0, 1, 2, 3], "laser_period_ns": 25.0}

    df = bindf.read(path)
    assert isinstance(df, pd.DataFrame) and len(df) == 1000
    assert df.attrs["bindf"] == {"format": "spectro", "header": header, "source": str(path)}
    assert df.bindf.header == header and df.bindf.format == "spectro"

    pf = bindf.read(path, output="polars")
    assert isinstance(pf, pl.DataFrame) and pf.height == 1000
    assert pf.bindf.header == header and pf.bindf.source == str(path)

    table = bindf.read(path, output="arrow")
    assert isinstance(table, pa.Table)
    assert json.loads(table.schema.metadata[HEADER_KEY.encode()]) == header
    assert table_info(table)["format"] == "spectro"

    assert bindf.read_header(path) == header


def test_library_registration(stt1_files: list[Path]) -> None:
    assert isinstance(pd.read_spectro(stt1_files[0]), pd.DataFrame)
    assert isinstance(pl.read_spectro(stt1_files[0]), pl.DataFrame)
    assert isinstance(pl.scan_spectro(stt1_files[0]), pl.LazyFrame)
    for name in ("read_apx", "read_it02", "read_spectro"):
        assert callable(getattr(pd, name)) and callable(getattr(pl, name))


def test_registration_never_overwrites(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = object()
    monkeypatch.setattr(pd, "read_spectro", sentinel, raising=False)
    from bindf.frontends.api import register_library_functions

    with pytest.warns(bindf.BindfWarning, match=r"^format 'spectro': pandas.read_spectro is "
                                                r"pandas' or polars' own and left as it is"):
        register_library_functions("spectro")
    assert pd.read_spectro is sentinel


def test_frame_without_bindf_metadata_says_so() -> None:
    with pytest.raises(AttributeError, match="no bindf metadata"):
        _ = pd.DataFrame({"a": [1]}).bindf.header
    with pytest.raises(AttributeError, match="no bindf metadata"):
        _ = pl.DataFrame({"a": [1]}).bindf.header


def test_columns_in_requested_order_and_n_rows(stt1_files: list[Path]) -> None:
    df = bindf.read(stt1_files[0], columns=["macrotime_ns", "event"], n_rows=7)
    assert list(df.columns) == ["macrotime_ns", "event"] and len(df) == 7
    whole = bindf.read(stt1_files[0])
    pd.testing.assert_frame_equal(df, whole[["macrotime_ns", "event"]].head(7))
    assert len(bindf.read(stt1_files[0], n_rows=0)) == 0
    with pytest.raises(ValueError, match="unknown column"):
        bindf.read(stt1_files[0], columns=["nope"])


def test_an_unknown_column_is_caught_as_pandas_and_polars_code_catch_it(
        stt1_files: list[Path], tmp_path: Path) -> None:
    """pandas' readers raise ValueError, polars' ColumnNotFoundError: both catch it, from
    every entry point that takes columns=."""
    path = stt1_files[0]
    bindf.to_parquet(bindf.read(path), tmp_path / "x.parquet")
    message = r"unknown column\(s\) \['nope'\]"
    for read in (lambda: pd.read_spectro(path, columns=["nope"]),
                 lambda: pl.read_spectro(path, columns=["event", "nope"]),
                 lambda: bindf.read([path, path], columns=["nope"]),
                 lambda: bindf.open(path, columns=["nope"]),
                 lambda: bindf.open(path).to_batch_reader(
                     pa.schema([pa.field("nope", pa.int8())])),
                 lambda: bindf.read_parquet(tmp_path / "x.parquet", columns=["nope"])):
        with pytest.raises(pl.exceptions.ColumnNotFoundError, match=message) as caught:
            read()
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, bindf.ColumnNotFoundError)
        assert str(path if "parquet" not in str(caught.value) else tmp_path) in str(caught.value)


def test_dtypes_do_not_depend_on_the_data(tmp_path: Path) -> None:
    # channel is nullable by design (null on markers): pandas gets UInt8 even when a
    # file happens to contain no marker, so concatenating runs never changes dtypes.
    path = write_stt1(tmp_path / "x.bin", n=5)
    assert str(bindf.read(path, n_rows=1, columns=["channel"])["channel"].dtype) == "UInt8"
    assert str(bindf.read(path)["event"].dtype) == "uint8"


def test_multi_file_glob_paths_and_row_index(stt1_files: list[Path], tmp_path: Path) -> None:
    df = bindf.read(str(tmp_path / "run*.bin"), output="polars",
                    include_file_paths="path", row_index_name="idx", row_index_offset=10)
    assert df.height == 1750
    assert df.columns[0] == "idx" and df.columns[-1] == "path"
    assert df["idx"].to_list() == list(range(10, 1760))
    counts = df.group_by("path").len().sort("path")
    assert counts["path"].to_list() == [str(p) for p in stt1_files]
    assert counts["len"].to_list() == [1000, 500, 250]
    assert df.bindf.source == [str(p) for p in stt1_files]
    # the frame keeps the first file's header
    assert df.bindf.header == bindf.read_header(stt1_files[0])
    singles = pl.concat([bindf.read(p, output="polars") for p in stt1_files])
    assert df.drop("idx", "path").equals(singles)


def test_columns_keep_the_row_index_and_file_path_columns(stt1_files: list[Path],
                                                           tmp_path: Path) -> None:
    """As in polars, ``columns=`` picks the data's columns: the row index and the file
    path are added whatever it names (first and last), or where it names them."""
    import bindf.dask

    glob = str(tmp_path / "run*.bin")
    extras = {"include_file_paths": "path", "row_index_name": "idx"}
    full = bindf.read(glob, output="polars", **extras)
    picked = bindf.read(glob, output="polars", columns=["channel"], **extras)
    assert picked.columns == ["idx", "channel", "path"]
    assert picked.equals(full.select("idx", "channel", "path"))
    placed = bindf.read(glob, output="polars", columns=["path", "channel", "idx"], **extras)
    assert placed.equals(full.select("path", "channel", "idx"))
    chunks = list(bindf.read(glob, output="arrow", columns=["event"], chunksize=600, **extras))
    assert [c.column_names for c in chunks] == [["idx", "event", "path"]] * len(chunks)
    with bindf.open(glob, columns=["event"], **extras) as f:
        assert f.schema.names == ["idx", "event", "path"]
        assert pa.table(f).column_names == ["idx", "event", "path"]
    partitions = bindf.dask.read_spectro(glob, columns=["event"], include_file_paths="path")
    assert list(partitions.compute().columns) == ["event", "path"]
    with bindf.follow(stt1_files[0], columns=["event"], include_file_paths="path",
                      idle_timeout=0) as follower:
        assert {tuple(frame.columns) for frame in follower} == {("event", "path")}


def test_storage_options_of_a_local_file_and_a_bytes_path_like(stt1_files: list[Path]) -> None:
    """As pandas' readers: storage_options (fsspec's) given with a local path or a file
    object are an error, not ignored without a word (empty ones pass). A path-like
    whose __fspath__ gives bytes is a path (it was Python's "startswith first arg must
    be bytes")."""
    path = stt1_files[0]
    with open(path, "rb") as f:
        for source in (path, str(path), [path], f):
            with pytest.raises(ValueError, match="storage_options= are for fsspec URLs"):
                bindf.read(source, storage_options={"anon": True})
    with open(path, "rb") as f:
        # (read_header of a file object ignored them without a word)
        for source in (path, f, io.BytesIO(path.read_bytes())):
            with pytest.raises(ValueError, match="storage_options= are for fsspec URLs"):
                bindf.read_header(source, storage_options={"anon": True})
    whole = bindf.read(path)
    whole.bindf.to_parquet(path.with_suffix(".parquet"))
    with pytest.raises(ValueError, match="storage_options= are for fsspec URLs"):
        bindf.read_parquet(path.with_suffix(".parquet"), storage_options={"anon": True})
    pd.testing.assert_frame_equal(bindf.read(path, storage_options={}), whole)
    # a file:// URL takes them, as in pandas (bindf reads it as a local path)
    pd.testing.assert_frame_equal(
        bindf.read(path.as_uri(), storage_options={"anon": True}), whole)

    class BytesPath:
        def __fspath__(self) -> bytes:
            return os.fsencode(path)

    pd.testing.assert_frame_equal(bindf.read(BytesPath()), whole)
    assert bindf.read_header(BytesPath()) == whole.attrs["bindf"]["header"]
    # follow takes what the readers take as a path (it failed on a list of ints)
    followed = pd.concat(bindf.follow(BytesPath(), idle_timeout=0))
    pd.testing.assert_frame_equal(followed.reset_index(drop=True), whole)


def test_counts_and_options_that_are_not_the_functions_own(stt1_files: list[Path]) -> None:
    path = stt1_files[0]
    # polars refuses a float row index offset; bindf no longer truncates it
    for offset in (1.5, True, "3"):
        with pytest.raises(ValueError, match="row_index_offset must be an integer"):
            bindf.read(path, row_index_name="i", row_index_offset=offset)
    # read_header named read_apx and hinted the very name given ("did you mean n_rows=?")
    with pytest.raises(TypeError, match=r"read_header\(\) reads the header only and takes "
                                        r"no \['columns', 'n_rows'\]"):
        bindf.read_header(path, n_rows=3, columns=["event"])
    # foreign messages: "'int' object is not iterable", "dictionary update sequence …"
    for kwargs, message in (({"columns": 5}, "columns must be a column name or a list"),
                            ({"columns": ["event", 1]}, "columns must be a column name"),
                            ({"storage_options": "x"}, "storage_options must be a dict")):
        with pytest.raises(TypeError, match=message):
            bindf.read(path, **kwargs)
    for reader, sample in ((bindf.read_apx, "astropix_threshold_scan.apx"),
                           (bindf.read_astep, "astep_quad_chip_frames.bin")):
        for bad in ("x", "4096", 2.5, 1, None):  # int("x") was Python's own message
            with pytest.raises(ValueError, match=r"chunk_bytes must be an integer >= 1\d"):
                reader(Path(bindf.__file__).parent / "samples" / sample, chunk_bytes=bad)
    with pytest.raises(TypeError, match="source must be a path, a glob"):
        bindf.read(None)
    with pytest.raises(TypeError, match="not a set: its order"):  # rows in hash order
        bindf.read({str(path)})
    with pytest.raises(TypeError, match="source must be a path, a URL"):
        bindf.read_header(None)
    with pytest.raises(TypeError, match="give chunksize= or batch_size=, not both"):
        bindf.read(path, chunksize=10, batch_size="x")  # (it was ignored, unchecked)

    with pytest.raises(TypeError, match="storage_options must be a dict"):
        bindf.read_headers(path, storage_options=5)
    # a column name that is no str was pyarrow's "expected bytes, int found"
    for name, value in (("row_index_name", 5), ("include_file_paths", True)):
        for call in (lambda kw: bindf.read(path, **kw),
                     lambda kw: pl.scan_spectro(path, **kw).collect()):
            with pytest.raises(TypeError, match=f"{name} must be a column name"):
                call({name: value})
    # iter_batches yields Arrow batches: an output choice is refused by its own name
    # (it was "did you mean dtype_backend=?" for dtype_backend itself, naming read_spectro)
    for name, value in (("dtype_backend", "pyarrow"), ("output", "polars"), ("chunksize", 5)):
        with pytest.raises(TypeError, match=f"'{name}': it chooses the output of bindf.read"):
            next(bindf.iter_batches(path, **{name: value}))


def test_read_records_reads_bytes_that_begin_like_a_magic(tmp_path: Path) -> None:
    """read_records reads any bytes: those of a file that begins like another format's
    magic too (refused for a moment by the check meant for magic-less formats)."""
    (tmp_path / "records.bin").write_bytes(b"SP01" + bytes(12))
    assert len(bindf.read_records(tmp_path / "records.bin", dtype="<u4", offset=4)) == 3


def test_flags_take_only_true_or_false(stt1_files: list[Path], tmp_path: Path) -> None:
    """A string is truthy: ``overwrite="no"`` overwrote the file, ``progress="yes"`` and
    ``flatten="no"`` were taken as True."""
    path = stt1_files[0]
    frame = bindf.read_spectro(path)
    out = tmp_path / "out.bin"
    out.write_bytes(b"keep me")
    calls = {
        "overwrite": lambda: bindf.write_spectro(out, frame, overwrite="no"),
        "progress": lambda: bindf.read(path, progress="yes"),
        "flatten": lambda: bindf.read_headers(path, flatten="no"),
        "parallel": lambda: bindf.read_headers(path, parallel="x"),
        "memmap": lambda: bindf.read_records(path, "u1", memmap="x"),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"{name} must be True or False"):
            call()
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        bindf.to_parquet(frame, tmp_path / "out.parquet", overwrite="no")
    assert out.read_bytes() == b"keep me"
    bindf.write_spectro(out, frame, overwrite=np.True_)  # numpy's bool is a bool
    assert bindf.read_spectro(out).equals(frame)


def _opened_during(action, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose files ``action()`` opened (headers and data alike)."""
    from bindf._source import Source

    opened: list[str] = []
    real = Source.open

    def counting(self: Source):  # noqa: ANN202 - Source.open's own type
        opened.append(self.path)
        return real(self)

    monkeypatch.setattr(Source, "open", counting)
    action()
    monkeypatch.undo()
    return opened


def _polars_hands_over(predicate: pl.Expr) -> bool:
    """Whether this polars gives ``predicate`` to an IO source (older ones keep filters
    whose functions they cannot serialize, such as some string functions, and apply
    them to the rows themselves)."""
    from polars.io.plugins import register_io_source

    given: list[object] = []

    def source(with_columns, predicate, n_rows, batch_size):  # noqa: ANN001, ANN202
        given.append(predicate)
        yield pl.DataFrame({"path": ["x"], "channel": [1], "event": [4]})

    schema = {"path": pl.String, "channel": pl.Int64, "event": pl.Int64}
    register_io_source(source, schema=schema).filter(predicate).collect()
    return given[0] is not None


@pytest.mark.parametrize("predicate, kept", [
    (lambda f: pl.col("path") == f[1], [1]),
    (lambda f: (pl.col("path") == f[1]) | (pl.col("path") == f[2]), [1, 2]),
    (lambda f: (pl.col("path") != f[0]) & (pl.col("channel") == 1) & (pl.col("event") > 3),
     [1, 2]),
    (lambda f: pl.col("path").is_in([f[2]]) & pl.col("path").str.ends_with(".bin"), [2]),
    (lambda f: pl.col("path").str.contains("no such run"), []),
])
@pytest.mark.parametrize("row_index", [None, "idx"])
def test_a_path_predicate_opens_only_the_files_it_keeps(
        stt1_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        predicate, kept: list[int], row_index: str | None) -> None:
    """A filter on the include_file_paths column is decided per file: the others are
    not read (nor opened, when the row index does not need their row counts), and the
    rows (row index included) are those of the eager read, filtered."""
    files = [str(p) for p in stt1_files]
    expr = predicate(files)
    lazy = pl.scan_spectro(str(tmp_path / "run*.bin"), include_file_paths="path",
                           row_index_name=row_index, row_index_offset=10)
    got: list[pl.DataFrame] = []
    opened = _opened_during(lambda: got.append(lazy.filter(expr).collect()), monkeypatch)
    eager = bindf.read(str(tmp_path / "run*.bin"), output="polars", include_file_paths="path",
                       row_index_name=row_index, row_index_offset=10)
    expected = eager.filter(expr)
    as_text = pl.col("marker").cast(pl.String)  # categoricals of two reads (polars < 1.32)
    assert got[0].with_columns(as_text).equals(expected.with_columns(as_text))
    assert sorted(set(got[0]["path"])) == [files[i] for i in kept if expected.height]
    if not _polars_hands_over(expr):  # it filters the rows itself: every file is read
        return
    if row_index is None or not kept:
        assert set(opened) == {files[i] for i in kept}
    else:  # the row counts of the files before the last kept one come from their headers
        assert set(opened) <= set(files[: max(kept) + 1])


def test_a_path_predicate_with_a_row_index_of_unknown_counts(
        stt1_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without row counts from the headers, the files before the last kept one are read
    (their rows numbered, then filtered out); the files after it are not."""
    from bindf.formats._fixed import FixedRecordReader

    monkeypatch.setattr(FixedRecordReader, "count_rows", lambda self: None)
    files = [str(p) for p in stt1_files]
    lazy = pl.scan_spectro(str(tmp_path / "run*.bin"), include_file_paths="path",
                           row_index_name="idx").filter(pl.col("path") == files[1])
    got = lazy.collect()
    assert got["idx"].to_list() == list(range(1000, 1500))
    opened = _opened_during(lazy.collect, monkeypatch)
    assert files[2] not in opened


def test_a_streamed_glob_of_large_files_decodes_one_at_a_time(
        stt1_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks and batches of a glob of large files: the files are streamed one after
    the other (the first batch opens the first file only), each with every thread; an
    eager read still decodes them side by side. Same rows either way."""
    from bindf.frontends import batches

    pattern = str(tmp_path / "run*.bin")
    # small files (decoded inline, one after the other): one thread each, as always
    assert batches.ReadPlan(pattern, threads=2, batch_size=100).first_reader.threads == 1
    monkeypatch.setattr(batches, "PARALLEL_MIN_FILE_BYTES", 0)  # no file decoded inline
    monkeypatch.setattr(batches, "STREAM_AHEAD_MAX_FILE_BYTES", 1000)  # all "large"
    plan = batches.ReadPlan(pattern, threads=2, batch_size=100)
    assert not plan._parallel_files() and plan.first_reader.threads == 2

    def first_batch() -> None:
        with bindf.open(pattern, threads=2, batch_size=100) as f:
            batch = next(f.iter_batches())
            assert batch.num_rows == 100

    assert set(_opened_during(first_batch, monkeypatch)) == {str(stt1_files[0])}
    monkeypatch.setattr(batches, "PARALLEL_MIN_FILE_BYTES", 0)
    monkeypatch.setattr(batches, "STREAM_AHEAD_MAX_FILE_BYTES", 1000)
    with bindf.open(pattern, threads=2) as f:
        streamed = pa.Table.from_batches(list(f.iter_batches(batch_size=300)))
    eager_plan = batches.ReadPlan(pattern, threads=2)
    eager = pa.Table.from_batches(eager_plan.all_batches())
    assert eager_plan._parallel_files() and eager_plan.first_reader.threads == 1
    assert streamed.equals(eager) and eager.num_rows == 1750


def test_multi_file_n_rows_spans_files(stt1_files: list[Path]) -> None:
    df = bindf.read(stt1_files, n_rows=1200, include_file_paths="path", output="polars")
    assert df.height == 1200
    assert df["path"].n_unique() == 2


def test_glob_without_match_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        bindf.read(str(tmp_path / "none*.bin"))
    with pytest.raises(FileNotFoundError):
        bindf.read(tmp_path / "missing.bin")


def test_error_names_the_file_that_failed(stt1_files: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "run9.bin"
    bad.write_bytes(b"STT1\xff\xff\xff\x00{}")
    with pytest.raises(bindf.HeaderError) as info:
        bindf.read(str(tmp_path / "run*.bin"))
    assert info.value.path == str(bad)
    assert info.value.offset == 4


def test_truncated_file_in_multi_file_read_warns_and_keeps_data(
    stt1_files: list[Path], tmp_path: Path
) -> None:
    cut = tmp_path / "run1.bin"
    data = cut.read_bytes()
    cut.write_bytes(data[:-5])  # cut the last record of the middle file
    with pytest.warns(bindf.TruncatedFileWarning, match="run1.bin") as caught:
        df = bindf.read(str(tmp_path / "run*.bin"), output="polars", include_file_paths="p")
    assert caught[0].message.path == str(cut)
    assert df.filter(pl.col("p") == str(cut)).height == 499
    assert df.height == 1749


def test_chunksize_iterates_frames(stt1_files: list[Path]) -> None:
    whole = bindf.read(stt1_files[0])
    with bindf.read(stt1_files[0], chunksize=300) as reader:
        chunks = list(reader)
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    assert all(c.attrs["bindf"]["format"] == "spectro" for c in chunks)
    # numbered on as pandas' chunked readers do, so the chunks concatenate to the whole
    assert [(c.index[0], c.index[-1]) for c in chunks] == [(0, 299), (300, 599),
                                                           (600, 899), (900, 999)]
    pd.testing.assert_frame_equal(pd.concat(chunks), whole)
    polars_chunks = list(bindf.read(stt1_files[0], chunksize=400, output="polars"))
    assert [c.height for c in polars_chunks] == [400, 400, 200]


@pytest.mark.parametrize("output", ["pandas", "polars", "arrow"])
def test_chunks_hold_chunksize_rows_whatever_the_batches(data_dir: Path, output: str) -> None:
    """pandas' convention: every chunk but the last holds ``chunksize`` rows, though the
    decoder's batches end where a read of the file ends (``chunk_bytes``), a file ends,
    or a damaged stretch ends (they were handed out as they came: 100, 61, 26, …)."""
    runs = [data_dir / "vinj0_th1030_20250729-185248.apx"] * 2
    whole = bindf.read(runs, output="arrow")
    for chunksize in (100, 1000, 10**6):
        with bindf.read(runs, chunksize=chunksize, chunk_bytes=4096, output=output) as reader:
            first = reader.get_chunk(7)  # (then on with chunksize rows each)
            chunks = list(reader)
        sizes = [len(first), *(len(c) for c in chunks)]
        assert sizes[0] == 7 and sizes[1:-1] == [chunksize] * (len(sizes) - 2)
        assert 0 < sizes[-1] <= chunksize and sum(sizes) == whole.num_rows
        if output == "pandas":
            got = pa.Table.from_pandas(pd.concat([first, *chunks]), preserve_index=False)
        elif output == "polars":
            got = pl.concat([first, *chunks]).to_arrow()
        else:
            got = pa.concat_tables([first, *chunks])
        assert got.to_pydict() == whole.to_pydict()


def test_chunks_of_many_files_carry_one_info(stt1_files: list[Path]) -> None:
    """Every chunk of a multi-file read carries the read's info (every source): made
    once, shared read-only by the pandas chunks (it was rebuilt and walked for every
    chunk: O(files) a chunk), a copy of its own in each polars chunk."""
    sources = [str(p) for p in stt1_files]
    chunks = list(bindf.read(sources, chunksize=250))
    assert len(chunks) > 4
    first = chunks[0].attrs["bindf"]
    assert first["source"] == sources and "errors" not in first
    assert all(c.attrs["bindf"]["source"] is first["source"] for c in chunks)
    with pytest.raises(TypeError):
        first["source"].append("x")
    polars_chunks = list(bindf.read(sources, chunksize=250, output="polars"))
    polars_chunks[0].bindf.info["source"].append("x")
    polars_chunks[0].bindf.info["header"]["edited"] = True
    assert all(c.bindf.info["source"] == sources and "edited" not in c.bindf.info["header"]
               for c in polars_chunks[1:])


def test_iter_batches_bounded_and_equal(stt1_files: list[Path]) -> None:
    batches = list(bindf.iter_batches(stt1_files[0], batch_size=128))
    assert max(b.num_rows for b in batches) == 128
    assert all(HEADER_KEY.encode() in b.schema.metadata for b in batches)
    joined = pa.Table.from_batches(batches).replace_schema_metadata(None)
    whole = bindf.read(stt1_files[0], output="arrow").replace_schema_metadata(None)
    assert joined.equals(whole)


@pytest.mark.parametrize("batch_size", [1, 7, 1000, 5000])
def test_small_batches_equal_whole(stt1_files: list[Path], batch_size: int) -> None:
    whole = bindf.read(stt1_files[0], output="polars")
    assert bindf.read(stt1_files[0], output="polars", batch_size=batch_size).equals(whole)


def test_scan_matches_eager(stt1_files: list[Path], tmp_path: Path) -> None:
    pattern = str(tmp_path / "run*.bin")
    eager = bindf.read(pattern, output="polars", include_file_paths="path", row_index_name="i")
    lazy = bindf.scan(pattern, include_file_paths="path", row_index_name="i")
    assert lazy.collect_schema() == eager.schema
    assert lazy.collect().equals(eager)
    query = (pl.col("channel") == 2) & (pl.col("microtime_ns") > 10)
    assert lazy.filter(query).select("i", "macrotime_ns").collect().equals(
        eager.filter(query).select("i", "macrotime_ns"))
    assert lazy.head(5).collect().equals(eager.head(5))
    assert lazy.filter(pl.col("marker") == "line").head(3).collect().equals(
        eager.filter(pl.col("marker") == "line").head(3))
    assert lazy.select("path").unique().collect().height == 3
    assert lazy.bindf.header == eager.bindf.header


def test_scan_schemas_are_converted_once_and_handed_out_as_copies() -> None:
    """polars_schema caches the conversion per Arrow schema but gives each caller a
    schema of its own (pl.Schema is a mutable mapping)."""
    from bindf.frontends.polars import polars_schema

    arrow = pa.schema([("a", pa.uint8()), ("b", pa.dictionary(pa.int8(), pa.string())),
                       ("c", pa.float64())])
    first, second = polars_schema(arrow), polars_schema(arrow)
    assert first == second == pl.from_arrow(arrow.empty_table()).schema
    assert first is not second
    first["d"] = pl.Int64
    assert "d" not in polars_schema(arrow)


def test_scan_predicate_on_unprojected_column(stt1_files: list[Path]) -> None:
    eager = bindf.read(stt1_files[0], output="polars")
    got = pl.scan_spectro(stt1_files[0]).filter(pl.col("event") == 76).select("macrotime_ns")
    assert got.collect().equals(eager.filter(pl.col("event") == 76).select("macrotime_ns"))


def test_scan_reads_only_what_head_needs(stt1_files: list[Path], monkeypatch) -> None:
    from bindf.formats.spectro import SpectroReader

    seen = []
    original = SpectroReader.build_columns

    def counting(self, raw, columns, first_offset=None):
        seen.append((tuple(raw), tuple(columns), len(next(iter(raw.values())))))
        return original(self, raw, columns, first_offset)

    monkeypatch.setattr(SpectroReader, "build_columns", counting)
    pl.scan_spectro(stt1_files[0], batch_size=100).select("event").head(3).collect()
    assert {(fields, cols) for fields, cols, _ in seen} == {(("event",), ("event",))}
    assert sum(n for *_, n in seen) <= 100


def test_progress_bar(stt1_files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    df = bindf.read(stt1_files[0], progress=True)
    assert len(df) == 1000
    err = capsys.readouterr().err
    # labelled with the file's name, not its whole path (which would crowd out the
    # counts on a narrow terminal)
    assert "1.00k" in err and stt1_files[0].name in err and str(stt1_files[0].parent) not in err
    bindf.read(stt1_files[:2], progress=True)
    assert "2 files" in capsys.readouterr().err


def test_bad_arguments_are_value_errors(stt1_files: list[Path]) -> None:
    with pytest.raises(ValueError, match="output"):
        bindf.read(stt1_files[0], output="excel")
    with pytest.raises(ValueError, match="batch_size"):
        bindf.read(stt1_files[0], batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        bindf.read(stt1_files[0], on_error="ignore")
    with pytest.raises(ValueError, match="unknown format"):
        bindf.read(stt1_files[0], format="xyz")
    with pytest.raises(ValueError, match="already exist"):
        bindf.read(stt1_files[0], include_file_paths="event")
    for read in (bindf.read, lambda p, **kw: bindf.scan(p, **kw).collect()):
        with pytest.raises(ValueError, match="name the same column 'x'"):
            read(stt1_files[0], row_index_name="x", include_file_paths="x")
        with pytest.raises(ValueError, match=r"row_index_offset must be an integer in 0\.\.2\*\*64 - 1"):
            read(stt1_files[0], row_index_name="i", row_index_offset=-1)
        # no wrap to 0 (the scan meets it while collecting)
        with (pytest.raises(ValueError, match="row index passes 2\\*\\*64 - 1")
              if read is bindf.read else
              raises_from_scan(ValueError, match="row index passes 2\\*\\*64 - 1")):
            read(stt1_files[0], row_index_name="i", row_index_offset=2**64 - 10)
    last = bindf.read(stt1_files[0], output="polars", row_index_name="i",
                      row_index_offset=2**64 - 1000)["i"]  # 1000 rows: ends on the largest
    assert last[-1] == 2**64 - 1 and last.dtype == pl.UInt64


def test_exceptions_pickle_with_their_location() -> None:
    import pickle

    err = bindf.CorruptDataError("bad marker", path="a.apx", offset=42)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is bindf.CorruptDataError
    assert (back.path, back.offset, str(back)) == ("a.apx", 42, str(err))
    assert isinstance(back, ValueError)


def test_nullable_int_conversion_is_exact(tmp_path: Path) -> None:
    path = write_stt1(tmp_path / "m.bin", n=40)
    df = bindf.read(path)
    events = df["event"].to_numpy().astype(np.int16)
    expected = np.where(np.isin(events, [70, 76, 80]), -1, events)
    got = df["channel"].astype("Int16").fillna(-1).to_numpy()
    np.testing.assert_array_equal(got, expected)


def test_pandas_frames_are_writable(stt1_files: list[Path]) -> None:
    df = bindf.read(stt1_files[0])
    df.loc[0, "microtime_ns"] = 99.0
    df.loc[1, "event"] = 3
    df.loc[2, "channel"] = 1
    assert df.loc[0, "microtime_ns"] == 99.0 and df.loc[1, "event"] == 3


@pytest.mark.parametrize("name", ["20250723_092534_data.apx",
                                  "intensity-tracing-export-data-example.bin",
                                  "sp01_decay_curves_example.bin", "spf1_phasors_example.bin"])
def test_every_format_gives_writable_pandas_columns(data_dir: Path, name: str) -> None:
    df = bindf.read(data_dir / name, n_rows=50)
    for position in range(df.shape[1]):
        df.iloc[0, position] = df.iloc[1, position]  # raises if the memory is read-only
        assert df.iloc[0, position] == df.iloc[1, position]


def _many_chunk_table() -> pa.Table:
    """A table of every kind of column the pandas conversion treats on its own, in
    chunks with and without nulls, empty chunks included."""
    markers = pa.array(["M1", "M2", "M3"])

    def dictionary(indices: list[int | None], values: pa.Array = markers) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(indices, type=pa.int8()), values)

    columns = {
        "wide": pa.chunked_array([[1, 2**63], [], [7, 8, 9]], type=pa.uint64()),
        "real": pa.chunked_array([[0.5, float("nan")], [], [2.5, -1.0, 3.0]]),
        "channel": pa.chunked_array([[1, None], [], [3, 4, None]], type=pa.uint8()),
        "never_null_here": pa.chunked_array([[1, 2], [], [3, 4, 5]], type=pa.int16()),
        "flag": pa.chunked_array([[True, None], [], [False, True, True]]),
        "marker": pa.chunked_array([dictionary([None, None]), dictionary([]),
                                    dictionary([2, None, 0])]),
        "kind": pa.chunked_array([dictionary([0, 1]), dictionary([]),
                                  dictionary([1, 0, 0], pa.array(["B", "A"]))]),
        # a plugin's unsigned codes (pyarrow before 19 cannot convert them itself)
        "unsigned": pa.chunked_array([
            pa.DictionaryArray.from_arrays(pa.array(indices, type=pa.uint8()), markers)
            for indices in ([2, None], [], [0, 1, 2])]),
        "when": pa.chunked_array([[1, 2], [], [3, 4, 5]], type=pa.timestamp("ns")),
        "text": pa.chunked_array([["a", None], [], ["c", "d", "e"]]),
        # floats with nulls (NaN in pandas), bits of a never-null bool, bytes
        "energy": pa.chunked_array([[None, 1.5], [], [2.0, None, 3.0]], type=pa.float32()),
        "fired": pa.chunked_array([[True, False], [], [False, True, True]]),
        "raw": pa.chunked_array([[b"\x01", None], [], [b"", b"ab", b"\xff" * 20]]),
    }
    schema = pa.schema([pa.field(name, column.type, nullable=name not in ("wide", "fired"))
                        for name, column in columns.items()])
    return pa.table(columns, schema=schema)


def test_pandas_conversion_of_many_chunks_equals_pyarrows() -> None:
    """The chunk-by-chunk pandas conversion (which releases memory as it goes) gives
    exactly the frame of pyarrow's own conversion, with nullable integers and booleans
    as pandas' masked arrays, and every column writable."""
    from bindf.frontends.output import MASKED_DTYPES, table_to_output

    reference = _many_chunk_table()
    unsigned = pa.dictionary(pa.int16(), pa.string())
    reference = reference.set_column(reference.schema.get_field_index("unsigned"), "unsigned",
                                     reference.column("unsigned").cast(unsigned))
    expected = pd.DataFrame({
        name: reference.column(name).to_pandas(
            types_mapper=MASKED_DTYPES.get if field.nullable and (
                pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)) else None)
        for name, field in zip(reference.column_names, reference.schema)
    })
    frame = table_to_output(_many_chunk_table(), "pandas", None)
    pd.testing.assert_frame_equal(frame, expected)
    assert str(frame["channel"].dtype) == "UInt8" and str(frame["flag"].dtype) == "boolean"
    assert frame["wide"].dtype == np.uint64 and frame["wide"][1] == 2**63
    assert list(frame["marker"].cat.codes) == [-1, -1, 2, -1, 0]
    assert list(frame["kind"]) == ["M1", "M2", "A", "B", "B"]  # two dictionaries
    assert list(frame["unsigned"].cat.codes) == [2, -1, 0, 1, 2]
    assert frame["energy"].dtype == np.float32 and frame["energy"].isna().tolist() == [
        True, False, False, True, False]
    assert frame["fired"].dtype == np.bool_ and frame["raw"].tolist()[:2] == [b"\x01", None]
    for position in range(frame.shape[1]):
        frame.iloc[0, position] = frame.iloc[1, position]  # raises if read-only
    # dtype_backend="numpy_nullable": pyarrow's conversion with pandas' masked dtypes
    masked = table_to_output(_many_chunk_table(), "pandas", None, "numpy_nullable")
    expected = pd.DataFrame({
        name: reference.column(name).to_pandas(types_mapper=MASKED_DTYPES.get)
        for name in reference.column_names})
    pd.testing.assert_frame_equal(masked, expected)
    assert str(masked["energy"].dtype) == "Float32" and masked["energy"].isna().sum() == 2
    assert str(masked["fired"].dtype) == "boolean" and str(masked["wide"].dtype) == "UInt64"


def test_truncated_file_in_multi_file_scan_warns_and_keeps_data(
    stt1_files: list[Path], tmp_path: Path
) -> None:
    cut = tmp_path / "run2.bin"
    cut.write_bytes(cut.read_bytes()[:-9])
    lazy = pl.scan_spectro(str(tmp_path / "run*.bin"), include_file_paths="p")
    with pytest.warns(bindf.TruncatedFileWarning, match="run2.bin"):
        df = lazy.collect()
    assert df.filter(pl.col("p") == str(cut)).height == 249
    assert df.height == 1749


def test_scan_takes_n_rows_as_polars_scans_do(stt1_files: list[Path]) -> None:
    """``n_rows`` on a scan is polars' own: the scan's first rows, before any later
    filter (as ``pl.scan_parquet(n_rows=)``), across files, with the row index."""
    whole = pl.scan_spectro(stt1_files, row_index_name="i").collect()
    lazy = pl.scan_spectro(stt1_files, n_rows=1500, row_index_name="i")
    assert_frame_equal(lazy.collect(), whole.head(1500))
    assert_frame_equal(lazy.filter(pl.col("event") == 1).collect(),
                       whole.head(1500).filter(pl.col("event") == 1))
    assert_frame_equal(lazy.select("macrotime_ns").head(3).collect(),
                       whole.select("macrotime_ns").head(3))
    assert lazy.bindf.info["format"] == "spectro"
    # a longer head or slice after a row index: polars 2.1 lost the scan's n_rows when
    # it was a head() on the scan's frame (10 rows of n_rows=2)
    short = pl.scan_spectro(stt1_files, n_rows=2)
    for query, height in ((short.with_row_index("j").select("channel").head(10), 2),
                          (short.with_row_index("j").slice(0, 10), 2),
                          (short.slice(1, 10), 1)):
        assert query.collect().height == height
    assert short.select(pl.len()).collect().item() == 2
    assert pl.scan_spectro(stt1_files[0], n_rows=0).collect().height == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n_rows must be an integer >= 0"):
            bindf.scan(stt1_files[0], n_rows=bad)


def test_head_then_filter_is_the_filter_of_the_first_rows(stt1_files: list[Path],
                                                          tmp_path: Path) -> None:
    """``head(n).filter(p)``: the rows of the first n that pass p (polars 2 hands the
    scan both; it once returned the first n rows that pass p), also on a path filter
    that would skip files, and ``filter(p).head(n)`` the first n that pass."""
    whole = pl.scan_spectro(stt1_files, include_file_paths="file").collect()
    lazy = pl.scan_spectro(stt1_files, include_file_paths="file")
    odd = pl.col("event") == 1
    assert_frame_equal(lazy.head(1500).filter(odd).collect(), whole.head(1500).filter(odd))
    assert_frame_equal(lazy.filter(odd).head(700).collect(), whole.filter(odd).head(700))
    last = str(stt1_files[-1])
    assert lazy.head(10).filter(pl.col("file") == last).collect().height == 0
    assert_frame_equal(lazy.filter(pl.col("file") == last).head(10).collect(),
                       whole.filter(pl.col("file") == last).head(10))


def test_a_query_of_no_scan_column_keeps_every_row(format_case) -> None:
    """polars 2 asks a scan for no column at all when the query needs only the rows
    (``with_row_index().select("i")``, ``pl.len()`` after a row index): every row
    still counts (it once returned an empty frame), in both engines and with a filter."""
    kwargs = dict(format_case.kwargs)
    eager = bindf.read(format_case.path, output="polars", **kwargs)
    indexed = bindf.scan(format_case.path, **kwargs).with_row_index("i", offset=7)
    assert indexed.select("i").collect()["i"].to_list() == list(range(7, 7 + eager.height))
    assert indexed.select(pl.len()).collect().item() == eager.height
    if int(pl.__version__.split(".")[0]) >= 2:  # polars 1.x has no engine="streaming"
        assert indexed.select(pl.len()).collect(engine="streaming").item() == eager.height
    assert_frame_equal(indexed.select(pl.col("i") * 2).tail(3).collect(),
                       eager.with_row_index("i", offset=7).select(pl.col("i") * 2).tail(3))
    column = format_case.projection[0]
    assert_frame_equal(
        indexed.filter(pl.col(column).is_not_null()).select("i").collect(),
        eager.with_row_index("i", offset=7).filter(pl.col(column).is_not_null()).select("i"))


def test_a_scan_pickles_and_serializes(format_case) -> None:
    """docs/guide/scaling-out.md: scans pickle to worker processes. Every scan failed
    ("cannot pickle '_thread.RLock' object"): its source function refers to the
    module's step counter, which holds a lock."""
    kwargs = dict(format_case.kwargs)
    lazy = bindf.scan(format_case.path, **kwargs)
    expected = lazy.collect()
    assert_frame_equal(pickle.loads(pickle.dumps(lazy)).collect(), expected,
                       categorical_as_str=True)
    assert_frame_equal(pl.LazyFrame.deserialize(io.BytesIO(lazy.serialize())).collect(),
                       expected, categorical_as_str=True)


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_process_forked_after_a_scan_was_built_runs_polars_queries(tmp_path: Path) -> None:
    """Building a scan (not running it) asked polars for its thread pool's size, which
    starts the pool; a process forked after that hung in every polars query (the
    pool's threads are not in the child), a scan's collect or any other."""
    script = tmp_path / "fork.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, sys
        import bindf, polars as pl

        def child(lazy):
            pl.LazyFrame({{"a": [1, 2]}}).filter(pl.col("a") > 1).collect()
            lazy.collect()

        if __name__ == "__main__":
            lazy = bindf.scan({str(DATA / "20250723_092534_data.apx")!r})
            process = multiprocessing.get_context("fork").Process(target=child, args=(lazy,))
            process.start()
            process.join(60)
            if process.is_alive():
                process.kill()
                sys.exit("the forked child hung")
            sys.exit(process.exitcode)
        """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr


def test_a_scan_sinks_to_parquet_ipc_and_csv(format_case, tmp_path: Path) -> None:
    """``scan_<format>(...).sink_parquet(...)`` is how the README streams a large file
    to disk. polars before 1.26 refused to sink a plugin scan (1.22: "not yet supported
    in standard engine", 1.25: a panic), which is why 1.26 is bindf's floor."""
    kwargs = dict(format_case.kwargs)
    eager = bindf.read(format_case.path, output="polars", **kwargs)
    lazy = bindf.scan(format_case.path, **kwargs)
    lazy.sink_parquet(tmp_path / "out.parquet")
    # (categories written by the sink and read back are another source's: compare text)
    assert_frame_equal(pl.read_parquet(tmp_path / "out.parquet"), eager,
                       categorical_as_str=True)
    lazy.sink_ipc(tmp_path / "out.arrow", compression="uncompressed")
    assert_frame_equal(pl.read_ipc(tmp_path / "out.arrow"), eager, categorical_as_str=True)
    text_columns = [name for name, dtype in eager.schema.items()
                    if dtype.is_numeric() or dtype == pl.String]
    lazy.select(text_columns).sink_csv(tmp_path / "out.csv")
    assert pl.read_csv(tmp_path / "out.csv").height == eager.height


@pytest.mark.parametrize("case_id, column", [("spectro_stt1", "marker"),
                                             ("spectro_legacy", "marker"),
                                             ("itt1", "marker"), ("astep", "kind")])
def test_a_read_of_no_rows_keeps_the_categories(format_cases: dict, case_id: str,
                                                column: str) -> None:
    """A categorical column has its format's categories in a result of no rows too
    (``n_rows=0``, an empty follow poll), so that ``pd.concat`` of an empty run and a
    full one stays categorical (it became ``object``)."""
    case = format_cases[case_id]
    full = bindf.read(case.path, **case.kwargs)
    empty = bindf.read(case.path, n_rows=0, **case.kwargs)
    assert len(empty) == 0 and len(full[column].cat.categories) == 3
    assert empty[column].dtype == full[column].dtype
    assert pd.concat([empty, full])[column].dtype == full[column].dtype
    arrow = bindf.read(case.path, n_rows=0, output="arrow", **case.kwargs)[column]
    one_row = bindf.read(case.path, n_rows=1, output="arrow", **case.kwargs)[column]
    assert arrow.chunk(0).dictionary.equals(one_row.chunk(0).dictionary)
    pyarrow_backed = bindf.read(case.path, n_rows=0, dtype_backend="pyarrow", **case.kwargs)
    assert pyarrow_backed[column].dtype == bindf.read(
        case.path, n_rows=1, dtype_backend="pyarrow", **case.kwargs)[column].dtype


def test_a_header_only_file_keeps_the_categories(tmp_path: Path) -> None:
    """The same for a run that recorded nothing (its writer makes one)."""
    path = tmp_path / "empty.bin"
    full = pd.read_spectro(write_stt1(tmp_path / "full.bin", 10))
    bindf.write_spectro(path, full.iloc[:0], full.attrs["bindf"]["header"])
    empty = pd.read_spectro(path)
    assert len(empty) == 0 and empty["marker"].dtype == full["marker"].dtype
    assert bindf.dask.read_spectro(path).compute()["marker"].cat.categories.tolist() == \
        ["frame", "line", "pixel"]


@pytest.mark.parametrize("call", [
    lambda p: list(bindf.iter_batches(p, batch_size=2.5)),
    lambda p: list(pd.read_spectro(p, chunksize=2.5)),
    lambda p: pl.scan_spectro(p, batch_size=0).collect(),
    lambda p: pl.read_spectro(p, batch_size=True),
    lambda p: pd.read_spectro(p, n_rows=1.0),
])
def test_sizes_and_counts_must_be_integers(stt1_files: list[Path], call) -> None:
    """``batch_size``/``chunksize``/``n_rows`` refuse floats and bools everywhere (2.5 gave
    2-row batches, or pyarrow's TypeError in an AstroPix read) and scans refuse a
    batch size of 0 as the other readers do (it was ignored)."""
    with pytest.raises(ValueError, match=r"(batch_size|chunksize|n_rows) must be (a positive "
                                         r"integer|an integer >= 0), not"):
        call(stt1_files[0])


# -- where warnings point ---------------------------------------------------------------
def _cut(tmp_path: Path, source: str, n_files: int) -> list[Path]:
    """Copies of a real sample, each cut inside its last record or readout."""
    data = (DATA / source).read_bytes()
    paths = [tmp_path / f"{k}_{source}" for k in range(n_files)]
    for path in paths:
        path.write_bytes(data[:-3])
    return paths


_WARNING_CALLS = {
    "read": lambda p: bindf.read(p[0]),
    "read threads=2 (A-STEP: a prefetch worker decodes)": lambda p: bindf.read(p[0], threads=2),
    "glob on 2 threads": lambda p: bindf.read(p, threads=2),
    "pandas chunks": lambda p: list(bindf.read(p[0], chunksize=100)),
    "polars scan (decoded on polars' threads)": lambda p: bindf.scan(p).collect(),
    "follow": lambda p: list(bindf.follow(p[0], poll_interval=0.01, idle_timeout=0.05)),
}


@pytest.mark.parametrize("how", list(_WARNING_CALLS))
@pytest.mark.parametrize("source", ["quad_chip_data.bin", "20250723_092534_data.apx",
                                    "intensity-tracing-export-data-example.bin"])
def test_warnings_point_at_the_callers_line(tmp_path: Path, source: str, how: str) -> None:
    """A truncation warning names the line that called bindf, not bindf's own code,
    whichever path decoded the file and in whichever thread."""
    import warnings

    paths = _cut(tmp_path, source, n_files=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _WARNING_CALLS[how](paths)
    truncations = [w for w in caught if w.category is bindf.TruncatedFileWarning]
    assert truncations, how
    caller = (__file__, _WARNING_CALLS[how].__code__.co_firstlineno)  # the lambda's line
    assert {(w.filename, w.lineno) for w in truncations} == {caller}


def test_scan_batches_are_the_readers_not_polars_hint(tmp_path: Path, monkeypatch) -> None:
    """polars asks a scan for 100,000-row frames; bindf hands its readers' batches (about
    1 Mi rows) unless the scan was given a batch_size: small frames made collects up to
    twice as slow. The result is the same either way."""
    import bindf.frontends.polars as frontend

    path = write_stt1(tmp_path / "big.stt1", n=350_000)
    heights: list[int] = []
    real = frontend.batch_to_polars
    monkeypatch.setattr(frontend, "batch_to_polars",
                        lambda batch: (heights.append(batch.num_rows), real(batch))[1])
    whole = bindf.read(path, output="polars")
    assert_frame_equal(pl.scan_spectro(path).collect(), whole)
    assert heights == [350_000]
    heights.clear()
    filtered = pl.scan_spectro(path, batch_size=60_000).filter(pl.col("event") == 76).collect()
    assert heights == [60_000] * 5 + [50_000]
    assert_frame_equal(filtered, whole.filter(pl.col("event") == 76))


def test_pandas_frames_share_the_reads_info_read_only(data_dir: Path) -> None:
    """pandas deep-copies attrs into every frame it derives: with the source list of a
    read of thousands of files, each slice or group cost milliseconds. The info is
    shared (its deep copy is itself), so it is read-only; copies of it are plain dicts."""
    import copy
    import pickle

    run = data_dir / "20250723_092534_data.apx"
    df = bindf.read_apx([run, run])
    info = df.attrs["bindf"]
    assert df.iloc[:5].attrs["bindf"] is info and (df["tot_us"] * 2).attrs["bindf"] is info
    assert copy.deepcopy(info) is info and info["source"] == [str(run), str(run)]
    with pytest.raises(TypeError, match="change a copy"):
        info["header"]["readout_uid"] = 3
    with pytest.raises(TypeError, match="change a copy"):
        info["source"].append("x")
    header = dict(df.bindf.header)
    header["readout_uid"] = 3  # a copy is an ordinary dict
    # .copy() is, all the way down (a nested value of dict(...) is still shared)
    edited = df.bindf.header.copy()
    nested = next(k for k, v in edited.items() if isinstance(v, dict))
    edited[nested]["mine"] = 1
    assert type(edited) is dict and "mine" not in df.bindf.header[nested]
    sources = info["source"].copy()
    sources.append("x")
    assert type(sources) is list and len(info["source"]) == 2
    again = pickle.loads(pickle.dumps(df))
    assert again.attrs["bindf"] == info and json.loads(json.dumps(info)) == info


def test_files_of_other_columns_read_together_for_the_columns_they_share(
        tmp_path: Path) -> None:
    """IT02 runs of other channels: refused whole (with the shared columns named), read
    for the columns they have alike, as polars' Parquet readers do."""
    n = 50
    for name, channels in (("a", [0, 1]), ("b", [1, 2])):
        columns = {"time_ns": np.arange(1, n + 1, dtype=np.float64) * 1000}
        columns |= {f"ch{c + 1}": np.arange(1, n + 1, dtype=np.uint32) for c in channels}
        bindf.write_it02(tmp_path / f"{name}.bin", columns,
                         {"channels": channels, "bin_width_micros": 1, "laser_period_ns": 12.5})
    runs = str(tmp_path / "*.bin")
    with pytest.raises(bindf.BindfError, match=r"columns differ .*ask for them "
                                               r"\(columns=\['time_ns', 'ch2'\], or a scan"):
        bindf.read_it02(runs)
    with pytest.raises(bindf.BindfError, match="columns differ"):
        bindf.read_it02(runs, columns=["time_ns", "ch1"])  # b.bin has no ch1
    expected = pd.concat([bindf.read_it02(tmp_path / f"{name}.bin", columns=["time_ns", "ch2"])
                          for name in "ab"], ignore_index=True)
    assert bindf.read_it02(runs, columns=["time_ns", "ch2"]).equals(expected)
    scanned = pl.scan_it02(runs).filter(pl.col("ch2") > 10).select("ch2").collect()
    assert scanned["ch2"].to_list() == expected.loc[expected["ch2"] > 10, "ch2"].tolist()
    chunks = list(bindf.read_it02(runs, columns=["ch2"], chunksize=20))
    assert pd.concat(chunks, ignore_index=True)["ch2"].equals(expected["ch2"])
    # a scan filtered to the second file by its path, and dask, read them so too
    only_b = (pl.scan_it02(runs, include_file_paths="f")
              .filter(pl.col("f").str.ends_with("b.bin")).select("ch2").collect())
    assert only_b["ch2"].to_list() == list(range(1, n + 1))
    from bindf import dask as bindf_dask

    assert bindf_dask.read_it02(runs, columns=["time_ns", "ch2"]).compute() \
        .reset_index(drop=True).equals(expected)


def test_what_pandas_and_polars_users_type_gets_bindfs_answer(data_dir: Path) -> None:
    """Keywords of pandas' and polars' readers that bindf has no use for get advice (a
    close name misled: rechunk → "did you mean chunksize?"), a missing source and a
    DataFrame given as the source get bindf's message, an empty column name is refused
    (it was taken for "no column"), and a format named in capitals gets a hint."""
    run = data_dir / "intensity-tracing-export-data-example.bin"
    cases = [
        (lambda: pd.read_it02(filepath_or_buffer=run), TypeError,
         "'filepath_or_buffer'; the source is the first argument"),
        (lambda: pd.read_it02(), TypeError, r"read_it02\(\) needs the source"),
        (lambda: bindf.write_it02(), TypeError, r"write_it02\(\) needs the output"),
        (lambda: bindf.read_it02(run, rechunk=True), TypeError, r"call \.rechunk\(\) on the frame"),
        (lambda: bindf.read_it02(run, engine="c"), TypeError, "output= picks pandas"),
        (lambda: bindf.read_it02(run, use_pyarrow=True), TypeError, "output='arrow'"),
        (lambda: bindf.read(run, format="IT02"), ValueError, "did you mean 'it02'"),
        (lambda: bindf.read_it02(pd.DataFrame({str(run): [1]})), TypeError,
         r"not a DataFrame: .* pass that column"),
        (lambda: bindf.read_it02(pl.DataFrame({"path": [str(run)]})), TypeError,
         "not a DataFrame"),
        (lambda: bindf.read_it02(run, row_index_name=""), ValueError, "not an empty string"),
        (lambda: pl.scan_it02(run, include_file_paths=""), ValueError, "not an empty string"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert len(bindf.read_it02(pd.Series([run, run]))) == 2 * len(bindf.read_it02(run))


def test_a_polars_frame_never_reports_another_frames_info(data_dir: Path) -> None:
    """polars frames' info is kept by id(); a Ctrl-C inside the finalizer that drops it
    when the frame goes left the entry behind, and a later frame given the same id
    reported that read's header (as if it were the file's)."""
    import gc

    from bindf import _frames

    read = pl.read_it02(data_dir / "intensity-tracing-export-data-example.bin")
    stale = _frames._POLARS_INFO[id(read)]
    del read
    gc.collect()
    other = pl.DataFrame({"a": [1, 2]})
    _frames._POLARS_INFO[id(other)] = stale  # the entry a skipped finalizer leaves
    try:
        assert _frames.get_polars_info(other) is None
        with pytest.raises(AttributeError, match="carries no bindf metadata"):
            other.bindf.header  # noqa: B018
    finally:
        _frames._POLARS_INFO.pop(id(other), None)


@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_chunked_reads_take_any_number_of_rows_as_pandas_readers_do(
        data_dir: Path, output: str) -> None:
    """get_chunk(size) and read(nrows), as pandas' chunked readers have them."""
    run = data_dir / "it01_intensity-tracing-export-data-example.bin"
    whole = bindf.read_it01(run, output=output)
    reader = bindf.read_it01(run, output=output, chunksize=1000)
    parts = [reader.get_chunk(7), reader.get_chunk(1500), next(reader), reader.read(10),
             reader.read()]
    assert [len(p) for p in parts] == [7, 1500, 1000, 10, len(whole) - 2517]
    assert len(reader.read()) == 0 and list(reader.read().columns) == list(whole.columns)
    with pytest.raises(StopIteration):
        reader.get_chunk(5)
    if output == "pandas":
        joined = pd.concat(parts)
        assert joined.equals(whole) and joined.index.equals(whole.index)
    else:
        assert pl.concat(parts).equals(whole)
    with pytest.raises(ValueError, match="size"):
        bindf.read_it01(run, chunksize=10).get_chunk(0)
    closed = bindf.read_it01(run, output=output, chunksize=100)
    closed.get_chunk(5)
    closed.close()  # the 95 rows the get_chunk cut off are not handed out after it
    with pytest.raises(StopIteration):
        next(closed)
    with pytest.raises(ValueError, match="closed"):
        closed.read()


def test_more_rows_than_a_polars_frame_holds_is_a_clear_error(
        stt1_files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """polars with its 32-bit row index holds 2**32 - 1 rows; a read of more panicked in
    Rust (pyo3's PanicException, which ``except Exception`` does not catch). Here the
    limit is made 999 rows; the same read to Arrow, or n_rows within it, works."""
    from bindf.frontends import output

    monkeypatch.setattr(output, "_polars_max_rows", lambda: 999)
    with pytest.raises(ValueError, match=r"^this read has 1,000 rows, more than the 999 a "
                       r"polars frame holds .*pip install 'polars\[rt64\]'"):
        bindf.read(stt1_files[0], output="polars")
    assert bindf.read(stt1_files[0], output="arrow").num_rows == 1000
    assert pl.read_spectro(stt1_files[0], n_rows=999).height == 999


def test_exit_right_after_a_scan_that_stopped_early_does_not_abort(tmp_path: Path) -> None:
    """``filter(...).head(n)`` over a file of several batches: polars may still be pulling
    a batch on its own thread when ``collect()`` returns. A script that ends right there
    was aborted by the interpreter's exit (status 134, "FATAL: exception not rethrown")
    when that step took the GIL back during finalization; the exit now waits for it."""
    import subprocess
    import sys

    path = tmp_path / "big.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 30_000_000, dtype=np.uint8)
                     .tobytes())
    script = (
        "import bindf, polars as pl\n"
        f"lf = bindf.scan_records({str(path)!r}, dtype=[('x', '<u2'), ('y', 'i1')])\n"
        "print(lf.filter(pl.col('x') > 5).head(3).collect().height)\n"
    )
    for _ in range(3):  # (the step must still run at the exit: it did every time here)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=120)
        assert (done.returncode, done.stdout, "FATAL" in done.stderr) == (0, "3\n", False), \
            done.stderr


def test_the_exit_waits_for_scan_steps_under_way() -> None:
    import threading

    from bindf.frontends.polars import _SourceSteps

    steps = _SourceSteps()
    in_step, release = threading.Event(), threading.Event()

    def frames():
        in_step.set()
        release.wait(10)
        yield pl.DataFrame({"a": [1]})
        yield pl.DataFrame({"a": [2]})

    got: list[int] = []
    source = steps.stepped(frames())
    consumer = threading.Thread(target=lambda: got.append(next(source)["a"][0]))
    consumer.start()
    in_step.wait(10)
    exiting = threading.Thread(target=steps.wait_at_exit)
    exiting.start()
    exiting.join(0.2)
    assert exiting.is_alive()  # waits for the step under way
    release.set()
    exiting.join(10)
    consumer.join(10)
    assert not exiting.is_alive() and got == [1]
    # a later step reads on (a scan collected in an atexit handler registered before
    # bindf's, which runs after it, must read)
    assert [frame["a"][0] for frame in source] == [2]


def test_the_exit_waits_for_a_polars_thread_on_its_way_out_of_a_step() -> None:
    """A step that has ended is not yet out of Python: the thread polars started runs on
    through the generators' last lines. If the exit began while the GIL was taken from it
    there, it took the GIL back during finalization and the process aborted (seen on
    Python 3.13 in CI). The exit waits until such a thread has left Python; a thread
    that Python's ``threading`` started is not waited for (threading joins its own)."""
    import _thread
    import threading
    import time
    from collections.abc import Callable

    from bindf.frontends.polars import _SourceSteps

    steps = _SourceSteps()
    stepped, left, release = threading.Event(), threading.Event(), threading.Event()

    def stepping_thread(linger: Callable[[], object]) -> None:
        next(steps.stepped(frame for frame in [pl.DataFrame({"a": [1]})]))
        stepped.set()
        linger()  # still in Python after the step
        left.set()

    # a thread that threading did not start, as polars' are
    _thread.start_new_thread(stepping_thread, (lambda: time.sleep(0.3),))
    assert stepped.wait(10)
    steps.wait_at_exit()
    assert left.is_set()

    stepped.clear(), left.clear()
    python_thread = threading.Thread(target=stepping_thread, args=(lambda: release.wait(10),),
                                     daemon=True)
    python_thread.start()
    assert stepped.wait(10)
    steps.wait_at_exit()  # (else it would wait the 10 s)
    assert not left.is_set()
    release.set()
    python_thread.join(10)


def test_the_exit_leaves_polars_time_to_drop_a_late_steps_frame() -> None:
    """polars frees a late step's frame on its own thread, and freeing Arrow memory
    that a numpy array owns takes the GIL: the exit lets DROP_GRACE_SECONDS pass after
    the last step ended (an AstroPix scan's exit ended "terminate called without an
    active exception" about once in 400 runs on a loaded machine)."""
    import time

    from bindf.frontends.polars import _SourceSteps

    steps = _SourceSteps()
    started = time.monotonic()
    steps.wait_at_exit()  # no step yet: nothing to wait for
    next(steps.stepped(frame for frame in [pl.DataFrame({"a": [1]})]))
    ended = time.monotonic()
    steps.wait_at_exit()
    assert time.monotonic() - ended >= _SourceSteps.DROP_GRACE_SECONDS
    assert ended - started < 10


def test_a_scan_collected_in_an_earlier_atexit_handler_reads(stt1_files: list[Path]) -> None:
    """bindf's exit handler waits for scan steps under way; it runs before the handlers
    registered before ``import bindf`` and must not stop their scans."""
    import subprocess
    import sys

    script = (
        "import atexit\n"
        f"atexit.register(lambda: print(__import__('bindf').scan({str(stt1_files[0])!r})"
        ".collect().height))\n"
        "import bindf\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout) == (0, "1000\n"), done.stderr
