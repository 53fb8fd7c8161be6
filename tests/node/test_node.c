/*
 * The node core (lib/proto/node) across two node cores, the real kms core
 * (lib/proto/kms, memory store) and device cores (pk_reg_dev), wired by an
 * in-memory message queue that plays the shells: UDP to devices, the TLS
 * frames to the kms (answered in order, after the kms's group commit) and
 * node <-> node frames.
 *
 *   node-1: A, C, E (E in pairs mode)        node-2: B
 *   kms: pool "p" (A, B, C, D), A-B and A-C allowed, A-D not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "proto/kms/kms.h"
#include "proto/node/node.h"
#include "proto/reg/reg.h"
#include "store/store.h"

/* ---- deterministic RNG ---- */
static uint64_t rng_state = 42;
static int t_fill(void *ctx, uint8_t *b, size_t n)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        b[i] = (uint8_t)(z ^ (z >> 31));
    }
    return PK_OK;
}
static const pk_rng_t t_rng = {t_fill, NULL};

static pk_reg_id_t id_of(const char *s)
{
    pk_reg_id_t id;
    if (pk_reg_id_set(&id, s, strlen(s)) != PK_OK)
        abort();
    return id;
}

/* ---- the world ---- */
#define NDEV  6
#define NNODE 2
enum { A, B, C, D, E, X }; /* X: known to no kms */
static const char *dev_names[NDEV] = {"dev-a", "dev-b", "dev-c", "dev-d", "dev-e", "dev-x"};
static const int dev_node[NDEV] = {0, 1, 0, 0, 0, 0};

enum { Q_TO_DEV = 1, Q_TO_NODE_DEV, Q_TO_KMS, Q_TO_NODE_KMS, Q_TO_NODE_PEER };

typedef struct qmsg {
    int kind, to, from;
    uint64_t src;
    size_t len;
    uint8_t b[4096];
} qmsg_t;

#define QMAX 256
typedef struct world {
    pk_store_t *st;
    pk_kms_t *kms;
    pk_node_t *node[NNODE];
    int peer_idx[NNODE]; /* index of the other node in each node's peer table */
    pk_reg_dev_t dev[NDEV];
    qmsg_t *q;
    unsigned qh, qn;
    uint64_t now;
    int kms_offline;         /* frames to the kms are lost */
    int kms_drop_pages;      /* this many paged KMS_KEYS_REQs with a cursor are lost */
    unsigned kms_frames;     /* frames the kms received */
    unsigned dev_rx[NDEV];   /* datagrams each device received */
    size_t accept_len[NDEV]; /* the last ACCEPT each device received */
    unsigned dev_events[NDEV][8];
    unsigned node_events[NNODE][8];
    uint8_t last_rej[NDEV];
} world_t;

static world_t W;

static void qpush(int kind, int to, int from, uint64_t src, const uint8_t *b, size_t len)
{
    CHECK(W.qn < QMAX && len <= sizeof W.q[0].b);
    if (W.qn >= QMAX || len > sizeof W.q[0].b)
        return;
    qmsg_t *m = &W.q[(W.qh + W.qn++) % QMAX];
    m->kind = kind;
    m->to = to;
    m->from = from;
    m->src = src;
    m->len = len;
    memcpy(m->b, b, len);
}

/* The shell of node i: performs its actions. */
static void node_actions(int i, pk_out_t *o)
{
    for (unsigned a = 0; a < o->n; a++) {
        pk_act_t *act = &o->act[a];
        if (act->kind == PK_ACT_EVENT) {
            if (act->code < 8)
                W.node_events[i][act->code]++;
            continue;
        }
        if (act->kind != PK_ACT_SEND)
            continue;
        switch (act->code & PK_NODE_DST_MASK) {
        case PK_NODE_DST_DEVICE:
            if (act->dest >= 1 && act->dest <= NDEV)
                qpush(Q_TO_DEV, (int)act->dest - 1, i, 0, act->data, act->len);
            break; /* other handles: test sources that get nothing */
        case PK_NODE_DST_KMS: qpush(Q_TO_KMS, 0, i, 0, act->data, act->len); break;
        case PK_NODE_DST_NODE:
            CHECK_EQ_INT(act->dest, (uint64_t)W.peer_idx[i]);
            qpush(Q_TO_NODE_PEER, 1 - i, i, 0, act->data, act->len);
            break;
        default: CHECK(0);
        }
    }
}

static void dev_actions(int d, pk_out_t *o)
{
    for (unsigned a = 0; a < o->n; a++) {
        pk_act_t *act = &o->act[a];
        if (act->kind == PK_ACT_SEND)
            qpush(Q_TO_NODE_DEV, dev_node[d], d, (uint64_t)d + 1, act->data, act->len);
        else if (act->kind == PK_ACT_EVENT && act->code < 8) {
            W.dev_events[d][act->code]++;
            if (act->code == PK_REG_EV_LINK_REJ && act->len > 0)
                W.last_rej[d] = act->data[act->len - 1];
        }
    }
}

/* Carries messages until none is left (bounded). */
static void run(void)
{
    static uint8_t arena[16384], resp[PK_KMS_RESP_MAX];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    for (int steps = 0; W.qn > 0 && steps < 10000; steps++) {
        qmsg_t *m = &W.q[W.qh];
        W.qh = (W.qh + 1) % QMAX;
        W.qn--;
        pk_out_reset(&o);
        int rc;
        size_t rl = 0;
        switch (m->kind) {
        case Q_TO_DEV:
            W.dev_rx[m->to]++;
            if (m->b[0] == PK_REG_T_ACCEPT)
                W.accept_len[m->to] = m->len;
            (void)pk_reg_dev_input(&W.dev[m->to], m->b, m->len, W.now, &o);
            dev_actions(m->to, &o);
            break;
        case Q_TO_NODE_DEV:
            (void)pk_node_device_input(W.node[m->to], m->src, m->b, m->len, W.now, &o);
            node_actions(m->to, &o);
            break;
        case Q_TO_KMS: {
            char name[32]; /* the node's TLS CN */
            snprintf(name, sizeof name, "node-%d", m->from + 1);
            if (W.kms_offline)
                break;
            if (W.kms_drop_pages && m->b[0] == PK_REG_T_KMS_KEYS_REQ && m->len > 2u + m->b[1] &&
                m->b[2 + m->b[1]] != 0) {
                W.kms_drop_pages--; /* a page request with a cursor, lost */
                break;
            }
            W.kms_frames++;
            (void)pk_kms_handle(W.kms, name, m->b, m->len, W.now, resp, sizeof resp, &rl);
            CHECK_EQ_INT(pk_kms_flush(W.kms), PK_OK); /* durable before the answer leaves */
            if (rl > 0)
                qpush(Q_TO_NODE_KMS, m->from, 0, 0, resp, rl);
            pk_wipe(resp, sizeof resp);
            break;
        }
        case Q_TO_NODE_KMS:
            rc = pk_node_kms_input(W.node[m->to], m->b, m->len, W.now, &o);
            CHECK_EQ_INT(rc, PK_OK);
            node_actions(m->to, &o);
            break;
        case Q_TO_NODE_PEER: {
            char name[32];
            snprintf(name, sizeof name, "node-%d", m->from + 1);
            (void)pk_node_peer_input(W.node[m->to], (const uint8_t *)name, strlen(name), m->b,
                                     m->len, W.now, &o);
            node_actions(m->to, &o);
            break;
        }
        default: CHECK(0);
        }
        pk_wipe(m->b, m->len);
    }
    CHECK_EQ_INT(W.qn, 0);
}

