/*
 * First registrations in the group commit (kms.h "Durability", cfg
 * group_writes) against every backend: memory and SQLite always, PostgreSQL
 * when PK_TEST_PG is set (scripts/pg-harness.sh run sets it).
 *
 *   test_kms_group [--require-pg] [memory|sqlite|pg ...]
 *
 * The tests drive the core as `kms serve` does: a KEYS_REQ that needs a
 * write is deferred (PK_KMS_DEFER), its batch is taken and committed on a
 * second store handle (the committer's), and only then is the request
 * handed in again; an answer is "sent" only once the batch holding its audit
 * records has committed. Device names carry a per-run tag, so the suite may
 * run again on a PostgreSQL database that keeps old data.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* A kms in group mode over st, plus the committer's store cst (the same
 * store for memory:, which is private to its handle). */
typedef struct env {
    pk_store_t *st, *cst;
    pk_kms_t *k;
} env_t;

static int env_open(env_t *e, int group, size_t intent_max)
{
    pk_kms_cfg_t cfg = {
        .kek = kek, .cache_ttl_ms = 1000, .group_writes = group, .intent_max = intent_max};
    memset(e, 0, sizeof *e);
    int rc = pk_store_open(B.uri, &e->st);
    if (rc != PK_OK)
        return rc;
    if (B.persistent)
        rc = pk_store_open(B.uri, &e->cst);
    else
        e->cst = e->st;
    cfg.store = e->st;
    if (rc == PK_OK)
        rc = pk_kms_new(&cfg, &e->k);
    return rc;
}

static void env_close(env_t *e)
{
    pk_kms_free(e->k);
    if (e->cst != e->st)
        pk_store_close(e->cst);
    pk_store_close(e->st);
    memset(e, 0, sizeof *e);
}

static void set_id(pk_reg_id_t *id, const char *s)
{
    CHECK_EQ_INT(pk_reg_id_set(id, s, strlen(s)), PK_OK);
}

/* One KEYS_REQ for dev from node: PK_OK with *ks, PK_KMS_DEFER (nothing
 * answered), or a refusal. */
static int keys(env_t *e, const char *node, const char *dev, pk_reg_keyset_t *ks)
{
    uint8_t req[PK_REG_NET_MAX], resp[PK_KMS_RESP_MAX];
    size_t qlen = 0, rlen = 0;
    pk_reg_net_t q = {.type = PK_REG_T_KMS_KEYS_REQ}, r;
    set_id(&q.a, dev);
    CHECK_EQ_INT(pk_reg_net_encode(&q, req, sizeof req, &qlen), PK_OK);
    memset(ks, 0, sizeof *ks);
    int rc = pk_kms_handle(e->k, node, req, qlen, now, resp, sizeof resp, &rlen);
    if (rc == PK_KMS_DEFER) {
        CHECK_EQ_INT(rlen, 0);
    } else if (rc == PK_OK) {
        CHECK_EQ_INT(pk_reg_net_decode(resp, rlen, &r), PK_OK);
        CHECK_EQ_INT(r.type, PK_REG_T_KMS_KEYS_RESP);
        *ks = r.keys;
        pk_wipe(&r, sizeof r);
    } else {
        CHECK(rlen == PK_KMS_ERR_LEN && resp[0] == PK_KMS_T_ERR);
    }
    pk_wipe(resp, sizeof resp);
    return rc;
}

/* Takes the open batch and commits it on the committer's store. */
static int commit_open(env_t *e)
{
    pk_kms_batch_t *b = NULL;
    int rc = pk_kms_batch_take(e->k, &b);
    if (rc == PK_OK && b)
        rc = pk_kms_batch_commit(e->cst, b);
    pk_kms_batch_free(b);
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

static int count_fn(pk_txn_t *txn, void *ctx)
{
    uint64_t *n = ctx;
    return pk_txn_count(txn, "kms_root", NULL, 0, n);
}

struct dirq {
    const char *dev;
    int found;
};

static int dir_fn(pk_txn_t *txn, void *ctx)
{
    struct dirq *q = ctx;
    uint8_t key[1 + PK_REG_ID_MAX];
    size_t kl = strlen(q->dev), vl = 0;
    key[0] = (uint8_t)kl;
    memcpy(key + 1, q->dev, kl);
    int rc = pk_txn_get(txn, "kms_dir", key, kl + 1, NULL, 0, &vl);
    q->found = rc != PK_ERR_NOTFOUND;
    return rc == PK_ERR_NOTFOUND || rc == PK_ERR_SPACE ? PK_OK : rc;
}

/* 1 when dev has a directory entry (a row in kms_dir). */
static int has_dir(env_t *e, const char *dev)
{
    struct dirq q = {.dev = dev};
    CHECK_EQ_INT(pk_store_run_read(e->st, dir_fn, &q, 4), PK_OK);
    return q.found;
}

/* Root keys in the store (all of them: on PostgreSQL other runs' too). */
static uint64_t roots(env_t *e)
{
    uint64_t n = 0;
    CHECK_EQ_INT(pk_store_run_read(e->st, count_fn, &n, 4), PK_OK);
    return n;
}

struct auditc {
    const char *dev;
    unsigned root;
    uint64_t last, seen;
};

static int audit_cb(void *ctx, const pk_kms_audit_t *a)
{
    struct auditc *c = ctx;
    c->last = a->seqno;
    c->seen++;
    if (a->what == PK_KMS_A_ROOT_KEY && a->device.len == strlen(c->dev) &&
        memcmp(a->device.b, c->dev, a->device.len) == 0)
        c->root++;
    return 0;
}

/* ROOT_KEY audit records naming dev, page by page. */
static unsigned root_records(env_t *e, const char *dev)
{
    struct auditc c = {.dev = dev};
    for (int page = 0; page < 1000; page++) {
        c.seen = 0;
        CHECK_EQ_INT(pk_kms_audit_list(e->k, c.last + 1, PK_STORE_SCAN_MAX, audit_cb, &c), PK_OK);
        if (c.seen < PK_STORE_SCAN_MAX)
            break;
    }
    return c.root;
}

/* ---- the group path on one kms ---- */

static void test_group_first_registration(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e, 1, 3), PK_OK);
    const char *a = nm("a"), *b = nm("b"), *c = nm("c"), *d = nm("d");
    const char *all[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pk_kms_device_add(e.k, all[i], NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                     PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, c, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, c, d, now), PK_OK);
    uint64_t r0 = roots(&e);
    pk_reg_keyset_t ka, kb, kc, kd, x;

    /* deferred: nothing answered, nothing written yet, one intent queued */
    CHECK_EQ_INT(keys(&e, "n1", a, &ka), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_pending(e.k), 1);
    CHECK_EQ_INT(roots(&e), r0);

    /* a batch that fails (taken, never committed): no key exists, the
     * request is deferred again when handed in */
    pk_kms_batch_t *lost = NULL;
    CHECK_EQ_INT(pk_kms_batch_take(e.k, &lost), PK_OK);
    CHECK(lost != NULL);
    pk_kms_batch_free(lost);
    CHECK_EQ_INT(keys(&e, "n1", a, &ka), PK_KMS_DEFER);
    CHECK_EQ_INT(roots(&e), r0);

    /* b and c join the batch (b's candidate for a-b, c's for a-c, c-d); the
     * batch holds 3 intents, so d waits without one */
    CHECK_EQ_INT(keys(&e, "n2", b, &kb), PK_KMS_DEFER);
    CHECK_EQ_INT(keys(&e, "n1", c, &kc), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_pending(e.k), 3);
    CHECK_EQ_INT(keys(&e, "n2", d, &kd), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_pending(e.k), 3);
    CHECK_EQ_INT(pk_kms_stats(e.k)->intents, 4);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(roots(&e), r0 + 3); /* a-b, a-c, c-d: one key each */

    /* handed in again: answered from the store */
    CHECK_EQ_INT(keys(&e, "n1", a, &ka), PK_OK);
    CHECK_EQ_INT(keys(&e, "n2", b, &kb), PK_OK);
    CHECK_EQ_INT(keys(&e, "n1", c, &kc), PK_OK);
    CHECK_EQ_INT(keys(&e, "n2", d, &kd), PK_KMS_DEFER); /* now its own intent */
    CHECK_EQ_INT(commit_open(&e), PK_OK);               /* with a, b, c's records */
    CHECK_EQ_INT(keys(&e, "n2", d, &kd), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(ka.n, 2);
    CHECK_EQ_INT(kb.n, 1);
    CHECK_EQ_INT(kc.n, 2);
    CHECK_EQ_INT(kd.n, 1);
    const pk_reg_key_t *p = find_peer(&ka, b), *q = find_peer(&kb, a);
    CHECK(p && q && p->ksi == q->ksi && memcmp(p->key, q->key, 32) == 0);
    p = find_peer(&ka, c);
    q = find_peer(&kc, a);
    CHECK(p && q && p->ksi == q->ksi && memcmp(p->key, q->key, 32) == 0);
    p = find_peer(&kc, d);
    q = find_peer(&kd, c);
    CHECK(p && q && p->ksi == q->ksi && memcmp(p->key, q->key, 32) == 0);
    CHECK(ka.k[0].ksi != ka.k[1].ksi && kc.k[0].ksi != kc.k[1].ksi && p &&
          p->ksi != find_peer(&ka, b)->ksi);
    /* each answer's records are durable: ROOT_KEY per key */
    CHECK_EQ_INT(root_records(&e, a), 2);
    CHECK_EQ_INT(root_records(&e, d), 1);
    /* the directory names the node that fetched the keys */
    pk_kms_device_info_t info;
    CHECK_EQ_INT(pk_kms_device_show(e.k, b, &info), PK_OK);
    CHECK(info.node.len == 2 && memcmp(info.node.b, "n2", 2) == 0);
    /* a re-registration writes nothing: answered at once, the same keys */
    CHECK_EQ_INT(keys(&e, "n1", a, &x), PK_OK);
    CHECK_MEM(&x, &ka, sizeof x);
    /* the device moves to another node: only the directory, deferred */
    CHECK_EQ_INT(keys(&e, "n3", a, &x), PK_KMS_DEFER);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(keys(&e, "n3", a, &x), PK_OK);
    CHECK_MEM(&x.k, &ka.k, sizeof x.k);
    CHECK_EQ_INT(roots(&e), r0 + 3);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    pk_wipe(&ka, sizeof ka);
    pk_wipe(&kb, sizeof kb);
    pk_wipe(&kc, sizeof kc);
    pk_wipe(&kd, sizeof kd);
    pk_wipe(&x, sizeof x);
    env_close(&e);
}

