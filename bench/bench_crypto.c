/*
 * Suites "kdf" and "aead": proxkey's crypto layer beside the same work
 * written directly against OpenSSL with a reused context, so the ratio shows
 * the cost of the glue (target >= 0.9).
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "bench_suites.h"
#include "core/crypto.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"

#define TARGET_RATIO 0.9

/* ---- kdf ---- */

typedef struct kdf_bench {
    uint8_t key[32];
    uint8_t n1[16], n2[16];
    uint8_t s[1 + 16 + 2 + 16 + 2]; /* FC || N1 || L1 || N2 || L2, for the raw HMAC */
    uint8_t out[32];
    pk_kdf_t kdf;
    EVP_MAC_CTX *mac;
} kdf_bench_t;

static int kdf_derive(void *ctx, uint64_t iters)
{
    kdf_bench_t *b = ctx;
    pk_kdf_param_t p[2] = {{b->n1, 16}, {b->n2, 16}};
    for (uint64_t i = 0; i < iters; i++)
        if (pk_kdf_derive(&b->kdf, PK_FC_KD_SESS, p, 2, b->out) != PK_OK)
            return -1;
    return 0;
}

static int kdf_oneoff(void *ctx, uint64_t iters)
{
    kdf_bench_t *b = ctx;
    pk_kdf_param_t p[2] = {{b->n1, 16}, {b->n2, 16}};
    for (uint64_t i = 0; i < iters; i++)
        if (pk_kdf(b->key, sizeof b->key, PK_FC_KD_SESS, p, 2, b->out) != PK_OK)
            return -1;
    return 0;
}

/* Raw OpenSSL: the same bytes S through a reused EVP_MAC_CTX. */
static int raw_hmac(void *ctx, uint64_t iters)
{
    kdf_bench_t *b = ctx;
    size_t outl;
    for (uint64_t i = 0; i < iters; i++) {
        if (EVP_MAC_init(b->mac, NULL, 0, NULL) != 1 ||
            EVP_MAC_update(b->mac, b->s, sizeof b->s) != 1 ||
            EVP_MAC_final(b->mac, b->out, &outl, sizeof b->out) != 1)
            return -1;
    }
    return 0;
}

int pk_bench_suite_kdf(const pk_bench_opts_t *o)
{
    static kdf_bench_t b; /* zero-initialised contexts */
    pk_bench_result_t r_kdf, r_raw, r_one, r_raw2;
    uint8_t check[32];
    int rc = 1;

    for (size_t i = 0; i < sizeof b.key; i++)
        b.key[i] = (uint8_t)i;
    memset(b.n1, 0xA1, sizeof b.n1);
    memset(b.n2, 0xB2, sizeof b.n2);
    b.s[0] = PK_FC_KD_SESS;
    memcpy(b.s + 1, b.n1, 16);
    b.s[17] = 0;
    b.s[18] = 16;
    memcpy(b.s + 19, b.n2, 16);
    b.s[35] = 0;
    b.s[36] = 16;

    if (pk_kdf_init(&b.kdf, b.key, sizeof b.key) != PK_OK)
        goto out;
    {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        OSSL_PARAM params[2] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA2-256", 0),
            OSSL_PARAM_construct_end()};
        b.mac = mac ? EVP_MAC_CTX_new(mac) : NULL;
        EVP_MAC_free(mac); /* the context keeps its own reference */
        if (!b.mac || EVP_MAC_init(b.mac, b.key, sizeof b.key, params) != 1)
            goto out;
    }
    /* Same bytes, same answer: otherwise the comparison means nothing. */
    if (kdf_derive(&b, 1) != 0)
        goto out;
    memcpy(check, b.out, sizeof check);
    if (raw_hmac(&b, 1) != 0 || memcmp(check, b.out, sizeof check) != 0)
        goto out;

    if (pk_bench_run_pair(kdf_derive, &b, raw_hmac, &b, o->rounds, o->round_ms, &r_kdf, &r_raw))
        goto out;
    pk_bench_report("kdf.derive (2x16 B)", &r_kdf, "openssl.hmac-sha256", &r_raw, TARGET_RATIO);
    if (pk_bench_run_pair(kdf_oneoff, &b, raw_hmac, &b, o->rounds, o->round_ms, &r_one, &r_raw2))
        goto out;
    /* Informational: what a fresh context per derivation costs. */
    pk_bench_report("kdf.oneoff (fresh ctx)", &r_one, "openssl.hmac-sha256", &r_raw2, 0);
    rc = 0;