static pk_node_t *make_node(const char *id, size_t max_devices)
{
    pk_node_cfg_t cfg = {.node_id = id_of(id),
                         .rng = &t_rng,
                         .max_half = 16,
                         .max_buckets = 16,
                         .burst = 4,
                         .per_sec = 1,
                         .half_ttl_ms = 30000,
                         .max_devices = max_devices,
                         .max_kms = 64,
                         .kms_timeout_ms = 2000,
                         .max_links = 8,
                         .max_links_per_dev = 2};
    pk_node_t *n = NULL;
    CHECK_EQ_INT(pk_node_new(&cfg, &n), PK_OK);
    return n;
}

static uint8_t dev_key_byte(int d)
{
    return (uint8_t)(0x11 * (d + 1));
}

static void world_init(void)
{
    static uint8_t kek[PK_WRAP_KEK_LEN];
    memset(&W, 0, sizeof W);
    W.q = calloc(QMAX, sizeof *W.q);
    W.now = 1000000;
    memset(kek, 0x5a, sizeof kek);
    CHECK_EQ_INT(pk_store_open("memory:", &W.st), PK_OK);
    pk_kms_cfg_t kc = {.store = W.st, .kek = kek, .rng = &t_rng};
    CHECK_EQ_INT(pk_kms_new(&kc, &W.kms), PK_OK);
    CHECK_EQ_INT(pk_kms_pool_create(W.kms, "p", 64, W.now, NULL), PK_OK);
    for (int d = 0; d < NDEV; d++) {
        uint8_t k[16];
        memset(k, dev_key_byte(d), sizeof k);
        if (d == E)
            CHECK_EQ_INT(
                pk_kms_device_add(W.kms, dev_names[d], k, 16, PK_REG_MODE_PAIRS, NULL, W.now, NULL),
                PK_OK);
        else if (d != X)
            CHECK_EQ_INT(
                pk_kms_device_add(W.kms, dev_names[d], k, 16, PK_REG_MODE_POOL, "p", W.now, NULL),
                PK_OK);
        pk_reg_dev_cfg_t dc = {.dev_id = id_of(dev_names[d]),
                               .node_id = id_of(dev_node[d] ? "node-2" : "node-1"),
                               .k = k,
                               .klen = 16,
                               .rto_ms = 1000,
                               .max_tries = 4};
        CHECK_EQ_INT(pk_reg_dev_init(&W.dev[d], &dc), PK_OK);
    }
    CHECK_EQ_INT(pk_kms_allow(W.kms, "dev-a", "dev-b", W.now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(W.kms, "dev-a", "dev-c", W.now), PK_OK);
    CHECK_EQ_INT(pk_kms_allow(W.kms, "dev-a", "dev-e", W.now), PK_OK);
    W.node[0] = make_node("node-1", 8);
    W.node[1] = make_node("node-2", 8);
    pk_reg_id_t n1 = id_of("node-1"), n2 = id_of("node-2");
    W.peer_idx[0] = pk_node_peer_add(W.node[0], &n2);
    W.peer_idx[1] = pk_node_peer_add(W.node[1], &n1);
    CHECK(W.peer_idx[0] >= 0 && W.peer_idx[1] >= 0);
    CHECK_EQ_INT(pk_node_peer_add(W.node[0], &n2), PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_node_peer_add(W.node[0], &n1), PK_ERR_INVAL);
    /* the kms connections open */
    static uint8_t arena[8192];
    pk_out_t o;
    for (int i = 0; i < NNODE; i++) {
        pk_out_init(&o, arena, sizeof arena);
        CHECK_EQ_INT(pk_node_kms_up(W.node[i], W.now, &o), 0);
        CHECK_EQ_INT(o.n, 0);
    }
}

static void world_free(void)
{
    for (int i = 0; i < NNODE; i++)
        pk_node_free(W.node[i]);
    for (int d = 0; d < NDEV; d++)
        pk_reg_dev_clear(&W.dev[d]);
    pk_kms_free(W.kms);
    pk_store_close(W.st);
    free(W.q);
}

static void start(int d)
{
    static uint8_t arena[4096];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_reg_dev_start(&W.dev[d], &t_rng, W.now, &o), PK_OK);
    dev_actions(d, &o);
}

static void reg(int d)
{
    start(d);
    run();
    CHECK_EQ_INT(W.dev[d].state, PK_REG_D_REGISTERED);
}

static void link_req(int d, int peer)
{
    static uint8_t arena[4096];
    pk_out_t o;
    pk_reg_id_t p = id_of(dev_names[peer]);
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_reg_dev_link_request(&W.dev[d], &p, &o), PK_OK);
    dev_actions(d, &o);
    run();
}

static const pk_reg_ind_t *ind_for(int d, int peer)
{
    pk_reg_id_t p = id_of(dev_names[peer]);
    for (unsigned i = 0; i < PK_REG_MAX_IND; i++)
        if (W.dev[d].ind[i].used && pk_reg_id_eq(&W.dev[d].ind[i].peer, &p))
            return &W.dev[d].ind[i];
    return NULL;
}

static uint64_t drops(int i, unsigned r)
{
    return pk_node_drops(W.node[i])[r];
}

/* ---- tests ---- */

