/* test_scale.c -- CUnit tests of libdl/scale.c, the scaling policies.
 *
 * What it checks: every policy picks exactly the exponent docs/numerics.md section 12
 * says on crafted histograms (one bin, a tail of known size, bimodal, zeros only, NaNs,
 * the clamps), worked through by hand in the comments; hysteresis, interval, margin,
 * emergency and the recompute rule over sequences of steps; the spec parser's canonical
 * form and every kind of bad spec, with the message naming the problem; the checkpoint
 * image (documented layout, round trip mid-run, every flipped byte, truncation, fields out
 * of range behind a valid CRC). A brute-force reference (the definition "smallest e
 * such that ...", scanned over every exponent) cross-checks the fast search on random
 * histograms, and real data quantized by dlu_quantize_f32 ties the rules to numerics.h,
 * including the rounding edge case at k = e + b - 2.
 *
 * What it is not: a test of training with these policies (the training loop's tests). */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlu/numerics.h"
#include "dlu/scale.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */
/* ------------------------------------------------------------------------------------ */

#define CHECK_EXP(got, want)                                                                   \
    do {                                                                                       \
        const int g_ = (got), w_ = (want);                                                     \
        if (g_ != w_)                                                                          \
            printf("\n    %s:%d: exponent %d, expected %d ", __FILE__, __LINE__, g_, w_);      \
        CU_ASSERT_EQUAL(g_, w_);                                                               \
    } while (0)

/* The message of the last error must contain `what`. */
#define CHECK_MSG(what)                                                                        \
    do {                                                                                       \
        const char *m_ = dlu_last_error();                                                     \
        if (!strstr(m_, (what)))                                                               \
            printf("\n    %s:%d: message \"%s\" lacks \"%s\" ", __FILE__, __LINE__, m_, (what)); \
        CU_ASSERT_PTR_NOT_NULL(strstr(m_, (what)));                                            \
    } while (0)

static uint64_t g_rng = 0x5CA1E5CA1E5EED01ull;

static uint64_t rnd64(void) /* splitmix64: fixed seed, reproducible */
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static dlu_stats empty(void)
{
    dlu_stats st;
    dlu_stats_clear(&st);
    return st;
}

/* c values with floor(log2|v|) = k. */
static void add(dlu_stats *st, int k, uint64_t c)
{
    st->hist[dlu_stats_bin(k)] += c;
    st->count += c;
}

static dlu_stats one_bin(int k, uint64_t c)
{
    dlu_stats st = empty();
    add(&st, k, c);
    return st;
}

/* A state for spec on fmt; NULL (and a failed assertion) if that fails. */
static dlu_scale_state *mk(const char *spec, dlu_format fmt)
{
    dlu_scale_cfg c;
    dlu_scale_state *s = NULL;
    dlu_status rc = dlu_scale_parse(spec, &c);
    if (rc == DLU_OK)
        rc = dlu_scale_state_new(&c, fmt, &s);
    if (rc != DLU_OK)
        printf("\n    cannot make '%s': %s ", spec, dlu_last_error());
    CU_ASSERT_EQUAL_FATAL(rc, DLU_OK);
    return s;
}

static int calib(const char *spec, dlu_format fmt, const dlu_stats *st)
{
    dlu_scale_state *s = mk(spec, fmt);
    int e = dlu_scale_calibrate(s, st);
    CU_ASSERT_EQUAL(e, dlu_scale_exp(s));
    dlu_scale_state_free(s);
    return e;
}

/* The definitions of docs/numerics.md 12.1, written naively: n, tail(j), allowed(r). */
static uint64_t ref_n(const dlu_stats *st)
{
    uint64_t n = 0;
    for (int i = 0; i < DLU_STATS_NBINS; i++)
        n += st->hist[i];
    return n;
}

static uint64_t ref_tail(const dlu_stats *st, long j)
{
    uint64_t t = 0;
    for (int i = 0; i < DLU_STATS_NBINS; i++)
        if (i + DLU_STATS_KMIN >= j)
            t += st->hist[i];
    return t;
}

static uint64_t ref_allowed(uint64_t n, double r)
{
    double x = r * (double)n * (1.0 + 1e-12);
    return x >= (double)n ? n : (uint64_t)floor(x);
}

/* "The smallest e whose saturation point 2^(e+b-1) leaves at most `allowed` values
 * above it", scanning every exponent from far below the valid range; plus margin,
 * clamped. */
static int ref_rule(const dlu_stats *st, int bits, uint64_t allowed, int margin, int exp_max)
{
    long e;
    for (e = DLU_EXP_MIN - 200; e < 400; e++)
        if (ref_tail(st, e + bits - 1) <= allowed)
            break;
    e += margin;
    return e < DLU_EXP_MIN ? DLU_EXP_MIN : (e > exp_max ? exp_max : (int)e);
}

/* ------------------------------------------------------------------------------------ */
/* parsing                                                                              */
/* ------------------------------------------------------------------------------------ */

