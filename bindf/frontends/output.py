"""Arrow batches → the frame the user asked for, with the header attached.

This is the only place that converts Arrow to pandas and polars; the other way
(frames to Arrow, for the writers and Parquet) is :func:`bindf._frames.to_arrow_table`.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from .._frames import (  # noqa: F401 - re-exported
    get_polars_info,
    info_of,
    set_pandas_info,
    set_polars_info,
    shared,
    unshared,
)
from .._lanes import discard, live_block_spans, release_unused_memory
from .._params import check_count
from .._threads import run_all, shared_executor
from ..arrow import attach_info

Output = Literal["pandas", "polars", "arrow"]
Frame: TypeAlias = pd.DataFrame | pl.DataFrame | pa.Table
#: The kind of frame a chunked read or a follow hands out (``ChunkedReader[pl.DataFrame]``
#: for ``output="polars"``: the stub's overloads pick it from ``output=``).
FrameT = TypeVar("FrameT")
OUTPUTS = ("pandas", "polars", "arrow")
#: pandas' ``dtype_backend`` (pandas >= 2 readers); ``None`` means the default.
DtypeBackend = Literal["numpy_nullable", "pyarrow"]
DTYPE_BACKENDS = ("numpy_nullable", "pyarrow")


def check_output(output: str, dtype_backend: str | None = None) -> None:
    """Validate ``output`` and ``dtype_backend`` (which only pandas output takes)."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
    if dtype_backend is None:
        return
    if dtype_backend not in DTYPE_BACKENDS:
        raise ValueError(f"dtype_backend must be one of {DTYPE_BACKENDS}, not {dtype_backend!r}")
    if output != "pandas":
        raise ValueError(f"dtype_backend applies to pandas output only; output={output!r} "
                         "is Arrow-backed already")


def path_type_for(output: Output, dtype_backend: DtypeBackend | None = None) -> pa.DataType:
    """The Arrow type a read for ``output`` makes its ``include_file_paths`` column of:
    whichever its conversion turns into the library's own text column with least memory
    (see :attr:`~bindf.frontends.batches.ReadPlan.path_type`).

    ``string_view`` (16 bytes a row, every row of a file pointing at one copy of its
    path) for polars, which takes views as its strings, and for pandas' default backend
    where it makes object columns of text (pandas 2; see :func:`_shared_text`).
    ``string`` for Arrow consumers, and for pandas' Arrow-backed text (pandas 3's
    ``str``, ``dtype_backend="pyarrow"``), which takes a ``string`` column without
    copying its bytes (views would be written out again: 1.3 GB for 8 x 50 MB runs), and
    for ``numpy_nullable``, whose pandas makes its own column."""
    if output == "polars":
        return pa.string_view()
    # (asked each time, of a table's conversion as the frame's: pandas 2.x users may
    # switch future.infer_string on, which pyarrow 17 follows for arrays, not tables)
    if output == "pandas" and dtype_backend is None \
            and pa.table({"a": ["a"]}).to_pandas()["a"].dtype == object:
        return pa.string_view()
    return pa.string()


def batches_to_output(
    batches: list[pa.RecordBatch], schema: pa.Schema, output: Output,
    info: dict[str, Any] | None, dtype_backend: DtypeBackend | None = None,
    threads: int = 1,
) -> Frame:
    """Like :func:`table_to_output`, but *takes ownership* of ``batches`` (the list is
    emptied), so that pandas conversion can free Arrow memory as it goes. ``threads``:
    how many threads a polars conversion may use (see :func:`table_to_polars`)."""
    table = pa.Table.from_batches(batches, schema=schema)
    batches.clear()
    if output != "pandas":  # (pandas copies every column anyway, releasing as it goes)
        table = joined_adjacent_chunks(table)
    holder = [table]
    del table
    return _owned_to_output(holder, output, info, dtype_backend, threads)


def joined_adjacent_chunks(table: pa.Table) -> pa.Table:
    """``table`` with the chunks of each integer or float column that lie back to back in
    memory (an eager read's batches carved out of one lane block, see
    :mod:`bindf._lanes`) joined into one chunk, without copying a value.

    Why: polars pays about 8 µs per chunk and column to take an Arrow table (an AstroPix
    read of 70 MB makes 70 batches of 18 columns: 8 ms), Arrow users iterate chunks, and
    a one-chunk column is what they would ask for with ``combine_chunks``, which copies.
    The joined chunk's buffer keeps the original chunks, and with them their memory,
    alive. Columns with nulls, other types or scattered chunks stay as they are.
    """
    columns = table.columns
    joined = [_joined_column(column) for column in columns]
    if all(new is old for new, old in zip(joined, columns)):
        return table
    return pa.Table.from_arrays(joined, schema=table.schema)


def _joined_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if column.num_chunks < 2 or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return column
    width = kind.bit_width // 8
    runs = _adjacent_runs(column.chunks, width)
    if all(len(run) == 1 for run in runs):  # nothing to join: the column as it was
        return column
    return pa.chunked_array([run[0] if len(run) == 1 else _one_chunk(run, kind, width)
                             for run in runs], type=kind)


