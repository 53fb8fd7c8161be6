/*
 * Master-key client: mutual authentication of two clients with the domain's
 * master key and the individual key they derive (mk.h, docs/protocol.md ("Master keys and
 * individual keys")).
 */
#include "proto/mk/mk.h"

#include <string.h>

#include "core/codec.h"
#include "core/kdf_fc.h"

void pk_mk_cfg_default(pk_mk_cfg_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->ik_lifetime_ms = 3600u * 1000u;
    cfg->max_lifetime_ms = 24u * 3600u * 1000u;
    cfg->auth_timeout_ms = 5000;
    cfg->renew_lead_ms = 300u * 1000u;
    cfg->retry_ms = 30u * 1000u;
    cfg->grace_ms = 30u * 1000u;
    cfg->beacon_autostart = 1;
    cfg->beacon_interval_ms = 200;
}

/* ---- helpers ---------------------------------------------------------------- */

/* Orders identities by value: bytewise over the common length, then shorter first. */
static int id_cmp(const uint8_t *a, size_t la, const uint8_t *b, size_t lb)
{
    int r = memcmp(a, b, la < lb ? la : lb);
    if (r)
        return r;
    return la < lb ? -1 : la > lb;
}

static int id_eq(const uint8_t *a, size_t la, const uint8_t *b, size_t lb)
{
    return la == lb && memcmp(a, b, la) == 0;
}

static int hist_has(const pk_mk_client_t *c, const uint8_t n[PK_MK_NONCE_LEN])
{
    for (unsigned i = 0; i < PK_MK_NONCE_HISTORY; i++)
        if (memcmp(c->hist[i], n, PK_MK_NONCE_LEN) == 0)
            return 1;
    return 0;
}

static void hist_add(pk_mk_client_t *c, const uint8_t n[PK_MK_NONCE_LEN])
{
    memcpy(c->hist[c->hist_pos], n, PK_MK_NONCE_LEN);
    c->hist_pos = (c->hist_pos + 1) % PK_MK_NONCE_HISTORY;
}

static void sess_free(pk_mk_sess_t *s)
{
    pk_wipe(s, sizeof *s);
}

/* Removes the last action appended to out (rollback of a reply). */
static void out_pop(pk_out_t *o)
{
    o->used -= o->act[o->n - 1].len;
    o->n--;
}

static int mac(const pk_mk_client_t *c, const uint8_t *buf, size_t len, uint8_t out[PK_MK_MAC_LEN])
{
    return pk_hmac_sha256(c->k_auth, sizeof c->k_auth, buf, len, out);
}

static int mac_verify(const pk_mk_client_t *c, const pk_mk_msg_t *m, const uint8_t *buf)
{
    uint8_t want[PK_MK_MAC_LEN];
    int rc = mac(c, buf, m->mac_len_covered, want);
    if (rc == PK_OK && !pk_ct_eq(want, m->mac, PK_MK_MAC_LEN))
        rc = PK_ERR_AUTH;
    pk_wipe(want, sizeof want);
    return rc;
}

static int nonzero_rng(const pk_rng_t *rng, uint8_t n[PK_MK_NONCE_LEN])
{
    int rc = pk_rng_fill(rng, n, PK_MK_NONCE_LEN);
    return rc == PK_OK ? PK_OK : PK_ERR_CRYPTO;
}

int pk_mk_derive_ik(const uint8_t *mk, size_t mk_len, uint32_t mk_id,
                    const uint8_t n1[PK_MK_NONCE_LEN], const uint8_t n2[PK_MK_NONCE_LEN],
                    const uint8_t *id1, size_t id1_len, const uint8_t *id2, size_t id2_len,
                    uint8_t ik[PK_MK_IK_LEN])
{
    uint8_t okm[PK_KDF_OUT_LEN], idb[4];
    int n_lo = memcmp(n1, n2, PK_MK_NONCE_LEN) <= 0;
    int i_lo = id_cmp(id1, id1_len, id2, id2_len) <= 0;
    int rc;

    if (!mk || (mk_len != 16 && mk_len != 32) || !n1 || !n2 || !id1 || !id2 || !ik ||
        id1_len == 0 || id1_len > PK_MK_ID_MAX || id2_len == 0 || id2_len > PK_MK_ID_MAX)
        return PK_ERR_INVAL;
    pk_put_u32(idb, mk_id);
    pk_kdf_param_t p[5] = {
        {n_lo ? n1 : n2, PK_MK_NONCE_LEN},
        {n_lo ? n2 : n1, PK_MK_NONCE_LEN},
        {i_lo ? id1 : id2, i_lo ? id1_len : id2_len},
        {i_lo ? id2 : id1, i_lo ? id2_len : id1_len},
        {idb, sizeof idb},
    };
    rc = pk_kdf(mk, mk_len, PK_FC_IK, p, 5, okm);
    if (rc == PK_OK)
        memcpy(ik, pk_kdf_key128(okm), PK_MK_IK_LEN);
    pk_wipe(okm, sizeof okm);
    return rc;
}

