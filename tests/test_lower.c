/* test_lower.c -- CUnit tests of sim/lower.c, GEMMs and element-wise kernels cut into
 * tile commands.
 *
 * What it checks, on random GEMM shapes (M, N, K from 1 to a few thousand, every byte-size
 * combination, bias/stats/calib at random) under several configurations (the defaults,
 * dlu-small's 4 DPUs, tiny local memories and register files, one DPU, odd DPE and lane
 * counts): the tiles fit the local memory and register files by the rule of lower.c; every
 * buffer lies inside its space without overlapping another; the MACs cover every (i, j, k)
 * of the GEMM exactly once, ACC_INIT exactly on each tile's first k chunk; every output
 * element gets one non-calibration REQUANT and one STORE at the right HBM address; the
 * bias REQUANTs and STOREs cover [0, M) once; the calibration pass comes first, without
 * STOREs, closed by BARRIER and a CALIB STATS; every DPU index is in range. A small data-
 * flow interpreter follows each DPU's buffers in stream order: every MAC reads exactly
 * its A and B chunks, accumulates onto its own tile, every REQUANT reads a finished tile
 * and every STORE the REQUANT's result; and a LOAD never writes a buffer the next MAC of
 * its DPU reads (so, under the scoreboard, it overlaps that MAC). The GEMMs of the
 * reference nets at batch 128 stay under 20000 commands (counts printed). Element-wise
 * streams cover [0, nelem) once. Too-small configurations and bad arguments fail with
 * DLU_EINVAL and a message naming the key or field.
 *
 * What it is not: a test of timing (hw_model/) or values (exec.c). */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlu/status.h"
#include "sim/lower.h"

#define CHECK_MSG(what)                                                                            \
    do {                                                                                           \
        const char *m_ = dlu_last_error();                                                         \
        if (!strstr(m_, (what)))                                                                   \
            printf("\n    %s:%d: message \"%s\" lacks \"%s\" ", __FILE__, __LINE__, m_, (what));    \
        CU_ASSERT_PTR_NOT_NULL(strstr(m_, (what)));                                                \
    } while (0)

/* Count failures of one GEMM's checks without flooding CUnit: one assertion per check
 * per GEMM, the first few failures printed. */
