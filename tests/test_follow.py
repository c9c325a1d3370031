"""``bindf.follow``: frames of a file while another process writes it.

The writer and the follower run in separate processes (as an instrument and an analysis
would): the writer appends a finished file's bytes in random pieces, from 1 byte up,
cutting the header, records and readouts, with random pauses; the follower must yield
more than one frame, stop by itself, and its frames put together must equal
``bindf.read`` of the finished file.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

import bindf

TESTS = Path(__file__).parent
DATA = TESTS / "data"
APX_SAMPLE = DATA / "20250723_092534_data.apx"

#: The writer process: appends the bytes of ``source`` to ``target`` in random pieces.
WRITER = textwrap.dedent("""
    import os, random, sys, time
    source, target, seed, largest, pause, ready = sys.argv[1:7]
    rng = random.Random(int(seed))
    data = open(source, "rb").read()
    while not os.path.exists(ready):  # the follower is running (and waits for the file)
        time.sleep(0.01)
    time.sleep(0.1)
    with open(target, "wb", buffering=0) as f:
        i = 0
        while i < len(data):
            n = rng.randint(1, int(largest)) if rng.random() < 0.8 else rng.randint(1, 8)
            f.write(data[i:i + n])
            i += n
            if rng.random() < 0.3:
                time.sleep(rng.random() * float(pause))
""")

#: The follower process: follows ``path`` and writes every frame (Arrow IPC), the number
#: of frames and the last frame's bindf info.
FOLLOWER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[5])
    import example_formats
    example_formats.install()
    import pyarrow as pa, pyarrow.ipc as ipc
    import bindf
    from bindf._frames import info_of
    path, out, idle, options = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
    follower = bindf.follow(path, poll_interval=0.02, idle_timeout=idle, output="arrow",
                            **options)
    open(out + ".ready", "w").close()
    frames = list(follower)
    table = pa.concat_tables(f.replace_schema_metadata(None) for f in frames)
    with ipc.new_file(out, table.schema) as w:
        w.write_table(table)
    json.dump({"frames": len(frames), "rows": [f.num_rows for f in frames],
               "info": info_of(frames[-1]),
               "first_info": info_of(frames[0])}, open(out + ".json", "w"))
""")


def _apx_noisy(path: Path) -> Path:
    """The real AstroPix run's readouts with noisy ones (cut hits, junk) among them."""
    from test_apx import apx_file_bytes, noisy_payloads
    from test_apx_log import _apx_readouts

    rng = random.Random(3)
    real = _apx_readouts(APX_SAMPLE)[:400]
    noisy = noisy_payloads(rng, 200)
    readouts = []
    for k, (rid, payload) in enumerate(real):
        readouts.append((rid, 1000 * k, payload))
        if k < len(noisy):
            readouts.append((rid, 1000 * k + 1, noisy[k]))
    path.write_bytes(apx_file_bytes(readouts))
    return path


def _sparse_it02(path: Path, n: int = 20_000) -> Path:
    """Sparse IT02 with its end marker; every bin has a count (as the instrument writes
    them: a bin without photons is not written)."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 40, n)
    b = np.where(a == 0, rng.integers(1, 40, n), np.where(rng.random(n) < 0.5, 0, a + 1))
    frame = {"time_ns": (np.arange(n) + 1) * 1e3, "ch1": a, "ch3": b}
    bindf.write_it02(path, frame, {"channels": [0, 2], "bin_width_micros": 1}, layout="sparse")
    return path


def _stamp(path: Path, n: int = 20_000) -> Path:
    """The test plugin's fixed-record format (``tests/example_formats.py``)."""
    rng = np.random.default_rng(8)
    records = np.zeros(n, dtype=[("t", "<u8"), ("value", "<i4")])
    records["t"] = np.cumsum(rng.integers(1, 100, n))
    records["value"] = rng.integers(-1000, 1000, n)
    path.write_bytes(b"STMP" + struct.pack("<II", 4, 0) + records.tobytes())
    return path


def _sources(tmp_path: Path) -> dict[str, Path]:
    from conftest import write_stt1

    src = tmp_path / "src"
    src.mkdir()
    return {"apx": _apx_noisy(src / "run.apx"), "it02": _sparse_it02(src / "sparse.bin"),
            "stt1": write_stt1(src / "stt1.bin", n=20_000),
            "stamp": _stamp(src / "run.stmp")}


