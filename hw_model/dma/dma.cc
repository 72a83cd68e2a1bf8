/* dma.cc -- the DMA engine (dma.h). */
#include "hw_model/dma/dma.h"

namespace dluhw {

dma::dma(sc_core::sc_module_name name, const dlusim_hwcfg &cfg, int dpu)
    : sc_core::sc_module(name), m_socket("socket"), m_dpu(dpu), m_setup_cycles((uint64_t)cfg.dma_setup_cycles)
{
}

void dma::transfer(const dlusim_cmd &c, uint32_t idx, xfer_result &r)
{
    const uint64_t t0 = now_cycles();
    m_ext = xfer_ext();
    m_ext.dpu = m_dpu;
    m_ext.cmd = idx;
    m_tr.set_command(c.kind == DLUSIM_CMD_STORE ? tlm::TLM_WRITE_COMMAND : tlm::TLM_READ_COMMAND);
    m_tr.set_address(c.hbm_addr);
    /* No data pointer: the HBM is a timing model and never dereferences it. */
    m_tr.set_data_ptr(nullptr);
    m_tr.set_data_length((unsigned int)c.nbytes);
    m_tr.set_streaming_width((unsigned int)c.nbytes);
    m_tr.set_byte_enable_ptr(nullptr);
    m_tr.set_dmi_allowed(false);
    m_tr.set_response_status(tlm::TLM_INCOMPLETE_RESPONSE);
    m_tr.set_extension(&m_ext);
    sc_core::sc_time delay = cycles_to_time(m_setup_cycles);
    m_socket->b_transport(m_tr, delay);
    m_tr.clear_extension(&m_ext);
    sc_assert(m_tr.get_response_status() == tlm::TLM_OK_RESPONSE);
    sc_core::wait(delay);
    r.t_start = t0;
    r.t_setup = t0 + m_setup_cycles;
    r.t_noc = m_ext.t_noc;
    r.t_data = m_ext.t_data;
    r.t_end = now_cycles();
    r.hbm_bound = m_ext.hbm_end >= m_ext.link_end;
    r.burst_bytes = m_ext.burst_bytes;
    r.channel_cycles = m_ext.channel_cycles;
    r.link_cycles = m_ext.link_cycles;
}

} // namespace dluhw
