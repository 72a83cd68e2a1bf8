/* test_ckpt.c -- CUnit tests for libdl/hash.c and libdl/ckpt_file.c.
 *
 * Checks SHA-256 against the FIPS 180-2 known answers, the checkpoint container against
 * its documented byte layout, every load error path (each byte flipped, every
 * truncation, wrong magic, future version, lying lengths) and the atomic-save promises.
 * Run under ASan/UBSan: a crash, an over-read or a leak on a bad file is a failure too.
 * It does not test the training code's use of records. Files live in a private mkdtemp
 * directory that is removed at the end. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */
#endif

#include <CUnit/Basic.h>

#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "error.h"
#include "hash.h"

static char tmpdir[4096];

/* ---- helpers ---- */

static const char *in_tmp(const char *name)
{
    static char buf[4][4352]; /* a few live at once, e.g. two paths in one call */
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

/* High-entropy, reproducible bytes (xorshift64*), so a failure can be replayed. */
static void fill_random(void *dst, size_t n, uint64_t seed)
{
    uint8_t *p = dst;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        p[i] = (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> 56);
    }
}

static uint8_t *slurp(const char *path, size_t *n)
{
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf != NULL && len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL)
        *n = (size_t)len;
    return buf;
}

static int spit(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int ok = fwrite(data, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Number of entries in dir other than . and ..; -1 if it cannot be read. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void put_le(uint8_t *p, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recompute the trailing checksum, so that a test can make exactly one thing wrong. */
static void fix_checksum(uint8_t *buf, size_t n)
{
    CU_ASSERT_EQUAL(dlu__sha256_once(buf, n - 32, buf + n - 32), DLU_OK);
}

/* Hand-built file bytes, following the layout documented in ckpt_file.h (not the code). */
struct builder {
    uint8_t buf[4096];
    size_t n;
};

static void b_bytes(struct builder *b, const void *p, size_t n)
{
    memcpy(b->buf + b->n, p, n);
    b->n += n;
}

static void b_le(struct builder *b, uint64_t v, int nbytes)
{
    put_le(b->buf + b->n, v, nbytes);
    b->n += (size_t)nbytes;
}

static void b_header(struct builder *b, uint32_t version, uint32_t count)
{
    b->n = 0;
    b_bytes(b, "DLUCKPT\n", 8);
    b_le(b, version, 4);
    b_le(b, count, 4);
}

static void b_record(struct builder *b, const char *name, size_t name_len, const void *data, uint64_t nbytes)
{
    b_le(b, name_len, 2);
    b_bytes(b, name, name_len);
    b_le(b, nbytes, 8);
    b_bytes(b, data, (size_t)nbytes);
}

static void b_finish(struct builder *b)
{
    b->n += 32;
    fix_checksum(b->buf, b->n);
}

/* Load bytes from a file and require failure: status != OK (== want unless want < 0),
 * *out == NULL, and a message naming the file. */
static int expect_load_fails(const char *path, int want, const char *what)
{
    dlu__ckpt *c = (dlu__ckpt *)&c; /* poison: load must set it to NULL */
    dlu_clear_error();
    dlu_status s = dlu__ckpt_load(path, &c);
    int ok = s != DLU_OK && (want < 0 || (int)s == want) && c == NULL &&
             strstr(dlu_last_error(), path) != NULL;
    if (!ok) {
        printf("\n    FAIL %s: status %d (%s), wanted %d; out %s; message \"%s\"\n", what, (int)s,
               dlu_strerror(s), want, c == NULL ? "NULL" : "set", dlu_last_error());
        if (s == DLU_OK)
            dlu__ckpt_free(c);
    }
    return ok;
}

static int load_bytes_fails(const void *data, size_t n, int want, const char *what)
{
    const char *p = in_tmp("bad.ckpt");
    if (spit(p, data, n) != 0) {
        printf("\n    cannot write %s\n", p);
        return 0;
    }
    return expect_load_fails(p, want, what);
}

static const uint8_t sha_empty[32] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};

/* ---- SHA-256 ---- */

static void test_sha256_known_answers(void)
{
    /* FIPS 180-2, appendix B.1 and B.2, and the empty message. */
    static const struct {
        const char *msg, *hex;
    } kat[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint8_t d[32];
        char hex[65];
        CU_ASSERT_EQUAL(dlu__sha256_once(kat[i].msg, strlen(kat[i].msg), d), DLU_OK);
        dlu__sha256_hex(d, hex);
        CU_ASSERT_STRING_EQUAL(hex, kat[i].hex);
    }
    uint8_t d[32];
    CU_ASSERT_EQUAL(dlu__sha256_once(NULL, 0, d), DLU_OK);
    CU_ASSERT(memcmp(d, sha_empty, 32) == 0);
}

static void test_sha256_incremental(void)
{
    enum { N = 100003 };
    uint8_t *data = malloc(N);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    fill_random(data, N, 1);
    uint8_t want[32], got[32];
    CU_ASSERT_EQUAL(dlu__sha256_once(data, N, want), DLU_OK);

    dlu__sha256 *h;
    CU_ASSERT_EQUAL(dlu__sha256_new(&h), DLU_OK);
    if (h == NULL) {
        free(data);
        return;
    }
    /* Chunk sizes around the 64-byte block boundary are where a buffering bug would show. */
    static const size_t chunks[] = {1, 3, 55, 63, 64, 65, 127, 1000, 4096, N};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        CU_ASSERT_EQUAL(dlu__sha256_reset(h), DLU_OK);
        for (size_t off = 0; off < N; off += chunks[k]) {
            size_t n = N - off < chunks[k] ? N - off : chunks[k];
            dlu__sha256_update(h, data + off, n);
            dlu__sha256_update(h, NULL, 0); /* empty updates change nothing */
        }
        dlu__sha256_final(h, got);
        if (memcmp(got, want, 32) != 0) {
            printf("\n    FAIL chunk size %zu: incremental digest differs from one-shot\n", chunks[k]);
            CU_FAIL("incremental != one-shot");
        }
    }
    /* Irregular chunk sizes from the data itself. */
    CU_ASSERT_EQUAL(dlu__sha256_reset(h), DLU_OK);
    for (size_t off = 0, i = 0; off < N; i++) {
        size_t n = (size_t)data[i] * 3 + 1;
        if (n > N - off)
            n = N - off;
        dlu__sha256_update(h, data + off, n);
        off += n;
    }
    dlu__sha256_final(h, got);
    CU_ASSERT(memcmp(got, want, 32) == 0);

    /* One million 'a' (FIPS 180-2, B.3), fed 1000 at a time. */
    memset(data, 'a', 1000);
    CU_ASSERT_EQUAL(dlu__sha256_reset(h), DLU_OK);
    for (int i = 0; i < 1000; i++)
        dlu__sha256_update(h, data, 1000);
    dlu__sha256_final(h, got);
    char hex[65];
    dlu__sha256_hex(got, hex);
    CU_ASSERT_STRING_EQUAL(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    /* A fresh hasher finalised at once is the empty message. */
    dlu__sha256_free(h);
    CU_ASSERT_EQUAL(dlu__sha256_new(&h), DLU_OK);
    dlu__sha256_final(h, got);
    CU_ASSERT(memcmp(got, sha_empty, 32) == 0);
    dlu__sha256_free(h);
    dlu__sha256_free(NULL);
    free(data);
}

/* ---- checkpoint: round trip and API ---- */

static void check_record(const dlu__ckpt *c, const char *name, const void *want, uint64_t nbytes)
{
    const void *data = NULL;
    uint64_t n = 12345;
    dlu_status s = dlu__ckpt_get(c, name, &data, &n);
    if (s != DLU_OK || n != nbytes || data == NULL || (nbytes > 0 && memcmp(data, want, (size_t)nbytes) != 0)) {
        size_t first = 0;
        if (s == DLU_OK && n == nbytes && data != NULL)
            while (((const uint8_t *)data)[first] == ((const uint8_t *)want)[first])
                first++;
        printf("\n    FAIL record '%s': status %d, %" PRIu64 " bytes (want %" PRIu64 "), first diff at %zu: %s\n",
               name, (int)s, n, nbytes, first, dlu_last_error());
        CU_FAIL("record content");
    }
}

static void test_ckpt_round_trip(void)
{
    enum { BIG = 1 << 20 };
    uint8_t *big = malloc(BIG), *back = malloc(BIG);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    fill_random(big, BIG, 2);
    const char *json = "{\"model\":\"mlp\",\"step\":1234,\"lr\":0.001}";
    uint64_t step = 0x0102030405060708ull;
    uint8_t rng[32];
    fill_random(rng, sizeof rng, 3);
    char long_name[256];
    memset(long_name, 'n', 255);
    long_name[255] = '\0';

    dlu__ckpt *c = NULL, *l = NULL;
    CU_ASSERT_EQUAL(dlu__ckpt_new(&c), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "header", json, strlen(json)), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "param/fc1.w", big, BIG), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "empty", NULL, 0), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "rng", rng, sizeof rng), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "step", &step, sizeof step), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, long_name, "x", 1), DLU_OK);
    big[0] ^= 1; /* put copies: changing the source afterwards must not matter */
    check_record(c, "empty", "", 0);

    const char *p = in_tmp("rt.ckpt");
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, p), DLU_OK);
    CU_ASSERT_EQUAL(count_entries(tmpdir), 1); /* no temp file left behind */
    struct stat st;
    CU_ASSERT_EQUAL(stat(p, &st), 0);
    uint64_t want_size = 16 + 32 + (2 + 6 + 8 + strlen(json)) + (2 + 11 + 8 + BIG) + (2 + 5 + 8) +
                         (2 + 3 + 8 + 32) + (2 + 4 + 8 + 8) + (2 + 255 + 8 + 1);
    CU_ASSERT_EQUAL((uint64_t)st.st_size, want_size);

    CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
    if (l != NULL) {
        big[0] ^= 1;
        check_record(l, "header", json, strlen(json));
        check_record(l, "param/fc1.w", big, BIG);
        check_record(l, "empty", "", 0);
        check_record(l, "rng", rng, sizeof rng);
        check_record(l, "step", &step, sizeof step);
        check_record(l, long_name, "x", 1);
        CU_ASSERT_EQUAL(dlu__ckpt_get_exact(l, "param/fc1.w", back, BIG), DLU_OK);
        CU_ASSERT(memcmp(back, big, BIG) == 0);
        uint64_t step_back = 0;
        CU_ASSERT_EQUAL(dlu__ckpt_get_exact(l, "step", &step_back, sizeof step_back), DLU_OK);
        CU_ASSERT_EQUAL(step_back, step);
        CU_ASSERT_EQUAL(dlu__ckpt_get_exact(l, "empty", NULL, 0), DLU_OK);
        /* A loaded checkpoint can be saved again, byte for byte the same. */
        const char *p2 = in_tmp("rt2.ckpt");
        CU_ASSERT_EQUAL(dlu__ckpt_save(l, p2), DLU_OK);
        size_t n1, n2;
        uint8_t *f1 = slurp(p, &n1), *f2 = slurp(p2, &n2);
        CU_ASSERT(f1 != NULL && f2 != NULL && n1 == n2 && memcmp(f1, f2, n1) == 0);
        free(f1);
        free(f2);
        unlink(p2);
    }
    dlu__ckpt_free(l);
    dlu__ckpt_free(c);
    unlink(p);
    free(big);
    free(back);
}

