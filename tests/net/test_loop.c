/* The event loop: timer order and cancellation, fd dispatch, stop, signals. */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "check.h"
#include "net/loop.h"

#define MAXREC 4096

struct rec {
    int n;
    int tags[MAXREC];
    uint64_t ids[MAXREC];
    pk_loop_t *loop;
    int stop_after; /* stop the loop after this many firings (0 = never) */
};

struct tag {
    struct rec *r;
    int tag;
};

static void rec_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    struct tag *t = ctx;
    struct rec *r = t->r;
    if (r->n < MAXREC) {
        r->tags[r->n] = t->tag;
        r->ids[r->n] = id;
    }
    r->n++;
    if (r->stop_after && r->n == r->stop_after)
        pk_loop_stop(loop);
}

/* Runs the loop until stopped, with a guard so a broken loop cannot hang. */
static void guard_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    (void)id;
    *(int *)ctx = 1;
    pk_loop_stop(loop);
}

static int run_guarded(pk_loop_t *loop, uint64_t ms)
{
    int fired = 0;
    uint64_t g = pk_loop_timer_add(loop, pk_loop_update_now(loop) + ms, guard_cb, &fired);
    CHECK(g != 0);
    CHECK_EQ_INT(pk_loop_run(loop), PK_OK);
    pk_loop_timer_cancel(loop, g);
    return fired;
}

static void test_timers_fire_in_order(void)
{
    pk_loop_t *loop = pk_loop_new();
    struct rec r = {.stop_after = 5};
    struct tag t[5] = {{&r, 30}, {&r, 10}, {&r, 20}, {&r, 11}, {&r, 0}};
    CHECK(loop != NULL);
    uint64_t now = pk_loop_update_now(loop);
    pk_loop_timer_add(loop, now + 30, rec_cb, &t[0]);
    pk_loop_timer_add(loop, now + 10, rec_cb, &t[1]);
    pk_loop_timer_add(loop, now + 20, rec_cb, &t[2]);
    pk_loop_timer_add(loop, now + 10, rec_cb, &t[3]); /* same deadline: after tag 10 */
    pk_loop_timer_add(loop, now - 5, rec_cb, &t[4]);  /* already due */
    CHECK_EQ_INT(pk_loop_timer_count(loop), 5);
    uint64_t start = pk_now_mono_ms();
    CHECK_EQ_INT(run_guarded(loop, 2000), 0);
    uint64_t took = pk_now_mono_ms() - start;
    CHECK_EQ_INT(r.n, 5);
    int want[5] = {0, 10, 11, 20, 30};
    CHECK_MEM(r.tags, want, sizeof want);
    CHECK(took >= 29);  /* the 30 ms timer did not fire early */
    CHECK(took < 1000); /* nor absurdly late */
    CHECK_EQ_INT(pk_loop_timer_count(loop), 0);
    pk_loop_free(loop);
}

static void test_cancel_and_stale_ids(void)
{
    pk_loop_t *loop = pk_loop_new();
    struct rec r = {0};
    struct tag a = {&r, 1}, b = {&r, 2}, c = {&r, 3};
    uint64_t now = pk_loop_update_now(loop);

    uint64_t ia = pk_loop_timer_add(loop, now, rec_cb, &a);
    uint64_t ib = pk_loop_timer_add(loop, now, rec_cb, &b);
    CHECK(ia != 0 && ib != 0 && ia != ib);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, ia), 1);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, ia), 0); /* twice: harmless */
    CHECK_EQ_INT(pk_loop_run_once(loop, 0), PK_OK);
    CHECK_EQ_INT(r.n, 1);
    CHECK_EQ_INT(r.tags[0], 2);
    CHECK(r.ids[0] == ib);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, ib), 0); /* already fired */

    /* A new timer reuses a freed slot; the stale ids must not cancel it. */
    uint64_t ic = pk_loop_timer_add(loop, now, rec_cb, &c);
    CHECK(ic != ia && ic != ib);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, ia), 0);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, ib), 0);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, 0), 0);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, 0xffffffffffffffffull), 0);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, (ic & 0xffffffffu) | (1ull << 40)), 0);
    CHECK_EQ_INT(pk_loop_run_once(loop, 0), PK_OK);
    CHECK_EQ_INT(r.n, 2);
    CHECK_EQ_INT(r.tags[1], 3);
    pk_loop_free(loop);
}

