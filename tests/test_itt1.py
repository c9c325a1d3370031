"""FLIM LABS ITT1 intensity time tagger: no public sample exists, so files are written
with bindf's writer (and by hand with struct) and checked against an independent numpy
parse; the channel/marker conventions are read_spectro's; edge cases of the format page."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bindf
from bindf.errors import HeaderError, TruncatedFileWarning

# The record spelled out independently of bindf: u8 event, f64 LE time (struct '<Bd').
RAW = np.dtype([("e", "u1"), ("t", "<f8")])
assert RAW.itemsize == 9


def events(n: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """Photons on channels 0..3 and every marker code, times not sorted (file order)."""
    rng = np.random.default_rng(seed)
    event = rng.choice(np.array([0, 1, 2, 3, 70, 76, 80], dtype=np.uint8), n)
    time = rng.random(n) * 1e9
    return {"event": event, "time_ns": time}


def numpy_parse(path: Path) -> tuple[dict, np.ndarray]:
    data = path.read_bytes()
    assert data[:4] == b"ITT1"
    (length,) = struct.unpack_from("<I", data, 4)
    body = data[8 + length:]
    n = len(body) // 9
    return json.loads(data[8:8 + length]), np.frombuffer(body[:n * 9], dtype=RAW)


def itt1_bytes(header: bytes, records: bytes = b"") -> bytes:
    return b"ITT1" + struct.pack("<I", len(header)) + header + records


def test_written_file_equals_numpy_parse(tmp_path: Path) -> None:
    path = tmp_path / "tt.bin"
    header = {"channels": [0, 1, 2, 3], "laser_period_ns": 12.5, "bin_width_micros": 1000}
    bindf.write_itt1(path, events(), header)
    parsed_header, raw = numpy_parse(path)
    assert parsed_header == header
    df = bindf.read(path)  # detected by magic
    assert df.attrs["bindf"]["format"] == "itt1" and df.bindf.header == header
    assert list(df.columns) == ["event", "time_ns", "channel", "marker"]
    np.testing.assert_array_equal(df["event"].to_numpy(), raw["e"])
    np.testing.assert_array_equal(df["time_ns"].to_numpy(), raw["t"])  # file order kept
    is_marker = np.isin(raw["e"], [70, 76, 80])
    assert df["channel"].isna().to_numpy().tolist() == is_marker.tolist()
    np.testing.assert_array_equal(df["channel"][~is_marker].to_numpy(dtype=np.uint8),
                                  raw["e"][~is_marker])
    names = {70: "frame", 76: "line", 80: "pixel"}
    assert df["marker"][is_marker].tolist() == [names[e] for e in raw["e"][is_marker]]
    assert df["marker"][~is_marker].isna().all()


def test_same_columns_as_read_spectro(tmp_path: Path) -> None:
    """channel/marker types and values are read_spectro's for the same event bytes."""
    ev = events(300, seed=3)
    bindf.write_itt1(tmp_path / "a.bin", ev)
    bindf.write_spectro(tmp_path / "b.bin", {"event": ev["event"], "microtime_ns": ev["time_ns"],
                                             "macrotime_ns": ev["time_ns"]})
    itt1 = bindf.read_itt1(tmp_path / "a.bin", output="arrow")
    spectro = bindf.read_spectro(tmp_path / "b.bin", output="arrow")
    for name in ("event", "channel", "marker"):
        assert itt1.schema.field(name) == spectro.schema.field(name)
        assert itt1.column(name).equals(spectro.column(name))


def test_photon_only_and_marker_only_files(tmp_path: Path) -> None:
    for codes in ([0, 1], [70, 76, 80]):
        n = 20
        ev = {"event": np.array(codes * n, np.uint8), "time_ns": np.arange(n * len(codes)) * 1.0}
        bindf.write_itt1(tmp_path / "x.bin", ev)
        df = bindf.read_itt1(tmp_path / "x.bin", output="polars")
        assert df["channel"].null_count() == (0 if codes[0] < 70 else df.height)
        assert df["marker"].null_count() == (df.height if codes[0] < 70 else 0)


