/*
 * The direct link (PC5, device <-> device): wire formats and limits.
 * The shape of TS 33.536 unicast link security with proxkey's keys.
 *
 * All integers big-endian; ids are 1..64 bytes (UTF-8, no NUL). The first
 * byte is the type; each type is accepted only at its exact size or within
 * its [MIN, MAX] bound.
 *
 *   DCR  Direct Communication Request (0x20, 42..154 bytes; initiator -> responder)
 *     type(1) ver(1)=1 sid_msb(1) caps(1) KSI(4) Nonce_1(16)
 *     init_len(1) initiator id  resp_len(1) responder id
 *     [zero bytes up to 42 when the fields above are shorter: the DCR is not
 *     authenticated, and it must never be smaller than the 42-byte SMC it
 *     draws (no amplification towards a spoofed source); exact size
 *     max(42, 26 + init_len + resp_len), padding all zero]
 *   SMC  Security Mode Command (0x21, exactly 42 bytes; responder -> initiator)
 *     type(1) ver(1) sid(2) alg(1) caps(1, echo of the DCR's) KSI(4) Nonce_2(16)
 *     MAC(16) = first 16 of HMAC-SHA-256(PIK, DCR || SMC[0..26))
 *   SMCOMPLETE Security Mode Complete (0x22, exactly 20 bytes; initiator -> responder)
 *     type(1) ver(1) sid(2)
 *     MAC(16) = first 16 of HMAC-SHA-256(PIK, DCR || SMC || SMCOMPLETE[0..4))
 *   DATA (0x23): one pk_record (core/record.h) of type 0x23 whose session id
 *     is sid, epoch 0, keys per direction from PEK (FC 0xE6).
 *
 * sid is the 16-bit PC5 session ID: its MSB chosen by the initiator, its LSB
 * by the responder. caps is a bit set of suites the initiator supports; alg
 * is the one the responder chose. The MACs cover the whole transcript, so
 * neither a capability nor a nonce can be changed in flight (no bidding down).
 */
#ifndef PK_PROTO_LINK_MESSAGES_H
#define PK_PROTO_LINK_MESSAGES_H

#include "core/record.h"

#define PK_LINK_VERSION   1
#define PK_LINK_ID_MAX    64
#define PK_LINK_NONCE_LEN 16
#define PK_LINK_MAC_LEN   16
#define PK_LINK_KD_LEN    32 /* K_D, root key */
#define PK_LINK_KEY_LEN   16

enum pk_link_type {
    PK_LINK_T_DCR = 0x20,
    PK_LINK_T_SMC = 0x21,
    PK_LINK_T_SMCOMPLETE = 0x22,
    PK_LINK_T_DATA = 0x23,
};

/* Suites. The algorithm identity byte also enters the PEK/PIK derivation
 * (P1 of FC 0x7E): one suite = AES-128-GCM records + HMAC-SHA-256-128 MACs. */
#define PK_LINK_ALG_AES128GCM_HMAC 0x01
#define PK_LINK_CAP_AES128GCM_HMAC 0x01 /* bit in caps */

#define PK_LINK_DCR_FIELDS     (8 + PK_LINK_NONCE_LEN + 2)                        /* 26 + ids */
#define PK_LINK_DCR_MAX        (8 + PK_LINK_NONCE_LEN + 2 * (1 + PK_LINK_ID_MAX)) /* 154 */
#define PK_LINK_SMC_BODY       (10 + PK_LINK_NONCE_LEN)                           /* 26 */
#define PK_LINK_SMC_LEN        (PK_LINK_SMC_BODY + PK_LINK_MAC_LEN)               /* 42 */
#define PK_LINK_DCR_MIN        PK_LINK_SMC_LEN       /* padded: never smaller than its answer */
#define PK_LINK_SMCOMPLETE_LEN (4 + PK_LINK_MAC_LEN) /* 20 */
#define PK_LINK_DATA_MAX       PK_RECORD_MAX_LEN
#define PK_LINK_DATA_PT_MAX    1400 /* plaintext per record (one datagram on a radio) */

#endif
