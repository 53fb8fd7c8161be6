/*
 * `proxkey bench reg`: registrations per second through the real kms and
 * node daemons on loopback, with SQLite (synchronous=FULL) under the kms.
 *
 * Setup (in a fresh temporary directory, timed separately): a dev CA with
 * leaves for the kms and the node, `proxkey kms init`, then N devices added
 * in mode pairs, allowed two by two (dev i with dev i^1, so every accept
 * carries one root key) through the kms core's admin functions on a store
 * opened with sync=normal (provisioning only; the daemon runs with the
 * default, durable sync=full). Then `proxkey kms serve` and `proxkey node
 * serve` start as child processes, both pinned to CPU 0; this process, the
 * load generator, pins itself to CPU 1.
 *
 * The load generator runs N device cores (pk_reg_dev) over a few UDP
 * sockets with batched I/O (recvmmsg/sendmmsg), keeping --inflight
 * registrations in progress; a registration counts when the device core
 * opened and verified the accept (PK_REG_EV_REGISTERED). Datagrams are routed
 * to devices by nonce_d (CHALLENGE) and by the accept's record session id
 * (learned from the first verified accept; until then, trial open among the
 * socket's devices waiting for an accept, which changes no state on failure).
 *
 * A first pass registers every device once (first registrations create the
 * pair root keys and the directory entry, in the kms's group commit: their
 * answers leave after two commits); the measured rounds are
 * re-registrations. Figures: medians over rounds, beside
 * the issue's target (10,000/s) and MIT Kerberos' KDC (about 1,100 AS-REQ/s),
 * with the CPU time the kms and the node spent per registration. The
 * children are stopped by PID (SIGTERM, then SIGKILL) and the directory is
 * removed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "childproc.h"
#include "cli.h"
#include "core/crypto.h"
#include "core/log.h"
#include "net/addr.h"
#include "net/ca.h"
#include "net/udp.h"
#include "proto/kms/kms.h"
#include "proto/reg/reg.h"
#include "store/store.h"
#include "store/wrap.h"

#define RB_TARGET    10000.0
#define RB_KERBEROS  1100.0
#define RB_MAX_SOCKS 64
#define RB_MAX_DEV   65535
#define RB_NODE_ID   "node-1"

int pk_bench_suite_reg(int argc, char **argv);

typedef struct rb_sock {
    pk_udp_t *u;
    pk_udp_batch_t b;
    uint32_t *act; /* devices in progress on this socket */
    size_t nact, cap;
} rb_sock_t;

typedef struct rb {
    unsigned ndev, inflight, nsock, rounds;
    double seconds;
    int json, keep, verbose;
    char dir[64];
    pid_t kms_pid, node_pid;
    pk_addr_t node;
    pk_reg_dev_t *dev;
    uint8_t (*key)[32];
    uint16_t *sid;    /* learned record session id per device (0: unknown) */
    uint32_t *by_sid; /* session id -> device + 1 */
    uint8_t *busy;
    uint32_t *idle; /* ring of idle devices */
    size_t idle_head, idle_n;
    rb_sock_t sock[RB_MAX_SOCKS];
    size_t active;
    int requeue;    /* 0 during the first pass: each device registers once */
    int daemon_cpu; /* CPU the kms and node are pinned to; -1: not pinned */
    uint64_t done, failed, trials, stray;
    uint8_t arena[4096];
    pk_out_t out;
} rb_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
    return now_ns() / 1000000;
}

static double self_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void dev_name(char *b, size_t cap, unsigned i)
{
    snprintf(b, cap, "dev-%06u", i);
}

/* ---- setup ---- */

