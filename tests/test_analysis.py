"""Analysis helpers on ``df.bindf`` (bindf.analysis): exact values on small constructed
frames (pandas, polars and polars LazyFrames), frames built from the real sample files,
error cases, and every plot saved to PNG with the Agg backend.

The AstroPix and IT02 readers are written elsewhere; their frames are built here from the
column layout of docs/formats/ (and from the upstream decoder's CSV and the real IT02
export). Spectroscopy frames also come from the real reader.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import write_stt1
from hypothesis import given, settings
from hypothesis import strategies as st

import bindf
from bindf.arrow import build_info
from bindf.frontends.output import set_polars_info

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KINDS = ("pandas", "polars", "lazy")

APX_DTYPES = {
    "chip_id": "u1", "payload": "u1", "readout_id": "u4", "timestamp": "u8",
    "decoding_order": "u1", "row": "u1", "column": "u1", "ts_neg1": "u1",
    "ts_coarse1": "u2", "ts_fine1": "u1", "ts_tdc1": "u1", "ts_neg2": "u1",
    "ts_coarse2": "u2", "ts_fine2": "u1", "ts_tdc2": "u1", "ts_dec1": "u4",
    "ts_dec2": "u4", "tot_us": "f8",
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def frame(kind: str, columns: dict[str, Any], fmt: str, header: dict[str, Any]) -> Any:
    """A frame of ``kind`` carrying bindf metadata, as a bindf reader would return it."""
    info = build_info(fmt, header, "constructed.bin")
    if kind == "pandas":
        df = pd.DataFrame(columns)
        df.attrs["bindf"] = info
        return df
    pf = pl.DataFrame(columns)
    if kind == "lazy":
        pf = pf.lazy()
    set_polars_info(pf, info)
    return pf


def as_polars(result: Any, kind: str) -> pl.DataFrame:
    """Check the result's library, then compare everything in polars."""
    if kind == "pandas":
        assert isinstance(result, pd.DataFrame)
        return pl.from_pandas(result)
    assert isinstance(result, pl.DataFrame)
    return result


def apx_columns(hits: list[tuple[int, int, int, float, int, int]]) -> dict[str, np.ndarray]:
    """Hit columns in read_apx's order and types from (chip, row, column, tot_us,
    readout_id, timestamp) tuples; the raw timestamp fields are left zero."""
    chip, row, col, tot, readout, stamp = (list(v) for v in zip(*hits)) if hits \
        else ([],) * 6
    values = {"chip_id": chip, "readout_id": readout, "timestamp": stamp, "row": row,
              "column": col, "tot_us": tot}
    return {name: np.asarray(values.get(name, np.zeros(len(hits))), dtype=dtype)
            for name, dtype in APX_DTYPES.items()}


AP4 = {"readout_uid": 4000}

HITS = [  # chip, row, column, tot_us, readout_id, timestamp
    (0, 0, 9, 5.0, 7, 1_000),
    (0, 0, 9, 15.0, 7, 1_000),
    (0, 12, 15, 25.0, 8, 3_000),
    (1, 3, 4, 30.0, 5, 500),
    (1, 3, 4, np.nan, 8, 3_000),
]


# --- AstroPix -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_hit_map_counts_every_pixel_of_the_grid(kind: str) -> None:
    df = frame(kind, apx_columns(HITS), "apx", AP4)
    hm = as_polars(df.bindf.hit_map(), kind)
    assert hm.columns == ["row", "column", "hits"]
    assert hm.schema["row"] == pl.UInt8 and hm.schema["hits"] == pl.Int64
    assert hm.height == 13 * 16  # AstroPix 4 pixel matrix, zeros included
    assert hm["row"].to_list() == sorted(hm["row"].to_list())
    nonzero = hm.filter(pl.col("hits") > 0)
    assert nonzero.rows() == [(0, 9, 2), (3, 4, 2), (12, 15, 1)]

    per_chip = as_polars(df.bindf.hit_map(per_chip=True), kind)
    assert per_chip.columns == ["chip_id", "row", "column", "hits"]
    assert per_chip.height == 2 * 13 * 16
    assert per_chip.filter(pl.col("hits") > 0).rows() == [
        (0, 0, 9, 2), (0, 12, 15, 1), (1, 3, 4, 2)]


def test_hit_map_grid_follows_readout_and_never_drops_hits() -> None:
    # No known readout: the full range of the 5-bit row/column fields.
    for header in ({"readout_uid": 9999}, {"readout_uid": [4000]}, {}):
        df = frame("polars", apx_columns(HITS), "apx", header)
        assert df.bindf.hit_map().height == 32 * 32
    # A hit outside the AstroPix 4 matrix grows the grid instead of vanishing.
    df = frame("polars", apx_columns([(0, 20, 2, 1.0, 0, 0)]), "apx", AP4)
    hm = df.bindf.hit_map()
    assert hm.height == 21 * 16 and hm["hits"].sum() == 1
    assert hm.filter(pl.col("hits") == 1).rows() == [(20, 2, 1)]
    assert df.bindf.hit_map(shape=(32, 32)).height == 1024
    with pytest.raises(ValueError, match="too small"):
        df.bindf.hit_map(shape=(13, 16))
    # Empty hit table: the zero map per_chip=False, no chips per_chip=True.
    empty = frame("pandas", apx_columns([]), "apx", AP4)
    assert empty.bindf.hit_map()["hits"].sum() == 0 and len(empty.bindf.hit_map()) == 208
    assert len(empty.bindf.hit_map(per_chip=True)) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_tot_histogram_per_chip(kind: str) -> None:
    df = frame(kind, apx_columns(HITS), "apx", AP4)
    th = as_polars(df.bindf.tot_histogram(bins=[0, 10, 20, 30]), kind)
    assert th.columns == ["chip_id", "tot_us_low", "tot_us_high", "count"]
    # 30.0 sits on the last edge: included, as numpy.histogram does; NaN is not counted.
    assert th.rows() == [
        (0, 0.0, 10.0, 1), (0, 10.0, 20.0, 1), (0, 20.0, 30.0, 1),
        (1, 0.0, 10.0, 0), (1, 10.0, 20.0, 0), (1, 20.0, 30.0, 1),
    ]
    # An int: equal bins over the finite range of the data, shared by all chips.
    th = as_polars(df.bindf.tot_histogram(bins=5), kind)
    assert th["tot_us_low"].unique().sort().to_list() == [5.0, 10.0, 15.0, 20.0, 25.0]
    assert th.group_by("chip_id").agg(pl.col("count").sum()).sort("chip_id").rows() == [
        (0, 3), (1, 1)]
    # Outside an explicit range: not counted.
    th = as_polars(df.bindf.tot_histogram(bins=2, range=(0, 20)), kind)
    assert th["count"].to_list() == [1, 1, 0, 0]


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_tot_histogram_per_pixel(kind: str) -> None:
    df = frame(kind, apx_columns(HITS), "apx", AP4)
    th = as_polars(df.bindf.tot_histogram(by="pixel", bins=[0, 20, 40]), kind)
    assert th.columns == ["chip_id", "row", "column", "tot_us_low", "tot_us_high", "count"]
    assert th.rows() == [
        (0, 0, 9, 0.0, 20.0, 2), (0, 0, 9, 20.0, 40.0, 0),
        (0, 12, 15, 0.0, 20.0, 0), (0, 12, 15, 20.0, 40.0, 1),
        (1, 3, 4, 0.0, 20.0, 0), (1, 3, 4, 20.0, 40.0, 1),
    ]
    with pytest.raises(ValueError, match="by must be one of"):
        df.bindf.tot_histogram(by="row")
    with pytest.raises(ValueError, match="bins must be at least 1"):
        df.bindf.tot_histogram(bins=0)
    with pytest.raises(ValueError, match="increas"):
        df.bindf.tot_histogram(bins=[0, 10, 5])
    with pytest.raises(ValueError, match="increas"):
        df.bindf.tot_histogram(bins=[0, 10, 10])


