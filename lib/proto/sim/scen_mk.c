/*
 * Scenario "mk": master keys and individual keys (lib/proto/mk) under faults.
 *
 *   proc 0..C-1     domain clients "c00000".. (domain 1), each wanting an
 *                   individual key with its K nearest ring neighbours on
 *                   each side (the allowed pairs)
 *   proc C..C+I-1   intruders "x00000"..: even ones in another domain (2),
 *                   odd ones in domain 1 claiming MK ID 1 with a forged key
 *
 * The driver is the application a device shell runs around the core: it
 * feeds datagrams, runs timeouts and table ticks, starts an authentication
 * for every partner the table reports (renewal, or a pending key left
 * unconfirmed by a lost END2) or that has no current key, and sends a beacon
 * to its neighbours every 5 s (beacon autostart on). It keeps no memory of
 * the exchanges it started: the core and its table say what is left to do.
 *
 * Faults: loss/dup/reorder on every link; client crashes (the master key is
 * durable - a restarted client re-registers and gets the domain's current
 * one - the key table and sessions are soft and lost); a partition splitting
 * the ring in two for 30 s; a master-key rotation (MK 1 -> MK 2) delivered to
 * the clients over 20 s, cascading renewals through every table.
 *
 * Invariants: whenever a client stores a key, the partner's table holds
 * either nothing under that key ID for it or the same bytes; no intruder
 * ever stores a key or has one stored for it; after the quiet phase every
 * allowed pair shares its current key (same ID, same bytes, under MK 2).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/out.h"
#include "proto/mk/mk.h"
#include "proto/sim/scen.h"
#include "proto/sim/sim.h"

enum { EV_CHAOS = PK_SIM_EV_USER, EV_MK, EV_PART, EV_QUIET };

#define K_NEIGH     2
#define TABLE_CAP   (8 * K_NEIGH + 8)
#define MK_LEN      32
#define T_ROT_MS    40000ull
#define T_PART_MS   60000ull
#define PART_LEN_MS 30000ull
#define CHAOS_MS    120000ull
#define QUIET_MS    120000ull
#define TICK_MS     1000ull
#define BEACON_MS   5000ull
#define MAX_CLIENTS 20000u

typedef struct client {
    pk_mk_client_t c;
    pk_mk_table_t t;
    pk_mk_entry_t e[TABLE_CAP];
    uint8_t id[8];
    uint64_t armed, next_tick, next_beacon;
} client_t;

typedef struct world {
    pk_sim_t *sim;
    const pk_sim_opts_t *o;
    uint32_t nc, ni, k;
    uint32_t crash_ppm;
    pk_sim_rng_t chaos, cr;
    pk_rng_t rng;
    pk_mk_cfg_t cfg;
    client_t *cl;
    uint8_t mk[3][MK_LEN]; /* [1], [2] the domain's; [0] the forgers' */
    uint8_t mk_other[MK_LEN];
    uint32_t cur_mk;
    int quiet, corrupted;
    uint16_t m_type[6];
    uint16_t c_keys, c_starts, c_refused, c_dropped, c_renew, c_pastdue;
    uint8_t arena[4096];
} world_t;

static int is_intruder(const world_t *w, uint32_t p)
{
    return p >= w->nc;
}

static void client_id(const world_t *w, uint32_t p, uint8_t id[7])
{
    char s[8];
    snprintf(s, sizeof s, "%c%05u", is_intruder(w, p) ? 'x' : 'c',
             (unsigned)(is_intruder(w, p) ? p - w->nc : p) % 100000u);
    memcpy(id, s, 6);
}

/* Maps an identity back to its process; UINT32_MAX when none. */
static uint32_t proc_of(const world_t *w, const uint8_t *id, size_t len)
{
    if (len != 6 || (id[0] != 'c' && id[0] != 'x'))
        return UINT32_MAX;
    uint32_t n = 0;
    for (int i = 1; i < 6; i++) {
        if (id[i] < '0' || id[i] > '9')
            return UINT32_MAX;
        n = n * 10 + (uint32_t)(id[i] - '0');
    }
    uint32_t p = id[0] == 'c' ? n : w->nc + n;
    return (id[0] == 'c' ? n < w->nc : n < w->ni) ? p : UINT32_MAX;
}

/* The j-th wanted partner of domain client p (j < 2k). */
static uint32_t partner(const world_t *w, uint32_t p, uint32_t j)
{
    uint32_t d = j / 2 + 1;
    return j % 2 ? (p + d) % w->nc : (p + w->nc - d) % w->nc;
}

