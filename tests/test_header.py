"""Strict JSON headers (``bindf/_header.py``): what is accepted, what is refused, and where
the errors point."""

from __future__ import annotations

import io
import json
import math
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bindf._header import (
    MAX_HEADER_DEPTH,
    parse_json_header,
    read_exact,
    read_preamble,
)
from bindf._kernels import _jsonparse, jsonparse_reference
from bindf.errors import BindfError, HeaderError, TruncatedHeaderError, UnknownFormatError

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


# -- parse_json_header -----------------------------------------------------------------


def test_accepts_real_flim_header():
    raw = (b'{"channels":[1,3],"bin_width_micros":100000,"acquisition_time_millis":10000,'
           b'"laser_period_ns":25.0,"tau_ns":null,"harmonics":2,"file":"C:\\\\x\\\\y.bin"}')
    header = parse_json_header(raw)
    assert header["channels"] == [1, 3]
    assert header["tau_ns"] is None
    assert header["file"] == "C:\\x\\y.bin"


@settings(max_examples=100, deadline=None)
@given(value=json_objects, compact=st.booleans())
def test_any_json_object_round_trips(value, compact):
    text = json.dumps(value, ensure_ascii=not compact, separators=(",", ":") if compact else None)
    assert parse_json_header(text.encode("utf-8")) == value


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_give_dict_or_header_error(raw):
    try:
        value = parse_json_header(raw, offset=8)
    except HeaderError as exc:
        assert exc.offset is not None and 8 <= exc.offset <= 8 + len(raw)
    else:
        assert isinstance(value, dict)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"x": {"b": 1, "b": 1}}', "duplicate key 'b'"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": [-Infinity]}', "-Infinity"),
        # beyond a double: it would be infinity, which JSON cannot write back
        (b'{"a": 1e999}', "the number 1e999 is beyond a 64-bit float"),
        (b'{"a": {"b": [-1.5e400]}}', "the number -1.5e400 is beyond a 64-bit float"),
        (b'{"a": 1.' + b"5" * 100 + b'e999}', r"the number 1\.5{27}\.\.\. is beyond"),
        (b"[]", "must be an object, not list"),
        (b"42", "must be an object, not int"),
        (b'"s"', "must be an object, not str"),
        (b"null", "must be an object, not NoneType"),
        (b"true", "must be an object, not bool"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udc00": 1}', "lone UTF-16 surrogate"),
    ],
)
def test_rejected(raw, match):
    with pytest.raises(HeaderError, match=match) as exc:
        parse_json_header(raw, path="f.bin", offset=8)
    assert exc.value.path == "f.bin"
    assert exc.value.offset == 8


def test_surrogate_pair_is_fine():
    assert parse_json_header(b'{"e": "\\ud83d\\ude00"}') == {"e": "\U0001f600"}


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        # Trailing comma: the fault is the comma and the brace that follows it. Python
        # 3.13's json reports the comma, 3.10-3.12 the brace; both point at the fault.
        (b'{"a": 1,}', {7, 8}),
        (b'{"a": }', {6}),
        (b"", {0}),
        (b"   ", {3}),
        (b'{"a": 1} x', {9}),  # extra data after the object
        (b"{'a': 1}", {1}),  # Python literal, not JSON
        ('{"é": tru}'.encode(), {7}),  # byte offset, not character offset
    ],
)
def test_syntax_error_points_at_the_faulty_byte(raw, fault):
    """The offset is absolute (header start + position), lies inside the header and
    points at the bytes that make it invalid, on every supported Python."""
    with pytest.raises(HeaderError, match="not valid JSON") as exc:
        parse_json_header(raw, offset=100)
    assert 100 <= exc.value.offset <= 100 + len(raw)
    assert exc.value.offset - 100 in fault


def test_not_utf8_points_at_byte():
    with pytest.raises(HeaderError, match="not UTF-8") as exc:
        parse_json_header(b'{"a": "ok\xff"}', offset=8)
    assert exc.value.offset == 8 + 9


def test_bom_is_refused():
    with pytest.raises(HeaderError):
        parse_json_header(b'\xef\xbb\xbf{"a": 1}')


