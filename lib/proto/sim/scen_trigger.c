/*
 * Scenario "trigger": the Thales method (lib/proto/trigger) under faults.
 *
 *   proc 0     gts: pk_trig_srv_t over a memory: store (durable: device
 *              records and command queues; soft: the core and its UID index,
 *              rebuilt from the store at every restart)
 *   proc 1     an attacker sending forged and malformed polls
 *   proc 2..   devices: pk_trig_dev_t, with a 40-byte "flash" (export blob)
 *
 * The gts shell here follows the contract of srv.h exactly: for each input,
 * the DELIVERED deletions and the PERSIST record go into one transaction,
 * which commits before the SEND leaves. Its crashes land at random: between
 * inputs, after the core ran but before the commit, or after the commit but
 * before the send. A device applies a command atomically with saving its new
 * identity (its flash write takes 1-5 ms and a crash may land in it).
 *
 * Phases: chaos (loss, dup, reorder, crashes, operator queueing commands),
 * then quiet (perfect links, no crashes) and the checks.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/out.h"
#include "proto/sim/scen.h"
#include "proto/sim/sim.h"
#include "proto/trigger/dev.h"
#include "proto/trigger/srv.h"
#include "store/store.h"

enum { P_GTS = 0, P_ATK = 1, P_DEV0 = 2 };
enum { EV_CHAOS = PK_SIM_EV_USER, EV_QUEUE, EV_SAVE, EV_ATTACK, EV_QUIET };
enum { CP_NONE = 0, CP_BEFORE_COMMIT = 1, CP_BEFORE_SEND = 2 };

#define B_DEV "dev"
#define B_CMD "cmd"

#define INTERVAL_S   20
#define CHAOS_MS     120000ull
#define QUIET_MS     240000ull
#define MAX_OUTSTAND 3

typedef struct world {
    pk_sim_t *sim;
    const pk_sim_opts_t *o;
    uint32_t n; /* devices */
    uint32_t crash_ppm;
    pk_sim_rng_t chaos, gts_r, dev_r, op_r, atk_r;
    pk_rng_t gts_rng, dev_rng;
    /* gts */
    pk_trig_srv_t *srv;
    pk_store_t *st;
    int crash_point;
    /* devices */
    pk_trig_dev_cfg_t dcfg;
    pk_trig_dev_t *dev;
    uint8_t (*flash)[PK_TRIG_DEV_STATE_LEN];
    uint64_t *armed, *pend_seq, *last_applied;
    uint32_t *saves, *saves_at_quiet;
    uint8_t *pending, *outstanding;
    /* commands: index = seq */
    uint64_t nseq, maxseq;
    uint32_t *cmd_dev;
    uint8_t *srv_deliv, *applied;
    int quiet;
    uint64_t quiet_at;
    /* counters */
    uint16_t m_poll, m_resp, m_forged;
    uint16_t c_queued, c_deliv, c_applied, c_accept, c_reject, c_giveup, c_denied, c_malformed,
        c_loaded, c_cp1, c_cp2;
    uint8_t arena[PK_TRIG_REC_LEN + 8 * PK_OUT_MAX + PK_TRIG_RESP_MAX + 256];
} world_t;

static uint32_t dev_of(uint32_t proc)
{
    return proc - P_DEV0;
}

/* ---------------- gts: durable store and restart ---------------- */

static int put_dev(world_t *w, pk_txn_t *t, uint32_t dev_no, const uint8_t *rec)
{
    uint8_t k[4];
    pk_put_u32(k, dev_no);
    return pk_txn_put(t, B_DEV, k, 4, rec, PK_TRIG_REC_LEN);
    (void)w;
}

typedef struct load_ctx {
    world_t *w;
    uint8_t last[PK_STORE_KEY_MAX];
    size_t lastlen;
    size_t seen;
    int rc;
} load_ctx_t;

