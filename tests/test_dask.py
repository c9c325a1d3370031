"""bindf.dask: partitions, projection, file paths, damage, and a real 2-process cluster.

Fast tests use dask's synchronous scheduler; one module-scoped LocalCluster (2 worker
processes) checks that partitions really travel between processes. Every computed frame
is compared with the eager ``bindf.read`` of the same files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import write_stt1
from hypothesis import given, settings
from hypothesis import strategies as st

import bindf
import bindf.dask as bdask
from bindf.formats._base import FormatReader
from bindf.frontends.dask import Partition, parse_blocksize, plan_partitions
from bindf.registry import FormatSpec

RECORD = 17  # bytes per spectroscopy record


@pytest.fixture(autouse=True)
def synchronous_scheduler():
    with dask.config.set(scheduler="synchronous"):
        yield


def assert_same(ddf, eager: pd.DataFrame) -> pd.DataFrame:
    """The computed collection equals the eager frame (values, dtypes, order, attrs)."""
    result = ddf.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(result, eager)
    assert result.attrs == eager.attrs
    return result


def _from_map(ddf):
    """The optimised graph's from_map expression (there is exactly one)."""
    from dask.dataframe.dask_expr.io import FromMapProjectable

    expr = ddf.optimize(fuse=False).expr
    found = [e for e in expr.walk() if isinstance(e, FromMapProjectable)]
    assert len(found) == 1
    return found[0]


def header_size(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[4:8], "little")


# -- partitions ---------------------------------------------------------------------------

def test_partition_counts_follow_blocksize(stt1_files: list[Path]) -> None:
    files = [str(p) for p in stt1_files]  # 1000, 500 and 250 records
    assert bdask.read(files).npartitions == 3  # default 128 MiB: one range per file
    assert bdask.read(files, blocksize=None).npartitions == 3
    assert bdask.read(files, blocksize=300 * RECORD).npartitions == 4 + 2 + 1
    # Not a multiple of the record size: rounded down to whole records (58 per block).
    assert bdask.read(files, blocksize=1000).npartitions == 18 + 9 + 5
    # Smaller than one record: one record per partition.
    assert bdask.read(files[2:], blocksize=5).npartitions == 250
    assert bdask.read(files, blocksize="5 kB").npartitions == 4 + 2 + 1
    for bad in (0, -5, "nonsense", 1.5, True):
        with pytest.raises(ValueError):
            bdask.read(files, blocksize=bad)


@pytest.mark.parametrize("blocksize", [None, 1, 17, 100, 333 * RECORD + 5, "1 MiB"])
def test_byte_ranges_that_split_files_equal_the_eager_read(
    stt1_files: list[Path], blocksize: int | str | None
) -> None:
    files = [str(p) for p in stt1_files[1:]] if blocksize in (1, 17) else [str(p) for p in
                                                                            stt1_files]
    ddf = bdask.read(files, blocksize=blocksize)
    assert ddf.divisions == (None,) * (ddf.npartitions + 1)
    assert_same(ddf, bindf.read(files))


