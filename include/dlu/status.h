/* status.h -- OpenDLU result codes and error messages.
 *
 * Every fallible public function returns a dlu_status (DLU_OK == 0). On failure the
 * library also records a human-readable message naming what was wrong and where
 * (file:line, field, index). It is NOT an exception mechanism and never calls exit(). */
#ifndef DLU_STATUS_H
#define DLU_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dlu_status {
#define DLU_STATUS(name, msg) DLU_##name,
#include "dlu/status.def"
#undef DLU_STATUS
    DLU_STATUS_COUNT
} dlu_status;

/* The default message for a code ("unknown status" for values outside the list).
 * Returns a static string; never NULL. Thread-safe. */
const char *dlu_strerror(int status);

/* The message recorded by the most recent failing call on this thread, or "" if none.
 * Lifetime: valid until the next failing dlu_ call on the same thread. Thread-local. */
const char *dlu_last_error(void);

/* Forget the recorded message on this thread. */
void dlu_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
