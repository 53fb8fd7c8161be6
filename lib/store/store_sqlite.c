/*
 * The SQLite backend: one database file in WAL mode.
 *
 * Concurrency: read-write transactions start with BEGIN IMMEDIATE, which
 * takes SQLite's single write lock up front (waiting up to busy_timeout,
 * then PK_ERR_BUSY). Writers therefore run one at a time, across threads and
 * processes, and a transaction never fails half-way with SQLITE_BUSY on its
 * first write (the upgrade deadlock of deferred transactions). Read-only
 * transactions use a deferred BEGIN: a WAL snapshot that neither blocks nor
 * is blocked by the writer.
 *
 * Every statement is prepared once per handle (SQLITE_PREPARE_PERSISTENT)
 * and reset after each use.
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"

#define PHYS_VERSION 1

enum stmt_id {
    S_BEGIN_W,
    S_BEGIN_R,
    S_COMMIT,
    S_ROLLBACK,
    S_GET,
    S_PUT,
    S_INSERT,
    S_DEL,
    S_SCAN,
    S_SCAN_HI,
    S_COUNT,
    S_COUNT_HI,
    S_COUNTER,
    S_COUNTER_SET,
    S_LOG_PUT,
    S_LOG_SCAN,
    S_META_GET,
    S_META_SET,
    S_N
};

static const char *const stmt_sql[S_N] = {
    [S_BEGIN_W] = "BEGIN IMMEDIATE",
    [S_BEGIN_R] = "BEGIN DEFERRED",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_GET] = "SELECT v FROM pk_kv WHERE b = ?1 AND k = ?2",
    [S_PUT] = "INSERT INTO pk_kv(b, k, v) VALUES(?1, ?2, ?3) "
              "ON CONFLICT(b, k) DO UPDATE SET v = excluded.v",
    [S_INSERT] = "INSERT INTO pk_kv(b, k, v) VALUES(?1, ?2, ?3) ON CONFLICT(b, k) DO NOTHING",
    [S_DEL] = "DELETE FROM pk_kv WHERE b = ?1 AND k = ?2",
    [S_SCAN] = "SELECT k, v FROM pk_kv WHERE b = ?1 AND k >= ?2 AND k > ?3 ORDER BY k LIMIT ?5",
    [S_SCAN_HI] = "SELECT k, v FROM pk_kv WHERE b = ?1 AND k >= ?2 AND k > ?3 AND k < ?4 "
                  "ORDER BY k LIMIT ?5",
    [S_COUNT] = "SELECT count(*) FROM pk_kv WHERE b = ?1 AND k >= ?2",
    [S_COUNT_HI] = "SELECT count(*) FROM pk_kv WHERE b = ?1 AND k >= ?2 AND k < ?4",
    [S_COUNTER] = "INSERT INTO pk_seq(name, v) VALUES(?1, 1) "
                  "ON CONFLICT(name) DO UPDATE SET v = v + 1 RETURNING v",
    [S_COUNTER_SET] = "UPDATE pk_seq SET v = ?2 WHERE name = ?1",
    [S_LOG_PUT] = "INSERT INTO pk_log(name, n, v) VALUES(?1, ?2, ?3)",
    [S_LOG_SCAN] = "SELECT n, v FROM pk_log WHERE name = ?1 AND n >= ?2 ORDER BY n LIMIT ?3",
    [S_META_GET] = "SELECT v FROM pk_meta WHERE name = ?1",
    [S_META_SET] = "INSERT INTO pk_meta(name, v) VALUES(?1, ?2) "
                   "ON CONFLICT(name) DO UPDATE SET v = excluded.v",
};

/* The physical schema, version PHYS_VERSION. Keys and values are BLOBs,
 * which SQLite orders by memcmp then length: the order store.h promises. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS pk_meta(name TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS pk_kv(b TEXT NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL,"
    " PRIMARY KEY(b, k)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS pk_seq(name TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS pk_log(name TEXT NOT NULL, n INTEGER NOT NULL, v BLOB NOT NULL,"
    " PRIMARY KEY(name, n)) WITHOUT ROWID;";

typedef struct lite {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
} lite_t;

static int map_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return PK_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return PK_ERR_BUSY;
    case SQLITE_NOMEM: return PK_ERR_NOMEM;
    case SQLITE_CONSTRAINT: return PK_ERR_EXISTS;
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
    case SQLITE_MISUSE: return PK_ERR_INVAL;
    default: return PK_ERR_IO;
    }
}

/* The statement id, reset and with its bindings cleared. */
static sqlite3_stmt *stmt(lite_t *l, int id)
{
    sqlite3_stmt *s = l->st[id];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Steps a statement expected to return no row (or only to be done with). */
static int exec_stmt(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? PK_OK : map_err(rc);
}

static int bind_text(sqlite3_stmt *s, int i, const char *t)
{
    return sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC) == SQLITE_OK ? PK_OK : PK_ERR_NOMEM;
}

