/*
 * The node daemon shell (`proxkey node serve`): one thread, one epoll loop.
 *
 *   UDP (devices)   batched recvmmsg/sendmmsg; per-source-IP token buckets in
 *                   front of the core for the unauthenticated messages
 *                   (REQUEST, RESPONSE); the core adds its own per-address
 *                   bucket, half-open table and exact-size parsing.
 *   TLS to the kms  one persistent mutual-TLS client connection; every kms
 *                   request of every device is pipelined on it, answers are
 *                   matched by position (the kms answers in order; the core's
 *                   FIFO, proto/node/node.h). Reconnects with backoff
 *                   (100 ms doubling to 5 s); outstanding requests are sent
 *                   again on the new connection.
 *   TLS to nodes    a listener for other nodes (only configured peers' CNs
 *                   are kept) and one lazy client connection per peer.
 * A device address becomes a 64-bit handle for the core: IPv4 address and
 * port encoded directly; IPv6 through a small direct-mapped table (a handle
 * whose slot was reused since is dropped at send time).
 */
#ifndef PK_SRC_NODE_NODE_SRV_H
#define PK_SRC_NODE_NODE_SRV_H

#include <stddef.h>
#include <stdint.h>

#include "proto/node/node.h"

#define NODE_MAX_PEERS PK_NODE_MAX_PEERS

typedef struct node_peer_cfg {
    char id[PK_REG_ID_MAX + 1];
    char addr[64];
} node_peer_cfg_t;

typedef struct node_srv_opts {
    const char *id, *listen_udp, *listen_tls, *kms, *kms_cn, *ca, *cert, *key;
    node_peer_cfg_t peers[NODE_MAX_PEERS];
    unsigned npeers;
    size_t max_devices, max_half, max_kms;
    uint32_t reg_burst, reg_rate; /* per device address (core) */
    uint32_t ip_burst, ip_rate;   /* per source IP (shell) */
    uint64_t kms_timeout_ms, stats_ms;
    size_t max_domains;        /* master-key domains tracked for pushes */
    uint64_t mk_check_ms;      /* periodic master-key check (UINT64_MAX: never) */
    unsigned mk_push_per_tick; /* MK_UPDATE pushes per timer tick */
} node_srv_opts_t;

typedef struct node_srv node_srv_t;

/* Opens sockets and contexts and starts connecting to the kms. PK_OK and
 * *out, or an error (printed). */
int node_srv_new(node_srv_t **out, const node_srv_opts_t *o);
/* Runs until SIGINT/SIGTERM (or node_srv_stop). PK_OK or PK_ERR_IO. */
int node_srv_run(node_srv_t *s);
void node_srv_stop(node_srv_t *s);
void node_srv_free(node_srv_t *s);
/* Bound ports (after port 0). */
uint16_t node_srv_udp_port(const node_srv_t *s);
uint16_t node_srv_tls_port(const node_srv_t *s);
/* Logs the counters (one line). */
void node_srv_log_stats(node_srv_t *s);

int pk_cmd_node(int argc, char **argv);

#endif
