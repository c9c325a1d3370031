"""Where bytes come from: local paths, ``file://`` URLs, (with fsspec) remote paths, and
in-memory buffers or binary file objects (:class:`ObjectSource`).

Readers never memory-map by default. Acquisitions are often still being written, or
truncated by a crashed DAQ while somebody reads them, and a ``mmap`` of a file that
shrinks kills the interpreter with ``SIGBUS``. Instead every read goes through
``readinto`` on an ordinary file object, and the file size is measured once when the
reader opens the file: records appended later are ignored, and a file that shrinks
shows up as a short read, which becomes a truncation warning.
"""

from __future__ import annotations

import errno
import glob
import io
import os
import re
import stat
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import numpy as np

from ._frames import _library
from ._warnings import warn
from .errors import (
    BindfError,
    CorruptDataError,
    TruncatedFileWarning,
    UnknownFormatError,
    missing_dependency,
)

PathLike = str | os.PathLike[str]


class SupportsRead(Protocol):
    """A binary stream: ``read(n)`` returns at most ``n`` bytes, ``b""`` at the end."""

    def read(self, n: int = ..., /) -> bytes: ...


class SupportsReadinto(Protocol):
    """A binary stream that fills a buffer: ``readinto(b)`` returns the count, 0 at the end."""

    def readinto(self, buffer: Any, /) -> int | None: ...


class OpenFileLike(Protocol):
    """An ``fsspec.core.OpenFile`` (fsspec stays optional)."""

    fs: Any
    path: str
    mode: str
    compression: str | None

    def open(self) -> Any: ...


#: One input that is not a path: bytes-like data, a binary file object (``read`` or
#: ``readinto``; seekable or not) or an ``fsspec.core.OpenFile``.
SourceObject = bytes | bytearray | memoryview | SupportsRead | SupportsReadinto | OpenFileLike
#: What every reader accepts as a source: one path/URL/buffer/file object, or several
#: (for multi-file reads).
Sources = PathLike | SourceObject | Sequence[PathLike | SourceObject]

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
    """The first ``size`` bytes of the local file ``path`` (fewer if it shrank), read
    with ``os.read`` on the file's descriptor: no buffered reader, whose construction
    costs as much as the read itself for a file of a few kilobytes.

    Bytes the file no longer holds after the read (see :func:`still_in_file`) are left
    out, so a file cut while it is read looks to the reader exactly as a short read of
    the file itself would: a truncation."""
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


def expand_sources(
    sources: Sources | Source | Sequence[Source],
    storage_options: dict[str, Any] | None = None,
) -> list[Source]:
    """Turn a path, a glob, a buffer, a file object or a list of those into :class:`Source`
    objects.

    Globs are expanded by bindf itself (Windows shells do not do it), sorted so that a
    multi-file read has a stable row order. A glob that matches nothing is an error, as
    is a path that does not exist. A name that exists as written is never globbed (files
    may have ``[`` in their names). :class:`Source` objects pass through unchanged;
    buffers and file objects become :class:`ObjectSource` (see there).
    """
    options = _storage_options(storage_options)
    out: list[Source] = []
    for item in source_items(sources):
        if isinstance(item, Source):
            out.append(item)
            continue
        if is_source_object(item):
            refuse_unused_storage_options(options, item)
            out.append(object_source(item))
            continue
        path = source_path_text(item)
        if not _is_url(path):
            refuse_unused_storage_options(options, path)
        if _is_url(path):
            out.extend(_expand_remote(path, options))
        elif has_glob_chars(path) and not os.path.exists(_local_path(path)):
            out.extend(DecompressedSource(m, options, stored_size=size)
                       if compression_of(m) is not None
                       else Source(m, options, size=size) for m, size in local_matches(path))
        else:
            out.append(_path_source(path, options))
    return out


