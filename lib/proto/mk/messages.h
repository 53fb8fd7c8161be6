/*
 * Client-to-client messages of the master-key method (Toshiba, DESIGN §3.6):
 * every wire format and limit in one place. docs/protocol.md ("Master keys and individual keys")
 * draws them.
 *
 * Transport: one message per UDP datagram, no network infrastructure needed.
 * All integers big-endian. Every message starts with version (1) and type (1).
 *
 * ---- Beacon (type 0x01, unauthenticated, 11 + id_len bytes) ----------------
 *
 *   version(1)=1 | type(1)=0x01 | domain ID(4) | MK ID(4) | id_len(1) | id
 *
 *   Announces "client <id> of <domain> holds master key <MK ID>". It carries
 *   no MAC: a receiver may only react by starting an authentication (whose
 *   START it sends to the beacon's source), never change any state.
 *
 * ---- Authentication (types 0x02..0x05) --------------------------------------
 *
 *   off  size  field
 *   0    1     version = 1
 *   1    1     type: 0x02 START (FIG. 4 501), 0x03 PROC (502), 0x04 END1 (503),
 *              0x05 END2 (504). The type is also the role/direction byte:
 *              START and END1 only ever travel initiator -> responder, PROC
 *              and END2 responder -> initiator, and every MAC covers it.
 *   2    1     flags: bit 0 PK_MK_FLAG_WRAP (third embodiment: the initiator
 *              makes the individual key and sends it wrapped); other bits 0.
 *              Fixed by START and repeated, bound by every MAC.
 *   3    4     domain ID
 *   7    4     MK ID of the master key the MACs are made with
 *   11   16    n_i, the initiator's random
 *   27   16    n_r, the responder's random (all zero in START)
 *   43   1+L   id_len, initiator ID (1..64 bytes)
 *   ..   1+L   id_len, responder ID (1..64 bytes)
 *   body:
 *     START, PROC:  (empty)
 *     END1:         key ID(4) | expiry(8, ms since the Unix epoch)
 *                   [| wrapped key(16) | GCM tag(16)   when PK_MK_FLAG_WRAP]
 *     END2:         key ID(4) | expiry(8)  (the values the responder stored)
 *   MAC(32)     HMAC-SHA-256(K_auth, every preceding byte of the message),
 *               K_auth = KDF(MK, FC 0xE9, MK ID(4)).
 *
 *   Each message is accepted only at its exact size (PK_MK_AUTH_LEN).
 */
#ifndef PK_PROTO_MK_MESSAGES_H
#define PK_PROTO_MK_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

#define PK_MK_VERSION 1

#define PK_MK_T_BEACON 0x01
#define PK_MK_T_START  0x02
#define PK_MK_T_PROC   0x03
#define PK_MK_T_END1   0x04
#define PK_MK_T_END2   0x05

#define PK_MK_FLAG_WRAP   0x01
#define PK_MK_FLAGS_KNOWN PK_MK_FLAG_WRAP

#define PK_MK_ID_MAX      64 /* client identity, UTF-8, 1..64 bytes */
#define PK_MK_NONCE_LEN   16
#define PK_MK_MAC_LEN     32
#define PK_MK_IK_LEN      16 /* individual key (AES-128 sized) */
#define PK_MK_KEY_MAX     32 /* master key: 16 or 32 bytes */
#define PK_MK_WRAPPED_LEN 32 /* AES-128-GCM ciphertext(16) + tag(16) of the IK */

#define PK_MK_BEACON_FIXED 11 /* version, type, domain, MK ID, id_len */

#define PK_MK_AUTH_FIXED 43 /* version .. n_r */
#define PK_MK_END_BODY   12 /* key ID(4) + expiry(8) */
#define PK_MK_AUTH_BODY_LEN(type, flags)                                                           \
    (((type) == PK_MK_T_END1 || (type) == PK_MK_T_END2) ? PK_MK_END_BODY : 0) +                    \
        (((type) == PK_MK_T_END1 && ((flags)&PK_MK_FLAG_WRAP)) ? PK_MK_WRAPPED_LEN : 0)
