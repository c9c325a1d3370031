"""The parameters of the public readers, declared once.

:data:`COMMON` is the one table of the parameters every ``read_<format>`` (and, where
they apply, every ``scan_<format>`` and ``bindf.dask.read_<format>``) takes. The
signatures that ``inspect.signature``, Jupyter's Shift-Tab and the typing stub show, the
docstrings, and the routing of each argument to where it is used (the
:class:`~bindf.frontends.batches.ReadPlan`, the format's reader, or the output
conversion) are all generated from it, so adding a common parameter is one
:class:`Param` line here (plus the code that honours it).

A format's own options (``level=`` for AstroPix, ``layout=`` for IT02 …) are
:class:`Param` s too, declared once in the format's :class:`~bindf.registry.FormatSpec`;
they go to the format's reader.

Adding a common parameter: one :class:`Param` line in :data:`COMMON` (its
``goes_to`` says who receives it: :meth:`ReadPlan.from_kwargs
<bindf.frontends.batches.ReadPlan.from_kwargs>` hands PLAN parameters to the
``ReadPlan`` constructor and READER ones to the reader; OUTPUT ones are taken by
:func:`bindf.read`), then the code that honours it, then ``python -m bindf._stubgen``.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Where an argument goes: the batch pipeline, the format's reader (as an option), or
#: the conversion of Arrow batches to the requested output.
PLAN, READER, OUTPUT = "plan", "reader", "output"


@dataclass(frozen=True)
class Param:
    """One keyword parameter of the generated readers."""

    name: str
    default: Any
    #: Type annotation, as text (the signature shows it as written).
    annotation: str
    doc: str
    #: PLAN, READER or OUTPUT (see above).
    goes_to: str = PLAN
    #: Also a parameter of ``scan_<format>`` (lazy scans get projections, row limits and
    #: the output type from polars itself).
    on_scan: bool = True
    #: Also a parameter of ``bindf.dask.read_<format>``.
    on_dask: bool = False
    #: A parameter of ``read_<format>`` (False: only of the scans or dask).
    on_read: bool = True


COMMON: tuple[Param, ...] = (
    Param("columns", None, "Sequence[str] | str | None",
          "Columns to return (in that order). Unrequested columns are not decoded. The "
          "``row_index_name`` and ``include_file_paths`` columns are added whatever it "
          "names, first and last as in polars (or where it names them).",
          on_scan=False, on_dask=True),
    Param("n_rows", None, "int | None",
          "Stop after this many rows (on a scan: polars' ``n_rows``, the first rows of the "
          "scan, before any later ``filter``, like ``.head(n)`` right after it)."),
    Param("output", "pandas", 'Literal["pandas", "polars", "arrow"]',
          '``"pandas"`` (default), ``"polars"`` or ``"arrow"`` (a ``pyarrow.Table``).',
          goes_to=OUTPUT, on_scan=False),
    Param("chunksize", None, "int | None",
          "Return an iterator of frames of at most this many rows instead of one frame "
          "(pandas' convention; works for every ``output``).", goes_to=OUTPUT, on_scan=False),
    Param("dtype_backend", None, 'Literal["numpy_nullable", "pyarrow"] | None',
          "pandas output only, as in pandas' readers: None (the default: numpy columns, "
          "pandas' nullable integers and booleans where a column can be null), "
          '``"numpy_nullable"`` (pandas\' masked dtypes for every number and boolean, '
          'as ``pd.read_parquet`` gives) or ``"pyarrow"`` (``pd.ArrowDtype`` columns '
          "wrapping bindf's Arrow buffers, no copy). Any other ``output`` refuses it "
          "(ValueError).",
          goes_to=OUTPUT, on_scan=False, on_dask=True),
    Param("batch_size", None, "int | None", "Rows per internal Arrow batch."),
    Param("include_file_paths", None, "str | None",
          "Name of a column to add holding each row's source path (as in polars).",
          on_dask=True),
    Param("row_index_name", None, "str | None",
          "Add a ``uint64`` row-number column of this name, counted across files (as in "
          "polars)."),
    Param("row_index_offset", 0, "int", "First value of the row-number column."),
    Param("storage_options", None, "dict[str, Any] | None",
          "Passed to fsspec for remote paths.", on_dask=True),
    Param("progress", False, "bool",
          "Show a tqdm progress bar (needs ``bindf[progress]``)."),
    Param("threads", None, "int | None",
          "Threads one read may use: files of a glob or list are decoded in parallel, "
          "and a large file's records too where the format allows (same output, same "
          "row order). ``None``: the usable cores, or ``BINDF_NUM_THREADS``; one inside "
          "a dask worker; at most polars' pool size inside a polars scan.",
          on_dask=True),
    Param("on_error", "raise", 'Literal["raise", "warn", "skip"]',
          '``"raise"`` (default), ``"warn"`` or ``"skip"`` for damaged records/readouts. '
          'Skipped damage is counted under ``"errors"`` in the metadata.',
          goes_to=READER, on_dask=True),
    Param("blocksize", "128 MiB", "int | str | None",
          "Bytes per partition for fixed-size-record formats (record-aligned byte ranges); "
          "None: one partition per file. Other formats get one partition per file.",
          on_read=False, on_scan=False, on_dask=True),
)

#: The common parameters of reading data (which rows and columns, batches, the
#: progress bar): a header-only read (``read_header``) takes none of them. It ignores
#: ``threads`` and ``on_error``, and takes ``storage_options`` as its own.
DATA_ONLY_PARAMS = frozenset(p.name for p in COMMON) - {"threads", "on_error",
                                                        "storage_options"}


#: Names users bring from pandas, polars or numpy, and bindf's name for the same thing.
HINTS: dict[str, str] = {
    "nrows": "n_rows",
    "usecols": "columns",
    "chunk_size": "chunksize",
    "include_file_path": "include_file_paths",
    "row_count_name": "row_index_name",
    "row_count_offset": "row_index_offset",
    "errors": "on_error",
}

#: What to do instead, for parameters of pandas' and polars' readers that bindf has no
#: use for (a close name would mislead: ``rechunk`` is not ``chunksize``).
ADVICE: dict[str, str] = {
    "rechunk": "bindf has no rechunk=: call .rechunk() on the frame (a read of several "
               "files, or of a large file in batches, holds a chunk per batch)",
    "low_memory": "for bounded memory, read in chunks (chunksize=) or scan lazily",
    "engine": "bindf has one decoder per format: drop engine= (bindf.read's output= "
              "picks pandas, polars or Arrow)",
    "use_pyarrow": "for Arrow, output='arrow' (or dtype_backend='pyarrow' in pandas)",
    "filepath_or_buffer": "the source is the first argument (or source=)",
}

#: The ``source`` parameter: its annotation names the ``Sources`` type of
#: :mod:`bindf._inputs` (paths, URLs, bytes, binary file objects, fsspec ``OpenFile``,
#: or a list of those).
_SOURCE = inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                            annotation="Sources")


def parameters(kind: str, options: Iterable[Param] = ()) -> list[Param]:
    """The keyword parameters of a generated ``kind`` function (``"read"``, ``"scan"``,
    ``"dask"``, or ``"open"`` for :func:`bindf.open`: what a read takes except the output
    choices, which its ``to_pandas()``/``to_polars()`` … make): the common ones that
    apply, then the format's ``options``."""
    if kind == "read":
        common = [p for p in COMMON if p.on_read]
    elif kind == "open":
        common = [p for p in COMMON if p.on_read and p.goes_to != OUTPUT]
    elif kind == "scan":
        common = [p for p in COMMON if p.on_scan]
    elif kind == "dask":
        common = [p for p in COMMON if p.on_dask]
    else:
        raise ValueError(kind)
    names = {p.name for p in common}
    return common + [p for p in options if p.name not in names]


