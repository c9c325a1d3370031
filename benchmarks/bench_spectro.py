"""Spectroscopy photon-event benchmarks (issue: read_spectro ≥ 1.0× the yardstick)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import _harness as h
import polars as pl

import bindf


def make_legacy(workdir: Path, target_bytes: int) -> Path:
    # Same bytes as the yardstick file: legacy raw output is exactly that layout.
    return h.make_yardstick_file(workdir, target_bytes)


def read_polars(path: Path) -> pl.DataFrame:
    return bindf.read_spectro(path, output="polars")


def read_polars_with_paths(path: Path) -> pl.DataFrame:
    # the file's path on every row (as a glob of runs is read to tell them apart)
    return bindf.read_spectro(path, output="polars", include_file_paths="path")


def read_polars_raw_columns(path: Path) -> pl.DataFrame:
    return bindf.read_spectro(
        path, output="polars", columns=["event", "microtime_ns", "macrotime_ns"]
    )


def vendor_struct_loop_rate(path: Path, max_bytes: int = 20_000_000) -> float:
    """MB/s of the FLIM LABS example script's approach: ``struct.unpack`` per 17 bytes."""
    t0 = time.perf_counter()
    done = 0
    with open(path, "rb") as f:
        while done < max_bytes:
            data = f.read(17)
            if len(data) < 17:
                break
            struct.unpack("<Bdd", data)
            done += 17
    return done / (time.perf_counter() - t0) / 1e6


def vendor_it02_dense_rate(path: Path, n_channels: int, max_bytes: int = 20_000_000) -> float:
    """MB/s of the vendor's IT02 reading loop: one ``struct.unpack`` per record."""
    import json

    with open(path, "rb") as f:
        f.read(4)
        (length,) = struct.unpack("<I", f.read(4))
        json.loads(f.read(length))
        size = 8 + 4 * n_channels
        fmt = "<d" + "I" * n_channels
        t0 = time.perf_counter()
        done = 0
        while done < max_bytes:
            data = f.read(size)
            if len(data) < size:
                break
            struct.unpack(fmt, data)
            done += size
    return done / (time.perf_counter() - t0) / 1e6


def extra_report(workdir: Path, args: object) -> None:
    """The vendor scripts' per-record ``struct`` loops on the same files (first 20 MB)."""
    target = int(getattr(args, "size_mb", 200) * 1e6)
    spectro = make_legacy(workdir, target)
    print("FLIM LABS vendor-script approach (struct.unpack per record, first 20 MB):")
    print(f"    spectroscopy photon events: {vendor_struct_loop_rate(spectro):.1f} MB/s")
    peak, seconds, maxrss = sink_parquet_peak(spectro, workdir)
    print(f"pl.scan_spectro({spectro.stat().st_size / 1e6:.0f} MB).sink_parquet(): {seconds:.2f} s, "
          f"peak RSS +{peak:.0f} MB over the imports (goal < 400 MB); "
          f"(getrusage ru_maxrss: {maxrss:.0f} MB, which on Linux includes the parent "
          "process's peak: ru_maxrss survives fork+exec, hence VmHWM)")
    dense = sorted(workdir.glob("it02_dense*.bin"))
    if dense:
        print(f"    IT02 dense ({dense[0].name}): "
              f"{vendor_it02_dense_rate(dense[0], _it02_channels(dense[0])):.1f} MB/s")


_SINK = """
import resource, sys, time
sys.path.insert(0, {here!r})
import _harness as h
import polars as pl, bindf
h.reset_peak_rss(); before = h._current_rss()
t0 = time.perf_counter()
pl.scan_spectro({path!r}).sink_parquet({out!r})
print(f"{{(h.peak_rss() - before) / 1e6:.0f}} {{time.perf_counter() - t0:.2f}} "
      f"{{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f}}")
"""


def sink_parquet_peak(path: Path, workdir: Path) -> tuple[float, float, float]:
    """Peak RSS (MB above the RSS after imports), seconds, and ru_maxrss (MB) of
    ``pl.scan_spectro(path).sink_parquet(...)`` in a fresh subprocess."""
    import subprocess
    import sys

    out = workdir / "sink.parquet"
    code = _SINK.format(here=str(Path(__file__).parent), path=str(path), out=str(out))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    out.unlink(missing_ok=True)
    peak, seconds, maxrss = map(float, result.stdout.split())
    return peak, seconds, maxrss


def _it02_channels(path: Path) -> int:
    return len(bindf.read_header(path)["channels"])


CASES = [
    h.Case("spectro legacy → polars (all 5 columns)", make_legacy,
           "bench_spectro:read_polars", goal_ratio=1.0),
    h.Case("spectro legacy → polars (3 raw columns)", make_legacy,
           "bench_spectro:read_polars_raw_columns", goal_ratio=1.0),
    h.Case("spectro legacy → polars, include_file_paths", make_legacy,
           "bench_spectro:read_polars_with_paths"),
]
