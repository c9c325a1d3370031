"""One resumable stream core for formats that must be decoded from the start.

AstroPix runs, A-STEP frames, sparse IT02 files and legacy AstroPix logs have no fixed
record size: where a record starts is only known once the one before it was decoded.
Their readers all do the same thing, written here once (and so does a followed file of
fixed-size records, :class:`FixedRecordStream`, which only carries a cut record):

1. read a chunk of bytes after the ones already held;
2. decode every complete unit (readout, record, line) in the held bytes;
3. carry the undecoded tail, and the decoder's own state (AstroPix "extra bytes", an
   open output batch …), over to the next chunk;
4. at the end of the data, report an incomplete tail as a truncation.

:class:`StreamDecoder` is steps 2–4 as an *object*: its state (file position, carried
bytes, kernel state, skipped damage) lives in attributes, never in the local variables
of a generator, so a caller can hold it between reads. That is what live following of a
growing file needs: decode what exists, keep the decoder, and later feed it only the
bytes that were appended since.

Two ways to drive one:

* :meth:`StreamDecoder.feed` takes bytes from anywhere and returns the units they
  completed (plus any rows the decoder was still buffering); :meth:`StreamDecoder.finish`
  says no more bytes will come. ``decoder.position`` is the file offset of the first byte
  not yet decoded, ``decoder.read_position`` the offset of the next byte to feed.
* :func:`decode_file` reads a file with ``readinto`` straight into the decoder's buffer
  (no copy) and yields what the decoder produces: the readers use it.

:meth:`StreamDecoder.checkpoint` gives a :class:`StreamState` snapshot (position,
carried bytes, a copy of the kernel state, error counts) that :meth:`~StreamDecoder.restore`
puts back into a decoder built with the same options.
"""

from __future__ import annotations

import abc
import contextvars
import copy
import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Generic, TypeVar

import numpy as np

from .._source import Source, read_into
from .._threads import Lane, settle
from .._warnings import WarningSink
from .._warnings import warn as _warn
from ..errors import CorruptDataError, CorruptDataWarning, TruncatedFileWarning
from ._base import ON_ERROR_CHOICES

T = TypeVar("T")
_DONE = object()


@dataclass
class StreamState:
    """A saved :class:`StreamDecoder`: enough to resume decoding later.

    ``position`` is the file offset of the first undecoded byte, ``carry`` the bytes from
    there on that were already read (an incomplete unit), ``kernel`` the format's own
    state (a deep copy; opaque to callers), ``errors`` the damage skipped so far and
    ``ended`` whether the data declared its own end (nothing after it is decoded).
    """

    position: int
    carry: bytes
    kernel: Any
    errors: dict[str, int] = field(default_factory=dict)
    ended: bool = False

    @property
    def read_position(self) -> int:
        """File offset of the next byte to feed."""
        return self.position + len(self.carry)