def test_depth_limit():
    def nested(depth: int) -> bytes:
        return b'{"a":' * depth + b"1" + b"}" * depth

    assert parse_json_header(nested(MAX_HEADER_DEPTH))
    with pytest.raises(HeaderError, match="nested deeper"):
        parse_json_header(nested(MAX_HEADER_DEPTH + 1))
    # Brackets inside strings are text, not nesting.
    assert parse_json_header(json.dumps({"s": "[" * 1000 + '{"\\"'}).encode())


def test_huge_nesting_is_rejected_quickly():
    raw = b"[" * 1_000_000
    start = time.process_time()
    with pytest.raises(HeaderError, match="nested deeper"):
        parse_json_header(raw)
    assert time.process_time() - start < 2.0


def test_never_eval():
    with pytest.raises(HeaderError):
        parse_json_header(b"__import__('os').system('echo pwned')")


# -- read_preamble ------------------------------------------------------------------------


def preamble(magic: bytes, header: bytes, body: bytes = b"") -> bytes:
    return magic + struct.pack("<I", len(header)) + header + body


def test_read_preamble_returns_header_and_data_offset():
    data = preamble(b"SP01", b'{"channels": [1]}', b"records")
    f = io.BytesIO(data)
    header, offset = read_preamble(f, magic=b"SP01", file_size=len(data), format_label="SP01")
    assert header == {"channels": [1]}
    assert data[offset:] == b"records"
    assert f.tell() == offset


def test_read_preamble_longer_magic():
    data = b"%APXDF" + struct.pack("<I", 2) + b"{}"
    header, offset = read_preamble(io.BytesIO(data), magic=b"%APXDF", file_size=len(data),
                                   format_label="APX")
    assert header == {} and offset == 12


def test_read_preamble_bad_magic():
    data = preamble(b"XXXX", b"{}")
    with pytest.raises(UnknownFormatError, match="expected magic b'SP01', found b'XXXX'") as exc:
        read_preamble(io.BytesIO(data), magic=b"SP01", file_size=len(data), path="p",
                      format_label="SP01")
    assert exc.value.offset == 0 and exc.value.path == "p"


def test_read_preamble_empty():
    with pytest.raises(UnknownFormatError, match="empty") as exc:
        read_preamble(io.BytesIO(b""), magic=b"SP01", file_size=0, format_label="SP01")
    assert exc.value.offset == 0


@pytest.mark.parametrize("data", [b"SP01", b"SP01\x01", b"SP01\x01\x02\x03"])
def test_read_preamble_cut_in_length_field(data):
    with pytest.raises(HeaderError, match="length field") as exc:
        read_preamble(io.BytesIO(data), magic=b"SP01", file_size=len(data), format_label="SP01")
    assert exc.value.offset == 4


def test_read_preamble_length_beyond_eof_does_not_allocate():
    data = b"SP01" + struct.pack("<I", 0xFFFFFFFF) + b"{}"

    class NoBigReads(io.BytesIO):
        def read(self, n=-1):
            assert n is None or n < 1024, "tried to read the declared length"
            return super().read(n)

    with pytest.raises(HeaderError, match="declares 4294967295 bytes of JSON but only 2") as exc:
        read_preamble(NoBigReads(data), magic=b"SP01", file_size=len(data), format_label="SP01")
    assert exc.value.offset == 4


def test_a_damaged_length_before_a_whole_header_is_damage_not_a_cut():
    """A flipped high bit in the length field made every JSON-header format report a
    cut header (TruncatedHeaderError: a follow waits for more bytes, a pipeline
    retries); a whole JSON object followed by records says the length is damaged. A
    header cut inside its object, or followed only by padding, is still a cut."""
    header = b'{"channels": [1, 3], "bin_width_micros": 1000}'
    records = bytes(range(200))
    damaged = b"SP01" + struct.pack("<I", len(header) | 1 << 24) + header + records

    def read(data: bytes) -> None:
        read_preamble(io.BytesIO(data), magic=b"SP01", file_size=len(data),
                      format_label="SP01")

    with pytest.raises(HeaderError, match=f"whole JSON header of {len(header)} bytes is "
                       r"followed by records \(a damaged length field\)") as exc:
        read(damaged)
    assert not isinstance(exc.value, TruncatedHeaderError) and exc.value.offset == 4
    padded = b"SP01" + struct.pack("<I", len(header) + 64) + header + b" " * 10
    for cut in (damaged[:8 + len(header) - 1], padded):
        with pytest.raises(TruncatedHeaderError, match="but only"):
            read(cut)


