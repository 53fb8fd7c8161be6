#include "net/loop.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* Longest single sleep; a loop with no timers still wakes now and then. */
#define MAX_SLEEP_MS 3600000
#define NO_POS       UINT32_MAX

struct fd_ent {
    pk_loop_fd_cb cb;
    void *ctx;
    unsigned events;
    uint32_t gen; /* bumped on every add, so stale epoll events are recognised */
    uint8_t used;
};

/* A timer slot. A timer id is (gen << 32) | (slot index + 1); gen is bumped
 * whenever the slot is released, so ids of fired or cancelled timers go stale. */
struct timer_slot {
    uint64_t deadline;
    uint64_t seq; /* insertion order: ties on deadline fire first-in first-out */
    pk_loop_timer_cb cb;
    void *ctx;
    uint32_t gen;
    uint32_t pos;       /* index in the heap, NO_POS when free */
    uint32_t next_free; /* free-list link, NO_POS at the end */
};

struct pk_loop {
    int epfd;
    int wakefd; /* eventfd written by pk_loop_stop() */
    int sigfd;  /* signalfd, -1 until pk_loop_signals() */
    sigset_t old_mask;
    pk_loop_signal_cb sig_cb;
    void *sig_ctx;
    atomic_int stop;
    uint64_t now_ms;

    struct fd_ent *fds; /* indexed by fd */
    size_t nfds;

    struct timer_slot *slots;
    uint32_t nslots, free_head;
    uint32_t *heap; /* slot indices, a binary min-heap on (deadline, seq) */
    uint32_t nheap;
    uint64_t seq;
};

uint64_t pk_now_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t pk_now_realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t pk_loop_now_ms(const pk_loop_t *loop)
{
    return loop->now_ms;
}

uint64_t pk_loop_update_now(pk_loop_t *loop)
{
    loop->now_ms = pk_now_mono_ms();
    return loop->now_ms;
}

/* ---- fds ---- */

static uint32_t to_epoll(unsigned ev)
{
    return ((ev & PK_EV_READ) ? EPOLLIN : 0u) | ((ev & PK_EV_WRITE) ? EPOLLOUT : 0u);
}

static void wake_cb(pk_loop_t *loop, int fd, unsigned events, void *ctx);
static void signal_cb(pk_loop_t *loop, int fd, unsigned events, void *ctx);

int pk_loop_add_fd(pk_loop_t *loop, int fd, unsigned events, pk_loop_fd_cb cb, void *ctx)
{
    if (fd < 0 || cb == NULL)
        return PK_ERR_INVAL;
    if ((size_t)fd >= loop->nfds) {
        size_t n = loop->nfds ? loop->nfds : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct fd_ent *f = realloc(loop->fds, n * sizeof *f);
        if (f == NULL)
            return PK_ERR_NOMEM;
        memset(f + loop->nfds, 0, (n - loop->nfds) * sizeof *f);
        loop->fds = f;
        loop->nfds = n;
    }
    struct fd_ent *e = &loop->fds[fd];
    if (e->used)
        return PK_ERR_EXISTS;
    uint32_t gen = e->gen + 1;
    struct epoll_event ev = {.events = to_epoll(events),
                             .data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return errno == EEXIST ? PK_ERR_EXISTS : PK_ERR_IO;
    e->cb = cb;
    e->ctx = ctx;
    e->events = events;
    e->gen = gen;
    e->used = 1;
    return PK_OK;
}

int pk_loop_mod_fd(pk_loop_t *loop, int fd, unsigned events)
{
    if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].used)
        return PK_ERR_NOTFOUND;
    struct fd_ent *e = &loop->fds[fd];
    if (e->events == events)
        return PK_OK;
    struct epoll_event ev = {.events = to_epoll(events),
                             .data.u64 = ((uint64_t)e->gen << 32) | (uint32_t)fd};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
        return PK_ERR_IO;
    e->events = events;
    return PK_OK;
}

int pk_loop_del_fd(pk_loop_t *loop, int fd)
{
    if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].used)
        return PK_ERR_NOTFOUND;
    /* Fails only if fd was already closed, which removed it from epoll. */
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    loop->fds[fd].used = 0;
    loop->fds[fd].cb = NULL;
    loop->fds[fd].ctx = NULL;
    return PK_OK;
}

/* ---- timers: binary min-heap of slot indices ---- */

static int timer_less(const pk_loop_t *loop, uint32_t a, uint32_t b)
{
    const struct timer_slot *x = &loop->slots[a], *y = &loop->slots[b];
    return x->deadline < y->deadline || (x->deadline == y->deadline && x->seq < y->seq);
}

static void heap_set(pk_loop_t *loop, uint32_t pos, uint32_t slot)
{
    loop->heap[pos] = slot;
    loop->slots[slot].pos = pos;
}

