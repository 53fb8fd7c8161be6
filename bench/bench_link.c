/*
 * Suite "link": direct-link setups per second in memory. One setup is a
 * fresh initiator and responder (pk_link_init), the DCR, the SMC, the
 * SMComplete and both sides ESTABLISHED, then both wiped (pk_link_clear):
 * every key derivation, MAC and record-key setup of a real setup, without
 * sockets. The root key comes from a KSI table set up once and reused (the
 * lookup a device does in its registration state). Randomness: a counter
 * (the cost of the DRBG is not the link's).
 *
 * Baseline, measured in alternating rounds: raw OpenSSL HMAC-SHA-256 over
 * 64 bytes with a new 32-byte key each call (EVP_MAC_init with the key), the
 * unit a setup is made of (it derives 5 keys per side and computes two MACs
 * per side, each under a key it just made). The ratio (setups per keyed
 * HMAC) is informational.
 *
 * Data records on a link are pk_record records (pk_link_send seals on the
 * link's pk_record_t): their throughput at 64 and 1400 bytes beside raw EVP
 * AES-128-GCM is the "record" suite's.
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "bench_suites.h"
#include "proto/link/link.h"

#define NKSI 64

typedef struct link_bench {
    uint8_t kd[NKSI][PK_LINK_KD_LEN]; /* the KSI table: KSI i+1 -> kd[i] */
    uint64_t rng_ctr;
    pk_rng_t rng;
    pk_link_t a, b;
    uint8_t arena[4096];
    pk_out_t out;
    uint8_t msg[512];
    unsigned next;
    /* baseline */
    EVP_MAC_CTX *mac;
    uint8_t key[32], data[64], tag[32];
} link_bench_t;

static int lookup(void *ctx, uint32_t ksi, const uint8_t *peer, size_t peer_len,
                  uint8_t k_d[PK_LINK_KD_LEN])
{
    const link_bench_t *b = ctx;
    (void)peer;
    (void)peer_len;
    if (ksi < 1 || ksi > NKSI)
        return PK_ERR_NOTFOUND;
    memcpy(k_d, b->kd[ksi - 1], PK_LINK_KD_LEN);
    return PK_OK;
}

/* Deterministic bytes (a counter through memcpy): not for keys in use. */
static int ctr_fill(void *ctx, uint8_t *buf, size_t n)
{
    link_bench_t *b = ctx;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t c = ++b->rng_ctr * 0x9e3779b97f4a7c15ull;
        memcpy(buf + i, &c, n - i < 8 ? n - i : 8);
    }
    return PK_OK;
}

/* The one SEND of out (copied: out is reused by the next call). */
static int take_send(link_bench_t *b, size_t *len)
{
    for (unsigned i = 0; i < b->out.n; i++)
        if (b->out.act[i].kind == PK_ACT_SEND && b->out.act[i].len <= sizeof b->msg) {
            memcpy(b->msg, b->out.act[i].data, b->out.act[i].len);
            *len = b->out.act[i].len;
            return 0;
        }
    return -1;
}

static int one_setup(link_bench_t *b)
{
    static const uint8_t ida[] = "dev-a", idb[] = "dev-b";
    pk_link_cfg_t ca = {ida, 5, lookup, b, 1000, 3};
    pk_link_cfg_t cb = {idb, 5, lookup, b, 1000, 3};
    size_t len = 0;
    uint32_t ksi = 1 + b->next++ % NKSI;
    int rc = -1;
    if (pk_link_init(&b->a, &ca, PK_LINK_INITIATOR) != PK_OK ||
        pk_link_init(&b->b, &cb, PK_LINK_RESPONDER) != PK_OK)
        goto out;
    pk_out_reset(&b->out);
    if (pk_link_connect(&b->a, idb, 5, ksi, &b->rng, 0, &b->out) != PK_OK || take_send(b, &len))
        goto out; /* DCR */
    pk_out_reset(&b->out);
    if (pk_link_input(&b->b, b->msg, len, &b->rng, 0, &b->out) != PK_OK || take_send(b, &len))
        goto out; /* SMC */
    pk_out_reset(&b->out);
    if (pk_link_input(&b->a, b->msg, len, &b->rng, 0, &b->out) != PK_OK || take_send(b, &len))
        goto out; /* SMComplete */
    pk_out_reset(&b->out);
    if (pk_link_input(&b->b, b->msg, len, &b->rng, 0, &b->out) != PK_OK)
        goto out;
    if (pk_link_state(&b->a) == PK_LINK_S_ESTABLISHED &&
        pk_link_state(&b->b) == PK_LINK_S_ESTABLISHED &&
        pk_link_session_id(&b->a) == pk_link_session_id(&b->b))
        rc = 0;
out:
    pk_link_clear(&b->a);
    pk_link_clear(&b->b);
    return rc;
}

static int link_setups(void *ctx, uint64_t iters)
{
    for (uint64_t i = 0; i < iters; i++)
        if (one_setup(ctx) != 0)
            return -1;
    return 0;
}

/* Raw: HMAC-SHA-256 of 64 bytes under a new key each call. */
static int raw_keyed_hmac(void *ctx, uint64_t iters)
{
    link_bench_t *b = ctx;
    size_t outl = 0;
    for (uint64_t i = 0; i < iters; i++) {
        b->key[0]++;
        if (EVP_MAC_init(b->mac, b->key, sizeof b->key, NULL) != 1 ||
            EVP_MAC_update(b->mac, b->data, sizeof b->data) != 1 ||
            EVP_MAC_final(b->mac, b->tag, &outl, sizeof b->tag) != 1)
            return -1;
    }
    return 0;
}

int pk_bench_suite_link(const pk_bench_opts_t *o)
{
    static link_bench_t b; /* large: not on the stack */
    pk_bench_result_t r_link, r_raw;
    int rc = 1;

    memset(&b, 0, sizeof b);
    b.rng.fill = ctr_fill;
    b.rng.ctx = &b;
    pk_out_init(&b.out, b.arena, sizeof b.arena);
    for (unsigned i = 0; i < NKSI; i++)
        memset(b.kd[i], 0x40 + (int)i, PK_LINK_KD_LEN);
    {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        OSSL_PARAM params[2] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA2-256", 0),
            OSSL_PARAM_construct_end()};
        b.mac = mac ? EVP_MAC_CTX_new(mac) : NULL;
        EVP_MAC_free(mac);
        if (!b.mac || EVP_MAC_init(b.mac, b.key, sizeof b.key, params) != 1)
            goto out;
    }
    /* a setup must succeed before it is timed */
    if (one_setup(&b) != 0)
        goto out;
    if (pk_bench_run_pair(link_setups, &b, raw_keyed_hmac, &b, o->rounds, o->round_ms, &r_link,
                          &r_raw))
        goto out;
    pk_bench_report("link.setup (DCR/SMC/SMComplete, both sides)", &r_link,
                    "openssl.hmac-sha256 (new key, 64 B)", &r_raw, 0);
    printf("  link data records are pk_record records: see the \"record\" suite for seal/open "
           "at 64 and 1400 bytes beside raw EVP AES-128-GCM\n");
    rc = 0;
out:
    EVP_MAC_CTX_free(b.mac);
    b.mac = NULL;
    pk_link_clear(&b.a);
    pk_link_clear(&b.b);
    pk_wipe(&b, sizeof b);
    return rc;
}
