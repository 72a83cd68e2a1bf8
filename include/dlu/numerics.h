/* numerics.h -- the OpenDLU numerics, written once for every backend.
 *
 * What it is: header-only C (static inline functions) holding every piece of arithmetic
 * whose bits must agree between the CPU reference (C11), the CUDA backend (nvcc) and the
 * SystemC model (C++17): number formats, the Philox-4x32-10 generator and the
 * stochastic-rounding stream, fp32 -> DFP quantization, requantization of exact integer
 * accumulators, the statistics circuit (leading-sign-bit histogram and
 * zero/underflow/overflow/NaN counts), dequantization, and a deterministic
 * exp/log/softmax-cross-entropy. docs/numerics.md is the written contract; this file is
 * its executable form, and tests/vectors/ holds the bits it must reproduce.
 *
 * What it is not: not a tensor library (no allocation, no shapes beyond flat arrays), not
 * fast (fast kernels live beside their backend and are tested against these functions),
 * and not the scaling policy (libdl/scale.c decides exponents from the statistics).
 *
 * Build requirements (results are only bit-exact across backends when these hold):
 *   - host: float evaluated in float (FLT_EVAL_METHOD 0, or 16; never x87), -ffp-contract=off,
 *     no -ffast-math, no flush-to-zero (FTZ/DAZ) in the FPU control word.
 *   - device: no --use_fast_math and no -ftz=true. fp32 arithmetic goes through
 *     __fadd_rn/__fsub_rn/__fmul_rn/__fdiv_rn, which nvcc never fuses into FMAs, so
 *     -fmad=false is not needed for this header (the rest of a kernel may still want it).
 * Quantization, requantization, statistics and Philox use integer arithmetic only and do
 * not depend on any of the above; only dequantize and exp/log/softmax touch the FPU.
 *
 * Thread safety: every function is pure except that it writes through its output
 * pointers; struct dlu_stats is not updated atomically (merge per-thread copies). */
#ifndef DLU_NUMERICS_H
#define DLU_NUMERICS_H

#include <stddef.h>
#include <stdint.h>
#include <float.h> /* FLT_EVAL_METHOD only */

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------ */
/* Portability layer                                                                    */
/* ------------------------------------------------------------------------------------ */

#if defined(__CUDACC__)
#define DLU_HD __host__ __device__
#else
#define DLU_HD
#endif

#if defined(__FAST_MATH__) || defined(__USE_FAST_MATH__)
#error "dlu/numerics.h: -ffast-math/--use_fast_math breaks bit-exactness (NaN tests, rint trick)"
#endif
#if !defined(__CUDA_ARCH__) && defined(FLT_EVAL_METHOD) && (FLT_EVAL_METHOD == 1 || FLT_EVAL_METHOD == 2)
#error "dlu/numerics.h needs FLT_EVAL_METHOD == 0 (x87 excess precision); use -msse2 -mfpmath=sse"
#endif

/* Every fp32 add/sub/mul/div in this header is written through these macros so that no
 * compiler can contract a*b+c into an FMA (which rounds once instead of twice and so
 * changes bits). On the device the _rn intrinsics are never contracted. On the host the
 * plain operators are safe only because the build uses -ffp-contract=off (GCC's default
 * in GNU mode is "fast", which does contract across statements). */
#if defined(__CUDA_ARCH__)
#define DLU_FADD(a, b) __fadd_rn((a), (b))
#define DLU_FSUB(a, b) __fsub_rn((a), (b))
#define DLU_FMUL(a, b) __fmul_rn((a), (b))
#define DLU_FDIV(a, b) __fdiv_rn((a), (b))
#else
#define DLU_FADD(a, b) ((float)(a) + (float)(b))
#define DLU_FSUB(a, b) ((float)(a) - (float)(b))
#define DLU_FMUL(a, b) ((float)(a) * (float)(b))
#define DLU_FDIV(a, b) ((float)(a) / (float)(b))
#endif

#if defined(__cplusplus)
#define DLU_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define DLU_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* Raw IEEE-754 binary32 bits of a float and back. */
static inline DLU_HD uint32_t dlu_f32_bits(float f)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    union { float f; uint32_t u; } v; /* type punning through a union: C11 6.5.2.3; GCC/Clang in C++ */
    v.f = f;
    return v.u;
#endif
}

static inline DLU_HD float dlu_f32_from_bits(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    union { float f; uint32_t u; } v;
    v.u = u;
    return v.f;
#endif
}

/* Number of leading zero bits of x; 64 for x == 0. */
static inline DLU_HD int dlu__clz64(uint64_t x)
{
#if defined(__CUDA_ARCH__)
    return __clzll((long long)x);
#elif defined(__GNUC__)
    return x ? __builtin_clzll(x) : 64;
#else
    int n = 0;
    if (!x)
        return 64;
    while (!(x & 0x8000000000000000ull)) {
        x <<= 1;
        n++;
    }
    return n;
#endif
}

/* ------------------------------------------------------------------------------------ */
/* Formats                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef enum dlu_format {
#define DLU_FORMAT(NAME, str, bits, ctype, is_dfp) DLU_FMT_##NAME,
#include "dlu/formats.def"
#undef DLU_FORMAT
    DLU_FMT_COUNT
} dlu_format;

DLU_STATIC_ASSERT(DLU_FMT_COUNT == 3, "formats.def changed: update docs/numerics.md and the tests");
#define DLU_FORMAT(NAME, str, bits, ctype, is_dfp) \
    DLU_STATIC_ASSERT(sizeof(ctype) * 8 == (bits), "storage type of " str " does not have " #bits " bits");
#include "dlu/formats.def"
#undef DLU_FORMAT

/* Bits per element (32, 8, 16); 0 for a value outside the enum. */
static inline DLU_HD int dlu_format_bits(enum dlu_format fmt)
{
    switch (fmt) {
#define DLU_FORMAT(NAME, str, bits, ctype, is_dfp) case DLU_FMT_##NAME: return (bits);
#include "dlu/formats.def"
#undef DLU_FORMAT
    default: return 0;
    }
}

