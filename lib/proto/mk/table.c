/*
 * The individual-key table (table.h).
 */
#include "proto/mk/table.h"

#include <stdio.h>
#include <string.h>

#include "core/crypto.h"

static int live(const pk_mk_entry_t *e, uint64_t now_ms)
{
    return (e->flags & PK_MK_E_USED) && e->expiry_ms > now_ms;
}

static int same_partner(const pk_mk_entry_t *e, const uint8_t *p, size_t n)
{
    return e->partner_len == n && memcmp(e->partner, p, n) == 0;
}

static void drop(pk_mk_entry_t *e)
{
    pk_wipe(e, sizeof *e);
}

int pk_mk_table_init(pk_mk_table_t *t, pk_mk_entry_t *entries, size_t cap, uint64_t renew_lead_ms,
                     uint64_t retry_ms, uint64_t grace_ms)
{
    if (!t || !entries || cap == 0)
        return PK_ERR_INVAL;
    memset(t, 0, sizeof *t);
    memset(entries, 0, cap * sizeof *entries);
    t->e = entries;
    t->cap = cap;
    t->renew_lead_ms = renew_lead_ms;
    t->retry_ms = retry_ms;
    t->grace_ms = grace_ms;
    return PK_OK;
}

void pk_mk_table_clear(pk_mk_table_t *t)
{
    if (!t)
        return;
    if (t->e)
        pk_wipe(t->e, t->cap * sizeof *t->e);
    t->has_mk = 0;
    t->mk_id = 0;
    t->mk_expiry_ms = 0;
}

void pk_mk_table_set_master(pk_mk_table_t *t, uint32_t mk_id, uint64_t mk_expiry_ms)
{
    t->mk_id = mk_id;
    t->mk_expiry_ms = mk_expiry_ms;
    t->has_mk = 1;
    for (size_t i = 0; i < t->cap; i++)
        if ((t->e[i].flags & PK_MK_E_USED) && t->e[i].mk_id != mk_id)
            t->e[i].next_try_ms = 0;
}

static int pending_of(const pk_mk_entry_t *e, const uint8_t *p, size_t n)
{
    return (e->flags & PK_MK_E_USED) && (e->flags & PK_MK_E_PENDING) && same_partner(e, p, n);
}

static void supersede(const pk_mk_table_t *t, pk_mk_entry_t *e, uint64_t now_ms)
{
    e->flags |= PK_MK_E_SUPERSEDED;
    if (e->expiry_ms > now_ms + t->grace_ms)
        e->expiry_ms = now_ms + t->grace_ms;
}

int pk_mk_table_add(pk_mk_table_t *t, const pk_mk_entry_t *in, uint64_t now_ms)
{
    size_t slot = SIZE_MAX;
    uint64_t expiry;
    int pending;

    if (!t || !in || in->key_id == 0 || in->partner_len == 0 || in->partner_len > PK_MK_ID_MAX ||
        (in->role != PK_MK_ROLE_INITIATOR && in->role != PK_MK_ROLE_RESPONDER))
        return PK_ERR_INVAL;
    if (!t->has_mk || in->mk_id != t->mk_id)
        return PK_ERR_STATE;
    expiry = in->expiry_ms < t->mk_expiry_ms ? in->expiry_ms : t->mk_expiry_ms;
    if (expiry <= now_ms)
        return PK_ERR_EXPIRED;
    pending = (in->flags & PK_MK_E_PENDING) != 0;

    /* Checks first, changes after: uniqueness, then a free (or expired) slot. */
    for (size_t i = 0; i < t->cap; i++) {
        const pk_mk_entry_t *e = &t->e[i];
        if (!live(e, now_ms))
            continue;
        if (e->key_id == in->key_id || (e->key_id & 0xFFFF) == (in->key_id & 0xFFFF))
            return PK_ERR_EXISTS;
    }
    for (size_t i = 0; i < t->cap && slot == SIZE_MAX; i++)
        if (!(t->e[i].flags & PK_MK_E_USED))
            slot = i;
    for (size_t i = 0; i < t->cap && slot == SIZE_MAX; i++)
        if (!live(&t->e[i], now_ms))
            slot = i;
    for (size_t i = 0; pending && i < t->cap && slot == SIZE_MAX; i++)
        if (pending_of(&t->e[i], in->partner, in->partner_len))
            slot = i; /* replaced below anyway */
    if (slot == SIZE_MAX)
        return PK_ERR_LIMIT;

    for (size_t i = 0; i < t->cap; i++) {
        pk_mk_entry_t *e = &t->e[i];
        if (!(e->flags & PK_MK_E_USED) || !same_partner(e, in->partner, in->partner_len))
            continue;
        if (!pending)
            supersede(t, e, now_ms);
        else if (e->flags & PK_MK_E_PENDING)
            drop(e); /* at most one pending key per partner: the newest exchange's */
    }
    pk_mk_entry_t *d = &t->e[slot];
    drop(d);
    d->key_id = in->key_id;
    memcpy(d->key, in->key, PK_MK_IK_LEN);
    d->expiry_ms = expiry;
    d->created_ms = now_ms;
    d->next_try_ms = pending ? in->next_try_ms : 0;
    d->mk_id = in->mk_id;
    memcpy(d->partner, in->partner, in->partner_len);
    d->partner_len = in->partner_len;
    d->role = in->role;
    d->flags = (uint8_t)(PK_MK_E_USED | (pending ? PK_MK_E_PENDING : 0));
    return PK_OK;
}

