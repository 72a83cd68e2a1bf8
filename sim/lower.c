/* lower.c -- cutting a GEMM or an element-wise kernel into the tile commands of sim/cmd.h.
 *
 * A GEMM C (M, N) = A (M, K) * B (N, K)^T becomes output tiles of mt x nt elements, each
 * computed over k chunks of kt, dealt over the DPUs in contiguous blocks. The tile sizes
 * come from a small search (dlusim_gemm_tiles, rule below and in docs/sim-commands.md);
 * the schedule per DPU is software-pipelined so that, under the scoreboard of cmd.h, the
 * LOADs of the next chunk run on the DMA engine while the DPEs do the MACs of this one.
 *
 * Tiling rule. Local memory holds the operand chunks and the output tiles, both double
 * buffered, and (backward-weight with a bias) one bias tile:
 *     2*(mt*kt*a_bytes + nt*kt*b_bytes) + 2*mt*nt*out_bytes [+ mt*out_bytes] <= local_mem_kib KiB
 * (each buffer rounded up to 64 bytes); the register files hold the accumulators, double
 * buffered: 2*mt*nt*acc_bytes <= dpe_per_dpu * regfile_kib KiB. mt is a multiple of
 * dpe_per_dpu, nt of lanes_per_dpe and kt of the MACs per lane whenever the GEMM is that
 * big; none exceeds M, N, K. Among the sizes that fit, the search takes the one with the
 * lowest estimated time: per DPU, its tiles times the larger of the DMA time of a chunk
 * (setup + network latency + bytes over the link) and its MAC time (fill + the tile's
 * cycles at the configured rate), against the HBM time of all the traffic, plus a charge
 * per command so that tiny tiles (and slow simulations) lose; splitting K costs 2 %
 * extra, so kt = K wins ties. When all of B (N x K) fits in a quarter of the local
 * memory together with tiles of nt = N, kt = K, B stays resident: each DPU loads it once
 * and every one of its tiles (full rows of C) reuses it. Otherwise a chunk already held
 * in one of the two buffers (the same B chunk for consecutive tiles of the same column)
 * is reused instead of loaded again.
 *
 * Not here: what the commands cost (hw_model/) or the values they compute (exec.c). */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sim/lower.h"

#define ALIGN 64u
/* Estimated cycles charged per command in the tile search: keeps streams in the hundreds
 * to thousands of commands per GEMM, which the model simulates quickly. */
#define CMD_CHARGE 32.0
/* Extra cost of splitting K: prefer kt = K when it is about as good. */
#define KSPLIT_CHARGE 1.02

