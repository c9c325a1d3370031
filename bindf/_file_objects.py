"""In-memory buffers and binary file objects as sources (:class:`ObjectSource`): read in
place, from a seekable object's position, or (a stream) copied once into a temporary file.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
import weakref
from typing import Any, BinaryIO

from ._source import Source
from ._warnings import warn
from .errors import BindfError, CorruptDataError, TruncatedFileWarning, UnknownFormatError

#: Non-seekable streams are copied into a temporary file in pieces of this size.
SPOOL_CHUNK_BYTES = 1 << 20
#: ... which stays in memory up to this size and moves to disk beyond it.
SPOOL_MEMORY_BYTES = 8 << 20


def _is_fsspec_open_file(obj: object) -> bool:
    fsspec = sys.modules.get("fsspec")  # an OpenFile exists only if fsspec is imported
    return fsspec is not None and isinstance(obj, fsspec.core.OpenFile)


def is_source_object(obj: object) -> bool:
    """True for inputs that are data rather than a name: bytes-like objects, objects with
    ``read``/``readinto`` and fsspec ``OpenFile``s."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return True
    if isinstance(obj, (str, os.PathLike)):
        return False
    return hasattr(obj, "read") or hasattr(obj, "readinto") or _is_fsspec_open_file(obj)


def object_source(obj: Any) -> Source:
    """The :class:`Source` of a buffer, a binary file object or an fsspec ``OpenFile``.

    An uncompressed ``OpenFile`` becomes an ordinary remote :class:`Source` on its
    filesystem (ranged reads, no copy); one compressed as bindf decompresses files
    (gzip, bz2, xz, zstd) is read as a compressed file of that name is, keeping every
    byte before a cut; one of another compression is opened (and closed again by bindf)
    and read as a file object.
    """
    if _is_fsspec_open_file(obj):
        name = open_file_name(obj)
        if "b" not in obj.mode:
            raise _text_mode_error(name)
        if obj.compression is None:
            return Source(name, fs=obj.fs, fs_path=obj.path)
        if obj.compression in ("gzip", "bz2", "xz", "zstd"):
            from ._compressed import DecompressedSource

            return DecompressedSource(name, fs=obj.fs, fs_path=obj.path,
                                      compression=obj.compression)
        return ObjectSource(obj.open(), name=name, owned=True)
    return ObjectSource(obj)


def open_file_name(open_file: Any) -> str:
    """The URL of an fsspec ``OpenFile`` (``memory://x.bin``), for messages and metadata."""
    return open_file.fs.unstrip_protocol(open_file.path)


def _text_mode_error(name: str) -> BindfError:
    return BindfError("this file object is opened in text mode, and bindf reads bytes: "
                      "open the file with mode 'rb' (or pass its .buffer)", path=name)


def _object_name(obj: Any) -> str:
    """What metadata and messages call an object source: a file's name when it has one
    (``open(path, "rb")``, ``sys.stdin.buffer`` → ``<stdin>``), else ``<TypeName>``."""
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"<{type(obj).__name__}>"


