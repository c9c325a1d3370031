"""Parquet (and Arrow IPC / CSV) export that keeps the file header.

The header goes into the Parquet schema metadata under ``bindf.header`` (with
``bindf.format``, ``bindf.source`` and ``bindf.version``), so any Arrow-based tool sees
it. For pandas frames, ``df.attrs`` is also stored under ``PANDAS_ATTRS``, the key that
``pandas.read_parquet`` restores ``attrs`` from. ``bindf.read_parquet`` restores the
header on pandas, polars and Arrow output alike.

Every export to a path is atomic: written to a temporary file beside the destination and
renamed (see :mod:`bindf._atomic`).
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, overload

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._atomic import atomic_path
from ._file_objects import (
    _is_fsspec_open_file,
    _object_name,
    _text_mode_error,
    is_source_object,
    open_file_name,
)
from ._frames import (
    _library,
    info_of,
    polars_scan_plan,
    set_pandas_info,
    shared,
    to_arrow_table,
)
from ._inputs import (
    SourceObject,
    _storage_options,
    local_matches,
    refuse_unused_storage_options,
    remote_matches,
    source_items,
    source_path_text,
)
from ._manifest import MANIFEST_NAME
from ._params import check_count, column_list
from ._source import _fsspec_filesystem, _is_url, _local_path, has_glob_chars
from ._writing import encode_preamble, inherited_header
from .arrow import attach_info, build_info, info_from_metadata, info_to_metadata, with_metadata
from .errors import BindfError, CorruptDataError, UnknownFormatError, check_columns_known
from .formats._base import summed_errors
from .frontends.batches import (
    _alike_columns,
    check_extra_column_name,
    path_chunks,
    warn_of_header_differences,
    with_extra_columns,
)
from .frontends.output import (
    SIGNED_INDEX,
    DtypeBackend,
    Frame,
    Output,
    check_output,
    path_type_for,
    table_to_output,
)

if TYPE_CHECKING:
    import polars as pl

PANDAS_ATTRS_KEY = b"PANDAS_ATTRS"
#: The schema metadata key of the pandas metadata pyarrow writes for a pandas frame.
PANDAS_METADATA_KEY = b"pandas"


def frame_to_table(frame: Frame, *, header: Mapping[str, Any] | None = None,
                   format: str | None = None) -> tuple[pa.Table, dict[str, Any] | None]:
    """Any supported frame → (Arrow table, bindf info or None), through the same
    conversion as the writers (:func:`bindf._frames.to_arrow_table`), keeping a pandas
    index as pandas' own ``to_parquet`` does.

    ``header``/``format`` replace what the frame carries (see :func:`to_parquet`). The
    header stored must be strict JSON, as the format writers require.
    """
    info = _info_to_store(frame, header, format)
    replaced = header is not None or format is not None
    if _library(frame) == "pandas" and replaced:
        # attrs as stored (pyarrow's pandas metadata, PANDAS_ATTRS) say what bindf.header
        # says, not the header that was replaced
        frame = frame.copy(deep=False)
        frame.attrs = {**frame.attrs, "bindf": shared(info)}
    table = to_arrow_table(frame, keep_index=True, keep_na=True)
    attrs = getattr(frame, "attrs", None) if _library(frame) == "pandas" else None
    metadata = dict(table.schema.metadata or {})
    if attrs:
        metadata[PANDAS_ATTRS_KEY] = json.dumps(attrs, default=str).encode()
    if PANDAS_METADATA_KEY in metadata:
        metadata[PANDAS_METADATA_KEY] = _readable_pandas_metadata(metadata[PANDAS_METADATA_KEY])
    table = with_metadata(table, metadata)
    if info is not None:
        table = attach_info(table, info)
    return table, info


def _readable_pandas_metadata(stored: bytes) -> bytes:
    """pyarrow's pandas metadata, with each ``…[pyarrow]`` column type that pandas
    cannot parse back (a ``dtype_backend="pyarrow"`` category column, spectroscopy's
    ``marker``: ``dictionary<…>[pyarrow]``; SP01's wide histograms: a fixed-size list)
    named as a type it can: ``category`` for a dictionary, else ``object``. Plain
    ``pd.read_parquet`` failed on such a file (as on pandas' own ``to_parquet`` of the
    frame); it reads those columns as categoricals and lists of arrays now. The
    original type is kept beside it, so that ``bindf.read_parquet`` gives such a column
    its ``ArrowDtype`` back (:func:`_with_arrow_dtypes_back`)."""
    pandas_metadata = json.loads(stored)
    changed = False
    for column in pandas_metadata.get("columns", []):
        kind = column.get("numpy_type")
        if not (isinstance(kind, str) and kind.endswith("[pyarrow]")):
            continue
        try:
            pd.api.types.pandas_dtype(kind)
        except (TypeError, ValueError, NotImplementedError):
            column["numpy_type"] = "category" if kind.startswith("dictionary<") else "object"
            # (for bindf.read_parquet, which gives the column its ArrowDtype back)
            column["metadata"] = {**(column.get("metadata") or {}), _ARROW_DTYPE_KEY: kind}
            changed = True
    return json.dumps(pandas_metadata).encode() if changed else stored


#: Marks a column of the pandas metadata whose ``ArrowDtype`` pandas could not read back
#: (see :func:`_readable_pandas_metadata`).
_ARROW_DTYPE_KEY = "bindf_arrow_dtype"


def _with_arrow_dtypes_back(frame: pd.DataFrame, table: pa.Table,
                            stored: bytes) -> pd.DataFrame:
    """``frame`` (``table`` converted by its pandas metadata ``stored``) with the
    columns that were ``ArrowDtype`` when written, but that pandas cannot read back as
    such (:func:`_readable_pandas_metadata`), made ``ArrowDtype`` again: every column
    comes back as pandas wrote it."""
    names = [column["name"] for column in json.loads(stored).get("columns", [])
             if _ARROW_DTYPE_KEY in (column.get("metadata") or {})]
    for name in names:
        if name in frame.columns and name in table.column_names:
            frame[name] = pd.Series(pd.arrays.ArrowExtensionArray(table.column(name)),
                                    index=frame.index, name=name)
    return frame


def _info_to_store(frame: Any, header: Mapping[str, Any] | None,
                   format: str | None) -> dict[str, Any] | None:
    """The bindf info a Parquet file of ``frame`` stores: the frame's, its header or
    format replaced by ``header``/``format``; the header checked as the writers check it."""
    carried = info_of(frame)
    info = dict(carried) if carried is not None else None
    if header is not None:
        info = info if info is not None else {"format": None, "source": None}
        info["header"] = inherited_header(frame, header)
    if format is not None:
        if info is None:
            raise ValueError("format= names the format of the header, and this frame "
                             "carries no header: pass header= too")
        from .registry import get_format

        get_format(format)  # a ValueError listing the known formats
        info["format"] = format
    if info is not None:
        # The writers' own check (strict JSON that reads back); the preamble is unused.
        encode_preamble(b"", info["header"])
    return info


def to_parquet(
    frame: Frame | pl.LazyFrame,
    path: str | os.PathLike[str] | BinaryIO,
    *,
    header: Mapping[str, Any] | None = None,
    format: str | None = None,
    compression: str = "zstd",
    overwrite: bool = True,
    **write_options: Any,
) -> None:
    """Write ``frame`` (pandas, polars or Arrow) to Parquet, keeping its bindf header.

    Parameters
    ----------
    frame:
        A pandas, polars or Arrow frame, or a polars ``LazyFrame``: that of a bindf scan
        is streamed batch by batch (as ``bindf convert`` writes; with ``**write_options``
        or to an fsspec ``OpenFile``, collected), any other collected. A pandas index
        other than the default ``RangeIndex`` is written as columns, as pandas' own
        ``to_parquet`` does, and :func:`read_parquet` (or ``pd.read_parquet``) restores
        it.
    path:
        A local path (``~`` expanded), written atomically: to a temporary file beside
        it, renamed into place once complete. A missing folder or a path that is a
        folder is an error before anything is written. Or a binary file object opened
        for writing (``io.BytesIO``, ``open(p, "wb")``), written as it is: neither
        closed nor made atomic by bindf. Or an fsspec ``OpenFile`` for remote storage
        (``fsspec.open("s3://…", "wb")``), which bindf opens and closes. A URL string
        is refused: the rename that makes a write atomic is local.
    header:
        The header to store, instead of the one the frame carries. Frames made by a
        polars operation (``filter``, ``head``, ``with_columns`` …) carry none: pass the
        original frame's ``df.bindf.header``. It must be strict JSON, as for the format
        writers: ``NaN``/``Infinity`` and values JSON does not know (numpy integers:
        convert with ``int(value)``) are a ``ValueError``.
    format:
        The format name stored with the header (default: the frame's).
    compression:
        Parquet compression codec (``"zstd"``, ``"snappy"``, ``None`` …).
    overwrite:
        False: an existing file at ``path`` is an error (a ``FileExistsError``).
    **write_options:
        Passed to ``pyarrow.parquet.write_table`` (``row_group_size=`` …).
    """
    _check_compression(compression)
    scan = polars_scan_plan(frame)
    if scan is not None and not write_options and not _is_fsspec_open_file(path) \
            and not (isinstance(path, str) and _is_url(path)):
        # A bindf scan as it was made: its batches streamed to the file, as bindf
        # convert does, never all in memory (collecting first held the whole frame)
        stored = _info_to_store(frame, header, format)
        plan = scan()

        def info() -> dict[str, Any]:  # the damage skipped is known at the end
            return {**plan.info(), **{k: stored[k] for k in ("header", "format")}}

        write_batches(plan.iter_batches(), plan.output_schema(), path, to="parquet",
                      info=info if stored is not None else None, overwrite=overwrite,
                      compression=compression)
        return
    table, _ = frame_to_table(frame, header=header, format=format)
    if _is_fsspec_open_file(path):
        if "w" not in path.mode or "b" not in path.mode:
            raise TypeError(f"{open_file_name(path)}: open it for binary writing, "
                            f"mode 'wb' (not {path.mode!r})")
        with path as f:
            pq.write_table(table, f, compression=compression, **write_options)
        return
    if hasattr(path, "write"):
        if isinstance(path, io.TextIOBase):
            raise TypeError(f"{_object_name(path)}: this file object is opened in text "
                            "mode, and Parquet is bytes: open it with mode 'wb'")
        pq.write_table(table, path, compression=compression, **write_options)
        return
    if isinstance(path, str) and _is_url(path):
        raise ValueError(f"{path}: bindf writes Parquet to local paths (atomically) or to "
                         "file objects; for remote storage pass "
                         "fsspec.open(url, 'wb') instead of the URL")
    with atomic_path(path, overwrite=overwrite) as tmp, _output_file(tmp) as f:
        pq.write_table(table, f, compression=compression, **write_options)


#: What ``read_parquet`` takes as its source: one path, glob, URL or object, or a list
#: of paths, globs, URLs and objects.
ParquetSource = str | os.PathLike[str] | SourceObject
ParquetSources = ParquetSource | Iterable[ParquetSource]


@overload
def read_parquet(source: ParquetSources, *, output: Literal["pandas"] = ...,
                 columns: Sequence[str] | str | None = ..., n_rows: int | None = ...,
                 include_file_paths: str | None = ...,
                 dtype_backend: DtypeBackend | None = ...,
                 storage_options: dict[str, Any] | None = ...) -> pd.DataFrame: ...
@overload
def read_parquet(source: ParquetSources, *, output: Literal["polars"],
                 columns: Sequence[str] | str | None = ..., n_rows: int | None = ...,
                 include_file_paths: str | None = ...,
                 dtype_backend: None = ...,
                 storage_options: dict[str, Any] | None = ...) -> pl.DataFrame: ...
@overload
def read_parquet(source: ParquetSources, *, output: Literal["arrow"],
                 columns: Sequence[str] | str | None = ..., n_rows: int | None = ...,
                 include_file_paths: str | None = ...,
                 dtype_backend: None = ...,
                 storage_options: dict[str, Any] | None = ...) -> pa.Table: ...
@overload
def read_parquet(source: ParquetSources, *, output: str,
                 columns: Sequence[str] | str | None = ..., n_rows: int | None = ...,
                 include_file_paths: str | None = ...,
                 dtype_backend: DtypeBackend | None = ...,
                 storage_options: dict[str, Any] | None = ...) -> Frame: ...


def read_parquet(
    source: ParquetSources,
    *,
    output: Output | str = "pandas",
    columns: Sequence[str] | str | None = None,
    n_rows: int | None = None,
    include_file_paths: str | None = None,
    dtype_backend: DtypeBackend | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Frame:
    """Read Parquet files with the bindf header restored: one file, a folder of them (a
    dataset), or several files by a glob or a list, their rows one after the other.

    Parameters
    ----------
    source:
        A local path (``~`` expanded) or a ``file://`` or fsspec URL (``s3://…``,
        ``memory://…``), of a file or a dataset folder (Hive partitions read as
        columns); or one file as ``bytes``, a binary file object (read whole, whatever
        its position: Parquet is read from its footer; never closed by bindf) or an
        fsspec ``OpenFile``.

        Or a glob (``"out/*.parquet"``, ``"s3://bucket/runs/**/*.parquet"``), expanded
        as bindf's readers expand theirs: matches sorted by name, ``**`` recursive, a
        name that exists as written never globbed, no match a ``FileNotFoundError``.
        A glob matches files only: a folder it matches is skipped, and a file it
        matches inside a Hive-partitioned folder is read as a plain file, without
        partition columns (give the folder itself for those).

        Or a list of any of these (globs expanded in place), read in list order; each
        item is read as it would be alone (a folder as a dataset, an object whole). An
        empty list is a ``FileNotFoundError``; a set is a ``TypeError`` (no order).
    output:
        ``"pandas"`` (default), ``"polars"`` or ``"arrow"``.
    columns:
        Columns to read (all by default; a str is one column); one a file does not have
        is a :class:`~bindf.errors.ColumnNotFoundError` naming the file. Several files
        must have the same columns, in the same order, of the same types (whether a
        column is declared nullable may differ); when ``columns`` is given, only those:
        files of other columns read together for the columns they share, as bindf's
        readers read such files. Any other difference is a :class:`~bindf.errors.BindfError` naming the file and
        the columns that differ. (A dataset folder's files are read by pyarrow, which
        casts the types that differ; files of other columns are refused there too.)
    n_rows:
        Read only the first ``n_rows`` rows, across files in order: the files of a glob
        or list after the one that completes them are not opened (``n_rows=0`` reads
        the first file's footer only, for its columns), and within a file only the row
        groups needed are read. (A dataset folder is read by pyarrow's
        ``Dataset.head``, which may read a few of its files ahead.)
    include_file_paths:
        Name of a column to add, holding each row's Parquet file (its path or URL as
        given or matched; for a dataset folder, the folder's; an object's name), as in
        polars. It comes last, or where ``columns`` names it; a file that has a column
        of that name is a ``ValueError``.
    dtype_backend:
        pandas output only: ``None`` (default), ``"numpy_nullable"`` or ``"pyarrow"``,
        as in pandas' readers.
    storage_options:
        Passed to fsspec for URLs.

    Notes
    -----
    The header of several files is what bindf's readers give for the original binary
    files read together: the first file's format and header (a file whose analysis
    header values differ from the first's, ``bin_width_micros`` …, is warned of), the
    list of every file's stored source (a file that stores none stands for itself by
    its Parquet path), the damage skipped summed (``errors``), and ``version`` when
    every file says the same (else ``None``). With ``n_rows``, only the files read are
    in it. Files of another format than the first's, or with a bindf header where the
    first has none (or none where it has one), are an error: their rows would carry a
    header that is not theirs.

    pandas: the index is the one pyarrow restores from the first file's pandas
    metadata; stored index columns are concatenated, a ``RangeIndex`` spans all rows.

    pandas dtypes: a file written from a pandas frame comes back as pandas wrote it
    (its dtypes and index, from the pandas metadata pyarrow stores), as
    ``pd.read_parquet`` gives it. Any other file (``bindf convert``, a polars or Arrow
    frame) is converted as ``pd.read_<format>`` converts: an integer column the file
    declares nullable becomes a pandas nullable integer (``UInt8`` …) whether or not it
    holds a null. polars declares every column nullable, which says nothing: in a file
    that declares no column non-nullable, an integer column is a nullable integer if
    it holds a null, a numpy integer otherwise.
    """
    check_output(output, dtype_backend)
    check_count("n_rows", n_rows, 0)
    check_extra_column_name("include_file_paths", include_file_paths)
    wanted = column_list(columns)  # (a str is one column, as every bindf reader takes it)
    # the path column is bindf's to add, not read from the files
    reading = None if wanted is None else [c for c in wanted if c != include_file_paths]
    inputs = _parquet_inputs(source, _storage_options(storage_options))
    table, info = _read_inputs(inputs, reading, n_rows, include_file_paths,
                               use_pandas_metadata=output == "pandas",
                               path_type=path_type_for(output, dtype_backend))
    if include_file_paths and wanted is not None and include_file_paths in wanted:
        # where columns= names it (pandas index columns stay after the rest)
        order = with_extra_columns(wanted, None, include_file_paths)
        table = table.select(order + [c for c in table.column_names if c not in order])
    metadata = dict(table.schema.metadata or {})
    table = _format_categories(table, info)
    # "numpy_nullable" goes to table_to_output even then: its masked conversion is
    # pyarrow's too, which reads the pandas metadata (the index) the same way.
    if output == "pandas" and PANDAS_METADATA_KEY in metadata \
            and dtype_backend != "numpy_nullable":
        # Written from a pandas frame: pyarrow restores what the pandas metadata says
        # (the index; nullable and categorical dtypes), as pd.read_parquet does. pandas
        # cannot read back all it writes there (an ArrowDtype dictionary column of a
        # frame read with dtype_backend="pyarrow": "data type ... not understood"):
        # such a file is converted as one without pandas metadata.
        try:
            frame = table.to_pandas(types_mapper=pd.ArrowDtype if dtype_backend else None)
        except _PANDAS_METADATA_UNREADABLE:
            return _without_pandas_metadata(table, info, dtype_backend)
        if dtype_backend is None:
            frame = _with_arrow_dtypes_back(frame, table, metadata[PANDAS_METADATA_KEY])
        if info is not None:
            set_pandas_info(frame, info)
        return frame
    if output != "pandas":
        return table_to_output(table, output, info, dtype_backend)
    table = _signed_dictionary_indices(_nullability_from_data(table))
    try:
        return table_to_output(table, output, info, dtype_backend)
    except _PANDAS_METADATA_UNREADABLE:
        if PANDAS_METADATA_KEY not in (table.schema.metadata or {}):
            raise
        # "numpy_nullable" (pyarrow reads the pandas metadata there too): as above
        return _without_pandas_metadata(table, info, dtype_backend)


@dataclass(frozen=True)
class _RemotePath:
    """A file or folder on an fsspec filesystem: ``name`` is its URL (for messages, the
    path column and the header's source), ``fs``/``fs_path`` what reads it (a glob's
    match keeps the filesystem it was found on, see :class:`bindf._source.Source`)."""

    name: str
    fs: Any
    fs_path: str


def _parquet_inputs(source: Any, storage_options: dict[str, Any]) -> list[Any]:
    """The inputs of a read, in order: each a local path, a :class:`_RemotePath` or an
    object (bytes, file object, ``OpenFile``); globs expanded (files only, sorted)."""
    inputs: list[Any] = []
    for item in source_items(source):
        if is_source_object(item):
            refuse_unused_storage_options(storage_options, item)
            inputs.append(item)
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"source must be a path, a glob, a URL, bytes, a binary file "
                            f"object or a list of those, not {item!r}")
        path = source_path_text(item)
        if _is_url(path):
            fs, fs_path = _fsspec_filesystem(path, storage_options)
            # (exists, not isfile: a dataset folder named as written is not a glob)
            if has_glob_chars(fs_path) and not fs.exists(fs_path):
                inputs.extend(_RemotePath(name, fs, p)
                              for name, p, _ in remote_matches(path, fs, fs_path))
            else:
                inputs.append(_RemotePath(path, fs, fs_path))
            continue
        refuse_unused_storage_options(storage_options, path)
        if has_glob_chars(path) and not os.path.exists(_local_path(path)):
            inputs.extend(name for name, _ in local_matches(path))
        else:
            inputs.append(path)
    return inputs


def _input_name(item: Any) -> str:
    """What messages, the path column and a stand-in source call an input."""
    if isinstance(item, _RemotePath):
        return item.name
    if isinstance(item, str):
        return item
    if _is_fsspec_open_file(item):
        return open_file_name(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{type(item).__name__}>"
    return _object_name(item)


def _read_inputs(inputs: list[Any], columns: list[str] | None, n_rows: int | None,
                 path_column: str | None, *, use_pandas_metadata: bool,
                 path_type: pa.DataType | None = None,
                 ) -> tuple[pa.Table, dict[str, Any] | None]:
    """The rows of ``inputs`` one after the other (up to ``n_rows``; the path column
    last if asked, of ``path_type``, ``string`` by default: see
    :attr:`bindf.frontends.batches.ReadPlan.path_type`), with the first's schema
    metadata, and the bindf info of them all."""
    tables: list[pa.Table] = []
    names: list[str] = []
    infos: list[dict[str, Any] | None] = []
    remaining = n_rows
    for item in inputs:
        if remaining == 0 and tables:  # n_rows reached: the next files are not opened
            break
        name = _input_name(item)
        table, file_metadata = _read_table(item, name, columns, n_rows=remaining,
                                           use_pandas_metadata=use_pandas_metadata,
                                           reserved=path_column)
        metadata = dict(table.schema.metadata or {})
        # A dataset folder (dask's to_parquet, partitioned writes) has no single footer:
        # its schema metadata already carries the header.
        metadata.update({k: v for k, v in file_metadata.items() if k.startswith(b"bindf.")})
        table = with_metadata(restore_dictionary_index_types(table, file_metadata), metadata)
        if tables:
            table = _representations_like(table, tables[0])
            _check_alike(table, tables[0], name, names[0], columns)
        tables.append(table)
        names.append(name)
        infos.append(info_from_metadata(metadata) or _info_from_pandas_attrs(metadata))
        if remaining is not None:
            remaining -= table.num_rows
    table = _concatenated(tables)
    if path_column:
        kind = pa.string() if path_type is None else path_type
        table = table.append_column(
            pa.field(path_column, kind, nullable=False),
            pa.chunked_array(path_chunks([(n, t.num_rows) for n, t in zip(names, tables)],
                                         kind), kind))
    return table, _joined_info(names, infos, many=len(inputs) > 1)


def _representations_like(table: pa.Table, first: pa.Table) -> pa.Table:
    """``table`` with ``first``'s types where a column of the same name holds the same
    values in another representation, which writers do not store alike, not a difference
    in the data: a dictionary's index width (a dataset folder's columns come back with
    int32 indices from pyarrow before 19, whatever the file was written with: see
    :func:`restore_dictionary_index_types`), and text or bytes as ``string``,
    ``large_string`` or a view (polars writes large ones, pandas and dask plain ones)."""
    for index, field in enumerate(table.schema):
        at = first.schema.get_field_index(field.name)
        if at < 0:
            continue
        wanted = first.schema.field(at).type
        if wanted == field.type or not _same_values(wanted, field.type):
            continue
        try:
            column = table.column(index).cast(wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # (an index that does
            continue                                             # not fit: a difference)
        table = table.set_column(index, field.with_type(wanted), column)
    return table


def _same_values(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether ``a`` and ``b`` hold the same values in other representations (see
    :func:`_representations_like`)."""
    if pa.types.is_dictionary(a) and pa.types.is_dictionary(b):
        return a.value_type == b.value_type and a.ordered == b.ordered
    return any(a in kinds and b in kinds for kinds in _REPRESENTATIONS)


