"""Warnings of a read, collected per file without touching global warning state.

A reader reports damage (a truncated tail, a skipped readout) with :func:`warn`. Outside
a read pipeline that is plain :func:`warnings.warn`. While :class:`WarningSink` is
active in the current thread (``with sink.active():``), the warning is recorded in the
sink instead, with the place it was raised; the pipeline re-emits recorded warnings
with :meth:`WarningSink.emit` in the caller's thread, in file order.

Why not ``warnings.catch_warnings(record=True)``: it swaps the process-wide filters
and ``showwarning``, so it is not thread-safe (two files decoded in parallel lose or
swap each other's warnings), and held across a ``yield`` it applies to the consumer's
code too. A context variable is per thread, and set only while the reader runs.
"""

from __future__ import annotations

import contextvars
import sys
import warnings
from dataclasses import dataclass, field

_SINK: contextvars.ContextVar[WarningSink | None] = contextvars.ContextVar(
    "bindf_warning_sink", default=None)


@dataclass
class WarningSink:
    """Warnings recorded while active: ``(warning, filename, lineno)`` in order."""

    recorded: list[tuple[Warning, str, int]] = field(default_factory=list)

    def active(self) -> _Active:
        """Record :func:`warn` calls of the current thread (context) into this sink
        (a context manager)."""
        return _Active(self)

    def emit(self) -> None:
        """Issue the recorded warnings (in order, through the user's filters) and forget
        them. Each is issued on its own: identical warnings of several files all show."""
        recorded, self.recorded = self.recorded, []
        for message, filename, lineno in recorded:
            warnings.warn_explicit(message, type(message), filename, lineno)

    def replay(self) -> None:
        """Hand the recorded warnings on as if raised in this thread now: into the sink
        active here, or issued (warnings a worker thread recorded for this one)."""
        active = _SINK.get()
        if active is None:
            self.emit()
            return
        recorded, self.recorded = self.recorded, []
        active.recorded.extend(recorded)


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


def warn(message: Warning, stacklevel: int = 1) -> None:
    """:func:`warnings.warn` for readers: recorded when a :class:`WarningSink` is active
    in this thread, issued at once otherwise. ``stacklevel`` as for ``warnings.warn``."""
    sink = _SINK.get()
    if sink is None:
        warnings.warn(message, stacklevel=stacklevel + 1)
        return
    try:
        frame = sys._getframe(stacklevel)
        where = (frame.f_code.co_filename, frame.f_lineno)
    except ValueError:  # the stack is shallower than stacklevel
        where = ("sys", 1)
    sink.recorded.append((message, *where))
