/* cpu.h -- the CPU reference backend's kernels (internal).
 *
 * These kernels are the spec: each states its numeric contract at the top of its file.
 * fp32 GEMMs go through OpenBLAS (cblas_sgemm), which uses its own threads; everything
 * else is plain single-threaded C. (OpenMP was tried: libgomp's spinning workers and
 * OpenBLAS's threads fight over the cores, 4x slower on 2 cores unless OMP_WAIT_POLICY
 * is set before the process starts.) */
#ifndef DLU_CPU_H
#define DLU_CPU_H

#include <cblas.h>

#include "backend_impl.h"

/* cblas_sgemm in row-major order, timed into be->prof. */
void dlu__cpu_sgemm(dlu_backend *be, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c,
                    int ldc);

#define DLU__CPU_KERNELS(X) \
    X(linear) X(conv2d) X(relu) X(maxpool) X(avgpool) X(flatten) X(softmax_xent)
#define X(name)                                                                   \
    dlu_status dlu__cpu_##name##_fwd(dlu_backend *be, const dlu__op_args *a);     \
    dlu_status dlu__cpu_##name##_bwd(dlu_backend *be, const dlu__op_args *a);
DLU__CPU_KERNELS(X)
#undef X

size_t dlu__cpu_conv2d_ws(const dlu__layer *l, int n);

/* Dynamic fixed point kernels (cpu_dfp.c). */
#define X(name)                                                                       \
    dlu_status dlu__cpu_##name##_fwd_dfp(dlu_backend *be, const dlu__op_args *a);     \
    dlu_status dlu__cpu_##name##_bwd_dfp(dlu_backend *be, const dlu__op_args *a);
DLU__CPU_KERNELS(X)
#undef X
size_t dlu__cpu_dfp_ws(const dlu__layer *l, int n);
dlu_status dlu__cpu_quantize(dlu_backend *be, const dlu_tensor *src, size_t n, dlu_tensor *dst, dlu__qsite *site,
                             uint64_t seed, uint32_t step);

/* Softmax cross-entropy forward from fp32 logits (shared by the fp32 and DFP kernels). */
dlu_status dlu__cpu_xent_fp32(const float *logits, const dlu__op_args *a);

#define F32(t) ((float *)(t)->data)
#define CF32(t) ((const float *)(t)->data)

#endif