#: Types of the same values in other layouts (the view types from pyarrow 16 on).
_REPRESENTATIONS = [
    {getattr(pa, name)() for name in names if hasattr(pa, name)}
    for names in (("string", "large_string", "string_view"),
                  ("binary", "large_binary", "binary_view"))
]


def _other_names(names: list[str], first_names: list[str]) -> list[str]:
    """What a file's column ``names`` have that the first file's lack, and the reverse,
    as the parts of a "columns differ" message (none: the same names)."""
    extra = [n for n in names if n not in first_names]
    missing = [n for n in first_names if n not in names]
    return ([f"only here: {extra}"] if extra else []) + (
        [f"missing here: {missing}"] if missing else [])


def _check_alike(table: pa.Table, first: pa.Table, name: str, first_name: str,
                 columns: list[str] | None) -> None:
    """Refuse a file whose columns (as read: ``columns`` projects both) differ from the
    first file's in name, order or type, naming what differs. Whether a column is
    declared nullable may differ (polars declares every column so, bindf's formats
    only the columns that can be null)."""
    here = [(f.name, f.type) for f in table.schema]
    there = [(f.name, f.type) for f in first.schema]
    if here == there:
        return
    types = dict(here)
    first_types = dict(there)
    differences = _other_names(table.column_names, first.column_names)
    differences.extend(f"{n!r} is {types[n]} here, {first_types[n]} in the first file"
                       for n in first.column_names if n in types and types[n] != first_types[n])
    if not differences:
        differences.append(f"in another order: {table.column_names} vs {first.column_names}")
    shared = _alike_columns(table.schema, first.schema)
    if columns is not None and set(columns) <= set(shared):
        # what was asked is alike: the rest is a pandas index one file stores
        hint = ("; the others are a pandas index one of them stores: read them separately, "
                "or as polars or Arrow (which keep no index)")
    elif shared:
        hint = f"; to read the columns they share, ask for them (columns={shared})"
    else:
        hint = ""
    raise BindfError(f"cannot read together with {first_name}: its columns differ "
                     f"({'; '.join(differences)}){hint}", path=name)