static uint64_t al(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }
static uint64_t cdiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
static uint64_t umin(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t umax(uint64_t a, uint64_t b) { return a > b ? a : b; }
static uint64_t roundup(uint64_t a, uint64_t q) { return cdiv(a, q) * q; }

/* Buffer offsets are uint32: larger memories are used up to just under 4 GiB. */
#define SPACE_MAX (UINT32_MAX / ALIGN * ALIGN)

static uint64_t lmem_bytes(const dlusim_hwcfg *cfg)
{
    return cfg->local_mem_kib <= 0 ? 0 : umin((uint64_t)cfg->local_mem_kib * 1024u, SPACE_MAX);
}

static uint64_t rf_bytes(const dlusim_hwcfg *cfg)
{
    if (cfg->regfile_kib <= 0 || cfg->dpe_per_dpu <= 0)
        return 0;
    return umin((uint64_t)cfg->dpe_per_dpu * (uint64_t)cfg->regfile_kib * 1024u, SPACE_MAX);
}

/* ------------------------------------------------------------------------------------ */
/* tile sizes                                                                           */
/* ------------------------------------------------------------------------------------ */

typedef struct tiling {
    uint64_t mt, nt, kt;
    int resident; /* all of B loaded once per DPU into one buffer */
} tiling;

static uint64_t lmem_need(const dlusim_gemm *g, uint64_t mt, uint64_t nt, uint64_t kt, int resident)
{
    uint64_t b = resident ? al(g->N * g->K * (uint64_t)g->b_bytes) : 2 * al(nt * kt * (uint64_t)g->b_bytes);
    return 2 * al(mt * kt * (uint64_t)g->a_bytes) + b + 2 * al(mt * nt * (uint64_t)g->out_bytes) +
           (g->bias_sum ? al(mt * (uint64_t)g->out_bytes) : 0);
}

static uint64_t rf_need(const dlusim_gemm *g, uint64_t mt, uint64_t nt)
{
    return 2 * al(mt * nt * (uint64_t)g->acc_bytes);
}

static int fits(const dlusim_hwcfg *cfg, const dlusim_gemm *g, uint64_t mt, uint64_t nt, uint64_t kt, int resident)
{
    return lmem_need(g, mt, nt, kt, resident) <= lmem_bytes(cfg) && rf_need(g, mt, nt) <= rf_bytes(cfg);
}

/* The largest mt <= M that fits with nt, kt; 0 if not even one row does. */
static uint64_t max_mt(const dlusim_hwcfg *cfg, const dlusim_gemm *g, uint64_t nt, uint64_t kt, int resident)
{
    if (!fits(cfg, g, 1, nt, kt, resident))
        return 0;
    uint64_t lo = 1, hi = g->M; /* fits(lo); find the last that fits */
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo + 1) / 2;
        if (fits(cfg, g, mid, nt, kt, resident))
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

typedef struct model {
    double P, L, ML, link, setup, hbm, mac_fill, vec_fill, vec_rate, n_dpu;
} model;

static double est_cost(const model *md, const dlusim_gemm *g, uint64_t mt, uint64_t nt, uint64_t kt, int resident)
{
    const double tm = (double)cdiv(g->M, mt), tn = (double)cdiv(g->N, nt), kc = (double)cdiv(g->K, kt);
    const double tiles = tm * tn, tpd = ceil(tiles / md->n_dpu), used = fmin(tiles, md->n_dpu);
    const double a_chunk = (double)(mt * kt * (uint64_t)g->a_bytes);
    const double b_chunk = resident ? 0 : (double)(nt * kt * (uint64_t)g->b_bytes);
    const double b_all = (double)(g->N * g->K * (uint64_t)g->b_bytes);
    const double c_tile = (double)(mt * nt * (uint64_t)g->out_bytes);
    const double link = md->link > 0 ? md->link : INFINITY;
    const double dma = (resident ? 1 : 2) * md->setup + (a_chunk + b_chunk) / link;
    const double mac = md->mac_fill + ceil((double)mt / md->P) * ceil((double)nt / md->L) * ceil((double)kt / md->ML);
    const double out = fmax(md->setup + c_tile / link, md->vec_fill + ceil((double)(mt * nt) / md->vec_rate));
    double t_dpu = tpd * (kc * fmax(dma, mac) + out);
    double traffic = tiles * kc * (a_chunk + b_chunk) + tiles * c_tile;
    if (resident) {
        t_dpu += md->setup + b_all / link;
        traffic += used * b_all;
    }
    const double t_hbm = md->hbm > 0 ? traffic / md->hbm : 0;
    const double cmds = tiles * (kc * (resident ? 2 : 3) + 2);
    double cost = fmax(t_dpu, t_hbm) + CMD_CHARGE * cmds / md->n_dpu;
    return kt < g->K ? cost * KSPLIT_CHARGE : cost;
}

/* Consider mt values for one (nt, kt): the largest, and those that make the tile count
 * about 1..4 times the DPU count (for balance), each evened out over the row tiles and
 * rounded up to whole DPE rows. */
static void try_mts(const dlusim_hwcfg *cfg, const model *md, const dlusim_gemm *g, uint64_t nt, uint64_t kt,
                    int resident, tiling *best, double *best_cost)
{
    const uint64_t P = (uint64_t)md->P;
    uint64_t mmax = max_mt(cfg, g, nt, kt, resident);
    if (!mmax)
        return;
    if (mmax >= P)
        mmax = mmax / P * P;
    const uint64_t tn = cdiv(g->N, nt);
    for (int j = 0; j <= 4; j++) {
        uint64_t tm = j == 0 ? cdiv(g->M, mmax) : umax(cdiv((uint64_t)j * (uint64_t)md->n_dpu, tn), 1);
        if (tm > g->M)
            continue;
        uint64_t mt = cdiv(g->M, tm);
        if (mt > P && roundup(mt, P) <= mmax)
            mt = roundup(mt, P);
        mt = umin(mt, g->M);
        if (mt > mmax)
            continue;
        double c = est_cost(md, g, mt, nt, kt, resident);
        if (c < *best_cost) {
            *best_cost = c;
            *best = (tiling){mt, nt, kt, resident};
        }
    }
}

/* Sizes for a dimension of D elements in chunks rounded up to q: every distinct
 * roundup(ceil(D/c), q) for small c, then geometrically thinner (the cost changes
 * little there). Writes at most max values to out, returns how many. */
static int size_candidates(uint64_t D, uint64_t q, uint64_t *out, int max)
{
    int n = 0;
    uint64_t prev = 0;
    for (uint64_t c = 1; c <= D && n < max; c = c < 64 ? c + 1 : c + c / 8) {
        uint64_t v = umin(D, roundup(cdiv(D, c), q));
        if (v != prev)
            out[n++] = prev = v;
        if (v <= q)
            break;
    }
    if (n < max && prev != 1)
        out[n++] = 1; /* the smallest: lets a tiny memory still take one element */
    return n;
}

static dlu_status check_gemm(const dlusim_hwcfg *cfg, const dlusim_gemm *g)
{
    static const char *const name[] = {"M", "N", "K"};
    const uint64_t dim[] = {g->M, g->N, g->K};
    for (int i = 0; i < 3; i++)
        if (dim[i] < 1 || dim[i] > UINT32_MAX)
            return dlu__error(DLU_EINVAL, "dlusim_lower_gemm: %s = %" PRIu64 " (expected 1 .. %" PRIu32 ")",
                              name[i], dim[i], UINT32_MAX);
    const int sz[] = {g->a_bytes, g->b_bytes, g->out_bytes};
    static const char *const szname[] = {"a_bytes", "b_bytes", "out_bytes"};
    for (int i = 0; i < 3; i++)
        if (sz[i] != 1 && sz[i] != 2 && sz[i] != 4)
            return dlu__error(DLU_EINVAL, "dlusim_lower_gemm: %s = %d (expected 1, 2 or 4)", szname[i], sz[i]);
    if (g->acc_bytes != 4 && g->acc_bytes != 8)
        return dlu__error(DLU_EINVAL, "dlusim_lower_gemm: acc_bytes = %d (expected 4 or 8)", g->acc_bytes);
    if (g->fmt_bits != 8 && g->fmt_bits != 16 && g->fmt_bits != 32)
        return dlu__error(DLU_EINVAL, "dlusim_lower_gemm: fmt_bits = %d (expected 8, 16 or 32)", g->fmt_bits);
    if (cfg->n_dpu < 1 || cfg->n_dpu > 65535 || cfg->dpe_per_dpu < 1 || cfg->lanes_per_dpe < 1)
        return dlu__error(DLU_EINVAL, "dlusim_lower_gemm: n_dpu = %" PRId64 ", dpe_per_dpu = %" PRId64
                                      ", lanes_per_dpe = %" PRId64 " (expected at least 1 each, n_dpu <= 65535)",
                          cfg->n_dpu, cfg->dpe_per_dpu, cfg->lanes_per_dpe);
    /* the smallest tile: one row of A and of B over one k chunk of a lane's MACs */
    const uint64_t kmin = umin(g->K, (uint64_t)umax(1, (uint64_t)dlusim_hwcfg_macs_per_lane(cfg, g->fmt_bits)));
    if (lmem_need(g, 1, 1, kmin, 0) > lmem_bytes(cfg))
        return dlu__error(DLU_EINVAL,
                          "local_mem_kib = %" PRId64 " is too small for one 1 x 1 tile with a k chunk of %" PRIu64
                          " (double-buffered operand and output tiles need %" PRIu64 " bytes)",
                          cfg->local_mem_kib, kmin, lmem_need(g, 1, 1, kmin, 0));
    if (rf_need(g, 1, 1) > rf_bytes(cfg))
        return dlu__error(DLU_EINVAL,
                          "regfile_kib = %" PRId64 " (times dpe_per_dpu = %" PRId64 ") is too small for the "
                          "double-buffered accumulators of one 1 x 1 tile (%" PRIu64 " bytes)",
                          cfg->regfile_kib, cfg->dpe_per_dpu, rf_need(g, 1, 1));
    return DLU_OK;
}

static dlu_status choose_tiles(const dlusim_hwcfg *cfg, const dlusim_gemm *g, tiling *t)
{
    memset(t, 0, sizeof *t);
    DLU__TRY(check_gemm(cfg, g));
    const model md = {
        .P = (double)cfg->dpe_per_dpu,
        .L = (double)cfg->lanes_per_dpe,
        .ML = (double)dlusim_hwcfg_macs_per_lane(cfg, g->fmt_bits),
        .link = (double)cfg->noc_link_bytes_per_cycle,
        .setup = (double)(cfg->dma_setup_cycles + cfg->noc_latency_cycles),
        .hbm = dlusim_hwcfg_hbm_bytes_per_cycle(cfg),
        .mac_fill = (double)cfg->mac_fill_cycles,
        .vec_fill = (double)cfg->vec_fill_cycles,
        .vec_rate = (double)(cfg->dpe_per_dpu * cfg->lanes_per_dpe * cfg->vec_ops_per_lane),
        .n_dpu = (double)cfg->n_dpu,
    };
    double best = INFINITY;
    /* Resident B is a rule, not a cost choice: when it fits, B is read from HBM once per DPU. */
    if (g->N * g->K * (uint64_t)g->b_bytes <= lmem_bytes(cfg) / 4)
        try_mts(cfg, &md, g, g->N, g->K, 1, t, &best);
    if (best < INFINITY)
        return DLU_OK;
    uint64_t nts[256], kts[256];
    const int nn = size_candidates(g->N, (uint64_t)cfg->lanes_per_dpe, nts, 256);
    const int nk = size_candidates(g->K, (uint64_t)md.ML, kts, 256);
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < nk; j++)
            try_mts(cfg, &md, g, nts[i], kts[j], 0, t, &best);
    if (best == INFINITY) /* check_gemm let the smallest tile through, and it is a candidate */
        return dlu__error(DLU_EINTERNAL, "dlusim_lower_gemm: no tile fits (M %" PRIu64 ", N %" PRIu64 ", K %" PRIu64 ")",
                          g->M, g->N, g->K);
    return DLU_OK;
}

