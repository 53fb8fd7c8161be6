/*
 * The record layer: AES-128-GCM records with per-direction keys, counters and
 * a sliding replay window. It protects device<->node traffic after
 * registration (keys from FC 0xE3, PK_FC_REG_MSG) and device<->device traffic
 * on a direct link (keys from FC 0xE6, PK_FC_LINK_REC), and any other
 * datagram channel whose two ends share per-direction keys.
 *
 * Pure: no I/O, no clock, no randomness, no allocation beyond the two
 * pk_aead_t contexts (OpenSSL cipher contexts). Not thread-safe: the caller
 * serialises calls on one pk_record_t (a tx-only and an rx-only record may be
 * used from two threads).
 *
 * ---- Wire format (all integers big-endian) ---------------------------------
 *
 *     0        1                 3        4                                12
 *     +--------+--------+--------+--------+--------+-- ... --+--------+
 *     | type   |   session id    | epoch  |      counter (8 bytes)      |
 *     +--------+--------+--------+--------+--------+-- ... --+--------+
 *     | ciphertext (0 .. PK_RECORD_MAX_PLAINTEXT bytes)                |
 *     +----------------------------------------------------------------+
 *     | tag (16 bytes)                                                 |
 *     +----------------------------------------------------------------+
 *
 *   type        1 byte, chosen by the protocol above (opaque to this layer,
 *               but authenticated: a record cannot change type in flight).
 *   session id  2 bytes identifying the key context at the receiver: the
 *               TS 33.536 16-bit PC5 session ID on a direct link, the
 *               registration context ID on device<->node traffic. Receivers
 *               demultiplex on it with pk_record_peek() before opening.
 *   epoch       1 byte key identifier; a rekey moves to a new pk_record_t with
 *               the next epoch, so old and new keys can coexist briefly.
 *   counter     8 bytes, per direction, 1 .. 2^64-2; 0 and 2^64-1 never
 *               appear on the wire.
 *   tag         the GCM tag over the header (associated data) and ciphertext.
 *
 *   A record is PK_RECORD_OVERHEAD (28) bytes longer than its plaintext and at
 *   most PK_RECORD_MAX_LEN (65535) bytes in all, so it fits one UDP datagram
 *   or one u16-length-prefixed frame. The record length is the datagram
 *   (or frame) length: there is no length field of its own.
 *
 *   AEAD       AES-128-GCM, 16-byte tag.
 *   key        per direction: tx_key seals, rx_key opens; the peer's tx_key
 *              is our rx_key.
 *   nonce      salt (4 bytes, per direction and per key) || counter (8 bytes,
 *              big-endian), 12 bytes in all, no XOR. Each direction has its own
 *              key and salt, and a counter is used once per direction, so no
 *              (key, nonce) pair ever repeats. pk_record_init() refuses a
 *              context whose tx and rx key AND salt are equal, which would let
 *              a reflected record open.
 *   AAD        the 12-byte header exactly as sent.
 *
 * Key and salt come from one 32-byte TS 33.220 KDF output per direction (FC
 * 0xE3 or 0xE6, direction byte 0x00 / 0x01): AES-128 key = the last 16 bytes,
 * salt = the first 4 bytes (pk_record_split_okm() does that split).
 *
 * ---- Sender -----------------------------------------------------------------
 *
 * The tx counter starts at 1 and increases by one per sealed record. It never
 * wraps: when the next counter would be 2^64-1, pk_record_seal() returns
 * PK_ERR_LIMIT and the caller must rekey. Callers should rekey long before
 * that, at their own data-volume limit for AES-GCM (RFC 9001 §6.6 suggests
 * 2^23 full-size records per key for AES-128-GCM confidentiality), using the
 * tx counter from pk_record_tx_next().
 *
 * ---- Receiver ---------------------------------------------------------------
 *
 * Sliding window of PK_RECORD_REPLAY_WINDOW (960) counters below the highest
 * authenticated counter, kept in a 1024-bit ring bitmap (RFC 6479, as
 * WireGuard): a counter above the highest is new; one within the window and
 * not yet seen is accepted out of order; one already seen or older than the
 * window is PK_ERR_REPLAY. Cheap checks run first (length, session id, epoch,
 * counter range, replay) so most garbage costs no AES work. The window is
 * updated ONLY after the tag verified: unauthenticated input changes no state
 * at all, so a forged record with a huge counter cannot push the window past
 * the legitimate traffic. Callers count PK_ERR_AUTH drops per key and rekey
 * (or drop the peer) when they exceed their integrity limit.
 */
#ifndef PK_CORE_RECORD_H
#define PK_CORE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"

#define PK_RECORD_HEADER_LEN    12 /* type(1) session id(2) epoch(1) counter(8) */
#define PK_RECORD_TAG_LEN       16
#define PK_RECORD_OVERHEAD      (PK_RECORD_HEADER_LEN + PK_RECORD_TAG_LEN) /* 28 */
#define PK_RECORD_MAX_LEN       65535
#define PK_RECORD_MAX_PLAINTEXT (PK_RECORD_MAX_LEN - PK_RECORD_OVERHEAD) /* 65507 */
#define PK_RECORD_KEY_LEN       16
#define PK_RECORD_SALT_LEN      4
#define PK_RECORD_COUNTER_FIRST 1
#define PK_RECORD_COUNTER_LIMIT UINT64_MAX /* never sealed nor accepted */

