"""dask benchmark: a 2-worker LocalCluster against one process, on 8 files of ~50 MB.

Not a harness case (it needs a cluster and many files): ``bench.py`` calls
:func:`extra_report`, or run it alone::

    python benchmarks/bench_dask.py [--file-mb 50] [--files 8] [--repeat 3]

The workload is a typical "many runs → one summary" job: read every file and reduce it
(mean microtime per channel). Both sides do the same work; the cluster's speed-up can be
at most the number of cores (2 on the project's machines). Shipping whole frames back to
the client is measured too: that is pickling + transfer, not decoding, and shows why
reductions should happen on the workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402

import bindf  # noqa: E402

CASES: list[h.Case] = []  # everything is in extra_report


def make_files(workdir: Path, n_files: int, file_bytes: int) -> list[Path]:
    """``n_files`` legacy spectroscopy files (the yardstick layout), made once."""
    import numpy as np

    folder = workdir / f"dask_{n_files}x{file_bytes}"
    folder.mkdir(exist_ok=True)
    n = file_bytes // 17
    paths = []
    for i in range(n_files):
        path = folder / f"spectroscopy-output-{i:02d}.bin"
        if not path.exists() or path.stat().st_size != n * 17:
            rng = np.random.default_rng(i)
            rec = np.empty(n, dtype=h.SPECTRO_DTYPE)
            rec["e"] = rng.integers(0, 4, n)
            rec["e"][::50] = 76
            rec["mi"] = rng.random(n) * 25.0
            rec["ma"] = np.cumsum(rng.random(n) * 10.0)
            rec.tofile(path)
        paths.append(path)
    return paths


def _best(fn, repeat: int, client: Any = None) -> tuple[float, Any]:
    """Best of ``repeat`` runs. On a cluster, wait between runs until the scheduler has
    forgotten the previous run's keys: an identical graph submitted while its results
    are still held would be answered from memory, not computed."""
    if client is None:
        return h.best_time(fn, repeat)

    def idle() -> None:
        deadline = time.perf_counter() + 10
        while client.run_on_scheduler(_scheduler_task_count) and time.perf_counter() < deadline:
            time.sleep(0.05)

    best, result = float("inf"), None
    for _ in range(repeat):
        idle()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _scheduler_task_count(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def run(workdir: Path, n_files: int = 8, file_mb: float = 50.0, repeat: int = 3) -> None:
    import dask
    from distributed import Client, LocalCluster

    import bindf.dask as bdask

    paths = [str(p) for p in make_files(workdir, n_files, int(file_mb * 1e6))]
    load_before = os.getloadavg()[0]
    total_mb = sum(os.path.getsize(p) for p in paths) / 1e6
    read_opts = {"format": "spectro", "container": "legacy"}

    def eager_reduce():
        df = bindf.read(paths, **read_opts)
        return df.groupby("channel").microtime_ns.mean()

    def eager_read():
        return len(bindf.read(paths, **read_opts))

    t_eager, expected = _best(eager_reduce, repeat)
    t_eager_read, expected_rows = _best(eager_read, repeat)

    rows: list[tuple[str, float, float]] = []
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        startup = time.perf_counter() - t0
        for blocksize in ("128 MiB", "16 MiB"):
            ddf = bdask.read(paths, blocksize=blocksize, **read_opts)
            label = f"{ddf.npartitions} partitions ({blocksize})"

            def reduce(ddf=ddf):
                return ddf.groupby("channel").microtime_ns.mean().compute()

            t, got = _best(reduce, repeat, client)
            assert (got.sort_index() - expected.sort_index()).abs().max() < 1e-9
            rows.append((f"cluster read+reduce, {label}", t, t_eager))
            t, n = _best(lambda ddf=ddf: ddf.map_partitions(len).compute().sum(), repeat, client)
            assert n == expected_rows
            rows.append((f"cluster read only,   {label}", t, t_eager_read))
        ddf = bdask.read(paths, **read_opts)
        t_ship, _ = _best(lambda: len(ddf.compute()), 1, client)
    with dask.config.set(scheduler="threads", num_workers=2):
        ddf = bdask.read(paths, blocksize="16 MiB", **read_opts)
        t, _ = _best(lambda: ddf.groupby("channel").microtime_ns.mean().compute(), repeat)
        rows.append((f"threads (1 process, 2 threads), {ddf.npartitions} partitions", t,
                     t_eager))

    print(f"dask: {n_files} legacy spectroscopy files, {total_mb:.0f} MB in all; "
          f"LocalCluster(n_workers=2, threads_per_worker=1, processes=True), "
          f"started in {startup:.1f} s (not counted)")
    print(f"  single process: read+reduce {t_eager:.2f} s ({total_mb / t_eager:.0f} MB/s), "
          f"read only {t_eager_read:.2f} s ({total_mb / t_eager_read:.0f} MB/s)")
    for name, t, baseline in rows:
        print(f"  {name:58} {t:6.2f} s {total_mb / t:6.0f} MB/s  speed-up {baseline / t:4.2f}x")
    print(f"  cluster, whole frame shipped to the client (compute()):  {t_ship:6.2f} s "
          f"(vs {t_eager_read:.2f} s eager; transfer, not decoding)")
    print(f"  cores here: {os.cpu_count()}; load average before/after: {load_before:.1f}/"
          f"{os.getloadavg()[0]:.1f} (other processes on the machine skew the speed-up)")


def extra_report(workdir: Path, args: argparse.Namespace) -> None:
    """Called by ``bench.py`` after the harness cases."""
    run(workdir, repeat=args.repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--file-mb", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = HERE / "_data"
    workdir.mkdir(exist_ok=True)
    run(workdir, args.files, args.file_mb, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
