"""A-STEP layer-frame streams (``.bin`` of the AstroPix/astep-fw DAQ): the reader (the
writer, ``write_astep``, is :mod:`._astep_writer`).

Layout (the format page ``docs/formats/astep.md``, written from the firmware's RTL and
documentation and the collaboration's decoders, checked against a real quad-chip run):
no file header; the host appends every read of the firmware's readout FIFO, so the file
is a stream of *layer frames*

``L | layer | h | p sensor bytes | T FPGA-timestamp bytes``

where ``L`` counts the bytes after itself, ``h`` is the sensor header byte (chip id
``h >> 3``, payload ``p = h & 7``) and ``T = L - 2 - p`` is 2, 4, 6 or 8. ``0xFF`` bytes
between frames are filler (an empty FIFO reads as all ones). AstroPix 3 frames carry 5
sensor bytes (``p = 4``), AstroPix 4 frames 8 (``p = 7``); the firmware forwards frames
of any other payload too ("wrong length" frames), and the reader keeps them.

Division of labour: the Cython kernel ``bindf._kernels._astep`` walks the stream (the
only sequential work: each frame's position depends on the length byte of the one
before), resumable across reads because frames straddle them. Everything else is
vectorised numpy on whole chunks, and only the projected columns are computed.

The file does not carry the three run parameters that decoding needs, so they are
reader options with documented defaults and automatic choices (reported in the header
dict): the FPGA timestamp byte order (``ts_order``), the chip generation (``chip``) and
the ToT clock (``v3_tick_ns``/``v4_tick_ns``/``tot_mode``). Decisions where the
sources are silent or disagree are listed on the format page and in :class:`AstepReader`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._kernels import _apx, _astep
from .._lanes import Lanes
from .._params import check_count
from .._source import Source, read_into
from .._warnings import warn as _warn
from ..errors import CorruptDataError, CorruptDataWarning
from ._apx_hits import CLOCK_ROLLOVER, HIT_FIELDS
from ._base import FormatReader
from ._stream import PREFETCH_AHEAD, BatchStream, StreamDecoder, decode_file, prefetched

FILLER = 0xFF
#: Timestamp widths the firmware can be configured to write (register values 0..3).
TS_WIDTHS = (2, 4, 6, 8)
#: Largest frame on disk: length byte + L = 1 + 1 + 8 + 8.
MAX_FRAME_BYTES = 18
#: Sensor payload (``h & 7``) of a well-formed frame, per chip generation.
PAYLOAD_OF_CHIP = {3: 4, 4: 7}

TS_ORDERS = ("auto", "little", "big")
CHIPS = ("auto", 3, 4)
TOT_MODES = ("firmware", "modular", "apx")
#: ``kind`` column values (a fixed dictionary, so that batches and files concatenate).
KINDS = ("v3", "v4", "wrong_length")
_KIND_OF_CHIP = {3: 0, 4: 1}
_WRONG_LENGTH = 2

DEFAULT_V3_TICK_NS = 10
DEFAULT_V4_TICK_NS = 25
#: ``tot_mode="apx"`` reproduces ``read_apx``: the clock cycles per µs its kernel
#: divides by (20).
_APX_CYCLES_PER_US = _apx.CLOCK_CYCLES_PER_US

#: Bytes the automatic choices (chip generation, timestamp byte order) look at.
AUTO_SAMPLE_BYTES = 256 << 10
#: Default bytes per read: 2 MiB halves the per-batch work of 1 MiB (a 50 MB read was
#: ~15 % faster with two threads) and larger reads gained nothing more.
DEFAULT_CHUNK_BYTES = 2 << 20
_FIRST_READ = 64 << 10
#: The shortest frame the walker accepts: the length byte and a length of 4.
_MIN_FRAME_BYTES = 5
#: Frames one walk has room for, per byte of a read: typical frames are 11 (AstroPix 3)
#: or 14 bytes (AstroPix 4) long; a read of shorter ones takes more walks.
_FRAMES_PER_BYTE = 1 / 8

#: Detection: consecutive frames the head of a file must hold, at least.
PROBE_MIN_FRAMES = 16

_NOT_NULL = ("frame_index", "byte_offset", "length", "layer", "chip_id", "payload",
             "fpga_ts", "ts_bytes", "kind", "sensor")
KIND_TYPE = pa.dictionary(pa.int8(), pa.string())
_KIND_DICTIONARY = pa.array(KINDS, pa.string())
#: ``sensor`` column type. Binary *view* (pyarrow >= 16), whose entries of up to 12 bytes
#: are stored inline: the kernel writes them directly and polars takes them without a
#: conversion (its own binary layout). pyarrow < 18 gets plain ``binary`` (see below).
def _binary_view_usable() -> bool:
    """pyarrow 16 has binary_view, but casts it to binary (which pandas' ArrowDtype and
    the writer need) only from 18 on; before that the plain binary layout is used."""
    try:
        pa.array([b""], pa.binary_view()).cast(pa.binary())
    except (AttributeError, pa.ArrowNotImplementedError):
        return False
    return True


SENSOR_TYPE = pa.binary_view() if _binary_view_usable() else pa.binary()


def _field(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=name not in _NOT_NULL)


_HEAD_FIELDS = [
    ("frame_index", pa.int64()),
    ("byte_offset", pa.int64()),
    ("length", pa.uint8()),
    ("layer", pa.uint8()),
    ("chip_id", pa.uint8()),
    ("payload", pa.uint8()),
]
_V3_FIELDS = [
    ("column", pa.uint8()),
    ("location", pa.uint8()),
    ("chip_timestamp", pa.uint8()),
    ("tot_msb", pa.uint8()),
    ("tot_lsb", pa.uint8()),
    ("tot_total", pa.uint16()),
    ("tot_us", pa.float64()),
]
_V4_FIELDS = [
    ("row", pa.uint8()),
    ("column", pa.uint8()),
    ("ts_neg1", pa.uint8()),
    ("ts_coarse1", pa.uint16()),
    ("ts_fine1", pa.uint8()),
    ("ts_tdc1", pa.uint8()),
    ("ts_neg2", pa.uint8()),
    ("ts_coarse2", pa.uint16()),
    ("ts_fine2", pa.uint8()),
    ("ts_tdc2", pa.uint8()),
    ("ts_dec1", pa.uint32()),
    ("ts_dec2", pa.uint32()),
    ("tot_total", pa.uint32()),
    ("tot_us", pa.float64()),
]
_TAIL_FIELDS = [
    ("fpga_ts", pa.uint64()),
    ("ts_bytes", pa.uint8()),
    ("kind", KIND_TYPE),
    ("sensor", SENSOR_TYPE),
]

SCHEMAS = {
    chip: pa.schema([_field(n, t) for n, t in (*_HEAD_FIELDS, *sensor_fields, *_TAIL_FIELDS)])
    for chip, sensor_fields in ((3, _V3_FIELDS), (4, _V4_FIELDS))
}

#: AstroPix 4 bit fields of the 64-bit sensor word, ``name: (first, end)`` counted from
#: the most significant bit (the upstream ``AstroPix4Hit`` slices): the fields of an
#: ``.apx`` hit, whose 8 bytes the sensor word holds.
V4_BITS = {name: (first, end) for name, first, end, _ in HIT_FIELDS}
#: Columns of an AstroPix 3 stream that ``_astep.v3_fields`` computes (named as its
#: keywords), with their dtypes.
_V3_KERNEL_COLUMNS: dict[str, type] = {
    "chip_id": np.uint8, "payload": np.uint8, "ts_bytes": np.uint8, "column": np.uint8,
    "location": np.uint8, "chip_timestamp": np.uint8, "tot_msb": np.uint8,
    "tot_lsb": np.uint8, "tot_total": np.uint16, "tot_us": np.float64, "kind_code": np.int8,
}


@dataclass
class _Parsed:
    """Frames parsed from one stretch of the stream (arrays valid until the next one)."""

    offset: np.ndarray  # int64, stream offsets of the length bytes
    length: np.ndarray  # uint8 (L)
    layer: np.ndarray  # uint8
    sensor: np.ndarray  # uint64, sensor bytes big-endian, left-aligned
    timestamp: np.ndarray  # uint64, timestamp bytes read little-endian
    first_index: int  # frame_index of the first frame


#: The frame walk's per-frame arrays: name → (dtype, the output column that is the
#: array unchanged, if any). The sensor words feed computed columns only.
_WALK_ARRAYS: dict[str, tuple[type, str | None]] = {
    "offset": (np.int64, "byte_offset"),
    "length": (np.uint8, "length"),
    "layer": (np.uint8, "layer"),
    "sensor": (np.uint64, None),
    "timestamp": (np.uint64, "fpga_ts"),
}


def walk_arrays_for(columns: Sequence[str]) -> frozenset[str]:
    """The walk arrays that the output ``columns`` hand out as they stand."""
    return frozenset(name for name, (_, column) in _WALK_ARRAYS.items() if column in columns)


class _FrameWalker:
    """The kernel's output arrays and resumable state, for one walk over one stream.

    The arrays that batches hand out as columns (``handed_out``: offsets, lengths,
    layers, little-endian timestamps; by default all of them) are written
    into new memory by every :meth:`walk` (from ``lanes``: see :mod:`bindf._lanes`), so
    they go to Arrow without a copy; :meth:`parsed` keeps the rows the walk filled and
    gives the rest back. The others (always the sensor words, which only feed computed
    columns) are reused from walk to walk: with ``slots`` sets used in turn by the walks
    that hand frames out, a consumer may still compute columns from one walk's frames
    while the next ``slots - 1`` such walks run.
    """

    def __init__(self, frames: int, ts_bytes: int | None, slots: int = 1,
                 lanes: Lanes | None = None, handed_out: frozenset[str] | None = None) -> None:
        self.capacity = frames
        self.lanes = lanes if lanes is not None else Lanes(enabled=False)
        self.handed_out = (frozenset(_WALK_ARRAYS) if handed_out is None
                           else handed_out) - {"sensor"}
        self._slots = [{name: np.empty(frames, dtype=dtype)
                        for name, (dtype, _) in _WALK_ARRAYS.items()
                        if name not in self.handed_out} for _ in range(max(1, slots))]
        #: Walks whose frames were handed out (:meth:`parsed`): the consumer may still
        #: compute columns from the last ``slots - 1`` of them.
        self._handed = 0
        self._arrays: dict[str, np.ndarray] = {}
        self.gap_start = np.empty(max(1, frames // 4), dtype=np.int64)
        self.gap_length = np.empty_like(self.gap_start)
        self.state = _astep.new_state()
        self.ts_bytes = ts_bytes or 0

    def walk(self, buf: np.ndarray, pos: int, end: int, base: int) -> tuple[int, int, int, int]:
        # The set after the last one handed out: a walk that finds no frame (filler,
        # damage) hands nothing out, so the next walk may write into its set again.
        reused = self._slots[self._handed % len(self._slots)]
        a = self._arrays = {
            name: reused[name] if name in reused
            else self.lanes.reserve(name, self.capacity, dtype)
            for name, (dtype, _) in _WALK_ARRAYS.items()
        }
        return _astep.parse_frames(buf, pos, end, base, self.ts_bytes, self.state, a["offset"],
                                   a["length"], a["layer"], a["sensor"], a["timestamp"],
                                   self.gap_start, self.gap_length)

    @property
    def offset(self) -> np.ndarray:
        """The last walk's frame offsets (all of its capacity)."""
        return self._arrays["offset"]

    @property
    def open_gap(self) -> int:
        return int(self.state[_astep.STATE_GAP_OPEN_AT])

    def parsed(self, n: int, first_index: int) -> _Parsed:
        """The first ``n`` frames of the last walk (call at most once per walk). The
        arrays not handed out stay valid while the next ``slots - 1`` walks whose frames
        are handed out run (walks that find none do not count)."""
        arrays = {
            name: self.lanes.keep(name, array, n) if name in self.handed_out else array[:n]
            for name, array in self._arrays.items()
        }
        self._handed += 1
        return _Parsed(first_index=first_index, **arrays)

    def counts(self) -> tuple[int, int, int]:
        """(filler bytes, skipped bytes, stretches begun) so far."""
        s = self.state
        return (int(s[_astep.STATE_FILLER_BYTES]), int(s[_astep.STATE_RESYNC_BYTES]),
                int(s[_astep.STATE_RESYNCS]))


