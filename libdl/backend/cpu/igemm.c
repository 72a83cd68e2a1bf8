/* igemm.c -- exact integer GEMM for the CPU backend: C (M, N) = A (M, K) * B (N, K)^T.
 *
 * What it is: the references (the spec), a portable C path, AVX-512 paths chosen at run
 * time, and a small persistent pthread pool that splits one GEMM over the cores. What it
 * is not: a general BLAS (see igemm.h), and not compiled with any global -m flag: the
 * AVX-512 functions carry their own target attribute and run only where
 * __builtin_cpu_supports says the CPU (and OS) has the features, so the library still runs
 * on any x86-64 (or other) CPU. Written for GCC and Clang (intrinsics, target attributes,
 * two lines of inline asm).
 *
 * Numeric contract: exact. Integer addition is associative, so every summation order gives
 * the same bits as long as no intermediate leaves the range where the arithmetic is exact.
 * Why each path stays exact:
 *
 *   reference s8   int32 accumulator, k ascending. Every partial sum is a sum of at most
 *                  K products with |a*b| <= 128*128 = 2^14, so |partial| <= K * 2^14
 *                  < 2^31 for K <= 131071 (= DLU_IGEMM_S8_KMAX; K = 131072 with all
 *                  a = b = -128 gives 2^31, one too many). Nothing wraps.
 *   reference s16  int64 accumulator: |partial| <= K * 2^30 < 2^63 for any int K.
 *   portable s8    as the reference, in another order (same bound, nothing wraps).
 *   portable s16   b is split as b = bh*256 + bl with bh = b >> 8 in [-128, 127] and
 *                  bl = b & 255 in [0, 255]; over chunks of at most 256 k, sum a*bh and
 *                  sum a*bl in int32 (|a*bl| <= 32768*255, times 256 = 2139095040 < 2^31;
 *                  |a*bh| <= 2^22, times 256 = 2^30), then add h*256 + l to an int64 sum.
 *                  int16 x int16 -> int32 dot products are what compilers vectorise
 *                  (pmaddwd); int64 products are not, without AVX-512.
 *   avx512vnni s8  vpdpbusd multiplies unsigned bytes by signed bytes, so B is packed as
 *                  b + 128 (b XOR 0x80, in [0, 255]) and the accumulator starts at
 *                  -128 * sum_k a_ik (|.| <= 131071 * 2^14 < 2^31, computed in int32):
 *                  sum_k (b+128)*a - 128 sum_k a = sum_k a*b. After the products of k < k'
 *                  the accumulator holds sum_{k<k'} a*b - 128 sum_{k>=k'} a, at most
 *                  2^14 k' + 2^14 (K - k') = 2^14 K < 2^31 in magnitude: no intermediate
 *                  leaves int32 (starting from 0 and subtracting the correction at the end
 *                  would pass through up to K*255*128, about 2^32). The instruction used is
 *                  vpdpbusd, the non-saturating form (never vpdpbusds): even in an order
 *                  whose intermediates wrapped, every step is exact modulo 2^32 and the true
 *                  result lies in [-2^31, 2^31), so the int32 it ends with would be exact.
 *   avx512bw s8    int8 sign-extended to int16 (even and odd bytes of each group of 4 k)
 *                  and vpmaddwd: two products of |.| <= 2^14 per int32 lane, then vpaddd.
 *                  Every partial sum is a sum of true products, |.| <= K*2^14 < 2^31:
 *                  nothing wraps. (vpmaddubsw is not used: it saturates.)
 *   avx512 s16     as portable s16 with vectors: B packed as the planes bh and bl; per
 *                  k-pair vpdpwssd (VNNI; NOT the saturating vpdpwssds) or vpmaddwd +
 *                  vpaddd (BW) adds a*bh and a*bl pair products into two int32
 *                  accumulators per output; K is cut in blocks of at most 256, after each
 *                  the accumulators are widened and h*256 + l is added to the int64 C.
 *                  Bounds as for portable s16: no int32 intermediate wraps. Products of
 *                  full int16 x int16 are never formed (their pair sums would wrap for
 *                  -32768: 2 * 2^30 = 2^31), so -32768 is exact too.
 *
 * Structure (GotoBLAS-like, simplified): B is cut in panels of NR columns (the N
 * direction) and K blocks of at most KC; a group of panels (as many as fit 32 KiB, at most
 * 16; one when K is long) is packed into a stack buffer in the layout the micro-kernel
 * reads (groups of 4 (s8) or 2 (s16) k of 16 columns per
 * 64-byte vector, the dword transposition done with a 16x16 in-register transpose); the
 * micro-kernel then runs over the rows of A, MR at a time, holding MR x NR outputs in
 * vector accumulators and broadcasting a dword of A (4 int8 or 2 int16 k) per row per
 * step: no horizontal reductions at all. A is read in place (lda), so only B is packed;
 * the K tail (K not a multiple of 4 or 2) is zero-padded in the panel and the last
 * partial dword of each A row is built once per GEMM (it cannot be loaded: it may end
 * past the array).
 *
 * Threads: the work is cut into items (a panel group of B times a block of rows of A); the
 * calling thread and the pool's helpers take items from an atomic counter until none is
 * left. Every output element belongs to exactly one item and is computed by one thread
 * from start to end, so results are the same for every thread count and schedule (and
 * would be even for non-associative arithmetic). The pool is plain pthreads: helpers sleep
 * on a condition variable between GEMMs (no spinning, so they do not fight OpenBLAS's
 * threads for the cores); a helper that wakes late just finds fewer items left. */
#include "igemm.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define IG_X86 1
#include <immintrin.h>
#define IG_TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define IG_TGT_BW __attribute__((target("avx512f,avx512bw")))
#else
#define IG_X86 0
#endif

#define IG_INLINE static inline __attribute__((always_inline))
#define IG_MIN(a, b) ((a) < (b) ? (a) : (b))

/* ------------------------------------------------------------------------------------ */
/* References                                                                           */
/* ------------------------------------------------------------------------------------ */

void dlu__igemm_s8_nt_ref(int M, int N, int K, const int8_t *A, int lda, const int8_t *B, int ldb, int32_t *C,
                          int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const int8_t *a = A + (ptrdiff_t)i * lda; /* (K) */
            const int8_t *b = B + (ptrdiff_t)j * ldb; /* (K) */
            int32_t s = 0;
            for (int k = 0; k < K; k++)
                s += (int32_t)a[k] * (int32_t)b[k];
            C[(ptrdiff_t)i * ldc + j] = s;
        }
}

void dlu__igemm_s16_nt_ref(int M, int N, int K, const int16_t *A, int lda, const int16_t *B, int ldb, int64_t *C,
                           int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const int16_t *a = A + (ptrdiff_t)i * lda; /* (K) */
            const int16_t *b = B + (ptrdiff_t)j * ldb; /* (K) */
            int64_t s = 0;
            for (int k = 0; k < K; k++)
                s += (int64_t)a[k] * (int64_t)b[k];
            C[(ptrdiff_t)i * ldc + j] = s;
        }
}

/* ------------------------------------------------------------------------------------ */
/* Dispatch state                                                                       */
/* ------------------------------------------------------------------------------------ */

enum { IMPL_PORTABLE, IMPL_AVX512BW, IMPL_AVX512VNNI, IMPL_COUNT };
static const char *const impl_name[IMPL_COUNT] = {"portable", "avx512bw", "avx512vnni"};

static atomic_int g_best = -1;     /* detected once */
static atomic_int g_forced = -1;   /* -1: the best one; else an IMPL_* */
static atomic_int g_threads = 0;   /* 0: default (the CPUs we may run on) */

