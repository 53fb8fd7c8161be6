/*
 * The serving node's core (NEC ProSe Function, seed [0048]-[0088]): the glue
 * over the registration core (pk_reg_node), the per-device D2D contexts it
 * keeps after registration, the multiplexed kms request queue, and option-2
 * link authorization (FIG. 5). Pure: no sockets, no clock (now_ms comes in),
 * randomness through the pk_rng_t in the config, no globals. It allocates its
 * tables once in pk_node_new(); nothing on the hot path allocates.
 *
 * ---- Inputs and outputs -----------------------------------------------------
 *
 * Four inputs, each appending actions to a caller-owned pk_out_t:
 *   pk_node_device_input()  one UDP datagram from a device address handle
 *   pk_node_kms_input()     one TLS frame from the kms
 *   pk_node_peer_input()    one TLS frame from another node
 *   pk_node_timeout()       time passed (pk_node_next_deadline())
 * plus pk_node_kms_up() / pk_node_kms_down() when the kms connection opens
 * and closes.
 *
 * Every SEND's code says where it goes (code & 0xFF00) and what it is
 * (code & 0xFF = the message type byte):
 *   PK_NODE_DST_DEVICE | type   UDP datagram to the device handle `dest`
 *   PK_NODE_DST_KMS    | type   TLS frame to the kms (dest 0)
 *   PK_NODE_DST_NODE   | type   TLS frame to peer node `dest` (its index,
 *                               pk_node_peer_id())
 * The shell performs them in order. A device handle is an opaque uint64_t the
 * shell maps to a UDP address (for IPv4 it may simply encode address and
 * port); the core only stores and returns it.
 *
 * ---- The kms queue (request/response matching) ------------------------------
 *
 * The kms frames carry no request id; the kms answers the requests of one
 * connection in order (proto/kms/messages.h). The core therefore keeps ONE
 * FIFO of outstanding kms requests for the one kms connection and matches
 * each answer to the head. An answer whose type does not fit the head is a
 * protocol failure (PK_ERR_MALFORMED): the shell closes the connection. When
 * the connection goes down (pk_node_kms_down), every outstanding request is
 * marked unsent; when a new one opens (pk_node_kms_up) they are sent again
 * in order, except those older than kms_timeout_ms, which fail. While the kms
 * is down, new requests wait in the queue (unsent). All kms requests are safe
 * to repeat: a vector request yields a fresh vector, a key request the same
 * keys, a directory request the same entry, an allocation the pair's current
 * KSI. If the head waits longer than kms_timeout_ms on an open connection,
 * pk_node_timeout() emits PK_NODE_EV_KMS_STALLED: the shell closes the
 * connection and reconnects.
 *
 * ---- Device contexts --------------------------------------------------------
 *
 * After a registration the node keeps, per device: its id, the temporary id
 * it gave (16 hex digits "@" node id), its key mode, its address handle and
 * the node side of the protected channel (pk_reg_chan_*), whose record
 * session id is the registration context id = slot index + 1 (1..65535). A
 * device that registers again keeps its slot; its channel is replaced only
 * once the new accept is sealed. When the table is full the slot under a
 * rotating hand is reused (the device must register again). Contexts are
 * soft state: a restarted node has none, and devices register again.
 *
 * ---- Option 2 (FIG. 5) ------------------------------------------------------
 *
 *   dev A         node 1 (A's)               kms                 node 2     dev B
 *    |--LINK_REQ(B)-->|                        |                    |         |
 *    |                | [B not here] KMS_DIR_REQ(B) -->             |         |
 *    |                |<-- KMS_DIR_RESP(node 2)|                    |         |
 *    |                |--KMS_ALLOC_REQ(A,B)--->| allowed? exclusive KSI, param |
 *    |                |<--KMS_ALLOC_RESP(KSI, param)                |         |
 *    |                |--NODE_LINK_IND(A,B,KSI,param) (mutual TLS)->|         |
 *    |<--LINK_IND(B, initiator, KSI, param)    |                    |--LINK_IND(A, responder)-->|
 *
 * A target registered at this node skips the directory and gets its
 * LINK_IND directly. Any refusal becomes LINK_REJ(peer, reason) to A:
 * DENIED (kms: pair not allowed / not pool mode; or A is not in pool mode),
 * UNKNOWN (no directory entry, no route to the target's node, the target's
 * context is gone), BUSY (kms busy or exhausted, queue full, timeout). A's
 * LINK_IND is sent only when B's indication has been handed to the shell.
 * Only registered devices (an authentic record on their channel) can ask;
 * NODE_LINK_IND is accepted only from a configured peer node (the TLS CN) and
 * only for a device registered here in pool mode.
 *
 * ---- Master keys: refresh and push (Toshiba FIG. 8, issue 5) ----------------
 *
 *   dev           node                                  kms
 *    |--MK_REFRESH(held)-->| (registered: authentic record) |
 *    |                     |--KMS_MK_REQ(dev)-------------->|
 *    |                     |<-KMS_MK_RESP(block) / KMS_ERR--|
 *    |<--MK_UPDATE(block)--|   (KMS_ERR: nothing; the device times out and
 *                               registers again, FIG. 8 S14)
 *
 * The MK_UPDATE answering a refresh goes to the refresh's source; pushes go
 * to the device's registered address (a refresh does not move it).
 * One MK_REFRESH per device is in the kms queue at a time (more are dropped,
 * mk_busy). The node keeps a fixed table of domains (max_domains) that have
 * registered devices: per domain the newest block the kms reported (in an
 * MK_RESP for any device of it, or in a KEYS_RESP at registration) and how
 * many devices are attached; per device the newest MK ID it was sent (the
 * ACCEPT's or an MK_UPDATE's). When a domain's block gets a newer MK ID, the
 * node pushes MK_UPDATE to every registered device of the domain that holds
 * an older one, at its registered address, from pk_node_timeout(): at most
 * mk_push_per_tick pushes and 4096 slots looked at per call. Every
 * mk_check_ms the node asks the kms (KMS_MK_REQ for one device of each such
 * domain) so a rotation reaches the devices with no device asking. Master
 * keys cached for pushing are wiped when the domain's last device goes.
 *
 * Drops: every input the core refuses is counted by reason (pk_node_drops(),
 * names in pk_node_drop_names) and its reason is left in n->last_drop for
 * the shell's rate-limited log. The first PK_REG_DROP_N reasons are the
 * registration core's.
 */
