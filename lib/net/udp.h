/*
 * UDP sockets for the shells, with batched I/O (recvmmsg/sendmmsg).
 *
 * Receiving: a pk_udp_batch_t owns PK_UDP_BATCH_MAX buffers of dgram_cap
 * bytes each; pk_udp_recv_batch() fills up to that many datagrams in one
 * system call. A datagram longer than dgram_cap is flagged truncated: the
 * caller drops and counts it (never parses the prefix).
 *
 * Sending: pk_udp_send() copies a datagram into the socket's bounded send
 * queue (the copies share one arena, grown when needed: no allocation per
 * datagram); pk_udp_flush() pushes the queue out with sendmmsg. On EAGAIN the
 * unsent datagrams stay queued, in order; when the socket is attached to a
 * loop it then watches for EPOLLOUT and flushes by itself. A datagram the
 * kernel refuses for good (EMSGSIZE, unreachable peer, ...) is dropped and
 * counted in tx_errors; it does not block the ones behind it.
 */
#ifndef PK_NET_UDP_H
#define PK_NET_UDP_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "net/addr.h"
#include "net/loop.h"

#define PK_UDP_BATCH_MAX 64 /* datagrams per recvmmsg/sendmmsg call */
#define PK_UDP_DGRAM_MAX 65535

typedef struct pk_udp_dgram {
    uint8_t *data; /* into the batch's buffers; valid until the next recv */
    size_t len;    /* bytes in data (at most the batch's dgram_cap) */
    pk_addr_t peer;
    int truncated; /* 1: the datagram was longer than dgram_cap; drop it */
} pk_udp_dgram_t;

typedef struct pk_udp_batch {
    unsigned n;       /* datagrams in dg[] after the last pk_udp_recv_batch() */
    size_t dgram_cap; /* buffer size of each datagram */
    pk_udp_dgram_t dg[PK_UDP_BATCH_MAX];
    void *priv_; /* buffers and mmsghdr arrays, owned */
} pk_udp_batch_t;

/* Allocates the batch's buffers (PK_UDP_BATCH_MAX * dgram_cap bytes).
 * dgram_cap is 1..PK_UDP_DGRAM_MAX. PK_OK, PK_ERR_INVAL or PK_ERR_NOMEM. */
int pk_udp_batch_init(pk_udp_batch_t *b, size_t dgram_cap);
/* Frees the buffers; a zeroed or freed batch may be freed again. */
void pk_udp_batch_free(pk_udp_batch_t *b);

typedef struct pk_udp_opts {
    int rcvbuf;         /* SO_RCVBUF bytes; 0 = system default */
    int sndbuf;         /* SO_SNDBUF bytes; 0 = system default */
    unsigned sendq_max; /* queued datagrams at most; 0 = 4096 */
} pk_udp_opts_t;

typedef struct pk_udp_stats {
    uint64_t rx; /* datagrams received (including truncated ones) */
    uint64_t rx_truncated;
    uint64_t tx;        /* datagrams handed to the kernel */
    uint64_t tx_errors; /* datagrams the kernel refused (dropped) */
    uint64_t tx_qfull;  /* pk_udp_send() refused: queue full */
    uint64_t tx_eagain; /* flushes stopped by EAGAIN */
} pk_udp_stats_t;

typedef struct pk_udp pk_udp_t;

/*
 * Opens a non-blocking UDP socket bound to addr (IPv6 sockets are v6-only).
 * opts may be NULL. A buffer size the kernel caps lower is not an error
 * (see /proc/sys/net/core/rmem_max). Returns PK_OK and *out, or PK_ERR_INVAL,
 * PK_ERR_NOMEM, PK_ERR_IO (socket/bind failed; errno is kept).
 */
int pk_udp_open(pk_udp_t **out, const pk_addr_t *addr, const pk_udp_opts_t *opts);

/* Detaches from its loop, closes the socket and frees the queue. NULL ok. */
void pk_udp_close(pk_udp_t *u);

int pk_udp_fd(const pk_udp_t *u);
/* The bound address (with the real port after binding to port 0). */
int pk_udp_local_addr(const pk_udp_t *u, pk_addr_t *out);
const pk_udp_stats_t *pk_udp_stats(const pk_udp_t *u);

/*
 * Receives up to PK_UDP_BATCH_MAX datagrams without blocking. Returns the
 * number received (also in b->n), 0 when none is waiting, or PK_ERR_IO.
 */
int pk_udp_recv_batch(pk_udp_t *u, pk_udp_batch_t *b);

/*
 * Queues a copy of one datagram (len 0..PK_UDP_DGRAM_MAX) to `to`. Does not
 * send: call pk_udp_flush() (after queueing a batch). PK_OK, PK_ERR_INVAL,
 * PK_ERR_NOMEM or PK_ERR_LIMIT (queue full: the datagram is dropped and
 * counted in tx_qfull).
 */
int pk_udp_send(pk_udp_t *u, const pk_addr_t *to, const void *data, size_t len);

/*
 * Sends queued datagrams with sendmmsg, PK_UDP_BATCH_MAX per call, until the
 * queue is empty or the kernel says EAGAIN. Returns the number still queued
 * (>= 0). When attached, EPOLLOUT interest follows (queue non-empty).
 */
int pk_udp_flush(pk_udp_t *u);

/* Datagrams waiting in the send queue. */
unsigned pk_udp_pending(const pk_udp_t *u);

/*
 * Registers the socket on loop: on_readable(u, ctx) is called when
 * datagrams are waiting (it should pk_udp_recv_batch() until 0, or a bounded
 * number of times: level-triggered, the loop comes back); EPOLLOUT is
 * handled internally to flush the queue. PK_OK, PK_ERR_EXISTS or an error of
 * pk_loop_add_fd().
 */
typedef void (*pk_udp_read_cb)(pk_udp_t *u, void *ctx);
int pk_udp_attach(pk_udp_t *u, pk_loop_t *loop, pk_udp_read_cb on_readable, void *ctx);

#endif
