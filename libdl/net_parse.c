/* net_parse.c -- reading .net files (INI syntax) with inih.
 *
 * inih does the tokenising; this file supplies a line reader that tracks line numbers
 * and section headers (so repeated or empty sections and per-key errors get exact
 * file:line positions) and a handler that validates every key. The format is
 * documented in docs/net-format.md; keep the two in step.
 *
 * Not here: shape inference (net.c), which reports its own errors by section line. */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "net_impl.h"

#define MAX_LAYERS 1024
#define MAX_FILE_BYTES (1 << 20)

typedef struct parse_ctx {
    const char *origin;
    const char *text;
    size_t pos, len;
    int line;            /* line most recently handed to inih */
    int header_line;     /* line of the section header being filled, 0 before any */
    char header[64];     /* its name */
    int header_keys;     /* keys seen in it */
    int seen_net;
    dlu_net *net;
    dlu_status st;       /* first error, DLU_OK if none */
    int err_line;        /* its line */
    unsigned seen_mask;  /* keys already set in this section (bit per key index) */
} parse_ctx;

/* The keys each section kind accepts; index = bit in seen_mask. */
static const char *const keys_net[] = {"name", "input", NULL};
static const char *const keys_linear[] = {"op", "out", "bias", NULL};
static const char *const keys_conv[] = {"op", "filters", "kernel", "stride", "pad", "bias", NULL};
static const char *const keys_pool[] = {"op", "kernel", "stride", "pad", NULL};
static const char *const keys_plain[] = {"op", NULL};

static const char *const *keys_for(const dlu__layer *l)
{
    switch (l->op) {
    case DLU_OP_LINEAR: return keys_linear;
    case DLU_OP_CONV2D: return keys_conv;
    case DLU_OP_MAXPOOL:
    case DLU_OP_AVGPOOL: return keys_pool;
    default: return keys_plain;
    }
}

static dlu_status fail(parse_ctx *c, dlu_status code, const char *fmt, ...) DLU__PRINTF(3, 4);
static dlu_status fail(parse_ctx *c, dlu_status code, const char *fmt, ...)
{
    if (c->st != DLU_OK)
        return c->st; /* keep the first error */
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->st = dlu__error(code, "%s:%d: %s", c->origin, c->line, msg);
    c->err_line = c->line;
    return c->st;
}

static void list_keys(const char *const *keys, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int i = 0; keys[i]; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, n - used, "%s%s", i ? ", " : "", keys[i]);
    }
}

static int parse_int(parse_ctx *c, const char *key, const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) {
        fail(c, DLU_EFORMAT, "%s = '%s': expected an integer in [%d, %d]", key, v, lo, hi);
        return 0;
    }
    *out = (int)x;
    return 1;
}

static int parse_bool(parse_ctx *c, const char *key, const char *v, int *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
        *out = 0;
    else {
        fail(c, DLU_EFORMAT, "%s = '%s': expected true or false", key, v);
        return 0;
    }
    return 1;
}

/* "C x H x W" with 'x', ',' or spaces between the three integers. */
static int parse_shape3(parse_ctx *c, const char *key, const char *v, int *a, int *b, int *d)
{
    long x[3];
    const char *p = v;
    for (int i = 0; i < 3; i++) {
        while (*p == ' ' || *p == '\t' || (i && (*p == 'x' || *p == ',')))
            p++;
        char *end;
        errno = 0;
        x[i] = strtol(p, &end, 10);
        if (end == p || errno || x[i] < 1 || x[i] > 65536) {
            fail(c, DLU_EFORMAT, "%s = '%s': expected three positive sizes C x H x W, e.g. 1x28x28", key, v);
            return 0;
        }
        p = end;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p) {
        fail(c, DLU_EFORMAT, "%s = '%s': unexpected text after C x H x W", key, v);
        return 0;
    }
    *a = (int)x[0], *b = (int)x[1], *d = (int)x[2];
    return 1;
}

static dlu__net_layer *cur_layer(parse_ctx *c)
{
    return c->net->nlayers ? &c->net->layers[c->net->nlayers - 1] : NULL;
}

/* Called by the reader when it meets a header line and at end of input. */
static void close_section(parse_ctx *c)
{
    if (!c->header_line)
        return;
    int save = c->line;
    c->line = c->header_line;
    if (c->header_keys == 0) {
        fail(c, DLU_EFORMAT, "section [%s] is empty (expected %s)", c->header,
             strcmp(c->header, "net") ? "'op = ...' and the op's keys" : "'input = CxHxW'");
    } else if (!strcmp(c->header, "net")) {
        if (!c->net->in_c)
            fail(c, DLU_EFORMAT, "section [net] has no 'input = CxHxW'");
    } else {
        /* (a layer without 'op' cannot get here: any key before 'op' is an error) */
        dlu__net_layer *L = cur_layer(c);
        if (L && L->l.op == DLU_OP_LINEAR && !L->l.out)
            fail(c, DLU_EFORMAT, "linear layer [%s] needs 'out = N'", c->header);
        else if (L && L->l.op == DLU_OP_CONV2D && (!L->l.filters || !L->l.kernel))
            fail(c, DLU_EFORMAT, "conv2d layer [%s] needs 'filters = N' and 'kernel = K'", c->header);
        else if (L && (L->l.op == DLU_OP_MAXPOOL || L->l.op == DLU_OP_AVGPOOL) && !L->l.kernel)
            fail(c, DLU_EFORMAT, "%s layer [%s] needs 'kernel = K'", dlu_op_name(L->l.op), c->header);
        else if (L && !L->l.stride) /* defaults: 1 for conv2d, the kernel size for pooling */
            L->l.stride = L->l.op == DLU_OP_CONV2D ? 1 : L->l.kernel;
    }
    c->line = save;
}

