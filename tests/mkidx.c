/* mkidx.c -- write a small synthetic IDX data set for the tests (MNIST folder layout).
 *
 * Writes train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
 * t10k-labels-idx1-ubyte (with a ".gz" suffix and gzip-compressed under --gzip) into a
 * folder. Each class is a fixed random pattern of bright pixels (from the seed); a sample
 * is its class's pattern with per-pixel noise and a random brightness, so a small net
 * learns the classes within a few dozen steps. Images of one channel use magic 0x803
 * (N, H, W) like MNIST; more channels use 0x804 (N, C, H, W).
 *
 * It is NOT a data-set generator for benchmarks or accuracy claims, and it never writes
 * broken files: the shell tests cut and patch its output to make those. Output is a pure
 * function of the options (xorshift64* from the seed), so a failing test can be replayed. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkdir */
#endif

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

static const char *const usage =
    "usage: mkidx -o DIR [--train N] [--test N] [--size CxHxW | HxW] [--classes K]\n"
    "             [--noise A] [--seed S] [--gzip]\n"
    "\n"
    "Write a synthetic, learnable IDX data set (MNIST file names) into DIR (created if\n"
    "missing). Defaults: 512 train, 128 test, 1x28x28, 10 classes, noise 40 (uniform\n"
    "-A..A added to each pixel, 0..255; more makes the classes harder), seed 1, plain files.\n";

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void rng_seed(uint64_t seed) { rng_state = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; }

/* Uniform integer in [0, n). The bias of the modulo is irrelevant here. */
static unsigned rng_below(unsigned n) { return (unsigned)((rng_next() >> 33) % n); }

static int parse_long(const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "mkidx: %s '%s': expected an integer in [%ld, %ld]\n", opt, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

/* "CxHxW" or "HxW" (C = 1). */
static int parse_size(const char *v, long dims[3])
{
    long x[3];
    int n = 0;
    const char *p = v;
    while (n < 3) {
        char *end;
        errno = 0;
        x[n] = strtol(p, &end, 10);
        if (end == p || errno || x[n] < 1 || x[n] > 4096)
            break;
        n++;
        p = end;
        if (*p != 'x')
            break;
        p++;
    }
    if (*p || (n != 2 && n != 3)) {
        fprintf(stderr, "mkidx: --size '%s': expected CxHxW or HxW, each 1..4096\n", v);
        return 0;
    }
    dims[0] = n == 3 ? x[0] : 1;
    dims[1] = x[n - 2];
    dims[2] = x[n - 1];
    return 1;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Write header + payload to dir/name (name.gz and compressed when gz). */
static int write_file(const char *dir, const char *name, int gz, const uint8_t *hdr, size_t hdr_n,
                      const uint8_t *data, size_t n)
{
    char path[4096];
    int k = snprintf(path, sizeof path, "%s/%s%s", dir, name, gz ? ".gz" : "");
    if (k < 0 || (size_t)k >= sizeof path) {
        fprintf(stderr, "mkidx: %s/%s: path too long\n", dir, name);
        return 0;
    }
    if (gz) {
        gzFile f = gzopen(path, "wb9");
        if (f == NULL) {
            fprintf(stderr, "mkidx: %s: cannot create: %s\n", path, strerror(errno));
            return 0;
        }
        int ok = gzwrite(f, hdr, (unsigned)hdr_n) == (int)hdr_n;
        for (size_t at = 0; ok && at < n;) {
            unsigned chunk = n - at > (1u << 24) ? (1u << 24) : (unsigned)(n - at);
            ok = gzwrite(f, data + at, chunk) == (int)chunk;
            at += chunk;
        }
        if (gzclose(f) != Z_OK || !ok) {
            fprintf(stderr, "mkidx: %s: write failed\n", path);
            return 0;
        }
        return 1;
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "mkidx: %s: cannot create: %s\n", path, strerror(errno));
        return 0;
    }
    int ok = fwrite(hdr, 1, hdr_n, f) == hdr_n && fwrite(data, 1, n, f) == n;
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "mkidx: %s: write failed: %s\n", path, strerror(errno));
        return 0;
    }
    return 1;
}

