"""Warnings of a read, collected per file without touching global warning state.

A reader reports damage (a truncated tail, a skipped readout) with :func:`warn`. Outside
a read pipeline it is issued at once. While :class:`WarningSink` is active in the current
thread (``with sink.active():``), the warning is recorded in the sink instead; the
pipeline issues recorded warnings with :meth:`WarningSink.emit` in the caller's thread,
in file order (into the caller's own sink, if one is active there: so a step that wants
bindf's warnings of a read, or none of them, activates a sink around it, never
``warnings.catch_warnings``, whose process-wide filters would also hide or catch the
warnings of reads in other threads).

Every warning is issued at the user's line: the innermost frame outside bindf, the
libraries bindf is called through (polars' ``collect``, pandas, dask) and the standard
library (which runs threads and their tasks), found when it is issued (see
:func:`_user_frame`). A fixed ``stacklevel`` cannot say that: the same reader code runs under eager
reads, scans, chunked reads and follows, each a different depth below the user, and
warnings a worker thread recorded have no user frames at all.

Why not ``warnings.catch_warnings(record=True)``: it swaps the process-wide filters
and ``showwarning``, so it is not thread-safe (two files decoded in parallel lose or
swap each other's warnings), and held across a ``yield`` it applies to the consumer's
code too. A context variable is per thread, and set only while the reader runs.
"""

from __future__ import annotations

import contextvars
import functools
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field
from types import FrameType

_SINK: contextvars.ContextVar[WarningSink | None] = contextvars.ContextVar(
    "bindf_warning_sink", default=None)

#: Packages whose frames a warning's location skips: bindf, and what calls into it.
_CALLERS_SKIPPED = ("polars", "pandas", "dask")
_BINDF_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__)) + os.sep


@dataclass
class WarningSink:
    """Warnings recorded while active, in order."""

    recorded: list[Warning] = field(default_factory=list)

    def active(self) -> _Active:
        """Record :func:`warn` calls of the current thread (context) into this sink
        (a context manager)."""
        return _Active(self)

    def emit(self) -> None:
        """Hand the recorded warnings on, in order, as if raised in this thread now, and
        forget them: into the sink active here, if another one is (a bindf read inside
        a step that collects its warnings: a dask partition's header, an ingestion
        job), else issued (through the user's filters, at the user's line), each on its
        own: identical warnings of several files all show."""
        active = _SINK.get()
        if active is not None and active is not self:
            recorded, self.recorded = self.recorded, []
            active.recorded.extend(recorded)
            return
        while self.recorded:
            _issue(self.recorded.pop(0))


class _Active:
    """The context manager of :meth:`WarningSink.active` (a class, not
    ``@contextmanager``: it runs once per file of a multi-file read)."""

    __slots__ = ("_sink", "_token")

    def __init__(self, sink: WarningSink) -> None:
        self._sink = sink

    def __enter__(self) -> WarningSink:
        self._token = _SINK.set(self._sink)
        return self._sink

    def __exit__(self, *exc: object) -> None:
        _SINK.reset(self._token)


def warn(message: Warning) -> None:
    """:func:`warnings.warn` for bindf: recorded when a :class:`WarningSink` is active in
    this thread, issued at once (at the user's line) otherwise."""
    sink = _SINK.get()
    if sink is None:
        _issue(message)
    else:
        sink.recorded.append(message)


def _issue(message: Warning) -> None:
    frame = _user_frame()
    if frame is None:  # no frame outside bindf (a worker thread): as Python does then
        warnings.warn_explicit(message, type(message), "sys", 1)
        return
    warnings.warn_explicit(message, type(message), frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"))


#: (absolute file name, folders) → whether the file lies in one of them: a warning per
#: damaged unit (100,000 of them) walked the stack through ``abspath`` each time.
_INSIDE: dict[tuple[str, tuple[str, ...]], bool] = {}


@functools.cache
def _skipped_dirs(imported: tuple[bool, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """bindf's folder and those of the :data:`_CALLERS_SKIPPED` packages imported (as
    ``imported`` says, in that order); then the same and the standard library's."""
    del imported  # (the cache key: the folders change as those packages get imported)
    skipped = (_BINDF_DIR, *(os.path.dirname(os.path.abspath(module.__file__)) + os.sep
                             for name in _CALLERS_SKIPPED
                             if (module := sys.modules.get(name)) is not None
                             and getattr(module, "__file__", None)))
    return skipped, (*skipped, _STDLIB_DIR)


def _user_frame() -> FrameType | None:
    """The innermost frame of this thread outside bindf, :data:`_CALLERS_SKIPPED` and the
    standard library (which runs threads and their tasks). In a thread with none (a
    thread of polars' pool running a scan's batches, a dask worker thread), the main
    thread's, if the main thread is inside those packages: waiting there (in
    ``collect()``, ``compute()``) for the work that warns, most likely."""
    skipped, passed = _skipped_dirs(tuple(name in sys.modules for name in _CALLERS_SKIPPED))

    def inside(frame: FrameType, packages: tuple[str, ...]) -> bool:
        filename = frame.f_code.co_filename
        if filename.startswith("<frozen "):  # the standard library's frozen modules
            return _STDLIB_DIR in packages   # (importlib's: an `import bindf` line)
        if not os.path.isabs(filename):  # (relative to the working folder, which moves)
            return os.path.abspath(filename).startswith(packages)
        known = _INSIDE.get((filename, packages))
        if known is None:
            known = _INSIDE[filename, packages] = \
                os.path.abspath(filename).startswith(packages)
        return known

    frame: FrameType | None = sys._getframe(2)
    while frame is not None and inside(frame, passed):
        frame = frame.f_back
    if frame is not None or threading.current_thread() is threading.main_thread():
        return frame
    frame = sys._current_frames().get(threading.main_thread().ident)  # type: ignore[arg-type]
    waiting = False  # (the main thread is inside bindf or a package that calls it)
    while frame is not None and inside(frame, passed):
        waiting = waiting or inside(frame, skipped)
        frame = frame.f_back
    return frame if waiting else None
