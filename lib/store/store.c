/*
 * The backend-independent half of store.h: URI dispatch, argument checks,
 * transaction state (the failed-transaction rule), retries and migrations.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store_impl.h"

enum txn_state { TXN_NONE = 0, TXN_OPEN = 1, TXN_FAILED = 2 };

/*
 * Log counters cached for one transaction. The first append to a log in a
 * transaction takes its number from the backend (counter_next: an upsert
 * that also claims the counter row - SQLite holds the write lock anyway, on
 * PostgreSQL the row lock serialises concurrent appenders); later appends to
 * that log in the same transaction number from memory, and commit writes the
 * final value once (counter_set) before COMMIT. The backend's counter is
 * stale in between, which nobody can observe: only pk_txn_append uses "l:"
 * counters. An abort forgets the cache with the rest of the transaction, so
 * its numbers are handed out again. Logs beyond LOGC_MAX in one transaction
 * take the per-record path (counter_next every time).
 */
#define LOGC_MAX 4

typedef struct logc {
    char name[PK_STORE_INAME_MAX]; /* the counter name, "l:<log>" */
    uint64_t next;                 /* the last number handed out */
    uint64_t written;              /* the value the backend's counter holds */
} logc_t;

struct pk_txn {
    pk_store_t *s;
    int state;  /* enum txn_state */
    int rdonly; /* began with pk_store_begin_read */
    int err;    /* TXN_FAILED: the error that failed it */
    unsigned nlogc;
    logc_t logc[LOGC_MAX];
};

struct pk_store {
    const pk_store_ops_t *ops;
    void *impl;
    pk_txn_t txn;    /* the one transaction of this store */
    uint64_t jitter; /* xorshift state for retry backoff (not security relevant) */
};

/* ---- argument checks ---- */

static int name_ok(const char *n)
{
    if (n == NULL)
        return 0;
    size_t len = strnlen(n, PK_STORE_NAME_MAX + 1);
    if (len == 0 || len > PK_STORE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == ':' || c == '/' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

static int key_ok(const uint8_t *k, size_t klen)
{
    return k != NULL && klen >= 1 && klen <= PK_STORE_KEY_MAX;
}

static int val_ok(const uint8_t *v, size_t vlen)
{
    return vlen <= PK_STORE_VAL_MAX && (v != NULL || vlen == 0);
}

/* PK_OK when txn may run an operation (writes: and is read-write). */
static int txn_usable(const pk_txn_t *t, int write)
{
    if (t == NULL || t->state == TXN_NONE)
        return PK_ERR_STATE;
    if (t->state == TXN_FAILED)
        return t->err;
    if (write && t->rdonly)
        return PK_ERR_STATE;
    return PK_OK;
}

/* Answers leave the txn usable; anything else from a backend fails it. */
static int txn_result(pk_txn_t *t, int rc)
{
    if (rc == PK_OK || rc == PK_ERR_NOTFOUND || rc == PK_ERR_EXISTS || rc == PK_ERR_SPACE)
        return rc;
    if (t->state == TXN_OPEN) {
        t->state = TXN_FAILED;
        t->err = rc;
    }
    return rc;
}

/* ---- open / close ---- */

static int parse_sqlite_query(char *path, pk_store_opts_t *o)
{
    char *q = strchr(path, '?');
    if (q == NULL)
        return PK_OK;
    *q++ = '\0';
    while (*q != '\0') {
        char *amp = strchr(q, '&');
        if (amp != NULL)
            *amp = '\0';
        if (strcmp(q, "sync=full") == 0)
            o->sync = PK_STORE_SYNC_FULL;
        else if (strcmp(q, "sync=normal") == 0)
            o->sync = PK_STORE_SYNC_NORMAL;
        else
            return PK_ERR_INVAL;
        if (amp == NULL)
            break;
        q = amp + 1;
    }
    return PK_OK;
}

static uint64_t jitter_seed(const void *p)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)getpid() << 16 ^
                 (uint64_t)(uintptr_t)p;
    return x ? x : 0x9e3779b97f4a7c15ull;
}

