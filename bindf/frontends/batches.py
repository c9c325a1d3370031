"""One batch pipeline behind every read: eager, lazy, chunked, single or many files.

:class:`ReadPlan` takes the sources and options, opens each file's reader when its turn
comes, and yields Arrow record batches with the extra columns a user asked for
(``include_file_paths``, ``row_index_name``). The pandas, polars and Arrow frontends,
the polars scans, the CLI and dask all consume this one generator, so they cannot drift
apart.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import pyarrow as pa

from .._inputs import Sources, expand_sources
from .._params import COMMON, HINTS, OUTPUT, PLAN, check_count, check_flag, column_list
from .._source import Source, ensure_bindf_path
from .._threads import Lane, WaitingTasks, resolve_threads, settle, shared_executor
from .._warnings import WarningSink, warn
from ..arrow import build_info, path_text, repeated, rows_within_limit, text_bytes
from ..errors import BindfError, BindfWarning, check_columns_known
from ..formats._base import DEFAULT_BATCH_ROWS, FormatReader, empty_batch, summed_errors
from ..registry import open_reader, refuse_other_format

#: Rows of small files' units gathered before they become one batch (see
#: ``ReadPlan._coalesced``): enough that per-column work is paid once per hundreds of
#: small files, few enough that the units held meanwhile (about 21 bytes per AstroPix
#: hit) stay a few MB, not a fraction of the output.
GROUP_ROWS = 1 << 17

#: The common parameters (bindf._params.COMMON) that ReadPlan itself takes.
_PLAN_PARAMS = frozenset(p.name for p in COMMON if p.goes_to == PLAN)
_OUTPUT_PARAMS = frozenset(p.name for p in COMMON if p.goes_to == OUTPUT)


#: The largest row index (a uint64 column).
_ROW_INDEX_MAX = (1 << 64) - 1


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
        threads: int | None = None,
        options: dict[str, Any] | None = None,
        record_range: tuple[int, int] | None = None,
        like: ReadPlan | None = None,
        path_type: pa.DataType | None = None,
    ) -> None:
        check_count("batch_size", batch_size, 1)
        check_count("n_rows", n_rows, 0)
        self.sources: list[Source] = expand_sources(sources, storage_options)
        if record_range is not None and (len(self.sources) != 1 or n_rows is not None):
            raise ValueError("record_range needs exactly one source and no n_rows")
        #: Read only records ``start``..``stop`` of the one source (dask's byte-range
        #: partitions of fixed-size-record files, see ``iter_record_range``).
        self.record_range = record_range
        self.format = format
        self.options = dict(options or {})
        # ``threads`` may also arrive among the options (dask hands the format options
        # over as one dict): it is the plan's either way.
        #: Threads this read may use (resolved, >= 1): files of a glob or list are
        #: decoded in parallel; one file gets them all for its own decoding.
        self.threads = resolve_threads(self.options.pop("threads", threads))
        self.n_rows = n_rows
        self.batch_size = batch_size
        check_extra_column_name("include_file_paths", include_file_paths)
        check_extra_column_name("row_index_name", row_index_name)
        self.include_file_paths = include_file_paths
        #: The Arrow type of the ``include_file_paths`` column: ``string`` (the default,
        #: what Arrow consumers get: pyarrow 17 can neither take nor cast views back), or
        #: ``string_view`` where the batches become frames that take views with less
        #: memory (see :func:`~bindf.frontends.output.path_type_for`): 16 bytes a row,
        #: all pointing at one copy of the path, where ``string`` holds the path on
        #: every row (a glob of 8 x 50 MB runs: 1.3 GB).
        self.path_type = pa.string() if path_type is None else path_type
        self.row_index_name = row_index_name
        # (a float would be truncated, as polars refuses it: not an integer, refused too)
        if (isinstance(row_index_offset, bool) or not isinstance(row_index_offset, Integral)
                or not 0 <= row_index_offset <= _ROW_INDEX_MAX):
            raise ValueError(f"row_index_offset must be an integer in 0..2**64 - 1 (the row "
                             f"index is uint64), not {row_index_offset!r}")
        self.row_index_offset = int(row_index_offset)
        check_flag("progress", progress)
        self.progress = progress
        self._first: FormatReader | None = None
        #: Whether the caller keeps every batch (an eager read): see :meth:`all_batches`.
        self.keeps_every_batch = False
        #: The damage counts (``reader.errors``) of the files read so far, for
        #: :meth:`info`. Not the readers: a glob of thousands of small files would keep
        #: every file's parsed header alive, which costs the garbage collector more
        #: than parsing it did.
        self.errors_done: list[dict[str, int]] = []
        self.columns = column_list(columns)
        #: An earlier plan of the same read (a ``bindf.open`` or a scan reads its sources
        #: again on every pass, each pass a plan like the first one): when this plan's
        #: first file has other columns than that plan's, the file was replaced or
        #: rewritten since, which is an error, not rows under the old names.
        self.like = like
        self._full_schema: pa.Schema | None = None

    @classmethod
    def from_kwargs(cls, sources: Sources, *, format: str | None = None,
                    record_range: tuple[int, int] | None = None,
                    like: ReadPlan | None = None, path_type: pa.DataType | None = None,
                    **kwargs: Any) -> ReadPlan:
        """A plan from the keyword arguments of a public reader: the common parameters
        the pipeline handles (see :data:`bindf._params.COMMON`) go to the plan, every
        other one to the format's reader as an option."""
        plan_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _PLAN_PARAMS}
        for name in kwargs:  # pandas/polars spellings (nrows, usecols …) get a hint
            if name in HINTS:
                raise TypeError(f"unexpected option (keyword argument) {name!r}; "
                                f"did you mean {HINTS[name]}=?")
            if name in _OUTPUT_PARAMS:  # bindf.read takes these before making a plan
                raise TypeError(f"unexpected option (keyword argument) {name!r}: it "
                                "chooses the output of bindf.read and read_<format>, "
                                "which iter_batches (Arrow batches) and bindf.open (its "
                                "to_pandas(dtype_backend=...), to_polars(), to_arrow()) "
                                "do not take")
        return cls(sources, format=format, options=kwargs, record_range=record_range,
                   like=like, path_type=path_type, **plan_kwargs)

    # -- schema -----------------------------------------------------------------------
    @property
    def first_reader(self) -> FormatReader:
        """The first file's reader: it decides the format, schema and header."""
        if self._first is None:
            self._first = self._open(self.sources[0], self.format)
            self.format = self._first.name
        return self._first

    def all_batches(self) -> list[pa.RecordBatch]:
        """Every batch, for an eager read: as the caller keeps them all until the frame
        is built, the readers may allocate their columns in lanes (see
        :meth:`~bindf.formats._base.FormatReader.output_lanes`). No rows: one
        :meth:`empty_batch`."""
        self.keeps_every_batch = True
        if self._first is not None:
            self._first.keeps_every_batch = True
            # files may now be decoded side by side: the first one gets its share
            self._first.threads = self._threads_per_file()
        return self.listed_batches()

    def listed_batches(self) -> list[pa.RecordBatch]:
        """Every batch as :meth:`iter_batches` makes them (no lanes unless
        :meth:`all_batches` asked for them); no rows: one :meth:`empty_batch`, which
        carries the columns' fixed categories."""
        return list(self.iter_batches()) or [self.empty_batch()]

    def _open(self, source: Source, format: str | None) -> FormatReader:
        try:
            if self._first is not None:
                # The first file fixed the format: its reader class opens the others
                # (no registry look-up per file, which costs an import_module call),
                # unless the file is another format's (see refuse_other_format).
                refuse_other_format(source, self._first.name)
                reader = type(self._first)(source, threads=self._threads_per_file(),
                                           **self.options)
            else:
                reader = open_reader(source, format, threads=self._threads_per_file(),
                                     **self.options)
        except BindfError as exc:
            raise ensure_bindf_path(exc, source.path) from None
        reader.keeps_every_batch = self.keeps_every_batch
        return reader

    def _threads_per_file(self) -> int:
        """Threads each file's reader gets: all of them for one file, or for large files
        streamed one after the other (see :meth:`_parallel_files`); else, with several
        files, its share (1 for a glob of small files, whose cost is per-file Python
        work that extra threads only slow down)."""
        if self._streams_large_files():
            return self.threads
        return max(1, self.threads // min(self.threads, len(self.sources)))

    def _may_read_files_side_by_side(self) -> bool:
        return (self.threads > 1 and len(self.sources) > 1 and self.record_range is None
                and not all(map(_decoded_inline, self.sources)))

    def _parallel_files(self) -> bool:
        """Whether files are decoded side by side on the pool, each whole, ahead of the
        consumer (see :meth:`_files_in_parallel`)."""
        return self._may_read_files_side_by_side() and not self._streams_large_files()

    def _streams_large_files(self) -> bool:
        """A streamed read (scan, chunks, ``iter_batches``) of files above
        :data:`STREAM_AHEAD_MAX_FILE_BYTES`: decoded side by side, it would hold
        ``threads + 1`` whole decoded files where it promises a few batches (32 threads
        and 1 GB runs: ~33 GB before the first chunk), so they are streamed one after
        the other, each decoded with every thread."""
        return (not self.keeps_every_batch and not self._all_files_small
                and self._may_read_files_side_by_side())

    @functools.cached_property
    def _all_files_small(self) -> bool:
        # (a compressed file not decompressed yet counts as large: its size is unknown)
        return all(0 <= s.known_size <= STREAM_AHEAD_MAX_FILE_BYTES for s in self.sources)

    def _extra_fields(self) -> list[pa.Field]:
        extra = []
        if self.row_index_name:
            extra.append(pa.field(self.row_index_name, pa.uint64(), nullable=False))
        if self.include_file_paths:
            extra.append(pa.field(self.include_file_paths, self.path_type, nullable=False))
        return extra

    def full_schema(self) -> pa.Schema:
        """All columns a read could produce (reader schema plus requested extras).
        Built once per plan (a read asks for it several times; the first file's
        header and the options fix it)."""
        if self._full_schema is None:
            self._full_schema = self._build_full_schema()
        return self._full_schema

    def _build_full_schema(self) -> pa.Schema:
        extras = self._extra_fields()
        if self.row_index_name and self.row_index_name == self.include_file_paths:
            raise ValueError(f"row_index_name and include_file_paths name the same column "
                             f"{self.row_index_name!r}; give them different names")
        base = self.first_reader.schema
        clash = [f.name for f in extras if f.name in base.names]
        if clash:
            raise ValueError(f"column name(s) {clash} already exist in the {self.format} data")
        schema = pa.schema(list(extras[:1] if self.row_index_name else []) + list(base)
                           + [f for f in extras if f.name == self.include_file_paths])
        like = self.like.full_schema() if self.like is not None else None
        if like is not None and self.include_file_paths:  # (either type: the same column)
            at = like.get_field_index(self.include_file_paths)
            if at >= 0:
                like = like.set(at, like.field(at).with_type(self.path_type))
        if like is not None and not schema.equals(like):
            now, before = _described(schema), _described(like)
            path, first = self.first_reader.path, self.like.first_reader.path
            if path == first:  # the same file, rewritten since: whatever is asked of it
                raise BindfError(f"its columns changed since it was opened ({now}, before "
                                 f"{before}): the file was replaced or rewritten; open or "
                                 "scan it again", path=path)
            # a scan's filter on the file paths skipped the first file: another file, read
            # with the first as other files of a read are (see _check_compatible)
            if not self._requested_alike(schema, like):
                raise BindfError(f"cannot read together with {first}: its columns differ "
                                 f"({now} vs {before})", path=path)
        return schema

    def output_names(self) -> list[str]:
        """Output column names, in the order the user asked for (schema order if not)."""
        full = self.full_schema().names
        if self.columns is None:
            return full
        # (the schema is the first file's: name it, a glob may mix chips)
        check_columns_known(path_text(self.sources[0].path), self.columns, full)
        return with_extra_columns(self.columns, self.row_index_name, self.include_file_paths)

    def output_schema(self) -> pa.Schema:
        full = self.full_schema()
        return pa.schema([full.field(n) for n in self.output_names()])

    def empty_batch(self) -> pa.RecordBatch:
        """The batch of a read of no rows (``n_rows=0``, header-only files), with its
        format's categories in the dictionary columns (see
        :attr:`~bindf.formats._base.FormatReader.dictionaries`)."""
        return empty_batch(self.output_schema(), self.first_reader.dictionaries)

    def _reader_columns(self) -> list[str]:
        extras = {self.include_file_paths, self.row_index_name}
        columns = [n for n in self.output_names() if n not in extras]
        # Only extra columns (or none) wanted: decode the first column anyway, since the
        # row count comes from the data. It is dropped again before yielding.
        return columns or self.first_reader.schema.names[:1]

    # -- data -------------------------------------------------------------------------
    def iter_batches(self) -> Iterator[pa.RecordBatch]:
        """Yield the batches of every source in turn (sorted-file order, whatever the
        number of threads), with extra columns added."""
        schema = self.output_schema()
        names = schema.names
        reader_columns = self._reader_columns()
        produced = 0
        row_index = self.row_index_offset
        bar = _progress_bar(self) if self.progress else None
        plain = not self.row_index_name and not self.include_file_paths
        files = (self._files_in_parallel(reader_columns) if self._parallel_files()
                 else self._files_in_turn(reader_columns))
        try:
            for batches in self._coalesced(files, reader_columns):
                if self.include_file_paths and self.path_type == pa.string():
                    batches = _paths_within_string_limit(batches)
                for batch, runs in batches:
                    if self.n_rows is not None:
                        if produced >= self.n_rows:
                            break
                        if produced + batch.num_rows > self.n_rows:
                            batch = batch.slice(0, self.n_rows - produced)
                    if plain and batch.schema.equals(schema):  # nothing to add or reorder
                        produced += batch.num_rows
                        if bar is not None:
                            bar.update(batch.num_rows)
                        yield batch
                        continue
                    columns = dict(zip(batch.schema.names, batch.columns))
                    if self.row_index_name:
                        if row_index + batch.num_rows - 1 > _ROW_INDEX_MAX:
                            raise ValueError(
                                f"the row index passes 2**64 - 1 (row_index_offset="
                                f"{self.row_index_offset}); it would wrap around to 0")
                        columns[self.row_index_name] = pa.array(
                            np.arange(row_index, row_index + batch.num_rows, dtype=np.uint64)
                        )
                    if self.include_file_paths:
                        columns[self.include_file_paths] = _path_column(
                            runs, batch.num_rows, self.path_type)
                    row_index += batch.num_rows
                    produced += batch.num_rows
                    if bar is not None:
                        bar.update(batch.num_rows)
                    if names:
                        yield pa.RecordBatch.from_arrays([columns[n] for n in names],
                                                         schema=schema)
                    else:  # a pure row count (e.g. polars' select(pl.len())): no columns
                        yield batch.select([])
                if self.n_rows is not None and produced >= self.n_rows:
                    break
        finally:
            files.close()
            if bar is not None:
                bar.close()

    def _coalesced(
        self, files: Generator[tuple[Source, Any], None, None], columns: list[str]
    ) -> Generator[Iterator[tuple[pa.RecordBatch, list[tuple[str, int]]]], None, None]:
        """Per file, its batches with the ``(path, rows)`` runs they hold; small files
        that came as decoded units (see :meth:`FormatReader.small_file_units`) are
        gathered, across files, into batches of up to :data:`GROUP_ROWS` rows (or
        ``batch_size``, if smaller: no batch exceeds it), so that turning them into
        columns costs once per group instead of once per file. The batches of other
        small local files are joined into groups of the same size. Nothing is gathered
        when the batches must stay as the readers make them (``n_rows``, record
        ranges)."""
        group_rows = GROUP_ROWS if self.batch_size is None else min(GROUP_ROWS, self.batch_size)
        units: list[Any] = []
        runs: list[tuple[str, int]] = []
        rows = 0
        group_reader: FormatReader | None = None

        def flush() -> Iterator[tuple[pa.RecordBatch, list[tuple[str, int]]]]:
            # (Turning a group into columns in a worker thread while the next files are
            # decoded was tried: with the one-pass column kernel it gained nothing.)
            nonlocal units, runs, rows
            assert group_reader is not None
            group, done = units, runs
            units, runs, rows = [], [], 0
            batch = group_reader.units_to_batch(group, columns)
            if self.batch_size is not None and batch.num_rows > self.batch_size:
                return iter(_split(batch, done, self.batch_size))  # one file above it
            return iter([(batch, done)])

        # Batches of small files that stream theirs (formats without units) are
        # gathered likewise and joined into one batch per group, a copy of the group
        # only: polars and pandas pay per chunk, and thousands of one-file chunks cost
        # more than their copy.
        small: list[pa.RecordBatch] = []
        small_runs: list[tuple[str, int]] = []
        small_rows = 0

        def join_small() -> Iterator[tuple[pa.RecordBatch, list[tuple[str, int]]]]:
            nonlocal small, small_runs, small_rows
            group, done = small, small_runs
            small, small_runs, small_rows = [], [], 0
            return iter(_joined(group, done))

        try:
            for source, items in files:
                if isinstance(items, _Units):
                    if small:
                        yield join_small()
                    if rows and rows + items.rows > group_rows:
                        yield flush()
                    group_reader = items.reader
                    units.extend(items.units)
                    runs.append((source.path, items.rows))
                    rows += items.rows
                    continue
                if units:
                    yield flush()
                if self._coalesce and _decoded_inline(source):
                    for batch in items:
                        if small_rows and small_rows + batch.num_rows > group_rows:
                            yield join_small()
                        small.append(batch)
                        small_runs.append((source.path, batch.num_rows))
                        small_rows += batch.num_rows
                    continue
                if small:
                    yield join_small()
                yield ((batch, [(source.path, batch.num_rows)]) for batch in items)
            if small:
                yield join_small()
            if units:
                yield flush()
        except Exception:
            # Damage under on_error="raise" (or any failure): the rows gathered before it
            # are handed out first, as a stream hands out the rows before the damage (a
            # chunked read's consumer gets them, then the error).
            if small:
                yield join_small()
            if units:
                yield flush()
            raise
        finally:
            files.close()

    def _units(self, reader: FormatReader, columns: list[str]) -> _Units | None:
        """A small file decoded to units (None: the reader streams batches instead)."""
        if not self._coalesce:
            return None
        counted = dict(reader.errors)
        try:
            found = reader.small_file_units(columns)
        except BindfError:
            # Damaged: the file is streamed instead, which hands out the rows before the
            # damage and then raises the same error there (units are all or nothing).
            reader.errors.clear()
            reader.errors.update(counted)
            return None
        return None if found is None else _Units(reader, *found)

    @property
    def _coalesce(self) -> bool:
        # A row limit or a record range wants the reader's own early stop: those keep
        # one batch stream per file. (A batch_size only caps the groups: polars scans
        # always pass one, and a scan of thousands of small runs must not pay per file.)
        return self.n_rows is None and self.record_range is None

    def _files_in_turn(
        self, columns: list[str]
    ) -> Generator[tuple[Source, Any], None, None]:
        """One file after the other, streaming each (bounded memory)."""
        produced = [0]
        for i, source in enumerate(self.sources):
            remaining = None if self.n_rows is None else self.n_rows - produced[0]
            if remaining is not None and remaining <= 0:
                return
            with source.held():
                sink = WarningSink()
                with sink.active():
                    reader = self._reader_or_error(i)
                    units = self._units(reader, columns)
                sink.emit()
                # (counted as the reader fills it: a read that n_rows ends inside this
                # file stops at the yield, with its damage so far counted)
                self.errors_done.append(reader.errors)
                if units is not None:
                    yield source, units
                    continue
                batches = self._reader_batches(reader, columns, remaining, produced)
                try:
                    yield source, batches
                finally:
                    batches.close()

    def _files_in_parallel(
        self, columns: list[str]
    ) -> Generator[tuple[Source, list[pa.RecordBatch]], None, None]:
        """Files decoded on a pool of :attr:`threads` threads (the process's shared one,
        see :func:`bindf._threads.shared_executor`), handed out in file order.

        Small local files (see :func:`_decoded_inline`) are decoded in this thread when
        their turn comes: their cost is Python work that holds the GIL, so a worker
        thread would only add hand-over and GIL contention (measured: 2,000 × 10 KB
        runs took 1.2–1.8 times as long on two threads as on one).

        Each task opens its file once, decodes it completely and records its warnings
        (see :mod:`bindf._warnings`); they are issued here, in file order, before the
        file's batches. At most ``threads + 1`` files are decoded ahead of the consumer
        (a chunked read holds that many files' batches). With ``n_rows``, each file is
        decoded up to the rows still missing when it was submitted (an upper bound), and
        read again where it said more than the rows taken from it
        (:meth:`_decoded_past_rows_wanted`).
        """
        pool = shared_executor("bindf-read", self.threads)
        # Files submitted whose task has not started: while any wait, a task reads its
        # own batches whole instead of in parts (FormatReader.part_bounds)
        waiting = WaitingTasks()
        # (source, its index, its task or None: decoded here, the n_rows it was given)
        pending: deque[tuple[Source, int, Future[_FileResult] | None, int | None]] = deque()
        submitted = 0
        # Rows handed out so far; only the consumer (this generator) updates it.
        produced = 0
        try:
            while True:
                while submitted < len(self.sources) and len(pending) <= self.threads:
                    remaining = None if self.n_rows is None else self.n_rows - produced
                    if remaining is not None and remaining <= 0:
                        break
                    source = self.sources[submitted]
                    future = None
                    if not _decoded_inline(source):
                        waiting.submitted()
                        try:
                            future = pool.submit(self._decode_whole_file, submitted,
                                                 columns, remaining, pool, waiting)
                        except BaseException:
                            waiting.withdrawn()
                            raise
                    pending.append((source, submitted, future, remaining))
                    submitted += 1
                if not pending:
                    return
                source, index, future, bound = pending.popleft()
                if future is None:  # a small file: decoded here, when its turn comes
                    remaining = None if self.n_rows is None else self.n_rows - produced
                    result = self._decode_whole_file(index, columns, remaining)
                else:
                    result = future.result()
                    if self._decoded_past_rows_wanted(result, bound, produced):
                        assert self.n_rows is not None
                        result.taken_error()  # (this decoding is dropped: see taken_error)
                        result = self._decode_whole_file(index, columns, self.n_rows - produced)
                result.sink.emit()
                if (error := result.taken_error()) is not None:
                    try:
                        if result.batches:  # the rows before the damage, then the error
                            yield source, result.batches
                        raise error
                    finally:  # (this frame is in its traceback: held here, a cycle)
                        del error
                assert result.reader is not None
                self.errors_done.append(result.reader.errors)
                produced += (result.batches.rows if isinstance(result.batches, _Units)
                             else sum(b.num_rows for b in result.batches))
                yield source, result.batches
        finally:  # files not handed out: cancelled, or waited for (they hold files open)
            dropped = [future for _, _, future, _ in pending if future is not None]
            settle(dropped)
            for future in dropped:  # their errors, never raised: see taken_error
                if not future.cancelled() and future.exception() is None:
                    future.result().taken_error()

    def _decoded_past_rows_wanted(self, result: _FileResult, bound: int | None,
                                  produced: int) -> bool:
        """Whether a file decoded on the pool must be read again, up to the rows still
        wanted now that ``produced`` are handed out: it was decoded up to ``bound``, the
        rows missing when it was submitted, more than the read takes from it, and it warned
        or counted damage (``on_error="warn"``/``"skip"``), which may lie beyond them (a
        truncated end, a damaged readout). A sequential read stops before those and
        says nothing of them; nor does a parallel one, which reads the file again as the
        sequential read does (on this thread: one file per read at most, the one where
        ``n_rows`` ends). Rows alone need no second read: the rows taken are the same
        first rows either way, and an error beyond them is never raised (the consumer
        stops before it)."""
        if (self.n_rows is None or bound is None or bound <= self.n_rows - produced
                or result.reader is None or isinstance(result.batches, _Units)):
            return False  # (the same bound again would read the same)
        rows = sum(batch.num_rows for batch in result.batches)
        return rows > self.n_rows - produced and bool(
            result.sink.recorded or any(result.reader.errors.values()))

    def _decode_whole_file(self, index: int, columns: list[str], n_rows: int | None,
                           helpers: Lane | None = None,
                           waiting: WaitingTasks | None = None) -> _FileResult:
        """One pool task: open file ``index`` once, decode it, keep its warnings.
        ``helpers`` (the pool) may decode parts of it: a thread with no file left to
        take helps finish the files still being decoded. ``waiting``: the read's count
        of files submitted to that pool and not started (this one among them)."""
        if waiting is not None:
            waiting.started()
        result = _FileResult(WarningSink())
        try:
            # (the sink first: decompressing the file at held() may warn of a cut)
            with result.sink.active(), self.sources[index].held():
                result.reader = self._reader_or_error(index)
                result.reader.shared_helpers = helpers
                result.reader.files_waiting = waiting
                units = self._units(result.reader, columns)
                if units is not None:
                    result.batches = units
                else:  # kept as decoded: on damage the rows before it are handed out
                    for batch in self._reader_batches_collected(result.reader, columns,
                                                                n_rows):
                        result.batches.append(batch)
        except BaseException as exc:  # handed to the consumer, raised there in file order
            result.error = exc
        return result

    def _reader_or_error(self, index: int) -> FormatReader:
        try:
            return self.reader_for(index)
        except BindfError as exc:
            raise ensure_bindf_path(exc, self.sources[index].path) from None

    def reader_for(self, index: int) -> FormatReader:
        """Open source ``index`` (the first is cached) and check it fits the first."""
        if index == 0:
            reader = self.first_reader
        else:
            reader = self._open(self.sources[index], self.format)
            self._check_compatible(reader)
        self._warn_of_header_differences(reader)
        return reader

    def _raw_batches(self, reader: FormatReader, columns: list[str],
                     n_rows: int | None) -> Iterator[pa.RecordBatch]:
        if self.record_range is not None:
            start, stop = self.record_range
            names = reader.resolve_columns(columns)
            # batch_size counts rows; record ranges count records.
            per = getattr(reader, "rows_per_record", 1)
            size = max(1, (self.batch_size or DEFAULT_BATCH_ROWS) // per)
            return reader.iter_record_range(start, stop, names, size)  # type: ignore[attr-defined]
        return reader.iter_batches(columns, self.batch_size, n_rows)

    def _reader_batches_collected(self, reader: FormatReader, columns: list[str],
                                  n_rows: int | None) -> Iterator[pa.RecordBatch]:
        """A reader's batches, its errors naming the file (warnings: the caller's sink)."""
        try:
            yield from self._raw_batches(reader, columns, n_rows)
        except BindfError as exc:
            raise ensure_bindf_path(exc, reader.path) from None

    def _reader_batches(
        self, reader: FormatReader, columns: list[str], n_rows: int | None,
        produced: list[int] | None = None,
    ) -> Generator[pa.RecordBatch, None, None]:
        """A reader's batches, streamed. The reader runs with a :class:`WarningSink`
        active only while it computes the next batch; what it recorded is issued before
        that batch is handed on, so the consumer's own code never runs inside it."""
        batches = self._reader_batches_collected(reader, columns, n_rows)
        sink = WarningSink()
        try:
            while True:
                with sink.active():
                    batch = next(batches, None)
                sink.emit()
                if batch is None:
                    return
                if produced is not None:
                    produced[0] += batch.num_rows
                yield batch
        finally:
            with sink.active():
                batches.close()
            sink.emit()

    def _check_compatible(self, reader: FormatReader) -> None:
        """Refuse a file whose columns differ from the first file's, unless a projection
        asks only for columns the two have alike (IT02 runs of other channels read for
        ``time_ns`` and the channels they share), as polars' Parquet readers do."""
        first = self.first_reader
        if reader is first or reader.schema is first.schema or reader.schema == first.schema:
            return
        if self._requested_alike(reader.schema, first.schema):
            return
        shared = _alike_columns(reader.schema, first.schema)
        raise BindfError(
            f"cannot read together with {first.path}: its columns differ "
            f"({reader.schema.names} vs {first.schema.names}); to read the columns they "
            f"share, ask for them (columns={shared}, or a scan's select)", path=reader.path)

    def _requested_alike(self, schema: pa.Schema, first: pa.Schema) -> bool:
        """Whether a projection asks only for columns that ``schema`` has as ``first``
        (the first file's) has them: then files of other columns read together."""
        if self.columns is None:
            return False
        extras = {self.include_file_paths, self.row_index_name}
        wanted = {name for name in self.columns if name not in extras}
        return bool(wanted) and wanted <= set(_alike_columns(schema, first))

    def _warn_of_header_differences(self, reader: FormatReader) -> None:
        """Warn when ``reader``'s file differs in a header value the frame's analysis
        helpers use (:attr:`~bindf.formats._base.FormatReader.analysis_header_keys`) from
        the file whose header the frame carries: the first of the read (of the scan or
        ``bindf.open`` this pass belongs to: a filter on the paths may skip it)."""
        first = self.like.first_reader if self.like is not None else self.first_reader
        if reader.path == first.path:
            return
        warn_of_header_differences(first.analysis_header_keys, reader.header,
                                   first.header, reader.path)

    # -- metadata ---------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The bindf info dict (format, first header, source(s), skipped damage)."""
        first = self.first_reader
        errors = summed_errors(
            [first.errors, *(c for c in self.errors_done if c is not first.errors)])
        source: str | list[str] = (
            self.sources[0].path if len(self.sources) == 1 else [s.path for s in self.sources]
        )
        return build_info(first.name, first.header, source, errors or None)


@dataclass
class _FileResult:
    """What a pool task hands back for one file (see ``ReadPlan._files_in_parallel``)."""

    sink: WarningSink
    reader: FormatReader | None = None
    batches: list[pa.RecordBatch] | _Units = field(default_factory=list)
    error: BaseException | None = None

    def taken_error(self) -> BaseException | None:
        """The error, no longer held here. Why: its traceback holds the task's frame,
        which holds this result; held here too, the two make a reference cycle, and the
        file's decompressed copy (a temporary file on disk for large runs) would wait
        for the garbage collector instead of going when the error goes."""
        error, self.error = self.error, None
        return error


@dataclass
class _Units:
    """A small file decoded to units that its reader turns into a batch later, together
    with those of the next small files (see ``ReadPlan._coalesced``)."""

    reader: FormatReader
    units: list[Any]
    rows: int


#: Local files up to this size are decoded in the consuming thread even when a read may
#: use several: what they cost is mostly per-file Python work (opening, the header,
#: wrapping arrays), which holds the GIL, while the part that runs in parallel (reading,
#: the kernels) is small. Larger files, and every remote file (whose reads wait on the
#: network), go to the thread pool.
PARALLEL_MIN_FILE_BYTES = 1 << 20

#: The largest file that a streamed multi-file read decodes whole ahead of its consumer
#: (see :meth:`ReadPlan._parallel_files`): ``threads + 1`` such files at most are held.
STREAM_AHEAD_MAX_FILE_BYTES = 16 << 20


def warn_of_header_differences(keys: Sequence[str], header: dict[str, Any],
                               first: dict[str, Any], path: str) -> None:
    """Warn when ``header`` (of the file at ``path``) differs in one of ``keys`` (the
    header values the frame's analysis helpers use) from ``first``, the header the
    frame carries."""
    for key in keys:
        if header.get(key) != first.get(key):
            warn(BindfWarning(
                f"its {key!r} is {header.get(key)!r}, the first file's "
                f"{first.get(key)!r}: the frame's header is the first file's, "
                "so the helpers that use it (df.bindf.rebin, count_rate …) would be "
                "wrong for this file's rows; read such files separately",
                path=path))


def check_extra_column_name(name: str, value: Any) -> None:
    """``include_file_paths``/``row_index_name`` (``name``) is a column name or None."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a column name (a str) or None, not {value!r}")
    if value == "":  # was taken for "no column"; polars makes a column named ""
        raise ValueError(f"{name} must be a column name, not an empty string "
                         "(None for no such column)")


def _alike_columns(schema: pa.Schema, first: pa.Schema) -> list[str]:
    """The columns of ``first`` that ``schema`` has too, of the same type (first's order)."""
    return [name for name in first.names
            if name in schema.names and schema.field(name).type == first.field(name).type]


def _decoded_inline(source: Source) -> bool:
    """Whether a multi-file read decodes ``source`` in the consuming thread."""
    return source.fs is None and 0 <= source.planning_size < PARALLEL_MIN_FILE_BYTES


def _joined(batches: list[pa.RecordBatch], runs: list[tuple[str, int]]
            ) -> list[tuple[pa.RecordBatch, list[tuple[str, int]]]]:
    """Small batches (of the same schema) as one batch with their ``runs``; as they
    are if Arrow cannot join them (a dictionary column whose merged dictionary
    outgrows its index type)."""
    if len(batches) == 1:
        return [(batches[0], runs)]
    try:
        table = pa.Table.from_batches(batches).combine_chunks()
    except pa.ArrowException:
        return [(batch, [run]) for batch, run in zip(batches, runs)]
    joined = table.to_batches()
    if len(joined) != 1:  # no rows at all (or columns Arrow keeps in several chunks)
        return [(batch, [run]) for batch, run in zip(batches, runs)]
    return [(joined[0], runs)]


def _split(batch: pa.RecordBatch, runs: list[tuple[str, int]], size: int
           ) -> list[tuple[pa.RecordBatch, list[tuple[str, int]]]]:
    """``batch`` (holding ``runs`` of rows per file) as slices of at most ``size`` rows,
    each with the runs it holds."""
    pieces = []
    run, used = 0, 0  # the current run, and how many of its rows earlier pieces hold
    for start in range(0, batch.num_rows, size):
        piece = batch.slice(start, size)
        held, need = [], piece.num_rows
        while need and run < len(runs):  # the runs add up to the batch's rows
            path, n = runs[run]
            take = min(n - used, need)
            if take:
                held.append((path, take))
            need -= take
            used += take
            if used == n:
                run, used = run + 1, 0
        pieces.append((piece, held))
    return pieces


def _path_column(runs: list[tuple[str, int]], n_rows: int, kind: pa.DataType) -> pa.Array:
    """The ``include_file_paths`` column of a batch holding ``runs`` of rows per file,
    of which the first ``n_rows`` (a batch cut short by ``n_rows`` keeps its runs), of
    ``kind`` (``string``, or ``string_view``: see :attr:`ReadPlan.path_type`), within
    Arrow's 2 GiB for ``string`` (see :func:`_paths_within_string_limit`)."""
    first, left = [], n_rows
    for path, rows in runs:
        if left <= 0:
            break
        first.append((path_text(path), min(rows, left)))
        left -= rows
    if len(first) <= 1:  # one file (most batches): its path repeated
        text, rows = first[0] if first else ("", 0)
        return repeated(pa.scalar(text, kind), rows)
    # Many small files' rows (a group of at most GROUP_ROWS: its text fits a string):
    # one lookup, as a file each cost 5-10 us more (2,000 runs a batch).
    counts = np.array([rows for _, rows in first], dtype=np.int64)
    column = pa.array([text for text, _ in first], pa.string()).take(
        pa.array(np.repeat(np.arange(len(first)), counts)))
    if kind == pa.string():
        return column
    try:
        return column.cast(kind)
    except pa.ArrowNotImplementedError:  # pyarrow 17 casts nothing to views
        return pa.concat_arrays([repeated(pa.scalar(text, kind), rows)
                                 for text, rows in first])


def path_chunks(runs: list[tuple[str, int]], kind: pa.DataType) -> list[pa.Array]:
    """An ``include_file_paths`` column of ``runs`` (``(path, rows)`` per file) as
    arrays of ``kind``: one a file, a ``string`` one cut where a file's rows would pass
    its 2 GiB of text (see :func:`bindf.arrow.rows_within_limit`). Paths are put as
    :func:`bindf.arrow.path_text` gives them: an Arrow string must be valid UTF-8, which
    a file name need not be. A ``string_view`` array's rows all point at one copy of
    their path."""
    chunks = []
    for path, rows in runs:
        value = pa.scalar(path_text(path), kind)
        step = rows_within_limit([text_bytes(value)])
        chunks.extend(repeated(value, min(step, rows - start))
                      for start in range(0, rows, step))
    return chunks


def _paths_within_string_limit(
    batches: Iterator[tuple[pa.RecordBatch, list[tuple[str, int]]]]
) -> Iterator[tuple[pa.RecordBatch, list[tuple[str, int]]]]:
    """``batches`` with those whose ``string`` path column would pass Arrow's 2 GiB of
    text handed out in slices that do not (a file of 100 M rows with a 30-byte path
    would need 3 GB in one batch)."""
    for batch, runs in batches:
        fit = rows_within_limit(len(path_text(path).encode()) for path, _ in runs)
        if batch.num_rows <= fit:
            yield batch, runs
        else:
            yield from _split(batch, runs, fit)


def with_extra_columns(columns: Sequence[str], row_index_name: str | None,
                       include_file_paths: str | None) -> list[str]:
    """The requested ``columns`` (each once), and the columns a read adds that they do
    not name where polars puts them: the row index first, the file path last. (Naming
    one in ``columns`` places it there.)"""
    names = list(dict.fromkeys(columns))
    if row_index_name and row_index_name not in names:
        names.insert(0, row_index_name)
    if include_file_paths and include_file_paths not in names:
        names.append(include_file_paths)
    return names


def _described(schema: pa.Schema) -> str:
    """``schema``'s columns, as an error message names them: ``a: uint8, b: double``."""
    return ", ".join(f"{field.name}: {field.type}" for field in schema)


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
    return tqdm(total=total, unit="rows", unit_scale=True, desc=_progress_label(plan.sources))


def _progress_label(sources: Sequence[Source]) -> str:
    """The progress bar's label: the file's name, or how many files are read. Not the
    whole path: tqdm fits the bar to the terminal's width, and a long path leaves no
    room for the counts."""
    if len(sources) > 1:
        return f"{len(sources)} files"
    path = sources[0].path
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1] or path
