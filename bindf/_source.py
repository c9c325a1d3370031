"""Where bytes come from: :class:`Source`, one input file (a local path, a ``file://``
URL or, with fsspec, a remote one), opened once per read (:meth:`Source.held`), and the
reads of its bytes into arrays (:func:`read_into`, :func:`iter_fixed_records`).

What a user may pass as a source and how it becomes :class:`Source` objects (globs,
lists, storage options) is :mod:`bindf._inputs`; buffers and binary file objects are
:mod:`bindf._file_objects`, compressed files :mod:`bindf._compressed`.

Readers never memory-map by default. Acquisitions are often still being written, or
truncated by a crashed DAQ while somebody reads them, and a ``mmap`` of a file that
shrinks kills the interpreter with ``SIGBUS``. Instead every read goes through
``readinto`` on an ordinary file object, and the file size is measured once when the
reader opens the file: records appended later are ignored, and a file that shrinks
shows up as a short read, which becomes a truncation warning.
"""

from __future__ import annotations

import errno
import io
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ._kernels import _fields
from .errors import BindfError, missing_dependency

_GLOB_CHARS = frozenset("*?[")


def has_glob_chars(text: str) -> bool:
    """Whether ``text`` holds a character that makes it a glob pattern (``* ? [``)."""
    return not _GLOB_CHARS.isdisjoint(text)


def _is_url(path: str) -> bool:
    """True for fsspec URLs (``memory://``, ``s3://``, ``simplecache::…``); ``file://``
    URLs are read as local paths, without fsspec."""
    return "://" in path and not path.startswith("file://")


def user_path(path: str) -> str:
    """``~`` and ``~user`` at the start of a local path expanded, as pandas and polars
    readers do (a URL is left alone)."""
    return os.path.expanduser(path) if path.startswith("~") else path


def _local_path(path: str) -> str:
    if not path.startswith("file://"):
        return path
    path = path[len("file://") :]
    if path.startswith("localhost/"):
        path = path[len("localhost") :]
    if os.name == "nt" and re.match(r"/[A-Za-z]:", path):  # file:///C:/data → C:/data
        path = path[1:]
    return path


@dataclass


