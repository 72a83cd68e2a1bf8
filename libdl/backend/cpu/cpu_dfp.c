/* cpu_dfp.c -- dynamic fixed point kernels of the CPU backend: the reference every other
 * backend must match bit for bit (contract: docs/numerics.md).
 *
 * Tensors between layers are integers (i8 for dfp8, i16 for dfp16) with one exponent
 * each (dlu_tensor.exp). Linear and conv2d multiply integers exactly (int32 accumulators
 * for dfp8 x dfp8, int64 otherwise; igemm.c), add the fp32 bias quantized to the
 * accumulator's scale, and requantize the full-width result to the output's format; the
 * statistics of every produced tensor are taken in the same pass (numerics.h). Weights
 * are quantized from the fp32 master copy at the start of each forward; weight and bias
 * gradients are requantized to class G (or converted exactly to fp32 with g=fp32) and
 * handed to the fp32 optimizer as fp32 values.
 *
 * Element order: every requantization uses the stochastic-rounding stream index of the
 * element's position in its row-major tensor, so results do not depend on chunking or
 * threads. Exponents come from the site's scaling policy (dlu__site_exp); relu, maxpool
 * and flatten keep their input's exponent.
 *
 * Not here: exponent policies (scale.c), fp32 kernels (cpu_dense.c, cpu_misc.c). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpu.h"
#include "cpu_quant.h"
#include "error.h"
#include "igemm.h"

/* ---- workspace arena ------------------------------------------------------------------- */

typedef struct arena {
    uint8_t *p;
    size_t left;
} arena;

static void *take(arena *a, size_t nbytes)
{
    size_t n = (nbytes + 63) & ~(size_t)63;
    if (n > a->left)
        return NULL; /* ws_nbytes() is wrong: a programmer error, reported by the caller */
    void *r = a->p;
    a->p += n;
    a->left -= n;
    return r;
}

#define TAKE(ar, var, count)                                                                                 \
    do {                                                                                                     \
        (var) = take((ar), (size_t)(count) * sizeof *(var));                                                 \
        if (!(var))                                                                                          \
            return dlu__error(DLU_EINTERNAL, "cpu dfp: workspace too small (%s:%d)", __FILE__, __LINE__); \
    } while (0)

/* ---- typed integer helpers ------------------------------------------------------------- */

static int wide(const dlu_tensor *t) { return t->dtype == DLU_DTYPE_I16; }

static inline int32_t qld(const void *p, int w, size_t i)
{
    return w ? ((const int16_t *)p)[i] : ((const int8_t *)p)[i];
}

/* dst (cols, rows) = src (rows, cols)^T for an i8 or i16 matrix, in 32 x 32 tiles so that
 * both sides stay in cache. */
#define QTRANSPOSE(T)                                                                            \
    static void qtranspose_##T(const T *s, int rows, int cols, T *d)                             \
    {                                                                                            \
        for (int r0 = 0; r0 < rows; r0 += 32)                                                    \
            for (int c0 = 0; c0 < cols; c0 += 32) {                                              \
                const int r1 = r0 + 32 < rows ? r0 + 32 : rows, c1 = c0 + 32 < cols ? c0 + 32 : cols; \
                for (int r = r0; r < r1; r++)                                                    \
                    for (int c = c0; c < c1; c++)                                                \
                        d[(size_t)c * rows + r] = s[(size_t)r * cols + c];                       \
            }                                                                                    \
    }
QTRANSPOSE(int8_t)
QTRANSPOSE(int16_t)

static void qtranspose(const void *src, int w, int rows, int cols, void *dst)
{
    if (w)
        qtranspose_int16_t(src, rows, cols, dst);
    else
        qtranspose_int8_t(src, rows, cols, dst);
}

/* sum[j] += m[i][j] over the rows of an i8 or i16 matrix (rows, cols), exact in int64. */
static void qcolsum(const void *m, int w, size_t rows, size_t cols, int64_t *sum)
{
    for (size_t i = 0; i < rows; i++) {
        if (w) {
            const int16_t *r = (const int16_t *)m + i * cols;
            for (size_t j = 0; j < cols; j++)
                sum[j] += r[j];
        } else {
            const int8_t *r = (const int8_t *)m + i * cols;
            for (size_t j = 0; j < cols; j++)
                sum[j] += r[j];
        }
    }
}

/* Scratch one qgemm_nt call needs, in bytes. */
static size_t qgemm_scratch(size_t M, size_t N, size_t K)
{
    return M * N * (4 + 8) + (M + N) * K * 2 + 3 * 64;
}

/* C (M, N) = A (M, K) * B (N, K)^T exactly, as int64; `acc` adds into C instead. A and B
 * are i8 or i16 (wa, wb). Both 8-bit with K <= 131071: the int8 path (int32 accumulators,
 * exact, see igemm.h); otherwise both are widened to i16 and multiplied in int64. */
static dlu_status qgemm_nt(int M, int N, int K, const void *A, int wa, const void *B, int wb, int64_t *C, int acc,
                           arena ar)
{
    const size_t mn = (size_t)M * N;
    if (!wa && !wb && K <= 131071) {
        int32_t *c32;
        TAKE(&ar, c32, mn);
        DLU__TRY(dlu__igemm_s8_nt(M, N, K, A, K, B, K, c32, N));
        if (acc)
            for (size_t i = 0; i < mn; i++)
                C[i] += c32[i];
        else
            for (size_t i = 0; i < mn; i++)
                C[i] = c32[i];
        return DLU_OK;
    }
    const int16_t *a16 = A, *b16 = B;
    if (!wa) {
        int16_t *t;
        TAKE(&ar, t, (size_t)M * K);
        for (size_t i = 0; i < (size_t)M * K; i++)
            t[i] = ((const int8_t *)A)[i];
        a16 = t;
    }
    if (!wb) {
        int16_t *t;
        TAKE(&ar, t, (size_t)N * K);
        for (size_t i = 0; i < (size_t)N * K; i++)
            t[i] = ((const int8_t *)B)[i];
        b16 = t;
    }
    if (!acc)
        return dlu__igemm_s16_nt(M, N, K, a16, K, b16, K, C, N);
    int64_t *c64;
    TAKE(&ar, c64, mn);
    DLU__TRY(dlu__igemm_s16_nt(M, N, K, a16, K, b16, K, c64, N));
    for (size_t i = 0; i < mn; i++)
        C[i] += c64[i];
    return DLU_OK;
}

