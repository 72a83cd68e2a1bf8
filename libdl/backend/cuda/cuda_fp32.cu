/* cuda_fp32.cu -- the fp32 kernels of the cuda backend: linear, conv2d, relu, max/avg
 * pooling, flatten and softmax cross-entropy, forward and backward.
 *
 * Contract: the CPU reference's (cpu_dense.c, cpu_misc.c), with the same layouts (W (out,
 * in) as in PyTorch, conv W (F, C, k, k), images NCHW) and the same rules (maxpool: the
 * first maximum in row-major window order wins, padded cells never win; avgpool divides by
 * k*k; backward overwrites dW and db and writes dx only when asked for).
 *   - Bit for bit the CPU's: relu, maxpool (values and argmax, and dx), avgpool (y and dx:
 *     the same sums in the same order), flatten, softmax_xent (numerics.h's deterministic
 *     row function; the mean loss summed in fp32 in ascending row order by one thread, as
 *     dlu_softmax_xent does), linear's db (ascending sample order from 0), and conv2d's
 *     col2im given the same column matrix.
 *   - Within fp32 rounding of the CPU's, not bit-exact: every GEMM (cuBLAS sums in its own
 *     order; OpenBLAS in another), so linear's y, dx, dW and conv2d's y, dx, dW; conv2d's
 *     db (per sample a fixed warp tree, then samples in ascending order).
 * Every reduction here has a fixed order that does not depend on timing: no atomics, so
 * the same inputs give the same bits run after run. Element-wise arithmetic whose bits
 * matter goes through __fadd_rn/__fmul_rn/__fdiv_rn (never contracted into FMAs).
 *
 * Row-major GEMMs on cuBLAS (column-major): a row-major (r, c) matrix with row stride ld is,
 * read column-major, its transpose (c, r) with leading dimension ld. So the row-major
 * product C (m, n) = op(A) (m, k) * op(B) (k, n) is, read column-major,
 * C^T (n, m) = op(B)^T * op(A)^T: cublasSgemm(opB, opA, n, m, k, B, ldb, A, lda, C, ldc) on
 * the very same buffers. sgemm_rm() below does that swap once; the call sites read like the
 * CPU's cblas_sgemm(CblasRowMajor, ...) calls they mirror.
 *
 * conv2d goes by im2col: a chunk of g samples is unfolded into col (C*k*k, g*Ho*Wo), sample s
 * in columns [s*Ho*Wo, (s+1)*Ho*Wo) (the CPU's layout). Forward is one strided-batched GEMM
 * writing y directly (sample s: W (F, CKK) * its column block); backward-weights one GEMM over
 * the chunk, K = g*Ho*Wo, accumulated across chunks (beta = 1); backward-data one batched
 * GEMM into a column matrix (it reuses col's memory, dead by then) and col2im with one thread
 * per input pixel summing its k*k candidates in (ky, kx) order. The chunk keeps the
 * workspace near 64 MiB.
 *
 * Asynchrony: every entry point queues its work on the backend's stream (cuBLAS is bound to
 * it by the host code) and returns; the loss and correct count of softmax_xent arrive in
 * their host variables at the next sync (dlu__cuda_result). Launch errors are reported at
 * once, naming the op; errors during execution at the next sync.
 *
 * Not here: DFP kernels (cuda_dfp.cu), optimizers (cuda_optim.cu), memory and streams
 * (cuda_backend.c). */
#include <math.h>
#include <stdint.h>

#include "cuda_impl.h"
#include "error.h"

#define BLOCK 256
#define MAX_GRID (1 << 22) /* blocks; kernels loop (grid-stride) beyond */
#define CONV_WS_TARGET ((size_t)64 << 20) /* bytes of col + dyt per conv2d chunk */
#define WS_ALIGN 64 /* floats: workspace sub-buffers start on 256-byte boundaries */

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */
/* ------------------------------------------------------------------------------------ */

static unsigned grid_for(int64_t count)
{
    int64_t g = (count + BLOCK - 1) / BLOCK;
    return (unsigned)(g < MAX_GRID ? g : MAX_GRID);
}

static size_t align_f(size_t nfloat) { return (nfloat + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN; }

#define F32(t) ((float *)(t)->data)
#define CF32(t) ((const float *)(t)->data)
#define GRID_STRIDE(i, count)                                                                      \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (count);                  \
         i += (int64_t)gridDim.x * blockDim.x)

