/* test_hw_model.c -- CUnit tests for the SystemC model of the DLU core (hw_model/dluhw.h).
 *
 * Closed-form oracles: with every bandwidth unlimited and every setup and latency zero a
 * MAC tile and a double-buffered GEMM stream take exactly the formulas of
 * docs/hw_model.md; with a bandwidth limit a run is never faster than its bytes over the
 * bandwidth and at most twice max(compute bound, bandwidth bound); every run's cycles are
 * exactly the sum of its stall breakdown. Verification mode: values tagged by LOADs arrive
 * intact at the MACs and STOREs (the scoreboard orders reuse of double buffers), statistics
 * reach the STATS callback and are cleared, a callback error stops the run. Every stream
 * check returns DLU_EINVAL; a second model is DLU_EBUSY while one lives and works after it
 * is freed. Not tested here: the blocks one by one (tests/hw/ golden logs). */
#include <CUnit/Basic.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlu/status.h"
#include "hw_model/dluhw.h"

static dluhw *model; /* the model of the current test; freed by run_test's caller on failure paths */

/* ---- helpers ---- */

static void cfg_ideal(dlusim_hwcfg *c)
{
    dlusim_hwcfg_defaults(c);
    c->n_dpu = 4;
    c->noc_link_bytes_per_cycle = 0;
    c->noc_latency_cycles = 0;
    c->dma_setup_cycles = 0;
    c->hbm_gbytes_per_s = 0;
    c->hbm_latency_ns = 0;
}

static uint64_t cdiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

static uint64_t mac_formula(const dlusim_hwcfg *c, uint32_t m, uint32_t n, uint32_t k, int fmt)
{
    return (uint64_t)c->mac_fill_cycles + cdiv(m, (uint64_t)c->dpe_per_dpu) * cdiv(n, (uint64_t)c->lanes_per_dpe) *
                                              cdiv(k, (uint64_t)dlusim_hwcfg_macs_per_lane(c, fmt));
}

static uint64_t vec_formula(const dlusim_hwcfg *c, uint64_t nelem, uint32_t ops)
{
    return (uint64_t)c->vec_fill_cycles +
           cdiv(nelem * (ops ? ops : 1), (uint64_t)(c->dpe_per_dpu * c->lanes_per_dpe * c->vec_ops_per_lane));
}

static uint64_t stall_sum(const dlu_sim_counters *k)
{
    return k->stall_compute + k->stall_memory + k->stall_network + k->stall_stats + k->stall_other;
}

/* Total over phases. */
static dlu_sim_counters total(const dlu_sim_counters out[DLU_SIM_NPHASE])
{
    dlu_sim_counters t;
    memset(&t, 0, sizeof t);
    for (int p = 0; p < DLU_SIM_NPHASE; p++)
        dlu_sim_counters_add(&t, &out[p]);
    return t;
}

static int nstall_checks, nstall_bad;
static dlu_status run(dluhw *m, const dlusim_stream *s, dluhw_exec_fn ex, dluhw_stats_fn sc, void *ctx,
                      dlu_sim_counters *tot)
{
    dlu_sim_counters out[DLU_SIM_NPHASE];
    memset(out, 0, sizeof out);
    dlu_status st = dluhw_run(m, s, ex, sc, ctx, out);
    *tot = total(out);
    if (st == DLU_OK) {
        nstall_checks++;
        for (int p = 0; p < DLU_SIM_NPHASE; p++)
            if (out[p].cycles != stall_sum(&out[p])) {
                nstall_bad++;
                fprintf(stderr, "phase %d: cycles %" PRIu64 " != stalls %" PRIu64 "\n", p, out[p].cycles,
                        stall_sum(&out[p]));
            }
    }
    return st;
}

static dlusim_cmd cmd(int kind, int dpu)
{
    dlusim_cmd c;
    memset(&c, 0, sizeof c);
    c.kind = (uint8_t)kind;
    c.dpu = (uint16_t)dpu;
    c.rd[0] = c.rd[1] = c.wr = DLUSIM_NOBUF;
    c.fmt_bits = 8;
    return c;
}

