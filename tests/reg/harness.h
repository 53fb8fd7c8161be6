/*
 * In-process registration harness shared by tests/reg and tests/link: a
 * deterministic RNG, a toy kms (device keys and key sets in arrays, the real
 * pk_reg_kms_* functions), one node core, and a driver that carries the
 * messages and kms calls between them, the way the daemons' shells will.
 */
#ifndef PK_TESTS_REG_HARNESS_H
#define PK_TESTS_REG_HARNESS_H

#include <stdint.h>
#include <string.h>

#include "check.h"
#include "proto/reg/reg.h"

/* ---- deterministic RNG (splitmix64) ---- */
typedef struct h_rng {
    uint64_t s;
} h_rng_t;

static int h_rng_fill(void *ctx, uint8_t *buf, size_t n)
{
    h_rng_t *r = ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        buf[i] = (uint8_t)(z ^ (z >> 31));
    }
    return PK_OK;
}

static inline pk_rng_t h_rng(h_rng_t *r, uint64_t seed)
{
    r->s = seed;
    pk_rng_t g = {h_rng_fill, r};
    return g;
}

static inline pk_reg_id_t h_id(const char *s)
{
    pk_reg_id_t id;
    if (pk_reg_id_set(&id, s, strlen(s)) != PK_OK)
        abort();
    return id;
}

/* ---- toy kms ---- */
#define H_MAX_DEV 8
typedef struct h_kms {
    unsigned n;
    pk_reg_id_t dev[H_MAX_DEV];
    uint8_t k[H_MAX_DEV][16];
    pk_reg_keyset_t keys[H_MAX_DEV];
    h_rng_t rs;
    pk_rng_t rng;
    uint32_t next_ksi;
} h_kms_t;

static inline int h_kms_find(const h_kms_t *k, const pk_reg_id_t *dev)
{
    for (unsigned i = 0; i < k->n; i++)
        if (pk_reg_id_eq(&k->dev[i], dev))
            return (int)i;
    return -1;
}

/* ---- the world: a kms, a node, its tables ---- */
#define H_HALF 4
typedef struct h_world {
    h_kms_t kms;
    pk_reg_node_t node;
    pk_reg_half_t half[H_HALF];
    pk_reg_bucket_t bucket[4];
    pk_record_t node_chan[H_MAX_DEV]; /* the node's side of each device's channel */
    uint16_t next_sid;
    uint8_t arena[8192];
    pk_out_t out;
} h_world_t;

static inline void h_world_init(h_world_t *w, const char *node_id, uint32_t burst)
{
    memset(w, 0, sizeof *w);
    w->kms.rng = h_rng(&w->kms.rs, 0x6b6d73);
    w->kms.next_ksi = 0x1000;
    pk_reg_node_cfg_t cfg = {
        .node_id = h_id(node_id),
        .half = w->half,
        .nhalf = H_HALF,
        .bucket = w->bucket,
        .nbucket = 4,
        .burst = burst,
        .per_sec = 1,
        .half_ttl_ms = 30000,
    };
    if (pk_reg_node_init(&w->node, &cfg) != PK_OK)
        abort();
    w->next_sid = 0x100;
    pk_out_init(&w->out, w->arena, sizeof w->arena);
}

static inline void h_world_clear(h_world_t *w)
{
    pk_reg_node_clear(&w->node);
    for (unsigned i = 0; i < H_MAX_DEV; i++)
        pk_record_clear(&w->node_chan[i]);
    pk_wipe(&w->kms, sizeof w->kms);
}

/* Adds a device with key byte pattern kb; returns its index. */
static inline unsigned h_kms_add(h_kms_t *k, const char *id, uint8_t kb)
{
    unsigned i = k->n++;
    k->dev[i] = h_id(id);
    memset(k->k[i], kb, 16);
    k->keys[i].mode = PK_REG_MODE_PAIRS;
    return i;
}

/* Option 1: one root key for the pair (a, b), in both devices' sets. */
static inline void h_kms_pair(h_kms_t *k, unsigned a, unsigned b)
{
    uint32_t ksi = k->next_ksi++;
    uint8_t key[PK_REG_ROOT_KEY_LEN];
    pk_rng_fill(&k->rng, key, sizeof key);
    pk_reg_key_t *ka = &k->keys[a].k[k->keys[a].n++];
    pk_reg_key_t *kb = &k->keys[b].k[k->keys[b].n++];
    ka->ksi = kb->ksi = ksi;
    memcpy(ka->key, key, sizeof key);
    memcpy(kb->key, key, sizeof key);
    ka->peer = k->dev[b];
    kb->peer = k->dev[a];
}

/* Option 2: the same pool of n keys for every device. */
static inline void h_kms_pool(h_kms_t *k, unsigned n)
{
    pk_reg_keyset_t pool;
    memset(&pool, 0, sizeof pool);
    pool.mode = PK_REG_MODE_POOL;
    for (unsigned i = 0; i < n; i++) {
        pool.k[i].ksi = 0x2000 + i;
        pk_rng_fill(&k->rng, pool.k[i].key, PK_REG_ROOT_KEY_LEN);
    }
    pool.n = (uint8_t)n;
    for (unsigned d = 0; d < k->n; d++)
        k->keys[d] = pool;
}

