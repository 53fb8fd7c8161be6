/* The node's registration core (see reg.h). */
#include <stddef.h>
#include <string.h>

#include "proto/reg/reg.h"

const char *const pk_reg_drop_names[PK_REG_DROP_N] = {
    "malformed", "version", "rate", "no_entry", "bad_res", "state", "dup", "evicted",
};

#define NIL UINT32_MAX

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint32_t half_slot(const pk_reg_node_t *n, uint64_t src, const pk_reg_id_t *dev)
{
    uint64_t h = mix64(n->cfg.hash_seed ^ src) ^ dev->len;
    for (unsigned i = 0; i < dev->len; i++)
        h = (h ^ dev->b[i]) * 0x100000001b3ull;
    return (uint32_t)(mix64(h) % n->cfg.nhalf);
}

static uint32_t bucket_slot(const pk_reg_node_t *n, uint64_t src)
{
    return (uint32_t)(mix64(n->cfg.hash_seed ^ mix64(src)) % n->cfg.nbucket);
}

/* Sets up the index over a half-open table whose entries are all free. */
static void half_index_init(pk_reg_node_t *n)
{
    pk_reg_half_t *t = n->cfg.half;
    for (size_t i = 0; i < n->cfg.nhalf; i++) {
        t[i].hhead = NIL;
        t[i].hnext = i + 1 < n->cfg.nhalf ? (uint32_t)(i + 1) : NIL; /* free chain */
        t[i].older = t[i].newer = NIL;
    }
    n->hfree = 0;
    n->holdest = n->hnewest = NIL;
}

int pk_reg_node_init(pk_reg_node_t *n, const pk_reg_node_cfg_t *cfg)
{
    if (!cfg->half || cfg->nhalf == 0 || cfg->nhalf >= NIL || !cfg->bucket || cfg->nbucket == 0 ||
        cfg->nbucket >= NIL || cfg->burst == 0 || cfg->half_ttl_ms == 0 ||
        !pk_reg_id_valid(cfg->node_id.b, cfg->node_id.len))
        return PK_ERR_INVAL;
    memset(n, 0, sizeof *n);
    n->cfg = *cfg;
    memset(cfg->half, 0, cfg->nhalf * sizeof *cfg->half);
    memset(cfg->bucket, 0, cfg->nbucket * sizeof *cfg->bucket);
    half_index_init(n);
    for (size_t i = 0; i < cfg->nbucket; i++)
        cfg->bucket[i].hhead = cfg->bucket[i].hnext = cfg->bucket[i].older = cfg->bucket[i].newer =
            NIL;
    n->boldest = n->bnewest = NIL;
    return PK_OK;
}

/* Unlinks an entry in use from its chain and the age list, wipes it (the
 * accept cache up to its length: the rest is still zero) and frees it. */
static void half_free(pk_reg_node_t *n, pk_reg_half_t *h)
{
    pk_reg_half_t *t = n->cfg.half;
    uint32_t i = (uint32_t)(h - t);
    uint32_t *p = &t[half_slot(n, h->src, &h->dev)].hhead;
    while (*p != NIL && *p != i)
        p = &t[*p].hnext;
    if (*p == i)
        *p = h->hnext;
    if (h->older != NIL)
        t[h->older].newer = h->newer;
    else
        n->holdest = h->newer;
    if (h->newer != NIL)
        t[h->newer].older = h->older;
    else
        n->hnewest = h->older;
    uint32_t head = h->hhead;
    pk_wipe(h->acc, h->acc_len);
    pk_wipe(h, offsetof(pk_reg_half_t, acc));
    h->hhead = head;
    h->older = h->newer = NIL;
    h->hnext = n->hfree;
    n->hfree = i;
}

static pk_reg_half_t *half_find(pk_reg_node_t *n, uint64_t src, const pk_reg_id_t *dev)
{
    pk_reg_half_t *t = n->cfg.half;
    for (uint32_t i = t[half_slot(n, src, dev)].hhead; i != NIL; i = t[i].hnext) {
        pk_reg_half_t *h = &t[i];
        if (h->src == src && pk_reg_id_eq(&h->dev, dev))
            return h;
    }
    return NULL;
}

