"""One source file → its Parquet parts: the unit of work of :func:`bindf.ingest`.

:func:`run_job` runs in a thread of the coordinating process or on a dask worker; it
takes a picklable :class:`Job` and returns a plain dict, and never touches the manifest
(only the coordinator writes that). Each source's parts are written under
``DEST/_bindf_staging/`` and renamed into their Hive partition only once all of them are
complete and the source is known not to have changed meanwhile; a rename within one
filesystem is atomic, so a reader never sees a partial part. New parts never take the
name of a part the manifest lists for other content (see :func:`part_tag`), and a job
never deletes parts: the coordinator deletes those a source no longer needs once the
manifest that stops listing them is saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from ._manifest import STAGED_SUFFIX, STAGING_NAME, file_sha256, utc_now
from ._version import __version__
from .arrow import path_text, repeated, rows_within_limit, table_info, text_bytes
from .errors import BindfError
from .parquet import write_batches
from .registry import SentSpec, known_in_this_process

#: Rows per Arrow chunk read from a source (bounds the memory of one file's ingestion).
CHUNK_ROWS = 1 << 20
#: Sources up to this size are decoded whole before their parts are written; bigger
#: ones are streamed chunk by chunk.
IN_MEMORY_BYTES = 64 << 20
#: Hive's name for a missing partition value (polars, DuckDB and pyarrow read it as null).
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: Arrow types a header column can be declared as (``header_columns={"a.b": "float64"}``).
HEADER_COLUMN_TYPES = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(),
                       "string": pa.string()}
#: Name of the column holding each row's source path.
SOURCE_COLUMN = "source"
#: Hex digits of a part schema's fingerprint (manifest entries, variant folder names).
SCHEMA_DIGITS = 8
#: Hex digits of the tag in a part's name (``<key>-<tag>-<i>.parquet``, see :func:`part_tag`).
TAG_DIGITS = 8


class IngestStopped(Exception):
    """Raised inside a job when its run is being interrupted (``Job.stop`` is set): the
    job removes its staged files and publishes nothing."""


@dataclass(frozen=True)
class Job:
    """What a worker needs to ingest one source (plain values: it pickles for dask)."""

    path: str
    key: str
    dest: str
    #: Dataset settings: ``partition_by``, ``header_columns`` (name → type), ``format``,
    #: ``options``, ``on_error``, ``rows_per_part``.
    settings: dict[str, Any]
    #: The source's SHA-256 in the manifest (an unchanged content needs no conversion).
    old_sha256: str | None = None
    #: ``bindf._manifest.settings_hash(settings)``, recorded in the entry.
    settings_hash: str = ""
    #: fsync each part before it is published (see ``bindf.ingest(fsync=)``).
    fsync: bool = True
    #: Format → fingerprint of its main schema, as the manifest had it when the run
    #: started (see :func:`format_partition`).
    main_schemas: dict[str, str] = field(default_factory=dict)
    #: A ``threading.Event`` set when the run is interrupted: the job stops between
    #: batches and before publishing (local threads only; None on dask, where an Event
    #: does not pickle).
    stop: Any = field(default=None, compare=False, repr=False)
    #: The formats registered at run time in the coordinating process, sent along to
    #: a dask worker (another process, which has not registered them): see
    #: :func:`bindf.registry.specs_for_workers`. Empty for local jobs.
    formats_sent: tuple[SentSpec, ...] = field(default=(), compare=False, repr=False)

    def check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise IngestStopped(self.path)


def header_value(header: dict[str, Any], dotted: str) -> Any:
    """``header["a"]["b"]`` for ``"a.b"``; a key that itself holds a dot wins. Missing: None."""
    if dotted in header:
        return header[dotted]
    value: Any = header
    for name in dotted.split("."):
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value


def column_scalar(value: Any, type_name: str, name: str) -> pa.Scalar:
    """A header value as a scalar of its dataset column's type (null when missing)."""
    kind = HEADER_COLUMN_TYPES[type_name]
    if value is None:
        return pa.scalar(None, kind)
    if type_name == "string":
        return pa.scalar(value if isinstance(value, str)
                         else json.dumps(value, ensure_ascii=False), kind)
    fits = {"bool": isinstance(value, bool),
            "int64": isinstance(value, int) and not isinstance(value, bool),
            "float64": isinstance(value, (int, float)) and not isinstance(value, bool)}[type_name]
    if not fits:
        raise ValueError(f"header field {name!r} is {json.dumps(value)[:60]}, which does not fit "
                         f"the dataset's {type_name} column (declare its type in header_columns)")
    return pa.scalar(value, kind)


