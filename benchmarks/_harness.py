"""Benchmark harness shared by ``benchmarks/bench.py`` and the per-format case files.

Every throughput is printed as a ratio to a *yardstick measured in the same run*, in
rounds that alternate it with the case (:func:`best_time_with_yardstick`): numpy's own
parse of an equally sized file of 17-byte records (``np.fromfile`` with the packed dtype,
then copying out the three columns). Ratios are comparable across machines and runs;
absolute MB/s are not.

Peak memory is measured in a fresh subprocess per case: ``ru_maxrss`` after the read
minus the RSS just before it, compared with the size of the frame it produced.

A per-format file ``benchmarks/bench_<name>.py`` defines ``CASES: list[Case]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPECTRO_DTYPE = np.dtype([("e", "u1"), ("mi", "<f8"), ("ma", "<f8")])


@dataclass
class Case:
    """One benchmark: make an input of about ``target_bytes``, then read it."""

    name: str
    #: ``make(workdir, target_bytes) -> path`` (cached by the harness across runs).
    make: Callable[[Path, int], Path]
    #: ``run(path) -> frame``; the code under test. Must be importable by a subprocess:
    #: give ``module:function`` in ``run_ref``.
    run_ref: str
    #: Goal as a ratio to the yardstick (None: no goal, reported only).
    goal_ratio: float | None = None
    #: Count rows of the frame under this unit name in the report ("hits", "rows").
    unit: str = "rows"
    #: Extra lines of text to print after the case (comparisons, notes).
    notes: list[str] = field(default_factory=list)


def resolve(ref: str) -> Callable[..., Any]:
    module, _, func = ref.partition(":")
    mod = __import__(module, fromlist=[func])
    return getattr(mod, func)


def best_time(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def best_time_with_yardstick(fn: Callable[[], Any], yardstick_path: Path,
                             repeat: int = 3) -> tuple[float, float, Any]:
    """The best time of ``fn`` and of the yardstick over ``repeat`` rounds that alternate
    them, and ``fn``'s last result. Why rounds: on a shared virtual machine the speed of
    everything drifts by tens of percent within minutes, so a yardstick timed once at the
    start of a run is not the one a case minutes later should be compared with."""
    best = best_y = float("inf")
    result = None
    for _ in range(repeat):
        result = None  # each round starts with the memory of none of the case's frames
        t0 = time.perf_counter()
        yardstick(yardstick_path)
        best_y = min(best_y, time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, best_y, result


def make_yardstick_file(workdir: Path, target_bytes: int) -> Path:
    path = workdir / f"yardstick_{target_bytes}.bin"
    if not path.exists() or path.stat().st_size != (target_bytes // 17) * 17:
        n = target_bytes // 17
        rng = np.random.default_rng(0)
        rec = np.empty(n, dtype=SPECTRO_DTYPE)
        rec["e"] = rng.integers(0, 4, n)
        rec["mi"] = rng.random(n) * 25.0
        rec["ma"] = np.cumsum(rng.random(n) * 10.0)
        rec.tofile(path)
    return path


def yardstick(path: Path) -> dict[str, np.ndarray]:
    """numpy's own parse: what "close to the disk" means for a fixed-record file."""
    rec = np.fromfile(path, dtype=SPECTRO_DTYPE)
    return {name: rec[name].copy() for name in ("e", "mi", "ma")}


def frame_nbytes(frame: Any) -> int:
    if hasattr(frame, "estimated_size"):  # polars
        return int(frame.estimated_size())
    if hasattr(frame, "nbytes") and not callable(frame.nbytes):  # pyarrow table
        return int(frame.nbytes)
    if hasattr(frame, "memory_usage"):  # pandas
        return int(frame.memory_usage(index=False, deep=True).sum())
    if isinstance(frame, dict):
        return int(sum(v.nbytes for v in frame.values()))
    raise TypeError(type(frame))


def frame_rows(frame: Any) -> int:
    if isinstance(frame, dict):
        return len(next(iter(frame.values())))
    return int(frame.shape[0]) if hasattr(frame, "shape") else int(frame.num_rows)


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """This process's RSS high-water mark (VmHWM), in bytes.

    Not ``getrusage().ru_maxrss``: on Linux that value survives ``fork``+``exec``, so a
    child started by a big parent reports the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0), so the next peak is the read's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_peak_in_subprocess(run_ref: str, path: Path) -> dict[str, int]:
    """Run ``run_ref(path)`` in a fresh interpreter; report its memory high-water mark."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import _harness as h\n"
        f"fn = h.resolve({run_ref!r})\n"
        "import numpy, pyarrow, pandas, polars, bindf  # imports are not the read's cost\n"
        # bindf imports format modules on first use: import them all here too
        "[spec.reader_class() for spec in bindf.list_formats()]\n"
        "h.reset_peak_rss()\n"
        "before = h._current_rss()\n"
        f"frame = fn({str(path)!r})\n"
        "peak = h.peak_rss()\n"
        "print(json.dumps({'before': before, 'peak': peak, 'output': h.frame_nbytes(frame)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
