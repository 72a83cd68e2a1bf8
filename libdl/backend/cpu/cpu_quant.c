/* cpu_quant.c -- fast quantize / requantize / statistics / stochastic-rounding bits for the
 * CPU backend, bit-identical to the references in dlu/numerics.h.
 *
 * What it is: the tensor helpers of numerics.h reorganised for speed, not reinterpreted.
 * Elements go in blocks of CQ_B (the last block padded with zeros, whose statistics are
 * taken back out). Per block:
 *   1. stochastic mode: the block's random words from a Philox-4x32-10 that runs 16
 *      counters side by side (one counter serves two elements, as in dlu_sr_bits64);
 *   2. one straight-line loop over the block computes each element's result, its flags
 *      and its histogram bin with selects instead of branches, so the compiler vectorises
 *      it (64-bit lanes);
 *   3. a scalar loop adds the bins into four interleaved histograms (a single table would
 *      make consecutive elements of the same bin wait for each other's store).
 * The loops are compiled three times, for AVX-512 (F, DQ, BW, VL, CD), AVX2 and the
 * default target, by always_inline bodies called from functions with a target attribute;
 * the best one the CPU (and OS) supports is picked at run time with
 * __builtin_cpu_supports. There is no global -m flag, so the library runs on any x86-64
 * and builds elsewhere with the portable path only. Philox uses intrinsics on x86
 * (vpmuludq: 32x32->64 multiplies on the even dwords of 64-bit lanes).
 *
 * Why the results are the references' (the details the reference defines):
 *   quantize  |x| = m * 2^E from the fields; r = e - E is the right shift, with e first
 *             clamped to [-2000, 2000] (any r beyond [-64, 128] then still lies beyond it,
 *             where the results no longer change: see dlu__clamp_shift).
 *             r >= 1: q = m >> r, frac = m << (64 - r) (r <= 64) or m >> (r - 64), all shift
 *             counts clamped into [0, 63] where the clamp cannot change the value because
 *             m < 2^24. Nearest: up if frac > 2^63 or frac == 2^63 and q odd; the reference's
 *             sticky bits only exist for r > 64, where frac < 2^24 is never a tie.
 *             Stochastic: up = rnd > ~frac, the reference's own expression.
 *             r <= 0: exact left shift by l = min(-r, 63), saturating if m > qmax >> l
 *             (qmax >> 63 == 0, so l >= 64 saturates like the reference's l >= 64 test).
 *             Then saturate to qmax (overflow), flag underflow for a nonzero input that
 *             became 0, apply the sign. NaN -> 0, +-Inf -> +-qmax with overflow, +-0 -> 0.
 *             Bin: k = biased exponent - 127 clamped to [-64, 63]; subnormals (k < -126)
 *             and +-Inf (k > 63) land in bins 0 and 127 as in the reference.
 *   requant   the shift s = eo - ea is one number per call (clamped like the reference).
 *             1 <= s <= 63, m = |acc| <= 2^63:
 *               nearest     (m + 2^(s-1) - 1 + ((m >> s) & 1)) >> s, round half to even;
 *                           the sum is below 2^63 + 2^62, so it cannot wrap.
 *               stochastic  (m + (rnd >> (64 - s))) >> s: adding the top s random bits to
 *                           the s discarded bits carries exactly when frac + rnd >= 2^64
 *                           (numerics.h, dlu__round_shift_u64); the sum is below 2^64.
 *             -63 <= s <= 0: m << -s, saturating if m > qmax >> -s.
 *             Any other s (values shifted by 64 or more bits: everything saturates or
 *             rounds to 0 or to the random carry) runs the reference element by element.
 *             Bin: k = leading-sign position of acc + ea, the position computed
 *             branch-free on u = acc < 0 ? ~acc : acc (so -1 gives -1 and -2^j gives
 *             j - 1, as dlu_leading_sign_pos64 does).
 *   stats     counts are integer sums, so the per-block order changes nothing.
 *
 * What it is not: not the spec (numerics.h is; tests/test_cpu_quant.c compares every path
 * against it), not threaded. */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "cpu_quant.h"
#include "error.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define CQ_X86 1
#include <immintrin.h>
#define CQ_TGT_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512cd")))
#define CQ_TGT_AVX2 __attribute__((target("avx2")))
#else
#define CQ_X86 0
#endif

#define CQ_INLINE static inline __attribute__((always_inline))

#define CQ_B 256                        /* elements per block */
#define CQ_GROUP 16                     /* Philox counters per group (32 random words) */
#define CQ_RND_WORDS (CQ_B + 2 * CQ_GROUP) /* a block's words, starting at an even index */
#define CQ_NONE 128                     /* bin of a zero or NaN element: not recorded */
#define CQ_EXP_LIM 2000                 /* exponents are clamped to +-this (see above) */

enum { CQ_ZERO, CQ_OVF, CQ_UNF, CQ_NAN, CQ_NCNT }; /* per-block event counts */

/* Right shifts and left shifts of a requantization (the shift is uniform per call). */
enum { CQ_RIGHT, CQ_LEFT };

static int clamp_int(int64_t v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : (int)v); }

/* ------------------------------------------------------------------------------------ */
/* Element kernels (one block of CQ_B elements; bits, mode, kinds are constants)        */
/* ------------------------------------------------------------------------------------ */