def _start(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", *args], env=env, **kwargs)


def _follow_in_process(path: Path, out: Path, idle: float, options: dict) -> subprocess.Popen:
    return _start([FOLLOWER, str(path), str(out), str(idle), json.dumps(options), str(TESTS)],
                  stderr=subprocess.PIPE)


def _expected(source: Path, **options) -> pa.Table:
    return bindf.read(source, output="arrow", **options).replace_schema_metadata(None)


@pytest.mark.parametrize("name", ["apx", "it02", "stt1", "stamp"])
def test_follower_equals_read_of_finished_file(tmp_path: Path, name: str) -> None:
    source = _sources(tmp_path)[name]
    target = tmp_path / source.name
    out = tmp_path / "frames.arrow"
    # The follower starts first: it waits for the file, then for its header.
    # IT02 must stop at its end marker; the others stop after ``idle`` seconds without
    # growth, which must outlast any stall of the writer on a loaded machine (1.5 s
    # did not, once).
    idle = 60.0 if name == "it02" else 3.0
    follower = _follow_in_process(target, out, idle, {})
    largest = max(source.stat().st_size // 25, 2)
    writer = _start([WRITER, str(source), str(target), "7", str(largest), "0.06",
                     str(out) + ".ready"])
    assert writer.wait(timeout=120) == 0
    started = time.monotonic()
    _, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err.decode()
    if name == "it02":  # ended by its end marker, long before idle_timeout
        assert time.monotonic() - started < 10
    got = ipc.open_file(out).read_all()
    meta = json.loads(Path(str(out) + ".json").read_text())
    assert meta["frames"] > 1
    assert got.equals(_expected(source)), name
    assert meta["info"]["header"] == bindf.read_header(source)
    if name == "it02":
        assert meta["info"]["header"]["acquisition_end_ns"] is not None
        assert meta["first_info"]["header"]["acquisition_end_ns"] is None


def test_it02_zero_bin_followed_by_more_data_is_a_row(tmp_path: Path) -> None:
    """A mask-0 record at the end of the file for a moment, that more records follow
    before the next poll, is an ordinary bin (as in ``read``), not the end marker."""
    header = _sparse_it02(tmp_path / "h.bin", n=10).read_bytes()
    header = header[:bindf.registry.open_reader(
        bindf._source.Source(str(tmp_path / "h.bin"))).data_offset]
    n = 10_000
    records = np.zeros(n, dtype=[("t", "<f8"), ("mask", "u1"), ("a", "<u4"), ("b", "<u4")])
    records["t"] = (np.arange(n) + 1) * 1e3
    records["mask"], records["a"], records["b"] = 3, 1, 2
    body = records.tobytes()
    later = records.copy()
    later["t"] += (n + 1) * 1e3
    marker = struct.pack("<dB", (2 * n + 2) * 1e3, 0)
    zero_bin = struct.pack("<dB", (n + 1) * 1e3, 0)
    source = tmp_path / "zero.bin"
    source.write_bytes(header + body + zero_bin + later.tobytes() + marker)
    whole = _expected(source)
    assert whole.num_rows == 2 * n + 1 and whole.column("ch1")[n].as_py() == 0
    target = tmp_path / "growing.bin"
    target.write_bytes(header + body + zero_bin)

    def append_rest() -> None:  # after the first poll saw the zero bin at the end
        time.sleep(0.25)
        with open(target, "ab") as f:
            f.write(later.tobytes() + marker)

    thread = threading.Thread(target=append_rest)
    thread.start()
    with bindf.follow(target, poll_interval=0.6, idle_timeout=10, output="arrow") as follower:
        frames = [f.replace_schema_metadata(None) for f in follower]
    thread.join()
    assert follower.ended_by == "end_marker"
    assert pa.concat_tables(frames).equals(whole)


def _written_in_two_steps(target: Path, data: bytes, first: int,
                          **follow_options) -> tuple[list[pa.Table], str]:
    """Follow ``target`` while ``data[:first]`` is on disk for a few polls, then the rest."""
    target.write_bytes(data[:first])

    def append_rest() -> None:
        time.sleep(0.3)
        with open(target, "ab") as f:
            f.write(data[first:])

    thread = threading.Thread(target=append_rest)
    thread.start()
    try:
        with bindf.follow(target, poll_interval=0.03, idle_timeout=1.0, output="arrow",
                          **follow_options) as follower:
            frames = [f.replace_schema_metadata(None) for f in follower]
    finally:
        thread.join()
    return frames, follower.ended_by


@pytest.mark.parametrize("first", [0, 1, 2, 3])
def test_stt1_seen_with_part_of_its_magic_is_not_read_as_legacy(tmp_path: Path,
                                                               first: int) -> None:
    """A spectroscopy file that holds part of the STT1 magic when first polled: the
    container is decided once 4 bytes exist (the whole file was decoded as legacy
    records, header included: 189 rows instead of 182, no error)."""
    data = (Path(bindf.__file__).parent / "samples" / "photon_events_stt1.bin").read_bytes()
    source = tmp_path / "whole.bin"
    source.write_bytes(data)
    frames, _ = _written_in_two_steps(tmp_path / "growing.bin", data, first, format="spectro")
    assert pa.concat_tables(frames).equals(_expected(source, format="spectro"))


def test_undecidable_it02_layout_raises_as_read_does(tmp_path: Path) -> None:
    """Records that fit neither IT02 layout, written after the header: following ends
    with the CorruptDataError that reading the file raises (it ended silently, idle,
    with no row)."""
    sample = (Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin").read_bytes()
    header_end = 8 + struct.unpack_from("<I", sample, 4)[0]
    cut = header_end + 8 * 20 + 9
    data = sample[:cut] + b"\x79\x42\xfd\xb3" + sample[cut:]  # 4 stray bytes in record 8
    (tmp_path / "whole.bin").write_bytes(data)
    with pytest.raises(bindf.CorruptDataError, match="cannot tell") as read_error:
        bindf.read(tmp_path / "whole.bin", format="it02")
    with pytest.raises(bindf.CorruptDataError, match="cannot tell") as follow_error:
        _written_in_two_steps(tmp_path / "growing.bin", data, header_end, format="it02")
    assert follow_error.value.offset == read_error.value.offset


def test_never_created_file_raises_after_idle_timeout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="did not appear"):
        list(bindf.follow(tmp_path / "nothing.apx", poll_interval=0.02, idle_timeout=0.2))



def test_idle_timeout_zero_reads_every_file_already_there(tmp_path: Path) -> None:
    """``follow(glob, idle_timeout=0)``: read what is there and stop. The idle end came
    right after the first file's rows, and the later files, already complete, were never
    read (ended_by "idle", no warning)."""
    sample = Path(bindf.__file__).parent / "samples" / "photon_events_stt1.bin"
    for i in range(3):
        (tmp_path / f"r{i}.bin").write_bytes(sample.read_bytes())
    follower = bindf.follow(str(tmp_path / "r*.bin"), idle_timeout=0,
                            include_file_paths="file")
    frames = pd.concat(follower)
    assert frames["file"].unique().tolist() == [str(tmp_path / f"r{i}.bin") for i in range(3)]
    assert len(frames) == 3 * len(bindf.read(sample)) and follower.ended_by == "idle"


@pytest.mark.parametrize("source", [b"STT1", bytearray(b"STT1"), "bytesio", ["list"]])
def test_follow_refuses_data_that_is_not_a_path(tmp_path: Path, source: object) -> None:
    """A buffer or a file object has no file to poll: bytes were iterated as a list of
    ints ("expected str … not int"), a BytesIO failed inside os.fspath."""
    import io

    if source == "bytesio":
        source = io.BytesIO(b"STT1")
    elif source == ["list"]:
        source = [tmp_path / "a.bin", io.BytesIO(b"STT1")]
    with pytest.raises(TypeError, match="polls files on disk, named by their paths"):
        bindf.follow(source)  # type: ignore[arg-type]

def test_incomplete_header_raises_after_idle_timeout(tmp_path: Path) -> None:
    path = tmp_path / "cut.apx"
    path.write_bytes(APX_SAMPLE.read_bytes()[:10])
    with pytest.raises(bindf.BindfError):
        list(bindf.follow(path, poll_interval=0.02, idle_timeout=0.2))


def test_cut_header_waits_and_damaged_header_raises_at_once(tmp_path: Path) -> None:
    """A header still being written is waited for (a TruncatedHeaderError only when
    idle_timeout passes); a complete header that is not JSON cannot be mended by more
    bytes, so it raises at once, not after idle_timeout."""
    data = APX_SAMPLE.read_bytes()
    cut = tmp_path / "cut.apx"
    cut.write_bytes(data[:100])
    started = time.monotonic()
    with pytest.raises(bindf.TruncatedHeaderError, match="declares 1357 bytes") as info:
        list(bindf.follow(cut, poll_interval=0.02, idle_timeout=0.5))
    assert time.monotonic() - started >= 0.5 and info.value.offset == 6
    damaged = tmp_path / "damaged.apx"
    damaged.write_bytes(data[:20] + b"\x00" + data[21:])
    started = time.monotonic()
    with pytest.raises(bindf.HeaderError, match="not valid JSON") as info:
        list(bindf.follow(damaged, poll_interval=0.02, idle_timeout=30))
    assert time.monotonic() - started < 10
    assert not isinstance(info.value, bindf.TruncatedHeaderError)
    assert (info.value.path, info.value.offset) == (str(damaged), 20)


def test_shrink_warns_and_stops(tmp_path: Path) -> None:
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=1000)
    follower = bindf.follow(path, poll_interval=0.02, idle_timeout=5, output="arrow")
    first = next(follower)
    assert first.num_rows == 1000
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 170)
    with pytest.warns(bindf.FileChangedWarning, match="shrank") as caught:
        rest = list(follower)
    assert rest == [] and follower.ended_by == "changed"
    assert caught[0].message.offset == size
    assert first.num_rows == 1000  # what was yielded stays


def test_replaced_file_warns_and_stops(tmp_path: Path) -> None:
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=1000)
    follower = bindf.follow(path, poll_interval=0.02, idle_timeout=5, output="arrow")
    assert next(follower).num_rows == 1000
    other = write_stt1(tmp_path / "other.bin", n=2000)
    os.replace(other, path)
    with pytest.warns(bindf.FileChangedWarning, match="replaced"):
        assert list(follower) == []


def test_a_new_run_written_in_place_warns_and_stops(tmp_path: Path) -> None:
    """A new run started under the same name within one poll (``open(path, "wb")``: the
    same inode, and a size that never shrank at a poll) is not read as more of the old
    one (its record 1000 came out as run 1's row 1000): it no longer holds the bytes
    read, and the follow stops with a FileChangedWarning, keeping what it yielded."""
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=1000, seed=1)
    follower = bindf.follow(path, poll_interval=0.02, idle_timeout=5, output="arrow")
    assert next(follower).num_rows == 1000
    new_run = write_stt1(tmp_path / "new.bin", n=3000, seed=2).read_bytes()
    with open(path, "wb") as f:
        f.write(new_run)
    with pytest.warns(bindf.FileChangedWarning, match="rewritten from its start") as caught:
        assert list(follower) == []
    assert follower.ended_by == "changed"
    assert str(caught[0].message).count(str(path)) == 1  # named once


@pytest.mark.parametrize("case", ["stt1", "sp01", "spf1", "it01"])
def test_start_end_on_a_file_cut_inside_a_record(tmp_path: Path, case: str) -> None:
    """``start="end"`` on a fixed-record file that ends inside a record (a buffered
    writer's state) starts at the next record boundary, past the end: that is no shrink
    (it stopped at once with a bogus "shrank" warning and no rows)."""
    import warnings

    sample = {"stt1": "photon_events_stt1.bin", "sp01": "decay_curves_sp01.bin",
              "spf1": "phasors_spf1.bin", "it01": "intensity_tracing_it01.bin"}[case]
    from importlib import resources

    from bindf._source import Source
    from bindf.registry import open_reader

    source = resources.files("bindf") / "samples" / sample
    data = source.read_bytes()
    path = tmp_path / sample
    reader = open_reader(Source(str(source)), None)
    whole = _expected(Path(str(source)))
    records = (len(data) - reader.data_offset) // reader.record_size
    cut = reader.data_offset + records // 2 * reader.record_size + 3  # inside a record
    path.write_bytes(data[:cut])
    with warnings.catch_warnings():
        warnings.simplefilter("error", bindf.FileChangedWarning)
        with bindf.follow(path, poll_interval=0.02, idle_timeout=0.4, output="arrow",
                          start="end") as follower:
            threading.Timer(0.15, lambda: path.open("ab").write(data[cut:])).start()
            frames = [f.replace_schema_metadata(None) for f in follower]
    assert follower.ended_by == "idle"
    got = pa.concat_tables(frames) if frames else whole.slice(0, 0)
    assert 0 < got.num_rows < whole.num_rows
    assert got.equals(whole.slice(whole.num_rows - got.num_rows))


