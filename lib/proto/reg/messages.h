/*
 * Registration (PC3, device <-> node) and its network side (node <-> kms,
 * node <-> node): every wire format and limit in one place.
 *
 * All integers are big-endian. "id" is a device or node identity: 1..64
 * bytes of UTF-8 with no NUL (pk_reg_id_valid()). The first byte of every
 * device<->node datagram is its type, so a receiver dispatches on it before
 * anything else; every type is accepted only at its exact size or within its
 * declared [MIN, MAX] bound.
 *
 * ---- device <-> node, unauthenticated (plain) ------------------------------
 *
 *   REQUEST   (0x01, exactly 83 bytes; device -> node)
 *     type(1) ver(1)=1 nonce_d(16) id_len(1) id(64, zero-padded)
 *     The device ID is padded to 64 bytes so the request is never smaller
 *     than the challenge it provokes (no amplification).
 *   CHALLENGE (0x02, exactly 50 bytes; node -> device)
 *     type(1) ver(1) nonce_d(16) RAND(16) AUTN(16)
 *   RESPONSE  (0x03, 36..99 bytes; device -> node)
 *     type(1) ver(1) nonce_d(16) id_len(1) id(id_len) RES(16)
 *
 * ---- device <-> node, protected: pk_record (core/record.h) ------------------
 *
 * From the accept on, every device<->node message is one record: the record's
 * type byte is the message type, its session id is the registration context
 * ID the node assigned (carried in the accept's record header), epoch 0.
 * Keys: KDF(K_reg, FC 0xE3, dir) with dir 0x00 uplink, 0x01 downlink.
 *
 *   ACCEPT    (0x04, node -> device; record of 84..PK_REG_ACCEPT_MAX bytes)
 *     plaintext: nonce_d(16) tid_len(1) temp_id(tid_len) mode(1) count(1)
 *                count x { KSI(4) key(32) peer_len(1) peer(peer_len) }
 *                [ total(2) more(1) tag(8) ]     iff mode & 0x80 (paged)
 *                [ master-key block ]
 *     mode 1 = root keys per pair (option 1, peer_len >= 1),
 *     mode 2 = pool (option 2, peer_len = 0); count <= PK_REG_MAX_KEYS.
 *     Paged (mode | PK_REG_MODE_PAGED, sent only when more = 1): the first
 *     page of a set of `total` keys (<= PK_REG_PEERS_MAX); entries strictly
 *     ascending by peer (pk_reg_id_cmp); more = 1: KEYS_REQ/KEYS follow; tag
 *     names the set (the same on every page of one set). A set that fits
 *     is sent unpaged, byte-identical to the format before paging.
 *     nonce_d inside binds the accept to this registration run.
 *     The optional master-key block (Toshiba, DESIGN 3.6; present iff bytes
 *     remain after the key entries) carries the master keys of the device's
 *     domain, sealed by the accept's AEAD like everything else:
 *       n(1)=1..2 domain_id(4)
 *       n x { MK ID(4) not_before(8) expiry(8) key(32) }     (ms since epoch)
 *     entry 0 is the current MK, entry 1 (when n = 2) the next one, already
 *     scheduled by the kms (not_before in the future). Rules: MK IDs non-zero
 *     and distinct, not_before < expiry, entry 1's not_before > entry 0's.
 *     A device outside any domain gets no block (never n = 0).
 *   LINK_REQ  (0x10, device -> node; option 2, FIG. 5 step S41)
 *     plaintext: peer_len(1) peer(peer_len)
 *   LINK_IND  (0x11, node -> device; option 2, S43/S44)
 *     plaintext: peer_len(1) peer role(1: 0 initiator, 1 responder) KSI(4) param(16)
 *   LINK_REJ  (0x12, node -> device)
 *     plaintext: peer_len(1) peer reason(1: PK_REG_REJ_*)
 *   MK_REFRESH (0x13, device -> node; Toshiba FIG. 8 S10 without re-registration)
 *     plaintext: empty (the device holds no master key) or held_mk_id(4), the
 *     newest MK ID the device holds (non-zero)          [0 or 4 bytes]
 *   MK_UPDATE  (0x14, node -> device; the answer to MK_REFRESH, or pushed)
 *     plaintext: empty (the kms has no master key for the device) or exactly
 *     one master-key block as in ACCEPT (same codec: pk_reg_mkset_*)
 *                                                       [0, 57 or 109 bytes]
 *     Record counters give replay protection; the device also refuses a block
 *     of its own domain whose newest MK ID is lower than the one it holds.
 *   KEYS_REQ   (0x15, device -> node; the next page of a paged key set)
 *     plaintext: after_len(1) after(after_len)          [1..65 bytes]
 *     the cursor: the peer of the last key the device holds, 0..64 bytes
 *     (0: from the start, after a change of the set). Retransmitted sealed
 *     anew (a new counter) every rto_ms x 2^try until max_tries.
 *   KEYS       (0x16, node -> device; the answer)
 *     plaintext: after_len(1) after(after_len)  (the cursor it answers)
 *                mode(1)=0x81 count(1) entries total(2) more(1) tag(8)
 *                                                     [14..3310 bytes]
 *     every entry's peer sorts after the cursor. The device takes a page
 *     only for its current cursor and its set's tag; another tag restarts
 *     the paging from the start (PK_REG_KEYS_RESTARTS times at most).
 *
 * ---- node <-> kms and node <-> node (mutual-TLS frames) ---------------------
 *
 *   KMS_VEC_REQ    (0x40) type node_id(block8) device_id(block8) nonce_d(16)
 *   KMS_VEC_RESP   (0x41) type status(1) RAND(16) AUTN(16) XRES(16) K_reg(32)  [exactly 82]
 *   KMS_KEYS_REQ   (0x42) type device_id(block8) [after_len(1) after]
 *                         with the cursor: a paged answer (the page after
 *                         it); without: the first 32 keys unpaged (old nodes)
 *   KMS_KEYS_RESP  (0x43) type status(1) mode(1) count(1) entries
 *                         [paging block] [master-key block] (as in ACCEPT;
 *                         the master keys with the first page only)
 *   KMS_ALLOC_REQ  (0x44) type initiator(block8) peer(block8)
 *   KMS_ALLOC_RESP (0x45) type status(1) KSI(4) param(16)                       [exactly 22]
 *   NODE_LINK_IND  (0x50) type initiator(block8) target(block8) KSI(4) param(16)
 *
 * The kms takes the node ID from the node's TLS certificate and refuses a
 * KMS_VEC_REQ whose node_id differs (it is carried so a frame is
 * self-describing, not so the node may choose it).
 */
