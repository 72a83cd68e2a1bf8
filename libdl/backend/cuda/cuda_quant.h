/* cuda_quant.h -- DFP quantization, requantization and statistics on the device (internal).
 *
 * What it is: the CUDA backend's element-wise DFP producers and the site helpers built on
 * them. The launchers quantize fp32 values, requantize exact integer accumulators (int64
 * or int32) and take the statistics of existing DFP tensors, with the same arguments and
 * exactly the same bytes and struct dlu_stats as dlu_quantize_f32, dlu_requantize_acc64,
 * dlu_requantize_acc32 (dlu/numerics.h) and dlu__cpu_stats_q / dlu__cpu_stats_acc64
 * (cpu_quant.h): every element goes through numerics.h's scalar functions, and element i
 * rounds with the stochastic-rounding bits of index index_base + i. The site helpers are
 * cpu_dfp.c's quant_site / requant_site / grad_site / stats_inherit for device tensors,
 * including the first-production calibration.
 *
 * Statistics: each thread block counts into 32-bit shared-memory counters (the histogram
 * with warp-aggregated shared atomics, the five event counts in registers), then adds its
 * totals into the device struct dlu_stats (uint64 fields) with 64-bit atomics. Integer
 * sums, so the totals do not depend on the order: the result is deterministic. A NULL
 * statistics pointer records nothing.
 *
 * Device code here and in the files that include this header under nvcc: the template
 * dlu__cuda_produce() runs any element-wise producer "op(i) -> status word" over [0, n)
 * with these statistics; the DFP layer kernels (cuda_dfp.cu) use it for their fused
 * element-wise ops.
 *
 * What it is not: not the numerics (dlu/numerics.h is the only implementation of every
 * rounding and statistics rule), not exponent policy (scale.c via dlu__site_exp), and not
 * synchronous: every launcher queues work on the backend's stream and returns; only a
 * site's first production, which needs its own statistics on the host to calibrate,
 * waits for the stream (dlu__cuda_flush). Pointers named *_dev, and every tensor's data,
 * are device memory.
 *
 * Thread safety: as the backend (one host thread per dlu_backend). */
#ifndef DLU_CUDA_QUANT_H
#define DLU_CUDA_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_impl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- element-wise launchers (asynchronous, on the backend's stream) ------------------ */

/* x (n) fp32 -> q_out (n) int8_t (DLU_FMT_DFP8) or int16_t (DLU_FMT_DFP16) at exponent e;
 * the statistics of every element are added into *st_dev (may be NULL). q_out may be NULL:
 * statistics only (the full statistics, as if the values were stored).
 * Returns DLU_OK, DLU_EINVAL for a non-DFP fmt or an unknown mode, or the launch error. */
dlu_status dlu__cuda_quantize_f32(dlu_backend *be, const float *x_dev /* (n) */, size_t n, int e, dlu_format fmt,
                                  dlu_round mode, uint64_t seed, uint32_t id, uint32_t step, uint64_t index_base,
                                  void *q_out_dev /* (n) or NULL */, dlu_stats *st_dev);

/* acc (n) int64 at exponent ea -> q_out (n) at eo; same conventions. */
dlu_status dlu__cuda_requantize_acc64(dlu_backend *be, const int64_t *acc_dev /* (n) */, size_t n, int ea, int eo,
                                      dlu_format fmt, dlu_round mode, uint64_t seed, uint32_t id, uint32_t step,
                                      uint64_t index_base, void *q_out_dev /* (n) or NULL */, dlu_stats *st_dev);

/* The same for int32 accumulators. */
dlu_status dlu__cuda_requantize_acc32(dlu_backend *be, const int32_t *acc_dev /* (n) */, size_t n, int ea, int eo,
                                      dlu_format fmt, dlu_round mode, uint64_t seed, uint32_t id, uint32_t step,
                                      uint64_t index_base, void *q_out_dev /* (n) or NULL */, dlu_stats *st_dev);

/* The requantization above, stored dequantized: g_out[i] = dlu_dfp_dequantize(q_i, eo)
 * (fp32), where q_i is what dlu__cuda_requantize_acc64 would store. Statistics as above.
 * This is a weight/bias gradient handed to the fp32 optimizer in class G = dfp8/dfp16. */
dlu_status dlu__cuda_requantize_acc64_f32(dlu_backend *be, const int64_t *acc_dev /* (n) */, size_t n, int ea,
                                          int eo, dlu_format fmt, dlu_round mode, uint64_t seed, uint32_t id,
                                          uint32_t step, uint64_t index_base, float *g_out_dev /* (n) */,
                                          dlu_stats *st_dev);

/* Statistics of n DFP integers q (int8_t for DLU_FMT_DFP8, int16_t for DLU_FMT_DFP16) at
 * exponent e, exactly as dlu__cpu_stats_q: each recorded as a requantization of int64 q
 * at ea = eo = e. Does nothing if st_dev or q is NULL or fmt is not DFP. */
