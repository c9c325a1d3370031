"""Packaging facts that a wheel or a user relies on and no other test sees.

* every floor declared in pyproject.toml is pinned in ``ci/min-versions.txt``, which
  ``.ci/run`` installs to run the suite against the oldest declared versions;
* the licence metadata names every licence of what the wheel ships;
* scans work whatever keywords this polars' ``register_io_source`` accepts.

The installed wheel itself is checked by ``ci/test_wheel.py`` (run by ``.ci/run``).
"""

from __future__ import annotations

import glob
from pathlib import Path

import polars as pl
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def declared_floors(extras_to_skip: set[str]) -> dict[str, list[Version]]:
    """Every ``>=`` floor in the dependencies and the extras, by package name."""
    groups = [PROJECT["dependencies"]] + [
        deps for extra, deps in PROJECT["optional-dependencies"].items()
        if extra not in extras_to_skip
    ]
    floors: dict[str, list[Version]] = {}
    for text in (item for group in groups for item in group):
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "bindf":
            continue  # bindf[all] = the other extras
        for spec in requirement.specifier:
            if spec.operator == ">=":
                floors.setdefault(canonicalize_name(requirement.name), []).append(
                    Version(spec.version))
    return floors


def min_version_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "ci" / "min-versions.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_user_facing_floor_is_pinned_in_min_versions():
    # The test extra's own tools (pytest, ruff …) are not pinned; the packages users
    # install, through the dependencies or an extra, are.
    floors = declared_floors(extras_to_skip={"test"})
    pins = min_version_pins()
    assert sorted(pins) == sorted(floors)
    for name, versions in floors.items():
        assert set(versions) == {pins[name]}, f"{name}: floors {versions}, pinned {pins[name]}"


def test_the_test_extra_repeats_the_same_floors():
    user_floors = declared_floors(extras_to_skip={"test"})
    for name, versions in declared_floors(extras_to_skip=set()).items():
        if name in user_floors:
            assert set(versions) == set(user_floors[name]), name


def test_licence_metadata_covers_what_the_wheel_ships():
    assert PROJECT["license"] == "MIT AND GPL-3.0-or-later"
    for pattern in PROJECT["license-files"]:
        assert glob.glob(str(ROOT / pattern)), f"license-files entry {pattern} matches nothing"
    # The GPL part of the expression exists because of the bundled AstroPix files.
    assert (ROOT / "bindf" / "samples" / "astropix_threshold_scan.apx").exists()
    notice = (ROOT / "bindf" / "samples" / "NOTICE.md").read_text(encoding="utf-8")
    samples = [p.name for p in (ROOT / "bindf" / "samples").iterdir()
               if p.suffix in (".apx", ".bin")]
    for name in samples:
        assert f"`{name}`" in notice


def test_build_requires_a_setuptools_that_reads_spdx_licences():
    requires = {canonicalize_name(Requirement(r).name): Requirement(r)
                for r in PYPROJECT["build-system"]["requires"]}
    assert Version("77") in requires["setuptools"].specifier
    assert Version("76.9") not in requires["setuptools"].specifier


# -- polars 1.x / 2.x plugin API ----------------------------------------------------------
def test_scan_drops_keywords_an_older_register_io_source_does_not_take(monkeypatch):
    """polars 1.22 took ``register_io_source(callable, schema)`` only; the code that
    drops what a polars does not take is checked against that narrowest signature."""
    from bindf.frontends import polars as polars_frontend

    real = polars_frontend.register_io_source
    seen: dict[str, object] = {}

    def register_io_source(callable, schema):  # the polars 1.22 signature
        seen["schema"] = schema
        return real(callable, schema=schema)

    monkeypatch.setattr(polars_frontend, "register_io_source", register_io_source)
    sample = ROOT / "bindf" / "samples" / "intensity_tracing_it02.bin"
    import bindf

    lazy = bindf.scan(sample)
    assert "schema" in seen
    assert lazy.collect().equals(bindf.read(sample, output="polars"))


def test_scan_passes_explain_keywords_where_polars_takes_them(monkeypatch):
    from bindf.frontends import polars as polars_frontend

    real = polars_frontend.register_io_source
    seen: dict[str, object] = {}

    def register_io_source(io_source, *, schema, explain_name=None, explain_detail=None):
        seen.update(explain_name=explain_name, explain_detail=explain_detail)
        return real(io_source, schema=schema)

    monkeypatch.setattr(polars_frontend, "register_io_source", register_io_source)
    import bindf

    bindf.scan(ROOT / "bindf" / "samples" / "intensity_tracing_it02.bin")
    assert seen["explain_name"] == "bindf.scan_it02"
    assert str(seen["explain_detail"]).endswith("intensity_tracing_it02.bin")


@pytest.mark.skipif(Version(pl.__version__) < Version("2.0"),
                    reason="explain_name exists from polars 2.0 on")
def test_explain_names_the_scan_on_polars_2():
    import bindf

    plan = bindf.scan(ROOT / "bindf" / "samples" / "intensity_tracing_it02.bin").explain()
    assert "bindf.scan_it02" in plan
