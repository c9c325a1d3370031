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
assert_type(bindf.read_apx(p, chunksize=1000), ChunkedReader)
assert_type(bindf.read_apx(p, output=output), pd.DataFrame | pl.DataFrame | pa.Table)
assert_type(bindf.read(p, format="it02", layout="dense", output="polars"), pl.DataFrame)
assert_type(bindf.scan_it02(p), pl.LazyFrame)
assert_type(bindf.read_records(p, "<u4"), pd.DataFrame)
assert_type(bindf.read_records(p, "<u4", output="polars"), pl.DataFrame)
assert_type(bindf.read_records(p, "<u4", chunksize=10), ChunkedReader)
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


def test_mypy_sees_each_readers_return_type(tmp_path: Path) -> None:
    sample = tmp_path / "user_code.py"
    sample.write_text(textwrap.dedent(USER_CODE), encoding="utf-8")
    package_root = Path(bindf.__file__).resolve().parents[1]
    env = dict(os.environ)
    if "site-packages" not in package_root.parts:  # an editable install: point mypy at it
        env["MYPYPATH"] = str(package_root)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
         "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
         "--cache-dir", str(tmp_path / "cache"), str(sample)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