class ObjectSource(Source):
    """Bytes-like data or a binary file object, read from the object's current position.

    * ``bytes``/``bytearray``/``memoryview``: read in place.
    * A seekable binary file object (``BytesIO``, ``open(path, "rb")``, a zip member, an
      fsspec file): the bytes from its position when the source is made to its end. Every
      read seeks the object first, so the header pass and the data pass (which each reader
      makes) can take turns on the one object.
    * A non-seekable stream (a pipe, ``sys.stdin.buffer``, an HTTP body): read once,
      front to back, in :data:`SPOOL_CHUNK_BYTES` pieces, into an anonymous temporary file
      that stays in memory up to :data:`SPOOL_MEMORY_BYTES` and moves to disk (``TMPDIR``)
      beyond. Memory stays bounded whatever the stream's length; the copy is deleted when
      the source is garbage collected or closed (:meth:`close`). Why a copy: every reader needs
      the size of the data before decoding (to find the last complete record; sparse
      IT02's end marker sits at the very end) and reads the header and the data in two
      passes, which a stream cannot give. Detection and decoding then read the copy.

    bindf never closes an object it did not open. The object's position after a read is
    unspecified. Text-mode files raise :class:`~bindf.errors.BindfError`.
    """

    def __init__(self, obj: Any, name: str | None = None, *, owned: bool = False) -> None:
        self._memory: memoryview | None = None
        self._file: Any = None
        self._start = 0
        # One seek-and-read at a time on the object: the views of parallel reads (the
        # record ranges of a large fixed-record file) share its one position.
        self._file_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        if isinstance(obj, (bytes, bytearray, memoryview)):
            self._memory = memoryview(obj).cast("B")
            size = len(self._memory)
            name = name or f"<{type(obj).__name__}>"
        else:
            name = name or _object_name(obj)
            # Closed with the source: the stream's copy, and the object if bindf opened it
            # (a compressed OpenFile). Never an object the caller passed in.
            to_close = [obj] if owned else []
            try:
                if isinstance(obj, io.TextIOBase):
                    raise _text_mode_error(name)
                if getattr(obj, "closed", False) is True:
                    raise BindfError("this file object is closed: pass it while it is "
                                     "open (inside its `with` block)", path=name)
                start = _seekable_start(obj)
                remaining = None if start is None else _remaining_bytes(obj, start, name)
                if start is None or remaining is None:
                    self._file, size = _spool(obj, name)
                    to_close.insert(0, self._file)
                else:
                    self._file, self._start, size = obj, start, remaining
                if size == 0 and start:  # read before: "file is empty" would mislead
                    raise UnknownFormatError(
                        f"nothing left to read: the file object is at its end (position "
                        f"{start}), where bindf starts reading; seek(0) to read it from "
                        "the start", path=name, offset=start)
            except BaseException:
                _close_all(*to_close)
                raise
            if to_close:
                self._finalizer = weakref.finalize(self, _close_all, *to_close)
        super().__init__(name, {}, size=size)

    def __post_init__(self) -> None:  # a name such as "s3://…" must not make it remote
        pass

    @property
    def reads_whole_when_held(self) -> bool:
        return False  # open() ignores held files: every read is a view of the object

    @property
    def reads_in_parallel(self) -> bool:
        # Bytes in memory, yes. A file object has one position, which its views take in
        # turn, and seeking a decompressing stream (gzip, a zip member) backwards starts
        # it over from the beginning: parts read side by side would be slower.
        return self._memory is not None

    def open(self) -> BinaryIO:
        """A fresh read-only view (closing it leaves the object open)."""
        return io.BufferedReader(_ObjectView(self._memory, self._file, self._start, self.size,
                                             self._file_lock, self.path),
                                 buffer_size=64 << 10)  # type: ignore[return-value]

    def close(self) -> None:
        """Delete the temporary copy of a stream (and close what bindf opened)."""
        if self._finalizer is not None:
            self._finalizer()

    # Dataclass equality would call two buffers of the same name and size equal.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __reduce__(self) -> Any:
        if self._memory is not None:  # bytes pickle; a file object does not
            return (ObjectSource, (bytes(self._memory), self.path))
        raise TypeError(f"{self.path}: a file-object source cannot be sent to another "
                        "process (e.g. a dask worker); pass a path or bytes instead")

    def __repr__(self) -> str:
        return f"ObjectSource({self.path!r}, size={self.size})"


def _close_all(*files: Any) -> None:
    for f in files:
        f.close()


def _seekable_start(obj: Any) -> int | None:
    """The object's current position if it can seek (``None`` for a stream)."""
    try:
        seekable = getattr(obj, "seekable", None)  # (SpooledTemporaryFile < 3.11 has none)
        if seekable is not None and not seekable():
            return None
        return int(obj.tell())
    except (AttributeError, OSError, ValueError):
        return None


def _remaining_bytes(obj: Any, start: int, name: str) -> int | None:
    """Bytes from ``start`` to the end of a seekable object, leaving it at ``start``
    (``None`` if it cannot seek to its end: it is then read as a stream)."""
    try:
        obj.seek(0, io.SEEK_END)
        end = int(obj.tell())
    except Exception:  # noqa: BLE001 - no seek (io.UnsupportedOperation), or a
        # decompressing file object that meets a cut (EOFError) or damage on the way:
        # read as a stream, whose copy keeps what comes before and says what happened
        end = None
    try:
        obj.seek(start)
    except Exception as exc:  # noqa: BLE001
        # It went to its end (or part of the way: a decompressing file over a pipe
        # reads up to a cut before it fails) and cannot come back; a stream whose seek
        # fails altogether (only tell()) did not move, and is read as a stream.
        if end is not None or _position(obj) != start:
            raise BindfError(f"this file object cannot seek back to where it was ({exc})",
                             path=name, offset=start) from None
    return None if end is None else max(end - start, 0)


