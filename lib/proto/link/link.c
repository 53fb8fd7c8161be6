/* The direct link core (see link.h). */
#include "proto/link/link.h"

#include <string.h>

#include "core/codec.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"

int pk_link_derive(const uint8_t k_d[PK_LINK_KD_LEN], const uint8_t nonce1[PK_LINK_NONCE_LEN],
                   const uint8_t nonce2[PK_LINK_NONCE_LEN], uint8_t alg,
                   uint8_t k_sess[PK_LINK_KD_LEN], uint8_t pek[PK_LINK_KEY_LEN],
                   uint8_t pik[PK_LINK_KEY_LEN])
{
    uint8_t ks[PK_KDF_OUT_LEN], o[PK_KDF_OUT_LEN];
    const uint8_t t_enc = 0x00, t_int = 0x01;
    const pk_kdf_param_t pn[2] = {{nonce1, PK_LINK_NONCE_LEN}, {nonce2, PK_LINK_NONCE_LEN}};
    pk_kdf_param_t pa[2] = {{&t_enc, 1}, {&alg, 1}};
    pk_kdf_t kdf = {0};
    int rc;

    if ((rc = pk_kdf(k_d, PK_LINK_KD_LEN, PK_FC_KD_SESS, pn, 2, ks)) != PK_OK)
        goto out;
    if ((rc = pk_kdf_init(&kdf, ks, sizeof ks)) != PK_OK)
        goto out;
    if (pek) {
        if ((rc = pk_kdf_derive(&kdf, PK_FC_PEK_PIK, pa, 2, o)) != PK_OK)
            goto out;
        memcpy(pek, pk_kdf_key128(o), PK_LINK_KEY_LEN);
    }
    if (pik) {
        pa[0].p = &t_int;
        if ((rc = pk_kdf_derive(&kdf, PK_FC_PEK_PIK, pa, 2, o)) != PK_OK)
            goto out;
        memcpy(pik, pk_kdf_key128(o), PK_LINK_KEY_LEN);
    }
    if (k_sess)
        memcpy(k_sess, ks, PK_LINK_KD_LEN);
out:
    if (rc != PK_OK) {
        if (k_sess)
            pk_wipe(k_sess, PK_LINK_KD_LEN);
        if (pek)
            pk_wipe(pek, PK_LINK_KEY_LEN);
        if (pik)
            pk_wipe(pik, PK_LINK_KEY_LEN);
    }
    pk_kdf_clear(&kdf);
    pk_wipe(ks, sizeof ks);
    pk_wipe(o, sizeof o);
    return rc;
}

int pk_link_session_keys(const pk_link_t *l, const uint8_t nonce2[PK_LINK_NONCE_LEN], uint16_t sid,
                         uint8_t alg, uint8_t pik[PK_LINK_KEY_LEN], pk_record_t *rec)
{
    uint8_t k_d[PK_LINK_KD_LEN], pek[PK_LINK_KEY_LEN];
    uint8_t o1[PK_KDF_OUT_LEN], o2[PK_KDF_OUT_LEN];
    uint8_t k1[PK_RECORD_KEY_LEN], s1[PK_RECORD_SALT_LEN], k2[PK_RECORD_KEY_LEN],
        s2[PK_RECORD_SALT_LEN];
    const uint8_t d_i2r = 0x00, d_r2i = 0x01;
    const pk_kdf_param_t p1 = {&d_i2r, 1}, p2 = {&d_r2i, 1};
    int rc;

    if (l->lookup(l->lookup_ctx, l->ksi, l->peer_id, l->peer_len, k_d) != PK_OK) {
        rc = PK_ERR_NOTFOUND;
        goto out;
    }
    if ((rc = pk_link_derive(k_d, l->nonce1, nonce2, alg, NULL, pek, pik)) != PK_OK)
        goto out;
    if ((rc = pk_kdf(pek, sizeof pek, PK_FC_LINK_REC, &p1, 1, o1)) != PK_OK)
        goto out;
    if ((rc = pk_kdf(pek, sizeof pek, PK_FC_LINK_REC, &p2, 1, o2)) != PK_OK)
        goto out;
    pk_record_split_okm(o1, k1, s1); /* initiator -> responder */
    pk_record_split_okm(o2, k2, s2); /* responder -> initiator */
    if (l->role == PK_LINK_INITIATOR)
        rc = pk_record_init(rec, sid, 0, k1, s1, k2, s2);
    else
        rc = pk_record_init(rec, sid, 0, k2, s2, k1, s1);
out:
    if (rc != PK_OK)
        pk_wipe(pik, PK_LINK_KEY_LEN);
    pk_wipe(k_d, sizeof k_d);
    pk_wipe(pek, sizeof pek);
    pk_wipe(o1, sizeof o1);
    pk_wipe(o2, sizeof o2);
    pk_wipe(k1, sizeof k1);
    pk_wipe(s1, sizeof s1);
    pk_wipe(k2, sizeof k2);
    pk_wipe(s2, sizeof s2);
    return rc;
}

