"""FLIM LABS spectroscopy photon events (``read_spectro``).

Layout: ``docs/formats/spectro.md`` (from the FLIM LABS ``spectroscopy-py`` documentation).
Every record is 17 packed bytes: ``u8 event, f64 microtime_ns, f64 macrotime_ns``. The
event byte is a 0-based channel index, or a marker: 70 ``F`` frame, 76 ``L`` line,
80 ``P`` pixel. Two containers hold these records:

* legacy raw output (``spectroscopy-output-*.bin``): no header, records from byte 0;
* ``STT1`` time-tagger export: ``STT1 | u32 length | JSON header`` then the records.

Fixed-size records need no kernel: chunks are read with ``readinto`` straight into a
packed numpy structured array and the columns copied out (:mod:`._fixed`).

:func:`write_spectro` writes either container from any frame with the three raw columns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._header import read_preamble
from .._source import Source
from .._writing import (
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
    write_fixed_record_file,
)
from ._base import numpy_to_arrow
from ._fixed import FixedRecordReader

STT1_MAGIC = b"STT1"

#: One photon/marker record, 17 bytes, no padding (numpy packs unless align=True).
RECORD_DTYPE = np.dtype([("event", "u1"), ("microtime_ns", "<f8"), ("macrotime_ns", "<f8")])
RECORD_SIZE = RECORD_DTYPE.itemsize

#: Marker event codes and the names used in the ``marker`` column.
MARKERS: dict[int, str] = {70: "frame", 76: "line", 80: "pixel"}
MARKER_NAMES = list(MARKERS.values())
_MARKER_DICTIONARY = pa.array(MARKER_NAMES, pa.string())

#: Event byte → True for marker codes (used by the legacy-file probe).
_IS_MARKER = np.zeros(256, dtype=bool)
_IS_MARKER[list(MARKERS)] = True

SCHEMA = pa.schema(
    [
        pa.field("event", pa.uint8(), nullable=False),
        pa.field("microtime_ns", pa.float64(), nullable=False),
        pa.field("macrotime_ns", pa.float64(), nullable=False),
        pa.field("channel", pa.uint8()),
        pa.field("marker", pa.dictionary(pa.int8(), pa.string())),
    ]
)

#: Legacy files have no magic; these bounds make the probe reject other binary files.
_PROBE_RECORDS = 64
_MAX_PLAUSIBLE_CHANNEL = 63
_MAX_PLAUSIBLE_MICROTIME_NS = 1e6


class PhotonEventColumns:
    """The decoding hooks of a fixed-record reader of FLIM LABS photon events (an
    ``event`` byte and its times; spectroscopy and ``ITT1``): only the record fields a
    read asks for are copied, and ``channel``/``marker`` are derived from ``event`` only
    when asked for (a ``select("time_ns")`` neither copies nor classifies the events)."""

    record_dtype: np.dtype
    dictionaries: ClassVar[Mapping[str, pa.Array]] = {"marker": _MARKER_DICTIONARY}

    def raw_fields_for(self, columns: list[str]) -> list[str]:
        wanted = set(columns) | ({"event"} if {"channel", "marker"} & set(columns) else set())
        return [name for name in self.record_dtype.names if name in wanted]

    def build_columns(self, raw: dict[str, np.ndarray], columns: list[str],
                      first_offset: int | None = None) -> list[pa.Array]:
        derived = event_columns(raw["event"], columns) if "event" in raw else {}
        return [numpy_to_arrow(raw[name]) if name in self.record_dtype.names
                else derived[name] for name in columns]


class SpectroReader(PhotonEventColumns, FixedRecordReader):
    """FLIM LABS spectroscopy photon events: legacy raw output or ``STT1`` export.

    Columns
    -------
    event : uint8
        The raw event byte.
    microtime_ns : float64
        Arrival time within the laser period.
    macrotime_ns : float64
        Time since the start of the acquisition.
    channel : uint8, null on marker rows
        The 0-based channel index of a photon (the vendor software shows ``channel + 1``).
        Every event byte that is not a marker code counts as a channel, as stored.
    marker : dictionary ("frame", "line", "pixel"), null on photon rows
        The marker kind for events 70/76/80.

    Options
    -------
    container : "stt1" | "legacy" | None
        Force the container; by default ``STT1`` magic means STT1, anything else legacy.
        A legacy file has an empty header (``{}``).

    A file that ends inside a record gives a :class:`~bindf.errors.TruncatedFileWarning`
    and all complete records.
    """

    name: ClassVar[str] = "spectro"
    label: ClassVar[str] = "FLIM LABS spectroscopy"

    def _read_header(self, f: BinaryIO) -> dict[str, Any]:
        container = self.options.pop("container", None)
        self.refuse_options(self.options)
        self._container_forced = container is not None
        self._container_open = False
        if container is None:
            start = f.read(4)
            container = "stt1" if start == STT1_MAGIC else "legacy"
            # A file being written may hold part of the magic only: not decided yet.
            self._container_open = len(start) < 4 and STT1_MAGIC.startswith(start)
            f.seek(0)
        if container == "stt1":
            header, self.data_offset = read_preamble(
                f, magic=STT1_MAGIC, file_size=self.source.size, path=self.path,
                format_label="STT1 spectroscopy",
            )
        elif container == "legacy":
            header, self.data_offset = {}, 0
        else:
            raise ValueError(f"container must be 'stt1', 'legacy' or None, not {container!r}")
        self.container = container
        self.record_dtype = RECORD_DTYPE
        return header

    @property
    def settled(self) -> bool:
        """False while the file is too short to tell the containers apart (empty, or a
        part of the STT1 magic): a follower opens it again once it has grown."""
        return self._container_forced or not self._container_open

    @property
    def schema(self) -> pa.Schema:
        return SCHEMA



def event_columns(events: np.ndarray, wanted: Sequence[str] = ("channel", "marker")
                  ) -> dict[str, pa.Array]:
    """The ``channel`` and ``marker`` columns (those named in ``wanted``) of FLIM LABS
    event bytes: ``channel`` is the byte for photons and null for the marker codes
    70/76/80, ``marker`` is ``frame``/``line``/``pixel`` for markers and null for
    photons. Shared by every FLIM LABS photon-event format (spectroscopy, ``ITT1``)."""
    out: dict[str, pa.Array] = {}
    if not {"channel", "marker"} & set(wanted):
        return out
    # Marker codes are 70 and above, channels far below: one max() (a single SIMD pass)
    # settles the common photon-only chunk; else three comparisons (they beat a 256-entry
    # lookup table by ~8x here).
    is_marker = None
    if len(events) and int(events.max()) >= _FIRST_MARKER_CODE:
        is_marker = (events == 70) | (events == 76) | (events == 80)
    if is_marker is None or not is_marker.any():
        # Photon-only chunk (the common case): channel is the event bytes as they are
        # (one shared immutable buffer) and marker is all null.
        if "channel" in wanted:
            out["channel"] = numpy_to_arrow(events)
        if "marker" in wanted:
            out["marker"] = _no_markers(len(events))
        return out
    if "channel" in wanted:
        out["channel"] = _with_validity(pa.uint8(), events, ~is_marker)
    if "marker" in wanted:
        # index 0 frame, 1 line, 2 pixel; 0 also under nulls, since some readers
        # (polars) check every index, even masked ones.
        indices = (events == 76).view(np.int8) + 2 * (events == 80).view(np.int8)
        out["marker"] = pa.DictionaryArray.from_arrays(
            _with_validity(pa.int8(), indices, is_marker), _MARKER_DICTIONARY)
    return out


_FIRST_MARKER_CODE = min(MARKERS)

#: Photon-only chunks of up to this many rows share one all-null ``marker`` column (see
#: :func:`_no_markers`); larger ones get their own.
_SHARED_NULL_MARKER_ROWS = 1 << 22
_null_markers: pa.DictionaryArray | None = None


def _no_markers(n: int) -> pa.DictionaryArray:
    """An all-null ``marker`` column of ``n`` rows: a slice of one shared column (Arrow
    arrays are immutable), grown to the longest chunk seen. Why: a new one per chunk
    zero-filled a fresh megabyte per million rows (its index buffer and its validity
    bitmap), whose first writes are page faults: ~900 a read of the 8 x 50 MB benchmark
    glob, and its photon-only chunks are the usual ones."""
    global _null_markers
    shared = _null_markers
    if shared is not None and len(shared) >= n:
        return shared.slice(0, n)
    column = pa.DictionaryArray.from_arrays(pa.nulls(n, pa.int8()), _MARKER_DICTIONARY)
    # Kept if longer than the one shared now (another thread may have made a longer one
    # meanwhile; in a race the shorter may win, which only costs a later chunk a column)
    shared = _null_markers
    if n <= _SHARED_NULL_MARKER_ROWS and (shared is None or n > len(shared)):
        _null_markers = column
    return column


def _with_validity(arrow_type: pa.DataType, values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A primitive Arrow array from contiguous ``values`` and a boolean validity mask,
    building the validity bitmap with ``np.packbits`` (10x faster than ``mask=``)."""
    bitmap = np.packbits(valid, bitorder="little")
    return pa.Array.from_buffers(
        arrow_type, len(values), [pa.py_buffer(bitmap), pa.py_buffer(values)]
    )