static void test_defaults_and_canonical(void)
{
    dlu_scale_cfg c, d;
    char buf[256];

    dlu_scale_cfg_default(&c);
    CU_ASSERT_EQUAL(c.kind, DLU_SCALE_OVERFLOW);
    CU_ASSERT_EQUAL(c.rate, 1e-4);
    CU_ASSERT_EQUAL(c.interval, 1);
    CU_ASSERT_EQUAL(c.margin, 0);
    CU_ASSERT_EQUAL(c.hysteresis, 1);
    CU_ASSERT_EQUAL(c.emergency, 0.01);
    CU_ASSERT_EQUAL(c.recompute, 0);
    CU_ASSERT_EQUAL(c.history, 16);
    CU_ASSERT_EQUAL(c.percentile, 99.99);
    CU_ASSERT_EQUAL(c.nstd, 3);
    CU_ASSERT_EQUAL(c.offset, 100.0 / 32768.0);

    int n = dlu_scale_format_spec(&c, buf, sizeof buf);
    CU_ASSERT_STRING_EQUAL(buf, "overflow:rate=0.0001,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0");
    CU_ASSERT_EQUAL(n, (int)strlen(buf));
    /* snprintf-like truncation */
    char small[9];
    CU_ASSERT_EQUAL(dlu_scale_format_spec(&c, small, sizeof small), n);
    CU_ASSERT_STRING_EQUAL(small, "overflow");

    static const struct {
        const char *in, *canonical;
    } cases[] = {
        {"overflow", "overflow:rate=0.0001,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"},
        {"overflow:rate=1e-4,hysteresis=4,margin=0",
         "overflow:rate=0.0001,interval=1,margin=0,hysteresis=4,emergency=0.01,recompute=0"},
        {"max", "max:interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"},
        {"amax:history=16", "amax:history=16,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"},
        {"autoflex",
         "autoflex:history=16,nstd=3,offset=0.0030517578125,interval=1,margin=0,hysteresis=1,emergency=0.01,"
         "recompute=0"},
        {"percentile:p=99.99", "percentile:p=99.99,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"},
        {"onebit:rate=1e-3", "onebit:rate=0.001,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"},
        {"overflow:recompute=0.05,emergency=0,interval=8,margin=-2,rate=0.25",
         "overflow:rate=0.25,interval=8,margin=-2,hysteresis=1,emergency=0,recompute=0.05"},
        {"percentile:p=100", "percentile:p=100,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"},
        {"autoflex:nstd=0,offset=0,history=1024",
         "autoflex:history=1024,nstd=0,offset=0,interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"},
        {"onebit:rate=0.1,margin=64", "onebit:rate=0.1,interval=1,margin=64,hysteresis=1,emergency=0.01,recompute=0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dlu_status rc = dlu_scale_parse(cases[i].in, &c);
        CU_ASSERT_EQUAL(rc, DLU_OK);
        if (rc != DLU_OK) {
            printf("\n    '%s': %s ", cases[i].in, dlu_last_error());
            continue;
        }
        dlu_scale_format_spec(&c, buf, sizeof buf);
        if (strcmp(buf, cases[i].canonical))
            printf("\n    '%s' -> '%s', expected '%s' ", cases[i].in, buf, cases[i].canonical);
        CU_ASSERT_STRING_EQUAL(buf, cases[i].canonical);
        /* the canonical form parses back to the same configuration */
        CU_ASSERT_EQUAL(dlu_scale_parse(buf, &d), DLU_OK);
        CU_ASSERT(memcmp(&c, &d, sizeof c) == 0);
    }
    for (int k = 0; k < DLU_SCALE_COUNT; k++)
        CU_ASSERT_STRING_NOT_EQUAL(dlu_scale_kind_name((dlu_scale_kind)k), "unknown");
    CU_ASSERT_STRING_EQUAL(dlu_scale_kind_name(DLU_SCALE_COUNT), "unknown");
    CU_ASSERT_STRING_EQUAL(dlu_scale_kind_name(DLU_SCALE_AUTOFLEX), "autoflex");
}

static void test_parse_errors(void)
{
    static const struct {
        const char *spec, *phrase, *phrase2;
    } cases[] = {
        {"", "no policy named", "valid policies: overflow, max, amax, autoflex, percentile, onebit"},
        {"foo", "unknown policy 'foo'", "valid policies: overflow, max, amax, autoflex, percentile, onebit"},
        {"OVERFLOW", "unknown policy 'OVERFLOW'", "valid policies"},
        {"foo:rate=1", "unknown policy 'foo'", "valid policies"},
        {"overflow:foo=1", "unknown key 'foo'",
         "valid keys for overflow: rate, interval, margin, hysteresis, emergency, recompute"},
        {"max:rate=1e-3", "key 'rate' does not apply to policy max",
         "valid keys for max: interval, margin, hysteresis, emergency, recompute"},
        {"amax:p=99", "key 'p' does not apply to policy amax", "valid keys for amax: history, interval"},
        {"percentile:history=3", "key 'history' does not apply to policy percentile", "valid keys for percentile: p,"},
        {"autoflex:rate=0.1", "does not apply", "history, nstd, offset"},
        {"overflow:rate=abc", "rate 'abc' is not a number", "overflow:rate=abc"},
        {"overflow:rate=", "rate '' is not a number", "overflow"},
        {"overflow:rate=nan", "rate 'nan' is not a number", ""},
        {"overflow:rate=inf", "rate 'inf' is not a number", ""},
        {"overflow:rate=1e-3x", "rate '1e-3x' is not a number", ""},
        {"overflow:rate=1", "rate '1' is out of range [0, 1)", ""},
        {"overflow:rate=-0.1", "rate '-0.1' is out of range [0, 1)", ""},
        {"onebit:rate=2", "rate '2' is out of range [0, 1)", ""},
        {"overflow:interval=0", "interval '0' is out of range [1, 1000000]", ""},
        {"overflow:interval=2.5", "interval '2.5' is not an integer", ""},
        {"overflow:interval=99999999999999999999", "is not an integer", ""},
        {"overflow:margin=65", "margin '65' is out of range [-64, 64]", ""},
        {"overflow:margin=-65", "margin '-65' is out of range [-64, 64]", ""},
        {"overflow:hysteresis=0", "hysteresis '0' is out of range [1, 1000000]", ""},
        {"overflow:emergency=1.5", "emergency '1.5' is out of range [0, 1]", ""},
        {"overflow:recompute=-1", "recompute '-1' is out of range [0, 1]", ""},
        {"amax:history=0", "history '0' is out of range [1, 1024]", ""},
        {"amax:history=1025", "history '1025' is out of range [1, 1024]", ""},
        {"percentile:p=0", "p '0' is out of range (0, 100]", ""},
        {"percentile:p=100.5", "p '100.5' is out of range (0, 100]", ""},
        {"autoflex:nstd=-1", "nstd '-1' is out of range [0, 100]", ""},
        {"autoflex:offset=2", "offset '2' is out of range [0, 1]", ""},
        {"overflow:rate", "'rate' is not key=value", "valid keys for overflow"},
        {"overflow:", "nothing after ':'", "valid keys for overflow"},
        {"overflow:rate=1e-3,,margin=1", "empty item", ""},
        {"overflow:rate=1e-3,", "empty item", ""},
        {"overflow:rate=1e-3,rate=1e-2", "key 'rate' given twice", ""},
        {"overflow:=3", "unknown key ''", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dlu_scale_cfg c, before;
        memset(&c, 0x5a, sizeof c);
        before = c;
        dlu_clear_error();
        dlu_status rc = dlu_scale_parse(cases[i].spec, &c);
        if (rc != DLU_EINVAL)
            printf("\n    '%s' accepted ", cases[i].spec);
        CU_ASSERT_EQUAL(rc, DLU_EINVAL);
        CHECK_MSG(cases[i].phrase);
        CHECK_MSG(cases[i].phrase2);
        CU_ASSERT(memcmp(&c, &before, sizeof c) == 0); /* untouched on failure */
    }
    /* over-long spec and NULLs */
    char longspec[700];
    memset(longspec, 'x', sizeof longspec - 1);
    longspec[sizeof longspec - 1] = '\0';
    dlu_scale_cfg c;
    CU_ASSERT_EQUAL(dlu_scale_parse(longspec, &c), DLU_EINVAL);
    CHECK_MSG("longer than");
    CU_ASSERT_EQUAL(dlu_scale_parse(NULL, &c), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu_scale_parse("max", NULL), DLU_EINVAL);
}

static void test_state_new_errors(void)
{
    dlu_scale_cfg c;
    dlu_scale_state *s = (dlu_scale_state *)&c; /* must be set to NULL on failure */

    dlu_scale_cfg_default(&c);
    CU_ASSERT_EQUAL(dlu_scale_state_new(&c, DLU_FMT_FP32, &s), DLU_EINVAL);
    CU_ASSERT_PTR_NULL(s);
    CHECK_MSG("fp32 is not a DFP format");
    c.rate = 2;
    CU_ASSERT_EQUAL(dlu_scale_state_new(&c, DLU_FMT_DFP8, &s), DLU_EINVAL);
    CHECK_MSG("rate = 2 is out of range [0, 1)");
    c.rate = NAN;
    CU_ASSERT_EQUAL(dlu_scale_state_new(&c, DLU_FMT_DFP8, &s), DLU_EINVAL);
    CHECK_MSG("rate = nan is out of range");
    dlu_scale_cfg_default(&c);
    c.kind = DLU_SCALE_AMAX;
    c.history = 0;
    CU_ASSERT_EQUAL(dlu_scale_state_new(&c, DLU_FMT_DFP8, &s), DLU_EINVAL);
    CHECK_MSG("history = 0");
    c.kind = DLU_SCALE_MAX; /* history does not matter to max */
    CU_ASSERT_EQUAL(dlu_scale_state_new(&c, DLU_FMT_DFP8, &s), DLU_OK);
    CU_ASSERT_EQUAL(dlu_scale_state_nbytes(s), 1124);
    CU_ASSERT_EQUAL(dlu_scale_state_format(s), DLU_FMT_DFP8);
    CU_ASSERT_EQUAL(dlu_scale_state_cfg(s)->kind, DLU_SCALE_MAX);
    dlu_scale_state_free(s);
    c.kind = (dlu_scale_kind)77;
    CU_ASSERT_EQUAL(dlu_scale_state_new(&c, DLU_FMT_DFP8, &s), DLU_EINVAL);
    CHECK_MSG("kind 77 is not a policy");
    dlu_scale_state_free(NULL);
}

/* ------------------------------------------------------------------------------------ */
/* the rules on crafted histograms                                                      */
/* ------------------------------------------------------------------------------------ */

static void test_overflow_rule(void)
{
    const dlu_format F8 = DLU_FMT_DFP8, F16 = DLU_FMT_DFP16;
    dlu_stats st;

    /* Before calibration: 2 - b. */
    dlu_scale_state *s = mk("overflow", F8);
    CHECK_EXP(dlu_scale_exp(s), -6);
    CU_ASSERT_FALSE(dlu_scale_calibrated(s));
    dlu_scale_state_free(s);
    s = mk("overflow", F16);
    CHECK_EXP(dlu_scale_exp(s), -14);
    dlu_scale_state_free(s);

    /* All 1000 values in bin k = 3 ([8, 16)): rate 1e-4 allows floor(0.1) = 0, so the
     * saturation point must be above the bin: j = 4, e = j - (b - 1) = -3 for dfp8
     * (q up to 127 * 2^-3 = 15.875), -11 for dfp16. */
    st = one_bin(3, 1000);
    CHECK_EXP(calib("overflow", F8, &st), -3);
    CHECK_EXP(calib("overflow", F16, &st), -11);
    CHECK_EXP(calib("overflow:margin=2", F8, &st), -1);
    CHECK_EXP(calib("overflow:margin=-1", F8, &st), -4);

    /* A tail of known size: 9990 values at k = 0, 10 at k = 5 (n = 10000).
     * rate 1e-3 allows 10: the 10 outliers may saturate, j = 1 (values at k = 0 stay
     * below 2^1), e = 1 - 7 = -6. rate 9e-4 allows 9 < 10: j = 6, e = -1. */
    st = one_bin(0, 9990);
    add(&st, 5, 10);
    CHECK_EXP(calib("overflow:rate=1e-3", F8, &st), -6);
    CHECK_EXP(calib("overflow:rate=9e-4", F8, &st), -1);
    CHECK_EXP(calib("overflow:rate=1e-4", F8, &st), -1);
    CHECK_EXP(calib("overflow:rate=0", F8, &st), -1);
    CHECK_EXP(calib("overflow:rate=1e-3", F16, &st), -14);
    /* 9999 at k = 0 and 1 at k = 5: 1e-4 * 10000 is 1 in decimal (not quite in binary);
     * the documented slack makes it allow exactly 1. */
    st = one_bin(0, 9999);
    add(&st, 5, 1);
    CHECK_EXP(calib("overflow:rate=1e-4", F8, &st), -6);
    /* 0.29 * 100 is 28.999999999999996 in binary: the slack makes it 29 */
    st = one_bin(0, 71);
    add(&st, 5, 29);
    CHECK_EXP(calib("overflow:rate=0.29", F8, &st), -6);
    CHECK_EXP(calib("overflow:rate=0.28", F8, &st), -1);

    /* Bimodal: 500 at k = -10, 500 at k = 2. rate 0.4 (allows 400): the upper mode must
     * fit, j = 3, e = -4. rate 0.5 (allows 500): the whole upper mode may saturate,
     * j = -9 (just above the lower mode), e = -16. */
    st = one_bin(-10, 500);
    add(&st, 2, 500);
    CHECK_EXP(calib("overflow:rate=0.4", F8, &st), -4);
    CHECK_EXP(calib("overflow:rate=0.5", F8, &st), -16);

    /* Zeros only: nothing to go by; the exponent stays and calibration is not done. */
    st = empty();
    st.count = st.zeros = 100;
    s = mk("overflow", F8);
    CHECK_EXP(dlu_scale_calibrate(s, &st), -6);
    CU_ASSERT_FALSE(dlu_scale_calibrated(s));
    CHECK_EXP(dlu_scale_update(s, &st), -6);
    CU_ASSERT_FALSE(dlu_scale_calibrated(s));
    CHECK_EXP(dlu_scale_update(s, NULL), -6);
    /* the first informative step calibrates */
    st = one_bin(3, 10);
    CHECK_EXP(dlu_scale_update(s, &st), -3);
    CU_ASSERT_TRUE(dlu_scale_calibrated(s));
    /* a zero-only step afterwards changes nothing */
    st = empty();
    st.count = st.zeros = 100;
    CHECK_EXP(dlu_scale_update(s, &st), -3);
    dlu_scale_state_free(s);

    /* NaNs and zeros are counted in `count` but are not values: fractions are of the
     * nonzero values. 1000 at k = 3 plus 10^6 NaNs and 10^6 zeros: still e = -3.
     * One value among 10^6 zeros: rate 1e-4 of n = 1 allows 0, so it must fit (e = 5 - 6). */
    st = one_bin(3, 1000);
    st.nan = 1000000;
    st.zeros = 1000000;
    st.count += 2000000;
    CHECK_EXP(calib("overflow", F8, &st), -3);
    st = one_bin(5, 1);
    st.zeros = 1000000;
    st.count += 1000000;
    CHECK_EXP(calib("overflow", F8, &st), -1);
    st = empty();
    st.count = st.nan = 7;
    CHECK_EXP(calib("overflow", F8, &st), -6); /* NaNs only: like zeros only */

    /* The clamped top bin (k >= 63 and +-Inf) counts as k = 63: j = 64, e = 57 for dfp8;
     * with margin 64 exactly the largest valid exponent 129 - b. */
    st = one_bin(63, 5);
    CHECK_EXP(calib("overflow", F8, &st), 57);
    CHECK_EXP(calib("overflow:margin=64", F8, &st), 121);
    CHECK_EXP(calib("overflow:margin=64", F16, &st), 113);
    /* the clamped bottom bin counts as k = -64 */
    st = one_bin(-64, 5);
    CHECK_EXP(calib("overflow", F16, &st), -78);
    CHECK_EXP(calib("overflow:margin=-64", F16, &st), -142);
}

static void test_max_and_percentile(void)
{
    const dlu_format F8 = DLU_FMT_DFP8;
    dlu_stats st;

    /* max: j = top bin + 1 whatever the rest. Bimodal as above: j = 3, e = -4. */
    st = one_bin(-10, 500);
    add(&st, 2, 500);
    CHECK_EXP(calib("max", F8, &st), -4);
    CHECK_EXP(calib("max", DLU_FMT_DFP16, &st), -12);
    CHECK_EXP(calib("max:margin=3", F8, &st), -1);
    st = one_bin(0, 9999);
    add(&st, 5, 1);
    CHECK_EXP(calib("max", F8, &st), -1);

    /* percentile: 97 values at k = 0, 3 at k = 10 (n = 100).
     * p = 97: 97 must lie below 2^j, 3 may saturate: j = 1, e = -6.
     * p = 98: 98 below: the k = 10 values must fit too: j = 11, e = 4.
     * p = 100: the max rule, e = 4. */
    st = one_bin(0, 97);
    add(&st, 10, 3);
    CHECK_EXP(calib("percentile:p=97", F8, &st), -6);
    CHECK_EXP(calib("percentile:p=98", F8, &st), 4);
    CHECK_EXP(calib("percentile:p=100", F8, &st), 4);
    CHECK_EXP(calib("percentile:p=50", F8, &st), -6);
    CHECK_EXP(calib("percentile:p=97,margin=1", F8, &st), -5);
    /* p = 99.99 of 10000 is 9999 in decimal: one outlier may saturate */
    st = one_bin(0, 9999);
    add(&st, 10, 1);
    CHECK_EXP(calib("percentile:p=99.99", F8, &st), -6);
    CHECK_EXP(calib("percentile", F8, &st), -6); /* the default p */
    CHECK_EXP(calib("percentile:p=99.995", F8, &st), 4);
    /* 7% of 100 is 7.000000000000001 in binary: the slack makes it 7, so 93 may lie
     * at or above the saturation point */
    st = one_bin(0, 7);
    add(&st, 4, 93);
    CHECK_EXP(calib("percentile:p=7", F8, &st), -6);
    CHECK_EXP(calib("percentile:p=7.01", F8, &st), -2);
    /* 99.9% of 1000 = 999 exactly, likewise */
    st = one_bin(0, 999);
    add(&st, 10, 1);
    CHECK_EXP(calib("percentile:p=99.9", F8, &st), -6);
    /* NaNs and zeros do not count as values */
    st.nan = 5000;
    st.zeros = 5000;
    st.count += 10000;
    CHECK_EXP(calib("percentile:p=99.9", F8, &st), -6);
}

/* The fast searches against the definition, on random histograms. */
static void test_rules_against_definition(void)
{
    static const double rates[] = {0, 1e-4, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.9, 0.999};
    static const double pcts[] = {100, 99.99, 99.9, 99, 90, 50, 10, 1e-3};
    int bad = 0;
    char spec[128];

    for (int it = 0; it < 400; it++) {
        dlu_stats st = empty();
        const int nb = 1 + (int)(rnd64() % 6);
        const int lo = -64 + (int)(rnd64() % 100);
        for (int b = 0; b < nb; b++)
            add(&st, lo + (int)(rnd64() % 28), 1 + rnd64() % (rnd64() % 2 ? 5 : 100000));
        const dlu_format fmt = it % 2 ? DLU_FMT_DFP16 : DLU_FMT_DFP8;
        const int bits = dlu_format_bits(fmt), emax = dlu_format_exp_max(fmt);
        const int margin = (int)(rnd64() % 9) - 4;
        const uint64_t n = ref_n(&st);

        const double r = rates[rnd64() % (sizeof rates / sizeof rates[0])];
        snprintf(spec, sizeof spec, "overflow:rate=%.17g,margin=%d", r, margin);
        int want = ref_rule(&st, bits, ref_allowed(n, r), margin, emax);
        int got = calib(spec, fmt, &st);
        if (got != want && bad++ < 5)
            printf("\n    %s: %d, definition says %d ", spec, got, want);
        CU_ASSERT_EQUAL(got, want);

        snprintf(spec, sizeof spec, "max:margin=%d", margin);
        want = ref_rule(&st, bits, 0, margin, emax);
        got = calib(spec, fmt, &st);
        CU_ASSERT_EQUAL(got, want);

        const double p = pcts[rnd64() % (sizeof pcts / sizeof pcts[0])];
        double x = p / 100.0 * (double)n * (1.0 - 1e-12);
        const uint64_t need = x >= (double)n ? n : (uint64_t)ceil(x);
        snprintf(spec, sizeof spec, "percentile:p=%.17g,margin=%d", p, margin);
        want = ref_rule(&st, bits, n - need, margin, emax);
        got = calib(spec, fmt, &st);
        if (got != want && bad++ < 5)
            printf("\n    %s: %d, definition says %d ", spec, got, want);
        CU_ASSERT_EQUAL(got, want);
        /* the percentile definition itself: at least p% below 2^(e+b-1), and at e-1 not */
        if (margin == 0 && got > DLU_EXP_MIN && got < emax) {
            CU_ASSERT(n - ref_tail(&st, got + bits - 1) >= need);
            CU_ASSERT(n - ref_tail(&st, got - 1 + bits - 1) < need);
        }
    }
}

static void test_amax(void)
{
    dlu_scale_state *s = mk("amax:history=3", DLU_FMT_DFP8);
    dlu_stats st;

    /* Calibrate on top bin 5: e = 6 - 7 = -1. Then top bins 2, 2, 2: the window
     * {5,2}, {5,2,2} keeps -1; {2,2,2} gives j = 3, e = -4. */
    st = one_bin(5, 10);
    add(&st, -3, 90);
    CHECK_EXP(dlu_scale_calibrate(s, &st), -1);
    st = one_bin(2, 100);
    CHECK_EXP(dlu_scale_update(s, &st), -1);
    CHECK_EXP(dlu_scale_update(s, &st), -1);
    CHECK_EXP(dlu_scale_update(s, &st), -4);
    /* a larger maximum raises at once and stays for the window */
    st = one_bin(6, 1);
    st.overflow = 1; /* 1 of 1 saturated at e = -4 */
    CHECK_EXP(dlu_scale_update(s, &st), 0);
    st = one_bin(1, 100);
    CHECK_EXP(dlu_scale_update(s, &st), 0);
    CHECK_EXP(dlu_scale_update(s, &st), 0);
    CHECK_EXP(dlu_scale_update(s, &st), -5);
    /* zero-only steps take no slot in the window */
    dlu_stats z = empty();
    z.count = z.zeros = 64;
    st = one_bin(4, 1);
    CHECK_EXP(dlu_scale_update(s, &st), -2);
    CHECK_EXP(dlu_scale_update(s, &z), -2);
    CHECK_EXP(dlu_scale_update(s, &z), -2);
    CHECK_EXP(dlu_scale_update(s, &z), -2);
    st = one_bin(1, 100);
    CHECK_EXP(dlu_scale_update(s, &st), -2);
    CHECK_EXP(dlu_scale_update(s, &st), -2);
    CHECK_EXP(dlu_scale_update(s, &st), -5);
    dlu_scale_state_free(s);

    /* margin, dfp16 */
    s = mk("amax:history=2,margin=1", DLU_FMT_DFP16);
    st = one_bin(-20, 3);
    CHECK_EXP(dlu_scale_calibrate(s, &st), -19 - 15 + 1);
    dlu_scale_state_free(s);
}

static void test_autoflex(void)
{
    dlu_scale_state *s = mk("autoflex:history=4", DLU_FMT_DFP8);
    dlu_stats st;

    /* Calibration = the max rule: top bin 4 -> e = 5 - 7 = -2; history {2^4}. */
    st = one_bin(4, 50);
    add(&st, 0, 50);
    CHECK_EXP(dlu_scale_calibrate(s, &st), -2);
    /* Step, top bin 0 (values in [1, 2), no overflow). History {16, 1}: max 16,
     * mean 8.5, std 7.5; maxval = 16 + 3 * 7.5 + (100/32768) * 2^(-2+7) = 38.5977;
     * floor(log2) = 5, e = 5 - (8 - 2) = -1. The variance raises the exponent even
     * though the values fell, as in Nervana's code. */
    st = one_bin(0, 100);
    CHECK_EXP(dlu_scale_update(s, &st), -1);
    /* {16,1,1}: 16 + 3 * 7.0711 + 0.195 = 37.41 -> -1; {16,1,1,1}: 35.68 -> -1 */
    CHECK_EXP(dlu_scale_update(s, &st), -1);
    CHECK_EXP(dlu_scale_update(s, &st), -1);
    /* {1,1,1,1}: the 16 left the window; 1 + 0 + 0.0061 * ... = 1.195 -> e = -6 */
    CHECK_EXP(dlu_scale_update(s, &st), -6);
    CHECK_EXP(dlu_scale_update(s, &st), -6);
    /* An overflowing step (top bin 6 at e = -6, all saturated): the history is cleared
     * and 2 * 2^6 recorded: maxval = 128 + 0 + 0.0061 -> floor 7, e = 1: one bit above
     * the max rule (e = 0). */
    st = one_bin(6, 100);
    st.overflow = 100;
    CHECK_EXP(dlu_scale_update(s, &st), 1);
    /* {128, 64}: 128 + 3 * 32 + 0.78 = 224.8 -> 1; {128, 64, 32}: 248.5 -> 1 */
    st = one_bin(6, 100);
    CHECK_EXP(dlu_scale_update(s, &st), 1);
    st = one_bin(5, 100);
    CHECK_EXP(dlu_scale_update(s, &st), 1);
    dlu_scale_state_free(s);

    /* nstd = 0, offset = 0: the running max of the window, i.e. amax. */
    s = mk("autoflex:history=2,nstd=0,offset=0", DLU_FMT_DFP16);
    st = one_bin(3, 1);
    CHECK_EXP(dlu_scale_calibrate(s, &st), 4 - 15);
    st = one_bin(1, 1);
    CHECK_EXP(dlu_scale_update(s, &st), 4 - 15);
    CHECK_EXP(dlu_scale_update(s, &st), 2 - 15);
    dlu_scale_state_free(s);

    /* the offset alone: a large offset adds a bit (0.5 of the saturation point 2^4 = 8,
     * plus max 8: 16 -> floor 4 -> e = 4 - 6 = -2 instead of -3) */
    s = mk("autoflex:history=2,nstd=0,offset=0.5", DLU_FMT_DFP8);
    st = one_bin(3, 1);
    CHECK_EXP(dlu_scale_calibrate(s, &st), -3);
    CHECK_EXP(dlu_scale_update(s, &st), -2);
    dlu_scale_state_free(s);
}

static void test_onebit(void)
{
    dlu_scale_state *s = mk("onebit:rate=1e-3", DLU_FMT_DFP8);
    dlu_stats lo = one_bin(3, 1000), hi = one_bin(6, 1000);

    /* Calibration: the overflow rule (allows floor(1) = 1): j = 4, e = -3. */
    CHECK_EXP(dlu_scale_calibrate(s, &lo), -3);
    /* Same data: at e = -3 nothing saturates, but one bit less (saturation 2^3) would
     * saturate all 1000 > 1: stay. */
    CHECK_EXP(dlu_scale_update(s, &lo), -3);
    /* Values move to k = 6: one bit per update, -3 -> -2 -> -1 -> 0, then stay
     * (emergency off so that only the one-bit rule acts). */
    dlu_scale_state_free(s);
    s = mk("onebit:rate=1e-3,emergency=0", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &lo), -3);
    hi.overflow = 1000;
    CHECK_EXP(dlu_scale_update(s, &hi), -2);
    CHECK_EXP(dlu_scale_update(s, &hi), -1);
    hi.overflow = 0; /* what the hardware would report at e = -1 is irrelevant to the rule */
    CHECK_EXP(dlu_scale_update(s, &hi), 0);
    CHECK_EXP(dlu_scale_update(s, &hi), 0);
    /* and back down, one bit per update */
    CHECK_EXP(dlu_scale_update(s, &lo), -1);
    CHECK_EXP(dlu_scale_update(s, &lo), -2);
    CHECK_EXP(dlu_scale_update(s, &lo), -3);
    CHECK_EXP(dlu_scale_update(s, &lo), -3);
    dlu_scale_state_free(s);

    /* With the default emergency (1%) the saturating step moves one bit at once too,
     * and the decision due in the same call is skipped: still one bit per step. */
    s = mk("onebit:rate=1e-3", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &lo), -3);
    hi.overflow = 1000;
    CHECK_EXP(dlu_scale_update(s, &hi), -2);
    CHECK_EXP(dlu_scale_update(s, &hi), -1);
    dlu_scale_state_free(s);

    /* margin m: the rule works on e - m, so the fixed point is m above */
    s = mk("onebit:rate=1e-3,margin=2", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &lo), -1);
    CHECK_EXP(dlu_scale_update(s, &lo), -1);
    dlu_scale_state_free(s);

    /* the tail fraction decides: 1000 values, 2 at k = 6; rate 1e-3 allows 1 */
    dlu_stats mix = one_bin(3, 998);
    add(&mix, 6, 2);
    s = mk("onebit:rate=1e-3,emergency=0", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &mix), 0);
    CHECK_EXP(dlu_scale_update(s, &mix), 0);
    dlu_scale_state_free(s);
    s = mk("onebit:rate=2e-3,emergency=0", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &mix), -3);
    CHECK_EXP(dlu_scale_update(s, &mix), -3);
    dlu_scale_state_free(s);

    /* the valid range holds: Inf values (top bin) push e up to 121 and no further */
    s = mk("onebit:rate=0,margin=64,emergency=0", DLU_FMT_DFP8);
    dlu_stats inf = one_bin(63, 4);
    CHECK_EXP(dlu_scale_calibrate(s, &inf), 121);
    inf.overflow = 4;
    CHECK_EXP(dlu_scale_update(s, &inf), 121);
    dlu_scale_state_free(s);
}

