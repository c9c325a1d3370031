"""AstroPix 4 hits: bit layout, and the wrappers of the hit kernels.

Layout: ``docs/formats/apx.md``. The reader (:mod:`bindf.formats.apx`) frames readouts and
hands their payloads to :class:`HitDecoder` (the kernel's ``decode_hits``: the sequential
part), then the raw 8-byte hits to :class:`HitColumns` (the kernel's ``hit_fields``: one
pass per chunk, split over threads). :func:`encode_hits` is the inverse of the field
layout, for the writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._kernels import _apx
from .._lanes import Lanes
from .._threads import run_all, shared_executor

HIT_SIZE = 8
PAD_BYTE = 0xFF

#: Bit fields of one hit after per-byte bit reversal, MSB first: (name, [start, end), dtype).
HIT_FIELDS: tuple[tuple[str, int, int, type], ...] = (
    ("chip_id", 0, 5, np.uint8),
    ("payload", 5, 8, np.uint8),
    ("row", 8, 13, np.uint8),
    ("column", 13, 18, np.uint8),
    ("ts_neg1", 18, 19, np.uint8),
    ("ts_coarse1", 19, 33, np.uint16),
    ("ts_fine1", 33, 36, np.uint8),
    ("ts_tdc1", 36, 41, np.uint8),
    ("ts_neg2", 41, 42, np.uint8),
    ("ts_coarse2", 42, 56, np.uint16),
    ("ts_fine2", 56, 59, np.uint8),
    ("ts_tdc2", 59, 64, np.uint8),
)
#: Period of the coarse clock (2**17 cycles: ``BINDF_CLOCK_ROLLOVER_BIT`` of
#: _apx_fields.h, where the kernel adds it to a rolled-over ``ts_dec2``); the encoder's.
CLOCK_ROLLOVER = 1 << 17

#: Per-readout decoding status bits (docs/formats/apx.md), bit i ↔ STATUS_FLAGS[i].
STATUS_FLAGS: tuple[str, ...] = (
    "orphans_matched",
    "orphans_dropped",
    "orphans_unused",
    "extra_bytes_kept",
    "extra_bytes_invalid",
    "incomplete_hit_dropped",
    "bytes_unvisited",
    "decoder_failure",
)

#: Reverse the bit order inside a byte (bit 7 ↔ bit 0).
BIT_REVERSE = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], dtype=np.uint8)


@dataclass
class Decoded:
    """Output of one :meth:`HitDecoder.decode` call (hit arrays valid until the next call)."""

    n_hits: int
    hits: np.ndarray  # (n_hits, 8) uint8 raw bytes (HitColumns bit-reverses them in place)
    hit_order: np.ndarray  # uint8 decoding order
    hit_readout_id: np.ndarray  # uint32
    hit_timestamp: np.ndarray  # uint64
    status: np.ndarray  # uint8 per readout (fresh array)
    readout_hits: np.ndarray  # uint32 hits per readout (fresh array)
    #: Per-hit fields (``hit_order``, ...) written straight into a column's memory (see
    #: :meth:`HitDecoder.write_into`): such an array becomes the column as it is.
    owned: frozenset[str] = frozenset()


class HitDecoder:
    """Stateful wrapper of the hit kernel: owns the carried bytes and reusable buffers.

    With ``slots > 1`` successive calls write into different scratch sets, so the result
    of one call stays valid while the next ``slots - 1`` calls run.
    """

    def __init__(self, store_hits: bool = True, slots: int = 1, threads: int = 1) -> None:
        self.store_hits = store_hits
        #: Calls with at least 2 × PARALLEL_MIN_READOUTS readouts are split into ranges
        #: decoded by up to this many threads (:func:`decode_in_parallel`; same output).
        self.threads = threads
        self.carry = np.zeros(HIT_SIZE, dtype=np.uint8)
        self.carry_len = -1
        self._slots = [_HitScratch(0) for _ in range(slots)]
        self._next = 0
        self._lanes: Lanes | None = None
        #: Decoded field → column whose lane it is written into (see write_into).
        self._direct: dict[str, str] = {}

    def write_into(self, lanes: Lanes, columns: Sequence[str]) -> None:
        """Write the per-hit readout fields of the requested ``columns`` (readout id,
        timestamp, decoding order) straight into their lanes, for a read whose chunks
        are turned into columns in this thread right after each decoding, by a
        :class:`HitColumns` on the same ``lanes``. It then takes those arrays as they
        are instead of copying them out of the scratch (13 bytes per hit).

        Only with lanes that are enabled (plain arrays reserved at the bound of hits
        would keep unused room alive) and a decoder that stores hits; calls split over
        threads (:func:`decode_in_parallel`) still return fresh arrays of their own."""
        if not (lanes.enabled and self.store_hits):
            return
        self._lanes = lanes
        self._direct = {field: column for column, field in _READOUT_FIELD.items()
                        if column in columns}

    def reset(self) -> None:
        """Forget the carried extra bytes (after a gap in the byte stream)."""
        self.carry_len = -1

    @property
    def carried(self) -> bytes | None:
        return None if self.carry_len < 0 else bytes(self.carry[: self.carry_len])

    def decode(self, buf: np.ndarray, payload_pos: np.ndarray, payload_len: np.ndarray,
               readout_id: np.ndarray, timestamp: np.ndarray,
               payload_bytes: int | None = None) -> Decoded:
        """Decode the payloads ``buf[payload_pos[i]:payload_pos[i] + payload_len[i]]``.
        ``payload_bytes``: their total length, where the caller knows it without
        summing (see :func:`most_hits`)."""
        n_readouts = len(payload_pos)
        parts = min(self.threads, n_readouts // PARALLEL_MIN_READOUTS)
        if parts > 1:
            decoded, _, self.carry_len = decode_in_parallel(
                shared_executor("bindf-hits", self.threads), parts, buf, payload_pos,
                payload_len, readout_id, timestamp, self.carry, self.carry_len,
                self.store_hits)
            return decoded
        scratch = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if self.store_hits:
            bound = most_hits(payload_len, payload_bytes)
            if bound > len(scratch.hits):
                scratch.__init__(max(bound, 2 * len(scratch.hits)))
        status = np.empty(n_readouts, dtype=np.uint8)
        readout_hits = np.empty(n_readouts, dtype=np.uint32)
        fields = {"hit_order": scratch.order, "hit_readout_id": scratch.readout_id,
                  "hit_timestamp": scratch.timestamp}
        lanes, direct = self._lanes, self._direct
        if lanes is not None:
            for field, column in direct.items():
                fields[field] = lanes.reserve(column, bound, fields[field].dtype)
        n, self.carry_len = _apx.decode_hits(
            buf, np.ascontiguousarray(payload_pos, dtype=np.int64),
            np.ascontiguousarray(payload_len, dtype=np.uint32),
            np.ascontiguousarray(readout_id, dtype=np.uint32),
            np.ascontiguousarray(timestamp, dtype=np.uint64),
            self.carry, self.carry_len, scratch.hits, fields["hit_order"],
            fields["hit_readout_id"], fields["hit_timestamp"], status, readout_hits,
            self.store_hits,
        )
        for field in fields:
            fields[field] = (lanes.keep(direct[field], fields[field], n)
                             if lanes is not None and field in direct else fields[field][:n])
        return Decoded(n, scratch.hits[:n], fields["hit_order"], fields["hit_readout_id"],
                       fields["hit_timestamp"], status, readout_hits,
                       frozenset(direct) if lanes is not None else frozenset())


def most_hits(payload_len: np.ndarray, payload_bytes: int | None = None) -> int:
    """The most hits that readouts of these payload lengths can hold: a readout of L
    bytes holds at most L // 8 hits plus one re-assembled hit, and the sum of the L // 8
    is at most the sum of the L over 8.

    ``payload_bytes``: that sum, if the caller has it. Framing does (its readouts lie
    back to back: the bytes it framed less their headers), and summing 19,000 uint32
    lengths as int64 took ~60 µs per 1 MiB chunk on a Zen 1, 4 ms of a 70 MB read."""
    if payload_bytes is None:
        payload_bytes = int(payload_len.sum(dtype=np.int64))
    return (payload_bytes >> 3) + len(payload_len)


class _HitScratch:
    """Per-hit output arrays of the kernel, reused from call to call."""

    def __init__(self, size: int) -> None:
        self.hits = np.empty((size, HIT_SIZE), dtype=np.uint8)
        self.order = np.empty(size, dtype=np.uint8)
        self.readout_id = np.empty(size, dtype=np.uint32)
        self.timestamp = np.empty(size, dtype=np.uint64)


#: Columns :func:`bindf._kernels._apx.hit_fields` computes from a hit's bits, with dtypes.
WORD_COLUMNS: dict[str, type] = {
    **{name: dtype for name, _, _, dtype in HIT_FIELDS},
    "ts_dec1": np.uint32, "ts_dec2": np.uint32, "tot_us": np.float64,
}
#: Columns copied from the kernel's per-hit readout fields.
_READOUT_FIELD = {"readout_id": "hit_readout_id", "timestamp": "hit_timestamp",
                  "decoding_order": "hit_order"}
#: Below this many hits a chunk's fields are computed in the caller's thread.
PARALLEL_MIN_HITS = 1 << 16


class HitColumns:
    """A decoded chunk → its projected hit columns, as new arrays (they become the frame).

    The bit fields, Gray-decoded timestamps and ToT come from one pass of the kernel's
    ``hit_fields`` over the raw hits, which writes each requested column once. With
    ``threads`` > 1 a large chunk is cut into hit ranges filled by a thread pool (the
    kernel releases the GIL), each range writing straight into its slice of the final
    columns (the process's shared pool, :func:`bindf._threads.shared_executor`). A
    subclass for another chip generation sets the class attributes.
    """

    #: The chip generation, for error messages.
    label = "AstroPix 4"
    #: The kernel that cuts the columns of :attr:`word_columns` out of raw hits.
    kernel = staticmethod(_apx.hit_fields)
    #: Columns computed from a hit's bits, with their dtypes.
    word_columns: Mapping[str, type] = WORD_COLUMNS
    #: Columns copied from the kernel's per-hit readout fields: column → Decoded field.
    readout_fields: Mapping[str, str] = _READOUT_FIELD

    def __init__(self, threads: int = 1, lanes: Lanes | None = None) -> None:
        self.threads = threads
        #: Where the columns' memory comes from (:mod:`bindf._lanes`; default: an array
        #: per column and chunk).
        self.lanes = lanes if lanes is not None else Lanes(enabled=False)
        # The columns of the last call, those of them cut out of the hits' bits, and
        # n -> their new arrays (set again when a call asks for other columns).
        self._columns: tuple[str, ...] = ()
        self._word_names: list[str] = []
        self._new_words: Callable[[int], list[np.ndarray]] = self.lanes.columns({})

    def __call__(self, decoded: Any, columns: Sequence[str]) -> list[np.ndarray]:
        n = decoded.n_hits
        wanted = tuple(columns)
        if wanted != self._columns:  # (a reader asks for the same columns every chunk)
            self._set_columns(wanted)
        words = dict(zip(self._word_names, self._new_words(n)))
        if words:
            self._fill(decoded.hits, words)
        out = []
        for name in wanted:
            if name in words:
                out.append(words[name])
            elif name in self.readout_fields:
                field = self.readout_fields[name]
                values = getattr(decoded, field)
                if field in decoded.owned:  # written straight into this column's lane
                    out.append(values)
                    continue
                copy = self.lanes.empty(name, n, values.dtype)
                copy[:] = values
                out.append(copy)
            else:  # the readers validate names first; this guards direct use
                raise KeyError(f"no {self.label} hit column {name!r}")
        return out

    def _set_columns(self, columns: tuple[str, ...]) -> None:
        self._columns = columns
        self._word_names = [name for name in columns if name in self.word_columns]
        self._new_words = self.lanes.columns(
            {name: self.word_columns[name] for name in self._word_names})

    def _fill(self, hits: np.ndarray, words: dict[str, np.ndarray]) -> None:
        n = len(hits)
        parts = min(self.threads, n // PARALLEL_MIN_HITS)
        if parts <= 1:
            self.kernel(hits, **words)
            return
        bounds = [n * k // parts for k in range(parts + 1)]
        ranges = [(a, b) for a, b in zip(bounds, bounds[1:])]
        run_all(shared_executor("bindf-fields", self.threads),
                lambda r: self.kernel(hits[r[0]:r[1]], **{k: v[r[0]:r[1]] for k, v in words.items()}),
                ranges)


def encode_hits(columns: Mapping[str, np.ndarray], first_index: int = 0) -> np.ndarray:
    """Hit fields → (n, 8) raw bytes as the chip sends them (inverse of the field extraction).

    ``columns`` holds integer arrays named as the hit columns (``payload`` defaults to 7;
    ``ts_decN`` may stand in for ``ts_coarseN``/``ts_fineN``). Raises ``ValueError``
    naming the first offending hit (counted from ``first_index``) for values out of range
    or hits whose first byte would not be a start byte.
    """
    n = len(columns["readout_id"])
    values: dict[str, np.ndarray] = {}
    for name, column in columns.items():
        column = np.asarray(column)
        if column.dtype.kind == "i" and column.size and column.min() < 0:
            bad = first_index + int(np.argmin(column))
            raise ValueError(f"write_apx: column {name!r} has negative values (hit {bad})")
        values[name] = column.astype(np.uint64, copy=False)
    values.setdefault("payload", np.full(n, 7, dtype=np.uint64))
    for k, limit in (("1", CLOCK_ROLLOVER), ("2", 2 * CLOCK_ROLLOVER)):
        if f"ts_coarse{k}" in values and f"ts_fine{k}" in values:
            continue
        dec = values[f"ts_dec{k}"]
        if dec.size and dec.max() >= limit:
            raise ValueError(f"write_apx: ts_dec{k} values must be below {limit}")
        dec = dec % np.uint64(CLOCK_ROLLOVER)  # a rolled-over ts_dec2 is stored modulo 2**17
        gray = dec ^ (dec >> np.uint64(1))
        values[f"ts_coarse{k}"] = gray >> np.uint64(3)
        values[f"ts_fine{k}"] = gray & np.uint64(7)
    word = np.zeros(n, dtype=np.uint64)
    for name, start, end, _ in HIT_FIELDS:
        field = values[name]
        if field.size and field.max() >= (1 << (end - start)):
            bad = first_index + int(np.argmax(field >= (1 << (end - start))))
            raise ValueError(f"write_apx: {name} must be below {1 << (end - start)} (hit {bad})")
        word |= field << np.uint64(64 - end)
    raw = BIT_REVERSE[word.astype(">u8").view(np.uint8).reshape(n, HIT_SIZE)]
    first = raw[:, 0]
    bad_start = (first == PAD_BYTE) | ((first >> 5) != 0b111)
    if bad_start.any():
        i = int(np.flatnonzero(bad_start)[0])
        raise ValueError(
            f"write_apx: hit {first_index + i} (chip_id {int(values['chip_id'][i])}, payload "
            f"{int(values['payload'][i])}) would not start with a valid start byte "
            f"(0x{int(first[i]):02x}); AstroPix 4 hits need payload 7 and chip_id < 31"
        )
    return raw


#: A readout range decoded in parallel holds at least this many readouts: below it the
#: thread hand-over costs more than the decoding.
PARALLEL_MIN_READOUTS = 4096


@dataclass
class _RangeResult:
    """One readout range's decoded hits (fresh arrays) and the carry after it."""

    decoded: Decoded
    carry: np.ndarray  # 8 bytes
    carry_len: int  # -1: nothing carried


def _decode_range(buf: np.ndarray, pos: np.ndarray, length: np.ndarray, readout_id: np.ndarray,
                  timestamp: np.ndarray, carry: np.ndarray, carry_len: int,
                  store: bool) -> _RangeResult:
    """Decode readouts with the kernel from the given carry, into fresh arrays."""
    n_readouts = len(pos)
    bound = most_hits(length) if store else 0
    scratch = _HitScratch(bound)
    status = np.empty(n_readouts, dtype=np.uint8)
    readout_hits = np.empty(n_readouts, dtype=np.uint32)
    carry = carry.copy()
    n, carry_len = _apx.decode_hits(buf, pos, length, readout_id, timestamp, carry, carry_len,
                                    scratch.hits, scratch.order, scratch.readout_id,
                                    scratch.timestamp, status, readout_hits, store)
    decoded = Decoded(n, scratch.hits[:n], scratch.order[:n], scratch.readout_id[:n],
                      scratch.timestamp[:n], status, readout_hits)
    return _RangeResult(decoded, carry, carry_len)


def _same_state(a: tuple[np.ndarray, int], b: tuple[np.ndarray, int]) -> bool:
    (carry_a, len_a), (carry_b, len_b) = a, b
    return len_a == len_b and (len_a <= 0 or bytes(carry_a[:len_a]) == bytes(carry_b[:len_b]))


def _concat(parts: list[Decoded]) -> Decoded:
    if len(parts) == 1:
        return parts[0]
    return Decoded(sum(p.n_hits for p in parts),
                   np.concatenate([p.hits for p in parts]),
                   np.concatenate([p.hit_order for p in parts]),
                   np.concatenate([p.hit_readout_id for p in parts]),
                   np.concatenate([p.hit_timestamp for p in parts]),
                   np.concatenate([p.status for p in parts]),
                   np.concatenate([p.readout_hits for p in parts]))


def _tail(decoded: Decoded, first_readout: int) -> Decoded:
    """The hits and readout results of ``decoded`` from readout ``first_readout`` on."""
    skip = int(np.sum(decoded.readout_hits[:first_readout], dtype=np.int64))
    return Decoded(decoded.n_hits - skip,
                   decoded.hits[skip:], decoded.hit_order[skip:],
                   decoded.hit_readout_id[skip:], decoded.hit_timestamp[skip:],
                   decoded.status[first_readout:], decoded.readout_hits[first_readout:])


def decode_in_parallel(pool: Any, parts: int, buf: np.ndarray, payload_pos: np.ndarray,
                       payload_len: np.ndarray, readout_id: np.ndarray, timestamp: np.ndarray,
                       carry: np.ndarray, carry_len: int, store: bool
                       ) -> tuple[Decoded, np.ndarray, int]:
    """The hit kernel over readouts split into ``parts`` ranges decoded on ``pool``;
    exactly what one sequential call gives (hits, status bits, the carry after).

    The ranges after the first start from an *empty* carry, a guess. Then, range by range
    in order, the true carry (the state after the left neighbour) is handed over: if it
    is the guessed one, the range stands. Otherwise its first readouts are decoded again,
    one at a time, both from the true state and from the guessed one, until the two
    states agree after some readout: from there on the guessed decoding is right (the
    kernel's output for a readout depends only on its bytes and the incoming carry),
    and the readouts before are replaced by their true decoding.

    Returns the decoded hits (fresh arrays), the carry after the last readout and its
    length (-1: none).
    """
    n = len(payload_pos)
    pos = np.ascontiguousarray(payload_pos, dtype=np.int64)
    length = np.ascontiguousarray(payload_len, dtype=np.uint32)
    rid = np.ascontiguousarray(readout_id, dtype=np.uint32)
    ts = np.ascontiguousarray(timestamp, dtype=np.uint64)
    bounds = [n * k // parts for k in range(parts + 1)]
    empty = np.zeros(HIT_SIZE, dtype=np.uint8)

    def run(k: int) -> _RangeResult:
        a, b = bounds[k], bounds[k + 1]
        start_carry, start_len = (carry, carry_len) if k == 0 else (empty, -1)
        return _decode_range(buf, pos[a:b], length[a:b], rid[a:b], ts[a:b],
                             start_carry, start_len, store)

    results = run_all(pool, run, range(parts))
    pieces = [results[0].decoded]
    state = (results[0].carry, results[0].carry_len)
    for k in range(1, parts):
        guessed = results[k]
        if _same_state(state, (empty, -1)):
            pieces.append(guessed.decoded)
            state = (guessed.carry, guessed.carry_len)
            continue
        a, b = bounds[k], bounds[k + 1]
        guess_state: tuple[np.ndarray, int] = (empty, -1)
        redone = []
        agreed_at = None
        for j in range(a, b):
            true = _decode_range(buf, pos[j:j + 1], length[j:j + 1], rid[j:j + 1],
                                 ts[j:j + 1], state[0], state[1], store)
            redone.append(true.decoded)
            state = (true.carry, true.carry_len)
            again = _decode_range(buf, pos[j:j + 1], length[j:j + 1], rid[j:j + 1],
                                  ts[j:j + 1], guess_state[0], guess_state[1], store)
            guess_state = (again.carry, again.carry_len)
            if _same_state(state, guess_state):
                agreed_at = j
                break
        pieces.extend(redone)
        if agreed_at is not None:
            pieces.append(_tail(guessed.decoded, agreed_at + 1 - a))
            state = (guessed.carry, guessed.carry_len)
    out_carry = carry
    out_carry[:] = state[0]
    return _concat(pieces), out_carry, state[1]
