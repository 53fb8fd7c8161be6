/*
 * libproxkey-device: the embeddable device side of proxkey.
 *
 * One static library (proxkey-device) holding the device cores and nothing
 * else; it needs only libcrypto (OpenSSL 3). Include this header to get the
 * whole API surface:
 *
 *   registration  proto/reg/reg.h      pk_reg_dev_*: REQUEST -> CHALLENGE (AUTN
 *                                      checked in constant time before any
 *                                      answer) -> RESPONSE -> ACCEPT (temp ID +
 *                                      key set; a set of more than 32 keys
 *                                      follows in KEYS pages, into the key
 *                                      store the caller gives pk_reg_dev_init:
 *                                      cfg.keys, cfg.nkeys); option-2 LINK_REQ and the
 *                                      node's KSI indications; pk_reg_dev_lookup
 *                                      is the root-key lookup for the link.
 *   direct link   proto/link/link.h    pk_link_*: DCR -> SMC -> SMCOMPLETE
 *                                      (TS 33.536 shape, FC 0x7F/0x7E), then
 *                                      DATA records (core/record.h).
 *   master keys   proto/mk/mk.h        pk_mk_client_*: client-to-client
 *                 proto/mk/table.h     authentication, individual-key table.
 *   trigger       proto/trigger/dev.h  pk_trig_dev_*: polls to the gts.
 *   this file     pk_device_*          export/import of a registration and
 *                                      of an established link, so a device
 *                                      can sleep, restart or hand its state
 *                                      to another process and resume.
 *
 * ---- contract (every function of the library) -----------------------------
 *
 *  - No I/O: no sockets, files, clocks or logging. Time comes in as now_ms,
 *    randomness through a pk_rng_t, datagrams as byte buffers; what to send
 *    comes out in a caller-owned pk_out_t (core/out.h).
 *  - No heap of its own: every context (pk_reg_dev_t, pk_link_t,
 *    pk_mk_client_t, pk_trig_dev_t, pk_record_t) and every buffer is owned by
 *    the caller; the library keeps pointers only where a header says
 *    "borrowed". The only allocations are OpenSSL's own, inside EVP context
 *    set-up (pk_crypto_init, pk_record_init, pk_hmac_init); tests/device
 *    checks that no object of the library references malloc/free or any I/O
 *    symbol, and (non-sanitised builds) counts heap calls made from library
 *    code during a registration and a link: zero.
 *  - No globals except the algorithm handles pk_crypto_init() fetches once.
 *    Not thread-safe per context: serialise calls on one context.
 *  - Secrets are wiped on every path (pk_wipe), compared with pk_ct_eq, and
 *    never written anywhere but the caller's buffers. Hostile input returns
 *    a PK_ERR_* input code and changes no state (core/err.h).
 */
#ifndef PK_DEVICE_DEVICE_H
#define PK_DEVICE_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/err.h"
#include "core/out.h"
#include "core/record.h"
#include "proto/link/link.h"
#include "proto/mk/mk.h"
#include "proto/mk/table.h"
#include "proto/reg/reg.h"
#include "proto/trigger/dev.h"

#define PK_DEVICE_VERSION "0.1.0"

const char *pk_device_version(void);

/* ---- registration state ---------------------------------------------------
 *
 * Layout (all integers big-endian):
 *   "PKDR" ver(1) block8(device id) block8(node id) K_reg(32)
 *   chan: session_id(2) tx_next(8) rx_top(8) rx_bitmap(16 x 8)
 *   block8(temp id) keys
 *   n_ind(1) n_ind x { slot(1) role(1) KSI(4) param(16) block8(peer) } (slots ascending)
 *   ind_next(1)
 *   [master-key block, as in ACCEPT: present when the device is in a domain]
 * keys, version 1: the keyset as in ACCEPT without paging (mode count(1)
 *   entries, count <= 32); written whenever the table has at most 32 keys
 *   and none is missing, so such blobs stay byte-identical to older ones.
 * keys, version 2: mode(1) count(2) entries missing(2) - any number of
 *   entries (<= PK_REG_PEERS_MAX; mode pairs: peers strictly ascending) and
 *   the keys of the set the store had no room for.
 * Import reads both. It holds secrets (K_reg, root keys): store it like a
 * key. It does not hold the device key K, which the caller keeps and passes
 * in at import.
 */
