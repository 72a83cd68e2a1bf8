/* exec.c -- the value executor of the simulated DLU (see exec.h).
 *
 * Every value goes through include/dlu/numerics.h (requantize, bias in the accumulator,
 * statistics, dequantize, the stochastic-rounding stream) or through an exact integer
 * product (igemm), so the results are the cpu backend's bits. The operand gathers walk
 * each op's logical GEMM (docs/sim-commands.md) a row at a time; a mistake in them
 * changes the training digests that tests/test_dlusim.sh compares with the cpu's.
 *
 * Not here: timing, tiling, element-wise ops. */
#include <string.h>

#include "backend/cpu/igemm.h"
#include "error.h"
#include "sim/exec.h"

int dlusim_site_needs_calib(const dlu__qsite *q)
{
    return q && q->scale && dlu_format_is_dfp(q->fmt) && !dlu_scale_calibrated(q->scale);
}

static inline int32_t ld(const void *p, int wide, size_t i)
{
    return wide ? ((const int16_t *)p)[i] : ((const int8_t *)p)[i];
}

static inline void st(void *p, int wide, size_t i, int32_t v)
{
    if (wide)
        ((int16_t *)p)[i] = (int16_t)v;
    else
        ((int8_t *)p)[i] = (int8_t)v;
}

/* Index of C(i, j) in the output tensor (row-major, NCHW for convolutions). */
static uint64_t c_index(const dlusim_exec *e, uint64_t i, uint64_t j)
{
    const dlu__layer *l = e->l;
    switch (e->kind) {
    case DLUSIM_CONV_FWD: {
        const uint64_t hw = (uint64_t)l->out_h * l->out_w;
        return (i / hw) * l->out_size + j * hw + i % hw;
    }
    case DLUSIM_CONV_BWD_DATA: {
        const uint64_t HW = (uint64_t)l->in_h * l->in_w;
        return (i / HW) * l->in_size + j * HW + i % HW;
    }
    default: return i * e->N + j;
    }
}

static uint8_t *buf_ptr(const dlusim_exec *e, uint8_t id, uint8_t *lmem, uint8_t *rf)
{
    const dlusim_buf *b = &e->s->buf[id];
    return (b->space == DLUSIM_SPACE_RF ? rf : lmem) + b->offset;
}

static int out_wide(const dlu__qsite *q) { return q->fmt == DLU_FMT_DFP16; }

/* Copy kc elements src[off + t*stride] into dst[t] (same element type). */
static void copy_strided(void *dst, const void *src, int wide, uint64_t off, uint64_t stride, uint32_t kc)
{
    if (stride == 1) {
        memcpy(dst, (const uint8_t *)src + off * (wide ? 2 : 1), (size_t)kc * (wide ? 2 : 1));
        return;
    }
    for (uint32_t t = 0; t < kc; t++)
        st(dst, wide, t, ld(src, wide, off + t * stride));
}

/* Row r (c, ky, kx) of the unfolded input over positions [q0, q0 + kc) of the whole batch
 * (q = s * Ho*Wo + p), into dst; counters step through (s, oy, ox) without division. */
static void im2col_row(const dlusim_exec *e, const void *x, int wide, uint64_t r, uint64_t q0, uint32_t kc, void *dst)
{
    const dlu__layer *l = e->l;
    const int k = l->kernel, kk = k * k;
    const int c = (int)(r / kk), ky = (int)(r % kk) / k, kx = (int)(r % k);
    const uint64_t hw = (uint64_t)l->out_h * l->out_w;
    uint64_t s = q0 / hw;
    int oy = (int)(q0 % hw / l->out_w), ox = (int)(q0 % l->out_w);
    for (uint32_t t = 0; t < kc; t++) {
        const int iy = oy * l->stride - l->pad + ky, ix = ox * l->stride - l->pad + kx;
        int32_t v = 0;
        if (iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w)
            v = ld(x, wide, (size_t)s * l->in_size + (size_t)c * l->in_h * l->in_w + (size_t)iy * l->in_w + ix);
        st(dst, wide, t, v);
        if (++ox == l->out_w) {
            ox = 0;
            if (++oy == l->out_h)
                oy = 0, s++;
        }
    }
}

/* Row i of the GEMM's A over [k0, k0 + kc) (docs/sim-commands.md gives each op's A), with
 * counters instead of a division per element. */
