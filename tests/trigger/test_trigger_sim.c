/*
 * 10,000 devices poll one trigger server through a simulated network with
 * 30 % loss in each direction, 10 % duplication and random delays
 * (reordering), on a virtual clock with a seeded RNG. The server crashes at
 * random moments (before its PERSIST is durable, or after it but before the
 * response leaves) and restarts from the durable records.
 *
 * Asserted: every queued command reaches its device exactly once and in
 * order; the server reports each delivered exactly once; after the run
 * every device still completes a clean exchange (no lockout); hostile
 * datagrams injected along the way change nothing.
 *
 * Usage: test_trigger_sim [seed] [devices]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/codec.h"
#include "core/err.h"
#include "core/out.h"
#include "proto/trigger/dev.h"
#include "proto/trigger/srv.h"
#include "sim.h"

enum { EV_POLL = 1, EV_RESP = 2, EV_TIMER = 3, EV_QUEUE = 4 };
enum { NCMD = 3, LOSS = 30, DUP = 10, MAX_CRASHES = 25 };

typedef struct durable {
    uint8_t rec[PK_TRIG_REC_LEN];
    uint8_t deleted[NCMD + 1]; /* cmd seq 1..NCMD deleted (delivered) */
    uint8_t queued[NCMD + 1];
} durable_t;

typedef struct world {
    sim_rng_t net, srv_rs;
    pk_rng_t srv_rng;
    sim_heap_t q;
    pk_trig_srv_t *srv;
    uint32_t n;
    pk_trig_dev_t *dev;
    durable_t *store;
    uint8_t *recv_next; /* device side: next expected APP seq */
    uint8_t *srv_deliv; /* server side: DELIVERED events applied, per seq bit */
    uint64_t dup_recv, dup_deliv, out_of_order, crashes, lost_polls, lost_resps;
    uint64_t polls, resps, denied, malformed;
    uint8_t arena[8192];
} world_t;

static void net_send(world_t *w, uint64_t now, int kind, uint32_t dev, const uint8_t *p, size_t len)
{
    int copies = 1 + sim_pct(&w->net, DUP);
    for (int c = 0; c < copies; c++) {
        if (sim_pct(&w->net, LOSS)) {
            if (kind == EV_POLL)
                w->lost_polls++;
            else
                w->lost_resps++;
            continue;
        }
        sim_push(&w->q, now + 1 + sim_below(&w->net, 300), kind, dev, p, len);
    }
}

static void cmd_payload(uint32_t dev, unsigned seq, uint8_t *buf, size_t *len)
{
    *len = (size_t)snprintf((char *)buf, 32, "d%u:c%u", dev, seq);
}

static int srv_rebuild(world_t *w)
{
    pk_trig_srv_free(w->srv);
    w->srv = NULL;
    if (pk_trig_srv_new(&w->srv, &w->srv_rng, w->n) != PK_OK)
        return -1;
    for (uint32_t i = 0; i < w->n; i++)
        if (pk_trig_srv_load(w->srv, i, w->store[i].rec, PK_TRIG_REC_LEN) != PK_OK)
            return -1;
    for (uint32_t i = 0; i < w->n; i++)
        for (unsigned s = 1; s <= NCMD; s++)
            if (w->store[i].queued[s] && !w->store[i].deleted[s]) {
                uint8_t p[32];
                size_t l;
                cmd_payload(i, s, p, &l);
                if (pk_trig_srv_queue(w->srv, i, s, PK_TRIG_CMD_APP, p, l) != PK_OK)
                    return -1;
            }
    return 0;
}

static void queue_cmd(world_t *w, uint32_t dev, unsigned seq)
{
    uint8_t p[32];
    size_t l;
    cmd_payload(dev, seq, p, &l);
    w->store[dev].queued[seq] = 1; /* durable first, like `gts send` */
    if (pk_trig_srv_queue(w->srv, dev, seq, PK_TRIG_CMD_APP, p, l) != PK_OK)
        CHECK(0);
}