static int g_report = 20;
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            ok = 0;                                                                                \
            if (g_report > 0) {                                                                    \
                g_report--;                                                                        \
                printf("\n    %s:%d: ", __FILE__, __LINE__);                                       \
                printf(__VA_ARGS__);                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static uint64_t g_rng = 0x10E7C0DE5EED0001ull;
static uint64_t rnd64(void) /* splitmix64: fixed seed, reproducible */
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* log-uniform in [1, hi] */
static uint64_t rnd_dim(uint64_t hi)
{
    int bits = 0;
    while ((1ull << bits) < hi)
        bits++;
    uint64_t v = 1 + rnd64() % ((1ull << (rnd64() % (bits + 1))));
    return v > hi ? hi : v;
}

static uint64_t cdiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

static dlusim_hwcfg cfg_named(int which)
{
    dlusim_hwcfg c;
    dlusim_hwcfg_defaults(&c);
    switch (which) {
    case 1: c.n_dpu = 4, c.local_mem_kib = 256; break;                 /* dlu-small */
    case 2: c.local_mem_kib = 4, c.regfile_kib = 1, c.dpe_per_dpu = 2; break; /* tiny */
    case 3: c.n_dpu = 1; break;
    case 4: c.n_dpu = 7, c.dpe_per_dpu = 3, c.lanes_per_dpe = 5, c.macs_int8 = 3, c.local_mem_kib = 37; break;
    case 5: c.n_dpu = 64, c.regfile_kib = 2, c.local_mem_kib = 64; break;
    default: break;
    }
    return c;
}

/* ------------------------------------------------------------------------------------ */
/* the GEMM checker                                                                     */
/* ------------------------------------------------------------------------------------ */

typedef struct tag {
    int valid;
    uint64_t r0, c0, r, c; /* operand region, or the tile (m0, n0, m, n) */
    uint64_t kdone;        /* accumulators: k covered so far */
} tag;

typedef struct tile_rec {
    uint64_t kcover, macs, requant, store, calib_requant;
    int inits;
} tile_rec;

/* Check one GEMM's stream; returns 1 when every check held. */
static int check_gemm(const dlusim_hwcfg *cfg, const dlusim_gemm *g, const dlusim_stream *s, int layer, int phase)
{
    int ok = 1;
    uint32_t mt, nt, kt;
    dlusim_gemm_tiles(cfg, g, &mt, &nt, &kt);
    EXPECT(mt >= 1 && nt >= 1 && kt >= 1 && mt <= g->M && nt <= g->N && kt <= g->K,
           "tiles %u x %u x %u for %" PRIu64 " x %" PRIu64 " x %" PRIu64, mt, nt, kt, g->M, g->N, g->K);
    if (!ok)
        return 0;
    const uint64_t lmem = (uint64_t)cfg->local_mem_kib * 1024, rf = (uint64_t)cfg->dpe_per_dpu * cfg->regfile_kib * 1024;
    const uint64_t ball = g->N * g->K * (uint64_t)g->b_bytes;
    const int resident = nt == g->N && kt == g->K && ball <= lmem / 4;
    const uint64_t bneed = resident ? ball : 2ull * nt * kt * g->b_bytes;
    const uint64_t need = 2ull * mt * kt * g->a_bytes + bneed + 2ull * mt * nt * g->out_bytes +
                          (g->bias_sum ? (uint64_t)mt * g->out_bytes : 0);
    EXPECT(need <= lmem, "tiles %u x %u x %u need %" PRIu64 " bytes of local memory, have %" PRIu64, mt, nt, kt,
           need, lmem);
    EXPECT(2ull * mt * nt * g->acc_bytes <= rf, "accumulators of %u x %u do not fit %" PRIu64 " bytes", mt, nt, rf);
    const uint64_t P = (uint64_t)cfg->dpe_per_dpu;
    EXPECT(mt == g->M || mt % P == 0 || mt < P, "mt %u not a multiple of %" PRIu64 " (M %" PRIu64 ")", mt, P, g->M);

    /* buffers inside their spaces, not overlapping */
    for (int i = 0; i < s->nbuf; i++) {
        const dlusim_buf *b = &s->buf[i];
        const uint64_t cap = b->space == DLUSIM_SPACE_LMEM ? lmem : rf;
        EXPECT((uint64_t)b->offset + b->nbytes <= cap, "buffer %d [%u, +%u) outside its space of %" PRIu64, i,
               b->offset, b->nbytes, cap);
        for (int j = 0; j < i; j++) {
            const dlusim_buf *o = &s->buf[j];
            EXPECT(o->space != b->space || o->offset + o->nbytes <= b->offset || b->offset + b->nbytes <= o->offset,
                   "buffers %d and %d overlap", j, i);
        }
    }

    const uint64_t tm = cdiv(g->M, mt), tn = cdiv(g->N, nt), ntiles = tm * tn;
    tile_rec *tr = calloc(ntiles, sizeof *tr);
    uint8_t *bias_req = calloc(g->M, 1), *bias_st = calloc(g->M, 1);
    const size_t nd = (size_t)cfg->n_dpu;
    tag *tags = calloc(nd * DLUSIM_MAX_BUFS, sizeof *tags);
    /* per DPU: buffers written by LOADs since its last MAC (must not be read by its next) */
    uint32_t *loaded = calloc(nd, sizeof *loaded);
    int *any_mac = calloc(nd, sizeof *any_mac);
    if (!tr || !bias_req || !bias_st || !tags || !loaded || !any_mac) {
        CU_FAIL("out of memory");
        ok = 0;
        goto out;
    }
    int pass = g->calib ? 0 : 1; /* 0: calibration, 1: normal */
    int seen_calib_stats = 0, store_before_calib_stats = 0;
    uint64_t sum_mnk = 0;
    for (size_t i = 0; i < s->n; i++) {
        const dlusim_cmd *c = &s->cmd[i];
        EXPECT(c->layer == layer && c->phase == phase, "command %zu: layer %u phase %u", i, c->layer, c->phase);
        if (c->kind == DLUSIM_CMD_BARRIER || c->kind == DLUSIM_CMD_STATS) {
            if (c->kind == DLUSIM_CMD_STATS && (c->flags & DLUSIM_F_CALIB)) {
                EXPECT(pass == 0 && i > 0 && s->cmd[i - 1].kind == DLUSIM_CMD_BARRIER,
                       "command %zu: CALIB STATS out of place", i);
                seen_calib_stats = 1;
                pass = 1;
                memset(tags, 0, nd * DLUSIM_MAX_BUFS * sizeof *tags);
                memset(loaded, 0, nd * sizeof *loaded);
                memset(any_mac, 0, nd * sizeof *any_mac);
            }
            continue;
        }
        EXPECT(c->dpu < cfg->n_dpu, "command %zu: dpu %u >= %" PRId64, i, c->dpu, cfg->n_dpu);
        if (c->dpu >= cfg->n_dpu)
            continue;
        tag *tg = &tags[(size_t)c->dpu * DLUSIM_MAX_BUFS];
        const int calib = pass == 0;
        switch (c->kind) {
        case DLUSIM_CMD_LOAD: {
            EXPECT(c->wr < s->nbuf && s->buf[c->wr].space == DLUSIM_SPACE_LMEM, "LOAD %zu into buffer %u", i, c->wr);
            if (c->wr >= s->nbuf)
                break;
            EXPECT(c->nbytes <= s->buf[c->wr].nbytes, "LOAD %zu: %" PRIu64 " bytes into a buffer of %u", i, c->nbytes,
                   s->buf[c->wr].nbytes);
            if (c->operand == DLUSIM_OPND_A) {
                EXPECT(c->nbytes == (uint64_t)c->m * c->k * g->a_bytes &&
                           c->hbm_addr == g->a_hbm + ((uint64_t)c->m0 * g->K + c->k0) * g->a_bytes,
                       "LOAD A %zu: nbytes or address", i);
                tg[c->wr] = (tag){1, c->m0, c->k0, c->m, c->k, 0};
            } else {
                EXPECT(c->operand == DLUSIM_OPND_B, "LOAD %zu: operand %u", i, c->operand);
                EXPECT(c->nbytes == (uint64_t)c->n * c->k * g->b_bytes &&
                           c->hbm_addr == g->b_hbm + ((uint64_t)c->n0 * g->K + c->k0) * g->b_bytes,
                       "LOAD B %zu: nbytes or address", i);
                tg[c->wr] = (tag){1, c->n0, c->k0, c->n, c->k, 0};
            }
            if (any_mac[c->dpu])
                loaded[c->dpu] |= 1u << c->wr;
            break;
        }
        case DLUSIM_CMD_MAC: {
            EXPECT(c->fmt_bits == g->fmt_bits, "MAC %zu: fmt_bits %u", i, c->fmt_bits);
            EXPECT(c->rd[0] < s->nbuf && c->rd[1] < s->nbuf && c->wr < s->nbuf &&
                       s->buf[c->wr].space == DLUSIM_SPACE_RF,
                   "MAC %zu: buffers", i);
            if (c->rd[0] >= s->nbuf || c->rd[1] >= s->nbuf || c->wr >= s->nbuf)
                break;
            EXPECT(!(loaded[c->dpu] & (1u << c->rd[0] | 1u << c->rd[1])),
                   "MAC %zu reads a buffer loaded after the previous MAC of DPU %u (no overlap)", i, c->dpu);
            loaded[c->dpu] = 0;
            any_mac[c->dpu] = 1;
            const tag a = tg[c->rd[0]], b = tg[c->rd[1]];
            EXPECT(a.valid && a.r0 == c->m0 && a.c0 == c->k0 && a.r == c->m && a.c == c->k,
                   "MAC %zu: A buffer holds (%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "), needs (%u,%u,%u,%u)", i,
                   a.r0, a.c0, a.r, a.c, c->m0, c->k0, c->m, c->k);
            EXPECT(b.valid && b.r0 == c->n0 && b.c0 == c->k0 && b.r == c->n && b.c == c->k, "MAC %zu: B buffer", i);
            EXPECT((uint64_t)c->m * c->n * g->acc_bytes <= s->buf[c->wr].nbytes, "MAC %zu: accumulators", i);
            EXPECT(c->m0 % mt == 0 && c->n0 % nt == 0 && c->k0 % kt == 0, "MAC %zu: origin off the grid", i);
            const uint64_t ti = (c->n0 / nt) * tm + c->m0 / mt;
            EXPECT(ti < ntiles && c->m == (c->m0 + mt <= g->M ? mt : g->M - c->m0) &&
                       c->n == (c->n0 + nt <= g->N ? nt : g->N - c->n0) &&
                       c->k == (c->k0 + kt <= g->K ? kt : g->K - c->k0),
                   "MAC %zu: tile size", i);
            if (ti >= ntiles)
                break;
            const int init = (c->flags & DLUSIM_F_ACC_INIT) != 0;
            EXPECT(init == (c->k0 == 0), "MAC %zu: ACC_INIT %d at k0 %u", i, init, c->k0);
            EXPECT(((c->flags & DLUSIM_F_BIAS_SUM) != 0) == (g->bias_sum && c->n0 == 0), "MAC %zu: BIAS_SUM", i);
            tag *acc = &tg[c->wr];
            if (init)
                *acc = (tag){1, c->m0, c->n0, c->m, c->n, 0};
            EXPECT(acc->valid && acc->r0 == c->m0 && acc->c0 == c->n0 && acc->kdone == c->k0,
                   "MAC %zu: accumulates onto another tile or out of k order", i);
            acc->kdone += c->k;
            if (!calib) {
                tr[ti].kcover += c->k;
                tr[ti].macs++;
                tr[ti].inits += init;
                sum_mnk += (uint64_t)c->m * c->n * c->k;
            }
            break;
        }
        case DLUSIM_CMD_REQUANT: {
            EXPECT(((c->flags & DLUSIM_F_CALIB) != 0) == calib, "REQUANT %zu: CALIB flag in pass %d", i, pass);
            EXPECT(((c->flags & DLUSIM_F_STATS) != 0) == (g->stats != 0), "REQUANT %zu: STATS flag", i);
            if (c->operand == DLUSIM_OPND_BIAS) {
                EXPECT(g->bias_sum && c->n == 1 && c->nelem == c->m && c->m0 + c->m <= g->M, "bias REQUANT %zu", i);
                for (uint64_t r = c->m0; !calib && r < c->m0 + c->m && r < g->M; r++)
                    bias_req[r]++;
                EXPECT(c->wr < s->nbuf && s->buf[c->wr].space == DLUSIM_SPACE_LMEM &&
                           (uint64_t)c->m * g->out_bytes <= s->buf[c->wr].nbytes,
                       "bias REQUANT %zu: output buffer", i);
                if (c->wr < s->nbuf)
                    tg[c->wr] = (tag){1, c->m0, 0, c->m, 1, 0};
                break;
            }
            EXPECT(c->operand == DLUSIM_OPND_C && c->nelem == (uint64_t)c->m * c->n, "REQUANT %zu: operand", i);
            EXPECT(c->rd[0] < s->nbuf, "REQUANT %zu: no accumulators", i);
            if (c->rd[0] >= s->nbuf)
                break;
            const tag acc = tg[c->rd[0]];
            EXPECT(acc.valid && acc.r0 == c->m0 && acc.c0 == c->n0 && acc.r == c->m && acc.c == c->n &&
                       acc.kdone == g->K,
                   "REQUANT %zu reads an unfinished or other tile", i);
            const uint64_t ti = (c->n0 / nt) * tm + c->m0 / mt;
            if (ti >= ntiles)
                break;
            EXPECT(c->wr < s->nbuf && s->buf[c->wr].space == DLUSIM_SPACE_LMEM &&
                       (uint64_t)c->m * c->n * g->out_bytes <= s->buf[c->wr].nbytes,
                   "REQUANT %zu: output buffer", i);
            if (c->wr < s->nbuf)
                tg[c->wr] = (tag){1, c->m0, c->n0, c->m, c->n, 0};
            if (calib)
                tr[ti].calib_requant++;
            else
                tr[ti].requant++;
            break;
        }
        case DLUSIM_CMD_STORE: {
            EXPECT(!calib, "STORE %zu in the calibration pass", i);
            if (g->calib && !seen_calib_stats)
                store_before_calib_stats = 1;
            EXPECT(c->rd[0] < s->nbuf, "STORE %zu: buffer", i);
            if (c->rd[0] >= s->nbuf)
                break;
            const tag o = tg[c->rd[0]];
            EXPECT(c->nbytes <= s->buf[c->rd[0]].nbytes, "STORE %zu: more bytes than its buffer", i);
            if (c->operand == DLUSIM_OPND_BIAS) {
                EXPECT(o.valid && o.r0 == c->m0 && o.r == c->m && o.c == 1, "bias STORE %zu: not the REQUANT's", i);
                EXPECT(c->nbytes == (uint64_t)c->m * g->out_bytes &&
                           c->hbm_addr == g->bias_hbm + (uint64_t)c->m0 * g->out_bytes,
                       "bias STORE %zu: nbytes or address", i);
                for (uint64_t r = c->m0; r < c->m0 + c->m && r < g->M; r++)
                    bias_st[r]++;
                break;
            }
            EXPECT(o.valid && o.r0 == c->m0 && o.c0 == c->n0 && o.r == c->m && o.c == c->n,
                   "STORE %zu: buffer does not hold its tile", i);
            EXPECT(c->nbytes == (uint64_t)c->m * c->n * g->out_bytes &&
                       c->hbm_addr == g->c_hbm + ((uint64_t)c->m0 * g->N + c->n0) * g->out_bytes,
                   "STORE %zu: nbytes or address", i);
            const uint64_t ti = (c->n0 / nt) * tm + c->m0 / mt;
            if (ti < ntiles)
                tr[ti].store++;
            break;
        }
        default: EXPECT(0, "command %zu: kind %u in a GEMM", i, c->kind);
        }
    }
    EXPECT(sum_mnk == g->M * g->N * g->K, "sum of m*n*k %" PRIu64 " != M*N*K", sum_mnk);
    for (uint64_t t = 0; t < ntiles; t++) {
        EXPECT(tr[t].kcover == g->K && tr[t].inits == 1 && tr[t].macs == cdiv(g->K, kt),
               "tile %" PRIu64 ": k covered %" PRIu64 ", %d ACC_INITs, %" PRIu64 " MACs", t, tr[t].kcover, tr[t].inits,
               tr[t].macs);
        EXPECT(tr[t].requant == 1 && tr[t].store == 1, "tile %" PRIu64 ": %" PRIu64 " REQUANTs, %" PRIu64 " STOREs", t,
               tr[t].requant, tr[t].store);
        EXPECT(tr[t].calib_requant == (g->calib ? 1u : 0u), "tile %" PRIu64 ": calibration REQUANTs", t);
    }
    for (uint64_t r = 0; r < g->M; r++)
        EXPECT(bias_req[r] == (g->bias_sum ? 1 : 0) && bias_st[r] == (g->bias_sum ? 1 : 0),
               "bias row %" PRIu64 ": %d REQUANTs, %d STOREs", r, bias_req[r], bias_st[r]);
    EXPECT(!g->calib || (seen_calib_stats && !store_before_calib_stats), "calibration pass missing or not first");
    /* the end: BARRIER, then STATS when stats */
    if (g->stats)
        EXPECT(s->n >= 2 && s->cmd[s->n - 1].kind == DLUSIM_CMD_STATS && !(s->cmd[s->n - 1].flags & DLUSIM_F_CALIB) &&
                   s->cmd[s->n - 2].kind == DLUSIM_CMD_BARRIER,
               "does not end with BARRIER, STATS");
    else
        EXPECT(s->n >= 1 && s->cmd[s->n - 1].kind == DLUSIM_CMD_BARRIER, "does not end with BARRIER");
out:
    free(tr);
    free(bias_req);
    free(bias_st);
    free(tags);
    free(loaded);
    free(any_mac);
    return ok;
}

