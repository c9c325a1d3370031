"""Replay every input the atheris targets (``fuzz/``) ever flagged.

``fuzz/run_all.sh`` copies crash, timeout and out-of-memory inputs to
``tests/fuzz-regressions/<target>/``. Once the bug is fixed, each must give an allowed
outcome (``fuzz/contract.py``), in bounded time, here in the ordinary test run — no
atheris needed, except for the kernels target, whose inputs are decoded by atheris'
``FuzzedDataProvider``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fuzz"))

from contract import CONFIGS, SUFFIX, check_input  # noqa: E402

REGRESSIONS = Path(__file__).parent / "fuzz-regressions"
CASES = sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file() and p.name != "README.md")


def test_every_target_has_a_folder() -> None:
    assert {p.name for p in REGRESSIONS.iterdir() if p.is_dir()} == {*CONFIGS, "kernels"}


@pytest.mark.parametrize("case", [c for c in CASES if c.parent.name != "kernels"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reader_regression(case: Path, tmp_path: Path) -> None:
    target = case.parent.name
    path = tmp_path / f"input{SUFFIX.get(target, '.bin')}"
    t0 = time.perf_counter()
    check_input(target, case.read_bytes(), str(path))
    assert time.perf_counter() - t0 < 10  # run_all.sh's -timeout


@pytest.mark.parametrize("case", [c for c in CASES if c.parent.name == "kernels"],
                         ids=lambda p: p.name)
def test_kernel_regression(case: Path) -> None:
    pytest.importorskip("atheris")
    import fuzz_kernels

    fuzz_kernels.one_input(case.read_bytes())