static void test_register(void)
{
    world_init();
    reg(A);
    reg(B);
    CHECK_EQ_INT(W.dev[A].keys.mode, PK_REG_MODE_POOL);
    CHECK(W.dev[A].keys.n > 0);
    /* a set that fits one accept goes without the paging block, byte for
     * byte as before paging (older devices read it): nonce_d, the temporary
     * id (16 hex digits "@node-1"), mode, count, 32 pool keys (no peer) */
    CHECK_EQ_INT(W.accept_len[A], PK_RECORD_LEN(16 + 1 + 23 + 2 + 32 * (4 + 32 + 1)));
    CHECK_EQ_INT(pk_node_devices(W.node[0]), 1);
    CHECK_EQ_INT(pk_node_devices(W.node[1]), 1);
    CHECK_EQ_INT(W.node_events[0][PK_NODE_EV_REGISTERED], 1);
    /* the temporary id carries the serving node */
    pk_reg_id_t t, a = id_of("dev-a");
    uint16_t cid = 0;
    CHECK_EQ_INT(pk_node_device_lookup(W.node[0], &a, &cid, &t), PK_OK);
    CHECK(pk_reg_id_eq(&t, &W.dev[A].temp_id));
    CHECK(t.len == 23 && memcmp(t.b + 16, "@node-1", 7) == 0);
    CHECK_EQ_INT(cid, W.dev[A].chan.rc_session_id);
    CHECK_EQ_INT(pk_node_device_lookup(W.node[1], &a, NULL, NULL), PK_ERR_NOTFOUND);
    /* four kms calls: vector + keys per device; nothing outstanding */
    CHECK_EQ_INT(W.kms_frames, 4);
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 0);
    /* option 1 device: pair keys */
    reg(E);
    CHECK_EQ_INT(W.dev[E].keys.mode, PK_REG_MODE_PAIRS);
    /* re-registration keeps the context id and replaces the channel */
    reg(A);
    uint16_t cid2 = 0;
    CHECK_EQ_INT(pk_node_device_lookup(W.node[0], &a, &cid2, NULL), PK_OK);
    CHECK_EQ_INT(cid2, cid);
    CHECK_EQ_INT(pk_node_stats(W.node[0])->reregistered, 1);
    CHECK_EQ_INT(pk_node_devices(W.node[0]), 2);
    world_free();
}

static void test_retransmitted_request(void)
{
    world_init();
    start(A);
    /* the device's REQUEST is in the queue: duplicate it before anything runs */
    qmsg_t dup = W.q[W.qh];
    qpush(dup.kind, dup.to, dup.from, dup.src, dup.b, dup.len);
    run();
    CHECK_EQ_INT(W.dev[A].state, PK_REG_D_REGISTERED);
    CHECK_EQ_INT(W.kms_frames, 2); /* one vector, one key request */
    CHECK_EQ_INT(drops(0, PK_REG_DROP_DUP), 1);
    world_free();
}

static void test_option2_cross_node(void)
{
    world_init();
    reg(A);
    reg(B);
    unsigned k0 = W.kms_frames;
    link_req(A, B);
    const pk_reg_ind_t *ia = ind_for(A, B), *ib = ind_for(B, A);
    CHECK(ia != NULL && ib != NULL);
    if (!ia || !ib)
        goto out;
    CHECK_EQ_INT(ia->role, PK_REG_ROLE_INITIATOR);
    CHECK_EQ_INT(ib->role, PK_REG_ROLE_RESPONDER);
    CHECK_EQ_INT(ia->ksi, ib->ksi);
    CHECK_MEM(ia->param, ib->param, PK_REG_PARAM_LEN);
    CHECK_EQ_INT(W.kms_frames - k0, 2); /* directory + allocation */
    CHECK_EQ_INT(W.node_events[0][PK_NODE_EV_LINK], 1);
    CHECK_EQ_INT(W.node_events[1][PK_NODE_EV_LINK], 1);
    CHECK_EQ_INT(pk_node_stats(W.node[1])->links_received, 1);
    /* both derive the same link root key from the pool key and the parameter */
    uint8_t ka[PK_REG_ROOT_KEY_LEN], kb[PK_REG_ROOT_KEY_LEN];
    CHECK_EQ_INT(pk_reg_dev_lookup(&W.dev[A], ia->ksi, (const uint8_t *)"dev-b", 5, ka), PK_OK);
    CHECK_EQ_INT(pk_reg_dev_lookup(&W.dev[B], ib->ksi, (const uint8_t *)"dev-a", 5, kb), PK_OK);
    CHECK_MEM(ka, kb, sizeof ka);
    /* the KSI is exclusive: a second pair gets another one */
    reg(C);
    link_req(A, C);
    const pk_reg_ind_t *ic = ind_for(C, A), *iac = ind_for(A, C);
    CHECK(ic != NULL && iac != NULL);
    if (ic && iac) {
        CHECK(ic->ksi != ib->ksi);
        CHECK_EQ_INT(ic->ksi, iac->ksi);
    }
out:
    world_free();
}

static void test_option2_local(void)
{
    world_init();
    reg(A);
    reg(C);
    unsigned k0 = W.kms_frames;
    link_req(C, A);
    const pk_reg_ind_t *ic = ind_for(C, A), *ia = ind_for(A, C);
    CHECK(ic && ia);
    if (ic && ia) {
        CHECK_EQ_INT(ic->role, PK_REG_ROLE_INITIATOR);
        CHECK_EQ_INT(ia->role, PK_REG_ROLE_RESPONDER);
        CHECK_EQ_INT(ic->ksi, ia->ksi);
    }
    CHECK_EQ_INT(W.kms_frames - k0, 1); /* no directory for a local target */
    world_free();
}

static void test_denied(void)
{
    world_init();
    reg(A);
    reg(D);
    unsigned rx_d = W.dev_rx[D];
    link_req(A, D);
    CHECK_EQ_INT(W.dev_events[A][PK_REG_EV_LINK_REJ], 1);
    CHECK_EQ_INT(W.last_rej[A], PK_REG_REJ_DENIED);
    CHECK(ind_for(A, D) == NULL);
    CHECK_EQ_INT(W.dev_rx[D], rx_d); /* D hears nothing */
    /* a target with no directory entry (never registered): UNKNOWN */
    reg(C);
    link_req(C, B);
    CHECK_EQ_INT(W.dev_events[C][PK_REG_EV_LINK_REJ], 1);
    CHECK_EQ_INT(W.last_rej[C], PK_REG_REJ_UNKNOWN);
    /* a pairs-mode (option 1) device cannot ask: DENIED without a kms call */
    reg(E);
    unsigned k0 = W.kms_frames;
    link_req(E, A);
    CHECK_EQ_INT(W.last_rej[E], PK_REG_REJ_DENIED);
    CHECK_EQ_INT(W.kms_frames, k0);
    CHECK_EQ_INT(pk_node_stats(W.node[0])->links_rejected, 3);
    world_free();
}