def _concatenated(tables: list[pa.Table]) -> pa.Table:
    """``tables`` one after the other, with the first's schema metadata; a column is
    nullable if it is in any of them (:func:`_check_alike` made sure nothing else
    differs)."""
    if len(tables) == 1:
        return tables[0]
    metadata = tables[0].schema.metadata
    if not tables[0].num_columns:  # (concat_tables gives tables of no columns 0 rows)
        return pa.Table.from_batches([b for t in tables for b in t.to_batches()],
                                     schema=tables[0].schema)
    return with_metadata(pa.concat_tables(tables, promote_options="default"), metadata)


def _joined_info(names: list[str], infos: list[dict[str, Any] | None], *,
                 many: bool) -> dict[str, Any] | None:
    """The bindf info of a read of the files ``names`` (whose own infos are ``infos``),
    as a multi-file read of the binary files gives it (see :func:`read_parquet`).
    ``many``: the read was of several inputs (a source list even if ``n_rows`` was
    reached in the first, as the binary readers give one for several files)."""
    first = infos[0]
    if not many:
        return first
    for name, info in zip(names[1:], infos[1:]):
        if (info is None) != (first is None):
            holds = ("holds no bindf header, and the first file does" if info is None else
                     "holds a bindf header, and the first file does not")
            raise BindfError(f"cannot read together with {names[0]}: it {holds}; read "
                             "them separately", path=name)
        if info is not None and first is not None and info.get("format") != first.get("format"):
            raise BindfError(f"cannot read together with {names[0]}: its header is of "
                             f"format {info.get('format')!r}, the first file's "
                             f"{first.get('format')!r}", path=name)
    if first is None:
        return None
    known = [info for info in infos if info is not None]  # (all of them, checked above)
    keys = _analysis_header_keys(first.get("format"))
    sources: list[str] = []
    for i, (name, info) in enumerate(zip(names, known)):
        if i:
            warn_of_header_differences(keys, info["header"], first["header"], name)
        source = info.get("source")
        sources.extend(source if isinstance(source, list) else
                       [source if isinstance(source, str) else name])
    errors = summed_errors(info.get("errors") or {} for info in known)
    joined = build_info(first["format"], first["header"], sources, errors or None)
    if any("version" in info for info in known):
        versions = {info.get("version") for info in known}
        joined["version"] = versions.pop() if len(versions) == 1 else None
    return joined


