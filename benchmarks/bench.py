"""bindf benchmarks: throughput as a ratio to a same-run numpy yardstick, and peak memory.

    python benchmarks/bench.py                 # ~200 MB inputs (the issues' sizes)
    python benchmarks/bench.py --size-mb 20    # quicker
    python benchmarks/bench.py --only spectro  # cases whose name contains "spectro"

Inputs are generated once into ``benchmarks/_data/`` (git-ignored) and reused.
Cases live in ``benchmarks/bench_<format>.py`` (``CASES`` lists); see ``_harness.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0)
    parser.add_argument("--only", default="")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args(argv)
    workdir = HERE / "_data"
    workdir.mkdir(exist_ok=True)
    target = int(args.size_mb * 1e6)

    ystick_path = h.make_yardstick_file(workdir, target)
    y_size = ystick_path.stat().st_size
    y_time, _ = h.best_time(lambda: h.yardstick(ystick_path), args.repeat)
    print(f"yardstick: np.fromfile + copy of 3 columns, {y_size / 1e6:.0f} MB: "
          f"{y_size / y_time / 1e6:.0f} MB/s at the start; each case is timed in rounds with "
          "its own, and compared with the faster of the two (column y MB/s)")
    print()
    print(f"{'case':44} {'MB':>6} {'MB/s':>7} {'ratio':>6} {'goal':>6} {'Mrows/s':>8} "
          f"{'peak/out':>9} {'y MB/s':>7}")

    cases = []
    modules = [importlib.import_module(p.stem) for p in sorted(HERE.glob("bench_*.py"))]
    for module in modules:
        # Benchmarks with their own command line (bench_follow: a writer process and
        # latencies, not a read rate) declare no CASES.
        cases.extend(getattr(module, "CASES", ()))
    for case in cases:
        if args.only and args.only not in case.name:
            continue
        path = case.make(workdir, target)
        fn = h.resolve(case.run_ref)
        t, case_y_time, frame = h.best_time_with_yardstick(
            lambda fn=fn, path=path: fn(path), ystick_path, args.repeat)
        size = path.stat().st_size
        rate = size / t / 1e6
        # The faster of the case's own yardstick and the run's first one: a yardstick
        # round that follows the release of a large frame can run at half speed (the
        # allocators hand memory back to the system meanwhile), which would flatter the
        # case; a ratio against the faster yardstick never does.
        y_rate = y_size / min(case_y_time, y_time) / 1e6
        ratio = rate / y_rate
        rows = h.frame_rows(frame)
        del frame
        goal = f"{case.goal_ratio:.2f}" if case.goal_ratio is not None else "-"
        peak = "-"
        if not args.no_memory:
            m = h.measure_peak_in_subprocess(case.run_ref, path)
            peak = f"{(m['peak'] - m['before']) / max(m['output'], 1):.2f}"
        flag = "" if case.goal_ratio is None or ratio >= case.goal_ratio else "  (below goal)"
        print(f"{case.name:44} {size / 1e6:6.0f} {rate:7.0f} {ratio:6.2f} {goal:>6} "
              f"{rows / t / 1e6:8.2f} {peak:>9} {y_rate:7.0f}{flag}")
        for note in case.notes:
            print(f"    {note}")
    print()
    print("ratio = case MB/s ÷ yardstick MB/s, both the best of rounds that alternate them "
          "(y MB/s: that or the run's first yardstick, whichever is faster). peak/out = (peak RSS − RSS before the read) ÷ output frame size, in a "
          "fresh process.")
    # Benchmarks that do not fit a Case (e.g. a dask cluster) report on their own.
    for module in modules:
        if hasattr(module, "extra_report") and (not args.only or args.only in module.__name__):
            print()
            module.extra_report(workdir, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
