"""Parquet export keeps the header; round trips are exact; writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

import bindf
from bindf import parquet
from bindf._atomic import OutputExistsError, atomic_output


@pytest.mark.parametrize("output", ["pandas", "polars", "arrow"])
def test_round_trip_keeps_header_and_values(stt1_files: list[Path], tmp_path: Path,
                                            output: str) -> None:
    frame = bindf.read(stt1_files[0], output=output)
    out = tmp_path / "x.parquet"
    parquet.to_parquet(frame, out)
    back = parquet.read_parquet(out, output=output)
    if output == "pandas":
        pd.testing.assert_frame_equal(back, frame)
        assert back.attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
        # plain pandas restores attrs too (PANDAS_ATTRS key)
        assert pd.read_parquet(out).attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
    elif output == "polars":
        assert back.equals(frame)
        assert back.bindf.header == frame.bindf.header
    else:
        assert back.equals(frame)
        assert back.schema.metadata[b"bindf.header"] == frame.schema.metadata[b"bindf.header"]
    assert b"bindf.version" in pq.read_schema(out).metadata


def test_plain_frames_export_too(tmp_path: Path) -> None:
    out = tmp_path / "plain.parquet"
    parquet.to_parquet(pl.DataFrame({"a": [1, 2]}), out)
    assert pl.read_parquet(out)["a"].to_list() == [1, 2]


def test_atomic_output_on_failure_and_interrupt(tmp_path: Path) -> None:
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    for exc in (OSError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), atomic_output(dest) as f:
            f.write(b"partial")
            raise exc
        assert dest.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["dest.bin"]


def test_atomic_output_replaces_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    target = tmp_path / "target.bin"
    target.write_bytes(b"keep me")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    with atomic_output(link) as f:
        f.write(b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert target.read_bytes() == b"keep me"


def test_no_overwrite(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.write_bytes(b"x")
    with pytest.raises(OutputExistsError), atomic_output(dest, overwrite=False):
        pass
    assert dest.read_bytes() == b"x"


def test_accessor_to_parquet(stt1_files: list[Path], tmp_path: Path) -> None:
    frame = bindf.read(stt1_files[0], output="polars")
    frame.bindf.to_parquet(tmp_path / "a.parquet")
    assert bindf.read_parquet(tmp_path / "a.parquet", output="polars").bindf.header == \
        frame.bindf.header
    pdf = bindf.read(stt1_files[0])
    pdf.bindf.to_parquet(tmp_path / "b.parquet")
    assert pd.read_parquet(tmp_path / "b.parquet").attrs["bindf"]["format"] == "spectro"


def test_read_parquet_dataset_folder(stt1_files: list[Path], tmp_path: Path) -> None:
    import pyarrow.dataset as ds

    table = bindf.read(stt1_files[0], output="arrow")
    folder = tmp_path / "dataset"
    ds.write_dataset(table, folder, format="parquet")
    back = bindf.read_parquet(folder, output="polars")
    assert back.height == 1000 and back.bindf.format == "spectro"


def test_atomic_output_has_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("name", ["20250723_092534_data.apx",
                                  "intensity-tracing-export-data-example.bin",
                                  "sp01_decay_curves_example.bin", "spf1_phasors_example.bin"])
@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_real_samples_round_trip_exactly(data_dir: Path, tmp_path: Path, name: str,
                                         output: str) -> None:
    frame = bindf.read(data_dir / name, output=output)
    out = tmp_path / "x.parquet"
    bindf.to_parquet(frame, out)
    back = bindf.read_parquet(out, output=output)
    if output == "pandas":
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
        assert back.attrs["bindf"]["header"] == frame.attrs["bindf"]["header"]
    else:
        assert back.schema == frame.schema and back.equals(frame)
        assert back.bindf.header == frame.bindf.header


@pytest.mark.parametrize("fail_on", [1, 2, 3, "interrupt"])
def test_writer_failing_mid_write_leaves_destination_untouched(
    stt1_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on
) -> None:
    import bindf._atomic as atomic
    import bindf._writing as writing

    frame = bindf.read(stt1_files[0], output="polars")
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "out.bin"
    dest.write_bytes(b"previous content")
    monkeypatch.setattr(writing, "WRITE_CHUNK_ROWS", 100)  # many writes
    real_fdopen = os.fdopen

    class Failing:
        def __init__(self, f):
            self._f, self._writes = f, 0

        def write(self, data):
            self._writes += 1
            if fail_on == "interrupt" and self._writes == 2:
                raise KeyboardInterrupt
            if self._writes == fail_on:
                raise OSError(28, "No space left on device")
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: Failing(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt if fail_on == "interrupt" else OSError):
        bindf.write_spectro(dest, frame)
    assert dest.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path / "out")) == ["out.bin"]
