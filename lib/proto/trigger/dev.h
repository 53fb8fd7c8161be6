/*
 * Trigger device core (the SecApp side of the Thales method): builds polls,
 * opens responses, retransmits with Resend_Counter, follows the poll
 * interval the server sets. No I/O, no clock, no heap: the caller owns the
 * context and passes now_ms; part of libproxkey-device.
 *
 * States:
 *   IDLE  nothing outstanding; next_deadline() is the next poll time.
 *   WAIT  a poll is outstanding; next_deadline() is the retransmit time.
 *   SAVE  a response was accepted: the context already holds the new
 *         identity (UID2, and K2 when rotating) and interval. The caller
 *         must persist pk_trig_dev_export() durably, then call
 *         pk_trig_dev_saved(); until then poll() refuses (PK_ERR_STATE), so
 *         a new identity is never used before it is stored. A crash before
 *         the save leaves the old identity on disk, which the server still
 *         answers (it keeps UID1 until UID2 is seen).
 *
 *   IDLE --poll()--> WAIT --timeout(), Resend_Counter < max--> WAIT (same UID, try+1)
 *   WAIT --timeout(), Resend_Counter = max--> IDLE (PK_ERR_TIMEOUT; next poll after interval)
 *   WAIT --input() valid--> SAVE --saved()--> IDLE (next poll after interval)
 *
 * A response is accepted when it opens under K with UID as associated data
 * (the GCM tag is the patent's SIG, recomputed as XSIG) and its Sent counter
 * satisfies 1 <= Sent <= Resend_Counter + 1.
 */
#ifndef PK_PROTO_TRIGGER_DEV_H
#define PK_PROTO_TRIGGER_DEV_H

#include <stddef.h>
#include <stdint.h>

#include "proto/trigger/messages.h"

enum pk_trig_dev_state { PK_TRIG_DEV_IDLE = 0, PK_TRIG_DEV_WAIT = 1, PK_TRIG_DEV_SAVE = 2 };

typedef struct pk_trig_dev_cfg {
    uint32_t timeout_ms;     /* wait for a response before retransmitting (>= 1) */
    uint8_t max_resend;      /* Resend_Counter limit per exchange (<= 254) */
    uint32_t min_interval_s; /* interval commands are clamped to [min, max] */
    uint32_t max_interval_s;
} pk_trig_dev_cfg_t;

typedef struct pk_trig_dev {
    uint8_t uid[PK_TRIG_UID_LEN]; /* current identity */
    uint8_t key[PK_TRIG_KEY_LEN]; /* K1 (or the latest K2) */
    uint8_t state;                /* enum pk_trig_dev_state */
    uint8_t resend;               /* Resend_Counter of the outstanding poll */
    uint32_t interval_s;          /* current poll interval */
    uint64_t deadline_ms;         /* WAIT: retransmit; IDLE: next poll */
    pk_trig_dev_cfg_t cfg;
    uint64_t polls_sent, exchanges, give_ups, rejected;
} pk_trig_dev_t;

/* What an accepted response carried. arg is a copy (no heap: inline). */
typedef struct pk_trig_dev_msg {
    uint8_t cmd;         /* enum pk_trig_cmd */
    uint8_t sent;        /* the server's Sent */
    uint8_t resend;      /* our Resend_Counter when accepted */
    uint8_t rotated;     /* the key was rotated to K2 */
    uint8_t unsupported; /* cmd unknown or its argument invalid: the exchange
                          * completed (identity moved on), the command is
                          * reported, not to be acted on */
    uint16_t arglen;
    uint32_t interval_s; /* the interval now in force */
    uint8_t arg[PK_TRIG_ARG_MAX];
} pk_trig_dev_msg_t;

/* Serialised identity: ver(1) rsv(3) UID(16) K(16) interval_s(4). */
#define PK_TRIG_DEV_STATE_LEN 40

/*
 * Initialises a device with its provisioned K1 and UID1; the first poll is
 * due at first_poll_ms. Returns PK_OK or PK_ERR_INVAL (bad configuration).
 */
int pk_trig_dev_init(pk_trig_dev_t *d, const pk_trig_dev_cfg_t *cfg,
                     const uint8_t k1[PK_TRIG_KEY_LEN], const uint8_t uid1[PK_TRIG_UID_LEN],
                     uint32_t interval_s, uint64_t first_poll_ms);

/* Restores a device from pk_trig_dev_export() output (state IDLE, poll due at
 * first_poll_ms). PK_ERR_MALFORMED / PK_ERR_VERSION on a bad blob. */
int pk_trig_dev_import(pk_trig_dev_t *d, const pk_trig_dev_cfg_t *cfg, const uint8_t *blob,
                       size_t len, uint64_t first_poll_ms);
void pk_trig_dev_export(const pk_trig_dev_t *d, uint8_t blob[PK_TRIG_DEV_STATE_LEN]);

/* Starts an exchange (IDLE only; Resend_Counter = 0) and writes the poll.
 * PK_ERR_STATE in WAIT or SAVE. */
int pk_trig_dev_poll(pk_trig_dev_t *d, uint64_t now_ms, uint8_t out[PK_TRIG_POLL_LEN]);

/*
 * Handles the clock. In WAIT past the deadline: Resend_Counter += 1 and the
 * same poll with try = Resend_Counter + 1 is written to out (*send = 1); past
 * max_resend the exchange is abandoned (IDLE, PK_ERR_TIMEOUT, the next poll
 * after one interval). Otherwise nothing (*send = 0, PK_OK). Late calls are
 * harmless.
 */
int pk_trig_dev_timeout(pk_trig_dev_t *d, uint64_t now_ms, uint8_t out[PK_TRIG_POLL_LEN],
                        int *send);

/* When the core next wants timeout() (WAIT) or poll() (IDLE); UINT64_MAX in SAVE. */
uint64_t pk_trig_dev_next_deadline(const pk_trig_dev_t *d);

/*
 * Handles a datagram. PK_OK: accepted, msg filled, state SAVE (see above).
 * Otherwise nothing changes and the datagram is dropped:
 *   PK_ERR_STATE      no poll outstanding
 *   PK_ERR_MALFORMED  wrong size, version, type or content
 *   PK_ERR_AUTH       tag mismatch (SIG != XSIG), or not for our UID/key
 *   PK_ERR_REPLAY     Sent outside 1..Resend_Counter+1
 *   PK_ERR_CRYPTO     local crypto failure
 */
int pk_trig_dev_input(pk_trig_dev_t *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                      pk_trig_dev_msg_t *msg);

/*
 * Reusable crypto contexts for pk_trig_dev_input_cx (a gateway or load
 * generator running many devices: no context set-up per response). Zero-
 * initialise; caller-owned; pk_trig_cx_clear wipes and frees (again: fine).
 */
typedef struct pk_trig_cx {
    pk_aead_t aead;
    pk_kdf_t kdf;
} pk_trig_cx_t;
void pk_trig_cx_clear(pk_trig_cx_t *cx);

/* As pk_trig_dev_input, on the caller's contexts (re-keyed with the device's key). */
int pk_trig_dev_input_cx(pk_trig_dev_t *d, const uint8_t *buf, size_t len, uint64_t now_ms,
                         pk_trig_dev_msg_t *msg, pk_trig_cx_t *cx);

/* The new identity is durable: SAVE -> IDLE, next poll one interval later. */
int pk_trig_dev_saved(pk_trig_dev_t *d, uint64_t now_ms);

/* Wipes the context. */
void pk_trig_dev_clear(pk_trig_dev_t *d);

#endif
