/* The serving node's core (see node.h). */
#include "proto/node/node.h"

#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "proto/kms/messages.h"

const char *const pk_node_drop_names[PK_NODE_DROP_N] = {
    "malformed",   "version",  "rate",         "no_entry",       "bad_res",
    "state",       "dup",      "evicted",      "no_context",     "auth",
    "replay",      "type",     "kms_full",     "kms_refused",    "kms_late",
    "kms_expired", "link_dup", "peer_unknown", "peer_malformed", "not_here",
    "no_space",    "mk_busy",
};

#define LOCAL_NODE (-1)
#define NO_SLOT    UINT32_MAX

typedef struct dev_ctx {
    uint8_t used, mode;
    uint8_t mk_pending;   /* an MK_REFRESH of this device is in the kms queue */
    uint8_t keys_pending; /* a KEYS_REQ page of this device is in the kms queue */
    uint16_t nlinks;
    uint16_t dom;       /* master-key domain: table index + 1, 0 = none */
    uint32_t mk_newest; /* newest MK ID sent to the device (ACCEPT, MK_UPDATE) */
    uint32_t gen;
    uint32_t hnext; /* next slot in the hash chain, NO_SLOT: end */
    uint64_t src, reg_ms;
    pk_reg_id_t id, temp;
    pk_record_t chan;
} dev_ctx_t;

enum { L_FREE = 0, L_WAIT_DIR = 1, L_WAIT_ALLOC = 2 };

typedef struct link_ent {
    uint8_t state;
    int16_t node; /* LOCAL_NODE or peer index */
    uint32_t gen;
    uint32_t dev, dev_gen; /* the initiator's context */
    pk_reg_id_t peer;
} link_ent_t;

enum { KQ_VEC = 1, KQ_KEYS = 2, KQ_DIR = 3, KQ_ALLOC = 4, KQ_MK = 5, KQ_PAGE = 6 };

/* A master-key domain with registered devices (pushes, periodic check). */
typedef struct dom_ent {
    uint8_t used, pushing;
    uint32_t domain_id;
    uint32_t ndev;     /* devices attached */
    size_t cursor;     /* next device slot the push looks at */
    pk_reg_id_t rep;   /* a device of the domain the kms is asked with */
    pk_reg_mkset_t mk; /* the newest block the kms reported (n = 0: none yet) */
} dom_ent_t;

#define MK_SCAN_MAX 4096 /* device slots one pk_node_timeout() looks at per domain */

typedef struct kq_ent {
    uint8_t kind;
    uint8_t reply; /* KQ_MK: answer the device (slot, slot_gen) with MK_UPDATE */
    uint32_t slot, slot_gen;
    uint64_t t_ms, sent_ms;
    uint64_t src;
    pk_reg_id_t dev;
    uint8_t nonce_d[PK_REG_NONCE_LEN];
    uint32_t link, link_gen;
    pk_reg_id_t after; /* KQ_PAGE: the device's cursor */
} kq_ent_t;

struct pk_node {
    pk_node_cfg_t cfg;
    pk_reg_node_t reg;
    pk_reg_half_t *half;
    pk_reg_bucket_t *bucket;
    /* device contexts */
    dev_ctx_t *dev;
    uint32_t *hash; /* heads, NO_SLOT: empty */
    uint32_t hmask;
    uint32_t *free_dev;
    size_t nfree_dev, ndev;
    size_t hand;
    /* links */
    link_ent_t *link;
    uint32_t *free_link;
    size_t nfree_link;
    /* kms queue: ring of cap entries, [head, head + nsent) sent */
    kq_ent_t *kq;
    size_t kq_cap, kq_head, kq_count, kq_nsent;
    int kms_up, stalled;
    /* peers */
    pk_reg_id_t peer[PK_NODE_MAX_PEERS];
    unsigned npeer;
    uint64_t drops[PK_NODE_DROP_N];
    uint64_t reg_seen[PK_REG_DROP_N]; /* the registration core's counters, last seen */
    unsigned last_drop;
    pk_node_stats_t st;
    pk_kdf_t kdf; /* the registration core's, re-keyed per accept */
    /* master-key domains */
    dom_ent_t *dom;
    uint64_t mk_next_check; /* 0: no round scheduled yet */
    size_t mk_check_idx;    /* next domain of a running check round */
    int mk_checking;
};

/* ---- helpers ---- */

static void drop(pk_node_t *n, unsigned reason)
{
    n->drops[reason]++;
    n->last_drop = reason;
}

/* A device's protected record that did not open: counted by why; rc back. */
static int drop_record(pk_node_t *n, int rc)
{
    drop(n, rc == PK_ERR_AUTH     ? PK_NODE_DROP_AUTH
            : rc == PK_ERR_REPLAY ? PK_NODE_DROP_REPLAY
                                  : PK_REG_DROP_MALFORMED);
    return rc;
}

static int out_room(const pk_out_t *out, unsigned acts, size_t bytes)
{
    return out->n + acts <= PK_OUT_MAX && out->cap - out->used >= bytes;
}

static uint32_t id_hash(const pk_reg_id_t *id)
{
    uint32_t h = 2166136261u; /* FNV-1a: ids are authenticated, not attacker-chosen keys */
    for (unsigned i = 0; i < id->len; i++)
        h = (h ^ id->b[i]) * 16777619u;
    return h;
}

static dev_ctx_t *dev_find(const pk_node_t *n, const pk_reg_id_t *id)
{
    for (uint32_t s = n->hash[id_hash(id) & n->hmask]; s != NO_SLOT; s = n->dev[s].hnext)
        if (pk_reg_id_eq(&n->dev[s].id, id))
            return &n->dev[s];
    return NULL;
}

static void dev_unlink(pk_node_t *n, uint32_t slot)
{
    uint32_t *p = &n->hash[id_hash(&n->dev[slot].id) & n->hmask];
    while (*p != NO_SLOT && *p != slot)
        p = &n->dev[*p].hnext;
    if (*p == slot)
        *p = n->dev[slot].hnext;
}

static void dev_clear(dev_ctx_t *d)
{
    uint32_t gen = d->gen;
    pk_record_clear(&d->chan);
    pk_wipe(d, sizeof *d);
    d->gen = gen + 1;
    d->hnext = NO_SLOT;
}

/* ---- master-key domains ---- */

static dom_ent_t *dom_find(pk_node_t *n, uint32_t domain_id)
{
    for (size_t i = 0; i < n->cfg.max_domains; i++)
        if (n->dom[i].used && n->dom[i].domain_id == domain_id)
            return &n->dom[i];
    return NULL;
}

/* Takes d out of its domain; the domain goes (keys wiped) with its last device. */
static void dom_detach(pk_node_t *n, dev_ctx_t *d)
{
    if (d->dom == 0 || d->dom > n->cfg.max_domains)
        return;
    dom_ent_t *e = &n->dom[d->dom - 1];
    d->dom = 0;
    if (e->ndev > 0)
        e->ndev--;
    if (e->ndev == 0)
        pk_wipe(e, sizeof *e);
}

/* The kms reported block mk (n >= 1) for domain e: keep it when newer and
 * start pushing it to the domain's devices that hold an older key. */
static void dom_learn(dom_ent_t *e, const pk_reg_mkset_t *mk)
{
    uint32_t nw = pk_reg_mkset_newest(mk), old = pk_reg_mkset_newest(&e->mk);
    if (nw < old)
        return; /* an older answer overtaken by a newer one */
    if (nw > old) {
        e->pushing = 1;
        e->cursor = 0;
    }
    pk_wipe(&e->mk, sizeof e->mk);
    e->mk = *mk; /* same newest ID: the kms may have dropped an expired key */
}

