"""Slow pure-Python model of the AstroPix 4 decoder, for parity tests of ``_apx.pyx``.

Written straight from ``docs/formats/apx.md`` (file layout, hits inside a payload), one byte at a time, with no
attempt at speed. It mirrors the upstream decoder's behaviour, including the places
where upstream *crashes*: every such place raises the private :class:`_Failure` here,
which :func:`decode_payload` turns into the "decoder failure" status bit (7), keeping
the hits found before the failure and dropping the carried extra bytes. The compiled
kernel must agree with this module hit for hit, status bit for status bit, and carried
byte for carried byte.

Upstream reads single bytes as ``data[i:i + 1]``: past the end that is an empty slice,
and the start-byte test on an empty slice raises. :func:`_is_start_at` models that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

IDLE = 0xBC
PAD = 0xFF
HIT_SIZE = 8
MARKER = b"\xfe\xdc\xba"
READOUT_HEADER = struct.Struct("<3sIQI")  # marker, readout_id, timestamp, payload length

# Status bits, docs/formats/apx.md.
ORPHANS_MATCHED = 1 << 0
ORPHANS_DROPPED = 1 << 1
ORPHANS_UNUSED = 1 << 2
EXTRA_BYTES_KEPT = 1 << 3
EXTRA_BYTES_INVALID = 1 << 4
INCOMPLETE_HIT_DROPPED = 1 << 5
BYTES_UNVISITED = 1 << 6
DECODER_FAILURE = 1 << 7


class _Failure(Exception):
    """A place where the upstream decoder would raise."""


def is_start_byte(b: int) -> bool:
    return b != PAD and b >> 5 == 0b111


def _is_start_at(data: bytes, i: int) -> bool:
    if i >= len(data):  # upstream: ord(b"") -> TypeError
        raise _Failure(f"start-byte test past the end (position {i})")
    return is_start_byte(data[i])


@dataclass
class ReadoutResult:
    hits: list[bytes] = field(default_factory=list)
    status: int = 0
    extra: bytes | None = None


def decode_payload(payload: bytes, extra_prev: bytes | None) -> ReadoutResult:
    """Decode one readout payload given the previous readout's extra bytes (or None)."""
    result = ReadoutResult()
    try:
        _decode(bytes(payload).rstrip(b"\xff"), extra_prev, result)
    except _Failure:
        result.status |= DECODER_FAILURE
        result.extra = None
    return result


def _decode(data: bytes, extra_prev: bytes | None, out: ReadoutResult) -> None:
    n = len(data)
    c = 0
    # 1. leading idle and padding
    while c < n and data[c] in (IDLE, PAD):
        c += 1
    # 2. orphans: the tail of a hit cut at the end of the previous readout
    if not _is_start_at(data, c):
        k = 1
        while not _is_start_at(data, c + k):
            k += 1
        orphans = data[c : c + k]
        while orphans and orphans[-1] == IDLE:
            orphans = orphans[:-1]
        if extra_prev is None:
            out.status |= ORPHANS_UNUSED
        elif len(extra_prev) + len(orphans) == HIT_SIZE:
            _emit(out, extra_prev + orphans)
            out.status |= ORPHANS_MATCHED
        else:
            out.status |= ORPHANS_DROPPED
        c += k
    # 3. main loop
    while c < n:
        while c < n and data[c] in (IDLE, PAD):
            c += 1
        if c == n:
            return
        if c + HIT_SIZE >= n:  # the upstream ">=" quirk: a final complete hit lands here too
            if is_start_byte(data[c]):
                out.extra = data[c:]
                out.status |= EXTRA_BYTES_KEPT
            else:
                out.status |= EXTRA_BYTES_INVALID
            return
        if not is_start_byte(data[c]):
            out.status |= BYTES_UNVISITED
            while not _is_start_at(data, c):
                c += 1
        hit = data[c : c + HIT_SIZE]
        for k in range(1, len(hit)):  # range fixed by the first tentative hit, as upstream
            if _is_start_at(hit, k):
                f = c + HIT_SIZE
                while f < n and data[f] == IDLE:
                    f += 1
                if f < n and not is_start_byte(data[f]):
                    out.status |= INCOMPLETE_HIT_DROPPED
                    c += k
                    hit = data[c : c + HIT_SIZE]
        _emit(out, hit)
        c += HIT_SIZE
        while c < n and data[c] == IDLE:
            c += 1