static dlusim_gemm random_gemm(uint64_t maxdim)
{
    static const int sz[] = {1, 2, 4};
    dlusim_gemm g;
    memset(&g, 0, sizeof g);
    g.M = rnd_dim(maxdim);
    g.N = rnd_dim(maxdim);
    g.K = rnd_dim(maxdim);
    g.a_bytes = sz[rnd64() % 3];
    g.b_bytes = sz[rnd64() % 3];
    g.out_bytes = sz[rnd64() % 3];
    g.acc_bytes = rnd64() % 4 ? 4 : 8;
    g.fmt_bits = 8 * (g.a_bytes > g.b_bytes ? g.a_bytes : g.b_bytes);
    g.bias_sum = rnd64() % 3 == 0;
    g.stats = rnd64() % 2;
    g.calib = g.stats && rnd64() % 3 == 0;
    g.a_hbm = rnd64() % (1u << 30);
    g.b_hbm = rnd64() % (1u << 30);
    g.c_hbm = rnd64() % (1u << 30);
    g.bias_hbm = rnd64() % (1u << 30);
    return g;
}

static void run_random(int cfg_id, int count, uint64_t maxdim)
{
    const dlusim_hwcfg cfg = cfg_named(cfg_id);
    dlusim_stream s;
    dlusim_stream_init(&s);
    int bad = 0;
    for (int it = 0; it < count; it++) {
        dlusim_gemm g = random_gemm(maxdim);
        const int layer = (int)(rnd64() % 100), phase = (int)(rnd64() % 3);
        dlusim_stream_clear(&s);
        dlu_status st = dlusim_lower_gemm(&cfg, &g, layer, (dlu_sim_phase)phase, &s);
        if (st != DLU_OK) {
            printf("\n    %" PRIu64 " x %" PRIu64 " x %" PRIu64 ": %s ", g.M, g.N, g.K, dlu_last_error());
            bad++;
            continue;
        }
        if (!check_gemm(&cfg, &g, &s, layer, phase)) {
            printf("\n    ^ config %d, GEMM %" PRIu64 " x %" PRIu64 " x %" PRIu64 " bytes a%d b%d acc%d out%d bias %d "
                   "stats %d calib %d ",
                   cfg_id, g.M, g.N, g.K, g.a_bytes, g.b_bytes, g.acc_bytes, g.out_bytes, g.bias_sum, g.stats, g.calib);
            bad++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    dlusim_stream_free(&s);
}

static void test_random_default(void) { run_random(0, 150, 3000); }
static void test_random_small(void) { run_random(1, 150, 3000); }
static void test_random_tiny(void) { run_random(2, 150, 200); }
static void test_random_one_dpu(void) { run_random(3, 100, 1000); }
static void test_random_odd(void) { run_random(4, 150, 1000); }
static void test_random_many_dpus(void) { run_random(5, 100, 2000); }

/* Edge shapes: 1s everywhere, one dimension long. */
static void test_edges(void)
{
    static const uint64_t sh[][3] = {{1, 1, 1}, {1, 1, 5000}, {5000, 1, 1}, {1, 5000, 1}, {17, 1, 3}, {3, 17, 1},
                                     {128, 10, 1}, {1, 1, 200000}};
    for (int c = 0; c < 6; c++) {
        const dlusim_hwcfg cfg = cfg_named(c);
        for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
            dlusim_gemm g = {.M = sh[i][0], .N = sh[i][1], .K = sh[i][2], .a_bytes = 4, .b_bytes = 1,
                             .acc_bytes = 8, .out_bytes = 2, .fmt_bits = 32, .bias_sum = 1, .stats = 1, .calib = 1};
            dlusim_stream s;
            dlusim_stream_init(&s);
            CU_ASSERT_EQUAL(dlusim_lower_gemm(&cfg, &g, 3, DLU_SIM_BWD_WEIGHT, &s), DLU_OK);
            int ok = check_gemm(&cfg, &g, &s, 3, DLU_SIM_BWD_WEIGHT);
            if (!ok)
                printf("\n    ^ config %d, %" PRIu64 " x %" PRIu64 " x %" PRIu64 " ", c, g.M, g.N, g.K);
            CU_ASSERT(ok);
            dlusim_stream_free(&s);
        }
    }
}

/* The GEMMs of cnn, lenet5 and mlp at batch 128: forward, backward-data, backward-weight. */
static void test_reference_counts(void)
{
    static const struct {
        const char *name;
        uint64_t M, N, K;
    } sh[] = {
        {"cnn conv1 fwd", 100352, 32, 25},   {"cnn conv1 bwd_weight", 32, 25, 100352},
        {"cnn conv2 fwd", 25088, 64, 800},   {"cnn conv2 bwd_data", 25088, 32, 1600},
        {"cnn conv2 bwd_weight", 64, 800, 25088}, {"cnn fc1 fwd", 128, 256, 3136},
        {"cnn fc1 bwd_data", 128, 3136, 256}, {"cnn fc1 bwd_weight", 256, 3136, 128},
        {"cnn fc2 fwd", 128, 10, 256},       {"cnn fc2 bwd_data", 128, 256, 10},
        {"cnn fc2 bwd_weight", 10, 256, 128}, {"lenet5 c1 fwd", 100352, 6, 25},
        {"lenet5 c1 bwd_weight", 6, 25, 100352}, {"lenet5 c3 fwd", 12800, 16, 150},
        {"lenet5 c3 bwd_data", 25088, 6, 400}, {"lenet5 c3 bwd_weight", 16, 150, 12800},
        {"lenet5 f5 fwd", 128, 120, 400},    {"lenet5 f5 bwd_data", 128, 400, 120},
        {"lenet5 f5 bwd_weight", 120, 400, 128}, {"mlp fc1 fwd", 128, 256, 784},
        {"mlp fc1 bwd_weight", 256, 784, 128}, {"mlp fc2 fwd", 128, 256, 256},
    };
    static const int prec[][4] = {{1, 1, 4, 1}, {2, 2, 4, 2}, {4, 4, 4, 4}, {1, 1, 4, 4}};
    for (int c = 0; c < 2; c++) {
        const dlusim_hwcfg cfg = cfg_named(c);
        printf("\n    %-24s %8s %8s %8s %8s (commands, config %s; dfp8, dfp16, fp32, dfp8->fp32)", "GEMM", "8", "16",
               "32", "8>32", c ? "dlu-small" : "dlu-base");
        uint64_t total[4] = {0};
        for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
            printf("\n    %-24s", sh[i].name);
            for (int p = 0; p < 4; p++) {
                dlusim_gemm g = {.M = sh[i].M, .N = sh[i].N, .K = sh[i].K, .a_bytes = prec[p][0],
                                 .b_bytes = prec[p][1], .acc_bytes = prec[p][2], .out_bytes = prec[p][3],
                                 .fmt_bits = 8 * prec[p][0], .bias_sum = strstr(sh[i].name, "weight") != NULL,
                                 .stats = 1};
                dlusim_stream s;
                dlusim_stream_init(&s);
                CU_ASSERT_EQUAL(dlusim_lower_gemm(&cfg, &g, 0, DLU_SIM_FWD, &s), DLU_OK);
                printf(" %8zu", s.n);
                total[p] += s.n;
                CU_ASSERT(s.n <= 20000);
                CU_ASSERT(check_gemm(&cfg, &g, &s, 0, DLU_SIM_FWD));
                dlusim_stream_free(&s);
            }
        }
        printf("\n    %-24s %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 "\n", "total", total[0], total[1],
               total[2], total[3]);
    }
}