/* The writer produces exactly the documented bytes, and the reader takes hand-built ones. */
static void test_ckpt_layout(void)
{
    struct builder b;
    b_header(&b, 1, 3);
    b_record(&b, "ab", 2, "\x01\x02\x03", 3);
    b_record(&b, "e", 1, "", 0);
    b_record(&b, "z", 1, "\xff", 1);
    b_finish(&b);

    dlu__ckpt *c = NULL, *l = NULL;
    CU_ASSERT_EQUAL(dlu__ckpt_new(&c), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "ab", "\x01\x02\x03", 3), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "e", NULL, 0), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "z", "\xff", 1), DLU_OK);
    const char *p = in_tmp("layout.ckpt");
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, p), DLU_OK);
    size_t n;
    uint8_t *f = slurp(p, &n);
    CU_ASSERT_EQUAL(n, b.n);
    if (f != NULL && n == b.n && memcmp(f, b.buf, n) != 0) {
        size_t i = 0;
        while (f[i] == b.buf[i])
            i++;
        printf("\n    FAIL first differing byte at offset %zu: file %02x, layout %02x\n", i, f[i], b.buf[i]);
        CU_FAIL("saved bytes differ from the documented layout");
    }
    free(f);

    CU_ASSERT_EQUAL(spit(p, b.buf, b.n), 0);
    CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
    if (l != NULL) {
        check_record(l, "ab", "\x01\x02\x03", 3);
        check_record(l, "e", "", 0);
        check_record(l, "z", "\xff", 1);
    }
    /* The smallest checkpoint: no records. */
    b_header(&b, 1, 0);
    b_finish(&b);
    CU_ASSERT_EQUAL(b.n, 48);
    dlu__ckpt_free(l);
    l = NULL;
    CU_ASSERT_EQUAL(spit(p, b.buf, b.n), 0);
    CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
    dlu__ckpt_free(l);
    dlu__ckpt_free(c);
    unlink(p);
}

