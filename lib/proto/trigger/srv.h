/*
 * Trigger server core (the gts side of the Thales method): a pure state
 * machine over an in-memory UID index. No sockets, no clock, no storage:
 * datagrams and now_ms come in, actions go out in a pk_out_t.
 *
 * Per device (addressed by a stable 32-bit device number dev_no, assigned at
 * provisioning) the core holds: K1, the current identity UID1, the pending
 * exchange (UID_RAND, Sent, the highest try seen, and UID2 in place of UID1:
 * a poll with UID1 is then recognised by deriving UID2 from it, and the poll
 * that completes the exchange by comparison), the key-rotation flag, the command
 * queue and loss counters. The index maps a 16-byte UID to its device slot
 * in an open-addressing table of 8-byte entries (32-bit tag, 32-bit slot).
 *
 * Exchange (per poll with identity X):
 *   X unknown                    -> PK_ERR_DENIED, no action (DoS signal)
 *   X = UID1, nothing pending    -> new exchange: UID_RAND, UID2 = KDF(K1,UID1,UID_RAND),
 *                                   Sent = 1, the queue head bound to it; PERSIST, SEND
 *   X = UID1, exchange pending   -> retransmission: same UID_RAND and command,
 *                                   Sent += 1; SEND (PERSIST too if still undurable)
 *   X = UID2 (first time seen)   -> UID1 retired, UID2 becomes UID1 (K2 becomes K1 when
 *                                   rotating), the bound command is DELIVERED; then a new
 *                                   exchange as above
 * The response's Sent field is min(Sent, try of the poll), so duplicated or
 * replayed polls can never push it past what the genuine device accepts.
 *
 * Ordering contract with the shell: for every input the actions come in
 * this order: EVENT PK_TRIG_EV_DELIVERED*, EVENT PK_TRIG_EV_PERSIST, then
 * SEND. The shell must make the PERSIST record (and the deletion of the
 * delivered command) durable before the SEND leaves. Several inputs may be
 * batched into one transaction (group commit) as long as no SEND of the
 * batch leaves before the commit. If the commit fails the shell must not
 * send and must stop: the store, not memory, is the truth it restarts from.
 */
#ifndef PK_PROTO_TRIGGER_SRV_H
#define PK_PROTO_TRIGGER_SRV_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/out.h"
#include "proto/trigger/messages.h"

/* Action codes (pk_act_t.code). */
#define PK_TRIG_EV_PERSIST   1 /* EVENT dest=dev_no data=record (PK_TRIG_REC_LEN) */
#define PK_TRIG_EV_DELIVERED 2 /* EVENT dest=dev_no data=command seq (u64 BE) */
/* SEND actions have code PK_TRIG_T_RESP and dest 0: reply to the poll's source. */

/* Device record as persisted (fixed size, versioned). Layout in srv.c. */
#define PK_TRIG_REC_LEN     80
#define PK_TRIG_REC_VERSION 2

/* Provisioning flags. */
#define PK_TRIG_DEV_ROTATE 0x01 /* K2 = KDF(K1, UID_RAND, UID2) with every new UID */

#define PK_TRIG_QUEUE_MAX 64 /* commands queued per device */
#define PK_TRIG_NO_DEV    UINT32_MAX

typedef struct pk_trig_srv pk_trig_srv_t;

/*
 * Creates a server core. rng (borrowed, must outlive the core) draws UID_RAND
 * and nonces. reserve: expected number of devices (sizes the index once; it
 * grows by half when needed). Returns PK_OK or PK_ERR_NOMEM.
 */
int pk_trig_srv_new(pk_trig_srv_t **out, const pk_rng_t *rng, size_t reserve);
/* Wipes every key and frees everything. NULL is fine. */
void pk_trig_srv_free(pk_trig_srv_t *s);

/*
 * Provisions a fresh device: dev_no < 2^31-1 unused so far, its K1 and its
 * first identity UID1. Returns PK_OK, PK_ERR_EXISTS (dev_no or uid taken),
 * PK_ERR_INVAL or PK_ERR_NOMEM. The caller persists pk_trig_srv_record().
 */
int pk_trig_srv_add(pk_trig_srv_t *s, uint32_t dev_no, const uint8_t k1[PK_TRIG_KEY_LEN],
                    const uint8_t uid1[PK_TRIG_UID_LEN], unsigned flags);

/* Loads a device from its persisted record (at start). Same errors as add,
 * plus PK_ERR_MALFORMED / PK_ERR_VERSION for a bad record. Load every
 * record first, then queue its commands with pk_trig_srv_queue in seq order. */
int pk_trig_srv_load(pk_trig_srv_t *s, uint32_t dev_no, const uint8_t *rec, size_t len);

/* Serialises a device's record into rec. PK_ERR_NOTFOUND if unknown. The
 * record holds K1: the caller stores it wrapped. */
int pk_trig_srv_record(const pk_trig_srv_t *s, uint32_t dev_no, uint8_t rec[PK_TRIG_REC_LEN]);

/*
 * Queues a command (copied). seq: the operator's unique, increasing sequence
 * number (the store's key). Returns PK_OK, PK_ERR_NOTFOUND, PK_ERR_MALFORMED
 * / PK_ERR_INVAL (bad command), PK_ERR_LIMIT (queue full), PK_ERR_EXISTS
 * (seq not above the tail's) or PK_ERR_NOMEM.
 */
