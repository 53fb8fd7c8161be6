/*
 * The in-memory backend: one skip list of (composite key -> value), with an
 * undo log for transactions. No I/O, no clock, no randomness: a node's height
 * comes from a hash of its key, so a run is reproducible byte for byte.
 *
 * A composite key is bucket '\0' key. Bucket names contain no NUL, so memcmp
 * order on composites is (bucket, key) order with bytewise keys. Sequences,
 * logs and meta values live in internal buckets whose names start with 0x01
 * (no user bucket can: store.c allows only [A-Za-z0-9_.:/-]).
 *
 * Undo: every change records how to reverse it, holding the old value buffer
 * or the unlinked node itself, so abort never allocates and cannot fail.
 * Changes are undone in reverse order, so each undo finds the state its
 * change left.
 *
 * Heights are derived from the key, so adversarial keys could unbalance the
 * list: this backend serves the simulator and tests, not hostile input.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"

#define MAXLVL 16
#define CK_MAX (PK_STORE_NAME_MAX + 2 + PK_STORE_KEY_MAX)

#define B_SEQ  "\001seq"
#define B_LOG  "\001log"
#define B_META "\001meta"

typedef struct node {
    uint8_t *ck; /* composite key */
    size_t cklen;
    uint8_t *v;
    size_t vlen;
    int lvl;
    struct node *next[];
} node_t;

enum undo_kind { U_INSERTED, U_REPLACED, U_DELETED };

typedef struct undo {
    int kind;
    node_t *n;     /* INSERTED: linked node; REPLACED: linked node; DELETED: unlinked node */
    uint8_t *oldv; /* REPLACED: the previous value buffer */
    size_t oldlen;
} undo_t;

typedef struct mem {
    node_t *head; /* sentinel, MAXLVL high */
    int lvl;      /* highest level in use */
    undo_t *undo;
    size_t nundo, capundo;
} mem_t;

static int ck_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl;
}

/* bucket '\0' key into out (CK_MAX); returns the length. Lengths are checked
 * by store.c (and the internal names are short). */
static size_t ck_make(uint8_t out[CK_MAX], const char *b, const uint8_t *k, size_t kl)
{
    size_t bl = strlen(b);
    memcpy(out, b, bl);
    out[bl] = 0;
    if (kl)
        memcpy(out + bl + 1, k, kl);
    return bl + 1 + kl;
}