/* ------------------------------------------------------------------------------------ */
/* sequences: hysteresis, interval, emergency, recompute                                */
/* ------------------------------------------------------------------------------------ */

static void test_hysteresis(void)
{
    dlu_scale_state *s = mk("overflow:hysteresis=3", DLU_FMT_DFP8);
    dlu_stats k5 = one_bin(5, 100), k2 = one_bin(2, 100), k1 = one_bin(1, 100), k3 = one_bin(3, 100);

    CHECK_EXP(dlu_scale_calibrate(s, &k5), -1);
    /* three consecutive proposals of -4: down on the third */
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -4);
    /* up at once */
    CHECK_EXP(dlu_scale_update(s, &k5), -1);
    /* proposals -4, -5, -3: down to the highest of them */
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k1), -1);
    CHECK_EXP(dlu_scale_update(s, &k3), -3);
    /* an equal proposal breaks the run */
    CHECK_EXP(dlu_scale_update(s, &k5), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k5), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -4);
    /* a higher proposal in the run moves up and breaks it */
    CHECK_EXP(dlu_scale_update(s, &k1), -4);
    CHECK_EXP(dlu_scale_update(s, &k1), -4);
    CHECK_EXP(dlu_scale_update(s, &k3), -3);
    CHECK_EXP(dlu_scale_update(s, &k1), -3);
    CHECK_EXP(dlu_scale_update(s, &k1), -3);
    CHECK_EXP(dlu_scale_update(s, &k1), -5);
    dlu_scale_state_free(s);

    /* hysteresis 1: down at once */
    s = mk("max", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &k5), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -4);
    dlu_scale_state_free(s);
}

