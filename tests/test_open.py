"""``bindf.open``: a BindfFile that pandas, polars, pyarrow and DuckDB consume through the
Arrow PyCapsule interface, for every format; and ``dtype_backend`` on pandas output."""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import raises_from_scan
from format_cases import Case

import bindf
from bindf.arrow import table_info
from bindf.frontends.output import table_to_arrow_backed_pandas

duckdb = pytest.importorskip("duckdb")

#: Arrow view types → the plain type bindf gives pandas' ArrowDtype instead.
VIEW_TYPES = {pa.binary_view(): pa.binary(), pa.string_view(): pa.string()} \
    if hasattr(pa, "binary_view") else {}


@pytest.fixture
def cases(format_cases: dict[str, Case]) -> dict[str, Case]:
    return format_cases  # conftest.py: a small file of every format


@pytest.fixture
def case(format_case: Case) -> Case:
    return format_case  # conftest.py: each format in turn


def expected_table(case: Case, **kwargs: Any) -> pa.Table:
    return bindf.read(case.path, output="arrow", **case.kwargs, **kwargs)


def plain(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)


def arrow_column(series: pd.Series) -> pa.ChunkedArray:
    """The Arrow data behind a ``pd.ArrowDtype`` column."""
    values = pa.array(series.array)
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])


def open_case(case: Case, source: Any = None, **kwargs: Any) -> bindf.BindfFile:
    return bindf.open(case.path if source is None else source, **case.kwargs, **kwargs)


# -- BindfFile basics --------------------------------------------------------------------
def test_attributes_and_outputs(case: Case) -> None:
    expected = expected_table(case)
    with open_case(case) as f:
        assert f.format == table_info(expected)["format"]
        assert f.header == table_info(expected)["header"]
        assert f.schema == expected.schema
        assert f.schema.metadata == expected.schema.metadata
        assert f.num_rows in (None, expected.num_rows)
        assert plain(f.to_arrow()).equals(plain(expected))
        pd.testing.assert_frame_equal(f.to_pandas(), bindf.read(case.path, **case.kwargs))
        assert f.to_polars().equals(pl.from_arrow(expected))
        assert f.scan().collect().equals(pl.from_arrow(expected))
        batches = list(f.iter_batches(batch_size=50))
        assert all(b.num_rows <= 50 for b in batches)
        assert all(b.schema.metadata == f.schema.metadata for b in batches)
        assert plain(pa.Table.from_batches(batches)).equals(plain(expected))
    assert f.closed
    for use in (f.to_arrow, f.scan, lambda: pa.table(f)):
        with pytest.raises(ValueError, match="closed BindfFile"):
            use()