int pk_trig_srv_queue(pk_trig_srv_t *s, uint32_t dev_no, uint64_t seq, uint8_t cmd,
                      const uint8_t *arg, size_t arglen);

/*
 * Handles one datagram. Returns PK_OK with actions appended to out (see the
 * ordering contract above), or with nothing appended and:
 *   PK_ERR_MALFORMED  not a poll of the exact size/version
 *   PK_ERR_DENIED     unknown UID (retired, replayed or forged): a DoS signal
 *   PK_ERR_SPACE      out has no room (state unchanged; needs 2 events + 1 send
 *                     and PK_TRIG_REC_LEN + 8 + PK_TRIG_RESP_MAX bytes)
 *   PK_ERR_CRYPTO     local crypto failure (state unchanged)
 *   PK_ERR_LIMIT      a retransmission the gate refused (state unchanged)
 * Hostile input never changes state.
 */
/*
 * The retransmission gate (optional; none: every retransmission is answered).
 * A poll is not authenticated: one carrying the UID1 of a pending exchange is
 * the device's retransmission, or a copy of its poll sent by anyone who saw
 * it on the wire, from any source address it likes - and the answer (51
 * bytes plus the command's payload, up to 1,126) is larger than the 20-byte
 * poll. Before answering such a poll, after every other check, the core asks
 * gate(ctx): 0 refuses it - no answer, nothing changed, PK_ERR_LIMIT,
 * counted in retx_refused. The shell keys the gate on the datagram's source
 * (gts serve: a token bucket per source address, set before each input), so
 * what copied polls can make the gts send to an address is bounded, while a
 * device retransmitting from its own address is not held back by copies
 * aimed elsewhere. New exchanges and completions are never gated: they need
 * a UID the gts has not yet answered, which only the device can send first.
 */
typedef int (*pk_trig_retx_gate_fn)(void *ctx);
void pk_trig_srv_set_retx_gate(pk_trig_srv_t *s, pk_trig_retx_gate_fn gate, void *ctx);

/*
 * A hint, no state: a server that holds a batch of datagrams calls this for
 * each of them (deep = 0: the index line of the poll's UID), then, a few
 * datagrams ahead of pk_trig_srv_input, again with deep = 1 (the device
 * slot the index points at), so the cache misses of 100,000s of devices
 * overlap instead of adding up. Anything not a poll is ignored.
 */
void pk_trig_srv_prefetch(const pk_trig_srv_t *s, const uint8_t *buf, size_t len, int deep);

int pk_trig_srv_input(pk_trig_srv_t *s, const uint8_t *buf, size_t len, uint64_t now_ms,
                      pk_out_t *out);

/* Forgets a device: its UIDs leave the index (polls with them are unknown
 * from now on), its queued commands are freed, its slot is wiped and never
 * reused by the core (the shell never reuses a dev_no either). PK_OK or
 * PK_ERR_NOTFOUND. The shell makes the removal durable (and keeps journal
 * entries of the device from bringing it back) before calling this. */
int pk_trig_srv_remove(pk_trig_srv_t *s, uint32_t dev_no);

/* The shell calls this once a device's PERSIST is durable. */
void pk_trig_srv_persisted(pk_trig_srv_t *s, uint32_t dev_no);

/* The core has no timers: nothing expires server-side. */
static inline uint64_t pk_trig_srv_next_deadline(const pk_trig_srv_t *s)
{
    (void)s;
    return UINT64_MAX;
}

typedef struct pk_trig_srv_info {
    uint8_t uid[PK_TRIG_UID_LEN]; /* not pending: UID1; pending: the UID2 it leads to
                                   * (of UID1 the server keeps only a 4-byte tag) */
    int pending;                  /* an exchange awaits its UID2 */
    int rotate;                   /* key rotation on */
    int bound;                    /* the queue head is bound to the pending exchange */
    uint8_t sent, try_max;        /* of the pending exchange */
    uint32_t last_seen_s;         /* now_ms/1000 of the last valid poll, 0 if never */
    uint32_t polls;               /* valid polls answered */
    uint32_t exchanges;           /* exchanges completed (UID2 seen) */
    uint32_t tries;               /* sum of the highest try of each completed exchange */
    unsigned queued;              /* commands queued */
    uint64_t head_seq;            /* seq of the queue head, 0 if none */
} pk_trig_srv_info_t;

int pk_trig_srv_info(const pk_trig_srv_t *s, uint32_t dev_no, pk_trig_srv_info_t *info);

/* Parses a persisted record without a server (for `gts status` offline). */
int pk_trig_rec_info(const uint8_t *rec, size_t len, pk_trig_srv_info_t *info);

/* Number of devices, and bytes held by the UID index and device slots. */
size_t pk_trig_srv_count(const pk_trig_srv_t *s);
size_t pk_trig_srv_index_bytes(const pk_trig_srv_t *s);

/* Counters of what the core has rejected. */
typedef struct pk_trig_srv_stats {
    uint64_t malformed, unknown, answered, new_exchanges, retransmits, delivered;
    uint64_t retx_refused; /* retransmissions the gate refused (PK_ERR_LIMIT) */
} pk_trig_srv_stats_t;
void pk_trig_srv_stats(const pk_trig_srv_t *s, pk_trig_srv_stats_t *st);

#endif