out:
    pk_kdf_clear(&b.kdf);
    EVP_MAC_CTX_free(b.mac);
    b.mac = NULL;
    pk_wipe(&b, sizeof b);
    return rc;
}

/* ---- aead ---- */

#define AEAD_MAX 1400

typedef struct aead_bench {
    uint8_t key[16];
    uint8_t nonce[12];
    uint8_t aad[16];
    uint8_t pt[AEAD_MAX], ct[AEAD_MAX];
    uint8_t tag[16];
    size_t len;
    pk_aead_t aead;
    EVP_CIPHER_CTX *raw;
} aead_bench_t;

/* A per-message nonce, as a record layer would make it. */
static inline void bump_nonce(uint8_t nonce[12])
{
    for (int i = 11; i >= 4 && ++nonce[i] == 0; i--)
        ;
}

static int aead_seal(void *ctx, uint64_t iters)
{
    aead_bench_t *b = ctx;
    for (uint64_t i = 0; i < iters; i++) {
        bump_nonce(b->nonce);
        if (pk_aead_seal(&b->aead, b->nonce, b->aad, sizeof b->aad, b->pt, b->len, b->ct, b->tag) !=
            PK_OK)
            return -1;
    }
    return 0;
}

/* Raw OpenSSL: reused EVP_CIPHER_CTX with the key set; per message the IV. */
static int raw_seal(void *ctx, uint64_t iters)
{
    aead_bench_t *b = ctx;
    int outl, finl;
    for (uint64_t i = 0; i < iters; i++) {
        bump_nonce(b->nonce);
        if (EVP_EncryptInit_ex2(b->raw, NULL, NULL, b->nonce, NULL) != 1 ||
            EVP_EncryptUpdate(b->raw, NULL, &outl, b->aad, (int)sizeof b->aad) != 1 ||
            EVP_EncryptUpdate(b->raw, b->ct, &outl, b->pt, (int)b->len) != 1 ||
            EVP_EncryptFinal_ex(b->raw, b->ct + outl, &finl) != 1 ||
            EVP_CIPHER_CTX_ctrl(b->raw, EVP_CTRL_AEAD_GET_TAG, 16, b->tag) != 1)
            return -1;
    }
    return 0;
}

int pk_bench_suite_aead(const pk_bench_opts_t *o)
{
    static aead_bench_t b;
    static const size_t sizes[] = {64, 1400};
    pk_bench_result_t r_pk, r_raw;
    uint8_t ct1[AEAD_MAX], tag1[16], saved[12];
    int rc = 1;

    memset(b.key, 0x42, sizeof b.key);
    memset(b.aad, 0x0A, sizeof b.aad);
    for (size_t i = 0; i < sizeof b.pt; i++)
        b.pt[i] = (uint8_t)i;
    if (pk_aead_init(&b.aead, b.key, sizeof b.key) != PK_OK)
        goto out;
    {
        EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
        b.raw = c ? EVP_CIPHER_CTX_new() : NULL;
        int ok = b.raw && EVP_EncryptInit_ex2(b.raw, c, b.key, NULL, NULL) == 1;
        EVP_CIPHER_free(c);
        if (!ok)
            goto out;
    }

    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        char name[64];
        b.len = sizes[s];
        /* Same input, same ciphertext and tag from both. */
        memcpy(saved, b.nonce, sizeof saved);
        if (aead_seal(&b, 1) != 0)
            goto out;
        memcpy(ct1, b.ct, b.len);
        memcpy(tag1, b.tag, 16);
        memcpy(b.nonce, saved, sizeof saved);
        if (raw_seal(&b, 1) != 0 || memcmp(ct1, b.ct, b.len) || memcmp(tag1, b.tag, 16))
            goto out;

        if (pk_bench_run_pair(aead_seal, &b, raw_seal, &b, o->rounds, o->round_ms, &r_pk, &r_raw))
            goto out;
        snprintf(name, sizeof name, "aead.seal %zu B", b.len);
        pk_bench_report(name, &r_pk, "openssl.aes-128-gcm", &r_raw, TARGET_RATIO);
    }
    rc = 0;
out:
    pk_aead_clear(&b.aead);
    EVP_CIPHER_CTX_free(b.raw);
    b.raw = NULL;
    pk_wipe(&b, sizeof b);
    return rc;
}