def _analysis_header_keys(format: str | None) -> tuple[str, ...]:
    """The header values ``format``'s analysis helpers use (none for a format not
    registered here)."""
    from .registry import get_format

    try:
        return tuple(get_format(format).reader_class().analysis_header_keys)  # type: ignore[arg-type]
    except (ValueError, KeyError, AttributeError, TypeError):
        return ()


#: What pandas raises on pandas metadata it wrote but cannot read back: an ArrowDtype
#: dictionary column ("data type ... not understood"), an ArrowDtype fixed-size list
#: ("pyarrow type specific parameters ([256]) ... not supported").
_PANDAS_METADATA_UNREADABLE = (TypeError, ValueError, NotImplementedError)


def _without_pandas_metadata(table: pa.Table, info: dict[str, Any] | None,
                             dtype_backend: DtypeBackend | None) -> pd.DataFrame:
    """A pandas frame of ``table`` converted as if it had no pandas metadata (which
    pandas cannot read back, see :data:`_PANDAS_METADATA_UNREADABLE`), with the index
    that metadata describes set again: stored index columns, or a range."""
    stored = (table.schema.metadata or {})[PANDAS_METADATA_KEY]
    plain = with_metadata(table, {k: v for k, v in (table.schema.metadata or {}).items()
                                  if k != PANDAS_METADATA_KEY})
    plain = _signed_dictionary_indices(_nullability_from_data(plain))
    frame = table_to_output(plain, "pandas", info, dtype_backend)
    try:
        described = json.loads(stored)
        index = described.get("index_columns") or []
        names = {c.get("field_name"): c.get("name") for c in described.get("columns", [])}
    except (ValueError, AttributeError, TypeError):  # unreadable as well: no index then
        return frame
    stored_columns = [c for c in index if isinstance(c, str) and c in frame.columns]
    if stored_columns and len(stored_columns) == len(index):
        attrs = frame.attrs
        frame = frame.set_index(stored_columns)
        frame.index.names = [names.get(c) for c in stored_columns]
        frame.attrs = attrs
    elif len(index) == 1 and isinstance(index[0], dict) and index[0].get("kind") == "range":
        r = index[0]
        if (r.get("stop", 0) - r.get("start", 0)) // (r.get("step") or 1) == len(frame):
            frame.index = pd.RangeIndex(r["start"], r["stop"], r["step"], name=r.get("name"))
    return frame


