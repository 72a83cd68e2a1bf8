/* cuda_dfp.cu -- dynamic fixed point kernels of the CUDA backend: cpu_dfp.c on the GPU,
 * bit for bit (contract: cpu_dfp.c and docs/numerics.md).
 *
 * What it is: every DFP entry point of cuda_impl.h. The layers do what cpu_dfp.c does, in
 * the same order of sites: weights quantized from the fp32 master copy at each forward;
 * linear and conv2d multiply integers exactly (cuda_igemm.h: int8 GEMMs on cuBLASLt, the
 * int16 digit split, or a simple exact kernel; every path exact, so chunking and
 * blocking cannot change bits), add the fp32 bias converted with dlu_bias_to_acc through
 * dlu_add_sat_i64, and requantize the full-width int64 accumulators of the whole output
 * tensor once, through cuda_quant.h's site helpers: element i of a tensor always rounds
 * with the stochastic-rounding bits of its row-major index i, and every site's statistics
 * cover the same elements as on the CPU. relu, maxpool and flatten keep their input's
 * exponent and record statistics in the same pass (stats_inherit); avgpool sums exactly
 * and lowers the exponent by log2(area); softmax_xent dequantizes the logits and runs
 * numerics.h's deterministic softmax, one thread per row, then one thread sums the row
 * losses in ascending order (as dlu_softmax_xent) into a deferred result.
 *
 * Layouts (as the CPU's): linear fwd acc (n, out) = x (n, in) * wq (out, in)^T; bwd
 * dx = dy (n, out, padded) * wq^T (in, out, padded)^T, dW = dy^T (out, n) * x^T (in, n)^T.
 * conv2d per chunk of G samples: fwd rows (G*HW, ckk) by im2row, C (F, G*HW) = wq (F, ckk)
 * * rows^T, scattered into (n, F, HW) with the bias; bwd dW (F, ckk) += dy (F, G*HW) *
 * col (ckk, G*HW)^T, dcol (ckk, G*HW) = wq^T (ckk, F) * dy^T (G*HW, F)^T folded back into dx
 * by a gather (each input pixel sums its own columns: no atomics). Every buffer we own has
 * its K dimension padded with zeros to a multiple of 16 so that cuBLASLt takes it.
 *
 * Workspace (a->ws, dlu__cuda_dfp_ws bytes, device memory): an arena of 256-byte aligned
 * pieces taken in a fixed order per kernel; the integer GEMMs get what is left of it as
 * scratch. No allocation during a step.
 *
 * What it is not: not the numerics (dlu/numerics.h), not the fp32 kernels (cuda_fp32.cu).
 * A label outside [0, classes) cannot be reported from the device: its row's loss and
 * probabilities are NaN (the CPU returns DLU_EINVAL for it; the net checks labels when it
 * can read them). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda_igemm.h"
#include "cuda_impl.h"
#include "cuda_quant.h"
#include "error.h"

namespace {

/* ---- errors, launches, workspace --------------------------------------------------------- */

/* DLU_OK, or an error naming the op, the layer and `what`. */
dlu_status chk(dlu_backend *be, const dlu__layer *l, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return DLU_OK;
    char buf[200];
    snprintf(buf, sizeof buf, "dfp %s [%s]: %s", dlu_op_name(l->op), l->name, what);
    return dlu__cuda_err(be, e, buf);
}

const int THREADS = 256;

template <class F>
__global__ void __launch_bounds__(THREADS) each_kernel(F f, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        f(i);
}

/* Run f(i) for every i in [0, n) on the backend's stream. */
template <class F>
dlu_status each(dlu_backend *be, const dlu__layer *l, const F &f, size_t n, const char *what)
{
    if (n == 0)
        return DLU_OK;
    size_t b = (n + THREADS - 1) / THREADS;
    if (b > 65536)
        b = 65536;
    each_kernel<F><<<(unsigned)b, THREADS, 0, dlu__cuda_of(be)->stream>>>(f, n);
    return chk(be, l, cudaGetLastError(), what);
}

size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }
int64_t round16(int64_t x) { return (x + 15) & ~(int64_t)15; }

struct arena {
    uint8_t *p;
    size_t left;
};

arena arena_init(void *ws, size_t nbytes)
{
    const uintptr_t b = (uintptr_t)ws, a = (b + 255) & ~(uintptr_t)255;
    arena ar;
    ar.p = (uint8_t *)a;
    ar.left = nbytes > a - b ? nbytes - (a - b) : 0;
    return ar;
}

void *take(arena *a, size_t nbytes)
{
    const size_t n = align256(nbytes);
    if (!a->p || n > a->left)
        return NULL; /* dlu__cuda_dfp_ws() is wrong: a programmer error, reported by the caller */
    void *r = a->p;
    a->p += n;
    a->left -= n;
    return r;
}

#define TAKE(l, ar, var, count)                                                                                 \
    do {                                                                                                        \
        (var) = (decltype(var))take((ar), (size_t)(count) * sizeof *(var));                                    \
        if (!(var))                                                                                             \
            return dlu__error(DLU_EINTERNAL, "dfp %s [%s]: cuda workspace too small (%s:%d)", dlu_op_name((l)->op), \
                              (l)->name, __FILE__, __LINE__);                                                    \
    } while (0)

/* Arena size of pieces taken in this order: the pieces, the largest GEMM scratch, and 256
 * bytes for aligning the base. */
struct ws_sum {
    size_t n = 256;
    void add(size_t nbytes) { n += align256(nbytes); }
};

int wide(const dlu_tensor *t) { return t->dtype == DLU_DTYPE_I16; }
size_t max2(size_t a, size_t b) { return a > b ? a : b; }

/* C (M, N) = A (M, K) * B (N, K)^T exactly as int64 (accumulate: C +=), scratch = the rest
 * of the arena. */
dlu_status qgemm(dlu_backend *be, const dlu__layer *l, int M, int N, int K, const void *A, int wa, int64_t lda,
                 const void *B, int wb, int64_t ldb, int64_t *C, int64_t ldc, int accumulate, const arena &ar)
{
    dlu_status s = dlu__cuda_igemm_nt(be, M, N, K, A, wa, lda, B, wb, ldb, C, ldc, accumulate, ar.p, ar.left);
    if (s != DLU_OK)
        return dlu__error_prefix(s, "dfp %s [%s]: integer GEMM %d x %d x %d: ", dlu_op_name(l->op), l->name, M, N, K);
    return DLU_OK;
}

/* The scratch of an integer GEMM of these sizes, for any operand widths. */
size_t gemm_scratch(int64_t M, int64_t N, int64_t K)
{
    return dlu__cuda_igemm_scratch((int)M, (int)N, (int)K, 1, 1);
}

/* ---- layout kernels ----------------------------------------------------------------------- */