static void test_ckpt_put_rejects(void)
{
    dlu__ckpt *c = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu__ckpt_new(&c), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "w", "abc", 3), DLU_OK);

    dlu_clear_error();
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "w", "xyzw", 4), DLU_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "duplicate record name 'w'"));
    check_record(c, "w", "abc", 3); /* the first one is kept */

    char name[300];
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    name[256] = '\0';
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, name, "", 0), DLU_EINVAL); /* 256 bytes */
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "256 bytes"));
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "", "", 0), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "nul", NULL, 5), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, NULL, "", 0), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__ckpt_put(NULL, "x", "", 0), DLU_EINVAL);

    /* Nothing of the failed puts was added. */
    const char *p = in_tmp("put.ckpt");
    dlu__ckpt *l = NULL;
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, p), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
    if (l != NULL)
        check_record(l, "w", "abc", 3);
    dlu__ckpt_free(l);
    struct stat st;
    CU_ASSERT(stat(p, &st) == 0 && st.st_size == 16 + 2 + 1 + 8 + 3 + 32);

    CU_ASSERT_EQUAL(dlu__ckpt_save(c, ""), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, NULL), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__ckpt_save(NULL, p), DLU_EINVAL);
    CU_ASSERT_EQUAL(dlu__ckpt_load("", &l), DLU_EINVAL);
    CU_ASSERT_PTR_NULL(l);
    dlu__ckpt_free(c);
    dlu__ckpt_free(NULL);
    unlink(p);
}

