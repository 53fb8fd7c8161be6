/*
 * Paged key sets (DESIGN 3.2 option 1: a device is handed the root key of
 * EVERY allowed peer): the ACCEPT carries the first page, then the device
 * fetches the rest with KEYS_REQ / KEYS records over its protected channel.
 *
 * The node side is played by the test on the node's channel (the one
 * pk_reg_node_accept set up): it opens each KEYS_REQ and answers with a page
 * cut from a model key set that the test can change between pages, and it
 * can lose, duplicate or delay records. The device core is the real one, with
 * a caller-owned key store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "harness.h"

#define NODE   "node-1"
#define SETMAX 1100

/* ---- the model kms key set: peers in ascending (block8) order ---- */
typedef struct mset {
    unsigned n;
    uint64_t version; /* the tag: changes with every change of the set */
    pk_reg_id_t peer[SETMAX];
    uint32_t ksi[SETMAX];
    uint8_t key[SETMAX][PK_REG_ROOT_KEY_LEN];
} mset_t;

static void mset_key(mset_t *m, unsigned i, uint32_t ksi)
{
    m->ksi[i] = ksi;
    for (unsigned j = 0; j < PK_REG_ROOT_KEY_LEN; j++)
        m->key[i][j] = (uint8_t)(ksi * 7 + j);
}

/* n peers "p-0001".. (equal lengths: block8 order is numeric order). */
static void mset_init(mset_t *m, unsigned n)
{
    memset(m, 0, sizeof *m);
    for (unsigned i = 0; i < n; i++) {
        char b[16];
        snprintf(b, sizeof b, "p-%04u", 2 * (i + 1)); /* even numbers: room to insert */
        m->peer[i] = h_id(b);
        mset_key(m, i, 0x1000 + i);
    }
    m->n = n;
    m->version = 1;
}

/* Inserts peer "p-NNNN" in order. */
static void mset_add(mset_t *m, unsigned num, uint32_t ksi)
{
    char b[16];
    snprintf(b, sizeof b, "p-%04u", num);
    pk_reg_id_t id = h_id(b);
    unsigned at = 0;
    while (at < m->n && pk_reg_id_cmp(&m->peer[at], &id) < 0)
        at++;
    memmove(&m->peer[at + 1], &m->peer[at], (m->n - at) * sizeof m->peer[0]);
    memmove(&m->ksi[at + 1], &m->ksi[at], (m->n - at) * sizeof m->ksi[0]);
    memmove(&m->key[at + 1], &m->key[at], (m->n - at) * sizeof m->key[0]);
    m->peer[at] = id;
    mset_key(m, at, ksi);
    m->n++;
    m->version++;
}

static void mset_del(mset_t *m, unsigned at)
{
    memmove(&m->peer[at], &m->peer[at + 1], (m->n - at - 1) * sizeof m->peer[0]);
    memmove(&m->ksi[at], &m->ksi[at + 1], (m->n - at - 1) * sizeof m->ksi[0]);
    memmove(&m->key[at], &m->key[at + 1], (m->n - at - 1) * sizeof m->key[0]);
    m->n--;
    m->version++;
}

/* The page after cursor `after`, as the kms cuts it. */
static void mset_page(const mset_t *m, const pk_reg_id_t *after, pk_reg_keyset_t *p)
{
    memset(p, 0, sizeof *p);
    p->mode = PK_REG_MODE_PAIRS;
    p->paged = 1;
    p->total = (uint16_t)m->n;
    for (unsigned i = 0; i < 8; i++)
        p->tag[i] = (uint8_t)(m->version >> (56 - 8 * i));
    for (unsigned i = 0; i < m->n; i++) {
        if (pk_reg_id_cmp(&m->peer[i], after) <= 0)
            continue;
        if (p->n == PK_REG_MAX_KEYS) {
            p->more = 1;
            break;
        }
        pk_reg_key_t *k = &p->k[p->n++];
        k->ksi = m->ksi[i];
        memcpy(k->key, m->key[i], PK_REG_ROOT_KEY_LEN);
        k->peer = m->peer[i];
    }
}

/* ---- the world ---- */
static h_world_t w;
static mset_t ms;
static pk_reg_key_t store[SETMAX];
static pk_reg_dev_t d;
static unsigned di; /* the device's index in the toy kms */

