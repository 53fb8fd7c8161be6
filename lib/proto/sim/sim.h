/*
 * The deterministic simulator framework (STYLE.md §7: FoundationDB's
 * simulation testing and strongSwan's exchange helper, generalised).
 *
 * One pk_sim_t is a world: a virtual clock, one event queue ordered by
 * (time, seq), a virtual network with per-link loss, duplication, reordering,
 * delay and partitions, processes that crash and restart, a trace whose hash
 * identifies the run, named counters and an invariant-failure log. No
 * sockets, no real time, no global state: everything derives from one seed,
 * so `--seed N` replays a run byte for byte.
 *
 * The protocol logic is not here: scenarios (scen_*.c) link the real cores
 * (lib/proto/trigger, mk, reg, link) and the store's memory: backend, and use
 * this file only for time, transport, faults and bookkeeping.
 *
 * Processes are numbered 0..nproc-1 (a scenario's servers and devices).
 * Each has an up flag, a generation (bumped at every crash, so timers armed
 * before a crash are stale afterwards: STYLE.md §6, "a late timer for a dead
 * session is normal"), a class (selects the link parameters) and a partition
 * group.
 *
 * Ownership: pk_sim_send() copies the payload; the event passed to the
 * dispatch callback and its data are borrowed for the call only.
 * Errors: PK_ERR_NOMEM (allocation), PK_ERR_LIMIT (event budget exhausted),
 * PK_ERR_INVAL (bad argument).
 */
#ifndef PK_PROTO_SIM_SIM_H
#define PK_PROTO_SIM_SIM_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/crypto.h"
#include "core/err.h"

/* ---- Seeded random source ----
 *
 * xoshiro256** seeded through SplitMix64 (Blackman & Vigna). Not
 * cryptographic, by choice: the simulator needs determinism and speed
 * (100,000 devices draw millions of nonces); its keys protect nothing. A
 * ChaCha20/AES-CTR DRBG over OpenSSL would cost an EVP call per draw for no
 * gain here. Daemons never use it: they get pk_rng_system. Each role gets
 * its own stream (seed, stream) so that one role's draws do not shift
 * another's. */
typedef struct pk_sim_rng {
    uint64_t s[4];
} pk_sim_rng_t;

void pk_sim_rng_seed(pk_sim_rng_t *r, uint64_t seed, uint64_t stream);
uint64_t pk_sim_rng_next(pk_sim_rng_t *r);
/* Uniform in [0, n); n >= 1 (0 returns 0). Unbiased (rejection). */
uint64_t pk_sim_rng_below(pk_sim_rng_t *r, uint64_t n);
/* True with probability ppm / 1,000,000. */
int pk_sim_rng_ppm(pk_sim_rng_t *r, uint32_t ppm);
void pk_sim_rng_bytes(pk_sim_rng_t *r, uint8_t *buf, size_t n);
/* A pk_rng_t drawing from r (borrowed: r must outlive it). */
pk_rng_t pk_sim_rng_as_pk(pk_sim_rng_t *r);

/* A probability as parts per million, clamped to [0, 1]. */
uint32_t pk_sim_ppm(double p);

/* ---- Links ---- */

typedef struct pk_sim_link {
    uint32_t loss_ppm;    /* each copy is lost with this probability */
    uint32_t dup_ppm;     /* a second copy is sent with this probability */
    uint32_t reorder_ppm; /* a copy gets an extra delay in [0, reorder_ms) */
    uint32_t delay_min_ms, delay_max_ms;
    uint32_t reorder_ms;
} pk_sim_link_t;

#define PK_SIM_CLASSES 4 /* process classes; link parameters per (from, to) class */

/* ---- Events ---- */

enum pk_sim_kind {
    PK_SIM_EV_MSG = 1,     /* a datagram arrives: src, dst, code, data, len */
    PK_SIM_EV_TIMER = 2,   /* a timer of dst fires; arg as armed */
    PK_SIM_EV_RESTART = 3, /* internal: dst comes back up */
    PK_SIM_EV_USER = 16,   /* scenario events: kind >= PK_SIM_EV_USER */
};

typedef struct pk_sim_ev {
    uint64_t t, seq;
    uint64_t arg;
    uint8_t *data;
    uint32_t len;
    uint32_t kind;
    uint32_t src, dst;
    uint32_t gen; /* dst's generation when scheduled (timers) */
    uint16_t code;
} pk_sim_ev_t;

typedef struct pk_sim pk_sim_t;

typedef struct pk_sim_ops {
    /* A MSG for an up process, a TIMER whose generation is current, or a
     * USER event (delivered whatever the process state). */
    void (*dispatch)(void *ctx, pk_sim_t *sim, const pk_sim_ev_t *ev);
    /* proc has crashed: drop its soft state (it is already marked down). */
    void (*crash)(void *ctx, pk_sim_t *sim, uint32_t proc);
    /* proc is back up: rebuild from durable state and re-arm timers. */
    void (*restart)(void *ctx, pk_sim_t *sim, uint32_t proc);
} pk_sim_ops_t;

