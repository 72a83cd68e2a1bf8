/* cpu_quant.c -- fast quantize / requantize / statistics / stochastic-rounding bits for the
 * CPU backend, bit-identical to the references in dlu/numerics.h.
 *
 * What it is: the tensor helpers of numerics.h reorganised for speed, not reinterpreted.
 * Elements go in blocks of CQ_B (the last block padded with zeros, whose statistics are
 * taken back out). Per block:
 *   1. stochastic mode: the block's random words from a Philox-4x32-10 that runs 16
 *      counters side by side (one counter serves two elements, as in dlu_sr_bits64), kept
 *      as low and high 32-bit halves;
 *   2. one straight-line loop over the block computes each element's result, its flags
 *      and its histogram bin with masks and selects instead of branches, so that the
 *      compiler vectorises it (32-bit lanes for fp32 inputs, 64-bit for accumulators);
 *   3. a scalar loop adds the bins into four interleaved histograms (a single table would
 *      make consecutive elements of the same bin wait for each other's store).
 * The loops are compiled three times, for AVX-512 (F, DQ, BW, VL, CD), AVX2 and the
 * default target, by always_inline bodies called from functions with a target attribute;
 * the best one the CPU (and OS) supports is picked at run time with
 * __builtin_cpu_supports. There is no global -m flag, so the library runs on any x86-64
 * and builds elsewhere with the portable path only. Philox uses intrinsics on x86
 * (vpmuludq: 32x32->64 multiplies on the even dwords of 64-bit lanes). The element loops
 * are written for GCC's vectoriser (checked with -fopt-info-vec on GCC 12); the comments
 * at the bodies say which spellings it needs.
 *
 * Why the results are the references' (the details the reference defines):
 *   quantize  |x| = m * 2^E from the fields (m < 2^24); r = e - E is the right shift, with
 *             e first clamped to [-2000, 2000] (an r beyond [-64, 128] then stays beyond it,
 *             where results no longer change: see dlu__clamp_shift). Shift counts are
 *             clamped into [0, 31] wherever m < 2^24 makes the clamp exact.
 *             Nearest, r >= 1: q = m >> r, then round half to even from the half bit and
 *             the bits below it; r >= 25 gives 0 like r = 25 (m is below half an LSB).
 *             The reference's sticky bits beyond 64 never make a tie, since m < 2^24.
 *             Stochastic, r >= 1: the reference's up = rnd > ~frac (frac = the discarded
 *             fraction scaled to 64 bits), evaluated on 32-bit halves (see qf32_sr_body).
 *             r <= 0: exact left shift by l, saturating iff m > qmax >> l.
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
 *             -63 <= s <= 0: m << -s, saturating iff m > qmax >> -s.
 *             Any other s (values shifted by 64 or more bits: everything saturates or
 *             rounds to 0 or to the random carry) runs the reference element by element.
 *             Bin: k = leading-sign position of acc + ea, computed on
 *             u = acc < 0 ? ~acc : acc (so -1 gives -1 and -2^j gives j - 1, as
 *             dlu_leading_sign_pos64 does), with ea clamped to +-2000 (k still clamps to the
 *             same bin).
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

/* v clamped to [lo, hi]. */
CQ_INLINE int32_t clamp32(int32_t v, int32_t lo, int32_t hi)
{
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* CQ_NONE if none (0 or 1), else bin: arithmetic, because a comparison used both as a
 * select mask and as a counted value stops the vectoriser ("unsupported use"). */
CQ_INLINE uint8_t none_or(uint64_t none, uint8_t bin) { return (uint8_t)((bin & (none - 1u)) | (none << 7)); }

/* fp32 -> DFP, nearest-even, for one block: x (CQ_B) -> q (CQ_B) int8/int16, bin (CQ_B),
 * cnt (CQ_NCNT) added; e clamped to +-CQ_EXP_LIM. In 32-bit lanes, which suffice because
 * m < 2^24: a right shift r >= 25 leaves m below half an LSB (result 0, as r = 25 gives);
 * round half to even from the kept part q, the half bit hb and the bits below it (sticky).
 * A left shift l saturates iff m > qmax >> l, i.e. iff m >> (bits - 1 - l) != 0 (for
 * l >= bits - 1: iff m != 0). Loop-invariant values shifted by a vector are avoided: GCC
 * 12 does not vectorise them. */
CQ_INLINE void qf32_rn_body(const float *restrict x, int e, const int bits, void *restrict q,
                            uint8_t *restrict bin, uint64_t *restrict cnt)
{
    const uint32_t qmax = (1u << (bits - 1)) - 1u;
    uint32_t nzero = 0, novf = 0, nunf = 0, nnan = 0;

    for (int i = 0; i < CQ_B; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u); /* the fp32 bits (a load the vectoriser takes) */
        const uint32_t bexp = (u >> 23) & 0xFFu, man = u & 0x7FFFFFu;
        const uint32_t normal = bexp != 0;
        const uint32_t m = man | (normal << 23);
        const int32_t r = e + 150 - (int32_t)(bexp + 1u - normal); /* e - E */
        /* right shift r >= 1 */
        const int32_t rr = clamp32(r, 1, 25);
        const uint32_t qr = m >> rr;
        const uint32_t hb = (m >> (rr - 1)) & 1u;
        const uint32_t sticky = ((m << (32 - rr)) << 1) != 0; /* bits below the half bit */
        const uint32_t magr = qr + (hb & (sticky | (qr & 1u)));
        /* left shift r <= 0 */
        const int32_t l = clamp32(-r, 0, 31);
        const uint32_t sat_l = (m >> clamp32(bits - 1 - l, 0, 31)) != 0;
        const uint32_t ml = sat_l ? qmax + 1u : m << l;
        const uint32_t right = 0u - (uint32_t)(r > 0);
        const uint32_t mag0 = (magr & right) | (ml & ~right);
        /* saturation, specials, sign */
        const uint32_t special = bexp == 0xFF;
        const uint32_t nan = special & (uint32_t)(man != 0);
        const uint32_t zero = (u & 0x7FFFFFFFu) == 0;
        const uint32_t ovf = special ? nan ^ 1u : (uint32_t)(mag0 > qmax);
        const uint32_t magc = mag0 < qmax ? mag0 : qmax;
        const uint32_t mag = special ? qmax & (nan - 1u) : magc; /* NaN 0, +-Inf qmax */
        const int32_t v = (u >> 31) ? -(int32_t)mag : (int32_t)mag;
        if (bits == 8)
            ((int8_t *)q)[i] = (int8_t)v;
        else
            ((int16_t *)q)[i] = (int16_t)v;
        bin[i] = none_or(zero | nan, bin_of((int32_t)bexp - 127));
        nzero += zero;
        novf += ovf;
        nunf += (special | zero | (uint32_t)(mag != 0)) ^ 1u;
        nnan += nan;
    }
    cnt[CQ_ZERO] += nzero;
    cnt[CQ_OVF] += novf;
    cnt[CQ_UNF] += nunf;
    cnt[CQ_NAN] += nnan;
}

