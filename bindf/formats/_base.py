"""The contract every format module fulfils.

A format module defines a subclass of :class:`FormatReader`. Opening one reads the header
(and nothing else), after which:

* :attr:`FormatReader.header` is the file's metadata as a plain dict (JSON-able);
* :attr:`FormatReader.schema` is the full output schema, computed from the header alone;
* :meth:`FormatReader.iter_batches` decodes the records into ``pyarrow.RecordBatch``es,
  reading the file in bounded chunks.

Everything user-facing (pandas/polars/arrow output, lazy scans, multi-file reads, Parquet,
the CLI) is written once on top of this contract, in :mod:`bindf.frontends`.
"""

from __future__ import annotations

import abc
import difflib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .. import registry
from .._lanes import Lanes, lanes_for
from .._source import Source
from .._threads import Lane, WaitingTasks, part_bounds, resolve_threads, shared_executor
from ..errors import HeaderError, check_columns_known

#: Rows per record batch unless the caller asks otherwise. Large enough that per-batch
#: overhead vanishes, small enough that a batch's raw bytes stay cache friendly-ish and
#: memory stays bounded for streaming.
DEFAULT_BATCH_ROWS = 1 << 20

#: ``on_error`` policies for damaged records (see :meth:`FormatReader.__init__`).
ON_ERROR_CHOICES = ("raise", "warn", "skip")


#: numpy dtypes whose values have exactly the bytes of an Arrow type (native byte order,
#: no nulls): such an array becomes an Arrow array by wrapping its memory.
_SAME_BYTES: dict[np.dtype, pa.DataType] = {
    np.dtype(numpy_type): arrow_type for numpy_type, arrow_type in (
        (np.int8, pa.int8()), (np.int16, pa.int16()), (np.int32, pa.int32()),
        (np.int64, pa.int64()), (np.uint8, pa.uint8()), (np.uint16, pa.uint16()),
        (np.uint32, pa.uint32()), (np.uint64, pa.uint64()), (np.float32, pa.float32()),
        (np.float64, pa.float64()))
}


def numpy_to_arrow(values: Any, kind: pa.DataType | None = None) -> pa.Array:
    """``pa.array(values, type=kind)`` for a numpy array, without a copy where possible.

    A one-dimensional contiguous integer or float array of the same type is wrapped
    directly (``Array.from_buffers``: 3 µs, against 19 µs for ``pa.array``, which goes
    through its general conversion path even when it copies nothing). That matters for
    readers that make tens of batches of 18 columns per file. Anything else (bool, which
    Arrow packs into bits; a strided field of a record array; another target type; a
    non-native byte order; a masked array) goes through ``pa.array``.
    """
    if isinstance(values, np.ndarray) and not isinstance(values, np.ma.MaskedArray):
        same = _SAME_BYTES.get(values.dtype)
        if (same is not None and (kind is None or kind == same) and values.ndim == 1
                and values.flags.c_contiguous):
            return pa.Array.from_buffers(same, len(values), [None, pa.py_buffer(values)])
    return pa.array(values, type=kind)


def numpy_batch(arrays: Sequence[Any], schema: pa.Schema) -> pa.RecordBatch:
    """A record batch of numpy ``arrays`` (one per field of ``schema``, zero-copy where
    the dtype matches: :func:`numpy_to_arrow`)."""
    return pa.RecordBatch.from_arrays(
        [numpy_to_arrow(a, f.type) for a, f in zip(arrays, schema)], schema=schema)


