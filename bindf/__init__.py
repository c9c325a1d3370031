"""bindf: binary files of scientific instruments as pandas, polars and Arrow frames.

>>> import bindf, pandas as pd, polars as pl
>>> df = pd.read_apx("run.apx")                       # registered on import
>>> lf = pl.scan_it02("runs/*.bin").filter(pl.col("ch2") > 0)
>>> df.bindf.header["readout_uid"]

Importing bindf registers ``read_<format>`` on pandas (returning pandas) and
``read_<format>``/``scan_<format>`` on polars for every registered format (built-ins,
installed plugins, and later :func:`register_format` calls), without overwriting
anything that already exists there, plus the ``bindf`` accessor on pandas and polars
frames. No format module and no dask is imported until it is used.
"""

from __future__ import annotations

from typing import Any

from ._dataset import read_dataset
from ._follow import Follower, follow
from ._ingest import DatasetLockedError, IngestReport, ingest
from ._ingest import watch as watch_ingest
from ._version import __version__
from .accessors import register_accessors
from .errors import (
    BindfError,
    BindfWarning,
    ColumnNotFoundError,
    CorruptDataError,
    CorruptDataWarning,
    FileChangedWarning,
    HeaderError,
    TruncatedFileWarning,
    TruncatedHeaderError,
    UnknownFormatError,
    UnsupportedReadoutError,
)
from .formats.fixed_format import FixedRecordFormat
from .frontends.api import FormatFunction, functions_for, register_library_functions
from .frontends.file import BindfFile, open  # noqa: A004 - bindf.open, like io.open
from .frontends.headers import read_headers
from .frontends.polars import scan
from .frontends.read import iter_batches, read, read_header
from .frontends.records import read_records, scan_records
from .parquet import read_parquet, to_parquet
from .registry import _BY_NAME as _REGISTERED
from .registry import _LISTENERS as _REGISTRY_LISTENERS
from .registry import (
    FormatSpec,
    detect_format,
    format_names,
    get_format,
    list_formats,
    register_format,
)


def _add_format_functions(name: str, has_writer: bool) -> None:
    """``bindf.read_<name>`` & co. and the pandas/polars functions of one format."""
    for attribute, function in functions_for(name, has_writer=has_writer).items():
        globals()[attribute] = function
        if attribute not in __all__:
            __all__.append(attribute)
    register_library_functions(name)


def _on_register(spec: FormatSpec) -> None:
    if spec.public:
        _add_format_functions(spec.name, spec.writer is not None)


def __getattr__(name: str) -> Any:
    # ``bindf.dask`` without ``import bindf.dask``; dask is imported only then.
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    if name == "FORMATS":  # every registered spec, current after later registrations
        return tuple(list_formats())
    if name == "_PUBLIC_FORMATS":
        return tuple(format_names())
    if name == "convert_apx_log":
        from .formats.apx_log import convert_apx_log

        return convert_apx_log
    if name.startswith("write_") and name[6:] in format_names():
        # a plugin whose spec is not loaded yet: is there a writer?
        spec = get_format(name[6:])
        if spec.writer is not None:
            return FormatFunction("write", spec.name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "BindfError",
    "BindfWarning",
    "ColumnNotFoundError",
    "CorruptDataError",
    "CorruptDataWarning",
    "FixedRecordFormat",
    "FormatSpec",
    "HeaderError",
    "TruncatedFileWarning",
    "TruncatedHeaderError",
    "UnknownFormatError",
    "UnsupportedReadoutError",
    "convert_apx_log",
    "BindfFile",
    "open",
    "detect_format",
    "discover_plugins",
    "get_format",
    "iter_batches",
    "list_formats",
    "read",
    "read_header",
    "read_headers",
    "read_parquet",
    "read_records",
    "register_format",
    "scan",
    "scan_records",
    "to_parquet",
    "DatasetLockedError",
    "IngestReport",
    "ingest",
    "watch_ingest",
    "follow",
    "Follower",
    "FileChangedWarning",
    "read_dataset",
]

def discover_plugins() -> list[str]:
    """Declare the formats of installed plugins (entry-point group ``bindf.formats``):
    ``read_<name>`` & co. exist at once, the plugin's module is imported on first use.
    ``import bindf`` does this; call it again after installing a plugin into a running
    interpreter. Returns the names found this time."""
    from .registry import discover_plugins as declare

    names = declare()
    for name in names:
        _add_format_functions(name, has_writer=False)
    return names


def _install() -> None:
    for spec in list(_REGISTERED.values()):
        _on_register(spec)
    _REGISTRY_LISTENERS.append(_on_register)
    discover_plugins()
    register_accessors()


_install()