/*
 * Pipelined as in the shell: b's request is read (no root key yet) while
 * a's batch is being committed, so b's candidate for the pair lands in the
 * next batch, after a already got its key. b must get a's key: the later
 * candidate loses. Also: a pair denied and a device removed between the
 * deferral and the commit get nothing written.
 */
static void test_group_overlap(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e, 1, 0), PK_OK);
    const char *a = nm("oa"), *b = nm("ob"), *f = nm("of"), *g = nm("og"), *h = nm("oh");
    const char *all[5] = {a, b, f, g, h};
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(pk_kms_device_add(e.k, all[i], NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                     PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, f, g, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, h, g, now), PK_OK);
    pk_reg_keyset_t ka, kb, kx;
    uint64_t r0 = roots(&e);

    CHECK_EQ_INT(keys(&e, "n1", a, &ka), PK_KMS_DEFER);
    pk_kms_batch_t *b1 = NULL;
    CHECK_EQ_INT(pk_kms_batch_take(e.k, &b1), PK_OK);   /* batch 1 in flight */
    CHECK_EQ_INT(keys(&e, "n2", b, &kb), PK_KMS_DEFER); /* reads before it commits */
    CHECK_EQ_INT(pk_kms_batch_commit(e.cst, b1), PK_OK);
    pk_kms_batch_free(b1);
    CHECK_EQ_INT(keys(&e, "n1", a, &ka), PK_OK); /* its records join b's intent */
    CHECK_EQ_INT(commit_open(&e), PK_OK);        /* a's answer leaves now */
    CHECK_EQ_INT(keys(&e, "n2", b, &kb), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK(ka.n == 1 && kb.n == 1);
    CHECK_EQ_INT(ka.k[0].ksi, kb.k[0].ksi);
    CHECK_MEM(ka.k[0].key, kb.k[0].key, 32);
    CHECK_EQ_INT(roots(&e), r0 + 1);

    /* f's pair is denied before f's intent commits: no key for it */
    CHECK_EQ_INT(keys(&e, "n1", f, &kx), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_deny(e.k, f, g, now, NULL), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(roots(&e), r0 + 1);
    CHECK_EQ_INT(keys(&e, "n1", f, &kx), PK_OK); /* its directory entry was written */
    CHECK_EQ_INT(kx.n, 0);
    /* h is removed before its intent commits: nothing for it */
    CHECK_EQ_INT(keys(&e, "n1", h, &kx), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_device_remove(e.k, h, now), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(roots(&e), r0 + 1);
    CHECK_EQ_INT(keys(&e, "n1", h, &kx), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(has_dir(&e, h), 0); /* no entry for a removed device */
    CHECK_EQ_INT(has_dir(&e, f), 1); /* (the check can fail) */
    pk_kms_device_info_t info;
    CHECK_EQ_INT(pk_kms_device_show(e.k, g, &info), PK_OK);
    CHECK_EQ_INT(info.node.len, 0); /* g never registered */
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    pk_wipe(&ka, sizeof ka);
    pk_wipe(&kb, sizeof kb);
    pk_wipe(&kx, sizeof kx);
    env_close(&e);
}

/* ---- option-2 allocations in the group commit ---- */

/* One ALLOC_REQ (initiator a, peer b) from node: PK_OK with *ksi (and the
 * param in param, may be NULL), PK_KMS_DEFER (nothing answered) or a
 * refusal (a KMS_ERR frame). */
static int alloc_req(env_t *e, const char *node, const char *a, const char *b, uint32_t *ksi,
                     uint8_t param[PK_REG_PARAM_LEN])
{
    uint8_t req[PK_REG_NET_MAX], resp[PK_KMS_RESP_MAX];
    size_t qlen = 0, rlen = 0;
    pk_reg_net_t q = {.type = PK_REG_T_KMS_ALLOC_REQ}, r;
    set_id(&q.a, a);
    set_id(&q.b, b);
    CHECK_EQ_INT(pk_reg_net_encode(&q, req, sizeof req, &qlen), PK_OK);
    *ksi = 0;
    int rc = pk_kms_handle(e->k, node, req, qlen, now, resp, sizeof resp, &rlen);
    if (rc == PK_KMS_DEFER) {
        CHECK_EQ_INT(rlen, 0);
    } else if (rc == PK_OK) {
        CHECK_EQ_INT(pk_reg_net_decode(resp, rlen, &r), PK_OK);
        CHECK_EQ_INT(r.type, PK_REG_T_KMS_ALLOC_RESP);
        CHECK(r.ksi != 0);
        *ksi = r.ksi;
        if (param)
            memcpy(param, r.param, PK_REG_PARAM_LEN);
        pk_wipe(&r, sizeof r);
    } else {
        CHECK(rlen == PK_KMS_ERR_LEN && resp[0] == PK_KMS_T_ERR);
    }
    pk_wipe(resp, sizeof resp);
    return rc;
}

struct allocq {
    const char *a, *b;
    uint32_t ksi;    /* kms_pairalloc (0: none) */
    unsigned claims; /* kms_alloc rows naming the pair */
    uint8_t last[4]; /* scan paging */
    size_t lastl, seen;
    uint8_t pk[2 * (1 + PK_REG_ID_MAX)];
    size_t pl;
};

static size_t blk_pair(uint8_t *out, const char *a, const char *b)
{
    uint8_t x[1 + PK_REG_ID_MAX], y[1 + PK_REG_ID_MAX];
    size_t xl = strlen(a) + 1, yl = strlen(b) + 1, m = xl < yl ? xl : yl;
    x[0] = (uint8_t)(xl - 1);
    memcpy(x + 1, a, xl - 1);
    y[0] = (uint8_t)(yl - 1);
    memcpy(y + 1, b, yl - 1);
    int c = memcmp(x, y, m);
    int swap = c > 0 || (c == 0 && xl > yl);
    memcpy(out, swap ? y : x, swap ? yl : xl);
    memcpy(out + (swap ? yl : xl), swap ? x : y, swap ? xl : yl);
    return xl + yl;
}

static int claims_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct allocq *q = ctx;
    if (klen != 4 || vlen < 8)
        return PK_ERR_MALFORMED;
    memcpy(q->last, key, 4);
    q->lastl = 4;
    q->seen++;
    q->claims += vlen == q->pl + 8 && memcmp(val, q->pk, q->pl) == 0;
    return 0;
}

static int allocq_fn(pk_txn_t *txn, void *ctx)
{
    struct allocq *q = ctx;
    uint8_t v[8];
    size_t vl = 0;
    q->ksi = q->claims = 0;
    q->lastl = 0;
    q->pl = blk_pair(q->pk, q->a, q->b);
    int rc = pk_txn_get(txn, "kms_pairalloc", q->pk, q->pl, v, sizeof v, &vl);
    if (rc == PK_OK && vl == 4)
        q->ksi = pk_get_u32(v);
    else if (rc != PK_ERR_NOTFOUND)
        return rc == PK_OK ? PK_ERR_MALFORMED : rc;
    for (int page = 0; page < 10000; page++) { /* every claim (pg: other runs' too) */
        q->seen = 0;
        rc = pk_txn_scan(txn, "kms_alloc", NULL, 0, q->lastl ? q->last : NULL, q->lastl,
                         PK_STORE_SCAN_MAX, claims_cb, q);
        if (rc != PK_OK || q->seen < PK_STORE_SCAN_MAX)
            return rc;
    }
    return PK_OK;
}

/* The pair's stored KSI (0: none); *claims: its rows in kms_alloc. */
static uint32_t pair_ksi(env_t *e, const char *a, const char *b, unsigned *claims)
{
    struct allocq q = {.a = a, .b = b};
    CHECK_EQ_INT(pk_store_run_read(e->st, allocq_fn, &q, 4), PK_OK);
    if (claims)
        *claims = q.claims;
    return q.ksi;
}

struct paudit {
    const char *a, *b;
    unsigned n;
    uint64_t last, seen;
};

static int paudit_cb(void *ctx, const pk_kms_audit_t *r)
{
    struct paudit *c = ctx;
    c->last = r->seqno;
    c->seen++;
    if (r->what != PK_KMS_A_POOL_ALLOC)
        return 0;
    int ab = r->device.len == strlen(c->a) && !memcmp(r->device.b, c->a, r->device.len) &&
             r->peer.len == strlen(c->b) && !memcmp(r->peer.b, c->b, r->peer.len);
    int ba = r->device.len == strlen(c->b) && !memcmp(r->device.b, c->b, r->device.len) &&
             r->peer.len == strlen(c->a) && !memcmp(r->peer.b, c->a, r->peer.len);
    c->n += ab || ba;
    return 0;
}

/* POOL_ALLOC audit records of the pair (a, b), either way round. */
static unsigned alloc_records(env_t *e, const char *a, const char *b)
{
    struct paudit c = {.a = a, .b = b};
    for (int page = 0; page < 10000; page++) {
        c.seen = 0;
        CHECK_EQ_INT(pk_kms_audit_list(e->k, c.last + 1, PK_STORE_SCAN_MAX, paudit_cb, &c), PK_OK);
        if (c.seen < PK_STORE_SCAN_MAX)
            break;
    }
    return c.n;
}

/*
 * An ALLOC_REQ whose pair has no KSI is deferred: its intent is committed
 * with the batch (allocation and audit record in one transaction), and the
 * request handed in again is answered from the stored row, its own record
 * queued. Requests for one pair in one batch share one intent; in two
 * batches (the second read before the first committed) the second intent
 * finds the KSI and claims none. A pair with its KSI is answered at once.
 */
static void test_group_alloc(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e, 1, 0), PK_OK);
    const char *pool = nm("gp"), *a = nm("pa"), *b = nm("pb"), *c = nm("pc"), *d = nm("pd");
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 4, now, NULL), PK_OK);
    const char *all[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(pk_kms_device_add(e.k, all[i], NULL, 0, PK_REG_MODE_POOL, pool, now, NULL),
                     PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, c, d, now), PK_OK);
    uint32_t k1 = 0, k2 = 0, k3 = 0, k4 = 0;
    uint8_t p1[PK_REG_PARAM_LEN], p2[PK_REG_PARAM_LEN];
    unsigned claims = 9;

    /* deferred: nothing answered, nothing written; the reverse request in
     * the same batch joins the intent */
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k1, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(alloc_req(&e, "n2", b, a, &k2, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_pending(e.k), 1);
    CHECK_EQ_INT(pk_kms_stats(e.k)->intents, 1);
    CHECK_EQ_INT(pair_ksi(&e, a, b, &claims), 0);
    CHECK_EQ_INT(claims, 0);
    /* a lost batch (taken, never committed): still nothing; deferred again */
    pk_kms_batch_t *lost = NULL;
    CHECK_EQ_INT(pk_kms_batch_take(e.k, &lost), PK_OK);
    CHECK(lost != NULL);
    pk_kms_batch_free(lost);
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k1, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(alloc_req(&e, "n2", b, a, &k2, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(pair_ksi(&e, a, b, NULL), 0);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    uint32_t stored = pair_ksi(&e, a, b, &claims);
    CHECK(stored != 0);
    CHECK_EQ_INT(claims, 1);
    CHECK_EQ_INT(alloc_records(&e, a, b), 1); /* the allocation's, with it */

    /* handed in again: answered from the store, records queued */
    uint64_t gen = pk_kms_batch_gen(e.k);
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k1, p1), PK_OK);
    CHECK_EQ_INT(alloc_req(&e, "n2", b, a, &k2, p2), PK_OK);
    CHECK_EQ_INT(k1, stored);
    CHECK_EQ_INT(k2, stored);
    CHECK(memcmp(p1, p2, sizeof p1) != 0); /* a fresh param each time */
    CHECK_EQ_INT(pk_kms_pending(e.k), 2);  /* the answers wait for batch gen */
    CHECK_EQ_INT(pk_kms_batch_gen(e.k), gen);
    CHECK_EQ_INT(alloc_records(&e, a, b), 1);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(alloc_records(&e, a, b), 3);
    CHECK_EQ_INT(pk_kms_stats(e.k)->allocs, 2);

    /* two batches: c's request is read while the batch holding d's intent
     * commits, so it queues a second intent for the pair; that one must
     * find d's KSI and claim nothing */
    CHECK_EQ_INT(alloc_req(&e, "n1", d, c, &k3, NULL), PK_KMS_DEFER);
    pk_kms_batch_t *b1 = NULL;
    CHECK_EQ_INT(pk_kms_batch_take(e.k, &b1), PK_OK);
    CHECK_EQ_INT(alloc_req(&e, "n2", c, d, &k4, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_pending(e.k), 1);
    CHECK_EQ_INT(pk_kms_batch_commit(e.cst, b1), PK_OK);
    pk_kms_batch_free(b1);
    CHECK_EQ_INT(alloc_req(&e, "n1", d, c, &k3, NULL), PK_OK); /* d's answer: its record */
    CHECK_EQ_INT(commit_open(&e), PK_OK);                      /* with c's intent */
    CHECK_EQ_INT(alloc_req(&e, "n2", c, d, &k4, NULL), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK(k3 != 0 && k3 == k4 && k3 != stored);
    CHECK_EQ_INT(pair_ksi(&e, c, d, &claims), k3);
    CHECK_EQ_INT(claims, 1);
    CHECK_EQ_INT(alloc_records(&e, c, d), 3); /* the claim and two answers */
    CHECK_EQ_INT(pair_ksi(&e, a, b, &claims), stored);
    CHECK_EQ_INT(claims, 1);
    env_close(&e);
}

/*
 * Refusals at the request (no intent), and everything the committer must
 * check again: a pair denied, a device removed, a device now in mode pairs
 * or in another pool between the deferral and the commit gets no KSI, and
 * the request handed in again is refused.
 */
static void test_group_alloc_recheck(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e, 1, 0), PK_OK);
    const char *pool = nm("rp"), *other = nm("rq"), *a = nm("ra"), *b = nm("rb"), *c = nm("rc"),
               *d = nm("rd"), *f = nm("rf"), *g = nm("rg"), *x = nm("rx"), *y = nm("ry"),
               *u = nm("ru");
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 4, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_pool_create(e.k, other, 4, now, NULL), PK_OK);
    const char *pooled[6] = {a, b, c, d, f, g};
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(pk_kms_device_add(e.k, pooled[i], NULL, 0, PK_REG_MODE_POOL, pool, now, NULL),
                     PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, x, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, y, NULL, 0, PK_REG_MODE_POOL, other, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    CHECK_EQ_INT(pk_kms_group_add(e.k, nm("rgrp"), c, now), PK_OK);
    CHECK_EQ_INT(pk_kms_group_add(e.k, nm("rgrp"), d, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, f, g, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, x, now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, y, now), PK_OK);
    uint32_t k = 0;

    /* refused at once, no intent */
    CHECK_EQ_INT(alloc_req(&e, "n1", a, a, &k, NULL), PK_ERR_DENIED);
    CHECK_EQ_INT(alloc_req(&e, "n1", a, c, &k, NULL), PK_ERR_DENIED); /* not allowed */
    CHECK_EQ_INT(alloc_req(&e, "n1", a, x, &k, NULL), PK_ERR_DENIED); /* x in mode pairs */
    CHECK_EQ_INT(alloc_req(&e, "n1", a, y, &k, NULL), PK_ERR_DENIED); /* another pool */
    CHECK_EQ_INT(alloc_req(&e, "n1", a, u, &k, NULL), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_pending(e.k), 0);
    CHECK_EQ_INT(pk_kms_stats(e.k)->intents, 0);

    /* deferred, then changed before the commit */
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(alloc_req(&e, "n1", c, d, &k, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(alloc_req(&e, "n1", f, g, &k, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_pending(e.k), 3);
    CHECK_EQ_INT(pk_kms_deny(e.k, a, b, now, NULL), PK_OK);            /* explicit allow */
    CHECK_EQ_INT(pk_kms_group_remove(e.k, nm("rgrp"), d, now), PK_OK); /* through a group */
    CHECK_EQ_INT(pk_kms_device_remove(e.k, g, now), PK_OK);            /* a device gone, */
    CHECK_EQ_INT(pk_kms_allow(e.k, f, g, now), PK_OK); /* its pair allowed again (allowed) */
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(pair_ksi(&e, a, b, NULL), 0);
    CHECK_EQ_INT(pair_ksi(&e, c, d, NULL), 0);
    CHECK_EQ_INT(pair_ksi(&e, f, g, NULL), 0);
    CHECK_EQ_INT(alloc_records(&e, a, b) + alloc_records(&e, c, d) + alloc_records(&e, f, g), 0);
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k, NULL), PK_ERR_DENIED);
    CHECK_EQ_INT(alloc_req(&e, "n1", c, d, &k, NULL), PK_ERR_DENIED);
    CHECK_EQ_INT(alloc_req(&e, "n1", f, g, &k, NULL), PK_ERR_NOTFOUND);

    /* deferred again; then g and f in mode pairs (allowed again), b in
     * another pool: still no KSI */
    CHECK_EQ_INT(pk_kms_device_add(e.k, g, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    CHECK_EQ_INT(alloc_req(&e, "n1", f, g, &k, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_kms_device_remove(e.k, g, now), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, g, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, f, g, now), PK_OK);
    CHECK_EQ_INT(pk_kms_device_remove(e.k, b, now), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_POOL, other, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    /* f too: both in mode pairs now (their pools alike: none) */
    CHECK_EQ_INT(pk_kms_device_remove(e.k, f, now), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, f, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, f, g, now), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(pair_ksi(&e, f, g, NULL), 0);
    CHECK_EQ_INT(pair_ksi(&e, a, b, NULL), 0);
    CHECK_EQ_INT(alloc_req(&e, "n1", f, g, &k, NULL), PK_ERR_DENIED);
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k, NULL), PK_ERR_DENIED);
    /* (the checks can pass: a pair still allowed is allocated) */
    CHECK_EQ_INT(pk_kms_group_add(e.k, nm("rgrp"), d, now), PK_OK);
    CHECK_EQ_INT(alloc_req(&e, "n1", c, d, &k, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK(pair_ksi(&e, c, d, NULL) != 0);
    CHECK_EQ_INT(alloc_req(&e, "n1", c, d, &k, NULL), PK_OK);
    CHECK_EQ_INT(k, pair_ksi(&e, c, d, NULL));
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    env_close(&e);
}

static int take_ksi_fn(pk_txn_t *txn, void *ctx)
{
    return pk_txn_next_id(txn, "kms_ksi", ctx);
}

/* The row of another pair, claiming KSI *ctx + 1 (what the next allocation
 * would take): a damaged sequence, for the test. */
static const uint8_t squat_val[] = {1, 'x', 1, 'y', 0, 0, 0, 0, 0, 0, 0, 9};

static int squat_fn(pk_txn_t *txn, void *ctx)
{
    uint8_t k[4];
    pk_put_u32(k, (uint32_t)(*(uint64_t *)ctx + 1));
    return pk_txn_put(txn, "kms_alloc", k, 4, squat_val, sizeof squat_val);
}

static int squat_get_fn(pk_txn_t *txn, void *ctx)
{
    uint64_t *v = ctx;
    uint8_t k[4], val[64];
    size_t vl = 0;
    pk_put_u32(k, (uint32_t)(v[0] + 1));
    int rc = pk_txn_get(txn, "kms_alloc", k, 4, val, sizeof val, &vl);
    v[1] = rc == PK_OK && vl == sizeof squat_val && memcmp(val, squat_val, vl) == 0;
    return rc;
}

/* No KSI is claimed twice: a KSI the sequence hands out that kms_alloc
 * already holds (never, unless the sequence was damaged) is skipped by the
 * committer, and the row that holds it stays as it was. */
static void test_group_alloc_claimed(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e, 1, 0), PK_OK);
    const char *pool = nm("cp"), *a = nm("ca"), *b = nm("cb");
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 2, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, a, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    uint64_t v[2] = {0, 0};
    uint32_t k = 0;
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k, NULL), PK_KMS_DEFER);
    CHECK_EQ_INT(pk_store_run(e.st, take_ksi_fn, &v[0], 4), PK_OK);
    CHECK_EQ_INT(pk_store_run(e.st, squat_fn, &v[0], 4), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k, NULL), PK_OK);
    CHECK_EQ_INT(commit_open(&e), PK_OK);
    CHECK_EQ_INT(k, v[0] + 2);
    CHECK_EQ_INT(pair_ksi(&e, a, b, NULL), v[0] + 2);
    CHECK_EQ_INT(pk_store_run_read(e.st, squat_get_fn, v, 4), PK_OK);
    CHECK_EQ_INT(v[1], 1);
    env_close(&e);
}