static int detect_impl(void)
{
#if IG_X86
    /* libgcc checks XCR0 too: the OS must save the zmm and opmask state. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        return __builtin_cpu_supports("avx512vnni") ? IMPL_AVX512VNNI : IMPL_AVX512BW;
#endif
    return IMPL_PORTABLE;
}

static int best_impl(void)
{
    int b = atomic_load_explicit(&g_best, memory_order_relaxed);
    if (b < 0) {
        b = detect_impl();
        atomic_store_explicit(&g_best, b, memory_order_relaxed);
    }
    return b;
}

static int current_impl(void)
{
    const int f = atomic_load_explicit(&g_forced, memory_order_relaxed);
    return f >= 0 ? f : best_impl();
}

const char *dlu__igemm_impl(void) { return impl_name[current_impl()]; }

int dlu__igemm_force_portable(int on)
{
    const int prev = atomic_exchange(&g_forced, on ? IMPL_PORTABLE : -1);
    return prev == IMPL_PORTABLE;
}

dlu_status dlu__igemm_select(const char *name)
{
    if (!name) {
        atomic_store(&g_forced, -1);
        return DLU_OK;
    }
    for (int i = 0; i < IMPL_COUNT; i++)
        if (!strcmp(name, impl_name[i])) {
            /* a path needs its own features; the best path's features include the others' */
            if (i > best_impl())
                return dlu__error(DLU_EUNSUPPORTED, "igemm: this CPU cannot run the %s path (best: %s)", name,
                                  impl_name[best_impl()]);
            atomic_store(&g_forced, i);
            return DLU_OK;
        }
    return dlu__error(DLU_EINVAL, "igemm: unknown implementation '%s' (expected avx512vnni, avx512bw or portable)",
                      name);
}

/* ------------------------------------------------------------------------------------ */
/* Worker pool                                                                          */
/* ------------------------------------------------------------------------------------ */

#define IG_MAX_THREADS 64

typedef void (*pool_fn)(void *arg);

static struct {
    pthread_mutex_t mu;   /* guards the fields below */
    pthread_cond_t wake;  /* helpers wait here for gen to change */
    pthread_cond_t done;  /* the caller waits here for pending == 0 */
    pthread_mutex_t busy; /* held by the one caller that owns the pool during a GEMM */
    int nstarted;         /* helper threads started (ids 1..nstarted) */
    unsigned long gen;    /* job counter */
    int nwant;            /* helpers 1..nwant take part in job gen */
    int pending;          /* of those, how many have not finished */
    pool_fn fn;
    void *arg;
    pid_t pid; /* the process that started the helpers (a fork() child has none) */
} g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
            0, 0, 0, 0, NULL, NULL, 0};

/* The job number each helper was started at (it must not take that job for a new one). */
static unsigned long g_helper_gen0[IG_MAX_THREADS];

static void *pool_helper(void *p)
{
    const int id = (int)(intptr_t)p;
    pthread_mutex_lock(&g_pool.mu);
    unsigned long seen = g_helper_gen0[id];
    for (;;) {
        while (g_pool.gen == seen)
            pthread_cond_wait(&g_pool.wake, &g_pool.mu);
        seen = g_pool.gen;
        if (id > g_pool.nwant)
            continue;
        pool_fn fn = g_pool.fn;
        void *arg = g_pool.arg;
        pthread_mutex_unlock(&g_pool.mu);
        fn(arg);
        pthread_mutex_lock(&g_pool.mu);
        if (--g_pool.pending == 0)
            pthread_cond_signal(&g_pool.done);
    }
    return NULL;
}

