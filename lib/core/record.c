/*
 * The record layer (see record.h for the wire format and the contracts).
 *
 * Order of checks in pk_record_open(): length and header (no crypto), session
 * and epoch, counter range, replay window (read only), output space, then the
 * AEAD; the window is written only after the tag verified.
 */
#include "core/record.h"

#include <stdlib.h>
#include <string.h>

#include "core/codec.h"

#define W PK_RECORD_WINDOW_WORDS

/* 1 when [a, a+alen) and [b, b+blen) share a byte (compared as integers, so
 * unrelated buffers are no undefined behaviour). */
static int overlaps(const void *a, size_t alen, const void *b, size_t blen)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    if (alen == 0 || blen == 0)
        return 0;
    return x < y ? y - x < alen : x - y < blen;
}

static void make_nonce(uint8_t nonce[PK_AEAD_NONCE_LEN], const uint8_t salt[PK_RECORD_SALT_LEN],
                       uint64_t counter)
{
    memcpy(nonce, salt, PK_RECORD_SALT_LEN);
    pk_put_u64(nonce + PK_RECORD_SALT_LEN, counter);
}

/* 1 when counter c has not been accepted yet and is not below the window. */
static int window_fresh(const pk_record_t *r, uint64_t c)
{
    if (c > r->rc_rx_top)
        return 1;
    if (r->rc_rx_top - c >= PK_RECORD_REPLAY_WINDOW)
        return 0;
    return !((r->rc_rx_bitmap[(c / 64) % W] >> (c % 64)) & 1);
}

/* Marks c seen; only ever called for an authenticated, fresh c. */
static void window_mark(pk_record_t *r, uint64_t c)
{
    if (c > r->rc_rx_top) {
        uint64_t cur = r->rc_rx_top / 64, diff = c / 64 - cur;
        if (diff > W)
            diff = W;
        for (uint64_t i = 1; i <= diff; i++)
            r->rc_rx_bitmap[(cur + i) % W] = 0;
        r->rc_rx_top = c;
    }
    r->rc_rx_bitmap[(c / 64) % W] |= (uint64_t)1 << (c % 64);
}

int pk_record_init(pk_record_t *r, uint16_t session_id, uint8_t epoch,
                   const uint8_t tx_key[PK_RECORD_KEY_LEN],
                   const uint8_t tx_salt[PK_RECORD_SALT_LEN],
                   const uint8_t rx_key[PK_RECORD_KEY_LEN],
                   const uint8_t rx_salt[PK_RECORD_SALT_LEN])
{
    int ret = PK_ERR_INVAL;

    if (!r)
        return PK_ERR_INVAL;
    memset(r, 0, sizeof *r);
    if (!tx_key != !tx_salt || !rx_key != !rx_salt || (!tx_key && !rx_key))
        goto fail;
    if (tx_key && rx_key) {
        int same_key = pk_ct_eq(tx_key, rx_key, PK_RECORD_KEY_LEN);
        int same_salt = pk_ct_eq(tx_salt, rx_salt, PK_RECORD_SALT_LEN);
        if (same_key && same_salt)
            goto fail; /* a reflected record would open */
    }
    if (tx_key) {
        ret = pk_aead_init(&r->rc_tx, tx_key, PK_RECORD_KEY_LEN);
        if (ret != PK_OK)
            goto fail;
        memcpy(r->rc_tx_salt, tx_salt, PK_RECORD_SALT_LEN);
        r->rc_has_tx = 1;
    }
    if (rx_key) {
        ret = pk_aead_init(&r->rc_rx, rx_key, PK_RECORD_KEY_LEN);
        if (ret != PK_OK)
            goto fail;
        memcpy(r->rc_rx_salt, rx_salt, PK_RECORD_SALT_LEN);
        r->rc_has_rx = 1;
    }
    r->rc_tx_next = r->rc_has_tx ? PK_RECORD_COUNTER_FIRST : PK_RECORD_COUNTER_LIMIT;
    r->rc_session_id = session_id;
    r->rc_epoch = epoch;
    return PK_OK;

fail:
    pk_record_clear(r);
    return ret;
}

