/* test_data.c -- CUnit tests for the IDX data-set reader (include/dlu/data.h).
 *
 * Crafts small IDX files, plain and gzip-compressed, in a fresh temporary directory and
 * checks the round trip, minibatch gathering, the directory lookup, and that every kind
 * of bad input the reader promises to detect gives the documented status and a message
 * naming the file. The real Fashion-MNIST is checked too when it is installed. It does
 * NOT test zlib itself, nor speed. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, truncate; the autotools build may set _GNU_SOURCE */
#endif

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <zlib.h>

#include "dlu/data.h"

#ifndef FASHION_DIR /* -DFASHION_DIR=... to look elsewhere, or to try the skip path */
#define FASHION_DIR "/usr/share/datasets/fashion-mnist"
#endif

static char tmpdir[PATH_MAX];

/* ---- fixtures ------------------------------------------------------------------------ */

/* dst = tmpdir/name. */
static const char *tpath(char *dst, const char *name)
{
    int k = snprintf(dst, PATH_MAX, "%s/%s", tmpdir, name);
    CU_ASSERT_FATAL(k > 0 && k < PATH_MAX);
    return dst;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Write n raw bytes, through zlib's gzip writer when gz is set. */
static void write_bytes(const char *path, int gz, const void *p, size_t n)
{
    int ok;
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ok = f != NULL;
        if (f) {
            /* gzwrite of 0 bytes returns 0, which is not an error here. */
            ok = n == 0 || gzwrite(f, p, (unsigned)n) == (int)n;
            ok = gzclose(f) == Z_OK && ok;
        }
    } else {
        FILE *f = fopen(path, "wb");
        ok = f != NULL;
        if (f) {
            ok = fwrite(p, 1, n, f) == n;
            ok = fclose(f) == 0 && ok;
        }
    }
    CU_ASSERT_FATAL(ok);
}

/* An IDX file: magic, ndim dims, then exactly nbytes of payload, whatever the dims say,
 * so that tests can make files shorter or longer than their headers announce. */
static void write_idx(const char *path, int gz, uint32_t magic, int ndim, const uint32_t *dims,
                      const uint8_t *payload, size_t nbytes)
{
    size_t head = 4 + 4 * (size_t)ndim;
    uint8_t *buf = malloc(head + nbytes);
    CU_ASSERT_FATAL(buf != NULL);
    put_be32(buf, magic);
    for (int i = 0; i < ndim; i++)
        put_be32(buf + 4 + 4 * i, dims[i]);
    if (nbytes)
        memcpy(buf + head, payload, nbytes);
    write_bytes(path, gz, buf, head + nbytes);
    free(buf);
}

/* High-entropy pixels from a fixed-seed LCG, with 0 and 255 planted so that both ends
 * of the pixel/255 scaling are exercised. */
static void fill_pixels(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
    if (n >= 2) {
        p[0] = 0;
        p[1] = 255;
    }
}

/* The standard small set: 5 images of 3x4, labels with a gap (no class 1, 4..6). */
enum { SN = 5, SH = 3, SW = 4 };
static uint8_t small_px[SN * SH * SW];
static const uint8_t small_lab[SN] = {3, 0, 7, 2, 7};
static const uint32_t small_dims[3] = {SN, SH, SW};
static const uint32_t small_ldims[1] = {SN};

static void write_small(const char *img, const char *lab, int gz)
{
    write_idx(img, gz, 0x803, 3, small_dims, small_px, sizeof small_px);
    write_idx(lab, gz, 0x801, 1, small_ldims, small_lab, sizeof small_lab);
}

/* Rewrite the byte at offset off (negative: from the end) of a file as
 * (byte ^ flip) | set. */
static void poke_byte(const char *path, long off, uint8_t flip, uint8_t set)
{
    FILE *f = fopen(path, "r+b");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fseek(f, off, off < 0 ? SEEK_END : SEEK_SET) == 0);
    long at = ftell(f);
    int c = fgetc(f);
    CU_ASSERT_FATAL(c != EOF);
    CU_ASSERT_FATAL(fseek(f, at, SEEK_SET) == 0);
    CU_ASSERT_FATAL(fputc((c ^ flip) | set, f) != EOF);
    CU_ASSERT_FATAL(fclose(f) == 0);
}

static off_t file_size(const char *path)
{
    struct stat sb;
    CU_ASSERT_FATAL(stat(path, &sb) == 0);
    return sb.st_size;
}

