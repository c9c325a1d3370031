"""bindf on dask: ``bindf.dask.read("runs/*.bin")`` → a lazy ``dask.dataframe.DataFrame``.

>>> import bindf.dask
>>> ddf = bindf.dask.read_spectro("s3://lab/photons/*.bin", blocksize="256 MiB",
...                               include_file_paths="file",
...                               storage_options={"anon": True})
>>> ddf.groupby("file").channel.value_counts().compute()

Needs ``pip install 'bindf[dask]'``; ``import bindf`` alone never imports dask. See
:mod:`bindf.frontends.dask` for how files are cut into partitions.
"""

from __future__ import annotations

try:
    import dask.dataframe  # noqa: F401
except ImportError:
    from .errors import missing_dependency

    raise missing_dependency("dask", "dask") from None

from typing import Any

from .frontends.dask import (
    DEFAULT_BLOCKSIZE,
    Partition,
    read,
    read_records,
    to_parquet,
)


def __getattr__(name: str) -> Any:
    # bindf.dask.read_<format> for every registered format, plugins included.
    from .frontends import dask as _frontend

    return getattr(_frontend, name)


def __dir__() -> list[str]:
    from .registry import format_names

    return sorted(set(globals()) | {f"read_{n}" for n in format_names()})


__all__ = ["DEFAULT_BLOCKSIZE", "Partition", "read", "read_records", "to_parquet"]
