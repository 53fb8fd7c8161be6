/* The device's registration core (see reg.h). */
#include <string.h>

#include "proto/reg/reg.h"

int pk_reg_dev_init(pk_reg_dev_t *d, const pk_reg_dev_cfg_t *cfg)
{
    if (!cfg->k || (cfg->klen != 16 && cfg->klen != 32) ||
        !pk_reg_id_valid(cfg->dev_id.b, cfg->dev_id.len) ||
        !pk_reg_id_valid(cfg->node_id.b, cfg->node_id.len) || cfg->max_tries < 1 ||
        cfg->max_tries > 16 || cfg->rto_ms == 0 || (cfg->keys && cfg->nkeys == 0))
        return PK_ERR_INVAL;
    memset(d, 0, sizeof *d);
    if (cfg->keys) {
        d->store = cfg->keys;
        d->store_cap = (uint32_t)(cfg->nkeys < PK_REG_PEERS_MAX ? cfg->nkeys : PK_REG_PEERS_MAX);
    }
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

/* ---- the key table: the caller's store, or keys.k inside d ---- */

static uint32_t tbl_n(const pk_reg_dev_t *d)
{
    return d->store ? d->nstore : d->keys.n;
}

static uint32_t tbl_cap(const pk_reg_dev_t *d)
{
    return d->store ? d->store_cap : PK_REG_MAX_KEYS;
}

/* Wipes the table's entries in use (not mode or master keys). */
static void tbl_clear(pk_reg_dev_t *d)
{
    if (d->store) {
        pk_wipe(d->store, d->nstore * sizeof *d->store);
        d->nstore = 0;
    } else {
        pk_wipe(d->keys.k, sizeof d->keys.k);
        d->keys.n = 0;
    }
}

/* Appends the page's entries while there is room; returns how many did not fit. */
static unsigned tbl_append(pk_reg_dev_t *d, const pk_reg_keyset_t *page)
{
    unsigned i = 0;
    for (; i < page->n && tbl_n(d) < tbl_cap(d); i++) {
        if (d->store)
            d->store[d->nstore++] = page->k[i];
        else
            d->keys.k[d->keys.n++] = page->k[i];
    }
    return page->n - i;
}

const pk_reg_key_t *pk_reg_dev_keys(const pk_reg_dev_t *d, size_t *n)
{
    *n = tbl_n(d);
    return d->store ? d->store : d->keys.k;
}

uint32_t pk_reg_dev_keys_missing(const pk_reg_dev_t *d)
{
    return d->keys_missing;
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
    tbl_clear(d);
    pk_wipe(&d->keys, sizeof d->keys);
    pk_wipe(d->ind, sizeof d->ind);
    pk_wipe(&d->cursor, sizeof d->cursor);
    pk_wipe(d->tag, sizeof d->tag);
    d->tag_set = 0;
    d->restarts = 0;
    d->total = 0;
    d->keys_missing = 0;
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

    if (d->state == PK_REG_D_WAIT_CHALLENGE || d->state == PK_REG_D_WAIT_ACCEPT ||
        d->state == PK_REG_D_WAIT_KEYS)
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

static int on_accept(pk_reg_dev_t *d, const uint8_t *msg, size_t len, uint64_t now_ms,
                     pk_out_t *out)
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
    /* the first page of a set: a last page holds the whole set */
    if (pt.keys.paged && !pt.keys.more && pt.keys.total != pt.keys.n) {
        rc = PK_ERR_MALFORMED;
        goto out;
    }
    /* more to fetch: the first KEYS_REQ is sealed on the new channel before
     * anything is committed (a full store fetches nothing more) */
    int fetch = pt.keys.paged && pt.keys.more && pt.keys.n < tbl_cap(d);
    if (fetch) {
        if (out->cap - out->used < PK_REG_KEYS_REQ_MAX) {
            rc = PK_ERR_SPACE;
            goto out;
        }
        rc = pk_reg_chan_seal_keys_req(&rec, &pt.keys.k[pt.keys.n - 1].peer, d->tx, sizeof d->tx,
                                       &d->txlen);
        if (rc != PK_OK)
            goto out;
    }
    /* commit */
    d->chan = rec;
    memset(&rec, 0, sizeof rec); /* ownership moved */
    d->temp_id = pt.temp_id;
    tbl_clear(d);
    d->keys.mode = pt.keys.mode;
    d->keys.mk = pt.keys.mk;
    unsigned lost = tbl_append(d, &pt.keys);
    d->keys_missing = pt.keys.paged ? (uint32_t)(pt.keys.total - tbl_n(d)) : lost;
    d->total = pt.keys.paged ? pt.keys.total : pt.keys.n;
    memcpy(d->tag, pt.keys.tag, PK_REG_TAG_LEN);
    d->tag_set = 1;
    d->restarts = 0;
    if (fetch) {
        d->cursor = pt.keys.k[pt.keys.n - 1].peer;
        d->txtype = PK_REG_T_KEYS_REQ;
        d->tries = 1;
        d->deadline = backoff(d, now_ms);
        d->state = PK_REG_D_WAIT_KEYS;
        rc = send_tx(d, out); /* room checked */
        goto out;
    }
    pk_wipe(d->tx, sizeof d->tx);
    d->txlen = 0;
    d->deadline = UINT64_MAX;
    d->state = PK_REG_D_REGISTERED;
    pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_REGISTERED, d->keys_missing, 0); /* room checked */
out:
    pk_record_clear(&rec);
    pk_wipe(&pt, sizeof pt);
    pk_wipe(ptbuf, sizeof ptbuf);
    return rc;
}