void pk_record_clear(pk_record_t *r)
{
    if (!r)
        return;
    pk_aead_clear(&r->rc_tx);
    pk_aead_clear(&r->rc_rx);
    pk_wipe(r, sizeof *r);
}

int pk_record_set_tx_next(pk_record_t *r, uint64_t next)
{
    if (!r || !r->rc_has_tx || next < r->rc_tx_next)
        return PK_ERR_INVAL;
    r->rc_tx_next = next;
    return PK_OK;
}

void pk_record_split_okm(const uint8_t okm[32], uint8_t key[PK_RECORD_KEY_LEN],
                         uint8_t salt[PK_RECORD_SALT_LEN])
{
    memcpy(key, okm + 32 - PK_RECORD_KEY_LEN, PK_RECORD_KEY_LEN);
    memcpy(salt, okm, PK_RECORD_SALT_LEN);
}

int pk_record_peek(const uint8_t *in, size_t inlen, pk_record_hdr_t *hdr)
{
    pk_rd_t rd;
    pk_record_hdr_t h;

    if (!hdr)
        return PK_ERR_MALFORMED;
    memset(hdr, 0, sizeof *hdr);
    if (!in || inlen < PK_RECORD_OVERHEAD || inlen > PK_RECORD_MAX_LEN)
        return PK_ERR_MALFORMED;
    pk_rd_init(&rd, in, inlen);
    h.type = pk_rd_u8(&rd);
    h.session_id = pk_rd_u16(&rd);
    h.epoch = pk_rd_u8(&rd);
    h.counter = pk_rd_u64(&rd);
    (void)pk_rd_borrow(&rd, inlen - PK_RECORD_HEADER_LEN); /* ciphertext || tag */
    if (pk_rd_done(&rd) != PK_OK)
        return PK_ERR_MALFORMED;
    if (h.counter < PK_RECORD_COUNTER_FIRST || h.counter == PK_RECORD_COUNTER_LIMIT)
        return PK_ERR_MALFORMED;
    *hdr = h;
    return PK_OK;
}

int pk_record_seal(pk_record_t *r, uint8_t type, const uint8_t *pt, size_t ptlen, uint8_t *out,
                   size_t cap, size_t *outlen)
{
    int ret;
    uint8_t nonce[PK_AEAD_NONCE_LEN]; /* salt || counter: unique, not secret */
    uint64_t counter;
    pk_wr_t w;

    if (outlen)
        *outlen = 0;
    if (!r || !out || !outlen || (!pt && ptlen) || !r->rc_has_tx)
        return PK_ERR_INVAL;
    if (ptlen > PK_RECORD_MAX_PLAINTEXT)
        return PK_ERR_INVAL;
    if ((uintptr_t)pt != (uintptr_t)out + PK_RECORD_HEADER_LEN && overlaps(pt, ptlen, out, cap))
        return PK_ERR_INVAL;
    if (r->rc_tx_next >= PK_RECORD_COUNTER_LIMIT)
        return PK_ERR_LIMIT;
    if (cap < PK_RECORD_LEN(ptlen))
        return PK_ERR_SPACE;

    /* Burn the counter before encrypting: even a failed seal never lets the
     * same nonce be used twice. */
    counter = r->rc_tx_next++;

    pk_wr_init(&w, out, PK_RECORD_HEADER_LEN);
    pk_wr_u8(&w, type);
    pk_wr_u16(&w, r->rc_session_id);
    pk_wr_u8(&w, r->rc_epoch);
    pk_wr_u64(&w, counter);
    if (pk_wr_ok(&w) != PK_OK || w.len != PK_RECORD_HEADER_LEN)
        abort(); /* our own bug: cap was checked above */

    make_nonce(nonce, r->rc_tx_salt, counter);
    if (ptlen == 0)
        pt = out + PK_RECORD_HEADER_LEN; /* a valid pointer for the cipher */
    ret = pk_aead_seal(&r->rc_tx, nonce, out, PK_RECORD_HEADER_LEN, pt, ptlen,
                       out + PK_RECORD_HEADER_LEN, out + PK_RECORD_HEADER_LEN + ptlen);
    if (ret != PK_OK) {
        pk_wipe(out, cap);
        return PK_ERR_CRYPTO;
    }
    *outlen = PK_RECORD_LEN(ptlen);
    return PK_OK;
}