/* dst (cols, ldd) = src (rows, cols; row stride lds)^T; columns [rows, ldd) of dst are zero.
 * 32 x 32 tiles through shared memory, so both sides are read and written in rows. */
template <typename T>
__global__ void __launch_bounds__(THREADS) transpose_kernel(const T *src, int64_t rows, int64_t cols, int64_t lds,
                                                           T *dst, int64_t ldd)
{
    __shared__ T tile[32][33];
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5; /* 32 x 8 */
    for (int64_t c0 = (int64_t)blockIdx.y * 32; c0 < cols; c0 += (int64_t)gridDim.y * 32)
        for (int64_t r0 = (int64_t)blockIdx.x * 32; r0 < ldd; r0 += (int64_t)gridDim.x * 32) {
            for (int j = ty; j < 32; j += 8) {
                const int64_t r = r0 + j, c = c0 + tx;
                tile[j][tx] = (r < rows && c < cols) ? src[r * lds + c] : (T)0;
            }
            __syncthreads();
            for (int j = ty; j < 32; j += 8) {
                const int64_t c = c0 + j, r = r0 + tx;
                if (c < cols && r < ldd)
                    dst[c * ldd + r] = tile[tx][j];
            }
            __syncthreads();
        }
}

/* An i8 or i16 matrix (rows, cols, stride lds) transposed into (cols, ldd), ldd >= rows. */
dlu_status qtranspose(dlu_backend *be, const dlu__layer *l, const void *src, int w, int64_t rows, int64_t cols,
                      int64_t lds, void *dst, int64_t ldd)
{
    if (rows == 0 || cols == 0)
        return DLU_OK;
    const int64_t bx = (ldd + 31) / 32, by = (cols + 31) / 32;
    const dim3 grid((unsigned)(bx < 65535 ? bx : 65535), (unsigned)(by < 65535 ? by : 65535));
    cudaStream_t st = dlu__cuda_of(be)->stream;
    if (w)
        transpose_kernel<int16_t><<<grid, THREADS, 0, st>>>((const int16_t *)src, rows, cols, lds, (int16_t *)dst, ldd);
    else
        transpose_kernel<int8_t><<<grid, THREADS, 0, st>>>((const int8_t *)src, rows, cols, lds, (int8_t *)dst, ldd);
    return chk(be, l, cudaGetLastError(), "transposing an integer matrix");
}

/* dst (rows, ldd) = src (rows, cols; stride lds) with columns [cols, ldd) zero. */
template <typename T>
struct f_pad {
    const T *src;
    T *dst;
    int64_t cols, lds, ldd;
    __device__ void operator()(size_t i) const
    {
        const int64_t r = (int64_t)i / ldd, c = (int64_t)i % ldd;
        dst[i] = c < cols ? src[r * lds + c] : (T)0;
    }
};

dlu_status qpad(dlu_backend *be, const dlu__layer *l, const void *src, int w, int64_t rows, int64_t cols,
                int64_t lds, void *dst, int64_t ldd)
{
    const size_t n = (size_t)rows * (size_t)ldd;
    if (w) {
        f_pad<int16_t> f = {(const int16_t *)src, (int16_t *)dst, cols, lds, ldd};
        return each(be, l, f, n, "padding an integer matrix");
    }
    f_pad<int8_t> f = {(const int8_t *)src, (int8_t *)dst, cols, lds, ldd};
    return each(be, l, f, n, "padding an integer matrix");
}

/* ---- site statistics for the inherited-exponent ops ----------------------------------------- */

/* The status word stats_inherit records for an integer v of a `bits`-bit tensor at e
 * (dlu__cpu_stats_q: a requantization of int64 v at ea = eo = e). */
__device__ __forceinline__ uint32_t inherit_info(int32_t v, int e, int bits)
{
    uint32_t info;
    (void)dlu_dfp_requantize((int64_t)v, e, e, bits, DLU_ROUND_NEAREST, 0, &info);
    return info;
}

/* Take q's statistics slot, run op over n elements into it, and set q->exp = e. */
template <class Op>
dlu_status produce_inherit(dlu_backend *be, const dlu__layer *l, dlu__qsite *q, const Op &op, size_t n, int e,
                           const char *what)
{
    dlu_stats *st = dlu__cuda_stats_slot(be, &q->stats);
    if (!st)
        return dlu__error_prefix(DLU_EINTERNAL, "dfp %s [%s]: site %s: no room for its statistics: ",
                                 dlu_op_name(l->op), l->name, q->name);
    char buf[160];
    snprintf(buf, sizeof buf, "dfp %s [%s]: %s", dlu_op_name(l->op), l->name, what);
    DLU__TRY(dlu__cuda_produce(be, op, n, st, buf));
    q->exp = e;
    return DLU_OK;
}

/* ---- relu, flatten ----------------------------------------------------------------------- */

template <typename TX>
struct op_relu {
    const TX *x;
    TX *y;
    int e, bits;
    __device__ uint32_t operator()(size_t i) const
    {
        const TX v = x[i] > 0 ? x[i] : (TX)0;
        y[i] = v;
        return inherit_info(v, e, bits);
    }
};

template <typename TY, typename TD>
struct op_relu_bwd {
    const TY *y;
    const TD *dy;
    TD *dx;
    int e, bits;
    __device__ uint32_t operator()(size_t i) const
    {
        const TD v = y[i] > 0 ? dy[i] : (TD)0;
        dx[i] = v;
        return inherit_info(v, e, bits);
    }
};

template <typename T>
struct op_copy {
    const T *x;
    T *y;
    int e, bits;
    __device__ uint32_t operator()(size_t i) const
    {
        const T v = x[i];
        y[i] = v;
        return inherit_info(v, e, bits);
    }
};

template <typename TY, typename TD>
dlu_status relu_bwd_typed(dlu_backend *be, const dlu__op_args *a, size_t n)
{
    op_relu_bwd<TY, TD> op = {(const TY *)a->y->data, (const TD *)a->dy->data, (TD *)a->dx->data, a->dy->exp,
                              wide(a->dx) ? 16 : 8};
    return produce_inherit(be, a->l, a->qdx, op, n, a->dy->exp, "relu backward");
}

template <typename T>
dlu_status copy_inherit(dlu_backend *be, const dlu__layer *l, dlu__qsite *q, const dlu_tensor *x, dlu_tensor *y,
                        size_t n)
{
    op_copy<T> op = {(const T *)x->data, (T *)y->data, x->exp, sizeof(T) == 2 ? 16 : 8};
    y->exp = x->exp;
    return produce_inherit(be, l, q, op, n, x->exp, "copy");
}

/* ---- linear ---------------------------------------------------------------------------- */

