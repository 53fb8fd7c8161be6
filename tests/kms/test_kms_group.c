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

/* ---- two kms instances, first registrations of shared pairs at once ---- */

#define RACE_PROCS  2
#define RACE_SHARED 48 /* pairs: side p registered by instance p */
#define RACE_OWN    16 /* pairs per instance, both sides its own */
#define RACE_CHUNK  6  /* new requests per emulated batch */
#define RACE_POOLP  8  /* pool pairs per instance, allocating between batches */

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

static int race_child(int p, int fd, int go)
{
    env_t e;
    int bad = 0;
    enum { NW = RACE_SHARED + 2 * RACE_OWN };
    static struct want w[NW];
    memset(w, 0, sizeof w);
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
    size_t next = 0, sent = 0;
    unsigned allocs = 0;
    for (unsigned round = 0; round < 400 && (sent < NW || allocs < RACE_POOLP); round++) {
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
        if (round % 2 == 0 && allocs < RACE_POOLP) { /* pool KSIs from the same sequence */
            uint8_t req[PK_REG_NET_MAX], resp[PK_KMS_RESP_MAX];
            size_t ql = 0, rl = 0;
            pk_reg_net_t q = {.type = PK_REG_T_KMS_ALLOC_REQ}, r;
            char x[80], y[80];
            rname(x, sizeof x, "q", p, (int)allocs, 'a');
            rname(y, sizeof y, "q", p, (int)allocs, 'b');
            set_id(&q.a, x);
            set_id(&q.b, y);
            (void)pk_reg_net_encode(&q, req, sizeof req, &ql);
            int rc = PK_ERR_BUSY;
            for (int t = 0; t < 8 && rc != PK_OK; t++)
                rc = pk_kms_handle(e.k, "nx", req, ql, now, resp, sizeof resp, &rl);
            if (rc == PK_OK && pk_reg_net_decode(resp, rl, &r) == PK_OK) {
                struct rec rr = {.pair = 0xFFFFFFFFu, .ksi = r.ksi};
                if (write(fd, &rr, sizeof rr) != sizeof rr)
                    bad++;
            } else {
                fprintf(stderr, "  proc %d alloc %u: rc %d\n", p, allocs, rc);
                bad++;
            }
            allocs++;
            pk_wipe(resp, sizeof resp);
        }
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
    }
    bad += sent != NW;
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
    enum { NPAIRS = RACE_SHARED + RACE_PROCS * RACE_OWN, NREC = 2 * NPAIRS + 64 };
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
    CHECK_EQ_INT(n, 2 * NPAIRS + RACE_PROCS * RACE_POOLP);
    /* both devices of every pair got one key and KSI (whichever instance
     * answered), and no KSI names two pairs or an allocation */
    struct rec first[NPAIRS];
    unsigned seen[NPAIRS], split = 0, dups = 0;
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < n; i++) {
        if (got[i].pair == 0xFFFFFFFFu) {
            ksis[nk++] = got[i].ksi;
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
    CHECK_EQ_INT(split, 0);
    qsort(ksis, nk, sizeof ksis[0], u32_cmp);
    for (size_t i = 1; i < nk; i++)
        dups += ksis[i] == ksis[i - 1];
    CHECK_EQ_INT(dups, 0);
    CHECK(nk == NPAIRS + RACE_PROCS * RACE_POOLP && ksis[0] != 0);
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
