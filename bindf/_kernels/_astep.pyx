# cython: language_level=3
"""A-STEP layer-frame stream parser (the format page ``docs/formats/astep.md``).

An A-STEP ``.bin`` file is the concatenation of the host's reads of the firmware's
readout FIFO: frames ``L | layer | sensor header h | p more sensor bytes | T timestamp
bytes`` (``L`` counts the bytes after itself, ``p = h & 7``, ``T = L - 2 - p`` in
{2, 4, 6, 8}), with ``0xFF`` filler wherever the FIFO was empty. The position of each
frame depends on the length byte of the one before it: that walk is the only sequential
work, and it lives here. Field decoding is vectorised numpy in ``bindf.formats.astep``.

:func:`parse_frames` takes bytes and writes into arrays the caller allocated; it does no
I/O. Every read and write is bounds-checked by hand (the module is compiled without
Cython's bounds checks), so any input bytes and any argument values are safe. Frames
straddle the host's reads, so the walk is resumable: the position goes in and comes
back out, and the little state that spans calls (an open stretch of unparsable bytes,
running counts) lives in a caller-owned ``state`` array. Parsing a stream in any pieces
gives the same frames as parsing it whole. The pure-Python model in
``astep_reference.py`` is the parity oracle.
"""

from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

# parse_frames stop codes
cdef enum:
    C_PARSE_END = 0          # consumed everything up to ``end``
    C_PARSE_FULL = 1         # an output array is full; call again from the returned position
    C_PARSE_INCOMPLETE = 2   # ``end`` falls inside the frame starting at the returned position

PARSE_END = C_PARSE_END
PARSE_FULL = C_PARSE_FULL
PARSE_INCOMPLETE = C_PARSE_INCOMPLETE

# indices into the state array
cdef enum:
    C_GAP_OPEN_AT = 0        # stream offset where the current unparsable stretch began, or -1
    C_FILLER_BYTES = 1
    C_RESYNC_BYTES = 2
    C_RESYNCS = 3            # unparsable stretches begun so far
    C_STATE_SIZE = 4

STATE_GAP_OPEN_AT = C_GAP_OPEN_AT
STATE_FILLER_BYTES = C_FILLER_BYTES
STATE_RESYNC_BYTES = C_RESYNC_BYTES
STATE_RESYNCS = C_RESYNCS
STATE_SIZE = C_STATE_SIZE