/*
 * The age list (older/newer, holdest..hnewest) is ordered by created_ms,
 * non-decreasing from the oldest end; entries of equal created_ms keep their
 * insertion order. Expiry is from created_ms (an entry is never moved or
 * re-timed after it is made), so the expired entries are always a prefix of
 * the list: next_deadline reads the head and timeout stops at the first live
 * entry. With a non-decreasing now_ms (the shells' monotonic clock) this is
 * plain insertion order and a new entry is appended in O(1); a now_ms that
 * went backwards is placed by walking from the newest end, so the entry
 * evicted is always the one created first (and closest to its expiry).
 */

/* A free slot, or the oldest one (evicted), taken for (src, dev) made at
 * now_ms: chained, created_ms set and placed in the age list. The caller
 * fills in the rest. */
static pk_reg_half_t *half_alloc(pk_reg_node_t *n, uint64_t src, const pk_reg_id_t *dev,
                                 uint64_t now_ms)
{
    pk_reg_half_t *t = n->cfg.half;
    if (n->hfree == NIL) {
        n->drops[PK_REG_DROP_EVICTED]++;
        half_free(n, &t[n->holdest]);
    }
    uint32_t i = n->hfree;
    pk_reg_half_t *h = &t[i];
    n->hfree = h->hnext;
    h->src = src;
    h->dev = *dev;
    h->created_ms = now_ms;
    uint32_t *head = &t[half_slot(n, src, dev)].hhead;
    h->hnext = *head;
    *head = i;
    /* after the newest entry not created later (at most nhalf steps) */
    uint32_t prev = n->hnewest;
    while (prev != NIL && t[prev].created_ms > now_ms)
        prev = t[prev].older;
    uint32_t next = prev != NIL ? t[prev].newer : n->holdest;
    h->older = prev;
    h->newer = next;
    if (prev != NIL)
        t[prev].newer = i;
    else
        n->holdest = i;
    if (next != NIL)
        t[next].older = i;
    else
        n->hnewest = i;
    return h;
}

static void bucket_unlink_lru(pk_reg_node_t *n, pk_reg_bucket_t *c)
{
    pk_reg_bucket_t *b = n->cfg.bucket;
    if (c->older != NIL)
        b[c->older].newer = c->newer;
    else
        n->boldest = c->newer;
    if (c->newer != NIL)
        b[c->newer].older = c->older;
    else
        n->bnewest = c->older;
    c->older = c->newer = NIL;
}

/* Charges one request to src's token bucket; 1 when allowed. A new source
 * takes an unused bucket or the least recently used one. */
static int rate_take(pk_reg_node_t *n, uint64_t src, uint64_t now_ms)
{
    const uint64_t cap = (uint64_t)n->cfg.burst * 1000;
    pk_reg_bucket_t *t = n->cfg.bucket, *b = NULL;
    uint32_t slot = bucket_slot(n, src), i;
    for (i = t[slot].hhead; i != NIL; i = t[i].hnext)
        if (t[i].src == src) {
            b = &t[i];
            break;
        }
    if (!b) {
        if (n->bused < n->cfg.nbucket) {
            i = n->bused++;
        } else { /* reuse the LRU bucket: out of its chain */
            i = n->boldest;
            uint32_t *p = &t[bucket_slot(n, t[i].src)].hhead;
            while (*p != NIL && *p != i)
                p = &t[*p].hnext;
            if (*p == i)
                *p = t[i].hnext;
        }
        b = &t[i];
        if (b->used)
            bucket_unlink_lru(n, b);
        b->used = 1;
        b->src = src;
        b->milli = cap;
        b->last_ms = now_ms;
        b->hnext = t[slot].hhead;
        t[slot].hhead = i;
    } else {
        bucket_unlink_lru(n, b);
    }
    /* most recently used */
    b->older = n->bnewest;
    b->newer = NIL;
    if (n->bnewest != NIL)
        t[n->bnewest].newer = i;
    else
        n->boldest = i;
    n->bnewest = i;
    if (now_ms > b->last_ms) {
        uint64_t dt = now_ms - b->last_ms;
        uint64_t per = n->cfg.per_sec; /* milli-tokens per ms */
        uint64_t add = per == 0 ? 0 : dt > cap / per + 1 ? cap : dt * per;
        b->milli = b->milli + add > cap ? cap : b->milli + add;
        b->last_ms = now_ms;
    }
    if (b->milli < 1000)
        return 0;
    b->milli -= 1000;
    return 1;
}

