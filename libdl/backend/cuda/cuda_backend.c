/* cuda_backend.c -- the cuda backend's vtable and host side: opening a device, device
 * memory, copies, the stream, and the deferred host results (cuda_impl.h).
 *
 * What it is: plain C over the CUDA runtime, cuBLAS and cuBLASLt C APIs. The kernels are
 * in cuda_fp32.cu (fp32 ops), cuda_dfp.cu with cuda_quant.cu and cuda_igemm.cu (dynamic
 * fixed point) and cuda_optim.cu (optimizer updates); this file only lists them.
 *
 * Device strings: "cuda" is device 0, "cuda:N" device N. Errors name the device and what
 * failed: no GPU or no driver (DLU_ENODEV), a bad index (DLU_ENODEV, with the number of
 * devices), out of device memory (DLU_ENOMEM, with the free and total memory).
 *
 * Not here: any arithmetic. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"
#include "error.h"

#define RES_CAP ((size_t)1 << 20) /* deferred-result arena: about 990 statistics slots */
#define RES_MAX ((size_t)64 << 10)
#define LT_WS ((size_t)32 << 20)  /* cuBLASLt workspace */

dlu_status dlu__cuda_err(dlu_backend *be, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return DLU_OK;
    const dlu__cuda *c = be ? dlu__cuda_of(be) : NULL;
    return dlu__error(e == cudaErrorMemoryAllocation ? DLU_ENOMEM : DLU_EINTERNAL, "cuda:%d: %s: %s (%s)",
                      c ? c->dev : -1, what, cudaGetErrorString(e), cudaGetErrorName(e));
}

dlu_status dlu__cuda_blas_err(dlu_backend *be, int st, const char *what)
{
    if (st == CUBLAS_STATUS_SUCCESS)
        return DLU_OK;
    const dlu__cuda *c = be ? dlu__cuda_of(be) : NULL;
    return dlu__error(st == CUBLAS_STATUS_ALLOC_FAILED ? DLU_ENOMEM : DLU_EINTERNAL, "cuda:%d: %s: %s (cuBLAS %d)",
                      c ? c->dev : -1, what, cublasGetStatusString((cublasStatus_t)st), st);
}

#define TRY_CUDA(be, call, what) DLU__TRY(dlu__cuda_err((be), (call), (what)))

/* ---- deferred results -------------------------------------------------------------------- */

void *dlu__cuda_result(dlu_backend *be, void *host_dst, size_t nbytes)
{
    dlu__cuda *c = dlu__cuda_of(be);
    if (nbytes > RES_MAX) {
        dlu__error(DLU_EINTERNAL, "cuda:%d: a deferred result of %zu bytes (at most %zu)", c->dev, nbytes, RES_MAX);
        return NULL;
    }
    const size_t need = (nbytes + 15) & ~(size_t)15;
    if (c->res_used + need > c->res_cap && dlu__cuda_flush(be) != DLU_OK)
        return NULL;
    if (c->npend == c->pend_cap) {
        int cap = c->pend_cap ? 2 * c->pend_cap : 64;
        dlu__cuda_pending *p = realloc(c->pend, (size_t)cap * sizeof *p);
        if (!p) {
            dlu__error(DLU_ENOMEM, "cuda:%d: out of host memory for deferred results", c->dev);
            return NULL;
        }
        c->pend = p;
        c->pend_cap = cap;
    }
    c->pend[c->npend++] = (dlu__cuda_pending){.host_dst = host_dst, .off = c->res_used, .nbytes = nbytes};
    void *d = c->res_dev + c->res_used;
    c->res_used += need;
    return d;
}

dlu_status dlu__cuda_flush(dlu_backend *be)
{
    dlu__cuda *c = dlu__cuda_of(be);
    if (c->npend) {
        TRY_CUDA(be, cudaMemcpyAsync(c->res_host, c->res_dev, c->res_used, cudaMemcpyDeviceToHost, c->stream),
                 "copying results to the host");
    }
    TRY_CUDA(be, cudaStreamSynchronize(c->stream), "running the queued kernels");
    for (int i = 0; i < c->npend; i++)
        memcpy(c->pend[i].host_dst, c->res_host + c->pend[i].off, c->pend[i].nbytes);
    if (c->res_used)
        TRY_CUDA(be, cudaMemsetAsync(c->res_dev, 0, c->res_used, c->stream), "clearing the result slots");
    c->npend = 0;
    c->res_used = 0;
    return DLU_OK;
}

