/* master.cc -- the master core (master.h). */
#include "hw_model/master/master.h"

#include <utility>

namespace dluhw {

master::master(sc_core::sc_module_name name, const dlusim_hwcfg &cfg, std::vector<dpu *> dpus, noc &net,
               run_ctx &run)
    : sc_core::sc_module(name), m_cfg(cfg), m_dpus(std::move(dpus)), m_noc(net), m_run(run)
{
    SC_THREAD(dispatch_thread);
}

void master::dispatch_thread()
{
    for (;;) {
        sc_core::wait(m_start_ev);
        const dlusim_stream &s = *m_run.s;
        for (uint32_t i = 0; i < (uint32_t)s.n && !m_run.abort; i++) {
            const dlusim_cmd &c = s.cmd[i];
            if (c.kind != DLUSIM_CMD_STATS && c.kind != DLUSIM_CMD_BARRIER) {
                m_run.dispatched++;
                m_dpus[c.dpu]->push(i);
                continue;
            }
            while (!m_run.abort && m_run.completed < m_run.dispatched)
                sc_core::wait(m_run.any_done);
            if (m_run.abort)
                break;
            const uint64_t t0 = now_cycles();
            if (c.kind == DLUSIM_CMD_STATS)
                stats(i);
            const uint64_t t1 = now_cycles();
            if (m_log)
                std::fprintf(m_log, "%llu master %s #%u start %llu\n", (unsigned long long)t1,
                             dlusim_cmd_kind_name((dlusim_cmd_kind)c.kind), i, (unsigned long long)t0);
            if (m_run.trace)
                m_run.trace->complete(0, dlusim_cmd_kind_name((dlusim_cmd_kind)c.kind), t0, t1, i, c.layer);
            if (t1 > t0)
                m_run.master_seg.push_back({t0, t1, SEG_STATS});
            m_run.st[i].end = t1;
            m_run.st[i].done = true;
            m_run.ctr[c.phase].commands++;
        }
    }
}

void master::stats(uint32_t idx)
{
    const dlusim_cmd &c = m_run.s->cmd[idx];
    sc_core::wait(cycles_to_time((uint64_t)m_cfg.stats_agg_cycles));
    uint64_t link_cycles = 0;
    const uint64_t t_gathered = m_noc.gather(now_cycles(), hist_bytes, &link_cycles);
    sc_core::wait(cycles_to_time(t_gathered - now_cycles() + (uint64_t)m_cfg.stats_decide_cycles));
    dlu_sim_counters &k = m_run.ctr[c.phase];
    k.stats_reads += (uint64_t)(m_cfg.n_dpu * m_cfg.dpe_per_dpu); /* one counter set per DPE */
    k.bytes_noc += hist_bytes * (uint64_t)m_cfg.n_dpu;
    k.busy_noc += link_cycles;
    if (!m_run.data)
        return;
    dlu_stats agg;
    dlu_stats_clear(&agg);
    for (dpu *d : m_dpus)
        d->aggregate_stats(agg);
    if (m_run.stats_cb && !m_run.abort) {
        const dlu_status st = m_run.stats_cb(m_run.ctx, &c, &agg);
        if (st != DLU_OK) {
            m_run.abort = true;
            m_run.status = st;
        }
    }
    for (dpu *d : m_dpus)
        d->clear_stats();
}

} // namespace dluhw