/* The index j of b among a's wanted partners, or -1. */
static int partner_index(const world_t *w, uint32_t a, uint32_t b)
{
    if (is_intruder(w, a) || is_intruder(w, b) || a == b)
        return -1;
    for (uint32_t j = 0; j < 2 * w->k; j++)
        if (partner(w, a, j) == b)
            return (int)j;
    return -1;
}

static int wanted(const world_t *w, uint32_t a, uint32_t b)
{
    return partner_index(w, a, b) >= 0;
}

static uint64_t mk_expiry(uint32_t v)
{
    return v == 1 ? T_ROT_MS + 300000 : 36000000;
}

static void client_boot(world_t *w, uint32_t p)
{
    client_t *c = &w->cl[p];
    uint64_t now = pk_sim_now(w->sim);
    if (pk_mk_client_init(&c->c, c->id, 6,
                          p % 2 && is_intruder(w, p) ? 1 : (is_intruder(w, p) ? 2 : 1), &w->cfg,
                          &c->t, c->e, TABLE_CAP, &w->rng) != PK_OK)
        abort();
    const uint8_t *mk;
    uint32_t id;
    if (!is_intruder(w, p)) {
        mk = w->mk[w->cur_mk];
        id = w->cur_mk;
    } else if (p % 2) {
        mk = w->mk[0]; /* forged: MK ID 1, wrong bytes */
        id = 1;
    } else {
        mk = w->mk_other;
        id = 7;
    }
    if (pk_mk_client_set_master(&c->c, mk, MK_LEN, id, mk_expiry(is_intruder(w, p) ? 2 : id),
                                now) != PK_OK)
        pk_sim_fail(w->sim, "client %u: set_master refused at boot", p);
    c->next_tick = now + pk_sim_rng_below(&w->cr, TICK_MS);
    c->next_beacon = now + pk_sim_rng_below(&w->cr, BEACON_MS);
    c->armed = 0;
}

static void arm(world_t *w, uint32_t p, int from_timer)
{
    client_t *c = &w->cl[p];
    uint64_t t = pk_mk_client_next_deadline(&c->c);
    if (c->next_tick < t)
        t = c->next_tick;
    if (c->next_beacon < t)
        t = c->next_beacon;
    uint64_t now = pk_sim_now(w->sim);
    if (t <= now) {
        /* every deadline due now has just been handled: a core still due is
         * a broken next_deadline() contract; count it and move on */
        if (from_timer)
            pk_sim_count(w->sim, w->c_pastdue, 1);
        t = now + 1;
    }
    if (c->armed && c->armed <= t && c->armed >= now)
        return;
    c->armed = t;
    pk_sim_timer(w->sim, p, t, 0);
}

/* Checks a freshly stored key against the partner's table. */
static void key_stored(world_t *w, uint32_t p, uint32_t key_id, const uint8_t *pid, size_t plen)
{
    uint64_t now = pk_sim_now(w->sim);
    uint32_t q = proc_of(w, pid, plen);
    pk_sim_count(w->sim, w->c_keys, 1);
    pk_sim_trace(w->sim, "key %u<->%u id=%u", p, q, key_id);
    if (q == UINT32_MAX || is_intruder(w, p) || is_intruder(w, q)) {
        pk_sim_fail(w->sim, "pair outside the allowed list got a key: %u and %.*s", p, (int)plen,
                    (const char *)pid);
        return;
    }
    const pk_mk_entry_t *e = pk_mk_table_find(&w->cl[p].t, key_id, now);
    if (!e) {
        pk_sim_fail(w->sim, "client %u: stored key %u not in its table", p, key_id);
        return;
    }
    if (w->o->fault == PK_SIM_FAULT_MK_CORRUPT && p == 0 && !w->corrupted) {
        /* BROKEN ON PURPOSE: client 0's copy of its first key gets one byte flipped. */
        pk_mk_entry_t bad = *e;
        bad.key[0] ^= 0x01;
        if (pk_mk_table_remove(&w->cl[p].t, key_id) == PK_OK &&
            pk_mk_table_add(&w->cl[p].t, &bad, now) == PK_OK)
            w->corrupted = 1;
        pk_wipe(&bad, sizeof bad);
        e = pk_mk_table_find(&w->cl[p].t, key_id, now);
        if (!e)
            return;
    }
    if (!pk_sim_up(w->sim, q))
        return;
    const pk_mk_entry_t *f = pk_mk_table_find(&w->cl[q].t, key_id, now);
    if (f && f->partner_len == 6 && memcmp(f->partner, w->cl[p].id, 6) == 0 &&
        !pk_ct_eq(e->key, f->key, PK_MK_IK_LEN))
        pk_sim_fail(w->sim, "clients %u and %u hold different bytes for key %u", p, q, key_id);
}