def schema_fingerprint(schema: pa.Schema) -> str:
    """A short hash of a part schema's columns (names, Arrow types, nullability; not the
    metadata): parts with the same fingerprint can be scanned as one table."""
    text = json.dumps([[f.name, str(f.type), f.nullable] for f in schema])
    return hashlib.sha256(text.encode()).hexdigest()[:SCHEMA_DIGITS]


def part_schema(dest: str, part: str) -> pa.Schema:
    """The Arrow schema of a published part (``part``: its path relative to the dataset
    folder ``dest``), from its Parquet footer."""
    import pyarrow.parquet as pq

    return pq.read_schema(os.path.join(dest, *part.split("/")))


def part_tag(sha256: str, settings_hash: str) -> str:
    """The middle of a part's name: a hash of the source's content, the settings and the
    bindf version it was converted with. A re-conversion of other content (or with other
    settings) gets new names, so that it never overwrites a part that the saved manifest
    still lists (a ``read_dataset`` scan built from it stays readable); converting the
    same content again with the same settings and version gives the same names, and the
    rerun of an interrupted run gives the same dataset as a clean run."""
    text = f"{sha256}\0{settings_hash}\0{__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:TAG_DIGITS]


def format_partition(format: str, fingerprint: str, main: str | None) -> str:
    """The top folder of a part: ``format=apx`` for the format's main schema in the
    dataset, ``format=apx-<fingerprint>`` for any other one (AstroPix 3 runs beside
    AstroPix 4 ones, IT02 traces of other channels …), so that every folder holds one
    schema. Format names hold no ``-``. Without a main schema yet (the first run that
    meets a format), parts go to ``format=apx``: most campaigns have one schema per
    format, and then nothing moves; the run's end picks the main schema and moves the
    parts of any other one out (``bindf._ingest``)."""
    value = format if main is None or fingerprint == main else f"{format}-{fingerprint}"
    return f"format={quote(value, safe='')}"


def partition_dirs(header: dict[str, Any], partition_by: list[str]) -> list[str]:
    """``["key=value", ...]`` for the header fields the dataset is partitioned by."""
    dirs = []
    for name in partition_by:
        value = header_value(header, name)
        if isinstance(value, (dict, list)):
            raise ValueError(f"header field {name!r} is not a scalar and cannot partition the "
                             "dataset")
        if value is None:
            text = NULL_PARTITION
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        dirs.append(f"{quote(name, safe='.')}={quote(text, safe='')}")
    return dirs


def run_job(job: Job) -> dict[str, Any]:
    """Ingest one source. Returns ``{"path", "status", "entry", "bytes"}`` where status is
    ``"ingested"``, ``"unchanged"`` (content identical, conversion skipped), ``"pending"``
    (the file changed while it was read) or ``"failed"`` (``entry["error"]`` says why).
    Raises :class:`IngestStopped` when ``job.stop`` is set before the parts are
    published (nothing is published then, and no staged file is left)."""
    for sent in job.formats_sent:  # (before detection: a sent format may be the file's)
        known_in_this_process(sent)
    try:
        before = os.stat(job.path)
    except OSError as exc:
        return _failure(job, exc, None)
    try:
        sha = file_sha256(job.path)
        signature = {"size": before.st_size, "mtime_ns": before.st_mtime_ns, "sha256": sha}
        if sha == job.old_sha256:
            return {"path": job.path, "status": "unchanged", "entry": signature,
                    "bytes": before.st_size}
        job.check_stop()
        entry = _write_and_publish(job, before, signature)
    except IngestStopped:
        raise
    except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others
        # Besides bindf's errors: TypeError (a reader option this format does not take),
        # ValueError (header values that do not fit the dataset's columns), OSError, and
        # anything unexpected, recorded with its type so that it can be reported.
        if _changed_since(job.path, before):  # the error may come from a half-written file
            return {"path": job.path, "status": "pending", "entry": None,
                    "bytes": before.st_size}
        return _failure(job, exc, before)
    if entry is None:
        return {"path": job.path, "status": "pending", "entry": None, "bytes": before.st_size}
    return {"path": job.path, "status": "ingested", "entry": entry, "bytes": before.st_size}


