/*
 * proxkey crypto glue over OpenSSL 3 (see crypto.h for the contracts).
 *
 * Algorithms are fetched once (pthread_once) and kept for the life of the
 * process. AEAD and HMAC contexts keep their key schedule: per message only
 * the IV is set, or the HMAC restarts from its key blocks.
 *
 * Two backends, one chosen for the process at pk_crypto_init():
 *
 *  - "provider" (the default): AES-GCM and SHA-256 are called through the
 *    dispatch tables of the provider that EVP_CIPHER_fetch/EVP_MD_fetch chose
 *    (provider-cipher(7), provider-digest(7); OSSL_PROVIDER_query_operation),
 *    so the configured provider still does every computation. OpenSSL 3.0's
 *    EVP layer around them costs more than the work on short messages:
 *    every cipher init asks the provider for the key and IV lengths through
 *    OSSL_PARAM lists (name lookups by strcmp), and every HMAC init copies a
 *    digest context with a malloc and a free. Measured on the project
 *    machine for a 35-byte message: AES-128-GCM re-key and seal 0.80 us
 *    through EVP, 0.39 us through the dispatch table; an HMAC-SHA-256 of a
 *    37-byte input 0.49 us (plus 0.58 us per re-key) through EVP_MAC, 0.24 us
 *    (re-key: two 64-byte XORs) as RFC 2104 over the provider's SHA-256.
 *  - "evp": everything through EVP (EVP_CIPHER_CTX, EVP_MAC). Chosen by
 *    pk_crypto_use_evp() before the first init (the proxkey command does so
 *    when PROXKEY_CRYPTO=evp is set, for example to keep HMAC inside a FIPS
 *    module's boundary), when a provider lacks a needed function, or when the
 *    start-up self-test finds the two backends disagree.
 */
#include "core/crypto.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

static pthread_once_t pk_crypto_once = PTHREAD_ONCE_INIT;
static int pk_crypto_init_rc = PK_ERR_CRYPTO;
static EVP_CIPHER *pk_aes128gcm;
static EVP_CIPHER *pk_aes256gcm;
static EVP_MAC *pk_hmac_alg;
static EVP_MD *pk_sha256_md;

/* ---- provider dispatch tables ---- */

typedef struct pk_pcipher {
    void *provctx;
    OSSL_FUNC_cipher_newctx_fn *newctx;
    OSSL_FUNC_cipher_freectx_fn *freectx;
    OSSL_FUNC_cipher_encrypt_init_fn *einit;
    OSSL_FUNC_cipher_decrypt_init_fn *dinit;
    OSSL_FUNC_cipher_update_fn *update;
    OSSL_FUNC_cipher_final_fn *final;
    OSSL_FUNC_cipher_get_ctx_params_fn *get_ctx_params;
    OSSL_FUNC_cipher_set_ctx_params_fn *set_ctx_params;
} pk_pcipher_t;

typedef struct pk_pdigest {
    void *provctx;
    OSSL_FUNC_digest_newctx_fn *newctx;
    OSSL_FUNC_digest_freectx_fn *freectx;
    OSSL_FUNC_digest_init_fn *init;
    OSSL_FUNC_digest_update_fn *update;
    OSSL_FUNC_digest_final_fn *final;
} pk_pdigest_t;

static int pk_fast;     /* 1: provider backend, 0: EVP (fixed at init) */
static int pk_want_evp; /* pk_crypto_use_evp() was called before init */
static int pk_inited;   /* pk_crypto_do_init ran */
static pk_pcipher_t pk_gcm128_p, pk_gcm256_p;
static pk_pdigest_t pk_sha256_p;

/* The implementation of `name` in prov for operation op (the first entry
 * whose name list starts with or contains name). */
static const OSSL_DISPATCH *pk_prov_find(OSSL_PROVIDER *prov, int op, const char *name)
{
    int no_store = 0;
    const OSSL_ALGORITHM *a = OSSL_PROVIDER_query_operation(prov, op, &no_store);
    const OSSL_DISPATCH *found = NULL;
    size_t nl = strlen(name);
    for (; a && a->algorithm_names && !found; a++) {
        const char *n = a->algorithm_names;
        while (n && *n) {
            size_t rest = strlen(n);
            const char *end = memchr(n, ':', rest);
            size_t l = end ? (size_t)(end - n) : rest;
            if (l == nl && OPENSSL_strncasecmp(n, name, nl) == 0) {
                found = a->implementation;
                break;
            }
            n = end ? end + 1 : NULL;
        }
    }
    /* the dispatch functions stay valid while the provider is loaded; the
     * fetched EVP objects hold it for the life of the process */
    OSSL_PROVIDER_unquery_operation(prov, op, a);
    return found;
}

/* The dispatch table of `name` in the provider an EVP fetch chose, and
 * that provider's context (the newctx argument). */
