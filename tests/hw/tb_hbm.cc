/* tb_hbm.cc -- testbench of the HBM target: burst rounding, channel interleaving and
 * reservations. An initiator issues, at chosen cycles, an aligned 1 KiB read (spread over
 * all 4 channels), an unaligned 100-byte write (two bursts), and two reads from two
 * requesters at the same cycle on the same channels (the second queues). Prints cycles. */
#include <tlm_utils/simple_initiator_socket.h>

#include "hw_model/hbm/hbm.h"
#include "tests/hw/tb_common.h"

struct driver : sc_core::sc_module {
    SC_HAS_PROCESS(driver);
    tlm_utils::simple_initiator_socket<driver> m_socket;
    explicit driver(sc_core::sc_module_name n) : sc_core::sc_module(n), m_socket("socket") { SC_THREAD(run_thread); }

    void xfer(int who, bool write, uint64_t addr, unsigned nbytes)
    {
        tlm::tlm_generic_payload tr;
        dluhw::xfer_ext x;
        x.dpu = who;
        tr.set_command(write ? tlm::TLM_WRITE_COMMAND : tlm::TLM_READ_COMMAND);
        tr.set_address(addr);
        tr.set_data_length(nbytes);
        tr.set_extension(&x);
        sc_core::sc_time delay = sc_core::SC_ZERO_TIME;
        m_socket->b_transport(tr, delay);
        tr.clear_extension(&x);
        std::printf("%llu tb %s %u bytes at %llu from %d: first data %llu, done %llu, %llu burst bytes, %llu "
                    "channel cycles\n",
                    (unsigned long long)dluhw::now_cycles(), write ? "write" : "read", nbytes,
                    (unsigned long long)addr, who, (unsigned long long)x.t_data, (unsigned long long)x.hbm_end,
                    (unsigned long long)x.burst_bytes, (unsigned long long)x.channel_cycles);
    }

    void run_thread()
    {
        xfer(0, false, 0, 1024);
        sc_core::wait(dluhw::cycles_to_time(1000));
        xfer(0, true, 100, 100);
        sc_core::wait(dluhw::cycles_to_time(1000));
        xfer(0, false, 4096, 512);
        xfer(1, false, 8192, 512);
        xfer(1, false, 8192 + 64, 64);
    }
};

int sc_main(int, char *[])
{
    const dlusim_hwcfg c = tb::cfg();
    dluhw::hbm mem("hbm", c);
    driver drv("drv");
    drv.m_socket.bind(mem.m_socket);
    mem.set_log(stdout);
    sc_core::sc_start();
    std::printf("%llu end\n", (unsigned long long)dluhw::now_cycles());
    return 0;
}