static void srv_poll(world_t *w, uint64_t now, uint32_t dev, const uint8_t *p, size_t len)
{
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    int rc = pk_trig_srv_input(w->srv, p, len, now, &out);
    if (rc != PK_OK) {
        /* stale identities (retired UID1s) and the injected junk */
        CHECK(rc == PK_ERR_DENIED || rc == PK_ERR_MALFORMED);
        CHECK_EQ_INT(out.n, 0);
        if (rc == PK_ERR_DENIED)
            w->denied++;
        else
            w->malformed++;
        return;
    }
    /* crash? 0: none, 1: before the persist is durable, 2: after, before send */
    int crash = 0;
    if (w->crashes < MAX_CRASHES && sim_below(&w->net, 4000) == 0)
        crash = 1 + (int)sim_below(&w->net, 2);
    if (crash == 1)
        goto crashed;
    for (unsigned i = 0; i < out.n; i++) {
        pk_act_t *a = &out.act[i];
        if (a->kind == PK_ACT_EVENT && a->code == PK_TRIG_EV_DELIVERED) {
            uint64_t seq = pk_get_u64(a->data);
            CHECK(seq >= 1 && seq <= NCMD);
            if (seq >= 1 && seq <= NCMD) {
                if (w->store[a->dest].deleted[seq])
                    w->dup_deliv++;
                w->store[a->dest].deleted[seq] = 1;
                w->srv_deliv[a->dest] |= (uint8_t)(1u << seq);
            }
        } else if (a->kind == PK_ACT_EVENT && a->code == PK_TRIG_EV_PERSIST) {
            memcpy(w->store[a->dest].rec, a->data, PK_TRIG_REC_LEN);
        }
    }
    if (crash == 2)
        goto crashed;
    for (unsigned i = 0; i < out.n; i++) {
        pk_act_t *a = &out.act[i];
        if (a->kind == PK_ACT_EVENT && a->code == PK_TRIG_EV_PERSIST)
            pk_trig_srv_persisted(w->srv, (uint32_t)a->dest);
    }
    for (unsigned i = 0; i < out.n; i++)
        if (out.act[i].kind == PK_ACT_SEND) {
            w->resps++;
            net_send(w, now, EV_RESP, dev, out.act[i].data, out.act[i].len);
        }
    return;
crashed:
    w->crashes++;
    if (srv_rebuild(w) != 0)
        CHECK(0);
}

static void dev_arm(world_t *w, uint32_t i)
{
    uint64_t t = pk_trig_dev_next_deadline(&w->dev[i]);
    if (t != UINT64_MAX)
        sim_push(&w->q, t, EV_TIMER, i, NULL, 0);
}

static void dev_timer(world_t *w, uint64_t now, uint32_t i)
{
    pk_trig_dev_t *d = &w->dev[i];
    uint8_t poll[PK_TRIG_POLL_LEN];
    if (pk_trig_dev_next_deadline(d) > now)
        return; /* stale timer */
    if (d->state == PK_TRIG_DEV_IDLE) {
        if (pk_trig_dev_poll(d, now, poll) == PK_OK) {
            w->polls++;
            net_send(w, now, EV_POLL, i, poll, sizeof poll);
        }
    } else if (d->state == PK_TRIG_DEV_WAIT) {
        int send = 0;
        (void)pk_trig_dev_timeout(d, now, poll, &send);
        if (send) {
            w->polls++;
            net_send(w, now, EV_POLL, i, poll, sizeof poll);
        }
    }
    dev_arm(w, i);
}