/* K_wrap = KDF(MK, 0xEA, MK ID, n_r): AES-128-GCM key = last 16, nonce = first 12. */
static int wrap_ctx(const pk_mk_client_t *c, const uint8_t n_r[PK_MK_NONCE_LEN], pk_aead_t *a,
                    uint8_t nonce[PK_AEAD_NONCE_LEN])
{
    uint8_t okm[PK_KDF_OUT_LEN], idb[4];
    int rc;

    pk_put_u32(idb, c->mk_id);
    pk_kdf_param_t p[2] = {{idb, 4}, {n_r, PK_MK_NONCE_LEN}};
    rc = pk_kdf(c->mk, c->mk_len, PK_FC_IK_WRAP, p, 2, okm);
    if (rc == PK_OK)
        rc = pk_aead_init(a, pk_kdf_key128(okm), 16);
    if (rc == PK_OK)
        memcpy(nonce, okm, PK_AEAD_NONCE_LEN);
    pk_wipe(okm, sizeof okm);
    return rc;
}

int pk_mk_record_keys(const pk_mk_entry_t *e, uint8_t tx_key[16], uint8_t tx_salt[4],
                      uint8_t rx_key[16], uint8_t rx_salt[4], uint16_t *session_id)
{
    uint8_t okm[2][PK_KDF_OUT_LEN];
    uint8_t d0 = 0x00, d1 = 0x01;
    int rc, tx;

    if (!e || !tx_key || !tx_salt || !rx_key || !rx_salt || !session_id ||
        !(e->flags & PK_MK_E_USED))
        return PK_ERR_INVAL;
    pk_kdf_param_t p0 = {&d0, 1}, p1 = {&d1, 1};
    rc = pk_kdf(e->key, PK_MK_IK_LEN, PK_FC_LINK_REC, &p0, 1, okm[0]);
    if (rc == PK_OK)
        rc = pk_kdf(e->key, PK_MK_IK_LEN, PK_FC_LINK_REC, &p1, 1, okm[1]);
    if (rc == PK_OK) {
        tx = e->role == PK_MK_ROLE_INITIATOR ? 0 : 1;
        memcpy(tx_key, okm[tx] + 16, 16);
        memcpy(tx_salt, okm[tx], 4);
        memcpy(rx_key, okm[1 - tx] + 16, 16);
        memcpy(rx_salt, okm[1 - tx], 4);
        *session_id = (uint16_t)(e->key_id & 0xFFFF);
    }
    pk_wipe(okm, sizeof okm);
    return rc;
}

/* ---- client ----------------------------------------------------------------- */

int pk_mk_client_init(pk_mk_client_t *c, const uint8_t *id, size_t id_len, uint32_t domain_id,
                      const pk_mk_cfg_t *cfg, pk_mk_table_t *table, pk_mk_entry_t *entries,
                      size_t cap, const pk_rng_t *rng)
{
    int rc;

    if (!c || !id || id_len == 0 || id_len > PK_MK_ID_MAX || !table || !rng || !rng->fill)
        return PK_ERR_INVAL;
    memset(c, 0, sizeof *c);
    if (cfg)
        c->cfg = *cfg;
    else
        pk_mk_cfg_default(&c->cfg);
    rc = pk_mk_table_init(table, entries, cap, c->cfg.renew_lead_ms, c->cfg.retry_ms,
                          c->cfg.grace_ms);
    if (rc != PK_OK)
        return rc;
    memcpy(c->id, id, id_len);
    c->id_len = (uint8_t)id_len;
    c->domain_id = domain_id;
    c->table = table;
    c->rng = rng;
    return PK_OK;
}

