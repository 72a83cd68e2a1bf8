/* test_ops.c -- CUnit tests of every op in include/dlu/ops.def on the CPU backend.
 *
 * What it checks, calling the kernels through the backend's table (be->vt->forward[op],
 * be->vt->backward[op], sgd_step, adam_step) the way the net does:
 *   - the backward of every op against central finite differences of an independent
 *     double-precision reference forward written here (direct loops: no im2col, no BLAS),
 *     for the scalar loss L = sum(y * r) with random r (softmax_xent: its own loss);
 *   - linear and conv2d forward against naive double loops, within the fp32 error bound;
 *   - maxpool's tie rule (first maximum in row-major window order) and that padded cells
 *     never win; avgpool's divisor k*k with padding counted;
 *   - softmax_xent's loss, probabilities and correct count, also for large logits;
 *   - the SGD and Adam updates bit for bit against the formulas at the top of
 *     libdl/backend/cpu/cpu_backend.c, evaluated here in fp32 in the written order.
 * Every output a kernel must overwrite is filled with NaN before the call, so a kernel
 * that accumulates into it, or skips part of it, fails.
 *
 * With a device argument (test_ops cuda) it checks that device instead, against the cpu:
 * every op forward and backward on both with the same inputs, bit for bit where the
 * contract says so and within a declared tolerance elsewhere (section 7, XTOL), and the
 * optimizer updates bit for bit. It exits 77 (skipped) when the device is absent.
 *
 * What it is not: a test of the net's shape inference and buffers (test_net.c does those).
 *
 * Random values come from GSL's MT19937 with a fixed seed per test, so a failure
 * reproduces; a failing check prints one line naming the case and its first bad index. */
#include <CUnit/Basic.h>
#include <gsl/gsl_rng.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "dlu/backend.h"
#include "dlu/tensor.h"

_Static_assert(DLU_OP_COUNT == 7, "a new op in ops.def needs a recipe in tests/test_ops.c");

/* Tolerances.
 *
 * FD_H, the finite-difference step. The references are linear in each input (linear,
 * conv2d, avgpool, flatten), piecewise linear with every kink kept much farther than FD_H
 * away (relu, maxpool), or smooth (softmax_xent: truncation error O(h^2) ~ 1e-8); double
 * rounding adds ~1e-16 / FD_H. The finite differences are good to ~1e-8 relative.
 *
 * GRAD_RTOL. The kernels' gradients are fp32 sums of at most a few hundred terms here, off
 * by at most K * 2^-24 * sum|terms|, in practice < 1e-5 of the tensor's scale; 1e-3 leaves
 * two orders of magnitude of margin, while a wrong index or a missing term is off by O(1).
 *
 * GRAD_FLOOR. An entry that is near zero by cancellation cannot be matched relatively;
 * each entry's error is measured against max(|fd|, GRAD_FLOOR * max|fd| over the tensor).
 *
 * FWD_EPS. A dot product of K fp32 terms summed in any order (blocked, FMA or not) is
 * within gamma_K * sum|terms| of the exact value, gamma_K = K u / (1 - K u), u = 2^-24.
 * The forward checks allow (K + 1) * 2^-23 * sum|terms| per element (the +1 for the bias,
 * the factor 2 on u covering 1 / (1 - K u)); the double reference's own error is 2^-29
 * times smaller. */
#define FD_H 1e-4
#define GRAD_RTOL 1e-3
#define GRAD_FLOOR 0.1
#define FWD_EPS 0x1p-23

static dlu_backend *be;

/* ------------------------------------------------------------------------------------ */
/* checks and messages                                                                  */
/* ------------------------------------------------------------------------------------ */

/* Record one CUnit assertion named by a printf-style description (CUnit copies it). */
static void check_at(int ok, int line, const char *fmt, ...)
{
    char what[256];
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

/* got (fp32) vs want (double): |got - want| <= tol[i] for every i. */
static int cmp_bound(int line, const char *what, const float *got, const double *want, const double *tol,
                     int64_t n)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= tol[i])) {
            if (first < 0)
                first = i;
            bad++;
        }
    }
    if (bad)
        printf("\n    FAIL %s: first at [%" PRId64 "]: expected %.9g got %.9g (|err| %.3g > tol %.3g); "
               "%" PRId64 " of %" PRId64 " outside\n",
               what, first, want[first], got[first], fabs((double)got[first] - want[first]), tol[first], bad, n);
    check_at(!bad, line, "%s", what);
    return !bad;
}
#define CMP_BOUND(what, got, want, tol, n) cmp_bound(__LINE__, what, got, want, tol, n)

/* An fp32 analytic gradient vs double finite differences (see GRAD_RTOL, GRAD_FLOOR). */
static int cmp_grad(int line, const char *what, const float *got, const double *fd, int64_t n)
{
    double scale = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(fd[i]));
    double *tol = malloc((size_t)(n ? n : 1) * sizeof *tol);
    CU_ASSERT_FATAL(tol != NULL);
    for (int64_t i = 0; i < n; i++)
        tol[i] = GRAD_RTOL * fmax(fabs(fd[i]), GRAD_FLOOR * scale) + 1e-12;
    int ok = cmp_bound(line, what, got, fd, tol, n);
    free(tol);
    return ok;
}
#define CMP_GRAD(what, got, fd, n) cmp_grad(__LINE__, what, got, fd, n)

/* Bit-exact fp32 comparison. */
static int cmp_f32_exact(int line, const char *what, const float *got, const float *want, int64_t n)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (f32_bits(got[i]) != f32_bits(want[i])) {
            if (first < 0)
                first = i;
            bad++;
        }
    if (bad)
        printf("\n    FAIL %s: first difference at [%" PRId64 "]: expected %.9g (0x%08" PRIx32 ") got %.9g "
               "(0x%08" PRIx32 "); %" PRId64 " of %" PRId64 " differ\n",
               what, first, want[first], f32_bits(want[first]), got[first], f32_bits(got[first]), bad, n);
    check_at(!bad, line, "%s", what);
    return !bad;
}
#define CMP_F32_EXACT(what, got, want, n) cmp_f32_exact(__LINE__, what, got, want, n)

static int cmp_i32_exact(int line, const char *what, const int32_t *got, const int32_t *want, int64_t n)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            if (first < 0)
                first = i;
            bad++;
        }
    if (bad)
        printf("\n    FAIL %s: first difference at [%" PRId64 "]: expected %" PRId32 " got %" PRId32
               "; %" PRId64 " of %" PRId64 " differ\n",
               what, first, want[first], got[first], bad, n);
    check_at(!bad, line, "%s", what);
    return !bad;
}
#define CMP_I32_EXACT(what, got, want, n) cmp_i32_exact(__LINE__, what, got, want, n)

/* ------------------------------------------------------------------------------------ */
/* random values                                                                        */
/* ------------------------------------------------------------------------------------ */

static gsl_rng *rng_new(unsigned long seed)
{
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    CU_ASSERT_FATAL(r != NULL);
    gsl_rng_set(r, seed);
    return r;
}

/* Uniform in (-a, a) with a full 24-bit mantissa (gsl_rng_uniform has 32 random bits). */
static float uni(gsl_rng *r, double a) { return (float)(a * (2.0 * gsl_rng_uniform(r) - 1.0)); }

/* Uniform in (-1, 1) times 2^e, e uniform in [-4, 4]: mixed magnitudes for the bounds. */
static float mixed(gsl_rng *r)
{
    return (float)ldexp(2.0 * gsl_rng_uniform(r) - 1.0, (int)gsl_rng_uniform_int(r, 9) - 4);
}

static int irand(gsl_rng *r, int lo, int hi) /* [lo, hi] */
{
    return lo + (int)gsl_rng_uniform_int(r, (unsigned long)(hi - lo + 1));
}

static void *xmalloc(size_t nbytes)
{
    void *p = malloc(nbytes ? nbytes : 1);
    CU_ASSERT_FATAL(p != NULL);
    return p;
}

static double *to_double(const float *f, int64_t n)
{
    double *d = xmalloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

/* ------------------------------------------------------------------------------------ */
/* layers and kernel calls                                                              */
/* ------------------------------------------------------------------------------------ */

static dlu__layer layer_linear(int in, int out, int bias)
{
    dlu__layer l;
    memset(&l, 0, sizeof l);
    l.op = DLU_OP_LINEAR;
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

/* relu, flatten, softmax_xent (C classes: H = W = 1) */
static dlu__layer layer_elem(dlu_op op, int C, int H, int W)
{
    dlu__layer l;
    memset(&l, 0, sizeof l);
    l.op = op;
    l.in_c = C, l.in_h = H, l.in_w = W;
    l.out_c = C, l.out_h = H, l.out_w = W;
    if (op != DLU_OP_RELU)
        l.out_c = C * H * W, l.out_h = 1, l.out_w = 1;
    l.in_size = l.out_size = (int64_t)C * H * W;
    return l;
}

static void describe(const dlu__layer *l, int n, char *buf, size_t size)
{
    switch (l->op) {
    case DLU_OP_LINEAR:
        snprintf(buf, size, "linear n=%d in=%d out=%d bias=%d", n, (int)l->in_size, l->out, l->bias);
        break;
    case DLU_OP_CONV2D:
        snprintf(buf, size, "conv2d n=%d C=%d H=%d W=%d F=%d k=%d s=%d p=%d bias=%d", n, l->in_c, l->in_h,
                 l->in_w, l->filters, l->kernel, l->stride, l->pad, l->bias);
        break;
    case DLU_OP_MAXPOOL:
    case DLU_OP_AVGPOOL:
        snprintf(buf, size, "%s n=%d C=%d H=%d W=%d k=%d s=%d p=%d", dlu_op_name(l->op), n, l->in_c, l->in_h,
                 l->in_w, l->kernel, l->stride, l->pad);
        break;
    default:
        snprintf(buf, size, "%s n=%d C=%d H=%d W=%d", dlu_op_name(l->op), n, l->in_c, l->in_h, l->in_w);
        break;
    }
}

/* The tensors and workspace of one kernel call, shaped as dlu_net_bind makes them. */
typedef struct op_run {
    dlu__layer l;
    int n;
    dlu_tensor *x, *y, *dy, *dx; /* (n, in_size) / (n, out_size) */
    dlu_tensor *w, *dw;          /* linear (out, in); conv2d (F, C, k, k) */
    dlu_tensor *b, *db;          /* (out) or (F) */
    dlu_tensor *aux;             /* maxpool: i32 (n, out_size); softmax_xent: f32 (n, in_size) */
    dlu_tensor *labels;          /* softmax_xent: i32 (n) */
    void *ws;
} op_run;

static dlu_tensor *tnew(dlu_dtype t, int ndim, const int64_t *shape)
{
    dlu_tensor *out = NULL;
    dlu_status s = dlu_tensor_new_on(be, t, ndim, shape, &out);
    if (s != DLU_OK)
        printf("\n    dlu_tensor_new_on: %s\n", dlu_last_error());
    CU_ASSERT_FATAL(s == DLU_OK);
    return out;
}

static float *fp(const dlu_tensor *t) { return dlu_tensor_data(t); }
static int32_t *ip(const dlu_tensor *t) { return dlu_tensor_data(t); }

static void run_init(op_run *R, const dlu__layer *l, int n)
{
    memset(R, 0, sizeof *R);
    R->l = *l;
    R->n = n;
    int64_t xs[2] = {n, l->in_size}, ys[2] = {n, l->out_size};
    R->x = tnew(DLU_DTYPE_F32, 2, xs);
    R->dx = tnew(DLU_DTYPE_F32, 2, xs);
    R->y = tnew(DLU_DTYPE_F32, 2, ys);
    R->dy = tnew(DLU_DTYPE_F32, 2, ys);
    if (dlu_op_nparams(l->op) == 2) {
        int64_t ws[4] = {l->out, l->in_size}, bs[1] = {l->out};
        int nd = 2;
        if (l->op == DLU_OP_CONV2D) {
            ws[0] = l->filters, ws[1] = l->in_c, ws[2] = l->kernel, ws[3] = l->kernel;
            bs[0] = l->filters;
            nd = 4;
        }
        R->w = tnew(DLU_DTYPE_F32, nd, ws);
        R->dw = tnew(DLU_DTYPE_F32, nd, ws);
        if (l->bias) {
            R->b = tnew(DLU_DTYPE_F32, 1, bs);
            R->db = tnew(DLU_DTYPE_F32, 1, bs);
        }
    }
    if (l->op == DLU_OP_MAXPOOL)
        R->aux = tnew(DLU_DTYPE_I32, 2, ys);
    if (l->op == DLU_OP_SOFTMAX_XENT) {
        int64_t ls[1] = {n};
        R->aux = tnew(DLU_DTYPE_F32, 2, xs);
        R->labels = tnew(DLU_DTYPE_I32, 1, ls);
    }
    size_t ws_nbytes = be->vt->ws_nbytes(&R->l, n, 0);
    if (ws_nbytes)
        CU_ASSERT_FATAL(be->vt->alloc(be, ws_nbytes, &R->ws) == DLU_OK);
}

static void run_free(op_run *R)
{
    dlu_tensor *t[] = {R->x, R->y, R->dy, R->dx, R->w, R->dw, R->b, R->db, R->aux, R->labels};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        dlu_tensor_free(t[i]);
    if (R->ws)
        be->vt->free(be, R->ws);
    memset(R, 0, sizeof *R);
}

static void fill_nan(dlu_tensor *t)
{
    if (!t)
        return;
    if (dlu_tensor_dtype(t) == DLU_DTYPE_I32) {
        for (int64_t i = 0; i < dlu_tensor_nelem(t); i++)
            ip(t)[i] = -7;
        return;
    }
    for (int64_t i = 0; i < dlu_tensor_nelem(t); i++)
        fp(t)[i] = NAN;
}

static void run_fwd(op_run *R, double *loss, int64_t *correct)
{
    fill_nan(R->y);
    fill_nan(R->aux);
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &R->l, a.n = R->n, a.x = R->x, a.y = R->y, a.w = R->w, a.b = R->b;
    a.aux = R->aux, a.labels = R->labels, a.loss = loss, a.correct = correct, a.ws = R->ws;
    dlu_status s = be->vt->forward[R->l.op](be, &a);
    CHECK(s == DLU_OK, "%s forward returns DLU_OK", dlu_op_name(R->l.op));
}

/* dy is what the net passes: NULL for the last layer (softmax_xent), R->dy otherwise. */
static void run_bwd(op_run *R, int with_dx)
{
    fill_nan(R->dx);
    fill_nan(R->dw);
    fill_nan(R->db);
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &R->l, a.n = R->n, a.x = R->x, a.y = R->y, a.w = R->w, a.b = R->b;
    a.dy = R->l.op == DLU_OP_SOFTMAX_XENT ? NULL : R->dy;
    a.dx = with_dx ? R->dx : NULL;
    a.dw = R->dw, a.db = R->db, a.aux = R->aux, a.labels = R->labels, a.ws = R->ws;
    dlu_status s = be->vt->backward[R->l.op](be, &a);
    CHECK(s == DLU_OK, "%s backward returns DLU_OK", dlu_op_name(R->l.op));
}

/* ------------------------------------------------------------------------------------ */
/* double-precision references: direct loops, written from the op definitions           */
/* ------------------------------------------------------------------------------------ */
/* Each writes y (n, out_size) and, where asked, yabs = the sum of |terms| of each output,
 * for the fp32 error bound. */

static void ref_linear(const dlu__layer *l, int n, const double *x, const double *w, const double *b, double *y,
                       double *yabs)
{
    const int64_t in = l->in_size;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < l->out; j++) {
            double s = b ? b[j] : 0.0, sa = b ? fabs(b[j]) : 0.0;
            for (int64_t k = 0; k < in; k++) {
                double t = x[i * in + k] * w[j * in + k]; /* W is (out, in) */
                s += t;
                sa += fabs(t);
            }
            y[(int64_t)i * l->out + j] = s;
            if (yabs)
                yabs[(int64_t)i * l->out + j] = sa;
        }
}

static void ref_conv2d(const dlu__layer *l, int n, const double *x, const double *w, const double *b, double *y,
                       double *yabs)
{
    const int C = l->in_c, H = l->in_h, W = l->in_w, F = l->filters, k = l->kernel;
    const int Ho = l->out_h, Wo = l->out_w;
    for (int i = 0; i < n; i++)
        for (int f = 0; f < F; f++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double s = b ? b[f] : 0.0, sa = b ? fabs(b[f]) : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * l->stride - l->pad + ky, ix = ox * l->stride - l->pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue; /* zero padding */
                                double t = w[(((int64_t)f * C + c) * k + ky) * k + kx] *
                                           x[(((int64_t)i * C + c) * H + iy) * W + ix];
                                s += t;
                                sa += fabs(t);
                            }
                    int64_t o = (((int64_t)i * F + f) * Ho + oy) * Wo + ox;
                    y[o] = s;
                    if (yabs)
                        yabs[o] = sa;
                }
}