def signature(kind: str, options: Iterable[Param], returns: str) -> inspect.Signature:
    """The signature ``inspect.signature`` shows for a generated function."""
    params = [_SOURCE] + [
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                          annotation=p.annotation)
        for p in parameters(kind, options)
    ]
    return inspect.Signature(params, return_annotation=returns)


def signature_with_options(kind: str) -> inspect.Signature:
    """The signature of a format-generic function (``bindf.read``, ``bindf.scan``,
    ``bindf.open``): ``source``, ``format``, the common parameters, then ``**options``
    for the format's."""
    base = signature(kind, (), "Any")
    params = list(base.parameters.values())
    params.insert(1, inspect.Parameter("format", inspect.Parameter.KEYWORD_ONLY,
                                       default=None, annotation="str | None"))
    params.append(inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD,
                                    annotation="Any"))
    return base.replace(parameters=params)


#: Parameters of ``read_<format>`` that a polars scan does not take, and where a polars
#: user finds the same thing.
SCAN_HINTS: dict[str, str] = {
    "columns": "polars picks a scan's columns: .select(...) on the LazyFrame",
    "output": "a scan is a polars LazyFrame: .collect(), then convert the DataFrame",
    "chunksize": "did you mean batch_size=?",
    "dtype_backend": "a scan is a polars LazyFrame; dtype_backend is for pandas output",
}