def test_progress_bar(cases: dict[str, Case], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    with bindf.open(cases["sp01"].path, progress=True) as f:
        assert f.to_arrow().num_rows == expected_table(cases["sp01"]).num_rows
    assert "rows" in capsys.readouterr().err


def test_num_rows_is_known_for_fixed_records(cases: dict[str, Case]) -> None:
    for name in ("it02_dense", "sp01", "spf1", "spectro_stt1", "records"):
        with open_case(cases[name]) as f:
            assert f.num_rows == expected_table(cases[name]).num_rows, name
    with open_case(cases["apx"]) as f:  # hits are only counted by decoding
        assert f.num_rows is None
    with open_case(cases["sp01"], n_rows=2) as f:
        assert f.num_rows == 2


def test_columns_and_n_rows(case: Case) -> None:
    columns = list(case.projection)
    expected = expected_table(case, columns=columns, n_rows=7)
    with open_case(case, columns=columns, n_rows=7) as f:
        assert f.schema.names == columns
        assert plain(pa.table(f)).equals(plain(expected))
        assert f.scan().collect().equals(pl.from_arrow(expected))


# -- the Arrow PyCapsule interface ---------------------------------------------------------
def test_pa_table_and_record_batch_reader(case: Case) -> None:
    expected = expected_table(case)
    with open_case(case, source=io.BytesIO(case.path.read_bytes())) as f:
        table = pa.table(f)
        assert plain(table).equals(plain(expected))
        assert table_info(table)["header"] == f.header
        reader = pa.RecordBatchReader.from_stream(f)  # a second, independent stream
        assert reader.schema == f.schema
        assert plain(reader.read_all()).equals(plain(expected))


def test_interleaved_passes_are_independent(case: Case,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A second pass started while the first is paused between batches (and a third
    ending while both are paused) reads the whole source too: the passes share the
    held file but never each other's position, and none closes it under another."""
    import bindf._source

    monkeypatch.setattr(bindf._source, "HOLD_IN_MEMORY_BYTES", 0)  # held open, not in memory
    expected = plain(expected_table(case))
    with open_case(case, batch_size=max(1, expected.num_rows // 5)) as f:
        first, second = f.iter_batches(), f.iter_batches()
        got_first, got_second = [next(first)], [next(second)]
        assert plain(f.to_arrow()).equals(expected)  # a whole pass in between
        got_first.append(next(first, None))
        got_first += list(first)  # the first pass ends (and lets go of the file) …
        got_second += list(second)  # … while the second goes on
        for got in (got_first, got_second):
            batches = [b for b in got if b is not None]
            assert plain(pa.Table.from_batches(batches, schema=batches[0].schema)).equals(expected)


def test_stream_is_lazy(cases: dict[str, Case], monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are decoded as the consumer pulls them, not all at once."""
    case = cases["spectro_stt1"]
    with open_case(case, batch_size=100) as f:
        reader = pa.RecordBatchReader.from_stream(f)
        first = reader.read_next_batch()
        assert first.num_rows == 100
        rest = reader.read_all()
    assert first.num_rows + rest.num_rows == expected_table(case).num_rows


def test_requested_schema_projects_and_reorders(case: Case) -> None:
    wanted = list(reversed(case.projection))
    expected = expected_table(case, columns=wanted)
    with open_case(case) as f:
        requested = pa.schema([f.schema.field(n) for n in wanted])
        table = pa.table(f, schema=requested)
        assert table.schema.names == wanted
        assert plain(table).equals(plain(expected))
        reader = pa.RecordBatchReader.from_stream(f, schema=requested)
        assert plain(reader.read_all()).equals(plain(expected))


def test_requested_schema_and_scan_with_the_extra_columns_opened_with(
        cases: dict[str, Case]) -> None:
    """Opened with a row index: a requested schema's columns were taken by position
    from batches that begin with the row index (macrotime_ns held 0, 1, 2 …); a scan of
    an object opened with columns= dropped the row index and the path column."""
    case = cases["spectro_stt1"]
    expected = expected_table(case)
    with bindf.open(case.path, row_index_name="ri", include_file_paths="file") as f:
        for names in (["macrotime_ns"], ["channel", "macrotime_ns"], ["file", "event"]):
            requested = pa.schema([f.schema.field(n) for n in names])
            table = pa.table(f, schema=requested)
            for name in names:
                want = (pa.array([str(case.path)] * expected.num_rows) if name == "file"
                        else expected[name])
                assert table[name].equals(pa.chunked_array([want]).cast(
                    table[name].type)), name
            reader = pa.RecordBatchReader.from_stream(f, schema=requested)
            assert plain(reader.read_all()).equals(plain(table))
    with bindf.open(case.path, columns=["channel"], row_index_name="ri",
                    include_file_paths="file") as f:
        assert f.scan().collect().columns == f.to_polars().columns == ["ri", "channel", "file"]
        assert f.scan().collect().equals(f.to_polars())
    with bindf.open(case.path, n_rows=2) as f:  # (polars lost a head() on the scan)
        assert f.scan().with_row_index("j").select("channel").head(10).collect().height == 2


def test_requested_schema_casts(cases: dict[str, Case]) -> None:
    case = cases["spectro_stt1"]
    with open_case(case) as f:
        requested = pa.schema([("macrotime_ns", pa.float32()), ("channel", pa.int64())])
        table = pa.table(f, schema=requested)
    assert table.schema.remove_metadata() == requested
    expected = expected_table(case, columns=["macrotime_ns", "channel"])
    assert table["macrotime_ns"].equals(expected["macrotime_ns"].cast(pa.float32()))
    assert table["channel"].equals(expected["channel"].cast(pa.int64()))


def test_requested_schema_with_an_uncastable_type_keeps_the_native_one(
        cases: dict[str, Case]) -> None:
    with open_case(cases["sp01"]) as f:
        requested = pa.schema([("channel", pa.list_(pa.int8()))])
        reader = f.to_batch_reader(requested)
        assert reader.schema.field("channel").type == f.schema.field("channel").type


def test_requested_schema_with_values_that_do_not_fit(cases: dict[str, Case]) -> None:
    """A cast Arrow supports but that would change values is refused, naming the column
    (Arrow's own error did not say which)."""
    with open_case(cases["spectro_stt1"]) as f:
        requested = pa.schema([("macrotime_ns", pa.int8())])
        with pytest.raises(ValueError, match=r"column 'macrotime_ns': a value does not fit "
                                             r"the requested type int8"):
            f.to_batch_reader(requested).read_all()
        with pytest.raises(ValueError, match="column 'macrotime_ns'"):
            pa.table(f, schema=requested)
        assert f.to_arrow().num_rows > 0  # the file is still usable


def test_requested_schema_without_columns_or_naming_one_twice(cases: dict[str, Case]) -> None:
    """An empty request kept no rows (columns=[] keeps them); a request naming a column
    twice, which Arrow allows, was a KeyError saying the column did not exist."""
    case = cases["spectro_stt1"]
    expected = expected_table(case)
    with open_case(case, batch_size=100) as f:
        empty = pa.table(f, schema=pa.schema([]))
        assert empty.num_columns == 0 and empty.num_rows == expected.num_rows
        twice = pa.table(f, schema=pa.schema([("event", pa.uint16()), ("event", pa.uint8())]))
    assert twice.schema.names == ["event", "event"] and twice.num_rows == expected.num_rows
    assert twice.column(1).equals(expected["event"].cast(pa.uint8()))
    assert twice.column(0).equals(expected["event"].cast(pa.uint16()))


def test_requested_schema_with_an_unknown_column(cases: dict[str, Case]) -> None:
    with open_case(cases["sp01"]) as f, pytest.raises(ValueError, match=r"\['nope'\]"):
        pa.table(f, schema=pa.schema([("nope", pa.int8())]))


# -- DuckDB ------------------------------------------------------------------------------
def test_duckdb_select_star(case: Case) -> None:
    expected = expected_table(case)
    with open_case(case, source=io.BytesIO(case.path.read_bytes())) as f:  # noqa: F841 - DuckDB finds f by name
        relation = duckdb.sql("SELECT * FROM f")
        assert relation.columns == expected.column_names
        rows = relation.fetchall()
    assert rows == list(zip(*(expected[name].to_pylist() for name in expected.column_names)))


def test_duckdb_projection_and_aggregate(case: Case) -> None:
    column = case.projection[0]
    expected = expected_table(case, columns=[column])
    with open_case(case) as f:  # noqa: F841 - DuckDB finds f by name
        [(count, distinct)] = duckdb.sql(
            f'SELECT count(*), count(DISTINCT "{column}") FROM f').fetchall()
    assert count == expected.num_rows
    assert distinct == len(expected[column].drop_null().unique())


def test_duckdb_multi_file_query(cases: dict[str, Case], tmp_path: Path) -> None:
    """The documented recipe: several runs in one query, grouped by file."""
    data = cases["apx"].path.read_bytes()
    for i in range(3):
        (tmp_path / f"run{i}.apx").write_bytes(data)
    hits = expected_table(cases["apx"]).num_rows
    with bindf.open(str(tmp_path / "run*.apx"), include_file_paths="file",
                    columns=["file", "chip_id", "tot_us"]) as runs:  # noqa: F841
        rows = duckdb.sql(
            "SELECT file, count(*) AS hits, avg(tot_us) AS mean_tot FROM runs "
            "GROUP BY file ORDER BY file").fetchall()
    assert [(Path(f).name, n) for f, n, _ in rows] == [(f"run{i}.apx", hits) for i in range(3)]
    mean_tot = float(np.mean(expected_table(cases["apx"])["tot_us"].to_numpy()))
    assert all(abs(m - mean_tot) < 1e-9 for _, _, m in rows)


def test_no_columns_keep_the_row_count(case: Case) -> None:
    """``columns=[]`` asks for the row count: every output has the rows, no columns
    (pyarrow's replace_schema_metadata drops the height of such a table)."""
    rows = expected_table(case).num_rows
    assert bindf.read(case.path, columns=[], output="arrow", **case.kwargs).num_rows == rows
    assert len(bindf.read(case.path, columns=[], **case.kwargs)) == rows
    if pl.DataFrame({"a": [1]}).drop("a").height == 1:  # (older polars: no such height)
        assert bindf.read(case.path, columns=[], output="polars", **case.kwargs).height == rows
    chunks = bindf.read(case.path, columns=[], output="arrow", chunksize=7, **case.kwargs)
    assert sum(chunk.num_rows for chunk in chunks) == rows
    with open_case(case, columns=[]) as f:
        assert f.to_arrow().num_rows == rows and pa.table(f).num_rows == rows


def test_a_file_replaced_since_it_was_opened_is_an_error(tmp_path: Path) -> None:
    """A BindfFile and a scan read their sources again on every pass, under the columns
    they found when made: a run written anew under the same name with other channels
    gave its values under the old names (or a polars error). Now a bindf error names
    the file and both column lists; the same columns again read as usual."""
    import shutil

    def run(path: Path, channels: list[int], values: list[int]) -> Path:
        frame = pd.DataFrame({"time_ns": np.arange(1.0, 51.0) * 1e6}
                             | {f"ch{c + 1}": np.full(50, v, "u4")
                                for c, v in zip(channels, values)})
        bindf.write_it02(path, frame, header={"channels": channels}, layout="dense")
        return path

    first = run(tmp_path / "a.bin", [1, 3, 4], [2, 4, 5])
    second = run(tmp_path / "b.bin", [0, 1, 2], [1, 222, 3])
    live = tmp_path / "live.bin"
    shutil.copy(first, live)
    opened, lazy = bindf.open(live), pl.scan_it02(live)
    shutil.copy(second, live)
    changed = r"its columns changed since it was opened \(time_ns: double, ch1: uint32"
    for consume in (lambda: pa.table(opened), opened.to_pandas, opened.iter_batches,
                    lambda: pa.RecordBatchReader.from_stream(opened)):
        with pytest.raises(bindf.BindfError, match=changed) as caught:
            consume()
        assert caught.value.path == str(live)
    for collect in (lambda: lazy.select("ch2").collect(), lazy.collect):
        with raises_from_scan(bindf.BindfError, match=changed, path=live):
            collect()
    # a scan that skips the first file by its path: that file's columns are the scan's
    both = pl.scan_it02([first, live], include_file_paths="file")
    with raises_from_scan(bindf.BindfError, match=f"cannot read together with {first}"):
        both.filter(pl.col("file") == str(live)).collect()
    shutil.copy(first, live)
    assert pa.table(opened).equals(bindf.read(first, output="arrow").replace_schema_metadata(
        pa.table(opened).schema.metadata))
    assert lazy.collect().equals(bindf.read(first, output="polars"))


# -- dtype_backend -----------------------------------------------------------------------
def test_dtype_backend_pyarrow(case: Case) -> None:
    expected = expected_table(case)
    frame = bindf.read(case.path, dtype_backend="pyarrow", **case.kwargs)
    assert list(frame.columns) == expected.column_names
    for name in expected.column_names:
        column = expected[name]
        if column.type in VIEW_TYPES:  # pandas' ArrowDtype has none: cast (A-STEP sensor)
            column = column.cast(VIEW_TYPES[column.type])
        assert isinstance(frame[name].dtype, pd.ArrowDtype), name
        assert frame[name].dtype.pyarrow_dtype == column.type
        assert arrow_column(frame[name]).equals(column), name
    repr(frame)  # every column type is one pandas can show
    assert frame.attrs["bindf"] == bindf.read(case.path, **case.kwargs).attrs["bindf"]
    assert isinstance(frame.index, pd.RangeIndex) and len(frame) == expected.num_rows


def test_dtype_backend_numpy_nullable_as_pandas_readers_give_it(case: Case) -> None:
    """``"numpy_nullable"`` is pandas' option: every integer, float and boolean column
    masked (``UInt32``, ``Float64``, ``boolean``), as ``pd.read_parquet`` gives for the
    same table; the values and nulls are the default read's."""
    import io

    import pyarrow.parquet as pq

    table = expected_table(case)
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), buffer)
    buffer.seek(0)
    theirs = pd.read_parquet(buffer, dtype_backend="numpy_nullable")
    ours = bindf.read(case.path, dtype_backend="numpy_nullable", **case.kwargs)
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=True)
    default = bindf.read(case.path, **case.kwargs)
    assert ours.attrs["bindf"] == default.attrs["bindf"]
    numeric = [c for c in default.columns if default[c].dtype.kind in "biuf"]
    assert numeric and all(isinstance(ours[c].dtype, pd.api.extensions.ExtensionDtype)
                           for c in numeric)
    for name in numeric:
        assert ours[name].isna().equals(default[name].isna()), name


def test_dtype_backend_everywhere(cases: dict[str, Case]) -> None:
    case = cases["spectro_stt1"]
    frame = pd.read_spectro(case.path, dtype_backend="pyarrow")
    assert all(isinstance(t, pd.ArrowDtype) for t in frame.dtypes)
    chunks = list(bindf.read(case.path, chunksize=100, dtype_backend="pyarrow"))
    assert all(isinstance(t, pd.ArrowDtype) for c in chunks for t in c.dtypes)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), frame)
    with bindf.open(case.path) as f:
        pd.testing.assert_frame_equal(f.to_pandas(dtype_backend="pyarrow"), frame)


def test_dtype_backend_on_dask(cases: dict[str, Case]) -> None:
    pytest.importorskip("dask.dataframe")
    import bindf.dask

    case = cases["spectro_stt1"]
    eager = bindf.read(case.path, dtype_backend="pyarrow")
    ddf = bindf.dask.read_spectro(case.path, dtype_backend="pyarrow")
    assert all(isinstance(t, pd.ArrowDtype) for t in ddf._meta.dtypes)
    got = ddf.compute(scheduler="sync").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, eager, check_categorical=False)
    with pytest.raises(ValueError, match="dtype_backend must be one of"):
        bindf.dask.read(case.path, dtype_backend="numpy")


