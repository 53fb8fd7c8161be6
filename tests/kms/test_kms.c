/*
 * The kms core against every backend: memory and SQLite always, PostgreSQL
 * when PK_TEST_PG is set (scripts/pg-harness.sh run sets it).
 *
 *   test_kms [--require-pg] [memory|sqlite|pg ...]
 *
 * Device names carry a per-run tag, so the suite may run again on a
 * PostgreSQL database that keeps old data.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backends.h"
#include "check.h"
#include "kms_fixture.h"
#include "core/crypto.h"
#include "proto/kms/kms.h"
#include "proto/reg/reg.h"
#include "store/store.h"

typedef struct env {
    pk_store_t *st;
    pk_kms_t *k;
} env_t;

static int env_open(env_t *e)
{
    pk_kms_cfg_t cfg = {.kek = kek, .cache_ttl_ms = 1000};
    memset(e, 0, sizeof *e);
    int rc = pk_store_open(B.uri, &e->st);
    if (rc != PK_OK)
        return rc;
    cfg.store = e->st;
    rc = pk_kms_new(&cfg, &e->k);
    if (rc != PK_OK) {
        pk_store_close(e->st);
        e->st = NULL;
    }
    return rc;
}

static void env_close(env_t *e)
{
    pk_kms_free(e->k);
    pk_store_close(e->st);
    memset(e, 0, sizeof *e);
}

static void set_id(pk_reg_id_t *id, const char *s)
{
    CHECK_EQ_INT(pk_reg_id_set(id, s, strlen(s)), PK_OK);
}

/* Sends one request; returns handle's rc; decodes a reg response into *r. */
static int call(env_t *e, const char *node, const pk_reg_net_t *q, pk_reg_net_t *r, uint8_t *raw,
                size_t *rawlen)
{
    uint8_t req[PK_REG_NET_MAX], resp[PK_KMS_RESP_MAX];
    size_t qlen = 0, rlen = 0;
    CHECK_EQ_INT(pk_reg_net_encode(q, req, sizeof req, &qlen), PK_OK);
    int rc = pk_kms_handle(e->k, node, req, qlen, now, resp, sizeof resp, &rlen);
    if (r) {
        memset(r, 0, sizeof *r);
        if (rc == PK_OK)
            CHECK_EQ_INT(pk_reg_net_decode(resp, rlen, r), PK_OK);
    }
    if (rc != PK_OK) { /* a refusal: KMS_ERR no longer than the request */
        CHECK(rlen == PK_KMS_ERR_LEN && rlen <= qlen);
        CHECK_EQ_INT(resp[0], PK_KMS_T_ERR);
        CHECK_EQ_INT(resp[1], pk_kms_status_of(rc));
        CHECK_EQ_INT(resp[2], q->type);
    }
    if (raw) {
        memcpy(raw, resp, rlen);
        *rawlen = rlen;
    }
    pk_wipe(resp, sizeof resp);
    return rc;
}

static int keys(env_t *e, const char *node, const char *dev, pk_reg_keyset_t *ks)
{
    pk_reg_net_t q = {.type = PK_REG_T_KMS_KEYS_REQ}, r;
    set_id(&q.a, dev);
    int rc = call(e, node, &q, &r, NULL, NULL);
    *ks = r.keys;
    if (rc == PK_OK)
        CHECK_EQ_INT(r.type, PK_REG_T_KMS_KEYS_RESP);
    pk_wipe(&r, sizeof r);
    return rc;
}

static int alloc(env_t *e, const char *node, const char *a, const char *b, uint32_t *ksi)
{
    pk_reg_net_t q = {.type = PK_REG_T_KMS_ALLOC_REQ}, r;
    set_id(&q.a, a);
    set_id(&q.b, b);
    int rc = call(e, node, &q, &r, NULL, NULL);
    *ksi = r.ksi;
    return rc;
}

/* alloc() as a node does it: KMS_ERR BUSY (a store conflict that outlived
 * the kms's own retries, e.g. two instances on PostgreSQL appending to one
 * audit log) means "retry later"; at most 8 tries. *busy counts them. */