#ifndef PK_PROTO_NODE_NODE_H
#define PK_PROTO_NODE_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/out.h"
#include "proto/reg/reg.h"

/* Where a SEND goes (pk_act_t.code & 0xFF00). */
enum pk_node_dst {
    PK_NODE_DST_DEVICE = 0x100,
    PK_NODE_DST_KMS = 0x200,
    PK_NODE_DST_NODE = 0x300,
};
#define PK_NODE_DST_MASK 0xFF00u

/* Events (PK_ACT_EVENT codes). */
enum pk_node_event {
    PK_NODE_EV_REGISTERED = 1,  /* dest = context id, data = device id */
    PK_NODE_EV_LINK = 2,        /* option-2 link indicated: dest = KSI, data = initiator
                                   id(block8) target id(block8) */
    PK_NODE_EV_LINK_REJ = 3,    /* dest = reason, data = initiator id(block8) target id(block8) */
    PK_NODE_EV_KMS_STALLED = 4, /* the kms has not answered in kms_timeout_ms: reconnect */
};

/* Drop reasons: PK_REG_DROP_* (0..7) first, then these. */
enum pk_node_drop {
    PK_NODE_DROP_NO_CONTEXT = PK_REG_DROP_N, /* record for no registration context */
    PK_NODE_DROP_AUTH,                       /* record failed to open (tag, bad plaintext) */
    PK_NODE_DROP_REPLAY,                     /* record counter seen before */
    PK_NODE_DROP_TYPE,                       /* authentic record of a type a device must not send */
    PK_NODE_DROP_KMS_FULL,                   /* kms queue full: request not taken */
    PK_NODE_DROP_KMS_REFUSED,  /* the kms refused a registration request (unknown device...) */
    PK_NODE_DROP_KMS_LATE,     /* a kms answer for a run that is gone */
    PK_NODE_DROP_KMS_EXPIRED,  /* a kms request timed out */
    PK_NODE_DROP_LINK_DUP,     /* LINK_REQ for a pair already being authorized */
    PK_NODE_DROP_PEER_UNKNOWN, /* NODE frame from a node not configured */
    PK_NODE_DROP_PEER_MALFORMED,
    PK_NODE_DROP_NOT_HERE, /* NODE_LINK_IND for a device not registered here */
    PK_NODE_DROP_SPACE,    /* output full */
    PK_NODE_DROP_MK_BUSY,  /* MK_REFRESH while the device's previous one is with the kms */
    PK_NODE_DROP_N
};
#define PK_NODE_DROP_NONE 0xFFu

