/*
 * Master keys and individual keys, client side (Toshiba US 9,294,269;
 * DESIGN §3.6; wire formats in messages.h; the whole method, with its
 * state-machine table, in docs/protocol.md ("Master keys and individual keys")).
 *
 * A client holds the domain's master key MK (ID, expiry) delivered by
 * registration. Two clients of the domain authenticate each other with it
 * (FIG. 4: START -> PROC -> END1 -> END2) and both derive the same individual
 * key, which goes into each one's key table (table.h):
 *
 *   K_auth = KDF(MK, 0xE9, MK ID(4))                  the key of every MAC
 *   IK     = last 16 of KDF(MK, 0xE8, min(n_i,n_r), max(n_i,n_r),
 *                            min(id_i,id_r), max(id_i,id_r), MK ID(4))
 *
 * or, with PK_MK_FLAG_WRAP (third embodiment), the initiator draws IK at
 * random and sends it in END1 under AES-128-GCM with
 *   K_wrap = KDF(MK, 0xEA, MK ID(4), n_r(16)): key = last 16, nonce = first 12.
 *
 * Orders "by value": nonces as 16-byte big-endian integers; IDs bytewise
 * (memcmp over the common length, then the shorter first).
 *
 * Who holds the key (lost END2). The responder's view is authoritative: it
 * stores the key on a verified END1 and it is at once its current key. END1
 * is the initiator's point of no return: when it sends END1 it stores the key
 * PENDING (table.h: opens the partner's records, is never sent under) and
 * promotes it to current on END2, or on the partner's first record under it
 * (the shell calls pk_mk_table_confirm()). An exchange past END1 is never
 * abandoned for another one with the same peer. Unconfirmed when it times
 * out, the key stays pending and the table reports the partner
 * (PK_MK_RENEW_UNCONFIRMED) for a new exchange, whose key supersedes it at
 * both ends. So the two ends never use different current keys for long: a
 * lost END2 heals on the responder's first record, or on the next exchange.
 * One exchange per pair at a time: start() is BUSY while any exchange with
 * the peer is in flight, and the peer's START is refused while ours is past
 * END1 (simultaneous STARTs, both still in flight, keep the lower ID's).
 *
 * Pure core: no I/O, no clock, no globals, no allocation. now_ms and the RNG
 * come in as arguments; output goes to a caller-owned pk_out_t:
 *   PK_ACT_SEND   code = message type, dest = the caller's handle, data = bytes
 *   PK_ACT_EVENT  code = PK_MK_EV_KEY, dest = key ID, data = partner ID:
 *                 a key became current in the table (responder: END1;
 *                 initiator: END2). No event for a pending key.
 * Not thread-safe; the caller serialises calls on one client.
 *
 * Error classes (core/err.h): the input functions return a hostile-input code
 * (drop and count, nothing changed) or a local code. Every failure leaves the
 * client, its sessions and its table as they were, and stores no key.
 */
#ifndef PK_PROTO_MK_MK_H
#define PK_PROTO_MK_MK_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/kdf.h"
#include "core/out.h"
#include "proto/mk/messages.h"
#include "proto/mk/table.h"

#define PK_MK_MAX_SESSIONS  8  /* authentications in flight per client */
#define PK_MK_NONCE_HISTORY 64 /* recently used nonces kept to reject replays */

enum pk_mk_event {
    PK_MK_EV_KEY = 1, /* an individual key became current (dest = key ID, data = partner) */
};

typedef struct pk_mk_cfg {
    uint64_t ik_lifetime_ms;     /* requested lifetime of a new individual key */
    uint64_t max_lifetime_ms;    /* longest lifetime accepted as responder */
    uint64_t auth_timeout_ms;    /* an unfinished authentication is dropped after this */
    uint64_t renew_lead_ms;      /* table: renew this long before expiry */
    uint64_t retry_ms;           /* table: retry a failed renewal after this */
    uint64_t grace_ms;           /* table: a superseded key lives at most this long */
    uint8_t beacon_autostart;    /* a beacon from a partner without a fresh key starts auth */
    uint64_t beacon_interval_ms; /* at most one beacon-triggered START per this interval */
} pk_mk_cfg_t;

/* Defaults: 1 h keys, 24 h max, 5 s timeout, 5 min lead, 30 s retry, 30 s grace,
 * beacon autostart on, at most one beacon-triggered START per 200 ms. */