def _info_from_pandas_attrs(metadata: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    """The bindf info of a frame that pandas' own ``to_parquet`` wrote: it keeps
    ``df.attrs`` (as JSON, under ``PANDAS_ATTRS``) but knows nothing of ``bindf.*`` keys.
    ``None`` if there is none, or it is not a bindf info."""
    try:
        attrs = json.loads(metadata[PANDAS_ATTRS_KEY])
    except (KeyError, ValueError):
        return None
    info = attrs.get("bindf") if isinstance(attrs, dict) else None
    if (not isinstance(info, dict) or not isinstance(info.get("format"), str)
            or not isinstance(info.get("header"), dict)):
        return None
    return info


def _format_categories(table: pa.Table, info: Mapping[str, Any] | None) -> pa.Table:
    """The format's own categories in its dictionary columns (spectroscopy ``marker``,
    A-STEP ``kind``), as ``read_<format>`` gives them: a file keeps only the values its
    rows hold (a polars frame, an empty or filtered one), so a pandas category column
    had other categories than a fresh read's, and a ``concat`` of the two fell back to
    strings. A column holding a value the format does not know is left as it is."""
    if info is None:
        return table
    from .registry import get_format

    try:
        dictionaries = get_format(info["format"]).reader_class().dictionaries
    except (ValueError, KeyError, AttributeError):  # a format not registered here
        return table
    for name, categories in dictionaries.items():
        index = table.schema.get_field_index(name)
        if index < 0 or not pa.types.is_dictionary(table.schema.field(index).type):
            continue
        # (the formats declare int8 indices for their few categories)
        kind = pa.dictionary(pa.int8(), categories.type)
        chunks = [_recoded(chunk, categories) for chunk in table.column(index).chunks]
        if any(chunk is None for chunk in chunks):
            continue
        field = table.schema.field(index).with_type(kind)
        # One chunk: the chunks' int8 codes joined (as the old decoding gave them), and
        # one at least (a column of no chunks has no dictionary for pandas).
        table = table.set_column(index, field, pa.chunked_array(
            [pa.concat_arrays(chunks) if len(chunks) > 1 else chunks[0]] if chunks
            else [pa.DictionaryArray.from_arrays(pa.array([], pa.int8()), categories)],
            type=kind))
    return table


def _recoded(chunk: pa.DictionaryArray, categories: pa.Array) -> pa.DictionaryArray | None:
    """``chunk`` with ``categories`` as its dictionary (int8 indices); ``None`` when a
    row holds a value that is not one of them. Recoded through the chunk's dictionary
    (a handful of values), so the rows' work is one take of small integers."""
    try:
        values = chunk.dictionary.cast(categories.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # (a dictionary entry no row uses may not cast: bytes that are not UTF-8)
        return _recoded_rows(chunk, categories)
    position = pc.index_in(values, value_set=categories)  # null: not a category (or null)
    unknown = pc.and_(position.is_null(), values.is_valid())
    codes = pc.take(position, chunk.indices)
    if pc.any(unknown).as_py() and pc.any(pc.take(unknown, chunk.indices)).as_py():
        return None
    return pa.DictionaryArray.from_arrays(codes.cast(pa.int8()), categories)


def _recoded_rows(chunk: pa.DictionaryArray, categories: pa.Array) -> pa.DictionaryArray | None:
    """:func:`_recoded` through the rows' values, for a dictionary that does not cast."""
    try:
        values = chunk.cast(categories.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    codes = pc.index_in(values, value_set=categories)
    if codes.null_count != values.null_count:
        return None
    return pa.DictionaryArray.from_arrays(codes.cast(pa.int8()), categories)


#: Unsigned dictionary index types (polars writes uint32) and the signed type that holds
#: every index of each (pandas category codes are signed).
def _signed_dictionary_indices(table: pa.Table) -> pa.Table:
    """``table`` with unsigned dictionary indices made signed: pyarrow before 19 cannot
    convert them to pandas ("unsigned dictionary indices … not yet supported"), and a
    file written by polars has uint32 ones. The dictionary values are not touched."""
    for index, field in enumerate(table.schema):
        kind = field.type
        if pa.types.is_dictionary(kind) and kind.index_type in SIGNED_INDEX:
            signed = pa.dictionary(SIGNED_INDEX[kind.index_type], kind.value_type, kind.ordered)
            table = table.set_column(index, field.with_type(signed), table.column(index).cast(signed))
    return table


def _nullability_from_data(table: pa.Table) -> pa.Table:
    """``table`` with the columns that hold no null declared not nullable, when no column
    is declared so. Such a file says nothing about which columns can be null (polars
    declares every column nullable; bindf's formats declare their never-null columns),
    and the data is all there is to go by: an integer column with nulls becomes a
    pandas nullable integer, one without a numpy integer."""
    if not all(field.nullable for field in table.schema):
        return table
    schema = pa.schema([field.with_nullable(column.null_count > 0)
                        for field, column in zip(table.schema, table.columns)],
                       metadata=table.schema.metadata)
    return pa.Table.from_arrays(table.columns, schema=schema)


def _read_table(source: Any, name: str, columns: list[str] | None, *, n_rows: int | None,
                use_pandas_metadata: bool, reserved: str | None,
                ) -> tuple[pa.Table, Mapping[bytes, bytes]]:
    """The table at ``source`` (one input, see :func:`_parquet_inputs`; ``name``: what
    messages call it) and its file-level metadata (none for a dataset). ``reserved``: a
    column name the file must not have (the path column bindf adds)."""
    options: dict[str, Any] = {"columns": columns, "n_rows": n_rows,
                               "use_pandas_metadata": use_pandas_metadata, "reserved": reserved}
    if _is_fsspec_open_file(source):
        if "b" not in source.mode:
            raise _text_mode_error(name)
        with source as f:
            return _read_file(f, name, **options)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_file(pa.BufferReader(pa.py_buffer(source)), name, **options)
    if is_source_object(source):
        if isinstance(source, io.TextIOBase):
            raise _text_mode_error(name)
        seekable = getattr(source, "seekable", None)
        if seekable is None or not seekable():
            # a pipe or stdin: Parquet is read from its end, so the whole stream is needed
            return _read_file(pa.BufferReader(source.read()), name, **options)
        return _read_file(source, name, **options)
    if isinstance(source, _RemotePath):
        if source.fs.isdir(source.fs_path):
            return _read_dataset(source.fs_path, source.fs, name, **options)
        try:
            with source.fs.open(source.fs_path, "rb") as f:
                return _read_file(f, name, **options)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name) from None
    path = _local_path(source)
    if os.path.isdir(path):
        return _read_dataset(path, None, name, **options)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    # opened through a bytes path: pyarrow encodes a str path as UTF-8, which a Linux
    # file name need not be (see _output_file); not memory-mapped (a file truncated
    # while mapped kills the process)
    with pa.OSFile(os.fsencode(path), "rb") as file:
        return _read_file(file, name, **options)


def _read_file(file: Any, name: str, *, columns: list[str] | None, n_rows: int | None,
               use_pandas_metadata: bool, reserved: str | None,
               ) -> tuple[pa.Table, Mapping[bytes, bytes]]:
    """One Parquet file (a path or an open file), read as it is: unlike
    ``pq.read_table``, no Hive partition columns guessed from its folder names (pyarrow
    < 18 fails on a folder like key=__HIVE_DEFAULT_PARTITION__). With ``n_rows``, only
    the row groups that hold the first ``n_rows`` rows are read."""
    try:
        # pre_buffer: each row group's column chunks read in a few large coalesced
        # reads, as pq.read_table does (a 300 MB A-STEP file: 1.9–3.1 s → 1.5–1.9 s)
        parquet = pq.ParquetFile(file, pre_buffer=True)
    except pa.ArrowInvalid as exc:  # no Parquet footer
        raise UnknownFormatError(f"not a Parquet file ({exc})", path=name) from None
    with parquet:
        _check_columns(columns, parquet.schema_arrow.names, name, reserved)
        options: dict[str, Any] = {"columns": columns,
                                   "use_pandas_metadata": use_pandas_metadata}
        try:
            if n_rows is None:
                table = parquet.read(**options)
            else:
                groups = _first_row_groups(parquet.metadata, n_rows)
                table = parquet.read_row_groups(groups, **options).slice(0, n_rows)
        except pa.ArrowInvalid as exc:  # a damaged page or row group
            raise CorruptDataError(f"cannot read this Parquet file: {exc}", path=name) from None
        except OSError as exc:  # pyarrow's decoding errors too ("Unexpected end of stream")
            if exc.filename is None and hasattr(exc, "add_note"):  # Python ≥ 3.11
                exc.add_note(f"while reading the Parquet file {name}")
            raise
        return table, parquet.metadata.metadata or {}


def _first_row_groups(metadata: pq.FileMetaData, n_rows: int) -> list[int]:
    """The row groups (from the first) that hold the file's first ``n_rows`` rows."""
    groups: list[int] = []
    rows = 0
    while rows < n_rows and len(groups) < metadata.num_row_groups:
        rows += metadata.row_group(len(groups)).num_rows
        groups.append(len(groups))
    return groups


def _read_dataset(path: str, filesystem: Any, name: str, *, columns: list[str] | None,
                  n_rows: int | None, use_pandas_metadata: bool, reserved: str | None,
                  ) -> tuple[pa.Table, Mapping[bytes, bytes]]:
    import pyarrow.dataset as ds

    listed = pq.ParquetDataset(path, filesystem=filesystem, partitioning="hive")
    _check_columns(columns, listed.schema.names, name, reserved)
    # Files in natural order: dask names its parts part.0 … part.16, which pyarrow lists
    # as text (part.1, part.10, …, part.2): the rows came back out of order. (Each
    # fragment keeps its partition values.)
    fragments = sorted(listed.fragments, key=lambda fragment: _natural_key(fragment.path))
    dataset_hint = ("" if filesystem is not None
                    or not os.path.exists(os.path.join(path, MANIFEST_NAME))
                    else f"; {name} is a bindf dataset: bindf.read_dataset({name!r}, "
                         "format=...) reads the folders of each format together")
    stored = _alike_fragments(fragments, columns, n_rows, dataset_hint)
    dataset = ds.FileSystemDataset(fragments, listed.schema, ds.ParquetFileFormat(),
                                   filesystem=listed.filesystem)
    metadata = listed.schema.metadata or {}
    wanted = columns
    if columns is not None and use_pandas_metadata and b"pandas" in metadata:
        # as ParquetDataset.read: the pandas index columns come along
        index = [c for c in json.loads(metadata[b"pandas"]).get("index_columns", [])
                 if isinstance(c, str) and c not in columns]
        wanted = [*columns, *index]
    # (head reads the fragments in order, and no more of them than the rows need)
    table = (dataset.to_table(columns=wanted) if n_rows is None
             else dataset.head(n_rows, columns=wanted))
    table = _one_dictionary_per_partition_column(table, stored)
    return with_metadata(table, {**(table.schema.metadata or {}), **metadata}), {}


#: The column name pandas gives an unnamed index it stores in a Parquet file.
_UNNAMED_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _alike_fragments(fragments: list[Any], columns: list[str] | None, n_rows: int | None,
                     hint: str = "") -> set[str]:
    """Refuse a dataset folder whose files hold other columns (names), naming the file
    and what differs: pyarrow reads every file with the first one's schema, so another
    file's columns were dropped without a word, and columns it lacks came back null (a
    bindf dataset's ``format=apx-…`` folder of AstroPix 3 runs beside AstroPix 4 ones).
    Types may differ as pyarrow casts them (int32 and int64, an all-null column), and so
    may a pandas index stored by some files only (``__index_level_0__``). Only
    the files a read of ``n_rows`` opens are checked (a footer each); with ``columns``,
    only those; ``hint`` ends the message. Returns the names of the columns the files
    store (the others are the folders' partition columns)."""
    first: tuple[list[str], str] | None = None
    rows = 0
    for fragment in fragments:
        names = [name for name in fragment.physical_schema.names
                 if (columns is None or name in columns)
                 and not _UNNAMED_PANDAS_INDEX.fullmatch(name)]
        if first is None:
            first = (names, fragment.path)
        elif set(names) != set(first[0]):
            differences = _other_names(names, first[0])
            raise BindfError(f"cannot read together with {first[1]}: its columns differ "
                             f"({'; '.join(differences)}){hint}", path=fragment.path)
        if n_rows is not None:
            rows += fragment.metadata.num_rows
            if rows >= n_rows:
                break
    return set() if first is None else set(first[0])


def _one_dictionary_per_partition_column(table: pa.Table, stored: set[str]) -> pa.Table:
    """The partition columns (from the folder names: dictionary-typed, a dictionary per
    file) as one dictionary each: pandas could not convert them where one folder is
    the null partition (``key=__HIVE_DEFAULT_PARTITION__``: "Cannot yet unify
    dictionaries with nulls"); they stay categorical there."""
    for i, field in enumerate(table.schema):
        if field.name in stored or not pa.types.is_dictionary(field.type):
            continue
        values = table.column(i).cast(field.type.value_type).combine_chunks()
        table = table.set_column(i, field.name, values.dictionary_encode())
    return table


def _natural_key(path: str) -> list[Any]:
    """Sort key of a path with its runs of digits as numbers (part.2 before part.10)."""
    return [int(piece) if piece.isdigit() else piece for piece in re.split(r"(\d+)", path)]


def _check_columns(columns: list[str] | None, names: list[str], where: str,
                   reserved: str | None = None) -> None:
    """pyarrow skips a column the file does not have without a word: say so instead.
    ``reserved``: the name of the column bindf adds (``include_file_paths``), which the
    file must not have too."""
    if reserved is not None and reserved in names:
        raise ValueError(f"{where}: column name {reserved!r} (include_file_paths) already "
                         "exists in this file; choose another name")
    if columns is not None:
        check_columns_known(where, columns, names)


def restore_dictionary_index_types(table: pa.Table, file_metadata: Mapping[bytes, bytes]) -> pa.Table:
    """Give dictionary columns back the index type they were written with.

    Parquet has no dictionary index width of its own. pyarrow stores the Arrow schema in
    the file (``ARROW:schema``), but older releases (seen on 14 to 18) read every
    dictionary column back with int32 indices anyway: an int8 ``marker`` came back int32
    and a round trip was not exact. Casting the indices back is cheap: the dictionary
    values are not touched.
    """
    stored = file_metadata.get(b"ARROW:schema")
    if stored is None:
        return table
    try:
        written = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
    except (binascii.Error, ValueError, pa.ArrowException):
        return table  # not a schema pyarrow can read: keep what it gave us
    for index, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type) or written.get_field_index(field.name) < 0:
            continue
        wanted = written.field(field.name).type
        if pa.types.is_dictionary(wanted) and wanted != field.type:
            table = table.set_column(index, field.with_type(wanted), table.column(index).cast(wanted))
    return table


def _copy_ipc(source_path: str, copy_path: str, schema: pa.Schema) -> None:
    """Copy the Arrow IPC file at ``source_path`` batch by batch (memory-mapped: the
    data is not decoded) to ``copy_path``, with ``schema`` (same fields, new metadata).
    Every view of the mapping is gone when this returns, so that the copy can replace
    the source (Windows refuses to replace a mapped file)."""
    with pa.memory_map(os.fsencode(source_path)) as source, _output_file(copy_path) as sink:
        reader = pa.ipc.open_file(source)
        with pa.ipc.new_file(sink, schema) as writer:
            for index in range(reader.num_record_batches):
                writer.write_batch(reader.get_batch(index))


#: Parquet's codecs, as pyarrow names them (any case); a dict sets one per column.
PARQUET_CODECS = ("none", "snappy", "gzip", "brotli", "lz4", "lz4_raw", "zstd")


def _check_compression(compression: Any) -> None:
    """A ``ValueError`` for a codec Parquet does not know (pyarrow raised its own
    ``ArrowException`` only once the file was being written)."""
    if compression is None or isinstance(compression, dict):
        return
    if not isinstance(compression, str) or compression.lower() not in PARQUET_CODECS:
        raise ValueError(f"compression must be one of {list(PARQUET_CODECS)} or None, not "
                         f"{compression!r}")


def _output_file(path: str) -> pa.NativeFile:
    """``path`` opened for writing by Arrow's own file class: given the path as bytes
    (``os.fsencode``), it takes every name the system does; pyarrow encodes a ``str``
    path as UTF-8, which a Linux file name need not be (a Latin-1 name reaches Python
    with surrogates, and pyarrow's writers raised ``UnicodeEncodeError``)."""
    return pa.OSFile(os.fsencode(path), "wb")


def write_batches(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    path: str | os.PathLike[str] | BinaryIO,
    *,
    to: str,
    info: Callable[[], dict[str, Any]] | None = None,
    overwrite: bool = True,
    compression: str = "zstd",
    fsync: bool = True,
) -> int:
    """Stream batches to a Parquet, Arrow IPC or CSV file; return the number of rows.

    ``path``: a local path, written atomically (see :func:`bindf._atomic.atomic_path`;
    ``fsync``: flush the file to disk before it is published), or a writable binary
    stream (``bindf convert -o -``: standard output), written as the batches come, Arrow
    IPC in the *stream* format (the one a pipe can carry: the file format's reader needs
    its footer first).

    ``info`` is called before the first batch and after the last (headers can grow
    while reading, e.g. the sparse IT02 ``acquisition_end_ns``; damage skipped under
    ``on_error``), and what it says at the end is stored in the file's metadata: in
    Parquet's footer, and in an IPC file's schema, which is written before the first
    batch, so an IPC file whose info changed is copied once more with the final schema
    (memory-mapped, no decoding) before it is published. An IPC stream keeps the info
    of the start. CSV holds no metadata.
    """
    if to not in ("parquet", "ipc", "csv"):
        raise ValueError(f"unknown output kind {to!r}; use parquet, ipc or csv")
    if to == "parquet":
        _check_compression(compression)
    if hasattr(path, "write"):
        return _write_into(batches, schema, path, to, info, compression)
    with atomic_path(path, overwrite=overwrite, fsync=fsync) as tmp, \
            _output_file(tmp) as file:  # type: ignore[arg-type]
        return _write_into(batches, schema, file, to, info, compression, path=tmp)


def _write_into(batches: Iterable[pa.RecordBatch], schema: pa.Schema,
                sink: BinaryIO | pa.NativeFile, to: str,
                info: Callable[[], dict[str, Any]] | None, compression: str,
                path: str | None = None) -> int:
    """:func:`write_batches` into ``sink``: the open temporary file at ``path``, or a
    stream (``path`` None: Arrow IPC goes in the stream format)."""
    rows = 0
    start_meta = info_to_metadata(info()) if info is not None and to != "csv" else None
    schema_at_start = schema.with_metadata(start_meta) if start_meta else schema
    if to == "parquet":
        with pq.ParquetWriter(sink, schema_at_start, compression=compression) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
            end_meta = info_to_metadata(info()) if info is not None else None
            if end_meta and end_meta != start_meta:
                # Learned while reading (skipped damage, sparse IT02 end time). The
                # footer is written at the end, and with it the Arrow schema that
                # pyarrow, pandas, polars and DuckDB read the metadata from
                # (``ARROW:schema``, the serialized schema): both get the final values.
                final = base64.b64encode(schema.with_metadata(end_meta).serialize()).decode()
                writer.add_key_value_metadata(
                    {**{k.decode(): v.decode() for k, v in end_meta.items()},
                     "ARROW:schema": final})
    elif to == "ipc" and path is None:
        with pa.ipc.new_stream(sink, schema_at_start) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
    elif to == "ipc":
        with pa.ipc.new_file(sink, schema_at_start) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        sink.close()
        end_meta = info_to_metadata(info()) if info is not None else None
        if end_meta and end_meta != start_meta:
            with atomic_path(path, fsync=False) as copy:  # then replaces ``path``
                _copy_ipc(path, copy, schema.with_metadata(end_meta))
    else:
        import pyarrow.csv as pacsv

        with pacsv.CSVWriter(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows
