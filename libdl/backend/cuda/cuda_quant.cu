/* cuda_quant.cu -- DFP quantization, requantization and statistics on the device, and the
 * site helpers of the CUDA backend (contract: cuda_quant.h).
 *
 * What it is: element-wise producers over dlu__cuda_produce (cuda_quant.h), each element
 * computed by dlu/numerics.h's scalar functions (dlu_dfp_quantize, dlu_dfp_requantize,
 * dlu_acc_hist_info, dlu_dfp_dequantize, dlu_acc_to_f32) with the stochastic-rounding bits
 * of its global index (dlu_sr_bits64 through dlu__sr_rnd), so the bytes and statistics are
 * cpu_quant.c's, whatever the grid; and cpu_dfp.c's site helpers (quant_site, requant_site,
 * grad_site, stats_inherit) for device tensors.
 *
 * Calibration: a site's first production (its policy not yet calibrated) first records the
 * statistics of a nearest-rounding production at exponent 0 (fp32) or ea (accumulators),
 * seed 0, into a deferred-result slot whose host copy is a thread-local dlu_stats
 * (calib_pre), waits for it (dlu__cuda_flush), and hands it to dlu__site_exp -- as
 * cpu_dfp.c does. That pass stores nothing: the real production that follows writes
 * every element. The real production adds its statistics into the slot dlu__cuda_stats_slot(be, &q->stats) (zeroed), which
 * reaches q->stats at the next sync; that replaces the CPU's dlu_stats_clear + record.
 *
 * What it is not: not a second implementation of any rounding or statistics rule (the only
 * thing done here besides calling numerics.h is counting the status words per block, see
 * dlu__cuda_stats_add), and not exponent policy. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda_quant.h"
#include "error.h"

namespace {

/* ---- element ops --------------------------------------------------------------------- */

/* fp32 -> DFP at exponent e (dlu_quantize_f32's loop body). */
struct op_quant_f32 {
    const float *x;
    void *out; /* int8_t / int16_t, or NULL: statistics only */
    uint64_t seed, base;
    int e, bits;
    dlu_round mode;
    uint32_t id, step;
    __device__ uint32_t operator()(size_t i) const
    {
        uint32_t info;
        const uint64_t rnd = dlu__sr_rnd(mode, seed, id, step, base + i);
        dlu__cuda_store_q(out, bits, i, dlu_dfp_quantize(x[i], e, bits, mode, rnd, &info));
        return info;
    }
};

/* Accumulator (int64 or int32) at ea -> DFP at eo (dlu_requantize_acc64's loop body); F32
 * stores the result dequantized (dlu_dfp_dequantize(q, eo)) instead of the integer. */
template <typename TA, int F32>
struct op_requant {
    const TA *acc;
    void *out; /* int8_t / int16_t (F32 == 0) or float (F32 == 1); NULL: statistics only */
    uint64_t seed, base;
    int ea, eo, bits;
    dlu_round mode;
    uint32_t id, step;
    __device__ uint32_t operator()(size_t i) const
    {
        const int64_t v = (int64_t)acc[i];
        uint32_t info;
        /* dlu_dfp_requantize reads rnd only for a nonzero value shifted right (eo > ea);
         * skipping the Philox call otherwise gives the same bits */
        const uint64_t rnd = (eo > ea && v != 0) ? dlu__sr_rnd(mode, seed, id, step, base + i) : 0;
        const int32_t q = dlu_dfp_requantize(v, ea, eo, bits, mode, rnd, &info);
        if (F32) {
            if (out)
                ((float *)out)[i] = dlu_dfp_dequantize(q, eo);
        } else {
            dlu__cuda_store_q(out, bits, i, q);
        }
        return info;
    }
};

/* Statistics of an existing DFP integer (dlu__cpu_stats_q): requantized at ea = eo = e. */
template <typename TQ>
struct op_stats_q {
    const TQ *q;
    int e, bits;
    __device__ uint32_t operator()(size_t i) const
    {
        uint32_t info;
        (void)dlu_dfp_requantize((int64_t)q[i], e, e, bits, DLU_ROUND_NEAREST, 0, &info);
        return info;
    }
};

/* Histogram-only statistics of an accumulator, and its exact fp32 value (g=fp32). */
struct op_acc_hist {
    const int64_t *acc;
    float *out; /* may be NULL */
    int ea;
    __device__ uint32_t operator()(size_t i) const
    {
        const int64_t v = acc[i];
        if (out)
            out[i] = dlu_acc_to_f32(v, ea);
        return dlu_acc_hist_info(v, ea);
    }
};

dlu_status check_fmt_mode(dlu_format fmt, dlu_round mode, const char *what)
{
    if (!dlu_format_is_dfp(fmt))
        return dlu__error(DLU_EINVAL, "cuda %s: format %s is not a dynamic fixed point format", what,
                          dlu_format_name(fmt));
    if (mode != DLU_ROUND_NEAREST && mode != DLU_ROUND_STOCHASTIC)
        return dlu__error(DLU_EINVAL, "cuda %s: unknown rounding mode %d", what, (int)mode);
    return DLU_OK;
}

