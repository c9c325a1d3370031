"""Ingestion benchmark: a campaign of 2,000 small ``.apx`` runs into a Parquet dataset.

Not a harness case (it is about many files, not bytes per second): ``bench.py`` calls
:func:`extra_report`, or run it alone::

    python benchmarks/bench_ingest.py [--files 2000] [--threads N]

Measured, all in this process (so Python's start-up is in none of them):

* ``bindf convert RUNS --output-dir OUT``: the loop users write today, one Parquet file
  per run (``bindf.cli.main``, one thread);
* ``bindf.ingest(RUNS, DEST)``, first run, with one thread and with the default threads:
  hashing, decoding, Parquet parts with header columns, manifest;
* the no-op rerun: nothing changed, so only a stat per file and the manifest. The goal is
  well under a tenth of the first run.

The runs are copies of the bundled 28 KB sample (776 hits each), spread over 20 folders.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import _harness as h  # noqa: E402, F401 - the harness sets up paths like the other cases

import bindf  # noqa: E402

CASES: list = []  # everything is in extra_report
SAMPLE = Path(bindf.__file__).parent / "samples" / "astropix_threshold_scan.apx"


def make_campaign(workdir: Path, n_files: int) -> Path:
    root = workdir / f"ingest_{n_files}_runs"
    if root.exists() and sum(1 for _ in root.rglob("*.apx")) == n_files:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n_files):
        folder = root / f"scan{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE, folder / f"run{i:05d}.apx")
    return root


def _timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(workdir: Path, n_files: int = 2000, threads: int | None = None) -> dict[str, float]:
    from bindf.cli import main as cli

    root = make_campaign(workdir, n_files)
    out = workdir / "ingest_out"
    shutil.rmtree(out, ignore_errors=True)
    glob = str(root / "*" / "*.apx")
    convert = _timed(lambda: cli(["convert", glob, "--output-dir", str(out / "convert"),
                                  "--force", "-q"]))
    results = {"convert": convert}
    for label, n_threads in (("ingest_1thread", 1), ("ingest", threads)):
        dest = out / label
        results[label] = _timed(lambda dest=dest, n_threads=n_threads: bindf.ingest(
            root, dest, threads=n_threads, header_columns=["args.threshold"]))
    dest = out / "ingest"
    reports = []
    results["rerun"] = _timed(lambda: reports.append(
        bindf.ingest(root, dest, threads=threads, header_columns=["args.threshold"])))
    assert len(reports[0].unchanged) == n_files, reports[0].summary()

    print(f"\ningestion of {n_files} x {SAMPLE.stat().st_size / 1000:.1f} KB .apx runs "
          f"(in-process; default threads = {_threads(threads)})")
    print(f"{'case':<34} {'s':>8} {'files/s':>9} {'x convert':>10}")
    for label, name in (("convert", "bindf convert --output-dir (1 thread)"),
                        ("ingest_1thread", "ingest, first run, 1 thread"),
                        ("ingest", "ingest, first run, default threads"),
                        ("rerun", "ingest, no-op rerun")):
        seconds = results[label]
        print(f"{name:<34} {seconds:8.2f} {n_files / seconds:9.0f} "
              f"{convert / seconds:10.2f}")
    print(f"no-op rerun / first run: {results['rerun'] / results['ingest']:.3f} (goal < 0.1)")
    shutil.rmtree(out, ignore_errors=True)
    return results


def _threads(threads: int | None) -> int:
    from bindf._ingest import _usable_cores

    return threads or _usable_cores()


def extra_report(workdir: Path, args: argparse.Namespace) -> None:
    """Called by ``bench.py`` after the harness cases."""
    run(workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    workdir = HERE / "_data"
    workdir.mkdir(exist_ok=True)
    run(workdir, args.files, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
