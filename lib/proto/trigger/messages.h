/*
 * Trigger protocol (Thales GTS method, DESIGN.md §3.5): every wire format and
 * limit in one place. docs/protocol.md (Trigger) gives the same layouts as tables.
 *
 * Two messages, one UDP datagram each, both fixed-layout and accepted only at
 * their exact length:
 *
 *   POLL  device -> gts, PK_TRIG_POLL_LEN (20) bytes
 *     0  ver   u8   PK_TRIG_VERSION
 *     1  type  u8   PK_TRIG_T_POLL
 *     2  try   u8   attempt number of this poll, 1 + Resend_Counter (1..255)
 *     3  rsv   u8   0
 *     4  uid   16   the device's current identity UID1
 *
 *   RESP  gts -> device, PK_TRIG_RESP_FIXED (51) + arglen bytes
 *     0  ver   u8   PK_TRIG_VERSION
 *     1  type  u8   PK_TRIG_T_RESP
 *     2  nonce 12   AES-GCM nonce (random per response)
 *    14  ct    21+arglen  AES-128-GCM_K1( MSG || Sent || UID_RAND )
 *        tag   16   GCM tag over aad = ver || type || UID1 and the plaintext
 *
 *   plaintext (Resp1 of the patent, less SIG which is the GCM tag):
 *     0  cmd     u8   enum pk_trig_cmd                   \
 *     1  flags   u8   PK_TRIG_F_*                         | MSG
 *     2  arglen  u16  0..PK_TRIG_ARG_MAX                  |
 *     4  arg     arglen bytes (per-command encoding)     /
 *     .  sent    u8   Sent: responses sent for UID1, capped at the poll's try
 *     .  rand    16   UID_RAND
 *
 * UID2 = first 16 bytes of KDF(K1, FC 0xEC, UID1, UID_RAND);
 * K2   = last 16 bytes of KDF(K1, FC 0xED, UID_RAND, UID2) when PK_TRIG_F_ROTATE.
 */
#ifndef PK_PROTO_TRIGGER_MESSAGES_H
#define PK_PROTO_TRIGGER_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/kdf.h"

#define PK_TRIG_VERSION 0x01
#define PK_TRIG_T_POLL  0x01
#define PK_TRIG_T_RESP  0x02

#define PK_TRIG_UID_LEN   16 /* UID1, UID2: random-looking, unrelated to the device ID */
#define PK_TRIG_RAND_LEN  16 /* UID_RAND */
#define PK_TRIG_KEY_LEN   16 /* K1 / K2: AES-128-GCM key, also the KDF key */
#define PK_TRIG_NONCE_LEN 12
#define PK_TRIG_TAG_LEN   16

#define PK_TRIG_POLL_LEN     20 /* exact */
#define PK_TRIG_POLL_OFF_TRY 2
#define PK_TRIG_POLL_OFF_UID 4

#define PK_TRIG_HDR_LEN  2                          /* ver, type */
#define PK_TRIG_PT_FIXED (4 + 1 + PK_TRIG_RAND_LEN) /* 21: MSG header, Sent, UID_RAND */
#define PK_TRIG_RESP_FIXED                                                                         \
    (PK_TRIG_HDR_LEN + PK_TRIG_NONCE_LEN + PK_TRIG_PT_FIXED + PK_TRIG_TAG_LEN) /* 51 */
#define PK_TRIG_ARG_MAX  1024                                                  /* command payload */
#define PK_TRIG_RESP_MAX (PK_TRIG_RESP_FIXED + PK_TRIG_ARG_MAX)                /* 1075 */
#define PK_TRIG_AAD_LEN  (PK_TRIG_HDR_LEN + PK_TRIG_UID_LEN)                   /* 18 */

/* Flags in the (authenticated) MSG header. */
#define PK_TRIG_F_ROTATE 0x01 /* switch to K2 together with UID2 */
#define PK_TRIG_F_KNOWN  0x01 /* mask of the flags a receiver accepts */

/* Resend_Counter bounds on the device: try = Resend_Counter + 1 <= 255. */
#define PK_TRIG_TRY_MAX 255

/* Commands (MSG). Argument encodings, all exact:
 *   NONE, KEYGEN                 no argument (arglen 0)
 *   UPDATE, OTA_HTTPS            URL, 1..PK_TRIG_URL_MAX bytes of printable ASCII
 *   POLL_FASTER, POLL_SLOWER     new poll interval in seconds, u32 big-endian (arglen 4),
 *                                PK_TRIG_INTERVAL_MIN_S..PK_TRIG_INTERVAL_MAX_S
 *   APP                          opaque, 0..PK_TRIG_ARG_MAX bytes */
enum pk_trig_cmd {
    PK_TRIG_CMD_NONE = 0x00,        /* no update */
    PK_TRIG_CMD_UPDATE = 0x01,      /* an update is available at URL */
    PK_TRIG_CMD_POLL_FASTER = 0x02, /* poll more often: new interval */
    PK_TRIG_CMD_POLL_SLOWER = 0x03, /* poll less often: new interval */
    PK_TRIG_CMD_KEYGEN = 0x04,      /* generate new keys on board */
    PK_TRIG_CMD_OTA_HTTPS = 0x05,   /* open HTTPS to the OTA server at URL */
    PK_TRIG_CMD_APP = 0x06,         /* opaque application payload */
    PK_TRIG_CMD_MAX_ = 0x06
};

