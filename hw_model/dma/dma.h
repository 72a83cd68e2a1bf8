/* dma.h -- one DMA engine (one per DPU): a TLM-2.0 initiator that moves a LOAD or STORE
 * between the DPU's local memory and the HBM through the on-chip network.
 *
 * Loosely timed: a transfer is one b_transport call whose annotated delay starts with
 * dma_setup_cycles (descriptor setup) and comes back as the time the last byte is in;
 * the engine then waits that long, so one transfer is one wait(). The calling thread (the
 * DPU's DMA queue) runs the engine's code: the engine has no process of its own.
 *
 * Not here: which transfer runs when (the DPU's scoreboard) or the data itself (the
 * verification executor copies values when the command completes). */
#ifndef DLUHW_DMA_H
#define DLUHW_DMA_H

#include <tlm_utils/simple_initiator_socket.h>

#include "hw_model/common.h"

namespace dluhw {

/* Absolute cycles of one finished transfer: [t_start, t_setup) descriptor setup,
 * [t_setup, t_noc) network traversal, [t_noc, t_data) HBM latency, [t_data, t_end)
 * streaming (queueing behind other transfers included), bounded by the HBM when
 * hbm_bound, by the DPU's link otherwise. */
struct xfer_result {
    uint64_t t_start, t_setup, t_noc, t_data, t_end;
    bool hbm_bound;
    uint64_t burst_bytes, channel_cycles, link_cycles;
};

class dma : public sc_core::sc_module {
public:
    tlm_utils::simple_initiator_socket<dma> m_socket;

    dma(sc_core::sc_module_name name, const dlusim_hwcfg &cfg, int dpu);

    /* Call from a SystemC thread: moves c.nbytes at c.hbm_addr, returns when done. */
    void transfer(const dlusim_cmd &c, uint32_t idx, xfer_result &r);

private:
    int m_dpu;
    uint64_t m_setup_cycles;
    tlm::tlm_generic_payload m_tr;
    xfer_ext m_ext;
};

} // namespace dluhw

#endif