@pytest.mark.parametrize("kind", KINDS)
def test_hits_per_readout(kind: str) -> None:
    df = frame(kind, apx_columns(HITS), "apx", AP4)
    hp = as_polars(df.bindf.hits_per_readout(), kind)
    assert hp.columns == ["readout_id", "timestamp", "hits"]
    assert hp.schema == {"readout_id": pl.UInt32, "timestamp": pl.UInt64, "hits": pl.Int64}
    assert hp.rows() == [(5, 500, 1), (7, 1_000, 2), (8, 3_000, 2)]  # time order


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_hits_per_readout_in_file_order_and_shuffled(kind: str) -> None:
    # Two runs read together: readout ids restart, timestamps tell them apart.
    hits = [(0, 1, 1, 1.0, r, t) for r, t, k in
            [(0, 100, 3), (1, 200, 1), (2, 300, 2), (0, 900, 1), (1, 950, 4)]
            for _ in range(k)]
    in_order = frame(kind, apx_columns(hits), "apx", AP4)
    expected = [(0, 100, 3), (1, 200, 1), (2, 300, 2), (0, 900, 1), (1, 950, 4)]
    assert as_polars(in_order.bindf.hits_per_readout(), kind).rows() == expected
    order = np.random.default_rng(0).permutation(len(hits))
    shuffled = frame(kind, apx_columns([hits[i] for i in order]), "apx", AP4)
    assert as_polars(shuffled.bindf.hits_per_readout(), kind).rows() == expected
    # A readout split in two runs (hits of readout 0 after readout 1) is still one row.
    split = frame(kind, apx_columns([hits[0], hits[3], hits[1], hits[2]]), "apx", AP4)
    assert as_polars(split.bindf.hits_per_readout(), kind).rows() == [(0, 100, 3),
                                                                      (1, 200, 1)]


def real_apx(kind: str) -> Any:
    """The real run's hit table, as the upstream decoder wrote it (CSV golden)."""
    path = Path(__file__).parent / "data" / "20250723_092534_data.csv"
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline()[1:])
    table = pd.read_csv(path, comment="#", dtype=APX_DTYPES)
    return frame(kind, {name: table[name].to_numpy() for name in table}, "apx", header)


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_helpers_on_the_real_astropix_run(kind: str) -> None:
    df = real_apx(kind)
    hm = as_polars(df.bindf.hit_map(), kind)
    # A threshold scan injecting into pixel (row 0, column 9): all 776 hits there.
    assert hm.height == 13 * 16
    assert hm.filter(pl.col("hits") > 0).rows() == [(0, 9, 776)]
    hp = as_polars(df.bindf.hits_per_readout(), kind)
    assert hp["hits"].sum() == 776 and hp["hits"].max() == 2
    assert hp.height == len(np.unique(np.asarray(df["readout_id"])))
    assert (hp["timestamp"].diff().drop_nulls() >= 0).all()
    th = as_polars(df.bindf.tot_histogram(bins=50), kind)
    assert th["count"].sum() == 776 and th.height == 50


# --- IT02 -----------------------------------------------------------------------------


def it02_columns(times: list[float], **counts: list[int]) -> dict[str, np.ndarray]:
    columns = {"time_ns": np.asarray(times, dtype="f8")}
    columns.update({name: np.asarray(v, dtype="u4") for name, v in counts.items()})
    return columns


IT02_HEADER = {"channels": [1, 3], "bin_width_micros": 1000,
               "acquisition_time_millis": 5, "channel_names": {"3": "GFP"}}


@pytest.mark.parametrize("kind", KINDS)
def test_rebin_sums_consecutive_bins(kind: str) -> None:
    df = frame(kind, it02_columns([1e6, 2e6, 3e6, 4e6, 5e6], ch2=[1, 2, 3, 4, 5],
                                  ch4=[0, 1, 0, 1, 0]), "it02", IT02_HEADER)
    coarse = df.bindf.rebin(2000)
    rb = as_polars(coarse, kind)
    assert rb.schema == {"time_ns": pl.Float64, "ch2": pl.UInt64, "ch4": pl.UInt64}
    # Bins end at their time_ns; the last coarse bin holds one fine bin only.
    assert rb.rows() == [(2e6, 3, 1), (4e6, 7, 1), (5e6, 5, 0)]
    assert as_polars(df.bindf.rebin(2000, drop_partial=True), kind).rows() == [
        (2e6, 3, 1), (4e6, 7, 1)]
    assert as_polars(df.bindf.rebin(5000, drop_partial=True), kind).rows() == [(5e6, 15, 2)]
    # The result is still an IT02 frame, with its new bin width.
    assert coarse.bindf.format == "it02"
    assert coarse.bindf.header["bin_width_micros"] == 2000
    assert df.bindf.header["bin_width_micros"] == 1000  # the input's is untouched
    assert as_polars(coarse.bindf.count_rate(), kind)["ch2"].to_list() == [1500.0, 3500.0,
                                                                           2500.0]