def _adjacent_runs(chunks: list[pa.Array], width: int) -> list[list[pa.Array]]:
    """``chunks`` (of a fixed-width type of ``width`` bytes) grouped into runs that lie
    back to back in memory, in order; empty chunks left out, a chunk with nulls a run of
    its own."""
    runs: list[list[pa.Array]] = []
    end = -1  # address right after the last chunk of the current run
    for chunk in chunks:
        if not len(chunk):  # holds nothing (and its address may be anywhere): dropped
            continue
        validity, data = chunk.buffers()
        if validity is not None or data is None:  # nulls: a chunk of its own
            runs.append([chunk])
            end = -1
            continue
        start = data.address + chunk.offset * width
        if start == end:
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
        end = start + len(chunk) * width
    return runs


def _one_chunk(run: list[pa.Array], kind: pa.DataType, width: int) -> pa.Array:
    """Chunks that lie back to back in memory as one array over the same memory (the
    buffer holds ``run``, so their memory lives as long as it does)."""
    first = run[0]
    start = first.buffers()[1].address + first.offset * width
    rows = sum(len(chunk) for chunk in run)
    memory = pa.foreign_buffer(start, rows * width, base=run)
    return pa.Array.from_buffers(kind, rows, [None, memory])


def table_to_output(table: pa.Table, output: Output, info: dict[str, Any] | None,
                    dtype_backend: DtypeBackend | None = None) -> Frame:
    """Convert a table to ``output`` and attach ``info`` the way each library allows.

    The table is consumed: pandas conversion releases its memory as it goes (pyarrow's
    ``self_destruct``), so the caller must not use ``table`` afterwards.
    ``dtype_backend`` (pandas output only) is pandas' option: ``None`` (default, numpy
    columns), ``"numpy_nullable"`` (see :func:`_owned_table_to_pandas`) or ``"pyarrow"``
    (see :func:`table_to_arrow_backed_pandas`).
    """
    return _owned_to_output([table], output, info, dtype_backend)


def _owned_to_output(holder: list[pa.Table], output: Output,
                     info: dict[str, Any] | None,
                     dtype_backend: DtypeBackend | None = None, threads: int = 1) -> Frame:
    check_output(output, dtype_backend)
    if output == "pandas":
        if dtype_backend == "pyarrow":
            frame = table_to_arrow_backed_pandas(holder.pop())
        else:
            frame = _owned_table_to_pandas(holder, masked=dtype_backend == "numpy_nullable")
        if info is not None:
            set_pandas_info(frame, info)
        return frame
    table = holder.pop()
    if output == "arrow":
        return attach_info(table, info) if info is not None else table
    schema = table.schema
    pframe = table_to_polars(table, threads)
    if info is not None:
        set_polars_info(pframe, info, schema)
    return pframe


#: Tables with fewer rows are converted to polars on one thread.
PARALLEL_POLARS_MIN_ROWS = 1 << 20
#: Whether this polars has global categories (``pl.Categories``, the newer polars): then
#: dictionary columns converted separately concatenate into exactly what one conversion
#: gives. Older polars would re-encode local categoricals (with a warning) or, under a
#: StringCache, give a different categorical flavour: those convert on one thread.
_GLOBAL_CATEGORIES = hasattr(pl, "Categories")


def table_to_polars(table: pa.Table, threads: int = 1) -> pl.DataFrame:
    """Arrow → polars without copying numeric buffers (``rechunk=False``: the batches
    stay polars chunks).

    Dictionary columns must be turned into polars categoricals row by row, the one
    costly part, and polars holds the GIL while it does. Two shortcuts, each giving the
    frame ``pl.from_arrow`` gives, chunk for chunk:

    * a chunk of a dictionary column that is entirely null (spectroscopy's ``marker``
      in a chunk without markers: nearly all of them) becomes a polars null run, which
      costs nothing per row, instead of a conversion (polars with global categories,
      1.32 and later);
    * with ``threads`` > 1 a large table's batches are split into contiguous groups
      converted in parallel (where polars releases the GIL) and joined in order.
    """
    if table.num_rows > _polars_max_rows():
        raise ValueError(
            f"this read has {table.num_rows:,} rows, more than the {_polars_max_rows():,} a "
            "polars frame holds with its 32-bit row index (a Rust panic otherwise): install "
            "polars' 64-bit build (pip install 'polars[rt64]'), or read fewer rows at a time "
            "(n_rows=, a scan's filter or slice, chunksize=), or output='arrow'")
    shortcuts = {}
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            series = _null_chunks_to_polars(table.column(index), field.name)
            if series is not None:
                shortcuts[index] = series
    if not shortcuts:
        return _arrow_to_polars(table, threads)
    rest = table
    for index in sorted(shortcuts, reverse=True):
        rest = rest.remove_column(index)
    del table
    converted = _arrow_to_polars(rest, threads).get_columns() if rest.num_columns else []
    columns = iter(converted)
    return pl.DataFrame([shortcuts[i] if i in shortcuts else next(columns)
                         for i in range(len(converted) + len(shortcuts))])


@functools.cache
def _polars_max_rows() -> int:
    """Rows a polars frame holds: 2**32 - 1 with its default 32-bit row index."""
    return (1 << 32) - 1 if pl.get_index_type() == pl.UInt32 else (1 << 64) - 1


