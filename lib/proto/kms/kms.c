/* The kms core: node requests, caches, group commit (see kms.h). */
#include <stdlib.h>
#include <string.h>

#include "proto/kms/kms_impl.h"
#include "proto/reg/reg.h"

/* ---------------------------------------------------------------- helpers */

size_t kms_blk(uint8_t *out, const pk_reg_id_t *id)
{
    out[0] = id->len;
    memcpy(out + 1, id->b, id->len);
    return (size_t)id->len + 1;
}

size_t kms_pair(uint8_t out[PAIR_MAX], const pk_reg_id_t *a, const pk_reg_id_t *b)
{
    uint8_t x[BLK_MAX], y[BLK_MAX];
    size_t xl = kms_blk(x, a), yl = kms_blk(y, b);
    size_t m = xl < yl ? xl : yl;
    int c = memcmp(x, y, m);
    if (c > 0 || (c == 0 && xl > yl)) {
        memcpy(out, y, yl);
        memcpy(out + yl, x, xl);
    } else {
        memcpy(out, x, xl);
        memcpy(out + xl, y, yl);
    }
    return xl + yl;
}

int kms_dev_get(pk_kms_t *k, pk_txn_t *txn, const pk_reg_id_t *id, int with_key, kms_dev_t *d)
{
    uint8_t key[BLK_MAX], val[DEV_VAL_MAX];
    size_t kl = kms_blk(key, id), vl = 0;
    memset(d, 0, sizeof *d);
    int rc = pk_txn_get(txn, B_DEV, key, kl, val, sizeof val, &vl);
    if (rc == PK_ERR_SPACE)
        return PK_ERR_MALFORMED;
    if (rc != PK_OK)
        return rc;
    pk_rd_t r;
    pk_rd_init(&r, val, vl);
    uint8_t ver = pk_rd_u8(&r);
    d->mode = pk_rd_u8(&r);
    d->created_ms = pk_rd_u64(&r);
    pk_rd_t p = pk_rd_block8(&r, PK_REG_ID_MAX);
    if (r.err != PK_OK || ver != 1 || r.left <= PK_WRAP_OVERHEAD || r.left - PK_WRAP_OVERHEAD > 32)
        return PK_ERR_MALFORMED;
    if (p.left > 0 && pk_reg_id_set(&d->pool, p.p, p.left) != PK_OK)
        return PK_ERR_MALFORMED;
    d->klen = (uint8_t)(r.left - PK_WRAP_OVERHEAD);
    if (with_key) {
        size_t ol = 0;
        rc = pk_wrap_ctx_open(&k->wrap, B_DEV, key, kl, r.p, r.left, d->k, sizeof d->k, &ol);
        if (rc != PK_OK || (ol != 16 && ol != 32)) {
            pk_wipe(d, sizeof *d);
            return rc != PK_OK ? rc : PK_ERR_MALFORMED;
        }
    }
    return PK_OK;
}

/* Collects the identities that follow a fixed prefix in the keys of a
 * bucket (prefix || blk(id)), page by page. */
struct idcol {
    size_t plen;
    pk_reg_id_t *out;
    size_t n, max;
    uint8_t last[2 * BLK_MAX];
    size_t lastl;
    size_t seen;
};

static int idcol_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct idcol *c = ctx;
    (void)val;
    (void)vlen;
    if (klen > sizeof c->last)
        return PK_ERR_MALFORMED;
    memcpy(c->last, key, klen);
    c->lastl = klen;
    c->seen++;
    if (klen <= c->plen + 1 || key[c->plen] != klen - c->plen - 1)
        return PK_ERR_MALFORMED;
    if (c->n >= c->max)
        return 1;
    if (pk_reg_id_set(&c->out[c->n], key + c->plen + 1, klen - c->plen - 1) != PK_OK)
        return PK_ERR_MALFORMED;
    c->n++;
    return 0;
}

/* Appends to out[*n..max) the ids under prefix in bucket. */
int kms_scan_ids(pk_txn_t *txn, const char *bucket, const uint8_t *prefix, size_t plen,
                 pk_reg_id_t *out, size_t *n, size_t max)
{
    struct idcol c = {.plen = plen, .out = out, .n = *n, .max = max};
    for (unsigned page = 0; page < 4096 && c.n < max; page++) {
        c.seen = 0;
        int rc = pk_txn_scan(txn, bucket, prefix, plen, c.lastl ? c.last : NULL, c.lastl, 256,
                             idcol_cb, &c);
        if (rc != PK_OK)
            return rc;
        if (c.seen < 256)
            break;
    }
    *n = c.n;
    return PK_OK;
}

int kms_allowed(pk_txn_t *txn, const pk_reg_id_t *a, const pk_reg_id_t *b)
{
    uint8_t pk[PAIR_MAX], key[2 * BLK_MAX];
    size_t pl = kms_pair(pk, a, b), vl = 0;
    pk_reg_id_t groups[64];
    if (pk_reg_id_eq(a, b))
        return 0;
    int rc = pk_txn_get(txn, B_ALLOW, pk, pl, NULL, 0, &vl);
    if (rc == PK_OK)
        return 1;
    if (rc != PK_ERR_NOTFOUND)
        return rc;
    /* the groups of a (at most 64 are considered), then b in one of them */
    uint8_t pre[BLK_MAX];
    size_t prl = kms_blk(pre, a), ng = 0;
    if ((rc = kms_scan_ids(txn, B_GRPM, pre, prl, groups, &ng, 64)) != PK_OK)
        return rc;
    for (size_t i = 0; i < ng; i++) {
        size_t kl = kms_blk(key, &groups[i]);
        kl += kms_blk(key + kl, b);
        rc = pk_txn_get(txn, B_GRP, key, kl, NULL, 0, &vl);
        if (rc == PK_OK)
            return 1;
        if (rc != PK_ERR_NOTFOUND)
            return rc;
    }
    return 0;
}

static int id_cmp(const void *x, const void *y)
{
    const pk_reg_id_t *a = x, *b = y;
    if (a->len != b->len) /* blk order: the length byte first */
        return a->len < b->len ? -1 : 1;
    return memcmp(a->b, b->b, a->len);
}

int kms_peers(pk_kms_t *k, pk_txn_t *txn, const pk_reg_id_t *dev, size_t *n)
{
    pk_reg_id_t groups[64];
    uint8_t pre[BLK_MAX];
    size_t prl = kms_blk(pre, dev), ng = 0, np = 0;
    int rc = kms_scan_ids(txn, B_PEER, pre, prl, k->peers, &np, PEERS_MAX);
    if (rc == PK_OK)
        rc = kms_scan_ids(txn, B_GRPM, pre, prl, groups, &ng, 64);
    for (size_t i = 0; rc == PK_OK && i < ng; i++) {
        uint8_t gp[BLK_MAX];
        size_t gl = kms_blk(gp, &groups[i]);
        rc = kms_scan_ids(txn, B_GRP, gp, gl, k->peers, &np, PEERS_MAX);
    }
    if (rc != PK_OK)
        return rc;
    qsort(k->peers, np, sizeof k->peers[0], id_cmp);
    size_t w = 0;
    for (size_t i = 0; i < np; i++) {
        if (pk_reg_id_eq(&k->peers[i], dev))
            continue;
        if (w > 0 && pk_reg_id_eq(&k->peers[w - 1], &k->peers[i]))
            continue;
        k->peers[w++] = k->peers[i];
    }
    *n = w;
    return PK_OK;
}