static int send_challenge(const pk_reg_half_t *h, pk_out_t *out)
{
    pk_reg_challenge_t c;
    size_t len = 0;
    memcpy(c.nonce_d, h->nonce_d, PK_REG_NONCE_LEN);
    memcpy(c.rand, h->vec.rand, PK_REG_RAND_LEN);
    memcpy(c.autn, h->vec.autn, PK_REG_AUTN_LEN);
    uint8_t *d = pk_out_push(out, PK_ACT_SEND, PK_REG_T_CHALLENGE, h->src, PK_REG_CHALLENGE_LEN);
    if (!d)
        return PK_ERR_SPACE;
    return pk_reg_challenge_encode(&c, d, PK_REG_CHALLENGE_LEN, &len);
}

/* The largest KMS_VEC_REQ / KMS_KEYS_REQ frame. */
#define NET_EVENT_MAX (1 + 2 * (1 + PK_REG_ID_MAX) + PK_REG_NONCE_LEN)

/* Pushes an event carrying a node<->kms frame. */
static int push_net_event(pk_out_t *out, uint16_t code, uint64_t dest, const pk_reg_net_t *m)
{
    uint8_t buf[NET_EVENT_MAX];
    size_t len = 0;
    int rc = pk_reg_net_encode(m, buf, sizeof buf, &len);
    if (rc != PK_OK)
        return rc;
    uint8_t *d = pk_out_push(out, PK_ACT_EVENT, code, dest, len);
    if (!d)
        return PK_ERR_SPACE;
    memcpy(d, buf, len);
    return PK_OK;
}

static int on_request(pk_reg_node_t *n, uint64_t src, const uint8_t *msg, size_t len,
                      uint64_t now_ms, pk_out_t *out)
{
    pk_reg_request_t m;
    int rc = pk_reg_request_decode(msg, len, &m);
    if (rc != PK_OK) {
        n->drops[rc == PK_ERR_VERSION ? PK_REG_DROP_VERSION : PK_REG_DROP_MALFORMED]++;
        return rc;
    }
    pk_reg_half_t *h = half_find(n, src, &m.dev);
    if (h && memcmp(h->nonce_d, m.nonce_d, PK_REG_NONCE_LEN) == 0) {
        /* a retransmission: answered identically, never re-asks the kms */
        if (h->state == PK_REG_H_CHALLENGED)
            return send_challenge(h, out);
        n->drops[PK_REG_DROP_DUP]++;
        return PK_OK;
    }
    if (out->n >= PK_OUT_MAX || out->cap - out->used < NET_EVENT_MAX)
        return PK_ERR_SPACE; /* checked before the bucket is charged */
    if (!rate_take(n, src, now_ms)) {
        n->drops[PK_REG_DROP_RATE]++;
        return PK_ERR_LIMIT;
    }
    pk_reg_net_t q;
    memset(&q, 0, sizeof q);
    q.type = PK_REG_T_KMS_VEC_REQ;
    q.a = n->cfg.node_id;
    q.b = m.dev;
    memcpy(q.nonce_d, m.nonce_d, PK_REG_NONCE_LEN);
    if ((rc = push_net_event(out, PK_REG_EV_NEED_VECTOR, src, &q)) != PK_OK)
        return rc;
    /* commit: a new run (a new nonce_d replaces the old run of this device) */
    if (h)
        half_free(n, h);
    h = half_alloc(n, src, &m.dev, now_ms);
    h->state = PK_REG_H_WAIT_VEC;
    h->seq = ++n->seq;
    memcpy(h->nonce_d, m.nonce_d, PK_REG_NONCE_LEN);
    return PK_OK;
}

