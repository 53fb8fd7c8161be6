/* The device's registration core (see reg.h). */
#include <string.h>

#include "proto/reg/reg.h"

int pk_reg_dev_init(pk_reg_dev_t *d, const pk_reg_dev_cfg_t *cfg)
{
    if (!cfg->k || (cfg->klen != 16 && cfg->klen != 32) ||
        !pk_reg_id_valid(cfg->dev_id.b, cfg->dev_id.len) ||
        !pk_reg_id_valid(cfg->node_id.b, cfg->node_id.len) || cfg->max_tries < 1 ||
        cfg->max_tries > 16 || cfg->rto_ms == 0)
        return PK_ERR_INVAL;
    memset(d, 0, sizeof *d);
    d->id = cfg->dev_id;
    d->node_id = cfg->node_id;
    memcpy(d->k, cfg->k, cfg->klen);
    d->klen = (uint8_t)cfg->klen;
    d->rto_ms = cfg->rto_ms;
    d->max_tries = cfg->max_tries;
    d->deadline = UINT64_MAX;
    d->state = PK_REG_D_IDLE;
    return PK_OK;
}

/* Forgets everything of the previous run (keeps identity and K). */
static void dev_reset(pk_reg_dev_t *d)
{
    pk_record_clear(&d->chan);
    pk_wipe(d->nonce_d, sizeof d->nonce_d);
    pk_wipe(d->rand, sizeof d->rand);
    pk_wipe(d->k_reg, sizeof d->k_reg);
    pk_wipe(d->tx, sizeof d->tx);
    pk_wipe(&d->temp_id, sizeof d->temp_id);
    pk_wipe(&d->keys, sizeof d->keys);
    pk_wipe(d->ind, sizeof d->ind);
    d->txlen = 0;
    d->ind_next = 0;
    d->tries = 0;
    d->deadline = UINT64_MAX;
}

static int send_tx(pk_reg_dev_t *d, pk_out_t *out)
{
    uint8_t *p = pk_out_push(out, PK_ACT_SEND, d->txtype, 0, d->txlen);
    if (!p)
        return PK_ERR_SPACE;
    memcpy(p, d->tx, d->txlen);
    return PK_OK;
}

static uint64_t backoff(const pk_reg_dev_t *d, uint64_t now_ms)
{
    unsigned shift = d->tries > 1 ? d->tries - 1 : 0;
    if (shift > 6)
        shift = 6;
    return now_ms + (d->rto_ms << shift);
}

int pk_reg_dev_start(pk_reg_dev_t *d, const pk_rng_t *rng, uint64_t now_ms, pk_out_t *out)
{
    pk_reg_request_t m;
    uint8_t nonce[PK_REG_NONCE_LEN];
    uint8_t buf[PK_REG_REQUEST_LEN];
    size_t len = 0;
    int rc;

    if (d->state == PK_REG_D_WAIT_CHALLENGE || d->state == PK_REG_D_WAIT_ACCEPT)
        return PK_ERR_STATE;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < PK_REG_REQUEST_LEN)
        return PK_ERR_SPACE;
    if ((rc = pk_rng_fill(rng, nonce, sizeof nonce)) != PK_OK)
        return rc;
    memcpy(m.nonce_d, nonce, sizeof nonce);
    m.dev = d->id;
    if ((rc = pk_reg_request_encode(&m, buf, sizeof buf, &len)) != PK_OK)
        return rc;
    dev_reset(d);
    memcpy(d->nonce_d, nonce, sizeof nonce);
    memcpy(d->tx, buf, len);
    d->txlen = len;
    d->txtype = PK_REG_T_REQUEST;
    d->tries = 1;
    d->deadline = backoff(d, now_ms);
    d->state = PK_REG_D_WAIT_CHALLENGE;
    return send_tx(d, out); /* room checked above */
}