static const OSSL_DISPATCH *pk_prov_impl(const OSSL_PROVIDER *cprov, int op, const char *name,
                                         void **provctx)
{
    OSSL_PROVIDER *prov = (OSSL_PROVIDER *)cprov;
    const OSSL_DISPATCH *d = prov ? pk_prov_find(prov, op, name) : NULL;
    *provctx = d ? OSSL_PROVIDER_get0_provider_ctx(prov) : NULL;
    return d;
}

static int pk_prov_cipher(const EVP_CIPHER *c, const char *name, pk_pcipher_t *p)
{
    memset(p, 0, sizeof *p);
    const OSSL_DISPATCH *d =
        pk_prov_impl(EVP_CIPHER_get0_provider(c), OSSL_OP_CIPHER, name, &p->provctx);
    for (; d && d->function_id != 0; d++) {
        switch (d->function_id) {
        case OSSL_FUNC_CIPHER_NEWCTX: p->newctx = OSSL_FUNC_cipher_newctx(d); break;
        case OSSL_FUNC_CIPHER_FREECTX: p->freectx = OSSL_FUNC_cipher_freectx(d); break;
        case OSSL_FUNC_CIPHER_ENCRYPT_INIT: p->einit = OSSL_FUNC_cipher_encrypt_init(d); break;
        case OSSL_FUNC_CIPHER_DECRYPT_INIT: p->dinit = OSSL_FUNC_cipher_decrypt_init(d); break;
        case OSSL_FUNC_CIPHER_UPDATE: p->update = OSSL_FUNC_cipher_update(d); break;
        case OSSL_FUNC_CIPHER_FINAL: p->final = OSSL_FUNC_cipher_final(d); break;
        case OSSL_FUNC_CIPHER_GET_CTX_PARAMS:
            p->get_ctx_params = OSSL_FUNC_cipher_get_ctx_params(d);
            break;
        case OSSL_FUNC_CIPHER_SET_CTX_PARAMS:
            p->set_ctx_params = OSSL_FUNC_cipher_set_ctx_params(d);
            break;
        default: break;
        }
    }
    return p->newctx && p->freectx && p->einit && p->dinit && p->update && p->final &&
           p->get_ctx_params && p->set_ctx_params;
}

static int pk_prov_digest(const EVP_MD *md, const char *name, pk_pdigest_t *p)
{
    memset(p, 0, sizeof *p);
    const OSSL_DISPATCH *d =
        pk_prov_impl(EVP_MD_get0_provider(md), OSSL_OP_DIGEST, name, &p->provctx);
    for (; d && d->function_id != 0; d++) {
        switch (d->function_id) {
        case OSSL_FUNC_DIGEST_NEWCTX: p->newctx = OSSL_FUNC_digest_newctx(d); break;
        case OSSL_FUNC_DIGEST_FREECTX: p->freectx = OSSL_FUNC_digest_freectx(d); break;
        case OSSL_FUNC_DIGEST_INIT: p->init = OSSL_FUNC_digest_init(d); break;
        case OSSL_FUNC_DIGEST_UPDATE: p->update = OSSL_FUNC_digest_update(d); break;
        case OSSL_FUNC_DIGEST_FINAL: p->final = OSSL_FUNC_digest_final(d); break;
        default: break;
        }
    }
    return p->newctx && p->freectx && p->init && p->update && p->final;
}

static int pk_backend_selftest(void);

static void pk_crypto_do_init(void)
{
    pk_inited = 1;
    pk_aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    pk_aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    pk_hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    pk_sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    if (!(pk_aes128gcm && pk_aes256gcm && pk_hmac_alg && pk_sha256_md))
        return;
    if (!pk_want_evp && pk_prov_cipher(pk_aes128gcm, "AES-128-GCM", &pk_gcm128_p) &&
        pk_prov_cipher(pk_aes256gcm, "AES-256-GCM", &pk_gcm256_p) &&
        pk_prov_digest(pk_sha256_md, "SHA2-256", &pk_sha256_p))
        pk_fast = pk_backend_selftest();
    pk_crypto_init_rc = PK_OK;
}

int pk_crypto_init(void)
{
    if (pthread_once(&pk_crypto_once, pk_crypto_do_init) != 0)
        return PK_ERR_CRYPTO;
    return pk_crypto_init_rc;
}

int pk_crypto_use_evp(void)
{
    if (pk_inited)
        return PK_ERR_INVAL; /* too late: the backend is fixed */
    pk_want_evp = 1;
    return PK_OK;
}

const char *pk_crypto_backend(void)
{
    if (pk_crypto_init() != PK_OK)
        return "none";
    return pk_fast ? "provider" : "evp";
}