dlu_status dlu__cuda_stats_q(dlu_backend *be, const void *q_dev /* (n) */, size_t n, int e, dlu_format fmt,
                             dlu_stats *st_dev);

/* Histogram-only statistics of n int64 accumulators at exponent ea (dlu_acc_hist_info:
 * count, zeros, histogram), as dlu__cpu_stats_acc64; and, when g_out is non-NULL, their
 * exact conversion g_out[i] = dlu_acc_to_f32(acc[i], ea) (the g=fp32 gradient path). */
dlu_status dlu__cuda_stats_acc64(dlu_backend *be, const int64_t *acc_dev /* (n) */, size_t n, int ea,
                                 float *g_out_dev /* (n) or NULL */, dlu_stats *st_dev);

/* ---- producing a site's tensor (cpu_dfp.c's helpers for device tensors) ---------------- */

/* Quantize n fp32 values x into out (the site's format) at the site's exponent; on the
 * site's first production (policy not calibrated) the exponent is calibrated from the
 * statistics of a nearest-rounding quantization at e = 0 (seed 0), which this call waits
 * for. Sets out->exp. The site's statistics arrive in q->stats at the next sync. */
dlu_status dlu__cuda_quant_site(dlu_backend *be, dlu__qsite *q, const float *x_dev /* (n) */, size_t n,
                                dlu_tensor *out, uint64_t seed, uint32_t step);

/* Requantize n exact accumulators (exponent ea) into out at the site's exponent (ea when
 * the site has no policy), calibrating on first production from the statistics of a
 * nearest requantization at eo = ea. Sets q->exp and out->exp. */
dlu_status dlu__cuda_requant_site(dlu_backend *be, dlu__qsite *q, const int64_t *acc_dev /* (n) */, size_t n, int ea,
                                  dlu_tensor *out, uint64_t seed, uint32_t step);

/* A weight or bias gradient: requantize to class G and write its fp32 value into g (as
 * requant_site + dequantize), or, for a non-DFP site format (g=fp32), record the
 * histogram-only statistics and write dlu_acc_to_f32(acc, ea) (q->exp = ea). */
dlu_status dlu__cuda_grad_site(dlu_backend *be, dlu__qsite *q, const int64_t *acc_dev /* (n) */, size_t n, int ea,
                               float *g_dev /* (n) */, uint64_t seed, uint32_t step);

/* Statistics of an integer tensor whose exponent is inherited (relu, maxpool, flatten):
 * its first n elements at t->exp, in t's own format; q->exp = t->exp. */
dlu_status dlu__cuda_stats_inherit(dlu_backend *be, dlu__qsite *q, const dlu_tensor *t, size_t n);

#ifdef __cplusplus
}
#endif

/* ---- device side: the generic producer with block statistics (nvcc only) -------------- */
#ifdef __CUDACC__

#define DLU_CUDA_QTHREADS 256 /* threads per block of every producer */

/* One block's statistics: the histogram in shared memory, the event counts per thread in
 * registers until the end. 32-bit counters suffice: the launcher gives no block more than
 * 2^31 elements (dlu__cuda_produce_blocks). */
struct dlu__cuda_stats_block {
    unsigned int hist[DLU_STATS_NBINS];
    unsigned int ev[5]; /* count, zeros, overflow, underflow, nan */
};

struct dlu__cuda_stats_local {
    unsigned int count, zeros, overflow, underflow, nan;
};

/* Zero the block's counters. Called by every thread of the block. */
static __device__ __forceinline__ void dlu__cuda_stats_begin(dlu__cuda_stats_block *sb, dlu__cuda_stats_local *l)
{
    for (int t = threadIdx.x; t < DLU_STATS_NBINS; t += blockDim.x)
        sb->hist[t] = 0;
    if (threadIdx.x < 5)
        sb->ev[threadIdx.x] = 0;
    l->count = l->zeros = l->overflow = l->underflow = l->nan = 0;
    __syncthreads();
}

/* Record one element's status word (dlu_stats_record's rule, counted per thread and per
 * warp instead of per element). Must be called by all 32 lanes of a warp together; a lane
 * with valid == 0 (past the end) records nothing. */
static __device__ __forceinline__ void dlu__cuda_stats_add(dlu__cuda_stats_block *sb, dlu__cuda_stats_local *l,
                                                          uint32_t info, int valid)
{
    const uint32_t bin = valid ? DLU_QF_BIN(info) : DLU_QF_BIN_NONE;
    if (valid) {
        l->count++;
        l->nan += (info & DLU_QF_NAN) != 0;
        l->zeros += (info & DLU_QF_ZERO) != 0;
        l->underflow += (info & DLU_QF_UNDERFLOW) != 0;
        l->overflow += (info & DLU_QF_OVERFLOW) != 0;
    }
    /* lanes with the same bin add once, through their lowest lane */
    const unsigned peers = __match_any_sync(0xFFFFFFFFu, bin);
    if (bin < DLU_STATS_NBINS && (int)(threadIdx.x & 31u) == __ffs(peers) - 1)
        atomicAdd(&sb->hist[bin], (unsigned int)__popc(peers));
}

