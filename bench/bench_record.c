/*
 * Suite "record": the record layer (lib/core/record.h) beside the same
 * AES-128-GCM work written directly against OpenSSL EVP with reused contexts
 * (same 12-byte header as AAD, same salt||counter nonce, same sizes), so the
 * ratio is the cost of the record layer itself: header codec, counter and
 * replay-window bookkeeping, argument checks. Target ratio >= 0.85.
 *
 * Figures: seals/s and opens/s at 64 and 1400 bytes of plaintext.
 *
 * Registration (files owned by the bench runner): declare
 *     int pk_bench_suite_record(const pk_bench_opts_t *o);
 * in bench_suites.h, add bench_record.c to bench/CMakeLists.txt and the row
 *     {"record", pk_bench_suite_record,
 *      "record seal/open at 64 and 1400 bytes vs raw OpenSSL EVP", 1},
 * to the table in bench_main.c.
 */
#include <string.h>

#include <openssl/evp.h>

#include "bench_suites.h"
#include "core/codec.h"
#include "core/record.h"

int pk_bench_suite_record(const pk_bench_opts_t *o);

#define TARGET_RATIO 0.85
#define REC_MAX_PT   1400
#define POOL         256 /* records opened in turn by the open benchmarks */
#define SID          0x0102
#define EPOCH        1
#define TYPE         0x17

typedef struct record_bench {
    uint8_t key[PK_RECORD_KEY_LEN], salt[PK_RECORD_SALT_LEN];
    pk_record_t tx, rx;
    EVP_CIPHER_CTX *enc, *dec; /* raw baseline, key set once */
    uint64_t raw_ctr;
    size_t len; /* plaintext length */
    uint8_t pt[REC_MAX_PT];
    uint8_t out[PK_RECORD_LEN(REC_MAX_PT)];
    uint8_t back[REC_MAX_PT];
    uint8_t pool[POOL][PK_RECORD_LEN(REC_MAX_PT)];
    unsigned next_rec, next_raw;
} record_bench_t;

/* ---- seal ---- */

static int rec_seal(void *ctx, uint64_t iters)
{
    record_bench_t *b = ctx;
    size_t n;
    for (uint64_t i = 0; i < iters; i++)
        if (pk_record_seal(&b->tx, TYPE, b->pt, b->len, b->out, sizeof b->out, &n) != PK_OK)
            return -1;
    return 0;
}

/* Raw: the same record bytes by hand through a reused EVP_CIPHER_CTX. */
static int raw_seal_one(record_bench_t *b, uint8_t *out)
{
    uint8_t nonce[12];
    int outl, finl;
    uint64_t c = b->raw_ctr++;
    out[0] = TYPE;
    pk_put_u16(out + 1, SID);
    out[3] = EPOCH;
    pk_put_u64(out + 4, c);
    memcpy(nonce, b->salt, 4);
    pk_put_u64(nonce + 4, c);
    if (EVP_EncryptInit_ex2(b->enc, NULL, NULL, nonce, NULL) != 1 ||
        EVP_EncryptUpdate(b->enc, NULL, &outl, out, PK_RECORD_HEADER_LEN) != 1 ||
        EVP_EncryptUpdate(b->enc, out + PK_RECORD_HEADER_LEN, &outl, b->pt, (int)b->len) != 1 ||
        EVP_EncryptFinal_ex(b->enc, out + PK_RECORD_HEADER_LEN + outl, &finl) != 1 ||
        EVP_CIPHER_CTX_ctrl(b->enc, EVP_CTRL_AEAD_GET_TAG, PK_RECORD_TAG_LEN,
                            out + PK_RECORD_HEADER_LEN + b->len) != 1)
        return -1;
    return 0;
}

static int raw_seal(void *ctx, uint64_t iters)
{
    record_bench_t *b = ctx;
    for (uint64_t i = 0; i < iters; i++)
        if (raw_seal_one(b, b->out) != 0)
            return -1;
    return 0;
}

/* ---- open ---- */

/* Bench only: rewinds the receiver's replay window (private members) so the
 * same POOL records can be opened again. Never do this outside a bench. */
static void rewind_window(pk_record_t *r)
{
    r->rc_rx_top = 0;
    memset(r->rc_rx_bitmap, 0, sizeof r->rc_rx_bitmap);
}

static int rec_open(void *ctx, uint64_t iters)
{
    record_bench_t *b = ctx;
    size_t reclen = PK_RECORD_LEN(b->len), m;
    uint8_t type;
    for (uint64_t i = 0; i < iters; i++) {
        if (b->next_rec == POOL) {
            rewind_window(&b->rx);
            b->next_rec = 0;
        }
        if (pk_record_open(&b->rx, b->pool[b->next_rec++], reclen, &type, b->back, sizeof b->back,
                           &m) != PK_OK)
            return -1;
    }
    return 0;
}