static void sift_up(pk_loop_t *loop, uint32_t pos)
{
    uint32_t s = loop->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!timer_less(loop, s, loop->heap[parent]))
            break;
        heap_set(loop, pos, loop->heap[parent]);
        pos = parent;
    }
    heap_set(loop, pos, s);
}

static void sift_down(pk_loop_t *loop, uint32_t pos)
{
    uint32_t s = loop->heap[pos];
    for (;;) {
        uint32_t l = 2 * pos + 1, r = l + 1, m = pos;
        uint32_t best = s;
        if (l < loop->nheap && timer_less(loop, loop->heap[l], best)) {
            m = l;
            best = loop->heap[l];
        }
        if (r < loop->nheap && timer_less(loop, loop->heap[r], best))
            m = r;
        if (m == pos)
            break;
        heap_set(loop, pos, loop->heap[m]);
        pos = m;
    }
    heap_set(loop, pos, s);
}

/* Removes the slot at heap position pos and releases the slot. */
static void heap_remove(pk_loop_t *loop, uint32_t pos)
{
    uint32_t slot = loop->heap[pos];
    uint32_t last = loop->heap[--loop->nheap];
    if (pos < loop->nheap) {
        heap_set(loop, pos, last);
        if (pos > 0 && timer_less(loop, last, loop->heap[(pos - 1) / 2]))
            sift_up(loop, pos);
        else
            sift_down(loop, pos);
    }
    struct timer_slot *t = &loop->slots[slot];
    t->pos = NO_POS;
    t->cb = NULL;
    t->ctx = NULL;
    t->gen++;
    if (t->gen == 0) /* keep ids distinct from the slot's earliest ones */
        t->gen = 1;
    t->next_free = loop->free_head;
    loop->free_head = slot;
}

uint64_t pk_loop_timer_add(pk_loop_t *loop, uint64_t deadline_ms, pk_loop_timer_cb cb, void *ctx)
{
    if (cb == NULL)
        return 0;
    if (loop->free_head == NO_POS) {
        uint32_t n = loop->nslots ? loop->nslots * 2 : 64;
        if (n >= NO_POS / 2)
            return 0;
        struct timer_slot *s = realloc(loop->slots, (size_t)n * sizeof *s);
        if (s == NULL)
            return 0;
        loop->slots = s;
        uint32_t *h = realloc(loop->heap, (size_t)n * sizeof *h);
        if (h == NULL)
            return 0;
        loop->heap = h;
        for (uint32_t i = loop->nslots; i < n; i++) {
            s[i] = (struct timer_slot){.gen = 1, .pos = NO_POS, .next_free = loop->free_head};
            loop->free_head = i;
        }
        loop->nslots = n;
    }
    uint32_t slot = loop->free_head;
    struct timer_slot *t = &loop->slots[slot];
    loop->free_head = t->next_free;
    t->deadline = deadline_ms;
    t->seq = loop->seq++;
    t->cb = cb;
    t->ctx = ctx;
    t->next_free = NO_POS;
    loop->heap[loop->nheap] = slot;
    t->pos = loop->nheap++;
    sift_up(loop, t->pos);
    return ((uint64_t)t->gen << 32) | ((uint64_t)slot + 1);
}

int pk_loop_timer_cancel(pk_loop_t *loop, uint64_t id)
{
    uint64_t low = id & 0xffffffffu;
    if (low == 0 || low > loop->nslots)
        return 0;
    struct timer_slot *t = &loop->slots[low - 1];
    if (t->pos == NO_POS || t->gen != (uint32_t)(id >> 32))
        return 0;
    heap_remove(loop, t->pos);
    return 1;
}

unsigned pk_loop_timer_count(const pk_loop_t *loop)
{
    return loop->nheap;
}

/* Fires due timers: at most PK_LOOP_MAX_TIMERS, and only those added before
 * this round started (a callback re-arming at "now" waits for the next one). */
static void run_timers(pk_loop_t *loop)
{
    uint64_t seq_mark = loop->seq;
    for (unsigned n = 0; n < PK_LOOP_MAX_TIMERS && loop->nheap > 0; n++) {
        uint32_t slot = loop->heap[0];
        struct timer_slot *t = &loop->slots[slot];
        if (t->deadline > loop->now_ms || t->seq >= seq_mark)
            break;
        pk_loop_timer_cb cb = t->cb;
        void *ctx = t->ctx;
        uint64_t id = ((uint64_t)t->gen << 32) | ((uint64_t)slot + 1);
        heap_remove(loop, 0); /* the id is stale from here on */
        cb(loop, id, ctx);
        if (atomic_load(&loop->stop))
            break;
    }
}

/* ---- loop ---- */