class Source:
    """One input file. ``size`` is measured once, when the source is opened.

    A remote source keeps the fsspec filesystem it was found on (``fs``, ``fs_path``):
    re-parsing the URL text later would lose what the URL does not spell out (chained
    caches, host names, a filesystem instance given by a glob). Sources pickle, so dask
    tasks receive them whole.
    """

    path: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    size: int = -1
    fs: Any = field(default=None, repr=False, compare=False)
    fs_path: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.fs is None and _is_url(self.path):
            self.fs, self.fs_path = _fsspec_filesystem(self.path, self.storage_options)
        if self.size < 0:
            self.size = self._measure()

    @property
    def is_remote(self) -> bool:
        return self.fs is not None

    @property
    def uncompressed_name(self) -> str:
        """The name without the suffix of a compression bindf undid (``run.log.gz`` →
        ``run.log``): what the file's extension says about its format."""
        return self.path

    @property
    def planning_size(self) -> int:
        """The size a read plans its speed with before the file's turn (which files to
        decode in the consuming thread): :attr:`size`, or an estimate where only reading
        the file would tell (a compressed file), or -1 (unknown)."""
        return self.size

    @property
    def known_size(self) -> int:
        """:attr:`size` if knowing it reads nothing, else -1 (a compressed file not
        decompressed yet): what a promise about memory is planned with."""
        return self.size

    @property
    def reads_whole_when_held(self) -> bool:
        """Whether :meth:`held` reads a small file of this source whole into memory
        (local files; remote ones are read in ranges, objects are in memory already)."""
        return self.fs is None

    @property
    def reads_in_parallel(self) -> bool:
        """Whether threads may read far-apart parts of this source side by side at no
        extra cost (a local file; not a remote one, whose reads are network requests)."""
        return self.fs is None

    def _measure(self) -> int:
        if self.fs is not None:
            try:
                size = self.fs.size(self.fs_path)
            except FileNotFoundError:  # fsspec names the path without its protocol
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.path) from None
            if size is None:  # e.g. an HTTP server that sends no Content-Length
                raise OSError(f"{self.path}: the size of this remote file is unknown, "
                              "and bindf needs it to find the last complete record")
            return int(size)
        return os.stat(_local_path(self.path)).st_size

    def open(self) -> BinaryIO:
        """Open for binary reading (the caller closes it).

        Inside :meth:`held`, hand out a view of the one held file instead (at the start,
        with a position of its own; closing it does nothing), so that a reader's header
        and data reads share it; a small file held in memory gives a new in-memory file
        over the same bytes.
        """
        held = _held_files().get(id(self))
        if held is not None:
            if isinstance(held.content, bytes):
                return io.BytesIO(held.content)  # shares the bytes: no copy
            return _HeldFile(held)  # type: ignore[return-value]
        if self.fs is not None:
            f = self.fs.open(self.fs_path, "rb")
            # fsspec's memory filesystem hands every open of a path the same file object
            if isinstance(f, io.BytesIO):
                return _OwnPosition(f)  # type: ignore[return-value]
            return f
        return open(_local_path(self.path), "rb")  # noqa: SIM115 - caller closes

    def held_bytes(self) -> bytes | None:
        """The whole file, when :meth:`held` holds it in memory in this thread (else
        ``None``): a reader may decode from it directly, without a file object."""
        held = _held_files().get(id(self))
        return held.content if held is not None and isinstance(held.content, bytes) else None

    def held(self, *, small_whole: bool = True) -> _Holding:
        """Open the file once for everything done with this source inside the block
        (detection, header, data): one ``open`` per file instead of two or three, which
        is most of the cost of reading thousands of small files. A local file of up to
        :data:`HOLD_IN_MEMORY_BYTES` is read whole right away, with one ``read``, unless
        ``small_whole`` is false (a block that reads the header only).

        The held file belongs to the current thread: other threads reading the same
        source (dask partitions of one file) open their own. Blocks of one source may
        nest or interleave in a thread (a second pass over a ``bindf.open`` object
        started while the first is paused between batches): they share the file, each
        :meth:`open` reads at its own position, and the last block to end closes it."""
        return _Holding(self, small_whole)

    def read_head(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if the file is shorter); for format detection."""
        with self.open() as f:
            return f.read(min(n, max(self.size, 0)) if self.size >= 0 else n)


#: Local files up to this size are read whole, with one ``read``, when :meth:`Source.held`
#: opens them: the reader's header and data reads then come from memory instead of a
#: handful of system calls each (seek, read, tell, fstat), which is most of what
#: remains of a small file's cost besides decoding. The file is still opened once.
HOLD_IN_MEMORY_BYTES = 256 << 10



def _whole_local_file(path: str, size: int) -> bytes:
    """The first ``size`` bytes of the local file ``path`` (fewer if it is shorter, or
    was cut while it was read: bytes the file no longer holds after the read are left
    out, see :func:`still_in_file`, so the reader sees a truncation).

    On POSIX systems one compiled call opens, reads, checks the size and closes
    (:func:`bindf._kernels._fields.read_local_file`): in Python the file object and the
    calls around the system calls cost as much again as the calls themselves, per file
    of a glob of thousands. Elsewhere :func:`_whole_local_file_in_python`."""
    if _fields.HAVE_PREAD:
        return _fields.read_local_file(path, size)
    return _whole_local_file_in_python(path, size)


def _whole_local_file_in_python(path: str, size: int) -> bytes:
    """:func:`_whole_local_file` with ``os.read`` on the file's descriptor (no buffered
    reader, whose construction costs as much as the read itself for a file of a few
    kilobytes)."""
    # A file object rather than os.open: Ctrl-C lands when a call returns, and a bare
    # descriptor it kept from being assigned would stay open for good (a file object is
    # closed when dropped). It costs ~1.5 µs a file; the reads still go through the fd.
    opened = io.FileIO(path, "r")
    try:
        fd = opened.fileno()
        data = os.read(fd, size)
        if 0 < len(data) < size:  # a short read before the end: read on
            parts = [data]
            got = len(data)
            while got < size:
                more = os.read(fd, size - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        kept = _still_in_descriptor(fd, 0, len(data))
        if kept < len(data):
            data = data[:kept]
    finally:
        opened.close()
    return data


class _Held:
    """One held file of a thread (see :meth:`Source.held`): its content, the number of
    blocks holding it, and which view last moved the file's position."""

    __slots__ = ("content", "holds", "user")

    def __init__(self, content: BinaryIO | bytes) -> None:
        self.content = content
        self.holds = 1
        self.user: _HeldFile | None = None


