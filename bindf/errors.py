"""Exceptions and warnings raised by bindf.

Every problem with an input file surfaces as a :class:`BindfError` (a ``ValueError``)
or a :class:`BindfWarning`, never as ``struct.error``, ``IndexError``, ``KeyError`` or
similar. Both carry the file ``path`` and the byte ``offset`` where the problem was
found, so that a user can look at the bytes with a hex editor.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from polars.exceptions import ColumnNotFoundError as _PolarsColumnNotFoundError

__all__ = [
    "BindfError",
    "UnknownFormatError",
    "HeaderError",
    "TruncatedHeaderError",
    "UnsupportedReadoutError",
    "CorruptDataError",
    "ColumnNotFoundError",
    "BindfWarning",
    "TruncatedFileWarning",
    "CorruptDataWarning",
    "AmbiguousChannelMappingWarning",
    "FCS1LayoutWarning",
    "FileChangedWarning",
    "missing_dependency",
]


def _describe(message: str, path: str | os.PathLike[str] | None, offset: int | None) -> str:
    where = []
    if path is not None:
        where.append(os.fspath(path))
    text = f"{': '.join(where)}: {message}" if where else message
    if offset is not None:
        text += f" (at byte offset {offset})"
    return text


class _Located:
    """Shared by errors and warnings: ``reason``, ``path`` and ``offset`` attributes and a
    message that names the file and the byte offset."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        offset: int | None = None,
    ) -> None:
        self.reason = message
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        super().__init__(_describe(message, path, offset))


class BindfError(_Located, ValueError):
    """Base class of every error bindf raises about the content of a file.

    Attributes
    ----------
    path:
        The file that failed (``None`` for in-memory buffers).
    offset:
        Byte offset inside the file where the problem was found, when known.
    reason:
        The message without the path/offset decoration.
    """

    def with_path(self, path: str | os.PathLike[str]) -> BindfError:
        """Return a copy of this error that names ``path`` (used by multi-file reads)."""
        return type(self)(self.reason, path=path, offset=self.offset)

    # Exceptions travel between processes (dask workers): keep the keyword arguments.
    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.reason, self.path, self.offset))


def _rebuild(cls: type[BindfError], reason: str, path: str | None, offset: int | None):
    return cls(reason, path=path, offset=offset)


class UnknownFormatError(BindfError):
    """The file is not in any format bindf knows (or not the one that was asked for)."""


class HeaderError(BindfError):
    """The file header is missing, cut short, not valid JSON, or lacks a required key."""


class TruncatedHeaderError(HeaderError):
    """The file ends inside its header: cut short, or still being written (the same file
    read again later may be complete). ``offset`` is the header field whose bytes are
    missing (a length field, or where the file ends). Catch it to tell a file that is
    not finished yet from a damaged one (any other :class:`HeaderError`)."""


class UnsupportedReadoutError(HeaderError):
    """The header names a variant of the format that bindf cannot decode (e.g. an
    AstroPix ``readout_uid`` other than the supported ones)."""


class CorruptDataError(BindfError):
    """The records after the header are damaged (bad marker, impossible value …)."""


class ColumnNotFoundError(ValueError, _PolarsColumnNotFoundError):
    """A requested column (``columns=``) that the data does not have; the message names
    the file and lists the columns it has. Not a problem of the file, so not a
    :class:`BindfError`: both a ``ValueError``, as pandas' readers raise for a column they
    cannot find, and polars' ``ColumnNotFoundError``, as polars' readers and scans raise,
    so code written for either library catches it."""


def check_columns_known(where: str, asked: Iterable[str], available: Sequence[str], *,
                        detail: str = "") -> None:
    """Raise :class:`ColumnNotFoundError` for the names in ``asked`` (in that order)
    that ``available`` lacks: ``"{where}: unknown column(s) [...]{detail}; available:
    [...]"``, the one message of every entry point that takes ``columns=``."""
    known = set(available)
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise ColumnNotFoundError(f"{where}: unknown column(s) {unknown}{detail}; "
                                  f"available: {list(available)}")


class BindfWarning(_Located, UserWarning):
    """Base class of bindf warnings. Carries ``path`` and ``offset`` like the errors."""



class TruncatedFileWarning(BindfWarning):
    """The file ends in the middle of a record. Everything before the cut was returned."""


class CorruptDataWarning(BindfWarning):
    """Damaged records were skipped (``on_error="warn"``); the rest was returned."""


class FileChangedWarning(BindfWarning):
    """A file being followed (:func:`bindf.follow`) shrank, was replaced by another file or
    was rewritten from its start: following it stopped. ``offset`` is where bindf had read to; rows already yielded
    stay as they were."""


class AmbiguousChannelMappingWarning(BindfWarning):
    """An ``IT01`` header whose ``channels`` are not ``[0, 1, …, k-1]``: slot ``i`` was
    read as ``channels[i]`` (the vendor's file readers), but the vendor's live display
    reads slot ``c`` as channel ``c``, and no sample decides between them."""


class FCS1LayoutWarning(BindfWarning):
    """The number of vectors per pair in an ``FCS1`` file is neither
    ``num_acquisitions`` nor one more, so bindf cannot tell whether the first vector is a
    stored mean: every vector is read as an acquisition (``layout = "unknown"``)."""


def missing_dependency(package: str, extra: str) -> ModuleNotFoundError:
    """The error to raise when an optional dependency is not installed."""
    return ModuleNotFoundError(
        f"this feature needs {package!r}, which is not installed; "
        f"install it with: pip install 'bindf[{extra}]'",
        name=package,
    )
