"""``dask.dataframe`` collections over any bindf format: many files, or big files in pieces.

How the work is cut into partitions:

* formats of fixed-size records (readers with ``iter_record_range`` and a record count:
  spectroscopy photon events, ITT1, dense IT02, IT01, SP01 decay curves, SPF1 phasors,
  ``read_records`` and every ``FixedRecordFormat``) are cut into
  **record-aligned byte ranges** of about ``blocksize`` bytes, so one big file is read by
  several workers at once, each reading only its own range. Ranges count records, not
  rows: an SP01 record is 256 × channels tidy rows and stays whole;
* every other format (AstroPix, legacy logs, A-STEP, sparse IT02, IT02 with
  ``fill_gaps``: records can only be found by decoding from the start of the file; FCS1:
  one JSON document) gets **one partition per file**.

``read_<format>`` for every registered format is generated from the registry (module
``__getattr__`` below); there is no per-format line here.

The client opens every file once (in a few threads) to read its header: that fixes the
format, checks that all files have the same columns, gives the row counts that the byte
ranges are cut from, and reports a truncated tail straight away. Each partition is then
produced by the same :class:`~bindf.frontends.batches.ReadPlan` and the same Arrow →
pandas conversion as :func:`bindf.read`, so the computed frame equals the eager one
(dtypes included: nullable ``UInt8`` channels, categorical markers …).

Headers: every partition, and the collection's ``_meta``, carries ``attrs["bindf"]`` as
the eager reader would set it (format, the *first* file's header, the list of sources),
so ``ddf.compute().attrs["bindf"]`` works. Damage skipped under ``on_error="warn"`` or
``"skip"`` is not counted there (``"errors"``), unlike an eager read: each partition
knows only its own, and partitions whose attrs differ would lose them all in pandas'
concat; ``on_error="warn"`` warns of each (in the worker that decodes it). One row per
file with every header is :func:`bindf.read_headers`.

dask itself is imported only when a function here is called (``bindf[dask]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from .._compressed import DecompressedSource
from .._inputs import Sources
from .._params import DASK_HINTS, column_list
from .._source import Source
from .._warnings import WarningSink, warn
from ..errors import TruncatedFileWarning, missing_dependency
from ..formats._base import FormatReader, empty_batch
from ..registry import SentSpec, known_in_this_process, spec_for_workers
from .batches import ReadPlan, with_extra_columns
from .output import (
    DtypeBackend,
    check_output,
    path_type_for,
    set_pandas_info,
    shared,
    table_to_output,
)

if TYPE_CHECKING:
    import dask.dataframe as dd

#: Default partition size for fixed-size-record formats: large enough that dask's
#: per-task overhead vanishes, small enough for several partitions per worker's memory
#: (records decode to about their own size, e.g. 17 → 19 bytes per photon).
DEFAULT_BLOCKSIZE = "128 MiB"

#: Header reads of more files than this run in threads (they are latency bound, remote
#: files above all).
_THREADED_OPEN_MIN_FILES = 4
_OPEN_THREADS = 16


def _dask_dataframe():
    try:
        import dask.dataframe as dd
    except ImportError:
        raise missing_dependency("dask", "dask") from None
    return dd


@dataclass(frozen=True)
class Partition:
    """One partition: a file, and the records ``start``..``stop`` of it (None: all)."""

    source: Source
    rows: tuple[int, int] | None = None

    @property
    def path(self) -> str:
        return self.source.path


def supports_record_ranges(reader: FormatReader) -> bool:
    """True when ``reader`` can read any record range on its own (fixed-size records)."""
    return (
        callable(getattr(reader, "iter_record_range", None))
        and getattr(reader, "record_size", 0) > 0
        and record_count(reader) is not None
    )


def record_count(reader: FormatReader) -> int | None:
    """Complete records in the file. Record ranges count records, which differ from
    output rows when one record expands into several (SP01's tidy shape)."""
    n = getattr(reader, "n_records", None)
    return int(n) if n is not None else reader.count_rows()


def parse_blocksize(blocksize: int | str | None) -> int | None:
    """``"128 MiB"``/``"64MB"``/``10_000_000`` → bytes; ``None`` → one partition per file."""
    if blocksize is None:
        return None
    if isinstance(blocksize, str):
        from dask.utils import parse_bytes

        blocksize = parse_bytes(blocksize)
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize <= 0:
        raise ValueError(f"blocksize must be a positive number of bytes or None, not {blocksize!r}")
    return blocksize


def plan_partitions(readers: Sequence[FormatReader], blocksize: int | None) -> list[Partition]:
    """Partitions for the opened ``readers``, in file order then record order."""
    parts: list[Partition] = []
    for reader in readers:
        # (a compressed file is decompressed whole by every task that receives it)
        if isinstance(reader.source, DecompressedSource) or not supports_record_ranges(reader):
            parts.append(Partition(reader.source))
            continue
        count = int(record_count(reader))  # type: ignore[arg-type]
        step = count if blocksize is None else max(1, blocksize // reader.record_size)  # type: ignore[attr-defined]
        parts.extend(Partition(reader.source, (start, min(start + step, count)))
                     for start in range(0, count, max(step, 1)))
    if not parts:  # every file is empty: one empty partition keeps the collection valid
        parts.append(Partition(readers[0].source, (0, 0)))
    return parts


def _open_all(plan: ReadPlan) -> list[FormatReader]:
    """Every file's reader (headers only), the first one first since it fixes the format."""
    def opened(index: int) -> FormatReader:
        with plan.sources[index].held(small_whole=False):  # (a compressed file's copy
            return plan.reader_for(index)                  # let go after its header)

    first = opened(0)
    n = len(plan.sources)
    if n < _THREADED_OPEN_MIN_FILES:
        rest = [opened(i) for i in range(1, n)]
    else:
        with ThreadPoolExecutor(min(_OPEN_THREADS, n - 1)) as pool:
            rest = list(pool.map(opened, range(1, n)))
    return [first, *rest]


def _warn_truncated_tails(readers: Sequence[FormatReader]) -> None:
    # Said once, on the client, when the collection is made: a warning raised inside a
    # worker process would end up in the worker's log, not in front of the user.
    for reader in readers:
        if not supports_record_ranges(reader):
            continue
        if hasattr(reader, "end_truncation"):
            why = reader.end_truncation()
        elif getattr(reader, "tail_bytes", 0):
            why = (f"the last {reader.tail_bytes} bytes are an incomplete "  # type: ignore[attr-defined]
                   f"{reader.record_size}-byte record")  # type: ignore[attr-defined]
        else:
            why = None
        if why:
            warn(
                TruncatedFileWarning(
                    f"truncated {reader.label} file: {why}; returning the complete "
                    "records before it",
                    path=reader.path,
                    offset=reader.row_offset(record_count(reader)),  # type: ignore[attr-defined]
                ),
            )


def pandas_meta(schema: pa.Schema, info: dict[str, Any] | None,
                dtype_backend: DtypeBackend | None = None,
                dictionaries: Mapping[str, pa.Array] | None = None) -> pd.DataFrame:
    """Empty pandas frame with exactly the dtypes the eager pandas reader gives ``schema``
    (with ``dtype_backend``).

    A categorical column of the format's own fixed categories (``dictionaries``, see
    :attr:`~bindf.formats._base.FormatReader.dictionaries`: the spectroscopy ``marker``,
    which every partition carries whole) has them known, so ``ddf.marker.cat`` and
    ``dd.get_dummies`` work without a pass over the data; any other gets dask's "unknown
    categories": its values are only known once data has been decoded.
    """
    from dask.dataframe.utils import clear_known_categories

    dictionaries = dictionaries or {}
    meta = table_to_output(pa.Table.from_batches([empty_batch(schema, dictionaries)]),
                           "pandas", None, dtype_backend)
    unknown = [name for name in meta.columns if isinstance(meta[name].dtype, pd.CategoricalDtype)
               and name not in dictionaries]
    if unknown:
        meta = clear_known_categories(meta, cols=unknown)
    if info is not None:
        set_pandas_info(meta, info)
    return meta


def read_partition(
    part: Partition,
    columns: list[str] | None = None,
    *,
    format: str | SentSpec,
    include_file_paths: str | None,
    options: dict[str, Any],
    info: dict[str, Any] | None,
    dtype_backend: DtypeBackend | None = None,
    path_type: pa.DataType,
) -> pd.DataFrame:
    """Produce one partition (runs on a worker). ``columns`` is dask's projection;
    ``info`` is the collection's (read-only: see :func:`bindf._frames.shared`), and
    ``path_type`` its ``include_file_paths`` column's type, both worked out once on the
    client (per partition they cost O(files) and a pandas conversion).

    dask already runs one partition per core (threads, processes or a cluster), so a
    partition is decoded on one thread unless ``threads=`` was given explicitly."""
    plan = ReadPlan(
        [part.source],
        # (a spec: a format registered at run time on the client, which a worker
        # process has not: registered here too, once)
        format=known_in_this_process(format),
        columns=columns,
        # dask's projection names every column the partition must have, exactly
        include_file_paths=(include_file_paths if columns is None
                            or include_file_paths in columns else None),
        options={"threads": 1, **options},
        record_range=part.rows,
        path_type=path_type,
    )
    # What the header says (e.g. a declared record count beyond the end of the file)
    # was reported on the client when the collection was made; not once per partition.
    # (A dropped sink, not warnings.catch_warnings: its filter is process-wide, and hid
    # the damage warnings of the partitions decoded meanwhile on the other threads.)
    with WarningSink().active():
        plan.first_reader  # noqa: B018 - opens the file and reads its header
    # (not all_batches(): a partition's columns are not carved out of lanes)
    table = pa.Table.from_batches(plan.listed_batches(), schema=plan.output_schema())
    # Every partition carries the same attrs: pandas' concat (what compute does) keeps
    # attrs only when they are equal, so a partition's own damage count (on_error=
    # "warn"/"skip") would drop the header of the whole result. Damage is warned of.
    return table_to_output(table, "pandas", info, dtype_backend)  # type: ignore[return-value]


def read(
    paths_or_glob: Sources,
    *,
    format: str | None = None,
    columns: Sequence[str] | str | None = None,
    blocksize: int | str | None = DEFAULT_BLOCKSIZE,
    include_file_paths: str | None = None,
    storage_options: dict[str, Any] | None = None,
    dtype_backend: DtypeBackend | None = None,
    **format_options: Any,
) -> dd.DataFrame:
    """Read any supported file(s) into a lazy ``dask.dataframe.DataFrame``.

    Parameters
    ----------
    paths_or_glob:
        A path, a ``file://`` or fsspec URL, a glob (expanded by bindf, sorted), or a list
        of those, exactly as for :func:`bindf.read`.
    format:
        Force a format; by default the first file's format is detected and all files are
        read as that format.
    columns:
        Columns to read. Later selections (``ddf[["a", "b"]]``, ``ddf["a"]``) are pushed
        into the reader too: unselected columns are never decoded.
    blocksize:
        Bytes per partition for fixed-size-record formats (``"128 MiB"``, ``64_000_000``);
        partitions start and end on record boundaries. ``None``: one partition per file.
        Other formats always get one partition per file.
    include_file_paths:
        Name of a column holding each row's source path.
    storage_options:
        Passed to fsspec for remote paths. The workers receive the opened filesystem, so
        in-memory filesystems only work with in-process schedulers.
    dtype_backend:
        As in pandas' readers and :func:`bindf.read`: ``"numpy_nullable"`` (default) or
        ``"pyarrow"`` (``pd.ArrowDtype`` partitions).
    **format_options:
        Passed to the format's reader (``container=``, ``layout=``, ``on_error=`` …).

    Notes
    -----
    The frame has no index (each partition counts from 0) and unknown divisions. Every
    partition carries ``attrs["bindf"]`` (format, first header, sources) like the eager
    reader's frame; use :func:`bindf.read_headers` for the header of every file.
    A truncated file gives its :class:`~bindf.errors.TruncatedFileWarning` here, when the
    collection is made; its complete records are read.
    """
    dd = _dask_dataframe()
    for name in format_options.keys() & DASK_HINTS.keys():
        raise TypeError(f"bindf.dask.read does not take {name}=: {DASK_HINTS[name]}")
    check_output("pandas", dtype_backend)
    size = parse_blocksize(blocksize)
    columns = column_list(columns)
    plan = ReadPlan(
        paths_or_glob,
        format=format,
        columns=columns,  # (files of other columns read together for the ones they share)
        include_file_paths=include_file_paths,
        storage_options=storage_options,
        options=format_options,
    )
    readers = _open_all(plan)
    try:
        schema = plan.output_schema()  # (an unknown column: ColumnNotFoundError, listing them)
        if columns is not None:
            columns = with_extra_columns(columns, None, include_file_paths)
        _warn_truncated_tails(readers)
        info = shared(plan.info())  # (one read-only copy every partition refers to)
        partitions = plan_partitions(readers, size)
    finally:  # a copy the checks decompressed again: the tasks decompress their own
        for source in plan.sources:
            if isinstance(source, DecompressedSource):
                source.close()
    import dask

    # dask would convert string columns to "string[pyarrow]" (NA semantics); the
    # partitions already hold exactly what the eager reader returns (pandas' own ``str``,
    # Arrow-backed on pandas 3), and results must not depend on the route taken.
    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.from_map(
            read_partition,
            partitions,
            meta=pandas_meta(schema, info, dtype_backend, readers[0].dictionaries),
            label=f"bindf-read-{plan.format}",
            enforce_metadata=False,
            columns=columns,
            format=spec_for_workers(plan.format),
            include_file_paths=include_file_paths,
            options=dict(format_options),
            info=info,
            dtype_backend=dtype_backend,
            path_type=path_type_for("pandas", dtype_backend),
        )
    return ddf


def to_parquet(ddf: dd.DataFrame, path: str, **kwargs: Any) -> Any:
    """``ddf.to_parquet(path, ...)`` with the bindf header in every file's metadata.

    The keys are the ones :func:`bindf.to_parquet` writes (``bindf.header``,
    ``bindf.format`` …), taken from ``ddf``'s ``attrs["bindf"]``, so
    :func:`bindf.read_parquet` on any part file restores the header. The index is not
    written unless ``write_index=True`` (bindf frames have none worth keeping).
    """
    from ..arrow import info_to_metadata

    info = ddf._meta.attrs.get("bindf")
    if info is not None:
        metadata = info_to_metadata(info)
        metadata.update(kwargs.get("custom_metadata") or {})
        kwargs["custom_metadata"] = metadata
    kwargs.setdefault("write_index", False)
    if kwargs.get("schema", "infer") == "infer":
        kwargs["schema"] = _parquet_schema(ddf)
    return ddf.to_parquet(path, **kwargs)


def _parquet_schema(ddf: dd.DataFrame) -> pa.Schema | str:
    """The Arrow schema of ``ddf``'s Parquet files, or ``"infer"`` (dask's own).

    dask infers the Arrow type of an ``object`` column from a placeholder value of its
    own, which fails for bindf's binary (A-STEP ``sensor``) and list (sub-array) columns;
    their types come from the first partition that holds a value instead (one partition
    read, of those columns only)."""
    meta = ddf._meta
    objects = [name for name, kind in meta.dtypes.items() if pd.api.types.is_object_dtype(kind)]
    if not objects:
        return "infer"
    object_fields: dict[str, pa.Field] = {}
    for index in range(ddf.npartitions):
        sample = ddf[objects].partitions[index].compute().dropna(how="all")
        if len(sample):
            types = pa.Schema.from_pandas(sample, preserve_index=False)
            object_fields = {name: types.field(name) for name in objects}
            break
    if len(object_fields) < len(objects):  # no values at all: let dask decide
        return "infer"
    others = pa.Schema.from_pandas(ddf._meta_nonempty.drop(columns=objects),
                                   preserve_index=False)
    return pa.schema([object_fields[name] if name in object_fields else others.field(name)
                      for name in meta.columns])


def read_records(
    paths_or_glob: Sources,
    dtype: Any,
    *,
    offset: Any = None,
    header: Any = None,
    count: Any = -1,
    subarrays: str = "flatten",
    **kwargs: Any,
) -> dd.DataFrame:
    """Any files of fixed-size records described by a numpy ``dtype``, as a dask
    DataFrame cut into record-aligned byte ranges (see :func:`bindf.read_records` for
    ``dtype``/``offset``/``header``/``count``/``subarrays``; callables of the header must
    pickle, which dask's cloudpickle does for lambdas too). Other keyword arguments are
    those of :func:`read`.
    """
    return read(paths_or_glob, format="records", dtype=dtype, offset=offset, header=header,
                count=count, subarrays=subarrays, **kwargs)


def __getattr__(name: str) -> Any:
    # read_<format> of every registered format (generated, see bindf.frontends.api).
    from ..registry import format_names

    if name.startswith("read_") and name[5:] in format_names():
        from .api import FormatFunction

        return FormatFunction("dask", name[5:])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
