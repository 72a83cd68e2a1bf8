/* scale.c -- scaling policies: the exponent of step t+1 from the statistics of step t.
 *
 * What it is: the six policies of dlu/scale.h (overflow, max, amax, autoflex,
 * percentile, onebit), the machinery they share (interval, hysteresis, margin,
 * emergency step-up, recompute rule, calibration), the spec parser and the checkpoint
 * image. docs/numerics.md section 12 is the contract this file implements; each rule
 * below names its subsection.
 *
 * What it is not: not quantization (dlu/numerics.h) and not a device kernel. Integer
 * arithmetic on the histogram wherever possible; the few doubles (fractions times counts,
 * Autoflex's mean and standard deviation) are IEEE operations in a fixed order, built
 * with -ffp-contract=off like the rest of the library, so the results are the same on
 * every host. */
#include "dlu/scale.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------------------------- */
/* Names and parameters                                                               */
/* ---------------------------------------------------------------------------------- */

static const char *const kind_names[] = {
#define DLU__SCALE_NAME(NAME, str) str,
    DLU_SCALE_KINDS(DLU__SCALE_NAME)
#undef DLU__SCALE_NAME
};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == DLU_SCALE_COUNT, "DLU_SCALE_KINDS and names disagree");

const char *dlu_scale_kind_name(dlu_scale_kind kind)
{
    return (unsigned)kind < DLU_SCALE_COUNT ? kind_names[kind] : "unknown";
}

#define KIND_BIT(NAME) (1u << DLU_SCALE_##NAME)
#define ALL_KINDS ((1u << DLU_SCALE_COUNT) - 1u)
#define HISTORY_KINDS (KIND_BIT(AMAX) | KIND_BIT(AUTOFLEX))

/* One row per configurable key, in canonical order. The range is [lo, hi] with either
 * end open when lo_open/hi_open; integer keys are stored as int, the others as double. */
typedef struct key_def {
    const char *name;
    unsigned kinds; /* policies that take the key */
    int is_int;
    double lo, hi;
    int lo_open, hi_open;
    size_t off; /* offsetof(dlu_scale_cfg, field) */
} key_def;

static const key_def keys[] = {
    {"rate", KIND_BIT(OVERFLOW) | KIND_BIT(ONEBIT), 0, 0, 1, 0, 1, offsetof(dlu_scale_cfg, rate)},
    {"p", KIND_BIT(PERCENTILE), 0, 0, 100, 1, 0, offsetof(dlu_scale_cfg, percentile)},
    {"history", HISTORY_KINDS, 1, 1, DLU_SCALE_HISTORY_MAX, 0, 0, offsetof(dlu_scale_cfg, history)},
    {"nstd", KIND_BIT(AUTOFLEX), 0, 0, 100, 0, 0, offsetof(dlu_scale_cfg, nstd)},
    {"offset", KIND_BIT(AUTOFLEX), 0, 0, 1, 0, 0, offsetof(dlu_scale_cfg, offset)},
    {"interval", ALL_KINDS, 1, 1, 1000000, 0, 0, offsetof(dlu_scale_cfg, interval)},
    {"margin", ALL_KINDS, 1, -64, 64, 0, 0, offsetof(dlu_scale_cfg, margin)},
    {"hysteresis", ALL_KINDS, 1, 1, 1000000, 0, 0, offsetof(dlu_scale_cfg, hysteresis)},
    {"emergency", ALL_KINDS, 0, 0, 1, 0, 0, offsetof(dlu_scale_cfg, emergency)},
    {"recompute", ALL_KINDS, 0, 0, 1, 0, 0, offsetof(dlu_scale_cfg, recompute)},
};
#define NKEYS (sizeof keys / sizeof keys[0])

void dlu_scale_cfg_default(dlu_scale_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->kind = DLU_SCALE_OVERFLOW;
    c->rate = 1e-4;
    c->interval = 1;
    c->margin = 0;
    c->hysteresis = 1;
    c->emergency = 0.01;
    c->recompute = 0;
    c->history = 16;
    c->percentile = 99.99;
    c->nstd = 3;
    c->offset = 100.0 / 32768.0; /* exact: 25 * 2^-13 */
}

