"""``bindf ingest``: the command line of :func:`bindf.ingest` (and ``--watch``).

Exit status: 0 when every source is ingested (or pending), 65 when some source failed
(listed on stderr, recorded in the manifest), 75 when another run holds the dataset's
lock, 2 for a bad option value, 73 when ``DEST`` exists but is not a folder, 74 when the
dataset cannot be written, and the codes of :mod:`bindf.cli` otherwise (66 missing
input, 130 Ctrl-C …).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

from ._ingest import SET_BY_INGESTION, IngestReport, ingest, watch
from ._manifest import DatasetLockedError

#: sysexits' "temporary failure": the dataset is locked by another run; try again later.
EX_TEMPFAIL = 75
#: Seconds between ``--watch`` runs when ``--interval`` is not given.
DEFAULT_INTERVAL = 10.0
#: Keywords that ``bindf ingest`` passes to :func:`bindf.ingest` / :func:`bindf.watch_ingest`
#: (or to the readers) itself: ``--option`` refuses them, naming the flag to use instead
#: (None: the command decides it alone).
_SET_BY_INGEST = {
    "sources": "SOURCE arguments", "dest": "-o/--output", "format": "--format",
    "pattern": "--pattern", "partition_by": "--partition-by",
    "header_columns": "--header-columns", "on_error": "--on-error", "settle": "--settle",
    "prune": "--prune", "dry_run": "--dry-run", "force": "--force",
    "fsync": "--no-fsync", "threads": "--threads", "client": "--scheduler",
    "progress": "--progress", "interval": "--interval", "max_runs": "--max-runs",
    "on_report": None,
    # the read options ingestion itself sets (it reads each file in chunks into parts)
    **{name: None for name in SET_BY_INGESTION},
}


def add_ingest_command(sub: Any) -> None:
    """Register ``bindf ingest`` on the CLI's subparsers."""
    p = sub.add_parser(
        "ingest", help="keep a Parquet dataset in sync with many files (incremental)",
        description="Convert new and changed files into a Hive-partitioned Parquet dataset "
                    "with a manifest; safe to interrupt and rerun. Exit status 65 when a "
                    "file failed, 75 when another ingest holds the dataset's lock.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files, globs or folders")
    p.add_argument("-o", "--output", required=True, metavar="DEST", help="dataset folder")
    p.add_argument("--pattern", action="append",
                   help="file names to pick up in folders (default: *.apx, *.log, *.bin)")
    p.add_argument("--partition-by", help="comma-separated header fields (dotted)")
    p.add_argument("--header-columns", help="header fields to add as columns, "
                   "comma-separated, each optionally NAME:TYPE (bool, int64, float64, string)")
    p.add_argument("--on-error", choices=["raise", "warn", "skip"], default="raise")
    p.add_argument("--settle", type=float, default=None,
                   help="skip files modified in the last SECONDS, 0 or more (default 0; "
                        "--watch: the interval)")
    p.add_argument("--prune", action="store_true", help="delete parts of removed sources")
    p.add_argument("--dry-run", action="store_true", help="only list what would be done")
    p.add_argument("--force", action="store_true", help="re-ingest every source")
    p.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="do not flush each part to disk (faster; still safe if killed, "
                        "not on power loss)")
    p.add_argument("--threads", type=int, help="files converted at once (at least 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask.distributed scheduler")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--watch", action="store_true", help="re-run every --interval seconds")
    p.add_argument("--interval", type=float, default=None,
                   help=f"seconds between --watch runs (default {DEFAULT_INTERVAL:g})")
    p.add_argument("--max-runs", type=int, help="stop --watch after this many runs")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format", help="force the input format (default: detect)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="reader option")
    p.set_defaults(func=cmd_ingest)


