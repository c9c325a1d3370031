"""AstroPix 3 hits (``readout_uid`` 3000): the hit kernel's wrapper, field extraction,
the readout table, and the inverse of the field layout (:func:`encode_hits`).

The container of an AstroPix 3 ``.apx`` run is the AstroPix 4 one (``%APXDF``, JSON
header, ``FE DC BA`` readout records), so the reader frames readouts with the same code
(``_apx.frame_readouts``) and only the payload decoding differs: 5-byte hits found by the
state machine of ``_kernels/_apx3.pyx``, unpacked after mirroring the bits of each byte.
The format page in docs/ ("AstroPix 3") describes the layout, the fields and the rules.

Pieces, mirroring :mod:`._apx_hits` (AstroPix 4):

* :class:`Apx3HitDecoder` owns the carried bytes and scratch arrays and calls the kernel
  (the only sequential work);
* :class:`Apx3HitColumns` turns the raw 5-byte hits into the projected columns of
  :data:`HITS_SCHEMA` (the kernel's ``hit_fields``: one pass, split over threads);
* :func:`readout_columns` gives the readout table (:data:`READOUTS_SCHEMA`);
* :func:`encode_hits` is the writer's side: hit fields → raw hits that decode back to
  the same fields (laid out in readouts by :func:`._apx_writer.readout_records`, the
  builder of both chip generations).

Decisions (also in the docs page):

* ``stitch=False`` (the default) is upstream's table: upstream decodes every readout
  without the previous readout's extra bytes, so hits split across two readouts are
  lost (100 of them in the public sample). ``stitch=True`` offers each readout's extra
  bytes to the next one, as the AstroPix 4 reader always does.
* ``decoding_order`` is uint16 (upstream's uint8 overflows beyond 255 hits per readout);
  it saturates at 65535. ``tot_us`` is float64 (upstream float32, which rounds 0.965 to
  0.96499997). ``chip_timestamp`` (the 8-bit chip clock, dropped by upstream's
  ``binary_v3`` hit class but kept by every other AstroPix 3 decoder) is the last column.
* The per-readout time is called ``wall_timestamp`` in both tables, as upstream's
  AstroPix 3 table calls it (AstroPix 4 tables call it ``timestamp``).
* Readouts where upstream fails (empty or idle-only payloads raise ``TypeError``; stray
  bytes with no start byte after them hang it) give no hits and status bit 7
  (``decoder_failure``), and with ``stitch`` the carried bytes are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .._kernels import _apx3
from ._apx_hits import BIT_REVERSE, STATUS_FLAGS, HitColumns

HIT_SIZE = 5
PAD_BYTE = 0xFF
#: ``payload`` of every valid hit: only then is the hit's first byte a start byte.
HIT_PAYLOAD = 4

HITS_SCHEMA = pa.schema(
    [
        pa.field("chip_id", pa.uint8(), nullable=False),
        pa.field("payload", pa.uint8(), nullable=False),
        pa.field("readout_id", pa.uint32(), nullable=False),
        pa.field("wall_timestamp", pa.uint64(), nullable=False),
        pa.field("decoding_order", pa.uint16(), nullable=False),
        pa.field("column", pa.uint8(), nullable=False),
        pa.field("location", pa.uint8(), nullable=False),
        pa.field("tot_msb", pa.uint8(), nullable=False),
        pa.field("tot_lsb", pa.uint8(), nullable=False),
        pa.field("tot_dec", pa.uint16(), nullable=False),
        pa.field("tot_us", pa.float64(), nullable=False),
        pa.field("chip_timestamp", pa.uint8(), nullable=False),
    ]
)

READOUTS_SCHEMA = pa.schema(
    [
        pa.field("readout_id", pa.uint32(), nullable=False),
        pa.field("wall_timestamp", pa.uint64(), nullable=False),
        pa.field("payload_length", pa.uint32(), nullable=False),
        pa.field("n_hits", pa.uint32(), nullable=False),
        pa.field("status", pa.uint8(), nullable=False),
        *(pa.field(flag, pa.bool_(), nullable=False) for flag in STATUS_FLAGS),
        pa.field("byte_offset", pa.uint64(), nullable=False),
    ]
)

#: Bit fields of the 5 mirrored bytes: column → (byte index, shift, mask).
BYTE_FIELDS: dict[str, tuple[int, int, int]] = {
    "chip_id": (0, 3, 0x1F),
    "payload": (0, 0, 0x07),
    "column": (1, 7, 0x01),
    "location": (1, 0, 0x3F),
    "chip_timestamp": (2, 0, 0xFF),
    "tot_msb": (3, 0, 0x0F),
    "tot_lsb": (4, 0, 0xFF),
}


@dataclass
class Decoded3:
    """Output of one :meth:`Apx3HitDecoder.decode` call (hit arrays valid until reused)."""

    n_hits: int
    hits: np.ndarray  # (n_hits, 5) uint8 raw bytes, as the chip sent them
    hit_order: np.ndarray  # uint16 decoding order
    hit_readout_id: np.ndarray  # uint32
    hit_timestamp: np.ndarray  # uint64 wall timestamp of the hit's readout
    status: np.ndarray  # uint8 per readout (fresh array)
    readout_hits: np.ndarray  # uint32 hits per readout (fresh array)
    #: (as :attr:`._apx_hits.Decoded.owned`; this decoder always writes into its scratch)
    owned: frozenset[str] = frozenset()


class _HitScratch:
    """Per-hit output arrays of the kernel, reused from call to call."""

    def __init__(self, size: int) -> None:
        self.hits = np.empty((size, HIT_SIZE), dtype=np.uint8)
        self.order = np.empty(size, dtype=np.uint16)
        self.readout_id = np.empty(size, dtype=np.uint32)
        self.timestamp = np.empty(size, dtype=np.uint64)


class Apx3HitDecoder:
    """Stateful wrapper of the AstroPix 3 hit kernel: carried bytes and reusable buffers.

    Call :meth:`decode` with consecutive groups of framed readouts (any grouping gives the
    same hits). ``stitch`` carries a hit cut at the end of one readout into the next;
    ``store_hits=False`` only counts hits (for the readout table). With ``slots > 1``
    successive calls write into different scratch sets, so the result of one call stays
    valid while the next ``slots - 1`` calls run (for a prefetching thread).
    """

    def __init__(self, *, stitch: bool = False, store_hits: bool = True, slots: int = 1) -> None:
        self.stitch = stitch
        self.store_hits = store_hits
        self.carry = np.zeros(HIT_SIZE, dtype=np.uint8)
        self.carry_len = -1
        self._slots = [_HitScratch(0) for _ in range(max(slots, 1))]
        self._next = 0

    def reset(self) -> None:
        """Forget the carried extra bytes (after a gap in the byte stream)."""
        self.carry_len = -1

    @property
    def carried(self) -> bytes | None:
        """The extra bytes offered to the next readout (None: none, or no stitching)."""
        return None if self.carry_len < 0 else bytes(self.carry[: self.carry_len])

    def decode(self, buf: np.ndarray, payload_pos: np.ndarray, payload_len: np.ndarray,
               readout_id: np.ndarray, timestamp: np.ndarray,
               payload_bytes: int | None = None) -> Decoded3:
        """Decode the payloads ``buf[payload_pos[i]:payload_pos[i] + payload_len[i]]``.
        ``payload_bytes``: their total length, where the caller knows it (see
        :func:`bindf.formats._apx_hits.most_hits`)."""
        n_readouts = len(payload_pos)
        payload_len = np.ascontiguousarray(payload_len, dtype=np.uint32)
        scratch = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if self.store_hits:
            # a readout of L bytes holds at most L // 5 hits plus one re-assembled hit
            # (and the sum of the L // 5 is at most the sum of the L over 5)
            bound = (int(np.sum(payload_len // HIT_SIZE, dtype=np.int64))
                     if payload_bytes is None else payload_bytes // HIT_SIZE) + n_readouts
            if bound > len(scratch.hits):
                scratch.__init__(max(bound, 2 * len(scratch.hits)))
        status = np.empty(n_readouts, dtype=np.uint8)
        readout_hits = np.empty(n_readouts, dtype=np.uint32)
        n, self.carry_len = _apx3.decode_hits(
            np.ascontiguousarray(buf, dtype=np.uint8),
            np.ascontiguousarray(payload_pos, dtype=np.int64), payload_len,
            np.ascontiguousarray(readout_id, dtype=np.uint32),
            np.ascontiguousarray(timestamp, dtype=np.uint64),
            self.carry, self.carry_len, self.stitch, scratch.hits, scratch.order,
            scratch.readout_id, scratch.timestamp, status, readout_hits, self.store_hits,
        )
        return Decoded3(n, scratch.hits[:n], scratch.order[:n], scratch.readout_id[:n],
                        scratch.timestamp[:n], status, readout_hits)


class Apx3HitColumns(HitColumns):
    """Raw 5-byte hits → the requested columns of :data:`HITS_SCHEMA` (fresh arrays), by
    the AstroPix 3 kernel's ``hit_fields`` (see :class:`HitColumns`)."""

    label = "AstroPix 3"
    kernel = staticmethod(_apx3.hit_fields)
    word_columns = {**{name: np.uint8 for name in BYTE_FIELDS},
                    "tot_dec": np.uint16, "tot_us": np.float64}
    readout_fields = {"readout_id": "hit_readout_id", "wall_timestamp": "hit_timestamp",
                      "decoding_order": "hit_order"}