static double key_get(const dlu_scale_cfg *c, const key_def *k)
{
    const char *p = (const char *)c + k->off;
    if (k->is_int) {
        int v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    double v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void key_set(dlu_scale_cfg *c, const key_def *k, double v)
{
    char *p = (char *)c + k->off;
    if (v == 0)
        v = 0; /* -0 -> +0, so that the canonical form never says "-0" */
    if (k->is_int) {
        int i = (int)v;
        memcpy(p, &i, sizeof i);
    } else {
        memcpy(p, &v, sizeof v);
    }
}

static int key_in_range(const key_def *k, double v)
{
    if (!(k->lo_open ? v > k->lo : v >= k->lo))
        return 0; /* NaN fails here */
    return k->hi_open ? v < k->hi : v <= k->hi;
}

static void key_range_text(const key_def *k, char *buf, size_t n)
{
    snprintf(buf, n, "%c%.15g, %.15g%c", k->lo_open ? '(' : '[', k->lo, k->hi, k->hi_open ? ')' : ']');
}

/* "rate, interval, ..." for a policy. */
static void valid_keys_text(dlu_scale_kind kind, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        if (!(keys[i].kinds & (1u << kind)))
            continue;
        int w = snprintf(buf + len, n - len, "%s%s", len ? ", " : "", keys[i].name);
        if (w < 0 || (size_t)w >= n - len)
            return;
        len += (size_t)w;
    }
}

static void valid_policies_text(char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < DLU_SCALE_COUNT; i++) {
        int w = snprintf(buf + len, n - len, "%s%s", i ? ", " : "", kind_names[i]);
        if (w < 0 || (size_t)w >= n - len)
            return;
        len += (size_t)w;
    }
}

/* Check every field that the policy uses. */
static dlu_status cfg_check(const dlu_scale_cfg *c)
{
    if ((unsigned)c->kind >= DLU_SCALE_COUNT)
        return dlu__error(DLU_EINVAL, "scale policy: kind %d is not a policy", (int)c->kind);
    for (size_t i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        if (!(k->kinds & (1u << c->kind)))
            continue;
        const double v = key_get(c, k);
        if (!key_in_range(k, v)) {
            char range[96];
            key_range_text(k, range, sizeof range);
            return dlu__error(DLU_EINVAL, "scale policy %s: %s = %.17g is out of range %s", kind_names[c->kind],
                              k->name, v, range);
        }
    }
    return DLU_OK;
}

/* Integers as integers ("100", not "1e+02"), else the shortest "%.Ng" that reads back
 * as v. */
static void fmt_double(double v, char *buf, size_t n)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

int dlu_scale_format_spec(const dlu_scale_cfg *c, char *buf, size_t n)
{
    char out[512], num[40];
    size_t len;
    int first = 1;
    const dlu_scale_kind kind = c->kind;

    len = (size_t)snprintf(out, sizeof out, "%s", dlu_scale_kind_name(kind));
    for (size_t i = 0; (unsigned)kind < DLU_SCALE_COUNT && i < NKEYS; i++) {
        const key_def *k = &keys[i];
        if (!(k->kinds & (1u << kind)))
            continue;
        if (k->is_int)
            snprintf(num, sizeof num, "%d", (int)key_get(c, k));
        else
            fmt_double(key_get(c, k), num, sizeof num);
        len += (size_t)snprintf(out + len, sizeof out - len, "%c%s=%s", first ? ':' : ',', k->name, num);
        first = 0;
    }
    if (n > 0)
        snprintf(buf, n, "%s", out);
    return (int)len;
}

/* Parse one value for key k from text v (NUL-terminated). */
static dlu_status parse_value(const char *spec, const key_def *k, const char *v, double *out)
{
    char *end;
    double x;

    errno = 0;
    if (k->is_int) {
        long l = strtol(v, &end, 10);
        if (end == v || *end || errno == ERANGE || l < INT_MIN || l > INT_MAX)
            return dlu__error(DLU_EINVAL, "scale policy '%s': %s '%s' is not an integer", spec, k->name, v);
        x = (double)l;
    } else {
        x = strtod(v, &end);
        if (end == v || *end || !isfinite(x) || (errno == ERANGE && fabs(x) > 1.0))
            return dlu__error(DLU_EINVAL, "scale policy '%s': %s '%s' is not a number", spec, k->name, v);
    }
    if (!key_in_range(k, x)) {
        char range[96];
        key_range_text(k, range, sizeof range);
        return dlu__error(DLU_EINVAL, "scale policy '%s': %s '%s' is out of range %s", spec, k->name, v, range);
    }
    *out = x;
    return DLU_OK;
}

