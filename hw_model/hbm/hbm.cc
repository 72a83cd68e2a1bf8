/* hbm.cc -- the HBM target (hbm.h): burst rounding, channel interleaving, reservations. */
#include "hw_model/hbm/hbm.h"

#include <algorithm>

namespace dluhw {

hbm::hbm(sc_core::sc_module_name name, const dlusim_hwcfg &cfg)
    : sc_core::sc_module(name), m_socket("socket"), m_busy_until((size_t)cfg.hbm_channels, 0),
      m_ch_bytes_per_cycle(dlusim_hwcfg_hbm_bytes_per_cycle(&cfg) / (double)cfg.hbm_channels),
      m_latency_cycles(dlusim_hwcfg_hbm_latency_cycles(&cfg)), m_burst_bytes((uint64_t)cfg.hbm_burst_bytes),
      m_n_dpu((int)cfg.n_dpu)
{
    m_socket.register_b_transport(this, &hbm::b_transport);
}

void hbm::b_transport(tlm::tlm_generic_payload &tr, sc_core::sc_time &delay)
{
    xfer_ext *x = nullptr;
    tr.get_extension(x);
    sc_assert(x != nullptr);
    const uint64_t t_arrive = time_to_cycles(sc_core::sc_time_stamp() + delay);
    const uint64_t t_data = t_arrive + m_latency_cycles;
    const uint64_t addr = tr.get_address(), nbytes = tr.get_data_length();
    const uint64_t nch = m_busy_until.size();
    uint64_t end = t_data, nburst = 0, ch_cycles = 0;
    if (nbytes > 0) {
        const uint64_t first = addr / m_burst_bytes, last = (addr + nbytes - 1) / m_burst_bytes;
        nburst = last - first + 1;
        for (uint64_t c = 0; c < nch && c < nburst; c++) {
            /* bursts first..last that fall in channel (first + c) % nch */
            const uint64_t ch = (first + c) % nch;
            const uint64_t n = nburst / nch + (c < nburst % nch ? 1 : 0);
            const uint64_t dur = stream_cycles(n * m_burst_bytes, m_ch_bytes_per_cycle);
            const uint64_t start = std::max(t_data, m_busy_until[ch]);
            if (dur > 0) {
                m_busy_until[ch] = start + dur;
                if (m_trace)
                    m_trace->complete(tid_hbm(m_n_dpu, (int)ch), tr.is_read() ? "read" : "write", start, start + dur,
                                      x->cmd, 0);
                if (m_log)
                    std::fprintf(m_log, "%llu hbm ch%llu %s dpu%d bursts %llu busy %llu..%llu\n",
                                 (unsigned long long)t_arrive, (unsigned long long)ch, tr.is_read() ? "read" : "write",
                                 x->dpu, (unsigned long long)n, (unsigned long long)start,
                                 (unsigned long long)(start + dur));
            }
            end = std::max(end, start + dur);
            ch_cycles += dur;
        }
    }
    x->t_data = t_data;
    x->hbm_end = end;
    x->burst_bytes = nburst * m_burst_bytes;
    x->channel_cycles = ch_cycles;
    /* Loosely timed: the whole transfer is one call; the delay says when it is done. */
    delay = cycles_to_time(end) - sc_core::sc_time_stamp();
    tr.set_response_status(tlm::TLM_OK_RESPONSE);
}

} // namespace dluhw
