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

A count above :func:`max_threads` (four per usable core) is taken as that: reads decode
in memory, so more threads than that only wait, and each would be a thread of its own
(``threads=20000`` once cut a 10 MB file into a part per 30 records, on 250 threads).

Errors handed from one thread to another (a pool task's, kept to be raised by the reader
in file order) must not be held by the frames their traceback holds: by a local
variable, a future or a result object such a frame holds. That is a reference cycle, and
everything those frames hold (a read's preallocated columns, a glob's temporary
decompressed copies) would wait for the garbage collector instead of going when the
error goes (a damaged 70 MB AstroPix run read on two threads: 576 MB of columns). So the
code that stores such an error lets go of it before raising (``error, holder.error =
holder.error, None``), raises a local in ``try: raise error`` / ``finally: del error``,
and drops a failed future before its error leaves the frame, as ``concurrent.futures``
itself does. ``tests/test_failed_reads_release_memory.py`` checks that no error of a
failed read is in a cycle.
"""

from __future__ import annotations

import operator
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

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


def max_threads() -> int:
    """The most threads one read uses, whatever ``threads=`` says: four per usable core."""
    return 4 * usable_cores()


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
        return min(value, max_threads())
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
    if threads <= 4:  # within max_threads() on any machine: no system call (each file of
        return threads  # a glob of thousands resolves its share, 1)
    return min(threads, max_threads())


# -- thread pools kept for the life of the process ---------------------------------------

class Lane:
    """At most ``limit`` tasks at a time on a pool shared with other lanes: what a pool of
    ``limit`` threads of its own gives (``submit`` returns a future that can be cancelled
    until its task starts), without threads of its own. A lane's tasks run in
    submission order, by at most ``limit`` runners that each take the next task when
    theirs ends."""

    def __init__(self, pool: ThreadPoolExecutor, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._lock = threading.Lock()
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._runners = 0

    def submit(self, task: Callable[..., R], *args: Any) -> Future[R]:
        future: Future[R] = Future()
        with self._lock:
            self._queue.append((future, task, args))
            start = self._runners < self._limit
            if start:
                self._runners += 1
        if start:
            try:
                self._pool.submit(self._run)
            except BaseException:  # (a pool after interpreter shutdown, no thread left):
                with self._lock:  # undone, or the lane would wait for a runner for good
                    self._runners -= 1
                    self._queue = deque(item for item in self._queue if item[0] is not future)
                raise
        return future

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._runners -= 1
                    return
                future, task, args = self._queue.popleft()
            if not future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            try:
                result = task(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)
            else:
                future.set_result(result)
                del result
            # (an error's traceback holds this frame: it must not hold the future that
            # holds the error, nor the task's arguments; see the module docstring)
            del future, task, args


#: One pool per role; its threads are made as the role's lanes need them, up to this many.
_POOL_THREADS = 1024
_POOLS: dict[str, ThreadPoolExecutor] = {}
_LANES: dict[tuple[str, int], Lane] = {}
_EXECUTORS_LOCK = threading.Lock()


def shared_executor(role: str, workers: int) -> Lane:
    """The process's lane of ``workers`` threads for one kind of task, ``role`` (also the
    threads' name prefix), created on first use and shared by every later read.

    Why not a pool per read: a thread's allocations come from its own heap (mimalloc,
    Arrow's memory pool, and glibc's per-thread arenas alike). The threads of a pool
    made for one read die with it, and the next read's new threads take fresh pages from
    the operating system, one page fault and one page zeroed by the kernel per 4 KiB of
    output, instead of reusing the memory earlier reads released. Reading 8 × 50 MB
    spectroscopy files on two threads, the kernel's page zeroing fell from 24 % to 11 %
    of the CPU time with kept threads.

    One pool per role, so that a task never waits for tasks queued behind it on its own
    pool; a lane per thread count over it, so that reads with other ``threads=`` (or
    other shares of them per file) reuse the role's threads instead of keeping a pool of
    idle threads each (reads of a 50 MB file and of two, with ``threads=1 … 8``, kept 62
    idle threads and their heaps; now 15).
    Callers never shut a shared pool down: they cancel or wait for their own futures
    (:func:`settle`). A forked child starts with none (threads do not survive a fork).
    """
    key = (role, workers)
    with _EXECUTORS_LOCK:
        lane = _LANES.get(key)
        if lane is None:
            pool = _POOLS.get(role)
            if pool is None:
                pool = _POOLS[role] = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix=role)
            lane = _LANES[key] = Lane(pool, workers)
        return lane


def settle(futures: Iterable[Future[Any]]) -> None:
    """Cancel those of ``futures`` that have not started and wait for the others to end:
    what ``shutdown(wait=True, cancel_futures=True)`` does for a pool of one's own."""
    running = [future for future in futures if not future.cancel()]
    wait(running)