/* Row-major C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, see the top of the file. */
static dlu_status sgemm_rm(dlu_backend *be, int ta, int tb, int m, int n, int k, const float *A, int lda,
                           const float *B, int ldb, float beta, float *C, int ldc, const char *what)
{
    dlu__cuda *c = dlu__cuda_of(be);
    const float one = 1.0f;
    cublasStatus_t st = cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasSgemm(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one, B,
                         ldb, A, lda, &beta, C, ldc);
    be->prof.gemm_calls++;
    return dlu__cuda_blas_err(be, (int)st, what);
}

/* batch of the above: operand i at A + i*sa, B + i*sb, C + i*sc (a stride 0 shares it). */
static dlu_status sgemm_rm_batched(dlu_backend *be, int ta, int tb, int m, int n, int k, const float *A, int lda,
                                   long long sa, const float *B, int ldb, long long sb, float beta, float *C, int ldc,
                                   long long sc, int batch, const char *what)
{
    dlu__cuda *c = dlu__cuda_of(be);
    const float one = 1.0f;
    cublasStatus_t st = cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasSgemmStridedBatched(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n,
                                       m, k, &one, B, ldb, sb, A, lda, sa, &beta, C, ldc, sc, batch);
    be->prof.gemm_calls++;
    return dlu__cuda_blas_err(be, (int)st, what);
}

static dlu_status copy_d2d(dlu_backend *be, void *dst, const void *src, size_t nbytes, const char *what)
{
    if (!nbytes)
        return DLU_OK;
    return dlu__cuda_err(be, cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, dlu__cuda_of(be)->stream),
                         what);
}

#define STREAM(be) dlu__cuda_of(be)->stream
#define LAUNCH(kernel, count, be, ...) kernel<<<grid_for(count), BLOCK, 0, STREAM(be)>>>(__VA_ARGS__)
#define TRY(expr) DLU__TRY(expr)

/* ------------------------------------------------------------------------------------ */
/* bias                                                                                 */
/* ------------------------------------------------------------------------------------ */

/* y (rows, C, inner) += b (C) */
static __global__ void bias_add_kernel(float *__restrict__ y, const float *__restrict__ b, int64_t count, int C, int inner)
{
    GRID_STRIDE(i, count)
    {
        y[i] = __fadd_rn(y[i], b[(i / inner) % C]);
    }
}

/* linear db (out) = sum over rows of dy (n, out), ascending rows from 0 (the CPU's bits). */
static __global__ void bias_grad_rows_kernel(const float *__restrict__ dy, int n, int out, float *__restrict__ db)
{
    GRID_STRIDE(j, (int64_t)out)
    {
        float s = 0.0f;
        for (int i = 0; i < n; i++)
            s = __fadd_rn(s, dy[(size_t)i * out + j]);
        db[j] = s;
    }
}

/* conv db, step 1: part (n, F) = per (sample, filter) the sum of its HW gradients: one warp
 * each, lanes over positions lane, lane+32, ... in order, then a fixed xor tree. */
static __global__ void bias_grad_part_kernel(const float *__restrict__ dy, int64_t planes, int HW, float *__restrict__ part)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; w < planes; w += warps) {
        const float *d = dy + (size_t)w * HW;
        float s = 0.0f;
        for (int p = lane; p < HW; p += 32)
            s = __fadd_rn(s, d[p]);
        for (int o = 16; o > 0; o >>= 1)
            s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, o));
        if (lane == 0)
            part[w] = s;
    }
}

/* conv db, step 2: db[f] = sum of part[s][f] over samples s ascending, from 0. */
static __global__ void bias_grad_sum_kernel(const float *__restrict__ part, int n, int F, float *__restrict__ db)
{
    GRID_STRIDE(f, (int64_t)F)
    {
        float s = 0.0f;
        for (int i = 0; i < n; i++)
            s = __fadd_rn(s, part[(size_t)i * F + f]);
        db[f] = s;
    }
}

/* ------------------------------------------------------------------------------------ */
/* linear                                                                               */
/* ------------------------------------------------------------------------------------ */

dlu_status dlu__cuda_linear_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    float *y = F32(a->y); /* (n, out) */
    if (n < 1)
        return DLU_OK;
    /* y = x (n, in) * W^T (in, out) */
    TRY(sgemm_rm(be, 0, 1, n, out, in, CF32(a->x), in, CF32(a->w), in, 0.0f, y, out,
                 "linear forward: cublasSgemm y = x W^T"));
    if (a->b) {
        const int64_t cnt = (int64_t)n * out;
        LAUNCH(bias_add_kernel, cnt, be, y, CF32(a->b), cnt, out, 1);
        TRY(DLU__CUDA_LAUNCHED(be, "linear forward: bias kernel"));
    }
    return DLU_OK;
}

