/*
 * `proxkey bench gts`: polls answered per second on loopback, the gts on one
 * core and the load generator on the other, next to a bare UDP echo server
 * with the same batching measured in the same run; bytes on the wire; and
 * the index memory per device with 1,000,000 devices loaded.
 *
 * The load generator runs W sockets, each one device slot with one poll in
 * flight, cycling through its share of the devices; every response is
 * verified and the device moves to its next identity (full exchanges:
 * lookup, UID2 derivation, AEAD seal, durable-record write, delivery).
 */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "core/crypto.h"
#include "core/log.h"
#include "gts.h"
#include "net/addr.h"
#include "net/loop.h"
#include "net/udp.h"
#include "proto/trigger/dev.h"

#define W 128

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
} srv_thread_t;

static void *srv_main(void *arg)
{
    srv_thread_t *t = arg;
    pin(0);
    if (t->echo)
        pk_loop_run(t->e.loop);
    else
        gts_server_run(t->gts);
    return NULL;
}

/* ---- load generator ---- */

typedef struct lg {
    int echo;
    uint16_t port;
    pk_trig_dev_t *devs; /* per device */
    uint32_t ndev;
    double seconds;
    uint64_t answered, bad, retrans;
    size_t resp_bytes;
} lg_t;

static void *lg_main(void *arg)
{
    lg_t *g = arg;
    pin(1);
    int ep = epoll_create1(0), fds[W];
    uint32_t cur[W];
    static pk_trig_dev_msg_t msg;
    pk_trig_cx_t cx = {0};
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(g->port);
    to.sin_addr.s_addr = htonl(0x7f000001);
    uint32_t per = g->ndev / W;
    for (int i = 0; i < W; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        connect(fds[i], (struct sockaddr *)&to, sizeof to);
        struct epoll_event ev = {EPOLLIN, {.u32 = (uint32_t)i}};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        cur[i] = (uint32_t)i * per;
        uint8_t p[PK_TRIG_POLL_LEN];
        pk_trig_dev_t *d = &g->devs[cur[i]];
        d->state = PK_TRIG_DEV_IDLE;
        (void)pk_trig_dev_poll(d, pk_now_mono_ms(), p);
        (void)send(fds[i], p, sizeof p, 0);
    }
    uint64_t t0 = pk_now_mono_ms(), end = t0 + (uint64_t)(g->seconds * 1000), last_check = t0;
    struct epoll_event evs[64];
    uint8_t buf[PK_TRIG_RESP_MAX + 1];
    for (;;) {
        uint64_t now = pk_now_mono_ms();
        if (now >= end)
            break;
        int n = epoll_wait(ep, evs, 64, 20);
        now = pk_now_mono_ms();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            for (int r = 0; r < 4; r++) {
                ssize_t len = recv(fds[i], buf, sizeof buf, 0);
                if (len <= 0)
                    break;
                pk_trig_dev_t *d = &g->devs[cur[i]];
                if (g->echo) {
                    g->answered++;
                } else if (pk_trig_dev_input_cx(d, buf, (size_t)len, now, &msg, &cx) == PK_OK) {
                    (void)pk_trig_dev_saved(d, now);
                    d->deadline_ms = 0;
                    g->answered++;
                    g->resp_bytes = (size_t)len;
                    cur[i] = (uint32_t)i * per + (cur[i] - (uint32_t)i * per + 1) % per;
                    d = &g->devs[cur[i]];
                } else {
                    g->bad++;
                    continue;
                }
                uint8_t p[PK_TRIG_POLL_LEN];
                if (g->echo) {
                    pk_trig_poll_build(1, d->uid, p);
                } else {
                    d->deadline_ms = 0;
                    if (pk_trig_dev_poll(d, now, p) != PK_OK)
                        g->bad++;
                }
                (void)send(fds[i], p, sizeof p, 0);
            }
        }
        if (now - last_check >= 100) { /* retransmit what the kernel dropped */
            last_check = now;
            for (int i = 0; i < W; i++) {
                pk_trig_dev_t *d = &g->devs[cur[i]];
                uint8_t p[PK_TRIG_POLL_LEN];
                int snd = 0;
                if (g->echo) {
                    continue;
                }
                (void)pk_trig_dev_timeout(d, now, p, &snd);
                if (snd) {
                    g->retrans++;
                    (void)send(fds[i], p, sizeof p, 0);
                }
            }
        }
    }
    g->seconds = (double)(pk_now_mono_ms() - t0) / 1000.0;
    for (int i = 0; i < W; i++)
        close(fds[i]);
    close(ep);
    pk_trig_cx_clear(&cx);
    return NULL;
}