/* A callback that cancels another pending timer and cancels its own (fired) id. */
struct cancel_ctx {
    uint64_t victim, self;
    int fired, self_cancel_rc;
};
static void canceller_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    struct cancel_ctx *cc = ctx;
    cc->fired++;
    CHECK(id == cc->self);
    cc->self_cancel_rc = pk_loop_timer_cancel(loop, id);
    CHECK_EQ_INT(pk_loop_timer_cancel(loop, cc->victim), 1);
}

/* A callback that re-arms itself at "now" forever: must not starve the loop. */
static void rearm_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    (void)id;
    (*(int *)ctx)++;
    pk_loop_timer_add(loop, pk_loop_now_ms(loop), rearm_cb, ctx);
}

static void test_cancel_from_callback_and_no_starvation(void)
{
    pk_loop_t *loop = pk_loop_new();
    struct rec r = {0};
    struct tag v = {&r, 9};
    struct cancel_ctx cc = {0};
    uint64_t now = pk_loop_update_now(loop);

    cc.self = pk_loop_timer_add(loop, now, canceller_cb, &cc);
    cc.victim = pk_loop_timer_add(loop, now, rec_cb, &v);
    CHECK_EQ_INT(pk_loop_run_once(loop, 0), PK_OK);
    CHECK_EQ_INT(cc.fired, 1);
    CHECK_EQ_INT(cc.self_cancel_rc, 0);
    CHECK_EQ_INT(r.n, 0); /* victim was cancelled before its turn */

    int spins = 0;
    pk_loop_timer_add(loop, now, rearm_cb, &spins);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(pk_loop_run_once(loop, 0), PK_OK);
    CHECK_EQ_INT(spins, 5); /* one firing per iteration, not an endless loop */
    pk_loop_free(loop);
}

/* Many timers with pseudo-random deadlines, half cancelled: the rest fire
 * exactly once each, in deadline order. Compares against a naive model. */
static void test_heap_against_model(void)
{
    enum { N = 3000 };
    static struct tag tags[N];
    static uint64_t ids[N], deadline[N];
    static int cancelled[N];
    static struct rec r;
    pk_loop_t *loop = pk_loop_new();
    uint64_t now = pk_loop_update_now(loop), x = 88172645463325252ull;

    memset(&r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        deadline[i] = now - 10000 + x % 5000; /* all due */
        tags[i] = (struct tag){&r, i};
        ids[i] = pk_loop_timer_add(loop, deadline[i], rec_cb, &tags[i]);
        CHECK(ids[i] != 0);
    }
    int live = N;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (x & 1) {
            cancelled[i] = 1;
            CHECK_EQ_INT(pk_loop_timer_cancel(loop, ids[i]), 1);
            live--;
        }
    }
    CHECK_EQ_INT(pk_loop_timer_count(loop), live);
    for (int it = 0; it < 100 && pk_loop_timer_count(loop) > 0; it++)
        pk_loop_run_once(loop, 0);
    CHECK_EQ_INT(r.n, live);
    for (int k = 1; k < r.n && k < MAXREC; k++) {
        int p = r.tags[k - 1], q = r.tags[k];
        CHECK(deadline[p] < deadline[q] || (deadline[p] == deadline[q] && p < q));
    }
    for (int k = 0; k < r.n && k < MAXREC; k++)
        CHECK(!cancelled[r.tags[k]]);
    pk_loop_free(loop);
}

/* ---- fds ---- */

struct fdrec {
    int hits[2];
    int fds[2];
    pk_loop_t *loop;
};

static void fd0_cb(pk_loop_t *loop, int fd, unsigned ev, void *ctx)
{
    struct fdrec *f = ctx;
    char b[16];
    CHECK(ev & PK_EV_READ);
    CHECK(read(fd, b, sizeof b) > 0);
    f->hits[0]++;
    /* Delete the other fd, whose event is in the same batch. */
    CHECK_EQ_INT(pk_loop_del_fd(loop, f->fds[1]), PK_OK);
}

static void fd1_cb(pk_loop_t *loop, int fd, unsigned ev, void *ctx)
{
    struct fdrec *f = ctx;
    char b[16];
    (void)loop;
    (void)ev;
    CHECK(read(fd, b, sizeof b) > 0);
    f->hits[1]++;
    CHECK_EQ_INT(pk_loop_del_fd(loop, f->fds[0]), PK_OK);
}

