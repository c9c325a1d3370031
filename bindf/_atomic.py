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
import threading
from collections.abc import Callable, Iterator
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


class _HoldState(threading.local):
    """Per thread: how many "file made, not yet recorded" steps are running, and the
    signal actions (see :func:`defer_while_held`) that arrived meanwhile. Python runs
    signal handlers in the main thread only, so only the main thread's state ever
    defers anything; another thread's step cannot be interrupted by a handler."""

    def __init__(self) -> None:
        self.depth = 0
        self.deferred: list[Callable[[], None]] = []


_HOLD = _HoldState()


def defer_while_held(action: Callable[[], None]) -> bool:
    """For a signal handler that raises (SIGTERM, Ctrl-C): inside :func:`_signals_held`,
    keep ``action`` (it runs when the step ends) and return True; else return False and
    let the handler act now. A process-wide mask cannot do this on its own: a signal is
    delivered to any thread that does not block it, and Python then runs its handler in
    the main thread whatever the main thread's mask says."""
    if _HOLD.depth:
        _HOLD.deferred.append(action)
        return True
    return False


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a temporary file is made and recorded: the
    exception their handlers raise must not land between the two, or the file would be
    left behind (seen in CI: SIGTERM just after the file appeared). Handlers that use
    :func:`defer_while_held` (the ``bindf`` command's) run when the step ends. For other
    handlers (Python's default Ctrl-C) the calling thread also blocks the two signals
    (POSIX): that holds them back in a program with no other threads, where the signal
    can only be delivered to this one."""
    mask = getattr(signal, "pthread_sigmask", None)
    previous = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if mask else None
    _HOLD.depth += 1
    try:
        yield
    finally:
        _HOLD.depth -= 1
        if mask is not None:
            mask(signal.SIG_SETMASK, previous)
        if not _HOLD.depth and _HOLD.deferred:
            actions = list(_HOLD.deferred)
            _HOLD.deferred.clear()
            for action in actions:
                action()  # raises: inside the caller's try, once the file is recorded


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
