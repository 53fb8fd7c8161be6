/*
 * The PostgreSQL backend (libpq): several kms/node/gts instances over one
 * shared database.
 *
 * Isolation. Read-write transactions run at SERIALIZABLE; read-only ones at
 * REPEATABLE READ, READ ONLY. Why not READ COMMITTED or REPEATABLE READ for
 * writers:
 *  - callers write read-modify-write code against store.h (get a record,
 *    decide, put it back; count a bucket, then insert) and test it on the
 *    memory and SQLite backends, which run writers strictly one at a time;
 *  - READ COMMITTED would let two instances read the same record and both
 *    write back (lost update), and let a check-then-insert race;
 *  - REPEATABLE READ stops lost updates on one row (first updater wins,
 *    40001) but still allows write skew across rows (two instances each
 *    count "fewer than N" and each insert a different key);
 *  - SERIALIZABLE (PostgreSQL's SSI) guarantees the outcome of some serial
 *    order, i.e. exactly what the other two backends do. Its price is more
 *    40001 failures under contention, which store.h surfaces as PK_ERR_BUSY
 *    and pk_store_run() retries; its predicate locks cost a little memory.
 * Readers do not need SSI to be correct about what they return: a
 * REPEATABLE READ READ ONLY snapshot is consistent, never blocks and is never
 * cancelled. (Its only anomaly is the read-only one: seeing a state that
 * matches no serial order of concurrent writers; readers do not write, so it
 * cannot corrupt data.)
 *
 * Sequences: pk_txn_next_id is one UPSERT ... RETURNING on the pk_seq row,
 * inside the caller's transaction. The row lock serialises concurrent
 * allocators; under SERIALIZABLE the second one fails with 40001 when the
 * first commits and retries with the new value, so an identifier is never
 * handed out twice, and an aborted allocation leaves no gap. Log counters
 * work the same way, except that store.c advances one only at a
 * transaction's first append to that log (the upsert takes the row lock then)
 * and sets its final value with one UPDATE before COMMIT (counter_set).
 *
 * Wire: every statement is prepared once per connection (again after a
 * reconnect); keys, values and integers travel as binary parameters and
 * binary results (bytea raw, int8 big-endian), so no escaping anywhere.
 * Keys compare as bytea, bytewise like memcmp; names are text COLLATE "C".
 */
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"

#define PHYS_VERSION 1
#define OID_BYTEA    17
#define OID_INT8     20
#define OID_TEXT     25

/* Serialises schema creation among instances starting at once ("pkst"). */
#define SCHEMA_LOCK "1886090100"

enum stmt_id {
    Q_GET,
    Q_PUT,
    Q_INSERT,
    Q_DEL,
    Q_SCAN,
    Q_SCAN_HI,
    Q_COUNT,
    Q_COUNT_HI,
    Q_COUNTER,
    Q_COUNTER_SET,
    Q_LOG_PUT,
    Q_LOG_SCAN,
    Q_META_GET,
    Q_META_LOCK,
    Q_META_SET,
    Q_N
};