void dlusim_gemm_tiles(const dlusim_hwcfg *cfg, const dlusim_gemm *g, uint32_t *mt, uint32_t *nt, uint32_t *kt)
{
    tiling t;
    if (choose_tiles(cfg, g, &t) != DLU_OK)
        memset(&t, 0, sizeof t);
    *mt = (uint32_t)t.mt;
    *nt = (uint32_t)t.nt;
    *kt = (uint32_t)t.kt;
}

/* ------------------------------------------------------------------------------------ */
/* GEMM schedule                                                                        */
/* ------------------------------------------------------------------------------------ */

typedef struct region {
    uint64_t r0, c0, r, c; /* rows [r0, r0+r) x cols [c0, c0+c); r == 0: empty */
} region;

typedef struct dpu_sched {
    uint64_t t_begin, ntiles, nsteps;
    int cur_a, cur_b;   /* buffers the current step's MAC reads */
    int next_a, next_b; /* buffers the next step's MAC will read (loaded ahead) */
    region tag[DLUSIM_MAX_BUFS]; /* what each operand buffer holds */
} dpu_sched;

typedef struct gemm_ctx {
    const dlusim_gemm *g;
    tiling t;
    uint64_t tm, tn, kc;
    int bufA[2], bufB[2], bufO[2], bufC[2], bufBias;
    int calib;
    dlusim_cmd proto; /* layer, phase, and NOBUF everywhere */
    dlusim_stream *s;
} gemm_ctx;