def _null_chunks_to_polars(column: pa.ChunkedArray, name: str) -> pl.Series | None:
    """A dictionary column with entirely null chunks → polars, the null chunks as null
    runs; ``None`` when it has none, or on older polars, whose local categoricals carry
    each conversion's categories (a null run would have none)."""
    if not _GLOBAL_CATEGORIES:
        return None
    chunks = column.chunks
    null = [len(chunk) > 0 and chunk.null_count == len(chunk) for chunk in chunks]
    if not any(null):
        return None
    # the dtype pl.from_arrow gives this column (Categorical, with this polars' options)
    dtype = pl.from_arrow(pa.chunked_array([], type=column.type)).dtype  # type: ignore[union-attr]
    parts: list[pl.Series] = []
    for is_null, run in itertools.groupby(zip(chunks, null, strict=True), key=lambda c: c[1]):
        run_chunks = [chunk for chunk, _ in run]
        if is_null:  # one null run per chunk: the chunks stay as pl.from_arrow makes them
            parts.extend(_null_run(len(chunk), dtype) for chunk in run_chunks)
        else:
            converted = pl.from_arrow(pa.chunked_array(run_chunks, type=column.type),
                                      rechunk=False)
            assert isinstance(converted, pl.Series)
            parts.append(converted)
    series = pl.concat(parts, rechunk=False)
    assert isinstance(series, pl.Series)
    return series.alias(name)


#: A one-row series of polars' ``Null`` type, widened by :func:`_null_run`.
_ONE_NULL = pl.Series("", [None], dtype=pl.Null)


def _null_run(n: int, dtype: pl.DataType) -> pl.Series:
    """``n`` nulls of ``dtype`` in one chunk: ``pl.repeat(None, n, dtype=dtype)``'s
    series, built by widening a ``Null`` series and casting it. Why: ``pl.repeat`` runs
    a query per chunk and touches its buffers (a 3 M-row chunk: 7 MB made resident and
    up to 1-3 ms where the memory is fresh), where the cast takes ~5 µs and leaves the
    allocator's zeroed pages untouched (under 1 MB resident for 50 M rows), measured.
    Converting a 400 MB spectroscopy glob's table went from 2.5-6 ms to 0.8-1.5 ms."""
    return _ONE_NULL.new_from_index(0, n).cast(dtype)