/* ---- checks -------------------------------------------------------------------------- */

/* Assert a status and that dlu_last_error() contains every needle. Reports at the
 * caller's line, with the actual message, so a failure says what the reader said. */
#define CHECK_ERR(st, want, ...) \
    check_err((st), (want), __LINE__, #st, (const char *const[]){__VA_ARGS__, NULL})

static void check_err(dlu_status got, dlu_status want, unsigned line, const char *expr,
                      const char *const *needles)
{
    char cond[2048];
    const char *msg = dlu_last_error();
    snprintf(cond, sizeof cond, "%s gave %d (%s), expected %d (%s); message \"%s\"", expr,
             (int)got, dlu_strerror(got), (int)want, dlu_strerror(want), msg);
    CU_assertImplementation(got == want, line, cond, __FILE__, "", CU_FALSE);
    for (int i = 0; needles[i]; i++) {
        snprintf(cond, sizeof cond, "message \"%s\" contains \"%s\"", msg, needles[i]);
        CU_assertImplementation(strstr(msg, needles[i]) != NULL, line, cond, __FILE__, "",
                                CU_FALSE);
    }
}

/* Load a pair that must fail; checks that the out pointer is cleared too. */
static dlu_status load_bad(const char *img, const char *lab)
{
    dlu_dataset *ds = NULL;
    dlu_status st = dlu_dataset_load_idx(img, lab, &ds);
    CU_ASSERT_PTR_NULL(ds);
    dlu_dataset_free(ds);
    return st;
}

/* ---- suite setup --------------------------------------------------------------------- */

static int suite_init(void)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/dlu_test_data.XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "test_data: mkdtemp(%s): %s\n", tmpdir, strerror(errno));
        return 1;
    }
    fill_pixels(small_px, sizeof small_px, 12345);
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int suite_cleanup(void)
{
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : 1;
}

/* ---- round trips --------------------------------------------------------------------- */

static void test_roundtrip_plain(void)
{
    char img[PATH_MAX], lab[PATH_MAX];
    write_small(tpath(img, "rt-images"), tpath(lab, "rt-labels"), 0);

    dlu_dataset *ds = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_dataset_load_idx(img, lab, &ds), DLU_OK);
    int c, h, w;
    dlu_dataset_shape(ds, &c, &h, &w);
    CU_ASSERT_EQUAL(dlu_dataset_count(ds), SN);
    CU_ASSERT_EQUAL(c, 1);
    CU_ASSERT_EQUAL(h, SH);
    CU_ASSERT_EQUAL(w, SW);
    CU_ASSERT_EQUAL(dlu_dataset_classes(ds), 8);
    CU_ASSERT_EQUAL(memcmp(dlu_dataset_images(ds), small_px, sizeof small_px), 0);
    CU_ASSERT_EQUAL(memcmp(dlu_dataset_labels(ds), small_lab, sizeof small_lab), 0);
    dlu_dataset_free(ds);
}

static void test_roundtrip_gz_4d(void)
{
    enum { N = 4, C = 3, H = 2, W = 5 };
    static uint8_t px[N * C * H * W];
    static const uint8_t lb[N] = {1, 0, 1, 1};
    const uint32_t dims[4] = {N, C, H, W}, ldims[1] = {N};
    fill_pixels(px, sizeof px, 777);

    char img[PATH_MAX], lab[PATH_MAX], labplain[PATH_MAX];
    write_idx(tpath(img, "rt4-images.gz"), 1, 0x804, 4, dims, px, sizeof px);
    write_idx(tpath(lab, "rt4-labels.gz"), 1, 0x801, 1, ldims, lb, sizeof lb);
    /* A plain file under any name, next to a gzip one: zlib decides by content. */
    write_idx(tpath(labplain, "rt4-labels-plain.gz"), 0, 0x801, 1, ldims, lb, sizeof lb);

    for (int pass = 0; pass < 2; pass++) {
        dlu_dataset *ds = NULL;
        CU_ASSERT_EQUAL_FATAL(dlu_dataset_load_idx(img, pass ? labplain : lab, &ds), DLU_OK);
        int c, h, w;
        dlu_dataset_shape(ds, &c, &h, &w);
        CU_ASSERT_EQUAL(dlu_dataset_count(ds), N);
        CU_ASSERT_EQUAL(c, C);
        CU_ASSERT_EQUAL(h, H);
        CU_ASSERT_EQUAL(w, W);
        CU_ASSERT_EQUAL(dlu_dataset_classes(ds), 2);
        CU_ASSERT_EQUAL(memcmp(dlu_dataset_images(ds), px, sizeof px), 0);
        CU_ASSERT_EQUAL(memcmp(dlu_dataset_labels(ds), lb, sizeof lb), 0);
        dlu_dataset_free(ds);
    }
}