/* One split: n samples drawn from the class patterns. */
static int write_split(const char *dir, const char *prefix, long n, const long dims[3], long classes,
                       const uint8_t *patterns /* (classes, C*H*W) */, long noise, int gz)
{
    const size_t pix = (size_t)dims[0] * dims[1] * dims[2];
    const size_t img_n = (size_t)n * pix;
    uint8_t *img = malloc(img_n > 0 ? img_n : 1), *lab = malloc(n > 0 ? (size_t)n : 1);
    if (img == NULL || lab == NULL) {
        fprintf(stderr, "mkidx: out of memory\n");
        free(img);
        free(lab);
        return 0;
    }
    for (long i = 0; i < n; i++) {
        /* Every class appears (round robin) in a shuffled-looking order. */
        unsigned k = i < classes ? (unsigned)i : rng_below((unsigned)classes);
        unsigned gain = 150 + rng_below(106); /* brightness of the pattern, 150..255 */
        lab[i] = (uint8_t)k;
        for (size_t p = 0; p < pix; p++) {
            int v = patterns[k * pix + p] ? (int)gain : 0;
            v += (int)rng_below(2 * (unsigned)noise + 1) - (int)noise; /* -noise..noise */
            img[i * pix + p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    char name[64];
    uint8_t hdr[20];
    size_t hn;
    if (dims[0] == 1) {
        put_be32(hdr, 0x00000803);
        put_be32(hdr + 4, (uint32_t)n);
        put_be32(hdr + 8, (uint32_t)dims[1]);
        put_be32(hdr + 12, (uint32_t)dims[2]);
        hn = 16;
    } else {
        put_be32(hdr, 0x00000804);
        put_be32(hdr + 4, (uint32_t)n);
        put_be32(hdr + 8, (uint32_t)dims[0]);
        put_be32(hdr + 12, (uint32_t)dims[1]);
        put_be32(hdr + 16, (uint32_t)dims[2]);
        hn = 20;
    }
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    int ok = write_file(dir, name, gz, hdr, hn, img, img_n);
    put_be32(hdr, 0x00000801);
    put_be32(hdr + 4, (uint32_t)n);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    ok = ok && write_file(dir, name, gz, hdr, 8, lab, (size_t)n);
    free(img);
    free(lab);
    return ok;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    long ntrain = 512, ntest = 128, classes = 10, seed = 1, noise = 40, dims[3] = {1, 28, 28};
    int gz = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0 || strcmp(a, "--train") == 0 ||
                    strcmp(a, "--test") == 0 || strcmp(a, "--size") == 0 || strcmp(a, "--classes") == 0 ||
                    strcmp(a, "--noise") == 0 || strcmp(a, "--seed") == 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--gzip") == 0) {
            gz = 1;
            continue;
        } else if (!takes) {
            fprintf(stderr, "mkidx: unknown argument '%s'\n%s", a, usage);
            return 2;
        } else if (v == NULL) {
            fprintf(stderr, "mkidx: %s needs a value\n", a);
            return 2;
        }
        i++;
        int ok = 1;
        if (strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0)
            dir = v;
        else if (strcmp(a, "--train") == 0)
            ok = parse_long(a, v, 0, 1000000, &ntrain);
        else if (strcmp(a, "--test") == 0)
            ok = parse_long(a, v, 0, 1000000, &ntest);
        else if (strcmp(a, "--classes") == 0)
            ok = parse_long(a, v, 1, 256, &classes);
        else if (strcmp(a, "--noise") == 0)
            ok = parse_long(a, v, 0, 255, &noise);
        else if (strcmp(a, "--seed") == 0)
            ok = parse_long(a, v, 0, 2147483647L, &seed);
        else
            ok = parse_size(v, dims);
        if (!ok)
            return 2;
    }
    if (dir == NULL) {
        fprintf(stderr, "mkidx: -o DIR is required\n%s", usage);
        return 2;
    }
    const size_t pix = (size_t)dims[0] * dims[1] * dims[2];
    if (pix > ((size_t)1 << 24) || (double)pix * (double)(ntrain > ntest ? ntrain : ntest) > 1e9) {
        fprintf(stderr, "mkidx: %ldx%ldx%ld images x %ld samples is more than this test tool makes\n", dims[0],
                dims[1], dims[2], ntrain > ntest ? ntrain : ntest);
        return 2;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkidx: %s: cannot create: %s\n", dir, strerror(errno));
        return 1;
    }
    rng_seed((uint64_t)seed);
    /* Class patterns: about a third of the pixels lit, independently per class, so any
     * two classes differ in many pixels. */
    uint8_t *patterns = malloc((size_t)classes * pix);
    if (patterns == NULL) {
        fprintf(stderr, "mkidx: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)classes * pix; i++)
        patterns[i] = rng_below(3) == 0;
    int ok = write_split(dir, "train", ntrain, dims, classes, patterns, noise, gz) &&
             write_split(dir, "t10k", ntest, dims, classes, patterns, noise, gz);
    free(patterns);
    return ok ? 0 : 1;
}