cdef enum:
    FILLER = 0xFF
    # L = 1 (layer) + (p + 1) sensor bytes + T, with p in 0..7 and T in {2,4,6,8}: a length
    # byte outside 4..17 can never start a frame, whatever follows it.
    MIN_LENGTH = 4
    MAX_LENGTH = 17
    VIEW_SIZE = 16


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define BINDF_BSWAP64(x) __builtin_bswap64(x)
    #elif defined(_MSC_VER)
    #include <stdlib.h>
    #define BINDF_BSWAP64(x) _byteswap_uint64(x)
    #else
    static unsigned long long BINDF_BSWAP64(unsigned long long x) {
        unsigned long long r = 0; int i;
        for (i = 0; i < 8; i++) { r = (r << 8) | (x & 0xFF); x >>= 8; }
        return r;
    }
    #endif
    """
    uint64_t BINDF_BSWAP64(uint64_t x) nogil


cdef uint64_t _probe = 1
#: Whether an 8-byte load reads the lowest address as the least significant byte: the
#: fast path below needs it (big-endian hosts take the byte-by-byte path).
cdef bint LITTLE_ENDIAN_HOST = (<uint8_t*>&_probe)[0] == 1


cdef inline bint valid_width(int t, int wanted) noexcept nogil:
    if wanted != 0:
        return t == wanted
    return t == 2 or t == 4 or t == 6 or t == 8


def new_state():
    """A fresh ``state`` array for :func:`parse_frames` (no open stretch, zero counts)."""
    import numpy as np

    state = np.zeros(C_STATE_SIZE, dtype=np.int64)
    state[C_GAP_OPEN_AT] = -1
    return state


def parse_frames(
    const uint8_t[::1] buf,
    Py_ssize_t pos,
    Py_ssize_t end,
    int64_t base_offset,
    int ts_bytes,
    int64_t[::1] state,
    int64_t[::1] frame_offset,
    uint8_t[::1] length,
    uint8_t[::1] layer,
    uint64_t[::1] sensor,
    uint64_t[::1] timestamp,
    uint8_t[::1] sensor_views,
    int64_t[::1] gap_start,
    int64_t[::1] gap_length,
):
    """Walk the frame stream in ``buf[pos:end]``; ``buf[0]`` is at stream offset ``base_offset``.

    For each complete frame: ``frame_offset`` (stream offset of its length byte),
    ``length`` (the length byte ``L``), ``layer``, ``sensor`` (its ``p + 1`` sensor bytes
    as a big-endian number left-aligned in 64 bits: the header byte is bits 63..56) and
    ``timestamp`` (its ``T`` timestamp bytes read little-endian; ``T = L - 2 - p``).
    The sensor bytes are also written as Arrow binary-view entries, 16 bytes per frame in
    ``sensor_views``: a little-endian int32 count (``p + 1``), then the bytes inline,
    zero-padded to 12 (a view of at most 12 bytes needs no data buffer), so that the
    array is an Arrow ``binary_view`` column as it stands.

    ``0xFF`` bytes between frames are filler. A byte that starts no valid frame (a length
    outside 4..17, or a timestamp width not in {2, 4, 6, 8}, or not ``ts_bytes`` when that
    is non-zero) is skipped one at a time; each maximal run of such bytes is one
    *resynchronisation stretch*: its start and length go to ``gap_start``/``gap_length``
    once a frame or filler ends it. A stretch still open when the call returns stays in
    ``state`` (see :func:`new_state`), which also accumulates the filler and skipped-byte
    counts and the number of stretches begun.

    Returns ``(n_frames, n_gaps, stop_position, code)``; ``code`` is one of ``PARSE_*``.
    ``PARSE_INCOMPLETE``: the frame at ``stop_position`` needs bytes past ``end`` (more
    may come, or the stream is truncated there). ``PARSE_FULL``: an output array is full.
    """
    cdef Py_ssize_t cap = frame_offset.shape[0]
    cdef Py_ssize_t gap_cap = gap_start.shape[0]
    cdef Py_ssize_t n = 0, n_gaps = 0, j
    cdef Py_ssize_t size = buf.shape[0]
    cdef int code = C_PARSE_END
    cdef int L, p, t
    cdef uint64_t word, ts, raw
    cdef uint8_t* view
    cdef int64_t open_at, filler, skipped, resyncs
    if state.shape[0] < C_STATE_SIZE:
        raise ValueError(f"state must hold {C_STATE_SIZE} values (see new_state())")
    if length.shape[0] < cap:
        cap = length.shape[0]
    if layer.shape[0] < cap:
        cap = layer.shape[0]
    if sensor.shape[0] < cap:
        cap = sensor.shape[0]
    if timestamp.shape[0] < cap:
        cap = timestamp.shape[0]
    if sensor_views.shape[0] // VIEW_SIZE < cap:
        cap = sensor_views.shape[0] // VIEW_SIZE
    if gap_length.shape[0] < gap_cap:
        gap_cap = gap_length.shape[0]
    if ts_bytes not in (0, 2, 4, 6, 8):
        raise ValueError("ts_bytes must be 0 (any) or one of 2, 4, 6, 8")
    if end > buf.shape[0]:
        end = buf.shape[0]
    if pos < 0:
        pos = 0
    open_at = state[C_GAP_OPEN_AT]
    filler = state[C_FILLER_BYTES]
    skipped = state[C_RESYNC_BYTES]
    resyncs = state[C_RESYNCS]
    with nogil:
        while pos < end:
            L = buf[pos]
            if L == FILLER:
                t = -1                     # ends an open stretch, like a frame
            elif L < MIN_LENGTH or L > MAX_LENGTH:
                t = 0                      # cannot start a frame
            elif end - pos < 3:
                code = C_PARSE_INCOMPLETE  # the width depends on the header byte
                break
            else:
                p = buf[pos + 2] & 7
                t = L - 2 - p
                if not valid_width(t, ts_bytes):
                    t = 0
                elif end - pos < 1 + L:
                    code = C_PARSE_INCOMPLETE
                    break
            if t == 0:  # resynchronise: skip this byte
                if open_at < 0:
                    open_at = base_offset + pos
                    resyncs += 1
                skipped += 1
                pos += 1
                continue
            # a frame or filler: it ends an open stretch first
            if open_at >= 0:
                if n_gaps >= gap_cap:
                    code = C_PARSE_FULL
                    break
                gap_start[n_gaps] = open_at
                gap_length[n_gaps] = base_offset + pos - open_at
                n_gaps += 1
                open_at = -1
            if t < 0:
                filler += 1
                pos += 1
                continue
            if n >= cap:
                code = C_PARSE_FULL
                break
            if LITTLE_ENDIAN_HOST and pos + MAX_LENGTH + 1 <= size:
                # Two 8-byte loads (the buffer holds them: pos + 18 <= size) and masks,
                # rather than p + 1 + t single-byte steps.
                memcpy(&word, &buf[pos + 2], 8)
                word = BINDF_BSWAP64(word)
                if p < 7:  # keep the p + 1 sensor bytes (a shift by 64 is undefined)
                    word &= ~(0xFFFFFFFFFFFFFFFFULL >> (8 * (p + 1)))
                memcpy(&ts, &buf[pos + 3 + p], 8)
                if t < 8:
                    ts &= (1ULL << (8 * t)) - 1
            else:
                word = 0
                for j in range(p + 1):
                    word |= (<uint64_t>buf[pos + 2 + j]) << (56 - 8 * j)
                ts = 0
                for j in range(t):
                    ts |= (<uint64_t>buf[pos + 3 + p + j]) << (8 * j)
            view = &sensor_views[n * VIEW_SIZE]
            view[0] = <uint8_t>(p + 1)
            view[1] = 0
            view[2] = 0
            view[3] = 0
            # the masked word holds the sensor bytes, then zeros
            if LITTLE_ENDIAN_HOST:
                raw = BINDF_BSWAP64(word)
                memcpy(view + 4, &raw, 8)
            else:
                memcpy(view + 4, &word, 8)
            for j in range(12, VIEW_SIZE):
                view[j] = 0
            frame_offset[n] = base_offset + pos
            length[n] = <uint8_t>L
            layer[n] = buf[pos + 1]
            sensor[n] = word
            timestamp[n] = ts
            n += 1
            pos += 1 + L
    state[C_GAP_OPEN_AT] = open_at
    state[C_FILLER_BYTES] = filler
    state[C_RESYNC_BYTES] = skipped
    state[C_RESYNCS] = resyncs
    return n, n_gaps, pos, code