int kms_revoke_if_unallowed(pk_txn_t *txn, const pk_reg_id_t *a, const pk_reg_id_t *b)
{
    uint8_t pk[PAIR_MAX];
    int rc = kms_allowed(txn, a, b);
    if (rc != 0)
        return rc < 0 ? rc : PK_OK;
    size_t pl = kms_pair(pk, a, b);
    rc = pk_txn_del(txn, B_ROOT, pk, pl);
    return rc == PK_ERR_NOTFOUND ? PK_OK : rc;
}

static void fill_audit(pk_kms_audit_t *a, uint8_t what, uint64_t now_ms, uint32_t ksi,
                       uint16_t count, const pk_reg_id_t *node, const pk_reg_id_t *dev,
                       const pk_reg_id_t *peer)
{
    memset(a, 0, sizeof *a);
    a->what = what;
    a->at_ms = now_ms;
    a->ksi = ksi;
    a->count = count;
    if (node)
        a->node = *node;
    if (dev)
        a->device = *dev;
    if (peer)
        a->peer = *peer;
}

int kms_audit_append(pk_txn_t *txn, uint8_t what, uint64_t now_ms, uint32_t ksi, uint16_t count,
                     const pk_reg_id_t *node, const pk_reg_id_t *dev, const pk_reg_id_t *peer)
{
    pk_kms_audit_t a;
    uint8_t buf[PK_KMS_AUDIT_MAX];
    size_t len = 0;
    fill_audit(&a, what, now_ms, ksi, count, node, dev, peer);
    int rc = pk_kms_audit_encode(&a, buf, sizeof buf, &len);
    if (rc == PK_OK)
        rc = pk_txn_append(txn, PK_KMS_AUDIT_LOG, buf, len, NULL);
    return rc;
}

/* Queues an issuance record for the group commit. */
static int queue_audit(pk_kms_t *k, uint8_t what, uint64_t now_ms, uint32_t ksi, uint16_t count,
                       const pk_reg_id_t *node, const pk_reg_id_t *dev, const pk_reg_id_t *peer)
{
    pk_kms_audit_t a;
    size_t len = 0;
    if (k->qn >= k->qmax)
        return PK_ERR_LIMIT;
    fill_audit(&a, what, now_ms, ksi, count, node, dev, peer);
    int rc = pk_kms_audit_encode(&a, k->q + k->qn * PK_KMS_AUDIT_MAX, PK_KMS_AUDIT_MAX, &len);
    if (rc != PK_OK)
        return rc;
    k->qlen[k->qn++] = (uint16_t)len;
    return PK_OK;
}

/* ------------------------------------------------------------------ cache */

static size_t slot_of(const pk_kms_t *k, const pk_reg_id_t *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: ids are public, chosen by the admin */
    for (size_t i = 0; i < id->len; i++)
        h = (h ^ id->b[i]) * 1099511628211ull;
    return (size_t)(h % k->nslots);
}

void kms_cache_drop(pk_kms_t *k, const pk_reg_id_t *id)
{
    struct kms_cache_ent *e = &k->cache[slot_of(k, id)];
    if (e->used && pk_reg_id_eq(&e->id, id))
        pk_wipe(e, sizeof *e);
}

struct devread {
    pk_kms_t *k;
    const pk_reg_id_t *id;
    kms_dev_t d;
};

static int read_dev_fn(pk_txn_t *txn, void *ctx)
{
    struct devread *r = ctx;
    return kms_dev_get(r->k, txn, r->id, 1, &r->d);
}

/* The device's key and mode, through the cache. The entry is borrowed until
 * the next call. */
static int dev_cached(pk_kms_t *k, const pk_reg_id_t *id, uint64_t now_ms,
                      const struct kms_cache_ent **out)
{
    struct kms_cache_ent *e = &k->cache[slot_of(k, id)];
    if (e->used && pk_reg_id_eq(&e->id, id) && now_ms >= e->loaded_ms &&
        now_ms - e->loaded_ms < k->ttl_ms) {
        k->stats.cache_hits++;
        *out = e;
        return PK_OK;
    }
    k->stats.cache_misses++;
    struct devread r = {.k = k, .id = id};
    int rc = pk_store_run_read(k->st, read_dev_fn, &r, STORE_TRIES);
    if (rc != PK_OK) {
        pk_wipe(&r.d, sizeof r.d);
        if (rc == PK_ERR_NOTFOUND)
            kms_cache_drop(k, id);
        return rc;
    }
    pk_wipe(e, sizeof *e); /* eviction wipes */
    e->used = 1;
    e->mode = r.d.mode;
    e->klen = r.d.klen;
    e->loaded_ms = now_ms;
    e->id = *id;
    e->pool = r.d.pool;
    memcpy(e->k, r.d.k, r.d.klen);
    pk_wipe(&r.d, sizeof r.d);
    *out = e;
    return PK_OK;
}

/* ------------------------------------------------------------ lifecycle */

static int migrate_v1(pk_txn_t *txn)
{
    (void)txn; /* buckets, sequences and logs exist on first use */
    return PK_OK;
}

static const pk_migration_t kms_migrations[] = {{1, "kms data model v1", migrate_v1}};

int pk_kms_new(const pk_kms_cfg_t *cfg, pk_kms_t **out)
{
    *out = NULL;
    if (!cfg || !cfg->store || !cfg->kek)
        return PK_ERR_INVAL;
    pk_kms_t *k = calloc(1, sizeof *k);
    if (!k)
        return PK_ERR_NOMEM;
    k->st = cfg->store;
    k->rng = cfg->rng ? cfg->rng : &pk_rng_system;
    k->nslots = cfg->cache_slots ? cfg->cache_slots : 4096;
    k->ttl_ms = cfg->cache_ttl_ms ? cfg->cache_ttl_ms : 5000;
    k->qmax = cfg->audit_max ? cfg->audit_max : 8192;
    k->gen = 1;
    k->group = cfg->group_writes != 0;
    k->imax = cfg->intent_max ? cfg->intent_max : PK_KMS_INTENT_MAX;
    k->cache = calloc(k->nslots, sizeof *k->cache);
    k->q = malloc(k->qmax * PK_KMS_AUDIT_MAX);
    k->qlen = malloc(k->qmax * sizeof *k->qlen);
    k->peers = malloc(PEERS_MAX * sizeof *k->peers);
    k->miss = malloc(PK_REG_PEERS_MAX * sizeof *k->miss);
    k->tagbuf = malloc(TAGBUF_MAX);
    k->iq = calloc(k->imax, sizeof *k->iq);
    int rc = PK_ERR_NOMEM;
    if (!k->cache || !k->q || !k->qlen || !k->peers || !k->miss || !k->tagbuf || !k->iq)
        goto fail;
    if ((rc = pk_wrap_ctx_init(&k->wrap, cfg->kek)) != PK_OK)
        goto fail;
    rc = pk_store_migrate(k->st, "kms", kms_migrations,
                          sizeof kms_migrations / sizeof kms_migrations[0]);
    if (rc != PK_OK)
        goto fail;
    *out = k;
    return PK_OK;
fail:
    pk_kms_free(k);
    return rc;
}