def source_items(sources: Any) -> list[Any]:
    """The inputs ``sources`` names, one item each (a path, a glob, a buffer, a file
    object, a :class:`Source`), globs not expanded yet; what a multi-file read may be
    given checked: an ordered collection, not empty."""
    if isinstance(sources, (str, os.PathLike, Source)) or is_source_object(sources):
        return [sources]
    if _is_table(sources):  # iterating a DataFrame gives its column names
        raise TypeError(f"source must be a path, a glob or a list of them, not a "
                        f"{type(sources).__name__}: for paths held in one of its columns, "
                        "pass that column (df['path'])")
    if isinstance(sources, (set, frozenset, Mapping)):  # no order: rows would follow
        raise TypeError(f"source must be a path, a glob or a list (an ordered sequence), "
                        f"not a {type(sources).__name__}: its order, and so the rows', "
                        "would change from run to run; pass sorted(...)")
    if isinstance(sources, Iterable):
        items = list(sources)
        if not items:
            raise FileNotFoundError("no input files were given")
        return items
    raise TypeError(f"source must be a path, a glob, a URL, bytes, a binary file "
                    f"object or a list of those, not {sources!r}")


def local_matches(pattern: str) -> list[tuple[str, int]]:
    """The regular files the local glob ``pattern`` matches (``**`` recursive; a
    ``file://`` pattern gives ``file://`` names), sorted, with their sizes. Folders are
    not matches. None is a ``FileNotFoundError``."""
    prefix = "file://" if pattern.startswith("file://") else ""
    # One stat per match says both that it is a file and its size.
    matches = sorted((prefix + p, size) for p in glob.glob(_local_path(pattern), recursive=True)
                     if (size := _file_size(p)) is not None)
    if not matches:
        raise FileNotFoundError(f"no files match {pattern!r}")
    return matches


def _is_table(obj: object) -> bool:
    """A pandas, polars or dask frame or an Arrow table (recognised without importing
    them)."""
    return _library(obj) in ("pandas", "polars", "pyarrow", "dask") and type(obj).__name__ in (
        "DataFrame", "LazyFrame", "Table", "RecordBatch")


def _storage_options(storage_options: Any) -> dict[str, Any]:
    """``storage_options`` as a dict (fsspec's keyword arguments); a ``TypeError`` for
    anything else (a str gave "dictionary update sequence element #0 …")."""
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping):
        raise TypeError(f"storage_options must be a dict of fsspec options or None, not "
                        f"{storage_options!r}")
    return dict(storage_options)


class NotARegularFileError(OSError):
    """An input path that is a device (``/dev/zero``): not a file bindf can read, as a
    missing file or a directory (the CLI's exit status 66)."""


def _path_source(path: str, options: dict[str, Any]) -> Source:
    """The :class:`Source` of one path or URL. A local pipe (a named FIFO, a shell's
    ``<(command)``, ``/dev/stdin`` fed by a pipe) is read as a stream, like
    ``sys.stdin.buffer``: its size is not known before it is read (it stats as 0 bytes,
    which read as "file is empty"). A directory is an ``IsADirectoryError`` naming it;
    devices are refused (``/dev/zero`` never ends)."""
    if not _is_url(path):
        local = _local_path(path)
        try:
            found = os.stat(local)
            mode = found.st_mode
        except (OSError, ValueError):
            mode = None  # the Source names the problem (no such file …)
        if mode is not None and compression_of(path) is not None and not stat.S_ISDIR(mode):
            return DecompressedSource(path, options, stored_size=found.st_size)
        if mode is not None and stat.S_ISFIFO(mode):
            return ObjectSource(open(local, "rb"), name=path, owned=True)  # noqa: SIM115
        if mode is not None and stat.S_ISDIR(mode):  # named here, wherever it is in a list
            raise IsADirectoryError(errno.EISDIR, "Is a directory (for its files, give a "
                                    f"glob such as {os.path.join(path, '*')!r})", path)
        if mode is not None and not stat.S_ISREG(mode):
            raise NotARegularFileError(errno.EINVAL, "not a regular file or a pipe (a "
                                       "device?): bindf reads files and streams", path)
    elif compression_of(path) is not None:
        fs, fs_path = _fsspec_filesystem(path, options)
        return DecompressedSource(path, options, fs=fs, fs_path=fs_path)
    return Source(path, options)


