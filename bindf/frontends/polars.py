"""Lazy polars scans over any bindf format, built on ``polars.io.plugins``.

The schema comes from the first file's header alone. When polars runs the plan it calls
our source with the projected columns, the predicate, ``n_rows`` and a batch size; we
decode only the projected columns, stop reading after the scan's first ``n_rows`` rows,
and filter every batch before yielding it. (polars passes ``n_rows`` with a predicate
only for ``head(n).filter(...)``: the limit comes first, as in its own scans.)
"""

from __future__ import annotations

import atexit
import functools
import inspect
import math
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source

from .._inputs import Sources
from .._params import HINTS, SCAN_HINTS, check_count, check_names
from .._threads import resolve_threads
from .._warnings import WarningSink
from ..arrow import path_text
from ..formats._base import summed_errors
from .batches import ReadPlan
from .output import batch_to_polars, path_type_for, set_polars_info


def polars_schema(schema: pa.Schema) -> pl.Schema:
    """The polars schema of an Arrow schema (via an empty table: exact same mapping).

    Each call returns a new ``pl.Schema`` (a mutable mapping); the conversion itself is
    cached per Arrow schema: it took ~0.4 ms, half of what building a scan costs, and a
    campaign builds one scan per run."""
    return pl.Schema(_polars_fields(schema))


@functools.lru_cache(maxsize=64)
def _polars_fields(schema: pa.Schema) -> tuple[tuple[str, pl.DataType], ...]:
    return tuple(pl.from_arrow(schema.empty_table()).schema.items())  # type: ignore[union-attr]


def _conjuncts(predicate: pl.Expr) -> list[pl.Expr]:
    """The terms of ``predicate`` that must all hold (``a & b & c`` → a, b, c). Found
    structurally (is the expression the ``&`` of its two inputs?), which every polars
    version answers alike."""
    parts = predicate.meta.pop()
    if len(parts) == 2:
        for left, right in (parts, parts[::-1]):
            if predicate.meta.eq(left & right):
                return _conjuncts(left) + _conjuncts(right)
    return [predicate]


def _files_kept(paths: list[str], column: str | None,
                predicate: pl.Expr | None) -> list[bool] | None:
    """Which files may hold a row that passes ``predicate``, judged by its terms that use
    only the file path column ``column``; None when there are no such terms.

    Sound because polars pushes only row-by-row predicates into a scan (the rows of a
    batch are already filtered one by one): a term of the path alone has one value for
    all the rows of a file.
    """
    if predicate is None or column is None:
        return None
    terms = [t for t in _conjuncts(predicate) if set(t.meta.root_names()) == {column}]
    if not terms:
        return None
    try:
        verdict = pl.DataFrame({column: paths}, schema={column: pl.String}).select(
            pl.all_horizontal(terms).fill_null(False)).to_series()
    except Exception:  # noqa: BLE001 - only a shortcut: the rows' filter reports it
        return None
    return verdict.to_list()