static void flush(world_t *w, uint32_t p, pk_out_t *out)
{
    for (unsigned i = 0; i < out->n; i++) {
        const pk_act_t *a = &out->act[i];
        if (a->kind == PK_ACT_SEND) {
            uint16_t m = a->code < 6 ? w->m_type[a->code] : 0;
            pk_sim_send(w->sim, p, (uint32_t)a->dest, m, a->data, a->len);
        } else if (a->kind == PK_ACT_EVENT && a->code == PK_MK_EV_KEY) {
            key_stored(w, p, (uint32_t)a->dest, a->data, a->len);
        }
    }
    pk_out_reset(out);
}

static void start(world_t *w, uint32_t p, uint32_t q, pk_out_t *out)
{
    uint8_t flags = pk_sim_rng_below(&w->cr, 2) ? PK_MK_FLAG_WRAP : 0;
    int rc = pk_mk_client_start(&w->cl[p].c, w->cl[q].id, 6, flags, q, pk_sim_now(w->sim), out);
    if (rc == PK_OK)
        pk_sim_count(w->sim, w->c_starts, 1);
    else if (rc == PK_ERR_SPACE)
        flush(w, p, out);
}

static void on_timer(world_t *w, uint32_t p)
{
    client_t *c = &w->cl[p];
    uint64_t now = pk_sim_now(w->sim);
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    c->armed = 0;
    pk_sim_count(w->sim, w->c_dropped, pk_mk_client_timeout(&c->c, now));
    if (pk_mk_table_next_deadline(&c->t) <= now) {
        /* the table's expiries and renewals (FIG. 8 cascades through here) */
        pk_mk_renew_t rn[8];
        size_t n = pk_mk_table_tick(&c->t, now, rn, 8);
        pk_sim_count(w->sim, w->c_renew, n);
        for (size_t i = 0; i < n; i++) {
            uint32_t q = proc_of(w, rn[i].partner, rn[i].partner_len);
            if (q != UINT32_MAX && wanted(w, p, q))
                start(w, p, q, &out);
        }
    }
    if (now >= c->next_tick) {
        c->next_tick = now + TICK_MS + pk_sim_rng_below(&w->cr, 200);
        if (is_intruder(w, p)) {
            start(w, p, (uint32_t)pk_sim_rng_below(&w->cr, w->nc), &out);
        } else {
            for (uint32_t j = 0; j < 2 * w->k; j++) {
                uint32_t q = partner(w, p, j);
                /* no key yet (a lost END2 is the table's to report) */
                if (!pk_mk_table_current(&c->t, w->cl[q].id, 6, now))
                    start(w, p, q, &out);
            }
        }
    }
    flush(w, p, &out);
    if (now >= c->next_beacon) {
        c->next_beacon = now + BEACON_MS + pk_sim_rng_below(&w->cr, 500);
        uint8_t b[PK_MK_BEACON_MAX];
        size_t bl;
        if (pk_mk_client_beacon(&c->c, b, sizeof b, &bl) == PK_OK) {
            if (is_intruder(w, p)) {
                pk_sim_send(w->sim, p, (uint32_t)pk_sim_rng_below(&w->cr, w->nc),
                            w->m_type[PK_MK_T_BEACON], b, bl);
            } else {
                for (uint32_t j = 0; j < 2 * w->k; j++)
                    pk_sim_send(w->sim, p, partner(w, p, j), w->m_type[PK_MK_T_BEACON], b, bl);
            }
        }
    }
    arm(w, p, 1);
}

static void on_msg(world_t *w, const pk_sim_ev_t *ev)
{
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    int rc =
        pk_mk_client_input(&w->cl[ev->dst].c, ev->data, ev->len, ev->src, pk_sim_now(w->sim), &out);
    if (rc != PK_OK) {
        pk_sim_count(w->sim, w->c_refused, 1);
        return;
    }
    flush(w, ev->dst, &out);
    arm(w, ev->dst, 0);
}

static void rotate_one(world_t *w, uint32_t p)
{
    if (!pk_sim_up(w->sim, p)) /* it gets the current MK when it re-registers */
        return;
    client_t *c = &w->cl[p];
    if (c->c.mk_id == 2)
        return;
    if (pk_mk_client_set_master(&c->c, w->mk[2], MK_LEN, 2, mk_expiry(2), pk_sim_now(w->sim)) !=
        PK_OK)
        pk_sim_fail(w->sim, "client %u refused the new master key", p);
    pk_sim_trace(w->sim, "mk2 %u", p);
    c->next_tick = pk_sim_now(w->sim);
    arm(w, p, 0);
}