/* floor(log2 u) for u >= 1, -1 for u == 0; u < 2^63. Binary search with selects (the
 * compiler vectorises this), or the count-leading-zeros instruction where it has a
 * vector form (AVX-512 CD): clz(2u + 1) = clz(u) - 1 for u != 0 and 63 for u == 0. */
CQ_INLINE int64_t log2_u63(uint64_t u, const int vclz)
{
    int64_t k = 0;
    uint64_t s;

    if (vclz)
        return 62 - (int64_t)__builtin_clzll(2 * u + 1);
    s = (u >> 32) ? 32 : 0;
    k += (int64_t)s;
    u >>= s;
    s = (u >> 16) ? 16 : 0;
    k += (int64_t)s;
    u >>= s;
    s = (u >> 8) ? 8 : 0;
    k += (int64_t)s;
    u >>= s;
    s = (u >> 4) ? 4 : 0;
    k += (int64_t)s;
    u >>= s;
    s = (u >> 2) ? 2 : 0;
    k += (int64_t)s;
    u >>= s;
    s = (u >> 1) ? 1 : 0;
    k += (int64_t)s;
    u >>= s;
    return k - (int64_t)(u == 0); /* u is now 0 (input 0) or 1 */
}

/* The same for u < 2^15 in 32-bit lanes. */
CQ_INLINE int32_t log2_u15(uint32_t u)
{
    int32_t k = 0;
    uint32_t s;

    s = (u >> 8) ? 8 : 0;
    k += (int32_t)s;
    u >>= s;
    s = (u >> 4) ? 4 : 0;
    k += (int32_t)s;
    u >>= s;
    s = (u >> 2) ? 2 : 0;
    k += (int32_t)s;
    u >>= s;
    s = (u >> 1) ? 1 : 0;
    k += (int32_t)s;
    u >>= s;
    return k - (int32_t)(u == 0);
}

/* Histogram bin (0..127) of position k, clamped like dlu_stats_bin. */
CQ_INLINE uint8_t bin_of(int64_t k)
{
    k = k < DLU_STATS_KMIN ? DLU_STATS_KMIN : k;
    k = k > DLU_STATS_KMAX ? DLU_STATS_KMAX : k;
    return (uint8_t)(k - DLU_STATS_KMIN);
}

/* fp32 -> DFP for one block: x (CQ_B) -> q (CQ_B) int8/int16, bin (CQ_B), cnt (CQ_NCNT)
 * added. e is clamped to +-CQ_EXP_LIM; rnd (CQ_B) is read in stochastic mode only. */
CQ_INLINE void qf32_body(const float *restrict x, int e, const int bits, const int stoch,
                         const uint64_t *restrict rnd, void *restrict q, uint8_t *restrict bin,
                         uint64_t *restrict cnt)
{
    const uint64_t qmax = ((uint64_t)1 << (bits - 1)) - 1u;
    const uint64_t half = 0x8000000000000000ull;
    uint64_t nzero = 0, novf = 0, nunf = 0, nnan = 0;

    for (int i = 0; i < CQ_B; i++) {
        const uint64_t u = dlu_f32_bits(x[i]);
        const int64_t bexp = (int64_t)((u >> 23) & 0xFFu);
        const uint64_t man = u & 0x7FFFFFu;
        const uint64_t m = bexp ? (man | 0x800000u) : man;
        const int64_t r = (int64_t)e - ((bexp ? bexp : 1) - 150);
        /* right shift r >= 1 */
        const uint64_t qr = m >> (r < 0 ? 0 : (r > 63 ? 63 : r));
        const uint64_t frac = r <= 64 ? m << (r < 1 ? 63 : 64 - r) : m >> (r - 64 > 63 ? 63 : r - 64);
        const uint64_t up = stoch ? (uint64_t)(rnd[i] > ~frac)
                                  : (uint64_t)(frac > half || (frac == half && (qr & 1u)));
        /* left shift r <= 0 */
        const int64_t l = r < -63 ? 63 : (r < 0 ? -r : 0);
        const uint64_t ml = m > (qmax >> l) ? qmax + 1u : m << l;
        const uint64_t mag0 = r > 0 ? qr + up : ml;
        const uint64_t special = bexp == 0xFF;
        const uint64_t nan = special & (man != 0);
        const uint64_t zero = (u & 0x7FFFFFFFu) == 0;
        const uint64_t ovf = special ? !nan : mag0 > qmax;
        const uint64_t mag = special ? (nan ? 0 : qmax) : (mag0 > qmax ? qmax : mag0);
        const int64_t v = (u >> 31) ? -(int64_t)mag : (int64_t)mag;
        if (bits == 8)
            ((int8_t *)q)[i] = (int8_t)v;
        else
            ((int16_t *)q)[i] = (int16_t)v;
        bin[i] = (zero | nan) ? CQ_NONE : bin_of(bexp - 127);
        nzero += zero;
        novf += ovf;
        nunf += !special & !zero & (mag == 0);
        nnan += nan;
    }
    cnt[CQ_ZERO] += nzero;
    cnt[CQ_OVF] += novf;
    cnt[CQ_UNF] += nunf;
    cnt[CQ_NAN] += nnan;
}

/* Accumulators -> DFP for one block, uniform shift: kind CQ_RIGHT with 1 <= sh <= 63, or
 * CQ_LEFT with 0 <= sh <= 63 (a left shift by sh). ea is clamped to +-CQ_EXP_LIM. */
