/*
 * kms domains and master keys (Toshiba US 9,294,269; DESIGN 3.6; kms.h has
 * the data model): a domain is a named group of devices; each domain has a
 * sequence of master keys (ID, not_before, expiry, 256-bit key sealed under
 * the KEK) that the kms hands to the node with the device's keys.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/kms/kms_impl.h"

static const pk_reg_id_t admin_node = {.len = 5, .b = "admin"};

#define DOM_VAL_LEN (1 + 4 + 8)
#define MK_HDR_LEN  (1 + 8 + 8 + 8)
#define MK_VAL_LEN  (MK_HDR_LEN + PK_REG_MK_LEN + PK_WRAP_OVERHEAD)
#define MK_KEY_MAX  (BLK_MAX + 4)

static int id_of(pk_reg_id_t *id, const char *s)
{
    if (!s)
        return PK_ERR_INVAL;
    return pk_reg_id_set(id, s, strlen(s)) == PK_OK ? PK_OK : PK_ERR_INVAL;
}

static int dom_get(pk_txn_t *txn, const pk_reg_id_t *dom, uint32_t *domain_id)
{
    uint8_t key[BLK_MAX], val[DOM_VAL_LEN];
    size_t kl = kms_blk(key, dom), vl = 0;
    int rc = pk_txn_get(txn, B_DOM, key, kl, val, sizeof val, &vl);
    if (rc == PK_ERR_SPACE)
        return PK_ERR_MALFORMED;
    if (rc != PK_OK)
        return rc;
    if (vl != DOM_VAL_LEN || val[0] != 1)
        return PK_ERR_MALFORMED;
    if (domain_id)
        *domain_id = pk_get_u32(val + 1);
    return PK_OK;
}

/* The domain device is in: PK_OK, PK_ERR_NOTFOUND. */
static int member_get(pk_txn_t *txn, const pk_reg_id_t *dev, pk_reg_id_t *dom)
{
    uint8_t key[BLK_MAX], val[BLK_MAX];
    size_t kl = kms_blk(key, dev), vl = 0;
    int rc = pk_txn_get(txn, B_DOMMEM, key, kl, val, sizeof val, &vl);
    if (rc == PK_ERR_SPACE)
        return PK_ERR_MALFORMED;
    if (rc != PK_OK)
        return rc;
    if (vl < 2 || val[0] != vl - 1 || pk_reg_id_set(dom, val + 1, vl - 1) != PK_OK)
        return PK_ERR_MALFORMED;
    return PK_OK;
}

/* ---- reading a domain's keys ---- */

struct mk_row {
    uint32_t id;
    uint64_t not_before_ms, expiry_ms, created_ms;
    uint8_t sealed[PK_REG_MK_LEN + PK_WRAP_OVERHEAD];
};

struct mk_scan {
    size_t plen;
    struct mk_row *rows;
    size_t n, max;
    int bad;
};

static int mk_scan_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct mk_scan *c = ctx;
    if (klen != c->plen + 4 || vlen != MK_VAL_LEN || val[0] != 1) {
        c->bad = 1;
        return 1;
    }
    if (c->n >= c->max)
        return 1;
    struct mk_row *r = &c->rows[c->n++];
    r->id = pk_get_u32(key + c->plen);
    r->not_before_ms = pk_get_u64(val + 1);
    r->expiry_ms = pk_get_u64(val + 9);
    r->created_ms = pk_get_u64(val + 17);
    memcpy(r->sealed, val + MK_HDR_LEN, sizeof r->sealed);
    return 0;
}

/* Reads up to max keys of dom in ID order (= not_before order). */
static int mk_rows(pk_txn_t *txn, const pk_reg_id_t *dom, struct mk_row *rows, size_t max,
                   size_t *n)
{
    uint8_t prefix[BLK_MAX];
    struct mk_scan c = {.plen = kms_blk(prefix, dom), .rows = rows, .max = max};
    int rc = pk_txn_scan(txn, B_MK, prefix, c.plen, NULL, 0, max + 1, mk_scan_cb, &c);
    *n = c.n;
    if (rc == PK_OK && c.bad)
        rc = PK_ERR_MALFORMED;
    return rc;
}

