/*
 * The simulator: framework units (RNG, event order, network faults, crash
 * generations), every scenario over a fixed set of seeds at small scale
 * (invariants hold), replay (same seed, same trace hash; different seed,
 * different hash) and injected faults the invariant checker must catch.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "proto/sim/scen.h"
#include "proto/sim/sim.h"

static const uint64_t seeds[] = {1, 2, 3, 0xdeadbeef};
#define NSEEDS (sizeof seeds / sizeof seeds[0])

/* ---------------- framework ---------------- */

static void test_rng(void)
{
    pk_sim_rng_t a, b, c;
    pk_sim_rng_seed(&a, 42, 1);
    pk_sim_rng_seed(&b, 42, 1);
    pk_sim_rng_seed(&c, 42, 2);
    int same = 1, diff = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = pk_sim_rng_next(&a), y = pk_sim_rng_next(&b), z = pk_sim_rng_next(&c);
        same &= x == y;
        diff += x != z;
    }
    CHECK(same);
    CHECK(diff > 990);
    /* below() stays in range and hits every value */
    int hit[7] = {0};
    for (int i = 0; i < 7000; i++) {
        uint64_t v = pk_sim_rng_below(&a, 7);
        CHECK(v < 7);
        if (v < 7)
            hit[v]++;
    }
    for (int i = 0; i < 7; i++)
        CHECK(hit[i] > 800 && hit[i] < 1200);
    CHECK_EQ_INT(pk_sim_ppm(0.25), 250000);
    CHECK_EQ_INT(pk_sim_ppm(2), 1000000);
    CHECK_EQ_INT(pk_sim_ppm(-1), 0);
    int yes = 0;
    for (int i = 0; i < 10000; i++)
        yes += pk_sim_rng_ppm(&a, 300000);
    CHECK(yes > 2700 && yes < 3300);
    /* the pk_rng_t view draws the same stream */
    pk_sim_rng_seed(&a, 9, 9);
    pk_sim_rng_seed(&b, 9, 9);
    pk_rng_t g = pk_sim_rng_as_pk(&a);
    uint8_t x[13], y[13];
    CHECK_EQ_INT(pk_rng_fill(&g, x, sizeof x), PK_OK);
    pk_sim_rng_bytes(&b, y, sizeof y);
    CHECK_MEM(x, y, sizeof x);
}

typedef struct rec {
    uint64_t t[64];
    uint32_t what[64];
    unsigned n;
    int crashes, restarts;
} rec_t;

static void rec_dispatch(void *ctx, pk_sim_t *sim, const pk_sim_ev_t *ev)
{
    rec_t *r = ctx;
    if (r->n < 64) {
        r->t[r->n] = pk_sim_now(sim);
        r->what[r->n++] = ev->kind == PK_SIM_EV_MSG ? 1000u + ev->data[0] : (uint32_t)ev->arg;
    }
}
static void rec_crash(void *ctx, pk_sim_t *sim, uint32_t p)
{
    (void)sim;
    (void)p;
    ((rec_t *)ctx)->crashes++;
}
static void rec_restart(void *ctx, pk_sim_t *sim, uint32_t p)
{
    (void)sim;
    (void)p;
    ((rec_t *)ctx)->restarts++;
}