#: Parameters of ``read_<format>`` that ``bindf.dask.read_<format>`` does not take, and
#: what a dask user does instead.
DASK_HINTS: dict[str, str] = {
    "n_rows": "use ddf.head(n), which reads only the first partition(s)",
    "row_index_name": "partitions count their rows from 0; for a global row number use "
                      "a cumulative sum, ddf.assign(row=1).row.cumsum() - 1",
    "row_index_offset": "see row_index_name",
    "chunksize": "partitions are the chunks; set blocksize=",
    "batch_size": "each partition is one frame; set blocksize=",
    "output": "the partitions are pandas frames",
    "progress": "use dask's progress bar or dashboard",
}


def check_count(name: str, value: Any, minimum: int, *, optional: bool = True) -> None:
    """A ``ValueError`` unless ``value`` is an integer (not a bool) >= ``minimum``, or
    None when ``optional``: row counts and sizes (``n_rows``, ``batch_size``,
    ``chunksize``), which a float such as 2.5 would turn into odd batches or a foreign
    error deep in a reader."""
    if type(value) is int and value >= minimum:  # the usual case, without the ABC check
        return  # (that costs ~1 µs, per file of a glob of thousands)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, not {value!r}")


def check_seconds(name: str, value: Any, *, positive: bool, optional: bool = False) -> None:
    """A ``ValueError`` unless ``value`` is a finite real number of seconds (> 0 when
    ``positive``, else >= 0), or None when ``optional``: a NaN passed every comparison
    (an idle timeout that never came, ``time.sleep``'s own error later), and a str gave
    a ``TypeError`` from deep inside."""
    if value is None and optional:
        return
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0 or (positive and value == 0)):
        what = "a positive number of seconds" if positive else "a number of seconds >= 0"
        raise ValueError(f"{name} must be {what}{' or None' if optional else ''}, "
                         f"not {value!r}")


def column_list(columns: Any) -> list[str] | None:
    """``columns=`` as a list of names (a str is one name; None stays None), or a
    ``TypeError`` saying what it takes (not "'int' object is not iterable")."""
    if columns is None:
        return None
    names = [columns] if isinstance(columns, str) else \
        list(columns) if isinstance(columns, Iterable) else None
    if names is None or not all(isinstance(c, str) for c in names):
        raise TypeError(f"columns must be a column name or a list of them, not {columns!r}")
    return names


