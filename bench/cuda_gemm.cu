/* cuda_gemm.cu -- GEMM benchmark of the cuda backend: DFP8 and DFP16 GEMMs with everything a
 * DFP layer does around them, beside cuBLAS int8, bf16 and fp32 GEMMs in the same run.
 *
 *   bench/cuda_gemm [--quick]        (prints a markdown table; exit 77 without a GPU)
 *
 * For C (M, N) = A (M, K) * B (N, K)^T (A: activations, B: weights, as a linear layer's
 * forward), timed with CUDA events over enough repetitions to last about 0.2 s, after a
 * warm-up, on random data (never zeros):
 *   fp32     cublasSgemm, fp32 operands (full fp32: no TF32)
 *   bf16     cublasGemmEx, bf16 operands, fp32 accumulation and output
 *   int8     cublasGemmEx, int8 operands, int32 accumulation and output (the peer of DFP8)
 *   dfp8     the DFP8 layer's GEMM, everything included: quantize the fp32 weights B to int8
 *            with their statistics, the exact int8 GEMM (A is already DFP8, as activations
 *            arrive from the layer below), requantize the int32 result to int8 with its
 *            statistics -- the library's own kernels (cuda_quant, cuda_igemm)
 *   dfp8-qa  the same, A quantized from fp32 too (both operands from fp32)
 *   dfp16    the DFP16 layer's GEMM: quantize B to int16 with statistics, the exact int16
 *            GEMM (int8 digit planes, int64 result), requantize to int16 with statistics
 * Ratios in the table: dfp8 / int8 (the issue's bar is >= 0.8 at 8192^3) and dfp16 / fp32
 * (bar >= 3). Shapes: 8192^3, 4096^3 and the reference nets' GEMMs at batch 128 (forward,
 * as the DFP layers issue them). TOPS = 2*M*N*K / time. */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_bf16.h>

#include "dlu/backend.h"
#include "error.h"
#include "backend/cuda/cuda_igemm.h"
#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/cuda_quant.h"

namespace {

__global__ void fill_f32(float *p, size_t n, uint32_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 2654435761u ^ seed;
        x ^= x >> 16;
        x *= 2246822519u;
        x ^= x >> 13;
        p[i] = ((float)(x & 0xFFFFFF) / 16777216.0f - 0.5f) * 2.0f;
    }
}

__global__ void to_bf16(const float *s, __nv_bfloat16 *d, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16(s[i]);
}

#define CK(call)                                                                                        \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess) {                                                                        \
            fprintf(stderr, "cuda_gemm: %s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));     \
            exit(1);                                                                                    \
        }                                                                                               \
    } while (0)

struct shape {
    const char *name;
    int M, N, K;
};

/* Seconds per call of f, averaged over repetitions lasting about 0.2 s; < 0 if f failed. */
template <class F> double timeit(cudaStream_t st, F f)
{
    for (int i = 0; i < 3; i++)
        if (!f())
            return -1;
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    int reps = 1;
    float ms = 0;
    for (;;) {
        CK(cudaEventRecord(a, st));
        for (int i = 0; i < reps; i++)
            if (!f())
                return -1;
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&ms, a, b));
        if (ms > 200 || reps >= (1 << 16))
            break;
        reps = ms < 1 ? reps * 16 : (int)(reps * 250 / ms) + 1;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms * 1e-3 / reps;
}

} // namespace

