/*
 * `proxkey bench alloc`: option-2 pool allocations (KMS_ALLOC_REQ) per
 * second through real `proxkey kms serve` processes on loopback, with the
 * group commit (the default: an allocation is a write intent in the audit
 * batch, kms.h "Durability") beside the same kms with --group-writes off
 * (each allocation commits alone on the event loop, before its answer),
 * measured in the same run, rounds alternating.
 *
 * Setup (timed separately): a dev CA with leaves for the kms and node-1,
 * `proxkey kms init`, then a pool of 32 keys and --devices devices in it,
 * all in one group (so every pair of two of them is allowed: n(n-1)/2
 * pairs), through the kms core's admin functions on a store opened with
 * sync=normal (provisioning only). The database is copied, so each server
 * has its own with the same devices; both run with the default, durable
 * synchronous=FULL, pinned to CPU 0; this process, the node-side load
 * generator, pins itself to CPU 1.
 *
 * The generator keeps --window KMS_ALLOC_REQ in flight on each of --conns
 * mutual-TLS connections to the server under test. "New" rounds ask for
 * pairs never asked before (each answer is a fresh KSI claimed in the
 * store); "again" rounds ask for pairs that already have their KSI (each
 * answer reuses it with a fresh parameter and writes an audit record). A
 * round sends for --seconds, then waits for every answer in flight; its
 * rate is the answers over that whole time. Rounds alternate between the
 * two servers (after one unmeasured warm-up round each); figures are medians
 * of the rounds and of the per-round-pair ratios, with each server's CPU
 * time per allocation. The children are stopped by PID and the directory
 * is removed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "childproc.h"
#include "cli.h"
#include "core/crypto.h"
#include "core/log.h"
#include "net/ca.h"
#include "net/loop.h"
#include "net/tls.h"
#include "proto/kms/kms.h"
#include "proto/reg/reg.h"
#include "store/store.h"
#include "store/wrap.h"

#define AB_MAX_CONNS 16
#define AB_MAX_DEV   4096
#define AB_NODE_ID   "node-1"
#define AB_POOL      "bench-pool"
#define AB_GROUP     "bench-group"

int pk_bench_suite_alloc(int argc, char **argv);

/* One kms serve under test and the generator's connections to it. */
typedef struct ab_srv {
    const char *name; /* "group", "direct" */
    pid_t pid;
    char addr[64];
    pk_tls_conn_t *c[AB_MAX_CONNS];
    unsigned in[AB_MAX_CONNS]; /* requests in flight per connection */
    unsigned open;
    uint32_t next;  /* the next new pair (pair index) */
    uint32_t again; /* the next pair to ask again (< next) */
} ab_srv_t;

typedef struct ab {
    unsigned ndev, conns, window, rounds;
    double seconds;
    int json, keep;
    char dir[64];
    ab_srv_t srv[2];
    pk_loop_t *loop;
    pk_tls_ctx_t *tls;
    /* the round in progress */
    ab_srv_t *cur;
    int sending, repeat;
    uint64_t answered, errors, exhausted;
} ab_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void dev_name(char *b, size_t cap, unsigned i)
{
    snprintf(b, cap, "pdev-%05u", i);
}

/* Pair index p -> (i, j), i < j < n: row i holds n - 1 - i pairs. */
static int pair_of(unsigned n, uint32_t p, unsigned *i, unsigned *j)
{
    uint64_t left = p;
    for (unsigned r = 0; r + 1 < n; r++) {
        uint64_t row = n - 1 - r;
        if (left < row) {
            *i = r;
            *j = r + 1 + (unsigned)left;
            return 0;
        }
        left -= row;
    }
    return -1;
}

/* ---- setup ---- */