static int mk_open(pk_kms_t *k, const pk_reg_id_t *dom, const struct mk_row *r,
                   uint8_t key[PK_REG_MK_LEN])
{
    uint8_t rk[MK_KEY_MAX];
    size_t rl = kms_blk(rk, dom), ol = 0;
    pk_put_u32(rk + rl, r->id);
    rl += 4;
    int rc = pk_wrap_ctx_open(&k->wrap, B_MK, rk, rl, r->sealed, sizeof r->sealed, key,
                              PK_REG_MK_LEN, &ol);
    if (rc == PK_OK && ol != PK_REG_MK_LEN)
        rc = PK_ERR_MALFORMED;
    if (rc != PK_OK)
        pk_wipe(key, PK_REG_MK_LEN);
    return rc;
}

int kms_mk_fill(pk_kms_t *k, pk_txn_t *txn, const pk_reg_id_t *dev, uint64_t now_ms,
                pk_reg_mkset_t *mk, pk_reg_id_t *domain)
{
    struct mk_row *rows = NULL;
    pk_reg_id_t dom;
    size_t n = 0;
    int cur = -1, next = -1, rc;

    memset(mk, 0, sizeof *mk);
    memset(domain, 0, sizeof *domain);
    rc = member_get(txn, dev, &dom);
    if (rc == PK_ERR_NOTFOUND)
        return PK_OK;
    if (rc != PK_OK)
        return rc;
    if ((rc = dom_get(txn, &dom, &mk->domain_id)) != PK_OK)
        return rc == PK_ERR_NOTFOUND ? PK_ERR_MALFORMED : rc;
    *domain = dom;
    if (!(rows = calloc(PK_KMS_MK_PER_DOMAIN, sizeof *rows)))
        return PK_ERR_NOMEM;
    if ((rc = mk_rows(txn, &dom, rows, PK_KMS_MK_PER_DOMAIN, &n)) != PK_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (rows[i].expiry_ms <= now_ms)
            continue;
        if (rows[i].not_before_ms <= now_ms)
            cur = (int)i; /* the latest effective one */
        else if (next < 0)
            next = (int)i; /* the earliest scheduled one */
    }
    if (cur < 0 && next >= 0) { /* nothing effective yet: hand out the scheduled key only */
        cur = next;
        next = -1;
    }
    if (cur < 0)
        goto out;
    int pick[2] = {cur, next};
    for (unsigned i = 0; i < 2 && pick[i] >= 0 && rc == PK_OK; i++) {
        const struct mk_row *r = &rows[pick[i]];
        pk_reg_mk_t *e = &mk->k[mk->n];
        e->id = r->id;
        e->not_before_ms = r->not_before_ms;
        e->expiry_ms = r->expiry_ms;
        rc = mk_open(k, &dom, r, e->key);
        if (rc == PK_OK)
            mk->n++;
    }
out:
    free(rows);
    if (rc != PK_OK)
        pk_wipe(mk, sizeof *mk);
    return rc;
}

int kms_domain_forget(pk_txn_t *txn, const pk_reg_id_t *dev)
{
    pk_reg_id_t dom;
    uint8_t key[2 * BLK_MAX];
    int rc = member_get(txn, dev, &dom);
    if (rc == PK_ERR_NOTFOUND)
        return PK_OK;
    if (rc != PK_OK)
        return rc;
    size_t kl = kms_blk(key, dev);
    if ((rc = pk_txn_del(txn, B_DOMMEM, key, kl)) != PK_OK)
        return rc;
    kl = kms_blk(key, &dom);
    kl += kms_blk(key + kl, dev);
    rc = pk_txn_del(txn, B_DOMDEV, key, kl);
    return rc == PK_ERR_NOTFOUND ? PK_OK : rc;
}

/* ---- domains ---- */

struct dom_op {
    pk_kms_t *k;
    pk_reg_id_t dom, dev;
    uint64_t now_ms;
    uint32_t domain_id;
    int add;
};

