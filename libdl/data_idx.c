/* data_idx.c -- the IDX data-set reader behind include/dlu/data.h.
 *
 * Reads an MNIST-style pair of IDX files (images and labels, gzip-compressed or plain)
 * into one in-memory dlu_dataset, and gathers float minibatches from it. Everything the
 * header claims is checked against what the file holds, so a cut-off download, a
 * swapped file name or a bit flip fails with a message rather than training on garbage.
 * It is NOT a general IDX reader: only the unsigned-byte element type, images of 3 or 4
 * dimensions and labels of 1. Decompression is zlib's; there is no gzip code here. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* stat(); the autotools build may define _GNU_SOURCE */
#endif

#include "dlu/data.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "error.h"

/* gzread() counts in int; 64 MiB per call keeps the call count negligible. It is also
 * the first allocation for a payload, see read_payload(). */
#define CHUNK_NBYTES ((size_t)1 << 26)

/* Largest payload we accept. Far above any IDX data set in use (ImageNet-size sets are
 * not shipped as IDX) yet small enough that a corrupt header cannot ask for terabytes. */
#define MAX_PAYLOAD_NBYTES ((uint64_t)1 << 33)

#define IDX_TYPE_UBYTE 0x08

struct dlu_dataset {
    int64_t n;
    int c, h, w;
    int classes;
    uint8_t *images; /* (n, c, h, w) */
    uint8_t *labels; /* (n) */
    char *source;    /* images path, so gather errors can name the data set */
};

/* What one of the two files must look like; only used to check and to word messages. */
struct idx_kind {
    const char *role;   /* "images" or "labels" */
    int ndim_min, ndim_max;
    const char *expect; /* the accepted magics, as a message fragment */
};

static const struct idx_kind image_kind = {
    "images", 3, 4,
    "0x00000803 (IDX unsigned-byte images N,H,W) or 0x00000804 (IDX unsigned-byte images N,C,H,W)"};
static const struct idx_kind label_kind = {
    "labels", 1, 1, "0x00000801 (IDX unsigned-byte labels N)"};

struct idx {
    int ndim;
    uint32_t dims[4];
    uint8_t *data; /* dims[0] x ... x dims[ndim-1] bytes */
    size_t nbytes;
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The IDX element types other than ubyte, so that a float IDX file is reported as
 * "not supported" rather than as "not an IDX file". */
static const char *idx_type_name(int type)
{
    switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return NULL;
    }
}

/* "60000x28x28" for messages. */
static void format_dims(char *buf, size_t size, const uint32_t *dims, int ndim)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && at < size; i++) {
        int k = snprintf(buf + at, size - at, "%s%lu", i ? "x" : "", (unsigned long)dims[i]);
        if (k < 0)
            break;
        at += (size_t)k;
    }
}

/* zlib prefixes its message with the path given to gzopen(); we print the path
 * ourselves, so drop it rather than say it twice. */