/* ---- element-wise quantization on both cores --------------------------------------------- */

/* The fast quantizers (cpu_quant.c) over [0, n) split into contiguous parts, one task each
 * on the GEMM thread pool. Every element keeps its global index in the stochastic-rounding
 * stream, and the parts' statistics are summed, so the result is the same bits as one
 * call, whatever the thread count. Small tensors run in one call. */
#define PAR_PARTS 8
#define PAR_MIN (1 << 20) /* below this, waking the pool costs more than it saves (measured) */

typedef struct par_q {
    const void *src;     /* float or int64 */
    int is_f32;
    size_t n, part;
    int ea, eo;          /* acc: exponents; f32: eo is the exponent */
    dlu_format fmt;
    dlu_round mode;
    uint64_t seed;
    uint32_t id, step;
    void *out;
    dlu_stats st[PAR_PARTS];
    dlu_status rc[PAR_PARTS];
} par_q;

static void par_q_task(void *ctx, int t)
{
    par_q *p = ctx;
    const size_t lo = (size_t)t * p->part, hi = lo + p->part < p->n ? lo + p->part : p->n;
    uint8_t *out = (uint8_t *)p->out + lo * dlu_format_nbytes(p->fmt);
    dlu_stats_clear(&p->st[t]);
    p->rc[t] = p->is_f32 ? dlu__cpu_quantize_f32((const float *)p->src + lo, hi - lo, p->eo, p->fmt, p->mode, p->seed,
                                                 p->id, p->step, lo, out, &p->st[t])
                         : dlu__cpu_requantize_acc64((const int64_t *)p->src + lo, hi - lo, p->ea, p->eo, p->fmt,
                                                     p->mode, p->seed, p->id, p->step, lo, out, &p->st[t]);
}

static dlu_status par_quant(const void *src, int is_f32, size_t n, int ea, int eo, dlu_format fmt, dlu_round mode,
                            uint64_t seed, uint32_t id, uint32_t step, void *out, dlu_stats *st)
{
    int parts = dlu__cpu_pool_threads();
    if (parts > PAR_PARTS)
        parts = PAR_PARTS;
    if (n < PAR_MIN || parts < 2)
        return is_f32 ? dlu__cpu_quantize_f32(src, n, eo, fmt, mode, seed, id, step, 0, out, st)
                      : dlu__cpu_requantize_acc64(src, n, ea, eo, fmt, mode, seed, id, step, 0, out, st);
    par_q p = {.src = src, .is_f32 = is_f32, .n = n, .ea = ea, .eo = eo, .fmt = fmt, .mode = mode, .seed = seed,
               .id = id, .step = step, .out = out};
    p.part = ((n + (size_t)parts - 1) / (size_t)parts + 255) & ~(size_t)255; /* whole 256-element blocks */
    parts = (int)((n + p.part - 1) / p.part);
    dlu__cpu_parallel_for(parts, par_q_task, &p);
    for (int t = 0; t < parts; t++) {
        if (p.rc[t] != DLU_OK)
            return p.rc[t];
        if (st)
            dlu_stats_merge(st, &p.st[t]);
    }
    return DLU_OK;
}

/* ---- producing a site's tensor --------------------------------------------------------- */

/* Requantize n exact accumulators (exponent ea) into out at the site's exponent. On the
 * site's first production the exponent is calibrated from these values' statistics. */
static dlu_status requant_site(dlu__qsite *q, const int64_t *acc, size_t n, int ea, dlu_tensor *out, uint64_t seed,
                               uint32_t step)
{
    dlu_stats pre;
    const dlu_stats *prep = NULL;
    if (q->scale && !dlu_scale_calibrated(q->scale)) {
        dlu_stats_clear(&pre);
        DLU__TRY(par_quant(acc, 0, n, ea, ea, q->fmt, DLU_ROUND_NEAREST, 0, 0, 0, out->data, &pre));
        prep = &pre;
    }
    const int eo = q->scale ? dlu__site_exp(q, prep) : ea;
    dlu_stats_clear(&q->stats);
    DLU__TRY(par_quant(acc, 0, n, ea, eo, q->fmt, q->round, seed, q->id, step, out->data, &q->stats));
    q->exp = eo;
    out->exp = eo;
    return DLU_OK;
}

/* Quantize n fp32 values into out at the site's exponent (calibrating on first use). */
static dlu_status quant_site(dlu__qsite *q, const float *x, size_t n, dlu_tensor *out, uint64_t seed, uint32_t step)
{
    dlu_stats pre;
    const dlu_stats *prep = NULL;
    if (q->scale && !dlu_scale_calibrated(q->scale)) {
        dlu_stats_clear(&pre);
        DLU__TRY(par_quant(x, 1, n, 0, 0, q->fmt, DLU_ROUND_NEAREST, 0, 0, 0, out->data, &pre));
        prep = &pre;
    }
    const int e = dlu__site_exp(q, prep);
    dlu_stats_clear(&q->stats);
    DLU__TRY(par_quant(x, 1, n, 0, e, q->fmt, q->round, seed, q->id, step, out->data, &q->stats));
    out->exp = e;
    return DLU_OK;
}

