/* AstroPix 4 hit fields: the compiled loop behind ``_apx.hit_fields``, in C so that it
 * can be built for several x86-64 instruction sets in one module and picked at run time.
 *
 * Layout (docs/formats/apx.md, "Fields of a hit"): the fields are bit ranges, counted from
 * the most significant bit, of the hit's 8 bytes after each byte's bit order is reversed
 * (BINDF_HIT_FIELD_LIST below, the one place in C that says where each field lies).
 *
 * Two ways to cut the fields out, both over blocks of hits that stay in the L1 cache,
 * each column written by a loop of its own (what compilers vectorise):
 *
 * - "words": each hit as one 64-bit word (byte swap, bit reversal), each field a shift
 *   and a mask of it. Fastest where the vector unit narrows 64-bit lanes to bytes in one
 *   instruction (AVX-512): 0.8 ns per hit for all 15 columns on a Zen 5.
 * - "planes": the block's hits transposed into eight byte planes (plane j holds byte j
 *   of every hit, bit-reversed), each field then computed from one to three planes in
 *   lanes of its own width. Without AVX-512 a 64-bit lane becomes a byte only through
 *   several pack steps per column, which made "words" slower with AVX2 (10.9 ns per hit
 *   on a Zen 1) than with the SSE2 baseline (9.1); "planes" takes 5.7 (baseline) and
 *   4.8 (AVX2, whose byte shuffle reverses 32 bytes' bits in a few instructions).
 *
 * Cython cannot put a target attribute on a function, so the loops live here, written
 * once as always-inlined bodies and compiled into one wrapper per instruction set (GCC
 * and Clang on x86-64 Linux; elsewhere only the baseline wrappers exist). ``_apx.pyx``
 * checks the arguments and picks the wrapper; ``apx_reference.py`` is the parity oracle.
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

#if BINDF_APX_FIELDS_DISPATCH
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define BINDF_ALWAYS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define BINDF_ALWAYS_INLINE static __forceinline
#else
#define BINDF_ALWAYS_INLINE static inline
#endif

/* The compiled loops, in the order of preference. WORDS is the "words" loop built for
 * the baseline: never the fastest, it lets every machine's tests check the algorithm
 * that AVX-512 machines run. */
enum { BINDF_ISA_BASELINE = 0, BINDF_ISA_AVX2 = 1, BINDF_ISA_AVX512 = 2, BINDF_ISA_WORDS = 3 };

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

/* The bit fields: X(column, type, first bit, end bit), bits counted from the MSB of the
 * hit's bit-reversed 64 bits. Each is at most 16 bits wide. */
#define BINDF_HIT_FIELD_LIST(X)                                                        \
    X(chip_id, uint8_t, 0, 5) X(payload, uint8_t, 5, 8) X(row, uint8_t, 8, 13)         \
    X(column, uint8_t, 13, 18) X(ts_neg1, uint8_t, 18, 19)                             \
    X(ts_coarse1, uint16_t, 19, 33) X(ts_fine1, uint8_t, 33, 36)                       \
    X(ts_tdc1, uint8_t, 36, 41) X(ts_neg2, uint8_t, 41, 42)                            \
    X(ts_coarse2, uint16_t, 42, 56) X(ts_fine2, uint8_t, 56, 59) X(ts_tdc2, uint8_t, 59, 64)
/* Each edge's Gray-coded clock, (coarse << 3) | fine: the contiguous bits [19, 36) and
 * [42, 59), 17 bits each. */
#define BINDF_STAMP1_BITS 19, 36
#define BINDF_STAMP2_BITS 42, 59

/* Hits per block: 2048 words (16 KiB), or 8 planes of 1024 bytes (8 KiB), stay in the
 * L1 cache while every column is cut. */
#define BINDF_WORD_BLOCK 2048
#define BINDF_PLANE_BLOCK 1024
/* ts_dec2 < ts_dec1: the coarse clock wrapped between the two edges (2**17 cycles). */
#define BINDF_CLOCK_ROLLOVER_BIT 17
/* Timestamp clock: 20 cycles per µs (Python reads it as _apx.CLOCK_CYCLES_PER_US). */
#define BINDF_CLOCK_CYCLES_PER_US 20.0

