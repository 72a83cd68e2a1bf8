/* tb_dma.cc -- testbench of the DMA engines: two engines (DPU 0 and 1) transfer through
 * the network to the HBM, concurrently, and the results break each transfer into setup,
 * traversal, HBM latency and streaming, with what bounded the streaming. */
#include "hw_model/dma/dma.h"
#include "hw_model/hbm/hbm.h"
#include "hw_model/noc/noc.h"
#include "tests/hw/tb_common.h"

struct user : sc_core::sc_module {
    SC_HAS_PROCESS(user);
    dluhw::dma &m_dma;
    int m_id;
    user(sc_core::sc_module_name n, dluhw::dma &d, int id) : sc_core::sc_module(n), m_dma(d), m_id(id)
    {
        SC_THREAD(run_thread);
    }
    void one(int kind, uint64_t nbytes, uint64_t addr, uint32_t idx)
    {
        dlusim_cmd c = tb::cmd(kind, m_id);
        c.nbytes = nbytes;
        c.hbm_addr = addr;
        dluhw::xfer_result r;
        m_dma.transfer(c, idx, r);
        std::printf("%llu dma%d %s %llu bytes: start %llu setup %llu noc %llu data %llu end %llu, %s-bound, %llu "
                    "burst bytes, %llu link cycles\n",
                    (unsigned long long)dluhw::now_cycles(), m_id, kind == DLUSIM_CMD_LOAD ? "load" : "store",
                    (unsigned long long)nbytes, (unsigned long long)r.t_start, (unsigned long long)r.t_setup,
                    (unsigned long long)r.t_noc, (unsigned long long)r.t_data, (unsigned long long)r.t_end,
                    r.hbm_bound ? "hbm" : "link", (unsigned long long)r.burst_bytes,
                    (unsigned long long)r.link_cycles);
    }
    void run_thread()
    {
        one(DLUSIM_CMD_LOAD, 2048, (uint64_t)m_id * 65536, 0);
        one(DLUSIM_CMD_STORE, 130, 7, 1); /* unaligned: 3 bursts */
        one(DLUSIM_CMD_LOAD, 0, 0, 2);    /* empty: setup and latencies only */
    }
};

int sc_main(int, char *[])
{
    dlusim_hwcfg c = tb::cfg();
    c.noc_link_bytes_per_cycle = 8; /* both engines link-bound; their bursts share the HBM channels */
    dluhw::hbm mem("hbm", c);
    dluhw::noc net("noc", c);
    dluhw::dma d0("dma0", c, 0), d1("dma1", c, 1);
    d0.m_socket.bind(net.m_dpu_socket);
    d1.m_socket.bind(net.m_dpu_socket);
    net.m_hbm_socket.bind(mem.m_socket);
    user u0("u0", d0, 0), u1("u1", d1, 1);
    sc_core::sc_start();
    std::printf("%llu end\n", (unsigned long long)dluhw::now_cycles());
    return 0;
}