int pk_record_open(pk_record_t *r, const uint8_t *in, size_t inlen, uint8_t *type, uint8_t *pt_out,
                   size_t cap, size_t *ptlen)
{
    int ret;
    uint8_t nonce[PK_AEAD_NONCE_LEN]; /* salt || counter: unique, not secret */
    uint8_t empty[1];
    pk_record_hdr_t h;
    size_t n;

    if (type)
        *type = 0;
    if (ptlen)
        *ptlen = 0;
    if (!r || !in || !type || !ptlen || (!pt_out && cap) || !r->rc_has_rx)
        return PK_ERR_INVAL;

    if (pk_record_peek(in, inlen, &h) != PK_OK)
        return PK_ERR_MALFORMED;
    if (h.session_id != r->rc_session_id || h.epoch != r->rc_epoch)
        return PK_ERR_STATE;
    if (!window_fresh(r, h.counter))
        return PK_ERR_REPLAY;
    n = inlen - PK_RECORD_OVERHEAD;
    if (cap < n)
        return PK_ERR_SPACE;
    if (n == 0)
        pt_out = empty; /* a valid pointer for the cipher; nothing is written */
    else if ((uintptr_t)pt_out != (uintptr_t)in + PK_RECORD_HEADER_LEN &&
             overlaps(pt_out, n, in, inlen))
        return PK_ERR_INVAL;

    make_nonce(nonce, r->rc_rx_salt, h.counter);
    ret = pk_aead_open(&r->rc_rx, nonce, in, PK_RECORD_HEADER_LEN, in + PK_RECORD_HEADER_LEN, n,
                       in + PK_RECORD_HEADER_LEN + n, pt_out);
    if (ret != PK_OK) {
        pk_wipe(pt_out, n); /* no unauthenticated plaintext, whatever failed */
        return ret == PK_ERR_AUTH ? PK_ERR_AUTH : PK_ERR_CRYPTO;
    }

    /* Authenticated: now, and only now, the state changes. */
    window_mark(r, h.counter);
    *type = h.type;
    *ptlen = n;
    return PK_OK;
}

int pk_record_rx_export(const pk_record_t *r, uint8_t out[static PK_RECORD_RX_STATE_LEN])
{
    if (!r || !r->rc_has_rx)
        return PK_ERR_INVAL;
    pk_put_u64(out, r->rc_rx_top);
    for (unsigned i = 0; i < W; i++)
        pk_put_u64(out + 8 + 8 * i, r->rc_rx_bitmap[i]);
    return PK_OK;
}

int pk_record_rx_check(const uint8_t in[static PK_RECORD_RX_STATE_LEN])
{
    uint64_t top = pk_get_u64(in), tword = top / 64;
    if (top >= PK_RECORD_COUNTER_LIMIT)
        return PK_ERR_MALFORMED;
    for (unsigned i = 0; i < W; i++) {
        uint64_t word = pk_get_u64(in + 8 + 8 * i), allowed = 0;
        /* Ring word i holds counters base .. base+63, d words behind top's. */
        uint64_t d = (tword % W + W - i) % W;
        if (top > 0 && d <= tword) {
            uint64_t base = (tword - d) * 64;
            allowed = d == 0 && top % 64 != 63 ? ((uint64_t)1 << (top % 64 + 1)) - 1 : UINT64_MAX;
            if (base == 0)
                allowed &= ~(uint64_t)1; /* counter 0 is never accepted */
        }
        if (word & ~allowed)
            return PK_ERR_MALFORMED;
    }
    return PK_OK;
}

int pk_record_rx_import(pk_record_t *r, const uint8_t in[static PK_RECORD_RX_STATE_LEN])
{
    if (!r || !r->rc_has_rx)
        return PK_ERR_INVAL;
    if (pk_record_rx_check(in) != PK_OK)
        return PK_ERR_MALFORMED;
    r->rc_rx_top = pk_get_u64(in);
    for (unsigned i = 0; i < W; i++)
        r->rc_rx_bitmap[i] = pk_get_u64(in + 8 + 8 * i);
    return PK_OK;
}