def test_a_cut_header_nested_deeper_than_python_recurses_is_a_cut():
    """The probe for a whole JSON object after a length that runs past the end used the
    standard library's recursive parser with no depth guard: a cut header of 100,000
    ``[`` raised a bare RecursionError (every JSON-header format, and a traceback in
    ``bindf info``) instead of the cut-header error with the length field's offset."""
    data = b"IT02" + struct.pack("<I", 10**9) + b"[" * 100_000
    with pytest.raises(TruncatedHeaderError, match="declares 1000000000 bytes") as exc:
        read_preamble(io.BytesIO(data), magic=b"IT02", file_size=len(data),
                      format_label="IT02")
    assert exc.value.offset == 4


def test_read_preamble_file_shrank():
    data = preamble(b"SP01", b'{"a": 1}')
    # The size measured at open time says more bytes exist than the stream delivers.
    with pytest.raises(HeaderError, match="ends inside its JSON header") as exc:
        read_preamble(io.BytesIO(data[:-3]), magic=b"SP01", file_size=len(data),
                      format_label="SP01")
    assert exc.value.offset == len(data) - 3


def test_read_preamble_json_error_offset_is_absolute():
    data = preamble(b"SPF1", b'{"a": 1,}')
    with pytest.raises(HeaderError) as exc:
        read_preamble(io.BytesIO(data), magic=b"SPF1", file_size=len(data), format_label="SPF1")
    # magic (4) + length (4), then the comma (7) or the brace after it (8): see above.
    assert exc.value.offset in {8 + 7, 8 + 8}


def test_read_exact_loops_over_short_reads():
    class Trickle(io.BytesIO):
        def read(self, n=-1):
            return super().read(min(n, 3))

    assert read_exact(Trickle(b"0123456789"), 8) == b"01234567"
    assert read_exact(Trickle(b"0123"), 8) == b"0123"


def test_errors_are_value_errors():
    assert issubclass(HeaderError, BindfError) and issubclass(BindfError, ValueError)


@given(st.text(alphabet='[]{}":\\aé€,', max_size=300))
def test_nesting_depth_matches_the_reference(text: str) -> None:
    """The compiled depth count agrees with the per-byte definition, on any text
    (valid JSON or not: the depth is checked before parsing)."""
    raw = text.encode()
    assert _jsonparse.nesting_depth(raw) == jsonparse_reference.nesting_depth(raw)


