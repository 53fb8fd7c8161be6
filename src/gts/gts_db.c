/*
 * The gts store: provisioning, command queues, loading (schema in gts.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "core/log.h"
#include "gts.h"
#include "gts_journal.h"
#include "net/loop.h"

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

/* ---- the device's state line (gts.h) ---- */

/* The next blank-delimited token of buf[*pos, len): *tok, *tlen. */
static int next_tok(const char *buf, size_t len, size_t *pos, const char **tok, size_t *tlen)
{
    size_t i = *pos;
    if (i >= len || buf[i] != ' ')
        return 0; /* fields are separated by exactly one space */
    i++;
    size_t s = i;
    while (i < len && buf[i] > ' ' && buf[i] < 0x7f)
        i++;
    *tok = buf + s;
    *tlen = i - s;
    *pos = i;
    return *tlen > 0;
}

static int tok_u32(const char *t, size_t n, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 10)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(t[i] - '0');
    }
    if (v < min || v > max)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

static int tok_hex16(const char *t, size_t n, uint8_t out[16])
{
    char h[33];
    if (n != 32)
        return 0;
    memcpy(h, t, 32);
    h[32] = '\0';
    int ok = gts_unhex(h, out, 16) == PK_OK;
    pk_wipe(h, sizeof h);
    return ok;
}

