/* error.h -- the one error funnel (internal).
 *
 * dlu__error() records a formatted message in thread-local storage and returns the
 * code, so error paths read `return dlu__error(DLU_EFORMAT, "%s:%d: ...", ...)`.
 * Put a breakpoint on dlu__error to stop at every error the library raises. */
#ifndef DLU_ERROR_H
#define DLU_ERROR_H
#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DLU__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DLU__PRINTF(a, b)
#endif

dlu_status dlu__error(dlu_status code, const char *fmt, ...) DLU__PRINTF(2, 3);

/* Prefix the current message with more context ("loading x.ckpt: " + old message). */
dlu_status dlu__error_prefix(dlu_status code, const char *fmt, ...) DLU__PRINTF(2, 3);

#define DLU__TRY(expr)                     \
    do {                                   \
        dlu_status dlu__s_ = (expr);       \
        if (dlu__s_ != DLU_OK)             \
            return dlu__s_;                \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
