/*
 * Registration cores: kms functions, the node core (pk_reg_node_*) and the
 * device core (pk_reg_dev_*). Pure: no sockets, no clock (now_ms comes in),
 * no randomness of their own (pk_rng_t comes in), no allocation (every
 * context and table is caller-owned), no globals.
 *
 *   device                       node                              kms
 *     | REQUEST(nonce_d, id)       |                                  |
 *     |--------------------------->| EV_NEED_VECTOR ---KMS_VEC_REQ--->|
 *     |                            |<---KMS_VEC_RESP(RAND,AUTN,XRES,K_reg)
 *     |     CHALLENGE(RAND, AUTN)  | pk_reg_node_vector()             |
 *     |<---------------------------|                                  |
 *  verify AUTN (const time)        |                                  |
 *     | RESPONSE(RES)              |                                  |
 *     |--------------------------->| RES == XRES (const time)         |
 *     |                            | EV_NEED_KEYS ----KMS_KEYS_REQ--->|
 *     |                            |<------------KMS_KEYS_RESP(keys)--|
 *     |  ACCEPT{temp ID, keys}     | pk_reg_node_accept()             |
 *     |<===========================|  (record under K_reg downlink)   |
 *     | [a paged set: per further page]                               |
 *     | KEYS_REQ{cursor}           |                                  |
 *     |===========================>| ---KMS_KEYS_REQ(cursor)--------->|
 *     |  KEYS{cursor, page}        |<------------KMS_KEYS_RESP(page)--|
 *     |<===========================|  (the node core, proto/node)     |
 *
 * Derivations (TS 33.220 KDF, core/kdf_fc.h), K the device key (16 or 32
 * bytes), ids as UTF-8 bytes:
 *   AUTN  = first 16 of KDF(K, 0xE0, RAND, nonce_d, node id)
 *   RES   = first 16 of KDF(K, 0xE1, RAND, nonce_d, node id)  (= XRES)
 *   K_reg = KDF(K, 0xE2, RAND, nonce_d, node id, device id)
 *   message key dir = KDF(K_reg, 0xE3, dir(1)) dir 0x00 up, 0x01 down
 *   option-2 link K_D = KDF(K_pool[KSI mod n], PK_FC_POOL_LINK, param(16),
 *                           initiator id, responder id)
 *     K_pool[i] the i-th of the device's n pool keys in ascending KSI order
 */
#ifndef PK_PROTO_REG_REG_H
#define PK_PROTO_REG_REG_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/kdf.h"
#include "core/out.h"
#include "core/kdf_fc.h"
#include "core/record.h"
#include "proto/reg/messages.h"

/* Option 2's per-link root key is derived from a pool key and the node's
 * fresh parameter (PK_FC_POOL_LINK, core/kdf_fc.h), so a device that holds the
 * same pool key but was not given the parameter cannot derive it. */

/* Event codes (pk_act_t.code of PK_ACT_EVENT). */
enum pk_reg_event {
    PK_REG_EV_NEED_VECTOR = 1, /* node: send data (a KMS_VEC_REQ frame) to the kms; dest = source */
    PK_REG_EV_NEED_KEYS = 2,  /* node: send data (a KMS_KEYS_REQ frame) to the kms; dest = source */
    PK_REG_EV_REGISTERED = 3, /* device: registration finished; temp ID and keys are readable;
                                 dest = keys of the set the key store had no room for (0) */
    PK_REG_EV_FAILED = 4,     /* device: retries exhausted */
    PK_REG_EV_LINK_IND = 5,   /* device: a KSI indication stored; data = peer id */
    PK_REG_EV_LINK_REJ = 6,   /* device: link refused; data = peer id, then reason(1) */
    PK_REG_EV_MK_UPDATE = 7,  /* device: an MK_UPDATE taken; dest = newest MK ID in it (0: the kms
                                 has none), data[0] = 1 when the held block changed, else 0 */
};

/* ================= kms ================= */

/*
 * Computes AUTN, RES and K_reg from the device key k (16 or 32 bytes) for
 * (rand, nonce_d, node, dev). Used by the kms (to make vectors) and by the
 * device (to check AUTN and answer). Any output pointer may be NULL.
 * Returns PK_OK, PK_ERR_INVAL or PK_ERR_CRYPTO; outputs are wiped on error.
 */
