# cython: language_level=3
"""Sequential parts of FLIM LABS IT02 decoding (see ``bindf/formats/it02.py``).

Sparse IT02 records have a variable size (``f64 time, u8 mask, one u32 per set bit``), so
where record ``i + 1`` starts depends on every mask before it: that chain is the one truly
sequential step and lives here. Gap filling assigns each bin an index from the time
difference to the previous *kept* bin, which is sequential too.

Every function takes arrays the caller allocated, touches no file and knows nothing of
the header. State that crosses chunk boundaries (the byte position of the next record;
the last bin's time and index) goes in and comes back out, so decoding a file in chunks
gives exactly the result of decoding it whole. All reads are bounds checked by hand
before they happen: these functions must be memory safe on arbitrary bytes.

``bindf/_kernels/it02_reference.py`` is a slow pure-Python twin used by the parity tests.
"""

from libc.math cimport isfinite
from libc.stdint cimport int8_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef enum:
    _STATUS_END = 0
    _STATUS_LIMIT = 1
    _STATUS_BAD_MASK = 2
    _BIN_OK = 0
    _BIN_NOT_FINITE = 1
    _BIN_NOT_AFTER_PREVIOUS = 2
    _BIN_OUT_OF_RANGE = 3
    _MAX_SPARSE_CHANNELS = 8
    _SPARSE_FIXED_BYTES = 9

#: scan_sparse status: stopped because the bytes left are fewer than the next record needs
#: (``pos == len(buf)`` means the buffer ended exactly on a record boundary).
STATUS_END = _STATUS_END
#: scan_sparse status: ``max_rows`` records were framed.
STATUS_LIMIT = _STATUS_LIMIT
#: scan_sparse status: the record at ``pos`` has a mask bit >= n_channels.
STATUS_BAD_MASK = _STATUS_BAD_MASK

#: assign_bins per-record status codes.
BIN_OK = _BIN_OK
BIN_NOT_FINITE = _BIN_NOT_FINITE
BIN_NOT_AFTER_PREVIOUS = _BIN_NOT_AFTER_PREVIOUS
BIN_OUT_OF_RANGE = _BIN_OUT_OF_RANGE

#: Sparse masks are one byte: at most 8 channels.
MAX_SPARSE_CHANNELS = _MAX_SPARSE_CHANNELS
#: Bytes before the counts: f64 time + u8 mask.
SPARSE_FIXED_BYTES = _SPARSE_FIXED_BYTES

# Bin indices stay well inside int64 and inside the range where float64 is exact.
cdef double _MAX_BIN = 4503599627370496.0  # 2**52

cdef uint8_t _POPCOUNT[256]
for _i in range(256):
    _POPCOUNT[_i] = bin(_i).count("1")


cdef inline double _load_f64(const uint8_t* p) noexcept nogil:
    """Little-endian f64 at ``p`` (any alignment, any host byte order)."""
    cdef uint64_t u = (
        (<uint64_t>p[0]) | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
        | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
        | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56)
    )
    cdef double d
    memcpy(&d, &u, 8)
    return d


