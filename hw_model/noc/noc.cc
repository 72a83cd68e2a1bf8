/* noc.cc -- the on-chip network (noc.h): link reservations and the route to the HBM. */
#include "hw_model/noc/noc.h"

#include <algorithm>

namespace dluhw {

noc::noc(sc_core::sc_module_name name, const dlusim_hwcfg &cfg)
    : sc_core::sc_module(name), m_dpu_socket("dpu_socket"), m_hbm_socket("hbm_socket"),
      m_busy_until((size_t)cfg.n_dpu, 0), m_link_bytes_per_cycle((double)cfg.noc_link_bytes_per_cycle),
      m_latency_cycles((uint64_t)cfg.noc_latency_cycles), m_n_ch((int)cfg.hbm_channels)
{
    m_dpu_socket.register_b_transport(this, &noc::b_transport);
}

void noc::b_transport(int id, tlm::tlm_generic_payload &tr, sc_core::sc_time &delay)
{
    xfer_ext *x = nullptr;
    tr.get_extension(x);
    sc_assert(x != nullptr && id >= 0 && id < (int)m_busy_until.size());
    delay += cycles_to_time(m_latency_cycles);
    x->t_noc = time_to_cycles(sc_core::sc_time_stamp() + delay);
    m_hbm_socket->b_transport(tr, delay);
    if (tr.get_response_status() != tlm::TLM_OK_RESPONSE)
        return;
    /* The link streams from the first data on, concurrently with the HBM channels. */
    const uint64_t dur = stream_cycles(tr.get_data_length(), m_link_bytes_per_cycle);
    const uint64_t start = std::max(x->t_data, m_busy_until[(size_t)id]);
    if (dur > 0) {
        m_busy_until[(size_t)id] = start + dur;
        if (m_trace)
            m_trace->complete(tid_link((int)m_busy_until.size(), m_n_ch, id), tr.is_read() ? "read" : "write", start,
                              start + dur, x->cmd, 0);
    }
    x->link_end = start + dur;
    x->link_cycles = dur;
    const uint64_t end = std::max(x->hbm_end, x->link_end);
    if (m_log)
        std::fprintf(m_log, "%llu noc link%d %llu bytes link %llu..%llu hbm_end %llu end %llu\n",
                     (unsigned long long)x->t_noc, id, (unsigned long long)tr.get_data_length(),
                     (unsigned long long)start, (unsigned long long)(start + dur), (unsigned long long)x->hbm_end,
                     (unsigned long long)end);
    delay = cycles_to_time(end) - sc_core::sc_time_stamp();
}

uint64_t noc::gather(uint64_t t, uint64_t nbytes, uint64_t *link_cycles)
{
    const uint64_t dur = stream_cycles(nbytes, m_link_bytes_per_cycle);
    uint64_t last = t;
    for (size_t d = 0; d < m_busy_until.size(); d++) {
        const uint64_t start = std::max(t, m_busy_until[d]);
        if (dur > 0)
            m_busy_until[d] = start + dur;
        last = std::max(last, start + dur + m_latency_cycles);
        if (m_log)
            std::fprintf(m_log, "%llu noc link%zu gather %llu bytes arrives %llu\n", (unsigned long long)t, d,
                         (unsigned long long)nbytes, (unsigned long long)(start + dur + m_latency_cycles));
    }
    *link_cycles = dur * m_busy_until.size();
    return last;
}

} // namespace dluhw