static const struct {
    const char *name;
    const char *sql;
    int n;
    Oid types[5];
} stmts[Q_N] = {
    [Q_GET] = {"pk_get", "SELECT v FROM pk_kv WHERE b = $1 AND k = $2", 2, {OID_TEXT, OID_BYTEA}},
    [Q_PUT] = {"pk_put",
               "INSERT INTO pk_kv(b, k, v) VALUES($1, $2, $3) "
               "ON CONFLICT (b, k) DO UPDATE SET v = EXCLUDED.v",
               3,
               {OID_TEXT, OID_BYTEA, OID_BYTEA}},
    [Q_INSERT] = {"pk_insert",
                  "INSERT INTO pk_kv(b, k, v) VALUES($1, $2, $3) ON CONFLICT (b, k) DO NOTHING",
                  3,
                  {OID_TEXT, OID_BYTEA, OID_BYTEA}},
    [Q_DEL] = {"pk_del", "DELETE FROM pk_kv WHERE b = $1 AND k = $2", 2, {OID_TEXT, OID_BYTEA}},
    [Q_SCAN] = {"pk_scan",
                "SELECT k, v FROM pk_kv WHERE b = $1 AND k >= $2 AND k > $3 ORDER BY k LIMIT $4",
                4,
                {OID_TEXT, OID_BYTEA, OID_BYTEA, OID_INT8}},
    [Q_SCAN_HI] = {"pk_scan_hi",
                   "SELECT k, v FROM pk_kv WHERE b = $1 AND k >= $2 AND k > $3 AND k < $5 "
                   "ORDER BY k LIMIT $4",
                   5,
                   {OID_TEXT, OID_BYTEA, OID_BYTEA, OID_INT8, OID_BYTEA}},
    [Q_COUNT] = {"pk_count",
                 "SELECT count(*) FROM pk_kv WHERE b = $1 AND k >= $2",
                 2,
                 {OID_TEXT, OID_BYTEA}},
    [Q_COUNT_HI] = {"pk_count_hi",
                    "SELECT count(*) FROM pk_kv WHERE b = $1 AND k >= $2 AND k < $3",
                    3,
                    {OID_TEXT, OID_BYTEA, OID_BYTEA}},
    [Q_COUNTER] = {"pk_counter",
                   "INSERT INTO pk_seq(name, v) VALUES($1, 1) "
                   "ON CONFLICT (name) DO UPDATE SET v = pk_seq.v + 1 RETURNING v",
                   1,
                   {OID_TEXT}},
    [Q_COUNTER_SET] = {"pk_counter_set",
                       "UPDATE pk_seq SET v = $2 WHERE name = $1",
                       2,
                       {OID_TEXT, OID_INT8}},
    [Q_LOG_PUT] = {"pk_log_put",
                   "INSERT INTO pk_log(name, n, v) VALUES($1, $2, $3)",
                   3,
                   {OID_TEXT, OID_INT8, OID_BYTEA}},
    [Q_LOG_SCAN] = {"pk_log_scan",
                    "SELECT n, v FROM pk_log WHERE name = $1 AND n >= $2 ORDER BY n LIMIT $3",
                    3,
                    {OID_TEXT, OID_INT8, OID_INT8}},
    [Q_META_GET] = {"pk_meta_get", "SELECT v FROM pk_meta WHERE name = $1", 1, {OID_TEXT}},
    /* Migrators of one component queue on an advisory lock, then read. */
    [Q_META_LOCK] = {"pk_meta_lock",
                     "SELECT m.v FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l "
                     "LEFT JOIN pk_meta AS m ON m.name = $1",
                     1,
                     {OID_TEXT}},
    [Q_META_SET] = {"pk_meta_set",
                    "INSERT INTO pk_meta(name, v) VALUES($1, $2) "
                    "ON CONFLICT (name) DO UPDATE SET v = EXCLUDED.v",
                    2,
                    {OID_TEXT, OID_INT8}},
};

static const char schema_sql[] =
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK ");"
    "CREATE TABLE IF NOT EXISTS pk_meta(name text COLLATE \"C\" PRIMARY KEY, v bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pk_kv(b text COLLATE \"C\" NOT NULL, k bytea NOT NULL,"
    " v bytea NOT NULL, PRIMARY KEY (b, k));"
    "CREATE TABLE IF NOT EXISTS pk_seq(name text COLLATE \"C\" PRIMARY KEY, v bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS pk_log(name text COLLATE \"C\" NOT NULL, n bigint NOT NULL,"
    " v bytea NOT NULL, PRIMARY KEY (name, n));"
    "INSERT INTO pk_meta(name, v) VALUES('" PK_STORE_META_PHYS "', 1) ON CONFLICT DO NOTHING;";

typedef struct pg {
    PGconn *conn;
} pg_t;

static void be64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

/* A binary int8 field as uint64; PK_ERR_IO when malformed or negative. */
static int rd_int8(const PGresult *r, int row, int col, uint64_t *out)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
        return PK_ERR_IO;
    const uint8_t *p = (const uint8_t *)PQgetvalue(r, row, col);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    if (v > INT64_MAX)
        return PK_ERR_IO;
    *out = v;
    return PK_OK;
}

/* Maps a failed result (or none: the connection broke) to a PK_ERR_* code. */
static int map_err(const PGresult *r)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (st == NULL)
        return PK_ERR_IO;
    if (strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 || strcmp(st, "55P03") == 0)
        return PK_ERR_BUSY; /* serialization failure, deadlock, lock not available */
    if (strcmp(st, "23505") == 0)
        return PK_ERR_EXISTS;
    if (strcmp(st, "53200") == 0)
        return PK_ERR_NOMEM;
    if (strcmp(st, "57014") == 0)
        return PK_ERR_TIMEOUT; /* statement_timeout */
    return PK_ERR_IO;
}

