/* cuda_optim.cu -- SGD and Adam updates on the GPU, bit for bit the CPU backend's.
 *
 * The contract is cpu_backend.c's (fp32, every product and quotient grouped as written
 * there, no FMA). Here each operation is an explicitly rounded intrinsic (__fmul_rn,
 * __fadd_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn), which nvcc never contracts, so the bits do
 * not depend on -fmad. One thread per element; the host passes the scalars it computed in
 * the same way as the CPU does (1 - beta rounded to float once, bias corrections once per
 * step). */
#include "cuda_impl.h"

namespace {

__global__ void sgd_kernel(float *__restrict__ w, float *__restrict__ v, const float *__restrict__ g, int64_t n,
                           float lr, float mu, float wd)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float wi = w[i];
        const float gi = __fadd_rn(g[i], __fmul_rn(wd, wi));
        const float vi = __fadd_rn(__fmul_rn(mu, v[i]), gi);
        v[i] = vi;
        w[i] = __fsub_rn(wi, __fmul_rn(lr, vi));
    }
}

__global__ void adam_kernel(float *__restrict__ w, float *__restrict__ m, float *__restrict__ v,
                            const float *__restrict__ g, int64_t n, float lr, float b1, float b2, float omb1, float omb2,
                            float eps, float wd, float bc1, float bc2)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float wi = w[i];
        const float gi = __fadd_rn(g[i], __fmul_rn(wd, wi));
        const float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(omb1, gi));
        const float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(omb2, __fmul_rn(gi, gi)));
        m[i] = mi;
        v[i] = vi;
        const float mhat = __fdiv_rn(mi, bc1);
        const float vhat = __fdiv_rn(vi, bc2);
        w[i] = __fsub_rn(wi, __fmul_rn(lr, __fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), eps))));
    }
}

unsigned blocks_for(int64_t n)
{
    const int64_t b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : (b > 65535 ? 65535 : b));
}

} // namespace

extern "C" dlu_status dlu__cuda_sgd(dlu_backend *be, const dlu__sgd_args *a)
{
    const int64_t n = dlu_tensor_nelem(a->w);
    if (n == 0)
        return DLU_OK;
    sgd_kernel<<<blocks_for(n), 256, 0, dlu__cuda_of(be)->stream>>>(
        (float *)a->w->data, (float *)a->v->data, (const float *)a->g->data, n, a->lr, a->momentum, a->weight_decay);
    return DLU__CUDA_LAUNCHED(be, "sgd update");
}

extern "C" dlu_status dlu__cuda_adam(dlu_backend *be, const dlu__adam_args *a)
{
    const int64_t n = dlu_tensor_nelem(a->w);
    if (n == 0)
        return DLU_OK;
    /* as cpu_adam: 1 - beta in float arithmetic, rounded once */
    const float omb1 = 1.0f - a->beta1, omb2 = 1.0f - a->beta2;
    adam_kernel<<<blocks_for(n), 256, 0, dlu__cuda_of(be)->stream>>>(
        (float *)a->w->data, (float *)a->m->data, (float *)a->v->data, (const float *)a->g->data, n, a->lr,
        a->beta1, a->beta2, omb1, omb2, a->eps, a->weight_decay, a->bc1, a->bc2);
    return DLU__CUDA_LAUNCHED(be, "adam update");
}