/* acc (n, out) = sat(acc + bias_to_acc(b[j], ea)) */
struct f_bias_rows {
    int64_t *acc;
    const float *b;
    int64_t out;
    int ea;
    __device__ void operator()(size_t i) const
    {
        acc[i] = dlu_add_sat_i64(acc[i], dlu_bias_to_acc(b[(int64_t)i % out], ea));
    }
};

/* sum[j] += column j of an integer matrix (rows, cols) over rows [ch*R, ch*R + R); one
 * thread per (chunk, column), exact int64, atomically added (order-free integer sums). */
template <typename T>
struct f_colsum {
    const T *m;
    int64_t *sum;
    int64_t rows, cols, R;
    __device__ void operator()(size_t i) const
    {
        const int64_t j = (int64_t)i % cols, r0 = (int64_t)i / cols * R, r1 = r0 + R < rows ? r0 + R : rows;
        long long s = 0;
        for (int64_t r = r0; r < r1; r++)
            s += m[r * cols + j];
        if (s)
            atomicAdd((unsigned long long *)&sum[j], (unsigned long long)s);
    }
};

dlu_status qcolsum(dlu_backend *be, const dlu__layer *l, const void *m, int w, int64_t rows, int64_t cols,
                   int64_t *sum)
{
    DLU__TRY(chk(be, l, cudaMemsetAsync(sum, 0, (size_t)cols * sizeof *sum, dlu__cuda_of(be)->stream),
                 "clearing the bias gradient"));
    const int64_t R = 64, nch = (rows + R - 1) / R;
    if (w) {
        f_colsum<int16_t> f = {(const int16_t *)m, sum, rows, cols, R};
        return each(be, l, f, (size_t)(nch * cols), "bias gradient sums");
    }
    f_colsum<int8_t> f = {(const int8_t *)m, sum, rows, cols, R};
    return each(be, l, f, (size_t)(nch * cols), "bias gradient sums");
}

struct linear_dims {
    int n, in, out;
    int64_t outp, np; /* out and n padded to multiples of 16 */
};

linear_dims linear_of(const dlu__layer *l, int n)
{
    linear_dims d;
    d.n = n;
    d.in = (int)l->in_size;
    d.out = l->out;
    d.outp = round16(d.out);
    d.np = round16(n);
    return d;
}

size_t linear_ws(const dlu__layer *l, int n)
{
    const linear_dims d = linear_of(l, n);
    ws_sum f, b;
    f.add((size_t)d.n * d.out * 8);                                       /* acc */
    f.n += gemm_scratch(d.n, d.out, d.in);
    b.add((size_t)(d.n > d.out ? d.n : d.out) * d.in * 8);                 /* acc */
    b.add((size_t)d.in * d.outp * 2);                                     /* wqt */
    b.add((size_t)d.n * d.outp * 2);                                      /* dyp */
    b.add((size_t)d.out * d.np * 2);                                      /* dyt */
    b.add((size_t)d.in * d.np * 2);                                       /* xt */
    b.add((size_t)d.out * 8);                                             /* bacc */
    b.n += max2(gemm_scratch(d.n, d.in, d.outp), gemm_scratch(d.out, d.in, d.np));
    return max2(f.n, b.n);
}

} // namespace

extern "C" dlu_status dlu__cuda_linear_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const linear_dims d = linear_of(l, a->n);
    arena ar = arena_init(a->ws, linear_ws(l, a->n));
    DLU__TRY(dlu__cuda_quant_site(be, a->qw, (const float *)a->w->data, (size_t)d.out * d.in, a->wq, a->seed, a->step));
    int64_t *acc;
    TAKE(l, &ar, acc, (size_t)d.n * d.out);
    DLU__TRY(qgemm(be, l, d.n, d.out, d.in, a->x->data, wide(a->x), d.in, a->wq->data, wide(a->wq), d.in, acc, d.out,
                   0, ar));
    const int ea = a->x->exp + a->wq->exp;
    if (a->b) {
        f_bias_rows f = {acc, (const float *)a->b->data, d.out, ea};
        DLU__TRY(each(be, l, f, (size_t)d.n * d.out, "adding the bias"));
    }
    return dlu__cuda_requant_site(be, a->qy, acc, (size_t)d.n * d.out, ea, a->y, a->seed, a->step);
}

extern "C" dlu_status dlu__cuda_linear_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const linear_dims d = linear_of(l, a->n);
    const dlu_tensor *dy = a->dy, *x = a->x, *wq = a->wq;
    const int wd = wide(dy), wx = wide(x), ww = wide(wq);
    arena ar = arena_init(a->ws, linear_ws(l, a->n));
    int64_t *acc, *bacc;
    int16_t *wqt, *dyp, *dyt, *xt; /* i8 or i16 data; int16_t sizes the buffers for both */
    TAKE(l, &ar, acc, (size_t)(d.n > d.out ? d.n : d.out) * d.in);
    TAKE(l, &ar, wqt, (size_t)d.in * d.outp);
    TAKE(l, &ar, dyp, (size_t)d.n * d.outp);
    TAKE(l, &ar, dyt, (size_t)d.out * d.np);
    TAKE(l, &ar, xt, (size_t)d.in * d.np);
    TAKE(l, &ar, bacc, (size_t)d.out);
    if (a->dx) {
        /* dx (n, in) = dy (n, out) * wq (out, in): B = wq^T (in, out), K padded to outp */
        DLU__TRY(qtranspose(be, l, wq->data, ww, d.out, d.in, d.in, wqt, d.outp));
        DLU__TRY(qpad(be, l, dy->data, wd, d.n, d.out, d.out, dyp, d.outp));
        DLU__TRY(qgemm(be, l, d.n, d.in, (int)d.outp, dyp, wd, d.outp, wqt, ww, d.outp, acc, d.in, 0, ar));
        DLU__TRY(dlu__cuda_requant_site(be, a->qdx, acc, (size_t)d.n * d.in, dy->exp + wq->exp, a->dx, a->seed,
                                        a->step));
    }
    /* dW (out, in) = dy^T (out, n) * x (n, in): A = dy^T, B = x^T (in, n), K padded to np */
    DLU__TRY(qtranspose(be, l, dy->data, wd, d.n, d.out, d.out, dyt, d.np));
    DLU__TRY(qtranspose(be, l, x->data, wx, d.n, d.in, d.in, xt, d.np));
    DLU__TRY(qgemm(be, l, d.out, d.in, (int)d.np, dyt, wd, d.np, xt, wx, d.np, acc, d.in, 0, ar));
    DLU__TRY(dlu__cuda_grad_site(be, a->qdw, acc, (size_t)d.out * d.in, dy->exp + x->exp, (float *)a->dw->data,
                                 a->seed, a->step));
    if (a->db) {
        DLU__TRY(qcolsum(be, l, dy->data, wd, d.n, d.out, bacc));
        DLU__TRY(dlu__cuda_grad_site(be, a->qdb, bacc, (size_t)d.out, dy->exp, (float *)a->db->data, a->seed, a->step));
    }
    return DLU_OK;
}

