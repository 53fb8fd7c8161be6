/*
 * The individual-key table of one client (Toshiba Table 1): key ID, key value,
 * expiry, key-sharing partner. Pure and embeddable: a fixed-capacity array
 * owned by the caller, no allocation, no I/O, no clock (now_ms comes in).
 *
 * Semantics (docs/protocol.md, "Master keys and individual keys" §5):
 *  - expiry of every key <= the expiry of the master key it was made under;
 *    pk_mk_table_add() clamps it and refuses keys already expired;
 *  - key IDs are unique in a table, and so are their low 16 bits (the record
 *    layer's session ID for client traffic, so a receiver demultiplexes on it);
 *  - several keys per partner may coexist: the newest is the partner's
 *    current key (used to send); adding a newer key supersedes the older ones,
 *    whose expiry is cut to now + grace (they still open in-flight traffic);
 *  - pk_mk_table_tick() removes (and wipes) expired keys and reports the
 *    partners whose current key needs renewal: within the lead time of its
 *    expiry, or made under a master key that has since been replaced
 *    (FIG. 8). A reported partner is not reported again before retry_ms.
 *  - pk_mk_table_set_master() marks every key made under another MK for
 *    re-authentication but keeps it until it expires: a partner that cannot be
 *    reached keeps its old key until then.
 *  - a PENDING key (the initiator's, from END1 until it learns the responder
 *    stored it) is never current and supersedes nothing; find() and
 *    find_sid() return it so the partner's records under it open, and
 *    pk_mk_table_confirm() (on END2, or on the first record from the partner
 *    under it) makes it current. A partner has at most one pending key: a
 *    newer one replaces it. Unconfirmed by its next_try, it is reported for
 *    renewal (PK_MK_RENEW_UNCONFIRMED) so the exchange is run again.
 */
#ifndef PK_PROTO_MK_TABLE_H
#define PK_PROTO_MK_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "proto/mk/messages.h"

enum pk_mk_role {
    PK_MK_ROLE_INITIATOR = 1, /* we sent START for the exchange that made the key */
    PK_MK_ROLE_RESPONDER = 2,
};

/* Entry flags. */
#define PK_MK_E_USED       0x01 /* slot holds a key */
#define PK_MK_E_SUPERSEDED 0x02 /* a newer key for the same partner exists */
#define PK_MK_E_PENDING    0x04 /* not yet known to be held by the partner (see above) */

/* One row. Members are readable; change them only through the functions. */
typedef struct pk_mk_entry {
    uint32_t key_id;
    uint8_t key[PK_MK_IK_LEN];
    uint64_t expiry_ms; /* absolute, ms since the Unix epoch */
    uint64_t created_ms;
    uint64_t next_try_ms; /* renewal is not reported before this */
    uint32_t mk_id;       /* master key it was made under */
    uint8_t partner[PK_MK_ID_MAX];
    uint8_t partner_len;
    uint8_t role;  /* enum pk_mk_role */
    uint8_t flags; /* PK_MK_E_* */
} pk_mk_entry_t;

typedef struct pk_mk_table {
    pk_mk_entry_t *e; /* caller-owned array of cap entries (borrowed) */
    size_t cap;
    uint64_t renew_lead_ms; /* renew this long before expiry */
    uint64_t retry_ms;      /* do not report a partner again within this */
    uint64_t grace_ms;      /* a superseded key lives at most this long more */
    uint32_t mk_id;         /* current master key, for clamping and FIG. 8 */
    uint64_t mk_expiry_ms;
    uint8_t has_mk;
} pk_mk_table_t;

/* Why a partner needs a new key. */
enum pk_mk_renew_reason {
    PK_MK_RENEW_LEAD = 1,        /* its current key expires within the lead time */
    PK_MK_RENEW_MASTER = 2,      /* its current key was made under a replaced MK */
    PK_MK_RENEW_UNCONFIRMED = 3, /* its pending key was never confirmed (lost END2):
                                    the exchange is run again */
};

typedef struct pk_mk_renew {
    uint8_t partner[PK_MK_ID_MAX];
    uint8_t partner_len;
    uint8_t reason;  /* enum pk_mk_renew_reason */
    uint32_t key_id; /* the key to be replaced (the pending one for UNCONFIRMED) */
} pk_mk_renew_t;

/*
 * Sets the table up over entries[0..cap) (borrowed for the table's life;
 * zeroed here). Returns PK_OK or PK_ERR_INVAL (NULL, cap 0).
 */
int pk_mk_table_init(pk_mk_table_t *t, pk_mk_entry_t *entries, size_t cap, uint64_t renew_lead_ms,
                     uint64_t retry_ms, uint64_t grace_ms);

/* Wipes every key and forgets the master key. */
void pk_mk_table_clear(pk_mk_table_t *t);

/*
 * Records the current master key (ID and expiry) and marks every key made
 * under another MK for renewal (FIG. 8). No key is removed. Its next_try is
 * reset so the next tick reports the partners at once.
 */
