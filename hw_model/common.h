/* common.h -- what every block of the DLU model shares: the cycle time base, the TLM
 * extension a DMA transfer carries through the network to the HBM and back, the run
 * context (the stream being executed, the scoreboard state, the counters of the run) and
 * the Chrome trace writer.
 *
 * The model keeps time in whole core cycles: one cycle is one SystemC nanosecond, whatever
 * clock_mhz says. Cycles are what every formula in docs/hw_model.md produces, integer
 * nanoseconds keep them exact (no rounding of a 1/clock period), and seconds are
 * cycles / (clock_mhz * 1e6) wherever a report needs them (energy, trace).
 *
 * Not here: any timing formula (each block owns its own) or the C interface (top/). */
#ifndef DLUHW_COMMON_H
#define DLUHW_COMMON_H

#include <systemc>
#include <tlm>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

/* In C++ the name dluhw is the model's namespace (STYLE.md), so the C handle of dluhw.h
 * is spelled dluhw_handle here. The functions have C linkage: their symbols do not depend
 * on the parameter types, so C callers and this implementation still meet. */
#define dluhw dluhw_handle
#include "hw_model/dluhw.h"
#undef dluhw

namespace dluhw {

inline sc_core::sc_time cycles_to_time(uint64_t n)
{
    return sc_core::sc_time::from_value(n * sc_core::sc_time(1, sc_core::SC_NS).value());
}

inline uint64_t time_to_cycles(const sc_core::sc_time &t)
{
    return t.value() / sc_core::sc_time(1, sc_core::SC_NS).value();
}

inline uint64_t now_cycles() { return time_to_cycles(sc_core::sc_time_stamp()); }

/* Cycles to move nbytes at bw bytes per cycle (bw <= 0: unlimited, 0 cycles). The factor
 * below 1 keeps an exact quotient (4096 / 128.0) from rounding up through the last bit. */
inline uint64_t stream_cycles(uint64_t nbytes, double bw)
{
    if (bw <= 0 || nbytes == 0)
        return 0;
    double c = std::ceil((double)nbytes / bw * (1 - 1e-12));
    return c < 1 ? 1 : (uint64_t)c;
}

/* What a DMA transfer learns on its way: filled in by the NoC and the HBM, read back by
 * the DMA engine for the counters, the stall breakdown and the trace. All times are
 * absolute cycles. */
struct xfer_ext : tlm::tlm_extension<xfer_ext> {
    int dpu = 0;                 /* the requesting DPU = the NoC link used */
    uint32_t cmd = 0;            /* command index in the stream (trace) */
    uint64_t t_noc = 0;          /* request has crossed the network, reaches the HBM */
    uint64_t t_data = 0;         /* HBM latency paid: first data */
    uint64_t hbm_end = 0;        /* the last channel has streamed its bursts */
    uint64_t link_end = 0;       /* the DPU's link has streamed the bytes */
    uint64_t burst_bytes = 0;    /* bytes the HBM moved, whole bursts */
    uint64_t channel_cycles = 0; /* sum over channels of their streaming cycles */
    uint64_t link_cycles = 0;    /* cycles the link streamed */

    tlm::tlm_extension_base *clone() const override { return new xfer_ext(*this); }
    void copy_from(const tlm::tlm_extension_base &e) override { *this = static_cast<const xfer_ext &>(e); }
};

/* Stall classes of the breakdown, in priority order: when several apply at one instant the
 * lowest value wins (the DPEs computing hide an overlapped DMA, which is the point of
 * double buffering). Idle time with none of them is "other". */
enum seg_class { SEG_COMPUTE, SEG_FILL, SEG_STATS, SEG_MEMORY, SEG_NETWORK, SEG_DMA_SETUP, SEG_NCLASS };

struct segment {
    uint64_t t0, t1;
    int cls;
};

/* Chrome trace (about:tracing / Perfetto) writer: complete ("X") events, one thread per unit. */
class trace_writer {
public:
    trace_writer(FILE *f, double clock_mhz) : m_f(f), m_mhz(clock_mhz)
    {
        std::fputs("{\"traceEvents\":[\n", m_f);
    }
    ~trace_writer()
    {
        std::fputs("\n]}\n", m_f);
        std::fflush(m_f);
    }
    trace_writer(const trace_writer &) = delete;
    trace_writer &operator=(const trace_writer &) = delete;

    void thread_name(int tid, const char *name)
    {
        sep();
        std::fprintf(m_f, "{\"ph\":\"M\",\"pid\":0,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"%s\"}}", tid,
                     name);
    }
    void complete(int tid, const char *name, uint64_t t0, uint64_t t1, uint32_t cmd, unsigned layer)
    {
        sep();
        std::fprintf(m_f,
                     "{\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"name\":\"%s\",\"ts\":%.6f,\"dur\":%.6f,"
                     "\"args\":{\"cmd\":%u,\"layer\":%u}}",
                     tid, name, (double)t0 / m_mhz, (double)(t1 - t0) / m_mhz, cmd, layer);
    }

private:
    void sep()
    {
        if (!m_first)
            std::fputs(",\n", m_f);
        m_first = false;
    }
    FILE *m_f;
    double m_mhz;
    bool m_first = true;
};

/* Thread ids of the trace: master 0, then two per DPU, then HBM channels, then NoC links. */
inline int tid_dma(int dpu) { return 1 + 2 * dpu; }
inline int tid_dpe(int dpu) { return 2 + 2 * dpu; }
inline int tid_hbm(int n_dpu, int ch) { return 1 + 2 * n_dpu + ch; }
inline int tid_link(int n_dpu, int n_ch, int dpu) { return 1 + 2 * n_dpu + n_ch + dpu; }

struct cmd_state {
    uint64_t end = 0;
    bool done = false;
    uint8_t ndep = 0;
    uint32_t dep[6]; /* earlier commands of the same DPU this one conflicts with (scoreboard) */
};

/* One dluhw_run: owned by the chip, read and written by the blocks inside the simulation. */
struct run_ctx {
    const dlusim_hwcfg *cfg = nullptr;
    const dlusim_stream *s = nullptr;
    dluhw_exec_fn exec = nullptr;
    dluhw_stats_fn stats_cb = nullptr;
    void *ctx = nullptr;
    std::vector<cmd_state> st;
    bool abort = false;           /* a callback failed: skip the rest, keep the model consistent */
    dlu_status status = DLU_OK;
    bool data = false;            /* verification mode: memories are allocated and touched */
    uint64_t dispatched = 0, completed = 0;
    sc_core::sc_event any_done;   /* a DPU command completed (the master waits on it) */
    dlu_sim_counters ctr[DLU_SIM_NPHASE];
    std::vector<std::vector<segment>> dpu_seg; /* per DPU: what its units did, for the breakdown */
    std::vector<uint64_t> dpu_last_end;        /* per DPU: completion of its last command (0: none) */
    std::vector<segment> master_seg;           /* STATS commands */
    trace_writer *trace = nullptr;
};

} // namespace dluhw

#endif