static void test_order_and_timers(void)
{
    rec_t r = {0};
    pk_sim_t *s;
    pk_sim_cfg_t cfg = {.seed = 1, .nproc = 2, .max_events = 1000};
    pk_sim_ops_t ops = {rec_dispatch, rec_crash, rec_restart};
    CHECK_EQ_INT(pk_sim_new(&s, &cfg, NULL, &ops, &r), PK_OK);
    /* same time: insertion order; earlier time first */
    CHECK_EQ_INT(pk_sim_timer(s, 0, 10, 2), PK_OK);
    CHECK_EQ_INT(pk_sim_timer(s, 0, 10, 3), PK_OK);
    CHECK_EQ_INT(pk_sim_timer(s, 0, 5, 1), PK_OK);
    CHECK_EQ_INT(pk_sim_timer(s, 1, 20, 99), PK_OK); /* stale after the crash below */
    CHECK_EQ_INT(pk_sim_at(s, 15, PK_SIM_EV_USER, 1, 4), PK_OK);
    CHECK_EQ_INT(pk_sim_at(s, 15, 1, 1, 4), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_sim_run(s, 12), PK_OK);
    CHECK_EQ_INT(r.n, 3);
    CHECK_EQ_INT(r.what[0], 1);
    CHECK_EQ_INT(r.what[1], 2);
    CHECK_EQ_INT(r.what[2], 3);
    CHECK_EQ_INT(pk_sim_now(s), 12);
    pk_sim_crash(s, 1, 100);
    CHECK(!pk_sim_up(s, 1));
    CHECK_EQ_INT(r.crashes, 1);
    uint8_t m = 7;
    CHECK_EQ_INT(pk_sim_send(s, 0, 1, 0, &m, 1), PK_OK); /* arrives while 1 is down */
    CHECK_EQ_INT(pk_sim_run(s, 200), PK_OK);
    CHECK_EQ_INT(r.n, 4); /* only the user event at 15 */
    CHECK_EQ_INT(r.what[3], 4);
    CHECK_EQ_INT(r.restarts, 1);
    CHECK(pk_sim_up(s, 1));
    pk_sim_stats_t st;
    pk_sim_stats(s, &st);
    CHECK_EQ_INT(st.stale_timers, 1);
    CHECK_EQ_INT(st.to_down, 1);
    /* after the restart a message gets through */
    CHECK_EQ_INT(pk_sim_send(s, 0, 1, 0, &m, 1), PK_OK);
    CHECK_EQ_INT(pk_sim_run(s, 300), PK_OK);
    CHECK_EQ_INT(r.n, 5);
    CHECK_EQ_INT(r.what[4], 1007);
    pk_sim_free(s);
}

static void test_network_faults(void)
{
    rec_t r = {0};
    pk_sim_t *s;
    pk_sim_cfg_t cfg = {.seed = 3, .nproc = 3, .max_events = 100000};
    pk_sim_ops_t ops = {rec_dispatch, NULL, NULL};
    pk_sim_link_t lossy = {500000, 0, 0, 1, 1, 0};
    CHECK_EQ_INT(pk_sim_new(&s, &cfg, &lossy, &ops, &r), PK_OK);
    uint8_t m = 1;
    for (int i = 0; i < 2000; i++)
        CHECK_EQ_INT(pk_sim_send(s, 0, 1, 0, &m, 1), PK_OK);
    CHECK_EQ_INT(pk_sim_run(s, 10), PK_OK);
    pk_sim_stats_t st;
    pk_sim_stats(s, &st);
    CHECK(st.lost > 850 && st.lost < 1150);
    CHECK_EQ_INT(st.delivered + st.lost, 2000);
    /* duplication: every message twice */
    pk_sim_link_t dup = {0, 1000000, 0, 1, 1, 0};
    pk_sim_set_all_links(s, &dup);
    CHECK_EQ_INT(pk_sim_send(s, 0, 1, 0, &m, 1), PK_OK);
    uint64_t before = st.delivered;
    CHECK_EQ_INT(pk_sim_run(s, 20), PK_OK);
    pk_sim_stats(s, &st);
    CHECK_EQ_INT(st.delivered - before, 2);
    /* partition: cut on arrival, healed afterwards */
    pk_sim_link_t ok = {0, 0, 0, 5, 5, 0};
    pk_sim_set_all_links(s, &ok);
    pk_sim_partition(s, 2, 1);
    CHECK_EQ_INT(pk_sim_send(s, 0, 2, 0, &m, 1), PK_OK);
    CHECK_EQ_INT(pk_sim_send(s, 0, 1, 0, &m, 1), PK_OK);
    CHECK_EQ_INT(pk_sim_run(s, 30), PK_OK);
    pk_sim_stats(s, &st);
    CHECK_EQ_INT(st.cut, 1);
    pk_sim_heal(s);
    CHECK_EQ_INT(pk_sim_send(s, 0, 2, 0, &m, 1), PK_OK);
    CHECK_EQ_INT(pk_sim_run(s, 40), PK_OK);
    pk_sim_stats(s, &st);
    CHECK_EQ_INT(st.cut, 1);
    /* reordering: with extra delays some later sends arrive first */
    pk_sim_link_t reo = {0, 0, 1000000, 1, 1, 50};
    pk_sim_set_all_links(s, &reo);
    r.n = 0;
    for (uint8_t i = 0; i < 20; i++)
        CHECK_EQ_INT(pk_sim_send(s, 0, 1, 0, &i, 1), PK_OK);
    CHECK_EQ_INT(pk_sim_run(s, 200), PK_OK);
    int inversions = 0;
    for (unsigned i = 1; i < r.n && i < 64; i++)
        inversions += r.what[i] < r.what[i - 1];
    CHECK(inversions > 0);
    pk_sim_free(s);
}