def check_flag(name: str, value: Any) -> None:
    """A ``TypeError`` unless ``value`` is True or False (a numpy bool too): a string
    such as ``"no"`` is truthy, and ``overwrite="no"`` would overwrite."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, not {value!r}")


def allowed_values(annotation: str) -> list[Any] | None:
    """The values an option's annotation allows, when it lists them all
    (``'Literal["dense", "sparse"] | None'`` → ``["dense", "sparse", None]``,
    ``"bool"`` → ``[True, False]``); ``None`` when it does not (``int``, ``Any``)."""
    values: list[Any] = []
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None":
            values.append(None)
        elif part == "bool":
            values += [True, False]
        elif part.startswith("Literal[") and part.endswith("]"):
            try:
                listed = ast.literal_eval(f"[{part[len('Literal['):-1]}]")
            except (ValueError, SyntaxError):
                return None
            values += listed
        else:
            return None
    return values


def value_allowed(value: Any, values: list[Any]) -> bool:
    """Whether ``value`` is one of ``values``: numpy's bools, integers and strings count as
    Python's (and str enums as their text), but not ``True`` as ``1`` or ``1.0`` as ``1``."""
    def same(v: Any) -> bool:
        if v is None:
            return value is None
        if isinstance(v, str):  # numpy's str_ and str enums too
            return isinstance(value, str) and value == v
        if isinstance(v, bool):
            return isinstance(value, (bool, np.bool_)) and bool(value) is v
        if isinstance(v, int):
            return (isinstance(value, numbers.Integral)
                    and not isinstance(value, (bool, np.bool_)) and value == v)
        return value == v
    return any(same(v) for v in values)


def check_names(function: str, given: Iterable[str], allowed: Iterable[str],
                hints: dict[str, str] | None = None) -> None:
    """A ``TypeError`` for keyword arguments ``function`` does not take, with a hint
    where there is one: ``hints`` (what to do instead), else ``nrows`` → ``n_rows`` or
    the closest name."""
    allowed = list(allowed)
    unknown = [name for name in given if name not in allowed]
    if not unknown:
        return
    name = unknown[0]
    message = f"{function}() got an unexpected option (keyword argument) {name!r}"
    hints = hints or {}
    instead = hints.get(name) or hints.get(HINTS.get(name, "")) or ADVICE.get(name)  # nrows too
    if instead:
        raise TypeError(f"{message}; {instead}")
    hint = HINTS.get(name)
    if hint is None or hint not in allowed:
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = close[0] if close else None
    if hint:
        message += f"; did you mean {hint}=?"
    raise TypeError(message)


def option(name: str, default: Any, annotation: str, doc: str) -> Param:
    """A format's own option (goes to its reader; on every generated function)."""
    return Param(name, default, annotation, doc, goes_to=READER, on_scan=True, on_dask=True)


def docstring(kind: str, options: Iterable[Param], drop: Iterable[str] = ()) -> str:
    """The "Parameters" section of a generated function's docstring (without the
    parameters named in ``drop``)."""
    drop = set(drop)
    lines = ["Parameters", "----------", "source:",
             "    A path, a ``file://`` or fsspec URL, a glob (expanded by bindf, sorted),",
             "    ``bytes``/``bytearray``/``memoryview``, a binary file object (``BytesIO``,",
             "    ``open(path, 'rb')``, a zip member, ``sys.stdin.buffer``, an HTTP body;",
             "    seekable or not), an fsspec ``OpenFile``, or a list of those. A file object",
             "    is read from its current position and never closed by bindf; a",
             "    non-seekable stream is read once, with bounded memory (see the Arrow and",
             "    DuckDB page of the docs); the metadata's ``source`` names it",
             "    (``<BytesIO>``, or the file's ``name``). A name ending in ``.gz``, ``.bz2``,",
             "    ``.xz`` or ``.zst`` is read decompressed (as pandas infers compression;",
             "    see *Compressed files* in the reading guide). Several files are read one after",
             "    the other; they must have the same columns (or the same requested",
             "    ones), and the frame carries the",
             "    *first* file's header."]
    for p in parameters(kind, options):
        if p.name in drop:
            continue
        lines.append(f"{p.name}: {p.annotation} = {p.default!r}")
        lines.append(f"    {p.doc}")
    return "\n".join(lines)