#define BINDF_AT(column, first) ((column) != NULL ? (column) + (first) : NULL)

/* ts_dec1, ts_dec2 and tot_us of a block from its two Gray-coded clocks, GRAY1(i) and
 * GRAY2(i) (expressions of the loop index i). Branch-free: the clock rollover is added as
 * a 0/1 bit instead of an if, a stamp not wanted goes to scratch, and ToT is a second
 * loop over the two stamps just written; in [0, 2**17), ToT's difference is exact as a
 * signed 32-bit value, whose conversion to double vectorises. */
#define BINDF_DECODE_STAMPS(m, first, out, scratch1, scratch2, GRAY1, GRAY2)               \
    do {                                                                                   \
        uint32_t* dec1_out = (out)->ts_dec1 != NULL ? (out)->ts_dec1 + (first) : scratch1; \
        uint32_t* dec2_out = (out)->ts_dec2 != NULL ? (out)->ts_dec2 + (first) : scratch2; \
        for (ptrdiff_t i = 0; i < (m); i++) {                                              \
            uint32_t dec1 = GRAY1(i), dec2 = GRAY2(i);                                     \
            dec2 += (uint32_t)(dec2 < dec1) << BINDF_CLOCK_ROLLOVER_BIT;                   \
            dec1_out[i] = dec1;                                                            \
            dec2_out[i] = dec2;                                                            \
        }                                                                                  \
        if ((out)->tot_us != NULL) {                                                       \
            double* tot = (out)->tot_us + (first);                                         \
            for (ptrdiff_t i = 0; i < (m); i++)                                            \
                tot[i] = (double)(int32_t)(dec2_out[i] - dec1_out[i])                      \
                         / BINDF_CLOCK_CYCLES_PER_US;                                      \
        }                                                                                  \
    } while (0)

#define BINDF_WANTS_STAMPS(out) \
    ((out)->ts_dec1 != NULL || (out)->ts_dec2 != NULL || (out)->tot_us != NULL)

