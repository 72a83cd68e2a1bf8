/* sim.h -- what the simulated DLU (the "dlusim" backend) reports.
 *
 * A dlusim backend (device string "dlusim:CONFIG.ini") runs every kernel as a tile-level
 * command stream on the SystemC model of a DLU-like core (hw_model/) and counts, per layer
 * and per phase, simulated cycles, unit utilisation, a stall breakdown, bytes moved at each
 * level and energy by component. In verification mode (the default) it also computes the
 * values, bit for bit those of the cpu backend; in timing-only mode it skips them.
 *
 * Not here: the hardware parameters (sim/hwcfg.def, docs/hw_model.md) and the command
 * stream (sim/cmd.h, docs/sim-commands.md). */
#ifndef DLU_SIM_H
#define DLU_SIM_H

#include <stdint.h>

#include "dlu/backend.h"
#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Phases of a training step, as reported. */
typedef enum dlu_sim_phase {
    DLU_SIM_FWD,        /* forward, including quantizing the weights from the master copy */
    DLU_SIM_BWD_DATA,   /* backward, input gradient */
    DLU_SIM_BWD_WEIGHT, /* backward, weight and bias gradients */
    DLU_SIM_STATS,      /* statistics read-out and point-position decisions */
    DLU_SIM_UPDATE,     /* optimizer update of the fp32 master weights */
    DLU_SIM_NPHASE
} dlu_sim_phase;
const char *dlu_sim_phase_name(dlu_sim_phase p); /* "fwd", "bwd_data", ... */

/* Energy components (Accelergy's method: action counts times the config's energy table). */
typedef enum dlu_sim_ecomp {
    DLU_SIM_E_MAC,
    DLU_SIM_E_VEC,
    DLU_SIM_E_STATS,
    DLU_SIM_E_RF,
    DLU_SIM_E_LMEM,
    DLU_SIM_E_NOC,
    DLU_SIM_E_HBM,
    DLU_SIM_E_STATIC,
    DLU_SIM_NECOMP
} dlu_sim_ecomp;
const char *dlu_sim_ecomp_name(dlu_sim_ecomp c); /* "mac", "vec", ... */

/* Counters of one span of simulated work (one run of a command stream, or their sum).
 * cycles == stall_compute + stall_memory + stall_network + stall_stats + stall_other:
 * the span's cycles split by what the critical DPU was doing or waiting for. */
typedef struct dlu_sim_counters {
    uint64_t cycles;
    uint64_t stall_compute; /* the critical DPU's DPEs were computing */
    uint64_t stall_memory;  /* waiting for a DMA transfer limited by HBM */
    uint64_t stall_network; /* waiting for a DMA transfer limited by the on-chip network */
    uint64_t stall_stats;   /* waiting for statistics aggregation and point-position decisions */
    uint64_t stall_other;   /* pipeline fill, DMA setup, waiting at barriers for other DPUs */
    /* unit busy cycles, summed over the units of each kind (utilisation = busy / (cycles * units)) */
    uint64_t busy_mac;      /* DPU cycles spent in MAC tile commands */
    uint64_t busy_vec;      /* DPU cycles spent in vector and requantize commands */
    uint64_t busy_dma;      /* DMA engine cycles (one engine per DPU) */
    uint64_t busy_noc;      /* link cycles (one link per DPU) */
    uint64_t busy_hbm;      /* channel cycles (hbm_channels channels) */
    uint64_t macs;          /* multiply-adds done */
    uint64_t mac_slots;     /* multiply-adds the busy MAC cycles could have done at peak */
    uint64_t vec_ops, stats_elems, stats_reads;
    uint64_t bytes_hbm_rd, bytes_hbm_wr; /* HBM traffic, whole bursts */
    uint64_t bytes_noc;                  /* bytes over the network */
    uint64_t bytes_lmem;                 /* DPU-local memory reads + writes */
    uint64_t bytes_rf;                   /* register-file reads + writes */
    uint64_t commands;
    double energy_pj[DLU_SIM_NECOMP];
} dlu_sim_counters;

/* dst += src, and dst -= src (src counted within dst, e.g. an earlier snapshot), field by field. */
void dlu_sim_counters_add(dlu_sim_counters *dst, const dlu_sim_counters *src);
void dlu_sim_counters_sub(dlu_sim_counters *dst, const dlu_sim_counters *src);
/* MAC utilisation in [0, 1]: the MACs done over what the MAC arrays of all `dpus` DPUs could
 * have done in the span's cycles, at the rates of the formats actually used. */
double dlu_sim_mac_utilisation(const dlu_sim_counters *c, int dpus);
double dlu_sim_counters_energy_pj(const dlu_sim_counters *c); /* sum over components */

/* 1 when be is a dlusim backend. */
int dlu_sim_is(const dlu_backend *be);

/* Timing-only mode (1) skips every value: tensors are left as they are. Default 0. Set it
 * before binding a net. Errors: DLU_EINVAL when be is not a dlusim backend. */
dlu_status dlu_sim_set_timing_only(dlu_backend *be, int on);

/* Counting on (1, the default) or off (0): while off, work still runs (values are still
 * computed) but is charged to no counter. dlu_train() turns it off around its test-set
 * evaluations, so the counters hold training alone. No-op on other backends. */
void dlu_sim_set_counting(dlu_backend *be, int on);

/* DPUs and HBM channels of the simulated core (0 and 0 for other backends). */
void dlu_sim_unit_counts(const dlu_backend *be, int *dpus, int *hbm_channels);

/* The simulated clock in Hz. */
double dlu_sim_clock_hz(const dlu_backend *be);

/* Per-layer, per-phase counters since open or the last dlu_sim_reset(). Layers are listed
 * in the order their first kernel ran; *name is valid until the backend is closed.
 * Errors: DLU_EINVAL when be is not dlusim or i is out of range. */
int dlu_sim_nlayers(const dlu_backend *be);
dlu_status dlu_sim_layer(const dlu_backend *be, int i, const char **name, dlu_sim_counters per_phase[DLU_SIM_NPHASE]);

/* Sum over every layer and phase since open or the last reset. */
dlu_status dlu_sim_totals(const dlu_backend *be, dlu_sim_counters *tot);
void dlu_sim_reset(dlu_backend *be);

/* Write a Chrome trace (JSON, open in Perfetto) of every unit over simulated time to
 * path, from now until the backend is closed. Errors: DLU_EIO when path cannot be opened. */
dlu_status dlu_sim_trace(dlu_backend *be, const char *path);

#ifdef __cplusplus
}
#endif
#endif
