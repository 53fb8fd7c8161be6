/* Addresses and batched UDP over loopback. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "net/addr.h"
#include "net/udp.h"

static void test_addr_parse(void)
{
    pk_addr_t a;
    const char *why = NULL;
    char buf[PK_ADDR_STRLEN];

    CHECK_EQ_INT(pk_addr_parse("127.0.0.1:4500", &a, &why), PK_OK);
    CHECK_EQ_INT(a.ss.ss_family, AF_INET);
    CHECK_EQ_INT(pk_addr_port(&a), 4500);
    CHECK(strcmp(pk_addr_format(&a, buf), "127.0.0.1:4500") == 0);
    CHECK_EQ_INT(pk_addr_parse("[::1]:4500", &a, &why), PK_OK);
    CHECK_EQ_INT(a.ss.ss_family, AF_INET6);
    CHECK(strcmp(pk_addr_format(&a, buf), "[::1]:4500") == 0);
    CHECK_EQ_INT(pk_addr_parse("[2001:db8::7]:0", &a, &why), PK_OK);
    CHECK_EQ_INT(pk_addr_port(&a), 0);
    CHECK(strcmp(pk_addr_format(&a, buf), "[2001:db8::7]:0") == 0);
    CHECK_EQ_INT(pk_addr_parse("localhost:65535", &a, &why), PK_OK);
    CHECK(strcmp(pk_addr_format(&a, buf), "127.0.0.1:65535") == 0);

    static const char *bad[] = {"",
                                "127.0.0.1",
                                "127.0.0.1:",
                                "127.0.0.1:65536",
                                "127.0.0.1:99999999",
                                "127.0.0.1:8x",
                                "127.0.0.1:-1",
                                "127.0.0.1: 80",
                                "1.2.3.256:1",
                                ":80",
                                "::1:80",
                                "[::1]80",
                                "[::1",
                                "[]:1",
                                "[127.0.0.1]:1",
                                "example.com:80",
                                "[::1]:",
                                "0123456789012345678901234567890123456789012345678901234567890:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        a.len = 99;
        CHECK_EQ_INT(pk_addr_parse(bad[i], &a, &why), PK_ERR_INVAL);
        CHECK(why != NULL && why[0] != '\0');
        CHECK_EQ_INT(a.len, 0); /* zeroed on failure */
    }
    CHECK_EQ_INT(pk_addr_parse(NULL, &a, NULL), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_addr_parse("::1:80", &a, &why), PK_ERR_INVAL);
    CHECK(strstr(why, "brackets") != NULL);
}

static void test_addr_source_key(void)
{
    pk_addr_t a, b;
    uint8_t ka[16], kb[16];

    pk_addr_parse("192.0.2.7:1", &a, NULL);
    pk_addr_parse("[::ffff:192.0.2.7]:2", &b, NULL);
    CHECK_EQ_INT(pk_addr_source_key(&a, ka), 4);
    CHECK_EQ_INT(pk_addr_source_key(&b, kb), 4); /* v4-mapped = v4; port ignored */
    CHECK_MEM(ka, kb, 16);
    pk_addr_parse("[2001:db8:1:2:aaaa::1]:1", &a, NULL);
    pk_addr_parse("[2001:db8:1:2:bbbb::9]:1", &b, NULL);
    CHECK_EQ_INT(pk_addr_source_key(&a, ka), 6);
    CHECK_EQ_INT(pk_addr_source_key(&b, kb), 6);
    CHECK_MEM(ka, kb, 16); /* same /64 */
    pk_addr_parse("[2001:db8:1:3::1]:1", &b, NULL);
    pk_addr_source_key(&b, kb);
    CHECK(memcmp(ka, kb, 16) != 0);
    CHECK(!pk_addr_eq(&a, &b));
    CHECK(pk_addr_eq(&a, &a));
}

/* ---- echo of 1000 datagrams ---- */

#define ECHO_N 1000
#define WINDOW 32 /* datagrams in flight: stays inside default socket buffers */

struct echo {
    pk_loop_t *loop;
    pk_udp_t *a, *b;
    pk_addr_t a_addr, b_addr;
    pk_udp_batch_t ba, bb;
    int next; /* next seq A sends */
    int got;  /* echoes A received intact */
    int bad;  /* echoes that did not match */
    int dup;
    uint8_t seen[ECHO_N];
    int max_batch;
};

