"""Legacy AstroPix text logs: same hits as the .apx they were made from."""

from __future__ import annotations

import struct
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bindf
from bindf._source import Source
from bindf.formats import apx_log
from bindf.formats.apx_log import ApxLogReader, looks_like_apx_log

APX = "20250723_092534_data.apx"
APX3 = "vinj0_th1030_20250729-185248.apx"

METADATA = (
    "Voltagecard: {'thpmos': 0, 'cardConf2': 0, 'vcasc2': 1.1, 'BL': 1, 'vminuspix': 0.8}\n"
    "Digital: {'interrupt_pushpull': 0, 'clkmux': 0, 'tuple': (1, 2), 'aset': {3, 1}}\n"
    "Namespace(name='run1', outdir='.', yaml='testconfig', threshold=100.0, maxtime=None,"
    " inject=[1, 2], vinj=None)\n"
)


#: A header laid out as the AstroPix DAQ writes it (made-up values): six metadata lines,
#: then the Namespace line, which the DAQ starts with a blank.
DAQ_HEADER = (
    "Voltagecard: {'thpmos': 0, 'cardConf2': 0, 'vcasc2': 1.1, 'BL': 1, 'thpix': 1.04}\n"
    "Digital: {'interrupt_pushpull': 0, 'clkmux': 0, 'maxcyc': 63, 'resetckdiv': 15}\n"
    "Biasblock: {'DisHiDR': 0, 'q01': 0, 'qon0': 0, 'qon1': 1, 'qon2': 0, 'qon3': 1}\n"
    "iDAC: {'blres': 0, 'vpdac': 10, 'vn1': 20, 'vnfb': 1, 'vnfoll': 2}\n"
    "vDAC: {'blpix': 568, 'thpix': 610, 'vcasc2': 625, 'vtest': 682, 'vinj': 170}\n"
    "Receiver: {'col0': 206158430206, 'col1': 68719476735, 'col9': 137438953466}\n"
    " Namespace(name='scan', outdir='E:/data/scan/Col_9', yaml='config_v4', chipVer=4,"
    " inject=[1, 9], vinj=300.0, threshold=40.0, maxruns=None, maxtime=0.33, loglevel='I')\n"
)
#: What the DAQ also writes with the .log extension: its Python logging output.
RUN_LOG = (
    "2025-07-23 09:25:34,319:319.__main__.INFO:Configuring the chip...\n"
    "2025-07-23 09:25:36,358:358.astropix.INFO:Opened FPGA, testing...\n"
    "2025-07-23 09:26:36,652:652.__main__.INFO:Program terminated successfully!\n"
)


def _apx_readouts(path: Path) -> list[tuple[int, bytes]]:
    """(readout_id, payload) of every readout, parsed plainly (test reference)."""
    data = path.read_bytes()
    pos = 10 + struct.unpack_from("<I", data, 6)[0]
    out = []
    while pos < len(data):
        marker, rid, _ts, length = struct.unpack_from("<3sIQI", data, pos)
        assert marker == b"\xfe\xdc\xba"
        out.append((rid, data[pos + 19: pos + 19 + length]))
        pos += 19 + length
    return out


def _write_log(path: Path, readouts: list[tuple[int, bytes]], metadata: str = METADATA) -> Path:
    lines = [f"{rid}\t b'{payload.hex()}'\n" for rid, payload in readouts]
    path.write_text(metadata + "".join(lines))
    return path


def _daq_log_bytes(readouts: list[tuple[int, bytes]], header: str = DAQ_HEADER,
                   newline: str = "\n") -> bytes:
    """A log as the DAQ writes it: no blank after the tab; CRLF when written on Windows."""
    lines = "".join(f"{rid}\tb'{payload.hex()}'\n" for rid, payload in readouts)
    return (header + lines).replace("\n", newline).encode()


