/*
 * Parsing and writing of the master-key messages (messages.h).
 */
#include "proto/mk/messages.h"

#include <string.h>

#include "core/codec.h"
#include "core/err.h"

int pk_mk_msg_peek(const uint8_t *buf, size_t len)
{
    if (!buf || len < 2)
        return PK_ERR_MALFORMED;
    if (buf[0] != PK_MK_VERSION)
        return PK_ERR_VERSION;
    if (buf[1] < PK_MK_T_BEACON || buf[1] > PK_MK_T_END2)
        return PK_ERR_MALFORMED;
    return buf[1];
}

/* Reads a u8-length-prefixed identity of 1..PK_MK_ID_MAX bytes. */
static const uint8_t *rd_id(pk_rd_t *r, uint8_t *idlen)
{
    uint8_t n = pk_rd_u8(r);
    if (n == 0 || n > PK_MK_ID_MAX) {
        r->err = PK_ERR_MALFORMED;
        *idlen = 0;
        return NULL;
    }
    *idlen = n;
    return pk_rd_borrow(r, n);
}

static int is_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

int pk_mk_msg_parse(const uint8_t *buf, size_t len, pk_mk_msg_t *m)
{
    pk_rd_t r;
    int rc;

    if (!m)
        return PK_ERR_INVAL;
    memset(m, 0, sizeof *m);
    rc = pk_mk_msg_peek(buf, len);
    if (rc < 0)
        return rc;
    if (rc == PK_MK_T_BEACON || len < PK_MK_AUTH_MIN || len > PK_MK_MSG_MAX)
        return PK_ERR_MALFORMED;

    /* The MAC is the last 32 bytes; everything before it is parsed exactly. */
    pk_rd_init(&r, buf, len - PK_MK_MAC_LEN);
    (void)pk_rd_u8(&r); /* version, checked by peek */
    m->type = pk_rd_u8(&r);
    m->flags = pk_rd_u8(&r);
    m->domain_id = pk_rd_u32(&r);
    m->mk_id = pk_rd_u32(&r);
    pk_rd_copy(&r, m->n_i, PK_MK_NONCE_LEN);
    pk_rd_copy(&r, m->n_r, PK_MK_NONCE_LEN);
    m->id_i = rd_id(&r, &m->id_i_len);
    m->id_r = rd_id(&r, &m->id_r_len);
    if (m->type == PK_MK_T_END1 || m->type == PK_MK_T_END2) {
        m->key_id = pk_rd_u32(&r);
        m->expiry_ms = pk_rd_u64(&r);
        if (m->type == PK_MK_T_END1 && (m->flags & PK_MK_FLAG_WRAP)) {
            m->wrap_aad_len = len - PK_MK_MAC_LEN - r.left;
            m->wrapped = pk_rd_borrow(&r, PK_MK_WRAPPED_LEN);
        }
    }
    rc = pk_rd_done(&r);
    if (rc == PK_OK && (m->flags & ~PK_MK_FLAGS_KNOWN))
        rc = PK_ERR_MALFORMED;
    if (rc == PK_OK && m->type == PK_MK_T_START && !is_zero(m->n_r, PK_MK_NONCE_LEN))
        rc = PK_ERR_MALFORMED;
    if (rc == PK_OK && (m->type == PK_MK_T_END1 || m->type == PK_MK_T_END2) &&
        (m->key_id == 0 || m->expiry_ms == 0))
        rc = PK_ERR_MALFORMED;
    if (rc == PK_OK && len != PK_MK_AUTH_LEN(m->type, m->flags, m->id_i_len, m->id_r_len))
        rc = PK_ERR_MALFORMED; /* our own accounting; cannot differ after pk_rd_done */
    if (rc != PK_OK) {
        memset(m, 0, sizeof *m);
        return rc;
    }
    m->mac = buf + len - PK_MK_MAC_LEN;
    m->mac_len_covered = len - PK_MK_MAC_LEN;
    return PK_OK;
}

