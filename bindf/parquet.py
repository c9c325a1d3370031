"""Parquet (and Arrow IPC / CSV) export that keeps the file header.

The header goes into the Parquet schema metadata under ``bindf.header`` (with
``bindf.format``, ``bindf.source`` and ``bindf.version``), so any Arrow-based tool sees
it. For pandas frames, ``df.attrs`` is also stored under ``PANDAS_ATTRS``, the key that
``pandas.read_parquet`` restores ``attrs`` from. ``bindf.read_parquet`` restores the
header on pandas, polars and Arrow output alike.

Every export is atomic: written to a temporary file beside the destination and renamed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._atomic import atomic_path
from ._frames import info_of, to_arrow_table
from .arrow import attach_info, info_from_metadata, info_to_metadata
from .frontends.output import DtypeBackend, Frame, Output, check_output, table_to_output

PANDAS_ATTRS_KEY = b"PANDAS_ATTRS"


def frame_to_table(frame: Frame) -> tuple[pa.Table, dict[str, Any] | None]:
    """Any supported frame → (Arrow table, bindf info or None), through the same
    conversion as the writers (:func:`bindf._frames.to_arrow_table`)."""
    info = info_of(frame)
    table = to_arrow_table(frame)
    attrs = getattr(frame, "attrs", None) if _library_is_pandas(frame) else None
    if attrs:
        metadata = dict(table.schema.metadata or {})
        metadata[PANDAS_ATTRS_KEY] = json.dumps(attrs, default=str).encode()
        table = table.replace_schema_metadata(metadata)
    if info is not None:
        table = attach_info(table, info)
    return table, info


def _library_is_pandas(frame: Any) -> bool:
    return type(frame).__module__.split(".", 1)[0] == "pandas"


def to_parquet(
    frame: Frame,
    path: str | os.PathLike[str],
    *,
    compression: str = "zstd",
    overwrite: bool = True,
    **write_options: Any,
) -> None:
    """Write ``frame`` (pandas, polars or Arrow) to Parquet, keeping its bindf header."""
    table, _ = frame_to_table(frame)
    with atomic_path(path, overwrite=overwrite) as tmp:
        pq.write_table(table, tmp, compression=compression, **write_options)


def read_parquet(
    path: str | os.PathLike[str],
    *,
    output: Output = "pandas",
    columns: list[str] | None = None,
    dtype_backend: DtypeBackend | None = None,
) -> Frame:
    """Read a Parquet file written by bindf, with the header restored on the frame.

    ``dtype_backend`` (pandas output only) is pandas' option: ``"pyarrow"`` gives
    ``pd.ArrowDtype`` columns without a copy.
    """
    check_output(output, dtype_backend)
    # One file is read as it is: no Hive partition columns guessed from its folder names
    # (pyarrow < 18 fails on a folder like key=__HIVE_DEFAULT_PARTITION__).
    is_file = not os.path.isdir(path)
    table = pq.read_table(path, columns=columns, partitioning=None if is_file else "hive")
    metadata = dict(table.schema.metadata or {})
    # A dataset folder (dask's to_parquet, partitioned writes) has no single footer: its
    # schema metadata already carries the header.
    file_metadata = (pq.read_metadata(path).metadata or {}) if is_file else {}
    metadata.update({k: v for k, v in file_metadata.items() if k.startswith(b"bindf.")})
    table = restore_dictionary_index_types(table, file_metadata)
    info = info_from_metadata(metadata)
    if output == "pandas" and dtype_backend != "pyarrow":
        # pyarrow's own conversion: it restores what the pandas metadata says (nullable
        # and categorical dtypes of a frame bindf wrote). The pyarrow backend needs none
        # of that: every column becomes an ArrowDtype column, as in every bindf read.
        frame = table.to_pandas()
        if info is not None:
            frame.attrs["bindf"] = info
        return frame
    return table_to_output(table, output, info, dtype_backend)


def restore_dictionary_index_types(table: pa.Table, file_metadata: Mapping[bytes, bytes]) -> pa.Table:
    """Give dictionary columns back the index type they were written with.

    Parquet has no dictionary index width of its own. pyarrow stores the Arrow schema in
    the file (``ARROW:schema``), but older releases (seen on 14 to 18) read every
    dictionary column back with int32 indices anyway: an int8 ``marker`` came back int32
    and a round trip was not exact. Casting the indices back is cheap: the dictionary
    values are not touched.
    """
    stored = file_metadata.get(b"ARROW:schema")
    if stored is None:
        return table
    try:
        written = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
    except (binascii.Error, ValueError, pa.ArrowException):
        return table  # not a schema pyarrow can read: keep what it gave us
    for index, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type) or written.get_field_index(field.name) < 0:
            continue
        wanted = written.field(field.name).type
        if pa.types.is_dictionary(wanted) and wanted != field.type:
            table = table.set_column(index, field.with_type(wanted), table.column(index).cast(wanted))
    return table


def write_batches(
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    path: str | os.PathLike[str],
    *,
    to: str,
    info: Callable[[], dict[str, Any]] | None = None,
    overwrite: bool = True,
    compression: str = "zstd",
    fsync: bool = True,
) -> int:
    """Stream batches to a Parquet, Arrow IPC or CSV file; return the number of rows.

    ``fsync``: flush the file to disk before it is published (see
    :func:`bindf._atomic.atomic_path`).

    ``info`` is called after the last batch (headers can grow while reading, e.g. the
    sparse IT02 ``acquisition_end_ns``), and its result is stored in the file's metadata
    where the format allows (Parquet footer; IPC schema gets the header known up front).
    """
    rows = 0
    with atomic_path(path, overwrite=overwrite, fsync=fsync) as tmp:
        if to == "parquet":
            start_meta = info_to_metadata(info()) if info is not None else None
            with pq.ParquetWriter(tmp, schema.with_metadata(start_meta) if start_meta else schema,
                                  compression=compression) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
                end_meta = info_to_metadata(info()) if info is not None else None
                if end_meta and end_meta != start_meta:
                    # Learned while reading (skipped damage, sparse IT02 end time): the
                    # Arrow schema is already written, so this goes into the file-level
                    # key-value metadata, which bindf.read_parquet merges over it.
                    writer.add_key_value_metadata(
                        {k.decode(): v.decode() for k, v in end_meta.items()}
                    )
        elif to == "ipc":
            meta_schema = schema
            if info is not None:
                meta_schema = schema.with_metadata(info_to_metadata(info()))
            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, meta_schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        elif to == "csv":
            import pyarrow.csv as pacsv

            with pacsv.CSVWriter(tmp, schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        else:
            raise ValueError(f"unknown output kind {to!r}; use parquet, ipc or csv")
    return rows
