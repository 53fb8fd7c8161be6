/*
 * Trigger device core: see dev.h. No heap, no I/O.
 */
#include "proto/trigger/dev.h"

#include <string.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "core/err.h"

static int cfg_ok(const pk_trig_dev_cfg_t *c)
{
    return c && c->timeout_ms >= 1 && c->max_resend <= PK_TRIG_TRY_MAX - 1 &&
           c->min_interval_s >= PK_TRIG_INTERVAL_MIN_S && c->min_interval_s <= c->max_interval_s &&
           c->max_interval_s <= PK_TRIG_INTERVAL_MAX_S;
}

static uint32_t clamp_interval(const pk_trig_dev_cfg_t *c, uint32_t s)
{
    if (s < c->min_interval_s)
        return c->min_interval_s;
    if (s > c->max_interval_s)
        return c->max_interval_s;
    return s;
}

int pk_trig_dev_init(pk_trig_dev_t *d, const pk_trig_dev_cfg_t *cfg,
                     const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                     uint32_t interval_s, uint64_t first_poll_ms)
{
    if (!cfg_ok(cfg))
        return PK_ERR_INVAL;
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    memcpy(d->uid, uid1, PK_TRIG_UID_LEN);
    memcpy(d->key, k1, PK_TRIG_KEY_LEN);
    d->interval_s = clamp_interval(cfg, interval_s);
    d->state = PK_TRIG_DEV_IDLE;
    d->deadline_ms = first_poll_ms;
    return PK_OK;
}

void pk_trig_dev_export(const pk_trig_dev_t *d, uint8_t blob[PK_TRIG_DEV_STATE_LEN])
{
    blob[0] = 1;
    blob[1] = blob[2] = blob[3] = 0;
    memcpy(blob + 4, d->uid, PK_TRIG_UID_LEN);
    memcpy(blob + 20, d->key, PK_TRIG_KEY_LEN);
    pk_put_u32(blob + 36, d->interval_s);
}

int pk_trig_dev_import(pk_trig_dev_t *d, const pk_trig_dev_cfg_t *cfg, const uint8_t *blob,
                       size_t len, uint64_t first_poll_ms)
{
    if (!blob || len != PK_TRIG_DEV_STATE_LEN)
        return PK_ERR_MALFORMED;
    if (blob[0] != 1)
        return PK_ERR_VERSION;
    if (blob[1] || blob[2] || blob[3])
        return PK_ERR_MALFORMED;
    return pk_trig_dev_init(d, cfg, blob + 20, blob + 4, pk_get_u32(blob + 36), first_poll_ms);
}

int pk_trig_dev_poll(pk_trig_dev_t *d, uint64_t now_ms, uint8_t out[PK_TRIG_POLL_LEN])
{
    if (d->state != PK_TRIG_DEV_IDLE)
        return PK_ERR_STATE;
    d->resend = 0;
    d->deadline_ms = now_ms + d->cfg.timeout_ms;
    pk_trig_poll_build(1, d->uid, out);
    d->polls_sent++;
    d->state = PK_TRIG_DEV_WAIT;
    return PK_OK;
}

int pk_trig_dev_timeout(pk_trig_dev_t *d, uint64_t now_ms, uint8_t out[PK_TRIG_POLL_LEN], int *send)
{
    *send = 0;
    if (d->state != PK_TRIG_DEV_WAIT || now_ms < d->deadline_ms)
        return PK_OK;
    if (d->resend >= d->cfg.max_resend) {
        d->give_ups++;
        d->deadline_ms = now_ms + (uint64_t)d->interval_s * 1000;
        d->state = PK_TRIG_DEV_IDLE;
        return PK_ERR_TIMEOUT;
    }
    d->resend++;
    d->deadline_ms = now_ms + d->cfg.timeout_ms;
    pk_trig_poll_build((uint8_t)(d->resend + 1), d->uid, out);
    d->polls_sent++;
    *send = 1;
    return PK_OK;
}