static int default_threads(void)
{
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    const long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

int dlu__igemm_set_threads(int n)
{
    return atomic_exchange(&g_threads, n > 0 ? n : 0);
}

static int threads_wanted(void)
{
    int n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    if (n <= 0)
        n = default_threads();
    return n < IG_MAX_THREADS ? n : IG_MAX_THREADS;
}

/* With g_pool.busy held: start helpers until there are `want` (or as many as could be
 * started); returns how many there are. Helpers block every signal: signals are for the
 * application's threads. */
static int pool_ensure(int want)
{
    if (g_pool.nstarted > 0 && g_pool.pid != getpid())
        return 0; /* a fork() child: the helpers stayed in the parent */
    g_pool.pid = getpid();
    if (want > IG_MAX_THREADS - 1)
        want = IG_MAX_THREADS - 1;
    if (g_pool.nstarted >= want)
        return g_pool.nstarted;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1u << 20); /* a helper uses about 35 KiB */
    while (g_pool.nstarted < want) {
        pthread_t th;
        const int id = g_pool.nstarted + 1;
        pthread_mutex_lock(&g_pool.mu);
        g_helper_gen0[id] = g_pool.gen;
        pthread_mutex_unlock(&g_pool.mu);
        if (pthread_create(&th, &attr, pool_helper, (void *)(intptr_t)id) != 0)
            break;
        g_pool.nstarted = id;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return g_pool.nstarted;
}

/* fn(arg) on the calling thread and on up to nthreads - 1 helpers at once; returns when
 * all calls have returned. fn must share out its work itself (an atomic counter in arg).
 * When the pool is in use by another caller, fn runs on this thread alone. */
static void run_parallel(pool_fn fn, void *arg, int nthreads)
{
    if (nthreads > 1 && pthread_mutex_trylock(&g_pool.busy) == 0) {
        const int h = pool_ensure(nthreads - 1);
        if (h > 0) {
            pthread_mutex_lock(&g_pool.mu);
            g_pool.fn = fn;
            g_pool.arg = arg;
            g_pool.nwant = h < nthreads - 1 ? h : nthreads - 1;
            g_pool.pending = g_pool.nwant;
            g_pool.gen++;
            pthread_cond_broadcast(&g_pool.wake);
            pthread_mutex_unlock(&g_pool.mu);
            fn(arg);
            pthread_mutex_lock(&g_pool.mu);
            while (g_pool.pending > 0)
                pthread_cond_wait(&g_pool.done, &g_pool.mu);
            pthread_mutex_unlock(&g_pool.mu);
            pthread_mutex_unlock(&g_pool.busy);
            return;
        }
        pthread_mutex_unlock(&g_pool.busy);
    }
    fn(arg);
}

/* A parallel loop over task indices on the same pool (for element-wise work of the DFP
 * kernels): each index runs exactly once, on some thread. */
typedef struct par_loop {
    void (*task)(void *ctx, int i);
    void *ctx;
    int ntasks;
    atomic_int next;
} par_loop;

static void par_loop_fn(void *arg)
{
    par_loop *pl = arg;
    for (int i; (i = atomic_fetch_add(&pl->next, 1)) < pl->ntasks;)
        pl->task(pl->ctx, i);
}

void dlu__cpu_parallel_for(int ntasks, void (*task)(void *ctx, int i), void *ctx)
{
    par_loop pl = {task, ctx, ntasks, 0};
    const int t = threads_wanted();
    run_parallel(par_loop_fn, &pl, t < ntasks ? t : ntasks);
}

int dlu__cpu_pool_threads(void) { return threads_wanted(); }

/* ------------------------------------------------------------------------------------ */
/* Jobs                                                                                 */
/* ------------------------------------------------------------------------------------ */

enum { JOB_S8_PORT, JOB_S8_BW, JOB_S8_VNNI, JOB_S16_PORT, JOB_S16_BW, JOB_S16_VNNI };

#define PANEL_BYTES 32768 /* packed panels of one group, per thread (stack) */
#define IG_GP_MAX 16      /* panels per group at most */

/* One row block (rows m0 .. m0+mc-1 of the GEMM) cut into items: item t is panel group
 * t / nmblk (gp panels of nr columns: columns gp*nr*p ..) times row block t % nmblk (rows
 * mrows*q .. of the block). A group's panels are packed together so that a tile of rows
 * sweeps C along its rows (the stores then stream; with one panel at a time and a short
 * K, C's rows are written 192 bytes at a time, a page apart, and the stores stall). */
typedef struct job {
    int kind;
    int N, K;
    int mc;         /* rows in this block */
    int nr;         /* panel width */
    int gp;         /* panels per group */
    int kcb;        /* K block (the last one may be shorter) */
    int mrows;      /* rows per item (a multiple of the kernel's MR, except the last) */
    int nmblk;      /* row blocks per panel group */
    int nitems;
    const void *A;  /* row m0 of A: (mc, lda) */
    ptrdiff_t lda;
    const void *B;  /* (N, ldb) */
    ptrdiff_t ldb;
    void *C;        /* row m0 of C: (mc, ldc) */
    ptrdiff_t ldc;
    const int32_t *corr; /* (mc) initial accumulator per row, or NULL (= 0) */
    const int32_t *tail; /* (mc) last partial dword of each A row, or NULL (K even / multiple of 4) */
    atomic_int next;     /* next item to take */
} job;

typedef struct item {
    int j0, nc; /* columns j0 .. j0+nc-1 (gp panels or fewer) */
    int i0, nrows; /* rows i0 .. i0+nrows-1 of the block */
} item;

static item item_of(const job *jb, int t)
{
    item it;
    const int p = t / jb->nmblk, q = t % jb->nmblk;
    it.j0 = p * jb->gp * jb->nr;
    it.nc = jb->N - it.j0 < jb->gp * jb->nr ? jb->N - it.j0 : jb->gp * jb->nr;
    it.i0 = q * jb->mrows;
    it.nrows = jb->mc - it.i0 < jb->mrows ? jb->mc - it.i0 : jb->mrows;
    return it;
}

/* K cut in nearly equal blocks of at most kcmax, multiples of `step` (4 or 2) except the
 * last: returns the block length to use. */
static inline int k_block(int K, int kcmax, int step)
{
    const int nb = (K + kcmax - 1) / kcmax;
    int kc = (K + nb - 1) / nb;
    kc = (kc + step - 1) / step * step;
    return kc < kcmax ? kc : kcmax;
}

/* The last 1-3 int8 (or 1 int16) of a row as a zero-padded little-endian dword. */
static inline int32_t tail_dword_s8(const int8_t *a, int K)
{
    uint32_t t = 0;
    for (int k = K & ~3; k < K; k++)
        t |= (uint32_t)(uint8_t)a[k] << (8 * (k & 3));
    return (int32_t)t; /* modulo 2^32 (GCC, Clang) */
}

static inline int32_t tail_dword_s16(const int16_t *a, int K)
{
    return (K & 1) ? (int32_t)(uint16_t)a[K - 1] : 0;
}

/* ------------------------------------------------------------------------------------ */
/* Portable kernels                                                                     */
/* ------------------------------------------------------------------------------------ */

/* Columns per item. 4 (s8) or 2 (s16) outputs of one row at a time, inner loops over k
 * that compilers vectorise with the baseline ISA (int8/int16 products summed in int32:
 * pmaddwd and friends; about 20-25 GOPS per core with SSE2 only). */
#define PORT_NR 64

static void s8_port_item(const job *jb, int t)
{
    const item it = item_of(jb, t);
    const int K = jb->K;
    for (int i = it.i0; i < it.i0 + it.nrows; i++) {
        const int8_t *a = (const int8_t *)jb->A + i * jb->lda;  /* (K) */
        int32_t *c = (int32_t *)jb->C + i * jb->ldc;           /* (N) */
        int j = it.j0;
        for (; j + 4 <= it.j0 + it.nc; j += 4) {
            const int8_t *b0 = (const int8_t *)jb->B + j * jb->ldb, *b1 = b0 + jb->ldb, *b2 = b1 + jb->ldb,
                         *b3 = b2 + jb->ldb;
            int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int k = 0; k < K; k++) {
                const int32_t x = a[k];
                s0 += x * b0[k];
                s1 += x * b1[k];
                s2 += x * b2[k];
                s3 += x * b3[k];
            }
            c[j] = s0;
            c[j + 1] = s1;
            c[j + 2] = s2;
            c[j + 3] = s3;
        }
        for (; j < it.j0 + it.nc; j++) {
            const int8_t *b = (const int8_t *)jb->B + j * jb->ldb;
            int32_t s = 0;
            for (int k = 0; k < K; k++)
                s += (int32_t)a[k] * b[k];
            c[j] = s;
        }
    }
}

/* Chunk of k summed in int32 before widening (see the bound at the top). */
#define S16_KCHUNK 256

