/*
 * kms trigger keys (lib/proto/kms/trigger.c) on memory and SQLite (and
 * PostgreSQL when PK_TEST_PG is set): K1 and UID1 from the injected rng,
 * sealed and bound to the row, exported with an audit record, refused
 * without a state change, removed with the device.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/crypto.h"
#include "proto/kms/kms.h"
#include "store/store.h"

static uint8_t kek[PK_WRAP_KEK_LEN];
static const uint64_t now = 1700000000000ull;
static char uri[600], path[512], tag[24];
static const char *backend;

/* A counting rng: byte i of the stream is (seed + i) mod 256. */
typedef struct cnt_rng {
    uint8_t next;
} cnt_rng_t;

static int cnt_fill(void *ctx, uint8_t *buf, size_t n)
{
    cnt_rng_t *c = ctx;
    for (size_t i = 0; i < n; i++)
        buf[i] = c->next++;
    return PK_OK;
}

static cnt_rng_t crng;
static const pk_rng_t test_rng = {cnt_fill, &crng};

static const char *nm(const char *base)
{
    static char buf[8][80];
    static unsigned i;
    char *b = buf[i++ % 8];
    snprintf(b, 80, "%s-%s", tag, base);
    return b;
}

typedef struct env {
    pk_store_t *st;
    pk_kms_t *k;
} env_t;

static int env_open(env_t *e, const uint8_t *key)
{
    pk_kms_cfg_t cfg = {.kek = key, .rng = &test_rng};
    memset(e, 0, sizeof *e);
    int rc = pk_store_open(uri, &e->st);
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

static void fresh(void)
{
    static unsigned n;
    if (strcmp(backend, "sqlite") == 0) {
        snprintf(path, sizeof path, "/tmp/pk-kms-trig-%d-%u.db", (int)getpid(), n++);
        snprintf(uri, sizeof uri, "sqlite:%s", path);
    } else if (strcmp(backend, "pg") == 0) {
        snprintf(uri, sizeof uri, "%s", getenv("PK_TEST_PG"));
    } else {
        snprintf(uri, sizeof uri, "memory:");
    }
}

static void drop(void)
{
    if (strcmp(backend, "sqlite") == 0) {
        char p[600];
        unlink(path);
        snprintf(p, sizeof p, "%s-wal", path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", path);
        unlink(p);
    }
}

typedef struct audit_col {
    pk_kms_audit_t a[64];
    size_t n;
} audit_col_t;

static int audit_cb(void *ctx, const pk_kms_audit_t *a)
{
    audit_col_t *c = ctx;
    if (c->n < 64)
        c->a[c->n++] = *a;
    return 0;
}

/* The audit records about device dev with what, and to node (NULL: any). */
static unsigned audit_count(env_t *e, uint8_t what, const char *dev, const char *node)
{
    static audit_col_t c;
    unsigned n = 0;
    uint64_t from = 1;
    for (int page = 0; page < 1000; page++) {
        c.n = 0;
        CHECK_EQ_INT(pk_kms_audit_list(e->k, from, 64, audit_cb, &c), PK_OK);
        for (size_t i = 0; i < c.n; i++) {
            const pk_kms_audit_t *a = &c.a[i];
            if (a->what == what && a->device.len == strlen(dev) &&
                memcmp(a->device.b, dev, a->device.len) == 0 &&
                (!node ||
                 (a->node.len == strlen(node) && memcmp(a->node.b, node, a->node.len) == 0)))
                n++;
            from = a->seqno + 1;
        }
        if (c.n < 64)
            break;
    }
    return n;
}

static void test_add_export(void)
{
    env_t e;
    pk_kms_trigger_t t, x, s;
    uint8_t want[32];
    fresh();
    CHECK_EQ_INT(env_open(&e, kek), PK_OK);
    /* refusals first: no device, bad flags, a name the gts cannot carry */
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("t1"), 0, now, &t), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_device_add(e.k, nm("t1"), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, nm("t 2"), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("t1"), 0x02, now, &t), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("t 2"), 0, now, &t), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_kms_trigger_show(e.k, nm("t1"), &s), PK_ERR_NOTFOUND);
    /* K1 || UID1 are the next 32 bytes of the injected rng */
    crng.next = 0x40;
    for (int i = 0; i < 32; i++)
        want[i] = (uint8_t)(0x40 + i);
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("t1"), PK_KMS_TRIG_ROTATE, now, &t), PK_OK);
    CHECK_MEM(t.k1, want, 16);
    CHECK_MEM(t.uid1, want + 16, 16);
    CHECK_EQ_INT(t.flags, PK_KMS_TRIG_ROTATE);
    CHECK_EQ_INT(audit_count(&e, PK_KMS_A_TRIGGER_KEY, nm("t1"), "admin"), 1);
    /* a second add is refused and changes nothing */
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("t1"), 0, now + 1, &x), PK_ERR_EXISTS);
    CHECK_EQ_INT(audit_count(&e, PK_KMS_A_TRIGGER_KEY, nm("t1"), "admin"), 1);
    /* show: public facts only */
    CHECK_EQ_INT(pk_kms_trigger_show(e.k, nm("t1"), &s), PK_OK);
    CHECK_EQ_INT(s.flags, PK_KMS_TRIG_ROTATE);
    CHECK(s.created_ms == now);
    static const uint8_t zero[16];
    CHECK_MEM(s.k1, zero, 16);
    CHECK_MEM(s.uid1, zero, 16);
    /* export: the same K1 and UID1, audited with the recipient */
    CHECK_EQ_INT(pk_kms_trigger_export(e.k, nm("t1"), "gts", now + 2, &x), PK_OK);
    CHECK_MEM(x.k1, want, 16);
    CHECK_MEM(x.uid1, want + 16, 16);
    CHECK_EQ_INT(x.flags, PK_KMS_TRIG_ROTATE);
    CHECK_EQ_INT(audit_count(&e, PK_KMS_A_TRIGGER_KEY, nm("t1"), "gts"), 1);
    CHECK_EQ_INT(pk_kms_trigger_export(e.k, nm("t1"), "", now, &x), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_kms_trigger_export(e.k, nm("nope"), "gts", now, &x), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(audit_count(&e, PK_KMS_A_TRIGGER_KEY, nm("t1"), "gts"), 1);
    /* a random K1 from the system rng differs from UID1 and from others */
    env_close(&e);
    pk_kms_cfg_t cfg = {.kek = kek};
    CHECK_EQ_INT(pk_store_open(uri, &e.st), PK_OK);
    cfg.store = e.st;
    CHECK_EQ_INT(pk_kms_new(&cfg, &e.k), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, nm("t3"), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("t3"), 0, now, &x), PK_OK);
    CHECK(memcmp(x.k1, x.uid1, 16) != 0 && memcmp(x.k1, want, 16) != 0);
    pk_wipe(&x, sizeof x);
    env_close(&e);
    /* the SQLite file holds neither K1 nor UID1 in the clear */
    if (strcmp(backend, "sqlite") == 0) {
        FILE *f = fopen(path, "rb");
        static uint8_t buf[1 << 20];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f)
            fclose(f);
        CHECK(n > 0);
        for (size_t i = 0; i + 16 <= n; i++)
            CHECK(memcmp(buf + i, want, 16) != 0 && memcmp(buf + i, want + 16, 16) != 0);
    }
    drop();
}

