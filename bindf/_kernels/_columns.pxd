# cython: language_level=3
"""Helpers shared by the kernels that turn raw hits or frames into output columns
(``hit_fields`` of ``_apx.pyx`` and ``_apx3.pyx``, ``v3_fields`` of ``_astep.pyx``): inline,
so each kernel compiles its own copy."""

from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t


ctypedef fused column_t:
    int8_t
    uint8_t
    uint16_t
    uint32_t
    double


cdef inline column_t* output_column(column_t[::1] array, Py_ssize_t n, str name) except? NULL:
    """The data pointer of an output column of at least ``n`` values; NULL for ``None``."""
    if array is None or n == 0:
        return NULL
    if array.shape[0] < n:
        raise ValueError(f"{name} holds fewer than the {n} values to be written")
    return &array[0]


cdef inline uint64_t reverse_bits_per_byte(uint64_t x) noexcept nogil:
    """Reverse the bit order inside each of the 8 bytes of ``x`` (bit 7 ↔ bit 0)."""
    x = ((x >> 1) & 0x5555555555555555ULL) | ((x & 0x5555555555555555ULL) << 1)
    x = ((x >> 2) & 0x3333333333333333ULL) | ((x & 0x3333333333333333ULL) << 2)
    return ((x >> 4) & 0x0F0F0F0F0F0F0F0FULL) | ((x & 0x0F0F0F0F0F0F0F0FULL) << 4)