static int load_dev_cb(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    load_ctx_t *c = ctx;
    memcpy(c->last, k, kl);
    c->lastlen = kl;
    c->seen++;
    if (kl != 4 || (c->rc = pk_trig_srv_load(c->w->srv, pk_get_u32(k), v, vl)) != PK_OK)
        return c->rc ? c->rc : PK_ERR_MALFORMED;
    return 0;
}

static int load_cmd_cb(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    load_ctx_t *c = ctx;
    memcpy(c->last, k, kl);
    c->lastlen = kl;
    c->seen++;
    if (kl != 12 || vl < 1)
        return PK_ERR_MALFORMED;
    c->rc = pk_trig_srv_queue(c->w->srv, pk_get_u32(k), pk_get_u64(k + 4), v[0], v + 1, vl - 1);
    return c->rc == PK_OK ? 0 : c->rc;
}

static int scan_all(world_t *w, const char *bucket, pk_scan_fn cb, load_ctx_t *c)
{
    pk_txn_t *t;
    int rc = pk_store_begin_read(w->st, &t);
    if (rc != PK_OK)
        return rc;
    c->lastlen = 0;
    for (;;) { /* bounded: each page advances past `last`; the store is finite */
        c->seen = 0;
        rc = pk_txn_scan(t, bucket, NULL, 0, c->lastlen ? c->last : NULL, c->lastlen,
                         PK_STORE_SCAN_MAX, cb, c);
        if (rc != PK_OK || c->seen < PK_STORE_SCAN_MAX)
            break;
    }
    pk_txn_abort(t);
    return rc;
}

static void gts_start(world_t *w)
{
    load_ctx_t c = {.w = w};
    if (pk_trig_srv_new(&w->srv, &w->gts_rng, w->n) != PK_OK)
        abort();
    if (scan_all(w, B_DEV, load_dev_cb, &c) != PK_OK ||
        scan_all(w, B_CMD, load_cmd_cb, &c) != PK_OK)
        pk_sim_fail(w->sim, "gts restart: store reload failed");
    pk_sim_count(w->sim, w->c_loaded, pk_trig_srv_count(w->srv));
    pk_sim_trace(w->sim, "gts loaded devices=%zu", pk_trig_srv_count(w->srv));
}

static void gts_crash(world_t *w)
{
    pk_trig_srv_free(w->srv);
    w->srv = NULL;
    w->crash_point = CP_NONE;
}

static uint64_t down_ms(world_t *w, uint64_t lo, uint64_t hi)
{
    return lo + pk_sim_rng_below(&w->chaos, hi - lo + 1);
}

/* Commits the DELIVERED deletions and PERSIST records of one input. */
static int gts_commit(world_t *w, const pk_out_t *out)
{
    pk_txn_t *t;
    int rc = pk_store_begin(w->st, &t);
    if (rc != PK_OK)
        return rc;
    for (unsigned i = 0; i < out->n && rc == PK_OK; i++) {
        const pk_act_t *a = &out->act[i];
        if (a->kind != PK_ACT_EVENT)
            continue;
        if (a->code == PK_TRIG_EV_DELIVERED && a->len == 8) {
            uint8_t k[12];
            pk_put_u32(k, (uint32_t)a->dest);
            memcpy(k + 4, a->data, 8);
            rc = pk_txn_del(t, B_CMD, k, sizeof k);
        } else if (a->code == PK_TRIG_EV_PERSIST && a->len == PK_TRIG_REC_LEN) {
            rc = put_dev(w, t, (uint32_t)a->dest, a->data);
        }
    }
    if (rc != PK_OK) {
        pk_txn_abort(t);
        return rc;
    }
    return pk_txn_commit(t);
}

