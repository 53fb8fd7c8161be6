#include "net/ratelimit.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

#define NONE           UINT32_MAX
#define COST           1000u /* tokens are milli-packets: one packet costs 1000 */
#define GC_INTERVAL_MS 1000u
#define GC_FULL_MIN_MS 100u /* a full table is swept at most this often */

struct entry {
    uint64_t last_ms; /* last refill */
    uint64_t tokens;  /* milli-packets, <= burst * COST */
    uint32_t next;    /* chain link or free-list link */
    uint8_t fam;      /* 4 or 6 */
    uint8_t key[16];
};

struct pk_ratelimit {
    pk_ratelimit_cfg_t cfg;
    uint64_t max_tokens; /* burst * COST */
    uint64_t refill_ms;  /* time to refill an empty bucket */
    uint64_t last_gc_ms;
    uint32_t *buckets; /* heads of chains */
    uint32_t mask;     /* nbuckets - 1 */
    struct entry *ent;
    uint32_t free_head, count;
    EVP_MAC *mac;
    EVP_MAC_CTX *sip; /* keyed once; re-initialised without key per lookup */
};

int pk_ratelimit_new(pk_ratelimit_t **out, const pk_ratelimit_cfg_t *cfg,
                     const uint8_t key[static PK_RATELIMIT_KEY_LEN])
{
    pk_ratelimit_t *rl = NULL;
    int rc = PK_ERR_NOMEM;
    size_t outlen = 8;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &outlen),
                           OSSL_PARAM_END};

    *out = NULL;
    if (cfg->rate_per_s == 0 || cfg->burst == 0 || cfg->max_entries == 0 ||
        cfg->max_entries > (1u << 24) || cfg->burst > (1u << 24))
        return PK_ERR_INVAL;
    rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        goto done;
    rl->cfg = *cfg;
    rl->max_tokens = (uint64_t)cfg->burst * COST;
    rl->refill_ms = (rl->max_tokens + cfg->rate_per_s - 1) / cfg->rate_per_s;
    uint32_t nb = 16;
    while (nb < cfg->max_entries)
        nb *= 2;
    rl->mask = nb - 1;
    rl->buckets = malloc((size_t)nb * sizeof *rl->buckets);
    rl->ent = calloc(cfg->max_entries, sizeof *rl->ent);
    if (rl->buckets == NULL || rl->ent == NULL)
        goto done;
    for (uint32_t i = 0; i < nb; i++)
        rl->buckets[i] = NONE;
    for (uint32_t i = 0; i < cfg->max_entries; i++)
        rl->ent[i].next = i + 1 < cfg->max_entries ? i + 1 : NONE;
    rl->free_head = 0;
    rc = PK_ERR_CRYPTO;
    rl->mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    if (rl->mac == NULL)
        goto done;
    rl->sip = EVP_MAC_CTX_new(rl->mac);
    if (rl->sip == NULL || !EVP_MAC_init(rl->sip, key, PK_RATELIMIT_KEY_LEN, params))
        goto done;
    *out = rl;
    rl = NULL;
    rc = PK_OK;
done:
    pk_ratelimit_free(rl);
    return rc;
}

void pk_ratelimit_free(pk_ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    EVP_MAC_CTX_free(rl->sip); /* frees (and cleanses) the keyed SipHash state */
    EVP_MAC_free(rl->mac);
    free(rl->buckets);
    free(rl->ent);
    free(rl);
}

static int hash_source(pk_ratelimit_t *rl, uint8_t fam, const uint8_t key[16], uint32_t *h)
{
    uint8_t msg[17], mac[8];
    size_t maclen = 0;

    msg[0] = fam;
    memcpy(msg + 1, key, 16);
    if (!EVP_MAC_init(rl->sip, NULL, 0, NULL) || !EVP_MAC_update(rl->sip, msg, sizeof msg) ||
        !EVP_MAC_final(rl->sip, mac, &maclen, sizeof mac) || maclen != sizeof mac)
        return -1;
    *h = (uint32_t)mac[0] | (uint32_t)mac[1] << 8 | (uint32_t)mac[2] << 16 | (uint32_t)mac[3] << 24;
    return 0;
}

/* Adds the tokens earned since e->last_ms. */
static void refill(const pk_ratelimit_t *rl, struct entry *e, uint64_t now_ms)
{
    if (now_ms <= e->last_ms)
        return;
    uint64_t elapsed = now_ms - e->last_ms;
    if (elapsed >= rl->refill_ms)
        e->tokens = rl->max_tokens;
    else {
        /* elapsed * rate < refill_ms * rate <= max_tokens + rate: no overflow */
        e->tokens += elapsed * rl->cfg.rate_per_s;
        if (e->tokens > rl->max_tokens)
            e->tokens = rl->max_tokens;
    }
    e->last_ms = now_ms;
}

unsigned pk_ratelimit_gc(pk_ratelimit_t *rl, uint64_t now_ms)
{
    unsigned freed = 0;

    rl->last_gc_ms = now_ms;
    for (uint32_t b = 0; b <= rl->mask; b++) {
        uint32_t *link = &rl->buckets[b];
        while (*link != NONE) {
            uint32_t i = *link;
            struct entry *e = &rl->ent[i];
            if (now_ms > e->last_ms && now_ms - e->last_ms >= rl->refill_ms) {
                *link = e->next;
                e->next = rl->free_head;
                rl->free_head = i;
                rl->count--;
                freed++;
            } else {
                link = &e->next;
            }
        }
    }
    return freed;
}

int pk_ratelimit_allow(pk_ratelimit_t *rl, const pk_addr_t *src, uint64_t now_ms)
{
    uint8_t key[16];
    uint32_t h;

    int fam = pk_addr_source_key(src, key);
    if (fam == 0)
        return 0;
    if (now_ms >= rl->last_gc_ms + GC_INTERVAL_MS)
        pk_ratelimit_gc(rl, now_ms);
    if (hash_source(rl, (uint8_t)fam, key, &h) != 0)
        return 0;
    uint32_t b = h & rl->mask;
    for (uint32_t i = rl->buckets[b]; i != NONE; i = rl->ent[i].next) {
        struct entry *e = &rl->ent[i];
        if (e->fam != fam || memcmp(e->key, key, 16) != 0)
            continue;
        refill(rl, e, now_ms);
        if (e->tokens < COST)
            return 0;
        e->tokens -= COST;
        return 1;
    }
    /* Full: sweep, but not on every packet of a flood (a sweep is O(table)). */
    if (rl->free_head == NONE && now_ms >= rl->last_gc_ms + GC_FULL_MIN_MS)
        pk_ratelimit_gc(rl, now_ms);
    if (rl->free_head == NONE)
        return 0; /* full of active sources */
    uint32_t i = rl->free_head;
    struct entry *e = &rl->ent[i];
    rl->free_head = e->next;
    e->fam = (uint8_t)fam;
    memcpy(e->key, key, 16);
    e->last_ms = now_ms;
    e->tokens = rl->max_tokens - COST;
    e->next = rl->buckets[b];
    rl->buckets[b] = i;
    rl->count++;
    return 1;
}

unsigned pk_ratelimit_count(const pk_ratelimit_t *rl)
{
    return rl->count;
}
