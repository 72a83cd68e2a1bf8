/* scale.h -- scaling policies: how each DFP tensor's shared exponent is chosen.
 *
 * What it is: the host-side rule that turns the statistics of step t (struct dlu_stats,
 * collected by the statistics circuit while step t was quantized) into the exponent of
 * step t+1 ("delayed scaling", as the hardware does it), plus the initial calibration of
 * a tensor from its own first statistics, the optional recompute-on-overflow rule, and a
 * fixed-size serialisation of a policy's state for checkpoints. docs/numerics.md section
 * 12 is the contract: the exact arithmetic of every policy is written there, and
 * tests/test_scale.c checks it on crafted histograms.
 *
 * What it is not: not arithmetic on tensor values (quantization lives in dlu/numerics.h),
 * not per-channel or per-block (one exponent per state; a per-channel tensor would hold
 * one state per channel), and not device code: the policies run on the host between
 * steps, in integer and IEEE double arithmetic only, so every backend and every rank
 * that feeds the same statistics gets the same exponents.
 *
 * Thread safety: a dlu_scale_state must not be used from two threads at once; distinct
 * states are independent. dlu_scale_parse/_format_spec/_cfg_default are reentrant. */
#ifndef DLU_SCALE_H
#define DLU_SCALE_H

#include <stddef.h>
#include <stdint.h>

#include "dlu/numerics.h"
#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The one list of policies: X(NAME, "name on the command line"). Append only: the
 * numeric values are stored in checkpoints. */
#define DLU_SCALE_KINDS(X)                                                                            \
    X(OVERFLOW, "overflow")     /* smallest e whose predicted overflow fraction <= rate (default) */ \
    X(MAX, "max")               /* smallest e with no predicted overflow */                          \
    X(AMAX, "amax")             /* max over an amax history window (TransformerEngine style) */      \
    X(AUTOFLEX, "autoflex")     /* Flexpoint's Autoflex (Koster et al. 2017) */                      \
    X(PERCENTILE, "percentile") /* at least p% of the nonzero values below saturation */             \
    X(ONEBIT, "onebit")         /* one bit per update (Courbariaux, Bengio, David 2014) */

typedef enum dlu_scale_kind {
#define DLU__SCALE_ENUM(NAME, str) DLU_SCALE_##NAME,
    DLU_SCALE_KINDS(DLU__SCALE_ENUM)
#undef DLU__SCALE_ENUM
    DLU_SCALE_COUNT
} dlu_scale_kind;

/* Lower-case name ("overflow", ...); "unknown" outside the enum. Static string. */
const char *dlu_scale_kind_name(dlu_scale_kind kind);

/* Longest amax/autoflex history a state can hold (TransformerEngine's default window). */
#define DLU_SCALE_HISTORY_MAX 1024

/* A policy and its parameters. Fill with dlu_scale_cfg_default() or dlu_scale_parse();
 * every field has a range, checked by dlu_scale_state_new() and dlu_scale_parse().
 * Fractions (rate, emergency, recompute, percentile) are of the NONZERO values of a
 * step, i.e. of sum(hist) = count - zeros - nan (docs/numerics.md 12.1). */
typedef struct dlu_scale_cfg {
    dlu_scale_kind kind;
    double rate;       /* overflow, onebit: largest allowed overflow fraction, [0, 1); 1e-4 */
    int interval;      /* all: decide every N steps, statistics summed in between, [1, 1e6]; 1 */
    int margin;        /* all: extra bits of headroom added to the rule's exponent, [-64, 64]; 0 */
    int hysteresis;    /* all: move down only after N consecutive decisions propose a lower
                        * exponent (1 = at once), [1, 1e6]; 1 */
    double emergency;  /* all: observed overflow fraction of one step above which the exponent
                        * goes up at once, between decisions too; 0 = off, [0, 1]; 0.01 */
    double recompute;  /* all: observed overflow fraction above which the step should be
                        * recomputed (US 11,593,620); 0 = off, [0, 1]; 0 */
    int history;       /* amax, autoflex: steps in the window, [1, DLU_SCALE_HISTORY_MAX]; 16 */
    double percentile; /* percentile: p in (0, 100]; 99.99 */
    double nstd;       /* autoflex: standard deviations added to the history's max, [0, 100]; 3 */
    double offset;     /* autoflex: constant headroom as a fraction of the current saturation
                        * point 2^(e+b-1), [0, 1]; 100/32768 (Nervana's 100 LSB of flex16) */
} dlu_scale_cfg;

/* The default: overflow policy, rate 1e-4, interval 1, margin 0, hysteresis 1,
 * emergency 0.01, recompute 0, history 16, percentile 99.99, nstd 3, offset 100/32768. */
void dlu_scale_cfg_default(dlu_scale_cfg *c);