/* Statistics of an integer tensor whose exponent is inherited (relu, maxpool, flatten):
 * recorded as a requantization to the same exponent, which leaves every value alone. */
static void stats_inherit(dlu__qsite *q, const dlu_tensor *t, size_t n)
{
    dlu_stats_clear(&q->stats);
    dlu__cpu_stats_q(t->data, n, t->exp, wide(t) ? DLU_FMT_DFP16 : DLU_FMT_DFP8, &q->stats);
    q->exp = t->exp;
}

/* A weight or bias gradient: requantize the exact accumulator to class G and hand the
 * optimizer its fp32 value, or (g=fp32) convert the accumulator exactly rounded. */
static dlu_status grad_site(dlu__qsite *q, const int64_t *acc, size_t n, int ea, float *g, uint64_t seed,
                            uint32_t step, arena ar)
{
    if (!dlu_format_is_dfp(q->fmt)) {
        dlu_stats_clear(&q->stats);
        dlu__cpu_stats_acc64(acc, n, ea, &q->stats); /* histogram only */
        for (size_t i = 0; i < n; i++)
            g[i] = dlu_acc_to_f32(acc[i], ea);
        q->exp = ea;
        return DLU_OK;
    }
    int16_t *tmp;
    TAKE(&ar, tmp, n);
    dlu_tensor t = {.dtype = q->fmt == DLU_FMT_DFP8 ? DLU_DTYPE_I8 : DLU_DTYPE_I16, .data = tmp};
    DLU__TRY(requant_site(q, acc, n, ea, &t, seed, step));
    if (t.exp < -126 || t.exp > 127)
        return dlu_dequantize(tmp, n, t.exp, q->fmt, g);
    /* In this exponent range dlu_dfp_dequantize is one exact multiply by 2^e: the same
     * bits, in a loop the compiler vectorises. */
    const float scale = dlu_dfp_dequantize(1, t.exp);
    if (t.dtype == DLU_DTYPE_I8)
        for (size_t i = 0; i < n; i++)
            g[i] = (float)((const int8_t *)tmp)[i] * scale;
    else
        for (size_t i = 0; i < n; i++)
            g[i] = (float)tmp[i] * scale;
    return DLU_OK;
}

/* ---- quantize (net input) -------------------------------------------------------------- */

dlu_status dlu__cpu_quantize(dlu_backend *be, const dlu_tensor *src, size_t n, dlu_tensor *dst, dlu__qsite *site,
                             uint64_t seed, uint32_t step)
{
    return quant_site(site, CF32(src), n, dst, seed, step);
}

/* ---- linear ---------------------------------------------------------------------------- */

static size_t max3(size_t a, size_t b, size_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

/* Workspace of linear, forward and backward: the accumulators, the transposed operands,
 * the G staging buffer, and the scratch of the largest of its three GEMMs
 * (n, out, in), (n, in, out), (out, in, n). */
static size_t linear_ws(const dlu__layer *l, size_t n)
{
    const size_t in = (size_t)l->in_size, out = (size_t)l->out;
    return max3(n * in, out * in, n * out) * 8 + out * 8 + (out * in + n * out + n * in) * 2 + out * in * 2 +
           max3(qgemm_scratch(n, out, in), qgemm_scratch(n, in, out), qgemm_scratch(out, in, n)) + 16 * 64;
}

dlu_status dlu__cpu_linear_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    arena ar = {a->ws, linear_ws(l, (size_t)n)};
    DLU__TRY(quant_site(a->qw, CF32(a->w), (size_t)out * in, a->wq, a->seed, a->step));
    int64_t *acc;
    TAKE(&ar, acc, (size_t)n * out);
    DLU__TRY(qgemm_nt(n, out, in, a->x->data, wide(a->x), a->wq->data, wide(a->wq), acc, 0, ar));
    const int ea = a->x->exp + a->wq->exp;
    if (a->b) {
        const float *b = CF32(a->b);
        int64_t *bacc;
        TAKE(&ar, bacc, out);
        for (int j = 0; j < out; j++)
            bacc[j] = dlu_bias_to_acc(b[j], ea);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < out; j++)
                acc[(size_t)i * out + j] = dlu_add_sat_i64(acc[(size_t)i * out + j], bacc[j]);
    }
    return requant_site(a->qy, acc, (size_t)n * out, ea, a->y, a->seed, a->step);
}

dlu_status dlu__cpu_linear_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    arena ar = {a->ws, linear_ws(l, (size_t)n)};
    const dlu_tensor *dy = a->dy, *x = a->x, *wq = a->wq;
    int64_t *acc;
    TAKE(&ar, acc, (size_t)(n > out ? n : out) * in);
    if (a->dx) {
        /* dx (n, in) = dy (n, out) * wq (out, in): B^T = wq^T (in, out) */
        void *wqt;
        wqt = take(&ar, (size_t)out * in * 2);
        if (!wqt)
            return dlu__error(DLU_EINTERNAL, "cpu dfp: workspace too small");
        qtranspose(wq->data, wide(wq), out, in, wqt);
        DLU__TRY(qgemm_nt(n, in, out, dy->data, wide(dy), wqt, wide(wq), acc, 0, ar));
        DLU__TRY(requant_site(a->qdx, acc, (size_t)n * in, dy->exp + wq->exp, a->dx, a->seed, a->step));
    }
    /* dW (out, in) = dy^T (out, n) * x (n, in): A = dy^T, B^T = x^T (in, n) */
    void *dyt = take(&ar, (size_t)n * out * 2), *xt = take(&ar, (size_t)n * in * 2);
    if (!dyt || !xt)
        return dlu__error(DLU_EINTERNAL, "cpu dfp: workspace too small");
    qtranspose(dy->data, wide(dy), n, out, dyt);
    qtranspose(x->data, wide(x), n, in, xt);
    DLU__TRY(qgemm_nt(out, in, n, dyt, wide(dy), xt, wide(x), acc, 0, ar));
    DLU__TRY(grad_site(a->qdw, acc, (size_t)out * in, dy->exp + x->exp, F32(a->dw), a->seed, a->step, ar));
    if (a->db) {
        int64_t *bacc;
        TAKE(&ar, bacc, out);
        memset(bacc, 0, (size_t)out * sizeof *bacc);
        qcolsum(dy->data, wide(dy), (size_t)n, (size_t)out, bacc);
        DLU__TRY(grad_site(a->qdb, bacc, (size_t)out, dy->exp, F32(a->db), a->seed, a->step, ar));
    }
    return DLU_OK;
}

