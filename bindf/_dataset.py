"""``bindf.read_dataset``: a lazy polars scan of what ``bindf ingest`` wrote.

The manifest (``DEST/_bindf_manifest.json``, :mod:`bindf._manifest`) lists every part
of every source, so a scan reads exactly those parts, one scan per schema
(:mod:`bindf._ingest`: one folder per schema). Ingestion never overwrites a listed part
with other data and deletes parts only after saving a manifest that no longer lists
them, so a scan reads its snapshot or, once such a manifest is saved, fails.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ._ingest_worker import part_schema, schema_fingerprint
from ._manifest import MANIFEST_NAME, Manifest, settings_hash
from ._warnings import warn
from .errors import BindfWarning

if TYPE_CHECKING:
    import polars as pl


def _partition_schema(partition_by: list[str],
                      entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The partition columns' types, from the header values the manifest keeps for each
    source: polars would guess them from the folder names, and read the text "1.10"
    as the number 1.1, the same as "1.1" ("007" as 7.0). A field whose values are all
    integers is Int64 (text past int64's range, exactly as written), all numbers
    Float64, all booleans Boolean, anything else text;
    None (polars guesses) for a dataset whose manifest kept no values (made by an
    earlier bindf)."""
    import polars as pl

    if any("partition" not in entry for entry in entries):
        return None
    schema: dict[str, Any] = {"format": pl.String}
    for name in partition_by:
        values = [v for entry in entries
                  if (v := (entry["partition"] or {}).get(name)) is not None]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if values and all(isinstance(v, bool) for v in values):
            schema[name] = pl.Boolean
        elif values and len(numbers) == len(values):
            integers = all(isinstance(v, int) for v in numbers)
            schema[name] = (pl.Float64 if not integers
                            else pl.Int64 if all(-2**63 <= v < 2**63 for v in numbers)
                            else pl.String)  # (an integer past int64: its digits, exact)
        else:
            schema[name] = pl.String
    return schema


def read_dataset(dest: str | os.PathLike[str], format: str | None = None, *,
                 hive_partitioning: bool = True) -> pl.LazyFrame:
    """A lazy polars scan of the parts of one format in an ingested dataset.

    Scans exactly the parts the manifest lists when called, with the partition columns
    when ``hive_partitioning``. While another run ingests, collecting the scan gives the
    rows of that snapshot until the run saves a manifest that no longer lists some of
    its parts (a re-converted source's old parts); then it raises polars'
    ``FileNotFoundError``, and the scan must be built again. It never mixes old and new
    rows. The scan's ``lf.bindf`` metadata comes from the manifest: ``lf.bindf.header``
    is the first source's header, ``lf.bindf.source`` the list of sources, and
    ``lf.bindf.info["headers"]`` maps every source to its header. ``format`` may be left
    out when the dataset holds one format.

    A format whose sources have several schemas (AstroPix 3 and 4 runs are both
    ``"apx"``) gives all of them in one frame: the main schema's columns first, a column
    missing from a schema is null there, and a column typed differently takes the type
    that holds both (``pl.concat(how="diagonal_relaxed")``). The ``format`` partition
    column tells them apart (``"apx"``, ``"apx-<fingerprint>"``), and ``format=`` also
    takes such a folder's value to scan that schema only.
    """
    import polars as pl

    from ._frames import set_polars_info
    from .arrow import build_info

    dest = os.path.abspath(os.fspath(dest))
    if not os.path.exists(os.path.join(dest, MANIFEST_NAME)):
        raise FileNotFoundError(2, "not a bindf dataset (no manifest)", dest)
    manifest = Manifest.load(dest)
    entries = {p: e for p, e in manifest.sources.items() if e.get("parts")}
    # Parts made with other settings than the dataset's (a settings change that was
    # interrupted, or whose sources are gone from disk) have other columns or partition
    # folders: scanned with the rest they would fail the whole scan.
    current = settings_hash(manifest.settings)
    stale = [p for p, e in entries.items() if e.get("settings_hash", current) != current]
    if stale:
        warn(BindfWarning(
            f"{dest}: {len(stale)} source(s) have parts made with earlier settings and are "
            f"left out (first: {stale[0]}); run bindf ingest again (prune=True deletes "
            "those of files removed from disk)"))
        left_out = set(stale)
        entries = {p: e for p, e in entries.items() if p not in left_out}
    formats = sorted({e["format"] for e in entries.values()})
    if format is None:
        if len(formats) != 1:
            raise ValueError(f"the dataset holds formats {formats}; pass format=")
        format = formats[0]
    folders = {p: unquote(e["parts"][0].split("/")[0].removeprefix("format="))
               for p, e in entries.items()}
    chosen = {p: e for p, e in entries.items() if format in (e["format"], folders[p])}
    if not chosen:
        raise ValueError(f"the dataset holds no {format!r} data; it has {formats} (in "
                         f"folders {sorted({f'format={v}' for v in folders.values()})})")
    name = next(iter(chosen.values()))["format"]
    # One scan per schema (a dataset written before bindf kept one folder per schema may
    # mix them in one folder; its entries have no recorded fingerprint).
    groups: dict[str, list[str]] = {}
    for entry in chosen.values():
        fingerprint = entry.get("schema") or schema_fingerprint(
            part_schema(dest, entry["parts"][0]))
        groups.setdefault(fingerprint, []).extend(
            os.path.join(dest, *part.split("/")) for part in entry["parts"])
    main = manifest.schemas.get(name)
    order = sorted(groups, key=lambda f: (f != main, min(groups[f])))
    hive_schema = (_partition_schema(manifest.settings.get("partition_by") or [],
                                     list(chosen.values())) if hive_partitioning else None)
    scans = [pl.scan_parquet(groups[f], hive_partitioning=hive_partitioning,
                             hive_schema=hive_schema) for f in order]
    lf = scans[0] if len(scans) == 1 else pl.concat(scans, how="diagonal_relaxed")
    info = build_info(name, next(iter(chosen.values()))["header"], list(chosen))
    info["headers"] = {p: e["header"] for p, e in chosen.items()}
    info["dataset"] = dest
    set_polars_info(lf, info)
    return lf