def test_files_of_different_bin_widths_read_together_are_warned_of(tmp_path: Path) -> None:
    """A frame of several files carries the first file's header; the rate and rebinning
    helpers divide by its bin width, silently wrong for a file binned otherwise: such a
    read warns, naming the file and both widths (the rows are each file's own)."""
    a = {"time_ns": np.arange(1, 21) * 1e6, "ch1": np.full(20, 10, np.uint32)}
    b = {"time_ns": np.arange(1, 201) * 1e5, "ch1": np.full(200, 1, np.uint32)}
    bindf.write_it02(tmp_path / "a.bin", a, header={"channels": [0], "bin_width_micros": 1000})
    bindf.write_it02(tmp_path / "b.bin", b, header={"channels": [0], "bin_width_micros": 100})
    bindf.write_it02(tmp_path / "c.bin", a, header={"channels": [0], "bin_width_micros": 1000})
    for threads in (1, 2):
        with pytest.warns(bindf.BindfWarning, match="'bin_width_micros' is 100, the first "
                                                    "file's 1000") as caught:
            df = bindf.read_it02(sorted(tmp_path.glob("*.bin")), threads=threads)
        assert [w.message.path for w in caught] == [str(tmp_path / "b.bin")]
        assert df["time_ns"].tolist() == [*a["time_ns"], *b["time_ns"], *a["time_ns"]]
    # a scan filtered to one file: that file is compared with the scan's first (it was
    # the first of its own pass, and went unwarned)
    lazy = pl.scan_it02(str(tmp_path / "*.bin"), include_file_paths="file")
    with pytest.warns(bindf.BindfWarning, match="'bin_width_micros' is 100") as caught:
        lazy.filter(pl.col("file") == str(tmp_path / "b.bin")).collect()
    assert [w.message.path for w in caught] == [str(tmp_path / "b.bin")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bindf.read_it02([tmp_path / "a.bin", tmp_path / "c.bin"])  # same widths: silent
        lazy.filter(pl.col("file") == str(tmp_path / "c.bin")).collect()


def test_rebin_follows_record_steps_not_nominal_times() -> None:
    # Jittered times, and fine bin 4 (the last of the second coarse bin) missing, as a
    # sparse file leaves out all-zero bins: it counts as zero, and the coarse bin still
    # ends where bin 4 would have.
    df = frame("polars", it02_columns([1.0004e6, 1.9998e6, 3.0003e6, 5.0001e6, 6.0002e6],
                                      ch1=[1, 1, 1, 1, 1]), "it02",
               {"channels": [0], "bin_width_micros": 1000})
    assert df.bindf.rebin(2000).rows() == [(1.9998e6, 2), (3.0003e6 + 1e6, 1), (6.0002e6, 2)]
    # Unsorted input is put in time order first.
    shuffled = frame("pandas", it02_columns([2e6, 1e6], ch1=[2, 1]), "it02",
                     {"bin_width_micros": 1000})
    assert shuffled.bindf.rebin(2000).values.tolist() == [[2e6, 3]]
    # Float bin widths: 0.3 is 3 × 0.1 up to round-off.
    fine = frame("polars", it02_columns([100.0, 200.0, 300.0], ch1=[1, 2, 3]), "it02",
                 {"bin_width_micros": 0.1})
    assert fine.bindf.rebin(0.3).rows() == [(300.0, 6)]


@pytest.mark.parametrize("kind", KINDS)
def test_rebin_keeps_coarse_bins_whose_fine_bins_a_sparse_file_left_out(kind: str) -> None:
    """A sparse file leaves out all-zero fine bins, which may make up whole coarse bins:
    those are zero rows (they were missing, so a rate plot skipped the empty window),
    each ending a whole number of fine bins after the last record before it, in every
    file of a glob."""
    columns = it02_columns([1e6, 2.0002e6, 7.0001e6, 8e6, 1e6, 5e6],
                           ch2=[1, 2, 3, 4, 5, 6])
    columns["file"] = np.array(["runs/a.bin"] * 4 + ["runs/b.bin"] * 2)
    df = multi_file(kind, columns, "it02", IT02_HEADER)
    rb = as_polars(df.bindf.rebin(2000), kind)
    assert rb.rows() == [
        ("runs/a.bin", 2.0002e6, 3), ("runs/a.bin", 4.0002e6, 0),
        ("runs/a.bin", 6.0002e6, 0), ("runs/a.bin", 8e6, 7),
        ("runs/b.bin", 2e6, 5), ("runs/b.bin", 4e6, 0), ("runs/b.bin", 5e6, 6)]
    dense = multi_file(kind, it02_columns(np.arange(1, 9) * 1e6, ch2=[1, 2, 0, 0, 0, 0, 3, 4])
                       | {"file": np.array(["runs/a.bin"] * 8)}, "it02", IT02_HEADER)
    assert as_polars(dense.bindf.rebin(2000), kind)["ch2"].to_list() == [3, 0, 0, 7]
    # the last, partial coarse bin of b (one fine bin) goes with drop_partial
    assert as_polars(df.bindf.rebin(2000, drop_partial=True), kind)["ch2"].to_list() == [
        3, 0, 0, 7, 5, 0]


def real_it02(kind: str, ones: bool = False) -> Any:
    """The real dense IT02 export as read_it02 lays it out (time_ns, ch{i+1} …)."""
    raw = (Path(__file__).parent / "data" / "intensity-tracing-export-data-example.bin")
    data = raw.read_bytes()
    length = int.from_bytes(data[4:8], "little")
    header = json.loads(data[8:8 + length])
    n = len(header["channels"])
    records = np.frombuffer(data[8 + length:], dtype=[("t", "<f8"), ("c", "<u4", (n,))])
    counts = np.ones_like(records["c"]) if ones else records["c"]
    columns = {"time_ns": records["t"].copy()}
    columns.update({f"ch{c + 1}": counts[:, i].copy() for i, c in enumerate(header["channels"])})
    return frame(kind, columns, "it02", header)


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_rebin_on_the_real_export(kind: str) -> None:
    df = real_it02(kind)
    rb = as_polars(df.bindf.rebin(10_000), kind)
    assert rb.columns == ["time_ns", "ch2", "ch4", "ch5"]
    assert rb.height == 300  # 2999 one-millisecond bins → 299 full + 1 partial
    original = as_polars(df, "pandas" if kind == "pandas" else "polars")
    assert rb["ch2"].sum() == original["ch2"].sum() == 6_820_067
    # The export's clock drifts ~0.03 % against 1 ms: still exactly 10 bins per bin.
    ones = as_polars(real_it02(kind, ones=True).bindf.rebin(10_000), kind)
    assert ones["ch2"].to_list() == [10] * 299 + [9]
    assert ones["time_ns"][-1] == original["time_ns"][-1]
    # Rebinning by one is the identity (counts widened to uint64).
    same = as_polars(df.bindf.rebin(1000), kind)
    assert same.equals(original.with_columns(pl.col("^ch.*$").cast(pl.UInt64)))


@pytest.mark.parametrize("kind", KINDS)
def test_count_rate(kind: str) -> None:
    df = frame(kind, it02_columns([1e6, 2e6], ch2=[3, 0], ch4=[1, 7]), "it02",
               {"channels": [1, 3], "bin_width_micros": 500})
    rate = as_polars(df.bindf.count_rate(), kind)
    assert rate.schema == {"time_ns": pl.Float64, "ch2": pl.Float64, "ch4": pl.Float64}
    assert rate.rows() == [(1e6, 6000.0, 2000.0), (2e6, 0.0, 14000.0)]


@pytest.mark.parametrize("width", [1500, 0, -1000, 999.5, float("nan"), "2000", True])
def test_rebin_refuses_widths_that_are_not_multiples(width: Any) -> None:
    df = frame("polars", it02_columns([1e6], ch1=[1]), "it02", {"bin_width_micros": 1000})
    with pytest.raises(ValueError, match="multiple|positive number"):
        df.bindf.rebin(width)


def test_rebin_error_suggests_valid_widths() -> None:
    df = frame("pandas", it02_columns([1e6], ch1=[1]), "it02", {"bin_width_micros": 1000})
    with pytest.raises(ValueError, match=r"not a multiple .*1000 µs.*try 1000 or 2000"):
        df.bindf.rebin(1500)


@pytest.mark.parametrize("header", [{}, {"bin_width_micros": None},
                                    {"bin_width_micros": 0}, {"bin_width_micros": "1000"}])
def test_it02_helpers_need_the_bin_width(header: dict[str, Any]) -> None:
    df = frame("polars", it02_columns([1e6], ch1=[1]), "it02", header)
    for call in (lambda: df.bindf.rebin(2000), df.bindf.count_rate,
                 lambda: df.bindf.plot_trace(rate=True)):
        with pytest.raises(bindf.HeaderError, match="bin_width_micros") as info:
            call()
        assert info.value.path == "constructed.bin"
    # Counts per bin need no bin width.
    ax = df.bindf.plot_trace()
    assert ax.get_ylabel() == "Counts per bin"


def test_it02_helpers_need_channel_columns() -> None:
    df = frame("polars", {"time_ns": [1.0]}, "it02", {"bin_width_micros": 1})
    with pytest.raises(ValueError, match="no channel count columns"):
        df.bindf.count_rate()


# --- spectroscopy ---------------------------------------------------------------------


def spectro_columns(rows: list[tuple[int, float]], kind: str = "pandas") -> dict[str, Any]:
    """read_spectro's columns from (event, microtime_ns) pairs; events 70/76/80 are
    markers (channel null: pandas UInt8 / polars UInt8 with nulls, as the reader)."""
    events = [e for e, _ in rows]
    channel = [None if e in (70, 76, 80) else e for e in events]
    return {
        "event": np.array(events, dtype="u1"),
        "microtime_ns": np.array([m for _, m in rows], dtype="f8"),
        "macrotime_ns": np.arange(len(rows), dtype="f8"),
        "channel": pd.array(channel, dtype="UInt8") if kind == "pandas"
        else pl.Series(channel, dtype=pl.UInt8),
    }


PHOTONS = [(0, 0.0), (0, 1.99), (0, 2.0), (0, 9.99), (0, 10.0), (0, -0.1),
           (2, 5.0), (76, 3.0), (2, float("nan"))]


@pytest.mark.parametrize("kind", KINDS)
def test_decay_histogram(kind: str) -> None:
    df = frame(kind, spectro_columns(PHOTONS, kind), "spectro", {"channels": [0, 1, 2], "laser_period_ns": 10.0})
    dh = as_polars(df.bindf.decay_histogram(bins=5), kind)
    assert dh.schema == {"channel": pl.UInt8, "bin": pl.UInt16, "bin_time_ns": pl.Float64,
                         "count": pl.Int64}
    # [0, 10) in 5 bins: 10.0, -0.1 and NaN fall outside; the marker is no photon;
    # channel 1 is enabled in the header but saw nothing.
    assert dh.rows() == [
        (0, 0, 0.0, 2), (0, 1, 2.0, 1), (0, 2, 4.0, 0), (0, 3, 6.0, 0), (0, 4, 8.0, 1),
        (1, 0, 0.0, 0), (1, 1, 2.0, 0), (1, 2, 4.0, 0), (1, 3, 6.0, 0), (1, 4, 8.0, 0),
        (2, 0, 0.0, 0), (2, 1, 2.0, 0), (2, 2, 4.0, 1), (2, 3, 6.0, 0), (2, 4, 8.0, 0),
    ]
    # The period can be given when the header has none (legacy raw files).
    wider = as_polars(df.bindf.decay_histogram(bins=2, laser_period_ns=20.0), kind)
    assert wider.filter(pl.col("channel") == 0)["count"].to_list() == [4, 1]


@pytest.mark.parametrize("header", [{}, {"laser_period_ns": None}, {"laser_period_ns": -1}])
def test_decay_histogram_needs_the_laser_period(header: dict[str, Any]) -> None:
    df = frame("pandas", spectro_columns(PHOTONS), "spectro", header)
    with pytest.raises(bindf.HeaderError, match="laser_period_ns.*pass laser_period_ns="):
        df.bindf.decay_histogram()
    with pytest.raises(bindf.HeaderError, match="laser_period_ns"):
        df.bindf.plot_decay()
    assert df.bindf.decay_histogram(laser_period_ns=10.0)["count"].sum() == 5
    with pytest.raises(ValueError, match="laser_period_ns must be a positive number"):
        df.bindf.decay_histogram(laser_period_ns=0)
    for bins in (0, 2.5, 70_000, True):
        with pytest.raises(ValueError, match="bins must be an integer"):
            df.bindf.decay_histogram(bins=bins, laser_period_ns=10.0)


def test_decay_histogram_on_frames_from_the_reader(tmp_path: Path) -> None:
    path = write_stt1(tmp_path / "photons.bin", n=5000, seed=3)
    raw = np.fromfile(path, dtype=[("e", "u1"), ("m", "<f8"), ("t", "<f8")],
                      offset=8 + int.from_bytes(path.read_bytes()[4:8], "little"))
    expected = {c: np.histogram(raw["m"][raw["e"] == c], bins=256, range=(0, 25.0))[0]
                for c in range(4)}
    results = {
        "pandas": pd.read_spectro(path).bindf.decay_histogram(),
        "polars": pl.read_spectro(path).bindf.decay_histogram(),
        "lazy": pl.scan_spectro(path).bindf.decay_histogram(),
    }
    assert isinstance(results["pandas"], pd.DataFrame)
    for kind in ("polars", "lazy"):
        assert isinstance(results[kind], pl.DataFrame)
    pd.testing.assert_frame_equal(results["pandas"], results["polars"].to_pandas())
    assert results["polars"].equals(results["lazy"])
    table = results["polars"]
    for channel, counts in expected.items():
        got = table.filter(pl.col("channel") == channel)["count"].to_numpy()
        np.testing.assert_array_equal(got, counts)
    assert table["count"].sum() == int((raw["e"] < 4).sum())  # markers left out

    legacy = tmp_path / "spectroscopy-output-1.bin"
    legacy.write_bytes(raw.tobytes())
    df = bindf.read_spectro(legacy, container="legacy", output="polars")
    with pytest.raises(bindf.HeaderError, match="laser_period_ns"):
        df.bindf.decay_histogram()
    assert df.bindf.decay_histogram(laser_period_ns=25.0).equals(table)


# --- the shared binning -------------------------------------------------------------


def reference_histogram(values, edges, group, n_groups, closed_last):
    """numpy.histogram per group (searchsorted on the edges); without closed_last the
    right edge itself is left out."""
    keep = np.isfinite(values) & (closed_last | (values != edges[-1]))
    return np.array([np.histogram(values[keep & (group == g)], bins=edges)[0]
                     for g in range(n_groups)])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.floats(0.01, 1e4), st.floats(-50, 50),
       st.integers(0, 2**32 - 1), st.booleans(), st.sampled_from(["even", "jittered", "uneven"]),
       st.sampled_from([1, 3, 700]))
