/* igemm.h -- exact integer GEMM for the CPU backend (internal).
 *
 * What it is: C (M, N) = A (M, K) * B (N, K)^T on int8 or int16 operands, computed
 * exactly (every product and every sum as in exact integer arithmetic). Both operands are
 * K-contiguous ("NT"), the layout the DFP layers pack into. One portable reference per
 * type (the spec), and fast paths chosen at run time from the CPU (AVX-512 VNNI,
 * AVX-512BW, portable C), split over a small persistent pthread pool.
 *
 * What it is not: not a general BLAS (no alpha/beta, no transposes, no saturation or
 * requantization: the caller requantizes the exact accumulators with dlu/numerics.h) and
 * not fp32 (that goes through OpenBLAS).
 *
 * Bit-exactness: integer addition is associative, so every path, every blocking and every
 * thread count returns the same bits as the reference; igemm.c proves for each fast path
 * that no intermediate overflows, or that a wrapped intermediate still gives the exact
 * result. Each output element is computed entirely by one thread.
 *
 * Thread safety: every function may be called from any thread at any time. Concurrent
 * calls are correct; while one call uses the worker pool, another runs on its caller's
 * thread alone. No function allocates memory except that the first threaded call starts
 * the pool's threads (and dlu__igemm_set_threads may start more); packing buffers live
 * on the stack (about 40 KiB on the calling thread, 32 KiB on each helper). */
#ifndef DLU_IGEMM_H
#define DLU_IGEMM_H

#include <stdint.h>

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest K for which the int8 GEMM is exact in int32: K * 128 * 128 < 2^31. */
#define DLU_IGEMM_S8_KMAX 131071

/* C (M, N) = A (M, K) * B (N, K)^T with int8 operands and int32 results, exact:
 * |C| <= K * 2^14 < 2^31 for K <= DLU_IGEMM_S8_KMAX (all int8 values allowed, -128
 * included). lda, ldb, ldc are row strides in elements (lda >= K and ldb >= K when K > 0,
 * ldc >= N). K == 0 sets C to zero. C must not overlap A or B.
 * Returns DLU_OK; DLU_ERANGE if K > DLU_IGEMM_S8_KMAX; DLU_EINVAL for negative sizes,
 * too small strides or NULL pointers (nothing written on error; message in
 * dlu_last_error()). */
dlu_status dlu__igemm_s8_nt(int M, int N, int K, const int8_t *A /* (M, lda) */, int lda,
                            const int8_t *B /* (N, ldb) */, int ldb, int32_t *C /* (M, ldc) */, int ldc);

/* C (M, N) = A (M, K) * B (N, K)^T with int16 operands and int64 results, exact for every
 * K (|C| <= K * 2^30 < 2^63). The DFP contract keeps operands in the symmetric range
 * [-32767, 32767]; this implementation is exact for -32768 too. Same strides, conventions
 * and return codes as dlu__igemm_s8_nt (no K limit, so never DLU_ERANGE). */
dlu_status dlu__igemm_s16_nt(int M, int N, int K, const int16_t *A /* (M, lda) */, int lda,
                             const int16_t *B /* (N, ldb) */, int ldb, int64_t *C /* (M, ldc) */, int ldc);

/* The references: plain loops over i, j, k (k ascending), one accumulator per output.
 * s8 accumulates in int32 (no partial sum exceeds K * 2^14, so K <= DLU_IGEMM_S8_KMAX is
 * a precondition), s16 in int64. No argument checks, single-threaded, no dispatch. */
void dlu__igemm_s8_nt_ref(int M, int N, int K, const int8_t *A /* (M, lda) */, int lda,
                          const int8_t *B /* (N, ldb) */, int ldb, int32_t *C /* (M, ldc) */, int ldc);
void dlu__igemm_s16_nt_ref(int M, int N, int K, const int16_t *A /* (M, lda) */, int lda,
                           const int16_t *B /* (N, ldb) */, int ldb, int64_t *C /* (M, ldc) */, int ldc);

/* The implementation the two dlu__igemm_*_nt functions use now: "avx512vnni", "avx512bw"
 * or "portable" (a static string). Honours dlu__igemm_force_portable(). */
const char *dlu__igemm_impl(void);

/* on != 0: use the portable path even where a faster one exists (for tests and
 * comparisons); on == 0: back to the best path. Returns the previous setting (0 or 1).
 * Process-wide; takes effect for calls that start afterwards. */
int dlu__igemm_force_portable(int on);

/* Use the implementation `name` ("avx512vnni", "avx512bw", "portable"), or the best
 * one this CPU runs for NULL (the default). For tests and benchmarks; process-wide.
 * Returns DLU_OK, DLU_EUNSUPPORTED if this CPU cannot run it, DLU_EINVAL for an unknown
 * name (setting unchanged on error). */
dlu_status dlu__igemm_select(const char *name);

/* Use up to n threads (the calling thread included) per GEMM; n <= 0 means the number of
 * CPUs this process may run on. Returns the previous setting (0 if it was the default).
 * Results do not depend on it. Small GEMMs run on the calling thread only. */
int dlu__igemm_set_threads(int n);

/* Run task(ctx, i) for every i in [0, ntasks) on the GEMM's thread pool, each index once
 * on some thread; returns when all have returned. Tasks must write disjoint outputs (the
 * caller combines per-task results in a fixed order, so results never depend on which
 * thread ran what). */
void dlu__cpu_parallel_for(int ntasks, void (*task)(void *ctx, int i), void *ctx);
/* Threads the pool uses (dlu__igemm_set_threads). */
int dlu__cpu_pool_threads(void);

#ifdef __cplusplus
}
#endif
#endif