static void test_unregistered_cannot_link(void)
{
    world_init();
    reg(A);
    static uint8_t arena[8192];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    /* capture a genuine LINK_REQ of A (not delivered) */
    pk_reg_id_t b = id_of("dev-b");
    CHECK_EQ_INT(pk_reg_dev_link_request(&W.dev[A], &b, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    uint8_t req[PK_REG_SEALED_MAX];
    size_t rl = o.act[0].len;
    memcpy(req, o.act[0].data, rl);
    unsigned k0 = W.kms_frames;
    pk_out_t on;
    static uint8_t arena2[16384];
    pk_out_init(&on, arena2, sizeof arena2);

    /* a device with its own made-up channel on A's context id: tag fails */
    pk_record_t fake;
    memset(&fake, 0, sizeof fake);
    uint8_t kreg[PK_REG_KREG_LEN];
    memset(kreg, 0x77, sizeof kreg);
    CHECK_EQ_INT(pk_reg_chan_init(&fake, kreg, W.dev[A].chan.rc_session_id, 0), PK_OK);
    pk_reg_link_pt_t m;
    memset(&m, 0, sizeof m);
    m.peer = b;
    uint8_t forged[PK_REG_SEALED_MAX];
    size_t fl = 0;
    CHECK_EQ_INT(pk_reg_chan_seal_link(&fake, PK_REG_T_LINK_REQ, &m, forged, sizeof forged, &fl),
                 PK_OK);
    CHECK_EQ_INT(pk_node_device_input(W.node[0], 99, forged, fl, W.now, &on), PK_ERR_AUTH);
    CHECK_EQ_INT(pk_node_last_drop(W.node[0]), PK_NODE_DROP_AUTH);
    /* the same on a context id nobody has */
    pk_record_clear(&fake);
    CHECK_EQ_INT(pk_reg_chan_init(&fake, kreg, 7, 0), PK_OK);
    CHECK_EQ_INT(pk_reg_chan_seal_link(&fake, PK_REG_T_LINK_REQ, &m, forged, sizeof forged, &fl),
                 PK_OK);
    CHECK_EQ_INT(pk_node_device_input(W.node[0], 99, forged, fl, W.now, &on), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_NO_CONTEXT), 1);
    pk_record_clear(&fake);
    /* A's genuine request tampered in one byte */
    for (size_t i = 0; i < rl; i++) {
        uint8_t t[PK_REG_SEALED_MAX];
        memcpy(t, req, rl);
        t[i] ^= 0x01;
        int rc = pk_node_device_input(W.node[0], 1, t, rl, W.now, &on);
        CHECK(rc != PK_OK);
    }
    CHECK_EQ_INT(on.n, 0);
    CHECK_EQ_INT(W.kms_frames, k0);
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 0);
    /* the genuine one works once; its replay is refused */
    CHECK_EQ_INT(pk_node_device_input(W.node[0], 1, req, rl, W.now, &on), PK_OK);
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 1);
    CHECK_EQ_INT(pk_node_device_input(W.node[0], 1, req, rl, W.now, &on), PK_ERR_REPLAY);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_REPLAY), 1);
    world_free();
}

static void test_unknown_device_and_bad_res(void)
{
    world_init();
    /* X is unknown to the kms: no answer, a counted refusal */
    start(X);
    run();
    CHECK_EQ_INT(W.dev_rx[X], 0);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_KMS_REFUSED), 1);
    /* a wrong-key device: its own check of AUTN refuses the challenge */
    pk_reg_dev_clear(&W.dev[A]);
    uint8_t wrong[16];
    memset(wrong, 0xEE, sizeof wrong);
    pk_reg_dev_cfg_t dc = {.dev_id = id_of("dev-a"),
                           .node_id = id_of("node-1"),
                           .k = wrong,
                           .klen = 16,
                           .rto_ms = 1000,
                           .max_tries = 4};
    CHECK_EQ_INT(pk_reg_dev_init(&W.dev[A], &dc), PK_OK);
    start(A);
    run();
    CHECK_EQ_INT(W.dev[A].state, PK_REG_D_WAIT_CHALLENGE);
    CHECK_EQ_INT(W.dev_rx[A], 1);
    /* a forged RESPONSE (guessed RES) for that run: bad_res, no kms call */
    pk_reg_response_t r;
    memcpy(r.nonce_d, W.dev[A].nonce_d, PK_REG_NONCE_LEN);
    r.dev = id_of("dev-a");
    memset(r.res, 0x42, sizeof r.res);
    uint8_t buf[PK_REG_RESPONSE_MAX];
    size_t bl = 0;
    CHECK_EQ_INT(pk_reg_response_encode(&r, buf, sizeof buf, &bl), PK_OK);
    unsigned k0 = W.kms_frames;
    qpush(Q_TO_NODE_DEV, 0, A, A + 1, buf, bl);
    run();
    CHECK_EQ_INT(W.kms_frames, k0);
    CHECK_EQ_INT(drops(0, PK_REG_DROP_BAD_RES), 1);
    CHECK_EQ_INT(pk_node_devices(W.node[0]), 0);
    world_free();
}

