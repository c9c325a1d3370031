"""Strict JSON headers (``bindf/_header.py``): what is accepted, what is refused, and where
the errors point."""

from __future__ import annotations

import io
import json
import struct
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bindf._header import (
    MAX_HEADER_DEPTH,
    parse_json_header,
    read_exact,
    read_preamble,
)
from bindf.errors import BindfError, HeaderError, UnknownFormatError

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
    start = time.perf_counter()
    with pytest.raises(HeaderError, match="nested deeper"):
        parse_json_header(raw)
    assert time.perf_counter() - start < 2.0


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


def _backslash_outside_strings(text: str) -> bool:
    in_string, escaped = False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == "\\":
            return True
        elif ch == '"':
            in_string = True
    return False


def _depth_exceeds_reference(text: str, limit: int) -> bool:
    """The per-character definition the vectorised check must agree with."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


@given(st.text(alphabet='[]{}"\\aé€,', max_size=300), st.integers(0, 6))
def test_vectorised_depth_check_matches_the_reference(text: str, limit: int) -> None:
    """(A backslash outside a string is invalid JSON, which json.loads refuses anyway;
    the vectorised check may count it as an escape, so such texts are left out.)"""
    from bindf._header import _nesting_depth_exceeds

    assume(not _backslash_outside_strings(text))
    assert _nesting_depth_exceeds(text.encode(), limit) == _depth_exceeds_reference(text, limit)
