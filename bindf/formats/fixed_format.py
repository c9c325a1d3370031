"""``bindf.FixedRecordFormat``: a whole format declared in a few lines.

Most instrument dumps are a magic, a header and records of one fixed size (the FLIM LABS
family is exactly that). Such a format needs no module of its own::

    toy = bindf.FixedRecordFormat(
        "toy", magic=b"TOY1", header="json",        # magic | u32 LE length | JSON object
        dtype=lambda h: [("t_ns", "<f8")] + [(f"ch{c + 1}", "<u4") for c in h["channels"]],
        extensions=(".toy",), description="toy counter dump")
    bindf.register_format(toy)          # or an entry point in the group bindf.formats
    bindf.read_toy("run.toy", columns=["ch2"])

and gets everything the built-ins get: ``read_toy``/``scan_toy``/``write_toy``,
``pd.read_toy``/``pl.scan_toy``, projection pushdown (unrequested fields are never
copied out of the read buffer), ``n_rows``, record-aligned byte ranges for
``bindf.dask.read_toy``, a row count for ``bindf info`` without decoding, a
:class:`~bindf.errors.TruncatedFileWarning` with every complete record for a cut file,
``on_error``, an atomic writer, detection by magic or extension, and a place in the
robustness/fuzz sweeps (through :meth:`FixedRecordFormat.sample_bytes`).

The layout rules (sub-arrays, byte strings, byte order) are those of
:func:`bindf.read_records`, which is this same reader with the layout given per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._header import raise_bad_magic, read_exact, read_preamble
from .._params import Param
from .._warnings import warn as _warn
from .._writing import (
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
    write_fixed_record_file,
)
from ..errors import CorruptDataError, HeaderError, TruncatedFileWarning
from ..registry import FormatSpec
from ._fixed import FixedRecordReader

HeaderKind = Any  # "json" | None | a structured numpy dtype (anything np.dtype accepts)
#: ``transform(table, header, **options) -> table``: derived columns from the raw record
#: fields (``options``: the format's declared options, when it has any).
Transform = Callable[..., pa.Table]


def resolve(value: Any, header: dict[str, Any], options: Mapping[str, Any] | None = None) -> Any:
    """``value(header, **options)`` for a callable layout value, ``value`` otherwise.

    ``options`` are the values of the format's declared reader options (none for formats
    without options and for ``read_records``), so that an option can change the layout
    (IT01's ``slots=True`` reads other fields). Callables of formats with options take
    them as keyword arguments, with defaults (the writer and the sample file resolve the
    layout without options).
    """
    if callable(value) and not isinstance(value, (type, np.dtype)):
        return value(header, **options) if options else value(header)
    return value


class FixedLayout:
    """Where the records are and what they look like (shared by
    :class:`FixedRecordFormat` and :func:`bindf.read_records`).

    ``dtype``, ``offset`` and ``count`` may be callables of the header dict.
    """

    def __init__(self, *, dtype: Any, magic: bytes | None = None, header: HeaderKind = None,
                 offset: Any = None, count: Any = -1, subarrays: str = "flatten",
                 transform: Transform | None = None, rows_per_record: int = 1) -> None:
        if subarrays not in ("flatten", "list"):
            raise ValueError(f"subarrays must be 'flatten' or 'list', not {subarrays!r}")
        if header is not None and not (isinstance(header, str) and header == "json"):
            header_dtype = np.dtype(header)
            if not header_dtype.names:
                raise ValueError("header= must be 'json', None or a structured dtype "
                                 "(named fields)")
            header = header_dtype
        elif isinstance(header, str) and not magic:
            raise ValueError('header="json" needs a magic (magic | u32 length | JSON)')
        self.dtype = dtype
        self.magic = bytes(magic) if magic else b""
        self.header = header
        self.offset = offset
        self.count = count
        self.subarrays = subarrays
        self.transform = transform
        self.rows_per_record = int(rows_per_record)


class FixedLayoutReader(FixedRecordReader):
    """Reader of a :class:`FixedLayout` (subclasses set :attr:`layout`, :attr:`name`,
    :attr:`label`). Options: the format's own, readable as ``self.option_values``."""

    layout: ClassVar[FixedLayout]
    #: The format's declared options (name → default).
    declared_options: ClassVar[dict[str, Any]] = {}
    #: The option values of this read (declared defaults updated with the caller's);
    #: handed to the layout callables and the transform. Empty for ``read_records``.
    option_values: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance, never mutated
    use_memmap = False

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        unknown = set(self.options) - set(self.declared_options)
        if unknown:
            raise TypeError(f"unexpected option(s) for read_{self.name}: {sorted(unknown)}")
        self.option_values = {**self.declared_options, **self.options}
        return self._read_layout(f, self.layout)

    def _read_layout(self, f: BinaryIO, layout: FixedLayout) -> dict[str, Any]:
        header: dict[str, Any] = {}
        header_end = len(layout.magic)
        if isinstance(layout.header, str):  # "json"
            header, header_end = read_preamble(f, magic=layout.magic, file_size=self.source.size,
                                               path=self.path, format_label=self.label)
        else:
            if layout.magic:
                head = read_exact(f, len(layout.magic))
                if head != layout.magic:
                    raise_bad_magic(head, magic=layout.magic, path=self.path,
                                    format_label=self.label)
            if layout.header is not None:
                hdt = layout.header
                raw = read_exact(f, hdt.itemsize)
                if len(raw) < hdt.itemsize:
                    raise HeaderError(
                        f"file is shorter ({header_end + len(raw)} bytes) than its "
                        f"{header_end + hdt.itemsize}-byte header",
                        path=self.path, offset=header_end + len(raw))
                record = np.frombuffer(raw, dtype=hdt)[0]
                header = {n: _python_value(record[n]) for n in hdt.names}
                header_end += hdt.itemsize
        try:
            options = self.option_values
            dtype = np.dtype(resolve(layout.dtype, header, options))
            offset = resolve(layout.offset, header, options)
            count = resolve(layout.count, header, options)
            offset = header_end if offset is None else int(offset)
            declared = None if count is None or int(count) < 0 else int(count)
        except (TypeError, ValueError, KeyError, OverflowError, IndexError) as exc:
            raise HeaderError(f"header values {header} do not give a valid layout: "
                              f"{type(exc).__name__}: {exc}", path=self.path, offset=0) from None
        if dtype.itemsize == 0:
            raise HeaderError("the record dtype has zero size", path=self.path, offset=0)
        if not dtype.names:  # a plain dtype is read as a one-field record called "value"
            dtype = np.dtype([("value", dtype)])
        if offset < 0 or offset > self.source.size:
            raise HeaderError(f"data offset {offset} is outside the {self.source.size}-byte file",
                              path=self.path, offset=0)
        self.record_dtype = dtype
        self.data_offset = offset
        self.rows_per_record = layout.rows_per_record
        self.declared_count = declared
        if declared is not None and declared > self._records_in_file():
            _warn(TruncatedFileWarning(
                f"header declares {declared} records but the file holds "
                f"{self._records_in_file()}; returning those",
                path=self.path, offset=self.row_offset(self._records_in_file())), stacklevel=2)
        try:
            self.plan = _column_plan(dtype, layout.subarrays)
        except ValueError as exc:
            raise HeaderError(str(exc), path=self.path, offset=0) from None
        raw_schema = pa.schema([_field(col, idx, base) for col, _, idx, base in self.plan])
        self._raw_schema = raw_schema
        self._header_for_transform = header
        if layout.transform is None:
            self._schema = raw_schema
        else:  # the transform decides the output columns: ask it about zero rows
            self._schema = self._transformed(raw_schema.empty_table()).schema
        return header

    def _transformed(self, table: pa.Table) -> pa.Table:
        out = self.layout.transform(table, self._header_for_transform,  # type: ignore[misc]
                                    **self.option_values)
        if isinstance(out, pa.RecordBatch):
            out = pa.Table.from_batches([out])
        if not isinstance(out, pa.Table):
            raise TypeError(f"the transform of format {self.name!r} must return a "
                            f"pyarrow.Table, not {type(out).__name__}")
        return out

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

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def raw_fields_for(self, columns: list[str]) -> list[str]:
        if self.layout.transform is not None:  # any output column may need any field
            return list(self.record_dtype.names)
        wanted = {field for col, field, _, _ in self.plan if col in columns}
        return [n for n in self.record_dtype.names if n in wanted]

    def build_columns(self, raw: dict[str, np.ndarray], columns: list[str]) -> list[pa.Array]:
        if self.layout.transform is None:
            return self._raw_columns(raw, columns)
        names = self._raw_schema.names
        table = pa.Table.from_arrays(self._raw_columns(raw, names), schema=self._raw_schema)
        out = self._transformed(table)
        return [_one_array(out.column(c)) for c in columns]

    def _raw_columns(self, raw: dict[str, np.ndarray], columns: list[str]) -> list[pa.Array]:
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

    def _batches(self, columns: list[str], batch_size: int,
                 n_rows: int | None) -> Iterator[pa.RecordBatch]:
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


def _one_array(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array: its chunk as it is when it has one (``combine_chunks``
    copies even then), else the chunks concatenated."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


class FixedRecordFormat(FormatSpec):
    """A format made of an optional magic, a header and fixed-size records.

    Parameters
    ----------
    name:
        The format's name: functions are called ``read_<name>`` etc.
    dtype:
        The record dtype (anything ``np.dtype`` accepts), or a callable of the header
        dict returning one. A format with ``options`` gets their values as keyword
        arguments too (``dtype(header, **options)``), so an option may change the
        record fields; give those keywords defaults (the writer and the sample file
        resolve the dtype from the header alone).
    magic:
        Leading bytes that identify the format (used for detection).
    header:
        ``"json"``: ``magic | u32 LE length | JSON object`` (the FLIM LABS preamble,
        parsed strictly: duplicate keys, NaN, deep nesting … are refused); ``None``: no
        header, records right after the magic (or from byte 0); a structured numpy dtype:
        one header record after the magic, its fields become the header dict.
    extensions:
        File extensions (with the dot) that identify the format when there is no magic.
    description:
        One line for listings and messages.
    transform:
        ``transform(table, header) -> table`` (plus ``**options`` for a format with
        options): derives the output columns from the raw
        record fields (an Arrow table of one batch). It must keep one row per record
        (times ``rows_per_record``) and give the same columns for any batch, the empty
        one included (that is how the schema is found). With a transform, every record
        field is read whatever the projection; the output is projected afterwards.
    rows_per_record:
        Output rows per record when ``transform`` expands records.
    subarrays:
        ``"flatten"`` (default) or ``"list"`` for sub-array fields (see ``read_records``).
    options:
        The format's own reader options, as :func:`bindf._params.option` declarations;
        the reader finds their values in ``self.option_values``, and the ``dtype``
        callable and the ``transform`` receive them as keyword arguments.
    writer:
        True (default): a generic atomic ``write_<name>`` (raw fields only; with a
        transform, the frame must hold the record fields); False: none; or a function.
    probe:
        ``probe(first_bytes, source) -> bool``, consulted when neither magic nor
        extension decided.
    example_header:
        A header from which a small sample file can be written (for the robustness and
        fuzz sweeps), when ``dtype`` needs header fields.
    """

    def __init__(self, name: str, *, dtype: Any, magic: bytes | None = None,
                 header: HeaderKind = None, extensions: tuple[str, ...] = (),
                 description: str = "", transform: Transform | None = None,
                 rows_per_record: int = 1, subarrays: str = "flatten",
                 options: tuple[Param, ...] = (), writer: Any = True,
                 probe: Callable[..., bool] | None = None,
                 example_header: Mapping[str, Any] | None = None) -> None:
        layout = FixedLayout(dtype=dtype, magic=magic, header=header, subarrays=subarrays,
                             transform=transform, rows_per_record=rows_per_record)
        label = description or f"{name} fixed-record"
        reader = type(f"{name.title().replace('_', '')}Reader", (FixedLayoutReader,), {
            "name": name, "label": label, "layout": layout,
            "declared_options": {p.name: p.default for p in options},
            "__doc__": f"{description or name}: fixed-size records "
                       f"({'JSON header' if header == 'json' else 'header ' + str(header)}).",
            "__module__": __name__,
        })
        if writer is True:
            writer = _generic_writer(name, layout)
        elif writer is False:
            writer = None
        super().__init__(name, description or f"{name} (fixed-size records)", reader,
                         magics=(layout.magic,) if layout.magic else (),
                         extensions=tuple(extensions), probe=probe, writer=writer,
                         options=tuple(options), sample=self._sample)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "example_header", dict(example_header or {}))

    def _sample(self) -> bytes:
        """A small valid file: 40 records whose numeric fields count up."""
        header = dict(self.example_header)  # type: ignore[attr-defined]
        dtype = _record_dtype(self.layout, header)  # type: ignore[attr-defined]
        records = np.zeros(40, dtype=dtype)
        for field in dtype.names:
            base = dtype[field].base
            if base.kind in "iuf":
                shape = (40,) + dtype[field].shape
                records[field] = (np.arange(np.prod(shape)) % 100).reshape(shape)
            elif base.kind == "S":
                records[field] = b"x"
        return _preamble(self.layout, header) + records.tobytes()  # type: ignore[attr-defined]


def _record_dtype(layout: FixedLayout, header: dict[str, Any]) -> np.dtype:
    dtype = np.dtype(resolve(layout.dtype, header))
    return dtype if dtype.names else np.dtype([("value", dtype)])


def _preamble(layout: FixedLayout, header: dict[str, Any]) -> bytes:
    if isinstance(layout.header, str):
        return encode_preamble(layout.magic, header)
    out = layout.magic
    if layout.header is not None:
        record = np.zeros(1, dtype=layout.header)
        for name in layout.header.names:
            if name not in header:
                raise ValueError(f"header is missing field {name!r}")
            record[name] = header[name]
        out += record.tobytes()
    return out


def _generic_writer(name: str, layout: FixedLayout) -> Callable[..., None]:
    def write(path: Any, frame: Any, header: Mapping[str, Any] | None = None, *,
              overwrite: bool = True) -> None:
        table = to_arrow_table(frame)
        meta = inherited_header(frame, header) or {}
        dtype = _record_dtype(layout, meta)
        if any(dtype[n].shape for n in dtype.names):
            raise ValueError(f"write_{name} writes records without sub-array fields only")
        require_columns(table, dtype.names, f"{name} records")
        preamble = _preamble(layout, meta)
        write_fixed_record_file(path, preamble, table, dtype, overwrite=overwrite)

    write.__name__ = write.__qualname__ = f"write_{name}"
    write.__doc__ = (f"Write a frame as a {name} file, atomically.\n\n"
                     "``frame`` (pandas, polars, Arrow or a dict of columns) needs a column per "
                     "record field; values are cast safely to the field types. ``header`` "
                     "(default: the one a bindf reader attached to ``frame``) is written "
                     "as the format declares it.")
    return write


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


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype


def _arrow_type(base: np.dtype) -> pa.DataType:
    if base.kind in "SU":
        return pa.string()  # a byte string that is not UTF-8 is a CorruptDataError
    if base.kind == "V":
        return pa.binary(base.itemsize)
    return pa.from_numpy_dtype(_native(base))


def _field(column: str, index: int | None, base: np.dtype) -> pa.Field:
    value_type = _arrow_type(base)
    if index is not None and index < 0:  # kept as a fixed-size list of -index items
        return pa.field(column, pa.list_(pa.field("item", value_type, nullable=False),
                                         -index), nullable=False)
    return pa.field(column, value_type, nullable=False)


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