static void a_row(const dlusim_exec *e, uint64_t i, uint64_t k0, uint32_t kc, void *dst)
{
    const dlu__layer *l = e->l;
    const int w = e->awide;
    switch (e->kind) {
    case DLUSIM_LIN_FWD:
    case DLUSIM_LIN_BWD_DATA: copy_strided(dst, e->asrc, w, i * e->K + k0, 1, kc); return;
    case DLUSIM_LIN_BWD_W: copy_strided(dst, e->asrc, w, k0 * e->M + i, e->M, kc); return;
    case DLUSIM_CONV_BWD_W: {
        const uint64_t hw = (uint64_t)l->out_h * l->out_w;
        for (uint32_t t = 0; t < kc;) { /* runs of one sample's plane f */
            const uint64_t k = k0 + t, s = k / hw, p = k % hw;
            const uint32_t run = (uint32_t)(hw - p < kc - t ? hw - p : kc - t);
            copy_strided((uint8_t *)dst + (size_t)t * (w ? 2 : 1), e->asrc, w, s * l->out_size + i * hw + p, 1, run);
            t += run;
        }
        return;
    }
    case DLUSIM_CONV_FWD: {
        const uint64_t hw = (uint64_t)l->out_h * l->out_w, s = i / hw, p = i % hw;
        const int oy = (int)(p / l->out_w), ox = (int)(p % l->out_w), k = l->kernel;
        int c = (int)(k0 / ((uint64_t)k * k)), ky = (int)(k0 % ((uint64_t)k * k)) / k, kx = (int)(k0 % k);
        const uint8_t *x = e->asrc;
        for (uint32_t t = 0; t < kc; t++) {
            const int iy = oy * l->stride - l->pad + ky, ix = ox * l->stride - l->pad + kx;
            int32_t v = 0;
            if (iy >= 0 && iy < l->in_h && ix >= 0 && ix < l->in_w)
                v = ld(x, w, (size_t)s * l->in_size + (size_t)c * l->in_h * l->in_w + (size_t)iy * l->in_w + ix);
            st(dst, w, t, v);
            if (++kx == k) {
                kx = 0;
                if (++ky == k)
                    ky = 0, c++;
            }
        }
        return;
    }
    case DLUSIM_CONV_BWD_DATA: {
        const uint64_t HW = (uint64_t)l->in_h * l->in_w, s = i / HW, q = i % HW;
        const int iy = (int)(q / l->in_w), ix = (int)(q % l->in_w), k = l->kernel, st_ = l->stride;
        const uint64_t howo = (uint64_t)l->out_h * l->out_w;
        int f = (int)(k0 / ((uint64_t)k * k)), ky = (int)(k0 % ((uint64_t)k * k)) / k, kx = (int)(k0 % k);
        for (uint32_t t = 0; t < kc; t++) {
            const int ty = iy + l->pad - ky, tx = ix + l->pad - kx;
            int32_t v = 0;
            if (ty >= 0 && tx >= 0 && (st_ == 1 || (ty % st_ == 0 && tx % st_ == 0))) {
                const int oy = ty / st_, ox = tx / st_;
                if (oy < l->out_h && ox < l->out_w)
                    v = ld(e->asrc, w, s * l->out_size + (uint64_t)f * howo + (uint64_t)oy * l->out_w + ox);
            }
            st(dst, w, t, v);
            if (++kx == k) {
                kx = 0;
                if (++ky == k)
                    ky = 0, f++;
            }
        }
        return;
    }
    }
}

/* Row j of B over [k0, k0 + kc). */
static void b_row(const dlusim_exec *e, uint64_t j, uint64_t k0, uint32_t kc, void *dst)
{
    const dlu__layer *l = e->l;
    const int w = e->bwide;
    switch (e->kind) {
    case DLUSIM_LIN_FWD:
    case DLUSIM_CONV_FWD: copy_strided(dst, e->bsrc, w, j * e->K + k0, 1, kc); return;
    case DLUSIM_LIN_BWD_DATA:
    case DLUSIM_LIN_BWD_W: copy_strided(dst, e->bsrc, w, k0 * e->N + j, e->N, kc); return;
    case DLUSIM_CONV_BWD_DATA: {
        const uint64_t kk = (uint64_t)l->kernel * l->kernel, ckk = (uint64_t)l->in_c * kk;
        for (uint32_t t = 0; t < kc;) { /* runs of one filter's (ky, kx) */
            const uint64_t k = k0 + t, f = k / kk, r = k % kk;
            const uint32_t run = (uint32_t)(kk - r < kc - t ? kk - r : kc - t);
            copy_strided((uint8_t *)dst + (size_t)t * (w ? 2 : 1), e->bsrc, w, f * ckk + j * kk + r, 1, run);
            t += run;
        }
        return;
    }
    case DLUSIM_CONV_BWD_W: im2col_row(e, e->bsrc, w, j, k0, kc, dst); return;
    }
}