dlu_status dlu__cuda_linear_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    const float *dy = CF32(a->dy); /* (n, out) */
    if (n < 1)
        return DLU_OK;
    if (a->dx) /* dx (n, in) = dy (n, out) * W (out, in) */
        TRY(sgemm_rm(be, 0, 0, n, in, out, dy, out, CF32(a->w), in, 0.0f, F32(a->dx), in,
                     "linear backward: cublasSgemm dx = dy W"));
    /* dW (out, in) = dy^T (out, n) * x (n, in) */
    TRY(sgemm_rm(be, 1, 0, out, in, n, dy, out, CF32(a->x), in, 0.0f, F32(a->dw), in,
                 "linear backward: cublasSgemm dW = dy^T x"));
    if (a->db) {
        LAUNCH(bias_grad_rows_kernel, out, be, dy, n, out, F32(a->db));
        TRY(DLU__CUDA_LAUNCHED(be, "linear backward: bias gradient kernel"));
    }
    return DLU_OK;
}

/* ------------------------------------------------------------------------------------ */
/* conv2d                                                                               */
/* ------------------------------------------------------------------------------------ */

namespace { /* file-local types (kernels take them by value) */
typedef struct conv_geom {
    int C, H, W, k, stride, pad, F, Ho, Wo, HW, CKK;
} conv_geom;
}

static conv_geom geom(const dlu__layer *l)
{
    conv_geom g;
    g.C = l->in_c, g.H = l->in_h, g.W = l->in_w, g.k = l->kernel, g.stride = l->stride, g.pad = l->pad;
    g.F = l->out_c, g.Ho = l->out_h, g.Wo = l->out_w;
    g.HW = g.Ho * g.Wo, g.CKK = g.C * g.k * g.k;
    return g;
}

/* Samples per chunk: col (CKK, g*HW) and dyt (F, g*HW) together near CONV_WS_TARGET bytes,
 * at least 1, at most n (so the workspace never shrinks as n grows). */
static int conv_chunk(const dlu__layer *l, int n)
{
    const conv_geom c = geom(l);
    size_t per = ((size_t)c.CKK + (size_t)c.F) * (size_t)c.HW * sizeof(float);
    size_t g = CONV_WS_TARGET / (per ? per : 1);
    if (g < 1)
        g = 1;
    return g < (size_t)n ? (int)g : n;
}

/* The workspace of a conv2d call: col (which the backward reuses for dcol), dyt, and the
 * per-sample bias-gradient partial sums, each aligned. */
namespace {
typedef struct conv_ws {
    float *col, *dyt, *part;
} conv_ws;
}

static size_t conv_ws_layout(const dlu__layer *l, int n, void *base, conv_ws *w)
{
    const conv_geom c = geom(l);
    const size_t ghw = (size_t)conv_chunk(l, n) * c.HW;
    const size_t ncol = align_f((size_t)c.CKK * ghw), ndyt = align_f((size_t)c.F * ghw);
    const size_t npart = align_f((size_t)n * c.F);
    if (w) {
        w->col = (float *)base;
        w->dyt = w->col + ncol;
        w->part = w->dyt + ndyt;
    }
    return (ncol + ndyt + npart) * sizeof(float);
}

/* im2col of g samples: col (CKK, g*HW), element (r, s*HW + p) with r = (c, ky, kx) and
 * p = (oy, ox) reads x_s (C, H, W) at (c, oy*stride - pad + ky, ox*stride - pad + kx), or 0
 * in the padding. x points at the chunk's first sample. */
static __global__ void im2col_kernel(const float *__restrict__ x, conv_geom c, int g, int64_t in_size,
                              float *__restrict__ col)
{
    const int64_t ld = (int64_t)g * c.HW, count = (int64_t)c.CKK * ld;
    GRID_STRIDE(e, count)
    {
        const int r = (int)(e / ld);
        const int64_t j = e - (int64_t)r * ld;
        const int s = (int)(j / c.HW), p = (int)(j - (int64_t)s * c.HW);
        const int ch = r / (c.k * c.k), ky = (r / c.k) % c.k, kx = r % c.k;
        const int iy = (p / c.Wo) * c.stride - c.pad + ky, ix = (p % c.Wo) * c.stride - c.pad + kx;
        float v = 0.0f;
        if (iy >= 0 && iy < c.H && ix >= 0 && ix < c.W)
            v = x[(size_t)s * in_size + ((size_t)ch * c.H + iy) * c.W + ix];
        col[e] = v;
    }
}

