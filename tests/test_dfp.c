/* test_dfp.c -- CUnit tests of a backend's dynamic fixed point kernels, bit for bit
 * (the cpu backend by default; the device string is the first argument).
 *
 * What it checks: every DFP kernel of a backend (be->vt->forward_dfp[op],
 * be->vt->backward_dfp[op], be->vt->quantize), called through the backend's table the way
 * the net calls it, with hand-made layers, i8/i16 tensors and sites, against an
 * independent straightforward reference written here:
 *   - the exact integer accumulators in int64 from naive loops (linear as a triple loop,
 *     conv2d as a direct convolution, not im2col; dx, dW, db as the textbook sums; window
 *     sums for the pools), the bias through dlu_bias_to_acc + dlu_add_sat_i64;
 *   - requantization with dlu_requantize_acc64 (fp32 inputs: dlu_quantize_f32) at the
 *     exponent the kernel reports (tensor->exp, or the site's exp for the G class), then
 *     memcmp of the integers and of the site's struct dlu_stats;
 *   - that exponent against the site's policy: on a site's first production the
 *     calibration from the values' own statistics (dlu_scale_calibrate on a fresh state fed
 *     the reference statistics), afterwards the delayed exponent (dlu_scale_exp after
 *     dlu_scale_update with the previous step's statistics); sites without a policy keep
 *     their input's exponent;
 *   - weight and bias gradients as fp32 bits: the dequantized G values, or with g=fp32
 *     dlu_acc_to_f32 of the exact accumulator;
 *   - softmax_xent's loss, probabilities, correct count and the gradient quantized to E.
 * Cases: dfp8, dfp16 and mixed formats (x in dfp8 with W in dfp16 and so on); conv2d with
 * stride 1/2/3, pad 0/1/2, odd and even sizes, batches that need several GEMM chunks;
 * maxpool ties, padding, overlapping windows whose backward sums and saturates; avgpool
 * with power-of-two areas (and the non-power-of-two area refused by dlu_net_set_precision
 * naming the layer); stochastic rounding (same seed/step/id, same bits; another step or
 * seed, other bits; nearest ignores both); K > 131071 on the 8-bit path (the kernel must
 * take the exact int64 path); all +-qmax inputs with a policy that saturates, counted in
 * the statistics; the same bits for 1 and 3 CPU threads; and that the workspace a kernel
 * asks for grows linearly with the layer.
 * Every output a kernel must overwrite is filled with a garbage pattern first.
 *
 * Device memory: the backend's memory need not be host-visible (cuda). Every tensor has a
 * host mirror that the test reads and writes; before a kernel call its inputs and outputs
 * (garbage) are uploaded with dlu_tensor_write, after it the test syncs the backend -- the
 * sync is what delivers a site's statistics and the loss into their host variables -- and
 * downloads the outputs with dlu_tensor_read; workspaces come from the backend's allocator.
 * Host-visible backends (cpu, dlusim) take the same path, except that their workspaces stay
 * plain host memory. A backend that cannot be opened for lack of a device (DLU_ENODEV)
 * makes the program exit 77 (skipped), never pass.
 *
 * What it is not: a test of the arithmetic of numerics.h itself (test_numerics.c, with the
 * vector files), of the policies' rules (test_scale.c), or of training end to end
 * (test_dfp_train.sh).
 *
 * Random values come from splitmix64 with a fixed seed per case, so a failure reproduces;
 * a failing check prints the case, the first differing index, hex and decoded. */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "dlu/backend.h"
#include "dlu/net.h"
#include "dlu/numerics.h"
#include "dlu/precision.h"
#include "dlu/scale.h"
#include "dlu/tensor.h"

_Static_assert(DLU_OP_COUNT == 7, "a new op in ops.def needs a DFP recipe in tests/test_dfp.c");

static dlu_backend *be;

/* ------------------------------------------------------------------------------------ */
/* checks and messages                                                                  */
/* ------------------------------------------------------------------------------------ */

static void check_at(int ok, int line, const char *fmt, ...)
{
    char what[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, (unsigned)line, what, __FILE__, "", CU_FALSE);
}
#define CHECK(ok, ...) check_at((ok), __LINE__, __VA_ARGS__)

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void *xmalloc(size_t nbytes)
{
    void *p = malloc(nbytes ? nbytes : 1);
    CU_ASSERT_FATAL(p != NULL);
    return p;
}

static int32_t qload(const void *p, dlu_format fmt, size_t i)
{
    return fmt == DLU_FMT_DFP8 ? ((const int8_t *)p)[i] : ((const int16_t *)p)[i];
}

/* DFP integers: memcmp, and on mismatch the first differing index, hex and decoded. */
static int cmp_q(int line, const char *what, const void *got, const void *want, size_t n, dlu_format fmt)
{
    const size_t nb = dlu_format_nbytes(fmt);
    int ok = memcmp(got, want, n * nb) == 0;
    if (!ok) {
        size_t first = 0, bad = 0;
        for (size_t i = n; i-- > 0;)
            if (qload(got, fmt, i) != qload(want, fmt, i))
                first = i, bad++;
        const unsigned mask = nb == 1 ? 0xFFu : 0xFFFFu;
        printf("\n    FAIL %s: first difference at [%zu]: expected %" PRId32 " (0x%0*x) got %" PRId32
               " (0x%0*x); %zu of %zu differ\n",
               what, first, qload(want, fmt, first), (int)nb * 2, (unsigned)qload(want, fmt, first) & mask,
               qload(got, fmt, first), (int)nb * 2, (unsigned)qload(got, fmt, first) & mask, bad, n);
    }
    check_at(ok, line, "%s", what);
    return ok;
}
#define CMP_Q(what, got, want, n, fmt) cmp_q(__LINE__, what, got, want, n, fmt)

static int cmp_f32(int line, const char *what, const float *got, const float *want, size_t n)
{
    int ok = memcmp(got, want, n * sizeof *got) == 0;
    if (!ok) {
        size_t first = 0, bad = 0;
        for (size_t i = n; i-- > 0;)
            if (f32_bits(got[i]) != f32_bits(want[i]))
                first = i, bad++;
        printf("\n    FAIL %s: first difference at [%zu]: expected %.9g (0x%08" PRIx32 ") got %.9g (0x%08" PRIx32
               "); %zu of %zu differ\n",
               what, first, want[first], f32_bits(want[first]), got[first], f32_bits(got[first]), bad, n);
    }
    check_at(ok, line, "%s", what);
    return ok;
}
#define CMP_F32(what, got, want, n) cmp_f32(__LINE__, what, got, want, n)

static void print_stats(const char *tag, const dlu_stats *s)
{
    printf("      %s: count %" PRIu64 " zeros %" PRIu64 " overflow %" PRIu64 " underflow %" PRIu64 " nan %" PRIu64
           " hist",
           tag, s->count, s->zeros, s->overflow, s->underflow, s->nan);
    for (int b = 0; b < DLU_STATS_NBINS; b++)
        if (s->hist[b])
            printf(" %d:%" PRIu64, b + DLU_STATS_KMIN, s->hist[b]);
    printf("\n");
}

static int cmp_stats(int line, const char *what, const dlu_stats *got, const dlu_stats *want)
{
    int ok = memcmp(got, want, sizeof *got) == 0;
    if (!ok) {
        printf("\n    FAIL %s: statistics differ\n", what);
        print_stats("expected", want);
        print_stats("got     ", got);
    }
    check_at(ok, line, "%s", what);
    return ok;
}
#define CMP_STATS(what, got, want) cmp_stats(__LINE__, what, got, want)

/* A kernel call that must succeed; prints the library's message otherwise. */
static int call_ok(int line, const char *what, dlu_status s)
{
    if (s != DLU_OK)
        printf("\n    FAIL %s: %s: %s\n", what, dlu_strerror(s), dlu_last_error());
    check_at(s == DLU_OK, line, "%s returns DLU_OK", what);
    return s == DLU_OK;
}
#define CALL_OK(what, s) call_ok(__LINE__, what, s)

/* ------------------------------------------------------------------------------------ */
/* random values                                                                        */
/* ------------------------------------------------------------------------------------ */

static uint64_t rng_s;

static void rng_seed(uint64_t s) { rng_s = s * 0x9E3779B97F4A7C15ull + 0x1234567ull; }

