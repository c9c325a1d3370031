"""``bindf follow FILE...``: the command line of :func:`bindf.follow`.

A status line (rows, rows/s since the start, bytes, last time stamp, and per-channel counts
for IT02 or per-chip hits for AstroPix and A-STEP) is redrawn in place on a terminal and
printed once per interval otherwise. ``-o out.parquet`` streams every frame as a row group
into a Parquet file written atomically (temporary file, then rename) and finished properly
when the follow ends: end marker, idle timeout, Ctrl-C (SIGINT) or SIGTERM. The header of
the first file followed, as known at the end (a sparse IT02 end time included), is in the
file's metadata, with every file followed and the damage skipped.

Ctrl-C and SIGTERM are how a follow is usually ended, so they end it like the end marker
does: the output is finished and the exit status is 0. Damage that ends the follow
(``--on-error raise``, the default) finishes the output with the rows before it and
exits with 65. A follow that ends before any row
arrived (a header-only file, ``--start end`` and nothing appended) writes a Parquet file of
0 rows with the columns and header; one that ends before any file appeared writes nothing
and exits with 66 (65 when the first file's header is still incomplete).
"""

from __future__ import annotations

import os
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
from ._source import Source
from .arrow import build_info, with_metadata
from .cli import (
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_USAGE,
    CliError,
    check_output_path,
    columns_arg,
    reader_options,
    seconds,
    signal_handlers,
    write_output,
)
from .errors import BindfError, TruncatedHeaderError
from .formats._base import FormatReader
from .registry import open_reader, registered_spec

#: Columns holding the time stamp the status line shows as "last", the first one a frame
#: has: IT02/IT01/ITT1 and co., AstroPix 4, AstroPix 3, spectroscopy photons, A-STEP
#: (for the formats whose spec's ``live_totals`` has "time").
_TIME_COLUMNS = ("time_ns", "timestamp", "wall_timestamp", "macrotime_ns", "fpga_ts")

#: Output extensions ``-o`` accepts: follow writes Parquet only, whose footer takes what
#: is learned at the end (the sparse IT02 end time, damage skipped).
_PARQUET_EXTENSIONS = (".parquet", ".pq")

#: Reader keywords that ``bindf follow`` sets itself, and the flag that sets them.
_SET_BY_FOLLOW = {"format": "--format", "columns": "--columns", "output": None,
                  "include_file_paths": "--include-file-paths", "on_error": "--on-error",
                  "start": "--start", "poll_interval": "--poll-interval",
                  "idle_timeout": "--idle-timeout"}


def add_follow_command(sub: Any) -> None:
    """Register ``bindf follow`` on the CLI's subparsers."""
    p = sub.add_parser(
        "follow", help="follow files while they are written (live status, Parquet)",
        description="Decode files while an instrument writes them: only complete records, "
                    "nothing repeated or lost. Ends at the format's end marker (sparse "
                    "IT02), after --idle-timeout seconds without growth, or on Ctrl-C or "
                    "SIGTERM, which finish the output and exit with status 0.")
    p.add_argument("sources", nargs="+", metavar="FILE", help="files or globs (in name order)")
    p.add_argument("-o", "--output", metavar="OUT.parquet",
                   help="also write every row to this Parquet file (.parquet or .pq; "
                        "atomically; 0 rows if none arrived)")
    p.add_argument("--poll-interval", type=seconds(), default=0.5, metavar="SECONDS",
                   help="seconds between two polls of a file that did not grow (default 0.5)")
    p.add_argument("--idle-timeout", type=seconds(zero=True, infinite=True), default=60.0,
                   metavar="SECONDS",
                   help="stop after this long without growth (0: never; default 60)")
    p.add_argument("--status-interval", type=seconds(zero=True), default=1.0,
                   metavar="SECONDS",
                   help="seconds between status lines when not on a terminal (default 1; "
                        "0: as often as allowed, 20 lines a second)")
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

    def add(self, frame: pa.Table, format_name: str | None) -> None:
        with self._lock:
            self._add(frame, format_name)

    def _add(self, frame: pa.Table, format_name: str | None) -> None:
        spec = None if format_name is None else registered_spec(format_name)
        totals = spec.live_totals if spec is not None else ()
        for name in _TIME_COLUMNS if "time" in totals else ():
            if name in frame.column_names and frame.num_rows:
                self.last_time = frame.column(name)[-1].as_py()
                break
        if "chips" in totals and "chip_id" in frame.column_names:
            chips, hits = np.unique(frame.column("chip_id").to_numpy(), return_counts=True)
            for chip, n in zip(chips.tolist(), hits.tolist(), strict=True):
                key = f"chip{chip}"
                self.counts[key] = self.counts.get(key, 0) + n
        elif "channels" in totals:  # photon counts per channel column
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
    options = reader_options(args.option, "follow", _SET_BY_FOLLOW)
    columns = columns_arg(args.columns)
    if args.output:
        if os.path.splitext(args.output)[1].lower() not in _PARQUET_EXTENSIONS:
            raise CliError(f"{args.output}: bindf follow writes Parquet only; name the output "
                           f"{' or '.join(_PARQUET_EXTENSIONS)}", EX_USAGE)
        check_output_path(args.output, args.force)
    follower = follow(
        args.sources if len(args.sources) > 1 else args.sources[0],
        poll_interval=args.poll_interval,
        idle_timeout=args.idle_timeout or None, output="arrow",
        columns=columns, include_file_paths=args.include_file_paths,
        start=args.start, on_error=args.on_error, format=args.format, **options)
    status = None if args.quiet else Status(sys.stderr, args.status_interval)

    def stop(signum: int, frame: Any) -> None:
        # Ends the follow at its next poll; the output is then finished properly.
        follower.stop()

    with signal_handlers({signal.SIGINT: stop, signal.SIGTERM: stop}):
        if status is not None:
            status.start(follower)
        try:
            frames = _with_status(follower, status)
            if args.output:
                damage = _write_parquet(follower, frames, args.output, args.force)
                if damage is not None:
                    raise CliError(f"{damage}; {args.output} holds the {follower.rows:,} "
                                   "rows before it", EX_DATAERR)
            else:
                for _ in frames:
                    pass
        finally:
            follower.close()
            if status is not None:
                status.close(follower)
    return EX_OK