static int provision(rb_t *r, double *secs)
{
    char db[128], kek[128], uri[160];
    uint8_t k[PK_WRAP_KEK_LEN];
    char why[256] = "";
    pk_store_t *st = NULL;
    pk_kms_t *kms = NULL;
    int rc;
    snprintf(db, sizeof db, "%s/kms.db", r->dir);
    snprintf(kek, sizeof kek, "%s/kms.kek", r->dir);
    snprintf(uri, sizeof uri, "sqlite:%s?sync=normal", db);
    uint64_t t0 = now_ns();
    if ((rc = pk_kek_load(kek, k, why, sizeof why)) != PK_OK) {
        fprintf(stderr, "proxkey bench reg: kek: %s\n", why);
        return rc;
    }
    rc = pk_store_open(uri, &st);
    if (rc == PK_OK) {
        pk_kms_cfg_t cfg = {.store = st, .kek = k};
        rc = pk_kms_new(&cfg, &kms);
    }
    pk_wipe(k, sizeof k);
    uint64_t t = (uint64_t)time(NULL) * 1000;
    for (unsigned i = 0; rc == PK_OK && i < r->ndev; i++) {
        char id[32];
        dev_name(id, sizeof id, i);
        rc = pk_kms_device_add(kms, id, NULL, 0, PK_REG_MODE_PAIRS, NULL, t, r->key[i]);
        if (rc == PK_OK && (i & 1)) {
            char a[32];
            dev_name(a, sizeof a, i - 1);
            rc = pk_kms_allow(kms, a, id, t);
        }
    }
    if (rc != PK_OK)
        fprintf(stderr, "proxkey bench reg: provisioning: %s\n", pk_strerror(rc));
    pk_kms_free(kms);
    pk_store_close(st);
    *secs = (double)(now_ns() - t0) / 1e9;
    return rc;
}

static int setup(rb_t *r, double *prov_s)
{
    char p[8][160];
    char log[128];
    int rc;
#define P(i, ...) (snprintf(p[i], sizeof p[i], __VA_ARGS__), p[i])
    snprintf(log, sizeof log, "%s/setup.log", r->dir);
    if (pk_ca_create(P(0, "%s/ca", r->dir)) != PK_OK || pk_ca_issue(p[0], "kms", NULL, NULL) ||
        pk_ca_issue(p[0], RB_NODE_ID, NULL, NULL) != PK_OK) {
        fprintf(stderr, "proxkey bench reg: dev CA failed\n");
        return PK_ERR_IO;
    }
    {
        char *av[] = {"proxkey",
                      "kms",
                      "init",
                      "--db",
                      P(1, "%s/kms.db", r->dir),
                      "--kek",
                      P(2, "%s/kms.kek", r->dir),
                      NULL};
        if (pk_child_run(log, av) != 0) {
            fprintf(stderr, "proxkey bench reg: kms init failed (%s)\n", log);
            return PK_ERR_IO;
        }
    }
    if ((rc = provision(r, prov_s)) != PK_OK)
        return rc;
    {
        char *av[] = {"proxkey",
                      "kms",
                      "serve",
                      "--db",
                      p[1],
                      "--kek",
                      p[2],
                      "--ca",
                      P(3, "%s/ca/ca.crt", r->dir),
                      "--cert",
                      P(4, "%s/ca/kms.crt", r->dir),
                      "--key",
                      P(5, "%s/ca/kms.key", r->dir),
                      "--listen",
                      "127.0.0.1:0",
                      "--port-file",
                      P(6, "%s/kms.port", r->dir),
                      NULL};
        snprintf(log, sizeof log, "%s/kms.log", r->dir);
        r->kms_pid = pk_child_spawn(log, r->daemon_cpu, av);
        if (r->kms_pid < 0 || pk_child_wait_line(log, "event=listening", NULL, 0, 10000) != 0) {
            fprintf(stderr, "proxkey bench reg: kms serve did not start (%s)\n", log);
            return PK_ERR_IO;
        }
    }
    char port[32] = "";
    FILE *f = fopen(p[6], "r");
    if (!f || !fgets(port, sizeof port, f)) {
        if (f)
            fclose(f);
        return PK_ERR_IO;
    }
    fclose(f);
    port[strcspn(port, "\r\n")] = '\0';
    {
        char kms[64];
        snprintf(kms, sizeof kms, "127.0.0.1:%s", port);
        char *av[] = {"proxkey",
                      "node",
                      "serve",
                      "--id",
                      RB_NODE_ID,
                      "--listen-udp",
                      "127.0.0.1:0",
                      "--kms",
                      kms,
                      "--ca",
                      p[3],
                      "--cert",
                      P(4, "%s/ca/" RB_NODE_ID ".crt", r->dir),
                      "--key",
                      P(5, "%s/ca/" RB_NODE_ID ".key", r->dir),
                      "--reg-burst",
                      "1000000",
                      "--reg-rate",
                      "1000000",
                      "--ip-burst",
                      "1000000",
                      "--ip-rate",
                      "1000000",
                      "--max-half",
                      "8192",
                      "--stats-ms",
                      "0",
                      NULL};
        char line[1024];
        snprintf(log, sizeof log, "%s/node.log", r->dir);
        r->node_pid = pk_child_spawn(log, r->daemon_cpu, av);
        if (r->node_pid < 0 ||
            pk_child_wait_line(log, "node_listening", line, sizeof line, 10000) != 0 ||
            pk_child_wait_line(log, "node_kms_connected", NULL, 0, 10000) != 0) {
            fprintf(stderr, "proxkey bench reg: node serve did not start (%s)\n", log);
            return PK_ERR_IO;
        }
        const char *u = strstr(line, "udp_port=");
        char na[64];
        const char *why = NULL;
        snprintf(na, sizeof na, "127.0.0.1:%d", u ? atoi(u + 9) : 0);
        if (!u || pk_addr_parse(na, &r->node, &why) != PK_OK)
            return PK_ERR_IO;
    }
#undef P
    return PK_OK;
}