#ifndef PK_PROTO_REG_MESSAGES_H
#define PK_PROTO_REG_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

#include "core/codec.h"
#include "core/err.h"
#include "core/record.h"

#define PK_REG_VERSION       1
#define PK_REG_ID_MAX        64
#define PK_REG_NONCE_LEN     16
#define PK_REG_RAND_LEN      16
#define PK_REG_AUTN_LEN      16
#define PK_REG_RES_LEN       16
#define PK_REG_KREG_LEN      32
#define PK_REG_ROOT_KEY_LEN  32   /* K_D, as TS 33.536 (256 bit) */
#define PK_REG_PARAM_LEN     16   /* option-2 fresh parameter */
#define PK_REG_MAX_KEYS      32   /* keys in one accept, one KEYS record, one kms page */
#define PK_REG_PEERS_MAX     1024 /* root keys per pair one device is handed in all (pages) */
#define PK_REG_TAG_LEN       8    /* key-set tag (paged key sets) */
#define PK_REG_MODE_PAGED    0x80 /* mode flag: a paging block follows the entries */
#define PK_REG_KEYS_RESTARTS 4    /* key-set changes a device follows while paging */
#define PK_REG_MK_LEN        32   /* master key (Toshiba), 256 bit */
#define PK_REG_MAX_MK        2    /* master keys in one block: current, next */