def _write_parquet(follower: Follower, frames: Iterator[pa.Table], output: str,
                   force: bool) -> BindfError | None:
    """Stream the frames into ``output``, with the header of the first file followed (as
    a multi-file ``read`` keeps), every file followed and the damage skipped. Damage that
    ends the follow (``--on-error raise``) ends the output too, finished with the rows
    before it (a live acquisition's rows are not thrown away): it is returned."""
    first: dict[str, Any] = {}  # the first file's header (it grows) and format
    damage: list[BindfError] = []

    def noted(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        try:
            for table in tables:
                if follower.path == follower.paths[0]:
                    first["header"], first["format"] = (follower.header or {},
                                                        follower.format_name)
                yield table
        except BindfError as exc:
            damage.append(exc)

    def from_first_reader() -> FormatReader:  # the first file gave no row: its header as opened
        reader = _first_reader(follower, output)
        first["header"], first["format"] = reader.header_before_end(), reader.name
        return reader

    tables = noted(frames)
    head = next(tables, None)
    if head is None:  # no row arrived: 0 rows, with the columns and header
        schema = _empty_schema(follower, from_first_reader())
    else:
        schema = head.schema.remove_metadata()

    def batches() -> Iterator[pa.RecordBatch]:
        if head is not None:
            yield from with_metadata(head, None).to_batches()
        for table in tables:
            yield from with_metadata(table, None).to_batches()

    def info() -> dict[str, Any]:  # read at the end too: the header may grow
        if "header" not in first:
            from_first_reader()
        if follower.paths and follower.path == follower.paths[0] and follower.header:
            first["header"] = follower.header  # (as the file ended: rewritten in place?)
        paths = follower.paths
        return build_info(first["format"], first["header"],
                          paths[0] if len(paths) == 1 else paths, follower.errors or None)

    write_output(batches(), schema, output, "parquet", info, force)
    return damage[0] if damage else None


def _first_reader(follower: Follower, output: str) -> FormatReader:
    """The reader of the first file followed, opened as the follower opened it."""
    if not follower.paths or not os.path.exists(follower.paths[0]):
        raise CliError(f"{output}: not written: no file {' or '.join(follower.patterns)} "
                       "appeared before the follow ended", EX_NOINPUT)
    path = follower.paths[0]
    try:
        return open_reader(Source(path), follower.format, on_error=follower.on_error,
                           **follower.options)
    except (TruncatedHeaderError, EOFError) as exc:  # the follow ended while it was cut
        raise CliError(f"{output}: not written: {path}: no complete header ({exc})",
                       EX_DATAERR) from None
    except BindfError as exc:  # damaged (an FCS1 file is read whole when opened)
        raise CliError(f"{output}: not written: {exc}", EX_DATAERR) from None


def _empty_schema(follower: Follower, reader: FormatReader) -> pa.Schema:
    """The columns the follower's frames would have had."""
    fields = [reader.schema.field(name) for name in follower.reader_columns(reader)]
    if follower.include_file_paths:
        fields.append(pa.field(follower.include_file_paths, pa.string(), nullable=False))
    schema = pa.schema(fields)
    if follower.columns is None:
        return schema
    return pa.schema([schema.field(name) for name in dict.fromkeys(follower.columns)])


def _with_status(follower: Follower, status: Status | None) -> Iterator[pa.Table]:
    for frame in follower:
        if status is not None:
            status.add(frame, follower.format_name)
        yield frame
