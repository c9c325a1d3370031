"""Record fields of a numpy dtype as Arrow columns: which fields can be read, which
column each becomes, and the conversion of a batch of field values.

Shared by every fixed-record reader declared with a dtype (:class:`bindf.FixedRecordFormat`,
:func:`bindf.read_records`). The rules, in ``docs/formats/records.md``: numbers keep
their type in native byte order; ``V`` fields are fixed-size binary; datetime64 and
timedelta64 of seconds to nanoseconds are Arrow timestamps and durations (NaT is null);
``S`` (read as UTF-8) and ``U`` fields are strings with numpy's meaning, where a value
ends at its last non-NUL byte or code point. Everything is whole-array numpy or Arrow
work: no Python step per value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrow import STRING_BYTES_MAX

#: numpy's NaT: the int64 a datetime64/timedelta64 field holds for "no time".
NOT_A_TIME = np.iinfo(np.int64).min

#: datetime64/timedelta64 units with an Arrow timestamp/duration of the same unit.
TIME_UNITS = ("s", "ms", "us", "ns")


def as_record_dtype(dtype: np.dtype) -> np.dtype:
    """``dtype`` as a record: a plain (non-structured) dtype is one field called ``value``."""
    return dtype if dtype.names else np.dtype([("value", dtype)])


def check_record_dtype(dtype: np.dtype) -> None:
    """Refuse, with a ``ValueError`` naming the field, a record dtype whose fields have no
    exact Arrow column or do not describe separate bytes of the record."""
    spans = []
    for name in dtype.names:
        field_dtype, offset = dtype.fields[name][:2]
        why = _unsupported_because(field_dtype.base) or (
            "it has zero size" if field_dtype.itemsize == 0 else "")  # ('<u2', (0,))
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


def column_plan(dtype: np.dtype, subarrays: str) -> list[tuple[str, str, int | None, np.dtype]]:
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
    columns = [column for column, *_ in plan]
    if len(set(columns)) < len(columns):  # ("a", (2,)) and "a_0" would both be a_0
        twice = next(c for c in columns if columns.count(c) > 1)
        fields = [field for column, field, *_ in plan if column == twice]
        raise ValueError(f"record fields {fields[0]!r} and {fields[1]!r} both give the column "
                         f"{twice!r} (a sub-array field's columns are <name>_<index>): "
                         "rename one")
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


def arrow_field(column: str, index: int | None, base: np.dtype, *,
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
    # (readers keep their batches within it: FixedLayoutReader's max_batch_records)
    if offsets[-1] > STRING_BYTES_MAX:
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