class StreamDecoder(abc.ABC, Generic[T]):
    """Decodes a byte stream chunk by chunk, carrying its tail and state across chunks.

    Subclasses implement :meth:`_decode` (and, when they have state beyond the carried
    bytes, :meth:`_kernel_state`/:meth:`_restore_kernel`, :meth:`_drain`, :meth:`_at_end`).

    Parameters
    ----------
    position:
        File offset of the first byte that will be fed (where the records begin).
    path:
        Named in errors and warnings.
    on_error:
        ``"raise"``, ``"warn"`` or ``"skip"`` (see :meth:`damaged`).
    data_end:
        File offset where the data ends, when known (a file read as it was when opened).
        Decoders use it to call a declared length that runs past it a truncation without
        waiting for bytes; ``None`` (a growing file) means "more may come".
    label:
        Human name of the format, for messages.
    """

    def __init__(self, position: int, *, path: str, on_error: str = "raise",
                 data_end: int | None = None, label: str = "file",
                 capacity: int = 64 << 10) -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {on_error!r}")
        self.path = path
        self.on_error = on_error
        self.data_end = data_end
        self.label = label
        #: Damage skipped so far under on_error="warn"/"skip": {"kind": count}.
        self.errors: dict[str, int] = {}
        #: The data declared its own end (or decoding cannot go on): feed nothing more.
        self.ended = False
        #: Truncation already reported (finish() says nothing more about the tail).
        self.truncation_reported = False
        #: Bytes from ``position`` that must be held before decoding can progress (a
        #: readout longer than the buffer): :meth:`space` grows the buffer to fit.
        self.need = 0
        self._buf = np.empty(max(capacity, 1), dtype=np.uint8)
        self._offset = position  # file offset of _buf[0]
        self._have = 0  # valid bytes in _buf
        self._pos = 0  # bytes of _buf already decoded

    # -- positions ----------------------------------------------------------------------
    @property
    def position(self) -> int:
        """File offset of the first byte not yet decoded."""
        return self._offset + self._pos

    @property
    def read_position(self) -> int:
        """File offset of the next byte to feed."""
        return self._offset + self._have

    @property
    def pending(self) -> int:
        """Bytes held but not decoded yet (an incomplete unit)."""
        return self._have - self._pos

    # -- feeding --------------------------------------------------------------------------
    def space(self, n: int) -> np.ndarray:
        """A writable view of ``n`` bytes right after the held ones, for ``readinto``.

        Moves the undecoded tail to the front of the buffer first; grows the buffer when
        the tail plus ``n`` (or :attr:`need`) does not fit. Fill it, then :meth:`commit`.
        """
        if self._pos:
            tail = self._have - self._pos
            self._buf[:tail] = self._buf[self._pos:self._have]
            self._offset += self._pos
            self._have, self._pos = tail, 0
        size = max(self._have + n, self.need)
        if size > len(self._buf):
            grown = np.empty(max(size, min(2 * len(self._buf), size + (64 << 20))),
                             dtype=np.uint8)
            grown[: self._have] = self._buf[: self._have]
            self._buf = grown
        return self._buf[self._have:self._have + n]

    def adopt(self, buffer: np.ndarray, start: int, n: int) -> tuple[np.ndarray, Iterator[T]]:
        """Take the next ``n`` bytes where they were read, ``buffer[start:start + n]``
        (a buffer of the caller's, read ahead while this decoder decoded the bytes
        before): the undecoded tail moves into the ``start`` bytes before them and
        ``buffer`` becomes this decoder's, so the new bytes are not copied. A tail that
        does not fit there, or a unit known to need more than ``buffer`` holds, takes
        the copy instead (as :meth:`space`). Returns the buffer this decoder no longer
        uses (free for the next read) and what the bytes complete, as :meth:`commit`."""
        tail = self._have - self._pos
        first = start - tail
        if first < 0 or self.need > len(buffer) - first:
            self.space(n)[:] = buffer[start:start + n]
            return buffer, self.commit(n)
        buffer[first:start] = self._buf[self._pos:self._have]
        released = self._buf
        self._offset += self._pos - first
        self._buf, self._pos, self._have = buffer, first, start
        return released, self.commit(n)

    def fault_in_output(self, n: int) -> None:
        """Fault in the output memory that decoding the next ``n`` bytes will write
        (called by the thread that reads ahead, beside the decoding; see
        :func:`bindf._lanes.fault_in`). Default: nothing (a decoder whose output is not
        allocated ahead)."""

    def commit(self, n: int) -> Iterator[T]:
        """Take the first ``n`` bytes written into :meth:`space`; decode what they complete."""
        self._have += n
        if self.ended or not self._have - self._pos:
            return iter(())
        return self._decode(self._buf, self._have, final=False)

    def feed(self, data: bytes | bytearray | memoryview | np.ndarray,
             convert: Callable[[T], Any] | None = None) -> list[Any]:
        """Decode ``data`` (the bytes after :attr:`read_position`); return what it
        completed, including rows the decoder would otherwise still be collecting.

        A unit may be a view of buffers the decoder reuses for the next one (the A-STEP
        walk's sensor words, the AstroPix hit scratch), and ``data`` may complete
        several units: ``convert`` is applied to each unit before the next is decoded,
        and the list holds what it returns. Without it, only the last unit is sure to
        be intact.
        """
        if self.ended:
            return []
        data = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) \
            else data.view(np.uint8).reshape(-1)
        self.space(len(data))[:] = data
        return self._handed_out(self.commit(len(data)), convert)

    def read_from(self, f: BinaryIO, n: int,
                  convert: Callable[[T], Any] | None = None) -> tuple[list[Any], int]:
        """Read up to ``n`` bytes of ``f`` (positioned at :attr:`read_position`) straight
        into the buffer with ``readinto`` and decode them like :meth:`feed`; returns the
        units (converted) and the number of bytes read (fewer than ``n`` at the end)."""
        if self.ended:
            return [], 0
        got = read_into(f, self.space(n))
        return self._handed_out(self.commit(got), convert), got

    def _handed_out(self, units: Iterator[T], convert: Callable[[T], Any] | None) -> list[Any]:
        """``units`` then the drained rows, each converted before the next is decoded."""
        everything = itertools.chain(units, self._drain())
        return list(everything) if convert is None else [convert(u) for u in everything]

    def finish(self, *, shrank: bool = False) -> Iterator[T]:
        """No more bytes will come: decode what is still possible, hand out what the
        decoder buffered, and report an incomplete tail (``shrank``: the file got
        shorter than it was when opened)."""
        if not self.ended and self._have - self._pos:
            yield from self._decode(self._buf, self._have, final=True)
        yield from self._drain()
        if not self.truncation_reported:
            self._at_end(self.pending if not self.ended else 0, shrank)

    # -- state ------------------------------------------------------------------------------
    def checkpoint(self) -> StreamState:
        """A snapshot to resume from (see :meth:`restore`)."""
        return StreamState(self.position, bytes(self._buf[self._pos:self._have]),
                           copy.deepcopy(self._kernel_state()), dict(self.errors), self.ended)

    def restore(self, state: StreamState) -> None:
        """Continue from ``state`` (taken from a decoder with the same options)."""
        self._offset = state.position
        self._pos = 0
        self._have = 0
        carry = np.frombuffer(state.carry, dtype=np.uint8)
        self.space(len(carry))[:] = carry
        self._have = len(carry)
        self._restore_kernel(copy.deepcopy(state.kernel))
        self.errors = dict(state.errors)
        self.ended = state.ended
        self.truncation_reported = False

    # -- for subclasses ----------------------------------------------------------------------
    @abc.abstractmethod
    def _decode(self, buf: np.ndarray, have: int, final: bool) -> Iterator[T]:
        """Decode complete units of ``buf[self._pos:have]``, advancing ``self._pos``
        past each one *before* yielding what it produced. ``final``: no more bytes will
        come. Set :attr:`need` when a unit is known to be larger than what is held."""

    def _drain(self) -> Iterator[T]:
        """Hand out rows the decoder still buffers (default: none)."""
        return iter(())

    def _at_end(self, pending: int, shrank: bool) -> None:
        """The data ended with ``pending`` undecoded bytes: warn about a truncation."""
        if shrank:
            self.warn_truncated(self.position, "the file shrank while it was read")
        elif pending:
            self.warn_truncated(self.position,
                                f"the last {pending} bytes are an incomplete record")

    def _kernel_state(self) -> Any:
        return None

    def _restore_kernel(self, state: Any) -> None:
        pass

    # -- damage ---------------------------------------------------------------------------
    def note_error(self, kind: str, count: int = 1) -> None:
        """Count damage that was skipped under ``on_error="warn"/"skip"``."""
        self.errors[kind] = self.errors.get(kind, 0) + count

    def damaged(self, kind: str, message: str, offset: int, count: int = 1) -> None:
        """Apply the ``on_error`` policy to damage: raise a
        :class:`~bindf.errors.CorruptDataError`, or count it (and warn, under ``"warn"``)."""
        if self.on_error == "raise":
            raise CorruptDataError(message, path=self.path, offset=offset)
        self.note_error(kind, count)
        if self.on_error == "warn":
            _warn(CorruptDataWarning(message, path=self.path, offset=offset))

    def warn_truncated(self, offset: int, why: str,
                       keeps: str = "returning the complete records before it") -> None:
        """Issue the one :class:`~bindf.errors.TruncatedFileWarning` of this stream."""
        self.truncation_reported = True
        _warn(TruncatedFileWarning(f"truncated {self.label} file: {why}; {keeps}",
                                   path=self.path, offset=offset))