def looks_like_legacy_spectro(head: bytes, source: Source) -> bool:
    """Cheap probe for header-less raw output: plausible events and times, sorted macrotime.

    Up to 64 leading records must all have a plausible event byte (a channel below 64 or
    a marker code), finite non-negative times, a microtime below 1 ms, and macrotimes
    that never decrease. An all-zero head (a preallocated or zero-filled file) is not
    taken for photon data. Random bytes pass these checks with a probability far below
    one in a billion once a few records are checked.
    """
    n = min(len(head), source.size) // RECORD_SIZE
    if n < 2:
        return False
    records = np.frombuffer(head, dtype=RECORD_DTYPE, count=min(n, _PROBE_RECORDS))
    if not np.frombuffer(head, dtype=np.uint8, count=len(records) * RECORD_SIZE).any():
        return False
    events = records["event"]
    micro = records["microtime_ns"]
    macro = records["macrotime_ns"]
    plausible_event = (events <= _MAX_PLAUSIBLE_CHANNEL) | _IS_MARKER[events]
    with np.errstate(invalid="ignore"):
        return bool(
            plausible_event.all()
            and np.isfinite(micro).all()
            and np.isfinite(macro).all()
            and ((micro >= 0) & (micro < _MAX_PLAUSIBLE_MICROTIME_NS)).all()
            and (macro >= 0).all()
            and (np.diff(macro) >= 0).all()
        )