/* Checks a result; clears it on error. */
static int result_ok(PGresult *r)
{
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
        return PK_OK;
    int rc = map_err(r);
    PQclear(r);
    return rc;
}

static int exec_simple(pg_t *p, const char *sql)
{
    PGresult *r = PQexec(p->conn, sql);
    int rc = result_ok(r);
    if (rc == PK_OK)
        PQclear(r);
    return rc;
}

/* Parameters of one call: up to 5, each bytes + length + binary flag. */
typedef struct params {
    const char *val[5];
    int len[5];
    int fmt[5];
    uint8_t ints[5][8];
    int n;
} params_t;

static void p_text(params_t *pa, const char *t)
{
    pa->val[pa->n] = t;
    pa->len[pa->n] = 0;
    pa->fmt[pa->n] = 0; /* text format: NUL-terminated */
    pa->n++;
}

static void p_bytes(params_t *pa, const uint8_t *b, size_t n)
{
    pa->val[pa->n] = n ? (const char *)b : ""; /* NULL would mean SQL NULL */
    pa->len[pa->n] = (int)n;
    pa->fmt[pa->n] = 1;
    pa->n++;
}

static void p_int8(params_t *pa, uint64_t v)
{
    be64(pa->ints[pa->n], v);
    p_bytes(pa, pa->ints[pa->n], 8);
}

/* Runs prepared statement id; on PK_OK *res holds the result (PQclear it). */
static int run(pg_t *p, int id, const params_t *pa, PGresult **res)
{
    PGresult *r =
        PQexecPrepared(p->conn, stmts[id].name, pa->n, pa->val, pa->len, pa->fmt, 1 /* binary */);
    int rc = result_ok(r);
    *res = rc == PK_OK ? r : NULL;
    return rc;
}

static int prepare_all(pg_t *p)
{
    for (int i = 0; i < Q_N; i++) {
        PGresult *r = PQprepare(p->conn, stmts[i].name, stmts[i].sql, stmts[i].n, stmts[i].types);
        int rc = result_ok(r);
        if (rc != PK_OK)
            return rc == PK_ERR_BUSY ? rc : PK_ERR_IO;
        PQclear(r);
    }
    return PK_OK;
}

static void notice_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg; /* "relation already exists, skipping" and the like */
}

static int setup_schema(pg_t *p)
{
    int rc = exec_simple(p, schema_sql);
    PGresult *r = NULL;
    if (rc == PK_OK) {
        r = PQexec(p->conn, "SELECT v FROM pk_meta WHERE name = '" PK_STORE_META_PHYS "'");
        rc = result_ok(r);
    }
    if (rc == PK_OK) {
        if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
            rc = PK_ERR_IO;
        else if (strtoll(PQgetvalue(r, 0, 0), NULL, 10) > PHYS_VERSION)
            rc = PK_ERR_VERSION;
        /* older physical versions would be upgraded here, under the lock */
        PQclear(r);
    }
    if (rc == PK_OK)
        rc = exec_simple(p, "COMMIT");
    if (rc != PK_OK && PQtransactionStatus(p->conn) != PQTRANS_IDLE)
        exec_simple(p, "ROLLBACK");
    return rc;
}

static void pg_close(void *impl)
{
    pg_t *p = impl;
    if (p == NULL)
        return;
    PQfinish(p->conn);
    free(p);
}

static int pg_open(const char *uri, const pk_store_opts_t *o, void **impl)
{
    (void)o;
    int rc;
    pg_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return PK_ERR_NOMEM;
    p->conn = PQconnectdb(uri);
    if (p->conn == NULL) {
        rc = PK_ERR_NOMEM;
        goto fail;
    }
    if (PQstatus(p->conn) != CONNECTION_OK) {
        rc = PK_ERR_IO;
        goto fail;
    }
    PQsetNoticeProcessor(p->conn, notice_quiet, NULL);
    if ((rc = setup_schema(p)) != PK_OK)
        goto fail;
    if ((rc = prepare_all(p)) != PK_OK)
        goto fail;
    *impl = p;
    return PK_OK;
fail:
    pg_close(p);
    return rc;
}

