/* Export/import of a registration and of an established link (device.h). */
#include <string.h>

#include "core/codec.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"
#include "device/device.h"

#define REG_MAGIC  "PKDR"
#define LINK_MAGIC "PKDL"
#define STATE_VER  1
#define REG_VER2   2 /* registration blob with a key table of any size */

/* A record context's counters in a blob: the next tx counter, then its
 * receive window as pk_record_rx_export() writes it (which is also the
 * layout of the version-1 blobs written before that API existed). */
static void wr_rx(pk_wr_t *w, const pk_record_t *r)
{
    uint8_t win[PK_RECORD_RX_STATE_LEN] = {0};
    if (pk_record_rx_export(r, win) != PK_OK)
        w->err = PK_ERR_INVAL; /* no rx direction: the export reports a bad state */
    pk_wr_bytes(w, win, sizeof win);
}

typedef struct rx_state {
    uint64_t tx_next;
    uint8_t win[PK_RECORD_RX_STATE_LEN];
} rx_state_t;

static void rd_ctr(pk_rd_t *r, rx_state_t *s)
{
    s->tx_next = pk_rd_u64(r);
    pk_rd_copy(r, s->win, sizeof s->win);
    /* a window no receiver can have written (a bit above the top or for
     * counter 0) is refused, not restored */
    if (s->tx_next < PK_RECORD_COUNTER_FIRST || s->tx_next > PK_RECORD_COUNTER_LIMIT - 1 ||
        (r->err == PK_OK && pk_record_rx_check(s->win) != PK_OK))
        r->err = PK_ERR_MALFORMED;
}

static int restore_ctr(pk_record_t *rec, const rx_state_t *s)
{
    int rc = pk_record_set_tx_next(rec, s->tx_next);
    return rc != PK_OK ? rc : pk_record_rx_import(rec, s->win);
}

static int rd_head_ver(pk_rd_t *r, const char magic[4], uint8_t *ver)
{
    const uint8_t *m = pk_rd_borrow(r, 4);
    *ver = pk_rd_u8(r);
    if (r->err != PK_OK || memcmp(m, magic, 4) != 0)
        return PK_ERR_MALFORMED;
    return PK_OK;
}

static int rd_head(pk_rd_t *r, const char magic[4])
{
    uint8_t ver = 0;
    int rc = rd_head_ver(r, magic, &ver);
    if (rc != PK_OK)
        return rc;
    return ver == STATE_VER ? PK_OK : PK_ERR_VERSION;
}

static void rd_id(pk_rd_t *r, pk_reg_id_t *id)
{
    pk_reg_rd_id(r, id);
}

/* ================= registration ================= */

int pk_device_reg_export(const pk_reg_dev_t *d, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    unsigned nind = 0;
    size_t nk = 0;
    const pk_reg_key_t *t = pk_reg_dev_keys(d, &nk);
    uint32_t missing = pk_reg_dev_keys_missing(d);
    /* version 1 whenever it can say it: byte-identical to older blobs */
    int v2 = nk > PK_REG_MAX_KEYS || missing > 0;
    if (d->state != PK_REG_D_REGISTERED)
        return PK_ERR_STATE;
    if (nk > PK_REG_PEERS_MAX || missing > PK_REG_PEERS_MAX)
        return PK_ERR_STATE;
    pk_wr_init(&w, buf, cap);
    pk_wr_bytes(&w, REG_MAGIC, 4);
    pk_wr_u8(&w, v2 ? REG_VER2 : STATE_VER);
    pk_reg_wr_id(&w, &d->id);
    pk_reg_wr_id(&w, &d->node_id);
    pk_wr_bytes(&w, d->k_reg, PK_REG_KREG_LEN);
    pk_wr_u16(&w, pk_record_session_id(&d->chan));
    pk_wr_u64(&w, pk_record_tx_next(&d->chan));
    wr_rx(&w, &d->chan);
    pk_reg_wr_id(&w, &d->temp_id);
    if (!v2) {
        if (d->store) { /* the set in a caller's store: write it as a keyset */
            pk_wr_u8(&w, d->keys.mode);
            pk_wr_u8(&w, (uint8_t)nk);
            for (size_t i = 0; i < nk; i++) {
                pk_wr_u32(&w, t[i].ksi);
                pk_wr_bytes(&w, t[i].key, PK_REG_ROOT_KEY_LEN);
                pk_wr_u8(&w, t[i].peer.len);
                pk_wr_bytes(&w, t[i].peer.b, t[i].peer.len);
            }
        } else {
            (void)pk_reg_keyset_write(&w, &d->keys);
        }
    } else {
        pk_wr_u8(&w, d->keys.mode);
        pk_wr_u16(&w, (uint16_t)nk);
        for (size_t i = 0; i < nk; i++) {
            pk_wr_u32(&w, t[i].ksi);
            pk_wr_bytes(&w, t[i].key, PK_REG_ROOT_KEY_LEN);
            pk_wr_block8(&w, t[i].peer.b, t[i].peer.len);
        }
        pk_wr_u16(&w, (uint16_t)missing);
    }
    for (unsigned i = 0; i < PK_REG_MAX_IND; i++)
        nind += d->ind[i].used ? 1u : 0u;
    pk_wr_u8(&w, (uint8_t)nind);
    for (unsigned i = 0; i < PK_REG_MAX_IND; i++) {
        const pk_reg_ind_t *in = &d->ind[i];
        if (!in->used)
            continue;
        pk_wr_u8(&w, (uint8_t)i); /* slot, so ind_next keeps its meaning */
        pk_wr_u8(&w, in->role);
        pk_wr_u32(&w, in->ksi);
        pk_wr_bytes(&w, in->param, PK_REG_PARAM_LEN);
        pk_reg_wr_id(&w, &in->peer);
    }
    pk_wr_u8(&w, (uint8_t)d->ind_next);
    pk_reg_mkset_write(&w, &d->keys.mk); /* optional trailing master-key block */
    if (pk_wr_ok(&w) != PK_OK) {
        if (buf)
            pk_wipe(buf, cap);
        return w.err == PK_ERR_INVAL ? PK_ERR_STATE : PK_ERR_SPACE;
    }
    *len = w.len;
    return PK_OK;
}

