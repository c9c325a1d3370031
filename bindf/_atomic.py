"""Atomic output files: a failed or interrupted write never leaves a partial file.

Everything bindf writes (format writers, Parquet/CSV/IPC exports, CLI conversions) goes
through :func:`atomic_output` or :func:`atomic_path`: the data is written to a temporary
file in the destination's directory, flushed and fsynced, then moved to the destination.
On any exception (``KeyboardInterrupt`` included) the temporary file is removed and the
destination is untouched.

Destinations are local paths (``~`` expanded, ``file://`` URLs taken as paths). Before
anything is written, an fsspec URL is refused (the rename that makes a write atomic is
local), and so are a destination that is a folder, one whose folder does not exist,
and one that is a device, pipe or socket (``/dev/null``, or ``/dev/stdout`` through its
link), which the rename would replace with a file: each with an error naming the
destination, not the temporary file.

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
import errno
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ._params import check_flag
from ._source import _is_url, _local_path, user_path


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not allowed (:attr:`path` names it)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: output exists (pass overwrite=True to replace it)")
        self.path = path


#: How a temporary file is opened: created by this call or not at all (``O_EXCL``, which
#: also refuses a symlink left at the name), binary on Windows. Mode 0666 under the umask
#: gives the permissions a plain ``open`` would (``mkstemp``'s are 0600 whatever the
#: umask), and output files should be as readable as any other file the user makes.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
#: Random names tried before giving up (each taken name is another file's).
_NAME_ATTEMPTS = 100


def _destination(path: str | os.PathLike[str], overwrite: bool) -> str:
    """The local path to write ``path`` to, checked before anything is written (see the
    module docstring)."""
    check_flag("overwrite", overwrite)
    dest = os.fsdecode(path)
    if _is_url(dest):
        raise ValueError(f"{dest}: bindf writes local files only (atomically: a temporary "
                         "file beside the destination renamed into place); write a local "
                         "file, then copy it")
    dest = _local_path(user_path(dest))
    if os.path.isdir(dest) and not os.path.islink(dest):  # a link is replaced, not followed
        raise IsADirectoryError(errno.EISDIR, "the destination is a folder", dest)
    if os.path.exists(dest) and not os.path.isfile(dest) and not os.path.isdir(dest):
        raise OSError(errno.EINVAL, "the destination is a device, pipe or socket, not a "
                      "file: writing it atomically would replace it", dest)
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise NotADirectoryError(errno.ENOTDIR, f"{directory} is not a folder", dest)
        raise FileNotFoundError(errno.ENOENT, f"no folder {directory} to write into", dest)
    _check_free(dest, overwrite)
    return dest


def _temporary_file(dest: str) -> tuple[int, str]:
    """A new temporary file beside ``dest``: (descriptor, name).

    The name goes into this thread's ``_HOLD.unclaimed`` *before* the file is created,
    and the caller takes it out once it holds the name itself. Ctrl-C raises in whatever
    line runs when it arrives: if that is after ``os.open`` has made the file but before
    the name reached the caller (on the way back from this function), the caller's
    cleanup (:func:`_remove_temporary`) still finds the file there. ``mkstemp`` made and
    named the file in one call, and such a Ctrl-C left it behind.
    """
    directory = os.path.dirname(os.path.abspath(dest))
    prefix = f".{os.path.basename(dest)}."
    for _ in range(_NAME_ATTEMPTS):
        tmp = os.path.join(directory, f"{prefix}{secrets.token_hex(4)}.tmp")
        _HOLD.unclaimed.append(tmp)
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            _HOLD.unclaimed.remove(tmp)  # another file's name: not ours to remove
        except OSError as exc:
            _HOLD.unclaimed.remove(tmp)
            exc.filename = dest  # the user's path, not a name they never chose
            raise
    raise FileExistsError(errno.EEXIST, f"no free temporary file name in {directory}", dest)


def _remove_temporary(tmp: str | None) -> None:
    """Remove the caller's temporary file ``tmp`` and any this thread made whose name
    its caller did not get to hold (see :func:`_temporary_file`)."""
    names = dict.fromkeys([*_HOLD.unclaimed, *([tmp] if tmp is not None else [])])
    _HOLD.unclaimed.clear()
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


class _HoldState(threading.local):
    """Per thread: how many "file made, not yet recorded" steps are running, the signal
    actions (see :func:`defer_while_held`) that arrived meanwhile, and the temporary
    files named but not yet held by their caller (see :func:`_temporary_file`). Python
    runs signal handlers in the main thread only, so only the main thread's state ever
    defers anything; another thread's step cannot be interrupted by a handler."""

    def __init__(self) -> None:
        self.depth = 0
        self.deferred: list[Callable[[], None]] = []
        self.unclaimed: list[str] = []


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
    can only be delivered to this one. Elsewhere (pyarrow, polars, Jupyter start
    threads) Ctrl-C can still land inside the step, and the name that
    :func:`_temporary_file` records before making the file is what lets the caller's
    cleanup remove it."""
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
    dest = _destination(path, overwrite)
    tmp = None
    try:
        with _signals_held():
            fd, tmp = _temporary_file(dest)
            _HOLD.unclaimed.clear()  # ``tmp`` holds the name now
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, dest, overwrite)
    except BaseException:
        _remove_temporary(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True,
                fsync: bool = True) -> Iterator[str]:
    """Like :func:`atomic_output` but yields a temporary *path*, for libraries that open
    files themselves (``pyarrow.parquet.write_table`` …). The file at that path is
    fsynced once the ``with`` block ends, before it is published (``fsync=False``: not,
    for a caller that fsyncs it later itself, as ingestion does its staged parts)."""
    dest = _destination(path, overwrite)
    tmp = None
    try:
        with _signals_held():
            fd, tmp = _temporary_file(dest)
            _HOLD.unclaimed.clear()  # ``tmp`` holds the name now
            os.close(fd)
        yield tmp
        if fsync:
            _fsync_path(tmp)
        _publish(tmp, dest, overwrite)
    except BaseException:
        _remove_temporary(tmp)
        raise