static int region_eq(region a, region b) { return a.r0 == b.r0 && a.c0 == b.c0 && a.r == b.r && a.c == b.c; }

/* The tile and k chunk of DPU step j. */
static void step_of(const gemm_ctx *x, const dpu_sched *d, uint64_t j, uint64_t *t, uint64_t *lt, uint64_t *c)
{
    *lt = j / x->kc;
    *t = d->t_begin + *lt;
    *c = j % x->kc;
}

static void tile_of(const gemm_ctx *x, uint64_t t, uint64_t *m0, uint64_t *m, uint64_t *n0, uint64_t *n)
{
    /* column tiles outermost, so a DPU's contiguous block of tiles mostly shares n0 and
     * with it the B chunks */
    uint64_t tn = t / x->tm, tmi = t % x->tm;
    *m0 = tmi * x->t.mt;
    *m = umin(x->t.mt, x->g->M - *m0);
    *n0 = tn * x->t.nt;
    *n = umin(x->t.nt, x->g->N - *n0);
}

/* Pick the buffer for an operand region of the next step: one of the pair that already
 * holds it, else the one the current step's MAC does not read (loaded with a LOAD). */
static dlu_status load_operand(gemm_ctx *x, dpu_sched *d, uint16_t dpu, const int pair[2], int cur, region r,
                               dlusim_operand opnd, int *chosen)
{
    for (int i = 0; i < 2; i++)
        if (pair[i] >= 0 && d->tag[pair[i]].r && region_eq(d->tag[pair[i]], r)) {
            *chosen = pair[i];
            return DLU_OK;
        }
    int b = pair[0] == cur ? pair[1] : pair[0];
    d->tag[b] = r;
    *chosen = b;
    const dlusim_gemm *g = x->g;
    dlusim_cmd c = x->proto;
    c.kind = DLUSIM_CMD_LOAD;
    c.operand = (uint8_t)opnd;
    c.wr = (uint8_t)b;
    c.dpu = dpu;
    c.k0 = (uint32_t)r.c0;
    c.k = (uint32_t)r.c;
    if (opnd == DLUSIM_OPND_A) {
        c.m0 = (uint32_t)r.r0;
        c.m = (uint32_t)r.r;
        c.nbytes = r.r * r.c * (uint64_t)g->a_bytes;
        c.hbm_addr = g->a_hbm + (r.r0 * g->K + r.c0) * (uint64_t)g->a_bytes;
    } else {
        c.n0 = (uint32_t)r.r0;
        c.n = (uint32_t)r.r;
        c.nbytes = r.r * r.c * (uint64_t)g->b_bytes;
        c.hbm_addr = g->b_hbm + (r.r0 * g->K + r.c0) * (uint64_t)g->b_bytes;
    }
    return dlusim_stream_push(x->s, &c);
}

