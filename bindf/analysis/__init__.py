"""Quick-look analysis behind the ``df.bindf`` accessor: one module per format family.

Every helper takes the frame a bindf reader returned (pandas, polars or a polars
LazyFrame), computes once with polars/numpy, and returns a frame of the caller's
library (pandas in → pandas out, polars in → polars out; a LazyFrame is collected with
only the columns the helper needs). ``plot_*`` helpers draw with matplotlib
(``pip install 'bindf[plot]'``), imported only when called, and return the Axes.

A helper is dispatched on the frame's ``bindf.format``: :data:`FAMILIES` maps each
format to its module, whose ``HELPERS`` tuple lists what it serves.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import apx, fcs1, it02, spectro

#: Format name → module with that family's helpers.
#: AstroPix text logs (``apx_log``) give ``read_apx``'s columns and header ``readout_uid``;
#: IT01 frames have IT02's columns (``time_ns``, ``ch{c+1}``) and ``bin_width_micros``;
#: ITT1 events have no ``microtime_ns``, so the decay histogram does not apply to them.
FAMILIES: dict[str, ModuleType] = {"apx": apx, "apx_log": apx, "it02": it02, "it01": it02,
                                   "spectro": spectro, "fcs1": fcs1}


def helpers_for(format: str) -> tuple[str, ...]:
    """Names of the ``df.bindf`` analysis methods that work on ``format`` frames."""
    module = FAMILIES.get(format)
    return tuple(module.HELPERS) if module is not None else ()


def helper(format: str, name: str) -> Callable[..., Any]:
    """The implementation of ``df.bindf.<name>()`` for a frame of ``format``.

    A TypeError that names the right formats and this frame's own helpers otherwise.
    """
    if name in helpers_for(format):
        return getattr(FAMILIES[format], name)
    owners = [fmt for fmt, module in FAMILIES.items() if name in module.HELPERS]
    own = helpers_for(format)
    message = (f"{name}() works on {' / '.join(repr(f) for f in owners)} frames, "
               f"but this frame's bindf format is {format!r}")
    if own:
        message += f"; its helpers are: {', '.join(own)}"
    else:
        message += "; bindf has no analysis helpers for that format"
    raise TypeError(message)