/* ---- conv2d ---------------------------------------------------------------------------- */

/* Samples per GEMM chunk: the chunk's columns G*Ho*Wo are the K of the weight-gradient
 * GEMM, kept <= 131071 so that dfp8 stays on the int32 path, and the unfolded input under
 * about 8 MiB. */
static int qconv_chunk(const dlu__layer *l, int n)
{
    size_t hw = (size_t)l->out_h * l->out_w, ckk = (size_t)l->in_c * l->kernel * l->kernel;
    size_t g = ((size_t)8 << 20) / (hw * ckk * 2 + 1);
    if (g * hw > 131071)
        g = 131071 / hw;
    if (g < 1)
        g = 1;
    return g < (size_t)n ? (int)g : n;
}

/* Workspace of conv2d, forward and backward: the full-batch accumulators, one chunk's
 * unfolded input (twice), gradients (twice), transposed weights, weight-gradient and
 * bias accumulators, the G staging buffer, the chunk's accumulator, and the scratch of
 * the largest of its GEMMs (F, ghw, ckk), (F, ckk, ghw), (ckk, ghw, F). */
static size_t conv_ws(const dlu__layer *l, size_t n)
{
    const size_t hw = (size_t)l->out_h * l->out_w, ckk = (size_t)l->in_c * l->kernel * l->kernel;
    const size_t F = (size_t)l->out_c, ghw = (size_t)qconv_chunk(l, (int)n) * hw;
    const size_t full = n * (size_t)(l->out_size > l->in_size ? l->out_size : l->in_size);
    const size_t chunk = ghw * ckk * 2 * 2 + F * ghw * 2 * 2 + ckk * F * 2 + F * ckk * 8 + F * 8 + F * ckk * 2 +
                         (ckk * ghw > F * ckk ? ckk * ghw : F * ckk) * 8 + F * ghw * 8;
    return full * 8 + chunk +
           max3(qgemm_scratch(F, ghw, ckk), qgemm_scratch(F, ckk, ghw), qgemm_scratch(ckk, ghw, F)) + 32 * 64;
}

/* Output columns [*lo, *hi) whose input column ox*stride - pad + kx lies inside [0, W). */
static void qvalid_range(int Wo, int W, int stride, int pad, int kx, int *lo, int *hi)
{
    int a = pad - kx, l = a > 0 ? (a + stride - 1) / stride : 0;
    int h = W - 1 + pad - kx < 0 ? 0 : (W - 1 + pad - kx) / stride + 1;
    *lo = l < Wo ? l : Wo;
    *hi = h < Wo ? (h > *lo ? h : *lo) : Wo;
}

/* Unfold one sample (i8 or i16) into columns [0, Ho*Wo) of col (C*k*k, ld): row r =
 * (c, ky, kx), column p = output position; padding reads 0. */
#define QIM2COL(T)                                                                                             \
    static void qim2col_##T(const T *x, const dlu__layer *l, T *col, size_t ld)                                \
    {                                                                                                          \
        const int C = l->in_c, H = l->in_h, W = l->in_w, k = l->kernel, st = l->stride, pad = l->pad;         \
        const int Ho = l->out_h, Wo = l->out_w;                                                                \
        for (int r = 0; r < C * k * k; r++) {                                                                  \
            const int c = r / (k * k), ky = (r / k) % k, kx = r % k;                                           \
            int lo, hi;                                                                                        \
            qvalid_range(Wo, W, st, pad, kx, &lo, &hi);                                                        \
            T *dst = col + (size_t)r * ld;                                                                     \
            const T *src = x + (size_t)c * H * W;                                                              \
            for (int oy = 0; oy < Ho; oy++, dst += Wo) {                                                       \
                const int iy = oy * st - pad + ky;                                                             \
                if (iy < 0 || iy >= H) {                                                                       \
                    memset(dst, 0, (size_t)Wo * sizeof *dst);                                                  \
                    continue;                                                                                  \
                }                                                                                              \
                const ptrdiff_t base = (ptrdiff_t)iy * W - pad + kx;                                           \
                for (int ox = 0; ox < lo; ox++)                                                                \
                    dst[ox] = 0;                                                                               \
                if (st == 1)                                                                                   \
                    memcpy(dst + lo, src + base + lo, (size_t)(hi - lo) * sizeof *dst);                        \
                else                                                                                           \
                    for (int ox = lo; ox < hi; ox++)                                                           \
                        dst[ox] = src[base + (ptrdiff_t)ox * st];                                              \
                for (int ox = hi; ox < Wo; ox++)                                                               \
                    dst[ox] = 0;                                                                               \
            }                                                                                                  \
        }                                                                                                      \
    }