static uint64_t rnd64(void) /* splitmix64 */
{
    uint64_t z = (rng_s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int32_t rnd_in(int32_t lo, int32_t hi) /* [lo, hi] */
{
    return lo + (int32_t)(rnd64() % (uint64_t)((int64_t)hi - lo + 1));
}

static double rnd_unit(void) { return (double)(rnd64() >> 11) * 0x1p-53; } /* [0, 1) */

/* What a tensor is filled with. */
typedef enum vkind {
    V_RANDOM,  /* uniform in [-m, m], m = qmax >> s with s uniform: every magnitude, ~6 % zeros at small m */
    V_SMALL,   /* [-3, 3]: many ties and zeros */
    V_EXTREME, /* +-qmax, random signs */
    V_POSMAX,  /* +qmax everywhere */
    V_NEG      /* [-qmax, -1] */
} vkind;

static int32_t rnd_q(dlu_format fmt, vkind k)
{
    const int32_t qmax = dlu_format_qmax(fmt);
    switch (k) {
    case V_SMALL: return rnd_in(-3, 3);
    case V_EXTREME: return rnd64() & 1 ? qmax : -qmax;
    case V_POSMAX: return qmax;
    case V_NEG: return rnd_in(-qmax, -1);
    default: {
        const int32_t m = qmax >> rnd_in(0, dlu_format_bits(fmt) - 2);
        return rnd_in(-m, m);
    }
    }
}

/* fp32 master values: uniform in (-a, a) times 2^j, j in [-6, 0] (every magnitude), or +-a. */
static float rnd_f(double a, vkind k)
{
    if (k == V_EXTREME)
        return (float)(rnd64() & 1 ? a : -a);
    if (k == V_POSMAX)
        return (float)a;
    return (float)ldexp(a * (2.0 * rnd_unit() - 1.0), -rnd_in(0, 6));
}

/* ------------------------------------------------------------------------------------ */
/* tensors                                                                              */
/* ------------------------------------------------------------------------------------ */

static dlu_dtype fmt_dtype(dlu_format f)
{
    return f == DLU_FMT_DFP8 ? DLU_DTYPE_I8 : f == DLU_FMT_DFP16 ? DLU_DTYPE_I16 : DLU_DTYPE_F32;
}

static dlu_format dtype_fmt(const dlu_tensor *t) { return t->dtype == DLU_DTYPE_I8 ? DLU_FMT_DFP8 : DLU_FMT_DFP16; }

/* Host mirrors of the tensors on the backend (see the top of the file). The mirror helpers
 * fail through CU_FAIL_FATAL only, so that they add no assertion to the counts. */
#define MAX_MIRRORS 32
static struct mirror {
    dlu_tensor *t;
    void *h; /* t->nbytes bytes */
} mirrors[MAX_MIRRORS];

/* The host mirror of t: what the test reads and writes instead of t->data. */
static void *hv(const dlu_tensor *t)
{
    for (int i = 0; i < MAX_MIRRORS; i++)
        if (mirrors[i].t == t)
            return mirrors[i].h;
    CU_FAIL_FATAL("test_dfp: a tensor without a host mirror");
    return NULL;
}

/* A (rows, cols) tensor on the backend and its host mirror, filled with a garbage pattern
 * so that an output a kernel fails to write does not compare equal by luck. */
static dlu_tensor *tnew(dlu_dtype dt, int64_t rows, int64_t cols)
{
    dlu_tensor *t = NULL;
    int64_t shape[2] = {rows, cols};
    dlu_status s = dlu_tensor_new_on(be, dt, 2, shape, &t);
    if (s != DLU_OK)
        printf("\n    cannot allocate a tensor: %s\n", dlu_last_error());
    CU_ASSERT_FATAL(s == DLU_OK);
    int slot = 0;
    while (slot < MAX_MIRRORS && mirrors[slot].t)
        slot++;
    void *h = malloc(t->nbytes);
    if (slot == MAX_MIRRORS || !h) {
        free(h);
        dlu_tensor_free(t);
        CU_FAIL_FATAL("test_dfp: no room for a host mirror");
    }
    mirrors[slot].t = t, mirrors[slot].h = h;
    memset(h, 0xA5, t->nbytes);
    t->exp = 12345;
    return t;
}

static void tfree(dlu_tensor *t)
{
    for (int i = 0; t && i < MAX_MIRRORS; i++)
        if (mirrors[i].t == t) {
            free(mirrors[i].h);
            mirrors[i].t = NULL, mirrors[i].h = NULL;
        }
    dlu_tensor_free(t);
}

/* Upload the mirrors of the listed tensors (NULL entries skipped) / download into them. */
static void xfer(dlu_tensor *const *ts, size_t n, int up)
{
    for (size_t i = 0; i < n; i++) {
        if (!ts[i])
            continue;
        dlu_status s = up ? dlu_tensor_write(ts[i], hv(ts[i]), ts[i]->nbytes)
                          : dlu_tensor_read(ts[i], hv(ts[i]), ts[i]->nbytes);
        if (s != DLU_OK) {
            printf("\n    FAIL tensor %s: %s: %s\n", up ? "upload" : "download", dlu_strerror(s), dlu_last_error());
            CU_FAIL_FATAL("test_dfp: tensor transfer");
        }
    }
}
#define PUSH(...) xfer((dlu_tensor *[]){__VA_ARGS__}, sizeof((dlu_tensor *[]){__VA_ARGS__}) / sizeof(dlu_tensor *), 1)
#define PULL(...) xfer((dlu_tensor *[]){__VA_ARGS__}, sizeof((dlu_tensor *[]){__VA_ARGS__}) / sizeof(dlu_tensor *), 0)

/* A kernel's status, then the sync that completes its work and delivers its statistics
 * (and the loss) to the host: CALL_OK(what, synced(kernel(...))). */
static dlu_status synced(dlu_status s) { return s == DLU_OK ? dlu_backend_sync(be) : s; }

static int32_t qget(const dlu_tensor *t, size_t i) { return qload(hv(t), dtype_fmt(t), i); }

static void qset(dlu_tensor *t, size_t i, int32_t v)
{
    if (t->dtype == DLU_DTYPE_I8)
        ((int8_t *)hv(t))[i] = (int8_t)v;
    else
        ((int16_t *)hv(t))[i] = (int16_t)v;
}

static void fill_q(dlu_tensor *t, vkind k, int exp)
{
    const int64_t n = dlu_tensor_nelem(t);
    for (int64_t i = 0; i < n; i++)
        qset(t, (size_t)i, rnd_q(dtype_fmt(t), k));
    t->exp = exp;
}

/* The values of an i8/i16 tensor as int32. */
static int32_t *qvals(const dlu_tensor *t)
{
    const size_t n = (size_t)dlu_tensor_nelem(t);
    int32_t *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = qget(t, i);
    return v;
}

static float *f32(dlu_tensor *t) { return hv(t); }

/* ------------------------------------------------------------------------------------ */
/* sites and their reference policy states                                              */
/* ------------------------------------------------------------------------------------ */

/* A kernel's site plus a mirror: a second policy state, fed only with the reference's
 * statistics, which says what exponent the site must be produced with. */
typedef struct tsite {
    dlu__qsite q; /* handed to the kernel */
    dlu_scale_state *mirror;
    dlu_stats last; /* the reference statistics of the latest production */
    int produced;
} tsite;

static void tsite_init(tsite *s, const char *name, dlu_tensor_class cls, dlu_format fmt, dlu_round rnd, uint32_t id,
                       const char *policy /* NULL: the exponent is inherited */)
{
    memset(s, 0, sizeof *s);
    s->q.used = 1;
    s->q.cls = cls;
    s->q.fmt = fmt;
    s->q.round = rnd;
    s->q.id = id;
    s->q.exp = -99999; /* must not be read before it is set */
    snprintf(s->q.name, sizeof s->q.name, "%s", name);
    if (policy && dlu_format_is_dfp(fmt)) {
        dlu_scale_cfg c;
        CU_ASSERT_FATAL(dlu_scale_parse(policy, &c) == DLU_OK);
        CU_ASSERT_FATAL(dlu_scale_state_new(&c, fmt, &s->q.scale) == DLU_OK);
        CU_ASSERT_FATAL(dlu_scale_state_new(&c, fmt, &s->mirror) == DLU_OK);
    }
}

static void tsite_free(tsite *s)
{
    dlu_scale_state_free(s->q.scale);
    dlu_scale_state_free(s->mirror);
    s->q.scale = s->mirror = NULL;
}

/* Delayed scaling: after a training step the net feeds every policy that step's
 * statistics; the mirror gets the reference's. */
static void tsite_end_step(tsite *s)
{
    if (s->q.scale && s->produced) {
        dlu_scale_update(s->q.scale, &s->q.stats);
        dlu_scale_update(s->mirror, &s->last);
    }
}

/* The exponent the site must be produced with, given the reference statistics of the
 * values (the histogram does not depend on the exponent they were taken at): first
 * production, the calibration from these statistics; later, the policy's exponent. */
static int policy_exp(tsite *s, const dlu_stats *ref)
{
    return dlu_scale_calibrated(s->mirror) ? dlu_scale_exp(s->mirror) : dlu_scale_calibrate(s->mirror, ref);
}

typedef struct run_ctx {
    uint64_t seed;
    uint32_t step;
    char tag[320]; /* the case, prefixed to every check */
} run_ctx;

/* Site s produced got (n integers, exponent got_exp) by requantizing the exact
 * accumulators acc (exponent ea). Sites without a policy must keep ea. */
static void check_requant(run_ctx *c, const char *what, tsite *s, const int64_t *acc, size_t n, int ea,
                          const void *got, int got_exp)
{
    char w[480];
    void *ref = xmalloc(n * 2);
    dlu_stats st;
    dlu_stats_clear(&st);
    dlu_requantize_acc64(acc, n, ea, got_exp, s->q.fmt, s->q.round, c->seed, s->q.id, c->step, 0, ref, &st);
    const int want = s->mirror ? policy_exp(s, &st) : ea;
    snprintf(w, sizeof w, "%s: %s exponent %d (%s: %d)", c->tag, what, got_exp,
             s->mirror ? (s->produced ? "delayed policy" : "calibration") : "inherited", want);
    CHECK(got_exp == want, "%s", w);
    snprintf(w, sizeof w, "%s: %s site exp", c->tag, what);
    CHECK(s->q.exp == got_exp, "%s = %d", w, s->q.exp);
    snprintf(w, sizeof w, "%s: %s bits (%s, %s)", c->tag, what, dlu_format_name(s->q.fmt), dlu_round_name(s->q.round));
    CMP_Q(w, got, ref, n, s->q.fmt);
    snprintf(w, sizeof w, "%s: %s statistics", c->tag, what);
    CMP_STATS(w, &s->q.stats, &st);
    s->last = st;
    s->produced = 1;
    free(ref);
}

/* Site s produced got (n integers, exponent got_exp) by quantizing the fp32 values x. */
static void check_quant(run_ctx *c, const char *what, tsite *s, const float *x, size_t n, const void *got,
                        int got_exp)
{
    char w[480];
    void *ref = xmalloc(n * 2);
    dlu_stats st;
    dlu_stats_clear(&st);
    dlu_quantize_f32(x, n, got_exp, s->q.fmt, s->q.round, c->seed, s->q.id, c->step, 0, ref, &st);
    const int want = s->mirror ? policy_exp(s, &st) : s->q.exp;
    snprintf(w, sizeof w, "%s: %s exponent %d (%s: %d)", c->tag, what, got_exp,
             s->mirror ? (s->produced ? "delayed policy" : "calibration") : "preset", want);
    CHECK(got_exp == want, "%s", w);
    snprintf(w, sizeof w, "%s: %s bits (%s, %s)", c->tag, what, dlu_format_name(s->q.fmt), dlu_round_name(s->q.round));
    CMP_Q(w, got, ref, n, s->q.fmt);
    snprintf(w, sizeof w, "%s: %s statistics", c->tag, what);
    CMP_STATS(w, &s->q.stats, &st);
    s->last = st;
    s->produced = 1;
    free(ref);
}

/* An inherited-exponent output (relu, flatten, maxpool forward): the values were checked
 * by the caller; here the exponent and the statistics, which are those of a
 * requantization to the same exponent. */
static void check_inherit(run_ctx *c, const char *what, tsite *s, const dlu_tensor *t, size_t n, int want_exp)
{
    char w[480];
    int64_t *acc = xmalloc(n * sizeof *acc);
    void *tmp = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++)
        acc[i] = qget(t, i);
    dlu_stats st;
    dlu_stats_clear(&st);
    dlu_requantize_acc64(acc, n, want_exp, want_exp, dtype_fmt(t), DLU_ROUND_NEAREST, 0, 0, 0, 0, tmp, &st);
    snprintf(w, sizeof w, "%s: %s keeps the exponent %d", c->tag, what, want_exp);
    CHECK(t->exp == want_exp && s->q.exp == want_exp, "%s (tensor %d, site %d)", w, t->exp, s->q.exp);
    snprintf(w, sizeof w, "%s: %s statistics", c->tag, what);
    CMP_STATS(w, &s->q.stats, &st);
    s->produced = 1;
    free(acc);
    free(tmp);
}

/* A weight or bias gradient: the exact accumulators acc (exponent ea) requantized to G at
 * the site's exponent and handed over dequantized, or (g=fp32) converted exactly. */
static void check_grad(run_ctx *c, const char *what, tsite *s, const int64_t *acc, size_t n, int ea,
                       const float *got)
{
    char w[480];
    float *want = xmalloc(n * sizeof *want);
    if (dlu_format_is_dfp(s->q.fmt)) {
        const int eo = s->q.exp;
        void *ref = xmalloc(n * 2);
        dlu_stats st;
        dlu_stats_clear(&st);
        dlu_requantize_acc64(acc, n, ea, eo, s->q.fmt, s->q.round, c->seed, s->q.id, c->step, 0, ref, &st);
        const int pe = policy_exp(s, &st);
        snprintf(w, sizeof w, "%s: %s exponent %d (%s: %d)", c->tag, what, eo,
                 s->produced ? "delayed policy" : "calibration", pe);
        CHECK(eo == pe, "%s", w);
        dlu_dequantize(ref, n, eo, s->q.fmt, want);
        snprintf(w, sizeof w, "%s: %s fp32 bits = dequantized %s (%s)", c->tag, what, dlu_format_name(s->q.fmt),
                 dlu_round_name(s->q.round));
        CMP_F32(w, got, want, n);
        snprintf(w, sizeof w, "%s: %s statistics", c->tag, what);
        CMP_STATS(w, &s->q.stats, &st);
        s->last = st;
        free(ref);
    } else {
        /* g=fp32: exact conversion; statistics: the histogram of the accumulators only */
        dlu_stats st;
        dlu_stats_clear(&st);
        for (size_t i = 0; i < n; i++) {
            want[i] = dlu_acc_to_f32(acc[i], ea);
            st.count++;
            if (acc[i] == 0)
                st.zeros++;
            else
                st.hist[dlu_stats_bin(dlu_leading_sign_pos64(acc[i]) + ea)]++;
        }
        snprintf(w, sizeof w, "%s: %s fp32 bits = dlu_acc_to_f32 (g=fp32)", c->tag, what);
        CMP_F32(w, got, want, n);
        snprintf(w, sizeof w, "%s: %s statistics (g=fp32)", c->tag, what);
        CMP_STATS(w, &s->q.stats, &st);
        snprintf(w, sizeof w, "%s: %s site exp is the accumulator's (g=fp32)", c->tag, what);
        CHECK(s->q.exp == ea, "%s: %d, expected %d", w, s->q.exp, ea);
    }
    s->produced = 1;
    free(want);
}

/* ------------------------------------------------------------------------------------ */
/* layers                                                                               */
/* ------------------------------------------------------------------------------------ */

static dlu__layer layer_linear(int in, int out, int bias)
{
    dlu__layer l;
    memset(&l, 0, sizeof l);
    l.op = DLU_OP_LINEAR;
    snprintf(l.name, sizeof l.name, "fc");
    l.out = out, l.bias = bias;
    l.in_c = in, l.in_h = 1, l.in_w = 1;
    l.out_c = out, l.out_h = 1, l.out_w = 1;
    l.in_size = in, l.out_size = out;
    return l;
}

/* conv2d (F filters), maxpool, avgpool (F ignored) */
static dlu__layer layer_window(dlu_op op, int C, int H, int W, int F, int k, int s, int p, int bias)
{
    dlu__layer l;
    memset(&l, 0, sizeof l);
    l.op = op;
    snprintf(l.name, sizeof l.name, "%s", dlu_op_name(op));
    l.kernel = k, l.stride = s, l.pad = p;
    l.in_c = C, l.in_h = H, l.in_w = W;
    l.out_c = C;
    if (op == DLU_OP_CONV2D)
        l.filters = F, l.out_c = F, l.bias = bias;
    l.out_h = (H + 2 * p - k) / s + 1;
    l.out_w = (W + 2 * p - k) / s + 1;
    l.in_size = (int64_t)C * H * W;
    l.out_size = (int64_t)l.out_c * l.out_h * l.out_w;
    return l;
}

/* relu (keeps C x H x W), flatten, softmax_xent (C classes) */
static dlu__layer layer_elem(dlu_op op, int C, int H, int W)
{
    dlu__layer l;
    memset(&l, 0, sizeof l);
    l.op = op;
    snprintf(l.name, sizeof l.name, "%s", dlu_op_name(op));
    l.in_c = C, l.in_h = H, l.in_w = W;
    l.out_c = C, l.out_h = H, l.out_w = W;
    if (op != DLU_OP_RELU)
        l.out_c = C * H * W, l.out_h = 1, l.out_w = 1;
    l.in_size = l.out_size = (int64_t)C * H * W;
    return l;
}

static void describe(const dlu__layer *l, int n, char *buf, size_t size)
{
    if (l->op == DLU_OP_LINEAR)
        snprintf(buf, size, "linear n=%d in=%lld out=%d%s", n, (long long)l->in_size, l->out, l->bias ? "" : " nobias");
    else if (l->op == DLU_OP_CONV2D || l->op == DLU_OP_MAXPOOL || l->op == DLU_OP_AVGPOOL)
        snprintf(buf, size, "%s n=%d %dx%dx%d F=%d k=%d s=%d p=%d%s", dlu_op_name(l->op), n, l->in_c, l->in_h, l->in_w,
                 l->out_c, l->kernel, l->stride, l->pad, l->op == DLU_OP_CONV2D && !l->bias ? " nobias" : "");
    else
        snprintf(buf, size, "%s n=%d %dx%dx%d", dlu_op_name(l->op), n, l->in_c, l->in_h, l->in_w);
}

/* What the CPU kernels of linear and conv2d take from their workspace at most, in bytes,
 * read off cpu_dfp.c's take() calls with every GEMM's real M, N, K (each term rounded up
 * generously): the integer accumulators, the transposed and unfolded operands, the
 * widened GEMM operands and the G-class temporaries. Linear in every size. Other ops:
 * what they ask for. */
static size_t ws_bound(const dlu__layer *l, int n)
{
    const size_t N = (size_t)n, in = (size_t)l->in_size, os = (size_t)l->out_size;
    if (l->op == DLU_OP_LINEAR) {
        const size_t out = (size_t)l->out;
        return 24 * (N + out) * in + 16 * N * out + 16 * out + 64 * 64;
    }
    if (l->op == DLU_OP_CONV2D) {
        const size_t hw = (size_t)l->out_h * l->out_w, ckk = (size_t)l->in_c * l->kernel * l->kernel;
        const size_t F = (size_t)l->out_c;
        size_t g = ((size_t)8 << 20) / (hw * ckk * 2 + 1); /* the kernel's chunk rule */
        if (g * hw > 131071)
            g = 131071 / hw;
        if (g < 1)
            g = 1;
        if (g > N)
            g = N;
        const size_t ghw = g * hw;
        return 8 * N * (in > os ? in : os) + 16 * ghw * ckk + 8 * F * ghw + 16 * F * ckk + 8 * F +
               (8 * F * ghw + 8 * ckk * ghw + 16 * F * ckk + 2 * ckk * F + 2 * ghw * F) + 64 * 64;
    }
    return be->vt->ws_nbytes(l, n, 1);
}

/* The workspace a kernel asks for, exactly that many bytes. On a host-visible backend it is
 * plain host memory (sanitizers catch overruns), and when the kernel asks for more than
 * 256 MiB (see test_ws_size) the bound above instead: the CPU's kernels stay within it, and
 * the bits are still checked. Elsewhere it comes from the backend's allocator, as asked. */
static void *ws_new(const dlu__layer *l, int n)
{
    size_t want = be->vt->ws_nbytes(l, n, 1), bound = ws_bound(l, n);
    if (be->vt->host_visible)
        return xmalloc(want > ((size_t)256 << 20) && bound < want ? bound : want);
    void *ws = NULL;
    dlu_status s = be->vt->alloc(be, want ? want : 1, &ws);
    if (s != DLU_OK)
        printf("\n    cannot allocate a %zu-byte workspace: %s\n", want, dlu_last_error());
    CU_ASSERT_FATAL(s == DLU_OK);
    return ws;
}

static void ws_free(void *ws)
{
    if (be->vt->host_visible)
        free(ws);
    else if (ws)
        be->vt->free(be, ws);
}

/* ------------------------------------------------------------------------------------ */
/* the reference: exact integer sums by naive loops                                     */
/* ------------------------------------------------------------------------------------ */

/* y (n, out_size) accumulators: linear as a triple loop, conv2d as a direct convolution;
 * plus the bias in the accumulator's scale, saturating. */
static void ref_dense_fwd(const dlu__layer *l, int n, const int32_t *x, const int32_t *w, const float *b, int ea,
                          int64_t *acc)
{
    if (l->op == DLU_OP_LINEAR) {
        const int in = (int)l->in_size, out = l->out;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < out; j++) {
                int64_t s = 0;
                for (int k = 0; k < in; k++)
                    s += (int64_t)x[(size_t)i * in + k] * w[(size_t)j * in + k];
                acc[(size_t)i * out + j] = b ? dlu_add_sat_i64(s, dlu_bias_to_acc(b[j], ea)) : s;
            }
        return;
    }
    const int C = l->in_c, H = l->in_h, W = l->in_w, F = l->out_c, Ho = l->out_h, Wo = l->out_w;
    const int k = l->kernel, st = l->stride, p = l->pad;
    for (int i = 0; i < n; i++)
        for (int f = 0; f < F; f++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    int64_t s = 0;
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                const int iy = oy * st - p + ky, ix = ox * st - p + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                s += (int64_t)x[(((size_t)i * C + c) * H + iy) * W + ix] *
                                     w[(((size_t)f * C + c) * k + ky) * k + kx];
                            }
                    if (b)
                        s = dlu_add_sat_i64(s, dlu_bias_to_acc(b[f], ea));
                    acc[(((size_t)i * F + f) * Ho + oy) * Wo + ox] = s;
                }
}

