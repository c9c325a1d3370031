"""The ``bindf`` command line (also ``python -m bindf``).

Exit codes follow sysexits(3), so scripts can tell failures apart:

==  =========================================================
0   success
2   usage error (bad option or argument)
65  bad data: an input file is damaged or not a supported format
66  an input file does not exist or cannot be read
73  the output exists (use ``--force`` to replace it)
74  I/O error while writing the output
130 interrupted (Ctrl-C); no partial output is left behind
==  =========================================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from typing import Any

EX_OK = 0
EX_USAGE = 2
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CANTCREAT = 73
EX_IOERR = 74
EX_INTERRUPTED = 130

OUTPUT_KINDS = {".parquet": "parquet", ".pq": "parquet", ".arrow": "ipc", ".feather": "ipc",
                ".ipc": "ipc", ".csv": "csv"}
EXTENSION_OF = {"parquet": ".parquet", "ipc": ".arrow", "csv": ".csv"}


class CliError(Exception):
    """A failure reported as one line on stderr with a specific exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--option key=value``: values are JSON when they parse as JSON, else strings."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--option expects KEY=VALUE, got {pair!r}", EX_USAGE)
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _inputs(names: Sequence[str]) -> list[Any]:
    """Command-line inputs, with ``-`` meaning standard input (allowed once)."""
    if list(names).count("-") > 1:
        raise CliError("standard input (-) can be read only once", EX_USAGE)
    return [sys.stdin.buffer if name == "-" else name for name in names]


def _read_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = _parse_options(args.option or [])
    if args.format:
        kwargs["format"] = args.format
    return kwargs


# -- commands -------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    import polars as pl

    import bindf

    samples = resources.files("bindf") / "samples"
    names = sorted(p.name for p in samples.iterdir() if p.name.endswith((".apx", ".bin")))
    print(f"bindf {bindf.__version__}: decoding the {len(names)} sample files bundled in "
          f"{samples}\n")
    with pl.Config(tbl_rows=6, tbl_cols=9, tbl_width_chars=150, fmt_str_lengths=40):
        for name in names:
            with resources.as_file(samples / name) as path:
                frame = bindf.read(path, output="polars")
                info = frame.bindf.info
                header_keys = ", ".join(list(info["header"])[:8])
                print(f"== {name}  [format {info['format']}]  {frame.height} rows × "
                      f"{frame.width} columns")
                print(f"   header keys: {header_keys}{' …' if len(info['header']) > 8 else ''}")
                print(frame)
                print()
    print("Next: bindf info FILE, bindf head FILE, bindf convert FILE -o out.parquet; "
          "in Python: pd.read_apx(...), pl.scan_it02(...).")
    return EX_OK


def cmd_info(args: argparse.Namespace) -> int:
    import bindf
    from bindf._source import expand_sources
    from bindf.registry import open_reader

    kwargs = _read_kwargs(args)
    fmt = kwargs.pop("format", None)
    records = []
    for source in expand_sources(_inputs(args.files)):
        reader = open_reader(source, fmt, **kwargs)
        records.append({
            "path": source.path,
            "format": reader.name,
            "size_bytes": source.size,
            "rows": reader.count_rows(),
            "columns": reader.schema.names,
            "header": reader.header,
        })
    if args.json:
        print(json.dumps(records if len(records) > 1 else records[0], indent=2,
                         ensure_ascii=False))
        return EX_OK
    for rec in records:
        rows = rec["rows"] if rec["rows"] is not None else "(known after decoding)"
        print(f"{rec['path']}\n  format: {rec['format']} ({bindf.get_format(rec['format']).description})"
              f"\n  size:   {rec['size_bytes']} bytes\n  rows:   {rows}"
              f"\n  columns: {', '.join(rec['columns'])}\n  header:")
        for key, value in rec["header"].items():
            text = json.dumps(value, ensure_ascii=False)
            print(f"    {key}: {text if len(text) <= 100 else text[:97] + '...'}")
    return EX_OK


def cmd_head(args: argparse.Namespace) -> int:
    import polars as pl

    import bindf

    frame = bindf.read(_inputs([args.file])[0], output="polars", n_rows=args.n, columns=_columns(args.columns),
                       **_read_kwargs(args))
    with pl.Config(tbl_rows=args.n, tbl_cols=-1):
        print(frame)
    return EX_OK


def _output_kind(path: str, to: str | None) -> str:
    if to:
        return to
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_KINDS:
        raise CliError(
            f"cannot tell the output type from {path!r}; use --to parquet|ipc|csv", EX_USAGE
        )
    return OUTPUT_KINDS[ext]


