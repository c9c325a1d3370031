/* AstroPix 4: the inner loop of ``_apx.decode_clean``, the fast path of ``decode_hits``
 * for clean readouts (see decode_clean's docstring in _apx.pyx for what "clean" means and
 * why the result equals decode_one's).
 *
 * Why C: the loop's point is to have no branch that depends on the data except the rare
 * way out. Moving on to the next readout is a selection, and the end-of-payload test
 * is a mask; written in Cython, the compiler turned both into branches (the CPU
 * mispredicts them once per readout when readouts hold 1 to 5 hits). Here every step
 * is written as arithmetic on the values, and the one exit is marked unlikely.
 */
#ifndef BINDF_APX_CLEAN_H
#define BINDF_APX_CLEAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BINDF_APX_IDLE 0xBC
#define BINDF_APX_MAX_ORDER 255

/* BINDF_CTZ64(x): the index of x's lowest set bit (x != 0); _apx.pyx uses it too. */
#if defined(__GNUC__)
#define BINDF_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* x's value is unknown to the optimiser from here on (it stays data, not control flow) */
#define BINDF_OPAQUE(x) __asm__("" : "+r"(x))
#define BINDF_CTZ64(x) __builtin_ctzll(x)
#elif defined(_MSC_VER) && defined(_M_X64)
#include <intrin.h>
#define BINDF_UNLIKELY(x) (x)
#define BINDF_OPAQUE(x) ((void)0)
static __inline int BINDF_CTZ64(unsigned __int64 x) {
    unsigned long i;
    _BitScanForward64(&i, x);
    return (int)i;
}
#else
#define BINDF_UNLIKELY(x) (x)
#define BINDF_OPAQUE(x) ((void)0)
static int BINDF_CTZ64(unsigned long long x) {
    int n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
}
#endif

/* Eight bytes from p, the byte at p in the low bits (a little-endian load). */
static inline uint64_t bindf_load_le64(const uint8_t* p) {
    uint64_t x;
    memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}

/* A start byte begins a hit: 0xE0..0xFE (0xFF is padding). */
static inline int bindf_is_start_byte(uint8_t b) { return (uint8_t)(b - 0xE0) < 0x1F; }

/* Where the stream of hits stopped (see bindf_clean_stream). */
typedef struct {
    ptrdiff_t readout; /* index (into the window) of the readout being decoded */
    ptrdiff_t hits;    /* hits written (in all), including the readout's */
    ptrdiff_t taken;   /* hits of that readout already written */
    int finished;      /* that readout ended cleanly (else it failed a check part-way) */
} bindf_clean_stop;

/* Decode the hits of the readouts of a window, hit after hit.
 *
 * B[:size] is the buffer; readout i of the window has its first hit at first[i] and its
 * payload ends at ends[i] (both checked by the caller: a start byte, a whole hit and one
 * byte more before the end, the last byte not padding); first[count] is -1. Hits are
 * written from slot n on (8 raw bytes, decoding order, readout id and timestamp); the
 * caller made room for them. n_hits[i] gets readout i's count.
 *
 * Stops after the last readout of the window, or at the first hit after which the next
 * byte that is not idle is neither the end of the payload nor a start byte with a whole
 * hit and one byte more after it (then the readout is not clean; the caller takes its
 * hits back and decodes it the exact way). */
static bindf_clean_stop bindf_clean_stream(
    const uint8_t* B, ptrdiff_t size, const ptrdiff_t* first, const ptrdiff_t* ends,
    const uint32_t* readout_id, const uint64_t* timestamp, uint8_t* hits, uint8_t* order,
    uint32_t* hit_readout_id, uint64_t* hit_timestamp, ptrdiff_t n, uint32_t* n_hits) {
    ptrdiff_t i = 0, c = first[0], end = ends[0], k = 0;
    for (;;) {
        memcpy(hits + n * 8, B + c, 8);
        order[n] = (uint8_t)(k < BINDF_APX_MAX_ORDER ? k : BINDF_APX_MAX_ORDER);
        hit_readout_id[n] = readout_id[i];
        hit_timestamp[n] = timestamp[i];
        n++;
        k++;
        n_hits[i] = (uint32_t)k;
        /* f: the first byte after the hit that is not idle, or a position at or past
         * the payload end. In the word of the next 8 bytes XORed with idle bytes, the
         * lowest set bit lies in the first byte that is not idle (little-endian load),
         * so a trailing-zero count finds it. Bytes past the payload end may be looked
         * at: whatever they are, f >= end then says that the readout ended, which is
         * all that is asked of them (the load stays inside the buffer). */
        ptrdiff_t p = c + 8; /* < end */
        ptrdiff_t f;
        if (BINDF_UNLIKELY(p + 8 > size)) { /* the buffer ends within 8 bytes */
            f = p;
            while (f < end && B[f] == BINDF_APX_IDLE)
                f++;
        } else {
            uint64_t x = bindf_load_le64(B + p) ^ 0xBCBCBCBCBCBCBCBCULL;
            if (BINDF_UNLIKELY(x == 0)) { /* eight idle bytes or more */
                f = p + 8;
                while (f < end && B[f] == BINDF_APX_IDLE)
                    f++;
            } else {
                f = p + (ptrdiff_t)((uint64_t)BINDF_CTZ64(x) >> 3); /* < p + 8 <= size */
            }
        }
        /* done: 1 when the readout ended. It goes through the empty asm so that the
         * compiler cannot see it is a comparison and branch on it. B[f - done] lies in
         * the buffer either way (f <= size, and f < end <= size unless done). */
        ptrdiff_t done = f >= end;
        BINDF_OPAQUE(done);
        int more_ok = (f + 8 < end) & bindf_is_start_byte(B[f - done]);
        ptrdiff_t next = first[i + 1];
        ptrdiff_t leave = (done & (ptrdiff_t)((uint64_t)next >> 63)) | ((done ^ 1) & (more_ok ^ 1));
        if (BINDF_UNLIKELY(leave)) {
            bindf_clean_stop result;
            result.readout = i;
            result.hits = n;
            result.taken = k;
            result.finished = (int)done;
            return result;
        }
        c = done ? next : f;
        i += done;
        k &= done - 1; /* 0 when the readout ended */
        end = ends[i];
    }
}

#endif /* BINDF_APX_CLEAN_H */