static int on_response(pk_reg_node_t *n, uint64_t src, const uint8_t *msg, size_t len,
                       pk_out_t *out)
{
    pk_reg_response_t m;
    int rc = pk_reg_response_decode(msg, len, &m);
    if (rc != PK_OK) {
        n->drops[rc == PK_ERR_VERSION ? PK_REG_DROP_VERSION : PK_REG_DROP_MALFORMED]++;
        return rc;
    }
    pk_reg_half_t *h = half_find(n, src, &m.dev);
    if (!h || memcmp(h->nonce_d, m.nonce_d, PK_REG_NONCE_LEN) != 0) {
        n->drops[PK_REG_DROP_NO_ENTRY]++;
        return PK_ERR_NOTFOUND;
    }
    if (h->state == PK_REG_H_WAIT_VEC) {
        n->drops[PK_REG_DROP_STATE]++;
        return PK_ERR_STATE;
    }
    if (!pk_ct_eq(m.res, h->vec.xres, PK_REG_RES_LEN)) {
        n->drops[PK_REG_DROP_BAD_RES]++;
        return PK_ERR_AUTH;
    }
    if (h->state == PK_REG_H_AUTHED) { /* retransmission while the kms answers */
        n->drops[PK_REG_DROP_DUP]++;
        return PK_OK;
    }
    if (h->state == PK_REG_H_DONE) { /* the accept was lost: the same bytes again */
        uint8_t *d = pk_out_push(out, PK_ACT_SEND, PK_REG_T_ACCEPT, src, h->acc_len);
        if (!d)
            return PK_ERR_SPACE;
        memcpy(d, h->acc, h->acc_len);
        return PK_OK;
    }
    pk_reg_net_t q;
    memset(&q, 0, sizeof q);
    q.type = PK_REG_T_KMS_KEYS_REQ;
    q.a = h->dev;
    q.paged = 1; /* the first page (an empty cursor): the answer says whether more follow */
    if ((rc = push_net_event(out, PK_REG_EV_NEED_KEYS, src, &q)) != PK_OK)
        return rc;
    h->state = PK_REG_H_AUTHED;
    return PK_OK;
}

int pk_reg_node_input(pk_reg_node_t *n, uint64_t src, const uint8_t *msg, size_t len,
                      uint64_t now_ms, pk_out_t *out)
{
    if (!msg || len < 1) {
        n->drops[PK_REG_DROP_MALFORMED]++;
        return PK_ERR_MALFORMED;
    }
    switch (msg[0]) {
    case PK_REG_T_REQUEST: return on_request(n, src, msg, len, now_ms, out);
    case PK_REG_T_RESPONSE: return on_response(n, src, msg, len, out);
    default: n->drops[PK_REG_DROP_MALFORMED]++; return PK_ERR_MALFORMED;
    }
}

int pk_reg_node_vector(pk_reg_node_t *n, uint64_t src, const pk_reg_id_t *dev,
                       const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_vector_t *v,
                       uint64_t now_ms, pk_out_t *out)
{
    (void)now_ms;
    pk_reg_half_t *h = half_find(n, src, dev);
    if (!h || h->state != PK_REG_H_WAIT_VEC || memcmp(h->nonce_d, nonce_d, PK_REG_NONCE_LEN) != 0) {
        n->drops[PK_REG_DROP_NO_ENTRY]++;
        return PK_ERR_NOTFOUND;
    }
    h->vec = *v;
    int rc = send_challenge(h, out);
    if (rc != PK_OK) {
        pk_wipe(&h->vec, sizeof h->vec);
        return rc;
    }
    h->state = PK_REG_H_CHALLENGED;
    return PK_OK;
}