static void intents_free(struct kms_intent **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!v[i])
            continue;
        pk_wipe(v[i], sizeof *v[i] + v[i]->n * sizeof v[i]->c[0]);
        free(v[i]);
        v[i] = NULL;
    }
}

void pk_kms_free(pk_kms_t *k)
{
    if (!k)
        return;
    if (k->cache) {
        pk_wipe(k->cache, k->nslots * sizeof *k->cache);
        free(k->cache);
    }
    free(k->q);
    free(k->qlen);
    free(k->peers);
    free(k->miss);
    free(k->tagbuf);
    if (k->iq) {
        intents_free(k->iq, k->in);
        free(k->iq);
    }
    pk_wrap_ctx_clear(&k->wrap);
    pk_kdf_clear(&k->kdf);
    free(k);
}

const pk_kms_stats_t *pk_kms_stats(const pk_kms_t *k)
{
    return &k->stats;
}

/* ------------------------------------------------------------ requests */

uint8_t pk_kms_status_of(int err)
{
    switch (err) {
    case PK_OK: return PK_REG_ST_OK;
    case PK_ERR_MALFORMED: return PK_KMS_ST_MALFORMED;
    case PK_ERR_DENIED: return PK_REG_ST_DENIED;
    case PK_ERR_NOTFOUND: return PK_REG_ST_UNKNOWN;
    case PK_ERR_LIMIT:
    case PK_ERR_BUSY:
    case PK_ERR_IO:
    case PK_ERR_TIMEOUT: return PK_KMS_ST_BUSY;
    case PK_ERR_EXPIRED: return PK_KMS_ST_EXHAUSTED;
    default: return PK_KMS_ST_ERROR;
    }
}

size_t pk_kms_err_frame(int err, uint8_t req_type, size_t req_len, uint8_t *resp, size_t cap)
{
    if (req_len < PK_KMS_REQ_MIN || cap < PK_KMS_ERR_LEN)
        return 0;
    resp[0] = PK_KMS_T_ERR;
    resp[1] = pk_kms_status_of(err);
    resp[2] = req_type;
    return PK_KMS_ERR_LEN;
}

static int do_vec(pk_kms_t *k, const pk_reg_id_t *node, const pk_reg_net_t *m, uint64_t now_ms,
                  uint8_t *resp, size_t cap, size_t *resp_len)
{
    const struct kms_cache_ent *e = NULL;
    pk_reg_net_t r;
    int rc;
    if (!pk_reg_id_eq(node, &m->a))
        return PK_ERR_DENIED; /* a node asks only in its own name */
    if (k->qn >= k->qmax)
        return PK_ERR_LIMIT;
    if ((rc = dev_cached(k, &m->b, now_ms, &e)) != PK_OK)
        return rc;
    memset(&r, 0, sizeof r);
    r.type = PK_REG_T_KMS_VEC_RESP;
    r.status = PK_REG_ST_OK;
    rc = pk_reg_kms_vector_cx(&k->kdf, e->k, e->klen, k->rng, m->nonce_d, &m->b, node, &r.vec);
    if (rc == PK_OK)
        rc = pk_reg_net_encode(&r, resp, cap, resp_len);
    if (rc == PK_OK)
        rc = queue_audit(k, PK_KMS_A_VECTOR, now_ms, 0, 1, node, &m->b, NULL);
    if (rc == PK_OK)
        k->stats.vectors++;
    pk_wipe(&r, sizeof r);
    return rc;
}

/* ---- KEYS ---- */

struct keys_ctx {
    pk_kms_t *k;
    const pk_reg_id_t *dev, *node;
    uint64_t now_ms;
    int write;
    int collect; /* group_writes: gather what is missing instead */
    pk_reg_keyset_t ks;
    pk_reg_id_t pool;
    pk_reg_id_t domain; /* the device's domain (len 0: none) */
    /* collect: the peers whose pair has no root key, and whether the
     * directory must name this node */
    unsigned nmiss;
    int set_dir;
    pk_reg_id_t *miss; /* k->miss: PK_REG_PEERS_MAX, no secrets */
    /* paging (a KMS_KEYS_REQ with a cursor): the page holds the set's
     * entries after `after`; the tag is over the whole set (kms.h) */
    int paged;
    const pk_reg_id_t *after;
    size_t taglen;
    uint8_t *tagbuf; /* k->tagbuf: TAGBUF_MAX, public (peer ids and KSIs) */
};

/* The set's tag: the first PK_REG_TAG_LEN bytes of SHA-256 over blk(peer) ||
 * KSI(4) of every key of the set in peer order (pool: KSI(4) of each key). */
static int keys_tag(struct keys_ctx *c)
{
    uint8_t h[PK_SHA256_LEN];
    int rc = pk_sha256(c->tagbuf, c->taglen, h);
    if (rc == PK_OK)
        memcpy(c->ks.tag, h, PK_REG_TAG_LEN);
    c->ks.paged = (uint8_t)c->paged;
    return rc;
}

/* Fills ks with the device's root keys per pair - the page after c->after
 * when paged, else the first PK_REG_MAX_KEYS - over the whole set (the
 * first PK_REG_PEERS_MAX peers that exist in mode pairs): creates missing
 * ones when c->write, notes them in c->miss when c->collect, else returns
 * NEED_WRITE at the first one. */