/* The overflow rule trusts one step's observed overflow at the exponent in force: values
 * just under the saturation point that round up to it are invisible in the histogram. */
static void test_observed_overflow(void)
{
    dlu_stats k2 = one_bin(2, 1000), edge = one_bin(2, 1000);
    edge.overflow = 50; /* 5% of the values in bin 2 rounded up past 127 at e = -4 */
    dlu_scale_state *s = mk("overflow:emergency=0", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &k2), -4);
    CHECK_EXP(dlu_scale_update(s, &edge), -3); /* the histogram alone says -4 */
    CHECK_EXP(dlu_scale_update(s, &k2), -4);   /* no overflow observed: back down */
    dlu_scale_state_free(s);
    /* over an interval of several steps the exponent may have changed: not trusted */
    s = mk("overflow:emergency=0,interval=2", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &k2), -4);
    CHECK_EXP(dlu_scale_update(s, &edge), -4);
    CHECK_EXP(dlu_scale_update(s, &k2), -4);
    dlu_scale_state_free(s);
}

static void test_interval_and_emergency(void)
{
    dlu_stats k2 = one_bin(2, 1000), z = empty();
    /* 980 values at k = 2 and 20 at k = 5, quantized at e = -4 (saturation 8): the 20
     * saturate, 2% of the nonzero values. */
    dlu_stats burst = one_bin(2, 980);
    add(&burst, 5, 20);
    burst.overflow = 20;
    z.count = z.zeros = 1000;

    /* interval 4, emergency off: decisions on steps 4, 8, ... only, on the summed stats */
    dlu_scale_state *s = mk("overflow:interval=4,emergency=0", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &k2), -4);
    CHECK_EXP(dlu_scale_update(s, &k2), -4);    /* 1 */
    CHECK_EXP(dlu_scale_update(s, &burst), -4); /* 2: no decision yet */
    CHECK_EXP(dlu_scale_update(s, &z), -4);     /* zeros only: does not count */
    CHECK_EXP(dlu_scale_update(s, &k2), -4);    /* 3 */
    /* 4: 4000 values, 20 at k = 5: rate 1e-4 allows 0, so j = 6, e = -1 */
    CHECK_EXP(dlu_scale_update(s, &k2), -1);
    for (int i = 0; i < 3; i++) /* 5, 6, 7 */
        CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -4); /* 8 */
    dlu_scale_state_free(s);

    /* emergency 1%: step 2 observes 2% > 1% and moves at once, between decisions */
    s = mk("overflow:interval=4,emergency=0.01", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &k2), -4);
    CHECK_EXP(dlu_scale_update(s, &k2), -4);    /* 1 */
    CHECK_EXP(dlu_scale_update(s, &burst), -1); /* 2: emergency */
    CHECK_EXP(dlu_scale_update(s, &k2), -1);    /* 3 */
    CHECK_EXP(dlu_scale_update(s, &k2), -1);    /* 4: decision on 1-4 agrees */
    for (int i = 0; i < 3; i++)                 /* 5, 6, 7 */
        CHECK_EXP(dlu_scale_update(s, &k2), -1);
    CHECK_EXP(dlu_scale_update(s, &k2), -4); /* 8 */
    dlu_scale_state_free(s);

    /* an emergency threshold of 2% is not exceeded by exactly 2% */
    s = mk("overflow:interval=4,emergency=0.02", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &k2), -4);
    CHECK_EXP(dlu_scale_update(s, &burst), -4);
    dlu_scale_state_free(s);

    /* The emergency step goes up by at least one: values at k = 6 that round up past
     * 127 (the edge case of 12.1) are not predicted but are observed. Max rule at e = 0
     * proposes 0; observed 100% > 1%: e = 1. The next decision brings it back. */
    dlu_stats edge = one_bin(6, 10);
    edge.overflow = 10;
    s = mk("max", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &edge), 0);
    CHECK_EXP(dlu_scale_update(s, &edge), 1);
    edge.overflow = 0;
    CHECK_EXP(dlu_scale_update(s, &edge), 0);
    dlu_scale_state_free(s);

    /* never above the valid range */
    dlu_stats inf = one_bin(63, 4);
    inf.overflow = 4;
    s = mk("max:margin=64", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &inf), 121);
    CHECK_EXP(dlu_scale_update(s, &inf), 121);
    dlu_scale_state_free(s);
}