dlu_status dlu_scale_parse(const char *spec, dlu_scale_cfg *out)
{
    char buf[512], valid[256];
    dlu_scale_cfg c;
    unsigned seen = 0;
    char *args, *item;
    int kind = -1;

    if (!spec || !out)
        return dlu__error(DLU_EINVAL, "scale policy: NULL argument");
    if (strlen(spec) >= sizeof buf)
        return dlu__error(DLU_EINVAL, "scale policy '%.40s...': longer than %zu characters", spec, sizeof buf - 1);
    memcpy(buf, spec, strlen(spec) + 1);
    args = strchr(buf, ':');
    if (args)
        *args++ = '\0';
    for (int i = 0; i < DLU_SCALE_COUNT; i++)
        if (!strcmp(buf, kind_names[i]))
            kind = i;
    if (kind < 0) {
        valid_policies_text(valid, sizeof valid);
        if (!buf[0])
            return dlu__error(DLU_EINVAL, "scale policy '%s': no policy named (valid policies: %s)", spec, valid);
        return dlu__error(DLU_EINVAL, "scale policy '%s': unknown policy '%s' (valid policies: %s)", spec, buf, valid);
    }
    dlu_scale_cfg_default(&c);
    c.kind = (dlu_scale_kind)kind;
    valid_keys_text(c.kind, valid, sizeof valid);
    if (args && !*args)
        return dlu__error(DLU_EINVAL, "scale policy '%s': nothing after ':' (valid keys for %s: %s)", spec,
                          kind_names[kind], valid);
    for (item = args; item;) {
        char *next = strchr(item, ',');
        if (next)
            *next++ = '\0';
        char *eq = strchr(item, '=');
        if (!*item)
            return dlu__error(DLU_EINVAL, "scale policy '%s': empty item (expected key=value; valid keys for %s: %s)",
                              spec, kind_names[kind], valid);
        if (!eq)
            return dlu__error(DLU_EINVAL, "scale policy '%s': '%s' is not key=value (valid keys for %s: %s)", spec,
                              item, kind_names[kind], valid);
        *eq = '\0';
        const char *v = eq + 1;
        size_t i;
        for (i = 0; i < NKEYS; i++)
            if (!strcmp(item, keys[i].name))
                break;
        if (i == NKEYS)
            return dlu__error(DLU_EINVAL, "scale policy '%s': unknown key '%s' (valid keys for %s: %s)", spec, item,
                              kind_names[kind], valid);
        if (!(keys[i].kinds & (1u << kind)))
            return dlu__error(DLU_EINVAL,
                              "scale policy '%s': key '%s' does not apply to policy %s (valid keys for %s: %s)", spec,
                              item, kind_names[kind], kind_names[kind], valid);
        if (seen & (1u << i))
            return dlu__error(DLU_EINVAL, "scale policy '%s': key '%s' given twice", spec, item);
        seen |= 1u << i;
        double x = 0;
        DLU__TRY(parse_value(spec, &keys[i], v, &x));
        key_set(&c, &keys[i], x);
        item = next;
    }
    *out = c;
    return DLU_OK;
}

/* ---------------------------------------------------------------------------------- */
/* State                                                                              */
/* ---------------------------------------------------------------------------------- */

struct dlu_scale_state {
    dlu_scale_cfg cfg;
    dlu_format fmt;
    int bits;            /* b: 8 or 16 */
    int exp;             /* exponent to use now */
    int calibrated;      /* 0 or 1 */
    uint32_t since;      /* informative steps summed into acc since the last decision */
    uint32_t down_count; /* consecutive decisions that proposed a lower exponent */
    int down_max;        /* the highest of those proposals; 0 while down_count == 0 */
    dlu_stats acc;       /* statistics summed since the last decision */
    int hcap;            /* history slots: cfg.history for amax/autoflex, else 0 */
    int hlen, hpos;      /* filled slots; next slot to write */
    int16_t ring[];      /* (hcap) amax: top bin k; autoflex: log2 of the recorded maximum */
};