/* ---- a double-buffered GEMM stream ---- */

enum { BUF_A0, BUF_A1, BUF_B0, BUF_B1, BUF_ACC, BUF_OUT, NB };
#define TM 64
#define TN 32
#define TK 128

/* On each of ndpu DPUs: ntile output tiles, each nk chunks of TK; A and B chunks are loaded
 * into alternating buffers, so a LOAD overwrites the buffer the MAC two chunks back read.
 * Returns the per-DPU compute cycles in *compute and the DMA bytes in *bytes. */
static void gemm_stream(dlusim_stream *s, const dlusim_hwcfg *c, int ndpu, int ntile, int nk, uint64_t *compute,
                        uint64_t *bytes)
{
    dlusim_stream_clear(s);
    uint32_t off = 0;
    for (int b = BUF_A0; b <= BUF_B1; b++, off += 65536)
        dlusim_stream_buf(s, DLUSIM_SPACE_LMEM, off, b <= BUF_A1 ? TM * TK : TN * TK);
    dlusim_stream_buf(s, DLUSIM_SPACE_RF, 0, TM * TN * 4);
    dlusim_stream_buf(s, DLUSIM_SPACE_LMEM, off, TM * TN);
    *compute = 0;
    *bytes = 0;
    uint64_t addr = 0;
    for (int t = 0; t < ntile; t++) {
        for (int kc = 0; kc < nk; kc++) {
            const int slot = (t * nk + kc) % 2;
            for (int d = 0; d < ndpu; d++) {
                dlusim_cmd a = cmd(DLUSIM_CMD_LOAD, d);
                a.wr = (uint8_t)(BUF_A0 + slot);
                a.operand = DLUSIM_OPND_A;
                a.m0 = (uint32_t)(t * TM + d * 1000);
                a.k0 = (uint32_t)(kc * TK);
                a.nbytes = TM * TK;
                a.hbm_addr = addr;
                addr += a.nbytes;
                dlusim_stream_push(s, &a);
                dlusim_cmd b = a;
                b.wr = (uint8_t)(BUF_B0 + slot);
                b.operand = DLUSIM_OPND_B;
                b.n0 = (uint32_t)(t * TN + d * 1000);
                b.nbytes = TN * TK;
                b.hbm_addr = addr;
                addr += b.nbytes;
                dlusim_stream_push(s, &b);
                dlusim_cmd mc = cmd(DLUSIM_CMD_MAC, d);
                mc.rd[0] = (uint8_t)(BUF_A0 + slot);
                mc.rd[1] = (uint8_t)(BUF_B0 + slot);
                mc.wr = BUF_ACC;
                mc.flags = kc == 0 ? DLUSIM_F_ACC_INIT : 0;
                mc.m = TM;
                mc.n = TN;
                mc.k = TK;
                mc.m0 = a.m0;
                mc.n0 = b.n0;
                mc.k0 = a.k0;
                dlusim_stream_push(s, &mc);
                if (d == 0) {
                    *compute += mac_formula(c, TM, TN, TK, 8);
                    *bytes += a.nbytes + b.nbytes;
                }
            }
        }
        for (int d = 0; d < ndpu; d++) {
            dlusim_cmd r = cmd(DLUSIM_CMD_REQUANT, d);
            r.rd[0] = BUF_ACC;
            r.wr = BUF_OUT;
            r.m = TM;
            r.n = TN;
            r.nelem = TM * TN;
            r.flags = DLUSIM_F_STATS;
            r.m0 = (uint32_t)(t * TM + d * 1000);
            dlusim_stream_push(s, &r);
            dlusim_cmd st = cmd(DLUSIM_CMD_STORE, d);
            st.rd[0] = BUF_OUT;
            st.nbytes = TM * TN;
            st.hbm_addr = addr;
            st.m0 = r.m0;
            addr += st.nbytes;
            dlusim_stream_push(s, &st);
            if (d == 0) {
                *compute += vec_formula(c, TM * TN, 1);
                *bytes += st.nbytes;
            }
        }
    }
    *bytes *= (uint64_t)ndpu;
}