static int run_one(int echo, uint32_t ndev, double seconds, double *rate, size_t *resp_bytes)
{
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
        gts_serve_opts_t o = {"memory:", NULL, "127.0.0.1:0", 1, ndev};
        if (gts_server_new(&st.gts, &o) != PK_OK)
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
    g.seconds = seconds;
    pthread_t ts, tl;
    pthread_create(&ts, NULL, srv_main, &st);
    pthread_create(&tl, NULL, lg_main, &g);
    pthread_join(tl, NULL);
    if (echo)
        pk_loop_stop(st.e.loop);
    else
        gts_server_stop(st.gts);
    pthread_join(ts, NULL);
    *rate = (double)g.answered / g.seconds;
    if (resp_bytes)
        *resp_bytes = g.resp_bytes;
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

int pk_bench_suite_gts(int argc, char **argv)
{
    int json = 0, skip_echo = 0;
    unsigned long long ndev = 10000, memdev = 1000000, rounds = 3;
    double seconds = 2.0;
    for (int i = 1; i < argc; i++) {
        unsigned long long v;
        if (pk_cli_is_help(argv[i])) {
            printf("usage: proxkey bench gts [--json] [--devices N] [--mem-devices N]\n"
                   "          [--rounds N] [--seconds S]\n"
                   "Polls answered per second on loopback (gts on core 0, load on core 1)\n"
                   "beside a bare batched UDP echo server; bytes per poll and response;\n"
                   "index memory per device with --mem-devices devices (default 1000000).\n");
            return 0;
        } else if (strcmp(argv[i], "--skip-echo") == 0) {
            skip_echo = 1; /* for profiling the gts alone */
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--devices") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], W, 10000000, &ndev) == 0) {
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
    if (pk_crypto_init() != PK_OK)
        return 1;
    pk_log_set_level(PK_LOG_ERROR);
    /* alternate rounds so a noisy neighbour hits both alike; take medians */
    double gts[21], echo[21];
    size_t resp_bytes = 0;
    int rc = 0;
    for (unsigned r = 0; r < rounds; r++) {
        echo[r] = 0;
        if (!skip_echo)
            rc |= run_one(1, (uint32_t)ndev, seconds, &echo[r], NULL);
        rc |= run_one(0, (uint32_t)ndev, seconds, &gts[r], &resp_bytes);
    }
    for (unsigned i = 0; i < rounds; i++)
        for (unsigned j = i + 1; j < rounds; j++) {
            if (gts[j] < gts[i]) {
                double t = gts[i];
                gts[i] = gts[j];
                gts[j] = t;
            }
            if (echo[j] < echo[i]) {
                double t = echo[i];
                echo[i] = echo[j];
                echo[j] = t;
            }
        }
    double g = gts[rounds / 2], e = echo[rounds / 2];

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
    printf("gts polls answered/s (full exchanges, %llu devices, %d in flight): %.0f\n", ndev, W, g);
    printf("bare batched UDP echo, same load generator:                       %.0f\n", e);
    printf("ratio gts/echo: %.2f (target >= 0.80)\n", e > 0 ? g / e : 0.0);
    printf("bytes on the wire: poll %d, response %zu (no command) = %d + payload\n",
           PK_TRIG_POLL_LEN, resp_bytes, PK_TRIG_RESP_FIXED);
    printf("index memory with %llu devices: %.1f bytes/device (target <= 96); RSS growth %.1f "
           "bytes/device\n",
           memdev, idx_per_dev, rss_per_dev);
    if (json)
        printf("{\"suite\":\"gts\",\"gts_polls_per_s\":%.0f,\"echo_per_s\":%.0f,\"ratio\":%.3f,"
               "\"target_ratio\":0.8,\"poll_bytes\":%d,\"resp_bytes\":%zu,\"devices\":%llu,"
               "\"mem_devices\":%llu,\"index_bytes_per_device\":%.1f,"
               "\"rss_bytes_per_device\":%.1f,\"rounds\":%llu,\"seconds\":%.0f}\n",
               g, e, e > 0 ? g / e : 0.0, PK_TRIG_POLL_LEN, resp_bytes, ndev, memdev, idx_per_dev,
               rss_per_dev, rounds, seconds);
    return rc;
}