static int exp_hi(const dlu_scale_state *s)
{
    return dlu_format_exp_max(s->fmt);
}

static int clamp_exp(const dlu_scale_state *s, long long e)
{
    if (e < DLU_EXP_MIN)
        return DLU_EXP_MIN;
    if (e > exp_hi(s))
        return exp_hi(s);
    return (int)e;
}

dlu_status dlu_scale_state_new(const dlu_scale_cfg *c, dlu_format fmt, dlu_scale_state **out)
{
    if (!out)
        return dlu__error(DLU_EINVAL, "dlu_scale_state_new: out is NULL");
    *out = NULL;
    if (!c)
        return dlu__error(DLU_EINVAL, "dlu_scale_state_new: cfg is NULL");
    if (!dlu_format_is_dfp(fmt))
        return dlu__error(DLU_EINVAL, "scale policy: format %s is not a DFP format (expected dfp8 or dfp16)",
                          dlu_format_name(fmt));
    DLU__TRY(cfg_check(c));
    const int hcap = (HISTORY_KINDS & (1u << c->kind)) ? c->history : 0;
    dlu_scale_state *s = calloc(1, sizeof *s + (size_t)hcap * sizeof s->ring[0]);
    if (!s)
        return dlu__error(DLU_ENOMEM, "scale policy: out of memory");
    s->cfg = *c;
    s->fmt = fmt;
    s->bits = dlu_format_bits(fmt);
    s->exp = 2 - s->bits;
    s->hcap = hcap;
    dlu_stats_clear(&s->acc);
    *out = s;
    return DLU_OK;
}

void dlu_scale_state_free(dlu_scale_state *s)
{
    free(s);
}

const dlu_scale_cfg *dlu_scale_state_cfg(const dlu_scale_state *s)
{
    return &s->cfg;
}

dlu_format dlu_scale_state_format(const dlu_scale_state *s)
{
    return s->fmt;
}

int dlu_scale_calibrated(const dlu_scale_state *s)
{
    return s->calibrated;
}

int dlu_scale_exp(const dlu_scale_state *s)
{
    return s->exp;
}

/* ---------------------------------------------------------------------------------- */
/* Histogram arithmetic (docs/numerics.md 12.1)                                       */
/* ---------------------------------------------------------------------------------- */

/* n: the nonzero values, sum(hist). */
static uint64_t nonzero(const dlu_stats *st)
{
    uint64_t n = 0;
    for (int i = 0; i < DLU_STATS_NBINS; i++)
        n += st->hist[i];
    return n;
}

/* Highest bin k holding a value; only called when nonzero(st) > 0. */
static int top_k(const dlu_stats *st)
{
    for (int i = DLU_STATS_NBINS - 1; i >= 0; i--)
        if (st->hist[i])
            return i + DLU_STATS_KMIN;
    return DLU_STATS_KMIN;
}

/* tail(j) = sum of hist[k] for k >= j: the values that certainly saturate when the
 * saturation point is 2^j, j = e + b - 1. Clamped bins count as their edge k (12.1). */
static uint64_t tail(const dlu_stats *st, int j)
{
    uint64_t t = 0;
    if (j < DLU_STATS_KMIN)
        j = DLU_STATS_KMIN;
    for (int k = j; k <= DLU_STATS_KMAX; k++)
        t += st->hist[k - DLU_STATS_KMIN];
    return t;
}

/* Binary representations of decimal fractions are off by ~1e-16 relative; the factor
 * 1 +- 1e-12 makes an r * n that is an integer in decimal count as that integer, for
 * n < 10^12 (12.1). */
#define FRAC_SLACK 1e-12

/* floor(r * n * (1 + 1e-12)), at most n: how many of n values a fraction r allows. */
static uint64_t allowed_count(uint64_t n, double r)
{
    const double x = r * (double)n * (1.0 + FRAC_SLACK);
    if (x >= (double)n)
        return n;
    return (uint64_t)floor(x);
}

/* ceil(p/100 * n * (1 - 1e-12)), at most n: how many of n values must lie below the
 * saturation point. */