/* ---- open / close -------------------------------------------------------------------------- */

static void cuda_close(dlu_backend *be)
{
    dlu__cuda *c = dlu__cuda_of(be);
    if (!c)
        return;
    cudaSetDevice(c->dev);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    if (c->lt)
        cublasLtDestroy(c->lt);
    if (c->blas)
        cublasDestroy(c->blas);
    cudaFree(c->lt_ws);
    cudaFree(c->res_dev);
    cudaFreeHost(c->res_host);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c->pend);
    free(c);
    be->impl = NULL;
}

static dlu_status cuda_open(dlu_backend *be, const char *arg)
{
    int idx = 0;
    if (*arg) {
        char *end;
        errno = 0;
        long v = strtol(arg, &end, 10);
        if (*end || end == arg || errno || v < 0 || v > 1023)
            return dlu__error(DLU_EINVAL, "cuda:%s: the device index must be a number 0, 1, ... (as in cuda:0)", arg);
        idx = (int)v;
    }
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        cudaGetLastError(); /* not sticky: clear it */
        return dlu__error(DLU_ENODEV, "cuda: no usable CUDA device: %s",
                          e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
    }
    if (idx >= ndev)
        return dlu__error(DLU_ENODEV, "cuda:%d: no such device (this machine has %d CUDA device%s: cuda:0%s)", idx,
                          ndev, ndev == 1 ? "" : "s", ndev == 1 ? "" : "...");
    dlu__cuda *c = calloc(1, sizeof *c);
    if (!c)
        return dlu__error(DLU_ENOMEM, "cuda: out of host memory");
    c->dev = idx;
    be->impl = c;
    dlu_status s = DLU_OK;
    struct cudaDeviceProp p;
    if ((s = dlu__cuda_err(be, cudaSetDevice(idx), "selecting the device")) != DLU_OK ||
        (s = dlu__cuda_err(be, cudaGetDeviceProperties(&p, idx), "reading the device properties")) != DLU_OK)
        goto fail;
    snprintf(c->name, sizeof c->name, "%s", p.name);
    c->sm_count = p.multiProcessorCount;
    c->cc_major = p.major;
    c->cc_minor = p.minor;
    c->mem_total = p.totalGlobalMem;
    if ((s = dlu__cuda_err(be, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "creating a stream")) !=
        DLU_OK)
        goto fail;
    if ((s = dlu__cuda_blas_err(be, cublasCreate(&c->blas), "creating the cuBLAS handle")) != DLU_OK ||
        (s = dlu__cuda_blas_err(be, cublasSetStream(c->blas, c->stream), "cublasSetStream")) != DLU_OK ||
        /* full fp32 products (no TF32), as the CPU computes them */
        (s = dlu__cuda_blas_err(be, cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode")) != DLU_OK ||
        (s = dlu__cuda_blas_err(be, cublasLtCreate(&c->lt), "creating the cuBLASLt handle")) != DLU_OK)
        goto fail;
    c->lt_ws_nbytes = LT_WS;
    c->res_cap = RES_CAP;
    if ((s = dlu__cuda_err(be, cudaMalloc(&c->lt_ws, c->lt_ws_nbytes), "allocating the cuBLASLt workspace")) !=
            DLU_OK ||
        (s = dlu__cuda_err(be, cudaMalloc((void **)&c->res_dev, c->res_cap), "allocating the result slots")) != DLU_OK ||
        (s = dlu__cuda_err(be, cudaMemset(c->res_dev, 0, c->res_cap), "clearing the result slots")) != DLU_OK ||
        (s = dlu__cuda_err(be, cudaMallocHost((void **)&c->res_host, c->res_cap), "allocating pinned memory")) !=
            DLU_OK)
        goto fail;
    return DLU_OK;
fail:
    cuda_close(be);
    return s;
}

/* ---- memory -------------------------------------------------------------------------------- */

static dlu_status cuda_alloc(dlu_backend *be, size_t nbytes, void **ptr)
{
    dlu__cuda *c = dlu__cuda_of(be);
    const size_t n = nbytes ? (nbytes + 255) & ~(size_t)255 : 256;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        cudaGetLastError();
        return dlu__error(e == cudaErrorMemoryAllocation ? DLU_ENOMEM : DLU_EINTERNAL,
                          "cuda:%d (%s): cannot allocate %zu bytes of device memory (%.1f MiB free of %.1f MiB): %s",
                          c->dev, c->name, nbytes, fr / 1048576.0, tot / 1048576.0, cudaGetErrorString(e));
    }
    /* zeroed, like every backend's memory; ordered before any later work on the stream */
    e = cudaMemsetAsync(p, 0, n, c->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        return dlu__cuda_err(be, e, "clearing new device memory");
    }
    *ptr = p;
    return DLU_OK;
}

static void cuda_free(dlu_backend *be, void *ptr)
{
    if (ptr) {
        cudaStreamSynchronize(dlu__cuda_of(be)->stream); /* no kernel still uses it */
        cudaFree(ptr);
    }
}

static dlu_status cuda_upload(dlu_backend *be, void *dst, const void *host_src, size_t nbytes)
{
    dlu__cuda *c = dlu__cuda_of(be);
    /* From pageable memory the call returns once host_src has been read (staged), so the
     * caller may reuse its buffer; from pinned memory we wait to keep that promise. */
    TRY_CUDA(be, cudaMemcpyAsync(dst, host_src, nbytes, cudaMemcpyHostToDevice, c->stream), "copying to the device");
    struct cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, host_src) == cudaSuccess && at.type == cudaMemoryTypeHost)
        TRY_CUDA(be, cudaStreamSynchronize(c->stream), "copying to the device");
    cudaGetLastError();
    return DLU_OK;
}