static void gts_after_commit(world_t *w, const pk_out_t *out)
{
    for (unsigned i = 0; i < out->n; i++) {
        const pk_act_t *a = &out->act[i];
        if (a->kind != PK_ACT_EVENT)
            continue;
        if (a->code == PK_TRIG_EV_DELIVERED && a->len == 8) {
            uint64_t seq = pk_get_u64(a->data);
            if (seq == 0 || seq > w->nseq || w->cmd_dev[seq] != a->dest) {
                pk_sim_fail(w->sim, "gts delivered unknown command seq=%" PRIu64, seq);
                continue;
            }
            if (++w->srv_deliv[seq] > 1)
                pk_sim_fail(w->sim, "gts delivered seq=%" PRIu64 " %u times", seq,
                            w->srv_deliv[seq]);
            if (w->outstanding[a->dest])
                w->outstanding[a->dest]--;
            pk_sim_count(w->sim, w->c_deliv, 1);
            pk_sim_trace(w->sim, "delivered dev=%" PRIu64 " seq=%" PRIu64, a->dest, seq);
        } else if (a->code == PK_TRIG_EV_PERSIST) {
            pk_trig_srv_persisted(w->srv, (uint32_t)a->dest);
        }
    }
}

static void gts_send(world_t *w, const pk_out_t *out, uint32_t to)
{
    for (unsigned i = 0; i < out->n; i++)
        if (out->act[i].kind == PK_ACT_SEND)
            pk_sim_send(w->sim, P_GTS, to, w->m_resp, out->act[i].data, out->act[i].len);
}

static void gts_input(world_t *w, const pk_sim_ev_t *ev)
{
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    int rc = pk_trig_srv_input(w->srv, ev->data, ev->len, pk_sim_now(w->sim), &out);
    if (rc != PK_OK) {
        pk_sim_count(w->sim, rc == PK_ERR_DENIED ? w->c_denied : w->c_malformed, 1);
        if (ev->src != P_ATK)
            pk_sim_trace(w->sim, "gts refused %u: %s", ev->src, pk_strerror(rc));
        return;
    }
    if (ev->src == P_ATK) {
        pk_sim_fail(w->sim, "gts answered a forged poll");
        return;
    }
    if (w->o->fault == PK_SIM_FAULT_TRIG_NO_PERSIST) {
        /* BROKEN ON PURPOSE: the response leaves before the record is durable. */
        gts_send(w, &out, ev->src);
        if (w->crash_point != CP_NONE) {
            pk_sim_crash(w->sim, P_GTS, down_ms(w, 500, 5000));
            return;
        }
        if (gts_commit(w, &out) != PK_OK)
            abort();
        gts_after_commit(w, &out);
        return;
    }
    if (w->crash_point == CP_BEFORE_COMMIT) {
        pk_sim_count(w->sim, w->c_cp1, 1);
        pk_sim_crash(w->sim, P_GTS, down_ms(w, 500, 5000));
        return;
    }
    if (gts_commit(w, &out) != PK_OK) {
        /* srv.h: a failed commit means no send and stop. */
        pk_sim_fail(w->sim, "gts store commit failed");
        pk_sim_crash(w->sim, P_GTS, 1000);
        return;
    }
    gts_after_commit(w, &out);
    if (w->crash_point == CP_BEFORE_SEND) {
        pk_sim_count(w->sim, w->c_cp2, 1);
        pk_sim_crash(w->sim, P_GTS, down_ms(w, 500, 5000));
        return;
    }
    gts_send(w, &out, ev->src);
}

/* ---------------- devices ---------------- */

static void dev_arm(world_t *w, uint32_t proc)
{
    uint32_t d = dev_of(proc);
    uint64_t t = pk_trig_dev_next_deadline(&w->dev[d]);
    if (t == UINT64_MAX)
        return;
    if (w->armed[d] && w->armed[d] <= t && w->armed[d] >= pk_sim_now(w->sim))
        return; /* an earlier or equal timer is pending; it re-arms */
    w->armed[d] = t;
    pk_sim_timer(w->sim, proc, t, 0);
}