class _Holding:
    """The context manager of :meth:`Source.held` (a class, not ``@contextmanager``:
    it runs once per file of a multi-file read, where a generator's overhead shows)."""

    __slots__ = ("_source", "_small_whole", "_key", "_files", "_entry")

    def __init__(self, source: Source, small_whole: bool = True) -> None:
        self._source = source
        self._small_whole = small_whole
        self._entry: _Held | None = None

    def __enter__(self) -> Source:
        source = self._source
        self._files = files = _held_files()
        self._key = key = id(source)
        entry = files.get(key)
        if entry is not None:  # already held by an enclosing or interleaved block
            entry.holds += 1
        elif (self._small_whole and source.reads_whole_when_held
              and 0 <= source.size <= HOLD_IN_MEMORY_BYTES):
            entry = files[key] = _Held(_whole_local_file(_local_path(source.path), source.size))
        else:
            entry = files[key] = _Held(source.open())
        self._entry = entry
        return source

    def __exit__(self, *exc: object) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        entry.holds -= 1
        if entry.holds:  # another block still reads it
            return
        del self._files[self._key]
        if not isinstance(entry.content, bytes):
            entry.content.close()


_THREAD_STATE = threading.local()


def _held_files() -> dict[int, _Held]:
    """This thread's held files (see :meth:`Source.held`), by ``id`` of their source."""
    files = getattr(_THREAD_STATE, "held", None)
    if files is None:
        files = _THREAD_STATE.held = {}
    return files


class _HeldFile:
    """A view of a held file (see :meth:`Source.held`) as one of its users sees it: reads
    and seeks go to the file at this view's own position, so that views never move each
    other (two passes over one source may interleave); ``close()`` (and leaving a
    ``with`` block) does nothing."""

    def __init__(self, held: _Held) -> None:
        self._held = held
        self._position = 0

    def _file(self) -> BinaryIO:
        """The held file, at this view's position (a seek only when another view moved
        it since this one's last call)."""
        held = self._held
        f: BinaryIO = held.content  # type: ignore[assignment]
        if held.user is not self:
            f.seek(self._position)
            held.user = self
        return f

    def read(self, size: int = -1) -> bytes:
        data = self._file().read(size)
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._file().readinto(buffer) or 0
        self._position += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = self._file().seek(offset, whence)
        return self._position

    def tell(self) -> int:
        return self._position

    def __enter__(self) -> _HeldFile:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:  # fileno, name, seekable …: no moves
        return getattr(self._file(), name)