#define PK_DEVICE_REG_STATE_LEN(nkeys)                                                             \
    (5 + 2 * (1 + PK_REG_ID_MAX) + PK_REG_KREG_LEN + 2 + 8 + 8 + 8 * PK_RECORD_WINDOW_WORDS +      \
     (1 + PK_REG_ID_MAX) + 1 + 2 + (size_t)(nkeys)*PK_REG_KEY_ENTRY_MAX + 2 +                      \
     PK_REG_MAX_IND * (1 + 1 + 4 + PK_REG_PARAM_LEN + 1 + PK_REG_ID_MAX) + 1 + 1 +                 \
     PK_REG_MKSET_MAX)
/* Enough for any device (PK_REG_PEERS_MAX keys, about 105 KB); a device
 * whose store holds n keys needs only PK_DEVICE_REG_STATE_LEN(n). */
#define PK_DEVICE_REG_STATE_MAX PK_DEVICE_REG_STATE_LEN(PK_REG_PEERS_MAX)

/*
 * Writes the state of a REGISTERED device d into buf[0..cap) and sets *len.
 * The channel's tx counter is written as it is now: a caller that persists
 * the state must do so AFTER sealing and BEFORE sending what it sealed, so a
 * counter is never reused after a restart.
 * Returns PK_OK; PK_ERR_STATE (not registered); PK_ERR_SPACE (cap short;
 * buf is then wiped). The caller wipes buf when done.
 */
int pk_device_reg_export(const pk_reg_dev_t *d, uint8_t *buf, size_t cap, size_t *len);

/*
 * d must be zeroed or cleared (pk_reg_dev_clear): a live channel would leak.
 * Sets d up from cfg (as pk_reg_dev_init, with cfg's key store) and restores
 * the registration in buf[0..len): state REGISTERED, the protected channel
 * to the node with its counters and replay window, temp ID, keys (into the
 * store) and indications.
 * Returns PK_OK; PK_ERR_INVAL (bad cfg, or the state names another device
 * or node than cfg); PK_ERR_MALFORMED / PK_ERR_VERSION (buf does not parse);
 * PK_ERR_SPACE (the blob holds more keys than cfg's store); PK_ERR_CRYPTO.
 * On failure d is cleared (pk_reg_dev_clear, which wipes the store).
 */
int pk_device_reg_import(pk_reg_dev_t *d, const pk_reg_dev_cfg_t *cfg, const uint8_t *buf,
                         size_t len);

/*
 * The KSI to open a link to peer with: option 1, the pair key's KSI;
 * option 2, the KSI of the node's indication naming this device initiator
 * for peer. PK_OK or PK_ERR_NOTFOUND (no such peer / no indication yet).
 */
int pk_device_link_ksi(const pk_reg_dev_t *d, const pk_reg_id_t *peer, uint32_t *ksi);

/* ---- established direct links ----------------------------------------------
 *
 * Layout (version 1):
 *   "PKDL" ver(1)=1 role(1) block8(self id) block8(peer id) KSI(4) sid(2)
 *   alg(1) caps(1) Nonce_1(16) Nonce_2(16) tx_next(8) rx_top(8) rx_bitmap(16 x 8)
 * No key material: at import the keys are derived again from the root key
 * (found through cfg->lookup with the KSI and peer) and the two nonces, so a
 * link can be resumed only by a device that still holds its root key.
 */
#define PK_DEVICE_LINK_STATE_MAX                                                                   \
    (6 + 2 * (1 + PK_LINK_ID_MAX) + 4 + 2 + 2 + 2 * PK_LINK_NONCE_LEN + 8 + 8 +                    \
     8 * PK_RECORD_WINDOW_WORDS)

/* Writes an ESTABLISHED link. PK_OK, PK_ERR_STATE, PK_ERR_SPACE. Persist it
 * after pk_link_send() and before sending the record it made (see above). */
int pk_device_link_export(const pk_link_t *l, uint8_t *buf, size_t cap, size_t *len);

/*
 * l must be zeroed or cleared (pk_link_clear).
 * Sets l up from cfg (self id, lookup, timers; the role comes from buf) and
 * restores an ESTABLISHED link: the record keys are derived again, counters
 * and replay window restored. PK_OK; PK_ERR_INVAL (cfg, or cfg's self id is
 * not the link's); PK_ERR_MALFORMED / PK_ERR_VERSION; PK_ERR_NOTFOUND (the
 * lookup has no root key for the KSI and peer); PK_ERR_CRYPTO. On failure l
 * is cleared.
 */
int pk_device_link_import(pk_link_t *l, const pk_link_cfg_t *cfg, const uint8_t *buf, size_t len);

/* The peer id of an exported link without importing it (borrowed pointer
 * into buf). PK_OK or PK_ERR_MALFORMED. */
int pk_device_link_peek(const uint8_t *buf, size_t len, int *role, const uint8_t **peer,
                        size_t *peer_len);

#endif