static void dev_timer(world_t *w, uint32_t proc)
{
    uint32_t d = dev_of(proc);
    pk_trig_dev_t *dv = &w->dev[d];
    uint64_t now = pk_sim_now(w->sim);
    uint8_t poll[PK_TRIG_POLL_LEN];
    w->armed[d] = 0;
    if (dv->state == PK_TRIG_DEV_IDLE && now >= pk_trig_dev_next_deadline(dv)) {
        if (pk_trig_dev_poll(dv, now, poll) == PK_OK)
            pk_sim_send(w->sim, proc, P_GTS, w->m_poll, poll, sizeof poll);
    } else if (dv->state == PK_TRIG_DEV_WAIT) {
        int send = 0;
        int rc = pk_trig_dev_timeout(dv, now, poll, &send);
        if (rc == PK_ERR_TIMEOUT)
            pk_sim_count(w->sim, w->c_giveup, 1);
        else if (send)
            pk_sim_send(w->sim, proc, P_GTS, w->m_poll, poll, sizeof poll);
    }
    dev_arm(w, proc);
}

static void dev_input(world_t *w, const pk_sim_ev_t *ev)
{
    uint32_t d = dev_of(ev->dst);
    pk_trig_dev_msg_t msg;
    int rc = pk_trig_dev_input(&w->dev[d], ev->data, ev->len, pk_sim_now(w->sim), &msg);
    if (rc != PK_OK) {
        pk_sim_count(w->sim, w->c_reject, 1);
        return;
    }
    pk_sim_count(w->sim, w->c_accept, 1);
    w->pending[d] = 1;
    w->pend_seq[d] = (msg.cmd == PK_TRIG_CMD_APP && msg.arglen == 8) ? pk_get_u64(msg.arg) : 0;
    pk_wipe(&msg, sizeof msg);
    if (!w->quiet && pk_sim_rng_ppm(&w->chaos, w->crash_ppm)) {
        pk_sim_crash(w->sim, ev->dst, down_ms(w, 1000, 10000)); /* before the save */
        return;
    }
    pk_sim_at(w->sim, pk_sim_now(w->sim) + 1 + pk_sim_rng_below(&w->chaos, 5), EV_SAVE, ev->dst,
              pk_sim_gen(w->sim, ev->dst));
}

static void dev_apply(world_t *w, uint32_t d, uint64_t seq)
{
    if (seq == 0 || seq > w->nseq || w->cmd_dev[seq] != d) {
        pk_sim_fail(w->sim, "device %u got a command not queued for it (seq %" PRIu64 ")", d, seq);
        return;
    }
    if (++w->applied[seq] > 1)
        pk_sim_fail(w->sim, "device %u applied seq=%" PRIu64 " %u times", d, seq, w->applied[seq]);
    if (seq <= w->last_applied[d] && w->applied[seq] == 1)
        pk_sim_fail(w->sim, "device %u applied seq=%" PRIu64 " after %" PRIu64, d, seq,
                    w->last_applied[d]);
    if (seq > w->last_applied[d])
        w->last_applied[d] = seq;
    pk_sim_count(w->sim, w->c_applied, 1);
}

static void dev_save(world_t *w, const pk_sim_ev_t *ev)
{
    uint32_t d = dev_of(ev->dst);
    if (!pk_sim_up(w->sim, ev->dst) || pk_sim_gen(w->sim, ev->dst) != ev->arg || !w->pending[d])
        return; /* crashed during the flash write: nothing was saved */
    pk_trig_dev_export(&w->dev[d], w->flash[d]);
    if (w->pend_seq[d]) {
        dev_apply(w, d, w->pend_seq[d]);
        if (w->o->fault == PK_SIM_FAULT_TRIG_DOUBLE && w->pend_seq[d] == 1)
            dev_apply(w, d, w->pend_seq[d]); /* BROKEN ON PURPOSE */
    }
    w->pending[d] = 0;
    w->pend_seq[d] = 0;
    w->saves[d]++;
    if (pk_trig_dev_saved(&w->dev[d], pk_sim_now(w->sim)) != PK_OK)
        pk_sim_fail(w->sim, "device %u: saved() refused", d);
    dev_arm(w, ev->dst);
}