CQ_INLINE void qacc_body(const void *restrict acc, const int is32, const int kind, int sh, int ea, const int bits,
                         const int stoch, const int vclz, const uint64_t *restrict rnd, void *restrict q,
                         uint8_t *restrict bin, uint64_t *restrict cnt)
{
    const uint64_t qmax = ((uint64_t)1 << (bits - 1)) - 1u;
    const uint64_t round_nearest = kind == CQ_RIGHT ? ((uint64_t)1 << (sh - 1)) - 1u : 0;
    const uint64_t lim = kind == CQ_LEFT ? qmax >> sh : 0;
    const int rsh = kind == CQ_RIGHT ? 64 - sh : 0;
    uint64_t nzero = 0, novf = 0, nunf = 0;

    for (int i = 0; i < CQ_B; i++) {
        const int64_t a = is32 ? (int64_t)((const int32_t *)acc)[i] : ((const int64_t *)acc)[i];
        const uint64_t m = a < 0 ? 0u - (uint64_t)a : (uint64_t)a;
        uint64_t mag, ovf;
        if (kind == CQ_RIGHT) {
            const uint64_t t = stoch ? (m + (rnd[i] >> rsh)) >> sh : (m + round_nearest + ((m >> sh) & 1u)) >> sh;
            ovf = t > qmax;
            mag = ovf ? qmax : t;
        } else {
            ovf = m > lim;
            mag = ovf ? qmax : m << sh;
        }
        const uint64_t zero = a == 0;
        const int64_t v = a < 0 ? -(int64_t)mag : (int64_t)mag;
        if (bits == 8)
            ((int8_t *)q)[i] = (int8_t)v;
        else
            ((int16_t *)q)[i] = (int16_t)v;
        bin[i] = zero ? CQ_NONE : bin_of(log2_u63(a < 0 ? ~(uint64_t)a : (uint64_t)a, vclz) + ea);
        nzero += zero;
        novf += ovf;
        if (kind == CQ_RIGHT)
            nunf += !zero & (mag == 0);
    }
    cnt[CQ_ZERO] += nzero;
    cnt[CQ_OVF] += novf;
    cnt[CQ_UNF] += nunf;
}

/* Statistics of one block of int16 DFP values at exponent e (clamped): bins, zeros, and
 * overflow for -32768 (|q| = 32768 > qmax saturates in a requantization). */
CQ_INLINE void s16_body(const int16_t *restrict q, int e, uint8_t *restrict bin, uint64_t *restrict cnt)
{
    uint32_t nzero = 0, novf = 0;

    for (int i = 0; i < CQ_B; i++) {
        const int32_t v = q[i];
        const uint32_t u = (uint32_t)(v < 0 ? ~v : v);
        bin[i] = v == 0 ? CQ_NONE : bin_of(log2_u15(u) + e);
        nzero += v == 0;
        novf += v == INT16_MIN;
    }
    cnt[CQ_ZERO] += nzero;
    cnt[CQ_OVF] += novf;
}

/* The constant-folded instances one target needs. */
#define CQ_DEFINE_KERNELS(SFX, TGT, VCLZ)                                                                             \
    TGT static void qf32_##SFX(const float *restrict x, int e, int bits, int stoch, const uint64_t *restrict rnd,   \
                               void *restrict q, uint8_t *restrict bin, uint64_t *restrict cnt)                     \
    {                                                                                                               \
        if (bits == 8) {                                                                                            \
            if (stoch)                                                                                              \
                qf32_body(x, e, 8, 1, rnd, q, bin, cnt);                                                            \
            else                                                                                                    \
                qf32_body(x, e, 8, 0, rnd, q, bin, cnt);                                                            \
        } else {                                                                                                    \
            if (stoch)                                                                                              \
                qf32_body(x, e, 16, 1, rnd, q, bin, cnt);                                                           \
            else                                                                                                    \
                qf32_body(x, e, 16, 0, rnd, q, bin, cnt);                                                           \
        }                                                                                                           \
    }                                                                                                               \
    TGT static void qacc_##SFX(const void *restrict acc, int is32, int kind, int sh, int ea, int bits, int stoch,   \
                               const uint64_t *restrict rnd, void *restrict q, uint8_t *restrict bin,               \
                               uint64_t *restrict cnt)                                                              \
    {                                                                                                               \
        if (kind == CQ_LEFT) {                                                                                      \
            if (is32)                                                                                               \
                bits == 8 ? qacc_body(acc, 1, CQ_LEFT, sh, ea, 8, 0, VCLZ, rnd, q, bin, cnt)                        \
                          : qacc_body(acc, 1, CQ_LEFT, sh, ea, 16, 0, VCLZ, rnd, q, bin, cnt);                      \
            else                                                                                                    \
                bits == 8 ? qacc_body(acc, 0, CQ_LEFT, sh, ea, 8, 0, VCLZ, rnd, q, bin, cnt)                        \
                          : qacc_body(acc, 0, CQ_LEFT, sh, ea, 16, 0, VCLZ, rnd, q, bin, cnt);                      \
        } else if (stoch) {                                                                                         \
            if (is32)                                                                                               \
                bits == 8 ? qacc_body(acc, 1, CQ_RIGHT, sh, ea, 8, 1, VCLZ, rnd, q, bin, cnt)                       \
                          : qacc_body(acc, 1, CQ_RIGHT, sh, ea, 16, 1, VCLZ, rnd, q, bin, cnt);                     \
            else                                                                                                    \
                bits == 8 ? qacc_body(acc, 0, CQ_RIGHT, sh, ea, 8, 1, VCLZ, rnd, q, bin, cnt)                       \
                          : qacc_body(acc, 0, CQ_RIGHT, sh, ea, 16, 1, VCLZ, rnd, q, bin, cnt);                     \
        } else {                                                                                                    \
            if (is32)                                                                                               \
                bits == 8 ? qacc_body(acc, 1, CQ_RIGHT, sh, ea, 8, 0, VCLZ, rnd, q, bin, cnt)                       \
                          : qacc_body(acc, 1, CQ_RIGHT, sh, ea, 16, 0, VCLZ, rnd, q, bin, cnt);                     \
            else                                                                                                    \
                bits == 8 ? qacc_body(acc, 0, CQ_RIGHT, sh, ea, 8, 0, VCLZ, rnd, q, bin, cnt)                       \
                          : qacc_body(acc, 0, CQ_RIGHT, sh, ea, 16, 0, VCLZ, rnd, q, bin, cnt);                     \
        }                                                                                                           \
    }                                                                                                               \
    TGT static void s16_##SFX(const int16_t *restrict q, int e, uint8_t *restrict bin, uint64_t *restrict cnt)     \
    {                                                                                                               \
        s16_body(q, e, bin, cnt);                                                                                   \
    }

