"""An eager read of a large AstroPix run on several threads: the run cut into byte ranges
at readout boundaries, each decoded whole (read, framing, hits, columns) by its own
thread, with exactly the output of one pass.

Why not one pipeline: a run's work has one sequential part, finding hits, which carries
a few bytes from one readout to the next. Split across two threads as a pipeline (one
thread reads, frames and finds hits, the other makes columns) the sequential side is
the bottleneck and the other thread waits for it (10–50 ms of a 100 ms read of a
70 MB run, measured). Cut into ranges, each
thread does all the work of its range, and the threads finish together.

Where a range starts is a guess, made from the bytes alone: a readout marker
``FE DC BA`` near the ideal cut whose declared length leads to the next marker, and so
on (:func:`cut_points`). Each range is decoded from the state a decoder has at the
start of a run (no carried bytes, no damage being skipped). The guess is then checked
against the truth, in file order: range k stands only if the decoding of the range
before it ended *exactly* at its start, in that same fresh state. Then one pass would
have reached the cut in the same state, and decoded the range identically (the decoder
is deterministic). Otherwise (a marker inside a payload, a hit cut across the two
readouts at the cut, damage), the range before simply goes on decoding through range k,
whose own result is dropped, warnings and errors included. A wrong guess costs time,
never a different result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa

from .._kernels import _apx
from .._source import read_into
from .._threads import settle, shared_executor
from .._warnings import WarningSink
from ._stream import decode_file

if TYPE_CHECKING:
    from .apx import ApxReader, ApxStream

#: Each range holds at least this many bytes (fewer ranges than threads for smaller
#: runs): below it the ranges' start-up (a file handle, scratch, first reads) shows.
PART_MIN_BYTES = 4 << 20
#: Ranges per thread. More would let the threads finish together when one core runs
#: slower than the other (threads take ranges as they go), but each range brings its
#: own column blocks and start-up: on the 70 MB run, two threads took 109–123 ms with
#: 2 ranges each, 104–116 ms with one (six reads each, alternated).
RANGES_PER_THREAD = 1
#: Bytes looked at around an ideal cut for a readout start.
CUT_WINDOW_BYTES = 64 << 10
#: A guessed readout start must begin this many readouts in a row whose markers and
#: declared lengths chain up within the window (or readouts up to the end of the file).
CUT_CHAIN = 4


def parts_for(reader: ApxReader, n_rows: int | None) -> int:
    """How many ranges an eager read of ``reader``'s run is cut into (1: not cut)."""
    if (reader.threads < 2 or not reader.keeps_every_batch or n_rows is not None
            or not reader.source.reads_in_parallel):
        return 1
    data_bytes = reader.source.size - reader.data_offset
    return max(1, min(RANGES_PER_THREAD * reader.threads, data_bytes // PART_MIN_BYTES))


def cut_points(f: BinaryIO, start: int, end: int, parts: int) -> list[int]:
    """Guessed readout starts cutting ``[start, end)`` into up to ``parts`` ranges of
    about equal size: ``[start, cut_1, …, end]``. An ideal cut with no plausible readout
    start nearby is left out (fewer, longer ranges)."""
    cuts = [start]
    window = np.empty(CUT_WINDOW_BYTES, dtype=np.uint8)
    for k in range(1, parts):
        ideal = start + (end - start) * k // parts
        f.seek(ideal)
        have = read_into(f, window)
        found = plausible_readout(window, 0, have, ends_data=ideal + have == end)
        if found >= 0 and ideal + found > cuts[-1]:
            cuts.append(ideal + found)
    return [*cuts, end]


def plausible_readout(buf: np.ndarray, pos: int, have: int, *, ends_data: bool) -> int:
    """Position of the first readout marker at or after ``pos`` in ``buf[:have]`` that
    begins :data:`CUT_CHAIN` readouts whose declared lengths lead from one marker to the
    next (or, when ``ends_data``, whole readouts up to ``have``, the end of the data);
    -1 if there is none. A marker found in payload bytes by chance does not chain."""
    header_pos = np.empty(CUT_CHAIN, dtype=np.int64)
    readout_id = np.empty(CUT_CHAIN, dtype=np.uint32)
    timestamp = np.empty(CUT_CHAIN, dtype=np.uint64)
    length = np.empty(CUT_CHAIN, dtype=np.uint32)
    while True:
        found = _apx.find_marker(buf, pos, have)
        if found < 0:
            return -1
        n, stop, code = _apx.frame_readouts(buf, found, have, header_pos, readout_id,
                                            timestamp, length)
        if n == CUT_CHAIN or (n and code == _apx.FRAME_END and stop == have and ends_data):
            return found
        pos = found + 1


@dataclass
class _Part:
    """One range's decoding: its stream, batches, warnings and error."""

    start: int
    stop: int
    stream: ApxStream
    to_batches: Callable[[Iterable[Any]], Iterable[pa.RecordBatch]]
    max_read: int
    sink: WarningSink = field(default_factory=WarningSink)
    batches: list[pa.RecordBatch] = field(default_factory=list)
    error: BaseException | None = None
    #: No more bytes will be decoded by this part (the end of the data, a file that
    #: shrank, a readout that declares the end, an error).
    done: bool = False
    file: BinaryIO | None = None

    def decode_to(self, stop: int, last: bool, source: Any) -> None:
        """Read and decode up to byte ``stop`` (``last``: the end of the data, where the
        stream is finished and an incomplete tail is reported)."""
        with self.sink.active():
            try:
                if self.file is None:
                    self.file = source.open()
                self._decode_to(stop, last, source)
            except Exception as exc:  # raised by the consumer, in file order
                self.error = exc
                self.done = True

    def _decode_to(self, stop: int, last: bool, source: Any) -> None:
        # decode_file seeks to the stream's read position first: a thread's ranges may
        # share its one held file (see Source.held).
        stream = self.stream
        self.batches.extend(self.to_batches(decode_file(
            source, stream, end=stop, first_read=self.max_read, max_read=self.max_read,
            f=self.file, finish=last)))
        # Finished: the last range, the data's own end, or a file that shrank (a read
        # that came back short left the stream before ``stop``).
        self.done = last or stream.ended or stream.read_position < stop

    def ended_fresh_at(self, position: int, fresh: Any) -> bool:
        """Whether decoding ended exactly at ``position`` in the state ``fresh`` (the
        state of a new decoder): then one pass would continue from there as a new
        decoder started at ``position`` does."""
        stream = self.stream
        return (not self.done and stream.position == position and not stream.pending
                and stream._kernel_state() == fresh)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def drop(self) -> None:
        """Forget this range's result (it does not stand): its batches' memory too, and
        its error (whose traceback holds :meth:`decode_to`'s frame, which holds this
        part: kept, the two would wait for the garbage collector)."""
        self.batches.clear()
        self.sink.recorded.clear()
        self.error = None
        self.close()


def batches_in_parts(reader: ApxReader, parts: int,
                     new_converter: Callable[[ApxStream],
                                             Callable[[Iterable[Any]], Iterable[pa.RecordBatch]]],
                     per_call: int) -> Iterator[pa.RecordBatch]:
    """The batches of ``reader``'s run decoded in up to ``parts`` ranges by up to
    ``reader.threads`` threads (this one included), in file order: the values, warnings
    and damage counts of one pass. Each thread takes the next range not yet taken until
    none is left, so a thread that runs slower (a busy core) decodes fewer of them.
    ``new_converter(stream)`` gives the range decoded by ``stream`` its own
    ``units -> batches`` function (its own column memory, see :mod:`bindf._lanes`)."""
    source = reader.source
    with source.open() as f:
        cuts = cut_points(f, reader.data_offset, source.size, parts)
    streams = [reader.stream(per_call=per_call, threads=1, start=a) for a in cuts[:-1]]
    pieces = [_Part(a, b, stream, new_converter(stream), reader.chunk_bytes)
              for a, b, stream in zip(cuts, cuts[1:], streams)]
    last = len(pieces) - 1
    taken = iter(range(len(pieces)))
    lock = threading.Lock()
    stop = threading.Event()  # set when the read is interrupted (Ctrl-C, an error)

    def work() -> None:
        while not stop.is_set():
            with lock:
                k = next(taken, None)
            if k is None:
                return
            pieces[k].decode_to(pieces[k].stop, k == last, source)

    helpers = min(reader.threads, len(pieces)) - 1
    futures = []
    try:
        if helpers:
            pool = shared_executor("bindf-apx-parts", helpers)
            futures = [pool.submit(work) for _ in range(helpers)]
        work()
        for future in futures:  # (decode_to keeps what a range raised for later)
            future.result()
        standing = _standing(pieces, reader.stream(per_call=1, threads=1)._kernel_state(),
                             source)
    finally:  # an interrupted read: no more ranges are taken; running ones are awaited
        stop.set()
        settle(futures)
        for piece in pieces:
            piece.close()
    for piece in standing:
        piece.sink.emit()
        for kind, count in piece.stream.errors.items():
            reader.errors[kind] = reader.errors.get(kind, 0) + count
        yield from piece.batches
        piece.batches.clear()
        error, piece.error = piece.error, None  # (not held where it is raised: see drop)
        if error is not None:
            try:
                raise error
            finally:  # (this frame is in its traceback)
                del error


def _standing(pieces: list[_Part], fresh: Any, source: Any) -> list[_Part]:
    """The ranges whose decoding stands, in file order (see the module docstring): a
    range stands if the one before it ended exactly at its start in the ``fresh`` state;
    otherwise the one before decodes on through it (in this thread)."""
    last = len(pieces) - 1
    current = pieces[0]
    standing = [current]
    for k, piece in enumerate(pieces[1:], 1):
        if current.done:  # the data ended (or decoding failed) before this range
            for later in pieces[k:]:
                later.drop()
            break
        if current.ended_fresh_at(piece.start, fresh):
            current = piece
            standing.append(current)
        else:
            piece.drop()
            current.decode_to(piece.stop, k == last, source)
    return standing