static void dev_init(pk_reg_key_t *st, size_t cap)
{
    uint8_t k[16];
    memset(k, 0xD1, sizeof k);
    pk_reg_dev_cfg_t cfg = {.dev_id = h_id("dev-big"),
                            .node_id = h_id(NODE),
                            .k = k,
                            .klen = 16,
                            .rto_ms = 100,
                            .max_tries = 4,
                            .keys = st,
                            .nkeys = cap};
    CHECK_EQ_INT(pk_reg_dev_init(&d, &cfg), PK_OK);
}

/* A world whose kms has the device and the model set's first page. */
static void world_init(unsigned npeers, pk_reg_key_t *st, size_t cap)
{
    h_world_init(&w, NODE, 8);
    di = h_kms_add(&w.kms, "dev-big", 0xD1);
    mset_init(&ms, npeers);
    pk_reg_id_t none;
    memset(&none, 0, sizeof none);
    mset_page(&ms, &none, &w.kms.keys[di]);
    memset(store, 0, sizeof store);
    dev_init(st, cap);
}

static void world_clear(void)
{
    pk_reg_dev_clear(&d);
    h_world_clear(&w);
}

static pk_act_t *last_send(pk_out_t *o)
{
    pk_act_t *s = NULL;
    for (unsigned i = 0; i < o->n; i++)
        if (o->act[i].kind == PK_ACT_SEND)
            s = &o->act[i];
    return s;
}

static int event_dest(pk_out_t *o, uint16_t code, uint64_t *dest)
{
    for (unsigned i = 0; i < o->n; i++)
        if (o->act[i].kind == PK_ACT_EVENT && o->act[i].code == code) {
            if (dest)
                *dest = o->act[i].dest;
            return 1;
        }
    return 0;
}

/* REQUEST .. ACCEPT through the registration core; od then holds what the
 * device did with the accept (a KEYS_REQ, or the REGISTERED event). */
static int to_accept(pk_out_t *od, uint64_t now)
{
    static uint8_t a2[8192];
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 7);
    pk_out_t on;
    pk_out_init(&on, a2, sizeof a2);
    pk_out_reset(od);
    if (pk_reg_dev_start(&d, &rng, now, od) != PK_OK)
        return PK_ERR_STATE;
    for (int step = 0; step < 2; step++) {
        pk_act_t *s = last_send(od);
        if (!s)
            return PK_ERR_STATE;
        pk_out_reset(&on);
        int rc = pk_reg_node_input(&w.node, 5, s->data, s->len, now, &on);
        if (rc != PK_OK)
            return rc;
        h_node_service(&w, &on, now);
        pk_act_t *r = last_send(&on);
        if (!r)
            return PK_ERR_STATE;
        pk_out_reset(od);
        if ((rc = pk_reg_dev_input(&d, r->data, r->len, now, od)) != PK_OK)
            return rc;
    }
    return PK_OK;
}

/* The node: opens the device's KEYS_REQ on its channel and seals the page
 * after its cursor from the model set into out[0..*olen). */
static int node_answer(const pk_act_t *req, uint8_t *out, size_t *olen)
{
    static pk_reg_keyset_t page;
    pk_reg_id_t after;
    int rc = pk_reg_chan_open_keys_req(&w.node_chan[di], req->data, req->len, &after);
    if (rc != PK_OK)
        return rc;
    mset_page(&ms, &after, &page);
    rc = pk_reg_chan_seal_keys(&w.node_chan[di], &after, &page, out, PK_REG_KEYS_MAX, olen);
    pk_wipe(&page, sizeof page);
    return rc;
}

typedef struct run_opts {
    unsigned drop_req_every;  /* lose every n-th KEYS_REQ (0: none) */
    unsigned drop_keys_every; /* lose every n-th KEYS */
    unsigned dup_every;       /* deliver every n-th KEYS twice */
    int change_at_page;       /* change the model set before answering this page (-1) */
    int change_every_page;    /* change it before every page */
} run_opts_t;

typedef struct run_stats {
    unsigned reqs, pages, timeouts, replays, restarts_seen;
    uint64_t missing; /* REGISTERED event's dest */
    int registered, failed;
} run_stats_t;

/* Carries KEYS_REQ / KEYS between the device and the node until the device
 * leaves WAIT_KEYS (bounded); od holds the device's last output. */
