/* Registration key derivations (kms and device) and the protected channel. */
#include <string.h>

#include "core/kdf.h"
#include "core/kdf_fc.h"
#include "proto/reg/reg.h"

int pk_reg_derive(const uint8_t *k, size_t klen, const uint8_t rand[PK_REG_RAND_LEN],
                  const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_id_t *node,
                  const pk_reg_id_t *dev, uint8_t autn[PK_REG_AUTN_LEN],
                  uint8_t res[PK_REG_RES_LEN], uint8_t k_reg[PK_REG_KREG_LEN])
{
    pk_kdf_t kdf = {0};
    int rc = pk_reg_derive_cx(&kdf, k, klen, rand, nonce_d, node, dev, autn, res, k_reg);
    pk_kdf_clear(&kdf);
    return rc;
}

int pk_reg_derive_cx(pk_kdf_t *kdf, const uint8_t *k, size_t klen,
                     const uint8_t rand[PK_REG_RAND_LEN], const uint8_t nonce_d[PK_REG_NONCE_LEN],
                     const pk_reg_id_t *node, const pk_reg_id_t *dev, uint8_t autn[PK_REG_AUTN_LEN],
                     uint8_t res[PK_REG_RES_LEN], uint8_t k_reg[PK_REG_KREG_LEN])
{
    int rc;
    uint8_t o[PK_KDF_OUT_LEN];
    const pk_kdf_param_t p[4] = {{rand, PK_REG_RAND_LEN},
                                 {nonce_d, PK_REG_NONCE_LEN},
                                 {node->b, node->len},
                                 {dev->b, dev->len}};

    if (!k || (klen != 16 && klen != 32) || !pk_reg_id_valid(node->b, node->len) ||
        !pk_reg_id_valid(dev->b, dev->len)) {
        rc = PK_ERR_INVAL;
        goto out;
    }
    if ((rc = pk_kdf_rekey(kdf, k, klen)) != PK_OK)
        goto out;
    if (autn) {
        if ((rc = pk_kdf_derive(kdf, PK_FC_REG_AUTN, p, 3, o)) != PK_OK)
            goto out;
        memcpy(autn, o, PK_REG_AUTN_LEN);
    }
    if (res) {
        if ((rc = pk_kdf_derive(kdf, PK_FC_REG_RES, p, 3, o)) != PK_OK)
            goto out;
        memcpy(res, o, PK_REG_RES_LEN);
    }
    if (k_reg) {
        if ((rc = pk_kdf_derive(kdf, PK_FC_REG_KREG, p, 4, o)) != PK_OK)
            goto out;
        memcpy(k_reg, o, PK_REG_KREG_LEN);
    }
out:
    if (rc != PK_OK) {
        if (autn)
            pk_wipe(autn, PK_REG_AUTN_LEN);
        if (res)
            pk_wipe(res, PK_REG_RES_LEN);
        if (k_reg)
            pk_wipe(k_reg, PK_REG_KREG_LEN);
    }
    pk_wipe(o, sizeof o);
    return rc;
}

int pk_reg_kms_vector(const uint8_t *k, size_t klen, const pk_rng_t *rng,
                      const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_id_t *dev,
                      const pk_reg_id_t *node, pk_reg_vector_t *v)
{
    pk_kdf_t kdf = {0};
    int rc = pk_reg_kms_vector_cx(&kdf, k, klen, rng, nonce_d, dev, node, v);
    pk_kdf_clear(&kdf);
    return rc;
}

int pk_reg_kms_vector_cx(pk_kdf_t *kdf, const uint8_t *k, size_t klen, const pk_rng_t *rng,
                         const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_id_t *dev,
                         const pk_reg_id_t *node, pk_reg_vector_t *v)
{
    int rc = pk_rng_fill(rng, v->rand, PK_REG_RAND_LEN);
    if (rc == PK_OK)
        rc =
            pk_reg_derive_cx(kdf, k, klen, v->rand, nonce_d, node, dev, v->autn, v->xres, v->k_reg);
    if (rc != PK_OK)
        pk_wipe(v, sizeof *v);
    return rc;
}

int pk_reg_pool_link_key(const uint8_t pool_key[PK_REG_ROOT_KEY_LEN],
                         const uint8_t param[PK_REG_PARAM_LEN], const pk_reg_id_t *initiator,
                         const pk_reg_id_t *responder, uint8_t k_d[PK_REG_ROOT_KEY_LEN])
{
    const pk_kdf_param_t p[3] = {
        {param, PK_REG_PARAM_LEN}, {initiator->b, initiator->len}, {responder->b, responder->len}};
    if (!pk_reg_id_valid(initiator->b, initiator->len) ||
        !pk_reg_id_valid(responder->b, responder->len))
        return PK_ERR_INVAL;
    int rc = pk_kdf(pool_key, PK_REG_ROOT_KEY_LEN, PK_FC_POOL_LINK, p, 3, k_d);
    if (rc != PK_OK)
        pk_wipe(k_d, PK_REG_ROOT_KEY_LEN);
    return rc;
}

