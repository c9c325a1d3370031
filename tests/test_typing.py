"""A type checker sees what the functions return: mypy, run on user code as a user runs
it, agrees with ``assert_type`` for each output of each kind of reader (the stub's
``@overload``s for the generated readers, the modules' own for ``read_records``,
``read_headers`` and ``read_parquet``).

pandas and pyarrow ship no type information of their own (pandas-stubs and
pyarrow-stubs are separate); without those, mypy sees their frames as ``Any`` and the
pandas/Arrow lines below hold trivially, while the polars, ``ChunkedReader`` and
``LazyFrame`` lines are checked in any case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import bindf

pytest.importorskip("mypy")

USER_CODE = '''
from pathlib import Path

from typing_extensions import assert_type  # (typing has it from 3.11 on)

import pandas as pd
import polars as pl
import pyarrow as pa

import bindf
from bindf.frontends.output import ChunkedReader

p = "run.apx"
output: str = "polars"
assert_type(bindf.read_apx(p), pd.DataFrame)
assert_type(bindf.read_apx(p, output="polars"), pl.DataFrame)
assert_type(bindf.read_apx(p, output="arrow", columns=["tot_us"]), pa.Table)
assert_type(bindf.read_apx(p, chunksize=1000), ChunkedReader[pd.DataFrame])
assert_type(bindf.read_apx(p, chunksize=10, output="polars"), ChunkedReader[pl.DataFrame])
assert_type(bindf.read(p, chunksize=10, output="arrow"), ChunkedReader[pa.Table])
for polars_chunk in bindf.read_it02(p, chunksize=10, output="polars"):
    assert_type(polars_chunk, pl.DataFrame)
assert_type(bindf.read_apx(p, output=output), pd.DataFrame | pl.DataFrame | pa.Table)
size: int | None = 10
assert_type(bindf.read_apx(p, output=output, chunksize=size),
            pd.DataFrame | pl.DataFrame | pa.Table
            | ChunkedReader[pd.DataFrame | pl.DataFrame | pa.Table])
assert_type(bindf.read_apx(Path(".").glob("*.apx")), pd.DataFrame)  # any iterable of paths
assert_type(bindf.read_spectro(pl.Series(["a.bin", "b.bin"]), output="polars"), pl.DataFrame)
assert_type(bindf.follow(p), bindf.Follower[pd.DataFrame])
assert_type(next(bindf.follow(p, output="polars")), pl.DataFrame)
assert_type(bindf.follow(Path(".").glob("*.apx"), output="arrow"), bindf.Follower[pa.Table])
import bindf.dask
import dask.dataframe as dd
assert_type(bindf.dask.read_spectro(p, blocksize="64 MiB"), dd.DataFrame)
bindf.to_parquet(bindf.scan_apx(p), "out.parquet")  # a LazyFrame streams
bindf.write_apx(Path("out.apx"), bindf.read_apx(p))
assert_type(bindf.read(p, format="it02", layout="dense", output="polars"), pl.DataFrame)
assert_type(bindf.scan_it02(p), pl.LazyFrame)
assert_type(bindf.read_records(p, "<u4"), pd.DataFrame)
assert_type(bindf.read_records(p, "<u4", output="polars"), pl.DataFrame)
assert_type(bindf.read_records(p, "<u4", chunksize=10), ChunkedReader[pd.DataFrame])
assert_type(bindf.read_records(p, "<u4", chunksize=10, output="arrow"), ChunkedReader[pa.Table])
assert_type(bindf.read_headers([p, p], output="polars"), pl.DataFrame)
assert_type(bindf.read_headers(p), pd.DataFrame)
assert_type(bindf.read_parquet(p, output="polars"), pl.DataFrame)
assert_type(bindf.read_parquet(p, output="arrow"), pa.Table)
assert_type(bindf.read_parquet(p), pd.DataFrame)
assert_type(bindf.read_parquet([p, Path(p), b"PAR1"], output="polars", n_rows=10), pl.DataFrame)
assert_type(bindf.read_parquet("out/*.parquet", include_file_paths="file"), pd.DataFrame)
assert_type(bindf.read_dataset(p), pl.LazyFrame)
assert_type(bindf.open(p), bindf.BindfFile)
for chunk in bindf.read_spectro(p, chunksize=10, output="polars"):
    pass
'''


def _mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    sample = tmp_path / "user_code.py"
    sample.write_text(textwrap.dedent(code), encoding="utf-8")
    package_root = Path(bindf.__file__).resolve().parents[1]
    env = dict(os.environ)
    if "site-packages" not in package_root.parts:  # an editable install: point mypy at it
        env["MYPYPATH"] = str(package_root)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
         "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
         "--cache-dir", str(tmp_path / "cache"), str(sample)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_mypy_sees_each_readers_return_type(tmp_path: Path) -> None:
    result = _mypy(tmp_path, USER_CODE)
    assert result.returncode == 0, result.stdout + result.stderr


#: Calls that fail at run time, which mypy must refuse: a writer given a file object
#: (write_apx and write_astep took ``Any``). (``dtype_backend=`` with ``output="polars"``
#: is not refused: the overload for ``output=`` held in a ``str`` variable takes it, as
#: it must for a variable that holds "pandas".)
WRONG_CODE = '''
import io
import bindf

bindf.write_apx(io.BytesIO(), bindf.read_apx("run.apx"))
bindf.write_astep(io.BytesIO(), bindf.read_astep("run.bin"))
'''


def test_mypy_refuses_calls_that_fail_at_run_time(tmp_path: Path) -> None:
    result = _mypy(tmp_path, WRONG_CODE)
    lines = {int(line.split(":")[1]) for line in result.stdout.splitlines()
             if ": error:" in line}
    assert lines == {5, 6}, result.stdout + result.stderr