/* ---- load generator ---- */

static void sock_add(rb_sock_t *s, uint32_t d)
{
    s->act[s->nact++] = d;
}

static void sock_del(rb_sock_t *s, uint32_t d)
{
    for (size_t i = 0; i < s->nact; i++)
        if (s->act[i] == d) {
            s->act[i] = s->act[--s->nact];
            return;
        }
}

static void send_out(rb_t *r, rb_sock_t *s)
{
    for (unsigned i = 0; i < r->out.n; i++)
        if (r->out.act[i].kind == PK_ACT_SEND)
            (void)pk_udp_send(s->u, &r->node, r->out.act[i].data, r->out.act[i].len);
}

static void start_more(rb_t *r, uint64_t now)
{
    while (r->active < r->inflight && r->idle_n > 0) {
        uint32_t d = r->idle[r->idle_head];
        r->idle_head = (r->idle_head + 1) % r->ndev;
        r->idle_n--;
        rb_sock_t *s = &r->sock[d % r->nsock];
        pk_out_reset(&r->out);
        if (pk_reg_dev_start(&r->dev[d], &pk_rng_system, now, &r->out) != PK_OK)
            continue;
        send_out(r, s);
        sock_add(s, d);
        r->busy[d] = 1;
        r->active++;
    }
}

static void finish(rb_t *r, rb_sock_t *s, uint32_t d, int ok)
{
    sock_del(s, d);
    r->busy[d] = 0;
    r->active--;
    if (ok)
        r->done++;
    else
        r->failed++;
    if (!r->requeue)
        return;
    r->idle[(r->idle_head + r->idle_n) % r->ndev] = d;
    r->idle_n++;
}

/* Feeds one datagram to device d; 1 when it was taken. */
static int feed(rb_t *r, rb_sock_t *s, uint32_t d, const uint8_t *m, size_t len, uint64_t now)
{
    pk_out_reset(&r->out);
    if (pk_reg_dev_input(&r->dev[d], m, len, now, &r->out) != PK_OK)
        return 0;
    send_out(r, s);
    if (r->dev[d].state == PK_REG_D_REGISTERED) {
        uint16_t sid = (uint16_t)(m[1] << 8 | m[2]);
        if (r->sid[d] != sid) {
            if (r->sid[d] && r->by_sid[r->sid[d]] == d + 1)
                r->by_sid[r->sid[d]] = 0;
            r->sid[d] = sid;
            r->by_sid[sid] = d + 1;
        }
        finish(r, s, d, 1);
    }
    return 1;
}