void pk_mk_client_clear(pk_mk_client_t *c)
{
    if (!c)
        return;
    if (c->table)
        pk_mk_table_clear(c->table);
    pk_wipe(c, sizeof *c);
}

int pk_mk_client_set_master(pk_mk_client_t *c, const uint8_t *mk, size_t mk_len, uint32_t mk_id,
                            uint64_t mk_expiry_ms, uint64_t now_ms)
{
    uint8_t k_auth[PK_KDF_OUT_LEN], idb[4];
    int rc;

    if (!c || !mk || (mk_len != 16 && mk_len != 32))
        return PK_ERR_INVAL;
    if (mk_expiry_ms <= now_ms)
        return PK_ERR_EXPIRED;
    if (c->has_mk && c->mk_id == mk_id) {
        if (c->mk_len != mk_len || !pk_ct_eq(c->mk, mk, mk_len))
            return PK_ERR_EXISTS;
        c->mk_expiry_ms = mk_expiry_ms;
        pk_mk_table_set_master(c->table, mk_id, mk_expiry_ms);
        return PK_OK;
    }
    pk_put_u32(idb, mk_id);
    pk_kdf_param_t p = {idb, 4};
    rc = pk_kdf(mk, mk_len, PK_FC_MK_AUTH, &p, 1, k_auth);
    if (rc != PK_OK)
        goto out;
    /* Success: replace the MK, drop sessions under the old one, mark partners. */
    pk_wipe(c->mk, sizeof c->mk);
    memcpy(c->mk, mk, mk_len);
    c->mk_len = (uint8_t)mk_len;
    c->mk_id = mk_id;
    c->mk_expiry_ms = mk_expiry_ms;
    memcpy(c->k_auth, k_auth, sizeof k_auth);
    c->has_mk = 1;
    for (unsigned i = 0; i < PK_MK_MAX_SESSIONS; i++) {
        if (c->sess[i].state != PK_MK_S_FREE && c->sess[i].mk_id != mk_id) {
            hist_add(c, c->sess[i].n_i);
            sess_free(&c->sess[i]);
        }
    }
    pk_mk_table_set_master(c->table, mk_id, mk_expiry_ms);
out:
    pk_wipe(k_auth, sizeof k_auth);
    return rc;
}

int pk_mk_client_beacon(const pk_mk_client_t *c, uint8_t *buf, size_t cap, size_t *len)
{
    pk_mk_beacon_t b;

    if (!c || !len)
        return PK_ERR_INVAL;
    if (!c->has_mk)
        return PK_ERR_STATE;
    b.domain_id = c->domain_id;
    b.mk_id = c->mk_id;
    b.id = c->id;
    b.id_len = c->id_len;
    return pk_mk_beacon_write(&b, buf, cap, len);
}

/* The session with peer, or NULL. There is at most one: start() is BUSY while
 * one exists, and on_start() refuses, replaces or takes over the one there is. */
static pk_mk_sess_t *sess_by_peer(pk_mk_client_t *c, const uint8_t *peer, size_t n)
{
    for (unsigned i = 0; i < PK_MK_MAX_SESSIONS; i++) {
        pk_mk_sess_t *s = &c->sess[i];
        if (s->state != PK_MK_S_FREE && id_eq(s->peer, s->peer_len, peer, n))
            return s;
    }
    return NULL;
}

static pk_mk_sess_t *sess_by_ni(pk_mk_client_t *c, const uint8_t n_i[PK_MK_NONCE_LEN])
{
    for (unsigned i = 0; i < PK_MK_MAX_SESSIONS; i++)
        if (c->sess[i].state != PK_MK_S_FREE && memcmp(c->sess[i].n_i, n_i, PK_MK_NONCE_LEN) == 0)
            return &c->sess[i];
    return NULL;
}

static pk_mk_sess_t *sess_free_slot(pk_mk_client_t *c)
{
    for (unsigned i = 0; i < PK_MK_MAX_SESSIONS; i++)
        if (c->sess[i].state == PK_MK_S_FREE)
            return &c->sess[i];
    return NULL;
}

