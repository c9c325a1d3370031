"""Shared machinery for formats whose records all have one fixed size.

Spectroscopy photon events, SP01, SPF1, the generic record reader and every
:class:`bindf.FixedRecordFormat` are "a header, then N records of one packed numpy
dtype". For those the whole read path is here, written once (dense IT02 has its own,
faster whole-file path into large output arrays, and reuses
:meth:`FixedRecordReader.iter_record_range` for dask's byte ranges):

* the number of records follows from the file size (so no declared count can make bindf
  allocate more than the file holds), and a partial record at the end is a truncation;
* records are read into a reused buffer that stays in cache (one per thread,
  :func:`bindf._source.scratch_records`) and each requested field is copied straight
  into the output column of the current batch (:mod:`bindf._kernels._fields`; streaming
  stores for large batches): a local file by one compiled loop per batch, ``pread`` and
  copies, that holds no GIL (:data:`LOCAL_CHUNK_BYTES` at a time); any other file with
  ``readinto`` and one compiled copy per chunk (:data:`RAW_CHUNK_BYTES`). The only
  full-size allocation is the output itself (in lanes of large blocks from Arrow's
  memory pool, see :mod:`bindf._lanes`);
* a large batch is cut into parts that the reading thread and any free thread of the
  read fill side by side (:meth:`FixedRecordReader._fill_in_parts`);
* any record range can be read on its own (:meth:`FixedRecordReader.iter_record_range`),
  which is what dask's byte-range partitions use.

A subclass sets :attr:`record_dtype` and :attr:`data_offset` in ``_read_header`` and, if
it has derived columns, overrides :meth:`raw_fields_for` and :meth:`build_columns`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from .._kernels import _fields
from .._source import Source, local_descriptor, read_into, scratch_records
from .._threads import Lane, read_in_parts
from .._warnings import warn as _warn
from ..errors import TruncatedFileWarning
from ._base import FormatReader, numpy_to_arrow
from ._stream import BatchStream, FixedRecordStream

#: Batches of at least this many bytes are cut into parts that several threads read
#: (when the reader has helpers, :meth:`FormatReader.part_helpers`): below it handing
#: parts out costs more than it gains.
PARALLEL_MIN_BYTES = 8 << 20

#: About how many bytes of records one part of a parallel batch holds: parts are
#: handed out one at a time, so a thread that finishes early takes another one instead
#: of idling while the last part ends.
PART_BYTES = 4 << 20

#: Batches of at least this many bytes of records are written with streaming stores
#: (:mod:`bindf._kernels._fields`), where :data:`USE_STREAMING_STORES` says so: their
#: columns go to memory, not into the cache, which a batch this large would not stay in
#: until it is used anyway.
STREAM_MIN_BYTES = 8 << 20

#: Environment variable that chooses streaming stores for large batches (``1``) or
#: ordinary ones (``0``) instead of this CPU's default.
STREAMING_STORES_ENV_VAR = "BINDF_STREAMING_STORES"


def streaming_stores_wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether large batches are written with streaming stores: ``BINDF_STREAMING_STORES``
    (``1``/``0``) if set, else this CPU's default (on AMD CPUs, where they were faster;
    on the Intel one measured they were 13-18 % slower: see
    :data:`bindf._kernels._fields.STREAMING_STORES_BY_DEFAULT`)."""
    text = env.get(STREAMING_STORES_ENV_VAR, "").strip()
    if not text:
        return _fields.STREAMING_STORES_BY_DEFAULT
    if text not in ("0", "1"):
        raise ValueError(f"{STREAMING_STORES_ENV_VAR} must be 0 or 1, not {text!r}")
    return text == "1"


#: Streaming stores for large batches or not, for the whole process; None (the default):
#: :func:`streaming_stores_wanted` decides at each large batch, as the environment says
#: then (a wrong value is a ``ValueError`` of the read, as ``BINDF_NUM_THREADS``'s is).
USE_STREAMING_STORES: bool | None = None


def streams(nbytes: int) -> bool:
    """Whether a batch of ``nbytes`` of records is copied into its columns with streaming
    stores (see :data:`STREAM_MIN_BYTES`)."""
    if nbytes < STREAM_MIN_BYTES:
        return False
    return streaming_stores_wanted() if USE_STREAMING_STORES is None else USE_STREAMING_STORES