static int dom_add_fn(pk_txn_t *txn, void *ctx)
{
    struct dom_op *c = ctx;
    uint8_t key[BLK_MAX], val[DOM_VAL_LEN];
    size_t kl = kms_blk(key, &c->dom);
    uint64_t id = 0;
    int rc = dom_get(txn, &c->dom, NULL);
    if (rc == PK_OK)
        return PK_ERR_EXISTS;
    if (rc != PK_ERR_NOTFOUND)
        return rc;
    if ((rc = pk_txn_next_id(txn, S_DOMID, &id)) != PK_OK)
        return rc;
    if (id > UINT32_MAX)
        return PK_ERR_LIMIT;
    val[0] = 1;
    pk_put_u32(val + 1, (uint32_t)id);
    pk_put_u64(val + 5, c->now_ms);
    if ((rc = pk_txn_insert(txn, B_DOM, key, kl, val, sizeof val)) != PK_OK)
        return rc;
    c->domain_id = (uint32_t)id;
    return kms_audit_append(txn, PK_KMS_A_DOMAIN_ADD, c->now_ms, (uint32_t)id, 0, &admin_node, NULL,
                            &c->dom);
}

int pk_kms_domain_add(pk_kms_t *k, const char *name, uint64_t now_ms, uint32_t *domain_id)
{
    struct dom_op c = {.k = k, .now_ms = now_ms};
    if (!k || id_of(&c.dom, name) != PK_OK)
        return PK_ERR_INVAL;
    int rc = pk_store_run(k->st, dom_add_fn, &c, STORE_TRIES);
    if (rc == PK_OK && domain_id)
        *domain_id = c.domain_id;
    return rc;
}

static int member_fn(pk_txn_t *txn, void *ctx)
{
    struct dom_op *c = ctx;
    uint8_t key[2 * BLK_MAX], val[BLK_MAX];
    pk_reg_id_t cur;
    kms_dev_t d;
    int rc = dom_get(txn, &c->dom, NULL);
    if (rc != PK_OK)
        return rc;
    if ((rc = kms_dev_get(c->k, txn, &c->dev, 0, &d)) != PK_OK)
        return rc;
    rc = member_get(txn, &c->dev, &cur);
    if (c->add) {
        if (rc == PK_OK)
            return PK_ERR_EXISTS;
        if (rc != PK_ERR_NOTFOUND)
            return rc;
        size_t kl = kms_blk(key, &c->dev), vl = kms_blk(val, &c->dom);
        if ((rc = pk_txn_insert(txn, B_DOMMEM, key, kl, val, vl)) != PK_OK)
            return rc;
        kl = kms_blk(key, &c->dom);
        kl += kms_blk(key + kl, &c->dev);
        rc = pk_txn_put(txn, B_DOMDEV, key, kl, NULL, 0);
    } else {
        if (rc != PK_OK)
            return rc;
        if (!pk_reg_id_eq(&cur, &c->dom))
            return PK_ERR_NOTFOUND;
        rc = kms_domain_forget(txn, &c->dev);
    }
    if (rc == PK_OK)
        rc = kms_audit_append(txn, c->add ? PK_KMS_A_DOMAIN_JOIN : PK_KMS_A_DOMAIN_LEAVE, c->now_ms,
                              0, 0, &admin_node, &c->dev, &c->dom);
    return rc;
}

static int member_op(pk_kms_t *k, const char *domain, const char *device, uint64_t now_ms, int add)
{
    struct dom_op c = {.k = k, .now_ms = now_ms, .add = add};
    if (!k || id_of(&c.dom, domain) != PK_OK || id_of(&c.dev, device) != PK_OK)
        return PK_ERR_INVAL;
    return pk_store_run(k->st, member_fn, &c, STORE_TRIES);
}

int pk_kms_domain_member_add(pk_kms_t *k, const char *domain, const char *device, uint64_t now_ms)
{
    return member_op(k, domain, device, now_ms, 1);
}