/* The sealed value is bound to its row and to the KEK. */
static void test_binding(void)
{
    env_t e;
    pk_kms_trigger_t x;
    uint8_t ka[80], kb[80], val[256], other[PK_WRAP_KEK_LEN];
    size_t vl = 0;
    fresh();
    CHECK_EQ_INT(env_open(&e, kek), PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, nm("b1"), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_OK);
    CHECK_EQ_INT(pk_kms_device_add(e.k, nm("b2"), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("b1"), 0, now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("b2"), 0, now, NULL), PK_OK);
    /* b1's row copied under b2's key: opens for neither name */
    size_t la = strlen(nm("b1")), lb = strlen(nm("b2"));
    ka[0] = (uint8_t)la;
    memcpy(ka + 1, nm("b1"), la);
    kb[0] = (uint8_t)lb;
    memcpy(kb + 1, nm("b2"), lb);
    pk_txn_t *txn;
    CHECK_EQ_INT(pk_store_begin(e.st, &txn), PK_OK);
    CHECK_EQ_INT(pk_txn_get(txn, "kms_trig", ka, la + 1, val, sizeof val, &vl), PK_OK);
    CHECK_EQ_INT(vl, 10 + 32 + PK_WRAP_OVERHEAD);
    CHECK_EQ_INT(pk_txn_put(txn, "kms_trig", kb, lb + 1, val, vl), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(txn), PK_OK);
    CHECK(pk_kms_trigger_export(e.k, nm("b2"), "gts", now, &x) != PK_OK);
    CHECK_EQ_INT(audit_count(&e, PK_KMS_A_TRIGGER_KEY, nm("b2"), "gts"), 0);
    /* a flipped ciphertext bit */
    val[vl - 1] ^= 1;
    CHECK_EQ_INT(pk_store_begin(e.st, &txn), PK_OK);
    CHECK_EQ_INT(pk_txn_put(txn, "kms_trig", ka, la + 1, val, vl), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(txn), PK_OK);
    CHECK(pk_kms_trigger_export(e.k, nm("b1"), "gts", now, &x) != PK_OK);
    /* a truncated row */
    CHECK_EQ_INT(pk_store_begin(e.st, &txn), PK_OK);
    CHECK_EQ_INT(pk_txn_put(txn, "kms_trig", ka, la + 1, val, vl - 1), PK_OK);
    CHECK_EQ_INT(pk_txn_commit(txn), PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_export(e.k, nm("b1"), "gts", now, &x), PK_ERR_MALFORMED);
    env_close(&e);
    /* another KEK opens nothing (persistent stores) */
    if (strcmp(backend, "memory") != 0) {
        CHECK_EQ_INT(pk_random(other, sizeof other), PK_OK);
        CHECK_EQ_INT(env_open(&e, kek), PK_OK);
        CHECK_EQ_INT(pk_kms_device_add(e.k, nm("b3"), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                     PK_OK);
        CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("b3"), 0, now, NULL), PK_OK);
        env_close(&e);
        CHECK_EQ_INT(env_open(&e, other), PK_OK);
        CHECK(pk_kms_trigger_export(e.k, nm("b3"), "gts", now, &x) != PK_OK);
        env_close(&e);
    }
    drop();
}