/* mac = first 16 of HMAC-SHA-256(pik, a || b || c). */
static int link_mac(const uint8_t pik[PK_LINK_KEY_LEN], const uint8_t *a, size_t alen,
                    const uint8_t *b, size_t blen, const uint8_t *c, size_t clen,
                    uint8_t mac[PK_LINK_MAC_LEN])
{
    pk_hmac_t h = {0};
    uint8_t full[PK_HMAC_LEN];
    int rc = pk_hmac_init(&h, pik, PK_LINK_KEY_LEN);
    if (rc == PK_OK)
        rc = pk_hmac_begin(&h);
    if (rc == PK_OK)
        rc = pk_hmac_update(&h, a, alen);
    if (rc == PK_OK)
        rc = pk_hmac_update(&h, b, blen);
    if (rc == PK_OK && clen)
        rc = pk_hmac_update(&h, c, clen);
    if (rc == PK_OK)
        rc = pk_hmac_final(&h, full);
    if (rc == PK_OK)
        memcpy(mac, full, PK_LINK_MAC_LEN);
    pk_hmac_clear(&h);
    pk_wipe(full, sizeof full);
    return rc;
}

static int id_ok(const uint8_t *b, size_t len)
{
    return b && len >= 1 && len <= PK_LINK_ID_MAX && !memchr(b, 0, len);
}

int pk_link_init(pk_link_t *l, const pk_link_cfg_t *cfg, int role)
{
    if (!id_ok(cfg->self_id, cfg->self_len) || !cfg->lookup || cfg->rto_ms == 0 ||
        cfg->max_tries < 1 || cfg->max_tries > 16 ||
        (role != PK_LINK_INITIATOR && role != PK_LINK_RESPONDER))
        return PK_ERR_INVAL;
    memset(l, 0, sizeof *l);
    l->role = (uint8_t)role;
    l->self_len = (uint8_t)cfg->self_len;
    memcpy(l->self_id, cfg->self_id, cfg->self_len);
    l->lookup = cfg->lookup;
    l->lookup_ctx = cfg->lookup_ctx;
    l->rto_ms = cfg->rto_ms;
    l->max_tries = cfg->max_tries;
    l->deadline = UINT64_MAX;
    l->state = PK_LINK_S_IDLE;
    return PK_OK;
}

static uint64_t backoff(const pk_link_t *l, uint64_t now_ms)
{
    unsigned shift = l->tries > 1 ? l->tries - 1 : 0;
    return now_ms + (l->rto_ms << (shift > 6 ? 6 : shift));
}

static int push_copy(pk_out_t *out, uint8_t kind, uint16_t code, const uint8_t *p, size_t len)
{
    uint8_t *d = pk_out_push(out, kind, code, 0, len);
    if (!d)
        return PK_ERR_SPACE;
    if (len)
        memcpy(d, p, len);
    return PK_OK;
}

