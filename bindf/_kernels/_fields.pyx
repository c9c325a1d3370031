# cython: language_level=3
"""Fields of fixed-size records copied into columns: the inner loop of the readers built
on ``bindf/formats/_fixed.py`` (spectroscopy, SP01, SPF1, every ``FixedRecordFormat``
and the formats declared with one) and of dense IT02's parallel parts.

Why compiled: for streaming ("non-temporal") stores, which numpy does not use. They
write a large column straight to memory instead of first reading each of its cache
lines into the cache (which an ordinary store to memory not in the cache does): a third
less memory traffic for a read whose output does not fit in the cache anyway. Measured
in bindf's reads (same process, best of 9, three rounds, a 2-core AMD Zen 5): a 200 MB
spectroscopy file 33.3-34.4 → 29.9-31.6 ms on one thread and 23.0-23.9 → 20.7-22.4 ms
on two; 8 × 50 MB files on one thread 70.0-72.8 → 61.7-66.7 ms. The same loop with
ordinary stores was no faster than numpy's copies (70.1-74.4 ms). On an Intel Xeon the
same reads were 13-18 % *slower* with them, so the readers use them by default on AMD
CPUs only (:data:`STREAMING_STORES_BY_DEFAULT`). The caller asks for streaming stores
only for large batches: a small batch is read again at once (by polars, by the next
step of a scan) and is better left in the cache. They exist on x86-64 with GCC and
Clang; elsewhere ``stream`` makes no difference.

A field is copied as bytes, whatever its dtype (byte order, subarrays): the column's
dtype is the field's, so the bytes are the values.

:func:`fill_from_descriptor` is the whole read loop of a local file (``pread`` into a
buffer, then the copies), chunk after chunk in one call without the GIL. Why: a loop in
Python takes the GIL back after every read and every copy, and on two threads each of
those is a hand-over that waits for the other thread's wake-up (measured: 8 × 50 MB
spectroscopy files on two threads, each thread off the CPU 15 ms of a 120 ms read,
nearly all of it inside that loop; see :func:`bindf.formats._fixed.fill_records`).
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.string cimport memcpy

import os

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if (defined(__x86_64__) || defined(__amd64__)) && (defined(__GNUC__) || defined(__clang__))
    #include <emmintrin.h>
    #define BINDF_STREAMING_STORES 1
    static inline void bindf_stream64(void* p, uint64_t v) {
        _mm_stream_si64((long long*)p, (long long)v);
    }
    static inline void bindf_stream32(void* p, uint32_t v) { _mm_stream_si32((int*)p, (int)v); }
    static inline void bindf_store_fence(void) { _mm_sfence(); }
    #include <cpuid.h>
    /* 1 on an AMD CPU (or Hygon's, the same cores), from the CPUID vendor string. */
    static int bindf_cpu_is_amd(void) {
        unsigned int eax, ebx, ecx, edx;
        if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return 0;
        return (ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u)   /* AuthenticAMD */
            || (ebx == 0x6f677948u && edx == 0x6e65476eu && ecx == 0x656e6975u);  /* HygonGenuine */
    }
    #else
    #define BINDF_STREAMING_STORES 0
    static inline void bindf_stream64(void* p, uint64_t v) { memcpy(p, &v, 8); }
    static inline void bindf_stream32(void* p, uint32_t v) { memcpy(p, &v, 4); }
    static inline void bindf_store_fence(void) {}
    static int bindf_cpu_is_amd(void) { return 0; }
    #endif

    #include <errno.h>
    #if defined(_WIN32)
    #define BINDF_HAVE_PREAD 0
    static Py_ssize_t bindf_pread_full(int fd, uint8_t* buf, Py_ssize_t n, int64_t at) {
        (void)fd; (void)buf; (void)n; (void)at;
        errno = ENOSYS;
        return -1;
    }
    static int64_t bindf_descriptor_size(int fd) { (void)fd; return -1; }
    #else
    #include <sys/stat.h>
    #include <unistd.h>
    #define BINDF_HAVE_PREAD 1
    /* n bytes from offset at (fewer only at the end of the file), over short reads; the
       bytes read, or -1 with errno set (EINTR included: the caller checks for signals,
       as Python's own reads do, and reads the chunk again). */
    static Py_ssize_t bindf_pread_full(int fd, uint8_t* buf, Py_ssize_t n, int64_t at) {
        Py_ssize_t total = 0;
        while (total < n) {
            ssize_t got = pread(fd, buf + total, (size_t)(n - total), (off_t)(at + total));
            if (got < 0) {
                return -1;
            }
            if (got == 0) break;
            total += got;
        }
        return total;
    }
    /* The file's size now, or -1 if fstat fails. */
    static int64_t bindf_descriptor_size(int fd) {
        struct stat st;
        return fstat(fd, &st) == 0 ? (int64_t)st.st_size : -1;
    }
    #endif
    #if defined(_WIN32)
    static int bindf_read_file(const char* path, uint8_t* buf, Py_ssize_t n,
                               Py_ssize_t* got, int64_t* size) {
        (void)path; (void)buf; (void)n; (void)got; (void)size;
        errno = ENOSYS;
        return -1;
    }
    #else
    #include <fcntl.h>
    /* Open path, read up to n bytes into buf (over short reads; fewer only where the
       file ends), take the file's size after the read (-1 if fstat fails) and close it:
       0, or -1 with errno set by the step that failed (EINTR included: the caller checks
       for signals and calls again). The descriptor never outlives the call. */
    static int bindf_read_file(const char* path, uint8_t* buf, Py_ssize_t n,
                               Py_ssize_t* got, int64_t* size) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return -1;
        Py_ssize_t total = 0;
        while (total < n) {
            ssize_t r = read(fd, buf + total, (size_t)(n - total));
            if (r < 0) {
                int error = errno;
                close(fd);
                errno = error;
                return -1;
            }
            if (r == 0) break;
            total += r;
        }
        *size = bindf_descriptor_size(fd);
        *got = total;
        close(fd);
        return 0;
    }
    #endif
    """
    int BINDF_HAVE_PREAD
    Py_ssize_t bindf_pread_full(int fd, uint8_t* buf, Py_ssize_t n, int64_t at) noexcept nogil
    int64_t bindf_descriptor_size(int fd) noexcept nogil
    int bindf_read_file(const char* path, uint8_t* buf, Py_ssize_t n, Py_ssize_t* got,
                        int64_t* size) noexcept nogil
    int BINDF_STREAMING_STORES
    void bindf_stream64(void* p, uint64_t v) noexcept nogil
    void bindf_stream32(void* p, uint32_t v) noexcept nogil
    void bindf_store_fence() noexcept nogil
    int bindf_cpu_is_amd() noexcept nogil