/* arg: the winner's index in its input plane; the first maximum in row-major window order
 * (a later cell wins only when strictly greater); padded cells are not candidates. */
static void ref_maxpool(const dlu__layer *l, int n, const double *x, double *y, int32_t *arg)
{
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel;
    for (int64_t pl = 0; pl < (int64_t)n * l->in_c; pl++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int best = -1;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * l->stride - l->pad + ky, ix = ox * l->stride - l->pad + kx;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;
                        if (best < 0 || x[pl * H * W + iy * W + ix] > x[pl * H * W + best])
                            best = iy * W + ix;
                    }
                int64_t o = (pl * Ho + oy) * Wo + ox;
                y[o] = x[pl * H * W + best];
                if (arg)
                    arg[o] = best;
            }
}

static void ref_avgpool(const dlu__layer *l, int n, const double *x, double *y, double *yabs)
{
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel;
    for (int64_t pl = 0; pl < (int64_t)n * l->in_c; pl++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                double s = 0.0, sa = 0.0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * l->stride - l->pad + ky, ix = ox * l->stride - l->pad + kx;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
                            s += x[pl * H * W + iy * W + ix];
                            sa += fabs(x[pl * H * W + iy * W + ix]);
                        }
                    }
                int64_t o = (pl * Ho + oy) * Wo + ox;
                y[o] = s / (k * k); /* padded cells count: divisor k*k always */
                if (yabs)
                    yabs[o] = sa / (k * k);
            }
}

/* Mean over rows of -log softmax(x)[label]; p (n, C) the probabilities; *correct the
 * count of rows whose first maximum is the label. */
static double ref_softmax_xent(int C, int n, const double *x, const int32_t *lab, double *p, int64_t *correct)
{
    double loss = 0.0;
    int64_t ok = 0;
    for (int i = 0; i < n; i++) {
        const double *xi = x + (int64_t)i * C;
        int am = 0;
        for (int c = 1; c < C; c++)
            if (xi[c] > xi[am])
                am = c;
        double s = 0.0;
        for (int c = 0; c < C; c++)
            s += exp(xi[c] - xi[am]);
        loss += log(s) - (xi[lab[i]] - xi[am]);
        if (p)
            for (int c = 0; c < C; c++)
                p[(int64_t)i * C + c] = exp(xi[c] - xi[am]) / s;
        ok += am == lab[i];
    }
    if (correct)
        *correct = ok;
    return loss / n;
}

/* The reference forward of any op; yabs may be NULL (and is left alone for the exact ops). */
static void ref_forward(const dlu__layer *l, int n, const double *x, const double *w, const double *b, double *y,
                        double *yabs)
{
    const int64_t m = (int64_t)n * l->out_size;
    switch (l->op) {
    case DLU_OP_LINEAR:
        ref_linear(l, n, x, w, b, y, yabs);
        break;
    case DLU_OP_CONV2D:
        ref_conv2d(l, n, x, w, b, y, yabs);
        break;
    case DLU_OP_RELU:
        for (int64_t i = 0; i < m; i++)
            y[i] = x[i] > 0.0 ? x[i] : 0.0;
        break;
    case DLU_OP_MAXPOOL:
        ref_maxpool(l, n, x, y, NULL);
        break;
    case DLU_OP_AVGPOOL:
        ref_avgpool(l, n, x, y, yabs);
        break;
    case DLU_OP_FLATTEN:
        memcpy(y, x, (size_t)m * sizeof *y);
        break;
    default:
        CU_FAIL_FATAL("ref_forward: op without a reference");
    }
}

/* The scalar the gradients are of: sum(y * r), or softmax_xent's loss. */
static double ref_loss(const dlu__layer *l, int n, const double *x, const double *w, const double *b,
                       const double *r, const int32_t *lab, double *ytmp)
{
    if (l->op == DLU_OP_SOFTMAX_XENT)
        return ref_softmax_xent((int)l->in_size, n, x, lab, NULL, NULL);
    ref_forward(l, n, x, w, b, ytmp, NULL);
    double L = 0.0;
    for (int64_t i = 0; i < (int64_t)n * l->out_size; i++)
        L += ytmp[i] * r[i];
    return L;
}

/* Central differences of ref_loss with respect to each of the m entries of wrt (one of
 * x, w, b, perturbed in place and restored). */
static void fd_grad(const dlu__layer *l, int n, double *x, double *w, double *b, const double *r,
                    const int32_t *lab, double *ytmp, double *wrt, int64_t m, double *g)
{
    for (int64_t i = 0; i < m; i++) {
        double keep = wrt[i];
        wrt[i] = keep + FD_H;
        double lp = ref_loss(l, n, x, w, b, r, lab, ytmp);
        wrt[i] = keep - FD_H;
        double lm = ref_loss(l, n, x, w, b, r, lab, ytmp);
        wrt[i] = keep;
        g[i] = (lp - lm) / (2.0 * FD_H);
    }
}

/* Number of terms per output, for the forward bound (0: the op is exact). */
static int64_t terms_per_output(const dlu__layer *l)
{
    switch (l->op) {
    case DLU_OP_LINEAR:
        return l->in_size + 1;
    case DLU_OP_CONV2D:
        return (int64_t)l->in_c * l->kernel * l->kernel + 1;
    case DLU_OP_AVGPOOL:
        return (int64_t)l->kernel * l->kernel + 1; /* + the rounded 1/k^2 */
    default:
        return 0;
    }
}

/* Kernel y vs the reference within the fp32 bound (exact for relu, maxpool, flatten). */
static void check_forward(const op_run *R, const char *name)
{
    const dlu__layer *l = &R->l;
    const int64_t nx = (int64_t)R->n * l->in_size, ny = (int64_t)R->n * l->out_size;
    double *x = to_double(fp(R->x), nx);
    double *w = R->w ? to_double(fp(R->w), dlu_tensor_nelem(R->w)) : NULL;
    double *b = R->b ? to_double(fp(R->b), dlu_tensor_nelem(R->b)) : NULL;
    double *y = xmalloc((size_t)ny * sizeof *y), *tol = xmalloc((size_t)ny * sizeof *tol);
    for (int64_t i = 0; i < ny; i++)
        tol[i] = 0.0;
    ref_forward(l, R->n, x, w, b, y, tol);
    const double K = (double)terms_per_output(l);
    for (int64_t i = 0; i < ny; i++)
        tol[i] *= K * FWD_EPS;
    char what[200];
    snprintf(what, sizeof what, "%s: forward y vs double reference", name);
    CMP_BOUND(what, fp(R->y), y, tol, ny);
    free(x), free(w), free(b), free(y), free(tol);
}

/* ------------------------------------------------------------------------------------ */
/* 1. backward of every op vs finite differences                                        */
/* ------------------------------------------------------------------------------------ */

/* Inputs that keep the piecewise-linear ops away from their kinks and ties. */
static void fill_input(gsl_rng *rng, const dlu__layer *l, int n, float *x)
{
    const int64_t nx = (int64_t)n * l->in_size;
    if (l->op == DLU_OP_RELU) {
        /* |x| >= 0.01, 100 FD steps from the kink at 0 */
        for (int64_t i = 0; i < nx; i++)
            x[i] = (float)((gsl_rng_uniform(rng) < 0.5 ? -1.0 : 1.0) * (0.01 + 0.99 * gsl_rng_uniform(rng)));
    } else if (l->op == DLU_OP_MAXPOOL) {
        /* each plane a random permutation of distinct levels 0.01 apart, jittered by up to
         * 0.002: any two cells differ by >= 0.008 = 40 FD steps, so no near-ties */
        const int HW = l->in_h * l->in_w;
        int *perm = xmalloc((size_t)HW * sizeof *perm);
        for (int64_t pl = 0; pl < (int64_t)n * l->in_c; pl++) {
            for (int j = 0; j < HW; j++)
                perm[j] = j;
            for (int j = HW - 1; j > 0; j--) {
                int t = irand(rng, 0, j), v = perm[j];
                perm[j] = perm[t], perm[t] = v;
            }
            for (int j = 0; j < HW; j++)
                x[pl * HW + j] = (float)(0.01 * (perm[j] - HW / 2) + 0.002 * gsl_rng_uniform(rng));
        }
        free(perm);
    } else if (l->op == DLU_OP_SOFTMAX_XENT) {
        for (int64_t i = 0; i < nx; i++)
            x[i] = uni(rng, 3.0);
    } else {
        for (int64_t i = 0; i < nx; i++)
            x[i] = uni(rng, 1.0);
    }
}

