"""``bindf.read_headers``: one row per file with its header, for catalogues of many runs.

Only headers are read (plus, for fixed-size-record formats, the row count that follows
from the file size), so a catalogue of thousands of files is cheap. Local headers are
read one after the other in the calling thread (parsing holds the GIL: threads made it
slower); remote (fsspec) ones, whose time is latency, ``threads`` at a time on bindf's
thread pool. dask is not used.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, overload

import pyarrow as pa

from .._inputs import Sources, expand_sources
from .._params import check_flag, check_names
from .._source import Source, ensure_bindf_path
from .._threads import resolve_threads, run_all, shared_executor
from ..arrow import path_text
from ..errors import BindfError
from ..formats._base import FormatReader
from ..registry import detect_format, open_reader, option_names
from .output import Frame, Output, check_output, table_to_output

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

#: Columns every row has, before the header fields.
FIXED_COLUMNS = ("path", "format", "size_bytes", "rows")



def flatten_header(header: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys; lists (and empty dicts) become JSON text.

    Scalars only, so every field is one typed column that pandas, polars, Arrow and
    Parquet handle alike and that can be filtered on; ``json.loads`` gives a list back.
    """
    flat: dict[str, Any] = {}
    for key, value in header.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_header(value, prefix=f"{name}."))
        elif isinstance(value, (dict, list)):
            flat[name] = json.dumps(value, ensure_ascii=False)
        else:
            flat[name] = value
    return flat


def header_reader(source: Source, format: str | None,
                  options: dict[str, Any]) -> FormatReader:
    """The reader of one file, for its header. Without ``format``, the file's format
    (detected) gets those of ``options`` that it takes: a glob may mix formats whose
    options differ (``layout=`` is IT02's only)."""
    if format is None and options:
        spec = detect_format(source)
        taken = {param.name for param in spec.options}
        format, options = spec.name, {k: v for k, v in options.items() if k in taken}
    return open_reader(source, format, **options)


def header_row(source: Source, format: str | None, flatten: bool,
               options: dict[str, Any]) -> dict[str, Any]:
    """The catalogue row of one file (see :func:`header_reader`). Errors name the file."""
    try:
        # one open; a compressed file's copy let go after it
        with source.held(small_whole=False):
            reader = header_reader(source, format, options)
            rows = reader.count_rows()
            header = reader.header
            name = reader.name
            size = source.size
    except BindfError as exc:
        raise ensure_bindf_path(exc, source.path) from None
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python ≥ 3.11
            exc.add_note(f"while reading the header of {source.path}")
        raise
    # an Arrow string column: valid UTF-8, which a file name need not be
    row: dict[str, Any] = {"path": path_text(source.path), "format": name,
                           "size_bytes": size, "rows": rows}
    row.update(header_fields(header) if flatten
               else {"header": json.dumps(header, ensure_ascii=False)})
    return row


def header_fields(header: dict[str, Any]) -> dict[str, Any]:
    """A header's columns in :func:`read_headers` (``flatten=True``), losing nothing.

    :func:`flatten_header` of each top-level key, with a key equal to a fixed column
    renamed ``header.<key>``. Where two keys would give one column name (``{"a.b": 1,
    "a": {"b": 2}}``, or ``path`` renamed beside a nested ``header.path``), each
    top-level key involved keeps its whole value under its own name instead (a dict as
    JSON text), so that no value overwrites another.
    """

    def fields_of(key: str, value: Any) -> dict[str, Any]:
        fields = flatten_header({key: value})
        return {f"header.{name}" if name in FIXED_COLUMNS else name: v
                for name, v in fields.items()}

    def whole(key: str, value: Any) -> dict[str, Any]:
        name = f"header.{key}" if key in FIXED_COLUMNS else key
        if isinstance(value, dict) and value:
            return {name: json.dumps(value, ensure_ascii=False)}
        return fields_of(key, value)

    per_key = {key: fields_of(key, value) for key, value in header.items()}
    owners: dict[str, list[str]] = {}
    for key, fields in per_key.items():
        for name in fields:
            owners.setdefault(name, []).append(key)
    clashing = {key for keys in owners.values() if len(keys) > 1 for key in keys}
    # a subtree that collides with itself ({"b.c": 1, "b": {"c": 2}} inside one key)
    clashing |= {key for key, value in header.items() if len(per_key[key]) < _leaves(value)}
    per_key.update({key: whole(key, header[key]) for key in clashing})
    # Whatever still clashes (a whole key's name equal to another key's flattened one,
    # or a fixed column's) gets a "header." prefix, once more per clash.
    flat: dict[str, Any] = {}
    for fields in per_key.values():
        for name, value in fields.items():
            while name in flat or name in FIXED_COLUMNS:
                name = f"header.{name}"
            flat[name] = value
    return flat


def _leaves(value: Any) -> int:
    """How many columns :func:`flatten_header` makes of ``value`` when nothing collides."""
    if isinstance(value, dict) and value:
        return sum(_leaves(v) for v in value.values())
    return 1


