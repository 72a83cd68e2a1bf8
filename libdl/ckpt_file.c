/* ckpt_file.c -- reading and writing the checkpoint container (layout in ckpt_file.h).
 *
 * Writing streams the records through stdio and the hasher into a temp file and renames
 * it into place; reading streams the file back, checking every declared length against
 * the bytes actually left before allocating, then compares the checksum. This file knows
 * nothing about what the records mean; that is the training code's business. It uses
 * POSIX (open, fsync, rename, fstat) because atomic replacement is not expressible in
 * ISO C. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "ckpt_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "hash.h"

static const uint8_t magic[8] = {'D', 'L', 'U', 'C', 'K', 'P', 'T', '\n'};

enum {
    HEADER_NBYTES = 16,                           /* magic + version + count */
    MIN_RECORD_NBYTES = 2 + 1 + 8,                /* shortest name, empty payload */
    MIN_FILE_NBYTES = HEADER_NBYTES + DLU__SHA256_NBYTES,
};

struct record {
    char *name;       /* NUL-terminated copy; its length is name_len */
    size_t name_len;  /* 1..DLU__CKPT_NAME_MAX */
    uint8_t *data;    /* (nbytes) malloc'd, never NULL, so get() can hand out a valid pointer */
    uint64_t nbytes;
};

struct dlu__ckpt {
    struct record *rec; /* (n) in file / insertion order */
    size_t n, cap;
    char *path;         /* the file it was loaded from, for messages; NULL if built in memory */
};

/* ---- little-endian encoding, spelled out so the host's byte order never matters ---- */

static void put_le(uint8_t *p, uint64_t v, int nbytes)
{
    for (int i = 0; i < nbytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int nbytes)
{
    uint64_t v = 0;
    for (int i = 0; i < nbytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- the in-memory list ---- */

static const char *where(const dlu__ckpt *c)
{
    return c->path != NULL ? c->path : "(in-memory checkpoint)";
}

static char *copy_str(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

static const struct record *find(const dlu__ckpt *c, const char *name, size_t name_len)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->rec[i].name_len == name_len && memcmp(c->rec[i].name, name, name_len) == 0)
            return &c->rec[i];
    return NULL;
}

/* Make room for one more record; leaves c unchanged on failure. */
static dlu_status reserve_one(dlu__ckpt *c)
{
    if (c->n < c->cap)
        return DLU_OK;
    size_t cap = c->cap ? 2 * c->cap : 16;
    struct record *r = realloc(c->rec, cap * sizeof *r);
    if (r == NULL)
        return dlu__error(DLU_ENOMEM, "%s: cannot grow the record list to %zu entries", where(c), cap);
    c->rec = r;
    c->cap = cap;
    return DLU_OK;
}

dlu_status dlu__ckpt_new(dlu__ckpt **out)
{
    *out = calloc(1, sizeof **out);
    if (*out == NULL)
        return dlu__error(DLU_ENOMEM, "checkpoint: cannot allocate %zu bytes", sizeof **out);
    return DLU_OK;
}

void dlu__ckpt_free(dlu__ckpt *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->rec[i].name);
        free(c->rec[i].data);
    }
    free(c->rec);
    free(c->path);
    free(c);
}

dlu_status dlu__ckpt_put(dlu__ckpt *c, const char *name, const void *data, uint64_t nbytes)
{
    if (c == NULL || name == NULL)
        return dlu__error(DLU_EINVAL, "checkpoint put: %s is NULL; expected a checkpoint and a name",
                          c == NULL ? "checkpoint" : "name");
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > DLU__CKPT_NAME_MAX)
        return dlu__error(DLU_EINVAL,
                          "%s: record name '%.40s%s' is %zu bytes long; expected 1 to %d bytes",
                          where(c), name, name_len > 40 ? "..." : "", name_len, DLU__CKPT_NAME_MAX);
    if (data == NULL && nbytes > 0)
        return dlu__error(DLU_EINVAL, "%s: record '%s' has NULL data for %" PRIu64
                          " bytes; expected a buffer", where(c), name, nbytes);
#if UINT64_MAX > SIZE_MAX
    if (nbytes > SIZE_MAX)
        return dlu__error(DLU_EINVAL, "%s: record '%s' is %" PRIu64 " bytes; more than this host can address",
                          where(c), name, nbytes);