enum pk_reg_type {
    PK_REG_T_REQUEST = 0x01,
    PK_REG_T_CHALLENGE = 0x02,
    PK_REG_T_RESPONSE = 0x03,
    PK_REG_T_ACCEPT = 0x04,
    PK_REG_T_LINK_REQ = 0x10,
    PK_REG_T_LINK_IND = 0x11,
    PK_REG_T_LINK_REJ = 0x12,
    PK_REG_T_MK_REFRESH = 0x13,
    PK_REG_T_MK_UPDATE = 0x14,
    PK_REG_T_KEYS_REQ = 0x15,
    PK_REG_T_KEYS = 0x16,
    PK_REG_T_KMS_VEC_REQ = 0x40,
    PK_REG_T_KMS_VEC_RESP = 0x41,
    PK_REG_T_KMS_KEYS_REQ = 0x42,
    PK_REG_T_KMS_KEYS_RESP = 0x43,
    PK_REG_T_KMS_ALLOC_REQ = 0x44,
    PK_REG_T_KMS_ALLOC_RESP = 0x45,
    PK_REG_T_NODE_LINK_IND = 0x50,
};

/* Exact sizes and bounds. */
#define PK_REG_REQUEST_LEN   (2 + PK_REG_NONCE_LEN + 1 + PK_REG_ID_MAX)                  /* 83 */
#define PK_REG_CHALLENGE_LEN (2 + PK_REG_NONCE_LEN + PK_REG_RAND_LEN + PK_REG_AUTN_LEN)  /* 50 */
#define PK_REG_RESPONSE_MIN  (2 + PK_REG_NONCE_LEN + 1 + 1 + PK_REG_RES_LEN)             /* 36 */
#define PK_REG_RESPONSE_MAX  (2 + PK_REG_NONCE_LEN + 1 + PK_REG_ID_MAX + PK_REG_RES_LEN) /* 99 */
#define PK_REG_KEY_ENTRY_MAX (4 + PK_REG_ROOT_KEY_LEN + 1 + PK_REG_ID_MAX)               /* 101 */
#define PK_REG_PAGE_LEN      (2 + 1 + PK_REG_TAG_LEN) /* total(2) more(1) tag(8): 11 */
/* 3245: mode count, 32 entries, the paging block */
#define PK_REG_KEYSET_MAX   (2 + PK_REG_MAX_KEYS * PK_REG_KEY_ENTRY_MAX + PK_REG_PAGE_LEN)
#define PK_REG_MK_ENTRY_LEN (4 + 8 + 8 + PK_REG_MK_LEN)                   /* 52 */
#define PK_REG_MKSET_MAX    (1 + 4 + PK_REG_MAX_MK * PK_REG_MK_ENTRY_LEN) /* 109 */
#define PK_REG_ACCEPT_PT_MAX                                                                       \
    (PK_REG_NONCE_LEN + 1 + PK_REG_ID_MAX + PK_REG_KEYSET_MAX + PK_REG_MKSET_MAX) /* 3435 */
