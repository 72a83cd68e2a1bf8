/* hwcfg.h -- the hardware parameters of the simulated DLU core, read from an INI file.
 *
 * The parameters, their units, defaults and ranges are the table in hwcfg.def; this
 * header turns it into a struct and declares the reader. Shared by sim/ (C) and
 * hw_model/ (C++). */
#ifndef DLUSIM_HWCFG_H
#define DLUSIM_HWCFG_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DLUSIM_HW_TYPE_I int64_t
#define DLUSIM_HW_TYPE_D double
typedef struct dlusim_hwcfg {
#define DLU_HW(sec, key, type, unit, def, lo, hi, comment) DLUSIM_HW_TYPE_##type key;
#include "sim/hwcfg.def"
#undef DLU_HW
} dlusim_hwcfg;

/* Every parameter at its default. */
void dlusim_hwcfg_defaults(dlusim_hwcfg *cfg);

/* Read an INI file over the defaults. Errors (message through dlu__error, naming the file,
 * the line and the key): DLU_EIO when the file cannot be read, DLU_EFORMAT for a syntax
 * error, an unknown section or key, a key in the wrong section, a value that is not a
 * number of the key's type, or one outside its range. On error *cfg is unspecified. */
dlu_status dlusim_hwcfg_load(const char *path, dlusim_hwcfg *cfg);

/* Write every parameter as INI that dlusim_hwcfg_load reads back to the same values: a
 * header comment, then each section with, per key, a comment line (meaning, unit, default,
 * range, from hwcfg.def) above "key = value". Doubles in the shortest form that reads back
 * exactly. examples/hw/dlu-base.ini is this output for the defaults. Errors: DLU_EIO. */
dlu_status dlusim_hwcfg_write(const dlusim_hwcfg *cfg, FILE *f);

/* Derived quantities used by both the lowering and the model. */
int dlusim_hwcfg_macs_per_lane(const dlusim_hwcfg *cfg, int fmt_bits); /* 32, 16 or 8 */
double dlusim_hwcfg_hbm_bytes_per_cycle(const dlusim_hwcfg *cfg);        /* 0 = unlimited */
uint64_t dlusim_hwcfg_hbm_latency_cycles(const dlusim_hwcfg *cfg);

#ifdef __cplusplus
}
#endif
#endif