int pk_mk_table_confirm(pk_mk_table_t *t, uint32_t key_id, uint64_t expiry_ms, uint64_t now_ms)
{
    pk_mk_entry_t *e = NULL;

    for (size_t i = 0; t && key_id && i < t->cap && !e; i++)
        if (live(&t->e[i], now_ms) && t->e[i].key_id == key_id)
            e = &t->e[i];
    if (!e)
        return PK_ERR_NOTFOUND;
    if (expiry_ms && expiry_ms <= now_ms)
        return PK_ERR_EXPIRED;
    if (expiry_ms && expiry_ms < e->expiry_ms)
        e->expiry_ms = expiry_ms;
    if (!(e->flags & PK_MK_E_PENDING))
        return PK_OK;
    e->flags &= (uint8_t)~PK_MK_E_PENDING;
    e->next_try_ms = 0;
    if (e->flags & PK_MK_E_SUPERSEDED)
        return PK_OK; /* a newer key of the partner was stored meanwhile: it stays current */
    /* Not superseded: every other unsuperseded key of the partner is older
     * (a newer non-pending one would have superseded e; e is its only pending). */
    for (size_t i = 0; i < t->cap; i++) {
        pk_mk_entry_t *o = &t->e[i];
        if (o != e && (o->flags & PK_MK_E_USED) && !(o->flags & PK_MK_E_SUPERSEDED) &&
            same_partner(o, e->partner, e->partner_len))
            supersede(t, o, now_ms);
    }
    return PK_OK;
}

const pk_mk_entry_t *pk_mk_table_find(const pk_mk_table_t *t, uint32_t key_id, uint64_t now_ms)
{
    for (size_t i = 0; key_id && i < t->cap; i++)
        if (live(&t->e[i], now_ms) && t->e[i].key_id == key_id)
            return &t->e[i];
    return NULL;
}

const pk_mk_entry_t *pk_mk_table_find_sid(const pk_mk_table_t *t, uint16_t sid, uint64_t now_ms)
{
    for (size_t i = 0; i < t->cap; i++)
        if (live(&t->e[i], now_ms) && (t->e[i].key_id & 0xFFFF) == sid)
            return &t->e[i];
    return NULL;
}

const pk_mk_entry_t *pk_mk_table_current(const pk_mk_table_t *t, const uint8_t *partner,
                                         size_t partner_len, uint64_t now_ms)
{
    for (size_t i = 0; i < t->cap; i++) {
        const pk_mk_entry_t *e = &t->e[i];
        if (live(e, now_ms) && !(e->flags & (PK_MK_E_SUPERSEDED | PK_MK_E_PENDING)) &&
            same_partner(e, partner, partner_len))
            return e;
    }
    return NULL;
}

/* Why e (a current or pending key) needs renewal at now, or 0. For a pending
 * key the caller also waits for its next_try. */
static int due(const pk_mk_table_t *t, const pk_mk_entry_t *e, uint64_t now_ms)
{
    if (t->has_mk && e->mk_id != t->mk_id)
        return PK_MK_RENEW_MASTER;
    if (e->flags & PK_MK_E_PENDING)
        return PK_MK_RENEW_UNCONFIRMED;
    if (e->expiry_ms <= now_ms || e->expiry_ms - now_ms <= t->renew_lead_ms)
        return PK_MK_RENEW_LEAD;
    return 0;
}

int pk_mk_table_is_fresh(const pk_mk_table_t *t, const uint8_t *partner, size_t partner_len,
                         uint64_t now_ms)
{
    const pk_mk_entry_t *e = pk_mk_table_current(t, partner, partner_len, now_ms);
    return e && !due(t, e, now_ms);
}

