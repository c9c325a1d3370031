"""The ``df.bindf`` accessor on pandas DataFrames and namespace on polars frames.

One implementation serves both libraries: it only needs :func:`info_of`, which knows
where each library keeps bindf's metadata. The analysis helpers (``hit_map``, ``rebin``,
``plot_decay`` …) come from :mod:`bindf.analysis`, dispatched on the frame's format.
"""

from __future__ import annotations

import os
from typing import Any, Generic, TypeVar

import pandas as pd
import polars as pl

from ._frames import info_of
from .analysis.accessor import AnalysisMethods

FrameT = TypeVar("FrameT", pd.DataFrame, pl.DataFrame, pl.LazyFrame)


class BindfAccessor(AnalysisMethods, Generic[FrameT]):
    """``df.bindf``: the file header and format that a bindf reader attached, and the
    analysis helpers for that format (see :mod:`bindf.analysis`)."""

    def __init__(self, frame: FrameT) -> None:
        self._frame = frame

    @property
    def info(self) -> dict[str, Any]:
        """Everything bindf knows about the frame's origin: format, header, source."""
        info = info_of(self._frame)
        if info is None:
            raise AttributeError(
                "this frame carries no bindf metadata (it was not returned by a bindf "
                "reader, or an operation since then dropped it)"
            )
        return info

    @property
    def header(self) -> dict[str, Any]:
        """The file header (the first file's, for multi-file reads)."""
        return self.info["header"]

    @property
    def format(self) -> str:
        """The format name, e.g. ``"apx"`` or ``"it02"``."""
        return self.info["format"]

    @property
    def source(self) -> str | list[str] | None:
        """The path (or list of paths) the frame was read from."""
        return self.info.get("source")

    def to_parquet(self, path: str | os.PathLike[str], **kwargs: Any) -> None:
        """Write the frame to Parquet with its header (see :func:`bindf.to_parquet`, which
        takes the same arguments). The LazyFrame of a bindf scan is streamed batch by
        batch; any other LazyFrame is collected first.

        A frame that carries no bindf metadata (a polars operation since the read
        dropped it) is a ``ValueError`` unless ``header=`` is given: writing it through
        ``df.bindf`` asks for the header, and a file without one would lose it silently.
        """
        if kwargs.get("header") is None and info_of(self._frame) is None:
            raise ValueError("this frame carries no bindf metadata (an operation since the "
                             "read dropped it): pass header=, e.g. the read frame's "
                             "df.bindf.header")
        from .parquet import to_parquet

        to_parquet(self._frame, path, **kwargs)


def register_accessors() -> None:
    """Register ``bindf`` on pandas and polars frames (idempotent)."""
    if not hasattr(pd.DataFrame, "bindf"):
        pd.api.extensions.register_dataframe_accessor("bindf")(BindfAccessor)
    if not hasattr(pl.DataFrame, "bindf"):
        pl.api.register_dataframe_namespace("bindf")(BindfAccessor)
    if not hasattr(pl.LazyFrame, "bindf"):
        pl.api.register_lazyframe_namespace("bindf")(BindfAccessor)