def test_start_end_yields_only_records_written_afterwards(tmp_path: Path) -> None:
    """``start="end"``: rows begin at the first record that starts at or after the size
    the file had; a record cut there is skipped, for fixed and chained records alike."""
    sources = _sources(tmp_path)
    for name in ("stt1", "apx", "it02"):
        source = sources[name]
        whole = _expected(source)
        data = source.read_bytes()
        reader_offset = bindf.registry.open_reader(bindf._source.Source(str(source))).data_offset
        target = tmp_path / f"end-{source.name}"
        cut = reader_offset + (len(data) - reader_offset) // 2 + 3
        target.write_bytes(data[:cut])
        with bindf.follow(target, poll_interval=0.02, idle_timeout=0.5, output="arrow",
                          start="end") as follower:
            with open(target, "ab") as f:
                f.write(data[cut:])
            got = pa.concat_tables(f.replace_schema_metadata(None) for f in follower)
        assert 0 < got.num_rows < whole.num_rows, name
        # The rows are exactly the last rows of the whole read.
        assert got.equals(whole.slice(whole.num_rows - got.num_rows)), name
        # and they start at a record boundary after the cut: a fresh read of the bytes
        # before the first yielded record has the other rows.
        assert whole.num_rows - got.num_rows >= 1


@pytest.mark.parametrize("case", ["apx", "apx3", "log", "it02", "astep"])
@pytest.mark.parametrize("projected", [False, True])
def test_start_end_skips_chained_records_then_decodes_the_asked_columns(
        tmp_path: Path, case: str, projected: bool) -> None:
    """``start="end"`` finds where the existing records end with a decoder of no column
    and hands its state (carried hit bytes, damage being resynced, records left …) to the
    follow's own decoder: the rows after the cut are exactly the whole read's last rows,
    for every format decoded as a chain, whatever columns are asked for."""
    from importlib import resources

    from test_apx_log import _apx_readouts, _write_log

    samples = resources.files("bindf") / "samples"
    source = {
        "apx": lambda: _apx_noisy(tmp_path / "run.apx"),
        "apx3": lambda: Path(str(samples / "astropix3_injection_run.apx")),
        "log": lambda: _write_log(tmp_path / "run.log", _apx_readouts(APX_SAMPLE)[:300]),
        "it02": lambda: _sparse_it02(tmp_path / "sparse.bin"),
        "astep": lambda: Path(str(samples / "astep_quad_chip_frames.bin")),
    }[case]()
    whole = _expected(source)
    columns = whole.column_names[1::2] if projected else None
    if columns:
        whole = whole.select(columns)
    data = source.read_bytes()
    offset = bindf.registry.open_reader(bindf._source.Source(str(source))).data_offset
    target = tmp_path / f"growing{source.suffix}"
    cut = offset + (len(data) - offset) * 2 // 3 + 1
    target.write_bytes(data[:cut])
    with bindf.follow(target, poll_interval=0.02, idle_timeout=0.5, output="arrow",
                      start="end", columns=columns) as follower:
        with open(target, "ab") as f:
            f.write(data[cut:])
        got = pa.concat_tables(f.replace_schema_metadata(None) for f in follower)
    assert got.column_names == whole.column_names
    assert 0 < got.num_rows < whole.num_rows
    assert got.equals(whole.slice(whole.num_rows - got.num_rows))


@pytest.mark.parametrize("policy", ["raise", "warn"])
def test_start_end_with_damage_after_the_cut_record(tmp_path: Path, policy: str) -> None:
    """``start="end"`` in a log cut inside a readout line, with malformed lines after it:
    the rows between the skipped line and the damage come out before the error
    (``raise``: they were lost, the search for the skipped line's end raised first), and
    each damaged line is warned of once, as counted (``warn``: the search's throwaway
    decoders warned again)."""
    import warnings

    from test_apx_log import _apx_readouts

    readouts = _apx_readouts(APX_SAMPLE)[:300]
    lines = [f"{rid}\t b'{payload.hex()}'\n".encode() for rid, payload in readouts]
    for k in (160, 200):  # file lines 162 and 202, before readouts 160 and 199
        lines.insert(k, b"garbage line\n")
    data = b"Namespace(name='x', chipVer=4)\n" + b"".join(lines)
    whole_file = tmp_path / "whole.log"
    whole_file.write_bytes(data)
    whole = bindf.read_apx_log(whole_file, on_error="skip", output="arrow")
    whole = whole.replace_schema_metadata(None)
    ids = whole.column("readout_id").to_pylist()
    path = tmp_path / "run.log"
    cut = data.index(lines[150]) + 5  # inside the line of readout 150: skipped
    path.write_bytes(data[:cut])
    frames = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bindf.follow(path, poll_interval=0.02, idle_timeout=0.4, output="arrow",
                          start="end", on_error=policy) as follower:
            with path.open("ab") as f:
                f.write(data[cut:])
            if policy == "raise":
                with pytest.raises(bindf.errors.CorruptDataError, match="line 162 "):
                    frames.extend(follower)
            else:
                frames.extend(follower)
    got = pa.concat_tables(f.replace_schema_metadata(None) for f in frames)
    first = ids.index(readouts[151][0])
    if policy == "raise":  # the hits of readouts 151-159, before the first damage
        end = ids.index(readouts[160][0])
        assert end > first and got.equals(whole.slice(first, end - first))
    else:
        assert got.equals(whole.slice(first))
        damage = [str(w.message) for w in caught if "malformed line" in str(w.message)]
        assert [m.split(": ", 1)[1].split(" (")[0] for m in damage] == [
            "skipped malformed line 162", "skipped malformed line 202"]
        assert follower.errors == {"bad_log_line": 2}


def test_start_end_fixed_records_boundary(tmp_path: Path) -> None:
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=1000)
    data = path.read_bytes()
    whole = _expected(path)
    header_len = len(data) - 1000 * 17
    cut = header_len + 400 * 17 + 5  # inside record 400: it is skipped
    path.write_bytes(data[:cut])
    with bindf.follow(path, poll_interval=0.02, idle_timeout=0.3, output="arrow",
                      start="end") as follower:
        with open(path, "ab") as f:
            f.write(data[cut:])
        got = pa.concat_tables(f.replace_schema_metadata(None) for f in follower)
    assert got.equals(whole.slice(401))


def test_folder_where_files_appear(tmp_path: Path) -> None:
    from conftest import write_stt1

    folder = tmp_path / "runs"
    folder.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    files = [write_stt1(src / f"scan_{i:02d}.bin", n=300 + 100 * i, seed=i) for i in range(4)]
    (folder / files[0].name).write_bytes(files[0].read_bytes())

    def writer() -> None:
        for f in files[1:]:
            time.sleep(0.15)
            data = f.read_bytes()
            with open(folder / f.name, "wb") as out:
                out.write(data[:100])
                out.flush()
                time.sleep(0.05)
                out.write(data[100:])

    thread = threading.Thread(target=writer)
    thread.start()
    frames = list(bindf.follow(str(folder / "*.bin"), poll_interval=0.02, idle_timeout=1.5,
                               output="arrow", include_file_paths="path"))
    thread.join()
    got = pa.concat_tables(f.replace_schema_metadata(None) for f in frames)
    expected = bindf.read(str(src / "*.bin"), output="arrow",
                          include_file_paths="path").replace_schema_metadata(None)
    assert got.drop(["path"]).equals(expected.drop(["path"]))
    assert [os.path.basename(p) for p in got.column("path").unique().to_pylist()] == \
        [f.name for f in files]


def test_frames_carry_header_and_options(tmp_path: Path) -> None:
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=1000)
    frames = list(bindf.follow(path, poll_interval=0.02, idle_timeout=0.1, output="pandas",
                               columns=["macrotime_ns", "event"], batch_size=300))
    assert [len(f) for f in frames] == [300, 300, 300, 100]
    assert list(frames[0].columns) == ["macrotime_ns", "event"]
    assert frames[0].attrs["bindf"]["header"] == bindf.read_header(path)
    polars_frames = list(bindf.follow(path, poll_interval=0.02, idle_timeout=0.1,
                                      output="polars"))
    assert polars_frames[0].bindf.header == bindf.read_header(path)


def test_close_and_with_end_iteration(tmp_path: Path) -> None:
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=100)
    with bindf.follow(path, poll_interval=0.02, idle_timeout=None) as follower:
        assert len(next(follower)) == 100
    assert follower.ended_by == "closed"
    assert list(follower) == []


