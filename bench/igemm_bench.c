/* igemm_bench.c -- throughput of the exact integer GEMMs against OpenBLAS sgemm.
 *
 * What it is: a hand-run benchmark (never part of `make check`). For each shape of the
 * reference nets (C (M, N) = A (M, K) * B (N, K)^T, batch 128; conv layers as GEMMs over
 * chunks of samples) it times dlu__igemm_s8_nt, dlu__igemm_s16_nt and cblas_sgemm (NT,
 * the same layout) in the same run, several samples each, and prints the medians: s8
 * and s16 in GOPS (2*M*N*K integer ops per second), sgemm in GFLOPS, the s8/sgemm ratio
 * and the implementation. The three are timed one after the other per shape, sgemm last
 * and followed by a pause: after each call OpenBLAS's worker threads spin for tens of
 * milliseconds, and a GEMM timed meanwhile loses a core to them. What it is not: a correctness test
 * (tests/test_igemm.c) or a training benchmark (bench/train_cpu.sh).
 *
 * Usage: igemm_bench [--impl avx512vnni|avx512bw|portable] [--threads N] [--samples S]
 *                    [--all]   (--all: one table per implementation this CPU runs)
 * --threads sets both the igemm pool and OpenBLAS (default: igemm's default, and
 * OpenBLAS's own, normally the number of CPUs).
 * Build: gcc -std=c11 -D_GNU_SOURCE -O3 -Iinclude -Ilibdl bench/igemm_bench.c
 *        libdl/backend/cpu/igemm.c libdl/error.c -lopenblas -lpthread -o igemm_bench */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/igemm.h"

/* OpenBLAS extensions (declared in its cblas.h, repeated in case another CBLAS is used) */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static const struct shape {
    const char *name;
    int M, N, K;
} shapes[] = {
    {"fc1 fwd", 128, 256, 784},          {"fc2 fwd", 128, 256, 256},   {"fc3 fwd", 128, 10, 256},
    {"fc1 bwd data", 128, 784, 256},     {"fc1 bwd weight", 256, 784, 128},
    {"conv2 fwd (32 smp)", 64, 6272, 800}, {"conv2 bwd weight", 64, 800, 6272},
    {"conv2 bwd data", 800, 6272, 64},   {"conv1 fwd (32 smp)", 32, 25088, 25},
};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void pause_s(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

static uint64_t g_rng = 0xBE7C4ull;

static uint64_t rnd64(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *xmalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "igemm_bench: out of memory\n");
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct bufs {
    const struct shape *s;
    int8_t *a8, *b8;
    int32_t *c32;
    int16_t *a16, *b16;
    int64_t *c64;
    float *af, *bf, *cf;
} bufs;

static void run_op(const bufs *b, int op)
{
    const int M = b->s->M, N = b->s->N, K = b->s->K;
    dlu_status st = DLU_OK;
    switch (op) {
    case 0: st = dlu__igemm_s8_nt(M, N, K, b->a8, K, b->b8, K, b->c32, N); break;
    case 1: st = dlu__igemm_s16_nt(M, N, K, b->a16, K, b->b16, K, b->c64, N); break;
    default:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, b->af, K, b->bf, K, 0.0f, b->cf, N);
        break;
    }
    if (st != DLU_OK) {
        fprintf(stderr, "igemm_bench: %s\n", dlu_last_error());
        exit(1);
    }
}

#define MAX_SAMPLES 31