static int on_challenge(pk_reg_dev_t *d, const uint8_t *msg, size_t len, uint64_t now_ms,
                        pk_out_t *out)
{
    pk_reg_challenge_t c;
    pk_reg_response_t r;
    uint8_t autn[PK_REG_AUTN_LEN], k_reg[PK_REG_KREG_LEN];
    uint8_t buf[PK_REG_RESPONSE_MAX];
    size_t blen = 0;
    int rc = pk_reg_challenge_decode(msg, len, &c);
    if (rc != PK_OK)
        return rc;
    memset(&r, 0, sizeof r);
    if (d->state != PK_REG_D_WAIT_CHALLENGE ||
        memcmp(c.nonce_d, d->nonce_d, PK_REG_NONCE_LEN) != 0) {
        rc = PK_ERR_STATE;
        goto out;
    }
    if (out->n >= PK_OUT_MAX || out->cap - out->used < PK_REG_RESPONSE_MAX) {
        rc = PK_ERR_SPACE;
        goto out;
    }
    rc = pk_reg_derive(d->k, d->klen, c.rand, d->nonce_d, &d->node_id, &d->id, autn, r.res, k_reg);
    if (rc != PK_OK)
        goto out;
    /* the network proves itself first: nothing is sent for a bad AUTN */
    if (!pk_ct_eq(autn, c.autn, PK_REG_AUTN_LEN)) {
        rc = PK_ERR_AUTH;
        goto out;
    }
    memcpy(r.nonce_d, d->nonce_d, PK_REG_NONCE_LEN);
    r.dev = d->id;
    if ((rc = pk_reg_response_encode(&r, buf, sizeof buf, &blen)) != PK_OK)
        goto out;
    /* commit */
    memcpy(d->rand, c.rand, PK_REG_RAND_LEN);
    memcpy(d->k_reg, k_reg, PK_REG_KREG_LEN);
    memcpy(d->tx, buf, blen);
    d->txlen = blen;
    d->txtype = PK_REG_T_RESPONSE;
    d->tries = 1;
    d->deadline = backoff(d, now_ms);
    d->state = PK_REG_D_WAIT_ACCEPT;
    rc = send_tx(d, out);
out:
    pk_wipe(autn, sizeof autn);
    pk_wipe(k_reg, sizeof k_reg);
    pk_wipe(&r, sizeof r);
    pk_wipe(buf, sizeof buf);
    return rc;
}

static int on_accept(pk_reg_dev_t *d, const uint8_t *msg, size_t len, pk_out_t *out)
{
    pk_record_hdr_t hdr;
    pk_record_t rec;
    pk_reg_accept_pt_t pt; /* ~3.4 KB on the stack, wiped at out */
    uint8_t ptbuf[PK_REG_ACCEPT_PT_MAX];
    size_t ptlen = 0;
    uint8_t type = 0;
    int rc;

    memset(&rec, 0, sizeof rec);
    memset(&pt, 0, sizeof pt);
    if (len < PK_REG_ACCEPT_MIN || len > PK_REG_ACCEPT_MAX)
        return PK_ERR_MALFORMED;
    if (d->state != PK_REG_D_WAIT_ACCEPT)
        return PK_ERR_STATE;
    if (out->n >= PK_OUT_MAX)
        return PK_ERR_SPACE;
    if ((rc = pk_record_peek(msg, len, &hdr)) != PK_OK)
        return rc;
    if (hdr.epoch != 0 || hdr.counter != PK_RECORD_COUNTER_FIRST)
        return PK_ERR_MALFORMED;
    if ((rc = pk_reg_chan_init(&rec, d->k_reg, hdr.session_id, 0)) != PK_OK)
        return rc;
    rc = pk_record_open(&rec, msg, len, &type, ptbuf, sizeof ptbuf, &ptlen);
    if (rc != PK_OK)
        goto out;
    rc = pk_reg_accept_pt_decode(ptbuf, ptlen, &pt);
    if (rc != PK_OK)
        goto out;
    if (type != PK_REG_T_ACCEPT || memcmp(pt.nonce_d, d->nonce_d, PK_REG_NONCE_LEN) != 0) {
        rc = PK_ERR_STATE; /* authentic but not for this run */
        goto out;
    }
    /* commit */
    d->chan = rec;
    memset(&rec, 0, sizeof rec); /* ownership moved */
    d->temp_id = pt.temp_id;
    d->keys = pt.keys;
    pk_wipe(d->tx, sizeof d->tx);
    d->txlen = 0;
    d->deadline = UINT64_MAX;
    d->state = PK_REG_D_REGISTERED;
    pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_REGISTERED, 0, 0); /* room checked */
out:
    pk_record_clear(&rec);
    pk_wipe(&pt, sizeof pt);
    pk_wipe(ptbuf, sizeof ptbuf);
    return rc;
}

static int on_link(pk_reg_dev_t *d, const uint8_t *msg, size_t len, pk_out_t *out)
{
    pk_reg_link_pt_t m;
    uint8_t type = 0;
    int rc;
    if (d->state != PK_REG_D_REGISTERED)
        return PK_ERR_STATE;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < 1 + PK_REG_ID_MAX + 1)
        return PK_ERR_SPACE;
    if (len < 1 || msg[0] == PK_REG_T_LINK_REQ) /* uplink only */
        return PK_ERR_MALFORMED;
    rc = pk_reg_chan_open_link(&d->chan, msg, len, &type, &m);
    if (rc != PK_OK)
        return rc;
    if (type == PK_REG_T_LINK_IND) {
        pk_reg_ind_t *slot = NULL;
        for (unsigned i = 0; i < PK_REG_MAX_IND; i++)
            if (d->ind[i].used && pk_reg_id_eq(&d->ind[i].peer, &m.peer))
                slot = &d->ind[i]; /* a new indication for a peer replaces the old */
        if (!slot) {
            slot = &d->ind[d->ind_next];
            d->ind_next = (d->ind_next + 1) % PK_REG_MAX_IND;
        }
        slot->used = 1;
        slot->role = m.role;
        slot->ksi = m.ksi;
        memcpy(slot->param, m.param, PK_REG_PARAM_LEN);
        slot->peer = m.peer;
        uint8_t *p = pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_LINK_IND, 0, m.peer.len);
        memcpy(p, m.peer.b, m.peer.len);
    } else {
        uint8_t *p = pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_LINK_REJ, 0, m.peer.len + 1u);
        memcpy(p, m.peer.b, m.peer.len);
        p[m.peer.len] = m.reason;
    }
    pk_wipe(&m, sizeof m);
    return PK_OK;
}

