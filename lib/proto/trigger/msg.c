/*
 * Trigger protocol messages: poll parse/build, response seal/open, the UID2
 * and K2 derivations (layouts in messages.h and docs/protocol.md (Trigger)).
 */
#include "proto/trigger/messages.h"

#include <string.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"

int pk_trig_poll_parse(const uint8_t *buf, size_t len, pk_trig_poll_t *p)
{
    if (!buf || len != PK_TRIG_POLL_LEN)
        return PK_ERR_MALFORMED;
    if (buf[0] != PK_TRIG_VERSION || buf[1] != PK_TRIG_T_POLL || buf[PK_TRIG_POLL_OFF_TRY] == 0 ||
        buf[3] != 0)
        return PK_ERR_MALFORMED;
    p->try_no = buf[PK_TRIG_POLL_OFF_TRY];
    p->uid = buf + PK_TRIG_POLL_OFF_UID;
    return PK_OK;
}

void pk_trig_poll_build(uint8_t try_no, const uint8_t uid[PK_TRIG_UID_LEN],
                        uint8_t out[PK_TRIG_POLL_LEN])
{
    out[0] = PK_TRIG_VERSION;
    out[1] = PK_TRIG_T_POLL;
    out[PK_TRIG_POLL_OFF_TRY] = try_no;
    out[3] = 0;
    memcpy(out + PK_TRIG_POLL_OFF_UID, uid, PK_TRIG_UID_LEN);
}

static const char *const pk_trig_cmd_names[] = {
    "none", "update", "poll-faster", "poll-slower", "keygen", "ota-https", "app",
};

const char *pk_trig_cmd_name(uint8_t cmd)
{
    return cmd <= PK_TRIG_CMD_MAX_ ? pk_trig_cmd_names[cmd] : NULL;
}

int pk_trig_cmd_parse(const char *name)
{
    for (int i = 0; i <= PK_TRIG_CMD_MAX_; i++)
        if (strcmp(name, pk_trig_cmd_names[i]) == 0)
            return i;
    return -1;
}

int pk_trig_cmd_check(uint8_t cmd, const uint8_t *arg, size_t arglen)
{
    if (arglen > PK_TRIG_ARG_MAX || (arglen && !arg))
        return PK_ERR_MALFORMED;
    switch (cmd) {
    case PK_TRIG_CMD_NONE:
    case PK_TRIG_CMD_KEYGEN: return arglen == 0 ? PK_OK : PK_ERR_MALFORMED;
    case PK_TRIG_CMD_UPDATE:
    case PK_TRIG_CMD_OTA_HTTPS:
        if (arglen < 1 || arglen > PK_TRIG_URL_MAX)
            return PK_ERR_MALFORMED;
        for (size_t i = 0; i < arglen; i++)
            if (arg[i] < 0x21 || arg[i] > 0x7e)
                return PK_ERR_MALFORMED;
        return PK_OK;
    case PK_TRIG_CMD_POLL_FASTER:
    case PK_TRIG_CMD_POLL_SLOWER: {
        if (arglen != 4)
            return PK_ERR_MALFORMED;
        uint32_t s = pk_get_u32(arg);
        return s >= PK_TRIG_INTERVAL_MIN_S && s <= PK_TRIG_INTERVAL_MAX_S ? PK_OK
                                                                          : PK_ERR_MALFORMED;
    }
    case PK_TRIG_CMD_APP: return PK_OK;
    default: return PK_ERR_INVAL;
    }
}

static void pk_trig_aad(uint8_t aad[PK_TRIG_AAD_LEN], const uint8_t uid1[PK_TRIG_UID_LEN])
{
    aad[0] = PK_TRIG_VERSION;
    aad[1] = PK_TRIG_T_RESP;
    memcpy(aad + PK_TRIG_HDR_LEN, uid1, PK_TRIG_UID_LEN);
}

