/* cuda_impl.h -- the CUDA backend's internals, shared by its C and CUDA files (internal).
 *
 * What it is: the backend's state (one device, one stream, cuBLAS and cuBLASLt handles),
 * the deferred host results, error checking, and the kernel entry points that the vtable
 * (cuda_backend.c) lists. Every kernel entry point has the signature of dlu__kernel_fn and
 * runs asynchronously on the backend's stream: it returns as soon as its work is queued.
 *
 * Deferred results. Kernels produce some values the host reads: the statistics of a DFP
 * site (dlu__qsite.stats), the loss and the correct count of softmax_xent. A kernel asks
 * for a device slot with dlu__cuda_result(be, host_dst, nbytes); the slot is zeroed, the
 * device writes (or atomically adds) into it, and the next dlu__cuda_flush() -- which
 * vt->sync calls -- waits for the stream and copies every slot to its host_dst in the
 * order the slots were taken. So host_dst must stay valid until the next sync, and the
 * host reads it only after a sync: dlu_net_backward syncs before it feeds the statistics
 * to the scaling policies, and train.c syncs before it reads the loss. A site's first
 * production calibrates its exponent from statistics the host needs at once: such code
 * takes a slot and calls dlu__cuda_flush() itself.
 *
 * Numerics: everything DFP goes through dlu/numerics.h (DLU_HD functions) so the bits are
 * the CPU backend's; fp32 element-wise arithmetic whose bits matter (the optimizers, the
 * dequantized gradients) uses __fadd_rn/__fmul_rn/__fdiv_rn and IEEE sqrtf, never FMA
 * contraction. fp32 GEMMs go through cuBLAS in its default (pedantic fp32, no TF32) math
 * mode and are not bit-exact with OpenBLAS.
 *
 * Thread safety: one dlu_backend is used by one host thread at a time. */
#ifndef DLU_CUDA_IMPL_H
#define DLU_CUDA_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>
#include <cublasLt.h>
#include <cublas_v2.h>

#include "backend_impl.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dlu__cuda_pending {
    void *host_dst;
    size_t off, nbytes; /* in the result arena */
} dlu__cuda_pending;

typedef struct dlu__cuda {
    int dev;                   /* CUDA device index */
    char name[256];            /* cudaDeviceProp.name */
    int sm_count, cc_major, cc_minor;
    size_t mem_total;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws;               /* cuBLASLt workspace (device) */
    size_t lt_ws_nbytes;
    /* deferred host results */
    uint8_t *res_dev;          /* device arena, zeroed between syncs */
    uint8_t *res_host;         /* pinned mirror */
    size_t res_cap, res_used;
    dlu__cuda_pending *pend;
    int npend, pend_cap;
} dlu__cuda;

static inline dlu__cuda *dlu__cuda_of(dlu_backend *be) { return (dlu__cuda *)be->impl; }

/* A zeroed device slot of nbytes (<= 64 KiB, 16-byte aligned) whose contents are copied to
 * host_dst at the next flush. When the arena is full it flushes first (a synchronous
 * point). Returns NULL, with the error set (dlu_last_error), only if that flush fails. */
void *dlu__cuda_result(dlu_backend *be, void *host_dst, size_t nbytes);

/* A site's statistics slot: the device kernel adds its counts into it (zeroed). */
static inline dlu_stats *dlu__cuda_stats_slot(dlu_backend *be, dlu_stats *host_dst)
{
    return (dlu_stats *)dlu__cuda_result(be, host_dst, sizeof(dlu_stats));
}

/* Wait for the stream, deliver every pending result, zero the arena. Reports the first
 * asynchronous error of the work queued since the last flush. */
dlu_status dlu__cuda_flush(dlu_backend *be);

/* DLU_OK for cudaSuccess, else an error naming the device, `what` and CUDA's message:
 * DLU_ENOMEM for cudaErrorMemoryAllocation, DLU_EINTERNAL otherwise. */
dlu_status dlu__cuda_err(dlu_backend *be, cudaError_t e, const char *what);
/* Same for cuBLAS / cuBLASLt status codes. */
dlu_status dlu__cuda_blas_err(dlu_backend *be, int cublas_status, const char *what);

/* After a kernel launch: the launch error (bad configuration), if any. */
#define DLU__CUDA_LAUNCHED(be, what) dlu__cuda_err((be), cudaGetLastError(), (what))

/* ---- kernel entry points (vtable) ---------------------------------------------------- */

#define DLU__CUDA_KERNELS(X) \
    X(linear) X(conv2d) X(relu) X(maxpool) X(avgpool) X(flatten) X(softmax_xent)

/* fp32 (cuda_fp32.cu) */
#define X(name)                                                                   \
    dlu_status dlu__cuda_##name##_fwd(dlu_backend *be, const dlu__op_args *a);    \
    dlu_status dlu__cuda_##name##_bwd(dlu_backend *be, const dlu__op_args *a);
DLU__CUDA_KERNELS(X)
#undef X
/* Workspace (bytes) the fp32 kernels of layer l need for a batch of n. */
size_t dlu__cuda_fp32_ws(const dlu__layer *l, int n);

/* dynamic fixed point (cuda_dfp.cu) */
#define X(name)                                                                       \
    dlu_status dlu__cuda_##name##_fwd_dfp(dlu_backend *be, const dlu__op_args *a);    \
    dlu_status dlu__cuda_##name##_bwd_dfp(dlu_backend *be, const dlu__op_args *a);
DLU__CUDA_KERNELS(X)
#undef X
size_t dlu__cuda_dfp_ws(const dlu__layer *l, int n);
dlu_status dlu__cuda_quantize(dlu_backend *be, const dlu_tensor *src, size_t n, dlu_tensor *dst, dlu__qsite *site,
                              uint64_t seed, uint32_t step);

/* batches from a data set resident on the device (cuda_data.cu): vt->gather */
dlu_status dlu__cuda_gather(dlu_backend *be, const void *images, const void *labels, int64_t in, const int64_t *idx,
                            int n, dlu_tensor *x, dlu_tensor *y);

/* optimizers (cuda_optim.cu), same contract as cpu_backend.c's */
dlu_status dlu__cuda_sgd(dlu_backend *be, const dlu__sgd_args *a);
dlu_status dlu__cuda_adam(dlu_backend *be, const dlu__adam_args *a);

#ifdef __cplusplus
}
#endif
#endif
