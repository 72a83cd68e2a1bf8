/* ckpt_file.h -- the checkpoint container: named binary records in one checksummed file.
 *
 * A dlu__ckpt is an in-memory, ordered list of (name, bytes) records. Training code puts
 * parameters, optimizer state, RNG state, counters, the data permutation and a small
 * text/JSON header into it and saves it; resuming loads it back and takes records out by
 * name. Saving is atomic: a reader sees either the old file or the complete new one.
 *
 * It is NOT a tensor format: records are opaque bytes, and dtype, shape and byte order of
 * their contents are the caller's business (record them in the header record). It is NOT
 * tamper-proof: the SHA-256 detects truncation and accidental damage, not a deliberate
 * edit. It keeps whole records in memory; it does not stream or memory-map.
 *
 * File layout, format version 1. All integers are unsigned little-endian, written byte by
 * byte so the file is the same on every host. Offsets in bytes.
 *
 *     off  size  field
 *       0     8  magic "DLUCKPT\n" (44 4c 55 43 4b 50 54 0a)
 *       8     4  u32 format version = 1
 *      12     4  u32 record count N
 *      16        N records, in the order they were put:
 *                   2  u16 name length L, 1..255
 *                   L  name bytes (no NUL, no terminator)
 *                   8  u64 payload length P
 *                   P  payload bytes
 *     end-32    32  SHA-256 of every byte before it (offsets 0 .. end-33)
 *
 * Names are unique within a file. Nothing may follow the checksum. An empty checkpoint is
 * 48 bytes. A reader rejects any other version: a new layout bumps the version number.
 *
 * Errors: functions return a dlu_status and record a message (dlu_last_error()) that names
 * the file, the record or byte offset, what was found and what was expected.
 *
 * Thread safety: a dlu__ckpt must not be modified (put, free) while another thread uses
 * it; concurrent reads (get, get_exact, save) of one object are safe. Two saves to the
 * same path from one process at the same time are not safe (they share a temp name). */
#ifndef DLU_CKPT_FILE_H
#define DLU_CKPT_FILE_H

#include <stdint.h>

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DLU__CKPT_VERSION 1        /* the one format version this code reads and writes */
#define DLU__CKPT_NAME_MAX 255     /* longest record name, in bytes */

/* In-memory list of records, used both to build a checkpoint and to hold a loaded one. */
typedef struct dlu__ckpt dlu__ckpt;

/* Create an empty checkpoint. Returns DLU_OK and sets *out (owned by the caller, free with
 * dlu__ckpt_free), or DLU_ENOMEM with *out = NULL. */
dlu_status dlu__ckpt_new(dlu__ckpt **out);

/* Append a record holding a copy of `nbytes` bytes at `data` (data may be NULL when
 * nbytes == 0). `name` is a NUL-terminated string of 1..255 bytes.
 * Returns DLU_OK; DLU_EINVAL for a bad or duplicate name, data == NULL with nbytes > 0,
 * or more than 2^32-1 records; DLU_ENOMEM. On failure `c` is unchanged.
 * Cost: linear in the number of records (duplicate check). */
dlu_status dlu__ckpt_put(dlu__ckpt *c, const char *name, const void *data, uint64_t nbytes);

/* Write `c` to `path` atomically: the bytes go to "<path>.tmp" in the same directory (a fixed
 * name, so a save killed half-way leaves at most that one file, which the next save
 * overwrites; two processes must not save to the same path at once),
 * which is flushed and fsync'ed, renamed over `path`, and then the directory is fsync'ed so
 * the rename itself survives a crash. On any failure before the rename the temp file is
 * removed and an existing file at `path` is left untouched.
 * Returns DLU_OK; DLU_EINVAL for a NULL/empty path; DLU_ENOMEM; DLU_EIO when creating,
 * writing, syncing or renaming fails. One exception to "untouched": if only the final
 * directory fsync fails, the new file is already in place but may not survive a power
 * loss; that returns DLU_EIO with a message saying so. Filesystems that do not support
 * fsync on a directory (EINVAL/ENOTSUP) are not an error. */
dlu_status dlu__ckpt_save(const dlu__ckpt *c, const char *path);

/* Read and verify the checkpoint at `path`. The result remembers `path` for messages.
 * Returns DLU_OK and sets *out (owned by the caller), or on failure sets *out = NULL and
 * returns: DLU_EIO (cannot open/read, not a regular file); DLU_EFORMAT (wrong magic: "not
 * an OpenDLU checkpoint"; a field with an impossible value; bytes after the checksum;
 * duplicate names); DLU_EVERSION (names the version found and the one supported);
 * DLU_ECORRUPT (file ends early: names the offset; checksum mismatch); DLU_ENOMEM.
 * A declared length is checked against the bytes left in the file before anything is
 * allocated for it, so a damaged length cannot cause a huge allocation.
 * Memory: about the file size. Each record's payload is a separate malloc'd block, so it
 * is aligned for any fundamental type. */
dlu_status dlu__ckpt_load(const char *path, dlu__ckpt **out);

/* Look up record `name`. Returns DLU_OK and sets *data and *nbytes; *data is borrowed,
 * valid until dlu__ckpt_free(c), never NULL (even for an empty record), aligned as malloc.
 * Returns DLU_EFORMAT with "<path>: checkpoint has no record '<name>'" when absent
 * (then *data = NULL, *nbytes = 0). Cost: linear in the number of records. */
dlu_status dlu__ckpt_get(const dlu__ckpt *c, const char *name, const void **data, uint64_t *nbytes);

/* Copy record `name` into `dst`, which must be exactly `nbytes` long (dst may be NULL when
 * nbytes == 0). Returns DLU_OK; DLU_EFORMAT when absent (as dlu__ckpt_get); DLU_ESHAPE when
 * the record holds a different number of bytes (names the record, found and expected
 * sizes; dst is not written). */
dlu_status dlu__ckpt_get_exact(const dlu__ckpt *c, const char *name, void *dst, uint64_t nbytes);

/* Free a checkpoint and every record in it. NULL is allowed. */
void dlu__ckpt_free(dlu__ckpt *c);

#ifdef __cplusplus
}
#endif
#endif