/* Kt = K when it fits; B resident when it fits a quarter of local memory. */
static void test_tiling_rule(void)
{
    dlusim_hwcfg cfg = cfg_named(0);
    uint32_t mt, nt, kt;
    dlusim_gemm g = {.M = 25088, .N = 64, .K = 800, .a_bytes = 1, .b_bytes = 1, .acc_bytes = 4, .out_bytes = 1,
                     .fmt_bits = 8};
    dlusim_gemm_tiles(&cfg, &g, &mt, &nt, &kt);
    CU_ASSERT_EQUAL(nt, 64); /* B (51200 bytes) resident: full rows */
    CU_ASSERT_EQUAL(kt, 800);
    CU_ASSERT_EQUAL(mt % 16, 0);
    dlusim_stream s;
    dlusim_stream_init(&s);
    CU_ASSERT_EQUAL(dlusim_lower_gemm(&cfg, &g, 0, DLU_SIM_FWD, &s), DLU_OK);
    size_t loads_b = 0;
    for (size_t i = 0; i < s.n; i++)
        loads_b += s.cmd[i].kind == DLUSIM_CMD_LOAD && s.cmd[i].operand == DLUSIM_OPND_B;
    CU_ASSERT(loads_b <= (size_t)cfg.n_dpu); /* once per DPU */
    dlusim_stream_free(&s);
    /* a small GEMM takes K whole */
    dlusim_gemm h = {.M = 128, .N = 256, .K = 784, .a_bytes = 1, .b_bytes = 1, .acc_bytes = 4, .out_bytes = 1,
                     .fmt_bits = 8};
    dlusim_gemm_tiles(&cfg, &h, &mt, &nt, &kt);
    CU_ASSERT_EQUAL(kt, 784);
}

