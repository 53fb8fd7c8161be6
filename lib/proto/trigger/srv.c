/*
 * Trigger server core: UID index, per-device exchange state, command queues.
 * See srv.h for the contract and docs/protocol.md (Trigger) for the state machine.
 */
#include "proto/trigger/srv.h"

#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/err.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"

/* ---- device slots (76 bytes each) ----
 * An idle slot keeps the device's identity UID1 in uid. A pending one keeps
 * the UID2 the exchange will move the device to (so the poll that completes
 * an exchange is matched by comparison, not by a derivation) and of UID1
 * only its index tag: a poll with UID1 (a retransmission) is recognised by
 * deriving UID2 from it, which also proves it is UID1 in full. */

#define SLOT_USED    0x80
#define SLOT_PENDING 0x01 /* an exchange awaits its UID2 */
#define SLOT_BOUND   0x02 /* the queue head is this exchange's MSG */
#define SLOT_ROTATE  0x04 /* K2 with every new UID */
#define SLOT_DIRTY   0x08 /* PERSIST emitted, not yet confirmed durable */

#define NIL UINT32_MAX

typedef struct slot {
    uint8_t uid[PK_TRIG_UID_LEN];   /* idle: UID1; pending: UID2 */
    uint8_t k1[PK_TRIG_KEY_LEN];    /* key of UID1's exchanges */
    uint8_t rand[PK_TRIG_RAND_LEN]; /* UID_RAND of the pending exchange */
    uint32_t cur_tag;               /* index tag of UID1 */
    uint32_t q_head;                /* command pool index or NIL */
    uint32_t last_seen_s;
    uint32_t polls, exch, tries;
    uint8_t sent, try_max, flags, pad_;
} slot_t;

/* ---- commands ---- */

typedef struct cmdent {
    uint64_t seq;
    uint8_t *arg; /* owned, NULL when arglen == 0 */
    uint32_t next;
    uint16_t arglen;
    uint8_t cmd;
} cmdent_t;

/* ---- UID index: open addressing, linear probing, backward-shift delete ----
 * An entry is (tag, ref): tag = UID bytes 0..3 (UIDs are KDF outputs, so
 * uniform), home = tag * cap >> 32; ref = dev_no | NEXT_BIT when the entry is
 * the device's pending UID2. Empty entries have ref == NIL. The full UID is
 * checked against the slot (UID1) or re-derived (UID2) on every tag match. */

#define NEXT_BIT 0x80000000u

typedef struct ient {
    uint32_t tag;
    uint32_t ref;
} ient_t;

struct pk_trig_srv {
    const pk_rng_t *rng;
    slot_t *slots;
    uint32_t nslots; /* allocated */
    uint32_t ndev;
    ient_t *tab;
    uint32_t cap, used;
    cmdent_t *cmds;
    uint32_t ncmds, cmd_free;
    pk_kdf_t kdf;                   /* one HMAC context re-keyed per device ... */
    uint8_t kdf_k[PK_TRIG_KEY_LEN]; /* ... currently keyed with this */
    int kdf_ready;
    pk_aead_t aead; /* one AES-GCM context re-keyed per response */
    pk_trig_retx_gate_fn gate;
    void *gate_ctx;
    pk_trig_srv_stats_t st;
};

void pk_trig_srv_set_retx_gate(pk_trig_srv_t *s, pk_trig_retx_gate_fn gate, void *ctx)
{
    s->gate = gate;
    s->gate_ctx = ctx;
}

static uint32_t uid_tag(const uint8_t uid[PK_TRIG_UID_LEN])
{
    return pk_get_u32(uid);
}
static uint32_t home_of(uint32_t tag, uint32_t cap)
{
    return (uint32_t)(((uint64_t)tag * cap) >> 32);
}

static int tab_alloc(ient_t **t, uint32_t cap)
{
    *t = malloc((size_t)cap * sizeof **t);
    if (!*t)
        return PK_ERR_NOMEM;
    for (uint32_t i = 0; i < cap; i++)
        (*t)[i].ref = NIL;
    return PK_OK;
}

static void tab_put(ient_t *t, uint32_t cap, uint32_t tag, uint32_t ref)
{
    uint32_t i = home_of(tag, cap);
    while (t[i].ref != NIL)
        i = i + 1 == cap ? 0 : i + 1;
    t[i].tag = tag;
    t[i].ref = ref;
}