/* Without group_writes an allocation commits before it is answered, as it
 * always did: nothing deferred, nothing queued. */
static void test_alloc_direct(void)
{
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e, 0, 0), PK_OK);
    const char *pool = nm("dp"), *a = nm("da"), *b = nm("db");
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 4, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, a, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    uint32_t k1 = 0, k2 = 0;
    unsigned claims = 0;
    CHECK_EQ_INT(alloc_req(&e, "n1", a, b, &k1, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_pending(e.k), 0);
    CHECK_EQ_INT(pair_ksi(&e, a, b, &claims), k1);
    CHECK_EQ_INT(claims, 1);
    CHECK_EQ_INT(alloc_records(&e, a, b), 1);
    CHECK_EQ_INT(alloc_req(&e, "n2", b, a, &k2, NULL), PK_OK);
    CHECK_EQ_INT(k2, k1);
    CHECK_EQ_INT(alloc_records(&e, a, b), 2);
    CHECK_EQ_INT(pk_kms_stats(e.k)->deferred, 0);
    env_close(&e);
}

/* ---- two kms instances, first registrations of shared pairs at once ---- */

#define RACE_PROCS  2
#define RACE_SHARED 48 /* pairs: side p registered by instance p */
#define RACE_OWN    16 /* pairs per instance, both sides its own */
#define RACE_CHUNK  6  /* new requests per emulated batch */
#define RACE_POOLP  8  /* pool pairs per instance, allocated through the group commit */
#define RACE_POOLS  24 /* pool pairs both instances allocate at once (a and b sides) */
#define RACE_NA     (RACE_POOLS + RACE_POOLP)
#define RACE_ALLOC  0x80000000u /* struct rec: pair = RACE_ALLOC | pool pair */

