/* kms admin operations: devices, allowed lists, groups, pools, audit (kms.h). */
#include <stdlib.h>
#include <string.h>

#include "proto/kms/kms_impl.h"

static const pk_reg_id_t admin_node = {.len = 5, .b = "admin"};

static int id_of(pk_reg_id_t *id, const char *s)
{
    if (!s)
        return PK_ERR_INVAL;
    return pk_reg_id_set(id, s, strlen(s)) == PK_OK ? PK_OK : PK_ERR_INVAL;
}

/* ---- devices ---- */

struct dev_add {
    pk_kms_t *k;
    pk_reg_id_t id, pool;
    uint8_t mode, klen;
    const uint8_t *key;
    uint64_t now_ms;
};

static int dev_add_fn(pk_txn_t *txn, void *ctx)
{
    struct dev_add *c = ctx;
    uint8_t dk[BLK_MAX], val[DEV_VAL_MAX];
    size_t dl = kms_blk(dk, &c->id), vl = 0, sl = 0;
    int rc;
    if (c->mode == PK_REG_MODE_POOL) {
        uint8_t pk[BLK_MAX];
        size_t pl = kms_blk(pk, &c->pool), ol = 0;
        rc = pk_txn_get(txn, B_POOL, pk, pl, NULL, 0, &ol);
        if (rc != PK_ERR_SPACE && rc != PK_OK)
            return rc;
    }
    val[vl++] = 1;
    val[vl++] = c->mode;
    pk_put_u64(val + vl, c->now_ms);
    vl += 8;
    vl += c->mode == PK_REG_MODE_POOL ? kms_blk(val + vl, &c->pool) : (val[vl] = 0, 1);
    rc = pk_wrap_ctx_seal(&c->k->wrap, c->k->rng, B_DEV, dk, dl, c->key, c->klen, val + vl,
                          sizeof val - vl, &sl);
    if (rc == PK_OK)
        rc = pk_txn_insert(txn, B_DEV, dk, dl, val, vl + sl);
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_DEVICE_ADD, c->now_ms, 0, 0, &admin_node, &c->id,
                              c->mode == PK_REG_MODE_POOL ? &c->pool : NULL);
    return rc;
}

int pk_kms_device_add(pk_kms_t *k, const char *id, const uint8_t *key, size_t klen, uint8_t mode,
                      const char *pool, uint64_t now_ms, uint8_t gen_key[32])
{
    struct dev_add c = {.k = k, .mode = mode, .now_ms = now_ms};
    uint8_t fresh[32];
    int rc;
    if (!k || id_of(&c.id, id) != PK_OK)
        return PK_ERR_INVAL;
    if (mode == PK_REG_MODE_POOL) {
        if (id_of(&c.pool, pool) != PK_OK)
            return PK_ERR_INVAL;
    } else if (mode != PK_REG_MODE_PAIRS || pool) {
        return PK_ERR_INVAL;
    }
    if (key) {
        if (klen != 16 && klen != 32)
            return PK_ERR_INVAL;
        c.key = key;
        c.klen = (uint8_t)klen;
    } else {
        if ((rc = pk_rng_fill(k->rng, fresh, sizeof fresh)) != PK_OK)
            goto out;
        c.key = fresh;
        c.klen = 32;
    }
    rc = pk_store_run(k->st, dev_add_fn, &c, STORE_TRIES);
    if (rc == PK_OK && !key && gen_key)
        memcpy(gen_key, fresh, 32);
    kms_cache_drop(k, &c.id);
out:
    pk_wipe(fresh, sizeof fresh);
    return rc;
}

struct dev_rm {
    pk_kms_t *k;
    pk_reg_id_t id;
    uint64_t now_ms;
};