QIM2COL(int8_t)
QIM2COL(int16_t)

static void qim2col(const void *x, int w, const dlu__layer *l, void *col, size_t ld)
{
    if (w)
        qim2col_int16_t(x, l, col, ld);
    else
        qim2col_int8_t(x, l, col, ld);
}

/* dx (C, H, W) += the columns of dcol (C*k*k, ld) folded back onto the pixels they came
 * from; exact int64 sums. dcol holds int32 (the dfp8 GEMM's result) or int64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* widening int32 -> int64 adds want SSE4.1/AVX2 (pmovsxdq); the baseline build is SSE2 */
#define DLU__CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DLU__CLONES
#endif
#define QCOL2IM(TS)                                                                                            \
    DLU__CLONES static void qcol2im_##TS(const TS *dcol, size_t ld, const dlu__layer *l, int64_t *dx)          \
    {                                                                                                          \
        const int C = l->in_c, H = l->in_h, W = l->in_w, k = l->kernel, st = l->stride, pad = l->pad;         \
        const int Ho = l->out_h, Wo = l->out_w;                                                                \
        for (int r = 0; r < C * k * k; r++) {                                                                  \
            const int c = r / (k * k), ky = (r / k) % k, kx = r % k;                                           \
            int lo, hi;                                                                                        \
            qvalid_range(Wo, W, st, pad, kx, &lo, &hi);                                                        \
            const TS *src = dcol + (size_t)r * ld;                                                             \
            int64_t *plane = dx + (size_t)c * H * W;                                                           \
            for (int oy = 0; oy < Ho; oy++, src += Wo) {                                                       \
                const int iy = oy * st - pad + ky;                                                             \
                if (iy < 0 || iy >= H)                                                                         \
                    continue;                                                                                  \
                const ptrdiff_t base = (ptrdiff_t)iy * W - pad + kx;                                           \
                for (int ox = lo; ox < hi; ox++)                                                               \
                    plane[base + (ptrdiff_t)ox * st] += src[ox];                                               \
            }                                                                                                  \
        }                                                                                                      \
    }
QCOL2IM(int32_t)
QCOL2IM(int64_t)

/* Unfold one sample (i8 or i16) into rows (Ho*Wo, ckk): row p = output position, column
 * r = (c, ky, kx); padding reads 0. Each (c, ky) is a run of k consecutive columns read
 * from one input row, so the forward GEMM's K-contiguous operand needs no transpose. */
#define QIM2ROW(T)                                                                                             \
    static void qim2row_##T(const T *x, const dlu__layer *l, T *rows)                                          \
    {                                                                                                          \
        const int C = l->in_c, H = l->in_h, W = l->in_w, k = l->kernel, st = l->stride, pad = l->pad;         \
        const int Ho = l->out_h, Wo = l->out_w, ckk = C * k * k;                                               \
        for (int oy = 0; oy < Ho; oy++)                                                                        \
            for (int ox = 0; ox < Wo; ox++) {                                                                  \
                T *dst = rows + ((size_t)oy * Wo + ox) * ckk;                                                  \
                const int ix0 = ox * st - pad;                                                                 \
                for (int c = 0; c < C; c++)                                                                    \
                    for (int ky = 0; ky < k; ky++, dst += k) {                                                 \
                        const int iy = oy * st - pad + ky;                                                     \
                        if (iy < 0 || iy >= H) {                                                               \
                            memset(dst, 0, (size_t)k * sizeof *dst);                                          \
                            continue;                                                                          \
                        }                                                                                      \
                        const T *src = x + ((size_t)c * H + iy) * W;                                           \
                        for (int kx = 0; kx < k; kx++)                                                         \
                            dst[kx] = (ix0 + kx >= 0 && ix0 + kx < W) ? src[ix0 + kx] : 0;                     \
                    }                                                                                          \
            }                                                                                                  \
    }
QIM2ROW(int8_t)
QIM2ROW(int16_t)

/* conv2d forward: per chunk of samples one exact GEMM cacc (F, g*HW) = wq (F, ckk) *
 * rows (g*HW, ckk)^T, scattered into the (n, F, HW) accumulator with the bias added on the
 * way; then one requantization of the whole output. */