static int bind_blob(sqlite3_stmt *s, int i, const uint8_t *p, size_t n)
{
    /* zeroblob-safe: a NULL pointer would bind SQL NULL, so bind "" for n = 0 */
    return sqlite3_bind_blob(s, i, n ? (const void *)p : "", (int)n, SQLITE_STATIC) == SQLITE_OK
               ? PK_OK
               : PK_ERR_NOMEM;
}

static void lite_close(void *impl)
{
    lite_t *l = impl;
    if (l == NULL)
        return;
    for (int i = 0; i < S_N; i++)
        sqlite3_finalize(l->st[i]);
    sqlite3_close_v2(l->db);
    free(l);
}

/* Runs one pragma or DDL text; PK_OK or the mapped error. */
static int exec_sql(sqlite3 *db, const char *sql)
{
    return map_err(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

static int check_wal(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    int rc = map_err(sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &s, NULL));
    if (rc == PK_OK) {
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            const unsigned char *mode = sqlite3_column_text(s, 0);
            rc = mode && strcmp((const char *)mode, "wal") == 0 ? PK_OK : PK_ERR_IO;
        } else {
            rc = map_err(r);
            if (rc == PK_OK)
                rc = PK_ERR_IO;
        }
    }
    sqlite3_finalize(s);
    return rc;
}

/* Creates the tables, or checks the physical version of existing ones. */
static int setup_schema(lite_t *l)
{
    int rc = exec_sql(l->db, "BEGIN IMMEDIATE");
    if (rc != PK_OK)
        return rc;
    rc = exec_sql(l->db, schema_sql);
    sqlite3_stmt *s = NULL;
    if (rc == PK_OK)
        rc = map_err(
            sqlite3_prepare_v2(l->db, "SELECT v FROM pk_meta WHERE name = ?1", -1, &s, NULL));
    if (rc == PK_OK)
        rc = bind_text(s, 1, PK_STORE_META_PHYS);
    if (rc == PK_OK) {
        int r = sqlite3_step(s);
        if (r == SQLITE_ROW) {
            if (sqlite3_column_int64(s, 0) > PHYS_VERSION)
                rc = PK_ERR_VERSION;
            /* older physical versions would be upgraded here */
        } else if (r == SQLITE_DONE) {
            rc =
                exec_sql(l->db, "INSERT INTO pk_meta(name, v) VALUES('" PK_STORE_META_PHYS "', 1)");
        } else {
            rc = map_err(r);
        }
    }
    sqlite3_finalize(s);
    if (rc == PK_OK)
        rc = exec_sql(l->db, "COMMIT");
    if (rc != PK_OK && !sqlite3_get_autocommit(l->db))
        exec_sql(l->db, "ROLLBACK");
    return rc;
}

