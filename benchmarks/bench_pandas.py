"""pandas output: the default ``dtype_backend`` (None: numpy columns) against "pyarrow".

Run with ``python bench.py --only pandas``. "pyarrow" wraps bindf's Arrow buffers in
``pd.ArrowDtype`` columns without copying; the default builds writable numpy columns
(and nullable integer arrays where a format allows nulls), which costs a copy of most
columns. Inputs are the same generated files as the spectroscopy and AstroPix cases.
"""

from __future__ import annotations

from pathlib import Path

import _harness as h
import pandas as pd
from bench_apx import make_apx
from bench_astep import make_astep
from bench_flim_exports import make_itt1
from bench_it02 import make_dense
from bench_spectro import make_legacy

import bindf


def spectro_default(path: Path) -> pd.DataFrame:
    return bindf.read_spectro(path)


def spectro_pyarrow(path: Path) -> pd.DataFrame:
    return bindf.read_spectro(path, dtype_backend="pyarrow")


def apx_default(path: Path) -> pd.DataFrame:
    return bindf.read_apx(path)


def apx_pyarrow(path: Path) -> pd.DataFrame:
    return bindf.read_apx(path, dtype_backend="pyarrow")


def it02_dense_default(path: Path) -> pd.DataFrame:
    return bindf.read_it02(path)


def itt1_default(path: Path) -> pd.DataFrame:
    return bindf.read_itt1(path)


def spectro_with_paths(path: Path) -> pd.DataFrame:
    return bindf.read_spectro(path, include_file_paths="path")


def spectro_numpy_nullable(path: Path) -> pd.DataFrame:
    return bindf.read_spectro(path, dtype_backend="numpy_nullable")


def astep_default(path: Path) -> pd.DataFrame:
    return bindf.read_astep(path)


def astep_tot_us(path: Path) -> pd.DataFrame:
    # a float column with nulls alone: its conversion is all the peak
    return bindf.read_astep(path, columns=["tot_us"])


CASES = [
    h.Case("spectro legacy → pandas (default dtypes)", make_legacy,
           "bench_pandas:spectro_default"),
    h.Case("spectro legacy → pandas (pyarrow backend)", make_legacy,
           "bench_pandas:spectro_pyarrow"),
    h.Case("apx → pandas (default dtypes)", make_apx, "bench_pandas:apx_default", unit="hits"),
    h.Case("apx → pandas (pyarrow backend)", make_apx, "bench_pandas:apx_pyarrow", unit="hits"),
    h.Case("it02 dense → pandas (default dtypes)", make_dense, "bench_pandas:it02_dense_default"),
    h.Case("itt1 → pandas (default dtypes)", make_itt1, "bench_pandas:itt1_default"),
    h.Case("spectro legacy → pandas, include_file_paths", make_legacy,
           "bench_pandas:spectro_with_paths"),
    h.Case("spectro legacy → pandas (numpy_nullable)", make_legacy,
           "bench_pandas:spectro_numpy_nullable"),
    h.Case("astep → pandas (default dtypes)", make_astep, "bench_pandas:astep_default",
           unit="frames"),
    h.Case("astep → pandas (tot_us only)", make_astep, "bench_pandas:astep_tot_us",
           unit="frames"),
]