typedef struct list_col {
    char names[16][80];
    int n;
} list_col_t;

static int list_cb(void *ctx, const pk_kms_trigger_t *t)
{
    list_col_t *c = ctx;
    static const uint8_t zero[16];
    if (memcmp(t->k1, zero, 16) != 0 || memcmp(t->uid1, zero, 16) != 0)
        return -1; /* a list never carries keys */
    if (c->n < 16)
        snprintf(c->names[c->n++], 80, "%.*s", t->id.len, (const char *)t->id.b);
    return 0;
}

static void test_list_remove(void)
{
    env_t e;
    list_col_t c;
    pk_kms_trigger_t s;
    fresh();
    CHECK_EQ_INT(env_open(&e, kek), PK_OK);
    const char *ids[] = {"l3", "l1", "l2", "l0"};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(
            pk_kms_device_add(e.k, nm(ids[i]), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL), PK_OK);
        if (i < 3)
            CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm(ids[i]), 0, now, NULL), PK_OK);
    }
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(pk_kms_trigger_list(e.k, NULL, 1000, list_cb, &c), PK_OK);
    /* other runs' rows (PostgreSQL keeps them) have other tags: count ours */
    int ours = 0, order_ok = 1;
    const char *prev = "";
    for (int i = 0; i < c.n; i++)
        if (strncmp(c.names[i], tag, strlen(tag)) == 0) {
            ours++;
            order_ok &= strcmp(prev, c.names[i]) < 0;
            prev = c.names[i];
        }
    CHECK_EQ_INT(ours, 3);
    CHECK(order_ok);
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(pk_kms_trigger_list(e.k, nm("l1"), 1, list_cb, &c), PK_OK);
    CHECK_EQ_INT(c.n, 1);
    CHECK(strcmp(c.names[0], nm("l2")) == 0);
    CHECK_EQ_INT(pk_kms_trigger_list(e.k, NULL, 0, list_cb, &c), PK_ERR_INVAL);
    /* remove: audited, then gone; again: not found */
    CHECK_EQ_INT(pk_kms_trigger_remove(e.k, nm("l1"), now), PK_OK);
    CHECK_EQ_INT(audit_count(&e, PK_KMS_A_TRIGGER_REMOVE, nm("l1"), "admin"), 1);
    CHECK_EQ_INT(pk_kms_trigger_show(e.k, nm("l1"), &s), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_trigger_export(e.k, nm("l1"), "gts", now, &s), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_trigger_remove(e.k, nm("l1"), now), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_trigger_remove(e.k, nm("l0"), now), PK_ERR_NOTFOUND);
    /* a new key after removal is a different one */
    pk_kms_trigger_t a, b;
    CHECK_EQ_INT(pk_kms_trigger_export(e.k, nm("l2"), "gts", now, &a), PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_remove(e.k, nm("l2"), now), PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_add(e.k, nm("l2"), 0, now, &b), PK_OK);
    CHECK(memcmp(a.k1, b.k1, 16) != 0 && memcmp(a.uid1, b.uid1, 16) != 0);
    /* removing the device removes its trigger key */
    CHECK_EQ_INT(pk_kms_device_remove(e.k, nm("l3"), now), PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_show(e.k, nm("l3"), &s), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_kms_device_add(e.k, nm("l3"), NULL, 0, PK_REG_MODE_PAIRS, NULL, now, NULL),
                 PK_OK);
    CHECK_EQ_INT(pk_kms_trigger_show(e.k, nm("l3"), &s), PK_ERR_NOTFOUND);
    pk_wipe(&a, sizeof a);
    pk_wipe(&b, sizeof b);
    env_close(&e);
    drop();
}

int main(void)
{
    const char *which[3] = {"memory", "sqlite", "pg"};
    int n = getenv("PK_TEST_PG") ? 3 : 2;
    if (pk_random(kek, sizeof kek) != PK_OK)
        return 1;
    snprintf(tag, sizeof tag, "t%lx%x", (unsigned long)time(NULL), (unsigned)getpid() & 0xffff);
    for (int i = 0; i < n; i++) {
        backend = which[i];
        fprintf(stderr, "-- %s\n", backend);
        RUN(test_add_export);
        RUN(test_binding);
        RUN(test_list_remove);
    }
    return check_report();
}
