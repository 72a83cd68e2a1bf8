/* cpu_backend.c -- the CPU backend's vtable, host memory and optimizer updates.
 *
 * Optimizer contract (every backend follows it to the bit; fp32, no FMA contraction):
 *   SGD:  g' = g + wd*w;  v = momentum*v + g';  w = w - lr*v
 *         (PyTorch's SGD with dampening 0, not Nesterov; the first step sets v = g'
 *         because v starts at zero.)
 *   Adam: g' = g + wd*w;  m = b1*m + (1-b1)*g';  v = b2*v + (1-b2)*(g'*g');
 *         w = w - lr * ((m / bc1) / (sqrtf(v / bc2) + eps)), bc = 1 - b^t computed in
 *         double on the host and rounded to float once per step; (1-b) is rounded to
 *         float once. Every product and quotient is grouped exactly as written here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "error.h"
#include "igemm.h"

void dlu__cpu_sgemm(dlu_backend *be, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c,
                    int ldc)
{
    uint64_t t0 = dlu__now_ns();
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    be->prof.gemm_ns += dlu__now_ns() - t0;
    be->prof.gemm_calls++;
}

int dlu_cpu_set_threads(int n)
{
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    openblas_set_num_threads(n);
    dlu__igemm_set_threads(n);
    return n;
}

int dlu_cpu_threads(void) { return openblas_get_num_threads(); }

const char *dlu_cpu_igemm_impl(void) { return dlu__igemm_impl(); }

const char *dlu_cpu_features(void)
{
    static char buf[256];
    if (buf[0])
        return buf;
    static const struct {
        const char *name;
        int on;
    } f[] = {
#if defined(__x86_64__) || defined(__i386__)
        {"sse4.2", 0}, {"avx2", 0}, {"fma", 0}, {"avx512f", 0}, {"avx512bw", 0}, {"avx512vnni", 0}, {"avx512bf16", 0},
#endif
        {NULL, 0}};
    size_t used = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int on[] = {__builtin_cpu_supports("sse4.2"), __builtin_cpu_supports("avx2"), __builtin_cpu_supports("fma"),
                __builtin_cpu_supports("avx512f"), __builtin_cpu_supports("avx512bw"),
                __builtin_cpu_supports("avx512vnni"), __builtin_cpu_supports("avx512bf16")};
    for (int i = 0; f[i].name; i++)
        if (on[i])
            used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s", used ? " " : "", f[i].name);
#endif
    if (!used)
        snprintf(buf, sizeof buf, "portable (no x86 vector extensions detected)");
    return buf;
}

static dlu_status cpu_open(dlu_backend *be, const char *arg)
{
    if (*arg)
        return dlu__error(DLU_EINVAL, "the cpu device takes no argument (got 'cpu:%s')", arg);
    return DLU_OK;
}

static void cpu_close(dlu_backend *be) {}

static dlu_status cpu_alloc(dlu_backend *be, size_t nbytes, void **ptr)
{
    /* 64-byte alignment: one cache line, one AVX-512 vector. */
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        return dlu__error(DLU_ENOMEM, "cpu: cannot allocate %zu bytes", nbytes);
    memset(p, 0, rounded ? rounded : 64);
    *ptr = p;
    return DLU_OK;
}

static void cpu_free(dlu_backend *be, void *ptr) { free(ptr); }

static dlu_status cpu_copy(dlu_backend *be, void *dst, const void *src, size_t nbytes)
{
    memmove(dst, src, nbytes);
    return DLU_OK;
}

static dlu_status cpu_sync(dlu_backend *be) { return DLU_OK; }

static size_t cpu_ws_nbytes(const dlu__layer *l, int n, int dfp)
{
    if (dfp)
        return dlu__cpu_dfp_ws(l, n);
    return l->op == DLU_OP_CONV2D ? dlu__cpu_conv2d_ws(l, n) : 0;
}

