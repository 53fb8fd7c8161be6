/*
 * kms trigger keys (kms.h, "trigger keys"): per device the trigger
 * protocol's K1 and first identity UID1, sealed under the KEK, made by the
 * admin and exported (audited) to the gts that serves the device.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/kms/kms_impl.h"

#define B_TRIG       "kms_trig"
#define TRIG_SECRET  (PK_KMS_TRIG_KEY_LEN + PK_KMS_TRIG_UID_LEN)
#define TRIG_HDR     (1 + 1 + 8)
#define TRIG_VAL_LEN (TRIG_HDR + TRIG_SECRET + PK_WRAP_OVERHEAD)
#define TRIG_PAGE    256

static const pk_reg_id_t admin_node = {.len = 5, .b = "admin"};

static int id_of(pk_reg_id_t *id, const char *s)
{
    if (!s)
        return PK_ERR_INVAL;
    return pk_reg_id_set(id, s, strlen(s)) == PK_OK ? PK_OK : PK_ERR_INVAL;
}

/* The ID is the device's name in the gts and in its state line. */
static int trig_name_ok(const pk_reg_id_t *id)
{
    for (size_t i = 0; i < id->len; i++)
        if (id->b[i] <= 0x20 || id->b[i] == 0x7f)
            return 0;
    return 1;
}

/* Decodes a kms_trig row's header; *sealed points into val. */
static int trig_decode(const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen,
                       pk_kms_trigger_t *t, const uint8_t **sealed)
{
    memset(t, 0, sizeof *t);
    if (klen < 2 || key[0] != klen - 1 || pk_reg_id_set(&t->id, key + 1, klen - 1) != PK_OK)
        return PK_ERR_MALFORMED;
    if (vlen != TRIG_VAL_LEN || val[0] != 1 || (val[1] & ~PK_KMS_TRIG_ROTATE) != 0)
        return PK_ERR_MALFORMED;
    t->flags = val[1];
    t->created_ms = pk_get_u64(val + 2);
    if (sealed)
        *sealed = val + TRIG_HDR;
    return PK_OK;
}

/* Reads id's row into val (TRIG_VAL_LEN). PK_ERR_NOTFOUND. */
static int trig_get(pk_txn_t *txn, const pk_reg_id_t *id, uint8_t *key, size_t *kl,
                    uint8_t val[TRIG_VAL_LEN])
{
    size_t vl = 0;
    *kl = kms_blk(key, id);
    int rc = pk_txn_get(txn, B_TRIG, key, *kl, val, TRIG_VAL_LEN, &vl);
    if (rc == PK_ERR_SPACE || (rc == PK_OK && vl != TRIG_VAL_LEN))
        return PK_ERR_MALFORMED;
    return rc;
}

int kms_trigger_forget(pk_txn_t *txn, const pk_reg_id_t *dev)
{
    uint8_t key[BLK_MAX];
    size_t kl = kms_blk(key, dev);
    int rc = pk_txn_del(txn, B_TRIG, key, kl);
    return rc == PK_ERR_NOTFOUND ? PK_OK : rc;
}

/* ---- add ---- */

struct trig_add {
    pk_kms_t *k;
    pk_reg_id_t id;
    uint8_t flags;
    uint64_t now_ms;
    const uint8_t *secret; /* K1 || UID1 */
};

static int trig_add_fn(pk_txn_t *txn, void *ctx)
{
    struct trig_add *c = ctx;
    uint8_t key[BLK_MAX], val[TRIG_VAL_LEN];
    size_t kl = kms_blk(key, &c->id), sl = 0;
    kms_dev_t d;
    int rc = kms_dev_get(c->k, txn, &c->id, 0, &d);
    if (rc != PK_OK)
        return rc;
    val[0] = 1;
    val[1] = c->flags;
    pk_put_u64(val + 2, c->now_ms);
    rc = pk_wrap_ctx_seal(&c->k->wrap, c->k->rng, B_TRIG, key, kl, c->secret, TRIG_SECRET,
                          val + TRIG_HDR, sizeof val - TRIG_HDR, &sl);
    if (rc == PK_OK && sl != TRIG_SECRET + PK_WRAP_OVERHEAD)
        rc = PK_ERR_CRYPTO;
    if (rc == PK_OK)
        rc = pk_txn_insert(txn, B_TRIG, key, kl, val, sizeof val);
    if (rc == PK_OK)
        rc =
            kms_audit_append(txn, PK_KMS_A_TRIGGER_KEY, c->now_ms, 0, 0, &admin_node, &c->id, NULL);
    return rc;
}

