/* dlusim_stub.c -- the dlusim backend in a build without SystemC: the registry entry says
 * why it is absent, and the report API answers that no backend is a simulated DLU.
 * Built instead of dlusim_backend.c and hw_model/ when configure did not find SystemC. */
#include <string.h>

#include "backend_impl.h"
#include "dlu/sim.h"
#include "error.h"

static dlu_status stub_open(dlu_backend *be, const char *arg)
{
    return dlu__error(DLU_ENODEV, "the simulated DLU is not built in: configure did not find SystemC "
                                  "(Debian package libsystemc-dev; then re-run ./configure)");
}

static void stub_close(dlu_backend *be) {}

const dlu__backend_vtbl dlu__dlusim_vtbl = {
    .kind = "dlusim",
    .note = "absent: built without SystemC (Debian: libsystemc-dev)",
    .open = stub_open,
    .close = stub_close,
};

int dlu_sim_is(const dlu_backend *be) { return 0; }

static dlu_status absent(void)
{
    return dlu__error(DLU_EINVAL, "not a simulated DLU (this build has no dlusim backend: SystemC was not found)");
}

dlu_status dlu_sim_set_timing_only(dlu_backend *be, int on) { return absent(); }
void dlu_sim_set_counting(dlu_backend *be, int on) {}
void dlu_sim_unit_counts(const dlu_backend *be, int *dpus, int *hbm_channels) { *dpus = *hbm_channels = 0; }
double dlu_sim_clock_hz(const dlu_backend *be) { return 0; }
int dlu_sim_nlayers(const dlu_backend *be) { return 0; }
dlu_status dlu_sim_layer(const dlu_backend *be, int i, const char **name, dlu_sim_counters per_phase[DLU_SIM_NPHASE])
{
    return absent();
}
dlu_status dlu_sim_totals(const dlu_backend *be, dlu_sim_counters *tot)
{
    memset(tot, 0, sizeof *tot);
    return absent();
}
void dlu_sim_reset(dlu_backend *be) {}
dlu_status dlu_sim_trace(dlu_backend *be, const char *path) { return absent(); }
