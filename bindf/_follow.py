"""Follow files while an instrument is still writing them: :func:`bindf.follow`.

A follower polls each file with ``os.stat`` (no inotify: it must work on network drives
and USB disks) and reads only the bytes appended since the last poll, with ``readinto``
straight into the buffer of the format's resumable decoder
(:meth:`~bindf.formats._base.FormatReader.batch_stream`). The decoder carries an
incomplete record, readout or line, and its own state, to the next poll, so every frame
holds whole records only, and the frames of a file put together are exactly what
``bindf.read`` returns for the finished file.

Where a followed file ends:

* the format's own end-of-acquisition marker (:meth:`FormatReader.acquisition_end`; the
  sparse IT02 mask-0 record), once the record chain lands exactly on it and one poll
  later the file has not grown (a mask-0 record that more data follows is an ordinary bin,
  as in ``read``). The last frame carries the header keys the marker sets;
* the file did not grow for ``idle_timeout`` seconds;
* it shrank, was replaced or rewritten: :class:`~bindf.errors.FileChangedWarning` naming
  the offset;
* the caller closes the follower, leaves its ``with`` block or presses Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import glob as globbing
import os
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, Literal, overload

import pyarrow as pa

from ._compressed import compression_of
from ._file_objects import is_source_object
from ._inputs import source_path_text
from ._params import check_count, check_names, check_seconds
from ._source import Source, _is_url, _local_path, ensure_bindf_path, has_glob_chars
from ._warnings import WarningSink, warn
from .arrow import build_info, path_text
from .errors import (
    BindfError,
    BindfWarning,
    CorruptDataError,
    FileChangedWarning,
    HeaderError,
    TruncatedFileWarning,
    TruncatedHeaderError,
    check_columns_known,
)
from .formats._base import (
    ON_ERROR_CHOICES,
    AcquisitionEnd,
    FormatReader,
    empty_batch,
    summed_errors,
)
from .formats._stream import BatchStream, FixedRecordStream, StreamState
from .frontends.batches import path_chunks, with_extra_columns
from .frontends.output import (
    DtypeBackend,
    Frame,
    FrameT,
    Output,
    check_output,
    path_type_for,
    table_to_output,
)
from .registry import (
    check_option_values,
    detect_format,
    get_format,
    open_reader,
    option_names,
)

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

#: What follow takes: a path (``str``, path-like, a ``file://`` URL), a glob, or several.
FollowSources = str | os.PathLike[Any] | Iterable[str | os.PathLike[Any]]

#: Most bytes read (and decoded) in one step: a follower that starts on a large file, or
#: a writer that appended a lot at once, still decodes in bounded memory.
READ_STEP = 16 << 20

START_CHOICES = ("begin", "end")

#: Bytes before the read position kept to tell a rewritten file (``_Tail.known_bytes``).
_KNOWN_BYTES_TAIL = 64


class _Tail:
    """One followed file: its reader, its decoder and where reading got to."""

    def __init__(self, path: str, follower: Follower, start: int | None) -> None:
        self.path = path
        self.follower = follower
        #: start="end": the file's size when following started (rows begin there).
        self.start = start
        self.reader: FormatReader | None = None
        self.stream: BatchStream | None = None
        self.f: BinaryIO | None = None
        self.identity: tuple[int, int] | None = None
        self.header: dict[str, Any] = {}
        #: Size at the last poll (-1: never seen).
        self.seen_size = -1
        #: (offset, bytes) the file held when read: the last bytes of records read. A
        #: file that no longer holds them was rewritten under the same name (a new run
        #: started in place, within one poll: its inode and a size that never shrank at
        #: a poll do not tell). Never the header: an instrument may update it in place
        #: at the end of an acquisition (a record count), which is no new run; so a new
        #: run written in place before the first record was read goes unnoticed.
        self.known_bytes: tuple[int, bytes] = (0, b"")
        self.data_offset = 0
        #: The largest size seen since the file was opened: bytes known to have existed
        #: (start="end" may put the stream at a record boundary past them).
        self.largest_size = -1
        #: The last error opening the header (retried while the file grows).
        self.header_error: BaseException | None = None
        #: An end marker the records landed on: (marker, file size when found).
        self.candidate: tuple[AcquisitionEnd, int] | None = None
        #: Batches decoded in the poll that found ``candidate``: they go out with the
        #: header the marker completes, in the frame that ends the file.
        self.held: list[pa.RecordBatch] = []
        #: start="end": file offset before which decoded rows are dropped.
        self.skip_until = 0
        self.skip_state: StreamState | None = None
        self.done = False
        #: Why the file ended: "end_marker", "changed" (shrank, replaced, removed),
        #: "data_end" (the decoder cannot go on: damage skipped under on_error, or the
        #: records a header declares all read),
        #: "error" (damage under on_error="raise": :attr:`error`) or "complete" (a file
        #: written in one go, read whole).
        self.ended_by: str | None = None
        #: The damage that ended the file under on_error="raise". The rows decoded before
        #: it are handed out first; the follower raises it after them.
        self.error: BindfError | None = None
        #: A format written in one go (:attr:`FormatReader.written_whole`): no stream;
        #: the file is read whole once its size held for one poll.
        self.whole = False

    # -- polling -------------------------------------------------------------------------
    def poll(self) -> tuple[list[pa.RecordBatch], bool]:
        """Decode what was appended since the last poll: (batches, file changed)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.reader is not None:
                return self._stop("the file disappeared while it was followed",
                                  self._offset()), False
            return [], False
        grew = st.st_size != self.seen_size
        self.seen_size = st.st_size
        if self.stream is None:
            if grew:
                self._open()
            elif isinstance(self.header_error, CorruptDataError) and self._written_whole:
                # Damage its reader met on opening a format written in one go (FCS1
                # reads the whole file), in a file whose size held for a poll: the
                # writer is done, so more bytes cannot mend it. Raised now, not after
                # idle_timeout (or never). (Another format's reader may lack bytes to
                # decide, as IT02's layout does early in a file: a writer's pause of one
                # poll is no end; idle_timeout is.)
                self.error, self.header_error = self.header_error, None
                self.done, self.ended_by = True, "error"
                return [], True
            if self.whole and not grew:  # (a writer caught mid-file makes it grow again)
                batches = self._read_whole(final=False)
                return batches, self.done
            if self.stream is None:
                return [], grew
            grew = True  # the reader just (re)opened: decode what it holds
            # The header was read after the stat above, and the file may have grown in
            # between: compare the stream with the file as opened, not with that stat
            # (which made a file of 0 bytes then 12 look as if it had shrunk).
            assert self.f is not None  # opened with the stream
            st = os.fstat(self.f.fileno())
            self.seen_size = st.st_size
        assert self.stream is not None
        if (st.st_ino, st.st_dev) != self.identity:
            return self._stop("the file was replaced by another file while it was "
                              "followed", self._offset()), False
        if st.st_size < min(self.stream.read_position, self.largest_size):
            return self._stop(f"the file shrank to {st.st_size} bytes while it was "
                              "followed; stopped following it",
                              self.stream.read_position), False
        self.largest_size = max(self.largest_size, st.st_size)
        if grew and self._rewritten():
            return self._stop("the file was rewritten from its start while it was followed "
                              "(a new run under the same name?); stopped following it",
                              self._offset()), False
        if self.candidate is not None:
            marker, size_then = self.candidate
            if st.st_size == size_then:  # still the end: the acquisition ended
                self.header = {**self._header_at_end(), **marker.header}
                self.done, self.ended_by = True, "end_marker"
                batches, self.held = self.held + self._finish(), []
                return batches, False
            self.candidate = None  # more came after it: an ordinary record
        if not grew and st.st_size == self.stream.read_position:
            return [], False
        # Rows held back with a candidate that turned out to be an ordinary record.
        batches, self.held = self.held, []
        batches += self._read_to(st.st_size)
        if self.error is not None:
            self.done, self.ended_by = True, "error"
            return batches, True
        if self.stream.ended:  # nothing after this can be decoded (damage, under on_error)
            self.done, self.ended_by = True, "data_end"
            # The records stopped before an end marker the file may hold: its header
            # keys, as a read of the file gives them.
            assert self.reader is not None and self.f is not None
            marker = self.reader.acquisition_end(self.f, st.st_size)
            self.header = {**self._header_at_end(), **(marker.header if marker else {})}
            return batches + self._finish(), True
        self._remember_last_bytes()
        if self.candidate is not None:
            self.held.extend(batches)
            return [], True
        return batches, True

    @functools.cached_property
    def _written_whole(self) -> bool:
        """Whether this file's format is one written in one go (its reader could not be
        opened, so the format is found as opening it would; once, not at every poll)."""
        follower = self.follower
        try:
            spec = (get_format(follower.format) if follower.format is not None
                    else detect_format(Source(self.path)))
        except (BindfError, OSError, ValueError):
            return False
        return spec.reader_class().written_whole

    def _remember_last_bytes(self) -> None:
        """Keep the last bytes of the records read for :meth:`_rewritten` (none read
        yet: nothing; see ``known_bytes``)."""
        assert self.stream is not None
        end = self.stream.read_position
        if self.largest_size >= 0:
            end = min(end, self.largest_size)
        start = max(self.data_offset, end - _KNOWN_BYTES_TAIL)
        self.known_bytes = (start, self._read_at(start, end - start) if end > start else b"")

    def _rewritten(self) -> bool:
        """Whether the file no longer holds the bytes it held when they were read."""
        offset, data = self.known_bytes
        return bool(data) and self._read_at(offset, len(data)) != data

    def _read_at(self, offset: int, size: int) -> bytes:
        """The file's bytes at ``offset`` as they are on disk now: not through the
        reading file object, whose buffer may still hold what was read before."""
        assert self.f is not None
        if hasattr(os, "pread"):
            return os.pread(self.f.fileno(), size, offset)
        with open(self.path, "rb", buffering=0) as f:  # (Windows: no pread)
            f.seek(offset)
            return f.read(size)

    def _open(self, force: bool = False) -> None:
        """Open the file's reader (a cut header: remember the error, retry on growth) and,
        once what it decided cannot change any more (or ``force``), its stream."""
        follower = self.follower
        try:
            reader = open_reader(Source(self.path), follower.format,
                                 on_error=follower.on_error, **follower.options)
        except (BindfError, EOFError) as exc:
            error = ensure_bindf_path(exc, self.path) if isinstance(exc, BindfError) else exc
            if isinstance(error, HeaderError) and not isinstance(error, TruncatedHeaderError):
                raise error from None  # complete and damaged: more bytes cannot mend it
            # A header still being written (or a magic, or too few records to tell the
            # layout): wait for more bytes, and raise this if none come.
            self.header_error = error
            return
        self.header_error = None
        self.reader = reader
        if not (reader.settled or force):
            return
        # Only a settled reader's schema is the file's (an empty AstroPix log's reader
        # guesses AstroPix 4 until the header says otherwise).
        follower.check_compatible(reader)
        self.header = reader.header_before_end()
        if reader.written_whole:
            self.whole = True
            return
        try:
            self.stream = self._new_stream()
        except NotImplementedError as exc:  # a format added from outside that cannot
            raise BindfError(f"cannot be followed while it is written ({exc}); read it "
                             "once it is complete", path=self.path) from None
        self.f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        st = os.fstat(self.f.fileno())
        self.identity = (st.st_ino, st.st_dev)
        self.data_offset = getattr(reader, "data_offset", 0)
        if self.start is not None:
            self._skip_to(self.start)
        self._remember_last_bytes()

    def _read_whole(self, final: bool) -> list[pa.RecordBatch]:
        """The rows of a file written in one go, read whole (none with start="end": it
        was written before following started), and the file is done. A read that finds
        the file cut (a truncation warning) is not done unless ``final`` (the follow's
        idle end, or a later file appeared): the writer is still at it, and the next
        poll reads it again."""
        assert self.reader is not None
        if self.start is not None:
            self.done, self.ended_by = True, "complete"
            return []
        seen = WarningSink()
        with seen.active():
            batches = list(self.reader.iter_batches(self.follower.reader_columns(self.reader)))
        if not final and any(isinstance(w, TruncatedFileWarning) for w in seen.recorded):
            return []
        seen.emit()
        self.done, self.ended_by = True, "complete"
        return batches

    def _skip_to(self, size: int) -> None:
        """start="end": drop the records that begin before ``size`` (the next record
        boundary at or after it is where the rows begin)."""
        assert self.stream is not None and self.reader is not None
        decoder = self.stream.decoder
        if isinstance(decoder, FixedRecordStream):  # boundaries are arithmetic
            itemsize = decoder.dtype.itemsize
            first = self.reader.data_offset  # type: ignore[attr-defined]
            boundary = first + -(-max(size - first, 0) // itemsize) * itemsize
            self.stream.restore(StreamState(boundary, b"", None))
            return
        if not self.reader.stream_state_ignores_columns:
            self._read_to(size, keep=False)
        else:
            # Where each record begins is only known by decoding the ones before it, but
            # their rows are dropped: a stream of no column finds the boundaries (and the
            # decoder's state) without making any (200 MB of sparse IT02: 0.16 → 0.06 s),
            # and the follow's stream resumes from its state.
            wanted, self.stream = self.stream, self.reader.batch_stream([], data_end=None)
            try:
                self._read_to(size, keep=False)
            finally:
                skipped, self.stream = self.stream, wanted
            self.stream.restore(skipped.checkpoint())
        if decoder.pending:  # a record cut at ``size``: skip it once it is complete
            self.skip_until = decoder.position + 1
            self.skip_state = self.stream.checkpoint()

    def _read_to(self, size: int, keep: bool = True) -> list[pa.RecordBatch]:
        """Read and decode the bytes up to ``size`` (stopping at an end marker)."""
        assert self.stream is not None and self.reader is not None and self.f is not None
        target = size
        marker = self.reader.acquisition_end(self.f, size)
        if marker is not None and marker.offset >= self.stream.read_position:
            target = marker.offset
        if self.skip_until:
            self._complete_skipped_record(size)
            if self.error is not None:
                return []
        out = self._read_plain(target, keep)
        if marker is not None and target == marker.offset:
            if self.stream.position == marker.offset and not self.stream.decoder.pending:
                self.candidate = (marker, size)
            elif target < size:  # the records do not land on it: not a marker, read on
                out.extend(self._read_plain(size, keep))
        return out

    def _read_plain(self, size: int, keep: bool) -> list[pa.RecordBatch]:
        assert self.stream is not None and self.f is not None
        out: list[pa.RecordBatch] = []
        self.f.seek(self.stream.read_position)
        while self.stream.read_position < size and not self.stream.ended:
            before = self.stream.checkpoint()
            try:
                batches, got = self.stream.read_from(
                    self.f, min(READ_STEP, size - self.stream.read_position))
            except BindfError as exc:  # on_error="raise": keep what came before it
                self.error = exc
                if keep:
                    out.extend(self._rows_before(before, exc))
                break
            if keep:
                out.extend(batches)
            if not got:
                break
        return out

    def _rows_before(self, state: StreamState, error: BindfError) -> list[pa.RecordBatch]:
        """The rows of the records between ``state`` and the damage ``error`` names,
        decoded again from ``state`` up to its offset by a new decoder (the failed one
        may hold part of what it decoded; a record cut at the offset stays undecoded);
        none where the offset is not past ``state``, or when those bytes fail again (a
        decoder that judges a unit by what follows it)."""
        assert self.f is not None
        if error.offset is None or error.offset <= state.read_position:
            return []
        again = self._new_stream()
        again.restore(state)
        self.f.seek(state.read_position)
        try:
            batches, _ = again.read_from(self.f, error.offset - state.read_position)
        except BindfError:
            return []
        return batches

    def _new_stream(self) -> BatchStream:
        """A decoder of this file's records as the follow decodes them, at its start."""
        assert self.reader is not None
        return self.reader.batch_stream(self.follower.reader_columns(self.reader),
                                        data_end=None)

    def _complete_skipped_record(self, size: int) -> None:
        """Feed exactly the bytes that complete the record cut at the start of a
        start="end" follow, dropping its rows: the fewest new bytes that move the decoder
        past its start, or into damage, found by galloping then bisecting on throwaway
        decoders. Only the follow's own decoder warns of damage (each trial would again),
        and damage that a trial raises at (``on_error="raise"``) is where the search
        ends, not the follow: a trial fed all the new bytes raised at damage records
        after the skipped one, and the rows of the records between were lost. Damage
        the follow's decoder raises at here ends the follow (:attr:`error`)."""
        assert self.stream is not None and self.reader is not None and self.f is not None
        state = self.skip_state
        assert state is not None
        self.f.seek(state.read_position)
        new = self.f.read(size - state.read_position)

        def completes(n: int) -> bool:
            trial = self._new_stream()
            trial.restore(state)
            try:
                with WarningSink().active():  # (dropped: the follow's decoder warns)
                    trial.feed(new[:n])
            except BindfError:
                return True  # damage: the follow's decoder is to meet it too
            return trial.position >= self.skip_until

        if not new or not completes(len(new)):
            self.stream.feed(new)  # still incomplete: drop nothing yet, wait
            self.skip_state = self.stream.checkpoint()
            return
        low, high = 0, 1
        while not completes(high):
            low, high = high, min(2 * high, len(new))
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if completes(mid) else (mid, high)
        self.skip_until, self.skip_state = 0, None
        try:
            self.stream.feed(new[:high])
        except BindfError as exc:  # on_error="raise", in the skipped record: no rows
            self.error = exc

    def _finish(self) -> list[pa.RecordBatch]:
        """The file ended: hand out what the decoder buffered (and warn about an
        incomplete last record, as ``read`` does)."""
        if self.stream is None or self.error is not None:
            return []
        try:
            return self.stream.finish()
        except BindfError as exc:  # on_error="raise": the rows before it are out already
            self.error = exc
            return []

    def finish(self) -> list[pa.RecordBatch]:
        """The file will not grow any more (idle, or a later file appeared)."""
        if self.done:
            return []
        self.done = True
        if self.reader is None:
            if self.header_error is not None:
                raise self.header_error
            return []  # (a path that never became a file: see Follower._skip_missing)
        if self.stream is None:  # never settled: the file as it is now decides
            self._open(force=True)
            if self.stream is None and self.header_error is not None:
                raise self.header_error  # what reading the file now would raise
            if self.whole:
                return self._read_whole(final=True)
        batches, self.held, self.candidate = self.held, [], None
        if self.stream is not None:
            batches += self._read_to(os.stat(self.path).st_size)
        self.header = self._header_at_end()
        if self.candidate is not None:  # the records end on the marker: the end after all
            self.header = {**self.header, **self.candidate[0].header}
            self.ended_by = "end_marker"
        return batches + self._finish()

    def _header_at_end(self) -> dict[str, Any]:
        """The header as the finished file holds it (before any end-marker keys): an
        instrument may write it in place when it stops (a record count), and a read of
        the finished file gives that one. The header as opened when the file's header no
        longer opens, or now gives other columns (not this run's any more)."""
        assert self.reader is not None
        follower = self.follower
        try:
            with WarningSink().active():  # (its damage is the stream's to report)
                again = open_reader(Source(self.path), self.reader.name,
                                    on_error=follower.on_error, **follower.options)
        except (BindfError, OSError, EOFError):
            return self.header
        if again.schema != self.reader.schema:
            return self.header
        return again.header_before_end()

    def _offset(self) -> int:
        return self.stream.read_position if self.stream is not None else 0

    @property
    def never_appeared(self) -> bool:
        """The path has not been a file since it was taken up (no header error either:
        a file that was there and went is a change, see :meth:`poll`)."""
        return (self.reader is None and self.header_error is None
                and not os.path.exists(self.path))

    @property
    def bytes_read(self) -> int:
        """Bytes of the file read so far (a file written in one go: all, once read)."""
        if self.whole and self.done and self.reader is not None:
            return self.reader.source.size
        return self._offset()

    def _stop(self, message: str, offset: int) -> list[pa.RecordBatch]:
        """End the file as changed, with a warning; return the rows held back with an
        end-marker candidate (complete rows of what was read: not lost)."""
        self.done, self.ended_by = True, "changed"
        warn(FileChangedWarning(message, path=self.path, offset=offset))
        held, self.held = self.held, []
        return held

    @property
    def errors(self) -> dict[str, int]:
        """Damage skipped so far: the stream's (records, readouts …) and the reader's,
        which counts what it finds in the decoded values (a declared format's text that
        is not text)."""
        counts = []
        if self.reader is not None:
            counts.append(self.reader.errors)
        if self.stream is not None and not any(self.stream.errors is c for c in counts):
            counts.append(self.stream.errors)
        return summed_errors(counts)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


class Follower(Iterator[FrameT], Generic[FrameT]):
    """Iterator of frames of the rows appended to one or more files; see :func:`follow`.

    Also a context manager (leaving the ``with`` block closes it). Attributes for status
    displays: :attr:`path` (the file being followed), :attr:`paths` (every file so far),
    :attr:`header` (the latest frame's; once its file ended, as the finished file holds
    it), :attr:`rows`, :attr:`bytes` and :attr:`errors` (totals so far),
    :attr:`ended_by` (why iteration stopped).
    """

    def __init__(self, source: FollowSources, *,
                 poll_interval: float = 0.5, idle_timeout: float | None = 60.0,
                 output: Output | str = "pandas", columns: Sequence[str] | None = None,
                 batch_size: int | None = None, include_file_paths: str | None = None,
                 start: str = "begin", on_error: str = "raise", format: str | None = None,
                 dtype_backend: DtypeBackend | None = None, **options: Any) -> None:
        check_output(output, dtype_backend)
        # Options are checked now, not when the file appears (maybe a minute later):
        # those of ``format``, or without one, names that some format takes.
        check_names("follow", options, option_names(format))
        check_option_values(options, format)
        if start not in START_CHOICES:
            raise ValueError(f"start must be one of {START_CHOICES}, not {start!r}")
        check_seconds("poll_interval", poll_interval, positive=True)
        check_seconds("idle_timeout", idle_timeout, positive=False, optional=True)
        if on_error not in ON_ERROR_CHOICES:  # (a reader would say so when the file appears)
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {on_error!r}")
        if options.get("fill_gaps"):
            raise ValueError("follow does not take fill_gaps=True (the gaps of a sparse IT02 "
                             "file are filled in a whole read): read the file with "
                             "fill_gaps=True once it is complete")
        check_count("batch_size", batch_size, 1)
        items = [source] if isinstance(source, (str, os.PathLike)) or is_source_object(
            source) else list(source)
        if not items:
            raise FileNotFoundError("no file to follow was given")
        for item in items:
            if is_source_object(item):  # (bytes, a file object: a reader's data)
                raise TypeError(f"bindf.follow polls files on disk, named by their paths, "
                                f"not {type(item).__name__} data: pass the path of the file "
                                "the instrument writes")
        # (file:// URLs are local paths, as for every reader; bytes paths decoded)
        self.patterns = [_local_path(source_path_text(p)) for p in items]
        remote = [p for p in self.patterns if _is_url(p)]
        if remote:
            raise ValueError(f"bindf.follow follows local files only (polled with os.stat), "
                             f"not {remote[0]!r}")
        compressed = [p for p in self.patterns if compression_of(p) is not None]
        if compressed:  # its bytes appended so far do not decompress to whole rows
            raise ValueError(f"bindf.follow follows the files an instrument writes, not "
                             f"compressed ones ({compressed[0]!r}): read it with "
                             "bindf.read_* once it is complete")
        self.poll_interval = float(poll_interval)
        self.idle_timeout = idle_timeout
        self.output = output
        self.dtype_backend = dtype_backend
        self.columns = None if columns is None else \
            ([columns] if isinstance(columns, str) else list(columns))
        self.batch_size = batch_size
        self.include_file_paths = include_file_paths
        self.start = start
        self.on_error = on_error
        self.format = format
        self.options = options
        #: Totals so far, and the file and header of the latest frame (the header as
        #: the file ended, once it did).
        self.rows = 0
        self.bytes = 0
        self.path: str | None = None
        self.header: dict[str, Any] | None = None
        self.format_name: str | None = None
        #: Why iteration stopped: "end_marker", "idle", "closed", "interrupted", "changed",
        #: "data_end" (see the file ends in :func:`follow`).
        self.ended_by: str | None = None
        #: Every file followed so far, in order.
        self.paths: list[str] = []
        self._errors_by_path: dict[str, dict[str, int]] = {}
        self._schema: pa.Schema | None = None
        self._tail: _Tail | None = None
        self._stop_requested = False
        self._bytes_before = 0  # bytes of the files finished before the current one
        #: start="end": the size of each file that exists now (where its rows begin).
        self._sizes_at_start = {p: os.stat(p).st_size for p in self._candidates()
                                if os.path.exists(p)}
        # The iteration and the files' tails refer to the follower weakly: a follower
        # dropped without close() (a consumer's loop that raised) is freed at once, and
        # __del__ closes the file it was reading (a reference cycle kept it open until
        # the garbage collector ran: on Windows, the instrument could not rename it).
        # Inside it, the generators it delegates to are called on the class with the
        # proxy (``self._to_frames`` would bind the follower itself, strongly).
        self._frames = Follower._run(weakref.proxy(self))

    # -- iterator / context manager -----------------------------------------------------------
    def __iter__(self) -> Follower[FrameT]:
        return self

    def __next__(self) -> FrameT:
        return next(self._frames)  # type: ignore[return-value]  # (a FrameT, of output=)

    def __enter__(self) -> Follower[FrameT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_frames", None) is None:  # (__init__ may have raised)
            return
        # The file first: freed by the garbage collector (the follower in a cycle of
        # the caller's), the iteration's weak proxy is dead already, and closing the
        # iteration meets it (a ReferenceError, from its clean-up).
        if self._tail is not None:
            self._tail.close()
        with contextlib.suppress(ReferenceError):
            self._frames.close()

    def stop(self) -> None:
        """Ask the iteration to end at its next poll, as if Ctrl-C was pressed: safe to
        call from a signal handler or another thread (``close`` is not)."""
        self._stop_requested = True

    @property
    def errors(self) -> dict[str, int]:
        """Damage skipped so far (``on_error="warn"|"skip"``), summed over every file."""
        return summed_errors(self._errors_by_path.values())

    def close(self) -> None:
        """Stop following and close the file (frames already yielded stay valid)."""
        if self.ended_by is None:
            self.ended_by = "closed"
        self._frames.close()
        if self._tail is not None:
            self._tail.close()

    # -- files ------------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        """Every file the patterns name right now, each once, in the order given (a
        glob's matches in name order), as ``bindf.read`` takes a list. A plain path
        counts even before it exists: the follower waits for it."""
        found: dict[str, None] = {}
        for pattern in self.patterns:
            if has_glob_chars(pattern) and not os.path.exists(pattern):
                found.update(dict.fromkeys(sorted(
                    p for p in globbing.glob(pattern, recursive=True) if os.path.isfile(p))))
            else:
                found[pattern] = None
        return list(found)

    @property
    def _single(self) -> bool:
        return len(self.patterns) == 1 and not (has_glob_chars(self.patterns[0])
                                                and not os.path.exists(self.patterns[0]))

    def _next_file(self, done: set[str], *, existing: bool = False) -> str | None:
        """The first file not followed yet (``existing``: of those that exist now)."""
        for path in self._candidates():
            if path not in done and (not existing or os.path.exists(path)):
                return path
        return None

    def _skip_missing(self, path: str, done: set[str]) -> None:
        """The listed ``path`` never became a file, and the follow moved past it (a
        later file exists, or it ended idle): a warning, the rows of the files that
        came kept. (A follow where no file came raises at its idle end: see _run.)"""
        warn(BindfWarning("the file was never written while it was followed: skipped",
                          path=path))
        done.add(path)
        if path in self.paths:  # (taken up while it was waited for: not followed)
            self.paths.remove(path)

    # -- columns -------------------------------------------------------------------------------
    def reader_columns(self, reader: FormatReader) -> list[str]:
        """Columns to decode: the requested ones that the format has (the first column when
        only ``include_file_paths`` is asked for: rows come from the data)."""
        if self.columns is None:
            return list(reader.schema.names)
        extra = {self.include_file_paths}
        wanted = [c for c in self.columns if c not in extra]
        check_columns_known(path_text(reader.path), wanted,
                            reader.schema.names + [c for c in extra if c])
        return wanted or reader.schema.names[:1]

    def check_compatible(self, reader: FormatReader) -> None:
        if self._schema is None:
            self._schema = reader.schema
            if self.include_file_paths and self.include_file_paths in reader.schema.names:
                raise ValueError(f"column name {self.include_file_paths!r} already exists in "
                                 f"the {reader.name} data")
        elif reader.schema != self._schema:
            raise BindfError(f"cannot follow together with the files before it: its columns "
                             f"differ ({reader.schema.names} vs {self._schema.names})",
                             path=reader.path)

    def _output_names(self, batch_names: list[str]) -> list[str]:
        names = list(batch_names)
        if self.include_file_paths:
            names.append(self.include_file_paths)
        if self.columns is None:
            return names
        return with_extra_columns(self.columns, None, self.include_file_paths)

    # -- frames -------------------------------------------------------------------------------
    def _to_frames(self, tail: _Tail, batches: list[pa.RecordBatch],
                   always: bool = False) -> Iterator[Frame]:
        # every poll and finish of a tail comes here, with or without rows
        self._errors_by_path[tail.path] = tail.errors
        if tail.done and tail.path == self.path:  # its header as it ended, frame or not
            self.header = tail.header
        if not batches and not always:
            return
        assert tail.reader is not None
        if batches:
            table = pa.Table.from_batches(batches)
        else:
            columns = self.reader_columns(tail.reader)
            table = pa.Table.from_batches([empty_batch(
                pa.schema([tail.reader.schema.field(c) for c in columns]),
                tail.reader.dictionaries)])
        if self.include_file_paths:  # (as a read makes it: see ReadPlan.path_type)
            kind = path_type_for(self.output, self.dtype_backend)
            table = table.append_column(
                pa.field(self.include_file_paths, kind, nullable=False),
                pa.chunked_array(path_chunks([(tail.path, table.num_rows)], kind), kind))
        table = table.select(self._output_names(table.schema.names[
            :table.num_columns - (1 if self.include_file_paths else 0)]))
        self.path, self.header, self.format_name = tail.path, tail.header, tail.reader.name
        self.bytes = self._bytes_before + tail.bytes_read
        info = build_info(tail.reader.name, tail.header, tail.path, tail.errors or None)
        # Frames before the last of this poll come before the acquisition's end: its
        # keys (acquisition_end_ns) are None there, as in the frames of earlier polls.
        before_end = build_info(tail.reader.name, tail.reader.header_before_end(tail.header),
                                tail.path, tail.errors or None)
        size = self.batch_size or max(table.num_rows, 1)
        starts = range(0, max(table.num_rows, 1), size)
        for start in starts:
            piece = table.slice(start, size)
            if not piece.num_rows and not always:
                continue
            self.rows += piece.num_rows
            yield table_to_output(piece, self.output,
                                  dict(info if start == starts[-1] else before_end),
                                  self.dtype_backend)

    def _raise_error_of(self, tail: _Tail) -> None:
        """Raise the damage that ended ``tail`` under on_error="raise" (once the frames
        of the rows before it are out)."""
        if tail.error is not None:
            self.ended_by = "error"
            raise ensure_bindf_path(tail.error, tail.path)

    def _final_frames(self, tail: _Tail) -> Iterator[Frame]:
        """The frames of what ``tail`` still holds, its file growing no more (then the
        damage that ended it, under on_error="raise")."""
        try:
            batches = tail.finish()
        except BindfError as exc:
            raise ensure_bindf_path(exc, tail.path) from None
        yield from Follower._to_frames(self, tail, batches)
        self._raise_error_of(tail)

    def _retire(self, tail: _Tail, done: set[str]) -> None:
        """``tail``'s file is finished: close it, and the next file's bytes count on."""
        tail.close()
        done.add(tail.path)
        self._tail = None
        self._bytes_before = self.bytes

    def _idle_since(self, last_activity: float) -> bool:
        """``idle_timeout`` has passed since ``last_activity`` (never, without one)."""
        return self.idle_timeout is not None and \
            time.monotonic() - last_activity >= self.idle_timeout

    def _run(self) -> Iterator[Frame]:
        done: set[str] = set()
        came = False  # whether any file was followed (one that never appeared was not)
        last_activity = time.monotonic()
        try:
            while not self._stop_requested:
                tail = self._tail
                if tail is None:
                    path = self._next_file(done)
                    if path is not None:
                        start = self._sizes_at_start.get(path) if self.start == "end" else None
                        tail = self._tail = _Tail(path, self, start)  # (self: a proxy)
                        self.paths.append(path)
                if tail is not None:
                    try:
                        batches, active = tail.poll()
                    except BindfError as exc:
                        raise ensure_bindf_path(exc, tail.path) from None
                    yield from Follower._to_frames(self, tail, batches,
                                               always=tail.ended_by == "end_marker")
                    if active:  # (after the frames: the caller's time with them is not idle)
                        last_activity = time.monotonic()
                    self._raise_error_of(tail)
                    if tail.done:
                        self._retire(tail, done)
                        came = True
                        if self._single or tail.ended_by == "changed":
                            self.ended_by = tail.ended_by
                            return
                        continue
                    # A file that already exists after this one: the writer moved on, and
                    # this one is finished once a poll finds nothing new, or once the
                    # follow is idle (idle_timeout=0 ended before reading the later files).
                    if (not active or self._idle_since(last_activity)) and self._next_file(done | {tail.path},
                                                                existing=True) is not None:
                        if tail.never_appeared:
                            self._skip_missing(tail.path, done)
                        else:
                            yield from Follower._final_frames(self, tail)
                            came = True
                        self._retire(tail, done)
                        continue
                if self._idle_since(last_activity):
                    self.ended_by = "idle"
                    if tail is not None and not tail.never_appeared:
                        yield from Follower._final_frames(self, tail)
                        done.add(tail.path)
                        came = True
                    if not came:
                        if self._single:  # (its own name: the message tests know it)
                            raise FileNotFoundError(f"{self.patterns[0]} did not appear "
                                                    f"within idle_timeout={self.idle_timeout} s")
                        raise FileNotFoundError(
                            f"no file {' or '.join(map(repr, self.patterns))} appeared "
                            f"within idle_timeout={self.idle_timeout} s")
                    # listed paths that never became files (the tail among them)
                    for path in self._candidates():
                        if path not in done and not os.path.exists(path):
                            self._skip_missing(path, done)
                    return
                try:
                    time.sleep(self.poll_interval)
                except KeyboardInterrupt:
                    self._stop_requested = True
            self.ended_by = "interrupted"
        finally:
            if self._tail is not None:
                self._tail.close()


@overload
def follow(source: FollowSources, *, output: Literal["pandas"] = ...,
           poll_interval: float = ..., idle_timeout: float | None = ...,
           columns: Sequence[str] | None = ..., batch_size: int | None = ...,
           include_file_paths: str | None = ..., start: str = ..., on_error: str = ...,
           format: str | None = ...,
           dtype_backend: DtypeBackend | None = ..., **options: Any) -> Follower[pd.DataFrame]: ...
@overload
def follow(source: FollowSources, *, output: Literal["polars"],
           poll_interval: float = ..., idle_timeout: float | None = ...,
           columns: Sequence[str] | None = ..., batch_size: int | None = ...,
           include_file_paths: str | None = ..., start: str = ..., on_error: str = ...,
           format: str | None = ...,
           dtype_backend: None = ..., **options: Any) -> Follower[pl.DataFrame]: ...
@overload
def follow(source: FollowSources, *, output: Literal["arrow"],
           poll_interval: float = ..., idle_timeout: float | None = ...,
           columns: Sequence[str] | None = ..., batch_size: int | None = ...,
           include_file_paths: str | None = ..., start: str = ..., on_error: str = ...,
           format: str | None = ...,
           dtype_backend: None = ..., **options: Any) -> Follower[pa.Table]: ...
@overload
def follow(source: FollowSources, *, output: str,
           poll_interval: float = ..., idle_timeout: float | None = ...,
           columns: Sequence[str] | None = ..., batch_size: int | None = ...,
           include_file_paths: str | None = ..., start: str = ..., on_error: str = ...,
           format: str | None = ...,
           dtype_backend: DtypeBackend | None = ..., **options: Any) -> Follower[Frame]: ...
def follow(source: FollowSources, *,
           poll_interval: float = 0.5, idle_timeout: float | None = 60.0,
           output: Output | str = "pandas", columns: Sequence[str] | None = None,
           batch_size: int | None = None, include_file_paths: str | None = None,
           start: str = "begin", on_error: str = "raise", format: str | None = None,
           dtype_backend: DtypeBackend | None = None, **options: Any) -> Follower[Any]:
    """Follow a file (or a glob of files) while it is being written: an iterator of
    frames, each holding the rows that became complete since the one before.

    A frame never holds part of a record or readout, and no row is repeated or lost: the
    frames of a file put together equal ``bindf.read`` of the finished file, whatever
    pieces the writer flushed (a cut inside the header included). The file is polled
    with ``os.stat`` every ``poll_interval`` seconds and only the new bytes are read (no
    inotify, so network drives and USB disks work).

    Parameters
    ----------
    source:
        A path (or a ``file://`` URL), a glob (``"runs/*.apx"``) or a list of them;
        not bytes or a file object, which have no file to poll (``TypeError``), nor a
        remote or compressed file (``ValueError``). A path that does not exist
        yet, or whose header is still incomplete (a
        :class:`~bindf.errors.TruncatedHeaderError`), is waited for (up to
        ``idle_timeout``); a complete header that is damaged raises its
        :class:`~bindf.errors.HeaderError` at once. Files are followed one after the
        other: a list in its order, a glob's matches in name order; a file that appears
        later is picked up after the current one, and the current one is taken as
        finished once a later file exists and it did not grow for one poll (or the
        follow is idle: ``idle_timeout=0`` reads every file already there). A listed
        path never written by then (or by the idle end) is skipped with a
        :class:`~bindf.errors.BindfWarning`; a follow where no file came raises
        ``FileNotFoundError``.
    poll_interval:
        Seconds between two polls of a file that did not grow.
    idle_timeout:
        Stop once nothing grew (and no new file appeared) for this many seconds (the
        time the caller spends on a frame does not count); then an
        incomplete last record gives a :class:`~bindf.errors.TruncatedFileWarning`, as
        ``read`` does. ``None``: never (stop with ``close()``, ``with`` or Ctrl-C). A
        file or header that never completes raises after this time.
    output:
        ``"pandas"`` (default), ``"polars"`` or ``"arrow"``; every frame carries the
        header like a read's frame (``df.attrs["bindf"]`` / ``df.bindf`` / schema
        metadata).
    columns:
        Columns to decode. The ``include_file_paths`` column is added last whatever
        it names (or where it names it).
    batch_size:
        Most rows per frame (more new rows are split into several frames).
    include_file_paths:
        Name of a column holding each row's file path.
    start:
        ``"begin"`` (default): every row of the file. ``"end"``: like ``tail -f``, only
        records that begin at or after the file's size when following starts (a record
        being written at that moment is skipped). Applies to files that exist when
        following starts; files that appear later are followed from their beginning.
    on_error:
        Damaged records, as in ``read``: ``"raise"``, ``"warn"`` or ``"skip"``. Under
        ``"raise"`` the rows of the complete records before the damage are yielded
        first; the next step of the iteration raises the error.
    format:
        Force the format instead of detecting it.
    dtype_backend:
        pandas output only, as for ``read``: None, ``"numpy_nullable"`` or ``"pyarrow"``.
    **options:
        The format's own read options (``layout=``, ``level=`` …), checked when
        ``follow`` is called (those of ``format``, or without it, names that some
        format takes), as are ``on_error`` and the times. IT02 ``fill_gaps=True`` is
        refused.

    Returns
    -------
    Follower
        An iterator of frames, also a context manager.

    Notes
    -----
    Following ends on the format's own end-of-acquisition marker (a sparse IT02 file's
    mask-0 record: once the records land on it and one poll later the file has not
    grown; the frame that ends the file, possibly empty, then carries
    ``acquisition_end_ns``, which is ``None`` in the frames before), on ``idle_timeout``,
    on ``close()``, on leaving a ``with`` block, and on Ctrl-C while it waits (the
    iteration then simply ends). A file that shrinks, is replaced (another inode) or
    is rewritten from its start (it no longer holds the last bytes of records read)
    gives a :class:`~bindf.errors.FileChangedWarning` naming the byte offset read so far,
    and following stops; frames already yielded are left as they were. A format written
    in one go (FCS1) is read whole once its file opens uncut and its size held for a
    poll (``ended_by == "complete"``). An IT02 file
    whose layout is not given is decoded once 64 KiB of records exist (or its end marker
    or ``idle_timeout`` comes), since the layout is detected from the first records; an
    A-STEP file once 256 KiB exist, unless ``chip=`` and ``ts_order=`` are given (a read
    chooses them from its first 256 KiB).
    """
    return Follower(source, poll_interval=poll_interval, idle_timeout=idle_timeout,
                    output=output, columns=columns, batch_size=batch_size,
                    include_file_paths=include_file_paths, start=start, on_error=on_error,
                    format=format, dtype_backend=dtype_backend, **options)
