/* test_cpu_quant.c -- CUnit tests of the CPU backend's fast quantize / requantize /
 * statistics / stochastic-rounding functions (libdl/backend/cpu/cpu_quant.c).
 *
 * What it checks: on every code path this CPU can run (avx512, avx2, portable; the others
 * print SKIP), the output bytes (memcmp) and the struct dlu_stats (memcmp, added into a
 * non-empty struct) of dlu__cpu_quantize_f32 / dlu__cpu_requantize_acc64 / _acc32 equal
 * those of the references in dlu/numerics.h, for millions of random inputs: fp32 random
 * bit patterns (NaN, +-Inf, subnormals, +-0 included), values on and between the grid
 * (exact ties), accumulators of every magnitude (0, -1, +-1, +-2^j, +-2^j+-1, INT64_MIN,
 * INT64_MIN+1, INT64_MAX, values near the output scale), exponents and shifts spanning left
 * shifts, right shifts 1..70, +-1024 and the int extremes, both formats, both rounding
 * modes, odd lengths and odd index bases (block edges, the even/odd Philox pairing, the
 * index wrapping at 2^64), NULL statistics; dlu__cpu_stats_q and dlu__cpu_stats_acc64
 * against the per-element loops they replace; dlu__cpu_sr_bits64 against dlu_sr_bits64;
 * the vector files tests/vectors/quant_f32.txt and requant_acc.txt; argument errors.
 * On a mismatch it prints the first differing element, hex and decoded.
 *
 * What it is not: a benchmark, or a test of the references themselves (test_numerics.c).
 * Buffers have their exact size so that the sanitizers catch reads past the end. */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_quant.h"
#include "dlu/numerics.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */
/* ------------------------------------------------------------------------------------ */

static uint64_t g_rng = 0xC0DEC0FFEE123457ull;

static uint64_t rnd64(void) /* splitmix64: fixed seed, reproducible */
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int rnd_int(int lo, int hi) /* uniform in [lo, hi] */
{
    return lo + (int)(rnd64() % (uint64_t)((int64_t)hi - lo + 1));
}

static const char *const paths[] = {"avx512", "avx2", "portable"};
#define NPATHS 3

/* Select path k; 0 (and a SKIP line once per test) if this CPU cannot run it. */
static int use_path(int k, int *skipped)
{
    if (dlu__cpu_quant_select(paths[k]) == DLU_OK)
        return 1;
    if (!(*skipped & (1 << k)))
        printf("\n    SKIP %s: %s", paths[k], dlu_last_error());
    *skipped |= 1 << k;
    return 0;
}