/* dx = dL/dx (n, in_size), dW (out, in) or (F, C, k, k), db (out) or (F): textbook sums. */
static void ref_dense_bwd(const dlu__layer *l, int n, const int32_t *x, const int32_t *w, const int32_t *dy,
                          int64_t *dx, int64_t *dw, int64_t *db)
{
    if (l->op == DLU_OP_LINEAR) {
        const int in = (int)l->in_size, out = l->out;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < in; k++) {
                int64_t s = 0;
                for (int j = 0; j < out; j++)
                    s += (int64_t)dy[(size_t)i * out + j] * w[(size_t)j * in + k];
                dx[(size_t)i * in + k] = s;
            }
        for (int j = 0; j < out; j++)
            for (int k = 0; k < in; k++) {
                int64_t s = 0;
                for (int i = 0; i < n; i++)
                    s += (int64_t)dy[(size_t)i * out + j] * x[(size_t)i * in + k];
                dw[(size_t)j * in + k] = s;
            }
        for (int j = 0; j < out; j++) {
            int64_t s = 0;
            for (int i = 0; i < n; i++)
                s += dy[(size_t)i * out + j];
            db[j] = s;
        }
        return;
    }
    const int C = l->in_c, H = l->in_h, W = l->in_w, F = l->out_c, Ho = l->out_h, Wo = l->out_w;
    const int k = l->kernel, st = l->stride, p = l->pad;
    memset(dx, 0, (size_t)n * l->in_size * sizeof *dx);
    memset(dw, 0, (size_t)F * C * k * k * sizeof *dw);
    memset(db, 0, (size_t)F * sizeof *db);
    for (int i = 0; i < n; i++)
        for (int f = 0; f < F; f++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    const int64_t g = dy[(((size_t)i * F + f) * Ho + oy) * Wo + ox];
                    db[f] += g;
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                const int iy = oy * st - p + ky, ix = ox * st - p + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                const size_t xi = (((size_t)i * C + c) * H + iy) * W + ix;
                                const size_t wi = (((size_t)f * C + c) * k + ky) * k + kx;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                }
}