/* Puts d in the domain of block mk (n >= 1), which d now holds. */
static void dom_attach(pk_node_t *n, dev_ctx_t *d, const pk_reg_mkset_t *mk)
{
    dom_ent_t *e = dom_find(n, mk->domain_id);
    d->mk_newest = pk_reg_mkset_newest(mk);
    if (d->dom && (!e || d->dom != (uint16_t)(e - n->dom + 1)))
        dom_detach(n, d);
    if (!e) {
        for (size_t i = 0; i < n->cfg.max_domains && !e; i++)
            if (!n->dom[i].used)
                e = &n->dom[i];
        if (!e) {
            n->st.mk_dom_full++;
            return;
        }
        memset(e, 0, sizeof *e);
        e->used = 1;
        e->domain_id = mk->domain_id;
    }
    if (d->dom == 0) {
        d->dom = (uint16_t)(e - n->dom + 1);
        e->ndev++;
    }
    e->rep = d->id;
    dom_learn(e, mk);
    if (d->mk_newest < pk_reg_mkset_newest(&e->mk)) { /* the kms told us of a newer one */
        e->pushing = 1;
        e->cursor = 0;
    }
}

/* ---- kms queue ---- */

static kq_ent_t *kq_at(pk_node_t *n, size_t i)
{
    return &n->kq[(n->kq_head + i) % n->kq_cap];
}

static int kq_full(const pk_node_t *n)
{
    return n->kq_count >= n->kq_cap;
}

#define KQ_FRAME_MAX (1 + 2 * (1 + PK_REG_ID_MAX) + PK_REG_NONCE_LEN)

/* The request frame of e (the directory request in the kms's own format). */
static int kq_frame(const pk_node_t *n, const kq_ent_t *e, uint8_t *buf, size_t cap, size_t *len)
{
    pk_reg_net_t q;
    memset(&q, 0, sizeof q);
    switch (e->kind) {
    case KQ_VEC:
        q.type = PK_REG_T_KMS_VEC_REQ;
        q.a = n->cfg.node_id;
        q.b = e->dev;
        memcpy(q.nonce_d, e->nonce_d, PK_REG_NONCE_LEN);
        break;
    case KQ_KEYS: /* the first page (the cursor says: a paged answer) */
    case KQ_PAGE:
        q.type = PK_REG_T_KMS_KEYS_REQ;
        q.a = e->dev;
        q.paged = 1;
        q.after = e->after;
        break;
    case KQ_DIR: { /* "which node serves device?": the one directory call */
        pk_wr_t w;
        pk_wr_init(&w, buf, cap);
        pk_wr_u8(&w, PK_KMS_T_DIR_REQ);
        pk_reg_wr_id(&w, &n->link[e->link].peer);
        *len = w.len;
        return pk_wr_ok(&w);
    }
    case KQ_ALLOC:
        q.type = PK_REG_T_KMS_ALLOC_REQ;
        q.a = n->dev[n->link[e->link].dev].id;
        q.b = n->link[e->link].peer;
        break;
    case KQ_MK: { /* "the master keys of device's domain" */
        pk_wr_t w;
        pk_wr_init(&w, buf, cap);
        pk_wr_u8(&w, PK_KMS_T_MK_REQ);
        pk_reg_wr_id(&w, &e->dev);
        *len = w.len;
        return pk_wr_ok(&w);
    }
    default: return PK_ERR_INVAL;
    }
    return pk_reg_net_encode(&q, buf, cap, len);
}

static uint8_t kq_req_type(uint8_t kind)
{
    static const uint8_t t[] = {0,
                                PK_REG_T_KMS_VEC_REQ,
                                PK_REG_T_KMS_KEYS_REQ,
                                PK_KMS_T_DIR_REQ,
                                PK_REG_T_KMS_ALLOC_REQ,
                                PK_KMS_T_MK_REQ,
                                PK_REG_T_KMS_KEYS_REQ};
    return kind <= KQ_PAGE ? t[kind] : 0;
}

static uint8_t kq_resp_type(uint8_t kind)
{
    static const uint8_t t[] = {0,
                                PK_REG_T_KMS_VEC_RESP,
                                PK_REG_T_KMS_KEYS_RESP,
                                PK_KMS_T_DIR_RESP,
                                PK_REG_T_KMS_ALLOC_RESP,
                                PK_KMS_T_MK_RESP,
                                PK_REG_T_KMS_KEYS_RESP};
    return kind <= KQ_PAGE ? t[kind] : 0;
}

/* Sends the first unsent entry (the caller checked it exists and that the
 * kms is up). PK_ERR_SPACE when out is full. */
static int kq_send_next(pk_node_t *n, uint64_t now_ms, pk_out_t *out)
{
    kq_ent_t *e = kq_at(n, n->kq_nsent);
    uint8_t *d =
        pk_out_push(out, PK_ACT_SEND, PK_NODE_DST_KMS | kq_req_type(e->kind), 0, KQ_FRAME_MAX);
    size_t len = 0;
    if (!d)
        return PK_ERR_SPACE;
    int rc = kq_frame(n, e, d, KQ_FRAME_MAX, &len);
    if (rc != PK_OK) { /* cannot happen for entries we made: undo the action */
        out->n--;
        out->used -= KQ_FRAME_MAX;
        return rc;
    }
    pk_out_trim(out, len);
    e->sent_ms = now_ms;
    n->kq_nsent++;
    n->st.kms_sent++;
    return PK_OK;
}

/* Appends e and sends it at once when the kms is up and nothing waits before
 * it. The caller checked !kq_full() and out room. */
static int kq_push(pk_node_t *n, const kq_ent_t *e, uint64_t now_ms, pk_out_t *out)
{
    *kq_at(n, n->kq_count) = *e;
    n->kq_count++;
    if (n->kms_up && n->kq_nsent == n->kq_count - 1) {
        int rc = kq_send_next(n, now_ms, out);
        if (rc != PK_OK) {
            n->kq_count--;
            pk_wipe(kq_at(n, n->kq_count), sizeof(kq_ent_t));
            return rc;
        }
    }
    return PK_OK;
}

static void kq_pop(pk_node_t *n, kq_ent_t *e)
{
    kq_ent_t *h = kq_at(n, 0);
    *e = *h;
    pk_wipe(h, sizeof *h);
    n->kq_head = (n->kq_head + 1) % n->kq_cap;
    n->kq_count--;
    if (n->kq_nsent > 0)
        n->kq_nsent--;
}

/* ---- construction ---- */

