"""The writers check what they are given: a value a file cannot hold, a column the
header does not list, a header the record layout cannot be built from is a ``ValueError``
naming it (never a wrapped number, a dropped column, a foreign exception or a file bindf
then refuses to read), and whole-number float columns are written through the same safe
cast in every writer. On every refusal the destination is left as it was.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bindf

DATA = Path(__file__).parent / "data"
FCS1 = DATA / "fcs1_fcs-export-data-example.bin"
IT01 = DATA / "it01_intensity-tracing-first1000.bin"
APX4 = DATA / "20250723_092534_data.apx"
APX3 = DATA / "vinj0_th1030_20250729-185248.apx"


def nothing_written(folder: Path) -> bool:
    """No file at all in ``folder``: neither the destination nor a temporary file."""
    return os.listdir(folder) == []


def fcs1_data_block(path: Path) -> dict:
    raw = path.read_bytes()
    metadata_length = struct.unpack_from("<I", raw, 4)[0]
    return json.loads(raw[12 + metadata_length:])


# -- write_fcs1 ---------------------------------------------------------------------------------


@pytest.fixture
def curves() -> pd.DataFrame:
    """The real FCS1 sample: 7 pairs (the first (5, 3)) × 2 vectors × 82 lags."""
    return bindf.read_fcs1(FCS1)


def _pyarrow_message(message: str) -> str:
    """A pattern of ``message``, whose float values pyarrow prints as ``4.700000`` (its
    newer releases) or ``4.7`` (17, the oldest bindf supports)."""
    return re.escape(message).replace("00000", "(00000)?")


@pytest.mark.parametrize(("value", "dtype", "message"), [
    (256, "int64", "column 'channel_1' (int64) cannot be stored as uint8: row 0 holds 256 "
                   "(Integer value 256 not in range: 0 to 255)"),
    (-1, "int64", "column 'channel_1' (int64) cannot be stored as uint8: row 0 holds -1 "
                  "(Integer value -1 not in range: 0 to 255)"),
    (4.7, "float64", "column 'channel_1' (double) cannot be stored as uint8: row 0 holds 4.7 "
                     "(Float value 4.700000 was truncated converting to uint8)"),
])
def test_fcs1_refuses_a_channel_the_file_cannot_hold(curves, tmp_path, value, dtype, message):
    curves["channel_1"] = curves["channel_1"].astype(dtype)
    curves.loc[curves["pair_index"] == 0, "channel_1"] = value
    with pytest.raises(ValueError, match=f"^{_pyarrow_message(message)}$"):
        bindf.write_fcs1(tmp_path / "x.bin", curves)
    assert nothing_written(tmp_path)


def test_fcs1_refuses_a_null_naming_the_column(curves, tmp_path):
    curves["channel_2"] = curves["channel_2"].astype("Int64")
    curves.loc[5, "channel_2"] = pd.NA
    with pytest.raises(ValueError, match=r"^column 'channel_2' has 1 null value\(s\), the "
                                         r"first in row 5; files cannot store them$"):
        bindf.write_fcs1(tmp_path / "x.bin", curves)
    curves = bindf.read_fcs1(FCS1)
    curves["lag_index"] = curves["lag_index"].astype("Int64")
    curves.loc[0, "lag_index"] = pd.NA
    with pytest.raises(ValueError, match=r"^column 'lag_index' has 1 null value"):
        bindf.write_fcs1(tmp_path / "x.bin", curves)
    assert nothing_written(tmp_path)


def test_fcs1_refuses_rows_of_one_pair_that_disagree_on_a_channel(curves, tmp_path):
    # The file stores a pair's channels once: writing the first row's would change the
    # other rows without a word.
    last_rows_of_pair_0 = curves.index[curves["pair_index"] == 0][-10:]
    curves.loc[last_rows_of_pair_0, "channel_1"] = 7
    with pytest.raises(ValueError, match=re.escape(
            "cannot write FCS1: column 'channel_1' holds 5 and 7 for pair_index 0 (row 154); "
            "the rows of a pair must agree on its channels")):
        bindf.write_fcs1(tmp_path / "x.bin", curves)
    assert nothing_written(tmp_path)


def test_fcs1_writes_whole_float_columns_as_integers(curves, tmp_path):
    floats = curves.astype({"channel_1": "float64", "pair_index": "float64",
                            "lag_index": "float64"})
    bindf.write_fcs1(tmp_path / "x.bin", floats)
    pd.testing.assert_frame_equal(bindf.read_fcs1(tmp_path / "x.bin"), curves)


def test_fcs1_writes_null_nan_and_infinite_g2_as_json_null(curves, tmp_path):
    kept = curves["g2"].iloc[4:82].tolist()
    g2 = pd.array(curves["g2"], dtype="Float64")
    g2[0], g2[1], g2[2], g2[3] = pd.NA, np.nan, np.inf, -np.inf
    curves["g2"] = g2
    bindf.write_fcs1(tmp_path / "x.bin", curves)
    first_vector = fcs1_data_block(tmp_path / "x.bin")["g2_correlations"][0][1][0]
    assert first_vector == [None, None, None, None, *kept]


def test_fcs1_empty_frame_is_a_file_without_curves(curves, tmp_path):
    empty = curves.iloc[:0].copy()
    empty.attrs = curves.attrs
    bindf.write_fcs1(tmp_path / "x.bin", empty)
    assert fcs1_data_block(tmp_path / "x.bin") == {"g2_correlations": [], "lag_index": []}
    back = bindf.read_fcs1(tmp_path / "x.bin")
    assert back.shape == (0, 9)
    assert back.attrs["bindf"]["header"]["num_acquisitions"] == 2
    assert back.attrs["bindf"]["header"]["layout"] is None


# -- write_it01 ---------------------------------------------------------------------------------


def test_it01_refuses_a_channel_column_the_header_does_not_list(tmp_path):
    trace = bindf.read_it01(IT01)  # header channels [0, 1]: columns ch1, ch2
    trace["ch3"] = 1
    with pytest.raises(ValueError, match=re.escape(
            "cannot write IT01: columns ['ch3'] are not channels of the header "
            "(['ch1', 'ch2'])")):
        bindf.write_it01(tmp_path / "x.it01", trace)
    with pytest.raises(ValueError, match=re.escape("columns ['ch3'] are not channels")):
        bindf.write_it01(tmp_path / "x.it01", trace, {"channels": [0, 1]})
    assert nothing_written(tmp_path)
    # Without a header the channels come from the columns: nothing is left out.
    bindf.write_it01(tmp_path / "y.it01", trace.to_dict("list"))
    assert bindf.read_header(tmp_path / "y.it01") == {"channels": [0, 1, 2]}


# -- write_apx ----------------------------------------------------------------------------------


def test_apx_writes_whole_number_float_columns(tmp_path):
    hits = bindf.read_apx(APX4)
    floats = hits.astype({"row": "float64", "readout_id": "float64", "ts_fine1": "float32"})
    bindf.write_apx(tmp_path / "f.apx", floats)
    pd.testing.assert_frame_equal(bindf.read_apx(tmp_path / "f.apx"), hits)


def test_apx3_writes_whole_number_float_columns(tmp_path):
    hits = bindf.read_apx(APX3)
    bindf.write_apx(tmp_path / "f.apx", hits.astype({"location": "float64",
                                                    "tot_msb": "float64"}))
    pd.testing.assert_frame_equal(bindf.read_apx(tmp_path / "f.apx"), hits)


@pytest.mark.parametrize(("value", "message"), [
    (1.5, "write_apx: hit fields are integers: column 'row' (double) cannot be stored as "
          "int64: row 3 holds 1.5 (Float value 1.500000 was truncated converting to int64)"),
    (np.nan, "write_apx: hit fields are integers: column 'row' (double) cannot be stored as "
             "int64: row 3 holds nan (Float value nan was truncated converting to int64)"),
])
def test_apx_refuses_a_fraction_or_nan_naming_the_column(tmp_path, value, message):
    hits = bindf.read_apx(APX4)
    hits["row"] = hits["row"].astype("float64")
    hits.loc[3, "row"] = value
    with pytest.raises(ValueError, match=f"^{_pyarrow_message(message)}$"):
        bindf.write_apx(tmp_path / "f.apx", hits)
    assert nothing_written(tmp_path)


@pytest.mark.parametrize("run", [APX4, APX3], ids=["astropix4", "astropix3"])
@pytest.mark.parametrize(("column", "value", "field"), [
    ("readout_id", -1, "uint32"), ("readout_id", 2**32, "uint32"), ("timestamp", -1, "uint64"),
])
def test_apx_refuses_a_readout_field_its_header_cannot_hold(tmp_path, run, column, value, field):
    """AstroPix 3 runs wrote such a readout_id wrapped (-1 read back as 4294967295)."""
    hits = bindf.read_apx(run)
    if column == "timestamp" and run == APX3:
        column = "wall_timestamp"  # (AstroPix 3's name for the readout's timestamp)
    hits[column] = hits[column].astype("int64")
    hits.loc[3, column] = value
    out = tmp_path / "f.apx"
    with pytest.raises(ValueError) as caught:
        bindf.write_apx(out, hits)
    assert str(caught.value) == (
        f"write_apx: column {column!r} holds {value} at hit 3, outside a readout's {field} "
        f"field (0 to {np.iinfo(field).max})")
    assert not out.exists()


def test_apx_refuses_a_null_and_a_text_column(tmp_path):
    hits = bindf.read_apx(APX4)
    hits["row"] = hits["row"].astype("Int64")
    hits.loc[3, "row"] = pd.NA
    with pytest.raises(ValueError, match=re.escape(
            "write_apx: hit fields are integers: column 'row' has 1 null value(s), the first "
            "in row 3; files cannot store them")):
        bindf.write_apx(tmp_path / "f.apx", hits)
    hits["row"] = hits["row"].fillna(0).astype(str)
    with pytest.raises(ValueError, match=r"^write_apx: column 'row' must be integer, not "
                                         r"(large_)?string$"):  # the pandas version decides
        bindf.write_apx(tmp_path / "f.apx", hits)
    assert nothing_written(tmp_path)


def test_dict_columns_of_different_lengths_are_named(tmp_path):
    with pytest.raises(ValueError, match=re.escape(
            "the columns have different lengths: {'time_ns': 2, 'ch1': 3}")):
        bindf.write_it01(tmp_path / "x.it01", {"time_ns": [1.0, 2.0], "ch1": [1, 2, 3]})
    assert nothing_written(tmp_path)


# -- the generic writer of a declared fixed-record format ---------------------------------------


@pytest.fixture
def toy() -> bindf.FixedRecordFormat:
    """The README's example: the record fields come from the header's ``channels``."""
    return bindf.FixedRecordFormat(
        "toy", magic=b"TOY1", header="json",
        dtype=lambda h: [("t_ns", "<f8")] + [(f"ch{c + 1}", "<u4") for c in h["channels"]],
        extensions=(".toy",), description="toy counter dump",
        example_header={"channels": [0, 2]})


def test_declared_writer_without_a_header_says_so(toy, tmp_path):
    frame = pd.DataFrame({"t_ns": [0.0, 1.0], "ch1": [1, 2], "ch3": [3, 4]})
    with pytest.raises(ValueError, match=re.escape(
            "cannot write toy: its record layout needs header values (KeyError: 'channels'), "
            "and the frame carries no bindf header; pass header=")):
        toy.writer(tmp_path / "x.toy", frame)
    with pytest.raises(ValueError, match=re.escape(
            "cannot write toy: the header {'chanels': [0, 2]} has no key 'channels', which "
            "the record layout needs")):
        toy.writer(tmp_path / "x.toy", frame, header={"chanels": [0, 2]})
    with pytest.raises(ValueError, match=re.escape(
            "cannot write toy: the header {'channels': 2} does not give a valid record "
            "layout: TypeError: 'int' object is not iterable")):
        toy.writer(tmp_path / "x.toy", frame, header={"channels": 2})
    assert nothing_written(tmp_path)
    toy.writer(tmp_path / "x.toy", frame, header={"channels": [0, 2]})
    records = np.array([(0.0, 1, 3), (1.0, 2, 4)],
                       dtype=[("t_ns", "<f8"), ("ch1", "<u4"), ("ch3", "<u4")])
    header = b'{"channels":[0,2]}'
    assert (tmp_path / "x.toy").read_bytes() == (b"TOY1" + struct.pack("<I", len(header))
                                                 + header + records.tobytes())


def test_a_frame_read_with_nullable_floats_writes_back(tmp_path):
    """pandas 3 reads NaN into a nullable float column as NA: the writers take that NA
    as the NaN the file holds (they refused it as a null), so the round trip is exact.
    A polars null in a float column is still refused (polars tells null from NaN)."""
    import polars as pl

    sample = Path(bindf.__file__).parent / "samples" / "phasors_spf1.bin"
    frame = bindf.read_spf1(sample)
    frame.loc[0, "g"] = np.nan
    bindf.write_spf1(tmp_path / "nan.bin", frame)
    masked = bindf.read_spf1(tmp_path / "nan.bin", dtype_backend="numpy_nullable")
    masked.loc[1, "s"] = pd.NA  # missing in any pandas: NaN in the file
    bindf.write_spf1(tmp_path / "back.bin", masked)
    back = bindf.read_spf1(tmp_path / "back.bin")
    assert np.isnan(back.loc[0, "g"]) and np.isnan(back.loc[1, "s"])
    pd.testing.assert_frame_equal(back.drop(index=1), frame.drop(index=1))
    nulls = pl.from_pandas(frame).with_columns(pl.lit(None, pl.Float64).alias("g"))
    with pytest.raises(ValueError, match="column 'g' has .* null value"):
        bindf.write_spf1(tmp_path / "nulls.bin", nulls)


def test_write_apx_refuses_bad_layout_arguments_by_name(tmp_path):
    """Foreign messages before: "'<' not supported between 'str' and 'int'", numpy's
    "operands could not be broadcast", json's "Out of range float values"."""
    hits = bindf.read_apx(Path(bindf.__file__).parent / "samples" / "astropix_threshold_scan.apx")
    out = tmp_path / "run.apx"
    cases = [({"leading_idle": "x"}, "leading_idle must be an integer >= 0"),
             ({"trailing_idle": 0}, "trailing_idle must be a positive integer"),
             ({"idle_between": [1, 2]}, r"idle_between must be an integer or one integer per "
                                        r"hit \(776\)"),
             ({"idle_between": 1.5}, "idle_between must be an integer"),
             ({"idle_between": -1}, "idle_between must be >= 0"),
             ({"header": {"gain": float("nan")}}, "header cannot be written as strict JSON")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            bindf.write_apx(out, hits, **kwargs)
        assert not out.exists()
    bindf.write_apx(out, hits, idle_between=np.arange(len(hits)) % 3)
    pd.testing.assert_frame_equal(bindf.read_apx(out), hits, check_like=False,
                                  check_exact=True, check_flags=False, check_freq=False)


def test_every_writer_names_the_row_of_a_value_it_cannot_store(tmp_path, monkeypatch):
    """A value a file cannot hold is an error naming its column and its row in the
    frame: also past the first of the steps a writer converts a large frame in, and for
    a wide SP01 histogram (a column of lists, checked flattened)."""
    import polars as pl

    from bindf import _writing
    from bindf.formats import _astep_writer, _it02_writer

    samples = Path(bindf.__file__).parent / "samples"
    for module in (_writing, _it02_writer, _astep_writer):
        if hasattr(module, "WRITE_CHUNK_ROWS"):
            monkeypatch.setattr(module, "WRITE_CHUNK_ROWS", 4)
    tracing = bindf.read(samples / "intensity_tracing_it02.bin")
    channel = next(c for c in tracing.columns if c.startswith("ch"))
    tracing[channel] = tracing[channel].astype("float64")
    tracing.loc[9, channel] = 2.5
    with pytest.raises(ValueError, match=rf"^column '{channel}' \(double\) cannot be stored "
                                         r"as uint32: row 9 holds 2\.5 \(") as caught:
        bindf.write_it02(tmp_path / "x.bin", tracing)
    # (it pickles, as raised in a worker process: a process pool broke on it)
    import pickle

    again = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(again, ValueError) and str(again) == str(caught.value)
    frames = bindf.read(samples / "astep_quad_chip_frames.bin", format="astep")
    frames["layer"] = frames["layer"].astype("int64")
    frames.loc[6, "layer"] = 300
    with pytest.raises(ValueError, match=r"^column 'layer' \(int64\) cannot be stored as "
                                         r"uint8: row 6 holds 300 \("):
        bindf.write_astep(tmp_path / "x.bin", frames)
    wide = bindf.read_sp01(samples / "decay_curves_sp01.bin", shape="wide", output="polars")
    name = next(c for c in wide.columns if c.startswith("ch"))
    histograms = wide[name].to_list()
    histograms[2][17] = -1
    with pytest.raises(ValueError, match=rf"^column '{name}' \(int64\) cannot be stored as "
                                         r"uint32: row 2 holds -1 \("):
        bindf.write_sp01(tmp_path / "x.bin", wide.with_columns(pl.Series(name, histograms)))
    assert nothing_written(tmp_path)


@pytest.mark.parametrize(("sample", "write", "column", "stray"), [
    ("intensity_tracing_it02.bin", "write_it02", "ch", "n/a"),
    ("photon_events_stt1.bin", "write_spectro", "marker", 5),
    ("time_tagger_itt1.bin", "write_itt1", "time_ns", "late"),
])
def test_a_stray_value_in_an_object_column_names_its_column_and_row(
        tmp_path, sample, write, column, stray):
    """A pandas object column with one value of another kind (a merge, a hand edit)
    raised pyarrow's ArrowInvalid/ArrowTypeError from the conversion, with no row."""
    frame = bindf.read(Path(bindf.__file__).parent / "samples" / sample)
    column = next(c for c in frame.columns if c.startswith(column))
    frame[column] = frame[column].astype(object)
    frame.loc[5, column] = stray
    out = tmp_path / "x.bin"
    with pytest.raises(ValueError, match=rf"^column '{column}', row 5, holds a value that "
                                         r"Arrow cannot store with the rest of the column \("):
        getattr(bindf, write)(out, frame)
    assert not out.exists()


def test_a_column_arrow_cannot_take_as_a_whole_is_named_without_a_row() -> None:
    from bindf._frames import to_arrow_table

    with pytest.raises(ValueError, match=r"^column 'a' cannot be stored as an Arrow column "
                                         r"\(only handle 1-dimensional arrays\)"):
        to_arrow_table({"a": np.zeros((3, 2)), "b": np.arange(3)})