int pk_kms_domain_member_remove(pk_kms_t *k, const char *domain, const char *device,
                                uint64_t now_ms)
{
    return member_op(k, domain, device, now_ms, 0);
}

static int domain_of_fn(pk_txn_t *txn, void *ctx)
{
    struct dom_op *c = ctx;
    int rc = member_get(txn, &c->dev, &c->dom);
    if (rc == PK_OK)
        rc = dom_get(txn, &c->dom, &c->domain_id);
    return rc;
}

int pk_kms_domain_of(pk_kms_t *k, const char *device, pk_reg_id_t *domain, uint32_t *domain_id)
{
    struct dom_op c = {.k = k};
    if (!k || !domain || id_of(&c.dev, device) != PK_OK)
        return PK_ERR_INVAL;
    int rc = pk_store_run_read(k->st, domain_of_fn, &c, STORE_TRIES);
    if (rc == PK_OK) {
        *domain = c.dom;
        if (domain_id)
            *domain_id = c.domain_id;
    }
    return rc;
}

/* ---- master keys ---- */

struct rotate {
    pk_kms_t *k;
    pk_reg_id_t dom;
    uint64_t at_ms, lifetime_ms, now_ms;
    const uint8_t *key;
    pk_kms_mk_info_t info;
};

static int rotate_fn(pk_txn_t *txn, void *ctx)
{
    struct rotate *c = ctx;
    struct mk_row *rows = NULL;
    uint8_t rk[MK_KEY_MAX], val[MK_VAL_LEN];
    size_t n = 0, live = 0, rl, sl = 0;
    uint64_t id = 0;
    int rc = dom_get(txn, &c->dom, NULL);
    if (rc != PK_OK)
        return rc;
    if (!(rows = calloc(PK_KMS_MK_PER_DOMAIN + 1, sizeof *rows)))
        return PK_ERR_NOMEM;
    if ((rc = mk_rows(txn, &c->dom, rows, PK_KMS_MK_PER_DOMAIN + 1, &n)) != PK_OK)
        goto out;
    for (size_t i = 0; i < n && rc == PK_OK; i++) {
        if (rows[i].not_before_ms >= c->at_ms) {
            rc = PK_ERR_STATE; /* a key effective at or after at_ms exists */
            break;
        }
        if (rows[i].expiry_ms <= c->now_ms) { /* prune expired keys */
            rl = kms_blk(rk, &c->dom);
            pk_put_u32(rk + rl, rows[i].id);
            rc = pk_txn_del(txn, B_MK, rk, rl + 4);
        } else {
            live++;
        }
    }
    if (rc == PK_OK && live >= PK_KMS_MK_PER_DOMAIN)
        rc = PK_ERR_LIMIT;
    if (rc == PK_OK)
        rc = pk_txn_next_id(txn, S_MKID, &id);
    if (rc == PK_OK && (id == 0 || id > UINT32_MAX))
        rc = PK_ERR_LIMIT;
    if (rc != PK_OK)
        goto out;
    rl = kms_blk(rk, &c->dom);
    pk_put_u32(rk + rl, (uint32_t)id);
    rl += 4;
    val[0] = 1;
    pk_put_u64(val + 1, c->at_ms);
    pk_put_u64(val + 9, c->at_ms + c->lifetime_ms);
    pk_put_u64(val + 17, c->now_ms);
    rc = pk_wrap_ctx_seal(&c->k->wrap, c->k->rng, B_MK, rk, rl, c->key, PK_REG_MK_LEN,
                          val + MK_HDR_LEN, sizeof val - MK_HDR_LEN, &sl);
    if (rc == PK_OK && MK_HDR_LEN + sl != MK_VAL_LEN)
        rc = PK_ERR_CRYPTO;
    if (rc == PK_OK)
        rc = pk_txn_insert(txn, B_MK, rk, rl, val, MK_VAL_LEN);
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_MK_CREATE, c->now_ms, (uint32_t)id, 0, &admin_node,
                              NULL, &c->dom);
    if (rc == PK_OK) {
        c->info.id = (uint32_t)id;
        c->info.not_before_ms = c->at_ms;
        c->info.expiry_ms = c->at_ms + c->lifetime_ms;
        c->info.created_ms = c->now_ms;
    }
