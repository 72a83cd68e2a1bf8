/* precision.c -- parsing and checking per-class formats and rounding modes. */
#include <stdio.h>
#include <string.h>

#include "dlu/precision.h"
#include "error.h"

static const char *const class_names[DLU_CLASS_COUNT] = {"w", "a", "e", "g"};

const char *dlu_class_name(dlu_tensor_class c) { return (unsigned)c < DLU_CLASS_COUNT ? class_names[c] : "?"; }

void dlu_precision_default(dlu_precision *p)
{
    for (int c = 0; c < DLU_CLASS_COUNT; c++)
        p->fmt[c] = DLU_FMT_FP32;
    p->round[DLU_CLASS_W] = p->round[DLU_CLASS_A] = DLU_ROUND_NEAREST;
    p->round[DLU_CLASS_E] = p->round[DLU_CLASS_G] = DLU_ROUND_STOCHASTIC;
}

static int lookup_format(const char *s, size_t len)
{
    for (int f = 0; f < DLU_FMT_COUNT; f++)
        if (strlen(dlu_format_name((dlu_format)f)) == len && !strncmp(s, dlu_format_name((dlu_format)f), len))
            return f;
    return -1;
}

static int lookup_round(const char *s, size_t len)
{
    for (int r = 0; r < DLU_ROUND_COUNT; r++)
        if (strlen(dlu_round_name((dlu_round)r)) == len && !strncmp(s, dlu_round_name((dlu_round)r), len))
            return r;
    return -1;
}

/* "VALUE" (all classes) or "c=VALUE,c=VALUE,..." with every class exactly once. */
static dlu_status parse_spec(const char *what, const char *spec, int (*lookup)(const char *, size_t),
                             const char *accepted, int out[DLU_CLASS_COUNT])
{
    if (!spec || !*spec)
        return dlu__error(DLU_EINVAL, "%s: empty (expected %s, or w=..,a=..,e=..,g=..)", what, accepted);
    if (!strchr(spec, '=')) {
        int v = lookup(spec, strlen(spec));
        if (v < 0)
            return dlu__error(DLU_EINVAL, "%s '%s': unknown (expected %s, or w=..,a=..,e=..,g=..)", what, spec,
                              accepted);
        for (int c = 0; c < DLU_CLASS_COUNT; c++)
            out[c] = v;
        return DLU_OK;
    }
    int seen[DLU_CLASS_COUNT] = {0}, tmp[DLU_CLASS_COUNT] = {0};
    const char *p = spec;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (!eq)
            return dlu__error(DLU_EINVAL, "%s '%s': item '%.*s' is not CLASS=VALUE (classes w, a, e, g)", what, spec,
                              (int)len, p);
        size_t klen = (size_t)(eq - p);
        int c = -1;
        for (int k = 0; k < DLU_CLASS_COUNT; k++)
            if (klen == 1 && p[0] == class_names[k][0])
                c = k;
        if (c < 0)
            return dlu__error(DLU_EINVAL, "%s '%s': unknown tensor class '%.*s' (expected w, a, e or g)", what, spec,
                              (int)klen, p);
        if (seen[c])
            return dlu__error(DLU_EINVAL, "%s '%s': class %s given twice", what, spec, class_names[c]);
        int v = lookup(eq + 1, len - klen - 1);
        if (v < 0)
            return dlu__error(DLU_EINVAL, "%s '%s': '%.*s' for class %s is unknown (expected %s)", what, spec,
                              (int)(len - klen - 1), eq + 1, class_names[c], accepted);
        seen[c] = 1;
        tmp[c] = v;
        p += len;
        if (*p == ',')
            p++;
    }
    for (int c = 0; c < DLU_CLASS_COUNT; c++)
        if (!seen[c])
            return dlu__error(DLU_EINVAL, "%s '%s': class %s missing (give all of w, a, e, g, or one value)", what,
                              spec, class_names[c]);
    memcpy(out, tmp, sizeof tmp);
    return DLU_OK;
}

dlu_status dlu_precision_parse_format(dlu_precision *p, const char *spec)
{
    int v[DLU_CLASS_COUNT] = {0};
    DLU__TRY(parse_spec("--format", spec, lookup_format, "fp32, dfp8 or dfp16", v));
    for (int c = 0; c < DLU_CLASS_COUNT; c++)
        p->fmt[c] = (dlu_format)v[c];
    return DLU_OK;
}

dlu_status dlu_precision_parse_round(dlu_precision *p, const char *spec)
{
    int v[DLU_CLASS_COUNT] = {0};
    DLU__TRY(parse_spec("--round", spec, lookup_round, "nearest or stochastic", v));
    for (int c = 0; c < DLU_CLASS_COUNT; c++)
        p->round[c] = (dlu_round)v[c];
    return DLU_OK;
}

int dlu_precision_is_dfp(const dlu_precision *p) { return dlu_format_is_dfp(p->fmt[DLU_CLASS_A]); }

dlu_status dlu_precision_check(const dlu_precision *p)
{
    int ndfp = 0;
    for (int c = 0; c < DLU_CLASS_COUNT; c++)
        ndfp += dlu_format_is_dfp(p->fmt[c]);
    if (ndfp == 0)
        return DLU_OK;
    for (int c = DLU_CLASS_W; c <= DLU_CLASS_E; c++)
        if (!dlu_format_is_dfp(p->fmt[c])) {
            char buf[80];
            dlu_precision_format_str(p, buf, sizeof buf);
            return dlu__error(DLU_EUNSUPPORTED, "--format %s: class %s is fp32 while others are DFP; supported are "
                              "all fp32, or w, a, e in dfp8/dfp16 with g in dfp8, dfp16 or fp32", buf,
                              class_names[c]);
        }
    return DLU_OK;
}

int dlu_precision_format_str(const dlu_precision *p, char *buf, size_t n)
{
    int same = 1;
    for (int c = 1; c < DLU_CLASS_COUNT; c++)
        same &= p->fmt[c] == p->fmt[0];
    if (same)
        return snprintf(buf, n, "%s", dlu_format_name(p->fmt[0]));
    return snprintf(buf, n, "w=%s,a=%s,e=%s,g=%s", dlu_format_name(p->fmt[0]), dlu_format_name(p->fmt[1]),
                    dlu_format_name(p->fmt[2]), dlu_format_name(p->fmt[3]));
}

int dlu_precision_round_str(const dlu_precision *p, char *buf, size_t n)
{
    int same = 1;
    for (int c = 1; c < DLU_CLASS_COUNT; c++)
        same &= p->round[c] == p->round[0];
    if (same)
        return snprintf(buf, n, "%s", dlu_round_name(p->round[0]));
    return snprintf(buf, n, "w=%s,a=%s,e=%s,g=%s", dlu_round_name(p->round[0]), dlu_round_name(p->round[1]),
                    dlu_round_name(p->round[2]), dlu_round_name(p->round[3]));
}