/* Removes a device and everything that names it (kms.h). */
static int dev_rm_fn(pk_txn_t *txn, void *ctx)
{
    struct dev_rm *c = ctx;
    pk_kms_t *k = c->k;
    uint8_t dk[BLK_MAX], key[2 * BLK_MAX];
    size_t dl = kms_blk(dk, &c->id), np = 0;
    kms_dev_t d;
    int rc = kms_dev_get(k, txn, &c->id, 0, &d);
    if (rc != PK_OK)
        return rc;
    /* the peers it may currently talk to: their root keys may go */
    if ((rc = kms_peers(k, txn, &c->id, &np)) != PK_OK)
        return rc;
    pk_reg_id_t *peers = malloc((np ? np : 1) * sizeof *peers);
    if (!peers)
        return PK_ERR_NOMEM;
    memcpy(peers, k->peers, np * sizeof *peers);
    /* explicit allows */
    for (size_t i = 0; rc == PK_OK && i < np; i++) {
        uint8_t pk[PAIR_MAX];
        size_t pl = kms_pair(pk, &c->id, &peers[i]), kl;
        rc = pk_txn_del(txn, B_ALLOW, pk, pl);
        if (rc == PK_ERR_NOTFOUND) {
            rc = PK_OK;
            continue;
        }
        kl = kms_blk(key, &c->id);
        kl += kms_blk(key + kl, &peers[i]);
        if (rc == PK_OK)
            rc = pk_txn_del(txn, B_PEER, key, kl);
        kl = kms_blk(key, &peers[i]);
        kl += kms_blk(key + kl, &c->id);
        if (rc == PK_OK)
            rc = pk_txn_del(txn, B_PEER, key, kl);
    }
    /* group memberships */
    pk_reg_id_t groups[64];
    size_t ng = 0;
    for (unsigned round = 0; rc == PK_OK && round < 1024; round++) {
        ng = 0; /* re-scan from the start: entries are deleted as we go */
        rc = kms_scan_ids(txn, B_GRPM, dk, dl, groups, &ng, 64);
        if (rc != PK_OK || ng == 0)
            break;
        for (size_t i = 0; rc == PK_OK && i < ng; i++) {
            size_t kl = kms_blk(key, &groups[i]);
            kl += kms_blk(key + kl, &c->id);
            rc = pk_txn_del(txn, B_GRP, key, kl);
            kl = kms_blk(key, &c->id);
            kl += kms_blk(key + kl, &groups[i]);
            if (rc == PK_OK || rc == PK_ERR_NOTFOUND)
                rc = pk_txn_del(txn, B_GRPM, key, kl);
        }
    }
    /* root keys of pairs no longer allowed (all of them: the device is gone) */
    for (size_t i = 0; rc == PK_OK && i < np; i++) {
        uint8_t pk[PAIR_MAX];
        size_t pl = kms_pair(pk, &c->id, &peers[i]);
        rc = pk_txn_del(txn, B_ROOT, pk, pl);
        if (rc == PK_ERR_NOTFOUND)
            rc = PK_OK;
    }
    free(peers);
    if (rc != PK_OK)
        return rc;
    rc = pk_txn_del(txn, B_DEV, dk, dl);
    if (rc == PK_OK) {
        int r2 = pk_txn_del(txn, B_DIR, dk, dl);
        if (r2 == PK_OK || r2 == PK_ERR_NOTFOUND)
            r2 = pk_txn_del(txn, B_WIN, dk, dl);
        rc = (r2 == PK_OK || r2 == PK_ERR_NOTFOUND) ? PK_OK : r2;
    }
    if (rc == PK_OK)
        rc = kms_domain_forget(txn, &c->id); /* domain membership (domain.c) */
    if (rc == PK_OK)
        rc = kms_trigger_forget(txn, &c->id); /* trigger key (trigger.c) */
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_DEVICE_REMOVE, c->now_ms, 0, 0, &admin_node, &c->id,
                              NULL);
    return rc;
}