typedef struct pk_sim_cfg {
    uint64_t seed;
    uint32_t nproc;
    uint64_t max_events; /* budget for the whole run (a bound on every loop) */
    FILE *trace;         /* full trace lines, or NULL */
    int progress;        /* draw a progress bar on stderr */
    const char *label;   /* progress bar label */
} pk_sim_cfg_t;

/* Creates a world at time 0 with every process up, class 0, group 0, and
 * every link set to `link` (NULL: perfect, 1 ms). ops/ctx borrowed. */
int pk_sim_new(pk_sim_t **out, const pk_sim_cfg_t *cfg, const pk_sim_link_t *link,
               const pk_sim_ops_t *ops, void *ctx);
void pk_sim_free(pk_sim_t *sim);

uint64_t pk_sim_now(const pk_sim_t *sim);
/* The world's own stream (network draws); scenarios seed their own with
 * pk_sim_seed(). */
uint64_t pk_sim_seed(const pk_sim_t *sim);

void pk_sim_set_class(pk_sim_t *sim, uint32_t proc, uint8_t cls);
void pk_sim_set_link(pk_sim_t *sim, uint8_t from_cls, uint8_t to_cls, const pk_sim_link_t *l);
/* Every link, all classes. */
void pk_sim_set_all_links(pk_sim_t *sim, const pk_sim_link_t *l);

/* ---- Network ---- */

/*
 * Sends len bytes (copied) from src to dst. code is a counter id from
 * pk_sim_counter() naming the message type (counted once per send, and
 * shown in the trace). Loss, duplication, delay and reordering are drawn
 * here; partitions and the receiver being down are checked on arrival.
 * A send from a process that is down is a bug in the scenario (aborts).
 */
int pk_sim_send(pk_sim_t *sim, uint32_t src, uint32_t dst, uint16_t code, const uint8_t *data,
                size_t len);

/* Puts proc in partition group g (0 = the main group). Messages between
 * different groups are dropped on arrival. pk_sim_heal() puts all in 0. */
void pk_sim_partition(pk_sim_t *sim, uint32_t proc, uint8_t g);
void pk_sim_heal(pk_sim_t *sim);

/* ---- Timers and scenario events ---- */

/* A timer for proc at time t (>= now): fires only if proc has not crashed
 * since (generation unchanged). */
int pk_sim_timer(pk_sim_t *sim, uint32_t proc, uint64_t t, uint64_t arg);
/* A scenario event of kind (>= PK_SIM_EV_USER) at t, always delivered. */
int pk_sim_at(pk_sim_t *sim, uint64_t t, uint32_t kind, uint32_t proc, uint64_t arg);

/* ---- Processes ---- */

int pk_sim_up(const pk_sim_t *sim, uint32_t proc);
uint32_t pk_sim_gen(const pk_sim_t *sim, uint32_t proc);
/* Crashes proc now (if up): marks it down, bumps its generation, calls
 * ops->crash, and schedules its restart down_ms later. */
void pk_sim_crash(pk_sim_t *sim, uint32_t proc, uint64_t down_ms);

/* ---- Running ---- */

/* Processes every event with time <= until_ms in (time, seq) order; the
 * clock ends at until_ms. PK_ERR_LIMIT when the event budget runs out. */
int pk_sim_run(pk_sim_t *sim, uint64_t until_ms);

/* ---- Trace, counters, failures ---- */

/* Appends "t=<now> <text>\n" to the trace (hashed; written when a trace
 * file is set). */
void pk_sim_trace(pk_sim_t *sim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* FNV-1a 64 of every trace byte so far. */
uint64_t pk_sim_trace_hash(const pk_sim_t *sim);

#define PK_SIM_COUNTERS 96
/* Registers (or finds) a named counter; returns its id (>= 1), 0 when the
 * table is full. name is borrowed (a string literal). msg: a message type
 * (listed under "messages" in the summary). */
uint16_t pk_sim_counter(pk_sim_t *sim, const char *name, int msg);
void pk_sim_count(pk_sim_t *sim, uint16_t id, uint64_t n);
uint64_t pk_sim_counter_get(const pk_sim_t *sim, const char *name);

/* Records an invariant violation (traced with its time). */
void pk_sim_fail(pk_sim_t *sim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint64_t pk_sim_failures(const pk_sim_t *sim);
/* The first failure message ("" when none). */
const char *pk_sim_first_failure(const pk_sim_t *sim);

typedef struct pk_sim_stats {
    uint64_t events, sent, delivered, lost, duplicated, reordered, cut, to_down;
    uint64_t crashes, restarts, stale_timers;
    size_t peak_queue;
} pk_sim_stats_t;
void pk_sim_stats(const pk_sim_t *sim, pk_sim_stats_t *st);

/*
 * Prints the summary: network totals, messages by type, every other
 * counter, crashes/restarts, failures, trace hash. json: one JSON object.
 */
void pk_sim_summary(const pk_sim_t *sim, FILE *f, int json);

#endif
