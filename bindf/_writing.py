"""Shared plumbing of the format writers (``write_spectro``, ``write_sp01`` …).

Writers accept whatever frame the user holds (pandas, polars, Arrow, or a dict of
columns), look at it through Arrow, and pull out each needed column as a numpy array of
the on-disk type. The conversions are *safe* casts: a value that does not fit the file's
type (an event of 300, a negative channel, a fractional count, a string longer than its
field) is a ``ValueError`` naming the column rather than a silently wrapped number or a
cut string in the output file.

Headers are serialised as strict JSON and then parsed back with the reader's own parser,
so a writer can never produce a file that bindf itself would refuse to read.
"""

from __future__ import annotations

import json
import operator
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._frames import info_of, to_arrow_table  # noqa: F401 - the writers' view of a frame
from ._header import parse_json_header
from .errors import HeaderError
from .formats._record_fields import NOT_A_TIME

#: Rows converted and written per step: bounds the writer's extra memory on big frames.
WRITE_CHUNK_ROWS = 1 << 20

_U32_MAX = 2**32 - 1


def require_columns(table: pa.Table, names: Sequence[str], what: str) -> None:
    """Raise a ``ValueError`` naming every missing column."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"cannot write {what}: missing column(s) {missing}; the frame has {table.column_names}"
        )


def refuse_unlisted_channels(table: pa.Table, channel_columns: Sequence[str],
                             what: str) -> None:
    """Raise a ``ValueError`` naming every ``ch<number>`` column of ``table`` that is not
    in ``channel_columns`` (the header's channels): a writer writes the header's
    channels only, so such a column would otherwise be dropped without a word."""
    extra = [n for n in table.column_names
             if n.startswith("ch") and n[2:].isdigit() and n not in channel_columns]
    if extra:
        raise ValueError(f"cannot write {what}: columns {extra} are not channels of the "
                         f"header ({list(channel_columns)})")


def column_values(table: pa.Table, name: str, dtype: np.dtype | str, *,
                  first_row: int = 0, null_as_nan: bool = False,
                  values_per_row: int = 1) -> np.ndarray:
    """Column ``name`` as a contiguous numpy array of ``dtype`` (safe cast, no nulls).

    Beside numbers: ``S`` fields take strings (as UTF-8) or bytes of at most the field's
    size, NUL-padded; ``U`` fields strings of at most its characters; ``V`` fields bytes
    of exactly its size; bool fields booleans (or integers 0/1); datetime64/timedelta64
    fields timestamps/durations, null becoming NaT. Nothing is cut or wrapped: a value
    that does not fit is a ``ValueError`` naming the column and its row (``first_row``:
    the row number of ``table``'s first row, for a table that is part of a frame).
    ``null_as_nan``: for a float ``dtype``, null becomes NaN instead of being refused
    (for formats whose NaN stands for "no value", such as FCS1's JSON null).
    ``values_per_row``: for a column of the values of a frame's lists flattened (SP01's
    wide histograms), how many values each row holds, so that errors name the row.
    """
    dtype = np.dtype(dtype)
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if values_per_row != 1:  # (errors name the frame's row, not the value's index)
        try:
            return column_values(table, name, dtype, first_row=0, null_as_nan=null_as_nan)
        except ValueNotStorable as exc:
            raise exc.of_row(first_row + exc.row // values_per_row) from None
    if dtype.kind in "mM":  # null is a value there: NaT
        return _time_values(column, name, dtype, first_row)
    if column.null_count and not (null_as_nan and dtype.kind == "f"):
        row = first_row + first_true(column.is_null())
        raise ValueNotStorable(f"column {name!r} has {column.null_count} null value(s), the "
                          f"first in row {row}; files cannot store them", row - first_row)
    if dtype.kind in "SUV":
        return _fixed_size_values(column, name, dtype, first_row)
    if dtype.kind == "b":
        return _bool_values(column, name, dtype, first_row)
    try:
        target = pa.from_numpy_dtype(dtype)
    except (pa.ArrowNotImplementedError, TypeError):
        raise ValueError(f"column {name!r} cannot be written as {dtype}: no such file "
                         "type") from None
    if column.type != target:
        try:
            cast = pc.cast(column, target, safe=True)
        except pa.ArrowNotImplementedError as exc:
            raise ValueError(
                f"column {name!r} ({column.type}) cannot be stored as {target}: {exc}"
            ) from None
        except pa.ArrowInvalid as exc:
            row = _first_failing_row(column, target)
            raise ValueNotStorable(
                f"column {name!r} ({column.type}) cannot be stored as {target}: row "
                f"{first_row + row} holds {column[row].as_py()!r} ({exc})", row) from None
        if pa.types.is_floating(target):  # a safe cast lets a too large number become inf
            _refuse_overflow(column, cast, name, target, first_row)
        column = cast
    # zero_copy_only=False: a null (allowed above only for floats) becomes NaN
    values = (column.to_numpy() if column.num_chunks != 1
              else column.chunk(0).to_numpy(zero_copy_only=False))
    return np.ascontiguousarray(values, dtype=dtype)


def _refuse_overflow(column: pa.ChunkedArray, cast: pa.ChunkedArray, name: str,
                     target: pa.DataType, first_row: int) -> None:
    """Refuse a finite number of ``column`` that became infinite in ``cast`` (a float
    field too small for it): Arrow's safe cast checks integers, not float ranges."""
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        return
    # numpy, not pyarrow.compute: is_finite has no half-float kernel before pyarrow 18
    became_infinite = (np.isfinite(pc.cast(column, pa.float64()).to_numpy())
                       & ~np.isfinite(cast.to_numpy()))
    if became_infinite.any():
        row = int(np.flatnonzero(became_infinite)[0])
        raise ValueNotStorable(f"column {name!r}: {column[row].as_py()!r} in row {first_row + row} "
                          f"is too large for {target}", row)


class ValueNotStorable(ValueError):
    """A value that a file cannot store, ``row`` its index in the column converted."""

    def __init__(self, message: str, row: int) -> None:
        super().__init__(message)
        self.row = row

    def __reduce__(self) -> Any:  # (pickled from a worker process: both arguments)
        return (type(self), (str(self), self.row))

    def of_row(self, row: int) -> ValueError:
        """The same error naming the frame's ``row`` instead (for a flattened column,
        converted with ``first_row=0``: its message names the value's index)."""
        return ValueError(str(self).replace(f"row {self.row}", f"row {row}", 1))


def first_true(mask: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first true value of a boolean array (one that has one)."""
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False)))[0])


def _first_failing_row(column: pa.ChunkedArray, target: pa.DataType) -> int:
    """The first row of ``column`` whose value a safe cast to ``target`` refuses (the
    cast of the whole column was refused), found by bisection: a few casts of prefixes,
    whatever the kinds of value and type (an error path: Arrow's message names the
    value, not where it is)."""
    low, high = 0, len(column)  # the prefix of `high` rows fails, of `low` rows not
    while high - low > 1:
        middle = (low + high) // 2
        try:
            pc.cast(column.slice(0, middle), target, safe=True)
        except pa.ArrowInvalid:
            high = middle
        else:
            low = middle
    return low


def _time_values(column: pa.ChunkedArray, name: str, dtype: np.dtype,
                 first_row: int) -> np.ndarray:
    """A timestamp (naive) or date column as datetime64, a duration column as
    timedelta64, in the unit of ``dtype`` (a safe cast: no lost precision, no overflow)."""
    unit = np.datetime_data(dtype)[0]
    kind = column.type
    if dtype.kind == "M":
        target = pa.timestamp(unit)
        fits = (pa.types.is_timestamp(kind) and kind.tz is None) or pa.types.is_date(kind)
        needs = ("naive timestamps (numpy's datetime64 has no time zone: convert "
                 "zoned ones to naive UTC first)" if pa.types.is_timestamp(kind)
                 else "timestamps or dates")
    else:
        target = pa.duration(unit)
        fits = pa.types.is_duration(kind)
        needs = "durations"
    if not fits:
        raise ValueError(f"column {name!r} ({kind}) cannot be stored as {dtype}: it needs {needs}")
    try:
        ticks = pc.cast(pc.cast(column, target, safe=True), pa.int64())
    except pa.ArrowNotImplementedError as exc:
        raise ValueError(f"column {name!r} ({kind}) cannot be stored as {dtype}: {exc}") from None
    except pa.ArrowInvalid as exc:
        row = _first_failing_row(column, target)
        raise ValueNotStorable(f"column {name!r} ({kind}) cannot be stored as {dtype}: row "
                          f"{first_row + row} holds {column[row].as_py()!r} ({exc})",
                          row) from None
    values = pc.fill_null(ticks, NOT_A_TIME).to_numpy()
    return np.ascontiguousarray(values.view(dtype.newbyteorder("=")), dtype=dtype)


def _bool_values(column: pa.ChunkedArray, name: str, dtype: np.dtype,
                 first_row: int) -> np.ndarray:
    if pa.types.is_boolean(column.type):
        return np.ascontiguousarray(column.to_numpy(), dtype=dtype)
    if not pa.types.is_integer(column.type):
        raise ValueError(f"column {name!r} ({column.type}) cannot be stored as bool: it "
                         "needs booleans (or integers 0 and 1)")
    numbers = column.to_numpy()
    other = np.flatnonzero((numbers != 0) & (numbers != 1))
    if other.size:
        row = int(other[0])
        raise ValueNotStorable(f"column {name!r}: row {first_row + row} holds {numbers[row]}, "
                          "which a bool field cannot store (0 or 1)", row)
    return np.ascontiguousarray(numbers, dtype=dtype)


#: Arrow types whose values are bytes (``S``/``V`` fields) or text (``S``/``U`` fields).
_BYTES_TYPES = ("is_binary", "is_large_binary", "is_fixed_size_binary", "is_binary_view")
_TEXT_TYPES = ("is_string", "is_large_string", "is_string_view")


def _is_any(kind: pa.DataType, predicates: tuple[str, ...]) -> bool:
    return any(getattr(pa.types, test, lambda _: False)(kind) for test in predicates)


def is_bytes_type(kind: pa.DataType) -> bool:
    """Whether ``kind`` holds bytes: binary of any offset width, fixed size, or views."""
    return _is_any(kind, _BYTES_TYPES)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def binary_as_hex(array: pa.Array) -> pa.Array:
    """A bytes array (see :func:`is_bytes_type`) as hex text: ``0x`` and two lowercase
    digits per byte (``b"\\x1c\\x91"`` → ``"0x1c91"``; ``bytes.fromhex(text[2:])``
    reverses it), nulls kept: for outputs that hold text only, such as CSV. The prefix
    keeps a CSV reader from taking an all-digit value (``"0012"``) for a number and
    dropping its zeros. One numpy pass over all the bytes, no step per value."""
    lengths, data = _values_back_to_back(pa.chunked_array([array]))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(2 + 2 * lengths, out=offsets[1:])
    text = np.empty(int(offsets[-1]), dtype=np.uint8)
    text[offsets[:-1]] = ord("0")
    text[offsets[:-1] + 1] = ord("x")
    value_of_byte = np.repeat(np.arange(len(lengths)), lengths)
    high = 2 * np.arange(len(data)) + 2 * (value_of_byte + 1)  # each byte's first digit
    text[high] = _HEX_DIGITS[data >> 4]
    text[high + 1] = _HEX_DIGITS[data & 0x0F]
    validity = None
    if array.null_count:
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.large_string(), len(array),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(text)],
                                 null_count=array.null_count)


def _fixed_size_values(column: pa.ChunkedArray, name: str, dtype: np.dtype,
                       first_row: int) -> np.ndarray:
    """A string or bytes column as values of an ``S``, ``U`` or ``V`` field."""
    kind = column.type
    text, raw = _is_any(kind, _TEXT_TYPES), _is_any(kind, _BYTES_TYPES)
    if not (text or raw) or (dtype.kind == "V" and text):
        needs = {"S": "strings or bytes", "U": "strings", "V": "bytes"}[dtype.kind]
        raise ValueError(f"column {name!r} ({kind}) cannot be stored as {dtype}: it needs {needs}")
    if dtype.kind == "U" and raw:
        try:
            column = pc.cast(column, pa.large_string())
        except pa.ArrowInvalid:
            raise ValueError(f"column {name!r} ({kind}) cannot be stored as {dtype}: its "
                             "bytes are not UTF-8 text") from None
    lengths, data = _values_back_to_back(column)
    if dtype.kind == "U":
        width = dtype.itemsize // 4
        lengths, data = _code_points(lengths, data)
        unit, what = np.uint32, "characters long"
    else:
        width, unit, what = dtype.itemsize, np.uint8, "bytes long" + (" in UTF-8" if text else "")
    wrong = np.flatnonzero(lengths != width if dtype.kind == "V" else lengths > width)
    if wrong.size:
        row = int(wrong[0])
        limit = f"exactly {width}" if dtype.kind == "V" else f"at most {width}"
        raise ValueNotStorable(f"column {name!r}: the value in row {first_row + row} is "
                          f"{lengths[row]} {what}; a {dtype} field holds {limit} "
                          "(values are never cut)", row)
    padded = np.zeros((len(lengths), width), dtype=unit)
    padded[np.arange(width) < lengths[:, None]] = data
    return np.ascontiguousarray(padded.reshape(-1).view(dtype.newbyteorder("=")), dtype=dtype)


def _values_back_to_back(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The byte length of each value of a string/bytes column, and the bytes of all of
    them back to back (from Arrow's own buffers: no step per value)."""
    array = pc.cast(column, pa.large_binary()).combine_chunks()
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64, count=len(array) + 1,
                            offset=8 * array.offset)
    data = (np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None
            else np.zeros(0, dtype=np.uint8))
    return np.diff(offsets), data[offsets[0]:offsets[-1]]


def _code_points(lengths: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode UTF-8 values (``lengths`` bytes each, back to back in ``data``, valid
    UTF-8): each value's count of code points, and all code points back to back."""
    starts = np.flatnonzero((data & 0xC0) != 0x80)  # the first byte of each character
    lead = data[starts].astype(np.uint32)
    size = 1 + (lead >= 0xC0).astype(np.uint8) + (lead >= 0xE0) + (lead >= 0xF0)
    points = lead & np.array([0, 0x7F, 0x1F, 0x0F, 0x07], dtype=np.uint32)[size]
    padded = np.concatenate([data, np.zeros(3, dtype=np.uint8)]).astype(np.uint32)
    for following in (1, 2, 3):  # a step per continuation byte, not per character
        continued = size > following
        points = np.where(continued, (points << 6) | (padded[starts + following] & 0x3F),
                          points)
    value_ends = np.concatenate([[0], np.cumsum(lengths)])
    characters_before = np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])
    return np.diff(characters_before[value_ends]), points


def inherited_header(frame: Any, header: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``header`` if given, else the header a bindf reader attached to ``frame`` (or None).

    Lets ``write_x(path, read_x(other))`` keep the metadata without the user passing it.
    """
    if header is not None:
        if not isinstance(header, Mapping):
            raise TypeError(f"header must be a dict, not {type(header).__name__}")
        return dict(header)
    try:
        info = info_of(frame)
    except TypeError:
        return None
    if info is None or not isinstance(info.get("header"), dict):
        return None
    return dict(info["header"])


def encode_preamble(magic: bytes, header: Mapping[str, Any], *, compact: bool = True) -> bytes:
    """``magic | u32 length | JSON`` for ``header``, checked by the reader's own parser.
    ``compact=False``: Python's default separators (``", "``, ``": "``), as the AstroPix
    DAQ writes its header."""
    try:
        text = json.dumps(dict(header), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":") if compact else None)
        raw = text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"header cannot be written as strict JSON: {exc}") from None
    if len(raw) > _U32_MAX:
        raise ValueError(f"header JSON is {len(raw)} bytes; the length field holds at most {_U32_MAX}")
    try:
        parse_json_header(raw)
    except HeaderError as exc:
        # e.g. {1: .., "1": ..} (duplicate keys once stringified) or absurd nesting.
        raise ValueError(f"header would not read back: {exc.reason}") from None
    return magic + struct.pack("<I", len(raw)) + raw


def encode_header_record(dtype: np.dtype, header: Mapping[str, Any]) -> bytes:
    """The bytes of one record of the structured ``dtype`` holding ``header``'s values
    (a fixed-record format's binary header). A value that the field cannot hold exactly
    (a string longer than the field, a negative or too large integer, a fraction in an
    integer field, a finite number that would become infinite) is a ``ValueError``
    naming the field: nothing is cut or wrapped."""
    record = np.zeros(1, dtype=dtype)
    for name in dtype.names:
        if name not in header:
            raise ValueError(f"header is missing field {name!r}")
        field = dtype[name]
        given = np.asarray(header[name], dtype=object)
        if given.shape != field.shape:
            raise ValueError(f"header field {name!r} ({field}) needs a value of shape "
                             f"{field.shape}, not {given.shape}")
        values = np.empty(field.shape, dtype=field.base)
        for index in np.ndindex(*field.shape):  # a header's few values, not records
            values[index] = _header_value(name, field.base, given[index])
        record[name] = values
    return record.tobytes()


def _header_value(name: str, base: np.dtype, value: Any) -> Any:
    """``value`` as something numpy stores in a field of ``base`` without a change."""
    where = f"header field {name!r} ({base.str})"
    if base.kind in "SV":
        stored = value
        if isinstance(value, str) and base.kind == "S":
            stored = value.encode("utf-8")
        elif isinstance(value, str):  # raw bytes as the header of a read gives them
            try:
                stored = bytes.fromhex(value)
            except ValueError:
                raise ValueError(f"{where} needs bytes or hex text, not {value!r}") from None
        if not isinstance(stored, (bytes, bytearray, memoryview, np.void)):
            raise ValueError(f"{where} needs {'a string or ' if base.kind == 'S' else ''}"
                             f"bytes{' or hex text' if base.kind == 'V' else ''}, not "
                             f"{type(value).__name__}")
        stored = bytes(stored)
        if len(stored) > base.itemsize or (base.kind == "V" and len(stored) != base.itemsize):
            limit = "exactly" if base.kind == "V" else "at most"
            raise ValueError(f"{where}: {value!r} is {len(stored)} bytes; the field holds "
                             f"{limit} {base.itemsize} (values are never cut)")
        return np.void(stored) if base.kind == "V" else stored
    if base.kind == "U":
        if not isinstance(value, str):
            raise ValueError(f"{where} needs a string, not {type(value).__name__}")
        if len(value) > base.itemsize // 4:
            raise ValueError(f"{where}: {value!r} is {len(value)} characters; the field "
                             f"holds at most {base.itemsize // 4} (values are never cut)")
        return value
    if base.kind in "biu":
        number = _integer(value)
        if number is None:
            raise ValueError(f"{where} needs an integer, not {value!r}")
        low, high = (0, 1) if base.kind == "b" else (np.iinfo(base).min, np.iinfo(base).max)
        if not low <= number <= high:
            raise ValueError(f"{where}: {number} is outside {low}..{high}")
        return number
    if value is None and base.kind in "fmM":  # as a read gives NaN and NaT back
        return np.array(None, dtype=base)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            stored = np.array(value, dtype=base)
        overflowed = base.kind in "fc" and np.isfinite(value) and not np.isfinite(stored)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{where} cannot hold {value!r}: {exc}") from None
    if overflowed:
        raise ValueError(f"{where}: {value!r} is too large for the field")
    return stored


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is one (a float only when it is whole), else None."""
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else None
    try:
        return operator.index(value)
    except TypeError:
        return None


def write_records(f: Any, records: np.ndarray) -> None:
    """Write a packed structured array's bytes (no per-record Python work)."""
    if records.size:
        f.write(memoryview(records.view(np.uint8)))


def write_fixed_record_file(
    path: Any, preamble: bytes, table: pa.Table, dtype: np.dtype, *, overwrite: bool = True
) -> None:
    """Write ``preamble`` then ``table``'s rows as packed ``dtype`` records, atomically.

    Converts and writes :data:`WRITE_CHUNK_ROWS` rows at a time, so the writer's extra
    memory stays bounded whatever the frame's size. Column names are the dtype's fields.
    Bytes of a record that no field covers are zeros.
    """
    from ._atomic import atomic_output

    with atomic_output(path, overwrite=overwrite) as f:
        f.write(preamble)
        for start in range(0, table.num_rows, WRITE_CHUNK_ROWS):
            part = table.slice(start, WRITE_CHUNK_ROWS)
            records = np.zeros(part.num_rows, dtype=dtype)
            for name in dtype.names:
                records[name] = column_values(part, name, dtype[name], first_row=start)
            write_records(f, records)
