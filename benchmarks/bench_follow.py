"""Live following benchmark: ``bindf.follow`` on a file another process appends to.

Not a harness case (it is about latency, not bytes per second)::

    python benchmarks/bench_follow.py [--rate 50] [--seconds 4] [--poll 0.1]

* A writer process appends STT1 photon records (17 bytes each) at ``--rate`` MB/s, in
  chunks every 10 ms, each record's ``macrotime_ns`` set to the wall-clock time
  (``time.time_ns``) just before its chunk is written and flushed.
* This process follows the file with ``poll_interval=--poll`` and measures, per frame,
  the latency from the flush of each chunk in it to the frame being yielded
  (``time.time_ns() - macrotime_ns``, one value per chunk): median and p99. A chunk
  waits for the next poll, so the median is about half the poll interval plus the
  decoding. Whether it kept up: rows
  yielded = rows written.
* Idle cost: once the writer stops, the follower keeps polling the idle file for
  ``--idle`` seconds; its CPU time over that span (``resource.getrusage``) divided by
  the span is the share of a core an idle follower uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import bindf

WRITER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    dtype = np.dtype([("event", "u1"), ("microtime_ns", "<f8"), ("macrotime_ns", "<f8")])
    per_chunk = int(rate * 1e6 * 0.01) // dtype.itemsize
    chunk = np.zeros(per_chunk, dtype=dtype)
    text = json.dumps({"channels": [0, 1, 2, 3], "laser_period_ns": 25.0}).encode()
    rows = 0
    with open(path, "wb", buffering=0) as f:
        f.write(b"STT1" + len(text).to_bytes(4, "little") + text)
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < seconds:
            chunk["macrotime_ns"] = time.time_ns()
            f.write(chunk.tobytes())
            rows += per_chunk
            k += 1
            delay = start + 0.01 * k - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    print(json.dumps({"rows": rows, "seconds": time.monotonic() - start}))
""")


def run(rate: float, seconds: float, poll: float, idle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "live.bin"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(rate),
                                   str(seconds)], stdout=subprocess.PIPE, text=True)
        latencies: list[float] = []
        rows = 0
        last_frame = time.monotonic()
        with bindf.follow(path, poll_interval=poll, idle_timeout=idle, output="arrow",
                          columns=["macrotime_ns"]) as follower:
            for frame in follower:
                now = time.time_ns()
                flushes = np.unique(frame.column("macrotime_ns").to_numpy())
                latencies.extend((now - flushes) / 1e6)  # one per chunk written
                rows += frame.num_rows
                last_frame = time.monotonic()
                usage = resource.getrusage(resource.RUSAGE_SELF)
        after = resource.getrusage(resource.RUSAGE_SELF)
        idle_span = time.monotonic() - last_frame
        written = json.loads(writer.communicate()[0])
        idle_cpu = (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)
        lat = np.array(latencies)
        return {
            "rate_mb_s": rate,
            "written_mb_s": written["rows"] * 17 / written["seconds"] / 1e6,
            "rows_written": written["rows"], "rows_yielded": rows, "chunks": len(lat),
            "latency_median_ms": float(np.median(lat)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
            "idle_cpu_share": idle_cpu / idle_span,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="MB/s written")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--poll", type=float, default=0.1, help="poll_interval")
    parser.add_argument("--idle", type=float, default=3.0, help="idle seconds measured")
    args = parser.parse_args()
    result = run(args.rate, args.seconds, args.poll, args.idle)
    for key, value in result.items():
        print(f"{key:>20}: {value:,.4g}" if isinstance(value, float) else f"{key:>20}: {value:,}")


if __name__ == "__main__":
    main()