def _strict_loads(raw: bytes) -> object:
    """What bindf's rules make of ``raw``: the standard library's value, or None."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats,
                           parse_constant=_no_constant, parse_float=_finite)
        if not isinstance(value, dict):
            return None
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates
    except (ValueError, UnicodeError, RecursionError):
        return None
    return value


def _finite(text: str) -> float:
    if math.isinf(value := float(text)):
        raise ValueError(text)
    return value


def _no_repeats(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("repeated key")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _identical(a: object, b: object) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 == True is not enough;
    NaN cannot occur; -0.0 and 0.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


def _agrees_with_json(raw: bytes) -> None:
    fast = _jsonparse.parse_object(raw, MAX_HEADER_DEPTH)
    expected = _strict_loads(raw) if raw.count(b"[") + raw.count(b"{") < 900 else None
    if fast is not None:  # the compiled parser accepts only what json accepts, identically
        assert expected is not None and _identical(fast, expected), raw
    elif expected is not None:  # and leaves only what it cannot take to json
        assert _jsonparse.nesting_depth(raw) > MAX_HEADER_DEPTH or raw.strip(b" \t\r\n")[:1] != b"{", raw


@settings(max_examples=300, deadline=None)
@given(value=json_objects, ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2, "\t"]))
def test_compiled_parser_takes_valid_headers_exactly(value, ascii_only, indent) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode()
    assert _identical(_jsonparse.parse_object(raw, MAX_HEADER_DEPTH), value)
    _agrees_with_json(raw)


_json_tokens = st.sampled_from([
    "{", "}", "[", "]", ",", ":", " ", "\n", '"', '"a"', '"\\u00e9"', '"\\ud83d\\ude00"',
    '"\\ud800"', '"\\udc00"', '"\\x"', '"\\', "\\n", "é", "\x01", "0", "-0", "-", "01", "1.", ".5",
    "1.5", "1e5", "1E+5", "-1.5e-300", "1e400", "12345678901234567890", "9" * 30, "true", "false",
    "null", "NaN", "Infinity", "-Infinity", "tru", '"k"', '"k":', '"k": 1', '"k": [1, 2]',
])


@settings(max_examples=1000, deadline=None)
@given(parts=st.lists(_json_tokens, max_size=24))
def test_compiled_parser_agrees_with_json_on_near_json(parts) -> None:
    """Texts stitched from JSON tokens, valid or not: whatever the compiled parser
    accepts, json accepts with identical values; what it leaves alone is either
    refused by json under bindf's rules, or fine and then not an object."""
    _agrees_with_json(("{" + "".join(parts)).encode())
    _agrees_with_json("".join(parts).encode())


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_compiled_parser_agrees_with_json_on_any_bytes(raw) -> None:
    _agrees_with_json(raw)


def test_compiled_parser_reuses_short_strings_it_has_seen() -> None:
    """Short ASCII strings (a campaign's repeated keys) come from the parser's cache of
    strings seen before: the same str object for the same text, whatever happened to
    the cache in between (thousands of other strings, some landing in the same slots),
    and always the text of the bytes. Non-ASCII and long strings are made anew."""
    header = b'{"readout_uid": 4000, "chip": "v4", "long": "' + b"x" * 60 + b'", "e": "\xc3\xa9\xc3\xa9"}'
    first = _jsonparse.parse_object(header, MAX_HEADER_DEPTH)
    churn = [f"k{i}_{'y' * (i % 40)}" for i in range(5000)]
    for start in range(0, len(churn), 500):
        raw = json.dumps({key: key for key in churn[start:start + 500]}).encode()
        assert _identical(_jsonparse.parse_object(raw, MAX_HEADER_DEPTH), json.loads(raw))
    again = _jsonparse.parse_object(header, MAX_HEADER_DEPTH)
    assert _identical(again, first) and _identical(again, json.loads(header))
    third = _jsonparse.parse_object(header, MAX_HEADER_DEPTH)
    assert all(a is b for a, b in zip(again, third))  # the keys
    assert again["chip"] is third["chip"] and again["long"] is not third["long"]
    assert again["e"] == "éé" and again["e"] is not third["e"]


def test_compiled_parser_numbers_and_strings() -> None:
    raw = ('{"i": [0, -0, 7, -123456789012345678, 123456789012345678901234567890], '
           '"f": [0.0, -0.0, 1e5, 1E-5, 2.5e+3, 5e-324, 0.1, 1.7976931348623157e308, 1e-400,'
           ' 3.14159265358979323846264338327950288419716939937510582097494459230781640628620899],'
           '"s": ["", "a\\"b", "\\\\", "\\/", "\\b\\f\\n\\r\\t", "\\u0000", "\\u00e9\\u20ac",'
           ' "\\ud83d\\ude00", "é€😀", "\x7f"]}').encode()
    fast = _jsonparse.parse_object(raw, MAX_HEADER_DEPTH)
    assert fast is not None and _identical(fast, json.loads(raw))
    for refused in [b'{"a": 1, "a": 2}', b'{"a": NaN}', b'{"a": "\\ud800x"}', b'{"a": 1} x',
                    b'{"a": 1e}', b'{"a": 01}', b'{"a": "\x01"}', b"[]", b"", b" ",
                    b'{"a": "\xff"}', b'\xef\xbb\xbf{}', b'{"a": 1,}', b'{"a": 1e400}',
                    b'{"a": [-1e400]}', b'{"a": 1.' + b"9" * 400 + b'e308}']:
        assert _jsonparse.parse_object(refused, MAX_HEADER_DEPTH) is None, refused
    _agrees_with_json(b'{"a": ' + b"9" * 5000 + b"}")  # beyond int()'s digit limit (3.10.7+)
    nested = b'{"a":' * 64 + b"1" + b"}" * 64
    assert _jsonparse.parse_object(nested, 64) is not None
    assert _jsonparse.parse_object(nested, 63) is None