/* col2im of g samples: dx_s (C, H, W), one thread per pixel, summing the col entries that
 * im2col took from it, (ky, kx) ascending from 0: the CPU's order, so the same col gives the
 * same bits. */
static __global__ void col2im_kernel(const float *__restrict__ col, conv_geom c, int g, int64_t in_size,
                              float *__restrict__ dx)
{
    const int64_t ld = (int64_t)g * c.HW, count = (int64_t)g * in_size;
    GRID_STRIDE(e, count)
    {
        const int s = (int)(e / in_size);
        const int64_t q = e - (int64_t)s * in_size;
        const int ch = (int)(q / ((int64_t)c.H * c.W));
        const int rem = (int)(q - (int64_t)ch * c.H * c.W);
        const int iy = rem / c.W, ix = rem % c.W;
        float sum = 0.0f;
        for (int ky = 0; ky < c.k; ky++) {
            const int ty = iy + c.pad - ky;
            if (ty < 0 || ty % c.stride)
                continue;
            const int oy = ty / c.stride;
            if (oy >= c.Ho)
                continue;
            for (int kx = 0; kx < c.k; kx++) {
                const int tx = ix + c.pad - kx;
                if (tx < 0 || tx % c.stride)
                    continue;
                const int ox = tx / c.stride;
                if (ox >= c.Wo)
                    continue;
                const int64_t r = ((int64_t)ch * c.k + ky) * c.k + kx;
                sum = __fadd_rn(sum, col[r * ld + (int64_t)s * c.HW + (int64_t)oy * c.Wo + ox]);
            }
        }
        dx[(size_t)s * in_size + q] = sum;
    }
}

/* dyt (F, g*HW) from dy of g samples (g, F, HW): the chunk's gradients side by side. */
static __global__ void dy_gather_kernel(const float *__restrict__ dy, int F, int HW, int g, float *__restrict__ dyt)
{
    const int64_t ld = (int64_t)g * HW, count = (int64_t)F * ld;
    GRID_STRIDE(e, count)
    {
        const int f = (int)(e / ld);
        const int64_t j = e - (int64_t)f * ld;
        const int s = (int)(j / HW), p = (int)(j - (int64_t)s * HW);
        dyt[e] = dy[((size_t)s * F + f) * HW + p];
    }
}

size_t dlu__cuda_fp32_ws(const dlu__layer *l, int n)
{
    if (n < 1)
        n = 1;
    switch (l->op) {
    case DLU_OP_CONV2D:
        return conv_ws_layout(l, n, NULL, NULL);
    case DLU_OP_SOFTMAX_XENT: /* per-row losses (float) and hits (int32) */
        return 2 * align_f((size_t)n) * sizeof(float);
    default:
        return 0;
    }
}

dlu_status dlu__cuda_conv2d_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const conv_geom c = geom(l);
    const int G = conv_chunk(l, a->n);
    conv_ws ws;
    if (a->n < 1)
        return DLU_OK;
    conv_ws_layout(l, a->n, a->ws, &ws);
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int g = a->n - i0 < G ? a->n - i0 : G;
        const int ld = g * c.HW;
        LAUNCH(im2col_kernel, (int64_t)c.CKK * ld, be, CF32(a->x) + (size_t)i0 * l->in_size, c, g, l->in_size,
               ws.col);
        TRY(DLU__CUDA_LAUNCHED(be, "conv2d forward: im2col kernel"));
        /* sample s: y_s (F, HW) = W (F, CKK) * col[:, s*HW : (s+1)*HW] (CKK, HW; row stride ld) */
        TRY(sgemm_rm_batched(be, 0, 0, c.F, c.HW, c.CKK, CF32(a->w), c.CKK, 0, ws.col, ld, c.HW, 0.0f,
                             F32(a->y) + (size_t)i0 * l->out_size, c.HW, l->out_size, g,
                             "conv2d forward: cublasSgemmStridedBatched y = W col"));
    }
    if (a->b) {
        const int64_t cnt = (int64_t)a->n * l->out_size;
        LAUNCH(bias_add_kernel, cnt, be, F32(a->y), CF32(a->b), cnt, c.F, c.HW);
        TRY(DLU__CUDA_LAUNCHED(be, "conv2d forward: bias kernel"));
    }
    return DLU_OK;
}