static void test_recompute(void)
{
    dlu_scale_state *s = mk("overflow:recompute=0.05,emergency=0,interval=100", DLU_FMT_DFP8);
    dlu_stats k2 = one_bin(2, 100), st;

    CHECK_EXP(dlu_scale_calibrate(s, &k2), -4);
    /* 5 of 100 saturated: not above 5% */
    st = one_bin(2, 95);
    add(&st, 5, 5);
    st.overflow = 5;
    CU_ASSERT_FALSE(dlu_scale_want_recompute(s, &st));
    /* 6 of 100: fires; pure */
    st = one_bin(2, 94);
    add(&st, 5, 6);
    st.overflow = 6;
    CU_ASSERT_TRUE(dlu_scale_want_recompute(s, &st));
    CU_ASSERT_TRUE(dlu_scale_want_recompute(s, &st));
    CHECK_EXP(dlu_scale_exp(s), -4);
    /* the update then raises at once (no decision is due: interval 100) */
    CHECK_EXP(dlu_scale_update(s, &st), -1);
    /* off, NULL, zeros only */
    CU_ASSERT_FALSE(dlu_scale_want_recompute(s, NULL));
    dlu_stats z = empty();
    z.count = z.zeros = 10;
    CU_ASSERT_FALSE(dlu_scale_want_recompute(s, &z));
    dlu_scale_state_free(s);
    s = mk("overflow", DLU_FMT_DFP8);
    CU_ASSERT_FALSE(dlu_scale_want_recompute(s, &st));
    dlu_scale_state_free(s);
}