int pk_reg_derive(const uint8_t *k, size_t klen, const uint8_t rand[PK_REG_RAND_LEN],
                  const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_id_t *node,
                  const pk_reg_id_t *dev, uint8_t autn[PK_REG_AUTN_LEN],
                  uint8_t res[PK_REG_RES_LEN], uint8_t k_reg[PK_REG_KREG_LEN]);

/* Makes a fresh authentication vector (RAND from rng). The caller wipes *v. */
int pk_reg_kms_vector(const uint8_t *k, size_t klen, const pk_rng_t *rng,
                      const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_id_t *dev,
                      const pk_reg_id_t *node, pk_reg_vector_t *v);

/*
 * The same on a caller-owned, re-keyable KDF context (zeroed the first time;
 * the caller pk_kdf_clear()s it when done): hot paths set the key of one
 * context per call instead of making a context per call. The context keeps
 * the last key's HMAC schedule until the next call or the clear, so it is as
 * sensitive as that key.
 */
int pk_reg_derive_cx(pk_kdf_t *kdf, const uint8_t *k, size_t klen,
                     const uint8_t rand[PK_REG_RAND_LEN], const uint8_t nonce_d[PK_REG_NONCE_LEN],
                     const pk_reg_id_t *node, const pk_reg_id_t *dev, uint8_t autn[PK_REG_AUTN_LEN],
                     uint8_t res[PK_REG_RES_LEN], uint8_t k_reg[PK_REG_KREG_LEN]);
int pk_reg_kms_vector_cx(pk_kdf_t *kdf, const uint8_t *k, size_t klen, const pk_rng_t *rng,
                         const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_id_t *dev,
                         const pk_reg_id_t *node, pk_reg_vector_t *v);

/* The option-2 per-link root key (see top). */
int pk_reg_pool_link_key(const uint8_t pool_key[PK_REG_ROOT_KEY_LEN],
                         const uint8_t param[PK_REG_PARAM_LEN], const pk_reg_id_t *initiator,
                         const pk_reg_id_t *responder, uint8_t k_d[PK_REG_ROOT_KEY_LEN]);

/* ============ protected device<->node channel (pk_record) ============ */

/*
 * Sets up rec (zeroed or cleared) for the registration context session_id
 * with the FC 0xE3 message keys of k_reg: node_side 1 seals downlink and opens
 * uplink, 0 the reverse. PK_OK or the pk_record_init() errors.
 */
int pk_reg_chan_init(pk_record_t *rec, const uint8_t k_reg[PK_REG_KREG_LEN], uint16_t session_id,
                     int node_side);
/* The same on a caller-owned re-keyable KDF context (see pk_reg_derive_cx). */
int pk_reg_chan_init_cx(pk_kdf_t *kdf, pk_record_t *rec, const uint8_t k_reg[PK_REG_KREG_LEN],
                        uint16_t session_id, int node_side);

/* Seals a LINK_REQ/IND/REJ as one record into buf[0..cap). */
int pk_reg_chan_seal_link(pk_record_t *rec, uint8_t type, const pk_reg_link_pt_t *m, uint8_t *buf,
                          size_t cap, size_t *len);

/* Opens a LINK_REQ/IND/REJ record; PK_ERR_MALFORMED for any other type or a
 * bad plaintext (the counter is then consumed: the record was authentic),
 * plus the pk_record_open() errors. */
int pk_reg_chan_open_link(pk_record_t *rec, const uint8_t *buf, size_t len, uint8_t *type,
                          pk_reg_link_pt_t *m) PK_MUST_CHECK;

/* Seals an MK_REFRESH (held_mk_id; 0 = none; mk unused, may be NULL) or an
 * MK_UPDATE (mk; n == 0 = empty) as one record into buf[0..cap).
 * PK_ERR_INVAL (other type, bad block), PK_ERR_SPACE, pk_record_seal errors. */
int pk_reg_chan_seal_mk(pk_record_t *rec, uint8_t type, uint32_t held_mk_id,
                        const pk_reg_mkset_t *mk, uint8_t *buf, size_t cap, size_t *len);
/* Opens an MK_REFRESH (*held_mk_id) or MK_UPDATE (*mk, wiped by the caller)
 * record; PK_ERR_MALFORMED for any other type or a bad plaintext (the counter
 * is then consumed), plus the pk_record_open() errors. */
int pk_reg_chan_open_mk(pk_record_t *rec, const uint8_t *buf, size_t len, uint8_t *type,
                        uint32_t *held_mk_id, pk_reg_mkset_t *mk) PK_MUST_CHECK;

