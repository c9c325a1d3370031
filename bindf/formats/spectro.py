"""FLIM LABS spectroscopy photon events (``read_spectro``).

Layout: ``../shared/FORMATS.md`` §3 (from the FLIM LABS ``spectroscopy-py`` documentation).
Every record is 17 packed bytes: ``u8 event, f64 microtime_ns, f64 macrotime_ns``. The
event byte is a 0-based channel index, or a marker: 70 ``F`` frame, 76 ``L`` line,
80 ``P`` pixel. Two containers hold these records:

* legacy raw output (``spectroscopy-output-*.bin``): no header, records from byte 0;
* ``STT1`` time-tagger export: ``STT1 | u32 length | JSON header`` then the records.

Fixed-size records need no kernel: chunks are read with ``readinto`` straight into a
packed numpy structured array and the columns copied out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa

from .._header import read_preamble
from .._source import Source, iter_fixed_records
from ..errors import TruncatedFileWarning
from ._base import FormatReader

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


class SpectroReader(FormatReader):
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
            header, self.data_offset = read_preamble(
                f, magic=STT1_MAGIC, file_size=self.source.size, path=self.path,
                format_label="STT1 spectroscopy",
            )
        elif container == "legacy":
            header, self.data_offset = {}, 0
        else:
            raise ValueError(f"container must be 'stt1', 'legacy' or None, not {container!r}")
        self.container = container
        data_bytes = self.source.size - self.data_offset
        self.n_records, self.tail_bytes = divmod(data_bytes, RECORD_SIZE)
        return header

    @property
    def schema(self) -> pa.Schema:
        return SCHEMA

    def count_rows(self) -> int:
        return self.n_records

    def _batches(
        self, columns: list[str], batch_size: int, n_rows: int | None
    ) -> Iterator[pa.RecordBatch]:
        count = self.n_records if n_rows is None else min(n_rows, self.n_records)
        schema = pa.schema([SCHEMA.field(c) for c in columns])
        got = 0
        with self.source.open() as f:
            for records, _ in iter_fixed_records(
                f, dtype=RECORD_DTYPE, start=self.data_offset, count=count,
                records_per_chunk=batch_size,
            ):
                got += len(records)
                yield pa.RecordBatch.from_arrays(
                    [_decode_column(records, c) for c in columns], schema=schema
                )
        if got < count:
            self._warn_truncated(self.data_offset + got * RECORD_SIZE, shrank=True)
        elif self.tail_bytes and count == self.n_records:
            self._warn_truncated(self.data_offset + self.n_records * RECORD_SIZE)

    def _warn_truncated(self, offset: int, shrank: bool = False) -> None:
        why = "the file shrank while it was read" if shrank else (
            f"the last {self.tail_bytes} bytes are an incomplete {RECORD_SIZE}-byte record"
        )
        warnings.warn(
            TruncatedFileWarning(
                f"truncated spectroscopy file: {why}; returning the complete records before it",
                path=self.path, offset=offset,
            ),
            stacklevel=2,
        )


def _decode_column(records: np.ndarray, name: str) -> pa.Array:
    """One output column from a chunk of raw records (always a contiguous copy)."""
    if name in ("event", "microtime_ns", "macrotime_ns"):
        return pa.array(np.ascontiguousarray(records[name]))
    marker_index = _MARKER_INDEX[records["event"]]
    is_marker = marker_index >= 0
    if name == "channel":
        return pa.array(np.ascontiguousarray(records["event"]), mask=is_marker)
    # name == "marker"
    # Null slots get index 0, not -1: some readers (polars) check every index.
    indices = pa.array(np.maximum(marker_index, 0), mask=~is_marker)
    return pa.DictionaryArray.from_arrays(indices, pa.array(MARKER_NAMES, pa.string()))


def looks_like_legacy_spectro(head: bytes, source: Source) -> bool:
    """Cheap probe for header-less raw output: plausible events and times, sorted macrotime."""
    n = min(len(head), source.size) // RECORD_SIZE
    if n < 2:
        return False
    records = np.frombuffer(head, dtype=RECORD_DTYPE, count=min(n, _PROBE_RECORDS))
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
