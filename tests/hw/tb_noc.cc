/* tb_noc.cc -- testbench of the on-chip network: two DMA requesters on their own links to
 * the HBM. A 4 KiB load from DPU 0 is link-bound (32 B/cycle against 64 B/cycle of HBM),
 * two back-to-back loads on DPU 1 queue on its link, and a statistics gather follows. */
#include <tlm_utils/simple_initiator_socket.h>

#include "hw_model/hbm/hbm.h"
#include "hw_model/noc/noc.h"
#include "tests/hw/tb_common.h"

struct requester : sc_core::sc_module {
    SC_HAS_PROCESS(requester);
    tlm_utils::simple_initiator_socket<requester> m_socket;
    int m_id;
    requester(sc_core::sc_module_name n, int id) : sc_core::sc_module(n), m_socket("socket"), m_id(id)
    {
        SC_THREAD(run_thread);
    }
    void xfer(uint64_t addr, unsigned nbytes)
    {
        tlm::tlm_generic_payload tr;
        dluhw::xfer_ext x;
        x.dpu = m_id;
        tr.set_command(tlm::TLM_READ_COMMAND);
        tr.set_address(addr);
        tr.set_data_length(nbytes);
        tr.set_extension(&x);
        sc_core::sc_time delay = sc_core::SC_ZERO_TIME;
        m_socket->b_transport(tr, delay);
        tr.clear_extension(&x);
        std::printf("%llu tb dpu%d read %u: crossed %llu, first data %llu, hbm done %llu, link done %llu, done %llu\n",
                    (unsigned long long)dluhw::now_cycles(), m_id, nbytes, (unsigned long long)x.t_noc,
                    (unsigned long long)x.t_data, (unsigned long long)x.hbm_end, (unsigned long long)x.link_end,
                    (unsigned long long)dluhw::now_cycles() + dluhw::time_to_cycles(delay));
    }
    void run_thread()
    {
        if (m_id == 0) {
            xfer(0, 4096);
        } else {
            xfer(1 << 20, 1024);
            xfer((1 << 20) + 1024, 1024);
        }
    }
};

struct stats_driver : sc_core::sc_module {
    SC_HAS_PROCESS(stats_driver);
    dluhw::noc &m_net;
    stats_driver(sc_core::sc_module_name n, dluhw::noc &net) : sc_core::sc_module(n), m_net(net)
    {
        SC_THREAD(run_thread);
    }
    void run_thread()
    {
        sc_core::wait(dluhw::cycles_to_time(50));
        uint64_t link_cycles = 0;
        const uint64_t t = m_net.gather(dluhw::now_cycles(), sizeof(dlu_stats), &link_cycles);
        std::printf("%llu tb gather of %zu bytes per DPU arrives %llu, %llu link cycles\n",
                    (unsigned long long)dluhw::now_cycles(), sizeof(dlu_stats), (unsigned long long)t,
                    (unsigned long long)link_cycles);
    }
};

int sc_main(int, char *[])
{
    const dlusim_hwcfg c = tb::cfg();
    dluhw::hbm mem("hbm", c);
    dluhw::noc net("noc", c);
    requester r0("r0", 0), r1("r1", 1);
    stats_driver sd("stats", net);
    r0.m_socket.bind(net.m_dpu_socket);
    r1.m_socket.bind(net.m_dpu_socket);
    net.m_hbm_socket.bind(mem.m_socket);
    net.set_log(stdout);
    sc_core::sc_start();
    std::printf("%llu end\n", (unsigned long long)dluhw::now_cycles());
    return 0;
}
