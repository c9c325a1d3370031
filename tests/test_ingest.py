"""``bindf.ingest``: campaigns of many files into an incremental, crash-safe Parquet dataset.

The campaign is generated with bindf's own writers from the bundled samples: AstroPix
runs at several thresholds, sparse and dense IT02 traces, STT1 photon files, SP01 decay
curves, SPF1 phasors, plus damaged files (cut header, random bytes, a truncated tail) and
a file that is still being written. The kill -9 tests run ingestion in processes forked
from a forkserver that has bindf imported already, so each one starts in milliseconds.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import bindf
from bindf._ingest import DatasetLockedError, find_sources
from bindf._ingest_worker import part_tag, schema_fingerprint
from bindf._manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    STAGING_NAME,
    DatasetLock,
    Manifest,
    source_key,
)

SAMPLES = Path(bindf.__file__).parent / "samples"
#: Both are format "apx" (the reader tells the chip generation from the header), with
#: different columns: 18 for AstroPix 4, 12 for AstroPix 3.
APX4 = SAMPLES / "astropix_threshold_scan.apx"
APX3 = SAMPLES / "astropix3_injection_run.apx"
THRESHOLDS = (80.0, 100.0, 120.0, 150.0)


def _apx_templates(folder: Path) -> list[Path]:
    hits = bindf.read(SAMPLES / "astropix_threshold_scan.apx", output="polars")
    header = hits.bindf.header
    out = []
    for i, threshold in enumerate(THRESHOLDS):
        path = folder / f"apx_t{i}.apx"
        head = {**header, "args": {**header["args"], "threshold": threshold}}
        bindf.write_apx(path, hits.head(100 * (i + 1)), head)
        out.append(path)
    return out


def make_campaign(root: Path, n_apx: int = 160, n_flim: int = 20) -> dict[str, list[Path]]:
    """A few hundred small files of several formats, some damaged."""
    templates = root / "_templates"
    templates.mkdir(parents=True)
    apx = _apx_templates(templates)
    rng = np.random.default_rng(7)
    files: dict[str, list[Path]] = {"apx": [], "it02": [], "spectro": [], "sp01": [],
                                    "spf1": [], "damaged": []}
    for i in range(n_apx):
        day = root / "apx" / f"day{i % 4}"
        day.mkdir(parents=True, exist_ok=True)
        dest = day / f"run{i:04d}.apx"
        shutil.copyfile(apx[i % len(apx)], dest)
        files["apx"].append(dest)
    flim = root / "flim"
    flim.mkdir()
    for i in range(n_flim):
        n = 50 + 10 * i
        trace = {"time_ns": np.arange(1, n + 1) * 1e6,
                 "ch1": rng.integers(0, 3, n).astype("u4"),
                 "ch2": rng.integers(0, 50, n).astype("u4")}
        path = flim / f"trace{i:03d}.bin"
        bindf.write_it02(path, trace, {"channels": [0, 1], "bin_width_micros": 1000},
                         layout="sparse" if i % 2 else "dense")
        files["it02"].append(path)
        events = {"event": rng.integers(0, 4, n).astype("u1"),
                  "microtime_ns": rng.random(n), "macrotime_ns": np.sort(rng.random(n)) * 1e6}
        path = flim / f"photons{i:03d}.bin"
        bindf.write_spectro(path, events, {"channels": [0, 1, 2, 3], "laser_period_ns": 12.5})
        files["spectro"].append(path)
    for i in range(4):
        path = flim / f"decay{i}.bin"
        shutil.copyfile(SAMPLES / "decay_curves_sp01.bin", path)
        files["sp01"].append(path)
        path = flim / f"phasors{i}.bin"
        shutil.copyfile(SAMPLES / "phasors_spf1.bin", path)
        files["spf1"].append(path)
    damaged = root / "apx" / "damaged"
    damaged.mkdir()
    raw = apx[0].read_bytes()
    (damaged / "cut_header.apx").write_bytes(raw[:60])
    (damaged / "noise.bin").write_bytes(rng.integers(0, 256, 3000, dtype="u1").tobytes())
    files["damaged"] += [damaged / "cut_header.apx", damaged / "noise.bin"]
    # A truncated tail is not a failure: the complete readouts are kept, with a warning.
    sample = (SAMPLES / "astropix_threshold_scan.apx").read_bytes()
    (root / "apx" / "truncated.apx").write_bytes(sample[:-7])
    files["apx"].append(root / "apx" / "truncated.apx")
    shutil.rmtree(templates)
    return files


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("campaign")
    return root, make_campaign(root)


def copy_campaign(campaign, tmp_path: Path) -> tuple[Path, dict[str, list[Path]]]:
    root, files = campaign
    shutil.copytree(root, tmp_path / "src")
    return tmp_path / "src", {k: [tmp_path / "src" / p.relative_to(root) for p in v]
                              for k, v in files.items()}


def snapshot(dest: Path) -> dict[str, object]:
    """Every file of a dataset (content of parts, manifest minus volatile fields)."""
    out: dict[str, object] = {}
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest).as_posix()
        if path.is_dir() or rel == LOCK_NAME:
            continue
        if rel == MANIFEST_NAME:
            manifest = json.loads(path.read_text())
            for entry in manifest["sources"]:
                entry.pop("ingested")
                # An unknown-format message lists every registered format, and this test
                # process registers the test plugins, which subprocesses and dask workers
                # do not: compare the message up to that list.
                error = entry.get("error") or {}
                if "message" in error:
                    error["message"] = error["message"].split("; bindf reads:")[0]
            out[rel] = {"settings": manifest["settings"], "schemas": manifest["schemas"],
                        "sources": manifest["sources"]}
        else:
            assert rel.endswith(".parquet") and rel.startswith("format="), rel
            table = pq.read_table(path, partitioning=None)
            out[rel] = (table.to_pydict(), table.schema.metadata)
    return out


def _part_name(entry: dict, i: int = 0) -> str:
    """The file name of a source's part ``i``: ``<key>-<tag>-<i>.parquet``, the tag a hash
    of the source's content, the settings and the bindf version."""
    return f"{entry['key']}-{part_tag(entry['sha256'], entry['settings_hash'])}-{i}.parquet"


def _manifest(dest: Path) -> dict:
    """The manifest with ``sources`` keyed by path (on disk: a list with ``path``)."""
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    manifest["sources"] = {e.pop("path"): e for e in manifest["sources"]}
    return manifest


def test_campaign_is_ingested_and_a_rerun_changes_nothing(campaign, tmp_path: Path) -> None:
    root, files = campaign
    dest = tmp_path / "ds"
    report = bindf.ingest(root, dest, header_columns=["readout_uid", "channels"],
                          partition_by=["args.threshold"])
    good = [p for k, v in files.items() if k != "damaged" for p in v]
    assert sorted(report.ingested) == sorted(str(p) for p in good)
    assert sorted(report.failed) == sorted(str(p) for p in files["damaged"])
    assert not report.ok
    assert "header" in report.failed[str(files["damaged"][0])]
    manifest = _manifest(dest)
    truncated = manifest["sources"][str(root / "apx" / "truncated.apx")]
    assert truncated["error"] is None and "truncated" in truncated["warnings"][0]

    # Each source's part holds exactly what bindf.read gives, plus source + header columns.
    for path in [files["apx"][0], files["apx"][1], files["it02"][1], files["sp01"][0]]:
        entry = manifest["sources"][str(path)]
        (part,) = entry["parts"]
        table = pl.read_parquet(dest / part)
        expected = bindf.read(path, output="polars")
        assert table.drop("source", "readout_uid", "channels").equals(expected)
        assert table["source"].unique().to_list() == [str(path)]
        assert entry["rows"] == len(expected) and entry["header"] == expected.bindf.header
        back = bindf.read_parquet(dest / part)  # bindf metadata in every part
        assert back.attrs["bindf"]["header"] == expected.bindf.header
        assert back.attrs["bindf"]["source"] == str(path)
    assert manifest["settings"]["header_columns"] == {"readout_uid": "int64",
                                                      "channels": "string"}
    with pytest.raises(ValueError, match="both a partition and a header column"):
        bindf.ingest(root, dest, header_columns=["args.threshold"], partition_by="args.threshold")

    # A reader filters runs by header values without opening a binary.
    scan = pl.scan_parquet(f"{dest}/format=apx/**/*.parquet", hive_partitioning=True)
    counts = scan.group_by("args.threshold").agg(pl.col("source").n_unique()).collect()
    assert sorted(counts.rows()) == [(80.0, 40), (100.0, 41), (120.0, 40), (150.0, 40)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bindf.BindfWarning)  # the truncated run
        total = sum(len(bindf.read(p, output="arrow")) for p in files["apx"])
    assert scan.select(pl.len()).collect().item() == total
    lf = bindf.read_dataset(dest, format="apx")
    assert lf.select(pl.len()).collect().item() == total
    assert lf.bindf.header["args"]["threshold"] in THRESHOLDS
    assert set(lf.bindf.info["headers"]) == {str(p) for p in files["apx"]}
    assert lf.filter(pl.col("args.threshold") == 150.0).select("source").unique() \
        .collect().height == 40

    before = snapshot(dest)
    mtimes = {p: p.stat().st_mtime_ns for p in dest.rglob("*.parquet")}
    manifest_bytes = (dest / MANIFEST_NAME).read_bytes()
    again = bindf.ingest(root, dest, header_columns=["readout_uid", "channels"],
                         partition_by=["args.threshold"])
    assert not again.ingested and not again.replaced
    assert len(again.unchanged) == len(good) and sorted(again.failed) == sorted(report.failed)
    assert snapshot(dest) == before
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*.parquet")} == mtimes
    assert (dest / MANIFEST_NAME).read_bytes() == manifest_bytes  # not even rewritten


