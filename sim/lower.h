/* lower.h -- lowering one kernel of a training step to a tile-level command stream.
 *
 * Every MAC-heavy kernel (linear and conv2d: forward, backward-data, backward-weight) is
 * one logical GEMM C (M, N) = A (M, K) * B (N, K)^T whose operands the DMA gathers from
 * the op's tensors (docs/sim-commands.md gives each op's A, B and C). The lowering cuts
 * it into tiles that fit the configured local memory (operand tiles, double-buffered)
 * and register files (accumulators), deals the output tiles over the DPUs, and emits per
 * tile: LOADs of the A and B chunks, MACs over the k chunks, a REQUANT of the
 * accumulators, and a STORE of the result. Element-wise kernels become LOAD / VEC / STORE
 * over chunks. Each op ends with a BARRIER, and with a STATS per produced DFP tensor.
 *
 * Not here: costs (hw_model/), values (exec.c). */
#ifndef DLUSIM_LOWER_H
#define DLUSIM_LOWER_H

#include <stdint.h>

#include "sim/cmd.h"
#include "sim/hwcfg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One logical GEMM. Element sizes in bytes: a_bytes, b_bytes of the operands (1, 2 or 4),
 * acc_bytes of an accumulator (4: int32 for dfp8 x dfp8 with K <= 131071, or fp32; 8:
 * int64), out_bytes of a stored output element (1, 2 or 4). */
typedef struct dlusim_gemm {
    uint64_t M, N, K;
    int a_bytes, b_bytes, acc_bytes, out_bytes;
    int fmt_bits;     /* 32, 16 or 8: the wider operand, sets the MAC rate */
    int bias_sum;     /* backward-weight with a bias: MACs of the first column tile sum A's
                         rows (DLUSIM_F_BIAS_SUM), and each row tile ends with a REQUANT and
                         STORE of those M bias-gradient entries (operand BIAS) */
    int stats;        /* the output is a DFP tensor: REQUANTs carry DLUSIM_F_STATS and the
                         op ends with a STATS command */
    int calib;        /* first production: emit the whole op twice, the first time with
                         DLUSIM_F_CALIB REQUANTs (statistics only, no STORE) followed by a
                         STATS with DLUSIM_F_CALIB */
    uint64_t a_hbm, b_hbm, c_hbm, bias_hbm; /* HBM byte addresses of the source and
                         destination tensors (for channel interleaving) */
} dlusim_gemm;

/* Append the commands of one GEMM (and its trailing BARRIER / STATS) to s, tagged with
 * layer and phase. The stream's buffer table is (re)built by this call, so use one stream
 * per call. Errors: DLU_EINVAL with a message naming the parameter when the smallest
 * tile (one row of A and B over a k chunk of the lane width, double-buffered) does not
 * fit the local memory or the accumulators do not fit the register files; DLU_ENOMEM. */
dlu_status dlusim_lower_gemm(const dlusim_hwcfg *cfg, const dlusim_gemm *g, int layer, dlu_sim_phase phase,
                             dlusim_stream *s);

/* Element-wise work over nelem elements: in_bytes read and out_bytes written per element
 * (in HBM), ops_per_elem vector operations each; stats: the result goes through the
 * statistics circuit (DLUSIM_F_STATS) and the op ends with a STATS. Chunks fit the local
 * memory double-buffered and are dealt over the DPUs. Ends with a BARRIER. */
dlu_status dlusim_lower_vec(const dlusim_hwcfg *cfg, uint64_t nelem, int in_bytes, int out_bytes, int ops_per_elem,
                            int stats, uint64_t in_hbm, uint64_t out_hbm, int layer, dlu_sim_phase phase,
                            dlusim_stream *s);

/* Tile sizes lower_gemm picks for g (for tests and docs): mt x nt output tile, kt chunk. */
void dlusim_gemm_tiles(const dlusim_hwcfg *cfg, const dlusim_gemm *g, uint32_t *mt, uint32_t *nt, uint32_t *kt);

#ifdef __cplusplus
}
#endif
#endif