static int provision(ab_t *a, double *secs)
{
    char db[128], kek[128], uri[160];
    uint8_t k[PK_WRAP_KEK_LEN];
    char why[256] = "";
    pk_store_t *st = NULL;
    pk_kms_t *kms = NULL;
    snprintf(db, sizeof db, "%s/group.db", a->dir);
    snprintf(kek, sizeof kek, "%s/kms.kek", a->dir);
    snprintf(uri, sizeof uri, "sqlite:%s?sync=normal", db);
    uint64_t t0 = now_ns();
    int rc = pk_kek_load(kek, k, why, sizeof why);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey bench alloc: kek: %s\n", why);
        return rc;
    }
    rc = pk_store_open(uri, &st);
    if (rc == PK_OK) {
        pk_kms_cfg_t cfg = {.store = st, .kek = k};
        rc = pk_kms_new(&cfg, &kms);
    }
    pk_wipe(k, sizeof k);
    uint64_t t = (uint64_t)time(NULL) * 1000;
    if (rc == PK_OK)
        rc = pk_kms_pool_create(kms, AB_POOL, 32, t, NULL);
    for (unsigned i = 0; rc == PK_OK && i < a->ndev; i++) {
        char id[32];
        dev_name(id, sizeof id, i);
        rc = pk_kms_device_add(kms, id, NULL, 0, PK_REG_MODE_POOL, AB_POOL, t, NULL);
        if (rc == PK_OK)
            rc = pk_kms_group_add(kms, AB_GROUP, id, t);
    }
    if (rc != PK_OK)
        fprintf(stderr, "proxkey bench alloc: provisioning: %s\n", pk_strerror(rc));
    pk_kms_free(kms);
    pk_store_close(st); /* the last connection: the WAL is checkpointed into group.db */
    *secs = (double)(now_ns() - t0) / 1e9;
    return rc;
}