def write_spectro(
    path: str | os.PathLike[str],
    frame: Any,
    header: Mapping[str, Any] | None = None,
    container: str = "stt1",
    *,
    overwrite: bool = True,
) -> None:
    """Write spectroscopy photon events as an ``STT1`` export or legacy raw output.

    Parameters
    ----------
    path:
        Destination. Written atomically: a failed write leaves no partial file.
    frame:
        pandas/polars/Arrow frame (or dict of columns) with at least ``event``,
        ``microtime_ns`` and ``macrotime_ns``. Other columns (the derived ``channel`` and
        ``marker`` of a frame bindf read) are ignored: ``event`` is what is stored.
        ``event`` must fit ``uint8``; nulls are refused.
    header:
        JSON header of an ``STT1`` file (``channels``, ``laser_period_ns`` …). When
        omitted, the header a bindf reader attached to ``frame`` is reused, else ``{}``.
    container:
        ``"stt1"`` (default) or ``"legacy"``. Legacy raw output has no header at all, so
        an explicit non-empty ``header`` is refused there rather than dropped.
    overwrite:
        ``False`` refuses to replace an existing file.
    """
    if container not in ("stt1", "legacy"):
        raise ValueError(f"container must be 'stt1' or 'legacy', not {container!r}")
    table = to_arrow_table(frame)
    require_columns(table, RECORD_DTYPE.names, "spectroscopy events")
    if container == "legacy":
        if header:
            raise ValueError("legacy spectroscopy output has no header; pass header=None "
                             "or write container='stt1'")
        preamble = b""
    else:
        preamble = encode_preamble(STT1_MAGIC, inherited_header(frame, header) or {})
    write_fixed_record_file(path, preamble, table, RECORD_DTYPE, overwrite=overwrite)
