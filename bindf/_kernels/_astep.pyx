# cython: language_level=3
"""A-STEP layer-frame stream parser (the format page ``docs/formats/astep.md``).

An A-STEP ``.bin`` file is the concatenation of the host's reads of the firmware's
readout FIFO: frames ``L | layer | sensor header h | p more sensor bytes | T timestamp
bytes`` (``L`` counts the bytes after itself, ``p = h & 7``, ``T = L - 2 - p`` in
{2, 4, 6, 8}), with ``0xFF`` filler wherever the FIFO was empty. The position of each
frame depends on the length byte of the one before it: that walk is the only sequential
work, and it lives here. So do :func:`v3_fields`, which cuts the AstroPix 3 columns
out of the walk's sensor words in one pass (numpy would take a pass per operation), and
:func:`sensor_views`, which lays the sensor bytes out as Arrow binary views; the
AstroPix 4 fields are vectorised numpy in ``bindf.formats.astep``.

:func:`parse_frames` takes bytes and writes into arrays the caller allocated; it does no
I/O. Every read and write is bounds-checked by hand (the module is compiled without
Cython's bounds checks), so any input bytes and any argument values are safe. Frames
straddle the host's reads, so the walk is resumable: the position goes in and comes
back out, and the little state that spans calls (an open stretch of unparsable bytes,
running counts) lives in a caller-owned ``state`` array. Parsing a stream in any pieces
gives the same frames as parsing it whole. The pure-Python model in
``astep_reference.py`` is the parity oracle.
"""

from libc.stdint cimport int8_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

from bindf._kernels._columns cimport output_column

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


cdef inline unsigned int width_mask_for(int ts_bytes) noexcept nogil:
    """Bit ``T`` set for each timestamp width ``T`` a frame may have: ``ts_bytes``, or
    any width the firmware writes when it is 0."""
    if ts_bytes != 0:
        return 1u << ts_bytes
    return 1u << 2 | 1u << 4 | 1u << 6 | 1u << 8