static uint64_t needed_count(uint64_t n, double p)
{
    const double x = p / 100.0 * (double)n * (1.0 - FRAC_SLACK);
    if (x >= (double)n)
        return n;
    return (uint64_t)ceil(x);
}

/* The smallest saturation bin j in [KMIN, KMAX + 1] with tail(j) <= allowed. */
static int smallest_j(const dlu_stats *st, uint64_t allowed)
{
    int j = DLU_STATS_KMAX + 1;
    uint64_t t = 0; /* tail(j) */
    while (j > DLU_STATS_KMIN) {
        const uint64_t t1 = t + st->hist[j - 1 - DLU_STATS_KMIN]; /* tail(j - 1) */
        if (t1 > allowed)
            break;
        t = t1;
        j--;
    }
    return j;
}

/* The exponent whose saturation point is 2^j, plus the margin: j - (b - 1) + margin. */
static int exp_for_j(const dlu_scale_state *s, int j)
{
    return clamp_exp(s, (long long)j - (s->bits - 1) + s->cfg.margin);
}

/* ---------------------------------------------------------------------------------- */
/* The rules (12.2, 12.3)                                                             */
/* ---------------------------------------------------------------------------------- */

/* Forget a pending move down (down_max means something only while down_count > 0;
 * keeping it 0 otherwise lets save -> load -> save reproduce an image byte for byte). */
static void reset_down(dlu_scale_state *s)
{
    s->down_count = 0;
    s->down_max = 0;
}

static void ring_clear(dlu_scale_state *s)
{
    s->hlen = s->hpos = 0;
    if (s->hcap > 0)
        memset(s->ring, 0, (size_t)s->hcap * sizeof s->ring[0]);
}

static void ring_push(dlu_scale_state *s, int v)
{
    if (s->hcap == 0)
        return;
    s->ring[s->hpos] = (int16_t)v;
    s->hpos = (s->hpos + 1) % s->hcap;
    if (s->hlen < s->hcap)
        s->hlen++;
}

/* The i-th oldest entry, 0 <= i < hlen. */
static int ring_at(const dlu_scale_state *s, int i)
{
    return s->ring[(s->hpos - s->hlen + i + s->hcap) % s->hcap];
}

/* Record one informative step in the history. amax: its top bin. autoflex: log2 of its
 * maximum 2^k; when the step overflowed, the history is cleared first and the maximum
 * recorded doubled (Koster et al. 2017 reset the statistics and add one bit on overflow;
 * Nervana's code clears its deque and doubles the saturated maximum). */
static void record_history(dlu_scale_state *s, const dlu_stats *st)
{
    const int k = top_k(st);
    if (s->cfg.kind == DLU_SCALE_AMAX) {
        ring_push(s, k);
    } else if (s->cfg.kind == DLU_SCALE_AUTOFLEX) {
        if (st->overflow > 0) {
            ring_clear(s);
            ring_push(s, k + 1);
        } else {
            ring_push(s, k);
        }
    }
}

/* Autoflex: with h_i = 2^ring_i, oldest first,
 *   maxval = max(h) + nstd * std(h) + offset * 2^(e+b-1)     (std: population, 1/L)
 *   e'     = floor(log2 maxval) - (b - 2) + margin. */
static int autoflex_proposal(const dlu_scale_state *s)
{
    const int L = s->hlen;
    double mx = 0, sum = 0, var = 0, mean, maxval;
    int ex;

    for (int i = 0; i < L; i++) {
        const double h = ldexp(1.0, ring_at(s, i));
        sum += h;
        if (h > mx)
            mx = h;
    }
    mean = sum / L;
    for (int i = 0; i < L; i++) {
        const double d = ldexp(1.0, ring_at(s, i)) - mean;
        var += d * d;
    }
    var /= L;
    maxval = mx + s->cfg.nstd * sqrt(var);
    maxval += s->cfg.offset * ldexp(1.0, s->exp + s->bits - 1);
    (void)frexp(maxval, &ex); /* maxval = f * 2^ex, f in [0.5, 1): floor(log2 maxval) = ex - 1 */
    return clamp_exp(s, (long long)(ex - 1) - (s->bits - 2) + s->cfg.margin);
}