/* ---- conv2d ---------------------------------------------------------------------------- */

namespace {

struct conv_dims {
    int n, C, H, W, k, st, pad, F, Ho, Wo;
    int64_t HW, in_size, out_size, ckk, ckkp, Fp;
    int G; /* samples per chunk */
};

/* Samples per chunk: the chunk's unfolded input (G*HW, ckkp) under 8 Mi elements, and its
 * columns G*HW <= 131056, so that the weight-gradient GEMM (K = G*HW padded to 16) stays
 * on the int32 path for dfp8. */
conv_dims conv_of(const dlu__layer *l, int n)
{
    conv_dims d;
    d.n = n;
    d.C = l->in_c;
    d.H = l->in_h;
    d.W = l->in_w;
    d.k = l->kernel;
    d.st = l->stride;
    d.pad = l->pad;
    d.F = l->out_c;
    d.Ho = l->out_h;
    d.Wo = l->out_w;
    d.HW = (int64_t)d.Ho * d.Wo;
    d.in_size = l->in_size;
    d.out_size = l->out_size;
    d.ckk = (int64_t)d.C * d.k * d.k;
    d.ckkp = round16(d.ckk);
    d.Fp = round16(d.F);
    int64_t g = ((int64_t)8 << 20) / (d.HW * d.ckkp);
    if (g * d.HW > 131056)
        g = 131056 / d.HW;
    if (g < 1)
        g = 1;
    d.G = (int)(g < n ? g : n);
    return d;
}

size_t conv_ws(const dlu__layer *l, int n)
{
    const conv_dims d = conv_of(l, n);
    const int64_t ghw = (int64_t)d.G * d.HW, ghwp = round16(ghw);
    ws_sum f, b;
    f.add((size_t)d.n * d.out_size * 8); /* acc */
    f.add((size_t)d.F * d.ckkp * 2);     /* wqp */
    f.add((size_t)ghw * d.ckkp * 2);     /* rows */
    f.add((size_t)d.F * ghw * 8);        /* cacc */
    f.n += gemm_scratch(d.F, ghw, d.ckkp);
    b.add((size_t)d.n * d.in_size * 8); /* dxacc */
    b.add((size_t)d.F * d.ckk * 8);     /* dwacc */
    b.add((size_t)d.F * 8);             /* bacc */
    b.add((size_t)d.ckk * ghwp * 2);    /* col */
    b.add((size_t)d.F * ghwp * 2);      /* dyt */
    b.add((size_t)ghw * d.Fp * 2);      /* dyr */
    b.add((size_t)d.ckk * d.Fp * 2);    /* wqt */
    b.add((size_t)d.ckk * ghw * 8);     /* cacc (dcol) */
    b.n += max2(gemm_scratch(d.F, d.ckk, ghwp), gemm_scratch(d.ckk, ghw, d.Fp));
    return max2(f.n, b.n);
}

/* rows (g*HW, ckkp) of samples i0.. : row s*HW + p (output position p of sample s), column
 * r = (c, ky, kx) < ckk, zero for padding and for r >= ckk (cpu_dfp.c's qim2row). */
template <typename T>
struct f_im2row {
    const T *x;
    T *rows;
    conv_dims d;
    int i0;
    __device__ void operator()(size_t e) const
    {
        const int64_t per = d.HW * d.ckkp;
        const int64_t s = (int64_t)e / per, rem = (int64_t)e % per, p = rem / d.ckkp, r = rem % d.ckkp;
        T v = 0;
        if (r < d.ckk) {
            const int c = (int)(r / (d.k * d.k)), ky = (int)(r / d.k % d.k), kx = (int)(r % d.k);
            const int oy = (int)(p / d.Wo), ox = (int)(p % d.Wo);
            const int iy = oy * d.st - d.pad + ky, ix = ox * d.st - d.pad + kx;
            if (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W)
                v = x[(i0 + s) * d.in_size + ((int64_t)c * d.H + iy) * d.W + ix];
        }
        rows[e] = v;
    }
};

/* col (ckk, ld) of samples i0.. : row r = (c, ky, kx), column s*HW + p < g*HW, zero for
 * padding and for columns >= g*HW (cpu_dfp.c's qim2col). */
template <typename T>
struct f_im2col {
    const T *x;
    T *col;
    conv_dims d;
    int i0;
    int64_t ghw, ld;
    __device__ void operator()(size_t e) const
    {
        const int64_t r = (int64_t)e / ld, q = (int64_t)e % ld;
        T v = 0;
        if (q < ghw) {
            const int64_t s = q / d.HW, p = q % d.HW;
            const int c = (int)(r / (d.k * d.k)), ky = (int)(r / d.k % d.k), kx = (int)(r % d.k);
            const int oy = (int)(p / d.Wo), ox = (int)(p % d.Wo);
            const int iy = oy * d.st - d.pad + ky, ix = ox * d.st - d.pad + kx;
            if (iy >= 0 && iy < d.H && ix >= 0 && ix < d.W)
                v = x[(i0 + s) * d.in_size + ((int64_t)c * d.H + iy) * d.W + ix];
        }
        col[e] = v;
    }
};

/* acc (n, F, HW) for samples i0.. = sat(cacc (F, g*HW) + bias_to_acc(b[f], ea)); the bias
 * is 0 without b, and the saturating add runs either way (as cpu_dfp.c). */
struct f_conv_scatter {
    const int64_t *cacc;
    int64_t *acc;
    const float *b;
    conv_dims d;
    int i0, ea;
    int64_t ghw;
    __device__ void operator()(size_t e) const
    {
        const int64_t f = (int64_t)e / ghw, q = (int64_t)e % ghw, s = q / d.HW, p = q % d.HW;
        const int64_t bb = b ? dlu_bias_to_acc(b[f], ea) : 0;
        acc[((i0 + s) * d.F + f) * d.HW + p] = dlu_add_sat_i64(cacc[e], bb);
    }
};

/* dyt (F, ld): the chunk's output gradients side by side, columns >= g*HW zero. */
template <typename T>
struct f_dy_gather {
    const T *dy;
    T *dyt;
    conv_dims d;
    int i0;
    int64_t ghw, ld;
    __device__ void operator()(size_t e) const
    {
        const int64_t f = (int64_t)e / ld, q = (int64_t)e % ld;
        dyt[e] = q < ghw ? dy[((i0 + q / d.HW) * d.F + f) * d.HW + q % d.HW] : (T)0;
    }
};

/* dxacc of samples i0.. : each input pixel (c, iy, ix) sums the dcol (ckk, g*HW) entries
 * that im2col took from it -- the fold of cpu_dfp.c's qcol2im, as a gather. */
struct f_col2im {
    const int64_t *dcol;
    int64_t *dx;
    conv_dims d;
    int i0;
    int64_t ghw;
    __device__ void operator()(size_t e) const
    {
        const int64_t s = (int64_t)e / d.in_size, rem = (int64_t)e % d.in_size;
        const int c = (int)(rem / ((int64_t)d.H * d.W)), iy = (int)(rem / d.W % d.H), ix = (int)(rem % d.W);
        int64_t sum = 0;
        for (int ky = 0; ky < d.k; ky++) {
            const int ty = iy + d.pad - ky;
            if (ty < 0 || ty % d.st)
                continue;
            const int oy = ty / d.st;
            if (oy >= d.Ho)
                continue;
            for (int kx = 0; kx < d.k; kx++) {
                const int tx = ix + d.pad - kx;
                if (tx < 0 || tx % d.st)
                    continue;
                const int ox = tx / d.st;
                if (ox >= d.Wo)
                    continue;
                const int64_t r = ((int64_t)c * d.k + ky) * d.k + kx;
                sum += dcol[r * ghw + s * d.HW + (int64_t)oy * d.Wo + ox];
            }
        }
        dx[(int64_t)i0 * d.in_size + (int64_t)e] = sum;
    }
};

/* bacc[f] += dy over one sample s and all HW positions of channel f (i = s*F + f). */
template <typename T>
struct f_chansum {
    const T *dy;
    int64_t *bacc;
    int64_t F, HW;
    __device__ void operator()(size_t i) const
    {
        const T *p = dy + (int64_t)i * HW;
        long long s = 0;
        for (int64_t q = 0; q < HW; q++)
            s += p[q];
        if (s)
            atomicAdd((unsigned long long *)&bacc[(int64_t)i % F], (unsigned long long)s);
    }
};

template <typename T>
dlu_status im2row(dlu_backend *be, const dlu__layer *l, const void *x, void *rows, const conv_dims &d, int i0, int g)
{
    f_im2row<T> f = {(const T *)x, (T *)rows, d, i0};
    return each(be, l, f, (size_t)g * d.HW * d.ckkp, "im2row");
}

template <typename T>
dlu_status im2col(dlu_backend *be, const dlu__layer *l, const void *x, void *col, const conv_dims &d, int i0,
                  int64_t ghw, int64_t ld)
{
    f_im2col<T> f = {(const T *)x, (T *)col, d, i0, ghw, ld};
    return each(be, l, f, (size_t)d.ckk * ld, "im2col");
}

template <typename T>
dlu_status dy_gather(dlu_backend *be, const dlu__layer *l, const void *dy, void *dyt, const conv_dims &d, int i0,
                     int64_t ghw, int64_t ld)
{
    f_dy_gather<T> f = {(const T *)dy, (T *)dyt, d, i0, ghw, ld};
    return each(be, l, f, (size_t)d.F * ld, "gathering output gradients");
}

template <typename T>
dlu_status chansum(dlu_backend *be, const dlu__layer *l, const void *dy, int64_t *bacc, const conv_dims &d)
{
    f_chansum<T> f = {(const T *)dy, bacc, d.F, d.HW};
    return each(be, l, f, (size_t)d.n * d.F, "bias gradient sums");
}

} // namespace