struct rec {
    uint32_t pair; /* shared 0.., then own pairs of instance 0, then of 1 */
    uint32_t ksi;
    uint8_t key[32];
};

static void rname(char *out, size_t cap, const char *what, int p, int i, char side)
{
    snprintf(out, cap, "%s-%s%d-%d-%c", B.tag, what, p, i, side);
}

/* Emulates `kms serve` over one instance: per round, the open batch is taken
 * (the committer starts), new requests are handled (their reads precede that
 * commit), the batch commits, answers whose batch committed are "sent"
 * (written to fd) and deferred requests whose batch is done are handed in
 * again. */
struct want {
    char dev[80];
    uint32_t pair;
    uint64_t gen; /* deferred: the batch; answered: its records' batch */
    int state;    /* 0 new, 1 deferred, 2 answered (held), 3 sent */
    unsigned tries;
    pk_reg_key_t key;
};

/* The allocations of one instance: shared pool pairs (instance 0 asks for
 * (a, b), instance 1 for (b, a)), then its own. */
struct awant {
    char a[80], b[80];
    uint32_t pair;
    uint64_t gen;
    int state; /* as struct want */
    unsigned tries;
    uint32_t ksi;
};

/* Hands allocation x in (again) and moves it on: deferred, answered (held
 * for batch gen), or settled as refused (bad). */