int pk_node_new(const pk_node_cfg_t *cfg, pk_node_t **out)
{
    pk_node_t *n;
    *out = NULL;
    if (!cfg || !cfg->rng || !pk_reg_id_valid(cfg->node_id.b, cfg->node_id.len) ||
        cfg->max_devices > 65535)
        return PK_ERR_INVAL;
    n = calloc(1, sizeof *n);
    if (!n)
        return PK_ERR_NOMEM;
    n->cfg = *cfg;
    pk_node_cfg_t *c = &n->cfg;
    if (!c->max_half)
        c->max_half = 2048;
    if (!c->max_buckets)
        c->max_buckets = 1024;
    if (!c->burst)
        c->burst = 8;
    if (!c->per_sec)
        c->per_sec = 4;
    if (!c->half_ttl_ms)
        c->half_ttl_ms = 30000;
    if (!c->max_devices)
        c->max_devices = 16384;
    if (!c->max_kms)
        c->max_kms = 16384;
    if (!c->kms_timeout_ms)
        c->kms_timeout_ms = 5000;
    if (!c->max_links)
        c->max_links = 1024;
    if (!c->max_links_per_dev)
        c->max_links_per_dev = 4;
    if (!c->max_domains)
        c->max_domains = 256;
    if (c->max_domains > 4096) {
        free(n);
        return PK_ERR_INVAL;
    }
    if (!c->mk_check_ms)
        c->mk_check_ms = 60000;
    if (!c->mk_push_per_tick)
        c->mk_push_per_tick = 8;
    uint32_t hsize = 1;
    while (hsize < 2 * c->max_devices)
        hsize <<= 1;
    n->hmask = hsize - 1;
    n->half = calloc(c->max_half, sizeof *n->half);
    n->bucket = calloc(c->max_buckets, sizeof *n->bucket);
    n->dev = calloc(c->max_devices, sizeof *n->dev);
    n->hash = malloc(hsize * sizeof *n->hash);
    n->free_dev = malloc(c->max_devices * sizeof *n->free_dev);
    n->link = calloc(c->max_links, sizeof *n->link);
    n->free_link = malloc(c->max_links * sizeof *n->free_link);
    n->kq = calloc(c->max_kms, sizeof *n->kq);
    n->kq_cap = c->max_kms;
    n->dom = calloc(c->max_domains, sizeof *n->dom);
    if (!n->half || !n->bucket || !n->dev || !n->hash || !n->free_dev || !n->link ||
        !n->free_link || !n->kq || !n->dom) {
        pk_node_free(n);
        return PK_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < hsize; i++)
        n->hash[i] = NO_SLOT;
    for (size_t i = 0; i < c->max_devices; i++) {
        n->dev[i].hnext = NO_SLOT;
        n->free_dev[i] = (uint32_t)(c->max_devices - 1 - i); /* slot 0 popped first */
    }
    n->nfree_dev = c->max_devices;
    for (size_t i = 0; i < c->max_links; i++)
        n->free_link[i] = (uint32_t)(c->max_links - 1 - i);
    n->nfree_link = c->max_links;
    n->last_drop = PK_NODE_DROP_NONE;
    pk_reg_node_cfg_t rc = {
        .node_id = c->node_id,
        .half = n->half,
        .nhalf = c->max_half,
        .bucket = n->bucket,
        .nbucket = c->max_buckets,
        .burst = c->burst,
        .per_sec = c->per_sec,
        .half_ttl_ms = c->half_ttl_ms,
        .kdf = &n->kdf,
    };
    int r = pk_rng_fill(c->rng, &rc.hash_seed, sizeof rc.hash_seed);
    if (r == PK_OK)
        r = pk_reg_node_init(&n->reg, &rc);
    if (r != PK_OK) {
        pk_node_free(n);
        return r;
    }
    *out = n;
    return PK_OK;
}

void pk_node_free(pk_node_t *n)
{
    if (!n)
        return;
    if (n->half)
        pk_reg_node_clear(&n->reg);
    if (n->dev)
        for (size_t i = 0; i < n->cfg.max_devices; i++)
            if (n->dev[i].used)
                dev_clear(&n->dev[i]);
    if (n->kq)
        pk_wipe(n->kq, n->kq_cap * sizeof *n->kq);
    if (n->dom)
        pk_wipe(n->dom, n->cfg.max_domains * sizeof *n->dom);
    free(n->dom);
    free(n->half);
    free(n->bucket);
    free(n->dev);
    free(n->hash);
    free(n->free_dev);
    free(n->link);
    free(n->free_link);
    free(n->kq);
    pk_kdf_clear(&n->kdf);
    pk_wipe(n, sizeof *n);
    free(n);
}

int pk_node_peer_add(pk_node_t *n, const pk_reg_id_t *id)
{
    if (!pk_reg_id_valid(id->b, id->len) || pk_reg_id_eq(id, &n->cfg.node_id))
        return PK_ERR_INVAL;
    if (pk_node_peer_find(n, id->b, id->len) >= 0)
        return PK_ERR_EXISTS;
    if (n->npeer >= PK_NODE_MAX_PEERS)
        return PK_ERR_LIMIT;
    n->peer[n->npeer] = *id;
    return (int)n->npeer++;
}

const pk_reg_id_t *pk_node_peer_id(const pk_node_t *n, unsigned i)
{
    return i < n->npeer ? &n->peer[i] : NULL;
}

int pk_node_peer_find(const pk_node_t *n, const uint8_t *id, size_t len)
{
    for (unsigned i = 0; i < n->npeer; i++)
        if (n->peer[i].len == len && memcmp(n->peer[i].b, id, len) == 0)
            return (int)i;
    return -1;
}

/* ---- registration glue ---- */

/* Adds the registration core's new drops to ours; returns the reason that
 * grew (other than EVICTED, which is not about this input) or NONE. */
static unsigned sync_reg_drops(pk_node_t *n)
{
    unsigned why = PK_NODE_DROP_NONE;
    for (unsigned r = 0; r < PK_REG_DROP_N; r++) {
        uint64_t delta = n->reg.drops[r] - n->reg_seen[r];
        if (delta && r != PK_REG_DROP_EVICTED)
            why = r;
        n->drops[r] += delta;
        n->reg_seen[r] = n->reg.drops[r];
    }
    return why;
}

/* Removes action i of out (the core's kms event, always the last one). */
static void out_remove(pk_out_t *out, unsigned i)
{
    if (i == out->n - 1) {
        out->used -= out->act[i].len;
        out->n--;
    } else {
        out->act[i].kind = 0; /* not reached with the current registration core */
    }
}

/* Turns the registration core's actions [n0, out->n) into node actions. */
static int translate_reg(pk_node_t *n, unsigned n0, uint64_t now_ms, pk_out_t *out)
{
    for (unsigned i = n0; i < out->n; i++) {
        pk_act_t *a = &out->act[i];
        if (a->kind == PK_ACT_SEND) {
            a->code = (uint16_t)(PK_NODE_DST_DEVICE | (a->code & 0xFF));
            continue;
        }
        if (a->kind != PK_ACT_EVENT ||
            (a->code != PK_REG_EV_NEED_VECTOR && a->code != PK_REG_EV_NEED_KEYS))
            continue;
        /* our own KMS_VEC_REQ (type node dev nonce_d) or KMS_KEYS_REQ (type
         * dev cursor, the cursor empty): read in place (no secrets; a full pk_reg_net_t is 3 KiB to
         * clear and wipe twice per registration) */
        kq_ent_t e;
        pk_reg_id_t node_id;
        pk_rd_t r;
        memset(&e, 0, sizeof e);
        e.kind = a->code == PK_REG_EV_NEED_VECTOR ? KQ_VEC : KQ_KEYS;
        pk_rd_init(&r, a->data, a->len);
        if (pk_rd_u8(&r) != (e.kind == KQ_VEC ? PK_REG_T_KMS_VEC_REQ : PK_REG_T_KMS_KEYS_REQ))
            return PK_ERR_MALFORMED; /* our own frame: cannot happen */
        if (e.kind == KQ_VEC)
            pk_reg_rd_id(&r, &node_id);
        pk_reg_rd_id(&r, &e.dev);
        if (e.kind == KQ_VEC)
            pk_rd_copy(&r, e.nonce_d, PK_REG_NONCE_LEN);
        else
            pk_reg_rd_cursor(&r, &e.after);
        if (pk_rd_done(&r) != PK_OK)
            return PK_ERR_MALFORMED;
        e.t_ms = now_ms;
        e.src = a->dest;
        if (n->kms_up && n->kq_nsent == n->kq_count) {
            /* send the core's own frame: rewrite the event in place */
            a->kind = PK_ACT_SEND;
            a->code = (uint16_t)(PK_NODE_DST_KMS | a->data[0]);
            a->dest = 0;
            e.sent_ms = now_ms;
            n->kq_nsent++;
            n->st.kms_sent++;
        } else {
            out_remove(out, i--);
        }
        *kq_at(n, n->kq_count) = e;
        n->kq_count++;
    }
    return PK_OK;
}

