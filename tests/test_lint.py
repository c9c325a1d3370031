"""The code base stays ruff-clean (config in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it is part of the [test] extra)")
    result = subprocess.run([ruff, "check", "bindf", "tests", "benchmarks", "docs", "ci"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_ships_typing_marker_and_samples() -> None:
    import bindf

    package = Path(bindf.__file__).parent
    assert (package / "py.typed").exists()
    assert sys.version_info >= (3, 10)
    samples = sorted(p.name for p in (package / "samples").iterdir())
    assert "astropix_threshold_scan.apx" in samples and "photon_events_stt1.bin" in samples


def test_every_kernel_is_compiled() -> None:
    """setup.py builds every ``bindf/_kernels/_*.pyx`` (so .ci/run's bounds-checked pass
    covers each of them); each has its typing stub."""
    import importlib

    import bindf

    kernels = Path(bindf.__file__).parent / "_kernels"
    names = sorted(p.stem for p in kernels.glob("_*.pyx"))
    assert {"_apx", "_apx3", "_astep", "_it02"} <= set(names)
    for name in names:
        module = importlib.import_module(f"bindf._kernels.{name}")
        assert not module.__file__.endswith(".py"), name
        assert (kernels / f"{name}.pyi").exists(), name