/* Ensures room for one more entry at load <= 0.8 (grows by half). */
static int tab_reserve(pk_trig_srv_t *s, uint32_t extra)
{
    if ((uint64_t)(s->used + extra) * 5 <= (uint64_t)s->cap * 4)
        return PK_OK;
    uint64_t ncap64 = (uint64_t)s->cap + s->cap / 2 + 16;
    while ((uint64_t)(s->used + extra) * 5 > ncap64 * 4)
        ncap64 += ncap64 / 2;
    if (ncap64 >= NEXT_BIT)
        return PK_ERR_LIMIT;
    uint32_t ncap = (uint32_t)ncap64;
    ient_t *nt;
    int rc = tab_alloc(&nt, ncap);
    if (rc != PK_OK)
        return rc;
    for (uint32_t i = 0; i < s->cap; i++)
        if (s->tab[i].ref != NIL)
            tab_put(nt, ncap, s->tab[i].tag, s->tab[i].ref);
    free(s->tab);
    s->tab = nt;
    s->cap = ncap;
    return PK_OK;
}

static void tab_del(pk_trig_srv_t *s, uint32_t tag, uint32_t ref)
{
    uint32_t cap = s->cap, i = home_of(tag, cap);
    for (uint32_t n = 0; n < cap && s->tab[i].ref != NIL; n++) {
        if (s->tab[i].ref == ref && s->tab[i].tag == tag)
            goto found;
        i = i + 1 == cap ? 0 : i + 1;
    }
    abort(); /* our own bug: deleting an entry that is not there */
found:
    /* Backward-shift: pull later entries of the cluster into the hole. */
    for (uint32_t j = i;;) {
        j = j + 1 == cap ? 0 : j + 1;
        if (s->tab[j].ref == NIL)
            break;
        uint32_t h = home_of(s->tab[j].tag, cap);
        /* May entry j move to hole i? Only if its home is not in (i, j]. */
        int between = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!between) {
            s->tab[i] = s->tab[j];
            i = j;
        }
    }
    s->tab[i].ref = NIL;
    s->used--;
}

/* Keys the core's KDF context with k unless it holds k already (a poll
 * with UID2 derives twice with the same K1: the lookup, then the new UID2). */
static int kdf_key(pk_trig_srv_t *s, const uint8_t k[PK_TRIG_KEY_LEN])
{
    int rc;
    if (s->kdf_ready && pk_ct_eq(s->kdf_k, k, PK_TRIG_KEY_LEN))
        return PK_OK;
    s->kdf_ready = 0;
    rc = pk_kdf_rekey(&s->kdf, k, PK_TRIG_KEY_LEN);
    if (rc == PK_OK) {
        memcpy(s->kdf_k, k, PK_TRIG_KEY_LEN);
        s->kdf_ready = 1;
    }
    return rc;
}

/* UID2 = KDF(K1, UID1, UID_RAND) of slot d's key and rand. */
static int derive_uid2(pk_trig_srv_t *s, const slot_t *d, const uint8_t uid1[PK_TRIG_UID_LEN],
                       uint8_t uid2[PK_TRIG_UID_LEN])
{
    uint8_t o[PK_KDF_OUT_LEN];
    pk_kdf_param_t p[2] = {{uid1, PK_TRIG_UID_LEN}, {d->rand, PK_TRIG_RAND_LEN}};
    int rc = kdf_key(s, d->k1);
    if (rc == PK_OK)
        rc = pk_kdf_derive(&s->kdf, PK_FC_UID2, p, 2, o);
    if (rc == PK_OK)
        memcpy(uid2, o, PK_TRIG_UID_LEN);
    pk_wipe(o, sizeof o);
    return rc;
}

enum { FOUND_NONE = 0, FOUND_CUR = 1, FOUND_NEXT = 2 };

/* Finds the device holding uid. Returns FOUND_* (or a negative error); *pos
 * is the index entry that matched (valid until the table changes). */
