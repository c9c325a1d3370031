/* AstroPix 4 hit fields: the compiled loop behind ``_apx.hit_fields``, in C so that it
 * can be built for several x86-64 instruction sets in one module and picked at run time.
 *
 * Why C: the loop is plain shifts and masks over blocks of hits, which compilers turn
 * into SIMD code. The x86-64 baseline (SSE2) has two 64-bit lanes and no instruction that
 * narrows 64-bit values to bytes; AVX-512 has eight lanes and does (measured on a Zen 5:
 * 3.7 ns per hit with SSE2, 2.4 with AVX2, 0.7 with AVX-512, all 15 columns). Cython
 * cannot put a target attribute on a function, so the loop lives here, written once as an
 * always-inlined body and compiled into one wrapper per instruction set (GCC and Clang on
 * x86-64 Linux; elsewhere only the baseline wrapper exists). ``_apx.pyx`` checks the
 * arguments and picks the wrapper; ``apx_reference.py`` is the parity oracle.
 *
 * Layout (docs/formats/apx.md, "Fields of a hit"): the fields are bit ranges, counted from
 * the most significant bit, of the hit's 8 bytes after each byte's bit order is reversed.
 */
#ifndef BINDF_APX_FIELDS_H
#define BINDF_APX_FIELDS_H

#include <stddef.h>
#include <stdint.h>

/* Builds for AVX2 and AVX-512 too: GCC and Clang on x86-64 Linux, whose runtime support
 * (__builtin_cpu_supports) is certain there. -DBINDF_APX_FIELDS_DISPATCH=0: baseline only. */
#ifndef BINDF_APX_FIELDS_DISPATCH
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define BINDF_APX_FIELDS_DISPATCH 1
#else
#define BINDF_APX_FIELDS_DISPATCH 0
#endif
#endif

#if defined(__GNUC__)
#define BINDF_ALWAYS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define BINDF_ALWAYS_INLINE static __forceinline
#else
#define BINDF_ALWAYS_INLINE static inline
#endif

/* Instruction sets, in the order of preference. */
enum { BINDF_ISA_BASELINE = 0, BINDF_ISA_AVX2 = 1, BINDF_ISA_AVX512 = 2 };

/* Output columns of at least n values each; NULL: not wanted. */
typedef struct {
    uint8_t *chip_id, *payload, *row, *column, *ts_neg1;
    uint16_t *ts_coarse1;
    uint8_t *ts_fine1, *ts_tdc1, *ts_neg2;
    uint16_t *ts_coarse2;
    uint8_t *ts_fine2, *ts_tdc2;
    uint32_t *ts_dec1, *ts_dec2;
    double *tot_us;
} bindf_hit_columns;

/* Hits per block: 2048 words (16 KiB) stay in the L1 cache while every column is cut. */
#define BINDF_FIELD_BLOCK 2048
/* ts_dec2 < ts_dec1: the coarse clock wrapped between the two edges (2**17 cycles). */
#define BINDF_CLOCK_ROLLOVER_BIT 17
#define BINDF_CLOCK_CYCLES_PER_US 20.0

/* The hit's 64 bits, MSB first: byte 0's reversed bits are bits 63..56. */
BINDF_ALWAYS_INLINE uint64_t bindf_hit_word(const uint8_t* h) {
    /* written out so that compilers see one big-endian load (a byte swap) */
    uint64_t x = ((uint64_t)h[0] << 56) | ((uint64_t)h[1] << 48) | ((uint64_t)h[2] << 40)
               | ((uint64_t)h[3] << 32) | ((uint64_t)h[4] << 24) | ((uint64_t)h[5] << 16)
               | ((uint64_t)h[6] << 8) | (uint64_t)h[7];
    x = ((x >> 1) & 0x5555555555555555ULL) | ((x & 0x5555555555555555ULL) << 1);
    x = ((x >> 2) & 0x3333333333333333ULL) | ((x & 0x3333333333333333ULL) << 2);
    return ((x >> 4) & 0x0F0F0F0F0F0F0F0FULL) | ((x & 0x0F0F0F0F0F0F0F0FULL) << 4);
}

/* Bits [start, end) of word, counted from the most significant bit. */
BINDF_ALWAYS_INLINE uint32_t bindf_bits(uint64_t word, int start, int end) {
    return (uint32_t)((word >> (64 - end)) & ((1ULL << (end - start)) - 1));
}

BINDF_ALWAYS_INLINE uint32_t bindf_gray_to_binary(uint32_t g) {
    g ^= g >> 1;
    g ^= g >> 2;
    g ^= g >> 4;
    g ^= g >> 8;
    g ^= g >> 16;
    return g;
}

/* One column of a block: a loop per column over the block's words (rather than every
 * column per hit) is what compilers vectorise. Two copies, for the two column widths. */
#define BINDF_CUT_FIELD(NAME, TYPE)                                                         \
    BINDF_ALWAYS_INLINE void NAME(const uint64_t* words, ptrdiff_t m, TYPE* out, int start, \
                                  int end) {                                                \
        if (out == NULL)                                                                    \
            return;                                                                         \
        for (ptrdiff_t i = 0; i < m; i++)                                                   \
            out[i] = (TYPE)bindf_bits(words[i], start, end);                                \
    }
BINDF_CUT_FIELD(bindf_cut_u8, uint8_t)
BINDF_CUT_FIELD(bindf_cut_u16, uint16_t)
#undef BINDF_CUT_FIELD

/* ts_dec1, ts_dec2 and tot_us of a block (each may be NULL). Branch-free: the clock
 * rollover is added as a 0/1 bit instead of an if, a stamp not wanted goes to scratch,
 * and ToT is a second loop over the two stamps just written. */