/* LOADs for step j of DPU d (ahead of the MAC of step j-1). */
static dlu_status prepare_step(gemm_ctx *x, dpu_sched *d, uint16_t dpu, uint64_t j)
{
    uint64_t t, lt, c, m0, m, n0, n;
    step_of(x, d, j, &t, &lt, &c);
    tile_of(x, t, &m0, &m, &n0, &n);
    const uint64_t k0 = c * x->t.kt, k = umin(x->t.kt, x->g->K - k0);
    DLU__TRY(load_operand(x, d, dpu, x->bufA, d->cur_a, (region){m0, k0, m, k}, DLUSIM_OPND_A, &d->next_a));
    if (x->t.resident)
        d->next_b = x->bufB[0];
    else
        DLU__TRY(load_operand(x, d, dpu, x->bufB, d->cur_b, (region){n0, k0, n, k}, DLUSIM_OPND_B, &d->next_b));
    return DLU_OK;
}

/* The MAC of step j, and after the tile's last chunk its REQUANT and STORE (and those
 * of the bias gradient). */
static dlu_status compute_step(gemm_ctx *x, dpu_sched *d, uint16_t dpu, uint64_t j)
{
    const dlusim_gemm *g = x->g;
    uint64_t t, lt, c, m0, m, n0, n;
    step_of(x, d, j, &t, &lt, &c);
    tile_of(x, t, &m0, &m, &n0, &n);
    const uint64_t k0 = c * x->t.kt, k = umin(x->t.kt, g->K - k0);
    const int bias = g->bias_sum && n0 == 0;
    const int cbuf = x->bufC[lt % 2], obuf = x->bufO[lt % 2];
    dlusim_cmd cm = x->proto;
    cm.kind = DLUSIM_CMD_MAC;
    cm.dpu = dpu;
    cm.fmt_bits = (uint8_t)g->fmt_bits;
    cm.flags = (uint8_t)((c == 0 ? DLUSIM_F_ACC_INIT : 0) | (bias ? DLUSIM_F_BIAS_SUM : 0));
    cm.rd[0] = (uint8_t)d->cur_a;
    cm.rd[1] = (uint8_t)d->cur_b;
    cm.wr = (uint8_t)cbuf;
    cm.m = (uint32_t)m, cm.n = (uint32_t)n, cm.k = (uint32_t)k;
    cm.m0 = (uint32_t)m0, cm.n0 = (uint32_t)n0, cm.k0 = (uint32_t)k0;
    DLU__TRY(dlusim_stream_push(x->s, &cm));
    if (c + 1 < x->kc)
        return DLU_OK;
    const uint8_t stats = g->stats ? DLUSIM_F_STATS : 0, calib = x->calib ? DLUSIM_F_CALIB : 0;
    dlusim_cmd rq = x->proto;
    rq.kind = DLUSIM_CMD_REQUANT;
    rq.dpu = dpu;
    rq.operand = DLUSIM_OPND_C;
    rq.flags = stats | calib;
    rq.rd[0] = (uint8_t)cbuf;
    rq.wr = (uint8_t)obuf; /* also in calibration: the executor may stage values there */
    rq.m = (uint32_t)m, rq.n = (uint32_t)n, rq.m0 = (uint32_t)m0, rq.n0 = (uint32_t)n0;
    rq.nelem = m * n;
    DLU__TRY(dlusim_stream_push(x->s, &rq));
    if (!x->calib) {
        dlusim_cmd st = x->proto;
        st.kind = DLUSIM_CMD_STORE;
        st.dpu = dpu;
        st.operand = DLUSIM_OPND_C;
        st.rd[0] = (uint8_t)obuf;
        st.m = (uint32_t)m, st.n = (uint32_t)n, st.m0 = (uint32_t)m0, st.n0 = (uint32_t)n0;
        st.nbytes = m * n * (uint64_t)g->out_bytes;
        st.hbm_addr = g->c_hbm + (m0 * g->N + n0) * (uint64_t)g->out_bytes;
        DLU__TRY(dlusim_stream_push(x->s, &st));
    }
    if (!bias)
        return DLU_OK;
    dlusim_cmd br = x->proto;
    br.kind = DLUSIM_CMD_REQUANT;
    br.dpu = dpu;
    br.operand = DLUSIM_OPND_BIAS;
    br.flags = stats | calib;
    br.wr = (uint8_t)x->bufBias;
    br.m = (uint32_t)m, br.n = 1, br.m0 = (uint32_t)m0;
    br.nelem = m;
    DLU__TRY(dlusim_stream_push(x->s, &br));
    if (!x->calib) {
        dlusim_cmd bs = x->proto;
        bs.kind = DLUSIM_CMD_STORE;
        bs.dpu = dpu;
        bs.operand = DLUSIM_OPND_BIAS;
        bs.rd[0] = (uint8_t)x->bufBias;
        bs.m = (uint32_t)m, bs.n = 1, bs.m0 = (uint32_t)m0;
        bs.nbytes = m * (uint64_t)g->out_bytes;
        bs.hbm_addr = g->bias_hbm + m0 * (uint64_t)g->out_bytes;
        DLU__TRY(dlusim_stream_push(x->s, &bs));
    }
    return DLU_OK;
}