static int lookup_at(pk_trig_srv_t *s, const uint8_t uid[PK_TRIG_UID_LEN], uint32_t *dev,
                     uint32_t *pos)
{
    if (s->cap == 0)
        return FOUND_NONE;
    uint32_t tag = uid_tag(uid), cap = s->cap, i = home_of(tag, cap);
    for (uint32_t n = 0; n < cap && s->tab[i].ref != NIL; n++, i = i + 1 == cap ? 0 : i + 1) {
        if (s->tab[i].tag != tag)
            continue;
        uint32_t ref = s->tab[i].ref, d = ref & ~NEXT_BIT;
        slot_t *sl = &s->slots[d];
        int kind = ref & NEXT_BIT ? FOUND_NEXT : FOUND_CUR;
        if (kind == FOUND_CUR && (sl->flags & SLOT_PENDING)) {
            /* UID1 of a pending exchange: it is UID1 iff it derives UID2 */
            uint8_t u2[PK_TRIG_UID_LEN];
            int rc = derive_uid2(s, sl, uid, u2);
            if (rc != PK_OK)
                return rc;
            if (!pk_ct_eq(u2, sl->uid, PK_TRIG_UID_LEN))
                continue;
        } else if (!pk_ct_eq(sl->uid, uid, PK_TRIG_UID_LEN)) {
            continue; /* idle UID1, or a pending UID2: compared as kept */
        }
        *dev = d;
        *pos = i;
        return kind;
    }
    return FOUND_NONE;
}

static int lookup(pk_trig_srv_t *s, const uint8_t uid[PK_TRIG_UID_LEN], uint32_t *dev)
{
    uint32_t pos;
    return lookup_at(s, uid, dev, &pos);
}

void pk_trig_srv_prefetch(const pk_trig_srv_t *s, const uint8_t *buf, size_t len, int deep)
{
    if (len != PK_TRIG_POLL_LEN || s->cap == 0)
        return;
    uint32_t tag = uid_tag(buf + PK_TRIG_POLL_OFF_UID), i = home_of(tag, s->cap);
    if (!deep) {
        __builtin_prefetch(&s->tab[i]);
        return;
    }
    /* the index line is (by now) in cache: fetch the slot of the first
     * entry with this tag, both its cache lines */
    for (uint32_t n = 0; n < 16 && s->tab[i].ref != NIL; n++, i = i + 1 == s->cap ? 0 : i + 1) {
        if (s->tab[i].tag == tag) {
            const slot_t *sl = &s->slots[s->tab[i].ref & ~NEXT_BIT];
            __builtin_prefetch(sl);
            __builtin_prefetch((const uint8_t *)sl + sizeof *sl - 1);
            return;
        }
    }
}

/* ---- lifecycle ---- */

int pk_trig_srv_new(pk_trig_srv_t **out, const pk_rng_t *rng, size_t reserve)
{
    pk_trig_srv_t *s = calloc(1, sizeof *s);
    if (!s)
        return PK_ERR_NOMEM;
    s->rng = rng;
    s->cmd_free = NIL;
    if (reserve > 0x3fffffff)
        reserve = 0x3fffffff;
    if (reserve) {
        /* two entries per device (UID1 + pending UID2) at load 0.8 */
        uint64_t cap = (uint64_t)reserve * 2 * 5 / 4;
        if (cap < 16)
            cap = 16;
        s->cap = (uint32_t)cap;
        s->slots = malloc(reserve * sizeof *s->slots);
        if (!s->slots || tab_alloc(&s->tab, s->cap) != PK_OK) {
            free(s->slots);
            free(s);
            return PK_ERR_NOMEM;
        }
        s->nslots = (uint32_t)reserve;
        for (uint32_t i = 0; i < s->nslots; i++)
            s->slots[i].flags = 0;
    }
    *out = s;
    return PK_OK;
}

static void cmd_release(pk_trig_srv_t *s, uint32_t ci)
{
    cmdent_t *c = &s->cmds[ci];
    if (c->arg) {
        pk_wipe(c->arg, c->arglen);
        free(c->arg);
    }
    c->arg = NULL;
    c->next = s->cmd_free;
    s->cmd_free = ci;
}

void pk_trig_srv_free(pk_trig_srv_t *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->ncmds; i++)
        if (s->cmds[i].arg) {
            pk_wipe(s->cmds[i].arg, s->cmds[i].arglen);
            free(s->cmds[i].arg);
        }
    free(s->cmds);
    if (s->slots) {
        pk_wipe(s->slots, (size_t)s->nslots * sizeof *s->slots);
        free(s->slots);
    }
    free(s->tab);
    pk_kdf_clear(&s->kdf);
    pk_aead_clear(&s->aead);
    pk_wipe(s, sizeof *s);
    free(s);
}

