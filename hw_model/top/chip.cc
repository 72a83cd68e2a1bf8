/* chip.cc -- the chip's wiring and the C interface of the model (hw_model/dluhw.h):
 * building and freeing the one SystemC simulation of the process, checking a stream,
 * the scoreboard's dependency table, running the stream, and turning what the blocks
 * recorded into dlu_sim_counters (stall breakdown, energy) and the Chrome trace.
 *
 * Not here: timing formulas (the blocks) or values (the exec callback). */
#include "hw_model/top/chip.h"

#include <algorithm>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "error.h"

namespace dluhw {

chip::chip(sc_core::sc_module_name name, const dlusim_hwcfg &cfg)
    : sc_core::sc_module(name), m_cfg(cfg), m_hbm("hbm", m_cfg), m_noc("noc", m_cfg)
{
    m_run.cfg = &m_cfg;
    m_run.dpu_seg.resize((size_t)m_cfg.n_dpu);
    m_run.dpu_last_end.resize((size_t)m_cfg.n_dpu);
    std::vector<dpu *> dpus;
    for (int d = 0; d < (int)m_cfg.n_dpu; d++) {
        m_dma.emplace_back(new dma(("dma" + std::to_string(d)).c_str(), m_cfg, d));
        m_dma.back()->m_socket.bind(m_noc.m_dpu_socket); /* binding order = link id = DPU index */
        m_dpu.emplace_back(new dpu(("dpu" + std::to_string(d)).c_str(), m_cfg, d, *m_dma.back(), m_run));
        dpus.push_back(m_dpu.back().get());
    }
    m_noc.m_hbm_socket.bind(m_hbm.m_socket);
    m_master.reset(new master("master", m_cfg, dpus, m_noc, m_run));
}

/* Split [t0, t1) of the critical DPU by what it was doing (common.h: seg_class priority). */
static void stall_breakdown(const std::vector<segment> &a, const std::vector<segment> &b, uint64_t t0, uint64_t t1,
                            dlu_sim_counters &k)
{
    struct edge {
        uint64_t t;
        int cls, d;
    };
    std::vector<edge> e;
    e.reserve(2 * (a.size() + b.size()));
    for (const auto *v : {&a, &b})
        for (const segment &s : *v) {
            const uint64_t s0 = std::max(s.t0, t0), s1 = std::min(s.t1, t1);
            if (s1 > s0) {
                e.push_back({s0, s.cls, +1});
                e.push_back({s1, s.cls, -1});
            }
        }
    std::sort(e.begin(), e.end(), [](const edge &x, const edge &y) { return x.t < y.t; });
    uint64_t sum[SEG_NCLASS + 1] = {0}; /* last slot: nothing active */
    int active[SEG_NCLASS] = {0};
    uint64_t prev = t0;
    size_t i = 0;
    while (i <= e.size()) {
        const uint64_t t = i < e.size() ? e[i].t : t1;
        int cls = SEG_NCLASS;
        for (int c = 0; c < SEG_NCLASS; c++)
            if (active[c] > 0) {
                cls = c;
                break;
            }
        sum[cls] += t - prev;
        prev = t;
        if (i == e.size())
            break;
        for (; i < e.size() && e[i].t == t; i++)
            active[e[i].cls] += e[i].d;
    }
    k.stall_compute += sum[SEG_COMPUTE];
    k.stall_stats += sum[SEG_STATS];
    k.stall_memory += sum[SEG_MEMORY];
    k.stall_network += sum[SEG_NETWORK];
    k.stall_other += sum[SEG_FILL] + sum[SEG_DMA_SETUP] + sum[SEG_NCLASS];
}

} // namespace dluhw

using namespace dluhw;

struct dluhw_handle {
    chip *m_chip;
    trace_writer *m_trace;
};

static dluhw_handle *g_live;       /* the one model of this process */
static bool g_context_used;   /* a model was built in the current simulation context */