def _rows(sources: list[Source], format: str | None, flatten: bool, options: dict[str, Any],
          threads: int) -> list[dict[str, Any]]:
    """The rows in source order. Local headers are read one after the other in the
    calling thread: parsing them holds the GIL, and threads only added contention (with
    dask's pool, 2,000 small runs took 3.5-5 s instead of 0.6-0.75 s). Remote ones wait
    on the network, so they are read ``threads`` at a time."""
    def row(source: Source) -> dict[str, Any]:
        return header_row(source, format, flatten, options)

    remote = [s.is_remote for s in sources]
    if threads < 2 or sum(remote) < 2:
        return [row(s) for s in sources]
    pool = shared_executor("bindf-headers", threads)
    fetched = iter(run_all(pool, row, [s for s, far in zip(sources, remote) if far]))
    return [next(fetched) if far else row(s) for s, far in zip(sources, remote)]


#: Types of the fixed columns; only ``rows`` can be null.
_FIXED_FIELDS = {
    "path": pa.field("path", pa.string(), nullable=False),
    "format": pa.field("format", pa.string(), nullable=False),
    "size_bytes": pa.field("size_bytes", pa.int64(), nullable=False),
    "rows": pa.field("rows", pa.int64()),
}


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    names = list(dict.fromkeys([*FIXED_COLUMNS, *(key for row in rows for key in row)]))
    arrays, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        fixed = _FIXED_FIELDS.get(name)
        array = pa.array(values, fixed.type) if fixed else _column(values)
        arrays.append(array)
        fields.append(fixed or pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _column(values: list[Any]) -> pa.Array:
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        # One key, several types across files (a number here, a string there): text.
        return pa.array([None if v is None else _as_text(v) for v in values], pa.string())
    return array if not pa.types.is_null(array.type) else array.cast(pa.string())


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@overload
def read_headers(paths_or_glob: Sources, *, storage_options: dict[str, Any] | None = ...,
                 flatten: bool = ..., output: Literal["pandas"] = ..., format: str | None = ...,
                 threads: int | None = ..., parallel: bool | None = ...,
                 **options: Any) -> pd.DataFrame: ...
@overload
def read_headers(paths_or_glob: Sources, *, storage_options: dict[str, Any] | None = ...,
                 flatten: bool = ..., output: Literal["polars"], format: str | None = ...,
                 threads: int | None = ..., parallel: bool | None = ...,
                 **options: Any) -> pl.DataFrame: ...
@overload
def read_headers(paths_or_glob: Sources, *, storage_options: dict[str, Any] | None = ...,
                 flatten: bool = ..., output: Literal["arrow"], format: str | None = ...,
                 threads: int | None = ..., parallel: bool | None = ...,
                 **options: Any) -> pa.Table: ...
@overload
def read_headers(paths_or_glob: Sources, *, storage_options: dict[str, Any] | None = ...,
                 flatten: bool = ..., output: str, format: str | None = ...,
                 threads: int | None = ..., parallel: bool | None = ...,
                 **options: Any) -> Frame: ...


def read_headers(
    paths_or_glob: Sources,
    *,
    storage_options: dict[str, Any] | None = None,
    flatten: bool = True,
    output: Output | str = "pandas",
    format: str | None = None,
    threads: int | None = None,
    parallel: bool | None = None,
    **options: Any,
) -> Frame:
    """One row per file: ``path``, ``format``, ``size_bytes``, ``rows`` and its header.

    Parameters
    ----------
    paths_or_glob:
        Paths, URLs or globs, as for :func:`bindf.read`. Files may be of different
        formats (each is detected), unless ``format=`` forces one.
    storage_options:
        Passed to fsspec for remote paths.
    flatten:
        True: one column per scalar header field, nested dicts as dotted names
        (``chip.threshold``), lists as JSON text. False: the whole header as JSON text in
        one ``header`` column. A header key equal to a fixed column name is renamed
        ``header.<key>``; keys whose flattened names would collide (``{"a.b": 1, "a":
        {"b": 2}}``) keep their whole value under their own name (``a`` as JSON text),
        so no value is lost. Missing keys are null; a key with different types in
        different files becomes JSON text.
    output:
        ``"pandas"`` (default), ``"polars"`` or ``"arrow"``.
    threads:
        How many remote (fsspec) headers are fetched at a time (default: as for every
        reader). Local headers are read one after the other: parsing holds the GIL, and
        a small file's header takes microseconds.
    parallel:
        Former switch, kept working: ``False`` is ``threads=1``.
    **options:
        Format options (e.g. ``container=``). Without ``format=``, each file gets those
        its format takes, so a glob may mix formats; a name that no format takes is a
        ``TypeError``.

    Notes
    -----
    ``path`` is the file's path, except that a name that is not valid UTF-8 (possible on
    POSIX) has its undecodable bytes as ``\\xNN`` escapes (see
    :func:`bindf.arrow.path_text`). ``rows`` is the number of complete records when the
    format knows it without decoding (fixed-size records), else null. An unreadable
    header raises the reader's error, naming the file.
    """
    check_output(output)
    check_flag("flatten", flatten)
    if parallel is not None:
        check_flag("parallel", parallel)
    if format is None and options:  # with format=, its reader refuses what it does not take
        check_names("read_headers", options,
                    option_names())
    workers = 1 if parallel is False else resolve_threads(threads)
    sources = expand_sources(paths_or_glob, storage_options)
    rows = _rows(sources, format, flatten, dict(options), workers)
    return table_to_output(_table(rows), output, None)

