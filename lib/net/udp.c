#include "net/udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct batch_priv {
    uint8_t *buf;
    struct mmsghdr msgs[PK_UDP_BATCH_MAX];
    struct iovec iov[PK_UDP_BATCH_MAX];
};

struct qent {
    pk_addr_t to;
    size_t off, len; /* the copy: buf[off, off + len) */
    int wraps;       /* its copy starts the arena again at 0 (see q_alloc) */
};

/* Arena kept while the queue is empty; a larger one (an EAGAIN storm of
 * big datagrams) is given back once the queue drains. */
#define ARENA_MIN  (64u * 1024)
#define ARENA_KEEP (1024u * 1024)

struct pk_udp {
    int fd;
    pk_loop_t *loop;
    pk_udp_read_cb on_readable;
    void *ctx;
    unsigned watching_out;
    /* send queue: a ring of qcap entries, qn used from qhead; their bytes
     * in one arena used as a FIFO ring: from bhead (the oldest copy) to
     * btail, or, once a copy did not fit before bcap and went to 0
     * (bwrap), from bhead to bcap and from 0 to btail. No allocation per
     * datagram. */
    struct qent *q;
    unsigned qcap, qhead, qn, qmax;
    uint8_t *buf;
    size_t bcap, bhead, btail, bused;
    int bwrap;
    pk_udp_stats_t st;
};

int pk_udp_batch_init(pk_udp_batch_t *b, size_t dgram_cap)
{
    memset(b, 0, sizeof *b);
    if (dgram_cap == 0 || dgram_cap > PK_UDP_DGRAM_MAX)
        return PK_ERR_INVAL;
    struct batch_priv *p = calloc(1, sizeof *p);
    if (p == NULL)
        return PK_ERR_NOMEM;
    p->buf = malloc(PK_UDP_BATCH_MAX * dgram_cap);
    if (p->buf == NULL) {
        free(p);
        return PK_ERR_NOMEM;
    }
    for (unsigned i = 0; i < PK_UDP_BATCH_MAX; i++) {
        p->iov[i].iov_base = p->buf + i * dgram_cap;
        p->iov[i].iov_len = dgram_cap;
    }
    b->dgram_cap = dgram_cap;
    b->priv_ = p;
    return PK_OK;
}

void pk_udp_batch_free(pk_udp_batch_t *b)
{
    struct batch_priv *p = b->priv_;
    if (p != NULL) {
        free(p->buf);
        free(p);
    }
    memset(b, 0, sizeof *b);
}

int pk_udp_open(pk_udp_t **out, const pk_addr_t *addr, const pk_udp_opts_t *opts)
{
    static const pk_udp_opts_t defaults = {0};
    int fd = -1, on = 1;
    pk_udp_t *u = NULL;

    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (addr->ss.ss_family != AF_INET && addr->ss.ss_family != AF_INET6)
        return PK_ERR_INVAL;
    u = calloc(1, sizeof *u);
    if (u == NULL)
        return PK_ERR_NOMEM;
    fd = socket(addr->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto io_fail;
    if (addr->ss.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) != 0)
        goto io_fail;
    /* Best effort: the kernel caps these at net.core.[rw]mem_max. */
    if (opts->rcvbuf > 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opts->rcvbuf, sizeof opts->rcvbuf);
    if (opts->sndbuf > 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &opts->sndbuf, sizeof opts->sndbuf);
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0)
        goto io_fail;
    u->fd = fd;
    u->qmax = opts->sendq_max ? opts->sendq_max : 4096;
    *out = u;
    return PK_OK;

io_fail : {
    int saved = errno;
    if (fd >= 0)
        close(fd);
    free(u);
    errno = saved;
    return PK_ERR_IO;
}
}

void pk_udp_close(pk_udp_t *u)
{
    if (u == NULL)
        return;
    if (u->loop != NULL)
        pk_loop_del_fd(u->loop, u->fd);
    close(u->fd);
    free(u->q);
    free(u->buf);
    free(u);
}

int pk_udp_fd(const pk_udp_t *u)
{
    return u->fd;
}

int pk_udp_local_addr(const pk_udp_t *u, pk_addr_t *out)
{
    return pk_addr_local(u->fd, out);
}