static __device__ __forceinline__ unsigned int dlu__cuda_warp_sum(unsigned int v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xFFFFFFFFu, v, o);
    return v;
}

/* Add the block's counts into st (device, uint64 fields). Called by every thread. */
static __device__ __forceinline__ void dlu__cuda_stats_end(dlu__cuda_stats_block *sb, const dlu__cuda_stats_local *l,
                                                          dlu_stats *st)
{
    const unsigned int c = dlu__cuda_warp_sum(l->count), z = dlu__cuda_warp_sum(l->zeros),
                       o = dlu__cuda_warp_sum(l->overflow), u = dlu__cuda_warp_sum(l->underflow),
                       q = dlu__cuda_warp_sum(l->nan);
    if ((threadIdx.x & 31u) == 0) {
        if (c)
            atomicAdd(&sb->ev[0], c);
        if (z)
            atomicAdd(&sb->ev[1], z);
        if (o)
            atomicAdd(&sb->ev[2], o);
        if (u)
            atomicAdd(&sb->ev[3], u);
        if (q)
            atomicAdd(&sb->ev[4], q);
    }
    __syncthreads();
    for (int t = threadIdx.x; t < DLU_STATS_NBINS; t += blockDim.x)
        if (sb->hist[t])
            atomicAdd((unsigned long long *)&st->hist[t], (unsigned long long)sb->hist[t]);
    if (threadIdx.x < 5 && sb->ev[threadIdx.x]) {
        const unsigned int t = threadIdx.x;
        uint64_t *f = t == 0 ? &st->count : t == 1 ? &st->zeros : t == 2 ? &st->overflow
                    : t == 3 ? &st->underflow : &st->nan;
        atomicAdd((unsigned long long *)f, (unsigned long long)sb->ev[t]);
    }
}

/* Run op(i) for every i in [0, n): op writes element i's output and returns its status
 * word, which is recorded into st (NULL: nothing recorded). Grid-stride over whole
 * blocks, so every lane of a warp takes part in each round (dlu__cuda_stats_add). */
template <class Op>
__global__ void __launch_bounds__(DLU_CUDA_QTHREADS) dlu__cuda_produce_kernel(Op op, size_t n, dlu_stats *st)
{
    __shared__ dlu__cuda_stats_block sb;
    dlu__cuda_stats_local l = {0, 0, 0, 0, 0};
    if (st)
        dlu__cuda_stats_begin(&sb, &l);
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t base = (size_t)blockIdx.x * blockDim.x; base < n; base += stride) {
        const size_t i = base + threadIdx.x;
        const int valid = i < n;
        uint32_t info = DLU_QF_BIN_NONE << DLU_QF_BIN_SHIFT;
        if (valid)
            info = op(i);
        if (st)
            dlu__cuda_stats_add(&sb, &l, info, valid);
    }
    if (st)
        dlu__cuda_stats_end(&sb, &l, st);
}

/* Blocks for n elements: enough to fill the GPU, and no block with 2^31 elements or more
 * (its 32-bit counters). */
static inline unsigned int dlu__cuda_produce_blocks(size_t n)
{
    size_t b = (n + DLU_CUDA_QTHREADS - 1) / DLU_CUDA_QTHREADS;
    const size_t cap = 4096, floor_ = (n >> 30) + 1;
    if (b > cap)
        b = cap > floor_ ? cap : floor_;
    return (unsigned int)(b ? b : 1);
}

/* Launch dlu__cuda_produce_kernel on the backend's stream; `what` names the work in a
 * launch error. */
template <class Op>
static inline dlu_status dlu__cuda_produce(dlu_backend *be, const Op &op, size_t n, dlu_stats *st, const char *what)
{
    if (n == 0)
        return DLU_OK;
    dlu__cuda_produce_kernel<Op>
        <<<dlu__cuda_produce_blocks(n), DLU_CUDA_QTHREADS, 0, dlu__cuda_of(be)->stream>>>(op, n, st);
    return DLU__CUDA_LAUNCHED(be, what);
}

/* Store a DFP integer into an int8_t or int16_t array (bits 8 or 16); nothing for NULL. */
static __device__ __forceinline__ void dlu__cuda_store_q(void *out, int bits, size_t i, int32_t q)
{
    if (!out)
        return;
    if (bits == 8)
        ((int8_t *)out)[i] = (int8_t)q;
    else
        ((int16_t *)out)[i] = (int16_t)q;
}

#endif /* __CUDACC__ */
#endif