/* Copies group.db to direct.db (the same devices for the other server). */
static int copy_db(ab_t *a)
{
    char from[128], to[128], wal[140];
    snprintf(from, sizeof from, "%s/group.db", a->dir);
    snprintf(to, sizeof to, "%s/direct.db", a->dir);
    snprintf(wal, sizeof wal, "%s-wal", from);
    if (access(wal, F_OK) == 0) {
        fprintf(stderr, "proxkey bench alloc: %s left behind\n", wal);
        return PK_ERR_IO;
    }
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    int rc = in && out ? PK_OK : PK_ERR_IO;
    char buf[65536];
    size_t n;
    while (rc == PK_OK && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = PK_ERR_IO;
    if (in && ferror(in))
        rc = PK_ERR_IO;
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = PK_ERR_IO;
    return rc;
}

static int start_kms(ab_t *a, ab_srv_t *s, const char *gw)
{
    char p[8][160], log[160];
#define P(i, ...) (snprintf(p[i], sizeof p[i], __VA_ARGS__), p[i])
    char *av[] = {"proxkey",
                  "kms",
                  "serve",
                  "--db",
                  P(0, "%s/%s.db", a->dir, s->name),
                  "--kek",
                  P(1, "%s/kms.kek", a->dir),
                  "--ca",
                  P(2, "%s/ca/ca.crt", a->dir),
                  "--cert",
                  P(3, "%s/ca/kms.crt", a->dir),
                  "--key",
                  P(4, "%s/ca/kms.key", a->dir),
                  "--listen",
                  "127.0.0.1:0",
                  "--port-file",
                  P(5, "%s/%s.port", a->dir, s->name),
                  "--group-writes",
                  (char *)gw,
                  NULL};
#undef P
    snprintf(log, sizeof log, "%s/%s.log", a->dir, s->name);
    s->pid = pk_child_spawn(log, 0, av);
    if (s->pid < 0 || pk_child_wait_line(log, "event=listening", NULL, 0, 10000) != 0) {
        fprintf(stderr, "proxkey bench alloc: kms serve did not start (%s)\n", log);
        return PK_ERR_IO;
    }
    char port[32] = "";
    FILE *f = fopen(p[5], "r");
    if (!f || !fgets(port, sizeof port, f)) {
        if (f)
            fclose(f);
        return PK_ERR_IO;
    }
    fclose(f);
    port[strcspn(port, "\r\n")] = '\0';
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%s", port);
    return PK_OK;
}

static int setup(ab_t *a, double *prov_s)
{
    char ca[128], log[128], db[128], kek[128];
    snprintf(ca, sizeof ca, "%s/ca", a->dir);
    snprintf(log, sizeof log, "%s/setup.log", a->dir);
    snprintf(db, sizeof db, "%s/group.db", a->dir);
    snprintf(kek, sizeof kek, "%s/kms.kek", a->dir);
    if (pk_ca_create(ca) != PK_OK || pk_ca_issue(ca, "kms", NULL, NULL) != PK_OK ||
        pk_ca_issue(ca, AB_NODE_ID, NULL, NULL) != PK_OK) {
        fprintf(stderr, "proxkey bench alloc: dev CA failed\n");
        return PK_ERR_IO;
    }
    char *av[] = {"proxkey", "kms", "init", "--db", db, "--kek", kek, NULL};
    if (pk_child_run(log, av) != 0) {
        fprintf(stderr, "proxkey bench alloc: kms init failed (%s)\n", log);
        return PK_ERR_IO;
    }
    int rc = provision(a, prov_s);
    if (rc == PK_OK)
        rc = copy_db(a);
    if (rc == PK_OK)
        rc = start_kms(a, &a->srv[0], "on");
    if (rc == PK_OK)
        rc = start_kms(a, &a->srv[1], "off");
    return rc;
}

/* ---- load generator ---- */

static ab_srv_t *srv_of(ab_t *a, pk_tls_conn_t *c, unsigned *ci)
{
    for (int s = 0; s < 2; s++)
        for (unsigned i = 0; i < a->conns; i++)
            if (a->srv[s].c[i] == c) {
                *ci = i;
                return &a->srv[s];
            }
    return NULL;
}

/* Sends one ALLOC_REQ for the server's next pair (new, or again). */
static int send_one(ab_t *a, ab_srv_t *s, unsigned ci)
{
    uint32_t p;
    if (a->repeat) {
        if (s->next == 0)
            return -1;
        p = s->again++ % s->next;
    } else {
        p = s->next;
    }
    unsigned i, j;
    if (pair_of(a->ndev, p, &i, &j) != 0) {
        a->exhausted = 1;
        return -1;
    }
    char x[32], y[32];
    uint8_t req[PK_REG_NET_MAX];
    size_t n = 0;
    pk_reg_net_t q = {.type = PK_REG_T_KMS_ALLOC_REQ};
    dev_name(x, sizeof x, i);
    dev_name(y, sizeof y, j);
    if (pk_reg_id_set(&q.a, x, strlen(x)) != PK_OK || pk_reg_id_set(&q.b, y, strlen(y)) != PK_OK ||
        pk_reg_net_encode(&q, req, sizeof req, &n) != PK_OK ||
        pk_tls_conn_send(s->c[ci], req, n) != PK_OK)
        return -1;
    if (!a->repeat)
        s->next++;
    s->in[ci]++;
    return 0;
}

static void fill(ab_t *a, ab_srv_t *s, unsigned ci)
{
    while (a->sending && a->cur == s && s->c[ci] && s->in[ci] < a->window)
        if (send_one(a, s, ci) != 0)
            break;
}

static void on_open(pk_tls_conn_t *c, void *ud)
{
    ab_t *a = ud;
    unsigned ci;
    ab_srv_t *s = srv_of(a, c, &ci);
    if (s)
        s->open++;
}

static void on_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    ab_t *a = ud;
    unsigned ci;
    ab_srv_t *s = srv_of(a, c, &ci);
    if (!s || s->in[ci] == 0)
        return;
    s->in[ci]--;
    if (n == PK_REG_KMS_ALLOC_RESP_LEN && p[0] == PK_REG_T_KMS_ALLOC_RESP && p[1] == PK_REG_ST_OK)
        a->answered++;
    else
        a->errors++;
    fill(a, s, ci);
}

static void on_close(pk_tls_conn_t *c, int why, void *ud)
{
    ab_t *a = ud;
    unsigned ci;
    ab_srv_t *s = srv_of(a, c, &ci);
    if (!s)
        return;
    fprintf(stderr, "proxkey bench alloc: connection to %s closed: %s\n", s->name,
            pk_strerror(why));
    s->c[ci] = NULL;
    s->in[ci] = 0;
    s->open--;
}