def test_grouped_histogram_matches_numpy(n_bins, span, lo, seed, closed_last, spacing,
                                         n_groups):
    from bindf.analysis._common import grouped_histogram

    rng = np.random.default_rng(seed)
    edges = lo + np.arange(n_bins + 1) * span / n_bins
    if spacing == "jittered":  # still takes the multiply-and-correct path
        edges[1:-1] += (rng.random(n_bins - 1) - 0.5) * 0.4 * span / n_bins
    elif spacing == "uneven":
        edges = lo + np.cumsum(np.r_[0, rng.random(n_bins) + 0.01]) * span
    n = int(rng.integers(0, 3000))
    values = rng.uniform(lo - span * 0.1, lo + span * 1.1, n)
    # Values exactly on edges (also the last), NaN and infinities.
    on_edges = rng.random(n) < 0.3
    values[on_edges] = edges[rng.integers(0, n_bins + 1, on_edges.sum())]
    specials = rng.random(n) < 0.02
    values[specials] = rng.choice([np.nan, np.inf, -np.inf], specials.sum())
    codes = rng.integers(0, n_groups, n)
    lookup = np.arange(n_groups)
    got = grouped_histogram(values, edges, closed_last=closed_last, codes=codes,
                            lookup=lookup, n_groups=n_groups)
    np.testing.assert_array_equal(
        got, reference_histogram(values, edges, codes, n_groups, closed_last))


