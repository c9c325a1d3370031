"""FLIM LABS spectroscopy photon events (``read_spectro``).

Layout: ``../shared/FORMATS.md`` §3 (from the FLIM LABS ``spectroscopy-py`` documentation).
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

import operator
import os
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._atomic import atomic_output
from .._header import read_preamble
from .._source import Source
from .._writing import (
    WRITE_CHUNK_ROWS,
    column_values,
    encode_preamble,
    inherited_header,
    require_columns,
    to_arrow_table,
    write_records,
)
from ._fixed import FixedRecordReader

STT1_MAGIC = b"STT1"

#: One photon/marker record, 17 bytes, no padding (numpy packs unless align=True).
RECORD_DTYPE = np.dtype([("event", "u1"), ("microtime_ns", "<f8"), ("macrotime_ns", "<f8")])
RECORD_SIZE = RECORD_DTYPE.itemsize

#: Marker event codes and the names used in the ``marker`` column.
MARKERS: dict[int, str] = {70: "frame", 76: "line", 80: "pixel"}
MARKER_NAMES = list(MARKERS.values())

#: Marker lookup table: event byte → index into MARKER_NAMES, or -1 for photons.
_MARKER_INDEX = np.full(256, -1, dtype=np.int8)
for _i, _code in enumerate(MARKERS):
    _MARKER_INDEX[_code] = _i

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


class SpectroReader(FixedRecordReader):
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
        if self.options:
            raise TypeError(f"unexpected option(s) for read_spectro: {sorted(self.options)}")
        if container is None:
            container = "stt1" if f.read(4) == STT1_MAGIC else "legacy"
            f.seek(0)
        if container == "stt1":
            header, data_offset = read_preamble(
                f, magic=STT1_MAGIC, file_size=self.source.size, path=self.path,
                format_label="STT1 spectroscopy",
            )
        elif container == "legacy":
            header, data_offset = {}, 0
        else:
            raise ValueError(f"container must be 'stt1', 'legacy' or None, not {container!r}")
        self.container = container
        self._set_layout(RECORD_DTYPE, data_offset)
        return header

    @property
    def schema(self) -> pa.Schema:
        return SCHEMA

    def count_rows(self) -> int:
        return self.n_records

    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        count = self.n_records if n_rows is None else n_rows
        schema = pa.schema([SCHEMA.field(c) for c in columns])
        fields = [f for f in RECORD_DTYPE.names if f in columns]
        if {"channel", "marker"} & set(columns) and "event" not in fields:
            fields.insert(0, "event")
        parts = {name: operator.itemgetter(name) for name in fields}
        for _, arrays in self._iter_parts(count, batch_size, parts):
            yield pa.RecordBatch.from_arrays(decode_columns(arrays, columns), schema=schema)


_MARKER_DICTIONARY = pa.array(MARKER_NAMES, pa.string())


def decode_columns(raw: dict[str, np.ndarray], columns: list[str]) -> list[pa.Array]:
    """The requested output columns from contiguous raw field arrays of one chunk.

    ``channel`` shares the data buffer of the event bytes (it is the same bytes with
    marker rows masked), and the marker mask is computed once per chunk with three byte
    comparisons. Chunks without any marker (photon-only acquisitions) skip the mask work.
    """
    out: dict[str, pa.Array] = {
        name: pa.array(values) for name, values in raw.items() if name != "event"
    }
    if "event" in raw:
        events = raw["event"]
        event_array = pa.array(events)
        out["event"] = event_array
        n = len(events)
        is_frame, is_line, is_pixel = (events == code for code in MARKERS)
        is_marker = is_frame | is_line | is_pixel
        if not is_marker.any():
            out["channel"] = event_array
            out["marker"] = pa.DictionaryArray.from_arrays(
                pa.nulls(n, pa.int8()), _MARKER_DICTIONARY, safe=False
            )
        else:
            data = event_array.buffers()[1]
            is_photon = pa.py_buffer(np.packbits(~is_marker, bitorder="little"))
            out["channel"] = pa.Array.from_buffers(pa.uint8(), n, [is_photon, data])
            # Index into MARKER_NAMES (frame 0, line 1, pixel 2); photon rows are null.
            index = is_line.view(np.int8) + 2 * is_pixel.view(np.int8)
            is_marker_bits = pa.py_buffer(np.packbits(is_marker, bitorder="little"))
            indices = pa.Array.from_buffers(pa.int8(), n, [is_marker_bits, pa.py_buffer(index)])
            out["marker"] = pa.DictionaryArray.from_arrays(indices, _MARKER_DICTIONARY, safe=False)
    return [out[c] for c in columns]


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
    plausible_event = (events <= _MAX_PLAUSIBLE_CHANNEL) | (_MARKER_INDEX[events] >= 0)
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
    with atomic_output(path, overwrite=overwrite) as f:
        f.write(preamble)
        for start in range(0, table.num_rows, WRITE_CHUNK_ROWS):
            part = table.slice(start, WRITE_CHUNK_ROWS)
            records = np.empty(part.num_rows, dtype=RECORD_DTYPE)
            for name in RECORD_DTYPE.names:
                records[name] = column_values(part, name, RECORD_DTYPE[name])
            write_records(f, records)