def cmd_ingest(args: Any) -> int:
    from .cli import EX_DATAERR, EX_OK, CliError, _columns, reader_options

    _check_options(args)
    options = reader_options(args.option, "ingest", _SET_BY_INGEST)
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    kwargs = dict(
        pattern=args.pattern, format=args.format, partition_by=_columns(args.partition_by) or [],
        header_columns=_columns(args.header_columns), on_error=args.on_error,
        prune=args.prune, dry_run=args.dry_run, force=args.force, threads=args.threads,
        fsync=args.fsync,
        client=client, progress=args.progress, **options)
    if args.settle is not None:
        kwargs["settle"] = args.settle

    def show(report: IngestReport) -> None:
        _print_report(report, args.quiet)

    try:
        if args.watch:
            interval = DEFAULT_INTERVAL if args.interval is None else args.interval
            report = watch(args.sources, args.output, interval=interval,
                           max_runs=args.max_runs, on_report=show, **kwargs)
        else:
            report = ingest(args.sources, args.output, **kwargs)
            show(report)
    except DatasetLockedError as exc:
        raise CliError(str(exc), EX_TEMPFAIL) from None
    except OSError as exc:
        error = _output_error(exc, args.output)
        if error is None:
            raise
        raise error from None
    finally:
        if client is not None:
            client.close()
    return EX_OK if report is None or report.ok else EX_DATAERR


def _check_options(args: Any) -> None:
    """Refuse option values out of range, and --watch's options without --watch (one
    line, exit status 2), before anything is read or written."""
    from .cli import EX_USAGE, CliError

    problems = []
    if args.threads is not None and args.threads < 1:
        problems.append(f"--threads must be at least 1, not {args.threads}")
    if args.settle is not None and not (math.isfinite(args.settle) and args.settle >= 0):
        problems.append(f"--settle must be 0 or more seconds, not {args.settle:g}")
    if args.interval is not None and not (math.isfinite(args.interval) and args.interval > 0):
        problems.append(f"--interval must be a positive number of seconds, "
                        f"not {args.interval:g}")
    if args.max_runs is not None and args.max_runs < 1:
        problems.append(f"--max-runs must be at least 1, not {args.max_runs}")
    if not args.watch:
        given = [o for o, v in (("--interval", args.interval), ("--max-runs", args.max_runs))
                 if v is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            problems.append(f"{' and '.join(given)} {verb} only with --watch")
    if problems:
        raise CliError("; ".join(problems), EX_USAGE)


def _output_error(exc: OSError, output: str) -> Exception | None:
    """A CLI error for an OSError on the dataset folder (the output), None for another
    path (a source: the CLI's usual input error)."""
    from .cli import EX_CANTCREAT, EX_IOERR, CliError

    dest = os.path.abspath(output)
    names = [os.path.abspath(n) for n in (exc.filename, exc.filename2) if isinstance(n, str)]
    if not any(n == dest or n.startswith(dest + os.sep) for n in names):
        return None
    if os.path.lexists(dest) and not os.path.isdir(dest):
        return CliError(f"{output}: exists and is not a folder (a dataset is a folder)",
                        EX_CANTCREAT)
    return CliError(f"{output}: cannot write the dataset: {exc.strerror or exc}", EX_IOERR)


def _print_report(report: IngestReport, quiet: bool) -> None:
    if report.dry_run:
        for label, paths in (("ingest", report.ingested), ("replace", report.replaced),
                             ("prune", report.pruned)):
            for path in paths:
                print(f"would {label}: {path}")
    for path, message in report.failed.items():
        # bindf errors name the file already
        print(f"bindf: failed: {message if path in message else f'{path}: {message}'}",
              file=sys.stderr)
    for path, texts in report.warnings.items():  # as convert and follow show them
        for text in texts:
            print(f"bindf: warning: {text if path in text else f'{path}: {text}'}",
                  file=sys.stderr)
    if not quiet or report.dry_run:
        for path in report.removed:
            print(f"removed from disk: {path}", file=sys.stderr)
        print(report.summary(), file=sys.stderr)