static const char *gz_reason(gzFile gz, const char *path, int *zerr)
{
    const char *msg = gzerror(gz, zerr);
    size_t len = strlen(path);
    if (strncmp(msg, path, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ')
        msg += len + 2;
    return msg;
}

/* Turn the error zlib holds for gz into a status and message. */
static dlu_status gz_fail(gzFile gz, const char *path, const char *what)
{
    int zerr;
    const char *why = gz_reason(gz, path, &zerr);
    switch (zerr) {
    case Z_DATA_ERROR:
        return dlu__error(DLU_ECORRUPT,
                          "%s: corrupt gzip stream (zlib: %s), found while reading the %s; "
                          "expected intact gzip data or a plain IDX file",
                          path, why, what);
    case Z_MEM_ERROR:
        return dlu__error(DLU_ENOMEM, "%s: out of memory in zlib while reading the %s", path,
                          what);
    default:
        return dlu__error(DLU_EIO, "%s: read error in the %s: %s", path, what, why);
    }
}

/* Read up to n bytes. *got says how many arrived; fewer than n means the input ended,
 * and the caller words the truncation with what it knows. Fails only on errors. */
static dlu_status read_upto(gzFile gz, const char *path, const char *what, uint8_t *buf,
                            size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t ask = n - *got < CHUNK_NBYTES ? n - *got : CHUNK_NBYTES;
        int r = gzread(gz, buf + *got, (unsigned)ask);
        if (r < 0)
            return gz_fail(gz, path, what);
        *got += (size_t)r;
        if ((size_t)r < ask)
            break;
    }
    /* A short read is end of input, or a cut gzip stream (Z_BUF_ERROR, which the
     * truncation message reports); anything else is a real error. */
    int zerr;
    gzerror(gz, &zerr);
    if (zerr != Z_OK && zerr != Z_BUF_ERROR)
        return gz_fail(gz, path, what);
    return DLU_OK;
}

static dlu_status truncated(gzFile gz, const char *path, const char *what, size_t want,
                            size_t got)
{
    int zerr;
    const char *why = gz_reason(gz, path, &zerr);
    int cut = zerr == Z_BUF_ERROR;
    return dlu__error(DLU_EFORMAT, "%s: truncated %s: expected %zu bytes, got %zu%s%s%s", path,
                      what, want, got, cut ? " (gzip stream ends early, zlib: " : "",
                      cut ? why : "", cut ? ")" : "");
}

/* Read the payload, growing the buffer as bytes actually arrive: a corrupt header in a
 * 1 KiB file may announce 8 GiB, and that should fail fast without committing 8 GiB. */
static dlu_status read_payload(gzFile gz, const char *path, const char *what, size_t nbytes,
                               uint8_t **out)
{
    size_t cap = nbytes < CHUNK_NBYTES ? nbytes : CHUNK_NBYTES;
    size_t have = 0;
    uint8_t *data = malloc(cap);
    if (!data)
        return dlu__error(DLU_ENOMEM, "%s: cannot allocate %zu bytes for the %s", path, cap,
                          what);
    for (;;) {
        size_t got;
        dlu_status st = read_upto(gz, path, what, data + have, cap - have, &got);
        if (st != DLU_OK) {
            free(data);
            return st;
        }
        have += got;
        if (have < cap || cap == nbytes)
            break;
        size_t grown = cap > nbytes / 2 ? nbytes : 2 * cap;
        uint8_t *p = realloc(data, grown);
        if (!p) {
            free(data);
            return dlu__error(DLU_ENOMEM, "%s: cannot allocate %zu bytes for the %s", path,
                              grown, what);
        }
        data = p;
        cap = grown;
    }
    if (have < nbytes) {
        free(data);
        return truncated(gz, path, what, nbytes, have);
    }
    *out = data;
    return DLU_OK;
}

/* After the payload the file must end, and a gzip stream must end cleanly (its trailer
 * carries the CRC, so a stream cut just after the data is still incomplete). */
static dlu_status expect_end(gzFile gz, const char *path, const char *what, size_t nbytes)
{
    uint8_t buf[4096];
    size_t extra = 0;
    /* Count trailing bytes, but stop at 64 KiB: enough to tell "a stray newline" from
     * "two files concatenated" without reading gigabytes of garbage. */
    while (extra < 65536) {
        int r = gzread(gz, buf, sizeof buf);
        if (r < 0)
            return gz_fail(gz, path, what);
        if (r == 0)
            break;
        extra += (size_t)r;
    }
    if (extra > 0)
        return dlu__error(DLU_EFORMAT,
                          "%s: %s%zu trailing byte%s after the %zu-byte %s; expected the file "
                          "to end where its header says",
                          path, extra >= 65536 ? "at least " : "", extra, extra == 1 ? "" : "s",
                          nbytes, what);
    int zerr;
    const char *why = gz_reason(gz, path, &zerr);
    if (zerr == Z_BUF_ERROR)
        return dlu__error(DLU_EFORMAT,
                          "%s: gzip stream ends early after the %zu-byte %s (zlib: %s); expected "
                          "the gzip trailer with its CRC",
                          path, nbytes, what, why);
    if (zerr != Z_OK)
        return gz_fail(gz, path, what);
    return DLU_OK;
}

/* Check the header of one file and read its payload into out->data. */
static dlu_status read_idx_open(gzFile gz, const char *path, const struct idx_kind *kind,
                                struct idx *out)
{
    uint8_t head[16];
    size_t got;
    char what[96];

    snprintf(what, sizeof what, "IDX header (magic)");
    DLU__TRY(read_upto(gz, path, what, head, 4, &got));
    if (got < 4)
        return truncated(gz, path, what, 4, got);

    uint32_t magic = be32(head);
    int type = head[2], ndim = head[3];
    if (head[0] != 0 || head[1] != 0 || !idx_type_name(type))
        return dlu__error(DLU_EFORMAT, "%s: wrong magic 0x%08lx for an IDX %s file, expected %s",
                          path, (unsigned long)magic, kind->role, kind->expect);
    if (type != IDX_TYPE_UBYTE)
        return dlu__error(DLU_EUNSUPPORTED,
                          "%s: IDX element type 0x%02x (%s, magic 0x%08lx) is not supported for "
                          "%s, expected 0x08 (unsigned byte): magic %s",
                          path, type, idx_type_name(type), (unsigned long)magic, kind->role,
                          kind->expect);
    if (ndim < kind->ndim_min || ndim > kind->ndim_max)
        return dlu__error(DLU_ESHAPE,
                          "%s: IDX %s file has %d dimension%s (magic 0x%08lx), expected %s", path,
                          kind->role, ndim, ndim == 1 ? "" : "s", (unsigned long)magic,
                          kind->expect);

    snprintf(what, sizeof what, "IDX header (%d dimension sizes)", ndim);
    DLU__TRY(read_upto(gz, path, what, head, 4 * (size_t)ndim, &got));
    if (got < 4 * (size_t)ndim)
        return truncated(gz, path, what, 4 * (size_t)ndim, got);

    out->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        out->dims[i] = be32(head + 4 * i);
    char shape[64];
    format_dims(shape, sizeof shape, out->dims, ndim);

    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = out->dims[i];
        if (d == 0)
            return dlu__error(DLU_EFORMAT,
                              "%s: IDX %s header has dimension %d of size 0 (shape %s), expected "
                              "every size >= 1",
                              path, kind->role, i, shape);
        /* Per-sample sizes are ints in the API (dlu_dataset_shape). */
        if (i > 0 && d > INT_MAX)
            return dlu__error(DLU_ERANGE,
                              "%s: IDX %s header has dimension %d of size %lu (shape %s), expected "
                              "at most %d",
                              path, kind->role, i, (unsigned long)d, shape, INT_MAX);
        /* Divide rather than multiply so the check itself cannot overflow. */
        if (d > MAX_PAYLOAD_NBYTES / total || (uint64_t)d * total > SIZE_MAX)
            return dlu__error(DLU_ERANGE,
                              "%s: IDX %s header announces shape %s, more than the limit of %llu "
                              "bytes; expected a plausible data set (corrupt header?)",
                              path, kind->role, shape, (unsigned long long)MAX_PAYLOAD_NBYTES);
        total *= d;
    }
    out->nbytes = (size_t)total;

    snprintf(what, sizeof what, "%s data (shape %s)", kind->role, shape);
    DLU__TRY(read_payload(gz, path, what, out->nbytes, &out->data));
    dlu_status st = expect_end(gz, path, what, out->nbytes);
    if (st != DLU_OK) {
        free(out->data);
        out->data = NULL;
    }
    return st;
}