/* Seals a KEYS_REQ (cursor after; len 0 = from the start) / a KEYS page
 * (answering cursor after) as one record into buf[0..cap). PK_ERR_INVAL (a
 * page breaking the KEYS rules), PK_ERR_SPACE, pk_record_seal errors. */
int pk_reg_chan_seal_keys_req(pk_record_t *rec, const pk_reg_id_t *after, uint8_t *buf, size_t cap,
                              size_t *len);
int pk_reg_chan_seal_keys(pk_record_t *rec, const pk_reg_id_t *after, const pk_reg_keyset_t *page,
                          uint8_t *buf, size_t cap, size_t *len);
/* Opens a KEYS_REQ (*after) / KEYS (*after, *page: wiped by the caller)
 * record; PK_ERR_MALFORMED for another type, size or a bad plaintext (the
 * counter is then consumed), plus the pk_record_open() errors. */
int pk_reg_chan_open_keys_req(pk_record_t *rec, const uint8_t *buf, size_t len,
                              pk_reg_id_t *after) PK_MUST_CHECK;
int pk_reg_chan_open_keys(pk_record_t *rec, const uint8_t *buf, size_t len, pk_reg_id_t *after,
                          pk_reg_keyset_t *page) PK_MUST_CHECK;

/* ================= node ================= */

enum pk_reg_half_state {
    PK_REG_H_FREE = 0,
    PK_REG_H_WAIT_VEC = 1,   /* asked the kms for a vector */
    PK_REG_H_CHALLENGED = 2, /* challenge sent */
    PK_REG_H_AUTHED = 3,     /* RES verified, waiting for the keys from the kms */
    PK_REG_H_DONE = 4,       /* accept sent and cached for retransmitted responses */
};

/* One half-open registration, keyed by (source, device id). The index
 * fields are the core's: entries are found through hash chains whose heads
 * live in the table itself (hhead of slot i heads chain i), and kept in
 * created_ms order (older/newer; insertion order while now_ms does not go
 * backwards) for eviction and expiry; free slots are chained too. */
typedef struct pk_reg_half {
    uint8_t state;
    uint32_t hhead, hnext, older, newer;
    uint64_t src;
    uint64_t seq;        /* insertion order (the eviction order while now_ms does not go back) */
    uint64_t created_ms; /* now_ms of the REQUEST that made it; expires at + half_ttl_ms */
    pk_reg_id_t dev;
    uint8_t nonce_d[PK_REG_NONCE_LEN];
    pk_reg_vector_t vec;
    uint16_t acc_len;
    uint8_t acc[PK_REG_ACCEPT_MAX];
} pk_reg_half_t;

/* Token bucket of one source (indexed like pk_reg_half_t; older/newer is
 * the least-recently-used order). */
typedef struct pk_reg_bucket {
    uint32_t hhead, hnext, older, newer;
    uint64_t src;
    uint64_t last_ms;
    uint64_t milli; /* tokens x 1000 */
    uint8_t used;
} pk_reg_bucket_t;

typedef struct pk_reg_node_cfg {
    pk_reg_id_t node_id;
    pk_reg_half_t *half; /* caller-owned table, zeroed; borrowed for the node's life */
    size_t nhalf;
    pk_reg_bucket_t *bucket; /* caller-owned, zeroed */
    size_t nbucket;
    uint32_t burst;       /* REQUESTs a source may send at once (>= 1) */
    uint32_t per_sec;     /* sustained REQUESTs per second per source */
    uint64_t half_ttl_ms; /* lifetime of an entry in any state */
    uint64_t hash_seed;   /* seeds the table index (draw it at random; 0 is valid) */
    pk_kdf_t *kdf;        /* optional re-keyable context for the accept's channel keys
                             (caller-owned, cleared by the caller); NULL: one per accept */
} pk_reg_node_cfg_t;

enum pk_reg_drop {
    PK_REG_DROP_MALFORMED = 0, /* does not parse, wrong size or type */
    PK_REG_DROP_VERSION,
    PK_REG_DROP_RATE,     /* source over its rate */
    PK_REG_DROP_NO_ENTRY, /* response / vector / keys for no half-open entry */
    PK_REG_DROP_BAD_RES,
    PK_REG_DROP_STATE,   /* valid message, wrong state */
    PK_REG_DROP_DUP,     /* retransmission while waiting for the kms */
    PK_REG_DROP_EVICTED, /* a half-open entry pushed out by a newer one */
    PK_REG_DROP_N
};