const pk_udp_stats_t *pk_udp_stats(const pk_udp_t *u)
{
    return &u->st;
}

unsigned pk_udp_pending(const pk_udp_t *u)
{
    return u->qn;
}

int pk_udp_recv_batch(pk_udp_t *u, pk_udp_batch_t *b)
{
    struct batch_priv *p = b->priv_;
    int r;

    b->n = 0;
    if (p == NULL)
        return PK_ERR_INVAL;
    for (unsigned i = 0; i < PK_UDP_BATCH_MAX; i++) {
        struct msghdr *h = &p->msgs[i].msg_hdr;
        memset(h, 0, sizeof *h);
        h->msg_name = &b->dg[i].peer.ss;
        h->msg_namelen = sizeof b->dg[i].peer.ss;
        h->msg_iov = &p->iov[i];
        h->msg_iovlen = 1;
        p->msgs[i].msg_len = 0;
    }
    do {
        r = recvmmsg(u->fd, p->msgs, PK_UDP_BATCH_MAX, MSG_DONTWAIT, NULL);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        /* A pending ICMP error is reported (and cleared) by this read. */
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED ||
            errno == EHOSTUNREACH || errno == ENETUNREACH)
            return 0;
        return PK_ERR_IO;
    }
    for (int i = 0; i < r; i++) {
        pk_udp_dgram_t *d = &b->dg[i];
        d->data = p->iov[i].iov_base;
        d->len = p->msgs[i].msg_len < b->dgram_cap ? p->msgs[i].msg_len : b->dgram_cap;
        d->peer.len = p->msgs[i].msg_hdr.msg_namelen;
        d->truncated = (p->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
        if (d->truncated)
            u->st.rx_truncated++;
    }
    u->st.rx += (uint64_t)r;
    b->n = (unsigned)r;
    return r;
}

/* A bigger arena holding the queued copies in order from 0, with room for
 * `more` bytes after them. */
static int arena_grow(pk_udp_t *u, size_t more)
{
    size_t ncap = u->bcap ? u->bcap * 2 : ARENA_MIN;
    while (ncap < u->bused + more)
        ncap *= 2;
    uint8_t *nb = malloc(ncap);
    if (nb == NULL)
        return PK_ERR_NOMEM;
    size_t at = 0;
    for (unsigned i = 0; i < u->qn; i++) {
        struct qent *e = &u->q[(u->qhead + i) % u->qcap];
        if (e->len > 0)
            memcpy(nb + at, u->buf + e->off, e->len);
        e->off = at;
        e->wraps = 0;
        at += e->len;
    }
    free(u->buf);
    u->buf = nb;
    u->bcap = ncap;
    u->bhead = 0;
    u->btail = at;
    u->bwrap = 0;
    return PK_OK;
}

/* Room for len bytes at the arena's tail: *off, and *wraps when the copy
 * starts over at 0 because it did not fit before the end. */
static int arena_alloc(pk_udp_t *u, size_t len, size_t *off, int *wraps)
{
    *wraps = 0;
    if (u->qn == 0)
        u->bhead = u->btail = u->bused = 0, u->bwrap = 0;
    if (!u->bwrap && u->bcap - u->btail >= len) {
        *off = u->btail;
    } else if (!u->bwrap && u->bhead >= len && len > 0) {
        *off = 0; /* the end of the arena stays unused until the head passes it */
        *wraps = u->bwrap = 1;
    } else if (u->bwrap && u->bhead - u->btail >= len) {
        *off = u->btail;
    } else {
        int rc = arena_grow(u, len);
        if (rc != PK_OK)
            return rc;
        *off = u->btail;
    }
    u->btail = *off + len;
    u->bused += len;
    return PK_OK;
}