extern "C" dlu_status dlu__cuda_conv2d_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const conv_dims d = conv_of(l, a->n);
    const int wx = wide(a->x), ww = wide(a->wq);
    arena ar = arena_init(a->ws, conv_ws(l, a->n));
    DLU__TRY(dlu__cuda_quant_site(be, a->qw, (const float *)a->w->data, (size_t)d.F * d.ckk, a->wq, a->seed, a->step));
    const int ea = a->x->exp + a->wq->exp;
    int64_t *acc, *cacc;
    int16_t *wqp, *rows; /* i8 or i16 */
    TAKE(l, &ar, acc, (size_t)d.n * d.out_size);
    TAKE(l, &ar, wqp, (size_t)d.F * d.ckkp);
    TAKE(l, &ar, rows, (size_t)d.G * d.HW * d.ckkp);
    TAKE(l, &ar, cacc, (size_t)d.F * d.G * d.HW);
    DLU__TRY(qpad(be, l, a->wq->data, ww, d.F, d.ckk, d.ckk, wqp, d.ckkp));
    for (int i0 = 0; i0 < d.n; i0 += d.G) {
        const int g = d.n - i0 < d.G ? d.n - i0 : d.G;
        const int64_t ghw = (int64_t)g * d.HW;
        if (wx)
            DLU__TRY(im2row<int16_t>(be, l, a->x->data, rows, d, i0, g));
        else
            DLU__TRY(im2row<int8_t>(be, l, a->x->data, rows, d, i0, g));
        /* cacc (F, g*HW) = wq (F, ckk) * rows (g*HW, ckk)^T, K padded with zeros */
        DLU__TRY(qgemm(be, l, d.F, (int)ghw, (int)d.ckkp, wqp, ww, d.ckkp, rows, wx, d.ckkp, cacc, ghw, 0, ar));
        f_conv_scatter f = {cacc, acc, a->b ? (const float *)a->b->data : NULL, d, i0, ea, ghw};
        DLU__TRY(each(be, l, f, (size_t)d.F * ghw, "scattering the chunk with its bias"));
    }
    return dlu__cuda_requant_site(be, a->qy, acc, (size_t)d.n * d.out_size, ea, a->y, a->seed, a->step);
}

