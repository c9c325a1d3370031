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

import math
from collections.abc import Callable, Iterator, Mapping
from numbers import Integral
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

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
from ..arrow import STRING_BYTES_MAX
from ..errors import CorruptDataError, CorruptDataWarning, HeaderError, TruncatedHeaderError
from ..registry import FormatSpec, checked_options
from ._fixed import FixedRecordReader
from ._record_fields import (
    arrow_field,
    as_record_dtype,
    check_record_dtype,
    column_plan,
    field_to_arrow,
    readable_dtype,
    text_to_arrow,
)

HeaderKind = Any  # "json" | None | a structured numpy dtype (anything np.dtype accepts)
#: ``transform(table, header, **options) -> table``: derived columns from the raw record
#: fields (``options``: the format's declared options, when it has any).
Transform = Callable[..., pa.Table]


def is_layout_callable(value: Any) -> bool:
    """Whether a layout value (``dtype``, ``offset``, ``count``) is a callable of the
    header rather than the value itself (numpy scalar types are callables that are
    values)."""
    return callable(value) and not isinstance(value, (type, np.dtype))


#: What a layout callable, or a header value it uses, raises for a header that does not
#: give a layout (the reader makes a HeaderError of it, the writer a ValueError):
#: ``bits=0`` divides by zero, a number where the callable expects text has no
#: ``.lower()`` …
LAYOUT_ERRORS = (TypeError, ValueError, LookupError, ArithmeticError, AttributeError)