dlu_status dlu__cuda_conv2d_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const conv_geom c = geom(l);
    const int G = conv_chunk(l, a->n);
    const float *dy = CF32(a->dy); /* (n, F, HW) */
    conv_ws ws;
    if (a->n < 1)
        return DLU_OK;
    conv_ws_layout(l, a->n, a->ws, &ws);
    if (a->db) {
        const int64_t planes = (int64_t)a->n * c.F;
        LAUNCH(bias_grad_part_kernel, planes * 32, be, dy, planes, c.HW, ws.part);
        TRY(DLU__CUDA_LAUNCHED(be, "conv2d backward: bias gradient kernel (per sample)"));
        LAUNCH(bias_grad_sum_kernel, c.F, be, ws.part, a->n, c.F, F32(a->db));
        TRY(DLU__CUDA_LAUNCHED(be, "conv2d backward: bias gradient kernel (over the batch)"));
    }
    for (int i0 = 0; i0 < a->n; i0 += G) {
        const int g = a->n - i0 < G ? a->n - i0 : G;
        const int ld = g * c.HW;
        const float *dy0 = dy + (size_t)i0 * l->out_size;
        LAUNCH(im2col_kernel, (int64_t)c.CKK * ld, be, CF32(a->x) + (size_t)i0 * l->in_size, c, g, l->in_size,
               ws.col);
        TRY(DLU__CUDA_LAUNCHED(be, "conv2d backward: im2col kernel"));
        LAUNCH(dy_gather_kernel, (int64_t)c.F * ld, be, dy0, c.F, c.HW, g, ws.dyt);
        TRY(DLU__CUDA_LAUNCHED(be, "conv2d backward: dy gather kernel"));
        /* dW (F, CKK) (+)= dyt (F, g*HW) * col^T (g*HW, CKK) */
        TRY(sgemm_rm(be, 0, 1, c.F, c.CKK, ld, ws.dyt, ld, ws.col, ld, i0 ? 1.0f : 0.0f, F32(a->dw), c.CKK,
                     "conv2d backward: cublasSgemm dW = dy col^T"));
        if (a->dx) {
            /* sample s: dcol[:, s*HW : (s+1)*HW] (CKK, HW) = W^T (CKK, F) * dy_s (F, HW); dcol
             * takes col's memory (stream order: the dW GEMM has read col by then) */
            float *dcol = ws.col;
            TRY(sgemm_rm_batched(be, 1, 0, c.CKK, c.HW, c.F, CF32(a->w), c.CKK, 0, dy0, c.HW, l->out_size, 0.0f,
                                 dcol, ld, c.HW, g, "conv2d backward: cublasSgemmStridedBatched dcol = W^T dy"));
            LAUNCH(col2im_kernel, (int64_t)g * l->in_size, be, dcol, c, g, l->in_size,
                   F32(a->dx) + (size_t)i0 * l->in_size);
            TRY(DLU__CUDA_LAUNCHED(be, "conv2d backward: col2im kernel"));
        }
    }
    return DLU_OK;
}

/* ------------------------------------------------------------------------------------ */
/* relu, flatten                                                                        */
/* ------------------------------------------------------------------------------------ */