/* ---------------- operator, attacker, chaos ---------------- */

static void op_queue(world_t *w)
{
    uint64_t now = pk_sim_now(w->sim);
    if (now >= CHAOS_MS - 10000 || w->nseq >= w->maxseq)
        return;
    uint32_t d = (uint32_t)pk_sim_rng_below(&w->op_r, w->n);
    if (w->outstanding[d] < MAX_OUTSTAND) {
        uint64_t seq = ++w->nseq;
        uint8_t k[12], v[9];
        pk_put_u32(k, d);
        pk_put_u64(k + 4, seq);
        v[0] = PK_TRIG_CMD_APP;
        pk_put_u64(v + 1, seq);
        pk_txn_t *t;
        if (pk_store_begin(w->st, &t) != PK_OK || pk_txn_insert(t, B_CMD, k, 12, v, 9) != PK_OK ||
            pk_txn_commit(t) != PK_OK)
            abort(); /* the memory store cannot fail here */
        w->cmd_dev[seq] = d;
        w->outstanding[d]++;
        pk_sim_count(w->sim, w->c_queued, 1);
        pk_sim_trace(w->sim, "queue dev=%u seq=%" PRIu64, d, seq);
        if (w->srv) {
            int rc = pk_trig_srv_queue(w->srv, d, seq, PK_TRIG_CMD_APP, v + 1, 8);
            if (rc != PK_OK)
                pk_sim_fail(w->sim, "queue dev=%u seq=%" PRIu64 ": %s", d, seq, pk_strerror(rc));
        }
    }
    /* mean gap: CHAOS_MS spread over ~2 commands per device */
    uint64_t mean = (CHAOS_MS - 10000) / (2 * (uint64_t)w->n) + 1;
    pk_sim_at(w->sim, now + pk_sim_rng_below(&w->op_r, 2 * mean + 1), EV_QUEUE, P_GTS, 0);
}

static void attack(world_t *w)
{
    uint8_t p[PK_TRIG_POLL_LEN + 1];
    uint8_t uid[PK_TRIG_UID_LEN];
    pk_sim_rng_bytes(&w->atk_r, uid, sizeof uid);
    pk_trig_poll_build(1, uid, p);
    size_t len = PK_TRIG_POLL_LEN;
    if (pk_sim_rng_below(&w->atk_r, 4) == 0)
        len = pk_sim_rng_below(&w->atk_r, sizeof p + 1); /* wrong size */
    pk_sim_send(w->sim, P_ATK, P_GTS, w->m_forged, p, len);
    if (!w->quiet)
        pk_sim_at(w->sim, pk_sim_now(w->sim) + 500, EV_ATTACK, P_ATK, 0);
}

static void chaos(world_t *w)
{
    uint64_t now = pk_sim_now(w->sim);
    if (w->quiet)
        return;
    if (pk_sim_up(w->sim, P_GTS) && w->crash_point == CP_NONE &&
        pk_sim_rng_ppm(&w->chaos, w->crash_ppm)) {
        int cp = (int)pk_sim_rng_below(&w->chaos, 3);
        if (w->o->fault == PK_SIM_FAULT_TRIG_NO_PERSIST && cp == CP_NONE)
            cp = CP_BEFORE_SEND;
        if (cp == CP_NONE)
            pk_sim_crash(w->sim, P_GTS, down_ms(w, 500, 5000));
        else
            w->crash_point = cp; /* at its next input */
    }
    /* devices: each with crash_rate/100 per second */
    uint64_t milli = (uint64_t)w->n * w->crash_ppm / 100; /* expected crashes x 1e6 */
    uint64_t k = milli / 1000000 + (pk_sim_rng_below(&w->chaos, 1000000) < milli % 1000000);
    for (uint64_t i = 0; i < k; i++)
        pk_sim_crash(w->sim, P_DEV0 + (uint32_t)pk_sim_rng_below(&w->chaos, w->n),
                     down_ms(w, 1000, 10000));
    pk_sim_at(w->sim, now + 1000, EV_CHAOS, P_GTS, 0);
}

