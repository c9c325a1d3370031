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

The layout rules (sub-arrays, byte strings, byte order, which field types map to which
Arrow types) are those of :func:`bindf.read_records`, which is this same reader with the
layout given per call; ``docs/formats/records.md`` has them in full.
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
    encode_header_record,
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
    write_fixed_record_file,
)
from ..errors import CorruptDataError, CorruptDataWarning, HeaderError
from ..registry import FormatSpec
from ._fixed import FixedRecordReader

HeaderKind = Any  # "json" | None | a structured numpy dtype (anything np.dtype accepts)
#: ``transform(table, header, **options) -> table``: derived columns from the raw record
#: fields (``options``: the format's declared options, when it has any).
Transform = Callable[..., pa.Table]


#: numpy's NaT: the int64 a datetime64/timedelta64 field holds for "no time".
NOT_A_TIME = np.iinfo(np.int64).min

#: datetime64/timedelta64 units with an Arrow timestamp/duration of the same unit.
TIME_UNITS = ("s", "ms", "us", "ns")

#: Arrow string arrays hold at most this many bytes (32-bit offsets).
_MAX_STRING_BYTES = 2**31 - 1


def is_layout_callable(value: Any) -> bool:
    """Whether a layout value (``dtype``, ``offset``, ``count``) is a callable of the
    header rather than the value itself (numpy scalar types are callables that are
    values)."""
    return callable(value) and not isinstance(value, (type, np.dtype))