static void test_garbage(void)
{
    world_init();
    reg(A);
    static uint8_t arena[16384];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    uint8_t g[200];
    uint64_t before = 0, after = 0;
    for (unsigned r = 0; r < PK_NODE_DROP_N; r++)
        before += drops(0, r);
    size_t half = pk_node_half_open(W.node[0]);
    for (int i = 0; i < 2000; i++) {
        size_t len = (size_t)(i % 200);
        t_fill(NULL, g, len);
        if (i % 4 == 0 && len > 0)
            g[0] = (uint8_t)(i % 3 == 0 ? PK_REG_T_LINK_REQ : PK_REG_T_RESPONSE);
        int rc = pk_node_device_input(W.node[0], 5000 + (uint64_t)i, g, len, W.now, &o);
        CHECK(rc != PK_OK);
        CHECK(pk_node_last_drop(W.node[0]) < PK_NODE_DROP_N);
    }
    for (unsigned r = 0; r < PK_NODE_DROP_N; r++)
        after += drops(0, r);
    CHECK_EQ_INT(after - before, 2000);
    CHECK_EQ_INT(o.n, 0);
    CHECK_EQ_INT(pk_node_half_open(W.node[0]), half);
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 0);
    /* the node still serves */
    reg(C);
    /* garbage from the kms connection: out of step, reported */
    CHECK_EQ_INT(pk_node_kms_input(W.node[0], g, 10, W.now, &o), PK_ERR_STATE);
    /* garbage from a peer node and frames from an unknown node */
    CHECK_EQ_INT(pk_node_peer_input(W.node[0], (const uint8_t *)"node-2", 6, g, 50, W.now, &o),
                 PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_node_peer_input(W.node[0], (const uint8_t *)"node-9", 6, g, 50, W.now, &o),
                 PK_ERR_DENIED);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_PEER_UNKNOWN), 1);
    /* a well-formed indication for a device not registered here */
    pk_reg_net_t f;
    memset(&f, 0, sizeof f);
    f.type = PK_REG_T_NODE_LINK_IND;
    f.a = id_of("dev-b");
    f.b = id_of("dev-d");
    size_t fl = 0;
    CHECK_EQ_INT(pk_reg_net_encode(&f, g, sizeof g, &fl), PK_OK);
    CHECK_EQ_INT(pk_node_peer_input(W.node[0], (const uint8_t *)"node-2", 6, g, fl, W.now, &o),
                 PK_ERR_NOTFOUND);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_NOT_HERE), 1);
    CHECK_EQ_INT(o.n, 0);
    world_free();
}

static void test_kms_out_of_step(void)
{
    world_init();
    start(A);
    /* node-1 sent a vector request; answer it with a keys response */
    static uint8_t arena[16384];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    pk_reg_net_t f;
    memset(&f, 0, sizeof f);
    f.type = PK_REG_T_KMS_ALLOC_RESP;
    uint8_t b[64];
    size_t bl = 0;
    CHECK_EQ_INT(pk_reg_net_encode(&f, b, sizeof b, &bl), PK_OK);
    /* deliver the device's request to the node, not further */
    qmsg_t m = W.q[W.qh];
    W.qn = 0;
    CHECK_EQ_INT(pk_node_device_input(W.node[0], 1, m.b, m.len, W.now, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    CHECK_EQ_INT(o.act[0].code, PK_NODE_DST_KMS | PK_REG_T_KMS_VEC_REQ);
    CHECK_EQ_INT(pk_node_kms_input(W.node[0], b, bl, W.now, &o), PK_ERR_MALFORMED);
    /* a KMS_ERR for another request type is out of step too */
    uint8_t err[3] = {PK_KMS_T_ERR, PK_REG_ST_UNKNOWN, PK_REG_T_KMS_KEYS_REQ};
    CHECK_EQ_INT(pk_node_kms_input(W.node[0], err, 3, W.now, &o), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 1);
    world_free();
}

static void test_kms_down_and_back(void)
{
    world_init();
    reg(B);
    /* the kms connection of node-1 is down: the request waits */
    pk_node_kms_down(W.node[0]);
    start(A);
    run();
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 1);
    CHECK_EQ_INT(W.dev[A].state, PK_REG_D_WAIT_CHALLENGE);
    /* back up: sent again, the registration completes */
    static uint8_t arena[16384];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_node_kms_up(W.node[0], W.now + 10, &o), 0);
    CHECK_EQ_INT(o.n, 1);
    node_actions(0, &o);
    run();
    CHECK_EQ_INT(W.dev[A].state, PK_REG_D_REGISTERED);
    /* frames lost on a connection that dies: the node resends after reconnecting */
    W.kms_offline = 1;
    link_req(A, B);
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 1);
    pk_node_kms_down(W.node[0]);
    W.kms_offline = 0;
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_node_kms_up(W.node[0], W.now, &o), 0);
    node_actions(0, &o);
    run();
    CHECK(ind_for(A, B) != NULL && ind_for(B, A) != NULL);
    /* a stalled kms: an event after the timeout */
    W.kms_offline = 1;
    start(C); /* cannot complete: the vector request is lost */
    run();
    CHECK_EQ_INT(W.dev[C].state, PK_REG_D_WAIT_CHALLENGE);
    uint64_t dl = pk_node_next_deadline(W.node[0]);
    CHECK(dl <= W.now + 2000);
    pk_out_reset(&o);
    pk_node_timeout(W.node[0], dl - 1, &o);
    CHECK_EQ_INT(o.n, 0);
    pk_node_timeout(W.node[0], dl, &o);
    CHECK_EQ_INT(o.n, 1);
    CHECK_EQ_INT(o.act[0].code, PK_NODE_EV_KMS_STALLED);
    pk_out_reset(&o);
    pk_node_timeout(W.node[0], dl + 1, &o); /* once */
    CHECK_EQ_INT(o.n, 0);
    /* down for longer than the timeout: queued link requests fail BUSY */
    pk_node_kms_down(W.node[0]);
    link_req(A, D); /* queued (DIR) */
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 2);
    W.now += 5000;
    pk_out_reset(&o);
    pk_node_timeout(W.node[0], W.now, &o);
    node_actions(0, &o);
    run();
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 0);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_KMS_EXPIRED), 2);
    CHECK_EQ_INT(W.last_rej[A], PK_REG_REJ_BUSY);
    world_free();
}

static void test_context_eviction(void)
{
    world_init();
    pk_node_free(W.node[0]);
    W.node[0] = make_node("node-1", 2);
    pk_reg_id_t n2 = id_of("node-2");
    W.peer_idx[0] = pk_node_peer_add(W.node[0], &n2);
    static uint8_t arena[8192];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    pk_node_kms_up(W.node[0], W.now, &o);
    reg(A);
    reg(C);
    reg(D); /* evicts one context */
    CHECK_EQ_INT(pk_node_devices(W.node[0]), 2);
    CHECK_EQ_INT(pk_node_stats(W.node[0])->evicted_contexts, 1);
    pk_reg_id_t a = id_of("dev-a"), d = id_of("dev-d");
    CHECK_EQ_INT(pk_node_device_lookup(W.node[0], &a, NULL, NULL), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_node_device_lookup(W.node[0], &d, NULL, NULL), PK_OK);
    /* the evicted device's channel is dead at the node */
    unsigned k0 = W.kms_frames;
    link_req(A, C);
    CHECK_EQ_INT(W.kms_frames, k0);
    CHECK(drops(0, PK_NODE_DROP_AUTH) + drops(0, PK_NODE_DROP_NO_CONTEXT) == 1);
    world_free();
}