static int raw_open(void *ctx, uint64_t iters)
{
    record_bench_t *b = ctx;
    uint8_t nonce[12], tag[PK_RECORD_TAG_LEN];
    int outl, finl;
    for (uint64_t i = 0; i < iters; i++) {
        const uint8_t *in = b->pool[b->next_raw];
        b->next_raw = (b->next_raw + 1) % POOL;
        memcpy(nonce, b->salt, 4);
        memcpy(nonce + 4, in + 4, 8);
        memcpy(tag, in + PK_RECORD_HEADER_LEN + b->len, sizeof tag);
        if (EVP_DecryptInit_ex2(b->dec, NULL, NULL, nonce, NULL) != 1 ||
            EVP_CIPHER_CTX_ctrl(b->dec, EVP_CTRL_AEAD_SET_TAG, PK_RECORD_TAG_LEN, tag) != 1 ||
            EVP_DecryptUpdate(b->dec, NULL, &outl, in, PK_RECORD_HEADER_LEN) != 1 ||
            EVP_DecryptUpdate(b->dec, b->back, &outl, in + PK_RECORD_HEADER_LEN, (int)b->len) !=
                1 ||
            EVP_DecryptFinal_ex(b->dec, b->back + outl, &finl) != 1)
            return -1;
    }
    return 0;
}

/* Same bytes from both sealers, and both openers accept them: otherwise the
 * comparison means nothing. Fills the pool with records 1..POOL of b->len. */
static int prepare(record_bench_t *b)
{
    uint8_t type;
    size_t n, m;
    pk_record_clear(&b->tx);
    pk_record_clear(&b->rx);
    if (pk_record_init(&b->tx, SID, EPOCH, b->key, b->salt, NULL, NULL) != PK_OK ||
        pk_record_init(&b->rx, SID, EPOCH, NULL, NULL, b->key, b->salt) != PK_OK)
        return -1;
    for (unsigned i = 0; i < POOL; i++)
        if (pk_record_seal(&b->tx, TYPE, b->pt, b->len, b->pool[i], sizeof b->pool[i], &n) != PK_OK)
            return -1;
    b->raw_ctr = 1;
    if (raw_seal_one(b, b->out) != 0 || memcmp(b->out, b->pool[0], PK_RECORD_LEN(b->len)) != 0)
        return -1;
    if (pk_record_open(&b->rx, b->pool[0], PK_RECORD_LEN(b->len), &type, b->back, sizeof b->back,
                       &m) != PK_OK ||
        m != b->len || memcmp(b->back, b->pt, b->len) != 0)
        return -1;
    memset(b->back, 0, sizeof b->back);
    b->next_raw = 0;
    if (raw_open(b, 1) != 0 || memcmp(b->back, b->pt, b->len) != 0)
        return -1;
    rewind_window(&b->rx);
    b->next_rec = b->next_raw = 0;
    return 0;
}

int pk_bench_suite_record(const pk_bench_opts_t *o)
{
    static record_bench_t b; /* zero-initialised contexts; ~380 KB, not on the stack */
    static const size_t sizes[] = {64, 1400};
    pk_bench_result_t r_pk, r_raw;
    int rc = 1;

    memset(b.key, 0x4b, sizeof b.key);
    memcpy(b.salt, "salt", sizeof b.salt);
    for (size_t i = 0; i < sizeof b.pt; i++)
        b.pt[i] = (uint8_t)(i * 7);
    {
        EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
        b.enc = c ? EVP_CIPHER_CTX_new() : NULL;
        b.dec = c ? EVP_CIPHER_CTX_new() : NULL;
        int ok = b.enc && b.dec && EVP_EncryptInit_ex2(b.enc, c, b.key, NULL, NULL) == 1 &&
                 EVP_DecryptInit_ex2(b.dec, c, b.key, NULL, NULL) == 1;
        EVP_CIPHER_free(c);
        if (!ok)
            goto out;
    }

    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        char name[64];
        b.len = sizes[s];
        if (prepare(&b) != 0)
            goto out;
        if (pk_bench_run_pair(rec_seal, &b, raw_seal, &b, o->rounds, o->round_ms, &r_pk, &r_raw))
            goto out;
        snprintf(name, sizeof name, "record.seal %zu B", b.len);
        pk_bench_report(name, &r_pk, "openssl.aes-128-gcm seal", &r_raw, TARGET_RATIO);
        if (pk_bench_run_pair(rec_open, &b, raw_open, &b, o->rounds, o->round_ms, &r_pk, &r_raw))
            goto out;
        snprintf(name, sizeof name, "record.open %zu B", b.len);
        pk_bench_report(name, &r_pk, "openssl.aes-128-gcm open", &r_raw, TARGET_RATIO);
    }
    rc = 0;
out:
    pk_record_clear(&b.tx);
    pk_record_clear(&b.rx);
    EVP_CIPHER_CTX_free(b.enc);
    EVP_CIPHER_CTX_free(b.dec);
    b.enc = b.dec = NULL;
    pk_wipe(&b, sizeof b);
    return rc;
}
