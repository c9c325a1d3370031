"""Public functions show their real parameters (``inspect.signature``, Shift-Tab, IDEs),
misspelt pandas-style names get a hint, and the typing stub is current."""

from __future__ import annotations

import inspect

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


@pytest.mark.parametrize(("name", "instead"), [("n_rows", r"\.head\(n\)"),
                                               ("nrows", r"\.head\(n\)"),
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