static __global__ void relu_fwd_kernel(const float *__restrict__ x, int64_t count, float *__restrict__ y)
{
    GRID_STRIDE(i, count)
    {
        const float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

static __global__ void relu_bwd_kernel(const float *__restrict__ y, const float *__restrict__ dy, int64_t count,
                                float *__restrict__ dx)
{
    GRID_STRIDE(i, count)
    {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

dlu_status dlu__cuda_relu_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const int64_t cnt = (int64_t)a->n * a->l->out_size;
    if (!cnt)
        return DLU_OK;
    LAUNCH(relu_fwd_kernel, cnt, be, CF32(a->x), cnt, F32(a->y));
    return DLU__CUDA_LAUNCHED(be, "relu forward kernel");
}

dlu_status dlu__cuda_relu_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const int64_t cnt = (int64_t)a->n * a->l->out_size;
    if (!a->dx || !cnt)
        return DLU_OK;
    LAUNCH(relu_bwd_kernel, cnt, be, CF32(a->y), CF32(a->dy), cnt, F32(a->dx));
    return DLU__CUDA_LAUNCHED(be, "relu backward kernel");
}

dlu_status dlu__cuda_flatten_fwd(dlu_backend *be, const dlu__op_args *a)
{
    return copy_d2d(be, a->y->data, a->x->data, (size_t)a->n * a->l->out_size * sizeof(float),
                    "flatten forward: cudaMemcpyAsync");
}

dlu_status dlu__cuda_flatten_bwd(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    return copy_d2d(be, a->dx->data, a->dy->data, (size_t)a->n * a->l->in_size * sizeof(float),
                    "flatten backward: cudaMemcpyAsync");
}

/* ------------------------------------------------------------------------------------ */
/* pooling                                                                              */
/* ------------------------------------------------------------------------------------ */

namespace {
typedef struct pool_geom {
    int H, W, Ho, Wo, k, s, p;
} pool_geom;
}

static pool_geom pgeom(const dlu__layer *l)
{
    pool_geom g;
    g.H = l->in_h, g.W = l->in_w, g.Ho = l->out_h, g.Wo = l->out_w, g.k = l->kernel, g.s = l->stride, g.p = l->pad;
    return g;
}

/* Output rows [*lo, *hi] (inclusive; empty when lo > hi) whose window covers input row i:
 * o*s - p <= i <= o*s - p + k - 1. */
static __device__ void covering(int i, int k, int s, int p, int nout, int *lo, int *hi)
{
    const int t = i + p - k + 1;
    *lo = t <= 0 ? 0 : (t + s - 1) / s;
    const int h = (i + p) / s;
    *hi = h < nout - 1 ? h : nout - 1;
}

/* One thread per output, the CPU's loop: the first maximum in row-major window order wins
 * (a later cell only when strictly greater), padded cells are not candidates. */
static __global__ void maxpool_fwd_kernel(const float *__restrict__ x, pool_geom g, int64_t count, float *__restrict__ y,
                                   int32_t *__restrict__ arg)
{
    GRID_STRIDE(o, count)
    {
        const int64_t pl = o / ((int64_t)g.Ho * g.Wo);
        const int r = (int)(o - pl * g.Ho * g.Wo), oy = r / g.Wo, ox = r % g.Wo;
        const float *xp = x + (size_t)pl * g.H * g.W;
        float best = -INFINITY;
        int32_t bi = -1;
        for (int ky = 0; ky < g.k; ky++) {
            const int iy = oy * g.s - g.p + ky;
            if (iy < 0 || iy >= g.H)
                continue;
            for (int kx = 0; kx < g.k; kx++) {
                const int ix = ox * g.s - g.p + kx;
                if (ix < 0 || ix >= g.W)
                    continue;
                const float v = xp[iy * g.W + ix];
                if (bi < 0 || v > best) {
                    best = v;
                    bi = iy * g.W + ix;
                }
            }
        }
        y[o] = best;
        arg[o] = bi;
    }
}

/* One thread per input cell: the sum of dy over the windows that cover it and chose it, in
 * ascending output order from 0 -- the order in which the CPU scatters, so the same bits,
 * without atomics. */
static __global__ void maxpool_bwd_kernel(const float *__restrict__ dy, const int32_t *__restrict__ arg, pool_geom g,
                                   int64_t count, float *__restrict__ dx)
{
    GRID_STRIDE(e, count)
    {
        const int64_t pl = e / ((int64_t)g.H * g.W);
        const int cell = (int)(e - pl * g.H * g.W), iy = cell / g.W, ix = cell % g.W;
        const size_t base = (size_t)pl * g.Ho * g.Wo;
        int ylo, yhi, xlo, xhi;
        covering(iy, g.k, g.s, g.p, g.Ho, &ylo, &yhi);
        covering(ix, g.k, g.s, g.p, g.Wo, &xlo, &xhi);
        float sum = 0.0f;
        for (int oy = ylo; oy <= yhi; oy++)
            for (int ox = xlo; ox <= xhi; ox++) {
                const size_t o = base + (size_t)oy * g.Wo + ox;
                if (arg[o] == cell)
                    sum = __fadd_rn(sum, dy[o]);
            }
        dx[e] = sum;
    }
}

/* The CPU's sum: real cells in (ky, kx) order from 0, times inv = 1/(k*k) rounded once. */
static __global__ void avgpool_fwd_kernel(const float *__restrict__ x, pool_geom g, float inv, int64_t count,
                                   float *__restrict__ y)
{
    GRID_STRIDE(o, count)
    {
        const int64_t pl = o / ((int64_t)g.Ho * g.Wo);
        const int r = (int)(o - pl * g.Ho * g.Wo), oy = r / g.Wo, ox = r % g.Wo;
        const float *xp = x + (size_t)pl * g.H * g.W;
        float sum = 0.0f;
        for (int ky = 0; ky < g.k; ky++) {
            const int iy = oy * g.s - g.p + ky;
            if (iy < 0 || iy >= g.H)
                continue;
            for (int kx = 0; kx < g.k; kx++) {
                const int ix = ox * g.s - g.p + kx;
                if (ix >= 0 && ix < g.W)
                    sum = __fadd_rn(sum, xp[iy * g.W + ix]);
            }
        }
        y[o] = __fmul_rn(sum, inv);
    }
}

/* One thread per input cell: dy * inv of every window covering it, ascending output order
 * from 0 (the CPU scatters in that order). */
static __global__ void avgpool_bwd_kernel(const float *__restrict__ dy, pool_geom g, float inv, int64_t count,
                                   float *__restrict__ dx)
{
    GRID_STRIDE(e, count)
    {
        const int64_t pl = e / ((int64_t)g.H * g.W);
        const int cell = (int)(e - pl * g.H * g.W), iy = cell / g.W, ix = cell % g.W;
        const size_t base = (size_t)pl * g.Ho * g.Wo;
        int ylo, yhi, xlo, xhi;
        covering(iy, g.k, g.s, g.p, g.Ho, &ylo, &yhi);
        covering(ix, g.k, g.s, g.p, g.Wo, &xlo, &xhi);
        float sum = 0.0f;
        for (int oy = ylo; oy <= yhi; oy++)
            for (int ox = xlo; ox <= xhi; ox++)
                sum = __fadd_rn(sum, __fmul_rn(dy[base + (size_t)oy * g.Wo + ox], inv));
        dx[e] = sum;
    }
}

dlu_status dlu__cuda_maxpool_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const int64_t cnt = (int64_t)a->n * a->l->out_size;
    if (!cnt)
        return DLU_OK;
    LAUNCH(maxpool_fwd_kernel, cnt, be, CF32(a->x), pgeom(a->l), cnt, F32(a->y), (int32_t *)a->aux->data);
    return DLU__CUDA_LAUNCHED(be, "maxpool forward kernel");
}

dlu_status dlu__cuda_maxpool_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const int64_t cnt = (int64_t)a->n * a->l->in_size;
    if (!a->dx || !cnt)
        return DLU_OK;
    LAUNCH(maxpool_bwd_kernel, cnt, be, CF32(a->dy), (const int32_t *)a->aux->data, pgeom(a->l), cnt, F32(a->dx));
    return DLU__CUDA_LAUNCHED(be, "maxpool backward kernel");
}