static void dev_resp(world_t *w, uint64_t now, uint32_t i, const uint8_t *p, size_t len)
{
    static pk_trig_dev_msg_t msg;
    pk_trig_dev_t *d = &w->dev[i];
    int rc = pk_trig_dev_input(d, p, len, now, &msg);
    if (rc != PK_OK)
        return; /* duplicates, stale responses: dropped */
    if (msg.cmd == PK_TRIG_CMD_APP) {
        uint8_t exp[32];
        size_t l;
        unsigned seq = w->recv_next[i];
        cmd_payload(i, seq, exp, &l);
        if (seq > NCMD || msg.arglen != l || memcmp(msg.arg, exp, l) != 0) {
            /* either a repeat of an earlier command or out of order */
            int repeat = 0;
            for (unsigned s = 1; s < seq; s++) {
                cmd_payload(i, s, exp, &l);
                if (msg.arglen == l && memcmp(msg.arg, exp, l) == 0)
                    repeat = 1;
            }
            if (repeat)
                w->dup_recv++;
            else
                w->out_of_order++;
        } else {
            w->recv_next[i]++;
        }
    }
    /* persist the new identity (durable in this model), then use it */
    CHECK_EQ_INT(pk_trig_dev_saved(d, now), PK_OK);
    dev_arm(w, i);
}

