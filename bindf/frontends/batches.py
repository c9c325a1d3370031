"""One batch pipeline behind every read: eager, lazy, chunked, single or many files.

:class:`ReadPlan` takes the sources and options, opens each file's reader when its turn
comes, and yields Arrow record batches with the extra columns a user asked for
(``include_file_paths``, ``row_index_name``). The pandas, polars and Arrow frontends,
the polars scans, the CLI and dask all consume this one generator, so they cannot drift
apart.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._params import COMMON, HINTS, PLAN
from .._source import Source, Sources, ensure_bindf_path, expand_sources
from ..arrow import build_info
from ..errors import BindfError, BindfWarning
from ..formats._base import DEFAULT_BATCH_ROWS, FormatReader
from ..registry import open_reader

#: The common parameters (bindf._params.COMMON) that ReadPlan itself takes.
_PLAN_PARAMS = frozenset(p.name for p in COMMON if p.goes_to == PLAN)


class ReadPlan:
    """Everything needed to produce the batches of one read call.

    Parameters mirror the public readers (see :func:`bindf.read`). Column names in
    ``columns`` may include ``include_file_paths`` and ``row_index_name``.
    """

    def __init__(
        self,
        sources: Sources,
        *,
        format: str | None = None,
        columns: Sequence[str] | None = None,
        n_rows: int | None = None,
        batch_size: int | None = None,
        include_file_paths: str | None = None,
        row_index_name: str | None = None,
        row_index_offset: int = 0,
        storage_options: dict[str, Any] | None = None,
        progress: bool = False,
        options: dict[str, Any] | None = None,
        record_range: tuple[int, int] | None = None,
    ) -> None:
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        if n_rows is not None and n_rows < 0:
            raise ValueError(f"n_rows must be >= 0, not {n_rows}")
        self.sources: list[Source] = expand_sources(sources, storage_options)
        if record_range is not None and (len(self.sources) != 1 or n_rows is not None):
            raise ValueError("record_range needs exactly one source and no n_rows")
        #: Read only records ``start``..``stop`` of the one source (dask's byte-range
        #: partitions of fixed-size-record files, see ``iter_record_range``).
        self.record_range = record_range
        self.format = format
        self.options = dict(options or {})
        self.n_rows = n_rows
        self.batch_size = batch_size
        self.include_file_paths = include_file_paths
        self.row_index_name = row_index_name
        self.row_index_offset = int(row_index_offset)
        self.progress = progress
        self._first: FormatReader | None = None
        self.readers_done: list[FormatReader] = []
        self.columns = self._split_columns(columns)

    @classmethod
    def from_kwargs(cls, sources: Sources, *, format: str | None = None,
                    record_range: tuple[int, int] | None = None,
                    **kwargs: Any) -> ReadPlan:
        """A plan from the keyword arguments of a public reader: the common parameters
        the pipeline handles (see :data:`bindf._params.COMMON`) go to the plan, every
        other one to the format's reader as an option."""
        plan_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _PLAN_PARAMS}
        for name in kwargs:  # pandas/polars spellings (nrows, usecols …) get a hint
            if name in HINTS:
                raise TypeError(f"unexpected option (keyword argument) {name!r}; "
                                f"did you mean {HINTS[name]}=?")
        return cls(sources, format=format, options=kwargs, record_range=record_range,
                   **plan_kwargs)

    # -- schema -----------------------------------------------------------------------
    @property
    def first_reader(self) -> FormatReader:
        """The first file's reader: it decides the format, schema and header."""
        if self._first is None:
            self._first = self._open(self.sources[0], self.format)
            self.format = self._first.name
        return self._first

    def _open(self, source: Source, format: str | None) -> FormatReader:
        try:
            return open_reader(source, format, **self.options)
        except BindfError as exc:
            raise ensure_bindf_path(exc, source.path) from None

    def _extra_fields(self) -> list[pa.Field]:
        extra = []
        if self.row_index_name:
            extra.append(pa.field(self.row_index_name, pa.uint64(), nullable=False))
        if self.include_file_paths:
            extra.append(pa.field(self.include_file_paths, pa.string(), nullable=False))
        return extra

    def full_schema(self) -> pa.Schema:
        """All columns a read could produce (reader schema plus requested extras)."""
        extras = self._extra_fields()
        base = self.first_reader.schema
        clash = [f.name for f in extras if f.name in base.names]
        if clash:
            raise ValueError(f"column name(s) {clash} already exist in the {self.format} data")
        return pa.schema(list(extras[:1] if self.row_index_name else []) + list(base)
                         + [f for f in extras if f.name == self.include_file_paths])

    def _split_columns(self, columns: Sequence[str] | None) -> list[str] | None:
        if columns is None:
            return None
        if isinstance(columns, str):
            columns = [columns]
        return list(columns)

    def output_names(self) -> list[str]:
        """Output column names, in the order the user asked for (schema order if not)."""
        full = self.full_schema().names
        if self.columns is None:
            return full
        unknown = [c for c in self.columns if c not in full]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; available: {full}")
        return list(dict.fromkeys(self.columns))

    def output_schema(self) -> pa.Schema:
        full = self.full_schema()
        return pa.schema([full.field(n) for n in self.output_names()])

    def _reader_columns(self) -> list[str]:
        extras = {self.include_file_paths, self.row_index_name}
        columns = [n for n in self.output_names() if n not in extras]
        # Only extra columns (or none) wanted: decode the first column anyway, since the
        # row count comes from the data. It is dropped again before yielding.
        return columns or self.first_reader.schema.names[:1]

    # -- data -------------------------------------------------------------------------
    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Yield the batches of every source in turn, with extra columns added."""
        schema = self.output_schema()
        names = schema.names
        reader_columns = self._reader_columns()
        produced = 0
        row_index = self.row_index_offset
        bar = _progress_bar(self) if self.progress else None
        try:
            for i, source in enumerate(self.sources):
                reader = self.reader_for(i)
                remaining = None if self.n_rows is None else self.n_rows - produced
                if remaining is not None and remaining <= 0:
                    break
                for batch in self._reader_batches(reader, reader_columns, remaining):
                    columns = dict(zip(batch.schema.names, batch.columns))
                    if self.row_index_name:
                        columns[self.row_index_name] = pa.array(
                            np.arange(row_index, row_index + batch.num_rows, dtype=np.uint64)
                        )
                    if self.include_file_paths:
                        columns[self.include_file_paths] = pa.repeat(
                            pa.scalar(source.path, pa.string()), batch.num_rows
                        )
                    row_index += batch.num_rows
                    produced += batch.num_rows
                    if bar is not None:
                        bar.update(batch.num_rows)
                    if names:
                        yield pa.RecordBatch.from_arrays([columns[n] for n in names],
                                                         schema=schema)
                    else:  # a pure row count (e.g. polars' select(pl.len())): no columns
                        yield batch.select([])
                self.readers_done.append(reader)
        finally:
            if bar is not None:
                bar.close()

    def reader_for(self, index: int) -> FormatReader:
        """Open source ``index`` (the first is cached) and check it fits the first."""
        if index == 0:
            return self.first_reader
        reader = self._open(self.sources[index], self.format)
        self._check_compatible(reader)
        return reader

    def _reader_batches(
        self, reader: FormatReader, columns: list[str], n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", BindfWarning)
                if self.record_range is not None:
                    start, stop = self.record_range
                    names = reader.resolve_columns(columns)
                    # batch_size counts rows; record ranges count records.
                    per = getattr(reader, "rows_per_record", 1)
                    size = max(1, (self.batch_size or DEFAULT_BATCH_ROWS) // per)
                    yield from reader.iter_record_range(start, stop, names, size)  # type: ignore[attr-defined]
                else:
                    yield from reader.iter_batches(columns, self.batch_size, n_rows)
        except BindfError as exc:
            raise ensure_bindf_path(exc, reader.path) from None
        finally:
            for w in caught:
                # Re-emit outside the catch so user filters apply (and name the file).
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def _check_compatible(self, reader: FormatReader) -> None:
        first = self.first_reader
        if reader is first:
            return
        if reader.schema != first.schema:
            raise BindfError(
                f"cannot read together with {first.path}: its columns differ "
                f"({reader.schema.names} vs {first.schema.names})",
                path=reader.path,
            )

    # -- metadata ---------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The bindf info dict (format, first header, source(s), skipped damage)."""
        first = self.first_reader
        errors: dict[str, int] = {}
        for reader in [first, *(r for r in self.readers_done if r is not first)]:
            for kind, count in reader.errors.items():
                errors[kind] = errors.get(kind, 0) + count
        source: str | list[str] = (
            self.sources[0].path if len(self.sources) == 1 else [s.path for s in self.sources]
        )
        return build_info(first.name, first.header, source, errors or None)


def _progress_bar(plan: ReadPlan):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        from ..errors import missing_dependency

        raise missing_dependency("tqdm", "progress") from None
    # A total is only cheap to know for one file of fixed-size records.
    total = plan.first_reader.count_rows() if len(plan.sources) == 1 else None
    if total is not None and plan.n_rows is not None:
        total = min(total, plan.n_rows)
    return tqdm(total=total, unit="rows", unit_scale=True, desc=plan.sources[0].path)
