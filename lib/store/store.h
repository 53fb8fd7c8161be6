/*
 * proxkey durable storage: one interface, three backends.
 *
 *   memory:                     in-process, no I/O, deterministic (simulator, unit tests)
 *   sqlite:/path/file.db        SQLite, one file in WAL mode (the embedded default);
 *   /path/file.db               a plain path means SQLite too
 *   postgresql://... postgres://...
 *                               PostgreSQL through libpq (the URI is a libpq conninfo
 *                               URI); several kms/node/gts instances share one database
 *
 * Callers never see SQL. The data model is small enough that one piece of
 * caller code runs unchanged on every backend:
 *
 *  - buckets: named maps of key bytes -> value bytes, iterated in key order
 *    (bytewise, like memcmp; a shorter key sorts before its extensions);
 *  - sequences: named counters handing out 1, 2, 3, ... (pk_txn_next_id);
 *  - logs: named append-only lists of records numbered 1, 2, 3, ...;
 *  - versions: a schema version per component, upgraded by migrations.
 *
 * Everything happens inside a transaction (pk_txn_t). A transaction sees a
 * consistent state and its writes become visible, durably, all at once at
 * commit, or never. Read-write transactions are serialisable on every backend:
 * memory and SQLite run them one at a time (SQLite takes the write lock at
 * BEGIN IMMEDIATE), PostgreSQL runs them at SERIALIZABLE isolation. So code
 * that is correct when transactions run one after another is correct on all
 * three; the only difference a caller sees is PK_ERR_BUSY ("conflict, run the
 * whole transaction again"), which pk_store_run() handles.
 *
 * Limits:
 *   bucket, sequence, log and component names: 1..PK_STORE_NAME_MAX bytes of
 *     [A-Za-z0-9_.:/-];
 *   keys: 1..PK_STORE_KEY_MAX bytes (never empty);
 *   values and log records: 0..PK_STORE_VAL_MAX bytes;
 *   scans: at most PK_STORE_SCAN_MAX records per call (page with `after`).
 * A call outside these limits returns PK_ERR_INVAL and touches nothing.
 *
 * Error codes (core/err.h) and what the caller does next:
 *   PK_OK            done.
 *   PK_ERR_NOTFOUND  no such key (get, del) - an answer, the txn stays usable.
 *   PK_ERR_EXISTS    insert found the key present - an answer, txn usable.
 *   PK_ERR_SPACE     get: the caller's buffer is too small; *vlen holds the
 *                    size needed - an answer, txn usable.
 *   PK_ERR_INVAL     bad argument (name, length, NULL) - nothing was done,
 *                    txn usable. A bug in the caller.
 *   PK_ERR_STATE     a write in a read-only txn, a second txn on one store,
 *                    an operation on a txn already finished - nothing done.
 *   PK_ERR_BUSY      conflict with another transaction (SQLite lock timeout,
 *                    PostgreSQL serialization failure 40001 or deadlock
 *                    40P01): the txn is now failed; abort it and run the
 *                    whole transaction again (pk_store_run does this).
 *   PK_ERR_IO        the database failed (disk, connection lost, corrupt):
 *                    the txn is failed; abort, report; pk_store_begin() tries
 *                    to reconnect a lost PostgreSQL connection.
 *   PK_ERR_NOMEM     allocation failed: the txn is failed.
 *   PK_ERR_TIMEOUT   PostgreSQL cancelled a statement (statement_timeout):
 *                    the txn is failed.
 *   PK_ERR_VERSION   open/migrate: the stored schema is newer than this code.
 *
 * Failed transactions (LMDB's MDB_TXN_ERROR): the first BUSY, IO or NOMEM
 * from an operation marks the transaction failed. Every later operation on it
 * returns that same error without doing anything, pk_txn_commit() aborts it
 * and returns that error, so a caller may check only the commit's result and
 * still never commit half a transaction. A failed commit always aborts.
 *
 * Batching / group commit: every commit is one durable write (an fsync in
 * SQLite with synchronous=FULL, a WAL flush in PostgreSQL), roughly 1-2k per
 * second. A caller with many small writes (a burst of enrolments, audit
 * records) puts several of them in one transaction: they share the commit's
 * cost and still become visible atomically. Keep transactions short: SQLite
 * holds its single write lock from pk_store_begin() to commit.
 *
 * Threading and processes: a pk_store_t and its transaction belong to one
 * thread at a time (no internal locking). Open one store per thread. Several
 * stores, threads and processes may open the same SQLite file or the same
 * PostgreSQL database; the backend serialises them as described above. Each
 * "memory:" open is a separate, private store. Never carry an open store
 * across fork(): open it again in the child.
 *
 * Durability: SQLite runs in WAL mode with synchronous=FULL by default, so a
 * committed transaction survives power loss; "sqlite:/path?sync=normal" (or
 * pk_store_opts_t.sync = PK_STORE_SYNC_NORMAL) keeps the database consistent
 * but may lose the last transactions on power loss (not on a process crash).
 * PostgreSQL's durability is the server's (synchronous_commit).
 */