def _fsync(path: str) -> None:
    with io.FileIO(path, "r") as f:  # (a file object: closed even after Ctrl-C, see _source)
        os.fsync(f.fileno())


def _changed_since(path: str, before: os.stat_result) -> bool:
    try:
        after = os.stat(path)
    except OSError:
        return True
    return (after.st_size, after.st_mtime_ns, after.st_ino) != (
        before.st_size, before.st_mtime_ns, before.st_ino)


def _failure(job: Job, exc: BaseException, st: os.stat_result | None) -> dict[str, Any]:
    error = {"type": type(exc).__name__, "message": str(exc),
             "offset": getattr(exc, "offset", None),
             # A data error stays until the file changes; others (I/O) are retried.
             "retry": not isinstance(exc, BindfError)}
    entry = {"key": job.key, "format": None, "schema": None, "size": st.st_size if st else None,
             "mtime_ns": st.st_mtime_ns if st else None, "sha256": None, "rows": 0, "parts": [],
             "partition": None, "header": None, "skipped": None, "warnings": [],
             "error": error, "settings_hash": job.settings_hash, "ingested": utc_now(),
             "bindf_version": __version__}
    return {"path": job.path, "status": "failed", "entry": entry,
            "bytes": st.st_size if st else 0}


def _write_and_publish(job: Job, before: os.stat_result,
                       signature: dict[str, Any]) -> dict[str, Any] | None:
    settings = job.settings
    # Staged files: DEST/_bindf_staging/<key>.<random>-<i>.parquet.tmp (no folder per
    # source: creating and removing one costs more than writing a small part; the suffix
    # keeps them out of the `dataset/**/*.parquet` globs of DuckDB and polars).
    staging = os.path.join(job.dest, STAGING_NAME, f"{job.key}.{uuid.uuid4().hex[:12]}")
    staged: list[str] = []
    try:
        stream_whole = before.st_size > IN_MEMORY_BYTES
        # Reads of several files run at once: bindf's read pipeline keeps each read's
        # warnings to itself (bindf._warnings), so every file's warnings are recorded.
        reader = _open_chunks(job)
        with reader:
            chunks = _until_stopped(job, reader)
            first = next(chunks, None)
            if first is None:  # no rows: an empty part still carries schema and header
                first = _open_chunks(job, n_rows=0)
            rest: Iterator[pa.Table] = chunks
            if not stream_whole:  # decode now, then write
                rest = iter(list(chunks))
            stream = _AnnotatedStream(job, first, rest)
            os.makedirs(os.path.dirname(staging), exist_ok=True)
            stream.write_parts(staging, int(settings.get("rows_per_part") or 0), staged)
        if _changed_since(job.path, before):
            return None  # still being written: try again on a later run
        info = stream.info
        skipped = reader.errors or None  # the read's count, final once it ended
        fingerprint = schema_fingerprint(stream.schema)
        top = format_partition(info["format"], fingerprint,
                               job.main_schemas.get(info["format"]))
        prefix = "/".join([top, *partition_dirs(info["header"],
                                                settings.get("partition_by") or [])])
        tag = part_tag(signature["sha256"], job.settings_hash)
        parts = [f"{prefix}/{job.key}-{tag}-{i}.parquet" for i in range(len(staged))]
        os.makedirs(os.path.join(job.dest, *prefix.split("/")), exist_ok=True)
        for temp in staged if job.fsync else ():  # on disk before the manifest lists them
            _fsync(temp)
        # The last moment to stop: once published, the parts must reach the manifest
        # (the coordinator records every job that returns, interrupted or not).
        job.check_stop()
        for temp, part in zip(staged, parts, strict=True):
            os.replace(temp, os.path.join(job.dest, *part.split("/")))
    finally:
        for temp in staged:  # left only when something failed
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    return {"key": job.key, "format": info["format"], "schema": fingerprint, **signature,
            "rows": stream.rows, "parts": parts,
            "partition": {name: header_value(info["header"], name)
                          for name in settings.get("partition_by") or []},
            "header": info["header"], "skipped": skipped, "warnings": [],
            "error": None, "settings_hash": job.settings_hash, "ingested": utc_now(),
            "bindf_version": __version__}