/* Reads the key table of a blob into d's table (the store d was set up
 * with): version 1 a keyset as in ACCEPT, version 2 any number of entries
 * (mode pairs: peers strictly ascending, KSIs distinct; pool: no peers).
 * Marks r failed on a bad table; PK_ERR_SPACE when d's store is too small. */
static int rd_keys(pk_rd_t *r, uint8_t ver, pk_reg_dev_t *d)
{
    if (ver == STATE_VER) {
        pk_reg_keyset_t ks; /* ~3.4 KB, wiped */
        pk_reg_keyset_read(r, &ks);
        int rc = PK_OK;
        if (r->err == PK_OK && ks.paged)
            r->err = PK_ERR_MALFORMED;
        if (r->err == PK_OK) {
            d->keys.mode = ks.mode;
            if (d->store && ks.n > d->store_cap)
                rc = PK_ERR_SPACE;
            for (unsigned i = 0; rc == PK_OK && i < ks.n; i++) {
                if (d->store)
                    d->store[d->nstore++] = ks.k[i];
                else
                    d->keys.k[d->keys.n++] = ks.k[i];
            }
        }
        pk_wipe(&ks, sizeof ks);
        return rc;
    }
    uint8_t mode = pk_rd_u8(r);
    unsigned n = pk_rd_u16(r);
    unsigned cap = d->store ? d->store_cap : PK_REG_MAX_KEYS;
    if (r->err != PK_OK || (mode != PK_REG_MODE_PAIRS && mode != PK_REG_MODE_POOL) ||
        n > PK_REG_PEERS_MAX || (mode == PK_REG_MODE_POOL && n > PK_REG_MAX_KEYS)) {
        r->err = PK_ERR_MALFORMED;
        return PK_OK;
    }
    if (n > cap)
        return PK_ERR_SPACE;
    d->keys.mode = mode;
    pk_reg_key_t *t = d->store ? d->store : d->keys.k;
    for (unsigned i = 0; i < n && r->err == PK_OK; i++) {
        pk_reg_key_t *k = &t[i];
        memset(k, 0, sizeof *k);
        k->ksi = pk_rd_u32(r);
        pk_rd_copy(r, k->key, PK_REG_ROOT_KEY_LEN);
        pk_rd_t sb = pk_rd_block8(r, PK_REG_ID_MAX);
        if (d->store)
            d->nstore = i + 1; /* counted at once: a failure wipes what was read */
        else
            d->keys.n = (uint8_t)(i + 1);
        if (sb.err != PK_OK ||
            (mode == PK_REG_MODE_PAIRS && pk_reg_id_set(&k->peer, sb.p, sb.left) != PK_OK) ||
            (mode == PK_REG_MODE_POOL && sb.left != 0) ||
            (mode == PK_REG_MODE_PAIRS && i > 0 && pk_reg_id_cmp(&t[i - 1].peer, &k->peer) >= 0)) {
            r->err = PK_ERR_MALFORMED;
            break;
        }
        for (unsigned j = 0; j < i; j++) /* KSIs are unique within a set */
            if (t[j].ksi == k->ksi)
                r->err = PK_ERR_MALFORMED;
    }
    unsigned missing = pk_rd_u16(r);
    /* one encoding per state: what version 1 can say is never version 2 */
    if (r->err == PK_OK && (missing > PK_REG_PEERS_MAX || (n <= PK_REG_MAX_KEYS && missing == 0)))
        r->err = PK_ERR_MALFORMED;
    d->keys_missing = missing;
    return PK_OK;
}

