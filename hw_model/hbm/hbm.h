/* hbm.h -- the HBM as a TLM-2.0 target: channels, bursts, bandwidth and latency.
 *
 * A transfer is rounded up to whole bursts of hbm_burst_bytes; burst b (address /
 * burst bytes) lives in channel b % hbm_channels; each channel streams at
 * hbm_gbytes_per_s / hbm_channels and is reserved ("busy until") so that transfers from
 * several DPUs queue behind each other on a shared channel. The first data comes
 * hbm_latency_ns after the request arrives.
 *
 * It is a timing model only: it holds no data (values live in the verification executor's
 * tensors and move through the DPUs' local memories), and it does not model banks, rows,
 * refresh or read/write turnaround. */
#ifndef DLUHW_HBM_H
#define DLUHW_HBM_H

#include <tlm_utils/simple_target_socket.h>

#include "hw_model/common.h"

namespace dluhw {

class hbm : public sc_core::sc_module {
public:
    tlm_utils::simple_target_socket<hbm> m_socket;

    hbm(sc_core::sc_module_name name, const dlusim_hwcfg &cfg);

    void set_trace(trace_writer *t) { m_trace = t; }
    int channels() const { return (int)m_busy_until.size(); }
    /* Log every reservation to f (testbenches): simulated cycles and channels only. */
    void set_log(FILE *f) { m_log = f; }

private:
    void b_transport(tlm::tlm_generic_payload &tr, sc_core::sc_time &delay);

    std::vector<uint64_t> m_busy_until; /* per channel, absolute cycle */
    double m_ch_bytes_per_cycle;        /* 0 = unlimited */
    uint64_t m_latency_cycles;
    uint64_t m_burst_bytes;
    int m_n_dpu;
    trace_writer *m_trace = nullptr;
    FILE *m_log = nullptr;
};

} // namespace dluhw

#endif