int pk_reg_chan_init(pk_record_t *rec, const uint8_t k_reg[PK_REG_KREG_LEN], uint16_t session_id,
                     int node_side)
{
    pk_kdf_t kdf = {0};
    int rc = pk_reg_chan_init_cx(&kdf, rec, k_reg, session_id, node_side);
    pk_kdf_clear(&kdf);
    return rc;
}

int pk_reg_chan_init_cx(pk_kdf_t *kdf, pk_record_t *rec, const uint8_t k_reg[PK_REG_KREG_LEN],
                        uint16_t session_id, int node_side)
{
    int rc;
    uint8_t up[PK_KDF_OUT_LEN], down[PK_KDF_OUT_LEN];
    uint8_t upk[PK_RECORD_KEY_LEN], ups[PK_RECORD_SALT_LEN];
    uint8_t dnk[PK_RECORD_KEY_LEN], dns[PK_RECORD_SALT_LEN];
    const uint8_t d_up = 0x00, d_down = 0x01;
    const pk_kdf_param_t pu = {&d_up, 1}, pd = {&d_down, 1};

    if ((rc = pk_kdf_rekey(kdf, k_reg, PK_REG_KREG_LEN)) != PK_OK)
        goto out;
    if ((rc = pk_kdf_derive(kdf, PK_FC_REG_MSG, &pu, 1, up)) != PK_OK)
        goto out;
    if ((rc = pk_kdf_derive(kdf, PK_FC_REG_MSG, &pd, 1, down)) != PK_OK)
        goto out;
    pk_record_split_okm(up, upk, ups);
    pk_record_split_okm(down, dnk, dns);
    if (node_side)
        rc = pk_record_init(rec, session_id, 0, dnk, dns, upk, ups);
    else
        rc = pk_record_init(rec, session_id, 0, upk, ups, dnk, dns);
out:
    pk_wipe(up, sizeof up);
    pk_wipe(down, sizeof down);
    pk_wipe(upk, sizeof upk);
    pk_wipe(ups, sizeof ups);
    pk_wipe(dnk, sizeof dnk);
    pk_wipe(dns, sizeof dns);
    return rc;
}

int pk_reg_chan_seal_link(pk_record_t *rec, uint8_t type, const pk_reg_link_pt_t *m, uint8_t *buf,
                          size_t cap, size_t *len)
{
    size_t ptlen = 0;
    *len = 0;
    if (cap < PK_RECORD_OVERHEAD)
        return PK_ERR_SPACE;
    /* plaintext built where the ciphertext goes (in-place seal) */
    int rc = pk_reg_link_pt_encode(type, m, buf + PK_RECORD_HEADER_LEN, cap - PK_RECORD_OVERHEAD,
                                   &ptlen);
    if (rc == PK_OK)
        rc = pk_record_seal(rec, type, buf + PK_RECORD_HEADER_LEN, ptlen, buf, cap, len);
    if (rc != PK_OK)
        pk_wipe(buf, cap);
    return rc;
}

int pk_reg_chan_open_link(pk_record_t *rec, const uint8_t *buf, size_t len, uint8_t *type,
                          pk_reg_link_pt_t *m)
{
    uint8_t pt[PK_REG_LINK_PT_MAX];
    size_t ptlen = 0;
    int rc;
    memset(m, 0, sizeof *m);
    *type = 0;
    if (len < 1 || len > PK_REG_SEALED_MAX ||
        (buf[0] != PK_REG_T_LINK_REQ && buf[0] != PK_REG_T_LINK_IND && buf[0] != PK_REG_T_LINK_REJ))
        return PK_ERR_MALFORMED;
    rc = pk_record_open(rec, buf, len, type, pt, sizeof pt, &ptlen);
    if (rc == PK_OK)
        rc = pk_reg_link_pt_decode(*type, pt, ptlen, m);
    if (rc != PK_OK) {
        memset(m, 0, sizeof *m);
        *type = 0;
    }
    pk_wipe(pt, sizeof pt);
    return rc;
}

int pk_reg_chan_seal_mk(pk_record_t *rec, uint8_t type, uint32_t held_mk_id,
                        const pk_reg_mkset_t *mk, uint8_t *buf, size_t cap, size_t *len)
{
    size_t ptlen = 0;
    int rc;
    *len = 0;
    if (cap < PK_RECORD_OVERHEAD)
        return PK_ERR_SPACE;
    /* plaintext built where the ciphertext goes (in-place seal) */
    if (type == PK_REG_T_MK_REFRESH)
        rc = pk_reg_mk_refresh_pt_encode(held_mk_id, buf + PK_RECORD_HEADER_LEN,
                                         cap - PK_RECORD_OVERHEAD, &ptlen);
    else if (type == PK_REG_T_MK_UPDATE && mk)
        rc = pk_reg_mk_update_pt_encode(mk, buf + PK_RECORD_HEADER_LEN, cap - PK_RECORD_OVERHEAD,
                                        &ptlen);
    else
        return PK_ERR_INVAL;
    if (rc == PK_OK)
        rc = pk_record_seal(rec, type, buf + PK_RECORD_HEADER_LEN, ptlen, buf, cap, len);
    if (rc != PK_OK) {
        pk_wipe(buf, cap);
        *len = 0;
    }
    return rc;
}

