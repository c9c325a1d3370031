"""FLIM LABS FCS1 correlation curves: the real example's values (computed with json, no
eval, from the vendor's logic), layout detection, notes, lengths past the end, bombs,
damage under every on_error policy, the mean-curve helper and plot, writer round trips."""

from __future__ import annotations

import json
import math
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import cpu_seconds

import bindf
from bindf.errors import (
    CorruptDataError,
    CorruptDataWarning,
    FCS1LayoutWarning,
    HeaderError,
    TruncatedFileWarning,
)
from bindf.formats.fcs1 import sample

REAL = Path(__file__).parent / "data" / "fcs1_fcs-export-data-example.bin"
METADATA = {"acquisition_time": 4000, "bin_width": 10,
            "correlations": [[3, 5], [3, 7], [5, 3], [5, 5], [5, 7], [7, 3], [7, 5]],
            "enabled_channels": [3, 5, 7], "notes": "", "num_acquisitions": 2}
FILE_ORDER = [(5, 3), (3, 5), (3, 7), (5, 7), (7, 5), (5, 5), (7, 3)]
FSUMS = {(5, 3): (0.002288692269659456, -0.14674005736202037),
         (3, 5): (-0.06757498970761303, -0.00010092138478392302),
         (3, 7): (-0.06772770860753222, 0.0016457764818185198),
         (5, 7): (0.0019402242832915148, -0.14645790732765898),
         (7, 5): (-0.0024666271126470344, 0.05743287515548902),
         (5, 5): (0.012845322612259227, -0.13899313185588053),
         (7, 3): (0.0029129057843870626, 0.05711299217574568)}


def fcs1_bytes(metadata: dict | bytes, data: dict | bytes | None) -> bytes:
    meta = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
    out = b"FCS1" + struct.pack("<I", len(meta)) + meta
    if data is None:
        return out
    block = data if isinstance(data, bytes) else json.dumps(data).encode()
    return out + struct.pack("<I", len(block)) + block