def resolve(value: Any, header: dict[str, Any], options: Mapping[str, Any] | None = None) -> Any:
    """``value(header, **options)`` for a callable layout value, ``value`` otherwise.

    ``options`` are the values of the format's declared reader options (none for formats
    without options and for ``read_records``), so that an option can change the layout
    (IT01's ``slots=True`` reads other fields). Callables of formats with options take
    them as keyword arguments, with defaults (the writer and the sample file resolve the
    layout without options).
    """
    if is_layout_callable(value):
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
            if header_dtype.hasobject:
                raise ValueError("header= has an object field: a file holds bytes, not "
                                 "Python objects")
            header = header_dtype
        elif isinstance(header, str) and not magic:
            raise ValueError('header="json" needs a magic (magic | u32 length | JSON)')
        if not is_layout_callable(dtype):  # refuse a bad layout before any data is read
            check_record_dtype(as_record_dtype(np.dtype(dtype)))
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
        dtype = as_record_dtype(dtype)
        try:  # a dtype callable may give what a static dtype is refused for at construction
            check_record_dtype(dtype)
        except ValueError as exc:
            raise HeaderError(str(exc), path=self.path, offset=0) from None
        if offset < 0 or offset > self.source.size:
            raise HeaderError(f"data offset {offset} is outside the {self.source.size}-byte file",
                              path=self.path, offset=0)
        # The records are read with a dtype of the same bytes that numpy can hand to
        # readinto; the columns keep the declared field order and types.
        self.record_dtype = readable_dtype(dtype)
        self.data_offset = offset
        self.rows_per_record = layout.rows_per_record
        self.declared_count = declared
        self.plan = _column_plan(dtype, layout.subarrays)
        # Text that is not text becomes null unless it is an error (see _damaged_text).
        text_may_be_null = self.on_error != "raise"
        raw_schema = pa.schema([_field(col, idx, base, text_may_be_null=text_may_be_null)
                                for col, _, idx, base in self.plan])
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

    def end_truncation(self) -> str | None:
        # Said when the records have been read (not when the file is opened: a scan
        # opens it once to plan and again to read).
        held = self._records_in_file()
        if self.declared_count is not None and self.declared_count > held:
            return f"the header declares {self.declared_count} records but the file holds {held}"
        return super().end_truncation()

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def raw_fields_for(self, columns: list[str]) -> list[str]:
        if self.layout.transform is not None:  # any output column may need any field
            return list(self.record_dtype.names)
        wanted = {field for col, field, _, _ in self.plan if col in columns}
        return [n for n in self.record_dtype.names if n in wanted]

    def build_columns(self, raw: dict[str, np.ndarray], columns: list[str],
                      first_offset: int | None = None) -> list[pa.Array]:
        if self.layout.transform is None:
            return self._raw_columns(raw, columns, first_offset)
        names = self._raw_schema.names
        table = pa.Table.from_arrays(self._raw_columns(raw, names, first_offset),
                                     schema=self._raw_schema)
        out = self._transformed(table)
        return [_one_array(out.column(c)) for c in columns]

    def _raw_columns(self, raw: dict[str, np.ndarray], columns: list[str],
                     first_offset: int | None) -> list[pa.Array]:
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
                items = self._field_values(flat.reshape(-1), base, field, first_offset, -index)
                list_type = self._raw_schema.field(column).type
                out.append(pa.FixedSizeListArray.from_arrays(items, type=list_type))
                continue
            out.append(self._field_values(values, base, field, first_offset, 1))
        return out

    def _field_values(self, values: np.ndarray, base: np.dtype, field: str,
                      first_offset: int | None, per_record: int) -> pa.Array:
        """Arrow values of one field (``per_record`` values per record: a sub-array kept
        as a list); text that is not text is damage (:meth:`_damaged_text`)."""
        if base.kind not in "SU":
            return field_to_arrow(values, base)
        array, damaged = text_to_arrow(values, base)
        if damaged is not None:
            self._damaged_text(field, base, np.flatnonzero(damaged) // per_record, first_offset)
        return array

    def _damaged_text(self, field: str, base: np.dtype, records_of_values: np.ndarray,
                      first_offset: int | None) -> None:
        """Apply ``on_error`` to values of a text field that are not text
        (``records_of_values``: the record in the batch of each, in order): raise a
        CorruptDataError at the first one's record, or count them
        (``errors["invalid_text"]``) and let them be null."""
        what = ("bytes that are not UTF-8 text" if base.kind == "S"
                else "code points that are not Unicode characters")
        first = int(records_of_values[0])
        offset = None if first_offset is None else first_offset + first * self.record_size
        hint = f"declare the field as 'V{base.itemsize}' to read its raw bytes"
        if self.on_error == "raise":
            raise CorruptDataError(f"record field {field!r} ({base.str}) holds {what}; {hint}",
                                   path=self.path, offset=offset)
        self.note_error("invalid_text", len(records_of_values))
        if self.on_error == "warn":
            _warn(CorruptDataWarning(
                f"record field {field!r} ({base.str}) holds {what} in {len(records_of_values)} "
                f"value(s) of this batch, the first in the record here; those values are "
                f"null ({hint})", path=self.path, offset=offset), stacklevel=2)

    def _batches(self, columns: list[str], batch_size: int,
                 n_rows: int | None) -> Iterator[pa.RecordBatch]:
        if not self.use_memmap:
            yield from super()._batches(columns, batch_size, n_rows)
            return
        count = self.n_records if n_rows is None else min(n_rows, self.n_records)
        records = np.memmap(self.path, dtype=self.record_dtype, mode="r",
                            offset=self.data_offset, shape=(count,)) if count else None
        schema = pa.schema([self.schema.field(c) for c in columns])
        for start in range(0, count, batch_size):
            chunk = records[start:start + batch_size]  # type: ignore[index]
            raw = {name: np.asarray(chunk[name]) for name in self.raw_fields_for(columns)}
            yield pa.RecordBatch.from_arrays(
                self.build_columns(raw, columns, self.row_offset(start)), schema=schema)
        why = self.end_truncation()
        if count == self.n_records and why:  # as the readinto path warns
            self._warn_truncated(self.row_offset(count), why)


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
        resolve the dtype from the header alone). A dtype without an exact Arrow
        column per field (complex, object, overlapping fields …, see
        ``docs/formats/records.md``) is a ``ValueError`` here, or, from a callable, a
        :class:`~bindf.errors.HeaderError` when a file's header gives it.
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
            elif base.kind in "SU":
                records[field] = "x"
        return _preamble(self.layout, header) + records.tobytes()  # type: ignore[attr-defined]


