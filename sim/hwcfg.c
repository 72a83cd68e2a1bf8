/* hwcfg.c -- the simulated core's parameters: defaults from hwcfg.def, the INI reader
 * (inih) and writer, and the few derived quantities the lowering and the model share.
 *
 * Not here: what the parameters mean for timing (docs/hw_model.md). */
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ------------------------------------------------------------------------------------ */
/* the parameter table, as data                                                         */
/* ------------------------------------------------------------------------------------ */

typedef struct param {
    const char *section, *key, *unit, *comment;
    char type; /* 'I' or 'D' */
    double def, lo, hi;
    size_t offset;
} param;

static const param params[] = {
#define DLU_HW(sec, key, type, unit, def, lo, hi, comment) \
    {#sec, #key, unit, comment, (#type)[0], (double)(def), (double)(lo), (double)(hi), offsetof(dlusim_hwcfg, key)},
#include "sim/hwcfg.def"
#undef DLU_HW
};
enum { NPARAM = sizeof params / sizeof params[0] };

/* The sections in the order of their first key in hwcfg.def. */
static int section_list(const char *out[NPARAM])
{
    int n = 0;
    for (int i = 0; i < NPARAM; i++) {
        int seen = 0;
        for (int j = 0; j < n && !seen; j++)
            seen = !strcmp(out[j], params[i].section);
        if (!seen)
            out[n++] = params[i].section;
    }
    return n;
}

static int find_param(const char *key)
{
    for (int i = 0; i < NPARAM; i++)
        if (!strcmp(params[i].key, key))
            return i;
    return -1;
}

static int known_section(const char *name)
{
    for (int i = 0; i < NPARAM; i++)
        if (!strcmp(params[i].section, name))
            return 1;
    return 0;
}

/* The shortest %g form that strtod reads back to exactly x, so that a written config
 * reads back bit for bit and still shows 4.6 rather than 4.5999999999999996. */
static void fmt_double(char *buf, size_t n, double x)
{
    if (x == floor(x) && fabs(x) < 1e15) { /* whole numbers as such: 1000, not 1e+03 */
        snprintf(buf, n, "%.0f", x);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            return;
    }
}

static void fmt_value(char *buf, size_t n, const param *p, double x)
{
    if (p->type == 'I')
        snprintf(buf, n, "%" PRId64, (int64_t)x);
    else
        fmt_double(buf, n, x);
}

/* ------------------------------------------------------------------------------------ */
/* reader                                                                               */
/* ------------------------------------------------------------------------------------ */

typedef struct load_ctx {
    const char *path;
    FILE *f;
    dlusim_hwcfg *cfg;
    int line;          /* line most recently handed to inih */
    int set_line[NPARAM]; /* line where each key was set, 0 if not yet */
    dlu_status st;     /* first error */
    int err_line;
    int io_error;
} load_ctx;

static void fail(load_ctx *c, dlu_status code, const char *fmt, ...) DLU__PRINTF(3, 4);
static void fail(load_ctx *c, dlu_status code, const char *fmt, ...)
{
    if (c->st != DLU_OK)
        return; /* keep the first error */
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->st = dlu__error(code, "%s:%d: %s", c->path, c->line, msg);
    c->err_line = c->line;
}

static void keys_of(const char *section, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; i < NPARAM; i++)
        if (!strcmp(params[i].section, section)) {
            size_t used = strlen(buf);
            snprintf(buf + used, n - used, "%s%s", used ? ", " : "", params[i].key);
        }
}

static void sections_of(char *buf, size_t n)
{
    const char *secs[NPARAM];
    int ns = section_list(secs);
    buf[0] = '\0';
    for (int i = 0; i < ns; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, n - used, "%s[%s]", i ? ", " : "", secs[i]);
    }
}

/* inih line reader: counts lines (so every message names one) and checks section
 * headers as they go by, since inih tells the handler only about keys. */
