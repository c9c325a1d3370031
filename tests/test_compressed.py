"""Compressed files (``run.apx.gz``, ``.bz2``, ``.xz``, ``.zst``) are read decompressed,
as pandas' readers infer a file's compression from its name: every format, every entry
point, equal to the read of the plain file; a cut file warns and keeps what came before
the cut, damaged data is a bindf error naming the file."""

from __future__ import annotations

import bz2
import gc
import gzip
import lzma
import pickle
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from conftest import repeated_apx_run
from format_cases import Case

import bindf
from bindf import _compressed
from bindf._compressed import COMPRESSIONS, DecompressedSource
from bindf._inputs import expand_sources
from bindf.arrow import table_info
from bindf.frontends import batches

zstandard = pytest.importorskip("zstandard")  # the [test] extra installs it

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def compressed(path: Path, suffix: str = ".gz", data: bytes | None = None) -> Path:
    """``path`` compressed next to itself (``run.apx`` → ``run.apx.gz``)."""
    target = path.with_name(path.name + suffix)
    target.write_bytes(COMPRESSORS[suffix](path.read_bytes() if data is None else data))
    return target


def test_every_compression_bindf_infers_is_tested() -> None:
    assert set(COMPRESSORS) == set(COMPRESSIONS)


def test_every_format_reads_compressed_as_plain(format_case: Case) -> None:
    """Detection (by magic, by the extension under the suffix: ``run.log.gz`` is a log,
    or by a probe), header and rows: all as from the plain file."""
    case = format_case
    expected = bindf.read(case.path, output="arrow", **case.kwargs)
    packed = compressed(case.path)
    got = bindf.read(packed, output="arrow", **case.kwargs)
    assert got.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))
    assert table_info(got)["header"] == table_info(expected)["header"]
    assert table_info(got)["source"] == str(packed)


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_each_compression_and_concatenated_streams(data_dir: Path, tmp_path: Path,
                                                   suffix: str) -> None:
    run = tmp_path / "run.apx"
    run.write_bytes((data_dir / "20250723_092534_data.apx").read_bytes())
    expected = bindf.read_apx(run, output="arrow")
    got = bindf.read_apx(compressed(run, suffix), output="arrow")
    assert got.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))
    assert table_info(got)["header"] == table_info(expected)["header"]
    # Concatenated streams (`cat a.gz b.gz`, pigz, pbzip2) and zero padding after them,
    # as the command-line tools read them.
    data = run.read_bytes()
    half = len(data) // 2
    joined = tmp_path / f"joined.apx{suffix}"
    joined.write_bytes(COMPRESSORS[suffix](data[:half]) + COMPRESSORS[suffix](data[half:])
                       + bytes(16))
    got = bindf.read_apx(joined, output="arrow")
    assert got.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))


