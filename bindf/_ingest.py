"""Campaigns: keep a Parquet dataset in sync with thousands of instrument files.

>>> report = bindf.ingest("campaign/", "dataset/", header_columns=["args.threshold"])
>>> report.ingested, report.failed
>>> lf = bindf.read_dataset("dataset/", format="apx")         # lazy polars scan
>>> lf.filter(pl.col("args.threshold") > 100).group_by("source").len().collect()

Layout of ``DEST`` (Hive partitioning; details and the manifest schema in
``docs/ingest.md``)::

    DEST/_bindf_manifest.json                       what was ingested (the bookkeeping)
    DEST/format=apx/[key=value/…]<hash>-<tag>-0.parquet   parts of one source file
    DEST/format=apx-<schema>/…                      parts of the format's other schemas
    DEST/.bindf-ingest.lock                         held while an ingestion runs

A source's parts are named after a hash of its absolute path (``<hash>``) and a hash of
its content, the settings and the bindf version (``<tag>``), so a changed file's new
parts get new names: a scan built from the saved manifest keeps reading the old ones,
which are deleted once a saved manifest no longer lists them. Every row gains a
``source`` column and the requested header fields; every part carries the bindf
metadata (format, header, source) in its footer.

One folder, one schema: a format whose files give different columns (AstroPix 3 and 4
runs, IT02 traces of other channels) keeps its *main* schema, the one of most of its
sources, in ``format=<name>`` and each other schema in ``format=<name>-<fingerprint>``,
so that a plain scan of any folder works. Workers only see the main schemas the manifest
had when the run started, and put every part of a format new to the dataset in
``format=<name>``; the coordinator picks its main schema at the run's end and moves the
parts of the other schemas out (none, in the usual campaign of one schema).

Crash safety: parts are staged under ``DEST/_bindf_staging`` and renamed into place, the
manifest is replaced atomically *after* the parts it lists and *before* the parts it
stopped listing are deleted, and every run first removes what an interrupted run may
have left: the staging folder, and parts the manifest does not list (their sources are
re-ingested because the manifest does not record them as done). Each entry records the
hash of the settings its parts were made with, so an interrupted settings change is
completed by the rerun. So after ``kill -9`` at any moment, a rerun yields the dataset an
uninterrupted run would have produced.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

from ._ingest_sources import (
    find_sources,
    header_column_spec,
    infer_column_type,
    read_headers_for_types,
)
from ._ingest_worker import (
    TAG_DIGITS,
    Job,
    format_partition,
    header_value,
    part_schema,
    remove_empty_dirs,
    run_job,
    schema_fingerprint,
)
from ._manifest import (
    KEY_DIGITS,
    STAGING_NAME,
    DatasetLock,
    DatasetLockedError,
    Manifest,
    file_sha256,
    settings_hash,
    source_key,
)
from ._params import check_flag, check_seconds
from ._threads import resolve_threads, usable_cores
from ._warnings import WarningSink, warn
from .errors import BindfWarning
from .registry import specs_for_workers

__all__ = ["DatasetLockedError", "IngestReport", "find_sources",
           "ingest", "watch"]

#: Default number of rows per Parquet part; a bigger source is split into several parts.
DEFAULT_ROWS_PER_PART = 16 << 20
#: Read options that ingestion sets itself for each file's read.
SET_BY_INGESTION = ("output", "chunksize", "batch_size", "n_rows")
#: The manifest is saved at most this often while a run progresses (and at its end), so
#: an interrupted run keeps most of its work without rewriting the manifest per file.
CHECKPOINT_SECONDS = 2.0
#: ``<key>-<tag>-<i>.parquet``; datasets of earlier versions have ``<key>-<i>.parquet``.
_PART_NAME = re.compile(rf"^[0-9a-f]{{{KEY_DIGITS}}}(-[0-9a-f]{{{TAG_DIGITS}}})?-\d+\.parquet$")


@dataclass
class IngestReport:
    """What a run did (or, with ``dry_run=True``, would do). Lists hold source paths.

    ``failed`` maps each source whose latest attempt failed to its error message: this
    run's failures and those of unchanged files recorded earlier (a damaged file is not
    retried until it changes). ``pending`` files were skipped because they are still
    being written (see ``settle``); a later run picks them up. ``removed`` sources are in
    the manifest but no longer on disk; ``pruned`` is the subset whose parts were deleted.
    ``moved`` sources were not converted but their parts moved to their schema's folder
    (a dataset written before bindf kept one folder per schema, or a format whose main
    schema changed); a dry run does not predict moves. ``warnings`` maps each source
    converted in this run whose read gave bindf warnings (a truncated tail, damage
    skipped under ``on_error="warn"``) to their messages; the manifest keeps them too.
    """

    #: The dataset folder the run wrote to (or would write to).
    dest: str
    #: The run only said what it would do (``dry_run=True``): it wrote nothing.
    dry_run: bool = False
    ingested: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    #: Rows written by this run (0 for a dry run).
    rows: int = 0
    #: Bytes of the source files this run converted (0 for a dry run).
    bytes: int = 0
    #: Wall-clock seconds the run took.
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no source is recorded as failed."""
        return not self.failed

    def summary(self) -> str:
        verb = "would ingest" if self.dry_run else "ingested"
        text = (f"{self.dest}: {verb} {len(self.ingested)} new, "
                f"{'would replace' if self.dry_run else 'replaced'} {len(self.replaced)} "
                f"changed, {len(self.unchanged)} unchanged, {len(self.failed)} failed, "
                f"{len(self.pending)} pending (still being written), "
                f"{len(self.removed)} removed from disk")
        if self.pruned:
            text += f" ({len(self.pruned)} {'would be ' if self.dry_run else ''}pruned)"
        if self.moved:
            text += f", {len(self.moved)} moved to their schema's folder"
        if self.warnings:
            text += f", {len(self.warnings)} with warnings"
        if not self.dry_run:
            text += f"; {self.rows} rows from {self.bytes / 1e6:.1f} MB in {self.seconds:.2f} s"
        return text


