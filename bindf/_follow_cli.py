"""``bindf follow FILE...``: the command line of :func:`bindf.follow`.

A status line (rows, rows/s since the start, bytes, last time stamp, and per-channel counts for IT02 or
per-chip hits for AstroPix) is redrawn in place on a terminal and printed once per
interval otherwise. ``-o out.parquet`` streams every frame as a row group into a Parquet
file written atomically (temporary file, then rename) and finished properly when the
follow ends: end marker, idle timeout or Ctrl-C (SIGINT). The header, as known at the
end (a sparse IT02 end time included), is in the file's metadata.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._follow import Follower, follow
from .arrow import build_info

#: Columns whose totals the status line shows, per format: (column, label) — IT02
#: photon counts per channel, AstroPix hits per chip.
_TIME_COLUMNS = ("time_ns", "timestamp", "macrotime_ns")


def add_follow_command(sub: Any) -> None:
    """Register ``bindf follow`` on the CLI's subparsers."""
    p = sub.add_parser(
        "follow", help="follow files while they are written (live status, Parquet)",
        description="Decode files while an instrument writes them: only complete records, "
                    "nothing repeated or lost. Ends at the format's end marker (sparse "
                    "IT02), after --idle-timeout seconds without growth, or on Ctrl-C.")
    p.add_argument("sources", nargs="+", metavar="FILE", help="files or globs (in name order)")
    p.add_argument("-o", "--output", metavar="OUT.parquet",
                   help="also write every row to this Parquet file (atomically)")
    p.add_argument("--poll-interval", type=float, default=0.5, metavar="SECONDS")
    p.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="stop after this long without growth (0: never; default 60)")
    p.add_argument("--status-interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between status lines when not on a terminal")
    p.add_argument("--start", choices=["begin", "end"], default="begin")
    p.add_argument("--columns", help="comma-separated columns to keep")
    p.add_argument("--include-file-paths", metavar="NAME", help="add a column of file paths")
    p.add_argument("--on-error", choices=["raise", "warn", "skip"], default="raise")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("-q", "--quiet", action="store_true", help="no status line")
    p.add_argument("--format", help="force the input format (default: detect)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option")
    p.set_defaults(func=cmd_follow)


class Status:
    """The status line: totals over every frame, redrawn to ``out`` by a thread (every
    0.25 s in place on a terminal, one line per ``interval`` otherwise)."""

    def __init__(self, out: TextIO, interval: float) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval = interval
        self.started = time.monotonic()
        self.last_time: Any = None
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, follower: Follower) -> None:
        """Redraw from a thread, so that the line keeps coming while the file is idle."""
        period = 0.25 if self.tty else max(self.interval, 0.05)

        def loop() -> None:
            while not self._stop.wait(period):
                self.draw(follower)

        self._thread = threading.Thread(target=loop, name="bindf-follow-status", daemon=True)
        self._thread.start()

    def add(self, frame: pa.Table) -> None:
        with self._lock:
            self._add(frame)

    def _add(self, frame: pa.Table) -> None:
        for name in _TIME_COLUMNS:
            if name in frame.column_names and frame.num_rows:
                self.last_time = frame.column(name)[-1].as_py()
                break
        if "chip_id" in frame.column_names:  # AstroPix: hits per chip
            chips, hits = np.unique(frame.column("chip_id").to_numpy(), return_counts=True)
            for chip, n in zip(chips.tolist(), hits.tolist(), strict=True):
                key = f"chip{chip}"
                self.counts[key] = self.counts.get(key, 0) + n
        else:  # IT02 and co.: photon counts per channel column
            for name in frame.column_names:
                if name.startswith("ch") and name[2:].isdigit():
                    total = pc.sum(frame.column(name)).as_py() or 0
                    self.counts[name] = self.counts.get(name, 0) + int(total)

    def line(self, follower: Follower) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = [f"{follower.rows:,} rows", f"{follower.rows / elapsed:,.0f} rows/s",
                 f"{follower.bytes:,} bytes"]
        if self.last_time is not None:
            parts.append(f"last {self.last_time}")
        if self.counts:
            parts.append(" ".join(f"{k}={v:,}" for k, v in sorted(
                self.counts.items(), key=lambda kv: (len(kv[0]), kv[0]))))
        return " | ".join(parts)

    def draw(self, follower: Follower) -> None:
        with self._lock:
            text = self.line(follower)
            if self.tty:
                self.out.write("\r\x1b[2K" + text)
            else:
                self.out.write(text + "\n")
            self.out.flush()

    def close(self, follower: Follower) -> None:
        """Stop redrawing; draw the final totals."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.draw(follower)
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def cmd_follow(args: Any) -> int:
    from .cli import EX_OK, _columns, _parse_options
    from .parquet import write_batches

    follower = follow(
        args.sources if len(args.sources) > 1 else args.sources[0],
        poll_interval=args.poll_interval,
        idle_timeout=args.idle_timeout or None, output="arrow",
        columns=_columns(args.columns), include_file_paths=args.include_file_paths,
        start=args.start, on_error=args.on_error, format=args.format,
        **_parse_options(args.option))
    status = None if args.quiet else Status(sys.stderr, args.status_interval)
    # Ctrl-C ends the follow at its next poll; the output is then finished properly.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: follower.stop())
    if status is not None:
        status.start(follower)
    try:
        frames = _with_status(follower, status)
        if args.output:
            first = next(frames, None)
            if first is None:
                return EX_OK
            schema = first.schema.remove_metadata()

            def batches() -> Iterator[pa.RecordBatch]:
                yield from first.replace_schema_metadata(None).to_batches()
                for table in frames:
                    yield from table.replace_schema_metadata(None).to_batches()

            def info() -> dict[str, Any]:  # read at the end too: the header may grow
                paths = follower.paths
                return build_info(follower.format_name or "unknown", follower.header or {},
                                  paths[0] if len(paths) == 1 else paths,
                                  follower.errors or None)

            write_batches(batches(), schema, args.output, to="parquet", info=info,
                          overwrite=args.force)
        else:
            for _ in frames:
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
        follower.close()
        if status is not None:
            status.close(follower)
    return EX_OK


def _with_status(follower: Follower, status: Status | None) -> Iterator[pa.Table]:
    for frame in follower:
        if status is not None:
            status.add(frame)
        yield frame