void pk_mk_cfg_default(pk_mk_cfg_t *cfg);

enum pk_mk_sess_state {
    PK_MK_S_FREE = 0,
    PK_MK_S_I_WAIT_PROC = 1, /* initiator: START sent (may still yield to the peer's START) */
    PK_MK_S_I_WAIT_END2 = 2, /* initiator: END1 sent, key pending in the table (never abandoned) */
    PK_MK_S_R_WAIT_END1 = 3, /* responder: PROC sent */
};

/* One authentication in flight (private). */
typedef struct pk_mk_sess {
    uint8_t state, flags;
    uint8_t peer[PK_MK_ID_MAX];
    uint8_t peer_len;
    uint8_t n_i[PK_MK_NONCE_LEN], n_r[PK_MK_NONCE_LEN];
    uint32_t mk_id;
    uint32_t key_id;          /* initiator: offered in END1 */
    uint64_t expiry_ms;       /* initiator: offered in END1 */
    uint8_t ik[PK_MK_IK_LEN]; /* initiator after END1 */
    uint64_t dest;
    uint64_t deadline_ms;
} pk_mk_sess_t;

/* A client. Caller-owned; members are private. */
typedef struct pk_mk_client {
    pk_mk_cfg_t cfg;
    uint32_t domain_id;
    uint8_t id[PK_MK_ID_MAX];
    uint8_t id_len;
    uint8_t has_mk;
    uint8_t mk[PK_MK_KEY_MAX];
    uint8_t mk_len;
    uint32_t mk_id;
    uint64_t mk_expiry_ms;
    uint8_t k_auth[PK_KDF_OUT_LEN];
    pk_mk_sess_t sess[PK_MK_MAX_SESSIONS];
    uint8_t hist[PK_MK_NONCE_HISTORY][PK_MK_NONCE_LEN];
    unsigned hist_pos;
    uint64_t beacon_next_ms; /* no beacon-triggered START before this */
    pk_mk_table_t *table;    /* borrowed */
    const pk_rng_t *rng;     /* borrowed */
} pk_mk_client_t;

/*
 * Sets up c for identity id (1..64 bytes) in domain_id, with cfg (NULL: the
 * defaults), the caller's key table (re-initialised here over entries[0..cap))
 * and RNG. table, entries and rng are borrowed for c's life.
 * Returns PK_OK or PK_ERR_INVAL.
 */
int pk_mk_client_init(pk_mk_client_t *c, const uint8_t *id, size_t id_len, uint32_t domain_id,
                      const pk_mk_cfg_t *cfg, pk_mk_table_t *table, pk_mk_entry_t *entries,
                      size_t cap, const pk_rng_t *rng);

/* Wipes the master key, K_auth, every session and the table. */
void pk_mk_client_clear(pk_mk_client_t *c);

/*
 * Installs a (new) master key of mk_len 16 or 32 bytes, its ID and expiry.
 * Authentications in flight under another MK are dropped; every key of the
 * table made under another MK is marked for re-authentication and kept until
 * it expires (FIG. 8): the next pk_mk_table_tick() reports those partners.
 * Re-installing the same MK ID with the same key only updates the expiry.
 * Returns PK_OK; PK_ERR_INVAL (bad length); PK_ERR_EXPIRED (expiry <= now);
 * PK_ERR_EXISTS (same MK ID, different key: refused); PK_ERR_CRYPTO.
 */
int pk_mk_client_set_master(pk_mk_client_t *c, const uint8_t *mk, size_t mk_len, uint32_t mk_id,
                            uint64_t mk_expiry_ms, uint64_t now_ms);

/*
 * Writes this client's beacon (domain, own ID, MK ID) into buf[0..cap).
 * Returns PK_OK, PK_ERR_STATE (no MK), PK_ERR_SPACE.
 */
int pk_mk_client_beacon(const pk_mk_client_t *c, uint8_t *buf, size_t cap, size_t *len);

/*
 * Starts an authentication with peer (FIG. 4 501): appends a START for dest
 * to out. flags is 0 (both derive IK) or PK_MK_FLAG_WRAP (we make IK).
 * Returns PK_OK;
 *   PK_ERR_STATE    no master key, or peer is ourselves;
 *   PK_ERR_EXPIRED  the master key has expired;
 *   PK_ERR_BUSY     an authentication with peer is already in flight, in
 *                   either role: one we started, or the peer's that we
 *                   answered (waiting for its END1). Nothing to do: it ends
 *                   with a key or by timeout, and whatever is still needed
 *                   is reported by the table's next tick;
 *   PK_ERR_LIMIT    every session slot is in use;
 *   PK_ERR_INVAL, PK_ERR_SPACE (out full), PK_ERR_CRYPTO (RNG).
 */