/* Bytes per stored element (sizeof the storage type); 0 for a value outside the enum. */
static inline DLU_HD size_t dlu_format_nbytes(enum dlu_format fmt)
{
    switch (fmt) {
#define DLU_FORMAT(NAME, str, bits, ctype, is_dfp) case DLU_FMT_##NAME: return sizeof(ctype);
#include "dlu/formats.def"
#undef DLU_FORMAT
    default: return 0;
    }
}

/* 1 for a dynamic-fixed-point format (integers + shared exponent), else 0. */
static inline DLU_HD int dlu_format_is_dfp(enum dlu_format fmt)
{
    switch (fmt) {
#define DLU_FORMAT(NAME, str, bits, ctype, is_dfp) case DLU_FMT_##NAME: return (is_dfp);
#include "dlu/formats.def"
#undef DLU_FORMAT
    default: return 0;
    }
}

/* Lower-case name as used on the command line ("fp32", "dfp8", "dfp16"); "unknown"
 * outside the enum. Returns a static string. */
static inline DLU_HD const char *dlu_format_name(enum dlu_format fmt)
{
    switch (fmt) {
#define DLU_FORMAT(NAME, str, bits, ctype, is_dfp) case DLU_FMT_##NAME: return (str);
#include "dlu/formats.def"
#undef DLU_FORMAT
    default: return "unknown";
    }
}

/* Largest magnitude of a b-bit DFP integer, qmax = 2^(b-1) - 1 (127, 32767). The range is
 * symmetric, [-qmax, qmax]: -2^(b-1) is never produced, so negation never overflows and
 * saturation is sign-symmetric. 0 for fp32. */
static inline DLU_HD int32_t dlu_format_qmax(enum dlu_format fmt)
{
    return dlu_format_is_dfp(fmt) ? (int32_t)((1u << (dlu_format_bits(fmt) - 1)) - 1u) : 0;
}

/* Valid shared exponents of a DFP tensor: DLU_EXP_MIN <= e <= dlu_format_exp_max(fmt).
 * In that range every q * 2^e with |q| <= qmax is exactly an fp32 (the grid step 2^e is
 * no finer than the smallest subnormal 2^-149, and qmax * 2^e < FLT_MAX), so dequantize
 * is exact. Quantize/requantize are defined (and bit-exact) for every int exponent; the
 * valid range is what scaling policies must choose from. */
#define DLU_EXP_MIN (-149)

/* 129 - bits: 121 for dfp8, 113 for dfp16 (qmax * 2^e = 2^128 - 2^e < 2^128). */
static inline DLU_HD int dlu_format_exp_max(enum dlu_format fmt)
{
    return dlu_format_is_dfp(fmt) ? 129 - dlu_format_bits(fmt) : 0;
}

/* ------------------------------------------------------------------------------------ */
/* Rounding modes                                                                       */
/* ------------------------------------------------------------------------------------ */

typedef enum dlu_round {
    DLU_ROUND_NEAREST = 0,    /* round to nearest, ties to even (on the integer grid) */
    DLU_ROUND_STOCHASTIC = 1, /* unbiased stochastic rounding from dlu_sr_bits64() */
    DLU_ROUND_COUNT
} dlu_round;

static inline DLU_HD const char *dlu_round_name(enum dlu_round mode)
{
    switch (mode) {
    case DLU_ROUND_NEAREST: return "nearest";
    case DLU_ROUND_STOCHASTIC: return "stochastic";
    default: return "unknown";
    }
}

/* ------------------------------------------------------------------------------------ */
/* Philox-4x32-10 and the stochastic-rounding stream                                    */
/* ------------------------------------------------------------------------------------ */

/* Philox-4x32 with 10 rounds (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
 * easy as 1, 2, 3", SC11), bit-identical to Random123's philox4x32_R(10, ...) and to
 * cuRAND's curand_Philox4x32_10(). A pure function: 128-bit counter + 64-bit key ->
 * 128 random bits. ctr[0] is the least significant counter word, key[0] the first key
 * word, exactly as in Random123's kat_vectors file. */
#define DLU_PHILOX_M0 0xD2511F53u /* round multipliers */
#define DLU_PHILOX_M1 0xCD9E8D57u
#define DLU_PHILOX_W0 0x9E3779B9u /* Weyl key increments (golden ratio, sqrt(3)-1) */
#define DLU_PHILOX_W1 0xBB67AE85u

static inline DLU_HD void dlu_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    int round;

    for (round = 0; round < 10; round++) {
        uint64_t p0, p1;
        if (round > 0) { /* the key schedule bumps the key before rounds 2..10 */
            k0 += DLU_PHILOX_W0;
            k1 += DLU_PHILOX_W1;
        }
        p0 = (uint64_t)DLU_PHILOX_M0 * x0;
        p1 = (uint64_t)DLU_PHILOX_M1 * x2;
        x0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
        x1 = (uint32_t)p1;
        x2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x3 = (uint32_t)p0;
    }
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

/* The 64 random bits that stochastic rounding uses for element `index` (0-based, global
 * within the tensor) of tensor `tensor_id` at training step `step` under `seed`:
 *   key = { seed & 0xffffffff, seed >> 32 }
 *   ctr = { (index >> 1) & 0xffffffff, (index >> 1) >> 32, step, tensor_id }
 *   out = philox4x32_10(ctr, key)
 *   bits = index even ? out[0] | (uint64_t)out[1] << 32 : out[2] | (uint64_t)out[3] << 32
 * One Philox call serves two consecutive elements (2k, 2k+1). The bits depend only on
 * these four numbers, never on thread or block layout, so every backend and every
 * thread count rounds identically. */
static inline DLU_HD uint64_t dlu_sr_bits64(uint64_t seed, uint32_t tensor_id, uint32_t step, uint64_t index)
{
    const uint64_t pair = index >> 1;
    uint32_t ctr[4], key[2], out[4];
    unsigned h;

    ctr[0] = (uint32_t)pair;
    ctr[1] = (uint32_t)(pair >> 32);
    ctr[2] = step;
    ctr[3] = tensor_id;
    key[0] = (uint32_t)seed;
    key[1] = (uint32_t)(seed >> 32);
    dlu_philox4x32_10(ctr, key, out);
    h = (unsigned)(index & 1u) * 2u;
    return (uint64_t)out[h] | ((uint64_t)out[h + 1] << 32);
}

