/* counters.c -- names and arithmetic of the simulated core's counters (include/dlu/sim.h). */
#include "dlu/sim.h"

const char *dlu_sim_phase_name(dlu_sim_phase p)
{
    static const char *const n[DLU_SIM_NPHASE] = {"fwd", "bwd_data", "bwd_weight", "stats", "update"};
    return (unsigned)p < DLU_SIM_NPHASE ? n[p] : "?";
}

const char *dlu_sim_ecomp_name(dlu_sim_ecomp c)
{
    static const char *const n[DLU_SIM_NECOMP] = {"mac", "vec", "stats", "rf", "lmem", "noc", "hbm", "static"};
    return (unsigned)c < DLU_SIM_NECOMP ? n[c] : "?";
}

/* One list of the integer fields, for add and sub. */
#define COUNTER_FIELDS(X)                                                                          \
    X(cycles) X(stall_compute) X(stall_memory) X(stall_network) X(stall_stats) X(stall_other)      \
    X(busy_mac) X(busy_vec) X(busy_dma) X(busy_noc) X(busy_hbm) X(macs) X(mac_slots) X(vec_ops)    \
    X(stats_elems) X(stats_reads) X(bytes_hbm_rd) X(bytes_hbm_wr) X(bytes_noc) X(bytes_lmem)      \
    X(bytes_rf) X(commands)

void dlu_sim_counters_add(dlu_sim_counters *d, const dlu_sim_counters *s)
{
#define X(f) d->f += s->f;
    COUNTER_FIELDS(X)
#undef X
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        d->energy_pj[i] += s->energy_pj[i];
}

void dlu_sim_counters_sub(dlu_sim_counters *d, const dlu_sim_counters *s)
{
#define X(f) d->f -= s->f;
    COUNTER_FIELDS(X)
#undef X
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        d->energy_pj[i] -= s->energy_pj[i];
}

double dlu_sim_mac_utilisation(const dlu_sim_counters *c, int dpus)
{
    const double span = (double)c->cycles * dpus;
    if (!c->mac_slots || span <= 0)
        return 0;
    return (double)c->macs / (double)c->mac_slots * (double)c->busy_mac / span;
}

double dlu_sim_counters_energy_pj(const dlu_sim_counters *c)
{
    double e = 0;
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        e += c->energy_pj[i];
    return e;
}
