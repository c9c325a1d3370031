"""FLIM LABS intensity tracing ``IT02`` files (``read_it02``, ``write_it02``).

Layout: ``docs/formats/it02.md``, from the FLIM LABS ``intensity-tracing-py``
documentation and its example export. ``IT02 | u32 J | J bytes of JSON`` then records
until the end of the file, in one of two layouts:

* **dense** (older software, the published example file): ``f64 time_ns`` then one
  ``u32`` count per enabled channel, in header order. Fixed size ``8 + 4·N``: a packed
  numpy dtype, no kernel.
* **sparse** (current software): ``f64 time_ns, u8 mask``, then one ``u32`` per set bit,
  lowest bit first; bit ``k`` is the ``k``-th entry of ``channels``. All-zero bins may be
  missing. A final record with mask 0 marks the end of the acquisition and is not a bin.
  Record boundaries form a chain, followed by :mod:`bindf._kernels._it02`.

Both layouts share the magic, so the reader detects the layout (see
:func:`detect_layout`) unless ``layout=`` is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._header import read_exact, read_preamble
from .._kernels import _it02
from .._lanes import fault_in
from .._source import iter_fixed_records, local_descriptor
from .._threads import Lane, read_in_parts, shared_executor
from .._warnings import warn as _warn
from ..errors import CorruptDataError, CorruptDataWarning, HeaderError, TruncatedFileWarning
from ._base import AcquisitionEnd, FormatReader, numpy_to_arrow
from ._fixed import (
    PARALLEL_MIN_BYTES,
    PART_BYTES,
    FixedRecordReader,
    fill_part,
    streams,
)
from ._it02_layout import (
    _F64,
    FORMAT_LABEL,
    IT02_MAGIC,
    LAYOUT_PROBE_BYTES,
    LAYOUTS,
    MARKER_TAIL_BYTES,
    MAX_SPARSE_CHANNELS,
    MAX_SPARSE_RECORD,
    SPARSE_FIXED_BYTES,
    TIME_BYTES,
    _bin_width_ns,
    _channels_problem,
    _find_end_marker,
    channel_column,
    dense_dtype,
    detect_layout,
)
from ._it02_writer import write_it02  # noqa: F401 - bindf.formats.it02.write_it02 still works
from ._stream import BatchStream, StreamDecoder, decode_file

#: Raw bytes read per step. Bounded, so a read needs its output plus a few MB.
CHUNK_BYTES = 8 << 20
#: Rows of the output arrays allocated at once (see _Outputs); batches are cut to size.
OUTPUT_ROWS = 1 << 22
#: Rows decoded per step under fill_gaps, into scratch arrays reused for every step.
SCRATCH_ROWS = 1 << 18
#: Records at the end of a borrowed sparse chunk whose byte offsets are cheap to find.
TAIL_ROWS = 64
#: fill_gaps: the longest run of consecutive records that can be judged an outlier (see
#: _outlier_runs); the records after such a run are held back until enough follow.
MAX_OUTLIER_RUN = 2
_EMPTY_F64 = np.empty(0, dtype=np.float64)

# -- the reader -------------------------------------------------------------------------


@dataclass
class _Chunk:
    """Decoded records of one step: times (or None) and the wanted channels' counts."""

    time: np.ndarray | None
    counts: list[np.ndarray]
    #: Byte offset in the file of record ``i`` of this chunk (for error messages; only
    #: valid until the next chunk is requested).
    offset_of: Callable[[int], int]


class _Outputs:
    """Output arrays of one batch, filled piece by piece, trimmed when handed out.

    They are allocated large (:data:`OUTPUT_ROWS` rows, or what is left to read): a big
    numpy array is backed by transparent huge pages, which makes faulting in the output
    (its largest cost after decoding) about twice as cheap as with many small arrays.
    Untouched capacity costs no memory, and ``resize`` (``realloc``) returns it.
    """

    def __init__(self, capacity: int, want_time: bool, n_counts: int) -> None:
        self.capacity = capacity
        self.filled = 0
        self.time = np.empty(capacity, dtype=np.float64) if want_time else None
        self.counts = [np.empty(capacity, dtype=np.uint32) for _ in range(n_counts)]

    @property
    def room(self) -> int:
        return self.capacity - self.filled

    def finish(self) -> _Chunk:
        arrays = ([self.time] if self.time is not None else []) + self.counts
        if self.filled < self.capacity:
            for array in arrays:
                array.resize(self.filled, refcheck=False)
        return _Chunk(self.time, self.counts, _no_offsets)


def _no_offsets(i: int) -> int:
    raise AssertionError("record offsets are only kept for fill_gaps chunks")