static unsigned in_flight(const ab_srv_t *s, unsigned conns)
{
    unsigned n = 0;
    for (unsigned i = 0; i < conns; i++)
        n += s->in[i];
    return n;
}

typedef struct ab_round {
    double rate, cpu_us;
} ab_round_t;

/* One round against s: send for `secs`, then drain (at most 30 s). */
static int round_run(ab_t *a, ab_srv_t *s, int repeat, double secs, ab_round_t *out)
{
    a->cur = s;
    a->repeat = repeat;
    a->answered = a->errors = 0;
    a->sending = 1;
    double c0 = pk_child_cpu_s(s->pid);
    uint64_t t0 = now_ns(), stop = t0 + (uint64_t)(secs * 1e9);
    for (unsigned i = 0; i < a->conns; i++)
        fill(a, s, i);
    while (now_ns() < stop && s->open == a->conns)
        pk_loop_run_once(a->loop, 5);
    a->sending = 0;
    uint64_t drain = now_ns() + 30ull * 1000000000ull;
    while (in_flight(s, a->conns) > 0 && now_ns() < drain && s->open == a->conns)
        pk_loop_run_once(a->loop, 5);
    double el = (double)(now_ns() - t0) / 1e9;
    out->rate = (double)a->answered / el;
    out->cpu_us = 1e6 * (pk_child_cpu_s(s->pid) - c0) / (double)(a->answered ? a->answered : 1);
    if (a->errors || s->open != a->conns || in_flight(s, a->conns) > 0) {
        fprintf(stderr, "proxkey bench alloc: %s: %llu refused, %u of %u connections open\n",
                s->name, (unsigned long long)a->errors, s->open, a->conns);
        return -1;
    }
    return 0;
}

/* The medians of one kind of rounds. */
typedef struct ab_fig {
    double group, alone, ratio, group_cpu_us, alone_cpu_us;
} ab_fig_t;

/* Alternating rounds (after a warm-up of each) of new or repeated
 * allocations; prints the medians into *f. 0, or -1 when a round failed. */
static int measure(ab_t *a, int repeat, ab_fig_t *f)
{
    const char *what = repeat ? "again" : "new";
    ab_round_t w, rg, rd;
    double *g = calloc(a->rounds, sizeof *g), *d = calloc(a->rounds, sizeof *d),
           *ratio = calloc(a->rounds, sizeof *ratio), *cg = calloc(a->rounds, sizeof *cg),
           *cd = calloc(a->rounds, sizeof *cd);
    int rc = g && d && ratio && cg && cd ? 0 : -1;
    if (rc == 0)
        rc = round_run(a, &a->srv[0], repeat, a->seconds / 4, &w) ||
             round_run(a, &a->srv[1], repeat, a->seconds / 4, &w);
    for (unsigned k = 0; rc == 0 && k < a->rounds; k++) {
        /* the order alternates too, so neither side always runs first */
        ab_srv_t *first = &a->srv[k % 2], *second = &a->srv[1 - k % 2];
        ab_round_t *r1 = k % 2 ? &rd : &rg, *r2 = k % 2 ? &rg : &rd;
        rc = round_run(a, first, repeat, a->seconds, r1) ||
             round_run(a, second, repeat, a->seconds, r2);
        if (rc)
            break;
        g[k] = rg.rate;
        d[k] = rd.rate;
        ratio[k] = rd.rate > 0 ? rg.rate / rd.rate : 0;
        cg[k] = rg.cpu_us;
        cd[k] = rd.cpu_us;
        printf("  round %u (%s pairs): group commit %.0f/s (kms %.1f us cpu each), "
               "each alone %.0f/s (%.1f us): ratio %.2f\n",
               k + 1, what, rg.rate, rg.cpu_us, rd.rate, rd.cpu_us, ratio[k]);
        fflush(stdout);
    }
    if (rc == 0) {
        f->group = pk_child_median(g, a->rounds);
        f->alone = pk_child_median(d, a->rounds);
        f->ratio = pk_child_median(ratio, a->rounds);
        f->group_cpu_us = pk_child_median(cg, a->rounds);
        f->alone_cpu_us = pk_child_median(cd, a->rounds);
        printf("alloc (%s pairs): group commit %.0f/s (min %.0f, max %.0f), each alone %.0f/s "
               "(min %.0f, max %.0f): ratio %.2f (rounds %.2f-%.2f); kms cpu per allocation "
               "%.1f us vs %.1f us\n",
               what, f->group, g[0], g[a->rounds - 1], f->alone, d[0], d[a->rounds - 1], f->ratio,
               ratio[0], ratio[a->rounds - 1], f->group_cpu_us, f->alone_cpu_us);
    }
    free(g);
    free(d);
    free(ratio);
    free(cg);
    free(cd);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: proxkey bench alloc [--devices N] [--conns N] [--window N] [--rounds N] "
               "[--seconds S] [--json] [--keep]\n\n"
               "Option-2 pool allocations (KMS_ALLOC_REQ) per second through two real\n"
               "`proxkey kms serve` children (SQLite, durable, pinned to CPU 0): one with the\n"
               "group commit (allocations as write intents in the audit batch), one with\n"
               "--group-writes off (each allocation commits alone), rounds alternating; the\n"
               "node-side load generator is this process (pinned to CPU 1). New pairs, then\n"
               "pairs that already have their KSI.\n\n"
               "  --devices N   pool devices, all allowed pairwise (8..4096, default 1024)\n"
               "  --conns N     TLS connections to each kms (1..16, default 4)\n"
               "  --window N    requests in flight per connection (1..1024, default 64)\n"
               "  --rounds N    measured rounds per side (1..101, default 5)\n"
               "  --seconds S   sending time of a round (0.2..60, default 1)\n"
               "  --json        also print one JSON object\n"
               "  --keep        keep the temporary directory (logs, databases)\n");
}