static void grad_case(gsl_rng *rng, const dlu__layer *layer, int n)
{
    op_run R;
    char name[160], what[220];
    describe(layer, n, name, sizeof name);
    run_init(&R, layer, n);
    const dlu__layer *l = &R.l;
    const int64_t nx = (int64_t)n * l->in_size, ny = (int64_t)n * l->out_size;
    const int64_t nw = R.w ? dlu_tensor_nelem(R.w) : 0, nb = R.b ? dlu_tensor_nelem(R.b) : 0;

    fill_input(rng, l, n, fp(R.x));
    for (int64_t i = 0; i < nw; i++)
        fp(R.w)[i] = uni(rng, 1.0);
    for (int64_t i = 0; i < nb; i++)
        fp(R.b)[i] = uni(rng, 1.0);
    for (int64_t i = 0; i < ny; i++)
        fp(R.dy)[i] = uni(rng, 1.0); /* r: dL/dy of L = sum(y * r) */
    if (R.labels)
        for (int i = 0; i < n; i++)
            ip(R.labels)[i] = irand(rng, 0, (int)l->in_size - 1);

    double loss = 0.0;
    run_fwd(&R, &loss, NULL);
    if (l->op != DLU_OP_SOFTMAX_XENT)
        check_forward(&R, name);
    run_bwd(&R, 1);

    double *x = to_double(fp(R.x), nx), *r = to_double(fp(R.dy), ny);
    double *w = nw ? to_double(fp(R.w), nw) : NULL, *b = nb ? to_double(fp(R.b), nb) : NULL;
    double *ytmp = xmalloc((size_t)ny * sizeof *ytmp);
    const int32_t *lab = R.labels ? ip(R.labels) : NULL;
    int64_t gmax = nx > nw ? nx : nw;
    double *g = xmalloc((size_t)(gmax > nb ? gmax : nb) * sizeof *g);

    fd_grad(l, n, x, w, b, r, lab, ytmp, x, nx, g);
    snprintf(what, sizeof what, "%s: dx vs finite differences", name);
    CMP_GRAD(what, fp(R.dx), g, nx);
    if (nw) {
        fd_grad(l, n, x, w, b, r, lab, ytmp, w, nw, g);
        snprintf(what, sizeof what, "%s: dw vs finite differences", name);
        CMP_GRAD(what, fp(R.dw), g, nw);
    }
    if (nb) {
        fd_grad(l, n, x, w, b, r, lab, ytmp, b, nb, g);
        snprintf(what, sizeof what, "%s: db vs finite differences", name);
        CMP_GRAD(what, fp(R.db), g, nb);
    }

    /* The first layer gets dx = NULL: dw and db must not change. */
    if (nw) {
        float *dw1 = xmalloc((size_t)nw * sizeof *dw1), *db1 = xmalloc((size_t)(nb ? nb : 1) * sizeof *db1);
        memcpy(dw1, fp(R.dw), (size_t)nw * sizeof *dw1);
        if (nb)
            memcpy(db1, fp(R.db), (size_t)nb * sizeof *db1);
        run_bwd(&R, 0);
        snprintf(what, sizeof what, "%s: dw with dx = NULL is the same", name);
        CMP_F32_EXACT(what, fp(R.dw), dw1, nw);
        if (nb) {
            snprintf(what, sizeof what, "%s: db with dx = NULL is the same", name);
            CMP_F32_EXACT(what, fp(R.db), db1, nb);
        }
        free(dw1), free(db1);
    }
    free(x), free(r), free(w), free(b), free(ytmp), free(g);
    run_free(&R);
}

static void test_kernels_present(void)
{
    for (int op = 0; op < DLU_OP_COUNT; op++) {
        CHECK(be->vt->forward[op] != NULL, "cpu has a forward kernel for %s", dlu_op_name((dlu_op)op));
        CHECK(be->vt->backward[op] != NULL, "cpu has a backward kernel for %s", dlu_op_name((dlu_op)op));
    }
    CHECK(be->vt->sgd_step != NULL && be->vt->adam_step != NULL, "cpu has the optimizer kernels");
}

static void test_grad_linear(void)
{
    gsl_rng *rng = rng_new(101);
    dlu__layer l;
    l = layer_linear(7, 5, 1), grad_case(rng, &l, 3);
    l = layer_linear(13, 1, 1), grad_case(rng, &l, 1);
    l = layer_linear(6, 3, 0), grad_case(rng, &l, 4);
    l = layer_linear(1, 9, 1), grad_case(rng, &l, 2);
    l = layer_linear(64, 10, 1), grad_case(rng, &l, 5);
    gsl_rng_free(rng);
}

static void test_grad_conv2d(void)
{
    static const struct {
        int n, C, H, W, F, k, s, p, bias;
    } c[] = {
        {2, 1, 5, 5, 2, 3, 1, 0, 1}, /* plain */
        {2, 3, 7, 6, 4, 3, 2, 1, 1}, /* stride 2, pad 1, non-square */
        {1, 2, 6, 9, 3, 5, 1, 2, 1}, /* pad 2, 5x5 */
        {2, 2, 8, 5, 3, 2, 2, 0, 0}, /* stride = kernel, no bias */
        {1, 3, 5, 7, 2, 1, 1, 1, 1}, /* 1x1 with pad 1: the border is bias only */
        {3, 2, 9, 7, 2, 4, 3, 2, 1}, /* stride 3, pad 2, even kernel, ragged edge */
        {1, 4, 4, 4, 5, 3, 2, 0, 1}, /* stride 2 leaves the last row and column unread */
        {1, 1, 3, 8, 2, 4, 1, 1, 1}, /* kernel taller than the unpadded input */
        {2, 3, 6, 6, 2, 3, 2, 2, 0}, /* stride 2, pad 2 */
    };
    gsl_rng *rng = rng_new(102);
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        dlu__layer l = layer_window(DLU_OP_CONV2D, c[i].C, c[i].H, c[i].W, c[i].F, c[i].k, c[i].s, c[i].p,
                                    c[i].bias);
        grad_case(rng, &l, c[i].n);
    }
    gsl_rng_free(rng);
}

static void test_grad_relu(void)
{
    gsl_rng *rng = rng_new(103);
    dlu__layer l;
    l = layer_elem(DLU_OP_RELU, 3, 4, 5), grad_case(rng, &l, 2);
    l = layer_elem(DLU_OP_RELU, 17, 1, 1), grad_case(rng, &l, 1);
    gsl_rng_free(rng);
}

static const struct pool_shape {
    int n, C, H, W, k, s, p;
} pool_shapes[] = {
    {2, 2, 6, 6, 2, 2, 0}, /* the usual 2x2/2 */
    {2, 2, 7, 5, 3, 2, 1}, /* overlapping, padded, non-square */
    {1, 1, 5, 8, 3, 1, 1}, /* stride 1, heavy overlap */
    {2, 2, 6, 7, 2, 1, 1}, /* even kernel, pad 1 */
    {1, 2, 9, 10, 4, 3, 2}, /* stride != kernel, pad 2 */
    {1, 3, 5, 5, 3, 3, 0}, /* stride = kernel, ragged edge dropped */
    {3, 1, 4, 6, 1, 2, 0}, /* 1x1, stride 2 */
};

static void test_grad_maxpool(void)
{
    gsl_rng *rng = rng_new(104);
    for (size_t i = 0; i < sizeof pool_shapes / sizeof pool_shapes[0]; i++) {
        const struct pool_shape *s = &pool_shapes[i];
        dlu__layer l = layer_window(DLU_OP_MAXPOOL, s->C, s->H, s->W, 0, s->k, s->s, s->p, 0);
        grad_case(rng, &l, s->n);
    }
    gsl_rng_free(rng);
}

static void test_grad_avgpool(void)
{
    gsl_rng *rng = rng_new(105);
    for (size_t i = 0; i < sizeof pool_shapes / sizeof pool_shapes[0]; i++) {
        const struct pool_shape *s = &pool_shapes[i];
        dlu__layer l = layer_window(DLU_OP_AVGPOOL, s->C, s->H, s->W, 0, s->k, s->s, s->p, 0);
        grad_case(rng, &l, s->n);
    }
    gsl_rng_free(rng);
}

static void test_grad_flatten(void)
{
    gsl_rng *rng = rng_new(106);
    dlu__layer l = layer_elem(DLU_OP_FLATTEN, 3, 4, 2);
    grad_case(rng, &l, 2);
    gsl_rng_free(rng);
}

static void test_grad_softmax_xent(void)
{
    gsl_rng *rng = rng_new(107);
    dlu__layer l;
    l = layer_elem(DLU_OP_SOFTMAX_XENT, 10, 1, 1), grad_case(rng, &l, 4);
    l = layer_elem(DLU_OP_SOFTMAX_XENT, 2, 1, 1), grad_case(rng, &l, 1);
    l = layer_elem(DLU_OP_SOFTMAX_XENT, 7, 1, 1), grad_case(rng, &l, 5);
    gsl_rng_free(rng);
}

/* ------------------------------------------------------------------------------------ */
/* 2, 3. linear and conv2d forward vs naive double loops                                */
/* ------------------------------------------------------------------------------------ */

/* Random mixed-magnitude x, w, b; forward; y within the fp32 bound of the reference. */
static void fwd_case(gsl_rng *rng, const dlu__layer *layer, int n)
{
    op_run R;
    char name[160];
    describe(layer, n, name, sizeof name);
    run_init(&R, layer, n);
    for (int64_t i = 0; i < (int64_t)n * R.l.in_size; i++)
        fp(R.x)[i] = mixed(rng);
    for (int64_t i = 0; R.w && i < dlu_tensor_nelem(R.w); i++)
        fp(R.w)[i] = mixed(rng);
    for (int64_t i = 0; R.b && i < dlu_tensor_nelem(R.b); i++)
        fp(R.b)[i] = mixed(rng);
    run_fwd(&R, NULL, NULL);
    check_forward(&R, name);
    run_free(&R);
}

static void test_fwd_linear(void)
{
    static const int fixed[][4] = {
        /* n, in, out, bias */
        {1, 1, 1, 1},     {1, 784, 10, 1}, {7, 784, 33, 1}, {64, 784, 128, 1}, {3, 17, 1, 0},
        {1, 5, 257, 1},   {13, 129, 31, 0}, {2, 1, 64, 1},  {33, 1000, 3, 1},
    };
    gsl_rng *rng = rng_new(201);
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        dlu__layer l = layer_linear(fixed[i][1], fixed[i][2], fixed[i][3]);
        fwd_case(rng, &l, fixed[i][0]);
    }
    for (int i = 0; i < 12; i++) {
        int n = irand(rng, 1, 40), in = irand(rng, 1, 900), out = irand(rng, 1, 70);
        dlu__layer l = layer_linear(in, out, i & 1);
        fwd_case(rng, &l, n);
    }
    gsl_rng_free(rng);
}

static void test_fwd_conv2d(void)
{
    static const int fixed[][9] = {
        /* n, C, H, W, F, k, s, p, bias */
        {2, 1, 28, 28, 8, 5, 1, 0, 1}, /* MNIST-like first layer */
        {1, 8, 12, 12, 16, 3, 1, 1, 1},
        {1, 3, 5, 4, 2, 1, 1, 2, 1}, /* 1x1, pad 2: two rings of bias only */
        {1, 1, 1, 1, 3, 1, 1, 0, 0}, /* one pixel */
        {2, 2, 11, 6, 3, 3, 2, 0, 0},
    };
    gsl_rng *rng = rng_new(301);
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        const int *f = fixed[i];
        dlu__layer l = layer_window(DLU_OP_CONV2D, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]);
        fwd_case(rng, &l, f[0]);
    }
    for (int i = 0; i < 20; i++) {
        int k = irand(rng, 1, 5), p = irand(rng, 0, 2), H, W;
        do
            H = irand(rng, 1, 14), W = irand(rng, 1, 14);
        while (k > H + 2 * p || k > W + 2 * p);
        dlu__layer l =
            layer_window(DLU_OP_CONV2D, irand(rng, 1, 6), H, W, irand(rng, 1, 8), k, irand(rng, 1, 3), p, i & 1);
        fwd_case(rng, &l, irand(rng, 1, 3));
    }
    gsl_rng_free(rng);
}