static dlu_status cuda_download(dlu_backend *be, void *host_dst, const void *src, size_t nbytes)
{
    dlu__cuda *c = dlu__cuda_of(be);
    TRY_CUDA(be, cudaMemcpyAsync(host_dst, src, nbytes, cudaMemcpyDeviceToHost, c->stream), "copying to the host");
    TRY_CUDA(be, cudaStreamSynchronize(c->stream), "copying to the host");
    return DLU_OK;
}

static dlu_status cuda_sync(dlu_backend *be) { return dlu__cuda_flush(be); }

static size_t cuda_ws_nbytes(const dlu__layer *l, int n, int dfp)
{
    return dfp ? dlu__cuda_dfp_ws(l, n) : dlu__cuda_fp32_ws(l, n);
}

#define OPS(sfx)                                                                                                   \
    {[DLU_OP_LINEAR] = dlu__cuda_linear_##sfx, [DLU_OP_CONV2D] = dlu__cuda_conv2d_##sfx,                         \
     [DLU_OP_RELU] = dlu__cuda_relu_##sfx, [DLU_OP_MAXPOOL] = dlu__cuda_maxpool_##sfx,                           \
     [DLU_OP_AVGPOOL] = dlu__cuda_avgpool_##sfx, [DLU_OP_FLATTEN] = dlu__cuda_flatten_##sfx,                     \
     [DLU_OP_SOFTMAX_XENT] = dlu__cuda_softmax_xent_##sfx}

const dlu__backend_vtbl dlu__cuda_vtbl = {
    .kind = "cuda",
    .note = "NVIDIA GPUs: fp32 through cuBLAS, DFP through exact int8 GEMMs (cuBLASLt)",
    .host_visible = 0,
    .open = cuda_open,
    .close = cuda_close,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .sync = cuda_sync,
    .ws_nbytes = cuda_ws_nbytes,
    .forward = OPS(fwd),
    .backward = OPS(bwd),
    .forward_dfp = OPS(fwd_dfp),
    .backward_dfp = OPS(bwd_dfp),
    .quantize = dlu__cuda_quantize,
    .sgd_step = dlu__cuda_sgd,
    .adam_step = dlu__cuda_adam,
    .gather = dlu__cuda_gather,
};
