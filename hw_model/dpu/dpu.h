/* dpu.h -- one DPU: its DPE array (dpe_per_dpu DPEs of lanes_per_dpe SIMD lanes), the
 * register files and local memory as real byte arrays, the per-DPE statistics counters,
 * and the two in-order units that execute its commands: the DMA queue (LOAD, STORE,
 * through its dma engine) and the compute queue (MAC, REQUANT, VEC on the DPEs).
 *
 * Each unit takes its commands in stream order, one at a time; a command starts when its
 * unit is free and every earlier command of this DPU it conflicts with on a buffer (read
 * after write, write after read, write after write; precomputed into cmd_state::dep) has
 * completed. That scoreboard is what lets double buffering overlap DMA with compute. A
 * command costs one wait(): the formulas are in docs/hw_model.md and in compute_cycles().
 *
 * Not here: arithmetic (the verification executor's callback computes the values in the
 * DPU's memories when a command completes), dispatch and master commands (master/). */
#ifndef DLUHW_DPU_H
#define DLUHW_DPU_H

#include <deque>

#include "hw_model/common.h"
#include "hw_model/dma/dma.h"

namespace dluhw {

/* Cycles of a compute command on one DPU, and its fill (pipeline fill and drain) part. */
struct compute_cost {
    uint64_t cycles, fill;
};
compute_cost compute_cycles(const dlusim_hwcfg &cfg, const dlusim_cmd &c);

/* The scoreboard's table: fills st[i].dep for every DPU command of s (st has s->n entries). */
void build_deps(const dlusim_stream *s, int n_dpu, std::vector<cmd_state> &st);

class dpu : public sc_core::sc_module {
public:
    SC_HAS_PROCESS(dpu);
    dpu(sc_core::sc_module_name name, const dlusim_hwcfg &cfg, int index, dma &engine, run_ctx &run);

    /* Queue stream command idx (a DPU command of this DPU) on its unit. */
    void push(uint32_t idx);

    /* Verification mode: allocate the memories and counters (zeroed) on first use.
     * Throws std::bad_alloc. */
    void ensure_data();
    /* The statistics circuit: merge this DPU's DPE counters into agg / clear them. */
    void aggregate_stats(dlu_stats &agg) const;
    void clear_stats();

    void set_log(FILE *f) { m_log = f; }

private:
    void dma_thread();
    void dpe_thread();
    bool deps_done(uint32_t idx) const;
    bool next_ready(std::deque<uint32_t> &q, sc_core::sc_event &ev, uint32_t &idx);
    void finish(uint32_t idx, uint64_t t0, uint64_t t1);
    void skip(uint32_t idx);
    void seg(uint64_t t0, uint64_t t1, int cls);

    const dlusim_hwcfg &m_cfg;
    int m_index;
    dma &m_dma;
    run_ctx &m_run;
    std::deque<uint32_t> m_dmaq, m_dpeq;
    sc_core::sc_event m_dmaq_ev, m_dpeq_ev, m_done_ev;
    std::vector<uint8_t> m_lmem; /* local_mem_kib KiB */
    std::vector<uint8_t> m_rf;   /* dpe_per_dpu * regfile_kib KiB, one flat space */
    std::vector<dlu_stats> m_stats; /* one per DPE */
    FILE *m_log = nullptr;
};

} // namespace dluhw

#endif