static void on_dgram(rb_t *r, rb_sock_t *s, const uint8_t *m, size_t len, uint64_t now)
{
    if (len < 3)
        return;
    if (m[0] == PK_REG_T_CHALLENGE && len == PK_REG_CHALLENGE_LEN) {
        for (size_t i = 0; i < s->nact; i++) {
            uint32_t d = s->act[i];
            if (r->dev[d].state == PK_REG_D_WAIT_CHALLENGE &&
                memcmp(r->dev[d].nonce_d, m + 2, PK_REG_NONCE_LEN) == 0) {
                feed(r, s, d, m, len, now);
                return;
            }
        }
    } else if (m[0] == PK_REG_T_ACCEPT) {
        uint16_t sid = (uint16_t)(m[1] << 8 | m[2]);
        uint32_t d1 = r->by_sid[sid];
        if (d1 && r->busy[d1 - 1] && r->dev[d1 - 1].state == PK_REG_D_WAIT_ACCEPT &&
            (d1 - 1) % r->nsock == (uint32_t)(s - r->sock) && feed(r, s, d1 - 1, m, len, now))
            return;
        for (size_t i = 0; i < s->nact; i++) {
            uint32_t d = s->act[i];
            if (r->dev[d].state != PK_REG_D_WAIT_ACCEPT || (r->sid[d] && r->sid[d] != sid))
                continue;
            r->trials++;
            if (feed(r, s, d, m, len, now))
                return;
        }
    }
    r->stray++;
}

static void timeouts(rb_t *r, uint64_t now)
{
    for (unsigned k = 0; k < r->nsock; k++) {
        rb_sock_t *s = &r->sock[k];
        for (size_t i = 0; i < s->nact; i++) {
            uint32_t d = s->act[i];
            if (pk_reg_dev_next_deadline(&r->dev[d]) > now)
                continue;
            pk_out_reset(&r->out);
            (void)pk_reg_dev_timeout(&r->dev[d], now, &r->out);
            send_out(r, s);
            if (r->dev[d].state == PK_REG_D_FAILED) {
                finish(r, s, d, 0);
                i--;
            }
        }
    }
}

/* Runs the generator until `until_done` registrations completed in total or
 * the deadline (ns) passed. */
static void run_until(rb_t *r, uint64_t until_done, uint64_t deadline_ns)
{
    struct pollfd pf[RB_MAX_SOCKS];
    uint64_t next_to = 0;
    for (unsigned k = 0; k < r->nsock; k++)
        pf[k] = (struct pollfd){.fd = pk_udp_fd(r->sock[k].u), .events = POLLIN};
    while (r->done < until_done) {
        uint64_t t = now_ns();
        if (t >= deadline_ns)
            break;
        uint64_t now = t / 1000000;
        start_more(r, now);
        for (unsigned k = 0; k < r->nsock; k++)
            pk_udp_flush(r->sock[k].u);
        if (poll(pf, r->nsock, 5) < 0 && errno != EINTR)
            break;
        now = now_ms();
        for (unsigned k = 0; k < r->nsock; k++) {
            rb_sock_t *s = &r->sock[k];
            if (!(pf[k].revents & POLLIN))
                continue;
            for (int round = 0; round < 8; round++) {
                int n = pk_udp_recv_batch(s->u, &s->b);
                if (n <= 0)
                    break;
                for (unsigned i = 0; i < s->b.n; i++)
                    if (!s->b.dg[i].truncated && pk_addr_eq(&s->b.dg[i].peer, &r->node))
                        on_dgram(r, s, s->b.dg[i].data, s->b.dg[i].len, now);
                start_more(r, now);
                pk_udp_flush(s->u);
            }
        }
        if (now >= next_to) {
            timeouts(r, now);
            next_to = now + 50;
        }
    }
}