int pk_mk_table_remove(pk_mk_table_t *t, uint32_t key_id)
{
    for (size_t i = 0; key_id && i < t->cap; i++) {
        if ((t->e[i].flags & PK_MK_E_USED) && t->e[i].key_id == key_id) {
            drop(&t->e[i]);
            return PK_OK;
        }
    }
    return PK_ERR_NOTFOUND;
}

size_t pk_mk_table_count(const pk_mk_table_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++)
        n += (t->e[i].flags & PK_MK_E_USED) != 0;
    return n;
}

size_t pk_mk_table_tick(pk_mk_table_t *t, uint64_t now_ms, pk_mk_renew_t *renew, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < t->cap; i++)
        if ((t->e[i].flags & PK_MK_E_USED) && t->e[i].expiry_ms <= now_ms)
            drop(&t->e[i]);
    /* A partner has at most one current and one unsuperseded pending key;
     * when both are due it is reported once. */
    for (size_t i = 0; i < t->cap && n < max; i++) {
        pk_mk_entry_t *e = &t->e[i];
        int why, dup = 0;
        if (!(e->flags & PK_MK_E_USED) || (e->flags & PK_MK_E_SUPERSEDED))
            continue;
        why = due(t, e, now_ms);
        if (!why || now_ms < e->next_try_ms)
            continue;
        e->next_try_ms = now_ms + t->retry_ms;
        for (size_t k = 0; k < n && !dup; k++)
            dup = renew[k].partner_len == e->partner_len &&
                  memcmp(renew[k].partner, e->partner, e->partner_len) == 0;
        if (dup)
            continue;
        memcpy(renew[n].partner, e->partner, e->partner_len);
        renew[n].partner_len = e->partner_len;
        renew[n].reason = (uint8_t)why;
        renew[n].key_id = e->key_id;
        n++;
    }
    return n;
}

uint64_t pk_mk_table_next_deadline(const pk_mk_table_t *t)
{
    uint64_t d = UINT64_MAX;

    for (size_t i = 0; i < t->cap; i++) {
        const pk_mk_entry_t *e = &t->e[i];
        uint64_t x;
        if (!(e->flags & PK_MK_E_USED))
            continue;
        if (e->expiry_ms < d)
            d = e->expiry_ms;
        if (e->flags & PK_MK_E_SUPERSEDED)
            continue;
        if ((t->has_mk && e->mk_id != t->mk_id) || (e->flags & PK_MK_E_PENDING))
            x = e->next_try_ms;
        else
            x = e->expiry_ms > t->renew_lead_ms ? e->expiry_ms - t->renew_lead_ms : 0;
        if (x < e->next_try_ms)
            x = e->next_try_ms;
        if (x < d)
            d = x;
    }
    return d;
}

size_t pk_mk_entry_format(const pk_mk_entry_t *e, int reveal, char *buf, size_t cap)
{
    char key[2 * PK_MK_IK_LEN + 1], partner[PK_MK_ID_MAX + 1];
    static const char hex[] = "0123456789abcdef";
    int n;

    if (!buf || cap == 0)
        return 0;
    buf[0] = '\0';
    if (!e)
        return 0;
    for (size_t i = 0; i < PK_MK_IK_LEN; i++) {
        int show = reveal || i < 2;
        key[2 * i] = show ? hex[e->key[i] >> 4] : '*';
        key[2 * i + 1] = show ? hex[e->key[i] & 15] : '*';
    }
    key[2 * PK_MK_IK_LEN] = '\0';
    for (size_t i = 0; i < e->partner_len && i < PK_MK_ID_MAX; i++)
        partner[i] = (e->partner[i] >= 0x21 && e->partner[i] < 0x7F) ? (char)e->partner[i] : '?';
    partner[e->partner_len <= PK_MK_ID_MAX ? e->partner_len : PK_MK_ID_MAX] = '\0';
    n = snprintf(buf, cap, "key_id=%u key=%s expiry_ms=%llu partner=%s mk_id=%u role=%s%s%s",
                 e->key_id, key, (unsigned long long)e->expiry_ms, partner, e->mk_id,
                 e->role == PK_MK_ROLE_INITIATOR ? "initiator" : "responder",
                 (e->flags & PK_MK_E_SUPERSEDED) ? " superseded" : "",
                 (e->flags & PK_MK_E_PENDING) ? " pending" : "");
    pk_wipe(key, sizeof key);
    if (n < 0 || (size_t)n >= cap) {
        pk_wipe(buf, cap);
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}