def _until_stopped(job: Job, chunks: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """``chunks``, checking as each one arrives whether the run is being interrupted."""
    for chunk in chunks:
        job.check_stop()
        yield chunk


def _open_chunks(job: Job, n_rows: int | None = None) -> Any:
    """The source as Arrow tables of :data:`CHUNK_ROWS` rows (a ``ChunkedReader``), or
    with ``n_rows=0`` one empty table with its schema and header."""
    import bindf

    settings = job.settings
    kwargs = dict(settings.get("options") or {})
    kwargs.update(format=settings.get("format"), output="arrow",
                  on_error=settings.get("on_error", "raise"))
    # Ingestion already converts files in parallel: one thread per read, so the two
    # levels of parallelism do not oversubscribe the cores.
    kwargs.setdefault("threads", 1)
    if n_rows is not None:
        return bindf.read(job.path, n_rows=n_rows, **kwargs)
    return bindf.read(job.path, chunksize=CHUNK_ROWS, **kwargs)


def remove_empty_dirs(folder: str, stop: str) -> None:
    """Remove ``folder`` and its parents up to (not including) ``stop`` while empty."""
    stop = os.path.abspath(stop)
    folder = os.path.abspath(folder)
    while folder.startswith(stop + os.sep):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


class _AnnotatedStream:
    """A source's Arrow chunks with the ``source`` and header columns appended."""

    def __init__(self, job: Job, first: pa.Table, rest: Iterator[pa.Table]) -> None:
        self.job = job
        self.info: dict[str, Any] = table_info(first) or {}
        self.rows = 0
        columns = job.settings.get("header_columns") or {}
        header = self.info.get("header") or {}
        self._extra = [(SOURCE_COLUMN, pa.scalar(path_text(job.path), pa.string()))]
        self._extra += [(name, column_scalar(header_value(header, name), kind, name))
                        for name, kind in columns.items()]
        clash = [name for name, _ in self._extra if name in first.column_names]
        if clash:
            raise ValueError(f"column(s) {clash} exist in the {self.info.get('format')} data; "
                             "choose other header columns")
        schema = first.schema.remove_metadata()
        for name, scalar in self._extra:
            schema = schema.append(pa.field(name, scalar.type))
        self.schema = schema
        #: Rows per batch: the repeated text (a long header value, the path) stays
        #: within Arrow's 2 GiB a column.
        self._step = rows_within_limit(text_bytes(scalar) for _, scalar in self._extra)
        self._tables = _chain(first, rest)
        self._held: list[pa.RecordBatch] = []

    def _next_batch(self) -> pa.RecordBatch | None:
        while not self._held:
            table = next(self._tables, None)
            if table is None:
                return None
            self.info = table_info(table) or self.info  # grows: the IT02 end
            for start in range(0, max(table.num_rows, 1), self._step):
                piece = table.slice(start, self._step)
                arrays = [*piece.columns,
                          *(repeated(scalar, piece.num_rows) for _, scalar in self._extra)]
                self._held += pa.Table.from_arrays(arrays, schema=self.schema).to_batches()
        return self._held.pop(0)

    def _batches(self, limit: int) -> Iterator[pa.RecordBatch]:
        """Batches up to ``limit`` rows (0: all), splitting the batch that crosses it."""
        written = 0
        while (batch := self._next_batch()) is not None:
            self.job.check_stop()
            if limit and written + batch.num_rows > limit:
                keep = limit - written
                self._held.insert(0, batch.slice(keep))
                batch = batch.slice(0, keep)
            written += batch.num_rows
            self.rows += batch.num_rows
            yield batch
            if limit and written >= limit:
                return

    def write_parts(self, prefix: str, rows_per_part: int, staged: list[str]) -> None:
        """Write the parts to ``<prefix>-<i>.parquet.tmp``, appending each path to ``staged``
        (the caller's list, so it can clean up after a failure); at least one part."""
        while True:
            path = f"{prefix}-{len(staged)}{STAGED_SUFFIX}"
            staged.append(path)
            # fsync=False: the job fsyncs its staged parts itself, right before they
            # are published, and only when asked to (``ingest(fsync=)``)
            written = write_batches(self._batches(rows_per_part), self.schema, path,
                                    to="parquet", info=lambda: self.info, fsync=False)
            if written == 0 and len(staged) > 1:
                os.unlink(staged.pop())
                return
            if not rows_per_part or written < rows_per_part:
                return


def _chain(first: pa.Table, rest: Iterator[pa.Table]) -> Iterator[pa.Table]:
    yield first
    yield from rest
