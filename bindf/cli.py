"""The ``bindf`` command line (also ``python -m bindf``).

Exit codes follow sysexits(3), so scripts can tell failures apart:

==  =========================================================
0   success; also ``bindf follow`` ended by Ctrl-C or SIGTERM, its usual end
2   usage error (bad option or argument)
65  bad data: an input file is damaged or not a supported format, or its data cannot
    be held by the output type (a list column in CSV)
66  an input file does not exist or cannot be read
73  the output exists (use ``--force`` to replace it)
74  I/O error while writing the output
130 interrupted (Ctrl-C); no partial output is left behind
143 terminated (SIGTERM); no partial output is left behind
==  =========================================================
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import re
import signal
import stat
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, NoReturn

from bindf._atomic import defer_while_held

EX_OK = 0
EX_USAGE = 2
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CANTCREAT = 73
EX_IOERR = 74
EX_INTERRUPTED = 130
EX_TERMINATED = 143

OUTPUT_KINDS = {".parquet": "parquet", ".pq": "parquet", ".arrow": "ipc", ".feather": "ipc",
                ".ipc": "ipc", ".csv": "csv"}
EXTENSION_OF = {"parquet": ".parquet", "ipc": ".arrow", "csv": ".csv"}

#: Reader keywords that ``bindf head`` and ``bindf convert`` set themselves: ``--option``
#: refuses them, naming the flag to use instead (None: the command decides it alone).
_SET_BY_HEAD = {"format": "--format", "columns": "--columns", "n_rows": "-n",
                "output": None, "chunksize": None, "dtype_backend": None}
_SET_BY_CONVERT = {"format": "--format", "columns": "--columns", "progress": "--progress",
                   "output": None, "chunksize": None, "dtype_backend": None,
                   "record_range": None}
_SET_BY_INFO = {"format": "--format"}


class CliError(Exception):
    """A failure reported as one line on stderr with a specific exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Terminated(BaseException):
    """Raised by the SIGTERM handler: like ``KeyboardInterrupt``, it unwinds every
    ``with`` block (temporary outputs are removed), but no code stops on it by mistake."""


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


def reader_options(pairs: Sequence[str] | None, command: str,
                   set_by_command: Mapping[str, str | None], *,
                   takes_read_options: bool = True) -> dict[str, Any]:
    """The ``--option`` pairs of ``bindf COMMAND``, refusing the keywords the command sets
    itself (``--option n_rows=5`` on ``head`` names ``-n``, as do ``nrows`` and a near
    miss such as ``colums``, which the reader would answer in Python's spelling), and,
    for a command that reads headers only (``takes_read_options=False``: ``info``), the
    common read options."""
    import difflib

    from bindf._params import COMMON, HINTS
    from bindf.registry import option_names

    options = _parse_options(pairs or [])
    common = {param.name for param in COMMON}
    known = option_names() | common
    flags = {key: flag for key, flag in set_by_command.items() if flag}
    for key in options:
        wanted = HINTS.get(key, key)  # pandas' and polars' spellings: nrows, usecols …
        if wanted in set_by_command:
            flag = set_by_command[wanted]
            raise CliError(f"--option {key}: use {flag} instead" if flag else
                           f"--option {key}: bindf {command} sets {wanted} itself", EX_USAGE)
        if not takes_read_options and wanted in common - {"on_error", "threads"}:
            raise CliError(f"--option {key}: bindf {command} reads headers only; --option "
                           "takes the format's options here", EX_USAGE)
        close = difflib.get_close_matches(key, list(flags), n=1, cutoff=0.8)
        if close and key not in known:
            raise CliError(f"--option {key}: no such option; did you mean {flags[close[0]]}?",
                           EX_USAGE)
    return options


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def columns_arg(text: str | None) -> list[str] | None:
    """``--columns a,b``: None when not given; naming no column is a usage error."""
    if text is None:
        return None
    columns = _columns(text)
    if not columns:
        raise CliError(f"--columns names no column: {text!r}", EX_USAGE)
    return columns