/* fp32 -> DFP, stochastic, for one block; as qf32_rn_body plus the random words of the
 * block's elements split into low and high halves, rlo (CQ_B) and rhi (CQ_B). Also in
 * 32-bit lanes: the reference's up = rnd > ~frac, i.e. rnd + frac >= 2^64, is evaluated on
 * the halves (rnd = rhi:rlo, frac = fh:fl): up = rhi > ~fh, or rhi == ~fh and the low
 * halves carry (rlo > ~fl). With m < 2^24: for r <= 32, frac = (m << (32 - r)):0; for
 * 32 < r <= 64, fh = m >> (r - 32), fl = m << (64 - r); for r > 64, fh = 0,
 * fl = m >> (r - 64) (0 once r - 64 >= 24, so clamping the count to 31 is exact). */
CQ_INLINE void qf32_sr_body(const float *restrict x, int e, const int bits, const uint32_t *restrict rlo,
                            const uint32_t *restrict rhi, void *restrict q, uint8_t *restrict bin,
                            uint64_t *restrict cnt)
{
    const uint32_t qmax = (1u << (bits - 1)) - 1u;
    uint32_t nzero = 0, novf = 0, nunf = 0, nnan = 0;

    for (int i = 0; i < CQ_B; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        const uint32_t bexp = (u >> 23) & 0xFFu, man = u & 0x7FFFFFu;
        const uint32_t normal = bexp != 0;
        const uint32_t m = man | (normal << 23);
        const int32_t r = e + 150 - (int32_t)(bexp + 1u - normal); /* e - E */
        /* right shift r >= 1 */
        const uint32_t qr = m >> clamp32(r, 0, 31);
        const uint32_t fh = (m << clamp32(32 - r, 0, 31)) >> clamp32(r - 32, 0, 31);
        const uint32_t fl = ((m << clamp32(64 - r, 0, 31)) >> clamp32(r - 64, 0, 31)) & (0u - (uint32_t)(r > 32));
        const uint32_t up = (uint32_t)(rhi[i] > ~fh) | ((uint32_t)(rhi[i] == ~fh) & (uint32_t)(rlo[i] > ~fl));
        /* left shift r <= 0 */
        const int32_t l = clamp32(-r, 0, 31);
        const uint32_t sat_l = (m >> clamp32(bits - 1 - l, 0, 31)) != 0;
        const uint32_t ml = sat_l ? qmax + 1u : m << l;
        const uint32_t right = 0u - (uint32_t)(r > 0); /* a mask: a select here would make */
        const uint32_t mag0 = ((qr + up) & right) | (ml & ~right); /* rhi[i] a conditional load */
        const uint32_t special = bexp == 0xFF;
        const uint32_t nan = special & (uint32_t)(man != 0);
        const uint32_t zero = (u & 0x7FFFFFFFu) == 0;
        const uint32_t ovf = special ? nan ^ 1u : (uint32_t)(mag0 > qmax);
        const uint32_t magc = mag0 < qmax ? mag0 : qmax;
        const uint32_t mag = special ? qmax & (nan - 1u) : magc;
        const int32_t v = (u >> 31) ? -(int32_t)mag : (int32_t)mag;
        if (bits == 8)
            ((int8_t *)q)[i] = (int8_t)v;
        else
            ((int16_t *)q)[i] = (int16_t)v;
        bin[i] = none_or(zero | nan, bin_of((int32_t)bexp - 127));
        nzero += zero;
        novf += ovf;
        nunf += (special | zero | (uint32_t)(mag != 0)) ^ 1u;
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
                         const int stoch, const int vclz, const uint32_t *restrict rlo, const uint32_t *restrict rhi,
                         void *restrict q, uint8_t *restrict bin, uint64_t *restrict cnt)
{
    const uint64_t qmax = ((uint64_t)1 << (bits - 1)) - 1u;
    const uint64_t round_nearest = kind == CQ_RIGHT ? ((uint64_t)1 << (sh - 1)) - 1u : 0;
    const uint64_t lim = kind == CQ_LEFT ? qmax >> sh : 0;
    const int rsh = kind == CQ_RIGHT ? 64 - sh : 0;
    uint64_t nzero = 0, novf = 0, nunf = 0;

    for (int i = 0; i < CQ_B; i++) {
        const int64_t a = is32 ? (int64_t)((const int32_t *)acc)[i] : ((const int64_t *)acc)[i];
        const uint64_t m = a < 0 ? 0u - (uint64_t)a : (uint64_t)a;
        uint64_t t;
        if (kind == CQ_RIGHT) {
            if (stoch) {
                const uint64_t rnd = (uint64_t)rhi[i] << 32 | rlo[i];
                t = (m + (rnd >> rsh)) >> sh;
            } else {
                t = (m + round_nearest + ((m >> sh) & 1u)) >> sh;
            }
        } else { /* min(m, lim + 1) << sh is m << sh or, where that exceeds qmax, at least qmax + 1;
                  * it cannot wrap: (lim + 1) << sh <= qmax + 2^sh < 2^64. (A select on the
                  * comparison, also used as a count, would not vectorise.) */
            const uint64_t ms = m < lim + 1u ? m : lim + 1u;
            t = ms << sh;
        }
        const uint64_t ovf = t > qmax;
        const uint64_t mag = t < qmax ? t : qmax;
        const uint64_t zero = a == 0;
        const int64_t v = a < 0 ? -(int64_t)mag : (int64_t)mag;
        if (bits == 8)
            ((int8_t *)q)[i] = (int8_t)v;
        else
            ((int16_t *)q)[i] = (int16_t)v;
        bin[i] = none_or(zero, bin_of(log2_u63(a < 0 ? ~(uint64_t)a : (uint64_t)a, vclz) + ea));
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
    TGT static void qf32_##SFX(const float *restrict x, int e, int bits, int stoch, const uint32_t *restrict rlo,   \
                               const uint32_t *restrict rhi, void *restrict q, uint8_t *restrict bin,               \
                               uint64_t *restrict cnt)                                                              \
    {                                                                                                               \
        if (bits == 8) {                                                                                            \
            if (stoch)                                                                                              \
                qf32_sr_body(x, e, 8, rlo, rhi, q, bin, cnt);                                                        \
            else                                                                                                    \
                qf32_rn_body(x, e, 8, q, bin, cnt);                                                                 \
        } else {                                                                                                    \
            if (stoch)                                                                                              \
                qf32_sr_body(x, e, 16, rlo, rhi, q, bin, cnt);                                                       \
            else                                                                                                    \
                qf32_rn_body(x, e, 16, q, bin, cnt);                                                                \
        }                                                                                                           \
    }                                                                                                               \
    TGT static void qacc_##SFX(const void *restrict acc, int is32, int kind, int sh, int ea, int bits, int stoch,   \
                               const uint32_t *restrict rlo, const uint32_t *restrict rhi, void *restrict q,        \
                               uint8_t *restrict bin, uint64_t *restrict cnt)                                       \
    {                                                                                                               \
        if (kind == CQ_LEFT) {                                                                                      \
            if (is32)                                                                                               \
                bits == 8 ? qacc_body(acc, 1, CQ_LEFT, sh, ea, 8, 0, VCLZ, rlo, rhi, q, bin, cnt)                        \
                          : qacc_body(acc, 1, CQ_LEFT, sh, ea, 16, 0, VCLZ, rlo, rhi, q, bin, cnt);                      \
            else                                                                                                    \
                bits == 8 ? qacc_body(acc, 0, CQ_LEFT, sh, ea, 8, 0, VCLZ, rlo, rhi, q, bin, cnt)                        \
                          : qacc_body(acc, 0, CQ_LEFT, sh, ea, 16, 0, VCLZ, rlo, rhi, q, bin, cnt);                      \
        } else if (stoch) {                                                                                         \
            if (is32)                                                                                               \
                bits == 8 ? qacc_body(acc, 1, CQ_RIGHT, sh, ea, 8, 1, VCLZ, rlo, rhi, q, bin, cnt)                       \
                          : qacc_body(acc, 1, CQ_RIGHT, sh, ea, 16, 1, VCLZ, rlo, rhi, q, bin, cnt);                     \
            else                                                                                                    \
                bits == 8 ? qacc_body(acc, 0, CQ_RIGHT, sh, ea, 8, 1, VCLZ, rlo, rhi, q, bin, cnt)                       \
                          : qacc_body(acc, 0, CQ_RIGHT, sh, ea, 16, 1, VCLZ, rlo, rhi, q, bin, cnt);                     \
        } else {                                                                                                    \
            if (is32)                                                                                               \
                bits == 8 ? qacc_body(acc, 1, CQ_RIGHT, sh, ea, 8, 0, VCLZ, rlo, rhi, q, bin, cnt)                       \
                          : qacc_body(acc, 1, CQ_RIGHT, sh, ea, 16, 0, VCLZ, rlo, rhi, q, bin, cnt);                     \
            else                                                                                                    \
                bits == 8 ? qacc_body(acc, 0, CQ_RIGHT, sh, ea, 8, 0, VCLZ, rlo, rhi, q, bin, cnt)                       \
                          : qacc_body(acc, 0, CQ_RIGHT, sh, ea, 16, 0, VCLZ, rlo, rhi, q, bin, cnt);                     \
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
 * key {seed, seed >> 32}. Elements 2p and 2p + 1 get, at position t = 2 (16 g + j) and
 * t + 1, their random word split into halves exactly as dlu_sr_bits64 forms it:
 * lo[t] = out[0], hi[t] = out[1], lo[t + 1] = out[2], hi[t + 1] = out[3]. Halves, because
 * that is what the fp32 kernel's 32-bit lanes read, and they come out of 64-bit lanes
 * with one blend (no permutation). */
typedef void philox_fn(uint64_t pair0, size_t ngroups, uint32_t step, uint32_t id, uint64_t seed,
                       uint32_t *restrict lo, uint32_t *restrict hi);

/* Portable: structure of arrays, one inner loop per round over the 16 lanes. */
static void philox_portable(uint64_t pair0, size_t ngroups, uint32_t step, uint32_t id, uint64_t seed,
                            uint32_t *restrict lo, uint32_t *restrict hi)
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
            const size_t t = 2 * (CQ_GROUP * g + (size_t)j);
            lo[t] = x0[j];
            hi[t] = x1[j];
            lo[t + 1] = x2[j];
            hi[t + 1] = x3[j];
        }
    }
}