/*
 * Appends a message of type for session s (we are initiator when type is
 * START/END1) to out, with its MAC; for END1 with WRAP, also wraps s->ik.
 * On failure nothing is appended.
 */
static int emit(pk_mk_client_t *c, const pk_mk_sess_t *s, uint8_t type, uint32_t key_id,
                uint64_t expiry_ms, pk_out_t *out)
{
    static const uint8_t zero_wrap[PK_MK_WRAPPED_LEN];
    pk_mk_msg_t m;
    uint8_t *buf;
    size_t len = 0;
    int initiator = type == PK_MK_T_START || type == PK_MK_T_END1;
    int rc;

    memset(&m, 0, sizeof m);
    m.type = type;
    m.flags = s->flags;
    m.domain_id = c->domain_id;
    m.mk_id = c->mk_id;
    memcpy(m.n_i, s->n_i, PK_MK_NONCE_LEN);
    memcpy(m.n_r, s->n_r, PK_MK_NONCE_LEN);
    m.id_i = initiator ? c->id : s->peer;
    m.id_i_len = initiator ? c->id_len : s->peer_len;
    m.id_r = initiator ? s->peer : c->id;
    m.id_r_len = initiator ? s->peer_len : c->id_len;
    m.key_id = key_id;
    m.expiry_ms = expiry_ms;
    m.wrapped = zero_wrap;

    buf = pk_out_push(out, PK_ACT_SEND, type, s->dest, PK_MK_MSG_MAX);
    if (!buf)
        return PK_ERR_SPACE;
    rc = pk_mk_msg_write(&m, buf, PK_MK_MSG_MAX, &len);
    if (rc == PK_OK && type == PK_MK_T_END1 && (s->flags & PK_MK_FLAG_WRAP)) {
        pk_aead_t a = {0};
        uint8_t nonce[PK_AEAD_NONCE_LEN];
        size_t aad = len - PK_MK_MAC_LEN - PK_MK_WRAPPED_LEN;
        rc = wrap_ctx(c, s->n_r, &a, nonce);
        if (rc == PK_OK)
            rc = pk_aead_seal(&a, nonce, buf, aad, s->ik, PK_MK_IK_LEN, buf + aad,
                              buf + aad + PK_MK_IK_LEN);
        pk_aead_clear(&a);
    }
    if (rc == PK_OK)
        rc = mac(c, buf, len - PK_MK_MAC_LEN, buf + len - PK_MK_MAC_LEN);
    if (rc != PK_OK) {
        pk_wipe(buf, PK_MK_MSG_MAX);
        out_pop(out);
        return rc;
    }
    pk_out_trim(out, len);
    return PK_OK;
}

static int emit_key_event(pk_out_t *out, uint32_t key_id, const uint8_t *peer, size_t n)
{
    uint8_t *d = pk_out_push(out, PK_ACT_EVENT, PK_MK_EV_KEY, key_id, n);
    if (!d)
        return PK_ERR_SPACE;
    memcpy(d, peer, n);
    return PK_OK;
}

static int mk_usable(const pk_mk_client_t *c, uint64_t now_ms)
{
    if (!c->has_mk)
        return PK_ERR_STATE;
    if (now_ms >= c->mk_expiry_ms)
        return PK_ERR_EXPIRED;
    return PK_OK;
}

int pk_mk_client_start(pk_mk_client_t *c, const uint8_t *peer, size_t peer_len, uint8_t flags,
                       uint64_t dest, uint64_t now_ms, pk_out_t *out)
{
    pk_mk_sess_t s, *slot;
    int rc;

    if (!c || !peer || peer_len == 0 || peer_len > PK_MK_ID_MAX || !out ||
        (flags & ~PK_MK_FLAGS_KNOWN))
        return PK_ERR_INVAL;
    rc = mk_usable(c, now_ms);
    if (rc != PK_OK)
        return rc;
    if (id_eq(peer, peer_len, c->id, c->id_len))
        return PK_ERR_STATE;
    if (sess_by_peer(c, peer, peer_len))
        return PK_ERR_BUSY; /* an exchange with peer in flight, in either role */
    slot = sess_free_slot(c);
    if (!slot)
        return PK_ERR_LIMIT;

    memset(&s, 0, sizeof s);
    s.state = PK_MK_S_I_WAIT_PROC;
    s.flags = flags;
    memcpy(s.peer, peer, peer_len);
    s.peer_len = (uint8_t)peer_len;
    s.mk_id = c->mk_id;
    s.dest = dest;
    s.deadline_ms = now_ms + c->cfg.auth_timeout_ms;
    rc = nonzero_rng(c->rng, s.n_i);
    if (rc == PK_OK)
        rc = emit(c, &s, PK_MK_T_START, 0, 0, out);
    if (rc == PK_OK)
        *slot = s;
    pk_wipe(&s, sizeof s);
    return rc;
}