int pk_kms_trigger_add(pk_kms_t *k, const char *id, uint8_t flags, uint64_t now_ms,
                       pk_kms_trigger_t *out)
{
    struct trig_add c = {.k = k, .flags = flags, .now_ms = now_ms};
    uint8_t secret[TRIG_SECRET];
    int rc;
    if (out)
        memset(out, 0, sizeof *out);
    if (!k || id_of(&c.id, id) != PK_OK || !trig_name_ok(&c.id) ||
        (flags & ~PK_KMS_TRIG_ROTATE) != 0)
        return PK_ERR_INVAL;
    if ((rc = pk_rng_fill(k->rng, secret, sizeof secret)) != PK_OK)
        goto out;
    c.secret = secret;
    rc = pk_store_run(k->st, trig_add_fn, &c, STORE_TRIES);
    if (rc == PK_OK && out) {
        out->id = c.id;
        out->flags = flags;
        out->created_ms = now_ms;
        memcpy(out->k1, secret, PK_KMS_TRIG_KEY_LEN);
        memcpy(out->uid1, secret + PK_KMS_TRIG_KEY_LEN, PK_KMS_TRIG_UID_LEN);
    }
out:
    pk_wipe(secret, sizeof secret);
    return rc;
}

/* ---- remove ---- */

struct trig_rm {
    pk_reg_id_t id;
    uint64_t now_ms;
};

static int trig_rm_fn(pk_txn_t *txn, void *ctx)
{
    struct trig_rm *c = ctx;
    uint8_t key[BLK_MAX];
    size_t kl = kms_blk(key, &c->id);
    int rc = pk_txn_del(txn, B_TRIG, key, kl);
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_TRIGGER_REMOVE, c->now_ms, 0, 0, &admin_node, &c->id,
                              NULL);
    return rc;
}

int pk_kms_trigger_remove(pk_kms_t *k, const char *id, uint64_t now_ms)
{
    struct trig_rm c = {.now_ms = now_ms};
    if (!k || id_of(&c.id, id) != PK_OK)
        return PK_ERR_INVAL;
    return pk_store_run(k->st, trig_rm_fn, &c, STORE_TRIES);
}

/* ---- show, list ---- */

struct trig_show {
    pk_reg_id_t id;
    pk_kms_trigger_t *out;
};

static int trig_show_fn(pk_txn_t *txn, void *ctx)
{
    struct trig_show *c = ctx;
    uint8_t key[BLK_MAX], val[TRIG_VAL_LEN];
    size_t kl = 0;
    int rc = trig_get(txn, &c->id, key, &kl, val);
    if (rc == PK_OK)
        rc = trig_decode(key, kl, val, sizeof val, c->out, NULL);
    return rc;
}

