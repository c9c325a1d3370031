"""Where bytes come from: local paths, ``file://`` URLs and (with fsspec) remote paths.

Readers never memory-map by default. Acquisitions are often still being written, or
truncated by a crashed DAQ while somebody reads them, and a ``mmap`` of a file that
shrinks kills the interpreter with ``SIGBUS``. Instead every read goes through
``readinto`` on an ordinary file object, and the file size is measured once when the
reader opens the file: records appended later are ignored, and a file that shrinks
shows up as a short read, which becomes a truncation warning.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from .errors import BindfError, missing_dependency

PathLike = str | os.PathLike[str]
#: What every reader accepts as a source: one path/URL, or several (for multi-file reads).
Sources = PathLike | Sequence[PathLike]

_GLOB_CHARS = set("*?[")


def _is_url(path: str) -> bool:
    """True for fsspec URLs (``memory://``, ``s3://``, ``simplecache::…``); ``file://``
    URLs are read as local paths, without fsspec."""
    return "://" in path and not path.startswith("file://")


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

    def _measure(self) -> int:
        if self.fs is not None:
            size = self.fs.size(self.fs_path)
            if size is None:  # e.g. an HTTP server that sends no Content-Length
                raise OSError(f"{self.path}: the size of this remote file is unknown, "
                              "and bindf needs it to find the last complete record")
            return int(size)
        return os.stat(_local_path(self.path)).st_size

    def open(self) -> BinaryIO:
        """Open for binary reading (the caller closes it).

        Inside :meth:`held`, hand out the one held file instead (rewound to the start;
        closing it does nothing), so that a reader's header and data reads share it.
        """
        held = _held_files().get(id(self))
        if held is not None:
            held.seek(0)
            return _HeldFile(held)  # type: ignore[return-value]
        if self.fs is not None:
            return self.fs.open(self.fs_path, "rb")
        return open(_local_path(self.path), "rb")  # noqa: SIM115 - caller closes

    @contextmanager
    def held(self) -> Iterator[Source]:
        """Open the file once for everything done with this source inside the block
        (detection, header, data): one ``open`` per file instead of two or three, which
        is most of the cost of reading thousands of small files.

        The held file belongs to the current thread: other threads reading the same
        source (dask partitions of one file) open their own."""
        held = _held_files()
        if id(self) in held:  # already held by an outer block
            yield self
            return
        with self.open() as f:
            held[id(self)] = f
            try:
                yield self
            finally:
                del held[id(self)]

    def read_head(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if the file is shorter); for format detection."""
        with self.open() as f:
            return f.read(min(n, max(self.size, 0)) if self.size >= 0 else n)


_THREAD_STATE = threading.local()


def _held_files() -> dict[int, BinaryIO]:
    """This thread's held files (see :meth:`Source.held`), by ``id`` of their source."""
    files = getattr(_THREAD_STATE, "held", None)
    if files is None:
        files = _THREAD_STATE.held = {}
    return files


class _HeldFile:
    """The held file of :meth:`Source.held` as its users see it: reads go through,
    ``close()`` (and leaving a ``with`` block) does nothing."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def __enter__(self) -> _HeldFile:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


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
    """Turn a path, a glob or a list of either into :class:`Source` objects.

    Globs are expanded by bindf itself (Windows shells do not do it), sorted so that a
    multi-file read has a stable row order. A glob that matches nothing is an error, as
    is a path that does not exist. A name that exists as written is never globbed (files
    may have ``[`` in their names). :class:`Source` objects pass through unchanged.
    """
    options = dict(storage_options or {})
    if isinstance(sources, (str, os.PathLike, Source)):
        items: list[Any] = [sources]
    else:
        items = list(sources)
        if not items:
            raise FileNotFoundError("no input files were given")
    out: list[Source] = []
    for item in items:
        if isinstance(item, Source):
            out.append(item)
            continue
        path = os.fspath(item)
        if _is_url(path):
            out.extend(_expand_remote(path, options))
        elif _GLOB_CHARS & set(path) and not os.path.exists(_local_path(path)):
            prefix = "file://" if path.startswith("file://") else ""
            matches = sorted(prefix + p for p in glob.glob(_local_path(path), recursive=True)
                             if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"no files match {path!r}")
            out.extend(Source(m, options) for m in matches)
        else:
            out.append(Source(path, options))
    return out


def _expand_remote(url: str, options: dict[str, Any]) -> list[Source]:
    fs, fs_path = _fsspec_filesystem(url, options)
    if not (_GLOB_CHARS & set(fs_path)) or fs.isfile(fs_path):
        return [Source(url, options, fs=fs, fs_path=fs_path)]
    # detail=True: the listing already says what is a file and how big it is, so an
    # object store needs no request per match.
    found = fs.glob(fs_path, detail=True)
    matches = sorted((item for item in found.items() if item[1].get("type") == "file"),
                     key=lambda item: item[0])
    if not matches:
        raise FileNotFoundError(f"no files match {url!r}")
    return [
        Source(_match_url(url, fs, p), options, size=_listed_size(info), fs=fs, fs_path=p)
        for p, info in matches
    ]


def _listed_size(info: dict[str, Any]) -> int:
    size = info.get("size")
    return int(size) if isinstance(size, int) and size >= 0 else -1  # -1: measure it


def _match_url(pattern: str, fs: Any, match: str) -> str:
    """The URL naming ``match``, a path that ``fs.glob`` returned for ``pattern``.

    It is the name users see (``include_file_paths``, metadata, messages); reads go
    through the kept filesystem. Leading pure-protocol links of a chained URL
    (``simplecache::``) are kept, as is the target of an archive (``zip://*::file.zip``).
    """
    links = pattern.split("::")
    k = next((i for i, link in enumerate(links) if "://" in link), 0)
    return "::".join([*links[:k], fs.unstrip_protocol(match), *links[k + 1 :]])


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
        size = os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
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
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(records, byte_offset)`` chunks of ``count`` fixed-size records from ``start``.

    Each chunk is a fresh structured array filled with ``readinto`` (no intermediate
    ``bytes`` object). Stops early, with a short last chunk, if the file turns out to be
    shorter than expected; the caller compares what it got with ``count`` to warn.

    ``reuse=True`` fills one array over and over instead: the caller must copy out what
    it keeps before asking for the next chunk. Readers that copy columns out anyway use
    it, because freeing a multi-MB buffer per chunk between the allocations of the
    output columns fragments the C heap (measured: +20% peak memory for IT02).
    """
    f.seek(start)
    itemsize = dtype.itemsize
    done = 0
    shared = np.empty(min(records_per_chunk, count), dtype=dtype) if reuse else None
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