static char *reader(char *str, int num, void *stream)
{
    load_ctx *c = stream;
    if (!fgets(str, num, c->f)) {
        if (ferror(c->f))
            c->io_error = 1;
        return NULL;
    }
    c->line++;
    size_t n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(c->f)) {
        fail(c, DLU_EFORMAT, "line longer than %d characters", num - 2);
        int ch;
        while ((ch = fgetc(c->f)) != EOF && ch != '\n')
            ;
    }
    /* Leading blanks are dropped: inih would read an indented line as the continuation
     * of the previous value, which an edited config never means. */
    char *p = str;
    while (*p == ' ' || *p == '\t')
        p++;
    if (p != str)
        memmove(str, p, strlen(p) + 1);
    if (str[0] == '[') {
        const char *q = strchr(str, ']');
        if (q) {
            char name[128];
            size_t len = (size_t)(q - str - 1);
            if (len >= sizeof name)
                len = sizeof name - 1;
            memcpy(name, str + 1, len);
            name[len] = '\0';
            if (!known_section(name)) {
                char secs[256];
                sections_of(secs, sizeof secs);
                fail(c, DLU_EFORMAT, "unknown section [%s] (expected one of %s)", name, secs);
            }
        }
    }
    return str;
}

static void parse_value(load_ctx *c, int pi, const char *section, const char *value)
{
    const param *p = &params[pi];
    char lo[32], hi[32], shown[64];
    fmt_value(lo, sizeof lo, p, p->lo);
    fmt_value(hi, sizeof hi, p, p->hi);
    snprintf(shown, sizeof shown, "%s", value);
    double x;
    char *end;
    errno = 0;
    if (p->type == 'I') {
        long long v = strtoll(value, &end, 10);
        if (end == value || *end) {
            /* say which: a fraction, text after the number, or no number at all */
            char *dend;
            (void)strtod(value, &dend);
            if (end != value && dend != end && !*dend)
                fail(c, DLU_EFORMAT, "[%s] %s = '%s': expected an integer (%s), not a fraction", section, p->key,
                     shown, p->unit);
            else if (end != value)
                fail(c, DLU_EFORMAT, "[%s] %s = '%s': unexpected text after the integer", section, p->key, shown);
            else
                fail(c, DLU_EFORMAT, "[%s] %s = '%s': not a number (expected an integer, %s)", section, p->key,
                     shown, p->unit);
            return;
        }
        if (errno == ERANGE || (double)v < p->lo || (double)v > p->hi) {
            fail(c, DLU_EFORMAT, "[%s] %s = %s is out of range: expected %s .. %s %s", section, p->key, shown, lo,
                 hi, p->unit);
            return;
        }
        *(int64_t *)((char *)c->cfg + p->offset) = (int64_t)v;
        return;
    }
    x = strtod(value, &end);
    if (end == value) {
        fail(c, DLU_EFORMAT, "[%s] %s = '%s': not a number (expected a number, %s)", section, p->key, shown,
             p->unit);
        return;
    }
    if (*end) {
        fail(c, DLU_EFORMAT, "[%s] %s = '%s': unexpected text after the number", section, p->key, shown);
        return;
    }
    if (!isfinite(x) || x < p->lo || x > p->hi) {
        fail(c, DLU_EFORMAT, "[%s] %s = %s is out of range: expected %s .. %s %s", section, p->key, shown, lo, hi,
             p->unit);
        return;
    }
    *(double *)((char *)c->cfg + p->offset) = x;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
    load_ctx *c = user;
    if (c->st != DLU_OK)
        return 1; /* already failed; keep the first error */
    int pi = find_param(key);
    if (!*section) {
        if (pi >= 0)
            fail(c, DLU_EFORMAT, "'%s' outside any section (it belongs in [%s])", key, params[pi].section);
        else
            fail(c, DLU_EFORMAT, "'%s' outside any section, and no section has such a key", key);
        return 0;
    }
    if (!known_section(section))
        return 0; /* reported at the header */
    if (pi < 0) {
        char keys[512];
        keys_of(section, keys, sizeof keys);
        fail(c, DLU_EFORMAT, "unknown key '%s' in [%s] (expected one of %s)", key, section, keys);
        return 0;
    }
    if (strcmp(params[pi].section, section)) {
        fail(c, DLU_EFORMAT, "key '%s' is in [%s], but it belongs in [%s]", key, section, params[pi].section);
        return 0;
    }
    if (c->set_line[pi]) {
        fail(c, DLU_EFORMAT, "key '%s' given twice in [%s] (first at line %d)", key, section, c->set_line[pi]);
        return 0;
    }
    c->set_line[pi] = c->line;
    parse_value(c, pi, section, value);
    return c->st == DLU_OK;
}