/* ------------------------------------------------------------------------------------ */
/* linear and conv2d                                                                    */
/* ------------------------------------------------------------------------------------ */

/* Formats and rounding per class W, A, E, G. */
typedef struct prec {
    dlu_format f[DLU_CLASS_COUNT];
    dlu_round r[DLU_CLASS_COUNT];
} prec;

#define N8 DLU_FMT_DFP8
#define N16 DLU_FMT_DFP16
#define NF DLU_FMT_FP32
#define RN DLU_ROUND_NEAREST
#define RS DLU_ROUND_STOCHASTIC

static const prec P8 = {{N8, N8, N8, N8}, {RN, RN, RS, RS}};
static const prec P16 = {{N16, N16, N16, N16}, {RN, RN, RS, RS}};
static const prec PMIX = {{N8, N8, N16, N16}, {RN, RN, RS, RS}};     /* w=dfp8,a=dfp8,e=dfp16,g=dfp16 */
static const prec PMIX2 = {{N16, N8, N8, NF}, {RN, RN, RS, RN}};     /* x dfp8, W dfp16, g=fp32 */
static const prec PMIX3 = {{N8, N16, N8, N8}, {RS, RS, RS, RS}};     /* x dfp16, W dfp8, all stochastic */
static const prec PMIX4 = {{N16, N16, N8, N16}, {RN, RN, RN, RN}};   /* all nearest */

static void prec_str(const prec *p, char *buf, size_t n)
{
    static const char cls[] = "waeg";
    size_t u = 0;
    for (int c = 0; c < DLU_CLASS_COUNT; c++)
        u += (size_t)snprintf(buf + u, n - u, "%s%c=%s/%c", c ? "," : "", cls[c], dlu_format_name(p->f[c]),
                              p->r[c] == RS ? 'S' : 'N');
}

typedef struct dense_case {
    dlu__layer l;
    int n;
    prec p;
    const char *policy; /* every policy site's spec */
    vkind xk, dyk, wk;
    int ex, edy;        /* exponents of x and dy */
    double wscale, bscale; /* fp32 master weights and biases, magnitudes up to these */
    uint64_t seed;
    uint32_t step;
    int steps;          /* 2: a second step checks the delayed exponents */
    int need_overflow;  /* 1: the case is built to saturate; y must count overflows */
    int no_premise;     /* 1: skip the check that step 2 would recalibrate elsewhere */
    const int32_t *xfix;  /* optional fixed x values (n * in_size) */
    const float *wfix;    /* optional fixed fp32 weights */
} dense_case;

/* The outputs of one dense forward+backward, kept for comparisons between runs. */
typedef struct dense_out {
    void *y, *dx, *wq;
    float *dw, *db;
    size_t ny, ndx, nw, nb; /* bytes of y, dx, wq; elements of db */
    size_t nwel;            /* elements of wq and dW */
    int ey, edx, ew;
} dense_out;

static void dense_out_free(dense_out *o)
{
    free(o->y), free(o->dx), free(o->wq), free(o->dw), free(o->db);
    memset(o, 0, sizeof *o);
}

static void *memdup(const void *p, size_t n)
{
    void *d = xmalloc(n);
    memcpy(d, p, n);
    return d;
}

/* Run a dense layer's forward and backward through the backend table for c->steps steps
 * and check every output against the reference; out (may be NULL) keeps the last step's
 * outputs. */
static void run_dense(const dense_case *dc, dense_out *out)
{
    const dlu__layer *l = &dc->l;
    const int n = dc->n, op = l->op;
    const int64_t in = l->in_size, os = l->out_size;
    const int F = l->out_c;
    const int64_t ckk = op == DLU_OP_LINEAR ? in : (int64_t)l->in_c * l->kernel * l->kernel;
    const size_t nw = (size_t)F * (size_t)ckk;
    run_ctx c = {.seed = dc->seed, .step = dc->step};
    char desc[160], pr[96];
    describe(l, n, desc, sizeof desc);
    prec_str(&dc->p, pr, sizeof pr);

    rng_seed(dc->seed ^ 0x5EEDull);
    dlu_tensor *x = tnew(fmt_dtype(dc->p.f[DLU_CLASS_A]), n, in);
    dlu_tensor *y = tnew(fmt_dtype(dc->p.f[DLU_CLASS_A]), n, os);
    dlu_tensor *wq = tnew(fmt_dtype(dc->p.f[DLU_CLASS_W]), F, ckk);
    dlu_tensor *w = tnew(DLU_DTYPE_F32, F, ckk);
    dlu_tensor *b = l->bias ? tnew(DLU_DTYPE_F32, 1, F) : NULL;
    dlu_tensor *dy = tnew(fmt_dtype(dc->p.f[DLU_CLASS_E]), n, os);
    dlu_tensor *dx = tnew(fmt_dtype(dc->p.f[DLU_CLASS_E]), n, in);
    dlu_tensor *dw = tnew(DLU_DTYPE_F32, F, ckk);
    dlu_tensor *db = l->bias ? tnew(DLU_DTYPE_F32, 1, F) : NULL;
    for (size_t i = 0; i < nw; i++)
        f32(w)[i] = dc->wfix ? dc->wfix[i] : rnd_f(dc->wscale, dc->wk);
    for (int j = 0; b && j < F; j++)
        f32(b)[j] = rnd_f(dc->bscale, dc->wk);

    tsite qy, qw, qdx, qdw, qdb;
    tsite_init(&qy, "l.y", DLU_CLASS_A, dc->p.f[DLU_CLASS_A], dc->p.r[DLU_CLASS_A], 9, dc->policy);
    tsite_init(&qdx, "l.dx", DLU_CLASS_E, dc->p.f[DLU_CLASS_E], dc->p.r[DLU_CLASS_E], 10, dc->policy);
    tsite_init(&qw, "l.w", DLU_CLASS_W, dc->p.f[DLU_CLASS_W], dc->p.r[DLU_CLASS_W], 11, dc->policy);
    tsite_init(&qdw, "l.dw", DLU_CLASS_G, dc->p.f[DLU_CLASS_G], dc->p.r[DLU_CLASS_G], 12, dc->policy);
    tsite_init(&qdb, "l.db", DLU_CLASS_G, dc->p.f[DLU_CLASS_G], dc->p.r[DLU_CLASS_G], 13, dc->policy);
    void *ws = ws_new(l, n);
    int64_t *acc = xmalloc((size_t)n * (size_t)(in > os ? in : os) * sizeof *acc);
    int64_t *dwacc = xmalloc(nw * sizeof *dwacc), *dbacc = xmalloc((size_t)F * sizeof *dbacc);

    for (int t = 0; t < dc->steps; t++) {
        c.step = dc->step + (uint32_t)t;
        snprintf(c.tag, sizeof c.tag, "%s %s %s seed=%" PRIu64 " step=%" PRIu32, desc, pr, dc->policy, c.seed, c.step);
        /* step 2 shifts x by 3 bits: a recalibration would move the exponents, the delayed
         * policy must not */
        if (dc->xfix) {
            for (size_t i = 0; i < (size_t)n * in; i++)
                qset(x, i, dc->xfix[i]);
            x->exp = dc->ex + 3 * t;
        } else {
            fill_q(x, dc->xk, dc->ex + 3 * t);
        }
        fill_q(dy, dc->dyk, dc->edy + 2 * t);
        memset(hv(y), 0xA5, y->nbytes);
        memset(hv(wq), 0xA5, wq->nbytes);
        memset(hv(dx), 0xA5, dx->nbytes);
        memset(hv(dw), 0xFF, dw->nbytes);
        if (db)
            memset(hv(db), 0xFF, db->nbytes);
        y->exp = wq->exp = dx->exp = 12345;
        PUSH(x, w, b, y, wq, dy, dx, dw, db);

        dlu__op_args a;
        memset(&a, 0, sizeof a);
        a.l = l, a.n = n, a.x = x, a.y = y, a.w = w, a.b = b, a.ws = ws;
        a.qy = &qy.q, a.qw = &qw.q, a.wq = wq, a.seed = c.seed, a.step = c.step;
        char what[480];
        snprintf(what, sizeof what, "%s: forward", c.tag);
        if (!CALL_OK(what, synced(be->vt->forward_dfp[op](be, &a))))
            break;
        PULL(y, wq);
        check_quant(&c, "w (quantized master weights)", &qw, f32(w), nw, hv(wq), wq->exp);
        int32_t *xv = qvals(x), *wv = qvals(wq), *dyv = qvals(dy);
        const int ea = x->exp + wq->exp;
        ref_dense_fwd(l, n, xv, wv, b ? f32(b) : NULL, ea, acc);
        check_requant(&c, "y", &qy, acc, (size_t)n * os, ea, hv(y), y->exp);
        if (dc->need_overflow) {
            snprintf(what, sizeof what, "%s: y saturates and counts it (overflow %" PRIu64 ")", c.tag,
                     qy.q.stats.overflow);
            CHECK(qy.q.stats.overflow > 0, "%s", what);
        }
        if (t == 1 && qy.mirror && !dc->no_premise && (size_t)n * os >= 64) {
            /* the test's own premise: a recalibration would have chosen another exponent */
            dlu_scale_state *fresh = NULL;
            CU_ASSERT_FATAL(dlu_scale_state_new(dlu_scale_state_cfg(qy.mirror), qy.q.fmt, &fresh) == DLU_OK);
            snprintf(what, sizeof what, "%s: step 2 keeps the delayed exponent (%d), not a recalibration", c.tag,
                     y->exp);
            CHECK(dlu_scale_calibrate(fresh, &qy.last) != y->exp, "%s", what);
            dlu_scale_state_free(fresh);
        }

        a.dy = dy, a.dx = dx, a.dw = dw, a.db = db;
        a.qdx = &qdx.q, a.qdw = &qdw.q, a.qdb = b ? &qdb.q : NULL;
        snprintf(what, sizeof what, "%s: backward", c.tag);
        if (!CALL_OK(what, synced(be->vt->backward_dfp[op](be, &a)))) {
            free(xv), free(wv), free(dyv);
            break;
        }
        PULL(dx, dw, db);
        ref_dense_bwd(l, n, xv, wv, dyv, acc, dwacc, dbacc);
        check_requant(&c, "dx", &qdx, acc, (size_t)n * in, dy->exp + wq->exp, hv(dx), dx->exp);
        check_grad(&c, "dW", &qdw, dwacc, nw, dy->exp + x->exp, f32(dw));
        if (b)
            check_grad(&c, "db", &qdb, dbacc, (size_t)F, dy->exp, f32(db));
        free(xv), free(wv), free(dyv);

        tsite_end_step(&qy), tsite_end_step(&qw), tsite_end_step(&qdx), tsite_end_step(&qdw), tsite_end_step(&qdb);
    }
    if (out) {
        out->ny = y->nbytes, out->ndx = dx->nbytes, out->nw = wq->nbytes;
        out->nb = db ? (size_t)F : 0;
        out->nwel = nw;
        out->y = memdup(hv(y), y->nbytes), out->dx = memdup(hv(dx), dx->nbytes);
        out->wq = memdup(hv(wq), wq->nbytes);
        out->dw = memdup(hv(dw), dw->nbytes);
        out->db = db ? memdup(hv(db), db->nbytes) : NULL;
        out->ey = y->exp, out->edx = dx->exp, out->ew = wq->exp;
    }
    free(acc), free(dwacc), free(dbacc), ws_free(ws);
    tsite_free(&qy), tsite_free(&qw), tsite_free(&qdx), tsite_free(&qdw), tsite_free(&qdb);
    tfree(x), tfree(y), tfree(wq), tfree(w), tfree(b);
    tfree(dy), tfree(dx), tfree(dw), tfree(db);
}