/* ------------------------------------------------------------------------------------ */
/* Statistics (the DLU's statistics circuit)                                            */
/* ------------------------------------------------------------------------------------ */

/* The histogram bins the absolute position k of the most significant bit of each nonzero
 * value before rounding and saturation (k = floor(log2|v|) for fp32 inputs; the
 * leading-sign-bit position for accumulators, see dlu_leading_sign_pos64()), clamped to
 * [KMIN, KMAX]: a k below KMIN counts in bin 0, above KMAX (and +-Inf) in the last bin.
 * Bin index = k - DLU_STATS_KMIN. */
#define DLU_STATS_KMIN (-64)
#define DLU_STATS_KMAX 63
#define DLU_STATS_NBINS (DLU_STATS_KMAX - DLU_STATS_KMIN + 1) /* 128 */

/* Element counts of one or more tensors. Invariants, per element recorded:
 *   count     every element;
 *   nan       NaN inputs (quantized to 0; no histogram entry);
 *   zeros     inputs exactly zero (+0, -0, acc == 0; no histogram entry);
 *   underflow nonzero inputs whose rounded result is 0 (flushed to zero);
 *   overflow  inputs whose result saturated to +-qmax (includes +-Inf);
 *   hist[]    one entry per element that is neither NaN nor zero, so
 *             sum(hist) == count - zeros - nan.
 * All fields are sums, so merging per-thread or per-rank copies in any order gives the
 * same bits. */
typedef struct dlu_stats {
    uint64_t hist[DLU_STATS_NBINS]; /* (128) counts by MSB position k, bin k - KMIN */
    uint64_t count;
    uint64_t zeros;
    uint64_t overflow;
    uint64_t underflow;
    uint64_t nan;
} dlu_stats;

/* Per-element status word, the "flags" column of the vector files: the element's event
 * bits in bits 0..7 and its histogram bin (k - KMIN, 0..127) in bits 8..15, or
 * DLU_QF_BIN_NONE there for NaN and zero inputs. */
#define DLU_QF_ZERO       0x01u
#define DLU_QF_UNDERFLOW  0x02u
#define DLU_QF_OVERFLOW   0x04u
#define DLU_QF_NAN        0x08u
#define DLU_QF_FLAGS_MASK 0xFFu
#define DLU_QF_BIN_SHIFT  8
#define DLU_QF_BIN_NONE   0xFFu
#define DLU_QF_BIN(info)  (((uint32_t)(info) >> DLU_QF_BIN_SHIFT) & 0xFFu)

static inline DLU_HD void dlu_stats_clear(struct dlu_stats *st)
{
    int i;
    for (i = 0; i < DLU_STATS_NBINS; i++)
        st->hist[i] = 0;
    st->count = st->zeros = st->overflow = st->underflow = st->nan = 0;
}

/* dst += src, field by field (integer sums: order-independent). */
static inline DLU_HD void dlu_stats_merge(struct dlu_stats *dst, const struct dlu_stats *src)
{
    int i;
    for (i = 0; i < DLU_STATS_NBINS; i++)
        dst->hist[i] += src->hist[i];
    dst->count += src->count;
    dst->zeros += src->zeros;
    dst->overflow += src->overflow;
    dst->underflow += src->underflow;
    dst->nan += src->nan;
}

/* Add one element's status word (from dlu_dfp_quantize/dlu_dfp_requantize) to st. */
static inline DLU_HD void dlu_stats_record(struct dlu_stats *st, uint32_t info)
{
    const uint32_t bin = DLU_QF_BIN(info);
    st->count++;
    if (info & DLU_QF_NAN)
        st->nan++;
    if (info & DLU_QF_ZERO)
        st->zeros++;
    if (info & DLU_QF_UNDERFLOW)
        st->underflow++;
    if (info & DLU_QF_OVERFLOW)
        st->overflow++;
    if (bin < DLU_STATS_NBINS)
        st->hist[bin]++;
}

/* Histogram bin of MSB position k (clamped), as stored in a status word. */
static inline DLU_HD uint32_t dlu_stats_bin(int k)
{
    if (k < DLU_STATS_KMIN)
        k = DLU_STATS_KMIN;
    if (k > DLU_STATS_KMAX)
        k = DLU_STATS_KMAX;
    return (uint32_t)(k - DLU_STATS_KMIN);
}

/* Position of the most significant bit that differs from the sign bit of a two's
 * complement integer, as the hardware's leading-sign-bit detector reports it; -1 for 0
 * and for -1 (no bit differs). For x > 0 it is floor(log2 x). For x < 0 it is
 * floor(log2(-x - 1)) = floor(log2|x|) except at x = -2^j, where it is j - 1 (one less):
 * -2^j needs only j+1 bits in two's complement. Equivalently: x fits in lsp(x) + 2 bits. */
static inline DLU_HD int dlu_leading_sign_pos64(int64_t x)
{
    const uint64_t u = x < 0 ? ~(uint64_t)x : (uint64_t)x;
    return 63 - dlu__clz64(u);
}

static inline DLU_HD int dlu_leading_sign_pos32(int32_t x)
{
    const uint32_t u = x < 0 ? ~(uint32_t)x : (uint32_t)x;
    return 63 - dlu__clz64((uint64_t)u);
}

/* ------------------------------------------------------------------------------------ */
/* Rounding on the integer grid                                                         */
/* ------------------------------------------------------------------------------------ */

/* round(m * 2^-r) for a magnitude m and a right shift r >= 1, on integers only.
 * F is the discarded fraction scaled to 64 bits: F = floor(frac(m * 2^-r) * 2^64), which is
 * exact for r <= 64 (the fraction has r bits) and truncated for r > 64 (bits below are
 * the sticky part).
 *   nearest:    up if F > 1/2, or F == 1/2 and (sticky or the kept integer is odd).
 *   stochastic: up if F + rnd >= 2^64, i.e. add the random bits below the cut and keep
 *               the carry: P(up) = F / 2^64, exactly the discarded fraction when r <= 64;
 *               for r > 64 it is low by less than 2^-64 (in units of the result's LSB).
 *               For r <= 64 this is the same as adding the top r bits of rnd to the r
 *               discarded bits and truncating. */
