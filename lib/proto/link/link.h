/*
 * The direct link core: pk_link_* initiator and responder state machines.
 * Pure: time (now_ms) and randomness (pk_rng_t) come in; output goes to a
 * caller-owned pk_out_t; the root key comes from a caller-supplied lookup.
 *
 *   initiator                                   responder
 *   IDLE --connect--> DCR(KSI, Nonce_1, sid MSB, caps)   --> IDLE
 *   WAIT_SMC                                      lookup(KSI, initiator) = K_D
 *                                                 K_D-sess, PEK, PIK
 *        <-- SMC(Nonce_2, sid LSB, alg, MAC_PIK)  WAIT_COMPLETE
 *   verify MAC
 *   SMCOMPLETE(MAC_PIK) -->                       verify MAC
 *   ESTABLISHED                                   ESTABLISHED
 *   <========= DATA records (pk_record, per-direction keys) ==========>
 *
 * Key derivations (TS 33.220 KDF; 128-bit keys = last 16 bytes):
 *   K_D-sess = KDF(K_D,      0x7F, Nonce_1(16), Nonce_2(16))        TS 33.536
 *   PEK      = KDF(K_D-sess, 0x7E, 0x00, alg)[16..32)                TS 33.536
 *   PIK      = KDF(K_D-sess, 0x7E, 0x01, alg)[16..32)                TS 33.536
 *   rec i->r = KDF(PEK,      0xE6, 0x00)   key = last 16, salt = first 4
 *   rec r->i = KDF(PEK,      0xE6, 0x01)
 *
 * State x message (anything else: PK_ERR_STATE, no change):
 *   | state          | DCR                   | SMC            | SMCOMPLETE | DATA            |
 *   | R IDLE         | -> WAIT_COMPLETE, SMC |                |            |                 |
 *   | R WAIT_COMPLETE| same bytes: SMC again |                | -> ESTAB.  | valid -> ESTAB. |
 *   |                | other: STATE          |                |            |                 |
 *   | R ESTABLISHED  | same bytes: REPLAY    |                | REPLAY     | deliver         |
 *   | I WAIT_SMC     |                       | -> ESTAB, CMPL |            |                 |
 *   | I ESTABLISHED  |                       | REPLAY         |            | deliver         |
 */
#ifndef PK_PROTO_LINK_LINK_H
#define PK_PROTO_LINK_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/out.h"
#include "core/record.h"
#include "proto/link/messages.h"

/*
 * Root-key lookup: fills k_d with the root key KSI ksi shared with peer
 * (peer_len bytes of id). PK_OK, or any error (the link then refuses:
 * "unknown KSI"). For devices registered with proxkey this is
 * pk_reg_dev_lookup() with ctx = the pk_reg_dev_t.
 */
typedef int (*pk_link_lookup_fn)(void *ctx, uint32_t ksi, const uint8_t *peer, size_t peer_len,
                                 uint8_t k_d[PK_LINK_KD_LEN]);

enum pk_link_role { PK_LINK_INITIATOR = 0, PK_LINK_RESPONDER = 1 };

enum pk_link_state {
    PK_LINK_S_IDLE = 0,
    PK_LINK_S_WAIT_SMC = 1,      /* initiator: DCR sent */
    PK_LINK_S_WAIT_COMPLETE = 2, /* responder: SMC sent */
    PK_LINK_S_ESTABLISHED = 3,
    PK_LINK_S_FAILED = 4,
};

enum pk_link_event {
    PK_LINK_EV_ESTABLISHED = 1, /* keys in place; dest = session id */
    PK_LINK_EV_DATA = 2,        /* data = a received plaintext */
    PK_LINK_EV_FAILED = 3,      /* handshake retries exhausted */
};

typedef struct pk_link_cfg {
    const uint8_t *self_id; /* 1..64 bytes; copied */
    size_t self_len;
    pk_link_lookup_fn lookup;
    void *lookup_ctx;   /* borrowed for the link's life */
    uint64_t rto_ms;    /* DCR/SMC retransmission timeout, doubled per try */
    unsigned max_tries; /* 1..16 */
} pk_link_cfg_t;