static int on_reg_input(pk_node_t *n, uint64_t src, const uint8_t *msg, size_t len, uint64_t now_ms,
                        pk_out_t *out)
{
    if (kq_full(n)) {
        drop(n, PK_NODE_DROP_KMS_FULL);
        return PK_ERR_LIMIT;
    }
    unsigned n0 = out->n;
    int rc = pk_reg_node_input(&n->reg, src, msg, len, now_ms, out);
    unsigned why = sync_reg_drops(n);
    if (rc != PK_OK) {
        n->last_drop = why != PK_NODE_DROP_NONE ? why : PK_NODE_DROP_SPACE;
        if (rc == PK_ERR_SPACE)
            n->drops[PK_NODE_DROP_SPACE]++;
        return rc;
    }
    if (why != PK_NODE_DROP_NONE)
        n->last_drop = why; /* a counted duplicate: PK_OK but nothing sent */
    return translate_reg(n, n0, now_ms, out);
}

/* A fresh temporary id: 16 hex digits, then "@node" when it fits. */
static int make_temp_id(pk_node_t *n, pk_reg_id_t *t)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t r[8];
    int rc = pk_rng_fill(n->cfg.rng, r, sizeof r);
    if (rc != PK_OK)
        return rc;
    memset(t, 0, sizeof *t);
    for (unsigned i = 0; i < 8; i++) {
        t->b[2 * i] = (uint8_t)hex[r[i] >> 4];
        t->b[2 * i + 1] = (uint8_t)hex[r[i] & 15];
    }
    t->len = 16;
    if (17u + n->cfg.node_id.len <= PK_REG_ID_MAX) {
        t->b[16] = '@';
        memcpy(t->b + 17, n->cfg.node_id.b, n->cfg.node_id.len);
        t->len = (uint8_t)(17 + n->cfg.node_id.len);
    }
    return PK_OK;
}

/* The kms's keys for an authenticated device: seal the accept, (re)place the
 * device's context. */
static int on_keys(pk_node_t *n, const kq_ent_t *e, const pk_reg_keyset_t *keys, uint64_t now_ms,
                   pk_out_t *out)
{
    dev_ctx_t *d = dev_find(n, &e->dev);
    uint32_t slot;
    int from_free = 0;
    if (d) {
        slot = (uint32_t)(d - n->dev);
    } else if (n->nfree_dev > 0) {
        slot = n->free_dev[n->nfree_dev - 1];
        from_free = 1;
    } else {
        slot = (uint32_t)(n->hand % n->cfg.max_devices);
    }
    pk_reg_id_t temp;
    pk_record_t chan;
    memset(&chan, 0, sizeof chan);
    int rc = make_temp_id(n, &temp);
    if (rc != PK_OK)
        return rc;
    unsigned n0 = out->n;
    rc = pk_reg_node_accept(&n->reg, e->src, &e->dev, (uint16_t)(slot + 1), &temp, keys, &chan,
                            now_ms, out);
    unsigned why = sync_reg_drops(n);
    if (rc != PK_OK) { /* NOTFOUND: the run is gone (counted no_entry by the core) */
        if (why != PK_NODE_DROP_NONE)
            n->last_drop = why;
        else
            drop(n, PK_NODE_DROP_KMS_REFUSED); /* keys the core would not seal */
        return PK_OK;
    }
    translate_reg(n, n0, now_ms, out);
    /* commit */
    if (d) {
        pk_record_clear(&d->chan);
        n->st.reregistered++;
    } else {
        d = &n->dev[slot];
        if (from_free) {
            n->nfree_dev--;
        } else { /* the table is full: the context under the hand goes */
            dev_unlink(n, slot);
            dom_detach(n, d);
            dev_clear(d);
            n->hand++;
            n->ndev--;
            n->st.evicted_contexts++;
        }
        d->used = 1;
        d->id = e->dev;
        d->nlinks = 0;
        uint32_t *head = &n->hash[id_hash(&e->dev) & n->hmask];
        d->hnext = *head;
        *head = slot;
        n->ndev++;
    }
    d->chan = chan; /* moved: chan is not cleared here */
    d->mode = keys->mode;
    d->keys_pending = 0;
    d->temp = temp;
    d->src = e->src;
    d->reg_ms = now_ms;
    if (keys->mk.n > 0) {
        dom_attach(n, d, &keys->mk);
        if (n->mk_next_check == 0)
            n->mk_next_check = now_ms + n->cfg.mk_check_ms; /* the periodic check's first round */
    } else {
        dom_detach(n, d);
        d->mk_newest = 0;
    }
    n->st.registered++;
    uint8_t *p = pk_out_push(out, PK_ACT_EVENT, PK_NODE_EV_REGISTERED, slot + 1, e->dev.len);
    if (p)
        memcpy(p, e->dev.b, e->dev.len);
    return PK_OK;
}

/* ---- option 2: link authorization ---- */

static void link_free(pk_node_t *n, uint32_t li)
{
    link_ent_t *l = &n->link[li];
    dev_ctx_t *d = &n->dev[l->dev];
    if (d->used && d->gen == l->dev_gen && d->nlinks > 0)
        d->nlinks--;
    uint32_t gen = l->gen;
    memset(l, 0, sizeof *l);
    l->gen = gen + 1;
    n->free_link[n->nfree_link++] = li;
}

/* The initiator's context of link l, or NULL when it is gone. */
static dev_ctx_t *link_dev(pk_node_t *n, const link_ent_t *l)
{
    dev_ctx_t *d = &n->dev[l->dev];
    return d->used && d->gen == l->dev_gen ? d : NULL;
}

/* Seals a LINK_IND / LINK_REJ on d's channel and sends it to d. */
static int send_sealed(pk_node_t *n, dev_ctx_t *d, uint8_t type, const pk_reg_link_pt_t *m,
                       pk_out_t *out)
{
    (void)n;
    uint8_t *p = pk_out_push(out, PK_ACT_SEND, (uint16_t)(PK_NODE_DST_DEVICE | type), d->src,
                             PK_REG_SEALED_MAX);
    size_t len = 0;
    if (!p)
        return PK_ERR_SPACE;
    int rc = pk_reg_chan_seal_link(&d->chan, type, m, p, PK_REG_SEALED_MAX, &len);
    if (rc != PK_OK) {
        out->n--;
        out->used -= PK_REG_SEALED_MAX;
        return rc;
    }
    pk_out_trim(out, len);
    return PK_OK;
}

static void push_link_event(pk_out_t *out, uint16_t code, uint64_t dest, const pk_reg_id_t *a,
                            const pk_reg_id_t *b)
{
    uint8_t *p = pk_out_push(out, PK_ACT_EVENT, code, dest, 2u + a->len + b->len);
    if (!p)
        return;
    p[0] = a->len;
    memcpy(p + 1, a->b, a->len);
    p[1 + a->len] = b->len;
    memcpy(p + 2 + a->len, b->b, b->len);
}

/* Refuses link li to its initiator (if still there) and frees it. */
static void link_reject(pk_node_t *n, uint32_t li, uint8_t reason, pk_out_t *out)
{
    link_ent_t *l = &n->link[li];
    dev_ctx_t *d = link_dev(n, l);
    if (d) {
        pk_reg_link_pt_t m;
        memset(&m, 0, sizeof m);
        m.peer = l->peer;
        m.reason = reason;
        (void)send_sealed(n, d, PK_REG_T_LINK_REJ, &m, out);
        push_link_event(out, PK_NODE_EV_LINK_REJ, reason, &d->id, &l->peer);
    }
    n->st.links_rejected++;
    link_free(n, li);
}