def test_dtype_backend_on_read_parquet(cases: dict[str, Case], tmp_path: Path) -> None:
    # Written from Arrow output, the file holds bindf's own schema (a pandas frame
    # would bring pandas' string type into the dictionary column).
    frame = bindf.read(cases["spectro_stt1"].path)
    bindf.to_parquet(bindf.read(cases["spectro_stt1"].path, output="arrow"),
                     tmp_path / "photons.parquet")
    back = bindf.read_parquet(tmp_path / "photons.parquet", dtype_backend="pyarrow")
    assert all(isinstance(t, pd.ArrowDtype) for t in back.dtypes)
    assert back.attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
    direct = bindf.read(cases["spectro_stt1"].path, dtype_backend="pyarrow")
    pd.testing.assert_frame_equal(back, direct)


def test_dtype_backend_pyarrow_does_not_copy() -> None:
    table = pa.table({"a": pa.chunked_array([np.arange(5), np.arange(3)]),
                      "s": pa.array(["x", None, "z", "w", "v", "u", "t", "r"])})
    frame = table_to_arrow_backed_pandas(table)
    for name in table.column_names:
        ours = arrow_column(frame[name])
        assert [c.buffers()[1].address for c in ours.chunks] == \
               [c.buffers()[1].address for c in table[name].chunks]