int pk_device_reg_import(pk_reg_dev_t *d, const pk_reg_dev_cfg_t *cfg, const uint8_t *buf,
                         size_t len)
{
    pk_rd_t r;
    pk_reg_id_t dev, node, temp;
    uint8_t k_reg[PK_REG_KREG_LEN];
    uint16_t sid;
    rx_state_t ctr;
    pk_reg_mkset_t mk;
    pk_reg_ind_t ind[PK_REG_MAX_IND];
    unsigned nind, ind_next;
    uint8_t ver = 0;
    int rc;

    memset(ind, 0, sizeof ind);
    memset(&mk, 0, sizeof mk);
    if ((rc = pk_reg_dev_init(d, cfg)) != PK_OK)
        return rc;
    pk_rd_init(&r, buf, len);
    if ((rc = rd_head_ver(&r, REG_MAGIC, &ver)) != PK_OK)
        goto out;
    if (ver != STATE_VER && ver != REG_VER2) {
        rc = PK_ERR_VERSION;
        goto out;
    }
    rd_id(&r, &dev);
    rd_id(&r, &node);
    pk_rd_copy(&r, k_reg, sizeof k_reg);
    sid = pk_rd_u16(&r);
    rd_ctr(&r, &ctr);
    rd_id(&r, &temp);
    /* the keys go straight into d's table (d is cleared on failure) */
    if (r.err == PK_OK && (rc = rd_keys(&r, ver, d)) != PK_OK)
        goto out;
    nind = pk_rd_u8(&r);
    if (nind > PK_REG_MAX_IND)
        r.err = PK_ERR_MALFORMED;
    for (unsigned i = 0, prev = 0; i < nind && r.err == PK_OK; i++) {
        unsigned slot = pk_rd_u8(&r);
        /* ascending, as export writes them: one encoding per state */
        if (slot >= PK_REG_MAX_IND || (i > 0 && slot <= prev)) {
            r.err = PK_ERR_MALFORMED;
            break;
        }
        prev = slot;
        pk_reg_ind_t *in = &ind[slot];
        in->used = 1;
        in->role = pk_rd_u8(&r);
        in->ksi = pk_rd_u32(&r);
        pk_rd_copy(&r, in->param, PK_REG_PARAM_LEN);
        rd_id(&r, &in->peer);
        if (in->role != PK_REG_ROLE_INITIATOR && in->role != PK_REG_ROLE_RESPONDER)
            r.err = PK_ERR_MALFORMED;
    }
    ind_next = pk_rd_u8(&r);
    if (ind_next >= PK_REG_MAX_IND)
        r.err = PK_ERR_MALFORMED;
    pk_reg_mkset_read_opt(&r, &mk);
    if ((rc = pk_rd_done(&r)) != PK_OK)
        goto out;
    if (!pk_reg_id_eq(&dev, &d->id) || !pk_reg_id_eq(&node, &d->node_id)) {
        rc = PK_ERR_INVAL;
        goto out;
    }
    if ((rc = pk_reg_chan_init(&d->chan, k_reg, sid, 0)) != PK_OK)
        goto out;
    if ((rc = restore_ctr(&d->chan, &ctr)) != PK_OK)
        goto out;
    memcpy(d->k_reg, k_reg, sizeof k_reg);
    d->temp_id = temp;
    d->keys.mk = mk;
    memcpy(d->ind, ind, sizeof ind);
    d->ind_next = ind_next;
    d->state = PK_REG_D_REGISTERED;
out:
    if (rc != PK_OK)
        pk_reg_dev_clear(d);
    pk_wipe(k_reg, sizeof k_reg);
    pk_wipe(&mk, sizeof mk);
    pk_wipe(ind, sizeof ind);
    return rc;
}

int pk_device_link_ksi(const pk_reg_dev_t *d, const pk_reg_id_t *peer, uint32_t *ksi)
{
    if (d->state != PK_REG_D_REGISTERED)
        return PK_ERR_NOTFOUND;
    if (d->keys.mode == PK_REG_MODE_PAIRS)
        return pk_reg_dev_pair_ksi(d, peer, ksi);
    for (unsigned i = 0; i < PK_REG_MAX_IND; i++) {
        const pk_reg_ind_t *in = &d->ind[i];
        if (in->used && in->role == PK_REG_ROLE_INITIATOR && pk_reg_id_eq(&in->peer, peer)) {
            *ksi = in->ksi;
            return PK_OK;
        }
    }
    return PK_ERR_NOTFOUND;
}

