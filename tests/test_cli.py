"""The ``bindf`` command line: commands, exit codes, atomic output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import write_stt1

import bindf
from bindf import cli


def run(*args: str) -> int:
    return cli.main(list(args))


def test_info_json(stt1_files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run("info", str(stt1_files[0]), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "spectro" and info["rows"] == 1000
    assert info["header"]["laser_period_ns"] == 25.0
    assert "macrotime_ns" in info["columns"]


def test_info_text_many_files(stt1_files: list[Path], tmp_path: Path, capsys) -> None:
    assert run("info", str(tmp_path / "run*.bin")) == 0
    out = capsys.readouterr().out
    assert out.count("format: spectro") == 3 and "rows:   250" in out


def test_head(stt1_files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run("head", str(stt1_files[0]), "-n", "3", "--columns", "event,macrotime_ns") == 0
    out = capsys.readouterr().out
    assert "shape: (3, 2)" in out and "microtime_ns" not in out


@pytest.mark.parametrize("ext", [".parquet", ".arrow", ".csv"])
def test_convert_each_kind(stt1_files: list[Path], tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"out{ext}"
    assert run("convert", str(tmp_path / "run*.bin"), "-o", str(out), "-q") == 0
    expected = bindf.read(str(tmp_path / "run*.bin"), output="polars")
    if ext == ".parquet":
        got = pl.read_parquet(out)
        meta = pq.read_schema(out).metadata
        assert json.loads(meta[b"bindf.header"]) == expected.bindf.header
        assert bindf.read_parquet(out, output="polars").bindf.format == "spectro"
    elif ext == ".arrow":
        got = pl.read_ipc(out)
    else:
        got = pl.read_csv(out)
    assert got.height == 1750
    assert got["macrotime_ns"].to_list() == expected["macrotime_ns"].to_list()


def test_convert_output_dir_and_columns(stt1_files: list[Path], tmp_path: Path) -> None:
    outdir = tmp_path / "pq"
    assert run("convert", *map(str, stt1_files), "--output-dir", str(outdir),
               "--columns", "event,channel", "-q") == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["run0.parquet", "run1.parquet",
                                                         "run2.parquet"]
    assert pl.read_parquet(outdir / "run2.parquet").columns == ["event", "channel"]


def test_convert_refuses_to_overwrite(stt1_files: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"precious")
    assert run("convert", str(stt1_files[0]), "-o", str(out)) == cli.EX_CANTCREAT
    assert out.read_bytes() == b"precious"
    assert "--force" in capsys.readouterr().err
    assert run("convert", str(stt1_files[0]), "-o", str(out), "--force", "-q") == 0
    assert pl.read_parquet(out).height == 1000


def test_bad_input_leaves_no_partial_output(tmp_path: Path, capsys) -> None:
    good = write_stt1(tmp_path / "a.bin", n=100)
    bad = tmp_path / "b.bin"
    bad.write_bytes(b"STT1\x02\x00\x00\x00[]")  # JSON that is not an object
    out = tmp_path / "out.parquet"
    assert run("convert", str(good), str(bad), "-o", str(out)) == cli.EX_DATAERR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b.bin" in err and "Traceback" not in err
    assert not out.exists()
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and not [
        p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_exit_codes(tmp_path: Path, capsys) -> None:
    assert run("info", str(tmp_path / "missing.bin")) == cli.EX_NOINPUT
    (tmp_path / "junk.bin").write_bytes(b"\x00junk")
    assert run("info", str(tmp_path / "junk.bin")) == cli.EX_DATAERR
    write_stt1(tmp_path / "a.bin", n=10)
    assert run("convert", str(tmp_path / "a.bin"), "-o", str(tmp_path / "x.xlsx")) == cli.EX_USAGE
    assert run("head", str(tmp_path / "a.bin"), "--columns", "nope") == cli.EX_USAGE
    assert run("convert", str(tmp_path / "a.bin"), "-o",
               str(tmp_path / "no" / "dir" / "x.parquet")) == cli.EX_IOERR
    with pytest.raises(SystemExit) as exc:
        run("frobnicate")
    assert exc.value.code == cli.EX_USAGE
    for line in capsys.readouterr().err.splitlines():
        assert "Traceback" not in line


def test_truncation_warning_is_one_line(tmp_path: Path, capsys) -> None:
    path = write_stt1(tmp_path / "a.bin", n=10)
    path.write_bytes(path.read_bytes()[:-3])
    assert run("head", str(path)) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "truncated" in err and "Traceback" not in err


def test_python_dash_m_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "bindf", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for code in ("65", "66", "73", "74"):
        assert code in out