def _file_size(path: str) -> int | None:
    """The size of a regular file (following links), or ``None`` for anything else."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def single_source(source: PathLike | SourceObject | Source,
                  storage_options: dict[str, Any] | None = None) -> Source:
    """The :class:`Source` of exactly one input (no glob expansion): for ``read_header``."""
    if isinstance(source, Source):
        return source
    if is_source_object(source):
        return object_source(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, a URL, bytes or a binary file object, not "
                        f"{source!r}")
    options = _storage_options(storage_options)
    path = source_path_text(source)
    if not _is_url(path):
        refuse_unused_storage_options(options, path)
    return _path_source(path, options)


def source_path_text(item: str | os.PathLike[Any]) -> str:
    """A path or URL given as ``str`` or path-like (one whose ``__fspath__`` gives bytes
    too, decoded as the file system does), ``~`` expanded."""
    return user_path(os.fsdecode(os.fspath(item)))


def refuse_unused_storage_options(options: dict[str, Any], source: Any) -> None:
    """``storage_options`` are fsspec's, for URLs: given with a local path or a file
    object they would be ignored without a word, so they are a ``ValueError`` (as in
    pandas' readers; each such item of a list, too). A ``file://`` URL passes, as in
    pandas (bindf reads it as a local path: the options have nothing to do)."""
    if options and not (isinstance(source, str) and source.startswith("file://")):
        what = repr(source) if isinstance(source, str) else "a buffer or file object"
        raise ValueError(f"storage_options= are for fsspec URLs (s3://, memory://, …), "
                         f"not {what}: drop them for local files")


def _expand_remote(url: str, options: dict[str, Any]) -> list[Source]:
    fs, fs_path = _fsspec_filesystem(url, options)
    if not has_glob_chars(fs_path) or fs.isfile(fs_path):
        if compression_of(fs_path) is not None:
            return [DecompressedSource(url, options, fs=fs, fs_path=fs_path)]
        return [Source(url, options, fs=fs, fs_path=fs_path)]
    return [
        DecompressedSource(name, options, fs=fs, fs_path=p) if compression_of(p) is not None
        else Source(name, options, size=_listed_size(info), fs=fs, fs_path=p)
        for name, p, info in remote_matches(url, fs, fs_path)
    ]


def remote_matches(url: str, fs: Any, fs_path: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The files the glob ``url`` (``fs_path`` on the fsspec filesystem ``fs``) matches,
    sorted: each as ``(URL naming it, its path on fs, its listing)``. Folders are not
    matches. None is a ``FileNotFoundError``."""
    # detail=True: the listing already says what is a file and how big it is, so an
    # object store needs no request per match.
    found = fs.glob(fs_path, detail=True)
    matches = sorted((item for item in found.items() if item[1].get("type") == "file"),
                     key=lambda item: item[0])
    if not matches:
        raise FileNotFoundError(f"no files match {url!r}")
    return [(_match_url(url, fs, fs_path, p), p, info) for p, info in matches]


def _listed_size(info: dict[str, Any]) -> int:
    size = info.get("size")
    return int(size) if isinstance(size, int) and size >= 0 else -1  # -1: measure it


def _match_url(pattern: str, fs: Any, fs_pattern: str, match: str) -> str:
    """The URL naming ``match``, a path that ``fs.glob`` returned for ``pattern``
    (``fs_pattern``: the pattern as a path of ``fs``).

    It is the name users see (``include_file_paths``, metadata, messages); reads go
    through the kept filesystem. Leading pure-protocol links of a chained URL
    (``simplecache::``) are kept, as is the target of an archive (``zip://*::file.zip``).
    The match is spelled as the pattern was: ``memory://g/*.apx`` gives
    ``memory://g/a.apx``, as the explicit path would be named, where fsspec's own
    spelling is ``memory:///g/a.apx``.
    """
    links = pattern.split("::")
    k = next((i for i, link in enumerate(links) if "://" in link), 0)
    url = fs.unstrip_protocol(match)
    written, canonical = links[k], fs.unstrip_protocol(fs_pattern)
    same = 0  # the two spellings of the pattern end alike; their starts may differ
    while same < min(len(written), len(canonical)) and written[-1 - same] == canonical[-1 - same]:
        same += 1
    if url.startswith(canonical[:len(canonical) - same]):
        url = written[:len(written) - same] + url[len(canonical) - same:]
    return "::".join([*links[:k], url, *links[k + 1 :]])


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


# -- in-memory buffers and file objects ---------------------------------------------------
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
    filesystem (ranged reads, no copy); a compressed one is opened (and closed again by
    bindf) and read as a file object.
    """
    if _is_fsspec_open_file(obj):
        name = open_file_name(obj)
        if "b" not in obj.mode:
            raise _text_mode_error(name)
        if obj.compression is None:
            return Source(name, fs=obj.fs, fs_path=obj.path)
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
                start = _seekable_start(obj)
                remaining = None if start is None else _remaining_bytes(obj, start)
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
                                             self._file_lock),
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


def _remaining_bytes(obj: Any, start: int) -> int | None:
    """Bytes from ``start`` to the end of a seekable object, leaving it at ``start``
    (``None`` if it cannot seek to its end: it is then read as a stream)."""
    try:
        obj.seek(0, io.SEEK_END)
        end = int(obj.tell())
    except (AttributeError, OSError, ValueError):
        end = None
    obj.seek(start)
    return None if end is None else max(end - start, 0)


def _spool(stream: Any, name: str) -> tuple[Any, int]:
    """Copy a stream into an anonymous temporary file; return the file and the size."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    size = 0
    try:
        if hasattr(stream, "readinto"):
            piece = bytearray(SPOOL_CHUNK_BYTES)
            view = memoryview(piece)
            while n := stream.readinto(view):
                spool.write(view[:n])
                size += n
        else:
            while data := stream.read(SPOOL_CHUNK_BYTES):
                if isinstance(data, str):
                    raise _text_mode_error(name)
                spool.write(data)
                size += len(data)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, size


# -- compressed files -------------------------------------------------------------------
#: A file whose name ends so is read decompressed, as pandas' readers infer a file's
#: compression from its name: ``read_apx("run.apx.gz")``. zstd needs Python 3.14 or the
#: ``zstandard`` package (``pip install 'bindf[zstd]'``); the others come with Python.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
_COMPRESSED_SUFFIXES = tuple(COMPRESSIONS)


def compression_of(path: str) -> str | None:
    """The compression that a file's name says (``run.apx.gz`` → ``"gzip"``), or None."""
    if not path.lower().endswith(_COMPRESSED_SUFFIXES):  # (once per file of a glob)
        return None
    return COMPRESSIONS[os.path.splitext(path)[1].lower()]


class DecompressedSource(ObjectSource):
    """A compressed file (:data:`COMPRESSIONS`), decompressed front to back into a
    temporary copy, as a stream is (see :class:`ObjectSource`): readers need the size of
    the data and read it in passes, and a compressed file can only be read from its start.
    The copy stays in memory up to :data:`SPOOL_MEMORY_BYTES` and moves to ``TMPDIR``
    beyond. A file cut short (a download that stopped) gives a
    :class:`~bindf.errors.TruncatedFileWarning` and keeps every byte decompressed before
    the cut; damaged data is a :class:`~bindf.errors.CorruptDataError`.

    Decompressed when first needed (its size, its header, its data), not when found: a
    glob of a thousand ``.gz`` runs costs nothing until each file's turn. The copy is let
    go when the last :meth:`held` block of the source ends (in any thread), so a
    multi-file read keeps the copies of the files it is decoding, not of every file;
    reading the source again decompresses it again. Its size, once known, is kept.

    Unlike other file-object sources it pickles (by its name and filesystem: the
    receiving process decompresses the file again), so dask reads compressed files too.
    """

    def __init__(self, path: str, storage_options: dict[str, Any] | None = None, *,
                 fs: Any = None, fs_path: str | None = None, stored_size: int = -1) -> None:
        compression = compression_of(fs_path if fs is not None else path)
        assert compression is not None
        self._compression = compression
        self._memory = None
        self._file: _DecompressedCopy | None = None
        self._start = 0
        self._file_lock = threading.Lock()
        self._finalizer = None
        # Guards the copy and its holders: a scan's files may be read by several
        # threads at once (two collects), each holding and letting go.
        self._copy_lock = threading.Lock()
        self._holders = 0
        self._size = -1
        self._stored_size = stored_size  # compressed, of a local file (-1: not known)
        Source.__init__(self, path, dict(storage_options or {}))  # (size unknown: -1)
        self._fs, self._fs_path = fs, fs_path

    @property  # type: ignore[override]
    def size(self) -> int:
        """The decompressed size (decompressing the file, the first time it is asked)."""
        if self._size < 0:
            with self._copy_lock:
                self._decompressed()
        return self._size

    @size.setter
    def size(self, value: int) -> None:  # (Source's generated __init__ sets -1)
        self._size = value

    @property
    def planning_size(self) -> int:
        if self._size >= 0 or self._fs is not None:  # known; or remote: -1, unknown
            return self._size
        return self._stored_size * COMPRESSION_RATIO_GUESS if self._stored_size >= 0 else -1

    @property
    def known_size(self) -> int:
        return self._size

    @property
    def uncompressed_name(self) -> str:
        return os.path.splitext(self.path)[0]

    @property
    def reads_in_parallel(self) -> bool:
        return False  # one copy, one position: its views take turns

    def _decompressed(self) -> _DecompressedCopy:
        """The copy, decompressing the file if no copy is held (call with the lock)."""
        if self._file is None:
            raw = (self._fs.open(self._fs_path, "rb") if self._fs is not None
                   else open(_local_path(self.path), "rb"))  # noqa: SIM115 - closed below
            try:
                spool, size = _spool(_Decompressing(raw, self._compression, self.path),
                                     self.path)
            finally:
                raw.close()
            self._file, self._size = _DecompressedCopy(spool), size
        return self._file

    def open(self) -> BinaryIO:
        """A fresh read-only view of the copy (decompressing the file if none is held)."""
        with self._copy_lock:
            copy = self._decompressed()
            size = self._size
        return io.BufferedReader(_ObjectView(None, copy, 0, size, self._file_lock),
                                 buffer_size=64 << 10)  # type: ignore[return-value]

    def held(self, *, small_whole: bool = True) -> _HeldCopy:  # type: ignore[override]
        """Keep the copy for the block (decompressing the file if none is held); the
        last block to end lets it go (views still open keep it until they close).
        (``small_whole``: the whole file is decompressed either way.)"""
        return _HeldCopy(self)

    def close(self) -> None:
        """Let go of the copy now (it is freed once no view of it is open)."""
        with self._copy_lock:
            self._file = None

    def __reduce__(self) -> Any:
        # (the filesystem too: a member of an archive, zip://run.apx.gz::runs.zip, is
        # named by its URL, whose end says nothing of the member's compression)
        return (_decompressed_again, (self.path, self.storage_options, self._fs,
                                      self._fs_path, self._stored_size))

    def __repr__(self) -> str:
        size = "not decompressed yet" if self._size < 0 else self._size
        return f"DecompressedSource({self.path!r}, size={size})"


#: What a read plans its speed with as the size of a local compressed file it has not
#: decompressed yet (see :attr:`Source.planning_size`): this many times its compressed
#: size, a common ratio for instrument data. A wrong guess costs speed, never rows or
#: memory (memory bounds use :attr:`Source.known_size`).
COMPRESSION_RATIO_GUESS = 4


def _decompressed_again(path: str, storage_options: dict[str, Any], fs: Any,
                        fs_path: str | None, stored_size: int) -> DecompressedSource:
    return DecompressedSource(path, storage_options, fs=fs, fs_path=fs_path,
                              stored_size=stored_size)


class _HeldCopy:
    """The context manager of :meth:`DecompressedSource.held`."""

    __slots__ = ("_source",)

    def __init__(self, source: DecompressedSource) -> None:
        self._source = source

    def __enter__(self) -> DecompressedSource:
        source = self._source
        with source._copy_lock:
            source._decompressed()
            source._holders += 1
        return source

    def __exit__(self, *exc: object) -> None:
        source = self._source
        with source._copy_lock:
            source._holders -= 1
            if not source._holders:
                source._file = None


class _DecompressedCopy:
    """The temporary copy of a compressed file, shared by its source and the views
    reading it; closed (its memory or disk space freed) when the last of them lets it
    go, so a view still reading never finds it closed under it."""

    def __init__(self, spool: Any) -> None:
        self._spool = spool

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._spool.seek(offset, whence))

    def readinto(self, buffer: Any) -> int:
        if hasattr(self._spool, "readinto"):
            return int(self._spool.readinto(buffer) or 0)
        data = self._spool.read(len(buffer))  # SpooledTemporaryFile before 3.11
        buffer[:len(data)] = data
        return len(data)

    def __del__(self) -> None:
        self._spool.close()