# -- the run --------------------------------------------------------------------------
def ingest(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    *,
    pattern: str | Sequence[str] | None = None,
    format: str | None = None,
    partition_by: Sequence[str] | str = (),
    header_columns: Sequence[str] | Mapping[str, str | None] | None = None,
    on_error: str = "raise",
    settle: float = 0.0,
    prune: bool = False,
    dry_run: bool = False,
    force: bool = False,
    threads: int | None = None,
    client: Any = None,
    progress: bool = False,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
    fsync: bool = True,
    **options: Any,
) -> IngestReport:
    """Convert new and changed source files into the Parquet dataset ``dest``.

    Parameters
    ----------
    sources:
        Paths, globs, or folders (searched recursively for ``pattern``), or a list.
    dest:
        The dataset folder (created if needed).
    pattern:
        Glob(s) of file names to pick up in folders; default: the extensions bindf knows
        (``*.apx``, ``*.log``, ``*.bin``).
    format:
        Force one format for every file; default: detect each file's.
    partition_by:
        Header fields (dotted for nested keys) that add ``key=value`` folders below
        ``format=…`` (``format=<name>`` holds the format's main schema, other schemas of
        the same format go to ``format=<name>-<fingerprint>``). Missing values go to
        ``key=__HIVE_DEFAULT_PARTITION__`` (null).
    header_columns:
        Header fields to add as columns to every row: names (``"args.threshold"``), with
        an optional type (``"args.threshold:float64"``; bool, int64, float64, string), or
        a dict name → type. Without a type, the type that holds every file's value is
        inferred once and kept in the manifest, so every part has the same schema.
    on_error:
        Per file, as in :func:`bindf.read`: ``"raise"`` makes a damaged file a recorded
        failure (the others go on); ``"warn"``/``"skip"`` keep the good records and
        count the skipped ones in the manifest.
    settle:
        Skip files modified less than this many seconds ago (still being written); they
        are reported as ``pending``. A file that changes while it is read is pending too.
        Not negative.
    prune:
        Delete the parts of sources that no longer exist on disk.
    dry_run:
        Report what would be done; write and delete nothing, take no lock. A file whose
        size and mtime changed is hashed, as a real run would, to tell a touched file
        (unchanged) from a changed one.
    force:
        Re-ingest every source, changed or not.
    threads:
        Files converted at once in this process, at least 1 (default: the usable cores;
        ``False``: 1, as for reads).
    client:
        A ``distributed.Client``: files are converted on its workers, which must see
        ``dest`` at the same path (a shared filesystem). The manifest is written only
        here, by the coordinating process. Formats registered at run time here
        (``register_format``) go to the workers with the jobs.
    progress:
        A tqdm bar over bytes, with the file count (needs ``bindf[progress]``).
    rows_per_part:
        A source with more rows is split into several parts.
    fsync:
        Flush each part to disk before publishing it (the manifest is always flushed),
        so that after a power cut the manifest never lists a part whose data was lost.
        ``False`` is faster (about 3 ms less per file on a virtual disk) and still safe
        against a killed process, whose written data the OS keeps.
    **options:
        Passed to the readers (``level="readouts"``, ``layout=`` …).

    Raises
    ------
    bindf.DatasetLockedError
        (a ``BindfError``) if another run holds the dataset's lock.
    ValueError
        For option values out of range (``threads`` < 1, negative ``settle`` …).
    OSError
        When ``dest`` cannot be created or written (per-file problems are recorded in the
        manifest instead).

    Notes
    -----
    A file is re-converted when its size or mtime differ from the manifest's *and* its
    SHA-256 differs too (a touched but identical file is only re-recorded), when its
    parts are missing, or when the settings (partitioning, header columns, options)
    differ from those its parts were made with (each manifest entry records them): so a
    run with new settings re-converts every source, and so does the rerun of such a run
    that was interrupted, for the sources it had not done yet.

    Interrupted (Ctrl-C, or an exception raised by a signal handler, such as the
    ``bindf`` command's SIGTERM one), a run stops its conversions between batches,
    records the files whose parts it already published, saves the manifest and removes
    its staged files before the exception propagates.
    """
    started = time.perf_counter()
    if on_error not in ("raise", "warn", "skip"):
        raise ValueError(f"on_error must be 'raise', 'warn' or 'skip', not {on_error!r}")
    if rows_per_part is not None and rows_per_part < 1:
        raise ValueError(f"rows_per_part must be positive, not {rows_per_part}")
    # Read options that ingestion sets itself: refused here, not by every file's read.
    for name in SET_BY_INGESTION:
        if name in options:
            raise TypeError(f"ingest() sets {name} itself (it reads each file in chunks "
                            "into Parquet parts); leave it out")
    _check_reader_options(format, options)
    for name, flag in (("prune", prune), ("dry_run", dry_run), ("force", force),
                       ("progress", progress), ("fsync", fsync)):
        check_flag(name, flag)  # prune="no" pruned
    threads = _usable_cores() if threads is None else resolve_threads(threads)
    check_seconds("settle", settle, positive=False)
    dest = os.path.abspath(os.path.expanduser(os.fspath(dest)))
    paths = find_sources(sources, pattern, exclude=dest)
    partition_by = [partition_by] if isinstance(partition_by, str) else list(partition_by)
    columns = header_column_spec(header_columns)
    both = sorted(set(partition_by) & set(columns))
    if both:  # DuckDB would read the folder's text over the file's typed column
        raise ValueError(f"{both} cannot be both a partition and a header column: a "
                         "partition field is already a column of every reader's scan")
    requested = {"partition_by": partition_by,
                 "header_columns": columns,
                 "format": format, "options": options, "on_error": on_error,
                 "rows_per_part": rows_per_part}
    report = IngestReport(dest=dest, dry_run=dry_run)
    if not dry_run:
        _make_dataset_folder(dest)
    with contextlib.nullcontext() if dry_run else DatasetLock(dest):
        manifest = Manifest.load(dest) if os.path.isdir(dest) else Manifest()
        existing = _existing_parts(dest)
        if not dry_run:
            _recover(dest, manifest, existing)
        run = _Run(dest, manifest, report, existing, dry_run)
        if not dry_run:
            run.record_legacy_schemas()
        settings = run.resolve_settings(requested, paths)
        jobs = run.plan(paths, settings, settle, force, fsync)
        run.find_removed(paths, prune)
        if dry_run:
            report.seconds = time.perf_counter() - started
            return report
        try:
            run.execute(jobs, threads, client, progress)
            # Only after a complete run: which schema is a format's main one is decided
            # over all its sources, so an interrupted run's rerun decides as a clean run.
            run.arrange_schemas()
        finally:
            # Also on Ctrl-C or an unexpected error: record what was published so far.
            run.save()
            with contextlib.suppress(OSError):  # only when empty: a worker may still write
                os.rmdir(os.path.join(dest, STAGING_NAME))
    report.seconds = time.perf_counter() - started
    return report