int pk_link_connect(pk_link_t *l, const uint8_t *peer, size_t peer_len, uint32_t ksi,
                    const pk_rng_t *rng, uint64_t now_ms, pk_out_t *out)
{
    uint8_t k_d[PK_LINK_KD_LEN], rnd[PK_LINK_NONCE_LEN + 1];
    pk_wr_t w;
    int rc;

    if (l->role != PK_LINK_INITIATOR || l->state != PK_LINK_S_IDLE)
        return PK_ERR_STATE;
    if (!id_ok(peer, peer_len))
        return PK_ERR_INVAL;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < PK_LINK_DCR_MAX)
        return PK_ERR_SPACE;
    rc = l->lookup(l->lookup_ctx, ksi, peer, peer_len, k_d);
    pk_wipe(k_d, sizeof k_d);
    if (rc != PK_OK)
        return PK_ERR_NOTFOUND;
    if ((rc = pk_rng_fill(rng, rnd, sizeof rnd)) != PK_OK)
        return rc;
    l->ksi = ksi;
    l->peer_len = (uint8_t)peer_len;
    memcpy(l->peer_id, peer, peer_len);
    memcpy(l->nonce1, rnd, PK_LINK_NONCE_LEN);
    l->sid = (uint16_t)(rnd[PK_LINK_NONCE_LEN] << 8);
    l->caps = PK_LINK_CAP_AES128GCM_HMAC;

    pk_wr_init(&w, l->dcr, sizeof l->dcr);
    pk_wr_u8(&w, PK_LINK_T_DCR);
    pk_wr_u8(&w, PK_LINK_VERSION);
    pk_wr_u8(&w, (uint8_t)(l->sid >> 8));
    pk_wr_u8(&w, l->caps);
    pk_wr_u32(&w, l->ksi);
    pk_wr_bytes(&w, l->nonce1, PK_LINK_NONCE_LEN);
    pk_wr_block8(&w, l->self_id, l->self_len);
    pk_wr_block8(&w, l->peer_id, l->peer_len);
    while (w.len < PK_LINK_DCR_MIN) /* short ids: zero padding up to the SMC's size */
        pk_wr_u8(&w, 0);
    if (pk_wr_ok(&w) != PK_OK) /* cannot happen: sizes are bounded above */
        return PK_ERR_INVAL;
    l->dcrlen = w.len;
    l->tries = 1;
    l->deadline = backoff(l, now_ms);
    l->state = PK_LINK_S_WAIT_SMC;
    return push_copy(out, PK_ACT_SEND, PK_LINK_T_DCR, l->dcr, l->dcrlen);
}