void pk_wipe(void *p, size_t n)
{
    if (!p || !n)
        return;
#if defined(__GLIBC__)
    /* glibc's explicit_bzero is its vectorised memset behind a barrier the
     * compiler cannot remove; OPENSSL_cleanse is a byte loop (measured: 49
     * instructions for a 37-byte KDF input, a tenth of a derivation). */
    explicit_bzero(p, n);
#else
    OPENSSL_cleanse(p, n);
#endif
}

int pk_ct_eq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int pk_random(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(p, chunk) != 1)
            return PK_ERR_CRYPTO;
        p += chunk;
        n -= (size_t)chunk;
    }
    return PK_OK;
}

static int pk_rng_system_fill(void *ctx, uint8_t *buf, size_t n)
{
    (void)ctx;
    return pk_random(buf, n);
}

const pk_rng_t pk_rng_system = {pk_rng_system_fill, NULL};

static int pk_rng_pool_fill(void *ctx, uint8_t *out, size_t n)
{
    pk_rng_pool_t *r = ctx;
    if (n > PK_RNG_POOL / 4)
        return pk_random(out, n);
    if (PK_RNG_POOL - r->pos < n) {
        int rc = pk_random(r->buf, PK_RNG_POOL);
        if (rc != PK_OK)
            return rc;
        r->pos = 0;
    }
    memcpy(out, r->buf + r->pos, n);
    pk_wipe(r->buf + r->pos, n);
    r->pos += n;
    return PK_OK;
}

void pk_rng_pool_init(pk_rng_pool_t *pool, pk_rng_t *rng)
{
    pk_wipe(pool->buf, sizeof pool->buf);
    pool->pos = PK_RNG_POOL; /* empty: the first request refills */
    rng->fill = pk_rng_pool_fill;
    rng->ctx = pool;
}

void pk_rng_pool_clear(pk_rng_pool_t *pool)
{
    pk_wipe(pool->buf, sizeof pool->buf);
    pool->pos = PK_RNG_POOL;
}

/* ---- AES-GCM ---- */

static const pk_pcipher_t *pk_pgcm(size_t keylen)
{
    return keylen == 16 ? &pk_gcm128_p : &pk_gcm256_p;
}

/* provider backend: one context serves both directions (the key schedule
 * stays; each message's init sets only the direction and the IV) */
static int pk_aead_fast_key(pk_aead_t *a, const uint8_t *key, size_t keylen, int open)
{
    const pk_pcipher_t *p = pk_pgcm(keylen);
    void *pc = a->enc;
    if (pc && a->keylen != keylen) {
        pk_pgcm(a->keylen)->freectx(pc); /* cleanses the old key schedule */
        pc = a->enc = a->dec = NULL;
    }
    if (!pc && !(pc = p->newctx(p->provctx))) {
        a->enc = a->dec = NULL;
        return PK_ERR_NOMEM;
    }
    if (p->einit(pc, key, keylen, NULL, 0, NULL) != 1) {
        p->freectx(pc);
        a->enc = a->dec = NULL;
        a->keylen = 0;
        return PK_ERR_CRYPTO;
    }
    a->enc = pc;
    a->dec = open ? pc : NULL;
    a->keylen = keylen;
    return PK_OK;
}

static int pk_aead_init_i(pk_aead_t *a, const uint8_t *key, size_t keylen);

int pk_aead_init(pk_aead_t *a, const uint8_t *key, size_t keylen)
{
    int rc = pk_crypto_init();
    return rc != PK_OK ? rc : pk_aead_init_i(a, key, keylen);
}

/* pk_aead_init once the algorithms are fetched (the self-test runs it
 * inside pk_crypto_do_init) */
