/*
 * The gts store: provisioning, command queues, loading (schema in gts.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "gts.h"

void gts_hex(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = 0;
}

int gts_unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return PK_ERR_MALFORMED;
    for (size_t i = 0; i < 2 * n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return PK_ERR_MALFORMED;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return PK_OK;
}

static int gts_migrate_v1(pk_txn_t *txn)
{
    (void)txn;
    return PK_OK; /* buckets need no creation */
}

int gts_db_open(gts_db_t *db, const char *uri, const char *kek_path, int create)
{
    char path[4096], why[128];
    int rc;
    memset(db, 0, sizeof *db);
    if (strncmp(uri, "memory:", 7) == 0 && !kek_path) {
        rc = pk_random(db->kek, sizeof db->kek);
        if (rc != PK_OK)
            return rc;
    } else {
        if (!kek_path) {
            const char *p = strncmp(uri, "sqlite:", 7) == 0 ? uri + 7 : uri;
            if (strstr(uri, "://")) {
                fprintf(stderr, "proxkey gts: --kek FILE is required with %s\n", uri);
                return PK_ERR_INVAL;
            }
            snprintf(path, sizeof path, "%.*s.kek", (int)strcspn(p, "?"), p);
            kek_path = path;
        }
        if (create && access(kek_path, F_OK) != 0) {
            rc = pk_kek_generate(kek_path);
            if (rc != PK_OK) {
                fprintf(stderr, "proxkey gts: cannot create KEK file %s\n", kek_path);
                return rc;
            }
        }
        rc = pk_kek_load(kek_path, db->kek, why, sizeof why);
        if (rc != PK_OK) {
            fprintf(stderr, "proxkey gts: KEK %s: %s\n", kek_path, why);
            return rc;
        }
    }
    rc = pk_store_open(uri, &db->st);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts: cannot open store %s: %s\n", uri, pk_strerror(rc));
        pk_wipe(db->kek, sizeof db->kek);
        return rc;
    }
    static const pk_migration_t steps[] = {{1, "gts buckets", gts_migrate_v1}};
    rc = pk_store_migrate(db->st, "gts", steps, 1);
    if (rc != PK_OK) {
        pk_store_close(db->st);
        db->st = NULL;
        pk_wipe(db->kek, sizeof db->kek);
    }
    return rc;
}

void gts_db_close(gts_db_t *db)
{
    pk_store_close(db->st);
    db->st = NULL;
    pk_wipe(db->kek, sizeof db->kek);
}

/* ---- add ---- */

typedef struct add_ctx {
    gts_db_t *db;
    const char *name;
    unsigned count, flags;
    /* outputs, reset at each try */
    uint32_t *dev_nos;
    uint8_t (*k1)[16];
    uint8_t (*uid)[16];
} add_ctx_t;

static void dev_name(const add_ctx_t *a, unsigned i, char *out)
{
    if (a->count == 1)
        snprintf(out, GTS_NAME_MAX + 1, "%s", a->name);
    else
        snprintf(out, GTS_NAME_MAX + 1, "%s-%u", a->name, i);
}

static int add_fn(pk_txn_t *txn, void *ctx)
{
    add_ctx_t *a = ctx;
    int rc = PK_OK;
    for (unsigned i = 0; i < a->count && rc == PK_OK; i++) {
        char name[GTS_NAME_MAX + 1];
        uint8_t key[4], val[PK_TRIG_REC_LEN + PK_WRAP_OVERHEAD];
        uint8_t rec[PK_TRIG_REC_LEN];
        uint64_t id;
        size_t wl;
        dev_name(a, i, name);
        rc = pk_txn_next_id(txn, "gts_dev_no", &id);
        if (rc != PK_OK)
            break;
        if (id >= 0x7fffffff)
            return PK_ERR_LIMIT;
        a->dev_nos[i] = (uint32_t)id - 1;
        pk_put_u32(key, a->dev_nos[i]);
        rc = pk_txn_insert(txn, "gts_name", (const uint8_t *)name, strlen(name), key, 4);
        if (rc != PK_OK)
            break;
        /* A fresh record built through a scratch core keeps one layout. */
        pk_trig_srv_t *tmp;
        rc = pk_trig_srv_new(&tmp, &pk_rng_system, 1);
        if (rc != PK_OK)
            break;
        rc = pk_trig_srv_add(tmp, 0, a->k1[i], a->uid[i], a->flags);
        if (rc == PK_OK)
            rc = pk_trig_srv_record(tmp, 0, rec);
        pk_trig_srv_free(tmp);
        if (rc != PK_OK)
            break;
        rc = pk_wrap_seal(a->db->kek, NULL, "gts_dev", key, 4, rec, sizeof rec, val, sizeof val,
                          &wl);
        pk_wipe(rec, sizeof rec);
        if (rc == PK_OK)
            rc = pk_txn_put(txn, "gts_dev", key, 4, val, wl);
        if (rc == PK_OK)
            rc = pk_txn_put(txn, "gts_devname", key, 4, (const uint8_t *)name, strlen(name));
        if (rc == PK_OK)
            rc = pk_txn_put(txn, "gts_newdev", key, 4, NULL, 0);
    }
    return rc;
}