def grouped_batches(chunks: Iterable[Sequence[np.ndarray]], schema: pa.Schema,
                    max_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of ``chunks`` (each a numpy array per field of ``schema``), one per
    run of successive chunks whose every column lies right after the same column of the
    chunk before, up to ``max_rows`` rows: each column of such a batch is one Arrow array
    over the run's memory, which keeps the chunks' arrays alive. Chunks of an eager
    read carved out of lanes (:mod:`bindf._lanes`) lie so, apart from where a lane
    starts a new block. A chunk that cannot be wrapped without a copy (see
    :func:`numpy_to_arrow`) is a batch of its own; chunks without rows are dropped.

    Why: wrapping one array costs ~5 µs, and an AstroPix read of 70 MB made 70 batches of
    18 columns; the frontends then joined those back-to-back chunks again
    (:func:`bindf.frontends.output.joined_adjacent_chunks`).
    """
    run: list[list[pa.Buffer]] = []  # the run's chunks: each column's memory
    rows = 0
    ends: list[int] = []  # where each column's memory ends in the run's last chunk

    def run_batch() -> pa.RecordBatch:
        columns = []
        for j, column in enumerate(schema):
            parts = [chunk[j] for chunk in run]
            memory = (parts[0] if len(parts) == 1 else
                      pa.foreign_buffer(parts[0].address, sum(p.size for p in parts),
                                        base=parts))
            columns.append(pa.Array.from_buffers(column.type, rows, [None, memory]))
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    # the numpy dtype each field's chunks must have to be wrapped as they are
    dtypes = [_NUMPY_OF.get(column.type) for column in schema]
    for arrays in chunks:
        n = len(arrays[0]) if len(arrays) else 0
        if n == 0:
            continue
        memory = _wrappable_memory(arrays, dtypes)
        follows = (memory is not None and rows + n <= max_rows
                   and all(m.address == end for m, end in zip(memory, ends)))
        if run and not follows:
            yield run_batch()
            run, rows, ends = [], 0, []
        if memory is None:
            yield numpy_batch(arrays, schema)
            continue
        run.append(memory)
        rows += n
        ends = [m.address + m.size for m in memory]
    if run:
        yield run_batch()


#: A chunk of fewer rows is "small" for :func:`coalesced_batches`.
SMALL_BATCH_ROWS = 4096


def coalesced_batches(chunks: Iterable[Sequence[Any]], schema: pa.Schema,
                      max_rows: int) -> Iterator[pa.RecordBatch]:
    """A record batch per chunk (a numpy array per field of ``schema``), except that
    successive chunks of fewer than :data:`SMALL_BATCH_ROWS` rows are copied into one
    batch (of at most ``max_rows`` rows, and closed once it holds that many small rows).

    Why: damage splits a decoded chunk into a unit per undamaged stretch, and a batch
    costs ~100 µs to make (and again to join in the frontends) however few its rows: an
    AstroPix run with every other readout damaged made a batch of a few rows per damage
    (100,000 of them: 24 s and 1.5 GB). Chunks without columns pass as they are. When
    ``chunks`` raises (damage under ``on_error="raise"``), the rows held are handed out
    first, as every reader hands out the rows before the damage.
    """
    held: list[Sequence[Any]] = []
    rows = 0

    def joined() -> pa.RecordBatch:
        if len(held) == 1:
            return numpy_batch(held[0], schema)
        return numpy_batch([_concatenated([chunk[j] for chunk in held])
                            for j in range(len(schema))], schema)

    remaining = iter(chunks)
    while True:
        try:
            arrays = next(remaining)
        except StopIteration:
            break
        except Exception:
            if held:
                yield joined()
            raise
        n = len(arrays[0]) if len(arrays) else SMALL_BATCH_ROWS
        if held and (n >= SMALL_BATCH_ROWS or rows + n > max_rows):
            yield joined()
            held, rows = [], 0
        if n >= SMALL_BATCH_ROWS:
            yield numpy_batch(arrays, schema)
            continue
        held.append(arrays)
        rows += n
        if rows >= SMALL_BATCH_ROWS:
            yield joined()
            held, rows = [], 0
    if held:
        yield joined()


def _concatenated(parts: list[Any]) -> Any:
    """The arrays ``parts`` one after the other (masks kept)."""
    if any(isinstance(part, np.ma.MaskedArray) for part in parts):
        return np.ma.concatenate(parts)
    return np.concatenate(parts)


#: The numpy dtype with exactly the bytes of an Arrow type (the inverse of _SAME_BYTES).
_NUMPY_OF: dict[pa.DataType, np.dtype] = {kind: dtype for dtype, kind in _SAME_BYTES.items()}


def _wrappable_memory(arrays: Sequence[Any], dtypes: Sequence[np.dtype | None]
                      ) -> list[pa.Buffer] | None:
    """Each array's memory as an Arrow buffer, if every array is a one-dimensional
    contiguous numpy array of the given dtype (one with the bytes of its field's Arrow
    type, see :func:`numpy_to_arrow`); else None."""
    memory = []
    for values, dtype in zip(arrays, dtypes):
        if (dtype is None or type(values) is not np.ndarray or values.dtype != dtype
                or values.ndim != 1 or not values.flags.c_contiguous):
            return None
        memory.append(pa.py_buffer(values))
    return memory


@dataclass(frozen=True)
class AcquisitionEnd:
    """A format's in-band end-of-acquisition marker, as found by
    :meth:`FormatReader.acquisition_end`: the records end at ``offset`` (the marker is not
    a record) and ``header`` holds the keys the marker sets (e.g. ``acquisition_end_ns``)."""

    offset: int
    header: dict[str, Any] = field(default_factory=dict)


#: Reader class → (the spec it was worked out for, its declared options), for
#: :meth:`FormatReader._declared_options`.
_DECLARED_OPTIONS: dict[type, tuple[Any, dict[str, Any] | None]] = {}


class FormatReader(abc.ABC):
    """One open file of one format. Subclasses implement ``_read_header``, ``schema`` and
    ``_batches``.

    Parameters
    ----------
    source:
        The file.
    on_error:
        What to do with a damaged record or readout: ``"raise"`` (default) a
        :class:`~bindf.errors.CorruptDataError`; ``"warn"``: skip it with a
        :class:`~bindf.errors.CorruptDataWarning`; ``"skip"``: skip it silently. Skipped
        damage is counted in :attr:`errors`, which the frontends store in the metadata.
    threads:
        Threads this reader may use to decode one file (``None``: the default of
        :func:`bindf._threads.default_threads`; ``False``: one). The output never
        depends on it.
    options:
        Format-specific keyword options (e.g. ``layout=`` for IT02).
    """

    #: Set by eager reads, which keep every batch until the frame is built: then large
    #: inputs get their output columns in lanes (see :meth:`output_lanes`).
    keeps_every_batch: bool = False
    #: Threads that may help decode parts of this file beside the thread reading it, set
    #: by a multi-file read that decodes files in parallel (its pool: a thread with no
    #: file left to take helps finish another file). None: :meth:`part_helpers` decides.
    shared_helpers: Lane | None = None
    #: Set with :attr:`shared_helpers`: the multi-file read's count of files submitted to
    #: that pool and not started yet (see :meth:`part_bounds`).
    files_waiting: WaitingTasks | None = None
    #: Short name used in the registry, in ``bindf.format`` metadata and by the CLI.
    name: ClassVar[str]
    #: Human name for messages ("FLIM LABS IT02 intensity tracing").
    label: ClassVar[str]
    #: The fixed dictionary (categories) of each dictionary-encoded column, by name. A
    #: result of no rows carries them too (:func:`empty_batch`): pandas takes a
    #: categorical column's categories from the data, and ``pd.concat`` of runs turns the
    #: column to ``object`` if one empty run has none.
    dictionaries: ClassVar[Mapping[str, pa.Array]] = {}

    def __init__(self, source: Source, *, on_error: str = "raise",
                 threads: int | bool | None = None, **options: Any) -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {on_error!r}")
        #: Threads this reader may use for one file (resolved; >= 1).
        self.threads = resolve_threads(threads)
        self.source = source
        self.path = source.path
        self.on_error = on_error
        #: Damage skipped so far under on_error="warn"/"skip": {"kind": count}.
        self.errors: dict[str, int] = {}
        declared = self._declared_options()
        # a name the spec does not declare: refused whatever the reader does
        if declared is not None and not declared.keys() >= options.keys():
            self.refuse_options({k: v for k, v in options.items() if k not in declared},
                                declared)
        #: The format's own options, as the caller gave them.
        self.options = options
        #: The same with the spec's declared defaults filled in (what a reader uses).
        self.option_values: dict[str, Any] = {**(declared or {}), **options}
        with source.open() as f:
            self.header: dict[str, Any] = self._read_header(f)
        if not type(self).__module__.startswith("bindf."):  # (bindf's own headers are)
            self._check_strict_json_header()

    def _check_strict_json_header(self) -> None:
        """A :class:`~bindf.errors.HeaderError` if a plugin reader's header is not strict
        JSON values: it travels as JSON (Arrow and Parquet metadata, ``bindf info``),
        where bytes, times or NaN failed later with a foreign error."""
        try:
            json.dumps(self.header, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise HeaderError(
                f"the header that the reader of format {self.name!r} made is not JSON values "
                f"({exc}); a header travels as JSON (Arrow and Parquet metadata): give bytes "
                "as hex text, times as ISO 8601 text, NaN as None", path=self.path) from None

    def _declared_options(self) -> dict[str, Any] | None:
        """The registered spec's options of this reader's format (name → default), or
        ``None`` for a reader used outside the registry. Worked out once per reader
        class and spec: a glob of thousands of small files opens a reader per file."""
        spec = registry.registered_spec(self.name)
        known = _DECLARED_OPTIONS.get(type(self))
        if known is not None and known[0] is spec:
            return known[1]
        declared = None if spec is None or not isinstance(self, spec.reader_class()) else {
            param.name: param.default for param in spec.options}
        _DECLARED_OPTIONS[type(self)] = (spec, declared)
        return declared

    def output_lanes(self, shares: int = 1, input_bytes: int | None = None,
                     rows: int | None = None) -> Lanes:
        """Where this read's output columns are allocated (see :mod:`bindf._lanes`):
        lanes of large blocks for an eager read of a large input, which keeps every
        batch; plain arrays otherwise, so that a stream of batches (a scan, chunked
        reads, ``iter_batches``) pins no block for the batches it has let go. ``shares``:
        how many lanes split the input (one per byte range of a run read in ranges),
        which sizes their blocks to one share (:func:`bindf._lanes.lanes_for`).

        ``input_bytes``: what the read decodes, where that is less than the file: a
        record range, or with a row limit the least input its rows take. Why: a
        ``head(10)`` of a 70 MB AstroPix run made one 16 MiB block per column (288 MiB
        reserved, its first pages touched, for 10 rows that then kept them alive).

        ``rows``: the rows every column will hold, where the read knows them (records of
        a fixed size): each column then lies in one block."""
        size = self.source.size if input_bytes is None else min(input_bytes, self.source.size)
        return lanes_for(size if self.keeps_every_batch else None, shares, rows)

    def part_helpers(self) -> Lane | None:
        """Threads that may decode parts of this file beside the reading thread (see
        :func:`bindf._threads.read_in_parts`): the multi-file read's pool, else
        ``threads - 1`` threads of the process's shared pool; None for one thread, and
        for a source whose parts cannot be read side by side (see
        :attr:`bindf._source.Source.reads_in_parallel`)."""
        if not self.source.reads_in_parallel:
            return None
        if self.shared_helpers is not None:
            return self.shared_helpers
        return shared_executor("bindf-parts", self.threads - 1) if self.threads > 1 else None

    def part_bounds(self, helpers: Lane | None, n: int, itemsize: int,
                    part_bytes: int) -> list[int]:
        """Record-aligned bounds that cut a batch of ``n`` records of ``itemsize`` bytes
        into parts of about ``part_bytes`` for :func:`~bindf._threads.read_in_parts` on
        ``helpers`` (:func:`~bindf._threads.part_bounds`), or one part, ``[0, n]``, where
        no other thread could take one: without helpers, and while other files of a
        multi-file read wait for a thread of the pool, whose queue hands them out before
        any part queued behind them. One part is one compiled call that reads the whole
        batch without the GIL; parts cost a task and some Python each, taking the GIL
        between them (8 x 50 MB spectroscopy files on two threads, alternating rounds
        against parts everywhere: the best read 1-4 % and the eighth best 3-8 % faster
        in three runs of 30 rounds, no difference beyond noise in a fourth). The last
        files of such a read, with none waiting, are cut into parts again, which the
        threads done with their own files share."""
        if helpers is None or (self.files_waiting is not None and self.files_waiting.any()):
            return [0, n]
        return part_bounds(n, itemsize, self.threads, part_bytes)

    # -- to implement -----------------------------------------------------------------
    @abc.abstractmethod
    def _read_header(self, f: Any) -> dict[str, Any]:
        """Parse the header from the start of ``f``; remember where the records begin."""

    @property
    @abc.abstractmethod
    def schema(self) -> pa.Schema:
        """Full output schema (all columns), derived from the header alone."""

    @abc.abstractmethod
    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        """Yield batches holding exactly ``columns`` (schema order).

        ``n_rows`` is a hint: stop reading once that many rows were produced. Batches must
        split only at record boundaries, and decoding in batches must give the same rows
        as decoding at once.
        """

    def batch_stream(self, columns: Sequence[str] | None = None, *,
                     data_end: int | None = None) -> Any:
        """A resumable decoder of this file's data as record batches of ``columns``
        (a :class:`~bindf.formats._stream.BatchStream`), positioned where the records
        begin (``stream.read_position``): feed it the file's bytes from there, in pieces
        of any size, as they appear. ``data_end``: where the data ends, when known
        (``None``: a file that is still growing). Formats that cannot stream raise
        ``NotImplementedError``."""
        raise NotImplementedError(f"{self.label} files cannot be decoded as a stream")

    def small_file_units(self, columns: list[str]) -> tuple[list[Any], int] | None:
        """For a small file, its data decoded completely to private *units* (whatever
        :meth:`units_to_batch` takes) and their row count; ``None`` (the default) when the
        format or this file does not do it. A multi-file read gathers the units of many
        small files and makes one batch of them, so that per-column work (building
        columns, wrapping them for Arrow) is paid once per group, not once per file."""
        return None

    def units_to_batch(self, units: list[Any], columns: list[str]) -> pa.RecordBatch:
        """One batch of ``columns`` from the units of one or more files of this format
        (with the same schema), in order."""
        raise NotImplementedError


    #: Header values that a frame's analysis helpers take from its header (the first
    #: file's, in a read of several files): a later file whose value differs gets a
    #: :class:`~bindf.errors.BindfWarning` (its rows are read as its own header says).
    analysis_header_keys: ClassVar[tuple[str, ...]] = ()

    # -- live following (bindf.follow) ------------------------------------------------------
    #: Header keys that only a finished acquisition has (set by its end marker): while a
    #: file is followed they are ``None`` until :meth:`acquisition_end` finds the marker.
    end_header_keys: ClassVar[tuple[str, ...]] = ()
    #: The instrument writes the whole file at once, when its data exist (FLIM LABS FCS1:
    #: after the correlations are computed), so a file that opens is complete. Such a
    #: format need not stream: ``bindf.follow`` reads the file whole once its size held
    #: for one poll.
    written_whole: ClassVar[bool] = False
    #: The state of this format's :meth:`batch_stream` (its checkpoint) is the same
    #: whatever columns it makes: ``follow(start="end")`` then walks the bytes that
    #: exist with a stream of no column and resumes its own from that state (the
    #: built-in chained formats). Otherwise it decodes them with its own stream.
    stream_state_ignores_columns: ClassVar[bool] = False

    def header_before_end(self, header: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``header`` (default: this reader's) as a follow knows it before the end
        marker: the :attr:`end_header_keys` it has are ``None``."""
        header = self.header if header is None else header
        return {**header, **{k: None for k in self.end_header_keys if k in header}}

    def acquisition_end(self, f: BinaryIO, size: int) -> AcquisitionEnd | None:
        """Whether the file, ``size`` bytes long right now, ends with this format's own
        end-of-acquisition marker (open ``f`` to read it). The follower feeds the records
        only up to ``AcquisitionEnd.offset`` and ends there once the record chain lands
        exactly on it and the file has stopped growing. Default: the format has no marker
        (a followed file ends only by going idle)."""
        return None

    @property
    def settled(self) -> bool:
        """False while a decision taken at open from the data seen so far (IT02's record
        layout) could still change as the file grows: a follower reopens the file later."""
        return True

    def count_rows(self) -> int | None:
        """Number of rows without decoding, when the layout allows it cheaply (else None)."""
        return None

    # -- shared -----------------------------------------------------------------------
    def resolve_columns(self, columns: Sequence[str] | None) -> list[str]:
        """Validate a projection and return it in schema order."""
        names = self.schema.names
        if columns is None:
            return list(names)
        if isinstance(columns, str):
            columns = [columns]
        check_columns_known(self.path, columns, names, detail=f" for {self.label}")
        wanted = set(columns)
        return [n for n in names if n in wanted]

    def iter_batches(
        self,
        columns: Sequence[str] | None = None,
        batch_size: int | None = None,
        n_rows: int | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Decode the file into record batches of at most ``batch_size`` rows."""
        names = self.resolve_columns(columns)
        size = DEFAULT_BATCH_ROWS if batch_size is None else int(batch_size)
        if size <= 0:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        if n_rows is not None and n_rows < 0:
            raise ValueError(f"n_rows must be >= 0, not {n_rows}")
        if n_rows == 0:
            return
        produced = 0
        for batch in self._batches(names, size, n_rows):
            if batch.num_rows == 0:
                continue
            # Formats may produce bigger batches than asked (one decoded chunk); cut them.
            for start in range(0, batch.num_rows, size):
                piece = batch.slice(start, size)
                if n_rows is not None and produced + piece.num_rows >= n_rows:
                    yield piece.slice(0, n_rows - produced)
                    return
                produced += piece.num_rows
                yield piece

    def refuse_options(self, left: Mapping[str, Any], known: Iterable[str] = ()) -> None:
        """Raise the ``TypeError`` for ``left``, the options this reader did not take (none:
        nothing), with a hint for a near miss among its own options (``known`` and the
        spec's) and the common reader parameters (``colums`` → ``columns``)."""
        if not left:
            return
        from .._params import COMMON, HINTS
        from ..registry import get_format

        try:
            own = [param.name for param in get_format(self.name).options]
        except ValueError:  # a reader used outside the registry
            own = []
        names = [*known, *own, *(param.name for param in COMMON)]
        first = sorted(left)[0]
        hint = HINTS.get(first) or next(iter(difflib.get_close_matches(first, names, n=1)), None)
        raise TypeError(f"unexpected option(s) for read_{self.name}: {sorted(left)}"
                        + (f"; did you mean {hint}=?" if hint else ""))

    def note_error(self, kind: str, count: int = 1) -> None:
        """Count damage that was skipped under ``on_error="warn"/"skip"``."""
        self.errors[kind] = self.errors.get(kind, 0) + count

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r}>"


def empty_batch(schema: pa.Schema, dictionaries: Mapping[str, pa.Array]) -> pa.RecordBatch:
    """A batch of no rows of ``schema``, its dictionary columns named in
    ``dictionaries`` holding those (see :attr:`FormatReader.dictionaries`)."""
    return pa.RecordBatch.from_arrays(
        [pa.DictionaryArray.from_arrays(pa.array([], f.type.index_type), dictionaries[f.name])
         if f.name in dictionaries and pa.types.is_dictionary(f.type) else pa.array([], f.type)
         for f in schema],
        schema=schema)


def summed_errors(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Damage counts (``{kind: count}``, as :attr:`FormatReader.errors`) of several
    readers or passes, summed per kind."""
    total: dict[str, int] = {}
    for each in counts:
        for kind, count in each.items():
            total[kind] = total.get(kind, 0) + count
    return total