int pk_store_open_opts(const char *uri, const pk_store_opts_t *opts, pk_store_t **out)
{
    int rc = PK_ERR_INVAL;
    char *target = NULL;
    pk_store_t *s = NULL;
    pk_store_opts_t o = {0};
    const pk_store_ops_t *ops = NULL;

    if (uri == NULL || out == NULL || uri[0] == '\0')
        return PK_ERR_INVAL;
    *out = NULL;
    if (opts != NULL)
        o = *opts;
    if (o.busy_timeout_ms <= 0)
        o.busy_timeout_ms = 5000;
    if (o.sync != PK_STORE_SYNC_FULL && o.sync != PK_STORE_SYNC_NORMAL)
        return PK_ERR_INVAL;

    if (strcmp(uri, "memory:") == 0) {
        ops = &pk_store_mem_ops;
        target = strdup("");
    } else if (strncmp(uri, "postgresql://", 13) == 0 || strncmp(uri, "postgres://", 11) == 0) {
        ops = &pk_store_pg_ops;
        target = strdup(uri);
    } else if (strncmp(uri, "sqlite:", 7) == 0) {
        const char *p = uri + 7;
        if (strncmp(p, "///", 3) == 0)
            p += 2; /* sqlite:///abs/path */
        ops = &pk_store_sqlite_ops;
        target = strdup(p);
        if (target != NULL && (rc = parse_sqlite_query(target, &o)) != PK_OK)
            goto out;
    } else if (strstr(uri, "://") == NULL && strchr(uri, ':') == NULL) {
        ops = &pk_store_sqlite_ops; /* a plain path, taken literally */
        target = strdup(uri);
    } else {
        return PK_ERR_INVAL;
    }
    if (target == NULL) {
        rc = PK_ERR_NOMEM;
        goto out;
    }
    if (target[0] == '\0' && ops == &pk_store_sqlite_ops) {
        rc = PK_ERR_INVAL;
        goto out;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = PK_ERR_NOMEM;
        goto out;
    }
    s->ops = ops;
    s->txn.s = s;
    s->jitter = jitter_seed(s);
    rc = ops->open(target, &o, &s->impl);
    if (rc != PK_OK)
        goto out;
    *out = s;
    s = NULL;
out:
    free(s);
    free(target);
    return rc;
}

int pk_store_open(const char *uri, pk_store_t **out)
{
    return pk_store_open_opts(uri, NULL, out);
}

void pk_store_close(pk_store_t *s)
{
    if (s == NULL)
        return;
    if (s->txn.state != TXN_NONE)
        pk_txn_abort(&s->txn);
    s->ops->close(s->impl);
    free(s);
}

const char *pk_store_backend(const pk_store_t *s)
{
    return s ? s->ops->name : "";
}

/* ---- transactions ---- */

static int begin(pk_store_t *s, int rdonly, pk_txn_t **txn)
{
    if (s == NULL || txn == NULL)
        return PK_ERR_INVAL;
    *txn = NULL;
    if (s->txn.state != TXN_NONE)
        return PK_ERR_STATE;
    int rc = s->ops->begin(s->impl, rdonly);
    if (rc != PK_OK)
        return rc;
    s->txn.state = TXN_OPEN;
    s->txn.rdonly = rdonly;
    s->txn.err = PK_OK;
    s->txn.nlogc = 0;
    *txn = &s->txn;
    return PK_OK;
}

int pk_store_begin(pk_store_t *s, pk_txn_t **txn)
{
    return begin(s, 0, txn);
}

int pk_store_begin_read(pk_store_t *s, pk_txn_t **txn)
{
    return begin(s, 1, txn);
}

void pk_txn_abort(pk_txn_t *t)
{
    if (t == NULL || t->state == TXN_NONE)
        return;
    t->s->ops->abort(t->s->impl);
    t->state = TXN_NONE;
    t->nlogc = 0;
}

/* Writes the cached log counters back before COMMIT; the first error fails
 * the transaction (the caller then aborts it). */
static int logc_flush(pk_txn_t *t)
{
    for (unsigned i = 0; i < t->nlogc; i++) {
        logc_t *c = &t->logc[i];
        if (c->next == c->written)
            continue;
        int rc = t->s->ops->counter_set(t->s->impl, c->name, c->next);
        if (rc == PK_ERR_NOTFOUND || rc == PK_ERR_EXISTS || rc == PK_ERR_SPACE)
            rc = PK_ERR_IO; /* the row claimed in this txn is gone: never an answer */
        if (rc != PK_OK)
            return txn_result(t, rc);
        c->written = c->next;
    }
    return PK_OK;
}