class _OwnPosition:
    """A reader's own view of an in-memory file that every open returns (fsspec's
    ``memory://`` gives each ``open`` of a path the same ``BytesIO``: readers in threads,
    the two files of ``[p, p]`` or two scans of one ``collect_all`` moved each other's
    position, and got rows of the wrong place, or none). Reads copy from the file's
    buffer at this view's position; ``close()`` leaves the shared file open."""

    def __init__(self, f: io.BytesIO) -> None:
        self._f = f
        self._position = 0

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        with self._f.getbuffer() as data:
            n = max(0, min(len(out), len(data) - self._position))
            out[:n] = data[self._position:self._position + n]
        self._position += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        with self._f.getbuffer() as data:
            end = len(data) if size is None or size < 0 else self._position + size
            chunk = bytes(data[self._position:end])
        self._position += len(chunk)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._position, self._f.getbuffer().nbytes)[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> _OwnPosition:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _fsspec_filesystem(path: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise missing_dependency("fsspec", "remote") from None
    fs, fs_path = fsspec.core.url_to_fs(path, **storage_options)
    return fs, fs_path


def scratch_records(dtype: np.dtype, n: int) -> np.ndarray:
    """Room for ``n`` records of ``dtype`` in this thread's reused scratch memory, for a
    read that copies what it needs out of it before it returns (never across a
    ``yield``: another reader on the same thread would overwrite it).

    Why: the parts of a parallel read run one after another on each thread, and a read
    buffer used again is still in the core's cache where a new one is not (a fresh
    1 MiB buffer per 4 MiB part made a one-thread read of a 50 MB file 6-23 % slower,
    measured). Each thread keeps its largest buffer for its life (about 1 MiB)."""
    nbytes = max(n, 1) * dtype.itemsize
    buffer = getattr(_THREAD_STATE, "scratch", None)
    if buffer is None or len(buffer) < nbytes:
        buffer = _THREAD_STATE.scratch = np.empty(nbytes, dtype=np.uint8)
    return buffer[:n * dtype.itemsize].view(dtype)


def read_into(f: BinaryIO, buffer: np.ndarray) -> int:
    """Fill ``buffer`` (a contiguous array) from ``f``; return the number of bytes read.

    Loops over short reads, so a result smaller than ``buffer.nbytes`` means end of file.
    Bytes the file no longer holds once the read returns are not counted (see
    :func:`still_in_file`).
    """
    view = memoryview(buffer).cast("B")
    start = _tell(f)
    total = 0
    while total < len(view):
        n = f.readinto(view[total:])
        if not n:
            break
        total += n
    return still_in_file(f, start, total)


def local_descriptor(f: BinaryIO) -> tuple[int, int] | None:
    """``(descriptor, position)`` of ``f`` when its bytes are those of an operating-system
    file read as they are (``open(path, "rb")``, unbuffered or not, or a view of a held
    one), so that a compiled loop may read them with ``pread``; None for anything else
    (in-memory, remote, decompressing: a gzip file's ``fileno()`` is the compressed
    file's)."""
    if type(f) is _HeldFile:
        held = f._held.content
        if not _is_plain_os_file(held):
            return None
        return held.fileno(), f.tell()  # type: ignore[union-attr]
    if not _is_plain_os_file(f):
        return None
    return f.fileno(), f.tell()


def _is_plain_os_file(f: object) -> bool:
    if type(f) is io.BufferedReader:
        f = f.raw
    return type(f) is io.FileIO and not f.closed


def still_in_file(f: BinaryIO, start: int | None, n: int) -> int:
    """How many of the ``n`` bytes just read from ``start`` the file still holds.

    A read that races with a truncation of the file can be handed zeros for the range
    being cut, with a full byte count (Linux page cache; reproduced on ext4 with plain
    ``readinto``): those zeros would decode as records. The file size is set before the
    pages are zeroed, so measuring it again after the read tells which bytes are real.
    Files without a descriptor (remote ones) are trusted as they are.
    """
    if n == 0 or start is None:
        return n
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return n
    return _still_in_descriptor(fd, start, n)


def _still_in_descriptor(fd: int, start: int, n: int) -> int:
    """:func:`still_in_file` for an open file descriptor."""
    try:
        size = os.fstat(fd).st_size
    except OSError:
        return n
    return min(n, max(size - start, 0))


def _tell(f: BinaryIO) -> int | None:
    try:
        return f.tell()
    except (AttributeError, OSError, ValueError):
        return None


def iter_fixed_records(
    f: BinaryIO,
    *,
    dtype: np.dtype,
    start: int,
    count: int,
    records_per_chunk: int,
    reuse: bool = False,
    buffer: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(records, byte_offset)`` chunks of ``count`` fixed-size records from ``start``.

    Each chunk is a fresh structured array filled with ``readinto`` (no intermediate
    ``bytes`` object). Stops early, with a short last chunk, if the file turns out to be
    shorter than expected; the caller compares what it got with ``count`` to warn.

    ``reuse=True`` fills one array over and over instead: the caller must copy out what
    it keeps before asking for the next chunk. Readers that copy columns out anyway use
    it, because freeing a multi-MB buffer per chunk between the allocations of the
    output columns fragments the C heap (measured: +20% peak memory for IT02).
    ``buffer`` (records of ``dtype``; implies ``reuse``) is the array to fill, for a
    caller that brings its own (:func:`scratch_records`); chunks are then at most its
    length.
    """
    f.seek(start)
    itemsize = dtype.itemsize
    done = 0
    if buffer is not None:
        records_per_chunk = min(records_per_chunk, len(buffer))
    shared = buffer if buffer is not None else (
        np.empty(min(records_per_chunk, count), dtype=dtype) if reuse else None)
    while done < count:
        n = min(records_per_chunk, count - done)
        chunk = np.empty(n, dtype=dtype) if shared is None else shared[:n]
        got = read_into(f, chunk) // itemsize
        if got:
            yield (chunk if got == n else chunk[:got]), start + done * itemsize
        done += got
        if got < n:
            return


def ensure_bindf_path(exc: BindfError, path: str) -> BindfError:
    """Errors raised deep inside a reader name the file they concern."""
    return exc if exc.path is not None else exc.with_path(path)