/* ---- tests ---- */

static void test_mac_formula(void)
{
    dlusim_hwcfg c;
    cfg_ideal(&c);
    CU_ASSERT_EQUAL_FATAL(dluhw_new(&c, &model), DLU_OK);
    const uint32_t cases[][4] = {{16, 8, 4, 8},    {1, 1, 1, 8},     {17, 9, 5, 8},     {64, 64, 64, 16},
                                 {33, 7, 131, 32}, {100, 3, 77, 16}, {256, 256, 1000, 8}};
    dlusim_stream s;
    dlusim_stream_init(&s);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dlusim_stream_clear(&s);
        dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 0, 1);
        dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 1, 1);
        dlusim_stream_buf(&s, DLUSIM_SPACE_RF, 0, 4);
        dlusim_cmd m = cmd(DLUSIM_CMD_MAC, 1);
        m.rd[0] = 0;
        m.rd[1] = 1;
        m.wr = 2;
        m.m = cases[i][0];
        m.n = cases[i][1];
        m.k = cases[i][2];
        m.fmt_bits = (uint8_t)cases[i][3];
        dlusim_stream_push(&s, &m);
        dlu_sim_counters k;
        const uint64_t t_before = dluhw_now_cycles(model);
        CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_OK);
        const uint64_t want = mac_formula(&c, m.m, m.n, m.k, m.fmt_bits);
        if (k.cycles != want)
            fprintf(stderr, "MAC %ux%ux%u fmt %u: %" PRIu64 " cycles, formula %" PRIu64 "\n", m.m, m.n, m.k,
                    m.fmt_bits, k.cycles, want);
        CU_ASSERT_EQUAL(k.cycles, want);
        CU_ASSERT_EQUAL(k.macs, (uint64_t)m.m * m.n * m.k);
        CU_ASSERT_EQUAL(k.stall_compute, want - (uint64_t)c.mac_fill_cycles);
        CU_ASSERT_EQUAL(k.stall_other, (uint64_t)c.mac_fill_cycles);
        CU_ASSERT_EQUAL(k.mac_slots, (want - (uint64_t)c.mac_fill_cycles) * (uint64_t)(c.dpe_per_dpu * c.lanes_per_dpe) *
                                         (uint64_t)dlusim_hwcfg_macs_per_lane(&c, m.fmt_bits));
        CU_ASSERT(k.mac_slots >= k.macs);
        CU_ASSERT_EQUAL(dluhw_now_cycles(model), t_before + want); /* time persists across runs */
    }
    /* a VEC command: nelem * ops over the DPU's lanes */
    dlusim_stream_clear(&s);
    dlusim_cmd v = cmd(DLUSIM_CMD_VEC, 0);
    v.nelem = 10001;
    v.ops_per_elem = 3;
    dlusim_stream_push(&s, &v);
    dlu_sim_counters k;
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_OK);
    CU_ASSERT_EQUAL(k.cycles, vec_formula(&c, 10001, 3));
    CU_ASSERT_EQUAL(k.vec_ops, 30003);
    dlusim_stream_free(&s);
    dluhw_free(model);
    model = NULL;
}