static size_t dgram_len(int seq)
{
    return 8 + (size_t)(seq * 37 % 1200);
}

static void fill(uint8_t *p, int seq, size_t len)
{
    p[0] = (uint8_t)(seq >> 8);
    p[1] = (uint8_t)seq;
    for (size_t i = 2; i < len; i++)
        p[i] = (uint8_t)(seq * 31 + (int)i * 7);
}

static void a_send_more(struct echo *e)
{
    uint8_t buf[1300];
    while (e->next < ECHO_N && e->next - e->got - e->bad < WINDOW) {
        size_t len = dgram_len(e->next);
        fill(buf, e->next, len);
        CHECK_EQ_INT(pk_udp_send(e->a, &e->b_addr, buf, len), PK_OK);
        e->next++;
    }
    pk_udp_flush(e->a);
}

static void b_readable(pk_udp_t *u, void *ctx)
{
    struct echo *e = ctx;
    for (int k = 0; k < 16; k++) {
        int n = pk_udp_recv_batch(u, &e->bb);
        CHECK(n >= 0);
        if (n <= 0)
            break;
        if (n > e->max_batch)
            e->max_batch = n;
        for (int i = 0; i < n; i++) {
            CHECK(!e->bb.dg[i].truncated);
            CHECK(pk_addr_eq(&e->bb.dg[i].peer, &e->a_addr));
            CHECK_EQ_INT(pk_udp_send(u, &e->bb.dg[i].peer, e->bb.dg[i].data, e->bb.dg[i].len),
                         PK_OK);
        }
        pk_udp_flush(u); /* one sendmmsg for the whole batch */
    }
}

static void a_readable(pk_udp_t *u, void *ctx)
{
    struct echo *e = ctx;
    uint8_t want[1300];
    for (int k = 0; k < 16; k++) {
        int n = pk_udp_recv_batch(u, &e->ba);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            const pk_udp_dgram_t *d = &e->ba.dg[i];
            int seq = d->len >= 2 ? (d->data[0] << 8 | d->data[1]) : -1;
            if (seq < 0 || seq >= ECHO_N || d->len != dgram_len(seq)) {
                e->bad++;
                continue;
            }
            fill(want, seq, d->len);
            if (memcmp(want, d->data, d->len) != 0) {
                e->bad++;
                continue;
            }
            if (e->seen[seq])
                e->dup++;
            e->seen[seq] = 1;
            e->got++;
        }
    }
    if (e->got + e->bad >= ECHO_N)
        pk_loop_stop(e->loop);
    else
        a_send_more(e);
}

static void guard_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    (void)id;
    *(int *)ctx = 1;
    pk_loop_stop(loop);
}

static void test_batch_echo_1000(void)
{
    static struct echo e;
    pk_addr_t any;
    pk_udp_opts_t o = {.rcvbuf = 1 << 20, .sndbuf = 1 << 20};
    int timed_out = 0;

    memset(&e, 0, sizeof e);
    e.loop = pk_loop_new();
    pk_addr_parse("127.0.0.1:0", &any, NULL);
    CHECK_EQ_INT(pk_udp_open(&e.a, &any, &o), PK_OK);
    CHECK_EQ_INT(pk_udp_open(&e.b, &any, &o), PK_OK);
    CHECK_EQ_INT(pk_udp_local_addr(e.a, &e.a_addr), PK_OK);
    CHECK_EQ_INT(pk_udp_local_addr(e.b, &e.b_addr), PK_OK);
    CHECK(pk_addr_port(&e.a_addr) != 0 && pk_addr_port(&e.b_addr) != 0);
    CHECK_EQ_INT(pk_udp_batch_init(&e.ba, 1500), PK_OK);
    CHECK_EQ_INT(pk_udp_batch_init(&e.bb, 1500), PK_OK);
    CHECK_EQ_INT(pk_udp_attach(e.a, e.loop, a_readable, &e), PK_OK);
    CHECK_EQ_INT(pk_udp_attach(e.b, e.loop, b_readable, &e), PK_OK);
    CHECK_EQ_INT(pk_udp_attach(e.b, e.loop, b_readable, &e), PK_ERR_EXISTS);
    a_send_more(&e);
    pk_loop_timer_add(e.loop, pk_loop_update_now(e.loop) + 10000, guard_cb, &timed_out);
    CHECK_EQ_INT(pk_loop_run(e.loop), PK_OK);
    CHECK_EQ_INT(timed_out, 0);
    CHECK_EQ_INT(e.got, ECHO_N);
    CHECK_EQ_INT(e.bad, 0);
    CHECK_EQ_INT(e.dup, 0);
    int all = 1;
    for (int i = 0; i < ECHO_N; i++)
        all &= e.seen[i];
    CHECK(all);
    CHECK(e.max_batch > 1); /* recvmmsg did return several datagrams at once */
    CHECK_EQ_INT(pk_udp_stats(e.a)->tx, ECHO_N);
    CHECK_EQ_INT(pk_udp_stats(e.b)->rx, ECHO_N);
    CHECK_EQ_INT(pk_udp_stats(e.b)->tx, ECHO_N);
    CHECK_EQ_INT(pk_udp_pending(e.a) + pk_udp_pending(e.b), 0);
    pk_udp_close(e.a);
    pk_udp_close(e.b);
    pk_udp_batch_free(&e.ba);
    pk_udp_batch_free(&e.bb);
    pk_udp_batch_free(&e.bb); /* freeing twice is allowed */
    pk_loop_free(e.loop);
}