static int keys_pairs(struct keys_ctx *c, pk_txn_t *txn)
{
    pk_kms_t *k = c->k;
    size_t np = 0;
    int rc = kms_peers(k, txn, c->dev, &np);
    if (rc != PK_OK)
        return rc;
    c->ks.mode = PK_REG_MODE_PAIRS;
    c->taglen = 0;
    size_t members = 0;
    for (size_t i = 0; i < np && members < PK_REG_PEERS_MAX; i++) {
        kms_dev_t pd;
        rc = kms_dev_get(k, txn, &k->peers[i], 0, &pd);
        if (rc == PK_ERR_NOTFOUND || (rc == PK_OK && pd.mode != PK_REG_MODE_PAIRS))
            continue; /* a peer not (yet) a device in mode pairs gets no key */
        if (rc != PK_OK)
            return rc;
        uint8_t pk[PAIR_MAX], val[4 + 8 + SEALED_KEY];
        size_t pl = kms_pair(pk, c->dev, &k->peers[i]), vl = 0;
        rc = pk_txn_get(txn, B_ROOT, pk, pl, val, sizeof val, &vl);
        if (rc == PK_ERR_NOTFOUND && c->collect) {
            c->miss[c->nmiss++] = k->peers[i];
            members++;
            continue;
        }
        if (rc == PK_ERR_NOTFOUND) {
            if (!c->write)
                return NEED_WRITE;
            uint64_t id = 0;
            uint8_t kd[KEY_LEN];
            size_t sl = 0;
            if ((rc = pk_txn_next_id(txn, S_KSI, &id)) != PK_OK)
                return rc;
            if (id > UINT32_MAX)
                return PK_ERR_LIMIT;
            rc = pk_rng_fill(k->rng, kd, KEY_LEN);
            pk_put_u32(val, (uint32_t)id);
            pk_put_u64(val + 4, c->now_ms);
            if (rc == PK_OK)
                rc = pk_wrap_ctx_seal(&k->wrap, k->rng, B_ROOT, pk, pl, kd, KEY_LEN, val + 12,
                                      SEALED_KEY, &sl);
            pk_wipe(kd, sizeof kd);
            if (rc == PK_OK)
                rc = pk_txn_insert(txn, B_ROOT, pk, pl, val, 12 + sl);
            if (rc != PK_OK)
                return rc;
            vl = 12 + sl;
            k->stats.root_keys_created++;
        } else if (rc != PK_OK) {
            return rc == PK_ERR_SPACE ? PK_ERR_MALFORMED : rc;
        }
        if (vl != 12 + SEALED_KEY)
            return PK_ERR_MALFORMED;
        members++;
        c->taglen += kms_blk(c->tagbuf + c->taglen, &k->peers[i]);
        memcpy(c->tagbuf + c->taglen, val, 4);
        c->taglen += 4;
        if (c->paged && pk_reg_id_cmp(&k->peers[i], c->after) <= 0)
            continue; /* on an earlier page */
        if (c->ks.n >= PK_REG_MAX_KEYS) {
            c->ks.more = 1; /* on a later page */
            continue;
        }
        pk_reg_key_t *e = &c->ks.k[c->ks.n];
        size_t ol = 0;
        rc = pk_wrap_ctx_open(&k->wrap, B_ROOT, pk, pl, val + 12, SEALED_KEY, e->key, KEY_LEN, &ol);
        if (rc != PK_OK)
            return rc;
        e->ksi = pk_get_u32(val);
        e->peer = k->peers[i];
        c->ks.n++;
    }
    c->ks.total = (uint16_t)members;
    return keys_tag(c);
}

/* The pool's key set: its first PK_REG_MAX_KEYS keys in KSI order (one scan
 * page, whatever the number of allocations made). */
struct poolcol {
    size_t plen;
    uint32_t ksi[PK_REG_MAX_KEYS];
    uint8_t sealed[PK_REG_MAX_KEYS][SEALED_KEY];
    size_t n;
};

static int poolcol_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct poolcol *c = ctx;
    if (klen != c->plen + 4 || vlen != SEALED_KEY || c->n >= PK_REG_MAX_KEYS)
        return PK_ERR_MALFORMED;
    c->ksi[c->n] = pk_get_u32(key + c->plen);
    memcpy(c->sealed[c->n], val, vlen);
    c->n++;
    return 0;
}

/* Option 2: every device of a pool gets the same fixed key set (kms.h), so
 * a re-registration never changes the keys a pair's KSI maps to. Read-only. */
static int keys_pool(struct keys_ctx *c, pk_txn_t *txn, const pk_reg_id_t *pool)
{
    pk_kms_t *k = c->k;
    struct poolcol pc;
    uint8_t pre[BLK_MAX], rk[BLK_MAX + 4];
    size_t prl = kms_blk(pre, pool);
    c->ks.mode = PK_REG_MODE_POOL;
    memset(&pc, 0, sizeof pc);
    pc.plen = prl;
    int rc = pk_txn_scan(txn, B_POOLKEY, pre, prl, NULL, 0, PK_REG_MAX_KEYS, poolcol_cb, &pc);
    memcpy(rk, pre, prl);
    for (size_t i = 0; rc == PK_OK && i < pc.n; i++) {
        pk_reg_key_t *e = &c->ks.k[c->ks.n];
        size_t ol = 0;
        pk_put_u32(rk + prl, pc.ksi[i]);
        rc = pk_wrap_ctx_open(&k->wrap, B_POOLKEY, rk, prl + 4, pc.sealed[i], SEALED_KEY, e->key,
                              KEY_LEN, &ol);
        if (rc == PK_OK && ol != KEY_LEN)
            rc = PK_ERR_MALFORMED;
        if (rc == PK_OK) {
            e->ksi = pc.ksi[i];
            c->ks.n++;
            memcpy(c->tagbuf + 4 * i, rk + prl, 4);
        }
    }
    pk_wipe(&pc, sizeof pc);
    c->ks.total = c->ks.n; /* one page: the pool's set is fixed and small */
    c->taglen = 4 * c->ks.n;
    if (rc == PK_OK)
        rc = keys_tag(c);
    if (rc != PK_OK)
        return rc;
    return c->ks.n == 0 ? PK_ERR_EXPIRED : PK_OK; /* a pool without keys */
}

static int keys_fn(pk_txn_t *txn, void *ctx)
{
    struct keys_ctx *c = ctx;
    kms_dev_t d;
    pk_wipe(&c->ks, sizeof c->ks);
    c->nmiss = 0;
    c->set_dir = 0;
    int rc = kms_dev_get(c->k, txn, c->dev, 0, &d);
    if (rc != PK_OK)
        return rc;
    c->pool = d.pool;
    if (d.mode == PK_REG_MODE_PAIRS)
        rc = keys_pairs(c, txn);
    else if (d.mode == PK_REG_MODE_POOL)
        rc = keys_pool(c, txn, &d.pool);
    else
        rc = PK_ERR_MALFORMED;
    if (rc != PK_OK)
        return rc;
    /* the master keys of the device's domain (Toshiba; domain.c): with the
     * first page only */
    if ((!c->paged || c->after->len == 0) &&
        (rc = kms_mk_fill(c->k, txn, c->dev, c->now_ms, &c->ks.mk, &c->domain)) != PK_OK)
        return rc;
    /* the directory: this node now serves the device */
    uint8_t dk[BLK_MAX], val[BLK_MAX + 8];
    size_t dl = kms_blk(dk, c->dev), vl = 0;
    rc = pk_txn_get(txn, B_DIR, dk, dl, val, sizeof val, &vl);
    if (rc == PK_OK && vl == (size_t)c->node->len + 1 + 8 && val[0] == c->node->len &&
        memcmp(val + 1, c->node->b, c->node->len) == 0)
        return c->nmiss ? NEED_WRITE : PK_OK;
    if (rc != PK_OK && rc != PK_ERR_NOTFOUND && rc != PK_ERR_SPACE)
        return rc;
    c->set_dir = 1;
    if (!c->write)
        return NEED_WRITE;
    vl = kms_blk(val, c->node);
    pk_put_u64(val + vl, c->now_ms);
    return pk_txn_put(txn, B_DIR, dk, dl, val, vl + 8);
}

/* group_writes: the writes c's read found missing, as an intent in the
 * open batch (kms.h "Durability"): each missing pair gets a fresh candidate
 * K_D, sealed at once for its kms_root row; the KSI is taken at commit.
 * PK_KMS_DEFER (also when the batch is full: nothing queued then), or an
 * error. */