int pk_mk_msg_write(const pk_mk_msg_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;

    if (!m || !len || m->type < PK_MK_T_START || m->type > PK_MK_T_END2 ||
        (m->flags & ~PK_MK_FLAGS_KNOWN) || !m->id_i || !m->id_r || m->id_i_len == 0 ||
        m->id_i_len > PK_MK_ID_MAX || m->id_r_len == 0 || m->id_r_len > PK_MK_ID_MAX)
        return PK_ERR_INVAL;
    if (m->type == PK_MK_T_END1 && (m->flags & PK_MK_FLAG_WRAP) && !m->wrapped)
        return PK_ERR_INVAL;
    *len = 0;
    pk_wr_init(&w, buf, cap);
    pk_wr_u8(&w, PK_MK_VERSION);
    pk_wr_u8(&w, m->type);
    pk_wr_u8(&w, m->flags);
    pk_wr_u32(&w, m->domain_id);
    pk_wr_u32(&w, m->mk_id);
    pk_wr_bytes(&w, m->n_i, PK_MK_NONCE_LEN);
    if (m->type == PK_MK_T_START) {
        uint8_t *z = pk_wr_reserve(&w, PK_MK_NONCE_LEN);
        if (z)
            memset(z, 0, PK_MK_NONCE_LEN);
    } else {
        pk_wr_bytes(&w, m->n_r, PK_MK_NONCE_LEN);
    }
    pk_wr_block8(&w, m->id_i, m->id_i_len);
    pk_wr_block8(&w, m->id_r, m->id_r_len);
    if (m->type == PK_MK_T_END1 || m->type == PK_MK_T_END2) {
        pk_wr_u32(&w, m->key_id);
        pk_wr_u64(&w, m->expiry_ms);
        if (m->type == PK_MK_T_END1 && (m->flags & PK_MK_FLAG_WRAP))
            pk_wr_bytes(&w, m->wrapped, PK_MK_WRAPPED_LEN);
    }
    uint8_t *mac = pk_wr_reserve(&w, PK_MK_MAC_LEN);
    if (mac)
        memset(mac, 0, PK_MK_MAC_LEN);
    if (pk_wr_ok(&w) != PK_OK)
        return pk_wr_ok(&w);
    *len = w.len;
    return PK_OK;
}

int pk_mk_beacon_parse(const uint8_t *buf, size_t len, pk_mk_beacon_t *b)
{
    pk_rd_t r;
    int rc;

    if (!b)
        return PK_ERR_INVAL;
    memset(b, 0, sizeof *b);
    rc = pk_mk_msg_peek(buf, len);
    if (rc < 0)
        return rc;
    if (rc != PK_MK_T_BEACON || len != PK_MK_BEACON_LEN)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf + 2, len - 2);
    b->domain_id = pk_rd_u32(&r);
    b->mk_id = pk_rd_u32(&r);
    b->id = rd_id(&r, &b->id_len);
    /* the rest is zero padding, exactly */
    size_t pad = r.err == PK_OK ? r.left : 0;
    const uint8_t *z = pk_rd_borrow(&r, pad);
    for (size_t i = 0; z && i < pad; i++)
        if (z[i] != 0)
            r.err = PK_ERR_MALFORMED;
    rc = pk_rd_done(&r);
    if (rc != PK_OK)
        memset(b, 0, sizeof *b);
    return rc;
}

int pk_mk_beacon_write(const pk_mk_beacon_t *b, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;

    if (!b || !len || !b->id || b->id_len == 0 || b->id_len > PK_MK_ID_MAX)
        return PK_ERR_INVAL;
    *len = 0;
    pk_wr_init(&w, buf, cap);
    pk_wr_u8(&w, PK_MK_VERSION);
    pk_wr_u8(&w, PK_MK_T_BEACON);
    pk_wr_u32(&w, b->domain_id);
    pk_wr_u32(&w, b->mk_id);
    pk_wr_block8(&w, b->id, b->id_len);
    uint8_t *pad = pk_wr_reserve(&w, PK_MK_BEACON_LEN - PK_MK_BEACON_FIXED - b->id_len);
    if (pad)
        memset(pad, 0, PK_MK_BEACON_LEN - PK_MK_BEACON_FIXED - b->id_len);
    if (pk_wr_ok(&w) != PK_OK)
        return pk_wr_ok(&w);
    *len = w.len;
    return PK_OK;
}