static int pk_aead_init_i(pk_aead_t *a, const uint8_t *key, size_t keylen)
{
    const EVP_CIPHER *c;
    EVP_CIPHER_CTX *enc = NULL, *dec = NULL;
    int rc;

    if (!a || !key || a->enc || a->dec)
        return PK_ERR_INVAL;
    if (keylen == 16)
        c = pk_aes128gcm;
    else if (keylen == 32)
        c = pk_aes256gcm;
    else
        return PK_ERR_INVAL;
    if (pk_fast)
        return pk_aead_fast_key(a, key, keylen, 1);

    rc = PK_ERR_NOMEM;
    enc = EVP_CIPHER_CTX_new();
    dec = EVP_CIPHER_CTX_new();
    if (!enc || !dec)
        goto out;
    rc = PK_ERR_CRYPTO;
    if (EVP_EncryptInit_ex2(enc, c, key, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex2(dec, c, key, NULL, NULL) != 1)
        goto out;
    /* GCM's default IV length is 12 (PK_AEAD_NONCE_LEN); nothing to set. */
    a->enc = enc;
    a->dec = dec;
    a->keylen = keylen;
    enc = dec = NULL;
    rc = PK_OK;
out:
    EVP_CIPHER_CTX_free(enc); /* frees (and cleanses) the key schedule */
    EVP_CIPHER_CTX_free(dec);
    return rc;
}

void pk_aead_clear(pk_aead_t *a)
{
    if (!a)
        return;
    if (pk_fast) {
        if (a->enc)
            pk_pgcm(a->keylen)->freectx(a->enc); /* OPENSSL_clear_free */
    } else {
        EVP_CIPHER_CTX_free(a->enc);
        EVP_CIPHER_CTX_free(a->dec);
    }
    a->enc = a->dec = NULL;
    a->keylen = 0;
}

int pk_aead_rekey(pk_aead_t *a, const uint8_t *key, size_t keylen)
{
    if (!a || !key || (keylen != 16 && keylen != 32))
        return PK_ERR_INVAL;
    if (pk_fast && a->enc)
        return pk_aead_fast_key(a, key, keylen, 1);
    if (!a->enc || !a->dec || a->keylen != keylen) {
        /* First key or another AES key size: a fresh pair of contexts (the
         * old ones are freed, which cleanses their key schedules). */
        pk_aead_clear(a);
        return pk_aead_init(a, key, keylen);
    }
    /* Same cipher: NULL cipher keeps the provider context and overwrites
     * its key schedule and GHASH key in place; the IV is set per message. */
    if (EVP_EncryptInit_ex2(a->enc, NULL, key, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex2(a->dec, NULL, key, NULL, NULL) != 1) {
        pk_aead_clear(a);
        return PK_ERR_CRYPTO;
    }
    return PK_OK;
}

int pk_aead_rekey_seal(pk_aead_t *a, const uint8_t *key, size_t keylen)
{
    const EVP_CIPHER *c;
    int rc = pk_crypto_init();

    if (rc != PK_OK)
        return rc;
    if (!a || !key || (keylen != 16 && keylen != 32))
        return PK_ERR_INVAL;
    if (pk_fast)
        return pk_aead_fast_key(a, key, keylen, 0);
    c = keylen == 16 ? pk_aes128gcm : pk_aes256gcm;
    EVP_CIPHER_CTX_free(a->dec); /* cleanses the old key schedule */
    a->dec = NULL;
    if (a->enc && a->keylen == keylen) {
        if (EVP_EncryptInit_ex2(a->enc, NULL, key, NULL, NULL) == 1)
            return PK_OK;
        pk_aead_clear(a);
        return PK_ERR_CRYPTO;
    }
    /* first key or another key size: a fresh context (freeing the old one
     * cleanses its key schedule) */
    pk_aead_clear(a);
    if (!(a->enc = EVP_CIPHER_CTX_new()))
        return PK_ERR_NOMEM;
    if (EVP_EncryptInit_ex2(a->enc, c, key, NULL, NULL) != 1) {
        pk_aead_clear(a);
        return PK_ERR_CRYPTO;
    }
    a->keylen = keylen;
    return PK_OK;
}

/* provider backend: seal (enc) or open (!enc) one message */
static int pk_aead_fast_run(pk_aead_t *a, int enc, const uint8_t nonce[PK_AEAD_NONCE_LEN],
                            const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                            uint8_t *out, uint8_t tag[PK_AEAD_TAG_LEN])
{
    const pk_pcipher_t *p = pk_pgcm(a->keylen);
    void *pc = a->enc;
    size_t outl = 0;
    OSSL_PARAM tp[2] = {
        OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag, PK_AEAD_TAG_LEN),
        OSSL_PARAM_END};

    if ((enc ? p->einit : p->dinit)(pc, NULL, 0, nonce, PK_AEAD_NONCE_LEN, NULL) != 1)
        return PK_ERR_CRYPTO;
    if (!enc && p->set_ctx_params(pc, tp) != 1)
        return PK_ERR_CRYPTO;
    /* the provider wants outsize >= inl even for AAD, which writes nothing */
    if (aadlen && p->update(pc, NULL, &outl, aadlen, aad, aadlen) != 1)
        return PK_ERR_CRYPTO;
    outl = 0;
    if (len && (p->update(pc, out, &outl, len, in, len) != 1 || outl != len))
        return PK_ERR_CRYPTO;
    /* GCM's final writes no bytes; on open it is the tag check */
    if (p->final(pc, out ? out + len : tag, &outl, 0) != 1)
        return enc ? PK_ERR_CRYPTO : PK_ERR_AUTH;
    if (enc && p->get_ctx_params(pc, tp) != 1)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

int pk_aead_seal(pk_aead_t *a, const uint8_t nonce[PK_AEAD_NONCE_LEN], const uint8_t *aad,
                 size_t aadlen, const uint8_t *pt, size_t ptlen, uint8_t *ct,
                 uint8_t tag[PK_AEAD_TAG_LEN])
{
    EVP_CIPHER_CTX *ctx;
    int outl = 0, finl = 0;

    if (!a || !a->enc || !nonce || !tag || aadlen > INT_MAX || ptlen > INT_MAX)
        return PK_ERR_INVAL;
    if ((aadlen && !aad) || (ptlen && (!pt || !ct)))
        return PK_ERR_INVAL;
    if (pk_fast)
        return pk_aead_fast_run(a, 1, nonce, aad, aadlen, pt, ptlen, ct, tag);
    ctx = a->enc;
    if (EVP_EncryptInit_ex2(ctx, NULL, NULL, nonce, NULL) != 1)
        return PK_ERR_CRYPTO;
    if (aadlen && EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aadlen) != 1)
        return PK_ERR_CRYPTO;
    outl = 0;
    /* A NULL output would make OpenSSL take pt as AAD: skip empty input. */
    if (ptlen && EVP_EncryptUpdate(ctx, ct, &outl, pt, (int)ptlen) != 1)
        return PK_ERR_CRYPTO;
    /* GCM's final writes nothing; give it a valid pointer all the same. */
    if (EVP_EncryptFinal_ex(ctx, ct ? ct + outl : tag, &finl) != 1 ||
        (size_t)outl + (size_t)finl != ptlen)
        return PK_ERR_CRYPTO;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, PK_AEAD_TAG_LEN, tag) != 1)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