#if CQ_X86
/* The round keys. The vector versions keep each 32-bit state word in the low half of a
 * 64-bit lane (vpmuludq multiplies exactly those); the high halves carry garbage that
 * nothing reads: the multiplies ignore it and the final blend drops it. */
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
                                        uint32_t *restrict lo, uint32_t *restrict hi)
{
    uint64_t k0[10], k1[10];
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), pmask = _mm512_set1_epi64(INT64_MAX);
    const __m512i m0 = _mm512_set1_epi64(DLU_PHILOX_M0), m1 = _mm512_set1_epi64(DLU_PHILOX_M1);

    round_keys(seed, k0, k1);
    for (size_t g = 0; g < ngroups; g++) { /* two vectors of 8 counters */
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
        /* dwords x0_0 x2_0 x0_1 x2_1 ...: the low halves of elements 2p, 2p+1, 2p+2, ... */
        uint32_t *l = lo + 2 * CQ_GROUP * g, *h = hi + 2 * CQ_GROUP * g;
        _mm512_storeu_si512((void *)l, _mm512_mask_blend_epi32(0xAAAA, a0, _mm512_slli_epi64(a2, 32)));
        _mm512_storeu_si512((void *)h, _mm512_mask_blend_epi32(0xAAAA, a1, _mm512_slli_epi64(a3, 32)));
        _mm512_storeu_si512((void *)(l + 16), _mm512_mask_blend_epi32(0xAAAA, b0, _mm512_slli_epi64(b2, 32)));
        _mm512_storeu_si512((void *)(h + 16), _mm512_mask_blend_epi32(0xAAAA, b1, _mm512_slli_epi64(b3, 32)));
    }
}

