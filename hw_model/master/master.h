/* master.h -- the master core: dispatches a command stream to the DPUs and executes the
 * master commands itself.
 *
 * DPU commands are handed to their DPU's units in stream order at once (the units and the
 * scoreboard decide when they run). A master command waits until every command dispatched
 * before it has completed, and nothing after it is dispatched until it has completed:
 * BARRIER costs nothing more; STATS costs stats_agg_cycles (every DPU sums its DPEs'
 * histogram counters, in parallel), then a gather of one histogram per DPU over the
 * network to the master (each DPU's link reserved, plus the traversal latency), then
 * stats_decide_cycles (the point-position decision). It then hands the sum of all
 * counters to the stats callback and clears them.
 *
 * Not here: the scaling policy itself (the callback's business), per-DPU timing (dpu/). */
#ifndef DLUHW_MASTER_H
#define DLUHW_MASTER_H

#include "hw_model/common.h"
#include "hw_model/dpu/dpu.h"
#include "hw_model/noc/noc.h"

namespace dluhw {

class master : public sc_core::sc_module {
public:
    SC_HAS_PROCESS(master);
    master(sc_core::sc_module_name name, const dlusim_hwcfg &cfg, std::vector<dpu *> dpus, noc &net, run_ctx &run);

    /* Start dispatching m_run's stream (notified from outside the simulation, before sc_start). */
    sc_core::sc_event m_start_ev;

    /* Bytes one DPU sends in the statistics gather: one histogram with its counts. */
    static constexpr uint64_t hist_bytes = sizeof(dlu_stats);

    void set_log(FILE *f) { m_log = f; }

private:
    void dispatch_thread();
    void stats(uint32_t idx);

    const dlusim_hwcfg &m_cfg;
    std::vector<dpu *> m_dpus;
    noc &m_noc;
    run_ctx &m_run;
    FILE *m_log = nullptr;
};

} // namespace dluhw

#endif