int pk_aead_open(pk_aead_t *a, const uint8_t nonce[PK_AEAD_NONCE_LEN], const uint8_t *aad,
                 size_t aadlen, const uint8_t *ct, size_t ctlen, const uint8_t tag[PK_AEAD_TAG_LEN],
                 uint8_t *pt)
{
    EVP_CIPHER_CTX *ctx;
    uint8_t tagbuf[PK_AEAD_TAG_LEN];
    int outl = 0, finl = 0, rc = PK_ERR_CRYPTO;

    if (!a || !a->dec || !nonce || !tag || aadlen > INT_MAX || ctlen > INT_MAX)
        return PK_ERR_INVAL;
    if ((aadlen && !aad) || (ctlen && (!ct || !pt)))
        return PK_ERR_INVAL;
    ctx = a->dec;
    memcpy(tagbuf, tag, sizeof tagbuf); /* the ctrl takes a non-const pointer */
    if (pk_fast) {
        rc = pk_aead_fast_run(a, 0, nonce, aad, aadlen, ct, ctlen, pt, tagbuf);
        goto out;
    }
    if (EVP_DecryptInit_ex2(ctx, NULL, NULL, nonce, NULL) != 1)
        goto out;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, PK_AEAD_TAG_LEN, tagbuf) != 1)
        goto out;
    if (aadlen && EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aadlen) != 1)
        goto out;
    outl = 0;
    if (ctlen && EVP_DecryptUpdate(ctx, pt, &outl, ct, (int)ctlen) != 1)
        goto out;
    if (EVP_DecryptFinal_ex(ctx, pt ? pt + outl : tagbuf, &finl) != 1) {
        rc = PK_ERR_AUTH;
        goto out;
    }
    if ((size_t)outl + (size_t)finl != ctlen)
        goto out;
    rc = PK_OK;
out:
    if (rc != PK_OK && pt && ctlen)
        pk_wipe(pt, ctlen); /* never leave unauthenticated plaintext */
    return rc;
}

/* ---- HMAC-SHA-256 ---- */

/* A non-NULL pointer for zero-length keys: OpenSSL reads a NULL key as
 * "keep the current key". */
static const uint8_t pk_empty[1];