int main(int argc, char **argv)
{
    const int quick = argc > 1 && !strcmp(argv[1], "--quick");
    dlu_backend *be = NULL;
    if (dlu_backend_open("cuda", &be) != DLU_OK) {
        printf("SKIP: %s\n", dlu_last_error());
        return 77;
    }
    dlu__cuda *c = dlu__cuda_of(be);
    cudaStream_t st = c->stream;
    std::vector<shape> shapes = {{"8192^3", 8192, 8192, 8192},
                                 {"4096^3", 4096, 4096, 4096},
                                 {"mlp fc1 (128x784 -> 256)", 128, 256, 784},
                                 {"mlp fc2 (128x256 -> 256)", 128, 256, 256},
                                 {"cnn conv1 (as GEMM: 128*784 x 25 -> 32)", 128 * 784, 32, 25},
                                 {"cnn conv2 (as GEMM: 128*196 x 800 -> 64)", 128 * 196, 64, 800},
                                 {"cnn fc1 (128x3136 -> 256)", 128, 256, 3136}};
    if (quick)
        shapes.erase(shapes.begin(), shapes.begin() + 1);
    printf("# DFP GEMM benchmark\n\nGPU: %s (%d SMs, compute capability %d.%d). TOPS = 2MNK/time; "
           "dfp8 and dfp16 include weight quantization, requantization and statistics.\n\n",
           c->name, c->sm_count, c->cc_major, c->cc_minor);
    printf("| shape | fp32 | bf16 | int8 | dfp8 | dfp8-qa | dfp16 | dfp8/int8 | dfp16/fp32 |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    float one = 1.0f, zero = 0.0f;
    int32_t ione = 1, izero = 0;
    for (const shape &s : shapes) {
        const size_t M = s.M, N = s.N, K = s.K;
        float *af, *bf, *cf;
        __nv_bfloat16 *ab, *bb;
        int8_t *a8, *b8, *y8;
        int16_t *a16, *b16, *y16;
        int32_t *c32;
        int64_t *c64;
        dlu_stats *stw, *sty;
        const size_t scratch = dlu__cuda_igemm_scratch(s.M, s.N, s.K, 1, 1);
        void *ws;
        CK(cudaMalloc(&af, M * K * 4));
        CK(cudaMalloc(&bf, N * K * 4));
        CK(cudaMalloc(&cf, M * N * 4));
        CK(cudaMalloc(&ab, M * K * 2));
        CK(cudaMalloc(&bb, N * K * 2));
        CK(cudaMalloc(&a8, M * K));
        CK(cudaMalloc(&b8, N * K));
        CK(cudaMalloc(&y8, M * N));
        CK(cudaMalloc(&a16, M * K * 2));
        CK(cudaMalloc(&b16, N * K * 2));
        CK(cudaMalloc(&y16, M * N * 2));
        CK(cudaMalloc(&c32, M * N * 4));
        CK(cudaMalloc(&c64, M * N * 8));
        CK(cudaMalloc(&stw, sizeof(dlu_stats)));
        CK(cudaMalloc(&sty, sizeof(dlu_stats)));
        CK(cudaMalloc(&ws, scratch ? scratch : 16));
        fill_f32<<<1024, 256, 0, st>>>(af, M * K, 1);
        fill_f32<<<1024, 256, 0, st>>>(bf, N * K, 2);
        to_bf16<<<1024, 256, 0, st>>>(af, ab, M * K);
        to_bf16<<<1024, 256, 0, st>>>(bf, bb, N * K);
        /* activations: values in [-1, 1) at exponent -7 (dfp8) / -15 (dfp16) */
        if (dlu__cuda_quantize_f32(be, af, M * K, -7, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 0, 0, 0, a8, NULL) ||
            dlu__cuda_quantize_f32(be, af, M * K, -15, DLU_FMT_DFP16, DLU_ROUND_NEAREST, 0, 0, 0, 0, a16, NULL)) {
            fprintf(stderr, "cuda_gemm: %s\n", dlu_last_error());
            return 1;
        }
        CK(cudaStreamSynchronize(st));
        /* row-major C (M, N) = A (M, K) B (N, K)^T is column-major C^T (N, M) = B^T' A':
         * cuBLAS m = N, n = M, k = K, op(A) = T on B (ld K), op(B) = N on A (ld K). */
        double t_f32 = timeit(st, [&] {
            return cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, s.N, s.M, s.K, &one, bf, s.K, af, s.K, &zero, cf,
                               s.N) == CUBLAS_STATUS_SUCCESS;
        });
        double t_bf16 = timeit(st, [&] {
            return cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, s.N, s.M, s.K, &one, bb, CUDA_R_16BF, s.K, ab,
                                CUDA_R_16BF, s.K, &zero, cf, CUDA_R_32F, s.N, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
        });
        double t_i8 = timeit(st, [&] {
            return cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, s.N, s.M, s.K, &ione, b8, CUDA_R_8I, s.K, a8,
                                CUDA_R_8I, s.K, &izero, c32, CUDA_R_32I, s.N, CUBLAS_COMPUTE_32I,
                                CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
        });
        auto dfp8 = [&](int qa) {
            return (!qa || dlu__cuda_quantize_f32(be, af, M * K, -7, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 1, 0, 0, a8,
                                                  sty) == DLU_OK) &&
                   dlu__cuda_quantize_f32(be, bf, N * K, -7, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 2, 0, 0, b8, stw) ==
                       DLU_OK &&
                   dlu__cuda_igemm_s8_nt(be, s.M, s.N, s.K, a8, s.K, b8, s.K, c32, s.N) == DLU_OK &&
                   dlu__cuda_requantize_acc32(be, c32, M * N, -14, -4, DLU_FMT_DFP8, DLU_ROUND_NEAREST, 0, 3, 0, 0, y8,
                                              sty) == DLU_OK;
        };
        double t_d8 = timeit(st, [&] { return dfp8(0); });
        double t_d8q = timeit(st, [&] { return dfp8(1); });
        double t_d16 = timeit(st, [&] {
            return dlu__cuda_quantize_f32(be, bf, N * K, -15, DLU_FMT_DFP16, DLU_ROUND_NEAREST, 0, 2, 0, 0, b16, stw) ==
                       DLU_OK &&
                   dlu__cuda_igemm_nt(be, s.M, s.N, s.K, a16, 1, s.K, b16, 1, s.K, c64, s.N, 0, ws, scratch) ==
                       DLU_OK &&
                   dlu__cuda_requantize_acc64(be, c64, M * N, -30, -12, DLU_FMT_DFP16, DLU_ROUND_NEAREST, 0, 3, 0, 0,
                                              y16, sty) == DLU_OK;
        });
        const double ops = 2.0 * M * N * K;
        auto tops = [&](double t, char *buf) {
            if (t < 0)
                snprintf(buf, 32, "failed");
            else
                snprintf(buf, 32, "%.1f", ops / t * 1e-12);
            return buf;
        };
        char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
        printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s.name, tops(t_f32, b1), tops(t_bf16, b2),
               tops(t_i8, b3), tops(t_d8, b4), tops(t_d8q, b5), tops(t_d16, b6),
               t_i8 > 0 && t_d8 > 0 ? (snprintf(b1, 32, "%.2f", t_i8 / t_d8), b1) : "n/a",
               t_f32 > 0 && t_d16 > 0 ? (snprintf(b2, 32, "%.2f", t_f32 / t_d16), b2) : "n/a");
        fflush(stdout);
        if (cudaGetLastError() != cudaSuccess || cudaStreamSynchronize(st) != cudaSuccess) {
            fprintf(stderr, "cuda_gemm: a CUDA error at shape %s\n", s.name);
            return 1;
        }
        cudaFree(af), cudaFree(bf), cudaFree(cf), cudaFree(ab), cudaFree(bb), cudaFree(a8), cudaFree(b8);
        cudaFree(y8), cudaFree(a16), cudaFree(b16), cudaFree(y16), cudaFree(c32), cudaFree(c64);
        cudaFree(stw), cudaFree(sty), cudaFree(ws);
    }
    printf("\nint8: cuBLAS int8 GEMM (cublasGemmEx, CUBLAS_COMPUTE_32I); dfp8/int8 >= 0.80 at 8192^3 and "
           "dfp16/fp32 >= 3 are the issue's bars. A \"failed\" cell: the library refused the shape.\n");
    dlu_backend_close(be);
    return 0;
}