uint64_t pk_trig_dev_next_deadline(const pk_trig_dev_t *d)
{
    return d->state == PK_TRIG_DEV_SAVE ? UINT64_MAX : d->deadline_ms;
}

int pk_trig_dev_input(pk_trig_dev_t *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                      pk_trig_dev_msg_t *msg)
{
    pk_trig_cx_t cx = {0};
    int rc = pk_trig_dev_input_cx(d, buf, len, now_ms, msg, &cx);
    pk_trig_cx_clear(&cx);
    return rc;
}

void pk_trig_cx_clear(pk_trig_cx_t *cx)
{
    if (!cx)
        return;
    pk_aead_clear(&cx->aead);
    pk_kdf_clear(&cx->kdf);
}

int pk_trig_dev_input_cx(pk_trig_dev_t *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                         pk_trig_dev_msg_t *msg, pk_trig_cx_t *cx)
{
    int rc;
    uint8_t pt[PK_TRIG_RESP_MAX];
    uint8_t uid2[PK_TRIG_UID_LEN], k2[PK_TRIG_KEY_LEN];
    pk_trig_resp_t r;
    uint32_t interval;

    (void)now_ms;
    if (d->state != PK_TRIG_DEV_WAIT)
        return PK_ERR_STATE;
    rc = pk_trig_resp_open_cx(&cx->aead, d->key, d->uid, buf, len, pt, sizeof pt, &r);
    if (rc != PK_OK) {
        d->rejected++;
        goto out;
    }
    /* Sent is correct when it counts at most the polls we sent. */
    if (r.sent < 1 || r.sent > (unsigned)d->resend + 1) {
        d->rejected++;
        rc = PK_ERR_REPLAY;
        goto out;
    }
    rc = pk_kdf_rekey(&cx->kdf, d->key, PK_TRIG_KEY_LEN);
    if (rc == PK_OK)
        rc = pk_trig_derive_uid2_cx(&cx->kdf, d->uid, r.rand, uid2);
    if (rc != PK_OK)
        goto out;
    if (r.flags & PK_TRIG_F_ROTATE) {
        rc = pk_trig_derive_k2_cx(&cx->kdf, r.rand, uid2, k2);
        if (rc != PK_OK)
            goto out;
    }
    interval = d->interval_s;
    if (!r.unsupported && (r.cmd == PK_TRIG_CMD_POLL_FASTER || r.cmd == PK_TRIG_CMD_POLL_SLOWER))
        interval = clamp_interval(&d->cfg, pk_get_u32(r.arg));

    /* Accepted: fill msg, then move to the new identity (state SAVE). */
    msg->cmd = r.cmd;
    msg->sent = r.sent;
    msg->resend = d->resend;
    msg->rotated = (r.flags & PK_TRIG_F_ROTATE) != 0;
    msg->unsupported = r.unsupported;
    msg->arglen = r.arglen;
    if (r.arglen)
        memcpy(msg->arg, r.arg, r.arglen);
    msg->interval_s = interval;
    memcpy(d->uid, uid2, PK_TRIG_UID_LEN);
    if (r.flags & PK_TRIG_F_ROTATE)
        memcpy(d->key, k2, PK_TRIG_KEY_LEN);
    d->interval_s = interval;
    d->exchanges++;
    d->state = PK_TRIG_DEV_SAVE;
out:
    pk_wipe(pt, sizeof pt);
    pk_wipe(k2, sizeof k2);
    pk_wipe(&r, sizeof r);
    return rc;
}

int pk_trig_dev_saved(pk_trig_dev_t *d, uint64_t now_ms)
{
    if (d->state != PK_TRIG_DEV_SAVE)
        return PK_ERR_STATE;
    d->deadline_ms = now_ms + (uint64_t)d->interval_s * 1000;
    d->state = PK_TRIG_DEV_IDLE;
    return PK_OK;
}

void pk_trig_dev_clear(pk_trig_dev_t *d)
{
    pk_wipe(d, sizeof *d);
}