#ifndef PK_STORE_STORE_H
#define PK_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define PK_STORE_NAME_MAX 63
#define PK_STORE_KEY_MAX  255
#define PK_STORE_VAL_MAX  65536
#define PK_STORE_SCAN_MAX 10000

typedef struct pk_store pk_store_t;
typedef struct pk_txn pk_txn_t;

enum pk_store_sync {
    PK_STORE_SYNC_FULL = 0,   /* SQLite synchronous=FULL: commits survive power loss */
    PK_STORE_SYNC_NORMAL = 1, /* SQLite synchronous=NORMAL: last commits may be lost */
};

typedef struct pk_store_opts {
    int sync;            /* enum pk_store_sync (SQLite only) */
    int busy_timeout_ms; /* SQLite: wait this long for the write lock before
                          * PK_ERR_BUSY; 0 = default 5000 */
} pk_store_opts_t;

/* ---- Opening and closing ---- */

/*
 * Opens (creating when needed) the store named by uri, with default options.
 * The backend creates or upgrades its own tables; data written by a newer
 * proxkey (a newer physical schema) is refused with PK_ERR_VERSION.
 *
 * On success *out is a new store owned by the caller (pk_store_close).
 * Errors: PK_ERR_INVAL (unknown scheme, bad URI or query option), PK_ERR_IO
 * (cannot open/connect/create tables), PK_ERR_BUSY (another process held the
 * database locked for the whole busy timeout), PK_ERR_VERSION, PK_ERR_NOMEM.
 * Nothing is allocated on failure.
 */
int pk_store_open(const char *uri, pk_store_t **out);

/* As pk_store_open(), with options (opts may be NULL for the defaults). A
 * "?sync=normal|full" query on a sqlite: URI overrides opts->sync. */
int pk_store_open_opts(const char *uri, const pk_store_opts_t *opts, pk_store_t **out);

/* Aborts any open transaction, closes and frees the store. NULL is a no-op. */
void pk_store_close(pk_store_t *s);

/* "memory", "sqlite" or "postgresql" (static string). */
const char *pk_store_backend(const pk_store_t *s);

/* ---- Transactions ---- */

/*
 * Starts a read-write transaction; *txn is borrowed from the store and valid
 * until pk_txn_commit() or pk_txn_abort(). One transaction per store at a
 * time (PK_ERR_STATE otherwise). SQLite takes its write lock here (BEGIN
 * IMMEDIATE) and may wait up to the busy timeout, then PK_ERR_BUSY.
 */
int pk_store_begin(pk_store_t *s, pk_txn_t **txn);

/* Starts a read-only transaction: a consistent snapshot that never blocks
 * writers. Writes in it return PK_ERR_STATE. */
int pk_store_begin_read(pk_store_t *s, pk_txn_t **txn);