#define PK_MK_AUTH_LEN(type, flags, li, lr)                                                        \
    (PK_MK_AUTH_FIXED + 2 + (size_t)(li) + (size_t)(lr) + PK_MK_AUTH_BODY_LEN(type, flags) +       \
     PK_MK_MAC_LEN)
#define PK_MK_AUTH_MIN PK_MK_AUTH_LEN(PK_MK_T_START, 0, 1, 1) /* 79 */
/* A beacon is padded with zeros to the size of the largest START it can
 * provoke, so the unauthenticated beacon never draws an answer larger than
 * itself (no amplification towards a spoofed source). */
#define PK_MK_BEACON_LEN PK_MK_AUTH_LEN(PK_MK_T_START, 0, PK_MK_ID_MAX, PK_MK_ID_MAX) /* 205 */
#define PK_MK_BEACON_MAX PK_MK_BEACON_LEN
_Static_assert(PK_MK_BEACON_LEN >= PK_MK_AUTH_LEN(PK_MK_T_START, 0, PK_MK_ID_MAX, PK_MK_ID_MAX),
               "a beacon must not be smaller than the START it provokes");
#define PK_MK_MSG_MAX                                                                              \
    PK_MK_AUTH_LEN(PK_MK_T_END1, PK_MK_FLAG_WRAP, PK_MK_ID_MAX, PK_MK_ID_MAX) /* 249 */

/* A parsed authentication message. Pointers borrow from the input buffer. */
typedef struct pk_mk_msg {
    uint8_t type, flags;
    uint32_t domain_id, mk_id;
    uint8_t n_i[PK_MK_NONCE_LEN], n_r[PK_MK_NONCE_LEN];
    const uint8_t *id_i, *id_r;
    uint8_t id_i_len, id_r_len;
    uint32_t key_id;        /* END1/END2, else 0 */
    uint64_t expiry_ms;     /* END1/END2, else 0 */
    const uint8_t *wrapped; /* END1 with PK_MK_FLAG_WRAP: 32 bytes, else NULL */
    size_t wrap_aad_len;    /* bytes before the wrapped field (its GCM AAD) */
    const uint8_t *mac;     /* the last 32 bytes */
    size_t mac_len_covered; /* bytes the MAC covers (message length - 32) */
} pk_mk_msg_t;

/* A parsed beacon; id borrows from the input. */
typedef struct pk_mk_beacon {
    uint32_t domain_id, mk_id;
    const uint8_t *id;
    uint8_t id_len;
} pk_mk_beacon_t;

/*
 * Returns the type byte of a datagram that starts like a message of this
 * protocol (version 1 and a known type), or a negative PK_ERR_* code:
 * PK_ERR_MALFORMED (shorter than 2 bytes, unknown type), PK_ERR_VERSION.
 */
int pk_mk_msg_peek(const uint8_t *buf, size_t len);

/*
 * Parses an authentication message (types 0x02..0x05) at its exact size.
 * Checks: version, type, known flags only, IDs 1..64 bytes, START has n_r all
 * zero, END key ID non-zero and expiry non-zero. Verifies no MAC (the caller
 * does, with the session's key). On failure *m is zeroed.
 * Returns PK_OK, PK_ERR_MALFORMED or PK_ERR_VERSION.
 */
int pk_mk_msg_parse(const uint8_t *buf, size_t len, pk_mk_msg_t *m);

/*
 * Writes m (every field but the MAC, which is left as zero bytes) into
 * buf[0..cap); *len receives the full message length including the MAC.
 * The caller then fills buf[*len - 32 .. *len) with the MAC.
 * Returns PK_OK, PK_ERR_INVAL (bad field) or PK_ERR_SPACE.
 */
int pk_mk_msg_write(const pk_mk_msg_t *m, uint8_t *buf, size_t cap, size_t *len);

/* Parses a beacon at its exact size. PK_OK, PK_ERR_MALFORMED, PK_ERR_VERSION. */
int pk_mk_beacon_parse(const uint8_t *buf, size_t len, pk_mk_beacon_t *b);

/* Writes a beacon; *len receives its length. PK_OK, PK_ERR_INVAL, PK_ERR_SPACE. */
int pk_mk_beacon_write(const pk_mk_beacon_t *b, uint8_t *buf, size_t cap, size_t *len);

#endif