/* -- "words" ------------------------------------------------------------------------ */

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
BINDF_ALWAYS_INLINE uint32_t bindf_word_bits(uint64_t word, int start, int end) {
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

BINDF_ALWAYS_INLINE void bindf_hit_fields_words(const uint8_t* hits, ptrdiff_t n,
                                                const bindf_hit_columns* out) {
    uint64_t words[BINDF_WORD_BLOCK];
    uint32_t scratch1[BINDF_WORD_BLOCK], scratch2[BINDF_WORD_BLOCK];
    for (ptrdiff_t first = 0; first < n; first += BINDF_WORD_BLOCK) {
        ptrdiff_t m = n - first < BINDF_WORD_BLOCK ? n - first : BINDF_WORD_BLOCK;
        for (ptrdiff_t i = 0; i < m; i++)
            words[i] = bindf_hit_word(hits + (first + i) * 8);
#define BINDF_CUT_WORDS(NAME, TYPE, START, END)                      \
        if (out->NAME != NULL) {                                     \
            TYPE* column = out->NAME + first;                        \
            for (ptrdiff_t i = 0; i < m; i++)                        \
                column[i] = (TYPE)bindf_word_bits(words[i], START, END); \
        }
        BINDF_HIT_FIELD_LIST(BINDF_CUT_WORDS)
#undef BINDF_CUT_WORDS
        if (BINDF_WANTS_STAMPS(out)) {
#define BINDF_GRAY1(i) bindf_gray_to_binary(bindf_word_bits(words[i], BINDF_STAMP1_BITS))
#define BINDF_GRAY2(i) bindf_gray_to_binary(bindf_word_bits(words[i], BINDF_STAMP2_BITS))
            BINDF_DECODE_STAMPS(m, first, out, scratch1, scratch2, BINDF_GRAY1, BINDF_GRAY2);
#undef BINDF_GRAY1
#undef BINDF_GRAY2
        }
    }
}

/* -- "planes" ----------------------------------------------------------------------- */

typedef uint8_t bindf_planes[8][BINDF_PLANE_BLOCK];

/* Bits [start, end) of hit i (at most 16), from the planes that hold them, computed in
 * lanes of type T (uint8_t for fields of up to 8 bits, else uint16_t): each plane's part
 * shifted into place, the bits above the field masked off. The bounds are constants, so
 * the loop over planes unrolls away. (The planes are not const: C before C23 does not
 * convert a pointer to arrays into one to const arrays.) */
#define BINDF_PLANE_BITS(NAME, T)                                                         \
    BINDF_ALWAYS_INLINE T NAME(bindf_planes planes, ptrdiff_t i, int start,               \
                               int end) {                                                 \
        T x = 0;                                                                          \
        for (int j = start / 8; j * 8 < end; j++) {                                       \
            int shift = end - 8 * (j + 1);                                                \
            x |= shift >= 0 ? (T)((T)planes[j][i] << shift) : (T)(planes[j][i] >> -shift); \
        }                                                                                 \
        return (T)(x & (T)((1u << (end - start)) - 1));                                   \
    }
BINDF_PLANE_BITS(bindf_plane_bits8, uint8_t)
BINDF_PLANE_BITS(bindf_plane_bits16, uint16_t)
#undef BINDF_PLANE_BITS

/* A 17-bit Gray code at bits [start, start + 17) decoded in 16-bit lanes (twice as many
 * per vector as 32-bit ones): binary = Gray ^ (Gray >> 1) ^ (Gray >> 2) ^ ..., so the low
 * 16 bits are the decoded low 16 Gray bits, inverted when the top bit is set. */
BINDF_ALWAYS_INLINE uint32_t bindf_plane_gray17(bindf_planes planes, ptrdiff_t i,
                                                int start, int end) {
    uint16_t top = bindf_plane_bits8(planes, i, start, start + 1);
    uint16_t low = bindf_plane_bits16(planes, i, start + 1, end);
    low ^= low >> 1;
    low ^= low >> 2;
    low ^= low >> 4;
    low ^= low >> 8;
    return ((uint32_t)top << 16) | (uint16_t)(low ^ (uint16_t)(0 - top));
}

BINDF_ALWAYS_INLINE uint8_t bindf_reverse_bits8(uint8_t b) {
    b = (uint8_t)(((b >> 1) & 0x55) | ((b & 0x55) << 1));
    b = (uint8_t)(((b >> 2) & 0x33) | ((b & 0x33) << 2));
    return (uint8_t)((b >> 4) | (b << 4));
}

/* The first m hits' bytes into the planes, as they are (byte j of hit i to planes[j][i]). */
BINDF_ALWAYS_INLINE void bindf_transpose_planes(bindf_planes planes, const uint8_t* hits,
                                                ptrdiff_t m) {
    for (ptrdiff_t i = 0; i < m; i++)
        for (int j = 0; j < 8; j++)
            planes[j][i] = hits[i * 8 + j];
}

/* The first m hits' bytes, each bit-reversed, into the planes (portable C). */
BINDF_ALWAYS_INLINE void bindf_fill_planes(bindf_planes planes, const uint8_t* hits,
                                           ptrdiff_t m) {
    bindf_transpose_planes(planes, hits, m);
    for (int j = 0; j < 8; j++)
        for (ptrdiff_t i = 0; i < m; i++)
            planes[j][i] = bindf_reverse_bits8(planes[j][i]);
}

#if BINDF_APX_FIELDS_DISPATCH
/* The same with AVX2: the bit reversal by table lookups of both nibbles of 32 bytes at a
 * time (vpshufb), which compilers do not derive from the portable form. */
__attribute__((target("avx2"))) static inline void bindf_fill_planes_avx2(
    bindf_planes planes, const uint8_t* hits, ptrdiff_t m) {
    bindf_transpose_planes(planes, hits, m);
    const __m256i reversed_nibble = _mm256_setr_epi8(
        0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15,
        0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
    const __m256i low_nibble = _mm256_set1_epi8(0x0F);
    for (int j = 0; j < 8; j++) {
        ptrdiff_t i = 0;
        for (; i + 32 <= m; i += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i*)(planes[j] + i));
            __m256i low = _mm256_shuffle_epi8(reversed_nibble, _mm256_and_si256(v, low_nibble));
            __m256i high = _mm256_shuffle_epi8(
                reversed_nibble, _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibble));
            _mm256_storeu_si256((__m256i*)(planes[j] + i),
                                _mm256_or_si256(_mm256_slli_epi16(low, 4), high));
        }
        for (; i < m; i++)
            planes[j][i] = bindf_reverse_bits8(planes[j][i]);
    }
}
#endif

