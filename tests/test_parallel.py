"""Parallel reads (``threads=``) give exactly the sequential output, warnings included."""

from __future__ import annotations

import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from conftest import repeated_apx_run

import bindf
from bindf import _threads
from bindf._threads import (
    ENV_VAR,
    default_threads,
    read_in_parts,
    resolve_threads,
    run_all,
    settle,
    shared_executor,
)
from bindf.errors import CorruptDataWarning, TruncatedFileWarning

SAMPLES = Path(bindf.__file__).parent / "samples"
FILES = {
    "apx": SAMPLES / "astropix_threshold_scan.apx",
    "it02": SAMPLES / "intensity_tracing_it02.bin",
    "sp01": SAMPLES / "decay_curves_sp01.bin",
    "spf1": SAMPLES / "phasors_spf1.bin",
    "spectro": SAMPLES / "photon_events_stt1.bin",
    "it01": SAMPLES / "intensity_tracing_it01.bin",
    "itt1": SAMPLES / "time_tagger_itt1.bin",
    "fcs1": SAMPLES / "fcs_curves_fcs1.bin",
    "apx3": SAMPLES / "astropix3_injection_run.apx",
    "astep": SAMPLES / "astep_quad_chip_frames.bin",
}


def _copies(tmp_path: Path, source: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = tmp_path / f"run_{i:03d}{source.suffix}"
        shutil.copyfile(source, path)
        paths.append(str(path))
    return paths


def _read(paths: list[str], threads: int, **kwargs) -> pa.Table:
    return bindf.read(paths, output="arrow", threads=threads, **kwargs)


def _decoded_on_the_pool(monkeypatch) -> None:
    """Small files read as large ones are: a multi-file read decodes them on its pool
    (not inline), each read through its descriptor (not whole into memory)."""
    from bindf import _source
    from bindf.frontends import batches

    monkeypatch.setattr(batches, "PARALLEL_MIN_FILE_BYTES", 0)
    monkeypatch.setattr(_source, "HOLD_IN_MEMORY_BYTES", 0)


@pytest.mark.parametrize("fmt", sorted(FILES))
@pytest.mark.parametrize("kwargs", [
    {},
    {"include_file_paths": "file", "row_index_name": "i", "row_index_offset": 5},
    {"n_rows": 1},
    {"n_rows": 1234},
    {"batch_size": 7},
], ids=["plain", "extras", "n_rows=1", "n_rows=1234", "batch_size=7"])
def test_files_in_parallel_equal_sequential(tmp_path, fmt, kwargs):
    paths = _copies(tmp_path, FILES[fmt], 7)
    sequential = _read(paths, 1, **kwargs)
    for threads in (2, 3, 16):
        parallel = _read(paths, threads, **kwargs)
        assert parallel.equals(sequential), (fmt, threads)
        assert parallel.schema.metadata == sequential.schema.metadata


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_projection_in_parallel(tmp_path, fmt):
    paths = _copies(tmp_path, FILES[fmt], 5)
    names = bindf.read(paths[0], output="arrow").column_names
    wanted = [names[-1], names[0]]
    assert _read(paths, 3, columns=wanted).equals(_read(paths, 1, columns=wanted))


def test_threads_one_is_the_sequential_path(tmp_path, monkeypatch):
    from bindf.frontends.batches import ReadPlan

    paths = _copies(tmp_path, FILES["apx"], 3)
    monkeypatch.setattr(ReadPlan, "_files_in_parallel",
                        lambda self, columns: pytest.fail("pool used with threads=1"))
    assert _read(paths, 1).num_rows == 3 * 776


def _truncated_copies(tmp_path: Path, n: int) -> list[str]:
    """``n`` copies of the AstroPix sample, every second one cut inside a readout."""
    paths = _copies(tmp_path, FILES["apx"], n)
    for path in paths[1::2]:
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) - 25])
    return paths