static int slot_reserve(pk_trig_srv_t *s, uint32_t dev_no)
{
    if (dev_no >= 0x7fffffffu)
        return PK_ERR_INVAL;
    if (dev_no < s->nslots)
        return s->slots[dev_no].flags & SLOT_USED ? PK_ERR_EXISTS : PK_OK;
    uint64_t n = (uint64_t)s->nslots + s->nslots / 2 + 64;
    if (n <= dev_no)
        n = (uint64_t)dev_no + 64;
    slot_t *ns = realloc(s->slots, n * sizeof *ns);
    if (!ns)
        return PK_ERR_NOMEM;
    for (uint64_t i = s->nslots; i < n; i++)
        ns[i].flags = 0;
    s->slots = ns;
    s->nslots = (uint32_t)n;
    return PK_OK;
}

static int install(pk_trig_srv_t *s, uint32_t dev_no, const slot_t *src)
{
    int rc = slot_reserve(s, dev_no);
    uint32_t d;
    if (rc != PK_OK)
        return rc;
    rc = tab_reserve(s, 2);
    if (rc != PK_OK)
        return rc;
    /* uid (UID1 idle, UID2 pending) must be new; a pending UID1 is known
     * by its tag only (128-bit random: a clash is not a practical event) */
    rc = lookup(s, src->uid, &d);
    if (rc < 0)
        return rc;
    if (rc != FOUND_NONE)
        return PK_ERR_EXISTS;
    s->slots[dev_no] = *src;
    slot_t *sl = &s->slots[dev_no];
    sl->flags |= SLOT_USED;
    sl->q_head = NIL;
    if (sl->flags & SLOT_PENDING) {
        tab_put(s->tab, s->cap, sl->cur_tag, dev_no);
        tab_put(s->tab, s->cap, uid_tag(sl->uid), dev_no | NEXT_BIT);
        s->used += 2;
    } else {
        sl->cur_tag = uid_tag(sl->uid);
        tab_put(s->tab, s->cap, sl->cur_tag, dev_no);
        s->used++;
    }
    s->ndev++;
    return PK_OK;
}

int pk_trig_srv_add(pk_trig_srv_t *s, uint32_t dev_no, const uint8_t k1[PK_TRIG_KEY_LEN],
                    const uint8_t uid1[PK_TRIG_UID_LEN], unsigned flags)
{
    slot_t sl;
    memset(&sl, 0, sizeof sl);
    memcpy(sl.uid, uid1, PK_TRIG_UID_LEN);
    sl.cur_tag = uid_tag(uid1);
    memcpy(sl.k1, k1, PK_TRIG_KEY_LEN);
    sl.flags = (flags & PK_TRIG_DEV_ROTATE) ? SLOT_ROTATE : 0;
    int rc = install(s, dev_no, &sl);
    pk_wipe(&sl, sizeof sl);
    return rc;
}

/* Record layout (PK_TRIG_REC_LEN = 80, big-endian), version 2:
 *  0 version u8 | 1 flags u8 (PENDING|BOUND|ROTATE) | 2 sent u8 | 3 try_max u8
 *  4 UID 16 (UID1 idle, UID2 pending) | 20 K1 16 | 36 UID_RAND 16
 * 52 last_seen u32 | 56 polls u32 | 60 exchanges u32 | 64 tries u32
 * 68 bound seq u64 | 76 UID1's index tag u32 (its first 4 bytes)
 * Version 1 (read, never written) kept UID1 at 4 and 0 at 76; a pending
 * version-1 record is upgraded on reading by deriving UID2. */
#define REC_FLAGS (SLOT_PENDING | SLOT_BOUND | SLOT_ROTATE)