class _Decompressing:
    """The decompressed bytes of a compressed file object, with ``read`` (what
    :func:`_spool` copies; each call gives the next piece of at most
    :data:`DECOMPRESSED_PIECE_BYTES`, whatever size it is asked for). Decompressor objects
    (not Python's ``GzipFile`` …, which drop what they decompressed in a call that reaches
    a cut) so that a file cut short keeps every byte before the cut, and ends with a
    warning; damaged data is a bindf error naming the file and the offset (in the
    compressed file) of the piece where it was found. Output is bounded per step: 337
    bytes of bz2 hold 400 MB of zeros. Concatenated streams (``cat a.gz b.gz``, ``pigz``,
    ``pbzip2``) are read one after the other, as the command-line tools do; zero bytes
    after a stream are padding."""

    def __init__(self, raw: BinaryIO, compression: str, path: str) -> None:
        self._raw, self._compression, self._path = raw, compression, path
        self._pieces = self._decompressed()

    def read(self, n: int = -1) -> bytes:
        return next(self._pieces, b"")

    def _decompressed(self) -> Iterator[bytes]:
        decompressor = _decompressor(self._compression)
        started = False  # whether the current stream has had input
        done = 0
        while True:
            offset = _tell(self._raw)
            pending = self._raw.read(DECOMPRESS_CHUNK_BYTES)
            if not pending:  # (an empty file never started a stream: cut too)
                if not started or not decompressor.eof:
                    self._cut(offset, done)
                return
            while pending:
                if decompressor.eof:  # a stream ended: padding, or the next stream
                    pending = pending.lstrip(b"\0")
                    if not pending:
                        break
                    decompressor, started = _decompressor(self._compression), False
                started, fed, pending = True, pending, b""
                try:
                    for piece, after_end in _steps(decompressor, fed):
                        done += len(piece)
                        pending = after_end  # (the last step's: what follows the stream)
                        if piece:
                            yield piece
                except Exception as exc:  # noqa: BLE001 - zlib.error, OSError, LZMAError …
                    if isinstance(exc, OSError) and exc.errno is not None:
                        raise  # the disk, not the data
                    raise self._damaged(exc, offset) from None

    def _damaged(self, exc: Exception, offset: int | None) -> CorruptDataError:
        return CorruptDataError(
            f"cannot decompress this {self._compression} file ({exc}): the damage is in "
            f"the {DECOMPRESS_CHUNK_BYTES:,} compressed bytes (or fewer, at the end) that "
            "start", path=self._path, offset=offset)

    def _cut(self, offset: int | None, done: int) -> None:
        warn(TruncatedFileWarning(
            f"the {self._compression} file ends before its compressed data does (cut "
            f"short?): reading the {done:,} bytes decompressed before the cut",
            path=self._path, offset=offset))