typedef struct pk_link {
    uint8_t state, role;
    uint8_t self_len, peer_len;
    uint8_t self_id[PK_LINK_ID_MAX], peer_id[PK_LINK_ID_MAX];
    pk_link_lookup_fn lookup;
    void *lookup_ctx;
    uint64_t rto_ms;
    unsigned max_tries, tries;
    uint64_t deadline;
    uint32_t ksi;
    uint16_t sid;
    uint8_t caps, alg;
    uint8_t nonce1[PK_LINK_NONCE_LEN], nonce2[PK_LINK_NONCE_LEN];
    uint8_t pik[PK_LINK_KEY_LEN];
    uint8_t dcr[PK_LINK_DCR_MAX];
    size_t dcrlen;
    uint8_t smc[PK_LINK_SMC_LEN]; /* received (initiator) or sent (responder) */
    pk_record_t rec;
} pk_link_t;

/* Sets up l (state IDLE) in the given role. PK_ERR_INVAL for a bad cfg. */
int pk_link_init(pk_link_t *l, const pk_link_cfg_t *cfg, int role);

/* Initiator: sends the DCR for peer with root key ksi (dest 0 = the peer).
 * PK_ERR_STATE unless an IDLE initiator; PK_ERR_NOTFOUND when the lookup has
 * no such key (nothing sent). */
int pk_link_connect(pk_link_t *l, const uint8_t *peer, size_t peer_len, uint32_t ksi,
                    const pk_rng_t *rng, uint64_t now_ms, pk_out_t *out);

/*
 * One datagram from the peer (see the table above). On PK_OK out may hold a
 * SEND (SMC, SMCOMPLETE) and/or EVENTs (ESTABLISHED, DATA).
 * Hostile input, no state change and nothing sent: PK_ERR_MALFORMED,
 * PK_ERR_VERSION, PK_ERR_NOTFOUND (unknown KSI, not addressed to us),
 * PK_ERR_DENIED (no common suite), PK_ERR_AUTH (MAC, record tag),
 * PK_ERR_REPLAY, PK_ERR_STATE. Local: PK_ERR_SPACE, PK_ERR_CRYPTO.
 */
int pk_link_input(pk_link_t *l, const uint8_t *msg, size_t len, const pk_rng_t *rng,
                  uint64_t now_ms, pk_out_t *out);

/* Seals pt as one DATA record (SEND, dest 0). PK_ERR_STATE unless
 * ESTABLISHED; PK_ERR_INVAL over PK_LINK_DATA_PT_MAX. */
int pk_link_send(pk_link_t *l, const uint8_t *pt, size_t len, pk_out_t *out);

/* Retransmits the DCR (initiator) / expires WAIT_COMPLETE (responder). */
int pk_link_timeout(pk_link_t *l, uint64_t now_ms, pk_out_t *out);
uint64_t pk_link_next_deadline(const pk_link_t *l); /* UINT64_MAX: none */

static inline int pk_link_state(const pk_link_t *l)
{
    return l->state;
}
static inline uint16_t pk_link_session_id(const pk_link_t *l)
{
    return l->sid;
}

/* Wipes keys, transcript and state. */
void pk_link_clear(pk_link_t *l);

/*
 * The derivations above, exposed for known-answer tests: from K_D and the
 * nonces, K_D-sess, PEK and PIK (any output may be NULL) for suite alg.
 */
int pk_link_derive(const uint8_t k_d[PK_LINK_KD_LEN], const uint8_t nonce1[PK_LINK_NONCE_LEN],
                   const uint8_t nonce2[PK_LINK_NONCE_LEN], uint8_t alg,
                   uint8_t k_sess[PK_LINK_KD_LEN], uint8_t pek[PK_LINK_KEY_LEN],
                   uint8_t pik[PK_LINK_KEY_LEN]);

/*
 * The session keys of link l (its KSI, peer and Nonce_1, looked up through
 * its callback) with nonce2, session id sid and algorithm alg: PIK into pik,
 * and rec (zeroed) set up with the per-direction record keys KDF(PEK, FC 0xE6,
 * 0x00 initiator->responder / 0x01 back) for l's role. For the handshake and
 * for restoring a saved link. PK_OK; PK_ERR_NOTFOUND (no key for the KSI);
 * PK_ERR_CRYPTO. On failure pik is wiped.
 */
int pk_link_session_keys(const pk_link_t *l, const uint8_t nonce2[PK_LINK_NONCE_LEN], uint16_t sid,
                         uint8_t alg, uint8_t pik[PK_LINK_KEY_LEN], pk_record_t *rec);

#endif