def test_grouped_histogram_over_many_blocks() -> None:
    from bindf.analysis._common import BLOCK, grouped_histogram

    rng = np.random.default_rng(0)
    values = rng.random(3 * BLOCK + 17) * 25.0
    edges = np.arange(257) * 25.0 / 256
    codes = rng.integers(0, 4, len(values)).astype(np.uint8)
    lookup = np.arange(256)
    # 4 groups: counted block by block; 400 groups: one flat count. Same answer.
    for n_groups in (4, 400):
        got = grouped_histogram(values, edges, closed_last=False, codes=codes,
                                lookup=lookup, n_groups=n_groups)
        np.testing.assert_array_equal(
            got[:4], reference_histogram(values, edges, codes, 4, False))
        assert not got[4:].any()


def test_quantised_microtimes_land_in_their_own_bin() -> None:
    # Microtimes on the bin starts (bin_time_ns) must fall in that bin, whatever the
    # round-off of k * period / bins.
    period = 25.0 / 3
    bins = 256
    starts = np.arange(bins) * period / bins
    df = frame("polars", {"channel": pl.Series([0] * bins, dtype=pl.UInt8),
                          "microtime_ns": starts}, "spectro", {"laser_period_ns": period})
    dh = df.bindf.decay_histogram(bins=bins)
    assert dh["count"].to_list() == [1] * bins
    np.testing.assert_array_equal(dh["bin_time_ns"].to_numpy(), starts)


# --- dispatch, metadata, dependencies --------------------------------------------------

APX_HELPERS = ("hit_map", "tot_histogram", "hits_per_readout", "plot_hit_map", "plot_tot",
               "plot_hits_per_readout", "match_rows_columns")
IT02_HELPERS = ("rebin", "count_rate", "plot_trace")
SPECTRO_HELPERS = ("decay_histogram", "plot_decay")


def test_helpers_are_accessor_methods_next_to_the_metadata(tmp_path: Path) -> None:
    from bindf.accessors import BindfAccessor
    from bindf.analysis import FAMILIES

    for name in APX_HELPERS + IT02_HELPERS + SPECTRO_HELPERS:
        assert callable(getattr(BindfAccessor, name)) and getattr(BindfAccessor, name).__doc__
    assert FAMILIES["apx"].HELPERS == APX_HELPERS
    assert FAMILIES["it02"].HELPERS == IT02_HELPERS
    assert FAMILIES["spectro"].HELPERS == SPECTRO_HELPERS
    # The metadata members are still what they were.
    path = write_stt1(tmp_path / "x.bin", n=20)
    df = pd.read_spectro(path)
    assert df.bindf.format == "spectro" and df.bindf.source == str(path)
    assert df.bindf.info["header"] == df.bindf.header
    df.bindf.to_parquet(tmp_path / "x.parquet")
    assert bindf.read_parquet(tmp_path / "x.parquet").bindf.header == df.bindf.header


@pytest.mark.parametrize(("fmt", "columns", "header", "wrong"), [
    ("apx", apx_columns(HITS), AP4, ["rebin", "decay_histogram", "plot_trace"]),
    ("it02", it02_columns([1e6], ch1=[1]), {"bin_width_micros": 1000},
     ["hit_map", "plot_decay", "hits_per_readout"]),
    ("spectro", spectro_columns(PHOTONS), {"laser_period_ns": 10.0},
     ["plot_hit_map", "count_rate", "tot_histogram"]),
])
def test_helpers_for_another_format_say_so(fmt: str, columns: dict, header: dict,
                                           wrong: list[str]) -> None:
    df = frame("pandas", columns, fmt, header)
    for name in wrong:
        args = (2000,) if name == "rebin" else ()
        with pytest.raises(TypeError, match=rf"{name}\(\) works on '\w+'( / '\w+')* frames, but this "
                                            rf"frame's bindf format is '{fmt}'; its helpers "
                                            "are: "):
            getattr(df.bindf, name)(*args)


def test_formats_without_helpers_and_frames_without_metadata() -> None:
    df = frame("polars", {"a": [1]}, "sp01", {})
    with pytest.raises(TypeError, match="no analysis helpers for that format"):
        df.bindf.hit_map()
    with pytest.raises(AttributeError, match="no bindf metadata"):
        pd.DataFrame(apx_columns(HITS)).bindf.hit_map()
    with pytest.raises(AttributeError, match="no bindf metadata"):
        pl.DataFrame(apx_columns(HITS)).bindf.tot_histogram()


def test_missing_columns_are_named() -> None:
    columns = apx_columns(HITS)
    del columns["tot_us"]
    for kind in KINDS:
        df = frame(kind, columns, "apx", AP4)
        with pytest.raises(ValueError, match=r"tot_histogram\(\) needs .* lacks \['tot_us'\]"):
            df.bindf.tot_histogram()


@pytest.mark.parametrize("kind", KINDS)
def test_astropix3_half_hits_are_sent_to_match_rows_columns(kind: str) -> None:
    # An AstroPix 3 hit table has location, no row: no read option gives row.
    columns = {"chip_id": np.zeros(2, dtype="u1"), "readout_id": np.zeros(2, dtype="u4"),
               "column": np.array([0, 1], dtype="u1"), "location": np.array([3, 7], dtype="u1"),
               "tot_us": np.array([1.0, 0.9])}
    df = frame(kind, columns, "apx", {"readout_uid": 3000})
    hint = "(AstroPix 3 hits are half-hits: call df.bindf.match_rows_columns() first)"
    calls = [
        ("hit_map", {}, "['chip_id', 'row', 'column']"),
        ("tot_histogram", {"by": "pixel"}, "['chip_id', 'row', 'column', 'tot_us']"),
        ("plot_hit_map", {}, "['chip_id', 'row', 'column']"),
    ]
    for name, kwargs, needed in calls:
        with pytest.raises(ValueError) as info:
            getattr(df.bindf, name)(**kwargs)
        assert str(info.value) == (f"{name}() needs the column(s) {needed}; this frame "
                                   f"lacks ['row'] {hint}")
    assert as_polars(df.bindf.tot_histogram(bins=1), kind)["count"].to_list() == [2]
    pixels = df.bindf.match_rows_columns()
    assert as_polars(pixels.bindf.hit_map(), kind)["hits"].sum() == 1
    # any other frame without row keeps the usual advice
    del columns["location"]
    with pytest.raises(ValueError) as info:
        frame(kind, columns, "apx", AP4).bindf.hit_map()
    assert str(info.value) == ("hit_map() needs the column(s) ['chip_id', 'row', 'column']; "
                               "this frame lacks ['row'] (select them when reading, or do "
                               "not drop them)")