static void test_fd_dispatch_and_deleted_in_batch(void)
{
    pk_loop_t *loop = pk_loop_new();
    int p0[2], p1[2];
    struct fdrec f = {.loop = loop};
    CHECK(pipe(p0) == 0 && pipe(p1) == 0);
    f.fds[0] = p0[0];
    f.fds[1] = p1[0];
    CHECK_EQ_INT(pk_loop_add_fd(loop, p0[0], PK_EV_READ, fd0_cb, &f), PK_OK);
    CHECK_EQ_INT(pk_loop_add_fd(loop, p1[0], PK_EV_READ, fd1_cb, &f), PK_OK);
    CHECK_EQ_INT(pk_loop_add_fd(loop, p1[0], PK_EV_READ, fd1_cb, &f), PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_loop_run_once(loop, 0), PK_OK);
    CHECK_EQ_INT(f.hits[0] + f.hits[1], 0); /* nothing ready */
    CHECK(write(p0[1], "a", 1) == 1 && write(p1[1], "b", 1) == 1);
    CHECK_EQ_INT(pk_loop_run_once(loop, 1000), PK_OK);
    /* Whichever ran first deleted the other: exactly one callback ran. */
    CHECK_EQ_INT(f.hits[0] + f.hits[1], 1);
    CHECK_EQ_INT(pk_loop_mod_fd(loop, 12345, PK_EV_READ), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_loop_del_fd(loop, 12345), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_loop_del_fd(loop, f.hits[0] ? p0[0] : p1[0]), PK_OK);
    close(p0[0]);
    close(p1[0]);
    close(p0[1]);
    close(p1[1]);
    pk_loop_free(loop);
}

static void *stopper(void *arg)
{
    usleep(30000);
    pk_loop_stop(arg);
    return NULL;
}

static void test_stop_from_other_thread(void)
{
    pk_loop_t *loop = pk_loop_new();
    pthread_t th;
    uint64_t start = pk_now_mono_ms();
    CHECK(pthread_create(&th, NULL, stopper, loop) == 0);
    CHECK_EQ_INT(run_guarded(loop, 5000), 0); /* the thread stopped it, not the guard */
    pthread_join(th, NULL);
    CHECK(pk_now_mono_ms() - start < 2000);
    pk_loop_free(loop);
}

struct sigrec {
    int hup, term;
};
static void sig_cb(pk_loop_t *loop, int signo, void *ctx)
{
    struct sigrec *s = ctx;
    (void)loop;
    if (signo == SIGHUP)
        s->hup++;
    if (signo == SIGTERM)
        s->term++;
}

static void raise_term(pk_loop_t *loop, uint64_t id, void *ctx)
{
    (void)loop;
    (void)id;
    (void)ctx;
    kill(getpid(), SIGTERM);
}

static void test_signals(void)
{
    pk_loop_t *loop = pk_loop_new();
    struct sigrec s = {0};
    CHECK_EQ_INT(pk_loop_signals(loop, sig_cb, &s), PK_OK);
    CHECK_EQ_INT(pk_loop_signals(loop, sig_cb, &s), PK_ERR_EXISTS);
    kill(getpid(), SIGHUP); /* blocked: queued for the signalfd */
    for (int i = 0; i < 10 && s.hup == 0; i++)
        pk_loop_run_once(loop, 100);
    CHECK_EQ_INT(s.hup, 1);
    pk_loop_timer_add(loop, pk_loop_now_ms(loop) + 10, raise_term, NULL);
    CHECK_EQ_INT(run_guarded(loop, 3000), 0); /* SIGTERM stopped the loop */
    CHECK_EQ_INT(s.term, 1);
    pk_loop_free(loop); /* restores the mask; nothing pending */
}

static void test_wall_clock(void)
{
    uint64_t t = pk_now_realtime_ms();
    CHECK(t > 1600000000000ull); /* after 2020 */
    uint64_t a = pk_now_mono_ms(), b = pk_now_mono_ms();
    CHECK(b >= a);
}

int main(void)
{
    RUN(test_timers_fire_in_order);
    RUN(test_cancel_and_stale_ids);
    RUN(test_cancel_from_callback_and_no_starvation);
    RUN(test_heap_against_model);
    RUN(test_fd_dispatch_and_deleted_in_batch);
    RUN(test_stop_from_other_thread);
    RUN(test_signals);
    RUN(test_wall_clock);
    return check_report();
}