int pk_kms_device_remove(pk_kms_t *k, const char *id, uint64_t now_ms)
{
    struct dev_rm c = {.k = k, .now_ms = now_ms};
    if (!k || id_of(&c.id, id) != PK_OK)
        return PK_ERR_INVAL;
    kms_cache_drop(k, &c.id);
    int rc = pk_store_run(k->st, dev_rm_fn, &c, STORE_TRIES);
    kms_cache_drop(k, &c.id);
    return rc;
}

struct dev_show {
    pk_kms_t *k;
    pk_kms_device_info_t *info;
};

static int info_fill(pk_kms_t *k, pk_txn_t *txn, pk_kms_device_info_t *info)
{
    kms_dev_t d;
    uint8_t dk[BLK_MAX], val[BLK_MAX + 8];
    size_t dl = kms_blk(dk, &info->id), vl = 0, np = 0;
    int rc = kms_dev_get(k, txn, &info->id, 0, &d);
    if (rc != PK_OK)
        return rc;
    info->mode = d.mode;
    info->klen = d.klen;
    info->created_ms = d.created_ms;
    info->pool = d.pool;
    memset(&info->node, 0, sizeof info->node);
    rc = pk_txn_get(txn, B_DIR, dk, dl, val, sizeof val, &vl);
    if (rc == PK_OK && vl >= 10 && val[0] == vl - 9)
        (void)pk_reg_id_set(&info->node, val + 1, val[0]);
    else if (rc != PK_OK && rc != PK_ERR_NOTFOUND)
        return rc;
    if ((rc = kms_peers(k, txn, &info->id, &np)) != PK_OK)
        return rc;
    info->npairs = (uint32_t)np;
    return PK_OK;
}

static int dev_show_fn(pk_txn_t *txn, void *ctx)
{
    struct dev_show *c = ctx;
    return info_fill(c->k, txn, c->info);
}

int pk_kms_device_show(pk_kms_t *k, const char *id, pk_kms_device_info_t *info)
{
    struct dev_show c = {.k = k, .info = info};
    memset(info, 0, sizeof *info);
    if (!k || id_of(&info->id, id) != PK_OK)
        return PK_ERR_INVAL;
    return pk_store_run_read(k->st, dev_show_fn, &c, STORE_TRIES);
}

struct dev_list {
    pk_kms_t *k;
    pk_reg_id_t after;
    size_t limit;
    pk_kms_device_cb cb;
    void *ctx;
    pk_reg_id_t ids[256];
    size_t n;
};

static int list_col(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct dev_list *c = ctx;
    (void)val;
    (void)vlen;
    if (klen < 2 || key[0] != klen - 1 || c->n >= 256)
        return PK_ERR_MALFORMED;
    if (pk_reg_id_set(&c->ids[c->n], key + 1, klen - 1) != PK_OK)
        return PK_ERR_MALFORMED;
    c->n++;
    return 0;
}

static int dev_list_fn(pk_txn_t *txn, void *ctx)
{
    struct dev_list *c = ctx;
    uint8_t ak[BLK_MAX];
    size_t al = c->after.len ? kms_blk(ak, &c->after) : 0, done = 0;
    int rc = PK_OK;
    while (done < c->limit) {
        size_t want = c->limit - done < 256 ? c->limit - done : 256;
        c->n = 0;
        rc = pk_txn_scan(txn, B_DEV, NULL, 0, al ? ak : NULL, al, want, list_col, c);
        if (rc != PK_OK || c->n == 0)
            break;
        for (size_t i = 0; i < c->n && rc == PK_OK; i++) {
            pk_kms_device_info_t info;
            memset(&info, 0, sizeof info);
            info.id = c->ids[i];
            if ((rc = info_fill(c->k, txn, &info)) != PK_OK)
                break;
            if (c->cb(c->ctx, &info) != 0)
                return PK_OK;
        }
        done += c->n;
        al = kms_blk(ak, &c->ids[c->n - 1]);
        if (c->n < want)
            break;
    }
    return rc;
}

