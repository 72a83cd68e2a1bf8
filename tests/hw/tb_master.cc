/* tb_master.cc -- testbench of the master core: dispatch to two DPUs, a BARRIER that
 * waits for the slower DPU, and a STATS command (aggregation, gather over the network,
 * decision) after which the next commands start; in verification mode, with a stats
 * callback that prints the aggregated element count. Prints completions in cycles. */
#include <memory>
#include <string>

#include "hw_model/dma/dma.h"
#include "hw_model/dpu/dpu.h"
#include "hw_model/hbm/hbm.h"
#include "hw_model/master/master.h"
#include "hw_model/noc/noc.h"
#include "tests/hw/tb_common.h"

static dlu_status on_exec(void *, const dlusim_cmd *c, uint8_t *, uint8_t *, dlu_stats *dpe_stats)
{
    if (c->kind == DLUSIM_CMD_VEC && (c->flags & DLUSIM_F_STATS))
        dpe_stats[0].count += c->nelem;
    return DLU_OK;
}

static dlu_status on_stats(void *, const dlusim_cmd *, const dlu_stats *agg)
{
    std::printf("%llu stats callback: %llu elements\n", (unsigned long long)dluhw::now_cycles(),
                (unsigned long long)agg->count);
    return DLU_OK;
}

int sc_main(int, char *[])
{
    const dlusim_hwcfg c = tb::cfg();
    dlusim_stream s;
    dlusim_stream_init(&s);
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 0, 1024);
    dlusim_cmd v = tb::cmd(DLUSIM_CMD_VEC, 0);
    v.nelem = 1600; /* 4 + 1600/16 = 104 cycles */
    v.flags = DLUSIM_F_STATS;
    dlusim_stream_push(&s, &v);
    v.dpu = 1;
    v.nelem = 3200; /* 204 cycles */
    dlusim_stream_push(&s, &v);
    dlusim_cmd b = tb::cmd(DLUSIM_CMD_BARRIER, 0);
    dlusim_stream_push(&s, &b);
    dlusim_cmd l = tb::load(0, 0, 1024, 0);
    dlusim_stream_push(&s, &l);
    v.dpu = 0;
    v.nelem = 160;
    dlusim_stream_push(&s, &v);
    dlusim_cmd st = tb::cmd(DLUSIM_CMD_STATS, 0);
    st.phase = DLU_SIM_STATS;
    dlusim_stream_push(&s, &st);
    v.dpu = 1;
    v.nelem = 16;
    v.flags = 0;
    dlusim_stream_push(&s, &v);

    dluhw::run_ctx run;
    tb::prepare(run, c, s);
    run.exec = on_exec;
    run.stats_cb = on_stats;
    run.data = true;
    dluhw::hbm mem("hbm", c);
    dluhw::noc net("noc", c);
    net.m_hbm_socket.bind(mem.m_socket);
    std::vector<std::unique_ptr<dluhw::dma>> dmas;
    std::vector<std::unique_ptr<dluhw::dpu>> dpus;
    std::vector<dluhw::dpu *> raw;
    for (int d = 0; d < 2; d++) {
        dmas.emplace_back(new dluhw::dma(("dma" + std::to_string(d)).c_str(), c, d));
        dmas.back()->m_socket.bind(net.m_dpu_socket);
        dpus.emplace_back(new dluhw::dpu(("dpu" + std::to_string(d)).c_str(), c, d, *dmas.back(), run));
        dpus.back()->ensure_data();
        dpus.back()->set_log(stdout);
        raw.push_back(dpus.back().get());
    }
    dluhw::master m("master", c, raw, net, run);
    m.set_log(stdout);
    sc_core::sc_start(sc_core::SC_ZERO_TIME); /* elaborate: the dispatcher waits for its start event */
    m.m_start_ev.notify(sc_core::SC_ZERO_TIME);
    sc_core::sc_start();
    std::printf("%llu end: stats reads %llu, stats noc bytes %llu\n", (unsigned long long)dluhw::now_cycles(),
                (unsigned long long)run.ctr[DLU_SIM_STATS].stats_reads,
                (unsigned long long)run.ctr[DLU_SIM_STATS].bytes_noc);
    dlusim_stream_free(&s);
    return 0;
}