static dense_case dcase(dlu__layer l, int n, const prec *p, uint64_t seed)
{
    dense_case d;
    memset(&d, 0, sizeof d);
    d.l = l, d.n = n, d.p = *p;
    d.policy = "overflow";
    d.xk = V_RANDOM, d.dyk = V_RANDOM, d.wk = V_RANDOM;
    d.ex = dlu_format_bits(p->f[DLU_CLASS_A]) == 8 ? -7 : -15;
    d.edy = dlu_format_bits(p->f[DLU_CLASS_E]) == 8 ? -12 : -20;
    d.wscale = 0.5, d.bscale = 0.25;
    d.seed = seed, d.step = 3, d.steps = 2;
    return d;
}

static const prec *const ALL_PRECS[] = {&P8, &P16, &PMIX, &PMIX2, &PMIX3, &PMIX4};
#define NPRECS (int)(sizeof ALL_PRECS / sizeof ALL_PRECS[0])

static void test_linear(void)
{
    static const struct {
        int n, in, out, bias;
    } shapes[] = {{1, 1, 1, 1}, {3, 17, 5, 1}, {7, 33, 10, 0}, {32, 100, 13, 1}, {5, 300, 64, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int p = 0; p < NPRECS; p++) {
            dense_case d = dcase(layer_linear(shapes[s].in, shapes[s].out, shapes[s].bias), shapes[s].n,
                                 ALL_PRECS[p], 100 + 10 * s + (uint64_t)p);
            d.policy = p % 2 ? "max" : "overflow:rate=0.01";
            run_dense(&d, NULL);
        }
}

static void test_conv2d(void)
{
    static const struct {
        int n, C, H, W, F, k, s, p, bias;
    } shapes[] = {
        {2, 1, 5, 5, 1, 3, 1, 0, 1},  {3, 3, 7, 9, 4, 3, 1, 1, 1},  {2, 2, 8, 8, 3, 3, 2, 1, 1},
        {2, 3, 11, 11, 2, 5, 2, 2, 0}, {3, 2, 9, 7, 5, 1, 1, 0, 1},  {2, 2, 10, 13, 3, 4, 3, 2, 1},
        {1, 4, 6, 6, 3, 2, 2, 0, 1},  {4, 1, 28, 28, 6, 5, 1, 2, 1}, {2, 5, 5, 5, 2, 5, 1, 0, 1},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int p = 0; p < NPRECS; p++) {
            dense_case d = dcase(layer_window(DLU_OP_CONV2D, shapes[s].C, shapes[s].H, shapes[s].W, shapes[s].F,
                                              shapes[s].k, shapes[s].s, shapes[s].p, shapes[s].bias),
                                 shapes[s].n, ALL_PRECS[p], 200 + 10 * s + (uint64_t)p);
            d.policy = p % 3 == 0 ? "overflow" : p % 3 == 1 ? "max" : "percentile:p=99";
            run_dense(&d, NULL);
        }
}

/* Batches larger than one GEMM chunk: the kernel keeps a chunk's columns G*Ho*Wo <= 131071
 * (and the unfolded input near 8 MiB), so these split into 8+3 and 3+3+1 samples. */
static void test_conv2d_chunks(void)
{
    dense_case d = dcase(layer_window(DLU_OP_CONV2D, 1, 127, 129, 3, 3, 1, 1, 1), 11, &P8, 301);
    d.steps = 1;
    run_dense(&d, NULL);
    d = dcase(layer_window(DLU_OP_CONV2D, 1, 127, 129, 3, 3, 1, 1, 1), 11, &PMIX, 302);
    d.steps = 1;
    run_dense(&d, NULL);
    d = dcase(layer_window(DLU_OP_CONV2D, 2, 299, 301, 2, 5, 2, 2, 1), 7, &P16, 303);
    d.steps = 1;
    run_dense(&d, NULL);
}

/* The same bits whatever the thread count of the integer GEMM (integer sums are exact). */
static void test_threads(void)
{
    const int before = dlu_cpu_threads();
    dense_out o1, o3;
    dense_case d = dcase(layer_window(DLU_OP_CONV2D, 3, 63, 65, 16, 3, 1, 1, 1), 9, &P8, 401);
    d.steps = 1;
    dlu_cpu_set_threads(1);
    run_dense(&d, &o1);
    dlu_cpu_set_threads(3);
    run_dense(&d, &o3);
    dlu_cpu_set_threads(before);
    CHECK(memcmp(o1.y, o3.y, o1.ny) == 0 && o1.ey == o3.ey, "conv2d dfp8: y with 1 and 3 threads is the same");
    CHECK(memcmp(o1.dx, o3.dx, o1.ndx) == 0 && o1.edx == o3.edx, "conv2d dfp8: dx with 1 and 3 threads is the same");
    CHECK(memcmp(o1.dw, o3.dw, o1.nwel * sizeof(float)) == 0, "conv2d dfp8: dW with 1 and 3 threads is the same");
    dense_out_free(&o1), dense_out_free(&o3);
}

/* K > 131071 with 8-bit operands: x = +127 everywhere and weights +-0.9921875 (127 * 2^-7
 * under the max policy), so row 0 sums 140000 * 16129 = 2258060000 > 2^31 - 1; an int32
 * accumulator would wrap. K = 131071 (the last K of the int32 path, all products 16129:
 * 2114044159 < 2^31) and 131072 around the boundary. */
static void test_linear_big_k(void)
{
    static const int Ks[] = {131071, 131072, 140000};
    for (size_t t = 0; t < sizeof Ks / sizeof Ks[0]; t++) {
        const int K = Ks[t], n = 2, out = 3;
        int32_t *xfix = xmalloc((size_t)n * K * sizeof *xfix);
        float *wfix = xmalloc((size_t)out * K * sizeof *wfix);
        for (size_t i = 0; i < (size_t)n * K; i++)
            xfix[i] = i < (size_t)K ? 127 : (i % 3 ? 127 : -127);
        for (int k = 0; k < K; k++) {
            wfix[k] = 0.9921875f;
            wfix[(size_t)K + k] = -0.9921875f;
            wfix[(size_t)2 * K + k] = k % 7 ? 0.9921875f : -0.5f;
        }
        dense_case d = dcase(layer_linear(K, out, 1), n, &P8, 500 + t);
        d.policy = "max";
        d.xfix = xfix, d.wfix = wfix;
        d.dyk = V_EXTREME;
        d.steps = 1;
        dense_out o;
        run_dense(&d, &o);
        CHECK(o.ew == -7 && ((const int8_t *)o.wq)[0] == 127, "linear K=%d dfp8: the weights quantize to 127 at 2^-7 "
              "(exp %d, q %d)", K, o.ew, ((const int8_t *)o.wq)[0]);
        CHECK(((const int8_t *)o.y)[0] > 0 && ((const int8_t *)o.y)[1] < 0,
              "linear K=%d dfp8: y[0][0] > 0 and y[0][1] < 0 (no int32 wrap-around): %d %d", K,
              ((const int8_t *)o.y)[0], ((const int8_t *)o.y)[1]);
        dense_out_free(&o);
        free(xfix), free(wfix);
    }
}

/* All inputs +-qmax, weights and biases large, and a policy 3 bits short: y, dx and the
 * gradients saturate, and the statistics count it. Biases of 3e38 saturate the int64
 * bias conversion itself. */
static void test_dense_extreme(void)
{
    for (int p = 0; p < NPRECS; p++) {
        dense_case d = dcase(layer_linear(40, 6, 1), 4, ALL_PRECS[p], 600 + (uint64_t)p);
        d.xk = d.dyk = d.wk = V_EXTREME;
        d.policy = "max:margin=-3";
        d.need_overflow = 1;
        run_dense(&d, NULL);
        d = dcase(layer_window(DLU_OP_CONV2D, 2, 6, 6, 3, 3, 1, 1, 1), 3, ALL_PRECS[p], 610 + (uint64_t)p);
        d.xk = d.dyk = V_POSMAX;
        d.wk = V_EXTREME;
        d.policy = "overflow:rate=0.5,margin=-2";
        d.need_overflow = 1;
        run_dense(&d, NULL);
        d = dcase(layer_linear(9, 4, 1), 3, ALL_PRECS[p], 620 + (uint64_t)p);
        d.xk = d.dyk = V_NEG;
        d.wk = V_EXTREME;
        d.wscale = 1e30, d.bscale = 3e38; /* bias beyond int64 in the accumulator's scale */
        d.no_premise = 1;                 /* y is pinned at the top of the exponent range */
        d.policy = "max";
        run_dense(&d, NULL);
    }
}

/* Stochastic rounding is a function of (seed, site id, step, index): the same triple gives
 * the same bits; another step or seed other bits. Nearest rounding ignores both. */
static void test_stochastic(void)
{
    const prec PS = {{N8, N8, N8, N8}, {RS, RS, RS, RS}};
    const prec PS16 = {{N16, N16, N16, N16}, {RS, RS, RS, RS}};
    const prec PN = {{N8, N8, N8, N8}, {RN, RN, RN, RN}};
    const prec *ps[] = {&PS, &PS16};
    for (int k = 0; k < 2; k++) {
        const char *fn = k ? "dfp16" : "dfp8";
        dense_out a, b, s2;
        dense_case d = dcase(layer_window(DLU_OP_CONV2D, 2, 9, 9, 4, 3, 1, 1, 1), 4, ps[k], 700 + (uint64_t)k);
        d.steps = 1;
        run_dense(&d, &a);
        run_dense(&d, &b);
        CHECK(!memcmp(a.y, b.y, a.ny) && !memcmp(a.dx, b.dx, a.ndx) && !memcmp(a.wq, b.wq, a.nw) &&
                  !memcmp(a.dw, b.dw, a.nwel * sizeof(float)) && !memcmp(a.db, b.db, a.nb * sizeof(float)),
              "conv2d %s stochastic: the same seed, step and ids give the same bits", fn);
        d.step = 4; /* the same data (drawn from the seed), another step */
        run_dense(&d, &s2);
        CHECK(memcmp(a.y, s2.y, a.ny) != 0, "conv2d %s stochastic: another step gives other y bits", fn);
        CHECK(memcmp(a.dx, s2.dx, a.ndx) != 0, "conv2d %s stochastic: another step gives other dx bits", fn);
        CHECK(memcmp(a.wq, s2.wq, a.nw) != 0, "conv2d %s stochastic: another step gives other w bits", fn);
        CHECK(memcmp(a.dw, s2.dw, a.nwel * sizeof(float)) != 0,
              "conv2d %s stochastic: another step gives other dW bits", fn);
        dense_out_free(&a), dense_out_free(&b), dense_out_free(&s2);
    }
    /* nearest: the step does not matter */
    dense_out a, b;
    dense_case d = dcase(layer_window(DLU_OP_CONV2D, 2, 9, 9, 4, 3, 1, 1, 1), 4, &PN, 710);
    d.steps = 1;
    run_dense(&d, &a);
    d.step = 77;
    run_dense(&d, &b);
    CHECK(!memcmp(a.y, b.y, a.ny) && !memcmp(a.dx, b.dx, a.ndx) && !memcmp(a.wq, b.wq, a.nw) &&
              !memcmp(a.dw, b.dw, a.nwel * sizeof(float)),
          "conv2d dfp8 nearest: another step gives the same bits");
    dense_out_free(&a), dense_out_free(&b);
}

/* Another stream seed, same data: the input quantization of the same values with seed s
 * and s + 1 differs; with the same seed it is the same. */
static void test_stochastic_seed(void)
{
    const size_t n = 4000;
    dlu_tensor *src = tnew(DLU_DTYPE_F32, 1, (int64_t)n);
    rng_seed(801);
    for (size_t i = 0; i < n; i++)
        f32(src)[i] = rnd_f(1.0, V_RANDOM);
    void *out[3];
    for (int r = 0; r < 3; r++) {
        tsite q;
        tsite_init(&q, "input", DLU_CLASS_A, N8, RS, 0, "max");
        dlu_tensor *dst = tnew(DLU_DTYPE_I8, 1, (int64_t)n);
        run_ctx c = {.seed = r == 2 ? 1001 : 1000, .step = 5};
        snprintf(c.tag, sizeof c.tag, "quantize n=%zu dfp8 stochastic seed=%" PRIu64, n, c.seed);
        PUSH(src, dst);
        CALL_OK(c.tag, synced(be->vt->quantize(be, src, n, dst, &q.q, c.seed, c.step)));
        PULL(dst);
        check_quant(&c, "input", &q, f32(src), n, hv(dst), dst->exp);
        out[r] = memdup(hv(dst), n);
        tfree(dst);
        tsite_free(&q);
    }
    CHECK(memcmp(out[0], out[1], n) == 0, "quantize dfp8 stochastic: the same seed gives the same bits");
    CHECK(memcmp(out[0], out[2], n) != 0, "quantize dfp8 stochastic: another seed gives other bits");
    for (int r = 0; r < 3; r++)
        free(out[r]);
    tfree(src);
}

/* The workspace a DFP kernel asks for grows linearly with the layer (what it takes from
 * it does: ws_bound); a net binds it once for its largest batch. Layers of the example
 * nets at batch 128, and a wide linear layer. */
static void test_ws_size(void)
{
    const struct {
        dlu__layer l;
        int n;
    } cases[] = {
        {layer_window(DLU_OP_CONV2D, 1, 28, 28, 32, 5, 1, 2, 1), 128}, /* cnn.net conv1 */
        {layer_window(DLU_OP_CONV2D, 32, 14, 14, 64, 5, 1, 2, 1), 128}, /* cnn.net conv2 */
        {layer_window(DLU_OP_CONV2D, 1, 28, 28, 6, 5, 1, 2, 1), 32},  /* lenet5.net c1 */
        {layer_linear(784, 256, 1), 128},                            /* mlp.net fc1 */
        {layer_linear(3136, 256, 1), 128},                           /* cnn.net fc1 */
        {layer_linear(140000, 3, 1), 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char desc[160];
        describe(&cases[i].l, cases[i].n, desc, sizeof desc);
        const size_t want = be->vt->ws_nbytes(&cases[i].l, cases[i].n, 1), bound = ws_bound(&cases[i].l, cases[i].n);
        CHECK(want <= 2 * bound, "%s: DFP workspace %.1f MiB, the kernels take at most %.1f MiB", desc,
              want / 1048576.0, bound / 1048576.0);
    }
}

/* ------------------------------------------------------------------------------------ */
/* the net input                                                                        */
/* ------------------------------------------------------------------------------------ */

static void test_quantize(void)
{
    static const dlu_format fmts[] = {N8, N16};
    static const dlu_round rounds[] = {RN, RS};
    for (int f = 0; f < 2; f++)
        for (int r = 0; r < 2; r++)
            for (int special = 0; special < 2; special++) {
                const size_t n = 3001;
                dlu_tensor *src = tnew(DLU_DTYPE_F32, 1, (int64_t)n);
                rng_seed(900 + 4 * (uint64_t)f + 2 * (uint64_t)r + (uint64_t)special);
                for (size_t i = 0; i < n; i++)
                    f32(src)[i] = rnd_f(4.0, V_RANDOM);
                if (special) { /* zeros, -0, subnormals, NaN, +-Inf: counted, never a crash */
                    const uint32_t sp[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu, 0x7FC00000u,
                                           0xFFC00001u, 0x7F800000u, 0xFF800000u, 0x7F7FFFFFu};
                    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
                        memcpy(&f32(src)[i * 97], &sp[i], 4);
                }
                for (int t = 0; t < 2; t++) {
                    tsite q;
                    tsite_init(&q, "input", DLU_CLASS_A, fmts[f], rounds[r], 0,
                               t ? NULL : "overflow:rate=0.01");
                    if (t)
                        q.q.exp = -4; /* no policy: the preset exponent */
                    dlu_tensor *dst = tnew(fmt_dtype(fmts[f]), 1, (int64_t)n);
                    run_ctx c = {.seed = 42, .step = 7};
                    snprintf(c.tag, sizeof c.tag, "quantize n=%zu %s %s%s%s", n, dlu_format_name(fmts[f]),
                             dlu_round_name(rounds[r]), special ? " +specials" : "", t ? " preset exp" : "");
                    PUSH(src, dst);
                    if (CALL_OK(c.tag, synced(be->vt->quantize(be, src, n, dst, &q.q, c.seed, c.step)))) {
                        PULL(dst);
                        check_quant(&c, "input", &q, f32(src), n, hv(dst), dst->exp);
                    }
                    if (special)
                        CHECK(q.q.stats.nan == 2, "%s: two NaNs counted (%" PRIu64 ")", c.tag, q.q.stats.nan);
                    tfree(dst);
                    tsite_free(&q);
                }
                tfree(src);
            }
}

/* ------------------------------------------------------------------------------------ */
/* relu, flatten                                                                        */
/* ------------------------------------------------------------------------------------ */

static void run_elem(dlu_op op, int n, int C, int H, int W, dlu_format fa, dlu_format fe, vkind xk, uint64_t seed)
{
    dlu__layer l = layer_elem(op, C, H, W);
    const size_t cnt = (size_t)n * (size_t)l.in_size;
    run_ctx c = {.seed = seed, .step = 2};
    char desc[160];
    describe(&l, n, desc, sizeof desc);
    snprintf(c.tag, sizeof c.tag, "%s a=%s e=%s", desc, dlu_format_name(fa), dlu_format_name(fe));
    rng_seed(seed);
    dlu_tensor *x = tnew(fmt_dtype(fa), n, l.in_size), *y = tnew(fmt_dtype(fa), n, l.out_size);
    dlu_tensor *dy = tnew(fmt_dtype(fe), n, l.out_size), *dx = tnew(fmt_dtype(fe), n, l.in_size);
    fill_q(x, xk, -9);
    fill_q(dy, V_RANDOM, -17);
    tsite qy, qdx;
    tsite_init(&qy, "y", DLU_CLASS_A, fa, RN, 9, NULL);
    tsite_init(&qdx, "dx", DLU_CLASS_E, fe, RS, 10, NULL);
    void *ws = ws_new(&l, n);
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &l, a.n = n, a.x = x, a.y = y, a.dy = dy, a.dx = dx, a.ws = ws;
    a.qy = &qy.q, a.qdx = &qdx.q, a.seed = c.seed, a.step = c.step;
    char w[480];
    snprintf(w, sizeof w, "%s: forward", c.tag);
    PUSH(x, y, dy, dx);
    if (CALL_OK(w, synced(be->vt->forward_dfp[op](be, &a)))) {
        PULL(y);
        void *want = xmalloc(cnt * 2);
        for (size_t i = 0; i < cnt; i++) {
            int32_t v = qget(x, i);
            if (op == DLU_OP_RELU && v < 0)
                v = 0;
            if (fa == N8)
                ((int8_t *)want)[i] = (int8_t)v;
            else
                ((int16_t *)want)[i] = (int16_t)v;
        }
        snprintf(w, sizeof w, "%s: y bits", c.tag);
        CMP_Q(w, hv(y), want, cnt, fa);
        check_inherit(&c, "y", &qy, y, cnt, x->exp);
        snprintf(w, sizeof w, "%s: backward", c.tag);
        if (CALL_OK(w, synced(be->vt->backward_dfp[op](be, &a)))) {
            PULL(dx);
            for (size_t i = 0; i < cnt; i++) {
                int32_t v = op == DLU_OP_RELU && qget(y, i) <= 0 ? 0 : qget(dy, i);
                if (fe == N8)
                    ((int8_t *)want)[i] = (int8_t)v;
                else
                    ((int16_t *)want)[i] = (int16_t)v;
            }
            snprintf(w, sizeof w, "%s: dx bits", c.tag);
            CMP_Q(w, hv(dx), want, cnt, fe);
            check_inherit(&c, "dx", &qdx, dx, cnt, dy->exp);
        }
        free(want);
    }
    ws_free(ws);
    tsite_free(&qy), tsite_free(&qdx);
    tfree(x), tfree(y), tfree(dy), tfree(dx);
}

static void test_relu_flatten(void)
{
    static const dlu_format f[][2] = {{N8, N8}, {N16, N16}, {N8, N16}, {N16, N8}};
    for (int k = 0; k < 4; k++) {
        run_elem(DLU_OP_RELU, 3, 4, 5, 7, f[k][0], f[k][1], V_RANDOM, 1000 + (uint64_t)k);
        run_elem(DLU_OP_RELU, 2, 3, 3, 3, f[k][0], f[k][1], V_EXTREME, 1010 + (uint64_t)k);
        run_elem(DLU_OP_RELU, 2, 1, 1, 50, f[k][0], f[k][1], V_NEG, 1020 + (uint64_t)k); /* all zero out */
        run_elem(DLU_OP_FLATTEN, 3, 4, 5, 7, f[k][0], f[k][1], V_RANDOM, 1030 + (uint64_t)k);
        run_elem(DLU_OP_FLATTEN, 2, 2, 3, 3, f[k][0], f[k][1], V_EXTREME, 1040 + (uint64_t)k);
    }
}

/* ------------------------------------------------------------------------------------ */
/* maxpool, avgpool                                                                     */
/* ------------------------------------------------------------------------------------ */

static int log2_int(int a)
{
    int lg = 0;
    while ((1 << lg) < a)
        lg++;
    return lg;
}

static void run_pool(dlu_op op, int n, int C, int H, int W, int k, int s, int p, dlu_format fa, dlu_format fe,
                     vkind xk, vkind dyk, const char *policy, uint64_t seed, int need_overflow)
{
    dlu__layer l = layer_window(op, C, H, W, 0, k, s, p, 0);
    const int Ho = l.out_h, Wo = l.out_w;
    const size_t nin = (size_t)n * (size_t)l.in_size, nout = (size_t)n * (size_t)l.out_size;
    run_ctx c = {.seed = seed, .step = 6};
    char desc[160];
    describe(&l, n, desc, sizeof desc);
    snprintf(c.tag, sizeof c.tag, "%s a=%s e=%s %s", desc, dlu_format_name(fa), dlu_format_name(fe),
             op == DLU_OP_AVGPOOL ? policy : "inherited");
    rng_seed(seed);
    dlu_tensor *x = tnew(fmt_dtype(fa), n, l.in_size), *y = tnew(fmt_dtype(fa), n, l.out_size);
    dlu_tensor *dy = tnew(fmt_dtype(fe), n, l.out_size), *dx = tnew(fmt_dtype(fe), n, l.in_size);
    dlu_tensor *aux = tnew(DLU_DTYPE_I32, n, l.out_size);
    fill_q(x, xk, -8);
    fill_q(dy, dyk, -14);
    tsite qy, qdx;
    const char *pol = op == DLU_OP_AVGPOOL ? policy : NULL;
    tsite_init(&qy, "y", DLU_CLASS_A, fa, RS, 17, pol);
    tsite_init(&qdx, "dx", DLU_CLASS_E, fe, RS, 18, pol);
    void *ws = ws_new(&l, n);
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &l, a.n = n, a.x = x, a.y = y, a.dy = dy, a.dx = dx, a.aux = aux, a.ws = ws;
    a.qy = &qy.q, a.qdx = &qdx.q, a.seed = c.seed, a.step = c.step;
    int64_t *acc = xmalloc((nin > nout ? nin : nout) * sizeof *acc);
    int32_t *arg = xmalloc(nout * sizeof *arg);
    char w[480];
    snprintf(w, sizeof w, "%s: forward", c.tag);
    PUSH(x, y, dy, dx, aux);
    if (!CALL_OK(w, synced(be->vt->forward_dfp[op](be, &a))))
        goto out;
    PULL(y, aux);
    /* forward: window max (first maximum in row-major window order, padding never wins) or sum */
    for (int pl = 0; pl < n * C; pl++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int64_t best = 0, sum = 0;
                int bi = -1;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const int iy = oy * s - p + ky, ix = ox * s - p + kx;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;
                        const int32_t v = qget(x, (size_t)pl * H * W + (size_t)iy * W + ix);
                        sum += v;
                        if (bi < 0 || v > best)
                            best = v, bi = iy * W + ix;
                    }
                const size_t o = ((size_t)pl * Ho + oy) * Wo + ox;
                acc[o] = op == DLU_OP_MAXPOOL ? best : sum;
                arg[o] = bi;
            }
    if (op == DLU_OP_MAXPOOL) {
        void *want = xmalloc(nout * 2);
        for (size_t i = 0; i < nout; i++)
            if (fa == N8)
                ((int8_t *)want)[i] = (int8_t)acc[i];
            else
                ((int16_t *)want)[i] = (int16_t)acc[i];
        snprintf(w, sizeof w, "%s: y bits", c.tag);
        CMP_Q(w, hv(y), want, nout, fa);
        free(want);
        snprintf(w, sizeof w, "%s: argmax is the first maximum of each window", c.tag);
        CHECK(memcmp(hv(aux), arg, nout * sizeof *arg) == 0, "%s", w);
        check_inherit(&c, "y", &qy, y, nout, x->exp);
    } else {
        check_requant(&c, "y", &qy, acc, nout, x->exp - log2_int(k * k), hv(y), y->exp);
    }
    snprintf(w, sizeof w, "%s: backward", c.tag);
    if (!CALL_OK(w, synced(be->vt->backward_dfp[op](be, &a))))
        goto out;
    PULL(dx);
    /* backward: maxpool sums dy onto the winners; avgpool spreads dy over the window */
    memset(acc, 0, nin * sizeof *acc);
    for (int pl = 0; pl < n * C; pl++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                const size_t o = ((size_t)pl * Ho + oy) * Wo + ox;
                const int32_t g = qget(dy, o);
                if (op == DLU_OP_MAXPOOL) {
                    acc[(size_t)pl * H * W + (size_t)arg[o]] += g;
                    continue;
                }
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        const int iy = oy * s - p + ky, ix = ox * s - p + kx;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                            acc[(size_t)pl * H * W + (size_t)iy * W + ix] += g;
                    }
            }
    check_requant(&c, "dx", &qdx, acc, nin, dy->exp - (op == DLU_OP_AVGPOOL ? log2_int(k * k) : 0), hv(dx),
                  dx->exp);
    if (need_overflow) {
        snprintf(w, sizeof w, "%s: dx saturates and counts it (overflow %" PRIu64 ")", c.tag, qdx.q.stats.overflow);
        CHECK(qdx.q.stats.overflow > 0, "%s", w);
    }
out:
    free(acc), free(arg), ws_free(ws);
    tsite_free(&qy), tsite_free(&qdx);
    tfree(x), tfree(y), tfree(dy), tfree(dx), tfree(aux);
}