/* The rule's exponent from statistics st (one step's, or those summed over an interval)
 * and the history. s->exp when there is nothing to go by. at_exp: st was produced with
 * the exponent now in force (one step's statistics, no change since), so its observed
 * overflow count may be trusted for that exponent. */
static int proposal(const dlu_scale_state *s, const dlu_stats *st, int at_exp)
{
    const uint64_t n = nonzero(st);

    switch (s->cfg.kind) {
    case DLU_SCALE_OVERFLOW: {
        if (n == 0)
            return s->exp;
        const uint64_t allowed = allowed_count(n, s->cfg.rate);
        const int p = exp_for_j(s, smallest_j(st, allowed));
        /* The histogram cannot see values just under the saturation point that round up
         * to it (bin e+b-2); the observed overflow can. Those statistics were produced at
         * the current exponent, so at least as much overflow would recur there or lower. */
        if (at_exp && st->overflow > allowed && p <= s->exp)
            return clamp_exp(s, (long long)s->exp + 1);
        return p;
    }
    case DLU_SCALE_MAX:
        if (n == 0)
            return s->exp;
        return exp_for_j(s, top_k(st) + 1);
    case DLU_SCALE_PERCENTILE:
        if (n == 0)
            return s->exp;
        return exp_for_j(s, smallest_j(st, n - needed_count(n, s->cfg.percentile)));
    case DLU_SCALE_AMAX: {
        if (s->hlen == 0)
            return s->exp;
        int k = DLU_STATS_KMIN;
        for (int i = 0; i < s->hlen; i++)
            if (ring_at(s, i) > k)
                k = ring_at(s, i);
        return exp_for_j(s, k + 1);
    }
    case DLU_SCALE_AUTOFLEX:
        if (s->hlen == 0)
            return s->exp;
        return autoflex_proposal(s);
    case DLU_SCALE_ONEBIT: {
        if (n == 0)
            return s->exp;
        const uint64_t allowed = allowed_count(n, s->cfg.rate);
        const int j = s->exp - s->cfg.margin + s->bits - 1; /* saturation point of e - margin */
        if (tail(st, j) > allowed)
            return clamp_exp(s, (long long)s->exp + 1);
        if (tail(st, j - 1) <= allowed)
            return clamp_exp(s, (long long)s->exp - 1);
        return s->exp;
    }
    default:
        return s->exp;
    }
}

/* Calibration (12.4): the rule without hysteresis, from the tensor's own statistics;
 * onebit uses the overflow rule (its fixed point), amax and autoflex the max rule
 * (their history then holds just this step). */
int dlu_scale_calibrate(dlu_scale_state *s, const dlu_stats *st)
{
    if (!st || nonzero(st) == 0)
        return s->exp;
    ring_clear(s);
    s->since = 0;
    reset_down(s);
    dlu_stats_clear(&s->acc);
    switch (s->cfg.kind) {
    case DLU_SCALE_ONEBIT:
        s->exp = exp_for_j(s, smallest_j(st, allowed_count(nonzero(st), s->cfg.rate)));
        break;
    case DLU_SCALE_AMAX:
    case DLU_SCALE_AUTOFLEX:
        ring_push(s, top_k(st));
        s->exp = exp_for_j(s, top_k(st) + 1);
        break;
    default:
        s->exp = proposal(s, st, 0); /* calibration statistics come from a trial exponent */
        break;
    }
    s->calibrated = 1;
    return s->exp;
}

/* Is the observed overflow fraction of a step above r (> 0)? */
static int overflow_exceeds(const dlu_stats *st, double r)
{
    const uint64_t n = nonzero(st);
    return r > 0 && n > 0 && st->overflow > allowed_count(n, r);
}

int dlu_scale_want_recompute(const dlu_scale_state *s, const dlu_stats *st)
{
    return st != NULL && overflow_exceeds(st, s->cfg.recompute);
}

/* Apply a decision's proposal p: up at once; down only after `hysteresis` consecutive
 * lower proposals, to the highest of them; an equal proposal breaks the run. */
static void decide(dlu_scale_state *s, int p)
{
    if (p > s->exp) {
        s->exp = p;
        reset_down(s);
    } else if (p < s->exp) {
        s->down_max = s->down_count == 0 || p > s->down_max ? p : s->down_max;
        s->down_count++;
        if (s->down_count >= (uint32_t)s->cfg.hysteresis) {
            s->exp = s->down_max;
            reset_down(s);
        }
    } else {
        reset_down(s);
    }
}

