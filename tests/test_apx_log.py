"""Legacy AstroPix text logs: same hits as the .apx they were made from."""

from __future__ import annotations

import struct
from pathlib import Path

import polars as pl
import pytest

import bindf

APX = "20250723_092534_data.apx"

METADATA = (
    "Voltagecard: {'thpmos': 0, 'cardConf2': 0, 'vcasc2': 1.1, 'BL': 1, 'vminuspix': 0.8}\n"
    "Digital: {'interrupt_pushpull': 0, 'clkmux': 0, 'tuple': (1, 2), 'aset': {3, 1}}\n"
    "Namespace(name='run1', outdir='.', yaml='testconfig', threshold=100.0, maxtime=None,"
    " inject=[1, 2], vinj=None)\n"
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