def _check_reader_options(format: str | None, options: Mapping[str, Any]) -> None:
    """Refuse an unknown ``format`` (``ValueError``), option name (``TypeError``, with
    a hint for a near miss) or a value no format allows (``level="bogus"``,
    ``ValueError``) before the dataset is touched: every file's read would fail on it,
    and a run whose settings changed replaces the parts made before."""
    from ._params import COMMON, HINTS
    from .registry import check_option_values, option_names

    known = option_names(format) | ({param.name for param in COMMON} - set(SET_BY_INGESTION))
    unknown = sorted(set(options) - known)
    if unknown:
        first = unknown[0]
        hint = HINTS.get(first) or next(iter(difflib.get_close_matches(first, known, n=1)),
                                        None)
        raise TypeError(f"unexpected option(s) for ingest"
                        f"{f' (format {format!r})' if format else ''}: {unknown}"
                        + (f"; did you mean {hint}=?" if hint else ""))
    check_option_values(options, format)


def _make_dataset_folder(dest: str) -> None:
    """Create ``dest`` (and its parents); an error names ``dest`` itself, the output,
    even when a parent could not be made."""
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename not in (None, dest) else ""
        raise OSError(exc.errno, f"{exc.strerror or exc}{where}", dest) from None


def _usable_cores() -> int:
    """Default ``threads``: every usable core (also inside a dask worker, unlike reads:
    the ingestion's threads are its only parallelism)."""
    return usable_cores()