static void chaos(world_t *w)
{
    if (w->quiet)
        return;
    uint64_t milli = (uint64_t)w->nc * w->crash_ppm / 10;
    uint64_t k = milli / 1000000 + (pk_sim_rng_below(&w->chaos, 1000000) < milli % 1000000);
    for (uint64_t i = 0; i < k; i++)
        pk_sim_crash(w->sim, (uint32_t)pk_sim_rng_below(&w->chaos, w->nc),
                     1000 + pk_sim_rng_below(&w->chaos, 9001));
    pk_sim_at(w->sim, pk_sim_now(w->sim) + 1000, EV_CHAOS, 0, 0);
}

static void dispatch(void *ctx, pk_sim_t *sim, const pk_sim_ev_t *ev)
{
    world_t *w = ctx;
    switch (ev->kind) {
    case PK_SIM_EV_MSG: on_msg(w, ev); break;
    case PK_SIM_EV_TIMER: on_timer(w, ev->dst); break;
    case EV_CHAOS: chaos(w); break;
    case EV_MK:
        if (ev->arg == 0) {
            w->cur_mk = 2;
            pk_sim_trace(sim, "rotation");
            for (uint32_t p = 0; p < w->nc; p++)
                pk_sim_at(sim, pk_sim_now(sim) + pk_sim_rng_below(&w->chaos, 20000), EV_MK, p, 1);
        } else {
            rotate_one(w, ev->dst);
        }
        break;
    case EV_PART:
        if (w->quiet)
            break;
        if (ev->arg == 0) {
            for (uint32_t p = 0; p < w->nc / 2; p++)
                pk_sim_partition(sim, p, 1);
            pk_sim_trace(sim, "partition");
        } else {
            pk_sim_heal(sim);
        }
        break;
    case EV_QUIET: {
        static const pk_sim_link_t calm = {0, 0, 0, 1, 20, 0};
        w->quiet = 1;
        pk_sim_set_all_links(sim, &calm);
        pk_sim_heal(sim);
        pk_sim_trace(sim, "quiet");
        break;
    }
    default: break;
    }
}

static void on_crash(void *ctx, pk_sim_t *sim, uint32_t p)
{
    world_t *w = ctx;
    (void)sim;
    pk_mk_client_clear(&w->cl[p].c);
    w->cl[p].armed = 0;
}

static void on_restart(void *ctx, pk_sim_t *sim, uint32_t p)
{
    world_t *w = ctx;
    (void)sim;
    client_boot(w, p);
    arm(w, p, 0);
}

static void check(world_t *w)
{
    uint64_t now = pk_sim_now(w->sim);
    unsigned shown = 0;
    for (uint32_t p = 0; p < w->nc; p++) {
        for (uint32_t j = 0; j < 2 * w->k; j++) {
            uint32_t q = partner(w, p, j);
            if (q < p)
                continue;
            const pk_mk_entry_t *a = pk_mk_table_current(&w->cl[p].t, w->cl[q].id, 6, now);
            const pk_mk_entry_t *b = pk_mk_table_current(&w->cl[q].t, w->cl[p].id, 6, now);
            const char *why = NULL;
            if (!a || !b)
                why = "no shared key";
            else if (a->key_id != b->key_id)
                why = "different current keys";
            else if (!pk_ct_eq(a->key, b->key, PK_MK_IK_LEN))
                why = "different key bytes";
            else if (a->mk_id != 2 || b->mk_id != 2)
                why = "key not under the new master key";
            if (why && shown++ < 5)
                pk_sim_fail(w->sim, "pair %u-%u after the quiet phase: %s", p, q, why);
        }
    }
    for (uint32_t p = w->nc; p < w->nc + w->ni; p++)
        if (pk_mk_table_count(&w->cl[p].t) != 0)
            pk_sim_fail(w->sim, "intruder %u holds a key", p);
}