void pk_mk_table_set_master(pk_mk_table_t *t, uint32_t mk_id, uint64_t mk_expiry_ms);

/*
 * Copies key into the table: key_id (non-zero), key, expiry_ms, mk_id,
 * partner, role are read from *in; of in->flags only PK_MK_E_PENDING is read;
 * created and next_try are set here, except that a pending key is first
 * reported unconfirmed by tick() at in->next_try_ms (the core passes its END2
 * deadline). The expiry is clamped to the current MK's.
 * A key that is not pending makes every other key of the partner (pending or
 * not) superseded, its expiry cut to now + grace. A pending key supersedes
 * nothing; it drops and wipes the partner's older pending key, if any.
 * When the table is full, expired entries are dropped first.
 *
 * Returns PK_OK;
 *   PK_ERR_INVAL    bad argument (key_id 0, partner length, role);
 *   PK_ERR_STATE    no master key set, or in->mk_id is not the current MK;
 *   PK_ERR_EXPIRED  the (clamped) expiry is not after now;
 *   PK_ERR_EXISTS   the key ID, or its low 16 bits, is already in the table;
 *   PK_ERR_LIMIT    the table is full of live keys.
 * On any error the table is unchanged.
 */
int pk_mk_table_add(pk_mk_table_t *t, const pk_mk_entry_t *in, uint64_t now_ms);

/*
 * Confirms the pending key key_id: the partner is known to hold it (the core
 * calls this on END2; a shell calls it when a record from the partner under
 * this key opens - pk_mk_table_find_sid() then pk_record_open() succeeded).
 * The key loses PK_MK_E_PENDING and, unless a newer key of the partner has
 * superseded it meanwhile, becomes the partner's current key: the older keys
 * of the partner are superseded (expiry cut to now + grace).
 * expiry_ms non-zero lowers the key's expiry to it (END2 confirms the
 * responder's, possibly shorter, one); 0 keeps it. On a key that is not
 * pending only that lowering happens, so a shell may call this on every
 * record it opens.
 * Returns PK_OK; PK_ERR_NOTFOUND (no live key key_id); PK_ERR_EXPIRED
 * (expiry_ms non-zero and <= now). On error the table is unchanged.
 */
int pk_mk_table_confirm(pk_mk_table_t *t, uint32_t key_id, uint64_t expiry_ms, uint64_t now_ms);

/* The live entry with this key ID (pending ones too), or NULL. Borrowed until
 * the next change. */
const pk_mk_entry_t *pk_mk_table_find(const pk_mk_table_t *t, uint32_t key_id, uint64_t now_ms);

/* The live entry whose key ID's low 16 bits are sid (record demultiplexing;
 * pending ones too, so the partner's first records under it open). */
const pk_mk_entry_t *pk_mk_table_find_sid(const pk_mk_table_t *t, uint16_t sid, uint64_t now_ms);

/* The partner's current (newest, not superseded, not pending, not expired)
 * key, or NULL: the one to send under. */
const pk_mk_entry_t *pk_mk_table_current(const pk_mk_table_t *t, const uint8_t *partner,
                                         size_t partner_len, uint64_t now_ms);

/* True when the partner has a current key made under the current MK that is
 * not yet due for renewal (so a beacon from it needs no authentication). */
int pk_mk_table_is_fresh(const pk_mk_table_t *t, const uint8_t *partner, size_t partner_len,
                         uint64_t now_ms);

/* Removes (and wipes) the entry with this key ID: PK_OK or PK_ERR_NOTFOUND. */
int pk_mk_table_remove(pk_mk_table_t *t, uint32_t key_id);

/* Number of entries in use (expired ones included until the next tick). */
size_t pk_mk_table_count(const pk_mk_table_t *t);

/*
 * The periodic step: removes and wipes every key whose expiry <= now, then
 * writes into renew[0..max) the partners whose current key needs renewal, or
 * whose pending key is still unconfirmed at its next_try (each partner once,
 * at most max; the rest are reported on a later tick) and sets their next_try
 * to now + retry_ms. Returns the number written.
 */
size_t pk_mk_table_tick(pk_mk_table_t *t, uint64_t now_ms, pk_mk_renew_t *renew, size_t max);

/* The earliest time tick() has something to do (an expiry, a renewal lead
 * time or a retry), or UINT64_MAX when the table is empty. */
uint64_t pk_mk_table_next_deadline(const pk_mk_table_t *t);

/*
 * Writes one printable line for the entry into buf[0..cap) (NUL-terminated):
 *   "key_id=1001 key=1a2b****************************** expiry_ms=... partner=client-103 ..."
 * The key is masked (its first 2 bytes shown, the rest '*') unless reveal is
 * non-zero. Non-printable partner bytes are shown as '?'. Returns the string
 * length, or 0 with buf[0] = '\0' when cap is too small.
 */
size_t pk_mk_entry_format(const pk_mk_entry_t *e, int reveal, char *buf, size_t cap);

#endif