static int lite_open(const char *path, const pk_store_opts_t *o, void **impl)
{
    int rc;
    lite_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return PK_ERR_NOMEM;
    int r = sqlite3_open_v2(path, &l->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (r != SQLITE_OK) {
        rc = r == SQLITE_NOMEM ? PK_ERR_NOMEM : PK_ERR_IO;
        goto fail;
    }
    sqlite3_extended_result_codes(l->db, 1);
    sqlite3_busy_timeout(l->db, o->busy_timeout_ms);
    /* journal_mode=WAL is persistent in the file; switching needs a moment
     * without other connections, which busy_timeout waits for. */
    if ((rc = check_wal(l->db)) != PK_OK)
        goto fail;
    rc = exec_sql(l->db, o->sync == PK_STORE_SYNC_NORMAL ? "PRAGMA synchronous=NORMAL"
                                                         : "PRAGMA synchronous=FULL");
    if (rc != PK_OK)
        goto fail;
    if ((rc = setup_schema(l)) != PK_OK)
        goto fail;
    for (int i = 0; i < S_N; i++) {
        r = sqlite3_prepare_v3(l->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &l->st[i], NULL);
        if (r != SQLITE_OK) {
            rc = map_err(r);
            if (rc == PK_OK || rc == PK_ERR_INVAL || rc == PK_ERR_EXISTS)
                rc = PK_ERR_IO;
            goto fail;
        }
    }
    *impl = l;
    return PK_OK;
fail:
    lite_close(l);
    return rc;
}

static void lite_abort(void *impl)
{
    lite_t *l = impl;
    /* An I/O or memory error may already have rolled SQLite back. */
    if (!sqlite3_get_autocommit(l->db))
        exec_stmt(stmt(l, S_ROLLBACK));
}

static int lite_begin(void *impl, int rdonly)
{
    lite_t *l = impl;
    return exec_stmt(stmt(l, rdonly ? S_BEGIN_R : S_BEGIN_W));
}

static int lite_commit(void *impl)
{
    lite_t *l = impl;
    int rc = exec_stmt(stmt(l, S_COMMIT));
    if (rc != PK_OK) {
        if (rc == PK_ERR_EXISTS || rc == PK_ERR_INVAL)
            rc = PK_ERR_IO;
        lite_abort(l);
    }
    return rc;
}

static int lite_get(void *impl, const char *b, const uint8_t *k, size_t kl, uint8_t *v, size_t cap,
                    size_t *vl)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, S_GET);
    int rc = bind_text(s, 1, b);
    if (rc == PK_OK)
        rc = bind_blob(s, 2, k, kl);
    if (rc != PK_OK)
        return rc;
    int r = sqlite3_step(s);
    if (r == SQLITE_DONE) {
        rc = PK_ERR_NOTFOUND;
    } else if (r == SQLITE_ROW) {
        const void *p = sqlite3_column_blob(s, 0);
        size_t n = (size_t)sqlite3_column_bytes(s, 0);
        *vl = n;
        if (p == NULL && n != 0)
            rc = PK_ERR_NOMEM;
        else if (cap < n)
            rc = PK_ERR_SPACE;
        else if (n)
            memcpy(v, p, n);
    } else {
        rc = map_err(r);
    }
    sqlite3_reset(s);
    return rc;
}

static int lite_put(void *impl, const char *b, const uint8_t *k, size_t kl, const uint8_t *v,
                    size_t vl, int insert_only)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, insert_only ? S_INSERT : S_PUT);
    int rc = bind_text(s, 1, b);
    if (rc == PK_OK)
        rc = bind_blob(s, 2, k, kl);
    if (rc == PK_OK)
        rc = bind_blob(s, 3, v, vl);
    if (rc == PK_OK)
        rc = exec_stmt(s);
    if (rc == PK_OK && insert_only && sqlite3_changes(l->db) == 0)
        rc = PK_ERR_EXISTS;
    return rc;
}

