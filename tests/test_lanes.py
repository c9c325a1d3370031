"""Column lanes (``bindf._lanes``): batches carved out of shared blocks, and the readers
that use them give the same tables as with one array per batch."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bindf import _lanes
from bindf._lanes import Lane, Lanes, lanes_for
from bindf._source import Source
from bindf.formats import astep
from bindf.formats._base import FormatReader


def test_kept_batches_follow_each_other_back_to_back_and_survive_new_blocks():
    lane = Lane(np.int64, block_bytes=4096)
    kept = []
    for i, (capacity, n) in enumerate([(100, 10), (100, 100), (300, 1), (50, 0), (600, 3)]):
        room = lane.reserve(capacity)
        assert len(room) == capacity and room.dtype == np.int64
        room[:n] = np.arange(n) + 1000 * i
        kept.append(lane.keep(n))
    for i, (values, n) in enumerate(zip(kept, [10, 100, 1, 0, 3], strict=True)):
        assert values.tolist() == list(range(1000 * i, 1000 * i + n))
        assert values.ctypes.data % 8 == 0  # aligned to the item size
    assert kept[0].ctypes.data % 64 == 0  # a block starts at a 64-byte boundary
    # each batch starts right where the one before it ended (the eager frontends join
    # such batches into one chunk)
    assert kept[1].ctypes.data - kept[0].ctypes.data == 10 * 8
    assert kept[2].ctypes.data - kept[1].ctypes.data == 100 * 8
    # a reservation larger than a block gets a block of its own
    assert len(lane.reserve(10_000)) == 10_000


def test_keep_gives_back_the_unused_reservation():
    lane = Lane(np.uint8, block_bytes=1 << 16)
    lane.reserve(1000)
    first = lane.keep(10)
    lane.reserve(1000)
    second = lane.keep(5)
    assert second.ctypes.data - first.ctypes.data == 10


def test_keep_needs_a_reservation():
    lane = Lane(np.uint8)
    with pytest.raises(ValueError, match="reservation"):
        lane.keep(1)
    lane.reserve(4)
    with pytest.raises(ValueError, match="reservation"):
        lane.keep(5)
    lane.keep(4)
    with pytest.raises(ValueError, match="reservation"):
        lane.keep(1)  # one keep per reservation


def test_blocks_come_from_arrows_mimalloc_pool_when_there_is_one():
    if _lanes._POOL is None:
        pytest.skip("this pyarrow has no mimalloc pool")
    before = _lanes._POOL.bytes_allocated()
    values = Lane(np.uint8, block_bytes=1 << 20).empty(10)
    assert _lanes._POOL.bytes_allocated() >= before + (1 << 20)
    del values
    assert _lanes._POOL.bytes_allocated() == before


def test_lanes_by_name_and_disabled_lanes_are_plain_arrays():
    lanes = Lanes(block_bytes=1 << 12)
    a = lanes.empty("x", 3, np.uint16)
    b = lanes.empty("y", 3, np.float64)
    assert (a.dtype, b.dtype) == (np.uint16, np.float64)
    assert a.base is not None  # a slice of the lane's block
    off = Lanes(enabled=False)
    room = off.reserve("x", 8, np.uint8)
    assert off.keep("x", room, 3).base is room
    assert off.empty("x", 2, np.int32).base is None
    assert not lanes_for(None).enabled
    assert not lanes_for(_lanes.MIN_INPUT_BYTES - 1).enabled
    assert lanes_for(_lanes.MIN_INPUT_BYTES).enabled


def _astep_stream(rng: random.Random, n: int) -> bytes:
    out = bytearray()
    for i in range(n):
        p = 4 if rng.random() < 0.97 else rng.randrange(8)
        sensor = bytes([rng.randrange(4) << 3 | p]) + rng.randbytes(p)
        out += bytes([1 + len(sensor) + 4, 1 + i % 3]) + sensor + (1000 + i).to_bytes(4, "little")
        if rng.random() < 0.02:
            out += b"\xff" * rng.randrange(1, 9)
    return bytes(out)


@pytest.mark.parametrize("threads", [1, 2])
def test_astep_read_in_lanes_equals_read_in_plain_arrays(tmp_path, monkeypatch, threads):
    """Tiny blocks and chunks, so batches cross many block boundaries."""
    path = tmp_path / "run.bin"
    path.write_bytes(_astep_stream(random.Random(5), 6000))

    def read() -> pa.Table:
        reader = astep.AstepReader(Source(str(path)), chunk_bytes=1000, threads=threads)
        return pa.Table.from_batches(list(reader.iter_batches()), schema=reader.schema)

    plain = read()
    monkeypatch.setattr(FormatReader, "output_lanes", lambda self, *args, **kwargs: Lanes(block_bytes=3000))
    in_lanes = read()
    assert in_lanes.num_rows == 6000
    assert in_lanes.equals(plain)
    kind = in_lanes.column("kind").combine_chunks().dictionary_decode()
    assert 0 < kind.to_pylist().count("wrong_length") < 6000


@pytest.mark.parametrize(("name", "writes_into_lanes"), [
    ("20250723_092534_data.apx", True),  # AstroPix 4
    ("vinj0_th1030_20250729-185248.apx", False),  # AstroPix 3: its decoder copies
])
def test_apx_read_in_lanes_equals_read_in_plain_arrays(monkeypatch, name, writes_into_lanes):
    import bindf
    from bindf.formats import _apx_hits

    path = Path(__file__).parent / "data" / name
    plain = bindf.read_apx(path, output="arrow", chunk_bytes=512, threads=1)
    monkeypatch.setattr(FormatReader, "output_lanes", lambda self, *args, **kwargs: Lanes(block_bytes=2000))
    # In lanes, hit finding writes the readout fields of the hits straight into their
    # columns (HitDecoder.write_into); the values must be those of the copies.
    owned: set[frozenset[str]] = set()
    convert = _apx_hits.HitColumns.__call__

    def spy(self, decoded, columns):
        owned.add(decoded.owned)
        return convert(self, decoded, columns)

    monkeypatch.setattr(_apx_hits.HitColumns, "__call__", spy)
    for threads in (1, 2):
        assert bindf.read_apx(path, output="arrow", chunk_bytes=512, threads=threads).equals(plain)
        # (a row limit keeps a small run out of the many-small-files path, which
        # gathers decoded runs without lanes)
        assert bindf.read_apx(path, output="arrow", chunk_bytes=512, threads=threads,
                              n_rows=10**9).equals(plain)
    all_three = frozenset({"hit_order", "hit_readout_id", "hit_timestamp"})
    assert (all_three in owned) == writes_into_lanes
    owned.clear()
    some = [c for c in ["row", "timestamp", "wall_timestamp", "decoding_order"]
            if c in plain.column_names]
    assert bindf.read_apx(path, output="arrow", chunk_bytes=512, threads=1, n_rows=10**9,
                          columns=some).equals(plain.select(some))
    assert owned == ({frozenset({"hit_order", "hit_timestamp"})} if writes_into_lanes
                     else {frozenset()})


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds ``address``."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only")
@pytest.mark.parametrize("pool", ["mimalloc", "numpy"])
def test_blocks_are_advised_against_huge_pages(monkeypatch, pool):
    """Every whole page of a block is in a mapping marked "no huge pages" (``nh``),
    whichever allocator the block came from, however NumPy and mimalloc advise their
    own memory: the last huge page of each column would be resident in full."""
    if pool == "numpy":
        monkeypatch.setattr(_lanes, "_POOL", None)
    elif _lanes._POOL is None:
        pytest.skip("this pyarrow has no mimalloc pool")
    if _lanes._MADVISE is None:
        pytest.skip("no madvise here")
    block = _lanes.new_block(16 << 20)
    page = _lanes._PAGE
    first = -(-block.ctypes.data // page) * page
    for address in (first, first + (8 << 20), block.ctypes.data + block.nbytes - page - 1):
        assert "nh" in _vm_flags(address)
    block[:] = 1  # the memory is ordinary, writable memory
    assert int(block.sum()) == block.nbytes


def test_no_huge_page_advice_is_skipped_for_small_blocks_and_without_madvise(monkeypatch):
    calls = []
    monkeypatch.setattr(_lanes, "_MADVISE", lambda *args: calls.append(args) or 0)
    _lanes._no_huge_pages(np.empty(_lanes._PAGE, dtype=np.uint8))
    assert calls == []  # too small to hold two whole pages
    block = np.empty(3 * _lanes._PAGE, dtype=np.uint8)
    _lanes._no_huge_pages(block)
    (start, length, advice), = calls
    assert start % _lanes._PAGE == 0 and length % _lanes._PAGE == 0 and length >= _lanes._PAGE
    assert block.ctypes.data <= start and start + length <= block.ctypes.data + block.nbytes
    monkeypatch.setattr(_lanes, "_MADVISE", None)
    _lanes._no_huge_pages(block)  # nothing to call: the block is used as it is
    assert len(calls) == 1


def test_blocks_without_arrows_mimalloc_pool(monkeypatch):
    monkeypatch.setattr(_lanes, "_POOL", None)
    lane = Lane(np.uint32, block_bytes=256)
    values = lane.empty(10)
    values[:] = 7
    assert values.tolist() == [7] * 10
    assert values.base.flags.owndata  # the block: a plain NumPy array


@pytest.mark.parametrize("dtype", [np.uint8, np.float64, np.dtype((np.uint32, (4,))), np.dtype("<i2")])
@pytest.mark.parametrize("n", [0, 1, 1000])
@pytest.mark.parametrize("enabled", [True, False])
def test_lanes_empty_is_like_np_empty(dtype, n, enabled):
    lanes = Lanes(enabled=enabled, block_bytes=4096)
    for _ in range(3):  # the later ones cross blocks
        column = lanes.empty("x", n, dtype)
        expected = np.empty(n, dtype=dtype)
        assert (column.shape, column.dtype) == (expected.shape, expected.dtype)
        assert column.flags.c_contiguous and column.flags.writeable
        column[...] = 3
        assert (column == 3).all()


@pytest.mark.parametrize("enabled", [True, False])
def test_lanes_columns_make_each_column_like_empty(enabled):
    lanes = Lanes(enabled=enabled, block_bytes=4096)
    make = lanes.columns({"a": np.uint8, "b": np.dtype("<f8"), "c": np.uint16})
    made = [make(n) for n in (10, 0, 300, 1000)]  # the last two cross blocks
    for arrays, n in zip(made, (10, 0, 300, 1000), strict=True):
        assert [(a.shape, a.dtype) for a in arrays] == [((n,), np.dtype(np.uint8)),
                                                        ((n,), np.dtype("<f8")),
                                                        ((n,), np.dtype(np.uint16))]
        for k, a in enumerate(arrays):
            assert a.flags.c_contiguous and a.flags.writeable
            a[:] = (k + n) % 200
    for arrays, n in zip(made, (10, 0, 300, 1000), strict=True):  # nothing overwritten
        assert all((a == (k + n) % 200).all() for k, a in enumerate(arrays))
    if enabled:  # a lane of its own per column, batch after batch back to back
        first, second, last = made[0][1], made[2][1], made[3][1]
        assert second.ctypes.data - first.ctypes.data == 10 * 8
        # and Lanes.empty takes the same lanes
        assert lanes.empty("b", 1, np.float64).ctypes.data == last.ctypes.data + 1000 * 8


@pytest.mark.parametrize("name", ["sp01_decay_curves_example.bin", "spf1_phasors_example.bin",
                                  "it01_intensity-tracing-first1000.bin"])
def test_fixed_record_reads_in_lanes_equal_reads_in_plain_arrays(monkeypatch, name):
    """Small batches in tiny blocks: columns (SP01's are 256 counts per record) cross
    many block boundaries."""
    import bindf

    path = Path(__file__).parent / "data" / name
    plain = bindf.read(path, output="arrow", batch_size=7)
    monkeypatch.setattr(FormatReader, "output_lanes", lambda self, *args, **kwargs: Lanes(block_bytes=3000))
    assert bindf.read(path, output="arrow", batch_size=7).equals(plain)
    assert bindf.read(path, output="arrow").equals(plain)


def _record_lanes_used(monkeypatch) -> list[bool]:
    """Whether each output_lanes() call of the reads that follow gave lanes (True) or
    plain arrays (False), in call order."""
    used: list[bool] = []
    original = FormatReader.output_lanes

    def spy(self, shares=1, input_bytes=None, rows=None):
        lanes = original(self, shares, input_bytes, rows)
        used.append(lanes.enabled)
        return lanes

    monkeypatch.setattr(FormatReader, "output_lanes", spy)
    return used


def test_only_eager_reads_of_large_inputs_use_lanes(monkeypatch):
    """A stream of batches (iter_batches, chunked reads, scans) must not pin a block per
    column for batches it has let go: only eager reads, which keep every batch, and
    only of inputs of MIN_INPUT_BYTES or more, get lanes."""
    import polars as pl

    import bindf

    used = _record_lanes_used(monkeypatch)
    path = Path(__file__).parent / "data" / "spf1_phasors_example.bin"
    bindf.read(path, output="arrow")
    assert used == [False]  # a small input
    monkeypatch.setattr(_lanes, "MIN_INPUT_BYTES", 0)
    for read in (lambda: bindf.read(path, output="polars"),
                 lambda: bindf.open(path).to_arrow()):
        used.clear()
        read()
        assert used and all(used)
    for stream in (lambda: list(bindf.iter_batches(path)),
                   lambda: list(bindf.read(path, output="arrow", chunksize=3)),
                   lambda: pl.scan_spf1(path).collect()):
        used.clear()
        stream()
        assert used and not any(used)


@pytest.mark.parametrize(("name", "small_limit"), [
    ("spf1_phasors_example.bin", 3),  # fixed records: the records' bytes are known
    ("20250723_092534_data.apx", 10),  # AstroPix: at least 5 bytes per row
    ("vinj0_th1030_20250729-185248.apx", 10),
    ("quad_chip_data.bin", 10),  # A-STEP: at least 5 bytes per frame
])
def test_eager_reads_of_a_few_rows_use_plain_arrays(monkeypatch, name, small_limit):
    """An eager read with a row limit decodes only the start of a large file: a
    ``head(10)`` must not make a block per column (16 MiB each) for its ten rows."""
    import bindf

    used = _record_lanes_used(monkeypatch)
    monkeypatch.setattr(_lanes, "MIN_INPUT_BYTES", 1000)  # these files count as large
    path = Path(__file__).parent / "data" / name
    whole = bindf.read(path, output="arrow", n_rows=10**9)
    assert used and all(used)
    used.clear()
    head = bindf.read(path, output="arrow", n_rows=small_limit)
    assert used and not any(used)
    assert head.equals(whole.slice(0, small_limit))


MIB = 1 << 20


@pytest.mark.parametrize(("input_bytes", "shares", "block"), [
    (None, 1, None),                        # a stream: plain arrays
    (_lanes.MIN_INPUT_BYTES - 1, 1, None),  # small input: plain arrays
    (1 << 30, 1, _lanes.BLOCK_BYTES),
    (1 << 30, 64, _lanes.BLOCK_BYTES),      # shares of 16 MiB
    (1 << 30, 65, _lanes.SMALL_BLOCK_BYTES),
    (100_000_000, 25, _lanes.SMALL_BLOCK_BYTES),
    (9 * MIB, 1, _lanes.SMALL_BLOCK_BYTES),
])
def test_small_shares_get_small_blocks(input_bytes, shares, block):
    """Memory reserved follows the input, not the number of ranges that share it: a
    share smaller than BLOCK_BYTES gets blocks of SMALL_BLOCK_BYTES."""
    lanes = lanes_for(input_bytes, shares)
    assert lanes.enabled == (block is not None)
    if block is not None:
        assert lanes.block_bytes == block


def _lane_chunks(lane: Lane, sizes: list[int], first: int = 0) -> list[pa.Array]:
    chunks = []
    for n in sizes:
        values = lane.empty(n)
        values[:] = np.arange(first, first + n)
        first += n
        chunks.append(pa.array(values))
    return chunks


def test_back_to_back_chunks_are_joined_without_a_copy():
    import gc

    from bindf.frontends.output import joined_adjacent_chunks

    lane = Lane(np.uint32, block_bytes=400)  # 100 values per block
    chunks = _lane_chunks(lane, [30, 0, 50, 20, 40, 10])  # a new block at the 40
    column = pa.chunked_array(chunks)
    table = pa.table({"x": column, "y": pa.chunked_array([c.cast(pa.float64()) for c in chunks])})
    joined = joined_adjacent_chunks(table)
    assert joined.equals(table) and joined.schema.equals(table.schema)
    x = joined.column("x")
    assert [len(c) for c in x.chunks] == [100, 50]  # one chunk per block
    assert x.chunk(0).buffers()[1].address == chunks[0].buffers()[1].address  # no copy
    assert [len(c) for c in joined.column("y").chunks] == [30, 0, 50, 20, 40, 10]  # scattered
    expected = list(range(150))
    del lane, chunks, column, table
    gc.collect()
    assert x.to_pylist() == expected  # the joined chunk keeps the memory alive


def test_chunks_that_are_not_joined():
    from bindf.frontends.output import joined_adjacent_chunks

    lane = Lane(np.int64, block_bytes=1 << 12)
    a, b, c = _lane_chunks(lane, [5, 6, 7])
    with_nulls = pa.array(np.zeros(6, np.int64), mask=np.arange(6) % 2 == 0)
    table = pa.table({  # 18 rows each
        "nulls": pa.chunked_array([a, with_nulls, c]),  # a chunk with nulls stays apart
        "reversed": pa.chunked_array([c, b, a]),  # back to back only in the other order
        "one": pa.chunked_array([pa.array(np.arange(18))]),
        "text": pa.chunked_array([pa.array(["x"] * 9), pa.array(["y"] * 9)]),
        "sliced": pa.chunked_array([a.slice(0, 4), a.slice(4), b, c]),  # offsets count
    })
    joined = joined_adjacent_chunks(table)
    assert joined.equals(table)
    assert [c.num_chunks for c in joined.columns] == [3, 3, 1, 2, 1]
    assert joined.column("sliced").to_pylist() == list(range(18))
    nothing = pa.table({"x": pa.chunked_array([a, c])})  # not back to back
    assert joined_adjacent_chunks(nothing) is nothing


@pytest.mark.parametrize("output", ["polars", "arrow"])
def test_eager_read_in_lanes_gives_one_chunk_per_block(monkeypatch, output):
    """An eager read's batches carved out of lanes reach the user as one chunk per
    column and block, with the same values as a read in plain arrays."""
    import bindf

    path = Path(__file__).parent / "data" / "20250723_092534_data.apx"
    # (n_rows: streamed in chunks, not read whole as small files are)
    plain = bindf.read_apx(path, output=output, batch_size=7, threads=1, n_rows=10**6)
    monkeypatch.setattr(FormatReader, "output_lanes", lambda self, *args, **kwargs: Lanes())
    in_lanes = bindf.read_apx(path, output=output, batch_size=7, threads=1, n_rows=10**6)
    assert in_lanes.equals(plain)
    if output == "arrow":
        assert max(c.num_chunks for c in plain.columns) > 10
        assert all(c.num_chunks == 1 for c in in_lanes.columns)
    else:
        assert set(in_lanes.n_chunks("all")) == {1}


def test_numpy_to_arrow_is_pa_array():
    """The wrapping shortcut gives what pa.array gives, for every kind of array."""
    from bindf.formats._base import numpy_to_arrow

    ints = np.arange(12, dtype=np.int64)
    record = np.zeros(4, dtype=[("a", "<u4"), ("b", "<f8")])
    record["a"] = [1, 2, 3, 4]
    cases = [
        (ints, None), (ints, pa.int64()), (ints.astype(np.uint8), pa.uint8()),
        (ints.astype(np.uint8), pa.int16()),  # another target type: converted
        (ints[::3], None),  # strided
        (ints.reshape(3, 4)[:, 1], None),
        (record["a"], None), (record["b"], pa.float64()),  # fields of a record array
        (np.arange(5, dtype=np.float32), None), (np.zeros(0, np.uint16), None),
        (np.array([True, False, True]), None),  # bits in Arrow
        (np.array([0, 1, 2], dtype="datetime64[ns]"), None),
        (np.ma.masked_array(np.arange(4), mask=[0, 1, 0, 1]), None),
    ]
    read_only = np.arange(6, dtype=np.int32)
    read_only.flags.writeable = False
    cases.append((read_only, None))
    for values, kind in cases:
        expected = pa.array(values, type=kind)
        got = numpy_to_arrow(values, kind)
        assert got.type == expected.type and got.equals(expected), (values, kind)
    wrapped = numpy_to_arrow(ints)
    assert wrapped.buffers()[1].address == ints.ctypes.data  # no copy
    with pytest.raises((pa.ArrowException, ValueError)):
        numpy_to_arrow(ints.astype(">i8"))  # as pa.array: no non-native byte order


def test_grouped_batches_join_back_to_back_chunks():
    """Chunks carved out of lanes one after the other become one batch (each column one
    Arrow array over their memory) until a lane starts a new block, ``max_rows`` is
    reached or a chunk cannot be wrapped; the values are the chunks' in order."""
    import gc

    from bindf.formats._base import grouped_batches

    schema = pa.schema([("a", pa.uint8()), ("b", pa.int64())])
    lanes = Lanes(block_bytes=800)  # 100 int64 values per block
    rows = [30, 0, 30, 30, 30, 25, 10]  # the 4th chunk of b starts a new block
    chunks = []
    for i, n in enumerate(rows):
        a = lanes.empty("a", n, np.uint8)
        b = lanes.empty("b", n, np.int64)
        a[:] = i
        b[:] = np.arange(n) + 1000 * i
        chunks.append([a, b])
    chunks.insert(5, [np.full(5, 9, np.uint8), np.arange(10, dtype=np.int64)[::2]])  # strided
    expected = pa.Table.from_batches([pa.record_batch([pa.array(a), pa.array(b)], schema=schema)
                                      for a, b in chunks if len(a)])
    batches = list(grouped_batches(iter(chunks), schema, max_rows=70))
    del chunks, lanes
    gc.collect()  # the batches keep the lanes' memory alive
    assert pa.Table.from_batches(batches).equals(expected)
    # [30 + 30] (70 rows at most) [30] (b's next chunk in a new block) [30] (the strided
    # chunk is a batch of its own) [5] [25 + 10]
    assert [b.num_rows for b in batches] == [60, 30, 30, 5, 35]
    many = list(grouped_batches(iter([[np.zeros(3, np.uint8), np.zeros(3, np.int64)]]),
                                schema, max_rows=1))
    assert [b.num_rows for b in many] == [3]  # a chunk larger than max_rows: as it is
    assert list(grouped_batches(iter([]), schema, max_rows=10)) == []


def test_eager_apx_read_in_lanes_makes_few_batches(monkeypatch):
    """An eager AstroPix read in lanes hands the frontends a batch per run of back-to-back
    chunks (up to batch_size rows), not a batch per chunk; a row-limited read keeps a
    batch per chunk (it may stop after any)."""
    import bindf
    from bindf.formats import _base
    from bindf.formats.apx import ApxReader

    path = Path(__file__).parent / "data" / "20250723_092534_data.apx"
    monkeypatch.setattr("bindf.formats.apx._FIRST_READ", 512)  # many small chunks
    made: list[int] = []
    numpy_batch = _base.numpy_batch

    def count(arrays, schema):
        made.append(len(arrays[0]))
        return numpy_batch(arrays, schema)

    monkeypatch.setattr("bindf.formats.apx.numpy_batch", count)
    plain = bindf.read_apx(path, output="arrow", chunk_bytes=512, threads=1, n_rows=10**6)
    assert len(made) > 20  # a batch per chunk (no lanes for this small file)
    monkeypatch.setattr(FormatReader, "output_lanes", lambda self, *args, **kwargs: Lanes())

    def reader_batches(**kwargs):
        reader = ApxReader(Source(str(path)), threads=1, chunk_bytes=512)
        reader.keeps_every_batch = True  # as in an eager read
        return list(reader.iter_batches(**kwargs))

    grouped = reader_batches()
    assert pa.Table.from_batches(grouped).equals(plain)
    assert len(grouped) == 1
    capped = reader_batches(batch_size=100)
    assert pa.Table.from_batches(capped).equals(plain)
    assert 7 < len(capped) < len(made) and max(b.num_rows for b in capped) <= 100
    made.clear()
    limited = bindf.read_apx(path, output="arrow", chunk_bytes=512, threads=1, n_rows=10**6)
    assert limited.equals(plain) and len(made) > 20


def test_lanes_of_known_rows_hold_each_column_in_one_block():
    """``rows`` sizes each lane's first block to its whole column (subarray dtypes
    count their values), so that every batch of the column lies back to back in it;
    a column that outgrows it goes on in ordinary blocks."""
    lanes = Lanes(block_bytes=1 << 12, rows=1000)
    parts = [lanes.empty("x", n, np.float64) for n in (300, 300, 400)]
    assert [p.ctypes.data for p in parts[1:]] == [parts[0].ctypes.data + 300 * 8,
                                                  parts[0].ctypes.data + 600 * 8]
    wide = [lanes.empty("w", n, np.dtype((np.uint16, 4))) for n in (999, 1)]
    assert wide[1].ctypes.data == wide[0].ctypes.data + 999 * 4 * 2
    more = lanes.empty("x", 10, np.float64)  # past the known rows: a new block
    assert more.ctypes.data != parts[2].ctypes.data + 400 * 8
    assert lanes_for(_lanes.MIN_INPUT_BYTES, rows=7).rows == 7


@pytest.mark.parametrize("name", ["spf1_phasors_example.bin", "sp01_decay_curves_example.bin"])
def test_fixed_record_eager_read_gives_one_chunk_per_raw_column(monkeypatch, name):
    """A fixed-record read knows its rows: each raw column is one chunk, whatever the
    batch size, with the values of a read in plain arrays."""
    import bindf

    path = Path(__file__).parent / "data" / name
    plain = bindf.read(path, output="arrow", batch_size=5)
    monkeypatch.setattr(_lanes, "MIN_INPUT_BYTES", 0)  # the small example counts as large
    in_lanes = bindf.read(path, output="arrow", batch_size=5)
    assert in_lanes.equals(plain) and max(c.num_chunks for c in plain.columns) > 1
    raw = {"spf1_phasors_example.bin": ["time_ns", "channel", "harmonic", "g", "s"],
           "sp01_decay_curves_example.bin": ["count"]}[name]
    assert [in_lanes.column(c).num_chunks for c in raw] == [1] * len(raw)


def test_pandas_columns_over_back_to_back_chunks_are_views_not_copies():
    """A null-free numeric column whose chunks lie back to back in writable memory (an
    eager read's column in one lane block) becomes a pandas column over that memory, no
    copy; two columns over the same memory do not stay views of it."""
    from bindf.frontends.output import table_to_output

    lane = Lane(np.int64, block_bytes=1 << 12)
    chunks = _lane_chunks(lane, [3, 4, 5])
    columns = {"x": pa.chunked_array(chunks), "same": pa.chunked_array(chunks),
               "apart": pa.chunked_array([pa.array(np.arange(6)), pa.array(np.arange(6, 12))])}
    # never null, as readers declare such columns (nullable integers become masked arrays)
    table = pa.table(columns, schema=pa.schema([pa.field(name, pa.int64(), nullable=False)
                                                for name in columns]))
    address = chunks[0].buffers()[1].address
    del chunks
    frame = table_to_output(table, "pandas", None)
    x = frame["x"].to_numpy()
    assert x.ctypes.data == address  # the lane's own memory (writable: below)
    assert list(frame["x"]) == list(range(12)) == list(frame["same"]) == list(frame["apart"])
    assert frame["same"].to_numpy().ctypes.data != address  # copied: not an alias of x
    frame.loc[0, "x"] = 99
    assert frame.loc[0, "same"] == 0 and frame.loc[0, "x"] == 99


@pytest.mark.parametrize("threads", [1, 2])
def test_pandas_copy_out_of_lane_blocks_discards_what_it_copied(monkeypatch, threads):
    """An AstroPix read into pandas copies its columns out of lane blocks and discards
    each copied megabyte of a block at once (the block is freed only with its last
    slice): the frame equals the one pyarrow makes from the same read."""
    import bindf
    from bindf.frontends import output

    path = Path(__file__).parent / "data" / "20250723_092534_data.apx"
    expected = bindf.read_apx(path, output="arrow", threads=threads).to_pandas()
    # blocks of 256 bytes: every column spans several, so none is a view of one block
    monkeypatch.setattr(FormatReader, "output_lanes",
                        lambda self, *args, **kwargs: Lanes(block_bytes=256))
    monkeypatch.setattr(output, "DISCARD_STEP_BYTES", 64)
    discarded: list[int] = []
    real_discard = output.discard
    monkeypatch.setattr(output, "discard", lambda piece: (discarded.append(piece.nbytes),
                                                          real_discard(piece)))
    frame = bindf.read_apx(path, chunk_bytes=512, threads=threads, n_rows=10**9)
    assert frame.equals(expected)
    assert len(discarded) > 18 and max(discarded) <= 64


def test_pandas_copy_of_a_larger_run_discards_whole_pages(tmp_path, monkeypatch):
    """The same with pages actually handed back: a 2 MB run (the real readouts repeated)
    in 64 KiB blocks, discarded 8 KiB at a time; every value survives."""
    from test_apx import apx_file_bytes
    from test_apx_log import _apx_readouts

    import bindf
    from bindf.frontends import output

    real = _apx_readouts(Path(__file__).parent / "data" / "20250723_092534_data.apx")
    readouts = [(k, 1000 * k, payload) for k in range(60) for _, payload in real]
    path = tmp_path / "long.apx"
    path.write_bytes(apx_file_bytes(readouts))
    expected = bindf.read_apx(path, output="arrow", threads=1).to_pandas()
    assert len(expected) > 40_000
    monkeypatch.setattr(FormatReader, "output_lanes",
                        lambda self, *args, **kwargs: Lanes(block_bytes=1 << 16))
    monkeypatch.setattr(output, "DISCARD_STEP_BYTES", 8192)
    for threads in (1, 2):
        assert bindf.read_apx(path, threads=threads, n_rows=10**9).equals(expected)


def test_pandas_copy_discards_nothing_when_buffers_overlap():
    """Two columns over one lane block's memory: copying one must not discard what the
    other still holds, so a table whose buffers overlap discards nothing."""
    from bindf.frontends import output

    block = _lanes.new_block(1 << 20)
    values = block[: 1 << 19].view(np.int64)
    values[:] = np.arange(len(values))
    shared = pa.py_buffer(values)
    one = pa.Array.from_buffers(pa.int64(), len(values), [None, shared])
    table = pa.table({"a": pa.chunked_array([one[: 1000], one[1000:]]),
                      "b": pa.chunked_array([one])})
    assert not output._disjoint_buffers(table)
    frame = output.batches_to_output(table.to_batches(), table.schema, "pandas", None)
    assert frame["a"].tolist() == frame["b"].tolist() == list(range(len(values)))
    assert output._disjoint_buffers(pa.table({"a": [1, 2], "b": [3, 4]}))


def test_live_block_spans_forget_dead_blocks():
    block = _lanes.new_block(1 << 16)
    span = (block.ctypes.data, block.ctypes.data + block.nbytes)
    assert span in _lanes.live_block_spans()
    del block
    assert span not in _lanes.live_block_spans()


def test_discard_and_fault_in_touch_only_whole_pages_inside():
    data = np.arange(4 << 20, dtype=np.uint8)
    _lanes.discard(data[:100])  # less than a page: nothing
    _lanes.fault_in(data[:100])
    assert np.array_equal(data, np.arange(4 << 20, dtype=np.uint8))
    piece = data[5000:3_000_000]
    _lanes.discard(piece)  # the whole pages inside read as zeros, the rest is kept
    first = -(-piece.ctypes.data // 4096) * 4096 - data.ctypes.data
    last = (piece.ctypes.data + piece.nbytes) // 4096 * 4096 - data.ctypes.data
    assert not data[first:last].any()
    kept = np.arange(4 << 20, dtype=np.uint8)
    assert np.array_equal(data[:first], kept[:first])
    assert np.array_equal(data[last:], kept[last:])