def _arrow_to_polars(table: pa.Table, threads: int = 1) -> pl.DataFrame:
    """:func:`table_to_polars` without the null-chunk shortcut."""
    batches = table.to_batches()
    parts = min(threads, len(batches))
    if (parts <= 1 or table.num_rows < PARALLEL_POLARS_MIN_ROWS or not _GLOBAL_CATEGORIES
            or not any(pa.types.is_dictionary(t) for t in table.schema.types)):
        frame = pl.from_arrow(table, rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        return frame
    # contiguous groups of batches holding about the same number of rows each
    ends = np.cumsum([b.num_rows for b in batches])
    cuts = np.searchsorted(ends, [table.num_rows * k / parts for k in range(1, parts)],
                           side="left") + 1
    bounds = [0, *sorted(set(int(c) for c in cuts if 0 < c < len(batches))), len(batches)]
    groups = [batches[a:b] for a, b in zip(bounds, bounds[1:])]
    schema = table.schema
    del table, batches

    def convert(group: list[pa.RecordBatch]) -> pl.DataFrame:
        frame = pl.from_arrow(pa.Table.from_batches(group, schema=schema), rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        return frame

    frames = run_all(shared_executor("bindf-polars", threads), convert, groups)
    return pl.concat(frames, rechunk=False)


class _Spans:
    """Disjoint memory spans, kept sorted: :meth:`add` tells in O(log n) whether a new
    span overlaps one of them (a check against every span was quadratic in columns)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> bool:
        """Add ``[start, end)`` unless it overlaps a span held; whether it was added."""
        at = bisect.bisect_right(self.starts, start)
        if (at and self.ends[at - 1] > start) or (at < len(self.starts)
                                                  and self.starts[at] < end):
            return False
        self.starts.insert(at, start)
        self.ends.insert(at, end)
        return True


def _owned_table_to_pandas(holder: list[pa.Table], *, masked: bool = False) -> pd.DataFrame:
    """Arrow → pandas, taking the table out of ``holder`` so its memory can be released
    chunk by chunk while the frame is built: the peak stays close to the output (see
    :class:`_FreedMemory`).

    Integer and boolean fields that the schema declares nullable (e.g. spectroscopy
    ``channel``, null on marker rows) become pandas' nullable ``UInt8`` … and
    ``boolean`` instead of float64 or object, whether or not this particular file has a
    null: the dtype depends on the format, never on the data. Formats declare never-null
    columns ``nullable=False``. Float nulls are NaN, as in pyarrow's ``to_pandas``.
    Every column is writable (pandas users assign into frames they read); the values of
    a list column (SP01's ``shape="wide"`` rows) are read-only numpy arrays, as pyarrow
    makes them.

    ``masked``: pandas' ``dtype_backend="numpy_nullable"``, what ``pd.read_parquet(...,
    dtype_backend="numpy_nullable")`` gives for the same table: every integer, float,
    boolean and string column a pandas masked (nullable) column (``UInt32``,
    ``Float64``, ``boolean``, ``string``) with ``pd.NA`` for nulls; categories, times
    and bytes keep their default dtypes.
    """
    table = holder.pop()
    if masked and b"pandas" in (table.schema.metadata or {}):
        # A frame pandas wrote (read back from Parquet): pyarrow's conversion restores
        # its index and dtypes from the pandas metadata, as pd.read_parquet does.
        return table.to_pandas(types_mapper=MASKED_DTYPES.get, split_blocks=True,
                               deduplicate_objects=False, self_destruct=True)
    order = table.column_names
    freed = _FreedMemory(live_block_spans() if _disjoint_buffers(table) else [])
    schema = table.schema
    # The columns held one by one (None once converted), not by the table: a converted
    # column's memory goes as it is copied, and no step costs per column already seen
    # (dropping each from the table did: a layout of 20,000 columns took 23 s).
    held: list[pa.ChunkedArray | None] = list(table.columns)
    height = table.select([])  # the rows of a frame that keeps no column as Arrow
    del table
    direct: dict[str, Any] = {}
    viewed = _Spans()  # the memory of the columns handed out as views
    for index, field in enumerate(schema):
        column = held[index]
        assert column is not None
        numeric = pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)
        if (masked and (numeric or pa.types.is_floating(field.type))
                and field.type in MASKED_DTYPES) or (
                numeric and (field.nullable or column.null_count)):
            convert = _masked_releasing
        elif (view := _writable_view(column)) is not None:
            # Two columns over the same memory (a reader may hand one buffer out twice)
            # must not stay views: writing into one would change the other.
            if not viewed.add(view.ctypes.data, view.ctypes.data + view.nbytes):
                view = view.copy()
            direct[field.name] = view
            held[index] = None
            continue
        elif _is_plain_numeric(column):
            convert = _concatenate_releasing
        elif _has_one_dictionary(column):
            convert = _categorical_releasing
        elif _is_bytes(field.type):
            convert = _bytes_releasing
        elif pa.types.is_string_view(field.type) and not masked:
            # (a path column: see path_type_for)
            held[index] = None
            direct[field.name] = _shared_text(column)
            nbytes = _nbytes(column)
            del column
            freed.dropped(nbytes)
            continue
        else:  # left to pyarrow (below), whose conversion must be its last holder
            del column
            continue
        # Nothing else references the column, and the converter drops each chunk as
        # soon as it is copied.
        held[index] = None
        chunks = column.chunks
        del column
        direct[field.name] = convert(chunks, field.type, freed)
    freed.release()
    rest = [index for index, column in enumerate(held) if column is not None]
    table = pa.Table.from_arrays([held[index] for index in rest], schema=pa.schema(
        [schema.field(index) for index in rest], metadata=schema.metadata)) if rest else height
    del held, height
    # The rest (times, strings, lists, dictionaries that differ between chunks):
    # split_blocks/self_destruct hand each column's memory to pandas instead of
    # consolidating into 2-D blocks, releasing Arrow memory as each column is converted.
    # deduplicate_objects=False: pyarrow's default looks every value up in a table of
    # those seen (A-STEP's sensor words, when bytes went this way: 43 s and 6.6 GB for a
    # 200 MB file, 1.6 s and 1.0 GB without); equal values stay equal, only not the same
    # Python object.
    converted = _nbytes(table)  # all of it released by self_destruct
    frame = table.to_pandas(types_mapper=MASKED_DTYPES.get if masked else None,
                            split_blocks=True, self_destruct=True, deduplicate_objects=False)
    del table
    freed.dropped(converted)
    freed.release()
    # Columns that came out as read-only views of Arrow memory: copy them one at a time
    # (each view and its Arrow buffer are dropped as soon as the copy replaces it).
    for position in range(frame.shape[1]):
        values = frame.iloc[:, position]
        if isinstance(values.dtype, np.dtype):
            array = values.to_numpy(copy=False)
            if not array.flags.writeable:
                del values
                frame.isetitem(position, array.copy())
                freed.dropped(array.nbytes)  # (its Arrow memory, once the view goes)
            del array
    freed.release()
    if not direct:
        return frame
    # Assemble without copying (DataFrame.__setitem__ would copy each array).
    columns = {name: frame[name] for name in frame.columns}
    columns.update(direct)
    del frame
    return pd.DataFrame({name: columns[name] for name in order}, copy=False)


#: :class:`_FreedMemory` hands memory back after this many bytes of chunks are dropped.
RELEASE_STEP_BYTES = 4 << 20


#: Bytes of a chunk in lane memory copied before the copied part is discarded.
DISCARD_STEP_BYTES = 1 << 20


class _FreedMemory:
    """Hands the memory of the chunks a pandas conversion has dropped back to the
    operating system, every :data:`RELEASE_STEP_BYTES`; and, where a chunk lies in a
    lane block (``discardable``: the spans of :func:`bindf._lanes.live_block_spans`,
    empty when the table's buffers overlap), the part of it already copied, every
    :data:`DISCARD_STEP_BYTES` (see :meth:`copy_discarding`).

    Why: pandas' default columns are numpy arrays, so every column of several chunks is
    copied. Its chunks are dropped as they are copied, but Arrow's memory pool (mimalloc,
    where bindf's readers take their output memory, see :mod:`bindf._lanes`) keeps freed
    memory for a while, and a read into pandas peaked at twice its output (spectroscopy
    1.93, AstroPix 2.03; ``MIMALLOC_PURGE_DELAY=0`` gave about 1.2). Asking the pool to
    return it as the conversion goes keeps the peak within about one lane block (16 MiB)
    of the larger of the output and the read's own peak. The cost: the next read faults
    that memory in again instead of reusing it, as it would after a pause anyway. A
    release that finds nothing to return costs a few microseconds; the step keeps many
    tiny chunks (a glob of small files) from asking for each.
    """

    def __init__(self, discardable: list[tuple[int, int]]) -> None:
        self._pending = 0
        self._discardable = discardable
        self._starts = [start for start, _ in discardable]

    def copy_discarding(self, out: np.ndarray, values: np.ndarray) -> None:
        """``out[:] = values``, discarding the pages of ``values`` as they are copied
        when they lie in a lane block. Why: a block is freed only once every slice of it
        is, so a column copied out of 16 MiB blocks kept up to one block resident beyond
        the output (an AstroPix run into pandas peaked at 1.11-1.14 times its output).
        The conversion owns the table, and no other buffer of it shares that memory
        (checked when the conversion starts), so nothing reads those pages again."""
        if not self._in_lane_block(values):
            out[:] = values
            return
        step = max(1, DISCARD_STEP_BYTES // max(values.itemsize, 1))
        for at in range(0, len(values), step):
            piece = values[at:at + step]
            out[at:at + len(piece)] = piece
            discard(piece)

    def _in_lane_block(self, values: np.ndarray) -> bool:
        where = bisect.bisect_right(self._starts, values.ctypes.data) - 1
        return where >= 0 and \
            values.ctypes.data + values.nbytes <= self._discardable[where][1]

    def dropped(self, nbytes: int) -> None:
        self._pending += nbytes
        if self._pending >= RELEASE_STEP_BYTES:
            self.release()

    def release(self) -> None:
        """Hand back what was dropped since the last release (nothing dropped: no call,
        so that conversions of views alone, e.g. the chunks of a chunked read, pay none)."""
        if self._pending:
            self._pending = 0
            release_unused_memory()


def _nbytes(data: pa.Array | pa.ChunkedArray | pa.Table) -> int:
    """``data.nbytes``, which pyarrow before 18 cannot tell of view types (the
    ``include_file_paths`` column): then the size of its buffers."""
    try:
        return data.nbytes
    except pa.ArrowTypeError:
        return data.get_total_buffer_size()


def _copy_releasing(chunks: list[pa.Array], freed: _FreedMemory,
                    copy_chunk: Callable[[pa.Array, int, int], None]) -> None:
    """``copy_chunk(chunk, start, end)`` for each of ``chunks`` in turn (its rows
    ``start:end`` of the column), emptying the list and dropping each chunk once copied
    (this is then its last reference) before the next is copied."""
    position = 0
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        end = position + len(chunk)
        copy_chunk(chunk, position, end)
        position = end
        nbytes = _nbytes(chunk)
        del chunk
        freed.dropped(nbytes)


def _concatenate_releasing(chunks: list[pa.Array], kind: pa.DataType,
                           freed: _FreedMemory) -> np.ndarray:
    """Copy ``chunks`` into one numpy array, dropping each chunk once it is copied. Float
    nulls become NaN (as pyarrow's ``to_pandas`` makes them); Arrow's booleans are bits,
    unpacked a chunk at a time."""
    out = np.empty(sum(len(c) for c in chunks), dtype=np.dtype(kind.to_pandas_dtype()))
    in_place = not pa.types.is_boolean(kind)

    def copy_chunk(chunk: pa.Array, start: int, end: int) -> None:
        freed.copy_discarding(out[start:end], chunk.to_numpy(
            zero_copy_only=in_place and not chunk.null_count))

    _copy_releasing(chunks, freed, copy_chunk)
    return out


def _is_bytes(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or (
        hasattr(pa.types, "is_binary_view") and pa.types.is_binary_view(kind))


def _shared_text(column: pa.ChunkedArray) -> Any:
    """A ``string_view`` column (an ``include_file_paths`` column: a few values over
    many rows) as the object column pandas 2 makes of text, with one Python string per
    distinct value, as ``pd.read_parquet`` shares them (pyarrow's
    ``deduplicate_objects``): 23.5 M rows of 8 paths 0.37 s and 190 MB, against 10.9 s
    and 5 GB with a string per row. Converted as a one-column table, as the other text
    columns are (pyarrow 17 converts an array as ``future.infer_string`` says, a table
    not)."""
    frame = pa.table({"": column}).to_pandas(deduplicate_objects=True, split_blocks=True,
                                             self_destruct=True)
    return frame.iloc[:, 0].array


def _bytes_releasing(chunks: list[pa.Array], _kind: pa.DataType,
                     freed: _FreedMemory) -> np.ndarray:  # (the converters' signature)
    """A bytes column (A-STEP's ``sensor`` words) as the object array of ``bytes`` (None
    for nulls) that pyarrow's ``to_pandas`` gives, made a chunk at a time, dropping each
    chunk once it is copied: pyarrow holds the whole Arrow column until every Python
    object is made (a 200 MB A-STEP run: 1.52 times its output into pandas)."""
    out = np.empty(sum(len(c) for c in chunks), dtype=object)

    def copy_chunk(chunk: pa.Array, start: int, end: int) -> None:
        out[start:end] = chunk.to_numpy(zero_copy_only=False)

    _copy_releasing(chunks, freed, copy_chunk)
    return out


def _disjoint_buffers(table: pa.Table) -> bool:
    """Whether no two buffers of ``table``'s chunks share memory (a dictionary shared
    by the chunks of a column counts once)."""
    spans: list[tuple[int, int]] = []
    dictionaries: set[tuple[int, int]] = set()
    for column in table.columns:
        for chunk in column.chunks:
            spans += _spans(chunk.buffers())
            if pa.types.is_dictionary(chunk.type):
                dictionaries.update(_spans(chunk.dictionary.buffers()))
    ordered = sorted(spans + list(dictionaries))
    return all(end <= start for (_, end), (start, _) in zip(ordered, ordered[1:]))


def _spans(buffers: list[pa.Buffer | None]) -> list[tuple[int, int]]:
    return [(b.address, b.address + b.size) for b in buffers if b is not None and b.size]


def _masked_releasing(chunks: list[pa.Array], kind: pa.DataType,
                      freed: _FreedMemory) -> pd.api.extensions.ExtensionArray:
    """An integer, float or boolean column as pandas' masked array (``UInt8``,
    ``Float32``, ``boolean`` …, what ``to_pandas(types_mapper=...)`` gives), copied chunk
    by chunk into one values and one mask array, dropping each chunk once it is copied."""
    rows = sum(len(c) for c in chunks)
    boolean = pa.types.is_boolean(kind)
    floating = pa.types.is_floating(kind)
    values = np.empty(rows, dtype=np.bool_ if boolean else np.dtype(kind.to_pandas_dtype()))
    mask = np.empty(rows, dtype=np.bool_)

    def copy_chunk(chunk: pa.Array, start: int, end: int) -> None:
        if floating:
            into = values[start:end]
            into[:] = chunk.to_numpy(zero_copy_only=False)  # (nulls: NaN)
            mask[start:end] = chunk.is_null().to_numpy(zero_copy_only=False) \
                if chunk.null_count else False
            if _nan_is_na():  # as pandas' own conversion (pd.read_parquet) marks them
                mask[start:end] |= np.isnan(into)
        elif chunk.null_count:
            values[start:end] = chunk.fill_null(False if boolean else 0).to_numpy(
                zero_copy_only=False)
            mask[start:end] = chunk.is_null().to_numpy(zero_copy_only=False)
        else:
            values[start:end] = chunk.to_numpy(zero_copy_only=False)
            mask[start:end] = False

    _copy_releasing(chunks, freed, copy_chunk)
    if boolean:
        return pd.arrays.BooleanArray(values, mask)
    if floating:
        return pd.arrays.FloatingArray(values, mask)
    return pd.arrays.IntegerArray(values, mask)


@functools.cache
def _nan_is_na() -> bool:
    """Whether this pandas makes a float NaN from Arrow an NA in its masked arrays (pandas
    3 does; 2.x keeps NaN a value): asked of pandas' own conversion once."""
    converted = pd.Float64Dtype().__from_arrow__(pa.array([float("nan")]))
    return bool(converted.isna()[0])


#: Unsigned dictionary index types and the signed ones that hold all their values and
#: -1 (pandas' code for a null), for pandas output.
SIGNED_INDEX = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
                pa.uint64(): pa.int64()}


def _has_one_dictionary(column: pa.ChunkedArray) -> bool:
    """Whether ``column`` is a dictionary column whose chunks share one dictionary (a
    format's fixed categories), so that it converts as codes alone."""
    if not pa.types.is_dictionary(column.type) or column.num_chunks == 0:
        return False
    first = column.chunk(0).dictionary
    return all(chunk.dictionary.equals(first) for chunk in column.chunks[1:])


def _categorical_releasing(chunks: list[pa.Array], kind: pa.DataType,
                           freed: _FreedMemory) -> pd.Categorical:
    """A dictionary column whose chunks share one dictionary (see
    :func:`_has_one_dictionary`) as the ``pd.Categorical`` pyarrow's ``to_pandas`` gives
    (same categories, codes of the indices' type, -1 for nulls), copied chunk by chunk
    into one codes array, dropping each chunk once it is copied."""
    # Unsigned indices (a plugin's uint8 codes) become signed ones wide enough for all
    # their values and -1 (pyarrow before 19 cannot convert them at all).
    signed = SIGNED_INDEX.get(kind.index_type, kind.index_type)
    # pyarrow's own categories and dtype, from an empty array of the same dictionary
    dtype = pa.DictionaryArray.from_arrays(pa.array([], type=signed), chunks[0].dictionary,
                                           ordered=kind.ordered).to_pandas().dtype
    codes = np.empty(sum(len(c) for c in chunks), dtype=np.dtype(signed.to_pandas_dtype()))

    def copy_chunk(chunk: pa.Array, start: int, end: int) -> None:
        if chunk.null_count == len(chunk):
            codes[start:end] = -1
            return
        indices = chunk.indices
        if indices.type != signed:
            indices = indices.cast(signed)
        codes[start:end] = indices.fill_null(-1).to_numpy(zero_copy_only=False)

    _copy_releasing(chunks, freed, copy_chunk)
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def table_to_arrow_backed_pandas(table: pa.Table) -> pd.DataFrame:
    """pandas' ``dtype_backend="pyarrow"``: every column a ``pd.ArrowDtype`` column that
    wraps the table's own Arrow chunks, so no value is copied (chunks stay chunks).

    The one exception: pandas' ``ArrowDtype`` does not support Arrow's view types (a
    frame holding one cannot even be printed), so a ``binary_view``/``string_view``
    column (A-STEP's ``sensor`` bytes) is cast to ``binary``/``string``, a copy of that
    column only.

    Unlike the default backend these columns share memory with Arrow and follow Arrow's
    semantics: nulls are ``pd.NA`` in every type, and the arrays are immutable (pandas
    copies a column on the first assignment into it).
    """
    columns = {
        name: pd.arrays.ArrowExtensionArray(_without_view_type(table.column(name)))
        for name in table.column_names
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows), copy=False)


