"""What every reader accepts as its source (a path, a glob, a URL, a buffer, a binary
file object, or a list of those), and how it becomes :class:`~bindf._source.Source`
objects: globs expanded and sorted, directories, devices and pipes told apart,
``storage_options`` checked, compressed files recognised by their names.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ._compressed import DecompressedSource, compression_of
from ._file_objects import ObjectSource, is_source_object, object_source
from ._frames import _library
from ._source import Source, _fsspec_filesystem, _is_url, _local_path, has_glob_chars, user_path

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
#: (for multi-file reads: a list, a generator such as ``Path.glob``, a pandas or polars
#: Series of paths; not a set, whose order is not the files' order).
Sources = PathLike | SourceObject | Iterable[PathLike | SourceObject]


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
        if _is_url(path):
            out.extend(_expand_remote(path, options))
            continue
        refuse_unused_storage_options(options, path)
        if has_glob_chars(path) and not os.path.exists(_local_path(path)):
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
    options = _storage_options(storage_options)
    if is_source_object(source):
        refuse_unused_storage_options(options, source)  # (as every other reader does)
        return object_source(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, a URL, bytes or a binary file object, not "
                        f"{source!r}")
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