/* ---- gather -------------------------------------------------------------------------- */

static void test_gather(void)
{
    char img[PATH_MAX], lab[PATH_MAX];
    write_small(tpath(img, "g-images"), tpath(lab, "g-labels.gz"), 1);
    dlu_dataset *ds = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_dataset_load_idx(img, lab, &ds), DLU_OK);

    enum { B = 4, P = SH * SW };
    const int64_t idx[B] = {4, 0, 4, 2};
    float x[B * P];
    int32_t y[B];
    CU_ASSERT_EQUAL(dlu_dataset_gather(ds, idx, B, x, y), DLU_OK);
    int bad = 0;
    for (int i = 0; i < B; i++) {
        CU_ASSERT_EQUAL(y[i], small_lab[idx[i]]);
        for (int j = 0; j < P; j++)
            bad += x[i * P + j] != (float)small_px[idx[i] * P + j] / 255.0f;
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* Sample 0 starts with the planted 0 and 255: both ends must be exact. */
    CU_ASSERT_EQUAL(x[1 * P + 0], 0.0f);
    CU_ASSERT_EQUAL(x[1 * P + 1], 1.0f);

    /* An empty batch needs no buffers. */
    CU_ASSERT_EQUAL(dlu_dataset_gather(ds, NULL, 0, NULL, NULL), DLU_OK);
    dlu_dataset_free(ds);
}

static void test_gather_range(void)
{
    char img[PATH_MAX], lab[PATH_MAX];
    write_small(tpath(img, "gr-images"), tpath(lab, "gr-labels"), 0);
    dlu_dataset *ds = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_dataset_load_idx(img, lab, &ds), DLU_OK);

    enum { P = SH * SW };
    float x[2 * P];
    int32_t y[2] = {-7, -7};
    for (int i = 0; i < 2 * P; i++)
        x[i] = -7.0f;
    const int64_t past_end[2] = {1, SN};
    CHECK_ERR(dlu_dataset_gather(ds, past_end, 2, x, y), DLU_ERANGE, img, "idx[1] = 5", "< 5");
    /* All indices are checked first, so the good idx[0] must not have been written. */
    CU_ASSERT_EQUAL(x[0], -7.0f);
    CU_ASSERT_EQUAL(y[0], -7);
    const int64_t negative[1] = {-1};
    CHECK_ERR(dlu_dataset_gather(ds, negative, 1, x, y), DLU_ERANGE, img, "idx[0] = -1");
    CHECK_ERR(dlu_dataset_gather(ds, negative, -1, x, y), DLU_EINVAL, img, "-1");
    CHECK_ERR(dlu_dataset_gather(ds, past_end, 1, NULL, y), DLU_EINVAL, img, "x is NULL");
    dlu_dataset_free(ds);
}

/* ---- directory lookup ---------------------------------------------------------------- */