static dlu_status do_load(dlusim_exec *e, const dlusim_cmd *c, uint8_t *dst)
{
    if (c->operand == DLUSIM_OPND_A) {
        for (uint32_t i = 0; i < c->m; i++)
            a_row(e, c->m0 + (uint64_t)i, c->k0, c->k, dst + (size_t)i * c->k * (e->awide ? 2 : 1));
    } else if (c->operand == DLUSIM_OPND_B) {
        for (uint32_t j = 0; j < c->n; j++)
            b_row(e, c->n0 + (uint64_t)j, c->k0, c->k, dst + (size_t)j * c->k * (e->bwide ? 2 : 1));
    }
    return DLU_OK; /* other operands carry no values */
}

static dlu_status do_mac(dlusim_exec *e, const dlusim_cmd *c, const uint8_t *A, const uint8_t *B, uint8_t *C)
{
    const size_t mn = (size_t)c->m * c->n;
    const int init = c->flags & DLUSIM_F_ACC_INIT;
    if (c->flags & DLUSIM_F_BIAS_SUM) {
        for (uint32_t i = 0; i < c->m; i++) {
            int64_t sum = 0;
            for (uint32_t k = 0; k < c->k; k++)
                sum += ld(A, e->awide, (size_t)i * c->k + k);
            e->bias_acc[c->m0 + i] = (init ? 0 : e->bias_acc[c->m0 + i]) + sum;
        }
    }
    if (e->acc_bytes == 4) {
        if (e->awide || e->bwide)
            return dlu__error(DLU_EINTERNAL, "dlusim: int32 accumulators asked for a 16-bit operand");
        int32_t *acc = (int32_t *)C, *p = init ? acc : e->scratch;
        if (!init && mn * 4 > e->scratch_nbytes)
            return dlu__error(DLU_EINTERNAL, "dlusim: MAC tile larger than the executor's scratch");
        DLU__TRY(dlu__igemm_s8_nt((int)c->m, (int)c->n, (int)c->k, (const int8_t *)A, (int)c->k, (const int8_t *)B,
                                  (int)c->k, p, (int)c->n));
        if (!init)
            for (size_t i = 0; i < mn; i++)
                acc[i] += p[i];
        return DLU_OK;
    }
    /* int64 accumulators: both operands as int16 (exact), product in int64 */
    const size_t na = (size_t)c->m * c->k, nb = (size_t)c->n * c->k;
    if ((na + nb) * 2 + mn * 8 > e->scratch_nbytes)
        return dlu__error(DLU_EINTERNAL, "dlusim: MAC tile larger than the executor's scratch");
    int64_t *prod = e->scratch;
    int16_t *a16 = (int16_t *)(prod + mn), *b16 = a16 + na;
    for (size_t i = 0; i < na; i++)
        a16[i] = (int16_t)ld(A, e->awide, i);
    for (size_t i = 0; i < nb; i++)
        b16[i] = (int16_t)ld(B, e->bwide, i);
    int64_t *acc = (int64_t *)C;
    DLU__TRY(dlu__igemm_s16_nt((int)c->m, (int)c->n, (int)c->k, a16, (int)c->k, b16, (int)c->k, init ? acc : prod,
                               (int)c->n));
    if (!init)
        for (size_t i = 0; i < mn; i++)
            acc[i] += prod[i];
    return DLU_OK;
}

/* Requantize one accumulator v of site q (exponents ea -> eo) at tensor index idx: the
 * result (int, or fp32 bits for a g=fp32 gradient) goes to out[o]; statistics to st. */
static void requant_one(const dlusim_exec *e, const dlu__qsite *q, int64_t v, int ea, int eo, uint64_t idx,
                        int calib, uint8_t *out, size_t o, dlu_stats *stp)
{
    uint32_t info;
    if (!dlu_format_is_dfp(q->fmt)) {
        dlu_stats_record(stp, dlu_acc_hist_info(v, ea));
        ((float *)out)[o] = dlu_acc_to_f32(v, ea);
        return;
    }
    const int bits = dlu_format_bits(q->fmt);
    if (calib) {
        (void)dlu_dfp_requantize(v, ea, ea, bits, DLU_ROUND_NEAREST, 0, &info);
        dlu_stats_record(stp, info);
        return;
    }
    const uint64_t rnd = dlu__sr_rnd(q->round, e->seed, q->id, e->step, idx);
    const int32_t r = dlu_dfp_requantize(v, ea, eo, bits, q->round, rnd, &info);
    dlu_stats_record(stp, info);
    st(out, bits == 16, o, r);
}