#: Size of each thread's reused read buffer where the reads and copies are rounds of a
#: Python loop (files in memory, remote or decompressed; local files have their own
#: compiled loop, :data:`LOCAL_CHUNK_BYTES`): half a part (:data:`PART_BYTES`), so a part
#: is two reads and two compiled copies. Each round of Python between a read and a copy
#: needs the GIL, and on two threads the handing over of the GIL showed with 1 MiB (four
#: rounds per part). 8 x 50 MB spectroscopy files, best of 6 in five rounds, speed-up of
#: two threads over one: 1.61-1.73 with 1 MiB, 1.68-1.84 with 2 MiB, 1.72-1.84 with
#: 4 MiB; a 200 MB file, dense IT02 and ITT1 the same or faster. Not 4 MiB: the buffer
#: is kept per thread, and IT01's 200 MB read (80 MB of output) peaked at 1.11 times
#: its output with 4 MiB against 1.04 with 1 MiB.
RAW_CHUNK_BYTES = 2 << 20

#: Size of each chunk of a local file's compiled read loop
#: (:func:`bindf._kernels._fields.fill_from_descriptor`), which takes no GIL between
#: chunks: small enough that the chunk just read stays in the core's own cache (L2)
#: while its fields are copied out. 8 × 50 MB spectroscopy files, best of 15 in rounds
#: (an Intel Xeon with 1.25 MiB of L2 per core): one thread 141.6 ms with 256 KiB,
#: 142.7-151.7 ms with 384-768 KiB, 165.2 ms with 2 MiB; two threads 79.7 against
#: 84.0-85.6 and 97.4 ms. A 200 MB file: 68.1 / 47.3 ms with 256 KiB, 80.0 / 56.3 ms
#: with 2 MiB.
LOCAL_CHUNK_BYTES = 256 << 10