def _existing_parts(dest: str) -> set[str]:
    """Relative paths of every bindf part file under ``dest/format=*``."""
    found: set[str] = set()
    if not os.path.isdir(dest):
        return found
    for entry in os.scandir(dest):
        if not (entry.is_dir() and entry.name.startswith("format=")):
            continue
        for root, _dirs, files in os.walk(entry.path):
            rel = os.path.relpath(root, dest).replace(os.sep, "/")
            found.update(f"{rel}/{name}" for name in files if _PART_NAME.match(name))
    return found


def _recover(dest: str, manifest: Manifest, existing: set[str]) -> None:
    """Undo what an interrupted run left: staged files, and published parts that the
    manifest does not list (their sources are not recorded as done, so they are
    converted again)."""
    shutil.rmtree(os.path.join(dest, STAGING_NAME), ignore_errors=True)
    for part in sorted(existing - manifest.referenced_parts()):
        path = os.path.join(dest, *part.split("/"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        remove_empty_dirs(os.path.dirname(path), dest)
        existing.discard(part)


class _Run:
    """The coordinator's state during one :func:`ingest` call."""

    def __init__(self, dest: str, manifest: Manifest, report: IngestReport,
                 existing: set[str], dry_run: bool) -> None:
        self.dest = dest
        self.manifest = manifest
        self.report = report
        self.existing = existing
        self.dry_run = dry_run
        self.dirty = False
        #: ``settings_hash`` of this run's settings, and the one that entries written
        #: before entries recorded theirs were made with (the manifest's settings).
        self.settings_hash = ""
        self.legacy_hash = settings_hash(manifest.settings)
        #: Parts that sources no longer use: deleted once a saved manifest no longer
        #: lists them (see :meth:`save`).
        self.superseded: set[str] = set()

    def save(self) -> None:
        """Save the manifest if it changed, then delete the parts it stopped listing: in
        this order, so that the saved manifest never lists a deleted part, and a scan
        built from the previous manifest stays readable until the new one is saved."""
        if not self.dirty:
            return
        self.manifest.save(self.dest)
        self.dirty = False
        listed = self.manifest.referenced_parts()
        for part in sorted(self.superseded - listed):
            path = os.path.join(self.dest, *part.split("/"))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            remove_empty_dirs(os.path.dirname(path), self.dest)
            self.existing.discard(part)
        self.superseded.clear()

    def current(self, entry: dict[str, Any]) -> bool:
        """Whether an entry was made with this run's settings."""
        return entry.get("settings_hash", self.legacy_hash) == self.settings_hash

    def resolve_settings(self, requested: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        """Fix undeclared header column types (from the manifest when it already has the
        column, else from the headers), and record them in the manifest if they changed
        (each entry keeps the hash of the settings it was made with, see :meth:`current`)."""
        old = self.manifest.settings or {}
        columns = dict(requested["header_columns"])
        old_columns = old.get("header_columns") or {}
        undeclared = [n for n, kind in columns.items() if kind is None]
        if undeclared and all(n in old_columns for n in undeclared):
            columns.update({n: old_columns[n] for n in undeclared})
        elif undeclared:
            headers = [e["header"] for e in self.manifest.sources.values() if e.get("header")]
            todo = [p for p in paths if p not in self.manifest.sources]
            headers += read_headers_for_types(todo, requested["format"], requested["options"])
            for name in undeclared:
                columns[name] = infer_column_type(header_value(h, name) for h in headers)
        try:  # as the manifest will give it back (tuples become lists …)
            settings = json.loads(json.dumps({**requested, "header_columns": columns}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"reader options must be JSON values to be recorded: {exc}") from None
        self.settings_hash = settings_hash(settings)
        if self.settings_hash != self.legacy_hash and not self.dry_run:
            # Entries of an earlier bindf were made with the manifest's settings: say so
            # before they change, or a checkpoint would make them look current.
            for entry in self.manifest.sources.values():
                entry.setdefault("settings_hash", self.legacy_hash)
            self.manifest.settings = settings
            # Every part is remade, and its schema may change with the settings (header
            # columns, level= …): the main schemas are chosen again at the run's end.
            self.manifest.schemas.clear()
            self.dirty = True
        return settings

    def plan(self, paths: list[str], settings: dict[str, Any], settle: float,
             force: bool, fsync: bool) -> list[Job]:
        """The jobs of this run; fills the report's unchanged/pending/failed lists, and
        for a dry run its ingested/replaced lists."""
        now = time.time()
        report = self.report
        todo = list(paths)
        # Every part must agree with the settings, not only those of this run's sources:
        # recorded sources made with other settings are converted again too (all of them
        # after a settings change, the rest of them after an interrupted one).
        named = set(paths)
        todo += sorted(p for p, e in self.manifest.sources.items()
                       if p not in named and not self.current(e) and os.path.exists(p))
        jobs = []
        for path in todo:
            entry = self.manifest.sources.get(path)
            try:
                st = os.stat(path)
            except OSError as exc:
                report.failed[path] = f"{exc.strerror or exc}"
                continue
            if settle and now - st.st_mtime < settle:
                report.pending.append(path)
                continue
            remake = force or (entry is not None and not self.current(entry))
            if not remake and entry is not None and self._up_to_date(entry, st):
                if entry.get("error"):
                    report.failed[path] = entry["error"]["message"]
                else:
                    report.unchanged.append(path)
                continue
            reuse_hash = entry is not None and not remake \
                and not entry.get("error") and self._parts_present(entry)
            if self.dry_run:
                self._predict(path, entry, st, reuse_hash)
                continue
            jobs.append(Job(path=path, key=entry["key"] if entry else source_key(path),
                            dest=self.dest, settings=settings,
                            old_sha256=entry.get("sha256") if reuse_hash else None,
                            settings_hash=self.settings_hash,
                            fsync=fsync, main_schemas=dict(self.manifest.schemas)))
        return jobs

    def _predict(self, path: str, entry: dict[str, Any] | None, st: os.stat_result,
                 reuse_hash: bool) -> None:
        """A dry run's verdict on a file that is not up to date: what :func:`run_job`
        would decide, hashing the file as it would (a touched file is unchanged)."""
        report = self.report
        if entry is None:
            report.ingested.append(path)
            return
        if reuse_hash and entry.get("size") == st.st_size:
            try:
                same = file_sha256(path) == entry.get("sha256")
            except OSError as exc:
                report.failed[path] = f"{exc.strerror or exc}"
                return
            if same:
                report.unchanged.append(path)
                return
        report.replaced.append(path)

    def _parts_present(self, entry: dict[str, Any]) -> bool:
        return all(part in self.existing for part in entry.get("parts") or ())

    def _up_to_date(self, entry: dict[str, Any], st: os.stat_result) -> bool:
        if entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
            return False
        error = entry.get("error")
        if error:
            return not error.get("retry")  # data errors wait for the file to change
        return self._parts_present(entry)

    # -- one folder per schema ----------------------------------------------------------
    def record_legacy_schemas(self) -> None:
        """Fingerprint the parts of entries written before the manifest recorded schemas
        (from their Parquet footers, once), so that :meth:`arrange_schemas` can separate
        the schemas they mixed in one ``format=`` folder."""
        for entry in self.manifest.sources.values():
            parts = entry.get("parts")
            if "schema" in entry or not parts or not self._parts_present(entry):
                continue  # (missing parts: the source is converted again anyway)
            try:
                entry["schema"] = schema_fingerprint(part_schema(self.dest, parts[0]))
            except (OSError, ValueError):  # (a damaged part: left as it was)
                continue
            self.dirty = True

    def arrange_schemas(self) -> None:
        """Choose the main schema of each format that has none (or none of whose sources
        are left), and move the parts that are not in their schema's folder."""
        # Every run walks every entry, so this is one cheap pass in the usual case (the
        # no-op rerun of a big campaign); a second one only when a main schema changed.
        counts, misplaced = self._schema_census()
        mains = self.manifest.schemas
        chosen = False
        for name in sorted(set(mains) | {kind for kind, _ in counts}):
            fingerprints = {f: n for (kind, f), n in counts.items() if kind == name}
            if mains.get(name) in fingerprints:
                continue
            if fingerprints:
                mains[name] = self._main_schema(name, fingerprints)
            else:
                del mains[name]
            chosen = self.dirty = True
        if chosen:
            _, misplaced = self._schema_census()
        converted = set(self.report.ingested) | set(self.report.replaced)
        for path, top in sorted(misplaced):
            if self._move_parts(self.manifest.sources[path], top) and path not in converted:
                self.report.moved.append(path)

    def _schema_census(self) -> tuple[dict[tuple[str, str], int], list[tuple[str, str]]]:
        """Sources per (format, schema fingerprint), and the sources whose parts are not
        in the folder of their schema (with that folder) under the current main schemas."""
        mains = self.manifest.schemas
        counts: dict[tuple[str, str], int] = {}
        tops: dict[tuple[str, str], str] = {}
        misplaced = []
        for path, entry in self.manifest.sources.items():
            parts, fingerprint = entry.get("parts"), entry.get("schema")
            if not parts or not fingerprint:
                continue
            kind = (entry["format"], fingerprint)
            counts[kind] = counts.get(kind, 0) + 1
            top = tops.get(kind)
            if top is None:
                top = tops[kind] = format_partition(*kind, mains.get(kind[0])) + "/"
            if not all(part.startswith(top) for part in parts):
                misplaced.append((path, top[:-1]))
        return counts, misplaced

    def _main_schema(self, name: str, counts: dict[str, int]) -> str:
        """The schema of most sources; on a tie, the one with more columns (say, AstroPix
        4 over AstroPix 3); then the greater fingerprint (any fixed choice)."""
        most = max(counts.values())
        tied = sorted(f for f, n in counts.items() if n == most)
        if len(tied) == 1:
            return tied[0]
        widths = dict.fromkeys(tied, 0)
        for entry in self.manifest.sources.values():
            fingerprint = entry.get("schema")
            if entry.get("format") == name and widths.get(fingerprint) == 0 \
                    and entry.get("parts"):
                with contextlib.suppress(OSError, ValueError):  # (ArrowInvalid: ValueError)
                    widths[fingerprint] = len(part_schema(self.dest, entry["parts"][0]))
        return max(tied, key=lambda f: (widths[f], f))

    def _move_parts(self, entry: dict[str, Any], top: str) -> bool:
        """Give a source's parts their paths below ``top`` (same partition folders and
        names) as hard links: the old paths, which the saved manifest lists, stay until
        the manifest that lists the new ones is saved (:meth:`save` deletes them then).
        Interrupted before that, the manifest keeps the old paths: the next run's
        recovery deletes the new ones and its end moves the parts again. A part gone
        missing leaves the entry as it was (the next run converts the source again)."""
        moved = []
        for part in entry["parts"]:
            new = "/".join([top, *part.split("/")[1:]])
            old_path = os.path.join(self.dest, *part.split("/"))
            new_path = os.path.join(self.dest, *new.split("/"))
            os.makedirs(os.path.dirname(new_path), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # (unlisted: left by a crash)
                os.unlink(new_path)
            try:
                os.link(old_path, new_path)
            except FileNotFoundError:
                return False
            except OSError:  # a filesystem without hard links: rename (atomic too)
                try:
                    os.replace(old_path, new_path)
                except FileNotFoundError:
                    return False
            self.existing.add(new)
            moved.append(new)
        self.superseded.update(entry["parts"])
        entry["parts"] = moved
        self.dirty = True
        return True

    def find_removed(self, paths: list[str], prune: bool) -> None:
        current = set(paths)
        for path in sorted(self.manifest.sources):
            if path in current or os.path.exists(path):
                continue
            self.report.removed.append(path)
            if not prune:
                if not self.current(self.manifest.sources[path]) and not self.dry_run:
                    # Its parts cannot be remade: they keep other settings (partition
                    # folders, header columns) than the rest, which breaks folder readers.
                    warn(BindfWarning(
                        f"{path}: removed from disk; its parts were made with earlier "
                        "settings and cannot be made again: read_dataset leaves them out, "
                        "and readers of the folders may fail on them; prune=True (--prune) "
                        "deletes them"))
                continue
            self.report.pruned.append(path)
            if self.dry_run:
                continue
            # Deleted by the next save, once the manifest no longer lists them.
            self.superseded.update(self.manifest.sources[path].get("parts") or ())
            del self.manifest.sources[path]
            self.dirty = True

    # -- execution --------------------------------------------------------------------
    def execute(self, jobs: list[Job], threads: int, client: Any, progress: bool) -> None:
        if not jobs:
            return
        bar = _ProgressBar(jobs) if progress else None
        last_save = time.monotonic()
        runner = _Runner(jobs, threads, client)  # (starts the jobs)
        try:
            for result in runner.results():
                self._record(result)
                if bar is not None:
                    bar.update(result["bytes"])
                if self.dirty and time.monotonic() - last_save > CHECKPOINT_SECONDS:
                    self.save()
                    last_save = time.monotonic()
        finally:
            # Interrupted: stop the running jobs, and record those that published
            # their parts before they saw the request (or the parts would be in the
            # dataset folder but not in the manifest until the next run).
            for result in runner.stop():
                self._record(result)
            if bar is not None:
                bar.close()

    def _record(self, result: dict[str, Any]) -> None:
        """Enter a job's result (:func:`_run_job`) in the manifest and the report."""
        path, status, entry = result["path"], result["status"], result["entry"]
        report = self.report
        if status == "pending":
            report.pending.append(path)
            return
        old = self.manifest.sources.get(path)
        if status == "unchanged":  # same content, new mtime: only the record changes
            # (only asked of an entry made with this run's settings, see ``plan``)
            self.manifest.sources[path] = {**old, **entry,
                                           "settings_hash": self.settings_hash}
            report.unchanged.append(path)
        else:
            entry["warnings"] = result["warnings"]
            self.manifest.sources[path] = entry
            self.superseded.update(set((old or {}).get("parts") or ()) - set(entry["parts"]))
            if entry["warnings"]:
                report.warnings[path] = list(entry["warnings"])
            if status == "failed":
                report.failed[path] = entry["error"]["message"]
            else:
                # A file that failed before and reads now is new data, not a replacement.
                fresh = old is None or bool(old.get("error"))
                (report.ingested if fresh else report.replaced).append(path)
                report.rows += entry["rows"]
                report.bytes += result["bytes"]
        self.dirty = True


class _Runner:
    """Runs the jobs locally in threads, or on a dask cluster.

    :meth:`results` yields results as jobs end; :meth:`stop` (always called, also after
    an exception) stops the jobs still running and returns the results of those that
    ended but were not yielded. Local jobs run in worker threads even with ``threads=1``,
    so that Ctrl-C lands in the coordinating thread, never inside a job between
    publishing its parts and returning them.
    """

    def __init__(self, jobs: list[Job], threads: int, client: Any) -> None:
        self.client = client
        self.taken: set[Any] = set()
        if client is not None:  # (no stop Event: it does not pickle; dask cancels instead)
            self.pool = None
            sent = specs_for_workers()
            self.futures = client.map(_run_job, [replace(job, formats_sent=sent)
                                                 for job in jobs], pure=False)
            return
        self.event = threading.Event()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="bindf-ingest")
        self.futures = [self.pool.submit(_run_job, replace(job, stop=self.event))
                        for job in jobs]

    def results(self) -> Iterator[dict[str, Any]]:
        if self.client is not None:
            from distributed import as_completed as completed
        else:
            completed = as_completed
        for future in completed(self.futures):
            self.taken.add(future)
            yield future.result()

    def stop(self) -> list[dict[str, Any]]:
        if self.pool is None:
            self.client.cancel([f for f in self.futures if f not in self.taken])
            return [f.result() for f in self.futures
                    if f not in self.taken and f.status == "finished"]
        self.event.set()
        while True:
            try:
                # A job sees the request at its next batch and removes its staged files:
                # wait for that, also through a second Ctrl-C.
                self.pool.shutdown(wait=True, cancel_futures=True)
                break
            except BaseException:  # noqa: BLE001, S112 - see above
                continue
        late = [f for f in self.futures if f not in self.taken and f.done()
                and not f.cancelled() and f.exception() is None]
        self.taken.update(late)
        return [f.result() for f in late]


def _run_job(job: Job) -> dict[str, Any]:
    """:func:`run_job`, returning the bindf warnings of its file as text too
    (``"warnings"``): they are recorded in the manifest and the report, not issued (and
    warnings raised on a cluster's worker would end up in the worker's log).

    A sink of this thread's own collects them: jobs run side by side on threads, here
    and on a worker, and ``warnings.catch_warnings`` would swap the process-wide
    filters under all of them (and under the user's other threads)."""
    sink = WarningSink()
    with sink.active():
        result = run_job(job)
    result["warnings"] = [str(w) for w in sink.recorded]
    return result


class _ProgressBar:
    """tqdm over the bytes of the files to convert, with the file count beside it."""

    def __init__(self, jobs: list[Job]) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            from .errors import missing_dependency

            raise missing_dependency("tqdm", "progress") from None
        total = 0
        for job in jobs:
            with contextlib.suppress(OSError):
                total += os.path.getsize(job.path)
        self.files = len(jobs)
        self.done = 0
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                        desc="ingest")
        self.bar.set_postfix_str(f"0/{self.files} files")

    def update(self, nbytes: int) -> None:
        self.done += 1
        self.bar.set_postfix_str(f"{self.done}/{self.files} files", refresh=False)
        self.bar.update(nbytes)

    def close(self) -> None:
        self.bar.close()


# -- watching ---------------------------------------------------------------------------
def watch(sources: Any, dest: str | os.PathLike[str], *, interval: float = 10.0,
          max_runs: int | None = None,
          on_report: Callable[[IngestReport], None] | None = None,
          **kwargs: Any) -> IngestReport | None:
    """Run :func:`ingest` every ``interval`` seconds until Ctrl-C (or ``max_runs`` runs).

    A polling loop: each run converts only what changed since the last one, and files
    still being written wait for ``settle`` seconds of quiet (default here: ``interval``).
    ``on_report`` is called after each run. Returns the last report; a Ctrl-C between
    runs ends the loop quietly, one during a run interrupts that run (a later run picks
    up where it stopped). A growing file is converted whole once it has settled (and
    again, whole, if it grows later): this loop does not follow files as they grow; for
    rows while they are written, use :func:`bindf.follow`. ``interval`` is a positive
    number of seconds, ``max_runs`` at least 1 (runs that happened: a round in which
    another process held the dataset's lock, a manual ``bindf ingest`` say, is skipped
    with a warning and the loop goes on).
    """
    check_seconds("interval", interval, positive=True)
    if max_runs is not None and max_runs < 1:
        raise ValueError(f"max_runs must be at least 1, not {max_runs}")
    kwargs.setdefault("settle", interval)
    report = None
    runs = 0
    while max_runs is None or runs < max_runs:
        try:
            report = ingest(sources, dest, **kwargs)
        except DatasetLockedError as exc:  # a watcher outlives another run: try again
            warn(BindfWarning(f"{exc}; trying again in {interval:g} s"))
        else:
            runs += 1
            if on_report is not None:
                on_report(report)
            if max_runs is not None and runs >= max_runs:
                break
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            break
    return report