def decode_file(source: Source, decoder: StreamDecoder[T], *, end: int | None = None,
                first_read: int = 1 << 20, max_read: int = 1 << 20,
                f: BinaryIO | None = None, finish: bool = True,
                read_ahead: Lane | None = None) -> Generator[T, None, None]:
    """Read ``source`` from ``decoder.read_position`` to ``end`` (default: its size when
    opened) with ``readinto`` into the decoder's buffer, and yield what it decodes.

    Reads start at ``first_read`` bytes (at most ``max_read``) and double up to
    ``max_read`` (so that ``head()`` decodes little). A read that comes back short means
    the file shrank: decoding ends there with a truncation warning. ``f``: an already
    open file.
    ``finish=False``: ``end`` is not the end of the data (another decoder reads on from
    there, see :mod:`._apx_parts`), so the decoder is left unfinished, unless the file
    shrank or the data declared its own end.
    ``read_ahead``: a pool whose thread reads each next ``max_read`` bytes while the
    bytes before them are decoded (see :func:`_decoded_reading_ahead`; whole reads of
    large files: ``first_read`` is not used).
    """
    end = source.size if end is None else end
    if f is None:
        with source.open() as opened:
            yield from decode_file(source, decoder, end=end, first_read=first_read,
                                   max_read=max_read, f=opened, finish=finish,
                                   read_ahead=read_ahead)
        return
    f.seek(decoder.read_position)
    if read_ahead is not None:
        shrank = yield from _decoded_reading_ahead(f, decoder, end, max_read, read_ahead)
    else:
        shrank = yield from _decoded_reading(f, decoder, end, first_read, max_read)
    if finish or shrank or decoder.ended:
        yield from decoder.finish(shrank=shrank)