int pk_reg_chan_open_mk(pk_record_t *rec, const uint8_t *buf, size_t len, uint8_t *type,
                        uint32_t *held_mk_id, pk_reg_mkset_t *mk)
{
    uint8_t pt[PK_REG_MK_UPDATE_PT_MAX];
    size_t ptlen = 0;
    int rc;
    memset(mk, 0, sizeof *mk);
    *held_mk_id = 0;
    *type = 0;
    if (len < 1 || (buf[0] != PK_REG_T_MK_REFRESH && buf[0] != PK_REG_T_MK_UPDATE) ||
        len > (buf[0] == PK_REG_T_MK_REFRESH ? PK_REG_MK_REFRESH_MAX : PK_REG_MK_UPDATE_MAX))
        return PK_ERR_MALFORMED;
    rc = pk_record_open(rec, buf, len, type, pt, sizeof pt, &ptlen);
    if (rc == PK_OK)
        rc = *type == PK_REG_T_MK_REFRESH ? pk_reg_mk_refresh_pt_decode(pt, ptlen, held_mk_id)
                                          : pk_reg_mk_update_pt_decode(pt, ptlen, mk);
    if (rc != PK_OK) {
        pk_wipe(mk, sizeof *mk);
        *held_mk_id = 0;
        *type = 0;
    }
    pk_wipe(pt, sizeof pt);
    return rc;
}

int pk_reg_chan_seal_keys_req(pk_record_t *rec, const pk_reg_id_t *after, uint8_t *buf, size_t cap,
                              size_t *len)
{
    size_t ptlen = 0;
    *len = 0;
    if (cap < PK_RECORD_OVERHEAD)
        return PK_ERR_SPACE;
    int rc = pk_reg_keys_req_pt_encode(after, buf + PK_RECORD_HEADER_LEN, cap - PK_RECORD_OVERHEAD,
                                       &ptlen);
    if (rc == PK_OK)
        rc = pk_record_seal(rec, PK_REG_T_KEYS_REQ, buf + PK_RECORD_HEADER_LEN, ptlen, buf, cap,
                            len);
    if (rc != PK_OK) {
        pk_wipe(buf, cap);
        *len = 0;
    }
    return rc;
}

int pk_reg_chan_seal_keys(pk_record_t *rec, const pk_reg_id_t *after, const pk_reg_keyset_t *page,
                          uint8_t *buf, size_t cap, size_t *len)
{
    size_t ptlen = 0;
    *len = 0;
    if (cap < PK_RECORD_OVERHEAD)
        return PK_ERR_SPACE;
    /* plaintext built where the ciphertext goes (in-place seal) */
    int rc = pk_reg_keys_pt_encode(after, page, buf + PK_RECORD_HEADER_LEN,
                                   cap - PK_RECORD_OVERHEAD, &ptlen);
    if (rc == PK_OK)
        rc = pk_record_seal(rec, PK_REG_T_KEYS, buf + PK_RECORD_HEADER_LEN, ptlen, buf, cap, len);
    if (rc != PK_OK) {
        pk_wipe(buf, cap);
        *len = 0;
    }
    return rc;
}

int pk_reg_chan_open_keys_req(pk_record_t *rec, const uint8_t *buf, size_t len, pk_reg_id_t *after)
{
    uint8_t pt[PK_REG_KEYS_REQ_PT_MAX];
    size_t ptlen = 0;
    uint8_t type = 0;
    memset(after, 0, sizeof *after);
    if (len < PK_REG_KEYS_REQ_MIN || len > PK_REG_KEYS_REQ_MAX || buf[0] != PK_REG_T_KEYS_REQ)
        return PK_ERR_MALFORMED;
    int rc = pk_record_open(rec, buf, len, &type, pt, sizeof pt, &ptlen);
    if (rc == PK_OK)
        rc = pk_reg_keys_req_pt_decode(pt, ptlen, after);
    if (rc != PK_OK)
        memset(after, 0, sizeof *after);
    pk_wipe(pt, sizeof pt);
    return rc;
}

int pk_reg_chan_open_keys(pk_record_t *rec, const uint8_t *buf, size_t len, pk_reg_id_t *after,
                          pk_reg_keyset_t *page)
{
    uint8_t pt[PK_REG_KEYS_PT_MAX];
    size_t ptlen = 0;
    uint8_t type = 0;
    memset(after, 0, sizeof *after);
    memset(page, 0, sizeof *page);
    if (len < PK_REG_KEYS_MIN || len > PK_REG_KEYS_MAX || buf[0] != PK_REG_T_KEYS)
        return PK_ERR_MALFORMED;
    int rc = pk_record_open(rec, buf, len, &type, pt, sizeof pt, &ptlen);
    if (rc == PK_OK)
        rc = pk_reg_keys_pt_decode(pt, ptlen, after, page);
    if (rc != PK_OK) {
        memset(after, 0, sizeof *after);
        pk_wipe(page, sizeof *page);
    }
    pk_wipe(pt, sizeof pt);
    return rc;
}