static int rec_parse(const uint8_t *rec, size_t len, slot_t *sl, uint64_t *bound_seq)
{
    pk_rd_t r;
    pk_rd_init(&r, rec, len);
    if (len != PK_TRIG_REC_LEN)
        return PK_ERR_MALFORMED;
    uint8_t ver = pk_rd_u8(&r);
    if (ver != PK_TRIG_REC_VERSION && ver != 1)
        return PK_ERR_VERSION;
    memset(sl, 0, sizeof *sl);
    sl->flags = pk_rd_u8(&r);
    sl->sent = pk_rd_u8(&r);
    sl->try_max = pk_rd_u8(&r);
    pk_rd_copy(&r, sl->uid, PK_TRIG_UID_LEN);
    pk_rd_copy(&r, sl->k1, PK_TRIG_KEY_LEN);
    pk_rd_copy(&r, sl->rand, PK_TRIG_RAND_LEN);
    sl->last_seen_s = pk_rd_u32(&r);
    sl->polls = pk_rd_u32(&r);
    sl->exch = pk_rd_u32(&r);
    sl->tries = pk_rd_u32(&r);
    *bound_seq = pk_rd_u64(&r);
    sl->cur_tag = pk_rd_u32(&r);
    int rc = PK_OK;
    if (pk_rd_done(&r) != PK_OK || (sl->flags & ~REC_FLAGS) ||
        ((sl->flags & SLOT_BOUND) && !(sl->flags & SLOT_PENDING)) ||
        (ver == 1 && sl->cur_tag != 0) ||
        (ver == 2 && !(sl->flags & SLOT_PENDING) && sl->cur_tag != uid_tag(sl->uid))) {
        rc = PK_ERR_MALFORMED;
    } else if (ver == 1) {
        sl->cur_tag = uid_tag(sl->uid);
        if (sl->flags & SLOT_PENDING)
            rc = pk_trig_derive_uid2(sl->k1, sl->uid, sl->rand, sl->uid);
    }
    if (rc != PK_OK)
        pk_wipe(sl, sizeof *sl);
    return rc;
}

int pk_trig_srv_load(pk_trig_srv_t *s, uint32_t dev_no, const uint8_t *rec, size_t len)
{
    slot_t sl;
    uint64_t bseq;
    int rc = rec_parse(rec, len, &sl, &bseq);
    if (rc == PK_OK) {
        /* The bound command is re-attached when its seq is queued: a BOUND
         * record always has its command still in the store (delivery deletes
         * both atomically), and it is the lowest seq, so it is the head. */
        rc = install(s, dev_no, &sl);
    }
    pk_wipe(&sl, sizeof sl);
    return rc;
}

static uint64_t head_seq(const pk_trig_srv_t *s, const slot_t *sl)
{
    return sl->q_head == NIL ? 0 : s->cmds[sl->q_head].seq;
}

static void rec_write(const pk_trig_srv_t *s, const slot_t *sl, uint8_t rec[PK_TRIG_REC_LEN])
{
    pk_wr_t w;
    pk_wr_init(&w, rec, PK_TRIG_REC_LEN);
    pk_wr_u8(&w, PK_TRIG_REC_VERSION);
    pk_wr_u8(&w, sl->flags & REC_FLAGS);
    pk_wr_u8(&w, sl->sent);
    pk_wr_u8(&w, sl->try_max);
    pk_wr_bytes(&w, sl->uid, PK_TRIG_UID_LEN);
    pk_wr_bytes(&w, sl->k1, PK_TRIG_KEY_LEN);
    pk_wr_bytes(&w, sl->rand, PK_TRIG_RAND_LEN);
    pk_wr_u32(&w, sl->last_seen_s);
    pk_wr_u32(&w, sl->polls);
    pk_wr_u32(&w, sl->exch);
    pk_wr_u32(&w, sl->tries);
    pk_wr_u64(&w, (sl->flags & SLOT_BOUND) ? head_seq(s, sl) : 0);
    pk_wr_u32(&w, sl->cur_tag);
    if (pk_wr_ok(&w) != PK_OK || w.len != PK_TRIG_REC_LEN)
        abort(); /* our own bug */
}

static slot_t *get_slot(const pk_trig_srv_t *s, uint32_t dev_no)
{
    if (dev_no >= s->nslots || !(s->slots[dev_no].flags & SLOT_USED))
        return NULL;
    return &s->slots[dev_no];
}

int pk_trig_srv_record(const pk_trig_srv_t *s, uint32_t dev_no, uint8_t rec[PK_TRIG_REC_LEN])
{
    slot_t *sl = get_slot(s, dev_no);
    if (!sl)
        return PK_ERR_NOTFOUND;
    rec_write(s, sl, rec);
    return PK_OK;
}