static void test_gemm_ideal(void)
{
    dlusim_hwcfg c;
    cfg_ideal(&c);
    CU_ASSERT_EQUAL_FATAL(dluhw_new(&c, &model), DLU_OK);
    dlusim_stream s;
    dlusim_stream_init(&s);
    uint64_t compute, bytes;
    gemm_stream(&s, &c, 4, 3, 5, &compute, &bytes);
    dlu_sim_counters k;
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_OK);
    if (k.cycles != compute)
        fprintf(stderr, "gemm: %" PRIu64 " cycles, formula %" PRIu64 "\n", k.cycles, compute);
    CU_ASSERT_EQUAL(k.cycles, compute);
    CU_ASSERT_EQUAL(k.stall_memory + k.stall_network, 0);
    CU_ASSERT_EQUAL(k.busy_mac + k.busy_vec, 4 * compute);
    CU_ASSERT_EQUAL(k.bytes_noc, bytes);
    CU_ASSERT_EQUAL(k.commands, s.n);
    CU_ASSERT_EQUAL(k.bytes_hbm_rd + k.bytes_hbm_wr, bytes); /* every transfer is whole 64-byte bursts */
    CU_ASSERT(k.energy_pj[DLU_SIM_E_MAC] > 0 && k.energy_pj[DLU_SIM_E_HBM] > 0 && k.energy_pj[DLU_SIM_E_STATIC] > 0);
    /* a STATS command adds exactly agg + gather + decide after the last DPU */
    dlusim_cmd st = cmd(DLUSIM_CMD_STATS, 0);
    st.phase = DLU_SIM_STATS;
    dlusim_stream_push(&s, &st);
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_OK);
    CU_ASSERT_EQUAL(k.cycles, compute + (uint64_t)(c.stats_agg_cycles + c.stats_decide_cycles));
    CU_ASSERT_EQUAL(k.stall_stats, (uint64_t)(c.stats_agg_cycles + c.stats_decide_cycles));
    dlusim_stream_free(&s);
    dluhw_free(model);
    model = NULL;
}

static void test_gemm_bandwidth(void)
{
    for (int which = 0; which < 2; which++) {
        dlusim_hwcfg c;
        cfg_ideal(&c);
        double bw; /* bytes per cycle of the shared or per-DPU bottleneck */
        if (which == 0) {
            c.hbm_gbytes_per_s = 64; /* 64 B/cycle at 1 GHz, shared by the 4 DPUs */
            bw = 64;
        } else {
            c.noc_link_bytes_per_cycle = 8; /* per DPU */
            bw = 8;
        }
        CU_ASSERT_EQUAL_FATAL(dluhw_new(&c, &model), DLU_OK);
        dlusim_stream s;
        dlusim_stream_init(&s);
        uint64_t compute, bytes;
        gemm_stream(&s, &c, 4, 3, 5, &compute, &bytes);
        const double bw_bound = which == 0 ? (double)bytes / bw : (double)bytes / 4 / bw;
        dlu_sim_counters k;
        CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_OK);
        const double bound = bw_bound > (double)compute ? bw_bound : (double)compute;
        fprintf(stderr, "  %s-limited gemm: %" PRIu64 " cycles, compute %" PRIu64 ", bandwidth %.0f\n",
                which ? "link" : "hbm", k.cycles, compute, bw_bound);
        CU_ASSERT((double)k.cycles >= bw_bound);
        CU_ASSERT(k.cycles >= compute);
        CU_ASSERT((double)k.cycles <= 2 * bound);
        CU_ASSERT((which == 0 ? k.stall_memory : k.stall_network) > 0);
        dlusim_stream_free(&s);
        dluhw_free(model);
        model = NULL;
    }
}

/* ---- verification mode ---- */

struct vctx {
    const dlusim_stream *s;
    int bad, loads, macs, stores, stats_calls;
    uint64_t stats_count[4];
    uint32_t fail_at; /* return DLU_EIO at this command index (UINT32_MAX: never) */
};

static uint64_t tag_of(uint32_t dpu, uint32_t row0, uint32_t k0, uint32_t which)
{
    return ((uint64_t)dpu << 48) ^ ((uint64_t)row0 << 24) ^ ((uint64_t)k0 << 4) ^ which;
}