static void test_ckpt_missing_record(void)
{
    dlu__ckpt *c = NULL, *l = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu__ckpt_new(&c), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "present", "1", 1), DLU_OK);
    const void *data = &data;
    uint64_t n = 7;
    CU_ASSERT_EQUAL(dlu__ckpt_get(c, "absent", &data, &n), DLU_EFORMAT);
    CU_ASSERT_STRING_EQUAL(dlu_last_error(), "(in-memory checkpoint): checkpoint has no record 'absent'");
    CU_ASSERT_PTR_NULL(data);
    CU_ASSERT_EQUAL(n, 0);

    const char *p = in_tmp("missing.ckpt");
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, p), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
    if (l != NULL) {
        char want[4500];
        snprintf(want, sizeof want, "%s: checkpoint has no record 'optim/adam.m'", p);
        CU_ASSERT_EQUAL(dlu__ckpt_get(l, "optim/adam.m", &data, &n), DLU_EFORMAT);
        CU_ASSERT_STRING_EQUAL(dlu_last_error(), want);
        uint8_t dst[4] = {9, 9, 9, 9};
        CU_ASSERT_EQUAL(dlu__ckpt_get_exact(l, "optim/adam.m", dst, sizeof dst), DLU_EFORMAT);
        CU_ASSERT_STRING_EQUAL(dlu_last_error(), want);
        /* Names are matched exactly: no prefix or case folding. */
        CU_ASSERT_EQUAL(dlu__ckpt_get(l, "presen", &data, &n), DLU_EFORMAT);
        CU_ASSERT_EQUAL(dlu__ckpt_get(l, "Present", &data, &n), DLU_EFORMAT);
        CU_ASSERT_EQUAL(dlu__ckpt_get(l, "present", &data, &n), DLU_OK);
    }
    dlu__ckpt_free(l);
    dlu__ckpt_free(c);
    unlink(p);
}

static void test_ckpt_get_exact_mismatch(void)
{
    dlu__ckpt *c = NULL, *l = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu__ckpt_new(&c), DLU_OK);
    float w[6] = {1, 2, 3, 4, 5, 6};
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "param/w", w, sizeof w), DLU_OK);
    const char *p = in_tmp("exact.ckpt");
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, p), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
    if (l != NULL) {
        float dst[8] = {0};
        CU_ASSERT_EQUAL(dlu__ckpt_get_exact(l, "param/w", dst, sizeof dst), DLU_ESHAPE);
        const char *m = dlu_last_error();
        CU_ASSERT_PTR_NOT_NULL(strstr(m, p));
        CU_ASSERT_PTR_NOT_NULL(strstr(m, "'param/w'"));
        CU_ASSERT_PTR_NOT_NULL(strstr(m, "holds 24 bytes"));
        CU_ASSERT_PTR_NOT_NULL(strstr(m, "expected 32"));
        CU_ASSERT_EQUAL(dst[0], 0.0f); /* not written on mismatch */
        CU_ASSERT_EQUAL(dlu__ckpt_get_exact(l, "param/w", dst, 4 * sizeof *dst), DLU_ESHAPE);
        CU_ASSERT_EQUAL(dlu__ckpt_get_exact(l, "param/w", dst, 6 * sizeof *dst), DLU_OK);
        CU_ASSERT(memcmp(dst, w, sizeof w) == 0);
    }
    dlu__ckpt_free(l);
    dlu__ckpt_free(c);
    unlink(p);
}

