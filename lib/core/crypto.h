/*
 * proxkey's cryptographic primitives, all over OpenSSL 3 (libcrypto, EVP).
 * Nothing here is written by hand except the glue.
 *
 * Contexts are caller-owned and reusable: set a key once, then seal, open or
 * MAC many messages. Algorithms are fetched once by pk_crypto_init(), never on
 * a per-message path. Every *_clear() wipes key material and frees the
 * OpenSSL objects; a cleared or zero-initialised context may be cleared again.
 *
 * Every function returns PK_OK or a negative PK_ERR_* code (core/err.h).
 * Functions whose failure means "forged input" are warn_unused_result.
 */
#ifndef PK_CORE_CRYPTO_H
#define PK_CORE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define PK_MUST_CHECK __attribute__((warn_unused_result))

#define PK_AEAD_NONCE_LEN  12
#define PK_AEAD_TAG_LEN    16
#define PK_HMAC_LEN        32
#define PK_SHA256_LEN      32
#define PK_ED25519_PK_LEN  32
#define PK_ED25519_SK_LEN  32
#define PK_ED25519_SIG_LEN 64
#define PK_X25519_LEN      32

/* Fetches the algorithms once; idempotent and thread-safe. Every other
 * function calls it implicitly, but daemons call it at start to fail early. */
int pk_crypto_init(void);

/* The backend in use, fixed at pk_crypto_init(): "provider" (AES-GCM and
 * SHA-256 called through the fetched provider's dispatch table, HMAC per
 * RFC 2104 over it) or "evp" (everything through EVP). Both give identical
 * results; see crypto.c. */
const char *pk_crypto_backend(void);

/* Asks for the EVP backend; only before the first pk_crypto_init()
 * (PK_ERR_INVAL after). The proxkey command calls it when PROXKEY_CRYPTO=evp
 * is set; the library itself reads no environment. */
int pk_crypto_use_evp(void);

/* Wipes n bytes; the compiler cannot remove it (explicit_bzero on glibc,
 * OPENSSL_cleanse elsewhere). */
void pk_wipe(void *p, size_t n);

/* Constant-time equality of two n-byte buffers: 1 when equal, else 0. */
int pk_ct_eq(const void *a, const void *b, size_t n) PK_MUST_CHECK;

/* Fills buf with n bytes from OpenSSL's CSPRNG. */
int pk_random(void *buf, size_t n) PK_MUST_CHECK;

/*
 * A source of randomness injected into protocol cores, so the simulator and
 * the tests can replay runs from a seed. pk_rng_system draws from pk_random().
 */
typedef struct pk_rng {
    int (*fill)(void *ctx, uint8_t *buf, size_t n);
    void *ctx;
} pk_rng_t;

extern const pk_rng_t pk_rng_system;

/*
 * A buffered system source for daemons: OpenSSL's DRBG read PK_RNG_POOL bytes
 * at a time (one RAND_bytes call costs about as much for 8 bytes as for
 * 4 KiB), each served byte wiped from the pool. Requests above a quarter of
 * the pool go straight to pk_random(). One pool per thread; the caller owns
 * it (zero-initialise, then pk_rng_pool_init) and wipes it with
 * pk_rng_pool_clear().
 */
#define PK_RNG_POOL 4096
typedef struct pk_rng_pool {
    uint8_t buf[PK_RNG_POOL];
    size_t pos; /* bytes before pos are served (and wiped) */
} pk_rng_pool_t;

/* Empties the pool and points rng at it. */
void pk_rng_pool_init(pk_rng_pool_t *pool, pk_rng_t *rng);
void pk_rng_pool_clear(pk_rng_pool_t *pool);

static inline int pk_rng_fill(const pk_rng_t *rng, void *buf, size_t n)
{
    return rng->fill(rng->ctx, (uint8_t *)buf, n);
}

/* ---- AES-GCM (AES-128-GCM for records, AES-256-GCM for key wrapping) ---- */

typedef struct pk_aead {
    void *enc;     /* key set, encrypt direction: EVP_CIPHER_CTX* (evp backend)
                    * or the provider's cipher context (provider backend) */
    void *dec;     /* decrypt direction: another EVP_CIPHER_CTX*, or the same
                    * provider context as enc (NULL: this context only seals) */
    size_t keylen; /* 16 or 32 */
} pk_aead_t;

/* Sets up a context for a 16-byte (AES-128-GCM) or 32-byte (AES-256-GCM)
 * key. The context must be zero-initialised or cleared. */
int pk_aead_init(pk_aead_t *a, const uint8_t *key, size_t keylen);

/* Wipes the key schedule and frees the context. */
void pk_aead_clear(pk_aead_t *a);