static dlu_status cpu_sgd(dlu_backend *be, const dlu__sgd_args *a)
{
    float *w = F32(a->w), *v = F32(a->v);
    const float *g = CF32(a->g);
    int64_t n = dlu_tensor_nelem(a->w);
    const float lr = a->lr, mu = a->momentum, wd = a->weight_decay;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        float vi = mu * v[i] + gi;
        v[i] = vi;
        w[i] = w[i] - lr * vi;
    }
    return DLU_OK;
}

static dlu_status cpu_adam(dlu_backend *be, const dlu__adam_args *a)
{
    float *w = F32(a->w), *m = F32(a->m), *v = F32(a->v);
    const float *g = CF32(a->g);
    int64_t n = dlu_tensor_nelem(a->w);
    const float b1 = a->beta1, b2 = a->beta2, omb1 = 1.0f - a->beta1, omb2 = 1.0f - a->beta2;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] + a->weight_decay * w[i];
        float mi = b1 * m[i] + omb1 * gi;
        float vi = b2 * v[i] + omb2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / a->bc1;
        float vhat = vi / a->bc2;
        w[i] = w[i] - a->lr * (mhat / (sqrtf(vhat) + a->eps));
    }
    return DLU_OK;
}

const dlu__backend_vtbl dlu__cpu_vtbl = {
    .kind = "cpu",
    .note = "reference kernels; fp32 GEMM through OpenBLAS",
    .host_visible = 1,
    .open = cpu_open,
    .close = cpu_close,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .ws_nbytes = cpu_ws_nbytes,
    .forward = {[DLU_OP_LINEAR] = dlu__cpu_linear_fwd, [DLU_OP_CONV2D] = dlu__cpu_conv2d_fwd,
                [DLU_OP_RELU] = dlu__cpu_relu_fwd, [DLU_OP_MAXPOOL] = dlu__cpu_maxpool_fwd,
                [DLU_OP_AVGPOOL] = dlu__cpu_avgpool_fwd, [DLU_OP_FLATTEN] = dlu__cpu_flatten_fwd,
                [DLU_OP_SOFTMAX_XENT] = dlu__cpu_softmax_xent_fwd},
    .backward = {[DLU_OP_LINEAR] = dlu__cpu_linear_bwd, [DLU_OP_CONV2D] = dlu__cpu_conv2d_bwd,
                 [DLU_OP_RELU] = dlu__cpu_relu_bwd, [DLU_OP_MAXPOOL] = dlu__cpu_maxpool_bwd,
                 [DLU_OP_AVGPOOL] = dlu__cpu_avgpool_bwd, [DLU_OP_FLATTEN] = dlu__cpu_flatten_bwd,
                 [DLU_OP_SOFTMAX_XENT] = dlu__cpu_softmax_xent_bwd},
    .forward_dfp = {[DLU_OP_LINEAR] = dlu__cpu_linear_fwd_dfp, [DLU_OP_CONV2D] = dlu__cpu_conv2d_fwd_dfp,
                    [DLU_OP_RELU] = dlu__cpu_relu_fwd_dfp, [DLU_OP_MAXPOOL] = dlu__cpu_maxpool_fwd_dfp,
                    [DLU_OP_AVGPOOL] = dlu__cpu_avgpool_fwd_dfp, [DLU_OP_FLATTEN] = dlu__cpu_flatten_fwd_dfp,
                    [DLU_OP_SOFTMAX_XENT] = dlu__cpu_softmax_xent_fwd_dfp},
    .backward_dfp = {[DLU_OP_LINEAR] = dlu__cpu_linear_bwd_dfp, [DLU_OP_CONV2D] = dlu__cpu_conv2d_bwd_dfp,
                     [DLU_OP_RELU] = dlu__cpu_relu_bwd_dfp, [DLU_OP_MAXPOOL] = dlu__cpu_maxpool_bwd_dfp,
                     [DLU_OP_AVGPOOL] = dlu__cpu_avgpool_bwd_dfp, [DLU_OP_FLATTEN] = dlu__cpu_flatten_bwd_dfp,
                     [DLU_OP_SOFTMAX_XENT] = dlu__cpu_softmax_xent_bwd_dfp},
    .quantize = dlu__cpu_quantize,
    .sgd_step = cpu_sgd,
    .adam_step = cpu_adam,
};