/* Draws a key ID whose low 16 bits are free in our table. */
static int pick_key_id(pk_mk_client_t *c, uint64_t now_ms, uint32_t *key_id)
{
    for (int tries = 0; tries < 16; tries++) {
        uint8_t b[4];
        uint32_t k;
        if (pk_rng_fill(c->rng, b, 4) != PK_OK)
            return PK_ERR_CRYPTO;
        k = pk_get_u32(b);
        if ((k & 0xFFFF) == 0 || pk_mk_table_find_sid(c->table, (uint16_t)(k & 0xFFFF), now_ms))
            continue;
        *key_id = k;
        return PK_OK;
    }
    return PK_ERR_LIMIT;
}

/* START (501), we are the responder. */
static int on_start(pk_mk_client_t *c, const pk_mk_msg_t *m, const uint8_t *buf, uint64_t src,
                    uint64_t now_ms, pk_out_t *out)
{
    pk_mk_sess_t s, *slot, *cur;
    int rc;

    if (!id_eq(m->id_r, m->id_r_len, c->id, c->id_len) ||
        id_eq(m->id_i, m->id_i_len, c->id, c->id_len))
        return PK_ERR_DENIED;
    if (hist_has(c, m->n_i) || sess_by_ni(c, m->n_i))
        return PK_ERR_REPLAY;
    rc = mac_verify(c, m, buf);
    if (rc != PK_OK)
        return rc;

    cur = sess_by_peer(c, m->id_i, m->id_i_len);
    /* Our exchange with the peer is past END1 (the point of no return: the
     * peer may have stored its key): it is finished, never abandoned. */
    if (cur && cur->state == PK_MK_S_I_WAIT_END2)
        return PK_ERR_STATE;
    /* Simultaneous start, both STARTs genuinely in flight: the lower ID's wins. */
    if (cur && cur->state == PK_MK_S_I_WAIT_PROC &&
        id_cmp(c->id, c->id_len, m->id_i, m->id_i_len) < 0)
        return PK_ERR_STATE;
    /* Otherwise the peer's START takes the slot of our START that lost the
     * tie-break, or of the peer's own unfinished exchange (a newer START
     * replaces it). */
    slot = cur ? cur : sess_free_slot(c);
    if (!slot)
        return PK_ERR_LIMIT;

    memset(&s, 0, sizeof s);
    s.state = PK_MK_S_R_WAIT_END1;
    s.flags = m->flags;
    memcpy(s.peer, m->id_i, m->id_i_len);
    s.peer_len = m->id_i_len;
    memcpy(s.n_i, m->n_i, PK_MK_NONCE_LEN);
    s.mk_id = c->mk_id;
    s.dest = src;
    s.deadline_ms = now_ms + c->cfg.auth_timeout_ms;
    rc = nonzero_rng(c->rng, s.n_r);
    if (rc == PK_OK)
        rc = emit(c, &s, PK_MK_T_PROC, 0, 0, out);
    if (rc == PK_OK) {
        if (cur) {
            hist_add(c, cur->n_i); /* late messages of the replaced exchange are replays */
            sess_free(cur);
        }
        hist_add(c, m->n_i);
        *slot = s;
    }
    pk_wipe(&s, sizeof s);
    return rc;
}