class _RawObject:
    """An object's pairs inside another object's pairs (written as JSON by _dumps)."""

    def __init__(self, pairs: list) -> None:
        self.pairs = pairs


# Keys from a small alphabet (repeats are likely), with colons, quotes and backslashes,
# which must not be taken for key separators; values that nest objects with their own,
# possibly repeated, keys.
_keys = st.text(alphabet='a:"\\é', max_size=3)
_pair_lists = st.recursive(
    st.lists(st.tuples(_keys, json_scalars), max_size=4),
    lambda inner: st.lists(st.tuples(_keys, json_scalars | inner.map(_RawObject)), max_size=4),
    max_leaves=12,
)


def _dumps(pairs: list, ascii_only: bool) -> str:
    """A JSON object written pair by pair, so that it may repeat a key."""
    parts = []
    for key, value in pairs:
        text = (_dumps(value.pairs, ascii_only) if isinstance(value, _RawObject)
                else json.dumps(value, ensure_ascii=ascii_only))
        parts.append(f"{json.dumps(key, ensure_ascii=ascii_only)}: {text}")
    return "{" + ", ".join(parts) + "}"


def _repeats_a_key(pairs: list) -> bool:
    keys = [key for key, _ in pairs]
    return len(set(keys)) != len(keys) or any(
        _repeats_a_key(v.pairs) for _, v in pairs if isinstance(v, _RawObject))


@settings(max_examples=300, deadline=None)
@given(pairs=_pair_lists, ascii_only=st.booleans())
def test_a_repeated_key_is_refused_at_any_depth(pairs, ascii_only) -> None:
    """A header that repeats a key anywhere is refused, naming the key (the compiled
    parser leaves it to the standard library's); any other gives json's value."""
    text = _dumps(pairs, ascii_only)  # ascii_only: \u escapes instead of UTF-8 bytes
    if _repeats_a_key(pairs):
        with pytest.raises(HeaderError, match="duplicate key"):
            parse_json_header(text.encode())
    else:
        assert parse_json_header(text.encode()) == json.loads(text)


def test_every_cut_inside_a_header_is_a_truncated_header_error(format_case) -> None:
    """A file cut anywhere inside its header (or still being written) says so with
    :class:`TruncatedHeaderError`, so that a caller can tell it from a damaged header:
    cut inside the magic it is not (yet) the format; from the magic on, every cut before
    the records opens or raises TruncatedHeaderError with the offset of the header field
    that lacks bytes. Only IT02's layout guess may find too few records to decide."""
    import warnings

    import bindf
    from bindf._source import Source
    from bindf.errors import TruncatedHeaderError
    from bindf.registry import open_reader

    options = dict(format_case.kwargs)
    data = format_case.path.read_bytes()
    fmt = options.pop("format", None) or bindf.detect_format(format_case.path).name
    magic_length = max((len(m) for m in bindf.get_format(fmt).magics), default=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FCS1 warns of a cut metadata block
        data_offset = open_reader(Source(str(format_case.path)), fmt, **options).data_offset
        opened = []
        for cut in range(min(len(data), data_offset + 200)):
            try:
                bindf.read_header(data[:cut], format=fmt, **options)
            except UnknownFormatError as exc:
                assert cut < magic_length, (cut, exc)
            except TruncatedHeaderError as exc:
                assert cut < data_offset and exc.offset is not None, (cut, exc)
                assert exc.offset <= cut, (cut, exc)
            except bindf.CorruptDataError as exc:
                assert fmt == "it02" and "cannot tell" in str(exc), (cut, exc)
            else:
                opened.append(cut)
    assert data_offset in opened