def test_dtype_backend_errors(cases: dict[str, Case]) -> None:
    path = cases["sp01"].path
    with pytest.raises(ValueError, match="dtype_backend must be one of"):
        bindf.read(path, dtype_backend="numpy")
    with pytest.raises(ValueError, match="pandas output only"):
        bindf.read(path, output="polars", dtype_backend="pyarrow")


def test_dtype_backend_through_the_generated_functions(case: Case) -> None:
    """``read_<format>``, ``pd.read_<format>`` (built-ins and test plugins) take the
    parameter from the one COMMON table; polars output and scans do not show it."""
    options = {k: v for k, v in case.kwargs.items() if k != "format"}
    with bindf.open(case.path, **case.kwargs) as f:
        name = f.format
    expected = bindf.read(case.path, dtype_backend="pyarrow", **case.kwargs)
    if name == "records":  # not generated (its layout is per call): passes it on to read
        layout = {k: v for k, v in options.items() if k != "dtype"}
        pd.testing.assert_frame_equal(
            bindf.read_records(case.path, options["dtype"], dtype_backend="pyarrow", **layout),
            expected)
        return
    for function in (getattr(bindf, f"read_{name}"), getattr(pd, f"read_{name}")):
        assert "dtype_backend" in inspect.signature(function).parameters
        pd.testing.assert_frame_equal(function(case.path, dtype_backend="pyarrow", **options),
                                      expected)
    for function in (getattr(pl, f"read_{name}"), getattr(bindf, f"scan_{name}")):
        assert "dtype_backend" not in inspect.signature(function).parameters
        with pytest.raises(TypeError, match="dtype_backend"):
            function(case.path, dtype_backend="pyarrow", **options)
    with pytest.raises(ValueError, match="pandas output only"):
        getattr(bindf, f"read_{name}")(case.path, output="arrow", dtype_backend="pyarrow",
                                       **options)


def test_open_signature_comes_from_the_parameter_table() -> None:
    from bindf._params import parameters

    shown = inspect.signature(bindf.open).parameters
    assert list(shown)[:2] == ["source", "format"]
    assert list(shown)[2:-1] == [p.name for p in parameters("open")]
    assert not {"output", "chunksize", "dtype_backend"} & set(shown)


def test_open_refuses_output_choices_and_hints_pandas_names(cases: dict[str, Case]) -> None:
    path = cases["sp01"].path
    with pytest.raises(TypeError, match="to_pandas"):
        bindf.open(path, dtype_backend="pyarrow")
    with pytest.raises(TypeError, match="n_rows"):
        bindf.open(path, nrows=5)
    with bindf.open(path, n_rows=7, columns=["channel"]) as f:
        assert f.to_pandas(dtype_backend="pyarrow").shape == (7, 1)