/*
 * Lookups are O(1) on average: half-open entries and buckets are found
 * through hash chains over (source, device id) / source, mixed with
 * cfg.hash_seed (not a keyed PRF: a sender who forces collisions degrades a
 * lookup to a scan of the table, which is what every lookup cost before the
 * index; the shell's SipHash-keyed per-IP limiter stands in front). The
 * oldest entry (eviction, next expiry) and the least recently used bucket are list heads.
 * The index lives in the tables and in the fields below: a caller that
 * snapshots the node's state must copy both.
 */
typedef struct pk_reg_node {
    pk_reg_node_cfg_t cfg;
    uint64_t seq;
    uint64_t drops[PK_REG_DROP_N];
    uint32_t hfree, holdest, hnewest; /* free chain, age list (created_ms order) */
    uint32_t bused, boldest, bnewest; /* buckets handed out, LRU order */
} pk_reg_node_t;

/* Names of the drop reasons (for pk_drops_init in the shell). */
extern const char *const pk_reg_drop_names[PK_REG_DROP_N];

/* PK_OK or PK_ERR_INVAL (no table, invalid node id, burst 0, ttl 0). The
 * tables must stay valid and untouched by the caller while the node lives. */
int pk_reg_node_init(pk_reg_node_t *n, const pk_reg_node_cfg_t *cfg);

/*
 * Handles a plain REQUEST or RESPONSE from source src (an opaque handle the
 * shell maps to an address). Outputs: SEND (code = message type, dest = src)
 * or EVENT NEED_VECTOR / NEED_KEYS (dest = src, data = the frame for the kms).
 *   REQUEST, new (src, id) or new nonce_d: charged to src's bucket, entry
 *     made (evicting the oldest), NEED_VECTOR.
 *   REQUEST retransmitted (same nonce_d): the identical challenge again when
 *     CHALLENGED; nothing otherwise (PK_OK, counted DUP).
 *   RESPONSE with RES == XRES: NEED_KEYS (AUTHED); in DONE the cached
 *     accept again.
 * Hostile input (no state change, counted in n->drops): PK_ERR_MALFORMED,
 * PK_ERR_VERSION, PK_ERR_LIMIT (rate), PK_ERR_NOTFOUND, PK_ERR_AUTH (RES),
 * PK_ERR_STATE. PK_ERR_SPACE when out is full (no state change).
 */
int pk_reg_node_input(pk_reg_node_t *n, uint64_t src, const uint8_t *msg, size_t len,
                      uint64_t now_ms, pk_out_t *out);

/* The kms's vector for (src, dev, nonce_d): sends the CHALLENGE. A late
 * answer for an entry that is gone or moved on is PK_ERR_NOTFOUND (normal). */
int pk_reg_node_vector(pk_reg_node_t *n, uint64_t src, const pk_reg_id_t *dev,
                       const uint8_t nonce_d[PK_REG_NONCE_LEN], const pk_reg_vector_t *v,
                       uint64_t now_ms, pk_out_t *out);

/*
 * The kms's keys for an AUTHED (src, dev): seals the ACCEPT (temp_id, keys)
 * under the downlink message key as record 1 of context session_id, sends
 * it, caches it, and sets up *chan (caller-owned, zeroed or cleared) as the
 * node's side of the device's protected channel (its tx counter continues
 * after the accept). PK_ERR_NOTFOUND, PK_ERR_INVAL (bad keys), PK_ERR_SPACE.
 */
int pk_reg_node_accept(pk_reg_node_t *n, uint64_t src, const pk_reg_id_t *dev, uint16_t session_id,
                       const pk_reg_id_t *temp_id, const pk_reg_keyset_t *keys, pk_record_t *chan,
                       uint64_t now_ms, pk_out_t *out);

/* Frees entries made half_ttl_ms or more before now_ms (wiping them), in any
 * state. O(entries freed): they are walked from the oldest end of the age
 * list, which is in created_ms order. */
void pk_reg_node_timeout(pk_reg_node_t *n, uint64_t now_ms);
/* When pk_reg_node_timeout next has work (the oldest entry's created_ms +
 * half_ttl_ms), O(1); UINT64_MAX when none (also when that sum does not fit
 * in 64 bits: such an entry never expires). */