#define PK_REG_ACCEPT_MIN        PK_RECORD_LEN(PK_REG_NONCE_LEN + 1 + 1 + 2)      /* 48 */
#define PK_REG_ACCEPT_MAX        PK_RECORD_LEN(PK_REG_ACCEPT_PT_MAX)              /* 3463 */
#define PK_REG_CURSOR_MAX        (1 + PK_REG_ID_MAX)                              /* 65 */
#define PK_REG_KEYS_REQ_PT_MAX   PK_REG_CURSOR_MAX                                /* 65 */
#define PK_REG_KEYS_REQ_MIN      PK_RECORD_LEN(1)                                 /* 29 */
#define PK_REG_KEYS_REQ_MAX      PK_RECORD_LEN(PK_REG_KEYS_REQ_PT_MAX)            /* 93 */
#define PK_REG_KEYS_PT_MIN       (1 + 2 + PK_REG_PAGE_LEN)                        /* 14 */
#define PK_REG_KEYS_PT_MAX       (PK_REG_CURSOR_MAX + PK_REG_KEYSET_MAX)          /* 3310 */
#define PK_REG_KEYS_MIN          PK_RECORD_LEN(PK_REG_KEYS_PT_MIN)                /* 42 */
#define PK_REG_KEYS_MAX          PK_RECORD_LEN(PK_REG_KEYS_PT_MAX)                /* 3338 */
#define PK_REG_LINK_PT_MAX       (1 + PK_REG_ID_MAX + 1 + 4 + PK_REG_PARAM_LEN)   /* 86 */
#define PK_REG_SEALED_MAX        PK_RECORD_LEN(PK_REG_LINK_PT_MAX)                /* 114 */
#define PK_REG_MK_REFRESH_PT_MAX 4                                                /* held_mk_id */
#define PK_REG_MK_UPDATE_PT_MIN  (1 + 4 + PK_REG_MK_ENTRY_LEN)                    /* 57 (or 0) */
#define PK_REG_MK_UPDATE_PT_MAX  PK_REG_MKSET_MAX                                 /* 109 */
#define PK_REG_MK_REFRESH_MAX    PK_RECORD_LEN(PK_REG_MK_REFRESH_PT_MAX)          /* 32 */
#define PK_REG_MK_UPDATE_MAX     PK_RECORD_LEN(PK_REG_MK_UPDATE_PT_MAX)           /* 137 */
#define PK_REG_KMS_VEC_RESP_LEN                                                                    \
    (2 + PK_REG_RAND_LEN + PK_REG_AUTN_LEN + PK_REG_RES_LEN + PK_REG_KREG_LEN)
#define PK_REG_KMS_ALLOC_RESP_LEN (2 + 4 + PK_REG_PARAM_LEN) /* 22 */
#define PK_REG_NET_MAX                                                                             \
    (1 + 2 + PK_REG_KEYSET_MAX + PK_REG_MKSET_MAX) /* largest node<->kms frame: 3357 */

_Static_assert(PK_REG_KEYS_REQ_MAX <= PK_REG_RESPONSE_MAX,
               "a KEYS_REQ fits the device's tx buffer");
_Static_assert(PK_REG_KEYS_MAX <= PK_REG_ACCEPT_MAX, "a KEYS record is no larger than an accept");

enum pk_reg_keymode {
    PK_REG_MODE_PAIRS = 1, /* option 1: one root key per allowed pair */
    PK_REG_MODE_POOL = 2,  /* option 2: a pool, KSI indicated by the node */
};

enum pk_reg_role { PK_REG_ROLE_INITIATOR = 0, PK_REG_ROLE_RESPONDER = 1 };

enum pk_reg_rej {
    PK_REG_REJ_DENIED = 1,  /* pair not on the allowed list */
    PK_REG_REJ_UNKNOWN = 2, /* peer unknown or unreachable */
    PK_REG_REJ_BUSY = 3,    /* try later */
};

enum pk_reg_status { PK_REG_ST_OK = 0, PK_REG_ST_DENIED = 1, PK_REG_ST_UNKNOWN = 2 };

/* An identity: 1..64 bytes of UTF-8, no NUL. */
typedef struct pk_reg_id {
    uint8_t len;
    uint8_t b[PK_REG_ID_MAX];
} pk_reg_id_t;

/* One root key: per pair (peer set) or from the pool (peer.len == 0). */
typedef struct pk_reg_key {
    uint32_t ksi;
    uint8_t key[PK_REG_ROOT_KEY_LEN];
    pk_reg_id_t peer;
} pk_reg_key_t;