int pk_reg_node_accept(pk_reg_node_t *n, uint64_t src, const pk_reg_id_t *dev, uint16_t session_id,
                       const pk_reg_id_t *temp_id, const pk_reg_keyset_t *keys, pk_record_t *chan,
                       uint64_t now_ms, pk_out_t *out)
{
    uint8_t ptbuf[PK_REG_ACCEPT_PT_MAX];
    size_t ptlen = 0, len = 0;
    int rc;
    (void)now_ms;

    pk_reg_half_t *h = half_find(n, src, dev);
    if (!h || h->state != PK_REG_H_AUTHED) {
        n->drops[PK_REG_DROP_NO_ENTRY]++;
        return PK_ERR_NOTFOUND;
    }
    if (out->n >= PK_OUT_MAX || out->cap - out->used < PK_REG_ACCEPT_MAX)
        return PK_ERR_SPACE;
    /* encode straight from the caller's structs: temp id and keys */
    {
        pk_wr_t w;
        pk_wr_init(&w, ptbuf, sizeof ptbuf);
        pk_wr_bytes(&w, h->nonce_d, PK_REG_NONCE_LEN);
        pk_reg_wr_id(&w, temp_id);
        pk_reg_keyset_write(&w, keys);
        pk_reg_mkset_write(&w, &keys->mk); /* master keys (Toshiba), when any */
        ptlen = w.len;
        if ((rc = pk_wr_ok(&w)) != PK_OK) {
            rc = PK_ERR_INVAL;
            goto out;
        }
    }
    rc = n->cfg.kdf ? pk_reg_chan_init_cx(n->cfg.kdf, chan, h->vec.k_reg, session_id, 1)
                    : pk_reg_chan_init(chan, h->vec.k_reg, session_id, 1);
    if (rc != PK_OK)
        goto out;
    rc = pk_record_seal(chan, PK_REG_T_ACCEPT, ptbuf, ptlen, h->acc, sizeof h->acc, &len);
    if (rc != PK_OK) {
        pk_record_clear(chan);
        goto out;
    }
    uint8_t *d = pk_out_push(out, PK_ACT_SEND, PK_REG_T_ACCEPT, src, len);
    memcpy(d, h->acc, len); /* room checked above */
    h->acc_len = (uint16_t)len;
    pk_wipe(&h->vec.k_reg, sizeof h->vec.k_reg); /* the channel holds the keys now */
    h->state = PK_REG_H_DONE;
out:
    pk_wipe(ptbuf, sizeof ptbuf);
    return rc;
}

/* Entries made at or before now_ms - half_ttl_ms have expired: a prefix of
 * the age list, freed from the oldest end. O(expired entries). */
void pk_reg_node_timeout(pk_reg_node_t *n, uint64_t now_ms)
{
    const uint64_t ttl = n->cfg.half_ttl_ms;
    if (now_ms < ttl)
        return;
    for (size_t k = 0; k < n->cfg.nhalf && n->holdest != NIL; k++) {
        pk_reg_half_t *h = &n->cfg.half[n->holdest];
        if (h->created_ms > now_ms - ttl)
            break;
        half_free(n, h);
    }
}

/* The oldest entry's expiry, O(1). An entry whose created_ms + half_ttl_ms
 * does not fit in 64 bits never expires: UINT64_MAX. */
uint64_t pk_reg_node_next_deadline(const pk_reg_node_t *n)
{
    if (n->holdest == NIL)
        return UINT64_MAX;
    uint64_t c = n->cfg.half[n->holdest].created_ms;
    return c > UINT64_MAX - n->cfg.half_ttl_ms ? UINT64_MAX : c + n->cfg.half_ttl_ms;
}

size_t pk_reg_node_count(const pk_reg_node_t *n)
{
    size_t c = 0;
    for (size_t i = 0; i < n->cfg.nhalf; i++)
        c += n->cfg.half[i].state != PK_REG_H_FREE;
    return c;
}

void pk_reg_node_clear(pk_reg_node_t *n)
{
    pk_wipe(n->cfg.half, n->cfg.nhalf * sizeof *n->cfg.half);
    half_index_init(n);
}