/* ---- responder: DCR ---- */
static int on_dcr(pk_link_t *l, const uint8_t *msg, size_t len, const pk_rng_t *rng,
                  uint64_t now_ms, pk_out_t *out)
{
    pk_rd_t r;
    pk_link_t n; /* the new state, committed at the end */
    uint8_t rnd[PK_LINK_NONCE_LEN + 1];
    int rc;

    if (len < PK_LINK_DCR_MIN || len > PK_LINK_DCR_MAX)
        return PK_ERR_MALFORMED;
    if (l->role != PK_LINK_RESPONDER)
        return PK_ERR_STATE;
    if (l->state == PK_LINK_S_WAIT_COMPLETE || l->state == PK_LINK_S_ESTABLISHED) {
        int same = len == l->dcrlen && memcmp(msg, l->dcr, len) == 0;
        if (!same)
            return PK_ERR_STATE;
        if (l->state == PK_LINK_S_ESTABLISHED)
            return PK_ERR_REPLAY;
        /* the initiator retransmitted: our SMC was lost */
        return push_copy(out, PK_ACT_SEND, PK_LINK_T_SMC, l->smc, PK_LINK_SMC_LEN);
    }
    if (l->state != PK_LINK_S_IDLE)
        return PK_ERR_STATE;

    pk_rd_init(&r, msg, len);
    (void)pk_rd_u8(&r);
    uint8_t ver = pk_rd_u8(&r);
    uint8_t msb = pk_rd_u8(&r);
    uint8_t caps = pk_rd_u8(&r);
    uint32_t ksi = pk_rd_u32(&r);
    const uint8_t *n1 = pk_rd_borrow(&r, PK_LINK_NONCE_LEN);
    pk_rd_t ini = pk_rd_block8(&r, PK_LINK_ID_MAX);
    pk_rd_t rsp = pk_rd_block8(&r, PK_LINK_ID_MAX);
    /* exactly max(42, fields): padding only up to 42, and all zero */
    size_t fields = PK_LINK_DCR_FIELDS + ini.left + rsp.left;
    if (r.err || len != (fields < PK_LINK_DCR_MIN ? PK_LINK_DCR_MIN : fields))
        return PK_ERR_MALFORMED;
    const uint8_t *pad = pk_rd_borrow(&r, len - fields);
    for (size_t i = 0; pad && i < len - fields; i++)
        if (pad[i] != 0)
            return PK_ERR_MALFORMED;
    if (pk_rd_done(&r) != PK_OK || !id_ok(ini.p, ini.left) || !id_ok(rsp.p, rsp.left))
        return PK_ERR_MALFORMED;
    if (ver != PK_LINK_VERSION)
        return PK_ERR_VERSION;
    if (rsp.left != l->self_len || memcmp(rsp.p, l->self_id, rsp.left) != 0)
        return PK_ERR_NOTFOUND; /* not addressed to us */
    if (!(caps & PK_LINK_CAP_AES128GCM_HMAC))
        return PK_ERR_DENIED;
    if (out->n + 2 > PK_OUT_MAX || out->cap - out->used < PK_LINK_SMC_LEN)
        return PK_ERR_SPACE;

    n = *l; /* copies configuration; rec is zero in IDLE */
    memset(&n.rec, 0, sizeof n.rec);
    n.ksi = ksi;
    n.caps = caps;
    n.alg = PK_LINK_ALG_AES128GCM_HMAC;
    n.peer_len = (uint8_t)ini.left;
    memcpy(n.peer_id, ini.p, ini.left);
    memcpy(n.nonce1, n1, PK_LINK_NONCE_LEN);
    memcpy(n.dcr, msg, len);
    n.dcrlen = len;
    if ((rc = pk_rng_fill(rng, rnd, sizeof rnd)) != PK_OK)
        goto out;
    memcpy(n.nonce2, rnd, PK_LINK_NONCE_LEN);
    n.sid = (uint16_t)(msb << 8 | rnd[PK_LINK_NONCE_LEN]);
    if ((rc = pk_link_session_keys(&n, n.nonce2, n.sid, n.alg, n.pik, &n.rec)) != PK_OK)
        goto out; /* unknown KSI: PK_ERR_NOTFOUND */

    uint8_t *s = n.smc;
    s[0] = PK_LINK_T_SMC;
    s[1] = PK_LINK_VERSION;
    pk_put_u16(s + 2, n.sid);
    s[4] = n.alg;
    s[5] = n.caps;
    pk_put_u32(s + 6, n.ksi);
    memcpy(s + 10, n.nonce2, PK_LINK_NONCE_LEN);
    rc = link_mac(n.pik, n.dcr, n.dcrlen, s, PK_LINK_SMC_BODY, NULL, 0, s + PK_LINK_SMC_BODY);
    if (rc != PK_OK)
        goto out;
    n.state = PK_LINK_S_WAIT_COMPLETE;
    n.tries = 1;
    /* the initiator retransmits; we only wait for its whole retry budget */
    n.deadline = now_ms + (n.rto_ms << (n.max_tries > 6 ? 6 : n.max_tries));
    *l = n; /* commit (ownership of n.rec moves to l) */
    memset(&n, 0, sizeof n);
    rc = push_copy(out, PK_ACT_SEND, PK_LINK_T_SMC, l->smc, PK_LINK_SMC_LEN);
out:
    pk_record_clear(&n.rec);
    pk_wipe(&n, sizeof n);
    pk_wipe(rnd, sizeof rnd);
    return rc;
}