/* One master key of a domain (Toshiba: key ID and expiry with the key). */
typedef struct pk_reg_mk {
    uint32_t id;            /* non-zero, from the kms's per-store sequence */
    uint64_t not_before_ms; /* effective from (ms since the Unix epoch) */
    uint64_t expiry_ms;     /* not valid from this time on */
    uint8_t key[PK_REG_MK_LEN];
} pk_reg_mk_t;

/* The master-key block: the domain's current key and, when scheduled, the
 * next. n == 0: no block (the device is in no domain). */
typedef struct pk_reg_mkset {
    uint8_t n; /* 0..PK_REG_MAX_MK */
    uint32_t domain_id;
    pk_reg_mk_t k[PK_REG_MAX_MK];
} pk_reg_mkset_t;

/* One key set, or one page of a paged key set (paged = 1): then the entries
 * are in strictly ascending peer order (pk_reg_id_cmp), total is the number
 * of keys in the whole set, more = 1 when entries after the last one follow
 * (in later pages), and tag names the set the page was cut from (the same
 * tag on every page of one consistent set; docs/protocol.md). */
typedef struct pk_reg_keyset {
    uint8_t mode;                /* enum pk_reg_keymode (without PK_REG_MODE_PAGED) */
    uint8_t n;                   /* <= PK_REG_MAX_KEYS */
    uint8_t paged;               /* 1: the paging block below is on the wire */
    uint8_t more;                /* paged: later pages follow */
    uint16_t total;              /* paged: keys in the whole set, n..PK_REG_PEERS_MAX */
    uint8_t tag[PK_REG_TAG_LEN]; /* paged: the set's tag */
    pk_reg_key_t k[PK_REG_MAX_KEYS];
    /* Master keys. NOT written or read by pk_reg_keyset_write/read: the
     * messages that carry them (ACCEPT, KMS_KEYS_RESP) append the block after
     * the entries with pk_reg_mkset_write/pk_reg_mkset_read_opt. */
    pk_reg_mkset_t mk;
} pk_reg_keyset_t;

/* An authentication vector (kms -> node). */
typedef struct pk_reg_vector {
    uint8_t rand[PK_REG_RAND_LEN];
    uint8_t autn[PK_REG_AUTN_LEN];
    uint8_t xres[PK_REG_RES_LEN];
    uint8_t k_reg[PK_REG_KREG_LEN];
} pk_reg_vector_t;

/* ---- identities ---- */

/* 1 when b[0..len) is a valid identity (1..64 bytes of UTF-8, no NUL, no
 * overlong or surrogate encodings). */
int pk_reg_id_valid(const uint8_t *b, size_t len);
/* Fills id from b[0..len); PK_ERR_MALFORMED when not a valid identity. */
int pk_reg_id_set(pk_reg_id_t *id, const void *b, size_t len);
/* 1 when equal (identities are public: plain comparison). */
int pk_reg_id_eq(const pk_reg_id_t *a, const pk_reg_id_t *b);
/* <0, 0, >0: the order of block8 encodings (length first, then bytes), the
 * order the kms keeps peers in and pages key sets by. A len-0 id (the
 * "from the start" cursor) sorts before every id. */
int pk_reg_id_cmp(const pk_reg_id_t *a, const pk_reg_id_t *b);

/* Reads a block8 identity; marks r failed when invalid. */
void pk_reg_rd_id(pk_rd_t *r, pk_reg_id_t *id);
void pk_reg_wr_id(pk_wr_t *w, const pk_reg_id_t *id);

/* ---- key sets: mode(1) count(1) entries [paging block], shared by ACCEPT,
 * KEYS and KMS_KEYS_RESP ---- */

/* Writes ks (mode | PK_REG_MODE_PAGED and the paging block when ks->paged);
 * PK_ERR_INVAL for a set violating the mode's or the paging rules. */