def cmd_convert(args: argparse.Namespace) -> int:
    from bindf._source import expand_sources
    from bindf.frontends.batches import ReadPlan
    from bindf.parquet import write_batches

    if bool(args.output) == bool(args.output_dir):
        raise CliError("give exactly one of -o OUT (one file) or --output-dir DIR (one per input)",
                       EX_USAGE)
    kwargs = _read_kwargs(args)
    fmt = kwargs.pop("format", None)
    if args.output_dir and "-" in args.inputs:
        raise CliError("standard input (-) has no name to derive an output from; use -o OUT",
                       EX_USAGE)
    sources = expand_sources(_inputs(args.inputs))
    if args.output:
        jobs = [(sources, args.output, _output_kind(args.output, args.to))]
    else:
        kind = args.to or "parquet"
        os.makedirs(args.output_dir, exist_ok=True)
        jobs = [([s], os.path.join(args.output_dir,
                 os.path.splitext(os.path.basename(s.path))[0] + EXTENSION_OF[kind]), kind)
                for s in sources]
    for inputs, output, kind in jobs:
        names = [s.path for s in inputs]
        if not args.force and os.path.lexists(output):
            raise CliError(f"{output}: output exists (use --force to replace it)", EX_CANTCREAT)
        plan = ReadPlan(inputs, format=fmt, columns=_columns(args.columns),
                        progress=args.progress, options=kwargs)
        try:
            rows = write_batches(plan.iter_batches(), plan.output_schema(), output, to=kind,
                                 info=plan.info, overwrite=True)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and exc.filename in names:
                raise
            raise CliError(f"{output}: cannot write: {exc.strerror or exc}", EX_IOERR) from None
        if not args.quiet:
            print(f"{', '.join(names) if len(names) <= 3 else f'{len(names)} files'} → "
                  f"{output} ({rows} rows, {kind})", file=sys.stderr)
    return EX_OK


# -- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bindf",
        description="Read binary files of scientific instruments (AstroPix .apx, FLIM LABS "
                    "IT02/spectroscopy) and convert them to Parquet, Arrow or CSV.",
        epilog="exit codes: 0 ok, 2 usage, 65 bad input data, 66 input missing/unreadable, "
               "73 output exists (see --force), 74 I/O error writing output, 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from bindf import __version__

    parser.add_argument("--version", action="version", version=f"bindf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def reader_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", help="force the input format: "
                       + ", ".join(format_names()) + " (default: detect)")
        p.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="format option, e.g. layout=sparse, level=readouts, fill_gaps=true")

    p = sub.add_parser("demo", help="decode the sample files bundled with bindf")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="format, header and row count of files (no full decode)")
    p.add_argument("files", nargs="+", metavar="FILE", help="files or globs (- for stdin)")
    p.add_argument("--json", action="store_true", help="print JSON")
    reader_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("head", help="print the first rows of a file")
    p.add_argument("file", metavar="FILE", help="a file (- for stdin)")
    p.add_argument("-n", type=int, default=10, help="number of rows (default 10)")
    p.add_argument("--columns", help="comma-separated columns")
    reader_options(p)
    p.set_defaults(func=cmd_head)

    p = sub.add_parser("convert", help="convert files to Parquet, Arrow IPC or CSV",
                       description="Convert to Parquet/IPC/CSV. Output is written to a temporary "
                                   "file and renamed, so a failure leaves no partial output.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="input files or globs (- for stdin)")
    p.add_argument("-o", "--output", help="one output file for all inputs (type from extension)")
    p.add_argument("--output-dir", help="write one output per input into this directory")
    p.add_argument("--to", choices=["parquet", "ipc", "csv"], help="output type")
    p.add_argument("--columns", help="comma-separated columns to keep")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("-q", "--quiet", action="store_true")
    reader_options(p)
    p.set_defaults(func=cmd_convert)

    from bindf._ingest import add_ingest_command

    add_ingest_command(sub)
    from bindf._follow_cli import add_follow_command

    add_follow_command(sub)
    return parser


def format_names() -> list[str]:
    from bindf.registry import format_names as names

    return names()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from bindf.errors import BindfWarning

    def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"bindf: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        warnings.simplefilter("default", BindfWarning)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from bindf.errors import BindfError

    try:
        return args.func(args)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EX_OK
    except CliError as exc:
        print(f"bindf: error: {exc}", file=sys.stderr)
        return exc.code
    except BindfError as exc:
        print(f"bindf: error: {exc}", file=sys.stderr)
        return EX_DATAERR
    except FileExistsError as exc:
        print(f"bindf: error: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        name = exc.filename if exc.filename is not None else ""
        print(f"bindf: error: {name}: {exc.strerror or exc}" if name else f"bindf: error: {exc}",
              file=sys.stderr)
        return EX_NOINPUT
    except ValueError as exc:  # bad option values (unknown column, bad layout …)
        print(f"bindf: error: {exc}", file=sys.stderr)
        return EX_USAGE
    except OSError as exc:
        print(f"bindf: error: {exc}", file=sys.stderr)
        return EX_IOERR
    except KeyboardInterrupt:
        print("bindf: interrupted", file=sys.stderr)
        return EX_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