int pk_bench_suite_alloc(int argc, char **argv)
{
    ab_t *a = calloc(1, sizeof *a);
    int rc = 1;
    double prov_s = 0;
    if (!a)
        return 1;
    a->ndev = 1024;
    a->conns = 4;
    a->window = 64;
    a->rounds = 5;
    a->seconds = 1;
    a->srv[0].name = "group";
    a->srv[1].name = "direct";
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            free(a);
            return 0;
        } else if (!strcmp(o, "--json")) {
            a->json = 1;
        } else if (!strcmp(o, "--keep")) {
            a->keep = 1;
        } else if (!strcmp(o, "--devices") && !pk_cli_parse_uint(v, 8, AB_MAX_DEV, &a->ndev)) {
            i++;
        } else if (!strcmp(o, "--conns") && !pk_cli_parse_uint(v, 1, AB_MAX_CONNS, &a->conns)) {
            i++;
        } else if (!strcmp(o, "--window") && !pk_cli_parse_uint(v, 1, 1024, &a->window)) {
            i++;
        } else if (!strcmp(o, "--rounds") && !pk_cli_parse_uint(v, 1, 101, &a->rounds)) {
            i++;
        } else if (!strcmp(o, "--seconds") && v && atof(v) >= 0.2 && atof(v) <= 60) {
            a->seconds = atof(v);
            i++;
        } else {
            fprintf(stderr, "proxkey bench alloc: bad argument '%s' (see --help)\n", o);
            free(a);
            return 2;
        }
    }
    snprintf(a->dir, sizeof a->dir, "/tmp/pk-bench-alloc.XXXXXX");
    if (!mkdtemp(a->dir)) {
        a->dir[0] = '\0';
        goto out;
    }
    pk_log_set_level(PK_LOG_WARN);
    char la0[128], la1[128], ca[160], crt[160], key[160];
    pk_child_loadavg(la0, sizeof la0);
    if (setup(a, &prov_s) != PK_OK)
        goto out;
    if (pk_child_pin(0, 1) != 0)
        fprintf(stderr, "proxkey bench alloc: cannot pin to CPU 1 (%s)\n", strerror(errno));
    snprintf(ca, sizeof ca, "%s/ca/ca.crt", a->dir);
    snprintf(crt, sizeof crt, "%s/ca/" AB_NODE_ID ".crt", a->dir);
    snprintf(key, sizeof key, "%s/ca/" AB_NODE_ID ".key", a->dir);
    pk_tls_cbs_t cbs = {.on_open = on_open, .on_frame = on_frame, .on_close = on_close, .ud = a};
    if (!(a->loop = pk_loop_new()) || pk_tls_ctx_new(&a->tls, PK_TLS_CLIENT, ca, crt, key) != PK_OK)
        goto out;
    for (int s = 0; s < 2; s++)
        for (unsigned i = 0; i < a->conns; i++)
            if (pk_tls_connect(a->loop, a->tls, a->srv[s].addr, "kms", &cbs, &a->srv[s].c[i]) !=
                PK_OK)
                goto out;
    uint64_t t0 = now_ns();
    while ((a->srv[0].open < a->conns || a->srv[1].open < a->conns) &&
           now_ns() - t0 < 10ull * 1000000000ull)
        pk_loop_run_once(a->loop, 10);
    if (a->srv[0].open < a->conns || a->srv[1].open < a->conns) {
        fprintf(stderr, "proxkey bench alloc: could not connect to both kms\n");
        goto out;
    }
    printf("# alloc: %u pool devices (%llu allowed pairs) provisioned in %.2f s; two kms serve "
           "(SQLite, synchronous=FULL) pinned to CPU 0, generator on CPU 1; %u conns x %u in "
           "flight; load average before: %s\n",
           a->ndev, (unsigned long long)a->ndev * (a->ndev - 1) / 2, prov_s, a->conns, a->window,
           la0);
    fflush(stdout);
    ab_fig_t fn, fa;
    memset(&fn, 0, sizeof fn);
    memset(&fa, 0, sizeof fa);
    if (measure(a, 0, &fn) != 0 || measure(a, 1, &fa) != 0) {
        fprintf(stderr, "proxkey bench alloc: a round failed%s (logs in %s)\n",
                a->exhausted ? " (pairs used up: fewer --seconds or more --devices)" : "", a->dir);
        a->keep = 1;
        goto out;
    }
    pk_child_loadavg(la1, sizeof la1);
    printf("# alloc: new pairs allocated: %u (group), %u (alone); load average after: %s\n",
           a->srv[0].next, a->srv[1].next, la1);
    if (a->json)
        printf("{\"bench\":\"alloc\",\"new_group_per_s\":%.0f,\"new_alone_per_s\":%.0f,"
               "\"new_ratio\":%.2f,\"new_group_cpu_us\":%.1f,\"new_alone_cpu_us\":%.1f,"
               "\"again_group_per_s\":%.0f,\"again_alone_per_s\":%.0f,\"again_ratio\":%.2f,"
               "\"again_group_cpu_us\":%.1f,\"again_alone_cpu_us\":%.1f,\"rounds\":%u,"
               "\"seconds\":%.2f,\"devices\":%u,\"conns\":%u,\"window\":%u}\n",
               fn.group, fn.alone, fn.ratio, fn.group_cpu_us, fn.alone_cpu_us, fa.group, fa.alone,
               fa.ratio, fa.group_cpu_us, fa.alone_cpu_us, a->rounds, a->seconds, a->ndev, a->conns,
               a->window);
    rc = 0;
out:
    for (int s = 0; s < 2; s++)
        for (unsigned i = 0; i < a->conns; i++)
            if (a->srv[s].c[i])
                pk_tls_conn_close(a->srv[s].c[i]);
    for (int s = 0; s < 2; s++)
        pk_child_stop(&a->srv[s].pid);
    pk_tls_ctx_free(a->tls);
    if (a->loop)
        pk_loop_free(a->loop);
    if (a->dir[0]) {
        if (a->keep) {
            printf("# alloc: kept %s\n", a->dir);
        } else {
            char *av[] = {"rm", "-rf", a->dir, NULL};
            pid_t p = fork();
            if (p == 0) {
                execvp("rm", av);
                _exit(127);
            }
            if (p > 0)
                waitpid(p, NULL, 0);
        }
    }
    free(a);
    return rc;
}
