/* exec.h -- the value executor of the simulated DLU (verification mode).
 *
 * hw_model/ calls dlusim_exec_cmd() as each command of a GEMM op completes in simulated
 * time, with the local memory, register files and statistics counters of the DPU that ran
 * it; the executor gathers operand tiles from the op's tensors into the local memory
 * (LOAD), multiplies them exactly into the accumulators (MAC), requantizes with the shared
 * numerics header into the output buffer (REQUANT), and scatters the result into the
 * output tensor (STORE). dlusim_exec_stats() receives the statistics the master core
 * aggregated and makes the point-position decision (calibration) or records them.
 *
 * Each op's logical GEMM (which tensor element A(i, k), B(j, k) and C(i, j) are) is in
 * docs/sim-commands.md. Integer products are exact, so any tiling gives the cpu backend's
 * bits; stochastic rounding uses each element's index in its whole output tensor.
 *
 * Not here: the timing (hw_model/), the tiling (lower.c), element-wise ops (their values
 * come from the cpu reference kernels, see dlusim_backend.c). */
#ifndef DLUSIM_EXEC_H
#define DLUSIM_EXEC_H

#include <stdint.h>

#include "backend_impl.h"
#include "sim/cmd.h"

typedef enum dlusim_gemm_kind {
    DLUSIM_LIN_FWD,
    DLUSIM_LIN_BWD_DATA,
    DLUSIM_LIN_BWD_W,
    DLUSIM_CONV_FWD,
    DLUSIM_CONV_BWD_DATA,
    DLUSIM_CONV_BWD_W
} dlusim_gemm_kind;

typedef struct dlusim_exec {
    dlusim_gemm_kind kind;
    const dlu__layer *l;
    uint64_t M, N, K;
    const void *asrc, *bsrc; /* tensors A and B are gathered from (i8, or i16 when *wide) */
    int awide, bwide;
    int acc_bytes;           /* 4: int32 accumulators (dfp8 x dfp8); 8: int64 */
    const dlusim_stream *s;  /* buffer table */
    int ndpe;                /* DPEs per DPU: row i of a tile counts on DPE i % ndpe */
    /* the produced tensor */
    dlu__qsite *q;
    int ea, eo;              /* accumulator and output exponents */
    void *yout;              /* i8/i16 output (y or dx), or NULL */
    float *gout;             /* fp32 weight gradient, or NULL */
    int64_t *bias_acc;       /* forward: bias in the accumulator's scale per column (N);
                                backward-weight: the bias-gradient row sums (M); or NULL */
    /* the bias gradient (backward-weight with a bias) */
    dlu__qsite *qb;
    float *gbout;
    int eb, ebo;
    dlu_stats bias_pre, bias_stats;
    uint64_t seed;
    uint32_t step;
    /* scratch for one MAC tile: widened operands and the product */
    void *scratch;
    size_t scratch_nbytes;
} dlusim_exec;

/* dluhw_exec_fn and dluhw_stats_fn (hw_model/dluhw.h); ctx is a dlusim_exec. */
dlu_status dlusim_exec_cmd(void *ctx, const dlusim_cmd *c, uint8_t *lmem, uint8_t *rf, dlu_stats *dpe_stats);
dlu_status dlusim_exec_stats(void *ctx, const dlusim_cmd *c, const dlu_stats *agg);

/* 1 when the site's exponent is still to be calibrated on this production. */
int dlusim_site_needs_calib(const dlu__qsite *q);

#endif