/* ------------------------------------------------------------------------------------ */
/* Philox-4x32-10, 16 counters at a time                                                */
/* ------------------------------------------------------------------------------------ */

/* ngroups groups of CQ_GROUP counters: group g, lane j is pair p = (pair0 + 16 g + j)
 * mod 2^63 (the pair index of a 64-bit element index), counter {p, p >> 32, step, id},
 * key {seed, seed >> 32}; out[2 (16 g + j)] and out[2 (16 g + j) + 1] receive the words of
 * elements 2p and 2p + 1 exactly as dlu_sr_bits64 forms them. */
typedef void philox_fn(uint64_t pair0, size_t ngroups, uint32_t step, uint32_t id, uint64_t seed,
                       uint64_t *restrict out);

/* Portable: structure of arrays, one inner loop per round over the 16 lanes. */
static void philox_portable(uint64_t pair0, size_t ngroups, uint32_t step, uint32_t id, uint64_t seed,
                            uint64_t *restrict out)
{
    for (size_t g = 0; g < ngroups; g++) {
        uint32_t x0[CQ_GROUP], x1[CQ_GROUP], x2[CQ_GROUP], x3[CQ_GROUP];
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        for (int j = 0; j < CQ_GROUP; j++) {
            const uint64_t p = (pair0 + (uint64_t)(CQ_GROUP * g) + (uint64_t)j) & (uint64_t)INT64_MAX;
            x0[j] = (uint32_t)p;
            x1[j] = (uint32_t)(p >> 32);
            x2[j] = step;
            x3[j] = id;
        }
        for (int round = 0; round < 10; round++) {
            if (round > 0) {
                k0 += DLU_PHILOX_W0;
                k1 += DLU_PHILOX_W1;
            }
            for (int j = 0; j < CQ_GROUP; j++) {
                const uint64_t p0 = (uint64_t)DLU_PHILOX_M0 * x0[j], p1 = (uint64_t)DLU_PHILOX_M1 * x2[j];
                x0[j] = (uint32_t)(p1 >> 32) ^ x1[j] ^ k0;
                x1[j] = (uint32_t)p1;
                x2[j] = (uint32_t)(p0 >> 32) ^ x3[j] ^ k1;
                x3[j] = (uint32_t)p0;
            }
        }
        for (int j = 0; j < CQ_GROUP; j++) {
            out[2 * (CQ_GROUP * g + j)] = (uint64_t)x0[j] | (uint64_t)x1[j] << 32;
            out[2 * (CQ_GROUP * g + j) + 1] = (uint64_t)x2[j] | (uint64_t)x3[j] << 32;
        }
    }
}

#if CQ_X86
/* The round keys, as 64-bit lanes: the multiplies read only the low dword of a lane, so
 * the state words are kept in 64-bit lanes whose high halves hold garbage, masked at the
 * end. */
static void round_keys(uint64_t seed, uint64_t k0[10], uint64_t k1[10])
{
    uint32_t a = (uint32_t)seed, b = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        k0[r] = a;
        k1[r] = b;
        a += DLU_PHILOX_W0;
        b += DLU_PHILOX_W1;
    }
}

