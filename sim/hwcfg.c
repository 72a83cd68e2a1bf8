/* hwcfg.c -- the simulated core's parameters: defaults from hwcfg.def, the INI reader
 * (inih) and writer, and the few derived quantities the lowering and the model share.
 *
 * Not here: what the parameters mean for timing (docs/hw_model.md). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "sim/hwcfg.h"

void dlusim_hwcfg_defaults(dlusim_hwcfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
#define DLU_HW(sec, key, type, unit, def, lo, hi, comment) cfg->key = (DLUSIM_HW_TYPE_##type)(def);
#include "sim/hwcfg.def"
#undef DLU_HW
}

int dlusim_hwcfg_macs_per_lane(const dlusim_hwcfg *cfg, int fmt_bits)
{
    return (int)(fmt_bits >= 32 ? cfg->macs_fp32 : fmt_bits >= 16 ? cfg->macs_int16 : cfg->macs_int8);
}

double dlusim_hwcfg_hbm_bytes_per_cycle(const dlusim_hwcfg *cfg)
{
    /* GB/s (10^9 bytes) over cycles per second (MHz * 10^6) */
    return cfg->hbm_gbytes_per_s * 1e9 / (cfg->clock_mhz * 1e6);
}

uint64_t dlusim_hwcfg_hbm_latency_cycles(const dlusim_hwcfg *cfg)
{
    return (uint64_t)ceil(cfg->hbm_latency_ns * cfg->clock_mhz * 1e-3);
}