static void test_budget(void)
{
    rec_t r = {0};
    pk_sim_t *s;
    pk_sim_cfg_t cfg = {.seed = 1, .nproc = 1, .max_events = 3};
    pk_sim_ops_t ops = {rec_dispatch, NULL, NULL};
    CHECK_EQ_INT(pk_sim_new(&s, &cfg, NULL, &ops, &r), PK_OK);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(pk_sim_timer(s, 0, 1, 0), PK_OK);
    CHECK_EQ_INT(pk_sim_run(s, 10), PK_ERR_LIMIT);
    pk_sim_fail(s, "x=%d", 1);
    CHECK_EQ_INT(pk_sim_failures(s), 1);
    CHECK(strstr(pk_sim_first_failure(s), "x=1") != NULL);
    pk_sim_free(s);
}

/* ---------------- scenarios ---------------- */

static void opts(pk_sim_opts_t *o, uint64_t seed, uint32_t n)
{
    pk_sim_opts_default(o);
    o->seed = seed;
    o->devices = n;
    o->loss = 0.2;
    o->dup = 0.1;
    o->reorder = 0.2;
    o->crash_rate = 0.05;
}

static pk_sim_result_t run(const char *name, const pk_sim_opts_t *o)
{
    pk_sim_result_t r;
    int rc = pk_sim_scenario_run(name, o, NULL, 0, &r);
    CHECK_EQ_INT(rc, PK_OK);
    if (r.failures)
        fprintf(stderr, "  %s seed %" PRIu64 ": %" PRIu64 " failures, first: %s\n", name, o->seed,
                r.failures, r.first_failure);
    return r;
}

static void scenario_seeds(const char *name, uint32_t n)
{
    for (size_t i = 0; i < NSEEDS; i++) {
        pk_sim_opts_t o;
        opts(&o, seeds[i], n);
        pk_sim_result_t r = run(name, &o);
        CHECK_EQ_INT(r.failures, 0);
        CHECK(r.events > 1000);
    }
}

static void test_trigger_seeds(void)
{
    scenario_seeds("trigger", 150);
}

static void test_mk_seeds(void)
{
    scenario_seeds("mk", 24);
}

static void test_reg_seeds(void)
{
    scenario_seeds("reg", 60);
}

/* The value of summary line `name` (the scenario's counters), or -1. */
static long summary_counter(const char *text, const char *name)
{
    const char *p = strstr(text, name);
    if (!p)
        return -1;
    p += strlen(name);
    while (*p == ' ')
        p++;
    return *p >= '0' && *p <= '9' ? strtol(p, NULL, 10) : -1;
}

/* The kms as kms serve runs it (group_writes): every first registration is
 * deferred, its keys committed as intents, then answered from the store; a
 * kms crash between that commit and the answer is among the runs (the retry
 * must read back the same keys, or the pair's link fails). */
static void test_reg_group_commit(void)
{
    long deferred = 0, made = 0;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        pk_sim_opts_t o;
        opts(&o, seed, 40);
        o.crash_rate = 0.3;
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        CHECK(f != NULL);
        if (!f)
            return;
        pk_sim_result_t r;
        CHECK_EQ_INT(pk_sim_scenario_run("reg", &o, f, 0, &r), PK_OK);
        fclose(f);
        CHECK_EQ_INT(r.failures, 0);
        if (r.failures)
            fprintf(stderr, "  reg seed %" PRIu64 ": %s\n", seed, r.first_failure);
        long d = summary_counter(text, "kms requests deferred (group commit)");
        long m = summary_counter(text, "kms crashes after a deferred request's commit");
        CHECK(d >= 40); /* each device's first registration, at least */
        CHECK(m >= 0);
        deferred += d;
        made += m > 0 ? m : 0;
        free(text);
    }
    CHECK(deferred >= 12 * 40);
    CHECK(made > 0);
}

static void replay(const char *name, uint32_t n)
{
    pk_sim_opts_t o;
    opts(&o, 77, n);
    pk_sim_result_t a = run(name, &o), b = run(name, &o);
    o.seed = 78;
    pk_sim_result_t c = run(name, &o);
    CHECK(a.trace_hash == b.trace_hash);
    CHECK(a.events == b.events);
    CHECK(a.trace_hash != c.trace_hash);
}