static void *xmalloc(size_t nbytes)
{
    void *p = malloc(nbytes ? nbytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* A stats struct with arbitrary contents, to check that the functions add. */
static void stats_seed(dlu_stats *st, uint64_t v)
{
    for (int i = 0; i < DLU_STATS_NBINS; i++)
        st->hist[i] = v + (uint64_t)i;
    st->count = v * 3;
    st->zeros = v * 5;
    st->overflow = v * 7;
    st->underflow = v * 11;
    st->nan = v * 13;
}

static void print_stats_diff(const dlu_stats *want, const dlu_stats *got)
{
    fprintf(stderr, "    stats want count %" PRIu64 " zeros %" PRIu64 " ovf %" PRIu64 " unf %" PRIu64 " nan %" PRIu64
                    "\n    stats got  count %" PRIu64 " zeros %" PRIu64 " ovf %" PRIu64 " unf %" PRIu64 " nan %" PRIu64 "\n",
            want->count, want->zeros, want->overflow, want->underflow, want->nan, got->count, got->zeros, got->overflow,
            got->underflow, got->nan);
    for (int b = 0; b < DLU_STATS_NBINS; b++)
        if (want->hist[b] != got->hist[b])
            fprintf(stderr, "    hist k=%d: want %" PRIu64 " got %" PRIu64 "\n", b + DLU_STATS_KMIN, want->hist[b],
                    got->hist[b]);
}

static int32_t qat(const void *q, int bits, size_t i)
{
    return bits == 8 ? ((const int8_t *)q)[i] : ((const int16_t *)q)[i];
}

/* Compares one call's outputs; prints the first mismatch of the whole test only. */
typedef struct check {
    long ncalls, nelems, nbad;
} check;

static int compare(check *c, const char *what, const char *path, int bits, size_t n, const void *qw, const void *qg,
                   const dlu_stats *sw, const dlu_stats *sg, dlu_status rw, dlu_status rg, const char *params,
                   void (*show)(size_t i, char *buf, size_t len, const void *ctx), const void *ctx)
{
    const size_t esz = (size_t)bits / 8;
    int bad = 0;
    c->ncalls++;
    c->nelems += (long)n;
    if (rw != rg || memcmp(qw, qg, n * esz) != 0 || memcmp(sw, sg, sizeof *sw) != 0)
        bad = 1;
    if (bad && c->nbad++ == 0) {
        fprintf(stderr, "\n  %s [%s] %s: first mismatch (%s, n=%zu)\n", what, path, params, bits == 8 ? "dfp8" : "dfp16",
                n);
        if (rw != rg)
            fprintf(stderr, "    status want %d got %d\n", (int)rw, (int)rg);
        for (size_t i = 0; i < n; i++)
            if (qat(qw, bits, i) != qat(qg, bits, i)) {
                char buf[160] = "";
                if (show)
                    show(i, buf, sizeof buf, ctx);
                fprintf(stderr, "    element %zu: %s want q=%d (%08" PRIx32 ") got q=%d (%08" PRIx32 ")\n", i, buf,
                        qat(qw, bits, i), (uint32_t)qat(qw, bits, i), qat(qg, bits, i), (uint32_t)qat(qg, bits, i));
                break;
            }
        if (memcmp(sw, sg, sizeof *sw) != 0)
            print_stats_diff(sw, sg);
    }
    return !bad;
}

static void show_f32(size_t i, char *buf, size_t len, const void *ctx)
{
    const float *x = ctx;
    snprintf(buf, len, "x=%08" PRIx32 " (%.9g)", dlu_f32_bits(x[i]), (double)x[i]);
}

static void show_i64(size_t i, char *buf, size_t len, const void *ctx)
{
    const int64_t *a = ctx;
    snprintf(buf, len, "acc=%016" PRIx64 " (%" PRId64 ")", (uint64_t)a[i], a[i]);
}

static void show_i32(size_t i, char *buf, size_t len, const void *ctx)
{
    const int32_t *a = ctx;
    snprintf(buf, len, "acc=%08" PRIx32 " (%" PRId32 ")", (uint32_t)a[i], a[i]);
}

/* ------------------------------------------------------------------------------------ */
/* input generators                                                                     */
/* ------------------------------------------------------------------------------------ */

/* An exponent: mostly near the valid range, sometimes far outside or at the int limits. */
static int pick_exp(void)
{
    static const int far[] = {INT_MIN, INT_MIN + 1, -100000, -3000, -2001, -2000, -1999, -1025, -1024, -1023,
                              -300, -200, 200, 300, 1023, 1024, 1025, 1999, 2000, 2001, 3000, 100000, INT_MAX - 1,
                              INT_MAX};
    const int r = rnd_int(0, 99);
    if (r < 8)
        return far[rnd_int(0, (int)(sizeof far / sizeof far[0]) - 1)];
    if (r < 20)
        return rnd_int(-200, 160);
    return rnd_int(-160, 125);
}

static float special_f32(void)
{
    static const uint32_t sp[] = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u,
                                  0x7F800001u, 0xFFFFFFFFu, 0x7FBFFFFFu, 0x00000001u, 0x80000001u, 0x007FFFFFu,
                                  0x807FFFFFu, 0x00800000u, 0x80800000u, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x3F800000u,
                                  0xBF800000u, 0x3F000000u, 0x3FC00000u, 0x40200000u, 0x43000000u, 0x42FF0000u,
                                  0x46FFFE00u, 0x47000000u};
    return dlu_f32_from_bits(sp[rnd_int(0, (int)(sizeof sp / sizeof sp[0]) - 1)]);
}

/* Values relative to the grid 2^e: integers, exact ties (t + 1/2), values around qmax and
 * qmax + 1/2, random mantissas from far below one LSB to far above the range. */
static float near_grid_f32(int e)
{
    double v;
    switch (rnd_int(0, 5)) {
    case 0: /* t * 2^e, t an integer up to 2^17 */
        v = (double)rnd_int(0, 1 << 17);
        break;
    case 1: /* tie */
        v = (double)rnd_int(0, 1 << 16) + 0.5;
        break;
    case 2: /* around qmax (127, 32767) */
        v = (rnd_int(0, 1) ? 127.0 : 32767.0) + (double)rnd_int(-4, 4) * 0.25;
        break;
    default: /* a 24-bit mantissa times 2^s, s in [-94, -4] */
        v = ldexp((double)(rnd64() >> 40), rnd_int(-94, -4));
        break;
    }
    if (e < -149 - 40 || e > 127) /* v * 2^e would not be a useful float */
        return dlu_f32_from_bits((uint32_t)rnd64());
    v = ldexp(v, e); /* exact in double; the float conversion rounds only below 2^-149 or with > 24 bits */
    return (float)(rnd_int(0, 1) ? -v : v);
}

static void fill_f32(float *x, size_t n, int e)
{
    const int style = rnd_int(0, 3);
    for (size_t i = 0; i < n; i++) {
        const int r = rnd_int(0, 99);
        if (style == 0 || r < 10)
            x[i] = dlu_f32_from_bits((uint32_t)rnd64()); /* any bit pattern */
        else if (r < 20)
            x[i] = special_f32();
        else
            x[i] = near_grid_f32(e);
    }
}

static int64_t special_i64(void)
{
    const int j = rnd_int(0, 63);
    const uint64_t p = 1ull << j;
    switch (rnd_int(0, 9)) {
    case 0: return 0;
    case 1: return -1;
    case 2: return 1;
    case 3: return INT64_MIN;
    case 4: return INT64_MIN + 1;
    case 5: return INT64_MAX;
    case 6: return (int64_t)(0u - p); /* -2^j (INT64_MIN for j = 63) */
    case 7: return j < 63 ? (int64_t)p : INT64_MAX;
    case 8: return (int64_t)((0u - p) + (uint64_t)(int64_t)rnd_int(-1, 1)); /* wraps past INT64_MIN */
    default: return j < 63 ? (int64_t)p + rnd_int(-1, 1) : INT64_MAX - 1;
    }
}

/* Accumulators for a right shift s (when 1..63): values around the output grid, ties. */
static int64_t near_grid_i64(int s)
{
    const int sh = s < 1 ? 0 : (s > 62 ? 62 : s);
    int64_t t = rnd_int(-40000, 40000);
    int64_t v;
    if (sh == 0)
        return t;
    if (sh >= 47) /* keep t << sh inside int64 */
        t = rnd_int(-(1 << (62 - sh)), 1 << (62 - sh));
    v = (int64_t)((uint64_t)t << sh);
    switch (rnd_int(0, 3)) {
    case 0: return v;                                             /* on the grid */
    case 1: return v + (int64_t)(1ull << (sh - 1));               /* tie */
    case 2: return v + (int64_t)(rnd64() & ((1ull << sh) - 1u)); /* between */
    default: return v - (int64_t)(rnd64() & ((1ull << sh) - 1u));
    }
}

static void fill_i64(int64_t *a, size_t n, int s)
{
    const int style = rnd_int(0, 3);
    for (size_t i = 0; i < n; i++) {
        const int r = rnd_int(0, 99);
        if (style == 0 || r < 15)
            a[i] = (int64_t)(rnd64() >> rnd_int(0, 63)) * (rnd_int(0, 1) ? -1 : 1); /* every magnitude */
        else if (r < 30)
            a[i] = special_i64();
        else if (r < 35)
            a[i] = (int64_t)rnd64();
        else
            a[i] = near_grid_i64(s);
    }
}

static int64_t clamp_i32(int64_t v) { return v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v); }