int pk_kms_device_list(pk_kms_t *k, const char *after, size_t limit, pk_kms_device_cb cb, void *ctx)
{
    struct dev_list *c = calloc(1, sizeof *c);
    if (!c)
        return PK_ERR_NOMEM;
    c->k = k;
    c->limit = limit;
    c->cb = cb;
    c->ctx = ctx;
    int rc = PK_OK;
    if (!k || !cb || limit == 0 || (after && id_of(&c->after, after) != PK_OK))
        rc = PK_ERR_INVAL;
    if (rc == PK_OK)
        rc = pk_store_run_read(k->st, dev_list_fn, c, STORE_TRIES);
    free(c);
    return rc;
}

/* ---- allowed pairs and groups ---- */

struct pairop {
    pk_reg_id_t a, b;
    const char *group; /* group ops */
    pk_reg_id_t g;
    int all;
    uint64_t now_ms;
    int still;
    pk_kms_t *k;
};

static int pair_index(pk_txn_t *txn, const pk_reg_id_t *a, const pk_reg_id_t *b, int del)
{
    uint8_t key[2 * BLK_MAX];
    size_t kl = kms_blk(key, a);
    kl += kms_blk(key + kl, b);
    return del ? pk_txn_del(txn, B_PEER, key, kl) : pk_txn_put(txn, B_PEER, key, kl, NULL, 0);
}

static int allow_fn(pk_txn_t *txn, void *ctx)
{
    struct pairop *c = ctx;
    uint8_t pk[PAIR_MAX];
    size_t pl = kms_pair(pk, &c->a, &c->b);
    int rc = pk_txn_insert(txn, B_ALLOW, pk, pl, NULL, 0);
    if (rc == PK_OK)
        rc = pair_index(txn, &c->a, &c->b, 0);
    if (rc == PK_OK)
        rc = pair_index(txn, &c->b, &c->a, 0);
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_ALLOW, c->now_ms, 0, 0, &admin_node, &c->a, &c->b);
    return rc;
}

static int deny_fn(pk_txn_t *txn, void *ctx)
{
    struct pairop *c = ctx;
    uint8_t pk[PAIR_MAX];
    size_t pl = kms_pair(pk, &c->a, &c->b);
    int rc = pk_txn_del(txn, B_ALLOW, pk, pl);
    if (rc == PK_OK)
        rc = pair_index(txn, &c->a, &c->b, 1);
    if (rc == PK_OK)
        rc = pair_index(txn, &c->b, &c->a, 1);
    if (rc == PK_OK)
        rc = kms_revoke_if_unallowed(txn, &c->a, &c->b);
    if (rc == PK_OK) {
        int r = kms_allowed(txn, &c->a, &c->b);
        if (r < 0)
            return r;
        c->still = r;
        rc = kms_audit_append(txn, PK_KMS_A_DENY, c->now_ms, 0, 0, &admin_node, &c->a, &c->b);
    }
    return rc;
}

static int pair_args(struct pairop *c, pk_kms_t *k, const char *a, const char *b)
{
    memset(c, 0, sizeof *c);
    c->k = k;
    if (!k || id_of(&c->a, a) != PK_OK || id_of(&c->b, b) != PK_OK || pk_reg_id_eq(&c->a, &c->b))
        return PK_ERR_INVAL;
    return PK_OK;
}

int pk_kms_allow(pk_kms_t *k, const char *a, const char *b, uint64_t now_ms)
{
    struct pairop c;
    int rc = pair_args(&c, k, a, b);
    c.now_ms = now_ms;
    return rc != PK_OK ? rc : pk_store_run(k->st, allow_fn, &c, STORE_TRIES);
}