static void test_maxpool(void)
{
    static const dlu_format f[][2] = {{N8, N8}, {N16, N16}, {N8, N16}, {N16, N8}};
    for (int q = 0; q < 4; q++) {
        const dlu_format fa = f[q][0], fe = f[q][1];
        const uint64_t sd = 1100 + 20 * (uint64_t)q;
        run_pool(DLU_OP_MAXPOOL, 3, 2, 8, 8, 2, 2, 0, fa, fe, V_RANDOM, V_RANDOM, NULL, sd, 0);
        run_pool(DLU_OP_MAXPOOL, 2, 3, 9, 7, 3, 2, 1, fa, fe, V_RANDOM, V_RANDOM, NULL, sd + 1, 0);
        run_pool(DLU_OP_MAXPOOL, 2, 2, 7, 7, 3, 2, 1, fa, fe, V_SMALL, V_RANDOM, NULL, sd + 2, 0);  /* ties */
        /* all negative: padding never wins; then an odd size with pad 1 */
        run_pool(DLU_OP_MAXPOOL, 2, 2, 5, 6, 3, 1, 1, fa, fe, V_NEG, V_RANDOM, NULL, sd + 3, 0);
        run_pool(DLU_OP_MAXPOOL, 1, 1, 9, 9, 2, 2, 1, fa, fe, V_NEG, V_SMALL, NULL, sd + 4, 0);
        /* stride 1, window 3: an input wins up to 9 windows; constant x makes the first cell
         * of each window win, so dy = +qmax sums far beyond qmax: saturated, counted */
        run_pool(DLU_OP_MAXPOOL, 2, 2, 6, 6, 3, 1, 1, fa, fe, V_POSMAX, V_POSMAX, NULL, sd + 5, 1);
        run_pool(DLU_OP_MAXPOOL, 2, 2, 7, 5, 3, 1, 0, fa, fe, V_SMALL, V_EXTREME, NULL, sd + 6, 0);
    }
}