static void test_errors(void)
{
    dlusim_stream s;
    dlusim_stream_init(&s);
    dlusim_gemm g = {.M = 64, .N = 64, .K = 64, .a_bytes = 4, .b_bytes = 4, .acc_bytes = 8, .out_bytes = 4,
                     .fmt_bits = 32};
    dlusim_hwcfg cfg = cfg_named(0);
    cfg.local_mem_kib = 0;
    CU_ASSERT_EQUAL(dlusim_lower_gemm(&cfg, &g, 0, DLU_SIM_FWD, &s), DLU_EINVAL);
    CHECK_MSG("local_mem_kib = 0 is too small for one 1 x 1 tile");
    uint32_t mt = 9, nt = 9, kt = 9;
    dlusim_gemm_tiles(&cfg, &g, &mt, &nt, &kt);
    CU_ASSERT(mt == 0 && nt == 0 && kt == 0);
    CU_ASSERT_EQUAL(dlusim_lower_vec(&cfg, 1000, 4, 4, 1, 0, 0, 0, 0, DLU_SIM_FWD, &s), DLU_EINVAL);
    CHECK_MSG("local_mem_kib = 0");
    cfg = cfg_named(0);
    cfg.regfile_kib = 0;
    CU_ASSERT_EQUAL(dlusim_lower_gemm(&cfg, &g, 0, DLU_SIM_FWD, &s), DLU_EINVAL);
    CHECK_MSG("regfile_kib = 0");
    cfg = cfg_named(0);
    static const struct {
        int field;
        const char *want;
    } bad[] = {{0, "M = 0"}, {1, "a_bytes = 3"}, {2, "acc_bytes = 2"}, {3, "fmt_bits = 12"}, {4, "out_bytes = 0"},
               {5, "K = 0"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dlusim_gemm b = g;
        switch (bad[i].field) {
        case 0: b.M = 0; break;
        case 1: b.a_bytes = 3; break;
        case 2: b.acc_bytes = 2; break;
        case 3: b.fmt_bits = 12; break;
        case 4: b.out_bytes = 0; break;
        default: b.K = 0; break;
        }
        CU_ASSERT_EQUAL(dlusim_lower_gemm(&cfg, &b, 0, DLU_SIM_FWD, &s), DLU_EINVAL);
        CHECK_MSG(bad[i].want);
    }
    CU_ASSERT_EQUAL(dlusim_lower_vec(&cfg, 10, -1, 4, 1, 0, 0, 0, 0, DLU_SIM_FWD, &s), DLU_EINVAL);
    CHECK_MSG("in_bytes = -1");
    dlusim_stream_free(&s);
}

/* ------------------------------------------------------------------------------------ */
/* element-wise                                                                         */
/* ------------------------------------------------------------------------------------ */

static int check_vec(const dlusim_hwcfg *cfg, const dlusim_stream *s, uint64_t nelem, int in_bytes, int out_bytes,
                     int ops, int stats, uint64_t in_hbm, uint64_t out_hbm)
{
    int ok = 1;
    const uint64_t lmem = (uint64_t)cfg->local_mem_kib * 1024;
    for (int i = 0; i < s->nbuf; i++)
        EXPECT(s->buf[i].space == DLUSIM_SPACE_LMEM && (uint64_t)s->buf[i].offset + s->buf[i].nbytes <= lmem,
               "vec buffer %d outside local memory", i);
    /* element counts of LOADs, VECs and STOREs, and per DPU which chunk each buffer holds,
     * so that every STORE writes back the chunk its VEC computed */
    uint64_t vec_sum = 0, load_next = 0, store_next = 0;
    const size_t nd = (size_t)cfg->n_dpu;
    uint64_t *held = calloc(nd * DLUSIM_MAX_BUFS, sizeof *held); /* element offset + 1 held */
    if (!held)
        return 0;
    for (size_t i = 0; i < s->n; i++) {
        const dlusim_cmd *c = &s->cmd[i];
        if (c->kind == DLUSIM_CMD_BARRIER || c->kind == DLUSIM_CMD_STATS)
            continue;
        EXPECT(c->dpu < cfg->n_dpu, "vec command %zu on DPU %u", i, c->dpu);
        if (c->dpu >= cfg->n_dpu)
            continue;
        uint64_t *h = &held[(size_t)c->dpu * DLUSIM_MAX_BUFS];
        if (c->kind == DLUSIM_CMD_LOAD) {
            EXPECT(in_bytes > 0 && c->operand == DLUSIM_OPND_VEC, "vec LOAD %zu with in_bytes %d", i, in_bytes);
            EXPECT(c->nbytes == c->nelem * (uint64_t)in_bytes && c->wr < s->nbuf &&
                       c->nbytes <= s->buf[c->wr].nbytes,
                   "vec LOAD %zu: size", i);
            const uint64_t e0 = in_bytes ? (c->hbm_addr - in_hbm) / (uint64_t)in_bytes : 0;
            EXPECT(c->hbm_addr == in_hbm + e0 * (uint64_t)in_bytes, "vec LOAD %zu: address", i);
            if (c->wr < s->nbuf)
                h[c->wr] = e0 + 1;
            load_next += c->nelem;
        } else if (c->kind == DLUSIM_CMD_VEC) {
            EXPECT(c->ops_per_elem == (uint32_t)ops && ((c->flags & DLUSIM_F_STATS) != 0) == (stats != 0),
                   "VEC %zu: ops or flags", i);
            EXPECT((in_bytes == 0) == (c->rd[0] == DLUSIM_NOBUF) && (out_bytes == 0) == (c->wr == DLUSIM_NOBUF),
                   "VEC %zu: buffers", i);
            if (in_bytes && c->rd[0] < s->nbuf && out_bytes && c->wr < s->nbuf)
                h[c->wr] = h[c->rd[0]]; /* the result of the chunk held in rd */
            vec_sum += c->nelem;
        } else if (c->kind == DLUSIM_CMD_STORE) {
            EXPECT(out_bytes > 0 && c->nbytes == c->nelem * (uint64_t)out_bytes, "vec STORE %zu", i);
            const uint64_t e0 = out_bytes ? (c->hbm_addr - out_hbm) / (uint64_t)out_bytes : 0;
            if (in_bytes && c->rd[0] < s->nbuf)
                EXPECT(h[c->rd[0]] == e0 + 1, "vec STORE %zu stores another chunk's result", i);
            store_next += c->nelem;
        } else {
            EXPECT(0, "vec stream: command %zu of kind %u", i, c->kind);
        }
    }
    EXPECT(vec_sum == nelem, "VEC elements %" PRIu64 " != %" PRIu64, vec_sum, nelem);
    EXPECT(load_next == (in_bytes ? nelem : 0) && store_next == (out_bytes ? nelem : 0), "LOAD/STORE element counts");
    const dlusim_cmd *last = &s->cmd[s->n - 1];
    EXPECT(stats ? last->kind == DLUSIM_CMD_STATS && s->n >= 2 && s->cmd[s->n - 2].kind == DLUSIM_CMD_BARRIER
                 : last->kind == DLUSIM_CMD_BARRIER,
           "vec stream end");
    free(held);
    return ok;
}

static void test_vec(void)
{
    dlusim_stream s;
    dlusim_stream_init(&s);
    int bad = 0;
    for (int it = 0; it < 300; it++) {
        const dlusim_hwcfg cfg = cfg_named((int)(rnd64() % 6));
        uint64_t nelem = it == 0 ? 0 : rnd_dim(it % 2 ? 4000000 : 3000);
        int in_b = (int)(rnd64() % 5), out_b = (int)(rnd64() % 5), ops = (int)(rnd64() % 8), stats = (int)(rnd64() % 2);
        uint64_t ih = rnd64() % (1u << 30), oh = rnd64() % (1u << 30);
        dlusim_stream_clear(&s);
        dlu_status st = dlusim_lower_vec(&cfg, nelem, in_b, out_b, ops, stats, ih, oh, 5, DLU_SIM_UPDATE, &s);
        if (st != DLU_OK) {
            printf("\n    vec %" PRIu64 ": %s ", nelem, dlu_last_error());
            bad++;
            continue;
        }
        if (!check_vec(&cfg, &s, nelem, in_b, out_b, ops, stats, ih, oh)) {
            printf("\n    ^ vec %" PRIu64 " in %d out %d ", nelem, in_b, out_b);
            bad++;
        }
        if (nelem > 100000 && cfg.local_mem_kib >= 64 && s.n > 2000) { /* not absurdly fine chunks */
            printf("\n    vec %" PRIu64 ": %zu commands ", nelem, s.n);
            bad++;
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    dlusim_stream_free(&s);
}

int main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"random GEMMs, default config", test_random_default},
        {"random GEMMs, dlu-small", test_random_small},
        {"random GEMMs, 4 KiB local memory, 1 KiB register files", test_random_tiny},
        {"random GEMMs, one DPU", test_random_one_dpu},
        {"random GEMMs, odd DPE, lane and MAC counts", test_random_odd},
        {"random GEMMs, 64 DPUs with small memories", test_random_many_dpus},
        {"edge shapes", test_edges},
        {"tiling rule: kt = K, resident B", test_tiling_rule},
        {"reference nets at batch 128: command counts", test_reference_counts},
        {"errors name the key or field", test_errors},
        {"element-wise streams", test_vec},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("lower", NULL, NULL);
    int ok = s != NULL;
    for (size_t i = 0; ok && i < sizeof tests / sizeof tests[0]; i++)
        ok = CU_add_test(s, tests[i].name, tests[i].fn) != NULL;
    if (!ok) {
        fprintf(stderr, "test_lower: cannot set up CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_ErrorCode err = CU_get_error();
    CU_cleanup_registry();
    return failed != 0 || err != CUE_SUCCESS ? 1 : 0;
}
