"""Many small files through one glob: the fast path (files held in memory, decoded in
the consuming thread, intact AstroPix runs in one kernel call, units gathered across
files) gives exactly what reading each file on its own gives, warnings and errors
included, with any number of threads."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import bindf
from bindf._frames import info_of
from bindf._inputs import expand_sources
from bindf._source import HOLD_IN_MEMORY_BYTES, Source
from bindf.errors import CorruptDataWarning, TruncatedFileWarning
from bindf.formats import apx
from bindf.frontends.batches import PARALLEL_MIN_FILE_BYTES

SAMPLE = Path(bindf.__file__).parent / "samples" / "astropix_threshold_scan.apx"
MARKER = b"\xfe\xdc\xba"


def _data_offset(data: bytes) -> int:
    return data.index(MARKER)


def _mixed_runs(folder: Path) -> list[str]:
    """A campaign folder with every kind of small run, plus one large one."""
    data = SAMPLE.read_bytes()
    start = _data_offset(data)
    header, body = data[:start], data[start:]
    cut = data.rfind(MARKER, 0, 10_000)
    damaged = bytearray(data)
    damaged[data.index(MARKER, start + 1)] = 0  # the second readout marker
    repeats = PARALLEL_MIN_FILE_BYTES * 2 // len(body) + 1  # > 2 MiB: streamed, in the pool
    runs = {
        "run_00": data,                      # a whole run
        "run_01": data[:cut],                # a shorter run, cut at a readout boundary
        "run_02": header,                    # header only: no readouts at all
        "run_03": data[: len(data) - 25],    # cut inside its last readout
        "run_04": bytes(damaged),            # a bad readout marker
        "run_05": header + body * repeats,   # a large run
        "run_06": data[: data.rfind(MARKER, 0, 20_000)],
        "run_07": data,
    }
    paths = []
    for name, content in runs.items():
        path = folder / f"{name}.apx"
        path.write_bytes(content)
        paths.append(str(path))
    return paths


def _caught(read):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = read()
    return result, [(w.category, w.message.path, str(w.message)) for w in caught
                    if issubclass(w.category, (TruncatedFileWarning, CorruptDataWarning))]


def _one_by_one(paths: list[str], **kwargs) -> tuple[pa.Table, list, dict]:
    """The reference: every file read on its own, one thread, tables concatenated."""
    tables, found, errors = [], [], {}
    for path in paths:
        table, caught = _caught(lambda path=path: bindf.read_apx(
            path, output="arrow", threads=1, **kwargs))
        tables.append(table.replace_schema_metadata(None))
        found.extend(caught)
        for kind, count in info_of(table).get("errors", {}).items():
            errors[kind] = errors.get(kind, 0) + count
    return pa.concat_tables(tables), found, errors


@pytest.mark.parametrize("threads", [1, 2, None])
def test_mixed_glob_equals_files_read_one_by_one(tmp_path, threads):
    paths = _mixed_runs(tmp_path)
    reference, expected_warnings, expected_errors = _one_by_one(paths, on_error="warn")
    table, caught = _caught(lambda: bindf.read_apx(
        str(tmp_path / "*.apx"), output="arrow", threads=threads, on_error="warn"))
    assert table.replace_schema_metadata(None).equals(reference)
    assert caught == expected_warnings
    assert [p for _, p, _ in caught] == [paths[3], paths[4]]
    info = info_of(table)
    assert info["errors"] == expected_errors
    assert info["source"] == paths
    assert info["header"] == bindf.read_header(paths[0])


def test_fast_path_taken_for_intact_small_runs_only(tmp_path, monkeypatch):
    paths = _mixed_runs(tmp_path)
    outcomes: dict[str, bool] = {}
    original = apx.ApxReader._intact_run_units

    def spy(self):
        found = original(self)
        outcomes[Path(self.path).stem] = found is not None
        return found

    monkeypatch.setattr(apx.ApxReader, "_intact_run_units", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bindf.read_apx(paths, output="arrow", on_error="warn")
    # the large run streams; the cut and the damaged ones go through the stream decoder
    assert outcomes == {"run_00": True, "run_01": True, "run_02": True, "run_03": False,
                        "run_04": False, "run_06": True, "run_07": True}


@pytest.mark.parametrize("kwargs", [
    {"columns": ["tot_us", "chip_id", "timestamp"]},
    {"include_file_paths": "file", "row_index_name": "i", "row_index_offset": 3},
    {"n_rows": 1000},
    {"batch_size": 100},
], ids=["projection", "extras", "n_rows", "batch_size"])
def test_options_equal_across_threads_and_paths(tmp_path, kwargs):
    paths = _mixed_runs(tmp_path)
    del paths[3:5]  # no warnings needed here
    glob = str(tmp_path / "*.apx")
    for path in (str(tmp_path / "run_03.apx"), str(tmp_path / "run_04.apx")):
        Path(path).unlink()
    results = [bindf.read_apx(glob, output="arrow", threads=t, **kwargs) for t in (1, 2)]
    # n_rows keeps one stream per file: the path without gathering units
    streamed = bindf.read_apx(glob, output="arrow", threads=1,
                              **{"n_rows": 10**12, **kwargs})
    assert results[0].equals(results[1])
    assert results[0].equals(streamed)
    assert results[0].schema.metadata == results[1].schema.metadata


@pytest.mark.parametrize("batch_size", [1, 97, 300, 10**9])
def test_batch_size_caps_batches_gathered_across_files(tmp_path, batch_size):
    """With a batch_size (chunked reads, and every polars scan, which passes its own),
    small files are still gathered across files, into batches of at most batch_size
    rows; a file with more rows than that is cut. Each row keeps its file."""
    paths = _mixed_runs(tmp_path)
    del paths[3:6]  # only intact small runs: every file goes through the units
    for name in ("run_03", "run_04", "run_05"):
        (tmp_path / f"{name}.apx").unlink()
    glob = str(tmp_path / "*.apx")
    batches = list(bindf.iter_batches(glob, format="apx", batch_size=batch_size,
                                      include_file_paths="file", threads=1))
    whole = bindf.read_apx(glob, output="arrow", include_file_paths="file", threads=1)
    assert all(b.num_rows <= batch_size for b in batches)
    assert pa.Table.from_batches(batches).equals(whole.replace_schema_metadata(None))
    if batch_size == 10**9:
        assert len(batches) == 1  # one group: far fewer than one batch per file


def test_split_keeps_each_rows_file():
    from bindf.frontends.batches import _split

    batch = pa.record_batch({"x": list(range(10))})
    pieces = _split(batch, [("a", 3), ("b", 0), ("c", 5), ("d", 2)], 4)
    assert [p.num_rows for p, _ in pieces] == [4, 4, 2]
    assert [runs for _, runs in pieces] == [[("a", 3), ("c", 1)], [("c", 4)], [("d", 2)]]
    assert pa.Table.from_batches([p for p, _ in pieces]).equals(pa.Table.from_batches([batch]))


def test_polars_scan_of_small_files_gathers_them(tmp_path, monkeypatch):
    """A scan gets polars' batch size (100,000 rows), not one batch per file: the units
    of many small runs become columns once per group, as in an eager read."""
    paths = _mixed_runs(tmp_path)
    del paths[3:6]
    for name in ("run_03", "run_04", "run_05"):
        (tmp_path / f"{name}.apx").unlink()
    groups = []
    original = apx.ApxReader.units_to_batch

    def spy(self, units, columns):
        groups.append(len(units))
        return original(self, units, columns)

    monkeypatch.setattr(apx.ApxReader, "units_to_batch", spy)
    glob = str(tmp_path / "*.apx")
    scanned = pl.scan_apx(glob, include_file_paths="file").collect()
    assert len(groups) == 1
    assert scanned.equals(pl.read_apx(glob, include_file_paths="file"))


def test_pandas_and_polars_outputs_equal_across_threads(tmp_path):
    _mixed_runs(tmp_path)
    (tmp_path / "run_03.apx").unlink()
    (tmp_path / "run_04.apx").unlink()
    glob = str(tmp_path / "*.apx")
    frames = [pd.read_apx(glob, threads=t) for t in (1, 2)]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert frames[0].attrs == frames[1].attrs
    lazy = pl.scan_apx(glob, threads=2).collect()
    assert pl.read_apx(glob, threads=1).equals(lazy)
    assert lazy.equals(pl.from_pandas(frames[0]))


@pytest.mark.parametrize("threads", [1, 2])
def test_errors_name_the_file_whatever_the_threads(tmp_path, threads):
    paths = _mixed_runs(tmp_path)
    with pytest.raises(bindf.CorruptDataError, match="run_04") as raised:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedFileWarning)
            bindf.read_apx(paths, output="arrow", threads=threads)
    assert raised.value.path == paths[4]
    empty = tmp_path / "run_02b.apx"
    empty.write_bytes(b"")
    with pytest.raises(bindf.UnknownFormatError, match="run_02b"):
        bindf.read_apx(paths[:3] + [str(empty)], output="arrow", threads=threads)


def test_small_held_file_is_read_once_into_memory(tmp_path):
    path = tmp_path / "small.apx"
    path.write_bytes(SAMPLE.read_bytes())
    source = Source(str(path))
    with source.held():
        first, second = source.open(), source.open()
        assert first.read() == second.read() == SAMPLE.read_bytes()
        path.write_bytes(b"changed")  # the held bytes are what was read at the start
        with source.open() as again:
            assert again.read(4) == SAMPLE.read_bytes()[:4]
    large = tmp_path / "large.bin"
    large.write_bytes(bytes(HOLD_IN_MEMORY_BYTES + 1))
    (big,) = expand_sources(str(large))
    with big.held():
        with big.open() as f:
            assert hasattr(f, "fileno") and f.fileno() >= 0  # the file itself, not a copy


def test_small_local_files_never_use_the_pool(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    paths = _mixed_runs(tmp_path)
    del paths[5]  # the large run
    (tmp_path / "run_05.apx").unlink()
    submitted = []
    original = ThreadPoolExecutor.submit

    def counting(self, fn, *args, **kwargs):
        submitted.append(getattr(fn, "__name__", fn))
        return original(self, fn, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bindf.read_apx(paths, output="arrow", threads=2, on_error="warn")
    assert submitted == []


SAMPLES = Path(bindf.__file__).parent / "samples"


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.iterdir()
                                          if p.suffix in (".bin", ".apx")))
def test_every_format_small_files_joined_into_one_chunk(tmp_path, sample):
    """Formats that stream their batches get their small files' batches joined (one
    chunk per group), with exactly the rows, types and file paths of the files read one
    by one."""
    paths = []
    for i in range(12):
        path = tmp_path / f"part_{i:02d}{Path(sample).suffix}"
        path.write_bytes((SAMPLES / sample).read_bytes())
        paths.append(str(path))
    one_by_one = pa.concat_tables(
        bindf.read(p, output="arrow", include_file_paths="file").replace_schema_metadata(None)
        for p in paths)
    for threads in (1, 2):
        table = bindf.read(paths, output="arrow", include_file_paths="file", threads=threads)
        assert table.replace_schema_metadata(None).equals(one_by_one)
        assert table.schema.remove_metadata() == one_by_one.schema
    frame = bindf.read(paths, output="polars")
    assert frame.n_chunks() == 1