/*
 * Sets a new key on an existing context (hot paths with a key per peer: one
 * context, many keys). The old key schedule is overwritten in place (same key
 * size) or wiped with the OpenSSL objects (size change: the context is set up
 * again). A zero-initialised or cleared context is set up as by
 * pk_aead_init(). keylen 16 or 32. On any error the context is cleared (no
 * key, safe to clear again or to rekey): PK_ERR_INVAL, PK_ERR_NOMEM,
 * PK_ERR_CRYPTO.
 */
int pk_aead_rekey(pk_aead_t *a, const uint8_t *key, size_t keylen);

/*
 * As pk_aead_rekey for a context that only seals (a server answering many
 * peers: half the key set-up). The decryption side is dropped (freed, its
 * key schedule cleansed): pk_aead_open returns PK_ERR_INVAL until the next
 * pk_aead_init or pk_aead_rekey. Same errors as pk_aead_rekey.
 */
int pk_aead_rekey_seal(pk_aead_t *a, const uint8_t *key, size_t keylen);

/* Encrypts ptlen bytes from pt into ct (which may equal pt) and writes the
 * 16-byte tag. The caller guarantees the nonce is never reused with the key. */
int pk_aead_seal(pk_aead_t *a, const uint8_t nonce[PK_AEAD_NONCE_LEN], const uint8_t *aad,
                 size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *ct,
                 uint8_t tag[PK_AEAD_TAG_LEN]);

/* Decrypts and verifies. On PK_ERR_AUTH the output is wiped, so no
 * unauthenticated plaintext is ever left for the caller. pt may equal ct. */
int pk_aead_open(pk_aead_t *a, const uint8_t nonce[PK_AEAD_NONCE_LEN], const uint8_t *aad,
                 size_t aadlen, const uint8_t *ct, size_t ctlen, const uint8_t tag[PK_AEAD_TAG_LEN],
                 uint8_t *pt) PK_MUST_CHECK;

/* ---- HMAC-SHA-256 on a re-keyable context ---- */

typedef struct pk_hmac {
    void *ctx;        /* EVP_MAC_CTX* (evp) or the provider's SHA-256 context */
    uint8_t ipad[64]; /* provider backend: key block XOR 0x36 ... */
    uint8_t opad[64]; /* ... and XOR 0x5c (wiped by clear) */
} pk_hmac_t;

int pk_hmac_init(pk_hmac_t *h, const uint8_t *key, size_t keylen);
int pk_hmac_rekey(pk_hmac_t *h, const uint8_t *key, size_t keylen);
void pk_hmac_clear(pk_hmac_t *h);
/* Streaming use with the key already set: begin, update..., final. */
int pk_hmac_begin(pk_hmac_t *h);
int pk_hmac_update(pk_hmac_t *h, const void *data, size_t len);
int pk_hmac_final(pk_hmac_t *h, uint8_t out[PK_HMAC_LEN]);
/* One message with the context's key. */
int pk_hmac(pk_hmac_t *h, const void *msg, size_t len, uint8_t out[PK_HMAC_LEN]);
/* One-off with a fresh context (not for hot paths). */
int pk_hmac_sha256(const uint8_t *key, size_t keylen, const void *msg, size_t len,
                   uint8_t out[PK_HMAC_LEN]);

/* ---- SHA-256 ---- */
int pk_sha256(const void *msg, size_t len, uint8_t out[PK_SHA256_LEN]);

/* ---- Ed25519 and X25519 (raw 32-byte keys) ---- */

/* Derives the public key of a 32-byte secret; keygen = random secret + this. */
int pk_ed25519_public(const uint8_t sk[PK_ED25519_SK_LEN], uint8_t pk[PK_ED25519_PK_LEN]);
int pk_ed25519_keygen(const pk_rng_t *rng, uint8_t sk[PK_ED25519_SK_LEN],
                      uint8_t pk[PK_ED25519_PK_LEN]);
int pk_ed25519_sign(const uint8_t sk[PK_ED25519_SK_LEN], const void *msg, size_t len,
                    uint8_t sig[PK_ED25519_SIG_LEN]);
/* PK_OK when valid, PK_ERR_AUTH when not. */
int pk_ed25519_verify(const uint8_t pk[PK_ED25519_PK_LEN], const void *msg, size_t len,
                      const uint8_t sig[PK_ED25519_SIG_LEN]) PK_MUST_CHECK;

int pk_x25519_public(const uint8_t sk[PK_X25519_LEN], uint8_t pk[PK_X25519_LEN]);
int pk_x25519_keygen(const pk_rng_t *rng, uint8_t sk[PK_X25519_LEN], uint8_t pk[PK_X25519_LEN]);
/* Rejects a peer share that yields the all-zero secret (PK_ERR_AUTH). */
int pk_x25519(const uint8_t sk[PK_X25519_LEN], const uint8_t peer[PK_X25519_LEN],
              uint8_t shared[PK_X25519_LEN]) PK_MUST_CHECK;

#endif