static int queue_intent(pk_kms_t *k, const struct keys_ctx *c)
{
    uint8_t kd[KEY_LEN], pk[PAIR_MAX];
    int rc = PK_OK;
    k->stats.deferred++;
    if (k->in >= k->imax)
        return PK_KMS_DEFER; /* bounded group: wait for this batch, then queue */
    struct kms_intent *it = calloc(1, sizeof *it + c->nmiss * sizeof it->c[0]);
    if (!it)
        return PK_ERR_NOMEM;
    it->dev = *c->dev;
    it->node = *c->node;
    it->now_ms = c->now_ms;
    it->set_dir = (uint8_t)c->set_dir;
    for (unsigned i = 0; rc == PK_OK && i < c->nmiss; i++) {
        size_t pl = kms_pair(pk, c->dev, &c->miss[i]), sl = 0;
        rc = pk_rng_fill(k->rng, kd, KEY_LEN);
        if (rc == PK_OK)
            rc = pk_wrap_ctx_seal(&k->wrap, k->rng, B_ROOT, pk, pl, kd, KEY_LEN, it->c[i].sealed,
                                  SEALED_KEY, &sl);
        if (rc == PK_OK && sl != SEALED_KEY)
            rc = PK_ERR_STATE;
        it->c[i].peer = c->miss[i];
        it->n = i + 1;
    }
    pk_wipe(kd, sizeof kd);
    if (rc != PK_OK) {
        pk_wipe(it, sizeof *it + c->nmiss * sizeof it->c[0]);
        free(it);
        return rc;
    }
    k->iq[k->in++] = it;
    k->stats.intents++;
    return PK_KMS_DEFER;
}

static int do_keys(pk_kms_t *k, const pk_reg_id_t *node, const pk_reg_net_t *m, uint64_t now_ms,
                   uint8_t *resp, size_t cap, size_t *resp_len)
{
    struct keys_ctx *c = calloc(1, sizeof *c);
    pk_reg_net_t *r = calloc(1, sizeof *r);
    int rc = PK_ERR_NOMEM;
    if (!c || !r)
        goto out;
    c->k = k;
    c->dev = &m->a;
    c->node = node;
    c->now_ms = now_ms;
    c->collect = k->group;
    c->miss = k->miss;
    c->tagbuf = k->tagbuf;
    c->paged = m->paged;
    c->after = &m->after;
    rc = pk_store_run_read(k->st, keys_fn, c, STORE_TRIES);
    if (rc == NEED_WRITE && k->group) {
        rc = queue_intent(k, c);
        goto out;
    }
    if (rc == NEED_WRITE) {
        c->write = 1;
        rc = pk_store_run(k->st, keys_fn, c, STORE_TRIES);
    }
    if (rc != PK_OK)
        goto out;
    unsigned nrec = (c->ks.mode == PK_REG_MODE_PAIRS ? c->ks.n : 1) + c->ks.mk.n;
    if (k->qmax - k->qn < nrec) {
        rc = PK_ERR_LIMIT;
        goto out;
    }
    r->type = PK_REG_T_KMS_KEYS_RESP;
    r->status = PK_REG_ST_OK;
    r->keys = c->ks;
    if ((rc = pk_reg_net_encode(r, resp, cap, resp_len)) != PK_OK)
        goto out;
    if (c->ks.mode == PK_REG_MODE_PAIRS) {
        for (unsigned i = 0; i < c->ks.n; i++)
            (void)queue_audit(k, PK_KMS_A_ROOT_KEY, now_ms, c->ks.k[i].ksi, 1, node, &m->a,
                              &c->ks.k[i].peer);
        k->stats.root_keys_issued += c->ks.n;
    } else {
        (void)queue_audit(k, PK_KMS_A_POOL_KEYS, now_ms, c->ks.k[0].ksi, c->ks.n, node, &m->a,
                          &c->pool);
        k->stats.pool_keys_issued += c->ks.n;
    }
    for (unsigned i = 0; i < c->ks.mk.n; i++)
        (void)queue_audit(k, PK_KMS_A_MASTER_KEY, now_ms, c->ks.mk.k[i].id, 1, node, &m->a,
                          &c->domain);
    k->stats.master_keys_issued += c->ks.mk.n;
out:
    if (c)
        pk_wipe(c, sizeof *c);
    if (r)
        pk_wipe(r, sizeof *r);
    free(c);
    free(r);
    if (rc != PK_OK) {
        pk_wipe(resp, cap < PK_KMS_RESP_MAX ? cap : PK_KMS_RESP_MAX);
        *resp_len = 0;
    }
    return rc;
}

/* ---- MK (master-key refresh of a registered device) ---- */

struct mk_ctx {
    pk_kms_t *k;
    const pk_reg_id_t *dev;
    uint64_t now_ms;
    pk_reg_mkset_t mk;
    pk_reg_id_t domain;
};

static int mk_fn(pk_txn_t *txn, void *ctx)
{
    struct mk_ctx *c = ctx;
    kms_dev_t d;
    int rc = kms_dev_get(c->k, txn, c->dev, 0, &d);
    if (rc == PK_OK)
        rc = kms_mk_fill(c->k, txn, c->dev, c->now_ms, &c->mk, &c->domain);
    return rc;
}

static int do_mk(pk_kms_t *k, const pk_reg_id_t *node, const pk_kms_msg_t *m, uint64_t now_ms,
                 uint8_t *resp, size_t cap, size_t *resp_len)
{
    struct mk_ctx c = {.k = k, .dev = &m->id, .now_ms = now_ms};
    pk_kms_msg_t r;
    int rc;
    memset(&r, 0, sizeof r);
    rc = pk_store_run_read(k->st, mk_fn, &c, STORE_TRIES);
    if (rc == PK_OK && k->qmax - k->qn < c.mk.n)
        rc = PK_ERR_LIMIT;
    if (rc == PK_OK) {
        r.type = PK_KMS_T_MK_RESP;
        r.mk = c.mk;
        rc = pk_kms_msg_encode(&r, resp, cap, resp_len);
    }
    if (rc == PK_OK) {
        for (unsigned i = 0; i < c.mk.n; i++)
            (void)queue_audit(k, PK_KMS_A_MASTER_KEY, now_ms, c.mk.k[i].id, 1, node, &m->id,
                              &c.domain);
        k->stats.master_keys_issued += c.mk.n;
    }
    pk_wipe(&c, sizeof c);
    pk_wipe(&r, sizeof r);
    return rc;
}

/* ---- ALLOC ---- */

struct alloc_ctx {
    pk_kms_t *k;
    const pk_reg_id_t *a, *b, *node;
    uint64_t now_ms;
    uint32_t fresh; /* the next leased KSI (0: none) */
    int used_fresh; /* 1 when the allocation took it */
    uint32_t ksi;
};

/* Takes KSI_LEASE identifiers from kms_ksi in one committed transaction:
 * once committed they are this instance's alone (no other instance or
 * restart gets them), so allocations need not touch the sequence's row - the
 * one row every instance would otherwise update for every allocation. A
 * lease lost with the process leaves a gap; a KSI is still never reused. */
static int lease_fn(pk_txn_t *txn, void *ctx)
{
    pk_kms_t *k = ctx;
    k->nlease = k->lease_i = 0;
    for (unsigned i = 0; i < KSI_LEASE; i++) {
        uint64_t id = 0;
        int rc = pk_txn_next_id(txn, S_KSI, &id);
        if (rc != PK_OK)
            return rc;
        if (id == 0 || id > UINT32_MAX)
            break; /* the 32-bit KSI space is used up */
        k->lease[k->nlease++] = (uint32_t)id;
    }
    return k->nlease ? PK_OK : PK_ERR_EXPIRED;
}