/* provider backend: SHA-256 of a short input (keys longer than a block) */
static int pk_sha256_fast(void *md, const void *msg, size_t len, uint8_t out[PK_SHA256_LEN])
{
    size_t outl = 0;
    const pk_pdigest_t *p = &pk_sha256_p;
    if (p->init(md, NULL) != 1 || (len && p->update(md, msg, len) != 1) ||
        p->final(md, out, &outl, PK_SHA256_LEN) != 1 || outl != PK_SHA256_LEN)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

/* RFC 2104: K' = K (or SHA-256(K) if longer than the 64-byte block), zero
 * padded; ipad = K' ^ 0x36.., opad = K' ^ 0x5c.. */
static int pk_hmac_fast_key(pk_hmac_t *h, const uint8_t *key, size_t keylen)
{
    uint8_t kb[64] = {0};
    int rc = PK_OK;
    if (!h->ctx && !(h->ctx = pk_sha256_p.newctx(pk_sha256_p.provctx)))
        return PK_ERR_NOMEM;
    if (keylen > sizeof kb)
        rc = pk_sha256_fast(h->ctx, key, keylen, kb);
    else if (keylen)
        memcpy(kb, key, keylen);
    for (size_t i = 0; i < sizeof kb; i++) {
        h->ipad[i] = (uint8_t)(kb[i] ^ 0x36);
        h->opad[i] = (uint8_t)(kb[i] ^ 0x5c);
    }
    pk_wipe(kb, sizeof kb);
    return rc;
}

static int pk_hmac_setkey(EVP_MAC_CTX *ctx, const uint8_t *key, size_t keylen)
{
    if (EVP_MAC_init(ctx, keylen ? key : pk_empty, keylen, NULL) != 1)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

static int pk_hmac_init_i(pk_hmac_t *h, const uint8_t *key, size_t keylen);

int pk_hmac_init(pk_hmac_t *h, const uint8_t *key, size_t keylen)
{
    int rc = pk_crypto_init();
    return rc != PK_OK ? rc : pk_hmac_init_i(h, key, keylen);
}

static int pk_hmac_init_i(pk_hmac_t *h, const uint8_t *key, size_t keylen)
{
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    int rc;

    if (!h || h->ctx || (keylen && !key))
        return PK_ERR_INVAL;
    if (pk_fast) {
        rc = pk_hmac_fast_key(h, key, keylen);
        if (rc != PK_OK)
            pk_hmac_clear(h);
        return rc;
    }
    ctx = EVP_MAC_CTX_new(pk_hmac_alg);
    if (!ctx)
        return PK_ERR_NOMEM;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA2-256", 0);
    params[1] = OSSL_PARAM_construct_end();
    rc = PK_ERR_CRYPTO;
    if (EVP_MAC_CTX_set_params(ctx, params) != 1)
        goto out;
    rc = pk_hmac_setkey(ctx, key, keylen);
    if (rc != PK_OK)
        goto out;
    h->ctx = ctx;
    ctx = NULL;
out:
    EVP_MAC_CTX_free(ctx);
    return rc;
}

int pk_hmac_rekey(pk_hmac_t *h, const uint8_t *key, size_t keylen)
{
    if (!h || (keylen && !key))
        return PK_ERR_INVAL;
    if (!h->ctx)
        return pk_hmac_init(h, key, keylen);
    if (pk_fast)
        return pk_hmac_fast_key(h, key, keylen);
    return pk_hmac_setkey(h->ctx, key, keylen);
}

void pk_hmac_clear(pk_hmac_t *h)
{
    if (!h)
        return;
    if (pk_fast) {
        if (h->ctx)
            pk_sha256_p.freectx(h->ctx); /* OPENSSL_clear_free */
        pk_wipe(h->ipad, sizeof h->ipad);
        pk_wipe(h->opad, sizeof h->opad);
    } else {
        EVP_MAC_CTX_free(h->ctx); /* the provider cleanses its key copy */
    }
    h->ctx = NULL;
}

int pk_hmac_begin(pk_hmac_t *h)
{
    if (!h || !h->ctx)
        return PK_ERR_INVAL;
    if (pk_fast) {
        if (pk_sha256_p.init(h->ctx, NULL) != 1 ||
            pk_sha256_p.update(h->ctx, h->ipad, sizeof h->ipad) != 1)
            return PK_ERR_CRYPTO;
        return PK_OK;
    }
    /* NULL key: restart with the key schedule already in the context. */
    if (EVP_MAC_init(h->ctx, NULL, 0, NULL) != 1)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

int pk_hmac_update(pk_hmac_t *h, const void *data, size_t len)
{
    if (!h || !h->ctx || (len && !data))
        return PK_ERR_INVAL;
    if (pk_fast)
        return len && pk_sha256_p.update(h->ctx, data, len) != 1 ? PK_ERR_CRYPTO : PK_OK;
    if (len && EVP_MAC_update(h->ctx, data, len) != 1)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

int pk_hmac_final(pk_hmac_t *h, uint8_t out[PK_HMAC_LEN])
{
    size_t outl = 0;

    if (!h || !h->ctx || !out)
        return PK_ERR_INVAL;
    if (pk_fast) {
        uint8_t inner[PK_SHA256_LEN];
        const pk_pdigest_t *p = &pk_sha256_p;
        int ok = p->final(h->ctx, inner, &outl, sizeof inner) == 1 && outl == sizeof inner &&
                 p->init(h->ctx, NULL) == 1 && p->update(h->ctx, h->opad, sizeof h->opad) == 1 &&
                 p->update(h->ctx, inner, sizeof inner) == 1 &&
                 p->final(h->ctx, out, &outl, PK_HMAC_LEN) == 1 && outl == PK_HMAC_LEN;
        pk_wipe(inner, sizeof inner);
        return ok ? PK_OK : PK_ERR_CRYPTO;
    }
    if (EVP_MAC_final(h->ctx, out, &outl, PK_HMAC_LEN) != 1 || outl != PK_HMAC_LEN)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

int pk_hmac(pk_hmac_t *h, const void *msg, size_t len, uint8_t out[PK_HMAC_LEN])
{
    int rc = pk_hmac_begin(h);
    if (rc == PK_OK)
        rc = pk_hmac_update(h, msg, len);
    if (rc == PK_OK)
        rc = pk_hmac_final(h, out);
    return rc;
}

int pk_hmac_sha256(const uint8_t *key, size_t keylen, const void *msg, size_t len,
                   uint8_t out[PK_HMAC_LEN])
{
    pk_hmac_t h = {0};
    int rc = pk_hmac_init(&h, key, keylen);
    if (rc == PK_OK)
        rc = pk_hmac(&h, msg, len, out);
    pk_hmac_clear(&h);
    return rc;
}

/* ---- start-up self-test of the provider backend ----
 * The same inputs through both backends (HMAC under a 20-byte key and, re-
 * keyed, under a 131-byte one that is hashed first; AES-128/256-GCM seal,
 * open and a forged tag on a 35-byte message); any difference keeps
 * the process on EVP. Runs inside pk_crypto_do_init with pk_fast toggled. */
static int pk_backend_selftest(void)
{
    static const uint8_t msg[35] = "proxkey backend self-test message";
    uint8_t key[131], nonce[PK_AEAD_NONCE_LEN] = {1, 2, 3};
    uint8_t m[2][PK_HMAC_LEN], ct[2][2][sizeof msg], tag[2][2][PK_AEAD_TAG_LEN], back[sizeof msg];
    int ok = 1;
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)(0xaa ^ i);
    for (int fast = 0; fast < 2 && ok; fast++) {
        pk_fast = fast;
        pk_hmac_t h = {0};
        ok = pk_hmac_init_i(&h, key, 20) == PK_OK && pk_hmac(&h, msg, 3, m[fast]) == PK_OK &&
             pk_hmac_rekey(&h, key, sizeof key) == PK_OK &&
             pk_hmac(&h, m[fast], sizeof m[fast], m[fast]) == PK_OK;
        pk_hmac_clear(&h);
        for (int k = 0; k < 2 && ok; k++) {
            pk_aead_t a = {0};
            ok = pk_aead_init_i(&a, key, k ? 32 : 16) == PK_OK &&
                 pk_aead_seal(&a, nonce, key, 16, msg, sizeof msg, ct[fast][k], tag[fast][k]) ==
                     PK_OK &&
                 pk_aead_open(&a, nonce, key, 16, ct[fast][k], sizeof msg, tag[fast][k], back) ==
                     PK_OK &&
                 memcmp(back, msg, sizeof msg) == 0;
            tag[fast][k][0] ^= 1;
            ok = ok && pk_aead_open(&a, nonce, key, 16, ct[fast][k], sizeof msg, tag[fast][k],
                                    back) == PK_ERR_AUTH;
            tag[fast][k][0] ^= 1;
            pk_aead_clear(&a);
        }
    }
    ok = ok && memcmp(m[0], m[1], sizeof m[0]) == 0 && memcmp(ct[0], ct[1], sizeof ct[0]) == 0 &&
         memcmp(tag[0], tag[1], sizeof tag[0]) == 0;
    pk_fast = 0;
    ERR_clear_error();
    return ok;
}

/* ---- SHA-256 ---- */

int pk_sha256(const void *msg, size_t len, uint8_t out[PK_SHA256_LEN])
{
    unsigned int outl = 0;
    int rc = pk_crypto_init();

    if (rc != PK_OK)
        return rc;
    if (!out || (len && !msg))
        return PK_ERR_INVAL;
    if (EVP_Digest(len ? msg : pk_empty, len, out, &outl, pk_sha256_md, NULL) != 1 ||
        outl != PK_SHA256_LEN)
        return PK_ERR_CRYPTO;
    return PK_OK;
}

/* ---- Ed25519 and X25519 ---- */

static int pk_raw_public(const char *alg, const uint8_t sk[32], uint8_t pk[32])
{
    EVP_PKEY *key;
    size_t len = 32;
    int rc = pk_crypto_init();

    if (rc != PK_OK)
        return rc;
    if (!sk || !pk)
        return PK_ERR_INVAL;
    key = EVP_PKEY_new_raw_private_key_ex(NULL, alg, NULL, sk, 32);
    if (!key)
        return PK_ERR_CRYPTO;
    rc = PK_OK;
    if (EVP_PKEY_get_raw_public_key(key, pk, &len) != 1 || len != 32)
        rc = PK_ERR_CRYPTO;
    EVP_PKEY_free(key);
    return rc;
}

static int pk_raw_keygen(const char *alg, const pk_rng_t *rng, uint8_t sk[32], uint8_t pk[32])
{
    int rc;

    if (!rng || !rng->fill || !sk || !pk)
        return PK_ERR_INVAL;
    rc = pk_rng_fill(rng, sk, 32);
    if (rc == PK_OK)
        rc = pk_raw_public(alg, sk, pk);
    if (rc != PK_OK)
        pk_wipe(sk, 32);
    return rc;
}

int pk_ed25519_public(const uint8_t sk[PK_ED25519_SK_LEN], uint8_t pk[PK_ED25519_PK_LEN])
{
    return pk_raw_public("ED25519", sk, pk);
}

int pk_ed25519_keygen(const pk_rng_t *rng, uint8_t sk[PK_ED25519_SK_LEN],
                      uint8_t pk[PK_ED25519_PK_LEN])
{
    return pk_raw_keygen("ED25519", rng, sk, pk);
}

int pk_ed25519_sign(const uint8_t sk[PK_ED25519_SK_LEN], const void *msg, size_t len,
                    uint8_t sig[PK_ED25519_SIG_LEN])
{
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *md = NULL;
    size_t siglen = PK_ED25519_SIG_LEN;
    int rc = pk_crypto_init();

    if (rc != PK_OK)
        return rc;
    if (!sk || !sig || (len && !msg))
        return PK_ERR_INVAL;
    rc = PK_ERR_CRYPTO;
    key = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, sk, PK_ED25519_SK_LEN);
    md = EVP_MD_CTX_new();
    if (!key || !md)
        goto out;
    if (EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, key, NULL) != 1)
        goto out;
    if (EVP_DigestSign(md, sig, &siglen, len ? msg : pk_empty, len) != 1 ||
        siglen != PK_ED25519_SIG_LEN)
        goto out;
    rc = PK_OK;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return rc;
}

int pk_ed25519_verify(const uint8_t pk[PK_ED25519_PK_LEN], const void *msg, size_t len,
                      const uint8_t sig[PK_ED25519_SIG_LEN])
{
    EVP_PKEY *key = NULL;
    EVP_MD_CTX *md = NULL;
    int rc = pk_crypto_init();

    if (rc != PK_OK)
        return rc;
    if (!pk || !sig || (len && !msg))
        return PK_ERR_INVAL;
    rc = PK_ERR_NOMEM;
    md = EVP_MD_CTX_new();
    if (!md)
        goto out;
    /* The public key is peer input: anything OpenSSL refuses is a forgery. */
    rc = PK_ERR_AUTH;
    key = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, pk, PK_ED25519_PK_LEN);
    if (!key)
        goto out;
    if (EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL, key, NULL) != 1)
        goto out;
    if (EVP_DigestVerify(md, sig, PK_ED25519_SIG_LEN, len ? msg : pk_empty, len) != 1)
        goto out;
    rc = PK_OK;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return rc;
}