/* Paged key sets under loss, duplication, reordering and crashes: 80
 * option-1 devices in one group hold 79 root keys each (the accept's 32 and
 * two pages) at every registration, for every seed. */
static void test_reg_crowd_seeds(void)
{
    for (size_t i = 0; i < NSEEDS; i++) {
        pk_sim_opts_t o;
        opts(&o, seeds[i], 100);
        o.pool_pct = 0;
        o.crowd = 80;
        pk_sim_result_t r = run("reg", &o);
        CHECK_EQ_INT(r.failures, 0);
        CHECK(r.events > 1000);
    }
}

static void test_replay(void)
{
    replay("trigger", 60);
    replay("mk", 12);
    replay("reg", 24);
}

/* The full trace written to a file is identical for the same seed. */
static void test_trace_file(void)
{
    pk_sim_opts_t o;
    opts(&o, 5, 20);
    char *buf[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    uint64_t h[2];
    for (int i = 0; i < 2; i++) {
        FILE *f = open_memstream(&buf[i], &len[i]);
        CHECK(f != NULL);
        if (!f)
            return;
        o.trace = f;
        pk_sim_result_t r = run("trigger", &o);
        h[i] = r.trace_hash;
        fclose(f);
    }
    CHECK(len[0] > 1000);
    CHECK(len[0] == len[1]);
    if (len[0] == len[1])
        CHECK_MEM(buf[0], buf[1], len[0]);
    CHECK(h[0] == h[1]);
    free(buf[0]);
    free(buf[1]);
}

static void test_unknown_scenario(void)
{
    pk_sim_opts_t o;
    pk_sim_result_t r;
    pk_sim_opts_default(&o);
    CHECK_EQ_INT(pk_sim_scenario_run("nope", &o, NULL, 0, &r), PK_ERR_INVAL);
}

/* ---------------- injected faults must be caught ---------------- */

static void test_fault_mk_corrupt(void)
{
    pk_sim_opts_t o;
    opts(&o, 1, 16);
    o.fault = PK_SIM_FAULT_MK_CORRUPT;
    pk_sim_result_t r = run("mk", &o);
    CHECK(r.failures > 0);
    CHECK(strstr(r.first_failure, "different") != NULL);
}

static void test_fault_trigger_no_persist(void)
{
    pk_sim_opts_t o;
    opts(&o, 1, 40);
    o.crash_rate = 0.3;
    o.fault = PK_SIM_FAULT_TRIG_NO_PERSIST;
    pk_sim_result_t r = run("trigger", &o);
    CHECK(r.failures > 0);
}

static void test_fault_trigger_double(void)
{
    pk_sim_opts_t o;
    opts(&o, 1, 40);
    o.fault = PK_SIM_FAULT_TRIG_DOUBLE;
    pk_sim_result_t r = run("trigger", &o);
    CHECK(r.failures > 0);
    CHECK(strstr(r.first_failure, "applied seq=1 2 times") != NULL);
}

/* A corrupted root key on one side: the link can never be verified. */
static void test_fault_reg_corrupt(void)
{
    pk_sim_opts_t o;
    opts(&o, 1, 12);
    o.fault = PK_SIM_FAULT_REG_CORRUPT;
    pk_sim_result_t r = run("reg", &o);
    CHECK(r.failures > 0);
    CHECK(strstr(r.first_failure, "pair 0 ") != NULL);
    /* the same run without the fault holds */
    o.fault = PK_SIM_FAULT_NONE;
    r = run("reg", &o);
    CHECK_EQ_INT(r.failures, 0);
}

int main(void)
{
    RUN(test_rng);
    RUN(test_order_and_timers);
    RUN(test_network_faults);
    RUN(test_budget);
    RUN(test_unknown_scenario);
    RUN(test_trigger_seeds);
    RUN(test_mk_seeds);
    RUN(test_reg_seeds);
    RUN(test_reg_crowd_seeds);
    RUN(test_reg_group_commit);
    RUN(test_replay);
    RUN(test_trace_file);
    RUN(test_fault_mk_corrupt);
    RUN(test_fault_trigger_no_persist);
    RUN(test_fault_trigger_double);
    RUN(test_fault_reg_corrupt);
    return check_report();
}