int pk_trig_srv_queue(pk_trig_srv_t *s, uint32_t dev_no, uint64_t seq, uint8_t cmd,
                      const uint8_t *arg, size_t arglen)
{
    slot_t *sl = get_slot(s, dev_no);
    if (!sl)
        return PK_ERR_NOTFOUND;
    int rc = pk_trig_cmd_check(cmd, arg, arglen);
    if (rc != PK_OK)
        return rc;
    if (seq == 0)
        return PK_ERR_INVAL;
    uint32_t n = 0, tail = NIL;
    for (uint32_t c = sl->q_head; c != NIL && n <= PK_TRIG_QUEUE_MAX; c = s->cmds[c].next, n++)
        tail = c;
    if (n >= PK_TRIG_QUEUE_MAX)
        return PK_ERR_LIMIT;
    if (tail != NIL && s->cmds[tail].seq >= seq)
        return PK_ERR_EXISTS;
    uint8_t *copy = NULL;
    if (arglen) {
        copy = malloc(arglen);
        if (!copy)
            return PK_ERR_NOMEM;
        memcpy(copy, arg, arglen);
    }
    uint32_t ci = s->cmd_free;
    if (ci == NIL) {
        if (s->ncmds == NIL - 1) {
            free(copy);
            return PK_ERR_LIMIT;
        }
        cmdent_t *nc = realloc(s->cmds, ((size_t)s->ncmds + 1) * sizeof *nc);
        if (!nc) {
            free(copy);
            return PK_ERR_NOMEM;
        }
        s->cmds = nc;
        ci = s->ncmds++;
    } else {
        s->cmd_free = s->cmds[ci].next;
    }
    cmdent_t *c = &s->cmds[ci];
    c->seq = seq;
    c->arg = copy;
    c->arglen = (uint16_t)arglen;
    c->cmd = cmd;
    c->next = NIL;
    if (tail == NIL)
        sl->q_head = ci;
    else
        s->cmds[tail].next = ci;
    return PK_OK;
}

/* ---- the exchange ---- */

/* Space a single input may need in out. */
#define NEED_BYTES (PK_TRIG_REC_LEN + 8 + PK_TRIG_RESP_MAX)

/* A fresh UID_RAND for state t (idle: t->uid is UID1) and its UID2; the
 * index line UID2 will go to is prefetched (checked and written after the
 * response is sealed, by which time it has arrived). */
static int new_rand(pk_trig_srv_t *s, slot_t *t, uint8_t uid2[PK_TRIG_UID_LEN])
{
    int rc = pk_rng_fill(s->rng, t->rand, PK_TRIG_RAND_LEN);
    if (rc == PK_OK)
        rc = derive_uid2(s, t, t->uid, uid2);
    if (rc == PK_OK)
        __builtin_prefetch(&s->tab[home_of(uid_tag(uid2), s->cap)]);
    return rc;
}

