"""A read that an error ends lets go of its memory when the error goes, without waiting
for the garbage collector: no error of a failed read may be held in a reference cycle
by the frames of its own traceback (see the module docstring of ``bindf._threads``).
Run on every Python CI tests, since what a frame holds differs between versions."""

from __future__ import annotations

import functools
import gc
import warnings
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import repeated_apx_run

import bindf


def _errors_left_in_cycles(call: Callable[[], object]) -> tuple[str, list[str]]:
    """Run ``call`` with the garbage collector off; the name of what it raised, and the
    errors then found in reference cycles (which only the collector would free, with
    whatever the frames of their tracebacks hold: outputs, decompressed copies)."""
    gc.collect()
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                call()
            except Exception as exc:  # (let go of at the end of this clause)
                raised = type(exc).__name__
            else:
                raised = "nothing"
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        in_cycles = [type(o).__name__ for o in gc.garbage if isinstance(o, BaseException)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return raised, in_cycles


@pytest.fixture(scope="module")
def damaged_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``big.apx``: a 9 MB AstroPix run (the sample's readouts repeated; read in parts on
    two threads) with a readout in its middle damaged; ``glob/r0-2.apx``: 1 MB runs, the
    second damaged near its end."""
    folder = tmp_path_factory.mktemp("damaged_runs")
    (folder / "big.apx").write_bytes(repeated_apx_run(331, damaged="middle"))
    (folder / "glob").mkdir()
    for i in range(3):
        run = repeated_apx_run(40, damaged="last" if i == 1 else None)
        (folder / "glob" / f"r{i}.apx").write_bytes(run)
    return folder


_FAILING_READS: dict[str, Callable[[Path, int], object]] = {
    "eager, arrow": lambda d, t: bindf.read_apx(str(d / "big.apx"), threads=t,
                                                 output="arrow"),
    "eager, pandas": lambda d, t: bindf.read_apx(str(d / "big.apx"), threads=t),
    "eager, polars": lambda d, t: bindf.read_apx(str(d / "big.apx"), threads=t,
                                                  output="polars"),
    "bytes": lambda d, t: bindf.read_apx((d / "big.apx").read_bytes(), threads=t),
    "glob": lambda d, t: bindf.read_apx(str(d / "glob" / "*.apx"), threads=t),
    "chunks": lambda d, t: list(bindf.read_apx(str(d / "big.apx"), threads=t,
                                               chunksize=100_000)),
    "iter_batches": lambda d, t: list(bindf.iter_batches(str(d / "big.apx"), threads=t)),
    "scan": lambda d, t: bindf.scan_apx(str(d / "big.apx"), threads=t).collect(),
    "open": lambda d, t: bindf.open(str(d / "big.apx"), threads=t).to_batch_reader().read_all(),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("way", sorted(_FAILING_READS))
def test_a_failed_read_leaves_its_error_in_no_reference_cycle(
        damaged_runs: Path, way: str, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that a damaged readout ends lets go of everything once its error goes, the
    garbage collector off: no frame of the error's traceback holds the error (through a
    local, a future, a part or a file's result). Before, on two threads, the error of an
    AstroPix run read in parts held its 576 MB of columns until the collector ran (a 70
    MB run; see bindf._threads)."""
    from bindf.frontends import batches

    monkeypatch.setattr(batches, "PARALLEL_MIN_FILE_BYTES", 0)  # the glob's on the pool
    before = pa.total_allocated_bytes()
    raised, in_cycles = _errors_left_in_cycles(
        lambda: _FAILING_READS[way](damaged_runs, threads))
    # (older polars wrap a scan's error in their ComputeError: see raises_from_scan)
    assert raised in ("CorruptDataError", "ComputeError" if way == "scan" else "")
    assert in_cycles == []
    assert pa.total_allocated_bytes() <= before + (1 << 20)


def test_failed_tasks_and_parts_leave_their_errors_in_no_reference_cycle() -> None:
    """A failing task of :func:`run_all`, a failing part of :func:`read_in_parts` (on the
    pool or on the calling thread): the error raised, no cycle left, the tasks'
    arguments let go."""
    import weakref

    from bindf._threads import read_in_parts, run_all, shared_executor

    class Item:
        def __init__(self, fails: bool) -> None:
            self.fails = fails

    def task(item: Item) -> int:
        if item.fails:
            raise OSError("the disk went away")
        return 1

    def fails_third(k: int) -> int:
        if k == 2:
            raise OSError("the disk went away")
        return 10

    pool = shared_executor("bindf-test-cycles", 2)
    items = [Item(fails=k == 2) for k in range(4)]
    freed = [weakref.ref(item) for item in items]
    assert _errors_left_in_cycles(functools.partial(run_all, pool, task, items)) == (
        "OSError", [])
    items.clear()
    assert [ref() for ref in freed] == [None] * 4
    for helpers in (pool, None):
        assert _errors_left_in_cycles(functools.partial(
            read_in_parts, helpers, fails_third, [10, 10, 10, 10])) == ("OSError", [])
