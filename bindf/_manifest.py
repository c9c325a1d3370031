"""The bookkeeping of an ingested dataset: its manifest and its lock (see :func:`bindf.ingest`).

The manifest, ``DEST/_bindf_manifest.json``, is the dataset's memory: for every source
file ingested, what the file was (size, mtime, SHA-256 of its content), what bindf made of
it (format, header, parts, rows, damage skipped) or why it failed. It is JSON because its
entries are nested (headers, lists of parts, errors), because there are thousands of them
at most (a few MB), and because any tool reads it (``json.load``, DuckDB's ``read_json``,
``jq``). It is replaced atomically (temporary file, fsync, rename), always *after* the
parts it lists were published and *before* the parts it no longer lists are deleted, so
it never lists a part that does not exist. The schema
is documented in ``docs/ingest.md``; :data:`MANIFEST_VERSION` changes when it does.

The lock, ``DEST/.bindf-ingest.lock``, keeps two ingestions from writing one dataset at
once. It is an OS advisory lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) held on
that file for the run's duration: the kernel drops it when the process ends in any way,
``kill -9`` included, so a killed run never leaves a stale lock behind and nothing has to
guess whether an owner is still alive. The file itself stays; it holds the owner's pid,
host and start time, only to name the owner in the error the second run gets.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from ._atomic import atomic_output
from ._version import __version__
from .errors import BindfError

MANIFEST_NAME = "_bindf_manifest.json"
LOCK_NAME = ".bindf-ingest.lock"
#: Parts are staged here before being renamed into place. pyarrow's dataset discovery
#: skips ``_``-prefixed names, but DuckDB's and polars' ``**`` globs do not: the staged
#: files' names end in :data:`STAGED_SUFFIX`, so that no ``*.parquet`` glob picks them up.
STAGING_NAME = "_bindf_staging"
STAGED_SUFFIX = ".parquet.tmp"
#: Version of the manifest layout (bumped on incompatible changes).
MANIFEST_VERSION = 1
#: Hex digits of a source's path hash in its part names (64 bits).
KEY_DIGITS = 16


class DatasetLockedError(BindfError):
    """Another ingestion holds the dataset's lock."""