def test_globs_lists_scans_and_file_paths(data_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "a.apx"
    plain.write_bytes((data_dir / "20250723_092534_data.apx").read_bytes())
    packed = compressed(plain, ".gz")
    compressed(plain, ".xz")
    one = bindf.read_apx(plain)
    both = bindf.read_apx(str(tmp_path / "a.apx*"), include_file_paths="file")
    assert both["file"].unique().tolist() == [str(plain), str(packed), str(packed)[:-3] + ".xz"]
    assert len(both) == 3 * len(one)
    scan = pl.scan_apx(str(tmp_path / "*.gz")).filter(pl.col("chip_id") == 0).select("tot_us")
    assert scan.collect()["tot_us"].to_list() == one.loc[one["chip_id"] == 0, "tot_us"].tolist()
    chunks = list(bindf.read_apx([packed, plain], chunksize=100))
    assert sum(len(c) for c in chunks) == 2 * len(one)
    with bindf.open(packed) as f:
        assert pa.table(f).num_rows == len(one)
    assert bindf.read_header(packed) == bindf.read_header(plain)
    assert bindf.read_headers([plain, packed])["readout_uid"].nunique() == 1


def test_cut_file_warns_and_keeps_what_came_before_the_cut(data_dir: Path,
                                                           tmp_path: Path) -> None:
    run = tmp_path / "run.apx"
    run.write_bytes((data_dir / "20250723_092534_data.apx").read_bytes())
    whole = bindf.read_apx(run)
    packed = compressed(run, ".gz")
    cut = tmp_path / "cut.apx.gz"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size * 3 // 4])
    with pytest.warns(bindf.TruncatedFileWarning) as caught:
        got = bindf.read_apx(cut)
    messages = [str(w.message) for w in caught]
    assert any("gzip file ends before its compressed data does" in m and str(cut) in m
               for m in messages)
    assert 0 < len(got) < len(whole)
    assert got.equals(whole.iloc[: len(got)])  # a prefix of the rows, each exact


def test_damaged_data_is_a_bindf_error_naming_the_file(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.apx"
    run.write_bytes((data_dir / "20250723_092534_data.apx").read_bytes())
    data = bytearray(compressed(run, ".gz").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 32] = b"\x55" * 32
    damaged = tmp_path / "damaged.apx.gz"
    damaged.write_bytes(bytes(data))
    with pytest.raises(bindf.CorruptDataError, match="cannot decompress this gzip file") as info:
        bindf.read_apx(damaged)
    assert info.value.path == str(damaged) and info.value.offset == 0
    not_gzip = tmp_path / "plain.apx.gz"  # named .gz, but not compressed
    not_gzip.write_bytes(run.read_bytes())
    with pytest.raises(bindf.CorruptDataError, match="incorrect header check"):
        bindf.read_apx(not_gzip)


class CopyCounter:
    """Counts the temporary copies of compressed files: made, alive, most alive at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made = self.alive = self.most = 0
        copy_class = _compressed._DecompressedCopy
        made = copy_class.__init__

        def init(copy: object, spool: object) -> None:
            made(copy, spool)
            self.made += 1
            self.alive += 1
            self.most = max(self.most, self.alive)
            weakref.finalize(copy, self._freed)

        monkeypatch.setattr(copy_class, "__init__", init)

    def _freed(self) -> None:
        self.alive -= 1

    def reset(self) -> None:
        gc.collect()
        self.made, self.most = 0, self.alive


@pytest.fixture
def six_runs(data_dir: Path, tmp_path: Path) -> tuple[str, pa.Table]:
    """A glob of six compressed runs, and what reading them plain gives."""
    data = (data_dir / "20250723_092534_data.apx").read_bytes()
    for i in range(6):
        (tmp_path / f"run{i}.apx").write_bytes(data)
        compressed(tmp_path / f"run{i}.apx", ".gz")
    plain = bindf.read_apx(str(tmp_path / "*.apx"), output="arrow")
    return str(tmp_path / "*.apx.gz"), plain


@pytest.mark.parametrize("threads", [1, 2])
def test_each_file_is_decompressed_in_its_turn_and_let_go(
        six_runs: tuple[str, pa.Table], monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """A glob costs nothing until each file's turn; a read keeps the copies of the files
    it is decoding (at most one per thread, and the one the consumer reads), not all."""
    pattern, plain = six_runs
    copies = CopyCounter(monkeypatch)
    sources = expand_sources(pattern)
    stored = (Path(pattern).parent / "run0.apx.gz").stat().st_size
    assert copies.made == 0 and [s.planning_size for s in sources] == [4 * stored] * 6
    assert repr(sources[0]).endswith("size=not decompressed yet)")
    got = bindf.read_apx(pattern, output="arrow", threads=threads)
    assert got.replace_schema_metadata(None).equals(plain.replace_schema_metadata(None))
    gc.collect()
    # each file once (the first file's header and rows share one copy), none kept
    assert (copies.made, copies.alive) == (6, 0) and 1 <= copies.most <= threads + 1
    copies.reset()
    streamed = pa.Table.from_batches(bindf.iter_batches(pattern, threads=threads))
    assert streamed.replace_schema_metadata(None).equals(plain.replace_schema_metadata(None))
    gc.collect()
    assert (copies.made, copies.alive, copies.most) == (6, 0, 1)


def test_a_scan_decompresses_what_its_query_reads(six_runs: tuple[str, pa.Table],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pattern, plain = six_runs
    copies = CopyCounter(monkeypatch)
    scan = pl.scan_apx(pattern)
    assert copies.made == 1  # the first file: its header gives the schema
    head = scan.head(3).collect()  # rows of the first file only: its copy, read once
    gc.collect()
    assert (copies.made, copies.alive) == (1, 0)
    assert head.to_arrow().equals(pl.from_arrow(plain.slice(0, 3)).to_arrow())
    copies.reset()
    assert scan.collect().height == plain.num_rows  # collected again: decompressed again
    gc.collect()
    assert (copies.made, copies.alive) == (6, 0)


def test_one_scan_collected_by_threads_at_once(six_runs: tuple[str, pa.Table]) -> None:
    """The copies are held and let go by every thread reading them: none is let go
    under another thread's read."""
    pattern, plain = six_runs
    scan = pl.scan_apx(pattern, threads=1)
    with ThreadPoolExecutor(4) as pool:
        frames = list(pool.map(lambda _: scan.collect(), range(8)))
    expected = pl.from_arrow(plain)
    for frame in frames:
        assert frame.equals(expected)


def test_a_streamed_read_plans_memory_with_sizes_it_knows(tmp_path: Path) -> None:
    """A file that compresses well (zeros: 50 MB in 50 KB) is not taken for a small one
    by a streamed read, which decodes files ahead only when each is known to be small."""
    from bindf.frontends.batches import ReadPlan

    for i in range(3):
        compressed(tmp_path / f"z{i}.bin", ".gz", data=bytes(50 << 20))
    plan = ReadPlan.from_kwargs(str(tmp_path / "z*.bin.gz"), format="it01", threads=2)
    assert plan.sources[1].planning_size < 1 << 20 and plan.sources[1].known_size == -1
    assert not plan._parallel_files()  # streamed one after the other, not three ahead


def test_warnings_of_cut_files_come_in_file_order(data_dir: Path, tmp_path: Path) -> None:
    """Files decompressed on the pool warn of their cut in file order, each before the
    warnings of its rows, whatever thread finished first."""
    data = (data_dir / "it01_intensity-tracing-export-data-example.bin").read_bytes() * 8
    for i in range(4):
        packed = gzip.compress(data)
        (tmp_path / f"run{i}.bin.gz").write_bytes(packed[: len(packed) * 3 // 4])
    for _ in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bindf.read(str(tmp_path / "*.bin.gz"), format="it01", output="arrow", threads=2)
        gzip_cuts = [w.message.path for w in caught if "gzip file ends" in str(w.message)]
        assert gzip_cuts == [str(tmp_path / f"run{i}.bin.gz") for i in range(4)]
        paths = [w.message.path for w in caught]
        assert paths == sorted(paths)  # a file's own warnings follow its cut's


def test_counting_rows_lets_each_copy_go(data_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = (data_dir / "it01_intensity-tracing-export-data-example.bin").read_bytes()
    for i in range(4):
        (tmp_path / f"run{i}.bin.gz").write_bytes(gzip.compress(data))
    copies = CopyCounter(monkeypatch)
    with bindf.open(str(tmp_path / "*.bin.gz"), format="it01") as f:
        assert f.num_rows == 4 * bindf.read_it01(data).shape[0]
        gc.collect()
        assert copies.made == 4 and copies.alive <= 1  # (the first's, for the header)


def _write_bz2_runs(data_dir: Path, tmp_path: Path, damaged: tuple[int, ...]) -> None:
    """``run0.apx.bz2`` … ``run2.apx.bz2`` in ``tmp_path``: 1 MB AstroPix runs (the real
    sample's readouts 40 times), those of ``damaged`` with a readout near the end
    damaged (an error under ``on_error="raise"``)."""
    for i in range(3):
        run = repeated_apx_run(40, damaged="last" if i in damaged else None)
        (tmp_path / f"run{i}.apx.bz2").write_bytes(bz2.compress(run))


@pytest.mark.parametrize("on_the_pool", [False, True])
@pytest.mark.parametrize(("damaged", "n_rows"),
                         [((1,), None), ((0,), 40_000), ((0, 1, 2), None), ((1, 2), None)])
def test_a_parallel_read_that_ends_in_an_error_lets_every_copy_go_with_it(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        damaged: tuple[int, ...], n_rows: int | None, on_the_pool: bool) -> None:
    """A read on two threads decodes the next files ahead; when an error ends it (here
    the damaged readout near the end of a 1 MB run, within ``n_rows``), the copies of
    the files it read or dropped go as soon as the error goes, without the garbage
    collector (disabled here) and without a ``ResourceWarning``: the error's traceback
    holds the frames that decoded and handed out the files, and nothing they hold may
    hold the error (a cycle, which kept a large run's temporary file on disk until the
    collector ran), nor the errors of files decoded ahead and dropped. The runs compress
    to ~30 KB, which a read decodes inline; ``on_the_pool``: as large files are."""
    if on_the_pool:
        monkeypatch.setattr(batches, "PARALLEL_MIN_FILE_BYTES", 0)
    _write_bz2_runs(data_dir, tmp_path, damaged)
    copies = CopyCounter(monkeypatch)
    gc.collect()
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                with pytest.raises(bindf.errors.CorruptDataError):
                    bindf.read(str(tmp_path / "run*"), output="arrow", threads=2,
                               n_rows=n_rows)
            alive_with_the_collector_off = copies.alive
    finally:
        gc.enable()
    assert copies.made >= 2 and alive_with_the_collector_off == 0
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_damaged_file_decoded_ahead_and_dropped_lets_its_copy_go(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files 1 and 2 damaged, file 2 decoded ahead (file 1's task waits for it) and
    dropped when file 1's error ends the read: its copy goes with the error, the
    collector off (its own error's traceback held the result that held the error)."""
    monkeypatch.setattr(batches, "PARALLEL_MIN_FILE_BYTES", 0)  # (not inline: ~30 KB each)
    _write_bz2_runs(data_dir, tmp_path, damaged=(1, 2))
    decode = batches.ReadPlan._decode_whole_file
    last_decoded = threading.Event()
    decoded = []

    def file_1_after_file_2(plan: batches.ReadPlan, index: int, *args: Any,
                            **kwargs: Any) -> Any:
        if index == 1:
            assert last_decoded.wait(30)
        result = decode(plan, index, *args, **kwargs)
        decoded.append((index, result.error is not None))
        if index == 2:
            last_decoded.set()
        return result

    monkeypatch.setattr(batches.ReadPlan, "_decode_whole_file", file_1_after_file_2)
    copies = CopyCounter(monkeypatch)
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(bindf.errors.CorruptDataError) as raised:
            bindf.read(str(tmp_path / "run*"), output="arrow", threads=2)
        assert "run1" in str(raised.value)
        del raised
        alive_with_the_collector_off = copies.alive
    finally:
        gc.enable()
    assert sorted(decoded) == [(0, False), (1, True), (2, True)]
    assert copies.made == 3 and alive_with_the_collector_off == 0


def test_an_archive_member_pickles_with_its_filesystem(data_dir: Path, tmp_path: Path) -> None:
    """A compressed member of a zip (``zip://run.apx.gz::runs.zip``: the URL ends in
    .zip) travels to dask worker processes with the filesystem that reads it."""
    pytest.importorskip("fsspec")
    import zipfile

    data = (data_dir / "20250723_092534_data.apx").read_bytes()
    with zipfile.ZipFile(tmp_path / "runs.zip", "w") as archive:
        archive.writestr("run.apx.gz", gzip.compress(data))
    (source,) = expand_sources(f"zip://*.apx.gz::{tmp_path / 'runs.zip'}")
    again = pickle.loads(pickle.dumps(source))
    assert isinstance(again, DecompressedSource) and again.path == source.path
    with again.open() as f:
        assert f.read() == data


def test_header_reads_let_each_copy_go(six_runs: tuple[str, pa.Table],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pattern, plain = six_runs
    copies = CopyCounter(monkeypatch)
    headers = bindf.read_headers(pattern)
    gc.collect()
    assert (copies.made, copies.alive, copies.most) == (6, 0, 1)
    assert headers["format"].tolist() == ["apx"] * 6
    plain_size = (Path(pattern).parent / "run0.apx").stat().st_size
    assert headers["size_bytes"].tolist() == [plain_size] * 6  # decompressed sizes


def test_pickles_by_name_for_dask(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run.apx"
    run.write_bytes((data_dir / "20250723_092534_data.apx").read_bytes())
    packed = compressed(run, ".bz2")
    (source,) = expand_sources(packed)
    assert isinstance(source, DecompressedSource)
    again = pickle.loads(pickle.dumps(source))
    assert (again.path, again.size) == (source.path, source.size)
    with again.open() as f, source.open() as g:
        assert f.read() == g.read() == run.read_bytes()
    import bindf.dask

    assert bindf.dask.read_apx(str(packed)).compute().equals(bindf.read_apx(run))
    # fixed-size records: one partition per compressed file (each task decompresses it)
    records = run.with_name("it01.bin")
    records.write_bytes((data_dir / "it01_intensity-tracing-export-data-example.bin")
                        .read_bytes())
    ddf = bindf.dask.read_it01(str(compressed(records, ".gz")), blocksize=4000)
    assert ddf.npartitions == 1 and bindf.dask.read_it01(str(records), blocksize=4000
                                                         ).npartitions > 1
    assert ddf.compute().equals(bindf.read_it01(records))


def test_remote_compressed_files(data_dir: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    data = (data_dir / "20250723_092534_data.apx").read_bytes()
    fs = fsspec.filesystem("memory")
    fs.pipe("/compressed/run.apx.gz", gzip.compress(data))
    expected = bindf.read_apx(data)
    assert bindf.read_apx("memory://compressed/run.apx.gz").equals(expected)
    assert bindf.read_apx("memory://compressed/*.gz").equals(expected)



@pytest.mark.parametrize("suffix, compression", [(".gz", "gzip"), (".bz2", "bz2"),
                                                 (".xz", "xz"), (".zst", "zstd")])
def test_a_compressed_fsspec_open_file_reads_as_its_path_does(data_dir: Path, suffix: str,
                                                              compression: str) -> None:
    """``fsspec.open(url, compression=...)``: bindf opened it and read fsspec's
    decompressing file, so a cut file raised a bare EOFError and damaged data
    gzip.BadGzipFile (no name, no row). It is decompressed as a path of that name is:
    a cut keeps every row before it, with the same warning; damage is bindf's error."""
    fsspec = pytest.importorskip("fsspec")
    data = (data_dir / "20250723_092534_data.apx").read_bytes()
    packed = COMPRESSORS[suffix](data)
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/openfile/whole{suffix}", packed)
    fs.pipe(f"/openfile/cut{suffix}", packed[: len(packed) * 3 // 4])
    expected = bindf.read_apx(data)
    # (named without the suffix: only the OpenFile says how the bytes are compressed)
    whole = fsspec.open(f"memory://openfile/whole{suffix}", compression=compression)
    assert bindf.read_apx(whole).equals(expected)
    assert pickle.loads(pickle.dumps(_compressed.DecompressedSource(
        "memory://openfile/whole", fs=whole.fs, fs_path=whole.path,
        compression=compression))).size == len(data)
    if compression in ("bz2", "zstd"):
        return  # (a cut inside their first block, the whole of this file, leaves nothing)
    with pytest.warns(bindf.TruncatedFileWarning) as caught:
        got = bindf.read_apx(fsspec.open(f"memory://openfile/cut{suffix}",
                                         compression=compression))
    assert any("ends before its compressed data" in str(w.message) for w in caught)
    assert 0 < len(got) < len(expected) and got.equals(expected.iloc[: len(got)])
    if compression == "gzip":
        damaged = bytearray(packed)
        damaged[len(damaged) // 2: len(damaged) // 2 + 32] = b"\x55" * 32
        fs.pipe("/openfile/damaged.gz", bytes(damaged))
        with pytest.raises(bindf.CorruptDataError, match="cannot decompress") as info:
            bindf.read_apx(fsspec.open("memory://openfile/damaged.gz", compression="gzip"))
        assert info.value.path == "memory:///openfile/damaged.gz"


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open])
def test_a_decompressing_file_object_cut_or_damaged_is_a_bindf_warning_or_error(
        data_dir: Path, tmp_path: Path, opener: Callable[..., object]) -> None:
    """``gzip.open(path)`` passed as a file object: a cut file raised a bare EOFError
    and damaged data zlib's, bz2's or lzma's own error. The rows the object gave come
    back with a truncation warning that names the file and says to pass its path; damage
    is a CorruptDataError naming the file."""
    suffix = {gzip.open: ".gz", bz2.open: ".bz2", lzma.open: ".xz"}[opener]
    one = bindf.read_apx(data_dir / "20250723_092534_data.apx")
    bindf.write_apx(tmp_path / "long.apx", pd.concat([one] * 40, ignore_index=True),
                    one.attrs["bindf"]["header"])
    data = (tmp_path / "long.apx").read_bytes()  # (big enough to decompress in steps)
    packed = COMPRESSORS[suffix](data)
    expected = bindf.read_apx(data)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(packed[: len(packed) * 3 // 4])
    with opener(cut) as f:  # type: ignore[operator]
        with pytest.warns(bindf.TruncatedFileWarning) as caught:
            got = bindf.read_apx(f)
    # (GzipFile has the file's name; BZ2File and LZMAFile too from Python 3.13 on,
    # before that they are named by their type)
    assert any("pass the compressed file's path" in str(w.message)
               and (str(cut) in str(w.message) or "File>" in str(w.message))
               for w in caught)
    assert 0 < len(got) < len(expected) and got.equals(expected.iloc[: len(got)])
    damaged = bytearray(packed)
    damaged[len(damaged) // 2: len(damaged) // 2 + 64] = b"\x55" * 64
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(bytes(damaged))
    with opener(bad) as f:  # type: ignore[operator]
        with pytest.raises(bindf.CorruptDataError, match="cannot read this stream") as info:
            bindf.read_apx(f)
    assert info.value.path in (str(bad), f"<{type(f).__name__}>")
    assert info.value.offset is not None

def test_follow_refuses_a_compressed_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not compressed ones"):
        bindf.follow(tmp_path / "run.apx.gz")


def test_a_folder_named_like_a_compressed_file_is_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "runs.gz"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        bindf.read_apx(folder)


def test_zstd_without_a_decompressor_names_the_package(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.apx.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"%APXDF"))
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setitem(sys.modules, "compression.zstd", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'bindf\[zstd\]'"):
        bindf.read_apx(path)


def test_ingest_finds_compressed_runs_by_default(data_dir: Path, tmp_path: Path) -> None:
    from bindf._ingest_sources import find_sources

    run = tmp_path / "run.apx"
    run.write_bytes((data_dir / "20250723_092534_data.apx").read_bytes())
    packed = compressed(run, ".zst")
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"not a run"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_sources(str(tmp_path)) == [str(run), str(packed)]


def test_convert_names_an_output_after_the_uncompressed_name(data_dir: Path,
                                                            tmp_path: Path) -> None:
    from bindf.cli import main

    run = tmp_path / "run.apx"
    run.write_bytes((data_dir / "20250723_092534_data.apx").read_bytes())
    packed = compressed(run, ".xz")
    assert main(["convert", str(packed), "--output-dir", str(tmp_path / "out"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.parquet"]