/* A shift eo - ea: mostly right shifts 1..70, also left shifts, 0, and huge ones. */
static int pick_shift(void)
{
    const int r = rnd_int(0, 99);
    if (r < 55)
        return rnd_int(1, 70);
    if (r < 80)
        return rnd_int(-70, 0);
    if (r < 90)
        return rnd_int(-1100, 1100);
    return rnd_int(0, 1) ? 1024 + rnd_int(-2, 2) : -1024 + rnd_int(-2, 2);
}

/* A length: odd and even, around block sizes, sometimes long. */
static size_t pick_n(void)
{
    static const size_t edge[] = {1, 2, 3, 15, 16, 17, 31, 32, 33, 255, 256, 257, 511, 512, 513, 767, 1023, 1025};
    const int r = rnd_int(0, 99);
    if (r < 30)
        return edge[rnd_int(0, (int)(sizeof edge / sizeof edge[0]) - 1)];
    if (r < 90)
        return (size_t)rnd_int(1, 700);
    return (size_t)rnd_int(700, 5000);
}

/* An index base: 0, small odd/even, large, or near the 2^64 wrap. */
static size_t pick_base(void)
{
    switch (rnd_int(0, 5)) {
    case 0: return 0;
    case 1: return (size_t)rnd_int(0, 1000);
    case 2: return (size_t)(rnd64() >> 1);
    case 3: return SIZE_MAX - (size_t)rnd_int(0, 600);
    case 4: return ((size_t)1 << 33) - (size_t)rnd_int(0, 600); /* the counter's word boundary */
    default: return (size_t)rnd64();
    }
}

static dlu_format pick_fmt(void) { return rnd_int(0, 1) ? DLU_FMT_DFP8 : DLU_FMT_DFP16; }
static dlu_round pick_mode(void) { return rnd_int(0, 1) ? DLU_ROUND_STOCHASTIC : DLU_ROUND_NEAREST; }

/* ------------------------------------------------------------------------------------ */
/* tests                                                                                */
/* ------------------------------------------------------------------------------------ */

#define TOTAL_ELEMS 5000000 /* per function: reference elements; each path runs them all */