#: Arrow view types and the plain type pandas' ArrowDtype takes instead.
_VIEW_TYPES = {
    kind: plain for kind, plain in (("binary_view", pa.binary), ("string_view", pa.string))
    if hasattr(pa, kind)
}


def _without_view_type(column: pa.ChunkedArray) -> pa.ChunkedArray:
    for kind, plain in _VIEW_TYPES.items():
        if column.type == getattr(pa, kind)():
            return column.cast(plain())
    return column


def _is_plain_numeric(column: pa.ChunkedArray) -> bool:
    """A column that becomes a plain numpy column: floats (nulls become NaN), booleans
    and integers without nulls (columns declared nullable are masked, see
    :func:`_owned_table_to_pandas`)."""
    kind = column.type
    return pa.types.is_floating(kind) or pa.types.is_boolean(kind) or (
        pa.types.is_integer(kind) and not column.null_count)


def _writable_view(column: pa.ChunkedArray) -> np.ndarray | None:
    """A zero-copy *writable* numpy view of a null-free numeric column whose chunks lie
    back to back in memory that Arrow marks mutable (bindf's readers fill numpy arrays,
    one column of a fixed-record read in one block, see :mod:`bindf._lanes`, and hand
    them to Arrow without copying, so this is the usual case); ``None`` otherwise.

    The view keeps the chunks, and so their memory, alive; nothing else refers to them
    once the table that held them is gone (the conversion owns it)."""
    kind = column.type
    if column.null_count or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return None
    dtype = np.dtype(kind.to_pandas_dtype())
    runs = _adjacent_runs(column.chunks, dtype.itemsize)
    if len(runs) != 1 or not all(chunk.buffers()[1].is_mutable for chunk in runs[0]):
        return None
    chunks = runs[0]
    if len(chunks) == 1:
        chunk = chunks[0]
        return np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk),
                             offset=chunk.offset * dtype.itemsize)
    return np.asarray(_MemoryOf(chunks, dtype))