static void test_load_dir(void)
{
    char dir[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
    CU_ASSERT_FATAL(mkdir(tpath(dir, "dir"), 0700) == 0);

    /* train: images both plain and .gz with different content, labels only .gz.
     * test: both files only .gz, with other contents so the splits are told apart. */
    uint8_t other_px[SN * SH * SW];
    fill_pixels(other_px, sizeof other_px, 999);
    const uint8_t other_lab[SN] = {9, 9, 1, 0, 4};
    write_idx(tpath(p, "dir/train-images-idx3-ubyte"), 0, 0x803, 3, small_dims, small_px,
              sizeof small_px);
    write_idx(tpath(p, "dir/train-images-idx3-ubyte.gz"), 1, 0x803, 3, small_dims, other_px,
              sizeof other_px);
    write_idx(tpath(p, "dir/train-labels-idx1-ubyte.gz"), 1, 0x801, 1, small_ldims, small_lab,
              sizeof small_lab);
    write_idx(tpath(p, "dir/t10k-images-idx3-ubyte.gz"), 1, 0x803, 3, small_dims, other_px,
              sizeof other_px);
    write_idx(tpath(p, "dir/t10k-labels-idx1-ubyte.gz"), 1, 0x801, 1, small_ldims, other_lab,
              sizeof other_lab);

    dlu_dataset *ds = NULL;
    CU_ASSERT_EQUAL_FATAL(dlu_dataset_load_dir(dir, "train", &ds), DLU_OK);
    CU_ASSERT_EQUAL(memcmp(dlu_dataset_images(ds), small_px, sizeof small_px), 0);
    CU_ASSERT_EQUAL(memcmp(dlu_dataset_labels(ds), small_lab, sizeof small_lab), 0);
    dlu_dataset_free(ds);

    /* A trailing slash is fine. */
    int k = snprintf(q, sizeof q, "%s/", dir);
    CU_ASSERT_FATAL(k > 0 && (size_t)k < sizeof q);
    CU_ASSERT_EQUAL_FATAL(dlu_dataset_load_dir(q, "test", &ds), DLU_OK);
    CU_ASSERT_EQUAL(memcmp(dlu_dataset_images(ds), other_px, sizeof other_px), 0);
    CU_ASSERT_EQUAL(memcmp(dlu_dataset_labels(ds), other_lab, sizeof other_lab), 0);
    CU_ASSERT_EQUAL(dlu_dataset_classes(ds), 10);
    dlu_dataset_free(ds);

    /* Without the plain file the .gz one is taken. */
    CU_ASSERT_FATAL(unlink(tpath(p, "dir/train-images-idx3-ubyte")) == 0);
    CU_ASSERT_EQUAL_FATAL(dlu_dataset_load_dir(dir, "train", &ds), DLU_OK);
    CU_ASSERT_EQUAL(memcmp(dlu_dataset_images(ds), other_px, sizeof other_px), 0);
    dlu_dataset_free(ds);

    /* Neither: the message names the directory and the file looked for. */
    CU_ASSERT_FATAL(unlink(tpath(p, "dir/t10k-labels-idx1-ubyte.gz")) == 0);
    ds = NULL;
    CHECK_ERR(dlu_dataset_load_dir(dir, "test", &ds), DLU_EIO, dir, "t10k-labels-idx1-ubyte",
              strerror(ENOENT));
    CU_ASSERT_PTR_NULL(ds);
    CHECK_ERR(dlu_dataset_load_dir(dir, "valid", &ds), DLU_EINVAL, dir, "\"valid\"");
    CU_ASSERT_PTR_NULL(ds);
}

/* ---- bad input ----------------------------------------------------------------------- */

static void test_missing_file(void)
{
    char img[PATH_MAX], lab[PATH_MAX], none[PATH_MAX];
    write_small(tpath(img, "m-images"), tpath(lab, "m-labels"), 0);
    tpath(none, "no-such-file.gz");
    CHECK_ERR(load_bad(none, lab), DLU_EIO, none, strerror(ENOENT));
    CHECK_ERR(load_bad(img, none), DLU_EIO, none, "labels", strerror(ENOENT));
    /* A directory opens but cannot be read. */
    CHECK_ERR(load_bad(tmpdir, lab), DLU_EIO, tmpdir, strerror(EISDIR));
}

static void test_wrong_magic(void)
{
    char img[PATH_MAX], lab[PATH_MAX], bad[PATH_MAX];
    write_small(tpath(img, "wm-images"), tpath(lab, "wm-labels"), 0);
    write_idx(tpath(bad, "wm-bad.gz"), 1, 0x12345678, 3, small_dims, small_px, sizeof small_px);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "0x12345678", "0x00000803", "0x00000804");
    CHECK_ERR(load_bad(img, bad), DLU_EFORMAT, bad, "0x12345678", "0x00000801");
    /* Right zero prefix, but 0x42 is no IDX type: not IDX at all. */
    write_idx(bad, 0, 0x4203, 3, small_dims, small_px, sizeof small_px);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "0x00004203", "0x00000803");
}

static void test_unsupported_type(void)
{
    char lab[PATH_MAX], bad[PATH_MAX], lab_as_img[PATH_MAX];
    write_small(tpath(lab_as_img, "ut-images"), tpath(lab, "ut-labels"), 0);
    tpath(bad, "ut-bad");
    write_idx(bad, 0, 0x0D03, 3, small_dims, small_px, sizeof small_px);
    CHECK_ERR(load_bad(bad, lab), DLU_EUNSUPPORTED, bad, "0x0d", "float32", "0x08");
    write_idx(bad, 1, 0x0901, 1, small_ldims, small_lab, sizeof small_lab);
    CHECK_ERR(load_bad(lab_as_img, bad), DLU_EUNSUPPORTED, bad, "0x09", "signed byte", "labels");
}