static dlu_status do_requant(dlusim_exec *e, const dlusim_cmd *c, const uint8_t *C, uint8_t *O, dlu_stats *dpe)
{
    const int calib = (c->flags & DLUSIM_F_CALIB) != 0;
    if (c->operand == DLUSIM_OPND_BIAS) {
        if (calib && !dlusim_site_needs_calib(e->qb))
            return DLU_OK;
        for (uint32_t i = 0; i < c->m; i++)
            requant_one(e, e->qb, e->bias_acc[c->m0 + i], e->eb, e->ebo, c->m0 + (uint64_t)i, calib, O, i,
                        calib ? &e->bias_pre : &e->bias_stats);
        return DLU_OK;
    }
    const int fwd_bias = e->bias_acc && (e->kind == DLUSIM_LIN_FWD || e->kind == DLUSIM_CONV_FWD);
    for (uint32_t i = 0; i < c->m; i++)
        for (uint32_t j = 0; j < c->n; j++) {
            const size_t o = (size_t)i * c->n + j;
            int64_t v = e->acc_bytes == 4 ? ((const int32_t *)C)[o] : ((const int64_t *)C)[o];
            if (fwd_bias)
                v = dlu_add_sat_i64(v, e->bias_acc[c->n0 + j]);
            requant_one(e, e->q, v, e->ea, e->eo, c_index(e, c->m0 + (uint64_t)i, c->n0 + (uint64_t)j), calib, O, o,
                        &dpe[i % (uint32_t)e->ndpe]);
        }
    return DLU_OK;
}

/* A stored element of site q: the integer, or (gradients) its fp32 value. */
static float grad_value(const dlu__qsite *q, const uint8_t *O, size_t o, int eo)
{
    if (!dlu_format_is_dfp(q->fmt))
        return ((const float *)O)[o];
    return dlu_dfp_dequantize(ld(O, out_wide(q), o), eo);
}

static dlu_status do_store(dlusim_exec *e, const dlusim_cmd *c, const uint8_t *O)
{
    if (c->operand == DLUSIM_OPND_BIAS) {
        for (uint32_t i = 0; i < c->m; i++)
            e->gbout[c->m0 + i] = grad_value(e->qb, O, i, e->ebo);
        return DLU_OK;
    }
    if (c->operand != DLUSIM_OPND_C)
        return DLU_OK;
    for (uint32_t i = 0; i < c->m; i++)
        for (uint32_t j = 0; j < c->n; j++) {
            const size_t o = (size_t)i * c->n + j;
            const uint64_t idx = c_index(e, c->m0 + (uint64_t)i, c->n0 + (uint64_t)j);
            if (e->gout)
                e->gout[idx] = grad_value(e->q, O, o, e->eo);
            else
                st(e->yout, out_wide(e->q), idx, ld(O, out_wide(e->q), o));
        }
    return DLU_OK;
}

dlu_status dlusim_exec_cmd(void *ctx, const dlusim_cmd *c, uint8_t *lmem, uint8_t *rf, dlu_stats *dpe_stats)
{
    dlusim_exec *e = ctx;
    switch (c->kind) {
    case DLUSIM_CMD_LOAD: return c->wr == DLUSIM_NOBUF ? DLU_OK : do_load(e, c, buf_ptr(e, c->wr, lmem, rf));
    case DLUSIM_CMD_MAC:
        return do_mac(e, c, buf_ptr(e, c->rd[0], lmem, rf), buf_ptr(e, c->rd[1], lmem, rf),
                      buf_ptr(e, c->wr, lmem, rf));
    case DLUSIM_CMD_REQUANT:
        return do_requant(e, c, c->rd[0] == DLUSIM_NOBUF ? NULL : buf_ptr(e, c->rd[0], lmem, rf),
                          buf_ptr(e, c->wr, lmem, rf), dpe_stats);
    case DLUSIM_CMD_STORE: return do_store(e, c, buf_ptr(e, c->rd[0], lmem, rf));
    default: return DLU_OK;
    }
}

dlu_status dlusim_exec_stats(void *ctx, const dlusim_cmd *c, const dlu_stats *agg)
{
    dlusim_exec *e = ctx;
    if (c->flags & DLUSIM_F_CALIB) {
        if (dlusim_site_needs_calib(e->q))
            e->eo = dlu__site_exp(e->q, agg);
        if (e->qb && dlusim_site_needs_calib(e->qb))
            e->ebo = dlu__site_exp(e->qb, &e->bias_pre);
        return DLU_OK;
    }
    e->q->stats = *agg;
    e->q->exp = dlu_format_is_dfp(e->q->fmt) ? e->eo : e->ea;
    if (e->qb) {
        e->qb->stats = e->bias_stats;
        e->qb->exp = dlu_format_is_dfp(e->qb->fmt) ? e->ebo : e->eb;
    }
    return DLU_OK;
}