int pk_x25519_public(const uint8_t sk[PK_X25519_LEN], uint8_t pk[PK_X25519_LEN])
{
    return pk_raw_public("X25519", sk, pk);
}

int pk_x25519_keygen(const pk_rng_t *rng, uint8_t sk[PK_X25519_LEN], uint8_t pk[PK_X25519_LEN])
{
    return pk_raw_keygen("X25519", rng, sk, pk);
}

int pk_x25519(const uint8_t sk[PK_X25519_LEN], const uint8_t peer[PK_X25519_LEN],
              uint8_t shared[PK_X25519_LEN])
{
    static const uint8_t zero[PK_X25519_LEN];
    EVP_PKEY *mine = NULL, *theirs = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    uint8_t tmp[PK_X25519_LEN];
    size_t len = sizeof tmp;
    int rc = pk_crypto_init();

    if (rc != PK_OK)
        return rc;
    if (!sk || !peer || !shared)
        return PK_ERR_INVAL;
    rc = PK_ERR_CRYPTO;
    mine = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, sk, PK_X25519_LEN);
    theirs = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, peer, PK_X25519_LEN);
    if (!mine || !theirs)
        goto out;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, mine, NULL);
    if (!ctx || EVP_PKEY_derive_init(ctx) != 1)
        goto out;
    /* Any 32 bytes are a valid X25519 share; no peer validation to do. */
    if (EVP_PKEY_derive_set_peer_ex(ctx, theirs, 0) != 1)
        goto out;
    /* OpenSSL itself fails the derivation when the result is all zero (a
     * small-order peer share); treat every derive failure as hostile. */
    rc = PK_ERR_AUTH;
    if (EVP_PKEY_derive(ctx, tmp, &len) != 1 || len != PK_X25519_LEN)
        goto out;
    if (pk_ct_eq(tmp, zero, sizeof tmp))
        goto out;
    memcpy(shared, tmp, sizeof tmp);
    rc = PK_OK;
out:
    pk_wipe(tmp, sizeof tmp);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(theirs);
    EVP_PKEY_free(mine);
    return rc;
}