#endif
    if (find(c, name, name_len) != NULL)
        return dlu__error(DLU_EINVAL, "%s: duplicate record name '%s'; expected each name once",
                          where(c), name);
    if (c->n >= UINT32_MAX)
        return dlu__error(DLU_EINVAL, "%s: too many records; the format holds at most %" PRIu32,
                          where(c), UINT32_MAX);
    DLU__TRY(reserve_one(c));

    struct record r = {.name = copy_str(name, name_len), .name_len = name_len,
                       .data = malloc(nbytes ? (size_t)nbytes : 1), .nbytes = nbytes};
    if (r.name == NULL || r.data == NULL) {
        free(r.name);
        free(r.data);
        return dlu__error(DLU_ENOMEM, "%s: cannot allocate %" PRIu64 " bytes for record '%s'",
                          where(c), nbytes, name);
    }
    if (nbytes > 0)
        memcpy(r.data, data, (size_t)nbytes);
    c->rec[c->n++] = r;
    return DLU_OK;
}

dlu_status dlu__ckpt_get(const dlu__ckpt *c, const char *name, const void **data, uint64_t *nbytes)
{
    *data = NULL;
    *nbytes = 0;
    if (c == NULL || name == NULL)
        return dlu__error(DLU_EINVAL, "checkpoint get: %s is NULL; expected a checkpoint and a name",
                          c == NULL ? "checkpoint" : "name");
    const struct record *r = find(c, name, strlen(name));
    if (r == NULL)
        return dlu__error(DLU_EFORMAT, "%s: checkpoint has no record '%s'", where(c), name);
    *data = r->data;
    *nbytes = r->nbytes;
    return DLU_OK;
}

dlu_status dlu__ckpt_get_exact(const dlu__ckpt *c, const char *name, void *dst, uint64_t nbytes)
{
    const void *src;
    uint64_t found;
    DLU__TRY(dlu__ckpt_get(c, name, &src, &found));
    if (found != nbytes)
        return dlu__error(DLU_ESHAPE, "%s: record '%s' holds %" PRIu64 " bytes; expected %" PRIu64,
                          where(c), name, found, nbytes);
    if (nbytes > 0)
        memcpy(dst, src, (size_t)nbytes);
    return DLU_OK;
}

/* ---- saving ---- */

struct writer {
    FILE *f;
    dlu__sha256 *h;
};

/* Write bytes and hash them. Returns 0, or -1 with errno set by stdio. */
static int emit(struct writer *w, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (fwrite(p, 1, n, w->f) != n)
        return -1;
    dlu__sha256_update(w->h, p, n);
    return 0;
}

static int emit_all(struct writer *w, const dlu__ckpt *c)
{
    uint8_t b[HEADER_NBYTES];
    memcpy(b, magic, sizeof magic);
    put_le(b + 8, DLU__CKPT_VERSION, 4);
    put_le(b + 12, c->n, 4);
    if (emit(w, b, HEADER_NBYTES) != 0)
        return -1;
    for (size_t i = 0; i < c->n; i++) {
        const struct record *r = &c->rec[i];
        put_le(b, r->name_len, 2);
        if (emit(w, b, 2) != 0 || emit(w, r->name, r->name_len) != 0)
            return -1;
        put_le(b, r->nbytes, 8);
        if (emit(w, b, 8) != 0 || emit(w, r->data, (size_t)r->nbytes) != 0)
            return -1;
    }
    uint8_t digest[DLU__SHA256_NBYTES];
    dlu__sha256_final(w->h, digest);
    return fwrite(digest, 1, sizeof digest, w->f) == sizeof digest ? 0 : -1;
}

/* fsync the directory holding `path`, so that the rename is durable, not just the data. */
static dlu_status sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL ? copy_str(".", 1)
              : slash == path ? copy_str("/", 1)
                              : copy_str(path, (size_t)(slash - path));
    if (dir == NULL)
        return dlu__error(DLU_ENOMEM, "%s: saved, but cannot allocate the directory name to sync it", path);
    dlu_status s = DLU_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP)) {
        /* EINVAL/ENOTSUP: this filesystem does not sync directories; nothing more to do. */
        s = dlu__error(DLU_EIO, "%s: the new checkpoint is in place, but syncing directory '%s' "
                       "failed (%s), so it may not survive a power loss", path, dir, strerror(errno));
    }
    if (fd >= 0)
        close(fd);
    free(dir);
    return s;
}