/* avx2: whether to fill the planes with bindf_fill_planes_avx2 (a constant after
 * inlining; the caller is then compiled for AVX2). */
BINDF_ALWAYS_INLINE void bindf_hit_fields_planes(const uint8_t* hits, ptrdiff_t n,
                                                 const bindf_hit_columns* out, int avx2) {
    bindf_planes planes;
    uint32_t scratch1[BINDF_PLANE_BLOCK], scratch2[BINDF_PLANE_BLOCK];
    (void)avx2;
    for (ptrdiff_t first = 0; first < n; first += BINDF_PLANE_BLOCK) {
        ptrdiff_t m = n - first < BINDF_PLANE_BLOCK ? n - first : BINDF_PLANE_BLOCK;
#if BINDF_APX_FIELDS_DISPATCH
        if (avx2)
            bindf_fill_planes_avx2(planes, hits + first * 8, m);
        else
#endif
            bindf_fill_planes(planes, hits + first * 8, m);
#define BINDF_CUT_PLANES(NAME, TYPE, START, END)                                   \
        if (out->NAME != NULL) {                                                   \
            TYPE* column = out->NAME + first;                                      \
            for (ptrdiff_t i = 0; i < m; i++)                                      \
                column[i] = sizeof(TYPE) == 1 ? bindf_plane_bits8(planes, i, START, END) \
                                              : bindf_plane_bits16(planes, i, START, END); \
        }
        BINDF_HIT_FIELD_LIST(BINDF_CUT_PLANES)
#undef BINDF_CUT_PLANES
        if (BINDF_WANTS_STAMPS(out)) {
#define BINDF_GRAY1(i) bindf_plane_gray17(planes, i, BINDF_STAMP1_BITS)
#define BINDF_GRAY2(i) bindf_plane_gray17(planes, i, BINDF_STAMP2_BITS)
            BINDF_DECODE_STAMPS(m, first, out, scratch1, scratch2, BINDF_GRAY1, BINDF_GRAY2);
#undef BINDF_GRAY1
#undef BINDF_GRAY2
        }
    }
}

/* -- one wrapper per loop: each inlines its body and compiles it for its own ISA ------ */

static void bindf_hit_fields_baseline(const uint8_t* hits, ptrdiff_t n,
                                      const bindf_hit_columns* out) {
    bindf_hit_fields_planes(hits, n, out, 0);
}

static void bindf_hit_fields_words_baseline(const uint8_t* hits, ptrdiff_t n,
                                            const bindf_hit_columns* out) {
    bindf_hit_fields_words(hits, n, out);
}

#if BINDF_APX_FIELDS_DISPATCH
__attribute__((target("avx2")))
static void bindf_hit_fields_avx2(const uint8_t* hits, ptrdiff_t n,
                                  const bindf_hit_columns* out) {
    bindf_hit_fields_planes(hits, n, out, 1);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static void bindf_hit_fields_avx512(const uint8_t* hits, ptrdiff_t n,
                                    const bindf_hit_columns* out) {
    bindf_hit_fields_words(hits, n, out);
}
#endif

/* Whether this build has a wrapper for isa and this CPU (and OS) runs it. */
static int bindf_hit_fields_runs(int isa) {
    if (isa == BINDF_ISA_BASELINE || isa == BINDF_ISA_WORDS)
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
    if (isa == BINDF_ISA_WORDS) {
        bindf_hit_fields_words_baseline(hits, n, out);
        return;
    }
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
    bindf_hit_fields_baseline(hits, n, out);
}

#endif /* BINDF_APX_FIELDS_H */