dlu_status dlu__cpu_conv2d_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int F = l->out_c, HW = l->out_h * l->out_w, ckk = l->in_c * l->kernel * l->kernel;
    const int G = qconv_chunk(l, a->n), wx = wide(a->x), ww = wide(a->wq);
    const int s8 = !wx && !ww && ckk <= DLU_IGEMM_S8_KMAX;
    arena ar = {a->ws, conv_ws(l, (size_t)a->n)};
    DLU__TRY(quant_site(a->qw, CF32(a->w), (size_t)F * ckk, a->wq, a->seed, a->step));
    const int ea = a->x->exp + a->wq->exp;
    int64_t *acc, *cacc, *bacc;
    uint8_t *rows;
    const size_t bx = wx ? 2 : 1;
    TAKE(&ar, acc, (size_t)a->n * l->out_size);
    TAKE(&ar, rows, (size_t)G * HW * ckk * bx);
    TAKE(&ar, cacc, (size_t)F * G * HW); /* int64, or int32 on the dfp8 path */
    TAKE(&ar, bacc, F);
    for (int f = 0; f < F; f++)
        bacc[f] = a->b ? dlu_bias_to_acc(CF32(a->b)[f], ea) : 0;
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int g = a->n - i0 < G ? a->n - i0 : G;
        for (int s = 0; s < g; s++) {
            const uint8_t *x = (const uint8_t *)a->x->data + (size_t)(i0 + s) * l->in_size * bx;
            uint8_t *r = rows + (size_t)s * HW * ckk * bx;
            if (wx)
                qim2row_int16_t((const int16_t *)x, l, (int16_t *)r);
            else
                qim2row_int8_t((const int8_t *)x, l, (int8_t *)r);
        }
        const size_t ld = (size_t)g * HW;
        if (s8)
            DLU__TRY(dlu__igemm_s8_nt(F, g * HW, ckk, a->wq->data, ckk, (const int8_t *)rows, ckk, (int32_t *)cacc,
                                      g * HW));
        else
            DLU__TRY(qgemm_nt(F, g * HW, ckk, a->wq->data, ww, rows, wx, cacc, 0, ar));
        for (int s = 0; s < g; s++)
            for (int f = 0; f < F; f++) {
                int64_t *dst = acc + (size_t)(i0 + s) * l->out_size + (size_t)f * HW;
                const size_t off = (size_t)f * ld + (size_t)s * HW;
                const int64_t b = bacc[f];
                if (s8 && b > -((int64_t)1 << 62) && b < ((int64_t)1 << 62)) {
                    /* an int32 plus such a bias cannot overflow: the saturating add is a plain add */
                    const int32_t *src = (const int32_t *)cacc + off;
                    for (int p = 0; p < HW; p++)
                        dst[p] = src[p] + b;
                } else if (s8) {
                    const int32_t *src = (const int32_t *)cacc + off;
                    for (int p = 0; p < HW; p++)
                        dst[p] = dlu_add_sat_i64(src[p], b);
                } else {
                    const int64_t *src = cacc + off;
                    for (int p = 0; p < HW; p++)
                        dst[p] = dlu_add_sat_i64(src[p], b);
                }
            }
    }
    return requant_site(a->qy, acc, (size_t)a->n * l->out_size, ea, a->y, a->seed, a->step);
}

dlu_status dlu__cpu_conv2d_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int F = l->out_c, HW = l->out_h * l->out_w, ckk = l->in_c * l->kernel * l->kernel;
    const int G = qconv_chunk(l, a->n), wx = wide(a->x), wd = wide(a->dy), ww = wide(a->wq);
    const size_t bx = wx ? 2 : 1, bd = wd ? 2 : 1;
    arena ar = {a->ws, conv_ws(l, (size_t)a->n)};
    int64_t *dxacc = NULL, *dwacc, *bacc, *cacc;
    uint8_t *col, *dyt, *dyr, *wqt;
    if (a->dx)
        TAKE(&ar, dxacc, (size_t)a->n * l->in_size);
    TAKE(&ar, dwacc, (size_t)F * ckk);
    TAKE(&ar, bacc, F);
    TAKE(&ar, col, (size_t)G * HW * ckk * bx);
    TAKE(&ar, dyt, (size_t)F * G * HW * bd);
    TAKE(&ar, dyr, (size_t)G * HW * F * bd);
    TAKE(&ar, wqt, (size_t)ckk * F * 2);
    TAKE(&ar, cacc, (size_t)ckk * G * HW > (size_t)F * ckk ? (size_t)ckk * G * HW : (size_t)F * ckk);
    memset(bacc, 0, (size_t)F * sizeof *bacc);
    if (a->dx)
        qtranspose(a->wq->data, ww, F, ckk, wqt); /* (ckk, F) */
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int g = a->n - i0 < G ? a->n - i0 : G, ghw = g * HW;
        /* dyt (F, g*HW): the chunk's output gradients side by side; dyr = dyt^T (g*HW, F) */
        for (int s = 0; s < g; s++)
            for (int f = 0; f < F; f++)
                memcpy(dyt + ((size_t)f * ghw + (size_t)s * HW) * bd,
                       (const uint8_t *)a->dy->data + ((size_t)(i0 + s) * l->out_size + (size_t)f * HW) * bd,
                       (size_t)HW * bd);
        for (int f = 0; f < F; f++) {
            int64_t sum = 0;
            if (wd)
                for (int p = 0; p < ghw; p++)
                    sum += ((const int16_t *)dyt)[(size_t)f * ghw + p];
            else
                for (int p = 0; p < ghw; p++)
                    sum += ((const int8_t *)dyt)[(size_t)f * ghw + p];
            bacc[f] += sum;
        }
        /* dW (F, ckk) += dyt (F, g*HW) * col (ckk, g*HW)^T */
        for (int s = 0; s < g; s++)
            qim2col((const uint8_t *)a->x->data + (size_t)(i0 + s) * l->in_size * bx, wx, l, col + (size_t)s * HW * bx,
                    (size_t)ghw);
        DLU__TRY(qgemm_nt(F, ckk, ghw, dyt, wd, col, wx, dwacc, i0 > 0, ar));
        if (!a->dx)
            continue;
        /* dcol (ckk, g*HW) = wq^T (ckk, F) * dyr (g*HW, F)^T, then fold back into dx */
        qtranspose(dyt, wd, F, ghw, dyr);
        const int s8 = !ww && !wd && F <= DLU_IGEMM_S8_KMAX;
        if (s8) /* the fold reads the int32 result directly: no widening pass */
            DLU__TRY(dlu__igemm_s8_nt(ckk, ghw, F, (const int8_t *)wqt, F, (const int8_t *)dyr, F, (int32_t *)cacc,
                                      ghw));
        else
            DLU__TRY(qgemm_nt(ckk, ghw, F, wqt, ww, dyr, wd, cacc, 0, ar));
        for (int s = 0; s < g; s++) {
            int64_t *d = dxacc + (size_t)(i0 + s) * l->in_size;
            memset(d, 0, (size_t)l->in_size * sizeof *d);
            if (s8)
                qcol2im_int32_t((const int32_t *)cacc + (size_t)s * HW, (size_t)ghw, l, d);
            else
                qcol2im_int64_t(cacc + (size_t)s * HW, (size_t)ghw, l, d);
        }
    }
    DLU__TRY(grad_site(a->qdw, dwacc, (size_t)F * ckk, a->dy->exp + a->x->exp, F32(a->dw), a->seed, a->step, ar));
    if (a->db)
        DLU__TRY(grad_site(a->qdb, bacc, (size_t)F, a->dy->exp, F32(a->db), a->seed, a->step, ar));
    if (a->dx)
        DLU__TRY(requant_site(a->qdx, dxacc, (size_t)a->n * l->in_size, a->dy->exp + a->wq->exp, a->dx, a->seed,
                              a->step));
    return DLU_OK;
}