static dlu_status push_master(gemm_ctx *x, dlusim_cmd_kind kind, uint8_t flags)
{
    dlusim_cmd c = x->proto;
    c.kind = (uint8_t)kind;
    c.flags = flags;
    return dlusim_stream_push(x->s, &c);
}

/* The whole op once: rounds over the DPUs, each round one pipeline step per DPU, so the
 * stream interleaves the DPUs as they run. Ends with BARRIER (and STATS). */
static dlu_status emit_pass(gemm_ctx *x, dpu_sched *ds, uint64_t n_dpu)
{
    const uint64_t ntiles = x->tm * x->tn;
    uint64_t rounds = 0;
    for (uint64_t d = 0; d < n_dpu; d++) {
        dpu_sched *p = &ds[d];
        memset(p, 0, sizeof *p);
        p->t_begin = ntiles * d / n_dpu; /* contiguous, balanced blocks */
        p->ntiles = ntiles * (d + 1) / n_dpu - p->t_begin;
        p->nsteps = p->ntiles * x->kc;
        p->cur_a = p->cur_b = p->next_a = p->next_b = -1;
        rounds = umax(rounds, p->nsteps);
    }
    for (uint64_t r = 0; r <= rounds; r++) {
        for (uint64_t d = 0; d < n_dpu; d++) {
            dpu_sched *p = &ds[d];
            if (r > p->nsteps || p->nsteps == 0)
                continue;
            if (r == 0) { /* prologue: resident B, then the first step's operands */
                if (x->t.resident) {
                    const dlusim_gemm *g = x->g;
                    dlusim_cmd c = x->proto;
                    c.kind = DLUSIM_CMD_LOAD;
                    c.operand = DLUSIM_OPND_B;
                    c.wr = (uint8_t)x->bufB[0];
                    c.dpu = (uint16_t)d;
                    c.n = (uint32_t)g->N, c.k = (uint32_t)g->K;
                    c.nbytes = g->N * g->K * (uint64_t)g->b_bytes;
                    c.hbm_addr = g->b_hbm;
                    DLU__TRY(dlusim_stream_push(x->s, &c));
                }
                DLU__TRY(prepare_step(x, p, (uint16_t)d, 0));
                continue;
            }
            const uint64_t j = r - 1;
            p->cur_a = p->next_a;
            p->cur_b = p->next_b;
            if (j + 1 < p->nsteps)
                DLU__TRY(prepare_step(x, p, (uint16_t)d, j + 1));
            DLU__TRY(compute_step(x, p, (uint16_t)d, j));
        }
    }
    DLU__TRY(push_master(x, DLUSIM_CMD_BARRIER, 0));
    if (x->calib)
        return push_master(x, DLUSIM_CMD_STATS, DLUSIM_F_CALIB);
    return x->g->stats ? push_master(x, DLUSIM_CMD_STATS, 0) : DLU_OK;
}

/* Add a buffer at *off in its space (64-byte aligned), advancing *off. */
static int add_buf(dlusim_stream *s, dlusim_space space, uint64_t *off, uint64_t nbytes)
{
    int id = dlusim_stream_buf(s, space, (uint32_t)*off, (uint32_t)nbytes);
    *off += al(nbytes);
    return id;
}