/* ------------------------------------------------------------------------------------ */
/* with real data from numerics.h                                                       */
/* ------------------------------------------------------------------------------------ */

static dlu_stats quantize_stats(const float *x, size_t n, int e, dlu_format fmt)
{
    dlu_stats st = empty();
    void *q = malloc(n * 2 + 1);
    CU_ASSERT_EQUAL(dlu_quantize_f32(x, n, e, fmt, DLU_ROUND_NEAREST, 0, 0, 0, 0, q, &st), DLU_OK);
    free(q);
    return st;
}

static void test_with_quantize(void)
{
    /* 127.5 and 100 have k = 6, 50 has k = 5, 1 has k = 0. The max rule picks e = 0
     * (saturation at 128): nothing certainly saturates, but 127.5 rounds to 128 and
     * saturates: the rounding edge case at k = e + b - 2 is observed, not predicted. */
    const float x[] = {127.5f, 100.0f, -50.0f, 1.0f, 0.0f, NAN};
    dlu_stats st = quantize_stats(x, 6, 20, DLU_FMT_DFP8); /* histogram does not depend on e */
    dlu_scale_state *s = mk("max:emergency=0.2", DLU_FMT_DFP8);
    CHECK_EXP(dlu_scale_calibrate(s, &st), 0);
    st = quantize_stats(x, 6, 0, DLU_FMT_DFP8);
    CU_ASSERT_EQUAL(st.overflow, 1);
    CU_ASSERT_EQUAL(st.count, 6);
    /* 1 of 4 values (25%) > 20%: up by one */
    CHECK_EXP(dlu_scale_update(s, &st), 1);
    dlu_scale_state_free(s);

    /* Random data: after calibrating the max rule on x, quantizing x at that e saturates
     * exactly the values at or above (qmax + 1/2) 2^e; at e - 1 the largest saturates. */
    enum { N = 4096 };
    float *y = malloc(N * sizeof *y);
    for (int it = 0; it < 50; it++) {
        const dlu_format fmt = it % 2 ? DLU_FMT_DFP16 : DLU_FMT_DFP8;
        const int spread = 1 + (int)(rnd64() % 30), base = (int)(rnd64() % 60) - 30;
        for (int i = 0; i < N; i++) {
            const uint32_t bexp = (uint32_t)(127 + base + (int)(rnd64() % (uint64_t)spread));
            y[i] = dlu_f32_from_bits((uint32_t)(rnd64() & 0x807FFFFFu) | bexp << 23);
        }
        st = quantize_stats(y, N, 0, fmt);
        s = mk("max", fmt);
        const int e = dlu_scale_calibrate(s, &st);
        dlu_scale_state_free(s);
        const double edge = ((double)dlu_format_qmax(fmt) + 0.5) * ldexp(1.0, e);
        uint64_t expect = 0;
        for (int i = 0; i < N; i++)
            expect += fabs((double)y[i]) >= edge;
        st = quantize_stats(y, N, e, fmt);
        CU_ASSERT_EQUAL(st.overflow, expect);
        st = quantize_stats(y, N, e - 1, fmt);
        CU_ASSERT(st.overflow > 0);
    }
    free(y);
}