int pk_reg_keyset_write(pk_wr_t *w, const pk_reg_keyset_t *ks);
/* Reads into ks (which the caller wipes after use: it holds keys). */
void pk_reg_keyset_read(pk_rd_t *r, pk_reg_keyset_t *ks);

/* ---- master-key block (see ACCEPT) ---- */

/* 1 when mk follows the block's rules (n 1..2, IDs, times; see ACCEPT). */
int pk_reg_mkset_valid(const pk_reg_mkset_t *mk);
/* Writes the block; nothing when mk->n == 0. Marks w failed with
 * PK_ERR_INVAL for a block breaking the rules. */
void pk_reg_mkset_write(pk_wr_t *w, const pk_reg_mkset_t *mk);
/* Reads the optional trailing block: when r has no bytes left, mk->n = 0;
 * otherwise exactly one valid block (n 1..2), else r fails with
 * PK_ERR_MALFORMED. The caller wipes mk (it holds keys). */
void pk_reg_mkset_read_opt(pk_rd_t *r, pk_reg_mkset_t *mk);

/* ---- plain device<->node messages ---- */

typedef struct pk_reg_request {
    uint8_t nonce_d[PK_REG_NONCE_LEN];
    pk_reg_id_t dev;
} pk_reg_request_t;

typedef struct pk_reg_challenge {
    uint8_t nonce_d[PK_REG_NONCE_LEN];
    uint8_t rand[PK_REG_RAND_LEN];
    uint8_t autn[PK_REG_AUTN_LEN];
} pk_reg_challenge_t;

typedef struct pk_reg_response {
    uint8_t nonce_d[PK_REG_NONCE_LEN];
    pk_reg_id_t dev;
    uint8_t res[PK_REG_RES_LEN];
} pk_reg_response_t;

/* Encoders write into buf[0..cap) and set *len; PK_ERR_SPACE when short. */
int pk_reg_request_encode(const pk_reg_request_t *m, uint8_t *buf, size_t cap, size_t *len);
int pk_reg_challenge_encode(const pk_reg_challenge_t *m, uint8_t *buf, size_t cap, size_t *len);
int pk_reg_response_encode(const pk_reg_response_t *m, uint8_t *buf, size_t cap, size_t *len);
/* Decoders: PK_OK, PK_ERR_MALFORMED (wrong type or size, bad field, nonzero
 * padding), PK_ERR_VERSION. *m is undefined on failure. */
int pk_reg_request_decode(const uint8_t *buf, size_t len, pk_reg_request_t *m);
int pk_reg_challenge_decode(const uint8_t *buf, size_t len, pk_reg_challenge_t *m);
int pk_reg_response_decode(const uint8_t *buf, size_t len, pk_reg_response_t *m);

/* ---- plaintexts of protected messages ---- */

typedef struct pk_reg_accept_pt {
    uint8_t nonce_d[PK_REG_NONCE_LEN];
    pk_reg_id_t temp_id;
    pk_reg_keyset_t keys;
} pk_reg_accept_pt_t;

typedef struct pk_reg_link_pt {
    pk_reg_id_t peer;
    uint8_t role;                    /* LINK_IND */
    uint32_t ksi;                    /* LINK_IND */
    uint8_t param[PK_REG_PARAM_LEN]; /* LINK_IND */
    uint8_t reason;                  /* LINK_REJ */
} pk_reg_link_pt_t;

int pk_reg_accept_pt_encode(const pk_reg_accept_pt_t *m, uint8_t *buf, size_t cap, size_t *len);
int pk_reg_accept_pt_decode(const uint8_t *buf, size_t len, pk_reg_accept_pt_t *m);
/* type is PK_REG_T_LINK_REQ, _IND or _REJ. */
int pk_reg_link_pt_encode(uint8_t type, const pk_reg_link_pt_t *m, uint8_t *buf, size_t cap,
                          size_t *len);
int pk_reg_link_pt_decode(uint8_t type, const uint8_t *buf, size_t len, pk_reg_link_pt_t *m);

