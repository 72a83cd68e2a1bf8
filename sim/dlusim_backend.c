/* dlusim_backend.c -- the "dlusim" backend: a training step on the simulated DLU core.
 *
 * Device string "dlusim:CONFIG.ini" (hardware parameters, sim/hwcfg.def). Tensors live in
 * host memory standing in for the simulated HBM (its capacity is enforced). Every kernel
 * is lowered to a tile-level command stream (lower.c) and run on the SystemC model
 * (hw_model/), which counts cycles, traffic and energy per layer and per phase.
 *
 * Values, in verification mode (the default):
 *  - linear and conv2d in DFP (forward, backward-data, backward-weight): computed by the
 *    model itself, tile by tile: the model calls exec.c as each command completes, so the
 *    operands travel through its local memories and register files and the statistics
 *    through its DPE counters and the master core;
 *  - element-wise ops (relu, pooling, flatten, the loss, quantizing the input and the
 *    weights, the optimizer update) and every fp32 op: computed by the cpu reference
 *    kernels at the point the model runs them, and timed from their command streams.
 * Either way the results are the cpu backend's bits (fp32 GEMMs: whatever OpenBLAS gives
 * on this host, as on --device cpu).
 * Timing-only mode (dlu_sim_set_timing_only) skips every value, for sweeps.
 *
 * Not here: costs (hw_model/), tiling (lower.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "error.h"
#include "hw_model/dluhw.h"
#include "sim/exec.h"
#include "sim/hwcfg.h"
#include "sim/lower.h"

typedef struct sim_layer {
    const dlu__layer *l;
    char name[64];
    const void *param[2]; /* weight and bias storage: optimizer updates are charged here */
    dlu_sim_counters ph[DLU_SIM_NPHASE];
} sim_layer;

typedef struct sim {
    dlusim_hwcfg cfg;
    dluhw *hw;
    int timing_only;
    int not_counting;
    dlusim_stream st;
    sim_layer *layers;
    int nlayers, cap;
    size_t hbm_used, hbm_cap;
    FILE *trace;
    void *scratch;
    size_t scratch_nbytes;
    int64_t *bias;  /* bias accumulators of the GEMM in flight, grown as needed */
    size_t bias_cap;
} sim;

#define SIM(be) ((sim *)(be)->impl)
#define HDR 64 /* allocation header: the size, for the HBM capacity count */

/* ---- layers and accounting ------------------------------------------------------------- */