extern "C" dlu_status dlu__cuda_conv2d_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const conv_dims d = conv_of(l, a->n);
    const int wx = wide(a->x), wd = wide(a->dy), ww = wide(a->wq);
    const int64_t Gp = round16((int64_t)d.G * d.HW);
    arena ar = arena_init(a->ws, conv_ws(l, a->n));
    int64_t *dxacc, *dwacc, *bacc, *cacc;
    int16_t *col, *dyt, *dyr, *wqt; /* i8 or i16 */
    TAKE(l, &ar, dxacc, (size_t)d.n * d.in_size);
    TAKE(l, &ar, dwacc, (size_t)d.F * d.ckk);
    TAKE(l, &ar, bacc, (size_t)d.F);
    TAKE(l, &ar, col, (size_t)d.ckk * Gp);
    TAKE(l, &ar, dyt, (size_t)d.F * Gp);
    TAKE(l, &ar, dyr, (size_t)d.G * d.HW * d.Fp);
    TAKE(l, &ar, wqt, (size_t)d.ckk * d.Fp);
    TAKE(l, &ar, cacc, (size_t)d.ckk * d.G * d.HW);
    if (a->db) {
        DLU__TRY(chk(be, l, cudaMemsetAsync(bacc, 0, (size_t)d.F * sizeof *bacc, dlu__cuda_of(be)->stream),
                     "clearing the bias gradient"));
        if (wd)
            DLU__TRY(chansum<int16_t>(be, l, a->dy->data, bacc, d));
        else
            DLU__TRY(chansum<int8_t>(be, l, a->dy->data, bacc, d));
    }
    if (a->dx) /* wqt (ckk, Fp) = wq^T */
        DLU__TRY(qtranspose(be, l, a->wq->data, ww, d.F, d.ckk, d.ckk, wqt, d.Fp));
    for (int i0 = 0; i0 < d.n; i0 += d.G) {
        const int g = d.n - i0 < d.G ? d.n - i0 : d.G;
        const int64_t ghw = (int64_t)g * d.HW, ghwp = round16(ghw);
        if (wd)
            DLU__TRY(dy_gather<int16_t>(be, l, a->dy->data, dyt, d, i0, ghw, ghwp));
        else
            DLU__TRY(dy_gather<int8_t>(be, l, a->dy->data, dyt, d, i0, ghw, ghwp));
        if (wx)
            DLU__TRY(im2col<int16_t>(be, l, a->x->data, col, d, i0, ghw, ghwp));
        else
            DLU__TRY(im2col<int8_t>(be, l, a->x->data, col, d, i0, ghw, ghwp));
        /* dW (F, ckk) += dyt (F, g*HW) * col (ckk, g*HW)^T */
        DLU__TRY(qgemm(be, l, d.F, (int)d.ckk, (int)ghwp, dyt, wd, ghwp, col, wx, ghwp, dwacc, d.ckk, i0 > 0, ar));
        if (!a->dx)
            continue;
        /* dcol (ckk, g*HW) = wq^T (ckk, F) * dyr (g*HW, F)^T, dyr = dyt^T; then the fold */
        DLU__TRY(qtranspose(be, l, dyt, wd, d.F, ghw, ghwp, dyr, d.Fp));
        DLU__TRY(qgemm(be, l, (int)d.ckk, (int)ghw, (int)d.Fp, wqt, ww, d.Fp, dyr, wd, d.Fp, cacc, ghw, 0, ar));
        f_col2im f = {cacc, dxacc, d, i0, ghw};
        DLU__TRY(each(be, l, f, (size_t)g * d.in_size, "folding columns back into the input gradient"));
    }
    DLU__TRY(dlu__cuda_grad_site(be, a->qdw, dwacc, (size_t)d.F * d.ckk, a->dy->exp + a->x->exp,
                                 (float *)a->dw->data, a->seed, a->step));
    if (a->db)
        DLU__TRY(dlu__cuda_grad_site(be, a->qdb, bacc, (size_t)d.F, a->dy->exp, (float *)a->db->data, a->seed,
                                     a->step));
    if (a->dx)
        DLU__TRY(dlu__cuda_requant_site(be, a->qdx, dxacc, (size_t)d.n * d.in_size, a->dy->exp + a->wq->exp, a->dx,
                                        a->seed, a->step));
    return DLU_OK;
}

/* ---- relu, flatten ----------------------------------------------------------------------- */

extern "C" dlu_status dlu__cuda_relu_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const size_t n = (size_t)a->n * a->l->out_size;
    const int e = a->x->exp;
    a->y->exp = e;
    if (wide(a->x)) {
        op_relu<int16_t> op = {(const int16_t *)a->x->data, (int16_t *)a->y->data, e, 16};
        return produce_inherit(be, a->l, a->qy, op, n, e, "relu forward");
    }
    op_relu<int8_t> op = {(const int8_t *)a->x->data, (int8_t *)a->y->data, e, 8};
    return produce_inherit(be, a->l, a->qy, op, n, e, "relu forward");
}

extern "C" dlu_status dlu__cuda_relu_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const size_t n = (size_t)a->n * a->l->out_size;
    a->dx->exp = a->dy->exp;
    if (wide(a->y) && wide(a->dy))
        return relu_bwd_typed<int16_t, int16_t>(be, a, n);
    if (wide(a->y))
        return relu_bwd_typed<int16_t, int8_t>(be, a, n);
    if (wide(a->dy))
        return relu_bwd_typed<int8_t, int16_t>(be, a, n);
    return relu_bwd_typed<int8_t, int8_t>(be, a, n);
}

extern "C" dlu_status dlu__cuda_flatten_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const size_t n = (size_t)a->n * a->l->out_size;
    if (wide(a->x))
        return copy_inherit<int16_t>(be, a->l, a->qy, a->x, a->y, n);
    return copy_inherit<int8_t>(be, a->l, a->qy, a->x, a->y, n);
}

extern "C" dlu_status dlu__cuda_flatten_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const size_t n = (size_t)a->n * a->l->in_size;
    if (wide(a->dy))
        return copy_inherit<int16_t>(be, a->l, a->qdx, a->dy, a->dx, n);
    return copy_inherit<int8_t>(be, a->l, a->qdx, a->dy, a->dx, n);
}

/* ---- pooling --------------------------------------------------------------------------- */