/* ---- checkpoint: damaged and foreign files ---- */

/* A small checkpoint whose every byte can be damaged in turn:
 * header 0..15, "a" (empty) 16..26, "weights" (40 bytes) 27..83, "rng" (8) 84..104,
 * checksum 105..136. */
static uint8_t *small_ckpt(size_t *n)
{
    dlu__ckpt *c = NULL;
    uint8_t w[40], r[8];
    fill_random(w, sizeof w, 4);
    fill_random(r, sizeof r, 5);
    const char *p = in_tmp("small.ckpt");
    uint8_t *buf = NULL;
    *n = 0;
    if (dlu__ckpt_new(&c) == DLU_OK && dlu__ckpt_put(c, "a", NULL, 0) == DLU_OK &&
        dlu__ckpt_put(c, "weights", w, sizeof w) == DLU_OK && dlu__ckpt_put(c, "rng", r, sizeof r) == DLU_OK &&
        dlu__ckpt_save(c, p) == DLU_OK)
        buf = slurp(p, n);
    dlu__ckpt_free(c);
    unlink(p);
    return buf;
}

static void test_ckpt_flip_every_byte(void)
{
    size_t n;
    uint8_t *good = small_ckpt(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    CU_ASSERT_EQUAL(n, 137);
    uint8_t *bad = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
    static const uint8_t masks[] = {0xff, 0x01, 0x80};
    int failures = 0;
    for (size_t m = 0; m < sizeof masks; m++) {
        for (size_t i = 0; i < n; i++) {
            memcpy(bad, good, n);
            bad[i] ^= masks[m];
            /* Which error is right depends on the field; that it fails is what matters,
             * but the first fields have exactly one right answer. */
            int want = i < 8 ? DLU_EFORMAT : i < 12 ? DLU_EVERSION : i >= n - 32 ? DLU_ECORRUPT : -1;
            char what[64];
            snprintf(what, sizeof what, "byte %zu ^= 0x%02x", i, masks[m]);
            if (!load_bytes_fails(bad, n, want, what))
                failures++;
        }
    }
    CU_ASSERT_EQUAL(failures, 0);
    free(bad);
    free(good);
}

/* Larger file, ~50 positions spread from the first byte to the last. */
static void test_ckpt_flip_spread(void)
{
    enum { BIG = 65536 };
    uint8_t *payload = malloc(BIG);
    CU_ASSERT_PTR_NOT_NULL_FATAL(payload);
    fill_random(payload, BIG, 6);
    dlu__ckpt *c = NULL;
    CU_ASSERT_EQUAL(dlu__ckpt_new(&c), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "header", "{}", 2), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "big", payload, BIG), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "tail", payload, 100), DLU_OK);
    const char *p = in_tmp("spread.ckpt");
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, p), DLU_OK);
    dlu__ckpt_free(c);
    size_t n;
    uint8_t *good = slurp(p, &n), *bad = malloc(n ? n : 1);
    unlink(p);
    if (good == NULL || bad == NULL) {
        CU_FAIL("cannot read back the saved file");
        free(good);
        free(bad);
        free(payload);
        return;
    }
    int failures = 0, tried = 0;
    for (int k = 0; k <= 50; k++) {
        size_t i = (size_t)((double)k / 50 * (double)(n - 1));
        memcpy(bad, good, n);
        bad[i] ^= 0x20;
        char what[64];
        snprintf(what, sizeof what, "byte %zu of %zu ^= 0x20", i, n);
        tried++;
        if (!load_bytes_fails(bad, n, i >= n - 32 ? DLU_ECORRUPT : -1, what))
            failures++;
    }
    CU_ASSERT_EQUAL(tried, 51);
    CU_ASSERT_EQUAL(failures, 0);
    free(good);
    free(bad);
    free(payload);
}