/*
 * Commits and ends the transaction (txn is invalid afterwards, whatever the
 * result). On any error nothing of the transaction persists: PK_ERR_BUSY
 * (serialization conflict at commit: run it again), PK_ERR_IO, or the error
 * that failed the transaction earlier. One exception no database can avoid:
 * when the PostgreSQL connection breaks during COMMIT, PK_ERR_IO means the
 * outcome is unknown - make transactions idempotent (insert-claims, not
 * blind increments of caller data) or re-read after reconnecting.
 */
int pk_txn_commit(pk_txn_t *txn);

/* Rolls back and ends the transaction. txn is invalid afterwards. NULL is a
 * no-op. */
void pk_txn_abort(pk_txn_t *txn);

/*
 * The body of a transaction for pk_store_run(): returns PK_OK to commit, or
 * any error to abort. It may run several times, so it must not have effects
 * outside the transaction (no sending, no counters in ctx that are not reset
 * at its start) - compute, let pk_store_run() commit, then act.
 */
typedef int (*pk_txn_fn)(pk_txn_t *txn, void *ctx);

/*
 * Runs fn in a read-write transaction and commits it; when fn, an operation
 * or the commit ends in PK_ERR_BUSY, aborts and runs it again, at most
 * max_tries times in all (max_tries >= 1), sleeping a short, growing,
 * randomised time between tries (0.1 ms doubling up to 50 ms). Returns PK_OK
 * once committed, fn's own error (after aborting), or PK_ERR_BUSY when every
 * try conflicted.
 */
int pk_store_run(pk_store_t *s, pk_txn_fn fn, void *ctx, unsigned max_tries);

/* As pk_store_run(), in a read-only transaction. */
int pk_store_run_read(pk_store_t *s, pk_txn_fn fn, void *ctx, unsigned max_tries);

/* ---- Buckets: key bytes -> value bytes ---- */

/*
 * Copies the value of key into val (cap bytes) and sets *vlen to its length.
 * PK_ERR_NOTFOUND when absent; PK_ERR_SPACE when cap < length (*vlen = the
 * length needed, val untouched). val may be NULL when cap is 0 (an existence
 * test: PK_OK for an empty value, else PK_ERR_SPACE or PK_ERR_NOTFOUND).
 */
int pk_txn_get(pk_txn_t *txn, const char *bucket, const uint8_t *key, size_t klen, uint8_t *val,
               size_t cap, size_t *vlen);

/* Sets key to val, creating or replacing it (upsert). */
int pk_txn_put(pk_txn_t *txn, const char *bucket, const uint8_t *key, size_t klen,
               const uint8_t *val, size_t vlen);

/*
 * Creates key with val; PK_ERR_EXISTS when the key is present (nothing
 * changed, txn usable). The atomic "claim" primitive: of several
 * transactions inserting one key, exactly one commits it; the others get
 * PK_ERR_EXISTS (or PK_ERR_BUSY first, then PK_ERR_EXISTS on their retry).
 */
int pk_txn_insert(pk_txn_t *txn, const char *bucket, const uint8_t *key, size_t klen,
                  const uint8_t *val, size_t vlen);

/* Deletes key; PK_ERR_NOTFOUND when absent. */
int pk_txn_del(pk_txn_t *txn, const char *bucket, const uint8_t *key, size_t klen);

/*
 * Scan callback: key and val are borrowed, valid only during the call. It
 * must not use the transaction. Returns 0 to go on, > 0 to stop (the scan
 * returns PK_OK), < 0 to stop with that error (the txn stays usable).
 */
typedef int (*pk_scan_fn)(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
                          size_t vlen);

/*
 * Calls cb for the keys of bucket that start with prefix (plen may be 0: all
 * keys), in key order, at most limit of them (1..PK_STORE_SCAN_MAX). When
 * after is not NULL only keys strictly greater than after are visited: pass
 * the last key seen to fetch the next page.
 */
int pk_txn_scan(pk_txn_t *txn, const char *bucket, const uint8_t *prefix, size_t plen,
                const uint8_t *after, size_t alen, size_t limit, pk_scan_fn cb, void *ctx);