dlu_status dlusim_hwcfg_load(const char *path, dlusim_hwcfg *cfg)
{
    dlusim_hwcfg_defaults(cfg);
    FILE *f = fopen(path, "r");
    if (!f)
        return dlu__error(DLU_EIO, "%s: cannot open hardware config: %s", path, strerror(errno));
    load_ctx c = {.path = path, .f = f, .cfg = cfg};
    int r = ini_parse_stream(reader, &c, handler, &c);
    fclose(f);
    if (c.io_error)
        return dlu__error(DLU_EIO, "%s:%d: read error", path, c.line + 1);
    /* inih reports its own syntax errors only at the end; keep whichever came first. */
    if (r > 0 && (c.st == DLU_OK || r < c.err_line)) {
        c.st = DLU_OK;
        c.line = r;
        fail(&c, DLU_EFORMAT, "syntax error (expected '[section]', 'key = value' or a comment)");
    } else if (c.st == DLU_OK && r < 0) {
        c.st = dlu__error(DLU_ENOMEM, "%s: inih failed (%d)", path, r);
    }
    return c.st;
}

/* ------------------------------------------------------------------------------------ */
/* writer                                                                               */
/* ------------------------------------------------------------------------------------ */

dlu_status dlusim_hwcfg_write(const dlusim_hwcfg *cfg, FILE *f)
{
    const char *secs[NPARAM];
    int ns = section_list(secs);
    fprintf(f, "# Hardware parameters of the simulated DLU core (dlusim backend: device \"dlusim:FILE.ini\").\n"
               "#\n"
               "# Written by dlusim_hwcfg_write from sim/hwcfg.def, which holds every parameter's unit,\n"
               "# default, range and meaning; docs/hw_model.md says what each costs. Absent keys take\n"
               "# their defaults. Comment lines start with '#' or ';'.\n");
    for (int s = 0; s < ns; s++) {
        fprintf(f, "\n[%s]\n", secs[s]);
        for (int i = 0; i < NPARAM; i++) {
            const param *p = &params[i];
            if (strcmp(p->section, secs[s]))
                continue;
            char val[40], def[40], lo[40], hi[40];
            double x = p->type == 'I' ? (double)*(const int64_t *)((const char *)cfg + p->offset)
                                      : *(const double *)((const char *)cfg + p->offset);
            if (p->type == 'I')
                snprintf(val, sizeof val, "%" PRId64, *(const int64_t *)((const char *)cfg + p->offset));
            else
                fmt_value(val, sizeof val, p, x);
            fmt_value(def, sizeof def, p, p->def);
            fmt_value(lo, sizeof lo, p, p->lo);
            fmt_value(hi, sizeof hi, p, p->hi);
            fprintf(f, "# %s [%s; default %s, range %s .. %s]\n%s = %s\n", p->comment, p->unit, def, lo, hi, p->key,
                    val);
        }
    }
    if (fflush(f) || ferror(f))
        return dlu__error(DLU_EIO, "writing a hardware config: %s", strerror(errno));
    return DLU_OK;
}
