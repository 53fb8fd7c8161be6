/* Registration wire formats (see messages.h for the layouts). */
#include "proto/reg/messages.h"

#include <string.h>

#include "core/crypto.h"

int pk_reg_id_valid(const uint8_t *b, size_t len)
{
    if (!b || len < 1 || len > PK_REG_ID_MAX)
        return 0;
    size_t i = 0;
    while (i < len) {
        uint8_t c = b[i];
        size_t n;
        uint32_t cp;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        for (size_t j = 1; j <= n; j++) {
            if ((b[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (b[i + j] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

int pk_reg_id_set(pk_reg_id_t *id, const void *b, size_t len)
{
    if (!pk_reg_id_valid(b, len))
        return PK_ERR_MALFORMED;
    memset(id, 0, sizeof *id);
    id->len = (uint8_t)len;
    memcpy(id->b, b, len);
    return PK_OK;
}

int pk_reg_id_eq(const pk_reg_id_t *a, const pk_reg_id_t *b)
{
    return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

int pk_reg_id_cmp(const pk_reg_id_t *a, const pk_reg_id_t *b)
{
    if (a->len != b->len) /* block8 order: the length byte first */
        return a->len < b->len ? -1 : 1;
    return memcmp(a->b, b->b, a->len);
}

void pk_reg_rd_id(pk_rd_t *r, pk_reg_id_t *id)
{
    pk_rd_t s = pk_rd_block8(r, PK_REG_ID_MAX);
    memset(id, 0, sizeof *id);
    if (s.err != PK_OK || pk_reg_id_set(id, s.p, s.left) != PK_OK)
        r->err = PK_ERR_MALFORMED;
}

void pk_reg_wr_id(pk_wr_t *w, const pk_reg_id_t *id)
{
    if (!pk_reg_id_valid(id->b, id->len)) {
        w->err = PK_ERR_INVAL;
        return;
    }
    pk_wr_block8(w, id->b, id->len);
}

void pk_reg_wr_cursor(pk_wr_t *w, const pk_reg_id_t *after)
{
    if (after->len == 0)
        pk_wr_u8(w, 0);
    else
        pk_reg_wr_id(w, after);
}

void pk_reg_rd_cursor(pk_rd_t *r, pk_reg_id_t *after)
{
    pk_rd_t s = pk_rd_block8(r, PK_REG_ID_MAX);
    memset(after, 0, sizeof *after);
    if (s.err != PK_OK || (s.left > 0 && pk_reg_id_set(after, s.p, s.left) != PK_OK))
        r->err = PK_ERR_MALFORMED;
}

static int keyset_valid(const pk_reg_keyset_t *ks)
{
    if (ks->n > PK_REG_MAX_KEYS)
        return 0;
    if (ks->mode != PK_REG_MODE_PAIRS && ks->mode != PK_REG_MODE_POOL)
        return 0;
    if (ks->paged) {
        /* a page: total covers it, a page announcing more carries keys (so
         * paging always advances), entries strictly ascending by peer (so a
         * cursor after the last one can neither repeat nor skip a key) */
        if (ks->more > 1 || ks->total < ks->n || ks->total > PK_REG_PEERS_MAX ||
            (ks->more && ks->n == 0) || (ks->more && ks->mode != PK_REG_MODE_PAIRS))
            return 0;
        for (unsigned i = 1; ks->mode == PK_REG_MODE_PAIRS && i < ks->n; i++)
            if (pk_reg_id_cmp(&ks->k[i - 1].peer, &ks->k[i].peer) >= 0)
                return 0;
    }
    for (unsigned i = 0; i < ks->n; i++) {
        const pk_reg_key_t *k = &ks->k[i];
        if (ks->mode == PK_REG_MODE_PAIRS && !pk_reg_id_valid(k->peer.b, k->peer.len))
            return 0;
        if (ks->mode == PK_REG_MODE_POOL && k->peer.len != 0)
            return 0;
        for (unsigned j = 0; j < i; j++) /* KSIs are unique within a set */
            if (ks->k[j].ksi == k->ksi)
                return 0;
    }
    return 1;
}

int pk_reg_keyset_write(pk_wr_t *w, const pk_reg_keyset_t *ks)
{
    if (!keyset_valid(ks)) {
        w->err = PK_ERR_INVAL;
        return PK_ERR_INVAL;
    }
    pk_wr_u8(w, (uint8_t)(ks->mode | (ks->paged ? PK_REG_MODE_PAGED : 0)));
    pk_wr_u8(w, ks->n);
    for (unsigned i = 0; i < ks->n; i++) {
        pk_wr_u32(w, ks->k[i].ksi);
        pk_wr_bytes(w, ks->k[i].key, PK_REG_ROOT_KEY_LEN);
        pk_wr_u8(w, ks->k[i].peer.len);
        pk_wr_bytes(w, ks->k[i].peer.b, ks->k[i].peer.len);
    }
    if (ks->paged) {
        pk_wr_u16(w, ks->total);
        pk_wr_u8(w, ks->more);
        pk_wr_bytes(w, ks->tag, PK_REG_TAG_LEN);
    }
    return pk_wr_ok(w);
}

void pk_reg_keyset_read(pk_rd_t *r, pk_reg_keyset_t *ks)
{
    memset(ks, 0, sizeof *ks);
    ks->mode = pk_rd_u8(r);
    ks->paged = (ks->mode & PK_REG_MODE_PAGED) != 0;
    ks->mode &= (uint8_t)~PK_REG_MODE_PAGED;
    uint8_t n = pk_rd_u8(r);
    if (n > PK_REG_MAX_KEYS) {
        r->err = PK_ERR_MALFORMED;
        return;
    }
    for (unsigned i = 0; i < n && r->err == PK_OK; i++) {
        pk_reg_key_t *k = &ks->k[i];
        k->ksi = pk_rd_u32(r);
        pk_rd_copy(r, k->key, PK_REG_ROOT_KEY_LEN);
        pk_rd_t s = pk_rd_block8(r, PK_REG_ID_MAX);
        if (s.err == PK_OK && s.left > 0 && pk_reg_id_set(&k->peer, s.p, s.left) != PK_OK)
            r->err = PK_ERR_MALFORMED;
    }
    ks->n = n;
    if (ks->paged) {
        ks->total = pk_rd_u16(r);
        ks->more = pk_rd_u8(r);
        pk_rd_copy(r, ks->tag, PK_REG_TAG_LEN);
    }
    if (r->err == PK_OK && !keyset_valid(ks))
        r->err = PK_ERR_MALFORMED;
    if (r->err != PK_OK)
        pk_wipe(ks, sizeof *ks);
}

int pk_reg_mkset_valid(const pk_reg_mkset_t *mk)
{
    if (mk->n < 1 || mk->n > PK_REG_MAX_MK)
        return 0;
    for (unsigned i = 0; i < mk->n; i++) {
        const pk_reg_mk_t *e = &mk->k[i];
        if (e->id == 0 || e->not_before_ms >= e->expiry_ms)
            return 0;
    }
    if (mk->n == 2 &&
        (mk->k[1].id == mk->k[0].id || mk->k[1].not_before_ms <= mk->k[0].not_before_ms))
        return 0;
    return 1;
}

void pk_reg_mkset_write(pk_wr_t *w, const pk_reg_mkset_t *mk)
{
    if (mk->n == 0)
        return;
    if (!pk_reg_mkset_valid(mk)) {
        w->err = PK_ERR_INVAL;
        return;
    }
    pk_wr_u8(w, mk->n);
    pk_wr_u32(w, mk->domain_id);
    for (unsigned i = 0; i < mk->n; i++) {
        pk_wr_u32(w, mk->k[i].id);
        pk_wr_u64(w, mk->k[i].not_before_ms);
        pk_wr_u64(w, mk->k[i].expiry_ms);
        pk_wr_bytes(w, mk->k[i].key, PK_REG_MK_LEN);
    }
}

void pk_reg_mkset_read_opt(pk_rd_t *r, pk_reg_mkset_t *mk)
{
    memset(mk, 0, sizeof *mk);
    if (r->err != PK_OK || r->left == 0)
        return;
    uint8_t n = pk_rd_u8(r);
    if (n < 1 || n > PK_REG_MAX_MK) {
        r->err = PK_ERR_MALFORMED;
        return;
    }
    mk->domain_id = pk_rd_u32(r);
    for (unsigned i = 0; i < n && r->err == PK_OK; i++) {
        mk->k[i].id = pk_rd_u32(r);
        mk->k[i].not_before_ms = pk_rd_u64(r);
        mk->k[i].expiry_ms = pk_rd_u64(r);
        pk_rd_copy(r, mk->k[i].key, PK_REG_MK_LEN);
    }
    mk->n = n;
    if (r->err == PK_OK && !pk_reg_mkset_valid(mk))
        r->err = PK_ERR_MALFORMED;
    if (r->err != PK_OK)
        pk_wipe(mk, sizeof *mk);
}

/* type(1) ver(1) prefix of the plain messages. */
static int rd_head(pk_rd_t *r, uint8_t type)
{
    if (pk_rd_u8(r) != type) {
        r->err = PK_ERR_MALFORMED;
        return PK_ERR_MALFORMED;
    }
    uint8_t ver = pk_rd_u8(r);
    if (r->err != PK_OK)
        return r->err;
    return ver == PK_REG_VERSION ? PK_OK : PK_ERR_VERSION;
}

int pk_reg_request_encode(const pk_reg_request_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    uint8_t pad[PK_REG_ID_MAX] = {0};
    pk_wr_init(&w, buf, cap);
    if (!pk_reg_id_valid(m->dev.b, m->dev.len))
        return PK_ERR_INVAL;
    pk_wr_u8(&w, PK_REG_T_REQUEST);
    pk_wr_u8(&w, PK_REG_VERSION);
    pk_wr_bytes(&w, m->nonce_d, PK_REG_NONCE_LEN);
    pk_wr_u8(&w, m->dev.len);
    pk_wr_bytes(&w, m->dev.b, m->dev.len);
    pk_wr_bytes(&w, pad, PK_REG_ID_MAX - m->dev.len);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_request_decode(const uint8_t *buf, size_t len, pk_reg_request_t *m)
{
    pk_rd_t r;
    static const uint8_t zero[PK_REG_ID_MAX];
    if (len != PK_REG_REQUEST_LEN)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    int rc = rd_head(&r, PK_REG_T_REQUEST);
    if (rc != PK_OK)
        return rc;
    pk_rd_copy(&r, m->nonce_d, PK_REG_NONCE_LEN);
    uint8_t n = pk_rd_u8(&r);
    const uint8_t *id = pk_rd_borrow(&r, PK_REG_ID_MAX);
    if (pk_rd_done(&r) != PK_OK || n > PK_REG_ID_MAX)
        return PK_ERR_MALFORMED;
    if (memcmp(id + n, zero, PK_REG_ID_MAX - n) != 0) /* padding must be zero */
        return PK_ERR_MALFORMED;
    return pk_reg_id_set(&m->dev, id, n);
}

int pk_reg_challenge_encode(const pk_reg_challenge_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_wr_u8(&w, PK_REG_T_CHALLENGE);
    pk_wr_u8(&w, PK_REG_VERSION);
    pk_wr_bytes(&w, m->nonce_d, PK_REG_NONCE_LEN);
    pk_wr_bytes(&w, m->rand, PK_REG_RAND_LEN);
    pk_wr_bytes(&w, m->autn, PK_REG_AUTN_LEN);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_challenge_decode(const uint8_t *buf, size_t len, pk_reg_challenge_t *m)
{
    pk_rd_t r;
    if (len != PK_REG_CHALLENGE_LEN)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    int rc = rd_head(&r, PK_REG_T_CHALLENGE);
    if (rc != PK_OK)
        return rc;
    pk_rd_copy(&r, m->nonce_d, PK_REG_NONCE_LEN);
    pk_rd_copy(&r, m->rand, PK_REG_RAND_LEN);
    pk_rd_copy(&r, m->autn, PK_REG_AUTN_LEN);
    return pk_rd_done(&r);
}

int pk_reg_response_encode(const pk_reg_response_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_wr_u8(&w, PK_REG_T_RESPONSE);
    pk_wr_u8(&w, PK_REG_VERSION);
    pk_wr_bytes(&w, m->nonce_d, PK_REG_NONCE_LEN);
    pk_reg_wr_id(&w, &m->dev);
    pk_wr_bytes(&w, m->res, PK_REG_RES_LEN);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_response_decode(const uint8_t *buf, size_t len, pk_reg_response_t *m)
{
    pk_rd_t r;
    if (len < PK_REG_RESPONSE_MIN || len > PK_REG_RESPONSE_MAX)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    int rc = rd_head(&r, PK_REG_T_RESPONSE);
    if (rc != PK_OK)
        return rc;
    pk_rd_copy(&r, m->nonce_d, PK_REG_NONCE_LEN);
    pk_reg_rd_id(&r, &m->dev);
    pk_rd_copy(&r, m->res, PK_REG_RES_LEN);
    return pk_rd_done(&r);
}

int pk_reg_accept_pt_encode(const pk_reg_accept_pt_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_wr_bytes(&w, m->nonce_d, PK_REG_NONCE_LEN);
    pk_reg_wr_id(&w, &m->temp_id);
    pk_reg_keyset_write(&w, &m->keys);
    pk_reg_mkset_write(&w, &m->keys.mk);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_accept_pt_decode(const uint8_t *buf, size_t len, pk_reg_accept_pt_t *m)
{
    pk_rd_t r;
    if (len > PK_REG_ACCEPT_PT_MAX)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    pk_rd_copy(&r, m->nonce_d, PK_REG_NONCE_LEN);
    pk_reg_rd_id(&r, &m->temp_id);
    pk_reg_keyset_read(&r, &m->keys);
    pk_reg_mkset_read_opt(&r, &m->keys.mk);
    return pk_rd_done(&r);
}

int pk_reg_link_pt_encode(uint8_t type, const pk_reg_link_pt_t *m, uint8_t *buf, size_t cap,
                          size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_reg_wr_id(&w, &m->peer);
    switch (type) {
    case PK_REG_T_LINK_REQ: break;
    case PK_REG_T_LINK_IND:
        if (m->role > PK_REG_ROLE_RESPONDER)
            return PK_ERR_INVAL;
        pk_wr_u8(&w, m->role);
        pk_wr_u32(&w, m->ksi);
        pk_wr_bytes(&w, m->param, PK_REG_PARAM_LEN);
        break;
    case PK_REG_T_LINK_REJ: pk_wr_u8(&w, m->reason); break;
    default: return PK_ERR_INVAL;
    }
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_link_pt_decode(uint8_t type, const uint8_t *buf, size_t len, pk_reg_link_pt_t *m)
{
    pk_rd_t r;
    memset(m, 0, sizeof *m);
    pk_rd_init(&r, buf, len);
    pk_reg_rd_id(&r, &m->peer);
    switch (type) {
    case PK_REG_T_LINK_REQ: break;
    case PK_REG_T_LINK_IND:
        m->role = pk_rd_u8(&r);
        m->ksi = pk_rd_u32(&r);
        pk_rd_copy(&r, m->param, PK_REG_PARAM_LEN);
        if (m->role > PK_REG_ROLE_RESPONDER)
            return PK_ERR_MALFORMED;
        break;
    case PK_REG_T_LINK_REJ: m->reason = pk_rd_u8(&r); break;
    default: return PK_ERR_MALFORMED;
    }
    return pk_rd_done(&r);
}

int pk_reg_keys_req_pt_encode(const pk_reg_id_t *after, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_reg_wr_cursor(&w, after);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_keys_req_pt_decode(const uint8_t *buf, size_t len, pk_reg_id_t *after)
{
    pk_rd_t r;
    if (len < 1 || len > PK_REG_KEYS_REQ_PT_MAX) {
        memset(after, 0, sizeof *after);
        return PK_ERR_MALFORMED;
    }
    pk_rd_init(&r, buf, len);
    pk_reg_rd_cursor(&r, after);
    return pk_rd_done(&r);
}

/* A KEYS page: paged, mode pairs, every entry after the cursor (the set's
 * rules, keyset_valid, give the ascending order within the page). */
static int keys_page_ok(const pk_reg_id_t *after, const pk_reg_keyset_t *page)
{
    return page->paged && page->mode == PK_REG_MODE_PAIRS &&
           (page->n == 0 || pk_reg_id_cmp(after, &page->k[0].peer) < 0);
}

int pk_reg_keys_pt_encode(const pk_reg_id_t *after, const pk_reg_keyset_t *page, uint8_t *buf,
                          size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    if (!keys_page_ok(after, page))
        return PK_ERR_INVAL;
    pk_reg_wr_cursor(&w, after);
    pk_reg_keyset_write(&w, page);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_keys_pt_decode(const uint8_t *buf, size_t len, pk_reg_id_t *after, pk_reg_keyset_t *page)
{
    pk_rd_t r;
    memset(page, 0, sizeof *page);
    memset(after, 0, sizeof *after);
    if (len < PK_REG_KEYS_PT_MIN || len > PK_REG_KEYS_PT_MAX)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    pk_reg_rd_cursor(&r, after);
    pk_reg_keyset_read(&r, page);
    int rc = pk_rd_done(&r);
    if (rc == PK_OK && !keys_page_ok(after, page))
        rc = PK_ERR_MALFORMED;
    if (rc != PK_OK)
        pk_wipe(page, sizeof *page);
    return rc;
}

int pk_reg_mk_refresh_pt_encode(uint32_t held_mk_id, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    if (held_mk_id != 0)
        pk_wr_u32(&w, held_mk_id);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_mk_refresh_pt_decode(const uint8_t *buf, size_t len, uint32_t *held_mk_id)
{
    pk_rd_t r;
    *held_mk_id = 0;
    if (len == 0)
        return PK_OK;
    if (len != PK_REG_MK_REFRESH_PT_MAX)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    uint32_t id = pk_rd_u32(&r);
    if (pk_rd_done(&r) != PK_OK || id == 0)
        return PK_ERR_MALFORMED;
    *held_mk_id = id;
    return PK_OK;
}

int pk_reg_mk_update_pt_encode(const pk_reg_mkset_t *mk, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_reg_mkset_write(&w, mk);
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_mk_update_pt_decode(const uint8_t *buf, size_t len, pk_reg_mkset_t *mk)
{
    pk_rd_t r;
    if (len != 0 && len != PK_REG_MK_UPDATE_PT_MIN && len != PK_REG_MK_UPDATE_PT_MAX) {
        memset(mk, 0, sizeof *mk);
        return PK_ERR_MALFORMED;
    }
    pk_rd_init(&r, buf, len);
    pk_reg_mkset_read_opt(&r, mk);
    int rc = pk_rd_done(&r);
    if (rc != PK_OK)
        pk_wipe(mk, sizeof *mk);
    return rc;
}

int pk_reg_net_encode(const pk_reg_net_t *m, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_wr_u8(&w, m->type);
    switch (m->type) {
    case PK_REG_T_KMS_VEC_REQ:
        pk_reg_wr_id(&w, &m->a);
        pk_reg_wr_id(&w, &m->b);
        pk_wr_bytes(&w, m->nonce_d, PK_REG_NONCE_LEN);
        break;
    case PK_REG_T_KMS_VEC_RESP:
        pk_wr_u8(&w, m->status);
        pk_wr_bytes(&w, m->vec.rand, PK_REG_RAND_LEN);
        pk_wr_bytes(&w, m->vec.autn, PK_REG_AUTN_LEN);
        pk_wr_bytes(&w, m->vec.xres, PK_REG_RES_LEN);
        pk_wr_bytes(&w, m->vec.k_reg, PK_REG_KREG_LEN);
        break;
    case PK_REG_T_KMS_KEYS_REQ:
        pk_reg_wr_id(&w, &m->a);
        if (m->paged)
            pk_reg_wr_cursor(&w, &m->after);
        break;
    case PK_REG_T_KMS_KEYS_RESP:
        pk_wr_u8(&w, m->status);
        pk_reg_keyset_write(&w, &m->keys);
        pk_reg_mkset_write(&w, &m->keys.mk);
        break;
    case PK_REG_T_KMS_ALLOC_REQ:
        pk_reg_wr_id(&w, &m->a);
        pk_reg_wr_id(&w, &m->b);
        break;
    case PK_REG_T_KMS_ALLOC_RESP:
        pk_wr_u8(&w, m->status);
        pk_wr_u32(&w, m->ksi);
        pk_wr_bytes(&w, m->param, PK_REG_PARAM_LEN);
        break;
    case PK_REG_T_NODE_LINK_IND:
        pk_reg_wr_id(&w, &m->a);
        pk_reg_wr_id(&w, &m->b);
        pk_wr_u32(&w, m->ksi);
        pk_wr_bytes(&w, m->param, PK_REG_PARAM_LEN);
        break;
    default: return PK_ERR_INVAL;
    }
    *len = w.len;
    return pk_wr_ok(&w);
}

int pk_reg_net_decode(const uint8_t *buf, size_t len, pk_reg_net_t *m)
{
    pk_rd_t r;
    memset(m, 0, sizeof *m);
    if (len > PK_REG_NET_MAX)
        return PK_ERR_MALFORMED;
    pk_rd_init(&r, buf, len);
    m->type = pk_rd_u8(&r);
    switch (m->type) {
    case PK_REG_T_KMS_VEC_REQ:
        pk_reg_rd_id(&r, &m->a);
        pk_reg_rd_id(&r, &m->b);
        pk_rd_copy(&r, m->nonce_d, PK_REG_NONCE_LEN);
        break;
    case PK_REG_T_KMS_VEC_RESP:
        m->status = pk_rd_u8(&r);
        pk_rd_copy(&r, m->vec.rand, PK_REG_RAND_LEN);
        pk_rd_copy(&r, m->vec.autn, PK_REG_AUTN_LEN);
        pk_rd_copy(&r, m->vec.xres, PK_REG_RES_LEN);
        pk_rd_copy(&r, m->vec.k_reg, PK_REG_KREG_LEN);
        break;
    case PK_REG_T_KMS_KEYS_REQ:
        pk_reg_rd_id(&r, &m->a);
        if (r.err == PK_OK && r.left > 0) { /* the cursor: a paged request */
            m->paged = 1;
            pk_reg_rd_cursor(&r, &m->after);
        }
        break;
    case PK_REG_T_KMS_KEYS_RESP:
        m->status = pk_rd_u8(&r);
        pk_reg_keyset_read(&r, &m->keys);
        pk_reg_mkset_read_opt(&r, &m->keys.mk);
        break;
    case PK_REG_T_KMS_ALLOC_REQ:
        pk_reg_rd_id(&r, &m->a);
        pk_reg_rd_id(&r, &m->b);
        break;
    case PK_REG_T_KMS_ALLOC_RESP:
        m->status = pk_rd_u8(&r);
        m->ksi = pk_rd_u32(&r);
        pk_rd_copy(&r, m->param, PK_REG_PARAM_LEN);
        break;
    case PK_REG_T_NODE_LINK_IND:
        pk_reg_rd_id(&r, &m->a);
        pk_reg_rd_id(&r, &m->b);
        m->ksi = pk_rd_u32(&r);
        pk_rd_copy(&r, m->param, PK_REG_PARAM_LEN);
        break;
    default: return PK_ERR_MALFORMED;
    }
    int rc = pk_rd_done(&r);
    if (rc != PK_OK)
        pk_wipe(m, sizeof *m);
    return rc;
}
