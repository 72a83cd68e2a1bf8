/* dluhw.h -- the C interface of the SystemC model of a DLU-like core.
 *
 * One dluhw is one elaborated model (master core, N DPUs of DPEs with register files and
 * local memory, the statistics circuit, the on-chip network, DMA engines and HBM) built
 * from a dlusim_hwcfg. dluhw_run() feeds it one command stream (sim/cmd.h) and advances
 * simulated time until every command has completed and every unit is idle again;
 * simulated time keeps running across calls.
 *
 * Verification mode: pass an exec callback. The model calls it when each LOAD, MAC,
 * REQUANT, VEC and STORE command completes in simulated time, with that DPU's local
 * memory and register files, so that values move through the model's memories in the
 * order the model executes the commands (a scoreboard or double-buffering error shows
 * up as wrong values). At each STATS command it calls stats_cb with the sum of every
 * DPU's statistics counters since the previous STATS. Timing-only mode: pass NULL for
 * both; the model then touches no data.
 *
 * SystemC allows one simulation per process at a time: a process may hold one dluhw; a
 * new one can be made after the previous one is freed.
 *
 * Not thread-safe. Not here: tiling (sim/lower.c) and the values themselves (sim/exec.c). */
#ifndef DLUHW_H
#define DLUHW_H

#include <stdint.h>
#include <stdio.h>

#include "dlu/numerics.h"
#include "dlu/sim.h"
#include "sim/cmd.h"
#include "sim/hwcfg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dluhw dluhw;

/* Build the model. Errors: DLU_EINVAL when cfg is inconsistent, DLU_EBUSY when another
 * dluhw exists in this process; message through dlu__error. */
dlu_status dluhw_new(const dlusim_hwcfg *cfg, dluhw **out);
void dluhw_free(dluhw *m); /* NULL is fine */

/* Verification-mode callbacks. lmem: the DPU's local memory (local_mem_kib KiB);
 * rf: the DPU's register-file space (dpe_per_dpu * regfile_kib KiB, one flat space);
 * dpe_stats: dpe_per_dpu statistics counters of that DPU (REQUANT and VEC with
 * DLUSIM_F_STATS add into them). Return DLU_OK or an error code (with a message through
 * dlu__error); the run stops and dluhw_run returns it. */
typedef dlu_status (*dluhw_exec_fn)(void *ctx, const dlusim_cmd *c, uint8_t *lmem, uint8_t *rf,
                                    dlu_stats *dpe_stats);
typedef dlu_status (*dluhw_stats_fn)(void *ctx, const dlusim_cmd *c, const dlu_stats *agg);

/* Run one stream to completion; the counters of this run are ADDED to out[phase] for each
 * command's phase (cycles of a run are attributed to the phase of the run's first command
 * when phases mix). Checks the stream first: DLU_EINVAL (naming the command index) for a
 * buffer outside the local memory or register files, a command on a DPU that does not
 * exist, an unknown kind. */
dlu_status dluhw_run(dluhw *m, const dlusim_stream *s, dluhw_exec_fn exec, dluhw_stats_fn stats_cb, void *ctx,
                     dlu_sim_counters out[DLU_SIM_NPHASE]);

/* Simulated cycles since the model was built. */
uint64_t dluhw_now_cycles(const dluhw *m);

/* Chrome trace JSON of units over simulated time (NULL stops tracing; the caller closes
 * the file after dluhw_free or after passing NULL). */
void dluhw_trace(dluhw *m, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