static dlu_status read_idx(const char *path, const struct idx_kind *kind, struct idx *out)
{
    memset(out, 0, sizeof *out);
    /* gzopen() leaves open()'s errno behind; 0 means zlib itself ran out of memory. */
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return dlu__error(errno ? DLU_EIO : DLU_ENOMEM, "%s: cannot open IDX %s file: %s", path,
                          kind->role, errno ? strerror(errno) : "out of memory in zlib");
    /* Only a speed hint (zlib's default 8 KiB input buffer means many small read()s);
     * failure leaves the default, which still works. */
    (void)gzbuffer(gz, 1u << 17);
    dlu_status st = read_idx_open(gz, path, kind, out);
    /* A read-only close has nothing left to report that the reads did not. */
    gzclose(gz);
    return st;
}

dlu_status dlu_dataset_load_idx(const char *images_path, const char *labels_path,
                                dlu_dataset **out)
{
    if (!out)
        return dlu__error(DLU_EINVAL, "dlu_dataset_load_idx: out is NULL, expected a pointer "
                                      "to receive the data set");
    *out = NULL;
    if (!images_path || !labels_path)
        return dlu__error(DLU_EINVAL, "dlu_dataset_load_idx: %s path is NULL, expected a file name",
                          images_path ? "labels" : "images");

    struct idx img, lab;
    DLU__TRY(read_idx(images_path, &image_kind, &img));
    dlu_status st = read_idx(labels_path, &label_kind, &lab);
    if (st != DLU_OK) {
        free(img.data);
        return st;
    }
    if (lab.dims[0] != img.dims[0]) {
        st = dlu__error(DLU_ESHAPE, "%s has %lu labels but %s has %lu images, expected one label "
                                    "per image",
                        labels_path, (unsigned long)lab.dims[0], images_path,
                        (unsigned long)img.dims[0]);
        goto fail;
    }

    dlu_dataset *ds = calloc(1, sizeof *ds);
    char *source = malloc(strlen(images_path) + 1);
    if (!ds || !source) {
        free(ds);
        free(source);
        st = dlu__error(DLU_ENOMEM, "%s: out of memory for the data set handle", images_path);
        goto fail;
    }
    strcpy(source, images_path);

    ds->n = img.dims[0];
    ds->c = img.ndim == 4 ? (int)img.dims[1] : 1;
    ds->h = (int)img.dims[img.ndim - 2];
    ds->w = (int)img.dims[img.ndim - 1];
    ds->images = img.data;
    ds->labels = lab.data;
    ds->source = source;
    int maxlab = 0;
    for (int64_t i = 0; i < ds->n; i++)
        if (ds->labels[i] > maxlab)
            maxlab = ds->labels[i];
    ds->classes = maxlab + 1;
    *out = ds;
    return DLU_OK;

fail:
    free(img.data);
    free(lab.data);
    return st;
}