def as_record_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` as a record: a plain (non-structured) dtype is one field called ``value``."""
    return dtype if dtype.names else np.dtype([("value", dtype)])


def _record_dtype(layout: FixedLayout, header: dict[str, Any]) -> np.dtype:
    return as_record_dtype(np.dtype(resolve(layout.dtype, header)))


def check_record_dtype(dtype: np.dtype) -> None:
    """Refuse, with a ``ValueError`` naming the field, a record dtype whose fields have no
    exact Arrow column or do not describe separate bytes of the record."""
    spans = []
    for name in dtype.names:
        field_dtype, offset = dtype.fields[name][:2]
        why = _unsupported_because(field_dtype.base)
        if why:
            raise ValueError(f"record field {name!r} ({field_dtype}) is not supported: {why}")
        spans.append((offset, offset + field_dtype.itemsize, name))
    spans.sort()
    for (_, end, name), (start, _, following) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"record fields {name!r} and {following!r} overlap (bytes "
                             f"{start}..{end - 1} belong to both): each field must be bytes "
                             "of its own")


def _unsupported_because(base: np.dtype) -> str:
    """Why a field of base dtype ``base`` cannot be read (empty when it can)."""
    if base.names:
        return "a nested structure; flatten the dtype first"
    if base.itemsize == 0:
        return "it has zero size"
    if base.kind == "c":
        part = np.dtype(f"f{base.itemsize // 2}").newbyteorder(base.byteorder)
        return ("Arrow has no complex type; declare the real and imaginary parts as two "
                f"'{part.str}' fields")
    if base.kind == "O":
        return "a file holds bytes, not Python objects"
    if base.kind == "f" and base.itemsize not in (2, 4, 8):
        return f"Arrow has no {8 * base.itemsize}-bit float"
    if base.kind in "mM":
        unit, count = np.datetime_data(base)
        if unit not in TIME_UNITS or count != 1:
            return (f"Arrow times have the units {', '.join(TIME_UNITS)} only; declare the "
                    "field as '<i8' (or '>i8') to read the raw counts")
    return ""


def readable_dtype(dtype: np.dtype) -> np.dtype:
    """A dtype of the same bytes as ``dtype`` that numpy exports as a buffer (what
    ``readinto`` fills): fields in the order of their offsets, datetime64/timedelta64 as
    int64 of the same byte order. The field names and offsets are kept, so each field
    reads the same bytes; ``dtype`` itself when it is already such a dtype."""
    names = sorted(dtype.names, key=lambda name: dtype.fields[name][1])
    formats = []
    for name in names:
        field_dtype = dtype[name]
        base = field_dtype.base
        if base.kind in "mM":
            base = np.dtype(np.int64).newbyteorder(base.byteorder)
        formats.append(np.dtype((base, field_dtype.shape)) if field_dtype.shape else base)
    if names == list(dtype.names) and all(f == dtype[n] for n, f in zip(names, formats)):
        return dtype
    return np.dtype({"names": names, "formats": formats, "itemsize": dtype.itemsize,
                     "offsets": [dtype.fields[name][1] for name in names]})


def _preamble(layout: FixedLayout, header: dict[str, Any]) -> bytes:
    if isinstance(layout.header, str):
        return encode_preamble(layout.magic, header)
    if layout.header is None:
        return layout.magic
    return layout.magic + encode_header_record(layout.header, header)


def _generic_writer(name: str, layout: FixedLayout) -> Callable[..., None]:
    def write(path: Any, frame: Any, header: Mapping[str, Any] | None = None, *,
              overwrite: bool = True) -> None:
        table = to_arrow_table(frame)
        meta = inherited_header(frame, header) or {}
        dtype = _record_dtype(layout, meta)
        check_record_dtype(dtype)
        if any(dtype[n].shape for n in dtype.names):
            raise ValueError(f"write_{name} writes records without sub-array fields only")
        require_columns(table, dtype.names, f"{name} records")
        preamble = _preamble(layout, meta)
        write_fixed_record_file(path, preamble, table, dtype, overwrite=overwrite)

    write.__name__ = write.__qualname__ = f"write_{name}"
    write.__doc__ = (f"Write a frame as a {name} file, atomically.\n\n"
                     "``frame`` (pandas, polars, Arrow or a dict of columns) needs a column per "
                     "record field; values are cast safely to the field types (a value that "
                     "does not fit, such as a string longer than its field, is a "
                     "``ValueError``: nothing is cut). ``header`` (default: the one a bindf "
                     "reader attached to ``frame``) is written as the format declares it.")
    return write


def _column_plan(dtype: np.dtype, subarrays: str) -> list[tuple[str, str, int | None, np.dtype]]:
    """Output columns as (column name, record field, element index or None, base dtype)."""
    plan = []
    for name in dtype.names:
        field_dtype = dtype[name]
        base, shape = field_dtype.base, field_dtype.shape
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
        return pa.string()  # see text_to_arrow
    if base.kind == "V":
        return pa.binary(base.itemsize)
    if base.kind == "M":
        return pa.timestamp(np.datetime_data(base)[0])
    if base.kind == "m":
        return pa.duration(np.datetime_data(base)[0])
    return pa.from_numpy_dtype(_native(base))


def _field(column: str, index: int | None, base: np.dtype, *,
           text_may_be_null: bool) -> pa.Field:
    value_type = _arrow_type(base)
    # NaT is null; so is text that is not text when on_error lets the read go on.
    nullable = base.kind in "mM" or (base.kind in "SU" and text_may_be_null)
    if index is not None and index < 0:  # kept as a fixed-size list of -index items
        return pa.field(column, pa.list_(pa.field("item", value_type, nullable=nullable),
                                         -index), nullable=False)
    return pa.field(column, value_type, nullable=nullable)


def field_to_arrow(values: np.ndarray, base: np.dtype) -> pa.Array:
    """The Arrow array of the values of a field of base dtype ``base`` (not text: see
    :func:`text_to_arrow`). datetime64/timedelta64 values may come as the int64 of
    :func:`readable_dtype`; NaT becomes null."""
    if base.kind == "V":
        data = np.ascontiguousarray(values).view(np.uint8)
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(base.itemsize), len(values), [None, pa.py_buffer(data)])
    if base.kind in "mM":
        stored = np.ascontiguousarray(values)  # int64 or datetime64: the same bytes
        ticks = np.ascontiguousarray(
            stored.view(np.dtype(np.int64).newbyteorder(stored.dtype.byteorder)),
            dtype=np.int64)
        not_a_time = ticks == NOT_A_TIME
        return pa.array(ticks, type=_arrow_type(base),
                        mask=not_a_time if not_a_time.any() else None)
    return pa.array(np.ascontiguousarray(values, dtype=_native(base)))


def text_to_arrow(values: np.ndarray, base: np.dtype) -> tuple[pa.Array, np.ndarray | None]:
    """Arrow strings of the values of a byte-string (``S``, read as UTF-8) or unicode
    (``U``) field, with numpy's meaning: a value ends at its last non-NUL byte (code
    point), NULs before it are kept. Returns the array and the mask of the values that
    are not text (not UTF-8; code points that are no character), which are null in the
    array, or None when every value is text.

    No Python step per value: the lengths come from the bytes as a 2-D numpy array, and
    the values become one Arrow data buffer and its offsets.
    """
    if base.kind == "U":
        return _unicode_to_arrow(values, base)
    rows = np.ascontiguousarray(values).view(np.uint8).reshape(len(values), base.itemsize)
    lengths = _lengths_before_trailing_nuls(rows)
    try:  # one check of all the values (Arrow's), the common case being that all are text
        binary = _string_array(pa.binary(), lengths, _kept_prefixes(rows, lengths))
        return pc.cast(binary, pa.string()), None
    except pa.ArrowInvalid:
        damaged = ~_utf8_valid(rows)
    lengths[damaged] = 0
    return _string_array(pa.string(), lengths, _kept_prefixes(rows, lengths),
                         valid=~damaged), damaged


def _unicode_to_arrow(values: np.ndarray, base: np.dtype) -> tuple[pa.Array, np.ndarray | None]:
    n, width = len(values), base.itemsize // 4
    points = np.ascontiguousarray(values, dtype=_native(base)).view(np.uint32).reshape(n, width)
    lengths = _lengths_before_trailing_nuls(points)
    damaged = (((points >= 0xD800) & (points <= 0xDFFF)) | (points > 0x10FFFF)).any(axis=1)
    counts = np.where(damaged, 0, lengths)  # the characters kept of each value
    characters = points[np.arange(width) < counts[:, None]]
    # UTF-8 bytes of each character: 1 to 4
    sizes = (1 + (characters >= 0x80).astype(np.uint8) + (characters >= 0x800)
             + (characters >= 0x10000))
    bytes_before = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    byte_lengths = np.diff(bytes_before[np.concatenate([[0], np.cumsum(counts)])])
    data = (characters.astype(np.uint8) if not sizes.size or sizes.max() == 1
            else _utf8_bytes(characters, sizes))
    if not damaged.any():
        return _string_array(pa.string(), byte_lengths, data), None
    return _string_array(pa.string(), byte_lengths, data, valid=~damaged), damaged


def _lengths_before_trailing_nuls(units: np.ndarray) -> np.ndarray:
    """For each row of ``units`` (bytes or code points): the count up to its last
    non-zero unit (0 for a row of zeros)."""
    n, width = units.shape
    if n == 0 or width == 0:
        return np.zeros(n, dtype=np.int64)
    nonzero = units != 0
    last = width - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero[np.arange(n), last], last + 1, 0).astype(np.int64)


def _kept_prefixes(rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The first ``lengths[i]`` bytes of each row of ``rows``, back to back."""
    if np.all(lengths == rows.shape[1]):
        return rows.reshape(-1)
    return rows[np.arange(rows.shape[1]) < lengths[:, None]]


def _string_array(kind: pa.DataType, lengths: np.ndarray, data: np.ndarray, *,
                  valid: np.ndarray | None = None) -> pa.Array:
    """A ``kind`` (string or binary) array of values of ``lengths`` bytes, ``data``
    holding them back to back; null where ``valid`` is False."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _MAX_STRING_BYTES:
        raise ValueError(f"a batch of {len(lengths)} records holds {offsets[-1]} bytes of "
                         "text in one field, more than an Arrow string column holds; read "
                         "with a smaller batch_size")
    validity = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = 0 if valid is None else len(valid) - int(np.count_nonzero(valid))
    return pa.Array.from_buffers(
        kind, len(lengths),
        [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)],
        null_count=nulls)


def _utf8_bytes(characters: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The UTF-8 encoding of ``characters`` (code points, as uint32) of ``sizes`` (1 to
    4) bytes each, back to back."""
    position = np.arange(4, dtype=np.int8)
    shifts = (6 * np.maximum(sizes[:, None].astype(np.int8) - 1 - position, 0)).astype(np.uint32)
    payload = characters[:, None] >> shifts
    lead_marks = np.array([0, 0, 0xC0, 0xE0, 0xF0], dtype=np.uint32)[sizes]
    encoded = np.where(position == 0, payload | lead_marks[:, None], 0x80 | (payload & 0x3F))
    return encoded.astype(np.uint8)[position < sizes[:, None]]


def _utf8_automaton() -> np.ndarray:
    """``table[state, byte]``: the next state of a strict UTF-8 validator (RFC 3629: no
    overlong forms, no surrogates, nothing above U+10FFFF). State 0 is "between
    characters", 1 "not UTF-8" (it never leaves it); the others wait for continuation
    bytes."""
    between, invalid, tail1, tail2, tail3, after_e0, after_ed, after_f0, after_f4 = range(9)
    table = np.full((9, 256), invalid, dtype=np.uint8)
    table[between, 0x00:0x80] = between
    table[between, 0xC2:0xE0] = tail1
    table[between, 0xE0] = after_e0
    table[between, 0xE1:0xED] = tail2
    table[between, 0xED] = after_ed
    table[between, 0xEE:0xF0] = tail2
    table[between, 0xF0] = after_f0
    table[between, 0xF1:0xF4] = tail3
    table[between, 0xF4] = after_f4
    table[tail1, 0x80:0xC0] = between
    table[tail2, 0x80:0xC0] = tail1
    table[tail3, 0x80:0xC0] = tail2
    table[after_e0, 0xA0:0xC0] = tail1  # E0 80..9F would be overlong
    table[after_ed, 0x80:0xA0] = tail1  # ED A0..BF would be a surrogate
    table[after_f0, 0x90:0xC0] = tail2  # F0 80..8F would be overlong
    table[after_f4, 0x80:0x90] = tail2  # F4 90.. would be above U+10FFFF
    return table


_UTF8_AUTOMATON = _utf8_automaton()


def _utf8_valid(rows: np.ndarray) -> np.ndarray:
    """Whether each row of ``rows`` (bytes) is UTF-8. A row's trailing NULs do not change
    the verdict on the value before them: they keep a complete value complete and break
    an incomplete one, as the end of the value would. One numpy step per byte of the
    field, not per value."""
    state = np.zeros(rows.shape[0], dtype=np.uint8)
    for column in range(rows.shape[1]):
        state = _UTF8_AUTOMATON[state, rows[:, column]]
    return state == 0


def _python_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value
