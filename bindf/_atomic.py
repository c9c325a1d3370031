"""Atomic output files: a failed or interrupted write never leaves a partial file.

Everything bindf writes (format writers, Parquet/CSV/IPC exports, CLI conversions) goes
through :func:`atomic_output` or :func:`atomic_path`: the data is written to a temporary
file in the destination's directory, flushed and fsynced, then moved to the destination.
On any exception (``KeyboardInterrupt`` included) the temporary file is removed and the
destination is untouched.

With ``overwrite=True`` the move is ``os.replace``, which replaces a symlink sitting at
the destination instead of writing through it. With ``overwrite=False`` it is
``os.link`` of the temporary file to the destination, which fails if anything appeared
there meanwhile, so a file another process created while bindf was writing is never
replaced. Where hard links are not supported (FAT, some network file systems) the move
falls back to a check for the destination followed by ``os.replace``: a file created
between the two is replaced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not allowed (:attr:`path` names it)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: output exists (pass overwrite=True to replace it)")
        self.path = path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_file(dest: str) -> tuple[int, str]:
    """A temporary file beside ``dest`` with the permissions a plain ``open`` would give.

    ``mkstemp`` creates files with mode 0600 whatever the umask; output files should be
    as readable as any other file the user creates.
    """
    directory = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=directory)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back (they stay pending, then arrive as usual) while a
    temporary file is made and recorded: the exception their handlers raise must not land
    between the two, or the file would be left behind (seen in CI: SIGTERM just after the
    file appeared). POSIX threads only; elsewhere nothing is held."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _check_free(dest: str, overwrite: bool) -> None:
    if not overwrite and os.path.lexists(dest):
        raise OutputExistsError(dest)


def _publish(tmp: str, dest: str, overwrite: bool) -> None:
    """Move the finished temporary file to ``dest`` (see the module docstring)."""
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise OutputExistsError(dest) from None
    except OSError:  # no hard links here: check, then replace (a short race window)
        _check_free(dest, overwrite)
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


def _fsync_path(path: str) -> None:
    # POSIX fsyncs through a read-only descriptor (the file may be read-only under the
    # umask); Windows needs one opened for writing.
    fd = os.open(path, os.O_RDWR | os.O_BINARY if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for binary writing; publish it on success."""
    dest = os.fspath(path)
    _check_free(dest, overwrite)
    tmp = None
    try:
        with _signals_held():  # the file exists only once ``tmp`` names it
            fd, tmp = _temporary_file(dest)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, dest, overwrite)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True,
                fsync: bool = True) -> Iterator[str]:
    """Like :func:`atomic_output` but yields a temporary *path*, for libraries that open
    files themselves (``pyarrow.parquet.write_table`` …). The file at that path is
    fsynced once the ``with`` block ends, before it is published (``fsync=False``: not,
    for a caller that fsyncs it later itself, as ingestion does its staged parts)."""
    dest = os.fspath(path)
    _check_free(dest, overwrite)
    tmp = None
    try:
        with _signals_held():  # the file exists only once ``tmp`` names it
            fd, tmp = _temporary_file(dest)
            os.close(fd)
        yield tmp
        if fsync:
            _fsync_path(tmp)
        _publish(tmp, dest, overwrite)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
