"""Smoke test of an *installed* bindf (a wheel in a fresh virtual environment).

An editable install reads everything from the checkout, so it hides a sample, stub or
licence file that the wheel forgets. These tests run against the installed distribution
instead: its file list (the wheel's RECORD), its metadata, the console script and every
bundled sample. ``.ci/run`` builds the wheel with ``python -m build``, installs it into a
new venv outside the checkout and runs this file there; cibuildwheel runs it on every
wheel it builds (``[tool.cibuildwheel]`` in pyproject.toml).

Not part of the main suite (``testpaths = ["tests"]``): run it explicitly,
``python -m pytest ci/test_wheel.py``, from an environment where bindf is *installed*.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata, resources
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
DIST = metadata.distribution("bindf")
#: Installed files, as the wheel's RECORD lists them (paths relative to site-packages).
INSTALLED = {str(f).replace("\\", "/") for f in DIST.files or ()}
SAMPLES = sorted(
    p.name for p in (resources.files("bindf") / "samples").iterdir()
    if p.name.endswith((".apx", ".bin"))
)
#: Every compiled kernel (setup.py builds each ``bindf/_kernels/_*.pyx``).
KERNELS = ["_apx", "_apx3", "_astep", "_fields", "_it02", "_jsonparse"]


def test_bindf_is_imported_from_the_installation_not_the_checkout():
    import bindf

    location = Path(bindf.__file__).resolve()
    assert CHECKOUT not in location.parents, (
        f"bindf was imported from the checkout ({location}): run this file from an "
        "environment where bindf is installed from a wheel, outside the source tree")
    direct_url = DIST.read_text("direct_url.json") or ""
    assert '"editable": true' not in direct_url, "bindf is an editable install"


@pytest.mark.parametrize("relative", [
    "bindf/py.typed",
    "bindf/__init__.pyi",
    "bindf/dask.pyi",
    *(f"bindf/_kernels/{k}.pyi" for k in KERNELS),
    "bindf/samples/README.md",
    "bindf/samples/NOTICE.md",
    *(f"bindf/samples/{name}" for name in [
        "astropix_threshold_scan.apx", "intensity_tracing_it02.bin",
        "decay_curves_sp01.bin", "phasors_spf1.bin", "photon_events_stt1.bin",
    ]),
])
def test_package_data_is_installed(relative):
    assert relative in INSTALLED


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_is_compiled_and_release_sized(kernel):
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    relative = f"bindf/_kernels/{kernel}{suffix}"
    assert relative in INSTALLED, f"compiled kernel {relative} missing from the wheel"
    size = Path(DIST.locate_file(relative)).stat().st_size
    if sys.platform.startswith("linux"):
        # Unstripped, each kernel is about 1.3 MB of debug information (setup.py strips
        # release builds to about 0.25 MB).
        assert size < 600_000, f"{relative} is {size} bytes: debug symbols not stripped"


def test_no_generated_c_code_in_the_wheel():
    assert not [name for name in INSTALLED if name.endswith(".c")]


def test_third_party_data_keeps_its_licence():
    """The GPL-3.0 sample ships with the GPL text and a notice; FLIM LABS' MIT notice too."""
    licences = {name.split(".dist-info/licenses/", 1)[1]
                for name in INSTALLED if ".dist-info/licenses/" in name}
    assert {"LICENSE", "LICENSES/GPL-3.0-or-later.txt", "LICENSES/MIT-FLIM-LABS.txt",
            "bindf/samples/NOTICE.md"} <= licences
    assert DIST.metadata["License-Expression"] == "MIT AND GPL-3.0-or-later"
    gpl = Path(DIST.locate_file(next(n for n in INSTALLED
                                     if n.endswith("licenses/LICENSES/GPL-3.0-or-later.txt"))))
    assert "GNU GENERAL PUBLIC LICENSE" in gpl.read_text(encoding="utf-8")
    notice = (resources.files("bindf") / "samples" / "NOTICE.md").read_text(encoding="utf-8")
    for name in SAMPLES:
        assert f"`{name}`" in notice, f"NOTICE.md does not say under which licence {name} is"


def test_demo_command_runs():
    script = shutil.which("bindf", path=os.path.dirname(sys.executable))
    assert script, "the `bindf` console script is not installed next to the interpreter"
    result = subprocess.run([script, "demo"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in SAMPLES:
        assert f"== {name}" in result.stdout


@pytest.mark.parametrize("name", SAMPLES)
def test_each_sample_reads_eagerly_and_lazily(name):
    import pandas as pd

    import bindf

    with resources.as_file(resources.files("bindf") / "samples" / name) as path:
        frame = bindf.read(path)
        lazy = bindf.scan(path).collect()
    assert isinstance(frame, pd.DataFrame) and len(frame) > 0
    assert frame.attrs["bindf"]["header"], "the header did not reach attrs"
    assert lazy.height == len(frame) and lazy.columns == list(frame.columns)