def _steps(decompressor: Any, data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Feed ``data`` to ``decompressor`` in steps of at most
    :data:`DECOMPRESSED_PIECE_BYTES` of output: ``(piece, input left)`` after each, the
    input left being what follows the stream's end once it ended (else nothing). zlib
    keeps the input it did not use in ``unconsumed_tail``; bz2, lzma and Python's zstd
    buffer it and are drained with empty input; the zstandard package's objects take no
    output limit."""
    limit = DECOMPRESSED_PIECE_BYTES
    if hasattr(decompressor, "needs_input"):  # bz2, lzma, compression.zstd
        piece = decompressor.decompress(data, limit)
        while not decompressor.eof and not decompressor.needs_input:
            yield piece, b""
            piece = decompressor.decompress(b"", limit)
        yield piece, decompressor.unused_data if decompressor.eof else b""
    elif type(decompressor).__module__ == "zlib":
        while True:
            piece = decompressor.decompress(data, limit)
            data = decompressor.unconsumed_tail
            if decompressor.eof:
                yield piece, decompressor.unused_data
                return
            if not data:
                yield piece, b""
                return
            yield piece, b""
    else:  # zstandard's decompressobj
        piece = decompressor.decompress(data)
        yield piece, decompressor.unused_data if decompressor.eof else b""


#: Decompressed bytes handed on at most per step (see :func:`_steps`).
DECOMPRESSED_PIECE_BYTES = 4 << 20
#: Compressed bytes read and decompressed at a time.
DECOMPRESS_CHUNK_BYTES = 256 << 10


def _decompressor(compression: str) -> Any:
    """A new decompressor object: ``decompress(bytes)``, ``eof`` and ``unused_data``."""
    if compression == "gzip":
        import zlib
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # a gzip header and trailer
    if compression == "bz2":
        import bz2
        return bz2.BZ2Decompressor()
    if compression == "xz":
        import lzma
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    try:  # Python 3.14+
        from compression.zstd import ZstdDecompressor  # type: ignore[import-not-found]
        return ZstdDecompressor()
    except ImportError:
        pass
    try:
        import zstandard
    except ImportError:
        raise missing_dependency("zstandard", "zstd") from None
    return zstandard.ZstdDecompressor().decompressobj()


class _ObjectView(io.RawIOBase):
    """Read-only window ``[start, start + size)`` of a buffer or a seekable file object,
    with positions counted from ``start``. It keeps its own position and seeks the object
    before reading (holding ``lock`` from the seek to the end of the read), so several
    views of one object can be used in turn or by several threads."""

    def __init__(self, memory: memoryview | None, file: Any, start: int, size: int,
                 lock: threading.Lock) -> None:
        super().__init__()
        self._memory = memory
        self._file = file
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
                self._file.seek(self._start + self._position)
                if hasattr(self._file, "readinto"):
                    got = self._file.readinto(target[:n]) or 0
                else:
                    data = self._file.read(n)
                    if isinstance(data, str):
                        raise _text_mode_error(_object_name(self._file))
                    got = len(data)
                    target[:got] = data
        self._position += got
        return got
