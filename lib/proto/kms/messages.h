/*
 * node <-> kms frames that the kms adds to the registration set
 * (proto/reg/messages.h, types 0x40-0x45), in the range 0x46-0x4F, with the
 * same codec conventions: big-endian integers, identities as block8
 * (len(1) then 1..64 bytes of UTF-8, pk_reg_id_valid), every frame one
 * length-prefixed TLS frame (net/tls.h) whose first byte is its type, accepted
 * only at its exact size or within its bounds.
 *
 *   KMS_DIR_REQ  (0x46) type device(block8)                       [3..66 bytes]
 *     "which node serves device?" (option 2: a node finds the peer's node).
 *   KMS_DIR_RESP (0x47) type status(1)=0 node(block8)            [4..67 bytes]
 *     The node that last fetched the device's keys (KMS_KEYS_REQ after a
 *     successful registration); the kms updates it then, never on request.
 *   KMS_MK_REQ   (0x48) type device(block8)                       [3..66 bytes]
 *     "the current master keys of device's domain" (the node asks for a
 *     registered device's MK_REFRESH; Toshiba FIG. 8, docs/protocol.md "Master keys from the kms to
 * the clients"). KMS_MK_RESP  (0x49) type status(1)=0 n(1) [domain_id(4) n x { MK ID(4)
 * not_before(8) expiry(8) key(32) }] [exactly 3, 60 or 112] n = 0: the device is in no domain or
 * its domain has no valid key; else the master-key block of proto/reg/messages.h (ACCEPT). KMS_ERR
 * (0x4F) type status(1) req_type(1)               [exactly 3] The kms's answer to any request it
 * refuses, whatever the request's type: status is PK_REG_ST_* / PK_KMS_ST_*, req_type the refused
 *     request's first byte. Sent only to requests of at least 3 bytes, so no
 *     answer is ever longer than its request; a shorter frame gets no answer
 *     and its connection is closed.
 *
 * Successful answers use the typed responses (KMS_VEC_RESP, KMS_KEYS_RESP,
 * KMS_ALLOC_RESP, KMS_DIR_RESP) with status 0; their status byte is never
 * non-zero from this kms (refusals are KMS_ERR).
 *
 * Ordering: on one connection the kms answers every request it answers in
 * the order the requests arrived (FIFO), so a node matches answers to
 * requests by position; it may pipeline requests.
 */
#ifndef PK_PROTO_KMS_MESSAGES_H
#define PK_PROTO_KMS_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

#include "proto/reg/messages.h"

enum pk_kms_type {
    PK_KMS_T_DIR_REQ = 0x46,
    PK_KMS_T_DIR_RESP = 0x47,
    PK_KMS_T_MK_REQ = 0x48,
    PK_KMS_T_MK_RESP = 0x49,
    PK_KMS_T_ERR = 0x4F,
};

/* Status codes beyond proto/reg's OK (0), DENIED (1), UNKNOWN (2). */
enum pk_kms_status {
    PK_KMS_ST_MALFORMED = 3, /* the request did not parse (wrong size, field, type) */
    PK_KMS_ST_BUSY = 4,      /* transient: the store was busy or failed; retry later */
    PK_KMS_ST_EXHAUSTED = 5, /* option 2: no unallocated pool key that both devices hold;
                                they must register again (fetch a fresh window) */
    PK_KMS_ST_ERROR = 6,     /* internal failure */
};

#define PK_KMS_ERR_LEN      3
#define PK_KMS_DIR_REQ_MIN  (1 + 1 + 1)
#define PK_KMS_DIR_REQ_MAX  (1 + 1 + PK_REG_ID_MAX)
#define PK_KMS_DIR_RESP_MIN (2 + 1 + 1)
#define PK_KMS_DIR_RESP_MAX (2 + 1 + PK_REG_ID_MAX)
#define PK_KMS_REQ_MIN      3                      /* the shortest request of any type */
#define PK_KMS_MK_RESP_MAX  (2 + PK_REG_MKSET_MAX) /* 111 */

/* KMS_DIR_REQ / KMS_DIR_RESP / KMS_MK_REQ / KMS_MK_RESP / KMS_ERR as one struct. */
typedef struct pk_kms_msg {
    uint8_t type;      /* PK_KMS_T_* */
    uint8_t status;    /* DIR_RESP, ERR */
    uint8_t req_type;  /* ERR */
    pk_reg_id_t id;    /* DIR_REQ, MK_REQ: device; DIR_RESP: node */
    pk_reg_mkset_t mk; /* MK_RESP (holds keys: wipe after use) */
} pk_kms_msg_t;

/* Encodes m into buf[0..cap) and sets *len. PK_ERR_INVAL (unknown type, bad
 * id), PK_ERR_SPACE. */
int pk_kms_msg_encode(const pk_kms_msg_t *m, uint8_t *buf, size_t cap, size_t *len);

/* Decodes one frame of the types above. PK_ERR_MALFORMED for any other type,
 * a wrong size or a bad field (*m is then zeroed). */
int pk_kms_msg_decode(const uint8_t *buf, size_t len, pk_kms_msg_t *m);

#endif