def run_all(pool: Lane, task: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``task(item)`` for every item on ``pool``; the results in order. The first error
    is raised once every task has ended (or was cancelled before it started): no task
    outlives the call, since tasks write into the caller's output."""
    futures = deque(pool.submit(task, item) for item in items)
    results = []
    try:
        while futures:
            results.append(_result_of_last_reference(futures))
        return results
    finally:
        settle(futures)


def _result_of_last_reference(futures: deque[Future[R]]) -> R:
    """The result of the first of ``futures``, taken out of it once done: raised, its
    error leaves no frame holding the future, which holds the error (see the module
    docstring). Interrupted while it waits (Ctrl-C), the future stays, for the caller to
    settle: its task must not outlive the call."""
    future = futures[0]
    try:
        return future.result()
    finally:
        if future.done():
            futures.popleft()
        del future


def read_in_parts(pool: Lane | None, part: Callable[[int], int],
                  sizes: Sequence[int]) -> int:
    """Run ``part(k)`` for every ``k`` of ``sizes`` (each reads up to ``sizes[k]``
    records into its slice of one output and returns how many it read) and return the
    records read before the first short part: what follows a short read (a file that
    shrank) is not known to be real.

    The calling thread runs the first part, then every part that no thread of ``pool``
    (None: no helpers) has started yet (it cancels that task and runs the part itself),
    and then collects the parts the pool's threads ran. So the parts are shared by however
    many pool threads are free (none when all are busy with other files of a multi-file
    read), the caller never waits while a part is left to run, and a task of ``pool`` may
    call this on its own pool without waiting for a task queued behind it. Every part has
    ended when this returns, since they write into the caller's output.
    """
    futures = [] if pool is None else [pool.submit(part, k) for k in range(1, len(sizes))]
    # What each part gave: the records read, or the error raised (raised in part order,
    # so an error after a short part is never seen).
    ran: dict[int, int | BaseException] = {}
    try:
        for k in range(len(sizes)):
            if k == 0 or not futures or futures[k - 1].cancel():
                try:
                    ran[k] = part(k)
                except Exception as exc:
                    ran[k] = exc
        filled = 0
        for k, size in enumerate(sizes):
            if k not in ran:  # (exception(): the pool's error, not raised here)
                ran[k] = futures[k - 1].exception() or futures[k - 1].result()
            got = ran.pop(k)
            if isinstance(got, BaseException):
                error = got
                break
            filled += got
            if got < size:
                return filled
        else:
            return filled
    finally:
        settle(futures)
    # An error: raised with no reference to it left here (see the module docstring)
    ran.clear()
    futures.clear()
    del got
    try:
        raise error
    finally:
        del error


class WaitingTasks:
    """How many tasks were submitted to a pool and have not started yet, counted from any
    thread: :meth:`submitted` before each submission (:meth:`withdrawn` if it failed),
    :meth:`started` first thing in each task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = 0

    def submitted(self) -> None:
        with self._lock:
            self._waiting += 1

    def started(self) -> None:
        with self._lock:
            self._waiting -= 1

    withdrawn = started

    def any(self) -> bool:
        """Whether a task waits (a snapshot: one may start right after)."""
        return self._waiting > 0


#: The smallest part worth a task of its own (a part opens the file and starts a thread).
MIN_PART_BYTES = 1 << 20


def part_bounds(n: int, itemsize: int, threads: int, part_bytes: int) -> list[int]:
    """Record-aligned bounds that cut ``n`` records of ``itemsize`` bytes into parts for
    :func:`read_in_parts`: parts of about ``part_bytes``, so that a thread that finishes
    early takes another part instead of idling while the last one ends, and at least one
    per thread as long as each holds :data:`MIN_PART_BYTES`. Where the cuts fall never
    changes the output."""
    total = n * itemsize
    per_thread = min(threads, max(1, total // MIN_PART_BYTES))
    parts = max(1, min(n, max(per_thread, -(-total // part_bytes))))
    return [n * k // parts for k in range(parts + 1)]


def _forget_executors_after_fork() -> None:
    # A forked child holds the pools but not their threads: it would queue tasks that no
    # thread runs. It makes its own on first use.
    _POOLS.clear()
    _LANES.clear()
    global _EXECUTORS_LOCK
    _EXECUTORS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_executors_after_fork)