/* The kms answering a NEED_VECTOR frame for node node_id (from its TLS cert). */
static inline int h_kms_vector(h_kms_t *k, const pk_reg_id_t *node_id, const uint8_t *frame,
                               size_t len, pk_reg_net_t *q, pk_reg_vector_t *v)
{
    int rc = pk_reg_net_decode(frame, len, q);
    if (rc != PK_OK || q->type != PK_REG_T_KMS_VEC_REQ || !pk_reg_id_eq(&q->a, node_id))
        return PK_ERR_DENIED;
    int i = h_kms_find(k, &q->b);
    if (i < 0)
        return PK_ERR_NOTFOUND;
    return pk_reg_kms_vector(k->k[i], 16, &k->rng, q->nonce_d, &q->b, node_id, v);
}

/* Carries every output of the node (events to the kms and back) until only
 * SENDs to devices remain; returns the index of the first SEND in w->out or
 * -1. dev_idx receives the kms index of the device that was accepted. */
static inline void h_node_service(h_world_t *w, pk_out_t *o, uint64_t now)
{
    /* events are handled in a bounded number of rounds */
    for (int round = 0; round < 4; round++) {
        int changed = 0;
        for (unsigned i = 0; i < o->n; i++) {
            pk_act_t *a = &o->act[i];
            if (a->kind != PK_ACT_EVENT)
                continue;
            a->kind = 0; /* consumed */
            changed = 1;
            pk_reg_net_t q;
            if (a->code == PK_REG_EV_NEED_VECTOR) {
                pk_reg_vector_t v;
                if (h_kms_vector(&w->kms, &w->node.cfg.node_id, a->data, a->len, &q, &v) == PK_OK)
                    CHECK_EQ_INT(pk_reg_node_vector(&w->node, a->dest, &q.b, q.nonce_d, &v, now, o),
                                 PK_OK);
                pk_wipe(&v, sizeof v);
            } else if (a->code == PK_REG_EV_NEED_KEYS) {
                CHECK_EQ_INT(pk_reg_net_decode(a->data, a->len, &q), PK_OK);
                int d = h_kms_find(&w->kms, &q.a);
                CHECK(d >= 0);
                if (d < 0)
                    continue;
                char tid[16];
                snprintf(tid, sizeof tid, "tmp-%u", w->next_sid);
                pk_reg_id_t t = h_id(tid);
                pk_record_clear(&w->node_chan[d]);
                CHECK_EQ_INT(pk_reg_node_accept(&w->node, a->dest, &q.a, w->next_sid++, &t,
                                                &w->kms.keys[d], &w->node_chan[d], now, o),
                             PK_OK);
            }
            pk_wipe(&q, sizeof q);
        }
        if (!changed)
            break;
    }
}

/* The single SEND of kind/code in o (or NULL). */
static inline pk_act_t *h_find_send(pk_out_t *o, uint16_t code)
{
    for (unsigned i = 0; i < o->n; i++)
        if (o->act[i].kind == PK_ACT_SEND && o->act[i].code == code)
            return &o->act[i];
    return NULL;
}

static inline int h_has_event(pk_out_t *o, uint16_t code)
{
    for (unsigned i = 0; i < o->n; i++)
        if (o->act[i].kind == PK_ACT_EVENT && o->act[i].code == code)
            return 1;
    return 0;
}

/* Runs a whole registration of d (source src) through the world; PK_OK when
 * the device ends REGISTERED. */
static inline int h_register(h_world_t *w, pk_reg_dev_t *d, uint64_t src, const pk_rng_t *rng,
                             uint64_t now)
{
    uint8_t a1[4096], a2[8192];
    pk_out_t od, on;
    pk_out_init(&od, a1, sizeof a1);
    pk_out_init(&on, a2, sizeof a2);
    if (pk_reg_dev_start(d, rng, now, &od) != PK_OK)
        return PK_ERR_STATE;
    for (int step = 0; step < 3; step++) {
        pk_act_t *s = NULL;
        for (unsigned i = 0; i < od.n; i++)
            if (od.act[i].kind == PK_ACT_SEND)
                s = &od.act[i];
        if (!s)
            return PK_ERR_STATE;
        pk_out_reset(&on);
        int rc = pk_reg_node_input(&w->node, src, s->data, s->len, now, &on);
        if (rc != PK_OK)
            return rc;
        h_node_service(w, &on, now);
        pk_act_t *r = NULL;
        for (unsigned i = 0; i < on.n; i++)
            if (on.act[i].kind == PK_ACT_SEND)
                r = &on.act[i];
        if (!r)
            return PK_ERR_STATE;
        pk_out_reset(&od);
        rc = pk_reg_dev_input(d, r->data, r->len, now, &od);
        if (rc != PK_OK)
            return rc;
        if (d->state == PK_REG_D_REGISTERED)
            return h_has_event(&od, PK_REG_EV_REGISTERED) ? PK_OK : PK_ERR_STATE;
    }
    return PK_ERR_STATE;
}

static inline void h_dev_init(pk_reg_dev_t *d, const char *id, const char *node, uint8_t kb)
{
    uint8_t k[16];
    memset(k, kb, sizeof k);
    pk_reg_dev_cfg_t cfg = {.dev_id = h_id(id),
                            .node_id = h_id(node),
                            .k = k,
                            .klen = 16,
                            .rto_ms = 1000,
                            .max_tries = 4};
    if (pk_reg_dev_init(d, &cfg) != PK_OK)
        abort();
}

#endif