out:
    free(rows);
    pk_wipe(val, sizeof val);
    return rc;
}

int pk_kms_master_rotate(pk_kms_t *k, const char *domain, uint64_t at_ms, uint64_t lifetime_ms,
                         uint64_t now_ms, pk_kms_mk_info_t *out)
{
    struct rotate c = {.k = k, .at_ms = at_ms, .now_ms = now_ms};
    uint8_t key[PK_REG_MK_LEN];
    int rc;
    if (!k || id_of(&c.dom, domain) != PK_OK)
        return PK_ERR_INVAL;
    c.lifetime_ms = lifetime_ms ? lifetime_ms : PK_KMS_MK_LIFETIME_DEF;
    if (c.lifetime_ms > PK_KMS_MK_LIFETIME_MAX || at_ms > UINT64_MAX - c.lifetime_ms ||
        at_ms + c.lifetime_ms <= now_ms)
        return PK_ERR_INVAL;
    if ((rc = pk_rng_fill(k->rng, key, sizeof key)) != PK_OK) {
        rc = PK_ERR_CRYPTO;
        goto out;
    }
    c.key = key;
    rc = pk_store_run(k->st, rotate_fn, &c, STORE_TRIES);
    if (rc == PK_OK && out)
        *out = c.info;
out:
    pk_wipe(key, sizeof key);
    return rc;
}

struct mk_list {
    pk_reg_id_t dom;
    uint32_t domain_id;
    struct mk_row *rows;
    size_t n;
};

static int mk_list_fn(pk_txn_t *txn, void *ctx)
{
    struct mk_list *c = ctx;
    int rc = dom_get(txn, &c->dom, &c->domain_id);
    if (rc == PK_OK)
        rc = mk_rows(txn, &c->dom, c->rows, PK_KMS_MK_PER_DOMAIN + 1, &c->n);
    return rc;
}

int pk_kms_master_list(pk_kms_t *k, const char *domain, uint32_t *domain_id, pk_kms_mk_info_t *out,
                       size_t max, size_t *n)
{
    struct mk_list c;
    memset(&c, 0, sizeof c);
    if (!k || !n || id_of(&c.dom, domain) != PK_OK)
        return PK_ERR_INVAL;
    *n = 0;
    if (!(c.rows = calloc(PK_KMS_MK_PER_DOMAIN + 1, sizeof *c.rows)))
        return PK_ERR_NOMEM;
    int rc = pk_store_run_read(k->st, mk_list_fn, &c, STORE_TRIES);
    if (rc == PK_OK) {
        for (size_t i = 0; i < c.n && i < max; i++) {
            out[i].id = c.rows[i].id;
            out[i].not_before_ms = c.rows[i].not_before_ms;
            out[i].expiry_ms = c.rows[i].expiry_ms;
            out[i].created_ms = c.rows[i].created_ms;
        }
        *n = c.n < max ? c.n : max;
        if (domain_id)
            *domain_id = c.domain_id;
    }
    free(c.rows);
    return rc;
}

struct mk_for {
    pk_kms_t *k;
    pk_reg_id_t dev, dom;
    uint64_t now_ms;
    pk_reg_mkset_t *mk;
};

static int mk_for_fn(pk_txn_t *txn, void *ctx)
{
    struct mk_for *c = ctx;
    return kms_mk_fill(c->k, txn, &c->dev, c->now_ms, c->mk, &c->dom);
}

int pk_kms_master_for(pk_kms_t *k, const char *device, uint64_t now_ms, pk_reg_mkset_t *mk)
{
    struct mk_for c = {.k = k, .now_ms = now_ms, .mk = mk};
    if (!k || !mk || id_of(&c.dev, device) != PK_OK)
        return PK_ERR_INVAL;
    return pk_store_run_read(k->st, mk_for_fn, &c, STORE_TRIES);
}
