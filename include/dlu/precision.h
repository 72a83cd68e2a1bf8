/* precision.h -- which number format and rounding each tensor class of a training step
 * uses, parsed from the command-line strings of `dlu train --format/--round`.
 *
 * Classes (tensor.h): W weights, A activations, E errors dL/dA, G weight gradients.
 *   --format fp32 | dfp8 | dfp16              one format for all four classes
 *   --format w=dfp8,a=dfp8,e=dfp16,g=dfp16    class by class (missing classes: fp32 is not
 *                                             allowed to mix, so all four must be given)
 *   --round nearest | stochastic | w=nearest,a=nearest,e=stochastic,g=stochastic
 * Master weights and optimizer state stay fp32 whatever the formats.
 *
 * Supported combinations: all four fp32 (plain fp32 training), or W, A, E all DFP (any mix
 * of 8 and 16 bits) with G DFP or fp32 (fp32 G: the exact integer gradient is converted
 * to fp32 without quantization). Anything else is rejected with a message.
 *
 * Not here: exponent choice (scale.h) and the arithmetic itself (numerics.h). */
#ifndef DLU_PRECISION_H
#define DLU_PRECISION_H

#include "dlu/numerics.h"
#include "dlu/status.h"
#include "dlu/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dlu_precision {
    dlu_format fmt[DLU_CLASS_COUNT];
    dlu_round round[DLU_CLASS_COUNT];
} dlu_precision;

/* All fp32; rounding nearest for W and A, stochastic for E and G (DESIGN.md's common choice;
 * rounding matters only for DFP classes). */
void dlu_precision_default(dlu_precision *p);

/* Parse --format / --round strings into p (other fields untouched). Errors (DLU_EINVAL)
 * name the bad token and list what is accepted. */
dlu_status dlu_precision_parse_format(dlu_precision *p, const char *spec);
dlu_status dlu_precision_parse_round(dlu_precision *p, const char *spec);

/* DLU_OK for a supported combination, DLU_EUNSUPPORTED with a message otherwise. */
dlu_status dlu_precision_check(const dlu_precision *p);

/* 1 when the step runs in dynamic fixed point (W, A, E are DFP). */
int dlu_precision_is_dfp(const dlu_precision *p);

/* Canonical strings, e.g. "dfp8" or "w=dfp8,a=dfp8,e=dfp16,g=dfp16"; "nearest" or
 * "w=nearest,a=nearest,e=stochastic,g=stochastic". Return the length written (truncated
 * to n-1 like snprintf). */
int dlu_precision_format_str(const dlu_precision *p, char *buf, size_t n);
int dlu_precision_round_str(const dlu_precision *p, char *buf, size_t n);

/* "w", "a", "e", "g". */
const char *dlu_class_name(dlu_tensor_class c);

#ifdef __cplusplus
}
#endif
#endif
