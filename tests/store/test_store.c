/*
 * One suite, run against every backend: memory and SQLite always, PostgreSQL
 * when PK_TEST_PG holds a libpq URI (scripts/pg-harness.sh run sets it).
 *
 *   test_store                 memory, sqlite, and pg if PK_TEST_PG is set
 *   test_store [--require-pg] memory|sqlite|pg ...
 *                              only those; --require-pg fails without PK_TEST_PG
 *
 * Names of buckets, sequences, logs and components carry a per-run tag, so
 * the suite can run again on a PostgreSQL database that keeps old data.
 */
#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backends.h"
#include "check.h"
#include "core/err.h"
#include "store/store.h"

/* ---- the backend under test ---- */

static struct {
    const char *name; /* "memory", "sqlite", "pg" */
    int persistent;   /* data survives close/reopen */
    int shared;       /* several handles/processes see one database */
    char dir[256];    /* sqlite: temp dir */
    char uri[512];    /* current database */
    unsigned ndb;     /* sqlite: files made so far */
    char tag[32];     /* per-run name tag */
} B;

static const char *pg_uri;

/* A name unique to this run: "<tag>.<base>". */
static const char *nm(const char *base)
{
    static char buf[8][64];
    static unsigned i;
    char *b = buf[i++ % 8];
    snprintf(b, 64, "%s.%s", B.tag, base);
    return b;
}

/* Points B.uri at a fresh database (sqlite: a new file; memory: a new store
 * anyway; pg: the one database, names keep tests apart). */
static void fresh_db(void)
{
    if (strcmp(B.name, "sqlite") == 0)
        snprintf(B.uri, sizeof(B.uri), "sqlite:%s/t%u.db", B.dir, B.ndb++);
    else if (strcmp(B.name, "pg") == 0)
        snprintf(B.uri, sizeof(B.uri), "%s", pg_uri);
    else
        snprintf(B.uri, sizeof(B.uri), "memory:");
}

static pk_store_t *open_db(void)
{
    pk_store_t *s = NULL;
    int rc = pk_store_open(B.uri, &s);
    if (rc != PK_OK) {
        fprintf(stderr, "pk_store_open(%s): %s\n", B.uri, pk_strerror(rc));
        exit(2); /* nothing else can run */
    }
    return s;
}

static pk_txn_t *begin(pk_store_t *s)
{
    pk_txn_t *t = NULL;
    int rc = pk_store_begin(s, &t);
    if (rc != PK_OK) {
        fprintf(stderr, "pk_store_begin: %s\n", pk_strerror(rc));
        exit(2);
    }
    return t;
}

#define K(s) (const uint8_t *)(s), (sizeof(s) - 1)

/* Gets key into a static buffer; returns the length, or -rc on error. */
static long get_s(pk_txn_t *t, const char *b, const uint8_t *k, size_t kl, uint8_t *buf, size_t cap)
{
    size_t vl = 0;
    int rc = pk_txn_get(t, b, k, kl, buf, cap, &vl);
    return rc == PK_OK ? (long)vl : rc;
}

/* ---- basic operations ---- */

static void test_kv_basic(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *b = nm("kv"), *b2 = nm("kv2");
    uint8_t buf[64];
    size_t vl = 99;

    pk_txn_t *t = begin(s);
    CHECK_EQ_INT(pk_txn_get(t, b, K("k1"), buf, sizeof(buf), &vl), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_txn_put(t, b, K("k1"), K("value-1")), PK_OK);
    CHECK_EQ_INT(get_s(t, b, K("k1"), buf, sizeof(buf)), 7);
    CHECK_MEM(buf, "value-1", 7);
    /* too small: SPACE with the size needed; existence test with no buffer */
    CHECK_EQ_INT(pk_txn_get(t, b, K("k1"), buf, 3, &vl), PK_ERR_SPACE);
    CHECK_EQ_INT(vl, 7);
    CHECK_EQ_INT(pk_txn_get(t, b, K("k1"), NULL, 0, &vl), PK_ERR_SPACE);
    CHECK_EQ_INT(vl, 7);
    /* upsert replaces */
    CHECK_EQ_INT(pk_txn_put(t, b, K("k1"), K("v2")), PK_OK);
    CHECK_EQ_INT(get_s(t, b, K("k1"), buf, sizeof(buf)), 2);
    CHECK_MEM(buf, "v2", 2);
    /* insert: EXISTS leaves the value and the txn usable */
    CHECK_EQ_INT(pk_txn_insert(t, b, K("k1"), K("other")), PK_ERR_EXISTS);
    CHECK_EQ_INT(get_s(t, b, K("k1"), buf, sizeof(buf)), 2);
    CHECK_MEM(buf, "v2", 2);
    CHECK_EQ_INT(pk_txn_insert(t, b, K("k2"), K("two")), PK_OK);
    CHECK_EQ_INT(get_s(t, b, K("k2"), buf, sizeof(buf)), 3);
    /* same key, other bucket: separate */
    CHECK_EQ_INT(pk_txn_get(t, b2, K("k1"), buf, sizeof(buf), &vl), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_txn_insert(t, b2, K("k1"), K("b2")), PK_OK);
    CHECK_EQ_INT(get_s(t, b2, K("k1"), buf, sizeof(buf)), 2);
    CHECK_MEM(buf, "b2", 2);
    /* del */
    CHECK_EQ_INT(pk_txn_del(t, b, K("k2")), PK_OK);
    CHECK_EQ_INT(pk_txn_del(t, b, K("k2")), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_txn_get(t, b, K("k2"), buf, sizeof(buf), &vl), PK_ERR_NOTFOUND);
    /* empty value, binary key with NUL */
    CHECK_EQ_INT(pk_txn_put(t, b, K("\0z\0"), NULL, 0), PK_OK);
    CHECK_EQ_INT(pk_txn_get(t, b, K("\0z\0"), NULL, 0, &vl), PK_OK);
    CHECK_EQ_INT(vl, 0);
    CHECK_EQ_INT(pk_txn_get(t, b, K("\0z"), NULL, 0, &vl), PK_ERR_NOTFOUND);
    uint64_t n = 0;
    CHECK_EQ_INT(pk_txn_count(t, b, NULL, 0, &n), PK_OK);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    pk_store_close(s);
}