/* Seals a KEYS_REQ for d->cursor on the channel (a new record counter) into
 * d->tx and sends it; the caller checked out's room. */
static int send_keys_req(pk_reg_dev_t *d, pk_out_t *out)
{
    int rc = pk_reg_chan_seal_keys_req(&d->chan, &d->cursor, d->tx, sizeof d->tx, &d->txlen);
    if (rc != PK_OK)
        return rc;
    d->txtype = PK_REG_T_KEYS_REQ;
    return send_tx(d, out);
}

/* The run fails: everything of it is wiped. */
static void dev_fail(pk_reg_dev_t *d, pk_out_t *out)
{
    dev_reset(d);
    d->state = PK_REG_D_FAILED;
    pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_FAILED, 0, 0);
}

/*
 * A KEYS page in WAIT_KEYS (reg.h). Every page of one run must carry the tag
 * the run started with: a page of another set means the kms's set changed
 * between pages, so the keys taken so far may miss a key added before the
 * cursor or hold one removed; the run starts the paging again from the
 * start (bounded), so what the device ends with is always one whole set as
 * the kms had it at one time - never a duplicate, never a silent gap.
 */
static int on_keys(pk_reg_dev_t *d, const uint8_t *msg, size_t len, uint64_t now_ms, pk_out_t *out)
{
    pk_reg_keyset_t page; /* ~3.4 KB on the stack, wiped at out */
    pk_reg_id_t after;
    int rc;
    if (d->state != PK_REG_D_WAIT_KEYS)
        return PK_ERR_STATE;
    if (out->n + 1 >= PK_OUT_MAX || out->cap - out->used < PK_REG_KEYS_REQ_MAX)
        return PK_ERR_SPACE;
    rc = pk_reg_chan_open_keys(&d->chan, msg, len, &after, &page);
    if (rc != PK_OK)
        return rc;
    if (!pk_reg_id_eq(&after, &d->cursor)) {
        rc = PK_ERR_STATE; /* a late answer to an earlier request */
        goto out;
    }
    if (d->tag_set && (!pk_ct_eq(page.tag, d->tag, PK_REG_TAG_LEN) || page.total != d->total)) {
        /* the set changed between pages: start again from the start */
        if (d->restarts >= PK_REG_KEYS_RESTARTS) {
            dev_fail(d, out);
            goto out;
        }
        d->restarts++;
        tbl_clear(d);
        pk_wipe(&d->cursor, sizeof d->cursor);
        d->tag_set = 0;
        d->tries = 1;
        d->deadline = backoff(d, now_ms);
        rc = send_keys_req(d, out);
        goto out;
    }
    if (!d->tag_set) { /* the first page after a restart names the set */
        memcpy(d->tag, page.tag, PK_REG_TAG_LEN);
        d->total = page.total;
        d->tag_set = 1;
    }
    (void)tbl_append(d, &page);
    if (page.more && page.n > 0 && tbl_n(d) < tbl_cap(d)) {
        d->cursor = page.k[page.n - 1].peer;
        d->tries = 1;
        d->deadline = backoff(d, now_ms);
        rc = send_keys_req(d, out);
        goto out;
    }
    /* the last page, or a full store: done */
    d->keys_missing = d->total > tbl_n(d) ? d->total - tbl_n(d) : 0;
    pk_wipe(d->tx, sizeof d->tx);
    d->txlen = 0;
    d->deadline = UINT64_MAX;
    d->state = PK_REG_D_REGISTERED;
    pk_out_push(out, PK_ACT_EVENT, PK_REG_EV_REGISTERED, d->keys_missing, 0); /* room checked */
out:
    pk_wipe(&page, sizeof page);
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
    case PK_REG_T_ACCEPT: return on_accept(d, msg, len, now_ms, out);
    case PK_REG_T_KEYS: return on_keys(d, msg, len, now_ms, out);
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
    if (d->state != PK_REG_D_WAIT_CHALLENGE && d->state != PK_REG_D_WAIT_ACCEPT &&
        d->state != PK_REG_D_WAIT_KEYS) {
        d->deadline = UINT64_MAX;
        return PK_OK;
    }
    if (out->n >= PK_OUT_MAX || out->cap - out->used < sizeof d->tx)
        return PK_ERR_SPACE;
    if (d->tries >= d->max_tries) {
        dev_fail(d, out);
        return PK_OK;
    }
    d->tries++;
    d->deadline = backoff(d, now_ms);
    if (d->state == PK_REG_D_WAIT_KEYS) /* a record is never sent twice: seal it anew */
        return send_keys_req(d, out);
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
        size_t n = 0;
        const pk_reg_key_t *t = pk_reg_dev_keys(d, &n);
        for (size_t i = 0; i < n; i++) {
            if (t[i].ksi == ksi && pk_reg_id_eq(&t[i].peer, &p)) {
                memcpy(k_d, t[i].key, PK_REG_ROOT_KEY_LEN);
                return PK_OK;
            }
        }
        goto none;
    }
    size_t np = 0;
    const pk_reg_key_t *pool = pk_reg_dev_keys(d, &np);
    if (np == 0)
        goto none;
    for (unsigned i = 0; i < PK_REG_MAX_IND; i++) {
        const pk_reg_ind_t *in = &d->ind[i];
        if (!in->used || in->ksi != ksi || !pk_reg_id_eq(&in->peer, &p))
            continue;
        /* the pool key of entry (KSI mod n) in ascending pool-key KSI order
         * (KSIs are distinct within a set: exactly one entry has that rank) */
        size_t want = ksi % np;
        for (size_t j = 0; j < np; j++) {
            size_t rank = 0;
            for (size_t x = 0; x < np; x++)
                rank += pool[x].ksi < pool[j].ksi;
            if (rank != want)
                continue;
            const pk_reg_id_t *ini = in->role == PK_REG_ROLE_INITIATOR ? &d->id : &in->peer;
            const pk_reg_id_t *rsp = in->role == PK_REG_ROLE_INITIATOR ? &in->peer : &d->id;
            if (pk_reg_pool_link_key(pool[j].key, in->param, ini, rsp, k_d) == PK_OK)
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
    size_t n = 0;
    const pk_reg_key_t *t = pk_reg_dev_keys(d, &n);
    if (d->state != PK_REG_D_REGISTERED || d->keys.mode != PK_REG_MODE_PAIRS)
        return PK_ERR_NOTFOUND;
    for (size_t i = 0; i < n; i++) {
        if (pk_reg_id_eq(&t[i].peer, peer)) {
            *ksi = t[i].ksi;
            return PK_OK;
        }
    }
    return PK_ERR_NOTFOUND;
}

void pk_reg_dev_clear(pk_reg_dev_t *d)
{
    tbl_clear(d);
    pk_record_clear(&d->chan);
    pk_wipe(d, sizeof *d);
}