/* ------------------------------------------------------------------------------------ */
/* checkpoint image                                                                     */
/* ------------------------------------------------------------------------------------ */

static uint32_t ref_crc32(const uint8_t *p, size_t n) /* table-driven, independent of scale.c */
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

/* Re-seal an edited image with a valid CRC. */
static void reseal(uint8_t *img, size_t n)
{
    wr32(img + n - 4, ref_crc32(img, n - 4));
}

/* A pseudo-random step with top bin around `center`. */
static dlu_stats random_step(int center)
{
    dlu_stats st = empty();
    for (int b = 0; b < 3; b++)
        add(&st, center - (int)(rnd64() % 6), 1 + rnd64() % 50);
    st.overflow = rnd64() % 4 == 0 ? 1 + rnd64() % 3 : 0;
    st.zeros = rnd64() % 10;
    st.count += st.zeros;
    return st;
}

static void test_save_load(void)
{
    static const char *const specs[] = {
        "amax:history=5,hysteresis=3,interval=2",
        "autoflex:history=7,interval=3,hysteresis=2",
        "overflow:hysteresis=4,interval=3,emergency=0.3",
        "onebit:rate=0.01,interval=2",
        "percentile:p=95,hysteresis=2",
        "max",
    };
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
        dlu_scale_state *a = mk(specs[si], DLU_FMT_DFP16), *b = mk(specs[si], DLU_FMT_DFP16);
        const dlu_scale_cfg *c = dlu_scale_state_cfg(a);
        const size_t n = dlu_scale_state_nbytes(a);
        const int hist = c->kind == DLU_SCALE_AMAX || c->kind == DLU_SCALE_AUTOFLEX ? c->history : 0;
        CU_ASSERT_EQUAL(n, 1124 + 2 * (size_t)hist);
        uint8_t *img = malloc(n), *img2 = malloc(n), *bad = malloc(n);

        /* run a while, so that history, hysteresis and interval counters are mid-way */
        for (int t = 0; t < 11; t++) {
            dlu_stats st = random_step(t < 6 ? 3 : -2 + (int)(rnd64() % 3));
            dlu_scale_update(a, &st);
        }
        dlu_scale_state_save(a, img);

        /* documented layout */
        CU_ASSERT(memcmp(img, "DLUSCALE", 8) == 0);
        CU_ASSERT_EQUAL(rd32(img + 8), 1);
        CU_ASSERT_EQUAL(rd32(img + 12), n);
        CU_ASSERT_EQUAL(rd32(img + 16), (uint32_t)c->kind);
        CU_ASSERT_EQUAL(rd32(img + 20), (uint32_t)DLU_FMT_DFP16);
        CU_ASSERT_EQUAL(rd32(img + 24), (uint32_t)hist);
        CU_ASSERT_EQUAL((int32_t)rd32(img + 28), dlu_scale_exp(a));
        CU_ASSERT_EQUAL(rd32(img + 32), 1);
        CU_ASSERT_EQUAL(rd32(img + n - 4), ref_crc32(img, n - 4));

        /* round trip: same image, then the same future */
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, img, n), DLU_OK);
        dlu_scale_state_save(b, img2);
        CU_ASSERT(memcmp(img, img2, n) == 0);
        CU_ASSERT_EQUAL(dlu_scale_exp(b), dlu_scale_exp(a));
        CU_ASSERT_EQUAL(dlu_scale_calibrated(b), 1);
        int diverged = 0;
        for (int t = 0; t < 30; t++) {
            dlu_stats st = random_step(-3 + (int)(rnd64() % 8));
            diverged |= dlu_scale_update(a, &st) != dlu_scale_update(b, &st);
        }
        CU_ASSERT_FALSE(diverged);
        dlu_scale_state_save(a, img);
        dlu_scale_state_save(b, img2);
        CU_ASSERT(memcmp(img, img2, n) == 0);

        /* every flipped byte is rejected and leaves the state as it was */
        int accepted = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(bad, img, n);
            bad[i] ^= (uint8_t)(1u << (i % 8));
            accepted += dlu_scale_state_load(b, bad, n) == DLU_OK;
        }
        CU_ASSERT_EQUAL(accepted, 0);
        dlu_scale_state_save(b, img2);
        CU_ASSERT(memcmp(img, img2, n) == 0);

        /* truncation, extension */
        for (size_t k = 0; k < n; k += (k < 64 ? 1 : 97))
            CU_ASSERT_NOT_EQUAL(dlu_scale_state_load(b, img, k), DLU_OK);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, img, n - 1), DLU_EFORMAT);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, img, 0), DLU_EFORMAT);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, NULL, n), DLU_EINVAL);

        /* fields out of range behind a valid CRC */
        memcpy(bad, img, n);
        wr32(bad + 8, 2);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EVERSION);
        CHECK_MSG("version 2");
        memcpy(bad, img, n);
        wr32(bad + 28, 500);
        reseal(bad, n);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EFORMAT);
        CHECK_MSG("exponent 500 outside [-149, 113]");
        memcpy(bad, img, n);
        wr32(bad + 32, 7);
        reseal(bad, n);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EFORMAT);
        memcpy(bad, img, n);
        wr32(bad + 48, (uint32_t)hist + 1);
        reseal(bad, n);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EFORMAT);
        memcpy(bad, img, n);
        wr32(bad + 52, (uint32_t)hist + (hist == 0));
        reseal(bad, n);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EFORMAT);
        CHECK_MSG("history fill");
        if (hist > 0) {
            memcpy(bad, img, n);
            bad[1120] = 100; /* first history entry: k = 100 */
            bad[1121] = 0;
            reseal(bad, n);
            CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EFORMAT);
            CHECK_MSG("history entry 0 = 100");
        }
        memcpy(bad, img, n);
        wr32(bad + 12, (uint32_t)n + 2);
        reseal(bad, n);
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EFORMAT);
        CHECK_MSG("claims");
        memcpy(bad, img, n);
        bad[0] = 'X';
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_EFORMAT);
        CHECK_MSG("bad magic");
        memcpy(bad, img, n);
        bad[n / 2] ^= 1;
        CU_ASSERT_EQUAL(dlu_scale_state_load(b, bad, n), DLU_ECORRUPT);
        CHECK_MSG("CRC-32 mismatch");
        dlu_scale_state_save(b, img2);
        CU_ASSERT(memcmp(img, img2, n) == 0); /* still untouched */

        free(img);
        free(img2);
        free(bad);
        dlu_scale_state_free(a);
        dlu_scale_state_free(b);
    }

    /* an image of another policy, format or history length is refused by name */
    dlu_scale_state *am = mk("amax:history=4", DLU_FMT_DFP8), *af = mk("autoflex:history=4", DLU_FMT_DFP8),
                    *am16 = mk("amax:history=4", DLU_FMT_DFP16), *am5 = mk("amax:history=5", DLU_FMT_DFP8),
                    *am_tuned = mk("amax:history=4,margin=3,interval=7", DLU_FMT_DFP8);
    const size_t n = dlu_scale_state_nbytes(am);
    uint8_t *img = malloc(n);
    dlu_stats st = one_bin(2, 5);
    dlu_scale_calibrate(am, &st);
    dlu_scale_state_save(am, img);
    CU_ASSERT_EQUAL(dlu_scale_state_load(af, img, n), DLU_EINVAL);
    CHECK_MSG("image is of policy amax, format dfp8, history 4; this state is autoflex, dfp8, history 4");
    CU_ASSERT_EQUAL(dlu_scale_state_load(am16, img, n), DLU_EINVAL);
    CHECK_MSG("this state is amax, dfp16");
    CU_ASSERT_NOT_EQUAL(dlu_scale_state_load(am5, img, n), DLU_OK);
    /* tunable parameters may differ: the loading state's own stay in force */
    CU_ASSERT_EQUAL(dlu_scale_state_load(am_tuned, img, n), DLU_OK);
    CHECK_EXP(dlu_scale_exp(am_tuned), dlu_scale_exp(am));
    CU_ASSERT_EQUAL(dlu_scale_state_cfg(am_tuned)->margin, 3);
    free(img);
    dlu_scale_state_free(am);
    dlu_scale_state_free(af);
    dlu_scale_state_free(am16);
    dlu_scale_state_free(am5);
    dlu_scale_state_free(am_tuned);
}

