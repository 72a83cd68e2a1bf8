/* tb_dpu.cc -- testbench of one DPU: its DMA queue and compute queue under the scoreboard.
 * A double-buffered stream (A and B chunks loaded into alternating buffers, a MAC per
 * chunk, a requantize and a store) shows DMA overlapping compute, a LOAD waiting for the
 * MAC two chunks back to release its buffer (write after read), and the store waiting for
 * the requantize (read after write). Prints completions in simulated cycles. */
#include "hw_model/dma/dma.h"
#include "hw_model/dpu/dpu.h"
#include "hw_model/hbm/hbm.h"
#include "hw_model/noc/noc.h"
#include "tests/hw/tb_common.h"

struct feeder : sc_core::sc_module {
    SC_HAS_PROCESS(feeder);
    dluhw::dpu &m_dpu;
    dluhw::run_ctx &m_run;
    feeder(sc_core::sc_module_name n, dluhw::dpu &d, dluhw::run_ctx &r) : sc_core::sc_module(n), m_dpu(d), m_run(r)
    {
        SC_THREAD(run_thread);
    }
    void run_thread()
    {
        for (uint32_t i = 0; i < (uint32_t)m_run.s->n; i++)
            m_dpu.push(i);
    }
};

int sc_main(int, char *[])
{
    dlusim_hwcfg c = tb::cfg();
    c.n_dpu = 1;
    dlusim_stream s;
    dlusim_stream_init(&s);
    enum { A0, A1, B0, B1, ACC, OUT };
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 0, 4096);
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 4096, 4096);
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 8192, 4096);
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 12288, 4096);
    dlusim_stream_buf(&s, DLUSIM_SPACE_RF, 0, 4096);
    dlusim_stream_buf(&s, DLUSIM_SPACE_LMEM, 16384, 4096);
    uint64_t addr = 0;
    for (int kc = 0; kc < 4; kc++) {
        dlusim_cmd l = tb::load(0, kc % 2 ? A1 : A0, 1024, addr);
        addr += 1024;
        dlusim_stream_push(&s, &l);
        l = tb::load(0, kc % 2 ? B1 : B0, 1024, addr);
        addr += 1024;
        dlusim_stream_push(&s, &l);
        dlusim_cmd m = tb::mac(0, kc % 2 ? A1 : A0, kc % 2 ? B1 : B0, ACC, 16, 16, 64);
        m.flags = kc == 0 ? DLUSIM_F_ACC_INIT : 0;
        dlusim_stream_push(&s, &m); /* 6 + 4*4*16 = 262 cycles */
    }
    dlusim_cmd r = tb::cmd(DLUSIM_CMD_REQUANT, 0);
    r.rd[0] = ACC;
    r.wr = OUT;
    r.m = 16;
    r.n = 16;
    dlusim_stream_push(&s, &r);
    dlusim_cmd st = tb::cmd(DLUSIM_CMD_STORE, 0);
    st.rd[0] = OUT;
    st.nbytes = 256;
    st.hbm_addr = 1 << 20;
    dlusim_stream_push(&s, &st);

    dluhw::run_ctx run;
    tb::prepare(run, c, s);
    for (size_t i = 0; i < s.n; i++) {
        std::printf("cmd %zu %s waits for", i, dlusim_cmd_kind_name((dlusim_cmd_kind)s.cmd[i].kind));
        for (int j = 0; j < run.st[i].ndep; j++)
            std::printf(" %u", run.st[i].dep[j]);
        std::printf("\n");
    }
    dluhw::hbm mem("hbm", c);
    dluhw::noc net("noc", c);
    dluhw::dma engine("dma0", c, 0);
    engine.m_socket.bind(net.m_dpu_socket);
    net.m_hbm_socket.bind(mem.m_socket);
    dluhw::dpu unit("dpu0", c, 0, engine, run);
    unit.set_log(stdout);
    feeder f("feeder", unit, run);
    sc_core::sc_start();
    const dlu_sim_counters &k = run.ctr[0];
    std::printf("%llu end: %llu commands, busy mac %llu vec %llu dma %llu noc %llu hbm %llu, macs %llu\n",
                (unsigned long long)dluhw::now_cycles(), (unsigned long long)k.commands,
                (unsigned long long)k.busy_mac, (unsigned long long)k.busy_vec, (unsigned long long)k.busy_dma,
                (unsigned long long)k.busy_noc, (unsigned long long)k.busy_hbm, (unsigned long long)k.macs);
    dlusim_stream_free(&s);
    return 0;
}
