"""Parquet export keeps the header; round trips are exact; writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bindf
from bindf import parquet
from bindf._atomic import OutputExistsError, atomic_output
from bindf.arrow import table_info


@pytest.mark.parametrize("output", ["pandas", "polars", "arrow"])
def test_round_trip_keeps_header_and_values(stt1_files: list[Path], tmp_path: Path,
                                            output: str) -> None:
    frame = bindf.read(stt1_files[0], output=output)
    out = tmp_path / "x.parquet"
    parquet.to_parquet(frame, out)
    back = parquet.read_parquet(out, output=output)
    if output == "pandas":
        pd.testing.assert_frame_equal(back, frame)
        assert back.attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
        # plain pandas restores attrs too (PANDAS_ATTRS key)
        assert pd.read_parquet(out).attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
    elif output == "polars":
        assert back.equals(frame)
        assert back.bindf.header == frame.bindf.header
    else:
        assert back.equals(frame)
        assert back.schema.metadata[b"bindf.header"] == frame.schema.metadata[b"bindf.header"]
    assert b"bindf.version" in pq.read_schema(out).metadata


def test_plain_frames_export_too(tmp_path: Path) -> None:
    out = tmp_path / "plain.parquet"
    parquet.to_parquet(pl.DataFrame({"a": [1, 2]}), out)
    assert pl.read_parquet(out)["a"].to_list() == [1, 2]


def test_atomic_output_on_failure_and_interrupt(tmp_path: Path) -> None:
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    for exc in (OSError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), atomic_output(dest) as f:
            f.write(b"partial")
            raise exc
        assert dest.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["dest.bin"]


def test_atomic_output_replaces_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    target = tmp_path / "target.bin"
    target.write_bytes(b"keep me")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    with atomic_output(link) as f:
        f.write(b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert target.read_bytes() == b"keep me"


def test_no_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.write_bytes(b"x")
    with pytest.raises(OutputExistsError), atomic_output(dest, overwrite=False):
        pass
    assert dest.read_bytes() == b"x"


def test_accessor_to_parquet(stt1_files: list[Path], tmp_path: Path) -> None:
    frame = bindf.read(stt1_files[0], output="polars")
    frame.bindf.to_parquet(tmp_path / "a.parquet")
    assert bindf.read_parquet(tmp_path / "a.parquet", output="polars").bindf.header == \
        frame.bindf.header
    pdf = bindf.read(stt1_files[0])
    pdf.bindf.to_parquet(tmp_path / "b.parquet")
    assert pd.read_parquet(tmp_path / "b.parquet").attrs["bindf"]["format"] == "spectro"


def test_accessor_to_parquet_of_a_lazy_frame_and_of_a_frame_without_header(
        stt1_files: list[Path], tmp_path: Path) -> None:
    """A LazyFrame's accessor writes what bindf.to_parquet writes (it refused); a frame
    that lost its metadata is refused by the accessor (the file had no header)."""
    lazy = pl.scan_spectro(stt1_files[0])
    lazy.bindf.to_parquet(tmp_path / "lazy.parquet")
    back = bindf.read_parquet(tmp_path / "lazy.parquet", output="polars")
    assert back.bindf.header == lazy.bindf.header and back.equals(lazy.collect())
    collected = lazy.filter(pl.col("channel") == 0).collect()
    with pytest.raises(ValueError, match="carries no bindf metadata.*pass header="):
        collected.bindf.to_parquet(tmp_path / "lost.parquet")
    assert not (tmp_path / "lost.parquet").exists()
    collected.bindf.to_parquet(tmp_path / "given.parquet", header=lazy.bindf.header)
    assert bindf.read_parquet(tmp_path / "given.parquet").attrs["bindf"]["header"] == \
        lazy.bindf.header


def test_read_parquet_takes_one_column_as_a_str(stt1_files: list[Path], tmp_path: Path) -> None:
    """As every bindf reader: columns="event" is one column (it was read as the list of
    its letters, "unknown column(s) ['e', 'v', ...]")."""
    frame = bindf.read_spectro(stt1_files[0])
    bindf.to_parquet(frame, tmp_path / "x.parquet")
    for output in ("pandas", "polars", "arrow"):
        back = bindf.read_parquet(tmp_path / "x.parquet", columns="event", output=output)
        assert list(back.columns if output != "arrow" else back.column_names) == ["event"]
    back = bindf.read_parquet(tmp_path / "x.parquet", columns=("marker", "event"))
    assert list(back.columns) == ["marker", "event"]


def test_to_parquet_refuses_an_unknown_codec_or_format(stt1_files: list[Path],
                                                       tmp_path: Path) -> None:
    """pyarrow raised its own ArrowException for a codec, mid-write; an unknown format
    name was stored, and read back as that format."""
    frame = bindf.read_spectro(stt1_files[0])
    with pytest.raises(ValueError, match="compression must be one of"):
        bindf.to_parquet(frame, tmp_path / "x.parquet", compression="bogus")
    with pytest.raises(ValueError, match="unknown format 'spectra'; did you mean 'spectro'"):
        bindf.to_parquet(frame, tmp_path / "x.parquet", format="spectra")
    assert not (tmp_path / "x.parquet").exists()
    bindf.to_parquet(frame, tmp_path / "x.parquet", compression="GZIP")
    assert pq.ParquetFile(tmp_path / "x.parquet").metadata.row_group(0).column(0).compression \
        == "GZIP"


def test_read_parquet_gives_the_formats_categories_and_pandas_attrs(
        stt1_files: list[Path], tmp_path: Path) -> None:
    """A file keeps only the categories its rows hold: read_parquet gives the format's
    own (a concat with a fresh read stays categorical). A file that pandas itself wrote
    keeps the header in PANDAS_ATTRS only: every output gets it back."""
    fresh = bindf.read(stt1_files[0])
    categories = fresh["marker"].cat.categories.tolist()
    bindf.to_parquet(pl.read_spectro(stt1_files[0]), tmp_path / "polars.parquet")
    bindf.to_parquet(fresh.iloc[:0], tmp_path / "empty.parquet")
    for name in ("polars.parquet", "empty.parquet"):
        back = bindf.read_parquet(tmp_path / name)
        assert back["marker"].cat.categories.tolist() == categories
        assert pd.concat([fresh, back])["marker"].dtype == fresh["marker"].dtype
        arrow = bindf.read_parquet(tmp_path / name, output="arrow")
        assert arrow.schema.field("marker").type == \
            bindf.read(stt1_files[0], output="arrow").schema.field("marker").type
    assert bindf.read_parquet(tmp_path / "polars.parquet", output="polars").equals(
        bindf.read(stt1_files[0], output="polars"))
    fresh.to_parquet(tmp_path / "by_pandas.parquet")  # pandas' own writer
    for output in ("pandas", "polars", "arrow"):
        back = bindf.read_parquet(tmp_path / "by_pandas.parquet", output=output)
        header = table_info(back)["header"] if output == "arrow" else back.bindf.header
        assert header == fresh.bindf.header


def test_a_frame_read_with_the_pyarrow_backend_round_trips(stt1_files: list[Path],
                                                           tmp_path: Path) -> None:
    """pandas writes pandas metadata it cannot read back for an ArrowDtype dictionary
    column (`marker` of a dtype_backend="pyarrow" read): read_parquet raised pandas'
    TypeError. bindf writes such a column's type as one pandas reads (a categorical),
    and bindf.read_parquet gives it back as written, as every column of a frame
    written from pandas."""
    arrow_backed = bindf.read(stt1_files[0], dtype_backend="pyarrow")
    bindf.to_parquet(arrow_backed, tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(bindf.read_parquet(tmp_path / "a.parquet"), arrow_backed)
    pd.testing.assert_frame_equal(
        bindf.read_parquet(tmp_path / "a.parquet", dtype_backend="pyarrow"), arrow_backed)
    # every backend, and an SP01 wide frame's fixed-size lists ("pyarrow type specific
    # parameters ([256]) in the string is not supported"; numpy_nullable: "data type
    # ... not understood")
    sp01 = Path(bindf.__file__).parent / "samples" / "decay_curves_sp01.bin"
    bindf.to_parquet(bindf.read(sp01, shape="wide", dtype_backend="pyarrow"),
                     tmp_path / "b.parquet")
    for source, name, options in ((stt1_files[0], "a.parquet", {}),
                                  (sp01, "b.parquet", {"shape": "wide"})):
        for backend in (None, "numpy_nullable", "pyarrow"):
            pd.testing.assert_frame_equal(
                bindf.read_parquet(tmp_path / name, dtype_backend=backend),
                # (by default: as written)
                bindf.read(source, dtype_backend=backend or "pyarrow", **options))
    # plain pd.read_parquet reads both files (it raised on their pandas metadata):
    # the category column as a categorical, the histograms as arrays, header in attrs
    plain = pd.read_parquet(tmp_path / "a.parquet")
    assert isinstance(plain["marker"].dtype, pd.CategoricalDtype)
    assert plain["marker"].astype("string").equals(arrow_backed["marker"].astype("string"))
    assert plain.attrs["bindf"]["header"] == arrow_backed.attrs["bindf"]["header"]
    wide = pd.read_parquet(tmp_path / "b.parquet")
    expected = bindf.read(sp01, shape="wide")
    channel = next(c for c in expected.columns if c.startswith("ch"))
    assert [list(v) for v in wide[channel]] == [list(v) for v in expected[channel]]
    # the index the pandas metadata describes comes back with it: stored, or a range
    for rows, name in (([5, 2, 40, 7], "taken.parquet"), (slice(10, 20), "range.parquet")):
        part = arrow_backed.iloc[rows]
        bindf.to_parquet(part, tmp_path / name)
        for backend in (None, "numpy_nullable", "pyarrow"):
            back = bindf.read_parquet(tmp_path / name, dtype_backend=backend)
            assert back.index.tolist() == part.index.tolist()  # (Int64 for numpy_nullable)
            assert list(back.columns) == list(part.columns)


def test_read_parquet_dataset_folder(stt1_files: list[Path], tmp_path: Path) -> None:
    import pyarrow.dataset as ds

    table = bindf.read(stt1_files[0], output="arrow")
    folder = tmp_path / "dataset"
    ds.write_dataset(table, folder, format="parquet")
    back = bindf.read_parquet(folder, output="polars")
    assert back.height == 1000 and back.bindf.format == "spectro"


def test_atomic_output_has_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["20250723_092534_data.apx",
                                  "intensity-tracing-export-data-example.bin",
                                  "sp01_decay_curves_example.bin", "spf1_phasors_example.bin"])
@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_real_samples_round_trip_exactly(data_dir: Path, tmp_path: Path, name: str,
                                         output: str) -> None:
    frame = bindf.read(data_dir / name, output=output)
    out = tmp_path / "x.parquet"
    bindf.to_parquet(frame, out)
    back = bindf.read_parquet(out, output=output)
    if output == "pandas":
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
        assert back.attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
    else:
        assert back.schema == frame.schema and back.equals(frame)
        assert back.bindf.header == frame.bindf.header


def test_a_default_pandas_frames_missing_floats_are_parquet_nulls(tmp_path: Path) -> None:
    """As pandas' own to_parquet: NaN in a numpy float column is pandas' missing value
    (A-STEP's tot_us of a wrong-length frame, a null in the file's Arrow table), written
    as null, so polars, DuckDB and Arrow see the nulls the reader found (they got NaN, and
    polars' mean() was NaN). A pyarrow-backed frame keeps a NaN apart from a null."""
    astep = Path(bindf.__file__).parent / "samples" / "astep_quad_chip_frames.bin"
    arrow = bindf.read(astep, output="arrow")
    missing = arrow.column("tot_us").null_count
    assert missing > 0
    frame = bindf.read(astep)
    assert frame["tot_us"].isna().sum() == missing
    frame.bindf.to_parquet(tmp_path / "default.parquet")
    written = pq.read_table(tmp_path / "default.parquet")
    assert written.column("tot_us").null_count == missing
    assert written.column("tot_us").equals(arrow.column("tot_us"))
    assert pl.read_parquet(tmp_path / "default.parquet")["tot_us"].is_nan().sum() == 0
    pd.testing.assert_frame_equal(bindf.read_parquet(tmp_path / "default.parquet"), frame)
    # the pyarrow backend tells a NaN the data holds from a missing value
    both = pd.DataFrame({"x": pd.arrays.ArrowExtensionArray(pa.array([1.5, float("nan"), None]))})
    bindf.to_parquet(both, tmp_path / "arrow.parquet")
    x = pq.read_table(tmp_path / "arrow.parquet").column("x")
    assert x.null_count == 1 and x.is_nan().to_pylist() == [False, True, None]


@pytest.mark.parametrize("fail_on", [1, 2, 3, "interrupt"])
def test_writer_failing_mid_write_leaves_destination_untouched(
    stt1_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on
) -> None:
    import bindf._atomic as atomic
    import bindf._writing as writing

    frame = bindf.read(stt1_files[0], output="polars")
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "out.bin"
    dest.write_bytes(b"previous content")
    monkeypatch.setattr(writing, "WRITE_CHUNK_ROWS", 100)  # many writes
    real_fdopen = os.fdopen

    class Failing:
        def __init__(self, f):
            self._f, self._writes = f, 0

        def write(self, data):
            self._writes += 1
            if fail_on == "interrupt" and self._writes == 2:
                raise KeyboardInterrupt
            if self._writes == fail_on:
                raise OSError(28, "No space left on device")
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: Failing(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt if fail_on == "interrupt" else OSError):
        bindf.write_spectro(dest, frame)
    assert dest.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path / "out")) == ["out.bin"]