class IT02Reader(FormatReader):
    """FLIM LABS intensity tracing (``IT02``), dense or sparse layout.

    Columns
    -------
    time_ns : float64
        Time of the bin, ns from the start of the acquisition (as written by the device).
    ch{i+1} : uint32, one per enabled channel, in header order
        Photon counts of 0-based channel ``i`` in that bin (the vendor software calls it
        "Channel i+1"); channels [1, 3, 4] give ``ch2, ch4, ch5``. A channel whose bit is
        not set in a sparse record counts 0.

    Options
    -------
    layout : "dense" | "sparse" | None
        Force the record layout. By default it is detected from the first records (see
        :func:`detect_layout`): the layout whose leading times are plausible (finite,
        within 0 … 1e18 ns, each at least half a bin after the previous) wins, and
        between plausible ones, one whose times passed that test (two or more) wins
        over a single record; a tie is broken by which layout makes the data end
        cleanly, except between two single plausible records (which raises, as below);
        an empty data section reads as dense. Data too short for a first record in any
        layout its bytes allow (a file cut inside its first record) gives no row and a
        :class:`~bindf.errors.TruncatedFileWarning`, and the header's ``layout`` is None
        when both layouts are still possible. Bytes that fit neither (or both) raise
        :class:`~bindf.errors.CorruptDataError` asking for ``layout=``. A sparse chain
        broken by an invalid mask after at least 8 records is still judged as sparse
        (the bad mask is then damage, see below).
    fill_gaps : bool
        Return every bin from the first to the last, at ``bin_width_micros`` spacing,
        with zero counts for missing bins (as the vendor's plotting script does). The
        first record's bin index is ``floor(t / w + 0.5)`` (``w`` the bin width in ns);
        every later record advances the index by ``floor((t - t_prev) / w + 0.5)`` from
        the previous record, which must be at least 1. Indices follow time *differences*
        so that a drifting device clock (the real example drifts by ~1 bin over 3000
        bins) neither invents empty bins nor merges two bins. ``time_ns`` then holds the
        nominal ``index * w``. Damaged times (``on_error`` applies; under
        ``"warn"``/``"skip"`` the records named are dropped, the rest kept):

        * a non-finite time;
        * an *outlier run*: ``m`` consecutive records (``m`` = 1 or 2, see
          ``MAX_OUTLIER_RUN``) such that the ``m + 1`` records after them are all less
          than half a bin after every record of the run, yet continue validly from the
          record before it (each at least half a bin after the one before: the record
          before the run, then these ``m + 1``; at the file's first record there is no
          record before). A single time jumping far ahead thus loses that record, not the
          good records after it. Judging a record needs the 4 records after it, held back
          across chunks; a record followed by fewer (the end of the file) is never an
          outlier;
        * a record less than half a bin after the last kept one.

        Bins are produced in bounded batches, but their number follows the times: a long
        pause is a long run of zero bins (a genuine pause is data), and so is a time far
        in the future that no later record contradicts (the file's last records).

        Under ``"raise"`` the first damaged record found raises
        :class:`~bindf.errors.CorruptDataError` with its byte offset (an outlier is
        found once the records after it are read).

    Header
    ------
    The file's JSON verbatim, plus (when the JSON lacks them): ``layout`` ("dense" or
    "sparse") and, for sparse files, ``acquisition_end_ns``: the time of the final
    mask-0 record, or None if the file does not end with one (still being written,
    truncated) or its time is not finite. The end marker is guessed when the file is opened, from the last bytes
    (see :func:`_find_end_marker`), and settled by a whole read, which walks the record
    chain (see :meth:`_sparse_chunks`). A mask-0 record that is not the last record is
    an ordinary bin whose counts are all zero.

    Damage: a file that ends inside a record gives a
    :class:`~bindf.errors.TruncatedFileWarning` and all complete records. A sparse mask
    with a bit >= N is a :class:`~bindf.errors.CorruptDataError` naming the record's byte
    offset; under ``on_error="warn"/"skip"`` reading stops there (the record chain
    cannot be followed past it) and the rows before it are returned.
    """

    stream_state_ignores_columns = True  # (see FormatReader)

    name: ClassVar[str] = "it02"
    label: ClassVar[str] = "FLIM LABS IT02 intensity tracing"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        layout = self.options.pop("layout", None)
        fill_gaps = self.options.pop("fill_gaps", False)
        self.refuse_options(self.options)
        if layout not in (None, *LAYOUTS):
            raise ValueError(f"layout must be 'dense', 'sparse' or None, not {layout!r}")
        self._layout_forced = layout is not None
        if not isinstance(fill_gaps, bool):
            raise TypeError(f"fill_gaps must be True or False, not {fill_gaps!r}")
        raw, self.data_offset = read_preamble(
            f, magic=IT02_MAGIC, file_size=self.source.size, path=self.path,
            format_label=FORMAT_LABEL,
        )
        problem = _channels_problem(raw)
        if problem:
            raise HeaderError(f"{FORMAT_LABEL} header: {problem}", path=self.path, offset=8)
        self.channels: list[int] = list(raw["channels"])
        self.n_channels = len(self.channels)
        self.bin_ns = _bin_width_ns(raw)
        if fill_gaps and self.bin_ns is None:
            raise HeaderError(
                f"fill_gaps needs a positive 'bin_width_micros' in the header, found "
                f"{raw.get('bin_width_micros')!r}", path=self.path, offset=8,
            )
        self.fill_gaps = fill_gaps
        self.data_bytes = self.source.size - self.data_offset
        head = read_exact(f, min(self.data_bytes, LAYOUT_PROBE_BYTES))

        sparse_possible = self.n_channels <= MAX_SPARSE_CHANNELS
        end_ns = self._end_marker_time(f, head) if sparse_possible and layout != "dense" else None
        known = True
        if layout is None:
            decided = detect_layout(head, self.data_bytes, self.n_channels, self.bin_ns,
                                    end_ns is not None)
            if isinstance(decided, tuple):
                raise CorruptDataError(
                    f"cannot tell whether this {FORMAT_LABEL} file uses the dense or the "
                    f"sparse record layout ({decided[1]}); pass layout='dense' or "
                    "layout='sparse'", path=self.path, offset=self.data_offset,
                )
            # Undecided: too few bytes for a first record in either layout. Read as dense,
            # they are one incomplete record: no row and a truncation warning, as either
            # layout would give; the header says the layout is not known yet.
            known = decided is not None
            layout = decided or "dense"
        elif layout == "sparse" and not sparse_possible:
            raise HeaderError(
                f"the sparse layout has a one-byte channel mask, but the header enables "
                f"{self.n_channels} channels", path=self.path, offset=8,
            )
        self.layout: str = layout
        self._layout_known = known
        header = dict(raw)
        header.setdefault("layout", layout if known else None)
        self._end_in_json = "acquisition_end_ns" in raw
        if layout == "sparse":
            self.acquisition_end_ns = end_ns
            self.end_marker_offset = (
                None if end_ns is None else self.source.size - SPARSE_FIXED_BYTES
            )
            header.setdefault("acquisition_end_ns", end_ns)
        else:
            self.acquisition_end_ns = None
            self.end_marker_offset = None
            self.dtype = dense_dtype(self.n_channels)
            self.n_records, self.tail_bytes = divmod(self.data_bytes, self.dtype.itemsize)
        self._schema = pa.schema(
            [pa.field("time_ns", pa.float64(), nullable=False)]
            + [pa.field(channel_column(c), pa.uint32(), nullable=False) for c in self.channels]
        )
        return header

    # -- live following -------------------------------------------------------------------
    end_header_keys: ClassVar[tuple[str, ...]] = ("acquisition_end_ns",)
    #: ``df.bindf.rebin``/``count_rate``/``plot_trace(rate=True)`` divide by it.
    analysis_header_keys: ClassVar[tuple[str, ...]] = ("bin_width_micros",)

    @property
    def settled(self) -> bool:
        """The layout was given, or detected from a full probe of records, or the file
        already ends with its end marker: it cannot change as the file grows."""
        return (self._layout_forced or self.data_bytes >= LAYOUT_PROBE_BYTES
                or self.end_marker_offset is not None)

    def acquisition_end(self, f: BinaryIO, size: int) -> AcquisitionEnd | None:
        """A sparse file of ``size`` bytes ends with its mask-0 end marker: the same test
        as when a finished file is opened (see :func:`_find_end_marker`)."""
        if self.layout != "sparse" or size - self.data_offset < SPARSE_FIXED_BYTES:
            return None
        tail_len = min(size - self.data_offset, MARKER_TAIL_BYTES)
        f.seek(size - tail_len)
        tail = read_exact(f, tail_len)
        if len(tail) < tail_len or tail[-1] != 0:
            return None
        f.seek(self.data_offset)
        head = read_exact(f, TIME_BYTES)
        end_ns = _find_end_marker(tail, size - tail_len, self.data_offset, self.n_channels,
                                  _F64.unpack_from(head, 0)[0])
        if end_ns is None:
            return None
        return AcquisitionEnd(size - SPARSE_FIXED_BYTES, {"acquisition_end_ns": end_ns})

    def _end_marker_time(self, f: BinaryIO, head: bytes) -> float | None:
        if self.data_bytes < SPARSE_FIXED_BYTES or len(head) < TIME_BYTES:
            return None
        t_first = _F64.unpack_from(head, 0)[0]
        tail_len = min(self.data_bytes, MARKER_TAIL_BYTES)
        f.seek(self.source.size - tail_len)
        tail = read_exact(f, tail_len)
        if len(tail) < tail_len:  # the file shrank since it was measured
            return None
        return _find_end_marker(tail, self.source.size - tail_len, self.data_offset,
                                self.n_channels, t_first)

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def count_rows(self) -> int | None:
        if self.layout == "dense" and not self.fill_gaps:
            return self.n_records
        return None

    # -- record ranges (dense layout): dask's byte-range partitions ---------------------
    #: (what FixedRecordReader.iter_record_range, borrowed below, asks: no text columns)
    max_batch_records = None

    @property
    def record_size(self) -> int:
        """Bytes per record for the dense layout without ``fill_gaps``; 0 otherwise (the
        sparse record chain, and gap filling, must be decoded from the start)."""
        return self.dtype.itemsize if self.layout == "dense" and not self.fill_gaps else 0

    @property
    def record_dtype(self) -> np.dtype:
        return self.dtype

    def row_offset(self, row: int) -> int:
        return self.data_offset + row * self.dtype.itemsize

    def raw_fields_for(self, columns: list[str]) -> list[str]:
        fields = ["time_ns"] if "time_ns" in columns else []
        return fields + [f"c{k}" for k, c in enumerate(self.channels)
                         if channel_column(c) in columns]

    def build_columns(self, raw: dict[str, np.ndarray], columns: list[str],
                      first_offset: int | None = None) -> list[pa.Array]:
        by_column = {"time_ns": "time_ns",
                     **{channel_column(c): f"c{k}" for k, c in enumerate(self.channels)}}
        return [numpy_to_arrow(raw[by_column[c]]) for c in columns]

    def iter_record_range(self, start: int, stop: int, columns: list[str],
                          batch_size: int) -> Generator[pa.RecordBatch, None, bool]:
        """Records ``start``..``stop`` of a dense file on their own (see
        :meth:`bindf.formats._fixed.FixedRecordReader.iter_record_range`)."""
        if not self.record_size:
            raise TypeError("only dense IT02 files (without fill_gaps) have record ranges")
        return (yield from FixedRecordReader.iter_record_range(self, start, stop, columns,  # type: ignore[arg-type]
                                                               batch_size))

    # -- batches ----------------------------------------------------------------------
    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self._schema.field(c) for c in columns])
        want_time = "time_ns" in columns or self.fill_gaps
        wanted = [k for k, c in enumerate(self.channels) if channel_column(c) in columns]
        max_records = None if self.fill_gaps else n_rows
        # An eager read keeps every batch: large output arrays (see _Outputs) cost less
        # to fill. A streamed one (scan, chunks) gets batches of the size it asked for,
        # so that its first batch does not wait for (and hold) 4 Mi rows.
        output_rows = max(batch_size, OUTPUT_ROWS) if self.keeps_every_batch else batch_size
        if self.keeps_every_batch and not self.fill_gaps:
            # One array per column holds every record: one chunk for polars and Arrow, and
            # a pandas column without a copy (see bindf.frontends.output._writable_view).
            # Dense records are counted; sparse ones are at most one per 9 bytes, and
            # the capacity they do not fill is never touched (no memory) and handed back
            # when the arrays are trimmed (see _Outputs).
            output_rows = max(output_rows, self.n_records if self.layout == "dense" else
                              (self._region_end() - self.data_offset) // SPARSE_FIXED_BYTES)
        # With fill_gaps the decoded records are scratch (the filler builds new arrays),
        # so chunks lend views of buffers reused for every chunk: freeing per-chunk
        # temporaries between the long-lived output arrays would fragment the C heap.
        borrow = self.fill_gaps
        with self.source.open() as f:
            if self.layout == "dense":
                chunks = self._dense_chunks(f, want_time, wanted, output_rows, max_records,
                                            borrow)
            else:
                chunks = self._sparse_chunks(f, want_time, wanted, output_rows, max_records,
                                             borrow)
            if not self.fill_gaps:
                for chunk in chunks:
                    yield _to_batch(schema, "time_ns" in columns, chunk.time, chunk.counts)
                return
            filler = _GapFiller(self, output_rows, len(wanted), n_rows)
            for chunk in chunks:
                for batch in filler.feed(chunk):
                    yield _to_batch(schema, "time_ns" in columns, batch.time, batch.counts)
                if filler.rows_left is not None and filler.rows_left <= 0:
                    return
            for batch in filler.flush():
                yield _to_batch(schema, "time_ns" in columns, batch.time, batch.counts)

    def _dense_chunks(self, f: BinaryIO, want_time: bool, wanted: list[int], batch_size: int,
                      max_records: int | None, borrow: bool) -> Iterator[_Chunk]:
        """Fixed-size records into batches.

        Owned chunks: the columns are copied into large output arrays (see
        :class:`_Outputs`), by the compiled loops of :meth:`_dense_in_parts` for a local
        file or a parallel read, else CHUNK_BYTES at a time through one reused buffer.
        Borrowed ones (``borrow``) are views valid until the next chunk: times in a
        reused contiguous array, counts strided views of the records.
        """
        size = self.dtype.itemsize
        count = self.n_records if max_records is None else min(max_records, self.n_records)
        per_chunk = max(1, min(batch_size, CHUNK_BYTES // size))
        if borrow:
            per_chunk = min(per_chunk, SCRATCH_ROWS)
            scratch_time = np.empty(min(per_chunk, count), dtype=np.float64)
        fields = [f"c{k}" for k in wanted]
        out: _Outputs | None = None
        got = 0
        helpers = self.part_helpers()
        local = local_descriptor(f)
        # Owned columns come from the parts' compiled loops (the fixed-record formats'):
        # several threads' parts, or this thread's alone for a local file (no GIL
        # between chunks). The loop below stays for borrowed chunks and for one thread
        # reading a file that is not local (where each part would open the file again).
        in_parts = not borrow and (local is not None or (
            helpers is not None and count * size >= PARALLEL_MIN_BYTES))
        if in_parts and count * size < PARALLEL_MIN_BYTES:
            helpers = None  # a small file: parts on other threads would cost more
        records_in_turn = () if in_parts else iter_fixed_records(
            f, dtype=self.dtype, start=self.data_offset, count=count,
            records_per_chunk=per_chunk, reuse=True)
        if in_parts:
            got = yield from self._dense_in_parts(helpers, want_time, fields, batch_size, count,
                                                  None if local is None else local[0])
        for records, offset in records_in_turn:
            n = len(records)
            if borrow:
                time = scratch_time[:n]
                np.copyto(time, records["time_ns"])
                yield _Chunk(time, [records[name] for name in fields],
                             lambda i, offset=offset: offset + i * size)
                got += n
                continue
            i = 0
            while i < n:
                if out is None:
                    out = _Outputs(min(batch_size, count - got), want_time, len(fields))
                k = min(out.room, n - i)
                lo, hi = out.filled, out.filled + k
                if out.time is not None:
                    np.copyto(out.time[lo:hi], records["time_ns"][i:i + k])
                for column, name in zip(out.counts, fields, strict=True):
                    np.copyto(column[lo:hi], records[name][i:i + k])
                out.filled += k
                got += k
                i += k
                if not out.room:
                    yield out.finish()
                    out = None
        if out is not None and out.filled:
            yield out.finish()
        if got < count:
            self._warn_truncated(self.data_offset + got * size, "the file shrank while it was read")
        elif self.tail_bytes and count == self.n_records:
            record = f"{size}-byte record" if self._layout_known else "first record"
            self._warn_truncated(self.data_offset + self.n_records * size,
                                 f"the last {self.tail_bytes} bytes are an incomplete {record}")

    def _dense_in_parts(self, helpers: Lane | None, want_time: bool,
                        fields: list[str], batch_size: int, count: int,
                        fd: int | None) -> Generator[_Chunk, None, int]:
        """Dense records in parts: each output batch is cut into record-aligned parts
        (:meth:`~._base.FormatReader.part_bounds`: one part where no other thread would
        take one), each read and copied into its slice of the batch's output arrays by
        this thread or a free one of ``helpers``, as the fixed-record formats' parts are
        (:func:`~._fixed.fill_part`: with ``pread`` from ``fd``, the caller's open local
        file, else through a handle of its own). Returns the records read (fewer than
        ``count`` if the file shrank)."""
        size = self.dtype.itemsize
        names = (["time_ns"] if want_time else []) + fields
        got = 0
        while got < count:
            rows = min(batch_size, count - got)
            out = _Outputs(rows, want_time, len(fields))
            columns = dict(zip(names, ([out.time] if want_time else []) + out.counts,
                               strict=True))
            bounds = self.part_bounds(helpers, rows, size, PART_BYTES)
            stream = streams(rows * size)

            def part(k: int, first: int = got, columns: dict[str, np.ndarray] = columns,
                     bounds: list[int] = bounds, stream: bool = stream) -> int:
                a, b = bounds[k], bounds[k + 1]
                # the fixed-record formats' loops: this thread's reused buffer, the
                # compiled field copies (streaming stores for large batches)
                return fill_part(self.source, fd, self.data_offset + (first + a) * size,
                                 self.dtype, b - a, names,
                                 {name: c[a:b] for name, c in columns.items()}, stream)

            filled = read_in_parts(helpers, part, [b - a for a, b in zip(bounds, bounds[1:])])
            out.filled = filled
            got += filled
            if filled:
                yield out.finish()
            if filled < rows:
                break
        return got

    def _sparse_chunks(self, f: BinaryIO, want_time: bool, wanted: list[int], batch_size: int,
                       max_records: int | None, borrow: bool) -> Iterator[_Chunk]:
        """Follow the record chain through the file (see :class:`SparseStream`).

        The end marker guessed when the file was opened (see :func:`_find_end_marker`)
        bounds the records. Without one, a file whose last byte is a zero mask may still
        end with a marker the guess could not confirm (a marker whose time is before the
        last record's, a damaged time among the last records): the chain is walked to
        the last 9 bytes first, and if it lands exactly there, they are a final record of
        mask 0, the end marker by definition, not a row."""
        stream = self.sparse_stream(wanted, want_time=want_time, batch_size=batch_size,
                                    max_records=max_records, borrow=borrow)
        # A few records wanted (head, n_rows): read little more than they can take.
        first_read = CHUNK_BYTES if max_records is None else \
            max(1 << 16, min(CHUNK_BYTES, (max_records + 1) * MAX_SPARSE_RECORD))
        size = self.source.size
        unconfirmed = self._unconfirmed_marker(f)
        # A whole read of a large local file on more than one thread: each next chunk is
        # read by another thread while this one walks the chain through the one before,
        # in reads of half a chunk (two buffers in turn: the memory of one chunk). Not
        # for gap filling (borrowed chunks), whose own work outweighs the walk's: there
        # the other thread gained nothing, and the smaller reads cost 5-15 %.
        read_ahead = shared_executor("bindf-read-ahead", self.threads - 1) \
            if self.threads > 1 and max_records is None and not borrow \
            and not self.source.is_remote and size - self.data_offset > 2 * CHUNK_BYTES \
            else None
        step = CHUNK_BYTES if read_ahead is None else max(1, CHUNK_BYTES // 2)
        try:
            if unconfirmed is None:
                yield from decode_file(self.source, stream, end=self._region_end(),
                                       first_read=first_read, max_read=step, f=f,
                                       read_ahead=read_ahead)
                return
            stream.data_end = unconfirmed
            yield from decode_file(self.source, stream, end=unconfirmed, first_read=first_read,
                                   max_read=step, f=f, finish=False, read_ahead=read_ahead)
            if stream.ended:  # enough rows (n_rows), or damage: finished there
                return
            if stream.position == unconfirmed and not stream.pending:
                self._found_end_marker(f, unconfirmed)
                yield from stream.finish()
                return
            stream.data_end = size  # not a record of its own: the data runs to the end
            yield from decode_file(self.source, stream, end=size, first_read=first_read,
                                   max_read=CHUNK_BYTES, f=f)
        finally:
            for kind, count in stream.errors.items():
                self.note_error(kind, count)

    def _unconfirmed_marker(self, f: BinaryIO) -> int | None:
        """Where an end marker the guess did not confirm would start: the last 9 bytes,
        when no marker was guessed and the file's last byte is a zero mask."""
        size = self.source.size
        if self.end_marker_offset is not None or size - self.data_offset < SPARSE_FIXED_BYTES:
            return None
        f.seek(size - 1)
        return size - SPARSE_FIXED_BYTES if f.read(1) == b"\x00" else None

    def _found_end_marker(self, f: BinaryIO, offset: int) -> None:
        """The chain ends exactly on a mask-0 record at ``offset``, the last one: record
        it as the end marker (in the header too, unless the file's JSON has the key)."""
        f.seek(offset)
        (end_ns,) = _F64.unpack(read_exact(f, TIME_BYTES))
        if not math.isfinite(end_ns):
            # a damaged time: no end time (as the header-only guess says), and headers
            # stay strict JSON
            end_ns = None
        self.acquisition_end_ns = end_ns
        self.end_marker_offset = offset
        if not self._end_in_json:
            self.header["acquisition_end_ns"] = end_ns

    def _region_end(self) -> int:
        """Where the records end: the end marker (not a bin), else the end of the file."""
        return self.end_marker_offset if self.end_marker_offset is not None \
            else self.source.size

    def batch_stream(self, columns: Sequence[str] | None = None, *,
                     data_end: int | None = None) -> BatchStream:
        """See :meth:`FormatReader.batch_stream`. Dense files stream fixed-size records;
        sparse ones follow the record chain (to the stream, a final mask-0 end marker is
        a record like any other: whoever feeds it decides where the data ends).
        ``fill_gaps`` reads cannot stream."""
        if self.fill_gaps:
            raise NotImplementedError("fill_gaps reads cannot be decoded as a stream")
        if self.layout == "dense":
            return FixedRecordReader.batch_stream(self, columns, data_end=data_end)  # type: ignore[arg-type]
        names = self.resolve_columns(columns)
        schema = pa.schema([self._schema.field(c) for c in names])
        wanted = [k for k, c in enumerate(self.channels) if channel_column(c) in names]
        stream = self.sparse_stream(wanted, want_time="time_ns" in names, data_end=data_end)
        return BatchStream(stream, lambda chunk: _to_batch(schema, "time_ns" in names,
                                                          chunk.time, chunk.counts))

    def sparse_stream(self, wanted: list[int] | None = None, *, want_time: bool = True,
                      batch_size: int = OUTPUT_ROWS, max_records: int | None = None,
                      borrow: bool = False, data_end: int | None = -1) -> SparseStream:
        """A resumable decoder of this sparse file's record chain, at its first record.

        ``wanted``: positions (in ``channels``) of the count columns to produce (default
        all); ``data_end``: where the records end (default: the end marker or the file
        size when opened; ``None`` for a file that is still growing)."""
        if wanted is None:
            wanted = list(range(self.n_channels))
        return SparseStream(
            self.data_offset, path=self.path, on_error=self.on_error,
            data_end=self._region_end() if data_end == -1 else data_end,
            n_channels=self.n_channels, wanted=wanted, want_time=want_time,
            batch_size=batch_size, max_records=max_records, borrow=borrow,
            # A growing file (data_end None): whoever feeds the stream decides where the
            # records end (see acquisition_end), not the marker seen when it was opened.
            end_marker_offset=None if data_end is None else self.end_marker_offset)

    # -- damage -----------------------------------------------------------------------
    def _warn_truncated(self, offset: int, why: str) -> None:
        _warn(
            TruncatedFileWarning(
                f"truncated {FORMAT_LABEL} file: {why}; returning the complete records "
                "before it", path=self.path, offset=offset,
            ),
        )

    def _damaged(self, kind: str, message: str, offset: int, count: int = 1) -> None:
        """Raise, or count and (under ``"warn"``) warn, per ``on_error``."""
        if self.on_error == "raise":
            raise CorruptDataError(message, path=self.path, offset=offset)
        self.note_error(kind, count)
        if self.on_error == "warn":
            _warn(CorruptDataWarning(message, path=self.path, offset=offset))

def _to_batch(schema: pa.Schema, with_time: bool, time: np.ndarray | None,
              counts: list[np.ndarray]) -> pa.RecordBatch:
    arrays = ([pa.array(time)] if with_time else []) + [pa.array(c) for c in counts]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)



class SparseStream(StreamDecoder[_Chunk]):
    """The sparse record chain, decoded chunk by chunk from a stream of data bytes.

    The bytes of a record cut by the end of what is held stay in the buffer and are
    completed by the next bytes; the kernel resumes from there. Owned chunks: the kernel
    decodes straight into large output arrays (see :class:`_Outputs`), handed out when
    full, by :meth:`feed`, or at the end. Borrowed ones (``borrow``) are views of scratch
    arrays reused for every step (valid until the next one).
    """

    def __init__(self, position: int, *, path: str, on_error: str, data_end: int | None,
                 n_channels: int, wanted: list[int], want_time: bool, batch_size: int,
                 max_records: int | None, borrow: bool,
                 end_marker_offset: int | None = None) -> None:
        super().__init__(position, path=path, on_error=on_error, data_end=data_end,
                         label=FORMAT_LABEL, capacity=CHUNK_BYTES + MAX_SPARSE_RECORD)
        self.n_channels = n_channels
        self.slots = np.full(n_channels, -1, dtype=np.int8)
        self.slots[wanted] = np.arange(len(wanted), dtype=np.int8)
        self.n_wanted = len(wanted)
        self.want_time = want_time
        self.batch_size = batch_size
        self.borrow = borrow
        self.end_marker_offset = end_marker_offset
        #: Records still to decode (``None``: all).
        self.remaining = max_records
        self.out: _Outputs | None = None
        #: Rows of ``out`` already faulted in by :meth:`fault_in_output`.
        self.faulted_in: tuple[_Outputs | None, int] = (None, 0)
        self.scratch = _Outputs(min(batch_size, SCRATCH_ROWS), want_time, len(wanted)) \
            if borrow else None

    def fault_in_output(self, n: int) -> None:
        """Fault in the rows of the current output that ``n`` more bytes can fill (a
        record has at least 9 bytes), from where the decoder is (it fills them at the
        same time: whichever comes first faults a page in). Rows past the last record
        are faulted in for nothing, at most one read's worth, until the output is
        trimmed."""
        out = self.out
        if out is None:
            return
        done_before = self.faulted_in[1] if self.faulted_in[0] is out else 0
        start = max(done_before, out.filled)
        stop = min(out.capacity, out.filled + n // SPARSE_FIXED_BYTES)
        if stop <= start:
            return
        for array in ([out.time] if out.time is not None else []) + out.counts:
            fault_in(array[start:stop])
        self.faulted_in = (out, stop)

    def _decode(self, buf: np.ndarray, have: int, final: bool) -> Iterator[_Chunk]:
        view = buf[:have]
        status = _it02.STATUS_END
        while True:
            pos = self._pos
            if self.scratch is not None:
                target = self.scratch
            else:
                if self.out is None:
                    cap = self.batch_size
                    if self.data_end is not None:
                        # A record has at least 9 bytes: no more rows than that are left.
                        cap = min(cap, (self.data_end - self._offset - pos) // SPARSE_FIXED_BYTES)
                    if self.remaining is not None:
                        cap = min(cap, self.remaining)
                    if cap <= 0:
                        break
                    self.out = _Outputs(cap, self.want_time, self.n_wanted)
                target = self.out
            limit = target.room
            n_max = min(limit, (have - pos) // SPARSE_FIXED_BYTES)
            done = target.filled
            # Borrowed chunks are decoded in two calls, so that the byte position of the
            # last TAIL_ROWS records is known: the gap filler asks for their offsets in
            # every chunk (it holds them back), and a scan from the chunk's start would
            # cost as much as a second decode.
            split = n_max - TAIL_ROWS if target is self.scratch and n_max > 2 * TAIL_ROWS \
                else n_max
            rows, self._pos, status = _it02.decode_sparse(
                view, pos, self.n_channels, split,
                target.time[done:] if target.time is not None else _EMPTY_F64,
                [c[done:] for c in target.counts], self.slots, self.want_time)
            mid_rows, mid_pos = rows, self._pos
            if split < n_max and status == _it02.STATUS_LIMIT:
                more, self._pos, status = _it02.decode_sparse(
                    view, mid_pos, self.n_channels, n_max - split,
                    target.time[done + rows:] if target.time is not None else _EMPTY_F64,
                    [c[done + rows:] for c in target.counts], self.slots, self.want_time)
                rows += more
            if status == _it02.STATUS_LIMIT and n_max < limit:
                status = _it02.STATUS_END  # fewer than 9 bytes are left
            if target is self.scratch:
                if rows:
                    yield _Chunk(
                        target.time[:rows] if target.time is not None else None,
                        [c[:rows] for c in target.counts],
                        lambda i, start=pos, mid=mid_rows, mid_pos=mid_pos,
                        base=self._offset, view=view: base + (
                            _it02.scan_sparse(view, mid_pos, self.n_channels, i - mid)[1]
                            if i >= mid else
                            _it02.scan_sparse(view, start, self.n_channels, i)[1]),
                    )
            else:
                target.filled += rows
                if self.remaining is not None:
                    self.remaining -= rows
                if not target.room:
                    self.out = None
                    yield target.finish()
                    if self.remaining is not None and self.remaining <= 0:
                        self.ended = True
                        return
            if status != _it02.STATUS_LIMIT:
                break
        if status == _it02.STATUS_BAD_MASK:
            self.ended = True
            yield from self._drain()
            self._bad_mask(self._offset + self._pos, int(view[self._pos + 8]))

    def _drain(self) -> Iterator[_Chunk]:
        if self.out is not None and self.out.filled:
            out, self.out = self.out, None
            yield out.finish()

    def _kernel_state(self) -> int | None:
        return self.remaining

    def _restore_kernel(self, state: int | None) -> None:
        self.remaining = state

    def _bad_mask(self, offset: int, mask: int) -> None:
        self.damaged(
            "bad_mask",
            f"record mask 0x{mask:02x} has a bit for channel position >= {self.n_channels} "
            f"(the header enables {self.n_channels} channels); the records after it cannot "
            "be framed",
            offset,
        )

    def _at_end(self, pending: int, shrank: bool) -> None:
        offset = self.position
        if shrank:
            self.warn_truncated(offset, "the file shrank while it was read")
        elif not pending:
            return
        elif self.end_marker_offset is not None:
            self.damaged(
                "chain_overruns_end_marker",
                f"the record chain does not end at the end-of-acquisition marker at byte "
                f"{self.end_marker_offset}: the record here runs into it",
                offset,
            )
        else:
            self.warn_truncated(offset, f"the last {pending} bytes are an incomplete record")


#: _GapFiller status code of a record judged an outlier (beside the kernel's BIN_* codes).
_OUTLIER = 255


def _follows(earlier: np.ndarray | float, later: np.ndarray | float, bin_ns: float) -> np.ndarray:
    """``later`` is at least half a bin after ``earlier``: the step test of
    :func:`bindf._kernels._it02.assign_bins` (``floor(d / w + 0.5) >= 1``), same float
    operations, so both always agree."""
    return (np.subtract(later, earlier) / bin_ns + 0.5) >= 1.0


def _outlier_runs(times: np.ndarray, bin_ns: float, at_start: bool) -> np.ndarray:
    """Which of ``times`` (finite, file order) belong to an outlier run.

    A run of ``m`` consecutive records (``1 <= m <= MAX_OUTLIER_RUN``), ``r`` = the run,
    ``p`` = the record just before it and ``c_0 … c_m`` = the ``m + 1`` records just after
    it, is an outlier run when

    * no ``c_k`` follows any record of ``r`` (they are all behind the run), and
    * ``p, c_0, …, c_m`` is a valid chain: each follows the one before it (without ``p``
      when the run starts at the file's first record, ``at_start`` and index 0).

    "Follows" is the gap-filling step test. A run needs all ``2m + 2`` records, so runs
    are only found where they all are in ``times``; the caller holds back the last records
    of a chunk until enough follow. A run ends where the next record does not follow the
    one before it, so a file without such a break has no outlier at all.
    """
    n = len(times)
    flags = np.zeros(n, dtype=bool)
    if n < 3:
        return flags
    # i in breaks: times[i + 1] does not follow times[i]
    breaks = np.flatnonzero(~_follows(times[:-1], times[1:], bin_ns))
    lowest = 0 if at_start else 1
    for m in range(1, MAX_OUTLIER_RUN + 1):
        first = breaks - (m - 1)
        first = first[(first >= lowest) & (first + 2 * m < n)]
        if not len(first):
            continue
        run = first[:, None] + np.arange(m)
        after = first[:, None] + m + np.arange(m + 1)
        ok = ~_follows(times[run].min(axis=1), times[after].max(axis=1), bin_ns)
        for k in range(m):
            ok &= _follows(times[after[:, k]], times[after[:, k + 1]], bin_ns)
        has_p = first >= 1
        ok[has_p] &= _follows(times[first[has_p] - 1], times[first[has_p] + m], bin_ns)
        flags[run[ok].ravel()] = True
    return flags


class _GapFiller:
    """Turns decoded records into every bin from the first to the last (``fill_gaps``).

    Per chunk: records with a non-finite time are dropped; outlier runs (see
    :func:`_outlier_runs`) are dropped; the rest get bin indices from
    :func:`bindf._kernels._it02.assign_bins` (which drops records less than half a bin
    after the last kept one). Judging
    outliers needs the ``2 * MAX_OUTLIER_RUN`` records after each one, so the last
    (finite) records of each chunk are copied and held back, decided with the next chunk
    or by :meth:`flush`; the times of the last ``MAX_OUTLIER_RUN`` decided records are kept
    as context. All state carries across chunks, so batched and whole reads agree.
    Counts are scattered into large zero-initialised output arrays (at most ``capacity``
    rows each); the nominal times are made when a batch is handed out.

    Fast path: the kernel is first run on every record held; when it drops none there is
    no break in the time order, hence no outlier, and its bins are used as they are.
    """

    _KINDS = {
        _it02.BIN_NOT_FINITE: ("time_not_finite", "the record's time is not finite"),
        _OUTLIER: (
            "time_outlier",
            "the record's time is out of line with the records around it (the records "
            "after it continue from the one before it, and are all behind it)",
        ),
        _it02.BIN_NOT_AFTER_PREVIOUS: (
            "time_not_increasing",
            "the record's time is less than half a bin after the previous record's",
        ),
        _it02.BIN_OUT_OF_RANGE: ("time_out_of_range", "the record's bin index exceeds 2**52"),
    }

    def __init__(self, reader: IT02Reader, capacity: int, n_counts: int,
                 n_rows: int | None) -> None:
        self.reader = reader
        self.bin_ns = float(reader.bin_ns)  # type: ignore[arg-type]
        self.capacity = capacity
        self.n_counts = n_counts
        self.rows_left = n_rows
        self.hold = 2 * MAX_OUTLIER_RUN
        # assign_bins state
        self.have_last = False
        self.last_t = math.nan
        self.last_bin = 0
        # held-back records (finite times, not yet judged) and their byte offsets
        self.held_time = _EMPTY_F64
        self.held_counts: list[np.ndarray] = [np.empty(0, np.uint32)] * n_counts
        self.held_offsets: list[int] = []
        # times of the last MAX_OUTLIER_RUN judged (finite) records; empty at the start
        self.context = _EMPTY_F64
        # the batch being filled: bins [out_base, out_base + filled)
        self.out: list[np.ndarray] | None = None
        self.out_capacity = 0
        self.out_base = 0
        self.filled = 0
        self.next_bin: int | None = None
        # work arrays, reused (see "borrow" in IT02Reader._batches)
        self._bins = np.empty(0, dtype=np.int64)
        self._status = np.empty(0, dtype=np.uint8)
        self._where = np.empty(0, dtype=np.int64)

    def feed(self, chunk: _Chunk) -> Iterator[_Chunk]:
        """Take one chunk of records; yield the batches it completes."""
        times = chunk.time
        assert times is not None
        counts = chunk.counts
        finite = np.isfinite(times)
        index: np.ndarray | None = None
        if not finite.all() and self.reader.on_error == "raise":
            # The records before the damage first, as if the file ended there (their
            # rows out before the error, as every stream hands them out), then raise.
            first_bad = int(np.argmin(finite))
            before = _Chunk(times[:first_bad], [c[:first_bad] for c in counts],
                            chunk.offset_of)
            yield from self.feed(before)
            yield from self.flush()
            self._damaged(_it02.BIN_NOT_FINITE, 1, chunk.offset_of(first_bad))
        if not finite.all():
            index = np.flatnonzero(finite)
            n_bad = len(times) - len(index)
            self._damaged(_it02.BIN_NOT_FINITE, n_bad,
                          chunk.offset_of(int(np.argmin(finite))))
            times = times[index]
            counts = [c[index] for c in counts]
        n_held = len(self.held_time)
        if n_held:
            times = np.concatenate([self.held_time, times])
            counts = [np.concatenate([h, c]) for h, c in zip(self.held_counts, counts,
                                                            strict=True)]
        held_offsets = self.held_offsets

        def offset_of(i: int) -> int:
            if i < n_held:
                return held_offsets[i]
            i -= n_held
            return chunk.offset_of(int(index[i]) if index is not None else i)

        yield from self._judge(times, counts, offset_of, final=False)

    def flush(self) -> Iterator[_Chunk]:
        """Judge the records held back, then hand out the last, partly filled batch."""
        if len(self.held_time):
            offsets = self.held_offsets
            yield from self._judge(self.held_time, self.held_counts, offsets.__getitem__,
                                   final=True)
        yield from self._partial_batch()

    def _partial_batch(self) -> Iterator[_Chunk]:
        """The batch being filled, handed out as it is (at the end of the records, or of
        those before damage under ``on_error="raise"``)."""
        if self.out is not None and self.filled:
            yield self._finish()

    def _judge(self, times: np.ndarray, counts: list[np.ndarray],
               offset_of: Callable[[int], int], final: bool) -> Iterator[_Chunk]:
        """Decide the fate of ``times`` (finite; held records first) but the last
        ``self.hold`` (unless ``final``), hold those back, scatter the kept ones."""
        n = len(times)
        cut = n if final else max(0, n - self.hold)
        if len(self._bins) < n:
            self._bins = np.empty(n, dtype=np.int64)
            self._status = np.empty(n, dtype=np.uint8)
            self._where = np.empty(n, dtype=np.int64)
        bins, status = self._bins[:n], self._status[:n]
        state = (self.have_last, self.last_t, self.last_bin)
        n_bad, *after = _it02.assign_bins(times, self.bin_ns, *state, bins, status)
        if not n_bad:  # no break in the time order: no outlier either
            if cut == n:
                self.have_last, self.last_t, self.last_bin = after
            elif cut:
                self.have_last, self.last_t, self.last_bin = True, float(times[cut - 1]), \
                    int(bins[cut - 1])
            kept_bins, kept_counts = bins[:cut], [c[:cut] for c in counts]
        else:
            with_context = np.concatenate([self.context, times])
            k0 = len(self.context)
            outlier = _outlier_runs(with_context, self.bin_ns, at_start=k0 == 0)[k0:k0 + cut]
            keep = np.flatnonzero(~outlier)
            n_bad, self.have_last, self.last_t, self.last_bin = _it02.assign_bins(
                np.ascontiguousarray(times[keep]), self.bin_ns, *state,
                bins[:len(keep)], status[:len(keep)])
            verdict = np.full(cut, _OUTLIER, dtype=np.uint8)
            verdict[keep] = status[:len(keep)]
            if self.reader.on_error == "raise" and verdict.any():
                # The records before the first damaged one, judged as if the file ended
                # there, out before the error (the state as it was before this call).
                self.have_last, self.last_t, self.last_bin = state
                first_bad = int(np.flatnonzero(verdict)[0])
                yield from self._judge(times[:first_bad], [c[:first_bad] for c in counts],
                                       offset_of, final=True)
                yield from self._partial_batch()
            self._report(verdict, offset_of)
            ok = verdict == _it02.BIN_OK
            kept_bins = bins[:len(keep)][status[:len(keep)] == _it02.BIN_OK]
            kept_counts = [c[:cut][ok] for c in counts]
        if cut:
            self.context = np.concatenate([self.context, times[:cut]])[-MAX_OUTLIER_RUN:]
        if not final:
            # copies: chunks lend arrays that are reused for the next chunk
            self.held_time = times[cut:].copy()
            self.held_counts = [c[cut:].copy() for c in counts]
            self.held_offsets = [offset_of(i) for i in range(cut, n)]
        else:
            self.held_time = _EMPTY_F64
            self.held_counts = [np.empty(0, np.uint32)] * self.n_counts
            self.held_offsets = []
        yield from self._scatter(kept_bins, kept_counts)

    def _scatter(self, bins: np.ndarray, counts: list[np.ndarray]) -> Iterator[_Chunk]:
        """Put the kept records' counts at their bins; yield the batches completed."""
        if not len(bins):
            return
        if self.next_bin is None:
            self.next_bin = int(bins[0])
        stop = int(bins[-1]) + 1
        lo = 0
        while self.next_bin < stop:
            if self.out is None:
                capacity = self.capacity
                if self.rows_left is not None:
                    capacity = min(capacity, self.rows_left)
                if capacity <= 0:
                    return
                self.out = [np.zeros(capacity, dtype=np.uint32) for _ in range(self.n_counts)]
                self.out_capacity = capacity
                self.out_base, self.filled = self.next_bin, 0
            end = min(self.out_base + self.out_capacity, stop)
            hi = lo + int(np.searchsorted(bins[lo:], end))
            if hi > lo:
                first = int(bins[lo]) - self.out_base
                if int(bins[hi - 1]) - int(bins[lo]) == hi - lo - 1:  # no gap: plain copy
                    for out, c in zip(self.out, counts, strict=True):
                        out[first:first + hi - lo] = c[lo:hi]
                else:
                    where = np.subtract(bins[lo:hi], self.out_base, out=self._where[: hi - lo])
                    for out, c in zip(self.out, counts, strict=True):
                        out[where] = c[lo:hi]
            lo = hi
            self.next_bin = end
            self.filled = end - self.out_base
            if self.filled == self.out_capacity:
                yield self._finish()

    def _finish(self) -> _Chunk:
        assert self.out is not None
        rows = self.filled
        for out in self.out:
            if len(out) > rows:
                out.resize(rows, refcheck=False)
        time = np.arange(self.out_base, self.out_base + rows, dtype=np.float64)
        time *= self.bin_ns
        chunk = _Chunk(time, self.out, _no_offsets)
        if self.rows_left is not None:
            self.rows_left -= rows
        self.out = None
        self.filled = 0
        return chunk

    def _damaged(self, code: int, count: int, offset: int) -> None:
        kind, why = self._KINDS[code]
        self.reader._damaged(
            kind,
            f"fill_gaps: {why}"
            + ("" if self.reader.on_error == "raise"
               else f"; dropped {count} such record(s) of this chunk"),
            offset,
            count,
        )

    def _report(self, status: np.ndarray, offset_of: Callable[[int], int]) -> None:
        bad = np.flatnonzero(status)
        if not len(bad):
            return
        codes = [int(status[bad[0]])] if self.reader.on_error == "raise" else list(self._KINDS)
        for code in codes:
            hits = bad[status[bad] == code]
            if len(hits):
                self._damaged(code, len(hits), offset_of(int(hits[0])))
