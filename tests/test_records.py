"""The generic fixed-record reader (numpy dtype → frame)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import bindf

LOG_DTYPE = np.dtype([("name", "S12"), ("time", "<i8"), ("value", "<f4")])


def _log_file(path: Path, n: int = 50) -> np.ndarray:
    rec = np.zeros(n, LOG_DTYPE)
    rec["name"] = [f"sensor{i % 7}".encode() for i in range(n)]
    rec["time"] = np.arange(n, dtype=np.int64) * 1_000_000_007
    rec["value"] = np.linspace(-1, 1, n, dtype=np.float32)
    rec.tofile(path)
    return rec


def test_name_time_value_records(tmp_path: Path) -> None:
    path = tmp_path / "log.bin"
    rec = _log_file(path)
    df = bindf.read_records(path, LOG_DTYPE)
    assert list(df.columns) == ["name", "time", "value"]
    assert df["name"].tolist() == [n.decode() for n in rec["name"]]
    np.testing.assert_array_equal(df["time"].to_numpy(), rec["time"])
    assert df["value"].dtype == np.float32
    np.testing.assert_array_equal(df["value"].to_numpy(), rec["value"])


def test_header_sizes_the_matrix(tmp_path: Path) -> None:
    rows, cols = 5, 3
    matrix = np.arange(rows * cols, dtype="<f8").reshape(rows, cols) / 7
    path = tmp_path / "matrix.bin"
    path.write_bytes(np.array([(rows, cols)], "<i4,<i4").tobytes() + matrix.tobytes()
                     + b"trailer")
    kwargs = dict(header=[("rows", "<i4"), ("cols", "<i4")],
                  dtype=lambda h: np.dtype(("<f8", (h["cols"],))), count=lambda h: h["rows"])
    df = bindf.read_records(path, output="polars", **kwargs)
    assert df.columns == ["value_0", "value_1", "value_2"]
    np.testing.assert_array_equal(df.to_numpy(), matrix)
    assert df.bindf.header == {"rows": 5, "cols": 3}
    as_list = bindf.read_records(path, subarrays="list", output="polars", **kwargs)
    np.testing.assert_array_equal(np.stack(as_list["value"].to_list()), matrix)
    lazy = bindf.scan_records(path, **kwargs).filter(pl.col("value_0") > 1).collect()
    assert lazy.equals(df.filter(pl.col("value_0") > 1))


def test_big_endian_and_memmap(tmp_path: Path) -> None:
    path = tmp_path / "be.bin"
    values = np.arange(10, dtype=">u4")
    path.write_bytes(b"HDR!" + values.tobytes())
    for memmap in (False, True):
        df = bindf.read_records(path, ">u4", offset=4, memmap=memmap)
        assert df["value"].tolist() == list(range(10))
        assert df["value"].dtype == np.uint32


def test_count_beyond_file_is_capped_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    np.arange(4, dtype="<i8").tofile(path)
    with pytest.warns(bindf.TruncatedFileWarning, match="declares 10 records"):
        df = bindf.read_records(path, "<i8", count=10)
    assert len(df) == 4


def test_a_negative_count_other_than_minus_one_is_refused(tmp_path: Path) -> None:
    """-1 is "as many as the file holds"; another negative count is a mistake (an
    arithmetic slip, or a damaged header field), not a request for every record."""
    path = tmp_path / "rec.bin"
    np.arange(10, dtype="<u4").tofile(path)
    assert len(bindf.read_records(path, "<u4", count=-1)) == 10
    for count in (-5, 2.5, True):
        with pytest.raises(ValueError, match="count must be a number of records, -1"):
            bindf.read_records(path, "<u4", count=count)
    counted = tmp_path / "counted.bin"
    counted.write_bytes(np.array([-5], "<i4").tobytes() + np.arange(10, dtype="<u4").tobytes())
    with pytest.raises(bindf.HeaderError, match="negative record count -5") as caught:
        bindf.read_records(counted, "<u4", header=[("rows", "<i4")], count=lambda h: h["rows"])
    assert caught.value.offset == 0 and caught.value.path == str(counted)


def test_fractional_offsets_and_counts_are_refused(tmp_path: Path) -> None:
    """int() floored them: a read misaligned by a byte, with only a truncation warning."""
    path = tmp_path / "rec.bin"
    np.arange(6, dtype="<u2").tofile(path)
    for offset in (1.5, True, -2):
        with pytest.raises(ValueError, match="offset must be a number of bytes"):
            bindf.read_records(path, "<u2", offset=offset)
    for layout in ({"count": lambda h: 2.5}, {"offset": lambda h: 0.5}):
        with pytest.raises(bindf.HeaderError, match="is not a whole number"):
            bindf.read_records(path, "<u2", **layout)
    # whole floats, as a JSON header may hold them, are whole numbers
    assert bindf.read_records(path, "<u2", count=lambda h: 2.0, offset=lambda h: 2.0)[
        "value"].tolist() == [1, 2]


def test_count_beyond_file_warns_once_per_read(tmp_path: Path) -> None:
    """The warning comes with the records, once: not when a scan is planned (the file
    is opened to plan and again to read), and not when only the header is read."""
    import warnings

    path = tmp_path / "short.bin"
    np.arange(4, dtype="<i8").tofile(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lazy = bindf.scan_records(path, "<i8", count=10)
        with bindf.open(path, format="records", dtype="<i8", count=10) as f:
            assert f.num_rows == 4
        assert caught == []
        frame = lazy.collect()
    assert frame["value"].to_list() == [0, 1, 2, 3]
    messages = [str(w.message) for w in caught]
    assert messages == [f"{path}: truncated fixed-record file: the header declares 10 records but "
                        "the file holds 4; returning the complete records before it "
                        "(at byte offset 32)"]
    with pytest.warns(bindf.TruncatedFileWarning, match="declares 10 records") as twice:
        bindf.read_records(path, "<i8", count=10, memmap=True)
    assert len(twice) == 1


def test_partial_last_record_warns(tmp_path: Path) -> None:
    path = tmp_path / "cut.bin"
    path.write_bytes(np.arange(4, dtype="<i8").tobytes() + b"\x01\x02")
    with pytest.warns(bindf.TruncatedFileWarning):
        assert len(bindf.read_records(path, "<i8")) == 4


def test_bad_layouts_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x01\x00")
    with pytest.raises(bindf.HeaderError, match="header"):
        bindf.read_records(path, "<f8", header=[("rows", "<i4")])
    with pytest.raises(bindf.HeaderError):
        bindf.read_records(path, "<f8", offset=100)
    with pytest.raises(TypeError):
        bindf.read_records(path, "<f8", bogus=1)
    assert isinstance(bindf.read_records(path, "<u2"), pd.DataFrame)


# -- field types: text, raw bytes, bool, times; the writer of a FixedRecordFormat ----------

#: One field of every kind the reader maps to Arrow (and the writer writes back), a
#: big-endian one among them.
MIXED_DTYPE = np.dtype([("t", "<u8"), ("s", "S4"), ("u", "U3"), ("v", "V3"), ("b", "?"),
                        ("when", ">M8[ns]"), ("span", "<m8[s]")])


@pytest.fixture
def registered() -> Iterator[Callable[..., bindf.FixedRecordFormat]]:
    """``register(name, **spec)``: a FixedRecordFormat registered for this test only."""
    names = []

    def register(name: str, **spec: Any) -> bindf.FixedRecordFormat:
        names.append(name)
        made = bindf.FixedRecordFormat(name, **spec)
        # Not public: bindf.read(format=name) finds it, but no read_<name>/write_<name>
        # functions are made, which would outlive the test (test_plugins checks them).
        object.__setattr__(made, "public", False)
        return bindf.register_format(made, replace=True)

    yield register
    for name in names:  # later registry-driven tests (stub, sweeps) must not see them
        bindf.registry._BY_NAME.pop(name, None)


def _mixed_records() -> np.ndarray:
    records = np.zeros(4, MIXED_DTYPE)
    records["t"] = [1, 2, 3, 2**64 - 1]
    records["s"] = [b"ab", b"a\x00b", "\u00e9t".encode(), b"wxyz"]
    records["u"] = ["\u00e9\u20ac", "\U0001f600", "", "a\x00b"]
    records["v"] = [b"abc", b"\x00\x01\x02", b"\xff\x00\x00", b"\x00\x00\x00"]
    records["b"] = [True, False, True, False]
    records["when"] = np.array(["2020-01-01T00:00:00.000000001", "NaT", "1969-12-31", "2262-04-11"],
                               "M8[ns]")
    records["span"] = np.array([1, -5, "NaT", 86_400], "m8[s]")
    return records


def test_writer_round_trips_every_field_kind_bit_exact(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat]) -> None:
    spec = registered("mixrt", magic=b"MX01", dtype=MIXED_DTYPE)
    write = spec.writer_function()
    records = _mixed_records()
    source = tmp_path / "numpy.mx"
    source.write_bytes(b"MX01" + records.tobytes())
    for output in ("pandas", "polars", "arrow"):
        frame = bindf.read(source, format="mixrt", output=output)
        copy = tmp_path / f"{output}.mx"
        write(copy, frame)
        assert copy.read_bytes() == source.read_bytes(), output
    table = bindf.read(source, format="mixrt", output="arrow")
    assert table.schema.types == [pa.uint64(), pa.string(), pa.string(), pa.binary(3),
                                  pa.bool_(), pa.timestamp("ns"), pa.duration("s")]
    assert table.column("s").to_pylist() == ["ab", "a\x00b", "\u00e9t", "wxyz"]
    assert table.column("u").to_pylist() == ["\u00e9\u20ac", "\U0001f600", "", "a\x00b"]
    assert table.column("v").to_pylist() == [b"abc", b"\x00\x01\x02", b"\xff\x00\x00",
                                             b"\x00\x00\x00"]
    # NaT is null, both ways
    assert table.column("when").null_count == 1 and table.column("span").null_count == 1
    assert table.column("when").cast(pa.int64()).to_pylist() == [
        int(x) if x != np.iinfo(np.int64).min else None for x in records["when"].view(">i8")]
    assert table.column("span").to_pylist()[:2] == [pd.Timedelta(1, "s"), pd.Timedelta(-5, "s")]


def test_writer_takes_python_values_and_pads_with_nuls(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat]) -> None:
    spec = registered("mixpy", magic=b"MX02", dtype=MIXED_DTYPE)
    frame = pd.DataFrame({
        "t": np.array([7, 8], "u8"), "s": ["ab", b"\xff\xfe"], "u": ["x", "\u20ac\u20ac\u20ac"],
        "v": [b"abc", b"def"], "b": [1, 0],
        "when": pd.to_datetime(["2021-05-06 07:08:09", None]),  # microseconds in pandas
        "span": pd.to_timedelta([3, 4], unit="s"),
    })
    path = tmp_path / "py.mx"
    spec.writer_function()(path, frame)
    expected = np.zeros(2, MIXED_DTYPE)
    expected["t"] = [7, 8]
    expected["s"] = [b"ab", b"\xff\xfe"]
    expected["u"] = ["x", "\u20ac\u20ac\u20ac"]
    expected["v"] = [b"abc", b"def"]
    expected["b"] = [True, False]
    expected["when"] = np.array(["2021-05-06T07:08:09", "NaT"], "M8[ns]")
    expected["span"] = np.array([3, 4], "m8[s]")
    assert path.read_bytes() == b"MX02" + expected.tobytes()


@pytest.mark.parametrize(("column", "values", "message"), [
    ("s", ["abcd", "abcde"], "column 's': the value in row 1 is 5 bytes long in UTF-8; a |S4 "
                             "field holds at most 4 (values are never cut)"),
    ("s", ["\u00e9\u00e9\u00e9", "ok"], "column 's': the value in row 0 is 6 bytes long in "
                                        "UTF-8; a |S4 field holds at most 4"),
    ("s", [b"abcde", b""], "column 's': the value in row 0 is 5 bytes long; a |S4 field"),
    ("s", [1, 2], "column 's' (int64) cannot be stored as |S4: it needs strings or bytes"),
    ("s", ["ok", "\ud800"], "column 's', row 1, holds a string that is not encodable as UTF-8"),
    ("u", ["abc", "abcd"], "column 'u': the value in row 1 is 4 characters long; a <U3 field "
                           "holds at most 3"),
    ("u", [b"ab", b"\xff"], "column 'u' (binary) cannot be stored as <U3: its bytes are not "
                            "UTF-8 text"),
    ("v", [b"abc", b"ab"], "column 'v': the value in row 1 is 2 bytes long; a |V3 field holds "
                           "exactly 3"),
    ("v", ["abc", "def"], "column 'v' (string) cannot be stored as |V3: it needs bytes"),
    ("b", [0, 2], "column 'b': row 1 holds 2, which a bool field cannot store (0 or 1)"),
    ("b", [None, True], "column 'b' has 1 null value(s), the first in row 0; files cannot "
                        "store them"),
    ("t", [7, -1], "column 't' (int64) cannot be stored as uint64: row 1 holds -1 ("),
    ("when", pd.to_datetime(["2020-01-01", "2020-01-02"]).tz_localize("UTC"),
     "column 'when' (timestamp[{unit}, tz=UTC]) cannot be stored as >M8[ns]: it needs "
     "naive timestamps"),
    ("span", pd.to_timedelta([2, 1.5], unit="s"), "column 'span' (duration[ns]) cannot be "
                                                  "stored as timedelta64[s]: row 1 holds "),
    ("span", [1, 2], "column 'span' (int64) cannot be stored as timedelta64[s]: it needs "
                     "durations"),
])
def test_writer_refuses_what_a_field_cannot_hold(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat],
        column: str, values: Any, message: str) -> None:
    spec = registered("mixbad", magic=b"MX03", dtype=MIXED_DTYPE)
    frame = bindf.read(_write_mixed(tmp_path), format="mixbad").iloc[:2].reset_index(drop=True)
    frame[column] = pd.Series(values, dtype=object if column in "suvb" else None)
    path = tmp_path / "bad.mx"
    with pytest.raises(ValueError) as caught:
        spec.writer_function()(path, frame)
    # pandas gives zoned timestamps in ns (2.1) or in the unit they were made in (us)
    unit = frame[column].dt.unit if column == "when" else ""
    assert str(caught.value).startswith(message.replace("{unit}", unit)), str(caught.value)
    assert not path.exists()


def _write_mixed(tmp_path: Path, magic: bytes = b"MX03") -> Path:
    path = tmp_path / "mixed.mx"
    path.write_bytes(magic + _mixed_records().tobytes())
    return path


def test_writer_error_names_the_row_of_the_whole_frame(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import bindf._writing as writing

    monkeypatch.setattr(writing, "WRITE_CHUNK_ROWS", 3)  # the frame is written in parts
    spec = registered("rowerr", dtype=[("s", "S2")], extensions=(".rowerr",))
    values = ["ab"] * 7 + ["abc"]
    with pytest.raises(ValueError, match=r"^column 's': the value in row 7 is 3 bytes long"):
        spec.writer_function()(tmp_path / "x.rowerr", {"s": values})


def test_structured_header_values_are_checked_not_cut(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat]) -> None:
    spec = registered("hdrchk", magic=b"HC01", header=[("name", "S8"), ("n", ">u4"),
                                                        ("gain", "<f4")],
                      dtype=[("t", "<u8")])
    write = spec.writer_function()
    frame = {"t": np.array([5], "u8")}
    path = tmp_path / "h.hc"
    for header, message in [
        ({"name": "x" * 20, "n": 1, "gain": 1.0},
         "header field 'name' (|S8): 'xxxxxxxxxxxxxxxxxxxx' is 20 bytes; the field holds at "
         "most 8 (values are never cut)"),
        ({"name": "\u00e9" * 5, "n": 1, "gain": 1.0}, "header field 'name' (|S8): "
                                                      "'\u00e9\u00e9\u00e9\u00e9\u00e9' is 10 bytes"),
        ({"name": "ok", "n": -1, "gain": 1.0}, "header field 'n' (>u4): -1 is outside 0..4294967295"),
        ({"name": "ok", "n": 2**32, "gain": 1.0},
         "header field 'n' (>u4): 4294967296 is outside 0..4294967295"),
        ({"name": "ok", "n": 1.5, "gain": 1.0}, "header field 'n' (>u4) needs an integer, not 1.5"),
        ({"name": "ok", "n": "3", "gain": 1.0}, "header field 'n' (>u4) needs an integer, not '3'"),
        ({"name": 5, "n": 3, "gain": 1.0}, "header field 'name' (|S8) needs a string or bytes, not int"),
        ({"name": "ok", "n": 3, "gain": 1e300}, "header field 'gain' (<f4): 1e+300 is too large"),
        ({"name": "ok", "n": 3}, "header is missing field 'gain'"),
    ]:
        with pytest.raises(ValueError) as caught:
            write(path, frame, header)
        assert str(caught.value).startswith(message), str(caught.value)
        assert not path.exists()
    write(path, frame, {"name": "\u00e9t\u00e9 42", "n": 2**32 - 1, "gain": 0.5})  # 8 bytes: fits
    assert path.read_bytes() == (b"HC01" + "\u00e9t\u00e9 42".encode() + (2**32 - 1).to_bytes(4, "big")
                                 + np.float32(0.5).tobytes() + (5).to_bytes(8, "little"))
    assert bindf.read(path, format="hdrchk").attrs["bindf"]["header"] == {
        "name": "\u00e9t\u00e9 42", "n": 2**32 - 1, "gain": 0.5}


# -- record dtypes: refused before any data is read, or read as numpy reads them ------------

@pytest.mark.parametrize(("dtype", "message"), [
    (np.dtype({"names": ["a", "b"], "formats": ["<u4", "<u4"], "offsets": [0, 2], "itemsize": 6}),
     "record fields 'a' and 'b' overlap (bytes 2..3 belong to both): each field must be bytes "
     "of its own"),
    ([("t", "<u4"), ("z", "<c8")],
     "record field 'z' (complex64) is not supported: Arrow has no complex type; declare the "
     "real and imaginary parts as two '<f4' fields"),
    ([("z", ">c16")], "record field 'z' (>c16) is not supported: Arrow has no complex type; "
                      "declare the real and imaginary parts as two '>f8' fields"),
    ([("o", "O")], "record field 'o' (object) is not supported: a file holds bytes, not Python "
                   "objects"),
    ([("d", "<M8[D]")], "record field 'd' (datetime64[D]) is not supported: Arrow times have "
                        "the units s, ms, us, ns only; declare the field as '<i8' (or '>i8') "
                        "to read the raw counts"),
    ([("d", "<m8[2s]")], "record field 'd' (timedelta64[2s]) is not supported: Arrow times "
                         "have the units s, ms, us, ns only; declare the field as '<i8' (or "
                         "'>i8') to read the raw counts"),
    ([("n", [("a", "<u2")])], "record field 'n' ([('a', '<u2')]) is not supported: a nested "
                              "structure; flatten the dtype first"),
    ([("s", "S0"), ("t", "<u4")], "record field 's' (|S0) is not supported: it has zero size"),
    ([("t", "<u4"), ("b", "<u2", (0,))],  # (flattened to no column; as a list, numpy's error)
     "record field 'b' (('<u2', (0,))) is not supported: it has zero size"),
    ("<c8", "record field 'value' (complex64) is not supported: Arrow has no complex type; "
            "declare the real and imaginary parts as two '<f4' fields"),
])
def test_unsupported_dtypes_are_refused_before_reading(
        tmp_path: Path, dtype: Any, message: str) -> None:
    empty = tmp_path / "empty.bin"  # no record to read: the refusal cannot come from data
    empty.write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        bindf.read_records(empty, dtype)
    assert str(caught.value) == message
    assert not isinstance(caught.value, bindf.BindfError)  # a bad description, not a bad file
    with pytest.raises(ValueError) as caught:
        bindf.FixedRecordFormat("refused", dtype=dtype)
    assert str(caught.value) == message


def test_unsupported_dtype_from_a_header_callable_is_a_header_error(tmp_path: Path) -> None:
    path = tmp_path / "h.bin"
    path.write_bytes(np.array([(3,)], "<i4").tobytes() + bytes(24))
    with pytest.raises(bindf.HeaderError) as caught:
        bindf.read_records(path, header=[("n", "<i4")],
                           dtype=lambda h: [("z", "<c8", (h["n"],))])
    assert caught.value.reason == ("record field 'z' (('<c8', (3,))) is not supported: Arrow "
                                   "has no complex type; declare the real and imaginary parts "
                                   "as two '<f4' fields")
    assert caught.value.path == str(path)


def test_header_text_that_is_not_valid_text_is_a_header_error(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat]) -> None:
    """Bytes that are not UTF-8 in an ``S`` header field were read with characters
    replaced (and the frame then did not write back); a lone surrogate in a ``U`` field
    passed, and broke Arrow metadata, Parquet and read_headers with Unicode errors."""
    not_utf8 = tmp_path / "s.bin"
    not_utf8.write_bytes(b"HS01" + b"\xff\xfeab" + bytes(8))
    surrogate = tmp_path / "u.bin"
    surrogate.write_bytes(b"HS01" + np.array([0xD800, 65], "<u4").tobytes() + bytes(8))
    for path, field, shown, why, size in (
            (not_utf8, "S4", "|S4", "invalid start byte", 4),
            (surrogate, "U2", "<U2", "surrogates not allowed", 8)):
        name = f"text_{field.lower()}"
        registered(name, magic=b"HS01", header=[("tag", field)], dtype="<u4")
        for read in (lambda p, name=name: bindf.read(p, format=name, output="arrow"),
                     lambda p, name=name: bindf.read_headers([p], format=name)):
            with pytest.raises(bindf.HeaderError) as caught:
                read(path)
            assert caught.value.reason == (
                f"header field 'tag' ({shown}) is not valid text ({why}); to read such "
                f"files, declare its bytes as raw ('V{size}', shown as hex)")
            assert (caught.value.path, caught.value.offset) == (str(path), 4)
    registered("text_raw", magic=b"HS01", header=[("tag", "V4")], dtype="<u4")
    assert bindf.read(not_utf8, format="text_raw").bindf.header == {"tag": "fffe6162"}


def test_a_float128_header_field_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match=r"header field 'q' \(float128\) is not supported: "
                                         r"a 128-bit float is no JSON number"):
        bindf.FixedRecordFormat("wide", magic=b"HF01", header=[("q", "<f16")], dtype="<u1")


@pytest.mark.parametrize(("layout", "header", "cause"), [
    (lambda h: [("x", f"<u{64 // h['bits']}")], 0, "ZeroDivisionError"),
    (lambda h: h["names"].split(","), 5, "AttributeError"),
])
def test_any_error_of_a_layout_callable_from_header_values_is_a_header_error(
        tmp_path: Path, layout: Any, header: int, cause: str) -> None:
    path = tmp_path / "h.bin"
    path.write_bytes(np.array([header], "<i4").tobytes() + bytes(8))
    key = "bits" if cause == "ZeroDivisionError" else "names"
    with pytest.raises(bindf.HeaderError, match=f"do not give a valid layout: {cause}"):
        bindf.read_records(path, header=[(key, "<i4")], dtype=layout)


def test_spec_options_and_writer_are_checked_when_declared() -> None:
    with pytest.raises(TypeError, match="options holds the parameters that "
                                        r"bindf._params.option\(.*\) makes, not 'gain'"):
        bindf.FixedRecordFormat("opt", dtype="<u4", options=["gain"])
    with pytest.raises(TypeError, match="writer must be a function"):
        bindf.FixedRecordFormat("wr", dtype="<u4", writer=3)
    with pytest.raises(TypeError, match="writer must be a function"):
        bindf.FormatSpec("wr", "d", "bindf.formats.spectro:SpectroReader", writer=3)


OUT_OF_ORDER = np.dtype({"names": ["a", "b", "c"], "formats": ["<u4", ">i2", "S3"],
                         "offsets": [6, 0, 2], "itemsize": 12})  # bytes 5 and 10..11: padding


def test_fields_out_of_offset_order_read_as_numpy_reads_them(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat]) -> None:
    records = np.zeros(1000, OUT_OF_ORDER)
    records["a"] = np.arange(1000) * 4_000_003
    records["b"] = np.arange(1000) - 500
    records["c"] = [f"{i % 97:03d}".encode()[: 1 + i % 3] for i in range(1000)]
    path = tmp_path / "ooo.bin"
    path.write_bytes(records.tobytes() + b"\x01\x02")  # plus a partial record
    expected = {"a": records["a"].tolist(), "b": records["b"].tolist(),
                "c": [c.decode() for c in records["c"]]}
    for options in ({}, {"memmap": True}, {"batch_size": 7}):
        with pytest.warns(bindf.TruncatedFileWarning):
            frame = bindf.read_records(path, OUT_OF_ORDER, output="polars", **options)
        assert frame.columns == ["a", "b", "c"]  # the dtype's order, not the offsets'
        assert frame.to_dict(as_series=False) == expected, options
    with pytest.warns(bindf.TruncatedFileWarning):
        assert bindf.read_records(path, OUT_OF_ORDER, columns=["b"])["b"].tolist() == expected["b"]
    spec = registered("ooo", dtype=OUT_OF_ORDER, extensions=(".ooo",))
    copy = tmp_path / "copy.ooo"
    spec.writer_function()(copy, expected)
    assert copy.read_bytes() == records.tobytes()  # padding bytes too: zeros


def test_datetime_and_timedelta_fields_become_arrow_times(tmp_path: Path) -> None:
    dtype = np.dtype([("when", ">M8[us]"), ("span", "<m8[ns]"), ("day", "<M8[s]", (2,))])
    records = np.zeros(3, dtype)
    records["when"] = np.array(["2024-02-29T12:00:00.000001", "NaT", "1900-01-01"], "M8[us]")
    records["span"] = np.array([-1, "NaT", 2**62], "m8[ns]")
    records["day"] = np.array([["2000-01-01", "NaT"]] * 3, "M8[s]")
    path = tmp_path / "t.bin"
    path.write_bytes(records.tobytes())
    table = bindf.read_records(path, dtype, output="arrow")
    assert table.schema.types == [pa.timestamp("us"), pa.duration("ns"), pa.timestamp("s"),
                                  pa.timestamp("s")]
    assert all(field.nullable for field in table.schema)  # NaT is null
    assert table.column("when").cast(pa.int64()).to_pylist() == [
        records["when"][0].astype("<i8"), None, records["when"][2].astype("<i8")]
    assert table.column("span").cast(pa.int64()).to_pylist() == [-1, None, 2**62]
    assert table.column("day_1").null_count == 3
    frame = bindf.read_records(path, dtype)
    assert frame["when"].dtype == "datetime64[us]" and frame["span"].dtype == "timedelta64[ns]"
    np.testing.assert_array_equal(frame["when"].to_numpy(), records["when"].astype("M8[us]"))
    as_list = bindf.read_records(path, dtype, subarrays="list", output="arrow")
    assert as_list.schema.field("day").type == pa.list_(
        pa.field("item", pa.timestamp("s"), nullable=True), 2)


def test_bool_and_float16_fields(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    path.write_bytes(b"\x00" + np.float16(1.5).tobytes() + b"\x01" + np.float16(-2).tobytes())
    frame = bindf.read_records(path, [("flag", "?"), ("x", "<f2")], output="polars")
    assert frame.to_dict(as_series=False) == {"flag": [False, True], "x": [1.5, -2.0]}
    # polars before Float16 (1.4) gives half floats as Float32
    assert frame.schema == {"flag": pl.Boolean, "x": getattr(pl, "Float16", pl.Float32)}


# -- text fields: numpy's values; what is not text is damage, handled by on_error -----------

def test_byte_strings_keep_inner_nuls_like_numpy(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    path.write_bytes(b"a\x00b\x00" + b"\x00xyz" + b"abcd" + b"\x00\x00\x00\x00")
    values = np.frombuffer(path.read_bytes(), "S4")
    assert bindf.read_records(path, dtype=[("s", "S4")])["s"].tolist() == \
        [v.decode() for v in values] == ["a\x00b", "\x00xyz", "abcd", ""]
    as_list = bindf.read_records(path, dtype=("S2", (2,)), subarrays="list", output="polars")
    assert as_list["value"].to_list() == [["a", "b"], ["\x00x", "yz"], ["ab", "cd"], ["", ""]]


def test_unicode_fields_keep_inner_nuls_like_numpy(tmp_path: Path) -> None:
    values = np.array(["a\x00b", "\x00xy", "\u00e9\u20ac\U0001f600", "", "z"], ">U3")
    path = tmp_path / "u.bin"
    path.write_bytes(values.tobytes())
    assert bindf.read_records(path, dtype=">U3")["value"].tolist() == values.tolist()


def _names_file(path: Path) -> np.ndarray:
    dtype = np.dtype([("name", "S4"), ("time", "<i8")])
    records = np.zeros(100, dtype)
    records["name"] = b"ok"
    records["time"] = np.arange(100)
    records["name"][70] = b"\xff\xfe"
    records["name"][93] = b"ab\xc3"  # a character cut short
    path.write_bytes(b"HEAD" + records.tobytes())
    return records


@pytest.mark.parametrize("options", [{}, {"batch_size": 16}, {"memmap": True},
                                     {"output": "polars"}])
def test_non_utf8_byte_string_raises_with_path_and_record_offset(
        tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "names.bin"
    records = _names_file(path)
    with pytest.raises(bindf.CorruptDataError) as caught:
        bindf.read_records(path, records.dtype, offset=4, **options)
    assert caught.value.path == str(path)
    assert caught.value.offset == 4 + 70 * 12
    assert caught.value.reason == ("record field 'name' (|S4) holds bytes that are not UTF-8 "
                                   "text; declare the field as 'V4' to read its raw bytes")
    with pytest.raises(bindf.CorruptDataError) as caught:  # the second damaged record
        bindf.read_records(path, records.dtype, offset=4 + 71 * 12, **options)
    assert caught.value.offset == 4 + 93 * 12
    # damage in a field that is not read does not matter
    assert bindf.read_records(path, records.dtype, offset=4, columns=["time"],
                              output="arrow").column("time").to_pylist() == list(range(100))


def test_non_utf8_byte_string_is_null_under_warn_and_skip(tmp_path: Path) -> None:
    path = tmp_path / "names.bin"
    records = _names_file(path)
    with pytest.warns(bindf.CorruptDataWarning) as caught:
        table = bindf.read_records(path, records.dtype, offset=4, on_error="warn",
                                   batch_size=80, output="arrow")
    assert [(w.message.offset, w.message.reason) for w in caught] == [
        (4 + 70 * 12, "record field 'name' (|S4) holds bytes that are not UTF-8 text in 1 "
                      "value(s) of this batch, the first in the record here; those values are "
                      "null (declare the field as 'V4' to read its raw bytes)"),
        (4 + 93 * 12, "record field 'name' (|S4) holds bytes that are not UTF-8 text in 1 "
                      "value(s) of this batch, the first in the record here; those values are "
                      "null (declare the field as 'V4' to read its raw bytes)")]
    expected = ["ok"] * 100
    expected[70] = expected[93] = None
    assert table.column("name").to_pylist() == expected
    assert table.column("time").to_pylist() == list(range(100))  # every record kept
    assert table.schema.field("name").nullable
    assert json_info(table)["errors"] == {"invalid_text": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = bindf.read_records(path, records.dtype, offset=4, on_error="skip")
    assert frame["name"].isna().tolist() == [v is None for v in expected]
    assert frame.attrs["bindf"]["errors"] == {"invalid_text": 2}
    # with on_error="raise" (no null possible) the text column is not nullable
    clean = tmp_path / "clean.bin"
    clean.write_bytes(np.zeros(2, records.dtype).tobytes())
    assert not bindf.read_records(clean, records.dtype, output="arrow").schema.field("name").nullable


def json_info(table: pa.Table) -> dict[str, Any]:
    import json

    return {key.decode().removeprefix("bindf."): json.loads(value)
            for key, value in table.schema.metadata.items() if key.decode() == "bindf.errors"}


def test_non_utf8_text_in_a_followed_stream_names_its_offset(tmp_path: Path) -> None:
    from bindf._source import Source
    from bindf.registry import open_reader

    path = tmp_path / "names.bin"
    records = _names_file(path)
    reader = open_reader(Source(str(path)), "records", dtype=records.dtype, offset=4)
    stream = reader.batch_stream()
    data = path.read_bytes()[4:]
    batches = stream.feed(data[:50 * 12 + 5])  # records 0..49 and a part of record 50
    assert sum(b.num_rows for b in batches) == 50
    with pytest.raises(bindf.CorruptDataError) as caught:
        stream.feed(data[50 * 12 + 5:])
    assert caught.value.offset == 4 + 70 * 12


def test_invalid_code_point_in_unicode_field(tmp_path: Path) -> None:
    points = np.array([[0x61, 0, 0], [0xD800, 0x62, 0], [0x110000, 0, 0], [0x10FFFF, 0, 0]],
                      "<u4")
    path = tmp_path / "u.bin"
    path.write_bytes(points.tobytes())
    with pytest.raises(bindf.CorruptDataError) as caught:
        bindf.read_records(path, [("u", "<U3")])
    assert (caught.value.offset, caught.value.reason) == (
        12, "record field 'u' (<U3) holds code points that are not Unicode characters; "
            "declare the field as 'V12' to read its raw bytes")
    frame = bindf.read_records(path, [("u", "<U3")], on_error="skip", output="arrow")
    assert frame.column("u").to_pylist() == ["a", None, None, "\U0010ffff"]


def test_utf8_check_agrees_with_python() -> None:
    """The numpy UTF-8 automaton that finds the damaged values against Python's decoder,
    on values built from valid characters, classic invalid sequences and random bytes."""
    from bindf.formats._record_fields import text_to_arrow

    rng = np.random.default_rng(7)
    pieces = [c.encode() for c in ("a", "\x00", "\u00e9", "\u20ac", "\ud7ff", "\ue000",
                                   "\U0001f600", "\U0010ffff")]
    pieces += [b"\xed\xa0\x80", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xf0\x8f\xbf\xbf",
               b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"\xe2\x82"]
    values = []
    for _ in range(5000):
        if rng.random() < 0.3:
            value = rng.integers(0, 256, rng.integers(0, 9), dtype=np.uint8).tobytes()
        else:
            value = b"".join(pieces[i] for i in rng.integers(0, len(pieces), rng.integers(0, 4)))
        values.append(value[:8])
    array = np.array(values, "S8")

    def decoded(value: bytes) -> str | None:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    expected = [decoded(v) for v in array.tolist()]
    assert 0.2 < expected.count(None) / len(expected) < 0.8
    strings, damaged = text_to_arrow(array, array.dtype)
    assert strings.to_pylist() == expected
    assert damaged.tolist() == [v is None for v in expected]


def test_writer_refuses_a_number_too_large_for_a_float_field(
        tmp_path: Path, registered: Callable[..., bindf.FixedRecordFormat]) -> None:
    spec = registered("floats", dtype=[("x", "<f2"), ("y", "<f4")], extensions=(".floats",))
    write = spec.writer_function()
    with pytest.raises(ValueError, match=r"^column 'x': 1000000\.0 in row 1 is too large for halffloat$"):
        write(tmp_path / "a.floats", {"x": [1.0, 1e6], "y": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"^column 'y': 1e\+39 in row 0 is too large for float$"):
        write(tmp_path / "a.floats", {"x": [1.0, 2.0], "y": [1e39, 2.0]})
    path = tmp_path / "ok.floats"  # what is infinite or NaN already is a value like any other
    write(path, {"x": [np.inf, 0.1], "y": [np.nan, 2.0**40]})
    expected = np.array([(np.inf, np.nan), (0.1, 2.0**40)], [("x", "<f2"), ("y", "<f4")])
    assert path.read_bytes() == expected.tobytes()


def test_nullable_bool_of_a_transform_is_boolean_whatever_the_data(tmp_path: Path, registered) -> None:
    """A nullable bool column (a declared format's ``transform`` may add one) is pandas'
    ``boolean`` in every chunk, with or without a null in it (it was numpy ``bool`` in a
    chunk without nulls and ``object`` in one with)."""
    def flags(table: pa.Table, header: dict) -> pa.Table:
        values = table.column("v").to_numpy()
        return table.append_column(
            pa.field("flag", pa.bool_()), pa.array(values > 1, mask=values == 0))

    registered("nbool", dtype=[("v", "<i4")], magic=b"NBOL", transform=flags)
    path = tmp_path / "f.nbool"
    path.write_bytes(b"NBOL" + np.array([1, 2, 0, 3], "<i4").tobytes())
    chunks = list(bindf.read(path, format="nbool", chunksize=2))
    assert [str(c["flag"].dtype) for c in chunks] == ["boolean", "boolean"]
    assert chunks[1]["flag"].tolist() == [pd.NA, True]
    assert str(bindf.read(path, format="nbool", n_rows=2)["flag"].dtype) == "boolean"
    # declared non-nullable, as the README says: numpy bool, in every chunk

    def required_flags(table: pa.Table, header: dict) -> pa.Table:
        values = table.column("v").to_numpy()
        return table.append_column(pa.field("flag", pa.bool_(), nullable=False),
                                   pa.array(values > 1))

    registered("rbool", dtype=[("v", "<i4")], magic=b"RBOL", transform=required_flags)
    other = tmp_path / "f.rbool"
    other.write_bytes(b"RBOL" + np.array([1, 2, 0, 3], "<i4").tobytes())
    chunks = list(bindf.read(other, format="rbool", chunksize=2))
    assert [c["flag"].dtype for c in chunks] == [np.dtype(bool)] * 2
    assert [c["flag"].tolist() for c in chunks] == [[False, True], [False, True]]


def test_declared_format_with_a_count_and_an_offset(tmp_path: Path, registered) -> None:
    """A declared format whose header gives the record count and whose records start at
    a fixed offset: a trailer (a checksum) is not read as a record, a file with fewer
    records than declared warns; the writer pads to the offset and checks the count."""
    registered("counted", magic=b"CNT1", header="json", dtype=[("t", "<u8"), ("v", "<f4")],
               offset=64, count=lambda h: h["n_records"], example_header={"n_records": 3})
    records = np.zeros(3, dtype=[("t", "<u8"), ("v", "<f4")])
    records["t"], records["v"] = [1, 2, 3], [0.5, 1.5, 2.5]
    text = b'{"n_records": 3}'
    preamble = b"CNT1" + len(text).to_bytes(4, "little") + text
    path = tmp_path / "run.cnt"
    path.write_bytes(preamble + bytes(64 - len(preamble)) + records.tobytes()
                     + b"CRC32+END:" * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = bindf.read(path, format="counted")
    assert frame["t"].tolist() == [1, 2, 3] and frame["v"].tolist() == [0.5, 1.5, 2.5]
    cut = tmp_path / "cut.cnt"
    cut.write_bytes(path.read_bytes()[:64 + 12 * 2])
    with pytest.warns(bindf.TruncatedFileWarning, match="declares 3 records"):
        assert len(bindf.read(cut, format="counted")) == 2
    sample = bindf.get_format("counted").sample_bytes()
    assert sample.startswith(b"CNT1") and len(sample) == 64 + 3 * 12
    write = bindf.get_format("counted").writer
    out = tmp_path / "written.cnt"
    write(out, frame, {"n_records": 3})
    assert out.read_bytes()[64:] == records.tobytes()  # zeros up to the offset, then records
    pd.testing.assert_frame_equal(bindf.read(out, format="counted"), frame)
    with pytest.raises(ValueError, match="declares 5 records but the frame has 3 rows"):
        write(tmp_path / "bad.cnt", frame, {"n_records": 5})
    assert not (tmp_path / "bad.cnt").exists()


def test_batches_of_text_stay_within_an_arrow_string_column(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's text column holds at most 2 GiB: a 2 GiB file of 2048-byte names failed
    with the default batch size ("read with a smaller batch_size"); batches are now cut
    to fit, counted at the most bytes a record can put in a column (a U3 value up to 12
    bytes of UTF-8; a sub-array of text kept as a list, all its values). The limit is made
    100 such records here."""
    from bindf.formats import fixed_format

    dtype = np.dtype([("name", "S16"), ("tag", "<U3"), ("pair", "S4", (2,)), ("x", "<u2")])
    records = np.zeros(1000, dtype)
    records["name"] = [f"run {i}".encode() for i in range(1000)]
    records["tag"] = "é€x"
    records["pair"] = [(b"ab", b"cd")] * 1000
    records["x"] = np.arange(1000)
    path = tmp_path / "names.bin"
    path.write_bytes(records.tobytes())
    monkeypatch.setattr(fixed_format, "STRING_BYTES_MAX", 16 * 100 + 15)
    # (n_rows: the reader's batches as they come, not joined as a small file's are)
    batches = list(bindf.iter_batches(path, format="records", dtype=dtype, subarrays="list",
                                      n_rows=1000))
    assert [b.num_rows for b in batches] == [100] * 10
    table = pa.Table.from_batches(batches)
    assert table["name"].to_pylist() == [f"run {i}" for i in range(1000)]
    assert table["tag"].to_pylist() == ["é€x"] * 1000
    assert table["pair"].to_pylist() == [["ab", "cd"]] * 1000
    assert table["x"].to_pylist() == list(range(1000))
    # (what a batch may hold, per column: name 16, tag 12, pair 2 x 4 bytes)
    assert bindf.read_records(path, dtype, output="polars")["x"].to_list() == list(range(1000))
    monkeypatch.setattr(fixed_format, "STRING_BYTES_MAX", 12 * 100)
    only_tag = bindf.iter_batches(path, format="records", columns=["tag"], n_rows=1000,
                                  dtype=[("_", "V16"), ("tag", "<U3"), ("__", "V10")])
    assert [b.num_rows for b in only_tag] == [100] * 10