def test_zero_records_give_an_empty_frame(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(itt1_bytes(b'{"channels":[0]}'))
    df = bindf.read_itt1(path, output="polars")
    assert df.height == 0 and df.columns == ["event", "time_ns", "channel", "marker"]
    assert df.schema["channel"] == pl.UInt8 and df.schema["time_ns"] == pl.Float64


@pytest.mark.parametrize("header", [b"{}", b'{"bin_width_micros":1000}',
                                    b'{"channels":"junk","laser_period_ns":null}'])
def test_no_header_key_is_required(header: bytes, tmp_path: Path) -> None:
    path = tmp_path / "h.bin"
    path.write_bytes(itt1_bytes(header, struct.pack("<Bd", 1, 5.0) + struct.pack("<Bd", 76, 6.0)))
    df = bindf.read_itt1(path)
    assert df.bindf.header == json.loads(header)
    assert df["channel"].tolist()[0] == 1 and pd.isna(df["channel"].tolist()[1])


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    """Every cut inside the records: a truncation warning (offset of the partial record)
    and every complete record; every cut inside the preamble: a HeaderError."""
    full = tmp_path / "full.bin"
    bindf.write_itt1(full, events(12), {"channels": [0, 1, 2, 3]})
    data = full.read_bytes()
    start = 8 + struct.unpack_from("<I", data, 4)[0]
    whole = bindf.read_itt1(full, output="arrow").replace_schema_metadata(None)
    path = tmp_path / "cut.bin"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        if cut < start:
            with pytest.raises(bindf.BindfError) as info:
                bindf.read_itt1(path)
            assert info.value.offset is not None
            continue
        complete, partial = divmod(cut - start, 9)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = bindf.read_itt1(path, output="arrow").replace_schema_metadata(None)
        assert table.equals(whole.slice(0, complete))
        if partial:
            assert [type(w.message) for w in caught] == [TruncatedFileWarning]
            assert caught[0].message.offset == start + 9 * complete
        else:
            assert caught == []


def test_header_length_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "bomb.bin"
    path.write_bytes(b"ITT1" + struct.pack("<I", 2**32 - 1) + b"{}")
    with pytest.raises(HeaderError) as info:
        bindf.read_itt1(path)
    assert info.value.offset == 4


def test_projection_scan_and_chunks(tmp_path: Path) -> None:
    path = tmp_path / "tt.bin"
    bindf.write_itt1(path, events(1000), {"channels": [0, 1, 2, 3]})
    eager = bindf.read_itt1(path, output="polars")
    assert_frame_equal(pl.scan_itt1(path).filter(pl.col("marker") == "line")
                       .select("time_ns", "marker").collect(),
                       eager.filter(pl.col("marker") == "line").select("time_ns", "marker"))
    assert bindf.read_itt1(path, columns=["marker", "event"], output="polars").columns == \
        ["marker", "event"]
    chunks = list(bindf.read_itt1(path, chunksize=300, output="polars"))
    assert [c.height for c in chunks] == [300, 300, 300, 100]
    assert_frame_equal(pl.concat(chunks), eager)
    assert bindf.read_itt1(path, n_rows=7, output="polars").height == 7


def test_round_trip_keeps_the_header(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    bindf.write_itt1(path, events(50), {"channels": [2], "laser_period_ns": 25.0, "x": [1]})
    df = bindf.read_itt1(path)
    again = tmp_path / "b.bin"
    bindf.write_itt1(again, df)  # header inherited, derived columns ignored
    assert again.read_bytes() == path.read_bytes()


def test_writer_refuses_what_does_not_fit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="event"):
        bindf.write_itt1(tmp_path / "x.bin", {"event": [300], "time_ns": [1.0]})
    with pytest.raises(ValueError, match="missing"):
        bindf.write_itt1(tmp_path / "x.bin", {"event": [1]})


def test_dask_partitions_equal_the_eager_read(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    import bindf.dask

    path = tmp_path / "tt.bin"
    bindf.write_itt1(path, events(2000), {"channels": [0, 1, 2, 3]})
    ddf = bindf.dask.read_itt1(path, blocksize=9 * 300)
    assert ddf.npartitions > 1
    pd.testing.assert_frame_equal(ddf.compute().reset_index(drop=True),
                                  bindf.read_itt1(path), check_like=False)


def test_cli_info_counts_rows_without_decoding(tmp_path: Path, capsys) -> None:
    from bindf.cli import main

    path = tmp_path / "tt.bin"
    bindf.write_itt1(path, events(40), {"channels": [0, 1, 2, 3]})
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    info = info[0] if isinstance(info, list) else info
    assert info["format"] == "itt1" and info["rows"] == 40
    out = tmp_path / "tt.parquet"
    assert main(["convert", str(path), "-o", str(out), "-q"]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 40


@pytest.mark.parametrize("columns, fields, classified", [
    (["time_ns"], ["time_ns"], False),
    (["event"], ["event"], False),
    (["marker"], ["event"], True),
    (["time_ns", "channel"], ["event", "time_ns"], True),
])
def test_projection_copies_and_derives_only_what_is_asked(
        columns: list[str], fields: list[str], classified: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As read_spectro: a projection copies only the record fields it needs and derives
    channel/marker only when asked (every field was copied and every event classified)."""
    from bindf.formats import _fixed, spectro

    sample = Path(bindf.__file__).parent / "samples" / "time_tagger_itt1.bin"
    whole = bindf.read_itt1(sample, output="polars")
    copied: list[list[str]] = []
    derived: list[int] = []
    real_fill, real_events = _fixed.fill_records, spectro.event_columns
    monkeypatch.setattr(_fixed, "fill_records", lambda f, dtype, n, names, *a, **k: (
        copied.append(list(names)), real_fill(f, dtype, n, names, *a, **k))[1])
    monkeypatch.setattr(spectro, "event_columns", lambda events, wanted=(): (
        derived.extend({"channel", "marker"} & set(wanted)), real_events(events, wanted))[1])
    got = pl.scan_itt1(sample).select(columns).collect()
    assert_frame_equal(got, whole.select(columns))
    assert copied and all(names == fields for names in copied)
    assert bool(derived) == classified
