# cython: language_level=3
"""AstroPix ``.apx`` byte-level state machines (format page: ``docs/formats/apx.md``).

Two sequential jobs that cannot be vectorised:

* :func:`frame_readouts` walks ``FE DC BA | u32 id | u64 ts | u32 L | payload`` records:
  each record's position depends on the previous record's length.
* :func:`decode_hits` finds the 8-byte hits inside readout payloads, re-assembling hits
  cut across consecutive readouts (the "extra bytes" carried from one readout to the
  next), exactly as docs/formats/apx.md prescribes.

Both take arrays and write into arrays the caller allocated; neither does I/O or knows
about headers. Every read and write is bounds-checked by hand (the module is compiled
without Cython's bounds checks), so any input bytes are safe. Resumable state (the carried
extra bytes) goes in and comes back out, so decoding readouts in any grouping gives the
same hits. The pure-Python model in ``apx_reference.py`` is the parity oracle.

Two loops are written in C, in headers beside this file, where Cython cannot say what
they need: ``_apx_clean.h``, the branch-free inner loop of :func:`decode_clean` (the fast
path of :func:`decode_hits` for clean readouts), and ``_apx_fields.h``, the loop of
:func:`hit_fields`, built for several instruction sets. The Cython functions that call
them check every bound before they do; the guard-page fuzz tests run both.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from bindf._kernels._status cimport (
    BYTES_UNVISITED, DECODER_FAILURE, EXTRA_BYTES_INVALID, EXTRA_BYTES_KEPT,
    INCOMPLETE_HIT_DROPPED, ORPHANS_DROPPED, ORPHANS_MATCHED, ORPHANS_UNUSED,
)
from bindf._kernels._columns cimport output_column

# frame_readouts stop codes
cdef enum:
    C_FRAME_END = 0          # consumed everything up to ``end``
    C_FRAME_FULL = 1         # output arrays are full; call again from the returned position
    C_FRAME_INCOMPLETE = 2   # ``end`` falls inside the readout at the returned position
    C_FRAME_BAD_MARKER = 3   # no readout marker at the returned position

FRAME_END = C_FRAME_END
FRAME_FULL = C_FRAME_FULL
FRAME_INCOMPLETE = C_FRAME_INCOMPLETE
FRAME_BAD_MARKER = C_FRAME_BAD_MARKER

cdef enum:
    HIT_SIZE = 8
    C_PACKED_HIT_SIZE = HIT_SIZE + 8 + 4 + 1  # see IntactRunDecoder
    HEADER_SIZE = 19
    IDLE = 0xBC
    PAD = 0xFF
    MAX_ORDER = 255   # decoding_order is uint8: saturate rather than wrap

cdef inline bint is_start(uint8_t b) noexcept nogil:
    return b != PAD and (b >> 5) == 7


cdef inline uint32_t le32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t le64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>le32(p)) | ((<uint64_t>le32(p + 4)) << 32)


cdef Py_ssize_t frame_loop(
    const uint8_t* buf,
    Py_ssize_t* pos_io,
    Py_ssize_t end,
    int64_t* header_pos,
    uint32_t* readout_id,
    uint64_t* timestamp,
    uint32_t* length,
    Py_ssize_t cap,
    int* code,
) noexcept nogil:
    """The loop of :func:`frame_readouts` over ``buf[pos_io[0]:end]`` (``end`` within the
    buffer, ``pos_io[0] >= 0``; ``buf`` may be NULL when there is nothing to read), at
    most ``cap`` readouts: their count; ``pos_io`` is left at the stop position, ``code``
    says why it stopped."""
    cdef Py_ssize_t n = 0, avail, i
    cdef Py_ssize_t pos = pos_io[0]
    cdef uint32_t L
    cdef const uint8_t* p
    cdef uint8_t marker[3]
    marker[0] = 0xFE
    marker[1] = 0xDC
    marker[2] = 0xBA
    while True:
        if pos >= end:
            code[0] = C_FRAME_END
            break
        if n >= cap:
            code[0] = C_FRAME_FULL
            break
        avail = end - pos
        p = buf + pos
        code[0] = C_FRAME_END
        for i in range(3 if avail >= 3 else avail):
            if p[i] != marker[i]:
                code[0] = C_FRAME_BAD_MARKER
                break
        if code[0] == C_FRAME_BAD_MARKER:
            break
        if avail < HEADER_SIZE:
            code[0] = C_FRAME_INCOMPLETE
            break
        L = le32(p + 15)
        if <uint64_t>L > <uint64_t>(avail - HEADER_SIZE):
            code[0] = C_FRAME_INCOMPLETE
            break
        header_pos[n] = pos
        readout_id[n] = le32(p + 3)
        timestamp[n] = le64(p + 7)
        length[n] = L
        n += 1
        pos += HEADER_SIZE + <Py_ssize_t>L
    pos_io[0] = pos
    return n


def frame_readouts(
    const uint8_t[::1] buf,
    Py_ssize_t pos,
    Py_ssize_t end,
    int64_t[::1] header_pos,
    uint32_t[::1] readout_id,
    uint64_t[::1] timestamp,
    uint32_t[::1] length,
):
    """Frame complete readouts in ``buf[pos:end]``.

    Writes each readout's header position, id, timestamp and payload length; returns
    ``(n_readouts, stop_position, code)`` with ``code`` one of the ``FRAME_*`` constants.
    A readout whose declared length runs past ``end`` is reported as ``FRAME_INCOMPLETE``
    (never read, never allocated); the caller decides whether more bytes can come.
    """
    cdef Py_ssize_t cap = header_pos.shape[0]
    cdef Py_ssize_t n = 0
    cdef int code = C_FRAME_END
    if readout_id.shape[0] < cap:
        cap = readout_id.shape[0]
    if timestamp.shape[0] < cap:
        cap = timestamp.shape[0]
    if length.shape[0] < cap:
        cap = length.shape[0]
    if end > buf.shape[0]:
        end = buf.shape[0]
    if pos < 0:
        pos = 0
    if pos >= end:  # nothing to frame (and no element of an empty buffer to point at)
        return 0, pos, C_FRAME_END
    if cap <= 0:
        return 0, pos, C_FRAME_FULL
    with nogil:
        n = frame_loop(&buf[0], &pos, end, &header_pos[0], &readout_id[0], &timestamp[0],
                       &length[0], cap, &code)
    return n, pos, code


def find_marker(const uint8_t[::1] buf, Py_ssize_t start, Py_ssize_t end):
    """Position of the first complete ``FE DC BA`` in ``buf[start:end]``, or -1."""
    cdef Py_ssize_t i
    cdef Py_ssize_t found = -1
    if end > buf.shape[0]:
        end = buf.shape[0]
    if end < 0:
        end = 0
    if start < 0:
        start = 0
    with nogil:
        i = start
        # ``i <= end - 3``, not ``i + 3 <= end``: a start near PY_SSIZE_T_MAX must not
        # overflow into a negative index (found by tests/test_kernel_fuzz.py).
        while i <= end - 3:
            if buf[i] == 0xFE and buf[i + 1] == 0xDC and buf[i + 2] == 0xBA:
                found = i
                break
            i += 1
    return found


cdef struct HitSink:
    bint store             # False: hits are only counted
    uint8_t* hits          # (cap, 8) row-major
    uint8_t* hit_order
    uint32_t* hit_readout_id
    uint64_t* hit_timestamp
    uint32_t readout_id    # of the readout being decoded
    uint64_t timestamp
    Py_ssize_t cap
    Py_ssize_t n
    bint overflow


cdef inline void emit(HitSink* sink, const uint8_t* first, Py_ssize_t n_first,
                      const uint8_t* second, Py_ssize_t order) noexcept nogil:
    """Append one hit: ``n_first`` bytes of ``first`` then ``8 - n_first`` of ``second``."""
    cdef uint8_t* dst
    if sink.store:
        if sink.n >= sink.cap:
            sink.overflow = True
            return
        dst = sink.hits + sink.n * HIT_SIZE
        if n_first == HIT_SIZE:
            memcpy(dst, first, HIT_SIZE)
        else:
            memcpy(dst, first, n_first)
            memcpy(dst + n_first, second, HIT_SIZE - n_first)
        sink.hit_order[sink.n] = <uint8_t>(order if order < MAX_ORDER else MAX_ORDER)
        sink.hit_readout_id[sink.n] = sink.readout_id
        sink.hit_timestamp[sink.n] = sink.timestamp
    sink.n += 1


cdef inline uint64_t zero_bytes(uint64_t x) noexcept nogil:
    """0x80 in every byte of ``x`` that is zero, 0 elsewhere (exact, no carries)."""
    cdef uint64_t low7 = 0x7F7F7F7F7F7F7F7FULL
    return ~(((x & low7) + low7) | x | low7)


cdef extern from "_apx_clean.h":
    # the trailing-zero count of the fast path's header, shared with the exact decoder
    int BINDF_CTZ64(uint64_t x) nogil  # x != 0


cdef inline Py_ssize_t skip_idle_pad(const uint8_t* D, Py_ssize_t c, Py_ssize_t n,
                                     Py_ssize_t limit) noexcept nogil:
    """First position in ``[c, n)`` holding neither IDLE nor PAD, or ``n``.

    Eight bytes per step, so runs of 0..7 idle bytes (the usual gaps between hits) cost no
    data-dependent branch. ``D[:limit]`` (``limit >= n``) is readable: bytes past the
    payload end may be loaded but are masked out as "stop here".
    """
    cdef uint64_t w, keep
    while c + 8 <= limit:
        w = le64(D + c)
        keep = ~(zero_bytes(w ^ 0xBCBCBCBCBCBCBCBCULL) | zero_bytes(~w)) & 0x8080808080808080ULL
        if n - c < 8:
            keep |= 0x8080808080808080ULL << (8 * (n - c))
        if keep:
            c += BINDF_CTZ64(keep) >> 3
            return c if c < n else n
        c += 8
    while c < n and (D[c] == IDLE or D[c] == PAD):
        c += 1
    return c


cdef inline Py_ssize_t skip_idle(const uint8_t* D, Py_ssize_t c, Py_ssize_t n,
                                 Py_ssize_t limit) noexcept nogil:
    """First position in ``[c, n)`` not holding IDLE, or ``n`` (PAD is not skipped).

    In the next eight bytes XORed with idle bytes, the lowest set bit lies in the first
    byte that is not idle (the load is little-endian), so a trailing-zero count finds it;
    a bit at byte ``n - c`` stands for the end."""
    cdef uint64_t x
    while c + 8 <= limit:
        x = le64(D + c) ^ 0xBCBCBCBCBCBCBCBCULL
        if n - c < 8:
            x |= (<uint64_t>1) << (8 * (n - c))
        if x:
            c += BINDF_CTZ64(x) >> 3
            return c if c < n else n
        c += 8
    while c < n and D[c] == IDLE:
        c += 1
    return c


cdef uint64_t _probe = 1
#: The zero_bytes() flag bit of the byte at the lowest address of a loaded word.
cdef uint64_t FIRST_BYTE_FLAG = 0x80 if (<uint8_t*>&_probe)[0] == 1 else (<uint64_t>0x80) << 56


cdef inline bint may_hold_start(const uint8_t* h) noexcept nogil:
    """Whether any of ``h[1:8]`` is a start byte (``0xE0..0xFE``), eight bytes at once.

    A shortcut for the common case: when it says yes the exact byte-by-byte rule runs.
    (One 8-byte load; a 7-byte copy would stall on store forwarding.)
    """
    cdef uint64_t w
    memcpy(&w, h, 8)
    cdef uint64_t top3_set = zero_bytes((w & 0xE0E0E0E0E0E0E0E0ULL) ^ 0xE0E0E0E0E0E0E0E0ULL)
    cdef uint64_t is_pad = zero_bytes(~w)
    return (top3_set & ~is_pad & ~FIRST_BYTE_FLAG) != 0


cdef int decode_one(
    const uint8_t* D,
    Py_ssize_t n,
    Py_ssize_t limit,
    uint8_t* carry,
    Py_ssize_t* carry_len,
    HitSink* sink,
    Py_ssize_t* n_hits,
) noexcept nogil:
    """One readout payload ``D[:n]`` (docs/formats/apx.md); ``D[:limit]`` is readable.

    Returns the status word.
    """
    cdef int status = 0
    cdef Py_ssize_t c = 0, k, m, f
    cdef Py_ssize_t prev = carry_len[0]
    cdef Py_ssize_t order = 0
    cdef Py_ssize_t j

    carry_len[0] = -1   # this readout's own extra bytes, if any, replace the carried ones
    while n > 0 and D[n - 1] == PAD:
        n -= 1

    # 1. leading idle and padding
    c = skip_idle_pad(D, 0, n, limit)
    if c >= n:  # nothing but idle/padding: upstream fails looking for a start byte
        n_hits[0] = 0
        return DECODER_FAILURE

    # 2. orphans (tail of a hit cut at the end of the previous readout)
    if not is_start(D[c]):
        k = 1
        while c + k < n and not is_start(D[c + k]):
            k += 1
        if c + k >= n:
            n_hits[0] = 0
            return DECODER_FAILURE
        m = k
        while m > 0 and D[c + m - 1] == IDLE:
            m -= 1
        if prev < 0:
            status |= ORPHANS_UNUSED
        elif prev + m == HIT_SIZE:
            emit(sink, carry, prev, D + c, order)
            order += 1
            status |= ORPHANS_MATCHED
        else:
            status |= ORPHANS_DROPPED
        c += k

    # 3. main loop
    while c < n:
        if D[c] == IDLE or D[c] == PAD:  # usually a start byte already (c came from f)
            c = skip_idle_pad(D, c, n, limit)
            if c >= n:
                break
        if c + HIT_SIZE >= n:  # upstream ">=": a final complete hit is "extra bytes" too
            if is_start(D[c]):
                for j in range(n - c):
                    carry[j] = D[c + j]
                carry_len[0] = n - c
                status |= EXTRA_BYTES_KEPT
            else:
                status |= EXTRA_BYTES_INVALID
            break
        if not is_start(D[c]):
            status |= BYTES_UNVISITED
            c += 1
            while c < n and not is_start(D[c]):
                c += 1
            if c >= n:
                status |= DECODER_FAILURE
                break
        if c + HIT_SIZE > n:  # upstream cannot unpack a short hit
            status |= DECODER_FAILURE
            break
        # Look-ahead of rule 3.4: the first non-idle byte after the tentative hit. It
        # only matters when that byte exists and is not a start byte (evaluated without
        # short-circuit branches: n > c here, so D[n - 1] is a valid dummy read).
        # skip_idle runs even when no idle byte follows (c + 8 < n here): 0-2 idle bytes
        # between hits make "is there one?" a coin toss the CPU mispredicts, and the
        # word-at-a-time skip costs less than that (15 % of decode_hits, measured).
        f = skip_idle(D, c + HIT_SIZE, n, limit)
        if ((f < n) & (not is_start(D[f if f < n else n - 1]))) and may_hold_start(D + c):
            # Rare: the next byte is not a start byte and the hit holds one. Run rule
            # 3.4 exactly: walk k = 1..7 over the (possibly shifted) tentative hit.
            k = 1
            while k < HIT_SIZE:
                if is_start(D[c + k]):
                    f = skip_idle(D, c + HIT_SIZE, n, limit)
                    if f < n and not is_start(D[f]):
                        status |= INCOMPLETE_HIT_DROPPED
                        c += k
                        if c + HIT_SIZE > n:
                            status |= DECODER_FAILURE
                            break
                k += 1
            if status & DECODER_FAILURE:
                break
            f = skip_idle(D, c + HIT_SIZE, n, limit)
        # Otherwise no k can drop the hit: the look-ahead does not depend on k.
        emit(sink, D + c, HIT_SIZE, D, order)
        order += 1
        c = f  # rule 3.5: past the hit and the idle bytes after it

    if status & DECODER_FAILURE:
        carry_len[0] = -1
    n_hits[0] = order
    return status


cdef extern from "_apx_clean.h" nogil:
    ctypedef struct bindf_clean_stop:
        Py_ssize_t readout
        Py_ssize_t hits
        Py_ssize_t taken
        int finished
    bindf_clean_stop bindf_clean_stream(
        const uint8_t* B, Py_ssize_t size, const Py_ssize_t* first, const Py_ssize_t* ends,
        const uint32_t* readout_id, const uint64_t* timestamp, uint8_t* hits,
        uint8_t* order, uint32_t* hit_readout_id, uint64_t* hit_timestamp, Py_ssize_t n,
        uint32_t* n_hits)


cdef enum:
    CLEAN_WINDOW = 64   # readouts checked ahead by decode_clean (stack arrays)


cdef Py_ssize_t decode_clean(
    const uint8_t* B,
    Py_ssize_t size,
    const int64_t* payload_pos,
    const uint32_t* payload_len,
    const uint32_t* readout_id,
    const uint64_t* timestamp,
    Py_ssize_t r,
    Py_ssize_t n_readouts,
    HitSink* sink,
    uint8_t* status,
    uint32_t* n_hits,
) noexcept nogil:
    """Decode readouts from ``r`` on while they are *clean*; return the first readout it
    did not decode (``n_readouts``: all), which :func:`decode_one` must then decode.

    A clean readout is what almost every readout of a healthy run is: its payload lies in
    ``B[:size]``, its last byte is not padding, its first byte that is neither idle nor
    padding is a start byte that begins a whole hit with at least one byte after it, and
    after each hit the first byte that is not idle is either the end of the payload or
    such a start byte again. :func:`decode_one` gives such a readout exactly the
    hits this gives it, status 0 and no carried bytes, whatever bytes were carried into
    it (it has no orphans to use them on), so one pass can decode many of them without
    per-readout decisions.

    Why: in :func:`decode_one` the end of each readout is a branch that depends on the
    hits found, which the CPU mispredicts for runs whose readouts hold varying numbers of
    hits, and the next readout's work waits for it. Here the readouts are checked ahead
    (``CLEAN_WINDOW`` at a time, the first hit of each found then), and then one loop
    steps from hit to hit across readouts: moving to the next readout is a selection,
    not a branch. The loop leaves only when a check fails: the hits of a readout that
    fails part-way are taken back, and it goes to :func:`decode_one`.
    Requires ``sink.store``; the sink's capacity is respected (a readout that might not
    fit is left to :func:`decode_one`, which reports the overflow).
    """
    cdef Py_ssize_t first[CLEAN_WINDOW + 1]   # each readout's first hit (-1: none after)
    cdef Py_ssize_t ends[CLEAN_WINDOW + 1]    # each readout's payload end
    cdef Py_ssize_t count, c, end, room
    cdef int64_t start
    cdef uint32_t L
    cdef bindf_clean_stop stop
    while r < n_readouts:
        # 1. check readouts ahead: where each one's first hit is
        count = 0
        room = sink.cap - sink.n
        while count < CLEAN_WINDOW and r + count < n_readouts:
            start = payload_pos[r + count]
            L = payload_len[r + count]
            if start < 0 or start > size or <int64_t>L > size - start:
                break
            end = <Py_ssize_t>start + L
            if L <= HIT_SIZE or B[end - 1] == PAD or <Py_ssize_t>(L >> 3) > room:
                break  # (a clean readout of L bytes holds at most L // 8 hits)
            c = skip_idle_pad(B, <Py_ssize_t>start, end, size)
            if c + HIT_SIZE >= end or not is_start(B[c]):
                break
            room -= L >> 3
            first[count] = c
            ends[count] = end
            status[r + count] = 0
            count += 1
        if count == 0:
            return r
        first[count] = -1
        ends[count] = 0
        # 2. hit by hit across these readouts
        stop = bindf_clean_stream(B, size, first, ends, readout_id + r, timestamp + r,
                                  sink.hits, sink.hit_order, sink.hit_readout_id,
                                  sink.hit_timestamp, sink.n, n_hits + r)
        if not stop.finished:  # readout r + i is not clean after all: its hits go back
            sink.n = stop.hits - stop.taken
            return r + stop.readout
        sink.n = stop.hits
        r += count
        if count < CLEAN_WINDOW:  # the next readout failed a check (or there is none)
            return r
    return r


cdef enum:
    DECODE_OK = 0
    DECODE_BAD_PAYLOAD = 1   # a readout's payload lies outside the buffer
    DECODE_OVERFLOW = 2      # the hit outputs are full


cdef int decode_loop(
    const uint8_t* buf,
    Py_ssize_t size,
    const int64_t* payload_pos,
    const uint32_t* payload_len,
    const uint32_t* readout_id,
    const uint64_t* timestamp,
    Py_ssize_t n_readouts,
    uint8_t* carry,
    Py_ssize_t* carry_len,
    HitSink* sink,
    uint8_t* status,
    uint32_t* n_hits,
    Py_ssize_t* stopped_at,
) noexcept nogil:
    """The loop of :func:`decode_hits` over ``n_readouts`` (> 0) readouts of ``buf[:size]``
    (``buf`` may be NULL when ``size`` is 0): ``DECODE_OK``, or why it stopped at readout
    ``stopped_at[0]``. ``carry_len`` (-1: none) is updated as ``carry`` is."""
    cdef Py_ssize_t r = 0, nh = 0, done_to
    cdef int64_t start
    cdef Py_ssize_t cl = carry_len[0]
    cdef int result = DECODE_OK
    while r < n_readouts:
        if sink.store:
            done_to = decode_clean(buf, size, payload_pos, payload_len, readout_id,
                                   timestamp, r, n_readouts, sink, status, n_hits)
            if done_to > r:  # clean readouts carry nothing on
                cl = -1
                r = done_to
                if r >= n_readouts:
                    break
        start = payload_pos[r]
        if start < 0 or start > size or <int64_t>payload_len[r] > size - start:
            result = DECODE_BAD_PAYLOAD
            break
        sink.readout_id = readout_id[r]
        sink.timestamp = timestamp[r]
        status[r] = <uint8_t>decode_one(
            buf + start if size > 0 else NULL, payload_len[r], size - start,
            carry, &cl, sink, &nh)
        n_hits[r] = <uint32_t>nh
        if sink.overflow:
            result = DECODE_OVERFLOW
            break
        r += 1
    carry_len[0] = cl
    stopped_at[0] = r
    return result


def decode_hits(
    const uint8_t[::1] buf,
    const int64_t[::1] payload_pos,
    const uint32_t[::1] payload_len,
    const uint32_t[::1] readout_id,
    const uint64_t[::1] timestamp,
    uint8_t[::1] carry,
    Py_ssize_t carry_len,
    uint8_t[:, ::1] hits,
    uint8_t[::1] hit_order,
    uint32_t[::1] hit_readout_id,
    uint64_t[::1] hit_timestamp,
    uint8_t[::1] status,
    uint32_t[::1] n_hits,
    bint store=True,
):
    """Decode the readout payloads ``buf[payload_pos[i]:payload_pos[i] + payload_len[i]]``.

    ``carry[:carry_len]`` are the extra bytes left by the readout before the first one
    (``carry_len = -1``: none); the function updates ``carry`` in place and returns
    ``(n_hits_total, carry_len)``. With ``store`` the 8 raw bytes of each hit go to
    ``hits`` (in readout order, then decoding order), its decoding order to
    ``hit_order`` and its readout's id and timestamp to ``hit_readout_id`` and
    ``hit_timestamp``; without, hits are only counted. ``status`` and ``n_hits`` (hits per
    readout) get one entry per readout.

    Capacity: a readout of L bytes yields at most ``L // 8 + 1`` hits. A readout whose
    payload lies outside ``buf``, or hits beyond the output capacity, raise ``ValueError``
    (the caller sized things wrong; no memory is touched out of range).
    """
    cdef Py_ssize_t n_readouts = payload_pos.shape[0]
    cdef Py_ssize_t size = buf.shape[0]
    cdef Py_ssize_t cl = carry_len
    cdef Py_ssize_t stopped_at = 0
    cdef HitSink sink
    cdef int result
    if (payload_len.shape[0] < n_readouts or readout_id.shape[0] < n_readouts
            or timestamp.shape[0] < n_readouts or status.shape[0] < n_readouts
            or n_hits.shape[0] < n_readouts):
        raise ValueError("per-readout arrays are shorter than payload_pos")
    if carry.shape[0] < HIT_SIZE:
        raise ValueError("carry must hold 8 bytes")
    if cl > HIT_SIZE:
        raise ValueError("carry_len must be -1 or 0..8")
    if cl < 0:
        cl = -1
    sink.store = store
    sink.hits = NULL
    sink.hit_order = NULL
    sink.hit_readout_id = NULL
    sink.hit_timestamp = NULL
    sink.cap = 0
    sink.n = 0
    sink.overflow = False
    if store:
        if hits.shape[1] != HIT_SIZE:
            raise ValueError("hits must have 8 columns")
        sink.cap = hits.shape[0]
        if hit_order.shape[0] < sink.cap:
            sink.cap = hit_order.shape[0]
        if hit_readout_id.shape[0] < sink.cap:
            sink.cap = hit_readout_id.shape[0]
        if hit_timestamp.shape[0] < sink.cap:
            sink.cap = hit_timestamp.shape[0]
        if sink.cap > 0:  # else: the first hit overflows before anything is written
            sink.hits = &hits[0, 0]
            sink.hit_order = &hit_order[0]
            sink.hit_readout_id = &hit_readout_id[0]
            sink.hit_timestamp = &hit_timestamp[0]
    if n_readouts == 0:
        return 0, cl
    with nogil:
        result = decode_loop(&buf[0] if size > 0 else NULL, size, &payload_pos[0],
                             &payload_len[0], &readout_id[0], &timestamp[0], n_readouts,
                             &carry[0], &cl, &sink, &status[0], &n_hits[0], &stopped_at)
    if result == DECODE_BAD_PAYLOAD:
        raise ValueError(f"payload {stopped_at} lies outside the buffer")
    if result == DECODE_OVERFLOW:
        raise ValueError("hit output arrays are too small for these readouts")
    return sink.n, cl


# -- small runs in one call ---------------------------------------------------------------
#
# A campaign of thousands of small runs (a threshold scan writes one run of a few KB per
# setting) pays per call: the argument conversions of frame_readouts and decode_hits
# (19 typed arrays), the copies of their outputs, the Python between them, took more
# than the framing and decoding themselves (~7 of ~12 µs a 10 KB run). IntactRunDecoder
# does the whole of such a run in one call, into scratch of its own, and hands back one
# bytes object.

#: Bytes per hit in what :meth:`IntactRunDecoder.decode` returns: the 8 raw hit bytes,
#: the readout's timestamp (u64) and id (u32), the hit's decoding order (u8), packed, in
#: the machine's byte order (a numpy dtype of these fields, unaligned, reads them).
PACKED_HIT_SIZE = C_PACKED_HIT_SIZE


cdef class IntactRunDecoder:
    """Frames and decodes whole small runs, reusing its scratch from run to run. One per
    thread: a call writes into the instance's scratch."""

    cdef int64_t* header_pos
    cdef uint32_t* readout_id
    cdef uint64_t* timestamp
    cdef uint32_t* length
    cdef uint8_t* status
    cdef uint32_t* readout_hits
    cdef Py_ssize_t readout_cap
    cdef uint8_t* hits
    cdef uint8_t* hit_order
    cdef uint32_t* hit_readout_id
    cdef uint64_t* hit_timestamp
    cdef Py_ssize_t hit_cap

    def __dealloc__(self):
        self._free_readouts()
        self._free_hits()

    cdef void _free_readouts(self) noexcept:
        free(self.header_pos)
        free(self.readout_id)
        free(self.timestamp)
        free(self.length)
        free(self.status)
        free(self.readout_hits)
        self.header_pos = NULL
        self.readout_id = NULL
        self.timestamp = NULL
        self.length = NULL
        self.status = NULL
        self.readout_hits = NULL
        self.readout_cap = 0

    cdef void _free_hits(self) noexcept:
        free(self.hits)
        free(self.hit_order)
        free(self.hit_readout_id)
        free(self.hit_timestamp)
        self.hits = NULL
        self.hit_order = NULL
        self.hit_readout_id = NULL
        self.hit_timestamp = NULL
        self.hit_cap = 0

    cdef int _fit(self, Py_ssize_t readouts, Py_ssize_t hits) except -1:
        """Scratch for at least ``readouts`` readouts and ``hits`` hits (grown by at least
        doubling, so that a thread's runs of growing size reallocate a few times only)."""
        if readouts > self.readout_cap:
            self._free_readouts()
            readouts = max(readouts, 2 * self.readout_cap, 64)
            self.header_pos = <int64_t*>malloc(readouts * sizeof(int64_t))
            self.readout_id = <uint32_t*>malloc(readouts * sizeof(uint32_t))
            self.timestamp = <uint64_t*>malloc(readouts * sizeof(uint64_t))
            self.length = <uint32_t*>malloc(readouts * sizeof(uint32_t))
            self.status = <uint8_t*>malloc(readouts)
            self.readout_hits = <uint32_t*>malloc(readouts * sizeof(uint32_t))
            if (self.header_pos == NULL or self.readout_id == NULL or self.timestamp == NULL
                    or self.length == NULL or self.status == NULL
                    or self.readout_hits == NULL):
                self._free_readouts()
                raise MemoryError()
            self.readout_cap = readouts
        if hits > self.hit_cap:
            self._free_hits()
            hits = max(hits, 2 * self.hit_cap, 64)
            self.hits = <uint8_t*>malloc(hits * HIT_SIZE)
            self.hit_order = <uint8_t*>malloc(hits)
            self.hit_readout_id = <uint32_t*>malloc(hits * sizeof(uint32_t))
            self.hit_timestamp = <uint64_t*>malloc(hits * sizeof(uint64_t))
            if (self.hits == NULL or self.hit_order == NULL or self.hit_readout_id == NULL
                    or self.hit_timestamp == NULL):
                self._free_hits()
                raise MemoryError()
            self.hit_cap = hits
        return 0

    def decode(self, bytes data, Py_ssize_t start):
        """The hits of the run whose readouts are ``data[start:]``, when these bytes are
        whole readouts up to the last byte (the usual run): its hits as
        :data:`PACKED_HIT_SIZE`-byte records, decoded from no carried bytes as a file's
        first readout is (what :func:`frame_readouts` and :func:`decode_hits` give for
        these bytes). ``None`` for anything else (no readout marker where one should
        start, a readout cut by the end of the bytes): the caller then decodes the run
        with the streaming decoder, which reports what it finds."""
        cdef Py_ssize_t end = len(data)
        cdef const uint8_t* buf = <const uint8_t*>(<const char*>data)
        cdef Py_ssize_t size, readouts, n, pos, r, stopped_at = 0
        cdef Py_ssize_t carry_len = -1
        cdef uint8_t carry[HIT_SIZE]
        cdef int code = C_FRAME_END, result
        cdef HitSink sink
        cdef bytes packed
        cdef uint8_t* out
        if start < 0 or start > end:
            return None
        size = end - start
        if size == 0:
            return b""
        # Each readout takes at least a header; a readout of L payload bytes holds at
        # most L // 8 hits plus one re-assembled hit.
        readouts = size // HEADER_SIZE + 1
        self._fit(readouts, size // HIT_SIZE + readouts)
        pos = start
        n = frame_loop(buf, &pos, end, self.header_pos, self.readout_id, self.timestamp,
                       self.length, self.readout_cap, &code)
        if code != C_FRAME_END or pos != end:
            return None
        if n == 0:
            return b""
        for r in range(n):
            self.header_pos[r] += HEADER_SIZE  # now where each payload starts
        sink.store = True
        sink.hits = self.hits
        sink.hit_order = self.hit_order
        sink.hit_readout_id = self.hit_readout_id
        sink.hit_timestamp = self.hit_timestamp
        sink.cap = self.hit_cap
        sink.n = 0
        sink.overflow = False
        result = decode_loop(buf, end, self.header_pos, self.length, self.readout_id,
                             self.timestamp, n, carry, &carry_len, &sink, self.status,
                             self.readout_hits, &stopped_at)
        if result != DECODE_OK:  # cannot happen with the bounds above: refused, not read
            raise ValueError("a small run's readouts did not fit the decoder's scratch")
        packed = PyBytes_FromStringAndSize(NULL, sink.n * C_PACKED_HIT_SIZE)
        out = <uint8_t*>PyBytes_AS_STRING(packed)
        for r in range(sink.n):
            memcpy(out, self.hits + r * HIT_SIZE, HIT_SIZE)
            memcpy(out + HIT_SIZE, &self.hit_timestamp[r], 8)
            memcpy(out + HIT_SIZE + 8, &self.hit_readout_id[r], 4)
            out[HIT_SIZE + 12] = self.hit_order[r]
            out += C_PACKED_HIT_SIZE
        return packed


# -- hit fields ---------------------------------------------------------------------------
#
# The fields of a hit are bit ranges of its 8 bytes after each byte's bit order is
# reversed (docs/formats/apx.md, "Fields of a hit"). One pass in C reads each hit once and
# writes each requested column once; the same work in numpy took ~15 passes over the
# chunk with temporaries, 60 % of a read's time. The loops are in _apx_fields.h, compiled
# there for each x86-64 instruction set that speeds them up (see that file's comment).

cdef extern from "_apx_fields.h" nogil:
    enum:
        BINDF_ISA_BASELINE
        BINDF_ISA_AVX2
        BINDF_ISA_AVX512
        BINDF_ISA_WORDS
    const double BINDF_CLOCK_CYCLES_PER_US
    ctypedef struct bindf_hit_columns:
        uint8_t* chip_id
        uint8_t* payload
        uint8_t* row
        uint8_t* column
        uint8_t* ts_neg1
        uint16_t* ts_coarse1
        uint8_t* ts_fine1
        uint8_t* ts_tdc1
        uint8_t* ts_neg2
        uint16_t* ts_coarse2
        uint8_t* ts_fine2
        uint8_t* ts_tdc2
        uint32_t* ts_dec1
        uint32_t* ts_dec2
        double* tot_us
    int bindf_hit_fields_runs(int isa)
    void bindf_hit_fields(int isa, const uint8_t* hits, Py_ssize_t n,
                          const bindf_hit_columns* out)

#: The compiled loops of ``hit_fields``, by name, in the order of preference: one per
#: instruction set, and "words", the AVX-512 loop's algorithm built for the baseline
#: (never the fastest; it lets tests check that algorithm on every machine).
_ISA_BY_NAME = {"avx512": BINDF_ISA_AVX512, "avx2": BINDF_ISA_AVX2,
                "baseline": BINDF_ISA_BASELINE, "words": BINDF_ISA_WORDS}
#: The ones this build has and this CPU runs, best first.
HIT_FIELDS_ISAS = tuple(name for name, isa in _ISA_BY_NAME.items()
                        if bindf_hit_fields_runs(isa))
cdef int BEST_ISA = _ISA_BY_NAME[HIT_FIELDS_ISAS[0]]
#: Clock cycles per µs of the two timestamps ``tot_us`` is computed from (the value
#: ``hit_fields`` divides by, defined in _apx_fields.h): read from here by Python code
#: that must agree with it.
CLOCK_CYCLES_PER_US = BINDF_CLOCK_CYCLES_PER_US


def hit_fields(
    const uint8_t[:, ::1] hits,
    uint8_t[::1] chip_id=None,
    uint8_t[::1] payload=None,
    uint8_t[::1] row=None,
    uint8_t[::1] column=None,
    uint8_t[::1] ts_neg1=None,
    uint16_t[::1] ts_coarse1=None,
    uint8_t[::1] ts_fine1=None,
    uint8_t[::1] ts_tdc1=None,
    uint8_t[::1] ts_neg2=None,
    uint16_t[::1] ts_coarse2=None,
    uint8_t[::1] ts_fine2=None,
    uint8_t[::1] ts_tdc2=None,
    uint32_t[::1] ts_dec1=None,
    uint32_t[::1] ts_dec2=None,
    double[::1] tot_us=None,
    str isa=None,
):
    """Write the fields of the raw hits ``hits`` (n × 8 bytes) into the given columns.

    Each keyword is an output array of at least n values, or ``None`` for a column not
    wanted. ``ts_decN`` are the Gray-decoded ``(ts_coarseN << 3) | ts_fineN``, with
    ``2**17`` added to ``ts_dec2`` when it is below ``ts_dec1`` (the clock rolled over
    between the two edges); ``tot_us = (ts_dec2 - ts_dec1) / 20`` (a 20 MHz clock).
    ``isa`` picks the compiled loop, one of :data:`HIT_FIELDS_ISAS` (default: the first,
    the fastest this CPU runs; every one gives the same values).
    Releases the GIL, so slices of one chunk can be filled from several threads.
    """
    cdef Py_ssize_t n = hits.shape[0]
    cdef int chosen = BEST_ISA
    if isa is not None:
        if isa not in HIT_FIELDS_ISAS:
            raise ValueError(f"isa must be one of {HIT_FIELDS_ISAS} on this machine, "
                             f"not {isa!r}")
        chosen = _ISA_BY_NAME[isa]
    if n > 0 and hits.shape[1] != HIT_SIZE:
        raise ValueError("hits must have 8 columns")
    cdef bindf_hit_columns out
    out.chip_id = output_column(chip_id, n, "chip_id")
    out.payload = output_column(payload, n, "payload")
    out.row = output_column(row, n, "row")
    out.column = output_column(column, n, "column")
    out.ts_neg1 = output_column(ts_neg1, n, "ts_neg1")
    out.ts_coarse1 = output_column(ts_coarse1, n, "ts_coarse1")
    out.ts_fine1 = output_column(ts_fine1, n, "ts_fine1")
    out.ts_tdc1 = output_column(ts_tdc1, n, "ts_tdc1")
    out.ts_neg2 = output_column(ts_neg2, n, "ts_neg2")
    out.ts_coarse2 = output_column(ts_coarse2, n, "ts_coarse2")
    out.ts_fine2 = output_column(ts_fine2, n, "ts_fine2")
    out.ts_tdc2 = output_column(ts_tdc2, n, "ts_tdc2")
    out.ts_dec1 = output_column(ts_dec1, n, "ts_dec1")
    out.ts_dec2 = output_column(ts_dec2, n, "ts_dec2")
    out.tot_us = output_column(tot_us, n, "tot_us")
    if n == 0:
        return
    cdef const uint8_t* h = &hits[0, 0]
    with nogil:
        bindf_hit_fields(chosen, h, n, &out)