/* Counts the keys of bucket starting with prefix (plen may be 0). */
int pk_txn_count(pk_txn_t *txn, const char *bucket, const uint8_t *prefix, size_t plen,
                 uint64_t *n);

/* ---- Sequences ---- */

/*
 * Sets *out to the next identifier of sequence seq: 1 for a new sequence,
 * then strictly increasing. The counter is part of the transaction: the
 * identifier is "used" once the transaction commits, and never handed out
 * again after that - across restarts, and across processes and instances on
 * one SQLite file or one PostgreSQL database under concurrent requests. If
 * the transaction aborts, the same identifier is handed out again, so a
 * caller must not let an identifier escape (send it, log it as allocated)
 * before commit. Committed identifiers are therefore gap-free.
 *
 * Concurrent allocators conflict (SQLite: they wait for the write lock;
 * PostgreSQL: one of two gets PK_ERR_BUSY and retries): allocate late in the
 * transaction and keep it short.
 */
int pk_txn_next_id(pk_txn_t *txn, const char *seq, uint64_t *out);

/* ---- Append-only logs (audit) ---- */

/*
 * Appends a record to log and sets *seqno (may be NULL) to its number: 1, 2,
 * 3, ... per log, gap-free among committed records; the records one
 * transaction appends to one log get consecutive numbers. Numbers follow the
 * rules of pk_txn_next_id (never reused once committed, handed out again
 * after an abort). There is no API to change or delete a record.
 *
 * Cost: the first append to a log in a transaction advances the log's
 * counter in the backend (and so claims it against concurrent appenders);
 * later appends to that log in the same transaction (for up to 4 logs per
 * transaction) only insert the record, and pk_txn_commit() writes the
 * counter's final value once, before COMMIT. An error in that write fails
 * the commit like any other: nothing of the transaction persists.
 */
int pk_txn_append(pk_txn_t *txn, const char *log, const uint8_t *val, size_t vlen, uint64_t *seqno);

/* Log scan callback; val borrowed for the call; return as pk_scan_fn. */
typedef int (*pk_log_fn)(void *ctx, uint64_t seqno, const uint8_t *val, size_t vlen);

/* Calls cb for the records of log numbered from `from` up, in order, at most
 * limit (1..PK_STORE_SCAN_MAX) of them. */
int pk_txn_log_scan(pk_txn_t *txn, const char *log, uint64_t from, size_t limit, pk_log_fn cb,
                    void *ctx);

/* ---- Application schema versions and migrations ---- */

/*
 * One migration step: upgrades component's data from version to - 1 to
 * version to, with the ordinary transaction API (so it runs on every
 * backend). Returns PK_OK or an error (the whole migration then aborts).
 */
typedef struct pk_migration {
    uint32_t to;      /* the version this step produces: steps[i].to == i + 1 */
    const char *what; /* a short description (for logs) */
    int (*up)(pk_txn_t *txn);
} pk_migration_t;

/*
 * Brings component (e.g. "kms", "node", "gts") to version n: reads its stored
 * version v (0 for a new store) and runs steps[v] .. steps[n - 1] in order, in
 * one transaction that also records the new version, so a crash leaves either
 * the old version and data or the new ones. Several processes migrating at
 * once are serialised: one runs the steps, the others find the work done.
 * Call it once per role right after pk_store_open().
 *
 * Errors: PK_ERR_VERSION when the stored version is newer than n (data from a
 * newer proxkey: refuse to run); PK_ERR_INVAL when steps[i].to != i + 1 or up
 * is NULL; a step's own error; PK_ERR_BUSY / PK_ERR_IO as for transactions.
 */
int pk_store_migrate(pk_store_t *s, const char *component, const pk_migration_t *steps, size_t n);

/* Reads component's stored application schema version (0 if never set). */
int pk_store_version(pk_store_t *s, const char *component, uint32_t *version);

#endif