/* conv2d backward by direct loops in double, with the sums of |terms| for the bounds:
 * dx += w * dy, dw += x * dy over every (sample, filter, output, c, ky, kx) that reads a
 * real cell, db += dy. */
static void ref_conv2d_bwd(const dlu__layer *l, int n, const double *x, const double *w, const double *dy,
                           double *dx, double *dxa, double *dw, double *dwa, double *db, double *dba)
{
    const int C = l->in_c, H = l->in_h, W = l->in_w, F = l->filters, k = l->kernel;
    const int Ho = l->out_h, Wo = l->out_w;
    const int64_t nx = (int64_t)n * l->in_size, nw = (int64_t)F * C * k * k;
    for (int64_t j = 0; j < nx; j++)
        dx[j] = dxa[j] = 0.0;
    for (int64_t j = 0; j < nw; j++)
        dw[j] = dwa[j] = 0.0;
    for (int f = 0; f < F; f++)
        db[f] = dba[f] = 0.0;
    for (int i = 0; i < n; i++)
        for (int f = 0; f < F; f++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    const double g = dy[(((int64_t)i * F + f) * Ho + oy) * Wo + ox];
                    db[f] += g;
                    dba[f] += fabs(g);
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * l->stride - l->pad + ky, ix = ox * l->stride - l->pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                int64_t xi = (((int64_t)i * C + c) * H + iy) * W + ix;
                                int64_t wi = (((int64_t)f * C + c) * k + ky) * k + kx;
                                dx[xi] += w[wi] * g;
                                dxa[xi] += fabs(w[wi] * g);
                                dw[wi] += x[xi] * g;
                                dwa[wi] += fabs(x[xi] * g);
                            }
                }
}

/* Shapes too large for finite differences: batches whose column matrices do not fit one
 * GEMM, so the kernel has to split the batch (with a short last chunk). Forward, and
 * backward against ref_conv2d_bwd within the fp32 bound; the number of terms per output:
 * dx F*k*k, dw and db n*Ho*Wo (+ n for the partial sums a chunked kernel adds). */
static void conv_big_case(gsl_rng *rng, const dlu__layer *layer, int n)
{
    op_run R;
    char name[160], what[220];
    describe(layer, n, name, sizeof name);
    run_init(&R, layer, n);
    const dlu__layer *l = &R.l;
    const int64_t nx = (int64_t)n * l->in_size, ny = (int64_t)n * l->out_size;
    const int64_t nw = dlu_tensor_nelem(R.w), nb = l->filters;
    for (int64_t i = 0; i < nx; i++)
        fp(R.x)[i] = mixed(rng);
    for (int64_t i = 0; i < nw; i++)
        fp(R.w)[i] = mixed(rng);
    for (int64_t i = 0; R.b && i < nb; i++)
        fp(R.b)[i] = mixed(rng);
    for (int64_t i = 0; i < ny; i++)
        fp(R.dy)[i] = mixed(rng);
    run_fwd(&R, NULL, NULL);
    check_forward(&R, name);
    run_bwd(&R, 1);

    double *x = to_double(fp(R.x), nx), *w = to_double(fp(R.w), nw), *dy = to_double(fp(R.dy), ny);
    double *dx = xmalloc((size_t)nx * sizeof *dx), *dxa = xmalloc((size_t)nx * sizeof *dxa);
    double *dw = xmalloc((size_t)nw * sizeof *dw), *dwa = xmalloc((size_t)nw * sizeof *dwa);
    double db[64], dba[64];
    CU_ASSERT_FATAL(nb <= 64);
    ref_conv2d_bwd(l, n, x, w, dy, dx, dxa, dw, dwa, db, dba);
    const double Kx = (double)l->filters * l->kernel * l->kernel + 1;
    const double Kw = (double)n * l->out_h * l->out_w + n + 1;
    for (int64_t i = 0; i < nx; i++)
        dxa[i] *= Kx * FWD_EPS;
    for (int64_t i = 0; i < nw; i++)
        dwa[i] *= Kw * FWD_EPS;
    for (int64_t i = 0; i < nb; i++)
        dba[i] *= Kw * FWD_EPS;
    snprintf(what, sizeof what, "%s: dx vs direct double loops", name);
    CMP_BOUND(what, fp(R.dx), dx, dxa, nx);
    snprintf(what, sizeof what, "%s: dw vs direct double loops", name);
    CMP_BOUND(what, fp(R.dw), dw, dwa, nw);
    if (R.b) {
        snprintf(what, sizeof what, "%s: db vs direct double loops", name);
        CMP_BOUND(what, fp(R.db), db, dba, nb);
    }
    free(x), free(w), free(dy), free(dx), free(dxa), free(dw), free(dwa);
    run_free(&R);
}

static void test_conv2d_big(void)
{
    static const int big[][9] = {
        /* n, C, H, W, F, k, s, p, bias */
        {7, 16, 28, 28, 8, 5, 1, 2, 1},  /* ~1.2 MiB of columns per sample */
        {5, 32, 30, 31, 6, 3, 1, 1, 0},  /* non-square */
        {2, 128, 32, 32, 4, 3, 1, 1, 1}, /* over 4 MiB per sample: one sample at a time */
        {9, 20, 27, 27, 5, 4, 2, 1, 1},  /* stride 2 */
    };
    gsl_rng *rng = rng_new(302);
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        const int *f = big[i];
        dlu__layer l = layer_window(DLU_OP_CONV2D, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]);
        conv_big_case(rng, &l, f[0]);
    }
    gsl_rng_free(rng);
}

/* The net allocates ws_nbytes(l, max_batch) once and then runs batches of any n <= max_batch,
 * so the size must not shrink as n grows. */
static void test_ws_monotonic(void)
{
    static const int shapes[][8] = {
        /* C, H, W, F, k, s, p */
        {1, 28, 28, 8, 5, 1, 0}, {16, 28, 28, 8, 5, 1, 2}, {128, 32, 32, 4, 3, 1, 1}, {3, 7, 6, 4, 3, 2, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *f = shapes[i];
        dlu__layer l = layer_window(DLU_OP_CONV2D, f[0], f[1], f[2], f[3], f[4], f[5], f[6], 1);
        size_t prev = be->vt->ws_nbytes(&l, 1, 0);
        int bad = 0;
        for (int n = 2; n <= 256 && !bad; n++) {
            size_t now = be->vt->ws_nbytes(&l, n, 0);
            if (now < prev) {
                printf("\n    FAIL conv2d ws_nbytes: n=%d needs %zu bytes, n=%d needs %zu\n", n - 1, prev, n, now);
                bad = 1;
            }
            prev = now;
        }
        char name[160];
        describe(&l, 0, name, sizeof name);
        CHECK(!bad, "%s: ws_nbytes(l, n) non-decreasing in n", name);
    }
}

/* ------------------------------------------------------------------------------------ */
/* 4. pooling: maxpool ties and padding, avgpool divisor                                */
/* ------------------------------------------------------------------------------------ */

/* Hand-derived: a 2x2 plane of equal values, 2x2 windows, stride 1, pad 1 (3x3 windows).
 * Each window's winner is its first real cell in row-major order. */
static void test_maxpool_ties_hand(void)
{
    static const int32_t want_arg[9] = {0, 0, 1, 0, 0, 1, 2, 2, 3};
    static const float want_y[9] = {5, 5, 5, 5, 5, 5, 5, 5, 5};
    static const float want_dx[4] = {1 + 2 + 8 + 16, 4 + 32, 64 + 128, 256};
    dlu__layer l = layer_window(DLU_OP_MAXPOOL, 1, 2, 2, 0, 2, 1, 1, 0);
    op_run R;
    run_init(&R, &l, 1);
    for (int i = 0; i < 4; i++)
        fp(R.x)[i] = 5.0f;
    for (int o = 0; o < 9; o++)
        fp(R.dy)[o] = (float)(1 << o); /* distinct powers of two: each sum says who won */
    run_fwd(&R, NULL, NULL);
    CMP_I32_EXACT("maxpool 2x2 equal values k=2 s=1 p=1: argmax is the first real cell", ip(R.aux), want_arg, 9);
    CMP_F32_EXACT("maxpool 2x2 equal values k=2 s=1 p=1: y", fp(R.y), want_y, 9);
    run_bwd(&R, 1);
    CMP_F32_EXACT("maxpool 2x2 equal values k=2 s=1 p=1: dx sums dy at the winners", fp(R.dx), want_dx, 4);
    run_free(&R);
}

/* Inputs drawn from a few levels (ties everywhere), against the reference tie rule;
 * all-negative levels, so a padded cell read as 0 would win. dy small integers, so the
 * sums in dx are exact and compared bit for bit. */
static void test_maxpool_ties_random(void)
{
    gsl_rng *rng = rng_new(401);
    for (int neg = 0; neg < 2; neg++)
        for (size_t i = 0; i < sizeof pool_shapes / sizeof pool_shapes[0]; i++) {
            const struct pool_shape *s = &pool_shapes[i];
            dlu__layer l = layer_window(DLU_OP_MAXPOOL, s->C, s->H, s->W, 0, s->k, s->s, s->p, 0);
            const int n = s->n, HW = s->H * s->W, HoWo = l.out_h * l.out_w;
            const int64_t nx = (int64_t)n * l.in_size, ny = (int64_t)n * l.out_size;
            char name[160], what[240];
            describe(&l, n, name, sizeof name);
            op_run R;
            run_init(&R, &l, n);
            for (int64_t j = 0; j < nx; j++)
                fp(R.x)[j] = (float)(neg ? -irand(rng, 1, 3) : irand(rng, -1, 1));
            for (int64_t j = 0; j < ny; j++)
                fp(R.dy)[j] = (float)irand(rng, -4, 4);
            run_fwd(&R, NULL, NULL);

            double *x = to_double(fp(R.x), nx), *yd = xmalloc((size_t)ny * sizeof *yd);
            int32_t *arg = xmalloc((size_t)ny * sizeof *arg);
            float *yf = xmalloc((size_t)ny * sizeof *yf), *dxf = xmalloc((size_t)nx * sizeof *dxf);
            ref_maxpool(&l, n, x, yd, arg);
            for (int64_t j = 0; j < ny; j++)
                yf[j] = (float)yd[j];
            for (int64_t j = 0; j < nx; j++)
                dxf[j] = 0.0f;
            for (int64_t j = 0; j < ny; j++)
                dxf[j / HoWo * HW + arg[j]] += fp(R.dy)[j];

            int in_plane = 1;
            for (int64_t j = 0; j < ny; j++)
                in_plane &= ip(R.aux)[j] >= 0 && ip(R.aux)[j] < HW &&
                            fp(R.x)[j / HoWo * HW + ip(R.aux)[j]] == fp(R.y)[j];
            snprintf(what, sizeof what, "%s %s: argmax is a real cell holding y (padding never wins)", name,
                     neg ? "levels -3..-1" : "levels -1..1");
            CHECK(in_plane, "%s", what);
            snprintf(what, sizeof what, "%s %s: argmax = first maximum in window order", name,
                     neg ? "levels -3..-1" : "levels -1..1");
            CMP_I32_EXACT(what, ip(R.aux), arg, ny);
            snprintf(what, sizeof what, "%s %s: y", name, neg ? "levels -3..-1" : "levels -1..1");
            CMP_F32_EXACT(what, fp(R.y), yf, ny);
            run_bwd(&R, 1);
            snprintf(what, sizeof what, "%s %s: dx", name, neg ? "levels -3..-1" : "levels -1..1");
            CMP_F32_EXACT(what, fp(R.dx), dxf, nx);
            free(x), free(yd), free(arg), free(yf), free(dxf);
            run_free(&R);
        }
    gsl_rng_free(rng);
}

/* Hand-derived: on an all-ones input the output is (real cells in the window) / (k*k). */
static void test_avgpool_divisor(void)
{
    /* 3x3, k=3, s=1, p=1: corners see 4 real cells, edges 6, the centre 9 */
    static const double want3[9] = {4 / 9.0, 6 / 9.0, 4 / 9.0, 6 / 9.0, 1.0, 6 / 9.0, 4 / 9.0, 6 / 9.0, 4 / 9.0};
    /* 3x3, k=2, s=2, p=1: windows see 1, 2, 2, 4 real cells; exact in binary */
    static const float want2[4] = {0.25f, 0.5f, 0.5f, 1.0f};
    double tol[9];
    for (int i = 0; i < 9; i++)
        tol[i] = 0x1p-22 * want3[i]; /* two roundings: 1/9 and the product */

    dlu__layer l = layer_window(DLU_OP_AVGPOOL, 1, 3, 3, 0, 3, 1, 1, 0);
    op_run R;
    run_init(&R, &l, 1);
    for (int i = 0; i < 9; i++)
        fp(R.x)[i] = 1.0f;
    run_fwd(&R, NULL, NULL);
    CMP_BOUND("avgpool ones 3x3 k=3 s=1 p=1: real cells / 9", fp(R.y), want3, tol, 9);
    run_free(&R);

    l = layer_window(DLU_OP_AVGPOOL, 1, 3, 3, 0, 2, 2, 1, 0);
    run_init(&R, &l, 1);
    for (int i = 0; i < 9; i++)
        fp(R.x)[i] = 1.0f;
    run_fwd(&R, NULL, NULL);
    CMP_F32_EXACT("avgpool ones 3x3 k=2 s=2 p=1: real cells / 4", fp(R.y), want2, 4);
    /* backward: each cell gets 1/4 from the one window that covers it */
    for (int o = 0; o < 4; o++)
        fp(R.dy)[o] = 1.0f;
    run_bwd(&R, 1);
    static const float want_dx[9] = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    CMP_F32_EXACT("avgpool ones 3x3 k=2 s=2 p=1: dx = dy / 4", fp(R.dx), want_dx, 9);
    run_free(&R);

    gsl_rng *rng = rng_new(402);
    for (size_t i = 0; i < sizeof pool_shapes / sizeof pool_shapes[0]; i++) {
        const struct pool_shape *s = &pool_shapes[i];
        l = layer_window(DLU_OP_AVGPOOL, s->C, s->H, s->W, 0, s->k, s->s, s->p, 0);
        fwd_case(rng, &l, s->n);
    }
    gsl_rng_free(rng);
}

/* ------------------------------------------------------------------------------------ */
/* 5. softmax_xent forward                                                              */
/* ------------------------------------------------------------------------------------ */

/* Bounds for the fp32 kernel: the C exponentials (each within 1 ulp), their sum (C - 1
 * roundings) and a division put each probability within (C + 4) * 2^-23 relative; a row's
 * loss log(sum) - (x_label - max) is within (C + 4) * 2^-23 * (1 + |log sum| + |x_label - max|). */
static void softmax_case(const char *name, int C, int n, const float *xf, const int32_t *lab)
{
    char what[240];
    dlu__layer l = layer_elem(DLU_OP_SOFTMAX_XENT, C, 1, 1);
    op_run R;
    run_init(&R, &l, n);
    const int64_t nx = (int64_t)n * C;
    memcpy(fp(R.x), xf, (size_t)nx * sizeof *xf);
    memcpy(ip(R.labels), lab, (size_t)n * sizeof *lab);
    double loss = NAN;
    int64_t correct = -1;
    run_fwd(&R, &loss, &correct);

    double *x = to_double(xf, nx), *p = xmalloc((size_t)nx * sizeof *p), *tol = xmalloc((size_t)nx * sizeof *tol);
    int64_t want_correct;
    double want_loss = ref_softmax_xent(C, n, x, lab, p, &want_correct);
    const double rel = (C + 4) * FWD_EPS;
    double loss_tol = 0.0;
    for (int i = 0; i < n; i++) {
        const double *xi = x + (int64_t)i * C;
        double m = xi[0], s = 0.0;
        for (int c = 1; c < C; c++)
            m = fmax(m, xi[c]);
        for (int c = 0; c < C; c++)
            s += exp(xi[c] - m);
        loss_tol += rel * (1.0 + fabs(log(s)) + fabs(xi[lab[i]] - m)) / n;
    }
    for (int64_t j = 0; j < nx; j++)
        tol[j] = rel * p[j] + 1e-30;

    snprintf(what, sizeof what, "%s: loss %.9g is finite and within %.3g of %.9g", name, loss, loss_tol, want_loss);
    CHECK(isfinite(loss) && fabs(loss - want_loss) <= loss_tol, "%s", what);
    if (!(isfinite(loss) && fabs(loss - want_loss) <= loss_tol))
        printf("\n    FAIL %s\n", what);
    snprintf(what, sizeof what, "%s: correct %" PRId64 " (expected %" PRId64 ")", name, correct, want_correct);
    CHECK(correct == want_correct, "%s", what);
    if (correct != want_correct)
        printf("\n    FAIL %s\n", what);
    snprintf(what, sizeof what, "%s: probabilities vs double reference", name);
    CMP_BOUND(what, fp(R.aux), p, tol, nx);

    /* dx = (p - onehot) / n, from the same probabilities */
    run_bwd(&R, 1);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            int64_t j = (int64_t)i * C + c;
            p[j] = (p[j] - (c == lab[i])) / n;
            tol[j] = rel * fabs(p[j]) + 2 * rel / n; /* the p - 1 cancels: absolute floor */
        }
    snprintf(what, sizeof what, "%s: dx = (p - onehot) / n", name);
    CMP_BOUND(what, fp(R.dx), p, tol, nx);

    /* loss and correct are optional outputs */
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &R.l, a.n = n, a.x = R.x, a.y = R.y, a.aux = R.aux, a.labels = R.labels;
    CHECK(be->vt->forward[DLU_OP_SOFTMAX_XENT](be, &a) == DLU_OK, "%s: forward with loss = correct = NULL", name);
    free(x), free(p), free(tol);
    run_free(&R);
}

