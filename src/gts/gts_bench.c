/*
 * `proxkey bench gts`: polls answered per second on loopback, the gts on one
 * core and the load generator on the other, next to a bare UDP echo server
 * with the same batching measured in the same run; bytes on the wire; and
 * the index memory per device with 1,000,000 devices loaded.
 *
 * The load generator (below) keeps many polls in flight over NS sockets,
 * each cycling through its share of the devices; every response is
 * verified and the device moves to its next identity (full exchanges:
 * lookup, UID2 derivation, AEAD seal, durable-record write, delivery).
 */

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "childproc.h"
#include "cli.h"
#include "core/crypto.h"
#include "core/log.h"
#include "gts.h"
#include "net/addr.h"
#include "net/loop.h"
#include "net/udp.h"
#include "proto/trigger/dev.h"

static void pin(int cpu)
{
    cpu_set_t set;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 2)
        return;
    CPU_ZERO(&set);
    CPU_SET(cpu % n, &set);
    (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* ---- bare echo server with the same batching (pk_udp) ---- */

typedef struct echo {
    pk_loop_t *loop;
    pk_udp_t *u;
    pk_udp_batch_t b;
} echo_t;

static void echo_read(pk_udp_t *u, void *ctx)
{
    echo_t *e = ctx;
    for (int r = 0; r < 16; r++) {
        int n = pk_udp_recv_batch(u, &e->b);
        if (n <= 0)
            break;
        for (unsigned i = 0; i < e->b.n; i++)
            (void)pk_udp_send(u, &e->b.dg[i].peer, e->b.dg[i].data, e->b.dg[i].len);
        pk_udp_flush(u);
    }
}

typedef struct srv_thread {
    int echo;
    gts_server_t *gts;
    echo_t e;
    double cpu_s; /* CPU time of the server thread */
} srv_thread_t;

static double thread_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *srv_main(void *arg)
{
    srv_thread_t *t = arg;
    pin(0);
    double c0 = thread_cpu_s();
    if (t->echo)
        pk_loop_run(t->e.loop);
    else
        gts_server_run(t->gts);
    t->cpu_s = thread_cpu_s() - c0;
    return NULL;
}

/* ---- load generator ----
 * NS connected sockets; socket i owns the devices [i*per, (i+1)*per) and
 * keeps `depth` polls in flight, sent with sendmmsg and read with
 * recvmmsg. Responses on one socket come back in the order of its polls
 * (one server socket, FIFO groups), so each is checked against the oldest
 * outstanding device of that socket first; a response that matches a later
 * one marks the earlier ones lost (they are retransmitted with try + 1). */

#define NS       64
#define LG_BATCH 64

typedef struct lg_sock {
    int fd;
    uint32_t first, per, next; /* owned devices and the next one to poll */
    uint32_t *q;               /* outstanding device numbers (ring of depth) */
    uint32_t qh, qn;
    uint64_t last_rx;
} lg_sock_t;

typedef struct lg {
    int echo;
    uint16_t port;
    pk_trig_dev_t *devs;  /* per device */
    uint32_t ndev, depth; /* depth: polls in flight per socket */
    double seconds;
    uint64_t answered, bad, retrans, stray;
    size_t resp_bytes;
} lg_t;

typedef struct lg_out {
    uint8_t p[LG_BATCH][PK_TRIG_POLL_LEN];
    struct iovec iov[LG_BATCH];
    struct mmsghdr mh[LG_BATCH];
    unsigned n;
} lg_out_t;

static void out_flush(int fd, lg_out_t *o)
{
    unsigned done = 0;
    while (done < o->n) {
        int r = sendmmsg(fd, o->mh + done, o->n - done, 0);
        if (r <= 0)
            break; /* EAGAIN: the lost ones are retransmitted later */
        done += (unsigned)r;
    }
    o->n = 0;
}

static uint8_t *out_slot(lg_out_t *o)
{
    unsigned i = o->n++;
    o->iov[i].iov_base = o->p[i];
    o->iov[i].iov_len = PK_TRIG_POLL_LEN;
    memset(&o->mh[i], 0, sizeof o->mh[i]);
    o->mh[i].msg_hdr.msg_iov = &o->iov[i];
    o->mh[i].msg_hdr.msg_iovlen = 1;
    return o->p[i];
}

/* Queues a fresh poll of the socket's next device. */
static void lg_poll_next(lg_t *g, lg_sock_t *k, lg_out_t *o, uint64_t now, int fd)
{
    uint32_t dn = k->first + k->next;
    k->next = (k->next + 1) % k->per;
    pk_trig_dev_t *d = &g->devs[dn];
    if (o->n == LG_BATCH)
        out_flush(fd, o);
    uint8_t *p = out_slot(o);
    if (g->echo) {
        pk_trig_poll_build(1, d->uid, p);
    } else {
        d->deadline_ms = 0;
        if (d->state != PK_TRIG_DEV_IDLE || pk_trig_dev_poll(d, now, p) != PK_OK) {
            g->bad++;
            o->n--;
            return;
        }
    }
    k->q[(k->qh + k->qn) % g->depth] = dn;
    k->qn++;
}

/* Re-queues device dn (lost poll or response) with a retransmission. */
static void lg_retransmit(lg_t *g, lg_sock_t *k, lg_out_t *o, uint32_t dn, uint64_t now)
{
    pk_trig_dev_t *d = &g->devs[dn];
    int snd = 0;
    if (o->n == LG_BATCH)
        out_flush(k->fd, o);
    uint8_t *p = out_slot(o);
    if (g->echo) {
        pk_trig_poll_build(1, d->uid, p);
        snd = 1;
    } else {
        d->deadline_ms = 0;
        (void)pk_trig_dev_timeout(d, now, p, &snd);
    }
    if (!snd) {
        o->n--;
        d->state = PK_TRIG_DEV_IDLE; /* gave up: poll it afresh later */
        return;
    }
    g->retrans++;
    k->q[(k->qh + k->qn) % g->depth] = dn;
    k->qn++;
}

static void *lg_main(void *arg)
{
    lg_t *g = arg;
    pin(1);
    int ep = epoll_create1(0);
    lg_sock_t *ks = calloc(NS, sizeof *ks);
    static pk_trig_dev_msg_t msg;
    static lg_out_t out;
    static uint8_t rbuf[LG_BATCH][PK_TRIG_RESP_MAX + 1];
    struct iovec riov[LG_BATCH];
    struct mmsghdr rmh[LG_BATCH];
    pk_trig_cx_t cx = {0};
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(g->port);
    to.sin_addr.s_addr = htonl(0x7f000001);
    uint32_t per = g->ndev / NS;
    uint64_t t0 = pk_now_mono_ms();
    for (int i = 0; i < NS && ks; i++) {
        lg_sock_t *k = &ks[i];
        int bufsz = 4 << 20;
        k->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        (void)setsockopt(k->fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
        (void)setsockopt(k->fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
        (void)connect(k->fd, (struct sockaddr *)&to, sizeof to);
        struct epoll_event ev = {EPOLLIN, {.u32 = (uint32_t)i}};
        epoll_ctl(ep, EPOLL_CTL_ADD, k->fd, &ev);
        k->first = (uint32_t)i * per;
        k->per = per;
        k->q = calloc(g->depth, sizeof *k->q);
        k->last_rx = t0;
        for (uint32_t j = 0; j < per; j++)
            g->devs[k->first + j].state = PK_TRIG_DEV_IDLE;
        for (uint32_t j = 0; j < g->depth && k->q; j++)
            lg_poll_next(g, k, &out, t0, k->fd);
        out_flush(k->fd, &out);
    }
    for (int i = 0; i < LG_BATCH; i++) {
        riov[i].iov_base = rbuf[i];
        riov[i].iov_len = sizeof rbuf[i];
        memset(&rmh[i], 0, sizeof rmh[i]);
        rmh[i].msg_hdr.msg_iov = &riov[i];
        rmh[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t end = t0 + (uint64_t)(g->seconds * 1000), last_check = t0;
    struct epoll_event evs[NS];
    while (ks) {
        uint64_t now = pk_now_mono_ms();
        if (now >= end)
            break;
        int n = epoll_wait(ep, evs, NS, 20);
        now = pk_now_mono_ms();
        for (int e = 0; e < n; e++) {
            lg_sock_t *k = &ks[evs[e].data.u32];
            for (int round = 0; round < 4; round++) {
                int m = recvmmsg(k->fd, rmh, LG_BATCH, MSG_DONTWAIT, NULL);
                if (m <= 0)
                    break;
                k->last_rx = now;
                for (int r = 0; r < m; r++) {
                    const uint8_t *buf = rbuf[r];
                    size_t len = rmh[r].msg_len;
                    int hit = -1;
                    for (uint32_t t = 0; t < k->qn && t < 4 && hit < 0; t++) {
                        uint32_t dn = k->q[(k->qh + t) % g->depth];
                        pk_trig_dev_t *d = &g->devs[dn];
                        if (g->echo) {
                            if (len == PK_TRIG_POLL_LEN && !memcmp(buf + 4, d->uid, 16))
                                hit = (int)t;
                        } else if (pk_trig_dev_input_cx(d, buf, len, now, &msg, &cx) == PK_OK) {
                            (void)pk_trig_dev_saved(d, now);
                            g->resp_bytes = len;
                            hit = (int)t;
                        }
                    }
                    if (hit < 0) {
                        g->stray++; /* a duplicate answer to a retransmission */
                        continue;
                    }
                    for (int t = 0; t < hit; t++) { /* lost before it: retransmit */
                        uint32_t dn = k->q[k->qh];
                        k->qh = (k->qh + 1) % g->depth;
                        k->qn--;
                        lg_retransmit(g, k, &out, dn, now);
                    }
                    k->qh = (k->qh + 1) % g->depth;
                    k->qn--;
                    g->answered++;
                    lg_poll_next(g, k, &out, now, k->fd);
                }
                out_flush(k->fd, &out);
            }
        }
        if (now - last_check >= 100) { /* a socket that went quiet: retransmit its queue */
            last_check = now;
            for (int i = 0; i < NS; i++) {
                lg_sock_t *k = &ks[i];
                if (k->qn == 0 || now - k->last_rx < 200)
                    continue;
                k->last_rx = now;
                uint32_t qn = k->qn;
                for (uint32_t t = 0; t < qn; t++) {
                    uint32_t dn = k->q[k->qh];
                    k->qh = (k->qh + 1) % g->depth;
                    k->qn--;
                    lg_retransmit(g, k, &out, dn, now);
                }
                for (uint32_t t = k->qn; t < g->depth; t++)
                    lg_poll_next(g, k, &out, now, k->fd);
                out_flush(k->fd, &out);
            }
        }
    }
    g->seconds = (double)(pk_now_mono_ms() - t0) / 1000.0;
    for (int i = 0; i < NS && ks; i++) {
        close(ks[i].fd);
        free(ks[i].q);
    }
    free(ks);
    close(ep);
    pk_trig_cx_clear(&cx);
    return NULL;
}

typedef struct bench_cfg {
    uint32_t ndev, depth;
    double seconds;
    const char *jdir; /* journal directory (a fresh temp dir) */
    int sqlite;       /* the store is SQLite in jdir (else memory:) */
    uint64_t ckpt_records;
} bench_cfg_t;

typedef struct round_res {
    double rate;
    double cpu_us; /* server-thread CPU per answer */
    size_t resp_bytes;
    uint64_t retrans, groups, records, checkpoints;
    double ckpt_ms; /* mean checkpoint time */
    double sync_ms; /* mean fdatasync per group */
} round_res_t;

/* ---- the cryptography one exchange needs, alone ----
 * What the gts computes per new exchange under the device's own key, the way
 * its core does it: the KDF context re-keyed with K1 and UID2 derived, the
 * response re-keyed and sealed (no command). Keys and UIDs rotate through a
 * small set that stays in cache, so this is the cryptography's cost with no
 * memory misses and no bookkeeping: a lower bound on what the gts adds to the
 * echo's kernel path. Server-thread CPU time on core 0, microseconds. */

#define CRYPTO_KEYS 256

static void *crypto_main(void *arg)
{
    double *us = arg;
    uint8_t k[CRYPTO_KEYS][PK_TRIG_KEY_LEN], u[CRYPTO_KEYS][PK_TRIG_UID_LEN];
    uint8_t rand[PK_TRIG_RAND_LEN] = {1}, nonce[PK_TRIG_NONCE_LEN] = {2}, uid2[PK_TRIG_UID_LEN];
    uint8_t resp[PK_TRIG_RESP_FIXED];
    pk_kdf_t kdf;
    pk_aead_t aead;
    size_t rl = 0;
    const unsigned n = 200000;
    int ok;

    pin(0);
    memset(&aead, 0, sizeof aead);
    memset(&kdf, 0, sizeof kdf); /* pk_kdf_init wants a cleared context */
    *us = 0;
    if (pk_rng_fill(&pk_rng_system, k, sizeof k) != PK_OK ||
        pk_rng_fill(&pk_rng_system, u, sizeof u) != PK_OK ||
        pk_kdf_init(&kdf, k[0], PK_TRIG_KEY_LEN) != PK_OK)
        return NULL;
    ok = 1;
    double t0 = thread_cpu_s();
    for (unsigned i = 0; i < n && ok; i++) {
        unsigned j = i % CRYPTO_KEYS;
        rand[0] = (uint8_t)i;
        ok = pk_kdf_rekey(&kdf, k[j], PK_TRIG_KEY_LEN) == PK_OK &&
             pk_trig_derive_uid2_cx(&kdf, u[j], rand, uid2) == PK_OK &&
             pk_trig_resp_seal_cx(&aead, k[j], u[j], nonce, PK_TRIG_CMD_NONE, 0, NULL, 0, 1, rand,
                                  resp, sizeof resp, &rl) == PK_OK;
        u[j][0] ^= uid2[0]; /* the result feeds the next use of this key */
    }
    double t1 = thread_cpu_s();
    if (ok)
        *us = (t1 - t0) * 1e6 / n;
    pk_kdf_clear(&kdf);
    pk_aead_clear(&aead);
    pk_wipe(k, sizeof k);
    return NULL;
}

static double crypto_per_exchange_us(void)
{
    pthread_t t;
    double us = 0;
    if (pthread_create(&t, NULL, crypto_main, &us) != 0)
        return 0;
    pthread_join(t, NULL);
    return us;
}

static int run_one(int echo, const bench_cfg_t *bc, unsigned round, round_res_t *res)
{
    uint32_t ndev = bc->ndev;
    char jbase[600], store[600];
    srv_thread_t st;
    lg_t g;
    pk_trig_dev_cfg_t cfg = {200, 254, 1, 86400};
    int rc = 1;
    memset(&st, 0, sizeof st);
    memset(&g, 0, sizeof g);
    st.echo = echo;
    g.devs = calloc(ndev, sizeof *g.devs);
    if (!g.devs)
        return 1;
    if (echo) {
        pk_addr_t a;
        pk_udp_opts_t uo = {4 << 20, 4 << 20, 8192};
        st.e.loop = pk_loop_new();
        if (!st.e.loop || pk_addr_parse("127.0.0.1:0", &a, NULL) != PK_OK ||
            pk_udp_open(&st.e.u, &a, &uo) != PK_OK || pk_udp_batch_init(&st.e.b, 64) != PK_OK ||
            pk_udp_attach(st.e.u, st.e.loop, echo_read, &st.e) != PK_OK)
            goto out;
        pk_udp_local_addr(st.e.u, &a);
        g.port = pk_addr_port(&a);
        for (uint32_t i = 0; i < ndev; i++) {
            uint8_t u[16] = {0};
            memcpy(u, &i, 4);
            pk_trig_dev_init(&g.devs[i], &cfg, u, u, 60, 0);
        }
    } else {
        /* the durable path for real: journal groups fdatasync'ed on this disk */
        snprintf(jbase, sizeof jbase, "%s/round%u.journal", bc->jdir, round);
        snprintf(store, sizeof store, "sqlite:%s/round%u.db", bc->jdir, round);
        gts_serve_opts_t o = {.store = bc->sqlite ? store : "memory:",
                              .listen = "127.0.0.1:0",
                              .quiet = 1,
                              .reserve = ndev,
                              .journal = jbase,
                              .ckpt_records = bc->ckpt_records,
                              /* one address stands for every device: a
                               * retransmission storm is not throttled (the
                               * gate is not asked on the exchange path) */
                              .retx_unlimited = 1};
        /* the whole gts on CPU 0: its journal (sync) and checkpoint threads
         * inherit this thread's affinity when gts_server_new starts them */
        cpu_set_t saved;
        int have = pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0;
        pin(0);
        int nrc = gts_server_new(&st.gts, &o);
        if (have)
            (void)pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
        if (nrc != PK_OK)
            goto out;
        g.port = gts_server_port(st.gts);
        pk_trig_srv_t *core = gts_server_core(st.gts);
        for (uint32_t i = 0; i < ndev; i++) {
            uint8_t k[16], u[16];
            if (pk_random(k, 16) != PK_OK || pk_random(u, 16) != PK_OK ||
                pk_trig_srv_add(core, i, k, u, 0) != PK_OK)
                goto out;
            pk_trig_dev_init(&g.devs[i], &cfg, k, u, 60, 0);
        }
    }
    g.echo = echo;
    g.ndev = ndev;
    g.depth = bc->depth;
    g.seconds = bc->seconds;
    pthread_t ts, tl;
    pthread_create(&ts, NULL, srv_main, &st);
    pthread_create(&tl, NULL, lg_main, &g);
    pthread_join(tl, NULL);
    if (echo)
        pk_loop_stop(st.e.loop);
    else
        gts_server_stop(st.gts);
    pthread_join(ts, NULL);
    memset(res, 0, sizeof *res);
    res->rate = (double)g.answered / g.seconds;
    res->cpu_us = g.answered ? st.cpu_s * 1e6 / (double)g.answered : 0;
    res->resp_bytes = g.resp_bytes;
    res->retrans = g.retrans;
    if (!echo) {
        gts_server_stats_t ss;
        gts_server_stats(st.gts, &ss);
        res->groups = ss.groups;
        res->records = ss.records;
        res->sync_ms = ss.groups ? (double)ss.sync_us / 1000.0 / (double)ss.groups : 0;
        res->checkpoints = ss.checkpoints;
        res->ckpt_ms = ss.checkpoints ? (double)ss.ckpt_us / 1000.0 / (double)ss.checkpoints : 0;
    }
    rc = g.bad ? 1 : 0;
    if (g.bad)
        fprintf(stderr, "bench gts: %llu responses failed verification\n",
                (unsigned long long)g.bad);
out:
    if (echo) {
        pk_udp_close(st.e.u);
        pk_udp_batch_free(&st.e.b);
        pk_loop_free(st.e.loop);
    } else {
        gts_server_free(st.gts);
    }
    free(g.devs);
    return rc;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Removes the bench's temporary directory and the files in it. */
static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1024];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        (void)unlink(p);
    }
    if (d)
        closedir(d);
    (void)rmdir(dir);
}

int pk_bench_suite_gts(int argc, char **argv)
{
    int json = 0, skip_echo = 0;
    unsigned long long ndev = 100000, memdev = 1000000, rounds = 5, inflight = 4096, ckpt = 0;
    int sqlite = 0;
    double seconds = 2.0;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 1; i < argc; i++) {
        unsigned long long v;
        if (pk_cli_is_help(argv[i])) {
            printf("usage: proxkey bench gts [--json] [--devices N] [--inflight N]\n"
                   "          [--mem-devices N] [--rounds N] [--seconds S] [--skip-echo]\n"
                   "          [--sqlite] [--checkpoint-records N]\n"
                   "Polls answered per second on loopback (gts on core 0, load on core 1,\n"
                   "N polls in flight over %d sockets, recvmmsg/sendmmsg) beside a bare\n"
                   "batched UDP echo server with the same load generator, median of rounds.\n"
                   "The gts journals every exchange durably (group commit, fdatasync in\n"
                   "$TMPDIR) before answering; its checkpoints go to a memory: store, or\n"
                   "with --sqlite to a SQLite file there. Each round also times the\n"
                   "cryptography of one exchange alone (UID2 KDF, response re-key and\n"
                   "seal; keys in cache) on core 0: echo/(echo + that) bounds the ratio.\n"
                   "Bytes per poll and response; index memory per device with\n"
                   "--mem-devices devices (default 1000000).\n",
                   NS);
            return 0;
        } else if (strcmp(argv[i], "--skip-echo") == 0) {
            skip_echo = 1; /* for profiling the gts alone */
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--sqlite") == 0) {
            sqlite = 1;
        } else if (strcmp(argv[i], "--checkpoint-records") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 1, 1ull << 40, &ckpt) == 0) {
        } else if (strcmp(argv[i], "--devices") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 1024, 10000000, &ndev) == 0) {
        } else if (strcmp(argv[i], "--inflight") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], NS, 65536, &inflight) == 0) {
        } else if (strcmp(argv[i], "--mem-devices") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 1, 100000000, &memdev) == 0) {
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 1, 21, &rounds) == 0) {
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 1, 60, &v) == 0) {
            seconds = (double)v;
        } else {
            return pk_cli_usage_error("bench gts", "unknown argument '%s'", argv[i]);
        }
    }
    bench_cfg_t bc = {(uint32_t)ndev, (uint32_t)(inflight / NS), seconds, NULL, sqlite, ckpt};
    if (bc.depth * NS > ndev / 2)
        return pk_cli_usage_error("bench gts", "--devices must be at least twice --inflight");
    if (pk_crypto_init() != PK_OK)
        return 1;
    pk_log_set_level(PK_LOG_ERROR);
    char jdir[512];
    snprintf(jdir, sizeof jdir, "%s/proxkey-bench-gts-XXXXXX", tmp);
    if (!mkdtemp(jdir)) {
        fprintf(stderr, "bench gts: cannot create a directory in %s\n", tmp);
        return 1;
    }
    bc.jdir = jdir;
    double load0[3] = {0}, load1[3] = {0};
    (void)getloadavg(load0, 3);
    /* alternate rounds so a noisy neighbour hits both alike; take medians */
    double gts[21], echo[21], ratio[21], sync_ms[21], gcpu[21], ecpu[21], ccpu[21];
    round_res_t rr;
    size_t resp_bytes = 0;
    uint64_t retrans = 0, groups = 0, records = 0, ckpts = 0;
    double ckpt_ms = 0;
    int rc = 0;
    for (unsigned r = 0; r < rounds; r++) {
        echo[r] = 0;
        ecpu[r] = 0;
        if (!skip_echo) {
            rc |= run_one(1, &bc, r, &rr);
            echo[r] = rr.rate;
            ecpu[r] = rr.cpu_us;
        }
        rc |= run_one(0, &bc, r, &rr);
        gts[r] = rr.rate;
        gcpu[r] = rr.cpu_us;
        sync_ms[r] = rr.sync_ms;
        resp_bytes = rr.resp_bytes;
        retrans += rr.retrans;
        groups += rr.groups;
        records += rr.records;
        ckpts += rr.checkpoints;
        ckpt_ms += rr.ckpt_ms * (double)rr.checkpoints;
        ratio[r] = echo[r] > 0 ? gts[r] / echo[r] : 0;
        ccpu[r] = crypto_per_exchange_us();
        if (ccpu[r] <= 0)
            rc = 1;
        if (!json)
            printf("round %u: gts %.0f/s, echo %.0f/s, ratio %.2f; server CPU per answer: gts "
                   "%.2f us, echo %.2f us, crypto alone %.2f us; %llu journal groups, "
                   "fdatasync %.2f ms mean\n",
                   r + 1, gts[r], echo[r], ratio[r], gcpu[r], ecpu[r], ccpu[r],
                   (unsigned long long)rr.groups, rr.sync_ms);
    }
    (void)getloadavg(load1, 3);
    rm_dir(jdir);
    pk_child_sort(gts, (unsigned)rounds);
    pk_child_sort(echo, (unsigned)rounds);
    pk_child_sort(ratio, (unsigned)rounds);
    pk_child_sort(sync_ms, (unsigned)rounds);
    pk_child_sort(gcpu, (unsigned)rounds);
    pk_child_sort(ecpu, (unsigned)rounds);
    pk_child_sort(ccpu, (unsigned)rounds);
    double gc = gcpu[rounds / 2], ec = ecpu[rounds / 2], cc = ccpu[rounds / 2];
    double g = gts[rounds / 2], e = echo[rounds / 2], q = ratio[rounds / 2];

    /* memory: 1,000,000 devices provisioned into a bare core */
    long rss0 = rss_kb();
    pk_trig_srv_t *core;
    uint64_t seed = 1;
    double idx_per_dev = 0, rss_per_dev = 0;
    if (pk_trig_srv_new(&core, &pk_rng_system, (size_t)memdev) == PK_OK) {
        int ok = 1;
        for (uint32_t i = 0; i < memdev && ok; i++) {
            uint8_t k[16], u[16];
            for (int b = 0; b < 16; b++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                u[b] = (uint8_t)(seed >> 56);
                k[b] = (uint8_t)(seed >> 48);
            }
            ok = pk_trig_srv_add(core, i, k, u, 0) == PK_OK;
        }
        if (!ok)
            rc = 1;
        idx_per_dev = (double)pk_trig_srv_index_bytes(core) / (double)memdev;
        rss_per_dev = (double)(rss_kb() - rss0) * 1024.0 / (double)memdev;
        pk_trig_srv_free(core);
    }
    printf("gts polls answered/s (full exchanges, durable journal, %llu devices, %llu in "
           "flight): %.0f (median of %llu)\n",
           ndev, (unsigned long long)bc.depth * NS, g, rounds);
    printf("bare batched UDP echo, same load generator:  %.0f\n", e);
    printf("ratio gts/echo: %.2f (median of per-round ratios, range %.2f-%.2f; target >= 0.80)\n",
           q, ratio[0], ratio[rounds - 1]);
    printf("journal: %llu groups, %llu records (%.1f records/group), fdatasync %.2f ms median "
           "of round means; %llu load-generator retransmissions\n",
           (unsigned long long)groups, (unsigned long long)records,
           groups ? (double)records / (double)groups : 0.0, sync_ms[rounds / 2],
           (unsigned long long)retrans);
    printf("server-thread CPU per answer (median): gts %.2f us, echo %.2f us; CPU-bound "
           "ratio echo/gts %.2f (what an idle core would give)\n",
           gc, ec, gc > 0 ? ec / gc : 0.0);
    printf("cryptography per exchange alone (UID2 KDF + response re-key and seal, keys in "
           "cache, core 0): %.2f us; echo + that alone would give echo/gts %.2f at best\n",
           cc, ec + cc > 0 ? ec / (ec + cc) : 0.0);
    printf("checkpoints during the runs: %llu, %.1f ms each on average (%s store)\n",
           (unsigned long long)ckpts, ckpts ? ckpt_ms / (double)ckpts : 0.0,
           sqlite ? "SQLite" : "memory:");
    printf("load average before %.2f, after %.2f\n", load0[0], load1[0]);
    printf("bytes on the wire: poll %d, response %zu (no command) = %d + payload\n",
           PK_TRIG_POLL_LEN, resp_bytes, PK_TRIG_RESP_FIXED);
    printf("index memory with %llu devices: %.1f bytes/device (target <= 96); RSS growth %.1f "
           "bytes/device\n",
           memdev, idx_per_dev, rss_per_dev);
    if (json)
        printf("{\"suite\":\"gts\",\"gts_polls_per_s\":%.0f,\"echo_per_s\":%.0f,\"ratio\":%.3f,"
               "\"target_ratio\":0.8,\"poll_bytes\":%d,\"resp_bytes\":%zu,\"devices\":%llu,"
               "\"mem_devices\":%llu,\"index_bytes_per_device\":%.1f,"
               "\"rss_bytes_per_device\":%.1f,\"rounds\":%llu,\"seconds\":%.0f,"
               "\"inflight\":%llu,\"journal_groups\":%llu,\"journal_records\":%llu,"
               "\"fdatasync_ms\":%.3f,\"gts_cpu_us_per_poll\":%.3f,\"echo_cpu_us_per_msg\":%.3f,"
               "\"crypto_us_per_exchange\":%.3f,"
               "\"loadavg_before\":%.2f,\"loadavg_after\":%.2f}\n",
               g, e, q, PK_TRIG_POLL_LEN, resp_bytes, ndev, memdev, idx_per_dev, rss_per_dev,
               rounds, seconds, (unsigned long long)bc.depth * NS, (unsigned long long)groups,
               (unsigned long long)records, sync_ms[rounds / 2], gc, ec, cc, load0[0], load1[0]);
    return rc;
}