static void test_limits(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *b = nm("lim");
    static uint8_t big[PK_STORE_VAL_MAX + 1], out[PK_STORE_VAL_MAX];
    uint8_t key[PK_STORE_KEY_MAX + 1];
    size_t vl;
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 3);
    memset(key, 0xa5, sizeof(key));

    pk_txn_t *t = begin(s);
    CHECK_EQ_INT(pk_txn_put(t, b, key, PK_STORE_KEY_MAX, big, PK_STORE_VAL_MAX), PK_OK);
    CHECK_EQ_INT(pk_txn_get(t, b, key, PK_STORE_KEY_MAX, out, sizeof(out), &vl), PK_OK);
    CHECK_EQ_INT(vl, PK_STORE_VAL_MAX);
    CHECK_MEM(out, big, PK_STORE_VAL_MAX);
    /* out of range: INVAL, nothing done, txn still usable */
    CHECK_EQ_INT(pk_txn_put(t, b, key, PK_STORE_KEY_MAX + 1, big, 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_put(t, b, key, 0, big, 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_put(t, b, key, 1, big, PK_STORE_VAL_MAX + 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_put(t, "", key, 1, big, 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_put(t, "a b", key, 1, big, 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_put(t, "x'; DROP TABLE pk_kv; --", key, 1, big, 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_put(t, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl",
                            key, 1, big, 1),
                 PK_ERR_INVAL); /* 64 bytes */
    CHECK_EQ_INT(pk_txn_put(t, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk",
                            key, 1, big, 1),
                 PK_OK); /* 63 bytes */
    CHECK_EQ_INT(pk_txn_put(t, b, key, 1, NULL, 5), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_next_id(t, "bad name", &(uint64_t){0}), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_get(t, b, key, PK_STORE_KEY_MAX, NULL, 4, &vl), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    t = begin(s);
    CHECK_EQ_INT(pk_txn_get(t, b, key, PK_STORE_KEY_MAX, out, sizeof(out), &vl), PK_OK);
    CHECK_EQ_INT(vl, PK_STORE_VAL_MAX);
    CHECK_MEM(out, big, PK_STORE_VAL_MAX);
    CHECK_EQ_INT(pk_txn_get(t, b, key, 1, out, sizeof(out), &vl), PK_ERR_NOTFOUND);
    pk_txn_abort(t);
    pk_store_close(s);
}

/* ---- scans ---- */

struct coll {
    uint8_t keys[64][8];
    size_t lens[64];
    size_t n;
    int stop_at; /* return 1 when n reaches it (0: never) */
    int fail_at; /* return PK_ERR_DENIED when n reaches it */
};

static int collect(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct coll *c = ctx;
    if (c->n >= 64 || kl > 8 || vl != kl || memcmp(k, v, kl) != 0)
        return PK_ERR_IO; /* value = key in this test */
    memcpy(c->keys[c->n], k, kl);
    c->lens[c->n] = kl;
    c->n++;
    if (c->fail_at && (int)c->n == c->fail_at)
        return PK_ERR_DENIED;
    return c->stop_at && (int)c->n == c->stop_at;
}

struct kb {
    const char *k;
    size_t n;
};

static const struct kb scan_keys[] = {
    /* in bytewise order */
    {"\x00", 1},     {"a", 1},
    {"a\x00", 2},    {"a\x00\x00", 3},
    {"a\x01", 2},    {"ab", 2},
    {"a\xff", 2},    {"a\xff\xff", 3},
    {"b", 1},        {"\x7f", 1},
    {"\x80", 1},     {"\xff", 1},
    {"\xff\xff", 2}, {"\xff\xff\x01", 3},
};
#define NSCAN (sizeof(scan_keys) / sizeof(scan_keys[0]))

/* Checks that c holds exactly the keys scan_keys[from .. from + n). */
static void expect_keys(const struct coll *c, size_t from, size_t n)
{
    CHECK_EQ_INT(c->n, n);
    for (size_t i = 0; i < n && i < c->n; i++) {
        CHECK_EQ_INT(c->lens[i], scan_keys[from + i].n);
        CHECK_MEM(c->keys[i], scan_keys[from + i].k, scan_keys[from + i].n);
    }
}

static void test_scan(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *b = nm("scan"), *other = nm("scan0");
    pk_txn_t *t = begin(s);
    /* insert in a scrambled order; value = key; a neighbour bucket too */
    for (size_t i = 0; i < NSCAN; i++) {
        size_t j = (i * 5 + 3) % NSCAN;
        CHECK_EQ_INT(pk_txn_insert(t, b, (const uint8_t *)scan_keys[j].k, scan_keys[j].n,
                                   (const uint8_t *)scan_keys[j].k, scan_keys[j].n),
                     PK_OK);
        CHECK_EQ_INT(pk_txn_insert(t, other, (const uint8_t *)scan_keys[j].k, scan_keys[j].n,
                                   (const uint8_t *)"x", 1),
                     PK_OK);
    }
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    CHECK_EQ_INT(pk_store_begin_read(s, &t), PK_OK);
    struct coll c = {0};
    CHECK_EQ_INT(pk_txn_scan(t, b, NULL, 0, NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 0, NSCAN);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a"), NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 1, 7);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a\xff"), NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 6, 2);
    memset(&c, 0, sizeof(c)); /* prefix of only 0xff bytes: no upper bound */
    CHECK_EQ_INT(pk_txn_scan(t, b, K("\xff"), NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 11, 3);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("\xff\xff"), NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 12, 2);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a\x00"), NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 2, 2);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("zz"), NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 0, 0);
    /* limit, after (a key inside and outside the prefix), paging */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a"), NULL, 0, 2, collect, &c), PK_OK);
    expect_keys(&c, 1, 2);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a"), K("a\x00"), 100, collect, &c), PK_OK);
    expect_keys(&c, 3, 5);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a"), K("\x01"), 100, collect, &c), PK_OK);
    expect_keys(&c, 1, 7);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a"), K("ac"), 100, collect, &c), PK_OK);
    expect_keys(&c, 6, 2); /* 0xff sorts after 'c' */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_scan(t, b, K("a"), K("b"), 100, collect, &c), PK_OK);
    expect_keys(&c, 0, 0);
    struct coll all = {0};
    uint8_t last[8];
    size_t lastlen = 0;
    for (int page = 0; page < 20; page++) {
        memset(&c, 0, sizeof(c));
        CHECK_EQ_INT(pk_txn_scan(t, b, NULL, 0, lastlen ? last : NULL, lastlen, 3, collect, &c),
                     PK_OK);
        for (size_t i = 0; i < c.n && all.n < 64; i++) {
            memcpy(all.keys[all.n], c.keys[i], c.lens[i]);
            all.lens[all.n++] = c.lens[i];
        }
        if (c.n < 3)
            break;
        memcpy(last, c.keys[c.n - 1], c.lens[c.n - 1]);
        lastlen = c.lens[c.n - 1];
    }
    expect_keys(&all, 0, NSCAN);
    /* callback stop and callback error (txn stays usable) */
    memset(&c, 0, sizeof(c));
    c.stop_at = 4;
    CHECK_EQ_INT(pk_txn_scan(t, b, NULL, 0, NULL, 0, 100, collect, &c), PK_OK);
    expect_keys(&c, 0, 4);
    memset(&c, 0, sizeof(c));
    c.fail_at = 2;
    CHECK_EQ_INT(pk_txn_scan(t, b, NULL, 0, NULL, 0, 100, collect, &c), PK_ERR_DENIED);
    CHECK_EQ_INT(c.n, 2);
    /* counts */
    uint64_t n = 0;
    CHECK_EQ_INT(pk_txn_count(t, b, NULL, 0, &n), PK_OK);
    CHECK_EQ_INT(n, NSCAN);
    CHECK_EQ_INT(pk_txn_count(t, b, K("a"), &n), PK_OK);
    CHECK_EQ_INT(n, 7);
    CHECK_EQ_INT(pk_txn_count(t, b, K("\xff"), &n), PK_OK);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(pk_txn_count(t, nm("nothing"), NULL, 0, &n), PK_OK);
    CHECK_EQ_INT(n, 0);
    /* bounds */
    CHECK_EQ_INT(pk_txn_scan(t, b, NULL, 0, NULL, 0, 0, collect, &c), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_scan(t, b, NULL, 0, NULL, 0, PK_STORE_SCAN_MAX + 1, collect, &c),
                 PK_ERR_INVAL);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    pk_store_close(s);
}

/* ---- transactions ---- */

struct logc {
    uint64_t seq[16];
    uint8_t val[16][8];
    size_t len[16];
    size_t n;
};

static int log_collect(void *ctx, uint64_t seqno, const uint8_t *v, size_t vl)
{
    struct logc *c = ctx;
    if (c->n >= 16 || vl > 8)
        return PK_ERR_IO;
    c->seq[c->n] = seqno;
    memcpy(c->val[c->n], v, vl);
    c->len[c->n++] = vl;
    return 0;
}

static void test_abort_rolls_back(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *b = nm("ab"), *seq = nm("abseq"), *log = nm("ablog");
    uint8_t buf[16];
    uint64_t id = 0, no = 0, n = 0;

    pk_txn_t *t = begin(s);
    CHECK_EQ_INT(pk_txn_put(t, b, K("keep"), K("orig")), PK_OK);
    CHECK_EQ_INT(pk_txn_put(t, b, K("gone"), K("here")), PK_OK);
    CHECK_EQ_INT(pk_txn_next_id(t, seq, &id), PK_OK);
    CHECK_EQ_INT(id, 1);
    CHECK_EQ_INT(pk_txn_append(t, log, K("r1"), &no), PK_OK);
    CHECK_EQ_INT(no, 1);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    /* every kind of change, several times on one key, then abort */
    t = begin(s);
    CHECK_EQ_INT(pk_txn_put(t, b, K("keep"), K("changed")), PK_OK);
    CHECK_EQ_INT(pk_txn_del(t, b, K("keep")), PK_OK);
    CHECK_EQ_INT(pk_txn_insert(t, b, K("keep"), K("again")), PK_OK);
    CHECK_EQ_INT(pk_txn_put(t, b, K("keep"), K("thrice")), PK_OK);
    CHECK_EQ_INT(pk_txn_del(t, b, K("gone")), PK_OK);
    CHECK_EQ_INT(pk_txn_insert(t, b, K("new"), K("n")), PK_OK);
    CHECK_EQ_INT(pk_txn_put(t, b, K("new"), K("n2")), PK_OK);
    CHECK_EQ_INT(pk_txn_next_id(t, seq, &id), PK_OK);
    CHECK_EQ_INT(id, 2);
    CHECK_EQ_INT(pk_txn_next_id(t, nm("abseq2"), &id), PK_OK);
    CHECK_EQ_INT(pk_txn_append(t, log, K("r2"), &no), PK_OK);
    CHECK_EQ_INT(no, 2);
    CHECK_EQ_INT(pk_txn_count(t, b, NULL, 0, &n), PK_OK);
    CHECK_EQ_INT(n, 2); /* keep, new */
    pk_txn_abort(t);

    t = begin(s);
    CHECK_EQ_INT(get_s(t, b, K("keep"), buf, sizeof(buf)), 4);
    CHECK_MEM(buf, "orig", 4);
    CHECK_EQ_INT(get_s(t, b, K("gone"), buf, sizeof(buf)), 4);
    CHECK_MEM(buf, "here", 4);
    CHECK_EQ_INT(get_s(t, b, K("new"), buf, sizeof(buf)), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_txn_count(t, b, NULL, 0, &n), PK_OK);
    CHECK_EQ_INT(n, 2);
    /* the aborted identifiers and seqnos are handed out again: no gaps */
    CHECK_EQ_INT(pk_txn_next_id(t, seq, &id), PK_OK);
    CHECK_EQ_INT(id, 2);
    CHECK_EQ_INT(pk_txn_next_id(t, nm("abseq2"), &id), PK_OK);
    CHECK_EQ_INT(id, 1);
    struct logc lc = {0};
    CHECK_EQ_INT(pk_txn_log_scan(t, log, 1, 10, log_collect, &lc), PK_OK);
    CHECK_EQ_INT(lc.n, 1);
    CHECK_EQ_INT(pk_txn_append(t, log, K("r2b"), &no), PK_OK);
    CHECK_EQ_INT(no, 2);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    pk_store_close(s);
}

static void test_txn_rules(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *b = nm("rules");
    pk_txn_t *t = begin(s), *t2 = NULL;
    uint64_t id;
    CHECK_EQ_INT(pk_store_begin(s, &t2), PK_ERR_STATE); /* one txn per store */
    CHECK_EQ_INT(pk_store_begin_read(s, &t2), PK_ERR_STATE);
    CHECK(t2 == NULL);
    CHECK_EQ_INT(pk_txn_put(t, b, K("a"), K("1")), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    /* a finished txn refuses everything */
    CHECK_EQ_INT(pk_txn_put(t, b, K("a"), K("2")), PK_ERR_STATE);
    CHECK_EQ_INT(pk_txn_commit(t), PK_ERR_STATE);
    pk_txn_abort(t); /* harmless */
    /* a read-only txn refuses writes, stays usable */
    CHECK_EQ_INT(pk_store_begin_read(s, &t), PK_OK);
    CHECK_EQ_INT(pk_txn_put(t, b, K("a"), K("2")), PK_ERR_STATE);
    CHECK_EQ_INT(pk_txn_insert(t, b, K("b"), K("2")), PK_ERR_STATE);
    CHECK_EQ_INT(pk_txn_del(t, b, K("a")), PK_ERR_STATE);
    CHECK_EQ_INT(pk_txn_next_id(t, nm("s"), &id), PK_ERR_STATE);
    CHECK_EQ_INT(pk_txn_append(t, nm("l"), K("x"), NULL), PK_ERR_STATE);
    uint8_t buf[4];
    CHECK_EQ_INT(get_s(t, b, K("a"), buf, sizeof(buf)), 1);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    /* closing with an open txn rolls it back */
    t = begin(s);
    CHECK_EQ_INT(pk_txn_put(t, b, K("a"), K("uncommitted")), PK_OK);
    pk_store_close(s);
    s = open_db();
    if (B.persistent) {
        CHECK_EQ_INT(pk_store_begin_read(s, &t), PK_OK);
        CHECK_EQ_INT(get_s(t, b, K("a"), buf, sizeof(buf)), 1);
        CHECK_MEM(buf, "1", 1);
        pk_txn_abort(t);
    }
    pk_store_close(s);
}

struct runctx {
    int calls;
    int busy_first; /* return BUSY on the first n calls */
    const char *b;
};

static int run_body(pk_txn_t *t, void *ctx)
{
    struct runctx *r = ctx;
    r->calls++;
    int rc = pk_txn_put(t, r->b, K("run"), (const uint8_t *)&r->calls, sizeof(r->calls));
    if (rc != PK_OK)
        return rc;
    return r->calls <= r->busy_first ? PK_ERR_BUSY : PK_OK;
}

static void test_run_retries(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    struct runctx r = {0, 2, nm("run")};
    CHECK_EQ_INT(pk_store_run(s, run_body, &r, 5), PK_OK);
    CHECK_EQ_INT(r.calls, 3);
    int v = 0;
    size_t vl;
    pk_txn_t *t;
    CHECK_EQ_INT(pk_store_begin_read(s, &t), PK_OK);
    CHECK_EQ_INT(pk_txn_get(t, r.b, K("run"), (uint8_t *)&v, sizeof(v), &vl), PK_OK);
    CHECK_EQ_INT(v, 3); /* only the last try's write persisted */
    pk_txn_abort(t);
    r = (struct runctx){0, 100, r.b};
    CHECK_EQ_INT(pk_store_run(s, run_body, &r, 3), PK_ERR_BUSY);
    CHECK_EQ_INT(r.calls, 3);
    CHECK_EQ_INT(pk_store_run(s, run_body, &r, 0), PK_ERR_INVAL);
    pk_store_close(s);
}

/* ---- persistence ---- */

static void test_persist(void)
{
    if (!B.persistent)
        return;
    fresh_db();
    pk_store_t *s = open_db();
    const char *b = nm("pers"), *seq = nm("pseq"), *log = nm("plog");
    uint64_t id = 0;
    pk_txn_t *t = begin(s);
    CHECK_EQ_INT(pk_txn_put(t, b, K("durable"), K("yes")), PK_OK);
    CHECK_EQ_INT(pk_txn_next_id(t, seq, &id), PK_OK);
    CHECK_EQ_INT(pk_txn_next_id(t, seq, &id), PK_OK);
    CHECK_EQ_INT(id, 2);
    CHECK_EQ_INT(pk_txn_append(t, log, K("one"), NULL), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    t = begin(s);
    CHECK_EQ_INT(pk_txn_put(t, b, K("aborted"), K("no")), PK_OK);
    pk_txn_abort(t);
    pk_store_close(s);

    s = open_db();
    uint8_t buf[8];
    t = begin(s);
    CHECK_EQ_INT(get_s(t, b, K("durable"), buf, sizeof(buf)), 3);
    CHECK_MEM(buf, "yes", 3);
    CHECK_EQ_INT(get_s(t, b, K("aborted"), buf, sizeof(buf)), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_txn_next_id(t, seq, &id), PK_OK);
    CHECK_EQ_INT(id, 3); /* never reused across restarts */
    uint64_t no = 0;
    CHECK_EQ_INT(pk_txn_append(t, log, K("two"), &no), PK_OK);
    CHECK_EQ_INT(no, 2);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    pk_store_close(s);
}

/* ---- sequences and logs ---- */

static void test_seq_and_log(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *a = nm("sa"), *bb = nm("sb"), *log = nm("lg"), *log2 = nm("lg2");
    uint64_t id = 0, no = 0;
    pk_txn_t *t = begin(s);
    for (uint64_t i = 1; i <= 5; i++) {
        CHECK_EQ_INT(pk_txn_next_id(t, a, &id), PK_OK);
        CHECK_EQ_INT(id, i);
    }
    CHECK_EQ_INT(pk_txn_next_id(t, bb, &id), PK_OK);
    CHECK_EQ_INT(id, 1);
    const char *recs[] = {"r1", "", "r3", "r4"};
    for (uint64_t i = 0; i < 4; i++) {
        CHECK_EQ_INT(pk_txn_append(t, log, (const uint8_t *)recs[i], strlen(recs[i]), &no), PK_OK);
        CHECK_EQ_INT(no, i + 1);
    }
    CHECK_EQ_INT(pk_txn_append(t, log2, K("other"), &no), PK_OK);
    CHECK_EQ_INT(no, 1);
    /* a log and a sequence of one name do not share a counter */
    CHECK_EQ_INT(pk_txn_next_id(t, log, &id), PK_OK);
    CHECK_EQ_INT(id, 1);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    CHECK_EQ_INT(pk_store_begin_read(s, &t), PK_OK);
    struct logc c = {0};
    CHECK_EQ_INT(pk_txn_log_scan(t, log, 2, 10, log_collect, &c), PK_OK);
    CHECK_EQ_INT(c.n, 3);
    for (size_t i = 0; i < c.n; i++) {
        CHECK_EQ_INT(c.seq[i], i + 2);
        CHECK_EQ_INT(c.len[i], strlen(recs[i + 1]));
        CHECK_MEM(c.val[i], recs[i + 1], c.len[i]);
    }
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_log_scan(t, log, 0, 2, log_collect, &c), PK_OK);
    CHECK_EQ_INT(c.n, 2);
    CHECK_EQ_INT(c.seq[0], 1);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_log_scan(t, log, 5, 10, log_collect, &c), PK_OK);
    CHECK_EQ_INT(c.n, 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(pk_txn_log_scan(t, log2, 1, 10, log_collect, &c), PK_OK);
    CHECK_EQ_INT(c.n, 1);
    CHECK_MEM(c.val[0], "other", 5);
    pk_txn_abort(t);
    pk_store_close(s);
}

/* ---- logs: many appends in one transaction ---- */

/* Collects up to 4096 records: numbers and the first 8 bytes of each value. */
struct biglog {
    uint64_t seq[4096];
    uint64_t val[4096];
    size_t n;
};

static int biglog_collect(void *ctx, uint64_t seqno, const uint8_t *v, size_t vl)
{
    struct biglog *c = ctx;
    if (c->n >= 4096 || vl != 8)
        return PK_ERR_IO;
    c->seq[c->n] = seqno;
    memcpy(&c->val[c->n], v, 8);
    c->n++;
    return 0;
}

/* Reads all of log (at most 4096 records) into c, paging by 1000. */
static void read_log(pk_store_t *s, const char *log, struct biglog *c)
{
    pk_txn_t *t;
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(pk_store_begin_read(s, &t), PK_OK);
    uint64_t from = 1;
    for (int page = 0; page < 8; page++) {
        size_t before = c->n;
        CHECK_EQ_INT(pk_txn_log_scan(t, log, from, 1000, biglog_collect, c), PK_OK);
        if (c->n == before)
            break;
        from = c->seq[c->n - 1] + 1;
    }
    pk_txn_abort(t);
}

static int append_u64(pk_txn_t *t, const char *log, uint64_t v, uint64_t *no)
{
    return pk_txn_append(t, log, (const uint8_t *)&v, sizeof(v), no);
}

static void test_log_batch(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *log = nm("batch");
    uint64_t no = 0;
    int bad = 0;

    /* 300 appends in one txn: consecutive from 1 */
    pk_txn_t *t = begin(s);
    for (uint64_t i = 1; i <= 300; i++) {
        CHECK_EQ_INT(append_u64(t, log, i, &no), PK_OK);
        bad += no != i;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    /* the next txn goes on from the committed end, one and several records */
    t = begin(s);
    CHECK_EQ_INT(append_u64(t, log, 301, &no), PK_OK);
    CHECK_EQ_INT(no, 301);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    t = begin(s);
    for (uint64_t i = 302; i <= 310; i++) {
        CHECK_EQ_INT(append_u64(t, log, i, &no), PK_OK);
        bad += no != i;
    }
    /* the records are visible inside the txn that wrote them */
    struct logc lc = {0};
    CHECK_EQ_INT(pk_txn_log_scan(t, log, 305, 16, log_collect, &lc), PK_OK);
    CHECK_EQ_INT(lc.n, 6);
    CHECK_EQ_INT(lc.seq[0], 305);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    CHECK_EQ_INT(bad, 0);

    static struct biglog c;
    read_log(s, log, &c);
    CHECK_EQ_INT(c.n, 310);
    for (size_t i = 0; i < c.n; i++)
        bad += c.seq[i] != i + 1 || c.val[i] != i + 1;
    CHECK_EQ_INT(bad, 0);

    /* the counter's final value survives a restart */
    if (B.persistent) {
        pk_store_close(s);
        s = open_db();
        t = begin(s);
        CHECK_EQ_INT(append_u64(t, log, 311, &no), PK_OK);
        CHECK_EQ_INT(no, 311);
        CHECK_EQ_INT(append_u64(t, log, 312, &no), PK_OK);
        CHECK_EQ_INT(no, 312);
        CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
        t = begin(s);
        CHECK_EQ_INT(append_u64(t, log, 313, &no), PK_OK);
        CHECK_EQ_INT(no, 313);
        CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    }
    pk_store_close(s);
}

/* Two logs interleaved, then more logs in one txn than the per-txn counter
 * table holds (the rest take the per-record path), with a sequence of the
 * same name as one log in between. */
static void test_log_interleaved(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    enum { NLOG = 7, ROUNDS = 6 };
    static const char *const base[NLOG] = {"il0", "il1", "il2", "il3", "il4", "il5", "il6"};
    const char *logs[NLOG];
    uint64_t no = 0, id = 0;
    int bad = 0;
    for (int i = 0; i < NLOG; i++)
        logs[i] = strdup(nm(base[i]));
    pk_txn_t *t = begin(s);
    for (uint64_t r = 1; r <= 20; r++) {
        CHECK_EQ_INT(append_u64(t, logs[0], r, &no), PK_OK);
        bad += no != r;
        CHECK_EQ_INT(append_u64(t, logs[1], 100 + r, &no), PK_OK);
        bad += no != r;
        CHECK_EQ_INT(pk_txn_next_id(t, logs[0], &id), PK_OK);
        bad += id != r;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    t = begin(s);
    for (uint64_t r = 1; r <= ROUNDS; r++)
        for (int i = NLOG - 1; i >= 0; i--) {
            uint64_t want = (i < 2 ? 20 : 0) + r;
            CHECK_EQ_INT(append_u64(t, logs[i], (uint64_t)i * 1000 + want, &no), PK_OK);
            bad += no != want;
        }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    static struct biglog c;
    for (int i = 0; i < NLOG; i++) {
        uint64_t n = (i < 2 ? 20 : 0) + ROUNDS;
        read_log(s, logs[i], &c);
        CHECK_EQ_INT(c.n, n);
        for (size_t j = 0; j < c.n; j++) {
            uint64_t v = j < 20 && i < 2 ? (uint64_t)i * 100 + j + 1 : (uint64_t)i * 1000 + j + 1;
            bad += c.seq[j] != j + 1 || c.val[j] != v;
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* every log's counter was written back: the next txn goes on */
    t = begin(s);
    for (int i = 0; i < NLOG; i++) {
        CHECK_EQ_INT(append_u64(t, logs[i], 0, &no), PK_OK);
        bad += no != (uint64_t)(i < 2 ? 20 : 0) + ROUNDS + 1;
    }
    CHECK_EQ_INT(pk_txn_next_id(t, logs[0], &id), PK_OK);
    CHECK_EQ_INT(id, 21);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    CHECK_EQ_INT(bad, 0);
    for (int i = 0; i < NLOG; i++)
        free((void *)logs[i]);
    pk_store_close(s);
}

/* Aborted appends give their numbers back; a failed txn persists nothing. */
static void test_log_abort(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *log = nm("labort"), *log2 = nm("labort2");
    uint64_t no = 0;
    int bad = 0;
    pk_txn_t *t = begin(s);
    for (uint64_t i = 1; i <= 3; i++)
        CHECK_EQ_INT(append_u64(t, log, i, &no), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);

    t = begin(s);
    for (uint64_t i = 4; i <= 13; i++) {
        CHECK_EQ_INT(append_u64(t, log, 900 + i, &no), PK_OK);
        bad += no != i;
    }
    CHECK_EQ_INT(append_u64(t, log2, 900, &no), PK_OK);
    CHECK_EQ_INT(no, 1);
    pk_txn_abort(t);
    CHECK_EQ_INT(bad, 0);

    /* the same numbers again, from 4 (and from 1 on the log that never committed) */
    t = begin(s);
    for (uint64_t i = 4; i <= 6; i++) {
        CHECK_EQ_INT(append_u64(t, log, i, &no), PK_OK);
        bad += no != i;
    }
    CHECK_EQ_INT(append_u64(t, log2, 1, &no), PK_OK);
    CHECK_EQ_INT(no, 1);
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    CHECK_EQ_INT(bad, 0);

    /* an answer in between leaves the txn usable: its counter is written */
    t = begin(s);
    CHECK_EQ_INT(append_u64(t, log, 800, &no), PK_OK);
    CHECK_EQ_INT(append_u64(t, log, 801, &no), PK_OK);
    CHECK_EQ_INT(no, 8);
    CHECK_EQ_INT(pk_txn_put(t, nm("lab"), NULL, 0, K("x")), PK_ERR_INVAL); /* an answer */
    CHECK_EQ_INT(pk_txn_commit(t), PK_OK);
    t = begin(s);
    CHECK_EQ_INT(append_u64(t, log, 9, &no), PK_OK);
    CHECK_EQ_INT(no, 9);
    pk_txn_abort(t);

    static struct biglog c;
    read_log(s, log, &c);
    CHECK_EQ_INT(c.n, 8);
    for (size_t j = 0; j < c.n; j++)
        bad += c.seq[j] != j + 1 || c.val[j] != (j < 6 ? j + 1 : 800 + j - 6);
    CHECK_EQ_INT(bad, 0);
    read_log(s, log2, &c);
    CHECK_EQ_INT(c.n, 1);
    CHECK_EQ_INT(c.val[0], 1);
    pk_store_close(s);
}

/* Shared backends: a second writer's appends conflict (SQLite: it waits for
 * the write lock; PostgreSQL: the counter row), a failed commit persists
 * nothing, and the retry numbers on from the winner's records. */
static void test_log_conflict(void)
{
    if (!B.shared)
        return;
    fresh_db();
    pk_store_t *a = open_db(), *b = NULL;
    const char *log = nm("lconf"), *bk = nm("lconfb");
    pk_store_opts_t o = {.sync = PK_STORE_SYNC_FULL, .busy_timeout_ms = 50};
    CHECK_EQ_INT(pk_store_open_opts(B.uri, &o, &b), PK_OK);
    if (b == NULL)
        return;
    uint64_t no = 0;
    uint8_t buf[8];
    pk_txn_t *ta = begin(a), *tb = NULL;
    CHECK_EQ_INT(append_u64(ta, log, 1, &no), PK_OK);
    CHECK_EQ_INT(pk_txn_put(ta, bk, K("k"), K("0")), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);
    if (strcmp(B.name, "pg") == 0) {
        /* tb takes its snapshot, ta appends twice and commits, tb's first
         * append meets the updated counter row: BUSY, commit fails */
        tb = begin(b);
        CHECK_EQ_INT(get_s(tb, bk, K("k"), buf, sizeof(buf)), 1);
        ta = begin(a);
        CHECK_EQ_INT(append_u64(ta, log, 2, &no), PK_OK);
        CHECK_EQ_INT(append_u64(ta, log, 3, &no), PK_OK);
        CHECK_EQ_INT(no, 3);
        CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);
        CHECK_EQ_INT(append_u64(tb, log, 700, &no), PK_ERR_BUSY);
        CHECK_EQ_INT(append_u64(tb, log, 701, &no), PK_ERR_BUSY);
        CHECK_EQ_INT(pk_txn_commit(tb), PK_ERR_BUSY);
        /* tb appends first and writes its counter at commit; ta, which read
         * the bucket before, then conflicts on its own append */
        ta = begin(a);
        CHECK_EQ_INT(get_s(ta, bk, K("k"), buf, sizeof(buf)), 1);
        tb = begin(b);
        CHECK_EQ_INT(append_u64(tb, log, 4, &no), PK_OK);
        CHECK_EQ_INT(no, 4);
        CHECK_EQ_INT(append_u64(tb, log, 5, &no), PK_OK);
        CHECK_EQ_INT(no, 5);
        CHECK_EQ_INT(pk_txn_commit(tb), PK_OK);
        CHECK_EQ_INT(append_u64(ta, log, 702, &no), PK_ERR_BUSY);
        CHECK_EQ_INT(pk_txn_commit(ta), PK_ERR_BUSY);
    } else {
        ta = begin(a);
        CHECK_EQ_INT(append_u64(ta, log, 2, &no), PK_OK);
        CHECK_EQ_INT(append_u64(ta, log, 3, &no), PK_OK);
        CHECK_EQ_INT(pk_store_begin(b, &tb), PK_ERR_BUSY);
        CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);
        tb = begin(b);
        CHECK_EQ_INT(append_u64(tb, log, 4, &no), PK_OK);
        CHECK_EQ_INT(no, 4);
        CHECK_EQ_INT(append_u64(tb, log, 5, &no), PK_OK);
        CHECK_EQ_INT(no, 5);
        CHECK_EQ_INT(pk_txn_commit(tb), PK_OK);
    }
    ta = begin(a);
    CHECK_EQ_INT(append_u64(ta, log, 6, &no), PK_OK);
    CHECK_EQ_INT(no, 6);
    CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);
    static struct biglog c;
    read_log(a, log, &c);
    CHECK_EQ_INT(c.n, 6);
    int bad = 0;
    for (size_t j = 0; j < c.n; j++)
        bad += c.seq[j] != j + 1 || c.val[j] != j + 1;
    CHECK_EQ_INT(bad, 0);
    pk_store_close(a);
    pk_store_close(b);
}

/* ---- migrations ---- */

static int mig_order[16], mig_n;
static const char *mig_bucket;

static int mig_step(pk_txn_t *t, int no)
{
    if (mig_n < 16)
        mig_order[mig_n++] = no;
    uint8_t k = (uint8_t)('0' + no);
    return pk_txn_put(t, mig_bucket, &k, 1, &k, 1);
}
static int mig1(pk_txn_t *t)
{
    return mig_step(t, 1);
}
static int mig2(pk_txn_t *t)
{
    return mig_step(t, 2);
}
static int mig3(pk_txn_t *t)
{
    return mig_step(t, 3);
}
static int mig_fail(pk_txn_t *t)
{
    mig_step(t, 9);
    return PK_ERR_IO;
}

static void test_migrate(void)
{
    fresh_db();
    pk_store_t *s = open_db();
    const char *comp = nm("kms");
    const pk_migration_t steps[] = {{1, "one", mig1}, {2, "two", mig2}, {3, "three", mig3}};
    const pk_migration_t bad_to[] = {{1, "one", mig1}, {3, "skip", mig3}};
    const pk_migration_t failing[] = {
        {1, "one", mig1}, {2, "two", mig2}, {3, "three", mig3}, {4, "boom", mig_fail}};
    uint32_t v = 99;
    mig_bucket = nm("mig");

    CHECK_EQ_INT(pk_store_version(s, comp, &v), PK_OK);
    CHECK_EQ_INT(v, 0);
    mig_n = 0;
    CHECK_EQ_INT(pk_store_migrate(s, comp, steps, 2), PK_OK);
    CHECK_EQ_INT(mig_n, 2);
    CHECK_EQ_INT(mig_order[0], 1);
    CHECK_EQ_INT(mig_order[1], 2);
    CHECK_EQ_INT(pk_store_version(s, comp, &v), PK_OK);
    CHECK_EQ_INT(v, 2);
    /* again: nothing to do */
    mig_n = 0;
    CHECK_EQ_INT(pk_store_migrate(s, comp, steps, 2), PK_OK);
    CHECK_EQ_INT(mig_n, 0);
    pk_store_close(s);

    /* a newer binary after a restart: only the new step runs */
    s = open_db();
    if (!B.persistent) /* a new memory store: bring it to version 2 again */
        CHECK_EQ_INT(pk_store_migrate(s, comp, steps, 2), PK_OK);
    mig_n = 0;
    CHECK_EQ_INT(pk_store_migrate(s, comp, steps, 3), PK_OK);
    CHECK_EQ_INT(mig_n, 1);
    CHECK_EQ_INT(mig_order[0], 3);
    CHECK_EQ_INT(pk_store_version(s, comp, &v), PK_OK);
    CHECK_EQ_INT(v, 3);
    /* an older binary on newer data: refused */
    mig_n = 0;
    CHECK_EQ_INT(pk_store_migrate(s, comp, steps, 2), PK_ERR_VERSION);
    CHECK_EQ_INT(pk_store_migrate(s, comp, NULL, 0), PK_ERR_VERSION);
    CHECK_EQ_INT(mig_n, 0);
    /* malformed step lists */
    CHECK_EQ_INT(pk_store_migrate(s, nm("other"), bad_to, 2), PK_ERR_INVAL);
    /* a failing step: nothing of the migration persists */
    mig_n = 0;
    CHECK_EQ_INT(pk_store_migrate(s, comp, failing, 4), PK_ERR_IO);
    CHECK_EQ_INT(mig_n, 1);
    CHECK_EQ_INT(pk_store_version(s, comp, &v), PK_OK);
    CHECK_EQ_INT(v, 3);
    pk_txn_t *t;
    CHECK_EQ_INT(pk_store_begin_read(s, &t), PK_OK);
    uint8_t k = '9', buf[2];
    size_t vl;
    CHECK_EQ_INT(pk_txn_get(t, mig_bucket, &k, 1, buf, sizeof(buf), &vl), PK_ERR_NOTFOUND);
    k = '3';
    CHECK_EQ_INT(pk_txn_get(t, mig_bucket, &k, 1, buf, sizeof(buf), &vl), PK_OK);
    pk_txn_abort(t);
    /* components are independent */
    mig_n = 0;
    CHECK_EQ_INT(pk_store_migrate(s, nm("node"), steps, 1), PK_OK);
    CHECK_EQ_INT(mig_n, 1);
    pk_store_close(s);
}

/* The backend's own physical schema version: newer is refused. */
static void test_physical_version(void)
{
    if (strcmp(B.name, "sqlite") != 0)
        return;
    fresh_db();
    pk_store_t *s = open_db();
    pk_store_close(s);
    sqlite3 *db = NULL;
    CHECK_EQ_INT(sqlite3_open(B.uri + 7, &db), SQLITE_OK);
    CHECK_EQ_INT(
        sqlite3_exec(db, "UPDATE pk_meta SET v = 99 WHERE name = '#store'", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    s = NULL;
    CHECK_EQ_INT(pk_store_open(B.uri, &s), PK_ERR_VERSION);
    CHECK(s == NULL);
}

/* ---- conflicts ---- */

static void test_busy(void)
{
    if (!B.shared)
        return;
    fresh_db();
    pk_store_t *a = open_db(), *b = NULL;
    const char *bk = nm("busy");
    pk_store_opts_t o = {.sync = PK_STORE_SYNC_FULL, .busy_timeout_ms = 50};
    CHECK_EQ_INT(pk_store_open_opts(B.uri, &o, &b), PK_OK);
    if (b == NULL)
        return;
    pk_txn_t *ta, *tb;
    uint8_t buf[8];
    size_t vl;

    ta = begin(a);
    CHECK_EQ_INT(pk_txn_put(ta, bk, K("k"), K("0")), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);

    if (strcmp(B.name, "sqlite") == 0) {
        /* one writer at a time: the second waits busy_timeout, then BUSY */
        ta = begin(a);
        CHECK_EQ_INT(pk_store_begin(b, &tb), PK_ERR_BUSY);
        /* a reader is not blocked and sees the committed state */
        CHECK_EQ_INT(pk_store_begin_read(b, &tb), PK_OK);
        CHECK_EQ_INT(pk_txn_put(ta, bk, K("k"), K("1")), PK_OK);
        CHECK_EQ_INT(get_s(tb, bk, K("k"), buf, sizeof(buf)), 1);
        CHECK_MEM(buf, "0", 1);
        CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);
        CHECK_EQ_INT(get_s(tb, bk, K("k"), buf, sizeof(buf)), 1);
        CHECK_MEM(buf, "0", 1); /* still its snapshot */
        CHECK_EQ_INT(pk_txn_commit(tb), PK_OK);
        CHECK_EQ_INT(pk_store_begin(b, &tb), PK_OK);
        CHECK_EQ_INT(get_s(tb, bk, K("k"), buf, sizeof(buf)), 1);
        CHECK_MEM(buf, "1", 1);
        pk_txn_abort(tb);
    } else {
        /* b reads, a writes the same row and commits, b's write conflicts */
        ta = begin(a);
        tb = begin(b);
        CHECK_EQ_INT(get_s(tb, bk, K("k"), buf, sizeof(buf)), 1);
        CHECK_EQ_INT(pk_txn_put(ta, bk, K("k"), K("a")), PK_OK);
        CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);
        CHECK_EQ_INT(pk_txn_put(tb, bk, K("k"), K("b")), PK_ERR_BUSY);
        /* the txn is failed: everything repeats the error, commit aborts */
        CHECK_EQ_INT(pk_txn_get(tb, bk, K("k"), buf, sizeof(buf), &vl), PK_ERR_BUSY);
        CHECK_EQ_INT(pk_txn_put(tb, bk, K("other"), K("x")), PK_ERR_BUSY);
        CHECK_EQ_INT(pk_txn_commit(tb), PK_ERR_BUSY);
        /* write skew: each reads both rows, writes a different one */
        ta = begin(a);
        tb = begin(b);
        uint64_t n;
        CHECK_EQ_INT(pk_txn_count(ta, bk, NULL, 0, &n), PK_OK);
        CHECK_EQ_INT(pk_txn_count(tb, bk, NULL, 0, &n), PK_OK);
        CHECK_EQ_INT(pk_txn_insert(ta, bk, K("ska"), K("a")), PK_OK);
        CHECK_EQ_INT(pk_txn_insert(tb, bk, K("skb"), K("b")), PK_OK);
        CHECK_EQ_INT(pk_txn_commit(ta), PK_OK);
        CHECK_EQ_INT(pk_txn_commit(tb), PK_ERR_BUSY); /* SERIALIZABLE catches it */
        CHECK_EQ_INT(pk_store_begin_read(b, &tb), PK_OK);
        CHECK_EQ_INT(get_s(tb, bk, K("k"), buf, sizeof(buf)), 1);
        CHECK_MEM(buf, "a", 1);
        CHECK_EQ_INT(get_s(tb, bk, K("skb"), buf, sizeof(buf)), PK_ERR_NOTFOUND);
        CHECK_EQ_INT(get_s(tb, bk, K("other"), buf, sizeof(buf)), PK_ERR_NOTFOUND);
        pk_txn_abort(tb);
    }
    pk_store_close(a);
    pk_store_close(b);
}

/* ---- concurrency: processes allocating identifiers and claiming keys ---- */

#define NPROC  4
#define NALLOC 200
#define NCLAIM 50

struct alloc_ctx {
    const char *seq, *bucket, *log;
    uint64_t id;
    int claim; /* -1: allocate; else claim key number claim */
    int won;
};

static int alloc_body(pk_txn_t *t, void *ctx)
{
    struct alloc_ctx *c = ctx;
    if (c->claim < 0) {
        /* an identifier and two audit records of it, numbered by the log */
        uint64_t rec[2], no[2];
        int rc = pk_txn_next_id(t, c->seq, &c->id);
        for (int i = 0; i < 2 && rc == PK_OK; i++) {
            rec[i] = c->id;
            rc = pk_txn_append(t, c->log, (const uint8_t *)&rec[i], sizeof(rec[i]), &no[i]);
        }
        if (rc == PK_OK && no[1] != no[0] + 1)
            return PK_ERR_IO; /* not consecutive within one txn */
        return rc;
    }
    uint8_t k[2] = {'c', (uint8_t)c->claim};
    c->won = 0;
    int rc = pk_txn_insert(t, c->bucket, k, 2, (const uint8_t *)&c->id, sizeof(c->id));
    if (rc == PK_ERR_EXISTS)
        return PK_OK;
    c->won = rc == PK_OK;
    return rc;
}

/* Child: NALLOC identifiers (one txn each), then NCLAIM claims; writes the
 * identifiers and the number of claims won to fd. Exit 0 when all went well. */
static int child(int fd, const char *seq, const char *bucket, const char *log, int me)
{
    pk_store_t *s = NULL;
    uint64_t ids[NALLOC + 1];
    if (pk_store_open(B.uri, &s) != PK_OK)
        return 3;
    struct alloc_ctx c = {seq, bucket, log, 0, -1, 0};
    for (int i = 0; i < NALLOC; i++) {
        int rc = pk_store_run(s, alloc_body, &c, 1000);
        if (rc != PK_OK) {
            fprintf(stderr, "child %d: alloc %d: %s\n", me, i, pk_strerror(rc));
            return 4;
        }
        ids[i] = c.id;
        if (i > 0 && ids[i] <= ids[i - 1])
            return 5; /* strictly increasing within one allocator */
    }
    uint64_t won = 0;
    for (int k = 0; k < NCLAIM; k++) {
        c.claim = (k + me * 13) % NCLAIM; /* different orders */
        c.id = (uint64_t)me;
        if (pk_store_run(s, alloc_body, &c, 1000) != PK_OK)
            return 6;
        won += (uint64_t)c.won;
    }
    ids[NALLOC] = won;
    pk_store_close(s);
    return write(fd, ids, sizeof(ids)) == (ssize_t)sizeof(ids) ? 0 : 7;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_concurrent_next_id(void)
{
    if (!B.shared)
        return;
    fresh_db();
    const char *seq = nm("ksi"), *bucket = nm("claims"), *log = nm("klog");
    pk_store_t *s = open_db(); /* creates the schema before the children race */
    pk_store_close(s);
    int fds[NPROC];
    pid_t pids[NPROC];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int p = 0; p < NPROC; p++) {
        int pfd[2];
        if (pipe(pfd) != 0)
            abort();
        fflush(NULL);
        pids[p] = fork();
        if (pids[p] < 0)
            abort();
        if (pids[p] == 0) {
            close(pfd[0]);
            _exit(child(pfd[1], seq, bucket, log, p));
        }
        close(pfd[1]);
        fds[p] = pfd[0];
    }
    static uint64_t all[NPROC * NALLOC];
    uint64_t won = 0;
    for (int p = 0; p < NPROC; p++) {
        uint64_t ids[NALLOC + 1];
        size_t got = 0;
        for (int i = 0; i < 1000 && got < sizeof(ids); i++) {
            ssize_t n = read(fds[p], (uint8_t *)ids + got, sizeof(ids) - got);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        close(fds[p]);
        int st = 0;
        waitpid(pids[p], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK_EQ_INT(got, sizeof(ids));
        if (got == sizeof(ids)) {
            memcpy(all + p * NALLOC, ids, NALLOC * sizeof(uint64_t));
            won += ids[NALLOC];
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    fprintf(stderr, "     %s: %d processes x (%d next_id+2 appends + %d claims) txns in %.0f ms\n",
            B.name, NPROC, NALLOC, NCLAIM, ms);
    /* no duplicates, none lost: exactly 1..NPROC*NALLOC */
    qsort(all, NPROC * NALLOC, sizeof(uint64_t), cmp_u64);
    int bad = 0;
    for (uint64_t i = 0; i < NPROC * NALLOC; i++)
        bad += all[i] != i + 1;
    CHECK_EQ_INT(bad, 0);
    /* each key claimed exactly once */
    CHECK_EQ_INT(won, NCLAIM);
    s = open_db();
    pk_txn_t *t;
    uint64_t n = 0, id = 0;
    CHECK_EQ_INT(pk_store_begin(s, &t), PK_OK);
    CHECK_EQ_INT(pk_txn_count(t, bucket, NULL, 0, &n), PK_OK);
    CHECK_EQ_INT(n, NCLAIM);
    CHECK_EQ_INT(pk_txn_next_id(t, seq, &id), PK_OK);
    CHECK_EQ_INT(id, NPROC * NALLOC + 1);
    pk_txn_abort(t);
    /* the log: records 1..2*NPROC*NALLOC, gap-free, each txn's two records
     * adjacent, every identifier exactly once */
    static struct biglog lg;
    read_log(s, log, &lg);
    CHECK_EQ_INT(lg.n, 2 * NPROC * NALLOC);
    bad = 0;
    for (size_t i = 0; i < lg.n; i++)
        bad += lg.seq[i] != i + 1 || (i % 2 == 1 && lg.val[i] != lg.val[i - 1]);
    CHECK_EQ_INT(bad, 0);
    uint64_t ids[NPROC * NALLOC];
    for (size_t i = 0; i < lg.n / 2 && i < NPROC * NALLOC; i++)
        ids[i] = lg.val[2 * i];
    qsort(ids, lg.n / 2, sizeof(uint64_t), cmp_u64);
    for (uint64_t i = 0; i < lg.n / 2; i++)
        bad += ids[i] != i + 1;
    CHECK_EQ_INT(bad, 0);
    pk_store_close(s);
}

/* ---- URIs ---- */

static void test_uris(void)
{
    pk_store_t *s = NULL;
    CHECK_EQ_INT(pk_store_open("", &s), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_store_open("mysql://x", &s), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_store_open("sqlite:", &s), PK_ERR_INVAL);
    CHECK(s == NULL);
    if (strcmp(B.name, "sqlite") != 0)
        return;
    char u[600];
    snprintf(u, sizeof(u), "sqlite:%s/q.db?sync=bogus", B.dir);
    CHECK_EQ_INT(pk_store_open(u, &s), PK_ERR_INVAL);
    snprintf(u, sizeof(u), "sqlite:%s/q.db?sync=normal", B.dir);
    CHECK_EQ_INT(pk_store_open(u, &s), PK_OK);
    pk_store_close(s);
    snprintf(u, sizeof(u), "sqlite://%s/q.db", B.dir);
    CHECK_EQ_INT(pk_store_open(u, &s), PK_OK);
    CHECK(s && strcmp(pk_store_backend(s), "sqlite") == 0);
    pk_store_close(s);
    snprintf(u, sizeof(u), "%s/plain.db", B.dir);
    CHECK_EQ_INT(pk_store_open(u, &s), PK_OK);
    pk_store_close(s);
    CHECK(access(u, F_OK) == 0);
    snprintf(u, sizeof(u), "sqlite:%s/no/such/dir/x.db", B.dir);
    CHECK_EQ_INT(pk_store_open(u, &s), PK_ERR_IO);
}

/* ---- driver ---- */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void run_suite(const char *name)
{
    memset(&B, 0, sizeof(B));
    B.name = name;
    snprintf(B.tag, sizeof(B.tag), "t%ld.%ld", (long)getpid(), (long)time(NULL));
    if (strcmp(name, "sqlite") == 0) {
        const char *tmp = getenv("TMPDIR");
        snprintf(B.dir, sizeof(B.dir), "%s/pkstore.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (mkdtemp(B.dir) == NULL) {
            perror("mkdtemp");
            exit(2);
        }
        B.persistent = B.shared = 1;
    } else if (strcmp(name, "pg") == 0) {
        B.persistent = B.shared = 1;
    }
    fprintf(stderr, "== backend %s\n", name);
    RUN(test_uris);
    RUN(test_kv_basic);
    RUN(test_limits);
    RUN(test_scan);
    RUN(test_abort_rolls_back);
    RUN(test_txn_rules);
    RUN(test_run_retries);
    RUN(test_persist);
    RUN(test_seq_and_log);
    RUN(test_log_batch);
    RUN(test_log_interleaved);
    RUN(test_log_abort);
    RUN(test_log_conflict);
    RUN(test_migrate);
    RUN(test_physical_version);
    RUN(test_busy);
    RUN(test_concurrent_next_id);
    if (B.dir[0])
        nftw(B.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    int rc = pk_tb_run(argc, argv, &pg_uri, run_suite);
    return rc ? rc : check_report();
}