def _atomic_openers():
    from bindf._atomic import atomic_output, atomic_path

    return [atomic_output, atomic_path]


@pytest.mark.parametrize("opener", _atomic_openers())
def test_ctrl_c_as_the_temporary_file_is_created_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opener
) -> None:
    """Ctrl-C lands just after ``os.open`` made the temporary file, before its name got
    back to bindf (seen in programs with other threads, where blocking SIGINT in the
    calling thread does not hold it back)."""
    real_open = os.open

    def made_then_interrupted(path, flags, mode=0o777, **kwargs):
        fd = real_open(path, flags, mode, **kwargs)
        if os.fspath(path).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", made_then_interrupted)
    with pytest.raises(KeyboardInterrupt), opener(tmp_path / "out.bin"):
        pass
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opener", _atomic_openers())
def test_ctrl_c_as_the_temporary_file_name_is_returned_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opener
) -> None:
    import bindf._atomic as atomic

    real = atomic._temporary_file

    def made_then_interrupted(dest: str) -> tuple[int, str]:
        fd, _ = real(dest)
        os.close(fd)
        raise KeyboardInterrupt  # the caller never gets the name

    monkeypatch.setattr(atomic, "_temporary_file", made_then_interrupted)
    with pytest.raises(KeyboardInterrupt), opener(tmp_path / "out.bin"):
        pass
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    # the next output of this thread is unaffected
    with atomic.atomic_output(tmp_path / "next.bin") as f:
        f.write(b"x")
    assert os.listdir(tmp_path) == ["next.bin"]