int gts_db_add(gts_db_t *db, const char *name, unsigned count, unsigned flags, FILE *prov)
{
    add_ctx_t a = {db, name, count, flags, NULL, NULL, NULL};
    int rc;
    if (count == 0 || strlen(name) == 0 || strlen(name) > GTS_NAME_MAX - 11)
        return PK_ERR_INVAL;
    a.dev_nos = calloc(count, sizeof *a.dev_nos);
    a.k1 = calloc(count, 16);
    a.uid = calloc(count, 16);
    if (!a.dev_nos || !a.k1 || !a.uid) {
        rc = PK_ERR_NOMEM;
        goto out;
    }
    rc = pk_random(a.k1, (size_t)count * 16);
    if (rc == PK_OK)
        rc = pk_random(a.uid, (size_t)count * 16);
    if (rc == PK_OK)
        rc = pk_store_run(db->st, add_fn, &a, 20);
    if (rc == PK_OK && prov) {
        for (unsigned i = 0; i < count; i++) {
            char nm[GTS_NAME_MAX + 1], kh[33], uh[33];
            dev_name(&a, i, nm);
            gts_hex(a.k1[i], 16, kh);
            gts_hex(a.uid[i], 16, uh);
            fprintf(prov, "%s %u %s %s\n", nm, a.dev_nos[i], kh, uh);
            pk_wipe(kh, sizeof kh);
        }
    }
out:
    if (a.k1)
        pk_wipe(a.k1, (size_t)count * 16);
    free(a.dev_nos);
    free(a.k1);
    free(a.uid);
    return rc;
}

/* ---- send ---- */

typedef struct send_ctx {
    const char *name;
    uint8_t cmd;
    const uint8_t *arg;
    size_t arglen;
    uint64_t seq;
    unsigned ndev;
    int err;
} send_ctx_t;

static int send_one(pk_txn_t *txn, send_ctx_t *s, const uint8_t devkey[4])
{
    uint8_t key[12], val[1 + PK_TRIG_ARG_MAX], ibox[8];
    uint64_t n, id;
    int rc = pk_txn_count(txn, "gts_cmd", devkey, 4, &n);
    if (rc != PK_OK)
        return rc;
    if (n >= PK_TRIG_QUEUE_MAX)
        return PK_ERR_LIMIT;
    rc = pk_txn_next_id(txn, "gts_cmd_seq", &id);
    if (rc != PK_OK)
        return rc;
    memcpy(key, devkey, 4);
    pk_put_u64(key + 4, id);
    val[0] = s->cmd;
    if (s->arglen)
        memcpy(val + 1, s->arg, s->arglen);
    rc = pk_txn_put(txn, "gts_cmd", key, 12, val, 1 + s->arglen);
    pk_put_u64(ibox, id);
    if (rc == PK_OK)
        rc = pk_txn_put(txn, "gts_inbox", ibox, 8, devkey, 4);
    s->seq = id;
    s->ndev++;
    return rc;
}

static int send_all_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    uint8_t(*keys)[4] = ((void **)ctx)[0];
    size_t *n = ((void **)ctx)[1];
    (void)val;
    (void)vlen;
    if (klen == 4)
        memcpy(keys[(*n)++], key, 4);
    return 0;
}

static int send_fn(pk_txn_t *txn, void *ctx)
{
    send_ctx_t *s = ctx;
    uint8_t devkey[4];
    size_t vl;
    s->ndev = 0;
    if (s->name) {
        int rc = pk_txn_get(txn, "gts_name", (const uint8_t *)s->name, strlen(s->name), devkey,
                            sizeof devkey, &vl);
        if (rc != PK_OK || vl != 4)
            return rc == PK_OK ? PK_ERR_MALFORMED : rc;
        return send_one(txn, s, devkey);
    }
    /* every device: page through gts_dev */
    uint8_t(*keys)[4] = malloc(PK_STORE_SCAN_MAX * 4);
    uint8_t after[4];
    size_t alen = 0;
    int rc = keys ? PK_OK : PK_ERR_NOMEM;
    while (rc == PK_OK) {
        size_t n = 0;
        void *c[2] = {keys, &n};
        rc = pk_txn_scan(txn, "gts_dev", NULL, 0, alen ? after : NULL, alen, PK_STORE_SCAN_MAX,
                         send_all_cb, c);
        if (rc != PK_OK || n == 0)
            break;
        for (size_t i = 0; i < n && rc == PK_OK; i++)
            rc = send_one(txn, s, keys[i]);
        memcpy(after, keys[n - 1], 4);
        alen = 4;
    }
    free(keys);
    return rc;
}

int gts_db_send(gts_db_t *db, const char *name, uint8_t cmd, const uint8_t *arg, size_t arglen,
                uint64_t *seq, unsigned *ndev)
{
    send_ctx_t s = {name, cmd, arg, arglen, 0, 0, 0};
    int rc = pk_trig_cmd_check(cmd, arg, arglen);
    if (rc != PK_OK)
        return rc;
    rc = pk_store_run(db->st, send_fn, &s, 20);
    if (seq)
        *seq = s.seq;
    if (ndev)
        *ndev = s.ndev;
    return rc;
}

