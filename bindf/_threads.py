"""How many threads a read may use (the ``threads=`` parameter of every reader).

One meaning everywhere: ``threads`` is the number of threads one read call may keep
busy decoding, or ``None`` for the default. The default is the number of cores this
process may use (``os.process_cpu_count()`` where Python has it, else the CPU affinity
mask), unless

* the environment variable ``BINDF_NUM_THREADS`` says otherwise;
* the read runs inside a dask worker: one thread (dask already runs one task per core;
  pass ``threads=`` explicitly to override);
* the read runs inside a polars scan: at most polars' own thread pool size, so the two
  pools do not oversubscribe the machine (see :mod:`bindf.frontends.polars`).

``threads=False`` (the AstroPix readers' former prefetch switch) still works and means
one thread, no prefetch worker; ``threads=True`` means the default.
"""

from __future__ import annotations

import operator
import os

#: Environment variable that sets the default number of threads.
ENV_VAR = "BINDF_NUM_THREADS"


def usable_cores() -> int:
    """Cores this process may run on."""
    count = getattr(os, "process_cpu_count", None)  # Python >= 3.13
    if count is not None:
        return max(1, count() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def in_dask_worker() -> bool:
    """True inside a task of a ``dask.distributed`` worker (without importing dask)."""
    import sys

    if "distributed" not in sys.modules:  # never imported: cannot be inside a worker
        return False
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):  # ValueError: "No worker found"
        return False
    return True


def default_threads() -> int:
    """The number of threads a read uses when ``threads=None``."""
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a positive integer, not {text!r}") from None
        if value < 1:
            raise ValueError(f"{ENV_VAR} must be a positive integer, not {text!r}")
        return value
    if in_dask_worker():
        return 1
    return usable_cores()


def resolve_threads(threads: int | bool | None) -> int:
    """``threads=`` as given by a user → a positive thread count."""
    if threads is None or threads is True:
        return default_threads()
    if threads is False:
        return 1
    try:
        threads = operator.index(threads)
    except TypeError:
        raise TypeError(f"threads must be an int or None, not {type(threads).__name__}") from None
    if threads < 1:
        raise ValueError(f"threads must be >= 1 (or None for the default), not {threads}")
    return threads