static void test_ckpt_truncated(void)
{
    size_t n;
    uint8_t *good = small_ckpt(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    int failures = 0;
    for (size_t len = 0; len < n; len++) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", len, n);
        /* Empty: nothing says it was ever a checkpoint. Otherwise: damaged, not foreign. */
        int want = len == 0 ? DLU_EFORMAT : -1;
        if (!load_bytes_fails(good, len, want, what))
            failures++;
    }
    CU_ASSERT_EQUAL(failures, 0);

    /* Truncated in the middle of the weights payload: the message says where. */
    CU_ASSERT(load_bytes_fails(good, 60, DLU_ECORRUPT, "truncated in a payload"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "offset"));

    /* And the opposite: a byte appended after the checksum. */
    uint8_t *longer = malloc(n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(longer);
    memcpy(longer, good, n);
    longer[n] = 0;
    CU_ASSERT(load_bytes_fails(longer, n + 1, -1, "one byte appended"));
    fix_checksum(longer, n + 1); /* even with a checksum that fits the new length */
    CU_ASSERT(load_bytes_fails(longer, n + 1, -1, "one byte appended, checksum fixed"));
    free(longer);
    free(good);
}

static void test_ckpt_wrong_magic(void)
{
    size_t n;
    uint8_t *good = small_ckpt(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    good[6] = 'X';
    CU_ASSERT(load_bytes_fails(good, n, DLU_EFORMAT, "DLUCKPX"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "not an OpenDLU checkpoint"));

    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    CU_ASSERT(load_bytes_fails(png, sizeof png, DLU_EFORMAT, "a PNG header"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "not an OpenDLU checkpoint"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "89504e47"));
    CU_ASSERT(load_bytes_fails("{\"a\":1}", 7, DLU_EFORMAT, "a short JSON file"));
    CU_ASSERT(load_bytes_fails("", 0, DLU_EFORMAT, "an empty file"));

    CU_ASSERT(expect_load_fails(in_tmp("does-not-exist.ckpt"), DLU_EIO, "a missing file"));
    CU_ASSERT(expect_load_fails(tmpdir, DLU_EIO, "a directory"));
    free(good);
}

static void test_ckpt_future_version(void)
{
    size_t n;
    uint8_t *buf = small_ckpt(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    put_le(buf + 8, 2, 4);
    fix_checksum(buf, n);
    CU_ASSERT(load_bytes_fails(buf, n, DLU_EVERSION, "version 2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "version 2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "version 1"));
    /* Version is judged before anything else: a future file may be laid out differently. */
    CU_ASSERT(load_bytes_fails(buf, 12, DLU_EVERSION, "version 2, header only"));
    put_le(buf + 8, 0xffffffffu, 4);
    CU_ASSERT(load_bytes_fails(buf, n, DLU_EVERSION, "version 2^32-1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "4294967295"));
    put_le(buf + 8, 0, 4);
    CU_ASSERT(load_bytes_fails(buf, n, DLU_EVERSION, "version 0"));
    free(buf);
}

/* Structurally wrong files with a valid checksum: what a buggy writer could produce. */
static void test_ckpt_lying_fields(void)
{
    struct builder b;

    /* A payload length far beyond the file must be refused before any allocation: under
     * ASan a 2^64-1 byte malloc would abort the test. */
    static const uint64_t huge[] = {UINT64_MAX, 1ull << 40, 1ull << 32, 1000};
    for (size_t k = 0; k < sizeof huge / sizeof huge[0]; k++) {
        b_header(&b, 1, 1);
        b_record(&b, "x", 1, "abcd", 4);
        put_le(b.buf + b.n - 12, huge[k], 8);
        b_finish(&b);
        CU_ASSERT(load_bytes_fails(b.buf, b.n, DLU_ECORRUPT, "payload length beyond the file"));
        CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "'x'"));
    }
    /* A record count far beyond the file. */
    b_header(&b, 1, UINT32_MAX);
    b_record(&b, "x", 1, "abcd", 4);
    b_finish(&b);
    CU_ASSERT(load_bytes_fails(b.buf, b.n, DLU_ECORRUPT, "record count 2^32-1"));
    /* Fewer records declared than present: bytes left over before the checksum. */
    b_header(&b, 1, 1);
    b_record(&b, "x", 1, "abcd", 4);
    b_record(&b, "y", 1, "abcd", 4);
    b_finish(&b);
    CU_ASSERT(load_bytes_fails(b.buf, b.n, DLU_EFORMAT, "record count too small"));
    /* Name length 0 and 256. */
    b_header(&b, 1, 1);
    b_record(&b, "", 0, "abcd", 4);
    b_finish(&b);
    CU_ASSERT(load_bytes_fails(b.buf, b.n, DLU_EFORMAT, "name length 0"));
    char name[256];
    memset(name, 'q', sizeof name);
    b_header(&b, 1, 1);
    b_record(&b, name, 256, "abcd", 4);
    b_finish(&b);
    CU_ASSERT(load_bytes_fails(b.buf, b.n, DLU_EFORMAT, "name length 256"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "name length 256"));
    /* A NUL inside a name. */
    b_header(&b, 1, 1);
    b_record(&b, "a\0b", 3, "abcd", 4);
    b_finish(&b);
    CU_ASSERT(load_bytes_fails(b.buf, b.n, DLU_EFORMAT, "NUL in a name"));
    /* The same name twice. */
    b_header(&b, 1, 3);
    b_record(&b, "w", 1, "abcd", 4);
    b_record(&b, "v", 1, "", 0);
    b_record(&b, "w", 1, "efgh", 4);
    b_finish(&b);
    CU_ASSERT(load_bytes_fails(b.buf, b.n, DLU_EFORMAT, "duplicate names"));
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), "'w'"));
}