class ManifestError(BindfError):
    """The manifest cannot be read (not JSON, or of an unknown version)."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def source_key(path: str) -> str:
    """The stable prefix of a source's part names: a hash of its absolute path.

    Stable across runs, machines and bindf versions (SHA-256 of the UTF-8 path). The rest
    of a part's name depends on what it was made from (``bindf._ingest_worker.part_tag``),
    so a changed file's new parts get new names and the old ones stay readable until the
    manifest no longer lists them.
    """
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:KEY_DIGITS]


def settings_hash(settings: dict[str, Any] | None) -> str:
    """16 hex digits identifying the settings a part was made with (recorded per source,
    so that a run can tell the parts an interrupted settings change left behind).

    Key order is ignored except in ``header_columns``, whose order is the parts' column
    order (it is hashed as a list of pairs)."""
    settings = dict(settings or {})
    settings["header_columns"] = [list(item) for item in
                                  (settings.get("header_columns") or {}).items()]
    text = json.dumps(settings, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_DIGITS]


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (hex), read in 1 MiB pieces."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


@dataclass
class Manifest:
    """The parsed manifest: dataset settings and one entry per source path.

    ``sources`` maps the absolute source path to its entry (a JSON object; keys are
    listed in ``docs/ingest.md``; on disk, a list of entries with a ``path`` key).
    ``settings`` is what the parts were made with (partitioning, header columns and their
    types, reader options): a run with other settings re-ingests every source.
    ``schemas`` maps each format to the fingerprint of its *main* schema, the one whose
    parts sit in ``format=<name>``; parts of the format's other schemas sit in
    ``format=<name>-<fingerprint>`` (see ``bindf._ingest_worker.format_partition``).
    """

    settings: dict[str, Any] | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str | None = None
    schemas: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, dest: str) -> Manifest:
        path = os.path.join(dest, MANIFEST_NAME)
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return cls()
        except ValueError as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}", path=path) from None
        if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
            found = data.get("manifest_version") if isinstance(data, dict) else None
            raise ManifestError(
                f"unsupported manifest version {found!r} (this bindf writes "
                f"{MANIFEST_VERSION})", path=path)
        sources = {}
        for entry in data.get("sources") or ():
            entry = dict(entry)
            sources[entry.pop("path")] = entry
        return cls(settings=data.get("settings"), sources=sources, created=data.get("created"),
                   schemas=dict(data.get("schemas") or {}))

    def save(self, dest: str) -> None:
        """Replace the manifest atomically (temporary file, fsync, rename)."""
        document = {
            "manifest_version": MANIFEST_VERSION,
            "bindf_version": __version__,
            "created": self.created or utc_now(),
            "updated": utc_now(),
            "settings": self.settings,
            "schemas": dict(sorted(self.schemas.items())),
            # A list of objects, not an object keyed by path: DuckDB's read_json, pandas'
            # json_normalize and jq handle a list of records naturally.
            "sources": [{"path": path, **entry} for path, entry in sorted(self.sources.items())],
        }
        # Compact: the C encoder (indent= would use the pure-Python one, ~10x slower on
        # thousands of headers). ``jq . _bindf_manifest.json`` pretty-prints it.
        text = json.dumps(document, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"))
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            # A file name that is not valid UTF-8 (Python holds its bytes as lone
            # surrogates): written as \udcXX escapes, valid JSON that json.loads turns
            # back into the same name, so the file is found again on the next run.
            data = json.dumps(document, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")
        with atomic_output(os.path.join(dest, MANIFEST_NAME)) as f:
            f.write(data)
        self.created = document["created"]

    def referenced_parts(self) -> set[str]:
        """Every part path (relative to the dataset, ``/``-separated) the manifest lists."""
        return {part for entry in self.sources.values() for part in entry.get("parts") or ()}


class DatasetLock:
    """An exclusive, crash-proof lock on a dataset folder (see the module docstring).

    ``with DatasetLock(dest):`` raises :class:`DatasetLockedError`, naming the owner,
    when another process (or another ``DatasetLock`` in this one) holds it.
    """

    def __init__(self, dest: str) -> None:
        self.path = os.path.join(dest, LOCK_NAME)
        self._file: io.FileIO | None = None

    def __enter__(self) -> DatasetLock:
        # A file object, not a bare descriptor, and closed on any failure before the
        # lock is handed over (a full disk while the owner is written, Ctrl-C): a lost
        # descriptor would hold the lock until the process ends, refusing every later
        # ingest of the dataset, this process's and any other's. Dropping a file object
        # that an interrupt kept from being assigned closes it too.
        lock_file = io.FileIO(self.path, "a+")  # create if missing, never truncate
        try:
            fd = lock_file.fileno()
            os.lseek(fd, 0, os.SEEK_SET)  # (Windows locks bytes from the position)
            try:
                _lock_fd(fd)
            except BlockingIOError:
                owner = _read_owner(fd)
                raise DatasetLockedError(
                    f"another bindf ingest is writing this dataset ({owner}); wait for it "
                    "to finish. The lock is released when that process ends, even if it is "
                    "killed", path=self.path) from None
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now(),
                     "bindf_version": __version__}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(owner).encode())  # (appended: at the new end, 0)
        except BaseException:
            lock_file.close()  # closing releases the lock
            raise
        self._file = lock_file
        return self

    def __exit__(self, *exc: object) -> None:
        lock_file, self._file = self._file, None
        if lock_file is not None:
            try:
                os.ftruncate(lock_file.fileno(), 0)
            finally:
                lock_file.close()  # closing releases the lock


def _lock_fd(fd: int) -> None:
    """Take an exclusive non-blocking lock on ``fd``; ``BlockingIOError`` if held."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            raise BlockingIOError("locked") from None
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_owner(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        owner = json.loads(os.read(fd, 4096) or b"{}")
        return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "owner unknown"