static void test_truncated_flagged(void)
{
    pk_addr_t any, to;
    pk_udp_t *s = NULL, *r = NULL;
    pk_udp_batch_t b;
    uint8_t big[150], small[50];

    memset(big, 0xAB, sizeof big);
    memset(small, 0xCD, sizeof small);
    pk_addr_parse("127.0.0.1:0", &any, NULL);
    CHECK_EQ_INT(pk_udp_open(&s, &any, NULL), PK_OK);
    CHECK_EQ_INT(pk_udp_open(&r, &any, NULL), PK_OK);
    pk_udp_local_addr(r, &to);
    CHECK_EQ_INT(pk_udp_batch_init(&b, 100), PK_OK);
    CHECK_EQ_INT(pk_udp_recv_batch(r, &b), 0); /* nothing yet, no blocking */
    CHECK_EQ_INT(pk_udp_send(s, &to, big, sizeof big), PK_OK);
    CHECK_EQ_INT(pk_udp_send(s, &to, small, sizeof small), PK_OK);
    CHECK_EQ_INT(pk_udp_send(s, &to, NULL, 0), PK_OK); /* empty datagram */
    CHECK_EQ_INT(pk_udp_flush(s), 0);
    int n = 0;
    for (int i = 0; i < 100 && n == 0; i++) {
        n = pk_udp_recv_batch(r, &b);
        if (n == 0)
            usleep(1000);
    }
    /* Loopback delivers synchronously: all three wait in one batch. */
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(b.n, 3);
    CHECK_EQ_INT(b.dg[0].truncated, 1);
    CHECK_EQ_INT(b.dg[0].len, 100);
    CHECK_EQ_INT(b.dg[1].truncated, 0);
    CHECK_EQ_INT(b.dg[1].len, 50);
    CHECK_MEM(b.dg[1].data, small, 50);
    CHECK_EQ_INT(b.dg[2].truncated, 0);
    CHECK_EQ_INT(b.dg[2].len, 0);
    CHECK_EQ_INT(pk_udp_stats(r)->rx_truncated, 1);
    pk_udp_batch_free(&b);
    CHECK_EQ_INT(pk_udp_batch_init(&b, 0), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_udp_batch_init(&b, PK_UDP_DGRAM_MAX + 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_udp_recv_batch(r, &b), PK_ERR_INVAL); /* no buffers */
    pk_udp_close(s);
    pk_udp_close(r);
}

static void test_send_queue_limits_and_refused_datagram(void)
{
    pk_addr_t any, to;
    pk_udp_t *s = NULL, *r = NULL;
    pk_udp_opts_t o = {.sendq_max = 4};
    pk_udp_batch_t b;
    static uint8_t huge[PK_UDP_DGRAM_MAX];

    pk_addr_parse("127.0.0.1:0", &any, NULL);
    CHECK_EQ_INT(pk_udp_open(&s, &any, &o), PK_OK);
    CHECK_EQ_INT(pk_udp_open(&r, &any, NULL), PK_OK);
    pk_udp_local_addr(r, &to);
    /* 65535 bytes exceed IPv4's maximum UDP payload (65507): EMSGSIZE. */
    CHECK_EQ_INT(pk_udp_send(s, &to, huge, sizeof huge), PK_OK);
    CHECK_EQ_INT(pk_udp_send(s, &to, "x1", 2), PK_OK);
    CHECK_EQ_INT(pk_udp_send(s, &to, "x2", 2), PK_OK);
    CHECK_EQ_INT(pk_udp_send(s, &to, "x3", 2), PK_OK);
    CHECK_EQ_INT(pk_udp_send(s, &to, "x4", 2), PK_ERR_LIMIT); /* queue of 4 is full */
    CHECK_EQ_INT(pk_udp_stats(s)->tx_qfull, 1);
    CHECK_EQ_INT(pk_udp_pending(s), 4);
    CHECK_EQ_INT(pk_udp_send(s, &to, huge, PK_UDP_DGRAM_MAX + 1), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_udp_flush(s), 0);
    CHECK_EQ_INT(pk_udp_stats(s)->tx_errors, 1); /* the huge one, dropped */
    CHECK_EQ_INT(pk_udp_stats(s)->tx, 3);        /* the ones behind it still went */
    CHECK_EQ_INT(pk_udp_batch_init(&b, 64), PK_OK);
    int got = 0;
    for (int i = 0; i < 100 && got < 3; i++) {
        int n = pk_udp_recv_batch(r, &b);
        CHECK(n >= 0);
        for (int k = 0; k < n; k++) {
            CHECK_EQ_INT(b.dg[k].len, 2);
            CHECK_EQ_INT(b.dg[k].data[1], '1' + got);
            got++;
        }
        if (n == 0)
            usleep(1000);
    }
    CHECK_EQ_INT(got, 3);
    pk_addr_t bad;
    memset(&bad, 0, sizeof bad);
    CHECK_EQ_INT(pk_udp_send(s, &bad, "x", 1), PK_ERR_INVAL);
    pk_udp_batch_free(&b);
    pk_udp_close(s);
    pk_udp_close(r);
}

static void test_ipv6_loopback(void)
{
    pk_addr_t any, to;
    pk_udp_t *s = NULL, *r = NULL;
    pk_udp_batch_t b;

    pk_addr_parse("[::1]:0", &any, NULL);
    if (pk_udp_open(&r, &any, NULL) != PK_OK) {
        fprintf(stderr, "  (no IPv6 loopback here: skipped, errno %d)\n", errno);
        return;
    }
    CHECK_EQ_INT(pk_udp_open(&s, &any, NULL), PK_OK);
    pk_udp_local_addr(r, &to);
    CHECK_EQ_INT(pk_udp_send(s, &to, "six", 3), PK_OK);
    CHECK_EQ_INT(pk_udp_flush(s), 0);
    pk_udp_batch_init(&b, 64);
    int n = 0;
    for (int i = 0; i < 100 && n == 0; i++) {
        n = pk_udp_recv_batch(r, &b);
        if (n == 0)
            usleep(1000);
    }
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(b.dg[0].peer.ss.ss_family, AF_INET6);
    CHECK_MEM(b.dg[0].data, "six", 3);
    pk_udp_batch_free(&b);
    pk_udp_close(s);
    pk_udp_close(r);
}

static void test_bind_errors(void)
{
    pk_addr_t a, zero;
    pk_udp_t *u = NULL, *v = NULL;
    memset(&zero, 0, sizeof zero);
    CHECK_EQ_INT(pk_udp_open(&u, &zero, NULL), PK_ERR_INVAL);
    CHECK(u == NULL);
    pk_addr_parse("127.0.0.1:0", &a, NULL);
    CHECK_EQ_INT(pk_udp_open(&u, &a, NULL), PK_OK);
    pk_udp_local_addr(u, &a);
    CHECK_EQ_INT(pk_udp_open(&v, &a, NULL), PK_ERR_IO); /* port taken */
    CHECK_EQ_INT(errno, EADDRINUSE);
    CHECK(v == NULL);
    pk_udp_close(u);
    pk_udp_close(NULL);
}

/* ---- the send queue under partial sends ----
 * This test binary's sendmmsg stands in for libc's (which it calls): while
 * short_sends is set the "kernel" takes `allow` more datagrams, then
 * answers EAGAIN, so flushes stop part-way as they do under load, with the
 * queue's arena wrapping and growing behind them. */

static int short_sends;
static unsigned allow;

int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    static int (*real)(int, struct mmsghdr *, unsigned, int);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "sendmmsg");
    if (short_sends) {
        if (allow == 0) {
            errno = EAGAIN;
            return -1;
        }
        if (n > allow)
            n = allow;
    }
    int r = real(fd, v, n, flags);
    if (short_sends && r > 0)
        allow -= (unsigned)r;
    return r;
}

