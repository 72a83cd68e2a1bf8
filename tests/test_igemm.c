/* test_igemm.c -- CUnit tests of the exact integer GEMMs (libdl/backend/cpu/igemm.c).
 *
 * What it checks: the references against a naive int64 loop; every implementation this
 * CPU can run (avx512vnni, avx512bw, portable; the others print SKIP) bit for bit (memcmp,
 * row padding included) against the reference on random and edge shapes: M/N/K = 1, odd
 * sizes, K around multiples of 4, 64 and the kernels' K blocks, strides longer than the
 * rows, more rows than one driver block, several thread counts; the extreme values where
 * a careless kernel overflows (int8 -128/127 at K = 131071, within 2^14 of the int32
 * range; int16 +-32767 and -32768 at K = 4096 and 100001, where int32 accumulation would
 * overflow); K > 131071 rejected with DLU_ERANGE for int8; the argument errors.
 * Known blind spot: swapping a kernel's vpdpbusd/vpdpwssd for the saturating forms passes,
 * because igemm.c keeps every intermediate inside int32 (which is what makes them equal).
 *
 * What it is not: a benchmark (bench/igemm_bench.c) or a test of the layers that call the
 * GEMMs. Buffers are allocated at their exact size so that the sanitizers catch a read
 * past the end of a row or an array. */
#include <CUnit/Basic.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/igemm.h"

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */
/* ------------------------------------------------------------------------------------ */

static uint64_t g_rng = 0x16E3A5EEDull;