static void quiet(world_t *w)
{
    static const pk_sim_link_t calm = {0, 0, 0, 1, 20, 0};
    w->quiet = 1;
    w->quiet_at = pk_sim_now(w->sim);
    pk_sim_set_all_links(w->sim, &calm);
    pk_sim_heal(w->sim);
    pk_sim_trace(w->sim, "quiet");
}

static void quiet_mark(world_t *w)
{
    /* Every process is back up (the longest downtime is 10 s): count from here. */
    for (uint32_t d = 0; d < w->n; d++)
        w->saves_at_quiet[d] = w->saves[d];
}

/* ---------------- dispatch ---------------- */

static void dispatch(void *ctx, pk_sim_t *sim, const pk_sim_ev_t *ev)
{
    world_t *w = ctx;
    (void)sim;
    switch (ev->kind) {
    case PK_SIM_EV_MSG:
        if (ev->dst == P_GTS)
            gts_input(w, ev);
        else if (ev->dst >= P_DEV0)
            dev_input(w, ev);
        break;
    case PK_SIM_EV_TIMER:
        if (ev->dst >= P_DEV0)
            dev_timer(w, ev->dst);
        break;
    case EV_CHAOS: chaos(w); break;
    case EV_QUEUE: op_queue(w); break;
    case EV_SAVE: dev_save(w, ev); break;
    case EV_ATTACK: attack(w); break;
    case EV_QUIET:
        if (ev->arg == 0)
            quiet(w);
        else
            quiet_mark(w);
        break;
    default: break;
    }
}

static void on_crash(void *ctx, pk_sim_t *sim, uint32_t proc)
{
    world_t *w = ctx;
    (void)sim;
    if (proc == P_GTS) {
        gts_crash(w);
    } else if (proc >= P_DEV0) {
        uint32_t d = dev_of(proc);
        pk_trig_dev_clear(&w->dev[d]);
        w->pending[d] = 0;
        w->pend_seq[d] = 0;
        w->armed[d] = 0;
    }
}

static void on_restart(void *ctx, pk_sim_t *sim, uint32_t proc)
{
    world_t *w = ctx;
    if (proc == P_GTS) {
        gts_start(w);
    } else if (proc >= P_DEV0) {
        uint32_t d = dev_of(proc);
        uint64_t first = pk_sim_now(sim) + pk_sim_rng_below(&w->dev_r, 2000);
        if (pk_trig_dev_import(&w->dev[d], &w->dcfg, w->flash[d], PK_TRIG_DEV_STATE_LEN, first) !=
            PK_OK)
            pk_sim_fail(sim, "device %u: flash unreadable", d);
        dev_arm(w, proc);
    }
}

/* ---------------- setup, checks ---------------- */

static int provision(world_t *w)
{
    pk_txn_t *t = NULL;
    int rc = PK_OK;
    uint8_t rec[PK_TRIG_REC_LEN];
    for (uint32_t d = 0; d < w->n && rc == PK_OK; d++) {
        uint8_t k1[PK_TRIG_KEY_LEN], uid[PK_TRIG_UID_LEN];
        pk_sim_rng_bytes(&w->dev_r, k1, sizeof k1);
        pk_sim_rng_bytes(&w->dev_r, uid, sizeof uid);
        if (!t && (rc = pk_store_begin(w->st, &t)) != PK_OK)
            break;
        rc = pk_trig_srv_add(w->srv, d, k1, uid, d % 2 ? PK_TRIG_DEV_ROTATE : 0);
        if (rc == PK_OK)
            rc = pk_trig_srv_record(w->srv, d, rec);
        if (rc == PK_OK)
            rc = put_dev(w, t, d, rec);
        if (rc == PK_OK) {
            uint64_t first = pk_sim_rng_below(&w->dev_r, INTERVAL_S * 1000);
            rc = pk_trig_dev_init(&w->dev[d], &w->dcfg, k1, uid, INTERVAL_S, first);
            pk_trig_dev_export(&w->dev[d], w->flash[d]);
            dev_arm(w, P_DEV0 + d);
        }
        pk_wipe(k1, sizeof k1);
        if (rc == PK_OK && (d % 10000 == 9999 || d + 1 == w->n)) {
            rc = pk_txn_commit(t);
            t = NULL;
        }
    }
    if (t)
        pk_txn_abort(t);
    return rc;
}