static void test_link_limits(void)
{
    world_init();
    reg(A);
    reg(B);
    reg(C);
    /* the kms is slow: requests pile up; a duplicate pair is dropped, the
     * per-device limit (2) answers BUSY */
    W.kms_offline = 1;
    link_req(A, B);
    link_req(A, B);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_LINK_DUP), 1);
    link_req(A, C);
    link_req(A, D);
    CHECK_EQ_INT(W.last_rej[A], PK_REG_REJ_BUSY);
    world_free();
}

/* ---- master keys: refresh and push (issue 5) ---- */

static void mk_refresh(int d)
{
    static uint8_t arena[4096];
    pk_out_t o;
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_reg_dev_mk_refresh(&W.dev[d], &o), PK_OK);
    dev_actions(d, &o);
}

/* Runs node i's timers at W.now until nothing more is due now (bounded). */
static void node_tick(int i)
{
    static uint8_t arena[16384];
    pk_out_t o;
    for (int k = 0; k < 64 && pk_node_next_deadline(W.node[i]) <= W.now; k++) {
        pk_out_init(&o, arena, sizeof arena);
        pk_node_timeout(W.node[i], W.now, &o);
        node_actions(i, &o);
        run();
    }
}

static uint32_t newest(int d)
{
    return pk_reg_mkset_newest(&W.dev[d].keys.mk);
}

static void test_mk_refresh_and_push(void)
{
    static uint8_t arena[PK_NODE_OUT_MIN + 1024];
    pk_out_t o;
    world_init();
    CHECK_EQ_INT(pk_kms_domain_add(W.kms, "d1", W.now, NULL), PK_OK);
    CHECK_EQ_INT(pk_kms_domain_member_add(W.kms, "d1", "dev-a", W.now), PK_OK);
    CHECK_EQ_INT(pk_kms_domain_member_add(W.kms, "d1", "dev-c", W.now), PK_OK);
    CHECK_EQ_INT(pk_kms_domain_member_add(W.kms, "d1", "dev-b", W.now), PK_OK);
    CHECK_EQ_INT(pk_kms_master_rotate(W.kms, "d1", W.now, 3600000, W.now, NULL), PK_OK);
    reg(A);
    reg(C);
    reg(B);
    reg(D); /* in no domain */
    CHECK_EQ_INT(newest(A), 1);
    CHECK_EQ_INT(newest(C), 1);
    CHECK_EQ_INT(newest(B), 1);
    CHECK_EQ_INT(W.dev[D].keys.mk.n, 0);
    const pk_node_stats_t *st = pk_node_stats(W.node[0]);
    uint64_t registered = st->registered;
    unsigned kms0 = W.kms_frames;

    /* rotation at the kms; A refreshes without registering again */
    CHECK_EQ_INT(pk_kms_master_rotate(W.kms, "d1", W.now + 10, 3600000, W.now, NULL), PK_OK);
    W.now += 20;
    unsigned rx_c = W.dev_rx[C];
    mk_refresh(A);
    run();
    CHECK_EQ_INT(newest(A), 2);
    CHECK_EQ_INT(W.dev[A].keys.mk.k[0].id, 2);
    CHECK_EQ_INT(W.dev_events[A][PK_REG_EV_MK_UPDATE], 1);
    CHECK_EQ_INT(st->mk_refreshes, 1);
    CHECK_EQ_INT(st->mk_updates, 1);
    CHECK_EQ_INT(st->registered, registered); /* no REQUEST, no new accept */
    CHECK_EQ_INT(W.kms_frames, kms0 + 1);     /* one KMS_MK_REQ, no vector */
    CHECK_EQ_INT(W.dev[A].state, PK_REG_D_REGISTERED);
    /* the push: C (same domain, same node) gets key 2 from the node's timer */
    CHECK_EQ_INT(W.dev_rx[C], rx_c);
    CHECK(pk_node_next_deadline(W.node[0]) <= W.now);
    unsigned rx_a = W.dev_rx[A], rx_d = W.dev_rx[D];
    node_tick(0);
    CHECK_EQ_INT(newest(C), 2);
    CHECK_EQ_INT(W.dev_events[C][PK_REG_EV_MK_UPDATE], 1);
    CHECK_EQ_INT(st->mk_pushes, 1);
    CHECK_EQ_INT(W.dev_rx[A], rx_a); /* A had it already */
    CHECK_EQ_INT(W.dev_rx[D], rx_d); /* D is in no domain */
    CHECK_EQ_INT(newest(B), 1);      /* B is at node-2, which has heard nothing yet */
    CHECK(pk_node_next_deadline(W.node[0]) > W.now);

    /* periodic check: rotation 3 reaches A, C (node-1) and B (node-2) with
     * nobody asking */
    CHECK_EQ_INT(pk_kms_master_rotate(W.kms, "d1", W.now + 10, 3600000, W.now, NULL), PK_OK);
    W.now += 60001;
    node_tick(0);
    node_tick(1);
    CHECK_EQ_INT(newest(A), 3);
    CHECK_EQ_INT(newest(C), 3);
    CHECK_EQ_INT(newest(B), 3);
    CHECK_EQ_INT(st->mk_checks, 1);
    CHECK_EQ_INT(st->mk_pushes, 3);
    CHECK_EQ_INT(pk_node_stats(W.node[1])->mk_pushes, 1);
    CHECK_EQ_INT(st->registered, registered);
    /* nothing newer at the next check: no pushes */
    W.now += 60001;
    node_tick(0);
    CHECK_EQ_INT(st->mk_checks, 2);
    CHECK_EQ_INT(st->mk_pushes, 3);

    /* a second refresh while the first is with the kms: dropped (mk_busy) */
    mk_refresh(A);
    mk_refresh(A);
    run();
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_MK_BUSY), 1);
    CHECK_EQ_INT(st->mk_updates, 2);

    /* forged: a record under a key the node does not hold, an unknown
     * context, a replayed refresh: nothing sent, state unchanged */
    {
        pk_record_t fake;
        uint8_t kreg[PK_REG_KREG_LEN], buf[PK_REG_MK_REFRESH_MAX];
        size_t len = 0;
        uint16_t ctx = 0;
        pk_reg_id_t a = id_of("dev-a");
        CHECK_EQ_INT(pk_node_device_lookup(W.node[0], &a, &ctx, NULL), PK_OK);
        memset(&fake, 0, sizeof fake);
        memset(kreg, 0x77, sizeof kreg);
        CHECK_EQ_INT(pk_reg_chan_init(&fake, kreg, ctx, 0), PK_OK);
        CHECK_EQ_INT(pk_record_set_tx_next(&fake, 1000), PK_OK); /* past the replay window */
        CHECK_EQ_INT(
            pk_reg_chan_seal_mk(&fake, PK_REG_T_MK_REFRESH, 0, NULL, buf, sizeof buf, &len), PK_OK);
        uint64_t q0 = pk_node_kms_pending(W.node[0]);
        pk_out_init(&o, arena, sizeof arena);
        CHECK_EQ_INT(pk_node_device_input(W.node[0], 77, buf, len, W.now, &o), PK_ERR_AUTH);
        CHECK_EQ_INT(o.n, 0);
        CHECK_EQ_INT(drops(0, PK_NODE_DROP_AUTH), 1);
        pk_record_clear(&fake);
        CHECK_EQ_INT(pk_reg_chan_init(&fake, kreg, 7, 0), PK_OK); /* context 7: unused */
        CHECK_EQ_INT(
            pk_reg_chan_seal_mk(&fake, PK_REG_T_MK_REFRESH, 0, NULL, buf, sizeof buf, &len), PK_OK);
        CHECK_EQ_INT(pk_node_device_input(W.node[0], 77, buf, len, W.now, &o), PK_ERR_NOTFOUND);
        CHECK_EQ_INT(o.n, 0);
        CHECK_EQ_INT(drops(0, PK_NODE_DROP_NO_CONTEXT), 1);
        pk_record_clear(&fake);
        /* the real device's refresh, replayed from another address */
        pk_out_init(&o, arena, sizeof arena);
        CHECK_EQ_INT(pk_reg_dev_mk_refresh(&W.dev[A], &o), PK_OK);
        memcpy(buf, o.act[0].data, o.act[0].len);
        len = o.act[0].len;
        dev_actions(A, &o);
        run();
        pk_out_init(&o, arena, sizeof arena);
        CHECK_EQ_INT(pk_node_device_input(W.node[0], 77, buf, len, W.now, &o), PK_ERR_REPLAY);
        CHECK_EQ_INT(o.n, 0);
        CHECK_EQ_INT(drops(0, PK_NODE_DROP_REPLAY), 1);
        CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), q0);
        /* an unregistered device has no channel to ask on */
        pk_out_init(&o, arena, sizeof arena);
        CHECK_EQ_INT(pk_reg_dev_mk_refresh(&W.dev[X], &o), PK_ERR_STATE);
    }

    /* the kms down: the request expires, no update; the device times out */
    unsigned ups = W.dev_events[A][PK_REG_EV_MK_UPDATE];
    pk_node_kms_down(W.node[0]);
    W.kms_offline = 1;
    mk_refresh(A);
    run();
    W.now += 2001;
    node_tick(0);
    CHECK_EQ_INT(W.dev_events[A][PK_REG_EV_MK_UPDATE], ups);
    CHECK(drops(0, PK_NODE_DROP_KMS_EXPIRED) >= 1);
    CHECK_EQ_INT(st->mk_refused, 1); /* counted as no answer */
    W.kms_offline = 0;
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_node_kms_up(W.node[0], W.now, &o), 0);
    mk_refresh(A); /* not stuck behind the expired one */
    run();
    CHECK_EQ_INT(W.dev_events[A][PK_REG_EV_MK_UPDATE], ups + 1);

    /* C leaves the domain: its refresh gets an empty update, keys kept */
    CHECK_EQ_INT(pk_kms_domain_member_remove(W.kms, "d1", "dev-c", W.now), PK_OK);
    mk_refresh(C);
    run();
    CHECK_EQ_INT(newest(C), 3);
    CHECK_EQ_INT(W.dev_events[C][PK_REG_EV_MK_UPDATE], 3);
    world_free();
}

