"""Atomic output files: a failed or interrupted write never leaves a partial file.

Everything bindf writes (format writers, Parquet/CSV/IPC exports, CLI conversions) goes
through :func:`atomic_output`: the data is written to a temporary file in the destination's
directory, flushed and fsynced, then moved over the destination with ``os.replace``. On any
exception (``KeyboardInterrupt`` included) the temporary file is removed and the
destination is untouched. ``os.replace`` replaces a symlink sitting at the destination
instead of writing through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


class OutputExistsError(FileExistsError):
    """The destination exists and overwriting was not allowed."""


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
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for binary writing; publish it on success."""
    dest = os.fspath(path)
    if not overwrite and os.path.lexists(dest):
        raise OutputExistsError(f"{dest}: output exists (pass overwrite=True / --force to replace it)")
    fd, tmp = _temporary_file(dest)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[str]:
    """Like :func:`atomic_output` but yields a temporary *path*, for libraries that open
    files themselves (``pyarrow.parquet.write_table`` …)."""
    dest = os.fspath(path)
    if not overwrite and os.path.lexists(dest):
        raise OutputExistsError(f"{dest}: output exists (pass overwrite=True / --force to replace it)")
    fd, tmp = _temporary_file(dest)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