static int lite_del(void *impl, const char *b, const uint8_t *k, size_t kl)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, S_DEL);
    int rc = bind_text(s, 1, b);
    if (rc == PK_OK)
        rc = bind_blob(s, 2, k, kl);
    if (rc == PK_OK)
        rc = exec_stmt(s);
    if (rc == PK_OK && sqlite3_changes(l->db) == 0)
        rc = PK_ERR_NOTFOUND;
    return rc;
}

static int bind_range(sqlite3_stmt *s, const char *b, const pk_range_t *r, int with_after)
{
    int rc = bind_text(s, 1, b);
    if (rc == PK_OK)
        rc = bind_blob(s, 2, r->lo, r->lo_len);
    if (rc == PK_OK && with_after) /* keys are never empty, so k > x'' always holds */
        rc = bind_blob(s, 3, r->after, r->after_len);
    if (rc == PK_OK && r->has_hi)
        rc = bind_blob(s, 4, r->hi, r->hi_len);
    if (rc == PK_OK && with_after)
        rc = sqlite3_bind_int64(s, 5, (sqlite3_int64)r->limit) == SQLITE_OK ? PK_OK : PK_ERR_NOMEM;
    return rc;
}

static int lite_scan(void *impl, const char *b, const pk_range_t *r, pk_scan_fn cb, void *ctx)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, r->has_hi ? S_SCAN_HI : S_SCAN);
    int rc = bind_range(s, b, r, 1);
    if (rc != PK_OK)
        return rc;
    for (size_t i = 0; i < r->limit; i++) {
        int st = sqlite3_step(s);
        if (st == SQLITE_DONE)
            break;
        if (st != SQLITE_ROW) {
            rc = map_err(st);
            break;
        }
        const uint8_t *k = sqlite3_column_blob(s, 0);
        size_t kl = (size_t)sqlite3_column_bytes(s, 0);
        const uint8_t *v = sqlite3_column_blob(s, 1);
        size_t vl = (size_t)sqlite3_column_bytes(s, 1);
        if (k == NULL || (v == NULL && vl != 0)) {
            rc = PK_ERR_NOMEM;
            break;
        }
        if (cb(ctx, k, kl, vl ? v : (const uint8_t *)"", vl))
            break;
    }
    sqlite3_reset(s);
    return rc;
}

static int lite_count(void *impl, const char *b, const pk_range_t *r, uint64_t *n)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, r->has_hi ? S_COUNT_HI : S_COUNT);
    int rc = bind_range(s, b, r, 0);
    if (rc != PK_OK)
        return rc;
    int st = sqlite3_step(s);
    if (st == SQLITE_ROW)
        *n = (uint64_t)sqlite3_column_int64(s, 0);
    else
        rc = st == SQLITE_DONE ? PK_ERR_IO : map_err(st);
    sqlite3_reset(s);
    return rc;
}

/* Steps a statement returning one integer in column 0 into *out. */
static int step_int(sqlite3_stmt *s, uint64_t *out, int absent_rc)
{
    int rc = PK_OK;
    int st = sqlite3_step(s);
    if (st == SQLITE_ROW) {
        sqlite3_int64 v = sqlite3_column_int64(s, 0);
        if (v < 0)
            rc = PK_ERR_IO;
        else
            *out = (uint64_t)v;
    } else {
        rc = st == SQLITE_DONE ? absent_rc : map_err(st);
    }
    sqlite3_reset(s);
    return rc;
}

static int lite_counter_next(void *impl, const char *name, uint64_t *out)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, S_COUNTER);
    int rc = bind_text(s, 1, name);
    if (rc == PK_OK)
        rc = step_int(s, out, PK_ERR_IO);
    if (rc == PK_ERR_EXISTS)
        rc = PK_ERR_IO;
    return rc;
}