int pk_sim_run_mk(const pk_sim_opts_t *o, FILE *summary, int json, pk_sim_result_t *r)
{
    world_t *w = calloc(1, sizeof *w);
    int rc = PK_ERR_NOMEM;
    if (!w)
        return rc;
    w->o = o;
    w->nc = o->devices ? o->devices : 64;
    if (w->nc < 3 || w->nc > MAX_CLIENTS) {
        free(w);
        return PK_ERR_INVAL;
    }
    w->ni = 2 + w->nc / 16;
    w->k = (w->nc - 1) / 2 < K_NEIGH ? (w->nc - 1) / 2 : K_NEIGH;
    w->crash_ppm = pk_sim_ppm(o->crash_rate);
    w->cur_mk = 1;
    pk_sim_rng_seed(&w->chaos, o->seed, 11);
    pk_sim_rng_seed(&w->cr, o->seed, 12);
    w->rng = pk_sim_rng_as_pk(&w->cr);
    pk_sim_rng_bytes(&w->cr, &w->mk[0][0], sizeof w->mk);
    pk_sim_rng_bytes(&w->cr, w->mk_other, sizeof w->mk_other);
    pk_mk_cfg_default(&w->cfg);
    w->cfg.auth_timeout_ms = 2000;
    w->cfg.retry_ms = 3000;
    uint32_t np = w->nc + w->ni;
    w->cl = calloc(np, sizeof *w->cl);
    if (!w->cl)
        goto out;

    pk_sim_link_t link = {
        pk_sim_ppm(o->loss), pk_sim_ppm(o->dup), pk_sim_ppm(o->reorder), 2, 40, 2000};
    pk_sim_cfg_t cfg = {.seed = o->seed,
                        .nproc = np,
                        .max_events = 20000ull * np + 1000000,
                        .trace = o->trace,
                        .progress = o->progress,
                        .label = "mk"};
    pk_sim_ops_t ops = {dispatch, on_crash, on_restart};
    if ((rc = pk_sim_new(&w->sim, &cfg, &link, &ops, w)) != PK_OK)
        goto out;
    pk_sim_t *sim = w->sim;
    w->m_type[PK_MK_T_BEACON] = pk_sim_counter(sim, "BEACON", 1);
    w->m_type[PK_MK_T_START] = pk_sim_counter(sim, "START", 1);
    w->m_type[PK_MK_T_PROC] = pk_sim_counter(sim, "PROC", 1);
    w->m_type[PK_MK_T_END1] = pk_sim_counter(sim, "END1", 1);
    w->m_type[PK_MK_T_END2] = pk_sim_counter(sim, "END2", 1);
    w->c_keys = pk_sim_counter(sim, "individual keys stored", 0);
    w->c_starts = pk_sim_counter(sim, "authentications started", 0);
    w->c_renew = pk_sim_counter(sim, "renewals reported by tables", 0);
    w->c_refused = pk_sim_counter(sim, "datagrams refused by cores", 0);
    w->c_dropped = pk_sim_counter(sim, "authentications timed out", 0);
    w->c_pastdue = pk_sim_counter(sim, "deadlines already past when armed", 0);
    for (uint32_t p = 0; p < np; p++) {
        client_id(w, p, w->cl[p].id);
        client_boot(w, p);
        arm(w, p, 0);
    }
    pk_sim_at(sim, 1000, EV_CHAOS, 0, 0);
    pk_sim_at(sim, T_ROT_MS, EV_MK, 0, 0);
    pk_sim_at(sim, T_PART_MS, EV_PART, 0, 0);
    pk_sim_at(sim, T_PART_MS + PART_LEN_MS, EV_PART, 0, 1);
    pk_sim_at(sim, CHAOS_MS, EV_QUIET, 0, 0);
    rc = pk_sim_run(sim, CHAOS_MS + QUIET_MS);
    if (rc == PK_ERR_LIMIT)
        pk_sim_fail(sim, "event budget exhausted (livelock?)");
    check(w);
    if (summary) {
        if (!json)
            fprintf(summary, "scenario mk: seed %" PRIu64 ", %u clients, %u intruders\n", o->seed,
                    w->nc, w->ni);
        pk_sim_summary(sim, summary, json);
    }
    r->trace_hash = pk_sim_trace_hash(sim);
    r->failures = pk_sim_failures(sim);
    snprintf(r->first_failure, sizeof r->first_failure, "%s", pk_sim_first_failure(sim));
    pk_sim_stats_t st;
    pk_sim_stats(sim, &st);
    r->events = st.events;
    r->virtual_ms = pk_sim_now(sim);
    rc = PK_OK;
out:
    if (w->cl)
        for (uint32_t p = 0; p < np; p++)
            pk_mk_client_clear(&w->cl[p].c);
    pk_sim_free(w->sim);
    pk_wipe(w->mk, sizeof w->mk);
    pk_wipe(w->mk_other, sizeof w->mk_other);
    free(w->cl);
    free(w);
    return rc;
}