static dlu_status v_exec(void *vp, const dlusim_cmd *c, uint8_t *lmem, uint8_t *rf, dlu_stats *dpe_stats)
{
    struct vctx *v = vp;
    const dlusim_stream *s = v->s;
    const uint32_t idx = (uint32_t)(c - s->cmd);
    if (idx == v->fail_at)
        return DLU_EIO;
    uint64_t t, t2;
    switch (c->kind) {
    case DLUSIM_CMD_LOAD:
        t = tag_of(c->dpu, c->operand == DLUSIM_OPND_A ? c->m0 : c->n0, c->k0, c->operand);
        memcpy(lmem + s->buf[c->wr].offset, &t, 8);
        v->loads++;
        break;
    case DLUSIM_CMD_MAC:
        memcpy(&t, lmem + s->buf[c->rd[0]].offset, 8);
        memcpy(&t2, lmem + s->buf[c->rd[1]].offset, 8);
        if (t != tag_of(c->dpu, c->m0, c->k0, DLUSIM_OPND_A) || t2 != tag_of(c->dpu, c->n0, c->k0, DLUSIM_OPND_B))
            v->bad++;
        /* accumulator: row origin of the tile and how many chunks went in */
        memcpy(&t, rf + s->buf[c->wr].offset, 8);
        t = (c->flags & DLUSIM_F_ACC_INIT) ? ((uint64_t)c->m0 << 8) + 1 : t + 1;
        memcpy(rf + s->buf[c->wr].offset, &t, 8);
        v->macs++;
        break;
    case DLUSIM_CMD_REQUANT:
        memcpy(&t, rf + s->buf[c->rd[0]].offset, 8);
        memcpy(lmem + s->buf[c->wr].offset, &t, 8);
        dpe_stats[c->dpu % 16].count += c->nelem;
        break;
    case DLUSIM_CMD_STORE:
        memcpy(&t, lmem + s->buf[c->rd[0]].offset, 8);
        if (t != ((uint64_t)c->m0 << 8) + 5) /* 5 chunks per tile in the stream below */
            v->bad++;
        v->stores++;
        break;
    default:
        break;
    }
    return DLU_OK;
}

static dlu_status v_stats(void *vp, const dlusim_cmd *c, const dlu_stats *agg)
{
    struct vctx *v = vp;
    (void)c;
    if (v->stats_calls < 4)
        v->stats_count[v->stats_calls] = agg->count;
    v->stats_calls++;
    return DLU_OK;
}

static void test_verification(void)
{
    dlusim_hwcfg c;
    dlusim_hwcfg_defaults(&c); /* real latencies and bandwidths: loads race the MACs */
    c.n_dpu = 4;
    CU_ASSERT_EQUAL_FATAL(dluhw_new(&c, &model), DLU_OK);
    dlusim_stream s;
    dlusim_stream_init(&s);
    uint64_t compute, bytes;
    gemm_stream(&s, &c, 4, 3, 5, &compute, &bytes);
    dlusim_cmd st = cmd(DLUSIM_CMD_STATS, 0);
    dlusim_stream_push(&s, &st);
    dlusim_stream_push(&s, &st); /* nothing in between: the counters were cleared */
    struct vctx v;
    memset(&v, 0, sizeof v);
    v.s = &s;
    v.fail_at = UINT32_MAX;
    dlu_sim_counters k;
    CU_ASSERT_EQUAL(run(model, &s, v_exec, v_stats, &v, &k), DLU_OK);
    CU_ASSERT_EQUAL(v.bad, 0);
    CU_ASSERT_EQUAL(v.loads, 4 * 3 * 5 * 2);
    CU_ASSERT_EQUAL(v.macs, 4 * 3 * 5);
    CU_ASSERT_EQUAL(v.stores, 4 * 3);
    CU_ASSERT_EQUAL(v.stats_calls, 2);
    CU_ASSERT_EQUAL(v.stats_count[0], 4 * 3 * TM * TN);
    CU_ASSERT_EQUAL(v.stats_count[1], 0);
    CU_ASSERT(k.cycles > compute); /* DMA latency is exposed at least at the start */

    /* a failing callback stops the run with its code; the model stays usable */
    v.fail_at = 20;
    CU_ASSERT_EQUAL(run(model, &s, v_exec, v_stats, &v, &k), DLU_EIO);
    memset(&v, 0, sizeof v);
    v.s = &s;
    v.fail_at = UINT32_MAX;
    CU_ASSERT_EQUAL(run(model, &s, v_exec, v_stats, &v, &k), DLU_OK);
    CU_ASSERT_EQUAL(v.bad, 0);
    CU_ASSERT_EQUAL(v.stores, 4 * 3);

    /* the trace is JSON with one X event per command and unit names */
    FILE *f = tmpfile();
    CU_ASSERT_FATAL(f != NULL);
    dluhw_trace(model, f);
    v.fail_at = 7;
    CU_ASSERT_EQUAL(run(model, &s, v_exec, v_stats, &v, &k), DLU_EIO); /* still valid JSON after an error */
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_OK);
    dluhw_trace(model, NULL);
    long n = ftell(f);
    rewind(f);
    char *buf = calloc(1, (size_t)n + 1);
    CU_ASSERT_FATAL(buf != NULL);
    CU_ASSERT_EQUAL(fread(buf, 1, (size_t)n, f), (size_t)n);
    CU_ASSERT(strncmp(buf, "{\"traceEvents\":[", 16) == 0);
    CU_ASSERT(strstr(buf, "]}") != NULL && strcmp(buf + n - 3, "]}\n") == 0);
    CU_ASSERT(strstr(buf, "\"dpu3.dma\"") != NULL && strstr(buf, "\"hbm ch2\"") != NULL);
    int nx = 0;
    for (const char *p = buf; (p = strstr(p, "\"ph\":\"X\",\"pid\":0,\"tid\":")) != NULL; p++) {
        int tid = atoi(p + 23);
        nx += tid <= 2 * 4; /* master and DPU units, not channels or links */
    }
    CU_ASSERT(nx >= (int)s.n); /* the full run; the failed one adds its completed commands */
    free(buf);
    fclose(f);
    dlusim_stream_free(&s);
    dluhw_free(model);
    model = NULL;
}