static void test_softmax_xent_fwd(void)
{
    gsl_rng *rng = rng_new(501);
    static const int shapes[][2] = {{10, 37}, {2, 1}, {3, 8}, {100, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int C = shapes[s][0], n = shapes[s][1];
        float *x = xmalloc((size_t)C * n * sizeof *x);
        int32_t *lab = xmalloc((size_t)n * sizeof *lab);
        for (int64_t j = 0; j < (int64_t)C * n; j++)
            x[j] = uni(rng, 4.0);
        for (int i = 0; i < n; i++)
            lab[i] = irand(rng, 0, C - 1);
        /* make about half the rows correct, so the count is not trivially 0 */
        for (int i = 0; i < n; i += 2)
            x[(int64_t)i * C + lab[i]] += 8.0f;
        char name[64];
        snprintf(name, sizeof name, "softmax_xent C=%d n=%d", C, n);
        softmax_case(name, C, n, x, lab);
        free(x), free(lab);
    }
    gsl_rng_free(rng);

    /* Large logits: exp(1000) and exp(89) overflow fp32, exp(-104) underflows. */
    static const float big[] = {1000, 1001, 999, -1000, 1000, 0, 88, 89, 90, -87.5f, -88.7f, -104};
    static const int32_t big_lab[] = {0, 1, 2, 1};
    softmax_case("softmax_xent large logits (1000, 1001, ...)", 3, 4, big, big_lab);
    static const float two[] = {1000, 1001};
    static const int32_t two_lab[] = {0};
    softmax_case("softmax_xent logits (1000, 1001), label 0", 2, 1, two, two_lab);
}

/* ------------------------------------------------------------------------------------ */
/* 6. optimizer updates, bit for bit                                                    */
/* ------------------------------------------------------------------------------------ */
/* The formulas at the top of libdl/backend/cpu/cpu_backend.c, in fp32 (this file is built
 * with -ffp-contract=off), each operation in the order written there, C precedence:
 *   SGD:  g' = g + wd*w;  v = momentum*v + g';  w = w - lr*v
 *   Adam: g' = g + wd*w;  m = b1*m + (1-b1)*g';  v = b2*v + (1-b2)*g'*g';
 *         w = w - lr * (m / bc1) / (sqrtf(v / bc2) + eps), bc = 1 - b^t in double, then float */

#define OPT_N 1037

/* Parameters around 1 and gradients over 20 binades, so the roundings vary. */
static void fill_opt(gsl_rng *rng, float *w, float *g)
{
    for (int i = 0; i < OPT_N; i++) {
        if (w)
            w[i] = (float)ldexp(uni(rng, 1.0), irand(rng, -6, 1));
        g[i] = (float)ldexp(uni(rng, 1.0), irand(rng, -20, 0));
    }
}

static void test_sgd_exact(void)
{
    static const float hp[][3] = {{0.1f, 0.9f, 5e-4f}, {0.01f, 0.0f, 0.0f}, {0.37f, 0.5f, 0.01f}};
    int64_t shape[1] = {OPT_N};
    gsl_rng *rng = rng_new(601);
    for (size_t h = 0; h < sizeof hp / sizeof hp[0]; h++) {
        const float lr = hp[h][0], mom = hp[h][1], wd = hp[h][2];
        dlu_tensor *W = tnew(DLU_DTYPE_F32, 1, shape), *V = tnew(DLU_DTYPE_F32, 1, shape),
                   *G = tnew(DLU_DTYPE_F32, 1, shape);
        float w[OPT_N], v[OPT_N];
        fill_opt(rng, fp(W), fp(G));
        memcpy(w, fp(W), sizeof w);
        memset(v, 0, sizeof v); /* V starts zeroed, as the optimizer allocates it */
        for (int t = 1; t <= 4; t++) {
            if (t > 1)
                fill_opt(rng, NULL, fp(G));
            const float *g = fp(G);
            for (int i = 0; i < OPT_N; i++) {
                float gp = g[i] + wd * w[i];
                v[i] = mom * v[i] + gp;
                w[i] = w[i] - lr * v[i];
            }
            dlu__sgd_args a = {.w = W, .v = V, .g = G, .lr = lr, .momentum = mom, .weight_decay = wd};
            CHECK(be->vt->sgd_step(be, &a) == DLU_OK, "sgd_step returns DLU_OK");
            char what[160];
            snprintf(what, sizeof what, "sgd lr=%g momentum=%g wd=%g step %d: v", lr, mom, wd, t);
            CMP_F32_EXACT(what, fp(V), v, OPT_N);
            snprintf(what, sizeof what, "sgd lr=%g momentum=%g wd=%g step %d: w", lr, mom, wd, t);
            CMP_F32_EXACT(what, fp(W), w, OPT_N);
            memcpy(fp(W), w, sizeof w), memcpy(fp(V), v, sizeof v); /* one failure, not a cascade */
        }
        dlu_tensor_free(W), dlu_tensor_free(V), dlu_tensor_free(G);
    }
    gsl_rng_free(rng);
}

static void test_adam_exact(void)
{
    static const float hp[][5] = {
        /* lr, beta1, beta2, eps, wd */
        {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f},
        {3e-4f, 0.8f, 0.99f, 1e-6f, 1e-2f},
        {0.05f, 0.5f, 0.9f, 1e-3f, 5e-4f},
    };
    int64_t shape[1] = {OPT_N};
    gsl_rng *rng = rng_new(602);
    for (size_t h = 0; h < sizeof hp / sizeof hp[0]; h++) {
        const float lr = hp[h][0], b1 = hp[h][1], b2 = hp[h][2], eps = hp[h][3], wd = hp[h][4];
        dlu_tensor *W = tnew(DLU_DTYPE_F32, 1, shape), *M = tnew(DLU_DTYPE_F32, 1, shape),
                   *V = tnew(DLU_DTYPE_F32, 1, shape), *G = tnew(DLU_DTYPE_F32, 1, shape);
        float w[OPT_N], m[OPT_N], v[OPT_N];
        fill_opt(rng, fp(W), fp(G));
        memcpy(w, fp(W), sizeof w);
        memset(m, 0, sizeof m), memset(v, 0, sizeof v);
        for (int t = 1; t <= 4; t++) {
            if (t > 1)
                fill_opt(rng, NULL, fp(G));
            const float *g = fp(G);
            const float bc1 = (float)(1.0 - pow((double)b1, (double)t));
            const float bc2 = (float)(1.0 - pow((double)b2, (double)t));
            for (int i = 0; i < OPT_N; i++) {
                float gp = g[i] + wd * w[i];
                m[i] = b1 * m[i] + (1.0f - b1) * gp;
                v[i] = b2 * v[i] + (1.0f - b2) * (gp * gp);
                w[i] = w[i] - lr * ((m[i] / bc1) / (sqrtf(v[i] / bc2) + eps));
            }
            dlu__adam_args a = {.w = W, .m = M, .v = V, .g = G, .lr = lr, .beta1 = b1, .beta2 = b2,
                                .eps = eps, .weight_decay = wd, .bc1 = bc1, .bc2 = bc2};
            CHECK(be->vt->adam_step(be, &a) == DLU_OK, "adam_step returns DLU_OK");
            char what[160];
            snprintf(what, sizeof what, "adam lr=%g b1=%g b2=%g eps=%g wd=%g step %d: m", lr, b1, b2, eps, wd, t);
            CMP_F32_EXACT(what, fp(M), m, OPT_N);
            snprintf(what, sizeof what, "adam lr=%g b1=%g b2=%g eps=%g wd=%g step %d: v", lr, b1, b2, eps, wd, t);
            CMP_F32_EXACT(what, fp(V), v, OPT_N);
            snprintf(what, sizeof what, "adam lr=%g b1=%g b2=%g eps=%g wd=%g step %d: w", lr, b1, b2, eps, wd, t);
            CMP_F32_EXACT(what, fp(W), w, OPT_N);
            memcpy(fp(W), w, sizeof w), memcpy(fp(M), m, sizeof m), memcpy(fp(V), v, sizeof v);
        }
        dlu_tensor_free(W), dlu_tensor_free(M), dlu_tensor_free(V), dlu_tensor_free(G);
    }
    gsl_rng_free(rng);
}

/* ------------------------------------------------------------------------------------ */
/* 7. test_ops DEVICE: every op on DEVICE against the cpu, with the same inputs          */
/* ------------------------------------------------------------------------------------ */
/* DEVICE's memory need not be host-visible (cuda): its tensors are filled and read with
 * dlu_tensor_write/dlu_tensor_read only, and the backend is synced after every kernel call
 * (the sync is also what delivers softmax_xent's loss and correct count). The cpu run uses
 * the op_run helpers above (be is the cpu).
 *
 * Exact (bit for bit, NaN payloads included): relu, maxpool (y, argmax, dx), flatten,
 * softmax_xent (probabilities, the loss as a double, the correct count, dx), the optimizer
 * updates. Within XTOL: linear, conv2d, avgpool (y, dx, dW, db).
 *
 * XTOL. Per element |dev - cpu| <= XTOL * S, S the sum of the absolute values of the terms
 * of that output (products, bias, window cells; in double from the inputs). The two
 * backends add the same fp32 terms in different orders (cuBLAS's tiles, OpenBLAS's blocks,
 * with or without FMA). The worst-case bound, gamma_K * S with gamma_K ~ K * 2^-24, is far
 * too loose to catch anything at large K; but the rounding errors of terms with random
 * signs add up like a random walk, and relative to S they do not grow with K. A plain
 * sequential fp32 sum -- the least accurate order a GEMM can take -- differs from OpenBLAS
 * on these very cases by at most 1.1e-6 S (measured; the mixed magnitudes 2^-4..2^4 let the
 * largest products dominate), so XTOL = 1e-5 leaves a factor of 9 over it; cuBLAS's blocked
 * sums with FMA are more accurate still. A real bug -- a missing, doubled or misplaced term,
 * a wrong stride, a chunk summed twice or not at all -- moves outputs by whole terms, on
 * average S / K, and with K <= 20,480 here that is at least 4.9e-5 S, five times XTOL at the
 * largest K and thousands of times at the usual ones. S = 0 (an output that reads padding
 * only, without bias) demands exact zeros. */
#define XTOL 1e-5

static dlu_backend *dev;        /* the backend under test; be is the cpu */
static const char *dev_name;

static dlu_tensor *dnew_like(const dlu_tensor *t)
{
    if (!t)
        return NULL;
    int64_t shape[DLU_MAX_DIMS];
    const int nd = dlu_tensor_ndim(t);
    for (int i = 0; i < nd; i++)
        shape[i] = dlu_tensor_dim(t, i);
    dlu_tensor *out = NULL;
    dlu_status s = dlu_tensor_new_on(dev, dlu_tensor_dtype(t), nd, shape, &out);
    if (s != DLU_OK)
        printf("\n    dlu_tensor_new_on(%s): %s\n", dev_name, dlu_last_error());
    CU_ASSERT_FATAL(s == DLU_OK);
    return out;
}

static void dput(dlu_tensor *d, const void *host)
{
    if (!d)
        return;
    dlu_status s = dlu_tensor_write(d, host, dlu_tensor_nbytes(d));
    if (s != DLU_OK) {
        printf("\n    dlu_tensor_write(%s): %s\n", dev_name, dlu_last_error());
        CU_FAIL_FATAL("tensor upload");
    }
}

static void dget(const dlu_tensor *d, void *host)
{
    dlu_status s = dlu_tensor_read(d, host, dlu_tensor_nbytes(d));
    if (s != DLU_OK) {
        printf("\n    dlu_tensor_read(%s): %s\n", dev_name, dlu_last_error());
        CU_FAIL_FATAL("tensor download");
    }
}

/* A host copy of a device tensor (caller frees). */
static void *dcopy(const dlu_tensor *d)
{
    void *h = xmalloc(dlu_tensor_nbytes(d));
    dget(d, h);
    return h;
}

/* Fill a device tensor with a pattern: fp32 words `bits` (a NaN by default), int32 -7. */
static void dput_pattern(dlu_tensor *d, uint32_t bits)
{
    if (!d)
        return;
    const int64_t n = dlu_tensor_nelem(d);
    uint32_t *h = xmalloc((size_t)n * sizeof *h);
    for (int64_t i = 0; i < n; i++)
        h[i] = dlu_tensor_dtype(d) == DLU_DTYPE_I32 ? (uint32_t)-7 : bits;
    dput(d, h);
    free(h);
}
#define GARBAGE 0x7FC0DEADu  /* a quiet NaN no kernel produces */
#define SENTINEL 0x7FA5A5A5u /* another: what an untouched output still holds */

/* The kernel through DEVICE's table, then the sync that completes it. */
static dlu_status dev_call(dlu__kernel_fn fn, const dlu__op_args *a)
{
    if (!fn)
        return DLU_EUNSUPPORTED;
    dlu_status s = fn(dev, a);
    return s == DLU_OK ? dlu_backend_sync(dev) : s;
}

typedef struct xrun {
    op_run c;                                      /* the cpu's tensors and workspace */
    dlu_tensor *x, *y, *dy, *dx, *w, *dw, *b, *db; /* DEVICE's, same shapes */
    dlu_tensor *aux, *labels;
    void *ws;
} xrun;

static void xrun_init(xrun *R, const dlu__layer *l, int n)
{
    memset(R, 0, sizeof *R);
    run_init(&R->c, l, n);
    R->x = dnew_like(R->c.x), R->y = dnew_like(R->c.y), R->dy = dnew_like(R->c.dy), R->dx = dnew_like(R->c.dx);
    R->w = dnew_like(R->c.w), R->dw = dnew_like(R->c.dw), R->b = dnew_like(R->c.b), R->db = dnew_like(R->c.db);
    R->aux = dnew_like(R->c.aux), R->labels = dnew_like(R->c.labels);
    const size_t ws = dev->vt->ws_nbytes(l, n, 0);
    if (ws)
        CU_ASSERT_FATAL(dev->vt->alloc(dev, ws, &R->ws) == DLU_OK);
}

static void xrun_free(xrun *R)
{
    dlu_tensor *t[] = {R->x, R->y, R->dy, R->dx, R->w, R->dw, R->b, R->db, R->aux, R->labels};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        dlu_tensor_free(t[i]);
    if (R->ws)
        dev->vt->free(dev, R->ws);
    run_free(&R->c);
    memset(R, 0, sizeof *R);
}

/* The cpu's inputs (x, w, b, dy, labels) onto DEVICE. */
static void xrun_upload(xrun *R)
{
    dput(R->x, fp(R->c.x)), dput(R->dy, fp(R->c.dy));
    if (R->w)
        dput(R->w, fp(R->c.w));
    if (R->b)
        dput(R->b, fp(R->c.b));
    if (R->labels)
        dput(R->labels, ip(R->c.labels));
}

static dlu_status dev_fwd(xrun *R, double *loss, int64_t *correct)
{
    dput_pattern(R->y, GARBAGE);
    dput_pattern(R->aux, GARBAGE);
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &R->c.l, a.n = R->c.n, a.x = R->x, a.y = R->y, a.w = R->w, a.b = R->b;
    a.aux = R->aux, a.labels = R->labels, a.loss = loss, a.correct = correct, a.ws = R->ws;
    return dev_call(dev->vt->forward[R->c.l.op], &a);
}

static dlu_status dev_bwd(xrun *R, int with_dx)
{
    dput_pattern(R->dw, GARBAGE);
    dput_pattern(R->db, GARBAGE);
    if (with_dx)
        dput_pattern(R->dx, GARBAGE);
    dlu__op_args a;
    memset(&a, 0, sizeof a);
    a.l = &R->c.l, a.n = R->c.n, a.x = R->x, a.y = R->y, a.w = R->w, a.b = R->b;
    a.dy = R->c.l.op == DLU_OP_SOFTMAX_XENT ? NULL : R->dy;
    a.dx = with_dx ? R->dx : NULL;
    a.dw = R->dw, a.db = R->db, a.aux = R->aux, a.labels = R->labels, a.ws = R->ws;
    return dev_call(dev->vt->backward[R->c.l.op], &a);
}

/* DEVICE's got vs the cpu's want: |got - want| <= XTOL * S[i]. */
static int cmp_xtol(int line, const char *what, const float *got, const float *want, const double *S, int64_t n)
{
    int64_t bad = 0, first = -1;
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - (double)want[i]);
        if (!(err <= XTOL * S[i])) {
            if (first < 0)
                first = i;
            bad++;
        } else if (S[i] > 0.0) {
            worst = fmax(worst, err / S[i]);
        }
    }
    if (bad)
        printf("\n    FAIL %s: first at [%" PRId64 "]: cpu %.9g, %s %.9g (|diff| %.3g > %g * S = %.3g); %" PRId64
               " of %" PRId64 " outside\n",
               what, first, want[first], dev_name, got[first], fabs((double)got[first] - want[first]), XTOL,
               XTOL * S[first], bad, n);
    check_at(!bad, line, "%s (largest |diff| / S %.2g)", what, worst);
    return !bad;
}
#define CMP_XTOL(what, got, want, S, n) cmp_xtol(__LINE__, what, got, want, S, n)