class _SourceSteps:
    """The steps of scan sources that polars' threads are running, so that the
    interpreter's exit waits for them.

    Why: polars pulls a source's next frame on a thread of its own, and may still be
    pulling one after ``collect()`` returned (``filter(...).head(n)`` on a file of several
    batches: the head was found, the batch being decoded is not needed). A step decodes
    with the GIL released; if the interpreter is finalizing when it takes the GIL back,
    Python ends the thread, and the unwinding through polars' frames aborts the process
    ("FATAL: exception not rethrown", exit status 134) after the script's last line. An
    ``atexit`` handler runs before that, while threads may still take the GIL: it lets the
    steps under way finish. (It does not stop later steps: atexit handlers registered
    before ``import bindf`` run after it, and a scan collected in one must read.)

    A step that has ended is not yet out of Python: its thread runs on through the
    generators' last lines and polars' taking of the frame, and if the GIL is taken from
    it there (the exit asks for it), it takes the GIL once more. So the exit also waits
    until no polars thread that ran a step is in Python code (a thread polars started,
    not one of Python's: those ``threading`` waits for itself, or are daemons).

    Then polars drops the frame that a late step gave it, on its own thread, outside
    Python; freeing the Arrow memory that a Python object owns (a numpy array taken
    without a copy) takes the GIL there once more (pyarrow's buffers do), and the exit
    then ended "terminate called without an active exception" (about once in 400 runs
    of an AstroPix scan on a loaded machine). The exit also lets
    :data:`DROP_GRACE_SECONDS` pass after the last step ended: a script that ends right
    after a scan ends up to that much later.
    """

    #: How long the exit waits for steps under way (each decodes one batch: well under
    #: a second for a local file); past it, the exit goes on.
    EXIT_WAIT_SECONDS = 30.0
    #: How long after the last step ended the exit waits for polars to drop its frame
    #: (microseconds of work, but for a thread that a loaded machine does not run).
    DROP_GRACE_SECONDS = 0.1

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._last_step_end = -math.inf  # (time.monotonic())
        self._stepping_threads: set[int] = set()  # (idents: polars reuses its threads)
        atexit.register(self.wait_at_exit)

    def stepped(self, frames: Generator[pl.DataFrame, None, None]) -> Iterator[pl.DataFrame]:
        """``frames``, each step counted while it runs."""
        try:
            while True:
                with self._changed:
                    self._running += 1
                    self._stepping_threads.add(threading.get_ident())
                try:
                    frame = next(frames, None)
                finally:
                    with self._changed:
                        self._running -= 1
                        self._last_step_end = time.monotonic()
                        self._changed.notify_all()
                if frame is None:
                    return
                yield frame
        finally:  # (a source closed early: its own clean-up now, not when collected)
            frames.close()

    def wait_at_exit(self) -> None:
        deadline = time.monotonic() + self.EXIT_WAIT_SECONDS
        with self._changed:
            self._changed.wait_for(lambda: self._running == 0, self.EXIT_WAIT_SECONDS)
        # (microseconds, but for a thread the machine did not run: polled)
        while self._busy() and time.monotonic() < deadline:
            time.sleep(0.001)

    def _busy(self) -> bool:
        """Whether a step runs, ended less than :data:`DROP_GRACE_SECONDS` ago, or a
        polars thread is still in Python after one."""
        with self._changed:
            if self._running or \
                    time.monotonic() - self._last_step_end < self.DROP_GRACE_SECONDS:
                return True
        return self._foreign_threads_in_python()

    def _foreign_threads_in_python(self) -> bool:
        """Whether a thread that ran a step, one not started by Python's ``threading``,
        is in Python code now (it has a frame: a step, or the way out of one)."""
        dummy = getattr(threading, "_DummyThread", ())  # (how threading names a foreign one)
        started_by_python = {thread.ident for thread in threading.enumerate()
                             if not isinstance(thread, dummy)}
        with self._changed:
            stepping = self._stepping_threads - started_by_python - {threading.get_ident()}
        in_python = sys._current_frames()
        return any(ident in in_python for ident in stepping)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # A scan's source function refers to this object, and polars pickles the
        # function with the LazyFrame (pickle.dumps(lf), lf.serialize(), a process
        # pool): the receiving process counts its steps with its own (a lock does not
        # pickle).
        return (_process_steps, ())


_STEPS = _SourceSteps()


def _process_steps() -> _SourceSteps:
    """This process's :class:`_SourceSteps` (what a pickled one becomes)."""
    return _STEPS


def register_bindf_source(
    io_source: Callable[..., Generator[pl.DataFrame, None, None]],
    *,
    schema: pl.Schema,
    explain_name: str,
    explain_detail: str,
) -> pl.LazyFrame:
    """``register_io_source`` with the keywords this polars version knows.

    The plugin API grew over polars 1.x/2.x: 1.22 took only the callable and the
    schema, 1.26 (the oldest bindf supports) adds ``validate_schema``, later releases
    ``is_pure``, 2.0 added ``explain_name`` and
    ``explain_detail`` (what ``LazyFrame.explain()`` prints). Keywords this polars does
    not accept are dropped: the scan behaves the same, only ``explain()`` says less.

    Older polars (1.22 at least) panics when a source yields no frame at all (a
    header-only file, or a predicate that no row passes), so an empty source yields one
    empty frame of the projected schema.
    """

    def at_least_one_frame(
        with_columns: list[str] | None, predicate: Any, n_rows: int | None, size: int | None
    ) -> Iterator[pl.DataFrame]:
        empty = True
        for frame in _STEPS.stepped(io_source(with_columns, predicate, n_rows, size)):
            empty = False
            yield frame
        if empty:
            frame = pl.DataFrame(schema=schema)
            yield frame if with_columns is None else frame.select(with_columns)

    optional = {"explain_name": explain_name, "explain_detail": explain_detail}
    accepted = inspect.signature(register_io_source).parameters
    supported = {name: value for name, value in optional.items() if name in accepted}
    return register_io_source(at_least_one_frame, schema=schema, **supported)