def test_astropix3_pixel_tables_in_the_helpers_that_take_them() -> None:
    """The pixel table of match_rows_columns: its two ToTs are named for the ToT
    helpers (tot_histogram needed a tot_us it lacks), and with keep_unmatched a pandas
    frame's row/column are nullable uint8 (they were float64, which hit_map refused)."""
    import matplotlib

    matplotlib.use("Agg")
    run = Path(bindf.__file__).parent / "samples" / "astropix3_injection_run.apx"
    for kind in ("pandas", "polars"):
        pixels = bindf.read_apx(run, output=kind).bindf.match_rows_columns()
        with pytest.raises(ValueError, match="pass tot='tot_us_row' or tot='tot_us_column'"):
            pixels.bindf.tot_histogram(by="pixel")
        table = as_polars(pixels, kind)
        for tot in ("tot_us_row", "tot_us_column"):
            counted = as_polars(pixels.bindf.tot_histogram(by="pixel", bins=7, tot=tot), kind)
            assert counted["count"].sum() == table[tot].count()
            per_chip = as_polars(pixels.bindf.tot_histogram(bins=7, tot=tot), kind)
            expected, _ = np.histogram(table[tot].to_numpy(), bins=7)
            assert per_chip["count"].to_list() == expected.tolist()  # the sample: one chip
        assert pixels.bindf.plot_tot(tot="tot_us_row").get_xlabel()
    unmatched = bindf.read_apx(run).bindf.match_rows_columns(keep_unmatched=True)
    assert {str(unmatched[c].dtype) for c in ("row", "column")} == {"UInt8"}
    assert str(unmatched["decoding_order_row"].dtype) == "UInt16"
    assert unmatched["row"].isna().any() or unmatched["column"].isna().any()
    matched = unmatched.dropna(subset=["row", "column"])
    assert unmatched.bindf.hit_map()["hits"].sum() == len(matched)


def test_hit_map_grid_by_chip() -> None:
    """13 × 16 for AstroPix 4, 35 × 35 for AstroPix 3, 32 × 32 for a header naming no
    known chip (the accessor's docstring says so)."""
    one_hit = apx_columns([(0, 1, 1, 1.0, 0, 0)])
    for header, (rows, cols) in [({"readout_uid": 4000}, (13, 16)),
                                 ({"readout_uid": 3000}, (35, 35)),
                                 ({"readout_uid": 1234}, (32, 32)), ({}, (32, 32)),
                                 ({"readout_uid": [4000]}, (32, 32))]:
        grid = as_polars(frame("polars", one_hit, "apx", header).bindf.hit_map(), "polars")
        assert grid.height == rows * cols, header
        assert (grid["row"].max() + 1, grid["column"].max() + 1) == (rows, cols), header


def test_plots_need_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    df = frame("polars", apx_columns(HITS), "apx", AP4)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'bindf\[plot\]'") as info:
        df.bindf.plot_hit_map()
    assert info.value.name == "matplotlib"
    assert df.bindf.hit_map().height == 208  # tables need no matplotlib


# --- plots ----------------------------------------------------------------------------


def saved(ax: Any, path: Path) -> Path:
    ax.figure.savefig(path, dpi=80)
    assert path.stat().st_size > 1000
    return path


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_plot_hit_map(kind: str, tmp_path: Path) -> None:
    df = real_apx(kind)
    ax = df.bindf.plot_hit_map()
    image = ax.images[0].get_array()
    assert image.shape == (13, 16)  # rows × columns of AstroPix 4
    assert image[0, 9] == 776 and image.sum() == 776
    assert ax.get_xlabel() == "Column" and ax.get_ylabel() == "Row"
    assert ax.get_title() == "AstroPix 4 hit map (chip 0, 776 hits)"
    assert ax.figure.axes[-1].get_ylabel() == "Hits"  # colour bar
    saved(ax, tmp_path / f"hit_map_{kind}.png")

    several = frame(kind, apx_columns(HITS), "apx", AP4)
    _, axes = plt.subplots(1, 2)
    ax = several.bindf.plot_hit_map(chip=1, ax=axes[1], cmap="magma")
    assert ax is axes[1] and ax.images[0].get_cmap().name == "magma"
    assert ax.images[0].get_array().sum() == 2 and "chip 1, 2 hits" in ax.get_title()
    assert "chips 0, 1 summed" in several.bindf.plot_hit_map().get_title()


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_plot_tot_and_hits_per_readout(kind: str, tmp_path: Path) -> None:
    df = real_apx(kind)
    ax = df.bindf.plot_tot(bins=60)
    assert len(ax.patches) == 1  # one chip, one step line
    assert ax.get_xlabel() == "Time over threshold [µs]"
    assert ax.get_ylabel() == "Hits per bin"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chip 0"]
    saved(ax, tmp_path / f"tot_{kind}.png")

    ax = df.bindf.plot_hits_per_readout()
    (line,) = ax.get_lines()
    hp = as_polars(df.bindf.hits_per_readout(), kind)
    np.testing.assert_array_equal(line.get_ydata(), hp["hits"].to_numpy())
    assert line.get_xdata()[0] == 0.0 and line.get_xdata()[-1] > 0
    assert ax.get_xlabel() == "Time since first readout [s]"
    assert ax.get_title().startswith("AstroPix 4 hits per readout (from 2025-07-23 07:25:36 UTC")
    saved(ax, tmp_path / f"hits_per_readout_{kind}.png")


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_plot_trace(kind: str, tmp_path: Path) -> None:
    df = real_it02(kind)
    ax = df.bindf.plot_trace()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "Channel 2", "Channel 4", "Channel 5"]
    assert ax.get_xlabel() == "Time [s]" and ax.get_ylabel() == "Counts per 1000 µs bin"
    assert len(ax.get_lines()) == 3
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata()[[0, -1]], [0.001000875, 3.0],
                               rtol=1e-6)
    saved(ax, tmp_path / f"trace_{kind}.png")

    coarse = df.bindf.rebin(50_000)
    ax = coarse.bindf.plot_trace(rate=True)
    assert ax.get_ylabel() == "Count rate [counts/s]"
    rate = as_polars(coarse.bindf.count_rate(), kind)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), rate["ch2"].to_numpy())
    saved(ax, tmp_path / f"trace_rate_{kind}.png")

    named = frame(kind, it02_columns([1e6, 2e6], ch2=[1, 2], ch4=[3, 4]), "it02",
                  IT02_HEADER)
    labels = [t.get_text() for t in named.bindf.plot_trace().get_legend().get_texts()]
    assert labels == ["Channel 2", "GFP"]  # channel_names keyed by 0-based index