template <typename TA, int F32>
dlu_status requant(dlu_backend *be, const TA *acc, size_t n, int ea, int eo, dlu_format fmt, dlu_round mode,
                   uint64_t seed, uint32_t id, uint32_t step, uint64_t index_base, void *out, dlu_stats *st,
                   const char *what)
{
    DLU__TRY(check_fmt_mode(fmt, mode, what));
    op_requant<TA, F32> op;
    op.acc = acc;
    op.out = out;
    op.seed = seed;
    op.base = index_base;
    op.ea = ea;
    op.eo = eo;
    op.bits = dlu_format_bits(fmt);
    op.mode = mode;
    op.id = id;
    op.step = step;
    return dlu__cuda_produce(be, op, n, st, what);
}

/* Host copy of a calibration pass's statistics. Not a local: if a launch or the flush
 * fails after the slot was taken, the slot may still be delivered by a later flush, which
 * must find live memory. One per thread; a calibration flushes before the next starts. */
thread_local dlu_stats calib_pre;

/* A deferred statistics slot for the host struct dst, or the error of the flush that
 * failed to make room for it. */
dlu_status stats_slot(dlu_backend *be, dlu_stats *dst, const dlu__qsite *q, dlu_stats **slot)
{
    *slot = dlu__cuda_stats_slot(be, dst);
    if (!*slot)
        return dlu__error_prefix(DLU_EINTERNAL, "site %s: no room for its statistics: ", q->name);
    return DLU_OK;
}

} // namespace

/* ---- launchers ------------------------------------------------------------------------- */

extern "C" dlu_status dlu__cuda_quantize_f32(dlu_backend *be, const float *x, size_t n, int e, dlu_format fmt,
                                             dlu_round mode, uint64_t seed, uint32_t id, uint32_t step,
                                             uint64_t index_base, void *q_out, dlu_stats *st)
{
    DLU__TRY(check_fmt_mode(fmt, mode, "quantize fp32"));
    op_quant_f32 op;
    op.x = x;
    op.out = q_out;
    op.seed = seed;
    op.base = index_base;
    op.e = e;
    op.bits = dlu_format_bits(fmt);
    op.mode = mode;
    op.id = id;
    op.step = step;
    return dlu__cuda_produce(be, op, n, st, "quantizing fp32 to dfp");
}

extern "C" dlu_status dlu__cuda_requantize_acc64(dlu_backend *be, const int64_t *acc, size_t n, int ea, int eo,
                                                 dlu_format fmt, dlu_round mode, uint64_t seed, uint32_t id,
                                                 uint32_t step, uint64_t index_base, void *q_out, dlu_stats *st)
{
    return requant<int64_t, 0>(be, acc, n, ea, eo, fmt, mode, seed, id, step, index_base, q_out, st,
                               "requantizing int64 accumulators");
}

extern "C" dlu_status dlu__cuda_requantize_acc32(dlu_backend *be, const int32_t *acc, size_t n, int ea, int eo,
                                                 dlu_format fmt, dlu_round mode, uint64_t seed, uint32_t id,
                                                 uint32_t step, uint64_t index_base, void *q_out, dlu_stats *st)
{
    return requant<int32_t, 0>(be, acc, n, ea, eo, fmt, mode, seed, id, step, index_base, q_out, st,
                               "requantizing int32 accumulators");
}

extern "C" dlu_status dlu__cuda_requantize_acc64_f32(dlu_backend *be, const int64_t *acc, size_t n, int ea, int eo,
                                                     dlu_format fmt, dlu_round mode, uint64_t seed, uint32_t id,
                                                     uint32_t step, uint64_t index_base, float *g_out,
                                                     dlu_stats *st)
{
    return requant<int64_t, 1>(be, acc, n, ea, eo, fmt, mode, seed, id, step, index_base, g_out, st,
                               "requantizing a gradient to dfp and back to fp32");
}

extern "C" dlu_status dlu__cuda_stats_q(dlu_backend *be, const void *q, size_t n, int e, dlu_format fmt,
                                        dlu_stats *st)
{
    if (!st || !q || !dlu_format_is_dfp(fmt))
        return DLU_OK;
    if (dlu_format_bits(fmt) == 8) {
        op_stats_q<int8_t> op;
        op.q = (const int8_t *)q;
        op.e = e;
        op.bits = 8;
        return dlu__cuda_produce(be, op, n, st, "statistics of a dfp8 tensor");
    }
    op_stats_q<int16_t> op;
    op.q = (const int16_t *)q;
    op.e = e;
    op.bits = 16;
    return dlu__cuda_produce(be, op, n, st, "statistics of a dfp16 tensor");
}

