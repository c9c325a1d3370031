"""``on_error="raise" | "warn" | "skip"``, the same contract in every reader.

* ``"raise"`` (default): the first damaged record or readout is a
  :class:`~bindf.errors.CorruptDataError` naming the file and its byte offset.
* ``"warn"``: the damaged readout, line or record is dropped — exactly that one, the
  rest of the file is returned — with a :class:`~bindf.errors.CorruptDataWarning` naming
  its offset; how many were dropped, per kind, is in the metadata under ``"errors"``
  (``df.attrs["bindf"]["errors"]``, ``df.bindf.info["errors"]``, Arrow schema metadata
  ``bindf.errors``), summed over the files of a multi-file read.
* ``"skip"``: the same frame and counts, silently.
* A truncated tail is not "damage": it is a :class:`~bindf.errors.TruncatedFileWarning`
  under every policy, and is not counted.
* Formats of fixed-size records (spectroscopy, SP01, SPF1, dense IT02) have no damage a
  reader can detect inside a record: the three policies give the same frame, no counts.

Where a format cannot resynchronise, "the rest" ends at the damage, and the docstrings
say so: a sparse IT02 mask with an impossible bit breaks the record chain, so reading
stops there. After a dropped AstroPix readout or log line, the bytes of a hit cut across
the gap are not joined (the byte stream is not continuous).
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import bindf
from bindf.errors import CorruptDataError, CorruptDataWarning, TruncatedFileWarning

POLICIES = ("raise", "warn", "skip")
MARKER = b"\xfe\xdc\xba"


# -- building damaged files -------------------------------------------------------------------


def _apx_hits(n_readouts: int, seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 4, n_readouts)
    n = int(per.sum())
    hits = {name: rng.integers(0, hi, n) for name, hi in (
        ("chip_id", 4), ("row", 32), ("column", 32), ("ts_neg1", 2), ("ts_coarse1", 1 << 14),
        ("ts_fine1", 8), ("ts_tdc1", 32), ("ts_neg2", 2), ("ts_coarse2", 1 << 14),
        ("ts_fine2", 8), ("ts_tdc2", 32))}
    hits["readout_id"] = np.repeat(np.arange(n_readouts, dtype=np.uint32), per)
    hits["timestamp"] = np.repeat(np.arange(n_readouts, dtype=np.uint64) * 1000, per)
    return hits


def apx_readout_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, total size) of every readout of an undamaged ``.apx`` file."""
    pos = 10 + struct.unpack_from("<I", data, 6)[0]
    out = []
    while pos < len(data):
        size = 19 + struct.unpack_from("<I", data, pos + 15)[0]
        out.append((pos, size))
        pos += size
    return out


def apx_with_split_hit(tmp_path: Path) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """Readouts 0..4; the hit of readout 1 continues in readout 3 (2 is in between)."""
    from test_apx import IDLE2, TAIL, apx_file_bytes, hit

    h = hit(9)
    readouts = [(0, 0, IDLE2 + hit(1) + TAIL), (1, 0, IDLE2 + hit(2) + IDLE2 + h[:5]),
                (2, 0, IDLE2 + hit(3) + TAIL), (3, 0, h[5:] + IDLE2 + hit(4) + TAIL),
                (4, 0, IDLE2 + hit(5) + TAIL)]
    data = apx_file_bytes(readouts)
    path = tmp_path / "split.apx"
    path.write_bytes(data)
    return path, data, apx_readout_offsets(data)


@dataclass
class Damage:
    """One kind of damage in one format, and what every policy must give."""

    name: str
    #: (damaged file, undamaged file, offset of the first damaged record)
    make: Callable[[Path], tuple[Path, Path, int]]
    #: The undamaged frame → the frame expected under "warn"/"skip" (None: only the
    #: first ``intact_rows`` rows are known).
    expected: Callable[[pd.DataFrame], pd.DataFrame] | None
    errors: dict[str, int]
    intact_rows: int = 0
    #: Damaged records (warnings under "warn").
    n_damaged: int = 1
    options: dict[str, Any] = field(default_factory=dict)