static void race_alloc(env_t *e, int p, struct awant *x, unsigned *bad, size_t *sent)
{
    uint64_t gen = pk_kms_batch_gen(e->k);
    uint32_t ksi = 0;
    int rc = alloc_req(e, p ? "ny" : "nx", x->a, x->b, &ksi, NULL);
    if (rc == PK_OK) {
        x->state = 2;
        x->ksi = ksi;
    } else if (rc == PK_KMS_DEFER && ++x->tries < PK_KMS_DEFER_TRIES) {
        x->state = 1;
    } else {
        fprintf(stderr, "  proc %d alloc %s %s: rc %d\n", p, x->a, x->b, rc);
        (*bad)++;
        x->state = 3;
        (*sent)++;
    }
    x->gen = gen;
}

static int race_child(int p, int fd, int go)
{
    env_t e;
    unsigned bad = 0;
    enum { NW = RACE_SHARED + 2 * RACE_OWN };
    static struct want w[NW];
    static struct awant aw[RACE_NA];
    memset(w, 0, sizeof w);
    memset(aw, 0, sizeof aw);
    for (int j = 0; j < RACE_NA; j++) {
        int own = j >= RACE_POOLS, i = own ? j - RACE_POOLS : j;
        rname(aw[j].a, sizeof aw[j].a, "q", own ? p : 9, i, p && !own ? 'b' : 'a');
        rname(aw[j].b, sizeof aw[j].b, "q", own ? p : 9, i, p && !own ? 'a' : 'b');
        aw[j].pair = RACE_ALLOC | (uint32_t)(own ? RACE_POOLS + p * RACE_POOLP + i : j);
    }
    if (env_open(&e, 1, 8) != PK_OK)
        return 1;
    char c0;
    if (read(go, &c0, 1) != 0) /* both instances start together */
        return 1;
    size_t n = 0;
    /* the shared pairs in the same order in both instances (racing for each
     * one), then the own pairs with a pair's second device one chunk after
     * its first (read while the first one's batch is being committed) */
    for (int j = 0; j < RACE_SHARED; j++, n++) {
        rname(w[n].dev, sizeof w[n].dev, "s", 9, j, p ? 'b' : 'a');
        w[n].pair = (uint32_t)j;
    }
    for (int i0 = 0; i0 < RACE_OWN; i0 += RACE_CHUNK)
        for (int s = 0; s < 2; s++)
            for (int i = i0; i < i0 + RACE_CHUNK && i < RACE_OWN; i++, n++) {
                rname(w[n].dev, sizeof w[n].dev, "o", p, i, s ? 'b' : 'a');
                w[n].pair = (uint32_t)(RACE_SHARED + p * RACE_OWN + i);
            }
    size_t next = 0, sent = 0, anext = 0, asent = 0;
    for (unsigned round = 0; round < 400 && (sent < NW || asent < RACE_NA); round++) {
        pk_kms_batch_t *b = NULL;
        if (pk_kms_batch_take(e.k, &b) != PK_OK)
            bad++;
        uint64_t done = b ? pk_kms_batch_number(b) : 0;
        for (int c = 0; c < RACE_CHUNK && next < NW; c++, next++) {
            pk_reg_keyset_t ks;
            uint64_t gen = pk_kms_batch_gen(e.k);
            int rc = keys(&e, p ? "ny" : "nx", w[next].dev, &ks);
            if (rc == PK_KMS_DEFER) {
                w[next].state = 1;
                w[next].gen = gen;
            } else if (rc == PK_OK && ks.n == 1) {
                w[next].state = 2;
                w[next].gen = gen;
                w[next].key = ks.k[0];
            } else {
                fprintf(stderr, "  proc %d %s: rc %d n %u\n", p, w[next].dev, rc, ks.n);
                bad++;
                w[next].state = 3;
                sent++;
            }
            pk_wipe(&ks, sizeof ks);
        }
        for (int c = 0; c < 2 && anext < RACE_NA; c++, anext++) /* allocations, racing */
            race_alloc(&e, p, &aw[anext], &bad, &asent);
        int crc = b ? pk_kms_batch_commit(e.cst, b) : PK_OK;
        pk_kms_batch_free(b);
        if (crc != PK_OK)
            fprintf(stderr, "  proc %d batch %llu failed: %d\n", p, (unsigned long long)done, crc);
        for (size_t i = 0; i < next; i++) {
            struct want *x = &w[i];
            if (x->state == 2 && x->gen <= done && crc != PK_OK && x->gen == done) {
                x->state = 1; /* its records were lost: the shell answers BUSY; ask again */
                x->gen = 0;
            }
            if (x->state == 2 && x->gen <= done) {
                struct rec rr = {.pair = x->pair, .ksi = x->key.ksi};
                memcpy(rr.key, x->key.key, 32);
                if (write(fd, &rr, sizeof rr) != sizeof rr)
                    bad++;
                pk_wipe(&rr, sizeof rr);
                pk_wipe(&x->key, sizeof x->key);
                x->state = 3;
                sent++;
            } else if (x->state == 1 && x->gen <= done) {
                pk_reg_keyset_t ks;
                uint64_t gen = pk_kms_batch_gen(e.k);
                int rc = keys(&e, p ? "ny" : "nx", x->dev, &ks);
                if (rc == PK_OK && ks.n == 1) {
                    x->state = 2;
                    x->key = ks.k[0];
                } else if (rc != PK_KMS_DEFER || ++x->tries >= PK_KMS_DEFER_TRIES) {
                    fprintf(stderr, "  proc %d %s again: rc %d n %u\n", p, x->dev, rc, ks.n);
                    bad++;
                    x->state = 3;
                    sent++;
                }
                x->gen = gen;
                pk_wipe(&ks, sizeof ks);
            }
        }
        for (size_t i = 0; i < anext; i++) {
            struct awant *x = &aw[i];
            if (x->state == 2 && crc != PK_OK && x->gen == done)
                x->state = 1; /* its record was lost: BUSY in the shell; ask again */
            if (x->state == 2 && x->gen <= done) {
                struct rec rr = {.pair = x->pair, .ksi = x->ksi};
                if (write(fd, &rr, sizeof rr) != sizeof rr)
                    bad++;
                x->state = 3;
                asent++;
            } else if (x->state == 1 && x->gen <= done) {
                race_alloc(&e, p, x, &bad, &asent);
            }
        }
    }
    bad += sent != NW;
    bad += asent != RACE_NA;
    bad += pk_kms_flush(e.k) != PK_OK;
    if (pk_kms_stats(e.k)->intents == 0)
        bad++; /* the group path was not taken: the test would prove nothing */
    fprintf(stderr, "  proc %d: %llu deferred, %llu intents, %llu batches\n", p,
            (unsigned long long)pk_kms_stats(e.k)->deferred,
            (unsigned long long)pk_kms_stats(e.k)->intents,
            (unsigned long long)pk_kms_stats(e.k)->batches);
    env_close(&e);
    return bad;
}