int gts_devfile_parse(const char *buf, size_t len, gts_devfile_t *f, const char **why)
{
    const char *t;
    size_t n, pos = 0;
    memset(f, 0, sizeof *f);
    f->interval = 60;
    /* the name: from the start, no blank before it */
    while (pos < len && buf[pos] > ' ' && buf[pos] < 0x7f)
        pos++;
    if (pos == 0 || pos > GTS_NAME_MAX) {
        *why = "the name (1..64 printable characters, no blanks) must come first";
        goto bad;
    }
    memcpy(f->name, buf, pos);
    if (!next_tok(buf, len, &pos, &t, &n) || !tok_u32(t, n, 0, 0x7ffffffe, &f->dev_no)) {
        *why = "the second field must be the device number";
        goto bad;
    }
    if (!next_tok(buf, len, &pos, &t, &n) || !tok_hex16(t, n, f->k)) {
        *why = "the third field must be K1, 32 hex digits";
        goto bad;
    }
    if (!next_tok(buf, len, &pos, &t, &n) || !tok_hex16(t, n, f->uid)) {
        *why = "the fourth field must be the identity (UID), 32 hex digits";
        goto bad;
    }
    size_t save = pos;
    if (!next_tok(buf, len, &pos, &t, &n)) {
        pos = save; /* no interval */
    } else if (!tok_u32(t, n, PK_TRIG_INTERVAL_MIN_S, PK_TRIG_INTERVAL_MAX_S, &f->interval)) {
        *why = "the fifth field, when present, must be the poll interval (1..604800 s)";
        goto bad;
    }
    /* then only blanks and at most one newline, at the end */
    while (pos < len && (buf[pos] == ' ' || buf[pos] == '\t' || buf[pos] == '\r'))
        pos++;
    if (pos < len && buf[pos] == '\n')
        pos++;
    if (pos != len) {
        *why = "unexpected text after the fields (one line only)";
        goto bad;
    }
    return PK_OK;
bad:
    pk_wipe(f, sizeof *f);
    return PK_ERR_MALFORMED;
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
    uint32_t interval_s; /* the devices' poll interval, 0: not given */
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

/* Provisions one device in txn: dev_no from the sequence, the name claimed,
 * the sealed fresh record, and gts_newdev so a running server loads it.
 * The one path of `gts device add` and `gts device import`. */
static int add_one(pk_txn_t *txn, gts_db_t *db, const char *name, const uint8_t k1[16],
                   const uint8_t uid[16], unsigned flags, uint32_t interval_s, uint32_t *dev_no)
{
    uint8_t key[4], val[PK_TRIG_REC_LEN + PK_WRAP_OVERHEAD];
    uint8_t rec[PK_TRIG_REC_LEN];
    uint64_t id;
    size_t wl;
    int rc = pk_txn_next_id(txn, "gts_dev_no", &id);
    if (rc != PK_OK)
        return rc;
    if (id >= 0x7fffffff)
        return PK_ERR_LIMIT;
    *dev_no = (uint32_t)id - 1;
    pk_put_u32(key, *dev_no);
    rc = pk_txn_insert(txn, "gts_name", (const uint8_t *)name, strlen(name), key, 4);
    if (rc != PK_OK)
        return rc;
    /* A fresh record built through a scratch core keeps one layout. */
    pk_trig_srv_t *tmp;
    rc = pk_trig_srv_new(&tmp, &pk_rng_system, 1);
    if (rc != PK_OK)
        return rc;
    rc = pk_trig_srv_add(tmp, 0, k1, uid, flags);
    if (rc == PK_OK)
        rc = pk_trig_srv_record(tmp, 0, rec);
    pk_trig_srv_free(tmp);
    if (rc == PK_OK)
        rc = pk_wrap_seal(db->kek, NULL, "gts_dev", key, 4, rec, sizeof rec, val, sizeof val, &wl);
    pk_wipe(rec, sizeof rec);
    if (rc == PK_OK)
        rc = pk_txn_put(txn, "gts_dev", key, 4, val, wl);
    if (rc == PK_OK)
        rc = pk_txn_put(txn, "gts_devname", key, 4, (const uint8_t *)name, strlen(name));
    if (rc == PK_OK)
        rc = pk_txn_put(txn, "gts_newdev", key, 4, NULL, 0);
    if (rc == PK_OK && interval_s) { /* the interval it was provisioned with: seq 0 */
        uint8_t iv[12] = {0};
        pk_put_u32(iv, interval_s);
        rc = pk_txn_put(txn, "gts_ival", key, 4, iv, sizeof iv);
    }
    return rc;
}

static int add_fn(pk_txn_t *txn, void *ctx)
{
    add_ctx_t *a = ctx;
    int rc = PK_OK;
    for (unsigned i = 0; i < a->count && rc == PK_OK; i++) {
        char name[GTS_NAME_MAX + 1];
        dev_name(a, i, name);
        rc =
            add_one(txn, a->db, name, a->k1[i], a->uid[i], a->flags, a->interval_s, &a->dev_nos[i]);
    }
    return rc;
}

int gts_db_add(gts_db_t *db, const char *name, unsigned count, unsigned flags, uint32_t interval_s,
               FILE *prov)
{
    add_ctx_t a = {db, name, count, flags, interval_s, NULL, NULL, NULL};
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
            if (interval_s)
                fprintf(prov, "%s %u %s %s %u\n", nm, a.dev_nos[i], kh, uh, interval_s);
            else
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

/* ---- import (devices provisioned elsewhere: the kms) ---- */

/* dev_no of name: PK_OK, PK_ERR_NOTFOUND. */
static int name_get(pk_txn_t *txn, const char *name, uint32_t *dev_no)
{
    uint8_t key[4];
    size_t kl = 0;
    int rc = pk_txn_get(txn, "gts_name", (const uint8_t *)name, strlen(name), key, sizeof key, &kl);
    if (rc == PK_ERR_SPACE || (rc == PK_OK && kl != 4))
        return PK_ERR_MALFORMED;
    if (rc == PK_OK)
        *dev_no = pk_get_u32(key);
    return rc;
}

typedef struct has_ctx {
    const char *name;
    uint32_t dev_no;
} has_ctx_t;

static int has_fn(pk_txn_t *txn, void *ctx)
{
    has_ctx_t *h = ctx;
    return name_get(txn, h->name, &h->dev_no);
}

int gts_db_has(gts_db_t *db, const char *name, uint32_t *dev_no)
{
    has_ctx_t h = {name, 0};
    int rc = pk_store_run_read(db->st, has_fn, &h, 5);
    if (rc == PK_ERR_NOTFOUND)
        return 0;
    if (rc != PK_OK)
        return rc;
    if (dev_no)
        *dev_no = h.dev_no;
    return 1;
}

/* ---- remove ---- */

/* 1 when dev_no was removed (gts_gone: a tombstone, never deleted), 0 when
 * not, < 0 on error. */
static int is_gone(pk_txn_t *txn, uint32_t dev_no)
{
    uint8_t key[4];
    size_t vl = 0;
    pk_put_u32(key, dev_no);
    int rc = pk_txn_get(txn, "gts_gone", key, 4, NULL, 0, &vl);
    if (rc == PK_OK)
        return 1;
    return rc == PK_ERR_NOTFOUND ? 0 : rc;
}

typedef struct keys_ctx {
    uint8_t (*k)[12];
    size_t n, cap, klen, seen;
    const uint8_t *match; /* for the inbox: value == match (4 bytes) */
    uint8_t last[12];     /* the last key visited (paging) */
} keys_ctx_t;

static int keys_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    keys_ctx_t *c = ctx;
    if (klen != c->klen)
        return 0; /* not a key of this layout: left alone, and not a page mark */
    memcpy(c->last, key, klen);
    c->seen++;
    if (c->match && (vlen != 4 || memcmp(val, c->match, 4) != 0))
        return 0;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 64;
        void *nk = realloc(c->k, nc * sizeof *c->k);
        if (!nk)
            return PK_ERR_NOMEM;
        c->k = nk;
        c->cap = nc;
    }
    memcpy(c->k[c->n++], key, klen);
    return 0;
}