CQ_TGT_AVX512 static void philox_avx512(uint64_t pair0, size_t ngroups, uint32_t step, uint32_t id, uint64_t seed,
                                        uint64_t *restrict out)
{
    uint64_t k0[10], k1[10];
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), pmask = _mm512_set1_epi64(INT64_MAX);
    const __m512i m0 = _mm512_set1_epi64(DLU_PHILOX_M0), m1 = _mm512_set1_epi64(DLU_PHILOX_M1);
    const __m512i ilo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0), ihi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);

    round_keys(seed, k0, k1);
    for (size_t g = 0; g < ngroups; g++) {
        const uint64_t p = pair0 + (uint64_t)(CQ_GROUP * g);
        const __m512i pa = _mm512_and_si512(_mm512_add_epi64(_mm512_set1_epi64((long long)p), lane), pmask);
        const __m512i pb = _mm512_and_si512(_mm512_add_epi64(_mm512_set1_epi64((long long)(p + 8)), lane), pmask);
        __m512i a0 = pa, a1 = _mm512_srli_epi64(pa, 32), a2 = _mm512_set1_epi64(step), a3 = _mm512_set1_epi64(id);
        __m512i b0 = pb, b1 = _mm512_srli_epi64(pb, 32), b2 = a2, b3 = a3;
        for (int r = 0; r < 10; r++) {
            const __m512i ka = _mm512_set1_epi64((long long)k0[r]), kb = _mm512_set1_epi64((long long)k1[r]);
            const __m512i pa0 = _mm512_mul_epu32(a0, m0), pa1 = _mm512_mul_epu32(a2, m1);
            const __m512i pb0 = _mm512_mul_epu32(b0, m0), pb1 = _mm512_mul_epu32(b2, m1);
            a0 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(pa1, 32), a1, ka, 0x96); /* three-way xor */
            a2 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(pa0, 32), a3, kb, 0x96);
            a1 = pa1;
            a3 = pa0;
            b0 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(pb1, 32), b1, ka, 0x96);
            b2 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(pb0, 32), b3, kb, 0x96);
            b1 = pb1;
            b3 = pb0;
        }
        /* even-element word x0 | x1 << 32, odd-element word x2 | x3 << 32, interleaved */
        const __m512i ea = _mm512_mask_blend_epi32(0xAAAA, a0, _mm512_slli_epi64(a1, 32));
        const __m512i oa = _mm512_mask_blend_epi32(0xAAAA, a2, _mm512_slli_epi64(a3, 32));
        const __m512i eb = _mm512_mask_blend_epi32(0xAAAA, b0, _mm512_slli_epi64(b1, 32));
        const __m512i ob = _mm512_mask_blend_epi32(0xAAAA, b2, _mm512_slli_epi64(b3, 32));
        uint64_t *o = out + 2 * CQ_GROUP * g;
        _mm512_storeu_si512((void *)o, _mm512_permutex2var_epi64(ea, ilo, oa));
        _mm512_storeu_si512((void *)(o + 8), _mm512_permutex2var_epi64(ea, ihi, oa));
        _mm512_storeu_si512((void *)(o + 16), _mm512_permutex2var_epi64(eb, ilo, ob));
        _mm512_storeu_si512((void *)(o + 24), _mm512_permutex2var_epi64(eb, ihi, ob));
    }
}

CQ_TGT_AVX2 static void philox_avx2(uint64_t pair0, size_t ngroups, uint32_t step, uint32_t id, uint64_t seed,
                                    uint64_t *restrict out)
{
    uint64_t k0[10], k1[10];
    const __m256i lane = _mm256_set_epi64x(3, 2, 1, 0), pmask = _mm256_set1_epi64x(INT64_MAX);
    const __m256i m0 = _mm256_set1_epi64x(DLU_PHILOX_M0), m1 = _mm256_set1_epi64x(DLU_PHILOX_M1);

    round_keys(seed, k0, k1);
    for (size_t h = 0; h < 2 * ngroups; h++) { /* 8 counters at a time: two vectors of 4 */
        const uint64_t p = pair0 + (uint64_t)(8 * h);
        const __m256i pa = _mm256_and_si256(_mm256_add_epi64(_mm256_set1_epi64x((long long)p), lane), pmask);
        const __m256i pb = _mm256_and_si256(_mm256_add_epi64(_mm256_set1_epi64x((long long)(p + 4)), lane), pmask);
        __m256i a0 = pa, a1 = _mm256_srli_epi64(pa, 32), a2 = _mm256_set1_epi64x(step), a3 = _mm256_set1_epi64x(id);
        __m256i b0 = pb, b1 = _mm256_srli_epi64(pb, 32), b2 = a2, b3 = a3;
        for (int r = 0; r < 10; r++) {
            const __m256i ka = _mm256_set1_epi64x((long long)k0[r]), kb = _mm256_set1_epi64x((long long)k1[r]);
            const __m256i pa0 = _mm256_mul_epu32(a0, m0), pa1 = _mm256_mul_epu32(a2, m1);
            const __m256i pb0 = _mm256_mul_epu32(b0, m0), pb1 = _mm256_mul_epu32(b2, m1);
            a0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pa1, 32), a1), ka);
            a2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pa0, 32), a3), kb);
            a1 = pa1;
            a3 = pa0;
            b0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pb1, 32), b1), ka);
            b2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(pb0, 32), b3), kb);
            b1 = pb1;
            b3 = pb0;
        }
        const __m256i ea = _mm256_blend_epi32(a0, _mm256_slli_epi64(a1, 32), 0xAA);
        const __m256i oa = _mm256_blend_epi32(a2, _mm256_slli_epi64(a3, 32), 0xAA);
        const __m256i eb = _mm256_blend_epi32(b0, _mm256_slli_epi64(b1, 32), 0xAA);
        const __m256i ob = _mm256_blend_epi32(b2, _mm256_slli_epi64(b3, 32), 0xAA);
        const __m256i la = _mm256_unpacklo_epi64(ea, oa), ha = _mm256_unpackhi_epi64(ea, oa); /* pairs 0,2 / 1,3 */
        const __m256i lb = _mm256_unpacklo_epi64(eb, ob), hb = _mm256_unpackhi_epi64(eb, ob);
        uint64_t *o = out + 16 * h;
        _mm256_storeu_si256((__m256i *)(void *)o, _mm256_permute2x128_si256(la, ha, 0x20));
        _mm256_storeu_si256((__m256i *)(void *)(o + 4), _mm256_permute2x128_si256(la, ha, 0x31));
        _mm256_storeu_si256((__m256i *)(void *)(o + 8), _mm256_permute2x128_si256(lb, hb, 0x20));
        _mm256_storeu_si256((__m256i *)(void *)(o + 12), _mm256_permute2x128_si256(lb, hb, 0x31));
    }
}
#endif