/*
 * What every allocation checks first, in txn, whichever path makes it (the
 * request's own transaction, the group-commit read, the batch's commit):
 * two different devices, both in mode pool, of one pool, the pair allowed.
 * Then the pair's KSI from kms_pairalloc into *ksi (0: the pair has none).
 * PK_OK, PK_ERR_DENIED, PK_ERR_NOTFOUND (a device), PK_ERR_MALFORMED (a
 * corrupt allocation row: refused rather than guessed), store errors.
 */
static int alloc_check(pk_txn_t *txn, const pk_reg_id_t *a, const pk_reg_id_t *b, uint32_t *ksi)
{
    kms_dev_t da, db;
    uint8_t pk[PAIR_MAX], cur[4];
    size_t pl = kms_pair(pk, a, b), vl = 0;
    int rc;
    *ksi = 0;
    if (pk_reg_id_eq(a, b))
        return PK_ERR_DENIED;
    /* no unwrap (with_key 0): kms_dev_get does not use the pk_kms_t */
    if ((rc = kms_dev_get(NULL, txn, a, 0, &da)) != PK_OK ||
        (rc = kms_dev_get(NULL, txn, b, 0, &db)) != PK_OK)
        return rc;
    if (da.mode != PK_REG_MODE_POOL || db.mode != PK_REG_MODE_POOL ||
        !pk_reg_id_eq(&da.pool, &db.pool))
        return PK_ERR_DENIED;
    if ((rc = kms_allowed(txn, a, b)) != 1)
        return rc < 0 ? rc : PK_ERR_DENIED;
    rc = pk_txn_get(txn, B_PAIRALLOC, pk, pl, cur, sizeof cur, &vl);
    if (rc == PK_ERR_NOTFOUND)
        return PK_OK;
    if (rc != PK_OK)
        return rc == PK_ERR_SPACE ? PK_ERR_MALFORMED : rc;
    if (vl != 4 || pk_get_u32(cur) == 0)
        return PK_ERR_MALFORMED;
    *ksi = pk_get_u32(cur);
    return PK_OK;
}

/*
 * Claims ksi for the pair (a, b) in txn, after alloc_check found it has
 * none: the KSI's row in kms_alloc (an insert: PK_ERR_EXISTS, nothing
 * written, when the KSI was claimed before - never, the sequence does not
 * repeat; the caller skips it), then the pair's row in kms_pairalloc (an
 * insert: the pair had a KSI after all is PK_ERR_STATE, which fails the
 * transaction), then the POOL_ALLOC audit record.
 */
static int alloc_claim(pk_txn_t *txn, const pk_reg_id_t *a, const pk_reg_id_t *b,
                       const pk_reg_id_t *node, uint64_t now_ms, uint32_t ksi)
{
    uint8_t pk[PAIR_MAX], v[PAIR_MAX + 8], ak[4];
    size_t pl = kms_pair(pk, a, b);
    pk_put_u32(ak, ksi);
    memcpy(v, pk, pl);
    pk_put_u64(v + pl, now_ms);
    int rc = pk_txn_insert(txn, B_ALLOC, ak, 4, v, pl + 8);
    if (rc != PK_OK)
        return rc;
    rc = pk_txn_insert(txn, B_PAIRALLOC, pk, pl, ak, 4);
    if (rc == PK_ERR_EXISTS)
        return PK_ERR_STATE;
    if (rc != PK_OK)
        return rc;
    return kms_audit_append(txn, PK_KMS_A_POOL_ALLOC, now_ms, ksi, 1, node, a, b);
}

/*
 * One allocation without group_writes (kms.h, "Option 2"): the pair's KSI
 * when it has one, else a fresh identifier from the kms_ksi sequence
 * (leased, lease_fn), claimed (alloc_claim), with its audit record, in one
 * transaction. O(1) store operations whatever the number of allocations.
 */
static int alloc_fn(pk_txn_t *txn, void *ctx)
{
    struct alloc_ctx *c = ctx;
    int rc = alloc_check(txn, c->a, c->b, &c->ksi);
    if (rc != PK_OK)
        return rc;
    c->used_fresh = 0;
    if (c->ksi != 0) /* the pair's KSI: both devices hold the pool's fixed key set,
                      * so it stays valid across re-registrations (a fresh param
                      * still comes with it) */
        return kms_audit_append(txn, PK_KMS_A_POOL_ALLOC, c->now_ms, c->ksi, 1, c->node, c->a,
                                c->b);
    if (c->fresh == 0)
        return PK_ERR_STATE; /* do_alloc leases first */
    c->ksi = c->fresh;
    c->used_fresh = 1;
    rc = alloc_claim(txn, c->a, c->b, c->node, c->now_ms, c->ksi);
    return rc == PK_ERR_EXISTS ? PK_ERR_STATE : rc; /* do_alloc skips that KSI */
}

/* group_writes: the checks and the pair's KSI, read only. */
static int alloc_read_fn(pk_txn_t *txn, void *ctx)
{
    struct alloc_ctx *c = ctx;
    return alloc_check(txn, c->a, c->b, &c->ksi);
}

/* group_writes: the allocation the read found missing, as an intent in the
 * open batch (kms.h "Durability"); the KSI is taken at commit. One intent
 * per pair and batch: a request for a pair that already has one in the open
 * batch waits for it. PK_KMS_DEFER (also when the batch is full: nothing
 * queued then), or PK_ERR_NOMEM. */
static int queue_alloc_intent(pk_kms_t *k, const struct alloc_ctx *c)
{
    k->stats.deferred++;
    for (size_t i = 0; i < k->in; i++) {
        const struct kms_intent *o = k->iq[i];
        if (o->kind == KMS_INTENT_ALLOC &&
            ((pk_reg_id_eq(&o->dev, c->a) && pk_reg_id_eq(&o->peer, c->b)) ||
             (pk_reg_id_eq(&o->dev, c->b) && pk_reg_id_eq(&o->peer, c->a))))
            return PK_KMS_DEFER;
    }
    if (k->in >= k->imax)
        return PK_KMS_DEFER; /* bounded group: wait for this batch, then queue */
    struct kms_intent *it = calloc(1, sizeof *it);
    if (!it)
        return PK_ERR_NOMEM;
    it->kind = KMS_INTENT_ALLOC;
    it->dev = *c->a;
    it->peer = *c->b;
    it->node = *c->node;
    it->now_ms = c->now_ms;
    k->iq[k->in++] = it;
    k->stats.intents++;
    return PK_KMS_DEFER;
}