def test_idle_follower_uses_little_cpu(tmp_path: Path) -> None:
    """An idle follower (nothing grows) costs well under 5 % of a core: CPU time of a
    process that follows an idle file for 2 s at the default poll interval."""
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=100)
    code = textwrap.dedent(f"""
        import resource, time, bindf
        follower = bindf.follow({str(path)!r}, idle_timeout=2.0)
        next(follower)
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        list(follower)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        print(cpu / (time.monotonic() - t0))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert float(result.stdout) < 0.01, result.stdout


def test_every_format_followed_when_already_written(tmp_path: Path) -> None:
    """Every streamable format (built-in and plugin), a file already complete: the frames
    equal the read (small IT02 files decide their layout once they stop growing)."""
    from test_stream import _sample_files

    for name, (path, options) in _sample_files(tmp_path).items():
        expected = _expected(path, **options)
        with bindf.follow(path, poll_interval=0.01, idle_timeout=0.05, output="arrow",
                          batch_size=700, **options) as follower:
            frames = [f.replace_schema_metadata(None) for f in follower]
        assert pa.concat_tables(frames).equals(expected), name
        assert all(f.num_rows <= 700 for f in frames)


def test_on_error_applies_to_damaged_records(tmp_path: Path) -> None:
    """A sparse record with an impossible mask: raise by default, rows before it under
    "skip" (as ``read``)."""
    source = _sparse_it02(tmp_path / "s.bin", n=3000)
    data = bytearray(source.read_bytes())
    offset = bindf.registry.open_reader(bindf._source.Source(str(source))).data_offset
    data[offset + 8] = 0xFF  # the first record's mask names channels the header lacks
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(bindf.CorruptDataError):
        list(bindf.follow(bad, poll_interval=0.01, idle_timeout=0.05, layout="sparse"))
    frames = list(bindf.follow(bad, poll_interval=0.01, idle_timeout=0.05, layout="sparse",
                               on_error="skip", output="arrow"))
    expected = bindf.read(bad, layout="sparse", on_error="skip", output="arrow")
    assert sum(f.num_rows for f in frames) == expected.num_rows


def _sparse_damaged_at(tmp_path: Path, record: int, n: int = 3000) -> tuple[Path, int]:
    """A sparse IT02 file whose ``record``-th record has an impossible mask; returns it
    and the rows before that record (as ``read`` gives them)."""
    source = _sparse_it02(tmp_path / "s_src.bin", n=n)
    data = bytearray(source.read_bytes())
    offset = bindf.registry.open_reader(bindf._source.Source(str(source))).data_offset
    for _ in range(record):  # walk the chain: 8-byte time, mask, a u32 per set bit
        offset += 9 + 4 * bin(data[offset + 8]).count("1")
    data[offset + 8] = 0xFF  # the mask names channels the header lacks
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    return bad, record


def test_damage_under_raise_yields_the_rows_before_it_then_raises(tmp_path: Path) -> None:
    """on_error="raise": every complete record before the damage comes out, also those
    decoded in the same step as the damage, and then the error, naming the file."""
    bad, before = _sparse_damaged_at(tmp_path, 1800)
    expected = _expected(tmp_path / "s_src.bin", layout="sparse").slice(0, before)
    follower = bindf.follow(bad, poll_interval=0.01, idle_timeout=0.05, layout="sparse",
                            output="arrow")
    frames = []
    with pytest.raises(bindf.CorruptDataError) as caught:
        for frame in follower:
            frames.append(frame.replace_schema_metadata(None))
    assert caught.value.path == str(bad) and caught.value.offset is not None
    assert pa.concat_tables(frames).equals(expected)
    assert follower.ended_by == "error" and follower.rows == before


def test_damage_under_raise_in_a_later_poll(tmp_path: Path) -> None:
    """The damage arrives in a later write than the rows before it: those rows were
    yielded with their poll, the rows of the damaged write's complete records too."""
    bad, before = _sparse_damaged_at(tmp_path, 2500)
    data = bad.read_bytes()
    target = tmp_path / "live.bin"
    target.write_bytes(data[:len(data) // 3])
    follower = bindf.follow(target, poll_interval=0.01, idle_timeout=5, layout="sparse",
                            output="arrow")
    frames = [next(follower)]
    with open(target, "ab") as f:
        f.write(data[len(data) // 3:])
    with pytest.raises(bindf.CorruptDataError):
        for frame in follower:
            frames.append(frame)
    assert len(frames) >= 2 and sum(f.num_rows for f in frames) == before


@pytest.mark.parametrize("step", [1 << 24, 997])  # one read, or many (READ_STEP)
def test_astropix_damage_under_raise_yields_each_row_before_it_once(tmp_path: Path,
                                                                    monkeypatch,
                                                                    step: int) -> None:
    """A damaged readout marker mid-run under on_error="raise": the follow's rows are
    those of the run cut just before it, each once (the rows of the step that met the
    damage are decoded again by a new decoder, not the failed one)."""
    import bindf._follow as following

    monkeypatch.setattr(following, "READ_STEP", step)
    data = bytearray(APX_SAMPLE.read_bytes())
    at = -1
    for _ in range(40):  # the 40th readout marker
        at = data.index(b"\xfe\xdc\xba", at + 1)
    prefix = tmp_path / "prefix.apx"
    prefix.write_bytes(bytes(data[:at]))
    data[at] = 0
    bad = tmp_path / "bad.apx"
    bad.write_bytes(bytes(data))
    frames = []
    with pytest.raises(bindf.CorruptDataError) as caught:
        for frame in bindf.follow(bad, poll_interval=0.01, idle_timeout=0.05, output="arrow"):
            frames.append(frame.replace_schema_metadata(None))
    assert caught.value.offset is not None and caught.value.offset >= at
    expected = _expected(prefix)
    assert expected.num_rows > 30
    assert pa.concat_tables(frames).equals(expected)


# -- the command line -------------------------------------------------------------------
def test_cli_status_lines_and_parquet(tmp_path: Path) -> None:
    source = _sparse_it02(tmp_path / "s.bin", n=5000)
    out = tmp_path / "out.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "bindf", "follow", str(source), "-o", str(out),
         "--poll-interval", "0.02", "--idle-timeout", "5", "--status-interval", "0"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all("rows" in line for line in lines)
    assert "5,000 rows" in lines[-1] and "ch1=" in lines[-1] and "ch3=" in lines[-1]
    got = bindf.read_parquet(out, output="arrow")
    assert got.replace_schema_metadata(None).equals(_expected(source))
    assert bindf.read_parquet(out).attrs["bindf"]["header"] == bindf.read_header(source)


def test_cli_parquet_metadata_names_every_file_and_the_damage(tmp_path: Path) -> None:
    good = _sparse_it02(tmp_path / "a.bin", n=2000)
    data = bytearray(_sparse_it02(tmp_path / "b_src.bin", n=2000).read_bytes())
    offset = bindf.registry.open_reader(bindf._source.Source(str(good))).data_offset
    data[offset + 8] = 0xFF  # a damaged record, skipped under on_error="skip"
    bad = tmp_path / "b.bin"
    bad.write_bytes(bytes(data))
    (tmp_path / "b_src.bin").unlink()
    out = tmp_path / "out.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "bindf", "follow", str(tmp_path / "*.bin"), "-o", str(out),
         "--poll-interval", "0.02", "--idle-timeout", "1", "--on-error", "skip", "-q",
         "--option", "layout=sparse"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    info = bindf.read_parquet(out).attrs["bindf"]
    assert info["source"] == [str(good), str(bad)]
    expected = bindf.read(bad, layout="sparse", on_error="skip").attrs["bindf"]["errors"]
    assert expected and info["errors"] == expected


def test_cli_damage_under_raise_keeps_the_rows_before_it(tmp_path: Path, capsys) -> None:
    """``bindf follow -o`` (on_error="raise"): the Parquet file is finished with the rows
    before the damage, the error is reported and the exit status is 65."""
    bad, before = _sparse_damaged_at(tmp_path, 1200)
    out = tmp_path / "out.parquet"
    assert _follow_cli(str(bad), "-o", str(out), "--idle-timeout", "0.2",
                       "--option", "layout=sparse") == 65
    err = capsys.readouterr().err
    assert str(bad) in err and "byte offset" in err and f"the {before:,} rows before it" in err
    got = bindf.read_parquet(out, output="arrow")
    expected = _expected(tmp_path / "s_src.bin", layout="sparse").slice(0, before)
    assert got.replace_schema_metadata(None).equals(expected)
    assert bindf.read_parquet(out).attrs["bindf"]["source"] == str(bad)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.parquet")]


def test_cli_ctrl_c_leaves_a_valid_parquet_file(tmp_path: Path) -> None:
    """SIGINT while following: the Parquet file is finished with every row seen."""
    import signal

    source = _apx_noisy(tmp_path / "src.apx")
    data = source.read_bytes()
    target = tmp_path / "run.apx"
    half = len(data) // 2 + 5
    target.write_bytes(data[:half])
    out = tmp_path / "out.parquet"
    proc = _start(["import sys; from bindf.cli import main; sys.exit(main(sys.argv[1:]))",
                   "follow", str(target), "-o", str(out), "--poll-interval", "0.02",
                   "--idle-timeout", "0", "--status-interval", "0"],
                  stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    seen = ""
    while "rows" not in seen and time.monotonic() < deadline:  # a first frame was seen
        seen += proc.stderr.readline()
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    got = bindf.read_parquet(out, output="arrow").replace_schema_metadata(None)
    target.write_bytes(data[:half])
    with pytest.warns(bindf.TruncatedFileWarning):  # the cut readout: not in the output
        expected = _expected(target)
    assert got.num_rows > 0 and got.equals(expected)
    assert bindf.read_parquet(out).attrs["bindf"]["header"] == bindf.read_header(source)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.parquet")]


def _follow_cli(*args: str) -> int:
    from bindf import cli

    return cli.main(["follow", *args, "--poll-interval", "0.02", "-q"])


def _header_only(source: Path, target: Path) -> Path:
    offset = bindf.registry.open_reader(bindf._source.Source(str(source))).data_offset
    target.write_bytes(source.read_bytes()[:offset])
    return target


@pytest.mark.parametrize("name", ["stt1", "apx"])
def test_cli_no_rows_gives_a_zero_row_file_with_the_header(tmp_path: Path, name: str,
                                                           capsys) -> None:
    """A header-only file, or --start end with nothing appended: a Parquet file of 0
    rows with the columns and header, as `bindf convert` writes for the same file."""
    source = _sources(tmp_path)[name]
    empty = _header_only(source, tmp_path / f"empty{source.suffix}")
    out, converted = tmp_path / "out.parquet", tmp_path / "converted.parquet"
    assert _follow_cli(str(empty), "-o", str(out), "--idle-timeout", "0.2") == 0
    from bindf import cli

    assert cli.main(["convert", str(empty), "-o", str(converted), "-q"]) == 0
    got = bindf.read_parquet(out, output="arrow")
    assert got.num_rows == 0
    assert got.schema.remove_metadata().equals(
        bindf.read_parquet(converted, output="arrow").schema.remove_metadata())
    info = bindf.read_parquet(out).attrs["bindf"]
    assert info == bindf.read_parquet(converted).attrs["bindf"]
    assert info["header"] == bindf.read_header(empty) and info["source"] == str(empty)

    tail = tmp_path / "tail.parquet"
    assert _follow_cli(str(source), "-o", str(tail), "--start", "end", "--idle-timeout", "0.2",
                       "--columns", "path," + _expected(source).column_names[0],
                       "--include-file-paths", "path") == 0
    got = bindf.read_parquet(tail, output="arrow")
    assert got.num_rows == 0 and got.column_names == ["path", _expected(source).column_names[0]]
    assert bindf.read_parquet(tail).attrs["bindf"]["header"] == bindf.read_header(source)
    assert capsys.readouterr().err == ""


def test_cli_output_is_checked_before_following(tmp_path: Path, capsys) -> None:
    """Exit 73 / 74 / 2 at once, even for a file that has not appeared yet (the follow
    would wait a minute for it)."""
    later = tmp_path / "later.apx"
    exists = tmp_path / "out.parquet"
    exists.write_bytes(b"precious")
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    cases = [
        ([str(exists)], 73, f"{exists}: output exists (use --force to replace it)"),
        ([str(tmp_path / "no" / "x.parquet")], 74,
         f"{tmp_path / 'no' / 'x.parquet'}: cannot write: no folder "
         f"{str(tmp_path / 'no')!r}"),
        ([str(folder), "--force"], 74, f"{folder}: cannot write: it is a folder"),
        ([str(tmp_path / "x.csv")], 2,
         f"{tmp_path / 'x.csv'}: bindf follow writes Parquet only; name the output .parquet "
         "or .pq"),
        ([str(tmp_path / "x.parquet.arrow")], 2,
         f"{tmp_path / 'x.parquet.arrow'}: bindf follow writes Parquet only; name the output "
         ".parquet or .pq"),
    ]
    for output, code, message in cases:
        started = time.monotonic()
        assert _follow_cli(str(later), "-o", *output, "--idle-timeout", "60") == code
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert err == f"bindf: error: {message}\n"
    assert exists.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.parquet", "out.parquet"]


def test_cli_file_that_never_appears(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.parquet"
    assert _follow_cli(str(tmp_path / "nothing.apx"), "-o", str(out),
                       "--idle-timeout", "0.1") == 66
    assert capsys.readouterr().err == (
        f"bindf: error: {tmp_path / 'nothing.apx'} did not appear within idle_timeout=0.1 s\n")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_cli_signal_before_any_file_appeared(tmp_path: Path, signame: str) -> None:
    """Stopped before the file appeared: no schema to write, so no output, exit 66."""
    import signal

    out = tmp_path / "out.parquet"
    proc = _start(["import sys; from bindf.cli import main; sys.exit(main(sys.argv[1:]))",
                   "follow", str(tmp_path / "run*.apx"), "-o", str(out),
                   "--poll-interval", "0.02", "--idle-timeout", "0", "--status-interval", "0"],
                  stderr=subprocess.PIPE, text=True)
    assert "rows" in proc.stderr.readline()  # following
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 66, err
    assert err.splitlines()[-1] == (f"bindf: error: {out}: not written: no file "
                                    f"{tmp_path / 'run*.apx'} appeared before the follow ended")
    assert not list(tmp_path.iterdir())


def test_cli_sigterm_finishes_the_output_like_ctrl_c(tmp_path: Path) -> None:
    import signal

    from conftest import write_stt1

    source = write_stt1(tmp_path / "run.bin", n=500)
    out = tmp_path / "out.parquet"
    proc = _start(["import sys; from bindf.cli import main; sys.exit(main(sys.argv[1:]))",
                   "follow", str(source), "-o", str(out), "--poll-interval", "0.02",
                   "--idle-timeout", "0", "--status-interval", "0"],
                  stderr=subprocess.PIPE, text=True)
    seen = ""
    while "500 rows" not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert bindf.read_parquet(out, output="arrow").replace_schema_metadata(None).equals(
        _expected(source))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "run.bin"]


def test_cli_parquet_keeps_the_first_files_header(tmp_path: Path) -> None:
    """As a multi-file read (and `bindf convert`): the first file's header, every file
    as the source; also when the first file has no rows."""
    from conftest import write_stt1

    first = write_stt1(tmp_path / "r1.bin", n=100, header={"run": 1})
    second = write_stt1(tmp_path / "r2.bin", n=50, header={"run": 2})
    out = tmp_path / "out.parquet"
    assert _follow_cli(str(tmp_path / "r*.bin"), "-o", str(out), "--idle-timeout", "0.3") == 0
    info = bindf.read_parquet(out).attrs["bindf"]
    assert info["header"] == {"run": 1} and info["source"] == [str(first), str(second)]
    assert bindf.read_parquet(out).shape[0] == 150

    _header_only(first, first)  # the first file: a header, no rows
    assert _follow_cli(str(tmp_path / "r*.bin"), "-o", str(out), "--force",
                       "--idle-timeout", "0.3") == 0
    info = bindf.read_parquet(out).attrs["bindf"]
    assert info["header"] == {"run": 1} and info["format"] == "spectro"
    assert bindf.read_parquet(out).shape[0] == 50


@pytest.mark.parametrize(("sample", "column"), [
    ("astropix3_injection_run.apx", "wall_timestamp"),
    ("astep_quad_chip_frames.bin", "fpga_ts"),
    ("astropix_threshold_scan.apx", "timestamp"),
    ("photon_events_stt1.bin", "macrotime_ns"),
    ("intensity_tracing_it02.bin", "time_ns"),
])
def test_cli_status_line_shows_the_last_time_stamp(sample: str, column: str) -> None:
    import io
    from importlib import resources

    from bindf._follow_cli import Status

    with resources.as_file(resources.files("bindf") / "samples" / sample) as path:
        frame = bindf.read(path, output="arrow")
    status = Status(io.StringIO(), 1.0)
    status.add(frame, frame.schema.metadata[b"bindf.format"].decode())

    class Totals:
        rows, bytes = frame.num_rows, 1000

    assert f"| last {frame.column(column)[-1].as_py()}" in status.line(Totals())


def test_cli_status_line_of_a_format_added_from_outside_shows_no_totals() -> None:
    """A plugin's ``ch1`` may be signed samples, not counts: its status line shows
    rows, rate and bytes, no channel sums and no "last" time stamp."""
    import io

    from bindf._follow_cli import Status

    frame = pa.table({"time_ns": [1, 2], "ch1": [-5, 3], "chip_id": [0, 1]})
    status = Status(io.StringIO(), 1.0)
    status.add(frame, "someplugin")

    class Totals:
        rows, bytes = 2, 100

    assert status.line(Totals()).split(" | ")[::2] == ["2 rows", "100 bytes"]


def test_format_that_cannot_stream_is_a_clear_error(monkeypatch) -> None:
    """A format that neither streams nor is written whole (one added from outside)."""
    from bindf.formats.fcs1 import FCS1Reader

    monkeypatch.setattr(FCS1Reader, "written_whole", False)
    fcs1 = DATA / "fcs1_fcs-export-data-example.bin"
    with pytest.raises(bindf.errors.BindfError, match="cannot be followed") as caught:
        list(bindf.follow(fcs1, poll_interval=0.01, idle_timeout=0.05))
    assert caught.value.path == str(fcs1) and str(caught.value).count(str(fcs1)) == 1


FCS1_SAMPLE = DATA / "fcs1_fcs-export-data-example.bin"


def test_a_file_written_whole_is_read_once_complete(tmp_path: Path) -> None:
    """FCS1 (written in one go after the correlations are computed) is not decoded as a
    stream: the follower reads it whole once its size held for a poll; its rows are
    the read's, and following that file ends there."""
    expected = _expected(FCS1_SAMPLE)
    target = tmp_path / "fcs.bin"
    follower = bindf.follow(target, poll_interval=0.02, idle_timeout=10, output="arrow")
    data = FCS1_SAMPLE.read_bytes()

    def write() -> None:  # the file appears, written in two pieces within a poll
        time.sleep(0.1)
        with open(target, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            f.write(data[len(data) // 2:])

    writer = threading.Thread(target=write)
    writer.start()
    frames = [f.replace_schema_metadata(None) for f in follower]
    writer.join()
    assert pa.concat_tables(frames).equals(expected)
    assert follower.ended_by == "complete" and follower.rows == expected.num_rows
    assert follower.bytes == len(data)
    assert follower.header == bindf.read_header(FCS1_SAMPLE)


def test_a_file_written_whole_that_pauses_mid_file_is_waited_for(tmp_path: Path) -> None:
    """A writer that stops for several polls inside the file: the cut read is not taken
    for the file (no warning, no rows yet); the rows come once it is complete. One that
    never completes is read as it is at the idle end, with read's truncation warning."""
    data = FCS1_SAMPLE.read_bytes()
    target = tmp_path / "fcs.bin"
    target.write_bytes(data[: len(data) // 2])
    follower = bindf.follow(target, poll_interval=0.01, idle_timeout=10, output="arrow")

    def finish() -> None:
        time.sleep(0.3)  # about 30 polls
        with open(target, "ab") as f:
            f.write(data[len(data) // 2:])

    writer = threading.Thread(target=finish)
    writer.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning meanwhile
        frames = [f.replace_schema_metadata(None) for f in follower]
    writer.join()
    assert pa.concat_tables(frames).equals(_expected(FCS1_SAMPLE))
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(bindf.TruncatedFileWarning):
        rows = sum(f.num_rows for f in bindf.follow(cut, poll_interval=0.01, idle_timeout=0.1,
                                                    output="arrow"))
    assert rows == 0


def test_files_written_whole_in_a_glob_and_start_end(tmp_path: Path) -> None:
    for name in ("a_fcs.bin", "b_fcs.bin"):
        (tmp_path / name).write_bytes(FCS1_SAMPLE.read_bytes())
    one = _expected(FCS1_SAMPLE)
    with bindf.follow(tmp_path / "*_fcs.bin", poll_interval=0.01, idle_timeout=0.2,
                      output="arrow", include_file_paths="path") as follower:
        got = pa.concat_tables([f.replace_schema_metadata(None) for f in follower])
    assert got.num_rows == 2 * one.num_rows
    assert got.drop_columns(["path"]).equals(pa.concat_tables([one, one]))
    assert got.column("path").unique().to_pylist() == [str(tmp_path / "a_fcs.bin"),
                                                      str(tmp_path / "b_fcs.bin")]
    # start="end": written before following started, so none of its rows
    assert list(bindf.follow(tmp_path / "a_fcs.bin", poll_interval=0.01, idle_timeout=0.1,
                             start="end")) == []


def test_it02_zero_bin_at_a_pause_then_more_records_without_a_marker(tmp_path: Path) -> None:
    """Rows held back with a zero bin at the end of the file are released when more
    records come, even when no end marker follows them (``idle_timeout`` ends it)."""
    header = _sparse_it02(tmp_path / "h.bin", n=10).read_bytes()
    header = header[:bindf.registry.open_reader(
        bindf._source.Source(str(tmp_path / "h.bin"))).data_offset]
    records = np.zeros(5000, dtype=[("t", "<f8"), ("mask", "u1"), ("a", "<u4"), ("b", "<u4")])
    records["t"] = (np.arange(5000) + 1) * 1e3
    records["mask"], records["a"], records["b"] = 3, 1, 2
    zero_bin = struct.pack("<dB", 5001e3, 0)
    tail = records[:3].copy()
    tail["t"] += 5001e3
    target = tmp_path / "growing.bin"
    target.write_bytes(header + records.tobytes() + zero_bin)
    threading.Timer(0.25, lambda: target.open("ab").write(tail.tobytes())).start()
    with bindf.follow(target, poll_interval=0.6, idle_timeout=0.7, output="arrow",
                      layout="sparse") as follower:
        got = pa.concat_tables(f.replace_schema_metadata(None) for f in follower)
    assert follower.ended_by == "idle"
    assert got.equals(_expected(target, layout="sparse"))
    assert got.num_rows == 5004


def test_options_are_checked_when_follow_is_called(tmp_path: Path) -> None:
    """A misspelt option is a TypeError with a hint at once, not a FileNotFoundError
    after idle_timeout once the file never appears; dtype_backend works as for read."""
    started = time.monotonic()
    with pytest.raises(TypeError, match=r"follow\(\) got an unexpected option .*'layot'; "
                                        "did you mean layout="):
        bindf.follow(tmp_path / "later.bin", format="it02", layot="dense", idle_timeout=30)
    with pytest.raises(TypeError, match="'levl'"):
        bindf.follow(tmp_path / "later.bin", levl="hits", idle_timeout=30)
    with pytest.raises(ValueError, match=r"level must be one of \('hits', 'readouts'\)"):
        bindf.follow(tmp_path / "later.apx", level="hit", idle_timeout=30)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="dtype_backend applies to pandas output only"):
        bindf.follow(tmp_path / "later.bin", output="polars", dtype_backend="pyarrow")
    path = tmp_path / "run.bin"
    path.write_bytes((Path(bindf.__file__).parent / "samples" / "intensity_tracing_it02.bin")
                     .read_bytes())
    with bindf.follow(path, idle_timeout=0, poll_interval=0.01,
                      dtype_backend="pyarrow") as frames:
        frame = pd.concat(list(frames))
    expected = bindf.read(path, dtype_backend="pyarrow")
    assert list(frame.dtypes) == list(expected.dtypes) and len(frame) == len(expected)


def test_generic_fixed_records_are_followed(tmp_path: Path) -> None:
    """``format="records"`` with its dtype, header and offset follows as it reads (its
    options were refused by name: the spec declared none)."""
    header = np.dtype([("magic", "S4"), ("n", "<u4")])
    records = np.dtype([("t", "<i8"), ("v", "<f4")])
    values = np.zeros(500, records)
    values["t"] = np.arange(500) * 7
    values["v"] = np.linspace(0, 1, 500)
    data = np.array([(b"LOG1", 500)], header).tobytes() + values.tobytes()
    path = tmp_path / "log.bin"
    cut = 8 + 200 * records.itemsize + 5
    path.write_bytes(data[:cut])
    options = {"format": "records", "dtype": records, "header": header}
    with bindf.follow(path, poll_interval=0.02, idle_timeout=0.4, output="arrow",
                      **options) as follower:
        threading.Timer(0.15, lambda: path.open("ab").write(data[cut:])).start()
        got = pa.concat_tables(f.replace_schema_metadata(None) for f in follower)
    assert got.equals(bindf.read(path, output="arrow", **options).replace_schema_metadata(None))
    with pytest.raises(TypeError, match="did you mean dtype="):
        bindf.follow(path, format="records", dtyp=records)


@pytest.mark.parametrize("at_start", [0, 100])
def test_a_header_updated_in_place_at_the_end_is_no_rewrite(tmp_path: Path,
                                                            at_start: int) -> None:
    """An instrument may write its record count into the header when it stops: that
    changes bytes before the records, which is no new run (the follow goes on to
    its idle end with every row and no warning)."""
    import warnings

    header = np.dtype([("magic", "S4"), ("n", "<u4")])
    records = np.dtype([("t", "<i8"), ("v", "<f4")])
    values = np.zeros(300, records)
    values["t"] = np.arange(300)
    path = tmp_path / "log.bin"
    path.write_bytes(np.array([(b"LOG1", 0)], header).tobytes() + values[:at_start].tobytes())
    options = {"format": "records", "dtype": records, "header": header}

    def finish() -> None:
        with open(path, "r+b") as f:
            f.seek(0, 2)
            f.write(values[at_start:].tobytes())
            f.seek(4)
            f.write(np.uint32(300).tobytes())  # the count, written at the end

    with warnings.catch_warnings():
        warnings.simplefilter("error", bindf.FileChangedWarning)
        with bindf.follow(path, poll_interval=0.02, idle_timeout=0.4, output="arrow",
                          **options) as follower:
            threading.Timer(0.15, finish).start()
            got = pa.concat_tables(f.replace_schema_metadata(None) for f in follower)
    assert follower.ended_by == "idle" and got["t"].to_pylist() == list(range(300))


@pytest.mark.parametrize("how", ["rewrite", "replace", "remove"])
def test_rows_held_at_an_end_marker_are_kept_when_the_file_then_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A sparse IT02 run that ended with its marker holds its last rows until the next
    poll confirms the end. A new run written in place, another file put in its place or
    its removal before that poll is noticed (a rewrite through the disk, not the
    reader's buffer, which still held the old bytes: it was read as more of the run)
    and the held rows still come out (all 1000 were lost)."""
    import warnings

    from bindf import _follow

    path = _sparse_it02(tmp_path / "trace.bin", n=1000)
    whole = _expected(path)
    other = tmp_path / "other.bin"
    bindf.write_it02(other, {"time_ns": (np.arange(3000) + 1) * 7e3, "ch1": np.ones(3000),
                             "ch3": np.full(3000, 2)},
                     {"channels": [0, 2], "bin_width_micros": 7}, layout="sparse")

    def change() -> None:
        if how == "rewrite":  # same inode
            path.write_bytes(other.read_bytes())
        elif how == "replace":
            os.replace(other, path)
        else:
            path.unlink()

    polls = []
    original = _follow._Tail.poll

    def poll(self):  # noqa: ANN001, ANN202 - the change lands right after the first poll
        result = original(self)
        if not polls:
            change()
        polls.append(result)
        return result

    monkeypatch.setattr(_follow._Tail, "poll", poll)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bindf.follow(path, poll_interval=0.02, idle_timeout=2, output="arrow",
                          layout="sparse") as follower:
            frames = [f.replace_schema_metadata(None) for f in follower]
    assert follower.ended_by == "changed"
    assert pa.concat_tables(frames).equals(whole.replace_schema_metadata(None))
    assert [w for w in caught if w.category is bindf.FileChangedWarning]


def test_the_time_a_loop_spends_on_a_frame_is_not_idle(tmp_path: Path) -> None:
    """idle_timeout counted the caller's time with a frame as time without growth: a
    loop slower than it ended the follow while the file grew (rows lost, and a false
    truncation warning)."""
    data = APX_SAMPLE.read_bytes()
    path = tmp_path / "slow.apx"
    path.write_bytes(data[:2000])

    def writer() -> None:
        with open(path, "ab", buffering=0) as f:
            for i in range(2000, len(data), 2000):
                f.write(data[i:i + 2000])
                time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    frames = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with bindf.follow(path, poll_interval=0.02, idle_timeout=0.3,
                          output="arrow") as live:
            for frame in live:
                frames.append(frame.replace_schema_metadata(None))
                time.sleep(0.4)  # longer than idle_timeout, while the file grows
    thread.join()
    assert live.ended_by == "idle" and len(frames) > 1
    assert pa.concat_tables(frames).equals(_expected(path))


def test_a_damaged_fcs1_file_raises_once_its_size_held(tmp_path: Path) -> None:
    """Damage an FCS1 reader meets when it opens the file (read whole) cannot be mended
    by more bytes: raised at the poll that finds the size unchanged, as damage ending a
    follow is (ended_by "error"), not after idle_timeout, nor never with None. The
    command line names the damage, not a missing header."""
    data = bytearray(FCS1_SAMPLE.read_bytes())
    data[len(data) // 2] = 0xFF
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(bindf.CorruptDataError) as expected:
        bindf.read(path)
    started = time.monotonic()
    follower = bindf.follow(path, poll_interval=0.02, idle_timeout=None)
    with pytest.raises(bindf.CorruptDataError) as caught:
        list(follower)
    assert time.monotonic() - started < 5
    assert follower.ended_by == "error" and str(caught.value) == str(expected.value)
    done = subprocess.run([sys.executable, "-m", "bindf", "follow", str(path), "-o",
                           str(tmp_path / "out.parquet"), "--idle-timeout", "0.5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 65 and "no complete header" not in done.stderr
    assert f"not written: {expected.value}" in done.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_acquisition_end_only_in_the_last_frame_and_after_damage(tmp_path: Path) -> None:
    """The end marker's acquisition_end_ns: only in the frame that ends the file (every
    batch_size piece of that poll had it), and also when damage skipped under
    on_error="warn" ends the records before the marker (it was lost there; a read
    keeps it)."""
    n = 3000
    frame = pd.DataFrame({"time_ns": np.arange(1, n + 1) * 1e6,
                          "ch1": (np.arange(n) % 50 + 1).astype("u4")})
    path = tmp_path / "sparse.bin"
    bindf.write_it02(path, frame, {"channels": [0]}, layout="sparse",
                     acquisition_end_ns=float(n + 5) * 1e6)
    pieces = bindf.follow(path, batch_size=1000, output="polars", poll_interval=0.02)
    ends = [(f.height, f.bindf.header["acquisition_end_ns"]) for f in pieces]
    assert ends == [(1000, None), (1000, None), (1000, float(n + 5) * 1e6)]
    assert pieces.ended_by == "end_marker"
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 4] = b"\xff" * 4
    (tmp_path / "damaged.bin").write_bytes(bytes(damaged))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bindf.CorruptDataWarning)
        read = bindf.read(tmp_path / "damaged.bin", on_error="warn", output="polars")
        follower = bindf.follow(tmp_path / "damaged.bin", on_error="warn", output="polars",
                                poll_interval=0.02, idle_timeout=0.3)
        frames = list(follower)
    assert follower.ended_by == "data_end"
    assert sum(f.height for f in frames) == read.height < n
    assert frames[-1].bindf.header == read.bindf.header
    assert read.bindf.header["acquisition_end_ns"] == float(n + 5) * 1e6


def test_path_column_of_a_large_poll_stays_within_arrow_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All that one poll read gets its path column: where that would pass Arrow's 2 GiB
    of text (a 700 MB run followed from the beginning), it comes in chunks that do not,
    where it raised (here the limit is made 64 paths long). Types as a read gives them."""
    from conftest import write_stt1

    path = write_stt1(tmp_path / "s.bin", n=1000)
    monkeypatch.setattr(bindf.arrow, "STRING_BYTES_MAX", 64 * len(str(path)))
    frames = list(bindf.follow(path, poll_interval=0.02, idle_timeout=0.1, output="arrow",
                               include_file_paths="path"))
    column = pa.concat_tables(frames).column("path")
    assert column.type == pa.string()
    assert column.to_pylist() == [str(path)] * 1000
    assert max(len(chunk) for chunk in column.chunks) == 64
    frames = list(bindf.follow(path, poll_interval=0.02, idle_timeout=0.1, output="polars",
                               include_file_paths="path", batch_size=400))
    assert [f["path"].to_list() for f in frames] == [[str(path)] * 400] * 2 + [
        [str(path)] * 200]
    assert frames[0].schema["path"] == pl.String


SAMPLES = Path(bindf.__file__).parent / "samples"


def _append_later(path: Path, data: bytes, delay: float) -> threading.Timer:
    def append() -> None:
        with open(path, "ab") as f:
            f.write(data)

    timer = threading.Timer(delay, append)
    timer.start()
    return timer


def test_a_listed_file_not_written_yet_does_not_end_the_one_before(tmp_path: Path) -> None:
    """``follow([a, b])``: ``b`` not existing yet is no later file, so a pause in ``a``
    (several polls) is no end of ``a`` (its later rows were lost, with a false
    truncation warning); a list is followed in its own order, as read takes it."""
    data = (SAMPLES / "photon_events_stt1.bin").read_bytes()
    a, b = tmp_path / "run2.bin", tmp_path / "run1.bin"  # (list order is not name order)
    half = len(data) // 2
    a.write_bytes(data[:half])

    def writer() -> None:
        time.sleep(0.4)  # a pause of several polls
        with open(a, "ab") as f:
            f.write(data[half:])
        time.sleep(0.3)
        b.write_bytes(data)

    thread = threading.Thread(target=writer)
    thread.start()
    with warnings.catch_warnings():
        warnings.simplefilter("error", bindf.BindfWarning)
        with bindf.follow([a, b], poll_interval=0.05, idle_timeout=1.0, output="arrow",
                          include_file_paths="path") as live:
            got = pa.concat_tables(f.replace_schema_metadata(None) for f in live)
    thread.join()
    assert live.paths == [str(a), str(b)]
    expected = bindf.read([a, b], output="arrow", include_file_paths="path")
    assert got.equals(expected.replace_schema_metadata(None))


def test_a_listed_file_never_written_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """The rows of the files that came are kept (the CLI writes them, status 0); the
    missing one is named. Only a follow where no file came at all raises."""
    a, never = tmp_path / "a.bin", tmp_path / "never.bin"
    a.write_bytes((SAMPLES / "photon_events_stt1.bin").read_bytes())
    with pytest.warns(bindf.BindfWarning, match="never written while it was followed") as seen:
        with bindf.follow([a, never], poll_interval=0.02, idle_timeout=0.3,
                          output="arrow") as live:
            rows = sum(f.num_rows for f in live)
    assert rows == bindf.read(a, output="arrow").num_rows and live.ended_by == "idle"
    assert [w.message.path for w in seen if "never written" in str(w.message)] == [str(never)]
    out = tmp_path / "out.parquet"
    assert _follow_cli(str(a), str(never), "-o", str(out), "--poll-interval", "0.02",
                       "--idle-timeout", "0.3") == 0
    assert pq.read_table(out).num_rows == rows


def test_a_declared_record_count_ends_the_records_as_read_does(tmp_path: Path) -> None:
    """A header that declares its record count: bytes after the records are a trailer
    (they were followed as one more row), and fewer records than declared warn as read
    warns."""
    header = np.dtype([("magic", "S4"), ("n", "<u4")])
    records = np.dtype([("t", "<i8")])
    options = {"format": "records", "dtype": records, "header": header,
               "count": lambda h: h["n"]}
    for declared, held, trailer in ((5, 5, b"\xff" * 16), (9, 5, b"")):
        path = tmp_path / f"c{declared}.bin"
        data = (np.array([(b"CNT1", declared)], header).tobytes()
                + np.arange(held, dtype="<i8").tobytes() + trailer)
        path.write_bytes(data[:20])
        timer = _append_later(path, data[20:], 0.1)
        with warnings.catch_warnings(record=True) as followed:
            warnings.simplefilter("always")
            with bindf.follow(path, poll_interval=0.02, idle_timeout=0.4, output="arrow",
                              **options) as live:
                got = pa.concat_tables(f.replace_schema_metadata(None) for f in live)
        timer.join()
        with warnings.catch_warnings(record=True) as read:
            warnings.simplefilter("always")
            expected = bindf.read(path, output="arrow", **options)
        assert got["t"].to_pylist() == expected["t"].to_pylist() == list(range(held))
        assert [str(w.message) for w in followed] == [str(w.message) for w in read]


def test_a_sparse_it02_writer_pausing_early_is_waited_for(tmp_path: Path) -> None:
    """Too few records to tell the layout, and the writer pausing a few polls: that is
    no damage (a CorruptDataError was raised after one poll, a rule for files written
    in one go); the layout is decided once the file is long enough, ends or goes idle."""
    frame = bindf.read_it02(SAMPLES / "intensity_tracing_it02.bin")
    source = tmp_path / "sparse.bin"
    bindf.write_it02(source, frame, frame.bindf.header.copy(), layout="sparse")
    data = source.read_bytes()
    live_path = tmp_path / "live.bin"
    live_path.write_bytes(data[:130])
    timer = _append_later(live_path, data[130:], 0.3)
    with bindf.follow(live_path, poll_interval=0.05, idle_timeout=2.0, output="arrow") as live:
        got = pa.concat_tables(f.replace_schema_metadata(None) for f in live)
    timer.join()
    assert got.equals(bindf.read(source, output="arrow").replace_schema_metadata(None))


def test_the_header_as_the_file_ended_and_text_damage_counted(tmp_path: Path) -> None:
    """A count written into the header when the instrument stops is the follower's
    header at the end (as read gives it); text that is not text, skipped under "warn",
    is counted in ``errors`` as read counts it."""
    header = np.dtype([("magic", "S4"), ("n", "<u4")])
    records = np.dtype([("t", "<i8"), ("tag", "S4")])
    values = np.zeros(300, records)
    values["t"] = np.arange(300)
    values["tag"] = b"ok"
    raw = values.tobytes()
    bad = 7 * records.itemsize + 8  # record 7's tag: bytes that are not UTF-8
    raw = raw[:bad] + b"\xff\xfe\xfd\xfc" + raw[bad + 4:]
    path = tmp_path / "log.bin"
    path.write_bytes(np.array([(b"LOG1", 0)], header).tobytes() + raw[:100 * records.itemsize])
    options = {"format": "records", "dtype": records, "header": header, "on_error": "skip"}

    def finish() -> None:
        with open(path, "r+b") as f:
            f.seek(0, 2)
            f.write(raw[100 * records.itemsize:])
            f.seek(4)
            f.write(np.uint32(300).tobytes())

    timer = threading.Timer(0.15, finish)
    timer.start()
    with bindf.follow(path, poll_interval=0.02, idle_timeout=0.4, output="arrow",
                      **options) as live:
        rows = sum(f.num_rows for f in live)
    timer.join()
    expected = bindf.read(path, output="pandas", **options)
    assert rows == len(expected) == 300
    assert live.header == expected.bindf.header == {"magic": "LOG1", "n": 300}
    assert live.errors == expected.attrs["bindf"]["errors"] == {"invalid_text": 1}


@pytest.mark.parametrize(("options", "message"), [
    ({"on_error": "ignore"}, r"on_error must be one of \('raise', 'warn', 'skip'\)"),
    ({"poll_interval": float("nan")}, "poll_interval must be a positive number of seconds"),
    ({"poll_interval": "0.5"}, "poll_interval must be a positive number of seconds"),
    ({"idle_timeout": float("nan")}, "idle_timeout must be a number of seconds >= 0 or None"),
    ({"fill_gaps": True}, "follow does not take fill_gaps=True"),
])
def test_values_are_checked_when_follow_is_called(tmp_path: Path, options, message) -> None:
    """Not when the file appears (a NaN idle timeout never came; a NaN poll interval
    was time.sleep's error)."""
    with pytest.raises(ValueError, match=message):
        bindf.follow(tmp_path / "later.bin", **options)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # (__del__'s)
def test_a_follower_dropped_without_close_closes_its_file(tmp_path: Path) -> None:
    """A consumer's loop that raised (no ``with``) left the file open until the garbage
    collector ran: the follower and its iteration referred to each other."""
    import gc

    path = tmp_path / "run.apx"
    path.write_bytes((SAMPLES / "astropix_threshold_scan.apx").read_bytes())

    def open_on_path() -> int:
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path)
                   for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))

    def consume() -> None:
        for _ in bindf.follow(path, poll_interval=0.01, idle_timeout=None):
            raise RuntimeError("the consumer's bug")

    enabled = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(RuntimeError):
            consume()
        assert open_on_path() == 0
        live = bindf.follow(path, poll_interval=0.01, idle_timeout=None)
        next(live)
        assert open_on_path() == 1
        del live
        assert open_on_path() == 0

        class Holder:  # a cycle of the caller's that holds a follower: freed by the
            pass       # collector, which clears weak references before __del__ runs

        holder = Holder()
        holder.live, holder.me = bindf.follow(path, poll_interval=0.01, idle_timeout=None), holder
        next(holder.live)
        del holder
        gc.collect()
        assert open_on_path() == 0
    finally:
        if enabled:
            gc.enable()


def test_a_listed_path_not_written_before_one_that_is(tmp_path: Path) -> None:
    """``follow([missing, present])``: the missing one is skipped with a warning once the
    later file exists, and the later file's rows come (it raised after one poll, with
    no row and a message naming idle_timeout)."""
    present = tmp_path / "b.bin"
    present.write_bytes((SAMPLES / "photon_events_stt1.bin").read_bytes())
    with pytest.warns(bindf.BindfWarning, match="never written while it was followed"):
        with bindf.follow([tmp_path / "a_missing.bin", present], poll_interval=0.02,
                          idle_timeout=0.3, output="arrow") as live:
            rows = sum(f.num_rows for f in live)
    assert rows == bindf.read(present, output="arrow").num_rows
    assert live.paths == [str(present)] and live.ended_by == "idle"
    with pytest.raises(FileNotFoundError, match="no file .* appeared within idle_timeout"):
        list(bindf.follow([tmp_path / "x.bin", tmp_path / "y.bin"], poll_interval=0.02,
                          idle_timeout=0.2))