static void bench_table(int nsamples)
{
    printf("%-20s %5s %6s %5s  %9s %9s %12s %9s  %s\n", "shape", "M", "N", "K", "s8 GOPS", "s16 GOPS",
           "sgemm GFLOPS", "s8/sgemm", "impl");
    for (int si = 0; si < NSHAPES; si++) {
        const struct shape *s = &shapes[si];
        const size_t na = (size_t)s->M * s->K, nb = (size_t)s->N * s->K, nc = (size_t)s->M * s->N;
        bufs b = {s,
                  xmalloc(na),
                  xmalloc(nb),
                  xmalloc(nc * 4),
                  xmalloc(na * 2),
                  xmalloc(nb * 2),
                  xmalloc(nc * 8),
                  xmalloc(na * 4),
                  xmalloc(nb * 4),
                  xmalloc(nc * 4)};
        for (size_t i = 0; i < na; i++) {
            b.a8[i] = (int8_t)(rnd64() & 0xFF);
            b.a16[i] = (int16_t)((int)(rnd64() % 65535) - 32767);
            b.af[i] = (float)b.a8[i];
        }
        for (size_t i = 0; i < nb; i++) {
            b.b8[i] = (int8_t)(rnd64() & 0xFF);
            b.b16[i] = (int16_t)((int)(rnd64() % 65535) - 32767);
            b.bf[i] = (float)b.b8[i];
        }
        /* calibrate: iterations per sample so that one sample takes about 20 ms (sgemm
         * last, as it leaves OpenBLAS's threads spinning) */
        int iters[3];
        for (int op = 0; op < 3; op++) {
            run_op(&b, op);
            double t0 = now_s();
            int n = 0;
            do {
                run_op(&b, op);
                n++;
            } while (now_s() - t0 < 0.005);
            const double per = (now_s() - t0) / n;
            iters[op] = (int)(0.02 / per) + 1;
        }
        double t[3][MAX_SAMPLES];
        for (int op = 0; op < 3; op++)
            for (int k = 0; k < nsamples; k++) {
                const double t0 = now_s();
                for (int it = 0; it < iters[op]; it++)
                    run_op(&b, op);
                t[op][k] = (now_s() - t0) / iters[op];
            }
        pause_s(0.3); /* let OpenBLAS's threads stop spinning (see the top) */
        double med[3];
        for (int op = 0; op < 3; op++) {
            qsort(t[op], (size_t)nsamples, sizeof t[op][0], cmp_double);
            med[op] = t[op][nsamples / 2];
        }
        const double ops = 2.0 * s->M * s->N * s->K;
        printf("%-20s %5d %6d %5d  %9.1f %9.1f %12.1f %9.2f  %s\n", s->name, s->M, s->N, s->K, ops / med[0] * 1e-9,
               ops / med[1] * 1e-9, ops / med[2] * 1e-9, med[2] / med[0], dlu__igemm_impl());
        fflush(stdout);
        free(b.a8);
        free(b.b8);
        free(b.c32);
        free(b.a16);
        free(b.b16);
        free(b.c64);
        free(b.af);
        free(b.bf);
        free(b.cf);
    }
}

int main(int argc, char **argv)
{
    const char *impl = NULL;
    int threads = 0, nsamples = 7, all = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--impl") && i + 1 < argc)
            impl = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--samples") && i + 1 < argc)
            nsamples = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--all"))
            all = 1;
        else {
            fprintf(stderr, "usage: %s [--impl avx512vnni|avx512bw|portable] [--threads N] [--samples S] [--all]\n",
                    argv[0]);
            return 2;
        }
    }
    if (nsamples < 1 || nsamples > MAX_SAMPLES) {
        fprintf(stderr, "igemm_bench: --samples must be in 1..%d\n", MAX_SAMPLES);
        return 2;
    }
    if (threads > 0) {
        dlu__igemm_set_threads(threads);
        openblas_set_num_threads(threads);
    }
    printf("igemm_bench: best igemm path %s; threads: igemm %d (0 = one per CPU), OpenBLAS %d; "
           "median of %d samples\n",
           dlu__igemm_impl(), threads, openblas_get_num_threads(), nsamples);
    static const char *const names[] = {"avx512vnni", "avx512bw", "portable"};
    for (int k = 0; k < 3; k++) {
        const char *want = all ? names[k] : impl;
        if (want && dlu__igemm_select(want) != DLU_OK) {
            if (all)
                continue;
            fprintf(stderr, "igemm_bench: %s\n", dlu_last_error());
            return 1;
        }
        bench_table(nsamples);
        if (!all)
            break;
        printf("\n");
    }
    return 0;
}