uint64_t pk_reg_node_next_deadline(const pk_reg_node_t *n);
/* Number of entries in use. */
size_t pk_reg_node_count(const pk_reg_node_t *n);
/* Wipes every entry. */
void pk_reg_node_clear(pk_reg_node_t *n);

/* ================= device ================= */

enum pk_reg_dev_state {
    PK_REG_D_IDLE = 0,
    PK_REG_D_WAIT_CHALLENGE = 1,
    PK_REG_D_WAIT_ACCEPT = 2,
    PK_REG_D_REGISTERED = 3,
    PK_REG_D_FAILED = 4,
    PK_REG_D_WAIT_KEYS = 5, /* accepted, fetching the rest of a paged key set */
};

#define PK_REG_MAX_IND 8 /* option-2 indications a device keeps */

typedef struct pk_reg_ind {
    uint8_t used;
    uint8_t role; /* enum pk_reg_role: this device's role */
    uint32_t ksi;
    uint8_t param[PK_REG_PARAM_LEN];
    pk_reg_id_t peer;
} pk_reg_ind_t;

typedef struct pk_reg_dev_cfg {
    pk_reg_id_t dev_id;
    pk_reg_id_t node_id; /* the node the device registers with (bound in AUTN) */
    const uint8_t *k;    /* device key, 16 or 32 bytes; copied */
    size_t klen;
    uint64_t rto_ms;    /* first retransmission timeout, doubled per try */
    unsigned max_tries; /* sends of one message before FAILED (1..16) */
    /* Optional key store (borrowed for the device's life, like any user
     * buffer of an embedded library): keys[0..nkeys) holds the root keys.
     * NULL: the PK_REG_MAX_KEYS entries inside pk_reg_dev_t (d->keys.k).
     * A device with more allowed peers than its store holds keeps the
     * lowest peer ids and counts the rest (pk_reg_dev_keys_missing). */
    pk_reg_key_t *keys;
    size_t nkeys; /* entries in keys; at most PK_REG_PEERS_MAX are used */
} pk_reg_dev_cfg_t;

typedef struct pk_reg_dev {
    uint8_t state;
    pk_reg_id_t id, node_id;
    uint8_t k[32];
    uint8_t klen;
    uint64_t rto_ms;
    unsigned max_tries, tries;
    uint64_t deadline;
    uint8_t nonce_d[PK_REG_NONCE_LEN];
    uint8_t rand[PK_REG_RAND_LEN];
    uint8_t k_reg[PK_REG_KREG_LEN];
    uint8_t tx[PK_REG_REQUEST_LEN > PK_REG_RESPONSE_MAX ? PK_REG_REQUEST_LEN
                                                        : PK_REG_RESPONSE_MAX]; /* >= KEYS_REQ */
    size_t txlen;
    uint8_t txtype;
    pk_record_t chan; /* after the accept */
    pk_reg_id_t temp_id;
    /* mode and master keys; the key table itself only when cfg.keys was
     * NULL (keys.k[0..keys.n)). Read the table with pk_reg_dev_keys(). */
    pk_reg_keyset_t keys;
    pk_reg_key_t *store;   /* cfg.keys (borrowed) or NULL */
    uint32_t store_cap;    /* usable entries of store */
    uint32_t nstore;       /* entries of store in use */
    uint32_t keys_missing; /* keys of the set the store had no room for */
    /* paging a key set (WAIT_KEYS) */
    pk_reg_id_t cursor;          /* the last peer taken; len 0: from the start */
    uint8_t tag[PK_REG_TAG_LEN]; /* the set being assembled */
    uint8_t tag_set;             /* 0 after a restart: the next page sets the tag */
    uint8_t restarts;            /* key-set changes followed in this run */
    uint16_t total;              /* keys in the set being assembled */
    pk_reg_ind_t ind[PK_REG_MAX_IND];
    unsigned ind_next;
} pk_reg_dev_t;

/* Copies cfg (and the key); state IDLE. PK_ERR_INVAL for bad ids or key,
 * or a store with nkeys 0. */
int pk_reg_dev_init(pk_reg_dev_t *d, const pk_reg_dev_cfg_t *cfg);

/* The key table (borrowed until the next call on d) and its length. */
const pk_reg_key_t *pk_reg_dev_keys(const pk_reg_dev_t *d, size_t *n);
/* Keys of the device's set its store had no room for (0: all held). */
uint32_t pk_reg_dev_keys_missing(const pk_reg_dev_t *d);