def test_changed_added_removed_and_touched(campaign, tmp_path: Path) -> None:
    root, files = campaign
    src = tmp_path / "src"
    shutil.copytree(root / "apx" / "day0", src)  # 40 runs at threshold 80
    dest = tmp_path / "ds"
    kwargs = {"partition_by": "args.threshold", "threads": 2}
    bindf.ingest(src, dest, **kwargs)
    changed, touched, gone = sorted(src.iterdir())[:3]
    manifest = _manifest(dest)
    old_part = manifest["sources"][str(changed)]["parts"][0]
    # Changed: another threshold, so its part moves to another partition.
    shutil.copyfile(files["apx"][1], changed)
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    gone.unlink()
    added = src / "new.apx"
    shutil.copyfile(files["apx"][2], added)

    dry = bindf.ingest(src, dest, dry_run=True, prune=True, **kwargs)
    # The dry run hashes the touched file as the real run does: unchanged, not replaced.
    assert dry.ingested == [str(added)] and dry.replaced == [str(changed)]
    assert str(touched) in dry.unchanged
    assert dry.removed == [str(gone)] and dry.pruned == [str(gone)]
    assert (dest / old_part).exists() and str(gone) in _manifest(dest)["sources"]

    report = bindf.ingest(src, dest, **kwargs)
    assert report.ingested == [str(added)] and report.replaced == [str(changed)]
    assert str(touched) in report.unchanged  # content hash equal: not re-converted
    assert report.removed == [str(gone)] and not report.pruned
    manifest = _manifest(dest)
    assert manifest["sources"][str(touched)]["mtime_ns"] == touched.stat().st_mtime_ns
    new_part = manifest["sources"][str(changed)]["parts"][0]
    assert new_part.startswith("format=apx/args.threshold=100.0/")
    assert new_part != old_part and not (dest / old_part).exists()
    assert (dest / manifest["sources"][str(gone)]["parts"][0]).exists()

    pruned = bindf.ingest(src, dest, prune=True, **kwargs)
    assert pruned.pruned == [str(gone)]
    assert str(gone) not in _manifest(dest)["sources"]
    # Same dataset as a clean ingestion of the folder as it is now.
    assert snapshot(dest) == snapshot(_fresh(src, tmp_path / "clean", **kwargs))
    rows = pl.scan_parquet(f"{dest}/**/*.parquet", hive_partitioning=True).group_by(
        "source").len().collect()
    recorded = _manifest(dest)["sources"]
    assert dict(rows.rows()) == {p: e["rows"] for p, e in recorded.items()}  # no duplicate


def test_settings_change_and_force_rebuild_everything(campaign, tmp_path: Path) -> None:
    root, files = campaign
    dest = tmp_path / "ds"
    bindf.ingest(root / "flim", dest)
    report = bindf.ingest(root / "flim", dest, header_columns=["laser_period_ns"])
    assert len(report.replaced) == len(list((root / "flim").iterdir()))
    assert snapshot(dest) == snapshot(_fresh(root / "flim", tmp_path / "c1",
                                             header_columns=["laser_period_ns"]))
    forced = bindf.ingest(root / "flim", dest, header_columns=["laser_period_ns"], force=True)
    assert len(forced.replaced) == len(report.replaced)