int dlu_scale_update(dlu_scale_state *s, const dlu_stats *st)
{
    if (!st)
        return s->exp;
    if (!s->calibrated)
        return dlu_scale_calibrate(s, st);
    if (nonzero(st) == 0) /* no information about scale: ignored entirely */
        return s->exp;

    record_history(s, st);
    dlu_stats_merge(&s->acc, st);
    s->since++;

    /* Emergency and recompute: up at once, by at least one, from this step alone. */
    int bumped = 0;
    if (overflow_exceeds(st, s->cfg.emergency) || overflow_exceeds(st, s->cfg.recompute)) {
        int p = proposal(s, st, 1);
        if (p <= s->exp)
            p = clamp_exp(s, (long long)s->exp + 1);
        bumped = p > s->exp;
        s->exp = p;
        reset_down(s);
    }

    /* The decision, every `interval` informative steps, on their summed statistics. When
     * a step-up above already acted on this step, a decision due now is skipped (onebit
     * would otherwise count the step twice); the interval starts again either way. */
    if (s->since >= (uint32_t)s->cfg.interval) {
        if (!bumped)
            decide(s, proposal(s, &s->acc, s->cfg.interval == 1));
        dlu_stats_clear(&s->acc);
        s->since = 0;
    }
    return s->exp;
}

/* ---------------------------------------------------------------------------------- */
/* Checkpoint image (12.6)                                                            */
/* ---------------------------------------------------------------------------------- */

#define IMG_MAGIC "DLUSCALE"
#define IMG_VERSION 1u
#define IMG_HEADER 56                          /* bytes before the statistics */
#define IMG_STATS ((DLU_STATS_NBINS + 5) * 8)  /* 1064 */
#define IMG_FIXED (IMG_HEADER + IMG_STATS + 4) /* 1124: everything but the history */

/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320; the same value as zlib's crc32()). */
static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int16_t get16s(const uint8_t *p)
{
    return (int16_t)(uint16_t)(p[0] | (unsigned)p[1] << 8);
}

size_t dlu_scale_state_nbytes(const dlu_scale_state *s)
{
    return IMG_FIXED + 2u * (size_t)s->hcap;
}

void dlu_scale_state_save(const dlu_scale_state *s, void *buf)
{
    uint8_t *p = buf;
    const size_t n = dlu_scale_state_nbytes(s);
    size_t o = IMG_HEADER;

    memcpy(p, IMG_MAGIC, 8);
    put32(p + 8, IMG_VERSION);
    put32(p + 12, (uint32_t)n);
    put32(p + 16, (uint32_t)s->cfg.kind);
    put32(p + 20, (uint32_t)s->fmt);
    put32(p + 24, (uint32_t)s->hcap);
    put32(p + 28, (uint32_t)s->exp);
    put32(p + 32, (uint32_t)s->calibrated);
    put32(p + 36, s->since);
    put32(p + 40, s->down_count);
    put32(p + 44, (uint32_t)s->down_max);
    put32(p + 48, (uint32_t)s->hlen);
    put32(p + 52, (uint32_t)s->hpos);
    for (int i = 0; i < DLU_STATS_NBINS; i++, o += 8)
        put64(p + o, s->acc.hist[i]);
    put64(p + o, s->acc.count), o += 8;
    put64(p + o, s->acc.zeros), o += 8;
    put64(p + o, s->acc.overflow), o += 8;
    put64(p + o, s->acc.underflow), o += 8;
    put64(p + o, s->acc.nan), o += 8;
    for (int i = 0; i < s->hcap; i++, o += 2) {
        const uint16_t v = (uint16_t)s->ring[i];
        p[o] = (uint8_t)v;
        p[o + 1] = (uint8_t)(v >> 8);
    }
    put32(p + o, crc32_ieee(p, o));
}