int pk_kms_trigger_show(pk_kms_t *k, const char *id, pk_kms_trigger_t *out)
{
    struct trig_show c = {.out = out};
    memset(out, 0, sizeof *out);
    if (!k || id_of(&c.id, id) != PK_OK)
        return PK_ERR_INVAL;
    int rc = pk_store_run_read(k->st, trig_show_fn, &c, STORE_TRIES);
    if (rc != PK_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

struct trig_list {
    pk_reg_id_t after;
    size_t limit;
    pk_kms_trigger_cb cb;
    void *ctx;
    pk_kms_trigger_t rows[TRIG_PAGE];
    size_t n;
};

static int trig_col(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct trig_list *c = ctx;
    if (c->n >= TRIG_PAGE)
        return 1;
    int rc = trig_decode(key, klen, val, vlen, &c->rows[c->n], NULL);
    if (rc != PK_OK)
        return rc;
    c->n++;
    return 0;
}

static int trig_list_fn(pk_txn_t *txn, void *ctx)
{
    struct trig_list *c = ctx;
    uint8_t ak[BLK_MAX];
    size_t al = c->after.len ? kms_blk(ak, &c->after) : 0, done = 0;
    int rc = PK_OK;
    /* cb runs between pages, in the transaction (run once: no retry calls
     * it twice for one row) */
    while (done < c->limit) {
        size_t want = c->limit - done < TRIG_PAGE ? c->limit - done : TRIG_PAGE;
        c->n = 0;
        rc = pk_txn_scan(txn, B_TRIG, NULL, 0, al ? ak : NULL, al, want, trig_col, c);
        if (rc != PK_OK || c->n == 0)
            break;
        for (size_t i = 0; i < c->n; i++)
            if (c->cb(c->ctx, &c->rows[i]) != 0)
                return PK_OK;
        done += c->n;
        al = kms_blk(ak, &c->rows[c->n - 1].id);
        if (c->n < want)
            break;
    }
    return rc;
}

int pk_kms_trigger_list(pk_kms_t *k, const char *after, size_t limit, pk_kms_trigger_cb cb,
                        void *ctx)
{
    struct trig_list *c = calloc(1, sizeof *c);
    int rc = PK_OK;
    if (!c)
        return PK_ERR_NOMEM;
    c->limit = limit;
    c->cb = cb;
    c->ctx = ctx;
    if (!k || !cb || limit == 0 || (after && id_of(&c->after, after) != PK_OK))
        rc = PK_ERR_INVAL;
    if (rc == PK_OK)
        rc = pk_store_run_read(k->st, trig_list_fn, c, 1);
    free(c);
    return rc;
}

/* ---- export ---- */

struct trig_export {
    pk_kms_t *k;
    pk_reg_id_t id, to;
    uint64_t now_ms;
    pk_kms_trigger_t *out;
};

static int trig_export_fn(pk_txn_t *txn, void *ctx)
{
    struct trig_export *c = ctx;
    uint8_t key[BLK_MAX], val[TRIG_VAL_LEN], secret[TRIG_SECRET];
    const uint8_t *sealed = NULL;
    size_t kl = 0, ol = 0;
    int rc = trig_get(txn, &c->id, key, &kl, val);
    if (rc == PK_OK)
        rc = trig_decode(key, kl, val, sizeof val, c->out, &sealed);
    if (rc == PK_OK)
        rc = pk_wrap_ctx_open(&c->k->wrap, B_TRIG, key, kl, sealed, TRIG_SECRET + PK_WRAP_OVERHEAD,
                              secret, sizeof secret, &ol);
    if (rc == PK_OK && ol != TRIG_SECRET)
        rc = PK_ERR_MALFORMED;
    if (rc == PK_OK)
        rc = kms_audit_append(txn, PK_KMS_A_TRIGGER_KEY, c->now_ms, 0, 0, &c->to, &c->id, NULL);
    if (rc == PK_OK) {
        memcpy(c->out->k1, secret, PK_KMS_TRIG_KEY_LEN);
        memcpy(c->out->uid1, secret + PK_KMS_TRIG_KEY_LEN, PK_KMS_TRIG_UID_LEN);
    }
    pk_wipe(secret, sizeof secret);
    return rc;
}

int pk_kms_trigger_export(pk_kms_t *k, const char *id, const char *to, uint64_t now_ms,
                          pk_kms_trigger_t *out)
{
    struct trig_export c = {.k = k, .now_ms = now_ms, .out = out};
    memset(out, 0, sizeof *out);
    if (!k || id_of(&c.id, id) != PK_OK || id_of(&c.to, to) != PK_OK)
        return PK_ERR_INVAL;
    int rc = pk_store_run(k->st, trig_export_fn, &c, STORE_TRIES);
    if (rc != PK_OK)
        pk_wipe(out, sizeof *out);
    return rc;
}
