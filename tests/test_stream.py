"""The resumable stream core (``bindf/formats/_stream.py``): bytes fed in arbitrary
pieces, and a decoder saved and restored half-way, give exactly the rows of a whole read.

This is the contract live following of a growing file relies on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import bindf
from bindf._source import Source
from bindf.formats._apx_hits import HitColumns
from bindf.formats.apx import HITS_SCHEMA, ApxReader
from bindf.formats.apx_log import ApxLogReader
from bindf.formats.astep import write_astep
from bindf.formats.it02 import IT02Reader

DATA = Path(__file__).parent / "data"
APX_SAMPLE = DATA / "20250723_092534_data.apx"


def _pieces(data: bytes, seed: int, largest: int) -> list[bytes]:
    """``data`` cut at random places, pieces of 1 … ``largest`` bytes."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, largest + 1))
        out.append(data[i:i + n])
        i += n
    return out


def _collect_hits(results, columns, into: dict[str, list[np.ndarray]]) -> None:
    """Copy the hit columns of ``results`` (views of reused buffers) into ``into``."""
    hit_columns = HitColumns()
    for _framed, decoded in results:
        for name, values in zip(columns, hit_columns(decoded, columns), strict=True):
            into[name].append(np.array(values, copy=True))


def _apx_stream_table(path: Path, seed: int, largest: int, restore_at: int | None) -> pa.Table:
    reader = ApxReader(Source(str(path)), threads=False)
    data = path.read_bytes()[reader.data_offset:]
    stream = reader.stream(data_end=None)
    columns = HITS_SCHEMA.names
    out: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for i, piece in enumerate(_pieces(data, seed, largest)):
        if i == restore_at:  # a new decoder resumes from the saved state
            state = stream.checkpoint()
            assert state.read_position == reader.data_offset + sum(
                len(p) for p in _pieces(data, seed, largest)[:i])
            stream = reader.stream(data_end=None)
            stream.restore(state)
        _collect_hits(stream.feed(piece), columns, out)
    _collect_hits(list(stream.finish()), columns, out)
    return pa.table({name: np.concatenate(values) for name, values in out.items()})


@pytest.mark.parametrize(("seed", "largest", "restore_at"),
                         [(0, 1, None), (1, 7, 300), (2, 200, 40), (3, 70_000, 1)])
def test_apx_fed_in_pieces_equals_whole_read(seed: int, largest: int,
                                             restore_at: int | None) -> None:
    whole = bindf.read(APX_SAMPLE, output="arrow")
    got = _apx_stream_table(APX_SAMPLE, seed, largest, restore_at)
    assert got.num_rows == whole.num_rows
    for name in got.column_names:
        assert np.array_equal(got.column(name).to_numpy(), whole.column(name).to_numpy()), name


def _sparse_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    n = 3000
    counts = {f"ch{c + 1}": np.where(rng.random(n) < 0.4, 0, rng.integers(1, 99, n))
              for c in (0, 2)}
    frame = {"time_ns": (np.arange(n) + 1) * 1e3, **counts}
    path = tmp_path / "sparse.bin"
    bindf.write_it02(path, frame, {"channels": [0, 2], "bin_width_micros": 1}, layout="sparse")
    return path


@pytest.mark.parametrize(("seed", "largest", "restore_at"), [(0, 1, 1000), (1, 50, 7), (2, 4096, None)])
def test_sparse_it02_fed_in_pieces_equals_whole_read(tmp_path: Path, seed: int, largest: int,
                                                     restore_at: int | None) -> None:
    path = _sparse_file(tmp_path)
    whole = bindf.read(path, output="arrow")
    reader = IT02Reader(Source(str(path)))
    stream = reader.sparse_stream(data_end=None)
    data = path.read_bytes()[reader.data_offset:reader.end_marker_offset]
    chunks = []
    for i, piece in enumerate(_pieces(data, seed, largest)):
        if i == restore_at:
            state = stream.checkpoint()
            stream = reader.sparse_stream(data_end=None)
            stream.restore(state)
        for chunk in stream.feed(piece):
            chunks.append((chunk.time.copy(), [c.copy() for c in chunk.counts]))
    chunks.extend((c.time.copy(), [x.copy() for x in c.counts]) for c in stream.finish())
    assert len(chunks) > 1
    time = np.concatenate([t for t, _ in chunks])
    assert np.array_equal(time, whole.column("time_ns").to_numpy())
    for k, name in enumerate(whole.column_names[1:]):
        assert np.array_equal(np.concatenate([c[k] for _, c in chunks]),
                              whole.column(name).to_numpy()), name