/* Finds the session a PROC/END1/END2 belongs to, or says why not. */
static int find_sess(pk_mk_client_t *c, const pk_mk_msg_t *m, uint8_t want_state,
                     pk_mk_sess_t **out)
{
    int initiator = want_state != PK_MK_S_R_WAIT_END1;
    const uint8_t *me = initiator ? m->id_i : m->id_r, *peer = initiator ? m->id_r : m->id_i;
    size_t me_len = initiator ? m->id_i_len : m->id_r_len;
    size_t peer_len = initiator ? m->id_r_len : m->id_i_len;
    pk_mk_sess_t *s;

    *out = NULL;
    if (!id_eq(me, me_len, c->id, c->id_len) || id_eq(peer, peer_len, c->id, c->id_len))
        return PK_ERR_DENIED;
    s = sess_by_ni(c, m->n_i);
    if (!s)
        return hist_has(c, m->n_i) ? PK_ERR_REPLAY : PK_ERR_STATE;
    if (s->state != want_state)
        return PK_ERR_REPLAY; /* a message of a step already taken */
    if (!id_eq(s->peer, s->peer_len, peer, peer_len) || s->flags != m->flags)
        return PK_ERR_STATE;
    if (want_state != PK_MK_S_I_WAIT_PROC && memcmp(s->n_r, m->n_r, PK_MK_NONCE_LEN) != 0)
        return PK_ERR_STATE;
    *out = s;
    return PK_OK;
}

/* The table row for session s's key (the initiator's), pending or not. */
static void sess_entry(const pk_mk_sess_t *s, uint64_t expiry_ms, int pending, pk_mk_entry_t *e)
{
    memset(e, 0, sizeof *e);
    memcpy(e->key, s->ik, PK_MK_IK_LEN);
    e->key_id = s->key_id;
    e->expiry_ms = expiry_ms;
    e->mk_id = s->mk_id;
    memcpy(e->partner, s->peer, s->peer_len);
    e->partner_len = s->peer_len;
    e->role = PK_MK_ROLE_INITIATOR;
    e->flags = pending ? PK_MK_E_PENDING : 0;
    e->next_try_ms = s->deadline_ms;
}

/* PROC (502), we are the initiator: answer with END1 (503). Sending END1 is
 * the point of no return (the responder may store the key on it), so the key
 * goes into our table now, pending until END2 (or the responder's first
 * record under it) confirms it. */
static int on_proc(pk_mk_client_t *c, const pk_mk_msg_t *m, const uint8_t *buf, uint64_t now_ms,
                   pk_out_t *out)
{
    pk_mk_sess_t *s, t;
    pk_mk_entry_t e;
    int rc;

    rc = find_sess(c, m, PK_MK_S_I_WAIT_PROC, &s);
    if (rc != PK_OK)
        return rc;
    if (memcmp(m->n_r, m->n_i, PK_MK_NONCE_LEN) == 0 || hist_has(c, m->n_r))
        return PK_ERR_REPLAY;
    rc = mac_verify(c, m, buf);
    if (rc != PK_OK)
        return rc;

    t = *s;
    memcpy(t.n_r, m->n_r, PK_MK_NONCE_LEN);
    t.expiry_ms = now_ms + c->cfg.ik_lifetime_ms;
    if (t.expiry_ms > c->mk_expiry_ms)
        t.expiry_ms = c->mk_expiry_ms;
    rc = pick_key_id(c, now_ms, &t.key_id);
    if (rc == PK_OK) {
        if (t.flags & PK_MK_FLAG_WRAP)
            rc = pk_rng_fill(c->rng, t.ik, PK_MK_IK_LEN) == PK_OK ? PK_OK : PK_ERR_CRYPTO;
        else
            rc = pk_mk_derive_ik(c->mk, c->mk_len, c->mk_id, t.n_i, t.n_r, c->id, c->id_len, t.peer,
                                 t.peer_len, t.ik);
    }
    if (rc == PK_OK)
        rc = emit(c, &t, PK_MK_T_END1, t.key_id, t.expiry_ms, out);
    if (rc == PK_OK) {
        t.state = PK_MK_S_I_WAIT_END2;
        t.deadline_ms = now_ms + c->cfg.auth_timeout_ms;
        sess_entry(&t, t.expiry_ms, 1, &e);
        rc = pk_mk_table_add(c->table, &e, now_ms);
        pk_wipe(&e, sizeof e);
        if (rc != PK_OK)
            out_pop(out); /* no END1 without our pending key */
    }
    if (rc == PK_OK)
        *s = t;
    pk_wipe(&t, sizeof t);
    return rc;
}