static int u32_cmp(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

static void test_group_race(void)
{
    if (!B.persistent)
        return; /* a memory store is private to its process */
    env_t e;
    fresh_db();
    CHECK_EQ_INT(env_open(&e, 0, 0), PK_OK);
    char a[80], b[80];
    for (int i = 0; i < RACE_SHARED; i++) {
        rname(a, sizeof a, "s", 9, i, 'a');
        rname(b, sizeof b, "s", 9, i, 'b');
        CHECK_EQ_INT(pk_kms_device_add(e.k, a, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
        CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
        CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    }
    const char *pool = nm("rpool");
    CHECK_EQ_INT(pk_kms_pool_create(e.k, pool, 4, now, NULL), PK_OK);
    for (int p = 0; p < RACE_PROCS; p++) {
        for (int i = 0; i < RACE_OWN; i++) {
            rname(a, sizeof a, "o", p, i, 'a');
            rname(b, sizeof b, "o", p, i, 'b');
            CHECK_EQ_INT(pk_kms_device_add(e.k, a, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                         PK_OK);
            CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                         PK_OK);
            CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
        }
        for (int i = 0; i < RACE_POOLP; i++) {
            rname(a, sizeof a, "q", p, i, 'a');
            rname(b, sizeof b, "q", p, i, 'b');
            CHECK_EQ_INT(pk_kms_device_add(e.k, a, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL),
                         PK_OK);
            CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL),
                         PK_OK);
            CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
        }
    }
    for (int i = 0; i < RACE_POOLS; i++) {
        rname(a, sizeof a, "q", 9, i, 'a');
        rname(b, sizeof b, "q", 9, i, 'b');
        CHECK_EQ_INT(pk_kms_device_add(e.k, a, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
        CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_POOL, pool, now, NULL), PK_OK);
        CHECK_EQ_INT(pk_kms_allow(e.k, a, b, now), PK_OK);
    }
    env_close(&e);

    int fds[RACE_PROCS][2], go[2];
    pid_t pids[RACE_PROCS];
    CHECK_EQ_INT(pipe(go), 0);
    for (int p = 0; p < RACE_PROCS; p++) {
        CHECK_EQ_INT(pipe(fds[p]), 0);
        pids[p] = fork();
        if (pids[p] == 0) {
            close(fds[p][0]);
            close(go[1]);
            int bad = race_child(p, fds[p][1], go[0]);
            close(fds[p][1]);
            _exit(bad ? 1 : 0);
        }
        close(fds[p][1]);
    }
    close(go[0]);
    close(go[1]); /* go */
    enum {
        NPAIRS = RACE_SHARED + RACE_PROCS * RACE_OWN,
        NPOOL = RACE_POOLS + RACE_PROCS * RACE_POOLP,
        NREC = 2 * NPAIRS + 2 * NPOOL + 64
    };
    static struct rec got[NREC];
    static uint32_t ksis[NREC];
    size_t n = 0, nk = 0;
    for (int p = 0; p < RACE_PROCS; p++) {
        struct rec r;
        while (read(fds[p][0], &r, sizeof r) == sizeof r)
            if (n < NREC)
                got[n++] = r;
        close(fds[p][0]);
        int st = 0;
        waitpid(pids[p], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_EQ_INT(n, 2 * NPAIRS + 2 * RACE_POOLS + RACE_PROCS * RACE_POOLP);
    /* both devices of every pair got one key and KSI (whichever instance
     * answered), every pool pair one KSI (both instances for a shared one),
     * and no KSI names two pairs or an allocation */
    struct rec first[NPAIRS];
    uint32_t pksi[NPOOL];
    unsigned seen[NPAIRS], pseen[NPOOL], split = 0, dups = 0;
    memset(seen, 0, sizeof seen);
    memset(pseen, 0, sizeof pseen);
    for (size_t i = 0; i < n; i++) {
        if (got[i].pair & RACE_ALLOC) {
            uint32_t q = got[i].pair & ~RACE_ALLOC;
            if (q >= NPOOL)
                continue;
            if (pseen[q]++ == 0) {
                pksi[q] = got[i].ksi;
                ksis[nk++] = got[i].ksi;
            } else if (pksi[q] != got[i].ksi) {
                split++;
            }
            continue;
        }
        if (got[i].pair >= NPAIRS)
            continue;
        uint32_t q = got[i].pair;
        if (seen[q]++ == 0) {
            first[q] = got[i];
            ksis[nk++] = got[i].ksi;
        } else if (first[q].ksi != got[i].ksi || memcmp(first[q].key, got[i].key, 32) != 0) {
            split++;
        }
    }
    unsigned twice = 0;
    for (int q = 0; q < NPAIRS; q++)
        twice += seen[q] == 2;
    CHECK_EQ_INT(twice, NPAIRS);
    unsigned pool_ok = 0;
    for (int q = 0; q < NPOOL; q++)
        pool_ok += pseen[q] == (q < RACE_POOLS ? 2u : 1u);
    CHECK_EQ_INT(pool_ok, NPOOL);
    CHECK_EQ_INT(split, 0);
    qsort(ksis, nk, sizeof ksis[0], u32_cmp);
    for (size_t i = 1; i < nk; i++)
        dups += ksis[i] == ksis[i - 1];
    CHECK_EQ_INT(dups, 0);
    CHECK(nk == NPAIRS + NPOOL && ksis[0] != 0);
    /* and the store agrees: a fresh kms answers the same key for each pair */
    CHECK_EQ_INT(env_open(&e, 0, 0), PK_OK);
    unsigned agree = 0;
    for (int q = 0; q < NPAIRS; q++) {
        pk_reg_keyset_t ks;
        if (q < RACE_SHARED)
            rname(a, sizeof a, "s", 9, q, 'a');
        else
            rname(a, sizeof a, "o", (q - RACE_SHARED) / RACE_OWN, (q - RACE_SHARED) % RACE_OWN,
                  'a');
        if (keys(&e, "nz", a, &ks) == PK_OK && ks.n == 1 && seen[q] &&
            ks.k[0].ksi == first[q].ksi && memcmp(ks.k[0].key, first[q].key, 32) == 0)
            agree++;
        pk_wipe(&ks, sizeof ks);
    }
    CHECK_EQ_INT(agree, NPAIRS);
    /* each pool pair's stored KSI is the answered one, claimed once */
    unsigned pagree = 0;
    for (int q = 0; q < NPOOL; q++) {
        unsigned claims = 0;
        int own = q >= RACE_POOLS, i = own ? (q - RACE_POOLS) % RACE_POOLP : q;
        int p = own ? (q - RACE_POOLS) / RACE_POOLP : 9;
        rname(a, sizeof a, "q", p, i, 'a');
        rname(b, sizeof b, "q", p, i, 'b');
        pagree += pseen[q] && pair_ksi(&e, a, b, &claims) == pksi[q] && claims == 1;
    }
    CHECK_EQ_INT(pagree, NPOOL);
    fprintf(stderr,
            "  %s: %d pairs (%d shared by the instances), %zu answers, %u split, %u KSI "
            "duplicates\n",
            B.name, NPAIRS, RACE_SHARED, n, split, dups);
    (void)pk_kms_flush(e.k);
    env_close(&e);
    pk_wipe(got, sizeof got);
    pk_wipe(first, sizeof first);
}

/* ---- paged key sets (KMS_KEYS_REQ with a cursor) ---- */

/* One paged KEYS_REQ for dev after cursor `after` (NULL: the first page),
 * handed in again after a commit while deferred. */
static int page(env_t *e, const char *node, const char *dev, const pk_reg_id_t *after,
                pk_reg_keyset_t *ks)
{
    uint8_t req[PK_REG_NET_MAX], resp[PK_KMS_RESP_MAX];
    size_t qlen = 0, rlen = 0;
    pk_reg_net_t q = {.type = PK_REG_T_KMS_KEYS_REQ, .paged = 1}, r;
    set_id(&q.a, dev);
    if (after)
        q.after = *after;
    CHECK_EQ_INT(pk_reg_net_encode(&q, req, sizeof req, &qlen), PK_OK);
    memset(ks, 0, sizeof *ks);
    int rc = PK_KMS_DEFER;
    for (int t = 0; t < 4 && rc == PK_KMS_DEFER; t++) {
        rc = pk_kms_handle(e->k, node, req, qlen, now, resp, sizeof resp, &rlen);
        CHECK_EQ_INT(commit_open(e), PK_OK);
    }
    if (rc == PK_OK) {
        CHECK_EQ_INT(pk_reg_net_decode(resp, rlen, &r), PK_OK);
        *ks = r.keys;
        pk_wipe(&r, sizeof r);
    }
    pk_wipe(resp, sizeof resp);
    return rc;
}

static void pname(char *b, size_t cap, int round, unsigned i)
{
    snprintf(b, cap, "%s-q%d-%04u", B.tag, round, i);
}

/*
 * A device with 100 allowed peers: every root key is made at its first
 * registration (not only 32; with and without group_writes), the pages
 * cover the set exactly once in peer order with one tag, a request without
 * a cursor still gets the first 32 unpaged, and a change of the set between
 * pages - a peer added before the cursor, one removed - changes the tag, so
 * the device sees that its pages do not make one set.
 */
static void test_group_paging(void)
{
    static pk_reg_keyset_t p, first;
    static pk_reg_id_t seen[128];
    char b[80];
    for (int group = 0; group <= 1; group++) {
        env_t e;
        fresh_db();
        CHECK_EQ_INT(env_open(&e, group, 0), PK_OK);
        char dev[64], grp[64];
        snprintf(dev, sizeof dev, "%s-big%d", B.tag, group);
        snprintf(grp, sizeof grp, "%s-grp%d", B.tag, group);
        CHECK_EQ_INT(pk_kms_device_add(e.k, dev, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                     PK_OK);
        CHECK_EQ_INT(pk_kms_group_add(e.k, grp, dev, now), PK_OK);
        for (unsigned i = 2; i <= 200; i += 2) { /* even numbers: room to insert */
            pname(b, sizeof b, group, i);
            CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                         PK_OK);
            CHECK_EQ_INT(pk_kms_group_add(e.k, grp, b, now), PK_OK);
        }
        /* in a domain with a master key: the block comes with the first page */
        char dom[64];
        snprintf(dom, sizeof dom, "%s-dom%d", B.tag, group);
        CHECK_EQ_INT(pk_kms_domain_add(e.k, dom, now, NULL), PK_OK);
        CHECK_EQ_INT(pk_kms_domain_member_add(e.k, dom, dev, now), PK_OK);
        CHECK_EQ_INT(pk_kms_master_rotate(e.k, dom, now, 3600000, now, NULL), PK_OK);
        uint64_t r0 = roots(&e);
        CHECK_EQ_INT(page(&e, "n1", dev, NULL, &first), PK_OK);
        CHECK_EQ_INT(first.mk.n, 1);
        CHECK_EQ_INT(roots(&e), r0 + 100); /* every pair's key, at once */
        CHECK(first.paged && first.more && first.total == 100 && first.n == 32);
        CHECK(first.mode == PK_REG_MODE_PAIRS);
        /* the pages: ascending, each key once, one tag */
        unsigned n = 0, pages = 1;
        p = first;
        for (int guard = 0; guard < 16; guard++) { /* 4 pages; a repeating page ends here */
            for (unsigned i = 0; i < p.n && n < 128; i++) {
                if (n > 0)
                    CHECK(pk_reg_id_cmp(&seen[n - 1], &p.k[i].peer) < 0);
                seen[n++] = p.k[i].peer;
            }
            CHECK_MEM(p.tag, first.tag, PK_REG_TAG_LEN);
            CHECK_EQ_INT(p.total, 100);
            if (!p.more)
                break;
            pk_reg_id_t cur = p.k[p.n - 1].peer;
            CHECK_EQ_INT(page(&e, "n1", dev, &cur, &p), PK_OK);
            CHECK(p.paged && p.n >= 1 && pk_reg_id_cmp(&cur, &p.k[0].peer) < 0);
            CHECK_EQ_INT(p.mk.n, 0); /* master keys come with the first page only */
            pages++;
        }
        CHECK_EQ_INT(n, 100);
        CHECK_EQ_INT(pages, 4);
        pname(b, sizeof b, group, 200);
        CHECK(seen[99].len == strlen(b) && memcmp(seen[99].b, b, seen[99].len) == 0);
        CHECK_EQ_INT(root_records(&e, dev), 100); /* one per key sent */
        /* an old KMS_KEYS_REQ (no cursor): the first 32, unpaged */
        pk_reg_keyset_t *old = &p;
        CHECK_EQ_INT(keys(&e, "n1", dev, old), PK_OK);
        CHECK(old->paged == 0 && old->n == 32);
        CHECK_MEM(old->k, first.k, sizeof first.k);
        CHECK_EQ_INT(commit_open(&e), PK_OK);
        /* a peer added before the cursor between pages: another tag */
        pk_reg_id_t cur = first.k[31].peer;
        pname(b, sizeof b, group, 5);
        CHECK_EQ_INT(pk_kms_device_add(e.k, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
        CHECK_EQ_INT(pk_kms_group_add(e.k, grp, b, now), PK_OK);
        CHECK_EQ_INT(page(&e, "n1", dev, &cur, &p), PK_OK);
        CHECK(memcmp(p.tag, first.tag, PK_REG_TAG_LEN) != 0);
        CHECK_EQ_INT(p.total, 101);
        uint8_t tag2[PK_REG_TAG_LEN];
        memcpy(tag2, p.tag, sizeof tag2);
        /* unchanged set: the same tag again */
        CHECK_EQ_INT(page(&e, "n1", dev, &cur, &p), PK_OK);
        CHECK_MEM(p.tag, tag2, PK_REG_TAG_LEN);
        /* one removed (after the cursor): another tag again */
        pname(b, sizeof b, group, 150);
        CHECK_EQ_INT(pk_kms_group_remove(e.k, grp, b, now), PK_OK);
        CHECK_EQ_INT(page(&e, "n1", dev, &cur, &p), PK_OK);
        CHECK(memcmp(p.tag, tag2, PK_REG_TAG_LEN) != 0);
        CHECK_EQ_INT(p.total, 100);
        /* and back: the same peers, but the pair's key is a new one (a new
         * KSI) - another tag again, though the peer list is the old one */
        uint8_t tag3[PK_REG_TAG_LEN];
        memcpy(tag3, p.tag, sizeof tag3);
        CHECK_EQ_INT(pk_kms_group_add(e.k, grp, b, now), PK_OK);
        CHECK_EQ_INT(page(&e, "n1", dev, &cur, &p), PK_OK);
        CHECK_EQ_INT(p.total, 101);
        CHECK(memcmp(p.tag, tag2, PK_REG_TAG_LEN) != 0 && memcmp(p.tag, tag3, PK_REG_TAG_LEN) != 0);
        (void)pk_kms_flush(e.k);
        env_close(&e);
    }
    pk_wipe(&p, sizeof p);
    pk_wipe(&first, sizeof first);
}

static void run_backend(const char *name)
{
    backend_begin(name, 'g');
    RUN(test_group_first_registration);
    RUN(test_group_overlap);
    RUN(test_group_alloc);
    RUN(test_group_alloc_recheck);
    RUN(test_group_alloc_claimed);
    RUN(test_alloc_direct);
    RUN(test_group_race);
    RUN(test_group_paging);
    backend_end();
}

int main(int argc, char **argv)
{
    if (pk_random(kek, sizeof kek) != PK_OK)
        return 1;
    int rc = pk_tb_run(argc, argv, &pg_uri, run_backend);
    return rc ? rc : check_report();
}