class FixedRecordReader(FormatReader):
    """Base class for formats made of fixed-size records after a header."""

    #: Packed dtype of one record (set by ``_read_header``).
    record_dtype: np.dtype
    #: Byte offset of the first record (set by ``_read_header``).
    data_offset: int
    #: Output rows per record: 1 for most formats; a format whose records expand into
    #: several rows (SP01's tidy shape: channels × 256 bins) overrides it. ``batch_size``
    #: and ``n_rows`` count rows, record ranges count records.
    rows_per_record: int = 1
    #: The most records in one batch (None: no limit beyond ``batch_size``): a format
    #: with text fields keeps each text column of a batch within what an Arrow
    #: ``string`` array holds (see ``FixedLayoutReader``).
    max_batch_records: int | None = None
    #: The number of records the header declares (None: as many as the file holds); a
    #: declared layout's ``count`` sets it (see ``FixedLayoutReader``).
    declared_count: int | None = None

    # -- layout -------------------------------------------------------------------------
    @property
    def record_size(self) -> int:
        return self.record_dtype.itemsize

    @property
    def n_records(self) -> int:
        """Complete records in the file (a partial last record is not counted)."""
        return max(self.source.size - self.data_offset, 0) // self.record_size

    def count_rows(self) -> int:
        """Output rows of the complete records."""
        return self.n_records * self.rows_per_record

    @property
    def tail_bytes(self) -> int:
        """Bytes of an incomplete record at the end of the file (0 if none)."""
        return max(self.source.size - self.data_offset, 0) % self.record_size

    def end_truncation(self) -> str | None:
        """Why the complete records end before the data does (said once, by the warning
        after the last of them), or ``None``."""
        if self.tail_bytes:
            return (f"the last {self.tail_bytes} bytes are an incomplete "
                    f"{self.record_size}-byte record")
        return None

    def row_offset(self, row: int) -> int:
        """Byte offset of record ``row``."""
        return self.data_offset + row * self.record_size

    # -- decoding hooks -------------------------------------------------------------------
    def raw_fields_for(self, columns: list[str]) -> list[str]:
        """Record fields that must be read to produce ``columns`` (default: same names)."""
        return [c for c in columns if c in self.record_dtype.names]

    def build_columns(self, raw: dict[str, np.ndarray], columns: list[str],
                      first_offset: int | None = None) -> list[pa.Array]:
        """Output arrays for ``columns`` from the raw field arrays of one batch, whose
        first record is at file offset ``first_offset`` (for damage found in the values,
        which names its record; ``None``: not known)."""
        return [numpy_to_arrow(raw[c]) for c in columns]

    # -- streaming ------------------------------------------------------------------------
    def batch_stream(self, columns: Sequence[str] | None = None, *,
                     data_end: int | None = None) -> BatchStream:
        names = self.resolve_columns(columns)
        schema = pa.schema([self.schema.field(c) for c in names])
        stream = FixedRecordStream(self.data_offset, path=self.path, dtype=self.record_dtype,
                                   fields=self.raw_fields_for(names), on_error=self.on_error,
                                   data_end=data_end, label=self.label,
                                   # (dense IT02 borrows this method, and declares none)
                                   declared_count=getattr(self, "declared_count", None))

        def to_batch(raw: dict[str, np.ndarray]) -> pa.RecordBatch:
            # The stream converts each unit as soon as it has stepped past its records.
            count = len(next(iter(raw.values()))) if raw else 0
            first = stream.position - count * self.record_size
            return pa.RecordBatch.from_arrays(self.build_columns(raw, names, first),
                                              schema=schema)

        return BatchStream(stream, to_batch)

    # -- reading --------------------------------------------------------------------------
    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        count = self.n_records
        per = self.rows_per_record
        stop = count if n_rows is None else min(-(-n_rows // per), count)
        shrank = yield from self.iter_record_range(0, stop, columns, max(1, batch_size // per))
        why = self.end_truncation()
        if stop == count and why and not shrank:
            self._warn_truncated(self.row_offset(count), why)

    def iter_record_range(
        self, start: int, stop: int, columns: list[str], batch_size: int
    ) -> Generator[pa.RecordBatch, None, bool]:
        """Yield batches of records ``start``..``stop`` (clipped to the file), at most
        ``batch_size`` records each. Returns True if the file turned out shorter than
        when it was opened (after warning about it)."""
        stop = min(stop, self.n_records)
        if start >= stop:
            return False
        if self.max_batch_records is not None:
            batch_size = min(batch_size, self.max_batch_records)
        schema = pa.schema([self.schema.field(c) for c in columns])
        fields = self.raw_fields_for(columns)
        itemsize = self.record_size
        helpers = self.part_helpers()
        in_parts = (helpers is not None
                    and min(batch_size, stop - start) * itemsize >= PARALLEL_MIN_BYTES)
        # every raw column holds one value (or one subarray) per record: sized so, each
        # lies in one block (see bindf._lanes.Lanes)
        lanes = self.output_lanes(input_bytes=(stop - start) * itemsize, rows=stop - start)
        with self.source.open() as f:
            f.seek(self.row_offset(start))
            local = local_descriptor(f)  # the parts read this file, if it is a local one
            row = start
            while row < stop:
                n = min(batch_size, stop - row)
                out = {name: lanes.empty(name, n, self.record_dtype[name]) for name in fields}
                stream = streams(n * itemsize)
                if in_parts and n * itemsize >= PARALLEL_MIN_BYTES:
                    filled = self._fill_in_parts(helpers, row, n, fields, out, stream,
                                                 None if local is None else local[0])
                    f.seek(self.row_offset(row + n))
                else:
                    filled = fill_records(f, self.record_dtype, n, fields, out, stream)
                if filled < n:  # the file shrank after it was opened
                    out = {name: values[:filled] for name, values in out.items()}
                if filled:
                    yield pa.RecordBatch.from_arrays(
                        self.build_columns(out, columns, self.row_offset(row)), schema=schema)
                if filled < n:
                    self._warn_truncated(
                        self.row_offset(row + filled), "the file shrank while it was read"
                    )
                    return True
                row += n
        return False

    def _fill_in_parts(self, helpers: Lane | None, first: int, n: int,
                       fields: list[str], out: dict[str, np.ndarray],
                       stream: bool = False, fd: int | None = None) -> int:
        """Fill ``out`` with records ``first``..``first + n``: the range is cut into
        record-aligned parts (:meth:`~._base.FormatReader.part_bounds`: one part where no
        other thread would take one), each read and copied into its slice of the same
        output arrays (without the GIL) by this thread or a free one of ``helpers``.
        Returns the records read before the first short read.

        ``fd``: the caller's open local file, which the parts read (see
        :func:`fill_part`)."""
        itemsize = self.record_size
        bounds = self.part_bounds(helpers, n, itemsize, PART_BYTES)

        def part(k: int) -> int:
            a, b = bounds[k], bounds[k + 1]
            return fill_part(self.source, fd, self.row_offset(first + a), self.record_dtype,
                             b - a, fields, {name: v[a:b] for name, v in out.items()}, stream)

        return read_in_parts(helpers, part, [b - a for a, b in zip(bounds, bounds[1:])])

    def _warn_truncated(self, offset: int, why: str) -> None:
        _warn(
            TruncatedFileWarning(
                f"truncated {self.label} file: {why}; returning the complete records before it",
                path=self.path,
                offset=offset,
            ),
        )


def fill_records(f: BinaryIO, dtype: np.dtype, n: int, fields: list[str],
                 out: dict[str, np.ndarray], stream: bool = False) -> int:
    """Read up to ``n`` records of ``dtype`` from ``f`` through this thread's reused
    buffer of about :data:`RAW_CHUNK_BYTES` and copy ``fields`` into ``out`` (arrays of
    at least ``n``; with streaming stores if ``stream``, see :data:`STREAM_MIN_BYTES`);
    return the records read. ``f`` is left after the last record read.

    A local file is read by one compiled call that holds no GIL from the first chunk to
    the last (:func:`bindf._kernels._fields.fill_from_descriptor`); other files (in
    memory, remote, decompressed) chunk by chunk here."""
    itemsize = dtype.itemsize
    local = local_descriptor(f)
    if local is not None:
        fd, position = local
        filled = fill_records_at(fd, position, dtype, n, fields, out, stream)
        if filled is not None:
            f.seek(position + filled * itemsize)
            return filled
    raw = scratch_records(dtype, max(min(RAW_CHUNK_BYTES // itemsize, n), 1))
    copy = _field_copier(dtype, fields, out, stream=stream)
    filled = 0
    while filled < n:
        want = min(len(raw), n - filled)
        got = read_into(f, raw[:want]) // itemsize
        if copy is not None:
            copy(raw, got, filled)
        else:
            for name in fields:
                out[name][filled : filled + got] = raw[name][:got]
        filled += got
        if got < want:
            break
    return filled


def fill_part(source: Source, fd: int | None, position: int, dtype: np.dtype, n: int,
              fields: list[str], out: dict[str, np.ndarray], stream: bool = False) -> int:
    """:func:`fill_records` of the ``n`` records at byte ``position`` of ``source``, for a
    part of a parallel batch, which runs on any thread: with ``pread`` from ``fd``, the
    caller's open local file (no position to share, :func:`fill_records_at`), where it
    can; else through a handle of its own."""
    if fd is not None:
        filled = fill_records_at(fd, position, dtype, n, fields, out, stream)
        if filled is not None:
            return filled
    with source.open() as f:
        f.seek(position)
        return fill_records(f, dtype, n, fields, out, stream)


def fill_records_at(fd: int, position: int, dtype: np.dtype, n: int, fields: list[str],
                    out: dict[str, np.ndarray], stream: bool = False) -> int | None:
    """:func:`fill_records` from byte ``position`` of the open local file ``fd``, by one
    compiled call (``pread``, so any thread may read its own range of one descriptor);
    None, having read nothing, where it cannot (no ``pread`` on this platform, no field,
    or columns that need numpy's copies: see :func:`_field_layout`)."""
    layout = _field_layout(dtype, fields, out) if _fields.HAVE_PREAD else None
    if layout is None:
        return None
    raw = scratch_records(dtype, max(min(LOCAL_CHUNK_BYTES // dtype.itemsize, n), 1))
    return _fields.fill_from_descriptor(fd, position, n, dtype.itemsize, raw.view(np.uint8),
                                        *layout, stream)


def _field_layout(dtype: np.dtype, fields: list[str], out: dict[str, np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
    """The compiled copy's arguments for ``fields`` of ``dtype`` into ``out``: each
    field's offset and size in the record, and its column as bytes; None where there is
    no field, or a column is not a contiguous array of its field's dtype (numpy copies
    those)."""
    if not fields:
        return None
    columns = []
    for name in fields:
        column = out[name]
        field = dtype[name]
        base = field.base if field.shape else field
        if (column.dtype != base or not column.flags.c_contiguous
                or column.shape[1:] != field.shape):
            return None
        columns.append(column.reshape(-1).view(np.uint8))
    offsets = np.array([dtype.fields[name][1] for name in fields], dtype=np.int64)
    sizes = np.array([dtype[name].itemsize for name in fields], dtype=np.int64)
    return offsets, sizes, columns


def _field_copier(dtype: np.dtype, fields: list[str], out: dict[str, np.ndarray], *,
                  stream: bool) -> Callable[[np.ndarray, int, int], None] | None:
    """``copy(records, n, at)``: the ``fields`` of the first ``n`` of ``records`` into
    ``out`` from row ``at`` on, in one call of the compiled loop
    (:func:`bindf._kernels._fields.copy_fields`); None where :func:`_field_layout` is."""
    layout = _field_layout(dtype, fields, out)
    if layout is None:
        return None
    offsets, sizes, columns = layout
    record_size = dtype.itemsize

    def copy(records: np.ndarray, n: int, at: int) -> None:
        _fields.copy_fields(records.view(np.uint8), n, record_size, offsets, sizes,
                            [column[at * size:] for column, size in zip(columns, sizes)],
                            stream)

    return copy