/* ------------------------------------------------------------------------------------ */
/* Implementations and dispatch                                                         */
/* ------------------------------------------------------------------------------------ */

typedef void qf32_fn(const float *restrict x, int e, int bits, int stoch, const uint64_t *restrict rnd,
                     void *restrict q, uint8_t *restrict bin, uint64_t *restrict cnt);
typedef void qacc_fn(const void *restrict acc, int is32, int kind, int sh, int ea, int bits, int stoch,
                     const uint64_t *restrict rnd, void *restrict q, uint8_t *restrict bin, uint64_t *restrict cnt);
typedef void s16_fn(const int16_t *restrict q, int e, uint8_t *restrict bin, uint64_t *restrict cnt);

CQ_DEFINE_KERNELS(portable, , 0)
#if CQ_X86
CQ_DEFINE_KERNELS(avx2, CQ_TGT_AVX2, 0)
CQ_DEFINE_KERNELS(avx512, CQ_TGT_AVX512, 1)
#endif

typedef struct cq_impl {
    const char *name;
    qf32_fn *qf32;
    qacc_fn *qacc;
    s16_fn *s16;
    philox_fn *philox;
} cq_impl;

enum { IMPL_PORTABLE, IMPL_AVX2, IMPL_AVX512, IMPL_COUNT };

static const cq_impl impls[IMPL_COUNT] = {
    {"portable", qf32_portable, qacc_portable, s16_portable, philox_portable},
#if CQ_X86
    {"avx2", qf32_avx2, qacc_avx2, s16_avx2, philox_avx2},
    {"avx512", qf32_avx512, qacc_avx512, s16_avx512, philox_avx512},
#else
    {"avx2", qf32_portable, qacc_portable, s16_portable, philox_portable},
    {"avx512", qf32_portable, qacc_portable, s16_portable, philox_portable},
#endif
};

static atomic_int g_best = -1;   /* detected once */
static atomic_int g_forced = -1; /* -1: the best one; else an IMPL_* */

static int detect_impl(void)
{
#if CQ_X86
    /* libgcc checks XCR0 too: the OS must save the ymm/zmm and opmask state. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd"))
        return IMPL_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return IMPL_AVX2;
#endif
    return IMPL_PORTABLE;
}

static int best_impl(void)
{
    int b = atomic_load_explicit(&g_best, memory_order_relaxed);
    if (b < 0) {
        b = detect_impl();
        atomic_store_explicit(&g_best, b, memory_order_relaxed);
    }
    return b;
}

static const cq_impl *current(void)
{
    const int f = atomic_load_explicit(&g_forced, memory_order_relaxed);
    return &impls[f >= 0 ? f : best_impl()];
}

const char *dlu__cpu_quant_impl(void) { return current()->name; }

dlu_status dlu__cpu_quant_select(const char *name)
{
    if (!name) {
        atomic_store(&g_forced, -1);
        return DLU_OK;
    }
    for (int i = 0; i < IMPL_COUNT; i++)
        if (!strcmp(name, impls[i].name)) {
            if (i > best_impl()) /* each path's features include the ones below it */
                return dlu__error(DLU_EUNSUPPORTED, "cpu quant: this CPU cannot run the %s path (best: %s)", name,
                                  impls[best_impl()].name);
            atomic_store(&g_forced, i);
            return DLU_OK;
        }
    return dlu__error(DLU_EINVAL, "cpu quant: unknown implementation '%s' (expected avx512, avx2 or portable)", name);
}

/* ------------------------------------------------------------------------------------ */
/* Block drivers                                                                        */
/* ------------------------------------------------------------------------------------ */

/* The random words of elements idx .. idx + nb - 1 (idx mod 2^64): generated from the even
 * index at or below idx into buf (CQ_RND_WORDS); returns the word of element idx. */
static const uint64_t *block_rnd(const cq_impl *im, uint64_t seed, uint32_t id, uint32_t step, uint64_t idx,
                                 size_t nb, uint64_t *buf)
{
    const size_t off = (size_t)(idx & 1u), npairs = (off + nb + 1) / 2;
    im->philox(idx >> 1, (npairs + CQ_GROUP - 1) / CQ_GROUP, step, id, seed, buf);
    return buf + off;
}

/* Statistics being gathered by one call: four interleaved histograms (bin CQ_NONE is a
 * sink) and the event counts. */
typedef struct cq_acc {
    uint64_t h[4][CQ_NONE + 1];
    uint64_t cnt[CQ_NCNT];
    uint64_t pad; /* padding elements counted as zeros */
} cq_acc;

static void acc_init(cq_acc *a) { memset(a, 0, sizeof *a); }

static void acc_bins(cq_acc *a, const uint8_t *bin, size_t nb)
{
    size_t i = 0;
    for (; i + 4 <= nb; i += 4) {
        a->h[0][bin[i]]++;
        a->h[1][bin[i + 1]]++;
        a->h[2][bin[i + 2]]++;
        a->h[3][bin[i + 3]]++;
    }
    for (; i < nb; i++)
        a->h[0][bin[i]]++;
}