static void test_bad_streams(void)
{
    dlusim_hwcfg c;
    cfg_ideal(&c);
    CU_ASSERT_EQUAL_FATAL(dluhw_new(&c, &model), DLU_OK);
    dlusim_stream s;
    dlusim_stream_init(&s);
    dlu_sim_counters k;
    dlusim_cmd v = cmd(DLUSIM_CMD_VEC, 0);
    v.nelem = 10;

    dlusim_stream_push(&s, &v);
    v.dpu = 4; /* 4 DPUs: 0..3 */
    dlusim_stream_push(&s, &v);
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_EINVAL);
    CU_ASSERT(strstr(dlu_last_error(), "command 1") != NULL);

    dlusim_stream_clear(&s);
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, (uint32_t)c.local_mem_kib * 1024 - 8, 16);
    v.dpu = 0;
    v.wr = 0;
    dlusim_stream_push(&s, &v);
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_EINVAL);
    CU_ASSERT(strstr(dlu_last_error(), "command 0") != NULL);

    dlusim_stream_clear(&s);
    dlusim_stream_buf(&s, DLUSIM_SPACE_RF, 0, (uint32_t)(c.dpe_per_dpu * c.regfile_kib) * 1024 + 1);
    dlusim_stream_push(&s, &v);
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_EINVAL);

    dlusim_stream_clear(&s);
    v.wr = 3; /* no such buffer */
    dlusim_stream_push(&s, &v);
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_EINVAL);

    dlusim_stream_clear(&s);
    v.wr = DLUSIM_NOBUF;
    v.kind = DLUSIM_CMD_NKIND;
    dlusim_stream_push(&s, &v);
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_EINVAL);

    /* LOAD of more bytes than its buffer holds */
    dlusim_stream_clear(&s);
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 0, 64);
    dlusim_cmd l = cmd(DLUSIM_CMD_LOAD, 0);
    l.wr = 0;
    l.nbytes = 65;
    dlusim_stream_push(&s, &l);
    CU_ASSERT_EQUAL(run(model, &s, NULL, NULL, NULL, &k), DLU_EINVAL);
    CU_ASSERT_EQUAL(dluhw_now_cycles(model), 0); /* nothing ran */
    dlusim_stream_free(&s);
    dluhw_free(model);
    model = NULL;

    c.hbm_channels = 0; /* outside its range */
    CU_ASSERT_EQUAL(dluhw_new(&c, &model), DLU_EINVAL);
    CU_ASSERT_PTR_NULL(model);
}