static uint64_t rnd64(void) /* splitmix64: fixed seed, reproducible */
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int rnd_int(int lo, int hi) /* uniform in [lo, hi] */
{
    return lo + (int)(rnd64() % (uint64_t)(hi - lo + 1));
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_igemm: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Elements a (rows, ld) matrix with rows of `cols` needs: no padding after the last row. */
static size_t mat_nelem(int rows, int cols, int ld)
{
    return rows > 0 && cols > 0 ? (size_t)(rows - 1) * (size_t)ld + (size_t)cols : 0;
}

/* int8 values: 0 uniform over all 256 values, 1 all -128 and 127 (random sign),
 * 2 the constant c. */
static void fill_s8(int8_t *p, size_t n, int mode, int c)
{
    for (size_t i = 0; i < n; i++)
        p[i] = mode == 0 ? (int8_t)(rnd64() & 0xFF) : mode == 1 ? (rnd64() & 1 ? 127 : -128) : (int8_t)c;
}

/* int16 values: 0 uniform in [-32767, 32767] (the DFP range), 1 +-32767, 2 the constant c,
 * 3 uniform over all 65536 values (-32768 included). */
static void fill_s16(int16_t *p, size_t n, int mode, int c)
{
    for (size_t i = 0; i < n; i++) {
        switch (mode) {
        case 0: p[i] = (int16_t)rnd_int(-32767, 32767); break;
        case 1: p[i] = rnd64() & 1 ? 32767 : -32767; break;
        case 2: p[i] = (int16_t)c; break;
        default: p[i] = (int16_t)(uint16_t)(rnd64() & 0xFFFF); break;
        }
    }
}

/* Print the first differing element of two (M, ldc) matrices; returns 1 if they differ. */
static int report_diff32(const char *what, const int32_t *got, const int32_t *want, int M, int N, int ldc)
{
    size_t n = mat_nelem(M, N, ldc);
    if (!memcmp(got, want, n * sizeof *got))
        return 0;
    for (size_t e = 0; e < n; e++)
        if (got[e] != want[e]) {
            printf("\n    %s: first difference at C[%zu][%zu]: got %" PRId32 " (0x%08" PRIx32 "), want %" PRId32
                   " (0x%08" PRIx32 ")",
                   what, e / (size_t)ldc, e % (size_t)ldc, got[e], (uint32_t)got[e], want[e], (uint32_t)want[e]);
            break;
        }
    return 1;
}

static int report_diff64(const char *what, const int64_t *got, const int64_t *want, int M, int N, int ldc)
{
    size_t n = mat_nelem(M, N, ldc);
    if (!memcmp(got, want, n * sizeof *got))
        return 0;
    for (size_t e = 0; e < n; e++)
        if (got[e] != want[e]) {
            printf("\n    %s: first difference at C[%zu][%zu]: got %" PRId64 " (0x%016" PRIx64 "), want %" PRId64
                   " (0x%016" PRIx64 ")",
                   what, e / (size_t)ldc, e % (size_t)ldc, got[e], (uint64_t)got[e], want[e], (uint64_t)want[e]);
            break;
        }
    return 1;
}

static const char *const impls[] = {"avx512vnni", "avx512bw", "portable"};
#define NIMPL (int)(sizeof impls / sizeof impls[0])

/* Select implementation k; 0 (and a SKIP line, once per test) if this CPU cannot run it. */
static int use_impl(int k, int *skipped)
{
    dlu_status s = dlu__igemm_select(impls[k]);
    if (s == DLU_EUNSUPPORTED) {
        if (!(*skipped & (1 << k)))
            printf("\n    SKIP %s: %s", impls[k], dlu_last_error());
        *skipped |= 1 << k;
        return 0;
    }
    CU_ASSERT_EQUAL_FATAL(s, DLU_OK);
    CU_ASSERT_STRING_EQUAL(dlu__igemm_impl(), impls[k]);
    return 1;
}

/* One s8 case on every implementation and the given thread counts: C from the fast path
 * (C and its row padding pre-filled with a pattern) must equal the reference's to the
 * byte. Returns the number of mismatches. */
static int check_s8(int M, int N, int K, int lda, int ldb, int ldc, const int8_t *A, const int8_t *B,
                    const int *threads, int nthreads, int *skipped)
{
    const size_t nc = mat_nelem(M, N, ldc);
    int32_t *want = xmalloc(nc * sizeof *want), *got = xmalloc(nc * sizeof *got);
    int bad = 0;
    char what[160];

    memset(want, 0x5A, nc * sizeof *want);
    dlu__igemm_s8_nt_ref(M, N, K, A, lda, B, ldb, want, ldc);
    for (int k = 0; k < NIMPL; k++) {
        if (!use_impl(k, skipped))
            continue;
        for (int t = 0; t < nthreads; t++) {
            dlu__igemm_set_threads(threads[t]);
            memset(got, 0x5A, nc * sizeof *got);
            dlu_status s = dlu__igemm_s8_nt(M, N, K, A, lda, B, ldb, got, ldc);
            snprintf(what, sizeof what, "s8 %s threads=%d M=%d N=%d K=%d lda=%d ldb=%d ldc=%d", impls[k], threads[t],
                     M, N, K, lda, ldb, ldc);
            if (s != DLU_OK) {
                printf("\n    %s: status %d (%s)", what, (int)s, dlu_last_error());
                bad++;
            } else
                bad += report_diff32(what, got, want, M, N, ldc);
        }
    }
    dlu__igemm_select(NULL);
    dlu__igemm_set_threads(0);
    free(want);
    free(got);
    return bad;
}

static int check_s16(int M, int N, int K, int lda, int ldb, int ldc, const int16_t *A, const int16_t *B,
                     const int *threads, int nthreads, int *skipped)
{
    const size_t nc = mat_nelem(M, N, ldc);
    int64_t *want = xmalloc(nc * sizeof *want), *got = xmalloc(nc * sizeof *got);
    int bad = 0;
    char what[160];

    memset(want, 0x5A, nc * sizeof *want);
    dlu__igemm_s16_nt_ref(M, N, K, A, lda, B, ldb, want, ldc);
    for (int k = 0; k < NIMPL; k++) {
        if (!use_impl(k, skipped))
            continue;
        for (int t = 0; t < nthreads; t++) {
            dlu__igemm_set_threads(threads[t]);
            memset(got, 0x5A, nc * sizeof *got);
            dlu_status s = dlu__igemm_s16_nt(M, N, K, A, lda, B, ldb, got, ldc);
            snprintf(what, sizeof what, "s16 %s threads=%d M=%d N=%d K=%d lda=%d ldb=%d ldc=%d", impls[k],
                     threads[t], M, N, K, lda, ldb, ldc);
            if (s != DLU_OK) {
                printf("\n    %s: status %d (%s)", what, (int)s, dlu_last_error());
                bad++;
            } else
                bad += report_diff64(what, got, want, M, N, ldc);
        }
    }
    dlu__igemm_select(NULL);
    dlu__igemm_set_threads(0);
    free(want);
    free(got);
    return bad;
}

/* A random s8 / s16 case with the given sizes and row paddings. */
static int random_s8(int M, int N, int K, int pa, int pb, int pc, int mode, const int *threads, int nthreads,
                     int *skipped)
{
    const int lda = K + pa, ldb = K + pb, ldc = N + pc;
    const size_t na = mat_nelem(M, K, lda), nb = mat_nelem(N, K, ldb);
    int8_t *A = xmalloc(na), *B = xmalloc(nb);
    fill_s8(A, na, mode, 0);
    fill_s8(B, nb, mode, 0);
    int bad = check_s8(M, N, K, lda, ldb, ldc, A, B, threads, nthreads, skipped);
    free(A);
    free(B);
    return bad;
}

static int random_s16(int M, int N, int K, int pa, int pb, int pc, int mode, const int *threads, int nthreads,
                      int *skipped)
{
    const int lda = K + pa, ldb = K + pb, ldc = N + pc;
    const size_t na = mat_nelem(M, K, lda), nb = mat_nelem(N, K, ldb);
    int16_t *A = xmalloc(na * sizeof *A), *B = xmalloc(nb * sizeof *B);
    fill_s16(A, na, mode, 0);
    fill_s16(B, nb, mode, 0);
    int bad = check_s16(M, N, K, lda, ldb, ldc, A, B, threads, nthreads, skipped);
    free(A);
    free(B);
    return bad;
}

static const int thr_default[] = {0};
static const int thr_all[] = {1, 2, 3, 0};

/* ------------------------------------------------------------------------------------ */
/* tests                                                                                */
/* ------------------------------------------------------------------------------------ */

static void test_ref_vs_naive(void)
{
    int bad = 0;
    for (int rep = 0; rep < 60; rep++) {
        const int M = rnd_int(1, 9), N = rnd_int(1, 9), K = rnd_int(0, 300);
        const int lda = K + rnd_int(0, 3), ldb = K + rnd_int(0, 3), ldc = N + rnd_int(0, 3);
        const int mode = rep % 2;
        int8_t *a8 = xmalloc(mat_nelem(M, K, lda) + 1), *b8 = xmalloc(mat_nelem(N, K, ldb) + 1);
        int16_t *a16 = xmalloc((mat_nelem(M, K, lda) + 1) * 2), *b16 = xmalloc((mat_nelem(N, K, ldb) + 1) * 2);
        int32_t *c32 = xmalloc(mat_nelem(M, N, ldc) * 4);
        int64_t *c64 = xmalloc(mat_nelem(M, N, ldc) * 8);
        fill_s8(a8, mat_nelem(M, K, lda), mode, 0);
        fill_s8(b8, mat_nelem(N, K, ldb), mode, 0);
        fill_s16(a16, mat_nelem(M, K, lda), mode ? 1 : 3, 0);
        fill_s16(b16, mat_nelem(N, K, ldb), mode ? 1 : 3, 0);
        dlu__igemm_s8_nt_ref(M, N, K, a8, lda, b8, ldb, c32, ldc);
        dlu__igemm_s16_nt_ref(M, N, K, a16, lda, b16, ldb, c64, ldc);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                int64_t s8 = 0, s16 = 0;
                for (int k = 0; k < K; k++) {
                    s8 += (int64_t)a8[i * lda + k] * b8[j * ldb + k];
                    s16 += (int64_t)a16[i * lda + k] * b16[j * ldb + k];
                }
                if (c32[i * ldc + j] != s8 || c64[i * ldc + j] != s16) {
                    if (!bad)
                        printf("\n    ref M=%d N=%d K=%d C[%d][%d]: s8 %" PRId32 " vs %" PRId64 ", s16 %" PRId64
                               " vs %" PRId64,
                               M, N, K, i, j, c32[i * ldc + j], s8, c64[i * ldc + j], s16);
                    bad++;
                }
            }
        free(a8);
        free(b8);
        free(a16);
        free(b16);
        free(c32);
        free(c64);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* Sizes around every boundary of the kernels: tile rows (6, 8), 16-column vectors, panel
 * widths (32, 48, 64), groups of 4 and 2 k, 64-byte chunks, K blocks (256, 384, 512). */
static const int edge_mn[] = {1, 2, 3, 5, 6, 7, 8, 9, 13, 15, 16, 17, 31, 33, 47, 48, 49, 65, 97};
static const int edge_k[] = {1,   2,   3,   4,   5,   7,   31,  32,  33,  63,  64,
                             65,  127, 129, 255, 256, 257, 383, 385, 511, 513, 1025};
#define NEDGE_MN (int)(sizeof edge_mn / sizeof edge_mn[0])
#define NEDGE_K (int)(sizeof edge_k / sizeof edge_k[0])

static void test_s8_edges(void)
{
    int bad = 0, skipped = 0;
    for (int e = 0; e < NEDGE_K; e++) {
        const int K = edge_k[e];
        bad += random_s8(edge_mn[rnd_int(0, NEDGE_MN - 1)], edge_mn[rnd_int(0, NEDGE_MN - 1)], K, 0, 0, 0, 0,
                         thr_default, 1, &skipped);
        bad += random_s8(edge_mn[rnd_int(0, NEDGE_MN - 1)], edge_mn[rnd_int(0, NEDGE_MN - 1)], K, rnd_int(1, 70),
                         rnd_int(1, 5), rnd_int(1, 20), e % 2, thr_default, 1, &skipped);
    }
    for (int e = 0; e < NEDGE_MN; e++)
        bad += random_s8(edge_mn[e], edge_mn[NEDGE_MN - 1 - e], edge_k[rnd_int(0, NEDGE_K - 1)], rnd_int(0, 3),
                         rnd_int(0, 3), rnd_int(0, 3), 0, thr_default, 1, &skipped);
    bad += random_s8(1, 1, 1, 0, 0, 0, 0, thr_default, 1, &skipped);
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_s16_edges(void)
{
    int bad = 0, skipped = 0;
    for (int e = 0; e < NEDGE_K; e++) {
        const int K = edge_k[e];
        bad += random_s16(edge_mn[rnd_int(0, NEDGE_MN - 1)], edge_mn[rnd_int(0, NEDGE_MN - 1)], K, 0, 0, 0, 0,
                          thr_default, 1, &skipped);
        bad += random_s16(edge_mn[rnd_int(0, NEDGE_MN - 1)], edge_mn[rnd_int(0, NEDGE_MN - 1)], K, rnd_int(1, 40),
                          rnd_int(1, 5), rnd_int(1, 20), e % 4, thr_default, 1, &skipped);
    }
    for (int e = 0; e < NEDGE_MN; e++)
        bad += random_s16(edge_mn[e], edge_mn[NEDGE_MN - 1 - e], edge_k[rnd_int(0, NEDGE_K - 1)], rnd_int(0, 3),
                          rnd_int(0, 3), rnd_int(0, 3), 3, thr_default, 1, &skipped);
    bad += random_s16(1, 1, 1, 0, 0, 0, 0, thr_default, 1, &skipped);
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_random_shapes(void)
{
    int bad = 0, skipped = 0;
    for (int rep = 0; rep < 150; rep++) {
        const int M = rnd_int(1, 40), N = rnd_int(1, 130), K = rnd_int(1, 700);
        bad += random_s8(M, N, K, rnd_int(0, 9), rnd_int(0, 9), rnd_int(0, 9), rep % 3 == 2, thr_default, 1, &skipped);
        bad += random_s16(M, N, K, rnd_int(0, 9), rnd_int(0, 9), rnd_int(0, 9), rep % 4, thr_default, 1, &skipped);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

/* Big enough to be split over threads (items over panels and over rows), more rows than
 * one driver block (512), several K blocks; every thread count gives the same bits. */
static void test_threads(void)
{
    int bad = 0, skipped = 0;
    bad += random_s8(128, 256, 784, 0, 0, 0, 0, thr_all, 4, &skipped);  /* the reference net's fc1 */
    bad += random_s8(128, 10, 256, 0, 0, 0, 0, thr_all, 4, &skipped);   /* few panels: split rows */
    bad += random_s8(600, 100, 301, 3, 1, 5, 0, thr_all, 4, &skipped);  /* two row blocks */
    bad += random_s8(32, 1000, 25, 0, 0, 0, 0, thr_all, 4, &skipped);   /* conv as GEMM, tiny K */
    bad += random_s8(200, 2000, 64, 0, 0, 0, 0, thr_all, 4, &skipped);  /* panel groups, rows split */
    bad += random_s16(200, 2000, 63, 1, 0, 3, 3, thr_all, 4, &skipped);
    bad += random_s16(128, 256, 784, 0, 0, 0, 0, thr_all, 4, &skipped);
    bad += random_s16(600, 70, 301, 3, 1, 5, 3, thr_all, 4, &skipped);
    bad += random_s16(33, 9, 1111, 0, 0, 0, 1, thr_all, 4, &skipped);
    CU_ASSERT_EQUAL(bad, 0);
}

/* Several application threads calling at once: one of them gets the pool, the others run
 * alone on their own thread; all must get the reference's bits. */
typedef struct caller {
    int M, N, K;
    const int8_t *a8, *b8;
    const int16_t *a16, *b16;
    const int32_t *want32;
    const int64_t *want64;
    int bad;
} caller;

static void *caller_main(void *p)
{
    caller *c = p;
    const size_t nc = (size_t)c->M * c->N;
    int32_t *c32 = xmalloc(nc * sizeof *c32);
    int64_t *c64 = xmalloc(nc * sizeof *c64);
    for (int rep = 0; rep < 6; rep++) {
        memset(c32, 0, nc * sizeof *c32);
        memset(c64, 0, nc * sizeof *c64);
        if (dlu__igemm_s8_nt(c->M, c->N, c->K, c->a8, c->K, c->b8, c->K, c32, c->N) != DLU_OK ||
            memcmp(c32, c->want32, nc * sizeof *c32))
            c->bad++;
        if (dlu__igemm_s16_nt(c->M, c->N, c->K, c->a16, c->K, c->b16, c->K, c64, c->N) != DLU_OK ||
            memcmp(c64, c->want64, nc * sizeof *c64))
            c->bad++;
    }
    free(c32);
    free(c64);
    return NULL;
}

static void test_concurrent_callers(void)
{
    enum { NCALLERS = 3 };
    const int M = 96, N = 200, K = 600; /* 11.5M multiply-adds: uses the pool */
    const size_t na = (size_t)M * K, nb = (size_t)N * K, nc = (size_t)M * N;
    int8_t *a8 = xmalloc(na), *b8 = xmalloc(nb);
    int16_t *a16 = xmalloc(na * 2), *b16 = xmalloc(nb * 2);
    int32_t *want32 = xmalloc(nc * 4);
    int64_t *want64 = xmalloc(nc * 8);
    pthread_t th[NCALLERS];
    caller c[NCALLERS];
    int bad = 0;

    fill_s8(a8, na, 0, 0);
    fill_s8(b8, nb, 0, 0);
    fill_s16(a16, na, 3, 0);
    fill_s16(b16, nb, 3, 0);
    dlu__igemm_s8_nt_ref(M, N, K, a8, K, b8, K, want32, N);
    dlu__igemm_s16_nt_ref(M, N, K, a16, K, b16, K, want64, N);
    dlu__igemm_set_threads(2);
    for (int i = 0; i < NCALLERS; i++) {
        c[i] = (caller){M, N, K, a8, b8, a16, b16, want32, want64, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < NCALLERS; i++) {
        pthread_join(th[i], NULL);
        bad += c[i].bad;
    }
    dlu__igemm_set_threads(0);
    if (bad)
        printf("\n    %d of %d concurrent calls differ from the reference", bad, NCALLERS * 12);
    CU_ASSERT_EQUAL(bad, 0);
    free(a8);
    free(b8);
    free(a16);
    free(b16);
    free(want32);
    free(want64);
}

/* K = 131071 with int8 extremes: the result reaches +-131071 * 2^14 (all but 2^14 of
 * the int32 range), where any intermediate a path lets grow past the true partial sums
 * (the VNNI path's biased sum of (b+128)*a, its correction term) must stay in range or
 * wrap back exactly. Checked against the reference and against the closed form. */
static void test_s8_extremes(void)
{
    const int K = DLU_IGEMM_S8_KMAX;
    int bad = 0, skipped = 0;
    static const int pat[][2] = {{-128, -128}, {127, 127}, {-128, 127}, {127, -128}};
    for (int p = 0; p < 4; p++)
        for (int m = 1; m <= 3; m++) {
            const int M = m, N = 4 - m;
            int8_t *A = xmalloc((size_t)M * K), *B = xmalloc((size_t)N * K);
            fill_s8(A, (size_t)M * K, 2, pat[p][0]);
            fill_s8(B, (size_t)N * K, 2, pat[p][1]);
            int32_t c;
            dlu__igemm_s8_nt_ref(1, 1, K, A, K, B, K, &c, 1);
            CU_ASSERT_EQUAL((int64_t)c, (int64_t)pat[p][0] * pat[p][1] * K);
            bad += check_s8(M, N, K, K, K, N, A, B, thr_all, 4, &skipped);
            free(A);
            free(B);
        }
    /* random signs of the extremes, and random values, at full K and a padded stride */
    for (int mode = 0; mode < 2; mode++)
        bad += random_s8(3, 2, K, 5, 0, 1, mode ? 1 : 0, thr_default, 1, &skipped);
    CU_ASSERT_EQUAL(bad, 0);
}

/* int16 extremes where int32 accumulation would overflow: +-32767 at K = 4096
 * (4096 * 32767^2 needs 43 bits) and K = 100000, and -32768 (outside the DFP range but
 * exact here: the kernels never form a full int16 x int16 pair sum). */
static void test_s16_extremes(void)
{
    int bad = 0, skipped = 0;
    static const int pat[][2] = {{32767, 32767}, {-32767, 32767}, {-32767, -32767}, {-32768, -32768},
                                 {-32768, 32767}};
    static const int ks[] = {4096, 100001};
    for (int kk = 0; kk < 2; kk++)
        for (int p = 0; p < 5; p++) {
            const int K = ks[kk], M = 2, N = 3;
            int16_t *A = xmalloc((size_t)M * K * 2), *B = xmalloc((size_t)N * K * 2);
            fill_s16(A, (size_t)M * K, 2, pat[p][0]);
            fill_s16(B, (size_t)N * K, 2, pat[p][1]);
            int64_t c;
            dlu__igemm_s16_nt_ref(1, 1, K, A, K, B, K, &c, 1);
            CU_ASSERT_EQUAL(c, (int64_t)pat[p][0] * pat[p][1] * K);
            bad += check_s16(M, N, K, K, K, N, A, B, thr_all, 4, &skipped);
            free(A);
            free(B);
        }
    bad += random_s16(9, 17, 4096, 1, 0, 2, 1, thr_default, 1, &skipped);
    bad += random_s16(5, 19, 4097, 0, 3, 0, 3, thr_default, 1, &skipped);
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_errors(void)
{
    int8_t a8[4] = {1, 2, 3, 4}, b8[4] = {1, 1, 1, 1};
    int16_t a16[4] = {1, 2, 3, 4}, b16[4] = {1, 1, 1, 1};
    int32_t c32[2] = {7, 7};
    int64_t c64[2] = {7, 7};

    /* K one past the int32 bound; the pointers are never read */
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(1, 1, DLU_IGEMM_S8_KMAX + 1, a8, DLU_IGEMM_S8_KMAX + 1, b8,
                                     DLU_IGEMM_S8_KMAX + 1, c32, 1),
                    DLU_ERANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "131071"));
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(-1, 1, 4, a8, 4, b8, 4, c32, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(1, 1, 4, a8, 3, b8, 4, c32, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(1, 1, 4, a8, 4, b8, 3, c32, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(1, 2, 4, a8, 4, b8, 4, c32, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(1, 1, 4, NULL, 4, b8, 4, c32, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(1, 1, 4, a8, 4, b8, 4, NULL, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s16_nt(1, -1, 4, a16, 4, b16, 4, c64, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s16_nt(1, 1, 4, a16, 4, NULL, 4, c64, 1), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__igemm_s16_nt(2, 1, 4, a16, 4, b16, 4, c64, 0), DLU_EINVAL);
    CU_ASSERT(c32[0] == 7 && c32[1] == 7 && c64[0] == 7 && c64[1] == 7); /* nothing written */
    /* empty products: M or N = 0 touches nothing, K = 0 gives zeros */
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(0, 1, 4, NULL, 4, NULL, 4, NULL, 1), DLU_OK);
    CU_ASSERT_EQUAL(dlu__igemm_s16_nt(1, 0, 4, NULL, 4, NULL, 4, NULL, 0), DLU_OK);
    CU_ASSERT_EQUAL(dlu__igemm_s8_nt(1, 2, 0, NULL, 0, NULL, 0, c32, 2), DLU_OK);
    CU_ASSERT_EQUAL(dlu__igemm_s16_nt(2, 1, 0, NULL, 0, NULL, 0, c64, 1), DLU_OK);
    CU_ASSERT(c32[0] == 0 && c32[1] == 0 && c64[0] == 0 && c64[1] == 0);
    CU_ASSERT_EQUAL(dlu__igemm_select("no-such-path"), DLU_EINVAL);
}

static void test_dispatch(void)
{
    const char *best = dlu__igemm_impl();
    printf("\n    best implementation on this CPU: %s", best);
    CU_ASSERT(!strcmp(best, "avx512vnni") || !strcmp(best, "avx512bw") || !strcmp(best, "portable"));
    CU_ASSERT_EQUAL(dlu__igemm_force_portable(1), 0);
    CU_ASSERT_STRING_EQUAL(dlu__igemm_impl(), "portable");
    CU_ASSERT_EQUAL(dlu__igemm_force_portable(1), 1);
    CU_ASSERT_EQUAL(dlu__igemm_force_portable(0), 1);
    CU_ASSERT_STRING_EQUAL(dlu__igemm_impl(), best);
    CU_ASSERT_EQUAL(dlu__igemm_set_threads(3), 0);
    CU_ASSERT_EQUAL(dlu__igemm_set_threads(0), 3);
}

int main(void)
{
    CU_pSuite s;
    unsigned fails;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("igemm", NULL, NULL);
    if (!s || !CU_add_test(s, "dispatch and settings", test_dispatch) ||
        !CU_add_test(s, "references vs naive int64 loops", test_ref_vs_naive) ||
        !CU_add_test(s, "s8: edge shapes, all paths", test_s8_edges) ||
        !CU_add_test(s, "s16: edge shapes, all paths", test_s16_edges) ||
        !CU_add_test(s, "random shapes and strides, all paths", test_random_shapes) ||
        !CU_add_test(s, "threads: 1, 2, 3 and default give the same bits", test_threads) ||
        !CU_add_test(s, "concurrent callers", test_concurrent_callers) ||
        !CU_add_test(s, "s8 extremes at K = 131071", test_s8_extremes) ||
        !CU_add_test(s, "s16 extremes beyond int32 (K = 4096, 100001)", test_s16_extremes) ||
        !CU_add_test(s, "argument errors and empty products", test_errors)) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    fails = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