def test_a_misspelt_option_or_format_is_refused_before_the_dataset_is_touched(
        campaign, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in an option name or the format failed every file's read, and a run whose
    settings changed replaces the parts made before: the dataset lost every part."""
    from bindf.cli import main

    root, files = campaign
    dest = tmp_path / "ds"
    bindf.ingest(files["it02"][:2], dest)
    before = snapshot(dest)
    with pytest.raises(TypeError, match=r"\['levle'\]; did you mean level=\?"):
        bindf.ingest(files["it02"][:2], dest, levle="readouts")
    with pytest.raises(TypeError, match=r"format 'it02'\): \['level'\]"):
        bindf.ingest(files["it02"][:2], dest, format="it02", level="readouts")
    with pytest.raises(ValueError, match="unknown format 'it2'; did you mean 'it02'"):
        bindf.ingest(files["it02"][:2], dest, format="it2")
    for flag in ("prune", "force", "dry_run", "progress", "fsync"):  # prune="no" pruned
        with pytest.raises(TypeError, match=f"{flag} must be True or False"):
            bindf.ingest(files["it02"][:1], dest, **{flag: "no"})
    # A value that no format taking the option allows (the annotations list them).
    with pytest.raises(ValueError, match=r"layout must be one of \('dense', 'sparse', None\) "
                                         r"\(format it02\), not 'spares'"):
        bindf.ingest(files["it02"][:2], dest, layout="spares")
    with pytest.raises(ValueError, match="fill_gaps must be one of"):
        bindf.ingest(files["it02"][:2], dest, format="it02", fill_gaps="yes")
    for flags in (["--option", "bogus=1"], ["--format", "bogus"],
                  ["--option", "layout=spares"]):
        assert main(["ingest", *map(str, files["it02"][:2]), "-o", str(dest), *flags]) == 2
        assert "bindf: error: " in capsys.readouterr().err
    assert snapshot(dest) == before


def _fresh(source: Path, dest: Path, **kwargs) -> Path:
    bindf.ingest(source, dest, **kwargs)
    return dest


def test_header_column_types_and_parts_split_by_rows(campaign, tmp_path: Path) -> None:
    root, files = campaign
    dest = tmp_path / "ds"
    report = bindf.ingest(files["sp01"][:1] + files["it02"][:2], dest,
                          header_columns={"laser_period_ns": "float64", "missing.key": None,
                                          "channels": "string"}, rows_per_part=500)
    assert report.ok
    entry = _manifest(dest)["sources"][str(files["sp01"][0])]
    assert len(entry["parts"]) == 4 and entry["rows"] == 1536  # 500 + 500 + 500 + 36
    sp01 = bindf.read_dataset(dest, "sp01").collect()
    assert sp01.drop("source", "laser_period_ns", "missing.key", "channels", "format").equals(
        bindf.read(files["sp01"][0], output="polars"))
    assert sp01["laser_period_ns"].unique().to_list() == [25.0]
    assert sp01["missing.key"].null_count() == len(sp01)
    assert sp01["channels"].unique().to_list() == ["[1, 3]"]
    with pytest.raises(ValueError, match="unknown type"):
        bindf.ingest(files["sp01"], dest, header_columns=["x:decimal"])
    # A value that does not fit the column's type fails that file only, with a hint.
    bad = bindf.ingest(files["spf1"][:1] + files["it02"][:1], tmp_path / "t",
                       header_columns={"channels": "int64"})
    assert len(bad.failed) == 2 and "declare its type" in next(iter(bad.failed.values()))


def test_fewer_parts_and_a_repaired_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    decay = src / "decay.bin"
    shutil.copyfile(SAMPLES / "decay_curves_sp01.bin", decay)
    broken = src / "broken.apx"
    broken.write_bytes((SAMPLES / "astropix_threshold_scan.apx").read_bytes()[:50])
    dest = tmp_path / "ds"
    first = bindf.ingest(src, dest, rows_per_part=500)
    assert list(first.failed) == [str(broken)]
    assert len(_manifest(dest)["sources"][str(decay)]["parts"]) == 4
    # The decay file shrinks to 1 record (512 rows): two parts, the other two go.
    frame = bindf.read(decay, output="polars")
    bindf.write_sp01(decay, frame.filter(pl.col("time_ns") == frame["time_ns"].min()))
    shutil.copyfile(SAMPLES / "astropix_threshold_scan.apx", broken)  # repaired
    second = bindf.ingest(src, dest, rows_per_part=500)
    assert second.ok and second.replaced == [str(decay)] and second.ingested == [str(broken)]
    entry = _manifest(dest)["sources"][str(decay)]
    on_disk = [p.relative_to(dest).as_posix() for p in dest.rglob(f"{entry['key']}-*.parquet")]
    assert len(entry["parts"]) == 2 and sorted(on_disk) == sorted(entry["parts"])
    assert _manifest(dest)["sources"][str(broken)]["error"] is None
    assert snapshot(dest) == snapshot(_fresh(src, tmp_path / "clean", rows_per_part=500))


def test_on_error_skip_records_the_skipped_damage(tmp_path: Path) -> None:
    raw = bytearray((SAMPLES / "astropix_threshold_scan.apx").read_bytes())
    src = tmp_path / "src"
    src.mkdir()
    header_end = 6 + 4 + int.from_bytes(raw[6:10], "little")
    marker = raw.index(b"\xfe\xdc\xba", header_end + 2000)
    raw[marker] = 0x00  # damage one readout's marker
    (src / "damaged.apx").write_bytes(bytes(raw))
    strict = bindf.ingest(src, tmp_path / "strict", on_error="raise")
    lenient = bindf.ingest(src, tmp_path / "lenient", on_error="skip")
    assert "readout marker" in strict.failed[str(src / "damaged.apx")]
    assert lenient.ok
    entry = _manifest(tmp_path / "lenient")["sources"][
        str(src / "damaged.apx")]
    assert entry["skipped"] and entry["rows"] > 0


def test_growing_files_wait_for_settle(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(SAMPLES / "astropix_threshold_scan.apx", src / "done.apx")
    old = time.time() - 60
    os.utime(src / "done.apx", (old, old))
    growing = src / "growing.apx"
    growing.write_bytes((SAMPLES / "astropix_threshold_scan.apx").read_bytes()[:20000])
    report = bindf.ingest(src, tmp_path / "ds", settle=30)
    assert report.pending == [str(growing)] and report.ingested == [str(src / "done.apx")]
    with open(growing, "ab") as f:  # the acquisition ends
        f.write((SAMPLES / "astropix_threshold_scan.apx").read_bytes()[20000:])
    os.utime(growing, (old, old))
    report = bindf.ingest(src, tmp_path / "ds", settle=30)
    assert report.ingested == [str(growing)] and report.ok


def test_a_file_written_while_ingestions_run(tmp_path: Path) -> None:
    """An instrument writes a run in pieces while ingestion reruns (what --watch does):
    the run stays pending while it grows and is ingested whole once it settles."""
    import threading

    src = tmp_path / "src"
    src.mkdir()
    data = (SAMPLES / "astropix_threshold_scan.apx").read_bytes()
    target = src / "live.apx"
    done = threading.Event()

    def instrument() -> None:
        with open(target, "wb") as f:
            for start in range(0, len(data), 2000):
                f.write(data[start:start + 2000])
                f.flush()
                time.sleep(0.02)
        done.set()

    writer = threading.Thread(target=instrument)
    writer.start()
    seen_pending = False
    while not done.is_set():
        # (A writer stalled for longer than settle on a loaded machine would get its
        # partial file ingested, and replaced later: the end result is the same.)
        report = bindf.ingest(src, tmp_path / "ds", settle=1.0)
        seen_pending |= report.pending == [str(target)]
        time.sleep(0.02)
    writer.join()
    assert seen_pending
    time.sleep(1.05)
    report = bindf.ingest(src, tmp_path / "ds", settle=1.0)
    assert report.ok and str(target) in report.ingested + report.replaced
    assert bindf.read_dataset(tmp_path / "ds").drop("source", "format").collect().equals(
        bindf.read(target, output="polars"))


def test_a_file_that_changes_while_it_is_read_is_left_pending(tmp_path: Path,
                                                             monkeypatch) -> None:
    import bindf._ingest_worker as worker

    src = tmp_path / "run.apx"
    shutil.copyfile(SAMPLES / "astropix_threshold_scan.apx", src)
    real_hash = worker.file_sha256

    def hash_then_append(path: str) -> str:
        digest = real_hash(path)
        with open(path, "ab") as f:
            f.write(b"\x00")
        return digest

    monkeypatch.setattr(worker, "file_sha256", hash_then_append)
    report = bindf.ingest(src, tmp_path / "ds")
    assert report.pending == [str(src)]
    assert not list((tmp_path / "ds").rglob("*.parquet"))


def test_ctrl_c_keeps_what_was_done(campaign, tmp_path: Path, monkeypatch) -> None:
    import bindf._ingest  # noqa: F401

    root, _ = campaign
    module = sys.modules["bindf._ingest"]
    real = module.run_job
    calls = []

    def interrupted_on_the_sixth(job):  # noqa: ANN001, ANN202
        calls.append(job.path)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(module, "run_job", interrupted_on_the_sixth)
    with pytest.raises(KeyboardInterrupt):
        bindf.ingest(root / "flim", tmp_path / "ds", threads=1)
    assert sorted(_manifest(tmp_path / "ds")["sources"]) == sorted(calls[:5])
    monkeypatch.setattr(module, "run_job", real)
    report = bindf.ingest(root / "flim", tmp_path / "ds")
    assert len(report.unchanged) == 5 and len(report.ingested) == 48 - 5
    assert snapshot(tmp_path / "ds") == snapshot(_fresh(root / "flim", tmp_path / "clean"))


def test_lock_gives_the_second_run_a_clear_error(campaign, tmp_path: Path) -> None:
    root, _ = campaign
    dest = tmp_path / "ds"
    dest.mkdir()
    with DatasetLock(str(dest)):
        with pytest.raises(DatasetLockedError, match=rf"pid {os.getpid()} on .*even if it is "
                                                     "killed"):
            bindf.ingest(root / "flim", dest)
        out = subprocess.run([sys.executable, "-m", "bindf", "ingest", str(root / "flim"),
                              "-o", str(dest)], capture_output=True, text=True)
        assert out.returncode == 75
        assert out.stderr.startswith("bindf: error:") and "another bindf ingest" in out.stderr
    assert bindf.ingest(root / "flim", dest).ok  # released


def test_a_watcher_outlives_a_run_that_holds_the_lock(campaign, tmp_path: Path) -> None:
    """``watch_ingest`` meeting another run's lock (a manual ``bindf ingest``) skips that
    round with a warning and goes on (it stopped with DatasetLockedError)."""
    import threading

    root, _ = campaign
    dest = tmp_path / "ds"
    dest.mkdir()
    lock = DatasetLock(str(dest))
    lock.__enter__()
    threading.Timer(0.3, lambda: lock.__exit__(None, None, None)).start()
    reports = []
    with pytest.warns(bindf.BindfWarning, match="another bindf ingest .* trying again in"):
        last = bindf.watch_ingest(root / "flim", dest, interval=0.1, max_runs=1,
                                  on_report=reports.append)
    assert len(reports) == 1 and last is reports[0] and last.ok and last.ingested


def test_a_lock_that_fails_while_taken_is_released(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while the owner record was written left the descriptor open and the
    lock held: every later ingest of the dataset, this process's and any other's, was
    refused until the process ended."""
    from bindf import _manifest

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    dest = tmp_path / "ds"
    dest.mkdir()
    opened = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with monkeypatch.context() as patch:
        patch.setattr(_manifest.os, "write", disk_full)
        with pytest.raises(OSError, match="No space left"):
            DatasetLock(str(dest)).__enter__()
    with DatasetLock(str(dest)):  # free again
        pass
    if opened is not None:
        assert len(os.listdir("/proc/self/fd")) == opened


def _run_ingest(root: str, dest: str, kwargs: dict, started) -> None:  # noqa: ANN001
    started.set()
    bindf.ingest(root, dest, **kwargs)


def _hold_lock_then_sleep(dest: str, ready) -> None:  # noqa: ANN001
    with DatasetLock(dest):
        ready.set()
        time.sleep(60)


@pytest.fixture(scope="module")
def forkserver():
    """Processes started with bindf already imported (the forkserver imports it once)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bindf", "bindf._ingest", "test_ingest"])
    return context


def test_a_killed_owner_never_leaves_a_stale_lock(tmp_path: Path, forkserver) -> None:
    dest = tmp_path / "ds"
    dest.mkdir()
    ready = forkserver.Event()
    holder = forkserver.Process(target=_hold_lock_then_sleep, args=(str(dest), ready))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(DatasetLockedError, match=f"pid {holder.pid}"):
        bindf.ingest(SAMPLES / "phasors_spf1.bin", dest)
    holder.kill()  # SIGKILL: no cleanup code runs
    holder.join()
    assert bindf.ingest(SAMPLES / "phasors_spf1.bin", dest).ok


def test_kill_9_at_random_moments_then_rerun_equals_a_clean_run(campaign, tmp_path: Path,
                                                                forkserver) -> None:
    root, _ = campaign
    # AstroPix 3 runs beside day1's AstroPix 4 ones: a first run ends by moving the main
    # schema's parts to format=apx, and kills land there too.
    apx3 = tmp_path / "apx3"
    apx3.mkdir()
    for i in range(3):
        shutil.copyfile(APX3, apx3 / f"run{i}.apx")
    sources = [str(root / "flim"), str(root / "apx" / "day1"), str(root / "apx" / "damaged"),
               str(apx3)]
    kwargs = {"partition_by": ["args.threshold"], "header_columns": ["readout_uid"],
              "threads": 2, "rows_per_part": 300}
    clean = tmp_path / "clean"
    started = time.perf_counter()
    bindf.ingest(sources, clean, **kwargs)
    duration = time.perf_counter() - started
    expected = snapshot(clean)
    rng = random.Random(1)
    dest = tmp_path / "ds"
    kills = 0
    for attempt in range(6):
        # Even attempts kill a first ingestion; odd ones a forced re-ingestion, whose
        # parts replace existing ones under a manifest that lists them.
        if attempt % 2 == 0:
            shutil.rmtree(dest, ignore_errors=True)
        started = forkserver.Event()
        process = forkserver.Process(
            target=_run_ingest,
            args=(sources, str(dest), {**kwargs, "force": attempt % 2 == 1}, started))
        process.start()
        assert started.wait(60)
        time.sleep(rng.uniform(0.0, duration))
        if process.is_alive():
            process.kill()
            kills += 1
        process.join()
        report = bindf.ingest(sources, dest, **kwargs)  # the rerun
        assert not list(dest.rglob("*.tmp")) and not (dest / STAGING_NAME).exists()
        assert snapshot(dest) == expected, f"attempt {attempt}: {report.summary()}"
    assert kills >= 3
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith("format=apx")) == [
        "format=apx", f"format=apx-{_manifest(dest)['sources'][str(apx3 / 'run0.apx')]['schema']}"]


def test_two_concurrent_runs(campaign, tmp_path: Path) -> None:
    root, _ = campaign
    dest = tmp_path / "ds"
    sources = [str(root / "flim"), str(root / "apx" / "damaged")]
    command = [sys.executable, "-m", "bindf", "ingest", *sources, "-o", str(dest), "-q"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(), p.stderr.read()) for p in runs)
    for process in runs:
        process.stderr.close()
    codes = [code for code, _ in outcomes]
    # Damaged files make a finished run exit 65; a run that found the lock taken exits 75.
    assert set(codes) <= {65, 75} and 65 in codes, outcomes
    for code, err in outcomes:
        if code == 75:
            assert "another bindf ingest is writing this dataset" in err
    assert snapshot(dest) == snapshot(_fresh(sources, tmp_path / "clean"))


def test_local_cluster_run_equals_the_local_run(campaign, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    root, files = campaign
    sources = [root / "flim", root / "apx" / "damaged", root / "apx" / "truncated.apx"]
    kwargs = {"partition_by": ["args.threshold"], "header_columns": ["readout_uid"],
              "on_error": "warn"}
    local = _fresh(sources, tmp_path / "local", **kwargs)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = bindf.ingest(sources, tmp_path / "dask", client=client, **kwargs)
        from bindf.cli import main

        status = main(["ingest", *map(str, sources), "-o", str(tmp_path / "cli"), "-q",
                       "--scheduler", cluster.scheduler_address, "--on-error", "warn",
                       "--partition-by", "args.threshold", "--header-columns", "readout_uid"])
    assert status == 65  # the damaged files
    assert snapshot(tmp_path / "cli") == snapshot(local)
    assert len(report.ingested) == 48 + 1 and len(report.failed) == 2
    assert snapshot(tmp_path / "dask") == snapshot(local)


def test_a_cluster_run_reads_a_format_registered_at_run_time(format_cases: dict,
                                                            tmp_path: Path) -> None:
    """``register_format`` in the coordinating process (here: the tests' ``stamp``): the
    workers, other processes, never registered it, and every file failed there
    ("unrecognised file format"). The run sends the run-time formats with its jobs."""
    import shutil

    distributed = pytest.importorskip("distributed")
    folder = tmp_path / "stamps"
    folder.mkdir()
    for name in ("a.bin", "b.bin"):
        shutil.copy(format_cases["stamp"].path, folder / name)
    local = _fresh(folder, tmp_path / "local")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        report = bindf.ingest(folder, tmp_path / "dask", client=client)
        assert len(report.ingested) == 2 and not report.failed, report.failed
        assert client.run(lambda: "stamp" in bindf.registry.format_names()) == \
            dict.fromkeys(client.scheduler_info()["workers"], True)
    assert snapshot(tmp_path / "dask") == snapshot(local)


def test_cli(campaign, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bindf.cli import main

    root, files = campaign
    dest = tmp_path / "ds"
    assert main(["ingest", str(root / "flim"), "-o", str(dest), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out.count("would ingest: ") == len(list((root / "flim").iterdir()))
    assert not dest.exists()
    assert main(["ingest", str(root / "flim"), "-o", str(dest), "--header-columns",
                 "laser_period_ns:float64", "--progress", "--threads", "1"]) == 0
    _, err = capsys.readouterr()
    assert "ingested 48 new" in err and "files" in err  # the tqdm bar's file count
    assert main(["ingest", str(root / "apx"), "-o", str(tmp_path / "d2"), "--watch",
                 "--interval", "0.05", "--max-runs", "2", "--settle", "0"]) == 65
    _, err = capsys.readouterr()
    assert err.count("cut_header.apx") == 2 and "unchanged" in err
    assert main(["ingest", str(tmp_path / "nothing"), "-o", str(dest)]) == 66


def test_find_sources(campaign, tmp_path: Path) -> None:
    root, files = campaign
    everything = find_sources(root)
    assert len(everything) == sum(len(v) for v in files.values())
    assert find_sources(str(root / "apx" / "day*"), pattern="run00*.apx") == sorted(
        str(p) for p in files["apx"] if p.name.startswith("run00"))
    assert find_sources([root / "flim" / "decay0.bin"] * 2) == [str(root / "flim" / "decay0.bin")]
    with pytest.raises(FileNotFoundError):
        find_sources(str(root / "nope*.apx"))
    # The dataset itself, inside a source folder, is never a source.
    dest = root.parent / "inside"
    assert all("inside" not in p for p in find_sources([root], exclude=str(dest)))


# -- one folder per schema --------------------------------------------------------------
def _eager(path: Path) -> pl.DataFrame:
    return bindf.read(path, output="polars")


def _mixed_campaign(folder: Path) -> tuple[Path, Path]:
    """An AstroPix 4 and an AstroPix 3 run; the AstroPix 3 one sorts first."""
    folder.mkdir()
    a4, a3 = folder / "a4.apx", folder / "a3.apx"
    shutil.copyfile(APX4, a4)
    shutil.copyfile(APX3, a3)
    return a4, a3


def _folders(dest: Path) -> list[str]:
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_dir())


def test_runs_of_one_format_with_other_columns_get_a_folder_each(tmp_path: Path) -> None:
    a4, a3 = _mixed_campaign(tmp_path / "camp")
    dest = tmp_path / "ds"
    report = bindf.ingest(tmp_path / "camp", dest, threads=1)
    assert report.ok and sorted(report.ingested) == [str(a3), str(a4)] and not report.moved
    manifest = _manifest(dest)
    fp4, fp3 = (manifest["sources"][str(p)]["schema"] for p in (a4, a3))
    assert fp4 != fp3 and all(len(f) == 8 and int(f, 16) >= 0 for f in (fp4, fp3))
    # Equal schemas, equal fingerprints: each recorded one is its part's footer's.
    for entry in manifest["sources"].values():
        assert schema_fingerprint(pq.read_schema(dest / entry["parts"][0])) == entry["schema"]
    # A 1:1 tie goes to the schema with more columns: AstroPix 4 keeps format=apx.
    assert manifest["schemas"] == {"apx": fp4}
    e4, e3 = manifest["sources"][str(a4)], manifest["sources"][str(a3)]
    assert e4["key"] == source_key(str(a4)) and e3["key"] == source_key(str(a3))
    assert e4["parts"] == [f"format=apx/{_part_name(e4)}"]
    assert e3["parts"] == [f"format=apx-{fp3}/{_part_name(e3)}"]
    assert _folders(dest) == ["format=apx", f"format=apx-{fp3}"]  # no staging left
    # The same dataset whatever order the files are converted in.
    assert snapshot(dest) == snapshot(_fresh(tmp_path / "camp", tmp_path / "t2", threads=2))

    # Each folder is one schema: the documented plain scan works (it failed on a
    # decoding_order UInt16 != UInt8 mismatch when both runs shared format=apx).
    e4, e3 = _eager(a4), _eager(a3)
    scan = pl.scan_parquet(f"{dest}/format=apx/**/*.parquet", hive_partitioning=True)
    assert scan.drop("source", "format").collect().equals(e4)
    scan3 = pl.scan_parquet(f"{dest}/format=apx-{fp3}/**/*.parquet", hive_partitioning=True)
    assert scan3.drop("source", "format").collect().equals(e3)

    # read_dataset: every AstroPix run in one frame, the main schema's columns first.
    lf = bindf.read_dataset(dest, format="apx")
    assert set(lf.bindf.info["headers"]) == {str(a3), str(a4)}
    frame = lf.collect()
    assert frame.columns[:len(e4.columns)] == e4.columns
    assert set(frame.columns) == set(e4.columns) | set(e3.columns) | {"source", "format"}
    assert frame.schema["decoding_order"] == pl.UInt16  # UInt8 (4) and UInt16 (3)
    assert frame.height == len(e4) + len(e3)
    for path, eager, folder in ((a4, e4, "apx"), (a3, e3, f"apx-{fp3}")):
        rows = frame.filter(pl.col("source") == str(path))
        assert rows["format"].unique().to_list() == [folder]
        assert rows.select(eager.columns).equals(
            eager.cast({c: frame.schema[c] for c in eager.columns}))
        others = set(frame.columns) - set(eager.columns) - {"source", "format"}
        assert others and all(rows[c].null_count() == len(rows) for c in others)
    assert bindf.read_dataset(dest).collect().equals(frame)  # one format: no format= needed
    # A folder's value selects one schema.
    only3 = bindf.read_dataset(dest, format=f"apx-{fp3}")
    assert only3.drop("source", "format").collect().equals(e3)
    assert list(only3.bindf.info["headers"]) == [str(a3)] and only3.bindf.format == "apx"
    with pytest.raises(ValueError, match=rf"no 'it02' data; it has \['apx'\] \(in folders "
                                         rf"\['format=apx', 'format=apx-{fp3}'\]\)"):
        bindf.read_dataset(dest, format="it02")

    manifest_bytes = (dest / MANIFEST_NAME).read_bytes()
    again = bindf.ingest(tmp_path / "camp", dest)
    assert sorted(again.unchanged) == [str(a3), str(a4)] and not again.moved
    assert (dest / MANIFEST_NAME).read_bytes() == manifest_bytes  # not even rewritten


def test_the_main_schema_stays_while_its_sources_do(tmp_path: Path) -> None:
    src = tmp_path / "camp"
    a4, a3 = _mixed_campaign(src)
    shutil.copyfile(APX4, src / "c4.apx")
    dest = tmp_path / "ds"
    bindf.ingest(src, dest, partition_by="readout_uid")
    fp4 = _manifest(dest)["schemas"]["apx"]
    fp3 = _manifest(dest)["sources"][str(a3)]["schema"]
    # More AstroPix 3 runs than 4 ones now: they join their folder, the main one stays.
    more = [src / "b3_0.apx", src / "b3_1.apx"]
    for path in more:
        shutil.copyfile(APX3, path)
    # A run rewritten as AstroPix 3: replaced, its part moves to the AstroPix 3 folder.
    old_part = _manifest(dest)["sources"][str(src / "c4.apx")]["parts"][0]
    assert old_part.startswith("format=apx/readout_uid=4000/")
    shutil.copyfile(APX3, src / "c4.apx")
    report = bindf.ingest(src, dest, partition_by="readout_uid")
    assert sorted(report.ingested) == [str(p) for p in more] and report.replaced == [str(src / "c4.apx")]
    assert not report.moved
    manifest = _manifest(dest)
    assert manifest["schemas"] == {"apx": fp4}
    threes = [a3, src / "c4.apx", *more]
    for path in threes:
        entry = manifest["sources"][str(path)]
        assert entry["schema"] == fp3
        assert entry["parts"] == [f"format=apx-{fp3}/readout_uid=3000/{_part_name(entry)}"]
    assert not (dest / old_part).exists()
    assert _folders(dest) == sorted(["format=apx", "format=apx/readout_uid=4000",
                                     f"format=apx-{fp3}", f"format=apx-{fp3}/readout_uid=3000"])

    # The last AstroPix 4 run goes: AstroPix 3 becomes the main schema, and its parts
    # move (renamed, not converted again).
    a4.unlink()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*.parquet")}
    report = bindf.ingest(src, dest, partition_by="readout_uid", prune=True)
    assert report.pruned == [str(a4)] and not report.ingested and not report.replaced
    assert sorted(report.moved) == sorted(str(p) for p in threes)
    assert "4 moved to their schema's folder" in report.summary()
    manifest = _manifest(dest)
    assert manifest["schemas"] == {"apx": fp3}
    for path in threes:
        entry = manifest["sources"][str(path)]
        assert entry["parts"] == [f"format=apx/readout_uid=3000/{_part_name(entry)}"]
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*.parquet")}
    assert after == {name: s for name, s in before.items()
                     if not name.startswith(source_key(str(a4)))}
    assert _folders(dest) == ["format=apx", "format=apx/readout_uid=3000"]
    assert snapshot(dest) == snapshot(_fresh(src, tmp_path / "clean",
                                             partition_by="readout_uid"))


def test_ctrl_c_while_parts_move_then_rerun_equals_a_clean_run(tmp_path: Path,
                                                               monkeypatch) -> None:
    src = tmp_path / "camp"
    a4, a3 = _mixed_campaign(src)
    shutil.copyfile(APX4, src / "c4.apx")
    shutil.copyfile(APX3, src / "b3.apx")  # two runs of each: AstroPix 4 wins the tie
    dest = tmp_path / "ds"
    real = os.link
    moves = []

    def link_then_interrupt(old, new) -> None:  # noqa: ANN001
        real(old, new)
        assert f"{os.sep}format=apx-" in os.fspath(new)
        moves.append(old)  # the run's end moving AstroPix 3 parts out of format=apx
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", link_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        bindf.ingest(src, dest, threads=1)
    monkeypatch.setattr(os, "link", real)
    assert len(moves) == 1 and f"{os.sep}format=apx{os.sep}" in os.fspath(moves[0])
    # The saved manifest still lists the part at its old path, which is still there.
    manifest = _manifest(dest)
    assert all((dest / p).is_file() for e in manifest["sources"].values() for p in e["parts"])
    assert manifest["sources"][str(a3)]["parts"] == [
        Path(moves[0]).relative_to(dest).as_posix()]
    report = bindf.ingest(src, dest)
    # Nothing converted again: the rerun's end moves the parts of both AstroPix 3 runs
    # (the recovery deleted the link the interrupted run made).
    assert report.ok and not report.replaced and not report.ingested
    assert report.moved == [str(a3), str(src / "b3.apx")]
    assert snapshot(dest) == snapshot(_fresh(src, tmp_path / "clean"))


#: fsyncs of one ingestion's manifest writes (its atomic replace: the file, once).
MANIFEST_FSYNCS = 1


def test_each_part_is_fsynced_once_and_only_when_asked(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "camp"
    src.mkdir()
    for i in range(3):
        shutil.copyfile(APX4, src / f"r{i}.apx")
    real = os.fsync
    calls: list[int] = []

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    counts = []
    for k, fsync in enumerate((True, False)):
        calls.clear()
        bindf.ingest(src, tmp_path / f"ds{k}", fsync=fsync)
        counts.append(len(calls))
    # one per part, none with fsync=False: only the manifest's own (its atomic write)
    assert counts == [3 + MANIFEST_FSYNCS, MANIFEST_FSYNCS]


def test_one_schema_campaign_moves_nothing(tmp_path: Path, monkeypatch) -> None:
    """Parts of a format without a main schema yet go to format=<name> straight away:
    a campaign of one schema (the usual one) renames each part once, from staging."""
    src = tmp_path / "camp"
    src.mkdir()
    for i in range(3):
        shutil.copyfile(APX4, src / f"r{i}.apx")
    real = os.replace
    renames = []

    def counting(old, new) -> None:  # noqa: ANN001
        renames.append((os.fspath(old), os.fspath(new)))
        real(old, new)

    monkeypatch.setattr(os, "replace", counting)
    report = bindf.ingest(src, tmp_path / "ds")
    published = [(old, new) for old, new in renames
                 if new.endswith(".parquet") and STAGING_NAME not in new]
    assert len(published) == 3  # each part once, from staging to its place
    assert all(STAGING_NAME in old and f"{os.sep}format=apx{os.sep}" in new
               for old, new in published)
    assert not report.moved


def _as_written_before_schema_folders(dest: Path) -> None:
    """Rewrite a dataset as bindf wrote it before one folder per schema: every part in
    ``format=<name>``, and no schema fingerprints in the manifest."""
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    del manifest["schemas"]
    for entry in manifest["sources"]:
        del entry["schema"]
        parts = []
        for part in entry["parts"]:
            old = "/".join([f"format={entry['format']}", *part.split("/")[1:]])
            if old != part:
                (dest / old).parent.mkdir(parents=True, exist_ok=True)
                os.replace(dest / part, dest / old)
                folder = (dest / part).parent
                while folder != dest and not any(folder.iterdir()):
                    folder.rmdir()
                    folder = folder.parent
            parts.append(old)
        entry["parts"] = parts
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_dataset_written_before_schema_folders_is_read_and_fixed(tmp_path: Path) -> None:
    src = tmp_path / "camp"
    a4, a3 = _mixed_campaign(src)
    dest = tmp_path / "ds"
    bindf.ingest(src, dest, partition_by="readout_uid")
    current = bindf.read_dataset(dest, format="apx").collect()
    _as_written_before_schema_folders(dest)
    assert _folders(dest) == ["format=apx", "format=apx/readout_uid=3000",
                              "format=apx/readout_uid=4000"]
    with pytest.raises(pl.exceptions.PolarsError):  # the old layout's mixed folder
        pl.scan_parquet(f"{dest}/format=apx/**/*.parquet", hive_partitioning=True).collect()

    # read_dataset reads it as it is (schemas from the part footers) ...
    before = bindf.read_dataset(dest, format="apx").collect()
    assert before.height == current.height and set(before.columns) == set(current.columns)
    for path in (a4, a3):
        mine = pl.col("source") == str(path)
        assert before.filter(mine).select(current.columns).drop("format").equals(
            current.filter(mine).drop("format"))

    # ... and the next run moves the AstroPix 3 part out: nothing is converted again,
    # the AstroPix 4 part stays where it was.
    part4 = dest / _manifest(dest)["sources"][str(a4)]["parts"][0]
    stat4 = part4.stat()
    report = bindf.ingest(src, dest, partition_by="readout_uid")
    assert report.moved == [str(a3)] and sorted(report.unchanged) == [str(a3), str(a4)]
    assert not report.ingested and not report.replaced and report.ok
    assert "1 moved to their schema's folder" in report.summary()
    manifest = _manifest(dest)
    fp3 = manifest["sources"][str(a3)]["schema"]
    assert manifest["sources"][str(a4)]["parts"] == [part4.relative_to(dest).as_posix()]
    assert (part4.stat().st_ino, part4.stat().st_mtime_ns) == (stat4.st_ino, stat4.st_mtime_ns)
    assert manifest["sources"][str(a3)]["parts"] == [
        f"format=apx-{fp3}/readout_uid=3000/{_part_name(manifest['sources'][str(a3)])}"]
    assert _folders(dest) == sorted(["format=apx", "format=apx/readout_uid=4000",
                                     f"format=apx-{fp3}", f"format=apx-{fp3}/readout_uid=3000"])
    assert bindf.read_dataset(dest, format="apx").collect().equals(current)
    assert snapshot(dest) == snapshot(_fresh(src, tmp_path / "clean",
                                             partition_by="readout_uid"))
    manifest_bytes = (dest / MANIFEST_NAME).read_bytes()
    assert not bindf.ingest(src, dest, partition_by="readout_uid").moved
    assert (dest / MANIFEST_NAME).read_bytes() == manifest_bytes


# -- dry runs, option values, exit statuses ---------------------------------------------
def _summary(err: str) -> str:
    """The counts of a summary line (the real run's rows and timing cut off)."""
    (line,) = [text for text in err.splitlines() if " new, " in text]
    return line.split(";")[0].replace("would ", "")


def test_dry_run_hashes_a_touched_file_as_the_run_does(tmp_path: Path, capsys) -> None:
    from bindf.cli import main

    src = tmp_path / "camp"
    src.mkdir()
    touched, edited, other = src / "a.apx", src / "b.apx", src / "c.apx"
    for path in (touched, edited, other):
        shutil.copyfile(APX4, path)
    dest = tmp_path / "ds"
    command = ["ingest", str(src), "-o", str(dest)]
    assert main(command) == 0
    capsys.readouterr()
    later = time.time_ns() + 10**9
    os.utime(touched, ns=(later, later))  # same bytes, new mtime
    raw = APX4.read_bytes()
    edited.write_bytes(raw.replace(b'"threshold": 100.0', b'"threshold": 120.0'))  # same size
    assert edited.stat().st_size == len(raw)
    assert main([*command, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert out == f"would replace: {edited}\n"
    dry = _summary(err)
    assert dry == f"{dest}: ingest 0 new, replace 1 changed, 2 unchanged, 0 failed, 0 pending " \
                  "(still being written), 0 removed from disk"
    assert main(command) == 0
    _, err = capsys.readouterr()
    assert _summary(err).replace("ingested", "ingest").replace("replaced", "replace") == dry
    # The Python report says the same.
    os.utime(touched, ns=(later + 10**9, later + 10**9))
    report = bindf.ingest(src, dest, dry_run=True)
    assert sorted(report.unchanged) == sorted(str(p) for p in (touched, edited, other))
    assert not report.replaced


@pytest.mark.parametrize(("options", "message"), [
    (["--threads", "0"], "--threads must be at least 1, not 0"),
    (["--settle", "-5"], "--settle must be 0 or more seconds, not -5"),
    (["--settle", "nan"], "--settle must be 0 or more seconds, not nan"),
    (["--interval", "5"], "--interval applies only with --watch"),
    (["--max-runs", "2"], "--max-runs applies only with --watch"),
    (["--interval", "5", "--max-runs", "2"], "--interval and --max-runs apply only with --watch"),
    (["--watch", "--interval", "0"], "--interval must be a positive number of seconds, not 0"),
    (["--watch", "--max-runs", "0"], "--max-runs must be at least 1, not 0"),
    # Keywords the command sets itself: the flag, not Python's "multiple values" TypeError.
    (["--option", "on_error=skip"], "--option on_error: use --on-error instead"),
    (["--option", "format=apx"], "--option format: use --format instead"),
    (["--option", "prune=true"], "--option prune: use --prune instead"),
    (["--option", "dest=elsewhere"], "--option dest: use -o/--output instead"),
    (["--option", "chunksize=5"], "--option chunksize: bindf ingest sets chunksize itself"),
    (["--option", "batch_size=5"], "--option batch_size: bindf ingest sets batch_size itself"),
])
def test_cli_refuses_values_out_of_range(tmp_path: Path, capsys, options: list[str],
                                         message: str) -> None:
    from bindf.cli import main

    dest = tmp_path / "ds"
    assert main(["ingest", str(SAMPLES / "phasors_spf1.bin"), "-o", str(dest), *options]) == 2
    assert capsys.readouterr().err == f"bindf: error: {message}\n"
    assert not dest.exists()


def test_python_refuses_values_out_of_range(tmp_path: Path) -> None:
    run = SAMPLES / "phasors_spf1.bin"
    dest = tmp_path / "ds"
    with pytest.raises(ValueError, match=r"threads must be >= 1 \(or None for the default\), "
                                         "not 0"):
        bindf.ingest(run, dest, threads=0)
    with pytest.raises(ValueError, match="settle must be a number of seconds >= 0, not -5"):
        bindf.ingest(run, dest, settle=-5)
    with pytest.raises(ValueError, match="settle must be a number of seconds >= 0, not '5'"):
        bindf.ingest(run, dest, settle="5")  # (math.isfinite's TypeError before)
    with pytest.raises(ValueError, match="interval must be a positive number of seconds, "
                                         "not 0"):
        bindf.watch_ingest(run, dest, interval=0)
    with pytest.raises(ValueError, match="max_runs must be at least 1, not 0"):
        bindf.watch_ingest(run, dest, max_runs=0)
    assert not dest.exists()
    assert bindf.ingest(run, dest, threads=False).ok  # as for reads: one thread


def test_cli_output_problems_are_output_errors(tmp_path: Path, capsys) -> None:
    from bindf.cli import main

    run = str(SAMPLES / "phasors_spf1.bin")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a dataset")
    assert main(["ingest", run, "-o", str(a_file)]) == 73
    assert capsys.readouterr().err == (
        f"bindf: error: {a_file}: exists and is not a folder (a dataset is a folder)\n")
    assert main(["ingest", run, "-o", str(a_file / "ds")]) == 74
    assert capsys.readouterr().err == (
        f"bindf: error: {a_file / 'ds'}: cannot write the dataset: Not a directory\n")
    if sys.platform == "linux":  # /proc takes no new folders, even from root
        assert main(["ingest", run, "-o", "/proc/x"]) == 74
        assert capsys.readouterr().err == (
            "bindf: error: /proc/x: cannot write the dataset: No such file or directory\n")
    # A missing source is still an input problem, and no dataset folder is made for it.
    dest = tmp_path / "ds"
    assert main(["ingest", str(tmp_path / "nothing"), "-o", str(dest)]) == 66
    assert capsys.readouterr().err == f"bindf: error: {tmp_path / 'nothing'}: No such file " \
                                      "or directory\n"
    assert not dest.exists()


# -- interrupted runs, readers during a run, warnings -------------------------------------
def _ingest_then_die(src: str, dest: str, kwargs: dict, jobs: int) -> None:
    """An ingestion that saves its manifest after every file it records, and dies as
    with ``kill -9`` (``os._exit``) once its ``jobs``-th file's parts are published,
    before that file is recorded. Jobs run in a worker thread while the coordinating
    thread records and saves their results: each job waits until the ones before it are
    saved, so that exactly ``jobs - 1`` files are recorded however the threads run."""
    import threading

    import bindf._ingest as module

    module.CHECKPOINT_SECONDS = 0
    real_job, real_save, done = module.run_job, module._Run.save, []
    saved = threading.Condition()
    saves = [0]

    def save(self):  # noqa: ANN001, ANN202
        real_save(self)
        with saved:
            saves[0] += 1
            saved.notify_all()

    def run_job(job):  # noqa: ANN001, ANN202
        with saved:  # (the first save of a run comes after its first record)
            assert saved.wait_for(lambda: saves[0] >= len(done), timeout=60)
        result = real_job(job)
        done.append(job.path)
        if len(done) == jobs:
            os._exit(9)
        return result

    module.run_job = run_job
    module._Run.save = save
    bindf.ingest(src, dest, threads=1, **kwargs)


def _die_after(forkserver, src: Path, dest: Path, kwargs: dict, jobs: int) -> None:  # noqa: ANN001
    process = forkserver.Process(target=_ingest_then_die,
                                 args=(str(src), str(dest), kwargs, jobs))
    process.start()
    process.join()
    assert process.exitcode == 9


def _copies_of_the_apx_run(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """A campaign folder of ``n`` copies of the AstroPix run, and a dataset path."""
    src = tmp_path / "camp"
    src.mkdir()
    for i in range(n):
        shutil.copyfile(APX4, src / f"run{i}.apx")
    return src, tmp_path / "ds"


def test_an_interrupted_settings_change_is_completed_by_the_rerun(tmp_path: Path,
                                                                  forkserver) -> None:
    src, dest = _copies_of_the_apx_run(tmp_path, 8)
    old = {"header_columns": ["args.threshold"]}
    new = {"header_columns": ["args.threshold", "readout_uid"]}
    bindf.ingest(src, dest, **old)
    _die_after(forkserver, src, dest, new, 4)
    # The checkpoints saved the new settings while 5 entries were made with the old
    # ones; the 4th file's new part was published but not recorded.
    manifest = _manifest(dest)
    assert list(manifest["settings"]["header_columns"]) == ["args.threshold", "readout_uid"]
    hashes = [e["settings_hash"] for e in manifest["sources"].values()]
    assert len(set(hashes)) == 2 and hashes.count(hashes[0]) == 3
    report = bindf.ingest(src, dest, **new)
    assert report.ok and len(report.unchanged) == 3 and len(report.replaced) == 5
    assert not report.moved and not report.ingested
    parts = list(dest.rglob("*.parquet"))
    assert len(parts) == 8 and all("readout_uid" in pq.read_schema(p).names for p in parts)
    assert bindf.read_dataset(dest).collect().height == 8 * len(_eager(APX4))
    assert snapshot(dest) == snapshot(_fresh(src, tmp_path / "clean", **new))

    # Entries of a manifest written before entries recorded their settings were made
    # with the manifest's settings.
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    for entry in manifest["sources"]:
        del entry["settings_hash"]
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest))
    again = bindf.ingest(src, dest, **new)
    assert len(again.unchanged) == 8 and not again.replaced

    # Interrupted again, then rerun naming one file: the others are completed too.
    _die_after(forkserver, src, dest, old, 2)
    partial = bindf.ingest(src / "run0.apx", dest, **old)
    assert partial.unchanged == [str(src / "run0.apx")] and len(partial.replaced) == 7
    assert snapshot(dest) == snapshot(_fresh(src, tmp_path / "clean_old", **old))


def _collect(lf: pl.LazyFrame) -> pl.DataFrame | str:
    try:
        return lf.collect()
    except Exception as exc:  # noqa: BLE001 - the test compares what happened
        return type(exc).__name__


def test_a_scan_keeps_its_snapshot_until_a_new_manifest_is_saved(tmp_path: Path, forkserver,
                                                                 monkeypatch) -> None:
    hits = bindf.read(APX4, output="polars")
    header = hits.bindf.header

    def write(path: Path, n: int, threshold: float) -> None:
        bindf.write_apx(path, hits.head(n),
                        {**header, "args": {**header["args"], "threshold": threshold}})

    src = tmp_path / "camp"
    src.mkdir()
    runs = [src / f"run{i}.apx" for i in range(3)]
    for path in runs:
        write(path, 100, 100.0)
    dest = tmp_path / "ds"
    kwargs = {"partition_by": ["args.threshold"]}
    bindf.ingest(src, dest, **kwargs)
    lf = bindf.read_dataset(dest)
    expected = lf.collect()
    assert expected.height == 300
    write(runs[0], 100, 120.0)  # changed, another partition folder
    write(runs[1], 150, 100.0)  # changed, same partition folder

    def listed_parts_exist() -> bool:
        return all((dest / p).is_file()
                   for e in _manifest(dest)["sources"].values() for p in e["parts"])

    # Killed once run0's new part is published (in another folder): the manifest lists
    # existing parts only, and the snapshot built before reads what it read.
    _die_after(forkserver, src, dest, kwargs, 1)
    assert listed_parts_exist()
    assert _collect(lf).equals(expected)

    # While a run converts (until it saves its manifest), the old snapshot reads the same.
    real_save = Manifest.save
    seen = []

    def check_then_save(self, folder):  # noqa: ANN001, ANN202
        seen.append((listed_parts_exist(), _collect(lf).equals(expected)))
        real_save(self, folder)

    monkeypatch.setattr(Manifest, "save", check_then_save)
    report = bindf.ingest(src, dest, threads=1, **kwargs)
    monkeypatch.undo()
    assert sorted(report.replaced) == [str(runs[0]), str(runs[1])]
    assert seen == [(True, True)]
    # Once saved, the parts it no longer lists are gone: the old scan fails, a new
    # one reads the new rows; nothing is left that the manifest does not list.
    assert _collect(lf) == "FileNotFoundError"
    on_disk = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.parquet"))
    assert on_disk == sorted(p for e in _manifest(dest)["sources"].values() for p in e["parts"])
    counts = bindf.read_dataset(dest).group_by("source", "args.threshold").len().collect()
    assert sorted(counts.rows()) == [(str(runs[0]), 120.0, 100), (str(runs[1]), 100.0, 150),
                                     (str(runs[2]), 100.0, 100)]


def test_staged_parts_are_outside_every_parquet_glob(tmp_path: Path, monkeypatch) -> None:
    import bindf._ingest_worker as worker

    src, dest = _copies_of_the_apx_run(tmp_path, 2)
    bindf.ingest(src, dest)
    rows = 2 * len(_eager(APX4))
    (src / "run1.apx").write_bytes(APX4.read_bytes()[:-7])  # changed: converted again
    real, seen = worker._fsync, []

    def look_while_staged(path: str) -> None:
        real(path)
        glob = f"{dest}/**/*.parquet"
        polars_rows = pl.scan_parquet(glob, hive_partitioning=True).select(pl.len()).collect()
        try:
            import duckdb
        except ImportError:
            duckdb_rows = rows
        else:
            duckdb_rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', "
                                     "hive_partitioning = true, union_by_name = true)"
                                     ).fetchall()[0][0]
        seen.append((sorted(os.listdir(dest / STAGING_NAME)), polars_rows.item(), duckdb_rows))

    monkeypatch.setattr(worker, "_fsync", look_while_staged)
    assert bindf.ingest(src, dest).replaced == [str(src / "run1.apx")]
    ((staged, polars_rows, duckdb_rows),) = seen
    key = source_key(str(src / "run1.apx"))
    assert len(staged) == 1 and staged[0].startswith(f"{key}.")
    assert staged[0].endswith("-0.parquet.tmp")
    assert (polars_rows, duckdb_rows) == (rows, rows)  # the published parts only


class _SlowChunks:
    """A source's rows in 60 chunks, one every 50 ms: a big file's conversion."""

    def __init__(self, path: str, log: list[int]) -> None:
        self.table = bindf.read(path, output="arrow")
        self.log = log

    def __enter__(self) -> _SlowChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self):  # noqa: ANN204
        n = self.table.num_rows
        for i in range(60):
            time.sleep(0.05)
            self.log.append(i)
            yield self.table.slice(i * n // 60, (i + 1) * n // 60 - i * n // 60)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
def test_ctrl_c_stops_the_running_conversions_at_once(tmp_path: Path, monkeypatch) -> None:
    import bindf._ingest_worker as worker

    src, dest = _copies_of_the_apx_run(tmp_path, 2)
    chunks: list[int] = []
    monkeypatch.setattr(worker, "_open_chunks",
                        lambda job, n_rows=None: _SlowChunks(job.path, chunks))

    def interrupt(signum, frame) -> None:  # noqa: ANN001
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(KeyboardInterrupt):
            bindf.ingest(src, dest, threads=2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # Each conversion takes 3 s: they were stopped, not waited for, and left nothing.
    assert time.monotonic() - started < 2.5 and len(chunks) < 60
    assert not (dest / STAGING_NAME).exists()
    assert not list(dest.rglob("*.parquet")) and not list(dest.rglob("*.tmp"))
    assert _manifest(dest)["sources"] == {}


def test_a_conversion_that_ends_while_the_run_stops_is_recorded(tmp_path: Path,
                                                                monkeypatch) -> None:
    import bindf._ingest as module

    src = tmp_path / "camp"
    src.mkdir()
    first, second = src / "a.apx", src / "b.apx"
    for path in (first, second):
        shutil.copyfile(APX4, path)
    real = module.run_job
    interrupted = threading.Event()

    def run_job(job):  # noqa: ANN001, ANN202
        if job.path == str(second):
            interrupted.set()
            raise KeyboardInterrupt  # reaches the coordinator while a.apx converts
        assert interrupted.wait(60)
        # a.apx passed its last check before the request: it publishes its part.
        return real(replace(job, stop=None))

    monkeypatch.setattr(module, "run_job", run_job)
    dest = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        bindf.ingest(src, dest, threads=2)
    sources = _manifest(dest)["sources"]
    assert list(sources) == [str(first)] and sources[str(first)]["rows"] == len(_eager(APX4))
    on_disk = [p.relative_to(dest).as_posix() for p in dest.rglob("*.parquet")]
    assert on_disk == sources[str(first)]["parts"]  # recorded, not an orphan
    assert not (dest / STAGING_NAME).exists()


def test_warnings_of_this_runs_conversions_are_reported(tmp_path: Path, capsys) -> None:
    from bindf.cli import main

    src = tmp_path / "camp"
    src.mkdir()
    cut = src / "cut.apx"
    cut.write_bytes(APX4.read_bytes()[:-7])
    shutil.copyfile(APX4, src / "whole.apx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bindf.read(cut)
    expected = [str(w.message) for w in caught]
    assert len(expected) == 1 and expected[0].startswith(f"{cut}: truncated AstroPix file")
    dest = tmp_path / "ds"
    command = ["ingest", str(src), "-o", str(dest), "--on-error", "warn"]
    assert main(command) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[:-1] == [f"bindf: warning: {expected[0]}"]
    assert _summary("\n".join(err)) == (
        f"{dest}: ingested 2 new, replaced 0 changed, 0 unchanged, 0 failed, 0 pending "
        "(still being written), 0 removed from disk, 1 with warnings")
    assert _manifest(dest)["sources"][str(cut)]["warnings"] == expected
    # A rerun converts nothing: no warning again (the manifest keeps them).
    assert main(command) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and _summary(err[0]) == (
        f"{dest}: ingested 0 new, replaced 0 changed, 2 unchanged, 0 failed, 0 pending "
        "(still being written), 0 removed from disk")
    report = bindf.ingest(src, tmp_path / "py")
    assert report.warnings == {str(cut): expected}
    assert report.summary().startswith(f"{tmp_path / 'py'}: ingested 2 new, replaced 0 "
                                       "changed, 0 unchanged, 0 failed, 0 pending (still "
                                       "being written), 0 removed from disk, 1 with warnings; ")


def test_parts_named_by_earlier_versions_are_kept_or_cleaned(tmp_path: Path) -> None:
    src = tmp_path / "camp"
    src.mkdir()
    run = src / "run.apx"
    shutil.copyfile(APX4, run)
    dest = tmp_path / "ds"
    bindf.ingest(src, dest)
    # As an earlier bindf named them: <key>-<i>.parquet, listed; plus an unlisted one.
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    (entry,) = manifest["sources"]
    legacy = f"format=apx/{entry['key']}-0.parquet"
    os.replace(dest / entry["parts"][0], dest / legacy)
    entry["parts"] = [legacy]
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest))
    shutil.copyfile(dest / legacy, dest / "format=apx" / f"{'0' * 16}-0.parquet")
    assert bindf.ingest(src, dest).unchanged == [str(run)]
    assert [p.name for p in (dest / "format=apx").iterdir()] == [f"{entry['key']}-0.parquet"]
    assert bindf.read_dataset(dest).collect().height == len(_eager(APX4))


@pytest.mark.parametrize("option", ["chunksize", "n_rows", "output", "batch_size"])
def test_read_options_that_ingestion_sets_are_refused_at_once(tmp_path: Path,
                                                              option: str) -> None:
    """``chunksize=5`` failed every file with read()'s "got multiple values" TypeError,
    recorded as each file's failure; it is refused before anything is done."""
    with pytest.raises(TypeError, match=f"ingest\\(\\) sets {option} itself"):
        bindf.ingest(tmp_path, tmp_path / "ds", **{option: 5})
    assert not (tmp_path / "ds").exists()


def test_a_removed_source_of_earlier_settings_is_left_out_with_a_warning(
        tmp_path: Path) -> None:
    """A file removed from disk keeps its parts (without prune), which a settings change
    cannot remake: the run warns, and read_dataset leaves them out with a warning
    (their other partition folders made the scan fail with polars' own error)."""
    src, dest = _copies_of_the_apx_run(tmp_path, 3)
    bindf.ingest(src, dest, threads=1)
    (src / "run0.apx").unlink()
    with pytest.warns(bindf.BindfWarning, match="run0.apx: removed from disk; its parts "
                                                 "were made with earlier settings"):
        report = bindf.ingest(src, dest, partition_by=["readout_uid"], threads=1)
    assert report.removed == [str(src / "run0.apx")] and len(report.replaced) == 2
    with pytest.warns(bindf.BindfWarning, match="1 source\\(s\\) have parts made with "
                                                 "earlier settings and are left out"):
        frame = bindf.read_dataset(dest).collect()
    assert frame.height == 2 * len(_eager(APX4))
    assert set(frame["source"]) == {str(src / "run1.apx"), str(src / "run2.apx")}
    bindf.ingest(src, dest, partition_by=["readout_uid"], prune=True, threads=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", bindf.BindfWarning)
        assert bindf.read_dataset(dest).collect().height == frame.height


def test_a_long_header_value_column_stays_within_arrow_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header column repeats its value on every row: where a batch of rows would pass
    Arrow's 2 GiB of text (a long text header over a million rows), it is written in
    slices that do not (pa.repeat made an invalid array that crashed when read). The
    limit is made 100 values long here."""
    source = tmp_path / "run.bin"
    shutil.copy(SAMPLES / "intensity_tracing_it02.bin", source)
    value = bindf.read_header(source)["channels"]
    text = json.dumps(value, ensure_ascii=False)
    monkeypatch.setattr(bindf.arrow, "STRING_BYTES_MAX", 100 * len(text.encode()) + 7)
    bindf.ingest(source, tmp_path / "ds", header_columns=["channels"])
    (part,) = _manifest(tmp_path / "ds")["sources"][str(source)]["parts"]
    table = pq.ParquetFile(tmp_path / "ds" / part).read()  # (no hive partition columns)
    expected = bindf.read(source, output="arrow")
    assert table.num_rows == expected.num_rows == 200
    assert table["channels"].to_pylist() == [text] * 200
    assert table.drop_columns(["source", "channels"]).to_pylist() == expected.to_pylist()
    # (the source column is repeated text too: the longer of the two sets the slices)
    step = bindf.arrow.STRING_BYTES_MAX // max(len(text.encode()), len(str(source).encode()))
    assert pq.ParquetFile(tmp_path / "ds" / part).metadata.num_row_groups == -(-200 // step)


def _apx_runs_with(root: Path, values: list[Any]) -> list[Path]:
    """Five-hit copies of the sample run whose header's ``args.yaml`` is each of
    ``values`` (None: a run without it)."""
    sample = SAMPLES / "astropix_threshold_scan.apx"
    hits = bindf.read(sample).iloc[:5]
    root.mkdir()
    paths = []
    for i, value in enumerate(values):
        header = bindf.read_header(sample)
        if value is None:
            header["args"].pop("yaml", None)
        else:
            header["args"]["yaml"] = value
        paths.append(root / f"r{i}.apx")
        bindf.write_apx(paths[-1], hits, header)
    return paths


def test_read_dataset_types_partition_columns_by_the_header_values(tmp_path: Path) -> None:
    """polars guessed them from the folder names: the text "1.10" came back as the
    number 1.1, the same as "1.1" ("007" as 7.0)."""
    runs = _apx_runs_with(tmp_path / "text", ["1.10", "1.1", "007", None])
    bindf.ingest(tmp_path / "text", tmp_path / "ds", partition_by=["args.yaml"], threads=1)
    got = (bindf.read_dataset(tmp_path / "ds").group_by("source")
           .agg(pl.col("args.yaml").first()).sort("source").collect())
    assert got.schema["args.yaml"] == pl.String
    assert got["args.yaml"].to_list() == ["1.10", "1.1", "007", None]
    assert got["source"].to_list() == [str(p) for p in runs]
    _apx_runs_with(tmp_path / "numbers", [2, 3.5, None])
    bindf.ingest(tmp_path / "numbers", tmp_path / "ds2", partition_by=["args.yaml"],
                 threads=1)
    got = bindf.read_dataset(tmp_path / "ds2").select("args.yaml").unique().collect()
    assert got.schema["args.yaml"] == pl.Float64
    assert sorted(got["args.yaml"].to_list(), key=lambda v: (v is None, v)) == [2.0, 3.5, None]
    _apx_runs_with(tmp_path / "huge", [2**63 + 5, 1])  # past int64: its digits, exactly
    bindf.ingest(tmp_path / "huge", tmp_path / "ds3", partition_by=["args.yaml"], threads=1)
    got = bindf.read_dataset(tmp_path / "ds3").select("args.yaml").unique().collect()
    assert sorted(got["args.yaml"].to_list()) == ["1", str(2**63 + 5)]


def test_read_parquet_of_an_ingested_dataset_folder(tmp_path: Path) -> None:
    """Folders of two schemas (AstroPix 4 and 3 runs): pyarrow read every file with the
    first one's columns, dropping the others' without a word; a null partition folder
    (a run without the field) made pandas' conversion fail with pyarrow's error."""
    runs = tmp_path / "runs"
    _apx_runs_with(runs, ["a", None])
    shutil.copy(SAMPLES / "astropix3_injection_run.apx", runs / "apx3.apx")
    dest = tmp_path / "ds"
    bindf.ingest(runs, dest, partition_by=["args.yaml"], threads=1)
    with pytest.raises(bindf.BindfError, match=r"its columns differ \(.*\); .* is a bindf "
                                               r"dataset: bindf.read_dataset\("):
        bindf.read_parquet(dest)
    frame = bindf.read_parquet(dest / "format=apx")
    assert len(frame) == 10 and frame["args.yaml"].isna().sum() == 5
    assert frame["args.yaml"].dropna().unique().tolist() == ["a"]