uint32_t pk_reg_mkset_newest(const pk_reg_mkset_t *mk)
{
    uint32_t id = 0;
    for (unsigned i = 0; i < mk->n && i < PK_REG_MAX_MK; i++)
        if (mk->k[i].id > id)
            id = mk->k[i].id;
    return id;
}

/* 1 when a and b name the same keys (IDs, times; the values follow the IDs). */
static int mkset_same(const pk_reg_mkset_t *a, const pk_reg_mkset_t *b)
{
    if (a->n != b->n || a->domain_id != b->domain_id)
        return 0;
    for (unsigned i = 0; i < a->n && i < PK_REG_MAX_MK; i++)
        if (a->k[i].id != b->k[i].id || a->k[i].not_before_ms != b->k[i].not_before_ms ||
            a->k[i].expiry_ms != b->k[i].expiry_ms)
            return 0;
    return 1;
}

static int on_mk_update(pk_reg_dev_t *d, const uint8_t *msg, size_t len, pk_out_t *out)
{
    pk_reg_mkset_t mk;
    uint32_t held = 0;
    uint8_t type = 0;
    int rc;
    if (d->state != PK_REG_D_REGISTERED)
        return PK_ERR_STATE;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < 1)
        return PK_ERR_SPACE;
    rc = pk_reg_chan_open_mk(&d->chan, msg, len, &type, &held, &mk);
    if (rc != PK_OK)
        return rc;
    if (type != PK_REG_T_MK_UPDATE) { /* an uplink type under the downlink key: cannot be */
        rc = PK_ERR_MALFORMED;
        goto out;
    }
    uint32_t newest = pk_reg_mkset_newest(&mk);
    uint8_t changed = 0;
    if (mk.n > 0) {
        if (d->keys.mk.n > 0 && mk.domain_id == d->keys.mk.domain_id &&
            newest < pk_reg_mkset_newest(&d->keys.mk)) {
            rc = PK_ERR_STATE; /* older than what we hold: a stale answer */
            goto out;
        }
        changed = !mkset_same(&mk, &d->keys.mk);
        /* commit */
        pk_wipe(&d->keys.mk, sizeof d->keys.mk);
        d->keys.mk = mk;
    }
    uint8_t *p = pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_MK_UPDATE, newest, 1); /* room checked */
    p[0] = changed;
out:
    pk_wipe(&mk, sizeof mk);
    return rc;
}

int pk_reg_dev_mk_refresh(pk_reg_dev_t *d, pk_out_t *out)
{
    uint8_t buf[PK_REG_MK_REFRESH_MAX];
    size_t len = 0;
    if (d->state != PK_REG_D_REGISTERED)
        return PK_ERR_STATE;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < sizeof buf)
        return PK_ERR_SPACE;
    int rc = pk_reg_chan_seal_mk(&d->chan, PK_REG_T_MK_REFRESH, pk_reg_mkset_newest(&d->keys.mk),
                                 NULL, buf, sizeof buf, &len);
    if (rc != PK_OK)
        return rc;
    uint8_t *p = pk_out_push(out, PK_ACT_SEND, PK_REG_T_MK_REFRESH, 0, len);
    memcpy(p, buf, len);
    return PK_OK;
}

int pk_reg_dev_input(pk_reg_dev_t *d, const uint8_t *msg, size_t len, uint64_t now_ms,
                     pk_out_t *out)
{
    if (!msg || len < 1)
        return PK_ERR_MALFORMED;
    switch (msg[0]) {
    case PK_REG_T_CHALLENGE: return on_challenge(d, msg, len, now_ms, out);
    case PK_REG_T_ACCEPT: return on_accept(d, msg, len, out);
    case PK_REG_T_LINK_IND:
    case PK_REG_T_LINK_REJ: return on_link(d, msg, len, out);
    case PK_REG_T_MK_UPDATE: return on_mk_update(d, msg, len, out);
    default: return PK_ERR_MALFORMED;
    }
}