static int op_exact(dlu_op op)
{
    return op == DLU_OP_RELU || op == DLU_OP_MAXPOOL || op == DLU_OP_FLATTEN || op == DLU_OP_SOFTMAX_XENT;
}

/* Sums of |terms| of the backward outputs of linear and avgpool (conv2d: ref_conv2d_bwd). */
static void abs_linear_bwd(const dlu__layer *l, int n, const double *x, const double *w, const double *dy,
                           double *dxa, double *dwa, double *dba)
{
    const int64_t in = l->in_size, out = l->out;
    for (int64_t i = 0; i < n * in; i++)
        dxa[i] = 0.0;
    for (int64_t i = 0; i < out * in; i++)
        dwa[i] = 0.0;
    for (int64_t j = 0; j < out; j++)
        dba[j] = 0.0;
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < out; j++) {
            const double g = fabs(dy[i * out + j]);
            dba[j] += g;
            for (int64_t k = 0; k < in; k++) {
                dxa[i * in + k] += g * fabs(w[j * in + k]);
                dwa[j * in + k] += g * fabs(x[i * in + k]);
            }
        }
}

static void abs_avgpool_bwd(const dlu__layer *l, int n, const double *dy, double *dxa)
{
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel;
    for (int64_t i = 0; i < (int64_t)n * l->in_size; i++)
        dxa[i] = 0.0;
    for (int64_t pl = 0; pl < (int64_t)n * l->in_c; pl++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++)
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * l->stride - l->pad + ky, ix = ox * l->stride - l->pad + kx;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                            dxa[pl * H * W + iy * W + ix] += fabs(dy[(pl * Ho + oy) * Wo + ox]) / (k * k);
                    }
}

/* Special fp32 values the exact ops must pass through unchanged (relu maps NaN to 0). */
static float special(gsl_rng *r)
{
    static const uint32_t sp[] = {0x7FC00000u, 0xFFC00001u, 0x7F800000u, 0xFF800000u, 0x80000000u,
                                  0x00000000u, 0x00000001u, 0x807FFFFFu, 0x7F7FFFFFu};
    float f;
    memcpy(&f, &sp[gsl_rng_uniform_int(r, sizeof sp / sizeof sp[0])], sizeof f);
    return f;
}

/* The inputs of a cross-check: mixed magnitudes; the exact ops also get special values
 * (relu, flatten) or ties from a few levels and some -Inf (maxpool); softmax_xent logits
 * in (-4, 4), half the rows made correct, one row in 16 with a NaN or +Inf. */