static int lite_counter_set(void *impl, const char *name, uint64_t v)
{
    lite_t *l = impl;
    if (v > INT64_MAX)
        return PK_ERR_LIMIT;
    sqlite3_stmt *s = stmt(l, S_COUNTER_SET);
    int rc = bind_text(s, 1, name);
    if (rc == PK_OK && sqlite3_bind_int64(s, 2, (sqlite3_int64)v) != SQLITE_OK)
        rc = PK_ERR_NOMEM;
    if (rc == PK_OK)
        rc = exec_stmt(s);
    if (rc == PK_ERR_EXISTS)
        rc = PK_ERR_IO;
    if (rc == PK_OK && sqlite3_changes(l->db) != 1)
        rc = PK_ERR_NOTFOUND;
    return rc;
}

static int lite_log_put(void *impl, const char *log, uint64_t seqno, const uint8_t *v, size_t vl)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, S_LOG_PUT);
    int rc = bind_text(s, 1, log);
    if (rc == PK_OK && sqlite3_bind_int64(s, 2, (sqlite3_int64)seqno) != SQLITE_OK)
        rc = PK_ERR_NOMEM;
    if (rc == PK_OK)
        rc = bind_blob(s, 3, v, vl);
    if (rc == PK_OK)
        rc = exec_stmt(s);
    return rc;
}

static int lite_log_scan(void *impl, const char *log, uint64_t from, size_t limit, pk_log_fn cb,
                         void *ctx)
{
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, S_LOG_SCAN);
    int rc = bind_text(s, 1, log);
    if (rc == PK_OK && (sqlite3_bind_int64(s, 2, (sqlite3_int64)from) != SQLITE_OK ||
                        sqlite3_bind_int64(s, 3, (sqlite3_int64)limit) != SQLITE_OK))
        rc = PK_ERR_NOMEM;
    if (rc != PK_OK)
        return rc;
    for (size_t i = 0; i < limit; i++) {
        int st = sqlite3_step(s);
        if (st == SQLITE_DONE)
            break;
        if (st != SQLITE_ROW) {
            rc = map_err(st);
            break;
        }
        sqlite3_int64 n = sqlite3_column_int64(s, 0);
        const uint8_t *v = sqlite3_column_blob(s, 1);
        size_t vl = (size_t)sqlite3_column_bytes(s, 1);
        if (v == NULL && vl != 0) {
            rc = PK_ERR_NOMEM;
            break;
        }
        if (cb(ctx, (uint64_t)n, vl ? v : (const uint8_t *)"", vl))
            break;
    }
    sqlite3_reset(s);
    return rc;
}

static int lite_meta_get(void *impl, const char *name, uint64_t *v, int lock)
{
    (void)lock; /* writers are serialised by BEGIN IMMEDIATE */
    lite_t *l = impl;
    sqlite3_stmt *s = stmt(l, S_META_GET);
    int rc = bind_text(s, 1, name);
    *v = 0;
    if (rc == PK_OK)
        rc = step_int(s, v, PK_OK);
    return rc;
}

static int lite_meta_set(void *impl, const char *name, uint64_t v)
{
    lite_t *l = impl;
    if (v > INT64_MAX)
        return PK_ERR_INVAL;
    sqlite3_stmt *s = stmt(l, S_META_SET);
    int rc = bind_text(s, 1, name);
    if (rc == PK_OK && sqlite3_bind_int64(s, 2, (sqlite3_int64)v) != SQLITE_OK)
        rc = PK_ERR_NOMEM;
    if (rc == PK_OK)
        rc = exec_stmt(s);
    return rc;
}

const pk_store_ops_t pk_store_sqlite_ops = {
    .name = "sqlite",
    .open = lite_open,
    .close = lite_close,
    .begin = lite_begin,
    .commit = lite_commit,
    .abort = lite_abort,
    .get = lite_get,
    .put = lite_put,
    .del = lite_del,
    .scan = lite_scan,
    .count = lite_count,
    .counter_next = lite_counter_next,
    .counter_set = lite_counter_set,
    .log_put = lite_log_put,
    .log_scan = lite_log_scan,
    .meta_get = lite_meta_get,
    .meta_set = lite_meta_set,
};