class _MemoryOf:
    """Chunks that lie back to back in writable memory, seen by numpy as one array (the
    array interface below); the array's base, so the chunks live as long as it does."""

    def __init__(self, chunks: list[pa.Array], dtype: np.dtype) -> None:
        self.chunks = chunks
        first = chunks[0]
        start = first.buffers()[1].address + first.offset * dtype.itemsize
        self.__array_interface__ = {
            "version": 3, "typestr": dtype.str, "data": (start, False),
            "shape": (sum(len(chunk) for chunk in chunks),),
        }


#: Arrow types and pandas' masked (nullable) dtypes for them, as pandas' own readers
#: map them for ``dtype_backend="numpy_nullable"``.
MASKED_DTYPES = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
    pa.float32(): pd.Float32Dtype(), pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype(),
    pa.string_view(): pd.StringDtype(),
}


def batch_to_polars(batch: pa.RecordBatch) -> pl.DataFrame:
    """One batch of a stream (a scan, a chunked read) → polars, as
    :func:`table_to_polars` converts a whole read: a dictionary column without a value
    in the batch (spectroscopy's ``marker`` in nearly every batch) becomes a null run
    instead of a conversion row by row (a 50 MB spectroscopy scan: 6 of its 18 ms)."""
    return table_to_polars(pa.Table.from_batches([batch]))


