"""What :func:`bindf.ingest` reads: source files, and the header columns' types.

Sources are local paths, globs, or folders searched recursively by file-name pattern.
Header columns must have one type across every part of a dataset (a plain
``pl.scan_parquet`` over the parts needs identical schemas), so an undeclared type is
inferred once from the headers and then kept in the manifest.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._compressed import COMPRESSIONS
from ._ingest_worker import HEADER_COLUMN_TYPES, SOURCE_COLUMN
from ._warnings import WarningSink
from .errors import BindfError

#: Files a folder source picks up by default: the registry's extensions, plus ``.bin``,
#: the extension FLIM LABS exports carry (the registry detects those by magic bytes),
#: each also compressed (``run.apx.gz``).
FLIM_EXTENSION = ".bin"


def default_patterns() -> tuple[str, ...]:
    from .registry import FORMATS

    extensions = {ext for spec in FORMATS for ext in spec.extensions} | {FLIM_EXTENSION}
    return tuple(sorted(f"*{ext}{compressed}" for ext in extensions
                        for compressed in ("", *COMPRESSIONS)))


def find_sources(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                 pattern: str | Sequence[str] | None = None,
                 exclude: str | None = None) -> list[str]:
    """Absolute paths of the source files: paths, globs, and folders searched
    recursively for names matching ``pattern`` (default: :func:`default_patterns`).
    Hidden files and folders (``.name``) and anything under ``exclude`` (the dataset
    itself) are skipped in folders. Sorted, without duplicates."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    patterns = ((pattern,) if isinstance(pattern, str) else tuple(pattern)) if pattern \
        else default_patterns()
    exclude = os.path.abspath(exclude) if exclude else None
    found: set[str] = set()
    for item in items:
        path = os.path.expanduser(os.fspath(item))
        if "://" in path:
            raise ValueError(f"{path}: bindf.ingest reads local (or mounted) files only")
        if os.path.isdir(path):
            found.update(_walk(path, patterns, exclude))
        elif os.path.exists(path):
            found.add(os.path.abspath(path))
        elif glob.has_magic(path):
            matches = glob.glob(path, recursive=True)
            if not matches:
                raise FileNotFoundError(f"no files match {path!r}")
            for match in matches:
                if os.path.isdir(match):
                    found.update(_walk(match, patterns, exclude))
                elif os.path.isfile(match):
                    found.add(os.path.abspath(match))
        else:
            raise FileNotFoundError(2, "No such file or directory", path)
    return sorted(found)


def _walk(folder: str, patterns: tuple[str, ...], exclude: str | None) -> Iterator[str]:
    for root, dirs, files in os.walk(os.path.abspath(folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.join(root, d) != exclude)
        for name in files:
            if not name.startswith(".") and any(fnmatch.fnmatch(name, p) for p in patterns):
                yield os.path.join(root, name)



def header_column_spec(header_columns: Sequence[str] | Mapping[str, str | None] | None
                        ) -> dict[str, str | None]:
    """``["a.b", "c:int64"]`` or ``{"a.b": None, "c": "int64"}`` → name → type or None."""
    if not header_columns:
        return {}
    if isinstance(header_columns, str):
        header_columns = [header_columns]
    if isinstance(header_columns, Mapping):
        spec = {str(k): v for k, v in header_columns.items()}
    else:
        spec = {}
        for item in header_columns:
            name, _, kind = str(item).partition(":")
            spec[name.strip()] = kind.strip() or None
    for name, kind in spec.items():
        if kind is not None and kind not in HEADER_COLUMN_TYPES:
            raise ValueError(f"header column {name!r}: unknown type {kind!r}; use one of "
                             f"{sorted(HEADER_COLUMN_TYPES)}")
        if not name or name == SOURCE_COLUMN:
            raise ValueError(f"{name!r} cannot be a header column name")
    return spec


def infer_column_type(values: Iterable[Any]) -> str:
    """The column type that holds every value: bool, int64, float64, else string."""
    kinds = set()
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            kinds.add("bool")
        elif isinstance(value, int):
            kinds.add("int64" if -2**63 <= value < 2**63 else "string")
        elif isinstance(value, float):
            kinds.add("float64")
        else:
            kinds.add("string")
    if kinds == {"bool"}:
        return "bool"
    if kinds == {"int64"}:
        return "int64"
    if kinds and kinds <= {"int64", "float64"}:
        return "float64"
    return "string"


def read_headers_for_types(paths: list[str], format: str | None,
                  options: dict[str, Any]) -> list[dict[str, Any]]:
    """Headers of ``paths`` for type inference; unreadable files are left out (their
    ingestion records the error), and so are their warnings (it reports them)."""
    import bindf

    from ._params import DATA_ONLY_PARAMS

    options = {k: v for k, v in options.items() if k not in DATA_ONLY_PARAMS}  # a data read's only
    headers = []
    with WarningSink().active():  # (dropped)
        for path in paths:
            with contextlib.suppress(BindfError, OSError, ValueError, TypeError):
                headers.append(bindf.read_header(path, format=format, **options))
    return headers