/* ================= links ================= */

int pk_device_link_export(const pk_link_t *l, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    if (l->state != PK_LINK_S_ESTABLISHED)
        return PK_ERR_STATE;
    pk_wr_init(&w, buf, cap);
    pk_wr_bytes(&w, LINK_MAGIC, 4);
    pk_wr_u8(&w, STATE_VER);
    pk_wr_u8(&w, l->role);
    pk_wr_block8(&w, l->self_id, l->self_len);
    pk_wr_block8(&w, l->peer_id, l->peer_len);
    pk_wr_u32(&w, l->ksi);
    pk_wr_u16(&w, l->sid);
    pk_wr_u8(&w, l->alg);
    pk_wr_u8(&w, l->caps);
    pk_wr_bytes(&w, l->nonce1, PK_LINK_NONCE_LEN);
    pk_wr_bytes(&w, l->nonce2, PK_LINK_NONCE_LEN);
    pk_wr_u64(&w, pk_record_tx_next(&l->rec));
    wr_rx(&w, &l->rec);
    if (pk_wr_ok(&w) != PK_OK)
        return PK_ERR_SPACE;
    *len = w.len;
    return PK_OK;
}

typedef struct link_blob {
    uint8_t role;
    pk_reg_id_t self, peer;
    uint32_t ksi;
    uint16_t sid;
    uint8_t alg, caps;
    uint8_t n1[PK_LINK_NONCE_LEN], n2[PK_LINK_NONCE_LEN];
    rx_state_t ctr;
} link_blob_t;

static int link_parse(const uint8_t *buf, size_t len, link_blob_t *b)
{
    pk_rd_t r;
    int rc;
    pk_rd_init(&r, buf, len);
    if ((rc = rd_head(&r, LINK_MAGIC)) != PK_OK)
        return rc;
    b->role = pk_rd_u8(&r);
    rd_id(&r, &b->self);
    rd_id(&r, &b->peer);
    b->ksi = pk_rd_u32(&r);
    b->sid = pk_rd_u16(&r);
    b->alg = pk_rd_u8(&r);
    b->caps = pk_rd_u8(&r);
    pk_rd_copy(&r, b->n1, PK_LINK_NONCE_LEN);
    pk_rd_copy(&r, b->n2, PK_LINK_NONCE_LEN);
    rd_ctr(&r, &b->ctr);
    if (b->role != PK_LINK_INITIATOR && b->role != PK_LINK_RESPONDER)
        r.err = PK_ERR_MALFORMED;
    if (b->alg != PK_LINK_ALG_AES128GCM_HMAC)
        r.err = PK_ERR_MALFORMED;
    return pk_rd_done(&r);
}

int pk_device_link_peek(const uint8_t *buf, size_t len, int *role, const uint8_t **peer,
                        size_t *peer_len)
{
    link_blob_t b;
    if (link_parse(buf, len, &b) != PK_OK)
        return PK_ERR_MALFORMED;
    /* the peer id sits after magic, ver, role and the self id */
    size_t off = 6 + 1 + b.self.len + 1;
    *role = b.role;
    *peer = buf + off;
    *peer_len = b.peer.len;
    return PK_OK;
}

/* The session keys of a restored link, as its handshake made them. */
static int link_rekey(pk_link_t *l)
{
    return pk_link_session_keys(l, l->nonce2, l->sid, l->alg, l->pik, &l->rec);
}

int pk_device_link_import(pk_link_t *l, const pk_link_cfg_t *cfg, const uint8_t *buf, size_t len)
{
    link_blob_t b;
    int rc;
    memset(l, 0, sizeof *l);
    if ((rc = link_parse(buf, len, &b)) != PK_OK)
        return rc;
    if ((rc = pk_link_init(l, cfg, b.role)) != PK_OK)
        return rc;
    if (b.self.len != l->self_len || memcmp(b.self.b, l->self_id, l->self_len) != 0) {
        rc = PK_ERR_INVAL;
        goto out;
    }
    l->peer_len = b.peer.len;
    memcpy(l->peer_id, b.peer.b, b.peer.len);
    l->ksi = b.ksi;
    l->sid = b.sid;
    l->alg = b.alg;
    l->caps = b.caps;
    memcpy(l->nonce1, b.n1, sizeof b.n1);
    memcpy(l->nonce2, b.n2, sizeof b.n2);
    if ((rc = link_rekey(l)) != PK_OK)
        goto out;
    if ((rc = restore_ctr(&l->rec, &b.ctr)) != PK_OK)
        goto out;
    l->deadline = UINT64_MAX;
    l->state = PK_LINK_S_ESTABLISHED;
out:
    if (rc != PK_OK)
        pk_link_clear(l);
    return rc;
}