BINDF_ALWAYS_INLINE void bindf_decode_timestamps(const uint64_t* words, ptrdiff_t m,
                                                 uint32_t* dec1_out, uint32_t* dec2_out,
                                                 double* tot_out, uint32_t* scratch1,
                                                 uint32_t* scratch2) {
    if (dec1_out == NULL)
        dec1_out = scratch1;
    if (dec2_out == NULL)
        dec2_out = scratch2;
    for (ptrdiff_t i = 0; i < m; i++) {
        /* (coarse << 3) | fine is the contiguous bit range [19, 36) (resp. [42, 59)) */
        uint32_t dec1 = bindf_gray_to_binary(bindf_bits(words[i], 19, 36));
        uint32_t dec2 = bindf_gray_to_binary(bindf_bits(words[i], 42, 59));
        dec2 += (uint32_t)(dec2 < dec1) << BINDF_CLOCK_ROLLOVER_BIT;
        dec1_out[i] = dec1;
        dec2_out[i] = dec2;
    }
    if (tot_out != NULL) {
        for (ptrdiff_t i = 0; i < m; i++) /* in [0, 2**17): exact as signed, which vectorises */
            tot_out[i] = (double)(int32_t)(dec2_out[i] - dec1_out[i]) / BINDF_CLOCK_CYCLES_PER_US;
    }
}

#define BINDF_AT(column, first) ((column) != NULL ? (column) + (first) : NULL)

/* The whole job: n raw hits (n x 8 bytes) into the columns of out. */
BINDF_ALWAYS_INLINE void bindf_hit_fields_body(const uint8_t* hits, ptrdiff_t n,
                                               const bindf_hit_columns* out) {
    uint64_t words[BINDF_FIELD_BLOCK];
    uint32_t scratch1[BINDF_FIELD_BLOCK], scratch2[BINDF_FIELD_BLOCK];
    int want_dec = out->ts_dec1 != NULL || out->ts_dec2 != NULL || out->tot_us != NULL;
    for (ptrdiff_t first = 0; first < n; first += BINDF_FIELD_BLOCK) {
        ptrdiff_t m = n - first < BINDF_FIELD_BLOCK ? n - first : BINDF_FIELD_BLOCK;
        for (ptrdiff_t i = 0; i < m; i++)
            words[i] = bindf_hit_word(hits + (first + i) * 8);
        bindf_cut_u8(words, m, BINDF_AT(out->chip_id, first), 0, 5);
        bindf_cut_u8(words, m, BINDF_AT(out->payload, first), 5, 8);
        bindf_cut_u8(words, m, BINDF_AT(out->row, first), 8, 13);
        bindf_cut_u8(words, m, BINDF_AT(out->column, first), 13, 18);
        bindf_cut_u8(words, m, BINDF_AT(out->ts_neg1, first), 18, 19);
        bindf_cut_u16(words, m, BINDF_AT(out->ts_coarse1, first), 19, 33);
        bindf_cut_u8(words, m, BINDF_AT(out->ts_fine1, first), 33, 36);
        bindf_cut_u8(words, m, BINDF_AT(out->ts_tdc1, first), 36, 41);
        bindf_cut_u8(words, m, BINDF_AT(out->ts_neg2, first), 41, 42);
        bindf_cut_u16(words, m, BINDF_AT(out->ts_coarse2, first), 42, 56);
        bindf_cut_u8(words, m, BINDF_AT(out->ts_fine2, first), 56, 59);
        bindf_cut_u8(words, m, BINDF_AT(out->ts_tdc2, first), 59, 64);
        if (want_dec)
            bindf_decode_timestamps(words, m, BINDF_AT(out->ts_dec1, first),
                                    BINDF_AT(out->ts_dec2, first),
                                    BINDF_AT(out->tot_us, first), scratch1, scratch2);
    }
}

/* One wrapper per instruction set: each inlines the body and compiles it for its own. */
static void bindf_hit_fields_baseline(const uint8_t* hits, ptrdiff_t n,
                                      const bindf_hit_columns* out) {
    bindf_hit_fields_body(hits, n, out);
}

#if BINDF_APX_FIELDS_DISPATCH
__attribute__((target("avx2")))
static void bindf_hit_fields_avx2(const uint8_t* hits, ptrdiff_t n,
                                  const bindf_hit_columns* out) {
    bindf_hit_fields_body(hits, n, out);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static void bindf_hit_fields_avx512(const uint8_t* hits, ptrdiff_t n,
                                    const bindf_hit_columns* out) {
    bindf_hit_fields_body(hits, n, out);
}
#endif

/* Whether this build has a wrapper for isa and this CPU (and OS) runs it. */
static int bindf_hit_fields_runs(int isa) {
    if (isa == BINDF_ISA_BASELINE)
        return 1;
#if BINDF_APX_FIELDS_DISPATCH
    __builtin_cpu_init();
    if (isa == BINDF_ISA_AVX2)
        return __builtin_cpu_supports("avx2");
    if (isa == BINDF_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

/* Run the wrapper for isa, which must be one bindf_hit_fields_runs() accepted. */
static void bindf_hit_fields(int isa, const uint8_t* hits, ptrdiff_t n,
                             const bindf_hit_columns* out) {
#if BINDF_APX_FIELDS_DISPATCH
    if (isa == BINDF_ISA_AVX512) {
        bindf_hit_fields_avx512(hits, n, out);
        return;
    }
    if (isa == BINDF_ISA_AVX2) {
        bindf_hit_fields_avx2(hits, n, out);
        return;
    }
#endif
    (void)isa;
    bindf_hit_fields_baseline(hits, n, out);
}

#endif /* BINDF_APX_FIELDS_H */
