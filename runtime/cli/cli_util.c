/* cli_util.c -- error printing and strict option-value parsing for `dlu`. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "dlu/status.h"

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "dlu %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_fail(const char *cmd, const char *what, int status)
{
    const char *msg = dlu_last_error();
    cli_error(cmd, "%s: %s", what, *msg ? msg : dlu_strerror(status));
    return 1;
}

int cli_int(const char *cmd, const char *opt, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) {
        cli_error(cmd, "%s '%s': expected an integer in [%lld, %lld]", opt, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

int cli_float(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x) || x < lo || x > hi) {
        cli_error(cmd, "%s '%s': expected a number in [%g, %g]", opt, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

int cli_usage_error(const char *cmd)
{
    fprintf(stderr, "dlu %s: see 'dlu %s --help'\n", cmd, cmd);
    return 2;
}

int cli_writable(const char *cmd, const char *opt, const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (!*path || path[strlen(path) - 1] == '/') {
        cli_error(cmd, "%s '%s': expected a file name, not a folder", opt, path);
        return 0;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        cli_error(cmd, "%s '%s': cannot write into folder '%s': %s", opt, path, dir, strerror(errno));
        return 0;
    }
    return 1;
}
