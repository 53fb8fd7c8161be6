/*
 * Private: the backend vtable behind store.h. Only lib/store includes this.
 *
 * store.c validates every argument (names, lengths, limits, txn state) and
 * keeps the failed-transaction rule; a backend sees only valid calls inside
 * an open transaction and returns PK_OK or a PK_ERR_* code.
 *
 * Sequences and logs share one counter space in the backends: user sequence
 * "x" is counter "s:x", the counter of log "x" is "l:x". Application schema
 * versions live in the meta table under "app:<component>"; the backend's own
 * physical schema version under PK_STORE_META_PHYS.
 */
#ifndef PK_STORE_STORE_IMPL_H
#define PK_STORE_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define PK_STORE_META_PHYS "#store"
/* Longest internal counter or meta name: "app:" + a 63-byte name + NUL. */
#define PK_STORE_INAME_MAX (PK_STORE_NAME_MAX + 8)

/* Scan range prepared by store.c: keys k of bucket with k >= lo (the prefix),
 * k > after (when after_len > 0) and k < hi (when has_hi), in order. */
typedef struct pk_range {
    const uint8_t *lo;
    size_t lo_len;
    const uint8_t *after;
    size_t after_len;
    uint8_t hi[PK_STORE_KEY_MAX];
    size_t hi_len;
    int has_hi;
    size_t limit;
} pk_range_t;

typedef struct pk_store_ops {
    const char *name;
    /* Opens impl from the part of the URI after the scheme. */
    int (*open)(const char *target, const pk_store_opts_t *opts, void **impl);
    void (*close)(void *impl);
    int (*begin)(void *impl, int rdonly);
    int (*commit)(void *impl);
    void (*abort)(void *impl);
    int (*get)(void *impl, const char *b, const uint8_t *k, size_t kl, uint8_t *v, size_t cap,
               size_t *vl);
    /* insert_only: PK_ERR_EXISTS instead of replacing. */
    int (*put)(void *impl, const char *b, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl,
               int insert_only);
    int (*del)(void *impl, const char *b, const uint8_t *k, size_t kl);
    int (*scan)(void *impl, const char *b, const pk_range_t *r, pk_scan_fn cb, void *ctx);
    int (*count)(void *impl, const char *b, const pk_range_t *r, uint64_t *n);
    /* Increments counter name (created at 0) and returns the new value. */
    int (*counter_next)(void *impl, const char *name, uint64_t *out);
    /* Sets counter name to v. Called at commit for a counter this txn already
     * advanced with counter_next (so the row exists and is claimed); an
     * absent row is PK_ERR_NOTFOUND. */
    int (*counter_set)(void *impl, const char *name, uint64_t v);
    /* Stores record seqno of log (the caller got seqno from counter_next). */
    int (*log_put)(void *impl, const char *log, uint64_t seqno, const uint8_t *v, size_t vl);
    int (*log_scan)(void *impl, const char *log, uint64_t from, size_t limit, pk_log_fn cb,
                    void *ctx);
    /* Reads meta value name (0 when absent). lock != 0: the caller will set
     * it in this txn, and concurrent lockers must serialise (PG: row lock). */
    int (*meta_get)(void *impl, const char *name, uint64_t *v, int lock);
    int (*meta_set)(void *impl, const char *name, uint64_t v);
} pk_store_ops_t;

extern const pk_store_ops_t pk_store_mem_ops;
extern const pk_store_ops_t pk_store_sqlite_ops;
extern const pk_store_ops_t pk_store_pg_ops;

#endif