static uint32_t lcg(uint32_t *x)
{
    *x = *x * 1664525u + 1013904223u;
    return *x >> 8;
}

static size_t q_len(unsigned seq)
{
    uint32_t x = seq * 2654435761u;
    size_t len = lcg(&x) % 1500;
    if (seq % 97 == 5)
        len = 20000 + lcg(&x) % 20000; /* now and then a big one: the arena grows */
    if (seq % 31 == 3)
        len = 0;
    return len;
}

static void q_fill(uint8_t *p, unsigned seq, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seq * 131 + i * 7);
}

static void test_send_queue_partial_flushes(void)
{
    enum { TOTAL = 3000 };
    pk_addr_t any, to;
    pk_udp_t *s = NULL, *r = NULL;
    pk_udp_opts_t so = {.sendq_max = 256}, ro = {.rcvbuf = 8 << 20};
    pk_udp_batch_t b;
    static uint8_t buf[40000], want[40000];
    unsigned sent = 0, got = 0, bad = 0;
    uint32_t x = 12345;

    pk_addr_parse("127.0.0.1:0", &any, NULL);
    CHECK_EQ_INT(pk_udp_open(&s, &any, &so), PK_OK);
    CHECK_EQ_INT(pk_udp_open(&r, &any, &ro), PK_OK);
    pk_udp_local_addr(r, &to);
    CHECK_EQ_INT(pk_udp_batch_init(&b, sizeof buf), PK_OK);
    short_sends = 1;
    for (unsigned round = 0; round < 20000 && got < TOTAL; round++) {
        /* queue a few, then a flush that the "kernel" takes only part of */
        unsigned k = lcg(&x) % 8;
        for (unsigned i = 0; i < k && sent < TOTAL && pk_udp_pending(s) < 256; i++) {
            size_t len = q_len(sent);
            q_fill(buf, sent, len);
            CHECK_EQ_INT(pk_udp_send(s, &to, buf, len), PK_OK);
            sent++;
        }
        allow = lcg(&x) % 5;
        if (sent == TOTAL && round % 4 == 0)
            allow = 256; /* drain at the end */
        (void)pk_udp_flush(s);
        int n;
        while ((n = pk_udp_recv_batch(r, &b)) > 0) {
            for (int i = 0; i < n; i++) {
                size_t len = q_len(got);
                q_fill(want, got, len);
                if (b.dg[i].truncated || b.dg[i].len != len || memcmp(b.dg[i].data, want, len))
                    bad++;
                got++;
            }
        }
    }
    short_sends = 0;
    CHECK_EQ_INT(sent, TOTAL);
    CHECK_EQ_INT(got, TOTAL); /* every one, in order, byte for byte */
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(pk_udp_pending(s), 0);
    CHECK_EQ_INT(pk_udp_stats(s)->tx, TOTAL);
    CHECK_EQ_INT(pk_udp_stats(s)->tx_errors, 0);
    CHECK(pk_udp_stats(s)->tx_eagain > 0); /* the flushes did stop part-way */
    pk_udp_batch_free(&b);
    pk_udp_close(s);
    pk_udp_close(r);
}

int main(void)
{
    RUN(test_addr_parse);
    RUN(test_addr_source_key);
    RUN(test_batch_echo_1000);
    RUN(test_truncated_flagged);
    RUN(test_send_queue_limits_and_refused_datagram);
    RUN(test_send_queue_partial_flushes);
    RUN(test_ipv6_loopback);
    RUN(test_bind_errors);
    return check_report();
}