cdef inline uint32_t _load_u32(const uint8_t* p) noexcept nogil:
    return (
        (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
        | (<uint32_t>p[3] << 24)
    )


cdef inline double _floor(double y) noexcept nogil:
    """``floor(y)``, exactly, without a libm call (x86-64 without SSE4.1 has no inline
    rounding instruction, and ``floor`` was half of :func:`assign_bins`' time)."""
    cdef int64_t i
    if not (y > -_MAX_BIN and y < _MAX_BIN):  # |y| >= 2**52 is integral already (or NaN)
        return y
    i = <int64_t>y  # truncates toward zero
    if <double>i > y:
        i -= 1
    return <double>i


cdef int _check_channels(int n_channels) except -1:
    if n_channels < 0 or n_channels > _MAX_SPARSE_CHANNELS:
        raise ValueError(f"n_channels must be 0..{_MAX_SPARSE_CHANNELS}, not {n_channels}")
    return 0


def scan_sparse(const uint8_t[::1] buf, Py_ssize_t pos, int n_channels, Py_ssize_t max_rows):
    """Follow the record chain from ``pos``; count complete, valid records.

    Returns ``(rows, pos, status)``: the number of complete records framed, the byte
    position just after the last of them (where the next record starts: the resumable
    state), and why it stopped (``STATUS_END``, ``STATUS_LIMIT`` or ``STATUS_BAD_MASK``;
    for the latter ``pos`` is the start of the bad record).
    """
    _check_channels(n_channels)
    cdef Py_ssize_t n = buf.shape[0]
    if pos < 0 or pos > n:
        raise ValueError(f"pos {pos} outside the buffer of {n} bytes")
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, not {max_rows}")
    cdef Py_ssize_t rows = 0
    cdef Py_ssize_t size
    cdef int status = _STATUS_END
    cdef unsigned int limit = 1u << n_channels
    cdef uint8_t m
    with nogil:
        while True:
            if rows >= max_rows:
                status = _STATUS_LIMIT
                break
            if n - pos < _SPARSE_FIXED_BYTES:
                status = _STATUS_END
                break
            m = buf[pos + 8]
            if m >= limit:
                status = _STATUS_BAD_MASK
                break
            size = _SPARSE_FIXED_BYTES + 4 * _POPCOUNT[m]
            if n - pos < size:
                status = _STATUS_END
                break
            pos += size
            rows += 1
    return rows, pos, status


def decode_sparse(
    const uint8_t[::1] buf,
    Py_ssize_t pos,
    int n_channels,
    Py_ssize_t max_rows,
    double[::1] time_out,
    list counts_out,
    const int8_t[::1] slots,
    bint want_time,
):
    """Like :func:`scan_sparse`, and also decode the records into the caller's arrays.

    ``time_out[i]`` gets record ``i``'s time (only if ``want_time``). ``counts_out`` is a
    list of 1-D ``uint32`` arrays (at most 8); for channel position ``k`` (bit ``k`` of
    the mask), ``slots[k]`` is the index of the array that receives its counts, or -1 to
    skip the channel; unset bits write 0. Every output must have room for ``max_rows``
    records. Returns ``(rows, pos, status)`` exactly as :func:`scan_sparse` does for the
    same arguments.
    """
    _check_channels(n_channels)
    cdef Py_ssize_t n = buf.shape[0]
    cdef Py_ssize_t n_out = len(counts_out)
    cdef Py_ssize_t k
    cdef uint32_t* outs[_MAX_SPARSE_CHANNELS]
    cdef uint32_t[::1] column
    if pos < 0 or pos > n:
        raise ValueError(f"pos {pos} outside the buffer of {n} bytes")
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, not {max_rows}")
    if n_out > _MAX_SPARSE_CHANNELS:
        raise ValueError(f"at most {_MAX_SPARSE_CHANNELS} count outputs, not {n_out}")
    if slots.shape[0] < n_channels:
        raise ValueError("slots must have one entry per channel")
    for k in range(n_channels):
        if slots[k] < -1 or slots[k] >= n_out:
            raise ValueError(f"slot {slots[k]} for channel position {k} is out of range")
    if want_time and time_out.shape[0] < max_rows:
        raise ValueError("time_out has room for fewer than max_rows records")
    # Typed views keep the buffers exported (alive, unmoved) for the duration of the call.
    keep = []
    for k in range(n_out):
        column = counts_out[k]
        if column.shape[0] < max_rows:
            raise ValueError(f"counts_out[{k}] has room for fewer than max_rows records")
        keep.append(column)
        outs[k] = &column[0] if column.shape[0] > 0 else NULL

    # Where each output's count lies in a record of mask m: byte offset within the
    # record, or 0 when the mask has no count for it (the value is then 0). Looked up
    # per record instead of walking the mask bit by bit (half the instructions; masks
    # are random, so a branch per bit would be mispredicted half the time).
    # Outputs that no channel names are left as they are; where two channels name one
    # output, the later one's count (or 0) is what it gets, as a bit-by-bit walk gives.
    cdef uint8_t offsets[256 * _MAX_SPARSE_CHANNELS]
    cdef Py_ssize_t used[_MAX_SPARSE_CHANNELS]
    cdef Py_ssize_t n_used = 0
    cdef int bit
    cdef bint named
    cdef unsigned int limit = 1u << n_channels
    cdef unsigned int mask
    cdef uint8_t p
    memset(offsets, 0, sizeof(offsets))
    for mask in range(limit):
        p = _SPARSE_FIXED_BYTES
        for k in range(n_channels):
            if slots[k] >= 0:
                offsets[mask * _MAX_SPARSE_CHANNELS + slots[k]] = p if (mask >> k) & 1u else 0
            p += 4 * ((mask >> k) & 1u)
    for k in range(n_out):
        named = False
        for bit in range(n_channels):
            named = named or slots[bit] == k
        if named:
            used[n_used] = k
            n_used += 1

    cdef Py_ssize_t rows = 0
    cdef Py_ssize_t size
    cdef int status = _STATUS_END
    cdef uint8_t m, at
    cdef const uint8_t* rec
    cdef const uint8_t* where
    with nogil:
        while True:
            if rows >= max_rows:
                status = _STATUS_LIMIT
                break
            if n - pos < _SPARSE_FIXED_BYTES:
                status = _STATUS_END
                break
            m = buf[pos + 8]
            if m >= limit:
                status = _STATUS_BAD_MASK
                break
            size = _SPARSE_FIXED_BYTES + 4 * _POPCOUNT[m]
            if n - pos < size:
                status = _STATUS_END
                break
            rec = &buf[pos]
            if want_time:
                time_out[rows] = _load_f64(rec)
            # Offset 0 (no count) reads the record's first 4 bytes, always inside the
            # record, and masks the value to 0: no branch.
            where = &offsets[m * _MAX_SPARSE_CHANNELS]
            for k in range(n_used):
                at = where[used[k]]
                outs[used[k]][rows] = _load_u32(rec + at) & (0u - (at != 0))
            pos += size
            rows += 1
    return rows, pos, status


def assign_bins(
    const double[::1] times,
    double bin_ns,
    bint have_last,
    double last_t,
    int64_t last_bin,
    int64_t[::1] bins_out,
    uint8_t[::1] status_out,
):
    """Give every record a bin index for gap filling.

    The first bin ever is ``floor(t / bin_ns + 0.5)``; each later record advances the
    index by ``floor((t - t_prev) / bin_ns + 0.5)``, where ``t_prev`` is the time of the
    last record that was kept. That step must be >= 1. Records with a non-finite time, a
    step < 1 or an index beyond 2**52 get a non-zero ``status_out`` and do not move the
    state. Returns ``(n_bad, have_last, last_t, last_bin)``: the resumable state.
    """
    cdef Py_ssize_t n = times.shape[0]
    if bins_out.shape[0] < n or status_out.shape[0] < n:
        raise ValueError("bins_out and status_out must be as long as times")
    if not (isfinite(bin_ns) and bin_ns > 0):
        raise ValueError(f"bin_ns must be a positive finite number, not {bin_ns}")
    cdef Py_ssize_t i
    cdef Py_ssize_t n_bad = 0
    cdef double t, q, b
    # The index is carried as a double (exact below 2**53): an int64 round trip per
    # record would put two conversions on the loop-carried dependency chain.
    cdef double previous_bin = <double>last_bin
    cdef bint kept = False
    with nogil:
        for i in range(n):
            t = times[i]
            if not isfinite(t):
                status_out[i] = _BIN_NOT_FINITE
                n_bad += 1
                continue
            if have_last:
                q = _floor((t - last_t) / bin_ns + 0.5)
                if not (q >= 1.0):
                    status_out[i] = _BIN_NOT_AFTER_PREVIOUS
                    n_bad += 1
                    continue
                b = previous_bin + q
            else:
                b = _floor(t / bin_ns + 0.5)
            if not (b <= _MAX_BIN and b >= -_MAX_BIN):
                status_out[i] = _BIN_OUT_OF_RANGE
                n_bad += 1
                continue
            bins_out[i] = <int64_t>b
            status_out[i] = _BIN_OK
            have_last = True
            kept = True
            last_t = t
            previous_bin = b
    if kept:
        last_bin = <int64_t>previous_bin
    return n_bad, have_last, last_t, last_bin