/* Open a new section whose header is on line `line`. */
static void open_section(parse_ctx *c, const char *name, int line)
{
    close_section(c);
    int save = c->line;
    c->line = line;
    snprintf(c->header, sizeof c->header, "%.63s", name);
    c->header_line = line;
    c->header_keys = 0;
    c->seen_mask = 0;
    if (strlen(name) >= sizeof c->header || !*name) {
        fail(c, DLU_EFORMAT, "section name '%s' must be 1..63 characters", name);
    } else if (!strcmp(name, "net")) {
        if (c->seen_net)
            fail(c, DLU_EFORMAT, "a second [net] section (there must be exactly one, first)");
        c->seen_net = 1;
    } else {
        if (!c->seen_net)
            fail(c, DLU_EFORMAT, "layer [%s] before the [net] section (the file must start with [net])", name);
        for (int i = 0; i < c->net->nlayers; i++)
            if (!strcmp(c->net->layers[i].l.name, name))
                fail(c, DLU_EFORMAT, "duplicate layer name [%s] (first defined at line %d)", name,
                     c->net->layers[i].l.line);
        if (c->net->nlayers >= MAX_LAYERS) {
            fail(c, DLU_EFORMAT, "more than %d layers", MAX_LAYERS);
        } else if (c->st == DLU_OK) {
            dlu__net_layer *L = &c->net->layers[c->net->nlayers++];
            memset(L, 0, sizeof *L);
            snprintf(L->l.name, sizeof L->l.name, "%s", name);
            L->l.line = line;
            L->l.op = DLU_OP_COUNT; /* until 'op =' */
            L->l.bias = 1;
        }
    }
    c->line = save;
}