static int gen_init(rb_t *r)
{
    pk_reg_id_t node;
    pk_out_init(&r->out, r->arena, sizeof r->arena);
    if (pk_reg_id_set(&node, RB_NODE_ID, strlen(RB_NODE_ID)) != PK_OK)
        return PK_ERR_INVAL;
    for (unsigned i = 0; i < r->ndev; i++) {
        char id[32];
        dev_name(id, sizeof id, i);
        pk_reg_dev_cfg_t c = {
            .node_id = node, .k = r->key[i], .klen = 32, .rto_ms = 1000, .max_tries = 8};
        if (pk_reg_id_set(&c.dev_id, id, strlen(id)) != PK_OK ||
            pk_reg_dev_init(&r->dev[i], &c) != PK_OK)
            return PK_ERR_INVAL;
        r->idle[i] = i;
    }
    r->idle_n = r->ndev;
    size_t per = r->inflight / r->nsock + 2;
    for (unsigned k = 0; k < r->nsock; k++) {
        pk_addr_t a;
        const char *why = NULL;
        pk_udp_opts_t uo = {4 << 20, 4 << 20, 65536};
        rb_sock_t *s = &r->sock[k];
        if (pk_addr_parse("127.0.0.1:0", &a, &why) != PK_OK ||
            pk_udp_open(&s->u, &a, &uo) != PK_OK || pk_udp_batch_init(&s->b, 4096) != PK_OK)
            return PK_ERR_IO;
        s->cap = per + r->inflight; /* devices are spread by index: room for all */
        s->act = calloc(s->cap, sizeof *s->act);
        if (!s->act)
            return PK_ERR_NOMEM;
    }
    return PK_OK;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: proxkey bench reg [--devices N] [--inflight N] [--sockets N] "
               "[--rounds N] [--seconds S] [--json] [--keep]\n\n"
               "Registrations per second through real `proxkey kms serve` (SQLite, durable)\n"
               "and `proxkey node serve` child processes on loopback, driven by device cores\n"
               "in this process (pinned to CPU 1). Median of rounds\n"
               "of re-registrations, after one first registration of every device.\n\n"
               "  --devices N   provisioned devices (2..65535, default 4000)\n"
               "  --inflight N  registrations in progress at once (1..8192, default 1024)\n"
               "  --sockets N   UDP sockets of the load generator (1..64, default 8)\n"
               "  --rounds N    measured rounds (1..101, default 5)\n"
               "  --seconds S   length of a round (0.2..60, default 2)\n"
               "  --json        also print one JSON object\n"
               "  --float-daemons  let the scheduler place the kms and the node on both CPUs\n"
               "                (default: both pinned to CPU 0, the generator alone on CPU 1)\n"
               "  --keep        keep the temporary directory (logs, database)\n");
}