int pk_trig_resp_seal(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                      const uint8_t nonce[PK_TRIG_NONCE_LEN], uint8_t cmd, uint8_t flags,
                      const uint8_t *arg, size_t arglen, uint8_t sent,
                      const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t *out, size_t outcap,
                      size_t *outlen)
{
    pk_aead_t a = {0};
    int rc = pk_trig_resp_seal_cx(&a, k1, uid1, nonce, cmd, flags, arg, arglen, sent, rand, out,
                                  outcap, outlen);
    pk_aead_clear(&a);
    return rc;
}

int pk_trig_resp_seal_cx(pk_aead_t *a, const uint8_t k1[PK_TRIG_KEY_LEN],
                         const uint8_t uid1[PK_TRIG_UID_LEN],
                         const uint8_t nonce[PK_TRIG_NONCE_LEN], uint8_t cmd, uint8_t flags,
                         const uint8_t *arg, size_t arglen, uint8_t sent,
                         const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t *out, size_t outcap,
                         size_t *outlen)
{
    int rc;
    uint8_t aad[PK_TRIG_AAD_LEN];
    pk_wr_t w;
    size_t total = PK_TRIG_RESP_FIXED + arglen;

    if (arglen > PK_TRIG_ARG_MAX || outcap < total || (arglen && !arg))
        return PK_ERR_INVAL;
    /* Plaintext laid out in place after the header, then sealed in place. */
    pk_wr_init(&w, out, total);
    pk_wr_u8(&w, PK_TRIG_VERSION);
    pk_wr_u8(&w, PK_TRIG_T_RESP);
    pk_wr_bytes(&w, nonce, PK_TRIG_NONCE_LEN);
    pk_wr_u8(&w, cmd);
    pk_wr_u8(&w, flags);
    pk_wr_u16(&w, (uint16_t)arglen);
    pk_wr_bytes(&w, arg, arglen);
    pk_wr_u8(&w, sent);
    pk_wr_bytes(&w, rand, PK_TRIG_RAND_LEN);
    if (pk_wr_ok(&w) != PK_OK || w.len != total - PK_TRIG_TAG_LEN)
        return PK_ERR_INVAL;

    pk_trig_aad(aad, uid1);
    rc = pk_aead_rekey_seal(a, k1, PK_TRIG_KEY_LEN);
    if (rc != PK_OK)
        goto out;
    uint8_t *pt = out + PK_TRIG_HDR_LEN + PK_TRIG_NONCE_LEN;
    size_t ptlen = PK_TRIG_PT_FIXED + arglen;
    rc = pk_aead_seal(a, nonce, aad, sizeof aad, pt, ptlen, pt, pt + ptlen);
    if (rc == PK_OK)
        *outlen = total;
out:
    if (rc != PK_OK)
        pk_wipe(out, outcap < total ? outcap : total);
    return rc;
}

int pk_trig_resp_open(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                      const uint8_t *buf, size_t len, uint8_t *pt, size_t ptcap, pk_trig_resp_t *r)
{
    pk_aead_t a = {0};
    int rc = pk_trig_resp_open_cx(&a, k1, uid1, buf, len, pt, ptcap, r);
    pk_aead_clear(&a);
    return rc;
}

