/*
 * The shells' event loop: one epoll instance, file descriptors, timers and
 * signals, single-threaded. Protocol cores never see it: a shell turns fd
 * readiness into core inputs and a core's next_deadline() into a timer. The
 * simulator replaces the loop wholesale with its virtual network and clock.
 *
 * Each iteration of pk_loop_run():
 *   1. waits in epoll_wait() until an fd is ready or the earliest timer is due;
 *   2. caches the monotonic clock (pk_loop_now_ms() is constant while the
 *      callbacks of one iteration run);
 *   3. dispatches at most PK_LOOP_MAX_EVENTS fd events, then at most
 *      PK_LOOP_MAX_TIMERS due timers, so no source can starve the others.
 *
 * Callbacks may add, modify and delete fds and timers (including their own)
 * and call pk_loop_stop(). An fd deleted (or deleted and its number reused)
 * while events for it are pending in the current batch gets no stale event.
 *
 * Timers are identified by a 64-bit id, never 0. Cancelling an id that has
 * already fired or been cancelled is normal and harmless (a late or stale
 * timer is expected, STYLE.md §6): pk_loop_timer_cancel() returns 0 for it.
 *
 * Not thread-safe, except pk_loop_stop(), which may be called from any
 * thread or from a signal handler.
 */
#ifndef PK_NET_LOOP_H
#define PK_NET_LOOP_H

#include <stdint.h>

#include "core/err.h"

#define PK_LOOP_MAX_EVENTS 64  /* fd events dispatched per iteration */
#define PK_LOOP_MAX_TIMERS 256 /* due timers fired per iteration */

/* fd interest and readiness bits. PK_EV_ERR (EPOLLERR/EPOLLHUP) is always
 * reported; the callback then usually reads to learn the error and closes. */
enum { PK_EV_READ = 1u, PK_EV_WRITE = 2u, PK_EV_ERR = 4u };

typedef struct pk_loop pk_loop_t;

typedef void (*pk_loop_fd_cb)(pk_loop_t *loop, int fd, unsigned events, void *ctx);
typedef void (*pk_loop_timer_cb)(pk_loop_t *loop, uint64_t id, void *ctx);
typedef void (*pk_loop_signal_cb)(pk_loop_t *loop, int signo, void *ctx);

/* A new loop, or NULL when out of memory or file descriptors. */
pk_loop_t *pk_loop_new(void);

/* Frees the loop. Registered fds are not closed (their owners close them);
 * pending timers are dropped without firing. If pk_loop_signals() was used,
 * pending SIGINT/SIGTERM/SIGHUP are drained and the old signal mask restored.
 * NULL is accepted. */
void pk_loop_free(pk_loop_t *loop);

/*
 * Watches fd for events (PK_EV_READ | PK_EV_WRITE, level-triggered) and calls
 * cb(loop, fd, ready, ctx). The fd stays owned by the caller, who must
 * pk_loop_del_fd() it before closing it.
 * Returns PK_OK, PK_ERR_EXISTS (fd already watched), PK_ERR_INVAL, PK_ERR_NOMEM
 * or PK_ERR_IO (epoll_ctl failed).
 */
int pk_loop_add_fd(pk_loop_t *loop, int fd, unsigned events, pk_loop_fd_cb cb, void *ctx);

/* Changes the interest set of a watched fd. PK_OK, PK_ERR_NOTFOUND or PK_ERR_IO. */
int pk_loop_mod_fd(pk_loop_t *loop, int fd, unsigned events);

/* Stops watching fd; events already collected for it are not delivered.
 * PK_OK or PK_ERR_NOTFOUND. */
int pk_loop_del_fd(pk_loop_t *loop, int fd);

/*
 * Schedules cb(loop, id, ctx) at the monotonic time deadline_ms (compare
 * pk_loop_now_ms()); a deadline in the past fires on the next iteration.
 * Timers with equal deadlines fire in the order they were added. A timer
 * fires once. Returns its id (never 0), or 0 when out of memory.
 */
uint64_t pk_loop_timer_add(pk_loop_t *loop, uint64_t deadline_ms, pk_loop_timer_cb cb, void *ctx);

/* Cancels a pending timer: 1 if it was pending, 0 if the id is unknown,
 * already fired or already cancelled (harmless). */
int pk_loop_timer_cancel(pk_loop_t *loop, uint64_t id);

/* Number of pending timers. */
unsigned pk_loop_timer_count(const pk_loop_t *loop);

/* The monotonic clock (CLOCK_MONOTONIC) in ms, cached at the start of each
 * dispatch round; pk_loop_update_now() refreshes it. */
uint64_t pk_loop_now_ms(const pk_loop_t *loop);
uint64_t pk_loop_update_now(pk_loop_t *loop);

/* Uncached clocks: monotonic and wall (CLOCK_REALTIME, ms since the epoch). */
uint64_t pk_now_mono_ms(void);
uint64_t pk_now_realtime_ms(void);

/*
 * Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and receives them
 * through a signalfd on this loop. For each signal, cb (may be NULL) is
 * called first; then SIGINT and SIGTERM stop the loop. SIGPIPE is ignored
 * process-wide (writes to a closed socket then fail with EPIPE instead).
 * Call before starting other threads so they inherit the mask.
 * Returns PK_OK, PK_ERR_EXISTS (already set up) or PK_ERR_IO.
 */
int pk_loop_signals(pk_loop_t *loop, pk_loop_signal_cb cb, void *ctx);

/*
 * Runs until pk_loop_stop(). Returns PK_OK after a stop, or PK_ERR_IO if
 * epoll_wait fails for a reason other than EINTR. A stop requested before
 * pk_loop_run() makes it return at once (and clears the request).
 */
int pk_loop_run(pk_loop_t *loop);

/* Runs at most one iteration, waiting at most max_wait_ms (0 = poll).
 * For tests and for embedding the loop in another one. */
int pk_loop_run_once(pk_loop_t *loop, int max_wait_ms);

/* Asks pk_loop_run() to return after the current iteration. Safe from any
 * thread and from signal handlers (an eventfd wakes a sleeping loop). */
void pk_loop_stop(pk_loop_t *loop);

#endif