extern const char *const pk_node_drop_names[PK_NODE_DROP_N];

#define PK_NODE_MAX_PEERS 64
/* Room a caller's pk_out_t must have free (bytes) before any input call:
 * an accept, two sealed link messages and two node frames. */
#define PK_NODE_OUT_MIN (PK_REG_ACCEPT_MAX + 2 * PK_REG_SEALED_MAX + 2 * 256 + 256)

typedef struct pk_node_cfg {
    pk_reg_id_t node_id;        /* must equal the CN of the node's TLS certificate */
    const pk_rng_t *rng;        /* temporary ids; borrowed for the node's life */
    size_t max_half;            /* half-open registrations; 0 = 2048 */
    size_t max_buckets;         /* per-source REQUEST buckets; 0 = 1024 */
    uint32_t burst;             /* REQUESTs a source handle may send at once; 0 = 8 */
    uint32_t per_sec;           /* sustained REQUESTs per source handle; 0 = 4 */
    uint64_t half_ttl_ms;       /* half-open lifetime; 0 = 30000 */
    size_t max_devices;         /* device contexts, 1..65535; 0 = 65535 */
    size_t max_kms;             /* kms requests outstanding; 0 = 16384 */
    uint64_t kms_timeout_ms;    /* 0 = 5000 */
    size_t max_links;           /* link authorizations in progress; 0 = 1024 */
    unsigned max_links_per_dev; /* 0 = 4 */
    size_t max_domains;         /* master-key domains tracked for pushes; 0 = 256 (<= 4096) */
    uint64_t mk_check_ms;       /* periodic master-key check; 0 = 60000, UINT64_MAX = never */
    unsigned mk_push_per_tick;  /* MK_UPDATE pushes per pk_node_timeout() call; 0 = 8 */
} pk_node_cfg_t;

typedef struct pk_node_stats {
    uint64_t registered, reregistered, evicted_contexts;
    uint64_t kms_sent, kms_answered, kms_resent;
    uint64_t links_asked, links_indicated, links_rejected, links_received;
    uint64_t mk_refreshes;    /* MK_REFRESH taken (sent on to the kms) */
    uint64_t mk_updates;      /* MK_UPDATE sent in answer to a refresh */
    uint64_t mk_pushes;       /* MK_UPDATE pushed after a newer key became known */
    uint64_t mk_checks;       /* periodic KMS_MK_REQs */
    uint64_t mk_refused;      /* KMS_ERR to a KMS_MK_REQ (no update sent) */
    uint64_t mk_dom_full;     /* devices not tracked for pushes: domain table full */
    uint64_t key_pages_asked; /* KEYS_REQ taken (sent on to the kms) */
    uint64_t key_pages_sent;  /* KEYS records sent */
} pk_node_stats_t;

typedef struct pk_node pk_node_t;

/*
 * Allocates a node with its tables. PK_OK and *out, PK_ERR_INVAL (bad node
 * id, no rng, max_devices > 65535), PK_ERR_NOMEM.
 */
int pk_node_new(const pk_node_cfg_t *cfg, pk_node_t **out);
/* Wipes every key and channel and frees. NULL ok. */
void pk_node_free(pk_node_t *n);

/* Adds a peer node (by id; the shell knows its address) and returns its
 * index (>= 0) for PK_NODE_DST_NODE, or PK_ERR_LIMIT / PK_ERR_EXISTS /
 * PK_ERR_INVAL (the node's own id). */
int pk_node_peer_add(pk_node_t *n, const pk_reg_id_t *id);
/* The id of peer index i, or NULL. */
const pk_reg_id_t *pk_node_peer_id(const pk_node_t *n, unsigned i);
/* The index of a peer by id (its TLS CN), or -1. */
int pk_node_peer_find(const pk_node_t *n, const uint8_t *id, size_t len);