static void acc_finish(const cq_acc *a, size_t n, int events, dlu_stats *st)
{
    for (int b = 0; b < DLU_STATS_NBINS; b++)
        st->hist[b] += a->h[0][b] + a->h[1][b] + a->h[2][b] + a->h[3][b];
    st->count += n;
    st->zeros += a->cnt[CQ_ZERO] - a->pad;
    if (events) {
        st->overflow += a->cnt[CQ_OVF];
        st->underflow += a->cnt[CQ_UNF];
        st->nan += a->cnt[CQ_NAN];
    }
}

static dlu_status check_args(const char *fn, const void *in, size_t n, dlu_format fmt, dlu_round mode,
                             const void *q_out)
{
    if (!dlu_format_is_dfp(fmt))
        return dlu__error(DLU_EINVAL, "%s: format %d is not a DFP format (expected dfp8 or dfp16)", fn, (int)fmt);
    if (mode != DLU_ROUND_NEAREST && mode != DLU_ROUND_STOCHASTIC)
        return dlu__error(DLU_EINVAL, "%s: rounding mode %d is not nearest or stochastic", fn, (int)mode);
    if (n > 0 && (!in || !q_out))
        return dlu__error(DLU_EINVAL, "%s: NULL %s with n = %zu", fn, in ? "output" : "input", n);
    return DLU_OK;
}

dlu_status dlu__cpu_quantize_f32(const float *x, size_t n, int e, dlu_format fmt, dlu_round mode, uint64_t seed,
                                 uint32_t id, uint32_t step, size_t index_base, void *q_out, dlu_stats *st)
{
    DLU__TRY(check_args("dlu__cpu_quantize_f32", x, n, fmt, mode, q_out));
    const cq_impl *im = current();
    const int bits = dlu_format_bits(fmt), stoch = mode == DLU_ROUND_STOCHASTIC;
    const size_t esz = dlu_format_nbytes(fmt);
    const int ec = clamp_int(e, -CQ_EXP_LIM, CQ_EXP_LIM);
    uint64_t rbuf[CQ_RND_WORDS];
    float xpad[CQ_B];
    int16_t qpad[CQ_B];
    uint8_t bin[CQ_B];
    cq_acc a;

    acc_init(&a);
    for (size_t b0 = 0; b0 < n; b0 += CQ_B) {
        const size_t nb = n - b0 < CQ_B ? n - b0 : CQ_B;
        const float *xb = x + b0;
        void *qb = (uint8_t *)q_out + b0 * esz;
        const uint64_t *rnd = NULL;
        if (nb < CQ_B) { /* the last block: pad with +0, write to the side */
            memcpy(xpad, xb, nb * sizeof *xpad);
            memset(xpad + nb, 0, (CQ_B - nb) * sizeof *xpad);
            a.pad += CQ_B - nb;
            xb = xpad;
            qb = qpad;
        }
        if (stoch)
            rnd = block_rnd(im, seed, id, step, (uint64_t)index_base + b0, nb, rbuf);
        im->qf32(xb, ec, bits, stoch, rnd, qb, bin, a.cnt);
        if (nb < CQ_B)
            memcpy((uint8_t *)q_out + b0 * esz, qpad, nb * esz);
        if (st)
            acc_bins(&a, bin, nb);
    }
    if (st)
        acc_finish(&a, n, 1, st);
    return DLU_OK;
}

/* Requantization of int64 (is32 = 0) or int32 (is32 = 1) accumulators; q_out NULL means
 * statistics only (count, zeros, histogram), as dlu__cpu_stats_acc64 wants. */
static dlu_status requant(const void *acc, int is32, size_t n, int ea, int eo, dlu_format fmt, dlu_round mode,
                          uint64_t seed, uint32_t id, uint32_t step, size_t index_base, void *q_out, dlu_stats *st)
{
    const cq_impl *im = current();
    const int bits = dlu_format_bits(fmt), stoch = mode == DLU_ROUND_STOCHASTIC;
    const size_t esz = dlu_format_nbytes(fmt), asz = is32 ? sizeof(int32_t) : sizeof(int64_t);
    const int s = dlu__clamp_shift((int64_t)eo - ea);
    const int kind = s > 0 ? CQ_RIGHT : CQ_LEFT, sh = s > 0 ? s : -s;
    const int fast = sh <= 63;
    const int eac = clamp_int(ea, -CQ_EXP_LIM, CQ_EXP_LIM);
    uint64_t rbuf[CQ_RND_WORDS];
    int64_t apad[CQ_B];
    int16_t qpad[CQ_B];
    uint8_t bin[CQ_B];
    cq_acc a;

    acc_init(&a);
    for (size_t b0 = 0; b0 < n; b0 += CQ_B) {
        const size_t nb = n - b0 < CQ_B ? n - b0 : CQ_B;
        const void *ab = (const uint8_t *)acc + b0 * asz;
        void *qb = q_out ? (void *)((uint8_t *)q_out + b0 * esz) : (void *)qpad;
        const uint64_t *rnd = NULL;
        if (stoch && kind == CQ_RIGHT)
            rnd = block_rnd(im, seed, id, step, (uint64_t)index_base + b0, nb, rbuf);
        if (!fast) { /* shifts of 64 bits or more: the reference, element by element */
            for (size_t i = 0; i < nb; i++) {
                const int64_t v = is32 ? (int64_t)((const int32_t *)ab)[i] : ((const int64_t *)ab)[i];
                uint32_t info;
                const int32_t r = dlu_dfp_requantize(v, ea, eo, bits, mode, rnd ? rnd[i] : 0, &info);
                if (q_out && bits == 8)
                    ((int8_t *)qb)[i] = (int8_t)r;
                else if (q_out)
                    ((int16_t *)qb)[i] = (int16_t)r;
                if (st && q_out)
                    dlu_stats_record(st, info);
                else if (st)
                    dlu_stats_record(st, info & ~(DLU_QF_OVERFLOW | DLU_QF_UNDERFLOW));
            }
            continue;
        }
        if (nb < CQ_B) {
            memcpy(apad, ab, nb * asz);
            memset((uint8_t *)apad + nb * asz, 0, (CQ_B - nb) * asz);
            a.pad += CQ_B - nb;
            ab = apad;
            qb = qpad;
        }
        im->qacc(ab, is32, kind, sh, eac, bits, stoch, rnd, qb, bin, a.cnt);
        if (nb < CQ_B && q_out)
            memcpy((uint8_t *)q_out + b0 * esz, qpad, nb * esz);
        if (st)
            acc_bins(&a, bin, nb);
    }
    if (st && fast)
        acc_finish(&a, n, q_out != NULL, st);
    return DLU_OK;
}

