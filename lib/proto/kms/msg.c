/* kms frames (messages.h) and audit records (kms.h). */
#include <string.h>

#include "core/crypto.h"

#include "proto/kms/kms.h"
#include "proto/kms/messages.h"

int pk_kms_msg_encode(const pk_kms_msg_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    *len = 0;
    pk_wr_u8(&w, m->type);
    switch (m->type) {
    case PK_KMS_T_DIR_REQ:
    case PK_KMS_T_MK_REQ: pk_reg_wr_id(&w, &m->id); break;
    case PK_KMS_T_DIR_RESP:
        pk_wr_u8(&w, m->status);
        pk_reg_wr_id(&w, &m->id);
        break;
    case PK_KMS_T_MK_RESP:
        pk_wr_u8(&w, m->status);
        if (m->mk.n == 0)
            pk_wr_u8(&w, 0);
        else
            pk_reg_mkset_write(&w, &m->mk);
        break;
    case PK_KMS_T_ERR:
        pk_wr_u8(&w, m->status);
        pk_wr_u8(&w, m->req_type);
        break;
    default: return PK_ERR_INVAL;
    }
    if (w.err != PK_OK)
        return w.err == PK_ERR_SPACE ? PK_ERR_SPACE : PK_ERR_INVAL;
    *len = w.len;
    return PK_OK;
}

int pk_kms_msg_decode(const uint8_t *buf, size_t len, pk_kms_msg_t *m)
{
    pk_rd_t r;
    memset(m, 0, sizeof *m);
    if (len < PK_KMS_REQ_MIN || len > PK_KMS_MK_RESP_MAX ||
        (buf[0] != PK_KMS_T_MK_RESP && len > PK_KMS_DIR_RESP_MAX))
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    m->type = pk_rd_u8(&r);
    switch (m->type) {
    case PK_KMS_T_DIR_REQ:
    case PK_KMS_T_MK_REQ: pk_reg_rd_id(&r, &m->id); break;
    case PK_KMS_T_MK_RESP:
        m->status = pk_rd_u8(&r);
        if (r.err == PK_OK && r.left == 1 && r.p[0] == 0)
            (void)pk_rd_u8(&r); /* n = 0: no master key */
        else
            pk_reg_mkset_read_opt(&r, &m->mk);
        if (r.err == PK_OK && (m->status != 0 || (m->mk.n == 0 && len != 3)))
            r.err = PK_ERR_MALFORMED;
        break;
    case PK_KMS_T_DIR_RESP:
        m->status = pk_rd_u8(&r);
        pk_reg_rd_id(&r, &m->id);
        break;
    case PK_KMS_T_ERR:
        m->status = pk_rd_u8(&r);
        m->req_type = pk_rd_u8(&r);
        break;
    default: r.err = PK_ERR_MALFORMED; break;
    }
    int rc = pk_rd_done(&r);
    if (rc != PK_OK)
        pk_wipe(m, sizeof *m);
    return rc;
}

static const char *const what_names[] = {
    [PK_KMS_A_VECTOR] = "vector",
    [PK_KMS_A_ROOT_KEY] = "root_key",
    [PK_KMS_A_POOL_KEYS] = "pool_keys",
    [PK_KMS_A_POOL_ALLOC] = "pool_alloc",
    [PK_KMS_A_DEVICE_ADD] = "device_add",
    [PK_KMS_A_DEVICE_REMOVE] = "device_remove",
    [PK_KMS_A_ALLOW] = "allow",
    [PK_KMS_A_DENY] = "deny",
    [PK_KMS_A_GROUP_ADD] = "group_add",
    [PK_KMS_A_GROUP_REMOVE] = "group_remove",
    [PK_KMS_A_POOL_CREATE] = "pool_create",
    [PK_KMS_A_MASTER_KEY] = "master_key",
    [PK_KMS_A_DOMAIN_ADD] = "domain_add",
    [PK_KMS_A_DOMAIN_JOIN] = "domain_join",
    [PK_KMS_A_DOMAIN_LEAVE] = "domain_leave",
    [PK_KMS_A_MK_CREATE] = "mk_create",
    [PK_KMS_A_TRIGGER_KEY] = "trigger_key",
    [PK_KMS_A_TRIGGER_REMOVE] = "trigger_remove",
};

const char *pk_kms_audit_what_name(uint8_t what)
{
    if (what < sizeof what_names / sizeof what_names[0] && what_names[what])
        return what_names[what];
    return "?";
}

/* An optional identity: block8 of 0..64 bytes (0 = absent). */
static void wr_opt_id(pk_wr_t *w, const pk_reg_id_t *id)
{
    if (id->len == 0)
        pk_wr_u8(w, 0);
    else
        pk_reg_wr_id(w, id);
}

static void rd_opt_id(pk_rd_t *r, pk_reg_id_t *id)
{
    pk_rd_t s = pk_rd_block8(r, PK_REG_ID_MAX);
    memset(id, 0, sizeof *id);
    if (s.err == PK_OK && s.left > 0 && pk_reg_id_set(id, s.p, s.left) != PK_OK)
        r->err = PK_ERR_MALFORMED;
}

int pk_kms_audit_encode(const pk_kms_audit_t *a, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    *len = 0;
    pk_wr_u8(&w, 1);
    pk_wr_u8(&w, a->what);
    pk_wr_u64(&w, a->at_ms);
    pk_wr_u32(&w, a->ksi);
    pk_wr_u16(&w, a->count);
    wr_opt_id(&w, &a->node);
    wr_opt_id(&w, &a->device);
    wr_opt_id(&w, &a->peer);
    if (w.err != PK_OK)
        return w.err == PK_ERR_SPACE ? PK_ERR_SPACE : PK_ERR_INVAL;
    *len = w.len;
    return PK_OK;
}

int pk_kms_audit_decode(const uint8_t *buf, size_t len, pk_kms_audit_t *a)
{
    pk_rd_t r;
    memset(a, 0, sizeof *a);
    if (len > PK_KMS_AUDIT_MAX)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    if (pk_rd_u8(&r) != 1)
        r.err = PK_ERR_MALFORMED;
    a->what = pk_rd_u8(&r);
    a->at_ms = pk_rd_u64(&r);
    a->ksi = pk_rd_u32(&r);
    a->count = pk_rd_u16(&r);
    rd_opt_id(&r, &a->node);
    rd_opt_id(&r, &a->device);
    rd_opt_id(&r, &a->peer);
    int rc = pk_rd_done(&r);
    if (rc != PK_OK)
        memset(a, 0, sizeof *a);
    return rc;
}