def scan(
    source: Sources,
    *,
    format: str | None = None,
    n_rows: int | None = None,
    batch_size: int | None = None,
    include_file_paths: str | None = None,
    row_index_name: str | None = None,
    row_index_offset: int = 0,
    storage_options: dict[str, Any] | None = None,
    progress: bool = False,
    threads: int | None = None,
    **options: Any,
) -> pl.LazyFrame:
    """Lazily scan any supported file(s) into a ``polars.LazyFrame``.

    Same sources and options as :func:`bindf.read` (but for what polars does itself:
    ``.select``, ``.collect()``). ``n_rows`` is polars' scan option: the scan's first
    rows, before any later filter (``.head(n)`` right after the scan). Projections,
    predicates and ``head()`` are pushed into the reader. ``lf.bindf.info`` holds the format, the first header
    and the sources; after a collect, also the damage that ``on_error="warn"``/``"skip"``
    dropped in it (``"errors"``), which is only known once the rows are read.
    """

    # bindf.read's parameters that polars itself provides for a scan (.head, .select …)
    check_names("scan", [name for name in options
                         if name in SCAN_HINTS or HINTS.get(name) in SCAN_HINTS],
                (), hints=SCAN_HINTS)
    check_count("n_rows", n_rows, 0)
    check_count("batch_size", batch_size, 1)
    requested_threads = resolve_threads(threads)

    def capped_threads() -> int:
        """polars runs this scan on its own thread pool: stay within its size, so that
        the two pools together do not oversubscribe the machine. Asked when the scan
        runs, not when it is built: asking starts polars' pool, and a process forked
        from one that had only built a scan then hung in every polars query."""
        return min(requested_threads, pl.thread_pool_size())

    def make_plan(columns: list[str] | None, n_rows: int | None, *,
                  files: Any = None, first_row_index: int | None = None,
                  like: ReadPlan | None = None, to_polars: bool = True,
                  threads: int | None = None) -> ReadPlan:
        # Batches: the scan's batch_size, else the readers' own (about 1 Mi rows, or a
        # chunk of the file), not polars' hint of 100,000 rows: frames that small made a
        # collect 1.6-2.2 times as slow (spectroscopy, sparse IT02), each frame paying
        # its conversion, its Python and polars' joining of the frames, while polars
        # takes larger frames as they are (its streaming engine splits them itself).
        return ReadPlan.from_kwargs(
            sources if files is None else files, format=format, columns=columns,
            n_rows=n_rows, batch_size=batch_size, include_file_paths=include_file_paths,
            row_index_name=row_index_name,
            row_index_offset=row_index_offset if first_row_index is None else first_row_index,
            storage_options=storage_options, progress=progress,
            threads=capped_threads() if threads is None else threads, like=like,
            path_type=path_type_for("polars") if to_polars else None, **options)

    #: polars' own scans apply n_rows before any later filter: see io_source
    scan_rows = n_rows
    sources: Any = source
    # (the template reads headers, and decodes nothing: the thread count asked for)
    template = make_plan(None, None, threads=requested_threads)
    # Every collect reads the sources expanded here: a file object's start position is
    # taken once (reading the header moved it), and a stream is copied only once.
    sources = template.sources
    schema = polars_schema(template.output_schema())
    format_name = template.first_reader.name
    info = template.info()

    def io_source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        _size_hint: int | None,  # polars' batch size: not followed (see make_plan)
    ) -> Iterator[pl.DataFrame]:
        columns = with_columns
        if columns == []:
            # polars 2 asks for no column when the query needs only the row count
            # (``with_row_index().select("index")``): decode the first column (as polars
            # asks for ``select(pl.len())``) and hand back frames of its height, no columns.
            columns = list(schema)[:1]
        if predicate is not None and columns is not None:
            # The predicate may use columns that are not projected: decode those too.
            needed = set(predicate.meta.root_names())
            columns = list(dict.fromkeys([*columns, *(c for c in schema if c in needed)]))
        # polars hands a scan both a predicate and n_rows only for head(n).filter(...)
        # (a filter before the head keeps the head above the scan): the first n rows of
        # the scan, then the filter, as its own scans apply their pre-slice. The scan's
        # own n_rows is such a pre-slice too (applied here: as a head() on the scan's
        # frame, polars 2.1 lost it under a later with_row_index().head(more)). Those
        # rows may come from any file, so then no file is skipped by its path.
        if scan_rows is not None:
            n_rows = scan_rows if n_rows is None else min(n_rows, scan_rows)
        runs = _file_runs(predicate) if n_rows is None else [(None, None)]
        # (each collect reads the files again: one replaced since has other columns)
        plans = [make_plan(columns, n_rows, files=files, first_row_index=first,
                           like=template)
                 for files, first in runs]
        try:
            yield from _frames(plans, predicate, with_columns)
        finally:  # the damage this collect dropped, for lf.bindf.info (see scan's doc)
            errors = summed_errors(plan.info().get("errors") or {} for plan in plans)
            if errors:
                info["errors"] = errors
            else:
                info.pop("errors", None)

    def _file_runs(predicate: pl.Expr | None) -> list[tuple[Any, int | None]]:
        """The files to read, as runs of consecutive files, each with the row index of
        its first row (None: the scan's ``row_index_offset``).

        A predicate on the ``include_file_paths`` column is decided per file before any
        is opened for its data (``filter(pl.col("path") == one)`` over a glob of
        thousands of runs reads one). Files after the last kept one never shift a row
        index; files skipped before a kept one do, by their row counts, which only some
        formats know from the header: without them every file up to the last kept one
        is read (and filtered row by row, as always).
        """
        kept = _files_kept([path_text(s.path) for s in sources], include_file_paths, predicate)
        if kept is None or all(kept):
            return [(None, None)]
        if not any(kept):
            return []
        last = max(i for i, keep in enumerate(kept) if keep)
        if not row_index_name:
            return [([s for s, keep in zip(sources, kept) if keep], None)]
        counts = []
        with WarningSink().active():  # (not read here: their own pass warns of them)
            for index in range(last):
                count = template.reader_for(index).count_rows()
                if count is None:
                    return [(sources[: last + 1], None)]
                counts.append(count)
        runs, first_row = [], row_index_offset
        for index in range(last + 1):
            if kept[index] and (index == 0 or not kept[index - 1]):
                runs.append(([], first_row))
            if kept[index]:
                runs[-1][0].append(sources[index])
            if index < last:
                first_row += counts[index]
        return runs

    def _frames(plans: list[ReadPlan], predicate: pl.Expr | None,
                with_columns: list[str] | None) -> Iterator[pl.DataFrame]:
        for plan in plans:  # each plan stops after its n_rows itself
            for batch in plan.iter_batches():
                frame = batch_to_polars(batch)
                if predicate is not None:
                    frame = frame.filter(predicate)
                if with_columns is not None:
                    # ``select([])`` would also drop the height; ``drop`` keeps it
                    frame = (frame.select(with_columns) if with_columns
                             else frame.drop(frame.columns))
                if frame.height:
                    yield frame

    lazy = register_bindf_source(
        io_source,
        schema=schema,
        explain_name=f"bindf.scan_{format_name}",
        explain_detail=", ".join(path_text(s.path) for s in template.sources[:3])
        + (" …" if len(template.sources) > 3 else ""),
    )
    # (lf.bindf.to_parquet streams the scan's batches to the file, header and damage
    # counts included, instead of collecting the frame: Arrow's batches, not polars')
    set_polars_info(lazy, info, plan=lambda: make_plan(None, scan_rows, to_polars=False))
    return lazy