static int alloc_retry(env_t *e, const char *node, const char *a, const char *b, uint32_t *ksi,
                       unsigned *busy)
{
    int rc = PK_ERR_BUSY;
    for (int t = 0; t < 8 && rc == PK_ERR_BUSY; t++) {
        if (t > 0) {
            (*busy)++;
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        rc = alloc(e, node, a, b, ksi);
    }
    return rc;
}

static const pk_reg_key_t *find_peer(const pk_reg_keyset_t *ks, const char *peer)
{
    for (unsigned i = 0; i < ks->n; i++)
        if (ks->k[i].peer.len == strlen(peer) &&
            memcmp(ks->k[i].peer.b, peer, ks->k[i].peer.len) == 0)
            return &ks->k[i];
    return NULL;
}

static const pk_reg_key_t *find_ksi(const pk_reg_keyset_t *ks, uint32_t ksi)
{
    for (unsigned i = 0; i < ks->n; i++)
        if (ks->k[i].ksi == ksi)
            return &ks->k[i];
    return NULL;
}

/* ---- option 1: root keys per pair ---- */

static void test_root_keys_per_pair(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    const char *d1 = nm("r1"), *d2 = nm("r2"), *d3 = nm("r3");
    CHECK_EQ_INT(pk_kms_device_add(e.k, d1, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, d2, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, d3, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, d3, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_kms_allow(e.k, d1, d2, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, d2, d1, now), PK_ERR_EXISTS); /* one pair, either order */
    CHECK_EQ_INT(pk_kms_allow(e.k, d3, d1, now), PK_OK);

    pk_reg_keyset_t k1, k1b, k2, k3;
    CHECK_EQ_INT(keys(&e, "node-a", d1, &k1), PK_OK);
    CHECK_EQ_INT(k1.mode, PK_REG_MODE_PAIRS);
    CHECK_EQ_INT(k1.n, 2);
    CHECK_EQ_INT(keys(&e, "node-b", d2, &k2), PK_OK);
    CHECK_EQ_INT(k2.n, 1); /* d2-d3 is not allowed: nothing for it */
    CHECK(find_peer(&k2, d3) == NULL);
    CHECK_EQ_INT(keys(&e, "node-c", d3, &k3), PK_OK);
    CHECK_EQ_INT(k3.n, 1);
    /* the same key and KSI for both devices of a pair, whichever node asks */
    const pk_reg_key_t *a = find_peer(&k1, d2), *b = find_peer(&k2, d1);
    CHECK(a && b);
    if (a && b) {
        CHECK_EQ_INT(a->ksi, b->ksi);
        CHECK_MEM(a->key, b->key, 32);
    }
    a = find_peer(&k1, d3);
    b = find_peer(&k3, d1);
    CHECK(a && b);
    if (a && b) {
        CHECK_EQ_INT(a->ksi, b->ksi);
        CHECK_MEM(a->key, b->key, 32);
        CHECK(a->ksi != find_peer(&k1, d2)->ksi);
    }
    CHECK_EQ_INT(keys(&e, "node-z", d1, &k1b), PK_OK);
    CHECK_EQ_INT(k1b.n, k1.n);
    CHECK_MEM(&k1b, &k1, sizeof k1);
    CHECK_EQ_INT(pk_kms_stats(e.k)->root_keys_created, 2);
    /* the directory follows the last node that fetched the keys */
    pk_kms_device_info_t info;
    CHECK_EQ_INT(pk_kms_device_show(e.k, d1, &info), PK_OK);
    CHECK_EQ_INT(info.node.len, 6);
    CHECK(memcmp(info.node.b, "node-z", 6) == 0);
    CHECK_EQ_INT(info.npairs, 2);
    pk_wipe(&k1, sizeof k1);
    pk_wipe(&k1b, sizeof k1b);
    pk_wipe(&k2, sizeof k2);
    pk_wipe(&k3, sizeof k3);
    env_close(&e);
}

static void test_deny_revokes(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    const char *d1 = nm("y1"), *d2 = nm("y2");
    CHECK_EQ_INT(pk_kms_device_add(e.k, d1, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, d2, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    pk_reg_keyset_t ks, ks2;
    CHECK_EQ_INT(keys(&e, "n1", d1, &ks), PK_OK);
    CHECK_EQ_INT(ks.n, 0); /* nothing allowed yet */
    CHECK_EQ_INT(pk_kms_allow(e.k, d1, d2, now), PK_OK);
    CHECK_EQ_INT(keys(&e, "n1", d1, &ks), PK_OK);
    CHECK_EQ_INT(ks.n, 1);
    int still = -1;
    CHECK_EQ_INT(pk_kms_deny(e.k, d2, d1, now, &still), PK_OK);
    CHECK_EQ_INT(still, 0);
    CHECK_EQ_INT(pk_kms_deny(e.k, d2, d1, now, &still), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(keys(&e, "n1", d1, &ks2), PK_OK);
    CHECK_EQ_INT(ks2.n, 0);
    CHECK_EQ_INT(keys(&e, "n2", d2, &ks2), PK_OK);
    CHECK_EQ_INT(ks2.n, 0);
    /* allowed again: a new root key, never the revoked one */
    CHECK_EQ_INT(pk_kms_allow(e.k, d1, d2, now), PK_OK);
    CHECK_EQ_INT(keys(&e, "n1", d1, &ks2), PK_OK);
    CHECK_EQ_INT(ks2.n, 1);
    CHECK(ks2.k[0].ksi != ks.k[0].ksi);
    CHECK(memcmp(ks2.k[0].key, ks.k[0].key, 32) != 0);

    /* groups allow every pair inside them */
    const char *g = nm("grp"), *m1 = nm("g1"), *m2 = nm("g2"), *m3 = nm("g3");
    CHECK_EQ_INT(pk_kms_device_add(e.k, m1, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, m2, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, m3, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_group_add(e.k, g, m1, now), PK_OK);
    CHECK_EQ_INT(pk_kms_group_add(e.k, g, m2, now), PK_OK);
    CHECK_EQ_INT(pk_kms_group_add(e.k, g, m3, now), PK_OK);
    CHECK_EQ_INT(pk_kms_group_add(e.k, g, m3, now), PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_kms_is_allowed(e.k, m1, m3), 1);
    CHECK_EQ_INT(pk_kms_is_allowed(e.k, m1, d1), 0);
    CHECK_EQ_INT(keys(&e, "n1", m1, &ks), PK_OK);
    CHECK_EQ_INT(ks.n, 2);
    CHECK_EQ_INT(pk_kms_allow(e.k, m1, m2, now), PK_OK); /* explicit too */
    CHECK_EQ_INT(pk_kms_group_remove(e.k, g, m3, now), PK_OK);
    CHECK_EQ_INT(pk_kms_is_allowed(e.k, m1, m3), 0);
    CHECK_EQ_INT(keys(&e, "n1", m1, &ks2), PK_OK);
    CHECK_EQ_INT(ks2.n, 1);
    CHECK(find_peer(&ks2, m2) && find_peer(&ks, m2) &&
          find_peer(&ks2, m2)->ksi == find_peer(&ks, m2)->ksi);
    CHECK_EQ_INT(pk_kms_deny(e.k, m1, m2, now, &still), PK_OK);
    CHECK_EQ_INT(still, 1); /* the group still allows it */
    CHECK_EQ_INT(pk_kms_group_remove(e.k, g, NULL, now), PK_OK);
    CHECK_EQ_INT(pk_kms_is_allowed(e.k, m1, m2), 0);
    CHECK_EQ_INT(keys(&e, "n1", m1, &ks2), PK_OK);
    CHECK_EQ_INT(ks2.n, 0);
    CHECK_EQ_INT(pk_kms_group_remove(e.k, g, NULL, now), PK_ERR_NOTFOUND);

    /* device removal: gone for vectors and keys, its pairs revoked */
    CHECK_EQ_INT(pk_kms_device_remove(e.k, d2, now), PK_OK);
    CHECK_EQ_INT(pk_kms_device_remove(e.k, d2, now), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(keys(&e, "n1", d2, &ks2), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(keys(&e, "n1", d1, &ks2), PK_OK);
    CHECK_EQ_INT(ks2.n, 0);
    CHECK_EQ_INT(pk_kms_is_allowed(e.k, d1, d2), 0);
    pk_wipe(&ks, sizeof ks);
    pk_wipe(&ks2, sizeof ks2);
    env_close(&e);
}

/* ---- vectors ---- */

static void test_vectors(void)
{
    env_t e;
    uint8_t key[32], gen[32];
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(0xA0 + i);
    const char *d = nm("v1"), *d16 = nm("v16");
    CHECK_EQ_INT(pk_kms_device_add(e.k, d, key, 32, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, d16, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, gen), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, nm("bad"), key, 20, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_ERR_INVAL);
    CHECK_EQ_INT(
        pk_kms_device_add(e.k, nm("bad"), key, 32, PK_REG_MODE_POOL, nm("nopool"), now, NULL),
        PK_ERR_NOTFOUND);

    for (int round = 0; round < 3; round++) { /* miss, then cache hits */
        pk_reg_net_t q = {.type = PK_REG_T_KMS_VEC_REQ}, r;
        set_id(&q.a, "node-a");
        set_id(&q.b, round == 2 ? d16 : d);
        memset(q.nonce_d, 0x11 * (round + 1), 16);
        CHECK_EQ_INT(call(&e, "node-a", &q, &r, NULL, NULL), PK_OK);
        CHECK_EQ_INT(r.type, PK_REG_T_KMS_VEC_RESP);
        CHECK_EQ_INT(r.status, PK_REG_ST_OK);
        uint8_t autn[16], res[16], kreg[32];
        CHECK_EQ_INT(pk_reg_derive(round == 2 ? gen : key, 32, r.vec.rand, q.nonce_d, &q.a, &q.b,
                                   autn, res, kreg),
                     PK_OK);
        CHECK_MEM(autn, r.vec.autn, 16);
        CHECK_MEM(res, r.vec.xres, 16);
        CHECK_MEM(kreg, r.vec.k_reg, 32);
        pk_wipe(&r, sizeof r);
    }
    CHECK(pk_kms_stats(e.k)->cache_hits >= 1);
    CHECK_EQ_INT(pk_kms_pending(e.k), 3);
    uint64_t g = pk_kms_batch_gen(e.k);
    CHECK_EQ_INT(pk_kms_flush(e.k), PK_OK);
    CHECK_EQ_INT(pk_kms_pending(e.k), 0);
    CHECK_EQ_INT(pk_kms_batch_gen(e.k), g + 1);
    CHECK_EQ_INT(pk_kms_flush(e.k), PK_OK); /* nothing queued: no new batch */
    CHECK_EQ_INT(pk_kms_batch_gen(e.k), g + 1);

    /* a node asking in another node's name, an unknown device */
    pk_reg_net_t q = {.type = PK_REG_T_KMS_VEC_REQ};
    set_id(&q.a, "node-b");
    set_id(&q.b, d);
    CHECK_EQ_INT(call(&e, "node-a", &q, NULL, NULL, NULL), PK_ERR_DENIED);
    set_id(&q.a, "node-a");
    set_id(&q.b, nm("nobody"));
    CHECK_EQ_INT(call(&e, "node-a", &q, NULL, NULL, NULL), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_pending(e.k), 0);

    /* removal drops the cached key at once */
    CHECK_EQ_INT(pk_kms_device_remove(e.k, d, now), PK_OK);
    set_id(&q.b, d);
    CHECK_EQ_INT(call(&e, "node-a", &q, NULL, NULL, NULL), PK_ERR_NOTFOUND);
    pk_wipe(key, sizeof key);
    env_close(&e);
}

/* ---- option 2: pools ---- */

static void test_pool(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    const char *pool = nm("pool"), *p1 = nm("p1"), *p2 = nm("p2"), *p3 = nm("p3"), *p4 = nm("p4");
    uint32_t first = 0, total = 0, used = 0;
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 40, now, &first), PK_OK);
    CHECK(first >= 1);
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 5, now, NULL), PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_kms_pool_create(e.k, nm("zero"), 0, now, NULL), PK_ERR_INVAL);
    const char *ps[4] = {p1, p2, p3, p4};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pk_kms_device_add(e.k, ps[i], NULL, 0, PK_REG_MODE_POOL, pool, now, NULL),
                     PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, p1, p2, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, p3, p4, now), PK_OK);
    uint32_t k12 = 0, k34 = 0, again = 0, x = 0;
    pk_reg_keyset_t ks[4];
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(keys(&e, "n1", ps[i], &ks[i]), PK_OK);
        CHECK_EQ_INT(ks[i].mode, PK_REG_MODE_POOL);
        CHECK_EQ_INT(ks[i].n, PK_REG_MAX_KEYS);
        CHECK_EQ_INT(ks[i].k[0].ksi, first);
    }
    for (int i = 1; i < 4; i++)
        CHECK_MEM(&ks[0], &ks[i], sizeof ks[0]); /* one pool, one fixed key set */
    for (unsigned i = 1; i < ks[0].n; i++)
        CHECK(ks[0].k[i].ksi > ks[0].k[i - 1].ksi); /* ascending KSI order */
    CHECK_EQ_INT(alloc(&e, "n1", p1, p2, &k12), PK_OK);
    CHECK_EQ_INT(alloc(&e, "n2", p4, p3, &k34), PK_OK);
    CHECK(k12 != k34);
    /* a fresh KSI: no pool key's (the set holds first .. first + 39) */
    CHECK(k12 >= first + 40 && k34 >= first + 40);
    CHECK(find_ksi(&ks[0], k12) == NULL);
    CHECK_EQ_INT(alloc(&e, "n1", p2, p1, &again), PK_OK); /* the pair keeps its KSI */
    CHECK_EQ_INT(again, k12);
    CHECK_EQ_INT(alloc(&e, "n1", p1, p3, &x), PK_ERR_DENIED); /* not allowed */
    CHECK_EQ_INT(alloc(&e, "n1", p1, p1, &x), PK_ERR_DENIED); /* a device with itself */
    CHECK_EQ_INT(alloc(&e, "n1", p1, nm("nobody"), &x), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_pool_info(e.k, pool, &total, &used), PK_OK);
    CHECK_EQ_INT(total, 40);
    CHECK_EQ_INT(used, 0); /* allocations consume no pool key */
    /* a re-registration returns the same keys and keeps the pair's KSI */
    pk_reg_keyset_t late;
    CHECK_EQ_INT(keys(&e, "n3", p3, &late), PK_OK);
    CHECK_MEM(&late, &ks[2], sizeof late);
    uint32_t k34b = 0;
    CHECK_EQ_INT(alloc(&e, "n2", p3, p4, &k34b), PK_OK);
    CHECK_EQ_INT(k34b, k34);
    pk_wipe(&late, sizeof late);
    /* option 1 and option 2 do not mix */
    const char *o1 = nm("o1");
    CHECK_EQ_INT(pk_kms_device_add(e.k, o1, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, o1, p1, now), PK_OK);
    CHECK_EQ_INT(alloc(&e, "n1", p1, o1, &x), PK_ERR_DENIED);
    pk_reg_keyset_t ko;
    CHECK_EQ_INT(keys(&e, "n1", o1, &ko), PK_OK);
    CHECK_EQ_INT(ko.n, 0); /* p1 is a pool device: no pair key for it */

    /* a one-key pool never runs out: every pair gets its own KSI, all
     * selecting the one key (KSI mod 1) */
    const char *sp = nm("small"), *s1 = nm("s1"), *s2 = nm("s2"), *s3 = nm("s3");
    CHECK_EQ_INT(pk_kms_pool_create(e.k, sp, 1, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, s1, NULL, 0, PK_REG_MODE_POOL, sp, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, s2, NULL, 0, PK_REG_MODE_POOL, sp, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, s3, NULL, 0, PK_REG_MODE_POOL, sp, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, s1, s2, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, s1, s3, now), PK_OK);
    pk_reg_keyset_t t;
    CHECK_EQ_INT(keys(&e, "n1", s1, &t), PK_OK);
    CHECK_EQ_INT(keys(&e, "n1", s2, &t), PK_OK);
    CHECK_EQ_INT(keys(&e, "n1", s3, &t), PK_OK);
    CHECK_EQ_INT(t.n, 1);
    uint32_t x2 = 0;
    CHECK_EQ_INT(alloc(&e, "n1", s1, s2, &x), PK_OK);
    CHECK_EQ_INT(alloc(&e, "n1", s1, s3, &x2), PK_OK);
    CHECK(x != x2 && x != 0 && x2 != 0);
    CHECK_EQ_INT(keys(&e, "n1", s3, &t), PK_OK);
    CHECK_EQ_INT(t.n, 1);
    pk_wipe(&t, sizeof t);
    /* the directory lookup */
    {
        uint8_t req[80], resp[PK_KMS_RESP_MAX];
        size_t ql = 0, rl = 0;
        pk_kms_msg_t m = {.type = PK_KMS_T_DIR_REQ}, r;
        set_id(&m.id, p4);
        CHECK_EQ_INT(pk_kms_msg_encode(&m, req, sizeof req, &ql), PK_OK);
        CHECK_EQ_INT(pk_kms_handle(e.k, "n9", req, ql, now, resp, sizeof resp, &rl), PK_OK);
        CHECK_EQ_INT(pk_kms_msg_decode(resp, rl, &r), PK_OK);
        CHECK_EQ_INT(r.type, PK_KMS_T_DIR_RESP);
        CHECK(r.id.len == 2 && memcmp(r.id.b, "n1", 2) == 0);
        set_id(&m.id, nm("nobody"));
        CHECK_EQ_INT(pk_kms_msg_encode(&m, req, sizeof req, &ql), PK_OK);
        CHECK_EQ_INT(pk_kms_handle(e.k, "n9", req, ql, now, resp, sizeof resp, &rl),
                     PK_ERR_NOTFOUND);
        CHECK(rl == 3 && resp[0] == PK_KMS_T_ERR && resp[1] == PK_REG_ST_UNKNOWN);
    }
    for (int i = 0; i < 4; i++)
        pk_wipe(&ks[i], sizeof ks[i]);
    env_close(&e);
}

/* ---- restart, secrets at rest, audit ---- */

struct audit_acc {
    unsigned n, vectors, root, pool_alloc, pool_keys;
};

static int audit_cb(void *ctx, const pk_kms_audit_t *a)
{
    struct audit_acc *c = ctx;
    c->n++;
    c->vectors += a->what == PK_KMS_A_VECTOR;
    c->root += a->what == PK_KMS_A_ROOT_KEY;
    c->pool_alloc += a->what == PK_KMS_A_POOL_ALLOC;
    c->pool_keys += a->what == PK_KMS_A_POOL_KEYS;
    return 0;
}

struct rawscan {
    const uint8_t *needle[8];
    size_t nneedle;
    unsigned hits, records;
};

static int raw_cb(void *ctx, uint64_t seqno, const uint8_t *val, size_t vlen)
{
    struct rawscan *c = ctx;
    (void)seqno;
    c->records++;
    for (size_t i = 0; i < c->nneedle; i++)
        if (memmem(val, vlen, c->needle[i], 16))
            c->hits++;
    return 0;
}

static int raw_fn(pk_txn_t *txn, void *ctx)
{
    return pk_txn_log_scan(txn, PK_KMS_AUDIT_LOG, 1, PK_STORE_SCAN_MAX, raw_cb, ctx);
}

static void test_restart_audit_at_rest(void)
{
    env_t e;
    uint8_t dk[32];
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    for (int i = 0; i < 32; i++)
        dk[i] = (uint8_t)(0x5C ^ (i * 7));
    const char *a = nm("ra"), *b = nm("rb"), *pool = nm("rpool"), *x = nm("rx"), *y = nm("ry");
    CHECK_EQ_INT(pk_kms_device_add(e.k, a, dk, 32, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 8, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, x, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, y, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, x, y, now), PK_OK);
    pk_reg_keyset_t ka, kx, ka2, kx2;
    uint32_t ksi = 0, ksi2 = 0;
    CHECK_EQ_INT(keys(&e, "n1", a, &ka), PK_OK);
    CHECK_EQ_INT(keys(&e, "n1", x, &kx), PK_OK);
    CHECK_EQ_INT(keys(&e, "n1", y, &kx2), PK_OK);
    CHECK_EQ_INT(alloc(&e, "n1", x, y, &ksi), PK_OK);
    pk_reg_net_t q = {.type = PK_REG_T_KMS_VEC_REQ};
    set_id(&q.a, "n1");
    set_id(&q.b, a);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(call(&e, "n1", &q, NULL, NULL, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_flush(e.k), PK_OK);

    if (B.persistent) {
        env_close(&e);
        CHECK_EQ_INT(env_open(&e), PK_OK);
        CHECK_EQ_INT(keys(&e, "n2", a, &ka2), PK_OK);
        CHECK_MEM(&ka2, &ka, sizeof ka);
        CHECK_EQ_INT(alloc(&e, "n2", y, x, &ksi2), PK_OK);
        CHECK_EQ_INT(ksi2, ksi); /* the allocation survived */
        /* an allocated KSI is never handed out again, also after a restart:
         * a new pair gets a new one; a new device the same pool keys */
        const char *z = nm("rz");
        uint32_t ksi3 = 0;
        CHECK_EQ_INT(pk_kms_device_add(e.k, z, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
        CHECK_EQ_INT(pk_kms_allow(e.k, x, z, now), PK_OK);
        CHECK_EQ_INT(keys(&e, "n2", z, &kx2), PK_OK);
        CHECK_EQ_INT(kx2.n, 8);
        CHECK_MEM(&kx2, &kx, sizeof kx); /* the same pool keys as before */
        CHECK_EQ_INT(alloc(&e, "n2", z, x, &ksi3), PK_OK);
        CHECK(ksi3 > ksi);
        CHECK_EQ_INT(pk_kms_flush(e.k), PK_OK);
    }
    /* audit: every issuance is there */
    struct audit_acc acc = {0};
    CHECK_EQ_INT(pk_kms_audit_list(e.k, 1, PK_STORE_SCAN_MAX, audit_cb, &acc), PK_OK);
    CHECK(acc.vectors >= 5);
    CHECK(acc.root >= 1);
    CHECK(acc.pool_alloc >= 1);
    CHECK(acc.pool_keys >= 2);
    /* and no key bytes: not the device key, a root key, a pool key */
    struct rawscan rs = {.needle = {dk, ka.k[0].key, kx.k[0].key, kx.k[1].key}, .nneedle = 4};
    CHECK_EQ_INT(pk_store_run_read(e.st, raw_fn, &rs, 1), PK_OK);
    CHECK_EQ_INT(rs.hits, 0);
    CHECK_EQ_INT(rs.records, acc.n);

    if (strcmp(B.name, "sqlite") == 0) {
        /* secrets are not in the clear in the database file (nor its WAL) */
        env_close(&e);
        const char *suffix[2] = {"", "-wal"};
        for (int f = 0; f < 2; f++) {
            char p[600];
            snprintf(p, sizeof p, "%s%s", B.path, suffix[f]);
            FILE *fp = fopen(p, "rb");
            if (!fp) {
                CHECK(f == 1);
                continue;
            }
            static uint8_t buf[8 << 20];
            size_t n = fread(buf, 1, sizeof buf, fp);
            fclose(fp);
            CHECK(n > 0);
            CHECK(memmem(buf, n, dk, 16) == NULL);
            CHECK(memmem(buf, n, ka.k[0].key, 16) == NULL);
            CHECK(memmem(buf, n, kx.k[0].key, 16) == NULL);
            /* the test itself can fail: a known public string is found */
            CHECK(memmem(buf, n, a, strlen(a)) != NULL || f == 1);
        }
        CHECK_EQ_INT(env_open(&e), PK_OK);
    }
    pk_wipe(&ka, sizeof ka);
    pk_wipe(&ka2, sizeof ka2);
    pk_wipe(&kx, sizeof kx);
    pk_wipe(&kx2, sizeof kx2);
    pk_wipe(dk, sizeof dk);
    env_close(&e);
}

/* ---- hostile requests change nothing ---- */

static const char *const buckets[] = {"kms_dev",  "kms_allow", "kms_peer",      "kms_grp",
                                      "kms_grpm", "kms_root",  "kms_pool",      "kms_poolkey",
                                      "kms_win",  "kms_alloc", "kms_pairalloc", "kms_dir"};

struct digest {
    uint64_t count[12];
    uint64_t audit;
};

static int count_rec(void *ctx, uint64_t seqno, const uint8_t *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    *(uint64_t *)ctx = seqno;
    return 0;
}

static int digest_fn(pk_txn_t *txn, void *ctx)
{
    struct digest *d = ctx;
    for (int i = 0; i < 12; i++) {
        int rc = pk_txn_count(txn, buckets[i], NULL, 0, &d->count[i]);
        if (rc != PK_OK)
            return rc;
    }
    d->audit = 0;
    return pk_txn_log_scan(txn, PK_KMS_AUDIT_LOG, 1, PK_STORE_SCAN_MAX, count_rec, &d->audit);
}

static void test_hostile(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    const char *d = nm("h1"), *pool = nm("hpool"), *h2 = nm("h2"), *h3 = nm("h3");
    CHECK_EQ_INT(pk_kms_device_add(e.k, d, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 4, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, h2, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, h3, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    pk_reg_keyset_t ks;
    CHECK_EQ_INT(keys(&e, "n1", h2, &ks), PK_OK);
    CHECK_EQ_INT(pk_kms_flush(e.k), PK_OK);

    struct digest before, after;
    memset(&before, 0, sizeof before);
    CHECK_EQ_INT(pk_store_run_read(e.st, digest_fn, &before, 4), PK_OK);
    CHECK(before.count[0] >= 3 && before.audit > 0);

    uint8_t good[PK_REG_NET_MAX], resp[PK_KMS_RESP_MAX], big[PK_REG_NET_MAX + 8];
    size_t glen = 0, rl = 0;
    pk_reg_net_t q = {.type = PK_REG_T_KMS_VEC_REQ};
    set_id(&q.a, "n1");
    set_id(&q.b, d);
    CHECK_EQ_INT(pk_reg_net_encode(&q, good, sizeof good, &glen), PK_OK);
    /* truncated at every length */
    for (size_t n = 0; n < glen; n++) {
        int rc = pk_kms_handle(e.k, "n1", good, n, now, resp, sizeof resp, &rl);
        CHECK_EQ_INT(rc, PK_ERR_MALFORMED);
        CHECK(rl <= n);
    }
    /* one byte too many, oversized */
    memcpy(big, good, glen);
    big[glen] = 0;
    CHECK_EQ_INT(pk_kms_handle(e.k, "n1", big, glen + 1, now, resp, sizeof resp, &rl),
                 PK_ERR_MALFORMED);
    memset(big, 0x42, sizeof big);
    big[0] = PK_REG_T_KMS_KEYS_REQ;
    CHECK_EQ_INT(pk_kms_handle(e.k, "n1", big, sizeof big, now, resp, sizeof resp, &rl),
                 PK_ERR_MALFORMED);
    /* response types and unknown types are not requests */
    uint8_t t[PK_REG_NET_MAX];
    memcpy(t, good, glen);
    const uint8_t types[] = {PK_REG_T_KMS_VEC_RESP,
                             PK_REG_T_KMS_KEYS_RESP,
                             PK_REG_T_KMS_ALLOC_RESP,
                             PK_REG_T_NODE_LINK_IND,
                             PK_KMS_T_DIR_RESP,
                             PK_KMS_T_ERR,
                             0x00,
                             0xFF};
    for (size_t i = 0; i < sizeof types; i++) {
        t[0] = types[i];
        CHECK(pk_kms_handle(e.k, "n1", t, glen, now, resp, sizeof resp, &rl) != PK_OK);
        CHECK(rl <= glen);
    }
    /* node mismatch, bad node CN, unknown device, disallowed alloc */
    CHECK_EQ_INT(pk_kms_handle(e.k, "n2", good, glen, now, resp, sizeof resp, &rl), PK_ERR_DENIED);
    CHECK_EQ_INT(pk_kms_handle(e.k, "", good, glen, now, resp, sizeof resp, &rl), PK_ERR_DENIED);
    uint32_t x;
    CHECK_EQ_INT(alloc(&e, "n1", h2, h3, &x), PK_ERR_DENIED);
    pk_reg_net_t kq = {.type = PK_REG_T_KMS_KEYS_REQ};
    set_id(&kq.a, nm("ghost"));
    CHECK_EQ_INT(call(&e, "n1", &kq, NULL, NULL, NULL), PK_ERR_NOTFOUND);
    /* random bytes */
    uint64_t s = 0x9E3779B97F4A7C15ull;
    unsigned ok = 0;
    for (int i = 0; i < 3000; i++) {
        uint8_t r[128];
        size_t n = (size_t)(s % sizeof r);
        for (size_t j = 0; j < n; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            r[j] = (uint8_t)s;
        }
        if (n > 0 && i % 3 == 0) /* a plausible type byte */
            r[0] = (uint8_t)(0x40 + s % 16);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int rc = pk_kms_handle(e.k, "n1", r, n, now, resp, sizeof resp, &rl);
        if (rc == PK_OK)
            ok++;
        else
            CHECK(rl <= n);
    }
    CHECK_EQ_INT(ok, 0);
    CHECK_EQ_INT(pk_kms_pending(e.k), 0);
    CHECK_EQ_INT(pk_kms_flush(e.k), PK_OK);
    memset(&after, 0, sizeof after);
    CHECK_EQ_INT(pk_store_run_read(e.st, digest_fn, &after, 4), PK_OK);
    CHECK_MEM(&before, &after, sizeof before);
    /* the test can fail: a good request does change the state */
    CHECK_EQ_INT(pk_kms_handle(e.k, "n1", good, glen, now, resp, sizeof resp, &rl), PK_OK);
    CHECK_EQ_INT(pk_kms_flush(e.k), PK_OK);
    CHECK_EQ_INT(pk_store_run_read(e.st, digest_fn, &after, 4), PK_OK);
    CHECK_EQ_INT(after.audit, before.audit + 1);
    pk_wipe(resp, sizeof resp);
    pk_wipe(&ks, sizeof ks);
    env_close(&e);
}

/* ---- two kms instances allocating from one pool at once ---- */

/* The kms_alloc record of ksi names the pair (a, b) (the store agrees with
 * what the kms answered): 1 yes, 0 no. */
struct alloc_chk {
    uint32_t ksi;
    const char *a, *b;
    int ok;
};

static int alloc_chk_fn(pk_txn_t *txn, void *ctx)
{
    struct alloc_chk *c = ctx;
    uint8_t key[4], val[2 * 65 + 8], want[2 * 65];
    size_t vl = 0, al = strlen(c->a), bl = strlen(c->b), wl = 0;
    pk_put_u32(key, c->ksi);
    int rc = pk_txn_get(txn, "kms_alloc", key, 4, val, sizeof val, &vl);
    if (rc != PK_OK)
        return rc;
    /* blk(lo) || blk(hi) in memcmp order of the blk encodings */
    uint8_t x[65], y[65];
    x[0] = (uint8_t)al;
    memcpy(x + 1, c->a, al);
    y[0] = (uint8_t)bl;
    memcpy(y + 1, c->b, bl);
    size_t m = al < bl ? al + 1 : bl + 1;
    int cmp = memcmp(x, y, m);
    const uint8_t *lo = (cmp > 0 || (cmp == 0 && al > bl)) ? y : x, *hi = lo == x ? y : x;
    memcpy(want, lo, (size_t)lo[0] + 1);
    wl = (size_t)lo[0] + 1;
    memcpy(want + wl, hi, (size_t)hi[0] + 1);
    wl += (size_t)hi[0] + 1;
    c->ok = vl == wl + 8 && memcmp(val, want, wl) == 0 && pk_get_u64(val + wl) == now;
    return PK_OK;
}

static int alloc_names(env_t *e, uint32_t ksi, const char *a, const char *b)
{
    struct alloc_chk c = {.ksi = ksi, .a = a, .b = b};
    if (pk_store_run_read(e->st, alloc_chk_fn, &c, 4) != PK_OK)
        return 0;
    return c.ok;
}

#define PROCS    2
#define PER_PROC 60
#define SHARED   20 /* pairs both instances ask for at once */

static void cname(char *out, size_t cap, const char *what, int p, int i, char side)
{
    snprintf(out, cap, "%s-%s%d-%d-%c", B.tag, what, p, i, side);
}

static void test_concurrent_alloc(void)
{
    if (strcmp(B.name, "memory") == 0)
        return; /* a memory store is private to its process */
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    const char *pool = nm("cpool");
    /* a pool with fewer keys than pairs: keys are shared, KSIs are not */
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 8, now, NULL), PK_OK);
    for (int p = 0; p <= PROCS; p++) /* p == PROCS: the shared pairs */
        for (int i = 0; i < (p == PROCS ? SHARED : PER_PROC); i++) {
            char a[64], b[64];
            cname(a, sizeof a, "c", p, i, 'a');
            cname(b, sizeof b, "c", p, i, 'b');
            CHECK_EQ_INT(pk_kms_device_add(e.k, a, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL),
                         PK_OK);
            CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL),
                         PK_OK);
            CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
        }
    env_close(&e);

    enum { NOWN = PER_PROC, NALL = PER_PROC + SHARED };
    int fds[PROCS][2];
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        CHECK_EQ_INT(pipe(fds[p]), 0);
        pids[p] = fork();
        if (pids[p] == 0) {
            close(fds[p][0]);
            env_t c;
            int bad = 0;
            unsigned busy = 0;
            if (env_open(&c) != PK_OK)
                _exit(3);
            /* own pairs and shared pairs interleaved; the shared ones in
             * opposite orders in the two processes */
            for (int j = 0; j < NALL; j++) {
                char a[64], b[64];
                pk_reg_keyset_t ks;
                uint32_t ksi = 0;
                int own = j < NOWN, i = own ? j : j - NOWN;
                if (!own && p % 2)
                    i = SHARED - 1 - i;
                cname(a, sizeof a, "c", own ? p : PROCS, i, 'a');
                cname(b, sizeof b, "c", own ? p : PROCS, i, 'b');
                int r1 = keys(&c, "nx", a, &ks);
                int r2 = keys(&c, "ny", b, &ks);
                int r3 = alloc_retry(&c, p ? "ny" : "nx", a, b, &ksi, &busy);
                if (r1 != PK_OK || r2 != PK_OK || r3 != PK_OK) {
                    fprintf(stderr, "proc %d pair %d: %d %d %d\n", p, j, r1, r2, r3);
                    bad++;
                    ksi = 0;
                }
                uint32_t rec[2] = {(uint32_t)(own ? p * NOWN + i : PROCS * NOWN + i), ksi};
                if (write(fds[p][1], rec, sizeof rec) != sizeof rec)
                    bad++;
                pk_wipe(&ks, sizeof ks);
            }
            bad += pk_kms_flush(c.k) != PK_OK;
            if (busy)
                fprintf(stderr, "  proc %d: %u BUSY answers retried\n", p, busy);
            env_close(&c);
            _exit(bad ? 1 : 0);
        }
        close(fds[p][1]);
    }
    /* by pair: own pairs 0..PROCS*NOWN-1, then the shared ones */
    uint32_t got[PROCS * NOWN + SHARED][PROCS];
    memset(got, 0, sizeof got);
    size_t n = 0;
    for (int p = 0; p < PROCS; p++) {
        uint32_t rec[2];
        while (read(fds[p][0], rec, sizeof rec) == sizeof rec && n < PROCS * NALL) {
            if (rec[0] < PROCS * NOWN + SHARED)
                got[rec[0]][p] = rec[1];
            n++;
        }
        close(fds[p][0]);
        int st = 0;
        waitpid(pids[p], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_EQ_INT(n, PROCS * NALL);
    /* one KSI per pair (a shared pair the same from both instances), and no
     * KSI for two pairs */
    uint32_t ksi[PROCS * NOWN + SHARED];
    unsigned zeros = 0, dups = 0, split = 0;
    for (int q = 0; q < PROCS * NOWN + SHARED; q++) {
        int owner = q < PROCS * NOWN ? q / NOWN : -1;
        ksi[q] = got[q][owner < 0 ? 0 : owner];
        zeros += ksi[q] == 0;
        if (owner < 0)
            for (int p = 1; p < PROCS; p++)
                split += got[q][p] != ksi[q];
    }
    for (int q = 0; q < PROCS * NOWN + SHARED; q++)
        for (int r = q + 1; r < PROCS * NOWN + SHARED; r++)
            dups += ksi[q] == ksi[r];
    CHECK_EQ_INT(zeros, 0);
    CHECK_EQ_INT(split, 0);
    CHECK_EQ_INT(dups, 0);
    /* and the store agrees: each KSI's exclusive record names its pair */
    CHECK_EQ_INT(env_open(&e), PK_OK);
    unsigned agree = 0;
    for (int q = 0; q < PROCS * NOWN + SHARED; q++) {
        char a[64], b[64];
        int p = q < PROCS * NOWN ? q / NOWN : PROCS,
            i = q < PROCS * NOWN ? q % NOWN : q - PROCS * NOWN;
        cname(a, sizeof a, "c", p, i, 'a');
        cname(b, sizeof b, "c", p, i, 'b');
        agree += alloc_names(&e, ksi[q], a, b);
    }
    CHECK_EQ_INT(agree, PROCS * NOWN + SHARED);
    /* the check can fail: a KSI does not name another pair */
    char a[64], b[64];
    cname(a, sizeof a, "c", 0, 1, 'a');
    cname(b, sizeof b, "c", 0, 1, 'b');
    CHECK_EQ_INT(alloc_names(&e, ksi[0], a, b), 0);
    env_close(&e);
}

/* ---- scale: 2,000 pool devices register at once, 1,000 pairs allocate ---- */

#define SCALE_DEVS  2000
#define SCALE_PROCS 2

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Registers devices [lo, hi) (all of them), then allocates their pairs (2i, 2i+1);
 * writes each pair's KSI to out[] and the key set of the first device to
 * *first. Returns the number of failures; *t0 and *t1 the seconds the first and
 * last 100 allocations took. */
static int scale_run(env_t *e, int lo, int hi, uint32_t *out, pk_reg_keyset_t *first, double *t0,
                     double *t1)
{
    int bad = 0;
    unsigned busy = 0;
    pk_reg_keyset_t ks;
    for (int d = lo; d < hi; d++) {
        char id[64];
        snprintf(id, sizeof id, "%s-sc%d", B.tag, d);
        int rc = keys(e, d % 2 ? "nb" : "na", id, &ks);
        if (rc != PK_OK || ks.n != PK_REG_MAX_KEYS) {
            fprintf(stderr, "  keys %s: %d\n", id, rc);
            bad++;
            continue;
        }
        if (d == lo)
            *first = ks;
        else if (memcmp(&ks, first, sizeof ks) != 0)
            bad++; /* every device of the pool holds the same set */
    }
    double t = mono_s();
    for (int d = lo, j = 0; d + 1 < hi; d += 2, j++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "%s-sc%d", B.tag, d);
        snprintf(b, sizeof b, "%s-sc%d", B.tag, d + 1);
        out[j] = 0;
        int rc = alloc_retry(e, "na", a, b, &out[j], &busy);
        if (rc != PK_OK || out[j] == 0) {
            fprintf(stderr, "  alloc %s %s: %d\n", a, b, rc);
            bad++;
        }
        if (j == 99) {
            *t0 = mono_s() - t;
        }
        if (d + 2 + 200 == hi)
            t = mono_s();
    }
    *t1 = mono_s() - t;
    bad += pk_kms_flush(e->k) != PK_OK;
    if (busy)
        fprintf(stderr, "  devices %d..%d: %u BUSY answers retried\n", lo, hi - 1, busy);
    pk_wipe(&ks, sizeof ks);
    return bad;
}

static int u32_cmp(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

static void test_scale(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e), PK_OK);
    const char *pool = nm("spool");
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 64, now, NULL), PK_OK);
    for (int d = 0; d < SCALE_DEVS; d++) {
        char id[64];
        snprintf(id, sizeof id, "%s-sc%d", B.tag, d);
        CHECK_EQ_INT(pk_kms_device_add(e.k, id, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
        if (d % 2) {
            char pr[64];
            snprintf(pr, sizeof pr, "%s-sc%d", B.tag, d - 1);
            CHECK_EQ_INT(pk_kms_allow(e.k, pr, id, now), PK_OK);
        }
    }
    static uint32_t ksi[SCALE_DEVS / 2];
    pk_reg_keyset_t first[SCALE_PROCS];
    double t0 = 0, t1 = 0;
    memset(first, 0, sizeof first);
    if (!B.persistent) {
        CHECK_EQ_INT(scale_run(&e, 0, SCALE_DEVS, ksi, &first[0], &t0, &t1), 0);
        first[1] = first[0];
        env_close(&e);
    } else {
        /* two kms instances, each registering half the devices at once, then
         * allocating their pairs at once */
        env_close(&e);
        int fds[SCALE_PROCS][2];
        pid_t pids[SCALE_PROCS];
        const int per = SCALE_DEVS / SCALE_PROCS;
        for (int p = 0; p < SCALE_PROCS; p++) {
            CHECK_EQ_INT(pipe(fds[p]), 0);
            pids[p] = fork();
            if (pids[p] == 0) {
                close(fds[p][0]);
                env_t c;
                static uint32_t mine[SCALE_DEVS / SCALE_PROCS / 2];
                pk_reg_keyset_t f;
                double a0 = 0, a1 = 0;
                if (env_open(&c) != PK_OK)
                    _exit(3);
                int bad = scale_run(&c, p * per, (p + 1) * per, mine, &f, &a0, &a1);
                double tt[2] = {a0, a1};
                if (write(fds[p][1], &f, sizeof f) != sizeof f ||
                    write(fds[p][1], mine, sizeof mine) != sizeof mine ||
                    write(fds[p][1], tt, sizeof tt) != sizeof tt)
                    bad++;
                pk_wipe(&f, sizeof f);
                env_close(&c);
                _exit(bad ? 1 : 0);
            }
            close(fds[p][1]);
        }
        for (int p = 0; p < SCALE_PROCS; p++) {
            double tt[2] = {0, 0};
            size_t want = (size_t)per / 2 * sizeof ksi[0];
            CHECK(read(fds[p][0], &first[p], sizeof first[p]) == sizeof first[p]);
            CHECK(read(fds[p][0], ksi + p * per / 2, want) == (ssize_t)want);
            CHECK(read(fds[p][0], tt, sizeof tt) == sizeof tt);
            close(fds[p][0]);
            t0 += tt[0];
            t1 += tt[1];
            int st = 0;
            waitpid(pids[p], &st, 0);
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
    }
    CHECK_MEM(&first[0], &first[1], sizeof first[0]); /* one set across instances */
    qsort(ksi, SCALE_DEVS / 2, sizeof ksi[0], u32_cmp);
    unsigned dups = 0;
    for (int i = 1; i < SCALE_DEVS / 2; i++)
        dups += ksi[i] == ksi[i - 1];
    CHECK(ksi[0] != 0);
    CHECK_EQ_INT(dups, 0);
    fprintf(stderr,
            "  %s: %d devices, %d pairs, %u duplicate KSIs; first 100 allocations "
            "%.3f s, last 100 %.3f s\n",
            B.name, SCALE_DEVS, SCALE_DEVS / 2, dups, t0, t1);
    pk_wipe(first, sizeof first);
}

static void test_codecs(void)
{
    pk_kms_audit_t a = {.what = PK_KMS_A_ROOT_KEY, .at_ms = 42, .ksi = 7, .count = 1}, b;
    uint8_t buf[PK_KMS_AUDIT_MAX];
    size_t n = 0;
    set_id(&a.node, "node-1");
    set_id(&a.device, "dev-1");
    CHECK_EQ_INT(pk_kms_audit_encode(&a, buf, sizeof buf, &n), PK_OK);
    CHECK_EQ_INT(n, 1 + 1 + 8 + 4 + 2 + 7 + 6 + 1);
    CHECK_EQ_INT(pk_kms_audit_decode(buf, n, &b), PK_OK);
    CHECK(b.what == a.what && b.ksi == 7 && b.at_ms == 42 && pk_reg_id_eq(&b.node, &a.node) &&
          b.peer.len == 0);
    CHECK_EQ_INT(pk_kms_audit_decode(buf, n - 1, &b), PK_ERR_MALFORMED);
    buf[0] = 2;
    CHECK_EQ_INT(pk_kms_audit_decode(buf, n, &b), PK_ERR_MALFORMED);
    pk_kms_msg_t m = {.type = PK_KMS_T_ERR, .status = 4, .req_type = 0x40}, m2;
    CHECK_EQ_INT(pk_kms_msg_encode(&m, buf, sizeof buf, &n), PK_OK);
    CHECK_EQ_INT(n, 3);
    const uint8_t want[3] = {0x4F, 4, 0x40};
    CHECK_MEM(buf, want, 3);
    CHECK_EQ_INT(pk_kms_msg_decode(buf, n, &m2), PK_OK);
    CHECK_EQ_INT(pk_kms_msg_decode(buf, 2, &m2), PK_ERR_MALFORMED);
    m.type = PK_KMS_T_DIR_REQ;
    set_id(&m.id, "d");
    CHECK_EQ_INT(pk_kms_msg_encode(&m, buf, sizeof buf, &n), PK_OK);
    const uint8_t want2[3] = {0x46, 1, 'd'};
    CHECK_EQ_INT(n, 3);
    CHECK_MEM(buf, want2, 3);
    buf[1] = 2;
    CHECK_EQ_INT(pk_kms_msg_decode(buf, n, &m2), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_kms_err_frame(PK_ERR_DENIED, 0x42, 3, buf, sizeof buf), 3);
    CHECK_EQ_INT(buf[1], PK_REG_ST_DENIED);
    CHECK_EQ_INT(pk_kms_err_frame(PK_ERR_DENIED, 0x42, 2, buf, sizeof buf), 0);
}

static void run_backend(const char *name)
{
    backend_begin(name, 't');
    RUN(test_root_keys_per_pair);
    RUN(test_deny_revokes);
    RUN(test_vectors);
    RUN(test_pool);
    RUN(test_restart_audit_at_rest);
    RUN(test_hostile);
    RUN(test_concurrent_alloc);
    RUN(test_scale);
    backend_end();
}

int main(int argc, char **argv)
{
    if (pk_random(kek, sizeof kek) != PK_OK)
        return 1;
    RUN(test_codecs);
    int rc = pk_tb_run(argc, argv, &pg_uri, run_backend);
    return rc ? rc : check_report();
}