int pk_udp_send(pk_udp_t *u, const pk_addr_t *to, const void *data, size_t len)
{
    if (len > PK_UDP_DGRAM_MAX || (len > 0 && data == NULL) ||
        (to->ss.ss_family != AF_INET && to->ss.ss_family != AF_INET6))
        return PK_ERR_INVAL;
    if (u->qn >= u->qmax) {
        u->st.tx_qfull++;
        return PK_ERR_LIMIT;
    }
    if (u->qn == u->qcap) {
        unsigned ncap = u->qcap ? u->qcap * 2 : 64;
        if (ncap > u->qmax)
            ncap = u->qmax;
        struct qent *nq = malloc((size_t)ncap * sizeof *nq);
        if (nq == NULL)
            return PK_ERR_NOMEM;
        for (unsigned i = 0; i < u->qn; i++)
            nq[i] = u->q[(u->qhead + i) % u->qcap];
        free(u->q);
        u->q = nq;
        u->qcap = ncap;
        u->qhead = 0;
    }
    size_t off;
    int wraps, rc = arena_alloc(u, len, &off, &wraps);
    if (rc != PK_OK)
        return rc;
    struct qent *e = &u->q[(u->qhead + u->qn) % u->qcap];
    if (len > 0)
        memcpy(u->buf + off, data, len);
    e->off = off;
    e->len = len;
    e->wraps = wraps;
    e->to = *to;
    u->qn++;
    return PK_OK;
}

static void q_pop(pk_udp_t *u, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        u->bused -= u->q[u->qhead].len;
        u->qhead = (u->qhead + 1) % u->qcap;
        u->qn--;
        if (u->qn > 0) {
            const struct qent *h = &u->q[u->qhead];
            u->bhead = h->off;
            if (h->wraps)
                u->bwrap = 0; /* the head is back at the arena's start */
        }
    }
    if (u->qn == 0 && u->bcap > ARENA_KEEP) {
        free(u->buf);
        u->buf = NULL;
        u->bcap = 0;
    }
}

static void update_interest(pk_udp_t *u)
{
    if (u->loop == NULL)
        return;
    unsigned want = u->qn > 0;
    if (want != u->watching_out &&
        pk_loop_mod_fd(u->loop, u->fd, PK_EV_READ | (want ? PK_EV_WRITE : 0u)) == PK_OK)
        u->watching_out = want;
}

int pk_udp_flush(pk_udp_t *u)
{
    struct mmsghdr msgs[PK_UDP_BATCH_MAX];
    struct iovec iov[PK_UDP_BATCH_MAX];
    unsigned eintr = 0;

    /* Each round sends >= 1 datagram, drops 1, or stops: bounded by qn. */
    while (u->qn > 0) {
        unsigned n = u->qn < PK_UDP_BATCH_MAX ? u->qn : PK_UDP_BATCH_MAX;
        memset(msgs, 0, n * sizeof msgs[0]);
        for (unsigned i = 0; i < n; i++) {
            struct qent *e = &u->q[(u->qhead + i) % u->qcap];
            iov[i].iov_base = e->len ? u->buf + e->off : NULL;
            iov[i].iov_len = e->len;
            msgs[i].msg_hdr.msg_name = &e->to.ss;
            msgs[i].msg_hdr.msg_namelen = e->to.len;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(u->fd, msgs, n, MSG_DONTWAIT);
        if (r > 0) {
            u->st.tx += (uint64_t)r;
            q_pop(u, (unsigned)r);
            continue;
        }
        if (r < 0 && errno == EINTR && ++eintr < 8)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            u->st.tx_eagain++;
            break;
        }
        /* The head datagram is refused for good (or r == 0): drop it. */
        u->st.tx_errors++;
        q_pop(u, 1);
    }
    update_interest(u);
    return (int)u->qn;
}

static void udp_event(pk_loop_t *loop, int fd, unsigned events, void *ctx)
{
    pk_udp_t *u = ctx;
    (void)loop;
    (void)fd;
    if (events & PK_EV_WRITE)
        pk_udp_flush(u);
    if ((events & (PK_EV_READ | PK_EV_ERR)) && u->on_readable != NULL)
        u->on_readable(u, u->ctx);
}

int pk_udp_attach(pk_udp_t *u, pk_loop_t *loop, pk_udp_read_cb on_readable, void *ctx)
{
    if (u->loop != NULL)
        return PK_ERR_EXISTS;
    u->on_readable = on_readable;
    u->ctx = ctx;
    u->watching_out = u->qn > 0;
    int rc = pk_loop_add_fd(loop, u->fd, PK_EV_READ | (u->watching_out ? PK_EV_WRITE : 0u),
                            udp_event, u);
    if (rc != PK_OK)
        return rc;
    u->loop = loop;
    return PK_OK;
}