static int height(const uint8_t *ck, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= ck[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 29; /* FNV's low bits mix poorly */
    int lvl = 1;
    while (lvl < MAXLVL && (h & 3) == 0) {
        lvl++;
        h >>= 2;
    }
    return lvl;
}

/* First node >= ck; upd[i] (when not NULL) = last node < ck at level i. */
static node_t *seek(mem_t *m, const uint8_t *ck, size_t len, node_t **upd)
{
    node_t *x = m->head;
    for (int i = MAXLVL - 1; i >= 0; i--) {
        while (x->next[i] && ck_cmp(x->next[i]->ck, x->next[i]->cklen, ck, len) < 0)
            x = x->next[i];
        if (upd)
            upd[i] = x;
    }
    return x->next[0];
}

static void link_node(mem_t *m, node_t *n)
{
    node_t *upd[MAXLVL];
    seek(m, n->ck, n->cklen, upd);
    for (int i = 0; i < n->lvl; i++) {
        n->next[i] = upd[i]->next[i];
        upd[i]->next[i] = n;
    }
    if (n->lvl > m->lvl)
        m->lvl = n->lvl;
}

static void unlink_node(mem_t *m, node_t *n)
{
    node_t *upd[MAXLVL];
    seek(m, n->ck, n->cklen, upd);
    for (int i = 0; i < n->lvl; i++)
        if (upd[i]->next[i] == n)
            upd[i]->next[i] = n->next[i];
}

static void free_node(node_t *n)
{
    if (n == NULL)
        return;
    free(n->ck);
    free(n->v);
    free(n);
}

static node_t *find(mem_t *m, const uint8_t *ck, size_t len)
{
    node_t *x = seek(m, ck, len, NULL);
    return x && ck_cmp(x->ck, x->cklen, ck, len) == 0 ? x : NULL;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static int undo_reserve(mem_t *m)
{
    if (m->nundo < m->capundo)
        return PK_OK;
    size_t cap = m->capundo ? 2 * m->capundo : 64;
    undo_t *u = realloc(m->undo, cap * sizeof(*u));
    if (u == NULL)
        return PK_ERR_NOMEM;
    m->undo = u;
    m->capundo = cap;
    return PK_OK;
}

/* Upsert with undo. insert_only: PK_ERR_EXISTS when present. */
static int set(mem_t *m, const uint8_t *ck, size_t len, const uint8_t *v, size_t vl,
               int insert_only)
{
    node_t *n = find(m, ck, len);
    if (n && insert_only)
        return PK_ERR_EXISTS;
    if (undo_reserve(m) != PK_OK)
        return PK_ERR_NOMEM;
    uint8_t *nv = dup_bytes(v, vl);
    if (nv == NULL)
        return PK_ERR_NOMEM;
    if (n) {
        m->undo[m->nundo++] = (undo_t){U_REPLACED, n, n->v, n->vlen};
        n->v = nv;
        n->vlen = vl;
        return PK_OK;
    }
    int lvl = height(ck, len);
    n = calloc(1, sizeof(*n) + (size_t)lvl * sizeof(node_t *));
    uint8_t *nck = dup_bytes(ck, len);
    if (n == NULL || nck == NULL) {
        free(n);
        free(nck);
        free(nv);
        return PK_ERR_NOMEM;
    }
    n->ck = nck;
    n->cklen = len;
    n->v = nv;
    n->vlen = vl;
    n->lvl = lvl;
    link_node(m, n);
    m->undo[m->nundo++] = (undo_t){U_INSERTED, n, NULL, 0};
    return PK_OK;
}

static int mem_open(const char *target, const pk_store_opts_t *opts, void **impl)
{
    (void)target;
    (void)opts;
    mem_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return PK_ERR_NOMEM;
    m->head = calloc(1, sizeof(node_t) + MAXLVL * sizeof(node_t *));
    if (m->head == NULL) {
        free(m);
        return PK_ERR_NOMEM;
    }
    m->head->lvl = MAXLVL;
    m->lvl = 1;
    *impl = m;
    return PK_OK;
}

static void mem_close(void *impl)
{
    mem_t *m = impl;
    node_t *x = m->head->next[0];
    while (x) {
        node_t *nx = x->next[0];
        free_node(x);
        x = nx;
    }
    free(m->head);
    free(m->undo);
    free(m);
}

static int mem_begin(void *impl, int rdonly)
{
    (void)rdonly;
    ((mem_t *)impl)->nundo = 0;
    return PK_OK;
}

static int mem_commit(void *impl)
{
    mem_t *m = impl;
    for (size_t i = 0; i < m->nundo; i++) {
        if (m->undo[i].kind == U_REPLACED)
            free(m->undo[i].oldv);
        else if (m->undo[i].kind == U_DELETED)
            free_node(m->undo[i].n);
    }
    m->nundo = 0;
    return PK_OK;
}

static void mem_abort(void *impl)
{
    mem_t *m = impl;
    while (m->nundo > 0) {
        undo_t *u = &m->undo[--m->nundo];
        switch (u->kind) {
        case U_INSERTED:
            unlink_node(m, u->n);
            free_node(u->n);
            break;
        case U_REPLACED:
            free(u->n->v);
            u->n->v = u->oldv;
            u->n->vlen = u->oldlen;
            break;
        case U_DELETED: link_node(m, u->n); break;
        }
    }
}

static int mem_get(void *impl, const char *b, const uint8_t *k, size_t kl, uint8_t *v, size_t cap,
                   size_t *vl)
{
    uint8_t ck[CK_MAX];
    size_t len = ck_make(ck, b, k, kl);
    node_t *n = find(impl, ck, len);
    if (n == NULL)
        return PK_ERR_NOTFOUND;
    *vl = n->vlen;
    if (cap < n->vlen)
        return PK_ERR_SPACE;
    if (n->vlen)
        memcpy(v, n->v, n->vlen);
    return PK_OK;
}

static int mem_put(void *impl, const char *b, const uint8_t *k, size_t kl, const uint8_t *v,
                   size_t vl, int insert_only)
{
    uint8_t ck[CK_MAX];
    size_t len = ck_make(ck, b, k, kl);
    return set(impl, ck, len, v, vl, insert_only);
}

static int mem_del(void *impl, const char *b, const uint8_t *k, size_t kl)
{
    mem_t *m = impl;
    uint8_t ck[CK_MAX];
    size_t len = ck_make(ck, b, k, kl);
    node_t *n = find(m, ck, len);
    if (n == NULL)
        return PK_ERR_NOTFOUND;
    if (undo_reserve(m) != PK_OK)
        return PK_ERR_NOMEM;
    unlink_node(m, n);
    m->undo[m->nundo++] = (undo_t){U_DELETED, n, NULL, 0};
    return PK_OK;
}

/* Visits the nodes of bucket b in r, calling cb (or counting when cb is NULL). */
static int walk(mem_t *m, const char *b, const pk_range_t *r, pk_scan_fn cb, void *ctx,
                uint64_t *count)
{
    uint8_t ck[CK_MAX], pfx[CK_MAX];
    size_t bl = strlen(b) + 1;
    size_t plen = ck_make(pfx, b, r->lo, r->lo_len); /* every visited key starts so */
    const uint8_t *from = r->lo;
    size_t fromlen = r->lo_len;
    if (r->after_len && ck_cmp(r->after, r->after_len, r->lo, r->lo_len) >= 0) {
        from = r->after;
        fromlen = r->after_len;
    }
    size_t len = ck_make(ck, b, from, fromlen);
    uint64_t seen = 0;
    for (node_t *x = seek(m, ck, len, NULL); x; x = x->next[0]) {
        if (x->cklen < plen || memcmp(x->ck, pfx, plen) != 0)
            break;
        const uint8_t *key = x->ck + bl;
        size_t klen = x->cklen - bl;
        if (klen == 0 || (r->after_len && ck_cmp(key, klen, r->after, r->after_len) <= 0))
            continue;
        seen++;
        if (cb) {
            if (cb(ctx, key, klen, x->v, x->vlen))
                break;
            if (seen >= r->limit)
                break;
        }
    }
    if (count)
        *count = seen;
    return PK_OK;
}

static int mem_scan(void *impl, const char *b, const pk_range_t *r, pk_scan_fn cb, void *ctx)
{
    return walk(impl, b, r, cb, ctx, NULL);
}

static int mem_count(void *impl, const char *b, const pk_range_t *r, uint64_t *n)
{
    return walk(impl, b, r, NULL, NULL, n);
}

static void be64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static uint64_t rd64(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | in[i];
    return v;
}

static int get_u64(mem_t *m, const char *b, const char *name, uint64_t *v)
{
    uint8_t ck[CK_MAX];
    size_t len = ck_make(ck, b, (const uint8_t *)name, strlen(name));
    node_t *n = find(m, ck, len);
    *v = 0;
    if (n == NULL)
        return PK_ERR_NOTFOUND;
    if (n->vlen != 8)
        return PK_ERR_IO;
    *v = rd64(n->v);
    return PK_OK;
}

static int set_u64(mem_t *m, const char *b, const char *name, uint64_t v)
{
    uint8_t ck[CK_MAX], val[8];
    size_t len = ck_make(ck, b, (const uint8_t *)name, strlen(name));
    be64(val, v);
    return set(m, ck, len, val, 8, 0);
}

static int mem_counter_next(void *impl, const char *name, uint64_t *out)
{
    uint64_t v;
    int rc = get_u64(impl, B_SEQ, name, &v);
    if (rc != PK_OK && rc != PK_ERR_NOTFOUND)
        return rc;
    if (v >= INT64_MAX) /* same ceiling as PostgreSQL's bigint */
        return PK_ERR_LIMIT;
    rc = set_u64(impl, B_SEQ, name, v + 1);
    if (rc == PK_OK)
        *out = v + 1;
    return rc;
}

static int mem_counter_set(void *impl, const char *name, uint64_t v)
{
    uint64_t old;
    int rc = get_u64(impl, B_SEQ, name, &old);
    if (rc != PK_OK)
        return rc;
    if (v > INT64_MAX)
        return PK_ERR_LIMIT;
    return set_u64(impl, B_SEQ, name, v);
}

/* Log record key: log '\0' seqno (big-endian, so key order is number order). */
static size_t log_key(uint8_t out[PK_STORE_NAME_MAX + 9], const char *log, uint64_t seqno)
{
    size_t l = strlen(log);
    memcpy(out, log, l);
    out[l] = 0;
    be64(out + l + 1, seqno);
    return l + 9;
}

static int mem_log_put(void *impl, const char *log, uint64_t seqno, const uint8_t *v, size_t vl)
{
    uint8_t k[PK_STORE_NAME_MAX + 9], ck[CK_MAX];
    size_t len = ck_make(ck, B_LOG, k, log_key(k, log, seqno));
    return set(impl, ck, len, v, vl, 1);
}

static int mem_log_scan(void *impl, const char *log, uint64_t from, size_t limit, pk_log_fn cb,
                        void *ctx)
{
    uint8_t k[PK_STORE_NAME_MAX + 9], ck[CK_MAX];
    size_t kl = log_key(k, log, from);
    size_t len = ck_make(ck, B_LOG, k, kl);
    size_t pl = len - 8; /* B_LOG '\0' log '\0' */
    size_t seen = 0;
    for (node_t *x = seek(impl, ck, len, NULL); x && seen < limit; x = x->next[0]) {
        if (x->cklen != len || memcmp(x->ck, ck, pl) != 0)
            break;
        seen++;
        if (cb(ctx, rd64(x->ck + pl), x->v, x->vlen))
            break;
    }
    return PK_OK;
}

static int mem_meta_get(void *impl, const char *name, uint64_t *v, int lock)
{
    (void)lock; /* one transaction at a time */
    int rc = get_u64(impl, B_META, name, v);
    return rc == PK_ERR_NOTFOUND ? PK_OK : rc;
}

static int mem_meta_set(void *impl, const char *name, uint64_t v)
{
    return set_u64(impl, B_META, name, v);
}

const pk_store_ops_t pk_store_mem_ops = {
    .name = "memory",
    .open = mem_open,
    .close = mem_close,
    .begin = mem_begin,
    .commit = mem_commit,
    .abort = mem_abort,
    .get = mem_get,
    .put = mem_put,
    .del = mem_del,
    .scan = mem_scan,
    .count = mem_count,
    .counter_next = mem_counter_next,
    .counter_set = mem_counter_set,
    .log_put = mem_log_put,
    .log_scan = mem_log_scan,
    .meta_get = mem_meta_get,
    .meta_set = mem_meta_set,
};