/* Replay window: a ring of 1024 bits; any counter within the 960 below the
 * highest accepted one is guaranteed to be tracked (one word is the slack the
 * ring needs to slide). */
#define PK_RECORD_WINDOW_WORDS  16
#define PK_RECORD_WINDOW_BITS   (PK_RECORD_WINDOW_WORDS * 64)
#define PK_RECORD_REPLAY_WINDOW (PK_RECORD_WINDOW_BITS - 64) /* 960 */

/* Record length for a plaintext of ptlen bytes (ptlen <= PK_RECORD_MAX_PLAINTEXT). */
#define PK_RECORD_LEN(ptlen) ((size_t)(ptlen) + PK_RECORD_OVERHEAD)

/* A parsed, NOT authenticated, record header. */
typedef struct pk_record_hdr {
    uint8_t type;
    uint16_t session_id;
    uint8_t epoch;
    uint64_t counter;
} pk_record_hdr_t;

/*
 * One record context: both directions of one key epoch of one session.
 * Zero-initialise it (or pk_record_clear() it) before pk_record_init().
 * Members are private; use the functions below.
 */
typedef struct pk_record {
    pk_aead_t rc_tx, rc_rx; /* key set, or zeroed when absent */
    uint8_t rc_tx_salt[PK_RECORD_SALT_LEN];
    uint8_t rc_rx_salt[PK_RECORD_SALT_LEN];
    uint64_t rc_tx_next; /* next counter to seal */
    uint64_t rc_rx_top;  /* highest authenticated counter, 0: none */
    uint64_t rc_rx_bitmap[PK_RECORD_WINDOW_WORDS];
    uint16_t rc_session_id;
    uint8_t rc_epoch;
    uint8_t rc_has_tx, rc_has_rx;
} pk_record_t;

/*
 * Sets up r for session_id and epoch with the sealing key and salt (tx) and
 * the opening key and salt (rx), copied into r (the caller may wipe its own
 * copies afterwards). Either direction may be NULL (key and salt both) for a
 * send-only or receive-only context, e.g. one-way group traffic; not both.
 *
 * r must be zero-initialised or cleared; on failure r is left cleared.
 * Returns PK_OK; PK_ERR_INVAL when both directions are absent, only one of a
 * key/salt pair is given, or tx and rx share both key and salt (reflection);
 * PK_ERR_CRYPTO / PK_ERR_NOMEM from the cipher setup.
 */
int pk_record_init(pk_record_t *r, uint16_t session_id, uint8_t epoch,
                   const uint8_t tx_key[PK_RECORD_KEY_LEN],
                   const uint8_t tx_salt[PK_RECORD_SALT_LEN],
                   const uint8_t rx_key[PK_RECORD_KEY_LEN],
                   const uint8_t rx_salt[PK_RECORD_SALT_LEN]);

/* Wipes keys, salts, counters and window and frees the cipher contexts.
 * Safe on a zero-initialised or already cleared record. */
void pk_record_clear(pk_record_t *r);

/*
 * Seals ptlen bytes of pt as one record of the given type into out[0..cap)
 * and sets *outlen to PK_RECORD_LEN(ptlen).
 *
 * In place: pt may be exactly out + PK_RECORD_HEADER_LEN (build the plaintext
 * where the ciphertext goes), otherwise pt and out must not overlap. pt may be
 * NULL when ptlen is 0.
 *
 * Returns PK_OK (the tx counter advanced);
 *   PK_ERR_LIMIT   the counter is exhausted: rekey (no output, no state change);
 *   PK_ERR_SPACE   cap < PK_RECORD_LEN(ptlen) (no state change);
 *   PK_ERR_INVAL   ptlen > PK_RECORD_MAX_PLAINTEXT, bad overlap, NULL
 *                  arguments, or r has no tx direction (no state change);
 *   PK_ERR_CRYPTO  the cipher failed: out[0..cap) is wiped and the counter is
 *                  burnt anyway, so a nonce is never used twice.
 */
int pk_record_seal(pk_record_t *r, uint8_t type, const uint8_t *pt, size_t ptlen, uint8_t *out,
                   size_t cap, size_t *outlen);