/* inih line reader over the in-memory file: tracks line numbers and section headers. */
static char *reader(char *str, int num, void *stream)
{
    parse_ctx *c = stream;
    if (c->pos >= c->len) {
        close_section(c);
        return NULL;
    }
    if (c->pos == 0 && c->len >= 3 && !memcmp(c->text, "\xEF\xBB\xBF", 3))
        c->pos = 3; /* UTF-8 byte order mark */
    /* A line ends at LF, CR LF or a lone CR. */
    size_t end = c->pos;
    while (end < c->len && c->text[end] != '\n' && c->text[end] != '\r')
        end++;
    size_t next = end;
    if (next < c->len)
        next += (c->text[next] == '\r' && next + 1 < c->len && c->text[next + 1] == '\n') ? 2 : 1;
    /* Leading blanks are dropped here: inih would read an indented line as the
     * continuation of the previous value, which is never what a .net file means. */
    size_t start = c->pos;
    while (start < end && (c->text[start] == ' ' || c->text[start] == '\t'))
        start++;
    size_t n = end - start;
    c->line++;
    if (n >= (size_t)num - 1) {
        fail(c, DLU_EFORMAT, "line longer than %d characters", num - 2);
        n = (size_t)num - 2;
    }
    memcpy(str, c->text + start, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    c->pos = next;
    /* A section header: '[' after optional blanks, name up to ']'. */
    const char *p = str;
    if (*p == '[') {
        const char *q = strchr(p, ']');
        if (q) {
            char name[128];
            size_t len = (size_t)(q - p - 1);
            if (len >= sizeof name)
                len = sizeof name - 1;
            memcpy(name, p + 1, len);
            name[len] = '\0';
            open_section(c, name, c->line);
        }
    }
    return str;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
    parse_ctx *c = user;
    if (c->st != DLU_OK)
        return 1; /* already failed; inih keeps going, we keep the first error */
    c->header_keys++;
    if (!*section) {
        fail(c, DLU_EFORMAT, "'%s' outside any section (the file must start with [net])", key);
        return 0;
    }
    const int is_net = !strcmp(section, "net");
    dlu__net_layer *L = is_net ? NULL : cur_layer(c);
    if (!is_net && !L)
        return 0;
    if (!is_net && !strcmp(key, "op") && L->l.op == DLU_OP_COUNT) {
        dlu_op op = dlu_op_from_name(value);
        if (op == DLU_OP_COUNT) {
            fail(c, DLU_EFORMAT, "op = '%s': unknown op (expected one of linear, conv2d, relu, maxpool, "
                                 "avgpool, flatten, softmax_xent)", value);
            return 0;
        }
        L->l.op = op;
        L->l.bias = dlu_op_nparams(op) > 1;
    } else if (!is_net && L->l.op == DLU_OP_COUNT) {
        fail(c, DLU_EFORMAT, "'%s' before 'op' in layer [%s] ('op' must be the first key)", key, section);
        return 0;
    }
    const char *const *keys = is_net ? keys_net : keys_for(&L->l);
    int ki = -1;
    for (int i = 0; keys[i]; i++)
        if (!strcmp(keys[i], key))
            ki = i;
    if (ki < 0) {
        char allowed[256];
        list_keys(keys, allowed, sizeof allowed);
        fail(c, DLU_EFORMAT, "unknown key '%s' in %s [%s] (allowed: %s)", key,
             is_net ? "section" : dlu_op_name(L->l.op), section, allowed);
        return 0;
    }
    if (c->seen_mask & (1u << ki)) {
        fail(c, DLU_EFORMAT, "key '%s' given twice in [%s]", key, section);
        return 0;
    }
    c->seen_mask |= 1u << ki;
    int ok = 1;
    if (is_net) {
        if (!strcmp(key, "name")) {
            if (strlen(value) >= sizeof c->net->name)
                ok = fail(c, DLU_EFORMAT, "name is longer than %zu characters", sizeof c->net->name - 1) == DLU_OK;
            else
                strcpy(c->net->name, value);
        } else {
            ok = parse_shape3(c, key, value, &c->net->in_c, &c->net->in_h, &c->net->in_w);
        }
        return ok;
    }
    dlu__layer *l = &L->l;
    if (!strcmp(key, "op"))
        return 1;
    else if (!strcmp(key, "out"))
        ok = parse_int(c, key, value, 1, 1 << 24, &l->out);
    else if (!strcmp(key, "filters"))
        ok = parse_int(c, key, value, 1, 1 << 16, &l->filters);
    else if (!strcmp(key, "kernel"))
        ok = parse_int(c, key, value, 1, 64, &l->kernel);
    else if (!strcmp(key, "stride"))
        ok = parse_int(c, key, value, 1, 64, &l->stride);
    else if (!strcmp(key, "pad"))
        ok = parse_int(c, key, value, 0, 64, &l->pad);
    else if (!strcmp(key, "bias"))
        ok = parse_bool(c, key, value, &l->bias);
    return ok;
}

dlu_status dlu_net_parse(const char *text, const char *origin, dlu_net **out)
{
    *out = NULL;
    dlu_net *net = calloc(1, sizeof *net);
    dlu__net_layer *layers = calloc(MAX_LAYERS, sizeof *layers);
    if (!net || !layers) {
        free(net);
        free(layers);
        return dlu__error(DLU_ENOMEM, "%s: out of memory", origin);
    }
    net->layers = layers;
    snprintf(net->origin, sizeof net->origin, "%s", origin);
    parse_ctx c = {.origin = origin, .text = text, .len = strlen(text), .net = net};
    int r = ini_parse_stream(reader, &c, handler, &c);
    /* inih reports its syntax errors only at the end; keep whichever error came first. */
    if (r > 0 && (c.st == DLU_OK || r < c.err_line)) {
        c.st = DLU_OK;
        c.line = r;
        fail(&c, DLU_EFORMAT, "syntax error (expected '[section]', 'key = value' or a comment)");
    } else if (c.st == DLU_OK && r < 0) {
        c.st = dlu__error(DLU_ENOMEM, "%s: inih failed (%d)", origin, r);
    }
    if (c.st == DLU_OK && !c.seen_net) {
        c.line = c.line ? c.line : 1;
        fail(&c, DLU_EFORMAT, "no [net] section (expected '[net]' with 'input = CxHxW' first)");
    }
    if (c.st == DLU_OK && net->nlayers == 0) {
        fail(&c, DLU_EFORMAT, "the net has no layers");
    }
    if (c.st == DLU_OK)
        c.st = dlu__net_infer_shapes(net);
    if (c.st != DLU_OK) {
        dlu_net_free(net);
        return c.st;
    }
    if (!net->name[0]) {
        /* default name: the file's base name without extension */
        const char *b = strrchr(origin, '/');
        b = b ? b + 1 : origin;
        snprintf(net->name, sizeof net->name, "%.*s", (int)strcspn(b, "."), b);
    }
    *out = net;
    return DLU_OK;
}

dlu_status dlu_net_load(const char *path, dlu_net **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return dlu__error(DLU_EIO, "%s: cannot open net file: %s", path, strerror(errno));
    char *buf = malloc(MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return dlu__error(DLU_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    int err = ferror(f);
    fclose(f);
    dlu_status s;
    if (err)
        s = dlu__error(DLU_EIO, "%s: read error", path);
    else if (n > MAX_FILE_BYTES)
        s = dlu__error(DLU_EFORMAT, "%s: net file larger than %d bytes", path, MAX_FILE_BYTES);
    else if (memchr(buf, '\0', n))
        s = dlu__error(DLU_EFORMAT, "%s: contains a NUL byte (not a text .net file)", path);
    else {
        buf[n] = '\0';
        s = dlu_net_parse(buf, path, out);
    }
    free(buf);
    return s;
}