static int pg_begin(void *impl, int rdonly)
{
    pg_t *p = impl;
    if (PQstatus(p->conn) != CONNECTION_OK) {
        /* The server went away since the last transaction: reconnect once
         * and prepare the statements again (they belong to the session). */
        PQreset(p->conn);
        if (PQstatus(p->conn) != CONNECTION_OK)
            return PK_ERR_IO;
        PQsetNoticeProcessor(p->conn, notice_quiet, NULL);
        int rc = prepare_all(p);
        if (rc != PK_OK)
            return rc;
    }
    if (PQtransactionStatus(p->conn) != PQTRANS_IDLE)
        exec_simple(p, "ROLLBACK");
    return exec_simple(p, rdonly ? "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                                 : "BEGIN ISOLATION LEVEL SERIALIZABLE");
}

static void pg_abort(void *impl)
{
    pg_t *p = impl;
    if (PQstatus(p->conn) == CONNECTION_OK && PQtransactionStatus(p->conn) != PQTRANS_IDLE)
        exec_simple(p, "ROLLBACK");
}

static int pg_commit(void *impl)
{
    pg_t *p = impl;
    PGresult *r = PQexec(p->conn, "COMMIT");
    int rc = result_ok(r);
    if (rc == PK_OK) {
        /* COMMIT of a transaction the server had already failed answers
         * "ROLLBACK" with success status: that is no commit. */
        if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
            rc = PK_ERR_IO;
        PQclear(r);
    }
    if (rc == PK_ERR_EXISTS)
        rc = PK_ERR_IO; /* deferred constraints: none exist, but never "an answer" here */
    if (rc != PK_OK)
        pg_abort(p);
    return rc;
}

static int pg_get(void *impl, const char *b, const uint8_t *k, size_t kl, uint8_t *v, size_t cap,
                  size_t *vl)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, b);
    p_bytes(&pa, k, kl);
    int rc = run(impl, Q_GET, &pa, &r);
    if (rc != PK_OK)
        return rc;
    if (PQntuples(r) == 0) {
        rc = PK_ERR_NOTFOUND;
    } else {
        size_t n = (size_t)PQgetlength(r, 0, 0);
        *vl = n;
        if (cap < n)
            rc = PK_ERR_SPACE;
        else if (n)
            memcpy(v, PQgetvalue(r, 0, 0), n);
    }
    PQclear(r);
    return rc;
}

/* Number of rows a command touched. */
static long affected(PGresult *r)
{
    const char *t = PQcmdTuples(r);
    return t && *t ? strtol(t, NULL, 10) : 0;
}

static int pg_put(void *impl, const char *b, const uint8_t *k, size_t kl, const uint8_t *v,
                  size_t vl, int insert_only)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, b);
    p_bytes(&pa, k, kl);
    p_bytes(&pa, v, vl);
    int rc = run(impl, insert_only ? Q_INSERT : Q_PUT, &pa, &r);
    if (rc == PK_ERR_EXISTS)
        rc = PK_ERR_IO; /* ON CONFLICT handles (b, k): any other violation is not an answer */
    if (rc != PK_OK)
        return rc;
    if (insert_only && affected(r) == 0)
        rc = PK_ERR_EXISTS;
    PQclear(r);
    return rc;
}

static int pg_del(void *impl, const char *b, const uint8_t *k, size_t kl)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, b);
    p_bytes(&pa, k, kl);
    int rc = run(impl, Q_DEL, &pa, &r);
    if (rc != PK_OK)
        return rc;
    if (affected(r) == 0)
        rc = PK_ERR_NOTFOUND;
    PQclear(r);
    return rc;
}

static int pg_scan(void *impl, const char *b, const pk_range_t *rg, pk_scan_fn cb, void *ctx)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, b);
    p_bytes(&pa, rg->lo, rg->lo_len);
    p_bytes(&pa, rg->after, rg->after_len); /* keys are never empty: k > '' always */
    p_int8(&pa, rg->limit);
    if (rg->has_hi)
        p_bytes(&pa, rg->hi, rg->hi_len);
    int rc = run(impl, rg->has_hi ? Q_SCAN_HI : Q_SCAN, &pa, &r);
    if (rc != PK_OK)
        return rc;
    int n = PQntuples(r);
    for (int i = 0; i < n && (size_t)i < rg->limit; i++) {
        if (cb(ctx, (const uint8_t *)PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0),
               (const uint8_t *)PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1)))
            break;
    }
    PQclear(r);
    return PK_OK;
}