/*
 * Verifies and decrypts the record in[0..inlen) into pt_out[0..cap); sets
 * *type and *ptlen (inlen - PK_RECORD_OVERHEAD) on success, and both to 0 on
 * any failure. The whole datagram must be exactly one record.
 *
 * In place: pt_out may be exactly in + PK_RECORD_HEADER_LEN (then in must be
 * writable, and on PK_ERR_AUTH its ciphertext is wiped); otherwise pt_out and
 * in must not overlap. On any failure no plaintext is left in pt_out.
 *
 * Hostile-input errors (drop the record, count it; r is unchanged):
 *   PK_ERR_MALFORMED  shorter than PK_RECORD_OVERHEAD, longer than
 *                     PK_RECORD_MAX_LEN, or counter 0 or 2^64-1;
 *   PK_ERR_STATE      session id or epoch is not r's (demultiplex first);
 *   PK_ERR_REPLAY     counter already accepted or older than the window;
 *   PK_ERR_AUTH       the tag does not verify (forged, corrupted, wrong key).
 * Local errors (r unchanged):
 *   PK_ERR_SPACE      cap < inlen - PK_RECORD_OVERHEAD;
 *   PK_ERR_INVAL      NULL arguments, bad overlap, or r has no rx direction;
 *   PK_ERR_CRYPTO     the cipher failed.
 * On PK_OK the counter is marked seen (and becomes the top if it is highest).
 */
int pk_record_open(pk_record_t *r, const uint8_t *in, size_t inlen, uint8_t *type, uint8_t *pt_out,
                   size_t cap, size_t *ptlen) PK_MUST_CHECK;

/*
 * Parses the header of in[0..inlen) without decrypting, for demultiplexing by
 * session id and epoch. Nothing in *hdr is authenticated yet. Returns PK_OK or
 * PK_ERR_MALFORMED (length outside [PK_RECORD_OVERHEAD, PK_RECORD_MAX_LEN]
 * or counter 0 / 2^64-1); *hdr is zeroed on failure.
 */
int pk_record_peek(const uint8_t *in, size_t inlen, pk_record_hdr_t *hdr) PK_MUST_CHECK;

/* Splits a 32-byte KDF output (FC 0xE3 / 0xE6) into the AES-128 key (its last
 * 16 bytes) and the nonce salt (its first 4 bytes). */
void pk_record_split_okm(const uint8_t okm[32], uint8_t key[PK_RECORD_KEY_LEN],
                         uint8_t salt[PK_RECORD_SALT_LEN]);

/* The counter the next pk_record_seal() will use (PK_RECORD_COUNTER_LIMIT
 * when exhausted), for the caller's rekey policy. */
static inline uint64_t pk_record_tx_next(const pk_record_t *r)
{
    return r->rc_tx_next;
}

/*
 * Moves the tx counter forward to next, e.g. when resuming a context whose
 * counter was persisted across a sleep or restart (persist ahead, resume from
 * the persisted value, so no counter is ever sealed twice). It never moves
 * backwards. Returns PK_OK, or PK_ERR_INVAL when next is below the current
 * counter or above PK_RECORD_COUNTER_LIMIT (r unchanged).
 */
int pk_record_set_tx_next(pk_record_t *r, uint64_t next);

/* The highest authenticated counter received so far (0 before the first). */
static inline uint64_t pk_record_rx_top(const pk_record_t *r)
{
    return r->rc_rx_top;
}

/*
 * ---- Saving and restoring the receive window ------------------------------
 *
 * A receiver that restarts, or that drops a context and sets it up again
 * later (a cache of contexts), must not accept a record it accepted before:
 * it saves the window after each record it accepts and restores it into the
 * new context before opening anything. The saved form is
 * PK_RECORD_RX_STATE_LEN bytes, big-endian:
 *
 *     top(8)  the highest accepted counter (0: none yet)
 *     ring(16 x 8)  the 1024-bit ring, word 0 first
 *
 * No key, salt or tx counter is in it (persist the tx counter separately,
 * see pk_record_set_tx_next()).
 */
#define PK_RECORD_RX_STATE_LEN (8 + 8 * PK_RECORD_WINDOW_WORDS) /* 136 */

/* Writes r's receive window into out. PK_OK; PK_ERR_INVAL (r NULL or without
 * an rx direction; out untouched). */
int pk_record_rx_export(const pk_record_t *r, uint8_t out[static PK_RECORD_RX_STATE_LEN]);

/*
 * Checks that in is a window pk_record_rx_export() can have written: top below
 * 2^64-1, and no bit set for a counter above top or below 1 (e.g. a ring of
 * a window that never passed counter 1023 has its later words clear).
 * PK_OK or PK_ERR_MALFORMED. Pure; for parsers of files holding windows.
 */
int pk_record_rx_check(const uint8_t in[static PK_RECORD_RX_STATE_LEN]) PK_MUST_CHECK;

/*
 * Replaces r's receive window by the saved one in (checked as above); keys,
 * session, epoch and tx counter are untouched. Import only a window saved
 * from a context of the same rx key: an older one would accept again the
 * records accepted since it was saved (this is also how a caller rolls the
 * window back when it could not make an acceptance durable).
 * PK_OK; PK_ERR_INVAL (r NULL or without an rx direction); PK_ERR_MALFORMED
 * (r unchanged).
 */
int pk_record_rx_import(pk_record_t *r,
                        const uint8_t in[static PK_RECORD_RX_STATE_LEN]) PK_MUST_CHECK;

static inline uint16_t pk_record_session_id(const pk_record_t *r)
{
    return r->rc_session_id;
}
static inline uint8_t pk_record_epoch(const pk_record_t *r)
{
    return r->rc_epoch;
}

#endif