/* ---- initiator: SMC ---- */
static int on_smc(pk_link_t *l, const uint8_t *msg, size_t len, pk_out_t *out)
{
    uint8_t pik[PK_LINK_KEY_LEN], mac[PK_LINK_MAC_LEN];
    uint8_t cmpl[PK_LINK_SMCOMPLETE_LEN];
    pk_record_t rec;
    int rc;

    memset(&rec, 0, sizeof rec);
    if (len != PK_LINK_SMC_LEN)
        return PK_ERR_MALFORMED;
    if (l->role != PK_LINK_INITIATOR)
        return PK_ERR_STATE;
    if (l->state == PK_LINK_S_ESTABLISHED && memcmp(msg, l->smc, len) == 0)
        return PK_ERR_REPLAY;
    if (l->state != PK_LINK_S_WAIT_SMC)
        return PK_ERR_STATE;
    if (msg[1] != PK_LINK_VERSION)
        return PK_ERR_VERSION;
    uint16_t sid = pk_get_u16(msg + 2);
    uint8_t alg = msg[4], caps = msg[5];
    uint32_t ksi = pk_get_u32(msg + 6);
    const uint8_t *n2 = msg + 10;
    if ((sid >> 8) != (l->sid >> 8) || ksi != l->ksi)
        return PK_ERR_STATE; /* not an answer to our DCR */
    if (caps != l->caps || alg != PK_LINK_ALG_AES128GCM_HMAC)
        return PK_ERR_DENIED; /* bidding down or unknown suite */
    if (out->n + 2 > PK_OUT_MAX || out->cap - out->used < PK_LINK_SMCOMPLETE_LEN)
        return PK_ERR_SPACE;

    if ((rc = pk_link_session_keys(l, n2, sid, alg, pik, &rec)) != PK_OK)
        goto out;
    if ((rc = link_mac(pik, l->dcr, l->dcrlen, msg, PK_LINK_SMC_BODY, NULL, 0, mac)) != PK_OK)
        goto out;
    if (!pk_ct_eq(mac, msg + PK_LINK_SMC_BODY, PK_LINK_MAC_LEN)) {
        rc = PK_ERR_AUTH;
        goto out;
    }
    cmpl[0] = PK_LINK_T_SMCOMPLETE;
    cmpl[1] = PK_LINK_VERSION;
    pk_put_u16(cmpl + 2, sid);
    rc = link_mac(pik, l->dcr, l->dcrlen, msg, PK_LINK_SMC_LEN, cmpl, 4, cmpl + 4);
    if (rc != PK_OK)
        goto out;
    /* commit */
    l->sid = sid;
    l->alg = alg;
    memcpy(l->nonce2, n2, PK_LINK_NONCE_LEN);
    memcpy(l->pik, pik, sizeof pik);
    memcpy(l->smc, msg, PK_LINK_SMC_LEN);
    l->rec = rec;
    memset(&rec, 0, sizeof rec);
    l->deadline = UINT64_MAX;
    l->state = PK_LINK_S_ESTABLISHED;
    push_copy(out, PK_ACT_SEND, PK_LINK_T_SMCOMPLETE, cmpl, sizeof cmpl);
    pk_out_push(out, PK_ACT_EVENT, PK_LINK_EV_ESTABLISHED, l->sid, 0);
out:
    pk_record_clear(&rec);
    pk_wipe(pik, sizeof pik);
    pk_wipe(mac, sizeof mac);
    return rc;
}

/* ---- responder: SMCOMPLETE ---- */
static int on_complete(pk_link_t *l, const uint8_t *msg, size_t len, pk_out_t *out)
{
    uint8_t mac[PK_LINK_MAC_LEN];
    int rc;
    if (len != PK_LINK_SMCOMPLETE_LEN)
        return PK_ERR_MALFORMED;
    if (l->role != PK_LINK_RESPONDER)
        return PK_ERR_STATE;
    if (l->state == PK_LINK_S_ESTABLISHED)
        return PK_ERR_REPLAY;
    if (l->state != PK_LINK_S_WAIT_COMPLETE)
        return PK_ERR_STATE;
    if (msg[1] != PK_LINK_VERSION)
        return PK_ERR_VERSION;
    if (pk_get_u16(msg + 2) != l->sid)
        return PK_ERR_STATE;
    if (out->n >= PK_OUT_MAX)
        return PK_ERR_SPACE;
    rc = link_mac(l->pik, l->dcr, l->dcrlen, l->smc, PK_LINK_SMC_LEN, msg, 4, mac);
    if (rc == PK_OK && !pk_ct_eq(mac, msg + 4, PK_LINK_MAC_LEN))
        rc = PK_ERR_AUTH;
    pk_wipe(mac, sizeof mac);
    if (rc != PK_OK)
        return rc;
    l->state = PK_LINK_S_ESTABLISHED;
    l->deadline = UINT64_MAX;
    pk_out_push(out, PK_ACT_EVENT, PK_LINK_EV_ESTABLISHED, l->sid, 0);
    return PK_OK;
}