namespace {

struct pool_dims {
    int H, W, Ho, Wo, k, s, p;
};

pool_dims pool_of(const dlu__layer *l)
{
    pool_dims d = {l->in_h, l->in_w, l->out_h, l->out_w, l->kernel, l->stride, l->pad};
    return d;
}

/* The outputs [lo, hi] along one axis whose windows cover input coordinate i. */
__device__ __forceinline__ void covering(int i, int k, int s, int p, int no, int *lo, int *hi)
{
    const int t = i + p - k + 1;
    *lo = t <= 0 ? 0 : (t + s - 1) / s;
    const int h = (i + p) / s;
    *hi = h < no - 1 ? h : no - 1;
}

/* maxpool forward: first maximum in row-major window order, padded cells never win
 * (cpu_dfp.c's qmaxpool); y keeps x's exponent; arg is the winner's index in its plane. */
template <typename T>
struct op_maxpool {
    const T *x;
    T *y;
    int32_t *arg;
    pool_dims d;
    int e, bits;
    __device__ uint32_t operator()(size_t o) const
    {
        const int64_t HoWo = (int64_t)d.Ho * d.Wo, pl = (int64_t)o / HoWo, q = (int64_t)o % HoWo;
        const int oy = (int)(q / d.Wo), ox = (int)(q % d.Wo);
        const T *xp = x + pl * d.H * d.W;
        int32_t best = 0, bi = -1;
        for (int ky = 0; ky < d.k; ky++) {
            const int iy = oy * d.s - d.p + ky;
            if (iy < 0 || iy >= d.H)
                continue;
            for (int kx = 0; kx < d.k; kx++) {
                const int ix = ox * d.s - d.p + kx;
                if (ix < 0 || ix >= d.W)
                    continue;
                const int32_t v = xp[iy * d.W + ix];
                if (bi < 0 || v > best) {
                    best = v;
                    bi = iy * d.W + ix;
                }
            }
        }
        y[o] = (T)best;
        arg[o] = bi;
        return inherit_info(best, e, bits);
    }
};

/* maxpool backward: each input sums the gradients of the outputs it won (exact int64). */
template <typename T>
struct f_maxpool_bwd {
    const T *dy;
    const int32_t *arg;
    int64_t *acc;
    pool_dims d;
    __device__ void operator()(size_t e) const
    {
        const int64_t HW = (int64_t)d.H * d.W, HoWo = (int64_t)d.Ho * d.Wo, pl = (int64_t)e / HW;
        const int rem = (int)((int64_t)e % HW), iy = rem / d.W, ix = rem % d.W;
        int ylo, yhi, xlo, xhi;
        covering(iy, d.k, d.s, d.p, d.Ho, &ylo, &yhi);
        covering(ix, d.k, d.s, d.p, d.Wo, &xlo, &xhi);
        int64_t sum = 0;
        for (int oy = ylo; oy <= yhi; oy++)
            for (int ox = xlo; ox <= xhi; ox++) {
                const int64_t o = pl * HoWo + (int64_t)oy * d.Wo + ox;
                if (arg[o] == rem)
                    sum += dy[o];
            }
        acc[e] = sum;
    }
};

/* avgpool forward: the exact sum of the window's cells inside the plane. */
template <typename T>
struct f_avgpool_fwd {
    const T *x;
    int64_t *acc;
    pool_dims d;
    __device__ void operator()(size_t o) const
    {
        const int64_t HoWo = (int64_t)d.Ho * d.Wo, pl = (int64_t)o / HoWo, q = (int64_t)o % HoWo;
        const int oy = (int)(q / d.Wo), ox = (int)(q % d.Wo);
        const T *xp = x + pl * d.H * d.W;
        int64_t sum = 0;
        for (int ky = 0; ky < d.k; ky++) {
            const int iy = oy * d.s - d.p + ky;
            if (iy < 0 || iy >= d.H)
                continue;
            for (int kx = 0; kx < d.k; kx++) {
                const int ix = ox * d.s - d.p + kx;
                if (ix >= 0 && ix < d.W)
                    sum += xp[iy * d.W + ix];
            }
        }
        acc[o] = sum;
    }
};

/* avgpool backward: each input sums the gradients of every window that contains it. */
template <typename T>
struct f_avgpool_bwd {
    const T *dy;
    int64_t *acc;
    pool_dims d;
    __device__ void operator()(size_t e) const
    {
        const int64_t HW = (int64_t)d.H * d.W, HoWo = (int64_t)d.Ho * d.Wo, pl = (int64_t)e / HW;
        const int rem = (int)((int64_t)e % HW), iy = rem / d.W, ix = rem % d.W;
        int ylo, yhi, xlo, xhi;
        covering(iy, d.k, d.s, d.p, d.Ho, &ylo, &yhi);
        covering(ix, d.k, d.s, d.p, d.Wo, &xlo, &xhi);
        int64_t sum = 0;
        for (int oy = ylo; oy <= yhi; oy++)
            for (int ox = xlo; ox <= xhi; ox++)
                sum += dy[pl * HoWo + (int64_t)oy * d.Wo + ox];
        acc[e] = sum;
    }
};

/* One int64 accumulator per element of the larger of input and output. */
size_t pool_ws(const dlu__layer *l, int n)
{
    ws_sum w;
    w.add((size_t)n * (size_t)(l->in_size > l->out_size ? l->in_size : l->out_size) * 8);
    return w.n;
}

/* log2 of the window area (a power of two, checked when the net is set up). */
int log2_area(const dlu__layer *l)
{
    int a = l->kernel * l->kernel, lg = 0;
    while ((1 << lg) < a)
        lg++;
    return lg;
}

} // namespace

extern "C" dlu_status dlu__cuda_maxpool_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const pool_dims d = pool_of(a->l);
    const size_t n = (size_t)a->n * a->l->out_size;
    const int e = a->x->exp;
    a->y->exp = e;
    if (wide(a->x)) {
        op_maxpool<int16_t> op = {(const int16_t *)a->x->data, (int16_t *)a->y->data, (int32_t *)a->aux->data, d, e,
                                  16};
        return produce_inherit(be, a->l, a->qy, op, n, e, "maxpool forward");
    }
    op_maxpool<int8_t> op = {(const int8_t *)a->x->data, (int8_t *)a->y->data, (int32_t *)a->aux->data, d, e, 8};
    return produce_inherit(be, a->l, a->qy, op, n, e, "maxpool forward");
}

extern "C" dlu_status dlu__cuda_maxpool_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const dlu__layer *l = a->l;
    const pool_dims d = pool_of(l);
    const size_t n = (size_t)a->n * l->in_size;
    arena ar = arena_init(a->ws, pool_ws(l, a->n));
    int64_t *acc;
    TAKE(l, &ar, acc, n);
    if (wide(a->dy)) {
        f_maxpool_bwd<int16_t> f = {(const int16_t *)a->dy->data, (const int32_t *)a->aux->data, acc, d};
        DLU__TRY(each(be, l, f, n, "maxpool backward"));
    } else {
        f_maxpool_bwd<int8_t> f = {(const int8_t *)a->dy->data, (const int32_t *)a->aux->data, acc, d};
        DLU__TRY(each(be, l, f, n, "maxpool backward"));
    }
    return dlu__cuda_requant_site(be, a->qdx, acc, n, a->dy->exp, a->dx, a->seed, a->step);
}

extern "C" dlu_status dlu__cuda_avgpool_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const pool_dims d = pool_of(l);
    const size_t n = (size_t)a->n * l->out_size;
    arena ar = arena_init(a->ws, pool_ws(l, a->n));
    int64_t *acc;
    TAKE(l, &ar, acc, n);
    if (wide(a->x)) {
        f_avgpool_fwd<int16_t> f = {(const int16_t *)a->x->data, acc, d};
        DLU__TRY(each(be, l, f, n, "avgpool forward"));
    } else {
        f_avgpool_fwd<int8_t> f = {(const int8_t *)a->x->data, acc, d};
        DLU__TRY(each(be, l, f, n, "avgpool forward"));
    }
    return dlu__cuda_requant_site(be, a->qy, acc, n, a->x->exp - log2_area(l), a->y, a->seed, a->step);
}