def readout_columns(decoded: Decoded3, columns: Sequence[str], *, readout_id: np.ndarray,
                    wall_timestamp: np.ndarray, payload_length: np.ndarray,
                    byte_offset: np.ndarray) -> list[np.ndarray]:
    """The requested columns of :data:`READOUTS_SCHEMA` for one group of readouts.

    ``decoded`` is the kernel's output for these readouts (``store_hits=False`` is
    enough); the framing arrays come from ``_apx.frame_readouts`` (``byte_offset``: file
    offset of each readout's marker, uint64).
    """
    out: list[np.ndarray] = []
    for name in columns:
        if name == "readout_id":
            out.append(np.asarray(readout_id, dtype=np.uint32))
        elif name == "wall_timestamp":
            out.append(np.asarray(wall_timestamp, dtype=np.uint64))
        elif name == "payload_length":
            out.append(np.asarray(payload_length, dtype=np.uint32))
        elif name == "n_hits":
            out.append(decoded.readout_hits)
        elif name == "status":
            out.append(decoded.status)
        elif name == "byte_offset":
            out.append(np.asarray(byte_offset, dtype=np.uint64))
        elif name in STATUS_FLAGS:
            bit = STATUS_FLAGS.index(name)
            out.append((decoded.status & np.uint8(1 << bit)) != 0)
        else:
            raise KeyError(f"no AstroPix 3 readout column {name!r}")
    return out