def _first_binary_byte(data: bytes) -> int:
    """Test reference: the first NUL or other non-blank control byte, or the first byte
    where UTF-8 decoding fails, whichever comes first."""
    control = next((i for i, b in enumerate(data) if b < 0x20 and b not in b"\t\n\v\f\r"),
                   len(data))
    try:
        data[:control].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return control


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _read_quietly(path: Path, **options) -> tuple[pa.Table, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = bindf.read_apx_log(path, output="arrow", **options)
    return table.replace_schema_metadata(None), caught


@pytest.fixture
def log_file(data_dir: Path, tmp_path: Path) -> Path:
    return _write_log(tmp_path / "run.log", _apx_readouts(data_dir / APX))


def test_same_hits_as_apx(log_file: Path, data_dir: Path) -> None:
    expected = bindf.read_apx(data_dir / APX, output="polars")
    got = bindf.read_apx_log(log_file, output="polars")
    assert got.height == 776
    assert got.schema == expected.schema
    assert got.drop("timestamp").equals(expected.drop("timestamp"))
    assert (got["timestamp"] == 0).all()


@pytest.mark.parametrize(("sample", "chip_version"), [(APX, 4), (APX3, 3)])
def test_astropix_helpers_work_on_logs(sample: str, chip_version: int, data_dir: Path,
                                       tmp_path: Path) -> None:
    """A log's frame has read_apx's columns and readout_uid: the same df.bindf helpers
    give the same hit map as the .apx it was made from (AstroPix 3: after pairing)."""
    metadata = f"Namespace(name='run1', chipVer={chip_version})\n"
    log = _write_log(tmp_path / "run.log", _apx_readouts(data_dir / sample), metadata)
    expected = bindf.read_apx(data_dir / sample, output="polars")
    got = bindf.read_apx_log(log, output="polars")
    if chip_version == 3:
        expected = expected.bindf.match_rows_columns()
        got = got.bindf.match_rows_columns()
    expected_map = expected.bindf.hit_map(per_chip=True)
    assert expected_map["hits"].sum() > 0
    assert got.bindf.hit_map(per_chip=True).equals(expected_map)


def test_metadata_parsed_without_eval(log_file: Path) -> None:
    header = bindf.read_header(log_file)
    assert header["Voltagecard"]["vcasc2"] == 1.1
    assert header["Digital"]["tuple"] == [1, 2] and header["Digital"]["aset"] == [1, 3]
    assert header["Namespace"] == {"name": "run1", "outdir": ".", "yaml": "testconfig",
                                   "threshold": 100.0, "maxtime": None, "inject": [1, 2],
                                   "vinj": None}
    assert header["readout_uid"] == 4000
    assert bindf.detect_format(bindf._source.Source(str(log_file))).name == "apx_log"


def test_malicious_metadata_is_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.log"
    path.write_text("Config: {'a': __import__('os').system('echo pwned')}\n0\t b'bcbc'\n")
    with pytest.raises(bindf.HeaderError, match="line 1"):
        bindf.read_apx_log(path)


@pytest.mark.parametrize("line", [
    "Digital: {'note': '\\ud800'}",
    "Digital: {'\\udfff': 1}",
    "Namespace(name='\\ud83d', chipVer=4)",
])
def test_a_lone_surrogate_in_metadata_is_a_header_error(tmp_path: Path, line: str) -> None:
    """A literal may spell a lone surrogate, which no header (Arrow metadata, Parquet)
    can hold: a HeaderError at its line, from every reader (read raised a bare
    UnicodeEncodeError, read_header returned it)."""
    path = tmp_path / "run.log"
    text = f"{line}\n" + ("" if line.startswith("Namespace") else
                          " Namespace(name='scan', chipVer=4)\n") + "0\tb'e0c0a0bb00ff'\n"
    path.write_text(text)
    for call in (bindf.read_header, bindf.read_apx_log, bindf.read_headers,
                 lambda p: bindf.scan(p).collect()):
        with pytest.raises(bindf.HeaderError, match="lone surrogate") as raised:
            call(path)
        assert (raised.value.path, raised.value.offset) == (str(path), 0)



@pytest.mark.parametrize("line", ["Digital: {'x': 0x" + "f" * 4000 + "}",
                                  "Namespace(name='scan', chipVer=4, x=-" + "9" * 5000 + ")"])
def test_an_integer_too_long_to_write_is_a_header_error(tmp_path: Path, line: str) -> None:
    """A literal integer past the ~4,300 digits Python will spell was kept in the
    header, and the steps that write the header as JSON (Arrow metadata, Parquet,
    read_headers, bindf info) failed with a bare ValueError; it is refused at its line,
    as a JSON header's is."""
    path = tmp_path / "run.log"
    text = f"{line}\n" + ("" if line.startswith("Namespace") else
                          " Namespace(name='scan', chipVer=4)\n") + "0\tb'e0c0a0bb00ff'\n"
    path.write_text(text)
    for call in (bindf.read_header, bindf.read_apx_log, bindf.read_headers,
                 lambda p: bindf.read_apx_log(p, output="arrow")):
        with pytest.raises(bindf.HeaderError, match="line 1 .*digits") as raised:
            call(path)
        assert (raised.value.path, raised.value.offset) == (str(path), 0)

def test_chunked_equals_whole(log_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bindf.formats import apx_log

    whole = bindf.read_apx_log(log_file, output="polars")
    monkeypatch.setattr(apx_log, "CHUNK_BYTES", 97)  # cuts inside lines, across hits
    assert bindf.read_apx_log(log_file, output="polars").equals(whole)


def test_readout_level(log_file: Path, data_dir: Path) -> None:
    got = bindf.read_apx_log(log_file, level="readouts", output="polars")
    expected = bindf.read_apx(data_dir / APX, level="readouts", output="polars")
    cols = ["readout_id", "payload_length", "n_hits", "status"]
    assert got.select(cols).equals(expected.select(cols))
    text = log_file.read_bytes()
    first = got["byte_offset"][0]
    assert text[first:].startswith(f"{got['readout_id'][0]}\t".encode())


def test_malformed_line_names_line_number(log_file: Path, tmp_path: Path) -> None:
    lines = log_file.read_text().splitlines(keepends=True)
    lines[10] = "this is not a readout\n"
    bad = tmp_path / "bad.log"
    bad.write_text("".join(lines))
    with pytest.raises(bindf.CorruptDataError, match="line 11") as info:
        bindf.read_apx_log(bad)
    assert info.value.offset == sum(len(x) for x in lines[:10])
    with pytest.warns(bindf.CorruptDataWarning, match="line 11"):
        df = bindf.read_apx_log(bad, on_error="warn")
    assert len(df) in (774, 775)
    assert df.attrs["bindf"]["errors"] == {"bad_log_line": 1}


def test_convert_to_apx(log_file: Path, tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "converted.apx"
    assert bindf.convert_apx_log(log_file, out) == len(_apx_readouts(data_dir / APX))
    converted = bindf.read_apx(out, output="polars")
    assert converted.equals(bindf.read_apx_log(log_file, output="polars"))
    assert bindf.read_header(out)["Namespace"]["name"] == "run1"


def test_scan_and_registration(log_file: Path) -> None:
    eager = pl.read_apx_log(log_file)
    lazy = pl.scan_apx_log(log_file).filter(pl.col("column") == 9).select("row", "tot_us")
    assert lazy.collect().equals(eager.filter(pl.col("column") == 9).select("row", "tot_us"))


def test_empty_log_and_header_only(tmp_path: Path) -> None:
    path = tmp_path / "h.log"
    path.write_text(METADATA)
    assert len(bindf.read_apx_log(path)) == 0
    path.write_text("")
    assert len(bindf.read_apx_log(path)) == 0
    blank = tmp_path / "blank.log"
    blank.write_text("\n  \n")
    assert len(bindf.read_apx_log(blank)) == 0
    # Nothing written yet decides nothing: a follower opens the file again as it grows.
    assert not ApxLogReader(Source(str(path))).settled
    path.write_text(METADATA)
    assert ApxLogReader(Source(str(path))).settled


# -- what makes a file a log ---------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_log_laid_out_as_the_daq_writes_it(newline: str, data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "scan.log"
    path.write_bytes(_daq_log_bytes(_apx_readouts(data_dir / APX), newline=newline))
    got = bindf.read_apx_log(path, output="polars")
    expected = bindf.read_apx(data_dir / APX, output="polars")
    assert got.drop("timestamp").equals(expected.drop("timestamp"))
    header = bindf.read_header(path)
    assert set(header) == {"Voltagecard", "Digital", "Biasblock", "iDAC", "vDAC", "Receiver",
                           "Namespace", "readout_uid"}  # no "comments": every line is known
    assert header["Namespace"]["inject"] == [1, 9] and header["readout_uid"] == 4000
    assert header["Receiver"]["col9"] == 137438953466


def _binary(kind: str, data_dir: Path, tmp_path: Path) -> bytes:
    if kind == "random":
        return np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    if kind == "zeros":
        return bytes(5000)
    if kind == "parquet":
        pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "t.parquet")
        return (tmp_path / "t.parquet").read_bytes()
    return (data_dir / {"apx": APX, "sp01": "sp01_decay_curves_example.bin"}[kind]).read_bytes()


#: Where each binary file stops being text: these random bytes start with 0xa8 (no UTF-8
#: character starts so), zeros at once, the .apx run in its header length (``%APXDF``
#: then ``4d 05 00 00``), SP01 likewise (``SP01`` ``53 01 00 00``), Parquet after ``PAR1``.
FIRST_BINARY_BYTE = {"random": 0, "zeros": 0, "apx": 7, "sp01": 5, "parquet": 4}


@pytest.mark.parametrize("kind", sorted(FIRST_BINARY_BYTE))
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_binary_file_is_not_a_log(kind: str, on_error: str, data_dir: Path,
                                  tmp_path: Path) -> None:
    data = _binary(kind, data_dir, tmp_path)
    path = tmp_path / "run.log"
    path.write_bytes(data)
    assert FIRST_BINARY_BYTE[kind] == _first_binary_byte(data)
    assert not looks_like_apx_log(data[:4096], Source(str(path)))
    if kind in ("apx", "sp01"):  # another format's magic: named before the log reader looks
        with pytest.raises(bindf.UnknownFormatError, match=f"of format '{kind}'") as info:
            bindf.read_apx_log(path, on_error=on_error)
        assert (info.value.path, info.value.offset) == (str(path), 0)
        # bindf.read: their magic decides before the extension
        assert bindf.read(path).attrs["bindf"]["format"] == kind
        return
    with pytest.raises(bindf.UnknownFormatError, match="not an AstroPix text log") as info:
        bindf.read_apx_log(path, on_error=on_error)
    assert (info.value.path, info.value.offset) == (str(path), FIRST_BINARY_BYTE[kind])
    # bindf.read: the extension chose the log reader, which refuses the file
    with pytest.raises(bindf.UnknownFormatError) as detected:
        bindf.read(path)
    assert (detected.value.path, detected.value.offset) == (str(path), info.value.offset)


def test_daq_run_log_is_not_a_log(tmp_path: Path) -> None:
    """The DAQ's Python logging output, also a ``.log``: text, but no log structure."""
    path = tmp_path / "AstropixRunlog_20250723-092534.log"
    path.write_text(RUN_LOG)
    with pytest.raises(bindf.UnknownFormatError, match="not an AstroPix text log") as info:
        bindf.read(path)
    assert (info.value.path, info.value.offset) == (str(path), 0)
    # Asked to skip damage, every line is a malformed readout line: dropped and counted.
    skipped = bindf.read_apx_log(path, on_error="skip")
    assert len(skipped) == 0 and skipped.attrs["bindf"]["errors"] == {"bad_log_line": 3}
    with pytest.warns(bindf.CorruptDataWarning) as caught:
        bindf.read_apx_log(path, on_error="warn")
    starts = [0, *np.cumsum([len(line) for line in RUN_LOG.splitlines(keepends=True)])[:-1]]
    assert [w.message.offset for w in caught] == starts
    assert not looks_like_apx_log(RUN_LOG.encode(), Source(str(path)))
    renamed = tmp_path / "runlog.txt"
    renamed.write_text(RUN_LOG)
    with pytest.raises(bindf.UnknownFormatError, match="unrecognised file format"):
        bindf.read(renamed)


@pytest.mark.parametrize("header", [METADATA, DAQ_HEADER], ids=["metadata", "daq"])
def test_cut_inside_the_header_at_every_offset(header: str, data_dir: Path,
                                               tmp_path: Path) -> None:
    """A HeaderError at the end of the file wherever the header is cut (under every
    on_error); no rows and no warning once the header is complete (its last newline
    aside); a truncation warning inside the first readout line."""
    readouts = _apx_readouts(data_dir / APX)[:3]
    data = _daq_log_bytes(readouts, header)
    full = ApxLogReader(Source(str(_write(tmp_path / "full.log", data)))).header
    path = tmp_path / "cut.log"
    end = len(header.encode())
    for cut in range(1, end - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(bindf.HeaderError, match="ends inside the log header") as info:
            bindf.read_apx_log(path, on_error="skip" if cut % 7 == 0 else "raise")
        assert (info.value.path, info.value.offset) == (str(path), cut), cut
    for cut in (0, end - 1, end):
        path.write_bytes(data[:cut])
        table, caught = _read_quietly(path)
        assert table.num_rows == 0 and caught == [], cut
        assert bindf.read_header(path) == (full if cut else {"readout_uid": 4000})
    first_line = data.index(b"\n", end) + 1 - end
    for cut in range(end + 1, end + first_line - 1):
        path.write_bytes(data[:cut])
        table, caught = _read_quietly(path, level="readouts")
        assert table.num_rows == 0, cut
        assert [(w.category, w.message.offset) for w in caught] == [
            (bindf.TruncatedFileWarning, end)], cut
    path.write_bytes(data[: end + first_line - 1])  # the first readout, without its newline
    table, caught = _read_quietly(path, level="readouts")
    assert table["readout_id"].to_pylist() == [readouts[0][0]] and caught == []


def test_last_line_without_newline(log_file: Path, tmp_path: Path) -> None:
    """A complete last line without its newline is read; a last line cut anywhere else
    (or a tail of NULs, as a crash can leave) is a truncation warning at its start."""
    data = log_file.read_bytes()
    full, _ = _read_quietly(log_file)
    unterminated = _write(tmp_path / "unterminated.log", data[:-1])
    table, caught = _read_quietly(unterminated)
    assert table.equals(full) and caught == []
    last = data.rindex(b"\n", 0, len(data) - 1) + 1
    without_last, _ = _read_quietly(_write(tmp_path / "shorter.log", data[:last]))
    for cut in (last + 1, last + 10, len(data) - 2):  # in the id, in the payload, at '
        table, caught = _read_quietly(_write(tmp_path / "cut.log", data[:cut]))
        assert table.equals(without_last), cut
        assert [(w.category, w.message.offset) for w in caught] == [
            (bindf.TruncatedFileWarning, last)], cut
    table, caught = _read_quietly(_write(tmp_path / "nul.log", data + bytes(64)))
    assert table.equals(full)
    assert [(w.category, w.message.offset) for w in caught] == [
        (bindf.TruncatedFileWarning, len(data))]


def test_comments_code_pages_and_stray_lines(tmp_path: Path) -> None:
    lines = "0\t b'bcbc'\n1\t b'bcbc'\n"
    path = tmp_path / "run.log"
    # Text before the Namespace line is kept; a byte order mark and CRLF (a Windows
    # editor) change nothing.
    path.write_bytes(("\ufeff# taken by hand\n" + METADATA + lines).replace("\n", "\r\n")
                     .encode())
    header = bindf.read_header(path)
    assert header["comments"] == ["# taken by hand"] and header["Voltagecard"]["BL"] == 1
    assert len(bindf.read_apx_log(path, level="readouts")) == 2
    # The DAQ on Windows wrote its options in the code page: read as such.
    path.write_bytes(b"Namespace(name='r', outdir='C:/Users/J\xf6rg')\n" + lines.encode())
    assert bindf.read_header(path)["Namespace"]["outdir"] == "C:/Users/Jörg"
    # ... but only a metadata line: other text must be UTF-8.
    path.write_bytes(b"Pr\xfcfung\n" + METADATA.encode() + lines.encode())
    with pytest.raises(bindf.HeaderError, match="line 1 of the log header is not text") as info:
        bindf.read_apx_log(path)
    assert info.value.offset == 2
    path.write_bytes(METADATA.encode() + b"Digital: {'a': '\x00'}\n" + lines.encode())
    with pytest.raises(bindf.HeaderError, match="line 4 .* control byte") as info:
        bindf.read_apx_log(path)
    assert info.value.offset == len(METADATA) + 16
    # The Namespace line ends the header: a text line after it is a malformed readout.
    path.write_text(METADATA + "a stray line\n" + lines)
    with pytest.raises(bindf.CorruptDataError, match="line 4") as corrupt:
        bindf.read_apx_log(path)
    assert corrupt.value.offset == len(METADATA)
    assert len(bindf.read_apx_log(path, level="readouts", on_error="skip")) == 2


def test_probe_agrees_with_the_reader(log_file: Path, data_dir: Path, tmp_path: Path) -> None:
    readouts = _apx_readouts(data_dir / APX)[:5]
    for data in (log_file.read_bytes(), _daq_log_bytes(readouts, newline="\r\n"),
                 _daq_log_bytes(readouts, header=""), ("# note\n" + METADATA).encode()):
        path = _write(tmp_path / "run.txt", data)  # no .log: only the probe can tell
        assert looks_like_apx_log(data[:4096], Source(str(path)))
        assert bindf.detect_format(Source(str(path))).name == "apx_log"
    for data in (b"", b"\n\n", RUN_LOG.encode(), b"hello\n0\t b'e0'\n"):
        assert not looks_like_apx_log(data, Source(str(_write(tmp_path / "x.txt", data))))


@pytest.mark.parametrize("first", [0, 20])  # empty when first opened; cut in its header
def test_follow_a_log_cut_inside_its_header(data_dir: Path, tmp_path: Path,
                                            first: int) -> None:
    """An AstroPix 3 log followed while the DAQ writes it: the header decides the decoding
    (chip version 3), so nothing is decoded before it is complete."""
    readouts = _apx_readouts(data_dir / APX3)[:60]
    header = "Voltagecard: {'thpmos': 1.1}\n Namespace(name='v3', chipVer=3)\n"
    data = _daq_log_bytes(readouts, header)
    finished = _write(tmp_path / "finished.log", data)
    expected = bindf.read_apx_log(finished, output="arrow").replace_schema_metadata(None)
    assert "wall_timestamp" in expected.column_names  # the AstroPix 3 columns
    growing = _write(tmp_path / "growing.log", data[:first])

    def write_rest() -> None:
        for piece in (data[first : len(header) + 500], data[len(header) + 500 :]):
            time.sleep(0.15)
            with open(growing, "ab") as f:
                f.write(piece)

    thread = threading.Thread(target=write_rest)
    thread.start()
    with bindf.follow(growing, poll_interval=0.03, idle_timeout=1.5, output="arrow") as follower:
        frames = [f.replace_schema_metadata(None) for f in follower]
    thread.join()
    assert pa.concat_tables(frames).equals(expected)


@pytest.mark.parametrize("level", ["hits", "readouts"])
def test_many_damaged_lines_give_few_batches_and_every_row(tmp_path: Path, data_dir: Path,
                                                          level: str) -> None:
    """Dropped lines cut the readouts into a run per undamaged stretch; those small runs
    are joined into batches (a batch per damaged line made a read of 20,000 of them
    2-3 times slower), in file order, every readout kept."""
    from bindf.registry import open_reader

    readouts = _apx_readouts(data_dir / "20250723_092534_data.apx")[:300] * 4
    path = _write_log(tmp_path / "run.log", readouts)
    text = path.read_text().splitlines(keepends=True)
    first = len(text) - len(readouts)
    for k in range(1, len(readouts), 3):  # every third readout line damaged
        text[first + k] = text[first + k].replace("'", "", 1)
    path.write_text("".join(text))
    kept = [r for k, r in enumerate(readouts) if k % 3 != 1]
    table = bindf.read_apx_log(path, on_error="skip", output="arrow", level=level)
    expected = bindf.read_apx_log(path, on_error="skip", output="arrow", level=level,
                                  batch_size=5)
    assert table.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))
    if level == "readouts":
        assert table.column("readout_id").to_pylist() == [rid for rid, _ in kept]
    reader = open_reader(Source(str(path)), on_error="skip", level=level)
    assert len(list(reader.iter_batches())) == 1  # (was one per stretch: 400)


def _log_line(rng: np.random.Generator, unusual: float) -> bytes:
    """One line of a log: mostly a readout line as the DAQ writes it; with probability
    ``unusual`` one that is blank, laid out differently, or damaged."""
    payload = rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8).tobytes().hex()
    readout_id = int(rng.integers(0, 1 << 20))
    if rng.random() >= unusual:
        return f"{readout_id}\t b'{payload}'\n".encode()
    return rng.choice([
        b"\n", b"\r\n", b"  \t\n", b"\x0b\x0c \n",  # blank
        f"{readout_id}\tb'{payload.upper()}' \t\r\n".encode(),  # other blanks, CRLF
        f"000{readout_id % 1000}\t   b'{payload}'\n".encode(),  # leading zeros
        b"4294967295\t b'ab'\n",  # the largest id
        b"4294967296\t b'ab'\n",  # too large
        b"00000000001\t b'ab'\n",  # 11 digits, fits
        f"{readout_id}\t b'{payload}a'\n".encode(),  # half a byte
        f"{readout_id} b'{payload}'\n".encode(),  # no tab
        f"{readout_id}\t b'{payload}\n".encode(),  # no closing quote
        b"x1\t b'ab'\n", b"garbage\n", b"'\n",
    ])


