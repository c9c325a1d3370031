"""FLIM LABS intensity tracing ``IT02`` files (``read_it02``, ``write_it02``).

Layout: ``../shared/FORMATS.md`` §2, from the FLIM LABS ``intensity-tracing-py``
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
import os
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._header import read_exact, read_preamble
from .._kernels import _it02
from .._source import iter_fixed_records, read_into
from .._writing import (
    WRITE_CHUNK_ROWS,
    column_values,
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
    write_records,
)
from ..errors import CorruptDataError, CorruptDataWarning, HeaderError, TruncatedFileWarning
from ._base import FormatReader

IT02_MAGIC = b"IT02"
FORMAT_LABEL = "IT02 intensity tracing"
LAYOUTS = ("dense", "sparse")

TIME_BYTES = 8
COUNT_BYTES = 4
#: Sparse: bytes before the counts (f64 time + u8 mask).
SPARSE_FIXED_BYTES = _it02.SPARSE_FIXED_BYTES
#: Sparse masks are one byte, so a sparse file has at most 8 channels.
MAX_SPARSE_CHANNELS = _it02.MAX_SPARSE_CHANNELS
MAX_SPARSE_RECORD = SPARSE_FIXED_BYTES + COUNT_BYTES * MAX_SPARSE_CHANNELS

#: Header keys bindf adds to the file's JSON (only when the JSON lacks them). The writer
#: drops them again, so a read → write → read round trip does not freeze stale values.
DERIVED_KEYS = ("layout", "acquisition_end_ns")

#: Raw bytes read per step. Bounded, so a read needs its output plus a few MB.
CHUNK_BYTES = 8 << 20
#: Rows of the output arrays allocated at once (see _Outputs); batches are cut to size.
OUTPUT_ROWS = 1 << 22
#: Rows decoded per step under fill_gaps, into scratch arrays reused for every step.
SCRATCH_ROWS = 1 << 18
#: Layout detection looks at this many leading records (within PROBE_BYTES).
PROBE_RECORDS = 64
PROBE_BYTES = 64 << 10
#: End-marker check: how many records before the candidate marker must chain onto it.
#: Measured on 634k truncations of random sparse data (counts chosen to look like
#: doubles): depth 4 accepted 441 false markers, 8 accepted 5, 16 none.
MARKER_CHECK_DEPTH = 16
#: Bytes at the end of the file the end-marker check may look at.
MARKER_TAIL_BYTES = (MARKER_CHECK_DEPTH + 1) * MAX_SPARSE_RECORD
#: Writer: sparse rows encoded per step (bounds its temporary index arrays to ~20 MB).
SPARSE_ENCODE_ROWS = 1 << 18
#: Detection: no acquisition lasts longer than this (~31 years). Rejects garbage doubles.
MAX_PLAUSIBLE_TIME_NS = 1e18

_F64 = struct.Struct("<d")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_EMPTY_F64 = np.empty(0, dtype=np.float64)


def dense_dtype(n_channels: int) -> np.dtype:
    """One dense record: ``time_ns`` then ``c0 … c{N-1}`` (channel *positions*), packed."""
    return np.dtype([("time_ns", "<f8")] + [(f"c{k}", "<u4") for k in range(n_channels)])


def channel_column(channel: int) -> str:
    """Column name of 0-based channel index ``channel``: the vendor shows it as ``i + 1``."""
    return f"ch{channel + 1}"


def _channels_problem(header: dict[str, Any]) -> str | None:
    """Why ``header["channels"]`` is unusable, or None. Shared by reader and writer."""
    channels = header.get("channels")
    if not isinstance(channels, list):
        return "'channels' must be a list of channel indices"
    if not channels:
        return "'channels' is empty: the file enables no channel"
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in channels):
        return f"'channels' must hold non-negative integers, not {channels!r}"
    if len(set(channels)) != len(channels):
        return f"'channels' lists a channel twice: {channels!r}"
    return None


def _bin_width_ns(header: dict[str, Any]) -> float | None:
    """``bin_width_micros`` in ns, or None when absent or not a positive finite number."""
    value = header.get("bin_width_micros")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        ns = float(value) * 1000.0
    except OverflowError:  # a JSON integer beyond float range
        return None
    return ns if math.isfinite(ns) and ns > 0 else None


# -- layout detection -------------------------------------------------------------------


def _implausible_times(times: np.ndarray, bin_ns: float | None) -> str | None:
    """Why these leading record times cannot be an intensity trace, or None.

    Bins are distinct and in order: times must be finite, within [0, 1e18] ns and
    increase by at least half a bin (any amount if the bin width is unknown). Doubles
    read from misaligned bytes almost never pass this.
    """
    if len(times) == 0:
        return "no complete record"
    with np.errstate(invalid="ignore"):
        if not np.isfinite(times).all():
            return "a time is not finite"
        if not ((times >= 0) & (times <= MAX_PLAUSIBLE_TIME_NS)).all():
            return "a time is negative or absurdly large"
        step = np.diff(times)
        if bin_ns is None:
            if not (step > 0).all():
                return "times do not increase"
        elif not (step >= 0.5 * bin_ns).all():
            return "times do not advance by at least half a bin"
    return None


@dataclass
class _Evidence:
    """What the leading bytes say about one layout."""

    #: Reason the layout is impossible (bad sparse mask), or None.
    impossible: str | None
    #: Reason the times look wrong, or None when they are plausible.
    implausible: str | None
    #: The data section ends exactly where this layout says it should.
    clean_end: bool


def _dense_evidence(head: bytes, data_bytes: int, n_channels: int, bin_ns: float | None
                    ) -> _Evidence:
    dtype = dense_dtype(n_channels)
    n = min(len(head) // dtype.itemsize, PROBE_RECORDS)
    times = np.frombuffer(head, dtype=dtype, count=n)["time_ns"]
    return _Evidence(None, _implausible_times(times, bin_ns), data_bytes % dtype.itemsize == 0)


def _sparse_evidence(head: bytes, data_bytes: int, n_channels: int, bin_ns: float | None,
                     marker_found: bool) -> _Evidence:
    if n_channels > MAX_SPARSE_CHANNELS:
        return _Evidence(f"{n_channels} channels do not fit a one-byte mask", None, False)
    whole = len(head) == data_bytes
    rows, pos, status = _it02.scan_sparse(head, 0, n_channels, len(head) if whole else PROBE_RECORDS)
    if status == _it02.STATUS_BAD_MASK:
        return _Evidence(f"the record at data byte {pos} has an invalid mask 0x{head[pos + 8]:02x}",
                         None, False)
    n = min(rows, PROBE_RECORDS)
    times = np.empty(n, dtype=np.float64)
    _it02.decode_sparse(head, 0, n_channels, n, times, [],
                        np.full(n_channels, -1, np.int8), True)
    clean = (pos == len(head)) if whole else marker_found
    if clean and whole and 1 < rows == n:
        _, last, _ = _it02.scan_sparse(head, 0, n_channels, rows - 1)
        if head[last + 8] == 0:
            # The chain ends with a mask-0 record: the end marker, whose time may equal
            # the last bin's. It is not a bin, so it takes no part in the spacing test.
            times = times[:-1]
    return _Evidence(None, _implausible_times(times, bin_ns), clean)


def detect_layout(head: bytes, data_bytes: int, n_channels: int, bin_ns: float | None,
                  marker_found: bool) -> str | tuple[None, str]:
    """Decide dense vs sparse from the first bytes after the header.

    ``head`` is the start of the data section (all of it if ``data_bytes <= len(head)``),
    ``marker_found`` whether the file ends in a verified sparse end marker. Returns the
    layout, or ``(None, explanation)`` when the bytes fit neither or both equally well.

    Rules, in order: an empty data section is dense (zero rows either way); a layout
    whose leading times are plausible (see :func:`_implausible_times`) wins over one whose
    are not; a tie is broken by which layout makes the data section end cleanly (dense:
    a whole number of records; sparse: the chain ends exactly at the end of the file, or
    the file ends with a verified end marker). The real dense example is decided at the
    first step: read as sparse, its first mask is 0x7b, invalid for 3 channels.
    """
    if data_bytes == 0:
        return "dense"
    dense = _dense_evidence(head, data_bytes, n_channels, bin_ns)
    sparse = _sparse_evidence(head, data_bytes, n_channels, bin_ns, marker_found)
    ranked = {
        name: (ev.implausible is None, ev.clean_end)
        for name, ev in (("dense", dense), ("sparse", sparse))
        if ev.impossible is None
    }
    best = max(ranked.values())
    winners = [name for name, score in ranked.items() if score == best]
    if len(winners) == 1 and (best[0] or best[1]):
        return winners[0]
    why = "; ".join(
        f"as {name}: {ev.impossible or ev.implausible or 'plausible'}"
        + ("" if ev.impossible else f", {'ends' if ev.clean_end else 'does not end'} cleanly")
        for name, ev in (("dense", dense), ("sparse", sparse))
    )
    return (None, why)


# -- end marker -------------------------------------------------------------------------


def _find_end_marker(tail: bytes, tail_start: int, data_offset: int, n_channels: int,
                     t_first: float) -> float | None:
    """Time of the sparse end marker if the file's last 9 bytes are one, else None.

    The chain cannot be walked backwards, so the candidate (``f64`` time then a zero
    mask byte, at ``size - 9``) is accepted only if its time is finite and not before the
    first record, and :data:`MARKER_CHECK_DEPTH` earlier records (or all of them, back to
    the start of the data) chain onto it: a record of ``k`` counts ending exactly there,
    whose mask has ``k`` bits, all valid, and whose time is finite and not after the
    marker's. The reader re-checks while decoding: a chain that does not land on the
    marker is reported as corrupt.
    """
    end = tail_start + len(tail)
    marker = end - SPARSE_FIXED_BYTES
    if marker < data_offset or n_channels > MAX_SPARSE_CHANNELS or tail[-1] != 0:
        return None
    (t_end,) = _F64.unpack_from(tail, marker - tail_start)
    if not math.isfinite(t_end) or (marker > data_offset and not t_end >= t_first):
        return None

    seen: dict[tuple[int, int], bool] = {}

    def chains_back(record_end: int, depth: int) -> bool:
        # Memoised: crafted bytes could otherwise make the search branch (N+1)**depth ways.
        key = (record_end, depth)
        if key not in seen:
            seen[key] = _chains_back(record_end, depth)
        return seen[key]

    def _chains_back(record_end: int, depth: int) -> bool:
        if record_end == data_offset or depth == 0:
            return True
        for k in range(n_channels + 1):
            start = record_end - SPARSE_FIXED_BYTES - COUNT_BYTES * k
            if start < max(data_offset, tail_start):
                break
            mask = tail[start - tail_start + 8]
            if mask >> n_channels or _POPCOUNT[mask] != k:
                continue
            (t,) = _F64.unpack_from(tail, start - tail_start)
            if math.isfinite(t) and t <= t_end and chains_back(start, depth - 1):
                return True
        return False

    return t_end if chains_back(marker, MARKER_CHECK_DEPTH) else None


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
        within 0 … 1e18 ns, each at least half a bin after the previous) wins; a tie is
        broken by which layout makes the data end cleanly; an empty data section reads
        as dense. Bytes that fit neither (or both) raise
        :class:`~bindf.errors.CorruptDataError` asking for ``layout=``.
    fill_gaps : bool
        Return every bin from the first to the last, at ``bin_width_micros`` spacing,
        with zero counts for missing bins (as the vendor's plotting script does). The
        first record's bin index is ``floor(t / w + 0.5)`` (``w`` the bin width in ns);
        every later record advances the index by ``floor((t - t_prev) / w + 0.5)`` from
        the previous record, which must be at least 1. Indices follow time *differences*
        so that a drifting device clock (the real example drifts by ~0.94 bin over 3000
        bins) neither invents empty bins nor merges two bins. ``time_ns`` then holds the
        nominal ``index * w``. A record less than half a bin after the previous one (or
        with a non-finite time) is corrupt data (``on_error`` applies: skipped records
        are dropped). Bins are produced in bounded batches, but their number follows
        the times: one absurd time far in the future means a long run of zero bins.

    Header
    ------
    The file's JSON verbatim, plus (when the JSON lacks them): ``layout`` ("dense" or
    "sparse") and, for sparse files, ``acquisition_end_ns``: the time of the final
    mask-0 record, or None if the file does not end with one (still being written,
    truncated). The end marker is found when the file is opened, from the last bytes;
    see :func:`_find_end_marker`. A mask-0 record that is not the last record is an
    ordinary bin whose counts are all zero.

    Damage: a file that ends inside a record gives a
    :class:`~bindf.errors.TruncatedFileWarning` and all complete records. A sparse mask
    with a bit >= N is a :class:`~bindf.errors.CorruptDataError` naming the record's byte
    offset; under ``on_error="warn"/"skip"`` reading stops there (the record chain
    cannot be followed past it) and the rows before it are returned.
    """

    name: ClassVar[str] = "it02"
    label: ClassVar[str] = "FLIM LABS IT02 intensity tracing"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        layout = self.options.pop("layout", None)
        fill_gaps = self.options.pop("fill_gaps", False)
        if self.options:
            raise TypeError(f"unexpected option(s) for read_it02: {sorted(self.options)}")
        if layout not in (None, *LAYOUTS):
            raise ValueError(f"layout must be 'dense', 'sparse' or None, not {layout!r}")
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
        head = read_exact(f, min(self.data_bytes, PROBE_BYTES))

        sparse_possible = self.n_channels <= MAX_SPARSE_CHANNELS
        end_ns = self._end_marker_time(f, head) if sparse_possible and layout != "dense" else None
        if layout is None:
            decided = detect_layout(head, self.data_bytes, self.n_channels, self.bin_ns,
                                    end_ns is not None)
            if isinstance(decided, tuple):
                raise CorruptDataError(
                    f"cannot tell whether this {FORMAT_LABEL} file uses the dense or the "
                    f"sparse record layout ({decided[1]}); pass layout='dense' or "
                    "layout='sparse'", path=self.path, offset=self.data_offset,
                )
            layout = decided
        elif layout == "sparse" and not sparse_possible:
            raise HeaderError(
                f"the sparse layout has a one-byte channel mask, but the header enables "
                f"{self.n_channels} channels", path=self.path, offset=8,
            )
        self.layout: str = layout
        header = dict(raw)
        header.setdefault("layout", layout)
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

    # -- batches ----------------------------------------------------------------------
    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self._schema.field(c) for c in columns])
        want_time = "time_ns" in columns or self.fill_gaps
        wanted = [k for k, c in enumerate(self.channels) if channel_column(c) in columns]
        max_records = None if self.fill_gaps else n_rows
        # With fill_gaps the decoded records are scratch (the filler builds new arrays),
        # so chunks lend views of buffers reused for every chunk: freeing per-chunk
        # temporaries between the long-lived output arrays would fragment the C heap.
        borrow = self.fill_gaps
        with self.source.open() as f:
            if self.layout == "dense":
                chunks = self._dense_chunks(f, want_time, wanted, batch_size, max_records,
                                            borrow)
            else:
                chunks = self._sparse_chunks(f, want_time, wanted, batch_size, max_records,
                                             borrow)
            if not self.fill_gaps:
                for chunk in chunks:
                    yield _to_batch(schema, "time_ns" in columns, chunk.time, chunk.counts)
                return
            filler = _GapFiller(self, max(batch_size, OUTPUT_ROWS), len(wanted), n_rows)
            for chunk in chunks:
                for batch in filler.feed(chunk):
                    yield _to_batch(schema, "time_ns" in columns, batch.time, batch.counts)
                if filler.rows_left is not None and filler.rows_left <= 0:
                    return
            for batch in filler.flush():
                yield _to_batch(schema, "time_ns" in columns, batch.time, batch.counts)

    def _dense_chunks(self, f: BinaryIO, want_time: bool, wanted: list[int], batch_size: int,
                      max_records: int | None, borrow: bool) -> Iterator[_Chunk]:
        """Fixed-size records, CHUNK_BYTES at a time, read into one reused buffer.

        Owned chunks: the columns are copied into large output arrays (see
        :class:`_Outputs`). Borrowed ones (``borrow``) are views valid until the next
        chunk: times in a reused contiguous array, counts strided views of the records.
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
        for records, offset in iter_fixed_records(
            f, dtype=self.dtype, start=self.data_offset, count=count,
            records_per_chunk=per_chunk, reuse=True,
        ):
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
                    out = _Outputs(min(max(batch_size, OUTPUT_ROWS), count - got),
                                   want_time, len(fields))
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
            self._warn_truncated(
                self.data_offset + self.n_records * size,
                f"the last {self.tail_bytes} bytes are an incomplete {size}-byte record",
            )

    def _sparse_chunks(self, f: BinaryIO, want_time: bool, wanted: list[int], batch_size: int,
                       max_records: int | None, borrow: bool) -> Iterator[_Chunk]:
        """Follow the record chain through the file, CHUNK_BYTES at a time.

        The bytes of a record cut by the chunk boundary are moved to the front of the
        buffer and completed by the next ``readinto``; the kernel resumes from there.
        Owned chunks: the kernel decodes straight into large output arrays (see
        :class:`_Outputs`), one pass over the chain. Borrowed ones (``borrow``) are views
        of scratch arrays reused for every step.
        """
        n_channels = self.n_channels
        slots = np.full(n_channels, -1, dtype=np.int8)
        slots[wanted] = np.arange(len(wanted), dtype=np.int8)
        region_end = self.end_marker_offset if self.end_marker_offset is not None \
            else self.source.size
        buf = np.empty(CHUNK_BYTES + MAX_SPARSE_RECORD, dtype=np.uint8)
        base = self.data_offset  # file offset of buf[0]
        have = 0
        remaining = max_records
        out: _Outputs | None = None
        if borrow:
            scratch = _Outputs(min(batch_size, SCRATCH_ROWS), want_time, len(wanted))
        f.seek(base)
        while True:
            want = min(len(buf) - have, region_end - (base + have))
            got = read_into(f, buf[have:have + want]) if want > 0 else 0
            have += got
            shrank = got < want
            at_end = shrank or base + have >= region_end
            view = buf[:have]
            pos = 0
            status = _it02.STATUS_END
            while True:
                if borrow:
                    target = scratch
                else:
                    if out is None:
                        # A record has at least 9 bytes: no more rows than that are left.
                        cap = min(max(batch_size, OUTPUT_ROWS),
                                  (region_end - base - pos) // SPARSE_FIXED_BYTES)
                        if remaining is not None:
                            cap = min(cap, remaining)
                        if cap <= 0:
                            break
                        out = _Outputs(cap, want_time, len(wanted))
                    target = out
                limit = target.room
                n_max = min(limit, (have - pos) // SPARSE_FIXED_BYTES)
                start = pos
                done = target.filled
                rows, pos, status = _it02.decode_sparse(
                    view, start, n_channels, n_max,
                    target.time[done:] if target.time is not None else _EMPTY_F64,
                    [c[done:] for c in target.counts], slots, want_time)
                if status == _it02.STATUS_LIMIT and n_max < limit:
                    status = _it02.STATUS_END  # fewer than 9 bytes are left
                if borrow:
                    if rows:
                        yield _Chunk(
                            scratch.time[:rows] if scratch.time is not None else None,
                            [c[:rows] for c in scratch.counts],
                            lambda i, start=start, base=base, view=view:
                                base + _it02.scan_sparse(view, start, n_channels, i)[1],
                        )
                else:
                    out.filled += rows  # type: ignore[union-attr]
                    if remaining is not None:
                        remaining -= rows
                    if not out.room:  # type: ignore[union-attr]
                        yield out.finish()  # type: ignore[union-attr]
                        out = None
                        if remaining is not None and remaining <= 0:
                            return
                if status != _it02.STATUS_LIMIT:
                    break
            if status == _it02.STATUS_BAD_MASK or at_end:
                if out is not None and out.filled:
                    yield out.finish()
                if status == _it02.STATUS_BAD_MASK:
                    self._bad_mask(base + pos, int(view[pos + 8]))
                elif have - pos or shrank:
                    self._unfinished_chain(base + pos, have - pos, shrank)
                return
            rest = have - pos
            buf[:rest] = buf[pos:have].copy()
            base += pos
            have = rest

    # -- damage -----------------------------------------------------------------------
    def _warn_truncated(self, offset: int, why: str) -> None:
        warnings.warn(
            TruncatedFileWarning(
                f"truncated {FORMAT_LABEL} file: {why}; returning the complete records "
                "before it", path=self.path, offset=offset,
            ),
            stacklevel=3,
        )

    def _damaged(self, kind: str, message: str, offset: int, count: int = 1) -> None:
        """Raise, or count and (under ``"warn"``) warn, per ``on_error``."""
        if self.on_error == "raise":
            raise CorruptDataError(message, path=self.path, offset=offset)
        self.note_error(kind, count)
        if self.on_error == "warn":
            warnings.warn(CorruptDataWarning(message, path=self.path, offset=offset),
                          stacklevel=3)

    def _bad_mask(self, offset: int, mask: int) -> None:
        self._damaged(
            "bad_mask",
            f"record mask 0x{mask:02x} has a bit for channel position >= {self.n_channels} "
            f"(the header enables {self.n_channels} channels); the records after it cannot "
            "be framed",
            offset,
        )

    def _unfinished_chain(self, offset: int, rest: int, shrank: bool) -> None:
        if shrank:
            self._warn_truncated(offset, "the file shrank while it was read")
        elif self.end_marker_offset is not None:
            self._damaged(
                "chain_overruns_end_marker",
                f"the record chain does not end at the end-of-acquisition marker at byte "
                f"{self.end_marker_offset}: the record here runs into it",
                offset,
            )
        else:
            self._warn_truncated(offset, f"the last {rest} bytes are an incomplete record")


def _to_batch(schema: pa.Schema, with_time: bool, time: np.ndarray | None,
              counts: list[np.ndarray]) -> pa.RecordBatch:
    arrays = ([pa.array(time)] if with_time else []) + [pa.array(c) for c in counts]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _GapFiller:
    """Turns decoded records into every bin from the first to the last (``fill_gaps``).

    Bin indices come from :func:`bindf._kernels._it02.assign_bins`, whose state carries
    across chunks, so batched and whole reads agree. Counts are scattered into large
    zero-initialised output arrays (at most ``capacity`` rows each, so a huge gap costs
    time, never a huge allocation); the nominal times are made when a batch is handed out.
    """

    _KINDS = {
        _it02.BIN_NOT_FINITE: ("time_not_finite", "the record's time is not finite"),
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
        # assign_bins state
        self.have_last = False
        self.last_t = math.nan
        self.last_bin = 0
        # the batch being filled: bins [out_base, out_base + filled)
        self.out: list[np.ndarray] | None = None
        self.out_capacity = 0
        self.out_base = 0
        self.filled = 0
        self.next_bin: int | None = None
        # per-chunk work arrays, reused (see "borrow" in IT02Reader._batches)
        self._bins = np.empty(0, dtype=np.int64)
        self._status = np.empty(0, dtype=np.uint8)
        self._where = np.empty(0, dtype=np.int64)

    def feed(self, chunk: _Chunk) -> Iterator[_Chunk]:
        """Take one chunk of records; yield the batches it completes."""
        times = chunk.time
        assert times is not None
        counts = chunk.counts
        n = len(times)
        if len(self._bins) < n:
            self._bins = np.empty(n, dtype=np.int64)
            self._status = np.empty(n, dtype=np.uint8)
            self._where = np.empty(n, dtype=np.int64)
        bins, status = self._bins[:n], self._status[:n]
        n_bad, self.have_last, self.last_t, self.last_bin = _it02.assign_bins(
            times, self.bin_ns, self.have_last, self.last_t, self.last_bin, bins, status
        )
        if n_bad:
            self._report(status, chunk)
            keep = status == _it02.BIN_OK
            bins = bins[keep]
            counts = [c[keep] for c in counts]
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

    def flush(self) -> Iterator[_Chunk]:
        """Hand out the last, partly filled batch."""
        if self.out is not None and self.filled:
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

    def _report(self, status: np.ndarray, chunk: _Chunk) -> None:
        bad = np.flatnonzero(status)
        codes = [int(status[bad[0]])] if self.reader.on_error == "raise" else list(self._KINDS)
        for code in codes:
            kind, why = self._KINDS[code]
            hits = bad[status[bad] == code]
            if len(hits):
                self.reader._damaged(
                    kind,
                    f"fill_gaps: {why}"
                    + ("" if self.reader.on_error == "raise"
                       else f"; dropped {len(hits)} such record(s) of this chunk"),
                    chunk.offset_of(int(hits[0])),
                    len(hits),
                )


# -- the writer -------------------------------------------------------------------------


def _frame_channels(table: pa.Table) -> list[int]:
    """Channel indices from ``ch{i+1}`` column names, in frame order."""
    return [int(n[2:]) - 1 for n in table.column_names
            if n.startswith("ch") and n[2:].isdigit() and int(n[2:]) >= 1]


def write_it02(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    layout: str | None = None,
    acquisition_end_ns: float | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write an IT02 file from a frame with ``time_ns`` and ``ch{i+1}`` columns.

    Parameters
    ----------
    path:
        Destination. Written atomically: a failed write leaves no partial file.
    frame:
        pandas/polars/Arrow frame (or dict of columns): ``time_ns`` (float64) and one
        ``uint32``-compatible count column ``ch{i+1}`` per channel of the header; counts
        that do not fit ``uint32`` and nulls are refused.
    header:
        The JSON header; its ``channels`` decide which columns are written, in that order.
        bindf's derived keys ``layout`` and ``acquisition_end_ns`` are not written. When
        omitted, the header a bindf reader attached to ``frame`` is reused, else
        ``{"channels": [...]}`` from the ``ch*`` columns in frame order.
    layout:
        ``"sparse"`` (current software): bins in which every channel is zero are left
        out, and the file ends with the mask-0 end marker. ``"dense"``: every row, fixed
        size. By default the header's ``layout`` key (a frame bindf read keeps its
        layout), else ``"sparse"``.
    acquisition_end_ns:
        Sparse only: time of the end marker. By default the header's
        ``acquisition_end_ns`` if it is a number, else the largest ``time_ns`` (device
        time stamps mark the *end* of each bin), else 0. It must not be earlier than any
        ``time_ns``; in the sparse layout times must be finite.
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    table = to_arrow_table(frame)
    header = inherited_header(frame, header)
    if header is None:
        header = {"channels": _frame_channels(table)}
    if layout is None:
        layout = header.get("layout") if header.get("layout") in LAYOUTS else "sparse"
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'dense' or 'sparse', not {layout!r}")
    problem = _channels_problem(header)
    if problem:
        raise ValueError(f"cannot write IT02: header {problem}")
    channels: list[int] = list(header["channels"])
    if layout == "sparse" and len(channels) > MAX_SPARSE_CHANNELS:
        raise ValueError(f"cannot write IT02: the sparse layout holds at most "
                         f"{MAX_SPARSE_CHANNELS} channels, the header has {len(channels)}")
    names = [channel_column(c) for c in channels]
    require_columns(table, ["time_ns", *names], "IT02 intensity tracing")
    extra = [n for n in table.column_names
             if n.startswith("ch") and n[2:].isdigit() and n not in names]
    if extra:
        raise ValueError(f"cannot write IT02: columns {extra} are not channels of the "
                         f"header ({names})")
    preamble = encode_preamble(
        IT02_MAGIC, {k: v for k, v in header.items() if k not in DERIVED_KEYS}
    )
    end = None
    if layout == "sparse":
        time = column_values(table, "time_ns", "<f8")
        if not np.isfinite(time).all():
            raise ValueError("cannot write IT02: time_ns must be finite in the sparse layout")
        last = float(time.max()) if len(time) else None
        end = acquisition_end_ns
        stored = header.get("acquisition_end_ns")
        if end is None and isinstance(stored, (int, float)) and not isinstance(stored, bool):
            end = stored
        end = float(end if end is not None else (last if last is not None else 0.0))
        if not math.isfinite(end) or (last is not None and end < last):
            raise ValueError(f"cannot write IT02: acquisition_end_ns {end} must be finite and "
                             f"not before the last time_ns ({last})")
    elif acquisition_end_ns is not None:
        raise ValueError("acquisition_end_ns is only stored in the sparse layout")

    with atomic_output(path, overwrite=overwrite) as f:
        f.write(preamble)
        for lo in range(0, table.num_rows, WRITE_CHUNK_ROWS):
            part = table.slice(lo, WRITE_CHUNK_ROWS)
            time = column_values(part, "time_ns", "<f8")
            counts = [column_values(part, n, "<u4") for n in names]
            if layout == "dense":
                write_records(f, _encode_dense(time, counts))
            else:  # the encoder's index arrays are ~70 bytes a row: smaller steps
                for i in range(0, len(time), SPARSE_ENCODE_ROWS):
                    step = slice(i, i + SPARSE_ENCODE_ROWS)
                    f.write(memoryview(_encode_sparse(time[step], [c[step] for c in counts])))
        if end is not None:
            f.write(_F64.pack(end) + b"\x00")


def _encode_dense(time: np.ndarray, counts: list[np.ndarray]) -> np.ndarray:
    records = np.empty(len(time), dtype=dense_dtype(len(counts)))
    records["time_ns"] = time
    for k, c in enumerate(counts):
        records[f"c{k}"] = c
    return records


def _encode_sparse(time: np.ndarray, counts: list[np.ndarray]) -> np.ndarray:
    """Sparse records of one slice of rows, all-zero rows left out, as bytes."""
    mask = np.zeros(len(time), dtype=np.uint8)
    for k, c in enumerate(counts):
        mask |= (c != 0).astype(np.uint8) << np.uint8(k)
    keep = mask != 0
    mask = mask[keep]
    time = time[keep]
    sizes = SPARSE_FIXED_BYTES + COUNT_BYTES * _POPCOUNT[mask].astype(np.int64)
    starts = np.cumsum(sizes) - sizes
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    out[starts[:, None] + np.arange(TIME_BYTES)] = time.astype("<f8").view(np.uint8).reshape(-1, 8)
    out[starts + TIME_BYTES] = mask
    for k, c in enumerate(counts):
        has = (mask >> np.uint8(k)) & np.uint8(1) == 1
        before = _POPCOUNT[mask[has] & np.uint8((1 << k) - 1)].astype(np.int64)
        where = starts[has] + SPARSE_FIXED_BYTES + COUNT_BYTES * before
        values = c[keep][has].astype("<u4").view(np.uint8).reshape(-1, 4)
        out[where[:, None] + np.arange(COUNT_BYTES)] = values
    return out