dlu_status dlu__cuda_avgpool_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const int64_t cnt = (int64_t)a->n * a->l->out_size;
    const float inv = 1.0f / (float)(a->l->kernel * a->l->kernel);
    if (!cnt)
        return DLU_OK;
    LAUNCH(avgpool_fwd_kernel, cnt, be, CF32(a->x), pgeom(a->l), inv, cnt, F32(a->y));
    return DLU__CUDA_LAUNCHED(be, "avgpool forward kernel");
}

dlu_status dlu__cuda_avgpool_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const int64_t cnt = (int64_t)a->n * a->l->in_size;
    const float inv = 1.0f / (float)(a->l->kernel * a->l->kernel);
    if (!a->dx || !cnt)
        return DLU_OK;
    LAUNCH(avgpool_bwd_kernel, cnt, be, CF32(a->dy), pgeom(a->l), inv, cnt, F32(a->dx));
    return DLU__CUDA_LAUNCHED(be, "avgpool backward kernel");
}

/* ------------------------------------------------------------------------------------ */
/* softmax cross-entropy                                                                */
/* ------------------------------------------------------------------------------------ */

/* One thread per row: numerics.h's row function (probabilities into prob, the row's loss),
 * and whether the first maximum is the label. A label outside [0, C) (the CPU returns
 * DLU_EINVAL for it) gives NaN probabilities and a NaN loss. */