static void test_avgpool(void)
{
    static const dlu_format f[][2] = {{N8, N8}, {N16, N16}, {N8, N16}, {N16, N8}};
    for (int q = 0; q < 4; q++) {
        const dlu_format fa = f[q][0], fe = f[q][1];
        const uint64_t sd = 1200 + 20 * (uint64_t)q;
        run_pool(DLU_OP_AVGPOOL, 3, 2, 8, 8, 2, 2, 0, fa, fe, V_RANDOM, V_RANDOM, "overflow", sd, 0);
        /* area 16, overlapping windows */
        run_pool(DLU_OP_AVGPOOL, 2, 3, 9, 9, 4, 2, 1, fa, fe, V_RANDOM, V_RANDOM, "max", sd + 1, 0);
        run_pool(DLU_OP_AVGPOOL, 2, 2, 7, 5, 1, 1, 0, fa, fe, V_RANDOM, V_RANDOM, "overflow", sd + 2, 0); /* area 1 */
        /* +-qmax, overlapping windows, 2 bits short: saturates, counted; then with pad 1,
         * where the output (8x8) is larger than the input (7x7) */
        run_pool(DLU_OP_AVGPOOL, 2, 2, 7, 7, 2, 1, 0, fa, fe, V_EXTREME, V_EXTREME, "max:margin=-2", sd + 5, 1);
        run_pool(DLU_OP_AVGPOOL, 2, 2, 7, 7, 2, 1, 1, fa, fe, V_EXTREME, V_EXTREME, "max:margin=-2", sd + 3, 1);
        run_pool(DLU_OP_AVGPOOL, 1, 1, 16, 16, 8, 8, 0, fa, fe, V_RANDOM, V_SMALL, "percentile:p=90", sd + 4, 0);
    }
}