static void run_paging(pk_out_t *od, uint64_t now, const run_opts_t *o, run_stats_t *st)
{
    static uint8_t rec[PK_REG_KEYS_MAX];
    memset(st, 0, sizeof *st);
    for (unsigned guard = 0; guard < 4000 && d.state == PK_REG_D_WAIT_KEYS; guard++) {
        pk_act_t *s = last_send(od);
        int delivered = 0;
        if (s && s->code == PK_REG_T_KEYS_REQ) {
            st->reqs++;
            if (!(o->drop_req_every && st->reqs % o->drop_req_every == 0)) {
                size_t len = 0;
                if (o->change_every_page || (int)st->pages == o->change_at_page)
                    mset_add(&ms, 1 + 2 * (st->pages % 500), 0x8000 + st->pages);
                CHECK_EQ_INT(node_answer(s, rec, &len), PK_OK);
                st->pages++;
                if (!(o->drop_keys_every && st->pages % o->drop_keys_every == 0)) {
                    uint8_t restarts = d.restarts;
                    pk_out_reset(od);
                    CHECK_EQ_INT(pk_reg_dev_input(&d, rec, len, now, od), PK_OK);
                    st->restarts_seen += d.restarts > restarts;
                    delivered = 1;
                    if (o->dup_every && st->pages % o->dup_every == 0 &&
                        d.state == PK_REG_D_WAIT_KEYS) {
                        /* the same record again: the replay window refuses it,
                         * nothing changes, nothing is sent */
                        static uint8_t a[8192];
                        pk_out_t o2;
                        pk_out_init(&o2, a, sizeof a);
                        CHECK_EQ_INT(pk_reg_dev_input(&d, rec, len, now, &o2), PK_ERR_REPLAY);
                        CHECK_EQ_INT(o2.n, 0);
                        st->replays++;
                    }
                }
            }
        }
        if (!delivered) { /* nothing came back: the device's timer */
            now = pk_reg_dev_next_deadline(&d);
            CHECK(now != UINT64_MAX);
            pk_out_reset(od);
            CHECK_EQ_INT(pk_reg_dev_timeout(&d, now, od), PK_OK);
            st->timeouts++;
        }
    }
    st->registered = event_dest(od, PK_REG_EV_REGISTERED, &st->missing);
    st->failed = event_dest(od, PK_REG_EV_FAILED, NULL);
}

