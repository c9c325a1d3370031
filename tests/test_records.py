"""The generic fixed-record reader (numpy dtype → frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
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