static inline DLU_HD uint64_t dlu__round_shift_u64(uint64_t m, int r, enum dlu_round mode, uint64_t rnd)
{
    uint64_t q, frac, sticky;

    if (r < 64) {
        q = m >> r;
        frac = m << (64 - r);
        sticky = 0;
    } else if (r == 64) {
        q = 0;
        frac = m;
        sticky = 0;
    } else if (r < 128) {
        q = 0;
        frac = m >> (r - 64);
        sticky = m & ((1ull << (r - 64)) - 1u);
    } else {
        q = 0;
        frac = 0;
        sticky = m;
    }
    if (mode == DLU_ROUND_STOCHASTIC)
        return q + (rnd > ~frac); /* carry out of frac + rnd */
    if (frac > 0x8000000000000000ull || (frac == 0x8000000000000000ull && (sticky || (q & 1u))))
        return q + 1;
    return q;
}

/* Shift magnitude m (>= 1) by 2^-r with rounding (r > 0) or left (r <= 0), then saturate
 * at qmax. Sets DLU_QF_OVERFLOW / DLU_QF_UNDERFLOW in *flags. Shared by quantize,
 * requantize and bias conversion so all three round identically. */
static inline DLU_HD uint64_t dlu__scale_mag(uint64_t m, int r, uint64_t qmax, enum dlu_round mode, uint64_t rnd,
                                            uint32_t *flags)
{
    uint64_t mag;

    if (r > 0) {
        mag = dlu__round_shift_u64(m, r, mode, rnd);
    } else {
        const int l = -r;
        if (l >= 64 || m > (qmax >> l)) { /* m << l > qmax: saturate without shifting */
            *flags |= DLU_QF_OVERFLOW;
            return qmax;
        }
        mag = m << l;
    }
    if (mag > qmax) {
        *flags |= DLU_QF_OVERFLOW;
        return qmax;
    }
    if (mag == 0)
        *flags |= DLU_QF_UNDERFLOW;
    return mag;
}

/* Shifts beyond +-1024 give the same result as +-1024 (a nonzero magnitude saturates
 * once shifted left by 64, and rounds to zero once shifted right by 128); clamping keeps
 * the shift arithmetic in int range for any int exponents. */
static inline DLU_HD int dlu__clamp_shift(int64_t s)
{
    return s < -1024 ? -1024 : (s > 1024 ? 1024 : (int)s);
}

/* ------------------------------------------------------------------------------------ */
/* Scalar quantize / requantize / dequantize                                            */
/* ------------------------------------------------------------------------------------ */

static inline DLU_HD int64_t dlu__quantize_f32_core(float x, int e, uint64_t qmax, enum dlu_round mode, uint64_t rnd,
                                                   uint32_t *info)
{
    const uint32_t u = dlu_f32_bits(x);
    const int neg = (int)(u >> 31);
    const int bexp = (int)((u >> 23) & 0xFFu); /* biased exponent field */
    const uint32_t man = u & 0x7FFFFFu;
    uint32_t flags = 0;
    uint64_t sig, mag;
    int E, k;

    if (bexp == 0xFF) {
        if (man) { /* NaN -> 0, counted as NaN */
            *info = DLU_QF_NAN | (DLU_QF_BIN_NONE << DLU_QF_BIN_SHIFT);
            return 0;
        }
        *info = DLU_QF_OVERFLOW | (dlu_stats_bin(DLU_STATS_KMAX) << DLU_QF_BIN_SHIFT); /* +-Inf */
        return neg ? -(int64_t)qmax : (int64_t)qmax;
    }
    if (bexp == 0 && man == 0) { /* +0 or -0 */
        *info = DLU_QF_ZERO | (DLU_QF_BIN_NONE << DLU_QF_BIN_SHIFT);
        return 0;
    }
    /* |x| = sig * 2^E exactly, sig a 24-bit (normal) or shorter (subnormal) integer. */
    sig = bexp ? (uint64_t)(man | 0x800000u) : (uint64_t)man;
    E = (bexp ? bexp : 1) - 150;
    k = E + 63 - dlu__clz64(sig); /* floor(log2|x|) */
    mag = dlu__scale_mag(sig, dlu__clamp_shift((int64_t)e - E), qmax, mode, rnd, &flags);
    *info = flags | (dlu_stats_bin(k) << DLU_QF_BIN_SHIFT);
    return neg ? -(int64_t)mag : (int64_t)mag;
}

/* Quantize one fp32 value x to a `bits`-bit DFP integer q with shared exponent e, so that
 * q * 2^e approximates x:
 *   q = sat(round(x * 2^-e)),  sat = clamp to [-qmax, qmax], qmax = 2^(bits-1) - 1,
 * computed on the integer grid from the IEEE-754 fields (no float arithmetic): the
 * magnitude is rounded, then saturated, then the sign applied (so rounding is symmetric).
 *   bits  2..32; e any int (valid DFP tensors use DLU_EXP_MIN..dlu_format_exp_max()).
 *   mode  DLU_ROUND_NEAREST (ties to even) or DLU_ROUND_STOCHASTIC.
 *   rnd   64 random bits for stochastic rounding, normally dlu_sr_bits64(seed, id, step,
 *         index); ignored for nearest.
 *   info  out (may be NULL): the element's status word (DLU_QF_* flags | bin << 8).
 * NaN -> 0 (DLU_QF_NAN); +-Inf -> +-qmax (DLU_QF_OVERFLOW, last histogram bin);
 * +-0 -> 0 (DLU_QF_ZERO); subnormals are exact inputs like any other value. */
static inline DLU_HD int32_t dlu_dfp_quantize(float x, int e, int bits, enum dlu_round mode, uint64_t rnd,
                                              uint32_t *info)
{
    uint32_t inf;
    const int64_t q = dlu__quantize_f32_core(x, e, (1ull << (bits - 1)) - 1u, mode, rnd, &inf);
    if (info)
        *info = inf;
    return (int32_t)q;
}