/* ---- checkpoint: atomic save ---- */

static void test_ckpt_save_no_directory(void)
{
    dlu__ckpt *c = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu__ckpt_new(&c), DLU_OK);
    CU_ASSERT_EQUAL(dlu__ckpt_put(c, "w", "abc", 3), DLU_OK);
    int before = count_entries(tmpdir);
    const char *p = in_tmp("no/such/dir/x.ckpt");
    dlu_clear_error();
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, p), DLU_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), p));
    CU_ASSERT_EQUAL(count_entries(tmpdir), before);
    CU_ASSERT_FALSE(exists(in_tmp("no")));
    CU_ASSERT_EQUAL(dlu__ckpt_save(c, in_tmp("dir/")), DLU_EINVAL);
    CU_ASSERT_EQUAL(count_entries(tmpdir), before);
    dlu__ckpt_free(c);
}

static dlu__ckpt *make_ckpt(const char *const *names, size_t n, size_t nbytes, uint64_t seed)
{
    dlu__ckpt *c = NULL;
    uint8_t *buf = malloc(nbytes ? nbytes : 1);
    if (buf == NULL || dlu__ckpt_new(&c) != DLU_OK) {
        free(buf);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        fill_random(buf, nbytes, seed + i);
        if (dlu__ckpt_put(c, names[i], buf, nbytes) != DLU_OK) {
            dlu__ckpt_free(c);
            c = NULL;
            break;
        }
    }
    free(buf);
    return c;
}

static void test_ckpt_save_replaces(void)
{
    static const char *const old_names[] = {"header", "param/w", "param/b", "optim/m"};
    static const char *const new_names[] = {"header"};
    CU_ASSERT_EQUAL_FATAL(mkdir(in_tmp("replace"), 0700), 0);
    const char *p = in_tmp("replace/model.ckpt");
    dlu__ckpt *a = make_ckpt(old_names, 4, 1 << 20, 10);
    dlu__ckpt *b = make_ckpt(new_names, 1, 10, 20);
    dlu__ckpt *l = NULL;
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_PTR_NOT_NULL(b);
    if (a != NULL && b != NULL) {
        CU_ASSERT_EQUAL(dlu__ckpt_save(a, p), DLU_OK);
        CU_ASSERT_EQUAL(dlu__ckpt_save(b, p), DLU_OK);
        struct stat st;
        CU_ASSERT(stat(p, &st) == 0 && st.st_size == 16 + 2 + 6 + 8 + 10 + 32);
        CU_ASSERT_EQUAL(count_entries(in_tmp("replace")), 1);
        CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
        if (l != NULL) {
            uint8_t want[10];
            fill_random(want, sizeof want, 20);
            check_record(l, "header", want, sizeof want);
            const void *d;
            uint64_t n;
            CU_ASSERT_EQUAL(dlu__ckpt_get(l, "param/w", &d, &n), DLU_EFORMAT);
        }
    }
    dlu__ckpt_free(l);
    dlu__ckpt_free(a);
    dlu__ckpt_free(b);
    unlink(p);
    rmdir(in_tmp("replace"));
}

