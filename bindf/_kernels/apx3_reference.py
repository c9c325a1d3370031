"""Slow pure-Python model of the AstroPix 3 hit decoder, for parity tests of ``_apx3.pyx``.

Written from the format description (the "AstroPix 3" page in docs/), one byte at a
time, with no attempt at speed and in the shape of the upstream decoder
(``astropix-analysis``, branch ``binary_v3``): a tentative word ``w``, a ``j`` loop whose
range is fixed before it starts, single bytes read through slices so that a position
past the end reads as "not a start byte". The two places where upstream fails (an
empty or idle-only readout raises ``TypeError``; stray bytes without any start byte
after them make it loop forever) become the "decoder failure" status bit (7) with no
hits and no extra bytes. The compiled kernel must agree with this module hit for hit,
status bit for status bit, and carried byte for carried byte.

Status bits beyond upstream's own events (documented in the kernel too): bit 6
("bytes unvisited") is set when the main loop skips bytes that are neither idle,
padding nor part of a hit to reach a start byte, and when it stops on a word cut short
by the end of the payload that is not kept as extra bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IDLE = 0xBC
PAD = 0xFF
HIT_SIZE = 5

# Status bits, in the same positions as the AstroPix 4 decoder's.
ORPHANS_MATCHED = 1 << 0
ORPHANS_DROPPED = 1 << 1
ORPHANS_UNUSED = 1 << 2
EXTRA_BYTES_KEPT = 1 << 3
EXTRA_BYTES_INVALID = 1 << 4
INCOMPLETE_HIT_DROPPED = 1 << 5
BYTES_UNVISITED = 1 << 6
DECODER_FAILURE = 1 << 7


def is_start_byte(b: int) -> bool:
    """``0x20..0x3F``: top three bits 001 (the bit-mirrored ``chip_id << 3 | 4``)."""
    return b != PAD and b >> 5 == 0b001


def _start_at(data: bytes, i: int) -> bool:
    """Upstream reads ``data[i:i + 1]``: past the end that is empty, i.e. not a start."""
    one = data[i : i + 1]
    return len(one) == 1 and is_start_byte(one[0])


@dataclass
class ReadoutResult:
    hits: list[bytes] = field(default_factory=list)
    status: int = 0
    extra: bytes | None = None


def decode_payload(payload: bytes, extra_prev: bytes | None) -> ReadoutResult:
    """Decode one readout payload given the previous readout's extra bytes (or None)."""
    out = ReadoutResult()
    data = bytes(payload).rstrip(b"\xff")
    n = len(data)
    c = 0
    while c < n and data[c] in (IDLE, PAD):
        c += 1
    if c == n:  # empty or idle-only: upstream raises TypeError
        out.status = DECODER_FAILURE
        return out
    if not is_start_byte(data[c]):
        k = c + 1
        while k < n and not is_start_byte(data[k]):
            k += 1
        if k == n:  # upstream searches forever
            out.status = DECODER_FAILURE
            return out
        orphan = data[c:k].rstrip(bytes([IDLE]))
        if extra_prev is None:
            out.status |= ORPHANS_UNUSED
        elif len(extra_prev) + len(orphan) == HIT_SIZE:
            out.hits.append(extra_prev + orphan)
            out.status |= ORPHANS_MATCHED
        else:
            out.status |= ORPHANS_DROPPED
        c = k
    while c < n:
        while c < n and data[c] in (IDLE, PAD):
            c += 1
        if c == n:
            break
        if c + HIT_SIZE >= n:
            if is_start_byte(data[c]):
                out.extra = data[c:]
                out.status |= EXTRA_BYTES_KEPT
            else:
                out.status |= EXTRA_BYTES_INVALID
            break
        if not is_start_byte(data[c]):
            out.status |= BYTES_UNVISITED
            while c < n and not is_start_byte(data[c]):
                c += 1
            if c == n:
                break
        word = data[c : c + HIT_SIZE]
        for j in range(1, len(word)):
            if _start_at(word, j):
                a = c + HIT_SIZE
                while a < n and data[a] == IDLE:
                    a += 1
                if a < n and not is_start_byte(data[a]):
                    out.status |= INCOMPLETE_HIT_DROPPED
                    c += j
                    word = data[c : c + HIT_SIZE]
        if c + HIT_SIZE > n:
            out.status |= BYTES_UNVISITED
            break
        out.hits.append(word)
        c += HIT_SIZE
        while c < n and data[c] == IDLE:
            c += 1
    return out


def decode_payloads(
    payloads: list[bytes], extra: bytes | None = None, *, stitch: bool = False
) -> tuple[list[ReadoutResult], bytes | None]:
    """Decode consecutive readouts; with ``stitch`` extra bytes carry to the next one.

    Returns the per-readout results and the extra bytes left for a following call
    (always None without ``stitch``).
    """
    results = []
    carried = extra if stitch else None
    for payload in payloads:
        result = decode_payload(payload, carried)
        results.append(result)
        carried = result.extra if stitch else None
    return results, carried


#: Fields of a hit: ``name: (byte, shift, mask)`` of its bytes with their bit order
#: mirrored (the format page, "Fields of a hit").
HIT_FIELD_BYTES = {
    "chip_id": (0, 3, 0x1F), "payload": (0, 0, 0x07), "column": (1, 7, 0x01),
    "location": (1, 0, 0x3F), "chip_timestamp": (2, 0, 0xFF), "tot_msb": (3, 0, 0x0F),
    "tot_lsb": (4, 0, 0xFF),
}


def hit_fields(hit: bytes) -> dict[str, int | float]:
    """The columns of one 5-byte hit, byte by byte (the oracle of ``hit_fields``)."""
    mirrored = [int(f"{byte:08b}"[::-1], 2) for byte in hit]
    fields: dict[str, int | float] = {
        name: (mirrored[byte] >> shift) & mask
        for name, (byte, shift, mask) in HIT_FIELD_BYTES.items()
    }
    tot = int(fields["tot_msb"]) << 8 | int(fields["tot_lsb"])
    fields.update(tot_dec=tot, tot_us=tot / 200.0)
    return fields