int pk_trig_srv_input(pk_trig_srv_t *s, const uint8_t *buf, size_t len, uint64_t now_ms,
                      pk_out_t *out)
{
    pk_trig_poll_t poll;
    uint32_t dev, head, pos = 0, cap0, other;
    int rc, found, new_exch = 0, delivered = 0, persist, attempt = 0;
    uint8_t uid2[PK_TRIG_UID_LEN];
    uint8_t nonce[PK_TRIG_NONCE_LEN];
    slot_t next; /* the new state, committed only once nothing can fail */
    const slot_t *sl;
    uint8_t *ev_rec = NULL;
    unsigned n0 = out->n;
    size_t used0 = out->used;

    memset(&next, 0, sizeof next);
    rc = pk_trig_poll_parse(buf, len, &poll);
    if (rc != PK_OK) {
        s->st.malformed++;
        return rc;
    }
    found = lookup_at(s, poll.uid, &dev, &pos);
    if (found < 0)
        return found;
    if (found == FOUND_NONE) {
        s->st.unknown++;
        return PK_ERR_DENIED;
    }
    if (PK_OUT_MAX - out->n < 3 || out->cap - out->used < NEED_BYTES)
        return PK_ERR_SPACE;
    if (found == FOUND_CUR && (s->slots[dev].flags & SLOT_PENDING) && s->gate &&
        !s->gate(s->gate_ctx)) {
        s->st.retx_refused++; /* a retransmission (or a copy): not answered */
        return PK_ERR_LIMIT;
    }
    /* only an idle device's new exchange adds an index entry (completing
     * one replaces UID1's entry by the next UID2's) */
    cap0 = s->cap;
    rc = tab_reserve(s, !(s->slots[dev].flags & SLOT_PENDING));
    if (rc != PK_OK)
        return rc;
    if (s->cap != cap0) { /* the index was rebuilt: find the entry again */
        found = lookup_at(s, poll.uid, &dev, &pos);
        if (found <= 0)
            return found < 0 ? found : PK_ERR_INVAL;
    }

    sl = &s->slots[dev];
    next = *sl;
    head = sl->q_head;
    if (found == FOUND_NEXT) {
        /* UID2 seen for the first time: UID1 retires (its index line is
         * fetched now, used at the commit), UID2 (already in next.uid)
         * becomes current, K2 becomes K1 when rotating, the bound command
         * is delivered. */
        __builtin_prefetch(&s->tab[home_of(sl->cur_tag, s->cap)]);
        if (next.flags & SLOT_ROTATE) {
            rc = kdf_key(s, sl->k1);
            if (rc == PK_OK)
                rc = pk_trig_derive_k2_cx(&s->kdf, sl->rand, poll.uid, next.k1);
            if (rc != PK_OK)
                goto out;
        }
        if (sl->flags & SLOT_BOUND) {
            delivered = 1;
            head = s->cmds[head].next;
        }
        next.q_head = head;
        next.exch++;
        next.tries += sl->try_max;
        next.flags &= (uint8_t) ~(SLOT_PENDING | SLOT_BOUND);
    }
    if (!(next.flags & SLOT_PENDING)) {
        /* A new exchange on the current UID1: UID_RAND, UID2, Sent = 1, and
         * the head of the queue (if any) bound to it. */
        rc = new_rand(s, &next, uid2);
        if (rc != PK_OK)
            goto out;
        next.sent = 1;
        next.try_max = poll.try_no;
        next.flags |= SLOT_PENDING;
        if (head != NIL)
            next.flags |= SLOT_BOUND;
        new_exch = 1;
    } else {
        /* Retransmission, duplicate or replay of UID1: same UID_RAND and
         * MSG, Sent += 1. */
        if (next.sent < 255)
            next.sent++;
        if (poll.try_no > next.try_max)
            next.try_max = poll.try_no;
    }
    next.polls++;
    next.last_seen_s = (uint32_t)(now_ms / 1000);
    persist = new_exch || (sl->flags & SLOT_DIRTY);

    rc = pk_rng_fill(s->rng, nonce, sizeof nonce);
    if (rc != PK_OK)
        goto out;
    for (;;) {
        uint8_t cmd = PK_TRIG_CMD_NONE;
        const uint8_t *arg = NULL;
        size_t arglen = 0, rlen = 0;
        if (next.flags & SLOT_BOUND) {
            cmd = s->cmds[head].cmd;
            arg = s->cmds[head].arg;
            arglen = s->cmds[head].arglen;
        }
        uint8_t flags = (next.flags & SLOT_ROTATE) ? PK_TRIG_F_ROTATE : 0;
        uint8_t sent = next.sent < poll.try_no ? next.sent : poll.try_no;
        uint8_t *resp;

        if (delivered) {
            uint8_t *d = pk_out_push(out, PK_ACT_EVENT, PK_TRIG_EV_DELIVERED, dev, 8);
            pk_put_u64(d, s->cmds[sl->q_head].seq);
        }
        if (persist)
            ev_rec = pk_out_push(out, PK_ACT_EVENT, PK_TRIG_EV_PERSIST, dev, PK_TRIG_REC_LEN);
        resp = pk_out_push(out, PK_ACT_SEND, PK_TRIG_T_RESP, 0, PK_TRIG_RESP_FIXED + arglen);
        /* the response's AAD is UID1: the poll's UID either way (a new
         * exchange on UID1, a retransmission on UID1, or UID2 now current) */
        rc = pk_trig_resp_seal_cx(&s->aead, next.k1, poll.uid, nonce, cmd, flags, arg, arglen, sent,
                                  next.rand, resp, PK_TRIG_RESP_FIXED + arglen, &rlen);
        if (rc != PK_OK)
            goto out;
        if (!new_exch)
            break;
        /* the new UID2 must be unused (a 2^-128 event: an RNG fault) */
        rc = lookup(s, uid2, &other);
        if (rc < 0)
            goto out;
        if (rc == FOUND_NONE)
            break;
        if (++attempt == 4) {
            rc = PK_ERR_CRYPTO; /* four times: the RNG is broken */
            goto out;
        }
        out->n = n0;
        out->used = used0;
        rc = new_rand(s, &next, uid2);
        if (rc != PK_OK)
            goto out;
    }

    /* Nothing can fail from here: commit the new state. */
    if (found == FOUND_NEXT) {
        /* UID2 becomes current in place (same UID, same home), then UID1
         * is retired (which may shift entries, pos among them) */
        s->tab[pos].ref = dev;
        tab_del(s, sl->cur_tag, dev);
    }
    if (delivered) {
        cmd_release(s, sl->q_head);
        s->st.delivered++;
    }
    if (new_exch) {
        next.cur_tag = uid_tag(next.uid);        /* UID1 of the exchange ... */
        memcpy(next.uid, uid2, PK_TRIG_UID_LEN); /* ... and the UID2 it leads to */
        tab_put(s->tab, s->cap, uid_tag(uid2), dev | NEXT_BIT);
        s->used++;
        s->st.new_exchanges++;
    } else {
        s->st.retransmits++;
    }
    if (persist)
        next.flags |= SLOT_DIRTY;
    s->slots[dev] = next;
    if (persist)
        rec_write(s, &s->slots[dev], ev_rec);
    s->st.answered++;
    rc = PK_OK;
out:
    if (rc != PK_OK) {
        out->n = n0;
        out->used = used0;
    }
    pk_wipe(&next, sizeof next);
    pk_wipe(uid2, sizeof uid2);
    return rc;
}