/* ---- relu, flatten --------------------------------------------------------------------- */

dlu_status dlu__cpu_relu_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const size_t n = (size_t)a->n * a->l->out_size;
    if (wide(a->x)) {
        const int16_t *x = a->x->data;
        int16_t *y = a->y->data;
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : 0;
    } else {
        const int8_t *x = a->x->data;
        int8_t *y = a->y->data;
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : 0;
    }
    a->y->exp = a->x->exp;
    stats_inherit(a->qy, a->y, n);
    return DLU_OK;
}

dlu_status dlu__cpu_relu_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const size_t n = (size_t)a->n * a->l->out_size;
#define RELU_BWD(TY, TD)                                                   \
    do {                                                                   \
        const TY *y = a->y->data;                                          \
        const TD *dy = a->dy->data;                                        \
        TD *dx = a->dx->data;                                              \
        for (size_t i = 0; i < n; i++)                                     \
            dx[i] = y[i] > 0 ? dy[i] : 0;                                  \
    } while (0)
    if (wide(a->y) && wide(a->dy))
        RELU_BWD(int16_t, int16_t);
    else if (wide(a->y))
        RELU_BWD(int16_t, int8_t);
    else if (wide(a->dy))
        RELU_BWD(int8_t, int16_t);
    else
        RELU_BWD(int8_t, int8_t);
#undef RELU_BWD
    a->dx->exp = a->dy->exp;
    stats_inherit(a->qdx, a->dx, n);
    return DLU_OK;
}

dlu_status dlu__cpu_flatten_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const size_t n = (size_t)a->n * a->l->out_size;
    memcpy(a->y->data, a->x->data, n * dlu_dtype_size(a->x->dtype));
    a->y->exp = a->x->exp;
    stats_inherit(a->qy, a->y, n);
    return DLU_OK;
}

dlu_status dlu__cpu_flatten_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const size_t n = (size_t)a->n * a->l->in_size;
    memcpy(a->dx->data, a->dy->data, n * dlu_dtype_size(a->dy->dtype));
    a->dx->exp = a->dy->exp;
    stats_inherit(a->qdx, a->dx, n);
    return DLU_OK;
}

/* ---- pooling --------------------------------------------------------------------------- */

/* One int64 accumulator per element of the larger of input and output. */
static size_t pool_ws(const dlu__layer *l, size_t n)
{
    return n * (size_t)(l->in_size > l->out_size ? l->in_size : l->out_size) * 8 + 64;
}

#define QMAXPOOL(T)                                                                                            \
    static void qmaxpool_##T(const dlu__layer *l, int planes, const T *x, T *y, int32_t *arg)                    \
    {                                                                                                          \
        const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel, s = l->stride;        \
        const int p = l->pad;                                                                                  \
        const int inside = p == 0 && (Ho - 1) * s + k <= H && (Wo - 1) * s + k <= W;                           \
        for (int pl = 0; pl < planes; pl++) {                                                                  \
            const T *xp = x + (size_t)pl * H * W;                                                              \
            for (int oy = 0; oy < Ho; oy++)                                                                    \
                for (int ox = 0; ox < Wo; ox++) {                                                              \
                    int32_t best = 0, bi = -1;                                                                 \
                    if (inside) { /* the window lies inside the plane: no bounds checks */                     \
                        const int y0 = oy * s, x0 = ox * s;                                                    \
                        best = xp[y0 * W + x0], bi = y0 * W + x0;                                              \
                        for (int ky = 0; ky < k; ky++)                                                         \
                            for (int kx = 0; kx < k; kx++) {                                                   \
                                const int32_t v = xp[(y0 + ky) * W + x0 + kx];                                 \
                                if (v > best) {                                                                \
                                    best = v;                                                                  \
                                    bi = (y0 + ky) * W + x0 + kx;                                              \
                                }                                                                              \
                            }                                                                                  \
                    } else                                                                                     \
                    for (int ky = 0; ky < k; ky++) {                                                           \
                        const int iy = oy * s - p + ky;                                                        \
                        if (iy < 0 || iy >= H)                                                                 \
                            continue;                                                                          \
                        for (int kx = 0; kx < k; kx++) {                                                       \
                            const int ix = ox * s - p + kx;                                                    \
                            if (ix < 0 || ix >= W)                                                             \
                                continue;                                                                      \
                            const int32_t v = xp[iy * W + ix];                                                 \
                            if (bi < 0 || v > best) {                                                          \
                                best = v;                                                                      \
                                bi = iy * W + ix;                                                              \
                            }                                                                                  \
                        }                                                                                      \
                    }                                                                                          \
                    const size_t o = ((size_t)pl * Ho + oy) * Wo + ox;                                         \
                    y[o] = (T)best;                                                                            \
                    arg[o] = bi;                                                                               \
                }                                                                                              \
        }                                                                                                      \
    }
QMAXPOOL(int8_t)
QMAXPOOL(int16_t)