int pk_bench_suite_reg(int argc, char **argv)
{
    rb_t *r = calloc(1, sizeof *r);
    int rc = 1;
    double prov_s = 0;
    if (!r)
        return 1;
    r->ndev = 4000;
    r->inflight = 1024;
    r->nsock = 8;
    r->daemon_cpu = 0;
    r->rounds = 5;
    r->seconds = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(r);
            return 0;
        } else if (!strcmp(a, "--json")) {
            r->json = 1;
        } else if (!strcmp(a, "--float-daemons")) {
            r->daemon_cpu = -1;
        } else if (!strcmp(a, "--keep")) {
            r->keep = 1;
        } else if (!strcmp(a, "--devices") && !pk_cli_parse_uint(v, 2, RB_MAX_DEV, &r->ndev)) {
            i++;
        } else if (!strcmp(a, "--inflight") && !pk_cli_parse_uint(v, 1, 8192, &r->inflight)) {
            i++;
        } else if (!strcmp(a, "--sockets") && !pk_cli_parse_uint(v, 1, RB_MAX_SOCKS, &r->nsock)) {
            i++;
        } else if (!strcmp(a, "--rounds") && !pk_cli_parse_uint(v, 1, 101, &r->rounds)) {
            i++;
        } else if (!strcmp(a, "--seconds") && v && atof(v) >= 0.2 && atof(v) <= 60) {
            r->seconds = atof(v);
            i++;
        } else {
            fprintf(stderr, "proxkey bench reg: bad argument '%s' (see --help)\n", a);
            free(r);
            return 2;
        }
    }
    if (r->inflight > r->ndev)
        r->inflight = r->ndev;
    if (r->nsock > r->inflight)
        r->nsock = r->inflight;
    snprintf(r->dir, sizeof r->dir, "/tmp/pk-bench-reg.XXXXXX");
    r->dev = calloc(r->ndev, sizeof *r->dev);
    r->key = calloc(r->ndev, sizeof *r->key);
    r->sid = calloc(r->ndev, sizeof *r->sid);
    r->by_sid = calloc(65536, sizeof *r->by_sid);
    r->busy = calloc(r->ndev, 1);
    r->idle = calloc(r->ndev, sizeof *r->idle);
    double *rate = calloc(r->rounds, sizeof *rate), *kcpu = calloc(r->rounds, sizeof *kcpu),
           *ncpu = calloc(r->rounds, sizeof *ncpu), *gcpu = calloc(r->rounds, sizeof *gcpu);
    if (!r->dev || !r->key || !r->sid || !r->by_sid || !r->busy || !r->idle || !rate || !kcpu ||
        !ncpu || !gcpu || !mkdtemp(r->dir))
        goto out;
    pk_log_set_level(PK_LOG_WARN);
    char la0[128], la1[128];
    pk_child_loadavg(la0, sizeof la0);
    if (setup(r, &prov_s) != PK_OK)
        goto out;
    if (pk_child_pin(0, 1) != 0)
        fprintf(stderr, "proxkey bench reg: cannot pin to CPU 1 (%s)\n", strerror(errno));
    if (gen_init(r) != PK_OK) {
        fprintf(stderr, "proxkey bench reg: load generator setup failed\n");
        goto out;
    }
    printf("# reg: %u devices provisioned in %.2f s (%.0f/s; kms admin core, sqlite sync=normal)\n",
           r->ndev, prov_s, r->ndev / prov_s);
    printf("# reg: layout: kms + node %s, load generator pinned to CPU 1; "
           "%u inflight over %u UDP sockets; load average before: %s\n",
           r->daemon_cpu == 0 ? "pinned to CPU 0" : "not pinned (CPUs 0 and 1)", r->inflight,
           r->nsock, la0);
    fflush(stdout);

    /* first registration of every device (creates root keys, directory) */
    uint64_t t0 = now_ns();
    double k0 = pk_child_cpu_s(r->kms_pid), n0 = pk_child_cpu_s(r->node_pid);
    run_until(r, r->ndev, t0 + 120ull * 1000000000ull);
    double first_s = (double)(now_ns() - t0) / 1e9;
    r->requeue = 1;
    r->idle_head = 0;
    r->idle_n = 0;
    for (uint32_t i = 0; i < r->ndev; i++)
        if (!r->busy[i])
            r->idle[r->idle_n++] = i;
    double first_rate = (double)r->done / first_s;
    printf("first registrations: %llu of %u devices in %.2f s = %.0f/s (root keys and directory "
           "entries group-committed in the kms; kms cpu %.0f us/reg, node cpu %.0f us/reg)\n",
           (unsigned long long)r->done, r->ndev, first_s, first_rate,
           1e6 * (pk_child_cpu_s(r->kms_pid) - k0) / (double)(r->done ? r->done : 1),
           1e6 * (pk_child_cpu_s(r->node_pid) - n0) / (double)(r->done ? r->done : 1));
    fflush(stdout);
    if (r->done < r->ndev) {
        fprintf(stderr, "proxkey bench reg: only %llu of %u devices registered (logs in %s)\n",
                (unsigned long long)r->done, r->ndev, r->dir);
        r->keep = 1;
        goto out;
    }
    /* warm-up: half a round, not measured */
    run_until(r, UINT64_MAX, now_ns() + (uint64_t)(r->seconds * 0.5e9));
    for (unsigned k = 0; k < r->rounds; k++) {
        uint64_t d0 = r->done, s0 = now_ns();
        double kc = pk_child_cpu_s(r->kms_pid), nc = pk_child_cpu_s(r->node_pid), gc = self_cpu_s();
        run_until(r, UINT64_MAX, s0 + (uint64_t)(r->seconds * 1e9));
        double el = (double)(now_ns() - s0) / 1e9;
        uint64_t n = r->done - d0;
        rate[k] = (double)n / el;
        double dn = (double)(n ? n : 1);
        kcpu[k] = 1e6 * (pk_child_cpu_s(r->kms_pid) - kc) / dn;
        ncpu[k] = 1e6 * (pk_child_cpu_s(r->node_pid) - nc) / dn;
        gcpu[k] = 1e6 * (self_cpu_s() - gc) / dn;
        printf("  round %u: %.0f registrations/s (kms %.1f us, node %.1f us, generator %.1f us "
               "cpu per registration)\n",
               k + 1, rate[k], kcpu[k], ncpu[k], gcpu[k]);
        fflush(stdout);
    }
    pk_child_sort(rate, r->rounds);
    pk_child_sort(kcpu, r->rounds);
    pk_child_sort(ncpu, r->rounds);
    pk_child_sort(gcpu, r->rounds);
    double med = rate[r->rounds / 2];
    pk_child_loadavg(la1, sizeof la1);
    printf(
        "reg: %.0f registrations/s median of %u rounds x %.1f s (min %.0f, max %.0f)\n"
        "     target %.0f/s: ratio %.2f; MIT Kerberos KDC ~%.0f AS-REQ/s: ratio %.1f\n"
        "     cpu per registration (median): kms %.1f us, node %.1f us (one CPU for both: %.0f/s "
        "if CPU-bound), generator %.1f us\n"
        "     failed %llu, accept trial opens (routing) %llu, stray datagrams %llu; load "
        "average after: %s\n",
        med, r->rounds, r->seconds, rate[0], rate[r->rounds - 1], RB_TARGET, med / RB_TARGET,
        RB_KERBEROS, med / RB_KERBEROS, kcpu[r->rounds / 2], ncpu[r->rounds / 2],
        1e6 / (kcpu[r->rounds / 2] + ncpu[r->rounds / 2]), gcpu[r->rounds / 2],
        (unsigned long long)r->failed, (unsigned long long)r->trials, (unsigned long long)r->stray,
        la1);
    if (r->json)
        printf("{\"bench\":\"reg\",\"median_per_s\":%.0f,\"min_per_s\":%.0f,\"max_per_s\":%.0f,"
               "\"rounds\":%u,\"target_per_s\":%.0f,\"kerberos_per_s\":%.0f,"
               "\"first_per_s\":%.0f,\"kms_cpu_us\":%.1f,\"node_cpu_us\":%.1f,"
               "\"gen_cpu_us\":%.1f,\"devices\":%u,\"inflight\":%u,\"provision_s\":%.2f}\n",
               med, rate[0], rate[r->rounds - 1], r->rounds, RB_TARGET, RB_KERBEROS, first_rate,
               kcpu[r->rounds / 2], ncpu[r->rounds / 2], gcpu[r->rounds / 2], r->ndev, r->inflight,
               prov_s);
    rc = 0;
out:
    pk_child_stop(&r->node_pid);
    pk_child_stop(&r->kms_pid);
    for (unsigned k = 0; k < RB_MAX_SOCKS; k++) {
        pk_udp_close(r->sock[k].u);
        pk_udp_batch_free(&r->sock[k].b);
        free(r->sock[k].act);
    }
    if (r->dev)
        for (unsigned i = 0; i < r->ndev; i++)
            pk_reg_dev_clear(&r->dev[i]);
    if (r->key)
        pk_wipe(r->key, (size_t)r->ndev * sizeof *r->key);
    if (r->dir[0] && strstr(r->dir, "XXXXXX") == NULL) {
        if (r->keep) {
            printf("# reg: kept %s\n", r->dir);
        } else {
            char *av[] = {"rm", "-rf", r->dir, NULL};
            pid_t p = fork();
            if (p == 0) {
                execvp("rm", av);
                _exit(127);
            }
            if (p > 0)
                waitpid(p, NULL, 0);
        }
    }
    free(r->dev);
    free(r->key);
    free(r->sid);
    free(r->by_sid);
    free(r->busy);
    free(r->idle);
    free(rate);
    free(kcpu);
    free(ncpu);
    free(gcpu);
    free(r);
    return rc;
}