static void test_ckpt_failed_save_keeps_old(void)
{
    static const char *const old_names[] = {"header", "param/w"};
    static const char *const new_names[] = {"header", "param/w", "param/b"};
    CU_ASSERT_EQUAL_FATAL(mkdir(in_tmp("keep"), 0700), 0);
    const char *p = in_tmp("keep/model.ckpt");
    char tmp_name[4500];
    snprintf(tmp_name, sizeof tmp_name, "%s.tmp", p);
    dlu__ckpt *a = make_ckpt(old_names, 2, 4096, 30);
    dlu__ckpt *b = make_ckpt(new_names, 3, 8192, 40);
    dlu__ckpt *l = NULL;
    CU_ASSERT_PTR_NOT_NULL(a);
    CU_ASSERT_PTR_NOT_NULL(b);
    if (a != NULL && b != NULL) {
        CU_ASSERT_EQUAL(dlu__ckpt_save(a, p), DLU_OK);
        size_t n_before, n_after;
        uint8_t *before = slurp(p, &n_before);

        /* The temp file cannot be created: a directory is in its place. */
        CU_ASSERT_EQUAL(mkdir(tmp_name, 0700), 0);
        dlu_clear_error();
        CU_ASSERT_EQUAL(dlu__ckpt_save(b, p), DLU_EIO);
        CU_ASSERT_PTR_NOT_NULL(strstr(dlu_last_error(), tmp_name));
        CU_ASSERT_EQUAL(rmdir(tmp_name), 0);

        uint8_t *after = slurp(p, &n_after);
        CU_ASSERT(before != NULL && after != NULL && n_before == n_after &&
                  memcmp(before, after, n_before) == 0);
        free(before);
        free(after);
        CU_ASSERT_EQUAL(dlu__ckpt_load(p, &l), DLU_OK);
        if (l != NULL) {
            uint8_t want[4096];
            fill_random(want, sizeof want, 31);
            check_record(l, "param/w", want, sizeof want);
        }
        CU_ASSERT_EQUAL(count_entries(in_tmp("keep")), 1);

        /* The rename fails: the target is a directory. The written temp file is removed. */
        const char *d = in_tmp("keep/is-a-dir");
        CU_ASSERT_EQUAL(mkdir(d, 0700), 0);
        CU_ASSERT_EQUAL(dlu__ckpt_save(b, d), DLU_EIO);
        CU_ASSERT_EQUAL(count_entries(in_tmp("keep")), 2); /* model.ckpt and is-a-dir */
        CU_ASSERT_EQUAL(count_entries(d), 0);
        rmdir(d);
    }
    dlu__ckpt_free(l);
    dlu__ckpt_free(a);
    dlu__ckpt_free(b);
    unlink(p);
    rmdir(in_tmp("keep"));
}

/* ---- driver ---- */

static int suite_init(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/dlu-test-ckpt-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int suite_clean(void)
{
    return nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"sha256 FIPS 180-2 known answers", test_sha256_known_answers},
        {"sha256 incremental == one-shot", test_sha256_incremental},
        {"ckpt round trip (empty and 1 MiB records)", test_ckpt_round_trip},
        {"ckpt bytes match the documented layout", test_ckpt_layout},
        {"ckpt put rejects duplicates and bad names", test_ckpt_put_rejects},
        {"ckpt missing record message", test_ckpt_missing_record},
        {"ckpt get_exact size mismatch", test_ckpt_get_exact_mismatch},
        {"ckpt every flipped byte is detected", test_ckpt_flip_every_byte},
        {"ckpt flipped bytes spread over a 64 KiB file", test_ckpt_flip_spread},
        {"ckpt every truncation is detected", test_ckpt_truncated},
        {"ckpt wrong magic, missing file, directory", test_ckpt_wrong_magic},
        {"ckpt future version", test_ckpt_future_version},
        {"ckpt lying lengths and counts", test_ckpt_lying_fields},
        {"ckpt save into a missing directory", test_ckpt_save_no_directory},
        {"ckpt save replaces the whole file", test_ckpt_save_replaces},
        {"ckpt failed save keeps the old file", test_ckpt_failed_save_keeps_old},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("ckpt_file", suite_init, suite_clean);
    int ok = s != NULL;
    for (size_t i = 0; ok && i < sizeof tests / sizeof tests[0]; i++)
        ok = CU_add_test(s, tests[i].name, tests[i].fn) != NULL;
    if (!ok) {
        fprintf(stderr, "test_ckpt: cannot set up CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_ErrorCode err = CU_get_error();
    CU_cleanup_registry();
    return failed != 0 || err != CUE_SUCCESS ? 1 : 0;
}