static int layer_index(sim *s, const dlu__layer *l, const char *name)
{
    for (int i = 0; i < s->nlayers; i++)
        if (s->layers[i].l == l && !strcmp(s->layers[i].name, name))
            return i;
    if (s->nlayers == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        sim_layer *p = realloc(s->layers, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        s->layers = p;
        s->cap = cap;
    }
    sim_layer *L = &s->layers[s->nlayers];
    memset(L, 0, sizeof *L);
    L->l = l;
    snprintf(L->name, sizeof L->name, "%s", name);
    return s->nlayers++;
}

/* Charge one run's counters to layer li: the statistics read-outs (the cycles the critical
 * unit waited on them, and the statistics energy) go to the stats phase, the rest to the
 * run's own phase, so that the phases still add up to the whole. */
static void charge(sim *s, int li, const dlu_sim_counters run[DLU_SIM_NPHASE])
{
    sim_layer *L = &s->layers[li];
    for (int p = 0; p < DLU_SIM_NPHASE; p++) {
        dlu_sim_counters c = run[p], st;
        memset(&st, 0, sizeof st);
        st.cycles = st.stall_stats = c.stall_stats;
        st.stats_reads = c.stats_reads;
        st.stats_elems = c.stats_elems;
        st.energy_pj[DLU_SIM_E_STATS] = c.energy_pj[DLU_SIM_E_STATS];
        c.cycles -= c.stall_stats;
        c.stall_stats = 0;
        c.stats_reads = c.stats_elems = 0;
        c.energy_pj[DLU_SIM_E_STATS] = 0;
        dlu_sim_counters_add(&L->ph[p], &c);
        dlu_sim_counters_add(&L->ph[DLU_SIM_STATS], &st);
    }
}

static dlu_status run(sim *s, int li, dlusim_exec *ex)
{
    dlu_sim_counters out[DLU_SIM_NPHASE];
    memset(out, 0, sizeof out);
    dlu_status rc = dluhw_run(s->hw, &s->st, ex ? dlusim_exec_cmd : NULL, ex ? dlusim_exec_stats : NULL, ex, out);
    if (rc == DLU_OK && !s->not_counting)
        charge(s, li, out);
    return rc;
}

static uint64_t addr(const void *p) { return (uint64_t)(uintptr_t)p; }

/* A tensor's storage for the HBM address of its traffic (the loss has no output tensor). */
static const void *data_of(const dlu_tensor *t) { return t ? t->data : NULL; }

/* Time element-wise work (values are the cpu kernels'). */
static dlu_status time_vec(sim *s, int li, uint64_t nelem, int in_bytes, int out_bytes, int ops, int stats,
                           const void *in, const void *out, dlu_sim_phase ph)
{
    if (nelem == 0)
        return DLU_OK;
    dlusim_stream_clear(&s->st);
    DLU__TRY(dlusim_lower_vec(&s->cfg, nelem, in_bytes, out_bytes, ops, stats, addr(in), addr(out), li, ph, &s->st));
    return run(s, li, NULL);
}

/* ---- the GEMM ops ---------------------------------------------------------------------- */

static int wide(const dlu_tensor *t) { return t->dtype == DLU_DTYPE_I16; }
static int esz(const dlu_tensor *t) { return (int)dlu_dtype_size(t->dtype); }

/* n bias accumulators (contents unspecified: the executor initialises them), kept from call
 * to call so that a training step allocates nothing; NULL when growing fails. */
static int64_t *bias_acc(sim *s, uint64_t n)
{
    if (n > s->bias_cap) {
        int64_t *p = realloc(s->bias, (size_t)n * sizeof *p);
        if (!p)
            return NULL;
        s->bias = p;
        s->bias_cap = (size_t)n;
    }
    return s->bias;
}

/* The exponent a site's production uses when it is known before the run (-1 flags "to
 * be calibrated by the run"), exactly as the cpu backend decides it. */
static int site_eo(dlu__qsite *q, int ea, int *deferred)
{
    *deferred = 0;
    if (!dlu_format_is_dfp(q->fmt))
        return ea;
    if (!q->scale)
        return ea;
    if (dlusim_site_needs_calib(q)) {
        *deferred = 1;
        return ea;
    }
    return dlu__site_exp(q, NULL);
}

/* One DFP GEMM op on the model, values included unless timing-only. */
static dlu_status dfp_gemm(dlu_backend *be, int li, dlusim_gemm_kind kind, const dlu__op_args *a, dlu_sim_phase ph)
{
    sim *s = SIM(be);
    const dlu__layer *l = a->l;
    const uint64_t n = (uint64_t)a->n;
    const uint64_t HoWo = (uint64_t)l->out_h * l->out_w, HW = (uint64_t)l->in_h * l->in_w;
    const uint64_t kk = (uint64_t)l->kernel * l->kernel, ckk = (uint64_t)l->in_c * kk;
    dlusim_exec e;
    memset(&e, 0, sizeof e);
    e.kind = kind;
    e.l = l;
    e.s = &s->st;
    e.ndpe = (int)s->cfg.dpe_per_dpu;
    e.seed = a->seed;
    e.step = a->step;
    e.scratch = s->scratch;
    e.scratch_nbytes = s->scratch_nbytes;
    const dlu_tensor *A = NULL, *B = NULL;
    dlu_tensor *Y = NULL;
    float *G = NULL;
    switch (kind) {
    case DLUSIM_LIN_FWD: e.M = n, e.N = (uint64_t)l->out, e.K = (uint64_t)l->in_size, A = a->x, B = a->wq, Y = a->y;
        e.q = a->qy;
        break;
    case DLUSIM_LIN_BWD_DATA: e.M = n, e.N = (uint64_t)l->in_size, e.K = (uint64_t)l->out, A = a->dy, B = a->wq;
        Y = a->dx, e.q = a->qdx;
        break;
    case DLUSIM_LIN_BWD_W: e.M = (uint64_t)l->out, e.N = (uint64_t)l->in_size, e.K = n, A = a->dy, B = a->x;
        G = a->dw ? (float *)a->dw->data : NULL, e.q = a->qdw;
        break;
    case DLUSIM_CONV_FWD: e.M = n * HoWo, e.N = (uint64_t)l->out_c, e.K = ckk, A = a->x, B = a->wq, Y = a->y;
        e.q = a->qy;
        break;
    case DLUSIM_CONV_BWD_DATA: e.M = n * HW, e.N = (uint64_t)l->in_c, e.K = (uint64_t)l->out_c * kk, A = a->dy;
        B = a->wq, Y = a->dx, e.q = a->qdx;
        break;
    case DLUSIM_CONV_BWD_W: e.M = (uint64_t)l->out_c, e.N = ckk, e.K = n * HoWo, A = a->dy, B = a->x;
        G = a->dw ? (float *)a->dw->data : NULL, e.q = a->qdw;
        break;
    }
    e.asrc = A->data, e.bsrc = B->data, e.awide = wide(A), e.bwide = wide(B);
    e.acc_bytes = !e.awide && !e.bwide && e.K <= 131071 ? 4 : 8;
    e.ea = A->exp + B->exp;
    e.yout = Y ? Y->data : NULL;
    e.gout = G;
    const int bwd_w = kind == DLUSIM_LIN_BWD_W || kind == DLUSIM_CONV_BWD_W;
    const int fwd = kind == DLUSIM_LIN_FWD || kind == DLUSIM_CONV_FWD;
    if ((fwd && a->b) || (bwd_w && a->db)) {
        int64_t *bias = bias_acc(s, bwd_w ? e.M : e.N);
        if (!bias)
            return dlu__error(DLU_ENOMEM, "dlusim: out of memory (bias accumulators of %s)", l->name);
        if (fwd)
            for (uint64_t j = 0; j < e.N; j++)
                bias[j] = dlu_bias_to_acc(((const float *)a->b->data)[j], e.ea);
        e.bias_acc = bias;
    }
    if (bwd_w && a->db) {
        e.qb = a->qdb;
        e.gbout = (float *)a->db->data;
        e.eb = a->dy->exp;
    }
    int defer = 0, deferb = 0;
    if (!s->timing_only) {
        e.eo = site_eo(e.q, e.ea, &defer);
        if (e.qb)
            e.ebo = site_eo(e.qb, e.eb, &deferb);
        dlu_stats_clear(&e.bias_pre);
        dlu_stats_clear(&e.bias_stats);
    }
    /* a g=fp32 gradient leaves as fp32; everything else in its site's format */
    const int out_bytes = dlu_format_is_dfp(e.q->fmt) ? (int)dlu_format_nbytes(e.q->fmt) : 4;
    dlusim_gemm g = {.M = e.M, .N = e.N, .K = e.K, .a_bytes = esz(A), .b_bytes = esz(B), .acc_bytes = e.acc_bytes,
                     .out_bytes = out_bytes, .fmt_bits = e.awide || e.bwide ? 16 : 8,
                     .bias_sum = bwd_w && a->db, .stats = 1, .calib = defer || deferb,
                     .a_hbm = addr(A->data), .b_hbm = addr(B->data), .c_hbm = addr(Y ? Y->data : (void *)G),
                     .bias_hbm = addr(e.gbout)};
    dlusim_stream_clear(&s->st);
    dlu_status rc = dlusim_lower_gemm(&s->cfg, &g, li, ph, &s->st);
    if (rc == DLU_OK)
        rc = run(s, li, s->timing_only ? NULL : &e);
    if (rc != DLU_OK)
        return dlu__error_prefix(rc, "dlusim: layer '%s' (%s): ", l->name, dlu_sim_phase_name(ph));
    if (Y && !s->timing_only)
        Y->exp = e.eo;
    return DLU_OK;
}

/* An fp32 GEMM op: timed on the model, values from the cpu kernel. */
static dlu_status fp32_gemm_time(sim *s, int li, uint64_t M, uint64_t N, uint64_t K, const void *pa, const void *pb,
                                 const void *pc, dlu_sim_phase ph)
{
    dlusim_gemm g = {.M = M, .N = N, .K = K, .a_bytes = 4, .b_bytes = 4, .acc_bytes = 4, .out_bytes = 4,
                     .fmt_bits = 32, .a_hbm = addr(pa), .b_hbm = addr(pb), .c_hbm = addr(pc)};
    dlusim_stream_clear(&s->st);
    DLU__TRY(dlusim_lower_gemm(&s->cfg, &g, li, ph, &s->st));
    return run(s, li, NULL);
}

/* ---- kernels --------------------------------------------------------------------------- */

/* An element-wise op's timing as up to two streaming passes over the local memory: nelem
 * elements, bytes read and written per element (HBM side), operations per element, and
 * whether the pass produces the op's output (statistics). Pooling reads each input once
 * (the windows overlap in the local memory) and writes each output once; its backward
 * reads dy (and maxpool's argmax) once and writes dx once. */
typedef struct vec_pass {
    uint64_t nelem;
    int in_b, out_b, ops, out;
} vec_pass;

static int elementwise_cost(const dlu__layer *l, int fwd, int e, uint64_t n, vec_pass p[2])
{
    const int arg = l->op == DLU_OP_MAXPOOL ? 4 : 0; /* int32 argmax per output */
    const int win = l->kernel * l->kernel, area = l->stride * l->stride;
    const int ops = win > area ? (win + area - 1) / area : 1; /* window operations per input */
    const uint64_t in = n * (uint64_t)l->in_size, out = n * (uint64_t)l->out_size;
    switch (l->op) {
    case DLU_OP_RELU:
        p[0] = (vec_pass){out, fwd ? e : 2 * e, e, 1, 1};
        return 1;
    case DLU_OP_MAXPOOL:
    case DLU_OP_AVGPOOL:
        if (fwd) {
            p[0] = (vec_pass){in, e, 0, ops, 0};
            p[1] = (vec_pass){out, 0, e + arg, 1, 1};
        } else {
            p[0] = (vec_pass){out, e + arg, 0, 1, 0};
            p[1] = (vec_pass){in, 0, e, ops, 1};
        }
        return 2;
    case DLU_OP_SOFTMAX_XENT:
        p[0] = (vec_pass){in, fwd ? e : 4, fwd ? 4 : e, fwd ? 24 : 4, !fwd};
        return 1;
    default: return 0; /* flatten: a view, no work */
    }
}

static const dlu__backend_vtbl *cpu(void) { return &dlu__cpu_vtbl; }

static dlu_status sim_kernel(dlu_backend *be, const dlu__op_args *a, int fwd, int dfp)
{
    sim *s = SIM(be);
    const dlu__layer *l = a->l;
    int li = layer_index(s, l, l->name);
    if (li < 0)
        return dlu__error(DLU_ENOMEM, "dlusim: out of memory (layer table)");
    if (fwd && a->w)
        s->layers[li].param[0] = a->w->data, s->layers[li].param[1] = a->b ? a->b->data : NULL;
    const int gemm = l->op == DLU_OP_LINEAR || l->op == DLU_OP_CONV2D;
    const int conv = l->op == DLU_OP_CONV2D;
    const uint64_t n = (uint64_t)a->n;
    if (gemm && dfp) {
        if (fwd) {
            const uint64_t nw = (uint64_t)(conv ? l->out_c * l->in_c * l->kernel * l->kernel : l->out * l->in_size);
            if (!s->timing_only)
                DLU__TRY(dlu__cpu_quantize(be, a->w, nw, a->wq, a->qw, a->seed, a->step));
            DLU__TRY(time_vec(s, li, nw, 4, esz(a->wq), 1, 1, a->w->data, a->wq->data, DLU_SIM_FWD));
            return dfp_gemm(be, li, conv ? DLUSIM_CONV_FWD : DLUSIM_LIN_FWD, a, DLU_SIM_FWD);
        }
        /* Fujitsu's order: the weight gradient first, then the input gradient */
        DLU__TRY(dfp_gemm(be, li, conv ? DLUSIM_CONV_BWD_W : DLUSIM_LIN_BWD_W, a, DLU_SIM_BWD_WEIGHT));
        if (a->dx)
            DLU__TRY(dfp_gemm(be, li, conv ? DLUSIM_CONV_BWD_DATA : DLUSIM_LIN_BWD_DATA, a, DLU_SIM_BWD_DATA));
        return DLU_OK;
    }
    if (gemm) {
        const uint64_t hw = conv ? (uint64_t)l->out_h * l->out_w : 1;
        const uint64_t M = n * hw, N = (uint64_t)(conv ? l->out_c : l->out);
        const uint64_t K = (uint64_t)(conv ? l->in_c * l->kernel * l->kernel : l->in_size);
        if (!s->timing_only)
            DLU__TRY((fwd ? cpu()->forward : cpu()->backward)[l->op](be, a));
        if (fwd)
            return fp32_gemm_time(s, li, M, N, K, a->x->data, a->w->data, a->y->data, DLU_SIM_FWD);
        DLU__TRY(fp32_gemm_time(s, li, N, K, M, a->dy->data, a->x->data, a->dw->data, DLU_SIM_BWD_WEIGHT));
        if (a->dx) {
            const uint64_t Md = conv ? n * (uint64_t)l->in_h * l->in_w : n;
            const uint64_t Kd = conv ? (uint64_t)l->out_c * l->kernel * l->kernel : (uint64_t)l->out;
            DLU__TRY(fp32_gemm_time(s, li, Md, (uint64_t)(conv ? l->in_c : l->in_size), Kd, a->dy->data,
                                    a->w->data, a->dx->data, DLU_SIM_BWD_DATA));
        }
        return DLU_OK;
    }
    if (!fwd && !a->dx)
        return DLU_OK;
    if (s->timing_only) {
        if (a->loss)
            *a->loss = 0;
        if (a->correct)
            *a->correct = 0;
    } else {
        const dlu__backend_vtbl *c = cpu();
        DLU__TRY((dfp ? (fwd ? c->forward_dfp : c->backward_dfp) : (fwd ? c->forward : c->backward))[l->op](be, a));
    }
    /* the loss's backward reads its saved probabilities, not a gradient */
    const dlu_tensor *in = fwd ? a->x : a->dy ? a->dy : a->aux;
    vec_pass p[2];
    const int np = elementwise_cost(l, fwd, dfp ? esz(fwd ? a->x : a->dx) : 4, n, p);
    for (int i = 0; i < np; i++)
        DLU__TRY(time_vec(s, li, p[i].nelem, p[i].in_b, p[i].out_b, p[i].ops, dfp && p[i].out, data_of(in),
                          data_of(fwd ? a->y : a->dx), fwd ? DLU_SIM_FWD : DLU_SIM_BWD_DATA));
    return DLU_OK;
}

static dlu_status sim_fwd(dlu_backend *be, const dlu__op_args *a) { return sim_kernel(be, a, 1, 0); }
static dlu_status sim_bwd(dlu_backend *be, const dlu__op_args *a) { return sim_kernel(be, a, 0, 0); }
static dlu_status sim_fwd_dfp(dlu_backend *be, const dlu__op_args *a) { return sim_kernel(be, a, 1, 1); }
static dlu_status sim_bwd_dfp(dlu_backend *be, const dlu__op_args *a) { return sim_kernel(be, a, 0, 1); }

static dlu_status sim_quantize(dlu_backend *be, const dlu_tensor *src, size_t n, dlu_tensor *dst, dlu__qsite *site,
                               uint64_t seed, uint32_t step)
{
    sim *s = SIM(be);
    int li = layer_index(s, NULL, "(input)");
    if (li < 0)
        return dlu__error(DLU_ENOMEM, "dlusim: out of memory (layer table)");
    if (!s->timing_only)
        DLU__TRY(dlu__cpu_quantize(be, src, n, dst, site, seed, step));
    return time_vec(s, li, n, 4, esz(dst), 1, 1, src->data, dst->data, DLU_SIM_FWD);
}

/* The layer whose parameter w is (the optimizer's update is charged to it). */
static int param_layer(sim *s, const void *w)
{
    for (int i = 0; i < s->nlayers; i++)
        if (s->layers[i].param[0] == w || (w && s->layers[i].param[1] == w))
            return i;
    return layer_index(s, NULL, "(update)");
}

/* Time an optimizer update of parameter w (its layer's update phase): in_b bytes read and
 * out_b written per element (parameter, gradient, optimizer state), ops operations each. */
static dlu_status time_update(sim *s, const dlu_tensor *w, const dlu_tensor *g, int in_b, int out_b, int ops)
{
    int li = param_layer(s, w->data);
    if (li < 0)
        return dlu__error(DLU_ENOMEM, "dlusim: out of memory (layer table)");
    return time_vec(s, li, (uint64_t)dlu_tensor_nelem(w), in_b, out_b, ops, 0, g->data, w->data, DLU_SIM_UPDATE);
}

static dlu_status sim_sgd(dlu_backend *be, const dlu__sgd_args *a)
{
    if (!SIM(be)->timing_only)
        DLU__TRY(cpu()->sgd_step(be, a));
    return time_update(SIM(be), a->w, a->g, 12, 8, 4); /* w, v, g in; w, v out */
}

static dlu_status sim_adam(dlu_backend *be, const dlu__adam_args *a)
{
    if (!SIM(be)->timing_only)
        DLU__TRY(cpu()->adam_step(be, a));
    return time_update(SIM(be), a->w, a->g, 16, 12, 12); /* w, m, v, g in; w, m, v out */
}

/* ---- memory, open, close --------------------------------------------------------------- */

static dlu_status sim_alloc(dlu_backend *be, size_t nbytes, void **ptr)
{
    sim *s = SIM(be);
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    if (s->hbm_used + rounded > s->hbm_cap)
        return dlu__error(DLU_ENOMEM, "dlusim: out of simulated HBM: %zu bytes wanted, %zu of %zu in use "
                                      "(hbm_capacity_mib in the config)", nbytes, s->hbm_used, s->hbm_cap);
    uint8_t *p = aligned_alloc(64, rounded + HDR);
    if (!p)
        return dlu__error(DLU_ENOMEM, "dlusim: cannot allocate %zu bytes of host memory", nbytes);
    memset(p, 0, rounded + HDR);
    memcpy(p, &rounded, sizeof rounded);
    s->hbm_used += rounded;
    *ptr = p + HDR;
    return DLU_OK;
}

static void sim_free(dlu_backend *be, void *ptr)
{
    if (!ptr)
        return;
    uint8_t *p = (uint8_t *)ptr - HDR;
    size_t rounded;
    memcpy(&rounded, p, sizeof rounded);
    SIM(be)->hbm_used -= rounded;
    free(p);
}

static dlu_status sim_copy(dlu_backend *be, void *dst, const void *src, size_t nbytes)
{
    memmove(dst, src, nbytes);
    return DLU_OK;
}

static dlu_status sim_sync(dlu_backend *be) { return DLU_OK; }

static size_t sim_ws_nbytes(const dlu__layer *l, int n, int dfp) { return cpu()->ws_nbytes(l, n, dfp); }

static void sim_close(dlu_backend *be)
{
    sim *s = SIM(be);
    if (!s)
        return;
    dluhw_free(s->hw);
    if (s->trace)
        fclose(s->trace);
    dlusim_stream_free(&s->st);
    free(s->layers);
    free(s->scratch);
    free(s->bias);
    free(s);
    be->impl = NULL;
}

static dlu_status sim_open(dlu_backend *be, const char *arg)
{
    if (!*arg)
        return dlu__error(DLU_EINVAL, "dlusim needs a hardware config: dlusim:CONFIG.ini (e.g. examples/hw/dlu-base.ini)");
    sim *s = calloc(1, sizeof *s);
    if (!s)
        return dlu__error(DLU_ENOMEM, "dlusim: out of memory");
    be->impl = s;
    dlusim_stream_init(&s->st);
    dlu_status rc = dlusim_hwcfg_load(arg, &s->cfg);
    if (rc == DLU_OK)
        rc = dluhw_new(&s->cfg, &s->hw);
    if (rc == DLU_OK) {
        s->hbm_cap = (size_t)s->cfg.hbm_capacity_mib << 20;
        const size_t rf = (size_t)s->cfg.dpe_per_dpu * (size_t)s->cfg.regfile_kib * 1024;
        const size_t lm = (size_t)s->cfg.local_mem_kib * 1024;
        s->scratch_nbytes = 4 * rf + 2 * lm;
        s->scratch = malloc(s->scratch_nbytes);
        if (!s->scratch)
            rc = dlu__error(DLU_ENOMEM, "dlusim: out of memory (%zu bytes of executor scratch)", s->scratch_nbytes);
    }
    if (rc != DLU_OK)
        sim_close(be);
    return rc;
}

const dlu__backend_vtbl dlu__dlusim_vtbl = {
    .kind = "dlusim",
    .note = "simulated DLU core (SystemC): cycles, traffic, energy; DFP values bit-exact with cpu",
    .host_visible = 1,
    .open = sim_open,
    .close = sim_close,
    .alloc = sim_alloc,
    .free = sim_free,
    .upload = sim_copy,
    .download = sim_copy,
    .sync = sim_sync,
    .ws_nbytes = sim_ws_nbytes,
#define ALL(fn)                                                                                          \
    {[DLU_OP_LINEAR] = fn, [DLU_OP_CONV2D] = fn, [DLU_OP_RELU] = fn, [DLU_OP_MAXPOOL] = fn,              \
     [DLU_OP_AVGPOOL] = fn, [DLU_OP_FLATTEN] = fn, [DLU_OP_SOFTMAX_XENT] = fn}
    .forward = ALL(sim_fwd),
    .backward = ALL(sim_bwd),
    .forward_dfp = ALL(sim_fwd_dfp),
    .backward_dfp = ALL(sim_bwd_dfp),
#undef ALL
    .quantize = sim_quantize,
    .sgd_step = sim_sgd,
    .adam_step = sim_adam,
};

/* ---- the public report API (include/dlu/sim.h) ------------------------------------------- */

int dlu_sim_is(const dlu_backend *be) { return be && be->vt == &dlu__dlusim_vtbl; }

static dlu_status need_sim(const dlu_backend *be)
{
    if (!dlu_sim_is(be))
        return dlu__error(DLU_EINVAL, "device '%s' is not a simulated DLU (expected dlusim:CONFIG.ini)",
                          be ? be->device : "(none)");
    return DLU_OK;
}

dlu_status dlu_sim_set_timing_only(dlu_backend *be, int on)
{
    DLU__TRY(need_sim(be));
    SIM(be)->timing_only = on != 0;
    return DLU_OK;
}

void dlu_sim_set_counting(dlu_backend *be, int on)
{
    if (dlu_sim_is(be))
        SIM(be)->not_counting = !on;
}

void dlu_sim_unit_counts(const dlu_backend *be, int *dpus, int *hbm_channels)
{
    *dpus = dlu_sim_is(be) ? (int)SIM(be)->cfg.n_dpu : 0;
    *hbm_channels = dlu_sim_is(be) ? (int)SIM(be)->cfg.hbm_channels : 0;
}

double dlu_sim_clock_hz(const dlu_backend *be) { return dlu_sim_is(be) ? SIM(be)->cfg.clock_mhz * 1e6 : 0; }

int dlu_sim_nlayers(const dlu_backend *be) { return dlu_sim_is(be) ? SIM(be)->nlayers : 0; }

dlu_status dlu_sim_layer(const dlu_backend *be, int i, const char **name, dlu_sim_counters per_phase[DLU_SIM_NPHASE])
{
    DLU__TRY(need_sim(be));
    const sim *s = SIM(be);
    if (i < 0 || i >= s->nlayers)
        return dlu__error(DLU_EINVAL, "dlusim: layer %d out of range (0..%d)", i, s->nlayers - 1);
    *name = s->layers[i].name;
    memcpy(per_phase, s->layers[i].ph, sizeof s->layers[i].ph);
    return DLU_OK;
}

dlu_status dlu_sim_totals(const dlu_backend *be, dlu_sim_counters *tot)
{
    memset(tot, 0, sizeof *tot);
    DLU__TRY(need_sim(be));
    const sim *s = SIM(be);
    for (int i = 0; i < s->nlayers; i++)
        for (int p = 0; p < DLU_SIM_NPHASE; p++)
            dlu_sim_counters_add(tot, &s->layers[i].ph[p]);
    return DLU_OK;
}

void dlu_sim_reset(dlu_backend *be)
{
    if (!dlu_sim_is(be))
        return;
    sim *s = SIM(be);
    for (int i = 0; i < s->nlayers; i++)
        memset(s->layers[i].ph, 0, sizeof s->layers[i].ph);
}

dlu_status dlu_sim_trace(dlu_backend *be, const char *path)
{
    DLU__TRY(need_sim(be));
    sim *s = SIM(be);
    FILE *f = fopen(path, "w");
    if (!f)
        return dlu__error(DLU_EIO, "%s: cannot open the trace file for writing", path);
    dluhw_trace(s->hw, NULL);
    if (s->trace)
        fclose(s->trace);
    s->trace = f;
    dluhw_trace(s->hw, f);
    return DLU_OK;
}
