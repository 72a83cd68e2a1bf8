/* cuda_igemm.h -- exact integer GEMM on the GPU for the CUDA backend's DFP layers (internal).
 *
 * What it is: C (M, N) = A (M, K) * B (N, K)^T, row-major, both operands K-contiguous
 * ("NT", the layout of cpu/igemm.h), computed exactly: every product and every sum as in
 * exact integer arithmetic, so every path below returns the same bits as cpu/igemm.c.
 *
 * Paths (dlu__cuda_igemm_last_path names the one the last call on this thread took):
 *   "cublaslt-s8"   int8 x int8 -> int32 through cuBLASLt (CUBLAS_COMPUTE_32I, CUDA_R_8I
 *                   operands, CUDA_R_32I result, alpha = 1 and beta = 0 as int32). Row-major
 *                   NT is column-major TN, the only order cuBLASLt's int8 kernels take:
 *                   C^T (N, M) = B' ^T * A' where A' = A read column-major is A^T (K, M, ld
 *                   lda) and B' (K, N, ld ldb) is B^T: cuBLASLt's m = N, n = M, k = K, its
 *                   "A" is our B with op T, its "B" our A with op N, its C ours with ld ldc.
 *                   Exact: |sum| <= K * 2^14 < 2^31 for K <= 131071 (-128 included), and an
 *                   int32 split-K reduction, if cuBLASLt picks one, adds exact integers.
 *   "split-s16"     any mix of int8 and int16 operands, any K, int64 result: each int16
 *                   operand is split into two int8 digit planes,
 *                     a = 256*ah + al' + 128,  ah = a >> 8,  al' = (a & 255) - 128,
 *                   both in [-128, 127]; with A' = 256*ah + al' (= a - 128) and oa = 128
 *                   (0 for an int8 operand, which is its own single digit),
 *                     sum_k a_k b_k = sum_k A'_k B'_k + ob*Sa_i + oa*Sb_j - oa*ob*K,
 *                   Sa_i = sum_k a_ik, Sb_j = sum_k b_jk (exact int64 row sums), and
 *                     sum A'B' = 65536 (ah.bh) + 256 (ah.bl' + al'.bh) + al'.bl'.
 *                   The digit products are int8 GEMMs on cuBLASLt ("cublaslt-s8" above);
 *                   the two cross terms are one GEMM over 2K (planes laid out [al' | ah]
 *                   for A and [bh | bl'] for B), so int16 x int16 costs three int8 GEMMs
 *                   (K, 2K, K), int8 x int16 two. K is cut into chunks of at most 65520 so
 *                   that the 2K GEMM stays <= 131040 <= 131071 (exact int32); padding is
 *                   zero digits (products 0) and the row sums count only real columns.
 *                   Each chunk is combined into C in int64: |65536 * P| <= 2^47 per term,
 *                   and |C| <= K * 2^30 < 2^63 for every int K. Integer addition is
 *                   associative, so chunking and cuBLASLt's blocking cannot change bits.
 *   "simple"        an exact tiled kernel of our own (int32 accumulation for int8 x int8
 *                   with K <= 131071, int64 otherwise): the fallback when cuBLASLt has no
 *                   algorithm for a shape (its heuristic returns none or the call reports
 *                   NOT_SUPPORTED), when forced (dlu__cuda_igemm_force_simple), and the
 *                   reference tests compare against (dlu__cuda_igemm_ref_nt).
 * Which shapes go where: dlu__cuda_igemm_nt takes "cublaslt-s8" directly (then widens to
 * int64) for int8 x int8 with K <= 131071 when cuBLASLt accepts the operands as they are
 * (in practice: lda, ldb multiples of 16 and 16-byte aligned pointers); otherwise it packs
 * the operands into zero-padded digit planes (rows padded to a multiple of 8, columns to
 * a multiple of 16, so cuBLASLt accepts them) and takes "split-s16"; if cuBLASLt still
 * declines, "simple" on the original operands. dlu__cuda_igemm_s8_nt (int32 result) is
 * "cublaslt-s8" or else "simple".
 *
 * What it is not: not a general BLAS (no alpha/beta, transposes or saturation; the caller
 * requantizes with dlu/numerics.h) and not fp32 (cuBLAS). No allocation: the int64 entry
 * takes a caller's scratch buffer of dlu__cuda_igemm_scratch() bytes; cuBLASLt uses the
 * backend's workspace (lt_ws). Everything runs asynchronously on the backend's stream;
 * pointers are device memory.
 *
 * Thread safety: as the backend. cuBLASLt algorithm choices are cached per host thread. */
#ifndef DLU_CUDA_IGEMM_H
#define DLU_CUDA_IGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_impl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest K for which int8 x int8 is exact in int32: K * 128 * 128 < 2^31. */
#define DLU_CUDA_IGEMM_S8_KMAX 131071

/* Bytes of scratch dlu__cuda_igemm_nt needs for these sizes; wa, wb: 1 for an int16
 * operand, 0 for int8 (the largest is wa = wb = 1). Non-decreasing in M, N, K, wa, wb. */
size_t dlu__cuda_igemm_scratch(int M, int N, int K, int wa, int wb);

/* C (M, N) = A (M, K) * B (N, K)^T, int8 operands, int32 results, exact for K <=
 * DLU_CUDA_IGEMM_S8_KMAX. lda, ldb, ldc: row strides in elements. Returns DLU_OK, DLU_ERANGE
 * for a larger K, DLU_EINVAL for negative sizes or short strides, or the CUDA/cuBLAS error. */
dlu_status dlu__cuda_igemm_s8_nt(dlu_backend *be, int M, int N, int K, const int8_t *A /* (M, lda) */, int64_t lda,
                                 const int8_t *B /* (N, ldb) */, int64_t ldb, int32_t *C /* (M, ldc) */,
                                 int64_t ldc);

/* C (M, N) = A (M, K) * B (N, K)^T (accumulate == 0) or C += that (accumulate != 0), int64
 * results, exact for every K. A is int16_t when wa, else int8_t; B likewise with wb.
 * scratch: device memory of at least dlu__cuda_igemm_scratch(M, N, K, wa, wb) bytes (any
 * alignment), not overlapping A, B or C. Returns DLU_OK, DLU_EINVAL (bad sizes, strides
 * or a short scratch), or the CUDA/cuBLAS error. */
dlu_status dlu__cuda_igemm_nt(dlu_backend *be, int M, int N, int K, const void *A /* (M, lda) */, int wa, int64_t lda,
                              const void *B /* (N, ldb) */, int wb, int64_t ldb, int64_t *C /* (M, ldc) */,
                              int64_t ldc, int accumulate, void *scratch, size_t scratch_nbytes);

/* The same product by the simple exact kernel only (the reference; no scratch). */
dlu_status dlu__cuda_igemm_ref_nt(dlu_backend *be, int M, int N, int K, const void *A /* (M, lda) */, int wa,
                                  int64_t lda, const void *B /* (N, ldb) */, int wb, int64_t ldb,
                                  int64_t *C /* (M, ldc) */, int64_t ldc, int accumulate);

/* on != 0: every call takes the simple kernel (tests, comparisons); returns the previous
 * setting. Process-wide; takes effect for calls that start afterwards. */
int dlu__cuda_igemm_force_simple(int on);

/* "cublaslt-s8", "split-s16" or "simple": the path of the latest call on this thread
 * ("" before any). Static string. */
const char *dlu__cuda_igemm_last_path(void);

#ifdef __cplusplus
}
#endif
#endif
