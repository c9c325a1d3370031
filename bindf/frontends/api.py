"""The per-format public functions, generated from the registry.

For every registered :class:`~bindf.registry.FormatSpec` this makes ``read_<name>``,
``scan_<name>``, ``write_<name>`` (when the format has a writer), the pandas/polars
variants (``pd.read_<name>``, ``pl.read_<name>``, ``pl.scan_<name>``) and
``bindf.dask.read_<name>``. There is no per-format line anywhere else.

The functions are :class:`FormatFunction` objects: callables whose signature (the common
parameters of :data:`bindf._params.COMMON` plus the format's own options, no
``**kwargs``) and docstring are computed on first look, so that making them imports no
format module; the format's module is imported when a function is first called (or its
docstring first read). They present themselves as routines, so ``help()``, Jupyter's
Shift-Tab and ``inspect.signature`` show the real parameters; the typing stub
``bindf/__init__.pyi`` gives IDEs and type checkers the same, with return types that
follow ``output=``/``chunksize=``.
"""

from __future__ import annotations

import inspect
from typing import Any

from .._inputs import Sources
from .._params import DASK_HINTS, SCAN_HINTS, check_names, docstring, parameters, signature
from .._warnings import warn
from ..errors import BindfWarning
from ..registry import FormatSpec, get_format

#: kind → (what it returns, for the signature; which parameter table applies)
_KINDS = {
    "read": "pandas.DataFrame | polars.DataFrame | pyarrow.Table | ChunkedReader",
    "scan": "polars.LazyFrame",
    "dask": "dask.dataframe.DataFrame",
}
_FIXED_OUTPUT_RETURNS = {"pandas": "pandas.DataFrame", "polars": "polars.DataFrame"}


#: The default of ``source``: a call without one is refused with bindf's message.
_NO_SOURCE: Any = object()