static dlu_status check_cfg(const dlusim_hwcfg *cfg)
{
#define DLU_HW(sec, key, type, unit, def, lo, hi, comment)                                                      \
    if (!(cfg->key >= (DLUSIM_HW_TYPE_##type)(lo) && cfg->key <= (DLUSIM_HW_TYPE_##type)(hi)))                  \
        return dlu__error(DLU_EINVAL, "dluhw: [%s] %s = %g is outside [%g, %g]", #sec, #key, (double)cfg->key, \
                          (double)(lo), (double)(hi));
#include "sim/hwcfg.def"
#undef DLU_HW
    return DLU_OK;
}

dlu_status dluhw_new(const dlusim_hwcfg *cfg, dluhw_handle **out)
{
    *out = nullptr;
    if (cfg == nullptr)
        return dlu__error(DLU_EINVAL, "dluhw_new: no hardware configuration");
    DLU__TRY(check_cfg(cfg));
    if (g_live)
        return dlu__error(DLU_EBUSY, "dluhw_new: a SystemC model already exists in this process (free it first)");
    setenv("SYSTEMC_DISABLE_COPYRIGHT_MESSAGE", "1", 0);
    if (g_context_used) {
        /* SystemC cannot elaborate twice in one context: start a fresh one. The old context
         * is leaked on purpose (a few KiB per model): libsystemc's static events unregister
         * from the context they were made in when the process exits, and with that context
         * deleted AddressSanitizer catches a use after free in __cxa_finalize. */
        sc_core::sc_curr_simcontext = new sc_core::sc_simcontext();
        sc_core::sc_default_global_context = sc_core::sc_curr_simcontext;
    }
    g_context_used = true;
    dluhw_handle *m = new (std::nothrow)dluhw_handle();
    if (m == nullptr)
        return dlu__error(DLU_ENOMEM, "dluhw_new: out of memory");
    try {
        m->m_chip = new chip("dlu", *cfg);
        sc_core::sc_start(sc_core::SC_ZERO_TIME); /* elaborate; every process waits for work */
    } catch (const std::bad_alloc &) {
        delete m;
        return dlu__error(DLU_ENOMEM, "dluhw_new: out of memory building the model");
    } catch (const std::exception &ex) {
        delete m;
        return dlu__error(DLU_EINTERNAL, "dluhw_new: SystemC: %s", ex.what());
    }
    g_live = m;
    *out = m;
    return DLU_OK;
}

void dluhw_free(dluhw_handle *m)
{
    if (m == nullptr)
        return;
    dluhw_trace(m, nullptr);
    delete m->m_chip;
    delete m;
    g_live = nullptr;
}

uint64_t dluhw_now_cycles(const dluhw_handle *) { return now_cycles(); }

void dluhw_trace(dluhw_handle *m, FILE *f)
{
    chip &c = *m->m_chip;
    delete m->m_trace; /* closes the event array: the file is valid JSON from here */
    m->m_trace = nullptr;
    if (f != nullptr) {
        m->m_trace = new trace_writer(f, c.m_cfg.clock_mhz);
        const int n = (int)c.m_cfg.n_dpu, nch = (int)c.m_cfg.hbm_channels;
        char name[64];
        m->m_trace->thread_name(0, "master");
        for (int d = 0; d < n; d++) {
            std::snprintf(name, sizeof name, "dpu%d.dma", d);
            m->m_trace->thread_name(tid_dma(d), name);
            std::snprintf(name, sizeof name, "dpu%d.dpe", d);
            m->m_trace->thread_name(tid_dpe(d), name);
        }
        for (int ch = 0; ch < nch; ch++) {
            std::snprintf(name, sizeof name, "hbm ch%d", ch);
            m->m_trace->thread_name(tid_hbm(n, ch), name);
        }
        for (int d = 0; d < n; d++) {
            std::snprintf(name, sizeof name, "noc link%d", d);
            m->m_trace->thread_name(tid_link(n, nch, d), name);
        }
    }
    c.m_run.trace = m->m_trace;
    c.m_hbm.set_trace(m->m_trace);
    c.m_noc.set_trace(m->m_trace);
}

static dlu_status check_buf(const dlusim_stream *s, const dlusim_hwcfg &cfg, size_t i, const char *role, uint8_t b,
                            uint64_t need)
{
    if (b == DLUSIM_NOBUF)
        return DLU_OK;
    if (b >= s->nbuf)
        return dlu__error(DLU_EINVAL, "dluhw_run: command %zu: %s buffer %u does not exist (%d buffers)", i, role, b,
                          s->nbuf);
    const dlusim_buf &B = s->buf[b];
    const uint64_t end = (uint64_t)B.offset + B.nbytes;
    if (B.space == DLUSIM_SPACE_LMEM) {
        const uint64_t size = (uint64_t)cfg.local_mem_kib * 1024;
        if (end > size)
            return dlu__error(DLU_EINVAL,
                              "dluhw_run: command %zu: %s buffer %u [%" PRIu32 ", %" PRIu64
                              ") lies beyond the local memory (%" PRIu64 " bytes)",
                              i, role, b, B.offset, end, size);
    } else if (B.space == DLUSIM_SPACE_RF) {
        const uint64_t size = (uint64_t)(cfg.dpe_per_dpu * cfg.regfile_kib) * 1024;
        if (end > size)
            return dlu__error(DLU_EINVAL,
                              "dluhw_run: command %zu: %s buffer %u [%" PRIu32 ", %" PRIu64
                              ") lies beyond the register files (%" PRIu64 " bytes)",
                              i, role, b, B.offset, end, size);
    } else {
        return dlu__error(DLU_EINVAL, "dluhw_run: command %zu: %s buffer %u has unknown space %u", i, role, b,
                          B.space);
    }
    if (need > B.nbytes)
        return dlu__error(DLU_EINVAL, "dluhw_run: command %zu: moves %" PRIu64 " bytes through %s buffer %u of %" PRIu32
                                      " bytes",
                          i, need, role, b, B.nbytes);
    return DLU_OK;
}

static dlu_status check_stream(const dlusim_stream *s, const dlusim_hwcfg &cfg)
{
    if (s->nbuf < 0 || s->nbuf > DLUSIM_MAX_BUFS)
        return dlu__error(DLU_EINVAL, "dluhw_run: stream has %d buffers (at most %d)", s->nbuf, DLUSIM_MAX_BUFS);
    for (size_t i = 0; i < s->n; i++) {
        const dlusim_cmd &c = s->cmd[i];
        if (c.kind >= DLUSIM_CMD_NKIND)
            return dlu__error(DLU_EINVAL, "dluhw_run: command %zu: unknown kind %u", i, c.kind);
        if (c.phase >= DLU_SIM_NPHASE)
            return dlu__error(DLU_EINVAL, "dluhw_run: command %zu (%s): unknown phase %u", i,
                              dlusim_cmd_kind_name((dlusim_cmd_kind)c.kind), c.phase);
        if (c.kind == DLUSIM_CMD_STATS || c.kind == DLUSIM_CMD_BARRIER)
            continue;
        if (c.dpu >= cfg.n_dpu)
            return dlu__error(DLU_EINVAL, "dluhw_run: command %zu (%s): DPU %u does not exist (%" PRId64 " DPUs)", i,
                              dlusim_cmd_kind_name((dlusim_cmd_kind)c.kind), c.dpu, cfg.n_dpu);
        const bool dma = c.kind == DLUSIM_CMD_LOAD || c.kind == DLUSIM_CMD_STORE;
        if (dma && c.nbytes > UINT32_MAX)
            return dlu__error(DLU_EINVAL, "dluhw_run: command %zu: %" PRIu64 " bytes in one transfer (at most 4 GiB - 1)",
                              i, c.nbytes);
        DLU__TRY(check_buf(s, cfg, i, "read", c.rd[0], c.kind == DLUSIM_CMD_STORE ? c.nbytes : 0));
        DLU__TRY(check_buf(s, cfg, i, "read", c.rd[1], 0));
        DLU__TRY(check_buf(s, cfg, i, "write", c.wr, c.kind == DLUSIM_CMD_LOAD ? c.nbytes : 0));
    }
    return DLU_OK;
}

dlu_status dluhw_run(dluhw_handle *m, const dlusim_stream *s, dluhw_exec_fn exec, dluhw_stats_fn stats_cb, void *ctx,
                     dlu_sim_counters out[DLU_SIM_NPHASE])
{
    if (m == nullptr || s == nullptr || out == nullptr)
        return dlu__error(DLU_EINVAL, "dluhw_run: NULL model, stream or counters");
    chip &ch = *m->m_chip;
    const dlusim_hwcfg &cfg = ch.m_cfg;
    DLU__TRY(check_stream(s, cfg));
    if (s->n == 0)
        return DLU_OK;
    run_ctx &r = ch.m_run;
    r.data = exec != nullptr || stats_cb != nullptr;
    try {
        if (r.data)
            for (auto &d : ch.m_dpu)
                d->ensure_data();
        r.st.assign(s->n, cmd_state());
        for (auto &v : r.dpu_seg)
            v.clear();
        r.master_seg.clear();
    } catch (const std::bad_alloc &) {
        return dlu__error(DLU_ENOMEM, "dluhw_run: out of memory for the DPUs' memories or the run's state");
    }
    dluhw::build_deps(s, (int)cfg.n_dpu, r.st);
    std::fill(r.dpu_last_end.begin(), r.dpu_last_end.end(), 0);
    std::memset(r.ctr, 0, sizeof r.ctr);
    r.s = s;
    r.exec = exec;
    r.stats_cb = stats_cb;
    r.ctx = ctx;
    r.abort = false;
    r.status = DLU_OK;
    r.dispatched = r.completed = 0;
    const uint64_t t0 = now_cycles();
    try {
        ch.m_master->m_start_ev.notify(sc_core::SC_ZERO_TIME);
        sc_core::sc_start();
    } catch (const std::exception &ex) {
        return dlu__error(DLU_EINTERNAL, "dluhw_run: SystemC: %s", ex.what());
    }
    r.s = nullptr;
    if (r.abort)
        return r.status;
    const uint64_t t1 = now_cycles();

    dlu_sim_counters &k0 = r.ctr[s->cmd[0].phase];
    k0.cycles = t1 - t0;
    int crit = -1;
    for (int d = 0; d < (int)cfg.n_dpu; d++)
        if (r.dpu_last_end[(size_t)d] > 0 && (crit < 0 || r.dpu_last_end[(size_t)d] > r.dpu_last_end[(size_t)crit]))
            crit = d;
    static const std::vector<segment> none;
    stall_breakdown(crit >= 0 ? r.dpu_seg[(size_t)crit] : none, r.master_seg, t0, t1, k0);
    k0.energy_pj[DLU_SIM_E_STATIC] += cfg.p_static_mw * 1e-3 * ((double)k0.cycles / (cfg.clock_mhz * 1e6)) * 1e12;
    for (int p = 0; p < DLU_SIM_NPHASE; p++) {
        dlu_sim_counters &k = r.ctr[p];
        k.energy_pj[DLU_SIM_E_VEC] += (double)k.vec_ops * cfg.e_vec_op_pj;
        k.energy_pj[DLU_SIM_E_STATS] += (double)k.stats_elems * cfg.e_stats_elem_pj;
        k.energy_pj[DLU_SIM_E_RF] += (double)k.bytes_rf * cfg.e_rf_byte_pj;
        k.energy_pj[DLU_SIM_E_LMEM] += (double)k.bytes_lmem * cfg.e_lmem_byte_pj;
        k.energy_pj[DLU_SIM_E_NOC] += (double)k.bytes_noc * cfg.e_noc_byte_pj;
        k.energy_pj[DLU_SIM_E_HBM] += (double)(k.bytes_hbm_rd + k.bytes_hbm_wr) * cfg.e_hbm_byte_pj;
        dlu_sim_counters_add(&out[p], &k);
    }
    return DLU_OK;
}
