/* tb_common.h -- what the block testbenches share: a small configuration with round
 * numbers, so the golden logs are easy to check by hand, and a command builder.
 *
 * The testbenches print simulated cycles and events only (never wall time or pointers);
 * run_golden.sh diffs their output against golden/<block>.log. */
#ifndef DLUHW_TB_COMMON_H
#define DLUHW_TB_COMMON_H

#include <cstring>

#include "hw_model/common.h"
#include "hw_model/dpu/dpu.h"

namespace tb {

/* 2 DPUs of 4 DPEs x 4 lanes, HBM 4 channels of 16 B/cycle (64 GB/s at 1 GHz), 64-byte
 * bursts, 100 ns latency; links 32 B/cycle with 10 cycles of latency; DMA setup 5. */
inline dlusim_hwcfg cfg()
{
    dlusim_hwcfg c;
    dlusim_hwcfg_defaults(&c);
    c.clock_mhz = 1000;
    c.n_dpu = 2;
    c.dpe_per_dpu = 4;
    c.lanes_per_dpe = 4;
    c.hbm_channels = 4;
    c.hbm_gbytes_per_s = 64;
    c.hbm_latency_ns = 100;
    c.hbm_burst_bytes = 64;
    c.noc_link_bytes_per_cycle = 32;
    c.noc_latency_cycles = 10;
    c.dma_setup_cycles = 5;
    c.mac_fill_cycles = 6;
    c.vec_fill_cycles = 4;
    c.stats_agg_cycles = 32;
    c.stats_decide_cycles = 200;
    return c;
}

inline dlusim_cmd cmd(int kind, int dpu)
{
    dlusim_cmd c;
    std::memset(&c, 0, sizeof c);
    c.kind = (uint8_t)kind;
    c.dpu = (uint16_t)dpu;
    c.rd[0] = c.rd[1] = c.wr = DLUSIM_NOBUF;
    c.fmt_bits = 8;
    return c;
}

inline dlusim_cmd load(int dpu, int wr, uint64_t nbytes, uint64_t addr)
{
    dlusim_cmd c = cmd(DLUSIM_CMD_LOAD, dpu);
    c.wr = (uint8_t)wr;
    c.nbytes = nbytes;
    c.hbm_addr = addr;
    return c;
}

inline dlusim_cmd mac(int dpu, int a, int b, int acc, uint32_t m, uint32_t n, uint32_t k)
{
    dlusim_cmd c = cmd(DLUSIM_CMD_MAC, dpu);
    c.rd[0] = (uint8_t)a;
    c.rd[1] = (uint8_t)b;
    c.wr = (uint8_t)acc;
    c.m = m;
    c.n = n;
    c.k = k;
    return c;
}

/* A run context for st, ready for the blocks to execute s (deps built). */
inline void prepare(dluhw::run_ctx &r, const dlusim_hwcfg &c, const dlusim_stream &s)
{
    r.cfg = &c;
    r.s = &s;
    r.st.assign(s.n, dluhw::cmd_state());
    dluhw::build_deps(&s, (int)c.n_dpu, r.st);
    r.dpu_seg.assign((size_t)c.n_dpu, {});
    r.dpu_last_end.assign((size_t)c.n_dpu, 0);
    std::memset(r.ctr, 0, sizeof r.ctr);
}

} // namespace tb

#endif