dlu_status dlusim_lower_gemm(const dlusim_hwcfg *cfg, const dlusim_gemm *g, int layer, dlu_sim_phase phase,
                             dlusim_stream *s)
{
    gemm_ctx x = {.g = g, .s = s};
    DLU__TRY(choose_tiles(cfg, g, &x.t));
    x.tm = cdiv(g->M, x.t.mt);
    x.tn = cdiv(g->N, x.t.nt);
    x.kc = cdiv(g->K, x.t.kt);
    memset(&x.proto, 0, sizeof x.proto);
    x.proto.layer = (uint16_t)layer;
    x.proto.phase = (uint8_t)phase;
    x.proto.rd[0] = x.proto.rd[1] = x.proto.wr = DLUSIM_NOBUF;

    /* The buffer table: operand chunks, output tiles and bias in local memory, the
     * accumulators in the register files; sizes are those of a full tile. */
    const uint64_t mt = x.t.mt, nt = x.t.nt, kt = x.t.kt;
    uint64_t lo = 0, ro = 0;
    s->nbuf = 0;
    for (int i = 0; i < 2; i++)
        x.bufA[i] = add_buf(s, DLUSIM_SPACE_LMEM, &lo, mt * kt * (uint64_t)g->a_bytes);
    if (x.t.resident) {
        x.bufB[0] = add_buf(s, DLUSIM_SPACE_LMEM, &lo, g->N * g->K * (uint64_t)g->b_bytes);
        x.bufB[1] = -1;
    } else {
        for (int i = 0; i < 2; i++)
            x.bufB[i] = add_buf(s, DLUSIM_SPACE_LMEM, &lo, nt * kt * (uint64_t)g->b_bytes);
    }
    for (int i = 0; i < 2; i++)
        x.bufO[i] = add_buf(s, DLUSIM_SPACE_LMEM, &lo, mt * nt * (uint64_t)g->out_bytes);
    x.bufBias = g->bias_sum ? add_buf(s, DLUSIM_SPACE_LMEM, &lo, mt * (uint64_t)g->out_bytes) : DLUSIM_NOBUF;
    for (int i = 0; i < 2; i++)
        x.bufC[i] = add_buf(s, DLUSIM_SPACE_RF, &ro, mt * nt * (uint64_t)g->acc_bytes);

    dpu_sched *ds = calloc((size_t)cfg->n_dpu, sizeof *ds);
    if (!ds)
        return dlu__error(DLU_ENOMEM, "dlusim_lower_gemm: out of memory for %" PRId64 " DPU schedules", cfg->n_dpu);
    dlu_status st = DLU_OK;
    if (g->calib) {
        x.calib = 1;
        st = emit_pass(&x, ds, (uint64_t)cfg->n_dpu);
        x.calib = 0;
    }
    if (st == DLU_OK)
        st = emit_pass(&x, ds, (uint64_t)cfg->n_dpu);
    free(ds);
    return st;
}

/* ------------------------------------------------------------------------------------ */
/* element-wise                                                                         */
/* ------------------------------------------------------------------------------------ */