def _decoded_reading(f: BinaryIO, decoder: StreamDecoder[T], end: int, first_read: int,
                     max_read: int) -> Generator[T, None, bool]:
    """:func:`decode_file`'s loop: read into the decoder's buffer, decode, in turn.
    Returns whether the file came back shorter than ``end`` (it shrank)."""
    size = min(first_read, max_read)  # (max_read bounds every read, the first one too)
    while not decoder.ended:
        want = min(size, end - decoder.read_position)
        if want <= 0:
            break
        got = read_into(f, decoder.space(want))
        yield from decoder.commit(got)
        if got < want:
            return True
        size = min(2 * size, max_read)
    return False


#: Bytes kept free before the data of a buffer read ahead: the undecoded tail of the
#: buffer before it (an incomplete record) moves there (see :meth:`StreamDecoder.adopt`).
READ_AHEAD_HEADROOM = 4096


def _decoded_reading_ahead(f: BinaryIO, decoder: StreamDecoder[T], end: int, size: int,
                           pool: Lane) -> Generator[T, None, bool]:
    """:func:`decode_file`'s loop with the reading moved to a thread of ``pool``: two
    buffers take turns, one read into (``size`` bytes at a time) while the decoder
    decodes the other, which it adopts without a copy; after each read that thread
    faults in the output memory those bytes will fill. Returns whether the file came
    back shorter than ``end`` (it shrank). The kernel's copy out of the page cache and
    its zeroing of new output pages, each a fifth of a sparse IT02 read, then run
    beside the decoding."""
    def read(buffer: np.ndarray, want: int) -> int:
        got = read_into(f, buffer[READ_AHEAD_HEADROOM:READ_AHEAD_HEADROOM + want])
        decoder.fault_in_output(got)  # (the other costly step that can run beside)
        return got

    want = min(size, end - decoder.read_position)
    if want <= 0:
        return False
    spare = np.empty(READ_AHEAD_HEADROOM + size, dtype=np.uint8)
    pending: Future[int] | None = pool.submit(read, spare, want)
    try:
        while pending is not None:
            try:
                got = pending.result()
            finally:  # once done, let go of (a failed read's future holds its error,
                # see bindf._threads); interrupted while it runs, settled below
                if pending.done():
                    pending = None
            freed, units = decoder.adopt(spare, READ_AHEAD_HEADROOM, got)
            next_want = min(size, end - decoder.read_position)
            if got == want and next_want > 0:  # the next read, while these are decoded
                # (the decoder's own first buffer, of another size, is let go)
                spare = freed if len(freed) == len(spare) else np.empty_like(spare)
                pending = pool.submit(read, spare, next_want)
            yield from units
            if got < want:
                return True
            if decoder.ended:
                return False
            want = next_want
        return False
    finally:
        if pending is not None:  # (decoding ended early: the read must not outlive it)
            settle([pending])


