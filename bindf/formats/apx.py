"""AstroPix binary runs (``.apx``, ``read_apx``) and their writer (``write_apx``).

AstroPix 4 (``readout_uid`` 4000) and AstroPix 3 (3000) runs share the container and
the readout framing; the reader dispatches the hit decoding on the header's
``readout_uid`` (AstroPix 3: :mod:`._apx3_hits`, ``docs/formats/astropix3.md``).

Layout: ``docs/formats/apx.md`` (from the AstroPix collaboration's
``astropix-analysis`` decoder, checked against a real run and the table that decoder
made of it). ``%APXDF | u32 H | JSON header``, then readouts back to back:
``FE DC BA | u32 readout_id | u64 timestamp_ns | u32 L | L payload bytes``. Hits are
8-byte words inside the payloads, found by the state machine of that page and unpacked
after reversing the bit order of every byte.

Division of labour:

* the Cython kernel ``bindf._kernels._apx`` frames readouts and finds hits (the only
  sequential work), carrying the "extra bytes" of a cut hit from one readout to the next
  so that any grouping of readouts gives the same hits;
* the same kernel's ``hit_fields`` turns a chunk's raw hits into the projected columns in
  one pass (bit reversal, fields, Gray decoding, clock rollover, ToT), split over
  ``threads`` (:class:`._apx_hits.HitColumns`); the readout table is numpy;
* with ``threads`` > 1 (the default on a multi-core machine), an eager read of a run in
  a local file or in memory of at least 2 × :data:`._apx_parts.PART_MIN_BYTES` data
  bytes is cut into byte ranges at guessed readout starts, one per thread, each decoded
  whole (read, framing, hits, columns) by its own thread and checked against the
  decoding of the range before it (:mod:`._apx_parts`). A stream of batches (scans,
  chunked reads) from a file larger than :data:`PREFETCH_MIN_BYTES` has a worker thread
  frame and decode chunks k + 1 and k + 2 while chunk k is turned into columns (both
  sides release the GIL), each side with half the threads. ``threads=1`` (or the former
  ``threads=False``) and small files do it all in the caller's thread, since a thread
  per small file costs more than it saves. The output is the same. In a read of many
  files, an intact small run (every readout complete) is framed and its hits found in
  one kernel call straight from its bytes held in memory, and the hits of many runs
  become columns at once (:meth:`ApxReader.small_file_units`).

The file is read in bounded chunks with ``readinto``; a readout is never split between
two decode calls (the unparsed tail of a chunk moves to the front of the buffer). A
declared payload length that runs past the end of the file is a truncation, checked
against the file size before any buffer grows. Memory: the output plus a few MB of
reused scratch (1 MiB chunk buffer, per-hit scratch for one chunk).

Decisions where the spec leaves a choice (the README lists them too):

* **Decoder failures** (places where upstream raises: a payload that is empty or only
  idle/padding bytes, no start byte after the orphans or after dropped bytes, a hit
  shorter than 8 bytes): the readout gets status bit 7, the carried extra bytes are reset
  to none, and the complete hits found *before* the failure point in that readout are
  **kept** (they were framed by the same rules as any other hit; dropping them would lose
  good data without making the output closer to upstream, which produces nothing at all).
  An empty payload is such a failure too (upstream cannot decode it either).
* **Bit 6, bytes left unvisited**: set when rule 3.3 skips bytes that are neither idle,
  padding nor part of a hit to reach the next start byte.
* **decoding_order** is ``uint8`` (as upstream): it saturates at 255 in the (never observed)
  case of a readout with more than 255 hits, so ``decoding_order == 0`` still means
  "first hit of the readout".
* **Bad readout marker** with ``on_error="warn"``/``"skip"``: the reader resynchronises
  on the next ``FE DC BA`` whose declared payload fits in the file, drops the carried
  extra bytes (the byte stream is not continuous across the damage), and counts
  ``note_error("bad_readout_marker")`` once per damaged stretch and
  ``note_error("skipped_bytes", n)``. ``"warn"`` emits one
  :class:`~bindf.errors.CorruptDataWarning` per stretch, naming its offset.
* **A declared length past the end of the file** is a cut (the file's last readout,
  a truncation warning) unless whole readouts follow it (:data:`LENGTH_CHECK_BYTES`
  are looked at, :func:`._apx_parts.plausible_readout`): then the length field is
  damaged, raised under ``"raise"``; ``"warn"``/``"skip"`` skip that readout and read
  on (``note_error("bad_readout_length")`` and its ``skipped_bytes``).
* ``batch_size`` also bounds the number of readouts per decode call, so batched and
  whole decoding can be compared down to one readout per call.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._header import read_preamble
from .._kernels import _apx
from .._lanes import Lanes
from .._params import check_count
from .._warnings import warn as _warn
from ..errors import (
    CorruptDataError,
    CorruptDataWarning,
    UnsupportedReadoutError,
)
from . import _apx3_hits as apx3
from . import _apx_parts
from ._apx_hits import (
    HIT_SIZE,
    STATUS_FLAGS,
    Decoded,
    HitColumns,
    HitDecoder,
)
from ._base import FormatReader, coalesced_batches, grouped_batches, numpy_batch
from ._stream import PREFETCH_AHEAD, BatchStream, StreamDecoder, decode_file, prefetched

MAGIC = b"%APXDF"
READOUT_MARKER = b"\xfe\xdc\xba"
#: marker, readout_id, timestamp (ns since the epoch), payload length
READOUT_HEADER = struct.Struct("<3sIQI")
READOUT_HEADER_SIZE = READOUT_HEADER.size  # 19
#: The same readout header as a numpy record (packed: 19 bytes), for laying out many
#: readouts at once (the writers).
READOUT_DTYPE = np.dtype([("marker", "S3"), ("readout_id", "<u4"), ("timestamp", "<u8"),
                          ("length", "<u4")])
IDLE_BYTE = 0xBC

#: Header ``readout_uid`` of AstroPix 4 runs.
APX4_READOUT_UID = 4000
#: Header ``readout_uid`` of AstroPix 3 runs (hits decoded by :mod:`._apx3_hits`).
APX3_READOUT_UID = 3000
#: readout_uid → chip generation bindf can decode.
SUPPORTED_READOUTS: dict[int, str] = {APX4_READOUT_UID: "AstroPix 4",
                                      APX3_READOUT_UID: "AstroPix 3"}

HITS_SCHEMA = pa.schema(
    [
        pa.field("chip_id", pa.uint8(), nullable=False),
        pa.field("payload", pa.uint8(), nullable=False),
        pa.field("readout_id", pa.uint32(), nullable=False),
        pa.field("timestamp", pa.uint64(), nullable=False),
        pa.field("decoding_order", pa.uint8(), nullable=False),
        pa.field("row", pa.uint8(), nullable=False),
        pa.field("column", pa.uint8(), nullable=False),
        pa.field("ts_neg1", pa.uint8(), nullable=False),
        pa.field("ts_coarse1", pa.uint16(), nullable=False),
        pa.field("ts_fine1", pa.uint8(), nullable=False),
        pa.field("ts_tdc1", pa.uint8(), nullable=False),
        pa.field("ts_neg2", pa.uint8(), nullable=False),
        pa.field("ts_coarse2", pa.uint16(), nullable=False),
        pa.field("ts_fine2", pa.uint8(), nullable=False),
        pa.field("ts_tdc2", pa.uint8(), nullable=False),
        pa.field("ts_dec1", pa.uint32(), nullable=False),
        pa.field("ts_dec2", pa.uint32(), nullable=False),
        pa.field("tot_us", pa.float64(), nullable=False),
    ]
)

READOUTS_SCHEMA = pa.schema(
    [
        pa.field("readout_id", pa.uint32(), nullable=False),
        pa.field("timestamp", pa.uint64(), nullable=False),
        pa.field("payload_length", pa.uint32(), nullable=False),
        pa.field("n_hits", pa.uint32(), nullable=False),
        pa.field("status", pa.uint8(), nullable=False),
        *(pa.field(flag, pa.bool_(), nullable=False) for flag in STATUS_FLAGS),
        pa.field("byte_offset", pa.uint64(), nullable=False),
    ]
)

#: readout_uid → hit table schema (AstroPix 3: see :mod:`._apx3_hits`).
HIT_SCHEMAS: dict[int, pa.Schema] = {APX4_READOUT_UID: HITS_SCHEMA,
                                     APX3_READOUT_UID: apx3.HITS_SCHEMA}
#: readout_uid → readout table schema.
READOUT_SCHEMAS: dict[int, pa.Schema] = {APX4_READOUT_UID: READOUTS_SCHEMA,
                                         APX3_READOUT_UID: apx3.READOUTS_SCHEMA}

LEVELS = ("hits", "readouts")


def resolve_stitch(readout_uid: int, stitch: bool | None) -> bool:
    """Whether hits cut at the end of a readout are completed from the next one.

    AstroPix 3 (3000): ``stitch`` as given, default False (upstream's table loses them).
    AstroPix 4 (4000): always (upstream's AstroPix 4 decoder carries them); an explicit
    ``stitch=False`` is refused rather than silently ignored.
    """
    if stitch is not None and not isinstance(stitch, bool):
        raise TypeError(f"stitch must be True, False or None, not {stitch!r}")
    if readout_uid == APX3_READOUT_UID:
        return bool(stitch)
    if stitch is False:
        raise ValueError("stitch=False is only for AstroPix 3 runs (readout_uid 3000): "
                         "AstroPix 4 readouts are always stitched, as upstream decodes them")
    return True


def new_hit_decoder(readout_uid: int, *, stitch: bool, store_hits: bool,
                    slots: int = 1, threads: int = 1) -> HitDecoder | apx3.Apx3HitDecoder:
    """The hit kernel's wrapper for this chip generation (same ``decode`` interface).
    ``threads``: AstroPix 4 hit finding may split long runs of readouts over threads
    (:func:`._apx_hits.decode_in_parallel`); AstroPix 3 decodes on one."""
    if readout_uid == APX3_READOUT_UID:
        return apx3.Apx3HitDecoder(stitch=stitch, store_hits=store_hits, slots=slots)
    return HitDecoder(store_hits=store_hits, slots=slots, threads=threads)


def new_hit_columns(readout_uid: int, threads: int = 1, lanes: Lanes | None = None) -> HitColumns:
    """Raw hits → hit table columns, for this chip generation (filled by up to ``threads``
    threads, in memory from ``lanes``: see :mod:`bindf._lanes`)."""
    if readout_uid == APX3_READOUT_UID:
        return apx3.Apx3HitColumns(threads=threads, lanes=lanes)
    return HitColumns(threads=threads, lanes=lanes)

#: Default bytes per read. The first reads are smaller (see _FIRST_READ) so that
#: ``head()`` decodes almost nothing; reads then double up to this bound.
DEFAULT_CHUNK_BYTES = 1 << 20
_FIRST_READ = 64 << 10
#: No output row takes fewer input bytes (an AstroPix 3 hit is 5 bytes, an AstroPix 4
#: hit 8, a readout's header 19): ``n_rows`` rows decode at least ``n_rows`` times this.
_MIN_ROW_BYTES = 5
#: Files with fewer data bytes than this are decoded without the prefetch thread:
#: they fit in a couple of reads, and starting a thread (and handing chunks across it)
#: costs more than the overlap gains (measured: the lock waits were the largest cost
#: of reading thousands of 10–30 KB runs).
PREFETCH_MIN_BYTES = 2 * DEFAULT_CHUNK_BYTES
#: Nor are reads of at most this many rows (``head()``, ``n_rows=``): the first reads
#: (64 KiB, then doubling) hold them, and a worker would decode chunks ahead only for
#: them to be thrown away (``pl.scan_apx(big).head(10)``, best of 40 in three rounds:
#: 1.45-1.82 ms with it, 1.10-1.23 without).
PREFETCH_MAX_SKIPPED_ROWS = 1 << 16
#: A readout whose declared length runs past the end of the file is a cut (the file's
#: last readout) unless whole readouts follow it: this many bytes after it are looked
#: at to tell (read once, at most, for the one readout that ends a damaged or cut file).
LENGTH_CHECK_BYTES = 1 << 20
#: Readouts per decode call (also bounded by batch_size): keeps per-call temporaries
#: (a few arrays of 8 bytes per hit) cache-sized.
_READOUTS_PER_CALL = 1 << 15


@dataclass
class _Framed:
    """Complete readouts framed in the current buffer (valid until the next one)."""

    buf: np.ndarray
    header_pos: np.ndarray  # int64, positions in buf
    readout_id: np.ndarray  # uint32
    timestamp: np.ndarray  # uint64
    length: np.ndarray  # uint32
    buf_offset: int  # file offset of buf[0]
    after_gap: bool  # damaged bytes were skipped right before these readouts

    def detached(self) -> _Framed:
        """A copy that does not share the reader's reused buffers (no payload bytes)."""
        return _Framed(np.empty(0, np.uint8), self.header_pos.copy(), self.readout_id.copy(),
                       self.timestamp.copy(), self.length.copy(), self.buf_offset,
                       self.after_gap)


class ApxReader(FormatReader):
    """AstroPix ``.apx`` run: one row per hit (default) or per readout.

    Hit columns (``level="hits"``), in the upstream decoder's order and dtypes
    ---------------------------------------------------------------------------
    chip_id, payload : uint8
    readout_id : uint32, timestamp : uint64 (ns since the epoch, from the DAQ host)
    decoding_order : uint8 (index of the hit in its readout)
    row, column, ts_neg1 : uint8; ts_coarse1 : uint16; ts_fine1, ts_tdc1, ts_neg2 : uint8;
    ts_coarse2 : uint16; ts_fine2, ts_tdc2 : uint8
    ts_dec1, ts_dec2 : uint32 (Gray-decoded clock counts; rollover-corrected)
    tot_us : float64 (time over threshold, µs)

    Readout columns (``level="readouts"``)
    --------------------------------------
    readout_id, timestamp, payload_length (declared L), n_hits, status (uint8 bit word),
    one bool column per status bit: orphans_matched, orphans_dropped, orphans_unused,
    extra_bytes_kept, extra_bytes_invalid, incomplete_hit_dropped, bytes_unvisited,
    decoder_failure; byte_offset (of the readout's marker in the file).

    Options
    -------
    level : "hits" (default) | "readouts"
    chunk_bytes : int
        Upper bound of one read (default 1 MiB); a single larger readout still fits.
    stitch : bool | None
        AstroPix 3 only: complete a hit cut at the end of a readout with the next
        readout's first bytes (default False, as upstream's table). AstroPix 4 readouts
        are always stitched; ``stitch=False`` on an AstroPix 4 run is a ``ValueError``.
    threads : int | None
        Threads for one file (the common ``threads=`` parameter). Above one, an eager
        read of a large run (a local file or bytes) is cut into byte ranges decoded side
        by side (:mod:`._apx_parts`). In a stream of batches from a file larger than
        :data:`PREFETCH_MIN_BYTES`, the next chunks (up to two) are decoded in a worker
        thread while the current one is turned into columns; above two threads, each
        half also splits its AstroPix 4 work (hit finding over readout ranges, columns
        over hit ranges). The output is identical either way. ``threads=False`` still
        works and means one.

    AstroPix 3 runs (``readout_uid`` 3000) have their own columns (chip_id, payload,
    readout_id, wall_timestamp, decoding_order : uint16, column, location, tot_msb,
    tot_lsb, tot_dec, tot_us, chip_timestamp; the readout table names its time
    ``wall_timestamp`` too): see :mod:`._apx3_hits` and the AstroPix 3 format page.

    The header (``readout_uid`` 4000 = AstroPix 4 or 3000 = AstroPix 3) is kept verbatim. A file cut
    inside a readout gives a :class:`~bindf.errors.TruncatedFileWarning` naming the byte
    offset, plus every hit of the complete readouts. A bad readout marker is a
    :class:`~bindf.errors.CorruptDataError` naming the offset, unless ``on_error`` is
    ``"warn"``/``"skip"``: then the reader resynchronises on the next marker.
    Decoding follows the upstream ``astropix-analysis`` decoder hit for hit; readouts
    where upstream would crash are flagged (``decoder_failure``) instead.
    """

    stream_state_ignores_columns = True  # (see FormatReader)

    name: ClassVar[str] = "apx"
    label: ClassVar[str] = "AstroPix .apx"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        level = self.options.pop("level", "hits")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        chunk_bytes = self.options.pop("chunk_bytes", DEFAULT_CHUNK_BYTES)
        check_count("chunk_bytes", chunk_bytes, READOUT_HEADER_SIZE, optional=False)
        stitch = self.options.pop("stitch", None)
        self.refuse_options(self.options)
        self.level = level
        self.chunk_bytes = chunk_bytes
        header, self.data_offset = read_preamble(
            f, magic=MAGIC, file_size=self.source.size, path=self.path, format_label=self.label
        )
        uid = header.get("readout_uid")
        if isinstance(uid, bool) or not isinstance(uid, int) or uid not in SUPPORTED_READOUTS:
            supported = ", ".join(f"{k} ({v})" for k, v in SUPPORTED_READOUTS.items())
            what = "has no readout_uid" if "readout_uid" not in header else f"has readout_uid {uid!r}"
            raise UnsupportedReadoutError(
                f"header {what}; bindf decodes readout_uid {supported}",
                path=self.path, offset=len(MAGIC) + 4,
            )
        self.readout_uid: int = uid
        self.stitch = resolve_stitch(uid, stitch)
        return header

    @property
    def schema(self) -> pa.Schema:
        schemas = HIT_SCHEMAS if self.level == "hits" else READOUT_SCHEMAS
        return schemas[self.readout_uid]

    def _columns(self, unit: tuple[_Framed | None, Any], names: Sequence[str],
                 hit_columns: Any) -> list[np.ndarray]:
        """One decoded chunk → the arrays of the requested columns."""
        framed, decoded = unit
        if framed is None:
            return hit_columns(decoded, names)
        if self.readout_uid == APX3_READOUT_UID:
            return apx3.readout_columns(
                decoded, names, readout_id=framed.readout_id, wall_timestamp=framed.timestamp,
                payload_length=framed.length,
                byte_offset=framed.header_pos.astype(np.uint64) + np.uint64(framed.buf_offset))
        return readout_columns(decoded, framed, names)

    def _column_maker(self, columns: Sequence[str], threads: int = 1,
                      lanes: Lanes | None = None, stream: ApxStream | None = None
                      ) -> Callable[[tuple[_Framed | None, Any]], list[np.ndarray]]:
        """``unit -> arrays`` for decoded chunks: hit columns filled by up to ``threads``
        threads, in memory from ``lanes`` (default: an array per column and chunk).
        ``stream``: the decoder whose chunks this thread converts as soon as each is
        decoded; its hit finding then writes the readout fields of the hits straight
        into their columns' lanes (:meth:`._apx_hits.HitDecoder.write_into`)."""
        hit_columns = new_hit_columns(self.readout_uid, threads, lanes)
        if stream is not None and lanes is not None and isinstance(stream.hits, HitDecoder):
            stream.hits.write_into(lanes, columns)

        def to_arrays(unit: tuple[_Framed | None, Any]) -> list[np.ndarray]:
            return self._columns(unit, columns, hit_columns)

        return to_arrays

    def _converter(self, columns: Sequence[str], schema: pa.Schema
                   ) -> Callable[[tuple[_Framed | None, Any]], pa.RecordBatch]:
        """``unit -> batch`` for decoded chunks, one array per column and chunk."""
        to_arrays = self._column_maker(columns)
        return lambda unit: numpy_batch(to_arrays(unit), schema)

    def _batch_maker(self, columns: Sequence[str], schema: pa.Schema, max_rows: int | None,
                     threads: int = 1, lanes: Lanes | None = None,
                     stream: ApxStream | None = None
                     ) -> Callable[[Iterable[tuple[_Framed | None, Any]]],
                                   Iterator[pa.RecordBatch]]:
        """``units -> batches`` (see :meth:`_column_maker` for the arguments). With
        ``max_rows`` and lanes, the chunks whose columns lie back to back become one
        batch of up to ``max_rows`` rows (:func:`._base.grouped_batches`); with
        ``max_rows`` alone, small chunks (damage cuts a chunk at every gap) are joined
        (:func:`._base.coalesced_batches`); else a batch per chunk. (A read with a row
        limit wants a batch per chunk: it may stop early.)"""
        to_arrays = self._column_maker(columns, threads, lanes, stream)
        if max_rows is None:
            return lambda units: (numpy_batch(to_arrays(unit), schema) for unit in units)
        if lanes is None or not lanes.enabled:
            return lambda units: coalesced_batches(map(to_arrays, units), schema, max_rows)
        return lambda units: grouped_batches(map(to_arrays, units), schema, max_rows)

    # -- decoding ---------------------------------------------------------------------
    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self.schema.field(c) for c in columns])
        per_call = max(1, min(batch_size, _READOUTS_PER_CALL))
        parts = _apx_parts.parts_for(self, n_rows)
        if parts > 1:  # an eager read of a large run: ranges decoded side by side
            # (each range fills its own lanes: one thread per range)
            yield from _apx_parts.batches_in_parts(
                self, parts,
                lambda stream: self._batch_maker(columns, schema, batch_size, 1,
                                                 self.output_lanes(shares=parts), stream),
                per_call)
            return
        prefetch = (self.threads > 1
                    and self.source.size - self.data_offset > PREFETCH_MIN_BYTES
                    and (n_rows is None or n_rows > PREFETCH_MAX_SKIPPED_ROWS))
        # With prefetch the two halves of the work overlap: a worker frames and decodes
        # the next chunks while this thread turns chunk k into columns. The threads are
        # shared between the halves (2 cores: one each).
        decode_threads = max(1, self.threads // 2) if prefetch else self.threads
        stream = self.stream(per_call=per_call, slots=PREFETCH_AHEAD + 1 if prefetch else 1,
                             threads=decode_threads)
        chunks = self._decoded_chunks(stream, counted_here=not prefetch)
        if prefetch:  # (the counts of chunks decoded ahead wait for them to be taken)
            chunks = prefetched(chunks, ahead=PREFETCH_AHEAD, thread_name="bindf-apx",
                                counts=(lambda: stream.errors, self.errors))
        # (without prefetch each chunk is converted here right after its decoding, so
        # the decoder may write into the output columns: see _column_maker)
        to_batches = self._batch_maker(
            columns, schema, batch_size if n_rows is None else None,
            self.threads - decode_threads if prefetch else self.threads,
            self.output_lanes(input_bytes=None if n_rows is None else n_rows * _MIN_ROW_BYTES),
            None if prefetch else stream)
        produced = 0
        try:
            for batch in to_batches(chunks):
                produced += batch.num_rows
                yield batch
                if n_rows is not None and produced >= n_rows:
                    return
        finally:
            chunks.close()

    def small_file_units(self, columns: list[str]) -> tuple[list[bytes], int] | None:
        """The hits of a file below :data:`PREFETCH_MIN_BYTES` as packed records (see
        :data:`PACKED_HIT`): a read of many small runs joins many files' records and
        turns them into columns at once (:meth:`units_to_batch`)."""
        if (self.level != "hits" or self.readout_uid == APX3_READOUT_UID
                or self.source.size - self.data_offset > PREFETCH_MIN_BYTES):
            return None  # AstroPix 3 hits have their own raw form: read file by file
        whole = self._intact_run_units()
        if whole is not None:
            return whole
        units = []
        rows = 0
        for _, decoded in self._decoded_chunks(self.stream(per_call=_READOUTS_PER_CALL)):
            if decoded.n_hits:
                units.append(_packed_hits(decoded))
                rows += decoded.n_hits
        return units, rows

    def _intact_run_units(self) -> tuple[list[bytes], int] | None:
        """:meth:`small_file_units` in one kernel call, for a run whose readouts are all
        intact and end exactly at the end of the file (the usual case): the data bytes
        are read at once (held in memory, see :meth:`Source.held`), then framed and
        their hits decoded, starting with no carried bytes as every file does, by this
        thread's :class:`~bindf._kernels._apx.IntactRunDecoder`. Anything else (a
        truncated or damaged run, a file that shrank) returns ``None``, and the run goes
        through the streaming decoder, which reports it."""
        start, end = self.data_offset, self.source.size
        data = self.source.held_bytes()
        if data is None:
            with self.source.open() as f:
                f.seek(start)
                data = bytes(start) + f.read(end - start)  # positions as in the file
        if len(data) != end:
            return None
        decoder = getattr(_THIS_THREAD, "intact_runs", None)
        if decoder is None:
            decoder = _THIS_THREAD.intact_runs = _apx.IntactRunDecoder()
        packed = decoder.decode(data, start)
        if packed is None:
            return None
        if not packed:
            return [], 0
        return [packed], len(packed) // PACKED_HIT.itemsize

    def units_to_batch(self, units: list[bytes], columns: list[str]) -> pa.RecordBatch:
        schema = pa.schema([self.schema.field(c) for c in columns])
        records = np.frombuffer(units[0] if len(units) == 1 else b"".join(units),
                                dtype=PACKED_HIT)
        # The raw hits as the field kernel takes them (contiguous rows of 8 bytes); the
        # readout fields are copied into their columns from the records as they are.
        # The per-readout arrays (status, readout_hits) make no hit column.
        merged = Decoded(len(records), np.ascontiguousarray(records["hit"]),
                         records["order"], records["readout_id"], records["timestamp"],
                         _NO_READOUTS_U8, _NO_READOUTS_U32)
        return numpy_batch(HitColumns()(merged, columns), schema)

    def _decoded_chunks(
        self, stream: ApxStream, *, counted_here: bool = True
    ) -> Generator[tuple[_Framed | None, Decoded], None, None]:
        """Frame and decode readouts chunk by chunk with ``stream`` (from :meth:`stream`):
        all the sequential work (see :class:`ApxStream`). With ``counted_here`` the
        decoder counts damage straight into :attr:`errors`, so the counts are complete
        as soon as the last chunk is decoded (the metadata of the last batch of a chunked
        read includes them); else it keeps them (a prefetch worker's: see
        :func:`._stream.prefetched`, which hands them on chunk by chunk)."""
        if counted_here:
            stream.errors = self.errors
        yield from decode_file(self.source, stream, first_read=_FIRST_READ,
                               max_read=self.chunk_bytes)

    def batch_stream(self, columns: Sequence[str] | None = None, *,
                     data_end: int | None = None) -> BatchStream:
        names = self.resolve_columns(columns)
        schema = pa.schema([self.schema.field(c) for c in names])
        return BatchStream(self.stream(data_end=data_end), self._converter(names, schema))

    def stream(self, *, per_call: int = _READOUTS_PER_CALL, slots: int = 1,
               data_end: int | None = -1, threads: int | None = None,
               start: int | None = None) -> ApxStream:
        """A resumable decoder of this file's readouts, positioned at the first one (or
        at byte ``start``, as a new decoder: see :mod:`._apx_parts`).

        ``data_end``: where the data ends (default: the file size when opened; ``None``
        for a file that is still growing). ``threads``: for hit finding (default: the
        read's ``threads``)."""
        end = self.source.size if data_end == -1 else data_end
        return ApxStream(self.data_offset if start is None else start, path=self.path,
                         on_error=self.on_error, data_end=end, store_hits=self.level == "hits", per_call=per_call,
                         slots=slots, chunk_bytes=self.chunk_bytes,
                         readout_uid=self.readout_uid, stitch=self.stitch,
                         threads=self.threads if threads is None else threads)


#: One hit of a small run as :meth:`ApxReader.small_file_units` keeps it: the packed
#: record of :class:`~bindf._kernels._apx.IntactRunDecoder` (native byte order).
PACKED_HIT = np.dtype([("hit", np.uint8, (HIT_SIZE,)), ("timestamp", np.uint64),
                       ("readout_id", np.uint32), ("order", np.uint8)])
assert PACKED_HIT.itemsize == _apx.PACKED_HIT_SIZE
#: Each thread's :class:`~bindf._kernels._apx.IntactRunDecoder` (its scratch is reused
#: by the small runs the thread decodes in turn).
_THIS_THREAD = threading.local()
_NO_READOUTS_U8 = np.empty(0, dtype=np.uint8)
_NO_READOUTS_U32 = np.empty(0, dtype=np.uint32)


def _packed_hits(decoded: Decoded) -> bytes:
    """A decoded chunk's hits as :data:`PACKED_HIT` records (the streaming decoder's
    output, for small runs that are not intact)."""
    records = np.empty(decoded.n_hits, dtype=PACKED_HIT)
    records["hit"] = decoded.hits[:decoded.n_hits]
    records["timestamp"] = decoded.hit_timestamp[:decoded.n_hits]
    records["readout_id"] = decoded.hit_readout_id[:decoded.n_hits]
    records["order"] = decoded.hit_order[:decoded.n_hits]
    return records.tobytes()


@dataclass
class _ApxKernelState:
    """What :class:`ApxStream` carries besides bytes (saved by ``checkpoint``)."""

    carry: bytes | None  # the hit decoder's extra bytes (None: none carried)
    after_gap: bool
    resyncing: bool
    gap_start: int
    gap_message: str


class ApxStream(StreamDecoder[tuple[_Framed | None, Decoded]]):
    """Readouts framed and their hits decoded, from a stream of ``.apx`` data bytes.

    Yields ``(None, decoded)`` when only hits are stored, ``(framed, decoded)`` with
    private copies of the framing arrays otherwise (``level="readouts"``). The decoded
    hit arrays rotate through ``slots`` scratch sets, so with ``slots=2`` a consumer may
    still use one chunk while the next is decoded (see :func:`._stream.prefetched`).
    """

    def __init__(self, position: int, *, path: str, on_error: str, data_end: int | None,
                 store_hits: bool, per_call: int, slots: int = 1,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, readout_uid: int = APX4_READOUT_UID,
                 stitch: bool = True, threads: int = 1) -> None:
        capacity = chunk_bytes if data_end is None else min(
            chunk_bytes, max(data_end - position, 1))
        super().__init__(position, path=path, on_error=on_error, data_end=data_end,
                         label="AstroPix", capacity=capacity)
        self.store_hits = store_hits
        self.hits = new_hit_decoder(readout_uid, stitch=stitch, store_hits=store_hits,
                                    slots=slots, threads=threads)
        # No call can frame more readouts than the data holds headers for: a tiny file
        # gets tiny framing arrays (24 bytes per slot; 786 KiB at the default per_call).
        if data_end is not None:
            per_call = min(per_call, (data_end - position) // READOUT_HEADER_SIZE)
        per_call = max(1, per_call)
        self._header_pos = np.empty(per_call, dtype=np.int64)
        # (each call's payload positions, reused: a fresh array per chunk was an
        # allocation above malloc's mmap threshold, faulted in anew every time)
        self._payload_pos = np.empty(per_call, dtype=np.int64)
        self._readout_id = np.empty(per_call, dtype=np.uint32)
        self._timestamp = np.empty(per_call, dtype=np.uint64)
        self._length = np.empty(per_call, dtype=np.uint32)
        self.after_gap = False  # damaged bytes were skipped right before the next readout
        self.resyncing = False  # inside a damaged stretch, looking for the next marker
        self.gap_start = 0
        self.gap_message = ""
        self._shrank = False

    def finish(self, *, shrank: bool = False) -> Iterator[tuple[_Framed | None, Decoded]]:
        self._shrank = shrank
        return super().finish(shrank=shrank)

    def _decode(self, buf: np.ndarray, have: int,
                final: bool) -> Iterator[tuple[_Framed | None, Decoded]]:
        self.need = 0
        while True:
            pos = self._pos
            if self.resyncing:
                found = self._resync(buf, pos, have, final)
                if found is None:  # need more bytes (or the data ends in the gap)
                    if final:
                        self._end_gap(self.gap_start, self._offset + have, None)
                        self._pos = have
                        return
                    self._pos = max(pos, have - (READOUT_HEADER_SIZE - 1))
                    return
                self._pos = found
                self._end_gap(self.gap_start, self._offset + found, self._offset + found)
                self.resyncing = False
                self.after_gap = True
                continue
            n, stop, code = _apx.frame_readouts(
                buf, pos, have, self._header_pos, self._readout_id, self._timestamp,
                self._length)
            self._pos = stop
            if n:
                framed = _Framed(buf, self._header_pos[:n], self._readout_id[:n],
                                 self._timestamp[:n], self._length[:n], self._offset,
                                 self.after_gap)
                if self.after_gap:
                    self.hits.reset()  # the byte stream is not continuous across the gap
                    self.after_gap = False
                payload_pos = np.add(framed.header_pos, READOUT_HEADER_SIZE,
                                     out=self._payload_pos[:n])
                # (the readouts lie back to back: their payloads are the bytes framed
                # less the headers)
                decoded = self.hits.decode(buf, payload_pos, framed.length, framed.readout_id,
                                           framed.timestamp,
                                           stop - pos - n * READOUT_HEADER_SIZE)
                yield (None if self.store_hits else framed.detached()), decoded
            if code == _apx.FRAME_FULL:
                continue
            if code == _apx.FRAME_BAD_MARKER:
                if have - stop < len(READOUT_MARKER) and not final:
                    return  # report the damage with all three bytes, whatever the reads
                offset = self._offset + stop
                found_bytes = bytes(buf[stop : min(stop + 3, have)])
                message = (f"bad readout marker {found_bytes.hex(' ')} "
                           f"(expected {READOUT_MARKER.hex(' ')})")
                if self.on_error == "raise":
                    raise CorruptDataError(message, path=self.path, offset=offset)
                self.resyncing = True
                self.gap_start = offset
                self.gap_message = message
                self._pos = stop + 1
                continue
            if code == _apx.FRAME_INCOMPLETE:
                need = _pending_size(buf, stop, have)
                past_end = (need is not None and self.data_end is not None
                            and self._offset + stop + need > self.data_end)
                if need is not None and (past_end or final or self.data_end is None):
                    # The DAQ writes readout after readout: whole readouts after one
                    # that cannot complete mean that its length field is damaged (a
                    # cut file ends inside its last readout, with nothing after it).
                    look = None if self.data_end is None else min(
                        self.data_end - self._offset - stop, LENGTH_CHECK_BYTES)
                    if past_end and not final and look is not None and have - stop < look:
                        self.need = look  # read the bytes that tell, then decide
                        return
                    ends_data = final or self._offset + have == self.data_end
                    after = _apx_parts.plausible_readout(buf, stop + 1, have,
                                                         ends_data=ends_data)
                    if after >= 0:
                        self._damaged_length(stop, need, after)
                        continue
                if past_end:
                    assert need is not None and self.data_end is not None
                    self._warn_cut(self._offset + stop, need, self.data_end)
                    self.ended = True
                elif final:
                    self._warn_cut(self._offset + stop, need, self._offset + have,
                                   self._shrank)
                else:
                    self.need = need or 0
            return

    def _damaged_length(self, stop: int, need: int, after: int) -> None:
        """The readout at ``buf[stop]`` declares more bytes than come before whole
        readouts at ``buf[after]``: damage (raise, or skip to ``after``), not a cut."""
        offset, resumed = self._offset + stop, self._offset + after
        message = (f"the readout there declares {need - READOUT_HEADER_SIZE} payload bytes, "
                   f"but whole readouts follow at byte {resumed} (a damaged length field)")
        if self.on_error == "raise":
            raise CorruptDataError(message, path=self.path, offset=offset)
        self.gap_message = message
        self._end_gap(offset, resumed, resumed, kind="bad_readout_length")
        self.after_gap = True
        self._pos = after

    def _resync(self, buf: np.ndarray, pos: int, have: int, final: bool) -> int | None:
        """Position of the next plausible readout at or after ``pos`` (None: not here)."""
        while True:
            p = _apx.find_marker(buf, pos, have)
            if p < 0:
                return None
            need = _pending_size(buf, p, have)
            if need is None:
                return p if final else None  # header cut by the buffer: decide after a read
            if self.data_end is None or self._offset + p + need <= self.data_end:
                return p
            pos = p + 1  # a marker whose payload cannot fit is payload data, not a readout

    def _end_gap(self, start: int, end: int, resumed_at: int | None,
                 kind: str = "bad_readout_marker") -> None:
        skipped = end - start
        self.note_error(kind)
        self.note_error("skipped_bytes", skipped)
        if self.on_error == "warn":
            then = (f"resumed at the next readout marker (byte {resumed_at})"
                    if resumed_at is not None else "no readout follows")
            _warn(
                CorruptDataWarning(
                    f"{self.gap_message}: skipped {skipped} damaged bytes; {then}",
                    path=self.path, offset=start,
                ),
            )

    def _warn_cut(self, offset: int, need: int | None, end: int, shrank: bool = False) -> None:
        if shrank:
            why = "the file shrank while it was read"
        elif need is None:
            why = f"the file ends inside a readout header ({end - offset} of {READOUT_HEADER_SIZE} bytes)"
        else:
            why = (f"the readout there declares {need - READOUT_HEADER_SIZE} payload bytes "
                   f"but only {max(end - offset - READOUT_HEADER_SIZE, 0)} follow")
        self.warn_truncated(offset, why, "returning the hits of the complete readouts")

    def _at_end(self, pending: int, shrank: bool) -> None:
        if shrank:
            self._warn_cut(self.position, None, self.read_position, True)

    def _kernel_state(self) -> _ApxKernelState:
        # Where a damaged stretch began and why only matter inside it: out of one, the
        # state is the same whatever damage came before (see _apx_parts, which compares
        # states).
        if not self.resyncing:
            return _ApxKernelState(self.hits.carried, self.after_gap, False, 0, "")
        return _ApxKernelState(self.hits.carried, self.after_gap, True,
                               self.gap_start, self.gap_message)

    def _restore_kernel(self, state: _ApxKernelState) -> None:
        if state.carry is None:
            self.hits.reset()
        else:
            self.hits.carry[: len(state.carry)] = np.frombuffer(state.carry, np.uint8)
            self.hits.carry_len = len(state.carry)
        self.after_gap = state.after_gap
        self.resyncing = state.resyncing
        self.gap_start = state.gap_start
        self.gap_message = state.gap_message


def _pending_size(buf: np.ndarray, pos: int, have: int) -> int | None:
    """Total bytes of the readout starting at ``pos``, if its header is in the buffer."""
    if have - pos < READOUT_HEADER_SIZE:
        return None
    (length,) = struct.unpack_from("<I", buf, pos + 15)
    return READOUT_HEADER_SIZE + length


def readout_columns(decoded: Decoded, framed: _Framed, columns: Sequence[str]) -> list[np.ndarray]:
    """The requested readout-table columns for one chunk (``framed`` must be detached)."""
    out = []
    for name in columns:
        if name == "readout_id":
            out.append(framed.readout_id)
        elif name == "timestamp":
            out.append(framed.timestamp)
        elif name == "payload_length":
            out.append(framed.length)
        elif name == "n_hits":
            out.append(decoded.readout_hits)
        elif name == "status":
            out.append(decoded.status)
        elif name == "byte_offset":
            out.append(framed.header_pos.astype(np.uint64) + np.uint64(framed.buf_offset))
        else:
            bit = STATUS_FLAGS.index(name)
            out.append((decoded.status & np.uint8(1 << bit)) != 0)
    return out


def __getattr__(name: str) -> Any:
    # ``bindf.formats.apx.write_apx`` still works; the writer lives in its own module.
    if name == "write_apx":
        from ._apx_writer import write_apx

        return write_apx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