int pk_txn_commit(pk_txn_t *t)
{
    if (t == NULL || t->state == TXN_NONE)
        return PK_ERR_STATE;
    if (t->state == TXN_FAILED) {
        int err = t->err;
        pk_txn_abort(t);
        return err;
    }
    int rc = logc_flush(t);
    if (rc != PK_OK) {
        pk_txn_abort(t);
        return rc;
    }
    rc = t->s->ops->commit(t->s->impl); /* a backend aborts on failure */
    t->state = TXN_NONE;
    t->nlogc = 0;
    return rc;
}

static void backoff(pk_store_t *s, unsigned attempt)
{
    /* 100 us doubling to 50 ms, times a random factor in [0.5, 1.5). */
    uint64_t base_us = 100;
    for (unsigned i = 0; i < attempt && base_us < 50000; i++)
        base_us *= 2;
    if (base_us > 50000)
        base_us = 50000;
    uint64_t x = s->jitter;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->jitter = x;
    uint64_t us = base_us / 2 + x % (base_us + 1);
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int run(pk_store_t *s, int rdonly, pk_txn_fn fn, void *ctx, unsigned max_tries)
{
    if (s == NULL || fn == NULL || max_tries == 0)
        return PK_ERR_INVAL;
    int rc = PK_ERR_BUSY;
    for (unsigned attempt = 0; attempt < max_tries; attempt++) {
        if (attempt > 0)
            backoff(s, attempt - 1);
        pk_txn_t *t;
        rc = begin(s, rdonly, &t);
        if (rc == PK_ERR_BUSY)
            continue;
        if (rc != PK_OK)
            return rc;
        rc = fn(t, ctx);
        if (t->state == TXN_FAILED)
            rc = t->err; /* a failed txn wins over what fn made of it */
        if (rc != PK_OK) {
            pk_txn_abort(t);
            if (rc == PK_ERR_BUSY)
                continue;
            return rc;
        }
        rc = pk_txn_commit(t);
        if (rc != PK_ERR_BUSY)
            return rc;
    }
    return rc;
}

int pk_store_run(pk_store_t *s, pk_txn_fn fn, void *ctx, unsigned max_tries)
{
    return run(s, 0, fn, ctx, max_tries);
}

int pk_store_run_read(pk_store_t *s, pk_txn_fn fn, void *ctx, unsigned max_tries)
{
    return run(s, 1, fn, ctx, max_tries);
}

/* ---- buckets ---- */

int pk_txn_get(pk_txn_t *t, const char *bucket, const uint8_t *key, size_t klen, uint8_t *val,
               size_t cap, size_t *vlen)
{
    if (!name_ok(bucket) || !key_ok(key, klen) || vlen == NULL || (val == NULL && cap != 0))
        return PK_ERR_INVAL;
    int rc = txn_usable(t, 0);
    if (rc != PK_OK)
        return rc;
    *vlen = 0;
    return txn_result(t, t->s->ops->get(t->s->impl, bucket, key, klen, val, cap, vlen));
}

static int put(pk_txn_t *t, const char *bucket, const uint8_t *key, size_t klen, const uint8_t *val,
               size_t vlen, int insert_only)
{
    if (!name_ok(bucket) || !key_ok(key, klen) || !val_ok(val, vlen))
        return PK_ERR_INVAL;
    int rc = txn_usable(t, 1);
    if (rc != PK_OK)
        return rc;
    return txn_result(t, t->s->ops->put(t->s->impl, bucket, key, klen, val, vlen, insert_only));
}

int pk_txn_put(pk_txn_t *t, const char *bucket, const uint8_t *key, size_t klen, const uint8_t *val,
               size_t vlen)
{
    return put(t, bucket, key, klen, val, vlen, 0);
}

int pk_txn_insert(pk_txn_t *t, const char *bucket, const uint8_t *key, size_t klen,
                  const uint8_t *val, size_t vlen)
{
    return put(t, bucket, key, klen, val, vlen, 1);
}

int pk_txn_del(pk_txn_t *t, const char *bucket, const uint8_t *key, size_t klen)
{
    if (!name_ok(bucket) || !key_ok(key, klen))
        return PK_ERR_INVAL;
    int rc = txn_usable(t, 1);
    if (rc != PK_OK)
        return rc;
    return txn_result(t, t->s->ops->del(t->s->impl, bucket, key, klen));
}

/* Fills r for "keys starting with prefix". The upper bound is the smallest
 * key greater than every key with the prefix: drop trailing 0xff bytes and
 * increment the last byte left; none (all 0xff or empty prefix) = no bound. */
static int range_init(pk_range_t *r, const uint8_t *prefix, size_t plen)
{
    if (plen > PK_STORE_KEY_MAX || (prefix == NULL && plen != 0))
        return PK_ERR_INVAL;
    memset(r, 0, sizeof(*r));
    r->lo = plen ? prefix : (const uint8_t *)"";
    r->lo_len = plen;
    size_t n = plen;
    while (n > 0 && prefix[n - 1] == 0xff)
        n--;
    if (n > 0) {
        memcpy(r->hi, prefix, n);
        r->hi[n - 1]++;
        r->hi_len = n;
        r->has_hi = 1;
    }
    return PK_OK;
}

/* store.c hands backends a callback that only ever returns 0 or 1, and keeps
 * the caller's own error, so a caller's error never fails the transaction. */
struct cb_wrap {
    pk_scan_fn scan;
    pk_log_fn log;
    void *ctx;
    int err;
};

static int scan_wrap(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    struct cb_wrap *w = ctx;
    int r = w->scan(w->ctx, k, kl, v, vl);
    if (r < 0)
        w->err = r;
    return r != 0;
}

static int log_wrap(void *ctx, uint64_t seqno, const uint8_t *v, size_t vl)
{
    struct cb_wrap *w = ctx;
    int r = w->log(w->ctx, seqno, v, vl);
    if (r < 0)
        w->err = r;
    return r != 0;
}

int pk_txn_scan(pk_txn_t *t, const char *bucket, const uint8_t *prefix, size_t plen,
                const uint8_t *after, size_t alen, size_t limit, pk_scan_fn cb, void *ctx)
{
    pk_range_t r;
    if (!name_ok(bucket) || cb == NULL || limit == 0 || limit > PK_STORE_SCAN_MAX)
        return PK_ERR_INVAL;
    if (after != NULL && !key_ok(after, alen))
        return PK_ERR_INVAL;
    if (range_init(&r, prefix, plen) != PK_OK)
        return PK_ERR_INVAL;
    r.after = after;
    r.after_len = after ? alen : 0;
    r.limit = limit;
    int rc = txn_usable(t, 0);
    if (rc != PK_OK)
        return rc;
    struct cb_wrap w = {.scan = cb, .ctx = ctx, .err = PK_OK};
    rc = txn_result(t, t->s->ops->scan(t->s->impl, bucket, &r, scan_wrap, &w));
    return rc != PK_OK ? rc : w.err;
}

int pk_txn_count(pk_txn_t *t, const char *bucket, const uint8_t *prefix, size_t plen, uint64_t *n)
{
    pk_range_t r;
    if (!name_ok(bucket) || n == NULL || range_init(&r, prefix, plen) != PK_OK)
        return PK_ERR_INVAL;
    int rc = txn_usable(t, 0);
    if (rc != PK_OK)
        return rc;
    *n = 0;
    return txn_result(t, t->s->ops->count(t->s->impl, bucket, &r, n));
}

/* ---- sequences and logs ---- */

static void iname(char out[PK_STORE_INAME_MAX], const char *pfx, const char *name)
{
    size_t pl = strlen(pfx), nl = strlen(name); /* both checked: pl + nl < INAME_MAX */
    memcpy(out, pfx, pl);
    memcpy(out + pl, name, nl + 1);
}

int pk_txn_next_id(pk_txn_t *t, const char *seq, uint64_t *out)
{
    char n[PK_STORE_INAME_MAX];
    if (!name_ok(seq) || out == NULL)
        return PK_ERR_INVAL;
    int rc = txn_usable(t, 1);
    if (rc != PK_OK)
        return rc;
    iname(n, "s:", seq);
    return txn_result(t, t->s->ops->counter_next(t->s->impl, n, out));
}

/* The cache entry of counter n in this transaction, or NULL. */
static logc_t *logc_find(pk_txn_t *t, const char *n)
{
    for (unsigned i = 0; i < t->nlogc; i++)
        if (strcmp(t->logc[i].name, n) == 0)
            return &t->logc[i];
    return NULL;
}

int pk_txn_append(pk_txn_t *t, const char *log, const uint8_t *val, size_t vlen, uint64_t *seqno)
{
    char n[PK_STORE_INAME_MAX];
    uint64_t no = 0;
    if (!name_ok(log) || !val_ok(val, vlen))
        return PK_ERR_INVAL;
    int rc = txn_usable(t, 1);
    if (rc != PK_OK)
        return rc;
    iname(n, "l:", log);
    logc_t *c = logc_find(t, n);
    if (c != NULL) {
        if (c->next >= INT64_MAX) /* the backends' ceiling (bigint) */
            return txn_result(t, PK_ERR_LIMIT);
        no = c->next + 1;
    } else {
        rc = txn_result(t, t->s->ops->counter_next(t->s->impl, n, &no));
        if (rc != PK_OK)
            return rc;
        if (t->nlogc < LOGC_MAX) {
            c = &t->logc[t->nlogc++];
            memcpy(c->name, n, strlen(n) + 1);
            c->next = c->written = no;
        }
    }
    rc = t->s->ops->log_put(t->s->impl, log, no, val, vlen);
    if (rc == PK_ERR_EXISTS)
        rc = PK_ERR_IO; /* the counter and the log disagree: corrupt store */
    rc = txn_result(t, rc);
    if (rc != PK_OK)
        return rc; /* the txn is failed: the cache is never used again */
    if (c != NULL)
        c->next = no;
    if (seqno != NULL)
        *seqno = no;
    return rc;
}

int pk_txn_log_scan(pk_txn_t *t, const char *log, uint64_t from, size_t limit, pk_log_fn cb,
                    void *ctx)
{
    if (!name_ok(log) || cb == NULL || limit == 0 || limit > PK_STORE_SCAN_MAX || from > INT64_MAX)
        return PK_ERR_INVAL;
    int rc = txn_usable(t, 0);
    if (rc != PK_OK)
        return rc;
    struct cb_wrap w = {.log = cb, .ctx = ctx, .err = PK_OK};
    rc = txn_result(t, t->s->ops->log_scan(t->s->impl, log, from, limit, log_wrap, &w));
    return rc != PK_OK ? rc : w.err;
}

/* ---- migrations ---- */

struct migrate_ctx {
    const char *component;
    const pk_migration_t *steps;
    size_t n;
};

static int migrate_txn(pk_txn_t *t, void *ctx)
{
    const struct migrate_ctx *m = ctx;
    char name[PK_STORE_INAME_MAX];
    uint64_t v = 0;
    iname(name, "app:", m->component);
    int rc = txn_result(t, t->s->ops->meta_get(t->s->impl, name, &v, 1));
    if (rc != PK_OK)
        return rc;
    if (v > m->n)
        return PK_ERR_VERSION;
    for (size_t i = (size_t)v; i < m->n; i++) {
        rc = m->steps[i].up(t);
        if (rc != PK_OK)
            return rc;
        if (t->state != TXN_OPEN)
            return t->state == TXN_FAILED ? t->err : PK_ERR_STATE; /* the step ended it */
    }
    if (v == m->n)
        return PK_OK;
    return txn_result(t, t->s->ops->meta_set(t->s->impl, name, (uint64_t)m->n));
}

int pk_store_migrate(pk_store_t *s, const char *component, const pk_migration_t *steps, size_t n)
{
    if (s == NULL || !name_ok(component) || (steps == NULL && n != 0) || n > UINT32_MAX)
        return PK_ERR_INVAL;
    for (size_t i = 0; i < n; i++)
        if (steps[i].to != i + 1 || steps[i].up == NULL)
            return PK_ERR_INVAL;
    struct migrate_ctx m = {.component = component, .steps = steps, .n = n};
    return pk_store_run(s, migrate_txn, &m, 50);
}

struct version_ctx {
    const char *component;
    uint64_t v;
};

static int version_txn(pk_txn_t *t, void *ctx)
{
    struct version_ctx *c = ctx;
    char name[PK_STORE_INAME_MAX];
    iname(name, "app:", c->component);
    return txn_result(t, t->s->ops->meta_get(t->s->impl, name, &c->v, 0));
}

int pk_store_version(pk_store_t *s, const char *component, uint32_t *version)
{
    struct version_ctx c = {.component = component, .v = 0};
    if (s == NULL || !name_ok(component) || version == NULL)
        return PK_ERR_INVAL;
    int rc = pk_store_run_read(s, version_txn, &c, 50);
    if (rc == PK_OK && c.v > UINT32_MAX)
        rc = PK_ERR_VERSION;
    if (rc == PK_OK)
        *version = (uint32_t)c.v;
    return rc;
}