class ChunkedReader(Iterator[FrameT], Generic[FrameT]):
    """Iterator of frames returned when ``chunksize=`` is given (pandas' convention).

    As in pandas' chunked readers, each chunk holds ``chunksize`` rows (the last one
    fewer), whatever the sizes of the decoder's batches (which end where a read of the
    file or a damaged stretch ends), and pandas chunks are numbered on from the chunks
    before them (``RangeIndex`` 0..n-1, then n..), so ``pd.concat(chunks)`` equals the
    whole read. Usable as a context manager; ``close()`` stops reading.

    ``get_chunk(size)`` and ``read(nrows)`` take any number of rows, as pandas' chunked
    readers' do (iteration then goes on with the next ``chunksize`` rows).

    Every chunk carries the same info (format, header, source), so that ``pd.concat``
    keeps it (pandas drops ``attrs`` that differ between the frames it joins). Damage
    skipped under ``on_error="warn"``/``"skip"`` is counted in :attr:`errors`, which is
    final once the last chunk is read, as a stream's count is. When the read fails
    (damage under ``"raise"``, an unreadable file), the rows before the failure come
    first (the chunk or ``get_chunk`` that meets it ends there, shorter), then the next
    call raises; ``read()`` raises at once.
    """

    def __init__(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema, output: Output,
                 info: Any, dtype_backend: DtypeBackend | None, *,
                 empty: Callable[[], pa.RecordBatch], chunksize: int) -> None:
        self._batches = batches
        #: The batch of a read of no rows (with the format's categories): as pandas'
        #: chunked readers, a read without rows gives one empty chunk with the columns
        #: (``pd.concat`` needs one), and ``read()`` at the end a frame of no rows.
        self._empty = empty
        #: Whether that empty chunk may still come (not after a row, a close, an error)
        self._empty_chunk_due = True
        #: The rows of a chunk (iteration goes on so after get_chunk or read cut a batch)
        self._chunksize = chunksize
        self._schema = schema
        self._output = output
        self._info = info
        #: The source list every chunk's info carries, made read-only once (None: not
        #: yet): a read of thousands of files lists every source, which walking and
        #: copying for each chunk made O(files) a chunk. The rest of the info is made
        #: for each chunk: a header may learn more as the read goes on (a sparse IT02
        #: end marker's time).
        self._sources: Any = None
        self._dtype_backend = dtype_backend
        self._rows_before = 0
        #: Rows taken from the stream but not handed out yet (the rest of a batch that
        #: get_chunk or read cut)
        self._pending: list[pa.RecordBatch] = []
        #: The error the stream raised after rows that a chunk then handed out: raised
        #: by the next call
        self._failed: Exception | None = None
        self._closed = False

    def __iter__(self) -> ChunkedReader[FrameT]:
        return self

    @property
    def errors(self) -> dict[str, int]:
        """Damage skipped so far, ``{kind: count}`` (empty if none)."""
        return dict(self._info().get("errors") or {})

    def __next__(self) -> FrameT:
        batches = self._take(self._chunksize)
        if batches:
            return self._frame(batches)
        # no row left: StopIteration, or the one empty chunk of a read without rows
        return self._frame([self._next_batch()])

    def get_chunk(self, size: int | None = None) -> FrameT:
        """The next ``size`` rows (fewer at the end; default: the next chunk), as pandas'
        chunked readers' ``get_chunk``; ``StopIteration`` once every row was handed out."""
        if size is None:
            return next(self)
        check_count("size", size, 1)
        batches = self._take(size)
        if not batches:
            raise StopIteration
        return self._frame(batches)

    def read(self, nrows: int | None = None) -> FrameT:
        """The next ``nrows`` rows (default: all that are left) as one frame, as pandas'
        chunked readers' ``read``; a frame of no rows (with the columns) at the end."""
        check_count("nrows", nrows, 0)
        if self._closed:
            raise ValueError("this chunked reader is closed")
        # (an error raises at once: one call asks for these rows, and a frame cut short
        # at the damage would pass for all of them)
        return self._frame(self._take(nrows, defer_error=False) or [self._empty()])

    def _take(self, rows: int | None, *, defer_error: bool = True) -> list[pa.RecordBatch]:
        """Batches of the next ``rows`` rows (``None``: every row left), the rest of a
        cut batch kept for the next call. With ``defer_error``, an error after some rows
        ends the batches there and is raised by the next call (iteration and
        ``get_chunk``, which a loop calls again)."""
        taken, count = [], 0
        while rows is None or count < rows:
            if self._pending:
                batch = self._pending.pop(0)
            else:
                try:
                    batch = self._next_batch(empty_chunk=False)
                except StopIteration:
                    break
                except Exception as exc:
                    if not taken or not defer_error:
                        raise
                    self._failed = exc  # (the rows before it first)
                    break
            if rows is not None and count + batch.num_rows > rows:
                keep = rows - count
                self._pending.insert(0, batch.slice(keep))
                batch = batch.slice(0, keep)
            taken.append(batch)
            count += batch.num_rows
        return taken

    def _next_batch(self, *, empty_chunk: bool = True) -> pa.RecordBatch:
        if self._closed:
            raise StopIteration
        if self._failed is not None:
            failed, self._failed = self._failed, None
            try:
                raise failed
            finally:  # (this frame is in its traceback: held here, a cycle)
                del failed
        try:
            batch = next(self._batches)
        except StopIteration:
            if not empty_chunk or self._rows_before or not self._empty_chunk_due:
                raise
            self._empty_chunk_due = False  # once
            return self._empty()
        except BaseException:
            self._empty_chunk_due = False  # a read that failed has ended: no empty chunk
            raise
        return batch

    def _frame(self, batches: list[pa.RecordBatch]) -> Any:  # (a FrameT, of output=)
        # (without the damage count, which grows as the chunks are read: see errors)
        info = {key: value for key, value in self._info().items() if key != "errors"}
        sources = info.get("source")
        if isinstance(sources, list):
            if self._sources is None or self._sources != sources:
                self._sources = shared(sources)
            info["source"] = self._sources
        info = shared(info)  # (the shared source list is taken as it is)
        if self._output != "pandas":
            # each chunk its own copy: an edit of one polars chunk's info must not reach
            # the others (a pandas chunk's is made read-only, see bindf._frames.SharedDict)
            info = unshared(info)
        frame = batches_to_output(batches, self._schema, self._output,
                                  info, self._dtype_backend)
        if isinstance(frame, pd.DataFrame):
            start = self._rows_before
            frame.index = pd.RangeIndex(start, start + len(frame))
        self._rows_before += len(frame)
        return frame

    def close(self) -> None:
        """Stop reading: no more chunks (nor rows a get_chunk or read cut off)."""
        self._closed = True
        self._pending.clear()
        self._failed = None
        self._empty_chunk_due = False
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> ChunkedReader[FrameT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