static void test_models(void)
{
    dlusim_hwcfg c;
    cfg_ideal(&c);
    dluhw *a = NULL, *b = NULL;
    dlusim_stream s;
    dlusim_stream_init(&s);
    dlusim_cmd v = cmd(DLUSIM_CMD_VEC, 2);
    v.nelem = 1000;
    dlusim_stream_push(&s, &v);
    for (int round = 0; round < 3; round++) {
        CU_ASSERT_EQUAL_FATAL(dluhw_new(&c, &a), DLU_OK);
        CU_ASSERT_EQUAL(dluhw_now_cycles(a), 0);
        CU_ASSERT_EQUAL(dluhw_new(&c, &b), DLU_EBUSY);
        CU_ASSERT_PTR_NULL(b);
        dlu_sim_counters k;
        CU_ASSERT_EQUAL(run(a, &s, NULL, NULL, NULL, &k), DLU_OK);
        CU_ASSERT_EQUAL(k.cycles, vec_formula(&c, 1000, 1));
        dluhw_free(a);
    }
    dluhw_free(NULL);
    dlusim_stream_free(&s);
}

/* cycles of a mixed-phase run go to the first command's phase; actions to their own */
static void test_phases(void)
{
    dlusim_hwcfg c;
    cfg_ideal(&c);
    CU_ASSERT_EQUAL_FATAL(dluhw_new(&c, &model), DLU_OK);
    dlusim_stream s;
    dlusim_stream_init(&s);
    dlusim_cmd v = cmd(DLUSIM_CMD_VEC, 0);
    v.nelem = 100;
    v.phase = DLU_SIM_BWD_DATA;
    dlusim_stream_push(&s, &v);
    v.phase = DLU_SIM_UPDATE;
    dlusim_stream_push(&s, &v);
    dlu_sim_counters out[DLU_SIM_NPHASE];
    memset(out, 0, sizeof out);
    CU_ASSERT_EQUAL(dluhw_run(model, &s, NULL, NULL, NULL, out), DLU_OK);
    CU_ASSERT_EQUAL(out[DLU_SIM_BWD_DATA].cycles, 2 * vec_formula(&c, 100, 1));
    CU_ASSERT_EQUAL(out[DLU_SIM_UPDATE].cycles, 0);
    CU_ASSERT_EQUAL(out[DLU_SIM_UPDATE].vec_ops, 100);
    CU_ASSERT_EQUAL(out[DLU_SIM_BWD_DATA].commands, 1);
    CU_ASSERT_EQUAL(out[DLU_SIM_BWD_DATA].stall_compute + out[DLU_SIM_BWD_DATA].stall_other,
                    out[DLU_SIM_BWD_DATA].cycles);
    dlusim_stream_free(&s);
    dluhw_free(model);
    model = NULL;
}

static void test_stalls_summed(void)
{
    CU_ASSERT(nstall_checks > 10);
    CU_ASSERT_EQUAL(nstall_bad, 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return CU_get_error();
    CU_pSuite su = CU_add_suite("hw_model", NULL, NULL);
    CU_add_test(su, "MAC and VEC tiles match the closed form", test_mac_formula);
    CU_add_test(su, "double-buffered GEMM, ideal memory: exactly the compute formula", test_gemm_ideal);
    CU_add_test(su, "GEMM with an HBM or link limit: between the bounds", test_gemm_bandwidth);
    CU_add_test(su, "verification mode: values and statistics arrive in order", test_verification);
    CU_add_test(su, "bad streams and configs give DLU_EINVAL", test_bad_streams);
    CU_add_test(su, "one model at a time; a new one after free", test_models);
    CU_add_test(su, "phase attribution", test_phases);
    CU_add_test(su, "every run: cycles == sum of stalls", test_stalls_summed);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned nf = CU_get_number_of_failures();
    CU_cleanup_registry();
    return nf ? 1 : 0;
}