/*
 * Paged key sets through the node core and the real kms core: dev-e (mode
 * pairs) with 100 more allowed peers gets every key - the accept's 32, then
 * three KEYS pages the node fetches from the kms per KEYS_REQ. The first
 * page request is lost on the way to the kms: the device asks again, the
 * node drops that as a duplicate (one page request per device with the
 * kms), and after the kms connection comes back the node sends it again.
 */
static void test_paged_keys(void)
{
    static pk_reg_key_t store[128];
    static uint8_t arena[16384];
    pk_out_t o;
    char b[32];
    world_init();
    for (int i = 0; i < 100; i++) {
        snprintf(b, sizeof b, "peer-%03d", i);
        CHECK_EQ_INT(pk_kms_device_add(W.kms, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, W.now, NULL),
                     PK_OK);
        CHECK_EQ_INT(pk_kms_group_add(W.kms, "crowd", b, W.now), PK_OK);
    }
    CHECK_EQ_INT(pk_kms_group_add(W.kms, "crowd", "dev-e", W.now), PK_OK);
    uint8_t k[16];
    memset(k, dev_key_byte(E), sizeof k);
    pk_reg_dev_clear(&W.dev[E]);
    pk_reg_dev_cfg_t dc = {.dev_id = id_of("dev-e"),
                           .node_id = id_of("node-1"),
                           .k = k,
                           .klen = 16,
                           .rto_ms = 1000,
                           .max_tries = 4,
                           .keys = store,
                           .nkeys = 128};
    CHECK_EQ_INT(pk_reg_dev_init(&W.dev[E], &dc), PK_OK);

    W.kms_drop_pages = 1;
    start(E);
    run();
    CHECK_EQ_INT(W.dev[E].state, PK_REG_D_WAIT_KEYS);
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 1);
    /* the device's timer: a new KEYS_REQ, dropped while the first is pending */
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_reg_dev_timeout(&W.dev[E], pk_reg_dev_next_deadline(&W.dev[E]), &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    dev_actions(E, &o);
    run();
    CHECK_EQ_INT(drops(0, PK_REG_DROP_DUP), 1);
    CHECK_EQ_INT(W.dev[E].state, PK_REG_D_WAIT_KEYS);
    /* the kms connection dies and comes back: the page request goes again */
    pk_node_kms_down(W.node[0]);
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_node_kms_up(W.node[0], W.now, &o), 0);
    CHECK_EQ_INT(o.n, 1);
    node_actions(0, &o);
    run();
    CHECK_EQ_INT(W.dev[E].state, PK_REG_D_REGISTERED);
    CHECK_EQ_INT(W.dev_events[E][PK_REG_EV_REGISTERED], 1);
    size_t n = 0;
    const pk_reg_key_t *t = pk_reg_dev_keys(&W.dev[E], &n);
    CHECK_EQ_INT(n, 100); /* dev-a (also allowed) is in mode pool: no pair key */
    CHECK_EQ_INT(pk_reg_dev_keys_missing(&W.dev[E]), 0);
    for (size_t i = 0; i < n; i++) {
        snprintf(b, sizeof b, "peer-%03zu", i);
        CHECK(t[i].peer.len == strlen(b) && memcmp(t[i].peer.b, b, t[i].peer.len) == 0);
        for (size_t j = 0; j < i; j++)
            CHECK(t[j].ksi != t[i].ksi);
    }
    CHECK_EQ_INT(pk_node_stats(W.node[0])->key_pages_asked, 3);
    CHECK_EQ_INT(pk_node_stats(W.node[0])->key_pages_sent, 3);
    /* a pool device has no pages: its KEYS_REQ is refused by type */
    reg(A);
    pk_reg_id_t none;
    uint8_t rec[PK_REG_KEYS_REQ_MAX];
    size_t len = 0;
    memset(&none, 0, sizeof none);
    CHECK_EQ_INT(pk_reg_chan_seal_keys_req(&W.dev[A].chan, &none, rec, sizeof rec, &len), PK_OK);
    uint64_t before = drops(0, PK_NODE_DROP_TYPE);
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_node_device_input(W.node[0], A + 1, rec, len, W.now, &o), PK_ERR_STATE);
    CHECK_EQ_INT(o.n, 0);
    CHECK_EQ_INT(drops(0, PK_NODE_DROP_TYPE), before + 1);
    /* a KEYS_REQ for no context, and a forged one on E's context */
    rec[1] = 0x7f;
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_node_device_input(W.node[0], 9, rec, len, W.now, &o), PK_ERR_NOTFOUND);
    uint16_t eid = 0;
    pk_reg_id_t eidn = id_of("dev-e");
    CHECK_EQ_INT(pk_node_device_lookup(W.node[0], &eidn, &eid, NULL), PK_OK);
    rec[1] = (uint8_t)(eid >> 8);
    rec[2] = (uint8_t)eid;
    int rc = pk_node_device_input(W.node[0], 9, rec, len, W.now, &o);
    CHECK(rc == PK_ERR_AUTH || rc == PK_ERR_REPLAY); /* A's counter may be one E's window saw */
    CHECK_EQ_INT(o.n, 0);
    world_free();
}