def _apx_bad_markers(readouts: tuple[int, ...]) -> Callable[[Path], tuple[Path, Path, int]]:
    def make(tmp_path: Path) -> tuple[Path, Path, int]:
        good = tmp_path / "good.apx"
        bindf.write_apx(good, _apx_hits(30))
        data = bytearray(good.read_bytes())
        offsets = apx_readout_offsets(bytes(data))
        for k in readouts:
            data[offsets[k][0] + 1] ^= 0xFF
        bad = tmp_path / "bad.apx"
        bad.write_bytes(bytes(data))
        return bad, good, offsets[readouts[0]][0]
    return make


def _apx_skipped(readouts: tuple[int, ...]) -> dict[str, int]:
    data = _written_apx()
    offsets = apx_readout_offsets(data)
    return {"bad_readout_marker": len(readouts),
            "skipped_bytes": sum(offsets[k][1] for k in readouts)}


def _written_apx() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.apx"
        bindf.write_apx(path, _apx_hits(30))
        return path.read_bytes()


APX3_RUN = Path(__file__).parent / "data" / "vinj0_th1030_20250729-185248.apx"


def _apx3_bad_marker(k: int) -> Callable[[Path], tuple[Path, Path, int]]:
    """The real AstroPix 3 run's first 60 readouts, the marker of readout ``k`` damaged."""
    def make(tmp_path: Path) -> tuple[Path, Path, int]:
        data = APX3_RUN.read_bytes()
        offsets = apx_readout_offsets(data)
        data = bytearray(data[: offsets[60][0]])
        good = tmp_path / "good.apx"
        good.write_bytes(bytes(data))
        data[offsets[k][0] + 1] ^= 0xFF
        bad = tmp_path / "bad.apx"
        bad.write_bytes(bytes(data))
        return bad, good, offsets[k][0]
    return make


def _apx3_skipped(k: int) -> dict[str, int]:
    return {"bad_readout_marker": 1, "skipped_bytes": apx_readout_offsets(APX3_RUN.read_bytes())[k][1]}