int pk_kms_deny(pk_kms_t *k, const char *a, const char *b, uint64_t now_ms, int *still_allowed)
{
    struct pairop c;
    int rc = pair_args(&c, k, a, b);
    c.now_ms = now_ms;
    if (rc == PK_OK)
        rc = pk_store_run(k->st, deny_fn, &c, STORE_TRIES);
    if (still_allowed)
        *still_allowed = rc == PK_OK ? c.still : 0;
    return rc;
}

static int allowed_fn(pk_txn_t *txn, void *ctx)
{
    struct pairop *c = ctx;
    int r = kms_allowed(txn, &c->a, &c->b);
    if (r < 0)
        return r;
    c->still = r;
    return PK_OK;
}

int pk_kms_is_allowed(pk_kms_t *k, const char *a, const char *b)
{
    struct pairop c;
    int rc = pair_args(&c, k, a, b);
    if (rc == PK_OK)
        rc = pk_store_run_read(k->st, allowed_fn, &c, STORE_TRIES);
    return rc == PK_OK ? c.still : rc;
}

static int grp_key(uint8_t *key, const pk_reg_id_t *x, const pk_reg_id_t *y)
{
    size_t kl = kms_blk(key, x);
    return (int)(kl + kms_blk(key + kl, y));
}

static int group_add_fn(pk_txn_t *txn, void *ctx)
{
    struct pairop *c = ctx;
    uint8_t key[2 * BLK_MAX];
    int kl = grp_key(key, &c->g, &c->a);
    int rc = pk_txn_insert(txn, B_GRP, key, (size_t)kl, NULL, 0);
    kl = grp_key(key, &c->a, &c->g);
    if (rc == PK_OK)
        rc = pk_txn_put(txn, B_GRPM, key, (size_t)kl, NULL, 0);
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_GROUP_ADD, c->now_ms, 0, 0, &admin_node, &c->a, &c->g);
    return rc;
}

int pk_kms_group_add(pk_kms_t *k, const char *group, const char *member, uint64_t now_ms)
{
    struct pairop c;
    memset(&c, 0, sizeof c);
    c.now_ms = now_ms;
    if (!k || id_of(&c.g, group) != PK_OK || id_of(&c.a, member) != PK_OK)
        return PK_ERR_INVAL;
    return pk_store_run(k->st, group_add_fn, &c, STORE_TRIES);
}

/* Removes one member; then revokes root keys the group alone allowed. */
static int group_rm_one(pk_txn_t *txn, const pk_reg_id_t *g, const pk_reg_id_t *m,
                        pk_reg_id_t *members, size_t *nm)
{
    uint8_t key[2 * BLK_MAX], gp[BLK_MAX];
    int kl = grp_key(key, g, m);
    int rc = pk_txn_del(txn, B_GRP, key, (size_t)kl);
    if (rc != PK_OK)
        return rc;
    kl = grp_key(key, m, g);
    rc = pk_txn_del(txn, B_GRPM, key, (size_t)kl);
    if (rc != PK_OK && rc != PK_ERR_NOTFOUND)
        return rc;
    size_t gl = kms_blk(gp, g);
    *nm = 0;
    if ((rc = kms_scan_ids(txn, B_GRP, gp, gl, members, nm, PEERS_MAX)) != PK_OK)
        return rc;
    for (size_t i = 0; rc == PK_OK && i < *nm; i++)
        rc = kms_revoke_if_unallowed(txn, m, &members[i]);
    return rc;
}