# -- encoding (the writer's side) ---------------------------------------------------

#: Hit columns the encoder needs (``payload`` defaults to 4, ``chip_timestamp`` to 0;
#: ``tot_dec`` may stand in for ``tot_msb``/``tot_lsb``).
REQUIRED_WRITE_COLUMNS = ("chip_id", "column", "location")


def encode_hits(columns: Mapping[str, Any], first_index: int = 0) -> np.ndarray:
    """Hit fields → (n, 5) raw bytes as the chip sends them (inverse of the decoding).

    ``columns`` maps hit column names to integer arrays: ``chip_id`` (< 32), ``column``
    (0 = row half-hit, 1 = column half-hit), ``location`` (< 64), and either
    ``tot_msb`` (< 16) and ``tot_lsb`` (< 256) or ``tot_dec`` (< 4096); ``payload``
    (must be 4, the default) and ``chip_timestamp`` (< 256, default 0) are optional.
    Other columns are ignored. The unused bits (bit 9 and bits 24-27) are written as 0.
    Raises ``ValueError`` naming the first offending hit (counted from ``first_index``).
    """
    missing = [c for c in REQUIRED_WRITE_COLUMNS if c not in columns]
    if not ("tot_dec" in columns or ("tot_msb" in columns and "tot_lsb" in columns)):
        missing.append("tot_msb/tot_lsb (or tot_dec)")
    if missing:
        raise ValueError(f"AstroPix 3 hits: missing column(s) {missing}")
    n = len(np.asarray(columns["chip_id"]))
    values: dict[str, np.ndarray] = {}
    for name in (*BYTE_FIELDS, "tot_dec"):
        if name not in columns:
            continue
        column = np.asarray(columns[name])
        if column.dtype.kind not in "iub" or column.shape != (n,):
            raise ValueError(f"AstroPix 3 hits: column {name!r} must be a 1-d integer array "
                             f"of {n} values (without missing values)")
        if column.size and column.dtype.kind == "i" and column.min() < 0:
            bad = first_index + int(np.argmin(column))
            raise ValueError(f"AstroPix 3 hits: column {name!r} has a negative value (hit {bad})")
        values[name] = column.astype(np.uint64, copy=False)
    values.setdefault("payload", np.full(n, HIT_PAYLOAD, dtype=np.uint64))
    values.setdefault("chip_timestamp", np.zeros(n, dtype=np.uint64))
    if "tot_msb" not in values or "tot_lsb" not in values:
        tot = values["tot_dec"]
        _check_below(tot, 1 << 12, "tot_dec", first_index)
        values["tot_msb"] = tot >> np.uint64(8)
        values["tot_lsb"] = tot & np.uint64(0xFF)
    wrong_payload = values["payload"] != HIT_PAYLOAD
    if wrong_payload.any():
        bad = int(np.flatnonzero(wrong_payload)[0])
        raise ValueError(f"AstroPix 3 hits: payload must be {HIT_PAYLOAD} (hit "
                         f"{first_index + bad} has {int(values['payload'][bad])}); only "
                         "then is the hit's first byte a start byte")
    mirrored = np.zeros((n, HIT_SIZE), dtype=np.uint8)
    for name, (index, shift, mask) in BYTE_FIELDS.items():
        _check_below(values[name], mask + 1, name, first_index)
        mirrored[:, index] |= (values[name] << np.uint64(shift)).astype(np.uint8)
    return BIT_REVERSE[mirrored]


def _check_below(values: np.ndarray, limit: int, name: str, first_index: int) -> None:
    too_big = values >= limit
    if too_big.any():
        bad = first_index + int(np.argmax(too_big))
        raise ValueError(f"AstroPix 3 hits: {name} must be below {limit} (hit {bad})")