dlu_status dlu__ckpt_save(const dlu__ckpt *c, const char *path)
{
    if (c == NULL || path == NULL || path[0] == '\0')
        return dlu__error(DLU_EINVAL, "checkpoint save: %s; expected a checkpoint and a file path",
                          c == NULL ? "checkpoint is NULL" : "path is NULL or empty");
    size_t len = strlen(path);
    if (path[len - 1] == '/')
        return dlu__error(DLU_EINVAL, "%s: path ends in '/'; expected a file name", path);

    /* Same directory as the target, so that rename() cannot cross filesystems. */
    size_t tmp_size = len + 32;
    char *tmp = malloc(tmp_size);
    if (tmp == NULL)
        return dlu__error(DLU_ENOMEM, "%s: cannot allocate the temp file name", path);
    snprintf(tmp, tmp_size, "%s.tmp", path);

    struct writer w = {NULL, NULL};
    dlu_status s = dlu__sha256_new(&w.h);
    if (s != DLU_OK) {
        free(tmp);
        return dlu__error_prefix(s, "%s: ", path);
    }

    /* O_TRUNC, not O_EXCL: a temp left by a crashed run with the same pid (common in
     * containers) must not block every later save. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        s = dlu__error(DLU_EIO, "%s: cannot create temp file '%s' (%s); expected a writable directory",
                       path, tmp, strerror(errno));
        goto fail_nofile;
    }
    w.f = fdopen(fd, "wb");
    if (w.f == NULL) {
        s = dlu__error(DLU_EIO, "%s: cannot open a stream on '%s' (%s)", path, tmp, strerror(errno));
        close(fd);
        goto fail;
    }
    if (emit_all(&w, c) != 0 || fflush(w.f) != 0) {
        s = dlu__error(DLU_EIO, "%s: writing temp file '%s' failed (%s)", path, tmp, strerror(errno));
        goto fail;
    }
    if (fsync(fileno(w.f)) != 0) {
        s = dlu__error(DLU_EIO, "%s: fsync of temp file '%s' failed (%s)", path, tmp, strerror(errno));
        goto fail;
    }
    int closed = fclose(w.f);
    w.f = NULL; /* fclose releases the stream even when it fails */
    if (closed != 0) {
        s = dlu__error(DLU_EIO, "%s: closing temp file '%s' failed (%s)", path, tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        s = dlu__error(DLU_EIO, "%s: cannot rename '%s' over it (%s); the previous file, if any, is unchanged",
                       path, tmp, strerror(errno));
        goto fail;
    }
    free(tmp);
    dlu__sha256_free(w.h);
    return sync_dir(path);

fail:
    if (w.f != NULL)
        fclose(w.f);
    unlink(tmp);
fail_nofile:
    free(tmp);
    dlu__sha256_free(w.h);
    return s;
}

/* ---- loading ---- */

struct reader {
    FILE *f;
    const char *path;
    uint64_t off;      /* bytes consumed so far */
    uint64_t body_end; /* where the checksum starts: file size - 32 */
    dlu__sha256 *h;
};

/* Bytes left before the checksum. */
static uint64_t left(const struct reader *r) { return r->body_end - r->off; }

/* Read `n` bytes of `what` that must lie before the checksum, and hash them. */
static dlu_status take(struct reader *r, void *p, size_t n, const char *what)
{
    if (n > left(r))
        return dlu__error(DLU_ECORRUPT, "%s: %s at offset %" PRIu64 " needs %zu bytes, but only %" PRIu64
                          " remain before the checksum (file is truncated or corrupt)",
                          r->path, what, r->off, n, left(r));
    if (n > 0 && fread(p, 1, n, r->f) != n) {
        if (ferror(r->f))
            return dlu__error(DLU_EIO, "%s: read error at offset %" PRIu64 " (%s)", r->path, r->off,
                              strerror(errno));
        return dlu__error(DLU_ECORRUPT, "%s: file ended at offset %" PRIu64 " while reading %s; "
                          "expected %zu more bytes (was it truncated while loading?)",
                          r->path, r->off, what, n);
    }
    dlu__sha256_update(r->h, p, n);
    r->off += n;
    return DLU_OK;
}

/* Checks that need more than the bytes in front of the reader: magic and version first,
 * since a future version may lay out everything after them differently. */
static dlu_status read_header(struct reader *r, uint64_t size, uint32_t *count)
{
    uint8_t b[HEADER_NBYTES];
    size_t got = fread(b, 1, size < HEADER_NBYTES ? (size_t)size : HEADER_NBYTES, r->f);
    if (ferror(r->f))
        return dlu__error(DLU_EIO, "%s: read error in the header (%s)", r->path, strerror(errno));
    size_t nmagic = got < sizeof magic ? got : sizeof magic;
    if (got == 0 || memcmp(b, magic, nmagic) != 0) {
        char hex[2 * sizeof magic + 1] = "";
        for (size_t i = 0; i < nmagic; i++)
            snprintf(hex + 2 * i, 3, "%02x", b[i]);
        return dlu__error(DLU_EFORMAT, "%s: not an OpenDLU checkpoint (starts with %s%s; expected "
                          "magic \"DLUCKPT\\n\" = 444c55434b50540a)",
                          r->path, got ? "bytes " : "nothing, file is empty", hex);
    }
    if (got >= 12) {
        uint32_t version = (uint32_t)get_le(b + 8, 4);
        if (version != DLU__CKPT_VERSION)
            return dlu__error(DLU_EVERSION, "%s: checkpoint format version %" PRIu32 "; this build "
                              "reads version %d only", r->path, version, DLU__CKPT_VERSION);
    }
    if (size < MIN_FILE_NBYTES)
        return dlu__error(DLU_ECORRUPT, "%s: file is %" PRIu64 " bytes; a checkpoint has at least %d "
                          "(header and checksum), so it is truncated", r->path, size, MIN_FILE_NBYTES);
    dlu__sha256_update(r->h, b, HEADER_NBYTES);
    r->off = HEADER_NBYTES;
    *count = (uint32_t)get_le(b + 12, 4);
    if (*count > left(r) / MIN_RECORD_NBYTES)
        return dlu__error(DLU_ECORRUPT, "%s: header declares %" PRIu32 " records (offset 12), which need "
                          "at least %" PRIu64 " bytes, but only %" PRIu64 " remain before the checksum "
                          "(file is truncated or corrupt)", r->path, *count,
                          (uint64_t)*count * MIN_RECORD_NBYTES, left(r));
    return DLU_OK;
}

static dlu_status read_record(struct reader *r, dlu__ckpt *c, uint32_t index)
{
    uint8_t b[8];
    char name[DLU__CKPT_NAME_MAX + 1];
    uint64_t at = r->off;

    DLU__TRY(take(r, b, 2, "a record's name length"));
    size_t name_len = (size_t)get_le(b, 2);
    if (name_len == 0 || name_len > DLU__CKPT_NAME_MAX)
        return dlu__error(DLU_EFORMAT, "%s: record %" PRIu32 " at offset %" PRIu64 " has name length %zu; "
                          "expected 1 to %d", r->path, index, at, name_len, DLU__CKPT_NAME_MAX);
    DLU__TRY(take(r, name, name_len, "a record name"));
    name[name_len] = '\0';
    if (memchr(name, '\0', name_len) != NULL)
        return dlu__error(DLU_EFORMAT, "%s: record %" PRIu32 " at offset %" PRIu64 " has a NUL byte in "
                          "its name; expected none", r->path, index, at);

    DLU__TRY(take(r, b, 8, "a record's payload length"));
    uint64_t nbytes = get_le(b, 8);
    /* The one check that keeps a damaged length from becoming a huge allocation. */
    if (nbytes > left(r))
        return dlu__error(DLU_ECORRUPT, "%s: record '%s' at offset %" PRIu64 " declares %" PRIu64
                          " payload bytes, but only %" PRIu64 " remain before the checksum (file is "
                          "truncated or corrupt)", r->path, name, at, nbytes, left(r));

    struct record rec = {.name = copy_str(name, name_len), .name_len = name_len,
                         .data = malloc(nbytes ? (size_t)nbytes : 1), .nbytes = nbytes};
    dlu_status s = DLU_OK;
    if (rec.name == NULL || rec.data == NULL)
        s = dlu__error(DLU_ENOMEM, "%s: cannot allocate %" PRIu64 " bytes for record '%s'", r->path,
                       nbytes, name);
    else
        s = take(r, rec.data, (size_t)nbytes, "a record payload");
    if (s != DLU_OK) {
        free(rec.name);
        free(rec.data);
        return s;
    }
    c->rec[c->n++] = rec; /* room was reserved for all records up front */
    return DLU_OK;
}

static int cmp_record_name(const void *a, const void *b)
{
    const struct record *x = *(const struct record *const *)a;
    const struct record *y = *(const struct record *const *)b;
    return strcmp(x->name, y->name);
}

/* Sort a copy of the index rather than searching pairwise: a crafted file may hold
 * millions of tiny records, and a quadratic check would hang the loader. */
static dlu_status check_unique(const dlu__ckpt *c)
{
    if (c->n < 2)
        return DLU_OK;
    const struct record **idx = malloc(c->n * sizeof *idx);
    if (idx == NULL)
        return dlu__error(DLU_ENOMEM, "%s: cannot allocate the name index (%zu records)", c->path, c->n);
    for (size_t i = 0; i < c->n; i++)
        idx[i] = &c->rec[i];
    qsort(idx, c->n, sizeof *idx, cmp_record_name);
    dlu_status s = DLU_OK;
    for (size_t i = 1; i < c->n && s == DLU_OK; i++)
        if (strcmp(idx[i - 1]->name, idx[i]->name) == 0)
            s = dlu__error(DLU_EFORMAT, "%s: record name '%s' appears more than once; expected "
                           "unique names", c->path, idx[i]->name);
    free(idx);
    return s;
}

static dlu_status load_from(struct reader *r, dlu__ckpt *c)
{
    struct stat st;
    if (fstat(fileno(r->f), &st) != 0)
        return dlu__error(DLU_EIO, "%s: cannot stat (%s)", r->path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return dlu__error(DLU_EIO, "%s: not a regular file; expected a checkpoint file", r->path);
    uint64_t size = (uint64_t)st.st_size;
    r->body_end = size >= DLU__SHA256_NBYTES ? size - DLU__SHA256_NBYTES : 0;

    uint32_t count = 0;
    DLU__TRY(read_header(r, size, &count));
    if (count > 0) {
        c->rec = malloc((size_t)count * sizeof *c->rec);
        if (c->rec == NULL)
            return dlu__error(DLU_ENOMEM, "%s: cannot allocate the list of %" PRIu32 " records",
                              r->path, count);
        c->cap = count;
    }
    for (uint32_t i = 0; i < count; i++)
        DLU__TRY(read_record(r, c, i));
    if (left(r) != 0)
        return dlu__error(DLU_EFORMAT, "%s: %" PRIu64 " unexpected bytes after the last of %" PRIu32
                          " records at offset %" PRIu64 "; expected the checksum to start there",
                          r->path, left(r), count, r->off);

    uint8_t stored[DLU__SHA256_NBYTES], computed[DLU__SHA256_NBYTES];
    if (fread(stored, 1, sizeof stored, r->f) != sizeof stored)
        return dlu__error(ferror(r->f) ? DLU_EIO : DLU_ECORRUPT, "%s: cannot read the checksum at offset %"
                          PRIu64 " (%s)", r->path, r->off, ferror(r->f) ? strerror(errno) : "file ended");
    dlu__sha256_final(r->h, computed);
    if (memcmp(stored, computed, sizeof stored) != 0) {
        char hs[DLU__SHA256_HEX_NBYTES], hc[DLU__SHA256_HEX_NBYTES];
        dlu__sha256_hex(stored, hs);
        dlu__sha256_hex(computed, hc);
        return dlu__error(DLU_ECORRUPT, "%s: checksum mismatch (file is corrupt or was truncated): "
                          "stored %s, computed %s", r->path, hs, hc);
    }
    /* Only now: with a good checksum, a duplicate is a writer bug, not damage. */
    return check_unique(c);
}

dlu_status dlu__ckpt_load(const char *path, dlu__ckpt **out)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return dlu__error(DLU_EINVAL, "checkpoint load: path is NULL or empty; expected a file path");

    dlu__ckpt *c;
    DLU__TRY(dlu__ckpt_new(&c));
    c->path = copy_str(path, strlen(path));
    if (c->path == NULL) {
        dlu__ckpt_free(c);
        return dlu__error(DLU_ENOMEM, "%s: cannot allocate the path copy", path);
    }
    struct reader r = {.path = c->path};
    dlu_status s = dlu__sha256_new(&r.h);
    if (s != DLU_OK) {
        dlu__ckpt_free(c);
        return dlu__error_prefix(s, "%s: ", path);
    }
    r.f = fopen(path, "rb");
    if (r.f == NULL)
        s = dlu__error(DLU_EIO, "%s: cannot open checkpoint (%s)", path, strerror(errno));
    else {
        s = load_from(&r, c);
        fclose(r.f);
    }
    dlu__sha256_free(r.h);
    if (s != DLU_OK) {
        dlu__ckpt_free(c);
        return s;
    }
    *out = c;
    return DLU_OK;
}