int pk_trig_srv_remove(pk_trig_srv_t *s, uint32_t dev_no)
{
    slot_t *sl = get_slot(s, dev_no);
    if (!sl)
        return PK_ERR_NOTFOUND;
    tab_del(s, sl->cur_tag, dev_no);
    if (sl->flags & SLOT_PENDING)
        tab_del(s, uid_tag(sl->uid), dev_no | NEXT_BIT);
    for (uint32_t c = sl->q_head, n = 0; c != NIL && n <= PK_TRIG_QUEUE_MAX; n++) {
        uint32_t next = s->cmds[c].next;
        cmd_release(s, c);
        c = next;
    }
    pk_wipe(sl, sizeof *sl); /* K1, UID, UID_RAND */
    sl->flags = 0;
    s->ndev--;
    return PK_OK;
}

void pk_trig_srv_persisted(pk_trig_srv_t *s, uint32_t dev_no)
{
    slot_t *sl = get_slot(s, dev_no);
    if (sl)
        sl->flags &= (uint8_t)~SLOT_DIRTY;
}

static void fill_info(const pk_trig_srv_t *s, const slot_t *sl, pk_trig_srv_info_t *in)
{
    memset(in, 0, sizeof *in);
    memcpy(in->uid, sl->uid, PK_TRIG_UID_LEN);
    in->pending = !!(sl->flags & SLOT_PENDING);
    in->rotate = !!(sl->flags & SLOT_ROTATE);
    in->bound = !!(sl->flags & SLOT_BOUND);
    in->sent = sl->sent;
    in->try_max = sl->try_max;
    in->last_seen_s = sl->last_seen_s;
    in->polls = sl->polls;
    in->exchanges = sl->exch;
    in->tries = sl->tries;
    if (s) {
        unsigned n = 0;
        for (uint32_t c = sl->q_head; c != NIL && n <= PK_TRIG_QUEUE_MAX; c = s->cmds[c].next)
            n++;
        in->queued = n;
        in->head_seq = head_seq(s, sl);
    }
}

int pk_trig_srv_info(const pk_trig_srv_t *s, uint32_t dev_no, pk_trig_srv_info_t *info)
{
    slot_t *sl = get_slot(s, dev_no);
    if (!sl)
        return PK_ERR_NOTFOUND;
    fill_info(s, sl, info);
    return PK_OK;
}

int pk_trig_rec_info(const uint8_t *rec, size_t len, pk_trig_srv_info_t *info)
{
    slot_t sl;
    uint64_t bseq;
    int rc = rec_parse(rec, len, &sl, &bseq);
    if (rc == PK_OK) {
        fill_info(NULL, &sl, info);
        info->head_seq = bseq;
    }
    pk_wipe(&sl, sizeof sl);
    return rc;
}

size_t pk_trig_srv_count(const pk_trig_srv_t *s)
{
    return s->ndev;
}

size_t pk_trig_srv_index_bytes(const pk_trig_srv_t *s)
{
    return (size_t)s->cap * sizeof(ient_t) + (size_t)s->nslots * sizeof(slot_t);
}

void pk_trig_srv_stats(const pk_trig_srv_t *s, pk_trig_srv_stats_t *st)
{
    *st = s->st;
}