/* Requantize an exact integer accumulator value acc * 2^ea to a `bits`-bit DFP integer
 * with exponent eo: q = sat(round(acc * 2^(ea - eo))). With s = eo - ea:
 *   s > 0   right shift by s with rounding (nearest-even or stochastic, same rule and the
 *           same random stream as dlu_dfp_quantize);
 *   s <= 0  exact left shift by -s, saturating (never overflows int64 on the way).
 * Typical use: acc = sum_k qa*qb (int32 for dfp8, int64 for dfp16) plus bias, with
 * ea = exp_a + exp_b. Statistics: k = dlu_leading_sign_pos64(acc) + ea (the leading sign
 * bit of the full-width accumulator, before rounding and saturation); zero, underflow
 * and overflow as for quantize; never NaN. info may be NULL. */
static inline DLU_HD int32_t dlu_dfp_requantize(int64_t acc, int ea, int eo, int bits, enum dlu_round mode,
                                                uint64_t rnd, uint32_t *info)
{
    const uint64_t qmax = (1ull << (bits - 1)) - 1u;
    const uint64_t m = acc < 0 ? 0u - (uint64_t)acc : (uint64_t)acc; /* |INT64_MIN| = 2^63 fits */
    uint32_t flags = 0, inf;
    uint64_t mag;

    if (acc == 0) {
        inf = DLU_QF_ZERO | (DLU_QF_BIN_NONE << DLU_QF_BIN_SHIFT);
        mag = 0;
    } else {
        mag = dlu__scale_mag(m, dlu__clamp_shift((int64_t)eo - ea), qmax, mode, rnd, &flags);
        /* k = lsp + ea, computed so that no int exponent overflows; stats_bin clamps it */
        inf = flags | (dlu_stats_bin(dlu__clamp_shift((int64_t)dlu_leading_sign_pos64(acc) + ea)) << DLU_QF_BIN_SHIFT);
    }
    if (info)
        *info = inf;
    return acc < 0 ? -(int32_t)mag : (int32_t)mag;
}

/* A fp32 bias b in the accumulator's scale: round_nearest_even(b * 2^-ea) as int64,
 * saturated to [-(2^63-1), 2^63-1]. NaN -> 0, +-Inf -> +-(2^63-1). Add it to the
 * accumulator with dlu_add_sat_i64() before requantizing, so bias costs no extra rounding. */
static inline DLU_HD int64_t dlu_bias_to_acc(float b, int ea)
{
    uint32_t info;
    return dlu__quantize_f32_core(b, ea, (uint64_t)INT64_MAX, DLU_ROUND_NEAREST, 0, &info);
}

/* a + b saturated to the symmetric int64 range [-(2^63-1), 2^63-1]. */
static inline DLU_HD int64_t dlu_add_sat_i64(int64_t a, int64_t b)
{
    int64_t s;
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < -INT64_MAX - b)
        return -INT64_MAX;
    s = a + b;
    return s < -INT64_MAX ? -INT64_MAX : s;
}

/* 2^k as a float, built from bits; k must be in [-126, 127]. */
static inline DLU_HD float dlu__pow2f(int k)
{
    return dlu_f32_from_bits((uint32_t)(k + 127) << 23);
}

/* v * 2^e (dlu__scale_pow2f), and q * 2^e as fp32 (dlu_dfp_dequantize). Exact (no
 * rounding) whenever |q| <= 2^24 and the product is an fp32, which holds for every DFP value with e in [DLU_EXP_MIN, dlu_format_exp_max()]. Outside
 * that range the result is q * 2^e correctly rounded (RNE, to a subnormal, 0 or +-Inf):
 * (float)q is exact, the first power-of-two factor keeps the intermediate normal and
 * exact, the second rounds once. */
static inline DLU_HD float dlu__scale_pow2f(float v, int e)
{
    if (e < -200)
        e = -200; /* |q| * 2^-200 < 2^-168: rounds to 0 like any e below */
    if (e > 200)
        e = 200;
    if (e < -126)
        return DLU_FMUL(DLU_FMUL(v, dlu__pow2f(-126)), dlu__pow2f(e + 126));
    if (e > 127)
        return DLU_FMUL(DLU_FMUL(v, dlu__pow2f(127)), dlu__pow2f(e - 127));
    return DLU_FMUL(v, dlu__pow2f(e));
}

static inline DLU_HD float dlu_dfp_dequantize(int32_t q, int e)
{
    return dlu__scale_pow2f((float)q, e);
}

/* An exact integer accumulator as fp32: acc * 2^ea, with (float)acc rounded to nearest
 * even (every backend's int64 -> float conversion does the same) and then scaled like
 * dlu_dfp_dequantize. Used where a tensor class is fp32 while its producer is an integer
 * GEMM (the weight gradient with --format ...,g=fp32). */
static inline DLU_HD float dlu_acc_to_f32(int64_t acc, int ea)
{
    return dlu__scale_pow2f((float)acc, ea);
}

/* Histogram-only statistics (the weight gradient's with --format ...,g=fp32, where no
 * integer is produced): of a status word, the part they keep -- count, zeros and the bin,
 * not overflow or underflow -- and the status word of an accumulator acc at exponent ea,
 * as a requantization at eo = ea would record it. */
static inline DLU_HD uint32_t dlu_qf_hist_only(uint32_t info)
{
    return info & ~(DLU_QF_OVERFLOW | DLU_QF_UNDERFLOW);
}

static inline DLU_HD uint32_t dlu_acc_hist_info(int64_t acc, int ea)
{
    uint32_t info;
    (void)dlu_dfp_requantize(acc, ea, ea, 16, DLU_ROUND_NEAREST, 0, &info);
    return dlu_qf_hist_only(info);
}

/* ------------------------------------------------------------------------------------ */
/* Tensor helpers: quantize / requantize / dequantize n elements                        */
/* ------------------------------------------------------------------------------------ */

/* Shared by the tensor helpers below: argument check, the element's random bits (0 for
 * nearest), and storing one result with its statistics. */