CQ_TGT_AVX2 static void philox_avx2(uint64_t pair0, size_t ngroups, uint32_t step, uint32_t id, uint64_t seed,
                                    uint32_t *restrict lo, uint32_t *restrict hi)
{
    uint64_t k0[10], k1[10];
    const __m256i lane = _mm256_set_epi64x(3, 2, 1, 0), pmask = _mm256_set1_epi64x(INT64_MAX);
    const __m256i m0 = _mm256_set1_epi64x(DLU_PHILOX_M0), m1 = _mm256_set1_epi64x(DLU_PHILOX_M1);

    round_keys(seed, k0, k1);
    for (size_t v = 0; v < 2 * ngroups; v++) { /* two vectors of 4 counters */
        const uint64_t p = pair0 + (uint64_t)(8 * v);
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
        uint32_t *l = lo + 16 * v, *h = hi + 16 * v;
        _mm256_storeu_si256((__m256i *)(void *)l, _mm256_blend_epi32(a0, _mm256_slli_epi64(a2, 32), 0xAA));
        _mm256_storeu_si256((__m256i *)(void *)h, _mm256_blend_epi32(a1, _mm256_slli_epi64(a3, 32), 0xAA));
        _mm256_storeu_si256((__m256i *)(void *)(l + 8), _mm256_blend_epi32(b0, _mm256_slli_epi64(b2, 32), 0xAA));
        _mm256_storeu_si256((__m256i *)(void *)(h + 8), _mm256_blend_epi32(b1, _mm256_slli_epi64(b3, 32), 0xAA));
    }
}
#endif

