"""Public functions show their real parameters (``inspect.signature``, Shift-Tab, IDEs),
misspelt pandas-style names get a hint, and the typing stub is current."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest

import bindf
from bindf import _stubgen
from bindf._params import COMMON
from bindf.registry import BUILTIN


def _functions():
    for name in bindf.registry.format_names():
        yield getattr(bindf, f"read_{name}")
        yield getattr(bindf, f"scan_{name}")
        yield getattr(pd, f"read_{name}")
        yield getattr(pl, f"read_{name}")
        yield getattr(pl, f"scan_{name}")


def test_no_public_reader_or_scan_hides_behind_kwargs() -> None:
    for function in _functions():
        params = inspect.signature(function).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), function
        assert list(params)[0] == "source"
        assert "on_error" in params and "batch_size" in params


def test_common_parameters_and_format_options_are_shown() -> None:
    read_names = set(inspect.signature(bindf.read_apx).parameters)
    assert {p.name for p in COMMON if p.on_read} <= read_names
    assert {"level", "threads", "chunk_bytes"} <= read_names
    assert {"layout", "fill_gaps"} <= set(inspect.signature(bindf.read_it02).parameters)
    assert {"layout", "fill_gaps"} <= set(inspect.signature(pl.scan_it02).parameters)
    assert "output" not in inspect.signature(pd.read_it02).parameters  # fixed: pandas
    assert inspect.signature(bindf.read_it02).parameters["fill_gaps"].default is False
    assert inspect.isroutine(bindf.read_apx)  # help() documents it as a function
    assert "Hit columns" in inspect.getdoc(bindf.read_apx)
    assert "n_rows" in inspect.getdoc(bindf.read_apx)


@pytest.mark.parametrize(("wrong", "right"), [("nrows", "n_rows"), ("usecols", "columns"),
                                              ("chunk_size", "chunksize"), ("levl", "level")])
def test_misspelt_names_get_a_hint(wrong: str, right: str) -> None:
    with pytest.raises(TypeError, match=f"unexpected option.*{wrong!r}.*did you mean {right}="):
        bindf.read_apx("never-read.apx", **{wrong: 1})


@pytest.mark.parametrize(("name", "instead"), [("nrows", "did you mean n_rows="),
                                               ("columns", r"\.select"),
                                               ("output", r"\.collect\(\)"),
                                               ("chunksize", "did you mean batch_size=")])
def test_scans_point_to_polars_for_what_polars_does(name: str, instead: str) -> None:
    # refused before the file is opened, by the format's scan and by bindf.scan alike
    for scan in (bindf.scan_apx, bindf.scan):
        with pytest.raises(TypeError, match=f"unexpected option.*{name!r}.*{instead}"):
            scan("never-read.apx", **{name: 1})


def test_typing_stub_is_current() -> None:
    committed = (inspect.getfile(bindf).replace("__init__.py", "__init__.pyi"))
    with open(committed, encoding="utf-8") as f:
        assert f.read() == _stubgen.stub(), "run: python -m bindf._stubgen"
    text = _stubgen.stub()
    for spec in BUILTIN:
        if spec.public:
            assert f"def read_{spec.name}(" in text and f"def scan_{spec.name}(" in text
    assert 'output: Literal["polars"], chunksize: None = ...' in text
    with open(committed.replace("__init__.pyi", "dask.pyi"), encoding="utf-8") as f:
        assert f.read() == _stubgen.dask_stub(), "run: python -m bindf._stubgen"


def test_generic_read_hints_too(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "x.bin"  # refused before the file is opened
    with pytest.raises(TypeError, match="'nrows'; did you mean n_rows="):
        bindf.read(path, nrows=3)
    with pytest.raises(TypeError, match=r"'usecols'; polars picks a scan's columns: \.select"):
        bindf.scan(path, usecols=["g"])


@pytest.mark.parametrize("fmt", ["apx", "astep"])
def test_declared_option_defaults_are_the_readers(fmt: str) -> None:
    """The registry declares options before any format module is imported; a default it
    shows (signatures, stubs, docs) must be the one the reader uses when none is given."""
    import importlib

    spec = bindf.get_format(fmt)
    module = importlib.import_module(f"bindf.formats.{fmt}")
    declared = {o.name: o.default for o in spec.options}
    assert declared["chunk_bytes"] == module.DEFAULT_CHUNK_BYTES
    assert inspect.signature(getattr(bindf, f"read_{fmt}")).parameters[
        "chunk_bytes"].default == module.DEFAULT_CHUNK_BYTES


def _stub_tree() -> Any:
    import ast

    with open(inspect.getfile(bindf).replace("__init__.py", "__init__.pyi"),
              encoding="utf-8") as f:
        return ast.parse(f.read())


def test_every_stub_function_has_the_runtime_parameters() -> None:
    """Each function of the stub takes the parameters of the object ``bindf`` has at
    run time, in order and of the same kind (a writer's ``hits=`` was ``frame=`` there,
    its options hidden behind ``**options``)."""
    import ast

    kinds = {"POSITIONAL_ONLY": "positional", "POSITIONAL_OR_KEYWORD": "positional",
             "KEYWORD_ONLY": "keyword", "VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}
    checked = 0
    for node in _stub_tree().body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("__"):
            continue
        args = node.args
        stubbed = [(a.arg, "positional") for a in args.posonlyargs + args.args]
        stubbed += [(args.vararg.arg, "*")] if args.vararg else []
        stubbed += [(a.arg, "keyword") for a in args.kwonlyargs]
        stubbed += [(args.kwarg.arg, "**")] if args.kwarg else []
        runtime = [(p.name, kinds[p.kind.name])
                   for p in inspect.signature(getattr(bindf, node.name)).parameters.values()]
        assert stubbed == runtime, node.name
        checked += 1
    assert checked > 40


def test_every_public_name_is_in_the_stub_and_exists() -> None:
    """Names a type checker learns from the stub are the names ``bindf`` has (the stub
    once declared a ``bindf.Source`` that did not exist, and left out ``ingest``)."""
    import ast

    declared = set()
    for node in _stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            declared.add(node.name)
        elif isinstance(node, ast.ImportFrom):
            declared.update(a.asname for a in node.names if a.asname == a.name or (
                a.asname and not a.asname.startswith("_")))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            declared.add(target.id)
    declared -= {"__getattr__"}
    for name in sorted(declared):
        assert hasattr(bindf, name), name
    # the functions of formats added from outside (the tests' plugins, formats other
    # tests registered for a while) exist only at run time (the stub's __getattr__)
    from bindf.registry import RESERVED_NAMES

    own = {spec.name for spec in BUILTIN} | RESERVED_NAMES
    expected = {n for n in bindf.__all__
                if not ((m := re.match(r"(read|scan|write)_(\w+)$", n)) and m.group(2) not in own)}
    assert expected - declared == set()


@pytest.mark.parametrize("call", ["read", "open", "scan", "read_header"])
def test_generic_functions_hint_a_misspelt_option(call: str) -> None:
    """The format-generic functions pass unknown names to the format's reader, whose
    error hints the near miss among its own options and the common ones."""
    sample = str(Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin")
    for wrong, right in (("layot", "layout"), ("colums", "columns")):
        if call in ("scan", "read_header") and right == "columns":
            continue  # not parameters of those: see the scan hints
        with pytest.raises(TypeError, match=f"'{wrong}'.*did you mean {right}="):
            getattr(bindf, call)(sample, format="it02", **{wrong: 1})