static int group_rm_fn(pk_txn_t *txn, void *ctx)
{
    struct pairop *c = ctx;
    size_t nm = 0;
    int rc;
    if (!c->all) {
        rc = group_rm_one(txn, &c->g, &c->a, c->k->peers, &nm);
        if (rc == PK_OK)
            rc = kms_audit_append(txn, PK_KMS_A_GROUP_REMOVE, c->now_ms, 0, 0, &admin_node, &c->a,
                                  &c->g);
        return rc;
    }
    uint8_t gp[BLK_MAX];
    size_t gl = kms_blk(gp, &c->g), n0 = 0;
    pk_reg_id_t first;
    if ((rc = kms_scan_ids(txn, B_GRP, gp, gl, &first, &n0, 1)) != PK_OK)
        return rc;
    if (n0 == 0)
        return PK_ERR_NOTFOUND;
    for (unsigned i = 0; i < PEERS_MAX + 1; i++) {
        n0 = 0;
        if ((rc = kms_scan_ids(txn, B_GRP, gp, gl, &first, &n0, 1)) != PK_OK)
            return rc;
        if (n0 == 0)
            break;
        if ((rc = group_rm_one(txn, &c->g, &first, c->k->peers, &nm)) != PK_OK)
            return rc;
    }
    return kms_audit_append(txn, PK_KMS_A_GROUP_REMOVE, c->now_ms, 0, 0, &admin_node, NULL, &c->g);
}

int pk_kms_group_remove(pk_kms_t *k, const char *group, const char *member, uint64_t now_ms)
{
    struct pairop c;
    memset(&c, 0, sizeof c);
    c.k = k;
    c.now_ms = now_ms;
    c.all = member == NULL;
    if (!k || id_of(&c.g, group) != PK_OK || (member && id_of(&c.a, member) != PK_OK))
        return PK_ERR_INVAL;
    return pk_store_run(k->st, group_rm_fn, &c, STORE_TRIES);
}

/* ---- pools ---- */

struct pool_op {
    pk_kms_t *k;
    pk_reg_id_t name;
    uint32_t n, first, allocated;
    uint64_t now_ms;
};

static int pool_create_fn(pk_txn_t *txn, void *ctx)
{
    struct pool_op *c = ctx;
    pk_kms_t *k = c->k;
    uint8_t pk[BLK_MAX + 4], val[12], key[KEY_LEN], sealed[SEALED_KEY];
    size_t pl = kms_blk(pk, &c->name), sl = 0;
    pk_put_u32(val, c->n);
    pk_put_u64(val + 4, c->now_ms);
    int rc = pk_txn_insert(txn, B_POOL, pk, pl, val, 12);
    for (uint32_t i = 0; rc == PK_OK && i < c->n; i++) {
        uint64_t id = 0;
        if ((rc = pk_txn_next_id(txn, S_KSI, &id)) != PK_OK)
            break;
        if (id > UINT32_MAX) {
            rc = PK_ERR_LIMIT;
            break;
        }
        if (i == 0)
            c->first = (uint32_t)id;
        pk_put_u32(pk + pl, (uint32_t)id);
        rc = pk_rng_fill(k->rng, key, KEY_LEN);
        if (rc == PK_OK)
            rc = pk_wrap_ctx_seal(&k->wrap, k->rng, B_POOLKEY, pk, pl + 4, key, KEY_LEN, sealed,
                                  sizeof sealed, &sl);
        if (rc == PK_OK)
            rc = pk_txn_insert(txn, B_POOLKEY, pk, pl + 4, sealed, sl);
    }
    pk_wipe(key, sizeof key);
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_POOL_CREATE, c->now_ms, c->first,
                              c->n > 0xffff ? 0xffff : (uint16_t)c->n, &admin_node, NULL, &c->name);
    return rc;
}

int pk_kms_pool_create(pk_kms_t *k, const char *name, uint32_t n, uint64_t now_ms,
                       uint32_t *first_ksi)
{
    struct pool_op c = {.k = k, .n = n, .now_ms = now_ms};
    if (!k || id_of(&c.name, name) != PK_OK || n < 1 || n > PK_KMS_POOL_MAX_KEYS)
        return PK_ERR_INVAL;
    int rc = pk_store_run(k->st, pool_create_fn, &c, STORE_TRIES);
    if (rc == PK_OK && first_ksi)
        *first_ksi = c.first;
    return rc;
}

struct alloc_count {
    size_t plen;
    uint32_t ksi[256];
    size_t n;
    uint8_t last[BLK_MAX + 4];
    size_t lastl;
};