def _position(obj: Any) -> int | None:
    try:
        return int(obj.tell())
    except Exception:  # noqa: BLE001 - no position to tell: not where it was either
        return None


def _spool(stream: Any, name: str) -> tuple[Any, int]:
    """Copy a stream into an anonymous temporary file; return the file and the size.

    A decompressing file object (``gzip.open``, ``bz2.open`` …) that meets a cut raises
    ``EOFError``: the copy keeps what it gave before, with a
    :class:`~bindf.errors.TruncatedFileWarning` (such objects drop what they decompressed
    in the call that reaches the cut: bindf's own decompression of a path keeps it).
    Damaged compressed data is a :class:`~bindf.errors.CorruptDataError`. Offsets count
    the bytes the stream gave."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    size = 0
    try:
        try:
            # readinto1 where there is one: a buffered stream's readinto fills the whole
            # piece in many reads, and a decompressing one that meets a cut in any of
            # them drops them all; readinto1 gives what one read gave. (An object that
            # inherits readinto1 but has no read1 refuses it: then readinto.)
            methods = [m for m in (getattr(stream, "readinto1", None),
                                   getattr(stream, "readinto", None)) if m is not None]
            if methods:
                piece = bytearray(SPOOL_CHUNK_BYTES)
                view = memoryview(piece)
                while True:
                    try:
                        n = methods[0](view)
                    except io.UnsupportedOperation:
                        if len(methods) == 1:
                            raise
                        methods.pop(0)
                        continue
                    if not n:
                        break
                    spool.write(view[:n])
                    size += n
            else:
                while data := stream.read(SPOOL_CHUNK_BYTES):
                    if isinstance(data, str):
                        raise _text_mode_error(name)
                    spool.write(data)
                    size += len(data)
        except EOFError as exc:
            warn(TruncatedFileWarning(
                f"the stream ended with an error ({exc}): a compressed file cut short? "
                f"Reading the {size:,} bytes it gave before; a decompressing file object "
                "drops what it decompressed in the call that met the cut, so pass the "
                "compressed file's path instead: bindf keeps every byte before the cut",
                path=name, offset=size))
        except Exception as exc:
            if not _is_damaged_data(exc):
                raise
            raise CorruptDataError(f"cannot read this stream's data ({exc})", path=name,
                                   offset=size) from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, size


def _is_damaged_data(exc: Exception) -> bool:
    """``exc`` says a decompressing stream met damaged data (not that the disk or the
    network failed: those carry an errno, or are other errors)."""
    import lzma
    import zlib

    if isinstance(exc, (zlib.error, lzma.LZMAError)):
        return True
    if type(exc).__name__ in ("ZstdError", "BadGzipFile"):  # zstandard, compression.zstd
        return True
    return type(exc) is OSError and exc.errno is None  # bz2's "Invalid data stream"


class _ObjectView(io.RawIOBase):
    """Read-only window ``[start, start + size)`` of a buffer or a seekable file object,
    with positions counted from ``start``. It keeps its own position and seeks the object
    before reading (holding ``lock`` from the seek to the end of the read), so several
    views of one object can be used in turn or by several threads."""

    def __init__(self, memory: memoryview | None, file: Any, start: int, size: int,
                 lock: threading.Lock, name: str) -> None:
        super().__init__()
        self._memory = memory
        self._file = file
        self._name = name
        self._lock = lock
        self._start = start
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        n = max(min(len(target), self._size - self._position), 0)
        if n == 0:
            return 0
        if self._memory is not None:
            target[:n] = self._memory[self._position : self._position + n]
            got = n
        else:
            with self._lock:
                if getattr(self._file, "closed", False) is True:
                    raise BindfError("this file object was closed while bindf read it: "
                                     "keep it open until the read (or the iteration of "
                                     "its chunks, or a scan's collect) ends",
                                     path=self._name, offset=self._start + self._position)
                self._file.seek(self._start + self._position)
                if hasattr(self._file, "readinto"):
                    got = self._file.readinto(target[:n]) or 0
                else:
                    data = self._file.read(n)
                    if isinstance(data, str):
                        raise _text_mode_error(self._name)
                    got = len(data)
                    target[:got] = data
        self._position += got
        return got
