"""The eager readers: ``bindf.read``, ``read_<format>``, ``read_header``, ``iter_batches``.

All of them build a :class:`~bindf.frontends.batches.ReadPlan` and consume its batches,
exactly as the lazy polars scans do.
"""

from __future__ import annotations

from collections.abc import Iterator
from textwrap import indent
from typing import Any

import pyarrow as pa

from .._inputs import PathLike, SourceObject, Sources, single_source
from .._params import DATA_ONLY_PARAMS, check_count, docstring, signature_with_options
from .._source import Source, ensure_bindf_path
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
    path_type_for,
)


def read(
    source: Sources,
    *,
    format: str | None = None,
    output: Output = "pandas",
    chunksize: int | None = None,
    dtype_backend: DtypeBackend | None = None,
    **kwargs: Any,
) -> Frame | ChunkedReader:
    """Read any supported file, detecting its format (or forcing ``format=``).

    Format-specific options (``layout=``, ``fill_gaps=``, ``level=`` …) are passed on to
    the format's reader.
    """
    check_output(output, dtype_backend)
    if chunksize is not None:
        check_count("chunksize", chunksize, 1)
        if kwargs.get("batch_size") is not None:  # (it was ignored, unchecked)
            raise TypeError("give chunksize= or batch_size=, not both: with chunksize= "
                            "every chunk holds that many rows (the last one fewer)")
        kwargs["batch_size"] = chunksize
    plan = ReadPlan.from_kwargs(source, format=format,
                                path_type=path_type_for(output, dtype_backend), **kwargs)
    schema = plan.output_schema()
    if chunksize is not None:
        return ChunkedReader(plan.iter_batches(), schema, output, plan.info, dtype_backend,
                             empty=plan.empty_batch, chunksize=chunksize)
    return batches_to_output(plan.all_batches(), schema, output, plan.info(), dtype_backend,
                             threads=plan.threads)


read.__doc__ = (read.__doc__ or "") + "\n" + indent(docstring("read", ()), "    ")
# Shown by inspect/Shift-Tab: every common parameter, then the format's options, which
# depend on the format detected (``read_<format>`` lists them explicitly).
read.__signature__ = signature_with_options("read")  # type: ignore[attr-defined]


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
    plan = ReadPlan.from_kwargs(source, format=format, batch_size=batch_size, **kwargs)
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
    non-seekable stream is consumed whole (see :class:`bindf._file_objects.ObjectSource`).
    """
    taken_by_reads = sorted(set(options) & DATA_ONLY_PARAMS)
    if taken_by_reads:  # (the reader would name itself and hint the very same name)
        raise TypeError(f"read_header() reads the header only and takes no {taken_by_reads}; "
                        "it takes format=, storage_options= and the format's own options")
    source = single_source(path, storage_options)
    try:
        return open_reader(source, format, **options).header
    except BindfError as exc:
        raise ensure_bindf_path(exc, source.path) from None