/* ------------------------------------------------------------------------------------ */
/* Implementations and dispatch                                                         */
/* ------------------------------------------------------------------------------------ */

typedef void qf32_fn(const float *restrict x, int e, int bits, int stoch, const uint32_t *restrict rlo,
                     const uint32_t *restrict rhi, void *restrict q, uint8_t *restrict bin, uint64_t *restrict cnt);
typedef void qacc_fn(const void *restrict acc, int is32, int kind, int sh, int ea, int bits, int stoch,
                     const uint32_t *restrict rlo, const uint32_t *restrict rhi, void *restrict q,
                     uint8_t *restrict bin, uint64_t *restrict cnt);
typedef void s16_fn(const int16_t *restrict q, int e, uint8_t *restrict bin, uint64_t *restrict cnt);

CQ_DEFINE_KERNELS(portable, , 1)
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

/* The random words of one block, in halves. */
typedef struct cq_rnd {
    uint32_t lo[CQ_RND_WORDS], hi[CQ_RND_WORDS];
    const uint32_t *plo, *phi; /* the block's first element */
} cq_rnd;

/* The random words of elements idx .. idx + nb - 1 (idx mod 2^64), generated from the even
 * index at or below idx; rb->plo[i], rb->phi[i] are the halves of element idx + i's. */
