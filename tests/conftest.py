"""Shared fixtures: paths of the real sample files copied into tests/data/; the counters
of the robustness tests (printed at the end of the run, for the README "Reliability")."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest hook
    # The formats the tests add (an entry-point plugin, a run-time registration, a
    # headerless one): registered before any test module is collected, so that the
    # registry-driven sweeps (robustness, fuzz targets) include them.
    import example_formats

    example_formats.install()


#: Multiplies the number of fuzz inputs and kernel calls (a long local run:
#: ``BINDF_FUZZ_SCALE=20``). ``HYPOTHESIS_PROFILE=nightly`` implies 20 unless it is set.
FUZZ_SCALE = float(os.environ.get(
    "BINDF_FUZZ_SCALE", "20" if os.environ.get("HYPOTHESIS_PROFILE") == "nightly" else "1"))
#: Malformed inputs fed to the readers this session, per format family (robustness tests).
FUZZ_INPUTS: dict[str, int] = {}
#: Calls of the Cython kernels with random or adversarial arguments, per kernel function.
KERNEL_CALLS: dict[str, int] = {}


@contextlib.contextmanager
def cpu_seconds() -> Iterator[Callable[[], float]]:
    """Time the block in CPU seconds of this process, with the garbage collector off.

    For the "rejected cheaply" bounds of the length-bomb tests: CPU time does not count
    the moments the shared machine runs something else, and no collection of the whole
    test session's objects lands inside the block. ``elapsed()`` after the block."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.process_time()
    spent: list[float] = []
    try:
        yield lambda: spent[0]
    finally:
        spent.append(time.process_time() - start)
        if gc_was_enabled:
            gc.enable()


@contextlib.contextmanager
def raises_from_scan(expected: type[BaseException], match: str | None = None,
                     path: object = None, offset: int | None = None) -> Iterator[None]:
    """``pytest.raises(expected)`` around a polars scan's ``collect()``. Newer polars
    raise the reader's own exception; polars 1.x (1.22, the oldest bindf supports) wraps it in
    a ``ComputeError`` whose message names it, so then the message is checked instead:
    the type, ``match``, and the ``path`` and byte ``offset`` the error carries."""
    import re

    import polars as pl

    with pytest.raises((expected, pl.exceptions.ComputeError)) as caught:
        yield
    error, text = caught.value, str(caught.value)
    if not isinstance(error, expected):
        assert f"{expected.__name__}: " in text, text
    if match is not None:
        assert re.search(match, text), text
    if path is not None:
        assert (error.path == str(path) if isinstance(error, expected)
                else str(path) in text), text
    if offset is not None:
        assert (error.offset == offset if isinstance(error, expected)
                else f"byte offset {offset}" in text), text


def count_inputs(fmt: str, n: int = 1) -> None:
    FUZZ_INPUTS[fmt] = FUZZ_INPUTS.get(fmt, 0) + n


def count_kernel_calls(kernel: str, n: int = 1) -> None:
    KERNEL_CALLS[kernel] = KERNEL_CALLS.get(kernel, 0) + n


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest hook
    """Print the fuzz counters; ``BINDF_FUZZ_REPORT=file.json`` also writes them there."""
    if not (FUZZ_INPUTS or KERNEL_CALLS):
        return
    report = {
        "malformed_inputs": dict(sorted(FUZZ_INPUTS.items())),
        "malformed_inputs_total": sum(FUZZ_INPUTS.values()),
        "kernel_calls": dict(sorted(KERNEL_CALLS.items())),
        "kernel_calls_total": sum(KERNEL_CALLS.values()),
    }
    terminalreporter.write_sep("-", "bindf robustness counters")
    for key, value in report.items():
        terminalreporter.write_line(f"{key}: {value}")
    if os.environ.get("BINDF_FUZZ_REPORT"):
        Path(os.environ["BINDF_FUZZ_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def repeated_apx_run(repeats: int, damaged: str | None = None) -> bytes:
    """The real AstroPix sample's header and readouts, the readouts ``repeats`` times
    (27 KB each); ``damaged="last"`` or ``"middle"``: that readout's marker damaged (its
    second byte inverted), an error under ``on_error="raise"``."""
    data = (DATA / "20250723_092534_data.apx").read_bytes()
    marker = b"\xfe\xdc\xba"
    start = data.index(marker)
    run = bytearray(data[:start] + data[start:] * repeats)
    if damaged is not None:
        at = run.rindex(marker) if damaged == "last" else run.index(marker, len(run) // 2)
        run[at + 1] ^= 0xFF
    return bytes(run)


def write_stt1(path: Path, n: int = 1000, seed: int = 0, header: dict | None = None) -> Path:
    """A synthetic STT1 photon file (numpy only, so frontend tests do not depend on the
    format writers). Channel 0-3 photons with a line marker every 10th record."""
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    rec = np.zeros(n, dtype=[("event", "u1"), ("microtime_ns", "<f8"), ("macrotime_ns", "<f8")])
    rec["event"] = rng.integers(0, 4, n)
    rec["event"][::10] = 76
    rec["microtime_ns"] = rng.random(n) * 25.0
    rec["macrotime_ns"] = np.cumsum(rng.random(n) * 100.0)
    text = json.dumps(header if header is not None else {"channels": [0, 1, 2, 3],
                                                         "laser_period_ns": 25.0}).encode()
    path.write_bytes(b"STT1" + len(text).to_bytes(4, "little") + text + rec.tobytes())
    return path


@pytest.fixture
def stt1_files(tmp_path: Path) -> list[Path]:
    """Three STT1 files of 1000, 500 and 250 photons."""
    return [write_stt1(tmp_path / f"run{i}.bin", n, seed=i)
            for i, n in enumerate((1000, 500, 250))]


# Hypothesis profiles: "ci" (default; derandomized so CI is reproducible) and "nightly"
# (long runs on a developer machine: HYPOTHESIS_PROFILE=nightly python -m pytest).
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=200, derandomize=True, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "nightly", max_examples=10_000, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is part of the [test] extra
    pass


# -- one file of every format (tests/format_cases.py) ---------------------------------------
@pytest.fixture(scope="module")
def format_cases(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{case id: Case}``: a small file of every format (written once per module)."""
    from format_cases import make_cases

    return {case.id: case for case in make_cases(tmp_path_factory.mktemp("cases"))}


@pytest.fixture(params=["apx", "apx_log", "it02_dense", "it02_sparse", "spectro_stt1",
                        "spectro_legacy", "sp01", "spf1", "itt1", "fcs1", "it01", "astropix3", "astep", "records",
                        # formats added by tests/example_formats.py (plugin, run time,
                        # headerless by extension)
                        "tpl", "stamp", "raw16"])
def format_case(request: pytest.FixtureRequest, format_cases: dict):
    """Each format in turn (a test taking ``case`` runs once per format)."""
    return format_cases[request.param]