/* END1 (503), we are the responder: store the key, confirm with END2 (504). */
static int on_end1(pk_mk_client_t *c, const pk_mk_msg_t *m, const uint8_t *buf, uint64_t now_ms,
                   pk_out_t *out)
{
    pk_mk_sess_t *s;
    pk_mk_entry_t e;
    uint64_t expiry;
    int rc;

    memset(&e, 0, sizeof e);
    rc = find_sess(c, m, PK_MK_S_R_WAIT_END1, &s);
    if (rc != PK_OK)
        goto out;
    rc = mac_verify(c, m, buf);
    if (rc != PK_OK)
        goto out;
    if (m->expiry_ms <= now_ms || m->expiry_ms > c->mk_expiry_ms) {
        rc = PK_ERR_EXPIRED;
        goto out;
    }
    expiry = m->expiry_ms;
    if (expiry - now_ms > c->cfg.max_lifetime_ms)
        expiry = now_ms + c->cfg.max_lifetime_ms;

    if (m->flags & PK_MK_FLAG_WRAP) {
        pk_aead_t a = {0};
        uint8_t nonce[PK_AEAD_NONCE_LEN];
        rc = wrap_ctx(c, s->n_r, &a, nonce);
        if (rc == PK_OK)
            rc = pk_aead_open(&a, nonce, buf, m->wrap_aad_len, m->wrapped, PK_MK_IK_LEN,
                              m->wrapped + PK_MK_IK_LEN, e.key);
        pk_aead_clear(&a);
    } else {
        rc = pk_mk_derive_ik(c->mk, c->mk_len, c->mk_id, s->n_i, s->n_r, c->id, c->id_len, s->peer,
                             s->peer_len, e.key);
    }
    if (rc != PK_OK)
        goto out;
    e.key_id = m->key_id;
    e.expiry_ms = expiry;
    e.mk_id = c->mk_id;
    memcpy(e.partner, s->peer, s->peer_len);
    e.partner_len = s->peer_len;
    e.role = PK_MK_ROLE_RESPONDER;

    /* Replies first (they can be rolled back), the table last. */
    rc = emit(c, s, PK_MK_T_END2, m->key_id, expiry, out);
    if (rc != PK_OK)
        goto out;
    rc = emit_key_event(out, m->key_id, s->peer, s->peer_len);
    if (rc != PK_OK) {
        out_pop(out);
        goto out;
    }
    rc = pk_mk_table_add(c->table, &e, now_ms);
    if (rc != PK_OK) {
        out_pop(out);
        out_pop(out);
        goto out;
    }
    hist_add(c, s->n_r);
    sess_free(s);
out:
    pk_wipe(&e, sizeof e);
    return rc;
}

/* END2 (504), we are the initiator: the responder stored the key; confirm our
 * pending copy (or, should it be gone, store the key again). */
static int on_end2(pk_mk_client_t *c, const pk_mk_msg_t *m, const uint8_t *buf, uint64_t now_ms,
                   pk_out_t *out)
{
    pk_mk_sess_t *s;
    pk_mk_entry_t e;
    const pk_mk_entry_t *have;
    int rc;

    memset(&e, 0, sizeof e);
    rc = find_sess(c, m, PK_MK_S_I_WAIT_END2, &s);
    if (rc != PK_OK)
        goto out;
    rc = mac_verify(c, m, buf);
    if (rc != PK_OK)
        goto out;
    if (m->key_id != s->key_id || m->expiry_ms > s->expiry_ms) {
        rc = PK_ERR_STATE;
        goto out;
    }
    if (m->expiry_ms <= now_ms) {
        rc = PK_ERR_EXPIRED;
        goto out;
    }
    have = pk_mk_table_find(c->table, s->key_id, now_ms);
    if (have && (!id_eq(have->partner, have->partner_len, s->peer, s->peer_len) ||
                 !pk_ct_eq(have->key, s->ik, PK_MK_IK_LEN))) {
        rc = PK_ERR_STATE; /* cannot happen: the key ID is ours, drawn free */
        goto out;
    }
    rc = emit_key_event(out, s->key_id, s->peer, s->peer_len);
    if (rc != PK_OK)
        goto out;
    if (have) {
        rc = pk_mk_table_confirm(c->table, s->key_id, m->expiry_ms, now_ms);
    } else {
        sess_entry(s, m->expiry_ms, 0, &e);
        rc = pk_mk_table_add(c->table, &e, now_ms);
    }
    if (rc != PK_OK) {
        out_pop(out);
        goto out;
    }
    hist_add(c, s->n_i);
    hist_add(c, s->n_r);
    sess_free(s);
out:
    pk_wipe(&e, sizeof e);
    return rc;
}