/* ---- DATA ---- */
static int on_data(pk_link_t *l, const uint8_t *msg, size_t len, pk_out_t *out)
{
    uint8_t type = 0;
    size_t ptlen = 0;
    int confirm = l->role == PK_LINK_RESPONDER && l->state == PK_LINK_S_WAIT_COMPLETE;
    if (len < PK_RECORD_OVERHEAD || len > PK_RECORD_LEN(PK_LINK_DATA_PT_MAX))
        return PK_ERR_MALFORMED;
    if (l->state != PK_LINK_S_ESTABLISHED && !confirm)
        return PK_ERR_STATE;
    size_t want = len - PK_RECORD_OVERHEAD;
    if (out->n + 1u + (unsigned)confirm > PK_OUT_MAX || out->cap - out->used < want)
        return PK_ERR_SPACE;
    uint8_t *pt = pk_out_push(out, PK_ACT_EVENT, PK_LINK_EV_DATA, l->sid, want);
    int rc = pk_record_open(&l->rec, msg, len, &type, pt, want, &ptlen);
    if (rc == PK_OK && type != PK_LINK_T_DATA)
        rc = PK_ERR_MALFORMED; /* cannot happen: the first byte was checked */
    if (rc != PK_OK) {
        pk_wipe(pt, want);
        out->n--; /* take the event back */
        out->used -= want;
        return rc;
    }
    if (confirm) { /* the first authentic record confirms a lost SMCOMPLETE */
        l->state = PK_LINK_S_ESTABLISHED;
        l->deadline = UINT64_MAX;
        pk_out_push(out, PK_ACT_EVENT, PK_LINK_EV_ESTABLISHED, l->sid, 0);
    }
    return PK_OK;
}

int pk_link_input(pk_link_t *l, const uint8_t *msg, size_t len, const pk_rng_t *rng,
                  uint64_t now_ms, pk_out_t *out)
{
    if (!msg || len < 2)
        return PK_ERR_MALFORMED;
    switch (msg[0]) {
    case PK_LINK_T_DCR: return on_dcr(l, msg, len, rng, now_ms, out);
    case PK_LINK_T_SMC: return on_smc(l, msg, len, out);
    case PK_LINK_T_SMCOMPLETE: return on_complete(l, msg, len, out);
    case PK_LINK_T_DATA: return on_data(l, msg, len, out);
    default: return PK_ERR_MALFORMED;
    }
}

int pk_link_send(pk_link_t *l, const uint8_t *pt, size_t len, pk_out_t *out)
{
    size_t rlen = 0;
    if (l->state != PK_LINK_S_ESTABLISHED)
        return PK_ERR_STATE;
    if (len > PK_LINK_DATA_PT_MAX || (!pt && len))
        return PK_ERR_INVAL;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < PK_RECORD_LEN(len))
        return PK_ERR_SPACE;
    uint8_t *d = pk_out_push(out, PK_ACT_SEND, PK_LINK_T_DATA, 0, PK_RECORD_LEN(len));
    int rc = pk_record_seal(&l->rec, PK_LINK_T_DATA, pt, len, d, PK_RECORD_LEN(len), &rlen);
    if (rc != PK_OK) {
        out->n--;
        out->used -= PK_RECORD_LEN(len);
    }
    return rc;
}

int pk_link_timeout(pk_link_t *l, uint64_t now_ms, pk_out_t *out)
{
    if (l->deadline == UINT64_MAX || now_ms < l->deadline)
        return PK_OK;
    if (out->n >= PK_OUT_MAX || out->cap - out->used < l->dcrlen)
        return PK_ERR_SPACE;
    if (l->state == PK_LINK_S_WAIT_SMC && l->tries < l->max_tries) {
        l->tries++;
        l->deadline = backoff(l, now_ms);
        return push_copy(out, PK_ACT_SEND, PK_LINK_T_DCR, l->dcr, l->dcrlen);
    }
    if (l->state == PK_LINK_S_WAIT_SMC || l->state == PK_LINK_S_WAIT_COMPLETE) {
        pk_record_clear(&l->rec);
        pk_wipe(l->pik, sizeof l->pik);
        l->state = PK_LINK_S_FAILED;
        l->deadline = UINT64_MAX;
        pk_out_push(out, PK_ACT_EVENT, PK_LINK_EV_FAILED, l->sid, 0);
        return PK_OK;
    }
    l->deadline = UINT64_MAX; /* a stale timer */
    return PK_OK;
}

uint64_t pk_link_next_deadline(const pk_link_t *l)
{
    return l->deadline;
}

void pk_link_clear(pk_link_t *l)
{
    pk_record_clear(&l->rec);
    pk_wipe(l, sizeof *l);
}