def _inputs(names: Sequence[str]) -> list[Any]:
    """Command-line inputs, with ``-`` meaning standard input (allowed once)."""
    if list(names).count("-") > 1:
        raise CliError("standard input (-) can be read only once", EX_USAGE)
    return [sys.stdin.buffer if name == "-" else name for name in names]


def _read_kwargs(args: argparse.Namespace,
                 set_by_command: Mapping[str, str | None]) -> dict[str, Any]:
    kwargs = reader_options(args.option, args.command, set_by_command,
                            takes_read_options=args.command != "info")
    if args.format is not None:  # ("" is refused, as by the Python functions)
        kwargs["format"] = args.format
    return kwargs


# -- argument types: out-of-range values are usage errors (exit 2) -----------------------
def count(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def seconds(*, zero: bool = False, infinite: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of seconds > 0 (>= 0 with ``zero``; ``inf`` allowed
    with ``infinite``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
        if math.isnan(value) or (math.isinf(value) and not infinite) or value < 0 \
                or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"must be {'0 or more' if zero else 'a positive number of'} seconds, "
                f"not {text!r}")
        return value

    parse.__name__ = "seconds"  # argparse names the type in its messages
    return parse


# -- outputs ------------------------------------------------------------------------------
def streamed_output(path: str) -> bool:
    """Whether ``path`` is written as a stream, not atomically: ``-`` (standard output)
    or an existing device, pipe or socket (``/dev/null``, ``/dev/stdout``, a FIFO), which
    an atomic write would replace with a file."""
    return path == "-" or _names_a_descriptor(path) or (
        os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path))


#: An open file descriptor of the process, by its path (Linux and the BSDs).
_DESCRIPTOR_PATH = re.compile(r"/dev/(std(in|out|err)|fd/\d+)|/proc/(self|thread-self|\d+)/fd/\d+")


def _names_a_descriptor(path: str) -> bool:
    """Whether ``path`` is, or links to, one of the process's open descriptors
    (``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1``): redirected to a file it
    stats as that regular file, and an atomic write would replace the link (with
    ``--force``, ``/dev/stdout`` itself) instead of writing into the redirection."""
    current = os.path.abspath(path)
    for _ in range(16):  # a chain of links, followed one at a time
        if _DESCRIPTOR_PATH.fullmatch(current):
            return True
        if not os.path.islink(current):
            return False
        current = os.path.normpath(os.path.join(os.path.dirname(current),
                                                os.readlink(current)))
    return False


def check_output_path(path: str, force: bool, *, folder_made_later: bool = False) -> None:
    """Refuse an output that cannot be written before reading anything: it is a folder
    (74), it exists without ``force`` (73), or its folder is missing (74). A streamed
    output (:func:`streamed_output`) is written as it is."""
    if streamed_output(path):
        return
    if os.path.isdir(path):
        raise CliError(f"{path}: cannot write: it is a folder", EX_IOERR)
    if not force and os.path.lexists(path):
        raise CliError(f"{path}: output exists (use --force to replace it)", EX_CANTCREAT)
    folder = os.path.dirname(path) or "."
    if not folder_made_later and not os.path.isdir(folder):
        raise CliError(f"{path}: cannot write: no folder {folder!r}", EX_IOERR)


class _InputError(Exception):
    """An error of the inputs, carried through the writer to be reported as such (not as
    a failure to write the output)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _guarded(batches: Iterable[Any]) -> Iterator[Any]:
    try:
        yield from batches
    except Exception as exc:  # KeyboardInterrupt & co. pass through unchanged
        raise _InputError(exc) from exc


def write_output(batches: Iterable[Any], schema: Any, output: str, kind: str,
                 info: Callable[[], dict[str, Any]] | None, force: bool, *,
                 fsync: bool = True) -> int:
    """Stream ``batches`` atomically into ``output`` (flushed to disk first unless not
    ``fsync``): errors of the inputs keep their exit code, errors of the output are 73
    (it appeared meanwhile) or 74, naming ``output`` (never the temporary file), and data
    that the output type cannot hold is 65 (a data problem, not a usage one)."""
    import pyarrow as pa

    from bindf._atomic import OutputExistsError
    from bindf.parquet import write_batches

    if kind == "csv":
        batches, schema = csv_ready(batches, schema, output)
    try:
        if not streamed_output(output):
            return write_batches(_guarded(batches), schema, output, to=kind, info=info,
                                 overwrite=force, fsync=fsync)
        if output == "-":
            sys.stdout.flush()
            return write_batches(_guarded(batches), schema, sys.stdout.buffer, to=kind,
                                 info=info)
        with open(output, "wb") as sink:
            return write_batches(_guarded(batches), schema, sink, to=kind, info=info)
    except _InputError as exc:
        raise exc.error from None
    except BrokenPipeError:
        raise  # the reader of a pipe stopped (``| head``): not an error, see _run
    except OutputExistsError:
        raise CliError(f"{output}: output exists (use --force to replace it)",
                       EX_CANTCREAT) from None
    except OSError as exc:
        raise CliError(f"{output}: cannot write: {exc.strerror or exc}", EX_IOERR) from None
    except (ValueError, TypeError, pa.ArrowNotImplementedError) as exc:
        # The writer refused a value or type (the inputs' own errors were re-raised above)
        raise CliError(f"{output}: cannot write the data as {kind}: {exc}", EX_DATAERR) from None


#: The nested Arrow kinds that a CSV cell cannot hold, in the order an error names them.
_CSV_NESTED = ("list", "struct", "map", "union")


def csv_ready(batches: Iterable[Any], schema: Any, output: str) -> tuple[Iterator[Any], Any]:
    """``batches`` and ``schema`` as CSV can hold them. A CSV cell holds one value:
    binary columns (A-STEP's ``sensor``) become hex text (``0x1c91``, see
    :func:`bindf._writing.binary_as_hex`), string views plain strings, batch by batch;
    nested columns (lists, such as SP01's ``shape=wide`` curves, structs, maps) are
    refused from the schema alone, before anything is read or written, naming them and
    the ways out (exit 65)."""
    import pyarrow as pa

    nested = {field.name: kind for field in schema
              if (kind := _nested_kind(field.type)) is not None}
    if nested:
        kinds = "/".join(sorted(set(nested.values()), key=_CSV_NESTED.index))
        others = [name for name in schema.names if name not in nested]
        keep = f", or leave them out with --columns {','.join(others)}" if others else ""
        raise CliError(f"{output}: CSV holds one value per cell, not the {kinds} column(s) "
                       f"{list(nested)}; write Parquet or Arrow IPC instead (a .parquet or "
                       f".arrow output, or --to parquet|ipc){keep}", EX_DATAERR)
    converters = {index: converter for index, field in enumerate(schema)
                  if (converter := _csv_converter(field.type)) is not None}
    if not converters:
        return iter(batches), schema
    for index in converters:
        field = schema.field(index)
        schema = schema.set(index, field.with_type(pa.large_string()))

    def converted() -> Iterator[Any]:
        for batch in batches:
            arrays = list(batch.columns)
            for index, converter in converters.items():
                arrays[index] = converter(arrays[index])
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return converted(), schema


def _nested_kind(kind: Any) -> str | None:
    """``"list"``, ``"struct"``, ``"map"`` or ``"union"`` for a nested Arrow type
    (dictionary values included), else None."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not pa.types.is_nested(kind):
        return None
    for name in _CSV_NESTED[1:]:
        if getattr(pa.types, f"is_{name}")(kind):
            return name
    return "list"


def _csv_converter(kind: Any) -> Callable[[Any], Any] | None:
    """What turns a column of ``kind`` into one that Arrow's CSV writer takes as text
    that reads back (its writer refuses binary that is not UTF-8 and views), or None
    for a type it writes as it is."""
    import pyarrow as pa

    from bindf._writing import binary_as_hex, is_bytes_type

    decode = pa.types.is_dictionary(kind)
    values = kind.value_type if decode else kind
    binary = is_bytes_type(values)
    view = getattr(pa.types, "is_string_view", lambda _: False)(values)  # pyarrow >= 16
    if not (binary or view):
        return None

    def convert(array: Any) -> Any:
        if decode:
            array = array.dictionary_decode()
        return binary_as_hex(array) if binary else array.cast(pa.large_string())

    return convert


@contextlib.contextmanager
def signal_handlers(handlers: Mapping[int, Callable[[int, Any], None]]) -> Iterator[None]:
    """Install signal handlers for the ``with`` block, then restore the previous ones.
    A signal ignored when the block starts (``nohup``, a script's background job) stays
    ignored; outside the main thread (where Python cannot set handlers) nothing is
    installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for signum, handler in handlers.items():
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_terminated(signum: int, frame: Any) -> None:
    if not defer_while_held(_terminate):
        _terminate()


@contextlib.contextmanager
def signals_not_swallowed() -> Iterator[None]:
    """A handler's exception that lands in code whose exceptions Python only reports
    (a weakref callback, ``__del__``: "Exception ignored in …") is lost, and the command
    ran on to the end (seen in CI: Ctrl-C inside the import system's module-lock
    callback, then a complete output and exit 0). Such a lost ``KeyboardInterrupt`` or
    :class:`Terminated` sends its signal again, so that the handler raises where it
    counts; other unraisable errors are reported as before."""
    previous = sys.unraisablehook
    signals = {KeyboardInterrupt: signal.SIGINT, Terminated: signal.SIGTERM}

    def hook(unraisable: Any) -> None:
        signum = signals.get(unraisable.exc_type)
        if signum is None:
            previous(unraisable)
        else:
            signal.raise_signal(signum)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _terminate() -> None:
    raise Terminated


def _raise_interrupted(signum: int, frame: Any) -> None:
    if not defer_while_held(_interrupt):
        _interrupt()


def _interrupt() -> None:
    raise KeyboardInterrupt


# -- commands -------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    import polars as pl

    import bindf

    samples = resources.files("bindf") / "samples"
    names = sorted(p.name for p in samples.iterdir() if p.name.endswith((".apx", ".bin")))
    print(f"bindf {bindf.__version__}: decoding the {len(names)} sample files bundled in "
          f"{samples}\n")
    with pl.Config(tbl_rows=6, tbl_cols=9, tbl_width_chars=150, fmt_str_lengths=40,
                   tbl_formatting=_table_style()):
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


def cmd_formats(args: argparse.Namespace) -> int:
    """Every format bindf reads here (built-ins and installed plugins): name, how it is
    detected, its options, whether it has a writer."""
    import bindf
    from bindf.registry import BUILTIN

    rows = []
    for spec in bindf.list_formats():
        if not spec.public:
            continue
        rows.append({
            "name": spec.name,
            "description": spec.description,
            "magics": [m.decode("ascii", "backslashreplace") for m in spec.magics],
            "extensions": list(spec.extensions),
            "probe": spec.probe is not None,
            "options": {p.name: p.annotation for p in spec.options},
            "writer": spec.writer is not None,
            "plugin": spec not in BUILTIN,
        })
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return EX_OK
    for row in rows:
        found = ([f"magic {m}" for m in row["magics"]] + [f"*{e}" for e in row["extensions"]]
                 + (["probe"] if row["probe"] else []))
        print(f"{row['name']}{'  (plugin)' if row['plugin'] else ''}: {row['description']}"
              f"\n  detected by: {', '.join(found) or 'format= only'}"
              f"\n  writer: {'write_' + row['name'] if row['writer'] else 'none'}")
        for name, annotation in row["options"].items():
            print(f"  option {name}: {annotation}")
    return EX_OK


def cmd_info(args: argparse.Namespace) -> int:
    import bindf
    from bindf._inputs import expand_sources
    from bindf.frontends.headers import header_reader
    from bindf.registry import option_names

    kwargs = _read_kwargs(args, _SET_BY_INFO)
    fmt = kwargs.pop("format", None)
    if fmt is None and kwargs:  # each file gets the options its format takes (a glob
        # may mix formats): one that no format takes is a typo
        known = option_names()
        for key in kwargs:
            if key not in known | {"on_error", "threads"}:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                raise CliError(f"--option {key}: no format takes it"
                               + (f"; did you mean {close[0]}?" if close else ""), EX_USAGE)
    records = []
    for source in expand_sources(_inputs(args.files)):
        # one open; a compressed file's copy let go after it
        with source.held(small_whole=False):
            reader = header_reader(source, fmt, kwargs)
            records.append({
                "path": source.path,
                "format": reader.name,
                "size_bytes": source.size,
                "rows": reader.count_rows(),
                "columns": reader.schema.names,
                "header": reader.header,
            })
    if args.json:
        # One object for one named file; a list for several arguments or any glob,
        # however many files it matches (a script must not break on the day a folder
        # holds one run).
        from bindf._source import has_glob_chars

        one = len(args.files) == 1 and not has_glob_chars(args.files[0])
        print(json.dumps(records[0] if one else records, indent=2, ensure_ascii=False))
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

    kwargs = _read_kwargs(args, _SET_BY_HEAD)
    frame = bindf.read(_inputs([args.file])[0], output="polars", n_rows=args.n,
                       columns=columns_arg(args.columns), **kwargs)
    # Every column at its full width, one line per row: polars would otherwise squeeze
    # the table into 100 characters when the output is not a terminal (a 19-digit time
    # stamp split over six lines), or into the terminal's width.
    with pl.Config(tbl_rows=args.n, tbl_cols=-1, tbl_width_chars=60_000,
                   fmt_str_lengths=100, tbl_formatting=_table_style()):
        print(frame)
    return EX_OK


def _is_terminal(output: str) -> bool:
    """``-o -``, or a path such as ``/dev/stdout`` or ``/dev/tty``, is a terminal."""
    if output == "-":
        return sys.stdout.isatty()
    try:
        if not stat.S_ISCHR(os.stat(output).st_mode):  # a new or regular file, a pipe
            return False
        fd = os.open(output, os.O_WRONLY | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _table_style() -> str:
    """polars' table style for standard output: its box drawing where the output's
    encoding can show it, plain ASCII otherwise (PYTHONIOENCODING=ascii, a Windows
    console code page), where the box characters would be escapes."""
    try:
        "┌─┬┐│┆".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ASCII_FULL_CONDENSED"
    return "UTF8_FULL_CONDENSED"


def _output_kind(path: str, to: str | None) -> str:
    if to:
        return to
    if streamed_output(path):
        raise CliError(f"{'standard output (-o -)' if path == '-' else path} has no "
                       "extension to tell the output type from; add --to parquet|ipc|csv",
                       EX_USAGE)
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_KINDS:
        raise CliError(
            f"cannot tell the output type from {path!r}; use --to parquet|ipc|csv", EX_USAGE
        )
    return OUTPUT_KINDS[ext]


def _stem(path: str) -> str:
    """The file name without extension, of the link that names the file in a chained
    URL (``zip://run1.bin::data.zip``: ``run1``, not the archive's ``data``)."""
    if "://" in path:  # (a local name may hold "::" itself)
        path = next(link for link in path.split("::") if "://" in link)
    return os.path.splitext(os.path.basename(path))[0]


def _refuse_collisions(jobs: Sequence[tuple[list[Any], str]]) -> None:
    """``--output-dir``: inputs whose outputs would have the same name (``a/run.apx`` and
    ``b/run.apx``, ``x.apx`` and ``x.bin``) are refused before anything is written. Names
    differing only in case collide too: they are one file on macOS and Windows."""
    outputs: dict[str, tuple[str, list[str]]] = {}
    for inputs, output in jobs:
        _, names = outputs.setdefault(os.path.basename(output).casefold(), (output, []))
        names.extend(s.path for s in inputs)
    for output, names in outputs.values():
        if len(names) > 1:
            listed = " and ".join(names) if len(names) == 2 else ", ".join(names)
            raise CliError(f"inputs {listed} would {'both' if len(names) == 2 else 'all'} be "
                           f"written to {output}; "
                           "convert them in separate runs (or into one file with -o)",
                           EX_USAGE)


def cmd_convert(args: argparse.Namespace) -> int:
    from bindf._inputs import expand_sources
    from bindf.frontends.batches import ReadPlan

    if bool(args.output) == bool(args.output_dir):
        raise CliError("give exactly one of -o OUT (one file) or --output-dir DIR (one per input)",
                       EX_USAGE)
    kwargs = _read_kwargs(args, _SET_BY_CONVERT)
    fmt = kwargs.pop("format", None)
    columns = columns_arg(args.columns)
    if args.output_dir and "-" in args.inputs:
        raise CliError("standard input (-) has no name to derive an output from; use -o OUT",
                       EX_USAGE)
    kind = _output_kind(args.output, args.to) if args.output else args.to or "parquet"
    if args.output and kind != "csv" and _is_terminal(args.output):
        raise CliError(f"-o {args.output}: will not write {kind} (binary) to a terminal; "
                       "redirect or pipe standard output, or use --to csv", EX_USAGE)
    sources = expand_sources(_inputs(args.inputs))
    if args.output:
        jobs = [(sources, args.output)]
    else:
        jobs = [([s], os.path.join(args.output_dir,
                                   _stem(s.uncompressed_name) + EXTENSION_OF[kind]))
                for s in sources]
        _refuse_collisions(jobs)
        if os.path.lexists(args.output_dir) and not os.path.isdir(args.output_dir):
            raise CliError(f"--output-dir {args.output_dir}: exists and is not a folder",
                           EX_IOERR)
    for _, output in jobs:  # every output is checked before any is written
        check_output_path(output, args.force, folder_made_later=bool(args.output_dir))
    if args.output_dir:
        try:
            os.makedirs(args.output_dir, exist_ok=True)
        except OSError as exc:
            raise CliError(f"--output-dir {args.output_dir}: cannot create the folder: "
                           f"{exc.strerror or exc}", EX_IOERR) from None
    if columns is not None and len(jobs) > 1:
        # Every input has the columns asked for (headers only), before any is written.
        for inputs, _ in jobs:
            ReadPlan.from_kwargs(inputs, format=fmt, columns=columns, **kwargs).output_schema()
    for inputs, output in jobs:
        plan = ReadPlan.from_kwargs(inputs, format=fmt, columns=columns,
                                    progress=args.progress, **kwargs)
        rows = write_output(plan.iter_batches(), plan.output_schema(), output, kind,
                            plan.info, args.force, fsync=args.fsync)
        if not args.quiet:
            names = [s.path for s in inputs]
            print(f"{', '.join(names) if len(names) <= 3 else f'{len(names)} files'} → "
                  f"{'standard output' if output == '-' else output} ({rows} rows, {kind})",
                  file=sys.stderr)
    return EX_OK


# -- parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bindf",
        description="Read binary files of scientific instruments (AstroPix .apx and logs,\n"
                    "A-STEP frames, FLIM LABS IT02/IT01/ITT1/FCS1/SP01/SPF1 and\n"
                    "spectroscopy) and convert them to Parquet, Arrow or CSV.",
        epilog="exit codes: 0 ok, 2 usage, 65 bad data, 66 input missing/unreadable,\n"
               "73 output exists (see --force), 74 I/O error writing output,\n"
               "75 another ingest holds the dataset's lock, 130 interrupted (Ctrl-C),\n"
               "143 terminated (SIGTERM); bindf follow exits 0 on Ctrl-C or SIGTERM,\n"
               "its usual end",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from bindf import __version__
    from bindf.registry import format_names

    parser.add_argument("--version", action="version", version=f"bindf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_reader_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", help="force the input format: "
                       + ", ".join(format_names()) + " (default: detect)")
        p.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="format option, e.g. layout=sparse, level=readouts, fill_gaps=true")

    p = sub.add_parser("demo", help="decode the sample files bundled with bindf")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("formats", help="list the formats bindf reads (plugins included)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_formats)

    p = sub.add_parser("info", help="format, header and row count of files (no full decode)")
    p.add_argument("files", nargs="+", metavar="FILE", help="files or globs (- for stdin)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_reader_flags(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("head", help="print the first rows of a file")
    p.add_argument("file", metavar="FILE", help="a file (- for stdin)")
    p.add_argument("-n", type=count, default=10, help="number of rows (default 10)")
    p.add_argument("--columns", help="comma-separated columns")
    add_reader_flags(p)
    p.set_defaults(func=cmd_head)

    p = sub.add_parser("convert", help="convert files to Parquet, Arrow IPC or CSV",
                       description="Convert to Parquet/IPC/CSV. A file output is written to a "
                                   "temporary file and renamed, so a failure leaves no partial "
                                   "output; standard output (-o -) and devices are streams.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="input files or globs (- for stdin)")
    p.add_argument("-o", "--output", help="one output file for all inputs (type from extension); "
                   "- is standard output (with --to)")
    p.add_argument("--output-dir", help="write one output per input into this directory, "
                   "named after the input (inputs that would share a name are refused)")
    p.add_argument("--to", choices=["parquet", "ipc", "csv"], help="output type")
    p.add_argument("--columns", help="comma-separated columns to keep")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="do not flush each output to disk before it is published (faster "
                        "for many small files; still never half-written if killed, but not "
                        "safe against power loss)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("-q", "--quiet", action="store_true")
    add_reader_flags(p)
    p.set_defaults(func=cmd_convert)

    from bindf._ingest_cli import add_ingest_command

    add_ingest_command(sub)
    from bindf._follow_cli import add_follow_command

    add_follow_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Ctrl-C and SIGTERM from here on end quietly with 130 / 143. Before, while
    # ``import bindf`` loads pandas, polars and pyarrow (this module is part of the
    # package), Python's own handling applies: a traceback, as the docs say.
    try:
        # Both wait while an output's temporary file is being made (bindf._atomic).
        with signal_handlers({signal.SIGTERM: _raise_terminated,
                              signal.SIGINT: _raise_interrupted}), signals_not_swallowed():
            parser = build_parser()
            args = parser.parse_args(argv)
            from bindf.errors import BindfWarning

            def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
                print(f"bindf: warning: {message}", file=sys.stderr)

            with warnings.catch_warnings():
                warnings.showwarning = show_warning
                if not sys.warnoptions:  # python -W ... (or PYTHONWARNINGS) decides instead
                    warnings.simplefilter("default", BindfWarning)
                return _run(args)
    except KeyboardInterrupt:
        print("bindf: interrupted", file=sys.stderr)
        return EX_INTERRUPTED
    except Terminated:
        print("bindf: terminated", file=sys.stderr)
        return EX_TERMINATED


def command() -> NoReturn:
    """The ``bindf`` command (console script and ``python -m bindf``): :func:`main` run
    as a process.

    After Ctrl-C or SIGTERM the process ends at once, without the interpreter's shutdown:
    the exception a signal handler raises can arrive between a lock's acquire and the
    ``with`` block that would release it (a thread pool's global shutdown lock, say), and
    the shutdown, which takes that lock to stop the pools' threads, would then wait for
    ever (seen: ``convert`` hung after SIGTERM under load). Every output was cleaned up by
    then: the ``with`` blocks ran while the exception unwound.
    """
    # What the terminal's encoding cannot show (the tables' box drawing under
    # PYTHONIOENCODING=ascii, a Windows console page, a file name) is printed escaped
    # instead of failing the command.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    code = main()
    if code in (EX_INTERRUPTED, EX_TERMINATED):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _run(args: argparse.Namespace) -> int:
    from bindf._atomic import OutputExistsError
    from bindf._inputs import NotARegularFileError
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
    except OutputExistsError as exc:
        print(f"bindf: error: {exc.path}: output exists (use --force to replace it)",
              file=sys.stderr)
        return EX_CANTCREAT
    except FileExistsError as exc:
        print(f"bindf: error: {exc}", file=sys.stderr)
        return EX_CANTCREAT
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotARegularFileError) as exc:
        name = exc.filename if exc.filename is not None else ""
        print(f"bindf: error: {name}: {exc.strerror or exc}" if name else f"bindf: error: {exc}",
              file=sys.stderr)
        return EX_NOINPUT
    except (ValueError, TypeError) as exc:
        # bad options and option values: unknown option, column or layout, a reader
        # option of the wrong type (TypeError, as for Python keyword arguments) …
        print(f"bindf: error: {exc}", file=sys.stderr)
        return EX_USAGE
    except OSError as exc:
        print(f"bindf: error: {exc}", file=sys.stderr)
        return EX_IOERR


if __name__ == "__main__":
    raise SystemExit(main())