def test_apx_log_fed_in_pieces_equals_whole_read(tmp_path: Path) -> None:
    from test_apx_log import METADATA, _apx_readouts

    readouts = _apx_readouts(APX_SAMPLE)[:200]
    text = METADATA + "".join(f"{rid}\t b'{payload.hex()}'\n" for rid, payload in readouts)
    path = tmp_path / "run.log"
    path.write_text(text)
    reader = ApxLogReader(Source(str(path)))
    whole = list(reader.iter_readouts())
    stream = reader.stream(data_end=None)
    data = path.read_bytes()[reader.data_offset:]
    runs = []
    for i, piece in enumerate(_pieces(data, 9, 300)):
        if i == 20:
            state = stream.checkpoint()
            stream = reader.stream(data_end=None)
            stream.restore(state)
        runs.extend(stream.feed(piece))
    runs.extend(stream.finish())
    assert np.array_equal(np.concatenate([r[2] for r in runs]), np.concatenate([r[2] for r in whole]))
    assert np.array_equal(np.concatenate([r[3] for r in runs]), np.concatenate([r[3] for r in whole]))
    assert bytes(np.concatenate([r[0] for r in runs])) == bytes(np.concatenate([r[0] for r in whole]))


def test_finish_reports_an_incomplete_tail(tmp_path: Path) -> None:
    reader = ApxReader(Source(str(APX_SAMPLE)), threads=False)
    data = APX_SAMPLE.read_bytes()[reader.data_offset:]
    stream = reader.stream(data_end=None)
    stream.feed(data[:-5])
    assert stream.pending > 0
    with pytest.warns(bindf.TruncatedFileWarning) as caught:
        list(stream.finish())
    assert caught[0].message.offset == stream.position


def _sample_files(tmp_path: Path) -> dict[str, tuple[Path, dict]]:
    """One file per streamable format (and layout), with read options."""
    from test_apx_log import METADATA, _apx_readouts

    files: dict[str, tuple[Path, dict]] = {"apx": (APX_SAMPLE, {}),
                                           "apx-readouts": (APX_SAMPLE, {"level": "readouts"})}
    log = tmp_path / "run.log"
    log.write_text(METADATA + "".join(f"{rid}\t b'{payload.hex()}'\n"
                                      for rid, payload in _apx_readouts(APX_SAMPLE)[:150]))
    files["apx_log"] = (log, {})
    files["apx_log-readouts"] = (log, {"level": "readouts"})
    files["it02-sparse"] = (_sparse_file(tmp_path), {})
    files["it02-dense"] = (DATA / "intensity-tracing-export-data-example.bin", {})
    files["sp01"] = (DATA / "sp01_decay_curves_example.bin", {})
    files["sp01-wide"] = (DATA / "sp01_decay_curves_example.bin", {"shape": "wide"})
    files["spf1"] = (DATA / "spf1_phasors_example.bin", {})
    apx3_run = DATA / "vinj0_th1030_20250729-185248.apx"
    files["apx3"] = (apx3_run, {})
    files["apx3-stitch"] = (apx3_run, {"stitch": True})
    files["apx3-readouts"] = (apx3_run, {"level": "readouts", "stitch": True})
    log3 = tmp_path / "run3.log"
    log3.write_text("Namespace(name='v3', chipVer=3)\n" + "".join(
        f"{rid}\t b'{payload.hex()}'\n" for rid, payload in _apx_readouts(apx3_run)[:150]))
    files["apx3_log-stitch"] = (log3, {"stitch": True})
    files["astep"] = (DATA / "quad_chip_data.bin", {})
    files["astep-v4-apx"] = (DATA / "quad_chip_data.bin", {"chip": 4, "tot_mode": "apx"})
    from conftest import write_stt1

    files["stt1"] = (write_stt1(tmp_path / "stt1.bin", n=3000), {})
    for name in ("tpl", "stamp", "raw16"):  # formats added from outside (example_formats)
        path = tmp_path / f"{name}.{'r16' if name == 'raw16' else 'bin'}"
        path.write_bytes(bindf.get_format(name).sample_bytes())
        files[name] = (path, {})
    return files