def write_decay_file(path: Path, n: int = 20_000) -> Path:
    """An STT1 file whose photons decay exponentially (lifetimes 1.5, 3, 4.5, 6 ns)
    within a 25 ns laser period, plus a line marker every 50 records."""
    rng = np.random.default_rng(5)
    rec = np.zeros(n, dtype=[("event", "u1"), ("microtime_ns", "<f8"), ("macrotime_ns", "<f8")])
    rec["event"] = rng.integers(0, 4, n)
    rec["microtime_ns"] = rng.exponential(1.5 * (rec["event"] + 1.0)) % 25.0
    rec["event"][::50] = 76
    rec["macrotime_ns"] = np.cumsum(rng.random(n) * 100.0)
    header = {"channels": [0, 1, 2, 3], "laser_period_ns": 25.0,
              "channel_names": {"0": "donor"}}
    text = json.dumps(header).encode()
    path.write_bytes(b"STT1" + len(text).to_bytes(4, "little") + text + rec.tobytes())
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_plot_decay(kind: str, tmp_path: Path) -> None:
    path = write_decay_file(tmp_path / "photons.bin")
    df = {"pandas": pd.read_spectro, "polars": pl.read_spectro,
          "lazy": pl.scan_spectro}[kind](path)
    ax = df.bindf.plot_decay(bins=128)
    assert ax.get_yscale() == "log"
    assert ax.get_xlim() == (0.0, 25.0)
    assert ax.get_xlabel() == "Microtime [ns]"
    assert ax.get_ylabel() == "Photons per bin (0.195 ns)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "donor", "Channel 2", "Channel 3", "Channel 4"]
    assert len(ax.patches) == 4
    counts, edges, _ = ax.patches[0].get_data()
    assert len(counts) == 128 and edges[-1] == 25.0
    assert counts[0] > 20 * max(counts[-10:].max(), 1)  # it decays
    saved(ax, tmp_path / f"decay_{kind}.png")


# --- frames read from several files (include_file_paths) ------------------------------


def multi_file(kind: str, columns: dict[str, Any], fmt: str, header: dict[str, Any]) -> Any:
    """Like frame(), with a ``file`` column and two sources in the metadata."""
    df = frame(kind, columns, fmt, header)
    info = {**df.bindf.info, "source": ["runs/a.bin", "runs/b.bin"]}
    if kind == "pandas":
        df.attrs["bindf"] = info
    else:
        set_polars_info(df, info)
    return df


@pytest.mark.parametrize("kind", KINDS)
def test_rebin_works_file_by_file(kind: str) -> None:
    # Two files on the same time axis, b's rows first: the old code sorted both together
    # and summed a's and b's counts into the same coarse bins.
    columns = it02_columns([1e6, 2e6, 3e6, 1e6, 2e6, 3e6], ch2=[10, 20, 30, 1, 2, 3])
    columns["file"] = np.array(["runs/b.bin"] * 3 + ["runs/a.bin"] * 3)
    df = multi_file(kind, columns, "it02", IT02_HEADER)
    rb = as_polars(df.bindf.rebin(2000), kind)
    assert rb.columns == ["file", "time_ns", "ch2"]
    assert rb.rows() == [("runs/b.bin", 2e6, 30), ("runs/b.bin", 3e6, 30),
                         ("runs/a.bin", 2e6, 3), ("runs/a.bin", 3e6, 3)]
    # The partial last bin of every file is dropped.
    assert as_polars(df.bindf.rebin(2000, drop_partial=True), kind).rows() == [
        ("runs/b.bin", 2e6, 30), ("runs/a.bin", 2e6, 3)]
    rate = as_polars(df.bindf.count_rate(), kind)
    assert rate.columns == ["file", "time_ns", "ch2"]
    assert rate["ch2"].to_list() == [10_000.0, 20_000.0, 30_000.0, 1000.0, 2000.0, 3000.0]
    ax = df.bindf.plot_trace()
    assert [line.get_label() for line in ax.lines] == ["Channel 2 (b.bin)", "Channel 2 (a.bin)"]
    assert list(ax.lines[1].get_ydata()) == [1, 2, 3]


def test_rebin_on_two_real_exports_equals_each_file_alone(tmp_path: Path) -> None:
    sample = Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin"
    full = Path(__file__).parent / "data" / "intensity-tracing-export-data-example.bin"
    both = bindf.read_it02([sample, full], include_file_paths="file", output="polars")
    coarse = both.bindf.rebin(7000)
    for path in (sample, full):
        alone = bindf.read_it02(path, output="polars").bindf.rebin(7000)
        mine = coarse.filter(pl.col("file") == str(path)).drop("file")
        assert mine.equals(alone)
    assert coarse.height == 29 + 429


@pytest.mark.parametrize("kind", KINDS)
def test_helpers_refuse_several_files_without_a_file_column(kind: str) -> None:
    df = multi_file(kind, it02_columns([1e6, 1e6], ch2=[1, 2]), "it02", IT02_HEADER)
    with pytest.raises(ValueError, match="include_file_paths='file'"):
        df.bindf.rebin(2000)
    hits = multi_file(kind, apx_columns(HITS), "apx", AP4)
    with pytest.raises(ValueError, match=r"hits_per_readout\(\) works file by file"):
        hits.bindf.hits_per_readout()


@pytest.mark.parametrize("kind", KINDS)
def test_hits_per_readout_and_matching_work_file_by_file(kind: str) -> None:
    # AstroPix 3 runs converted from logs have wall_timestamp 0: readout 0 of two files
    # used to be one readout.
    columns = {
        "readout_id": np.array([0, 0, 0, 0], dtype="u4"),
        "wall_timestamp": np.zeros(4, dtype="u8"),
        "chip_id": np.zeros(4, dtype="u1"),
        "column": np.array([0, 1, 0, 1], dtype="u1"),
        "location": np.array([3, 7, 5, 9], dtype="u1"),
        "tot_us": np.array([1.0, 0.9, 1.0, 0.95]),
        "file": np.array(["runs/a.bin", "runs/a.bin", "runs/b.bin", "runs/b.bin"]),
    }
    df = multi_file(kind, columns, "apx", {"readout_uid": 3000})
    per_readout = as_polars(df.bindf.hits_per_readout(), kind)
    assert per_readout.rows() == [("runs/a.bin", 0, 0, 2), ("runs/b.bin", 0, 0, 2)]
    # Without the file, the greedy rule would pair a's row 3 with b's column 9.
    pixels = as_polars(df.bindf.match_rows_columns(), kind)
    assert pixels.select("file", "row", "column").rows() == [("runs/a.bin", 3, 7),
                                                              ("runs/b.bin", 5, 9)]
    ax = df.bindf.plot_hits_per_readout()
    assert ax.get_xlabel() == "Readout id"
    assert [line.get_label() for line in ax.lines] == ["a.bin", "b.bin"]


# --- FCS1 -----------------------------------------------------------------------------