#: How many chunks a reader's prefetch worker decodes ahead of the thread that turns
#: them into columns (AstroPix, A-STEP); its decoder needs ``PREFETCH_AHEAD + 1`` slots.
PREFETCH_AHEAD = 2


def prefetched(items: Generator[T, None, None], *, ahead: int = 1,
               thread_name: str = "bindf-decode",
               counts: tuple[Callable[[], dict[str, int]], dict[str, int]] | None = None,
               ) -> Generator[T, None, None]:
    """Advance ``items`` up to ``ahead`` steps ahead of the consumer, in a worker thread.

    The readers' kernels release the GIL, and so do numpy's loops: decoding chunks
    k + 1 … k + ``ahead`` overlaps with turning chunk k into columns (``threads`` > 1 of
    AstroPix and A-STEP). More than one step ahead lets the worker go on while the
    consumer is held up on one chunk (say, by the page faults of a new output block), so
    an item must stay valid while ``ahead`` more are made: the decoders' ``slots``.
    Exceptions raised by ``items`` surface here, in order. Closing this generator waits
    for the worker and closes ``items`` (which closes the file).

    What a step reports travels with its item: the warnings it gave (:func:`warn`) are
    handed on (:meth:`~bindf._warnings.WarningSink.emit`) when its item is taken, and
    with ``counts = (current, into)`` the damage counts it added to ``current()`` (the
    decoder's ``errors``, which only the worker touches) are added to ``into`` (the
    reader's) then. A consumer that stops early (``n_rows``, ``head``) so reports exactly
    what a one-thread read reports, not the damage of chunks decoded ahead.
    """
    # A thread of its own, not one of the shared pools (bindf._threads.shared_executor):
    # the files of a glob, decoded side by side, each need their worker at the same time.
    # Its one thread runs the queued steps in order; after the end (or an exception,
    # which ends a generator) the steps still queued return _DONE. A step runs in a copy
    # of the consumer's context, as of its first step, with a sink of its own.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
    context = contextvars.copy_context()
    current, into = counts if counts is not None else (None, None)

    def step() -> tuple[Any, WarningSink, dict[str, int] | None, list[BaseException]]:
        sink = WarningSink()
        failed: list[BaseException] = []  # (a box the consumer empties: see below)
        try:
            with sink.active():
                item = next(items, _DONE)
        except BaseException as exc:  # (raised in the consumer, after the warnings)
            item = _DONE
            failed.append(exc)
        return item, sink, None if current is None else dict(current()), failed

    reported: dict[str, int] = {}  # of the counts, what `into` has been given
    try:
        pending = deque(pool.submit(context.run, step) for _ in range(max(1, ahead)))
        while True:
            item, sink, counted, failed = pending.popleft().result()
            sink.emit()
            if counted is not None and into is not None:
                for kind, count in counted.items():
                    if count != reported.get(kind, 0):
                        into[kind] = into.get(kind, 0) + count - reported.get(kind, 0)
                reported = counted
            if failed:
                # Taken out of its box, which this frame, the step's and the pool
                # thread's (all in its traceback) hold, and not kept here: held by any
                # of them, it would make a reference cycle (see bindf._threads)
                error = failed.pop()
                try:
                    raise error
                finally:
                    del error
            if item is _DONE:
                return
            pending.append(pool.submit(context.run, step))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        items.close()