def test_every_format_streams_batches_equal_to_the_whole_read(tmp_path: Path) -> None:
    """``reader.batch_stream()``: the API live following builds on, for every format."""
    from bindf.registry import open_reader

    for name, (path, options) in _sample_files(tmp_path).items():
        whole = bindf.read(path, output="arrow", **options).replace_schema_metadata(None)
        reader = open_reader(Source(str(path)), None, **options)
        end = getattr(reader, "end_marker_offset", None) or path.stat().st_size
        data = path.read_bytes()
        for columns in (None, whole.column_names[-1:]):
            stream = reader.batch_stream(columns)
            assert stream.read_position == reader.data_offset
            batches = []
            for i, piece in enumerate(_pieces(data[reader.data_offset:end], 4, 3000)):
                if i == 3:  # resume from a saved state in a new decoder
                    state = stream.checkpoint()
                    stream = reader.batch_stream(columns)
                    stream.restore(state)
                batches.extend(stream.feed(piece))
            batches.extend(stream.finish())
            got = pa.Table.from_batches(batches, schema=batches[0].schema)
            expected = whole if columns is None else whole.select(columns)
            assert got.equals(expected), (name, columns)
            assert stream.read_position == end


def _many_units_file(tmp_path: Path, fmt: str) -> Path:
    """A file whose whole-file feed completes several decoder calls' worth of units."""
    rng = np.random.default_rng(11)
    path = tmp_path / f"many.{fmt}"
    if fmt == "apx":
        n = 40_000  # > the readouts of one kernel call
        hits = {"readout_id": np.arange(n, dtype=np.uint32),
                "timestamp": np.arange(n, dtype=np.uint64) * 1000,
                **{name: rng.integers(0, 16, n) for name in ("chip_id", "row", "column")},
                "ts_neg1": rng.integers(0, 2, n), "ts_dec1": rng.integers(0, 1 << 16, n),
                "ts_tdc1": rng.integers(0, 32, n), "ts_neg2": rng.integers(0, 2, n),
                "ts_dec2": rng.integers(0, 1 << 16, n), "ts_tdc2": rng.integers(0, 32, n)}
        bindf.write_apx(path, hits, {"readout_uid": 4000})
    else:
        n = 150_000  # > the frames of one walk
        sensor = np.empty((n, 5), dtype=np.uint8)
        sensor[:, 0] = rng.integers(0, 4, n, dtype=np.uint8) << 3 | 4
        sensor[:, 1:] = rng.integers(0, 64, (n, 4), dtype=np.uint8)
        offsets = np.arange(n + 1, dtype=np.int64) * 5
        write_astep(path, pa.table({
            "layer": rng.integers(1, 4, n, dtype=np.uint8),
            "fpga_ts": np.arange(n, dtype=np.uint64),
            "sensor": pa.Array.from_buffers(pa.large_binary(), n, [
                None, pa.py_buffer(offsets), pa.py_buffer(sensor.reshape(-1))]),
        }))
    return path


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fmt", ["apx", "astep"])
def test_one_feed_of_many_units_equals_whole_read(tmp_path: Path, fmt: str, threads: int) -> None:
    """Following reads up to 16 MiB at a time, so one feed can complete more units than
    one decoder call holds; each unit is converted before the next one reuses the
    decoder's buffers (the A-STEP walk's sensor words; the AstroPix hit scratch, when
    hits are found on one thread)."""
    path = _many_units_file(tmp_path, fmt)
    whole = bindf.read(path, output="arrow", format=fmt)
    reader = bindf.registry.get_format(fmt).reader_class()(Source(str(path)), threads=threads)
    stream = reader.batch_stream()
    data = path.read_bytes()[reader.data_offset:]
    batches = stream.feed(data) + stream.finish()
    assert len(batches) > 1
    assert pa.Table.from_batches(batches).equals(whole)


