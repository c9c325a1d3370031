"""Output columns of many consecutive batches, carved out of large blocks.

Why: a reader decodes a large file batch by batch, and a streamed reader's batches are
small (one chunk of about a megabyte: columns of a few hundred KB). The first write to
freshly allocated memory costs a page fault per 4 KiB page plus the kernel zeroing it,
which for arrays this small is several times the cost of the write itself. NumPy asks
Linux for transparent huge pages (one fault per 2 MiB) only for allocations of at least
4 MiB, and an allocator rounds allocations of a few MB up (mimalloc by 6-18 %, measured).
A :class:`Lane` therefore allocates one column's memory in blocks of :data:`BLOCK_BYTES`
and hands out consecutive slices of them; each slice is an ordinary array that Arrow and
polars take without a copy. Used by the fixed-record formats, AstroPix and A-STEP.

Blocks come from Arrow's mimalloc memory pool when pyarrow has one (its default pool
on the usual builds), as the columns of Arrow's own readers do: mimalloc keeps freed
memory for a while and hands it to the next allocation, so a read that follows another
one (a notebook cell run again, a campaign read file by file) writes into memory that
is already mapped instead of faulting in fresh pages. Without that pool, blocks are
NumPy arrays.

On Linux every block is advised not to use transparent huge pages
(:func:`_no_huge_pages`), although both mimalloc's arenas and NumPy's large arrays ask
for them. Measured on a 2-core machine with Linux's usual ``madvise`` setting, in fresh
processes: a lane fills its last block only partly, and that block's last 2 MiB huge
page is resident in full, so each column of each AstroPix range wasted up to 2 MiB
(18 columns × 2 ranges of a 70 MB run: peak memory 1.11-1.12 × the output, 1.06 with
4 KiB pages; A-STEP 1.32 → 1.23); and a first read often waited for the kernel to
assemble huge pages (its ``defrag`` setting): the 70 MB run's first read took
47-318 ms with huge pages, 61-129 ms without, in 10 processes each; A-STEP's 200 MB
0.86-1.64 s against 0.36-0.61 s. Reads into memory already mapped (the next reads of a
process) ran at the same speed either way (AstroPix, best of 20: 39-42 ms and
38-41 ms).

A slice keeps its whole block alive, so a caller that keeps a single batch of a read
pins up to one block per column; that is why only bulk reads of large inputs use lanes
(:func:`lanes_for`), and small files, follow polls, header probes and reads of a few
rows of a large file do not (see :meth:`bindf.formats._base.FormatReader.output_lanes`).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

#: Size of one block of a lane. Large enough for few blocks per read and next to no
#: allocator rounding (mimalloc adds ~2 MB per 16 MiB, against 6-18 % on blocks of a
#: few MB); small enough that a finished read's partly used last block per column
#: reserves little (its untouched pages are not resident).
BLOCK_BYTES = 16 << 20
#: Size of one block when the input, or each range's share of it, is smaller than
#: :data:`BLOCK_BYTES` (see :func:`lanes_for`).
SMALL_BLOCK_BYTES = 1 << 20
#: Inputs below this size read into plain arrays (their columns fit one small block).
MIN_INPUT_BYTES = 8 << 20
_ALIGN = 64  # Arrow's recommended buffer alignment, for the start of a block


def _mimalloc_pool() -> pa.MemoryPool | None:
    try:
        return pa.mimalloc_memory_pool()
    except (AttributeError, NotImplementedError):  # a pyarrow built without mimalloc
        return None


_POOL = _mimalloc_pool()


#: Every block still alive (its slices keep it so), by ``id``: its ``(start, end)``
#: addresses and a reference that forgets it when it dies. Memory that only bindf's
#: output columns use, which a conversion that owns them may discard once copied (see
#: :func:`live_block_spans`). Blocks are made on any thread of a read; single dict
#: operations need no lock (a lock taken in the reference's callback, which the
#: garbage collector may run while this thread holds it, could deadlock).
_BLOCKS: dict[int, tuple[int, int, weakref.ref[np.ndarray]]] = {}


def new_block(nbytes: int) -> np.ndarray:
    """``nbytes`` of uninitialised memory (uint8) for a lane (see the module docstring)."""
    if _POOL is None:
        block = np.empty(nbytes, dtype=np.uint8)
    else:
        block = np.frombuffer(pa.allocate_buffer(nbytes, memory_pool=_POOL), dtype=np.uint8)
    _no_huge_pages(block)
    key = id(block)
    _BLOCKS[key] = (block.ctypes.data, block.ctypes.data + block.nbytes,
                    weakref.ref(block, lambda _, key=key: _BLOCKS.pop(key, None)))
    return block


def live_block_spans() -> list[tuple[int, int]]:
    """``(start, end)`` addresses of the blocks still alive, sorted: memory of bindf's
    output columns and nothing else (no user's buffer, no file, no reader's scratch)."""
    return sorted((start, end) for start, end, alive in list(_BLOCKS.values())
                  if alive() is not None)


def _libc_function(name: str, argtypes: list[Any]) -> Any:
    """The C library's function ``name`` (returning an int) on Linux; None elsewhere, or
    where the C library has none (``malloc_trim`` is glibc's, not musl's)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_MADVISE: Callable[[int, int, int], int] | None = (
    _libc_function("madvise", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
    if hasattr(mmap, "MADV_NOHUGEPAGE") else None)
_PAGE = mmap.PAGESIZE


def _advise_whole_pages(array: np.ndarray, advice: int) -> int:
    """``madvise(advice)`` on the whole pages inside ``array``'s memory (a page that
    other memory shares is left alone): its result, or 0 when there is no such page."""
    assert _MADVISE is not None  # (callers check: Linux only)
    start = -(-array.ctypes.data // _PAGE) * _PAGE
    end = (array.ctypes.data + array.nbytes) // _PAGE * _PAGE
    return _MADVISE(start, end - start, advice) if end > start else 0


def _no_huge_pages(block: np.ndarray) -> None:
    """Advise the kernel to back the whole pages inside ``block`` with ordinary pages,
    before anything touches them (why: the module docstring). Advice only: where it is
    refused or unavailable, the block is used as it is."""
    if _MADVISE is None or block.nbytes < 2 * _PAGE:
        return
    _advise_whole_pages(block, mmap.MADV_NOHUGEPAGE)


#: ``madvise`` advice that faults pages in writable without touching them (Linux 5.14+;
#: Python's ``mmap`` names it from 3.13 on).
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
#: Whether the kernel took that advice (an older kernel refuses it: never asked again).
_populate_works = _MADVISE is not None


def fault_in(array: np.ndarray) -> None:
    """Fault in the whole pages of ``array``'s memory now, ready for writing, without
    changing its contents: a thread that has time to spare does this ahead of the one
    that will write there (which would otherwise take a page fault, and wait for the
    kernel to zero the page, at every 4 KiB or 2 MiB). Pages already there are left
    alone; memory that is no longer mapped is refused by the kernel, harmlessly, so a
    caller may race with whoever frees it."""
    global _populate_works
    if not _populate_works or array.nbytes < _PAGE:
        return
    if _advise_whole_pages(array, _MADV_POPULATE_WRITE) != 0 \
            and ctypes.get_errno() == errno.EINVAL:  # an older kernel: no such advice
        _populate_works = False


def discard(array: np.ndarray) -> None:
    """Hand the whole pages inside ``array``'s memory back to the system now
    (``MADV_DONTNEED``), though the memory stays allocated: what they held is lost (a
    page touched again reads as zeros). Only for memory that nothing reads again, such
    as the part of a lane block a pandas conversion has copied (its block is freed only
    once its last slice is: up to 16 MiB per column otherwise stay resident meanwhile)."""
    if _MADVISE is None or array.nbytes < _PAGE:
        return
    _advise_whole_pages(array, mmap.MADV_DONTNEED)


class Lane:
    """One column's memory: :meth:`reserve` room for a batch, then :meth:`keep` its rows.

    Used by one thread at a time. Between ``reserve`` and ``keep`` nothing else may be
    taken from the lane; ``keep`` returns the first ``n`` values and gives the unused
    rest of the reservation back, so the next batch follows directly after.

    Every call is a few Python operations on the current block viewed as values (a slice
    of it per batch): a reader asks for each column of each chunk, a thousand times per
    70 MB AstroPix run.
    """

    def __init__(self, dtype: np.dtype | type, block_bytes: int = BLOCK_BYTES,
                 first_block_bytes: int | None = None) -> None:
        self.dtype = np.dtype(dtype)
        self.block_bytes = block_bytes
        #: Size of the first block when it differs (a column of known length, see
        #: :class:`Lanes`); None once that block exists.
        self._first_block_bytes = first_block_bytes
        self._values = np.empty(0, dtype=self.dtype)  # the current block, as values
        self._next = 0  # the first value of the block not handed out
        self._reserved: np.ndarray | None = None

    def _new_block(self, capacity: int) -> None:
        # A new block: the old one lives on in the slices already handed out.
        itemsize = self.dtype.itemsize
        size = self.block_bytes
        if self._first_block_bytes is not None:
            size, self._first_block_bytes = self._first_block_bytes, None
        block = new_block(max(size, capacity * itemsize + _ALIGN))
        start = -block.ctypes.data % _ALIGN
        usable = (len(block) - start) // itemsize
        self._values = block[start:start + usable * itemsize].view(self.dtype)
        self._next = 0

    def reserve(self, capacity: int) -> np.ndarray:
        """Room for up to ``capacity`` values (uninitialised)."""
        if self._next + capacity > len(self._values):
            self._new_block(capacity)
        self._reserved = self._values[self._next:self._next + capacity]
        return self._reserved

    def keep(self, n: int) -> np.ndarray:
        """The first ``n`` values of the last reservation, now owned by the caller."""
        reserved = self._reserved
        if reserved is None or n > len(reserved):
            raise ValueError("keep() needs a reservation of at least n values")
        self._reserved = None
        # The next slice starts right after this one (not at the next 64-byte boundary):
        # the batches of a read then lie back to back, and the eager frontends join them
        # into one chunk per block without a copy (output.joined_adjacent_chunks).
        # Every slice stays aligned to its item size, all that numpy, Arrow and polars
        # need.
        self._next += n
        return reserved[:n]

    def empty(self, n: int) -> np.ndarray:
        """``n`` values (uninitialised), like ``np.empty(n, dtype)``: the same as
        ``reserve(n)`` then ``keep(n)``."""
        start = self._next
        if start + n > len(self._values):
            self._new_block(n)
            start = 0
        self._next = start + n
        return self._values[start:start + n]


class Lanes:
    """A :class:`Lane` per column name, created on first use; or plain ``np.empty``.

    ``Lanes(enabled=False)`` allocates every array on its own, for reads that do not
    keep every batch or are too small to profit (see :func:`lanes_for` and
    :meth:`~bindf.formats._base.FormatReader.output_lanes`); callers need not care
    which they got.

    ``rows``: how many rows every column of the read will hold, where the reader knows
    it (a fixed-record read: the records in the file). Each lane's first block then
    holds exactly its column, so that every batch of the column lies back to back in one
    block: one chunk for polars and Arrow
    (:func:`bindf.frontends.output.joined_adjacent_chunks`), and a pandas column
    without a copy. A lane whose column
    outgrows it (it should not) goes on in blocks of ``block_bytes``.
    """

    def __init__(self, *, enabled: bool = True, block_bytes: int = BLOCK_BYTES,
                 rows: int | None = None) -> None:
        self.enabled = enabled
        self.block_bytes = block_bytes
        self.rows = rows
        self._lanes: dict[str, Lane] = {}

    def lane(self, name: str, dtype: np.dtype | type, values_per_row: int = 1) -> Lane:
        lane = self._lanes.get(name)
        if lane is None or lane.dtype != dtype:
            first = (None if self.rows is None
                     else self.rows * values_per_row * np.dtype(dtype).itemsize + _ALIGN)
            lane = self._lanes[name] = Lane(dtype, self.block_bytes, first)
        return lane

    def reserve(self, name: str, capacity: int, dtype: np.dtype | type) -> np.ndarray:
        if not self.enabled:
            return np.empty(capacity, dtype=dtype)
        return self.lane(name, dtype).reserve(capacity)

    def keep(self, name: str, array: np.ndarray, n: int) -> np.ndarray:
        """The first ``n`` values of ``array``, which :meth:`reserve` returned for ``name``."""
        if not self.enabled:
            return array[:n]
        return self._lanes[name].keep(n)

    def empty(self, name: str, n: int, dtype: np.dtype | type) -> np.ndarray:
        """Like ``np.empty(n, dtype)``; a subarray dtype gives shape ``(n, *dtype.shape)``."""
        dtype = np.dtype(dtype)
        if not self.enabled:
            return np.empty(n, dtype=dtype)
        if dtype.shape:  # lanes hold flat values: n records of k values each
            per_row = int(np.prod(dtype.shape))
            flat = self.lane(name, dtype.base, per_row).empty(n * per_row)
            return flat.reshape((n, *dtype.shape))
        return self.lane(name, dtype).empty(n)

    def columns(self, dtypes: Mapping[str, np.dtype | type]) -> Callable[[int], list[np.ndarray]]:
        """``empty(n)``: ``n`` uninitialised values for each column of ``dtypes`` (flat
        dtypes; name → dtype), in its order: :meth:`empty` for a fixed set of columns,
        which a reader asks for chunk after chunk, without looking its lanes up each
        time."""
        if not self.enabled:
            plain = [np.dtype(dtype) for dtype in dtypes.values()]
            return lambda n: [np.empty(n, dtype=dtype) for dtype in plain]
        lanes = [self.lane(name, np.dtype(dtype)).empty for name, dtype in dtypes.items()]
        return lambda n: [empty(n) for empty in lanes]


def lanes_for(input_bytes: int | None, shares: int = 1, rows: int | None = None) -> Lanes:
    """Lanes for a bulk read of ``input_bytes`` (unknown size: plain arrays), one of
    ``shares`` that split the input between them (an AstroPix run cut into byte ranges,
    each range with lanes of its own).

    Blocks are :data:`BLOCK_BYTES` when a share of the input is at least that large,
    else :data:`SMALL_BLOCK_BYTES`. Why: memory reserved grows with blocks × columns ×
    shares whether or not it is touched, and a 70 MB run cut into 16 ranges of 18
    columns reserved 10 GB of 16 MiB blocks for 0.2 GB of output (memory that counts
    against a system that does not overcommit). Measured on such reads, 1 MiB blocks
    also kept the peak resident memory lowest (70 MB run on 8 threads: 289 MB, against
    334 MB with 16 MiB blocks and 341 MB with blocks of one share, ~5 MiB; a 9 MB run
    on 2 threads: 45, 56 and 82 MB), at the same speed.

    ``rows``: the rows of every column, where the read knows them (see :class:`Lanes`)."""
    if input_bytes is None or input_bytes < MIN_INPUT_BYTES:
        return Lanes(enabled=False)
    share = -(-input_bytes // max(shares, 1))
    return Lanes(block_bytes=BLOCK_BYTES if share >= BLOCK_BYTES else SMALL_BLOCK_BYTES,
                 rows=rows)


_MALLOC_TRIM: Callable[[int], int] | None = _libc_function("malloc_trim", [ctypes.c_size_t])


def release_unused_memory() -> None:
    """Ask Arrow's memory pool, and the C library's allocator, to return the memory they
    keep after frees to the operating system now (mimalloc otherwise does so after a
    short delay, glibc only from the top of its heap); used where a conversion drops
    memory it will not reuse (see ``bindf.frontends.output``). Columns that readers
    derive with numpy (ITT1's ``channel``, chunk by chunk) live in the C heap: their
    freed memory stayed resident (a 200 MB ITT1 file into pandas: peak 1.15 times the
    output, 1.07 with the heap trimmed). Each call costs a few microseconds when there
    is nothing to return."""
    if _POOL is not None:
        _POOL.release_unused()
    default = pa.default_memory_pool()
    if _POOL is None or default.backend_name != _POOL.backend_name:
        default.release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
