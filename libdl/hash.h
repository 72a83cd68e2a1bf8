/* hash.h -- SHA-256 for checksums (internal).
 *
 * A thin wrapper over OpenSSL libcrypto's EVP interface, so that the rest of the
 * library needs neither OpenSSL headers nor its error queue. It is used to detect
 * accidental damage (truncated or bit-rotted checkpoints, mismatched test vectors).
 * It is NOT a signature or MAC: anyone who can edit a file can recompute the digest.
 * It does NOT implement SHA-256 itself; libcrypto does.
 *
 * Thread safety: a hasher must not be used from two threads at once; distinct
 * hashers, and dlu__sha256_once(), are safe to use concurrently. */
#ifndef DLU_HASH_H
#define DLU_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DLU__SHA256_NBYTES 32                           /* digest size */
#define DLU__SHA256_HEX_NBYTES (2 * DLU__SHA256_NBYTES + 1) /* hex digits + NUL */

/* Incremental hasher. Opaque; create with dlu__sha256_new(), free with dlu__sha256_free(). */
typedef struct dlu__sha256 dlu__sha256;

/* Create a hasher, ready for dlu__sha256_update().
 * Returns DLU_OK and sets *out (owned by the caller), DLU_ENOMEM, or DLU_EINTERNAL when
 * libcrypto cannot provide SHA-256 (e.g. a provider configuration without it).
 * On failure *out is NULL. */
dlu_status dlu__sha256_new(dlu__sha256 **out);

/* Start a new message with the same hasher (after dlu__sha256_final(), or to abandon the
 * current message). Returns DLU_OK, or DLU_EINTERNAL if libcrypto refuses; after a failure
 * the hasher can only be freed or reset again. */
dlu_status dlu__sha256_reset(dlu__sha256 *h);

/* Hash `nbytes` bytes at `data` (data may be NULL when nbytes == 0).
 * Once the hasher is initialised libcrypto's SHA-256 cannot fail on this path, so there is
 * no status to return; calling it after _final without _reset is a programmer error
 * (assert). */
void dlu__sha256_update(dlu__sha256 *h, const void *data, size_t nbytes);

/* Finish the message and store its 32-byte digest. Afterwards the hasher may be reset
 * with dlu__sha256_reset() or freed; calling _update or _final again first is a
 * programmer error (assert). */
void dlu__sha256_final(dlu__sha256 *h, uint8_t digest[DLU__SHA256_NBYTES]);

/* Free a hasher. NULL is allowed. */
void dlu__sha256_free(dlu__sha256 *h);

/* Write the digest as 64 lowercase hex digits plus a terminating NUL. */
void dlu__sha256_hex(const uint8_t digest[DLU__SHA256_NBYTES], char hex[DLU__SHA256_HEX_NBYTES]);

/* Digest of one buffer, without keeping a hasher. Returns DLU_OK, DLU_ENOMEM or
 * DLU_EINTERNAL (as dlu__sha256_new); on failure the digest is left unspecified. */
dlu_status dlu__sha256_once(const void *data, size_t nbytes, uint8_t digest[DLU__SHA256_NBYTES]);

#ifdef __cplusplus
}
#endif
#endif
