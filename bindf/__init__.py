"""bindf: binary files of scientific instruments as pandas, polars and Arrow frames.

>>> import bindf, pandas as pd, polars as pl
>>> df = pd.read_apx("run.apx")                       # registered on import
>>> lf = pl.scan_it02("runs/*.bin").filter(pl.col("ch2") > 0)
>>> df.bindf.header["readout_uid"]

Importing bindf registers ``read_<format>`` on pandas (returning pandas) and
``read_<format>``/``scan_<format>`` on polars, without overwriting anything that already
exists there, plus the ``bindf`` accessor on pandas and polars frames.
"""

from __future__ import annotations

from ._version import __version__
from .errors import (
    BindfError,
    BindfWarning,
    CorruptDataError,
    CorruptDataWarning,
    HeaderError,
    TruncatedFileWarning,
    UnknownFormatError,
    UnsupportedReadoutError,
)
from .formats.apx import write_apx
from .formats.apx_log import convert_apx_log
from .formats.it02 import write_it02
from .formats.sp01 import write_sp01
from .formats.spectro import write_spectro
from .formats.spf1 import write_spf1
from .frontends.accessors import register_accessors
from .frontends.file import BindfFile, open  # noqa: A004 - bindf.open, like io.open
from .frontends.headers import read_headers
from .frontends.polars import format_scanner, scan
from .frontends.read import format_reader, iter_batches, read, read_header
from .frontends.records import read_records, scan_records
from .parquet import read_parquet, to_parquet
from .registry import FORMATS, detect_format, get_format

#: The formats that get ``read_<name>``/``scan_<name>`` functions.
_PUBLIC_FORMATS = ("apx", "apx_log", "it02", "spectro", "sp01", "spf1")

read_apx = format_reader("apx", get_format("apx").reader_class().__doc__ or "")
read_it02 = format_reader("it02", get_format("it02").reader_class().__doc__ or "")
read_spectro = format_reader("spectro", get_format("spectro").reader_class().__doc__ or "")
scan_apx = format_scanner("apx", read_apx.__doc__ or "")
read_apx_log = format_reader("apx_log", get_format("apx_log").reader_class().__doc__ or "")
scan_apx_log = format_scanner("apx_log", read_apx_log.__doc__ or "")
scan_it02 = format_scanner("it02", read_it02.__doc__ or "")
scan_spectro = format_scanner("spectro", read_spectro.__doc__ or "")
read_sp01 = format_reader("sp01", get_format("sp01").reader_class().__doc__ or "")
scan_sp01 = format_scanner("sp01", read_sp01.__doc__ or "")
read_spf1 = format_reader("spf1", get_format("spf1").reader_class().__doc__ or "")
scan_spf1 = format_scanner("spf1", read_spf1.__doc__ or "")


def _register_library_functions() -> None:
    """Add ``pd.read_*``, ``pl.read_*`` and ``pl.scan_*``; never overwrite an attribute."""
    import functools

    import pandas as pd
    import polars as pl

    for name in _PUBLIC_FORMATS:
        reader = globals()[f"read_{name}"]
        for module, output in ((pd, "pandas"), (pl, "polars")):
            attr = f"read_{name}"
            if not hasattr(module, attr):
                bound = functools.partial(reader, output=output)
                functools.update_wrapper(bound, reader)
                setattr(module, attr, bound)
        if not hasattr(pl, f"scan_{name}"):
            setattr(pl, f"scan_{name}", globals()[f"scan_{name}"])


_register_library_functions()
register_accessors()


def __getattr__(name: str):
    # ``bindf.dask`` without ``import bindf.dask``; dask is imported only then.
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "__version__",
    "FORMATS",
    "BindfError",
    "BindfWarning",
    "CorruptDataError",
    "CorruptDataWarning",
    "HeaderError",
    "TruncatedFileWarning",
    "UnknownFormatError",
    "UnsupportedReadoutError",
    "BindfFile",
    "open",
    "detect_format",
    "get_format",
    "iter_batches",
    "read",
    "read_apx",
    "read_header",
    "read_headers",
    "read_it02",
    "read_sp01",
    "read_spectro",
    "read_spf1",
    "scan",
    "scan_apx",
    "scan_it02",
    "scan_sp01",
    "scan_spectro",
    "scan_spf1",
    "write_apx",
    "read_apx_log",
    "scan_apx_log",
    "convert_apx_log",
    "write_it02",
    "write_sp01",
    "write_spectro",
    "write_spf1",
    "read_parquet",
    "read_records",
    "scan_records",
    "to_parquet",
]