/* Deletes the keys of bucket (klen bytes each, klen <= 12) that start with
 * prefix and, with match, whose value is match; a page of scan at a time. */
static int del_keys(pk_txn_t *txn, const char *bucket, const uint8_t *prefix, size_t plen,
                    size_t klen, const uint8_t *match)
{
    keys_ctx_t c;
    int rc, more = 0;
    memset(&c, 0, sizeof c);
    c.klen = klen;
    c.match = match;
    do {
        c.n = c.seen = 0;
        rc = pk_txn_scan(txn, bucket, prefix, plen, more ? c.last : NULL, more ? klen : 0,
                         PK_STORE_SCAN_MAX, keys_cb, &c);
        for (size_t i = 0; rc == PK_OK && i < c.n; i++)
            rc = pk_txn_del(txn, bucket, c.k[i], klen);
        more = 1;
    } while (rc == PK_OK && c.seen == PK_STORE_SCAN_MAX);
    free(c.k);
    return rc;
}

typedef struct remove_ctx {
    const char *const *names;
    size_t n;
    uint32_t *dev_nos;
    size_t bad; /* out: the first unknown name */
} remove_ctx_t;

static int remove_fn(pk_txn_t *txn, void *ctx)
{
    remove_ctx_t *r = ctx;
    int rc = PK_OK;
    for (size_t i = 0; rc == PK_OK && i < r->n; i++) {
        uint8_t key[4];
        const char *name = r->names[i];
        rc = name_get(txn, name, &r->dev_nos[i]);
        if (rc == PK_ERR_NOTFOUND)
            r->bad = i;
        if (rc != PK_OK)
            break;
        pk_put_u32(key, r->dev_nos[i]);
        rc = pk_txn_del(txn, "gts_name", (const uint8_t *)name, strlen(name));
        if (rc == PK_OK)
            rc = pk_txn_del(txn, "gts_devname", key, 4);
        if (rc == PK_OK)
            rc = pk_txn_del(txn, "gts_dev", key, 4);
        if (rc == PK_OK || rc == PK_ERR_NOTFOUND)
            rc = pk_txn_del(txn, "gts_newdev", key, 4);
        if (rc == PK_OK || rc == PK_ERR_NOTFOUND)
            rc = del_keys(txn, "gts_cmd", key, 4, 12, NULL);
        if (rc == PK_OK)
            rc = del_keys(txn, "gts_inbox", NULL, 0, 8, key);
        if (rc == PK_OK)
            rc = pk_txn_del(txn, "gts_ival", key, 4);
        if (rc == PK_OK || rc == PK_ERR_NOTFOUND)
            rc = pk_txn_put(txn, "gts_gone", key, 4, NULL, 0);
        if (rc == PK_OK)
            rc = pk_txn_put(txn, "gts_deldev", key, 4, NULL, 0);
    }
    return rc;
}