int pk_reg_dev_timeout(pk_reg_dev_t *d, uint64_t now_ms, pk_out_t *out)
{
    if (d->deadline == UINT64_MAX || now_ms < d->deadline)
        return PK_OK;
    if (d->state != PK_REG_D_WAIT_CHALLENGE && d->state != PK_REG_D_WAIT_ACCEPT) {
        d->deadline = UINT64_MAX;
        return PK_OK;
    }
    if (out->n >= PK_OUT_MAX || out->cap - out->used < d->txlen)
        return PK_ERR_SPACE;
    if (d->tries >= d->max_tries) {
        dev_reset(d);
        d->state = PK_REG_D_FAILED;
        pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_FAILED, 0, 0);
        return PK_OK;
    }
    d->tries++;
    d->deadline = backoff(d, now_ms);
    return send_tx(d, out);
}

uint64_t pk_reg_dev_next_deadline(const pk_reg_dev_t *d)
{
    return d->deadline;
}

int pk_reg_dev_link_request(pk_reg_dev_t *d, const pk_reg_id_t *peer, pk_out_t *out)
{
    pk_reg_link_pt_t m;
    uint8_t buf[PK_REG_SEALED_MAX];
    size_t len = 0;
    int rc;
    if (d->state != PK_REG_D_REGISTERED)
        return PK_ERR_STATE;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < PK_REG_SEALED_MAX)
        return PK_ERR_SPACE;
    memset(&m, 0, sizeof m);
    m.peer = *peer;
    rc = pk_reg_chan_seal_link(&d->chan, PK_REG_T_LINK_REQ, &m, buf, sizeof buf, &len);
    if (rc != PK_OK)
        return rc;
    uint8_t *p = pk_out_push(out, PK_ACT_SEND, PK_REG_T_LINK_REQ, 0, len);
    memcpy(p, buf, len);
    return PK_OK;
}

int pk_reg_dev_lookup(void *ctx, uint32_t ksi, const uint8_t *peer, size_t peer_len,
                      uint8_t k_d[PK_REG_ROOT_KEY_LEN])
{
    const pk_reg_dev_t *d = ctx;
    pk_reg_id_t p;
    if (d->state != PK_REG_D_REGISTERED || pk_reg_id_set(&p, peer, peer_len) != PK_OK)
        goto none;
    if (d->keys.mode == PK_REG_MODE_PAIRS) {
        for (unsigned i = 0; i < d->keys.n; i++) {
            if (d->keys.k[i].ksi == ksi && pk_reg_id_eq(&d->keys.k[i].peer, &p)) {
                memcpy(k_d, d->keys.k[i].key, PK_REG_ROOT_KEY_LEN);
                return PK_OK;
            }
        }
        goto none;
    }
    if (d->keys.n == 0)
        goto none;
    for (unsigned i = 0; i < PK_REG_MAX_IND; i++) {
        const pk_reg_ind_t *in = &d->ind[i];
        if (!in->used || in->ksi != ksi || !pk_reg_id_eq(&in->peer, &p))
            continue;
        /* the pool key of entry (KSI mod n) in ascending pool-key KSI order
         * (KSIs are distinct within a set: exactly one entry has that rank) */
        unsigned want = (unsigned)(ksi % d->keys.n);
        for (unsigned j = 0; j < d->keys.n; j++) {
            unsigned rank = 0;
            for (unsigned x = 0; x < d->keys.n; x++)
                rank += d->keys.k[x].ksi < d->keys.k[j].ksi;
            if (rank != want)
                continue;
            const pk_reg_id_t *ini = in->role == PK_REG_ROLE_INITIATOR ? &d->id : &in->peer;
            const pk_reg_id_t *rsp = in->role == PK_REG_ROLE_INITIATOR ? &in->peer : &d->id;
            if (pk_reg_pool_link_key(d->keys.k[j].key, in->param, ini, rsp, k_d) == PK_OK)
                return PK_OK;
            goto none;
        }
    }
none:
    pk_wipe(k_d, PK_REG_ROOT_KEY_LEN);
    return PK_ERR_NOTFOUND;
}

int pk_reg_dev_pair_ksi(const pk_reg_dev_t *d, const pk_reg_id_t *peer, uint32_t *ksi)
{
    if (d->state != PK_REG_D_REGISTERED || d->keys.mode != PK_REG_MODE_PAIRS)
        return PK_ERR_NOTFOUND;
    for (unsigned i = 0; i < d->keys.n; i++) {
        if (pk_reg_id_eq(&d->keys.k[i].peer, peer)) {
            *ksi = d->keys.k[i].ksi;
            return PK_OK;
        }
    }
    return PK_ERR_NOTFOUND;
}

void pk_reg_dev_clear(pk_reg_dev_t *d)
{
    pk_record_clear(&d->chan);
    pk_wipe(d, sizeof *d);
}