static void test_bad_dims(void)
{
    char img[PATH_MAX], lab[PATH_MAX], bad[PATH_MAX];
    write_small(tpath(img, "bd-images"), tpath(lab, "bd-labels"), 0);
    tpath(bad, "bd-bad");

    const uint32_t zero[3] = {SN, 0, SW};
    write_idx(bad, 0, 0x803, 3, zero, small_px, 0);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "size 0", "5x0x4");
    const uint32_t zero_labels[1] = {0};
    write_idx(bad, 1, 0x801, 1, zero_labels, small_lab, 0);
    CHECK_ERR(load_bad(img, bad), DLU_EFORMAT, bad, "size 0");

    /* The product overflows 64 bits: must be caught without wrapping around. */
    const uint32_t overflow[4] = {0xFFFFFFFFu, 0xFFFFFFF, 0xFFFFFFF, 0xFFFFFFF};
    write_idx(bad, 0, 0x804, 4, overflow, small_px, sizeof small_px);
    CHECK_ERR(load_bad(bad, lab), DLU_ERANGE, bad, "4294967295x268435455");
    /* Just over the cap: 3 x 65536 x 65536 = 12 GiB. */
    const uint32_t big[3] = {3, 65536, 65536};
    write_idx(bad, 0, 0x803, 3, big, small_px, sizeof small_px);
    CHECK_ERR(load_bad(bad, lab), DLU_ERANGE, bad, "3x65536x65536", "8589934592");
    /* Small in total but a width that no int holds. */
    const uint32_t wide[3] = {1, 1, 0x80000000u};
    write_idx(bad, 0, 0x803, 3, wide, small_px, sizeof small_px);
    CHECK_ERR(load_bad(bad, lab), DLU_ERANGE, bad, "2147483648");
    /* Exactly at the cap but the file holds 60 bytes: a lying header must fail as a
     * truncation (and quickly, without committing 8 GiB first). */
    const uint32_t at_cap[3] = {2, 65536, 65536};
    write_idx(bad, 1, 0x803, 3, at_cap, small_px, sizeof small_px);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "expected 8589934592 bytes, got 60");
}

static void test_truncated(void)
{
    char img[PATH_MAX], lab[PATH_MAX], bad[PATH_MAX];
    write_small(tpath(img, "tr-images"), tpath(lab, "tr-labels"), 0);
    tpath(bad, "tr-bad");

    write_idx(bad, 0, 0x803, 3, small_dims, small_px, sizeof small_px - 1);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "truncated", "expected 60 bytes, got 59");
    write_idx(bad, 1, 0x801, 1, small_ldims, small_lab, 2);
    CHECK_ERR(load_bad(img, bad), DLU_EFORMAT, bad, "truncated", "expected 5 bytes, got 2");
    write_idx(bad, 0, 0x801, 1, small_ldims, small_lab, 0);
    CHECK_ERR(load_bad(img, bad), DLU_EFORMAT, bad, "expected 5 bytes, got 0");

    /* Cut inside the header: the magic, then the dimension sizes. */
    write_bytes(bad, 0, "\0\0", 2);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "header", "expected 4 bytes, got 2");
    write_bytes(bad, 0, "", 0);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "expected 4 bytes, got 0");
    write_bytes(bad, 1, "\0\0\x08\x03\0\0\0\x05\0\0", 10);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "header", "expected 12 bytes, got 6");

    /* A gzip file cut mid-stream: zlib's "unexpected end of file" must come through
     * as a truncation, not as corruption. */
    write_idx(bad, 1, 0x803, 3, small_dims, small_px, sizeof small_px);
    CU_ASSERT_FATAL(truncate(bad, file_size(bad) / 2) == 0);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "truncated", "expected 60 bytes",
              "unexpected end of file");
    /* Cut only in the 8-byte gzip trailer: all pixels arrive but the CRC does not. */
    write_idx(bad, 1, 0x803, 3, small_dims, small_px, sizeof small_px);
    CU_ASSERT_FATAL(truncate(bad, file_size(bad) - 3) == 0);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "gzip stream ends early", "trailer");
}