static inline DLU_HD int dlu__tensor_args_ok(enum dlu_format fmt, enum dlu_round mode, size_t n, const void *src,
                                             const void *q_out)
{
    return dlu_format_is_dfp(fmt) && (mode == DLU_ROUND_NEAREST || mode == DLU_ROUND_STOCHASTIC) &&
           (n == 0 || (src && q_out));
}

static inline DLU_HD uint64_t dlu__sr_rnd(enum dlu_round mode, uint64_t seed, uint32_t tensor_id, uint32_t step,
                                          uint64_t index)
{
    return mode == DLU_ROUND_STOCHASTIC ? dlu_sr_bits64(seed, tensor_id, step, index) : 0;
}

static inline DLU_HD void dlu__store_q(void *q_out, int bits, size_t i, int32_t q, uint32_t info,
                                       struct dlu_stats *st)
{
    if (bits == 8)
        ((int8_t *)q_out)[i] = (int8_t)q;
    else
        ((int16_t *)q_out)[i] = (int16_t)q;
    if (st)
        dlu_stats_record(st, info);
}

/* Quantize x[0..n) to q_out (int8_t for DLU_FMT_DFP8, int16_t for DLU_FMT_DFP16) with
 * shared exponent e. Element i uses the stochastic-rounding bits of global index
 * index_base + i (so a tensor split into chunks quantizes exactly like the whole).
 * If st is non-NULL, every element is recorded into it (added: the caller clears).
 * Returns DLU_OK, or DLU_EINVAL (nothing written) if fmt is not a DFP format, mode is not
 * a rounding mode, or x/q_out is NULL while n > 0. */
static inline DLU_HD dlu_status dlu_quantize_f32(const float *x /* (n) */, size_t n, int e, enum dlu_format fmt,
                                                 enum dlu_round mode, uint64_t seed, uint32_t tensor_id,
                                                 uint32_t step, size_t index_base,
                                                 void *q_out /* (n) int8_t or int16_t */, struct dlu_stats *st)
{
    const int bits = dlu_format_bits(fmt);
    size_t i;

    if (!dlu__tensor_args_ok(fmt, mode, n, x, q_out))
        return DLU_EINVAL;
    for (i = 0; i < n; i++) {
        uint32_t info;
        const uint64_t rnd = dlu__sr_rnd(mode, seed, tensor_id, step, (uint64_t)index_base + i);
        const int32_t q = dlu_dfp_quantize(x[i], e, bits, mode, rnd, &info);
        dlu__store_q(q_out, bits, i, q, info, st);
    }
    return DLU_OK;
}

/* Requantize int64 accumulators acc[0..n) (exponent ea) to q_out (exponent eo); same
 * conventions, stream and return codes as dlu_quantize_f32(). */
static inline DLU_HD dlu_status dlu_requantize_acc64(const int64_t *acc /* (n) */, size_t n, int ea, int eo,
                                                     enum dlu_format fmt, enum dlu_round mode, uint64_t seed,
                                                     uint32_t tensor_id, uint32_t step, size_t index_base,
                                                     void *q_out /* (n) int8_t or int16_t */, struct dlu_stats *st)
{
    const int bits = dlu_format_bits(fmt);
    size_t i;

    if (!dlu__tensor_args_ok(fmt, mode, n, acc, q_out))
        return DLU_EINVAL;
    for (i = 0; i < n; i++) {
        uint32_t info;
        const uint64_t rnd = dlu__sr_rnd(mode, seed, tensor_id, step, (uint64_t)index_base + i);
        const int32_t q = dlu_dfp_requantize(acc[i], ea, eo, bits, mode, rnd, &info);
        dlu__store_q(q_out, bits, i, q, info, st);
    }
    return DLU_OK;
}

/* The same for int32 accumulators (dfp8 x dfp8 GEMM without bias). */
static inline DLU_HD dlu_status dlu_requantize_acc32(const int32_t *acc /* (n) */, size_t n, int ea, int eo,
                                                     enum dlu_format fmt, enum dlu_round mode, uint64_t seed,
                                                     uint32_t tensor_id, uint32_t step, size_t index_base,
                                                     void *q_out /* (n) int8_t or int16_t */, struct dlu_stats *st)
{
    const int bits = dlu_format_bits(fmt);
    size_t i;

    if (!dlu__tensor_args_ok(fmt, mode, n, acc, q_out))
        return DLU_EINVAL;
    for (i = 0; i < n; i++) {
        uint32_t info;
        const uint64_t rnd = dlu__sr_rnd(mode, seed, tensor_id, step, (uint64_t)index_base + i);
        const int32_t q = dlu_dfp_requantize((int64_t)acc[i], ea, eo, bits, mode, rnd, &info);
        dlu__store_q(q_out, bits, i, q, info, st);
    }
    return DLU_OK;
}

/* out[i] = q[i] * 2^e (see dlu_dfp_dequantize: exact for valid e). q is int8_t for
 * DLU_FMT_DFP8, int16_t for DLU_FMT_DFP16. Returns DLU_OK or DLU_EINVAL. */
static inline DLU_HD dlu_status dlu_dequantize(const void *q /* (n) int8_t or int16_t */, size_t n, int e,
                                               enum dlu_format fmt, float *out /* (n) */)
{
    size_t i;