def test_partitions_are_record_aligned_and_cover_each_file_once(stt1_files: list[Path]) -> None:
    ddf = bdask.read([str(p) for p in stt1_files], blocksize=7 * RECORD)
    parts = _from_map(ddf).iterables[0]
    by_file: dict[str, list[tuple[int, int]]] = {}
    for part in parts:
        by_file.setdefault(part.path, []).append(part.rows)
    for path, n in zip(stt1_files, (1000, 500, 250)):
        ranges = by_file[str(path)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(stop - start == 7 for start, stop in ranges[:-1])
    # A partition's rows are exactly records start..stop of the file.
    whole = bindf.read(stt1_files[0])
    part = bdask.read(str(stt1_files[0]), blocksize=7 * RECORD).partitions[3].compute()
    pd.testing.assert_frame_equal(part.reset_index(drop=True),
                                  whole.iloc[21:28].reset_index(drop=True))


def test_meta_has_the_eager_dtypes_and_header(stt1_files: list[Path]) -> None:
    ddf = bdask.read_spectro([str(p) for p in stt1_files], include_file_paths="path")
    eager = bindf.read([str(p) for p in stt1_files], include_file_paths="path")
    assert list(ddf.columns) == list(eager.columns)
    meta = ddf._meta
    for name in eager.columns:  # the format's fixed categories are known up front
        assert meta[name].dtype == eager[name].dtype, name
    assert ddf["marker"].cat.known  # (were "unknown": .cat and get_dummies needed a pass)
    import dask.dataframe as dd

    dummies = dd.get_dummies(ddf[["marker"]]).compute()
    assert list(dummies.columns) == ["marker_frame", "marker_line", "marker_pixel"]
    assert str(meta["channel"].dtype) == "UInt8"
    assert meta.attrs["bindf"] == eager.attrs["bindf"]
    assert meta.attrs["bindf"]["header"] == {"channels": [0, 1, 2, 3], "laser_period_ns": 25.0}
    result = assert_same(ddf, eager)
    assert list(result["marker"].cat.categories) == ["frame", "line", "pixel"]


# -- projection ---------------------------------------------------------------------------

def _projected_columns(ddf) -> list[str] | None:
    """The columns that the optimised graph passes to bindf's partition reader."""
    return _from_map(ddf).kwargs.get("columns")


def test_projection_is_pushed_into_the_reader(stt1_files: list[Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    files = [str(p) for p in stt1_files]
    ddf = bdask.read(files, blocksize=200 * RECORD)
    eager = bindf.read(files)

    assert _projected_columns(ddf) is None
    sub = ddf[["macrotime_ns", "event"]]
    assert set(_projected_columns(sub)) == {"macrotime_ns", "event"}
    assert_same(sub, bindf.read(files, columns=["macrotime_ns", "event"]))

    series = ddf["channel"].compute().reset_index(drop=True)
    pd.testing.assert_series_equal(series, eager["channel"])
    assert set(_projected_columns(ddf[ddf.channel == 1].microtime_ns)) == {"microtime_ns",
                                                                           "channel"}
    assert ddf[ddf.channel == 1].microtime_ns.sum().compute() == pytest.approx(
        eager.microtime_ns[eager.channel == 1].sum())

    # columns= up front: the order asked for, and the reader decodes nothing else.
    requested: list[list[str] | None] = []
    original = bindf.frontends.dask.ReadPlan

    class Spy(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            requested.append(kwargs.get("columns"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(bindf.frontends.dask, "ReadPlan", Spy)
    ddf2 = bdask.read(files, columns=["channel", "event"])
    requested.clear()
    assert_same(ddf2, bindf.read(files, columns=["channel", "event"]))
    assert requested == [["channel", "event"]] * 3
    assert list(bdask.read(files, columns="event").columns) == ["event"]
    with pytest.raises(ValueError, match="unknown column"):
        bdask.read(files, columns=["nope"])


def test_include_file_paths(stt1_files: list[Path]) -> None:
    files = [str(p) for p in stt1_files]
    ddf = bdask.read(files, blocksize=123 * RECORD, include_file_paths="file")
    eager = bindf.read(files, include_file_paths="file")
    result = assert_same(ddf, eager)
    assert result.groupby("file").size().to_dict() == dict(zip(files, (1000, 500, 250)))
    # Only the path column: the reader still counts rows.
    only = ddf["file"].compute().reset_index(drop=True)
    pd.testing.assert_series_equal(only, eager["file"])
    counts = ddf.groupby("file").event.count().compute()
    assert counts.to_dict() == dict(zip(files, (1000, 500, 250)))
    with pytest.raises(ValueError, match="already exist"):
        bdask.read(files, include_file_paths="event")


def test_partitions_share_the_collections_info(stt1_files: list[Path]) -> None:
    """The info (every source) is made read-only once on the client, and every
    partition refers to it: made again for each partition, a glob of thousands of
    small runs cost O(files) a partition, O(files²) in all."""
    files = [str(p) for p in stt1_files]
    ddf = bdask.read(files, blocksize=123 * RECORD)
    first, second = (ddf.get_partition(k).compute(scheduler="sync") for k in (0, 5))
    assert first.attrs["bindf"]["source"] == files
    assert first.attrs["bindf"]["source"] is second.attrs["bindf"]["source"]
    assert ddf._meta.attrs["bindf"]["source"] is first.attrs["bindf"]["source"]


def test_glob_legacy_files_and_format_options(tmp_path: Path) -> None:
    # Legacy raw output: no header, records from byte 0; container= goes to the reader.
    for i in range(5):
        body = write_stt1(tmp_path / f"stt{i}.tmp", n=300 + i, seed=i).read_bytes()
        (tmp_path / f"legacy{i}.bin").write_bytes(body[header_size(tmp_path / f"stt{i}.tmp"):])
    pattern = str(tmp_path / "legacy*.bin")
    ddf = bdask.read(pattern, format="spectro", container="legacy", blocksize=50 * RECORD)
    assert ddf.npartitions == 6 + 4 * 7  # 300 records, then 301..304
    eager = bindf.read(pattern, format="spectro", container="legacy")
    assert eager.attrs["bindf"]["header"] == {}
    assert_same(ddf, eager)


@pytest.mark.parametrize("shape", ["tidy", "wide"])
def test_records_that_expand_into_several_rows(data_dir: Path, shape: str) -> None:
    # SP01: one 2056-byte record (2 channels × 256 bins) is 512 tidy rows, or 1 wide row.
    # Byte ranges count records, so partitions still start on record boundaries.
    path = str(data_dir / "sp01_decay_curves_example.bin")
    ddf = bdask.read(path, blocksize=7 * 2056, shape=shape)
    assert ddf.npartitions == 15  # 100 records, 7 per partition
    eager = bindf.read(path, shape=shape)
    assert len(eager) == (51200 if shape == "tidy" else 100)
    assert_same(ddf, eager)
    if shape == "tidy":
        assert_same(ddf[["time_ns", "count"]], bindf.read(path, columns=["time_ns", "count"]))


def test_real_phasor_export_in_pieces(data_dir: Path) -> None:
    path = str(data_dir / "spf1_phasors_example.bin")
    ddf = bdask.read_spf1([path, path], blocksize=1000, include_file_paths="file")
    assert ddf.npartitions == 2 * 13  # 400 records of 32 bytes, 31 per partition
    assert_same(ddf, bindf.read([path, path], include_file_paths="file"))


def test_generic_records_with_a_header_dependent_layout(tmp_path: Path) -> None:
    # A 16-byte header (u4 channels, u4 count, 8 spare) then `count` records of
    # (f8 time, u2 × channels); two trailing bytes that the declared count excludes.
    header_dtype = np.dtype([("channels", "<u4"), ("count", "<u4"), ("spare", "<u8")])
    files = []
    for i, (channels, n) in enumerate(((3, 500), (3, 260))):
        rec = np.zeros(n, dtype=[("time", "<f8"), ("adc", "<u2", (channels,))])
        rec["time"] = np.arange(n) * 0.5 + i
        rec["adc"] = np.arange(n * channels, dtype="<u2").reshape(n, channels)
        head = np.array([(channels, n, 0)], dtype=header_dtype).tobytes()
        path = tmp_path / f"log{i}.dat"
        path.write_bytes(head + rec.tobytes() + b"\0\0")
        files.append(str(path))

    def dtype(h):
        return [("time", "<f8"), ("adc", "<u2", (h["channels"],))]

    options = {"header": header_dtype, "count": lambda h: h["count"]}
    ddf = bdask.read_records(files, dtype, blocksize=100 * 14, **options)
    assert ddf.npartitions == 5 + 3
    eager = bindf.read_records(files, dtype, **options)
    assert list(eager.columns) == ["time", "adc_0", "adc_1", "adc_2"]
    assert_same(ddf, eager)
    assert_same(ddf[["adc_2"]], bindf.read_records(files, dtype, columns=["adc_2"], **options))

    # A header that promises more records than the file holds: warned once, on the
    # client; the partitions (which re-read the header) stay quiet.
    short = tmp_path / "short.dat"
    short.write_bytes(np.array([(3, 400, 0)], dtype=header_dtype).tobytes() + bytes(14 * 100))
    with pytest.warns(bindf.TruncatedFileWarning, match="declares 400") as caught:
        ddf = bdask.read_records(str(short), dtype, blocksize=10 * 14, **options)
    assert len(caught) == 1 and ddf.npartitions == 10
    with pytest.warns(bindf.TruncatedFileWarning):
        eager = bindf.read_records(str(short), dtype, **options)
    assert_same(ddf, eager)


# -- formats without record ranges: one partition per file ---------------------------------

class ToyReader(FormatReader):
    """``TOY1`` then little-endian u32 values; decoded whole (as AstroPix must be)."""

    name: ClassVar[str] = "toy"
    label: ClassVar[str] = "toy"

    def _read_header(self, f):
        if f.read(4) != b"TOY1":
            raise bindf.HeaderError("bad magic", path=self.path, offset=0)
        return {"kind": "toy"}

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field("value", pa.uint32(), nullable=False),
                          pa.field("odd", pa.bool_(), nullable=False)])

    def _batches(self, columns, batch_size, n_rows):
        with self.source.open() as f:
            f.seek(4)
            values = np.frombuffer(f.read(), dtype="<u4")
        bad = values == 0xFFFFFFFF  # "damaged" records, for the on_error tests
        if bad.any():
            if self.on_error == "raise":
                offset = 4 + 4 * int(np.argmax(bad))
                raise bindf.CorruptDataError("bad value", path=self.path, offset=offset)
            self.note_error("bad value", int(bad.sum()))
            values = values[~bad]
        table = {"value": pa.array(values), "odd": pa.array(values % 2 == 1)}
        yield pa.RecordBatch.from_arrays([table[c] for c in columns], names=columns)


@pytest.fixture
def toy_format(monkeypatch: pytest.MonkeyPatch) -> None:
    import bindf.registry as registry

    monkeypatch.setitem(registry._BY_NAME, "toy", FormatSpec("toy", "toy", "test_dask:ToyReader"))


def test_formats_without_record_ranges_get_one_partition_per_file(
    tmp_path: Path, toy_format: None
) -> None:
    files = []
    for i, n in enumerate((10, 0, 7)):
        path = tmp_path / f"t{i}.toy"
        path.write_bytes(b"TOY1" + np.arange(n, dtype="<u4").tobytes())
        files.append(str(path))
    ddf = bdask.read(files, format="toy", blocksize=8, include_file_paths="p")
    assert ddf.npartitions == 3  # blocksize does not apply
    assert_same(ddf, bindf.read(files, format="toy", include_file_paths="p"))
    assert_same(ddf[["odd"]], bindf.read(files, format="toy", columns=["odd"]))


def test_damage_in_whole_file_partitions(tmp_path: Path, toy_format: None) -> None:
    files = []
    for i, values in enumerate(([1, 2, 0xFFFFFFFF, 4], [5, 6], [0xFFFFFFFF] * 2 + [7])):
        path = tmp_path / f"d{i}.toy"
        path.write_bytes(b"TOY1" + np.array(values, dtype="<u4").tobytes())
        files.append(str(path))
    with pytest.raises(bindf.CorruptDataError, match=r"d[02]\.toy") as info:
        bdask.read(files, format="toy").compute()  # either damaged file may come first
    assert (Path(info.value.path).name, info.value.offset) in {("d0.toy", 12), ("d2.toy", 4)}
    ddf = bdask.read(files, format="toy", on_error="skip")
    eager = bindf.read(files, format="toy", on_error="skip")
    assert eager.attrs["bindf"]["errors"] == {"bad value": 3}
    # Every partition carries the collection's attrs, no damage count of its own:
    # concatenation keeps attrs only when they are equal (a count per partition lost
    # the header of the whole result).
    per_part = [ddf.partitions[i].compute().attrs["bindf"] for i in range(3)]
    assert all(attrs == per_part[0] and "errors" not in attrs for attrs in per_part)
    computed = ddf.compute()
    pd.testing.assert_frame_equal(computed.reset_index(drop=True), eager)
    assert computed.attrs["bindf"]["header"] == eager.attrs["bindf"]["header"]
    assert computed.attrs["bindf"]["source"] == eager.attrs["bindf"]["source"]


def test_plan_partitions_is_generic() -> None:
    class Whole:
        source = "w"

        def count_rows(self):
            return None

    class Fixed:
        record_size = 10
        source = "f"

        def count_rows(self):
            return 25

        def iter_record_range(self, *args):  # pragma: no cover - never called here
            raise AssertionError

    parts = plan_partitions([Whole(), Fixed(), Whole()], 100)  # type: ignore[list-item]
    assert [(p.source, p.rows) for p in parts] == [
        ("w", None), ("f", (0, 10)), ("f", (10, 20)), ("f", (20, 25)), ("w", None)]
    assert [p.rows for p in plan_partitions([Fixed()], None)] == [(0, 25)]  # type: ignore[list-item]
    assert parse_blocksize("1 KiB") == 1024 and parse_blocksize(None) is None
    assert Partition("x").rows is None  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 5000), min_size=1, max_size=6),
       record_size=st.integers(1, 64), blocksize=st.one_of(st.none(), st.integers(1, 10**5)))
def test_planned_ranges_cover_every_record_once(counts: list[int], record_size: int,
                                               blocksize: int | None) -> None:
    class Fixed:
        def __init__(self, i: int, n: int) -> None:
            self.source, self.n, self.record_size = i, n, record_size

        def count_rows(self) -> int:
            return self.n

        def iter_record_range(self, *args):  # pragma: no cover
            raise AssertionError

    parts = plan_partitions([Fixed(i, n) for i, n in enumerate(counts)], blocksize)  # type: ignore[misc]
    per_record = 1 if blocksize is None else max(1, blocksize // record_size)
    for i, n in enumerate(counts):
        ranges = [p.rows for p in parts if p.source == i]
        covered = [r for start, stop in ranges for r in range(start, stop)]
        assert covered == list(range(n))
        assert all(stop - start <= (n if blocksize is None else per_record)
                   for start, stop in ranges)
    assert len(parts) >= 1


# -- damage ---------------------------------------------------------------------------------

def test_empty_files(tmp_path: Path, stt1_files: list[Path]) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    ddf = bdask.read(str(empty), format="spectro")
    assert ddf.npartitions == 1
    assert_same(ddf, bindf.read(str(empty), format="spectro"))
    # A header without records, among other files: contributes no partition and no rows.
    header_only = write_stt1(tmp_path / "header_only.bin", n=0)
    files = [str(stt1_files[2]), str(header_only), str(stt1_files[1])]
    ddf = bdask.read(files, blocksize=100 * RECORD, include_file_paths="f")
    assert ddf.npartitions == 3 + 5
    assert_same(ddf, bindf.read(files, include_file_paths="f"))
    # Read as the first file's format, an empty file adds nothing.
    files = [str(stt1_files[1]), str(empty)]
    assert_same(bdask.read(files), bindf.read(files))
    # On its own it cannot be detected: the error names it.
    with pytest.raises(bindf.UnknownFormatError, match="empty.bin"):
        bdask.read(str(empty))


def test_truncated_file_warns_and_keeps_complete_records(stt1_files: list[Path]) -> None:
    path = stt1_files[0]
    data = path.read_bytes()
    path.write_bytes(data[:-RECORD - 9])  # last record gone, the one before cut mid-way
    files = [str(p) for p in stt1_files]
    with pytest.warns(bindf.TruncatedFileWarning, match="8 bytes") as caught:
        ddf = bdask.read(files, blocksize=128 * RECORD)
    assert caught[0].message.path == str(path)
    assert caught[0].message.offset == header_size(path) + 998 * RECORD
    with pytest.warns(bindf.TruncatedFileWarning):
        eager = bindf.read(files)
    assert len(eager) == 998 + 500 + 250
    assert_same(ddf, eager)  # no second warning when computing


def test_a_cut_run_warns_on_every_compute(tmp_path: Path) -> None:
    """A run cut mid-readout warns in the worker that decodes it, on dask's threaded
    scheduler, every time: a partition's header read hid bindf's warnings behind a
    process-wide ``catch_warnings`` filter, so a cut file decoded meanwhile on the
    other thread often gave no warning (6 computes in 8)."""
    run = (Path(bindf.__file__).parent / "samples" / "astropix_threshold_scan.apx")
    data = run.read_bytes()
    paths = []
    for k in range(4):
        path = tmp_path / f"r{k}.apx"
        path.write_bytes(data[: len(data) * 2 // 3] if k == 2 else data)
        paths.append(str(path))
    expected = bindf.read(paths[:2] + paths[3:], output="arrow").num_rows
    for _ in range(12):
        with pytest.warns(bindf.TruncatedFileWarning) as caught:
            frame = bdask.read_apx(paths).compute(scheduler="threads")
        assert [w.message.path for w in caught
                if issubclass(w.category, bindf.TruncatedFileWarning)] == [paths[2]]
        assert len(frame) > expected


def test_file_that_shrinks_after_planning(stt1_files: list[Path]) -> None:
    path = stt1_files[0]
    ddf = bdask.read(str(path), blocksize=100 * RECORD)
    path.write_bytes(path.read_bytes()[: header_size(path) + 450 * RECORD])
    with pytest.warns(bindf.TruncatedFileWarning, match="shrank"):
        result = ddf.compute()
    assert len(result) == 450


def test_missing_files_and_bad_arguments(tmp_path: Path, stt1_files: list[Path]) -> None:
    with pytest.raises(FileNotFoundError):
        bdask.read(str(tmp_path / "nothing*.bin"))
    with pytest.raises(FileNotFoundError):
        bdask.read(str(tmp_path / "missing.bin"))
    with pytest.raises(TypeError, match="format"):
        bdask.read_spectro(str(stt1_files[0]), format="apx")
    with pytest.raises(TypeError, match="unexpected option"):
        bdask.read(str(stt1_files[0]), nonsense=1)
    # eager-only options get the dask way to the same thing, from both spellings
    for name, hint in [("n_rows", r"ddf\.head\(n\)"), ("nrows", r"ddf\.head\(n\)"),
                       ("output", "pandas frames"), ("row_index_name", "cumsum")]:
        with pytest.raises(TypeError, match=f"'{name}'; .*{hint}"):
            bdask.read_spectro(str(stt1_files[0]), **{name: 1})
    with pytest.raises(TypeError, match=r"does not take n_rows=: use ddf\.head\(n\)"):
        bdask.read(str(stt1_files[0]), n_rows=1)


def test_import_bindf_does_not_need_dask(tmp_path: Path) -> None:
    path = write_stt1(tmp_path / "x.bin", n=10)
    code = (
        "import sys\n"
        "sys.modules['dask'] = None; sys.modules['dask.dataframe'] = None\n"
        "import bindf\n"
        f"assert len(bindf.read({str(path)!r})) == 10\n"
        f"assert len(bindf.read_headers([{str(path)!r}] * 20)) == 20\n"
        "try:\n"
        "    import bindf.dask\n"
        "except ModuleNotFoundError as exc:\n"
        "    assert \"pip install 'bindf[dask]'\" in str(exc), exc\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    assert bindf.dask is bdask  # the lazy attribute


# -- a real cluster: two worker processes ----------------------------------------------------

@pytest.fixture(scope="module")
def cluster_client():
    import distributed  # part of the test extra: a missing install must fail, not skip

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_local_cluster_matches_the_eager_read(tmp_path: Path, cluster_client) -> None:
    files = [str(write_stt1(tmp_path / f"run{i}.bin", n=2000 + 300 * i, seed=i))
             for i in range(6)]
    with dask.config.set(scheduler="dask.distributed"):  # not the autouse synchronous one
        ddf = bdask.read(str(tmp_path / "run*.bin"), blocksize=500 * RECORD,
                         include_file_paths="file")
        assert ddf.npartitions == sum(-(-(2000 + 300 * i) // 500) for i in range(6))
        eager = bindf.read(files, include_file_paths="file")
        assert_same(ddf, eager)

        grouped = ddf.groupby(["file", "event"]).microtime_ns.mean().compute().sort_index()
        expected = eager.groupby(["file", "event"]).microtime_ns.mean().sort_index()
        pd.testing.assert_series_equal(grouped, expected)

        # The headers of many files are read on the cluster too.
        headers = bindf.read_headers(files, parallel=True)
        assert headers["rows"].tolist() == [2000 + 300 * i for i in range(6)]
        assert headers["path"].tolist() == files



def test_a_format_registered_at_run_time_reads_on_worker_processes(
        format_cases: dict, cluster_client) -> None:
    """``register_format`` in a notebook (here: the test process) gives
    ``bindf.dask.read_<name>`` at once, but the worker processes never registered it:
    every partition failed with "unknown format 'stamp'". The spec goes to them now."""
    case = format_cases["stamp"]
    with dask.config.set(scheduler="dask.distributed"):
        ddf = bdask.read_stamp(str(case.path), blocksize=64)
        assert ddf.npartitions > 1
        assert_same(ddf, bindf.read_stamp(case.path))
    # built-ins and plugins a worker imports itself are named, not sent
    assert bindf.registry.spec_for_workers("apx") == "apx"
    assert bindf.registry.spec_for_workers("tpl") == "tpl"

def test_to_parquet_dataset_keeps_the_header(stt1_files: list[Path], tmp_path: Path) -> None:
    files = [str(p) for p in stt1_files]
    ddf = bdask.read(files, blocksize=300 * RECORD, include_file_paths="file")
    out = tmp_path / "photons.parquet"
    bdask.to_parquet(ddf, str(out))
    parts = sorted(out.glob("*.parquet"))
    assert len(parts) == ddf.npartitions
    eager = bindf.read(files, include_file_paths="file")
    first = bindf.read_parquet(parts[0])
    assert first.attrs["bindf"]["header"] == eager.attrs["bindf"]["header"]
    assert first.attrs["bindf"]["source"] == files
    back = pd.concat([bindf.read_parquet(p) for p in parts], ignore_index=True)
    pd.testing.assert_frame_equal(back, eager)


def test_a_dataset_of_many_parts_reads_back_in_row_order(stt1_files: list[Path],
                                                         tmp_path: Path) -> None:
    """dask names its parts part.0 … part.16; read as a folder, pyarrow listed them as
    text (part.1, part.10, …, part.2), and the rows came back out of order."""
    ddf = bdask.read(str(stt1_files[0]), blocksize=50 * RECORD)
    out = tmp_path / "photons.parquet"
    bdask.to_parquet(ddf, str(out))
    assert ddf.npartitions > 11
    eager = bindf.read(stt1_files[0], output="polars")
    assert bindf.read_parquet(out, output="polars").equals(eager)
    back = bindf.read_parquet(out, columns=["macrotime_ns"])
    assert back["macrotime_ns"].tolist() == eager["macrotime_ns"].to_list()


def test_to_parquet_with_binary_and_list_columns(tmp_path: Path) -> None:
    # object columns (A-STEP's binary sensor bytes, read_records' sub-arrays as lists):
    # dask cannot infer their Arrow types from its placeholder values
    records = tmp_path / "vectors.dat"
    dtype = np.dtype([("t", "<u8"), ("v", "<u2", (3,))])
    values = np.zeros(50, dtype=dtype)
    values["t"] = np.arange(50)
    values["v"] = np.arange(150).reshape(50, 3)
    records.write_bytes(values.tobytes())
    data = Path(__file__).parent / "data"
    cases = [(bdask.read(str(data / "quad_chip_data.bin")), bindf.read(data / "quad_chip_data.bin")),
             (bdask.read_records(str(records), dtype, subarrays="list", blocksize=20 * 14),
              bindf.read_records(records, dtype, subarrays="list"))]
    for k, (ddf, eager) in enumerate(cases):
        out = tmp_path / f"out{k}.parquet"
        bdask.to_parquet(ddf, str(out))
        back = pd.concat([bindf.read_parquet(p) for p in sorted(out.glob("*.parquet"))],
                         ignore_index=True)
        assert back.columns.tolist() == eager.columns.tolist()
        objects = [name for name in eager.columns if eager[name].dtype == object]
        assert objects == (["sensor"] if k == 0 else ["v"])
        pd.testing.assert_frame_equal(back.drop(columns=objects), eager.drop(columns=objects))
        for name in objects:  # bytes, or arrays of the same values
            assert [bytes(v) if k == 0 else list(v) for v in back[name]] == \
                [bytes(v) if k == 0 else list(v) for v in eager[name]]


def test_eager_only_options_are_refused_with_a_hint(stt1_files: list[Path]) -> None:
    with pytest.raises(TypeError, match=r"n_rows=.*head"):
        bdask.read(str(stt1_files[0]), n_rows=5)
    with pytest.raises(TypeError, match="blocksize"):
        bdask.read_spectro(str(stt1_files[0]), chunksize=5)


def test_local_cluster_ships_header_callables(tmp_path: Path, cluster_client) -> None:
    # read_records options that are lambdas of the header reach the worker processes.
    header_dtype = np.dtype([("n", "<u4")])
    path = tmp_path / "x.dat"
    values = np.arange(1000, dtype="<f4")
    path.write_bytes(np.array([(990,)], dtype=header_dtype).tobytes() + values.tobytes())
    options = {"header": header_dtype, "count": lambda h: h["n"] - 10}
    with dask.config.set(scheduler="dask.distributed"):
        ddf = bdask.read_records(str(path), "<f4", blocksize=400, **options)
        assert ddf.npartitions == 10
        assert_same(ddf, bindf.read_records(str(path), "<f4", **options))


def test_dense_it02_is_cut_into_record_ranges_sparse_is_not(tmp_path: Path) -> None:
    # Dense IT02 records have one size (8 + 4 channels bytes): byte ranges, like any
    # fixed-record format. The sparse record chain must be decoded from the start.
    n = 3000
    frame = {"time_ns": (np.arange(n) + 1) * 1e3, "ch1": np.arange(n) % 5,
             "ch3": np.arange(n) * 7 % 11}
    header = {"channels": [0, 2], "bin_width_micros": 1}
    dense, sparse = tmp_path / "dense.bin", tmp_path / "sparse.bin"
    bindf.write_it02(dense, frame, header, layout="dense")
    bindf.write_it02(sparse, frame, header, layout="sparse")
    ddf = bdask.read_it02(str(dense), blocksize=16 * 500)
    assert ddf.npartitions == 6
    assert_same(ddf, bindf.read_it02(str(dense)))
    assert_same(bdask.read_it02(str(dense), blocksize=16 * 500, columns=["ch3"]),
                bindf.read_it02(str(dense), columns=["ch3"]))
    assert bdask.read_it02(str(sparse), blocksize=16 * 500).npartitions == 1
    assert bdask.read_it02(str(dense), blocksize=16 * 500, fill_gaps=True).npartitions == 1


def test_every_registered_format_has_a_dask_reader(tmp_path: Path) -> None:
    # Generated from the registry: the legacy log (once missing from the list) included.
    from test_apx_log import METADATA, _apx_readouts

    for name in bindf.registry.format_names():
        assert callable(getattr(bdask, f"read_{name}")), name
    apx = Path(__file__).parent / "data" / "20250723_092534_data.apx"
    log = tmp_path / "run.log"
    log.write_text(METADATA + "".join(f"{rid}\t b'{payload.hex()}'\n"
                                      for rid, payload in _apx_readouts(apx)[:60]))
    ddf = bdask.read_apx_log(str(log), columns=["readout_id", "row"])
    assert ddf.npartitions == 1
    assert_same(ddf, bindf.read_apx_log(str(log), columns=["readout_id", "row"]))


def test_a_partitions_warning_points_at_the_compute_line(tmp_path: Path) -> None:
    """A partition decoded on a dask worker thread warns at the line that computed (the
    main thread's, waiting in dask), not at dask's or bindf's code."""
    import warnings

    from conftest import DATA

    data = bytearray((DATA / "20250723_092534_data.apx").read_bytes())
    second = data.index(b"\xfe\xdc\xba", data.index(b"\xfe\xdc\xba") + 1)
    data[second] = 0  # a damaged readout marker: skipped with a warning
    path = tmp_path / "damaged.apx"
    path.write_bytes(bytes(data))
    ddf = bdask.read_apx(str(path), on_error="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = ddf.compute(scheduler="threads"); line = sys._getframe().f_lineno  # noqa: E702
    damage = [w for w in caught if w.category is bindf.CorruptDataWarning]
    assert len(frame) and damage
    assert {(w.filename, w.lineno) for w in damage} == {(__file__, line)}