/* dlu_net_set_precision refuses a DFP avgpool whose window area is not a power of two and
 * names the layer; fp32 and power-of-two areas are fine. */
static void test_avgpool_area(void)
{
    static const struct {
        int kernel, ok;
    } cases[] = {{3, 0}, {5, 0}, {6, 0}, {1, 1}, {2, 1}, {4, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "[net]\ninput = 1x12x12\n\n[avg_odd]\nop = avgpool\nkernel = %d\n\n[flat]\nop = flatten\n\n"
                 "[fc]\nop = linear\nout = 4\n\n[loss]\nop = softmax_xent\n",
                 cases[i].kernel);
        dlu_net *net = NULL;
        dlu_status s = dlu_net_parse(text, "avgpool-test.net", &net);
        CHECK(s == DLU_OK, "avgpool kernel %d: the test net parses (%s)", cases[i].kernel,
              s == DLU_OK ? "ok" : dlu_last_error());
        if (s != DLU_OK)
            continue;
        dlu_precision p;
        dlu_precision_default(&p);
        CHECK(dlu_net_set_precision(net, &p, NULL) == DLU_OK, "avgpool kernel %d: fp32 is accepted", cases[i].kernel);
        const char *specs[] = {"dfp8", "dfp16", "w=dfp8,a=dfp16,e=dfp16,g=fp32"};
        for (int k = 0; k < 3; k++) {
            dlu_precision_default(&p);
            CU_ASSERT_FATAL(dlu_precision_parse_format(&p, specs[k]) == DLU_OK);
            dlu_clear_error();
            s = dlu_net_set_precision(net, &p, NULL);
            if (cases[i].ok) {
                CHECK(s == DLU_OK, "avgpool kernel %d (area %d) in %s is accepted", cases[i].kernel,
                      cases[i].kernel * cases[i].kernel, specs[k]);
            } else {
                const char *msg = dlu_last_error();
                CHECK(s == DLU_EUNSUPPORTED, "avgpool kernel %d (area %d) in %s is refused: %s", cases[i].kernel,
                      cases[i].kernel * cases[i].kernel, specs[k], dlu_strerror(s));
                CHECK(strstr(msg, "avg_odd") != NULL && strstr(msg, "power of two") != NULL &&
                          strstr(msg, "avgpool-test.net") != NULL,
                      "avgpool kernel %d in %s: the message names the file, the layer and the rule: \"%s\"",
                      cases[i].kernel, specs[k], msg);
            }
        }
        dlu_net_free(net);
    }
}

/* ------------------------------------------------------------------------------------ */
/* softmax_xent                                                                         */
/* ------------------------------------------------------------------------------------ */

static void run_xent(int n, int C, dlu_format fa, dlu_format fe, dlu_round re, vkind xk, int ex, uint64_t seed)
{
    dlu__layer l = layer_elem(DLU_OP_SOFTMAX_XENT, C, 1, 1);
    const size_t cnt = (size_t)n * C;
    run_ctx c = {.seed = seed, .step = 11};
    char desc[160], w[480];
    describe(&l, n, desc, sizeof desc);
    snprintf(c.tag, sizeof c.tag, "%s a=%s e=%s/%s x exp %d", desc, dlu_format_name(fa), dlu_format_name(fe),
             dlu_round_name(re), ex);
    rng_seed(seed);
    dlu_tensor *x = tnew(fmt_dtype(fa), n, C), *dx = tnew(fmt_dtype(fe), n, C);
    dlu_tensor *aux = tnew(DLU_DTYPE_F32, n, C), *lab = tnew(DLU_DTYPE_I32, 1, n);
    fill_q(x, xk, ex);
    for (int i = 0; i < n; i++)
        ((int32_t *)hv(lab))[i] = rnd_in(0, C - 1);
    tsite qdx;
    tsite_init(&qdx, "loss.dx", DLU_CLASS_E, fe, re, 58, "overflow");
    void *ws = ws_new(&l, n);
    double loss = -1.0;
    int64_t correct = -1;
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &l, a.n = n, a.x = x, a.aux = aux, a.labels = lab, a.loss = &loss, a.correct = &correct, a.ws = ws;
    a.dx = dx, a.qdx = &qdx.q, a.seed = c.seed, a.step = c.step;
    snprintf(w, sizeof w, "%s: forward", c.tag);
    PUSH(x, dx, aux, lab);
    if (CALL_OK(w, synced(be->vt->forward_dfp[DLU_OP_SOFTMAX_XENT](be, &a)))) {
        PULL(aux);
        float *logits = xmalloc(cnt * sizeof *logits), *prob = xmalloc(cnt * sizeof *prob);
        float *g = xmalloc(cnt * sizeof *g), lm = 0.0f;
        dlu_dequantize(hv(x), cnt, x->exp, fa, logits);
        dlu_softmax_xent(logits, hv(lab), n, C, prob, g, &lm);
        int64_t ok = 0;
        for (int i = 0; i < n; i++) {
            int am = 0;
            for (int k = 1; k < C; k++)
                if (logits[(size_t)i * C + k] > logits[(size_t)i * C + am])
                    am = k;
            ok += am == ((int32_t *)hv(lab))[i];
        }
        snprintf(w, sizeof w, "%s: probabilities", c.tag);
        CMP_F32(w, f32(aux), prob, cnt);
        CHECK(loss == (double)lm, "%s: loss %.9g (expected %.9g = 0x%08" PRIx32 ")", c.tag, loss, (double)lm,
              f32_bits(lm));
        CHECK(correct == ok, "%s: correct %" PRId64 " (expected %" PRId64 ")", c.tag, correct, ok);
        snprintf(w, sizeof w, "%s: backward", c.tag);
        if (CALL_OK(w, synced(be->vt->backward_dfp[DLU_OP_SOFTMAX_XENT](be, &a)))) {
            PULL(dx);
            check_quant(&c, "dlogits", &qdx, g, cnt, hv(dx), dx->exp);
        }
        free(logits), free(prob), free(g);
    }
    ws_free(ws);
    tsite_free(&qdx);
    tfree(x), tfree(dx), tfree(aux), tfree(lab);
}

static void test_softmax_xent(void)
{
    run_xent(4, 10, N8, N8, RS, V_RANDOM, -4, 1300);
    run_xent(32, 10, N8, N16, RS, V_RANDOM, -5, 1301);
    run_xent(7, 3, N16, N8, RN, V_RANDOM, -12, 1302);
    run_xent(16, 10, N16, N16, RS, V_RANDOM, -10, 1303);
    run_xent(5, 1, N8, N8, RS, V_RANDOM, -3, 1304);     /* one class: zero gradient, loss 0 */
    run_xent(6, 10, N8, N8, RS, V_EXTREME, 0, 1305);    /* logits +-127: probabilities 0 and 1 */
    run_xent(6, 10, N16, N16, RN, V_EXTREME, -2, 1306); /* logits +-8191.75 */
    run_xent(9, 4, N8, N16, RS, V_SMALL, -1, 1307);     /* ties in the argmax */
}

/* ------------------------------------------------------------------------------------ */

/* test_dfp [DEVICE]: the kernels of DEVICE (default cpu; tests/test_dfp_dlusim.sh runs it
 * on dlusim:CONFIG.ini, whose DFP GEMMs the SystemC model computes; "cuda" runs them on a
 * GPU). Exit 0 all passed, 1 a failure, 2 CUnit trouble, 77 skipped: DEVICE absent. */
int main(int argc, char **argv)
{
    const char *device = argc > 1 ? argv[1] : "cpu";
    char title[512];
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    dlu_status st = dlu_backend_open(device, &be);
    if (st != DLU_OK) {
        const int absent = st == DLU_ENODEV;
        fprintf(stderr, "test_dfp: %s the %s backend: %s\n", absent ? "SKIP: no device for" : "cannot open", device,
                dlu_last_error());
        CU_cleanup_registry();
        return absent ? 77 : 1;
    }
    snprintf(title, sizeof title, "dfp kernels (%s) vs naive integer reference", device);
    CU_pSuite s = CU_add_suite(title, NULL, NULL);
    if (!s || !CU_add_test(s, "quantize (net input)", test_quantize) ||
        !CU_add_test(s, "linear", test_linear) || !CU_add_test(s, "conv2d", test_conv2d) ||
        !CU_add_test(s, "conv2d, batches of several chunks", test_conv2d_chunks) ||
        !CU_add_test(s, "conv2d, 1 vs 3 threads", test_threads) ||
        !CU_add_test(s, "linear, K > 131071 on the 8-bit path", test_linear_big_k) ||
        !CU_add_test(s, "linear/conv2d, extreme values and saturation", test_dense_extreme) ||
        !CU_add_test(s, "stochastic rounding: seed, step, id", test_stochastic) ||
        !CU_add_test(s, "stochastic rounding: another seed", test_stochastic_seed) ||
        !CU_add_test(s, "relu, flatten", test_relu_flatten) || !CU_add_test(s, "maxpool", test_maxpool) ||
        !CU_add_test(s, "avgpool", test_avgpool) ||
        !CU_add_test(s, "avgpool area must be a power of two", test_avgpool_area) ||
        !CU_add_test(s, "workspace sizes", test_ws_size) ||
        !CU_add_test(s, "softmax_xent", test_softmax_xent)) {
        dlu_backend_close(be);
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    const unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    dlu_backend_close(be);
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