int main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"defaults and canonical specs", test_defaults_and_canonical},
        {"parse errors name the problem", test_parse_errors},
        {"state_new rejects bad configurations", test_state_new_errors},
        {"overflow rule on crafted histograms", test_overflow_rule},
        {"max and percentile rules", test_max_and_percentile},
        {"overflow/max/percentile against the definition", test_rules_against_definition},
        {"amax history window", test_amax},
        {"autoflex (Koster et al. 2017)", test_autoflex},
        {"onebit (Courbariaux et al. 2014)", test_onebit},
        {"hysteresis over a sequence", test_hysteresis},
        {"overflow rule trusts observed overflow", test_observed_overflow},
        {"interval and emergency over a sequence", test_interval_and_emergency},
        {"recompute rule", test_recompute},
        {"rules on data quantized by numerics.h", test_with_quantize},
        {"checkpoint image: layout, round trip, corruption", test_save_load},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("scale", NULL, NULL);
    int ok = s != NULL;
    for (size_t i = 0; ok && i < sizeof tests / sizeof tests[0]; i++)
        ok = CU_add_test(s, tests[i].name, tests[i].fn) != NULL;
    if (!ok) {
        fprintf(stderr, "test_scale: cannot set up CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_ErrorCode err = CU_get_error();
    CU_cleanup_registry();
    return failed != 0 || err != CUE_SUCCESS ? 1 : 0;
}
