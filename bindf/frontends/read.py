"""The eager readers: ``bindf.read``, ``read_<format>``, ``read_header``, ``iter_batches``.

All of them build a :class:`~bindf.frontends.batches.ReadPlan` and consume its batches,
exactly as the lazy polars scans do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from .._source import PathLike, Source, SourceObject, Sources, ensure_bindf_path, single_source
from ..errors import BindfError
from ..registry import open_reader
from .batches import ReadPlan
from .output import (
    ChunkedReader,
    DtypeBackend,
    Frame,
    Output,
    batches_to_output,
    check_output,
)

_COMMON_DOC = """
    Parameters common to every reader
    ---------------------------------
    source:
        A path, a ``file://`` or fsspec URL, a glob (expanded by bindf, sorted),
        ``bytes``/``bytearray``/``memoryview``, a binary file object (``BytesIO``,
        ``open(path, "rb")``, a zip member, ``sys.stdin.buffer``, an HTTP body; seekable
        or not), an ``fsspec`` ``OpenFile``, or a list of those. A file object is read
        from its current position and never closed by bindf; a non-seekable stream is
        read once, with bounded memory (copied to a temporary file as it arrives); the
        metadata's ``source`` names it (``"<BytesIO>"``, or the file's ``name``).
        Several files are read one after the other into one frame; they must
        have the same columns. The frame carries the *first* file's header; use
        :func:`bindf.read_headers` for all of them.
    columns:
        Columns to return (in that order). Unrequested columns are not decoded.
    n_rows:
        Stop after this many rows.
    output:
        ``"pandas"`` (default), ``"polars"`` or ``"arrow"`` (a ``pyarrow.Table``).
    dtype_backend:
        pandas output only, as in pandas' readers: ``"numpy_nullable"`` (the default:
        numpy columns, pandas' nullable integers where the format allows nulls) or
        ``"pyarrow"`` (``pd.ArrowDtype`` columns wrapping bindf's Arrow buffers, no copy).
    chunksize:
        Return an iterator of frames of at most this many rows instead of one frame
        (pandas' convention; works for every ``output``).
    batch_size:
        Rows per internal Arrow batch.
    include_file_paths:
        Name of a column to add holding each row's source path (as in polars).
    row_index_name, row_index_offset:
        Add a ``uint64`` row-number column, counted across files (as in polars).
    storage_options:
        Passed to fsspec for remote paths.
    progress:
        Show a tqdm progress bar (needs ``bindf[progress]``).
    on_error:
        ``"raise"`` (default), ``"warn"`` or ``"skip"`` for damaged records/readouts.
        Skipped damage is counted under ``"errors"`` in the metadata.
"""


def _plan(
    source: Sources,
    format: str | None,
    *,
    columns: Sequence[str] | None = None,
    n_rows: int | None = None,
    batch_size: int | None = None,
    include_file_paths: str | None = None,
    row_index_name: str | None = None,
    row_index_offset: int = 0,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
    **options: Any,
) -> ReadPlan:
    return ReadPlan(
        source,
        format=format,
        columns=columns,
        n_rows=n_rows,
        batch_size=batch_size,
        include_file_paths=include_file_paths,
        row_index_name=row_index_name,
        row_index_offset=row_index_offset,
        storage_options=storage_options,
        progress=progress,
        options=options,
    )


def read(
    source: Sources,
    *,
    format: str | None = None,
    output: Output = "pandas",
    chunksize: int | None = None,
    dtype_backend: DtypeBackend | None = None,  # issue 16: common reader parameter
    **kwargs: Any,
) -> Frame | ChunkedReader:
    """Read any supported file, detecting its format (or forcing ``format=``).

    Format-specific options (``layout=``, ``fill_gaps=``, ``level=`` …) are passed on to
    the format's reader.
    """
    check_output(output, dtype_backend)
    if chunksize is not None:
        if chunksize <= 0:
            raise ValueError(f"chunksize must be positive, not {chunksize}")
        kwargs["batch_size"] = chunksize
    plan = _plan(source, format, **kwargs)
    schema = plan.output_schema()
    if chunksize is not None:
        return ChunkedReader(plan.iter_batches(), schema, output, plan.info, dtype_backend)
    batches = list(plan.iter_batches())
    return batches_to_output(batches, schema, output, plan.info(), dtype_backend)


read.__doc__ = (read.__doc__ or "") + _COMMON_DOC


def iter_batches(
    source: Sources,
    *,
    format: str | None = None,
    batch_size: int | None = None,
    **kwargs: Any,
) -> Iterator[pa.RecordBatch]:
    """Yield Arrow record batches of at most ``batch_size`` rows, with bounded memory.

    Every batch's schema metadata carries the bindf header. Accepts the same keyword
    arguments as :func:`read` (except ``output``/``chunksize``).
    """
    plan = _plan(source, format, batch_size=batch_size, **kwargs)
    from ..arrow import info_to_metadata

    metadata = info_to_metadata(plan.info())
    for batch in plan.iter_batches():
        yield batch.replace_schema_metadata(metadata)


def read_header(
    path: PathLike | SourceObject | Source, *, format: str | None = None,
    storage_options: dict[str, Any] | None = None, **options: Any,
) -> dict[str, Any]:
    """Return the header of one file as a dict, reading nothing but the header.

    ``path`` may also be bytes or a binary file object (as for :func:`read`); a
    non-seekable stream is consumed whole (see :class:`bindf._source.ObjectSource`).
    """
    source = single_source(path, storage_options)
    try:
        return open_reader(source, format, **options).header
    except BindfError as exc:
        raise ensure_bindf_path(exc, source.path) from None


def format_reader(name: str, extra_doc: str):
    """Make ``read_<name>``: :func:`read` with the format fixed."""

    def reader(
        source: Sources,
        *,
        output: Output = "pandas",
        chunksize: int | None = None,
        dtype_backend: DtypeBackend | None = None,  # issue 16: common reader parameter
        **kwargs: Any,
    ) -> Frame | ChunkedReader:
        return read(source, format=name, output=output, chunksize=chunksize,
                    dtype_backend=dtype_backend, **kwargs)

    reader.__name__ = reader.__qualname__ = f"read_{name}"
    reader.__doc__ = extra_doc.rstrip() + "\n" + _COMMON_DOC
    return reader