static void block_rnd(const cq_impl *im, uint64_t seed, uint32_t id, uint32_t step, uint64_t idx, size_t nb,
                      cq_rnd *rb)
{
    const size_t off = (size_t)(idx & 1u), npairs = (off + nb + 1) / 2;
    im->philox(idx >> 1, (npairs + CQ_GROUP - 1) / CQ_GROUP, step, id, seed, rb->lo, rb->hi);
    rb->plo = rb->lo + off;
    rb->phi = rb->hi + off;
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
    cq_rnd rb; /* filled per block in stochastic mode */
    float xpad[CQ_B];
    int16_t qpad[CQ_B];
    uint8_t bin[CQ_B];
    cq_acc a;

    rb.plo = rb.phi = NULL;
    acc_init(&a);
    for (size_t b0 = 0; b0 < n; b0 += CQ_B) {
        const size_t nb = n - b0 < CQ_B ? n - b0 : CQ_B;
        const float *xb = x + b0;
        void *qb = (uint8_t *)q_out + b0 * esz;
        if (nb < CQ_B) { /* the last block: pad with +0, write to the side */
            memcpy(xpad, xb, nb * sizeof *xpad);
            memset(xpad + nb, 0, (CQ_B - nb) * sizeof *xpad);
            a.pad += CQ_B - nb;
            xb = xpad;
            qb = qpad;
        }
        if (stoch)
            block_rnd(im, seed, id, step, (uint64_t)index_base + b0, nb, &rb);
        im->qf32(xb, ec, bits, stoch, rb.plo, rb.phi, qb, bin, a.cnt);
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
    cq_rnd rb; /* filled per block in stochastic mode */
    int64_t apad[CQ_B];
    int16_t qpad[CQ_B];
    uint8_t bin[CQ_B];
    cq_acc a;

    rb.plo = rb.phi = NULL;
    acc_init(&a);
    for (size_t b0 = 0; b0 < n; b0 += CQ_B) {
        const size_t nb = n - b0 < CQ_B ? n - b0 : CQ_B;
        const void *ab = (const uint8_t *)acc + b0 * asz;
        void *qb = q_out ? (void *)((uint8_t *)q_out + b0 * esz) : (void *)qpad;
        const int draws = stoch && kind == CQ_RIGHT; /* left shifts are exact: no random bits */
        if (draws)
            block_rnd(im, seed, id, step, (uint64_t)index_base + b0, nb, &rb);
        if (!fast) { /* shifts of 64 bits or more: the reference, element by element */
            for (size_t i = 0; i < nb; i++) {
                const int64_t v = is32 ? (int64_t)((const int32_t *)ab)[i] : ((const int64_t *)ab)[i];
                uint32_t info;
                const uint64_t rnd = draws ? (uint64_t)rb.phi[i] << 32 | rb.plo[i] : 0;
                const int32_t r = dlu_dfp_requantize(v, ea, eo, bits, mode, rnd, &info);
                if (q_out && bits == 8)
                    ((int8_t *)qb)[i] = (int8_t)r;
                else if (q_out)
                    ((int16_t *)qb)[i] = (int16_t)r;
                if (st && q_out)
                    dlu_stats_record(st, info);
                else if (st)
                    dlu_stats_record(st, dlu_qf_hist_only(info));
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
        im->qacc(ab, is32, kind, sh, eac, bits, stoch, rb.plo, rb.phi, qb, bin, a.cnt);
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
    cq_rnd rb;
    for (size_t b0 = 0; b0 < n; b0 += CQ_B) {
        const size_t nb = n - b0 < CQ_B ? n - b0 : CQ_B;
        block_rnd(im, seed, id, step, index0 + b0, nb, &rb);
        for (size_t i = 0; i < nb; i++)
            out[b0 + i] = (uint64_t)rb.phi[i] << 32 | rb.plo[i];
    }
}