# -- prefetched(): a worker decoding ahead of the consumer --------------------------------


@pytest.mark.parametrize("ahead", [1, 2, 3, 10])
def test_prefetched_keeps_order_and_surfaces_an_error_in_its_place(ahead: int) -> None:
    from bindf.formats._stream import prefetched

    made = []

    def items():
        for i in range(6):
            made.append(i)
            if i == 4:
                raise ValueError("item 4")
            yield i

    got = []
    with pytest.raises(ValueError, match="item 4"):
        for item in prefetched(items(), ahead=ahead):
            got.append(item)
    assert got == [0, 1, 2, 3]  # every item before the error, in order
    assert made == [0, 1, 2, 3, 4]  # nothing made after it


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_prefetched_closed_early_closes_its_items(ahead: int) -> None:
    from bindf.formats._stream import prefetched

    made, closed = [], []

    def items():
        try:
            for i in range(100):
                made.append(i)
                yield i
        finally:
            closed.append(True)

    stream = prefetched(items(), ahead=ahead)
    assert next(stream) == 0
    stream.close()
    assert closed == [True]
    assert len(made) <= 1 + ahead  # the worker stayed at most `ahead` items ahead



@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_prefetched_hands_on_warnings_and_counts_with_their_items(ahead: int) -> None:
    """A step's warnings and damage counts reach the read when its item is taken: a
    consumer that stops early gets none of the steps decoded ahead of it."""
    import threading

    from bindf._warnings import WarningSink, warn
    from bindf.errors import CorruptDataWarning
    from bindf.formats._stream import prefetched

    counted: dict[str, int] = {}  # the decoder's, written by the worker only
    made = threading.Event()

    def items():
        for i in range(10):
            warn(CorruptDataWarning(f"damage in item {i}", path="f", offset=i))
            counted["damaged"] = counted.get("damaged", 0) + 1
            counted[f"kind{i % 2}"] = counted.get(f"kind{i % 2}", 0) + 2
            if i == 1 + ahead:
                made.set()  # the worker is as far ahead as it may go
            yield i

    into = {"other": 5}  # (counts the reader already had stay)
    sink = WarningSink()
    with sink.active():
        stream = prefetched(items(), ahead=ahead, counts=(lambda: counted, into))
        got = [next(stream), next(stream)]
        assert made.wait(5)
    stream.close()
    assert got == [0, 1]
    assert [w.offset for w in sink.recorded] == [0, 1]
    assert into == {"other": 5, "damaged": 2, "kind0": 2, "kind1": 2}


def test_prefetched_hands_on_the_warnings_before_an_error() -> None:
    from bindf._warnings import WarningSink, warn
    from bindf.errors import CorruptDataWarning
    from bindf.formats._stream import prefetched

    def items():
        yield 0
        warn(CorruptDataWarning("before the error", path="f", offset=7))
        raise ValueError("damage")

    sink = WarningSink()
    with sink.active(), pytest.raises(ValueError, match="damage"):
        for _ in prefetched(items(), ahead=2):
            pass
    assert [w.offset for w in sink.recorded] == [7]