dlu_status dlu__cpu_requantize_acc64(const int64_t *acc, size_t n, int ea, int eo, dlu_format fmt, dlu_round mode,
                                     uint64_t seed, uint32_t id, uint32_t step, size_t index_base, void *q_out,
                                     dlu_stats *st)
{
    DLU__TRY(check_args("dlu__cpu_requantize_acc64", acc, n, fmt, mode, q_out));
    return requant(acc, 0, n, ea, eo, fmt, mode, seed, id, step, index_base, q_out, st);
}

dlu_status dlu__cpu_requantize_acc32(const int32_t *acc, size_t n, int ea, int eo, dlu_format fmt, dlu_round mode,
                                     uint64_t seed, uint32_t id, uint32_t step, size_t index_base, void *q_out,
                                     dlu_stats *st)
{
    DLU__TRY(check_args("dlu__cpu_requantize_acc32", acc, n, fmt, mode, q_out));
    return requant(acc, 1, n, ea, eo, fmt, mode, seed, id, step, index_base, q_out, st);
}

void dlu__cpu_stats_acc64(const int64_t *acc, size_t n, int ea, dlu_stats *st)
{
    if (!st || !acc)
        return;
    (void)requant(acc, 0, n, ea, ea, DLU_FMT_DFP16, DLU_ROUND_NEAREST, 0, 0, 0, 0, NULL, st);
}

void dlu__cpu_stats_q(const void *q, size_t n, int e, dlu_format fmt, dlu_stats *st)
{
    if (!st || !q || !dlu_format_is_dfp(fmt))
        return;
    const int ec = clamp_int(e, -CQ_EXP_LIM, CQ_EXP_LIM);
    if (dlu_format_bits(fmt) == 8) {
        /* count each of the 256 values, then one bin per value */
        const int8_t *q8 = q;
        uint64_t c[4][256];
        size_t i = 0;
        memset(c, 0, sizeof c);
        for (; i + 4 <= n; i += 4) {
            c[0][(uint8_t)q8[i]]++;
            c[1][(uint8_t)q8[i + 1]]++;
            c[2][(uint8_t)q8[i + 2]]++;
            c[3][(uint8_t)q8[i + 3]]++;
        }
        for (; i < n; i++)
            c[0][(uint8_t)q8[i]]++;
        for (int v = -128; v < 128; v++) {
            const uint64_t k = c[0][(uint8_t)v] + c[1][(uint8_t)v] + c[2][(uint8_t)v] + c[3][(uint8_t)v];
            if (v == 0) {
                st->zeros += k;
                continue;
            }
            st->hist[bin_of(log2_u15((uint32_t)(v < 0 ? ~v : v)) + ec)] += k;
            if (v == -128)
                st->overflow += k;
        }
        st->count += n;
        return;
    }
    const cq_impl *im = current();
    int16_t qpad[CQ_B];
    uint8_t bin[CQ_B];
    cq_acc a;
    acc_init(&a);
    for (size_t b0 = 0; b0 < n; b0 += CQ_B) {
        const size_t nb = n - b0 < CQ_B ? n - b0 : CQ_B;
        const int16_t *qb = (const int16_t *)q + b0;
        if (nb < CQ_B) {
            memcpy(qpad, qb, nb * sizeof *qpad);
            memset(qpad + nb, 0, (CQ_B - nb) * sizeof *qpad);
            a.pad += CQ_B - nb;
            qb = qpad;
        }
        im->s16(qb, ec, bin, a.cnt);
        acc_bins(&a, bin, nb);
    }
    acc_finish(&a, n, 1, st);
}

void dlu__cpu_sr_bits64(uint64_t seed, uint32_t id, uint32_t step, uint64_t index0, size_t n, uint64_t *out)
{
    const cq_impl *im = current();
    uint64_t buf[CQ_RND_WORDS];
    for (size_t b0 = 0; b0 < n; b0 += CQ_B) {
        const size_t nb = n - b0 < CQ_B ? n - b0 : CQ_B;
        memcpy(out + b0, block_rnd(im, seed, id, step, index0 + b0, nb, buf), nb * sizeof *out);
    }
}
