"""``bindf.read_records`` / ``scan_records``: the generic fixed-record reader's front door.

See :mod:`bindf.formats.records` for the layout rules and design decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl

from .._inputs import Sources
from .._params import check_flag
from .output import Frame, Output
from .polars import scan
from .read import ChunkedReader, read

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: Literal["pandas"] = ..., chunksize: None = ..., **kwargs: Any) -> pd.DataFrame: ...
@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: Literal["polars"], chunksize: None = ..., **kwargs: Any) -> pl.DataFrame: ...
@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: Literal["arrow"], chunksize: None = ..., **kwargs: Any) -> pa.Table: ...
@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: Literal["pandas"] = ..., chunksize: int,
                 **kwargs: Any) -> ChunkedReader[pd.DataFrame]: ...
@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: Literal["polars"], chunksize: int,
                 **kwargs: Any) -> ChunkedReader[pl.DataFrame]: ...
@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: Literal["arrow"], chunksize: int,
                 **kwargs: Any) -> ChunkedReader[pa.Table]: ...
@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: str, chunksize: None = ..., **kwargs: Any) -> Frame: ...
@overload
def read_records(source: Sources, dtype: Any, *, offset: Any = ..., header: Any = ...,
                 count: Any = ..., subarrays: str = ..., memmap: bool = ...,
                 output: str = ..., chunksize: int | None = ...,
                 **kwargs: Any) -> Frame | ChunkedReader[Frame]: ...


def read_records(
    source: Sources,
    dtype: Any,
    *,
    offset: Any = None,
    header: Any = None,
    count: Any = -1,
    subarrays: str = "flatten",
    memmap: bool = False,
    output: Output | str = "pandas",
    **kwargs: Any,
) -> Frame | ChunkedReader[Frame]:
    """Read any file of fixed-size records described by a numpy ``dtype``.

    Parameters
    ----------
    dtype:
        The record dtype (anything ``np.dtype`` accepts), or a callable taking the decoded
        ``header`` (a dict) and returning one.
    offset:
        Byte offset of the first record (default: right after ``header``, else 0), or a
        callable of the header.
    header:
        Optional structured dtype read at offset 0. Its fields become the frame's header
        (``df.attrs["bindf"]["header"]``) and are passed to callable ``dtype``/``offset``/
        ``count``.
    count:
        Number of records (-1: as many as the file holds), or a callable of the header.
        Never more than the file holds.
    subarrays:
        ``"flatten"`` (default): a field of shape (k,) becomes columns ``name_0`` …
        ``name_{k-1}``; ``"list"``: one fixed-size-list column.
    memmap:
        Use ``np.memmap`` views instead of ``readinto`` (unsafe on files that another
        process may truncate: SIGBUS).

    Notes
    -----
    Other keyword arguments are those of :func:`bindf.read` (``columns``, ``n_rows``,
    ``chunksize``, ``include_file_paths`` …).

    >>> bindf.read_records("log.bin", [("name", "S12"), ("time", "<i8"), ("value", "<f4")])
    """
    check_flag("memmap", memmap)
    return read(source, format="records", output=output, dtype=dtype, offset=offset,
                header=header, count=count, subarrays=subarrays, memmap=memmap, **kwargs)


def scan_records(
    source: Sources,
    dtype: Any,
    *,
    offset: Any = None,
    header: Any = None,
    count: Any = -1,
    subarrays: str = "flatten",
    **kwargs: Any,
) -> pl.LazyFrame:
    """Lazy variant of :func:`read_records` (a polars ``LazyFrame``)."""
    return scan(source, format="records", dtype=dtype, offset=offset, header=header,
                count=count, subarrays=subarrays, **kwargs)