/* The device's table equals the model set (order, KSIs, keys, peers). */
static int table_is_model(void)
{
    size_t n = 0;
    const pk_reg_key_t *t = pk_reg_dev_keys(&d, &n);
    if (n != ms.n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (t[i].ksi != ms.ksi[i] || !pk_reg_id_eq(&t[i].peer, &ms.peer[i]) ||
            memcmp(t[i].key, ms.key[i], PK_REG_ROOT_KEY_LEN) != 0)
            return 0;
    return 1;
}

/* ---- tests ---- */

static void test_codec(void)
{
    static pk_reg_keyset_t p, q;
    uint8_t buf[PK_REG_KEYS_PT_MAX];
    size_t len = 0;
    pk_reg_id_t none, after, a2;
    memset(&none, 0, sizeof none);
    mset_init(&ms, 40);
    mset_page(&ms, &none, &p);
    CHECK_EQ_INT(p.n, 32);
    CHECK_EQ_INT(p.more, 1);
    /* KEYS plaintext round trip */
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&none, &p, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(len, 1 + 2 + 32 * (4 + 32 + 1 + 6) + PK_REG_PAGE_LEN);
    CHECK_EQ_INT(buf[1], PK_REG_MODE_PAIRS | PK_REG_MODE_PAGED);
    CHECK_EQ_INT(pk_reg_keys_pt_decode(buf, len, &after, &q), PK_OK);
    CHECK_EQ_INT(after.len, 0);
    CHECK_EQ_INT(q.total, 40);
    CHECK_EQ_INT(q.more, 1);
    CHECK_MEM(q.k[31].key, p.k[31].key, 32);
    /* every truncation and an extra byte are refused */
    for (size_t l = 0; l < len; l++)
        CHECK(pk_reg_keys_pt_decode(buf, l, &after, &q) != PK_OK);
    buf[len] = 0;
    CHECK(pk_reg_keys_pt_decode(buf, len + 1, &after, &q) != PK_OK);
    /* a page whose first entry does not sort after the cursor */
    a2 = p.k[0].peer;
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&a2, &p, buf, sizeof buf, &len), PK_ERR_INVAL);
    /* entries out of order, more with no entries, total below the count,
     * an unpaged set, a pool page with more: refused on both sides */
    q = p;
    q.k[3].peer = p.k[2].peer;
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&none, &q, buf, sizeof buf, &len), PK_ERR_INVAL);
    q = p;
    q.n = 0;
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&none, &q, buf, sizeof buf, &len), PK_ERR_INVAL);
    q = p;
    q.total = 31;
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&none, &q, buf, sizeof buf, &len), PK_ERR_INVAL);
    q = p;
    q.paged = 0;
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&none, &q, buf, sizeof buf, &len), PK_ERR_INVAL);
    q = p;
    q.total = PK_REG_PEERS_MAX + 1;
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&none, &q, buf, sizeof buf, &len), PK_ERR_INVAL);
    /* the same refusals at the decoder: hand-made bytes */
    CHECK_EQ_INT(pk_reg_keys_pt_encode(&none, &p, buf, sizeof buf, &len), PK_OK);
    size_t e1 = 1 + 2 + 43; /* the second entry's KSI */
    uint8_t save[43];
    memcpy(save, buf + 3, 43);
    memcpy(buf + 3, buf + e1, 43); /* entry 0 := entry 1: a duplicate peer */
    CHECK_EQ_INT(pk_reg_keys_pt_decode(buf, len, &after, &q), PK_ERR_MALFORMED);
    memcpy(buf + 3, save, 43);
    buf[len - PK_REG_PAGE_LEN + 2] = 2; /* more = 2 */
    CHECK_EQ_INT(pk_reg_keys_pt_decode(buf, len, &after, &q), PK_ERR_MALFORMED);
    buf[len - PK_REG_PAGE_LEN + 2] = 1;
    buf[len - PK_REG_PAGE_LEN] = 0;
    buf[len - PK_REG_PAGE_LEN + 1] = 31; /* total 31 < 32 entries */
    CHECK_EQ_INT(pk_reg_keys_pt_decode(buf, len, &after, &q), PK_ERR_MALFORMED);
    CHECK(q.n == 0 && q.k[0].ksi == 0); /* wiped */
    /* KEYS_REQ plaintext */
    CHECK_EQ_INT(pk_reg_keys_req_pt_encode(&a2, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(len, 1 + a2.len);
    CHECK_EQ_INT(pk_reg_keys_req_pt_decode(buf, len, &after), PK_OK);
    CHECK(pk_reg_id_eq(&after, &a2));
    CHECK_EQ_INT(pk_reg_keys_req_pt_decode(buf, len - 1, &after), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_reg_keys_req_pt_decode(buf, 0, &after), PK_ERR_MALFORMED);
    buf[1] = 0; /* a NUL in the cursor: not an id */
    CHECK_EQ_INT(pk_reg_keys_req_pt_decode(buf, len, &after), PK_ERR_MALFORMED);
    /* the kms frame: an old KEYS_REQ (no cursor) and a paged one */
    pk_reg_net_t m, m2;
    memset(&m, 0, sizeof m);
    m.type = PK_REG_T_KMS_KEYS_REQ;
    m.a = h_id("dev-a");
    CHECK_EQ_INT(pk_reg_net_encode(&m, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(len, 7);
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_OK);
    CHECK_EQ_INT(m2.paged, 0);
    m.paged = 1;
    CHECK_EQ_INT(pk_reg_net_encode(&m, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(len, 8);
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_OK);
    CHECK(m2.paged == 1 && m2.after.len == 0);
    m.after = a2;
    CHECK_EQ_INT(pk_reg_net_encode(&m, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_OK);
    CHECK(m2.paged == 1 && pk_reg_id_eq(&m2.after, &a2));
    buf[len++] = 0; /* a trailing byte after the cursor */
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_ERR_MALFORMED);
    pk_wipe(&p, sizeof p);
    pk_wipe(&q, sizeof q);
}

/* Every key of n allowed peers, in pages, into a store of cap. */
static void pages_of(unsigned n)
{
    static uint8_t a[8192];
    pk_out_t od;
    run_opts_t o = {.change_at_page = -1};
    run_stats_t st;
    pk_out_init(&od, a, sizeof a);
    world_init(n, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    CHECK_EQ_INT(d.state, PK_REG_D_WAIT_KEYS);
    CHECK(!event_dest(&od, PK_REG_EV_REGISTERED, NULL)); /* not before every key is in */
    run_paging(&od, 100, &o, &st);
    CHECK(st.registered);
    CHECK_EQ_INT(st.missing, 0);
    CHECK_EQ_INT(d.state, PK_REG_D_REGISTERED);
    CHECK_EQ_INT(st.pages, (n + 31) / 32 - 1); /* the accept held the first */
    CHECK_EQ_INT(st.timeouts, 0);
    CHECK(table_is_model());
    CHECK_EQ_INT(pk_reg_dev_keys_missing(&d), 0);
    CHECK_EQ_INT(pk_reg_dev_next_deadline(&d), UINT64_MAX);
    /* the link lookups find the last peer's key */
    uint32_t ksi = 0;
    uint8_t kd[32];
    CHECK_EQ_INT(pk_reg_dev_pair_ksi(&d, &ms.peer[n - 1], &ksi), PK_OK);
    CHECK_EQ_INT(ksi, ms.ksi[n - 1]);
    CHECK_EQ_INT(pk_reg_dev_lookup(&d, ksi, ms.peer[n - 1].b, ms.peer[n - 1].len, kd), PK_OK);
    CHECK_MEM(kd, ms.key[n - 1], 32);
    /* a KEYS after the end: refused, nothing changes */
    uint8_t late[PK_REG_KEYS_MIN] = {PK_REG_T_KEYS};
    pk_out_reset(&od);
    CHECK_EQ_INT(pk_reg_dev_input(&d, late, sizeof late, 100, &od), PK_ERR_STATE);
    CHECK_EQ_INT(od.n, 0);
    world_clear();
    CHECK(store[0].ksi == 0 && store[n - 1].ksi == 0); /* the store is wiped */
}

static void test_pages_100(void)
{
    pages_of(100);
}

static void test_pages_300(void)
{
    pages_of(300);
}

/* A set that fits one accept goes out as before paging: no KEYS_REQ. */
static void test_one_page(void)
{
    static uint8_t a[8192];
    pk_out_t od;
    pk_out_init(&od, a, sizeof a);
    world_init(32, store, SETMAX);
    w.kms.keys[di].paged = 0; /* what the node makes of a last first page */
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    CHECK_EQ_INT(d.state, PK_REG_D_REGISTERED);
    CHECK(event_dest(&od, PK_REG_EV_REGISTERED, NULL));
    CHECK(last_send(&od) == NULL);
    CHECK(table_is_model());
    world_clear();
}

/* A paged accept that says it is the last page must hold the whole set. */
static void test_accept_total(void)
{
    static uint8_t a[8192];
    pk_out_t od;
    pk_out_init(&od, a, sizeof a);
    world_init(40, store, SETMAX);
    w.kms.keys[di].more = 0; /* 32 of 40 keys, "no more" */
    CHECK_EQ_INT(to_accept(&od, 100), PK_ERR_MALFORMED);
    CHECK_EQ_INT(d.state, PK_REG_D_WAIT_ACCEPT); /* unchanged: it retransmits, then fails */
    CHECK_EQ_INT(store[0].ksi, 0);
    world_clear();
}

/* Lost KEYS_REQs and KEYS records, duplicates: the device's timer asks
 * again (a new record each time) and every key arrives exactly once. */
static void test_loss(void)
{
    static uint8_t a[8192];
    pk_out_t od;
    run_opts_t o = {
        .drop_req_every = 5, .drop_keys_every = 3, .dup_every = 4, .change_at_page = -1};
    run_stats_t st;
    pk_out_init(&od, a, sizeof a);
    world_init(300, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    run_paging(&od, 100, &o, &st);
    CHECK(st.registered);
    CHECK(st.timeouts >= 3);
    CHECK(st.replays >= 1);
    CHECK(table_is_model());
    world_clear();

    /* a late answer to an earlier cursor (its request was answered twice):
     * authentic, but refused with no change to the table */
    static uint8_t old[PK_REG_KEYS_MAX], cur[PK_REG_KEYS_MAX];
    size_t ol = 0, cl = 0;
    world_init(100, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    pk_act_t *req = last_send(&od);
    CHECK(req != NULL);
    CHECK_EQ_INT(node_answer(req, old, &ol), PK_OK);
    pk_out_reset(&od);
    CHECK_EQ_INT(pk_reg_dev_timeout(&d, pk_reg_dev_next_deadline(&d), &od), PK_OK);
    req = last_send(&od); /* the retransmitted KEYS_REQ: a new record, same cursor */
    CHECK(req != NULL);
    CHECK_EQ_INT(node_answer(req, cur, &cl), PK_OK);
    pk_out_reset(&od);
    CHECK_EQ_INT(pk_reg_dev_input(&d, cur, cl, 100, &od), PK_OK); /* page 2 taken */
    size_t n2 = 0;
    (void)pk_reg_dev_keys(&d, &n2);
    CHECK_EQ_INT(n2, 64);
    pk_out_reset(&od);
    CHECK_EQ_INT(pk_reg_dev_input(&d, old, ol, 100, &od), PK_ERR_STATE); /* for the old cursor */
    CHECK_EQ_INT(od.n, 0);
    (void)pk_reg_dev_keys(&d, &n2);
    CHECK_EQ_INT(n2, 64);
    world_clear();
}

/* A store smaller than the set: the lowest peers are kept, the rest counted
 * (the event's dest, pk_reg_dev_keys_missing), and no page is fetched that
 * could not be stored. */
static void test_small_store(void)
{
    static uint8_t a[8192];
    static pk_reg_key_t small[50 + 1];
    pk_out_t od;
    run_opts_t o = {.change_at_page = -1};
    run_stats_t st;
    pk_out_init(&od, a, sizeof a);
    memset(small, 0, sizeof small);
    world_init(100, small, 50);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    run_paging(&od, 100, &o, &st);
    CHECK(st.registered);
    CHECK_EQ_INT(st.missing, 50);
    CHECK_EQ_INT(st.pages, 1); /* 32 + 18 of the second page: no third request */
    CHECK_EQ_INT(pk_reg_dev_keys_missing(&d), 50);
    size_t n = 0;
    const pk_reg_key_t *t = pk_reg_dev_keys(&d, &n);
    CHECK_EQ_INT(n, 50);
    CHECK(pk_reg_id_eq(&t[49].peer, &ms.peer[49]));
    CHECK_EQ_INT(small[50].ksi, 0); /* nothing past the capacity */
    world_clear();

    /* no store given: the 32 entries inside pk_reg_dev_t, as before paging */
    world_init(100, NULL, 0);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    CHECK_EQ_INT(d.state, PK_REG_D_REGISTERED);
    uint64_t miss = 0;
    CHECK(event_dest(&od, PK_REG_EV_REGISTERED, &miss));
    CHECK_EQ_INT(miss, 68);
    CHECK(last_send(&od) == NULL);
    CHECK_EQ_INT(d.keys.n, 32);
    world_clear();

    /* a store of 0 entries is refused */
    uint8_t k[16] = {0};
    pk_reg_dev_cfg_t cfg = {.dev_id = h_id("x"),
                            .node_id = h_id(NODE),
                            .k = k,
                            .klen = 16,
                            .rto_ms = 1,
                            .max_tries = 1,
                            .keys = small,
                            .nkeys = 0};
    CHECK_EQ_INT(pk_reg_dev_init(&d, &cfg), PK_ERR_INVAL);
}

/* The kms's set changes between pages: the device starts again from the
 * start and ends with the new set, whole - no duplicate, no gap. */
static void test_set_change(void)
{
    static uint8_t a[8192];
    pk_out_t od;
    run_opts_t o = {.change_at_page = 2};
    run_stats_t st;
    pk_out_init(&od, a, sizeof a);
    world_init(150, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    run_paging(&od, 100, &o, &st);
    CHECK(st.registered);
    CHECK_EQ_INT(st.restarts_seen, 1);
    CHECK_EQ_INT(ms.n, 151); /* "p-0005" went in before the cursor */
    CHECK(table_is_model());
    world_clear();

    /* a removal */
    world_init(150, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    run_opts_t o2 = {.change_at_page = -1};
    /* first page fetched, then a peer on the first page goes */
    pk_act_t *req = last_send(&od);
    static uint8_t rec[PK_REG_KEYS_MAX];
    size_t len = 0;
    CHECK_EQ_INT(node_answer(req, rec, &len), PK_OK);
    pk_out_reset(&od);
    CHECK_EQ_INT(pk_reg_dev_input(&d, rec, len, 100, &od), PK_OK);
    mset_del(&ms, 3);
    run_paging(&od, 100, &o2, &st);
    CHECK(st.registered);
    CHECK_EQ_INT(st.restarts_seen, 1);
    CHECK(table_is_model());
    world_clear();

    /* a set that never holds still: bounded, then FAILED and wiped */
    run_opts_t o3 = {.change_every_page = 1};
    world_init(150, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    run_paging(&od, 100, &o3, &st);
    CHECK(st.failed);
    CHECK_EQ_INT(d.state, PK_REG_D_FAILED);
    CHECK_EQ_INT(st.restarts_seen, PK_REG_KEYS_RESTARTS);
    size_t n = 1;
    (void)pk_reg_dev_keys(&d, &n);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(store[0].ksi, 0);
    world_clear();
}

/* No answer at all: max_tries KEYS_REQs, then FAILED, the store wiped. */
static void test_gives_up(void)
{
    static uint8_t a[8192];
    pk_out_t od;
    run_opts_t o = {.drop_req_every = 1, .change_at_page = -1};
    run_stats_t st;
    pk_out_init(&od, a, sizeof a);
    world_init(100, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    run_paging(&od, 100, &o, &st);
    CHECK(st.failed);
    CHECK_EQ_INT(st.reqs, 4); /* max_tries */
    CHECK_EQ_INT(d.state, PK_REG_D_FAILED);
    CHECK_EQ_INT(store[0].ksi, 0);
    CHECK_EQ_INT(store[31].ksi, 0);
    /* a new registration is allowed after FAILED; not during WAIT_KEYS */
    world_clear();
    world_init(100, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 9);
    CHECK_EQ_INT(pk_reg_dev_start(&d, &rng, 100, &od), PK_ERR_STATE);
    world_clear();
}

/* Hostile or misplaced datagrams in WAIT_KEYS change nothing. */
static void test_hostile(void)
{
    static uint8_t a[8192], rec[PK_REG_KEYS_MAX], bad[PK_REG_KEYS_MAX + 8];
    static pk_reg_dev_t snap;
    static pk_reg_key_t snapstore[64];
    pk_out_t od;
    size_t len = 0;
    pk_out_init(&od, a, sizeof a);
    world_init(100, store, SETMAX);
    CHECK_EQ_INT(to_accept(&od, 100), PK_OK);
    pk_act_t *req = last_send(&od);
    CHECK_EQ_INT(node_answer(req, rec, &len), PK_OK);
    snap = d;
    memcpy(snapstore, store, sizeof snapstore);
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 3);
    for (unsigned i = 0; i < 2000; i++) {
        size_t bl = len;
        memcpy(bad, rec, len);
        switch (i % 4) {
        case 0: bad[12 + (i / 4) % (len - 12)] ^= (uint8_t)(1 + i % 255); break; /* tampered */
        case 1: bl = (i / 4) % len; break;                                       /* truncated */
        case 2:
            bad[len] = 0;
            bl = len + 1;
            break; /* extended */
        default:
            pk_rng_fill(&rng, bad, sizeof bad); /* random, typed KEYS */
            bad[0] = PK_REG_T_KEYS;
            bl = 1 + (i % sizeof bad);
        }
        pk_out_reset(&od);
        CHECK(pk_reg_dev_input(&d, bad, bl, 100, &od) != PK_OK);
        CHECK_EQ_INT(od.n, 0);
    }
    CHECK(memcmp(&snap, &d, sizeof d) == 0);
    CHECK(memcmp(snapstore, store, sizeof snapstore) == 0);
    /* the real one still works */
    pk_out_reset(&od);
    CHECK_EQ_INT(pk_reg_dev_input(&d, rec, len, 100, &od), PK_OK);
    world_clear();
    pk_wipe(&snap, sizeof snap);
}

int main(void)
{
    pk_crypto_init();
    RUN(test_codec);
    RUN(test_pages_100);
    RUN(test_pages_300);
    RUN(test_one_page);
    RUN(test_accept_total);
    RUN(test_loss);
    RUN(test_small_store);
    RUN(test_set_change);
    RUN(test_gives_up);
    RUN(test_hostile);
    return check_report();
}