class BatchStream:
    """A :class:`StreamDecoder` whose units are turned into ``pyarrow.RecordBatch``es:
    what :meth:`~bindf.formats._base.FormatReader.batch_stream` returns, the same API
    for every format (live following feeds it the bytes appended to a file).

    ``feed(bytes) -> list[RecordBatch]`` (rows completed by those bytes), ``finish()``
    (the rest, with the truncation warning of an incomplete tail), ``checkpoint()`` /
    ``restore(state)``, ``position``/``read_position``, ``errors``, ``ended``.
    """

    def __init__(self, decoder: StreamDecoder[Any], to_batch: Any) -> None:
        self.decoder = decoder
        self._to_batch = to_batch

    def feed(self, data: bytes | bytearray | memoryview | np.ndarray) -> list[Any]:
        return [b for b in self.decoder.feed(data, self._to_batch) if b.num_rows]

    def read_from(self, f: BinaryIO, n: int) -> tuple[list[Any], int]:
        """Like :meth:`feed`, reading up to ``n`` bytes of ``f`` into the decoder's buffer
        (no copy); returns the batches and the number of bytes read."""
        batches, got = self.decoder.read_from(f, n, self._to_batch)
        return [b for b in batches if b.num_rows], got

    def finish(self, *, shrank: bool = False) -> list[Any]:
        return [b for b in (self._to_batch(u) for u in self.decoder.finish(shrank=shrank))
                if b.num_rows]

    def checkpoint(self) -> StreamState:
        return self.decoder.checkpoint()

    def restore(self, state: StreamState) -> None:
        self.decoder.restore(state)

    @property
    def position(self) -> int:
        return self.decoder.position

    @property
    def read_position(self) -> int:
        return self.decoder.read_position

    @property
    def errors(self) -> dict[str, int]:
        return self.decoder.errors

    @property
    def ended(self) -> bool:
        return self.decoder.ended


class FixedRecordStream(StreamDecoder[dict[str, np.ndarray]]):
    """Fixed-size records from a byte stream: yields ``{field: array}`` of the complete
    records held (copies), carrying a partial record over to the next bytes.

    ``declared_count``: the number of records the header declares, when it does. The
    stream ends after them (bytes after them are a trailer, as a read of the file takes
    them), and a stream that finishes before them warns of a truncation, naming both
    counts as the read does."""

    def __init__(self, position: int, *, path: str, dtype: np.dtype, fields: list[str],
                 on_error: str = "raise", data_end: int | None = None,
                 label: str = "file", declared_count: int | None = None) -> None:
        super().__init__(position, path=path, on_error=on_error, data_end=data_end,
                         label=label, capacity=max(dtype.itemsize, 64 << 10))
        self.dtype = dtype
        self.fields = fields
        self.declared_count = declared_count
        self._records_start = position
        self._records_end = (None if declared_count is None
                             else position + declared_count * dtype.itemsize)

    def _decode(self, buf: np.ndarray, have: int,
                final: bool) -> Iterator[dict[str, np.ndarray]]:
        size = self.dtype.itemsize
        n = (have - self._pos) // size
        if self._records_end is not None:
            n = min(n, max(self._records_end - self.position, 0) // size)
            if self.position + n * size >= self._records_end:
                self.ended = True  # the declared records: what follows is a trailer
        if not n:
            return
        records = np.frombuffer(buf, dtype=self.dtype, count=n, offset=self._pos)
        out = {name: records[name].copy() for name in self.fields}
        self._pos += n * size
        yield out

    def _at_end(self, pending: int, shrank: bool) -> None:
        if not shrank and self._records_end is not None and self.position < self._records_end:
            held = (self.position - self._records_start) // self.dtype.itemsize
            self.warn_truncated(self.position, f"the header declares {self.declared_count} "
                                f"records but the file holds {held}")
            return
        super()._at_end(pending, shrank)
