/* cuda_igemm.cu -- exact integer GEMM on the GPU: cuBLASLt int8, the int16 digit split, and
 * a simple exact kernel (contract and exactness argument: cuda_igemm.h).
 *
 * What it is: the three paths of cuda_igemm.h and the choice between them. cuBLASLt is
 * asked (cublasLtMatmulAlgoGetHeuristic, with the real pointer alignments and the
 * backend's workspace size) whether it has an int8 algorithm for a shape; the answer is
 * cached per host thread, keyed by handle, device, sizes, strides and alignments.
 *
 * What it is not: not tuned. The simple kernel is a plain 64 x 64 shared-memory tile with
 * 4 x 4 outputs per thread, written to be obviously exact; it only carries shapes that
 * cuBLASLt declines (small or odd ones) and the tests. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cuda_igemm.h"
#include "error.h"

namespace {

const int64_t KC = 65520;        /* K chunk of the split path: 2*KC <= DLU_CUDA_IGEMM_S8_KMAX, multiple of 16 */
const int SPLIT_SEG = 2048;      /* columns per warp task of the split kernel */

int force_simple_flag;           /* dlu__cuda_igemm_force_simple */
thread_local const char *last_path = "";

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* Largest power of two (<= 256) dividing the address: what cuBLASLt may assume. */
uint32_t ptr_align(const void *p)
{
    const uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1)))
        al >>= 1;
    return al;
}

/* ---- the simple exact kernel ------------------------------------------------------------ */

/* C (M, N) (+)= A (M, K) * B (N, K)^T. Block: 256 threads, a 64 x 64 tile of C, 4 x 4 per
 * thread (rows ty + 16i, columns tx + 16j); K in steps of 16 through shared memory, zero
 * outside the matrices. TAcc is int32 only for int8 x int8 with K <= 131071 (exact there),
 * int64 otherwise; every product of two int16 fits int32. Grid: x over column tiles,
 * y over row tiles (grid-stride, so any M). */