/* ---- load ---- */

typedef struct load_ctx {
    gts_db_t *db;
    pk_trig_srv_t *core;
    uint64_t max_seq;
    int err;
    uint8_t last[12];
    size_t lastlen;
    size_t page;
    int clear_inbox;
} load_ctx_t;

int gts_rec_open(gts_db_t *db, const uint8_t *key, const uint8_t *val, size_t vlen,
                 uint8_t rec[PK_TRIG_REC_LEN])
{
    size_t rl;
    int rc = pk_wrap_open(db->kek, "gts_dev", key, 4, val, vlen, rec, PK_TRIG_REC_LEN, &rl);
    if (rc == PK_OK && rl != PK_TRIG_REC_LEN)
        rc = PK_ERR_MALFORMED;
    return rc;
}

static int load_dev_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    load_ctx_t *l = ctx;
    uint8_t rec[PK_TRIG_REC_LEN];
    if (klen != 4)
        return 0;
    l->page++;
    memcpy(l->last, key, 4);
    l->lastlen = 4;
    int rc = gts_rec_open(l->db, key, val, vlen, rec);
    if (rc == PK_OK)
        rc = pk_trig_srv_load(l->core, pk_get_u32(key), rec, sizeof rec);
    pk_wipe(rec, sizeof rec);
    if (rc == PK_ERR_EXISTS)
        rc = PK_OK; /* already loaded (newdev rescan) */
    if (rc != PK_OK) {
        l->err = rc;
        return -1;
    }
    return 0;
}

static int load_cmd_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    load_ctx_t *l = ctx;
    if (klen != 12 || vlen < 1)
        return 0;
    l->page++;
    memcpy(l->last, key, 12);
    l->lastlen = 12;
    uint64_t seq = pk_get_u64(key + 4);
    if (seq > l->max_seq)
        l->max_seq = seq;
    int rc = pk_trig_srv_queue(l->core, pk_get_u32(key), seq, val[0], val + 1, vlen - 1);
    if (rc != PK_OK && rc != PK_ERR_EXISTS) {
        l->err = rc;
        return -1;
    }
    return 0;
}

static int collect_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    load_ctx_t *l = ctx;
    (void)val;
    (void)vlen;
    if (klen <= sizeof l->last) {
        memcpy(l->last, key, klen);
        l->lastlen = klen;
        l->page++;
    }
    return 1; /* one at a time */
}

/* Deletes every key of bucket (one by one: buckets here are small). */
static int clear_bucket(pk_txn_t *txn, const char *bucket)
{
    for (int guard = 0; guard < 10000000; guard++) {
        pk_txn_t *t = txn;
        load_ctx_t l;
        memset(&l, 0, sizeof l);
        int rc = pk_txn_scan(t, bucket, NULL, 0, NULL, 0, 1, collect_cb, &l);
        if (rc != PK_OK)
            return rc;
        if (!l.page)
            return PK_OK;
        rc = pk_txn_del(t, bucket, l.last, l.lastlen);
        if (rc != PK_OK)
            return rc;
    }
    return PK_ERR_LIMIT;
}

static int scan_all(pk_txn_t *txn, const char *bucket, pk_scan_fn cb, load_ctx_t *l)
{
    int rc;
    l->lastlen = 0;
    for (;;) {
        uint8_t prev[12];
        size_t pl = l->lastlen;
        memcpy(prev, l->last, sizeof prev);
        l->page = 0;
        rc = pk_txn_scan(txn, bucket, NULL, 0, pl ? prev : NULL, pl, PK_STORE_SCAN_MAX, cb, l);
        if (rc != PK_OK || l->err)
            return l->err ? l->err : rc;
        if (l->page == 0)
            return PK_OK;
    }
}

static int load_fn(pk_txn_t *txn, void *ctx)
{
    load_ctx_t *l = ctx;
    int rc = scan_all(txn, "gts_dev", load_dev_cb, l);
    if (rc == PK_OK)
        rc = scan_all(txn, "gts_cmd", load_cmd_cb, l);
    if (rc == PK_OK && l->clear_inbox)
        rc = clear_bucket(txn, "gts_inbox");
    if (rc == PK_OK && l->clear_inbox)
        rc = clear_bucket(txn, "gts_newdev");
    return rc;
}

int gts_db_load(gts_db_t *db, pk_trig_srv_t *core, uint64_t *max_seq)
{
    load_ctx_t l;
    memset(&l, 0, sizeof l);
    l.db = db;
    l.core = core;
    l.clear_inbox = 1;
    /* read-write: loading and clearing the inboxes is one atomic step, so a
     * command queued meanwhile is either loaded now or left in the inbox */
    int rc = pk_store_run(db->st, load_fn, &l, 5);
    *max_seq = l.max_seq;
    return rc;
}