static uint8_t rej_of_status(uint8_t st)
{
    switch (st) {
    case PK_REG_ST_DENIED: return PK_REG_REJ_DENIED;
    case PK_REG_ST_UNKNOWN: return PK_REG_REJ_UNKNOWN;
    default: return PK_REG_REJ_BUSY; /* busy, exhausted, malformed, error */
    }
}

/* The kms allocated (ksi, param) for link li: indicate it to both ends. */
static void link_indicate(pk_node_t *n, uint32_t li, uint32_t ksi,
                          const uint8_t param[PK_REG_PARAM_LEN], pk_out_t *out)
{
    link_ent_t *l = &n->link[li];
    dev_ctx_t *d = link_dev(n, l);
    pk_reg_link_pt_t m;
    memset(&m, 0, sizeof m);
    if (!d) { /* the initiator is gone: nobody to indicate to */
        link_free(n, li);
        return;
    }
    if (l->node == LOCAL_NODE) {
        dev_ctx_t *t = dev_find(n, &l->peer);
        if (!t || t->mode != PK_REG_MODE_POOL) {
            link_reject(n, li, PK_REG_REJ_UNKNOWN, out);
            return;
        }
        m.peer = d->id;
        m.role = PK_REG_ROLE_RESPONDER;
        m.ksi = ksi;
        memcpy(m.param, param, PK_REG_PARAM_LEN);
        if (send_sealed(n, t, PK_REG_T_LINK_IND, &m, out) != PK_OK) {
            pk_wipe(&m, sizeof m);
            link_reject(n, li, PK_REG_REJ_BUSY, out);
            return;
        }
    } else {
        pk_reg_net_t f;
        size_t len = 0;
        memset(&f, 0, sizeof f);
        f.type = PK_REG_T_NODE_LINK_IND;
        f.a = d->id;
        f.b = l->peer;
        f.ksi = ksi;
        memcpy(f.param, param, PK_REG_PARAM_LEN);
        uint8_t *p = pk_out_push(out, PK_ACT_SEND, PK_NODE_DST_NODE | PK_REG_T_NODE_LINK_IND,
                                 (uint64_t)l->node, KQ_FRAME_MAX + 4);
        int rc = p ? pk_reg_net_encode(&f, p, KQ_FRAME_MAX + 4, &len) : PK_ERR_SPACE;
        pk_wipe(&f, sizeof f);
        if (rc != PK_OK) {
            if (p) {
                out->n--;
                out->used -= KQ_FRAME_MAX + 4;
            }
            link_reject(n, li, PK_REG_REJ_BUSY, out);
            return;
        }
        pk_out_trim(out, len);
    }
    m.peer = l->peer;
    m.role = PK_REG_ROLE_INITIATOR;
    m.ksi = ksi;
    memcpy(m.param, param, PK_REG_PARAM_LEN);
    (void)send_sealed(n, d, PK_REG_T_LINK_IND, &m, out);
    pk_wipe(&m, sizeof m);
    push_link_event(out, PK_NODE_EV_LINK, ksi, &d->id, &l->peer);
    n->st.links_indicated++;
    link_free(n, li);
}

/* The link's next kms call; refuses the link with BUSY when the queue is full. */
static void link_ask(pk_node_t *n, uint32_t li, uint8_t kind, uint64_t now_ms, pk_out_t *out)
{
    kq_ent_t e;
    memset(&e, 0, sizeof e);
    e.kind = kind;
    e.t_ms = now_ms;
    e.link = li;
    e.link_gen = n->link[li].gen;
    n->link[li].state = kind == KQ_DIR ? L_WAIT_DIR : L_WAIT_ALLOC;
    if (kq_full(n) || kq_push(n, &e, now_ms, out) != PK_OK)
        link_reject(n, li, PK_REG_REJ_BUSY, out);
}

static int on_link_req(pk_node_t *n, uint64_t src, const uint8_t *msg, size_t len, uint64_t now_ms,
                       pk_out_t *out)
{
    pk_record_hdr_t h;
    pk_reg_link_pt_t m;
    uint8_t type = 0;
    if (pk_record_peek(msg, len, &h) != PK_OK) {
        drop(n, PK_REG_DROP_MALFORMED);
        return PK_ERR_MALFORMED;
    }
    if (h.session_id == 0 || h.session_id > n->cfg.max_devices || !n->dev[h.session_id - 1].used) {
        drop(n, PK_NODE_DROP_NO_CONTEXT);
        return PK_ERR_NOTFOUND;
    }
    uint32_t slot = h.session_id - 1u;
    dev_ctx_t *d = &n->dev[slot];
    int rc = pk_reg_chan_open_link(&d->chan, msg, len, &type, &m);
    if (rc != PK_OK) {
        return drop_record(n, rc);
    }
    if (type != PK_REG_T_LINK_REQ) {
        drop(n, PK_NODE_DROP_TYPE);
        return PK_ERR_STATE;
    }
    d->src = src; /* authentic: the device may have a new address */
    for (size_t i = 0; i < n->cfg.max_links; i++) {
        const link_ent_t *l = &n->link[i];
        if (l->state != L_FREE && l->dev == slot && l->dev_gen == d->gen &&
            pk_reg_id_eq(&l->peer, &m.peer)) {
            drop(n, PK_NODE_DROP_LINK_DUP); /* the answer is on its way */
            return PK_ERR_STATE;
        }
    }
    n->st.links_asked++;
    uint8_t reason = 0;
    if (d->mode != PK_REG_MODE_POOL || pk_reg_id_eq(&m.peer, &d->id))
        reason = PK_REG_REJ_DENIED;
    else if (d->nlinks >= n->cfg.max_links_per_dev || n->nfree_link == 0 || kq_full(n))
        reason = PK_REG_REJ_BUSY;
    if (reason) {
        pk_reg_link_pt_t r;
        memset(&r, 0, sizeof r);
        r.peer = m.peer;
        r.reason = reason;
        n->st.links_rejected++;
        rc = send_sealed(n, d, PK_REG_T_LINK_REJ, &r, out);
        push_link_event(out, PK_NODE_EV_LINK_REJ, reason, &d->id, &m.peer);
        return rc;
    }
    uint32_t li = n->free_link[--n->nfree_link];
    link_ent_t *l = &n->link[li];
    l->dev = slot;
    l->dev_gen = d->gen;
    l->peer = m.peer;
    d->nlinks++;
    l->node = LOCAL_NODE; /* until the directory names another node */
    link_ask(n, li, dev_find(n, &m.peer) ? KQ_ALLOC : KQ_DIR, now_ms, out);
    return PK_OK;
}

/*
 * Queues kms request e (kind and its fields set by the caller) for device d
 * in slot, one at a time per kind: while *pending is set the request is
 * dropped as busy (its answer is on its way); a full queue drops it too.
 * On PK_OK *pending is set until the answer (or its loss) clears it.
 */
static int kq_ask(pk_node_t *n, dev_ctx_t *d, uint32_t slot, kq_ent_t *e, uint8_t *pending,
                  unsigned busy, uint64_t src, uint64_t now_ms, pk_out_t *out)
{
    if (*pending) {
        drop(n, busy);
        return PK_ERR_STATE;
    }
    if (kq_full(n)) {
        drop(n, PK_NODE_DROP_KMS_FULL);
        return PK_ERR_LIMIT;
    }
    e->t_ms = now_ms;
    e->src = src;
    e->slot = slot;
    e->slot_gen = d->gen;
    e->dev = d->id;
    int rc = kq_push(n, e, now_ms, out);
    if (rc != PK_OK) {
        drop(n, PK_NODE_DROP_SPACE);
        return rc;
    }
    *pending = 1;
    return PK_OK;
}

/* ---- master keys: refresh and push ---- */