static int do_alloc(pk_kms_t *k, const pk_reg_id_t *node, const pk_reg_net_t *m, uint64_t now_ms,
                    uint8_t *resp, size_t cap, size_t *resp_len)
{
    struct alloc_ctx c = {.k = k, .a = &m->a, .b = &m->b, .node = node, .now_ms = now_ms};
    pk_reg_net_t r;
    memset(&r, 0, sizeof r);
    int rc = PK_OK;
    if (k->group) {
        /* answered only from a committed allocation, its record queued (the
         * answer waits for its batch); a missing one becomes an intent */
        if (k->qn >= k->qmax)
            return PK_ERR_LIMIT;
        rc = pk_store_run_read(k->st, alloc_read_fn, &c, STORE_TRIES);
        if (rc == PK_OK && c.ksi == 0)
            return queue_alloc_intent(k, &c);
    } else {
        if (k->lease_i >= k->nlease)
            rc = pk_store_run(k->st, lease_fn, k, STORE_TRIES);
        if (rc != PK_OK) {
            k->nlease = k->lease_i = 0;
            return rc;
        }
        c.fresh = k->lease[k->lease_i];
        rc = pk_store_run(k->st, alloc_fn, &c, STORE_TRIES);
        if ((rc == PK_OK && c.used_fresh) || rc == PK_ERR_STATE)
            k->lease_i++; /* taken (or, never, found claimed: skipped) */
    }
    if (rc != PK_OK)
        return rc;
    r.type = PK_REG_T_KMS_ALLOC_RESP;
    r.status = PK_REG_ST_OK;
    r.ksi = c.ksi;
    rc = pk_rng_fill(k->rng, r.param, PK_REG_PARAM_LEN);
    if (rc == PK_OK)
        rc = pk_reg_net_encode(&r, resp, cap, resp_len);
    if (rc == PK_OK && k->group)
        rc = queue_audit(k, PK_KMS_A_POOL_ALLOC, now_ms, c.ksi, 1, node, &m->a, &m->b);
    if (rc == PK_OK)
        k->stats.allocs++;
    pk_wipe(&r, sizeof r);
    return rc;
}

/* ---- DIR ---- */

struct dir_ctx {
    const pk_reg_id_t *dev;
    pk_reg_id_t node;
};

static int dir_fn(pk_txn_t *txn, void *ctx)
{
    struct dir_ctx *c = ctx;
    uint8_t dk[BLK_MAX], val[BLK_MAX + 8];
    size_t dl = kms_blk(dk, c->dev), vl = 0;
    int rc = pk_txn_get(txn, B_DIR, dk, dl, val, sizeof val, &vl);
    if (rc != PK_OK)
        return rc == PK_ERR_SPACE ? PK_ERR_MALFORMED : rc;
    if (vl < 2 + 8 || val[0] != vl - 9)
        return PK_ERR_MALFORMED;
    return pk_reg_id_set(&c->node, val + 1, val[0]);
}

static int do_dir(pk_kms_t *k, const pk_kms_msg_t *m, uint8_t *resp, size_t cap, size_t *resp_len)
{
    struct dir_ctx c = {.dev = &m->id};
    int rc = pk_store_run_read(k->st, dir_fn, &c, STORE_TRIES);
    if (rc != PK_OK)
        return rc;
    pk_kms_msg_t r = {.type = PK_KMS_T_DIR_RESP, .status = PK_REG_ST_OK, .id = c.node};
    rc = pk_kms_msg_encode(&r, resp, cap, resp_len);
    if (rc == PK_OK)
        k->stats.dir_lookups++;
    return rc;
}

int pk_kms_handle(pk_kms_t *k, const char *node_cn, const uint8_t *req, size_t len, uint64_t now_ms,
                  uint8_t *resp, size_t cap, size_t *resp_len)
{
    pk_reg_id_t node;
    pk_reg_net_t *m = NULL;
    int rc;
    uint8_t type = len > 0 && req ? req[0] : 0;

    *resp_len = 0;
    if (!k || !node_cn || !resp || cap < PK_KMS_RESP_MAX)
        return PK_ERR_INVAL;
    if (!req || len < PK_KMS_REQ_MIN || len > PK_REG_NET_MAX) {
        rc = PK_ERR_MALFORMED;
        goto out;
    }
    if (pk_reg_id_set(&node, node_cn, strlen(node_cn)) != PK_OK) {
        rc = PK_ERR_DENIED;
        goto out;
    }
    if (type == PK_KMS_T_DIR_REQ || type == PK_KMS_T_MK_REQ) {
        pk_kms_msg_t dm;
        rc = pk_kms_msg_decode(req, len, &dm);
        if (rc == PK_OK && type == PK_KMS_T_DIR_REQ)
            rc = do_dir(k, &dm, resp, cap, resp_len);
        else if (rc == PK_OK)
            rc = do_mk(k, &node, &dm, now_ms, resp, cap, resp_len);
        goto out;
    }
    if (type != PK_REG_T_KMS_VEC_REQ && type != PK_REG_T_KMS_KEYS_REQ &&
        type != PK_REG_T_KMS_ALLOC_REQ) {
        rc = PK_ERR_MALFORMED;
        goto out;
    }
    if (!(m = malloc(sizeof *m))) {
        rc = PK_ERR_NOMEM;
        goto out;
    }
    if ((rc = pk_reg_net_decode(req, len, m)) != PK_OK)
        goto out;
    switch (type) {
    case PK_REG_T_KMS_VEC_REQ: rc = do_vec(k, &node, m, now_ms, resp, cap, resp_len); break;
    case PK_REG_T_KMS_KEYS_REQ: rc = do_keys(k, &node, m, now_ms, resp, cap, resp_len); break;
    default: rc = do_alloc(k, &node, m, now_ms, resp, cap, resp_len); break;
    }
out:
    if (m) {
        pk_wipe(m, sizeof *m);
        free(m);
    }
    if (rc == PK_KMS_DEFER) /* nothing to send yet (kms.h) */
        return rc;
    if (rc != PK_OK) {
        pk_wipe(resp, cap < PK_KMS_RESP_MAX ? cap : PK_KMS_RESP_MAX);
        *resp_len = pk_kms_err_frame(rc, type, len, resp, cap);
        k->stats.refused++;
    }
    return rc;
}

/* ----------------------------------------------------------- group commit */

struct pk_kms_batch {
    uint64_t number;
    size_t n;
    uint16_t *len;
    uint8_t *rec;
    size_t ni; /* write intents (group_writes) */
    struct kms_intent **iv;
};

size_t pk_kms_pending(const pk_kms_t *k)
{
    return k->qn + k->in;
}
uint64_t pk_kms_batch_gen(const pk_kms_t *k)
{
    return k->gen;
}
uint64_t pk_kms_batch_number(const pk_kms_batch_t *b)
{
    return b->number;
}
size_t pk_kms_batch_count(const pk_kms_batch_t *b)
{
    return b->n;
}

int pk_kms_batch_take(pk_kms_t *k, pk_kms_batch_t **out)
{
    *out = NULL;
    if (k->qn == 0 && k->in == 0)
        return PK_OK;
    pk_kms_batch_t *b = calloc(1, sizeof *b);
    if (!b)
        return PK_ERR_NOMEM;
    b->len = malloc((k->qn ? k->qn : 1) * sizeof *b->len);
    b->rec = malloc((k->qn ? k->qn : 1) * PK_KMS_AUDIT_MAX);
    b->iv = malloc((k->in ? k->in : 1) * sizeof *b->iv);
    if (!b->len || !b->rec || !b->iv) {
        pk_kms_batch_free(b);
        return PK_ERR_NOMEM;
    }
    b->n = k->qn;
    b->number = k->gen++;
    memcpy(b->len, k->qlen, k->qn * sizeof *b->len);
    memcpy(b->rec, k->q, k->qn * PK_KMS_AUDIT_MAX);
    k->qn = 0;
    b->ni = k->in; /* the intents move to the batch */
    memcpy(b->iv, k->iq, k->in * sizeof *b->iv);
    memset(k->iq, 0, k->in * sizeof *k->iq);
    k->in = 0;
    k->stats.batches++;
    k->stats.batched_records += b->n;
    *out = b;
    return PK_OK;
}