dlu_status dlu_scale_state_load(dlu_scale_state *s, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    const size_t want = dlu_scale_state_nbytes(s);

    if (!buf)
        return dlu__error(DLU_EINVAL, "scale state: NULL buffer");
    if (n < IMG_HEADER || memcmp(p, IMG_MAGIC, 8) != 0)
        return dlu__error(DLU_EFORMAT, "scale state: not a scale-policy image (bad magic or only %zu bytes)", n);
    if (get32(p + 8) != IMG_VERSION)
        return dlu__error(DLU_EVERSION, "scale state: image version %u, this build reads version %u",
                          (unsigned)get32(p + 8), IMG_VERSION);
    if (get32(p + 12) != n || n < IMG_FIXED)
        return dlu__error(DLU_EFORMAT, "scale state: image claims %u bytes, buffer holds %zu",
                          (unsigned)get32(p + 12), n);
    if (get32(p + n - 4) != crc32_ieee(p, n - 4))
        return dlu__error(DLU_ECORRUPT, "scale state: CRC-32 mismatch (image damaged)");
    const uint32_t kind = get32(p + 16), fmt = get32(p + 20), hcap = get32(p + 24);
    if (kind != (uint32_t)s->cfg.kind || fmt != (uint32_t)s->fmt || hcap != (uint32_t)s->hcap || n != want)
        return dlu__error(DLU_EINVAL,
                          "scale state: image is of policy %s, format %s, history %u; this state is %s, %s, "
                          "history %d",
                          dlu_scale_kind_name((dlu_scale_kind)kind), dlu_format_name((dlu_format)fmt),
                          (unsigned)hcap, kind_names[s->cfg.kind], dlu_format_name(s->fmt), s->hcap);

    const int exp = (int)get32(p + 28), down_max = (int)get32(p + 44);
    const uint32_t cal = get32(p + 32), since = get32(p + 36), down_count = get32(p + 40);
    const uint32_t hlen = get32(p + 48), hpos = get32(p + 52);
    const size_t ring_off = IMG_HEADER + IMG_STATS;
    if (exp < DLU_EXP_MIN || exp > exp_hi(s))
        return dlu__error(DLU_EFORMAT, "scale state: exponent %d outside [%d, %d]", exp, DLU_EXP_MIN, exp_hi(s));
    if (cal > 1 || since > 1000000 || down_count > 1000000)
        return dlu__error(DLU_EFORMAT, "scale state: counters out of range (calibrated %u, since %u, down %u)",
                          (unsigned)cal, (unsigned)since, (unsigned)down_count);
    if (down_count > 0 ? (down_max < DLU_EXP_MIN || down_max > exp_hi(s)) : down_max != 0)
        return dlu__error(DLU_EFORMAT, "scale state: pending exponent %d (after %u proposals) outside [%d, %d]",
                          down_max, (unsigned)down_count, DLU_EXP_MIN, exp_hi(s));
    if (hlen > hcap || (hcap > 0 ? hpos >= hcap : hpos != 0))
        return dlu__error(DLU_EFORMAT, "scale state: history fill %u / position %u for %u slots", (unsigned)hlen,
                          (unsigned)hpos, (unsigned)hcap);
    for (uint32_t i = 0; i < hcap; i++) {
        const int v = get16s(p + ring_off + 2 * i);
        if (v < DLU_STATS_KMIN || v > DLU_STATS_KMAX + 1)
            return dlu__error(DLU_EFORMAT, "scale state: history entry %u = %d outside [%d, %d]", (unsigned)i, v,
                              DLU_STATS_KMIN, DLU_STATS_KMAX + 1);
    }

    /* Everything checked: commit. */
    size_t o = IMG_HEADER;
    s->exp = exp;
    s->calibrated = (int)cal;
    s->since = since;
    s->down_count = down_count;
    s->down_max = down_max;
    s->hlen = (int)hlen;
    s->hpos = (int)hpos;
    for (int i = 0; i < DLU_STATS_NBINS; i++, o += 8)
        s->acc.hist[i] = get64(p + o);
    s->acc.count = get64(p + o), o += 8;
    s->acc.zeros = get64(p + o), o += 8;
    s->acc.overflow = get64(p + o), o += 8;
    s->acc.underflow = get64(p + o), o += 8;
    s->acc.nan = get64(p + o), o += 8;
    for (int i = 0; i < s->hcap; i++, o += 2)
        s->ring[i] = get16s(p + o);
    return DLU_OK;
}