def parse_buffer(data: bytes | np.ndarray, ts_bytes: int | None = None) -> tuple[_Parsed, _FrameWalker, int, int]:
    """Parse a whole in-memory stream in one call: ``(frames, walker, stop, code)``.

    For the automatic choices and the detection probe, which look at a file's head.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    walker = _FrameWalker(len(buf) // 5 + 1, ts_bytes)
    n, _, stop, code = walker.walk(buf, 0, len(buf), 0)
    return walker.parsed(n, 0), walker, stop, code


def timestamp_widths(parsed: _Parsed) -> np.ndarray:
    """``T`` of each frame (uint8): ``L - 2 - p``."""
    payload = (parsed.sensor >> np.uint64(56)).astype(np.uint8) & np.uint8(7)
    return parsed.length - np.uint8(2) - payload


def fpga_timestamps(raw_le: np.ndarray, widths: np.ndarray, order: str,
                    out: np.ndarray | None = None) -> np.ndarray:
    """The timestamps as numbers: ``raw_le`` holds the bytes read little-endian."""
    if order == "little":
        return raw_le
    shift = (np.uint64(64) - widths.astype(np.uint64) * np.uint64(8))
    return np.right_shift(raw_le.byteswap(), shift, out=out)


def count_decreases(values: np.ndarray) -> int:
    return int(np.count_nonzero(values[1:] < values[:-1]))


def _gray_to_binary(g: np.ndarray) -> np.ndarray:
    """Inverse Gray code of values below 2**32 (uint32)."""
    b = g.copy()
    for shift in (1, 2, 4, 8, 16):
        b ^= b >> np.uint32(shift)
    return b


class AstepReader(FormatReader):
    """A-STEP ``.bin`` layer-frame stream: one row per frame, wrong-length frames included.

    Columns
    -------
    frame_index : int64 (0, 1, … in file order), byte_offset : int64 (of the frame's
    length byte), length : uint8 (the length byte ``L``: bytes after it), layer : uint8,
    chip_id, payload : uint8 (from the sensor header byte; filled for every frame), then

    * AstroPix 3 (``chip=3``): column (uint8 flag: 1 = ``location`` is a column, 0 = a
      row), location, chip_timestamp, tot_msb, tot_lsb : uint8; tot_total : uint16 (ToT
      clock cycles); tot_us : float64 (``tot_total × v3_tick_ns / 1000``);
    * AstroPix 4 (``chip=4``): row, column, ts_neg1 : uint8; ts_coarse1 : uint16; ts_fine1,
      ts_tdc1, ts_neg2 : uint8; ts_coarse2 : uint16; ts_fine2, ts_tdc2 : uint8; ts_dec1,
      ts_dec2, tot_total : uint32; tot_us : float64 (see ``tot_mode``);

    these sensor columns are **null** on wrong-length frames (payload other than 4 for
    AstroPix 3, 7 for AstroPix 4), whose bytes mean something else; then fpga_ts : uint64
    (FPGA timestamp ticks, not converted: the file does not say which clock), ts_bytes :
    uint8 (``T``), kind : dictionary ``v3``/``v4``/``wrong_length``, sensor : binary (the
    raw ``p + 1`` sensor bytes, so wrong-length frames lose nothing).

    Options
    -------
    ts_order : "auto" (default) | "little" | "big"
        Byte order of the FPGA timestamp (a property of the firmware build). ``"auto"``
        picks the order whose timestamps decrease less often between successive frames
        of the file's first 256 KiB (little-endian on a tie); the header reports the
        choice and both counts.
    ts_bytes : None (default) | 2 | 4 | 6 | 8
        The configured timestamp width. ``None`` accepts any width the firmware can
        write, frame by frame; a number also rejects frames of other widths (they are
        then resynchronised over).
    chip : "auto" (default) | 3 | 4
        Chip generation, which fixes the columns. ``"auto"``: the generation whose
        payload (4 or 7) more frames of the first 256 KiB carry (3 on a tie, e.g. an
        empty file).
    v3_tick_ns : float (default 10, the A-STEP sample clock)
        AstroPix 3 ToT clock period.
    v4_tick_ns : float (default 25)
        AstroPix 4 unit of the 18-bit timestamps (half a 20 MHz cycle).
    tot_mode : "firmware" (default) | "modular" | "apx"
        AstroPix 4 ToT. ``"firmware"``: the astep-fw decoder exactly, ``tsN_dec =
        gray2bin(coarse << 3 | fine) << 1 | neg``, ``tot_total = ts2 - ts1`` if ``ts2 >
        ts1`` else ``2**18 - 1 + ts2 - ts1`` (so equal stamps give 2**18 - 1, as
        upstream). ``"modular"``: the same stamps, ``tot_total = (ts2 - ts1) mod 2**18``.
        ``"apx"``: the ``.apx`` decoder's values (``read_apx``): 17-bit ``tsN_dec``
        without the neg bit, ``+2**17`` on rollover, ``tot_us = tot_total / 20``
        (``v4_tick_ns`` is not used).
    chunk_bytes : int
        Upper bound of one read (default 2 MiB).
    threads : int | None
        The common ``threads=`` parameter: above one, the next chunks' frames (up to two
        ahead) are walked in a worker thread while the current chunk's columns are
        computed (both release the GIL; the output is the same either way).
        ``threads=False`` still works and means one (no worker).

    The header dict holds these choices (``chip``, ``ts_order``, ``ts_bytes``,
    ``tot_tick_ns``, ``tot_mode``) and, for the automatic ones, what they were based on
    (``auto``). The file itself has no header.

    Stream damage: ``0xFF`` filler is normal and counted (``filler_bytes``). Bytes that
    start no valid frame are damage: with ``on_error="raise"`` (default) a
    :class:`~bindf.errors.CorruptDataError` naming the offset (after the frames before
    it); with ``"warn"``/``"skip"`` the reader resynchronises byte by byte, as the
    firmware's own decoder does, and counts ``resync_bytes`` and ``resyncs`` (stretches);
    ``"warn"`` emits one :class:`~bindf.errors.CorruptDataWarning` per stretch. These
    counts go to the reader's ``errors`` (the ``bindf.errors`` metadata) as they are
    read. A file that ends inside a frame gives a
    :class:`~bindf.errors.TruncatedFileWarning` and every complete frame.
    """

    stream_state_ignores_columns = True  # (see FormatReader)

    name: ClassVar[str] = "astep"
    label: ClassVar[str] = "A-STEP layer-frame stream"
    dictionaries: ClassVar[Mapping[str, pa.Array]] = {"kind": _KIND_DICTIONARY}

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        opts = self.options
        ts_order = opts.pop("ts_order", "auto")
        ts_bytes = opts.pop("ts_bytes", None)
        chip = opts.pop("chip", "auto")
        v3_tick = opts.pop("v3_tick_ns", DEFAULT_V3_TICK_NS)
        v4_tick = opts.pop("v4_tick_ns", DEFAULT_V4_TICK_NS)
        tot_mode = opts.pop("tot_mode", "firmware")
        chunk_bytes = opts.pop("chunk_bytes", DEFAULT_CHUNK_BYTES)
        check_count("chunk_bytes", chunk_bytes, MAX_FRAME_BYTES, optional=False)
        self.refuse_options(opts)
        if ts_order not in TS_ORDERS:
            raise ValueError(f"ts_order must be one of {TS_ORDERS}, not {ts_order!r}")
        if ts_bytes is not None and (isinstance(ts_bytes, bool) or ts_bytes not in TS_WIDTHS):
            raise ValueError(f"ts_bytes must be None or one of {TS_WIDTHS}, not {ts_bytes!r}")
        if isinstance(chip, bool) or chip not in CHIPS:
            raise ValueError(f"chip must be one of {CHIPS}, not {chip!r}")
        if tot_mode not in TOT_MODES:
            raise ValueError(f"tot_mode must be one of {TOT_MODES}, not {tot_mode!r}")
        for name, tick in (("v3_tick_ns", v3_tick), ("v4_tick_ns", v4_tick)):
            if (isinstance(tick, bool) or not isinstance(tick, (int, float))
                    or not math.isfinite(tick) or tick <= 0):
                raise ValueError(f"{name} must be a positive number, not {tick!r}")
        self.chunk_bytes = chunk_bytes
        self.ts_bytes: int | None = ts_bytes
        self.data_offset = 0  # no file header: frames (or filler) from the first byte

        auto: dict[str, Any] = {}
        if ts_order == "auto" or chip == "auto":
            sample = np.empty(min(AUTO_SAMPLE_BYTES, max(self.source.size, 0)), dtype=np.uint8)
            got = read_into(f, sample)
            # Made from fewer bytes than a full sample (a file still short, as when one
            # is followed from its first flush), the choices could change as it grows.
            self._choices_final = got >= AUTO_SAMPLE_BYTES
            parsed, _, _, _ = parse_buffer(sample[:got], ts_bytes)
            auto["frames_examined"] = len(parsed.offset)
            if chip == "auto":
                payload = (parsed.sensor >> np.uint64(56)).astype(np.uint8) & np.uint8(7)
                counts = {g: int(np.count_nonzero(payload == p)) for g, p in PAYLOAD_OF_CHIP.items()}
                chip = 4 if counts[4] > counts[3] else 3
                auto["frames_per_chip"] = {str(g): c for g, c in counts.items()}
            if ts_order == "auto":
                widths = timestamp_widths(parsed)
                decreases = {order: count_decreases(fpga_timestamps(parsed.timestamp, widths, order))
                             for order in ("little", "big")}
                ts_order = "big" if decreases["big"] < decreases["little"] else "little"
                auto["ts_decreases"] = decreases
        self.chip: int = chip
        self.ts_order: str = ts_order
        self.tot_mode = tot_mode
        if chip == 3:
            tick: float = v3_tick
        else:
            tick = v4_tick if tot_mode != "apx" else 1000.0 / _APX_CYCLES_PER_US
        self.tot_tick_ns = tick
        header: dict[str, Any] = {
            "chip": chip,
            "ts_order": ts_order,
            "ts_bytes": ts_bytes,
            "tot_tick_ns": tick,
            "tot_mode": tot_mode if chip == 4 else None,
        }
        if auto:
            header["auto"] = auto
        return header

    @property
    def schema(self) -> pa.Schema:
        return SCHEMAS[self.chip]

    #: Whether the automatic choices (``chip``, ``ts_order``) are final: given, or made
    #: from a full sample of :data:`AUTO_SAMPLE_BYTES` (set by ``_read_header``).
    _choices_final: bool = True

    @property
    def settled(self) -> bool:
        """The automatic choices were given or made from a full sample: a follower that
        opened the file while it was shorter reopens it later, so that its frames equal
        a read of the finished file."""
        return self._choices_final

    # -- decoding ---------------------------------------------------------------------
    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([self.schema.field(c) for c in columns])
        per_call = max(1, min(batch_size, int(self.chunk_bytes * _FRAMES_PER_BYTE) + 1))
        produced = 0
        # The common threads= (an int; threads=False → 1): a prefetch worker above one.
        prefetch = self.threads > 1
        # (with a row limit, the least input its frames take: see output_lanes)
        input_bytes = None if n_rows is None else n_rows * _MIN_FRAME_BYTES
        stream = self.stream(per_call=per_call, slots=PREFETCH_AHEAD + 1 if prefetch else 1,
                             lanes=self.output_lanes(input_bytes=input_bytes),
                             handed_out=walk_arrays_for(columns))
        chunks = self._iter_parsed(stream, counted_here=not prefetch)
        if prefetch:  # (the counts of chunks decoded ahead wait for them to be taken)
            chunks = prefetched(chunks, ahead=PREFETCH_AHEAD, thread_name="bindf-astep",
                                counts=(lambda: stream.errors, self.errors))
        lanes = self.output_lanes(input_bytes=input_bytes)  # the walker has its own
        try:
            for parsed in chunks:
                arrays = FrameColumns(self, parsed, lanes, columns)
                batch = pa.RecordBatch.from_arrays([arrays.arrow(c) for c in columns],
                                                   schema=schema)
                produced += batch.num_rows
                yield batch
                if n_rows is not None and produced >= n_rows:
                    return
        finally:
            chunks.close()

    def _iter_parsed(self, stream: AstepStream, *,
                     counted_here: bool = True) -> Generator[_Parsed, None, None]:
        """Walk the file chunk by chunk with ``stream`` (from :meth:`stream`). With
        ``counted_here`` its counts go straight into :attr:`errors`; else the stream
        keeps them (a prefetch worker's: see :func:`._stream.prefetched`). A yielded
        item's arrays that the stream's ``handed_out`` leaves out (the sensor words
        always) are overwritten by the ``slots``-th item after it; the others are its
        own."""
        if counted_here:
            stream.errors = self.errors
        yield from decode_file(self.source, stream, first_read=_FIRST_READ,
                               max_read=self.chunk_bytes)

    def stream(self, *, per_call: int = 1 << 16, slots: int = 1,
               data_end: int | None = -1, lanes: Lanes | None = None,
               handed_out: frozenset[str] | None = None) -> AstepStream:
        """A resumable decoder of this stream's frames, from its first byte.

        ``data_end``: where the data ends (default: the file size when opened; ``None``
        for a file that is still growing). ``lanes``: where the frames' arrays are
        allocated (default: an array per walk; see :mod:`bindf._lanes`); ``handed_out``:
        the walk arrays the caller keeps as columns (default: all; the others are
        reused, see :class:`_FrameWalker`)."""
        end = self.source.size if data_end == -1 else data_end
        return AstepStream(0, path=self.path, on_error=self.on_error, data_end=end,
                           ts_bytes=self.ts_bytes, per_call=per_call, slots=slots, lanes=lanes,
                           handed_out=handed_out, chunk_bytes=self.chunk_bytes)

    def batch_stream(self, columns: Sequence[str] | None = None, *,
                     data_end: int | None = None) -> BatchStream:
        names = self.resolve_columns(columns)
        schema = pa.schema([self.schema.field(c) for c in names])

        def to_batch(parsed: _Parsed) -> pa.RecordBatch:
            arrays = FrameColumns(self, parsed, wanted=names)
            return pa.RecordBatch.from_arrays([arrays.arrow(c) for c in names], schema=schema)

        return BatchStream(self.stream(data_end=data_end, handed_out=walk_arrays_for(names)),
                           to_batch)


@dataclass
class _AstepKernelState:
    """What :class:`AstepStream` carries besides bytes (saved by ``checkpoint``)."""

    kernel: np.ndarray  # the frame walker's state array (open gap, counts, …)
    frames_done: int
    reported: tuple[int, int, int]


class AstepStream(StreamDecoder[_Parsed]):
    """Layer frames parsed from a stream of A-STEP bytes (see :class:`AstepReader`).

    The kernel's state (an open stretch of damage, the filler and resync counts) and the
    frame count live in the object, so decoding resumes at any byte. Filler and resync
    counts go to :attr:`errors` as they are found (``filler_bytes`` always: it is the
    stream's statistics of skipped bytes; ``resync_bytes``/``resyncs`` under
    ``on_error="warn"``/``"skip"``; ``"raise"`` raises at the first damaged byte).
    """

    def __init__(self, position: int, *, path: str, on_error: str, data_end: int | None,
                 ts_bytes: int | None, per_call: int, slots: int = 1,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, lanes: Lanes | None = None,
                 handed_out: frozenset[str] | None = None) -> None:
        capacity = chunk_bytes if data_end is None else min(
            chunk_bytes, max(data_end - position, 1))
        super().__init__(position, path=path, on_error=on_error, data_end=data_end,
                         label="A-STEP", capacity=max(capacity, MAX_FRAME_BYTES))
        if data_end is not None:  # no walk can find more frames than the data holds
            per_call = min(per_call, max(data_end - position, 0) // 5 + 1)
        self.walker = _FrameWalker(max(1, per_call), ts_bytes, slots, lanes, handed_out)
        self.frames_done = 0
        #: (filler bytes, resync bytes, stretches) already added to :attr:`errors`.
        self.reported = (0, 0, 0)

    def _decode(self, buf: np.ndarray, have: int, final: bool) -> Iterator[_Parsed]:
        walker = self.walker
        while True:
            n, n_gaps, stop, code = walker.walk(buf, self._pos, have, self._offset)
            counts = walker.counts()  # (filler bytes, resync bytes, stretches) so far
            first_gap = self._first_new_gap(n_gaps, counts)
            # (no resync counted under "raise": nothing is skipped, it raises at the
            # first damaged byte)
            self._account(counts, resyncs=self.on_error != "raise")
            if self.on_error == "raise" and first_gap is not None:
                value = int(buf[first_gap - self._offset])
                keep = int(np.searchsorted(walker.offset[:n], first_gap))
                self.ended = True
                if keep:
                    yield walker.parsed(keep, self.frames_done)
                raise CorruptDataError(
                    f"byte 0x{value:02x} is neither 0xFF filler nor the start of an A-STEP "
                    "frame (on_error='warn' or 'skip' resynchronises)",
                    path=self.path, offset=first_gap,
                )
            if self.on_error == "warn":
                for start, size in zip(walker.gap_start[:n_gaps].tolist(),
                                       walker.gap_length[:n_gaps].tolist(), strict=True):
                    self._warn_gap(start, size)
            self._pos = stop
            if n:
                parsed = walker.parsed(n, self.frames_done)
                self.frames_done += n
                yield parsed
            if code != _astep.PARSE_FULL:
                return

    def _account(self, now: tuple[int, int, int], resyncs: bool = True) -> None:
        """Add the kernel's counts ``now`` (:meth:`_FrameWalker.counts`) since the last
        call to :attr:`errors` (the resync counts only if ``resyncs``)."""
        for kind, before, after in zip(("filler_bytes", "resync_bytes", "resyncs"),
                                       self.reported, now, strict=True):
            if after > before and (resyncs or kind == "filler_bytes"):
                self.note_error(kind, after - before)
        self.reported = now

    def _first_new_gap(self, n_gaps: int, counts: tuple[int, int, int]) -> int | None:
        """Offset of the first stretch of unparsable bytes, if any was found (``counts``:
        the kernel's, :meth:`_FrameWalker.counts`)."""
        if counts[2] == 0:
            return None
        return int(self.walker.gap_start[0]) if n_gaps else self.walker.open_gap

    def _warn_gap(self, start: int, size: int) -> None:
        _warn(CorruptDataWarning(
            f"skipped {size} byte(s) that start no A-STEP frame (resynchronised)",
            path=self.path, offset=start))

    def _at_end(self, pending: int, shrank: bool) -> None:
        open_gap = self.walker.open_gap
        if open_gap >= 0 and self.on_error == "warn":
            self._warn_gap(open_gap, self.position - open_gap)
        tail = self._buf[self._pos:self._have]
        if shrank:
            why = "the file shrank while it was read"
        elif not pending:
            return
        elif len(tail) < 3:
            why = f"the file ends {len(tail)} byte(s) into a frame, before its sensor header"
        else:
            why = (f"the frame there declares {int(tail[0])} bytes after its length byte "
                   f"but only {len(tail) - 1} follow")
        self.warn_truncated(self.position, why, "returning every complete frame")

    def _kernel_state(self) -> _AstepKernelState:
        return _AstepKernelState(self.walker.state.copy(), self.frames_done, self.reported)

    def _restore_kernel(self, state: _AstepKernelState) -> None:
        self.walker.state[:] = state.kernel
        self.frames_done = state.frames_done
        self.reported = state.reported


class FrameColumns:
    """The columns of one chunk of parsed frames, each computed on first request.

    Output columns are written into ``lanes`` (see :mod:`bindf._lanes`); intermediate
    values (``well_formed``, the Gray-decoded stamps) are ordinary arrays.
    """

    def __init__(self, reader: AstepReader, parsed: _Parsed, lanes: Lanes | None = None,
                 wanted: Sequence[str] = ()) -> None:
        self.reader = reader
        self.parsed = parsed
        self.n = len(parsed.offset)
        self.lanes = lanes if lanes is not None else Lanes(enabled=False)
        #: The output columns of this read: one kernel pass computes all of them it can.
        self.wanted = ["kind_code" if name == "kind" else name for name in wanted]
        self._cache: dict[str, np.ndarray] = {}
        self._validity: pa.Buffer | None | bool = False  # False: not computed yet

    def arrow(self, name: str) -> pa.Array:
        if name == "kind":  # codes are 0..2 by construction: no bounds check (a pass)
            return pa.DictionaryArray.from_arrays(pa.array(self.get("kind_code")),
                                                  _KIND_DICTIONARY, safe=False)
        if name == "sensor":
            return self._sensor_bytes()
        values = self.get(name)
        if name in _NOT_NULL:
            return pa.array(values)
        return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), self.n,
                                     [self.validity(), pa.py_buffer(values)])

    def validity(self) -> pa.Buffer | None:
        """Arrow validity bitmap of the sensor columns (None: every frame well formed)."""
        if self._validity is False and self.reader.chip == 3:
            self._v3_pass()
        if self._validity is False:
            valid = self.get("well_formed")
            self._validity = (None if valid.all()
                              else pa.py_buffer(np.packbits(valid, bitorder="little")))
        return self._validity  # type: ignore[return-value]

    def get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self._compute(name)
        return self._cache[name]

    def out(self, name: str, dtype: type) -> np.ndarray:
        """Uninitialised memory for output column ``name``."""
        return self.lanes.empty(name, self.n, dtype)

    def sensor_byte(self, k: int) -> np.ndarray:
        """Sensor byte ``k`` of every frame (a strided view of the sensor words)."""
        as_bytes = self.parsed.sensor.view(np.uint8).reshape(self.n, 8)
        return as_bytes[:, 7 - k] if sys.byteorder == "little" else as_bytes[:, k]

    def _compute(self, name: str) -> np.ndarray:
        p, chip, u8 = self.parsed, self.reader.chip, np.uint8
        if chip == 3 and name in _V3_KERNEL_COLUMNS:
            return self._v3_pass(name)
        if name == "frame_index":
            return np.add(_counting(self.n), p.first_index, out=self.out(name, np.int64))
        if name == "byte_offset":
            return p.offset
        if name == "length":
            return p.length
        if name == "layer":
            return p.layer
        if name == "chip_id":
            return np.right_shift(self.sensor_byte(0), u8(3), out=self.out(name, u8))
        if name == "payload":
            return np.bitwise_and(self.sensor_byte(0), u8(7), out=self.out(name, u8))
        if name == "ts_bytes":
            widths = np.subtract(p.length, u8(2), out=self.out(name, u8))
            widths -= self.get("payload")
            return widths
        if name == "fpga_ts":
            if self.reader.ts_order == "little":
                return p.timestamp
            return fpga_timestamps(p.timestamp, self.get("ts_bytes"), self.reader.ts_order,
                                   out=self.out(name, np.uint64))
        if name == "well_formed":
            return self.get("payload") == u8(PAYLOAD_OF_CHIP[chip])
        if name == "kind_code":  # the generation's code, or _WRONG_LENGTH (no branchy where)
            code = _KIND_OF_CHIP[chip]
            wrong = (~self.get("well_formed")).view(np.int8)
            kind = np.multiply(wrong, np.int8(_WRONG_LENGTH - code), out=self.out(name, np.int8))
            kind += np.int8(code)
            return kind
        if chip == 4:
            return self._v4(name)
        raise KeyError(name)

    def _v3_pass(self, name: str | None = None) -> np.ndarray:
        """One ``_astep.v3_fields`` pass: ``name``, every wanted column the kernel
        computes, and the validity bitmap. Returns column ``name`` (``None``: nothing)."""
        names = {c for c in self.wanted if c in _V3_KERNEL_COLUMNS and c not in self._cache}
        if name is not None:
            names.add(name)
        columns = {c: self.out(c, _V3_KERNEL_COLUMNS[c]) for c in names}
        bitmap = np.empty((self.n + 7) // 8, dtype=np.uint8)
        well_formed = _astep.v3_fields(self.parsed.sensor, self.parsed.length,
                                       float(self.reader.tot_tick_ns), valid=bitmap, **columns)
        self._cache.update(columns)
        if self._validity is False:
            self._validity = None if well_formed == self.n else pa.py_buffer(bitmap)
        return columns[name] if name is not None else bitmap

    def _sensor_bytes(self) -> pa.Array:
        """The raw ``p + 1`` sensor bytes of each frame (binary view: polars' own layout)."""
        as_views = SENSOR_TYPE != pa.binary()
        # 16 bytes per frame: the column itself (lane memory), or a temporary for older
        # pyarrow
        entries = (self.out("sensor", np.dtype((np.uint8, 16))) if as_views
                   else np.empty((self.n, 16), dtype=np.uint8))
        _astep.sensor_views(self.parsed.sensor, entries.reshape(-1))
        if not as_views:  # older pyarrow: gather into a plain binary array
            count = entries[:, 0].astype(np.int32)
            offsets = np.zeros(self.n + 1, dtype=np.int32)
            np.cumsum(count, out=offsets[1:])
            data = entries[:, 4:12][np.arange(8) < count[:, None]]
            return pa.Array.from_buffers(pa.binary(), self.n,
                                         [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        return pa.Array.from_buffers(SENSOR_TYPE, self.n, [None, pa.py_buffer(entries)])

    def _v4(self, name: str) -> np.ndarray:
        if name in V4_BITS:
            first, end = V4_BITS[name]
            word = (self.parsed.sensor >> np.uint64(64 - end)) & np.uint64((1 << (end - first)) - 1)
            values = self.out(name, np.uint16 if end - first > 8 else np.uint8)
            values[:] = word
            return values
        mode = self.reader.tot_mode
        if name in ("gray1", "gray2"):
            k = name[-1]
            code = (self.get(f"ts_coarse{k}").astype(np.uint32) << np.uint32(3)) | self.get(f"ts_fine{k}")
            return _gray_to_binary(code)
        if name in ("ts_dec1", "ts_dec2"):
            k = name[-1]
            dec = self.out(name, np.uint32)
            if mode != "apx":
                np.left_shift(self.get(f"gray{k}"), np.uint32(1), out=dec)
                dec |= self.get(f"ts_neg{k}")
            elif k == "1":
                dec[:] = self.get("gray1")
            else:
                ts1, ts2 = self.get("gray1"), self.get("gray2")
                np.add(ts2, np.where(ts2 < ts1, np.uint32(CLOCK_ROLLOVER), np.uint32(0)), out=dec)
            return dec
        if name == "tot_total":
            ts1 = self.get("ts_dec1").astype(np.int64)
            ts2 = self.get("ts_dec2").astype(np.int64)
            if mode == "firmware":
                tot = np.where(ts2 > ts1, ts2 - ts1, (1 << 18) - 1 + ts2 - ts1)
            elif mode == "modular":
                tot = (ts2 - ts1) % (1 << 18)
            else:
                tot = ts2 - ts1
            values = self.out(name, np.uint32)
            values[:] = tot
            return values
        if name == "tot_us":
            out = self.out(name, np.float64)
            if mode == "apx":
                return np.divide(self.get("tot_total"), _APX_CYCLES_PER_US, out=out)
            return _ticks_to_us(self.get("tot_total"), self.reader.tot_tick_ns, out=out)
        raise KeyError(name)


_COUNTING = np.arange(0, dtype=np.int64)


def _counting(n: int) -> np.ndarray:
    """``0, 1, …, n - 1`` (int64, read-only), from one array kept for every batch: a
    batch's frame index is one addition into its column, not an ``arange`` and a copy."""
    global _COUNTING
    if len(_COUNTING) < n:
        counting = np.arange(max(n, 2 * len(_COUNTING)), dtype=np.int64)
        counting.flags.writeable = False
        _COUNTING = counting  # one assignment: a thread reading the old one is unaffected
    return _COUNTING[:n]


def _ticks_to_us(ticks: np.ndarray, tick_ns: float, out: np.ndarray) -> np.ndarray:
    """``ticks × tick_ns / 1000`` in that order (as the upstream decoders round), into
    ``out`` (float64)."""
    np.multiply(ticks, float(tick_ns), dtype=np.float64, out=out)
    out /= 1000.0
    return out


# -- detection -------------------------------------------------------------------------
def looks_like_astep(head: bytes, source: Source) -> bool:
    """Probe: does the file start with a long, consistent run of A-STEP frames?

    The file has no magic, and shares the ``.bin`` extension with FLIM LABS exports, so
    the probe asks a lot of the first bytes. From one of the first 18 positions (a file
    may begin inside a frame), every byte of the head must be a frame or ``0xFF`` filler,
    with no resynchronisation at all; the run must hold at least
    :data:`PROBE_MIN_FRAMES` frames, all with one timestamp width; three quarters of them
    must carry one chip generation's payload (4 or 7); and in one byte order their
    timestamps may decrease at most once every eight frames. Random bytes and the FLIM
    LABS formats fail within the first few bytes.
    """
    if len(head) < PROBE_MIN_FRAMES * 5:
        return False
    data = np.frombuffer(head, dtype=np.uint8)
    for start in range(MAX_FRAME_BYTES):
        parsed, walker, _, _ = parse_buffer(data[start:])
        if walker.counts()[2] == 0 and _consistent_run(parsed):
            return True
    return False


def _consistent_run(parsed: _Parsed) -> bool:
    n = len(parsed.offset)
    if n < PROBE_MIN_FRAMES:
        return False
    widths = timestamp_widths(parsed)
    if not (widths == widths[0]).all():
        return False
    payload = (parsed.sensor >> np.uint64(56)).astype(np.uint8) & np.uint8(7)
    typical = max(int(np.count_nonzero(payload == p)) for p in PAYLOAD_OF_CHIP.values())
    if 4 * typical < 3 * n:
        return False
    decreases = min(count_decreases(fpga_timestamps(parsed.timestamp, widths, order))
                    for order in ("little", "big"))
    return 8 * decreases <= n


def sample_file() -> bytes:
    """A small, valid A-STEP stream (64 AstroPix 3 frames on two layers, 4-byte
    little-endian timestamps, no filler): the registry's sample for the robustness,
    on_error and fuzz sweeps, and ``bindf demo``."""
    n = 64
    index = np.arange(n)
    table = pa.table({
        "layer": (index % 2).astype(np.uint8),
        "fpga_ts": (1000 + 37 * index).astype(np.uint64),
        "chip_id": (index % 4).astype(np.uint8),
        "column": (index % 2).astype(np.uint8),
        "location": (index * 7 % 35).astype(np.uint8),
        "chip_timestamp": (index * 3 % 256).astype(np.uint8),
        "tot_total": (100 + index * 13 % 900).astype(np.uint16),
    })
    # (imported here: the writer's module imports this one)
    from ._astep_writer import frame_block

    return frame_block(table, 3, "little", 4, np.zeros(n, dtype=np.int64), 0).tobytes()


def __getattr__(name: str) -> Any:
    # ``bindf.formats.astep.write_astep`` still works; the writer lives in its own module.
    if name == "write_astep":
        from ._astep_writer import write_astep

        return write_astep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
