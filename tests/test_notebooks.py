"""The notebooks in notebooks/ are committed with their outputs, and those outputs are
current: each notebook is re-executed here and its text outputs compared with the
committed ones. Regenerate with ``python notebooks/make_notebooks.py``.

Each notebook runs once per session (a kernel start costs seconds), in a fresh kernel
with ``MPLBACKEND=Agg``, as headless CI needs; images are therefore left out of the
comparison, and so are execution counts. Exact text (frame reprs, HTML tables) depends
on the versions of the rendering libraries, so the comparison runs when those match the
versions recorded in the notebook, and is skipped, saying so, when they do not: the
notebook still has to run without error and produce the same kinds of output.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
COMMITTED = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  NOTEBOOK_DIR / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_notebooks = _load_generator()


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``executed(path)``: the committed notebook at ``path``, outputs cleared, run
    again under ``MPLBACKEND=Agg`` (once per module, whichever test asks first)."""
    runs: dict[Path, Any] = {}

    def run(path: Path) -> Any:
        if path not in runs:
            notebook = nbformat.read(path, as_version=4)
            for cell in notebook.cells:
                if cell.cell_type == "code":
                    cell.outputs = []
                    cell.execution_count = None
            workdir = tmp_path_factory.mktemp(path.stem)
            make_notebooks.execute(notebook, workdir, mpl_backend="Agg")
            runs[path] = notebook
        return runs[path]

    return run


def _ids(path: Path) -> str:
    return path.name


def test_every_notebook_is_generated() -> None:
    """notebooks/ holds exactly the notebooks make_notebooks.py writes, one per format
    family plus the analysis walkthrough."""
    assert sorted(p.name for p in COMMITTED) == sorted(make_notebooks.NOTEBOOKS)
    names = " ".join(p.name for p in COMMITTED)
    for topic in ("astropix", "intensity_tracing", "spectroscopy", "analysis"):
        assert topic in names


@pytest.mark.parametrize("path", COMMITTED, ids=_ids)
def test_cells_match_the_generator(path: Path) -> None:
    """A cell edited in make_notebooks.py, or in the notebook by hand, without
    regenerating fails here."""
    committed = nbformat.read(path, as_version=4)
    built = make_notebooks.build(path.name)
    assert [(c.cell_type, c.source) for c in committed.cells] == \
        [(c.cell_type, c.source) for c in built.cells], \
        f"{path.name} is out of date: run python notebooks/make_notebooks.py {path.name}"


@pytest.mark.parametrize("path", COMMITTED, ids=_ids)
def test_committed_with_outputs(path: Path) -> None:
    """Every code cell has been run in order; the outputs are reproducible (no machine
    paths, addresses, stderr or errors), small, and plots are in them."""
    notebook = nbformat.read(path, as_version=4)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1)), \
        f"{path.name} was committed without (all of) its outputs"
    assert any(c.outputs for c in code_cells)
    assert make_notebooks.problems(notebook) == []
    assert path.stat().st_size < make_notebooks.MAX_NOTEBOOK_BYTES
    # Every plotting cell shows its figure as a PNG.
    for cell in code_cells:
        if ".plot_" in cell.source or "plt.subplots" in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source
    assert set(notebook.metadata["bindf"]["generated_with"]) == \
        set(make_notebooks.RENDERING_LIBRARIES)


@pytest.mark.parametrize("path", COMMITTED, ids=_ids)
def test_executes_without_error(path: Path, executed: Any) -> None:
    fresh = executed(path)
    assert make_notebooks.problems(fresh) == []
    committed = nbformat.read(path, as_version=4)
    # Same cells produce the same kinds of text output, whatever the library versions.
    kinds = [[kind for kind, _ in cell] for cell in make_notebooks.text_outputs(fresh)]
    assert kinds == [[kind for kind, _ in cell]
                     for cell in make_notebooks.text_outputs(committed)]


@pytest.mark.parametrize("path", COMMITTED, ids=_ids)
def test_outputs_are_current(path: Path, executed: Any) -> None:
    committed = nbformat.read(path, as_version=4)
    recorded = committed.metadata["bindf"]["generated_with"]
    installed = make_notebooks.library_versions()
    if recorded != installed:
        differ = {name: (recorded.get(name), installed[name]) for name in installed
                  if recorded.get(name) != installed[name]}
        pytest.skip(f"outputs were rendered with other library versions {differ} "
                    "(recorded, installed); exact text is compared under the same versions")
    fresh = make_notebooks.text_outputs(executed(path))
    stale = make_notebooks.text_outputs(committed)
    sources = [c.source for c in committed.cells if c.cell_type == "code"]
    for source, now, before in zip(sources, fresh, stale):
        if now != before:
            diff = difflib.unified_diff(_lines(before), _lines(now), "committed", "fresh",
                                        lineterm="")
            pytest.fail(f"{path.name}: outputs of the cell\n{source}\nare stale; run "
                        f"python notebooks/make_notebooks.py {path.name}\n"
                        + "\n".join(list(diff)[:60]))


def _lines(outputs: list[tuple[str, str]]) -> list[str]:
    return [f"[{kind}] {line}" for kind, text in outputs for line in text.splitlines()]


def test_staleness_is_detected() -> None:
    """The comparison sees a changed number in a text output, and ignores images,
    execution counts and the split of a stream into messages."""
    notebook = nbformat.read(NOTEBOOK_DIR / "quickstart_astropix.ipynb", as_version=4)
    changed = copy.deepcopy(notebook)
    cell = next(c for c in changed.cells if c.cell_type == "code"
                and any(o.output_type == "stream" for o in c.outputs))
    stream = next(o for o in cell.outputs if o.output_type == "stream")
    stream.text = stream.text.replace("776", "775")
    assert make_notebooks.text_outputs(changed) != make_notebooks.text_outputs(notebook)

    cosmetic = copy.deepcopy(notebook)
    for cell in cosmetic.cells:
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        for output in cell.outputs:
            if "image/png" in output.get("data", {}):
                output.data["image/png"] = "iVBORw0KGgo="
        split = []
        for output in cell.outputs:  # one print arriving as two messages
            if output.output_type == "stream" and len(output.text) > 1:
                half = len(output.text) // 2
                first, second = copy.deepcopy(output), copy.deepcopy(output)
                first.text, second.text = output.text[:half], output.text[half:]
                split += [first, second]
            else:
                split.append(output)
        cell.outputs = split
    assert make_notebooks.text_outputs(cosmetic) == make_notebooks.text_outputs(notebook)