/*
 * One datagram from device handle src. REQUEST and RESPONSE go to the
 * registration core (rate limit, half-open table, idempotent challenge,
 * RES check); kms calls become SENDs to the kms (or wait in the queue while
 * it is down). LINK_REQ records are opened on the context named by their
 * session id and start an option-2 authorization (or are refused with a
 * LINK_REJ). MK_REFRESH records likewise (registered devices only) become
 * a KMS_MK_REQ. out must have PK_NODE_OUT_MIN bytes and 4 actions free.
 * Returns PK_OK or the drop's error (state unchanged, n->last_drop set):
 * PK_ERR_MALFORMED, PK_ERR_VERSION, PK_ERR_LIMIT (rate, kms queue full),
 * PK_ERR_NOTFOUND, PK_ERR_AUTH, PK_ERR_REPLAY, PK_ERR_STATE, PK_ERR_SPACE.
 */
int pk_node_device_input(pk_node_t *n, uint64_t src, const uint8_t *msg, size_t len,
                         uint64_t now_ms, pk_out_t *out);

/*
 * One frame from the kms: the answer to the oldest outstanding request.
 * PK_OK (including refusals and late answers, which are counted), or
 * PK_ERR_STATE (no request outstanding) / PK_ERR_MALFORMED (does not parse or
 * does not answer the head): the connection is out of step; the shell closes
 * it (and calls pk_node_kms_down). PK_ERR_SPACE: out too small, nothing done.
 */
int pk_node_kms_input(pk_node_t *n, const uint8_t *frame, size_t len, uint64_t now_ms,
                      pk_out_t *out);

/* The kms connection opened: sends the queued requests (as many as fit in
 * out). Returns how many remain unsent; call again with an empty out while
 * it is > 0. Requests older than kms_timeout_ms fail instead. */
size_t pk_node_kms_up(pk_node_t *n, uint64_t now_ms, pk_out_t *out);
/* The kms connection closed: every outstanding request becomes unsent. */
void pk_node_kms_down(pk_node_t *n);
/* 1 while the core believes the kms connection is open. */
int pk_node_kms_is_up(const pk_node_t *n);
/* Outstanding kms requests (sent and unsent). */
size_t pk_node_kms_pending(const pk_node_t *n);

/*
 * One frame from another node whose TLS certificate CN is peer_cn[0..cn_len).
 * NODE_LINK_IND for a pool-mode device registered here: LINK_IND(role
 * responder) to it. PK_OK, or PK_ERR_DENIED (not a configured peer),
 * PK_ERR_MALFORMED, PK_ERR_NOTFOUND (device not here), PK_ERR_SPACE.
 */
int pk_node_peer_input(pk_node_t *n, const uint8_t *peer_cn, size_t cn_len, const uint8_t *frame,
                       size_t len, uint64_t now_ms, pk_out_t *out);

/* Expires half-open registrations, link authorizations (LINK_REJ BUSY) and
 * queued kms requests; may emit PK_NODE_EV_KMS_STALLED; pushes MK_UPDATEs and
 * starts the periodic master-key check (see above). Bounded work per
 * call: when more is due, next_deadline() stays <= now_ms. */
void pk_node_timeout(pk_node_t *n, uint64_t now_ms, pk_out_t *out);
uint64_t pk_node_next_deadline(const pk_node_t *n); /* UINT64_MAX: none */

/* Counters. */
const uint64_t *pk_node_drops(const pk_node_t *n); /* PK_NODE_DROP_N entries */
unsigned pk_node_last_drop(const pk_node_t *n);    /* reason of the last refused input */
const pk_node_stats_t *pk_node_stats(const pk_node_t *n);
size_t pk_node_devices(const pk_node_t *n);   /* device contexts in use */
size_t pk_node_half_open(const pk_node_t *n); /* half-open registrations */

/* A device context by device id: its context id (session id) and temporary
 * id (may be NULL). PK_OK or PK_ERR_NOTFOUND. */
int pk_node_device_lookup(const pk_node_t *n, const pk_reg_id_t *dev, uint16_t *ctx_id,
                          pk_reg_id_t *temp_id);

#endif