/* Seals MK_UPDATE(mk) on d's channel and sends it to handle dest. */
static int send_mk_update(dev_ctx_t *d, uint64_t dest, const pk_reg_mkset_t *mk, pk_out_t *out)
{
    uint8_t *p = pk_out_push(out, PK_ACT_SEND, PK_NODE_DST_DEVICE | PK_REG_T_MK_UPDATE, dest,
                             PK_REG_MK_UPDATE_MAX);
    size_t len = 0;
    if (!p)
        return PK_ERR_SPACE;
    int rc =
        pk_reg_chan_seal_mk(&d->chan, PK_REG_T_MK_UPDATE, 0, mk, p, PK_REG_MK_UPDATE_MAX, &len);
    if (rc != PK_OK) {
        out->n--;
        out->used -= PK_REG_MK_UPDATE_MAX;
        return rc;
    }
    pk_out_trim(out, len);
    if (mk->n > 0)
        d->mk_newest = pk_reg_mkset_newest(mk);
    return PK_OK;
}

static int on_mk_refresh(pk_node_t *n, uint64_t src, const uint8_t *msg, size_t len,
                         uint64_t now_ms, pk_out_t *out)
{
    pk_record_hdr_t h;
    pk_reg_mkset_t mk;
    uint32_t held = 0;
    uint8_t type = 0;
    if (pk_record_peek(msg, len, &h) != PK_OK) {
        drop(n, PK_REG_DROP_MALFORMED);
        return PK_ERR_MALFORMED;
    }
    if (h.session_id == 0 || h.session_id > n->cfg.max_devices || !n->dev[h.session_id - 1].used) {
        drop(n, PK_NODE_DROP_NO_CONTEXT);
        return PK_ERR_NOTFOUND;
    }
    uint32_t slot = h.session_id - 1u;
    dev_ctx_t *d = &n->dev[slot];
    int rc = pk_reg_chan_open_mk(&d->chan, msg, len, &type, &held, &mk);
    pk_wipe(&mk, sizeof mk);
    if (rc != PK_OK) {
        return drop_record(n, rc);
    }
    if (type != PK_REG_T_MK_REFRESH) {
        drop(n, PK_NODE_DROP_TYPE);
        return PK_ERR_STATE;
    }
    /* the answer goes to where the refresh came from; d->src (the registered
     * address, where pushes go) stays: a client may ask from another port */
    kq_ent_t e;
    memset(&e, 0, sizeof e);
    e.kind = KQ_MK;
    e.reply = 1;
    if ((rc = kq_ask(n, d, slot, &e, &d->mk_pending, PK_NODE_DROP_MK_BUSY, src, now_ms, out)) ==
        PK_OK)
        n->st.mk_refreshes++;
    return rc;
}

/* The device context kms request e was made for, or NULL when it is gone
 * (the slot freed or given to another device since: its generation moved). */
static dev_ctx_t *kq_dev(pk_node_t *n, const kq_ent_t *e)
{
    if (e->slot < n->cfg.max_devices && n->dev[e->slot].used && n->dev[e->slot].gen == e->slot_gen)
        return &n->dev[e->slot];
    return NULL;
}

/* The kms's KMS_MK_RESP (mk) or refusal (ok = 0) to request e. */
static void on_mk_resp(pk_node_t *n, const kq_ent_t *e, int ok, const pk_reg_mkset_t *mk,
                       pk_out_t *out)
{
    dev_ctx_t *d = kq_dev(n, e);
    if (d && e->reply)
        d->mk_pending = 0;
    if (!ok) {
        n->st.mk_refused++;
        return; /* no update: the device times out and registers again (S14) */
    }
    if (mk->n > 0) {
        if (d && e->reply) {
            dom_attach(n, d, mk); /* also learns the block for the domain */
        } else {
            dom_ent_t *de = dom_find(n, mk->domain_id);
            if (de)
                dom_learn(de, mk);
        }
    }
    if (!d || !e->reply)
        return;
    if (mk->n == 0)
        dom_detach(n, d); /* the kms has none for it: no pushes either */
    if (send_mk_update(d, e->src, mk, out) == PK_OK)
        n->st.mk_updates++;
    else
        drop(n, PK_NODE_DROP_SPACE);
}

/* Pushes the newer block of domains being pushed: at most mk_push_per_tick
 * MK_UPDATEs and MK_SCAN_MAX slots per domain per call. */
static void mk_push(pk_node_t *n, pk_out_t *out)
{
    unsigned budget = n->cfg.mk_push_per_tick;
    for (size_t i = 0; i < n->cfg.max_domains && budget > 0; i++) {
        dom_ent_t *e = &n->dom[i];
        if (!e->used || !e->pushing)
            continue;
        uint32_t newest = pk_reg_mkset_newest(&e->mk);
        for (size_t k = 0; k < MK_SCAN_MAX && e->cursor < n->cfg.max_devices; k++) {
            dev_ctx_t *d = &n->dev[e->cursor];
            if (d->used && d->dom == i + 1 && d->mk_newest < newest) {
                if (budget == 0 || !out_room(out, 1, PK_REG_MK_UPDATE_MAX))
                    return;
                if (send_mk_update(d, d->src, &e->mk, out) != PK_OK)
                    return;
                n->st.mk_pushes++;
                budget--;
            }
            if (d->used && d->dom == i + 1)
                e->rep = d->id; /* a device that is still here */
            e->cursor++;
        }
        if (e->cursor >= n->cfg.max_devices)
            e->pushing = 0;
    }
}

/* Starts or continues the periodic check: one KMS_MK_REQ per domain with
 * registered devices. A full kms queue ends the round early. */
static void mk_check(pk_node_t *n, uint64_t now_ms, pk_out_t *out)
{
    if (n->cfg.mk_check_ms == UINT64_MAX)
        return;
    if (!n->mk_checking) {
        if (n->mk_next_check == 0)
            n->mk_next_check = now_ms + n->cfg.mk_check_ms;
        if (now_ms < n->mk_next_check)
            return;
        n->mk_checking = 1;
        n->mk_check_idx = 0;
        n->mk_next_check = now_ms + n->cfg.mk_check_ms;
    }
    while (n->mk_check_idx < n->cfg.max_domains) {
        const dom_ent_t *de = &n->dom[n->mk_check_idx];
        if (de->used && de->ndev > 0) {
            if (kq_full(n)) {
                n->mk_check_idx = n->cfg.max_domains;
                break;
            }
            if (!out_room(out, 1, KQ_FRAME_MAX))
                return; /* more next call */
            kq_ent_t e;
            memset(&e, 0, sizeof e);
            e.kind = KQ_MK;
            e.t_ms = now_ms;
            e.slot = UINT32_MAX;
            e.dev = de->rep;
            if (kq_push(n, &e, now_ms, out) != PK_OK)
                return;
            n->st.mk_checks++;
        }
        n->mk_check_idx++;
    }
    n->mk_checking = 0;
}

/* ---- paged key sets: KEYS_REQ -> KMS_KEYS_REQ(cursor) -> KEYS ---- */

/* A registered device asks for the page of its key set after its cursor:
 * one page request per device is with the kms at a time (more are dropped:
 * the device asks again when its answer does not come). */
