"""The documentation site builds without a warning, and documents what bindf really has.

``mkdocs build --strict`` (once per session, into a temporary folder) turns every broken
link, missing anchor, unresolvable API cross-reference, docstring griffe cannot parse and
missing README snippet into a failure. It needs no network: the theme is mkdocs' own and
nothing is fetched. The tests after it check what ``--strict`` cannot see: that the API
reference shows every public name (the per-format readers are made at import time, so a
broken runtime-inspection setup would drop them silently), that every registered format
has a format page, and that nothing cites notes outside the repository.
"""

from __future__ import annotations

import argparse
import html
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bindf

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _anchors(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


def test_api_reference_documents_every_public_name(site: Path) -> None:
    anchors = _anchors(site / "api" / "bindf" / "index.html")
    # The build runs in a fresh process, without the formats the test suite registers
    # (tests/example_formats.py): compare with that process's bindf.__all__.
    public = subprocess.run([sys.executable, "-c", "import bindf; print(*bindf.__all__)"],
                            capture_output=True, text=True, check=True).stdout.split()
    missing = [name for name in public if f"bindf.{name}" not in anchors]
    assert not missing, f"not in the API reference: {missing}"
    # The generated readers come with their real signature and docstring, not as bare
    # attributes: each has its columns/options text, and the common reader parameters.
    page = (site / "api" / "bindf" / "index.html").read_text(encoding="utf-8")
    section = page[page.index('id="bindf.read_apx"'):page.index('id="bindf.read_apx_log"')]
    assert "level" in section and "on_error" in section and "chunksize" in section


def test_dask_reference_documents_its_public_names(site: Path) -> None:
    import bindf.dask

    anchors = _anchors(site / "api" / "dask" / "index.html")
    # read_<format> is served by the module's __getattr__, one per registered format;
    # docs/api/dask.md lists them under `members:`.
    per_format = [f"read_{spec.name}" for spec in bindf.registry.BUILTIN if spec.public]
    missing = [name for name in [*bindf.dask.__all__, *per_format]
               if f"bindf.dask.{name}" not in anchors]
    assert not missing, f"not in the bindf.dask reference: {missing}"


def test_no_attribute_is_documented_by_its_values_type(site: Path) -> None:
    """Inspected at runtime, an attribute has no docstring of its own and griffe gave it
    its value's type's: ``bindf.__version__`` read "Create a new string object …",
    ``IngestReport.rows`` "Convert a number or string to an integer …". The docs
    extension gives it the ``#:`` comment above it in the source instead."""
    builtin_docs = {str: "Create a new string object", int: "Convert a number or string",
                    float: "Convert a string or number", bool: "Returns True when",
                    list: "Built-in mutable sequence", tuple: "Built-in immutable sequence"}
    assert all(text in (inspect.getdoc(kind) or "") for kind, text in builtin_docs.items())
    for page in ("bindf", "dask", "accessor"):
        text = html.unescape((site / "api" / page / "index.html").read_text(encoding="utf-8"))
        found = [doc for doc in builtin_docs.values() if doc in text]
        assert not found, (page, found)
    text = (site / "api" / "bindf" / "index.html").read_text(encoding="utf-8")
    rows = text[text.index('id="bindf.IngestReport.rows"'):]
    assert "Rows written by this run" in rows[:2000]


def test_cli_page_holds_the_current_help(site: Path) -> None:
    text = (site / "guide" / "cli" / "index.html").read_text(encoding="utf-8")
    from bindf.cli import build_parser

    commands = next(action.choices for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    for command in commands:  # every subcommand has its help on the page
        assert f"usage: bindf {command} [-h]" in text, command
    assert "--output-dir OUTPUT_DIR" in text


def test_every_registered_format_has_a_format_page() -> None:
    pages = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "formats").glob("*.md"))
    undocumented = [spec.name for spec in bindf.registry.BUILTIN
                   if spec.public and f"read_{spec.name}" not in pages]
    assert not undocumented, f"formats without a page in docs/formats/: {undocumented}"


def test_nothing_cites_notes_outside_the_repository() -> None:
    # Users who clone bindf get neither the team's shared folder nor its format notes:
    # code and docs cite the pages under docs/ instead.
    forbidden = re.compile("|".join([r"\.\./shared", "FORMATS" + r"\.md", "shared/" + "data"]))
    files = [ROOT / "README.md", *DOCS.rglob("*.md"), *DOCS.rglob("*.py")]
    for pattern in ("*.py", "*.pyx", "*.pyi", "*.md"):
        files += (ROOT / "bindf").rglob(pattern)
        files += (ROOT / "tests").rglob(pattern)
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in files
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if forbidden.search(line)]
    assert not offenders, f"references to notes outside the repository: {offenders}"