static void xfill(gsl_rng *rng, xrun *R)
{
    const dlu__layer *l = &R->c.l;
    const int n = R->c.n;
    const int64_t nx = (int64_t)n * l->in_size, ny = (int64_t)n * l->out_size;
    float *x = fp(R->c.x);
    for (int64_t i = 0; i < nx; i++) {
        switch (l->op) {
        case DLU_OP_RELU:
        case DLU_OP_FLATTEN:
            x[i] = gsl_rng_uniform(rng) < 0.05 ? special(rng) : mixed(rng);
            break;
        case DLU_OP_MAXPOOL:
            x[i] = gsl_rng_uniform(rng) < 0.02 ? -INFINITY : (float)(0.5 * irand(rng, -3, 3));
            break;
        case DLU_OP_SOFTMAX_XENT:
            x[i] = uni(rng, 4.0);
            break;
        default:
            x[i] = mixed(rng);
        }
    }
    if (l->op == DLU_OP_SOFTMAX_XENT) {
        const int C = (int)l->in_size;
        for (int i = 0; i < n; i++) {
            ip(R->c.labels)[i] = irand(rng, 0, C - 1);
            if (i % 2 == 0)
                x[(int64_t)i * C + ip(R->c.labels)[i]] += 8.0f;
            if (i % 16 == 5)
                x[(int64_t)i * C + irand(rng, 0, C - 1)] = i % 32 == 5 ? NAN : INFINITY;
        }
    }
    for (int64_t i = 0; R->c.w && i < dlu_tensor_nelem(R->c.w); i++)
        fp(R->c.w)[i] = mixed(rng);
    for (int64_t i = 0; R->c.b && i < dlu_tensor_nelem(R->c.b); i++)
        fp(R->c.b)[i] = mixed(rng);
    for (int64_t i = 0; i < ny; i++)
        fp(R->c.dy)[i] = mixed(rng);
    xrun_upload(R);
}

/* One layer forward and backward on the cpu and on DEVICE with the same inputs; DEVICE's
 * outputs against the cpu's (exact or within XTOL), the same bits when DEVICE runs again,
 * and with dx = NULL: dx untouched, dW and db the same. */
static void xcase(gsl_rng *rng, const dlu__layer *layer, int n)
{
    xrun R;
    char name[160], what[240];
    describe(layer, n, name, sizeof name);
    xrun_init(&R, layer, n);
    const dlu__layer *l = &R.c.l;
    const dlu_op op = l->op;
    const int64_t nx = (int64_t)n * l->in_size, ny = (int64_t)n * l->out_size;
    const int64_t nw = R.w ? dlu_tensor_nelem(R.w) : 0, nb = R.b ? dlu_tensor_nelem(R.b) : 0;
    xfill(rng, &R);

    /* forward */
    double loss_c = NAN, loss_d = NAN;
    int64_t corr_c = -1, corr_d = -1;
    run_fwd(&R.c, &loss_c, &corr_c);
    dlu_status s = dev_fwd(&R, &loss_d, &corr_d);
    if (s != DLU_OK)
        printf("\n    FAIL %s: %s forward: %s: %s\n", name, dev_name, dlu_strerror(s), dlu_last_error());
    CHECK(s == DLU_OK, "%s: %s forward returns DLU_OK", name, dev_name);
    if (s != DLU_OK) {
        xrun_free(&R);
        return;
    }
    /* the output to run twice: y, or softmax_xent's probabilities (it writes no y) */
    dlu_tensor *out = op == DLU_OP_SOFTMAX_XENT ? R.aux : R.y;
    const int64_t nout = op == DLU_OP_SOFTMAX_XENT ? nx : ny;
    float *y = dcopy(out);
    if (op == DLU_OP_SOFTMAX_XENT) {
        snprintf(what, sizeof what, "%s: %s probabilities = cpu probabilities, bit for bit", name, dev_name);
        CMP_F32_EXACT(what, y, fp(R.c.aux), nx);
        CHECK(memcmp(&loss_d, &loss_c, sizeof loss_c) == 0, "%s: %s loss %.9g = cpu loss %.9g, bit for bit", name,
              dev_name, loss_d, loss_c);
        CHECK(corr_d == corr_c, "%s: %s correct %" PRId64 " = cpu correct %" PRId64, name, dev_name, corr_d, corr_c);
    } else if (op_exact(op)) {
        snprintf(what, sizeof what, "%s: %s y = cpu y, bit for bit", name, dev_name);
        CMP_F32_EXACT(what, y, fp(R.c.y), ny);
    } else {
        double *xd = to_double(fp(R.c.x), nx), *wd = nw ? to_double(fp(R.c.w), nw) : NULL;
        double *bd = nb ? to_double(fp(R.c.b), nb) : NULL;
        double *yr = xmalloc((size_t)ny * sizeof *yr), *S = xmalloc((size_t)ny * sizeof *S);
        ref_forward(l, n, xd, wd, bd, yr, S);
        snprintf(what, sizeof what, "%s: %s y vs cpu within %g * sum|terms|", name, dev_name, XTOL);
        CMP_XTOL(what, y, fp(R.c.y), S, ny);
        free(xd), free(wd), free(bd), free(yr), free(S);
    }
    if (op == DLU_OP_MAXPOOL) {
        int32_t *arg = dcopy(R.aux);
        snprintf(what, sizeof what, "%s: %s argmax = cpu argmax", name, dev_name);
        CMP_I32_EXACT(what, arg, ip(R.c.aux), ny);
        free(arg);
    }
    /* again: the same bits (no order that depends on timing) */
    s = dev_fwd(&R, NULL, NULL);
    CHECK(s == DLU_OK, "%s: %s forward again (loss, correct NULL) returns DLU_OK", name, dev_name);
    float *y2 = dcopy(out);
    snprintf(what, sizeof what, "%s: %s forward twice, the same bits", name, dev_name);
    CMP_F32_EXACT(what, y2, y, nout);
    free(y), free(y2);

    /* backward */
    run_bwd(&R.c, 1);
    s = dev_bwd(&R, 1);
    if (s != DLU_OK)
        printf("\n    FAIL %s: %s backward: %s: %s\n", name, dev_name, dlu_strerror(s), dlu_last_error());
    CHECK(s == DLU_OK, "%s: %s backward returns DLU_OK", name, dev_name);
    if (s != DLU_OK) {
        xrun_free(&R);
        return;
    }
    float *dx = dcopy(R.dx), *dw = nw ? dcopy(R.dw) : NULL, *db = nb ? dcopy(R.db) : NULL;
    if (op_exact(op)) {
        snprintf(what, sizeof what, "%s: %s dx = cpu dx, bit for bit", name, dev_name);
        CMP_F32_EXACT(what, dx, fp(R.c.dx), nx);
    } else {
        double *xd = to_double(fp(R.c.x), nx), *dyd = to_double(fp(R.c.dy), ny);
        double *wd = nw ? to_double(fp(R.c.w), nw) : NULL;
        double *Sx = xmalloc((size_t)nx * sizeof *Sx), *Sw = xmalloc((size_t)(nw ? nw : 1) * sizeof *Sw);
        double *Sb = xmalloc((size_t)l->out_c * sizeof *Sb); /* every output channel's, bias or not */
        if (op == DLU_OP_LINEAR) {
            abs_linear_bwd(l, n, xd, wd, dyd, Sx, Sw, Sb);
        } else if (op == DLU_OP_CONV2D) {
            const int64_t F = l->filters;
            double *rdx = xmalloc((size_t)nx * sizeof *rdx), *rdw = xmalloc((size_t)nw * sizeof *rdw);
            double *rdb = xmalloc((size_t)F * sizeof *rdb), *Sf = xmalloc((size_t)F * sizeof *Sf);
            ref_conv2d_bwd(l, n, xd, wd, dyd, rdx, Sx, rdw, Sw, rdb, Sf);
            for (int64_t f = 0; f < nb; f++)
                Sb[f] = Sf[f];
            free(rdx), free(rdw), free(rdb), free(Sf);
        } else {
            abs_avgpool_bwd(l, n, dyd, Sx);
        }
        snprintf(what, sizeof what, "%s: %s dx vs cpu within %g * sum|terms|", name, dev_name, XTOL);
        CMP_XTOL(what, dx, fp(R.c.dx), Sx, nx);
        if (nw) {
            snprintf(what, sizeof what, "%s: %s dw vs cpu within %g * sum|terms|", name, dev_name, XTOL);
            CMP_XTOL(what, dw, fp(R.c.dw), Sw, nw);
        }
        if (nb) {
            snprintf(what, sizeof what, "%s: %s db vs cpu within %g * sum|terms|", name, dev_name, XTOL);
            CMP_XTOL(what, db, fp(R.c.db), Sb, nb);
        }
        free(xd), free(dyd), free(wd), free(Sx), free(Sw), free(Sb);
    }

    /* dx = NULL (the first layer; softmax_xent is always last): dx untouched, dW and db the
     * same bits */
    if (op != DLU_OP_SOFTMAX_XENT) {
        dput_pattern(R.dx, SENTINEL);
        s = dev_bwd(&R, 0);
        CHECK(s == DLU_OK, "%s: %s backward with dx = NULL returns DLU_OK", name, dev_name);
        float *dx2 = dcopy(R.dx);
        int64_t touched = 0;
        for (int64_t i = 0; i < nx; i++)
            touched += f32_bits(dx2[i]) != SENTINEL;
        CHECK(touched == 0, "%s: %s backward with dx = NULL leaves dx alone (%" PRId64 " of %" PRId64 " written)",
              name, dev_name, touched, nx);
        free(dx2);
        if (nw) {
            float *dw2 = dcopy(R.dw);
            snprintf(what, sizeof what, "%s: %s dw with dx = NULL, the same bits", name, dev_name);
            CMP_F32_EXACT(what, dw2, dw, nw);
            free(dw2);
        }
        if (nb) {
            float *db2 = dcopy(R.db);
            snprintf(what, sizeof what, "%s: %s db with dx = NULL, the same bits", name, dev_name);
            CMP_F32_EXACT(what, db2, db, nb);
            free(db2);
        }
    }
    free(dx), free(dw), free(db);
    xrun_free(&R);
}

static void test_x_kernels_present(void)
{
    for (int op = 0; op < DLU_OP_COUNT; op++) {
        CHECK(dev->vt->forward[op] != NULL, "%s has a forward kernel for %s", dev_name, dlu_op_name((dlu_op)op));
        CHECK(dev->vt->backward[op] != NULL, "%s has a backward kernel for %s", dev_name, dlu_op_name((dlu_op)op));
    }
    CHECK(dev->vt->sgd_step != NULL && dev->vt->adam_step != NULL, "%s has the optimizer kernels", dev_name);
}

static void test_x_linear(void)
{
    static const int c[][4] = {
        /* n, in, out, bias */
        {1, 1, 1, 1},    {1, 784, 10, 1}, {3, 17, 5, 0},    {7, 784, 33, 1}, {64, 784, 128, 1},
        {128, 256, 10, 1}, {33, 1000, 3, 1}, {2, 1, 64, 0}, {5, 3136, 256, 1},
    };
    gsl_rng *rng = rng_new(701);
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        dlu__layer l = layer_linear(c[i][1], c[i][2], c[i][3]);
        xcase(rng, &l, c[i][0]);
    }
    gsl_rng_free(rng);
}

static void test_x_conv2d(void)
{
    static const int c[][9] = {
        /* n, C, H, W, F, k, s, p, bias */
        {2, 1, 5, 5, 2, 3, 1, 0, 1},      {2, 3, 7, 6, 4, 3, 2, 1, 1},    {1, 2, 6, 9, 3, 5, 1, 2, 1},
        {2, 2, 8, 5, 3, 2, 2, 0, 0},      {1, 3, 5, 7, 2, 1, 1, 1, 1},    {3, 2, 9, 7, 2, 4, 3, 2, 1},
        {1, 4, 4, 4, 5, 3, 2, 0, 1},      {1, 1, 3, 8, 2, 4, 1, 1, 1},    {2, 3, 6, 6, 2, 3, 2, 2, 0},
        {1, 1, 1, 1, 3, 1, 1, 0, 0},      {1, 3, 5, 4, 2, 1, 1, 2, 1}, /* border of bias only */
        {16, 1, 28, 28, 32, 5, 1, 2, 1}, /* cnn.net conv1 */
        {8, 32, 14, 14, 64, 5, 1, 2, 1}, /* cnn.net conv2 */
        {1, 3, 64, 64, 8, 3, 2, 1, 1},    {9, 20, 27, 27, 5, 4, 2, 1, 1},
        {20, 128, 32, 32, 4, 3, 1, 1, 1}, /* ~4.7 MB of columns per sample: several chunks anywhere */
    };
    gsl_rng *rng = rng_new(702);
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        const int *f = c[i];
        dlu__layer l = layer_window(DLU_OP_CONV2D, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]);
        xcase(rng, &l, f[0]);
    }
    gsl_rng_free(rng);
}

