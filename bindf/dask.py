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

from .frontends.dask import (
    DEFAULT_BLOCKSIZE,
    Partition,
    read,
    read_apx,
    read_it02,
    read_records,
    read_sp01,
    read_spectro,
    read_spf1,
    to_parquet,
)

__all__ = [
    "DEFAULT_BLOCKSIZE",
    "Partition",
    "read",
    "read_apx",
    "read_it02",
    "read_records",
    "read_sp01",
    "read_spectro",
    "read_spf1",
    "to_parquet",
]