/* Parse "POLICY[:key=value,...]" (e.g. "overflow:rate=1e-4,hysteresis=4,margin=0", "max",
 * "amax:history=16", "autoflex", "percentile:p=99.99", "onebit:rate=1e-3") into *out,
 * starting from dlu_scale_cfg_default(). Keys: every policy takes interval, margin,
 * hysteresis, emergency and recompute; overflow and onebit also take rate; amax takes
 * history; autoflex takes history, nstd and offset; percentile takes p. Numbers are
 * decimal (strtod/strtol syntax, no trailing characters, no NaN or Inf).
 * Returns DLU_OK, or DLU_EINVAL with a message (dlu_last_error) naming the bad policy,
 * key or value and listing the valid ones; *out is untouched on failure. */
dlu_status dlu_scale_parse(const char *spec, dlu_scale_cfg *out);

/* The canonical spec of c: the policy and every key it takes, in a fixed order, numbers
 * in the shortest form that parses back to the same double ("overflow:rate=0.0001,
 * interval=1,margin=0,hysteresis=1,emergency=0.01,recompute=0"). Like snprintf: writes
 * at most n bytes including the NUL and returns the length the whole string needs. */
int dlu_scale_format_spec(const dlu_scale_cfg *c, char *buf, size_t n);

/* The state of one DFP tensor's policy. Opaque. */
typedef struct dlu_scale_state dlu_scale_state;

/* New state for a tensor of format fmt (DLU_FMT_DFP8 or DLU_FMT_DFP16) under policy c
 * (copied). Before calibration the exponent is 2 - b (values up to 2 representable).
 * Returns DLU_OK and *out (free with dlu_scale_state_free), DLU_EINVAL (bad format or a
 * field out of range; the message names it) or DLU_ENOMEM. */
dlu_status dlu_scale_state_new(const dlu_scale_cfg *c, dlu_format fmt, dlu_scale_state **out);

/* Free a state. NULL is allowed. */
void dlu_scale_state_free(dlu_scale_state *s);

/* The state's policy and format. */
const dlu_scale_cfg *dlu_scale_state_cfg(const dlu_scale_state *s);
dlu_format dlu_scale_state_format(const dlu_scale_state *s);

/* 1 once a calibration saw at least one nonzero value, else 0. */
int dlu_scale_calibrated(const dlu_scale_state *s);

/* Calibrate: set the exponent from the tensor's own statistics st (collected with any
 * exponent: the histogram does not depend on it), by the policy's calibration rule
 * (docs/numerics.md 12.4), with no hysteresis; forget any earlier history. If st holds
 * no nonzero value (all zeros/NaN, or st == NULL) nothing changes and the state stays
 * uncalibrated. Returns the exponent to use now. */
int dlu_scale_calibrate(dlu_scale_state *s, const dlu_stats *st);

/* The exponent to use now, always in [DLU_EXP_MIN, dlu_format_exp_max(fmt)]. */
int dlu_scale_exp(const dlu_scale_state *s);

/* Feed the statistics of step t (collected while quantizing with dlu_scale_exp(s)) and
 * return the exponent for step t+1. On an uncalibrated state this is
 * dlu_scale_calibrate(s, st). st == NULL is a no-op. See docs/numerics.md 12.3 for the
 * order of the emergency rule, the interval and hysteresis. */
int dlu_scale_update(dlu_scale_state *s, const dlu_stats *st);

/* 1 when the recompute rule fires for step statistics st: cfg.recompute > 0 and the
 * observed overflow fraction of st exceeds it (Fujitsu, US 11,593,620). Pure: it changes
 * nothing. Protocol: call dlu_scale_update(s, st) (which then raises the exponent at
 * once, by at least one), redo the step with dlu_scale_exp(s), and do not feed the
 * redone step's statistics (its histogram is the same; docs/numerics.md 12.3). */
int dlu_scale_want_recompute(const dlu_scale_state *s, const dlu_stats *st);

/* Checkpoint support: a little-endian image of the whole mutable state (exponent,
 * calibration, hysteresis and interval counters, the statistics summed since the last
 * decision, the history window), with a CRC-32. Its size depends only on the policy:
 * 1124 + 2 * history bytes for amax and autoflex, 1124 for the others (layout in
 * docs/numerics.md 12.6). */
size_t dlu_scale_state_nbytes(const dlu_scale_state *s);

/* Write dlu_scale_state_nbytes(s) bytes to buf. */
void dlu_scale_state_save(const dlu_scale_state *s, void *buf);

/* Restore s from an image. The image must come from a state of the same policy kind,
 * format and history length (the tunable parameters of s's own cfg stay in force).
 * Returns DLU_OK; DLU_EFORMAT (wrong size, magic, or a field out of range),
 * DLU_EVERSION, DLU_ECORRUPT (CRC mismatch) or DLU_EINVAL (kind/format/history differ),
 * each with a message; s is unchanged on failure. */
dlu_status dlu_scale_state_load(dlu_scale_state *s, const void *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* DLU_SCALE_H */
