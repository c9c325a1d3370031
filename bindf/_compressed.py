"""Compressed files (``run.apx.gz``, ``.bz2``, ``.xz``, ``.zst``) as sources
(:class:`DecompressedSource`): decompressed front to back into a temporary copy when first
needed, a cut file keeping every byte before the cut.
"""

from __future__ import annotations

import io
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any, BinaryIO

from ._file_objects import ObjectSource, _ObjectView, _spool
from ._source import Source, _local_path, _tell
from ._warnings import warn
from .errors import CorruptDataError, TruncatedFileWarning, missing_dependency

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
                 fs: Any = None, fs_path: str | None = None, stored_size: int = -1,
                 compression: str | None = None) -> None:
        # (given: an fsspec OpenFile says its compression; else the name says it)
        compression = compression or compression_of(fs_path if fs is not None else path)
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
        return io.BufferedReader(_ObjectView(None, copy, 0, size, self._file_lock, self.path),
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
                                      self._fs_path, self._stored_size, self._compression))

    def __repr__(self) -> str:
        size = "not decompressed yet" if self._size < 0 else self._size
        return f"DecompressedSource({self.path!r}, size={size})"


#: What a read plans its speed with as the size of a local compressed file it has not
#: decompressed yet (see :attr:`Source.planning_size`): this many times its compressed
#: size, a common ratio for instrument data. A wrong guess costs speed, never rows or
#: memory (memory bounds use :attr:`Source.known_size`).
COMPRESSION_RATIO_GUESS = 4


def _decompressed_again(path: str, storage_options: dict[str, Any], fs: Any,
                        fs_path: str | None, stored_size: int,
                        compression: str | None = None) -> DecompressedSource:
    return DecompressedSource(path, storage_options, fs=fs, fs_path=fs_path,
                              stored_size=stored_size, compression=compression)


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
    go, so a view still reading never finds it closed under it.

    Closed by a ``weakref.finalize`` callback, not ``__del__``: where the copy is
    garbage in a reference cycle (a parallel read that an error ended: the error's
    traceback refers back to its file's result, and the files decoded ahead are
    dropped), the collector runs weak-reference callbacks before any object's
    ``__del__``, so the spool is closed before its own finalizer, which would otherwise
    find it open and say so (a ``ResourceWarning``)."""

    def __init__(self, spool: Any) -> None:
        self._spool = spool
        weakref.finalize(self, spool.close)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._spool.seek(offset, whence))

    def readinto(self, buffer: Any) -> int:
        if hasattr(self._spool, "readinto"):
            return int(self._spool.readinto(buffer) or 0)
        data = self._spool.read(len(buffer))  # SpooledTemporaryFile before 3.11
        buffer[:len(data)] = data
        return len(data)


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