def test_every_file_warning_kept_in_file_order(tmp_path):
    paths = _truncated_copies(tmp_path, 9)
    results = {}
    for threads in (1, 4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = _read(paths, threads)
        truncations = [w.message for w in caught if w.category is TruncatedFileWarning]
        results[threads] = (table, [str(m) for m in truncations])
        assert [m.path for m in truncations] == paths[1::2]
    assert results[1][0].equals(results[4][0])
    assert results[1][1] == results[4][1]
    # Every complete readout of a cut file is kept: only the cut one is missing.
    whole = bindf.read(paths[0], output="arrow").num_rows
    with pytest.warns(TruncatedFileWarning):
        cut = bindf.read(paths[1], output="arrow", threads=4)
    assert 0 < cut.num_rows < whole


def test_warnings_shown_under_default_filters(tmp_path):
    """Identical warnings of several files all show (no once-per-location dedup)."""
    paths = _truncated_copies(tmp_path, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        _read(paths, 3)
    assert sum(w.category is TruncatedFileWarning for w in caught) == 3


def test_on_error_warn_in_parallel(tmp_path):
    paths = _copies(tmp_path, FILES["apx"], 6)
    for path in paths[::3]:  # damage the second readout marker
        data = bytearray(Path(path).read_bytes())
        second = data.index(b"\xfe\xdc\xba", data.index(b"\xfe\xdc\xba") + 1)
        data[second] = 0
        Path(path).write_bytes(bytes(data))
    found = {}
    for threads in (1, 3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = bindf.read(paths, output="arrow", threads=threads, on_error="warn")
        found[threads] = (table, [str(w.message) for w in caught
                                  if w.category is CorruptDataWarning])
    assert found[1][0].equals(found[3][0])
    assert found[1][1] == found[3][1] and len(found[1][1]) == 2
    with pytest.raises(bindf.CorruptDataError, match="run_000"):
        bindf.read(paths, output="arrow", threads=3)


def test_error_of_a_later_file_raised_after_earlier_files(tmp_path):
    paths = _copies(tmp_path, FILES["apx"], 4)
    Path(paths[2]).write_bytes(b"not an apx file at all")
    with pytest.raises(bindf.BindfError, match="run_002"):
        _read(paths, 3)


def test_chunked_parallel_read_in_order(tmp_path):
    paths = _copies(tmp_path, FILES["it02"], 5)
    chunks = list(bindf.read(paths, output="arrow", threads=3, chunksize=50,
                             include_file_paths="file"))
    assert pa.concat_tables(chunks).equals(
        bindf.read(paths, output="arrow", threads=1, include_file_paths="file"))


def test_polars_scan_in_parallel(tmp_path):
    import polars as pl

    paths = _copies(tmp_path, FILES["spf1"], 4)
    lazy = bindf.scan(paths, threads=4).filter(pl.col("harmonic") == 1)
    assert lazy.collect().equals(bindf.scan(paths, threads=1)
                                 .filter(pl.col("harmonic") == 1).collect())


def test_resolve_threads(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_threads(None) == default_threads() >= 1
    assert resolve_threads(False) == 1 and resolve_threads(True) == default_threads()
    assert resolve_threads(3) == 3
    with pytest.raises(ValueError, match="threads"):
        resolve_threads(0)
    with pytest.raises(TypeError, match="threads"):
        resolve_threads("2")  # type: ignore[arg-type]
    monkeypatch.setenv(ENV_VAR, "5")
    assert resolve_threads(None) == 5
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ValueError, match=ENV_VAR):
        resolve_threads(None)


def test_shared_executor_is_kept_per_role_and_size():
    pool = shared_executor("bindf-test", 2)
    assert shared_executor("bindf-test", 2) is pool
    assert shared_executor("bindf-test", 3) is not pool
    assert shared_executor("bindf-other", 2) is not pool
    assert pool.submit(lambda: threading.current_thread().name).result().startswith("bindf-test")


def test_reads_keep_their_threads(tmp_path):
    # every read of a glob on two threads reuses the same pool threads: no new threads
    # (with fresh allocator heaps) per read, and none left running between reads
    paths = _copies(tmp_path, FILES["spectro"], 4)
    expected = _read(paths, threads=1)
    assert _read(paths, threads=2).equals(expected)
    def bindf_threads() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name.startswith("bindf-")}

    names = bindf_threads()
    for _ in range(5):
        assert _read(paths, threads=2).equals(expected)
    assert bindf_threads() == names


def test_settle_cancels_what_has_not_started_and_waits_for_the_rest():
    pool = shared_executor("bindf-test-settle", 1)
    release = threading.Event()
    started = threading.Event()

    def busy() -> str:
        started.set()
        release.wait(10)
        return "done"

    running = pool.submit(busy)
    queued = pool.submit(lambda: "never")
    assert started.wait(10)
    threading.Timer(0.05, release.set).start()
    settle([running, queued])
    assert queued.cancelled() and running.done() and running.result() == "done"


def test_run_all_keeps_order_and_raises_once_every_task_ended():
    pool = shared_executor("bindf-test-run-all", 2)
    assert run_all(pool, lambda x: x * x, range(7)) == [0, 1, 4, 9, 16, 25, 36]
    started, ended = set(), set()

    def task(k: int) -> int:
        started.add(k)
        if k == 0:
            raise ZeroDivisionError
        time.sleep(0.02)
        ended.add(k)
        return k

    with pytest.raises(ZeroDivisionError):
        run_all(pool, task, range(4))
    assert started - {0} == ended  # no task still running when the error came out


def test_run_all_interrupted_while_it_waits_still_outlives_no_task(monkeypatch) -> None:
    """Ctrl-C while run_all waits for a task (its future's result() interrupted): the
    task it waited for is still waited for before the interrupt comes out, as the
    others are (tasks write into the caller's output)."""
    from concurrent.futures import Future

    pool = shared_executor("bindf-test-run-all", 2)
    ended = set()
    interrupted = []
    result = Future.result
    first_started = threading.Event()

    def interrupted_once(future: Future, timeout: float | None = None) -> object:
        if not interrupted:  # (once the task runs: a task not started is cancelled)
            assert first_started.wait(10)
            interrupted.append(future)
            raise KeyboardInterrupt
        return result(future, timeout)

    def task(k: int) -> int:
        if k == 0:
            first_started.set()
        time.sleep(0.3 if k == 0 else 0.01)  # (the one waited for ends last)
        ended.add(k)
        return k

    monkeypatch.setattr(Future, "result", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        run_all(pool, task, range(3))
    assert interrupted and interrupted[0].done() and 0 in ended


def test_read_in_parts_stops_counting_at_a_short_part():
    pool = shared_executor("bindf-test-parts", 2)
    ended = []

    def part(k: int) -> int:
        ended.append(k)
        return (10, 4, 10)[k]  # part 1 is short: part 2's records are not counted

    assert read_in_parts(pool, part, [10, 10, 10]) == 14
    assert sorted(ended) == [0, 1, 2]  # every part ran to its end before the return
    assert read_in_parts(pool, lambda k: 5, [5, 5]) == 10
    with pytest.raises(ZeroDivisionError):
        read_in_parts(pool, lambda k: 1 // k, [1, 1])


def test_read_in_parts_runs_every_part_itself_when_no_helper_is_free():
    """The caller takes every part no pool thread has started: with the pool's only
    thread busy (as in a multi-file read where every thread decodes a file), it runs
    them all and returns without waiting for the pool."""
    pool = shared_executor("bindf-test-busy", 1)
    release = threading.Event()
    busy = pool.submit(release.wait, 10)
    ran_on = []

    def part(k: int) -> int:
        ran_on.append((k, threading.current_thread().name))
        return 3

    try:
        assert read_in_parts(pool, part, [3, 3, 3, 3]) == 12
    finally:
        release.set()
    busy.result()
    me = threading.current_thread().name
    assert sorted(ran_on) == [(k, me) for k in range(4)]


def test_read_in_parts_from_a_task_of_its_own_pool():
    """A task of the pool may cut its work into parts on that same pool (the multi-file
    read's helpers): with one thread, the task runs every part itself, no deadlock."""
    pool = shared_executor("bindf-test-own", 1)
    future = pool.submit(read_in_parts, pool, lambda k: 2, [2] * 5)
    assert future.result(timeout=10) == 10


def test_read_in_parts_shares_with_a_free_helper_and_never_waits_in_line():
    """A free pool thread takes parts while the caller works, and the caller does not
    wait for the part the helper is running while later parts are left: it runs them."""
    pool = shared_executor("bindf-test-free", 1)
    helper_started = threading.Event()
    helper_may_end = threading.Event()
    ran_on = {}

    def part(k: int) -> int:
        ran_on[k] = threading.current_thread().name
        if k == 0:  # the caller's first part: let the helper take part 1 meanwhile
            assert helper_started.wait(10)
        elif ran_on[k].startswith("bindf-test-free"):
            helper_started.set()
            assert helper_may_end.wait(10)  # busy until the caller ran the rest
        elif len(ran_on) == 4:  # the caller's last part
            helper_may_end.set()
        return 1

    assert read_in_parts(pool, part, [1, 1, 1, 1]) == 4
    me = threading.current_thread().name
    assert ran_on[1].startswith("bindf-test-free")
    assert [ran_on[k] for k in (0, 2, 3)] == [me] * 3


def test_read_in_parts_errors_and_short_parts_in_part_order():
    # an error in a part after a short one is never seen (that part's records are not
    # real); an error before it is raised, wherever each part ran
    def part(k: int) -> int:
        if k == 1:
            return 0
        if k == 2:
            raise OSError("after the short part")
        return 5

    assert read_in_parts(None, part, [5, 5, 5]) == 5

    def failing(k: int) -> int:
        if k == 0:
            raise OSError("first")
        return 0

    for pool in (None, shared_executor("bindf-test-parts", 2)):
        with pytest.raises(OSError, match="first"):
            read_in_parts(pool, failing, [5, 5, 5])


@pytest.mark.parametrize(("n", "itemsize", "threads", "part_bytes", "expected"), [
    (10, 17, 2, 1 << 20, [0, 10]),           # under MIN_PART_BYTES: one part
    (3 << 20, 1, 2, 4 << 20, [0, 3 << 19, 3 << 20]),  # one part per thread
    (3 << 20, 1, 20000, 4 << 20, [0, 1 << 20, 2 << 20, 3 << 20]),  # 1 MiB parts at least
    (100, 10, 1, 300, [0, 25, 50, 75, 100]),  # 1,000 bytes in parts of about 300
    (3, 8, 8, 1, [0, 1, 2, 3]),               # never more parts than records
    (1, 8, 1, 1 << 20, [0, 1]),
])
def test_part_bounds(n, itemsize, threads, part_bytes, expected):
    from bindf._threads import part_bounds

    assert part_bounds(n, itemsize, threads, part_bytes) == expected


@pytest.mark.parametrize("fmt", ["spectro", "it02"])
@pytest.mark.parametrize("threads", [2, 3])
def test_glob_files_split_into_parts_shared_by_the_pool(tmp_path, monkeypatch, fmt, threads):
    """In a multi-file read a file's batches are cut into parts that any free thread of
    the read's pool may take once no other file waits for a thread (the last files are
    finished by every thread): same table as one thread, warnings included, with a
    truncated file among them."""
    import bindf.formats._fixed as fixed
    import bindf.formats.it02 as it02

    for module in (fixed, it02):
        monkeypatch.setattr(module, "PARALLEL_MIN_BYTES", 1)
        monkeypatch.setattr(module, "PART_BYTES", 64)
    _decoded_on_the_pool(monkeypatch)
    paths = _copies(tmp_path, FILES[fmt], 5)
    data = Path(paths[3]).read_bytes()
    Path(paths[3]).write_bytes(data[:-3])  # cut inside the last record

    def read(threads: int, **kwargs) -> tuple[pa.Table, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = _read(paths, threads, **kwargs)
        return table, [f"{w.category.__name__}: {w.message}" for w in caught]

    for kwargs in ({}, {"batch_size": 7}, {"n_rows": 50}, {"include_file_paths": "file"}):
        one, one_warnings = read(1, **kwargs)
        many, many_warnings = read(threads, **kwargs)
        assert many.equals(one) and many_warnings == one_warnings
    assert "truncated" in one_warnings[0]


def test_batches_read_whole_while_other_files_wait_for_a_thread():
    """A pool hands out its queued tasks first come, first served: while other files of
    a multi-file read wait for a thread, no thread would take a part of this file
    before them, so its batches are read whole (one compiled call, no Python between
    parts); parts again once none waits, and never without helpers."""
    from bindf._threads import WaitingTasks, part_bounds

    reader = _reader(FILES["spectro"])
    reader.threads = 2
    helpers = shared_executor("bindf-test-parts", 1)
    n, itemsize, part_bytes = 3 << 20, 17, 4 << 20
    parts = part_bounds(n, itemsize, 2, part_bytes)
    assert len(parts) > 2
    assert reader.part_bounds(helpers, n, itemsize, part_bytes) == parts  # not a glob's
    assert reader.part_bounds(None, n, itemsize, part_bytes) == [0, n]
    waiting = WaitingTasks()
    reader.files_waiting = waiting
    assert reader.part_bounds(helpers, n, itemsize, part_bytes) == parts
    waiting.submitted()
    waiting.submitted()
    assert waiting.any() and reader.part_bounds(helpers, n, itemsize, part_bytes) == [0, n]
    waiting.started()
    assert reader.part_bounds(helpers, n, itemsize, part_bytes) == [0, n]
    waiting.withdrawn()  # (a submission that failed)
    assert not waiting.any()
    assert reader.part_bounds(helpers, n, itemsize, part_bytes) == parts


@pytest.mark.parametrize("fmt", ["spectro", "it02"])
def test_glob_reads_the_last_files_in_parts(tmp_path, monkeypatch, fmt):
    """Counted in a real glob read on two threads: the files' tasks see the read's
    count of files not started, and the last file, with none waiting, is cut into
    parts; the table is the one-thread read's."""
    import bindf.formats._fixed as fixed
    import bindf.formats.it02 as it02
    from bindf.formats._base import FormatReader

    for module in (fixed, it02):
        monkeypatch.setattr(module, "PARALLEL_MIN_BYTES", 1)
        monkeypatch.setattr(module, "PART_BYTES", 64)
    _decoded_on_the_pool(monkeypatch)
    paths = _copies(tmp_path, FILES[fmt], 5)
    cut: dict[str, list[int]] = {}
    real = FormatReader.part_bounds

    def counted(self, helpers, n, itemsize, part_bytes):
        assert self.files_waiting is not None  # a task of the glob's pool
        bounds = real(self, helpers, n, itemsize, part_bytes)
        cut.setdefault(str(self.path), []).append(len(bounds) - 1)
        return bounds

    monkeypatch.setattr(FormatReader, "part_bounds", counted)
    many = _read(paths, 2)
    assert set(cut) == set(paths) and min(cut[paths[-1]]) > 1
    monkeypatch.setattr(FormatReader, "part_bounds", real)
    assert many.equals(_read(paths, 1))


@pytest.mark.parametrize("threads", [2, 3])
def test_n_rows_ending_in_a_file_decoded_ahead_says_nothing_beyond_it(tmp_path, monkeypatch,
                                                                       threads):
    """A glob's files are decoded on the pool up to the rows still missing when each was
    submitted: past the rows the read takes from the file where ``n_rows`` ends. What
    that file warned of or counted beyond them (its truncated end; a damaged readout
    under ``on_error="warn"``) is not the read's: as in the sequential read, no warning
    and no count in the metadata; the rows, warnings and counts of the whole file where
    ``n_rows`` takes all of it."""
    _decoded_on_the_pool(monkeypatch)
    records = np.zeros(1000, dtype=[("event", "u1"), ("micro", "<f8"), ("macro", "<f8")])
    records["macro"] = np.arange(1000)
    spectro = [tmp_path / "spectroscopy-output-1.bin", tmp_path / "spectroscopy-output-2.bin"]
    spectro[0].write_bytes(records.tobytes())
    spectro[1].write_bytes(records.tobytes()[:-5])  # cut inside its last record
    # an AstroPix run of 2 MB (the sample's readouts 80 times), its last readout marker
    # damaged: beyond what a read of its first rows decodes
    apx = [tmp_path / "a.apx", tmp_path / "b.apx"]
    apx[0].write_bytes(FILES["apx"].read_bytes())
    apx[1].write_bytes(repeated_apx_run(80, damaged="last"))
    apx_rows = bindf.read(str(apx[0]), output="arrow").num_rows

    def read(paths: list[Path], threads: int, **kwargs) -> tuple[pa.Table, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = bindf.read([str(p) for p in paths], output="arrow", threads=threads,
                               **kwargs)
        return table, [f"{w.category.__name__}: {w.message}" for w in caught]

    for paths, n_rows, options, says in (
            (spectro, 1003, {}, []),
            (spectro, 2000, {}, ["TruncatedFileWarning"]),
            (apx, apx_rows + 3, {"on_error": "warn"}, []),
            (apx, 100 * apx_rows, {"on_error": "warn"}, ["CorruptDataWarning"])):
        one, one_said = read(paths, 1, n_rows=n_rows, **options)
        many, many_said = read(paths, threads, n_rows=n_rows, **options)
        assert many.equals(one, check_metadata=True) and many_said == one_said
        assert [said.split(":")[0] for said in one_said] == says


def test_random_damaged_globs_read_alike_on_any_thread_count(tmp_path, monkeypatch):
    """Seeded random globs of AstroPix runs (1-4 files of 1-40 copies of the sample's
    readouts, some readout markers damaged, some tails cut) under random options
    (``on_error``, ``n_rows``, ``columns``, ``include_file_paths``), with the files
    decoded on the pool or inline: on two and three threads, the one-thread read's
    table, metadata (damage counts), warnings and error, exactly. (Such a test found the
    n_rows test above: 6 reads of 80 differed.)"""
    import random

    from bindf import _source
    from bindf.frontends import batches

    rng = random.Random(1)
    sample = FILES["apx"].read_bytes()
    marker = b"\xfe\xdc\xba"
    header, readouts = sample[:sample.index(marker)], sample[sample.index(marker):]
    columns = ["chip_id", "payload", "readout_id", "timestamp", "tot_us", "column", "row"]

    def read(pattern: str, threads: int, **kwargs) -> tuple:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                table = bindf.read(pattern, output="arrow", threads=threads, **kwargs)
            except bindf.errors.BindfError as exc:
                table, error = None, f"{type(exc).__name__}: {exc}"
            else:
                error = None
        return table, [f"{w.category.__name__}: {w.message}" for w in caught], error

    for trial in range(40):
        folder = tmp_path / f"trial_{trial}"
        folder.mkdir()
        monkeypatch.setattr(batches, "PARALLEL_MIN_FILE_BYTES", rng.choice([0, 1 << 20]))
        monkeypatch.setattr(_source, "HOLD_IN_MEMORY_BYTES", rng.choice([0, 1 << 20]))
        for i in range(rng.randint(1, 4)):
            run = bytearray(header + readouts * rng.choice([1, 5, 40]))
            for _ in range(rng.choice([0, 0, 1, 2])):
                at = run.find(marker, rng.randrange(len(run) - 3))
                if at > 0:
                    run[at + 1] ^= 0xFF
            if rng.random() < 0.2:
                run = run[:-rng.randint(1, 30)]
            (folder / f"run_{i}.apx").write_bytes(bytes(run))
        kwargs: dict = {"on_error": rng.choice(["raise", "warn", "skip"])}
        if rng.random() < 0.5:
            kwargs["n_rows"] = rng.randint(0, 40_000)
        if rng.random() < 0.3:
            kwargs["columns"] = rng.sample(columns, 2)
        if rng.random() < 0.3:
            kwargs["include_file_paths"] = "file"
        pattern = str(folder / "*.apx")
        one = read(pattern, 1, **kwargs)
        for threads in (2, 3):
            many = read(pattern, threads, **kwargs)
            assert many[1:] == one[1:], (trial, threads, kwargs)
            assert (many[0] is None) == (one[0] is None), (trial, threads, kwargs)
            assert one[0] is None or many[0].equals(one[0], check_metadata=True), \
                (trial, threads, kwargs)


def test_a_forked_child_makes_its_own_pools(monkeypatch):
    # what os.register_at_fork runs in a child: the parent's pools (whose threads the
    # child does not have) are forgotten, and the next use makes a working one
    pool = shared_executor("bindf-test-fork", 1)
    monkeypatch.setattr(_threads, "_POOLS", dict(_threads._POOLS))
    monkeypatch.setattr(_threads, "_LANES", dict(_threads._LANES))
    _threads._forget_executors_after_fork()
    fresh = shared_executor("bindf-test-fork", 1)
    assert fresh is not pool and fresh.submit(lambda: 42).result() == 42


def test_reads_of_every_thread_count_share_one_pool_per_role(tmp_path):
    """A pool per (role, thread count) kept every pool's idle threads: a sweep of
    threads=1 … 6 left 1 + 2 + … threads per role. Now the role's threads are shared,
    and a lane still runs at most its own count of tasks at once."""
    import threading
    import time

    # Legacy photon records (17 bytes), 10 MB: cut into parts on helper threads.
    records = np.zeros(600_000, dtype=[("event", "u1"), ("micro", "<f8"), ("macro", "<f8")])
    records["macro"] = np.arange(len(records), dtype=np.float64)
    big = tmp_path / "spectroscopy-output-1.bin"
    big.write_bytes(records.tobytes())
    def counts() -> dict[str, int]:
        return {role: sum(t.name.startswith(role + "_") for t in threading.enumerate())
                for role in ("bindf-read", "bindf-parts")}

    before = counts()  # (earlier tests of this process may have made some)
    for threads in range(1, 7):
        bindf.read_spectro(big, threads=threads, output="arrow")
        bindf.read_spectro([big, big], threads=threads, output="arrow")
    for role, count in counts().items():  # (a pool per count: up to 1 + … + 6 more)
        assert count <= max(before[role], 6), (role, before[role], count)
    lane = shared_executor("bindf-test-lane", 2)
    running, most = [0], [0]
    lock = threading.Lock()

    def task(_: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1

    _threads.run_all(lane, task, range(12))
    assert most[0] == 2
    queued = [lane.submit(time.sleep, 0.05) for _ in range(6)]
    assert queued[-1].cancel()  # not started: cancelled, never run
    _threads.settle(queued)


def test_threads_false_still_accepted_by_apx(tmp_path):
    paths = _copies(tmp_path, FILES["apx"], 2)
    assert bindf.read_apx(paths, threads=False, output="arrow").equals(
        bindf.read_apx(paths, threads=2, output="arrow"))


def test_threads_in_the_signature():
    import inspect

    for function in (bindf.read_apx, bindf.read_it02, bindf.scan_spectro):
        parameter = inspect.signature(function).parameters["threads"]
        assert parameter.default is None and parameter.annotation == "int | None"


# -- one large fixed-record file split into record-aligned parts ----------------------
FIXED = ["sp01", "spf1", "spectro", "it01", "itt1"]


@pytest.fixture
def split_everything(monkeypatch):
    """Make every batch of a fixed-record file a parallel one, however small."""
    import bindf.formats._fixed as fixed

    monkeypatch.setattr(fixed, "PARALLEL_MIN_BYTES", 1)


@pytest.mark.parametrize("fmt", FIXED)
@pytest.mark.parametrize("threads", [2, 3, 7, 64])
@pytest.mark.parametrize("kwargs", [{}, {"batch_size": 5}, {"n_rows": 11}, {"batch_size": 13, "n_rows": 40}])
def test_fixed_records_split_equal_sequential(tmp_path, split_everything, fmt, threads, kwargs):
    path = str(FILES[fmt])
    sequential = bindf.read(path, output="arrow", threads=1, **kwargs)
    parallel = bindf.read(path, output="arrow", threads=threads, **kwargs)
    assert parallel.equals(sequential)
    names = sequential.column_names
    wanted = [names[-1], names[0]]
    assert bindf.read(path, output="arrow", threads=threads, columns=wanted, **kwargs).equals(
        bindf.read(path, output="arrow", threads=1, columns=wanted, **kwargs))


@pytest.mark.parametrize("fmt", FIXED)
def test_fixed_records_split_truncated_mid_record(tmp_path, split_everything, fmt):
    data = FILES[fmt].read_bytes()
    path = tmp_path / f"cut{FILES[fmt].suffix}"
    path.write_bytes(data[:-3])  # cut inside the last record
    results = []
    for threads in (1, 3):
        with pytest.warns(TruncatedFileWarning, match="incomplete"):
            results.append(bindf.read(str(path), output="arrow", threads=threads))
    assert results[0].equals(results[1])
    whole = bindf.read(str(FILES[fmt]), output="arrow", threads=1)
    # Every complete record is kept: only the cut one (its rows) is missing.
    per_record = _reader(FILES[fmt]).rows_per_record
    assert results[1].num_rows == whole.num_rows - per_record
    assert results[1].equals(whole.slice(0, results[1].num_rows))


@pytest.mark.parametrize("fmt", FIXED)
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("kwargs", [{}, {"batch_size": 7}, {"n_rows": 11}])
def test_fixed_records_of_local_files_read_by_one_compiled_loop(tmp_path, monkeypatch, fmt,
                                                                 threads, kwargs):
    """A local file's records are read and copied by one compiled call per batch (or
    part), ``pread`` and all (``_fields.fill_from_descriptor``), with many chunks per
    call here; the table equals the chunk-by-chunk path's (taken where there is no
    ``pread``, and by in-memory and compressed files), for whole files and for one cut
    inside its last record (a warning and every complete record)."""
    import gzip

    import bindf.formats._fixed as fixed
    from bindf import _source
    from bindf._kernels import _fields

    monkeypatch.setattr(fixed, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(fixed, "RAW_CHUNK_BYTES", 100)  # a few records per chunk
    monkeypatch.setattr(fixed, "LOCAL_CHUNK_BYTES", 100)
    monkeypatch.setattr(_source, "HOLD_IN_MEMORY_BYTES", 0)  # not read whole into memory
    calls = []
    real = _fields.fill_from_descriptor
    monkeypatch.setattr(_fields, "fill_from_descriptor",
                        lambda *args: calls.append(args[2]) or real(*args))
    data = FILES[fmt].read_bytes()
    whole = tmp_path / f"whole{FILES[fmt].suffix}"
    cut = tmp_path / f"cut{FILES[fmt].suffix}"
    whole.write_bytes(data)
    cut.write_bytes(data[:-3])
    packed = tmp_path / f"whole{FILES[fmt].suffix}.gz"
    packed.write_bytes(gzip.compress(data))

    def read(path: Path, **more) -> pa.Table:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = bindf.read(str(path), output="arrow", threads=threads, **kwargs, **more)
        assert [w.category for w in caught] == (
            [TruncatedFileWarning] if path == cut and "n_rows" not in kwargs else [])
        return table

    compiled = {path: read(path) for path in (whole, cut)}
    assert calls and sum(calls) >= compiled[whole].num_rows // _reader(whole).rows_per_record
    calls.clear()
    assert read(packed).equals(compiled[whole]) and not calls  # decompressed: chunked
    monkeypatch.setattr(_fields, "HAVE_PREAD", False)
    for path, table in compiled.items():
        assert read(path).equals(table)
    assert not calls
    if "n_rows" not in kwargs:
        per_record = _reader(whole).rows_per_record
        assert compiled[cut].num_rows == compiled[whole].num_rows - per_record


@pytest.mark.parametrize("fmt", ["spectro", "it02", "sp01"])
@pytest.mark.parametrize("threads", [1, 3])
def test_streaming_stores_on_or_off_give_the_same_table(tmp_path, monkeypatch, fmt, threads):
    """Large batches of fixed records (and dense IT02) are copied into their columns with
    streaming stores where this CPU's default or ``BINDF_STREAMING_STORES`` says so, with
    ordinary stores otherwise; the kernel is asked for what was chosen, and the table is
    the same either way (here every batch counts as large)."""
    import bindf.formats._fixed as fixed
    from bindf import _source
    from bindf._kernels import _fields

    monkeypatch.setattr(fixed, "STREAM_MIN_BYTES", 1)
    monkeypatch.setattr(fixed, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(fixed, "LOCAL_CHUNK_BYTES", 100)
    monkeypatch.setattr(_source, "HOLD_IN_MEMORY_BYTES", 0)  # read through the descriptor
    asked: list[bool] = []
    real = _fields.fill_from_descriptor
    monkeypatch.setattr(_fields, "fill_from_descriptor",
                        lambda *args: asked.append(bool(args[-1])) or real(*args))
    tables = {}
    for streaming in (False, True):
        monkeypatch.setattr(fixed, "USE_STREAMING_STORES", streaming)
        asked.clear()
        tables[streaming] = bindf.read(str(FILES[fmt]), output="arrow", threads=threads)
        assert asked and set(asked) == {streaming}
    assert tables[True].equals(tables[False])


def test_streaming_stores_chosen_by_environment() -> None:
    """``BINDF_STREAMING_STORES`` overrides the CPU's default (AMD: streaming stores)."""
    from bindf._kernels import _fields
    from bindf.formats._fixed import streaming_stores_wanted

    assert streaming_stores_wanted({}) == _fields.STREAMING_STORES_BY_DEFAULT
    assert streaming_stores_wanted({"BINDF_STREAMING_STORES": ""}) == \
        _fields.STREAMING_STORES_BY_DEFAULT
    assert streaming_stores_wanted({"BINDF_STREAMING_STORES": " 1 "}) is True
    assert streaming_stores_wanted({"BINDF_STREAMING_STORES": "0"}) is False
    with pytest.raises(ValueError, match="BINDF_STREAMING_STORES must be 0 or 1"):
        streaming_stores_wanted({"BINDF_STREAMING_STORES": "yes"})


def test_streaming_stores_environment_read_at_each_large_batch(tmp_path, monkeypatch):
    """The environment is read when a large batch is copied (not at import, where a wrong
    value would have broken ``import bindf``): a wrong one is the read's ValueError."""
    import bindf.formats._fixed as fixed

    monkeypatch.setattr(fixed, "STREAM_MIN_BYTES", 1)
    monkeypatch.setenv("BINDF_STREAMING_STORES", "fast")
    with pytest.raises(ValueError, match="BINDF_STREAMING_STORES must be 0 or 1"):
        bindf.read(str(FILES["spectro"]), output="arrow")
    expected = []
    for value in ("0", "1"):
        monkeypatch.setenv("BINDF_STREAMING_STORES", value)
        assert fixed.streams(1) is (value == "1")
        expected.append(bindf.read(str(FILES["spectro"]), output="arrow"))
    assert expected[0].equals(expected[1])


@pytest.mark.parametrize("fmt", ["spectro", "it02"])
def test_parts_of_a_local_file_share_its_descriptor(tmp_path, monkeypatch, fmt):
    """The parts of a parallel batch (fixed records, dense IT02) read the caller's open
    local file with ``pread`` (one descriptor, no open per part); where the compiled loop
    cannot read them (here: columns taken to need numpy's copies), each part opens the
    file, as before; both give the sequential read's table."""
    import bindf.formats._fixed as fixed
    import bindf.formats.it02 as it02
    from bindf import _source

    for module in (fixed, it02):
        monkeypatch.setattr(module, "PARALLEL_MIN_BYTES", 1)
        monkeypatch.setattr(module, "PART_BYTES", 100)
    monkeypatch.setattr(_source, "HOLD_IN_MEMORY_BYTES", 0)
    opened = []
    real_open = _source.Source.open
    monkeypatch.setattr(_source.Source, "open",
                        lambda self: opened.append(self.path) or real_open(self))
    path = str(FILES[fmt])
    sequential = bindf.read(path, output="arrow", threads=1)
    parts = -(-(_source.Source(path).size - _reader(FILES[fmt]).data_offset) // 100)
    opened.clear()
    parallel = bindf.read(path, output="arrow", threads=3, batch_size=100_000)
    assert parallel.equals(sequential)
    # detection, the header, the held file and its view for the records: not a part's
    assert parts > 20 and len(opened) <= 4
    opened.clear()
    monkeypatch.setattr(fixed, "_field_layout", lambda *args: None)  # numpy's copies
    assert bindf.read(path, output="arrow", threads=3, batch_size=100_000).equals(sequential)
    assert len(opened) >= parts


def test_fixed_records_split_big_file_writes_into_the_output(tmp_path):
    """A spectro file larger than the parallel threshold: same table with 1 and 2
    threads, and the parallel read made no concatenated copies (one chunk per column)."""
    from bindf.formats._fixed import PARALLEL_MIN_BYTES

    table = bindf.read(str(FILES["spectro"]), output="arrow", threads=1)
    raw = FILES["spectro"].read_bytes()
    reader_offset = _reader(FILES["spectro"]).data_offset
    records = raw[reader_offset:]
    copies = PARALLEL_MIN_BYTES // len(records) + 2
    path = tmp_path / "big.bin"
    path.write_bytes(raw[:reader_offset] + records * copies)
    one = bindf.read(str(path), output="arrow", threads=1)
    two = bindf.read(str(path), output="arrow", threads=2)
    assert two.equals(one) and one.num_rows == table.num_rows * copies
    assert all(column.num_chunks == 1 for column in two.columns)


def _reader(path: Path):
    from bindf._source import Source
    from bindf.registry import open_reader

    return open_reader(Source(str(path)), threads=1)


@pytest.mark.parametrize("kwargs", [{}, {"batch_size": 7}, {"n_rows": 33},
                                    {"columns": ["channel_3"]}, {"fill_gaps": True}])
@pytest.mark.parametrize("threads", [2, 5])
def test_dense_it02_split_equal_sequential(tmp_path, monkeypatch, kwargs, threads):
    import bindf.formats.it02 as it02

    path = str(FILES["it02"])
    names = bindf.read(path, output="arrow").column_names
    if "columns" in kwargs:
        kwargs = {"columns": [names[-1]]}
    sequential = bindf.read(path, output="arrow", threads=1, **kwargs)
    monkeypatch.setattr(it02, "PARALLEL_MIN_BYTES", 1)
    assert bindf.read(path, output="arrow", threads=threads, **kwargs).equals(sequential)


@pytest.mark.parametrize("kwargs", [{}, {"batch_size": 7}, {"n_rows": 33},
                                    {"columns": ["time_ns"]}, {"fill_gaps": True}])
def test_dense_it02_of_a_local_file_on_one_thread_reads_by_the_compiled_loop(
        tmp_path, monkeypatch, kwargs):
    """One thread reading a local dense IT02 file reads its records as the parts do
    (``pread`` and the compiled copies, no GIL between chunks), with the same table as
    the chunk-by-chunk loop that stays for other files; cut inside its last record, the
    same warning and rows."""
    import bindf.formats.it02 as it02
    from bindf import _source
    from bindf._kernels import _fields

    monkeypatch.setattr(_source, "HOLD_IN_MEMORY_BYTES", 0)
    calls = []
    real = _fields.fill_from_descriptor
    monkeypatch.setattr(_fields, "fill_from_descriptor",
                        lambda *args: calls.append(args[2]) or real(*args))
    data = FILES["it02"].read_bytes()
    whole, cut = tmp_path / "whole.bin", tmp_path / "cut.bin"
    whole.write_bytes(data)
    cut.write_bytes(data[:-3])

    def read(path: Path) -> tuple[pa.Table, list[type]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = bindf.read(str(path), output="arrow", threads=1, **kwargs)
        return table, [w.category for w in caught]

    compiled = {path: read(path) for path in (whole, cut)}
    # (gap filling borrows the records' chunk instead: it copies them into its own rows)
    assert bool(calls) == ("fill_gaps" not in kwargs)
    calls.clear()
    monkeypatch.setattr(it02, "local_descriptor", lambda f: None)  # the loop for others
    for path, (table, warned) in compiled.items():
        again, warned_again = read(path)
        assert again.equals(table) and warned_again == warned
    assert not calls
    assert compiled[cut][1] == ([] if "n_rows" in kwargs else [TruncatedFileWarning])


def test_dense_it02_split_truncated_mid_record(tmp_path, monkeypatch):
    import bindf.formats.it02 as it02

    data = FILES["it02"].read_bytes()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[:-5])
    monkeypatch.setattr(it02, "PARALLEL_MIN_BYTES", 1)
    results = []
    for threads in (1, 3):
        with pytest.warns(TruncatedFileWarning, match="incomplete"):
            results.append(bindf.read(str(path), output="arrow", threads=threads))
    whole = bindf.read(str(FILES["it02"]), output="arrow")
    assert results[0].equals(results[1]) and results[1].num_rows == whole.num_rows - 1


@pytest.mark.parametrize("layout", ["all null", "mixed", "no null chunk", "empty"])
@pytest.mark.parametrize("threads", [1, 2])
def test_polars_conversion_of_null_chunks_equals_from_arrow(monkeypatch, layout, threads):
    """Entirely null chunks of a dictionary column (spectroscopy's marker without
    markers) become polars null runs instead of being converted row by row: the frame
    is pl.from_arrow's, dtype for dtype and chunk for chunk, whatever the chunks hold,
    and the other columns keep their places."""
    from bindf.frontends import output

    monkeypatch.setattr(output, "PARALLEL_POLARS_MIN_ROWS", 10)
    rng = np.random.default_rng(3)
    names = pa.array(["frame", "line", "pixel"])
    pattern = {"all null": [True] * 5, "mixed": [True, False, True, True, False],
               "no null chunk": [False] * 3, "empty": []}[layout]
    batches = []
    for null in pattern:
        n = int(rng.integers(1, 30))
        indices = pa.array(rng.integers(0, 3, n).astype(np.int8),
                           mask=np.ones(n, bool) if null else rng.random(n) < 0.3)
        marker = pa.DictionaryArray.from_arrays(indices, names)
        batches.append(pa.record_batch(
            [pa.array(rng.random(n)), marker, pa.array(rng.integers(0, 9, n)), marker],
            names=["x", "marker", "channel", "marker2"]))
    schema = pa.schema([("x", pa.float64()), ("marker", pa.dictionary(pa.int8(), pa.string())),
                        ("channel", pa.int64()), ("marker2", pa.dictionary(pa.int8(), pa.string()))])
    table = pa.Table.from_batches(batches, schema=schema)
    got = output.table_to_polars(table, threads=threads)
    expected = pl.from_arrow(table, rechunk=False)
    assert got.columns == expected.columns and got.dtypes == expected.dtypes
    assert got.equals(expected) and got.height == table.num_rows
    for name in got.columns:
        assert got[name].to_list() == expected[name].to_list()
        assert got[name].n_chunks() == expected[name].n_chunks()


def test_polars_conversion_in_parallel_equals_one_thread(monkeypatch):
    """Dictionary columns whose batches have different dictionaries (and nulls) convert to
    the same polars frame, chunk for chunk, on one thread or several."""
    from bindf.frontends import output

    monkeypatch.setattr(output, "PARALLEL_POLARS_MIN_ROWS", 10)
    rng = np.random.default_rng(2)
    batches = []
    for i in range(7):
        n = int(rng.integers(1, 40))
        names = pa.array(["frame", "line", "pixel"][i % 3:] + ["frame", "line"][: i % 3])
        indices = pa.array(rng.integers(0, 3, n).astype(np.int8),
                           mask=rng.random(n) < 0.3)
        batches.append(pa.record_batch(
            [pa.DictionaryArray.from_arrays(indices, names), pa.array(rng.random(n))],
            names=["marker", "x"]))
    table = pa.Table.from_batches(batches)
    one = output.table_to_polars(table, threads=1)
    for threads in (2, 3, 16):
        many = output.table_to_polars(table, threads=threads)
        assert many.equals(one) and many.dtypes == one.dtypes
        assert many["marker"].to_list() == one["marker"].to_list()
        assert many.n_chunks() == one.n_chunks()


def test_threads_beyond_four_per_core_are_four_per_core(monkeypatch) -> None:
    """threads=20000 (or BINDF_NUM_THREADS=999999) is four threads per usable core: a
    read decodes in memory, so more only wait (20000 once meant 250 threads and a
    part per 30 records)."""
    from bindf import _threads

    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    assert _threads.resolve_threads(20000) == 8 == _threads.resolve_threads(2**31)
    assert _threads.resolve_threads(5) == 5
    monkeypatch.setenv("BINDF_NUM_THREADS", "999999")
    assert _threads.resolve_threads(None) == 8


# -- sparse IT02: the chain walked on one thread, reads and output pages on another -------
#: Bins of :func:`_sparse_file` (each with a count: the writer leaves out empty ones).
SPARSE_BINS = 6000


def _sparse_file(path: Path, seed: int = 4, marker: bool = True) -> Path:
    """A sparse IT02 file of :data:`SPARSE_BINS` bins with random masks (and its end
    marker)."""
    rng = np.random.default_rng(seed)
    n = SPARSE_BINS
    counts = {f"ch{c + 1}": rng.poisson(rate, n).astype(np.uint32) * (rng.random(n) < 0.6)
              for c, rate in enumerate((30.0, 2.0, 0.3))}
    counts["ch1"][(counts["ch1"] == 0) & (counts["ch2"] == 0) & (counts["ch3"] == 0)] = 1
    frame = {"time_ns": np.arange(1, n + 1) * 1000.0, **counts}
    bindf.write_it02(path, frame, {"channels": [0, 1, 2], "bin_width_micros": 1},
                     layout="sparse")
    if not marker:  # an acquisition stopped without its end marker
        path.write_bytes(path.read_bytes()[:-9])
    return path


@pytest.fixture
def small_sparse_chunks(monkeypatch):
    """Chunks of 4 KiB: a file of a few hundred KB takes the read-ahead path, with many
    chunk boundaries inside records."""
    import bindf.formats.it02 as it02

    monkeypatch.setattr(it02, "CHUNK_BYTES", 4096)


@pytest.mark.parametrize("headroom", [4096, 0])  # 0: every chunk's tail is copied instead
@pytest.mark.parametrize("kwargs", [{}, {"columns": ["ch3"]}, {"columns": ["time_ns", "ch1"]},
                                    {"n_rows": 777}, {"batch_size": 500},
                                    {"fill_gaps": True}])
def test_sparse_it02_read_ahead_equals_sequential(tmp_path, small_sparse_chunks, monkeypatch,
                                                  headroom, kwargs):
    import bindf.formats._stream as stream

    monkeypatch.setattr(stream, "READ_AHEAD_HEADROOM", headroom)
    for marker in (True, False):
        path = _sparse_file(tmp_path / f"s{marker}.bin", marker=marker)
        sequential = bindf.read(path, output="arrow", threads=1, **kwargs)
        parallel = bindf.read(path, output="arrow", threads=2, **kwargs)
        assert parallel.equals(sequential)
        assert parallel.num_rows == kwargs.get("n_rows", SPARSE_BINS)
        assert (parallel.schema.metadata == sequential.schema.metadata)


def test_sparse_it02_read_ahead_is_used_and_faults_in_the_output(tmp_path, small_sparse_chunks,
                                                                 monkeypatch):
    """Each chunk after the first is read by the other thread, which then faults in the
    output rows it can fill; nothing reads ahead on one thread or for a few rows."""
    import bindf.formats._stream as stream
    import bindf.formats.it02 as it02

    path = _sparse_file(tmp_path / "s.bin")
    reads, faulted = [], []
    real_fault_in, real_read_into = it02.fault_in, stream.read_into
    monkeypatch.setattr(stream, "read_into", lambda f, buffer: (
        reads.append(threading.current_thread().name), real_read_into(f, buffer))[1])
    monkeypatch.setattr(it02, "fault_in", lambda array: (
        faulted.append(array.size), real_fault_in(array)))
    bindf.read(path, output="arrow", threads=2)
    assert len(reads) > 20 and all(name.startswith("bindf-read-ahead") for name in reads)
    assert faulted and sum(faulted) > 0
    reads.clear()
    bindf.read(path, output="arrow", threads=1)
    bindf.read(path, output="arrow", threads=2, n_rows=10)
    assert reads and not any(name.startswith("bindf-read-ahead") for name in reads)


def test_sparse_it02_read_ahead_truncated_and_damaged(tmp_path, small_sparse_chunks):
    """A file cut inside a record warns and keeps every complete record; damage under
    each on_error gives what the sequential read gives."""
    path = _sparse_file(tmp_path / "s.bin", marker=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:-5])
    results = []
    for threads in (1, 2):
        with pytest.warns(TruncatedFileWarning, match="incomplete"):
            results.append(bindf.read(cut, output="arrow", threads=threads))
    assert results[0].equals(results[1]) and results[1].num_rows == SPARSE_BINS - 1
    damaged = bytearray(data)
    offset = bindf.registry.open_reader(bindf._source.Source(str(path))).data_offset
    for _ in range(4000):  # walk the chain to the 4000th record; break its mask
        offset += 9 + 4 * bin(damaged[offset + 8]).count("1")
    damaged[offset + 8] = 0xF0
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(damaged))
    with pytest.raises(bindf.CorruptDataError) as caught:
        bindf.read(bad, threads=2, layout="sparse")
    assert caught.value.offset == offset
    got = [bindf.read(bad, output="arrow", threads=t, layout="sparse", on_error="skip")
           for t in (1, 2)]
    with pytest.warns(CorruptDataWarning, match="mask 0xf0") as caught:
        got.append(bindf.read(bad, output="arrow", threads=2, layout="sparse", on_error="warn"))
    assert [w.message.offset for w in caught] == [offset]
    assert got[0].equals(got[1]) and got[1].equals(got[2]) and got[1].num_rows == 4000


def test_sparse_it02_read_ahead_of_a_file_that_shrank(tmp_path, small_sparse_chunks):
    """Cut after it was opened: the read ahead comes back short, a truncation warning,
    every record before the cut (as one thread reads it)."""
    from bindf._source import Source
    from bindf.formats.it02 import IT02Reader

    path = _sparse_file(tmp_path / "s.bin")
    data = path.read_bytes()
    tables = []
    for threads in (1, 2):
        path.write_bytes(data)
        reader = IT02Reader(Source(str(path)), threads=threads, layout="sparse")
        reader.keeps_every_batch = True
        path.write_bytes(data[:len(data) // 2])  # the writer truncated it meanwhile
        with pytest.warns(TruncatedFileWarning, match="shrank"):
            tables.append(pa.Table.from_batches(list(reader.iter_batches())))
    assert tables[0].equals(tables[1]) and 0 < tables[1].num_rows < SPARSE_BINS // 2 + 50


def test_fault_in_leaves_contents_and_takes_any_slice():
    from bindf._lanes import fault_in

    array = np.arange(3_000_000, dtype=np.uint32)
    for piece in (array, array[1:], array[5:9], array[:0], array[123_456:2_000_001]):
        fault_in(piece)
    assert np.array_equal(array, np.arange(3_000_000, dtype=np.uint32))
    fresh = np.empty(1 << 22, dtype=np.uint8)
    fault_in(fresh[100:])  # pages of new memory: faulted in, ready to write
    fresh[:] = 7
    assert (fresh == 7).all()


def test_a_lane_whose_pool_refuses_a_task_raises_and_stays_usable():
    """A pool that refuses (after interpreter shutdown) left the lane counting a runner
    that never ran: every later task waited for good."""
    from concurrent.futures import ThreadPoolExecutor

    refusing = ThreadPoolExecutor(1)
    refusing.shutdown()
    lane = _threads.Lane(refusing, 2)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="shutdown"):
            lane.submit(lambda: 1)
    assert lane._runners == 0 and not lane._queue