/* Draws nonce_d, sends the REQUEST (dest 0 = the node), WAIT_CHALLENGE.
 * Allowed in IDLE, FAILED and REGISTERED (re-registration); PK_ERR_STATE
 * otherwise. */
int pk_reg_dev_start(pk_reg_dev_t *d, const pk_rng_t *rng, uint64_t now_ms, pk_out_t *out);

/*
 * One datagram from the node.
 *   CHALLENGE in WAIT_CHALLENGE: nonce_d must match and AUTN verify (constant
 *     time) BEFORE anything is sent; then RESPONSE, WAIT_ACCEPT.
 *   ACCEPT in WAIT_ACCEPT: opened under the downlink key; REGISTERED, event;
 *     a paged accept announcing more keys (and room in the store): the
 *     first KEYS_REQ (cursor = its last peer), WAIT_KEYS.
 *   KEYS in WAIT_KEYS: a page answering the current cursor: its keys are
 *     appended (up to the store's room) and the next KEYS_REQ sent, or, at
 *     the last page (or a full store), REGISTERED and the event (dest = the
 *     keys not held). A page of another set (tag) restarts the paging from
 *     the start (at most PK_REG_KEYS_RESTARTS times, then FAILED); a page for
 *     another cursor is PK_ERR_STATE (a late duplicate).
 *   LINK_IND/LINK_REJ in REGISTERED: indication stored, event.
 *   MK_UPDATE in REGISTERED: the master-key block replaces d->keys.mk (the
 *     caller stores the registration before using it), EV_MK_UPDATE; an
 *     empty update changes nothing; a block of the same domain whose newest
 *     MK ID is lower than the held one is refused (PK_ERR_STATE).
 * Errors (no state change, nothing sent): PK_ERR_MALFORMED, PK_ERR_VERSION,
 * PK_ERR_AUTH (AUTN, accept tag), PK_ERR_STATE (not expected now, stale
 * nonce), PK_ERR_REPLAY, PK_ERR_SPACE.
 */
int pk_reg_dev_input(pk_reg_dev_t *d, const uint8_t *msg, size_t len, uint64_t now_ms,
                     pk_out_t *out);

/* Retransmits the pending message when its deadline passed (a KEYS_REQ is
 * sealed again: a new record counter); after max_tries sends, FAILED and
 * EV_FAILED. A late call is harmless (PK_OK, no output). */
int pk_reg_dev_timeout(pk_reg_dev_t *d, uint64_t now_ms, pk_out_t *out);
uint64_t pk_reg_dev_next_deadline(const pk_reg_dev_t *d); /* UINT64_MAX: none */

/* Option 2 (FIG. 5, S41): asks the node for a link with peer (sealed LINK_REQ,
 * dest 0). PK_ERR_STATE unless REGISTERED. */
int pk_reg_dev_link_request(pk_reg_dev_t *d, const pk_reg_id_t *peer, pk_out_t *out);

/* Toshiba FIG. 8 S10 without re-registration: a sealed MK_REFRESH naming the
 * newest MK ID held (dest 0 = the node); the answer is an MK_UPDATE. The
 * record counter advances: store the registration before sending.
 * PK_ERR_STATE unless REGISTERED, PK_ERR_SPACE. */
int pk_reg_dev_mk_refresh(pk_reg_dev_t *d, pk_out_t *out);
/* The newest MK ID in a block (0 when n == 0). */
uint32_t pk_reg_mkset_newest(const pk_reg_mkset_t *mk);

/*
 * Root-key lookup for the direct link (pk_link_lookup_fn; ctx = the device):
 * option 1, the pair key with this KSI whose peer is peer; option 2, the
 * indication (ksi, peer) and the pool key it selects - entry (ksi mod n) of
 * the n pool keys in ascending KSI order (the kms's fixed key set, kms.h) -
 * giving the per-link key KDF(pool key, param, initiator, responder).
 * PK_OK or PK_ERR_NOTFOUND; k_d is wiped on failure.
 */
int pk_reg_dev_lookup(void *ctx, uint32_t ksi, const uint8_t *peer, size_t peer_len,
                      uint8_t k_d[PK_REG_ROOT_KEY_LEN]);

/* Option 1: the KSI of the pair key for peer; PK_ERR_NOTFOUND. */
int pk_reg_dev_pair_ksi(const pk_reg_dev_t *d, const pk_reg_id_t *peer, uint32_t *ksi);

/* Wipes keys and state. */
void pk_reg_dev_clear(pk_reg_dev_t *d);

#endif