pk_loop_t *pk_loop_new(void)
{
    pk_loop_t *loop = calloc(1, sizeof *loop);
    if (loop == NULL)
        return NULL;
    loop->epfd = loop->wakefd = loop->sigfd = -1;
    loop->free_head = NO_POS;
    atomic_init(&loop->stop, 0);
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        goto fail;
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wakefd < 0)
        goto fail;
    if (pk_loop_add_fd(loop, loop->wakefd, PK_EV_READ, wake_cb, NULL) != PK_OK)
        goto fail;
    pk_loop_update_now(loop);
    return loop;
fail:
    pk_loop_free(loop);
    return NULL;
}

void pk_loop_free(pk_loop_t *loop)
{
    if (loop == NULL)
        return;
    if (loop->sigfd >= 0) {
        /* Drain what is pending so unblocking cannot kill the process. */
        struct signalfd_siginfo si;
        for (int i = 0; i < 64 && read(loop->sigfd, &si, sizeof si) == (ssize_t)sizeof si; i++)
            ;
        close(loop->sigfd);
        pthread_sigmask(SIG_SETMASK, &loop->old_mask, NULL);
    }
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    free(loop->fds);
    free(loop->slots);
    free(loop->heap);
    free(loop);
}

static void wake_cb(pk_loop_t *loop, int fd, unsigned events, void *ctx)
{
    uint64_t v;
    (void)loop;
    (void)events;
    (void)ctx;
    while (read(fd, &v, sizeof v) == (ssize_t)sizeof v)
        ;
}

static void signal_cb(pk_loop_t *loop, int fd, unsigned events, void *ctx)
{
    struct signalfd_siginfo si;
    (void)events;
    (void)ctx;
    for (int i = 0; i < 16 && read(fd, &si, sizeof si) == (ssize_t)sizeof si; i++) {
        int signo = (int)si.ssi_signo;
        if (loop->sig_cb != NULL)
            loop->sig_cb(loop, signo, loop->sig_ctx);
        if (signo == SIGINT || signo == SIGTERM)
            pk_loop_stop(loop);
    }
}

int pk_loop_signals(pk_loop_t *loop, pk_loop_signal_cb cb, void *ctx)
{
    sigset_t set;

    if (loop->sigfd >= 0)
        return PK_ERR_EXISTS;
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, &loop->old_mask) != 0)
        return PK_ERR_IO;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0 || pk_loop_add_fd(loop, fd, PK_EV_READ, signal_cb, NULL) != PK_OK) {
        if (fd >= 0)
            close(fd);
        pthread_sigmask(SIG_SETMASK, &loop->old_mask, NULL);
        return PK_ERR_IO;
    }
    loop->sigfd = fd;
    loop->sig_cb = cb;
    loop->sig_ctx = ctx;
    return PK_OK;
}

void pk_loop_stop(pk_loop_t *loop)
{
    uint64_t one = 1;
    atomic_store(&loop->stop, 1);
    /* A full eventfd counter (EAGAIN) still wakes the loop. */
    ssize_t r = write(loop->wakefd, &one, sizeof one);
    (void)r;
}

int pk_loop_run_once(pk_loop_t *loop, int max_wait_ms)
{
    struct epoll_event evs[PK_LOOP_MAX_EVENTS];
    int timeout = max_wait_ms < 0 ? MAX_SLEEP_MS : max_wait_ms;

    pk_loop_update_now(loop);
    if (loop->nheap > 0) {
        uint64_t next = loop->slots[loop->heap[0]].deadline;
        uint64_t wait = next <= loop->now_ms ? 0 : next - loop->now_ms;
        if (wait < (uint64_t)timeout)
            timeout = (int)wait;
    }
    if (atomic_load(&loop->stop))
        timeout = 0;
    int n = epoll_wait(loop->epfd, evs, PK_LOOP_MAX_EVENTS, timeout);
    if (n < 0) {
        if (errno != EINTR)
            return PK_ERR_IO;
        n = 0;
    }
    pk_loop_update_now(loop);
    for (int i = 0; i < n; i++) {
        int fd = (int)(uint32_t)evs[i].data.u64;
        uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
        if ((size_t)fd >= loop->nfds)
            continue;
        struct fd_ent *e = &loop->fds[fd];
        if (!e->used || e->gen != gen) /* deleted (or reused) earlier in this batch */
            continue;
        unsigned ready = ((evs[i].events & EPOLLIN) ? PK_EV_READ : 0u) |
                         ((evs[i].events & EPOLLOUT) ? PK_EV_WRITE : 0u) |
                         ((evs[i].events & (EPOLLERR | EPOLLHUP)) ? PK_EV_ERR : 0u);
        e->cb(loop, fd, ready, e->ctx);
    }
    run_timers(loop);
    return PK_OK;
}

int pk_loop_run(pk_loop_t *loop)
{
    int rc = PK_OK;
    while (!atomic_load(&loop->stop)) {
        rc = pk_loop_run_once(loop, -1);
        if (rc != PK_OK)
            break;
    }
    atomic_store(&loop->stop, 0);
    return rc;
}