static int on_beacon(pk_mk_client_t *c, const uint8_t *buf, size_t len, uint64_t src,
                     uint64_t now_ms, pk_out_t *out)
{
    pk_mk_beacon_t b;
    int rc = pk_mk_beacon_parse(buf, len, &b);

    if (rc != PK_OK)
        return rc;
    if (b.domain_id != c->domain_id || id_eq(b.id, b.id_len, c->id, c->id_len))
        return PK_ERR_DENIED;
    if (!c->has_mk || b.mk_id != c->mk_id)
        return PK_ERR_DENIED;
    if (!c->cfg.beacon_autostart || now_ms < c->beacon_next_ms ||
        pk_mk_table_is_fresh(c->table, b.id, b.id_len, now_ms) || sess_by_peer(c, b.id, b.id_len))
        return PK_OK;
    rc = pk_mk_client_start(c, b.id, b.id_len, 0, src, now_ms, out);
    if (rc == PK_OK)
        c->beacon_next_ms = now_ms + c->cfg.beacon_interval_ms;
    return rc == PK_ERR_BUSY ? PK_OK : rc;
}

int pk_mk_client_input(pk_mk_client_t *c, const uint8_t *msg, size_t len, uint64_t src,
                       uint64_t now_ms, pk_out_t *out)
{
    pk_mk_msg_t m;
    int type, rc;

    if (!c || !out)
        return PK_ERR_INVAL;
    type = pk_mk_msg_peek(msg, len);
    if (type < 0)
        return type;
    if (type == PK_MK_T_BEACON)
        return on_beacon(c, msg, len, src, now_ms, out);
    rc = pk_mk_msg_parse(msg, len, &m);
    if (rc != PK_OK)
        return rc;
    if (m.domain_id != c->domain_id || !c->has_mk || m.mk_id != c->mk_id)
        return PK_ERR_DENIED;
    if (now_ms >= c->mk_expiry_ms)
        return PK_ERR_EXPIRED;
    switch (type) {
    case PK_MK_T_START: return on_start(c, &m, msg, src, now_ms, out);
    case PK_MK_T_PROC: return on_proc(c, &m, msg, now_ms, out);
    case PK_MK_T_END1: return on_end1(c, &m, msg, now_ms, out);
    case PK_MK_T_END2: return on_end2(c, &m, msg, now_ms, out);
    default: return PK_ERR_MALFORMED;
    }
}

unsigned pk_mk_client_timeout(pk_mk_client_t *c, uint64_t now_ms)
{
    unsigned n = 0;

    for (unsigned i = 0; i < PK_MK_MAX_SESSIONS; i++) {
        pk_mk_sess_t *s = &c->sess[i];
        if (s->state != PK_MK_S_FREE && s->deadline_ms <= now_ms) {
            /* Late messages of it are replays now. An initiator past END1
             * keeps its pending key: the responder may hold it (a lost END2),
             * and its first record under it confirms it; unconfirmed, the
             * table reports the partner (UNCONFIRMED) for a new exchange. */
            hist_add(c, s->n_i);
            sess_free(s);
            n++;
        }
    }
    return n;
}

uint64_t pk_mk_client_next_deadline(const pk_mk_client_t *c)
{
    uint64_t d = pk_mk_table_next_deadline(c->table);

    for (unsigned i = 0; i < PK_MK_MAX_SESSIONS; i++)
        if (c->sess[i].state != PK_MK_S_FREE && c->sess[i].deadline_ms < d)
            d = c->sess[i].deadline_ms;
    return d;
}

unsigned pk_mk_client_sessions(const pk_mk_client_t *c)
{
    unsigned n = 0;
    for (unsigned i = 0; i < PK_MK_MAX_SESSIONS; i++)
        n += c->sess[i].state != PK_MK_S_FREE;
    return n;
}