def _emit(out: ReadoutResult, hit: bytes) -> None:
    if len(hit) != HIT_SIZE:  # upstream cannot unpack a short hit
        raise _Failure(f"hit of {len(hit)} bytes")
    out.hits.append(bytes(hit))


def decode_payloads(
    payloads: list[bytes], extra: bytes | None = None
) -> tuple[list[ReadoutResult], bytes | None]:
    """Decode consecutive readouts, carrying extra bytes from one to the next."""
    results = []
    for payload in payloads:
        r = decode_payload(payload, extra)
        results.append(r)
        extra = r.extra
    return results, extra


#: Bit fields of a hit, ``name: (start, end)`` counted from the most significant bit of
#: the 64-bit word made of the hit's bytes, each with its bit order reversed.
HIT_FIELD_BITS = {
    "chip_id": (0, 5), "payload": (5, 8), "row": (8, 13), "column": (13, 18),
    "ts_neg1": (18, 19), "ts_coarse1": (19, 33), "ts_fine1": (33, 36), "ts_tdc1": (36, 41),
    "ts_neg2": (41, 42), "ts_coarse2": (42, 56), "ts_fine2": (56, 59), "ts_tdc2": (59, 64),
}


def _gray_to_binary(g: int) -> int:
    b = 0
    while g:
        b ^= g
        g >>= 1
    return b


def hit_fields(hit: bytes) -> dict[str, int | float]:
    """The columns of one 8-byte hit, one bit at a time (the oracle of ``hit_fields``)."""
    word = 0
    for byte in hit:
        word = (word << 8) | int(f"{byte:08b}"[::-1], 2)
    fields: dict[str, int | float] = {
        name: (word >> (64 - end)) & ((1 << (end - start)) - 1)
        for name, (start, end) in HIT_FIELD_BITS.items()
    }
    ts1 = _gray_to_binary(int(fields["ts_coarse1"]) << 3 | int(fields["ts_fine1"]))
    ts2 = _gray_to_binary(int(fields["ts_coarse2"]) << 3 | int(fields["ts_fine2"]))
    if ts2 < ts1:  # the 2**17-cycle clock rolled over between the two edges
        ts2 += 1 << 17
    fields.update(ts_dec1=ts1, ts_dec2=ts2, tot_us=(ts2 - ts1) / 20.0)
    return fields


@dataclass
class RawReadout:
    offset: int
    readout_id: int
    timestamp: int
    payload: bytes


def split_readouts(data: bytes, start: int) -> tuple[list[RawReadout], int, str]:
    """Frame readouts from ``data[start:]``.

    Returns the readouts, the offset where framing stopped, and why: ``"end"`` (clean
    end of data), ``"truncated"`` (data ends inside a readout) or ``"bad_marker"``.
    """
    out = []
    pos = start
    while pos < len(data):
        avail = data[pos : pos + 3]
        if avail != MARKER[: len(avail)]:
            return out, pos, "bad_marker"
        if len(data) - pos < READOUT_HEADER.size:
            return out, pos, "truncated"
        _, rid, ts, length = READOUT_HEADER.unpack_from(data, pos)
        body = pos + READOUT_HEADER.size
        if body + length > len(data):
            return out, pos, "truncated"
        out.append(RawReadout(pos, rid, ts, data[body : body + length]))
        pos = body + length
    return out, pos, "end"