extern "C" dlu_status dlu__cuda_avgpool_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const dlu__layer *l = a->l;
    const pool_dims d = pool_of(l);
    const size_t n = (size_t)a->n * l->in_size;
    arena ar = arena_init(a->ws, pool_ws(l, a->n));
    int64_t *acc;
    TAKE(l, &ar, acc, n);
    if (wide(a->dy)) {
        f_avgpool_bwd<int16_t> f = {(const int16_t *)a->dy->data, acc, d};
        DLU__TRY(each(be, l, f, n, "avgpool backward"));
    } else {
        f_avgpool_bwd<int8_t> f = {(const int8_t *)a->dy->data, acc, d};
        DLU__TRY(each(be, l, f, n, "avgpool backward"));
    }
    return dlu__cuda_requant_site(be, a->qdx, acc, n, a->dy->exp - log2_area(l), a->dx, a->seed, a->step);
}

/* ---- softmax cross-entropy ------------------------------------------------------------- */

namespace {

template <typename T>
struct f_dequant {
    const T *q;
    float *out;
    int e;
    __device__ void operator()(size_t i) const { out[i] = dlu_dfp_dequantize((int32_t)q[i], e); }
};

/* One row: dlu_softmax_xent_row (probabilities into prob, the row's loss), and whether its
 * first maximum is the label. A label outside [0, C) gives NaN loss and probabilities. */
struct f_xent_row {
    const float *logits;
    const int32_t *labels;
    float *prob, *loss;
    int32_t *hit;
    int C;
    __device__ void operator()(size_t b) const
    {
        const float *lg = logits + (int64_t)b * C;
        float *pr = prob + (int64_t)b * C;
        const int lab = labels[b];
        float l;
        if (dlu_softmax_xent_row(lg, C, lab, pr, &l) != DLU_OK) {
            l = dlu__nanf();
            for (int c = 0; c < C; c++)
                pr[c] = dlu__nanf();
        }
        loss[b] = l;
        int am = 0;
        for (int c = 1; c < C; c++)
            if (lg[c] > lg[am])
                am = c;
        hit[b] = am == lab;
    }
};

/* One thread: the mean loss summed in ascending row order in fp32 (dlu_softmax_xent), and
 * the correct count, into their deferred-result slots (either may be NULL). */
struct f_xent_mean {
    const float *loss;
    const int32_t *hit;
    int n;
    double *mean;
    int64_t *correct;
    __device__ void operator()(size_t) const
    {
        float sum = 0.0f;
        for (int b = 0; b < n; b++)
            sum = DLU_FADD(sum, loss[b]);
        if (mean)
            *mean = (double)DLU_FDIV(sum, (float)n);
        if (correct) {
            int64_t c = 0;
            for (int b = 0; b < n; b++)
                c += hit[b];
            *correct = c;
        }
    }
};

/* One row of the gradient (p - onehot) / n (dlu_softmax_xent_grad_row); NaN for a bad label. */
struct f_xent_grad {
    const float *prob;
    const int32_t *labels;
    float *g;
    int C, n;
    __device__ void operator()(size_t b) const
    {
        float *gr = g + (int64_t)b * C;
        if (dlu_softmax_xent_grad_row(prob + (int64_t)b * C, C, labels[b], n, gr) != DLU_OK)
            for (int c = 0; c < C; c++)
                gr[c] = dlu__nanf();
    }
};

size_t xent_ws(const dlu__layer *l, int n)
{
    ws_sum w;
    w.add((size_t)n * (size_t)l->in_size * sizeof(float)); /* logits (fwd) / gradient (bwd) */
    w.add((size_t)n * sizeof(float));                      /* row losses */
    w.add((size_t)n * sizeof(int32_t));                    /* row hits */
    return w.n;
}

} // namespace

extern "C" dlu_status dlu__cuda_softmax_xent_fwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int C = (int)l->in_size, n = a->n;
    arena ar = arena_init(a->ws, xent_ws(l, n));
    float *logits, *loss;
    int32_t *hit;
    TAKE(l, &ar, logits, (size_t)n * C);
    TAKE(l, &ar, loss, (size_t)n);
    TAKE(l, &ar, hit, (size_t)n);
    if (wide(a->x)) {
        f_dequant<int16_t> f = {(const int16_t *)a->x->data, logits, a->x->exp};
        DLU__TRY(each(be, l, f, (size_t)n * C, "dequantizing the logits"));
    } else {
        f_dequant<int8_t> f = {(const int8_t *)a->x->data, logits, a->x->exp};
        DLU__TRY(each(be, l, f, (size_t)n * C, "dequantizing the logits"));
    }
    f_xent_row fr = {logits, (const int32_t *)a->labels->data, (float *)a->aux->data, loss, hit, C};
    DLU__TRY(each(be, l, fr, (size_t)n, "softmax cross-entropy rows"));
    double *mean = NULL;
    int64_t *correct = NULL;
    if (a->loss && !(mean = (double *)dlu__cuda_result(be, a->loss, sizeof(double))))
        return dlu__error_prefix(DLU_EINTERNAL, "dfp %s [%s]: no room for the loss: ", dlu_op_name(l->op), l->name);
    if (a->correct && !(correct = (int64_t *)dlu__cuda_result(be, a->correct, sizeof(int64_t))))
        return dlu__error_prefix(DLU_EINTERNAL, "dfp %s [%s]: no room for the correct count: ", dlu_op_name(l->op),
                                 l->name);
    if (!mean && !correct)
        return DLU_OK;
    f_xent_mean fm = {loss, hit, n, mean, correct};
    return each(be, l, fm, 1, "mean loss");
}

extern "C" dlu_status dlu__cuda_softmax_xent_bwd_dfp(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const dlu__layer *l = a->l;
    const int C = (int)l->in_size, n = a->n;
    arena ar = arena_init(a->ws, xent_ws(l, n));
    float *g;
    TAKE(l, &ar, g, (size_t)n * C);
    f_xent_grad f = {(const float *)a->aux->data, (const int32_t *)a->labels->data, g, C, n};
    DLU__TRY(each(be, l, f, (size_t)n, "softmax cross-entropy gradient"));
    return dlu__cuda_quant_site(be, a->qdx, g, (size_t)n * C, a->dx, a->seed, a->step);
}

/* ---- workspace, quantize ----------------------------------------------------------------- */

extern "C" size_t dlu__cuda_dfp_ws(const dlu__layer *l, int n)
{
    switch (l->op) {
    case DLU_OP_LINEAR: return linear_ws(l, n);
    case DLU_OP_CONV2D: return conv_ws(l, n);
    case DLU_OP_MAXPOOL:
    case DLU_OP_AVGPOOL: return pool_ws(l, n);
    case DLU_OP_SOFTMAX_XENT: return xent_ws(l, n);
    default: return 0;
    }
}

extern "C" dlu_status dlu__cuda_quantize(dlu_backend *be, const dlu_tensor *src, size_t n, dlu_tensor *dst,
                                        dlu__qsite *site, uint64_t seed, uint32_t step)
{
    return dlu__cuda_quant_site(be, site, (const float *)src->data, n, dst, seed, step);
}