/* The net binds ws_nbytes(l, max_batch) once and runs any n <= max_batch. */
static void test_x_ws_monotonic(void)
{
    static const int shapes[][7] = {
        /* C, H, W, F, k, s, p */
        {1, 28, 28, 32, 5, 1, 2}, {32, 14, 14, 64, 5, 1, 2}, {128, 32, 32, 4, 3, 1, 1}, {3, 7, 6, 4, 3, 2, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *f = shapes[i];
        dlu__layer l = layer_window(DLU_OP_CONV2D, f[0], f[1], f[2], f[3], f[4], f[5], f[6], 1);
        size_t prev = dev->vt->ws_nbytes(&l, 1, 0);
        int bad = 0;
        for (int n = 2; n <= 512 && !bad; n++) {
            size_t now = dev->vt->ws_nbytes(&l, n, 0);
            if (now < prev) {
                printf("\n    FAIL %s conv2d ws_nbytes: n=%d needs %zu bytes, n=%d needs %zu\n", dev_name, n - 1, prev,
                       n, now);
                bad = 1;
            }
            prev = now;
        }
        char name[160];
        describe(&l, 0, name, sizeof name);
        CHECK(!bad, "%s: %s ws_nbytes(l, n) non-decreasing in n", name, dev_name);
    }
}

static void test_x_relu_flatten(void)
{
    gsl_rng *rng = rng_new(703);
    dlu__layer l;
    l = layer_elem(DLU_OP_RELU, 3, 4, 5), xcase(rng, &l, 2);
    l = layer_elem(DLU_OP_RELU, 17, 1, 1), xcase(rng, &l, 1);
    l = layer_elem(DLU_OP_RELU, 32, 28, 28), xcase(rng, &l, 16);
    l = layer_elem(DLU_OP_FLATTEN, 3, 4, 2), xcase(rng, &l, 2);
    l = layer_elem(DLU_OP_FLATTEN, 1, 1, 7), xcase(rng, &l, 1);
    l = layer_elem(DLU_OP_FLATTEN, 64, 7, 7), xcase(rng, &l, 16);
    gsl_rng_free(rng);
}

static void xpool(dlu_op op, unsigned long seed)
{
    static const struct pool_shape big[] = {
        {16, 32, 28, 28, 2, 2, 0}, /* cnn.net pool1 */
        {1, 3, 33, 31, 3, 2, 1},
        {4, 8, 15, 15, 5, 3, 2},
    };
    gsl_rng *rng = rng_new(seed);
    for (int set = 0; set < 2; set++) {
        const struct pool_shape *ps = set ? big : pool_shapes;
        const size_t cnt = set ? sizeof big / sizeof big[0] : sizeof pool_shapes / sizeof pool_shapes[0];
        for (size_t i = 0; i < cnt; i++) {
            dlu__layer l = layer_window(op, ps[i].C, ps[i].H, ps[i].W, 0, ps[i].k, ps[i].s, ps[i].p, 0);
            xcase(rng, &l, ps[i].n);
        }
    }
    gsl_rng_free(rng);
}

static void test_x_maxpool(void) { xpool(DLU_OP_MAXPOOL, 704); }
static void test_x_avgpool(void) { xpool(DLU_OP_AVGPOOL, 705); }

static void test_x_softmax_xent(void)
{
    static const int c[][2] = {/* C, n */ {10, 37}, {2, 1}, {3, 8}, {100, 5}, {10, 128}, {1000, 4}, {1, 5}};
    gsl_rng *rng = rng_new(706);
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        dlu__layer l = layer_elem(DLU_OP_SOFTMAX_XENT, c[i][0], 1, 1);
        xcase(rng, &l, c[i][1]);
    }
    gsl_rng_free(rng);
}

/* sgd_step and adam_step, four steps each, the same bits as the cpu's (both implement the
 * formulas of cpu_backend.c in the written order, without FMA contraction). */
static void test_x_optim(void)
{
    static const float hp[][5] = {
        /* lr, momentum or beta1, beta2, eps, wd */
        {0.1f, 0.9f, 0.999f, 1e-8f, 5e-4f},
        {0.01f, 0.0f, 0.99f, 1e-6f, 0.0f},
        {0.37f, 0.5f, 0.9f, 1e-3f, 0.01f},
    };
    int64_t shape[1] = {OPT_N};
    gsl_rng *rng = rng_new(707);
    if (!dev->vt->sgd_step || !dev->vt->adam_step) {
        CHECK(0, "%s has the optimizer kernels", dev_name);
        gsl_rng_free(rng);
        return;
    }
    for (int adam = 0; adam < 2; adam++)
        for (size_t h = 0; h < sizeof hp / sizeof hp[0]; h++) {
            dlu_tensor *T[4], *D[4]; /* w, g, and the state: v (sgd) or m, v (adam) */
            for (int i = 0; i < 4; i++) {
                T[i] = tnew(DLU_DTYPE_F32, 1, shape);
                D[i] = dnew_like(T[i]);
            }
            fill_opt(rng, fp(T[0]), fp(T[1]));
            dput(D[0], fp(T[0]));
            for (int t = 1; t <= 4; t++) {
                if (t > 1)
                    fill_opt(rng, NULL, fp(T[1]));
                dput(D[1], fp(T[1]));
                dlu_status sc, sd;
                if (adam) {
                    const float b1 = hp[h][1], b2 = hp[h][2];
                    dlu__adam_args a = {.w = T[0], .m = T[2], .v = T[3], .g = T[1], .lr = hp[h][0], .beta1 = b1,
                                        .beta2 = b2, .eps = hp[h][3], .weight_decay = hp[h][4],
                                        .bc1 = (float)(1.0 - pow((double)b1, (double)t)),
                                        .bc2 = (float)(1.0 - pow((double)b2, (double)t))};
                    sc = be->vt->adam_step(be, &a);
                    a.w = D[0], a.m = D[2], a.v = D[3], a.g = D[1];
                    sd = dev->vt->adam_step(dev, &a);
                } else {
                    dlu__sgd_args a = {.w = T[0], .v = T[2], .g = T[1], .lr = hp[h][0], .momentum = hp[h][1],
                                       .weight_decay = hp[h][4]};
                    sc = be->vt->sgd_step(be, &a);
                    a.w = D[0], a.v = D[2], a.g = D[1];
                    sd = dev->vt->sgd_step(dev, &a);
                }
                if (sd == DLU_OK)
                    sd = dlu_backend_sync(dev);
                CHECK(sc == DLU_OK && sd == DLU_OK, "%s step returns DLU_OK on cpu and %s", adam ? "adam" : "sgd",
                      dev_name);
                static const char *const names[4] = {"w", "g", "v", "v"};
                for (int i = 0; i < 4; i++) {
                    if (i == 1 || (!adam && i == 3))
                        continue;
                    float *got = dcopy(D[i]);
                    char what[200];
                    snprintf(what, sizeof what, "%s lr=%g hp=%g,%g wd=%g step %d: %s %s = cpu, bit for bit",
                             adam ? "adam" : "sgd", hp[h][0], hp[h][1], hp[h][2], hp[h][4], t, dev_name,
                             adam && i == 2 ? "m" : names[i]);
                    CMP_F32_EXACT(what, got, fp(T[i]), OPT_N);
                    dput(D[i], fp(T[i])); /* one failure, not a cascade */
                    free(got);
                }
            }
            for (int i = 0; i < 4; i++)
                dlu_tensor_free(T[i]), dlu_tensor_free(D[i]);
        }
    gsl_rng_free(rng);
}

/* ------------------------------------------------------------------------------------ */

static int suite_init(void)
{
    if (dlu_backend_open("cpu", &be) != DLU_OK) {
        fprintf(stderr, "dlu_backend_open(\"cpu\"): %s\n", dlu_last_error());
        return 1;
    }
    return 0;
}

static int suite_clean(void)
{
    dlu_backend_close(be);
    be = NULL;
    return 0;
}

/* test_ops: the cpu suite. test_ops DEVICE: DEVICE against the cpu (section 7).
 * Exit 0 all passed, 1 a failure, 77 skipped: DEVICE absent (DLU_ENODEV). */
int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"every op has cpu kernels", test_kernels_present},
        {"linear backward vs finite differences", test_grad_linear},
        {"conv2d backward vs finite differences", test_grad_conv2d},
        {"relu backward vs finite differences", test_grad_relu},
        {"maxpool backward vs finite differences", test_grad_maxpool},
        {"avgpool backward vs finite differences", test_grad_avgpool},
        {"flatten backward vs finite differences", test_grad_flatten},
        {"softmax_xent backward vs finite differences", test_grad_softmax_xent},
        {"linear forward vs naive double loop", test_fwd_linear},
        {"conv2d forward vs direct double convolution", test_fwd_conv2d},
        {"conv2d forward and backward, multi-chunk batches", test_conv2d_big},
        {"conv2d workspace size non-decreasing in n", test_ws_monotonic},
        {"maxpool ties: hand-derived", test_maxpool_ties_hand},
        {"maxpool ties and padding: random levels", test_maxpool_ties_random},
        {"avgpool divisor k*k with padding", test_avgpool_divisor},
        {"softmax_xent forward: loss, probabilities, correct", test_softmax_xent_fwd},
        {"sgd_step bit-exact vs contract", test_sgd_exact},
        {"adam_step bit-exact vs contract", test_adam_exact},
    };
    static const struct {
        const char *name;
        void (*fn)(void);
    } xtests[] = {
        {"DEVICE has a kernel for every op and the optimizers", test_x_kernels_present},
        {"linear: DEVICE vs cpu", test_x_linear},
        {"conv2d: DEVICE vs cpu (stride, padding, batch 1, several chunks)", test_x_conv2d},
        {"conv2d workspace size on DEVICE non-decreasing in n", test_x_ws_monotonic},
        {"relu, flatten: DEVICE = cpu bit for bit", test_x_relu_flatten},
        {"maxpool: DEVICE = cpu bit for bit (y, argmax, dx)", test_x_maxpool},
        {"avgpool: DEVICE vs cpu", test_x_avgpool},
        {"softmax_xent: DEVICE = cpu bit for bit (probabilities, loss, correct, dx)", test_x_softmax_xent},
        {"sgd_step, adam_step: DEVICE = cpu bit for bit", test_x_optim},
    };
    if (argc > 1) {
        dev_name = argv[1];
        dlu_status st = dlu_backend_open(dev_name, &dev);
        if (st != DLU_OK) {
            fprintf(stderr, "test_ops: %s the %s backend: %s\n", st == DLU_ENODEV ? "SKIP: no device for" : "cannot open",
                    dev_name, dlu_last_error());
            return st == DLU_ENODEV ? 77 : 1;
        }
    }
    if (CU_initialize_registry() != CUE_SUCCESS) {
        dlu_backend_close(dev);
        return 1;
    }
    char title[300];
    snprintf(title, sizeof title, "ops (%s vs cpu)", dev_name ? dev_name : "");
    CU_pSuite s = CU_add_suite(dev ? title : "ops (cpu)", suite_init, suite_clean);
    int ok = s != NULL;
    for (size_t i = 0; ok && !dev && i < sizeof tests / sizeof tests[0]; i++)
        ok = CU_add_test(s, tests[i].name, tests[i].fn) != NULL;
    for (size_t i = 0; ok && dev && i < sizeof xtests / sizeof xtests[0]; i++) {
        char name[200], *d;
        snprintf(name, sizeof name, "%s", xtests[i].name);
        while ((d = strstr(name, "DEVICE")) != NULL) { /* CUnit keeps its own copy of the name */
            char rest[200];
            snprintf(rest, sizeof rest, "%s", d + 6);
            snprintf(d, sizeof name - (size_t)(d - name), "%s%s", dev_name, rest);
        }
        ok = CU_add_test(s, name, xtests[i].fn) != NULL;
    }
    if (!ok) {
        CU_cleanup_registry();
        dlu_backend_close(dev);
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                     CU_get_number_of_suites_failed();
    int err = CU_get_error() != CUE_SUCCESS;
    CU_cleanup_registry();
    dlu_backend_close(dev);
    return fails || err ? 1 : 0;
}
