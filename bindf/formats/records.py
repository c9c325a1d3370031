"""Generic fixed-layout binary files: ``bindf.read_records(path, dtype, ...)``.

For any file that is "an optional header, then records of one numpy dtype" — the
numpy ``memmap`` recipe — without writing a format module. Examples::

    # records of a 12-byte name, an int64 time and a float32 value
    bindf.read_records("log.bin", dtype=[("name", "S12"), ("time", "<i8"), ("value", "<f4")])

    # a header of rows, cols (int32) followed by a rows × cols float64 matrix
    bindf.read_records(
        "matrix.bin",
        header=[("rows", "<i4"), ("cols", "<i4")],
        dtype=lambda h: np.dtype(("<f8", (h["cols"],))),   # one record per matrix row
        count=lambda h: h["rows"],
    )

Design decisions:

* ``dtype``, ``offset`` and ``count`` may be callables taking the decoded header record
  (a dict of Python scalars), so header fields can size the data.
* Sub-array fields are flattened to one column per element (``value_0``, ``value_1`` …,
  ``subarrays="flatten"``, the default) or kept as Arrow fixed-size lists
  (``subarrays="list"``). A plain (non-structured) dtype gives one column ``value``.
* Byte-string fields (``S``) become Arrow strings when every value is UTF-8, else binary;
  trailing NUL padding is removed. Big-endian fields are converted to native order.
* Reading uses ``readinto`` like every bindf reader (see :mod:`bindf.formats._fixed`).
  ``memmap=True`` gives the literal numpy-memmap behaviour (``np.memmap`` views, no read
  buffer); it is opt-in because a memory-mapped file that another process truncates
  kills the interpreter with SIGBUS — never use it on acquisitions still being written.
* A declared ``count`` larger than what the file holds is capped at what it holds (with
  a truncation warning); the file size always bounds the allocation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._header import read_exact
from .._source import ObjectSource
from ..errors import CorruptDataError, HeaderError, TruncatedFileWarning
from ._fixed import FixedRecordReader

DTypeLike = Any
HeaderDependent = Callable[[dict[str, Any]], Any]


def _resolve(value: Any, header: dict[str, Any]) -> Any:
    return value(header) if callable(value) and not isinstance(value, (type, np.dtype)) else value


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype


def _column_plan(dtype: np.dtype, subarrays: str) -> list[tuple[str, str, int | None, np.dtype]]:
    """Output columns as (column name, record field, element index or None, base dtype)."""
    plan = []
    for name in dtype.names:
        field_dtype = dtype[name]
        base, shape = field_dtype.base, field_dtype.shape
        if base.names:
            raise ValueError(f"nested structured field {name!r} is not supported; "
                             "flatten the dtype first")
        size = int(np.prod(shape)) if shape else 0
        if shape and subarrays == "flatten":
            for i, index in enumerate(np.ndindex(*shape)):
                suffix = "_".join(str(j) for j in index)
                plan.append((f"{name}_{suffix}", name, i, base))
        else:
            plan.append((name, name, None if not shape else -size, base))
    return plan


def _arrow_type(base: np.dtype) -> pa.DataType:
    if base.kind == "S":
        return pa.string()  # may fall back to binary per batch; see _string_or_binary
    if base.kind == "U":
        return pa.string()
    if base.kind == "V":
        return pa.binary(base.itemsize)
    return pa.from_numpy_dtype(_native(base))


class RecordsReader(FixedRecordReader):
    """Any file of fixed-size records described by a numpy dtype (``read_records``).

    Options: ``dtype`` (required), ``offset``, ``header``, ``count``, ``subarrays``,
    ``memmap`` — see :func:`bindf.read_records`.
    """

    name: ClassVar[str] = "records"
    label: ClassVar[str] = "fixed-record"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        opts = dict(self.options)
        if "dtype" not in opts:
            raise TypeError("read_records needs dtype=")
        dtype_opt = opts.pop("dtype")
        header_dtype = opts.pop("header", None)
        offset_opt = opts.pop("offset", None)
        count_opt = opts.pop("count", -1)
        self.subarrays = opts.pop("subarrays", "flatten")
        self.use_memmap = bool(opts.pop("memmap", False))
        if opts:
            raise TypeError(f"unexpected option(s) for read_records: {sorted(opts)}")
        if self.use_memmap and (self.source.is_remote or isinstance(self.source, ObjectSource)):
            raise ValueError(f"{self.path}: memmap=True needs a local file path")
        if self.subarrays not in ("flatten", "list"):
            raise ValueError(f"subarrays must be 'flatten' or 'list', not {self.subarrays!r}")

        header: dict[str, Any] = {}
        header_size = 0
        if header_dtype is not None:
            hdt = np.dtype(header_dtype)
            if not hdt.names:
                raise ValueError("header= must be a structured dtype (named fields)")
            raw = read_exact(f, hdt.itemsize)
            if len(raw) < hdt.itemsize:
                raise HeaderError(
                    f"file is shorter ({len(raw)} bytes) than its {hdt.itemsize}-byte header",
                    path=self.path, offset=len(raw))
            record = np.frombuffer(raw, dtype=hdt)[0]
            header = {n: _python_value(record[n]) for n in hdt.names}
            header_size = hdt.itemsize
        try:
            dtype = np.dtype(_resolve(dtype_opt, header))
            offset = _resolve(offset_opt, header)
            count = _resolve(count_opt, header)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise HeaderError(f"header values {header} do not give a valid layout: {exc}",
                              path=self.path, offset=0) from None
        offset = header_size if offset is None else int(offset)
        if dtype.itemsize == 0:
            raise ValueError("dtype has zero size")
        if not dtype.names:  # a plain dtype is read as a one-field record called "value"
            dtype = np.dtype([("value", dtype)])
        if offset < 0 or offset > self.source.size:
            raise HeaderError(f"data offset {offset} is outside the {self.source.size}-byte file",
                              path=self.path, offset=0)
        self.record_dtype = dtype
        self.data_offset = offset
        self.declared_count = None if count is None or int(count) < 0 else int(count)
        if self.declared_count is not None and self.declared_count > self._records_in_file():
            warnings.warn(TruncatedFileWarning(
                f"header declares {self.declared_count} records but the file holds "
                f"{self._records_in_file()}; returning those",
                path=self.path, offset=self.row_offset(self._records_in_file())), stacklevel=2)
        self.plan = _column_plan(dtype, self.subarrays)
        self._schema = pa.schema([self._field(col, idx, base) for col, _, idx, base in self.plan])
        return header

    def _records_in_file(self) -> int:
        return max(self.source.size - self.data_offset, 0) // self.record_dtype.itemsize

    @property
    def n_records(self) -> int:  # type: ignore[override]
        available = self._records_in_file()
        return available if self.declared_count is None else min(self.declared_count, available)

    @property
    def tail_bytes(self) -> int:  # type: ignore[override]
        # With a declared count, bytes after the data are a trailer, not a truncation.
        return 0 if self.declared_count is not None else super().tail_bytes

    @staticmethod
    def _field(column: str, index: int | None, base: np.dtype) -> pa.Field:
        value_type = _arrow_type(base)
        if index is not None and index < 0:  # kept as a fixed-size list of -index items
            return pa.field(column, pa.list_(pa.field("item", value_type, nullable=False),
                                             -index), nullable=False)
        return pa.field(column, value_type, nullable=False)

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def raw_fields_for(self, columns: list[str]) -> list[str]:
        wanted = {field for col, field, _, _ in self.plan if col in columns}
        return [n for n in self.record_dtype.names if n in wanted]

    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        if not self.use_memmap:
            yield from super()._batches(columns, batch_size, n_rows)
            return
        count = self.n_records if n_rows is None else min(n_rows, self.n_records)
        if count == 0:
            return
        records = np.memmap(self.path, dtype=self.record_dtype, mode="r",
                            offset=self.data_offset, shape=(count,))
        schema = pa.schema([self.schema.field(c) for c in columns])
        for start in range(0, count, batch_size):
            chunk = records[start:start + batch_size]
            raw = {name: np.asarray(chunk[name]) for name in self.raw_fields_for(columns)}
            yield pa.RecordBatch.from_arrays(self.build_columns(raw, columns), schema=schema)

    def build_columns(self, raw: dict[str, np.ndarray], columns: list[str]) -> list[pa.Array]:
        out = []
        by_column = {col: (field, idx, base) for col, field, idx, base in self.plan}
        for column in columns:
            field, index, base = by_column[column]
            values = raw[field]
            n = len(values)
            if index is not None and index >= 0:  # one element of a flattened sub-array
                values = values.reshape(n, -1)[:, index]
            elif index is not None:  # keep as fixed-size list
                flat = np.ascontiguousarray(values.reshape(n, -1))
                items = _to_arrow(flat.reshape(-1), base, self.path)
                out.append(pa.FixedSizeListArray.from_arrays(items, -index))
                continue
            out.append(_to_arrow(values, base, self.path))
        return out


def _to_arrow(values: np.ndarray, base: np.dtype, path: str) -> pa.Array:
    if base.kind == "S":
        binary = pa.array(np.ascontiguousarray(values), type=pa.binary())
        try:
            return pc.cast(binary, pa.string())
        except pa.ArrowInvalid:
            raise CorruptDataError(
                f"byte-string field of dtype {base} is not UTF-8 text; read it with a 'V' "
                "(raw bytes) dtype instead", path=path, offset=None) from None
    if base.kind == "V":
        data = np.ascontiguousarray(values).view(np.uint8)
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(base.itemsize), len(values), [None, pa.py_buffer(data)])
    return pa.array(np.ascontiguousarray(values, dtype=_native(base)))


def _python_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value