/* dir/<prefix>-<stem>, or the .gz beside it when the plain file is absent. */
static dlu_status find_file(const char *dir, const char *prefix, const char *stem,
                            const char *split, char **out)
{
    size_t dlen = strlen(dir);
    const char *sep = dlen > 0 && dir[dlen - 1] == '/' ? "" : "/";
    size_t size = dlen + 1 + strlen(prefix) + 1 + strlen(stem) + 3 + 1;
    char *path = malloc(size);
    if (!path)
        return dlu__error(DLU_ENOMEM, "%s: out of memory for a file name", dir);

    struct stat sb;
    snprintf(path, size, "%s%s%s-%s", dir, sep, prefix, stem);
    if (stat(path, &sb) == 0) {
        *out = path;
        return DLU_OK;
    }
    int plain_errno = errno;
    strcat(path, ".gz");
    if (stat(path, &sb) == 0) {
        *out = path;
        return DLU_OK;
    }
    dlu_status st = dlu__error(DLU_EIO,
                               "%s: no %s file for split \"%s\": neither %s-%s nor %s-%s.gz can be "
                               "found there (%s)",
                               dir, stem, split, prefix, stem, prefix, stem, strerror(plain_errno));
    free(path);
    return st;
}

dlu_status dlu_dataset_load_dir(const char *dir, const char *split, dlu_dataset **out)
{
    if (!out)
        return dlu__error(DLU_EINVAL, "dlu_dataset_load_dir: out is NULL, expected a pointer "
                                      "to receive the data set");
    *out = NULL;
    if (!dir || !split)
        return dlu__error(DLU_EINVAL, "dlu_dataset_load_dir: %s is NULL", dir ? "split" : "dir");
    const char *prefix = strcmp(split, "train") == 0 ? "train"
                         : strcmp(split, "test") == 0 ? "t10k"
                                                      : NULL;
    if (!prefix)
        return dlu__error(DLU_EINVAL, "%s: unknown split \"%s\", expected \"train\" or \"test\"",
                          dir, split);

    char *images = NULL, *labels = NULL;
    dlu_status st = find_file(dir, prefix, "images-idx3-ubyte", split, &images);
    if (st == DLU_OK)
        st = find_file(dir, prefix, "labels-idx1-ubyte", split, &labels);
    if (st == DLU_OK)
        st = dlu_dataset_load_idx(images, labels, out);
    free(images);
    free(labels);
    return st;
}

void dlu_dataset_free(dlu_dataset *ds)
{
    if (!ds)
        return;
    free(ds->images);
    free(ds->labels);
    free(ds->source);
    free(ds);
}

int64_t dlu_dataset_count(const dlu_dataset *ds) { return ds ? ds->n : 0; }

void dlu_dataset_shape(const dlu_dataset *ds, int *c, int *h, int *w)
{
    if (c)
        *c = ds ? ds->c : 0;
    if (h)
        *h = ds ? ds->h : 0;
    if (w)
        *w = ds ? ds->w : 0;
}

int dlu_dataset_classes(const dlu_dataset *ds) { return ds ? ds->classes : 0; }

const uint8_t *dlu_dataset_images(const dlu_dataset *ds) { return ds ? ds->images : NULL; }

const uint8_t *dlu_dataset_labels(const dlu_dataset *ds) { return ds ? ds->labels : NULL; }

dlu_status dlu_dataset_gather(const dlu_dataset *ds, const int64_t *idx, int n, float *x,
                              int32_t *y)
{
    if (!ds)
        return dlu__error(DLU_EINVAL, "dlu_dataset_gather: data set is NULL");
    if (n < 0)
        return dlu__error(DLU_EINVAL, "gather from %s: batch size %d, expected >= 0", ds->source,
                          n);
    if (n > 0 && (!idx || !x || !y))
        return dlu__error(DLU_EINVAL, "gather from %s: %s is NULL with batch size %d", ds->source,
                          !idx ? "idx" : !x ? "x" : "y", n);
    /* Check everything first so a bad batch leaves x and y as they were. */
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= ds->n)
            return dlu__error(DLU_ERANGE,
                              "gather from %s: idx[%d] = %lld is out of range, expected 0 <= idx "
                              "< %lld (samples in the data set)",
                              ds->source, i, (long long)idx[i], (long long)ds->n);

    /* A true division, not a multiply by 1/255: it is the documented contract, and it
     * makes 255 map to exactly 1.0f. Computed once per byte value into a table. */
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = (float)v / 255.0f;
    size_t per = (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = ds->images + (size_t)idx[i] * per; /* (C, H, W) */
        float *dst = x + (size_t)i * per;                       /* (C, H, W) */
        for (size_t j = 0; j < per; j++)
            dst[j] = lut[src[j]];
        y[i] = ds->labels[idx[i]];
    }
    return DLU_OK;
}