static void test_trailing(void)
{
    char img[PATH_MAX], lab[PATH_MAX], bad[PATH_MAX];
    uint8_t more[sizeof small_px + 3];
    memcpy(more, small_px, sizeof small_px);
    memset(more + sizeof small_px, 0x0a, 3);
    write_small(tpath(img, "tg-images"), tpath(lab, "tg-labels"), 0);
    tpath(bad, "tg-bad");

    write_idx(bad, 0, 0x803, 3, small_dims, more, sizeof more);
    CHECK_ERR(load_bad(bad, lab), DLU_EFORMAT, bad, "3 trailing bytes", "60-byte");
    write_idx(bad, 1, 0x801, 1, small_ldims, more, SN + 1);
    CHECK_ERR(load_bad(img, bad), DLU_EFORMAT, bad, "1 trailing byte after", "5-byte");
}

static void test_corrupt_gzip(void)
{
    char img[PATH_MAX], lab[PATH_MAX], bad[PATH_MAX];
    write_small(tpath(img, "cg-images"), tpath(lab, "cg-labels"), 0);
    tpath(bad, "cg-bad.gz");

    /* A flipped CRC byte in the trailer: every pixel decodes, the check fails. */
    write_idx(bad, 1, 0x803, 3, small_dims, small_px, sizeof small_px);
    poke_byte(bad, -8, 0x01, 0);
    CHECK_ERR(load_bad(bad, lab), DLU_ECORRUPT, bad, "corrupt gzip", "incorrect data check");
    /* The first deflate block header (after the 10-byte gzip header) set to the
     * reserved block type 3 (BTYPE is bits 1-2). */
    write_idx(bad, 1, 0x801, 1, small_ldims, small_lab, sizeof small_lab);
    poke_byte(bad, 10, 0, 0x06);
    CHECK_ERR(load_bad(img, bad), DLU_ECORRUPT, bad, "corrupt gzip", "invalid block type");
}

static void test_label_mismatch(void)
{
    char img[PATH_MAX], lab[PATH_MAX], bad[PATH_MAX];
    write_small(tpath(img, "lm-images.gz"), tpath(lab, "lm-labels.gz"), 1);
    const uint32_t four[1] = {SN - 1};
    write_idx(tpath(bad, "lm-bad"), 0, 0x801, 1, four, small_lab, SN - 1);
    CHECK_ERR(load_bad(img, bad), DLU_ESHAPE, img, bad, "4 labels", "5 images");
}

static void test_wrong_dimensionality(void)
{
    char img[PATH_MAX], lab[PATH_MAX], bad[PATH_MAX];
    write_small(tpath(img, "wd-images"), tpath(lab, "wd-labels"), 0);
    /* The two files swapped. */
    CHECK_ERR(load_bad(img, img), DLU_ESHAPE, img, "labels file has 3 dimensions", "0x00000801");
    CHECK_ERR(load_bad(lab, lab), DLU_ESHAPE, lab, "images file has 1 dimension", "0x00000803");
    /* Labels as (N, 1), a common export mistake. */
    const uint32_t col[2] = {SN, 1};
    write_idx(tpath(bad, "wd-bad.gz"), 1, 0x802, 2, col, small_lab, sizeof small_lab);
    CHECK_ERR(load_bad(img, bad), DLU_ESHAPE, bad, "2 dimensions", "0x00000802", "0x00000801");
    /* Images with no dimensions at all. */
    write_bytes(bad, 0, "\0\0\x08\0", 4);
    CHECK_ERR(load_bad(bad, lab), DLU_ESHAPE, bad, "0 dimensions");
}

static void test_null_args(void)
{
    dlu_dataset *ds = NULL;
    CHECK_ERR(dlu_dataset_load_idx("a", "b", NULL), DLU_EINVAL, "out");
    CHECK_ERR(dlu_dataset_load_idx(NULL, "b", &ds), DLU_EINVAL, "images");
    CHECK_ERR(dlu_dataset_load_idx("a", NULL, &ds), DLU_EINVAL, "labels");
    CHECK_ERR(dlu_dataset_load_dir(NULL, "train", &ds), DLU_EINVAL, "dir");
    CHECK_ERR(dlu_dataset_gather(NULL, NULL, 0, NULL, NULL), DLU_EINVAL, "NULL");
    CU_ASSERT_PTR_NULL(ds);
    /* The accessors tolerate NULL, like free(). */
    int c = -1, h = -1, w = -1;
    dlu_dataset_shape(NULL, &c, &h, &w);
    CU_ASSERT(c == 0 && h == 0 && w == 0);
    CU_ASSERT_EQUAL(dlu_dataset_count(NULL), 0);
    CU_ASSERT_EQUAL(dlu_dataset_classes(NULL), 0);
    CU_ASSERT_PTR_NULL(dlu_dataset_images(NULL));
    CU_ASSERT_PTR_NULL(dlu_dataset_labels(NULL));
    dlu_dataset_free(NULL);
}

