/* noc.h -- the on-chip network: one link per DPU between its DMA engine and the rest of
 * the chip, a fixed traversal latency, and the route from every DMA engine to the HBM.
 *
 * A DMA transfer pays noc_latency_cycles once (the request crossing the network) and
 * streams its bytes over its DPU's link at noc_link_bytes_per_cycle while the HBM streams
 * its bursts: the two are pipelined, so the transfer ends when the slower of the two is
 * done. Each link is reserved ("busy until"), so it also serves the master's statistics
 * gather, which sends one histogram per DPU.
 *
 * Not modelled: routers, hops, topology, flits, or contention between links other than
 * at the HBM channels (a crossbar with one port per DPU). */
#ifndef DLUHW_NOC_H
#define DLUHW_NOC_H

#include <tlm_utils/multi_passthrough_target_socket.h>
#include <tlm_utils/simple_initiator_socket.h>

#include "hw_model/common.h"

namespace dluhw {

class noc : public sc_core::sc_module {
public:
    tlm_utils::multi_passthrough_target_socket<noc> m_dpu_socket; /* bind DMA engines in DPU order */
    tlm_utils::simple_initiator_socket<noc> m_hbm_socket;

    noc(sc_core::sc_module_name name, const dlusim_hwcfg &cfg);

    /* Every DPU sends nbytes to the master, starting at cycle t (no earlier than its link is
     * free). Returns the cycle the last one arrives; *link_cycles gets the link cycles used. */
    uint64_t gather(uint64_t t, uint64_t nbytes, uint64_t *link_cycles);

    void set_trace(trace_writer *t) { m_trace = t; }
    void set_log(FILE *f) { m_log = f; }

private:
    void b_transport(int id, tlm::tlm_generic_payload &tr, sc_core::sc_time &delay);

    std::vector<uint64_t> m_busy_until; /* per link, absolute cycle */
    double m_link_bytes_per_cycle;      /* 0 = unlimited */
    uint64_t m_latency_cycles;
    int m_n_ch;
    trace_writer *m_trace = nullptr;
    FILE *m_log = nullptr;
};

} // namespace dluhw

#endif