def _is_whole(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``minimum``."""
    return not isinstance(value, bool) and isinstance(value, Integral) and value >= minimum


def _whole_number(value: Any, what: str) -> int:
    """``value`` (from a header, or a layout callable) as an int: an integer, or a float
    that is one (JSON headers may write ``64.0``). A fraction or a bool is a
    ``ValueError``: ``int()`` would floor it, and the records would be read misaligned."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"the {what} {value!r} is not a whole number")
    return int(value)


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


def _numpy_dtype(value: Any, what: str) -> np.dtype:
    """``np.dtype(value)``, or a ``ValueError`` that says which argument it was (numpy's
    own ``TypeError`` names neither)."""
    try:
        return np.dtype(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}={value!r} is not a numpy dtype: {exc}") from None


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
        if magic is not None and not isinstance(magic, bytes):
            raise TypeError(f"magic is bytes (magic=b'TOYR'), not {magic!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be a function of (table, header), not "
                            f"{transform!r}")
        if not _is_whole(rows_per_record, 1):
            raise ValueError(f"rows_per_record must be an integer >= 1, not {rows_per_record!r}")
        if isinstance(header, str) and header != "json":
            raise ValueError(f'header must be "json", None or a structured numpy dtype, not '
                             f"{header!r}")
        if header is not None and not (isinstance(header, str) and header == "json"):
            header_dtype = _numpy_dtype(header, "header")
            if not header_dtype.names:
                raise ValueError("header= must be 'json', None or a structured dtype "
                                 "(named fields)")
            if header_dtype.hasobject:
                raise ValueError("header= has an object field: a file holds bytes, not "
                                 "Python objects")
            for field_name in header_dtype.names:
                field_base = header_dtype[field_name].base
                if field_base.kind == "c" or field_base.names:
                    raise ValueError(
                        f"header field {field_name!r} ({header_dtype[field_name]}) is not "
                        "supported: the header is JSON values, which have no "
                        + ("complex number; declare the real and imaginary parts as two "
                           "fields" if field_base.kind == "c" else
                           "nested records; flatten the dtype first"))
                if field_base.kind == "f" and field_base.itemsize > 8:
                    raise ValueError(
                        f"header field {field_name!r} ({header_dtype[field_name]}) is not "
                        f"supported: a {8 * field_base.itemsize}-bit float is no JSON "
                        f"number; declare its bytes as raw ('V{field_base.itemsize}', shown "
                        "as hex)")
            header = header_dtype
        elif isinstance(header, str) and not magic:
            raise ValueError('header="json" needs a magic (magic | u32 length | JSON)')
        if not is_layout_callable(dtype):  # refuse a bad layout before any data is read
            record_dtype = as_record_dtype(_numpy_dtype(dtype, "dtype"))
            check_record_dtype(record_dtype)
            column_plan(record_dtype, subarrays)
        if not (count is None or is_layout_callable(count) or _is_whole(count, -1)):
            raise ValueError(f"count must be a number of records, -1 (as many as the file "
                             f"holds) or a callable of the header, not {count!r}")
        if not (offset is None or is_layout_callable(offset) or _is_whole(offset, 0)):
            raise ValueError(f"offset must be a number of bytes (>= 0), None (after the "
                             f"header) or a callable of the header, not {offset!r}")
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
        # (also outside the registry, where the base class knows no spec)
        self.refuse_options({k: v for k, v in self.options.items()
                             if k not in self.declared_options}, self.declared_options)
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
                    raise TruncatedHeaderError(
                        f"file is shorter ({header_end + len(raw)} bytes) than its "
                        f"{header_end + hdt.itemsize}-byte header",
                        path=self.path, offset=header_end + len(raw))
                record = np.frombuffer(raw, dtype=hdt)[0]
                for n in hdt.names:
                    try:
                        header[n] = _header_json(record[n], hdt[n].base)
                    except UnicodeError as exc:  # (replaced characters would hide it, and
                        # give a header the writer cannot write back)
                        raise HeaderError(
                            f"header field {n!r} ({hdt[n]}) is not valid text "
                            f"({exc.reason}); to read such files, declare its bytes as raw "
                            f"('V{hdt[n].itemsize}', shown as hex)",
                            path=self.path, offset=header_end + hdt.fields[n][1]) from None
                header_end += hdt.itemsize
        # Where the values that make the layout are: the header's first byte (past the
        # magic and, for JSON, its length field); 0 for a layout without a header.
        values_at = 0 if layout.header is None else len(layout.magic) + (
            4 if isinstance(layout.header, str) else 0)
        try:
            options = self.option_values
            dtype = np.dtype(resolve(layout.dtype, header, options))
            offset = resolve(layout.offset, header, options)
            count = resolve(layout.count, header, options)
            offset = header_end if offset is None else _whole_number(offset, "offset")
            count = None if count is None else _whole_number(count, "record count")
            declared = None if count is None or count == -1 else count
        except LAYOUT_ERRORS as exc:
            raise HeaderError(f"header values {header} do not give a valid layout: "
                              f"{type(exc).__name__}: {exc}", path=self.path,
                              offset=values_at) from None
        if declared is not None and declared < 0:  # (-1 is "as many as the file holds")
            raise HeaderError(f"header values {header} give a negative record count "
                              f"{declared}", path=self.path, offset=values_at)
        if dtype.itemsize == 0:
            raise HeaderError("the record dtype has zero size", path=self.path,
                              offset=values_at)
        dtype = as_record_dtype(dtype)
        try:  # a dtype callable may give what a static dtype is refused for at construction
            check_record_dtype(dtype)
            plan = column_plan(dtype, layout.subarrays)
        except ValueError as exc:
            raise HeaderError(str(exc), path=self.path, offset=values_at) from None
        if offset < 0:
            raise HeaderError(f"data offset {offset} is negative", path=self.path,
                              offset=values_at)
        if offset > self.source.size:  # the records' start is not written yet, or cut
            raise TruncatedHeaderError(
                f"data offset {offset} is past the end of the {self.source.size}-byte file",
                path=self.path, offset=values_at)
        # The records are read with a dtype of the same bytes that numpy can hand to
        # readinto; the columns keep the declared field order and types.
        self.record_dtype = readable_dtype(dtype)
        self.data_offset = offset
        self.rows_per_record = layout.rows_per_record
        self.declared_count = declared
        self.plan = plan
        # The most bytes of text one record puts in a column (a sub-array of text kept
        # as a list puts all its values; UTF-8 takes at most the 4 bytes a "U" character
        # has): batches stay within an Arrow string column's 2 GiB (a 2 GiB file of
        # 2048-byte names would otherwise fail to read with the default batch size).
        widths = [base.itemsize * (-index if index is not None and index < 0 else 1)
                  for _, _, index, base in plan if base.kind in "SU"]
        self.max_batch_records = (max(1, STRING_BYTES_MAX // max(widths))
                                  if widths and max(widths) else None)
        # Text that is not text becomes null unless it is an error (see _damaged_text).
        text_may_be_null = self.on_error != "raise"
        raw_schema = pa.schema([arrow_field(col, idx, base, text_may_be_null=text_may_be_null)
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
                f"null ({hint})", path=self.path, offset=offset))

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
    offset:
        Byte offset of the first record, or a callable of the header returning it
        (default: right after the header). Bytes between the header and it are skipped.
    count:
        The number of records, or a callable of the header returning it (such as
        ``lambda h: h["n_records"]``); -1 (the default) or None: every whole record up
        to the end of the file. With a count, bytes after the last record (a checksum,
        an end-of-run block) are not read as records, and a file holding fewer records
        than declared gives a :class:`~bindf.errors.TruncatedFileWarning`.
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
        transform, the frame must hold the record fields; with an ``offset``, zero bytes
        up to it; with a ``count``, the header's count must equal the frame's rows);
        False: none; or a function.
    probe:
        ``probe(first_bytes, source) -> bool``, consulted when neither magic nor
        extension decided.
    example_header:
        A header from which a small sample file can be written (for the robustness and
        fuzz sweeps), when ``dtype`` needs header fields.
    analysis, live_totals:
        The ``df.bindf`` analysis helpers its frames take, and what ``bindf follow``
        shows for it (see :class:`~bindf.registry.FormatSpec`).
    """

    def __init__(self, name: str, *, dtype: Any, magic: bytes | None = None,
                 header: HeaderKind = None, offset: Any = None, count: Any = -1,
                 extensions: tuple[str, ...] = (),
                 description: str = "", transform: Transform | None = None,
                 rows_per_record: int = 1, subarrays: str = "flatten",
                 options: tuple[Param, ...] = (), writer: Any = True,
                 probe: Callable[..., bool] | None = None,
                 example_header: Mapping[str, Any] | None = None,
                 analysis: str | None = None, live_totals: tuple[str, ...] = ()) -> None:
        options = checked_options(options)  # (read below, before FormatSpec checks them)
        layout = FixedLayout(dtype=dtype, magic=magic, header=header, offset=offset,
                             count=count, subarrays=subarrays, transform=transform,
                             rows_per_record=rows_per_record)
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
                         extensions=extensions, probe=probe, writer=writer,
                         options=tuple(options), sample=self._sample, analysis=analysis,
                         live_totals=live_totals)
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "example_header", dict(example_header or {}))

    def _sample(self) -> bytes:
        """A small valid file: 40 records (or the example header's count) whose numeric
        fields count up, at the layout's offset."""
        layout: FixedLayout = self.layout  # type: ignore[attr-defined]
        header = dict(self.example_header)  # type: ignore[attr-defined]
        dtype = _record_dtype(layout, header)
        count = resolve(layout.count, header)
        n = 40 if count is None or int(count) < 0 else int(count)
        records = np.zeros(n, dtype=dtype)
        for field in dtype.names:
            base = dtype[field].base
            if base.kind in "iuf":
                shape = (n,) + dtype[field].shape
                records[field] = (np.arange(np.prod(shape)) % 100).reshape(shape)
            elif base.kind in "SU":
                records[field] = "x"
        start = _records_start(_preamble(layout, header), resolve(layout.offset, header),
                               self.name)
        return start + records.tobytes()


def _record_dtype(layout: FixedLayout, header: dict[str, Any]) -> np.dtype:
    return as_record_dtype(np.dtype(resolve(layout.dtype, header)))


def _records_start(preamble: bytes, offset: Any, name: str) -> bytes:
    """What a file holds before its records: the preamble, then zero bytes up to the
    layout's resolved ``offset`` when it has one."""
    if offset is None:
        return preamble
    if int(offset) < len(preamble):
        raise ValueError(f"cannot write {name}: the records' offset {offset} lies inside "
                         f"the {len(preamble)}-byte header")
    return preamble + bytes(int(offset) - len(preamble))


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
        meta = inherited_header(frame, header)
        try:
            dtype = _record_dtype(layout, meta or {})
            count = resolve(layout.count, meta or {})
            offset = resolve(layout.offset, meta or {})
        except LAYOUT_ERRORS as exc:
            # The layout is a callable of the header (the reader wraps its failure the
            # same way): say which header lacked what, not the callable's bare KeyError.
            raise ValueError(_layout_problem(name, meta, exc)) from None
        meta = meta or {}
        check_record_dtype(dtype)
        if any(dtype[n].shape for n in dtype.names):
            raise ValueError(f"write_{name} writes records without sub-array fields only")
        require_columns(table, dtype.names, f"{name} records")
        preamble = _records_start(_preamble(layout, meta), offset, name)
        if count is not None and int(count) >= 0 and int(count) != table.num_rows:
            raise ValueError(f"cannot write {name}: the header declares {count} records "
                             f"but the frame has {table.num_rows} rows")
        write_fixed_record_file(path, preamble, table, dtype, overwrite=overwrite)

    write.__name__ = write.__qualname__ = f"write_{name}"
    write.__doc__ = (f"Write a frame as a {name} file, atomically.\n\n"
                     "``frame`` (pandas, polars, Arrow or a dict of columns) needs a column per "
                     "record field; values are cast safely to the field types (a value that "
                     "does not fit, such as a string longer than its field, is a "
                     "``ValueError``: nothing is cut). ``header`` (default: the one a bindf "
                     "reader attached to ``frame``) is written as the format declares it.")
    return write


def _layout_problem(name: str, header: dict[str, Any] | None, exc: Exception) -> str:
    """Why ``write_<name>`` cannot resolve its record layout from ``header`` (None: none
    was given and the frame carries none)."""
    cause = f"{type(exc).__name__}: {exc}"
    if header is None:
        return (f"cannot write {name}: its record layout needs header values ({cause}), and "
                "the frame carries no bindf header; pass header=")
    if isinstance(exc, KeyError) and exc.args:
        return (f"cannot write {name}: the header {header} has no key {exc.args[0]!r}, "
                "which the record layout needs")
    return f"cannot write {name}: the header {header} does not give a valid record layout: {cause}"


def _header_json(value: Any, base: np.dtype) -> Any:
    """A binary header field's value (``base``: the field's element dtype) as the JSON
    value the frame's header holds, for strict JSON (Arrow and Parquet metadata, the
    CLI): text fields as text (``S`` read as UTF-8; text that is not valid Unicode is a
    ``UnicodeError``), raw bytes (``V``) as hex text,
    datetime64 as ISO 8601 text, timedelta64 as a count of its unit, NaT and non-finite
    floats as None (strict JSON has neither); a sub-array as a list of those. The
    writers take each of these back (None as NaN or NaT: an infinity comes back NaN)."""
    if isinstance(value, np.ndarray):
        return [_header_json(v, base) for v in value]  # a header's few values
    if base.kind == "V":
        return bytes(value).hex()
    if base.kind == "S":
        return bytes(value).decode("utf-8")
    if base.kind == "U":  # (numpy hands out lone surrogates and code points past U+10FFFF)
        text = str(value)
        text.encode("utf-8").decode("utf-8")
        return text
    if base.kind in "mM":
        if np.isnat(value):
            return None
        return str(np.datetime_as_string(value)) if base.kind == "M" else int(value.astype(np.int64))
    item = value.item() if hasattr(value, "item") else value
    return None if isinstance(item, float) and not math.isfinite(item) else item