#: Whether ``stream=True`` uses streaming stores on this build (x86-64, GCC or Clang).
STREAMING_STORES = bool(BINDF_STREAMING_STORES)
#: Whether streaming stores are the readers' default on this CPU: on AMD's. Measured in
#: bindf's fixed-record reads, best of 10–12 in alternating rounds: on an AMD Zen 5
#: they made a 200 MB spectroscopy file 8–12 % faster (see the module docstring); on an
#: Intel Xeon (2.8 GHz, 48 MiB of L3) 13–18 % slower (the same file 55.8 against
#: 68.3 ms on one thread, 39.2 against 45.1 on two; 200 MB of dense IT02 76.0 against
#: 90.1 and 43.1 against 52.4; 8 x 50 MB files 110.1 against 127.2 and 62.8 against
#: 73.8). ``BINDF_STREAMING_STORES`` overrides it (see bindf.formats._fixed).
STREAMING_STORES_BY_DEFAULT = STREAMING_STORES and bool(bindf_cpu_is_amd())
#: Whether :func:`fill_from_descriptor` and :func:`read_local_file` can read on this
#: platform (POSIX: ``pread``, ``open``).
HAVE_PREAD = bool(BINDF_HAVE_PREAD)


cdef inline uint16_t load16(const uint8_t* p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


ctypedef fused word_t:
    uint32_t
    uint64_t


cdef inline void copy_words(const uint8_t* src, Py_ssize_t n, Py_ssize_t record_size,
                            uint8_t* dst, bint stream, word_t width) noexcept nogil:
    """:func:`copy_field` for fields of 4 or 8 bytes, ``sizeof(word_t)`` (``width``
    only selects the type): one load and one store per field, a streaming one where
    ``dst`` is aligned to it. The size is a constant in each version, so each copy
    compiles to a single move instead of a call to ``memcpy``."""
    cdef Py_ssize_t i
    cdef word_t value
    if stream and (<size_t>dst) % sizeof(word_t) == 0:
        for i in range(n):
            memcpy(&value, src + i * record_size, sizeof(word_t))
            if word_t is uint64_t:
                bindf_stream64(dst + sizeof(word_t) * i, value)
            else:
                bindf_stream32(dst + sizeof(word_t) * i, value)
    else:
        for i in range(n):
            memcpy(dst + sizeof(word_t) * i, src + i * record_size, sizeof(word_t))


cdef void copy_field(const uint8_t* src, Py_ssize_t n, Py_ssize_t record_size,
                     Py_ssize_t size, uint8_t* dst, bint stream) noexcept nogil:
    """``dst[i*size:(i+1)*size] = src[i*record_size:...+size]`` for ``i < n``."""
    cdef Py_ssize_t i = 0, j
    cdef uint64_t word
    if size == 8:
        copy_words(src, n, record_size, dst, stream, <uint64_t>0)
    elif size == 4:
        copy_words(src, n, record_size, dst, stream, <uint32_t>0)
    elif size == 1:
        if stream:
            # single bytes up to an 8-byte boundary, then 8 values per 8-byte store
            while i < n and (<size_t>(dst + i)) % 8 != 0:
                dst[i] = src[i * record_size]
                i += 1
            while i + 8 <= n:
                word = 0
                for j in range(8):  # little- or big-endian: byte j of the word in memory
                    (<uint8_t*>&word)[j] = src[(i + j) * record_size]
                bindf_stream64(dst + i, word)
                i += 8
        while i < n:
            dst[i] = src[i * record_size]
            i += 1
    elif size == 2:
        if stream and (<size_t>dst) % 2 == 0:
            while i < n and (<size_t>(dst + 2 * i)) % 8 != 0:
                memcpy(dst + 2 * i, src + i * record_size, 2)
                i += 1
            while i + 4 <= n:
                for j in range(4):
                    (<uint16_t*>&word)[j] = load16(src + (i + j) * record_size)
                bindf_stream64(dst + 2 * i, word)
                i += 4
        while i < n:
            memcpy(dst + 2 * i, src + i * record_size, 2)
            i += 1
    else:
        for i in range(n):
            memcpy(dst + size * i, src + i * record_size, size)


cdef check_fields(Py_ssize_t n, Py_ssize_t record_size, const int64_t[::1] offsets,
                  const int64_t[::1] sizes, list columns):
    """Raise ``ValueError`` unless every field lies inside the record and every column
    holds ``n`` values of its field."""
    cdef Py_ssize_t k, fields = offsets.shape[0]
    cdef uint8_t[::1] column
    if n < 0 or record_size <= 0 or sizes.shape[0] != fields or len(columns) != fields:
        raise ValueError("copy_fields: inconsistent arguments")
    if n == 0:
        return
    for k in range(fields):
        if (offsets[k] < 0 or offsets[k] >= record_size or sizes[k] <= 0
                or sizes[k] > record_size - offsets[k]):
            raise ValueError(f"copy_fields: field {k} lies outside the record")
        column = columns[k]
        # (divisions, not products: no n can overflow a check into passing)
        if n > column.shape[0] // sizes[k]:
            raise ValueError(f"copy_fields: column {k} holds fewer than n values")


def copy_fields(const uint8_t[::1] records, Py_ssize_t n, Py_ssize_t record_size,
                const int64_t[::1] offsets, const int64_t[::1] sizes, list columns,
                bint stream=False):
    """Copy field ``k`` (``sizes[k]`` bytes at ``offsets[k]`` of each record) of the first
    ``n`` records of ``records`` into ``columns[k]`` (contiguous bytes: a column viewed as
    ``uint8``), with streaming stores if ``stream``. Releases the GIL; raises
    ``ValueError`` (touching nothing) if any array is too small for what it is asked."""
    cdef Py_ssize_t k, fields = offsets.shape[0]
    cdef uint8_t[::1] column
    check_fields(n, record_size, offsets, sizes, columns)
    if n == 0:
        return
    if n > records.shape[0] // record_size:
        raise ValueError("copy_fields: fewer record bytes than n records")
    for k in range(fields):
        column = columns[k]
        with nogil:
            copy_field(&records[0] + offsets[k], n, record_size, sizes[k], &column[0], stream)
    if stream:
        with nogil:
            bindf_store_fence()  # streaming stores are weakly ordered: done before return


def fill_from_descriptor(int fd, int64_t position, Py_ssize_t n, Py_ssize_t record_size,
                         uint8_t[::1] buffer, const int64_t[::1] offsets,
                         const int64_t[::1] sizes, list columns, bint stream=False):
    """Read up to ``n`` records from the open file ``fd`` at byte ``position`` (``pread``:
    the descriptor's own position does not move) through ``buffer``, a whole number of
    records at a time, and copy their fields into ``columns`` as :func:`copy_fields`
    does; return the records read, fewer than ``n`` only where the file ends.

    All of it without the GIL. As :func:`bindf._source.read_into` does, the file's size
    is taken again after each read and bytes beyond it are not counted (a read racing a
    truncation can be handed zeros for the range being cut). Raises ``OSError`` for a
    failed read (the records before it are in ``columns``), ``ValueError`` (touching
    nothing) for arrays too small, and ``OSError(ENOSYS)`` where the platform has no
    ``pread`` (:data:`HAVE_PREAD`)."""
    cdef Py_ssize_t k, fields = offsets.shape[0]
    cdef Py_ssize_t filled = 0, want, got, chunk
    cdef int64_t start, size
    cdef int error = 0
    cdef uint8_t[::1] column
    cdef uint8_t** targets
    check_fields(n, record_size, offsets, sizes, columns)
    if position < 0:
        raise ValueError("fill_from_descriptor: negative position")
    chunk = buffer.shape[0] // record_size
    if n == 0:
        return 0
    if chunk == 0:
        raise ValueError("fill_from_descriptor: the buffer holds no whole record")
    targets = <uint8_t**>malloc(max(fields, 1) * sizeof(uint8_t*))
    if targets == NULL:
        raise MemoryError()
    try:
        for k in range(fields):
            column = columns[k]  # the list keeps each column's memory alive
            targets[k] = &column[0]
        with nogil:
            while filled < n:
                want = min(chunk, n - filled)
                start = position + <int64_t>filled * record_size
                got = bindf_pread_full(fd, &buffer[0], want * record_size, start)
                if got < 0:
                    error = errno
                    if error == EINTR:  # a signal: its Python handler may raise (Ctrl-C)
                        error = 0
                        with gil:
                            PyErr_CheckSignals()
                        continue
                    break
                size = bindf_descriptor_size(fd)
                if 0 <= size < start + got:  # cut while it was read
                    got = max(size - start, 0)
                got //= record_size
                for k in range(fields):
                    copy_field(&buffer[0] + offsets[k], got, record_size, sizes[k],
                               targets[k] + filled * sizes[k], stream)
                filled += got
                if got < want:
                    break
            if stream:
                bindf_store_fence()
    finally:
        free(targets)
    if error:
        raise OSError(error, os.strerror(error))
    return filled


def read_local_file(str path, Py_ssize_t size):
    """The first ``size`` bytes of the local file ``path`` (fewer where it ends): open,
    read, ``fstat``, close, in one call that holds no GIL for the system calls.

    Why compiled: a campaign's thousands of small runs are each read whole (see
    :meth:`bindf._source.Source.held`), and in Python the file object, its calls and
    the size check cost as much again as the system calls themselves (~7.5 µs a 10 KB
    file against ~5 for the calls alone). As :func:`fill_from_descriptor` does, bytes
    beyond the file's size after the read are left out (a read racing a truncation can
    be handed zeros for the range being cut).

    Raises what ``open()`` and ``read()`` raise, with the path (``FileNotFoundError``,
    ``IsADirectoryError``, ``ValueError`` for a path with a NUL byte …), and
    ``OSError(ENOSYS)`` where the platform has no POSIX ``open`` (:data:`HAVE_PREAD`).
    A signal during the calls runs its Python handler (Ctrl-C raises there) and the file
    is read again."""
    cdef bytes encoded = os.fsencode(path)
    cdef const char* c_path = encoded
    cdef bytes data
    cdef Py_ssize_t got = 0
    cdef int64_t now = -1
    cdef int rc, error = 0
    cdef uint8_t* out
    if size < 0:
        raise ValueError("read_local_file: negative size")
    if b"\0" in encoded:
        raise ValueError("embedded null byte")
    data = PyBytes_FromStringAndSize(NULL, size)
    out = <uint8_t*>PyBytes_AS_STRING(data)
    while True:
        with nogil:  # (no one else holds ``data`` yet: written without the GIL)
            rc = bindf_read_file(c_path, out, size, &got, &now)
            if rc != 0:
                error = errno
        if rc == 0:
            break
        if error == EINTR:
            PyErr_CheckSignals()
            continue
        raise OSError(error, os.strerror(error), path)
    if 0 <= now < got:  # cut while it was read
        got = now
    return data if got == size else data[:got]
