/* hash.c -- SHA-256 through OpenSSL's EVP interface (see hash.h).
 *
 * This file only adapts libcrypto to the library's conventions: dlu_status codes,
 * messages through dlu__error(), and no OpenSSL types in the header. It is not a
 * SHA-256 implementation and must not grow one: the digest is only as trustworthy as
 * the well-reviewed code behind EVP_sha256(). */
#include "hash.h"

#include <assert.h>
#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "error.h"

struct dlu__sha256 {
    EVP_MD_CTX *ctx;
    /* EVP does not tell a finished context from a live one on every OpenSSL version, and
     * updating a finished one gives a wrong digest silently; so track it here. */
    int live;
};

/* Turn libcrypto's per-thread error queue into our message, and empty the queue so a
 * stale entry is not reported later by someone else's OpenSSL call. */
static dlu_status openssl_error(const char *what)
{
    char buf[256] = "no further detail from libcrypto";
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return dlu__error(DLU_EINTERNAL, "sha256: %s failed (%s); expected libcrypto to provide SHA-256",
                      what, buf);
}

dlu_status dlu__sha256_new(dlu__sha256 **out)
{
    *out = NULL;
    dlu__sha256 *h = malloc(sizeof *h);
    if (h == NULL)
        return dlu__error(DLU_ENOMEM, "sha256: cannot allocate a hasher (%zu bytes)", sizeof *h);
    h->live = 0;
    h->ctx = EVP_MD_CTX_new();
    if (h->ctx == NULL) {
        free(h);
        ERR_clear_error();
        return dlu__error(DLU_ENOMEM, "sha256: EVP_MD_CTX_new failed (out of memory)");
    }
    dlu_status s = dlu__sha256_reset(h);
    if (s != DLU_OK) {
        dlu__sha256_free(h);
        return s;
    }
    *out = h;
    return DLU_OK;
}

dlu_status dlu__sha256_reset(dlu__sha256 *h)
{
    assert(h != NULL);
    h->live = 0;
    if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        return openssl_error("EVP_DigestInit_ex(SHA-256)");
    h->live = 1;
    return DLU_OK;
}

void dlu__sha256_update(dlu__sha256 *h, const void *data, size_t nbytes)
{
    assert(h != NULL && h->live);
    if (nbytes == 0)
        return;
    assert(data != NULL);
    int ok = EVP_DigestUpdate(h->ctx, data, nbytes);
    /* Cannot fail for an initialised SHA-256 context: the provider's update only adds
     * to a counter and compresses blocks. */
    assert(ok == 1);
    (void)ok;
}

void dlu__sha256_final(dlu__sha256 *h, uint8_t digest[DLU__SHA256_NBYTES])
{
    assert(h != NULL && h->live);
    unsigned int len = 0;
    int ok = EVP_DigestFinal_ex(h->ctx, digest, &len);
    assert(ok == 1 && len == DLU__SHA256_NBYTES); /* as for update: cannot fail once initialised */
    (void)ok;
    h->live = 0;
}

void dlu__sha256_free(dlu__sha256 *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void dlu__sha256_hex(const uint8_t digest[DLU__SHA256_NBYTES], char hex[DLU__SHA256_HEX_NBYTES])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < DLU__SHA256_NBYTES; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 0xf];
    }
    hex[2 * DLU__SHA256_NBYTES] = '\0';
}

dlu_status dlu__sha256_once(const void *data, size_t nbytes, uint8_t digest[DLU__SHA256_NBYTES])
{
    dlu__sha256 *h;
    DLU__TRY(dlu__sha256_new(&h));
    dlu__sha256_update(h, data, nbytes);
    dlu__sha256_final(h, digest);
    dlu__sha256_free(h);
    return DLU_OK;
}
