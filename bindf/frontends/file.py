"""``bindf.open``: a file (or several) as one object that pandas, polars and every Arrow
consumer understand.

:class:`BindfFile` reads the header when it is made and decodes nothing else until asked.
Its ``__arrow_c_stream__`` (the Arrow PyCapsule interface) hands out a fresh stream of
record batches on every call, decoded on demand, so ``pa.table(f)``,
``pa.RecordBatchReader.from_stream(f)``, ``duckdb.sql("SELECT … FROM f")``,
``pl.DataFrame(f)`` and any other consumer read it with bounded memory (not
``pl.from_arrow(f)``: polars takes a bare stream there as one struct Series).
Everything is built on :class:`~bindf.frontends.batches.ReadPlan`, like every other read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa

from .._file_objects import ObjectSource
from .._inputs import Sources
from .._params import COMMON, OUTPUT, column_list, signature_with_options
from .._source import Source
from ..arrow import info_to_metadata, path_text
from ..errors import check_columns_known
from .batches import ReadPlan, with_extra_columns
from .output import DtypeBackend, batches_to_output, check_output, path_type_for


class BindfFile:
    """An opened bindf source: header known, data decoded on demand.

    Made by :func:`bindf.open` (which documents the arguments); use it as a context
    manager. Every data method starts a new pass over the source, so it can be called
    any number of times (a non-seekable stream was copied once when the file was
    opened, see :func:`bindf.open`).

    Attributes
    ----------
    header:
        The (first) file's header, as a dict.
    format:
        The format name (``"apx"``, ``"it02"`` …).
    schema:
        The Arrow schema of the rows (after ``columns=``), with the bindf metadata.
    num_rows:
        The number of rows if it is known without decoding (fixed-size records), else
        ``None``.
    errors:
        The damage that ``on_error="warn"``/``"skip"`` dropped in the last pass to end
        (``{kind: count}``; empty if none, and before any pass ended). A stream's schema
        is sent before its rows are decoded, so the Arrow stream and ``iter_batches``
        carry the header but not these counts; eager outputs (``to_arrow()`` …) carry
        both.
    """

    def __init__(self, source: Sources, *, format: str | None = None,
                 **kwargs: Any) -> None:
        #: The keyword arguments of every pass (:meth:`ReadPlan.from_kwargs
        #: <bindf.frontends.batches.ReadPlan.from_kwargs>`); ``columns`` may be
        #: replaced per pass (``requested_schema``).
        self._kwargs = dict(kwargs)
        self._kwargs.pop("storage_options", None)  # used once, to find the sources
        self._template = ReadPlan.from_kwargs(source, format=format, **kwargs)
        # Later passes reuse these Source objects: a file object's start position was
        # taken here, and a stream was copied here, once.
        self._sources: list[Source] = self._template.sources
        self._closed = False
        self._num_rows: int | None | bool = False  # False: not computed yet
        self.header: dict[str, Any] = self._template.first_reader.header
        self.format: str = self._template.first_reader.name
        self.schema: pa.Schema = self._template.output_schema().with_metadata(
            info_to_metadata(self._template.info())
        )
        self.errors: dict[str, int] = {}

    # -- plans --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on a closed BindfFile")

    def _plan(self, columns: Sequence[str] | None = None,
              batch_size: int | None = None,
              path_type: pa.DataType | None = None) -> ReadPlan:
        self._check_open()
        kwargs = dict(self._kwargs)
        if columns is not None:
            kwargs["columns"] = columns
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        plan = ReadPlan.from_kwargs(self._sources, format=self.format, like=self._template,
                                    path_type=path_type, **kwargs)
        plan.full_schema()  # raises if the first file's columns changed since it was opened
        return plan

    @property
    def info(self) -> dict[str, Any]:
        """The bindf info (format, header, source(s)) that frames carry."""
        return self._template.info()

    @property
    def num_rows(self) -> int | None:
        if self._num_rows is False:
            self._num_rows = self._count_rows()
        return self._num_rows  # type: ignore[return-value]

    def _count_rows(self) -> int | None:
        total = 0
        for index, source in enumerate(self._sources):
            # (a compressed file's copy let go after its count)
            with source.held(small_whole=False):
                count = self._template.reader_for(index).count_rows()
            if count is None:
                return None
            total += count
        limit = self._kwargs.get("n_rows")
        return total if limit is None else min(total, limit)

    # -- data -------------------------------------------------------------------------
    def iter_batches(self, batch_size: int | None = None) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of at most ``batch_size`` rows (bounded memory)."""
        # (the plan is made now: a file replaced since it was opened raises here, not
        # inside a consumer of the stream, which would wrap the error in its own)
        return self._stamped(self._pass(self._plan(batch_size=batch_size)))

    def _stamped(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        metadata = self.schema.metadata
        for batch in batches:
            yield batch.replace_schema_metadata(metadata)

    def to_arrow(self) -> pa.Table:
        """All rows as a ``pyarrow.Table`` with the bindf metadata."""
        return self._read("arrow")

    def to_pandas(self, dtype_backend: DtypeBackend | None = None) -> pd.DataFrame:
        """All rows as a pandas frame (``df.attrs["bindf"]``); ``dtype_backend`` as in
        :func:`bindf.read`."""
        return self._read("pandas", dtype_backend)

    def to_polars(self) -> pl.DataFrame:
        """All rows as a polars frame (``df.bindf`` gives the header)."""
        return self._read("polars")

    def _read(self, output: Any, dtype_backend: DtypeBackend | None = None) -> Any:
        check_output(output, dtype_backend)
        plan = self._plan(path_type=path_type_for(output, dtype_backend))
        frame = batches_to_output(plan.all_batches(), plan.output_schema(), output,
                                  plan.info(), dtype_backend, threads=plan.threads)
        self._pass_ended(plan)
        return frame

    def _pass(self, plan: ReadPlan) -> Iterator[pa.RecordBatch]:
        """``plan``'s batches, then :attr:`errors` updated once they all came."""
        yield from plan.iter_batches()
        self._pass_ended(plan)

    def _pass_ended(self, plan: ReadPlan) -> None:
        self.errors = plan.info().get("errors", {})

    def scan(self) -> pl.LazyFrame:
        """A polars ``LazyFrame`` over the same source(s), with pushdown (see
        :func:`bindf.scan`)."""
        from .polars import scan

        self._check_open()
        kwargs = dict(self._kwargs)
        columns = kwargs.pop("columns", None)
        # (n_rows goes to the scan, which applies it inside its source: see scan)
        lazy = scan(self._sources, format=self.format, **kwargs)
        if columns is not None:  # the extra columns stay, as in every other output
            lazy = lazy.select(with_extra_columns(column_list(columns),
                                                  kwargs.get("row_index_name"),
                                                  kwargs.get("include_file_paths")))
        return lazy

    # -- Arrow PyCapsule interface ------------------------------------------------------
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """Export a new stream of the rows as an ``ArrowArrayStream`` PyCapsule.

        ``requested_schema`` (a schema capsule) is honoured as far as bindf can: its
        columns are the only ones decoded, in its order, and each is cast to the requested
        type where Arrow can cast it (a column whose cast Arrow does not support keeps its
        own type; the consumer checks, as the interface specifies). A requested column
        that the file does not have is an error naming it.
        """
        return self.to_batch_reader(requested_schema).__arrow_c_stream__()

    def to_batch_reader(self, requested_schema: object | None = None) -> pa.RecordBatchReader:
        """A ``pyarrow.RecordBatchReader`` decoding on demand (see ``__arrow_c_stream__``).

        ``requested_schema`` may be a ``pyarrow.Schema`` or a schema PyCapsule.
        """
        self._check_open()
        if requested_schema is None:
            return pa.RecordBatchReader.from_batches(self.schema, self.iter_batches())
        requested = (requested_schema if isinstance(requested_schema, pa.Schema)
                     else pa.Schema._import_from_c_capsule(requested_schema))
        available = self.schema
        check_columns_known(path_text(self._sources[0].path), requested.names,
                            available.names, detail=" in the requested schema")
        names = requested.names
        # by position: a request may name a column twice (Arrow allows it), and each
        # place then gets the column
        target = pa.schema(
            [_castable_field(available.field(name), requested.field(i))
             for i, name in enumerate(names)],
            metadata=available.metadata,
        )
        plan = self._plan(columns=names)
        return pa.RecordBatchReader.from_batches(target, self._cast_batches(plan, target))

    def _cast_batches(self, plan: ReadPlan, target: pa.Schema) -> Iterator[pa.RecordBatch]:
        for batch in self._pass(plan):
            # by name: the plan adds the row index and path columns the object was
            # opened with, wherever the request names them or not
            if not target:  # no columns, the rows still count (as for columns=[])
                yield batch.select([]).replace_schema_metadata(target.metadata)
                continue
            columns = [batch.column(field.name) for field in target]
            yield pa.RecordBatch.from_arrays(
                [column if column.type == field.type else _cast(column, field)
                 for column, field in zip(columns, target)],
                schema=target,
            )

    # -- lifetime ---------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the source: a stream's temporary copy (and anything bindf opened).
        An object the caller passed in stays open."""
        if self._closed:
            return
        self._closed = True
        for source in self._sources:
            if isinstance(source, ObjectSource):
                source.close()

    def __enter__(self) -> BindfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = [s.path for s in self._sources]
        where = names[0] if len(names) == 1 else f"{len(names)} files"
        state = "closed " if self._closed else ""
        return f"<{state}BindfFile {self.format} {where!r}, {len(self.schema)} columns>"


def _castable_field(have: pa.Field, want: pa.Field) -> pa.Field:
    """``have`` retyped to ``want.type`` if Arrow can cast between them, else ``have``."""
    if have.type == want.type:
        return have
    try:
        pa.array([], type=have.type).cast(want.type)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return have
    return have.with_type(want.type)


def _cast(column: pa.Array, field: pa.Field) -> pa.Array:
    """``column`` as the consumer asked, naming the column where a value does not fit
    (a cast Arrow supports may still lose values: 300 to int8; it is refused, not
    wrapped)."""
    try:
        return column.cast(field.type)
    except pa.ArrowInvalid as error:
        raise ValueError(f"column {field.name!r}: a value does not fit the requested "
                         f"type {field.type} ({error})") from None


def open(source: Sources, *, format: str | None = None,  # noqa: A001 - like io.open
         **kwargs: Any) -> BindfFile:
    """Open ``source`` (any source :func:`bindf.read` takes, several files included) and
    return a :class:`BindfFile`, reading only the header.

    >>> with bindf.open("run.apx") as f:
    ...     f.header, f.schema
    ...     table = pa.table(f)                            # or pa.RecordBatchReader.from_stream(f)
    ...     duckdb.sql("SELECT chip_id, count(*) FROM f GROUP BY chip_id")

    The keyword arguments are those of :func:`bindf.read` except the output choices
    (``output``, ``chunksize``, ``dtype_backend``), which the :class:`BindfFile` methods
    make: ``columns``, ``n_rows``, ``batch_size``, ``include_file_paths``,
    ``row_index_name``, ``row_index_offset``, ``storage_options``, ``progress`` (a bar
    per pass), ``on_error`` and the format's own options. A non-seekable stream is copied
    once, with bounded memory, when the file is opened; ``close()`` (or leaving the
    ``with`` block) deletes the copy. A file object the caller passed in is never closed
    by bindf.
    """
    outputs = [p.name for p in COMMON if p.goes_to == OUTPUT and p.name in kwargs]
    if outputs:
        raise TypeError(f"bindf.open() got {outputs[0]}=, an output choice: pass it to the "
                        "file's methods (to_pandas(dtype_backend=...), iter_batches(...))")
    return BindfFile(source, format=format, **kwargs)


open.__signature__ = signature_with_options("open").replace(  # type: ignore[attr-defined]
    return_annotation="BindfFile")