def test_ctrl_c_while_writing_through_the_api_leaves_nothing(
    stt1_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open
    frame = bindf.read(stt1_files[0])
    out = tmp_path / "out"
    out.mkdir()

    def made_then_interrupted(path, flags, mode=0o777, **kwargs):
        fd = real_open(path, flags, mode, **kwargs)
        if os.fspath(path).startswith(str(out)) and os.fspath(path).endswith(".tmp"):
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", made_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        bindf.to_parquet(frame, out / "x.parquet")
    with pytest.raises(KeyboardInterrupt):
        bindf.write_spectro(out / "x.bin", frame)
    monkeypatch.undo()
    assert os.listdir(out) == []


def test_temporary_file_taken_names_are_skipped_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bindf._atomic as atomic

    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(names))
    (tmp_path / ".out.bin.aaaa.tmp").write_bytes(b"another writer's")
    with pytest.raises(KeyboardInterrupt), atomic.atomic_output(tmp_path / "out.bin") as f:
        f.write(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == [".out.bin.aaaa.tmp"]
    assert (tmp_path / ".out.bin.aaaa.tmp").read_bytes() == b"another writer's"


@pytest.mark.parametrize("write", [
    lambda frame, dest: bindf.write_spectro(dest, frame),
    lambda frame, dest: bindf.to_parquet(frame, dest),
])
def test_output_destination_errors_name_the_destination(stt1_files: list[Path],
                                                        tmp_path: Path, write) -> None:
    frame = bindf.read(stt1_files[0])
    dest = tmp_path / "missing" / "out.x"
    with pytest.raises(FileNotFoundError) as missing:
        write(frame, dest)
    assert missing.value.filename == str(dest)
    assert f"no folder {tmp_path / 'missing'}" in str(missing.value)
    with pytest.raises(ValueError, match=r"^s3://bucket/out\.x: bindf writes "):
        write(frame, "s3://bucket/out.x")
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(IsADirectoryError) as folder:
        write(frame, tmp_path / "a_folder")
    assert folder.value.filename == str(tmp_path / "a_folder")
    (tmp_path / "a_file").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        write(frame, tmp_path / "a_file" / "out.x")
    assert sorted(os.listdir(tmp_path)) == sorted(["a_folder", "a_file"] + [
        p.name for p in stt1_files if p.parent == tmp_path])


def test_a_string_utf8_cannot_encode_names_its_column(tmp_path: Path) -> None:
    """``to_parquet`` goes through the one frame → Arrow conversion of the writers, with
    its errors: a lone surrogate names its column (it was pyarrow's UnicodeEncodeError)
    and nothing is written."""
    frame = pd.DataFrame({"ok": ["a", "b"], "note": ["x", "\ud800"]}, dtype=object)
    with pytest.raises(ValueError, match="column 'note', row 1, holds a string that is not "
                                         "encodable"):
        bindf.to_parquet(frame, tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == []


def test_a_polars_frame_fresh_from_a_read_keeps_the_formats_nullability(tmp_path: Path) -> None:
    """polars declares every column nullable: a Parquet file written from
    ``pl.read_spectro(...)`` declared nothing non-nullable, and read back the
    spectroscopy ``channel`` was numpy ``uint8`` in a file without markers and ``UInt8``
    in one with: its type drifted from file to file of a campaign."""
    sample = Path(bindf.__file__).parent / "samples" / "photon_events_stt1.bin"
    events = pd.read_spectro(sample)
    photons = events[events["marker"].isna()].reset_index(drop=True)
    photons.attrs = events.attrs
    no_markers = tmp_path / "photons.bin"
    bindf.write_spectro(no_markers, photons)
    for source in (sample, no_markers):
        expected = pd.read_spectro(source).dtypes
        written = tmp_path / f"{source.stem}.parquet"
        pl.read_spectro(source).bindf.to_parquet(written)
        assert bindf.read_parquet(written).dtypes.equals(expected)
        assert not pq.read_schema(written).field("event").nullable
        assert pq.read_schema(written).field("channel").nullable


def test_a_scans_lazyframe_is_streamed_to_parquet(tmp_path: Path) -> None:
    """lf.bindf.to_parquet of a bindf scan collected the whole frame first (a 200 MB
    file: 385 MB above the import, now 126); it streams the scan's batches as bindf
    convert does: same rows, dtypes, header, and the scan's n_rows and extra columns."""
    sample = Path(bindf.__file__).parent / "samples" / "photon_events_stt1.bin"
    scan = pl.scan_spectro([sample, sample], n_rows=500, include_file_paths="file",
                           batch_size=64)
    out = tmp_path / "scan.parquet"
    scan.bindf.to_parquet(out)
    assert pq.ParquetFile(out).metadata.num_row_groups > 1  # written batch by batch
    # (Arrow's string, as bindf convert writes it, not the view type polars frames take)
    assert pq.read_schema(out).field("file").type == pa.string()
    expected = bindf.read_spectro([sample, sample], n_rows=500, include_file_paths="file")
    back = bindf.read_parquet(out)
    assert back.equals(expected) and back.dtypes.equals(expected.dtypes)
    assert back.attrs["bindf"]["header"] == expected.attrs["bindf"]["header"]
    replaced = tmp_path / "replaced.parquet"
    scan.bindf.to_parquet(replaced, header={"note": "x"}, overwrite=False)
    assert bindf.read_parquet(replaced).attrs["bindf"]["header"] == {"note": "x"}
    with pytest.raises(OutputExistsError):
        scan.bindf.to_parquet(replaced, overwrite=False)
    with pytest.raises(ValueError, match="carries no bindf metadata"):
        scan.filter(pl.col("channel") == 0).bindf.to_parquet(tmp_path / "x.parquet")


def test_a_folder_of_files_with_other_columns_is_refused_other_types_cast(tmp_path: Path) -> None:
    """pyarrow reads every file of a folder with the first file's schema: a file of other
    columns lost them without a word. Types it casts (int32 beside int64, a column of
    nulls only, a pandas index one file stores) read as before."""
    import pyarrow.parquet as pq

    alike = tmp_path / "alike"
    alike.mkdir()
    pq.write_table(pa.table({"x": pa.array([1, 2], pa.int64()), "note": ["a", "b"]}),
                   alike / "part.0.parquet")
    pq.write_table(pa.table({"x": pa.array([3], pa.int32()), "note": pa.nulls(1)}),
                   alike / "part.1.parquet")
    pq.write_table(pa.Table.from_pandas(pd.DataFrame({"x": [4], "note": ["c"]}, index=[7])),
                   alike / "part.2.parquet")
    read = bindf.read_parquet(alike, output="arrow")
    assert read["x"].to_pylist() == [1, 2, 3, 4]
    assert read["note"].to_pylist() == ["a", "b", None, "c"]
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"x": [1]}), other / "part.0.parquet")
    pq.write_table(pa.table({"x": [2], "y": [3]}), other / "part.1.parquet")
    with pytest.raises(bindf.BindfError, match=r"part.1.parquet: cannot read together with "
                                               r".*part.0.parquet: its columns differ "
                                               r"\(only here: \['y'\]\)"):
        bindf.read_parquet(other)
    assert bindf.read_parquet(other, n_rows=1, output="arrow")["x"].to_pylist() == [1]