class FormatFunction:
    """``read_<name>`` / ``scan_<name>`` / ``write_<name>`` / ``bindf.dask.read_<name>``
    of one format (``output`` fixed for ``pd.read_<name>`` / ``pl.read_<name>``)."""

    def __init__(self, kind: str, format: str, output: str | None = None) -> None:
        self.kind = kind
        self.format = format
        self.output = output
        prefix = {"read": "read", "scan": "scan", "dask": "read", "write": "write"}[kind]
        self.__name__ = self.__qualname__ = f"{prefix}_{format}"
        self.__module__ = "bindf.dask" if kind == "dask" else "bindf"

    # Present as a routine (inspect.isroutine: a descriptor without __set__), so that
    # help() documents the function rather than this class; as a class attribute it is
    # returned as is, never bound.
    def __get__(self, instance: Any, owner: Any = None) -> FormatFunction:
        return self

    @property
    def spec(self) -> FormatSpec:
        return get_format(self.format)

    def _parameters(self) -> list[Any]:
        params = parameters(self.kind if self.kind != "write" else "read", self.spec.options)
        if self.output is not None:
            params = [p for p in params if p.name not in self._fixed_output_drops()]
        return params

    def _fixed_output_drops(self) -> tuple[str, ...]:
        """Parameters ``pd.read_<name>``/``pl.read_<name>`` do not show: ``output``
        (fixed), and ``dtype_backend`` where the output is not pandas."""
        return ("output",) if self.output == "pandas" else ("output", "dtype_backend")

    @property
    def __signature__(self) -> inspect.Signature:  # noqa: PLW3201 - read by inspect
        if self.kind == "write":
            writer = self.spec.writer_function()
            return inspect.signature(writer)
        returns = _FIXED_OUTPUT_RETURNS.get(self.output or "", _KINDS[self.kind])
        sig = signature(self.kind, self.spec.options, returns)
        if self.output is not None:
            drops = self._fixed_output_drops()
            sig = sig.replace(parameters=[p for p in sig.parameters.values()
                                          if p.name not in drops])
        return sig

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        spec = self.spec
        if self.kind == "write":
            return inspect.getdoc(spec.writer_function()) or ""
        what = {"read": "Read", "scan": "Lazily scan (a polars LazyFrame)",
                "dask": "Read into a lazy dask DataFrame"}[self.kind]
        head = f"{what} {spec.description} file(s)."
        reader_doc = inspect.cleandoc(spec.reader_class().__doc__ or "")
        params = docstring(self.kind, self.spec.options,
                           drop=self._fixed_output_drops() if self.output else ())
        if self.output is not None:
            head += f" Returns a {self.output} frame."
        return "\n\n".join(part for part in (head, reader_doc, params) if part)

    def __repr__(self) -> str:
        return f"<bindf function {self.__name__}>"

    def __call__(self, source: Sources = _NO_SOURCE, *args: Any, **kwargs: Any) -> Any:
        if source is _NO_SOURCE:  # (Python's own message names FormatFunction.__call__)
            if self.kind == "write":
                raise TypeError(f"{self.__name__}() needs the output (a path or a binary "
                                "file object) as its first argument")
            check_names(self.__name__, kwargs, [p.name for p in self._parameters()])
            raise TypeError(f"{self.__name__}() needs the source (a path, a glob, a URL, "
                            "bytes, a file object or a list of those) as its first argument")
        if self.kind == "write":
            writer = self.spec.writer_function()
            return writer(source, *args, **kwargs)
        if args:
            raise TypeError(f"{self.__name__}() takes one positional argument (the source); "
                            "pass the others by keyword")
        if "format" in kwargs:
            raise TypeError(f"{self.__name__}() reads {self.format} files; use "
                            f"bindf.{'dask.' if self.kind == 'dask' else ''}"
                            f"{'scan' if self.kind == 'scan' else 'read'}(format=...)")
        allowed = [p.name for p in self._parameters()]
        check_names(self.__name__, kwargs, allowed,
                    hints={"scan": SCAN_HINTS, "dask": DASK_HINTS}.get(self.kind))
        if self.kind == "read":
            from .read import read

            if self.output is not None:
                kwargs["output"] = self.output
            return read(source, format=self.format, **kwargs)
        if self.kind == "scan":
            from .polars import scan

            return scan(source, format=self.format, **kwargs)
        from .dask import read as dask_read

        return dask_read(source, format=self.format, **kwargs)


def functions_for(spec_name: str, *, has_writer: bool) -> dict[str, FormatFunction]:
    """The ``bindf`` namespace entries of one format."""
    out = {f"read_{spec_name}": FormatFunction("read", spec_name),
           f"scan_{spec_name}": FormatFunction("scan", spec_name)}
    if has_writer:
        out[f"write_{spec_name}"] = FormatFunction("write", spec_name)
    return out


def register_library_functions(name: str) -> None:
    """Add ``pd.read_<name>``, ``pl.read_<name>`` and ``pl.scan_<name>``; an attribute
    that already exists there is never overwritten (unless it is bindf's own): a format
    called ``csv`` keeps ``pd.read_csv`` pandas' own, with a warning that says so, and
    is read with ``bindf.read_csv``."""
    import pandas as pd
    import polars as pl

    wanted = [(pd, f"read_{name}", FormatFunction("read", name, output="pandas")),
              (pl, f"read_{name}", FormatFunction("read", name, output="polars")),
              (pl, f"scan_{name}", FormatFunction("scan", name))]
    taken = []
    for module, attribute, function in wanted:
        existing = getattr(module, attribute, None)
        if existing is None or isinstance(existing, FormatFunction):
            setattr(module, attribute, function)
        else:
            taken.append((module.__name__, attribute))
    if taken:
        names = ", ".join(f"{library}.{attribute}" for library, attribute in taken)
        instead = " and ".join(sorted({f"bindf.{attribute}" for _, attribute in taken}))
        one = len(taken) == 1
        warn(BindfWarning(f"format {name!r}: {names} {'is' if one else 'are'} pandas' or "
                          f"polars' own and left as {'it is' if one else 'they are'}; read "
                          f"the format with {instead}"))