static void check(world_t *w)
{
    unsigned shown = 0;
    for (uint64_t s = 1; s <= w->nseq; s++) {
        if (w->srv_deliv[s] != 1 || w->applied[s] != 1) {
            if (shown++ < 5)
                pk_sim_fail(w->sim,
                            "command seq=%" PRIu64 " dev=%u: gts delivered %u times, device "
                            "applied %u times (want 1, 1)",
                            s, w->cmd_dev[s], w->srv_deliv[s], w->applied[s]);
        }
    }
    shown = 0;
    for (uint32_t d = 0; d < w->n; d++) {
        if (w->saves[d] - w->saves_at_quiet[d] < 2 && shown++ < 5)
            pk_sim_fail(w->sim, "device %u locked out: %u exchanges in the quiet phase", d,
                        w->saves[d] - w->saves_at_quiet[d]);
    }
}

int pk_sim_run_trigger(const pk_sim_opts_t *o, FILE *summary, int json, pk_sim_result_t *r)
{
    world_t *w = calloc(1, sizeof *w);
    int rc = PK_ERR_NOMEM;
    if (!w)
        return rc;
    w->o = o;
    w->n = o->devices ? o->devices : 200;
    w->crash_ppm = pk_sim_ppm(o->crash_rate);
    w->maxseq = 2ull * w->n + 16;
    uint64_t seed = o->seed;
    pk_sim_rng_seed(&w->chaos, seed, 1);
    pk_sim_rng_seed(&w->gts_r, seed, 2);
    pk_sim_rng_seed(&w->dev_r, seed, 3);
    pk_sim_rng_seed(&w->op_r, seed, 4);
    pk_sim_rng_seed(&w->atk_r, seed, 5);
    w->gts_rng = pk_sim_rng_as_pk(&w->gts_r);
    w->dev_rng = pk_sim_rng_as_pk(&w->dev_r);
    w->dcfg = (pk_trig_dev_cfg_t){
        .timeout_ms = 1500, .max_resend = 5, .min_interval_s = 1, .max_interval_s = 3600};
    w->dev = calloc(w->n, sizeof *w->dev);
    w->flash = calloc(w->n, sizeof *w->flash);
    w->armed = calloc(w->n, sizeof *w->armed);
    w->pend_seq = calloc(w->n, sizeof *w->pend_seq);
    w->last_applied = calloc(w->n, sizeof *w->last_applied);
    w->saves = calloc(w->n, sizeof *w->saves);
    w->saves_at_quiet = calloc(w->n, sizeof *w->saves_at_quiet);
    w->pending = calloc(w->n, 1);
    w->outstanding = calloc(w->n, 1);
    w->cmd_dev = calloc(w->maxseq + 1, sizeof *w->cmd_dev);
    w->srv_deliv = calloc(w->maxseq + 1, 1);
    w->applied = calloc(w->maxseq + 1, 1);
    if (!w->dev || !w->flash || !w->armed || !w->pend_seq || !w->last_applied || !w->saves ||
        !w->saves_at_quiet || !w->pending || !w->outstanding || !w->cmd_dev || !w->srv_deliv ||
        !w->applied)
        goto out;

    pk_sim_link_t link = {
        pk_sim_ppm(o->loss), pk_sim_ppm(o->dup), pk_sim_ppm(o->reorder), 5, 80, 2000};
    pk_sim_cfg_t cfg = {.seed = seed,
                        .nproc = P_DEV0 + w->n,
                        .max_events = 400ull * w->n + 1000000,
                        .trace = o->trace,
                        .progress = o->progress,
                        .label = "trigger"};
    pk_sim_ops_t ops = {dispatch, on_crash, on_restart};
    if ((rc = pk_sim_new(&w->sim, &cfg, &link, &ops, w)) != PK_OK)
        goto out;
    pk_sim_t *sim = w->sim;
    w->m_poll = pk_sim_counter(sim, "POLL", 1);
    w->m_resp = pk_sim_counter(sim, "RESP", 1);
    w->m_forged = pk_sim_counter(sim, "FORGED", 1);
    w->c_queued = pk_sim_counter(sim, "commands queued", 0);
    w->c_deliv = pk_sim_counter(sim, "commands delivered (gts)", 0);
    w->c_applied = pk_sim_counter(sim, "commands applied (devices)", 0);
    w->c_accept = pk_sim_counter(sim, "responses accepted", 0);
    w->c_reject = pk_sim_counter(sim, "responses rejected (stale/dup)", 0);
    w->c_giveup = pk_sim_counter(sim, "device exchanges given up", 0);
    w->c_denied = pk_sim_counter(sim, "polls denied (unknown UID)", 0);
    w->c_malformed = pk_sim_counter(sim, "polls malformed", 0);
    w->c_loaded = pk_sim_counter(sim, "gts records reloaded", 0);
    w->c_cp1 = pk_sim_counter(sim, "gts crashes before commit", 0);
    w->c_cp2 = pk_sim_counter(sim, "gts crashes before send", 0);
    pk_sim_set_class(sim, P_GTS, 0);
    for (uint32_t d = 0; d < w->n; d++)
        pk_sim_set_class(sim, P_DEV0 + d, 1);

    if ((rc = pk_store_open("memory:", &w->st)) != PK_OK)
        goto out;
    if ((rc = pk_trig_srv_new(&w->srv, &w->gts_rng, w->n)) != PK_OK)
        goto out;
    if ((rc = provision(w)) != PK_OK)
        goto out;
    pk_sim_at(sim, 1000, EV_CHAOS, P_GTS, 0);
    pk_sim_at(sim, 0, EV_QUEUE, P_GTS, 0);
    pk_sim_at(sim, 250, EV_ATTACK, P_ATK, 0);
    pk_sim_at(sim, CHAOS_MS, EV_QUIET, P_GTS, 0);
    pk_sim_at(sim, CHAOS_MS + 15000, EV_QUIET, P_GTS, 1);
    rc = pk_sim_run(sim, CHAOS_MS + QUIET_MS);
    if (rc == PK_ERR_LIMIT)
        pk_sim_fail(sim, "event budget exhausted (livelock?)");
    check(w);
    if (summary) {
        if (!json)
            fprintf(summary, "scenario trigger: seed %" PRIu64 ", %u devices\n", seed, w->n);
        pk_sim_summary(sim, summary, json);
    }
    r->trace_hash = pk_sim_trace_hash(sim);
    r->failures = pk_sim_failures(sim);
    snprintf(r->first_failure, sizeof r->first_failure, "%s", pk_sim_first_failure(sim));
    pk_sim_stats_t st;
    pk_sim_stats(sim, &st);
    r->events = st.events;
    r->virtual_ms = pk_sim_now(sim);
    if (rc == PK_ERR_LIMIT)
        rc = PK_OK;
out:
    if (w->dev)
        for (uint32_t d = 0; d < w->n; d++)
            pk_trig_dev_clear(&w->dev[d]);
    pk_trig_srv_free(w->srv);
    pk_store_close(w->st);
    pk_sim_free(w->sim);
    free(w->dev);
    free(w->flash);
    free(w->armed);
    free(w->pend_seq);
    free(w->last_applied);
    free(w->saves);
    free(w->saves_at_quiet);
    free(w->pending);
    free(w->outstanding);
    free(w->cmd_dev);
    free(w->srv_deliv);
    free(w->applied);
    free(w);
    return rc;
}