dlu_status dlusim_lower_vec(const dlusim_hwcfg *cfg, uint64_t nelem, int in_bytes, int out_bytes, int ops_per_elem,
                            int stats, uint64_t in_hbm, uint64_t out_hbm, int layer, dlu_sim_phase phase,
                            dlusim_stream *s)
{
    if (in_bytes < 0 || in_bytes > 64 || out_bytes < 0 || out_bytes > 64)
        return dlu__error(DLU_EINVAL, "dlusim_lower_vec: in_bytes = %d, out_bytes = %d (expected 0 .. 64 each)",
                          in_bytes, out_bytes);
    if (ops_per_elem < 0)
        return dlu__error(DLU_EINVAL, "dlusim_lower_vec: ops_per_elem = %d (expected >= 0)", ops_per_elem);
    if (cfg->n_dpu < 1 || cfg->n_dpu > 65535)
        return dlu__error(DLU_EINVAL, "dlusim_lower_vec: n_dpu = %" PRId64 " (expected 1 .. 65535)", cfg->n_dpu);
    const uint64_t n_dpu = (uint64_t)cfg->n_dpu, lmem = lmem_bytes(cfg);
    const uint64_t width = (uint64_t)umax(1, (uint64_t)(cfg->dpe_per_dpu * cfg->lanes_per_dpe));
    const uint64_t per = 2 * (uint64_t)(in_bytes + out_bytes); /* double-buffered in and out */
    /* largest chunk whose four aligned buffers fit */
    uint64_t cmax = UINT32_MAX;
    if (per) {
        cmax = lmem > 4 * ALIGN ? (lmem - 4 * ALIGN) / per : 0;
        cmax = umin(cmax, UINT32_MAX);
        if (cmax < 1)
            return dlu__error(DLU_EINVAL,
                              "local_mem_kib = %" PRId64 " is too small for one element of a vector op "
                              "(%d + %d bytes, double-buffered)",
                              cfg->local_mem_kib, in_bytes, out_bytes);
    }
    dlusim_cmd proto;
    memset(&proto, 0, sizeof proto);
    proto.layer = (uint16_t)layer;
    proto.phase = (uint8_t)phase;
    proto.rd[0] = proto.rd[1] = proto.wr = DLUSIM_NOBUF;
    s->nbuf = 0;
    if (nelem) {
        /* chunks: as few as fit, but at least one per DPU when there is a vector's width of
         * work for each, and a whole number per DPU once there are more than DPUs */
        uint64_t nch = umax(cdiv(nelem, cmax), umin(n_dpu, cdiv(nelem, width)));
        if (nch > n_dpu)
            nch = roundup(nch, n_dpu);
        uint64_t chunk = cdiv(nelem, nch);
        if (chunk > width && roundup(chunk, width) <= cmax)
            chunk = roundup(chunk, width);
        nch = cdiv(nelem, chunk);
        int bin[2] = {DLUSIM_NOBUF, DLUSIM_NOBUF}, bout[2] = {DLUSIM_NOBUF, DLUSIM_NOBUF};
        uint64_t off = 0;
        for (int i = 0; i < 2 && in_bytes; i++)
            bin[i] = add_buf(s, DLUSIM_SPACE_LMEM, &off, chunk * (uint64_t)in_bytes);
        for (int i = 0; i < 2 && out_bytes; i++)
            bout[i] = add_buf(s, DLUSIM_SPACE_LMEM, &off, chunk * (uint64_t)out_bytes);
        /* chunk i runs on DPU i % n_dpu as its (i / n_dpu)-th; round r emits, per DPU, the
         * LOAD of its chunk r+1 ahead of the VEC and STORE of chunk r */
        const uint64_t rounds = cdiv(nch, n_dpu);
        for (uint64_t r = 0; r <= rounds; r++) {
            for (uint64_t d = 0; d < n_dpu; d++) {
                const uint64_t load_i = r * n_dpu + d; /* chunk loaded this round */
                const uint64_t i = load_i - n_dpu;     /* chunk computed this round */
                if (in_bytes && load_i < nch) {
                    const uint64_t e0 = load_i * chunk, ne = umin(chunk, nelem - e0);
                    dlusim_cmd c = proto;
                    c.kind = DLUSIM_CMD_LOAD;
                    c.operand = DLUSIM_OPND_VEC;
                    c.dpu = (uint16_t)d;
                    c.wr = (uint8_t)bin[r % 2];
                    c.nelem = ne;
                    c.nbytes = ne * (uint64_t)in_bytes;
                    c.hbm_addr = in_hbm + e0 * (uint64_t)in_bytes;
                    DLU__TRY(dlusim_stream_push(s, &c));
                }
                if (r == 0 || i >= nch)
                    continue;
                const uint64_t e0 = i * chunk, ne = umin(chunk, nelem - e0), lr = r - 1;
                dlusim_cmd v = proto;
                v.kind = DLUSIM_CMD_VEC;
                v.dpu = (uint16_t)d;
                v.flags = stats ? DLUSIM_F_STATS : 0;
                v.rd[0] = (uint8_t)bin[lr % 2];
                v.wr = (uint8_t)bout[lr % 2];
                v.ops_per_elem = (uint32_t)ops_per_elem;
                v.nelem = ne;
                DLU__TRY(dlusim_stream_push(s, &v));
                if (out_bytes) {
                    dlusim_cmd c = proto;
                    c.kind = DLUSIM_CMD_STORE;
                    c.operand = DLUSIM_OPND_VEC;
                    c.dpu = (uint16_t)d;
                    c.rd[0] = (uint8_t)bout[lr % 2];
                    c.nelem = ne;
                    c.nbytes = ne * (uint64_t)out_bytes;
                    c.hbm_addr = out_hbm + e0 * (uint64_t)out_bytes;
                    DLU__TRY(dlusim_stream_push(s, &c));
                }
            }
        }
    }
    dlusim_cmd b = proto;
    b.kind = DLUSIM_CMD_BARRIER;
    DLU__TRY(dlusim_stream_push(s, &b));
    if (stats) {
        b.kind = DLUSIM_CMD_STATS;
        DLU__TRY(dlusim_stream_push(s, &b));
    }
    return DLU_OK;
}