int gts_db_remove(gts_db_t *db, const char *const *names, size_t n, uint32_t *dev_nos, size_t *bad)
{
    remove_ctx_t r = {names, n, dev_nos, 0};
    int rc = pk_store_run(db->st, remove_fn, &r, 5);
    if (bad)
        *bad = r.bad;
    return rc;
}

typedef struct import_ctx {
    gts_db_t *db;
    gts_import_t *devs;
    size_t n;
} import_ctx_t;

static int import_fn(pk_txn_t *txn, void *ctx)
{
    import_ctx_t *c = ctx;
    int rc = PK_OK;
    for (size_t i = 0; i < c->n && rc == PK_OK; i++) {
        gts_import_t *d = &c->devs[i];
        if (d->skip)
            continue;
        d->kept = 0; /* reset at each try */
        rc = name_get(txn, d->name, &d->dev_no);
        if (rc == PK_OK) { /* provisioned already: its identity state stays as it is */
            d->kept = 1;
            continue;
        }
        if (rc == PK_ERR_NOTFOUND)
            rc = add_one(txn, c->db, d->name, d->k1, d->uid1, d->flags, d->interval_s, &d->dev_no);
    }
    return rc;
}

int gts_db_import(gts_db_t *db, gts_import_t *devs, size_t n)
{
    import_ctx_t c = {db, devs, n};
    for (size_t i = 0; i < n; i++) {
        size_t l = strnlen(devs[i].name, sizeof devs[i].name);
        if (l == 0 || l > GTS_NAME_MAX)
            return PK_ERR_INVAL;
    }
    return n ? pk_store_run(db->st, import_fn, &c, 20) : PK_OK;
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

/* ---- journal: base path, recovery, checkpoint, overlay ---- */

static const uint8_t meta_ckpt_key[] = "journal_ckpt";

int gts_db_journal_base(const char *uri, const char *opt, char *out, size_t n)
{
    if (opt) {
        if (snprintf(out, n, "%s", opt) >= (int)n || !*opt)
            return PK_ERR_INVAL;
        return PK_OK;
    }
    if (strncmp(uri, "memory:", 7) == 0) {
        out[0] = 0;
        return PK_OK;
    }
    if (strstr(uri, "://")) {
        fprintf(stderr, "proxkey gts: --journal PATH is required with %s\n", uri);
        return PK_ERR_INVAL;
    }
    const char *p = strncmp(uri, "sqlite:", 7) == 0 ? uri + 7 : uri;
    if (snprintf(out, n, "%.*s.journal", (int)strcspn(p, "?"), p) >= (int)n)
        return PK_ERR_INVAL;
    return PK_OK;
}

static int get_ckpt(pk_txn_t *txn, uint64_t *gen)
{
    uint8_t v[8];
    size_t vl;
    int rc = pk_txn_get(txn, "gts_meta", meta_ckpt_key, sizeof meta_ckpt_key - 1, v, sizeof v, &vl);
    *gen = 0;
    if (rc == PK_ERR_NOTFOUND)
        return PK_OK;
    if (rc == PK_OK && vl != 8)
        return PK_ERR_MALFORMED;
    if (rc == PK_OK)
        *gen = pk_get_u64(v);
    return rc;
}

static int put_ckpt(pk_txn_t *txn, uint64_t gen)
{
    uint8_t v[8];
    pk_put_u64(v, gen);
    return pk_txn_put(txn, "gts_meta", meta_ckpt_key, sizeof meta_ckpt_key - 1, v, sizeof v);
}

static int folded_fn(pk_txn_t *txn, void *ctx)
{
    return get_ckpt(txn, ctx);
}

int gts_db_folded(gts_db_t *db, uint64_t *gen)
{
    return pk_store_run(db->st, folded_fn, gen, 5);
}

int gts_cmd_interval(const uint8_t *val, size_t vlen, uint32_t *interval_s)
{
    if (vlen != 5 || (val[0] != PK_TRIG_CMD_POLL_FASTER && val[0] != PK_TRIG_CMD_POLL_SLOWER))
        return 0;
    *interval_s = pk_get_u32(val + 1);
    return 1;
}

/* A delivered command (key: dev_no ‖ seq) that changes the poll interval is
 * remembered in gts_ival[dev_no] = interval u32 ‖ seq u64 before the
 * command row goes: the interval the device now polls at. */
static int note_interval(pk_txn_t *txn, const uint8_t key[12])
{
    uint8_t val[1 + PK_TRIG_ARG_MAX], iv[12];
    size_t vl = 0;
    uint32_t sec;
    int rc = pk_txn_get(txn, "gts_cmd", key, 12, val, sizeof val, &vl);
    if (rc != PK_OK)
        return rc == PK_ERR_NOTFOUND ? PK_OK : rc;
    if (!gts_cmd_interval(val, vl, &sec))
        return PK_OK;
    pk_put_u32(iv, sec);
    memcpy(iv + 4, key + 4, 8);
    return pk_txn_put(txn, "gts_ival", key, 4, iv, sizeof iv);
}

/* One device record and one delivery into the store (inside a txn). */
static int store_rec(pk_txn_t *txn, pk_wrap_ctx_t *w, uint32_t dev_no, uint64_t deliv,
                     const uint8_t rec[PK_TRIG_REC_LEN])
{
    uint8_t key[12], val[PK_TRIG_REC_LEN + PK_WRAP_OVERHEAD];
    size_t vl;
    int rc = PK_OK;
    pk_put_u32(key, dev_no);
    if (deliv) {
        pk_put_u64(key + 4, deliv);
        rc = note_interval(txn, key);
        if (rc == PK_OK)
            rc = pk_txn_del(txn, "gts_cmd", key, 12);
        if (rc == PK_ERR_NOTFOUND)
            rc = PK_OK;
    }
    if (rc == PK_OK && rec)
        rc = pk_wrap_ctx_seal(w, NULL, "gts_dev", key, 4, rec, PK_TRIG_REC_LEN, val, sizeof val,
                              &vl);
    if (rc == PK_OK && rec)
        rc = pk_txn_put(txn, "gts_dev", key, 4, val, vl);
    return rc;
}

typedef struct recover_ctx {
    gts_db_t *db;
    const char *base;
    pk_wrap_ctx_t w;
    pk_txn_t *txn;
    uint64_t ckpt, max_gen, records;
} recover_ctx_t;

static int recover_cb(void *ctx, uint32_t dev_no, uint64_t deliv,
                      const uint8_t rec[PK_TRIG_REC_LEN])
{
    recover_ctx_t *r = ctx;
    int gone = is_gone(r->txn, dev_no);
    if (gone < 0)
        return gone;
    r->records++;
    /* a removed device's entries bring nothing back (its commands are gone) */
    return gone ? PK_OK : store_rec(r->txn, &r->w, dev_no, deliv, rec);
}

static int recover_fn(pk_txn_t *txn, void *ctx)
{
    recover_ctx_t *r = ctx;
    int rc = get_ckpt(txn, &r->ckpt);
    r->txn = txn;
    r->records = 0;
    if (rc == PK_OK && r->base[0])
        rc = gts_jnl_replay(r->base, r->db->kek, r->ckpt, recover_cb, r, &r->max_gen);
    else
        r->max_gen = r->ckpt;
    if (rc == PK_OK && r->max_gen > r->ckpt)
        rc = put_ckpt(txn, r->max_gen);
    return rc;
}

int gts_db_recover(gts_db_t *db, const char *base, uint64_t *gen)
{
    recover_ctx_t r;
    memset(&r, 0, sizeof r);
    r.db = db;
    r.base = base;
    int rc = pk_wrap_ctx_init(&r.w, db->kek);
    if (rc == PK_OK)
        rc = pk_store_run(db->st, recover_fn, &r, 5);
    pk_wrap_ctx_clear(&r.w);
    if (rc == PK_OK && base[0])
        rc = gts_jnl_remove_upto(base, r.max_gen);
    if (rc == PK_OK && r.records)
        pk_info("gts_recovered", "journal_records=%llu gen=%llu", (unsigned long long)r.records,
                (unsigned long long)r.max_gen);
    *gen = r.max_gen;
    return rc;
}

typedef struct ckpt_ctx {
    pk_wrap_ctx_t *w;
    const uint32_t *devs;
    const uint8_t *recs;
    size_t ndev;
    const uint64_t *deliv;
    size_t ndeliv;
    uint64_t gen;
    gts_owner_t *me;
    uint64_t lease_ms;
} ckpt_ctx_t;

static int ckpt_fn(pk_txn_t *txn, void *ctx)
{
    ckpt_ctx_t *c = ctx;
    int rc = PK_OK;
    if (c->me) { /* fencing: a server that lost the store writes nothing */
        c->me->gen = c->gen + 1;
        rc = gts_owner_fence(txn, c->me, pk_now_realtime_ms(), c->lease_ms, 1);
    }
    for (size_t i = 0; rc == PK_OK && i < c->ndeliv; i++)
        rc = store_rec(txn, c->w, (uint32_t)c->deliv[2 * i], c->deliv[2 * i + 1], NULL);
    for (size_t i = 0; rc == PK_OK && i < c->ndev; i++) {
        /* removed by `gts device remove` since the snapshot: not written back */
        int gone = is_gone(txn, c->devs[i]);
        if (gone < 0)
            rc = gone;
        else if (!gone)
            rc = store_rec(txn, c->w, c->devs[i], 0, c->recs + i * PK_TRIG_REC_LEN);
    }
    if (rc == PK_OK)
        rc = put_ckpt(txn, c->gen);
    return rc;
}

int gts_db_checkpoint(gts_db_t *db, pk_wrap_ctx_t *w, const uint32_t *devs, const uint8_t *recs,
                      size_t ndev, const uint64_t *deliv, size_t ndeliv, uint64_t gen,
                      gts_owner_t *me, uint64_t lease_ms)
{
    ckpt_ctx_t c = {w, devs, recs, ndev, deliv, ndeliv, gen, me, lease_ms};
    return pk_store_run(db->st, ckpt_fn, &c, 20);
}

/* The overlay: open addressing over dev_no -> (record, deliveries). */
typedef struct ov_ent {
    uint32_t dev_no, used, ndeliv, has_rec;
    uint8_t rec[PK_TRIG_REC_LEN];
} ov_ent_t;

struct gts_overlay {
    ov_ent_t *t;
    size_t cap, n;
    uint64_t *deliv; /* pairs */
    size_t nd, capd;
};

static ov_ent_t *ov_slot(gts_overlay_t *o, uint32_t dev_no, int create)
{
    if (create && (o->n + 1) * 2 > o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 1024;
        ov_ent_t *nt = calloc(nc, sizeof *nt);
        if (!nt)
            return NULL;
        for (size_t i = 0; i < o->cap; i++)
            if (o->t[i].used) {
                size_t h = (o->t[i].dev_no * 2654435761u) & (nc - 1);
                while (nt[h].used)
                    h = (h + 1) & (nc - 1);
                nt[h] = o->t[i];
            }
        if (o->t) {
            pk_wipe(o->t, o->cap * sizeof *o->t);
            free(o->t);
        }
        o->t = nt;
        o->cap = nc;
    }
    if (!o->cap)
        return NULL;
    size_t h = (dev_no * 2654435761u) & (o->cap - 1);
    while (o->t[h].used) {
        if (o->t[h].dev_no == dev_no)
            return &o->t[h];
        h = (h + 1) & (o->cap - 1);
    }
    if (!create)
        return NULL;
    o->t[h].used = 1;
    o->t[h].dev_no = dev_no;
    o->n++;
    return &o->t[h];
}

static int ov_cb(void *ctx, uint32_t dev_no, uint64_t deliv, const uint8_t rec[PK_TRIG_REC_LEN])
{
    gts_overlay_t *o = ctx;
    ov_ent_t *e = ov_slot(o, dev_no, 1);
    if (!e)
        return PK_ERR_NOMEM;
    memcpy(e->rec, rec, PK_TRIG_REC_LEN);
    e->has_rec = 1;
    if (deliv) {
        if (o->nd == o->capd) {
            size_t nc = o->capd ? o->capd * 2 : 256;
            uint64_t *nd = realloc(o->deliv, nc * 2 * sizeof *nd);
            if (!nd)
                return PK_ERR_NOMEM;
            o->deliv = nd;
            o->capd = nc;
        }
        o->deliv[2 * o->nd] = dev_no;
        o->deliv[2 * o->nd + 1] = deliv;
        o->nd++;
        e->ndeliv++;
    }
    return PK_OK;
}

typedef struct ov_load {
    gts_overlay_t *o;
    const char *base;
    const uint8_t *kek;
} ov_load_t;

static int ov_fn(pk_txn_t *txn, void *ctx)
{
    ov_load_t *l = ctx;
    uint64_t ckpt, maxg;
    int rc = get_ckpt(txn, &ckpt);
    if (rc == PK_OK && l->base[0])
        rc = gts_jnl_replay(l->base, l->kek, ckpt, ov_cb, l->o, &maxg);
    return rc;
}

int gts_overlay_load(gts_db_t *db, const char *base, gts_overlay_t **out)
{
    gts_overlay_t *o = calloc(1, sizeof *o);
    ov_load_t l = {o, base, db->kek};
    if (!o)
        return PK_ERR_NOMEM;
    int rc = pk_store_run_read(db->st, ov_fn, &l, 5);
    if (rc != PK_OK) {
        gts_overlay_free(o);
        return rc;
    }
    *out = o;
    return PK_OK;
}

int gts_overlay_get(const gts_overlay_t *o, uint32_t dev_no, uint8_t rec[PK_TRIG_REC_LEN],
                    unsigned *ndeliv)
{
    ov_ent_t *e = o ? ov_slot((gts_overlay_t *)o, dev_no, 0) : NULL;
    *ndeliv = e ? e->ndeliv : 0;
    if (!e || !e->has_rec)
        return 0;
    memcpy(rec, e->rec, PK_TRIG_REC_LEN);
    return 1;
}

int gts_overlay_delivered(const gts_overlay_t *o, uint32_t dev_no, uint64_t seq)
{
    for (size_t i = 0; o && i < o->nd; i++)
        if (o->deliv[2 * i] == dev_no && o->deliv[2 * i + 1] == seq)
            return 1;
    return 0;
}

void gts_overlay_free(gts_overlay_t *o)
{
    if (!o)
        return;
    if (o->t) {
        pk_wipe(o->t, o->cap * sizeof *o->t);
        free(o->t);
    }
    free(o->deliv);
    free(o);
}