static int ac_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct alloc_count *c = ctx;
    (void)val;
    (void)vlen;
    if (klen != c->plen + 4 || c->n >= 256)
        return PK_ERR_MALFORMED;
    c->ksi[c->n++] = pk_get_u32(key + c->plen);
    memcpy(c->last, key, klen);
    c->lastl = klen;
    return 0;
}

static int pool_info_fn(pk_txn_t *txn, void *ctx)
{
    struct pool_op *c = ctx;
    uint8_t pk[BLK_MAX], val[12];
    size_t pl = kms_blk(pk, &c->name), vl = 0;
    int rc = pk_txn_get(txn, B_POOL, pk, pl, val, sizeof val, &vl);
    if (rc != PK_OK)
        return rc == PK_ERR_SPACE ? PK_ERR_MALFORMED : rc;
    if (vl != 12)
        return PK_ERR_MALFORMED;
    c->n = pk_get_u32(val);
    c->allocated = 0;
    struct alloc_count *ac = calloc(1, sizeof *ac);
    if (!ac)
        return PK_ERR_NOMEM;
    ac->plen = pl;
    for (unsigned page = 0; page < 1024 && rc == PK_OK; page++) {
        ac->n = 0;
        rc = pk_txn_scan(txn, B_POOLKEY, pk, pl, ac->lastl ? ac->last : NULL, ac->lastl, 256, ac_cb,
                         ac);
        for (size_t i = 0; rc == PK_OK && i < ac->n; i++) {
            uint8_t ak[4];
            size_t al = 0;
            pk_put_u32(ak, ac->ksi[i]);
            int r = pk_txn_get(txn, B_ALLOC, ak, 4, NULL, 0, &al);
            if (r == PK_OK || r == PK_ERR_SPACE)
                c->allocated++;
            else if (r != PK_ERR_NOTFOUND)
                rc = r;
        }
        if (ac->n < 256)
            break;
    }
    free(ac);
    return rc;
}

int pk_kms_pool_info(pk_kms_t *k, const char *name, uint32_t *total, uint32_t *allocated)
{
    struct pool_op c = {.k = k};
    if (!k || id_of(&c.name, name) != PK_OK)
        return PK_ERR_INVAL;
    int rc = pk_store_run_read(k->st, pool_info_fn, &c, STORE_TRIES);
    if (rc == PK_OK) {
        if (total)
            *total = c.n;
        if (allocated)
            *allocated = c.allocated;
    }
    return rc;
}

/* ---- audit ---- */

struct audit_list {
    uint64_t from;
    size_t limit;
    pk_kms_audit_cb cb;
    void *ctx;
    int stopped;
};

static int audit_rec_cb(void *ctx, uint64_t seqno, const uint8_t *val, size_t vlen)
{
    struct audit_list *c = ctx;
    pk_kms_audit_t a;
    int rc = pk_kms_audit_decode(val, vlen, &a);
    if (rc != PK_OK)
        return rc;
    a.seqno = seqno;
    if (c->cb(c->ctx, &a) != 0) {
        c->stopped = 1;
        return 1;
    }
    return 0;
}

static int audit_fn(pk_txn_t *txn, void *ctx)
{
    struct audit_list *c = ctx;
    c->stopped = 0;
    return pk_txn_log_scan(txn, PK_KMS_AUDIT_LOG, c->from, c->limit, audit_rec_cb, c);
}

int pk_kms_audit_list(pk_kms_t *k, uint64_t from, size_t limit, pk_kms_audit_cb cb, void *ctx)
{
    struct audit_list c = {.from = from ? from : 1, .limit = limit, .cb = cb, .ctx = ctx};
    if (!k || !cb || limit < 1 || limit > PK_STORE_SCAN_MAX)
        return PK_ERR_INVAL;
    return pk_store_run_read(k->st, audit_fn, &c, 1);
}