static void test_quantize_f32(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    long done = 0;
    while (done < TOTAL_ELEMS) {
        const size_t n = pick_n(), base = pick_base();
        const int e = pick_exp();
        const dlu_format fmt = pick_fmt();
        const dlu_round mode = pick_mode();
        const uint64_t seed = rnd64();
        const uint32_t id = (uint32_t)rnd64(), step = (uint32_t)rnd64();
        const int bits = dlu_format_bits(fmt);
        const int use_st = rnd_int(0, 15) != 0;
        float *x = xmalloc(n * sizeof *x);
        void *qw = xmalloc(n * 2), *qg = xmalloc(n * 2);
        dlu_stats sw, sg;
        char params[160];
        fill_f32(x, n, e);
        stats_seed(&sw, (uint64_t)n);
        const dlu_status rw = dlu_quantize_f32(x, n, e, fmt, mode, seed, id, step, base, qw, use_st ? &sw : NULL);
        snprintf(params, sizeof params, "e=%d mode=%s index_base=%zu seed=%016" PRIx64 " id=%08" PRIx32 " step=%08" PRIx32,
                 e, dlu_round_name(mode), base, seed, id, step);
        for (int k = 0; k < NPATHS; k++) {
            if (!use_path(k, &skipped))
                continue;
            memset(qg, 0x5A, n * 2);
            stats_seed(&sg, (uint64_t)n);
            const dlu_status rg =
                dlu__cpu_quantize_f32(x, n, e, fmt, mode, seed, id, step, base, qg, use_st ? &sg : NULL);
            compare(&c, "quantize_f32", paths[k], bits, n, qw, qg, &sw, &sg, rw, rg, params, show_f32, x);
        }
        done += (long)n;
        free(x);
        free(qw);
        free(qg);
    }
    dlu__cpu_quant_select(NULL);
    printf("\n    %ld calls, %ld elements compared, %ld mismatching calls", c.ncalls, c.nelems, c.nbad);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

static size_t run_requant_case(check *c, int *skipped, int is32)
{
    const size_t n = pick_n(), base = pick_base();
    const int s = pick_shift();
    int ea = rnd_int(0, 9) == 0 ? pick_exp() : rnd_int(-200, 120);
    int64_t eo64 = (int64_t)ea + s;
    int eo;
    if (rnd_int(0, 19) == 0) /* exponents anywhere, shift whatever it is */
        eo = pick_exp();
    else
        eo = eo64 < INT_MIN ? INT_MIN : (eo64 > INT_MAX ? INT_MAX : (int)eo64);
    const dlu_format fmt = pick_fmt();
    const dlu_round mode = pick_mode();
    const uint64_t seed = rnd64();
    const uint32_t id = (uint32_t)rnd64(), step = (uint32_t)rnd64();
    const int bits = dlu_format_bits(fmt);
    const int use_st = rnd_int(0, 15) != 0;
    int64_t *a64 = xmalloc(n * sizeof *a64);
    int32_t *a32 = is32 ? xmalloc(n * sizeof *a32) : NULL;
    void *qw = xmalloc(n * 2), *qg = xmalloc(n * 2);
    dlu_stats sw, sg;
    dlu_status rw;
    char params[200];
    fill_i64(a64, n, (int)((int64_t)eo - ea));
    if (is32)
        for (size_t i = 0; i < n; i++)
            a32[i] = (int32_t)(rnd_int(0, 3) ? clamp_i32(a64[i] >> (rnd_int(0, 1) ? 32 : 0)) : (int32_t)a64[i]);
    stats_seed(&sw, (uint64_t)n);
    if (is32)
        rw = dlu_requantize_acc32(a32, n, ea, eo, fmt, mode, seed, id, step, base, qw, use_st ? &sw : NULL);
    else
        rw = dlu_requantize_acc64(a64, n, ea, eo, fmt, mode, seed, id, step, base, qw, use_st ? &sw : NULL);
    snprintf(params, sizeof params,
             "ea=%d eo=%d mode=%s index_base=%zu seed=%016" PRIx64 " id=%08" PRIx32 " step=%08" PRIx32, ea, eo,
             dlu_round_name(mode), base, seed, id, step);
    for (int k = 0; k < NPATHS; k++) {
        dlu_status rg;
        if (!use_path(k, skipped))
            continue;
        memset(qg, 0x5A, n * 2);
        stats_seed(&sg, (uint64_t)n);
        if (is32)
            rg = dlu__cpu_requantize_acc32(a32, n, ea, eo, fmt, mode, seed, id, step, base, qg, use_st ? &sg : NULL);
        else
            rg = dlu__cpu_requantize_acc64(a64, n, ea, eo, fmt, mode, seed, id, step, base, qg, use_st ? &sg : NULL);
        compare(c, is32 ? "requantize_acc32" : "requantize_acc64", paths[k], bits, n, qw, qg, &sw, &sg, rw, rg, params,
                is32 ? show_i32 : show_i64, is32 ? (const void *)a32 : (const void *)a64);
    }
    free(a64);
    free(a32);
    free(qw);
    free(qg);
    return n;
}

static void test_requantize_acc64(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    long done = 0;
    while (done < TOTAL_ELEMS)
        done += (long)run_requant_case(&c, &skipped, 0);
    dlu__cpu_quant_select(NULL);
    printf("\n    %ld calls, %ld elements compared, %ld mismatching calls", c.ncalls, c.nelems, c.nbad);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

static void test_requantize_acc32(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    long done = 0;
    while (done < TOTAL_ELEMS)
        done += (long)run_requant_case(&c, &skipped, 1);
    dlu__cpu_quant_select(NULL);
    printf("\n    %ld calls, %ld elements compared, %ld mismatching calls", c.ncalls, c.nelems, c.nbad);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

/* Every shift from -70 to 70 with accumulators of every magnitude, both formats and modes:
 * the systematic sweep behind the random cases above. */
static void test_requantize_shift_sweep(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    const size_t n = 777;
    int64_t *a = xmalloc(n * sizeof *a);
    void *qw = xmalloc(n * 2), *qg = xmalloc(n * 2);
    for (int s = -70; s <= 70; s++)
        for (int fi = 0; fi < 2; fi++)
            for (int mi = 0; mi < 2; mi++) {
                const dlu_format fmt = fi ? DLU_FMT_DFP16 : DLU_FMT_DFP8;
                const dlu_round mode = mi ? DLU_ROUND_STOCHASTIC : DLU_ROUND_NEAREST;
                const int ea = rnd_int(-100, 60), eo = ea + s;
                const size_t base = (size_t)rnd_int(0, 3);
                dlu_stats sw, sg;
                char params[96];
                fill_i64(a, n, s);
                dlu_stats_clear(&sw);
                const dlu_status rw = dlu_requantize_acc64(a, n, ea, eo, fmt, mode, 42, 7, 9, base, qw, &sw);
                snprintf(params, sizeof params, "ea=%d eo=%d (shift %d) mode=%s", ea, eo, s, dlu_round_name(mode));
                for (int k = 0; k < NPATHS; k++) {
                    if (!use_path(k, &skipped))
                        continue;
                    dlu_stats_clear(&sg);
                    const dlu_status rg = dlu__cpu_requantize_acc64(a, n, ea, eo, fmt, mode, 42, 7, 9, base, qg, &sg);
                    compare(&c, "requantize_acc64 sweep", paths[k], dlu_format_bits(fmt), n, qw, qg, &sw, &sg, rw, rg,
                            params, show_i64, a);
                }
            }
    dlu__cpu_quant_select(NULL);
    free(a);
    free(qw);
    free(qg);
    printf("\n    %ld calls, %ld mismatching", c.ncalls, c.nbad);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

/* Every fp32 exponent field against every grid exponent near it: the shift r = e - E
 * takes every value from -70 to 100 for normal and subnormal inputs. */
static void test_quantize_exponent_sweep(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    const size_t n = 513;
    float *x = xmalloc(n * sizeof *x);
    void *qw = xmalloc(n * 2), *qg = xmalloc(n * 2);
    for (int bexp = 0; bexp < 255; bexp += 1)
        for (int r = -70; r <= 100; r += 3) {
            const int E = (bexp ? bexp : 1) - 150, e = E + r;
            const dlu_format fmt = (r & 1) ? DLU_FMT_DFP16 : DLU_FMT_DFP8;
            const dlu_round mode = (bexp & 1) ? DLU_ROUND_STOCHASTIC : DLU_ROUND_NEAREST;
            dlu_stats sw, sg;
            char params[96];
            for (size_t i = 0; i < n; i++) {
                uint32_t man = (uint32_t)rnd64() & 0x7FFFFFu;
                if (i % 4 == 1) /* few low bits: exact and tie cases */
                    man &= ~((1u << rnd_int(0, 23)) - 1u);
                x[i] = dlu_f32_from_bits((uint32_t)(rnd64() & 1u) << 31 | (uint32_t)bexp << 23 | man);
            }
            dlu_stats_clear(&sw);
            const dlu_status rw = dlu_quantize_f32(x, n, e, fmt, mode, 1234, 5, 6, 1, qw, &sw);
            snprintf(params, sizeof params, "biased exp %d, e=%d (r=%d) mode=%s", bexp, e, r, dlu_round_name(mode));
            for (int k = 0; k < NPATHS; k++) {
                if (!use_path(k, &skipped))
                    continue;
                dlu_stats_clear(&sg);
                const dlu_status rg = dlu__cpu_quantize_f32(x, n, e, fmt, mode, 1234, 5, 6, 1, qg, &sg);
                compare(&c, "quantize_f32 sweep", paths[k], dlu_format_bits(fmt), n, qw, qg, &sw, &sg, rw, rg, params,
                        show_f32, x);
            }
        }
    dlu__cpu_quant_select(NULL);
    free(x);
    free(qw);
    free(qg);
    printf("\n    %ld calls, %ld mismatching", c.ncalls, c.nbad);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

/* Stochastic rounding decides up = rnd > ~frac on 64-bit words; the fast fp32 kernel does
 * it on 32-bit halves, where the low halves matter only when the high halves tie
 * (rnd_hi == ~frac_hi), which random inputs hit with probability 2^-32. Here the inputs
 * are built from the known random words so that they tie: for each element whose word
 * has rnd_hi >= 0xFF000000, t = ~rnd_hi < 2^24 and x = m * 2^(e - r) with
 * m = t << s | (s random low bits), s = 24 - bitlength(t), r = 32 + s (so m has 24 bits
 * and frac_hi = m >> s = t), and the carry out of the low halves decides (s = 0, r = 32:
 * frac_lo = 0, no carry). */
static void test_quantize_sr_high_ties(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    long nties = 0;
    const size_t n = 300000;
    float *x = xmalloc(n * sizeof *x);
    void *qw = xmalloc(n * 2), *qg = xmalloc(n * 2);
    for (int t = 0; t < 4; t++) {
        const uint64_t seed = rnd64();
        const uint32_t id = (uint32_t)rnd64(), step = (uint32_t)rnd64();
        const size_t base = (size_t)rnd_int(0, 1000);
        const int e = rnd_int(-20, 20);
        const dlu_format fmt = t & 1 ? DLU_FMT_DFP16 : DLU_FMT_DFP8;
        dlu_stats sw, sg;
        char params[96];
        for (size_t i = 0; i < n; i++) {
            const uint32_t hi = (uint32_t)(dlu_sr_bits64(seed, id, step, (uint64_t)(base + i)) >> 32);
            uint32_t m;
            int s;
            if (hi < 0xFF000000u) {
                x[i] = (float)ldexp((double)(rnd64() >> 40), rnd_int(-40, 0) + e);
                continue;
            }
            const uint32_t tt = ~hi;
            int len = 0;
            while (len < 32 && (tt >> len))
                len++;
            s = 24 - len;
            m = (uint32_t)(((uint64_t)tt << s) | (rnd64() & ((1ull << s) - 1u))) | 0x800000u;
            x[i] = (float)ldexp((double)m, e - 32 - s) * (rnd_int(0, 1) ? -1.0f : 1.0f);
            nties++;
        }
        dlu_stats_clear(&sw);
        const dlu_status rw = dlu_quantize_f32(x, n, e, fmt, DLU_ROUND_STOCHASTIC, seed, id, step, base, qw, &sw);
        snprintf(params, sizeof params, "e=%d index_base=%zu (tied high halves)", e, base);
        for (int k = 0; k < NPATHS; k++) {
            if (!use_path(k, &skipped))
                continue;
            dlu_stats_clear(&sg);
            const dlu_status rg =
                dlu__cpu_quantize_f32(x, n, e, fmt, DLU_ROUND_STOCHASTIC, seed, id, step, base, qg, &sg);
            compare(&c, "quantize_f32 high-half ties", paths[k], dlu_format_bits(fmt), n, qw, qg, &sw, &sg, rw, rg,
                    params, show_f32, x);
        }
    }
    dlu__cpu_quant_select(NULL);
    free(x);
    free(qw);
    free(qg);
    printf("\n    %ld tied elements, %ld calls, %ld mismatching", nties, c.ncalls, c.nbad);
    CU_ASSERT(nties > 1000);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

/* stats_inherit's loop: each value requantized at ea = eo = e, status recorded. */
static void stats_q_ref(const void *q, size_t n, int e, int bits, dlu_stats *st)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t info;
        dlu_dfp_requantize(qat(q, bits, i), e, e, bits, DLU_ROUND_NEAREST, 0, &info);
        dlu_stats_record(st, info);
    }
}

static void test_stats_q(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    for (int t = 0; t < 3000; t++) {
        const size_t n = pick_n();
        const int e = pick_exp();
        const dlu_format fmt = pick_fmt();
        const int bits = dlu_format_bits(fmt);
        void *q = xmalloc(n * 2);
        const int style = rnd_int(0, 2);
        dlu_stats sw, sg;
        char params[64];
        for (size_t i = 0; i < n; i++) {
            int32_t v = (int32_t)(rnd64() >> rnd_int(33, 63)) * (rnd_int(0, 1) ? -1 : 1);
            if (style == 0)
                v = (int32_t)(uint32_t)rnd64();
            else if (style == 1 && rnd_int(0, 3) == 0)
                v = 0;
            if (rnd_int(0, 50) == 0)
                v = bits == 8 ? INT8_MIN : INT16_MIN;
            if (bits == 8)
                ((int8_t *)q)[i] = (int8_t)v;
            else
                ((int16_t *)q)[i] = (int16_t)v;
        }
        stats_seed(&sw, (uint64_t)t);
        stats_q_ref(q, n, e, bits, &sw);
        snprintf(params, sizeof params, "e=%d", e);
        for (int k = 0; k < NPATHS; k++) {
            if (!use_path(k, &skipped))
                continue;
            stats_seed(&sg, (uint64_t)t);
            dlu__cpu_stats_q(q, n, e, fmt, &sg);
            compare(&c, "stats_q", paths[k], bits, 0, q, q, &sw, &sg, DLU_OK, DLU_OK, params, NULL, NULL);
        }
        free(q);
    }
    dlu__cpu_quant_select(NULL);
    printf("\n    %ld calls, %ld mismatching", c.ncalls, c.nbad);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

/* grad_site's g=fp32 loop: histogram of a requantization at ea = eo, without its
 * overflow/underflow flags. */
static void test_stats_acc64(void)
{
    check c = {0, 0, 0};
    int skipped = 0;
    for (int t = 0; t < 2000; t++) {
        const size_t n = pick_n();
        const int ea = pick_exp();
        int64_t *a = xmalloc(n * sizeof *a);
        dlu_stats sw, sg;
        char params[64];
        fill_i64(a, n, rnd_int(-5, 30));
        stats_seed(&sw, (uint64_t)t);
        for (size_t i = 0; i < n; i++)
            dlu_stats_record(&sw, dlu_acc_hist_info(a[i], ea));
        snprintf(params, sizeof params, "ea=%d", ea);
        for (int k = 0; k < NPATHS; k++) {
            if (!use_path(k, &skipped))
                continue;
            stats_seed(&sg, (uint64_t)t);
            dlu__cpu_stats_acc64(a, n, ea, &sg);
            compare(&c, "stats_acc64", paths[k], 16, 0, a, a, &sw, &sg, DLU_OK, DLU_OK, params, NULL, NULL);
        }
        free(a);
    }
    dlu__cpu_quant_select(NULL);
    printf("\n    %ld calls, %ld mismatching", c.ncalls, c.nbad);
    CU_ASSERT_EQUAL(c.nbad, 0);
}

static void test_sr_bits64(void)
{
    long nbad = 0, ncalls = 0;
    int skipped = 0;
    for (int t = 0; t < 3000; t++) {
        const size_t n = pick_n();
        const uint64_t seed = rnd64(), index0 = (uint64_t)pick_base();
        const uint32_t id = (uint32_t)rnd64(), step = (uint32_t)rnd64();
        uint64_t *want = xmalloc(n * sizeof *want), *got = xmalloc(n * sizeof *got);
        for (size_t i = 0; i < n; i++)
            want[i] = dlu_sr_bits64(seed, id, step, index0 + i);
        for (int k = 0; k < NPATHS; k++) {
            if (!use_path(k, &skipped))
                continue;
            ncalls++;
            memset(got, 0, n * sizeof *got);
            dlu__cpu_sr_bits64(seed, id, step, index0, n, got);
            if (memcmp(want, got, n * sizeof *got) != 0 && nbad++ == 0)
                for (size_t i = 0; i < n; i++)
                    if (want[i] != got[i]) {
                        fprintf(stderr,
                                "\n  sr_bits64 [%s]: seed=%016" PRIx64 " id=%08" PRIx32 " step=%08" PRIx32
                                " index=%016" PRIx64 ": want %016" PRIx64 " got %016" PRIx64 "\n",
                                paths[k], seed, id, step, index0 + i, want[i], got[i]);
                        break;
                    }
        }
        free(want);
        free(got);
    }
    dlu__cpu_quant_select(NULL);
    printf("\n    %ld calls, %ld mismatching", ncalls, nbad);
    CU_ASSERT_EQUAL(nbad, 0);
}

/* ------------------------------------------------------------------------------------ */
/* vector files                                                                         */
/* ------------------------------------------------------------------------------------ */

static FILE *open_vectors(const char *name)
{
    const char *srcdir = getenv("srcdir");
    const char *roots[2] = {srcdir ? srcdir : ".", ".."};
    const int nroots = srcdir ? 1 : 2;
    char path[4096];
    for (int i = 0; i < nroots; i++) {
        FILE *f;
        snprintf(path, sizeof path, "%s/tests/vectors/%s", roots[i], name);
        f = fopen(path, "r");
        if (f)
            return f;
    }
    fprintf(stderr, "\n  cannot open tests/vectors/%s (srcdir=%s; set srcdir to the repository root)\n", name,
            srcdir ? srcdir : "(unset)");
    return NULL;
}

/* The expected statistics of one element with status word info. */
static void stats_of_info(uint32_t info, dlu_stats *st)
{
    dlu_stats_clear(st);
    dlu_stats_record(st, info);
}

static void test_vectors(void)
{
    static const char *const files[] = {"quant_f32.txt", "requant_acc.txt"};
    int skipped = 0;
    for (int fi = 0; fi < 2; fi++) {
        FILE *f = open_vectors(files[fi]);
        char line[512];
        long lineno = 0, nvec = 0, nbad = 0;
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        while (fgets(line, sizeof line, f)) {
            uint32_t u = 0, id, step, want_q, want_info;
            uint64_t acc = 0, seed, index;
            int e = 0, ea = 0, eo = 0, bits, ok;
            char mode;
            lineno++;
            if (line[0] == '#' || line[0] == '\n')
                continue;
            if (fi == 0)
                ok = sscanf(line,
                            "%" SCNx32 " %d %d %c %" SCNx64 " %" SCNx32 " %" SCNx32 " %" SCNx64 " -> %" SCNx32
                            " %" SCNx32,
                            &u, &e, &bits, &mode, &seed, &id, &step, &index, &want_q, &want_info) == 10;
            else
                ok = sscanf(line,
                            "%" SCNx64 " %d %d %d %c %" SCNx64 " %" SCNx32 " %" SCNx32 " %" SCNx64 " -> %" SCNx32
                            " %" SCNx32,
                            &acc, &ea, &eo, &bits, &mode, &seed, &id, &step, &index, &want_q, &want_info) == 11;
            if (!ok || (bits != 8 && bits != 16)) {
                fprintf(stderr, "\n  %s:%ld: malformed line\n", files[fi], lineno);
                nbad++;
                continue;
            }
            nvec++;
            const dlu_format fmt = bits == 8 ? DLU_FMT_DFP8 : DLU_FMT_DFP16;
            const dlu_round rm = mode == 'S' ? DLU_ROUND_STOCHASTIC : DLU_ROUND_NEAREST;
            dlu_stats want_st;
            stats_of_info(want_info, &want_st);
            for (int k = 0; k < NPATHS; k++) {
                int16_t q = 0x5A5A;
                dlu_stats st;
                dlu_status rc;
                if (!use_path(k, &skipped))
                    continue;
                dlu_stats_clear(&st);
                if (fi == 0) {
                    const float x = dlu_f32_from_bits(u);
                    rc = dlu__cpu_quantize_f32(&x, 1, e, fmt, rm, seed, id, step, (size_t)index, &q, &st);
                } else {
                    const int64_t a = (int64_t)acc;
                    rc = dlu__cpu_requantize_acc64(&a, 1, ea, eo, fmt, rm, seed, id, step, (size_t)index, &q, &st);
                }
                const int32_t got = bits == 8 ? (int32_t)((int8_t *)&q)[0] : (int32_t)q;
                if (rc != DLU_OK || (uint32_t)got != want_q || memcmp(&st, &want_st, sizeof st) != 0) {
                    if (nbad++ == 0) {
                        fprintf(stderr, "\n  %s:%ld [%s]: first mismatch\n    %s    want q=%08" PRIx32 " got %08" PRIx32 "\n",
                                files[fi], lineno, paths[k], line, want_q, (uint32_t)got);
                        print_stats_diff(&want_st, &st);
                    }
                }
            }
        }
        fclose(f);
        printf("\n    %s: %ld vectors, %ld mismatches", files[fi], nvec, nbad);
        CU_ASSERT(nvec >= 6000);
        CU_ASSERT_EQUAL(nbad, 0);
    }
    dlu__cpu_quant_select(NULL);
}

/* ------------------------------------------------------------------------------------ */
/* argument errors and dispatch                                                         */
/* ------------------------------------------------------------------------------------ */

static void test_api_errors(void)
{
    float x[3] = {1.0f, 2.0f, 3.0f};
    int64_t a64[3] = {1, 2, 3};
    int32_t a32[3] = {1, 2, 3};
    int8_t q[3] = {9, 9, 9};
    dlu_stats st;
    dlu_stats_clear(&st);
    /* bad format, bad mode, NULL pointers: DLU_EINVAL like the reference, nothing written */
    CU_ASSERT_EQUAL(dlu__cpu_quantize_f32(x, 3, 0, DLU_FMT_FP32, DLU_ROUND_NEAREST, 0, 0, 0, 0, q, &st), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_quantize_f32(x, 3, 0, (dlu_format)99, DLU_ROUND_NEAREST, 0, 0, 0, 0, q, &st), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_quantize_f32(x, 3, 0, DLU_FMT_DFP8, (dlu_round)2, 0, 0, 0, 0, q, &st), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_quantize_f32(NULL, 3, 0, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 0, 0, 0, q, &st), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_quantize_f32(x, 3, 0, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 0, 0, 0, NULL, &st), DLU_EINVAL);
    CU_ASSERT(strlen(dlu_last_error()) > 0);
    CU_ASSERT_EQUAL(dlu__cpu_requantize_acc64(a64, 3, 0, 0, DLU_FMT_FP32, DLU_ROUND_NEAREST, 0, 0, 0, 0, q, &st),
                    DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_requantize_acc64(a64, 3, 0, 0, DLU_FMT_DFP8, (dlu_round)-1, 0, 0, 0, 0, q, &st),
                    DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_requantize_acc64(NULL, 3, 0, 0, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 0, 0, 0, q, &st),
                    DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_requantize_acc32(a32, 3, 0, 0, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 0, 0, 0, NULL, &st),
                    DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_requantize_acc32(a32, 3, 0, 0, (dlu_format)7, DLU_ROUND_NEAREST, 0, 0, 0, 0, q, &st),
                    DLU_EINVAL);
    CU_ASSERT(q[0] == 9 && q[1] == 9 && q[2] == 9);
    CU_ASSERT_EQUAL(st.count, 0);
    /* n = 0: OK with NULL pointers, statistics untouched */
    CU_ASSERT_EQUAL(dlu__cpu_quantize_f32(NULL, 0, 0, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 0, 0, 0, NULL, &st), DLU_OK);
    CU_ASSERT_EQUAL(dlu__cpu_requantize_acc64(NULL, 0, 0, 0, DLU_FMT_DFP16, DLU_ROUND_STOCHASTIC, 0, 0, 0, 0, NULL, &st),
                    DLU_OK);
    CU_ASSERT_EQUAL(dlu__cpu_requantize_acc32(NULL, 0, 0, 0, DLU_FMT_DFP16, DLU_ROUND_STOCHASTIC, 0, 0, 0, 0, NULL, &st),
                    DLU_OK);
    dlu__cpu_stats_q(NULL, 3, 0, DLU_FMT_DFP8, &st);
    dlu__cpu_stats_q(q, 3, 0, DLU_FMT_FP32, &st);
    dlu__cpu_stats_acc64(NULL, 3, 0, &st);
    CU_ASSERT_EQUAL(st.count, 0);
    /* dispatch */
    CU_ASSERT_EQUAL(dlu__cpu_quant_select("no-such-path"), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__cpu_quant_select("portable"), DLU_OK);
    CU_ASSERT_STRING_EQUAL(dlu__cpu_quant_impl(), "portable");
    CU_ASSERT_EQUAL(dlu__cpu_quant_select(NULL), DLU_OK);
    printf("\n    best path on this CPU: %s", dlu__cpu_quant_impl());
}

int main(void)
{
    CU_pSuite s;
    unsigned fails;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("cpu_quant", NULL, NULL);
    if (!s || !CU_add_test(s, "argument errors and dispatch", test_api_errors) ||
        !CU_add_test(s, "sr_bits64 vs dlu_sr_bits64", test_sr_bits64) ||
        !CU_add_test(s, "vectors: quant_f32.txt, requant_acc.txt", test_vectors) ||
        !CU_add_test(s, "quantize_f32: exponent x shift sweep", test_quantize_exponent_sweep) ||
        !CU_add_test(s, "quantize_f32 vs reference (random)", test_quantize_f32) ||
        !CU_add_test(s, "quantize_f32 stochastic: tied high halves", test_quantize_sr_high_ties) ||
        !CU_add_test(s, "requantize_acc64: shift sweep -70..70", test_requantize_shift_sweep) ||
        !CU_add_test(s, "requantize_acc64 vs reference (random)", test_requantize_acc64) ||
        !CU_add_test(s, "requantize_acc32 vs reference (random)", test_requantize_acc32) ||
        !CU_add_test(s, "stats_q vs stats_inherit loop", test_stats_q) ||
        !CU_add_test(s, "stats_acc64 vs grad_site loop", test_stats_acc64)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