static void run(uint64_t seed, uint32_t n)
{
    static world_t w;
    memset(&w, 0, sizeof w);
    w.net.s = seed;
    w.srv_rs.s = seed ^ 0xabcdef;
    w.srv_rng = sim_pk_rng(&w.srv_rs);
    w.n = n;
    w.dev = calloc(n, sizeof *w.dev);
    w.store = calloc(n, sizeof *w.store);
    w.recv_next = calloc(n, 1);
    w.srv_deliv = calloc(n, 1);
    if (!w.dev || !w.store || !w.recv_next || !w.srv_deliv)
        abort();
    CHECK_EQ_INT(pk_trig_srv_new(&w.srv, &w.srv_rng, n), PK_OK);
    pk_trig_dev_cfg_t cfg = {500, 6, 1, 3600};
    for (uint32_t i = 0; i < n; i++) {
        uint8_t k[16], u[16];
        sim_rng_fill(&w.net, k, 16);
        sim_rng_fill(&w.net, u, 16);
        CHECK_EQ_INT(pk_trig_srv_add(w.srv, i, k, u, (i % 4 == 0) ? PK_TRIG_DEV_ROTATE : 0), PK_OK);
        CHECK_EQ_INT(pk_trig_srv_record(w.srv, i, w.store[i].rec), PK_OK);
        /* devices wake up spread over the first 10 s, poll every 10 s */
        CHECK_EQ_INT(pk_trig_dev_init(&w.dev[i], &cfg, k, u, 10, sim_below(&w.net, 10000)), PK_OK);
        w.recv_next[i] = 1;
        queue_cmd(&w, i, 1);
        queue_cmd(&w, i, 2);
        dev_arm(&w, i);
        sim_push(&w.q, 15000 + sim_below(&w.net, 20000), EV_QUEUE, i, NULL, 0);
    }
    /* hostile traffic: random and truncated polls */
    for (int h = 0; h < 2000; h++) {
        uint8_t junk[PK_TRIG_POLL_LEN + 4];
        sim_rng_fill(&w.net, junk, sizeof junk);
        junk[0] = 1;
        junk[1] = 1;
        junk[2] = 1;
        junk[3] = 0;
        sim_push(&w.q, sim_below(&w.net, 60000), EV_POLL, UINT32_MAX, junk,
                 h % 2 ? PK_TRIG_POLL_LEN : PK_TRIG_POLL_LEN - 1 + (size_t)(h % 5));
    }

    const uint64_t t_end = 80000; /* 80 virtual seconds */
    sim_ev_t e;
    uint64_t nev = 0;
    while (sim_pop(&w.q, &e)) {
        if (e.t > t_end) {
            free(e.data);
            break;
        }
        nev++;
        switch (e.kind) {
        case EV_POLL: srv_poll(&w, e.t, e.dev, e.data, e.len); break;
        case EV_RESP: dev_resp(&w, e.t, e.dev, e.data, e.len); break;
        case EV_TIMER: dev_timer(&w, e.t, e.dev); break;
        case EV_QUEUE: queue_cmd(&w, e.dev, 3); break;
        }
        free(e.data);
    }
    sim_heap_free(&w.q);

    /* Results. */
    uint32_t undelivered = 0, srv_missing = 0, locked = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (w.recv_next[i] != NCMD + 1)
            undelivered++;
        if (w.srv_deliv[i] != (uint8_t)(((1u << NCMD) - 1) << 1))
            srv_missing++;
    }
    /* No lockout: every device finishes a clean exchange now (it may first
     * have to finish the one in flight). */
    pk_trig_dev_msg_t msg;
    uint8_t arena2[8192];
    uint64_t now = t_end + 1000;
    for (uint32_t i = 0; i < n; i++) {
        pk_trig_dev_t *d = &w.dev[i];
        int ok = 0;
        for (int attempt = 0; attempt < 2 && !ok; attempt++) {
            uint8_t poll[PK_TRIG_POLL_LEN];
            int send = 1;
            if (d->state == PK_TRIG_DEV_SAVE)
                (void)pk_trig_dev_saved(d, now);
            if (d->state == PK_TRIG_DEV_WAIT) {
                d->deadline_ms = now; /* retransmit right away */
                (void)pk_trig_dev_timeout(d, now, poll, &send);
                if (!send)
                    continue;
            } else {
                if (pk_trig_dev_poll(d, now, poll) != PK_OK)
                    continue;
            }
            pk_out_t out;
            pk_out_init(&out, arena2, sizeof arena2);
            if (pk_trig_srv_input(w.srv, poll, sizeof poll, now, &out) != PK_OK)
                continue;
            for (unsigned a = 0; a < out.n; a++)
                if (out.act[a].kind == PK_ACT_SEND &&
                    pk_trig_dev_input(d, out.act[a].data, out.act[a].len, now, &msg) == PK_OK &&
                    pk_trig_dev_saved(d, now) == PK_OK)
                    ok = 1;
        }
        if (!ok)
            locked++;
    }
    printf("seed=%" PRIu64 " devices=%u events=%" PRIu64 " polls=%" PRIu64 " resps=%" PRIu64
           " lost_polls=%" PRIu64 " lost_resps=%" PRIu64 " crashes=%" PRIu64 " denied=%" PRIu64
           " malformed=%" PRIu64 "\n",
           seed, n, nev, w.polls, w.resps, w.lost_polls, w.lost_resps, w.crashes, w.denied,
           w.malformed);
    printf("undelivered=%u srv_missing=%u dup_recv=%" PRIu64 " dup_deliv=%" PRIu64
           " out_of_order=%" PRIu64 " locked=%u\n",
           undelivered, srv_missing, w.dup_recv, w.dup_deliv, w.out_of_order, locked);
    CHECK_EQ_INT(undelivered, 0);
    CHECK_EQ_INT(srv_missing, 0);
    CHECK_EQ_INT(w.dup_recv, 0);
    CHECK_EQ_INT(w.dup_deliv, 0);
    CHECK_EQ_INT(w.out_of_order, 0);
    CHECK_EQ_INT(locked, 0);
    CHECK(w.crashes > 0);
    CHECK(w.lost_polls > 0 && w.lost_resps > 0);
    CHECK(w.malformed > 0 && w.denied > 0);

    pk_trig_srv_free(w.srv);
    for (uint32_t i = 0; i < n; i++)
        pk_trig_dev_clear(&w.dev[i]);
    free(w.dev);
    free(w.store);
    free(w.recv_next);
    free(w.srv_deliv);
}

static uint64_t g_seed = 1;
static uint32_t g_n = 10000;

static void test_lossy_10k(void)
{
    run(g_seed, g_n);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_seed = strtoull(argv[1], NULL, 0);
    if (argc > 2)
        g_n = (uint32_t)strtoul(argv[2], NULL, 0);
    RUN(test_lossy_10k);
    return check_report();
}