@pytest.mark.parametrize("unusual", [0.0, 0.02, 0.3])
def test_clean_text_is_parsed_with_numpy_as_line_by_line(unusual):
    """The numpy parse of clean text (no object per line) gives exactly what the
    line-by-line parse gives, and declines every text with a line it does not cover."""
    rng = np.random.default_rng(7)
    parsed_with_numpy = 0
    for _ in range(300):
        text = b"".join(_log_line(rng, unusual) for _ in range(int(rng.integers(0, 40))))
        if rng.random() < 0.3:  # the last line of a file may lack its newline
            text = text.rstrip(b"\n")
        starts = apx_log._nonblank_line_starts(text)
        line_starts, readout_id, sizes, payload, damaged, *_ = \
            apx_log._checked_readouts(text, starts)
        clean = apx_log._clean_readouts(text, starts)
        if clean is None:
            continue
        parsed_with_numpy += 1
        assert len(damaged) == 0
        for got, expected in zip(clean, (line_starts, readout_id, sizes, payload), strict=True):
            assert got.dtype == expected.dtype
            assert got.tolist() == expected.tolist()
    assert parsed_with_numpy > (250 if unusual == 0 else 5)


def test_a_clean_log_is_read_without_the_line_by_line_parse(log_file, data_dir, monkeypatch):
    calls = []
    checked = apx_log._checked_readouts
    monkeypatch.setattr(apx_log, "_checked_readouts",
                        lambda *args: calls.append(1) or checked(*args))
    got = bindf.read_apx_log(log_file, output="polars")
    assert not calls
    expected = bindf.read_apx(data_dir / APX, output="polars")
    assert got.drop("timestamp").equals(expected.drop("timestamp"))