def write(tmp_path: Path, data: bytes, name: str = "x.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def curves(n_pairs: int = 2, n_vectors: int = 2, lags: tuple = (0, 1, 3, 9)) -> dict:
    rng = np.random.default_rng(n_pairs * 10 + n_vectors)
    return {"lag_index": list(lags), "g2_correlations": [
        [[p, p + 1], rng.random((n_vectors, len(lags))).tolist()] for p in range(n_pairs)]}


# -- the real example ---------------------------------------------------------------------


def test_real_layout_sizes_and_metadata() -> None:
    data = REAL.read_bytes()
    assert len(data) == 27200
    m = struct.unpack_from("<I", data, 4)[0]
    assert m == 158 and struct.unpack_from("<I", data, 8 + m)[0] == 27030
    df = bindf.read(REAL, output="polars")  # detected by magic
    header = df.bindf.header
    assert {k: header[k] for k in METADATA} == METADATA
    assert header["layout"] == "no_mean"
    assert header["notes_text"] == "" and header["channel_names"] == {}
    assert df.height == 7 * 2 * 82 == 1148
    assert df.schema == pl.Schema({
        "pair_index": pl.Int32, "channel_1": pl.UInt8, "channel_2": pl.UInt8,
        "vector_index": pl.Int32, "is_mean": pl.Boolean, "acquisition": pl.Int32,
        "lag_index": pl.Int64, "tau_us": pl.Float64, "g2": pl.Float64})
    assert df["g2"].null_count() == 0 and not df["g2"].is_nan().any()


def test_real_lags_and_tau() -> None:
    df = bindf.read_fcs1(REAL, output="polars")
    lags = df.filter((pl.col("pair_index") == 0) & (pl.col("vector_index") == 0))
    assert lags.height == 82
    assert lags["lag_index"].to_list()[:6] == [0, 4882, 5158, 5449, 5757, 6082]
    assert lags["lag_index"].to_list()[-4:] == [335366, 354303, 374310, 395446]
    assert lags["tau_us"].to_list()[:4] == [0.0, 48820.0, 51580.0, 54490.0]
    assert lags["tau_us"][-1] == 3954460.0


def test_real_pairs_vectors_and_values() -> None:
    df = bindf.read_fcs1(REAL, output="polars")
    pairs = df.select("pair_index", "channel_1", "channel_2").unique(maintain_order=True)
    assert pairs["pair_index"].to_list() == list(range(7))
    assert list(zip(pairs["channel_1"], pairs["channel_2"])) == FILE_ORDER
    assert not df["is_mean"].any()
    assert df["acquisition"].to_list() == (df["vector_index"] + 1).to_list()

    def vec(pair: tuple[int, int], k: int) -> list[float]:
        return df.filter((pl.col("channel_1") == pair[0]) & (pl.col("channel_2") == pair[1])
                         & (pl.col("vector_index") == k))["g2"].to_list()

    assert vec((5, 3), 0)[:3] == [0.0023299228598345836, 2.338703456652031e-05,
                                  6.388551958382052e-06]
    assert vec((5, 3), 0)[-3:] == [-1.966167999961119e-05, -3.298660322704251e-05,
                                   -0.0004960563060849291]
    assert vec((5, 3), 1)[:3] == [0.002559762925218706, 1.404260623338719e-05,
                                  1.2198161941516052e-06]
    assert vec((5, 3), 1)[-1] == -0.14878393593455394
    assert vec((5, 5), 0)[:3] == [0.007655005586159932, 0.001183896558009432,
                                  0.00019203473118439008]
    assert (vec((5, 5), 1)[0], vec((5, 5), 1)[-1]) == (0.007766519667899568,
                                                        -0.14907883807747688)
    assert (vec((7, 3), 0)[-1], vec((7, 3), 1)[-1]) == (0.0011100193944150437,
                                                        0.055681180131295145)
    for pair, sums in FSUMS.items():
        assert (math.fsum(vec(pair, 0)), math.fsum(vec(pair, 1))) == sums
    assert vec((5, 3), 0)[0] == vec((3, 5), 1)[0]  # vector order is no acquisition id


def test_real_mean_curves() -> None:
    for output in ("polars", "pandas"):
        df = bindf.read_fcs1(REAL, output=output)
        means = pl.DataFrame(df.bindf.mean_curves())
        assert means.height == 7 * 82 and not means["stored"].any()
        first = means.filter((pl.col("channel_1") == 5) & (pl.col("channel_2") == 3))
        assert first["g2"].to_list()[:3] == [0.0024448428925266446, 1.871482039995375e-05,
                                             3.8041840762668287e-06]
        assert means.filter((pl.col("channel_1") == 5) & (pl.col("channel_2") == 5))[
            "g2"][0] == 0.00771076262702975
    lazy = pl.scan_fcs1(REAL)
    assert lazy.bindf.mean_curves().height == 7 * 82


def test_plot_correlation_uses_a_log_tau_axis() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    df = bindf.read_fcs1(REAL, output="polars")
    ax = df.bindf.plot_correlation()
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 7
    assert all(len(line.get_xdata()) == 81 for line in ax.get_lines())  # τ = 0 left out
    assert ax.get_lines()[0].get_label() == "Channel 6 × Channel 4"
    ax = df.bindf.plot_correlation(curves="all")
    assert len(ax.get_lines()) == 14
    with pytest.raises(ValueError, match="curves"):
        df.bindf.plot_correlation(curves="some")


# -- layouts and notes --------------------------------------------------------------------


def test_mean_first_layout(tmp_path: Path) -> None:
    path = write(tmp_path, sample())
    df = bindf.read_fcs1(path, output="polars")
    assert df.bindf.header["layout"] == "mean_first"
    assert df.filter(pl.col("vector_index") == 0)["is_mean"].all()
    assert df.filter(pl.col("is_mean"))["acquisition"].null_count() == 12
    assert df.filter(~pl.col("is_mean"))["acquisition"].unique().sort().to_list() == [1, 2]
    means = df.bindf.mean_curves()
    assert means["stored"].all() and means.height == 2 * 6
    stored = df.filter(pl.col("is_mean")).sort("pair_index", "lag_index")["g2"]
    assert means["g2"].to_list()[:6] == stored.to_list()[:6]


def test_json_null_is_nan(tmp_path: Path) -> None:
    data = curves(1, 2)
    data["g2_correlations"][0][1][1][2] = None
    df = bindf.read_fcs1(write(tmp_path, fcs1_bytes({"num_acquisitions": 2}, data)),
                         output="polars")
    assert df["g2"].is_nan().to_list() == [False] * 6 + [True] + [False]
    assert df["g2"].null_count() == 0
    out = tmp_path / "again.bin"
    bindf.write_fcs1(out, df)  # NaN written back as null
    assert json.loads(out.read_bytes()[12 + len('{"num_acquisitions":2}'):]) == data


def test_unknown_layout_warns(tmp_path: Path) -> None:
    path = write(tmp_path, fcs1_bytes({"num_acquisitions": 5, "bin_width": 1}, curves(2, 3)))
    with pytest.warns(FCS1LayoutWarning) as caught:
        df = bindf.read_fcs1(path, output="polars")
    assert caught[0].message.offset is not None
    assert df.bindf.header["layout"] == "unknown"
    assert not df["is_mean"].any() and df["acquisition"].max() == 3
    with pytest.warns(FCS1LayoutWarning):  # no num_acquisitions at all
        bindf.read_fcs1(write(tmp_path, fcs1_bytes({}, curves(1, 2))))


def test_json_notes_are_parsed() -> None:
    notes = json.dumps({"notes": "sample B", "channel_names": {"3": "green", "5": "red"}})
    data = fcs1_bytes({**METADATA, "notes": notes}, curves(1, 2))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        df = bindf.read_fcs1(write(Path(tmp), data), output="polars")
    assert df.bindf.header["notes_text"] == "sample B"
    assert df.bindf.header["channel_names"] == {"3": "green", "5": "red"}
    assert df.bindf.header["notes"] == notes  # kept as stored


@pytest.mark.parametrize("notes", ["plain text", "{not json", "[1, 2]", 7])
def test_other_notes_are_plain_text(notes: object, tmp_path: Path) -> None:
    df = bindf.read_fcs1(write(tmp_path, fcs1_bytes({"notes": notes, "num_acquisitions": 2},
                                                    curves(1, 2))))
    assert df.bindf.header["notes_text"] == notes and df.bindf.header["channel_names"] == {}


def test_no_bin_width_gives_null_tau(tmp_path: Path) -> None:
    df = bindf.read_fcs1(write(tmp_path, fcs1_bytes({"num_acquisitions": 2}, curves())),
                         output="polars")
    assert df["tau_us"].null_count() == df.height and df["lag_index"].null_count() == 0


# -- empty, truncated, bombs ----------------------------------------------------------------


def test_empty_correlations_give_an_empty_table(tmp_path: Path) -> None:
    path = write(tmp_path, fcs1_bytes(METADATA, {"g2_correlations": [], "lag_index": [0, 1]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = bindf.read_fcs1(path, output="polars")
    assert df.height == 0 and df.width == 9 and df.bindf.header["layout"] is None


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    """Cuts inside the magic: not an FCS1 file. From the metadata length field on, either
    length running past the end is a file still being written: a truncation warning at
    that length field and no rows (no metadata yet when it is the metadata's)."""
    data = fcs1_bytes(METADATA, curves(2, 2))
    data_start = 8 + struct.unpack_from("<I", data, 4)[0]
    path = tmp_path / "cut.bin"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        if cut < 4:
            with pytest.raises(bindf.UnknownFormatError) as info:
                bindf.read_fcs1(path)
            assert (info.value.offset, info.value.path) == (0, str(path))
            continue
        with pytest.warns(TruncatedFileWarning) as caught:
            df = bindf.read_fcs1(path)
        assert len(df) == 0 and len(caught) == 1
        header = df.attrs["bindf"]["header"]
        if cut < data_start:
            assert caught[0].message.offset == 4
            assert header == {"notes_text": "", "channel_names": {}, "layout": None}
        else:
            assert caught[0].message.offset == data_start
            assert header["acquisition_time"] == 4000
    assert len(bindf.read_fcs1(write(tmp_path, data))) == 2 * 2 * 4


@pytest.mark.parametrize("declared", [2**32 - 1, 2**31, 10**9, 28])
@pytest.mark.parametrize("block", ["metadata", "data"])
def test_lengths_past_the_end_are_cheap(block: str, declared: int, tmp_path: Path) -> None:
    if block == "metadata":  # (cut inside its JSON: a whole one followed by more is damage)
        data = b"FCS1" + struct.pack("<I", declared) + b'{"notes_text": "' + bytes(4)
        damaged = write(tmp_path, b"FCS1" + struct.pack("<I", declared) + b"{}" + bytes(20),
                        "damaged.bin")
        with pytest.raises(bindf.HeaderError, match="a damaged length field") as caught:
            bindf.read_fcs1(damaged)
        assert caught.value.offset == 4
    else:
        data = fcs1_bytes(b"{}", None) + struct.pack("<I", declared) + b'{"lag_index":[]}'
    path = write(tmp_path, data)

    def attempt() -> None:
        if block == "metadata":
            with pytest.warns(TruncatedFileWarning) as caught:
                assert len(bindf.read_fcs1(path)) == 0
            assert caught[0].message.offset == 4
        else:
            with pytest.warns(TruncatedFileWarning) as caught:
                assert len(bindf.read_fcs1(path)) == 0
            assert caught[0].message.offset == 10

    attempt()
    tracemalloc.start()
    with cpu_seconds() as elapsed:
        attempt()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed() < 0.05 and peak < 1 << 20


@pytest.mark.parametrize("data, why", [
    (b"[]", "object"), (b"{\"lag_index\":[1],\"lag_index\":[2]}", "duplicate"),
    (b"{\"lag_index\":[NaN]}", "NaN"), (b"[" * 100_000, "nested"), (b"\xff{}", "UTF-8"),
    (b"{\"g2_correlations\":[]}", "lag_index"), (b"{\"lag_index\":[1.5],\"g2_correlations\":[]}",
                                                 "integers"),
])
def test_bad_data_blocks_are_errors_with_an_offset(data: bytes, why: str,
                                                   tmp_path: Path) -> None:
    path = write(tmp_path, fcs1_bytes(b"{}", data))
    with pytest.raises(CorruptDataError, match=why) as info:
        bindf.read_fcs1(path)
    assert info.value.offset >= 14 and info.value.path == str(path)


def test_bad_metadata_is_a_header_error(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="duplicate"):
        bindf.read_fcs1(write(tmp_path, fcs1_bytes(b'{"a":1,"a":2}', curves())))
    with pytest.raises(bindf.UnknownFormatError):
        bindf.read_fcs1(write(tmp_path, b"FCS2" + bytes(8)))


# -- damage under on_error ---------------------------------------------------------------------


def _damaged_cases() -> list[tuple[str, dict, dict]]:
    good = curves(3, 2)
    short = json.loads(json.dumps(good))
    short["g2_correlations"][1][1][0] = short["g2_correlations"][1][1][0][:-1]
    texty = json.loads(json.dumps(good))
    texty["g2_correlations"][2][1][1][2] = "x"
    bad_pair = json.loads(json.dumps(good))
    bad_pair["g2_correlations"][0] = [[1, 2, 3], [[0.0] * 4]]
    boolean = json.loads(json.dumps(good))  # JSON true is not a number (Arrow reads 1.0)
    boolean["g2_correlations"][1][1][0][1] = True
    return [("vector_length_mismatch", short, {"bad_vector": 1}),
            ("text_in_a_vector", texty, {"bad_vector": 1}),
            ("boolean_in_a_vector", boolean, {"bad_vector": 1}),
            ("bad_pair", bad_pair, {"bad_pair": 1})]


@pytest.mark.parametrize("policy", ["raise", "warn", "skip"])
@pytest.mark.parametrize("case", _damaged_cases(), ids=lambda c: c[0])
def test_damage_policies(case: tuple, policy: str, tmp_path: Path) -> None:
    name, data, counts = case
    meta = {"num_acquisitions": 2, "bin_width": 5}
    path = write(tmp_path, fcs1_bytes(meta, data))
    good = bindf.read_fcs1(write(tmp_path, fcs1_bytes(meta, curves(3, 2)), "good.bin"),
                           output="polars")
    if policy == "raise":
        with pytest.raises(CorruptDataError) as info:
            bindf.read_fcs1(path)
        assert info.value.offset == 8 + len(json.dumps(meta)) + 4
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = bindf.read_fcs1(path, on_error=policy, output="polars")
    assert df.bindf.info["errors"] == counts
    messages = [w.message for w in caught]
    if policy == "skip":
        assert messages == []
    else:
        assert [type(m) for m in messages] == [CorruptDataWarning]
    dropped = {"vector_length_mismatch": (1, 0), "text_in_a_vector": (2, 1),
               "boolean_in_a_vector": (1, 0), "bad_pair": (0, None)}[name]
    pair, vector = dropped
    gone = (pl.col("pair_index") == pair) & (
        pl.lit(True) if vector is None else pl.col("vector_index") == vector)
    assert df.equals(good.filter(~gone))


@pytest.mark.parametrize("literal", ["true", "false"])
def test_json_booleans_are_not_g2_values(literal: str, tmp_path: Path) -> None:
    # true/false would otherwise become 1.0/0.0; a "true" inside a string elsewhere in
    # the block does not disturb the intact vectors.
    block = ('{"comment":"true false","lag_index":[0,1,2],"g2_correlations":'
             f'[[[0,1],[[0.5,{literal},0.25],[0.125,-2.0,null]]]]}}').encode()
    path = write(tmp_path, fcs1_bytes({"num_acquisitions": 2, "bin_width": 4}, block))
    with pytest.raises(CorruptDataError, match="vector 0 is not a list of numbers") as info:
        bindf.read_fcs1(path)
    assert info.value.offset == 8 + len(json.dumps({"num_acquisitions": 2, "bin_width": 4})) + 4
    df = bindf.read_fcs1(path, on_error="skip", output="polars")
    assert df.bindf.info["errors"] == {"bad_vector": 1}
    assert df["vector_index"].to_list() == [1, 1, 1]
    assert df["acquisition"].to_list() == [2, 2, 2]
    assert df["tau_us"].to_list() == [0.0, 4.0, 8.0]
    assert df["g2"].to_list()[:2] == [0.125, -2.0] and math.isnan(df["g2"][2])


def test_integers_beyond_two_to_the_53_are_rounded_as_json_readers_do(tmp_path: Path) -> None:
    """A G(τ) value written as an integer too large for a double to hold exactly is read
    as the nearest double (as ``float`` of the parsed JSON gives it; it was refused as
    "not a list of numbers"); one beyond the double range is damage."""
    big = 2**60 + 1
    block = ('{"lag_index":[0,1,2],"g2_correlations":'
             f'[[[0,1],[[0.5,{big},null],[1,2,{10**400}],[0.25,-1,3]]]]}}').encode()
    meta = {"num_acquisitions": 3, "bin_width": 4}
    path = write(tmp_path, fcs1_bytes(meta, block))
    with pytest.raises(CorruptDataError, match="vector 1 is not a list of numbers"):
        bindf.read_fcs1(path)
    df = bindf.read_fcs1(path, on_error="skip", output="polars")
    assert df.bindf.info["errors"] == {"bad_vector": 1}
    assert df["vector_index"].to_list() == [0, 0, 0, 2, 2, 2]
    g2 = df["g2"].to_list()
    assert g2[:2] == [0.5, float(big)] and math.isnan(g2[2]) and g2[3:] == [0.25, -1.0, 3.0]


def test_trailing_bytes_are_damage(tmp_path: Path) -> None:
    path = write(tmp_path, fcs1_bytes(METADATA, curves()) + b"\0\0")
    with pytest.raises(CorruptDataError, match="follow the data block"):
        bindf.read_fcs1(path)
    df = bindf.read_fcs1(path, on_error="skip")
    assert len(df) == 16 and df.attrs["bindf"]["errors"] == {"trailing_bytes": 1}


def test_bytes_inserted_into_the_data_block_are_one_damage_of_the_block(tmp_path: Path) -> None:
    """Bytes inserted inside the data JSON leave its end after the declared length: the
    block is what is damaged (it was blamed on bytes after the block, and counted twice)."""
    data = fcs1_bytes(METADATA, curves())
    inside = data.index(b"g2_correlations")
    path = write(tmp_path, data[:inside] + b"  ,,  " + data[inside:])
    with pytest.raises(CorruptDataError, match="data block: .*6 bytes follow it") as info:
        bindf.read_fcs1(path)
    assert "follow the data block" not in str(info.value)
    with pytest.warns(CorruptDataWarning) as caught:
        df = bindf.read_fcs1(path, on_error="warn")
    assert len(caught) == 1 and len(df) == 0
    assert df.attrs["bindf"]["errors"] == {"bad_data_block": 1}


# -- writer, frontends --------------------------------------------------------------------------


def test_writer_round_trips_the_real_file(tmp_path: Path) -> None:
    df = bindf.read_fcs1(REAL)
    out = tmp_path / "again.bin"
    bindf.write_fcs1(out, df)  # metadata inherited, the reader's added keys left out
    again = bindf.read_fcs1(out)
    pd.testing.assert_frame_equal(again, df)
    assert again.attrs["bindf"]["header"] == df.attrs["bindf"]["header"]
    original = REAL.read_bytes()
    m = struct.unpack_from("<I", original, 4)[0]
    assert json.loads(original[12 + m:]) == json.loads(out.read_bytes()[12 + m:])


def test_writer_nan_is_null_and_mean_first_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, sample())
    df = bindf.read_fcs1(path, output="polars")
    bindf.write_fcs1(tmp_path / "b.bin", df)
    assert (tmp_path / "b.bin").read_bytes() == path.read_bytes()


def test_writer_refuses_ragged_vectors(tmp_path: Path) -> None:
    df = bindf.read_fcs1(REAL, output="polars").slice(1)
    with pytest.raises(ValueError, match="lags"):
        bindf.write_fcs1(tmp_path / "x.bin", df)


def test_scan_projection_and_cli(tmp_path: Path, capsys) -> None:
    from bindf.cli import main

    got = pl.scan_fcs1(REAL).filter(pl.col("lag_index") == 0).select("g2").collect()
    assert got.height == 14
    assert bindf.read_fcs1(REAL, columns=["g2", "tau_us"], output="polars").columns == \
        ["g2", "tau_us"]
    assert main(["info", str(REAL), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    info = info[0] if isinstance(info, list) else info
    assert info["format"] == "fcs1" and info["rows"] == 1148


def test_dask(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    import bindf.dask

    ddf = bindf.dask.read_fcs1([REAL, REAL])
    assert len(ddf.compute()) == 2 * 1148


@pytest.mark.parametrize("bin_width, expected", [
    (10**400, [None] * 8),                       # no float: as no bin width
    (1e308, [0.0, 1e308, None, None] * 2),       # a product beyond float64: null, not inf
])
def test_tau_of_bin_widths_beyond_float64(bin_width, expected, tmp_path: Path) -> None:
    """Neither raises nor warns (OverflowError and numpy's overflow RuntimeWarning
    before)."""
    path = write(tmp_path, fcs1_bytes({**METADATA, "bin_width": bin_width}, curves(1, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = bindf.read_fcs1(path, output="polars")
    assert df["tau_us"].to_list() == expected
    assert df["lag_index"].to_list() == [0, 1, 3, 9] * 2