cdef inline bint valid_width(int t, unsigned int width_mask) noexcept nogil:
    """Whether ``t`` (which may be negative) is a width in ``width_mask``."""
    return <unsigned int>t <= 15 and (width_mask >> t) & 1


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
    int64_t[::1] gap_start,
    int64_t[::1] gap_length,
):
    """Walk the frame stream in ``buf[pos:end]``; ``buf[0]`` is at stream offset ``base_offset``.

    For each complete frame: ``frame_offset`` (stream offset of its length byte),
    ``length`` (the length byte ``L``), ``layer``, ``sensor`` (its ``p + 1`` sensor bytes
    as a big-endian number left-aligned in 64 bits: the header byte is bits 63..56) and
    ``timestamp`` (its ``T`` timestamp bytes read little-endian; ``T = L - 2 - p``).
    The walk writes nothing else: every other column is a function of these arrays,
    computed after the walk (on another thread, when the reader has one).

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
    cdef unsigned int width_mask
    cdef uint64_t word, ts
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
    if gap_length.shape[0] < gap_cap:
        gap_cap = gap_length.shape[0]
    if ts_bytes not in (0, 2, 4, 6, 8):
        raise ValueError("ts_bytes must be 0 (any) or one of 2, 4, 6, 8")
    if end > buf.shape[0]:
        end = buf.shape[0]
    if pos < 0:
        pos = 0
    width_mask = width_mask_for(ts_bytes)
    open_at = state[C_GAP_OPEN_AT]
    filler = state[C_FILLER_BYTES]
    skipped = state[C_RESYNC_BYTES]
    resyncs = state[C_RESYNCS]
    with nogil:
        while pos < end:
            L = buf[pos]
            if L == FILLER:
                t = -1                     # ends an open stretch, like a frame
            elif end - pos > MAX_LENGTH:
                # The common case: the longest frame fits before ``end``, so no end checks;
                # the length and width tests fold into comparisons and a bit test.
                p = buf[pos + 2] & 7
                t = L - 2 - p
                if (<unsigned int>(L - MIN_LENGTH) > MAX_LENGTH - MIN_LENGTH
                        or not valid_width(t, width_mask)):
                    t = 0
            elif L < MIN_LENGTH or L > MAX_LENGTH:
                t = 0                      # cannot start a frame
            elif end - pos < 3:
                code = C_PARSE_INCOMPLETE  # the width depends on the header byte
                break
            else:
                p = buf[pos + 2] & 7
                t = L - 2 - p
                if not valid_width(t, width_mask):
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


# -- the raw sensor bytes as Arrow binary views ------------------------------------------
def sensor_views(const uint64_t[::1] sensor, uint8_t[::1] views):
    """Write each frame's sensor bytes as an Arrow binary-view entry: 16 bytes per frame.

    ``sensor`` holds :func:`parse_frames`' sensor words (the ``p + 1`` sensor bytes
    big-endian, left-aligned, zeros after them; ``p`` is the header byte's low 3 bits).
    Entry ``i`` of ``views`` (at least 16 × n bytes) is a little-endian int32 count
    ``p + 1``, then the word's 8 bytes, most significant first (so the sensor bytes,
    zero-padded; any other word is copied as it is), then 4 zero bytes. A view of at
    most 12 bytes needs no data buffer, so ``views`` is an Arrow ``binary_view`` column
    as it stands (the layout polars uses for binary columns). Releases the GIL.
    """
    cdef Py_ssize_t n = sensor.shape[0], i
    cdef uint64_t word, swapped, head, tail
    cdef uint8_t* out
    cdef int j, count
    if views.shape[0] < n * VIEW_SIZE:
        raise ValueError(f"views holds fewer than the {n * VIEW_SIZE} bytes to be written")
    if n == 0:
        return
    out = &views[0]
    with nogil:
        for i in range(n):
            word = sensor[i]
            count = <int>((word >> 56) & 7) + 1
            if LITTLE_ENDIAN_HOST:
                # Two 8-byte stores: the count and the first 4 bytes, then the other 4 and
                # the zero padding (the bytes in memory order are the word byte-swapped).
                swapped = BINDF_BSWAP64(word)
                head = <uint64_t>count | (swapped << 32)
                tail = swapped >> 32
                memcpy(out + i * VIEW_SIZE, &head, 8)
                memcpy(out + i * VIEW_SIZE + 8, &tail, 8)
            else:
                out[i * VIEW_SIZE] = <uint8_t>count  # the count is little-endian, as above
                out[i * VIEW_SIZE + 1] = 0
                out[i * VIEW_SIZE + 2] = 0
                out[i * VIEW_SIZE + 3] = 0
                for j in range(8):
                    out[i * VIEW_SIZE + 4 + j] = <uint8_t>(word >> (56 - 8 * j))
                for j in range(12, VIEW_SIZE):
                    out[i * VIEW_SIZE + j] = 0


# -- AstroPix 3 sensor fields ------------------------------------------------------------
cdef enum:
    # Frames per block of v3_fields: each column is cut from one block of sensor words at
    # a time (a loop the compiler vectorises), and the block stays in the L1 cache.
    FIELD_BLOCK = 2048
    V3_PAYLOAD = 4           # sensor header payload of a well-formed AstroPix 3 frame
    KIND_V3 = 0
    KIND_WRONG_LENGTH = 2
    TOT_VALUES = 4096        # 12-bit ToT


cdef inline void cut_sensor_byte(const uint64_t* word, Py_ssize_t m, uint8_t* out,
                                 int byte, int shift, uint8_t mask) noexcept nogil:
    """``out[i] = (sensor byte ``byte`` of word i >> shift) & mask`` for one block."""
    cdef Py_ssize_t i
    cdef int at = 56 - 8 * byte + shift
    if out == NULL:
        return
    for i in range(m):
        out[i] = <uint8_t>(word[i] >> at) & mask


def v3_fields(
    const uint64_t[::1] sensor,
    const uint8_t[::1] length,
    double tick_ns,
    uint8_t[::1] chip_id=None,
    uint8_t[::1] payload=None,
    uint8_t[::1] ts_bytes=None,
    uint8_t[::1] column=None,
    uint8_t[::1] location=None,
    uint8_t[::1] chip_timestamp=None,
    uint8_t[::1] tot_msb=None,
    uint8_t[::1] tot_lsb=None,
    uint16_t[::1] tot_total=None,
    double[::1] tot_us=None,
    int8_t[::1] kind_code=None,
    uint8_t[::1] valid=None,
):
    """Write the AstroPix 3 columns of frames parsed by :func:`parse_frames`.

    ``sensor`` and ``length`` are that call's outputs (n frames); each keyword is an
    output array of at least n values, or ``None`` for a column not wanted. The fields
    are the sensor header's ``chip_id = h >> 3`` and ``payload = h & 7``, the timestamp
    width ``ts_bytes = L - 2 - payload`` (modulo 256, as uint8 arithmetic), the bit
    fields of sensor bytes 1..4, ``tot_total = tot_msb << 8 | tot_lsb`` and ``tot_us =
    tot_total × tick_ns / 1000`` (multiplied, then divided: the upstream rounding).
    ``kind_code`` (the ``kind`` column's dictionary index) is 0 (``v3``) for a frame
    with payload 4 and 2 (``wrong_length``) otherwise;
    ``valid`` (at least ``(n + 7) // 8`` bytes) gets the Arrow validity bitmap of the
    well-formed frames (bit ``i % 8`` of byte ``i // 8``). Fields are computed for every
    frame, wrong-length ones included.

    Returns the number of well-formed frames (payload 4). Releases the GIL.
    """
    cdef Py_ssize_t n = sensor.shape[0], first, m, i
    if length.shape[0] < n:
        raise ValueError("length holds fewer values than sensor")
    cdef uint8_t* p_chip = output_column(chip_id, n, "chip_id")
    cdef uint8_t* p_payload = output_column(payload, n, "payload")
    cdef uint8_t* p_ts_bytes = output_column(ts_bytes, n, "ts_bytes")
    cdef uint8_t* p_column = output_column(column, n, "column")
    cdef uint8_t* p_location = output_column(location, n, "location")
    cdef uint8_t* p_chip_ts = output_column(chip_timestamp, n, "chip_timestamp")
    cdef uint8_t* p_msb = output_column(tot_msb, n, "tot_msb")
    cdef uint8_t* p_lsb = output_column(tot_lsb, n, "tot_lsb")
    cdef uint16_t* p_tot = output_column(tot_total, n, "tot_total")
    cdef double* p_tot_us = output_column(tot_us, n, "tot_us")
    cdef int8_t* p_kind = output_column(kind_code, n, "kind_code")
    cdef uint8_t* p_valid = output_column(valid, (n + 7) // 8, "valid")
    if n == 0:
        return 0
    cdef const uint64_t* word
    cdef const uint8_t* L
    cdef uint8_t ok[FIELD_BLOCK + 8]  # 1 where the frame is well formed (+ zero padding)
    cdef uint16_t tot[FIELD_BLOCK]
    # tot_us of every 12-bit ToT, computed as the formula says (multiply, then divide):
    # a table lookup per frame instead of a division.
    cdef double us_of_tot[TOT_VALUES]
    cdef uint64_t eight
    cdef Py_ssize_t well_formed = 0, j
    with nogil:
        if p_tot_us != NULL:
            for j in range(TOT_VALUES):
                us_of_tot[j] = j * tick_ns / 1000.0
        first = 0
        while first < n:
            m = min(<Py_ssize_t>FIELD_BLOCK, n - first)
            word = &sensor[first]
            L = &length[first]
            cut_sensor_byte(word, m, p_chip + first if p_chip else NULL, 0, 3, 0x1F)
            cut_sensor_byte(word, m, p_payload + first if p_payload else NULL, 0, 0, 0x07)
            cut_sensor_byte(word, m, p_column + first if p_column else NULL, 1, 7, 0x01)
            cut_sensor_byte(word, m, p_location + first if p_location else NULL, 1, 0, 0x3F)
            cut_sensor_byte(word, m, p_chip_ts + first if p_chip_ts else NULL, 2, 0, 0xFF)
            cut_sensor_byte(word, m, p_msb + first if p_msb else NULL, 3, 0, 0x0F)
            cut_sensor_byte(word, m, p_lsb + first if p_lsb else NULL, 4, 0, 0xFF)
            if p_ts_bytes != NULL:
                for i in range(m):
                    p_ts_bytes[first + i] = <uint8_t>(L[i] - 2 - ((word[i] >> 56) & 7))
            for i in range(m):
                ok[i] = ((word[i] >> 56) & 7) == V3_PAYLOAD
            for i in range(m):
                well_formed += ok[i]
            if p_kind != NULL:
                for i in range(m):
                    p_kind[first + i] = KIND_WRONG_LENGTH - (KIND_WRONG_LENGTH - KIND_V3) * ok[i]
            if p_valid != NULL:
                # Blocks start at multiples of 8 frames, so each group of 8 is one bitmap
                # byte. A little-endian load of 8 flags times this constant gathers flag i
                # into bit 56 + i (the partial products never overlap, so never carry).
                for i in range(m, m + 8):
                    ok[i] = 0
                for j in range(0, m, 8):
                    if LITTLE_ENDIAN_HOST:
                        memcpy(&eight, &ok[j], 8)
                        p_valid[(first + j) >> 3] = <uint8_t>((eight * 0x0102040810204080ULL) >> 56)
                    else:
                        p_valid[(first + j) >> 3] = (ok[j] | ok[j + 1] << 1 | ok[j + 2] << 2
                                                     | ok[j + 3] << 3 | ok[j + 4] << 4
                                                     | ok[j + 5] << 5 | ok[j + 6] << 6
                                                     | ok[j + 7] << 7)
            if p_tot != NULL or p_tot_us != NULL:
                for i in range(m):
                    tot[i] = <uint16_t>(((word[i] >> 32) & 0x0F) << 8 | ((word[i] >> 24) & 0xFF))
                if p_tot != NULL:
                    memcpy(p_tot + first, tot, m * sizeof(uint16_t))
                if p_tot_us != NULL:
                    for i in range(m):
                        p_tot_us[first + i] = us_of_tot[tot[i]]
            first += m
    return well_formed