static __global__ void xent_rows_kernel(const float *__restrict__ x, const int32_t *__restrict__ lab, int n, int C,
                                 float *__restrict__ prob, float *__restrict__ row_loss, int32_t *__restrict__ hit)
{
    GRID_STRIDE(i, (int64_t)n)
    {
        const float *xi = x + (size_t)i * C;
        float *pi = prob + (size_t)i * C;
        float loss;
        if (dlu_softmax_xent_row(xi, C, lab[i], pi, &loss) != DLU_OK) {
            for (int c = 0; c < C; c++)
                pi[c] = dlu__nanf();
            loss = dlu__nanf();
        }
        int am = 0;
        for (int c = 1; c < C; c++)
            if (xi[c] > xi[am])
                am = c;
        row_loss[i] = loss;
        hit[i] = am == lab[i];
    }
}

/* NaN payloads. numerics.h returns its canonical quiet NaN 0x7fc00000 for a bad row, and on
 * the CPU an operation with a NaN operand returns that NaN, so the CPU's loss and gradient
 * of such a row are 0x7fc00000 again (the loss widened to the double 0x7ff8000000000000); a
 * GPU returns its own NaN (0x7fffffff) instead. The two kernels below therefore write
 * numerics.h's NaN for a NaN result, to give the CPU's bits. */
static __device__ float canon_nan(float v) { return v != v ? dlu__nanf() : v; }

/* One thread: the mean loss as dlu_softmax_xent sums it (fp32, ascending rows from 0, one
 * division), and the correct count; into the deferred result slots (NULL: not wanted). */
static __global__ void xent_mean_kernel(const float *__restrict__ row_loss, const int32_t *__restrict__ hit, int n,
                                 double *loss_out, int64_t *correct_out)
{
    if (blockIdx.x != 0 || threadIdx.x != 0)
        return;
    float sum = 0.0f;
    int64_t ok = 0;
    for (int i = 0; i < n; i++) {
        sum = DLU_FADD(sum, row_loss[i]);
        ok += hit[i];
    }
    const float mean = DLU_FDIV(sum, (float)n);
    /* a NaN as the CPU widens 0x7fc00000, whatever the GPU's conversion does to NaNs */
    if (loss_out)
        *loss_out = mean != mean ? __longlong_as_double(0x7FF8000000000000LL) : (double)mean;
    if (correct_out)
        *correct_out = ok;
}

static __global__ void xent_grad_kernel(const float *__restrict__ prob, const int32_t *__restrict__ lab, int n, int C,
                                 float *__restrict__ dx)
{
    GRID_STRIDE(i, (int64_t)n)
    {
        float *di = dx + (size_t)i * C;
        if (dlu_softmax_xent_grad_row(prob + (size_t)i * C, C, lab[i], n, di) != DLU_OK)
            for (int c = 0; c < C; c++)
                di[c] = dlu__nanf();
        else
            for (int c = 0; c < C; c++)
                di[c] = canon_nan(di[c]);
    }
}

dlu_status dlu__cuda_softmax_xent_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const int n = a->n, C = (int)a->l->in_size;
    float *row_loss = (float *)a->ws;
    int32_t *hit = (int32_t *)(row_loss + align_f((size_t)n));
    if (n < 1)
        return DLU_OK;
    LAUNCH(xent_rows_kernel, n, be, CF32(a->x), (const int32_t *)a->labels->data, n, C, F32(a->aux), row_loss, hit);
    TRY(DLU__CUDA_LAUNCHED(be, "softmax_xent forward: row kernel"));
    if (!a->loss && !a->correct)
        return DLU_OK;
    double *loss_slot = NULL;
    int64_t *correct_slot = NULL;
    if (a->loss && !(loss_slot = (double *)dlu__cuda_result(be, a->loss, sizeof(double))))
        return dlu__error_prefix(DLU_EINTERNAL, "softmax_xent forward: loss result slot: ");
    if (a->correct && !(correct_slot = (int64_t *)dlu__cuda_result(be, a->correct, sizeof(int64_t))))
        return dlu__error_prefix(DLU_EINTERNAL, "softmax_xent forward: correct-count result slot: ");
    xent_mean_kernel<<<1, 1, 0, STREAM(be)>>>(row_loss, hit, n, loss_slot, correct_slot);
    return DLU__CUDA_LAUNCHED(be, "softmax_xent forward: mean loss kernel");
}

dlu_status dlu__cuda_softmax_xent_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const int n = a->n, C = (int)a->l->in_size;
    if (!a->dx || n < 1)
        return DLU_OK;
    LAUNCH(xent_grad_kernel, n, be, CF32(a->aux), (const int32_t *)a->labels->data, n, C, F32(a->dx));
    return DLU__CUDA_LAUNCHED(be, "softmax_xent backward kernel");
}