/* ---- the real data set --------------------------------------------------------------- */

static void check_fashion_split(const char *split, int64_t n, int first_label)
{
    dlu_dataset *ds = NULL;
    dlu_status st = dlu_dataset_load_dir(FASHION_DIR, split, &ds);
    CHECK_ERR(st, DLU_OK, "");
    if (st != DLU_OK)
        return;
    int c, h, w;
    dlu_dataset_shape(ds, &c, &h, &w);
    CU_ASSERT_EQUAL(dlu_dataset_count(ds), n);
    CU_ASSERT(c == 1 && h == 28 && w == 28);
    CU_ASSERT_EQUAL(dlu_dataset_classes(ds), 10);
    const uint8_t *lab = dlu_dataset_labels(ds);
    CU_ASSERT_EQUAL(lab[0], first_label);
    /* Fashion-MNIST is exactly balanced: N/10 samples per class. */
    int64_t hist[256] = {0};
    for (int64_t i = 0; i < n; i++)
        hist[lab[i]]++;
    int balanced = 1;
    for (int k = 0; k < 10; k++)
        balanced &= hist[k] == n / 10;
    CU_ASSERT(balanced);

    const int64_t idx[2] = {n - 1, 0};
    static float x[2 * 28 * 28];
    int32_t y[2];
    CU_ASSERT_EQUAL(dlu_dataset_gather(ds, idx, 2, x, y), DLU_OK);
    CU_ASSERT(y[0] == lab[n - 1] && y[1] == first_label);
    const uint8_t *img = dlu_dataset_images(ds);
    int bad = 0;
    for (int j = 0; j < 28 * 28; j++)
        bad += x[28 * 28 + j] != (float)img[j] / 255.0f;
    CU_ASSERT_EQUAL(bad, 0);
    dlu_dataset_free(ds);
}

static void test_fashion_mnist(void)
{
    struct stat sb;
    if (stat(FASHION_DIR, &sb) != 0) {
        printf("\n    note: %s not found, real-data check skipped ", FASHION_DIR);
        CU_PASS("Fashion-MNIST absent, check skipped");
        return;
    }
    check_fashion_split("train", 60000, 9);
    check_fashion_split("test", 10000, 9);
}

/* ---- main ---------------------------------------------------------------------------- */

int main(void)
{
    static const struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"round trip, plain 3-D", test_roundtrip_plain},
        {"round trip, gzip 4-D and plain-named-.gz", test_roundtrip_gz_4d},
        {"gather scales pixel/255 and copies labels", test_gather},
        {"gather index out of range", test_gather_range},
        {"load_dir: plain preferred, both splits", test_load_dir},
        {"missing file", test_missing_file},
        {"wrong magic", test_wrong_magic},
        {"unsupported element type", test_unsupported_type},
        {"zero and absurd dimensions", test_bad_dims},
        {"truncated plain and gzip", test_truncated},
        {"trailing garbage", test_trailing},
        {"corrupt gzip stream", test_corrupt_gzip},
        {"label count mismatch", test_label_mismatch},
        {"wrong dimensionality", test_wrong_dimensionality},
        {"NULL arguments", test_null_args},
        {"real Fashion-MNIST (if installed)", test_fashion_mnist},
    };

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite suite = CU_add_suite("data (IDX reader)", suite_init, suite_cleanup);
    if (!suite)
        goto registry_error;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(suite, tests[i].name, tests[i].fn))
            goto registry_error;

    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto registry_error;
    /* A failing suite_init/cleanup is not counted in the failures. */
    int failed = CU_get_number_of_failures() != 0 || CU_get_number_of_suites_failed() != 0;
    CU_cleanup_registry();
    return failed ? 1 : 0;

registry_error:
    fprintf(stderr, "test_data: CUnit: %s\n", CU_get_error_msg());
    CU_cleanup_registry();
    return 2;
}
