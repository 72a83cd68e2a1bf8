/* error.c -- dlu_strerror(), the thread-local last-error message and the funnel. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_msg[] = {
#define DLU_STATUS(name, msg) msg,
#include "dlu/status.def"
#undef DLU_STATUS
};

_Static_assert(sizeof status_msg / sizeof status_msg[0] == DLU_STATUS_COUNT,
               "status.def and the message table disagree");

static _Thread_local char last_msg[1024];

const char *dlu_strerror(int status)
{
    if (status < 0 || status >= DLU_STATUS_COUNT)
        return "unknown status";
    return status_msg[status];
}

const char *dlu_last_error(void) { return last_msg; }

void dlu_clear_error(void) { last_msg[0] = '\0'; }

dlu_status dlu__error(dlu_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    return code;
}

dlu_status dlu__error_prefix(dlu_status code, const char *fmt, ...)
{
    char old[sizeof last_msg];
    memcpy(old, last_msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof last_msg)
        snprintf(last_msg + n, sizeof last_msg - (size_t)n, "%s", old);
    return code;
}