#define PK_TRIG_URL_MAX        512
#define PK_TRIG_INTERVAL_MIN_S 1u
#define PK_TRIG_INTERVAL_MAX_S (7u * 24 * 3600)

/* A parsed poll (borrowed pointer into the datagram). */
typedef struct pk_trig_poll {
    uint8_t try_no;
    const uint8_t *uid; /* PK_TRIG_UID_LEN bytes, borrowed */
} pk_trig_poll_t;

/*
 * Parses a poll datagram: exactly PK_TRIG_POLL_LEN bytes, known version and
 * type, try >= 1, rsv == 0. Returns PK_OK or PK_ERR_MALFORMED (p untouched).
 */
int pk_trig_poll_parse(const uint8_t *buf, size_t len, pk_trig_poll_t *p);

/* Writes a poll into out. */
void pk_trig_poll_build(uint8_t try_no, const uint8_t uid[PK_TRIG_UID_LEN],
                        uint8_t out[PK_TRIG_POLL_LEN]);

/*
 * Checks a command and its argument against the encodings above: PK_OK,
 * PK_ERR_MALFORMED (argument not valid for the command) or PK_ERR_INVAL
 * (unknown command).
 */
int pk_trig_cmd_check(uint8_t cmd, const uint8_t *arg, size_t arglen);

/* The command's name ("none", "update", ...) or NULL; and back (-1 if unknown). */
const char *pk_trig_cmd_name(uint8_t cmd);
int pk_trig_cmd_parse(const char *name);

/*
 * Seals a response. k1 is the key of UID1's exchange, nonce 12 fresh bytes.
 * out must hold PK_TRIG_RESP_FIXED + arglen bytes; *outlen receives that.
 * Returns PK_OK, PK_ERR_INVAL (arglen too big) or PK_ERR_CRYPTO.
 */
int pk_trig_resp_seal(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                      const uint8_t nonce[PK_TRIG_NONCE_LEN], uint8_t cmd, uint8_t flags,
                      const uint8_t *arg, size_t arglen, uint8_t sent,
                      const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t *out, size_t outcap,
                      size_t *outlen);

/* As pk_trig_resp_seal on a caller-owned, reusable context (hot paths):
 * the context is re-keyed with k1 for sealing only (pk_aead_rekey_seal). */
int pk_trig_resp_seal_cx(pk_aead_t *a, const uint8_t k1[PK_TRIG_KEY_LEN],
                         const uint8_t uid1[PK_TRIG_UID_LEN],
                         const uint8_t nonce[PK_TRIG_NONCE_LEN], uint8_t cmd, uint8_t flags,
                         const uint8_t *arg, size_t arglen, uint8_t sent,
                         const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t *out, size_t outcap,
                         size_t *outlen);

/* An opened response. arg points into the caller's pt buffer. */
typedef struct pk_trig_resp {
    uint8_t cmd, flags, sent;
    uint8_t unsupported; /* cmd unknown, or its argument invalid: not to act on */
    uint16_t arglen;
    const uint8_t *arg;
    uint8_t rand[PK_TRIG_RAND_LEN];
} pk_trig_resp_t;

/*
 * Opens a response: exact length (PK_TRIG_RESP_FIXED + arglen, arglen read
 * from the authenticated plaintext), version, type, tag under k1 with UID1 as
 * associated data, known flags. A command this code does not know, or whose
 * argument is not valid for it, does not refuse the response (it is
 * authentic, and refusing it would hold the device on UID1 with the command
 * bound to every retransmission): r->unsupported is set instead and the
 * command must not be acted on. pt (caller-owned, ptcap >= len) receives the
 * plaintext; on any failure it is wiped. Returns PK_OK, PK_ERR_MALFORMED or
 * PK_ERR_AUTH.
 */
int pk_trig_resp_open(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                      const uint8_t *buf, size_t len, uint8_t *pt, size_t ptcap, pk_trig_resp_t *r);

/* As pk_trig_resp_open on a caller-owned, reusable context (re-keyed with k1). */
int pk_trig_resp_open_cx(pk_aead_t *a, const uint8_t k1[PK_TRIG_KEY_LEN],
                         const uint8_t uid1[PK_TRIG_UID_LEN], const uint8_t *buf, size_t len,
                         uint8_t *pt, size_t ptcap, pk_trig_resp_t *r);

/* The derivations below on a KDF context already keyed with K1 (the _cx
 * forms; the caller re-keys it per device), and one-off forms with K1. */
int pk_trig_derive_uid2_cx(pk_kdf_t *k, const uint8_t uid1[PK_TRIG_UID_LEN],
                           const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t uid2[PK_TRIG_UID_LEN]);
int pk_trig_derive_k2_cx(pk_kdf_t *k, const uint8_t rand[PK_TRIG_RAND_LEN],
                         const uint8_t uid2[PK_TRIG_UID_LEN], uint8_t k2[PK_TRIG_KEY_LEN]);

/* UID2 = first 16 of KDF(K1, 0xEC, UID1, UID_RAND). */
int pk_trig_derive_uid2(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                        const uint8_t rand[PK_TRIG_RAND_LEN], uint8_t uid2[PK_TRIG_UID_LEN]);

/* K2 = last 16 of KDF(K1, 0xED, UID_RAND, UID2). */
int pk_trig_derive_k2(const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t rand[PK_TRIG_RAND_LEN],
                      const uint8_t uid2[PK_TRIG_UID_LEN], uint8_t k2[PK_TRIG_KEY_LEN]);

#endif
