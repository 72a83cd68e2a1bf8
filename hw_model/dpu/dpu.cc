/* dpu.cc -- the DPU (dpu.h): compute timing, the two in-order units and the scoreboard. */
#include "hw_model/dpu/dpu.h"

namespace dluhw {

static uint64_t ceil_div(uint64_t a, uint64_t b) { return b ? (a + b - 1) / b : 0; }

/* Accumulator width in the register files: int32 for 8-bit operands and fp32, int64 for
 * int16 (docs/numerics.md: int16 products overflow int32 after two). */
static uint64_t acc_bytes(int fmt_bits) { return fmt_bits == 16 ? 8 : 4; }
static uint64_t elem_bytes(int fmt_bits) { return fmt_bits >= 8 ? (uint64_t)fmt_bits / 8 : 1; }

static uint64_t vec_nelem(const dlusim_cmd &c)
{
    return c.kind == DLUSIM_CMD_REQUANT && c.m && c.n ? (uint64_t)c.m * c.n : c.nelem;
}

/* The scoreboard's table: for each DPU command, the earlier commands of its DPU it must
 * wait for. Units complete in order, so the last writer of each buffer it touches and,
 * for the buffer it writes, the last reader on each unit are enough. */
void build_deps(const dlusim_stream *s, int n_dpu, std::vector<cmd_state> &st)
{
    const uint32_t none = UINT32_MAX;
    std::vector<uint32_t> writer((size_t)n_dpu * DLUSIM_MAX_BUFS, none);
    std::vector<uint32_t> reader((size_t)n_dpu * DLUSIM_MAX_BUFS * 2, none);
    for (size_t i = 0; i < s->n; i++) {
        const dlusim_cmd &c = s->cmd[i];
        cmd_state &cs = st[i];
        if (c.kind == DLUSIM_CMD_STATS || c.kind == DLUSIM_CMD_BARRIER)
            continue;
        const size_t base = (size_t)c.dpu * DLUSIM_MAX_BUFS;
        const int unit = c.kind == DLUSIM_CMD_LOAD || c.kind == DLUSIM_CMD_STORE ? 0 : 1;
        auto add = [&cs](uint32_t d) {
            if (d == UINT32_MAX)
                return;
            for (int j = 0; j < cs.ndep; j++)
                if (cs.dep[j] == d)
                    return;
            cs.dep[cs.ndep++] = d;
        };
        for (int r = 0; r < 2; r++)
            if (c.rd[r] != DLUSIM_NOBUF)
                add(writer[base + c.rd[r]]); /* RAW */
        if (c.wr != DLUSIM_NOBUF) {
            add(writer[base + c.wr]);                 /* WAW */
            add(reader[(base + c.wr) * 2 + 0]);       /* WAR */
            add(reader[(base + c.wr) * 2 + 1]);
        }
        for (int r = 0; r < 2; r++)
            if (c.rd[r] != DLUSIM_NOBUF)
                reader[(base + c.rd[r]) * 2 + unit] = (uint32_t)i;
        if (c.wr != DLUSIM_NOBUF)
            writer[base + c.wr] = (uint32_t)i;
    }
}

compute_cost compute_cycles(const dlusim_hwcfg &cfg, const dlusim_cmd &c)
{
    if (c.kind == DLUSIM_CMD_MAC) {
        const uint64_t macs = (uint64_t)dlusim_hwcfg_macs_per_lane(&cfg, c.fmt_bits);
        const uint64_t body = ceil_div(c.m, (uint64_t)cfg.dpe_per_dpu) * ceil_div(c.n, (uint64_t)cfg.lanes_per_dpe) *
                              ceil_div(c.k, macs);
        return {(uint64_t)cfg.mac_fill_cycles + body, (uint64_t)cfg.mac_fill_cycles};
    }
    const uint64_t ops = c.ops_per_elem ? c.ops_per_elem : 1;
    const uint64_t width = (uint64_t)(cfg.dpe_per_dpu * cfg.lanes_per_dpe * cfg.vec_ops_per_lane);
    return {(uint64_t)cfg.vec_fill_cycles + ceil_div(vec_nelem(c) * ops, width), (uint64_t)cfg.vec_fill_cycles};
}

dpu::dpu(sc_core::sc_module_name name, const dlusim_hwcfg &cfg, int index, dma &engine, run_ctx &run)
    : sc_core::sc_module(name), m_cfg(cfg), m_index(index), m_dma(engine), m_run(run)
{
    SC_THREAD(dma_thread);
    SC_THREAD(dpe_thread);
}

void dpu::push(uint32_t idx)
{
    const dlusim_cmd &c = m_run.s->cmd[idx];
    if (c.kind == DLUSIM_CMD_LOAD || c.kind == DLUSIM_CMD_STORE) {
        m_dmaq.push_back(idx);
        m_dmaq_ev.notify(sc_core::SC_ZERO_TIME);
    } else {
        m_dpeq.push_back(idx);
        m_dpeq_ev.notify(sc_core::SC_ZERO_TIME);
    }
}

void dpu::ensure_data()
{
    if (!m_lmem.empty())
        return;
    m_lmem.assign((size_t)m_cfg.local_mem_kib * 1024, 0);
    m_rf.assign((size_t)(m_cfg.dpe_per_dpu * m_cfg.regfile_kib) * 1024, 0);
    m_stats.resize((size_t)m_cfg.dpe_per_dpu);
    clear_stats();
}

void dpu::aggregate_stats(dlu_stats &agg) const
{
    for (const dlu_stats &s : m_stats)
        dlu_stats_merge(&agg, &s);
}

void dpu::clear_stats()
{
    for (dlu_stats &s : m_stats)
        dlu_stats_clear(&s);
}

bool dpu::deps_done(uint32_t idx) const
{
    const cmd_state &s = m_run.st[idx];
    for (int i = 0; i < s.ndep; i++)
        if (!m_run.st[s.dep[i]].done)
            return false;
    return true;
}

void dpu::seg(uint64_t t0, uint64_t t1, int cls)
{
    if (t1 > t0)
        m_run.dpu_seg[(size_t)m_index].push_back({t0, t1, cls});
}

/* A command the run no longer executes (a callback failed): mark it done so nothing
 * waits for it, without time or counters. */
void dpu::skip(uint32_t idx)
{
    m_run.st[idx].done = true;
    m_run.completed++;
    m_done_ev.notify(sc_core::SC_ZERO_TIME);
    m_run.any_done.notify(sc_core::SC_ZERO_TIME);
}

void dpu::finish(uint32_t idx, uint64_t t0, uint64_t t1)
{
    const dlusim_cmd &c = m_run.s->cmd[idx];
    if (m_run.exec && !m_run.abort) {
        const dlu_status st = m_run.exec(m_run.ctx, &c, m_lmem.data(), m_rf.data(), m_stats.data());
        if (st != DLU_OK) {
            m_run.abort = true;
            m_run.status = st;
        }
    }
    if (m_log)
        std::fprintf(m_log, "%llu dpu%d %s #%u start %llu\n", (unsigned long long)t1, m_index,
                     dlusim_cmd_kind_name((dlusim_cmd_kind)c.kind), idx, (unsigned long long)t0);
    if (m_run.trace)
        m_run.trace->complete(c.kind <= DLUSIM_CMD_STORE ? tid_dma(m_index) : tid_dpe(m_index),
                              dlusim_cmd_kind_name((dlusim_cmd_kind)c.kind), t0, t1, idx, c.layer);
    m_run.st[idx].end = t1;
    m_run.st[idx].done = true;
    m_run.completed++;
    uint64_t &last = m_run.dpu_last_end[(size_t)m_index];
    if (t1 > last)
        last = t1;
    m_done_ev.notify(sc_core::SC_ZERO_TIME);
    m_run.any_done.notify(sc_core::SC_ZERO_TIME);
}

/* The next command of one unit's queue once its dependencies are done, in stream order;
 * false when the run was aborted (the command is skipped). */
bool dpu::next_ready(std::deque<uint32_t> &q, sc_core::sc_event &ev, uint32_t &idx)
{
    while (q.empty())
        sc_core::wait(ev);
    idx = q.front();
    q.pop_front();
    while (!m_run.abort && !deps_done(idx))
        sc_core::wait(m_done_ev);
    if (m_run.abort) {
        skip(idx);
        return false;
    }
    return true;
}

void dpu::dma_thread()
{
    for (;;) {
        uint32_t idx;
        if (!next_ready(m_dmaq, m_dmaq_ev, idx))
            continue;
        const dlusim_cmd &c = m_run.s->cmd[idx];
        xfer_result r;
        m_dma.transfer(c, idx, r);
        seg(r.t_start, r.t_setup, SEG_DMA_SETUP);
        seg(r.t_setup, r.t_noc, SEG_NETWORK);
        seg(r.t_noc, r.t_data, SEG_MEMORY);
        seg(r.t_data, r.t_end, r.hbm_bound ? SEG_MEMORY : SEG_NETWORK);
        dlu_sim_counters &k = m_run.ctr[c.phase];
        k.busy_dma += r.t_end - r.t_start;
        k.busy_noc += r.link_cycles;
        k.busy_hbm += r.channel_cycles;
        k.bytes_noc += c.nbytes;
        k.bytes_lmem += c.nbytes; /* LOAD writes, STORE reads the local memory */
        if (c.kind == DLUSIM_CMD_LOAD)
            k.bytes_hbm_rd += r.burst_bytes;
        else
            k.bytes_hbm_wr += r.burst_bytes;
        k.commands++;
        finish(idx, r.t_start, r.t_end);
    }
}

void dpu::dpe_thread()
{
    for (;;) {
        uint32_t idx;
        if (!next_ready(m_dpeq, m_dpeq_ev, idx))
            continue;
        const dlusim_cmd &c = m_run.s->cmd[idx];
        const compute_cost cost = compute_cycles(m_cfg, c);
        const uint64_t t0 = now_cycles();
        sc_core::wait(cycles_to_time(cost.cycles));
        const uint64_t t1 = t0 + cost.cycles;
        seg(t0, t0 + cost.fill, SEG_FILL);
        seg(t0 + cost.fill, t1, SEG_COMPUTE);
        dlu_sim_counters &k = m_run.ctr[c.phase];
        if (c.kind == DLUSIM_CMD_MAC) {
            const uint64_t mn = (uint64_t)c.m * c.n;
            k.busy_mac += cost.cycles;
            k.macs += mn * c.k;
            k.energy_pj[DLU_SIM_E_MAC] += (double)(mn * c.k) * (c.fmt_bits >= 32   ? m_cfg.e_mac_fp32_pj
                                                                 : c.fmt_bits >= 16 ? m_cfg.e_mac_int16_pj
                                                                                    : m_cfg.e_mac_int8_pj);
            k.mac_slots += (cost.cycles - cost.fill) * (uint64_t)(m_cfg.dpe_per_dpu * m_cfg.lanes_per_dpe) *
                           (uint64_t)dlusim_hwcfg_macs_per_lane(&m_cfg, c.fmt_bits);
            /* accumulators: read unless initialised, written once; operands read once */
            k.bytes_rf += mn * acc_bytes(c.fmt_bits) * ((c.flags & DLUSIM_F_ACC_INIT) ? 1 : 2);
            k.bytes_lmem += ((uint64_t)c.m + c.n) * c.k * elem_bytes(c.fmt_bits);
        } else {
            const uint64_t nelem = vec_nelem(c);
            k.busy_vec += cost.cycles;
            k.vec_ops += nelem * (c.ops_per_elem ? c.ops_per_elem : 1);
            if (c.flags & DLUSIM_F_STATS)
                k.stats_elems += nelem;
            if (c.kind == DLUSIM_CMD_REQUANT) {
                k.bytes_rf += nelem * acc_bytes(c.fmt_bits);
                if (!(c.flags & DLUSIM_F_CALIB))
                    k.bytes_lmem += nelem * elem_bytes(c.fmt_bits);
            }
        }
        k.commands++;
        finish(idx, t0, t1);
    }
}

} // namespace dluhw