extern "C" dlu_status dlu__cuda_stats_acc64(dlu_backend *be, const int64_t *acc, size_t n, int ea, float *g_out,
                                            dlu_stats *st)
{
    if (!acc || (!st && !g_out))
        return DLU_OK;
    op_acc_hist op;
    op.acc = acc;
    op.out = g_out;
    op.ea = ea;
    return dlu__cuda_produce(be, op, n, st, "accumulators to fp32 with histogram statistics");
}

/* ---- sites ----------------------------------------------------------------------------- */

extern "C" dlu_status dlu__cuda_quant_site(dlu_backend *be, dlu__qsite *q, const float *x, size_t n, dlu_tensor *out,
                                           uint64_t seed, uint32_t step)
{
    dlu_stats *slot;
    const dlu_stats *prep = NULL;
    if (q->scale && !dlu_scale_calibrated(q->scale)) {
        DLU__TRY(stats_slot(be, &calib_pre, q, &slot));
        DLU__TRY(dlu__cuda_quantize_f32(be, x, n, 0, q->fmt, DLU_ROUND_NEAREST, 0, 0, 0, 0, NULL, slot));
        DLU__TRY(dlu__cuda_flush(be)); /* calib_pre now holds the statistics */
        prep = &calib_pre;
    }
    const int e = dlu__site_exp(q, prep);
    DLU__TRY(stats_slot(be, &q->stats, q, &slot));
    DLU__TRY(dlu__cuda_quantize_f32(be, x, n, e, q->fmt, q->round, seed, q->id, step, 0, out->data, slot));
    out->exp = e;
    return DLU_OK;
}

/* The calibration pass of an accumulator site (no-op when calibrated): *prep = its
 * statistics, or NULL. */
static dlu_status requant_calibrate(dlu_backend *be, dlu__qsite *q, const int64_t *acc, size_t n, int ea,
                                    const dlu_stats **prep)
{
    dlu_stats *slot;
    *prep = NULL;
    if (!q->scale || dlu_scale_calibrated(q->scale))
        return DLU_OK;
    DLU__TRY(stats_slot(be, &calib_pre, q, &slot));
    DLU__TRY(dlu__cuda_requantize_acc64(be, acc, n, ea, ea, q->fmt, DLU_ROUND_NEAREST, 0, 0, 0, 0, NULL, slot));
    DLU__TRY(dlu__cuda_flush(be));
    *prep = &calib_pre;
    return DLU_OK;
}

extern "C" dlu_status dlu__cuda_requant_site(dlu_backend *be, dlu__qsite *q, const int64_t *acc, size_t n, int ea,
                                             dlu_tensor *out, uint64_t seed, uint32_t step)
{
    dlu_stats *slot;
    const dlu_stats *prep;
    DLU__TRY(requant_calibrate(be, q, acc, n, ea, &prep));
    const int eo = q->scale ? dlu__site_exp(q, prep) : ea;
    DLU__TRY(stats_slot(be, &q->stats, q, &slot));
    DLU__TRY(dlu__cuda_requantize_acc64(be, acc, n, ea, eo, q->fmt, q->round, seed, q->id, step, 0, out->data, slot));
    q->exp = eo;
    out->exp = eo;
    return DLU_OK;
}

extern "C" dlu_status dlu__cuda_grad_site(dlu_backend *be, dlu__qsite *q, const int64_t *acc, size_t n, int ea,
                                          float *g, uint64_t seed, uint32_t step)
{
    dlu_stats *slot;
    if (!dlu_format_is_dfp(q->fmt)) {
        DLU__TRY(stats_slot(be, &q->stats, q, &slot));
        DLU__TRY(dlu__cuda_stats_acc64(be, acc, n, ea, g, slot)); /* histogram only */
        q->exp = ea;
        return DLU_OK;
    }
    const dlu_stats *prep;
    DLU__TRY(requant_calibrate(be, q, acc, n, ea, &prep));
    const int eo = q->scale ? dlu__site_exp(q, prep) : ea;
    DLU__TRY(stats_slot(be, &q->stats, q, &slot));
    DLU__TRY(dlu__cuda_requantize_acc64_f32(be, acc, n, ea, eo, q->fmt, q->round, seed, q->id, step, 0, g, slot));
    q->exp = eo;
    return DLU_OK;
}

extern "C" dlu_status dlu__cuda_stats_inherit(dlu_backend *be, dlu__qsite *q, const dlu_tensor *t, size_t n)
{
    dlu_stats *slot;
    DLU__TRY(stats_slot(be, &q->stats, q, &slot));
    DLU__TRY(dlu__cuda_stats_q(be, t->data, n, t->exp, t->dtype == DLU_DTYPE_I16 ? DLU_FMT_DFP16 : DLU_FMT_DFP8,
                               slot));
    q->exp = t->exp;
    return DLU_OK;
}
