/*
 * Secrets at rest: values sealed under a key-encryption key (KEK) before
 * they reach the store, and the KEK file itself.
 *
 * A sealed value is
 *
 *   version (1 byte, PK_WRAP_VERSION) | nonce (12) | ciphertext (len) | tag (16)
 *
 * AES-256-GCM under the KEK with a fresh random nonce. The associated data
 * binds the value to its row, so a sealed secret copied to another row (or
 * bucket) does not open there:
 *
 *   "proxkey-wrap" | version | len(bucket) (1) | bucket | len(key) (1) | key
 *
 * Nonces: random 96-bit nonces keep the GCM collision risk below 2^-32 for up
 * to 2^32 seals under one KEK; rotate the KEK (re-seal) long before that.
 *
 * Errors: PK_ERR_INVAL (bad argument: bucket not 1..63 bytes, key not
 * 1..255, NULL), PK_ERR_SPACE (output too small; *outlen = size needed),
 * PK_ERR_MALFORMED (too short to be a sealed value), PK_ERR_VERSION (unknown
 * format version), PK_ERR_AUTH (wrong KEK, wrong row, or tampered: nothing is
 * written to the output), PK_ERR_CRYPTO.
 */
#ifndef PK_STORE_WRAP_H
#define PK_STORE_WRAP_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"

#define PK_WRAP_KEK_LEN  32
#define PK_WRAP_VERSION  1
#define PK_WRAP_OVERHEAD (1 + PK_AEAD_NONCE_LEN + PK_AEAD_TAG_LEN) /* 29 */

/* A KEK set up once for many seals and opens (hot paths). Zero-initialise
 * or clear before pk_wrap_ctx_init; pk_wrap_ctx_clear wipes it. */
typedef struct pk_wrap_ctx {
    pk_aead_t aead;
} pk_wrap_ctx_t;

int pk_wrap_ctx_init(pk_wrap_ctx_t *w, const uint8_t kek[PK_WRAP_KEK_LEN]);
void pk_wrap_ctx_clear(pk_wrap_ctx_t *w);

/*
 * Seals len bytes of secret for row (bucket, key) into out (cap bytes,
 * needs len + PK_WRAP_OVERHEAD) and sets *outlen. rng supplies the nonce
 * (NULL: pk_rng_system; the simulator passes its seeded one).
 */
int pk_wrap_ctx_seal(pk_wrap_ctx_t *w, const pk_rng_t *rng, const char *bucket, const uint8_t *key,
                     size_t klen, const uint8_t *secret, size_t len, uint8_t *out, size_t cap,
                     size_t *outlen);

/*
 * Opens a sealed value of row (bucket, key) into secret (cap bytes, needs
 * blen - PK_WRAP_OVERHEAD) and sets *outlen. Verifies before writing: on any
 * error the output holds no plaintext. secret must not overlap blob.
 */
int pk_wrap_ctx_open(pk_wrap_ctx_t *w, const char *bucket, const uint8_t *key, size_t klen,
                     const uint8_t *blob, size_t blen, uint8_t *secret, size_t cap,
                     size_t *outlen) PK_MUST_CHECK;

/* One-shot forms with the KEK itself (set up and wiped per call). */
int pk_wrap_seal(const uint8_t kek[PK_WRAP_KEK_LEN], const pk_rng_t *rng, const char *bucket,
                 const uint8_t *key, size_t klen, const uint8_t *secret, size_t len, uint8_t *out,
                 size_t cap, size_t *outlen);
int pk_wrap_open(const uint8_t kek[PK_WRAP_KEK_LEN], const char *bucket, const uint8_t *key,
                 size_t klen, const uint8_t *blob, size_t blen, uint8_t *secret, size_t cap,
                 size_t *outlen) PK_MUST_CHECK;

/*
 * Reads the KEK from path: exactly 32 raw bytes, or 64 hex digits optionally
 * followed by one newline (decoded in constant time). The file must be a
 * regular file (symlinks are not followed), owned by the effective user or
 * root, and not accessible by group or others (mode 0600 or 0400).
 *
 * why (may be NULL) receives a one-line reason on failure, for the caller
 * to log, e.g. "kek file mode 0644 allows group/other access; chmod 600".
 * Errors: PK_ERR_DENIED (permissions or owner), PK_ERR_IO (cannot open or
 * read, not a regular file), PK_ERR_MALFORMED (wrong size or bad hex). kek is
 * zeroed on failure; every temporary is wiped.
 */
int pk_kek_load(const char *path, uint8_t kek[PK_WRAP_KEK_LEN], char *why, size_t whylen);

/*
 * Creates a new random KEK file at path with mode 0600 (64 hex digits and a
 * newline, fsync'ed). Never overwrites: PK_ERR_EXISTS when path exists.
 * PK_ERR_IO on other failures (a partial file is removed).
 */
int pk_kek_generate(const char *path);

#endif