static void s16_port_item(const job *jb, int t)
{
    const item it = item_of(jb, t);
    const int K = jb->K;
    for (int i = it.i0; i < it.i0 + it.nrows; i++) {
        const int16_t *a = (const int16_t *)jb->A + i * jb->lda; /* (K) */
        int64_t *c = (int64_t *)jb->C + i * jb->ldc;            /* (N) */
        int j = it.j0;
        for (; j + 2 <= it.j0 + it.nc; j += 2) {
            const int16_t *b0 = (const int16_t *)jb->B + j * jb->ldb, *b1 = b0 + jb->ldb;
            int64_t s0 = 0, s1 = 0;
            for (int k0 = 0; k0 < K; k0 += S16_KCHUNK) {
                const int kend = K - k0 < S16_KCHUNK ? K : k0 + S16_KCHUNK;
                int32_t h0 = 0, l0 = 0, h1 = 0, l1 = 0;
                for (int k = k0; k < kend; k++) {
                    /* int16 x int16 summed in int32 is the pattern compilers turn into
                     * pmaddwd (3-4x faster than int32 operands here); >> of a negative int
                     * is arithmetic in GCC and Clang */
                    const int16_t x = a[k];
                    const int16_t h0b = (int16_t)(b0[k] >> 8), l0b = (int16_t)(b0[k] & 255);
                    const int16_t h1b = (int16_t)(b1[k] >> 8), l1b = (int16_t)(b1[k] & 255);
                    h0 += x * h0b;
                    l0 += x * l0b;
                    h1 += x * h1b;
                    l1 += x * l1b;
                }
                s0 += (int64_t)h0 * 256 + l0;
                s1 += (int64_t)h1 * 256 + l1;
            }
            c[j] = s0;
            c[j + 1] = s1;
        }
        for (; j < it.j0 + it.nc; j++) {
            const int16_t *b = (const int16_t *)jb->B + j * jb->ldb;
            int64_t s = 0;
            for (int k = 0; k < K; k++)
                s += (int64_t)a[k] * b[k];
            c[j] = s;
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* AVX-512 kernels                                                                      */
/* ------------------------------------------------------------------------------------ */

#if IG_X86

/* Tile shapes (MR rows x NV vectors of 16 columns) fit the 32 zmm registers with the B
 * vectors and a broadcast: s8 VNNI 8x3 (24 accumulators), s8 BW 8x2 (16 + 4 B + 2 A),
 * s16 6x2 (2 x 12 accumulators, the bh and bl planes). KC keeps one packed panel block
 * at 24-32 KiB, inside the 48 KiB L1 of current cores next to the A rows; shorter K
 * blocks let several panels share the buffer (see job). s16 blocks must be <=
 * S16_KCHUNK (the int32 bound). Measured on a Sapphire Rapids-class core: KC 512 beats
 * 256 and 1024 for s8. */
#define S8V_MR 8
#define S8V_NV 3
#define S8V_NR (16 * S8V_NV)
#define S8V_KC 512 /* panel 48 x 512 = 24 KiB */
#define S8B_MR 8
#define S8B_NV 2
#define S8B_NR (16 * S8B_NV)
#define S8B_KC 384 /* panel 32 x 384 x 2 B = 24 KiB */
#define S16_MR 6
#define S16_NV 2
#define S16_NR (16 * S16_NV)
#define S16_KC S16_KCHUNK /* panel 32 x 256 x 2 planes x 2 B = 32 KiB */

_Static_assert(S8V_NR * S8V_KC <= PANEL_BYTES, "s8 vnni panel");
_Static_assert(S8B_NR * S8B_KC * 2 <= PANEL_BYTES, "s8 bw panel");
_Static_assert(S16_NR * S16_KC * 4 <= PANEL_BYTES, "s16 panel");
_Static_assert(S16_KC <= S16_KCHUNK, "s16 int32 bound");

/* 16 x 16 transpose of dwords: in r[j] (row j) dword g  ->  out r[g] dword j. */
#define IG_TRANSPOSE16(r)                                                                                  \
    do {                                                                                                   \
        __m512i t_[16], u_[16];                                                                            \
        for (int q_ = 0; q_ < 16; q_ += 2) {                                                               \
            t_[q_] = _mm512_unpacklo_epi32(r[q_], r[q_ + 1]);                                              \
            t_[q_ + 1] = _mm512_unpackhi_epi32(r[q_], r[q_ + 1]);                                          \
        }                                                                                                  \
        /* u_[4*b + e], e = 0..3: rows 4b..4b+3, dword 4L+e of each 128-bit lane L */                      \
        for (int b_ = 0; b_ < 16; b_ += 4) {                                                               \
            u_[b_] = _mm512_unpacklo_epi64(t_[b_], t_[b_ + 2]);                                            \
            u_[b_ + 1] = _mm512_unpackhi_epi64(t_[b_], t_[b_ + 2]);                                        \
            u_[b_ + 2] = _mm512_unpacklo_epi64(t_[b_ + 1], t_[b_ + 3]);                                    \
            u_[b_ + 3] = _mm512_unpackhi_epi64(t_[b_ + 1], t_[b_ + 3]);                                    \
        }                                                                                                  \
        for (int e_ = 0; e_ < 4; e_++) {                                                                   \
            const __m512i p_ = _mm512_shuffle_i32x4(u_[e_], u_[4 + e_], 0x88);                             \
            const __m512i q_ = _mm512_shuffle_i32x4(u_[e_], u_[4 + e_], 0xdd);                             \
            const __m512i s_ = _mm512_shuffle_i32x4(u_[8 + e_], u_[12 + e_], 0x88);                        \
            const __m512i v_ = _mm512_shuffle_i32x4(u_[8 + e_], u_[12 + e_], 0xdd);                        \
            r[e_] = _mm512_shuffle_i32x4(p_, s_, 0x88);                                                    \
            r[8 + e_] = _mm512_shuffle_i32x4(p_, s_, 0xdd);                                                \
            r[4 + e_] = _mm512_shuffle_i32x4(q_, v_, 0x88);                                                \
            r[12 + e_] = _mm512_shuffle_i32x4(q_, v_, 0xdd);                                               \
        }                                                                                                  \
    } while (0)

static inline __mmask16 cols_mask(int nc, int v)
{
    const int n = nc - 16 * v;
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

static inline __mmask64 bytes_mask(int n)
{
    return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
}

/* Load 16 rows of 64 bytes at B + (16v + j) * ldb + off (j = 0..15), nbytes valid bytes
 * (the rest zero), rows >= nc zero: the input of one transpose. */
#define IG_LOAD16(r, B, ldb, nc, v, off, nbytes)                                                           \
    do {                                                                                                   \
        const __mmask64 km_ = bytes_mask(nbytes);                                                          \
        for (int j_ = 0; j_ < 16; j_++) {                                                                  \
            const int col_ = 16 * (v) + j_;                                                                \
            r[j_] = col_ < (nc) ? _mm512_maskz_loadu_epi8(km_, (const char *)((B) + col_ * (ldb)) + (off)) \
                                : _mm512_setzero_si512();                                                  \
        }                                                                                                  \
    } while (0)

/* --- s8, VNNI ------------------------------------------------------------------------ */

/* Panel layout: group g (k = 4g .. 4g+3) of column 16v + j at byte (g*S8V_NR + 16v + j)*4,
 * each byte b XOR 0x80 (= b + 128 as an unsigned byte). ceil(kc/4) groups, the last one
 * zero-padded before the XOR (pad bytes meet zero bytes of the A tail dword). */
IG_TGT_VNNI static void pack_s8_vnni(const int8_t *B, ptrdiff_t ldb, int nc, int kc, uint8_t *P)
{
    const int ng = (kc + 3) / 4;
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    for (int v = 0; v < (nc + 15) / 16; v++)
        for (int c = 0; c < kc; c += 64) {
            __m512i r[16];
            IG_LOAD16(r, B, ldb, nc, v, c, kc - c);
            IG_TRANSPOSE16(r);
            const int g0 = c / 4, gn = ng - g0 < 16 ? ng - g0 : 16;
            for (int g = 0; g < gn; g++)
                _mm512_store_si512(P + ((size_t)(g0 + g) * S8V_NR + 16 * v) * 4, _mm512_xor_si512(r[g], x80));
        }
}

/* The micro-kernels keep their MR x NV accumulators in named variables (c<row><vector>),
 * written out by the macros below for every row; `if (MR > r)` and `if (NV > v)` are
 * compile-time constants in each instantiation. GCC 12 keeps an array of __m512i
 * accumulators on the stack, and with the vpdpbusd/vpdpwssd builtins it copies every
 * accumulator twice per step (the destination is tied to the accumulator input), so the
 * VNNI instructions are written as one-line inline asm (AT&T order: src2, src1, dst):
 *   IG_VPDPBUSD(c, u, s):  c = _mm512_dpbusd_epi32(c, u, s)   (u unsigned, s signed bytes)
 *   IG_VPDPWSSD(c, x, y):  c = _mm512_dpwssd_epi32(c, x, y)
 * Both are the non-saturating forms (the ...s forms saturate and are never used). */
#define IG_VPDPBUSD(c, u, s) __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(u), "v"(s))
#define IG_VPDPWSSD(c, x, y) __asm__("vpdpwssd %2, %1, %0" : "+v"(c) : "v"(x), "v"(y))
#define IG_ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define IG_ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)

/* Row r of an MR-row tile of A, with rows 0-3 addressed from a0 and 4-7 from a4 (two
 * base registers, lda and 3*lda: x86 addressing modes do the rest). */
#define IG_AROW(r) ((r) < 4 ? a0 + ((r) & 3) * lda : a4 + ((r) & 3) * lda)

static inline int32_t ld_dword(const void *p)
{
    int32_t x;
    memcpy(&x, p, 4);
    return x;
}

/* C (MR, nc) = corr + A (MR, 4*ng [+ tail]) * panel, or C += ... when corr is NULL. */
#define S8V_DECL(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0;
#define S8V_INIT(r)                                                                                        \
    if (MR > r) {                                                                                          \
        if (corr) {                                                                                        \
            c##r##0 = c##r##1 = c##r##2 = _mm512_set1_epi32(corr[r]);                                      \
        } else {                                                                                           \
            c##r##0 = _mm512_maskz_loadu_epi32(m0, C + r * ldc);                                           \
            if (NV > 1)                                                                                    \
                c##r##1 = _mm512_maskz_loadu_epi32(m1, C + r * ldc + 16);                                  \
            if (NV > 2)                                                                                    \
                c##r##2 = _mm512_maskz_loadu_epi32(m2, C + r * ldc + 32);                                  \
        }                                                                                                  \
    }
#define S8V_STEP(r, AVAL)                                                                                  \
    if (MR > r) {                                                                                          \
        const __m512i a = _mm512_set1_epi32(AVAL);                                                         \
        IG_VPDPBUSD(c##r##0, b0, a);                                                                       \
        if (NV > 1)                                                                                        \
            IG_VPDPBUSD(c##r##1, b1, a);                                                                   \
        if (NV > 2)                                                                                        \
            IG_VPDPBUSD(c##r##2, b2, a);                                                                   \
    }
#define S8V_STEP_A(r) S8V_STEP(r, ld_dword(IG_AROW(r)))
#define S8V_STEP_T(r) S8V_STEP(r, tail[r])
#define S8V_STORE(r)                                                                                       \
    if (MR > r) {                                                                                          \
        _mm512_mask_storeu_epi32(C + r * ldc, m0, c##r##0);                                                \
        if (NV > 1)                                                                                        \
            _mm512_mask_storeu_epi32(C + r * ldc + 16, m1, c##r##1);                                       \
        if (NV > 2)                                                                                        \
            _mm512_mask_storeu_epi32(C + r * ldc + 32, m2, c##r##2);                                       \
    }
#define S8V_LOADB(P)                                                                                       \
    const __m512i b0 = _mm512_load_si512(P);                                                               \
    const __m512i b1 = NV > 1 ? _mm512_load_si512((P) + 64) : b0;                                          \
    const __m512i b2 = NV > 2 ? _mm512_load_si512((P) + 128) : b0;

IG_INLINE IG_TGT_VNNI void kern_s8_vnni(const int MR, const int NV, int nc, const int8_t *A, ptrdiff_t lda,
                                        const uint8_t *P, int ng, const int32_t *tail, const int32_t *corr,
                                        int32_t *C, ptrdiff_t ldc)
{
    const __mmask16 m0 = cols_mask(nc, 0), m1 = cols_mask(nc, 1), m2 = cols_mask(nc, 2);
    const int8_t *a0 = A, *a4 = MR > 4 ? A + 4 * lda : A;
    IG_ROWS8(S8V_DECL)
    IG_ROWS8(S8V_INIT)
    for (int g = 0; g < ng; g++) {
        S8V_LOADB(P)
        IG_ROWS8(S8V_STEP_A)
        a0 += 4;
        a4 += 4;
        P += S8V_NR * 4;
    }
    if (tail) {
        S8V_LOADB(P)
        IG_ROWS8(S8V_STEP_T)
    }
    IG_ROWS8(S8V_STORE)
}

IG_TGT_VNNI static void s8_vnni_item(const job *jb, int t)
{
    _Alignas(64) uint8_t P[PANEL_BYTES];
    const item it = item_of(jb, t);
    const int K = jb->K, kcb = jb->kcb, np = (it.nc + S8V_NR - 1) / S8V_NR;
    const size_t pstride = (size_t)(kcb + 3) / 4 * S8V_NR * 4; /* bytes per packed panel */
    const int8_t *B = (const int8_t *)jb->B + it.j0 * jb->ldb;
    for (int k0 = 0; k0 < K; k0 += kcb) {
        const int kc = K - k0 < kcb ? K - k0 : kcb, ng = kc / 4;
        for (int p = 0; p < np; p++)
            pack_s8_vnni(B + p * S8V_NR * jb->ldb + k0, jb->ldb, IG_MIN(S8V_NR, it.nc - p * S8V_NR), kc,
                         P + p * pstride);
        for (int i = it.i0; i < it.i0 + it.nrows; i += S8V_MR) {
            const int mr = IG_MIN(S8V_MR, it.i0 + it.nrows - i);
            const int8_t *A = (const int8_t *)jb->A + i * jb->lda + k0;
            const int32_t *tail = (kc & 3) ? jb->tail + i : NULL, *corr = k0 == 0 ? jb->corr + i : NULL;
            for (int p = 0; p < np; p++) {
                const int nc = IG_MIN(S8V_NR, it.nc - p * S8V_NR), nv = (nc + 15) / 16;
                const uint8_t *Pp = P + p * pstride;
                int32_t *C = (int32_t *)jb->C + i * jb->ldc + it.j0 + p * S8V_NR;
                switch (mr * 4 + nv) {
#define IG_CASE(m, n) \
    case (m) * 4 + (n): kern_s8_vnni(m, n, nc, A, jb->lda, Pp, ng, tail, corr, C, jb->ldc); break;
#define IG_CASES(m) IG_CASE(m, 1) IG_CASE(m, 2) IG_CASE(m, 3)
                    IG_CASES(1) IG_CASES(2) IG_CASES(3) IG_CASES(4) IG_CASES(5) IG_CASES(6) IG_CASES(7) IG_CASES(8)
#undef IG_CASES
#undef IG_CASE
                }
            }
        }
    }
}

/* corr = -128 * (sum of the row), tail = last partial dword, for rows of A (mc, lda). */
IG_TGT_VNNI static void s8_vnni_rows(const int8_t *A, ptrdiff_t lda, int mc, int K, int32_t *corr, int32_t *tail)
{
    for (int i = 0; i < mc; i++) {
        const int8_t *a = A + i * lda;
        int32_t s = 0; /* |s| <= 131071 * 128 */
        for (int k = 0; k < K; k++)
            s += a[k];
        corr[i] = -128 * s; /* |.| <= 131071 * 2^14 < 2^31 */
        tail[i] = tail_dword_s8(a, K);
    }
}

/* --- s8, BW ---------------------------------------------------------------------------- */

/* Panel layout per group g: S8B_NV vectors of the even bytes (k = 4g, 4g+2) of 16
 * columns as int16 pairs, then S8B_NV vectors of the odd bytes (4g+1, 4g+3). */
IG_TGT_BW static void pack_s8_bw(const int8_t *B, ptrdiff_t ldb, int nc, int kc, int16_t *P)
{
    const int ng = (kc + 3) / 4;
    for (int v = 0; v < (nc + 15) / 16; v++)
        for (int c = 0; c < kc; c += 64) {
            __m512i r[16];
            IG_LOAD16(r, B, ldb, nc, v, c, kc - c);
            IG_TRANSPOSE16(r);
            const int g0 = c / 4, gn = ng - g0 < 16 ? ng - g0 : 16;
            for (int g = 0; g < gn; g++) {
                int16_t *pg = P + (size_t)(g0 + g) * 4 * S8B_NR;
                _mm512_store_si512(pg + 32 * v, _mm512_srai_epi16(_mm512_slli_epi16(r[g], 8), 8));
                _mm512_store_si512(pg + 2 * S8B_NR + 32 * v, _mm512_srai_epi16(r[g], 8));
            }
        }
}

/* C (MR, nc) (=|+=) A (MR, 4*ng [+ tail]) * panel: per group, the A dword is split into
 * its even and odd bytes as int16 (two shifts and one shift), vpmaddwd with the even and
 * odd planes of the panel, two vpaddd. */
#define S8B_DECL(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0;
#define S8B_INIT(r)                                                                                        \
    if (MR > r && !first) {                                                                                \
        c##r##0 = _mm512_maskz_loadu_epi32(m0, C + r * ldc);                                               \
        if (NV > 1)                                                                                        \
            c##r##1 = _mm512_maskz_loadu_epi32(m1, C + r * ldc + 16);                                      \
    }
#define S8B_STEP(r, AVAL)                                                                                  \
    if (MR > r) {                                                                                          \
        const __m512i a = _mm512_set1_epi32(AVAL);                                                         \
        const __m512i ae = _mm512_srai_epi16(_mm512_slli_epi16(a, 8), 8), ao = _mm512_srai_epi16(a, 8);    \
        c##r##0 = _mm512_add_epi32(c##r##0, _mm512_madd_epi16(ae, be0));                                   \
        c##r##0 = _mm512_add_epi32(c##r##0, _mm512_madd_epi16(ao, bo0));                                   \
        if (NV > 1) {                                                                                      \
            c##r##1 = _mm512_add_epi32(c##r##1, _mm512_madd_epi16(ae, be1));                               \
            c##r##1 = _mm512_add_epi32(c##r##1, _mm512_madd_epi16(ao, bo1));                               \
        }                                                                                                  \
    }
#define S8B_STEP_A(r) S8B_STEP(r, ld_dword(IG_AROW(r)))
#define S8B_STEP_T(r) S8B_STEP(r, tail[r])
#define S8B_STORE(r)                                                                                       \
    if (MR > r) {                                                                                          \
        _mm512_mask_storeu_epi32(C + r * ldc, m0, c##r##0);                                                \
        if (NV > 1)                                                                                        \
            _mm512_mask_storeu_epi32(C + r * ldc + 16, m1, c##r##1);                                       \
    }
#define S8B_LOADB(P)                                                                                       \
    const __m512i be0 = _mm512_load_si512(P), bo0 = _mm512_load_si512((P) + 2 * S8B_NR);                   \
    const __m512i be1 = NV > 1 ? _mm512_load_si512((P) + 32) : be0;                                        \
    const __m512i bo1 = NV > 1 ? _mm512_load_si512((P) + 2 * S8B_NR + 32) : bo0;

IG_INLINE IG_TGT_BW void kern_s8_bw(const int MR, const int NV, int nc, const int8_t *A, ptrdiff_t lda,
                                    const int16_t *P, int ng, const int32_t *tail, int first, int32_t *C,
                                    ptrdiff_t ldc)
{
    const __mmask16 m0 = cols_mask(nc, 0), m1 = cols_mask(nc, 1);
    const int8_t *a0 = A, *a4 = MR > 4 ? A + 4 * lda : A;
    IG_ROWS8(S8B_DECL)
    IG_ROWS8(S8B_INIT)
    for (int g = 0; g < ng; g++) {
        S8B_LOADB(P)
        IG_ROWS8(S8B_STEP_A)
        a0 += 4;
        a4 += 4;
        P += 4 * S8B_NR;
    }
    if (tail) {
        S8B_LOADB(P)
        IG_ROWS8(S8B_STEP_T)
    }
    IG_ROWS8(S8B_STORE)
}

IG_TGT_BW static void s8_bw_item(const job *jb, int t)
{
    _Alignas(64) int16_t P[PANEL_BYTES / 2];
    const item it = item_of(jb, t);
    const int K = jb->K, kcb = jb->kcb, np = (it.nc + S8B_NR - 1) / S8B_NR;
    const size_t pstride = (size_t)(kcb + 3) / 4 * 4 * S8B_NR; /* int16 per packed panel */
    const int8_t *B = (const int8_t *)jb->B + it.j0 * jb->ldb;
    for (int k0 = 0; k0 < K; k0 += kcb) {
        const int kc = K - k0 < kcb ? K - k0 : kcb, ng = kc / 4;
        for (int p = 0; p < np; p++)
            pack_s8_bw(B + p * S8B_NR * jb->ldb + k0, jb->ldb, IG_MIN(S8B_NR, it.nc - p * S8B_NR), kc,
                       P + p * pstride);
        for (int i = it.i0; i < it.i0 + it.nrows; i += S8B_MR) {
            const int mr = IG_MIN(S8B_MR, it.i0 + it.nrows - i);
            const int8_t *A = (const int8_t *)jb->A + i * jb->lda + k0;
            const int32_t *tail = (kc & 3) ? jb->tail + i : NULL;
            for (int p = 0; p < np; p++) {
                const int nc = IG_MIN(S8B_NR, it.nc - p * S8B_NR), nv = (nc + 15) / 16;
                const int16_t *Pp = P + p * pstride;
                int32_t *C = (int32_t *)jb->C + i * jb->ldc + it.j0 + p * S8B_NR;
                switch (mr * 4 + nv) {
#define IG_CASE(m, n) \
    case (m) * 4 + (n): kern_s8_bw(m, n, nc, A, jb->lda, Pp, ng, tail, k0 == 0, C, jb->ldc); break;
#define IG_CASES(m) IG_CASE(m, 1) IG_CASE(m, 2)
                    IG_CASES(1) IG_CASES(2) IG_CASES(3) IG_CASES(4) IG_CASES(5) IG_CASES(6) IG_CASES(7) IG_CASES(8)
#undef IG_CASES
#undef IG_CASE
                }
            }
        }
    }
}

/* --- s16 (VNNI and BW) ------------------------------------------------------------------ */

/* Panel layout per k-pair p (k = 2p, 2p+1): S16_NV vectors of the bh plane (b >> 8) of 16
 * columns as int16 pairs, then S16_NV vectors of the bl plane (b & 255). ceil(kc/2)
 * pairs, an odd last k padded with zero. */
#define IG_DEF_PACK_S16(NAME, TGT)                                                                         \
    TGT static void NAME(const int16_t *B, ptrdiff_t ldb, int nc, int kc, int16_t *P)                      \
    {                                                                                                      \
        const int np = (kc + 1) / 2;                                                                       \
        const __m512i lo = _mm512_set1_epi16(0xFF);                                                        \
        for (int v = 0; v < (nc + 15) / 16; v++)                                                           \
            for (int c = 0; c < kc; c += 32) {                                                             \
                __m512i r[16];                                                                             \
                IG_LOAD16(r, B, ldb, nc, v, 2 * c, 2 * (kc - c));                                          \
                IG_TRANSPOSE16(r);                                                                         \
                const int p0 = c / 2, pn = np - p0 < 16 ? np - p0 : 16;                                    \
                for (int p = 0; p < pn; p++) {                                                             \
                    int16_t *pp = P + (size_t)(p0 + p) * 4 * S16_NR;                                       \
                    _mm512_store_si512(pp + 32 * v, _mm512_srai_epi16(r[p], 8));                           \
                    _mm512_store_si512(pp + 2 * S16_NR + 32 * v, _mm512_and_si512(r[p], lo));              \
                }                                                                                          \
            }                                                                                              \
    }

/* C (MR, nc) (=|+=) A (MR, 2*np [+ tail]) * panel in int64. Two int32 accumulators per
 * output vector: h (with the bh plane) and l (with the bl plane); DP(acc, a, b) adds the
 * two int16 pair products of each lane to it. At the end y = h * 256 + l in int64 lanes. */
#define S16_DECL(r) __m512i h##r##0 = _mm512_setzero_si512(), h##r##1 = h##r##0, l##r##0 = h##r##0, l##r##1 = h##r##0;
#define S16_STEP(DP, r, AVAL)                                                                              \
    if (MR > r) {                                                                                          \
        const __m512i a = _mm512_set1_epi32(AVAL);                                                         \
        DP(h##r##0, bh0, a);                                                                               \
        DP(l##r##0, bl0, a);                                                                               \
        if (NV > 1) {                                                                                      \
            DP(h##r##1, bh1, a);                                                                           \
            DP(l##r##1, bl1, a);                                                                           \
        }                                                                                                  \
    }
#define S16_FLUSH1(h, l, c, m)                                                                             \
    do {                                                                                                   \
        const __mmask8 m0_ = (__mmask8)((m) & 0xFF), m1_ = (__mmask8)((m) >> 8);                           \
        __m512i y0_ = _mm512_add_epi64(                                                                    \
            _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(h)), 8),                        \
            _mm512_cvtepi32_epi64(_mm512_castsi512_si256(l)));                                             \
        __m512i y1_ = _mm512_add_epi64(                                                                    \
            _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(h, 1)), 8),                  \
            _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(l, 1)));                                       \
        if (!first) {                                                                                      \
            y0_ = _mm512_add_epi64(y0_, _mm512_maskz_loadu_epi64(m0_, (c)));                               \
            y1_ = _mm512_add_epi64(y1_, _mm512_maskz_loadu_epi64(m1_, (c) + 8));                           \
        }                                                                                                  \
        _mm512_mask_storeu_epi64((c), m0_, y0_);                                                           \
        _mm512_mask_storeu_epi64((c) + 8, m1_, y1_);                                                       \
    } while (0);
#define S16_FLUSH(r)                                                                                       \
    if (MR > r) {                                                                                          \
        S16_FLUSH1(h##r##0, l##r##0, C + r * ldc, m0)                                                      \
        if (NV > 1)                                                                                        \
            S16_FLUSH1(h##r##1, l##r##1, C + r * ldc + 16, m1)                                             \
    }
#define S16_LOADB(P)                                                                                       \
    const __m512i bh0 = _mm512_load_si512(P), bl0 = _mm512_load_si512((P) + 2 * S16_NR);                   \
    const __m512i bh1 = NV > 1 ? _mm512_load_si512((P) + 32) : bh0;                                        \
    const __m512i bl1 = NV > 1 ? _mm512_load_si512((P) + 2 * S16_NR + 32) : bl0;

#define IG_DEF_KERN_S16(NAME, TGT, DP)                                                                     \
    IG_INLINE TGT void NAME(const int MR, const int NV, int nc, const int16_t *A, ptrdiff_t lda,           \
                            const int16_t *P, int np, const int32_t *tail, int first, int64_t *C,          \
                            ptrdiff_t ldc)                                                                 \
    {                                                                                                      \
        const __mmask16 m0 = cols_mask(nc, 0), m1 = cols_mask(nc, 1);                                      \
        const int16_t *a0 = A, *a4 = MR > 4 ? A + 4 * lda : A;                                             \
        IG_ROWS6(S16_DECL)                                                                                 \
        for (int p = 0; p < np; p++) {                                                                     \
            S16_LOADB(P)                                                                                   \
            S16_STEP(DP, 0, ld_dword(IG_AROW(0))) S16_STEP(DP, 1, ld_dword(IG_AROW(1)))                    \
            S16_STEP(DP, 2, ld_dword(IG_AROW(2))) S16_STEP(DP, 3, ld_dword(IG_AROW(3)))                    \
            S16_STEP(DP, 4, ld_dword(IG_AROW(4))) S16_STEP(DP, 5, ld_dword(IG_AROW(5)))                    \
            a0 += 2;                                                                                       \
            a4 += 2;                                                                                       \
            P += 4 * S16_NR;                                                                               \
        }                                                                                                  \
        if (tail) {                                                                                        \
            S16_LOADB(P)                                                                                   \
            S16_STEP(DP, 0, tail[0]) S16_STEP(DP, 1, tail[1]) S16_STEP(DP, 2, tail[2])                     \
            S16_STEP(DP, 3, tail[3]) S16_STEP(DP, 4, tail[4]) S16_STEP(DP, 5, tail[5])                     \
        }                                                                                                  \
        IG_ROWS6(S16_FLUSH)                                                                                \
    }

#define IG_DEF_ITEM_S16(NAME, TGT, PACK, KERN)                                                             \
    TGT static void NAME(const job *jb, int t)                                                             \
    {                                                                                                      \
        _Alignas(64) int16_t P[PANEL_BYTES / 2];                                                           \
        const item it = item_of(jb, t);                                                                    \
        const int K = jb->K, kcb = jb->kcb, npan = (it.nc + S16_NR - 1) / S16_NR;                          \
        const size_t pstride = (size_t)(kcb + 1) / 2 * 4 * S16_NR; /* int16 per packed panel */            \
        const int16_t *B = (const int16_t *)jb->B + it.j0 * jb->ldb;                                       \
        for (int k0 = 0; k0 < K; k0 += kcb) {                                                              \
            const int kc = K - k0 < kcb ? K - k0 : kcb, np = kc / 2;                                       \
            for (int p = 0; p < npan; p++)                                                                 \
                PACK(B + p * S16_NR * jb->ldb + k0, jb->ldb, IG_MIN(S16_NR, it.nc - p * S16_NR), kc,       \
                     P + p * pstride);                                                                     \
            for (int i = it.i0; i < it.i0 + it.nrows; i += S16_MR) {                                       \
                const int mr = IG_MIN(S16_MR, it.i0 + it.nrows - i);                                       \
                const int16_t *A = (const int16_t *)jb->A + i * jb->lda + k0;                              \
                const int32_t *tail = (kc & 1) ? jb->tail + i : NULL;                                      \
                for (int p = 0; p < npan; p++) {                                                           \
                    const int nc = IG_MIN(S16_NR, it.nc - p * S16_NR), nv = (nc + 15) / 16;                \
                    const int16_t *Pp = P + p * pstride;                                                   \
                    int64_t *C = (int64_t *)jb->C + i * jb->ldc + it.j0 + p * S16_NR;                      \
                    switch (mr * 4 + nv) {                                                                 \
                        IG_S16_CASES(KERN, 1) IG_S16_CASES(KERN, 2) IG_S16_CASES(KERN, 3)                  \
                        IG_S16_CASES(KERN, 4) IG_S16_CASES(KERN, 5) IG_S16_CASES(KERN, 6)                  \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
    }
#define IG_S16_CASE(KERN, m, n) \
    case (m) * 4 + (n): KERN(m, n, nc, A, jb->lda, Pp, np, tail, k0 == 0, C, jb->ldc); break;
#define IG_S16_CASES(KERN, m) IG_S16_CASE(KERN, m, 1) IG_S16_CASE(KERN, m, 2)
_Static_assert(S16_MR == 6 && S16_NV == 2, "update the s16 switch");
_Static_assert(S8V_MR == 8 && S8V_NV == 3 && S8B_MR == 8 && S8B_NV == 2, "update the s8 switches");

#define IG_DP_VNNI(acc, b, a) IG_VPDPWSSD(acc, b, a)
#define IG_DP_BW(acc, b, a) (acc) = _mm512_add_epi32((acc), _mm512_madd_epi16((a), (b)))

IG_DEF_PACK_S16(pack_s16_vnni, IG_TGT_VNNI)
IG_DEF_PACK_S16(pack_s16_bw, IG_TGT_BW)
IG_DEF_KERN_S16(kern_s16_vnni, IG_TGT_VNNI, IG_DP_VNNI)
IG_DEF_KERN_S16(kern_s16_bw, IG_TGT_BW, IG_DP_BW)
IG_DEF_ITEM_S16(s16_vnni_item, IG_TGT_VNNI, pack_s16_vnni, kern_s16_vnni)
IG_DEF_ITEM_S16(s16_bw_item, IG_TGT_BW, pack_s16_bw, kern_s16_bw)

#endif /* IG_X86 */

/* ------------------------------------------------------------------------------------ */
/* Driver                                                                               */
/* ------------------------------------------------------------------------------------ */

static void job_task(void *arg)
{
    job *jb = arg;
    for (;;) {
        const int t = atomic_fetch_add_explicit(&jb->next, 1, memory_order_relaxed);
        if (t >= jb->nitems)
            return;
        switch (jb->kind) {
        case JOB_S8_PORT: s8_port_item(jb, t); break;
        case JOB_S16_PORT: s16_port_item(jb, t); break;
#if IG_X86
        case JOB_S8_VNNI: s8_vnni_item(jb, t); break;
        case JOB_S8_BW: s8_bw_item(jb, t); break;
        case JOB_S16_VNNI: s16_vnni_item(jb, t); break;
        case JOB_S16_BW: s16_bw_item(jb, t); break;
#endif
        }
    }
}

/* Rows per call of the driver loop (the per-row terms live on the stack). */
#define IG_MC 512
/* Below this many multiply-adds (about 0.25 ms of one core's VNNI work) a GEMM runs on the
 * calling thread: waking a sleeping helper costs 5-50 us (more in a VM), a helper
 * descheduled in the middle of its last item makes the caller wait for it, and on this
 * project's 2-vCPU machine (two SMT threads of one core) two VNNI loops share one core's
 * ports. Measured there: the mlp's GEMMs (25M MACs and less) ran 15% slower in DFP8
 * training with 2 threads at the old 8M threshold than on one thread. */
#define IG_PAR_MIN_MACS (1 << 26)

static void run_job(int kind, int M, int N, int K, const void *A, int lda, const void *B, int ldb, void *C, int ldc)
{
    const size_t asz = kind < JOB_S16_PORT ? 1 : 2, csz = kind < JOB_S16_PORT ? 4 : 8;
#if IG_X86
    int32_t corr[IG_MC], tail[IG_MC];
#endif
    int mr, nr, kcb = K;
    size_t pbytes = 0; /* bytes of one packed panel */

    switch (kind) {
#if IG_X86
    case JOB_S8_VNNI:
        mr = S8V_MR;
        nr = S8V_NR;
        kcb = k_block(K, S8V_KC, 4);
        pbytes = (size_t)(kcb + 3) / 4 * S8V_NR * 4;
        break;
    case JOB_S8_BW:
        mr = S8B_MR;
        nr = S8B_NR;
        kcb = k_block(K, S8B_KC, 4);
        pbytes = (size_t)(kcb + 3) / 4 * 4 * S8B_NR * 2;
        break;
    case JOB_S16_VNNI:
    case JOB_S16_BW:
        mr = S16_MR;
        nr = S16_NR;
        kcb = k_block(K, S16_KC, 2);
        pbytes = (size_t)(kcb + 1) / 2 * 4 * S16_NR * 2;
        break;
#endif
    default: mr = 1; nr = PORT_NR; break;
    }
    const int nthr_max = threads_wanted();
    const int npanel = (N + nr - 1) / nr;
    for (int m0 = 0; m0 < M; m0 += IG_MC) {
        job jb;
        const int mc = M - m0 < IG_MC ? M - m0 : IG_MC;
        const void *Ab = (const char *)A + (size_t)m0 * (size_t)lda * asz;
        jb.kind = kind;
        jb.N = N;
        jb.K = K;
        jb.mc = mc;
        jb.nr = nr;
        jb.kcb = kcb;
        jb.A = Ab;
        jb.lda = lda;
        jb.B = B;
        jb.ldb = ldb;
        jb.C = (char *)C + (size_t)m0 * (size_t)ldc * csz;
        jb.ldc = ldc;
        jb.corr = jb.tail = NULL;
        switch (kind) {
#if IG_X86
        case JOB_S8_VNNI:
            s8_vnni_rows(Ab, lda, mc, K, corr, tail);
            jb.corr = corr;
            jb.tail = tail;
            break;
        case JOB_S8_BW:
            for (int i = 0; i < mc; i++)
                tail[i] = tail_dword_s8((const int8_t *)Ab + (size_t)i * lda, K);
            jb.tail = tail;
            break;
        case JOB_S16_VNNI:
        case JOB_S16_BW:
            for (int i = 0; i < mc; i++)
                tail[i] = tail_dword_s16((const int16_t *)Ab + (size_t)i * lda, K);
            jb.tail = tail;
            break;
#endif
        default: break;
        }
        /* Enough items to balance the threads (several per thread: the machine may be
         * shared): panels grouped as far as the buffer allows and the item count permits,
         * rows cut only when there are too few groups. */
        int nthr = (double)mc * N * K < IG_PAR_MIN_MACS ? 1 : nthr_max;
        int gp = pbytes ? (int)(PANEL_BYTES / pbytes) : 1;
        if (gp > IG_GP_MAX)
            gp = IG_GP_MAX;
        if (nthr > 1 && gp > 1 && (npanel + gp - 1) / gp < 4 * nthr)
            gp = (npanel + 4 * nthr - 1) / (4 * nthr);
        if (gp < 1)
            gp = 1;
        const int ngroup = (npanel + gp - 1) / gp, mtiles = (mc + mr - 1) / mr;
        int nmblk = 1;
        if (nthr > 1 && ngroup < 4 * nthr)
            nmblk = (4 * nthr + ngroup - 1) / ngroup;
        if (nmblk > mtiles)
            nmblk = mtiles;
        jb.gp = gp;
        jb.mrows = (mtiles + nmblk - 1) / nmblk * mr;
        jb.nmblk = (mc + jb.mrows - 1) / jb.mrows;
        jb.nitems = ngroup * jb.nmblk;
        atomic_init(&jb.next, 0);
        if (nthr > jb.nitems)
            nthr = jb.nitems;
        run_parallel(job_task, &jb, nthr);
    }
}

static dlu_status check_args(const char *fn, int M, int N, int K, const void *A, int lda, const void *B, int ldb,
                             const void *C, int ldc)
{
    if (M < 0 || N < 0 || K < 0)
        return dlu__error(DLU_EINVAL, "%s: negative size M=%d N=%d K=%d", fn, M, N, K);
    if (M == 0 || N == 0)
        return DLU_OK;
    if (!C || ldc < N)
        return dlu__error(DLU_EINVAL, "%s: C %s (ldc=%d, N=%d)", fn, C ? "stride too small" : "is NULL", ldc, N);
    if (K > 0 && (!A || !B))
        return dlu__error(DLU_EINVAL, "%s: %s is NULL", fn, A ? "B" : "A");
    if (K > 0 && (lda < K || ldb < K))
        return dlu__error(DLU_EINVAL, "%s: stride too small (lda=%d, ldb=%d, K=%d)", fn, lda, ldb, K);
    return DLU_OK;
}

dlu_status dlu__igemm_s8_nt(int M, int N, int K, const int8_t *A, int lda, const int8_t *B, int ldb, int32_t *C,
                            int ldc)
{
    DLU__TRY(check_args("dlu__igemm_s8_nt", M, N, K, A, lda, B, ldb, C, ldc));
    if (K > DLU_IGEMM_S8_KMAX)
        return dlu__error(DLU_ERANGE, "dlu__igemm_s8_nt: K=%d exceeds %d, the largest K exact in int32", K,
                          DLU_IGEMM_S8_KMAX);
    if (M == 0 || N == 0)
        return DLU_OK;
    if (K == 0) {
        for (int i = 0; i < M; i++)
            memset(C + (ptrdiff_t)i * ldc, 0, (size_t)N * sizeof *C);
        return DLU_OK;
    }
    const int impl = current_impl();
    run_job(impl == IMPL_AVX512VNNI ? JOB_S8_VNNI : impl == IMPL_AVX512BW ? JOB_S8_BW : JOB_S8_PORT, M, N, K, A, lda,
            B, ldb, C, ldc);
    return DLU_OK;
}

dlu_status dlu__igemm_s16_nt(int M, int N, int K, const int16_t *A, int lda, const int16_t *B, int ldb, int64_t *C,
                             int ldc)
{
    DLU__TRY(check_args("dlu__igemm_s16_nt", M, N, K, A, lda, B, ldb, C, ldc));
    if (M == 0 || N == 0)
        return DLU_OK;
    if (K == 0) {
        for (int i = 0; i < M; i++)
            memset(C + (ptrdiff_t)i * ldc, 0, (size_t)N * sizeof *C);
        return DLU_OK;
    }
    const int impl = current_impl();
    run_job(impl == IMPL_AVX512VNNI ? JOB_S16_VNNI : impl == IMPL_AVX512BW ? JOB_S16_BW : JOB_S16_PORT, M, N, K, A,
            lda, B, ldb, C, ldc);
    return DLU_OK;
}