static int pg_count(void *impl, const char *b, const pk_range_t *rg, uint64_t *out)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, b);
    p_bytes(&pa, rg->lo, rg->lo_len);
    if (rg->has_hi)
        p_bytes(&pa, rg->hi, rg->hi_len);
    int rc = run(impl, rg->has_hi ? Q_COUNT_HI : Q_COUNT, &pa, &r);
    if (rc != PK_OK)
        return rc;
    rc = PQntuples(r) == 1 ? rd_int8(r, 0, 0, out) : PK_ERR_IO;
    PQclear(r);
    return rc;
}

static int pg_counter_next(void *impl, const char *name, uint64_t *out)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, name);
    int rc = run(impl, Q_COUNTER, &pa, &r);
    if (rc == PK_ERR_EXISTS)
        rc = PK_ERR_IO;
    if (rc != PK_OK)
        return rc;
    rc = PQntuples(r) == 1 ? rd_int8(r, 0, 0, out) : PK_ERR_IO;
    PQclear(r);
    return rc;
}

static int pg_counter_set(void *impl, const char *name, uint64_t v)
{
    params_t pa = {0};
    PGresult *r;
    if (v > INT64_MAX)
        return PK_ERR_LIMIT;
    p_text(&pa, name);
    p_int8(&pa, v);
    int rc = run(impl, Q_COUNTER_SET, &pa, &r);
    if (rc == PK_ERR_EXISTS)
        rc = PK_ERR_IO;
    if (rc != PK_OK)
        return rc;
    if (affected(r) != 1)
        rc = PK_ERR_NOTFOUND;
    PQclear(r);
    return rc;
}

static int pg_log_put(void *impl, const char *log, uint64_t seqno, const uint8_t *v, size_t vl)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, log);
    p_int8(&pa, seqno);
    p_bytes(&pa, v, vl);
    int rc = run(impl, Q_LOG_PUT, &pa, &r);
    if (rc == PK_OK)
        PQclear(r);
    return rc;
}

static int pg_log_scan(void *impl, const char *log, uint64_t from, size_t limit, pk_log_fn cb,
                       void *ctx)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, log);
    p_int8(&pa, from);
    p_int8(&pa, limit);
    int rc = run(impl, Q_LOG_SCAN, &pa, &r);
    if (rc != PK_OK)
        return rc;
    int n = PQntuples(r);
    for (int i = 0; i < n && (size_t)i < limit; i++) {
        uint64_t no;
        if ((rc = rd_int8(r, i, 0, &no)) != PK_OK)
            break;
        if (cb(ctx, no, (const uint8_t *)PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1)))
            break;
    }
    PQclear(r);
    return rc;
}

static int pg_meta_get(void *impl, const char *name, uint64_t *v, int lock)
{
    params_t pa = {0};
    PGresult *r;
    p_text(&pa, name);
    int rc = run(impl, lock ? Q_META_LOCK : Q_META_GET, &pa, &r);
    if (rc != PK_OK)
        return rc;
    *v = 0;
    if (PQntuples(r) > 1)
        rc = PK_ERR_IO;
    else if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        rc = rd_int8(r, 0, 0, v);
    PQclear(r);
    return rc;
}

static int pg_meta_set(void *impl, const char *name, uint64_t v)
{
    params_t pa = {0};
    PGresult *r;
    if (v > INT64_MAX)
        return PK_ERR_INVAL;
    p_text(&pa, name);
    p_int8(&pa, v);
    int rc = run(impl, Q_META_SET, &pa, &r);
    if (rc == PK_OK)
        PQclear(r);
    return rc;
}

const pk_store_ops_t pk_store_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .begin = pg_begin,
    .commit = pg_commit,
    .abort = pg_abort,
    .get = pg_get,
    .put = pg_put,
    .del = pg_del,
    .scan = pg_scan,
    .count = pg_count,
    .counter_next = pg_counter_next,
    .counter_set = pg_counter_set,
    .log_put = pg_log_put,
    .log_scan = pg_log_scan,
    .meta_get = pg_meta_get,
    .meta_set = pg_meta_set,
};
