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

void dlu_sim_counters_add(dlu_sim_counters *d, const dlu_sim_counters *s)
{
    d->cycles += s->cycles;
    d->stall_compute += s->stall_compute;
    d->stall_memory += s->stall_memory;
    d->stall_network += s->stall_network;
    d->stall_stats += s->stall_stats;
    d->stall_other += s->stall_other;
    d->busy_mac += s->busy_mac;
    d->busy_vec += s->busy_vec;
    d->busy_dma += s->busy_dma;
    d->busy_noc += s->busy_noc;
    d->busy_hbm += s->busy_hbm;
    d->macs += s->macs;
    d->mac_slots += s->mac_slots;
    d->vec_ops += s->vec_ops;
    d->stats_elems += s->stats_elems;
    d->stats_reads += s->stats_reads;
    d->bytes_hbm_rd += s->bytes_hbm_rd;
    d->bytes_hbm_wr += s->bytes_hbm_wr;
    d->bytes_noc += s->bytes_noc;
    d->bytes_lmem += s->bytes_lmem;
    d->bytes_rf += s->bytes_rf;
    d->commands += s->commands;
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        d->energy_pj[i] += s->energy_pj[i];
}

double dlu_sim_counters_energy_pj(const dlu_sim_counters *c)
{
    double e = 0;
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        e += c->energy_pj[i];
    return e;
}