    if (!dlu_format_is_dfp(fmt) || (n > 0 && (!q || !out)))
        return DLU_EINVAL;
    for (i = 0; i < n; i++) {
        const int32_t v = dlu_format_bits(fmt) == 8 ? (int32_t)((const int8_t *)q)[i]
                                                    : (int32_t)((const int16_t *)q)[i];
        out[i] = dlu_dfp_dequantize(v, e);
    }
    return DLU_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Deterministic exp, log, softmax cross-entropy                                        */
/* ------------------------------------------------------------------------------------ */

/* Written with fp32 operations only, through DLU_F*, in a fixed order, so that every
 * backend computes the same bits (libm's expf/logf and CUDA's differ from each other).
 * Accuracy against exp/log in double, measured over all 2^32 fp32 inputs (docs/numerics.md):
 * dlu_expf_det max 0.681 ulp (normal results), 0.764 ulp (subnormal results, in units of
 * 2^-149); dlu_logf_det max 0.835 ulp.
 * NaN results are the canonical quiet NaN 0x7fc00000. */

static inline DLU_HD float dlu__nanf(void)
{
    return dlu_f32_from_bits(0x7FC00000u);
}

static inline DLU_HD float dlu__inff(void)
{
    return dlu_f32_from_bits(0x7F800000u);
}

/* ln 2 split for Cody-Waite reduction: LN2_HI has 12 significant bits, so n * LN2_HI is
 * exact for |n| < 2^12; LN2_LO = fl(ln 2 - LN2_HI). */
#define DLU__LN2_HI 0x1.62ep-1f        /* 0.693115234375 */
#define DLU__LN2_LO 0x1.0bfbe8p-15f    /* 3.19461833e-05 */
#define DLU__LOG2E  0x1.715476p+0f     /* fl(1/ln 2) */
#define DLU__RINT_MAGIC 0x1.8p+23f     /* 1.5 * 2^23: x + M - M rounds |x| < 2^22 to an integer */

/* e^x. Reduction x = n ln2 + r with n = rint(x log2e), |r| <~ ln2/2, r carried as r + rlo;
 * e^r = 1 + r + r^2 (1/2 + r/6 + ... + r^6/40320) (degree-8 Taylor in Horner form,
 * truncation < 2.2e-10 relative), the sum 1 + r compensated (Fast2Sum) so that the result
 * is rounded essentially once; then scaled by 2^n built from bits, in two exact steps when
 * 2^n is not a normal float (so subnormal results are rounded once).
 * x > 89 -> +Inf, x < -104 -> +0, NaN -> NaN, -Inf -> +0, +Inf -> +Inf. */
static inline DLU_HD float dlu_expf_det(float x)
{
    float nf, r1, t, r, rlo, p, hi, lo, y;
    int n;

    if ((dlu_f32_bits(x) & 0x7FFFFFFFu) > 0x7F800000u) /* NaN */
        return dlu__nanf();
    if (x > 89.0f)
        return dlu__inff();
    if (x < -104.0f)
        return 0.0f;
    nf = DLU_FSUB(DLU_FADD(DLU_FMUL(x, DLU__LOG2E), DLU__RINT_MAGIC), DLU__RINT_MAGIC);
    n = (int)nf;
    r1 = DLU_FSUB(x, DLU_FMUL(nf, DLU__LN2_HI)); /* exact: product exact, Sterbenz */
    t = DLU_FMUL(nf, DLU__LN2_LO);
    r = DLU_FSUB(r1, t);
    rlo = DLU_FSUB(DLU_FSUB(r1, r), t); /* rounding error of r (Fast2Sum) */
    p = 0x1.a01a02p-16f;                            /* 1/40320 */
    p = DLU_FADD(DLU_FMUL(p, r), 0x1.a01a02p-13f); /* 1/5040 */
    p = DLU_FADD(DLU_FMUL(p, r), 0x1.6c16c2p-10f); /* 1/720 */
    p = DLU_FADD(DLU_FMUL(p, r), 0x1.111112p-7f);  /* 1/120 */
    p = DLU_FADD(DLU_FMUL(p, r), 0x1.555556p-5f);  /* 1/24 */
    p = DLU_FADD(DLU_FMUL(p, r), 0x1.555556p-3f);  /* 1/6 */
    p = DLU_FADD(DLU_FMUL(p, r), 0.5f);
    p = DLU_FMUL(DLU_FMUL(r, r), p);
    /* 1 + r + p with the rounding errors of 1 + r and of r carried into the small term:
     * y is then within ~0.5 ulp plus the polynomial's error */
    hi = DLU_FADD(1.0f, r);
    lo = DLU_FADD(DLU_FSUB(1.0f, hi), r); /* exact error of 1 + r (Fast2Sum, |r| < 1) */
    y = DLU_FADD(hi, DLU_FADD(DLU_FADD(lo, rlo), p));
    if (n > 127)
        return DLU_FMUL(DLU_FMUL(y, dlu__pow2f(127)), dlu__pow2f(n - 127));
    if (n < -126)
        return DLU_FMUL(DLU_FMUL(y, dlu__pow2f(-100)), dlu__pow2f(n + 100));
    return DLU_FMUL(y, dlu__pow2f(n));
}

/* ln x. x = 2^k m with m in [sqrt(2)/2, sqrt(2)) taken from the bits (subnormals first
 * scaled by 2^23, exactly); f = m - 1 (exact); s = f / (2 + f); ln m = 2 atanh(s) =
 * f - (f^2/2 - s (f^2/2 + R)), R = z (2/3 + 2/5 z + 2/7 z^2 + 2/9 z^3 + 2/11 z^4), z = s^2
 * (Taylor; |s| <= 0.1716 so truncation < 3e-9 relative); result k LN2_HI + (ln m + k LN2_LO)
 * with the small terms summed first.
 * x < 0 -> NaN, +-0 -> -Inf, +Inf -> +Inf, NaN -> NaN. */
static inline DLU_HD float dlu_logf_det(float x)
{
    uint32_t u = dlu_f32_bits(x);
    float m, f, s, z, R, hfsq, dk;
    int k = 0;

    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return dlu__nanf();
    if ((u & 0x7FFFFFFFu) == 0)
        return -dlu__inff();
    if (u >> 31)
        return dlu__nanf();
    if (u == 0x7F800000u)
        return x;
    if (u < 0x00800000u) { /* subnormal: make it normal, exactly */
        u = dlu_f32_bits(DLU_FMUL(x, 0x1p23f));
        k = -23;
    }
    k += (int)(u >> 23) - 127;
    u = (u & 0x7FFFFFu) | 0x3F800000u; /* m in [1, 2) */
    if (u > 0x3FB504F3u) {             /* m > sqrt(2): use m/2, k+1 */
        u -= 0x00800000u;
        k += 1;
    }
    m = dlu_f32_from_bits(u);
    f = DLU_FSUB(m, 1.0f);
    s = DLU_FDIV(f, DLU_FADD(2.0f, f));
    z = DLU_FMUL(s, s);
    R = 0x1.745d18p-3f; /* 2/11 */
    R = DLU_FADD(DLU_FMUL(R, z), 0x1.c71c72p-3f); /* 2/9 */
    R = DLU_FADD(DLU_FMUL(R, z), 0x1.24924ap-2f); /* 2/7 */
    R = DLU_FADD(DLU_FMUL(R, z), 0x1.99999ap-2f); /* 2/5 */
    R = DLU_FADD(DLU_FMUL(R, z), 0x1.555556p-1f); /* 2/3 */
    R = DLU_FMUL(R, z);
    hfsq = DLU_FMUL(DLU_FMUL(0.5f, f), f);
    if (k == 0)
        return DLU_FSUB(f, DLU_FSUB(hfsq, DLU_FMUL(s, DLU_FADD(hfsq, R))));
    dk = (float)k;
    return DLU_FSUB(DLU_FMUL(dk, DLU__LN2_HI),
                    DLU_FSUB(DLU_FSUB(hfsq, DLU_FADD(DLU_FMUL(s, DLU_FADD(hfsq, R)), DLU_FMUL(dk, DLU__LN2_LO))), f));
}

/* Softmax and cross-entropy loss of one row of logits, in a fixed order:
 *   mx = max_i logits[i]                (first to last)
 *   t_i = expf_det(logits[i] - mx)      sum = t_0 + t_1 + ... (ascending i, fp32, from 0.0f)
 *   prob_out[i] = t_i / sum             (one division per element, not times 1/sum)
 *   loss = logf_det(sum) - (logits[label] - mx)    (= -ln prob[label], without log(0))
 * prob_out may be NULL (loss only). If any logit is NaN or +Inf, or all are -Inf, every
 * output is NaN (0x7fc00000). Returns DLU_EINVAL (nothing written) if nclass < 1, label is
 * outside [0, nclass), or logits/loss_out is NULL; else DLU_OK. */
static inline DLU_HD dlu_status dlu_softmax_xent_row(const float *logits /* (nclass) */, int nclass, int label,
                                                     float *prob_out /* (nclass) or NULL */, float *loss_out)
{
    float mx, sum;
    int i, bad = 0;

    if (nclass < 1 || label < 0 || label >= nclass || !logits || !loss_out)
        return DLU_EINVAL;
    mx = logits[0];
    for (i = 0; i < nclass; i++) {
        const float v = logits[i];
        if ((dlu_f32_bits(v) & 0x7FFFFFFFu) > 0x7F800000u || dlu_f32_bits(v) == 0x7F800000u)
            bad = 1; /* NaN or +Inf */
        else if (v > mx)
            mx = v;
    }
    if (bad || dlu_f32_bits(mx) == 0xFF800000u) { /* or all logits -Inf */
        if (prob_out)
            for (i = 0; i < nclass; i++)
                prob_out[i] = dlu__nanf();
        *loss_out = dlu__nanf();
        return DLU_OK;
    }
    sum = 0.0f;
    for (i = 0; i < nclass; i++) {
        const float t = dlu_expf_det(DLU_FSUB(logits[i], mx));
        if (prob_out)
            prob_out[i] = t;
        sum = DLU_FADD(sum, t);
    }
    if (prob_out)
        for (i = 0; i < nclass; i++)
            prob_out[i] = DLU_FDIV(prob_out[i], sum);
    *loss_out = DLU_FSUB(dlu_logf_det(sum), DLU_FSUB(logits[label], mx));
    return DLU_OK;
}

/* Gradient of the batch-mean loss for one row: dlogits[i] = (prob[i] - [i == label]) / batch,
 * computed as DLU_FDIV(DLU_FSUB(prob[i], onehot), (float)batch). dlogits may alias prob.
 * Returns DLU_EINVAL if nclass < 1, batch < 1, label is out of range or a pointer is NULL. */
static inline DLU_HD dlu_status dlu_softmax_xent_grad_row(const float *prob /* (nclass) */, int nclass, int label,
                                                          int batch, float *dlogits /* (nclass) */)
{
    int i;

    if (nclass < 1 || batch < 1 || label < 0 || label >= nclass || !prob || !dlogits)
        return DLU_EINVAL;
    for (i = 0; i < nclass; i++)
        dlogits[i] = DLU_FDIV(DLU_FSUB(prob[i], i == label ? 1.0f : 0.0f), (float)batch);
    return DLU_OK;
}

/* A whole batch: for each row b (ascending) the row functions above; loss_mean =
 * (loss_0 + loss_1 + ... + loss_{batch-1}) / batch, summed in fp32 in ascending row order.
 * prob (may be NULL) receives the probabilities; dlogits (may be NULL) the gradient of
 * loss_mean. Returns DLU_EINVAL on bad sizes, a NULL logits/labels/loss_mean, or any
 * label outside [0, nclass) (outputs then partly written). */
static inline DLU_HD dlu_status dlu_softmax_xent(const float *logits /* (batch, nclass) */,
                                                 const int32_t *labels /* (batch) */, int batch, int nclass,
                                                 float *prob /* (batch, nclass) or NULL */,
                                                 float *dlogits /* (batch, nclass) or NULL */, float *loss_mean)
{
    float sum = 0.0f;
    int b;

    if (batch < 1 || nclass < 1 || !logits || !labels || !loss_mean)
        return DLU_EINVAL;
    for (b = 0; b < batch; b++) {
        const size_t off = (size_t)b * (size_t)nclass;
        float *p = prob ? prob + off : (dlogits ? dlogits + off : NULL);
        float loss;
        dlu_status rc = dlu_softmax_xent_row(logits + off, nclass, labels[b], p, &loss);
        if (rc != DLU_OK)
            return rc;
        if (dlogits)
            dlu_softmax_xent_grad_row(p, nclass, labels[b], batch, dlogits + off);
        sum = DLU_FADD(sum, loss);
    }
    *loss_mean = DLU_FDIV(sum, (float)batch);
    return DLU_OK;
}

#ifdef __cplusplus
}
#endif
#endif /* DLU_NUMERICS_H */