int pk_trig_resp_open_cx(pk_aead_t *a, const uint8_t k1[PK_TRIG_KEY_LEN],
                         const uint8_t uid1[PK_TRIG_UID_LEN], const uint8_t *buf, size_t len,
                         uint8_t *pt, size_t ptcap, pk_trig_resp_t *r)
{
    int rc = PK_ERR_MALFORMED;
    uint8_t aad[PK_TRIG_AAD_LEN];
    size_t ctlen;
    pk_rd_t rd;

    /* Cheap checks first: sizes, version, type. */
    if (!buf || len < PK_TRIG_RESP_FIXED || len > PK_TRIG_RESP_MAX)
        return PK_ERR_MALFORMED;
    if (buf[0] != PK_TRIG_VERSION || buf[1] != PK_TRIG_T_RESP)
        return PK_ERR_MALFORMED;
    ctlen = len - PK_TRIG_HDR_LEN - PK_TRIG_NONCE_LEN - PK_TRIG_TAG_LEN;
    if (ptcap < ctlen)
        return PK_ERR_INVAL;

    pk_trig_aad(aad, uid1);
    rc = pk_aead_rekey(a, k1, PK_TRIG_KEY_LEN);
    if (rc != PK_OK)
        goto out;
    /* The tag is the patent's SIG: the XSIG comparison happens inside
     * pk_aead_open (constant time); no plaintext is released on mismatch. */
    rc = pk_aead_open(a, buf + PK_TRIG_HDR_LEN, aad, sizeof aad,
                      buf + PK_TRIG_HDR_LEN + PK_TRIG_NONCE_LEN, ctlen, buf + len - PK_TRIG_TAG_LEN,
                      pt);
    if (rc != PK_OK)
        goto out;

    pk_rd_init(&rd, pt, ctlen);
    r->cmd = pk_rd_u8(&rd);
    r->flags = pk_rd_u8(&rd);
    r->arglen = pk_rd_u16(&rd);
    r->arg = pk_rd_borrow(&rd, r->arglen);
    r->sent = pk_rd_u8(&rd);
    pk_rd_copy(&rd, r->rand, PK_TRIG_RAND_LEN);
    rc = pk_rd_done(&rd); /* exact: arglen must account for every byte */
    if (rc != PK_OK)
        goto out;
    if ((r->flags & ~PK_TRIG_F_KNOWN) != 0 || r->arglen > PK_TRIG_ARG_MAX) {
        rc = PK_ERR_MALFORMED;
        goto out;
    }
    r->unsupported = pk_trig_cmd_check(r->cmd, r->arg, r->arglen) != PK_OK;
out:
    if (rc != PK_OK) {
        pk_wipe(pt, ptcap < ctlen ? ptcap : ctlen);
        memset(r, 0, sizeof *r);
    }
    return rc;
}

int pk_trig_derive_uid2(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                        const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t uid2[PK_TRIG_UID_LEN])
{
    pk_kdf_t k = {0};
    int rc = pk_kdf_init(&k, k1, PK_TRIG_KEY_LEN);
    if (rc == PK_OK)
        rc = pk_trig_derive_uid2_cx(&k, uid1, rand, uid2);
    pk_kdf_clear(&k);
    return rc;
}

int pk_trig_derive_uid2_cx(pk_kdf_t *k, const uint8_t uid1[PK_TRIG_UID_LEN],
                           const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t uid2[PK_TRIG_UID_LEN])
{
    uint8_t out[PK_KDF_OUT_LEN];
    pk_kdf_param_t p[2] = {{uid1, PK_TRIG_UID_LEN}, {rand, PK_TRIG_RAND_LEN}};
    int rc = pk_kdf_derive(k, PK_FC_UID2, p, 2, out);
    if (rc == PK_OK)
        memcpy(uid2, out, PK_TRIG_UID_LEN);
    pk_wipe(out, sizeof out);
    return rc;
}

int pk_trig_derive_k2(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t rand[PK_TRIG_RAND_LEN],
                      const uint8_t uid2[PK_TRIG_UID_LEN], uint8_t k2[PK_TRIG_KEY_LEN])
{
    pk_kdf_t k = {0};
    int rc = pk_kdf_init(&k, k1, PK_TRIG_KEY_LEN);
    if (rc == PK_OK)
        rc = pk_trig_derive_k2_cx(&k, rand, uid2, k2);
    pk_kdf_clear(&k);
    return rc;
}

int pk_trig_derive_k2_cx(pk_kdf_t *k, const uint8_t rand[PK_TRIG_RAND_LEN],
                         const uint8_t uid2[PK_TRIG_UID_LEN], uint8_t k2[PK_TRIG_KEY_LEN])
{
    uint8_t out[PK_KDF_OUT_LEN];
    pk_kdf_param_t p[2] = {{rand, PK_TRIG_RAND_LEN}, {uid2, PK_TRIG_UID_LEN}};
    int rc = pk_kdf_derive(k, PK_FC_K2, p, 2, out);
    if (rc == PK_OK)
        memcpy(k2, pk_kdf_key128(out), PK_TRIG_KEY_LEN);
    pk_wipe(out, sizeof out);
    return rc;
}