/* A page the kms refuses (the device was removed between its accept and its
 * pages): nothing is sent to the device, the node's pending flag clears, so
 * the device's next KEYS_REQ goes to the kms again (not dropped as a
 * duplicate); after max_tries the device gives up and wipes its keys. */
static void test_paged_keys_refused(void)
{
    static pk_reg_key_t store[64];
    static uint8_t arena[16384];
    pk_out_t o;
    char b[32];
    world_init();
    for (int i = 0; i < 40; i++) {
        snprintf(b, sizeof b, "peer-%03d", i);
        CHECK_EQ_INT(pk_kms_device_add(W.kms, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, W.now, NULL),
                     PK_OK);
        CHECK_EQ_INT(pk_kms_group_add(W.kms, "crowd", b, W.now), PK_OK);
    }
    CHECK_EQ_INT(pk_kms_group_add(W.kms, "crowd", "dev-e", W.now), PK_OK);
    uint8_t k[16];
    memset(k, dev_key_byte(E), sizeof k);
    pk_reg_dev_clear(&W.dev[E]);
    pk_reg_dev_cfg_t dc = {.dev_id = id_of("dev-e"),
                           .node_id = id_of("node-1"),
                           .k = k,
                           .klen = 16,
                           .rto_ms = 1000,
                           .max_tries = 3,
                           .keys = store,
                           .nkeys = 64};
    CHECK_EQ_INT(pk_reg_dev_init(&W.dev[E], &dc), PK_OK);
    W.kms_drop_pages = 1; /* hold the first page request */
    start(E);
    run();
    CHECK_EQ_INT(W.dev[E].state, PK_REG_D_WAIT_KEYS);
    CHECK_EQ_INT(pk_kms_device_remove(W.kms, "dev-e", W.now), PK_OK);
    pk_node_kms_down(W.node[0]);
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_node_kms_up(W.node[0], W.now, &o), 0);
    node_actions(0, &o);
    run(); /* KMS_ERR(UNKNOWN): nothing for the device */
    CHECK_EQ_INT(pk_node_kms_pending(W.node[0]), 0);
    CHECK_EQ_INT(pk_node_stats(W.node[0])->key_pages_sent, 0);
    unsigned asked = 0;
    for (int t = 0; t < 8 && W.dev[E].state == PK_REG_D_WAIT_KEYS; t++) {
        pk_out_reset(&o);
        CHECK_EQ_INT(pk_reg_dev_timeout(&W.dev[E], pk_reg_dev_next_deadline(&W.dev[E]), &o), PK_OK);
        dev_actions(E, &o);
        run();
        asked++;
    }
    CHECK_EQ_INT(W.dev[E].state, PK_REG_D_FAILED);
    CHECK_EQ_INT(W.dev_events[E][PK_REG_EV_FAILED], 1);
    CHECK_EQ_INT(drops(0, PK_REG_DROP_DUP), 0);                 /* every repeat reached the kms */
    CHECK_EQ_INT(pk_node_stats(W.node[0])->key_pages_asked, 3); /* max_tries sends */
    CHECK_EQ_INT(asked, 3);
    CHECK_EQ_INT(store[0].ksi, 0); /* wiped */
    world_free();
}

int main(void)
{
    if (pk_crypto_init() != PK_OK)
        return 1;
    RUN(test_register);
    RUN(test_retransmitted_request);
    RUN(test_option2_cross_node);
    RUN(test_option2_local);
    RUN(test_denied);
    RUN(test_unregistered_cannot_link);
    RUN(test_unknown_device_and_bad_res);
    RUN(test_garbage);
    RUN(test_kms_out_of_step);
    RUN(test_kms_down_and_back);
    RUN(test_context_eviction);
    RUN(test_link_limits);
    RUN(test_mk_refresh_and_push);
    RUN(test_paged_keys);
    RUN(test_paged_keys_refused);
    return check_report();
}
