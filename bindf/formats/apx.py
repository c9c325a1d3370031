"""AstroPix binary runs (``.apx``, ``read_apx``) and their writer (``write_apx``).

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
* everything else is vectorised numpy on whole chunks (:mod:`._apx_hits`): bit reversal
  by lookup table, field extraction on the big-endian word (as two 32-bit halves), Gray
  decoding by XOR-shifts, clock rollover, ToT. Only the projected columns are computed;
* by default a worker thread frames and decodes chunk k + 1 while chunk k is turned into
  columns (both sides release the GIL); ``threads=False`` does it all in the caller's
  thread. The output is the same.

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
* ``batch_size`` also bounds the number of readouts per decode call, so batched and
  whole decoding can be compared down to one readout per call.
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, TypeVar

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._header import read_preamble
from .._kernels import _apx
from .._source import read_into
from ..errors import (
    CorruptDataError,
    CorruptDataWarning,
    TruncatedFileWarning,
    UnsupportedReadoutError,
)
from ._apx_hits import (
    HIT_SIZE,
    STATUS_FLAGS,
    Decoded,
    HitColumns,
    HitDecoder,
    encode_hits,
)
from ._base import FormatReader

MAGIC = b"%APXDF"
READOUT_MARKER = b"\xfe\xdc\xba"
#: marker, readout_id, timestamp (ns since the epoch), payload length
READOUT_HEADER = struct.Struct("<3sIQI")
READOUT_HEADER_SIZE = READOUT_HEADER.size  # 19
IDLE_BYTE = 0xBC

#: readout_uid → chip generation bindf can decode.
SUPPORTED_READOUTS: dict[int, str] = {4000: "AstroPix 4"}

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

LEVELS = ("hits", "readouts")

#: Default bytes per read. The first reads are smaller (see _FIRST_READ) so that
#: ``head()`` decodes almost nothing; reads then double up to this bound.
DEFAULT_CHUNK_BYTES = 1 << 20
_FIRST_READ = 64 << 10
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
    threads : bool
        Decode the next chunk in a worker thread while the current one is turned into
        columns (default True; the output is identical either way).

    The header (``readout_uid`` must be 4000 = AstroPix 4) is kept verbatim. A file cut
    inside a readout gives a :class:`~bindf.errors.TruncatedFileWarning` naming the byte
    offset, plus every hit of the complete readouts. A bad readout marker is a
    :class:`~bindf.errors.CorruptDataError` naming the offset, unless ``on_error`` is
    ``"warn"``/``"skip"``: then the reader resynchronises on the next marker.
    Decoding follows the upstream ``astropix-analysis`` decoder hit for hit; readouts
    where upstream would crash are flagged (``decoder_failure``) instead.
    """

    name: ClassVar[str] = "apx"
    label: ClassVar[str] = "AstroPix .apx"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        level = self.options.pop("level", "hits")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        chunk_bytes = int(self.options.pop("chunk_bytes", DEFAULT_CHUNK_BYTES))
        self.threads = bool(self.options.pop("threads", True))
        if chunk_bytes < READOUT_HEADER_SIZE:
            raise ValueError(f"chunk_bytes must be at least {READOUT_HEADER_SIZE}")
        if self.options:
            raise TypeError(f"unexpected option(s) for read_apx: {sorted(self.options)}")
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
        return header

    @property
    def schema(self) -> pa.Schema:
        return HITS_SCHEMA if self.level == "hits" else READOUTS_SCHEMA

    # -- decoding ---------------------------------------------------------------------
    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self.schema.field(c) for c in columns])
        per_call = max(1, min(batch_size, _READOUTS_PER_CALL))
        chunks = self._decoded_chunks(per_call, slots=2 if self.threads else 1)
        if self.threads:
            chunks = _prefetched(chunks)
        hit_columns = HitColumns()
        produced = 0
        try:
            for framed, decoded in chunks:
                if framed is None:
                    arrays = hit_columns(decoded, columns)
                else:
                    arrays = readout_columns(decoded, framed, columns)
                batch = pa.RecordBatch.from_arrays([pa.array(a) for a in arrays], schema=schema)
                produced += batch.num_rows
                yield batch
                if n_rows is not None and produced >= n_rows:
                    return
        finally:
            chunks.close()

    def _decoded_chunks(
        self, per_call: int, slots: int
    ) -> Generator[tuple[_Framed | None, Decoded], None, None]:
        """Frame and decode readouts chunk by chunk: all the sequential work.

        Yields ``(None, decoded)`` for ``level="hits"`` and ``(framed, decoded)`` with
        private copies of the framing arrays for ``level="readouts"``. The decoded hit
        arrays rotate through ``slots`` scratch sets, so with ``slots=2`` a consumer may
        still use one chunk while the next is decoded (see :func:`_prefetched`).
        """
        hits = self.level == "hits"
        decoder = HitDecoder(store_hits=hits, slots=slots)
        for framed in self._iter_framed(per_call):
            if framed.after_gap:
                decoder.reset()
            decoded = decoder.decode(framed.buf, framed.header_pos + READOUT_HEADER_SIZE,
                                     framed.length, framed.readout_id, framed.timestamp)
            yield (None if hits else framed.detached()), decoded

    def _iter_framed(self, per_call: int) -> Iterator[_Framed]:
        """Frame the file's readouts chunk by chunk (the buffer is reused between yields)."""
        size = self.source.size
        end_of_data = size  # bytes appended after opening are ignored
        cap = min(self.chunk_bytes, max(end_of_data - self.data_offset, 1))
        buf = np.empty(cap, dtype=np.uint8)
        # No call can frame more readouts than the file holds headers for: a tiny file
        # gets tiny framing arrays (24 bytes per slot; 786 KiB at the default per_call).
        per_call = max(1, min(per_call, (end_of_data - self.data_offset) // READOUT_HEADER_SIZE))
        header_pos = np.empty(per_call, dtype=np.int64)
        readout_id = np.empty(per_call, dtype=np.uint32)
        timestamp = np.empty(per_call, dtype=np.uint64)
        length = np.empty(per_call, dtype=np.uint32)
        buf_offset = self.data_offset  # file offset of buf[0]
        have = 0  # valid bytes in buf
        pos = 0  # parse position in buf
        read_size = _FIRST_READ
        after_gap = False
        resyncing = False  # inside a damaged stretch, looking for the next marker
        gap_start = 0
        with self.source.open() as f:
            f.seek(self.data_offset)
            eof = self.data_offset >= end_of_data
            shrank = False
            while True:
                if resyncing:
                    found = self._resync(buf, pos, have, buf_offset, eof)
                    if found is None:  # need more bytes (or the file ends in the gap)
                        if eof:
                            self._end_gap(gap_start, end_of_data, None)
                            return
                        keep = max(pos, have - (READOUT_HEADER_SIZE - 1))
                        pos = keep
                    else:
                        pos = found
                        self._end_gap(gap_start, buf_offset + pos, buf_offset + pos)
                        resyncing = False
                        after_gap = True
                        continue
                else:
                    n, stop, code = _apx.frame_readouts(
                        buf, pos, have, header_pos, readout_id, timestamp, length
                    )
                    if n:
                        yield _Framed(buf, header_pos[:n], readout_id[:n], timestamp[:n],
                                      length[:n], buf_offset, after_gap)
                        after_gap = False
                    pos = stop
                    if code == _apx.FRAME_FULL:
                        continue
                    if code == _apx.FRAME_BAD_MARKER:
                        offset = buf_offset + pos
                        found_bytes = bytes(buf[pos : min(pos + 3, have)])
                        message = (f"bad readout marker {found_bytes.hex(' ')} "
                                   f"(expected {READOUT_MARKER.hex(' ')})")
                        if self.on_error == "raise":
                            raise CorruptDataError(message, path=self.path, offset=offset)
                        resyncing = True
                        gap_start = offset
                        self._gap_message = message
                        pos += 1
                        continue
                    if code == _apx.FRAME_INCOMPLETE:
                        need = self._pending_size(buf, pos, have)
                        if need is not None and buf_offset + pos + need > end_of_data:
                            self._warn_truncated(buf_offset + pos, need, end_of_data)
                            return
                        if eof:
                            self._warn_truncated(buf_offset + pos, need, end_of_data, shrank)
                            return
                        if need is not None and need > buf.size:
                            buf = _grown(buf, pos, have, need)
                            have -= pos
                            buf_offset += pos
                            pos = 0
                    elif eof:  # FRAME_END with nothing more to read
                        if shrank:
                            self._warn_truncated(buf_offset + pos, None, end_of_data, True)
                        return
                # read more: move the unparsed tail to the front, then fill
                if pos:
                    tail = have - pos
                    buf[:tail] = buf[pos:have]
                    buf_offset += pos
                    have, pos = tail, 0
                want = min(buf.size - have, read_size, end_of_data - (buf_offset + have))
                got = read_into(f, buf[have : have + want]) if want > 0 else 0
                have += got
                read_size = min(read_size * 2, self.chunk_bytes)
                if buf_offset + have >= end_of_data:
                    eof = True
                elif got < want:
                    eof = shrank = True

    def _pending_size(self, buf: np.ndarray, pos: int, have: int) -> int | None:
        """Total bytes of the readout starting at ``pos``, if its header is in the buffer."""
        if have - pos < READOUT_HEADER_SIZE:
            return None
        (length,) = struct.unpack_from("<I", buf, pos + 15)
        return READOUT_HEADER_SIZE + length

    def _resync(self, buf: np.ndarray, pos: int, have: int, buf_offset: int,
                eof: bool) -> int | None:
        """Position of the next plausible readout at or after ``pos`` (None: not here)."""
        while True:
            p = _apx.find_marker(buf, pos, have)
            if p < 0:
                return None
            need = self._pending_size(buf, p, have)
            if need is None:
                return p if eof else None  # header cut by the buffer: decide after a read
            if buf_offset + p + need <= self.source.size:
                return p
            pos = p + 1  # a marker whose payload cannot fit is payload data, not a readout

    def _end_gap(self, start: int, end: int, resumed_at: int | None) -> None:
        skipped = end - start
        self.note_error("bad_readout_marker")
        self.note_error("skipped_bytes", skipped)
        if self.on_error == "warn":
            then = (f"resumed at the next readout marker (byte {resumed_at})"
                    if resumed_at is not None else "no readout follows")
            warnings.warn(
                CorruptDataWarning(
                    f"{self._gap_message}: skipped {skipped} damaged bytes; {then}",
                    path=self.path, offset=start,
                ),
                stacklevel=4,
            )

    def _warn_truncated(self, offset: int, need: int | None, end: int, shrank: bool = False) -> None:
        if shrank:
            why = "the file shrank while it was read"
        elif need is None:
            why = f"the file ends inside a readout header ({end - offset} of {READOUT_HEADER_SIZE} bytes)"
        else:
            why = (f"the readout there declares {need - READOUT_HEADER_SIZE} payload bytes "
                   f"but only {max(end - offset - READOUT_HEADER_SIZE, 0)} follow")
        warnings.warn(
            TruncatedFileWarning(
                f"truncated AstroPix file: {why}; returning the hits of the complete readouts",
                path=self.path, offset=offset,
            ),
            stacklevel=4,
        )


def _grown(buf: np.ndarray, pos: int, have: int, need: int) -> np.ndarray:
    """A buffer of at least ``need`` bytes holding ``buf[pos:have]`` at its start."""
    new = np.empty(need, dtype=np.uint8)
    new[: have - pos] = buf[pos:have]
    return new


_DONE = object()
T = TypeVar("T")


def _prefetched(items: Generator[T, None, None]) -> Generator[T, None, None]:
    """Advance ``items`` one step ahead in a worker thread.

    The framing and hit kernels release the GIL, and so do numpy's loops: decoding chunk
    k + 1 overlaps with turning chunk k into columns. Exceptions and warnings raised by
    ``items`` surface here, in order. Closing this generator waits for the worker and
    closes ``items`` (which closes the file).
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bindf-apx")
    try:
        pending = pool.submit(next, items, _DONE)
        while True:
            item = pending.result()
            if item is _DONE:
                return
            pending = pool.submit(next, items, _DONE)
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        items.close()


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


# -- writer ----------------------------------------------------------------------------
_REQUIRED_WRITE = ("readout_id", "timestamp", "chip_id", "row", "column", "ts_neg1", "ts_tdc1",
                   "ts_neg2", "ts_tdc2")
_WRITE_BLOCK_READOUTS = 1 << 16


def write_apx(
    path: str | Any,
    hits: Any,
    header: Mapping[str, Any] | None = None,
    *,
    leading_idle: int = 2,
    idle_between: int | Sequence[int] | np.ndarray = 0,
    trailing_idle: int = 6,
    overwrite: bool = True,
) -> None:
    """Write hits as an AstroPix 4 ``.apx`` file that ``read_apx`` decodes back exactly.

    Parameters
    ----------
    path:
        Destination; written atomically (a temporary file renamed into place).
    hits:
        pandas/polars frame, Arrow table or mapping of arrays with the hit fields
        ``chip_id, row, column, ts_neg1, ts_coarse1, ts_fine1, ts_tdc1, ts_neg2,
        ts_coarse2, ts_fine2, ts_tdc2`` plus ``readout_id`` and ``timestamp``.
        ``payload`` is optional (it must be 7: only then is the first byte a start byte).
        ``ts_coarseN``/``ts_fineN`` may be replaced by ``ts_decN`` (Gray-encoded back).
        ``decoding_order``, ``tot_us`` and other columns are ignored (they are derived).
        Consecutive rows with the same ``readout_id`` form one readout, in row order;
        they must share one ``timestamp``.
    header:
        Run metadata (JSON-able). ``readout_uid`` is added as 4000 when missing; any
        other value is refused.
    leading_idle, idle_between, trailing_idle:
        Idle bytes (``0xBC``) at the start of each payload, after each hit that another
        hit of the same readout follows (an int, or one value per hit), and at the end.
        ``trailing_idle`` must be ≥ 1: the decoder treats a hit that ends exactly at the
        end of a payload as a cut hit (the upstream ``c + 8 >= n`` rule), and the writer
        never produces trailing ``0xFF`` padding (the DAQ strips it).
    overwrite:
        Replace an existing file (default) or raise ``FileExistsError``.
    """
    columns = _hit_arrays(hits)
    n = len(columns["readout_id"])
    meta = dict(header or {})
    uid = meta.setdefault("readout_uid", 4000)
    if type(uid) is not int or uid not in SUPPORTED_READOUTS:
        raise ValueError(f"write_apx writes AstroPix 4 files (readout_uid 4000), not {uid!r}")
    if "readout_uid" != next(iter(meta)):
        meta = {"readout_uid": uid, **{k: v for k, v in meta.items() if k != "readout_uid"}}
    header_bytes = json.dumps(meta, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if leading_idle < 0 or trailing_idle < 1:
        raise ValueError("leading_idle must be >= 0 and trailing_idle >= 1 (see the docstring)")
    gaps = np.broadcast_to(np.asarray(idle_between, dtype=np.int64), (n,))
    if n and gaps.min() < 0:
        raise ValueError("idle_between must be >= 0")

    rid, ts = columns["readout_id"], columns["timestamp"]
    new_readout = np.empty(n, dtype=bool)
    new_readout[:1] = True
    np.not_equal(rid[1:], rid[:-1], out=new_readout[1:])
    starts = np.flatnonzero(new_readout)
    ends = np.append(starts[1:], n)
    differs = ts != np.repeat(ts[starts], ends - starts)
    if differs.any():
        raise ValueError(f"hit {int(np.flatnonzero(differs)[0])}: hits of one readout must "
                         "share its timestamp")
    del new_readout, differs

    # Block by block (whole readouts), so that the uint64 work arrays stay small; any
    # error discards the temporary file.
    with atomic_output(path, overwrite=overwrite) as f:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(header_bytes)))
        f.write(header_bytes)
        for first in range(0, len(starts), _WRITE_BLOCK_READOUTS):
            block_starts = starts[first : first + _WRITE_BLOCK_READOUTS]
            block_ends = ends[first : first + _WRITE_BLOCK_READOUTS]
            h0, h1 = int(block_starts[0]), int(block_ends[-1])
            raw = encode_hits({name: values[h0:h1] for name, values in columns.items()},
                              first_index=h0)
            f.write(_readout_block(raw, rid[block_starts], ts[block_starts], gaps[h0:h1],
                                   block_starts - h0, block_ends - h0,
                                   leading_idle, trailing_idle).data)


def _readout_block(raw: np.ndarray, readout_id: np.ndarray, timestamp: np.ndarray,
                   gaps: np.ndarray, starts: np.ndarray, ends: np.ndarray, leading: int,
                   trailing: int) -> np.ndarray:
    """The bytes of readouts holding hits ``raw[starts[i]:ends[i]]``, vectorised."""
    n = len(raw)
    # idle bytes before each hit: leading for the first of a readout, else the gap after
    # the previous hit
    before = np.empty(n, dtype=np.int64)
    before[1:] = gaps[: n - 1]
    before[starts] = leading
    step = before + HIT_SIZE
    cum = np.cumsum(step)
    run_end_cum = cum[ends - 1]
    run_start_cum = run_end_cum - np.add.reduceat(step, starts)
    payload_len = run_end_cum - run_start_cum + trailing
    if np.any(payload_len > 0xFFFFFFFF):
        raise ValueError("a readout payload would exceed 4 GiB")
    record = READOUT_HEADER_SIZE + payload_len
    record_start = np.cumsum(record) - record
    out = np.full(int(record.sum()), IDLE_BYTE, dtype=np.uint8)

    head = np.empty(len(starts), dtype=np.dtype(
        [("marker", "S3"), ("readout_id", "<u4"), ("timestamp", "<u8"), ("length", "<u4")]))
    head["marker"] = READOUT_MARKER
    head["readout_id"] = readout_id
    head["timestamp"] = timestamp
    head["length"] = payload_len
    out[record_start[:, None] + np.arange(READOUT_HEADER_SIZE)] = head.view(np.uint8).reshape(
        -1, READOUT_HEADER_SIZE)

    run = np.repeat(np.arange(len(starts)), ends - starts)
    hit_pos = record_start[run] + READOUT_HEADER_SIZE + (cum - run_start_cum[run]) - HIT_SIZE
    out[hit_pos[:, None] + np.arange(HIT_SIZE)] = raw
    return out


def _hit_arrays(hits: Any) -> dict[str, np.ndarray]:
    """Column name → numpy array, from pandas/polars/Arrow/mapping input."""
    if isinstance(hits, (pa.Table, pa.RecordBatch)):
        names = hits.schema.names
        get = lambda c: hits.column(c).to_numpy()  # noqa: E731
    elif isinstance(hits, Mapping):
        names = list(hits)
        get = lambda c: np.asarray(hits[c])  # noqa: E731
    elif hasattr(hits, "columns") and hasattr(hits, "__getitem__"):  # pandas / polars
        names = list(hits.columns)
        get = lambda c: np.asarray(hits[c].to_numpy())  # noqa: E731
    else:
        raise TypeError(f"hits must be a DataFrame, Arrow table or mapping, not {type(hits).__name__}")
    out: dict[str, np.ndarray] = {}
    missing = [c for c in _REQUIRED_WRITE if c not in names]
    for k in ("1", "2"):
        if f"ts_coarse{k}" in names and f"ts_fine{k}" in names:
            continue
        if f"ts_dec{k}" not in names:
            missing.append(f"ts_coarse{k}/ts_fine{k} (or ts_dec{k})")
    if missing:
        raise ValueError(f"write_apx: missing hit column(s) {missing}")
    for name in (*_REQUIRED_WRITE, "payload", "ts_coarse1", "ts_fine1", "ts_coarse2",
                 "ts_fine2", "ts_dec1", "ts_dec2"):
        if name in names:
            values = get(name)
            if values.dtype.kind not in "iu":
                raise ValueError(f"write_apx: column {name!r} must be integer (without "
                                 f"missing values), not {values.dtype}")
            out[name] = values
    if len({len(v) for v in out.values()}) > 1:
        raise ValueError("write_apx: columns have different lengths")
    if out["timestamp"].size and out["timestamp"].min() < 0:
        raise ValueError("write_apx: column 'timestamp' has negative values")
    return out