/* maxpool: the same winner rule as fp32 (first maximum in row-major window order; padded
 * cells never win); output keeps the input's exponent. Backward sums the gradients that
 * land on one input (overlapping windows) exactly, then saturates to the format at dy's
 * exponent (overflow counted in the statistics). */
dlu_status dlu__cpu_maxpool_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const int planes = a->n * a->l->in_c;
    if (wide(a->x))
        qmaxpool_int16_t(a->l, planes, a->x->data, a->y->data, a->aux->data);
    else
        qmaxpool_int8_t(a->l, planes, a->x->data, a->y->data, a->aux->data);
    a->y->exp = a->x->exp;
    stats_inherit(a->qy, a->y, (size_t)a->n * a->l->out_size);
    return DLU_OK;
}

dlu_status dlu__cpu_maxpool_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const dlu__layer *l = a->l;
    const size_t HW = (size_t)l->in_h * l->in_w, HoWo = (size_t)l->out_h * l->out_w, planes = (size_t)a->n * l->in_c;
    arena ar = {a->ws, pool_ws(l, (size_t)a->n)};
    int64_t *acc;
    TAKE(&ar, acc, planes * HW);
    memset(acc, 0, planes * HW * sizeof *acc);
    const int32_t *arg = a->aux->data;
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t o = 0; o < HoWo; o++)
            acc[pl * HW + (size_t)arg[pl * HoWo + o]] += qld(a->dy->data, wide(a->dy), pl * HoWo + o);
    return requant_site(a->qdx, acc, planes * HW, a->dy->exp, a->dx, a->seed, a->step);
}

/* avgpool: the window sum is exact; dividing by the area (a power of two, checked when the
 * net is set up) only lowers the exponent by log2(area); then requantize. */
static int log2_area(const dlu__layer *l)
{
    int a = l->kernel * l->kernel, lg = 0;
    while ((1 << lg) < a)
        lg++;
    return lg;
}

dlu_status dlu__cpu_avgpool_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel, s = l->stride, p = l->pad;
    const size_t planes = (size_t)a->n * l->in_c;
    arena ar = {a->ws, pool_ws(l, (size_t)a->n)};
    int64_t *acc;
    TAKE(&ar, acc, (size_t)a->n * l->out_size);
    for (size_t pl = 0; pl < planes; pl++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                int64_t sum = 0;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * s - p + kx;
                        if (ix >= 0 && ix < W)
                            sum += qld(a->x->data, wide(a->x), pl * H * W + (size_t)iy * W + ix);
                    }
                }
                acc[(pl * Ho + oy) * Wo + ox] = sum;
            }
    return requant_site(a->qy, acc, (size_t)a->n * l->out_size, a->x->exp - log2_area(l), a->y, a->seed, a->step);
}

dlu_status dlu__cpu_avgpool_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const dlu__layer *l = a->l;
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel, s = l->stride, p = l->pad;
    const size_t planes = (size_t)a->n * l->in_c;
    arena ar = {a->ws, pool_ws(l, (size_t)a->n)};
    int64_t *acc;
    TAKE(&ar, acc, (size_t)a->n * l->in_size);
    memset(acc, 0, (size_t)a->n * l->in_size * sizeof *acc);
    for (size_t pl = 0; pl < planes; pl++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                const int32_t g = qld(a->dy->data, wide(a->dy), (pl * Ho + oy) * Wo + ox);
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * s - p + kx;
                        if (ix >= 0 && ix < W)
                            acc[pl * H * W + (size_t)iy * W + ix] += g;
                    }
                }
            }
    return requant_site(a->qdx, acc, (size_t)a->n * l->in_size, a->dy->exp - log2_area(l), a->dx, a->seed, a->step);
}

/* ---- softmax cross-entropy ------------------------------------------------------------- */

static size_t xent_ws(const dlu__layer *l, size_t n) { return 2 * n * (size_t)l->in_size * sizeof(float) + 128; }

/* Logits are the DFP input dequantized exactly; softmax and loss go through numerics.h's
 * deterministic implementation; the gradient (p - onehot)/n is quantized to class E. */
dlu_status dlu__cpu_softmax_xent_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const int C = (int)a->l->in_size, n = a->n;
    arena ar = {a->ws, xent_ws(a->l, (size_t)n)};
    float *logits;
    TAKE(&ar, logits, (size_t)n * C);
    DLU__TRY(dlu_dequantize(a->x->data, (size_t)n * C, a->x->exp, wide(a->x) ? DLU_FMT_DFP16 : DLU_FMT_DFP8, logits));
    return dlu__cpu_xent_fp32(logits, a);
}

dlu_status dlu__cpu_softmax_xent_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const int C = (int)a->l->in_size, n = a->n;
    arena ar = {a->ws, xent_ws(a->l, (size_t)n)};
    float *g;
    TAKE(&ar, g, (size_t)n * C);
    const int32_t *lab = a->labels->data;
    for (int i = 0; i < n; i++)
        DLU__TRY(dlu_softmax_xent_grad_row(CF32(a->aux) + (size_t)i * C, C, lab[i], n, g + (size_t)i * C));
    return quant_site(a->qdx, g, (size_t)n * C, a->dx, a->seed, a->step);
}

size_t dlu__cpu_dfp_ws(const dlu__layer *l, int n)
{
    switch (l->op) {
    case DLU_OP_LINEAR: return linear_ws(l, (size_t)n);
    case DLU_OP_CONV2D: return conv_ws(l, (size_t)n);
    case DLU_OP_MAXPOOL:
    case DLU_OP_AVGPOOL: return pool_ws(l, (size_t)n);
    case DLU_OP_SOFTMAX_XENT: return xent_ws(l, (size_t)n);
    default: return 0;
    }
}
