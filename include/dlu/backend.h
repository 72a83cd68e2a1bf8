/* backend.h -- compute backends and device strings.
 *
 * A backend is where tensors live and ops run: "cpu" (always built, the reference),
 * "cuda" / "cuda:N" (built with the CUDA toolkit), "dlusim:CONFIG.ini" (the simulated
 * DLU core). All share one kernel table indexed by op (see libdl/backend_impl.h);
 * a NULL entry means "unsupported here" and is reported, never silently skipped.
 *
 * Not here: scheduling across devices or ranks (that is runtime/). */
#ifndef DLU_BACKEND_H
#define DLU_BACKEND_H

#include <stdint.h>

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dlu_op {
#define DLU_OP(name, str, nparams) DLU_OP_##name,
#include "dlu/ops.def"
#undef DLU_OP
    DLU_OP_COUNT
} dlu_op;

const char *dlu_op_name(dlu_op op);
/* Look up an op by its .net spelling; returns DLU_OP_COUNT when unknown. */
dlu_op dlu_op_from_name(const char *name);
int dlu_op_nparams(dlu_op op);

typedef struct dlu_backend dlu_backend;

/* Open a backend from a device string: "cpu", "cuda", "cuda:N", "dlusim:PATH".
 * Errors: DLU_EINVAL for a malformed string (message names it and lists the forms),
 * DLU_ENODEV when the backend is not built in or the device is absent.
 * *out is owned by the caller; close with dlu_backend_close(). Not thread-safe: one
 * thread drives a backend at a time. */
dlu_status dlu_backend_open(const char *device, dlu_backend **out);
void dlu_backend_close(dlu_backend *be); /* NULL is fine */

/* The backend's kind ("cpu", "cuda", "dlusim") and the device string it was opened with. */
const char *dlu_backend_kind(const dlu_backend *be);
const char *dlu_backend_device(const dlu_backend *be);

/* Wait until all work queued on the backend has finished. */
dlu_status dlu_backend_sync(dlu_backend *be);

/* Profiling counters since open (or the last reset): time spent inside the dense GEMM
 * library (BLAS/cuBLAS) and the number of GEMM calls. */
typedef struct dlu_backend_prof {
    uint64_t gemm_ns;
    uint64_t gemm_calls;
} dlu_backend_prof;
void dlu_backend_prof_get(const dlu_backend *be, dlu_backend_prof *p);
void dlu_backend_prof_reset(dlu_backend *be);

/* CPU threads used by BLAS and the CPU kernels: n >= 1 sets it, 0 means all online cores.
 * Returns the count in effect. Process-wide; call before starting work. */
int dlu_cpu_set_threads(int n);
int dlu_cpu_threads(void);

/* The exact integer GEMM the CPU backend uses: "avx512vnni", "avx512bw" or "portable". */
const char *dlu_cpu_igemm_impl(void);

/* CPU features found at run time ("avx512f avx512_vnni avx512_bf16 ..."), static string. */
const char *dlu_cpu_features(void);

/* Which backend kinds this build contains, e.g. to print in `dlu info`.
 * Returns the number of kinds; names[i] are static strings. */
int dlu_backend_kinds(const char **names, const char **notes, int max);

#ifdef __cplusplus
}
#endif
#endif