static int on_keys_req(pk_node_t *n, uint64_t src, const uint8_t *msg, size_t len, uint64_t now_ms,
                       pk_out_t *out)
{
    pk_record_hdr_t h;
    pk_reg_id_t after;
    if (pk_record_peek(msg, len, &h) != PK_OK) {
        drop(n, PK_REG_DROP_MALFORMED);
        return PK_ERR_MALFORMED;
    }
    if (h.session_id == 0 || h.session_id > n->cfg.max_devices || !n->dev[h.session_id - 1].used) {
        drop(n, PK_NODE_DROP_NO_CONTEXT);
        return PK_ERR_NOTFOUND;
    }
    uint32_t slot = h.session_id - 1u;
    dev_ctx_t *d = &n->dev[slot];
    int rc = pk_reg_chan_open_keys_req(&d->chan, msg, len, &after);
    if (rc != PK_OK) {
        return drop_record(n, rc);
    }
    if (d->mode != PK_REG_MODE_PAIRS) { /* a pool's set is never paged */
        drop(n, PK_NODE_DROP_TYPE);
        return PK_ERR_STATE;
    }
    d->src = src; /* authentic: the device may have a new address */
    kq_ent_t e;
    memset(&e, 0, sizeof e);
    e.kind = KQ_PAGE;
    e.after = after;
    if ((rc = kq_ask(n, d, slot, &e, &d->keys_pending, PK_REG_DROP_DUP, src, now_ms, out)) == PK_OK)
        n->st.key_pages_asked++;
    return rc;
}

/* The kms's page (ok) or refusal for request e: sealed as a KEYS record to
 * the device (a refusal sends nothing: the device asks again, then fails). */
static void on_page(pk_node_t *n, const kq_ent_t *e, int ok, const pk_reg_keyset_t *page,
                    pk_out_t *out)
{
    dev_ctx_t *d = kq_dev(n, e);
    if (!d) {
        drop(n, PK_NODE_DROP_KMS_LATE);
        return;
    }
    d->keys_pending = 0;
    if (!ok)
        return;
    uint8_t *p =
        pk_out_push(out, PK_ACT_SEND, PK_NODE_DST_DEVICE | PK_REG_T_KEYS, d->src, PK_REG_KEYS_MAX);
    size_t len = 0;
    int rc = p ? pk_reg_chan_seal_keys(&d->chan, &e->after, page, p, PK_REG_KEYS_MAX, &len)
               : PK_ERR_SPACE;
    if (rc != PK_OK) {
        if (p) {
            out->n--;
            out->used -= PK_REG_KEYS_MAX;
        }
        drop(n, rc == PK_ERR_SPACE ? PK_NODE_DROP_SPACE : PK_NODE_DROP_KMS_REFUSED);
        return;
    }
    pk_out_trim(out, len);
    n->st.key_pages_sent++;
}

int pk_node_device_input(pk_node_t *n, uint64_t src, const uint8_t *msg, size_t len,
                         uint64_t now_ms, pk_out_t *out)
{
    n->last_drop = PK_NODE_DROP_NONE;
    if (!out_room(out, 4, PK_NODE_OUT_MIN)) {
        drop(n, PK_NODE_DROP_SPACE);
        return PK_ERR_SPACE;
    }
    if (!msg || len < 1) {
        drop(n, PK_REG_DROP_MALFORMED);
        return PK_ERR_MALFORMED;
    }
    switch (msg[0]) {
    case PK_REG_T_REQUEST:
    case PK_REG_T_RESPONSE: return on_reg_input(n, src, msg, len, now_ms, out);
    case PK_REG_T_LINK_REQ: return on_link_req(n, src, msg, len, now_ms, out);
    case PK_REG_T_MK_REFRESH: return on_mk_refresh(n, src, msg, len, now_ms, out);
    case PK_REG_T_KEYS_REQ: return on_keys_req(n, src, msg, len, now_ms, out);
    default: drop(n, PK_REG_DROP_MALFORMED); return PK_ERR_MALFORMED;
    }
}

/* ---- kms answers ---- */

/* Fails a request that will get no answer. */
static void kq_fail(pk_node_t *n, const kq_ent_t *e, uint8_t status, pk_out_t *out)
{
    if (e->kind == KQ_MK) {
        on_mk_resp(n, e, 0, NULL, out);
        return;
    }
    if (e->kind == KQ_PAGE) {
        on_page(n, e, 0, NULL, out);
        return;
    }
    if (e->kind == KQ_DIR || e->kind == KQ_ALLOC) {
        const link_ent_t *l = &n->link[e->link];
        if (l->state != L_FREE && l->gen == e->link_gen)
            link_reject(n, e->link, rej_of_status(status), out);
        else
            drop(n, PK_NODE_DROP_KMS_LATE);
    }
}

int pk_node_kms_input(pk_node_t *n, const uint8_t *frame, size_t len, uint64_t now_ms,
                      pk_out_t *out)
{
    n->last_drop = PK_NODE_DROP_NONE;
    if (!out_room(out, 4, PK_NODE_OUT_MIN))
        return PK_ERR_SPACE;
    if (n->kq_nsent == 0)
        return PK_ERR_STATE;
    const kq_ent_t *h = kq_at(n, 0);
    int rc = PK_OK, ok = 0;
    uint8_t status = PK_KMS_ST_ERROR;
    pk_reg_net_t q;
    pk_reg_id_t dir_node;
    memset(&q, 0, sizeof q);
    memset(&dir_node, 0, sizeof dir_node);
    if (!frame || len < 1)
        return PK_ERR_MALFORMED;
    if (frame[0] == PK_KMS_T_ERR) {
        if (len != PK_KMS_ERR_LEN || frame[2] != kq_req_type(h->kind) || frame[1] == 0)
            return PK_ERR_MALFORMED;
        status = frame[1];
    } else if (frame[0] != kq_resp_type(h->kind)) {
        return PK_ERR_MALFORMED;
    } else if (h->kind == KQ_MK) { /* type status(1)=0 n(1)=0 | block */
        pk_rd_t r;
        pk_rd_init(&r, frame, len);
        (void)pk_rd_u8(&r);
        status = pk_rd_u8(&r);
        if (r.left == 1 && r.p[0] == 0)
            (void)pk_rd_u8(&r);
        else
            pk_reg_mkset_read_opt(&r, &q.keys.mk);
        if (pk_rd_done(&r) != PK_OK || r.left != 0) {
            pk_wipe(&q, sizeof q);
            return PK_ERR_MALFORMED;
        }
        ok = status == PK_REG_ST_OK;
    } else if (h->kind == KQ_DIR) {
        pk_rd_t r;
        pk_rd_init(&r, frame, len);
        (void)pk_rd_u8(&r);
        status = pk_rd_u8(&r);
        pk_reg_rd_id(&r, &dir_node);
        if (pk_rd_done(&r) != PK_OK)
            return PK_ERR_MALFORMED;
        ok = status == PK_REG_ST_OK;
    } else {
        if (pk_reg_net_decode(frame, len, &q) != PK_OK)
            return PK_ERR_MALFORMED;
        status = q.status;
        ok = status == PK_REG_ST_OK;
    }
    kq_ent_t e;
    kq_pop(n, &e);
    n->st.kms_answered++;
    n->stalled = 0;
    if (e.kind == KQ_MK) {
        on_mk_resp(n, &e, ok, &q.keys.mk, out);
        goto done;
    }
    if (e.kind == KQ_PAGE) {
        on_page(n, &e, ok, &q.keys, out);
        goto done;
    }
    if (!ok) {
        if (e.kind == KQ_VEC || e.kind == KQ_KEYS)
            drop(n, PK_NODE_DROP_KMS_REFUSED); /* unknown device: it gets no answer */
        kq_fail(n, &e, status, out);
        goto done;
    }
    switch (e.kind) {
    case KQ_VEC: {
        unsigned n0 = out->n;
        rc = pk_reg_node_vector(&n->reg, e.src, &e.dev, e.nonce_d, &q.vec, now_ms, out);
        unsigned why = sync_reg_drops(n); /* a late vector counts as no_entry */
        if (rc == PK_OK)
            translate_reg(n, n0, now_ms, out);
        else
            n->last_drop = why;
        rc = PK_OK;
        break;
    }
    case KQ_KEYS:
        /* a set that fits one page goes out as before paging (older devices
         * read it); only a set with more pages needs the paged accept */
        if (q.keys.paged && !q.keys.more)
            q.keys.paged = 0;
        rc = on_keys(n, &e, &q.keys, now_ms, out);
        break;
    case KQ_DIR: {
        link_ent_t *l = &n->link[e.link];
        if (l->state != L_WAIT_DIR || l->gen != e.link_gen) {
            drop(n, PK_NODE_DROP_KMS_LATE);
            break;
        }
        int pi = pk_node_peer_find(n, dir_node.b, dir_node.len);
        if (pi < 0) { /* this node (context gone) or a node we have no route to */
            link_reject(n, e.link, PK_REG_REJ_UNKNOWN, out);
            break;
        }
        l->node = (int16_t)pi;
        link_ask(n, e.link, KQ_ALLOC, now_ms, out);
        break;
    }
    case KQ_ALLOC: {
        link_ent_t *l = &n->link[e.link];
        if (l->state != L_WAIT_ALLOC || l->gen != e.link_gen) {
            drop(n, PK_NODE_DROP_KMS_LATE);
            break;
        }
        link_indicate(n, e.link, q.ksi, q.param, out);
        break;
    }
    default: break;
    }
done:
    pk_wipe(&e, sizeof e);
    pk_wipe(&q, sizeof q);
    return rc;
}