template <typename TA, typename TB, typename TAcc, typename TC>
__global__ void __launch_bounds__(256) simple_gemm_kernel(int M, int N, int K, const TA *A, int64_t lda, const TB *B,
                                                          int64_t ldb, TC *C, int64_t ldc, int accumulate)
{
    const int BM = 64, BN = 64, BK = 16;
    __shared__ int32_t As[BK][BM + 1], Bs[BK][BN + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int n0 = blockIdx.x * BN;
    for (int64_t m0 = (int64_t)blockIdx.y * BM; m0 < M; m0 += (int64_t)gridDim.y * BM) {
        TAcc acc[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                acc[i][j] = 0;
        for (int k0 = 0; k0 < K; k0 += BK) {
            for (int e = threadIdx.x; e < BM * BK; e += 256) {
                const int r = e / BK, kk = e % BK, gk = k0 + kk;
                const int64_t gi = m0 + r, gj = (int64_t)n0 + r;
                As[kk][r] = (gi < M && gk < K) ? (int32_t)A[gi * lda + gk] : 0;
                Bs[kk][r] = (gj < N && gk < K) ? (int32_t)B[gj * ldb + gk] : 0;
            }
            __syncthreads();
            for (int kk = 0; kk < BK; kk++) {
                int32_t a[4], b[4];
                for (int i = 0; i < 4; i++)
                    a[i] = As[kk][ty + 16 * i];
                for (int j = 0; j < 4; j++)
                    b[j] = Bs[kk][tx + 16 * j];
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++)
                        acc[i][j] += (TAcc)(a[i] * b[j]);
            }
            __syncthreads();
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                const int64_t r = m0 + ty + 16 * i, c = (int64_t)n0 + tx + 16 * j;
                if (r < M && c < N) {
                    TC *d = C + r * ldc + c;
                    *d = accumulate ? (TC)(*d + (TC)acc[i][j]) : (TC)acc[i][j];
                }
            }
    }
}

template <typename TA, typename TB, typename TAcc, typename TC>
dlu_status simple_gemm(dlu_backend *be, int M, int N, int K, const void *A, int64_t lda, const void *B, int64_t ldb,
                       TC *C, int64_t ldc, int accumulate)
{
    if (M == 0 || N == 0)
        return DLU_OK;
    const int64_t ty = ((int64_t)M + 63) / 64;
    const dim3 grid((unsigned)(((int64_t)N + 63) / 64), (unsigned)(ty < 65535 ? ty : 65535));
    simple_gemm_kernel<TA, TB, TAcc, TC><<<grid, 256, 0, dlu__cuda_of(be)->stream>>>(
        M, N, K, (const TA *)A, lda, (const TB *)B, ldb, C, ldc, accumulate);
    last_path = "simple";
    return DLU__CUDA_LAUNCHED(be, "exact integer GEMM (simple kernel)");
}

/* int64 result, any operand widths. */
dlu_status simple_gemm64(dlu_backend *be, int M, int N, int K, const void *A, int wa, int64_t lda, const void *B,
                         int wb, int64_t ldb, int64_t *C, int64_t ldc, int accumulate)
{
    if (wa && wb)
        return simple_gemm<int16_t, int16_t, int64_t, int64_t>(be, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    if (wa)
        return simple_gemm<int16_t, int8_t, int64_t, int64_t>(be, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    if (wb)
        return simple_gemm<int8_t, int16_t, int64_t, int64_t>(be, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    if (K <= DLU_CUDA_IGEMM_S8_KMAX)
        return simple_gemm<int8_t, int8_t, int32_t, int64_t>(be, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
    return simple_gemm<int8_t, int8_t, int64_t, int64_t>(be, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

/* ---- cuBLASLt int8 ---------------------------------------------------------------------- */

struct lt_key {
    const void *lt;
    int dev, M, N, K;
    int64_t lda, ldb, ldc;
    uint32_t al_a, al_b, al_c;
    size_t ws;
};

struct lt_entry {
    lt_key key;
    int used, ok;
    cublasLtMatmulAlgo_t algo;
};

const int LT_CACHE = 64;
thread_local lt_entry lt_cache[LT_CACHE];
thread_local int lt_next;

/* The operation and layouts of our row-major NT product as cuBLASLt's column-major TN one
 * (see cuda_igemm.h): m = N, n = M, k = K; its A = our B stored (K, N) ld ldb, op T; its
 * B = our A stored (K, M) ld lda, op N; C stored (N, M) ld ldc. */
struct lt_desc {
    cublasLtMatmulDescOpaque_t op;
    cublasLtMatrixLayoutOpaque_t a, b, c;
};

cublasStatus_t lt_describe(lt_desc *d, int M, int N, int K, int64_t lda, int64_t ldb, int64_t ldc)
{
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasStatus_t s = cublasLtMatmulDescInit(&d->op, CUBLAS_COMPUTE_32I, CUDA_R_32I);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(&d->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(&d->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutInit(&d->a, CUDA_R_8I, (uint64_t)K, (uint64_t)N, ldb);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutInit(&d->b, CUDA_R_8I, (uint64_t)K, (uint64_t)M, lda);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutInit(&d->c, CUDA_R_32I, (uint64_t)N, (uint64_t)M, ldc);
    return s;
}

/* The cached entry for this product (found or filled by asking the heuristic). */
lt_entry *lt_lookup(dlu_backend *be, int M, int N, int K, const int8_t *A, int64_t lda, const int8_t *B, int64_t ldb,
                    const int32_t *C, int64_t ldc)
{
    dlu__cuda *cu = dlu__cuda_of(be);
    lt_key k;
    memset(&k, 0, sizeof k); /* padding too: keys are compared with memcmp */
    k.lt = cu->lt;
    k.dev = cu->dev;
    k.M = M;
    k.N = N;
    k.K = K;
    k.lda = lda;
    k.ldb = ldb;
    k.ldc = ldc;
    k.al_a = ptr_align(B); /* cuBLASLt's A is our B */
    k.al_b = ptr_align(A);
    k.al_c = ptr_align(C);
    k.ws = cu->lt_ws ? cu->lt_ws_nbytes : 0;
    for (int i = 0; i < LT_CACHE; i++)
        if (lt_cache[i].used && !memcmp(&lt_cache[i].key, &k, sizeof k))
            return &lt_cache[i];
    lt_entry *e = &lt_cache[lt_next];
    lt_next = (lt_next + 1) % LT_CACHE;
    memset(e, 0, sizeof *e);
    e->key = k;
    e->used = 1;
    lt_desc d;
    cublasLtMatmulPreferenceOpaque_t pref;
    const uint64_t wsn = k.ws;
    cublasStatus_t s = cu->lt ? lt_describe(&d, M, N, K, lda, ldb, ldc) : CUBLAS_STATUS_NOT_INITIALIZED;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceInit(&pref);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(&pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsn, sizeof wsn);
    const cublasLtMatmulPreferenceAttributes_t al_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const uint32_t al_val[4] = {k.al_a, k.al_b, k.al_c, k.al_c};
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(&pref, al_attr[i], &al_val[i], sizeof al_val[i]);
    if (s == CUBLAS_STATUS_SUCCESS) {
        cublasLtMatmulHeuristicResult_t res;
        int count = 0;
        memset(&res, 0, sizeof res);
        s = cublasLtMatmulAlgoGetHeuristic(cu->lt, &d.op, &d.a, &d.b, &d.c, &d.c, &pref, 1, &res, &count);
        if (s == CUBLAS_STATUS_SUCCESS && count > 0 && res.state == CUBLAS_STATUS_SUCCESS &&
            res.workspaceSize <= wsn) {
            e->ok = 1;
            e->algo = res.algo;
        }
    }
    return e;
}

/* Whether cuBLASLt takes this int8 product. */
int lt_accepts(dlu_backend *be, int M, int N, int K, const int8_t *A, int64_t lda, const int8_t *B, int64_t ldb,
               const int32_t *C, int64_t ldc)
{
    if (force_simple_flag || K < 1 || K > DLU_CUDA_IGEMM_S8_KMAX || M < 1 || N < 1)
        return 0;
    return lt_lookup(be, M, N, K, A, lda, B, ldb, C, ldc)->ok;
}

/* C (M, N) = A (M, K) * B (N, K)^T, int8 -> int32, K <= KMAX: cuBLASLt when it takes the
 * shape, else the simple kernel. */
dlu_status gemm_s8(dlu_backend *be, int M, int N, int K, const int8_t *A, int64_t lda, const int8_t *B, int64_t ldb,
                   int32_t *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return DLU_OK;
    if (lt_accepts(be, M, N, K, A, lda, B, ldb, C, ldc)) {
        dlu__cuda *cu = dlu__cuda_of(be);
        lt_entry *e = lt_lookup(be, M, N, K, A, lda, B, ldb, C, ldc);
        lt_desc d;
        const int32_t alpha = 1, beta = 0;
        cublasStatus_t s = lt_describe(&d, M, N, K, lda, ldb, ldc);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmul(cu->lt, &d.op, &alpha, B, &d.a, A, &d.b, &beta, C, &d.c, C, &d.c, &e->algo,
                               e->key.ws ? cu->lt_ws : NULL, e->key.ws, cu->stream);
        if (s == CUBLAS_STATUS_SUCCESS) {
            last_path = "cublaslt-s8";
            return DLU_OK;
        }
        if (s != CUBLAS_STATUS_NOT_SUPPORTED && s != CUBLAS_STATUS_INVALID_VALUE) {
            char what[128];
            snprintf(what, sizeof what, "cublasLtMatmul int8 (%d x %d x %d)", M, N, K);
            return dlu__cuda_blas_err(be, (int)s, what);
        }
        e->ok = 0; /* declined after all: the simple kernel from now on */
    }
    return simple_gemm<int8_t, int8_t, int32_t, int32_t>(be, M, N, K, A, lda, B, ldb, C, ldc, 0);
}

/* ---- the digit split --------------------------------------------------------------------- */

/* Digit planes of one K chunk of an operand: rows [0, rows_p) (rows >= `rows` are zero),
 * columns [0, kc) of src (row stride lds, already offset to the chunk), each part hw
 * columns wide, zero padded. wide (int16): parts [lo' | hi] (hi_first == 0, operand A) or
 * [hi | lo'] (hi_first == 1, operand B), row stride 2*hw; narrow (int8): the values
 * themselves, row stride hw. sums[r] (pre-zeroed) += the chunk's sum of row r's values.
 * Block: 8 warps, one (row, SPLIT_SEG-column segment) per warp; grid x over rows / 8,
 * y over segments. */
template <typename T>
__global__ void __launch_bounds__(256) split_kernel(const T *src, int64_t lds, int64_t rows, int64_t rows_p, int kc,
                                                   int hw, int wide, int hi_first, int8_t *dst, int64_t *sums)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t ld = wide ? 2 * (int64_t)hw : hw;
    const int c0 = blockIdx.y * SPLIT_SEG, c1 = c0 + SPLIT_SEG < hw ? c0 + SPLIT_SEG : hw;
    for (int64_t r = (int64_t)blockIdx.x * 8 + warp; r < rows_p; r += (int64_t)gridDim.x * 8) {
        int8_t *d = dst + r * ld;
        long long sum = 0;
        for (int c = c0 + lane; c < c1; c += 32) {
            const int real = r < rows && c < kc;
            const int v = real ? (int)src[r * lds + c] : 0;
            sum += v;
            if (wide) {
                const int8_t hi = real ? (int8_t)(v >> 8) : 0;          /* v >> 8 is floor(v / 256) */
                const int8_t lo = real ? (int8_t)((v & 255) - 128) : 0; /* in [-128, 127] */
                d[hi_first ? c : hw + c] = hi;
                d[hi_first ? hw + c : c] = lo;
            } else {
                d[c] = (int8_t)v;
            }
        }
        for (int o = 16; o > 0; o >>= 1)
            sum += __shfl_down_sync(0xFFFFFFFFu, sum, o);
        if (lane == 0 && r < rows && sum != 0)
            atomicAdd((unsigned long long *)&sums[r], (unsigned long long)sum); /* two's complement: exact */
    }
}

/* C (+)= sum_t w[t] * P_t + ob * sa[i] + oa * sb[j] - oa * ob * kc, in int64 (exact: see
 * cuda_igemm.h). P_t (M, ldp) int32. Block: 256 threads along a row; grid x over columns,
 * y over rows (grid-stride). */
struct combine_args {
    const int32_t *p[3];
    int64_t w[3];
    int np;
    int64_t ldp;
    const int64_t *sa, *sb; /* read only when ob (sa) / oa (sb) is nonzero */
    int64_t oa, ob, kc;
};

__global__ void __launch_bounds__(256) combine_kernel(combine_args a, int M, int N, int64_t *C, int64_t ldc,
                                                     int accumulate)
{
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N)
        return;
    const int64_t cj = (a.oa ? a.oa * a.sb[j] : 0) - a.oa * a.ob * a.kc;
    for (int64_t i = blockIdx.y; i < M; i += gridDim.y) {
        int64_t v = cj + (a.ob ? a.ob * a.sa[i] : 0);
#pragma unroll
        for (int t = 0; t < 3; t++) /* constant indices: the arguments stay in parameter space */
            if (t < a.np)
                v += a.w[t] * (int64_t)a.p[t][i * a.ldp + j];
        int64_t *d = C + i * ldc + j;
        *d = accumulate ? *d + v : v;
    }
}

dlu_status combine(dlu_backend *be, const combine_args &a, int M, int N, int64_t *C, int64_t ldc, int accumulate)
{
    const dim3 grid((unsigned)(((int64_t)N + 255) / 256), (unsigned)(M < 65535 ? M : 65535));
    combine_kernel<<<grid, 256, 0, dlu__cuda_of(be)->stream>>>(a, M, N, C, ldc, accumulate);
    return DLU__CUDA_LAUNCHED(be, "exact integer GEMM (combining the int8 products)");
}

/* The scratch layout of the split path (and of the direct path, which uses P[0] only).
 * Sizes for the first (largest) chunk; offsets from a 256-aligned base. */
struct plan {
    int da, db, ngemm;
    int64_t Mp, Np, hw; /* padded rows of A, of B (= ldp); part width of the first chunk */
    size_t off_a, off_b, off_p[3], off_sa, off_sb, total;
};

void make_plan(int M, int N, int K, int wa, int wb, plan *p)
{
    p->da = wa ? 2 : 1;
    p->db = wb ? 2 : 1;
    p->ngemm = p->da * p->db == 4 ? 3 : p->da * p->db;
    p->Mp = round_up(M > 0 ? M : 1, 8);
    p->Np = round_up(N > 0 ? N : 1, 8);
    p->hw = round_up(K < KC ? (K > 0 ? K : 1) : KC, 16);
    size_t off = 0;
    p->off_a = off;
    off += align256((size_t)p->Mp * p->da * p->hw);
    p->off_b = off;
    off += align256((size_t)p->Np * p->db * p->hw);
    for (int t = 0; t < 3; t++) {
        p->off_p[t] = off;
        if (t < p->ngemm)
            off += align256((size_t)p->Mp * p->Np * sizeof(int32_t));
    }
    p->off_sa = off;
    off += align256((size_t)p->Mp * sizeof(int64_t));
    p->off_sb = off;
    off += align256((size_t)p->Np * sizeof(int64_t));
    p->total = off + 256; /* room to align the caller's base */
}

/* One int8 GEMM of the split path: offsets (in columns) into the A and B planes, its K and
 * its weight in the combination. */
struct digit_gemm {
    int64_t a_off, b_off;
    int k2; /* 1: K = hw, 2: K = 2*hw */
    int64_t w;
};

/* The digit GEMMs for operand widths (da, db): see cuda_igemm.h. */
int digit_gemms(int da, int db, digit_gemm g[3], int64_t hw)
{
    if (da == 1 && db == 1) {
        g[0] = {0, 0, 1, 1};
        return 1;
    }
    if (da == 2 && db == 1) { /* A [lo' | hi], B narrow */
        g[0] = {0, 0, 1, 1};
        g[1] = {hw, 0, 1, 256};
        return 2;
    }
    if (da == 1 && db == 2) { /* A narrow, B [hi | lo'] */
        g[0] = {0, hw, 1, 1};
        g[1] = {0, 0, 1, 256};
        return 2;
    }
    g[0] = {0, hw, 1, 1};      /* al'.bl' */
    g[1] = {0, 0, 2, 256};     /* [al' | ah] . [bh | bl'] = al'.bh + ah.bl' */
    g[2] = {hw, 0, 1, 65536};  /* ah.bh */
    return 3;
}

struct split_bufs {
    int8_t *a, *b;
    int32_t *p[3];
    int64_t *sa, *sb;
};

/* Whether cuBLASLt takes every digit GEMM of a chunk with part width hw. */
int split_accepts(dlu_backend *be, const plan &pl, const split_bufs &bf, int64_t hw)
{
    digit_gemm g[3];
    const int ng = digit_gemms(pl.da, pl.db, g, hw);
    for (int t = 0; t < ng; t++)
        if (!lt_accepts(be, (int)pl.Mp, (int)pl.Np, (int)(g[t].k2 * hw), bf.a + g[t].a_off, pl.da * hw,
                        bf.b + g[t].b_off, pl.db * hw, bf.p[t], pl.Np))
            return 0;
    return 1;
}

template <typename T>
dlu_status split(dlu_backend *be, const void *src, int64_t lds, int64_t rows, int64_t rows_p, int kc, int hw, int wide,
                 int hi_first, int8_t *dst, int64_t *sums)
{
    cudaStream_t st = dlu__cuda_of(be)->stream;
    DLU__TRY(dlu__cuda_err(be, cudaMemsetAsync(sums, 0, (size_t)rows * sizeof *sums, st),
                           "exact integer GEMM: clearing row sums"));
    const dim3 grid((unsigned)((rows_p + 7) / 8), (unsigned)((hw + SPLIT_SEG - 1) / SPLIT_SEG));
    split_kernel<T><<<grid, 256, 0, st>>>((const T *)src, lds, rows, rows_p, kc, hw, wide, hi_first, dst, sums);
    return DLU__CUDA_LAUNCHED(be, "exact integer GEMM (splitting int16 into int8 digits)");
}

dlu_status split_operand(dlu_backend *be, const void *src, int wide, int64_t lds, int64_t rows, int64_t rows_p, int kc,
                         int hw, int hi_first, int8_t *dst, int64_t *sums)
{
    if (wide)
        return split<int16_t>(be, src, lds, rows, rows_p, kc, hw, 1, hi_first, dst, sums);
    return split<int8_t>(be, src, lds, rows, rows_p, kc, hw, 0, hi_first, dst, sums);
}

/* The split path over every K chunk; *declined = 1 (nothing queued) when cuBLASLt does not
 * take the digit GEMMs. */
dlu_status split_gemm(dlu_backend *be, int M, int N, int K, const void *A, int wa, int64_t lda, const void *B, int wb,
                      int64_t ldb, int64_t *C, int64_t ldc, int accumulate, const plan &pl, uint8_t *base,
                      int *declined)
{
    split_bufs bf;
    bf.a = (int8_t *)(base + pl.off_a);
    bf.b = (int8_t *)(base + pl.off_b);
    for (int t = 0; t < 3; t++)
        bf.p[t] = (int32_t *)(base + pl.off_p[t]);
    bf.sa = (int64_t *)(base + pl.off_sa);
    bf.sb = (int64_t *)(base + pl.off_sb);
    const int64_t klast = K - (K - 1) / KC * KC; /* the last chunk's width */
    *declined = !split_accepts(be, pl, bf, pl.hw) || !split_accepts(be, pl, bf, round_up(klast, 16));
    if (*declined)
        return DLU_OK;
    const size_t ea = wa ? 2 : 1, eb = wb ? 2 : 1;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int kc = (int)(K - k0 < KC ? K - k0 : KC), hw = (int)round_up(kc, 16);
        DLU__TRY(split_operand(be, (const uint8_t *)A + k0 * ea, wa, lda, M, pl.Mp, kc, hw, 0, bf.a, bf.sa));
        DLU__TRY(split_operand(be, (const uint8_t *)B + k0 * eb, wb, ldb, N, pl.Np, kc, hw, 1, bf.b, bf.sb));
        digit_gemm g[3];
        const int ng = digit_gemms(pl.da, pl.db, g, hw);
        combine_args ca;
        memset(&ca, 0, sizeof ca);
        for (int t = 0; t < ng; t++) {
            DLU__TRY(gemm_s8(be, (int)pl.Mp, (int)pl.Np, (int)(g[t].k2 * hw), bf.a + g[t].a_off, pl.da * hw,
                             bf.b + g[t].b_off, pl.db * hw, bf.p[t], pl.Np));
            ca.p[t] = bf.p[t];
            ca.w[t] = g[t].w;
        }
        ca.np = ng;
        ca.ldp = pl.Np;
        ca.sa = bf.sa;
        ca.sb = bf.sb;
        ca.oa = wa ? 128 : 0;
        ca.ob = wb ? 128 : 0;
        ca.kc = kc;
        DLU__TRY(combine(be, ca, M, N, C, ldc, accumulate || k0 > 0));
    }
    last_path = "split-s16";
    return DLU_OK;
}

dlu_status check_sizes(int M, int N, int K, int64_t lda, int64_t ldb, int64_t ldc, const void *A, const void *B,
                       const void *C)
{
    if (M < 0 || N < 0 || K < 0)
        return dlu__error(DLU_EINVAL, "cuda integer GEMM: negative size (M %d, N %d, K %d)", M, N, K);
    if ((K > 0 && (lda < K || ldb < K)) || ldc < N)
        return dlu__error(DLU_EINVAL,
                          "cuda integer GEMM: row strides lda %lld, ldb %lld, ldc %lld too small for M %d, N %d, K %d",
                          (long long)lda, (long long)ldb, (long long)ldc, M, N, K);
    if ((M > 0 && N > 0) && (!C || (K > 0 && (!A || !B))))
        return dlu__error(DLU_EINVAL, "cuda integer GEMM: NULL operand");
    return DLU_OK;
}

} // namespace

/* ---- entry points ------------------------------------------------------------------------ */

extern "C" size_t dlu__cuda_igemm_scratch(int M, int N, int K, int wa, int wb)
{
    plan p;
    make_plan(M, N, K, wa, wb, &p);
    return p.total;
}

extern "C" int dlu__cuda_igemm_force_simple(int on)
{
    const int old = force_simple_flag;
    force_simple_flag = on != 0;
    return old;
}

extern "C" const char *dlu__cuda_igemm_last_path(void) { return last_path; }

extern "C" dlu_status dlu__cuda_igemm_s8_nt(dlu_backend *be, int M, int N, int K, const int8_t *A, int64_t lda,
                                           const int8_t *B, int64_t ldb, int32_t *C, int64_t ldc)
{
    DLU__TRY(check_sizes(M, N, K, lda, ldb, ldc, A, B, C));
    if (K > DLU_CUDA_IGEMM_S8_KMAX)
        return dlu__error(DLU_ERANGE, "cuda int8 GEMM: K = %d is above %d, where int32 sums stay exact", K,
                          DLU_CUDA_IGEMM_S8_KMAX);
    return gemm_s8(be, M, N, K, A, lda, B, ldb, C, ldc);
}

extern "C" dlu_status dlu__cuda_igemm_ref_nt(dlu_backend *be, int M, int N, int K, const void *A, int wa, int64_t lda,
                                            const void *B, int wb, int64_t ldb, int64_t *C, int64_t ldc,
                                            int accumulate)
{
    DLU__TRY(check_sizes(M, N, K, lda, ldb, ldc, A, B, C));
    return simple_gemm64(be, M, N, K, A, wa, lda, B, wb, ldb, C, ldc, accumulate);
}

extern "C" dlu_status dlu__cuda_igemm_nt(dlu_backend *be, int M, int N, int K, const void *A, int wa, int64_t lda,
                                        const void *B, int wb, int64_t ldb, int64_t *C, int64_t ldc, int accumulate,
                                        void *scratch, size_t scratch_nbytes)
{
    DLU__TRY(check_sizes(M, N, K, lda, ldb, ldc, A, B, C));
    if (M == 0 || N == 0)
        return DLU_OK;
    if (K == 0 || force_simple_flag)
        return simple_gemm64(be, M, N, K, A, wa, lda, B, wb, ldb, C, ldc, accumulate);
    plan pl;
    make_plan(M, N, K, wa, wb, &pl);
    if (!scratch || scratch_nbytes < pl.total)
        return dlu__error(DLU_EINVAL, "cuda integer GEMM (%d x %d x %d): scratch of %zu bytes, needs %zu", M, N, K,
                          scratch_nbytes, pl.total);
    uint8_t *base = (uint8_t *)(((uintptr_t)scratch + 255) & ~(uintptr_t)255);
    int32_t *p0 = (int32_t *)(base + pl.off_p[0]);
    if (!wa && !wb && K <= DLU_CUDA_IGEMM_S8_KMAX &&
        lt_accepts(be, M, N, K, (const int8_t *)A, lda, (const int8_t *)B, ldb, p0, pl.Np)) {
        /* int8 operands as they are: one cuBLASLt GEMM, widened into C */
        DLU__TRY(gemm_s8(be, M, N, K, (const int8_t *)A, lda, (const int8_t *)B, ldb, p0, pl.Np));
        const char *path = last_path;
        combine_args ca;
        memset(&ca, 0, sizeof ca);
        ca.p[0] = p0;
        ca.w[0] = 1;
        ca.np = 1;
        ca.ldp = pl.Np;
        DLU__TRY(combine(be, ca, M, N, C, ldc, accumulate));
        last_path = path;
        return DLU_OK;
    }
    int declined = 0;
    DLU__TRY(split_gemm(be, M, N, K, A, wa, lda, B, wb, ldb, C, ldc, accumulate, pl, base, &declined));
    if (!declined)
        return DLU_OK;
    return simple_gemm64(be, M, N, K, A, wa, lda, B, wb, ldb, C, ldc, accumulate);
}