def _without(column: str, values: set[int]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: df[~df[column].isin(values)].reset_index(drop=True)


LOG_METADATA = "Namespace(name='run1', threshold=100.0)\n"


def _log_damage(replacement: str) -> Callable[[Path], tuple[Path, Path, int]]:
    """A log of the real run's first 40 readouts, line 12 (readout 11) replaced."""
    def make(tmp_path: Path) -> tuple[Path, Path, int]:
        from test_apx_log import _apx_readouts

        readouts = _apx_readouts(Path(__file__).parent / "data" / "20250723_092534_data.apx")
        lines = [f"{rid}\t b'{payload.hex()}'\n" for rid, payload in readouts[:40]]
        good = tmp_path / "good.log"
        good.write_text(LOG_METADATA + "".join(lines))
        offset = len(LOG_METADATA) + sum(len(x) for x in lines[:11])
        lines[11] = replacement
        bad = tmp_path / "bad.log"
        bad.write_text(LOG_METADATA + "".join(lines))
        return bad, good, offset
    return make


def _real_log_readout(k: int) -> int:
    from test_apx_log import _apx_readouts

    return _apx_readouts(Path(__file__).parent / "data" / "20250723_092534_data.apx")[k][0]


def _it02_preamble(header: dict[str, Any]) -> bytes:
    text = json.dumps(header).encode()
    return b"IT02" + struct.pack("<I", len(text)) + text


def _sparse(time: float, counts: dict[int, int]) -> bytes:
    mask = sum(1 << k for k in counts)
    return struct.pack("<dB", time, mask) + b"".join(
        struct.pack("<I", counts[k]) for k in sorted(counts))


def _it02_bad_mask(tmp_path: Path) -> tuple[Path, Path, int]:
    head = _it02_preamble({"channels": [0, 1], "bin_width_micros": 1})
    records = [_sparse(1000.0 * (i + 1), {0: i + 1, 1: 2 * i}) for i in range(8)]
    good = tmp_path / "good.bin"
    good.write_bytes(head + b"".join(records) + struct.pack("<dB", 9000.0, 0))
    records[5] = struct.pack("<dB", 6000.0, 0b100) + records[5][9:]  # bit 2 of 2 channels
    bad = tmp_path / "bad.bin"
    bad.write_bytes(head + b"".join(records) + struct.pack("<dB", 9000.0, 0))
    return bad, good, len(head) + sum(len(r) for r in records[:5])


def _it02_time_not_increasing(tmp_path: Path) -> tuple[Path, Path, int]:
    head = _it02_preamble({"channels": [0], "bin_width_micros": 1})
    times = [1000.0, 2000.0, 3000.0, 4000.0, 6000.0]
    good = tmp_path / "good.bin"
    good.write_bytes(head + b"".join(_sparse(t, {0: i + 1}) for i, t in enumerate(times)))
    times[2] = 2200.0  # less than half a bin after the previous record
    bad = tmp_path / "bad.bin"
    bad.write_bytes(head + b"".join(_sparse(t, {0: i + 1}) for i, t in enumerate(times)))
    return bad, good, len(head) + 2 * 13


def _zero_bin(time: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def expected(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out.loc[out["time_ns"] == time, "ch1"] = 0
        return out
    return expected


def _it02_chain_overrun(tmp_path: Path) -> tuple[Path, Path, int]:
    """Record 5 of 30 gains a mask bit: it swallows 4 bytes of record 6, and every later
    record is read 4 bytes late (their counts' high byte, 0x01, reads as a valid mask),
    until the last one runs 4 bytes into the end marker. The marker itself still checks
    out: the 16 records before it chain onto it."""
    head = _it02_preamble({"channels": [0, 1], "bin_width_micros": 1})
    records = [_sparse(1000.0 * (i + 1), {0: 0x0100_0000 + i}) for i in range(30)]
    marker = struct.pack("<dB", 40000.0, 0)
    good = tmp_path / "good.bin"
    good.write_bytes(head + b"".join(records) + marker)
    records[5] = records[5][:8] + bytes([0b11]) + records[5][9:]
    bad = tmp_path / "bad.bin"
    bad.write_bytes(head + b"".join(records) + marker)
    return bad, good, len(head) + 29 * 13 + 4


def _fcs1_short_vector(tmp_path: Path) -> tuple[Path, Path, int]:
    """FCS1: vector 1 of pair 2 (of 3) is one value short of lag_index."""
    from bindf.formats.fcs1 import _encode

    meta = {"num_acquisitions": 2, "bin_width": 10}
    lags = [0, 2, 6, 18, 54]
    curves = [[[c, c + 1], [[0.1 * c + 0.01 * v + 0.001 * j for j in range(5)]
                            for v in range(2)]] for c in range(3)]
    good = tmp_path / "good.bin"
    good.write_bytes(_encode(meta, {"g2_correlations": curves, "lag_index": lags}))
    curves[2][1][1] = curves[2][1][1][:-1]
    bad = tmp_path / "bad.bin"
    bad.write_bytes(_encode(meta, {"g2_correlations": curves, "lag_index": lags}))
    return bad, good, 8 + len(json.dumps(meta, separators=(",", ":"))) + 4


DAMAGES = [
    # AstroPix 3 (readout_uid 3000): the same framing and resynchronisation; without
    # stitching a lost readout loses only its own hits.
    Damage("apx3-bad-marker", _apx3_bad_marker(17), _without("readout_id", {17}),
           _apx3_skipped(17)),
    Damage("apx-bad-marker", _apx_bad_markers((10,)), _without("readout_id", {10}),
           _apx_skipped((10,))),
    Damage("apx-two-bad-markers", _apx_bad_markers((3, 21)), _without("readout_id", {3, 21}),
           _apx_skipped((3, 21)), n_damaged=2),
    Damage("apx-bad-marker-readouts", _apx_bad_markers((10,)), _without("readout_id", {10}),
           _apx_skipped((10,)), options={"level": "readouts"}),
    Damage("apx_log-bad-line", _log_damage("this is not a readout\n"),
           _without("readout_id", {_real_log_readout(11)}), {"bad_log_line": 1}),
    Damage("apx_log-odd-hex", _log_damage("11\t b'e0504203062'\n"),
           _without("readout_id", {_real_log_readout(11)}), {"bad_log_line": 1}),
    Damage("apx_log-huge-readout-id", _log_damage("99999999999999999999999\t b'e0'\n"),
           _without("readout_id", {_real_log_readout(11)}), {"bad_log_line": 1}),
    Damage("apx_log-readout-id-over-u32", _log_damage("4294967296\t b'e0'\n"),
           _without("readout_id", {_real_log_readout(11)}), {"bad_log_line": 1}),
    # Damage among the first 64 records also makes layout detection fail ("cannot tell
    # dense from sparse"): sparse files with damage need layout="sparse".
    Damage("it02-bad-mask", _it02_bad_mask, lambda df: df.iloc[:5], {"bad_mask": 1},
           options={"layout": "sparse"}),
    Damage("it02-fill-gaps-time", _it02_time_not_increasing, _zero_bin(3000.0),
           {"time_not_increasing": 1}, options={"fill_gaps": True}),
    # The damage shows only where the chain misses the marker: the rows read before are
    # returned as they came (the first 5 are intact), none is dropped.
    Damage("it02-chain-overruns-end-marker", _it02_chain_overrun, None,
           {"chain_overruns_end_marker": 1}, intact_rows=5, options={"layout": "sparse"}),
    # The data JSON has no record boundaries: the offset is that of the data block.
    Damage("fcs1-short-vector", _fcs1_short_vector,
           lambda df: df[~((df.pair_index == 2) & (df.vector_index == 1))]
           .reset_index(drop=True), {"bad_vector": 1}),
]


def _read(path: Path, policy: str, **options: Any) -> tuple[Any, list[Warning]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = bindf.read(path, on_error=policy, **options)
    return frame, [w.message for w in caught]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.name)
def test_policy(damage: Damage, policy: str, tmp_path: Path) -> None:
    bad, good, offset = damage.make(tmp_path)
    if policy == "raise":
        with pytest.raises(CorruptDataError) as info:
            bindf.read(bad, **damage.options)
        assert (info.value.path, info.value.offset) == (str(bad), offset)
        return
    df, caught = _read(bad, policy, **damage.options)
    complete = bindf.read(good, **damage.options)
    if damage.expected is None:
        pd.testing.assert_frame_equal(df.iloc[: damage.intact_rows],
                                      complete.iloc[: damage.intact_rows])
    else:
        pd.testing.assert_frame_equal(df, damage.expected(complete))
    assert df.attrs["bindf"]["errors"] == damage.errors
    if policy == "skip":
        assert caught == []
    else:
        assert all(isinstance(w, CorruptDataWarning) for w in caught), caught
        assert len(caught) == damage.n_damaged
        assert caught[0].offset == offset and caught[0].path == str(bad)


@pytest.mark.parametrize("output", ["polars", "arrow"])
def test_counts_reach_every_output(output: str, tmp_path: Path) -> None:
    bad, _, _ = _apx_bad_markers((3, 21))(tmp_path)
    frame, _ = _read(bad, "skip", output=output)
    expected = _apx_skipped((3, 21))
    if output == "polars":
        assert frame.bindf.info["errors"] == expected
    else:
        assert json.loads(frame.schema.metadata[b"bindf.errors"]) == expected


def test_streams_give_their_counts_when_they_end(tmp_path: Path) -> None:
    # a stream's schema goes out before any row is decoded: the counts come after
    bad, _, _ = _apx_bad_markers((3, 21))(tmp_path)
    expected = _apx_skipped((3, 21))
    with bindf.open(bad, on_error="skip", batch_size=50) as f:
        assert f.errors == {}
        assert b"bindf.errors" not in pa.table(f).schema.metadata
        assert f.errors == expected
        f.errors = {}
        list(f.iter_batches())
        assert f.errors == expected
        f.errors = {}
        assert f.to_batch_reader(pa.schema([("row", pa.int64())])).read_all().num_rows
        assert f.errors == expected
        f.errors = {}
        f.to_polars()
        assert f.errors == expected
    lf = bindf.scan_apx(bad, on_error="skip")
    assert "errors" not in lf.bindf.info
    assert lf.collect().height == len(_read(bad, "skip")[0])
    assert lf.bindf.info["errors"] == expected


@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_chunked_reads_keep_their_info_through_concat_and_count_at_the_end(
        output: str, tmp_path: Path) -> None:
    """Every chunk carries the same info, so ``pd.concat`` keeps the header (pandas drops
    attrs that differ, and a running damage count made them differ once damage was
    met); the count is the reader's, final after the last chunk."""
    bad, _, _ = _apx_bad_markers((3, 21))(tmp_path)
    whole = bindf.read(bad, on_error="skip")
    reader = bindf.read(bad, on_error="skip", chunksize=len(whole) // 5, output=output)
    assert reader.errors == {}
    chunks = list(reader)
    assert len(chunks) > 3 and reader.errors == _apx_skipped((3, 21))
    info = {key: value for key, value in whole.attrs["bindf"].items() if key != "errors"}
    if output == "pandas":
        joined = pd.concat(chunks)
        pd.testing.assert_frame_equal(joined, whole)
        assert joined.attrs == {"bindf": info}
        with pytest.raises(TypeError, match="change a copy"):  # no chunk changes another's
            chunks[0].attrs["bindf"]["header"]["mine"] = 1
        assert "mine" not in chunks[1].attrs["bindf"]["header"]
    else:
        assert all(chunk.bindf.info == info for chunk in chunks)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_stream_hands_out_the_rows_before_the_damage_then_raises(
        threads: int, tmp_path: Path) -> None:
    """Under "raise", a chunked read delivers every row before the damage, then raises:
    the rows a small file's group had gathered, or a file decoded whole on the pool had
    made, were dropped with the error (the A-STEP page promises the frames before it;
    an AstroPix chunked read gave none of the 387 hits before a bad marker)."""
    bad_apx, good_apx, offset = _apx_bad_markers((10,))(tmp_path)
    hits = bindf.read(good_apx, output="arrow")
    astep_run = Path(__file__).parent / "data" / "quad_chip_data.bin"
    frames = bindf.read(astep_run, format="astep", output="arrow")
    cut = frames["byte_offset"][9].as_py()
    data = astep_run.read_bytes()
    bad_astep = tmp_path / "bad_astep.bin"
    bad_astep.write_bytes(data[:cut] + b"\0\0" + data[cut:])
    (tmp_path / "runs").mkdir()
    for name in ("a.bin", "b.bin"):
        (tmp_path / "runs" / name).write_bytes(data)
    (tmp_path / "runs" / "c.bin").write_bytes(bad_astep.read_bytes())
    first_ten = hits.filter(pc.less(hits["readout_id"], 10))
    # a text log whose 41st line is damaged (its lines were parsed as one unit)
    run = (Path(bindf.__file__).parent / "samples" / "astropix_threshold_scan.apx").read_bytes()
    pos, lines = 10 + struct.unpack_from("<I", run, 6)[0], []
    while pos < len(run):
        _, readout, _, n = struct.unpack_from("<3sIQI", run, pos)
        lines.append(f"{readout}\t b'{run[pos + 19:pos + 19 + n].hex()}'\n")
        pos += 19 + n
    head = "Namespace(name='r')\n"
    (tmp_path / "bad.log").write_text(head + "".join(lines[:40]) + "17\t b'zz'\n"
                                      + "".join(lines[41:]))
    (tmp_path / "before.log").write_text(head + "".join(lines[:40]))
    log_before = bindf.read(tmp_path / "before.log", output="arrow")
    log_damage = len(head) + sum(map(len, lines[:40]))
    cases = [  # source, its format, the rows before its damage, the damage's offset
        (tmp_path / "bad.log", "apx_log", log_before, log_damage),
        (bad_apx, "apx", first_ten, offset),
        (bad_astep, "astep", frames.slice(0, 9), cut),
        (str(tmp_path / "runs" / "*.bin"), "astep",
         pa.concat_tables([frames, frames, frames.slice(0, 9)]), cut),
    ]
    for source, fmt, before, at in cases:
        for chunksize in (1, 7, 10**6):
            chunks = []
            with pytest.raises(CorruptDataError) as info:
                for chunk in bindf.read(source, format=fmt, chunksize=chunksize,
                                        threads=threads, output="arrow"):
                    chunks.append(chunk)
            assert info.value.offset == at
            got = pa.concat_tables(chunks).replace_schema_metadata()
            assert got.equals(before.replace_schema_metadata()), (source, chunksize)
            # chunksize rows each, but the one that met the damage (then the error)
            assert all(c.num_rows == chunksize for c in chunks[:-1])


def test_get_chunk_hands_out_the_rows_before_the_damage_read_raises_at_once(
        tmp_path: Path) -> None:
    """``get_chunk`` (which a loop calls again) ends at the damage and the next call
    raises; ``read()`` asks for the rows in one call, so it raises at once (a frame cut
    short at the damage would pass for all of them)."""
    bad, good, offset = _apx_bad_markers((10,))(tmp_path)
    before = bindf.read(good, output="arrow").filter(
        pc.less(bindf.read(good, output="arrow")["readout_id"], 10))
    reader = bindf.read(bad, chunksize=5, output="arrow")
    got = [reader.get_chunk(before.num_rows - 3), reader.get_chunk(100)]
    assert [c.num_rows for c in got] == [before.num_rows - 3, 3]
    assert pa.concat_tables(got).replace_schema_metadata().equals(
        before.replace_schema_metadata())
    with pytest.raises(CorruptDataError) as info:
        reader.get_chunk(100)
    assert info.value.offset == offset
    with pytest.raises(StopIteration):  # (the read has ended)
        reader.get_chunk(100)
    for nrows in (None, 10**6):
        reader = bindf.read(bad, chunksize=5, output="arrow")
        assert reader.read(3).num_rows == 3
        with pytest.raises(CorruptDataError):
            reader.read(nrows)


def test_a_chunked_read_of_no_rows_gives_one_empty_chunk(tmp_path: Path) -> None:
    """As pandas' chunked readers (read_csv of a header-only file): one empty chunk with
    the columns, so that pd.concat(chunks) equals the whole read (it got no chunk:
    "No objects to concatenate")."""
    bindf.write_apx(tmp_path / "good.apx", _apx_hits(30))
    full = bindf.read(tmp_path / "good.apx")
    empty = tmp_path / "empty.apx"
    bindf.write_apx(empty, full.iloc[:0], full.attrs["bindf"]["header"])
    for source, kwargs in ((empty, {}), (tmp_path / "good.apx", {"n_rows": 0})):
        whole = bindf.read(source, **kwargs)
        chunks = list(bindf.read(source, chunksize=10, **kwargs))
        assert len(chunks) == 1
        pd.testing.assert_frame_equal(pd.concat(chunks), whole)
        polars_chunks = list(bindf.read(source, chunksize=10, output="polars", **kwargs))
        assert [c.shape for c in polars_chunks] == [(0, whole.shape[1])]
    # but none from a reader closed before its first chunk, or after its read failed
    with bindf.read(empty, chunksize=10) as reader:
        pass
    assert list(reader) == []
    data = bytearray((tmp_path / "good.apx").read_bytes())
    offset = apx_readout_offsets(bytes(data))[0][0]
    data[offset + 1] ^= 0xFF  # the first readout's marker
    (tmp_path / "bad.apx").write_bytes(bytes(data))
    reader = bindf.read(tmp_path / "bad.apx", chunksize=10)
    with pytest.raises(CorruptDataError):
        next(reader)
    assert list(reader) == []


def test_counts_add_up_over_files(tmp_path: Path) -> None:
    bad, _, _ = _apx_bad_markers((10,))(tmp_path)
    second = tmp_path / "second.apx"
    second.write_bytes(bad.read_bytes())
    df, caught = _read([bad, second], "warn")
    assert df.attrs["bindf"]["errors"] == {k: 2 * v for k, v in _apx_skipped((10,)).items()}
    assert [w.path for w in caught] == [str(bad), str(second)]


@pytest.mark.parametrize("threads", [1, 2])
def test_counts_of_the_file_where_n_rows_ends(tmp_path: Path, threads: int) -> None:
    """A read that ``n_rows`` ends inside a later file stops there; the damage its reader
    found on the way (warned of) is counted too. The sequential read lost those counts:
    they were taken once the file's batches were done, which a read that stops inside
    them never reaches."""
    bad, good, _ = _apx_bad_markers((3,))(tmp_path)
    rows = bindf.read(good, output="arrow").num_rows
    df, caught = _read([good, bad], "warn", n_rows=2 * rows - 40, threads=threads)
    assert len(df) == 2 * rows - 40 and [w.path for w in caught] == [str(bad)]
    assert df.attrs["bindf"]["errors"] == _apx_skipped((3,))


@pytest.mark.parametrize("policy", ["warn", "skip"])
def test_no_hit_is_joined_across_a_dropped_readout(policy: str, tmp_path: Path) -> None:
    """Readout 1 ends with the first 5 bytes of a hit, readout 3 starts with the other
    3; readout 2 in between is damaged. Dropped, it must not let the halves join:
    they were not consecutive in the chip's byte stream."""
    path, data, offsets = apx_with_split_hit(tmp_path)
    complete = bindf.read_apx(path, level="readouts")
    assert complete["orphans_unused"][3]  # undamaged: readout 2 replaced the carried bytes
    damaged = bytearray(data)
    damaged[offsets[2][0]] = 0
    path.write_bytes(bytes(damaged))
    readouts, _ = _read(path, policy, level="readouts")
    assert readouts["readout_id"].tolist() == [0, 1, 3, 4]
    assert readouts["orphans_unused"].tolist() == [False, False, True, False]
    hits, _ = _read(path, policy)
    assert hits["readout_id"].tolist() == [0, 1, 3, 4]


@pytest.mark.parametrize("policy", ["warn", "skip"])
def test_no_hit_is_joined_across_a_dropped_log_line(policy: str, tmp_path: Path) -> None:
    """The same for text logs: the line between the two halves is malformed."""
    path, data, offsets = apx_with_split_hit(tmp_path)
    payloads = [data[o + 19 : o + s] for o, s in offsets]
    lines = [f"{i}\t b'{p.hex()}'\n" for i, p in enumerate(payloads)]
    lines[2] = "2\t b'not hex'\n"
    log = tmp_path / "split.log"
    log.write_text(LOG_METADATA + "".join(lines))
    readouts, _ = _read(log, policy, level="readouts")
    assert readouts["readout_id"].tolist() == [0, 1, 3, 4]
    assert readouts["orphans_unused"].tolist() == [False, False, True, False]
    assert readouts.attrs["bindf"]["errors"] == {"bad_log_line": 1}
    # Whole, the log joins the halves where the file has them next to each other.
    lines.pop(2)
    log.write_text(LOG_METADATA + "".join(lines))
    joined = bindf.read_apx_log(log, level="readouts")
    assert joined["orphans_matched"].tolist() == [False, False, True, False]


FIXED = {
    "stt1": lambda p: _write_stt1(p),
    "sp01": lambda p: p.write_bytes((Path(__file__).parent / "data" /
                                     "sp01_decay_curves_example.bin").read_bytes()),
    "spf1": lambda p: p.write_bytes((Path(__file__).parent / "data" /
                                     "spf1_phasors_example.bin").read_bytes()),
    "itt1": lambda p: bindf.write_itt1(p, {"event": np.arange(400) % 4,
                                           "time_ns": np.arange(400) * 10.0}),
    "it01": lambda p: p.write_bytes((Path(__file__).parent / "data" /
                                     "it01_intensity-tracing-first1000.bin").read_bytes()),
    "it02-dense": lambda p: p.write_bytes((Path(__file__).parent / "data" /
                                           "intensity-tracing-export-data-example.bin")
                                          .read_bytes()),
}


def _write_stt1(path: Path) -> None:
    from conftest import write_stt1

    write_stt1(path, n=500)


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_size_formats_ignore_the_policy(name: str, tmp_path: Path) -> None:
    """Changed bytes inside fixed-size records are undetectable: every policy returns
    the same frame, counts nothing, and warns about the cut tail alike."""
    path = tmp_path / "fixed.bin"
    FIXED[name](path)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    start = 8 + struct.unpack_from("<I", data, 4)[0]
    for pos in rng.integers(start, len(data), 20):
        data[pos] ^= 0x5A
    path.write_bytes(bytes(data[:-3]))
    frames = []
    for policy in POLICIES:
        df, caught = _read(path, policy)
        assert [type(w) for w in caught] == [TruncatedFileWarning]
        assert "errors" not in df.attrs["bindf"]
        frames.append(df)
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])


def test_truncation_is_not_counted_as_damage(tmp_path: Path) -> None:
    bad, _, _ = _apx_bad_markers((10,))(tmp_path)
    bad.write_bytes(bad.read_bytes()[:-5])
    for policy in ("warn", "skip"):
        df, caught = _read(bad, policy)
        assert sum(isinstance(w, TruncatedFileWarning) for w in caught) == 1
        assert df.attrs["bindf"]["errors"] == _apx_skipped((10,))


def test_unknown_policy_is_refused(tmp_path: Path) -> None:
    bad, _, _ = _apx_bad_markers((10,))(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        bindf.read(bad, on_error="ignore")


#: Where each built-in format's on_error behaviour is tested above (hand-written cases).
_HAND_WRITTEN = {"apx": "DAMAGES", "apx_log": "DAMAGES", "it02": "DAMAGES + FIXED",
                 "spectro": "FIXED (stt1)", "sp01": "FIXED", "spf1": "FIXED",
                 "itt1": "FIXED", "it01": "FIXED", "fcs1": "DAMAGES + test_fcs1.py"}


def test_every_registered_format_is_in_the_on_error_sweep(tmp_path: Path) -> None:
    """Every registered format (plugins and run-time registrations included) takes the
    three policies: formats with hand-written damage cases are listed above; every other
    one is checked here on its registry sample, cut inside its last record."""
    for spec in bindf.list_formats():
        if not spec.public or spec.name in _HAND_WRITTEN:
            continue
        sample = spec.sample_bytes()
        assert sample is not None, f"format {spec.name!r} has no sample for the sweep"
        suffix = spec.extensions[0] if spec.extensions else ".bin"
        path = tmp_path / f"{spec.name}{suffix}"
        path.write_bytes(sample[:-3])
        frames = []
        for policy in POLICIES:
            df, caught = _read(path, policy)
            assert [type(w) for w in caught] == [TruncatedFileWarning], spec.name
            assert "errors" not in df.attrs["bindf"]
            frames.append(df)
        pd.testing.assert_frame_equal(frames[0], frames[1])
        pd.testing.assert_frame_equal(frames[0], frames[2])