/* Fails queued requests older than the timeout from the head (kms down). */
static void kq_expire(pk_node_t *n, uint64_t now_ms, pk_out_t *out)
{
    while (n->kq_count > n->kq_nsent && n->kq_nsent == 0 &&
           now_ms - kq_at(n, 0)->t_ms >= n->cfg.kms_timeout_ms &&
           out_room(out, 2, PK_REG_SEALED_MAX + 2 + 2 * PK_REG_ID_MAX)) {
        kq_ent_t e;
        kq_pop(n, &e);
        drop(n, PK_NODE_DROP_KMS_EXPIRED);
        kq_fail(n, &e, PK_KMS_ST_BUSY, out);
        pk_wipe(&e, sizeof e);
    }
}

size_t pk_node_kms_up(pk_node_t *n, uint64_t now_ms, pk_out_t *out)
{
    if (!n->kms_up) {
        n->kms_up = 1;
        n->stalled = 0;
        n->kq_nsent = 0;
    }
    kq_expire(n, now_ms, out);
    if (n->kq_nsent == 0 && n->kq_count > 0 && now_ms - kq_at(n, 0)->t_ms >= n->cfg.kms_timeout_ms)
        return n->kq_count; /* out is full of refusals: call again */
    while (n->kq_nsent < n->kq_count && kq_send_next(n, now_ms, out) == PK_OK)
        n->st.kms_resent++;
    return n->kq_count - n->kq_nsent;
}

void pk_node_kms_down(pk_node_t *n)
{
    n->kms_up = 0;
    n->stalled = 0;
    n->kq_nsent = 0;
}

int pk_node_kms_is_up(const pk_node_t *n)
{
    return n->kms_up;
}

size_t pk_node_kms_pending(const pk_node_t *n)
{
    return n->kq_count;
}

/* ---- other nodes ---- */

int pk_node_peer_input(pk_node_t *n, const uint8_t *peer_cn, size_t cn_len, const uint8_t *frame,
                       size_t len, uint64_t now_ms, pk_out_t *out)
{
    pk_reg_net_t f;
    (void)now_ms;
    n->last_drop = PK_NODE_DROP_NONE;
    if (!out_room(out, 2, PK_REG_SEALED_MAX + 2 + 2 * PK_REG_ID_MAX)) {
        drop(n, PK_NODE_DROP_SPACE);
        return PK_ERR_SPACE;
    }
    if (pk_node_peer_find(n, peer_cn, cn_len) < 0) {
        drop(n, PK_NODE_DROP_PEER_UNKNOWN);
        return PK_ERR_DENIED;
    }
    if (pk_reg_net_decode(frame, len, &f) != PK_OK || f.type != PK_REG_T_NODE_LINK_IND ||
        pk_reg_id_eq(&f.a, &f.b)) {
        pk_wipe(&f, sizeof f);
        drop(n, PK_NODE_DROP_PEER_MALFORMED);
        return PK_ERR_MALFORMED;
    }
    int rc = PK_OK;
    dev_ctx_t *t = dev_find(n, &f.b);
    if (!t || t->mode != PK_REG_MODE_POOL) {
        drop(n, PK_NODE_DROP_NOT_HERE);
        rc = PK_ERR_NOTFOUND;
        goto out;
    }
    pk_reg_link_pt_t m;
    memset(&m, 0, sizeof m);
    m.peer = f.a;
    m.role = PK_REG_ROLE_RESPONDER;
    m.ksi = f.ksi;
    memcpy(m.param, f.param, PK_REG_PARAM_LEN);
    rc = send_sealed(n, t, PK_REG_T_LINK_IND, &m, out);
    pk_wipe(&m, sizeof m);
    if (rc == PK_OK) {
        push_link_event(out, PK_NODE_EV_LINK, f.ksi, &f.a, &f.b);
        n->st.links_received++;
    }
out:
    pk_wipe(&f, sizeof f);
    return rc;
}

/* ---- time ---- */

void pk_node_timeout(pk_node_t *n, uint64_t now_ms, pk_out_t *out)
{
    pk_reg_node_timeout(&n->reg, now_ms);
    if (!n->kms_up) {
        kq_expire(n, now_ms, out);
    } else if (n->kq_nsent > 0 && !n->stalled &&
               now_ms - kq_at(n, 0)->sent_ms >= n->cfg.kms_timeout_ms) {
        if (pk_out_push(out, PK_ACT_EVENT, PK_NODE_EV_KMS_STALLED, 0, 0))
            n->stalled = 1;
    }
    mk_push(n, out);
    mk_check(n, now_ms, out);
}

uint64_t pk_node_next_deadline(const pk_node_t *n)
{
    uint64_t t = pk_reg_node_next_deadline(&n->reg);
    if (n->mk_checking)
        return 0;
    for (size_t i = 0; i < n->cfg.max_domains; i++)
        if (n->dom[i].used && n->dom[i].pushing)
            return 0;
    if (n->cfg.mk_check_ms != UINT64_MAX && n->mk_next_check != 0 && n->mk_next_check < t)
        t = n->mk_next_check;
    if (n->kq_count > 0) {
        const kq_ent_t *h = &n->kq[n->kq_head];
        uint64_t k = UINT64_MAX;
        if (!n->kms_up)
            k = h->t_ms + n->cfg.kms_timeout_ms;
        else if (n->kq_nsent > 0 && !n->stalled)
            k = h->sent_ms + n->cfg.kms_timeout_ms;
        if (k < t)
            t = k;
    }
    return t;
}

const uint64_t *pk_node_drops(const pk_node_t *n)
{
    return n->drops;
}

unsigned pk_node_last_drop(const pk_node_t *n)
{
    return n->last_drop;
}

const pk_node_stats_t *pk_node_stats(const pk_node_t *n)
{
    return &n->st;
}

size_t pk_node_devices(const pk_node_t *n)
{
    return n->ndev;
}

size_t pk_node_half_open(const pk_node_t *n)
{
    return pk_reg_node_count(&n->reg);
}

int pk_node_device_lookup(const pk_node_t *n, const pk_reg_id_t *dev, uint16_t *ctx_id,
                          pk_reg_id_t *temp_id)
{
    const dev_ctx_t *d = dev_find(n, dev);
    if (!d)
        return PK_ERR_NOTFOUND;
    if (ctx_id)
        *ctx_id = (uint16_t)(d - n->dev + 1);
    if (temp_id)
        *temp_id = d->temp;
    return PK_OK;
}
