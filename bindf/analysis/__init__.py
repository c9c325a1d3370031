"""Quick-look analysis behind the ``df.bindf`` accessor: one module per format family.

Every helper takes the frame a bindf reader returned (pandas, polars or a polars
LazyFrame), computes once with polars/numpy, and returns a frame of the caller's
library (pandas in → pandas out, polars in → polars out; a LazyFrame is collected with
only the columns the helper needs). ``plot_*`` helpers draw with matplotlib
(``pip install 'bindf[plot]'``), imported only when called, and return the Axes.

A helper is dispatched on the frame's ``bindf.format``: its spec's ``analysis`` names the
family (:data:`bindf.registry.ANALYSIS_FAMILIES`), whose module here
(:data:`FAMILIES`) lists what it serves in its ``HELPERS`` tuple.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import registry
from . import apx, fcs1, it02, spectro

#: Family name → module with that family's helpers.
FAMILIES: dict[str, ModuleType] = {"apx": apx, "it02": it02, "spectro": spectro,
                                   "fcs1": fcs1}


def _family(format: str) -> str | None:
    """The analysis family of ``format``'s frames; None for a format unknown here (a
    frame read back from Parquet whose plugin is not installed) or without one."""
    try:
        return registry.get_format(format).analysis
    except (ValueError, TypeError):
        return None


def _helpers_of(family: str | None) -> tuple[str, ...]:
    return tuple(FAMILIES[family].HELPERS) if family is not None else ()


def helpers_for(format: str) -> tuple[str, ...]:
    """Names of the ``df.bindf`` analysis methods that work on ``format`` frames."""
    return _helpers_of(_family(format))


def helper(format: str, name: str) -> Callable[..., Any]:
    """The implementation of ``df.bindf.<name>()`` for a frame of ``format``.

    A TypeError that names the right formats and this frame's own helpers otherwise.
    """
    family = _family(format)  # (one registry lookup: it may load a plugin)
    own = _helpers_of(family)
    if family is not None and name in own:
        return getattr(FAMILIES[family], name)
    owners = [spec.name for spec in registry.list_formats()
              if name in _helpers_of(spec.analysis)]
    message = (f"{name}() works on {' / '.join(repr(f) for f in owners)} frames, "
               f"but this frame's bindf format is {format!r}")
    if own:
        message += f"; its helpers are: {', '.join(own)}"
    else:
        message += "; bindf has no analysis helpers for that format"
    raise TypeError(message)
