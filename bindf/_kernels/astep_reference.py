"""Slow pure-Python model of the A-STEP frame-stream parser, for parity tests of ``_astep.pyx``.

Written from the format page (``docs/formats/astep.md``), one byte at a time, on a whole
stream, with no attempt at speed or resumability. At position ``i``:

* ``0xFF`` is filler: ``i += 1``;
* otherwise ``L = data[i]``, ``p = data[i + 2] & 7``, ``T = L - 2 - p``. If ``T`` is not a
  width the firmware writes (2, 4, 6, 8; or not the configured width), the byte starts no
  frame: skip it (resynchronisation) and count it. A length byte outside 4..17 can never
  give such a ``T`` (``p`` is 0..7), so it is skipped without looking further, which
  also decides the last one or two bytes of a stream whose header byte is missing;
* if the frame runs past the end of the stream, the stream ends in a truncated frame
  at ``i``; else the frame is emitted and ``i += 1 + L``.

The compiled kernel must agree with :func:`parse_stream` frame for frame, stretch for
stretch and count for count, however the stream is cut into pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FILLER = 0xFF
WIDTHS = (2, 4, 6, 8)


@dataclass(frozen=True)
class Frame:
    offset: int  # of the length byte in the stream
    length: int  # L
    layer: int
    sensor: bytes  # p + 1 bytes, header byte first
    timestamp: bytes  # T bytes, as stored


@dataclass
class Parsed:
    frames: list[Frame] = field(default_factory=list)
    #: (start, length) of every maximal run of skipped bytes
    gaps: list[tuple[int, int]] = field(default_factory=list)
    filler_bytes: int = 0
    resync_bytes: int = 0
    #: where the stream ends inside a frame (None: it ends between frames)
    truncated_at: int | None = None


def parse_stream(data: bytes, ts_bytes: int | None = None) -> Parsed:
    """Parse a whole stream. ``ts_bytes``: the only width accepted (None: any of 2/4/6/8)."""
    out = Parsed()
    widths = WIDTHS if ts_bytes is None else (ts_bytes,)
    gap_at: int | None = None
    i = 0
    n = len(data)
    while i < n:
        if data[i] == FILLER:
            _close_gap(out, gap_at, i)
            gap_at = None
            out.filler_bytes += 1
            i += 1
            continue
        length = data[i]
        if 4 <= length <= 17:
            if i + 2 >= n:
                out.truncated_at = i
                break
            p = data[i + 2] & 7
            width = length - 2 - p
            if width in widths:
                if i + 1 + length > n:
                    out.truncated_at = i
                    break
                _close_gap(out, gap_at, i)
                gap_at = None
                out.frames.append(Frame(i, length, data[i + 1], data[i + 2 : i + 3 + p],
                                        data[i + 3 + p : i + 1 + length]))
                i += 1 + length
                continue
        if gap_at is None:
            gap_at = i
        out.resync_bytes += 1
        i += 1
    stop = i if out.truncated_at is None else out.truncated_at
    _close_gap(out, gap_at, stop)
    return out


def _close_gap(out: Parsed, gap_at: int | None, here: int) -> None:
    if gap_at is not None:
        out.gaps.append((gap_at, here - gap_at))


#: The columns of :func:`v3_fields`, in the order the kernel documents them.
V3_COLUMNS = ("chip_id", "payload", "ts_bytes", "column", "location", "chip_timestamp",
              "tot_msb", "tot_lsb", "tot_total", "tot_us", "kind_code", "valid")


def v3_fields(frames: list[Frame], tick_ns: float) -> dict[str, list[int | float | bool]]:
    """The AstroPix 3 columns of ``frames``, one frame at a time (model of
    ``_astep.v3_fields``): sensor byte 0 is the header ``h`` (chip id ``h >> 3``, payload
    ``h & 7``); byte 1 holds the column flag (bit 7) and the location (bits 5..0); byte 2
    the chip timestamp; bytes 3 (low nibble) and 4 the ToT. A wrong-length frame's missing
    bytes read as zero; its fields are computed all the same."""
    out: dict[str, list[int | float | bool]] = {name: [] for name in V3_COLUMNS}
    for frame in frames:
        b = frame.sensor + bytes(5)
        payload = b[0] & 7
        tot_total = (b[3] & 0x0F) << 8 | b[4]
        values = {
            "chip_id": b[0] >> 3, "payload": payload,
            "ts_bytes": (frame.length - 2 - payload) % 256,
            "column": b[1] >> 7, "location": b[1] & 0x3F, "chip_timestamp": b[2],
            "tot_msb": b[3] & 0x0F, "tot_lsb": b[4], "tot_total": tot_total,
            "tot_us": tot_total * tick_ns / 1000, "kind_code": 0 if payload == 4 else 2,
            "valid": payload == 4,
        }
        for name, value in values.items():
            out[name].append(value)
    return out


def sensor_views(words: list[int]) -> bytes:
    """Model of ``_astep.sensor_views``: per sensor word (the walk's ``sensor`` output),
    a 16-byte Arrow binary-view entry: the count ``p + 1`` as a little-endian int32
    (``p`` = the top byte's low 3 bits), the word's 8 bytes most significant first (the
    walk leaves zeros past the ``p + 1`` sensor bytes; other words are copied as they
    are), then 4 zero bytes."""
    out = bytearray()
    for word in words:
        out += ((word >> 56 & 7) + 1).to_bytes(4, "little") + word.to_bytes(8, "big") + bytes(4)
    return bytes(out)