int pk_mk_client_start(pk_mk_client_t *c, const uint8_t *peer, size_t peer_len, uint8_t flags,
                       uint64_t dest, uint64_t now_ms, pk_out_t *out);

/*
 * Feeds one datagram received from src (the caller's handle for the sender,
 * used as dest of any reply). Handles beacons and the four authentication
 * messages; appends replies and PK_MK_EV_KEY events to out.
 *
 * Returns PK_OK; hostile input, nothing changed and no key stored:
 *   PK_ERR_MALFORMED / PK_ERR_VERSION  does not parse;
 *   PK_ERR_DENIED   another domain, a MK ID we do not hold, not addressed to
 *                   us, or sent in our own name (reflection);
 *   PK_ERR_EXPIRED  our MK has expired, or END1 offers an expiry outside
 *                   (now, MK expiry];
 *   PK_ERR_AUTH     the MAC (or the wrapped key's tag) does not verify;
 *   PK_ERR_REPLAY   a nonce already used (replayed START, PROC, END);
 *   PK_ERR_STATE    no session expects this message; or a START from a peer
 *                   whose exchange with us we started and have sent END1 in
 *                   (it is finished first); or a START that loses the
 *                   simultaneous-start tie-break against our START still
 *                   waiting for PROC (the lower ID's START wins);
 * local: PK_ERR_SPACE (out full), PK_ERR_LIMIT (no session slot, or the
 *   table is full: for END1 as responder, for PROC as initiator, which stores
 *   its pending key before sending END1), PK_ERR_EXISTS (key ID collision in
 *   our table), PK_ERR_CRYPTO.
 * A beacon returns PK_OK whether or not it started an authentication; it
 * starts one only when autostart is on, the peer has no fresh key and no
 * exchange in flight, and no other beacon started one within
 * beacon_interval_ms (bounding what unauthenticated beacons can make us send).
 */
int pk_mk_client_input(pk_mk_client_t *c, const uint8_t *msg, size_t len, uint64_t src,
                       uint64_t now_ms, pk_out_t *out);

/* Drops authentications past their deadline; returns how many. The pending
 * key of an initiator past END1 stays in the table (see above). */
unsigned pk_mk_client_timeout(pk_mk_client_t *c, uint64_t now_ms);

/* The earliest session deadline or table deadline, UINT64_MAX when none. */
uint64_t pk_mk_client_next_deadline(const pk_mk_client_t *c);

/* Number of authentications in flight. */
unsigned pk_mk_client_sessions(const pk_mk_client_t *c);

/*
 * The individual-key derivation (FC 0xE8) on its own, for tests and tools:
 * writes the 16-byte IK. mk_len 16 or 32; IDs 1..64 bytes.
 */
int pk_mk_derive_ik(const uint8_t *mk, size_t mk_len, uint32_t mk_id,
                    const uint8_t n1[PK_MK_NONCE_LEN], const uint8_t n2[PK_MK_NONCE_LEN],
                    const uint8_t *id1, size_t id1_len, const uint8_t *id2, size_t id2_len,
                    uint8_t ik[PK_MK_IK_LEN]);

/*
 * Record-layer keys for traffic under the individual key e (core/record.h):
 *   okm(d) = KDF(IK, FC 0xE6 PK_FC_LINK_REC, d(1)),
 *   d = 0x00 initiator->responder, 0x01 responder->initiator;
 *   AES-128 key = last 16 bytes of okm, salt = first 4 (pk_record_split_okm).
 * The key's initiator transmits with d = 0x00; the responder with 0x01.
 * The record session ID is the key ID's low 16 bits (unique per table), epoch 0.
 * Returns PK_OK, PK_ERR_INVAL, PK_ERR_CRYPTO.
 */
int pk_mk_record_keys(const pk_mk_entry_t *e, uint8_t tx_key[16], uint8_t tx_salt[4],
                      uint8_t rx_key[16], uint8_t rx_salt[4], uint16_t *session_id);

#endif