/* The errors after which an intent is skipped and the batch goes on: answers
 * about the data (a device removed, a corrupt row, the KSI space used up).
 * Anything else - a failed transaction (BUSY, IO, NOMEM, TIMEOUT) or a bug
 * (INVAL, STATE) - fails the batch. */
static int intent_skippable(int rc)
{
    return rc == PK_ERR_NOTFOUND || rc == PK_ERR_EXISTS || rc == PK_ERR_SPACE ||
           rc == PK_ERR_MALFORMED || rc == PK_ERR_LIMIT || rc == PK_ERR_DENIED;
}

/*
 * One write intent, inside the batch's transaction (kms.h "Durability"):
 * each candidate becomes the pair's root key only if the pair has none, both
 * devices exist in mode pairs and the pair is allowed - all read in this
 * transaction, so of two batches (of one kms or of two instances over one
 * database) racing for a pair exactly one inserts its key and the other
 * finds it (serialisable transactions; the insert is a second guard). The
 * KSI comes from kms_ksi here, so a candidate that loses consumes none.
 * Then the directory entry. Returns PK_OK or the error that stopped it.
 */
static int apply_intent(pk_txn_t *txn, const struct kms_intent *it)
{
    kms_dev_t d, pd;
    uint8_t pk[PAIR_MAX], val[4 + 8 + SEALED_KEY];
    size_t vl = 0;
    /* no unwrap (with_key 0): kms_dev_get does not use the pk_kms_t */
    int rc = kms_dev_get(NULL, txn, &it->dev, 0, &d);
    if (rc != PK_OK)
        return rc; /* removed meanwhile: nothing to write */
    for (unsigned i = 0; i < it->n && d.mode == PK_REG_MODE_PAIRS; i++) {
        const struct kms_cand *cd = &it->c[i];
        size_t pl = kms_pair(pk, &it->dev, &cd->peer);
        rc = pk_txn_get(txn, B_ROOT, pk, pl, NULL, 0, &vl);
        if (rc == PK_OK || rc == PK_ERR_SPACE)
            continue; /* the pair has its key (another request made it first) */
        if (rc != PK_ERR_NOTFOUND)
            return rc;
        rc = kms_dev_get(NULL, txn, &cd->peer, 0, &pd);
        if (rc == PK_ERR_NOTFOUND || (rc == PK_OK && pd.mode != PK_REG_MODE_PAIRS))
            continue;
        if (rc != PK_OK)
            return rc;
        if ((rc = kms_allowed(txn, &it->dev, &cd->peer)) != 1) {
            if (rc < 0)
                return rc;
            continue; /* denied meanwhile */
        }
        uint64_t id = 0;
        if ((rc = pk_txn_next_id(txn, S_KSI, &id)) != PK_OK)
            return rc;
        if (id > UINT32_MAX)
            return PK_ERR_LIMIT;
        pk_put_u32(val, (uint32_t)id);
        pk_put_u64(val + 4, it->now_ms);
        memcpy(val + 12, cd->sealed, SEALED_KEY);
        rc = pk_txn_insert(txn, B_ROOT, pk, pl, val, sizeof val);
        if (rc != PK_OK)
            return rc; /* EXISTS cannot happen after the get above: skip */
    }
    if (!it->set_dir)
        return PK_OK;
    uint8_t dk[BLK_MAX], dv[BLK_MAX + 8];
    size_t dl = kms_blk(dk, &it->dev), dvl = kms_blk(dv, &it->node);
    pk_put_u64(dv + dvl, it->now_ms);
    return pk_txn_put(txn, B_DIR, dk, dl, dv, dvl + 8);
}

/*
 * One allocation intent, inside the batch's transaction: everything the
 * synchronous path checks is checked again here (alloc_check: devices,
 * mode, pool, the pair allowed, its KSI), so a pair denied or a device
 * removed since the request gets nothing, and a pair that has its KSI (an
 * earlier intent of this batch, an earlier batch, another kms instance) gets
 * no second one. Only then a fresh KSI from kms_ksi (a lost intent consumes
 * none), claimed with its audit record (alloc_claim). Serialisable
 * transactions make the check and the claim one step against every other
 * writer of the database; the two inserts are the second guard.
 */
static int apply_alloc_intent(pk_txn_t *txn, const struct kms_intent *it)
{
    uint32_t ksi = 0;
    int rc = alloc_check(txn, &it->dev, &it->peer, &ksi);
    if (rc != PK_OK || ksi != 0)
        return rc; /* refused now (skipped), or the pair has its KSI */
    for (unsigned t = 0; t < KSI_LEASE; t++) {
        uint64_t id = 0;
        if ((rc = pk_txn_next_id(txn, S_KSI, &id)) != PK_OK)
            return rc;
        if (id == 0 || id > UINT32_MAX)
            return PK_ERR_LIMIT; /* the 32-bit KSI space is used up */
        rc = alloc_claim(txn, &it->dev, &it->peer, &it->node, it->now_ms, (uint32_t)id);
        if (rc != PK_ERR_EXISTS)
            return rc;
        /* never: a KSI already claimed (a damaged sequence); the next one */
    }
    return PK_ERR_STATE;
}

static int commit_fn(pk_txn_t *txn, void *ctx)
{
    const pk_kms_batch_t *b = ctx;
    for (size_t i = 0; i < b->ni; i++) {
        const struct kms_intent *it = b->iv[i];
        int rc = it->kind == KMS_INTENT_ALLOC ? apply_alloc_intent(txn, it) : apply_intent(txn, it);
        if (rc != PK_OK && !intent_skippable(rc))
            return rc;
    }
    for (size_t i = 0; i < b->n; i++) {
        int rc =
            pk_txn_append(txn, PK_KMS_AUDIT_LOG, b->rec + i * PK_KMS_AUDIT_MAX, b->len[i], NULL);
        if (rc != PK_OK)
            return rc;
    }
    return PK_OK;
}

int pk_kms_batch_commit(pk_store_t *s, const pk_kms_batch_t *b)
{
    if (!s || !b)
        return PK_ERR_INVAL;
    return pk_store_run(s, commit_fn, (void *)b, STORE_TRIES);
}

void pk_kms_batch_free(pk_kms_batch_t *b)
{
    if (!b)
        return;
    free(b->len);
    free(b->rec);
    if (b->iv) {
        intents_free(b->iv, b->ni);
        free(b->iv);
    }
    free(b);
}

int pk_kms_flush(pk_kms_t *k)
{
    pk_kms_batch_t *b = NULL;
    int rc = pk_kms_batch_take(k, &b);
    if (rc != PK_OK || !b)
        return rc;
    rc = pk_kms_batch_commit(k->st, b);
    pk_kms_batch_free(b);
    return rc;
}
