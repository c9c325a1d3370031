# cython: language_level=3
"""AstroPix 3 hit kernel: the readout state machine of ``readout_uid`` 3000.

The container of an AstroPix 3 run is the same as AstroPix 4's, so readouts are framed
by ``_apx.frame_readouts``; this module only finds the 5-byte hits inside the readout
payloads (the format page in docs/, "AstroPix 3", describes the rules; the step numbers
in the comments are its numbers). It is a separate kernel rather than a mode of
``_apx.decode_hits`` because the two state machines differ in more than the hit size:
AstroPix 3 start bytes are ``0x20..0x3F``, upstream *stops* (instead of crashing) where
it runs out of bytes in the main loop, and the AstroPix 4 kernel's eight-bytes-at-a-time
shortcuts are built around its 8-byte hits.

Arrays in, arrays out, no I/O, no GIL. Every read and write is bounds-checked by hand
(the module is compiled without Cython's bounds checks), so any input bytes are safe.
Resumable state (the carried "extra bytes" of a hit cut at the end of a readout) goes in
and comes back out, so decoding readouts in any grouping gives the same hits. The
pure-Python model in ``apx3_reference.py`` is the parity oracle.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from bindf._kernels._status cimport (
    BYTES_UNVISITED, DECODER_FAILURE, EXTRA_BYTES_INVALID, EXTRA_BYTES_KEPT,
    INCOMPLETE_HIT_DROPPED, ORPHANS_DROPPED, ORPHANS_MATCHED, ORPHANS_UNUSED,
)
from bindf._kernels._columns cimport output_column, reverse_bits_per_byte

cdef enum:
    HIT_SIZE = 5
    IDLE = 0xBC
    PAD = 0xFF
    MAX_ORDER = 65535   # decoding_order is uint16: saturate rather than wrap

cdef inline bint is_start(uint8_t b) noexcept nogil:
    """An AstroPix 3 start byte: top three bits 001 (``0x20..0x3F``), never padding."""
    return b != PAD and (b >> 5) == 1


cdef struct HitSink:
    bint store             # False: hits are only counted
    uint8_t* hits          # (cap, 5) row-major
    uint16_t* hit_order
    uint32_t* hit_readout_id
    uint64_t* hit_timestamp
    uint32_t readout_id    # of the readout being decoded
    uint64_t timestamp
    Py_ssize_t cap
    Py_ssize_t n
    bint overflow


cdef inline void emit(HitSink* sink, const uint8_t* first, Py_ssize_t n_first,
                      const uint8_t* second, Py_ssize_t order) noexcept nogil:
    """Append one hit: ``n_first`` bytes of ``first`` then ``5 - n_first`` of ``second``."""
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
        sink.hit_order[sink.n] = <uint16_t>(order if order < MAX_ORDER else MAX_ORDER)
        sink.hit_readout_id[sink.n] = sink.readout_id
        sink.hit_timestamp[sink.n] = sink.timestamp
    sink.n += 1


cdef inline Py_ssize_t skip_idle(const uint8_t* D, Py_ssize_t c, Py_ssize_t n) noexcept nogil:
    """First position in ``[c, n)`` not holding IDLE, or ``n`` (PAD is not skipped)."""
    while c < n and D[c] == IDLE:
        c += 1
    return c


cdef inline Py_ssize_t skip_idle_pad(const uint8_t* D, Py_ssize_t c, Py_ssize_t n) noexcept nogil:
    """First position in ``[c, n)`` holding neither IDLE nor PAD, or ``n``."""
    while c < n and (D[c] == IDLE or D[c] == PAD):
        c += 1
    return c


cdef inline Py_ssize_t next_after(const uint8_t* D, Py_ssize_t c, Py_ssize_t n) noexcept nogil:
    """Position of the first non-idle byte after the word at ``c`` (or ``n``)."""
    return skip_idle(D, c + HIT_SIZE, n)


cdef inline bint cut_short(const uint8_t* D, Py_ssize_t f, Py_ssize_t n) noexcept nogil:
    """Whether the word whose :func:`next_after` is ``f`` counts as incomplete.

    Upstream's test: the next hit should begin right after a complete word (idle bytes
    aside), so a word followed by anything but a start byte was cut short.
    """
    return f < n and not is_start(D[f])


cdef int decode_one(
    const uint8_t* D,
    Py_ssize_t n,
    uint8_t* carry,
    Py_ssize_t* carry_len,
    HitSink* sink,
    Py_ssize_t* n_hits,
) noexcept nogil:
    """One readout payload ``D[:n]``; returns its status word.

    ``carry[:carry_len]`` holds the previous readout's extra bytes (``carry_len < 0``:
    none); on return it holds this readout's own (or ``carry_len == -1``).
    """
    cdef int status = 0
    cdef Py_ssize_t c, f, k, m, j, width
    cdef Py_ssize_t prev = carry_len[0]
    cdef Py_ssize_t order = 0

    carry_len[0] = -1   # this readout's own extra bytes, if any, replace the carried ones
    n_hits[0] = 0
    while n > 0 and D[n - 1] == PAD:
        n -= 1

    # 1-2. leading idle and padding; nothing else: upstream raises TypeError
    c = skip_idle_pad(D, 0, n)
    if c >= n:
        return DECODER_FAILURE

    # 3. orphans: the tail of a hit cut at the end of the previous readout
    if not is_start(D[c]):
        k = c + 1
        while k < n and not is_start(D[k]):
            k += 1
        if k >= n:  # no start byte anywhere after the orphans: upstream never returns
            return DECODER_FAILURE
        m = k
        while m > c and D[m - 1] == IDLE:
            m -= 1
        if prev < 0:
            status |= ORPHANS_UNUSED
        elif prev + (m - c) == HIT_SIZE:
            emit(sink, carry, prev, D + c, order)
            order += 1
            status |= ORPHANS_MATCHED
        else:
            status |= ORPHANS_DROPPED
        c = k

    # 4. main loop
    while c < n:
        c = skip_idle_pad(D, c, n)                                         # 4.1
        if c >= n:
            break
        if c + HIT_SIZE >= n:  # 4.2, upstream's ">=": a final complete word lands here too
            if is_start(D[c]):
                for j in range(n - c):   # n - c <= HIT_SIZE: fits in carry
                    carry[j] = D[c + j]
                carry_len[0] = n - c
                status |= EXTRA_BYTES_KEPT
            else:
                status |= EXTRA_BYTES_INVALID
            break
        if not is_start(D[c]):                                             # 4.3
            status |= BYTES_UNVISITED
            c += 1
            while c < n and not is_start(D[c]):
                c += 1
            if c >= n:
                break
        # 4.4. The word at c is dropped as incomplete when it holds a start byte at w[j]
        # AND the first non-idle byte after it is not a start byte. The second test only
        # depends on c, so when it fails no j can drop anything: skip the j loop.
        f = next_after(D, c, n)
        if cut_short(D, f, n):
            width = n - c if n - c < HIT_SIZE else HIT_SIZE   # range fixed before the loop
            for j in range(1, width):
                if c + j < n and is_start(D[c + j]) and cut_short(D, f, n):
                    status |= INCOMPLETE_HIT_DROPPED
                    c += j
                    f = next_after(D, c, n)
        if c + HIT_SIZE > n:                                               # 4.5
            status |= BYTES_UNVISITED   # a cut word that is not kept as extra bytes
            break
        emit(sink, D + c, HIT_SIZE, D, order)
        order += 1
        c = f   # past the hit and the idle bytes after it

    n_hits[0] = order
    return status


def decode_hits(
    const uint8_t[::1] buf,
    const int64_t[::1] payload_pos,
    const uint32_t[::1] payload_len,
    const uint32_t[::1] readout_id,
    const uint64_t[::1] timestamp,
    uint8_t[::1] carry,
    Py_ssize_t carry_len,
    bint stitch,
    uint8_t[:, ::1] hits,
    uint16_t[::1] hit_order,
    uint32_t[::1] hit_readout_id,
    uint64_t[::1] hit_timestamp,
    uint8_t[::1] status,
    uint32_t[::1] n_hits,
    bint store=True,
):
    """Decode the AstroPix 3 readout payloads ``buf[payload_pos[i]:payload_pos[i] + payload_len[i]]``.

    With ``stitch`` each readout's extra bytes (a hit cut at its end) are offered to the
    next readout, starting with ``carry[:carry_len]`` (``carry_len = -1``: none) for the
    first one; ``carry`` is updated in place and the returned ``carry_len`` continues the
    stream in the next call. Without ``stitch`` (upstream's table) no readout gets extra
    bytes, and the returned ``carry_len`` is -1.

    Returns ``(n_hits_total, carry_len)``. With ``store`` the 5 raw bytes of each hit go
    to ``hits`` (in readout order, then decoding order), its decoding order to
    ``hit_order`` (saturating at 65535) and its readout's id and timestamp to
    ``hit_readout_id`` and ``hit_timestamp``; without, hits are only counted. ``status``
    and ``n_hits`` (hits per readout) get one entry per readout.

    Capacity: a readout of L bytes yields at most ``L // 5 + 1`` hits. A readout whose
    payload lies outside ``buf``, or hits beyond the output capacity, raise ``ValueError``
    (the caller sized things wrong; no memory is touched out of range).
    """
    cdef Py_ssize_t n_readouts = payload_pos.shape[0]
    cdef Py_ssize_t r, nh = 0
    cdef int64_t start
    cdef Py_ssize_t size = buf.shape[0]
    cdef Py_ssize_t cl = carry_len
    cdef HitSink sink
    cdef bint bad_payload = False
    cdef const uint8_t* base = NULL
    if (payload_len.shape[0] < n_readouts or readout_id.shape[0] < n_readouts
            or timestamp.shape[0] < n_readouts or status.shape[0] < n_readouts
            or n_hits.shape[0] < n_readouts):
        raise ValueError("per-readout arrays are shorter than payload_pos")
    if carry.shape[0] < HIT_SIZE:
        raise ValueError("carry must hold 5 bytes")
    if cl > HIT_SIZE:
        raise ValueError("carry_len must be -1 or 0..5")
    if cl < 0 or not stitch:
        cl = -1
    if size > 0:
        base = &buf[0]
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
            raise ValueError("hits must have 5 columns")
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
    with nogil:
        for r in range(n_readouts):
            start = payload_pos[r]
            if start < 0 or start > size or <int64_t>payload_len[r] > size - start:
                bad_payload = True
                break
            sink.readout_id = readout_id[r]
            sink.timestamp = timestamp[r]
            if not stitch:
                cl = -1
            status[r] = <uint8_t>decode_one(base + start if base != NULL else NULL,
                                            payload_len[r], &carry[0], &cl, &sink, &nh)
            n_hits[r] = <uint32_t>nh
            if sink.overflow:
                break
    if bad_payload:
        raise ValueError(f"payload {r} lies outside the buffer")
    if sink.overflow:
        raise ValueError("hit output arrays are too small for these readouts")
    return sink.n, (cl if stitch else -1)


# -- hit fields ---------------------------------------------------------------------------
#
# Every field of an AstroPix 3 hit lies inside one of its 5 bytes once the bit order of
# each byte is mirrored (the format page, "Fields of a hit"). A block of hits is first
# mirrored and split into 5 byte planes; each column is then a shift and a mask over one
# plane, a loop compilers vectorise. One pass writes each requested column once.

cdef enum:
    FIELD_BLOCK = 4096        # hits per block (5 planes of 4 KiB: stays in the L1 cache)

cdef double CYCLES_PER_US = 200.0   # ToT counts a 200 MHz clock
#: Clock cycles per µs of the ToT counter (``tot_us = tot_dec / CLOCK_CYCLES_PER_US``):
#: the value ``hit_fields`` divides by, for Python code that must agree with it.
CLOCK_CYCLES_PER_US = CYCLES_PER_US

#: MIRRORED[b]: the byte b with its bit order reversed.
cdef uint8_t MIRRORED[256]
cdef int _byte
for _byte in range(256):
    MIRRORED[_byte] = <uint8_t>reverse_bits_per_byte(_byte)


cdef inline void cut_byte_field(const uint8_t* plane, Py_ssize_t m, uint8_t* out,
                                Py_ssize_t first, int shift, int mask) noexcept nogil:
    """``out[first + i] = (plane[i] >> shift) & mask`` (``out`` NULL: not wanted)."""
    cdef Py_ssize_t i
    if out == NULL:
        return
    out += first
    for i in range(m):
        out[i] = (plane[i] >> shift) & mask


def hit_fields(
    const uint8_t[:, ::1] hits,
    uint8_t[::1] chip_id=None,
    uint8_t[::1] payload=None,
    uint8_t[::1] column=None,
    uint8_t[::1] location=None,
    uint8_t[::1] chip_timestamp=None,
    uint8_t[::1] tot_msb=None,
    uint8_t[::1] tot_lsb=None,
    uint16_t[::1] tot_dec=None,
    double[::1] tot_us=None,
):
    """Write the fields of the raw hits ``hits`` (n × 5 bytes) into the given columns.

    Each keyword is an output array of at least n values, or ``None`` for a column not
    wanted. ``tot_dec = (tot_msb << 8) | tot_lsb`` and ``tot_us = tot_dec / 200`` (a
    200 MHz clock). Releases the GIL, so slices of one chunk can be filled from several
    threads.
    """
    cdef Py_ssize_t n = hits.shape[0], i, k, first, m
    if n > 0 and hits.shape[1] != HIT_SIZE:
        raise ValueError("hits must have 5 columns")
    cdef uint8_t* p_chip = output_column(chip_id, n, "chip_id")
    cdef uint8_t* p_payload = output_column(payload, n, "payload")
    cdef uint8_t* p_column = output_column(column, n, "column")
    cdef uint8_t* p_location = output_column(location, n, "location")
    cdef uint8_t* p_chip_ts = output_column(chip_timestamp, n, "chip_timestamp")
    cdef uint8_t* p_msb = output_column(tot_msb, n, "tot_msb")
    cdef uint8_t* p_lsb = output_column(tot_lsb, n, "tot_lsb")
    cdef uint16_t* p_dec = output_column(tot_dec, n, "tot_dec")
    cdef double* p_tot = output_column(tot_us, n, "tot_us")
    if n == 0:
        return
    cdef const uint8_t* h = &hits[0, 0]
    cdef uint8_t planes[HIT_SIZE][FIELD_BLOCK]
    cdef uint16_t tot
    with nogil:
        first = 0
        while first < n:
            m = min(<Py_ssize_t>FIELD_BLOCK, n - first)
            for i in range(m):
                for k in range(HIT_SIZE):
                    planes[k][i] = MIRRORED[h[(first + i) * HIT_SIZE + k]]
            cut_byte_field(planes[0], m, p_chip, first, 3, 0x1F)
            cut_byte_field(planes[0], m, p_payload, first, 0, 0x07)
            cut_byte_field(planes[1], m, p_column, first, 7, 0x01)
            cut_byte_field(planes[1], m, p_location, first, 0, 0x3F)
            cut_byte_field(planes[2], m, p_chip_ts, first, 0, 0xFF)
            cut_byte_field(planes[3], m, p_msb, first, 0, 0x0F)
            cut_byte_field(planes[4], m, p_lsb, first, 0, 0xFF)
            if p_dec != NULL or p_tot != NULL:
                for i in range(m):
                    tot = ((planes[3][i] & 0x0F) << 8) | planes[4][i]
                    if p_dec != NULL:
                        p_dec[first + i] = tot
                    if p_tot != NULL:
                        p_tot[first + i] = tot / CYCLES_PER_US
            first += m