def fcs1_columns(g2: list[float | None], is_mean: list[bool], vector: list[int],
                 lags: int) -> dict[str, Any]:
    n = len(g2)
    return {"pair_index": np.zeros(n, dtype="i4"), "channel_1": np.full(n, 3, dtype="u1"),
            "channel_2": np.full(n, 5, dtype="u1"), "vector_index": np.array(vector, "i4"),
            "is_mean": np.array(is_mean), "lag_index": np.tile(np.arange(lags), n // lags),
            "tau_us": np.tile(np.arange(lags) * 10.0, n // lags), "g2": g2}


@pytest.mark.parametrize("kind", ("polars", "lazy"))
def test_mean_curves_takes_a_null_g2_as_nan(kind: str) -> None:
    # Two acquisitions, one null at lag 1: the old sum/len read it as 0 (g2 = 1.0).
    df = frame(kind, fcs1_columns([4.0, 2.0, 2.0, None], [False] * 4, [0, 0, 1, 1], 2),
               "fcs1", {"bin_width": 10})
    mean = as_polars(df.bindf.mean_curves(), kind)
    assert mean["g2"].to_list()[0] == 3.0
    assert np.isnan(mean["g2"][1])


@pytest.mark.parametrize("kind", KINDS)
def test_mean_curves_stored_or_computed(kind: str) -> None:
    stored = fcs1_columns([9.0, 8.0, 1.0, 2.0, 3.0, 4.0], [True, True] + [False] * 4,
                          [0, 0, 1, 1, 2, 2], 2)
    mean = as_polars(frame(kind, stored, "fcs1", {}).bindf.mean_curves(), kind)
    assert mean.columns == ["pair_index", "channel_1", "channel_2", "lag_index", "tau_us",
                            "g2", "stored"]
    assert mean.select("lag_index", "g2", "stored").rows() == [(0, 9.0, True),
                                                               (1, 8.0, True)]
    # A NaN (JSON null in the file) gives NaN; pandas NaN used to become a polars null
    # that sum / len read as 0 (lag 1 came out 1.0).
    computed = fcs1_columns([1.0, 2.0, 3.0, np.nan], [False] * 4, [0, 0, 1, 1], 2)
    mean = frame(kind, computed, "fcs1", {}).bindf.mean_curves()
    g2 = mean["g2"].to_numpy()
    assert g2[0] == 2.0 and np.isnan(g2[1])
    assert mean["stored"].to_list() == [False, False]


@pytest.mark.parametrize("kind", KINDS)
def test_mean_curves_work_file_by_file(kind: str) -> None:
    # File b (no stored mean) comes first; file a stores its mean.
    b = fcs1_columns([1.0, 2.0, 3.0, 4.0], [False] * 4, [0, 0, 1, 1], 2)
    a = fcs1_columns([9.0, 8.0, 0.0, 0.0], [True, True, False, False], [0, 0, 1, 1], 2)
    columns = {name: np.concatenate([b[name], a[name]]) for name in b}
    columns["file"] = np.array(["runs/b.bin"] * 4 + ["runs/a.bin"] * 4)
    df = multi_file(kind, columns, "fcs1", {})
    mean = as_polars(df.bindf.mean_curves(), kind)
    assert mean.select("file", "lag_index", "g2", "stored").rows() == [
        ("runs/b.bin", 0, 2.0, False), ("runs/b.bin", 1, 3.0, False),
        ("runs/a.bin", 0, 9.0, True), ("runs/a.bin", 1, 8.0, True)]
    ax = df.bindf.plot_correlation()
    assert [line.get_label() for line in ax.lines] == ["Channel 4 × Channel 6 (b.bin)",
                                                        "Channel 4 × Channel 6 (a.bin)"]
    assert list(ax.lines[0].get_xdata()) == [10.0]  # tau 0 left out of the log axis


def test_mean_curves_on_the_real_export_match_pandas() -> None:
    curves = bindf.read_fcs1(Path(bindf.__file__).parent / "samples" / "fcs_curves_fcs1.bin")
    mean = curves.bindf.mean_curves()
    expected = curves.groupby(["pair_index", "lag_index"]).g2.mean()
    assert len(mean) == 7 * 82 and not mean["stored"].any()
    np.testing.assert_array_equal(mean["g2"].to_numpy(), expected.to_numpy())
    ax = curves.bindf.plot_correlation(curves="all")
    assert len(ax.lines) == 14 and ax.get_xscale() == "log" and ax.get_xlabel() == "τ [µs]"


def test_plot_hit_map_refuses_a_chip_without_hits() -> None:
    df = frame("polars", apx_columns(HITS), "apx", AP4)
    with pytest.raises(ValueError, match=r"its chips are \[0, 1\]"):
        df.bindf.plot_hit_map(chip=2)


@pytest.mark.parametrize("kind", KINDS)
def test_rebin_sums_signed_and_float_channels_in_their_own_kind(kind: str) -> None:
    """A background-subtracted (signed) or corrected (float) channel was cast to uint64
    before summing: fractions dropped, negative values wrapped to ~1.8e19."""
    columns = it02_columns([1e6, 2e6, 3e6, 4e6], ch2=[1, 2, 3, 4], ch4=[0, 1, 0, 1])
    columns["ch2"] = columns["ch2"].astype("int64") - 3  # -2, -1, 0, 1
    columns["ch4"] = columns["ch4"] * 0.5
    coarse = as_polars(frame(kind, columns, "it02", IT02_HEADER).bindf.rebin(2000), kind)
    assert coarse.schema == {"time_ns": pl.Float64, "ch2": pl.Int64, "ch4": pl.Float64}
    assert coarse.rows() == [(2e6, -3, 0.5), (4e6, 1, 0.5)]
    if kind == "polars":  # (a polars column of nulls only sums to zeros, as it did)
        nulls = pl.DataFrame({"time_ns": columns["time_ns"],
                              "ch2": pl.Series([None] * 4, dtype=pl.Null)})
        set_polars_info(nulls, build_info("it02", IT02_HEADER, "x.bin"))
        assert nulls.bindf.rebin(2000)["ch2"].to_list() == [0, 0]
    columns["ch2"] = np.array(["a", "b", "c", "d"])
    with pytest.raises(TypeError, match="rebin sums the channel columns: 'ch2' holds"):
        frame(kind, columns, "it02", IT02_HEADER).bindf.rebin(2000)


@pytest.mark.parametrize("shape", [(300, 300), (13, 16, 2), 13, (13.7, 16), ("13", "16"),
                                   (0, 16), (True, 16)])
def test_hit_map_shape_is_two_integers_a_map_can_hold(shape: Any) -> None:
    df = frame("polars", apx_columns(HITS), "apx", AP4)
    with pytest.raises(ValueError, match=r"shape must be \(rows, columns\): two integers "
                                         "from 1 to 256"):
        df.bindf.hit_map(shape=shape)
    assert df.bindf.hit_map(shape=(np.int64(20), 256)).height == 20 * 256


def test_match_rows_columns_on_astropix4_hits_says_they_need_no_matching() -> None:
    hits = bindf.read_apx(Path(__file__).parent / "data" / "20250723_092534_data.apx")
    with pytest.raises(ValueError, match=r"lacks \['location'\] \(AstroPix 4 hits have their "
                                         "row and column already: nothing to match\\)"):
        hits.bindf.match_rows_columns()