/* KEYS_REQ plaintext: the cursor after(len(1) id), len 0 = from the start.
 * KEYS plaintext: the cursor it answers, then a paged key set of mode pairs
 * whose entries all sort after the cursor. Decode: PK_ERR_MALFORMED for any
 * other size or content; *page (keys) is wiped on failure, and by the caller
 * after use. */
int pk_reg_keys_req_pt_encode(const pk_reg_id_t *after, uint8_t *buf, size_t cap, size_t *len);
int pk_reg_keys_req_pt_decode(const uint8_t *buf, size_t len, pk_reg_id_t *after);
int pk_reg_keys_pt_encode(const pk_reg_id_t *after, const pk_reg_keyset_t *page, uint8_t *buf,
                          size_t cap, size_t *len);
int pk_reg_keys_pt_decode(const uint8_t *buf, size_t len, pk_reg_id_t *after,
                          pk_reg_keyset_t *page);
/* The cursor codec: len(1) then 0 (from the start) or a valid id. */
void pk_reg_wr_cursor(pk_wr_t *w, const pk_reg_id_t *after);
void pk_reg_rd_cursor(pk_rd_t *r, pk_reg_id_t *after);

/* MK_REFRESH plaintext: held_mk_id 0 encodes as empty. Decode: PK_OK and
 * *held_mk_id (0 for empty), PK_ERR_MALFORMED for any other size or an
 * explicit 0. */
int pk_reg_mk_refresh_pt_encode(uint32_t held_mk_id, uint8_t *buf, size_t cap, size_t *len);
int pk_reg_mk_refresh_pt_decode(const uint8_t *buf, size_t len, uint32_t *held_mk_id);
/* MK_UPDATE plaintext: the master-key block (mk->n == 0: empty). Encode:
 * PK_ERR_INVAL for a block breaking the rules, PK_ERR_SPACE. Decode: exactly
 * empty (mk->n = 0) or one valid block, else PK_ERR_MALFORMED (*mk wiped).
 * The caller wipes *mk (it holds keys). */
int pk_reg_mk_update_pt_encode(const pk_reg_mkset_t *mk, uint8_t *buf, size_t cap, size_t *len);
int pk_reg_mk_update_pt_decode(const uint8_t *buf, size_t len, pk_reg_mkset_t *mk);

/* ---- node <-> kms, node <-> node ---- */

typedef struct pk_reg_net {
    uint8_t type;   /* PK_REG_T_KMS_* or PK_REG_T_NODE_LINK_IND */
    uint8_t status; /* responses: enum pk_reg_status */
    pk_reg_id_t a;  /* VEC_REQ: node; KEYS_REQ: device; ALLOC_REQ/LINK_IND: initiator */
    pk_reg_id_t b;  /* VEC_REQ: device; ALLOC_REQ: peer; LINK_IND: target */
    uint8_t nonce_d[PK_REG_NONCE_LEN]; /* VEC_REQ */
    pk_reg_vector_t vec;               /* VEC_RESP */
    uint32_t ksi;                      /* ALLOC_RESP, LINK_IND */
    uint8_t param[PK_REG_PARAM_LEN];   /* ALLOC_RESP, LINK_IND */
    pk_reg_keyset_t keys;              /* KEYS_RESP */
    uint8_t paged;                     /* KEYS_REQ: carries a cursor (paged answer) */
    pk_reg_id_t after;                 /* KEYS_REQ: the cursor (len 0: from the start) */
} pk_reg_net_t;

/* Encodes/decodes one node<->kms or node<->node frame body (the transport adds
 * the length prefix). Decode: PK_ERR_MALFORMED for unknown type, bad size or
 * field. The struct holds keys: wipe it after use. */
int pk_reg_net_encode(const pk_reg_net_t *m, uint8_t *buf, size_t cap, size_t *len);
int pk_reg_net_decode(const uint8_t *buf, size_t len, pk_reg_net_t *m);

#endif
