/*
 * The kms core: the key management server's logic (NEC "3rd party" server,
 * seed [0054]-[0088]) over an injected store, an injected rng and now_ms.
 * No sockets, no clock, no globals; the daemon shell (src/kms), the simulator
 * and the tests all call these functions.
 *
 * ---- Data model (component "kms", schema version 1) -------------------------
 *
 * Identities (device, node, group, pool names) are 1..64 bytes of UTF-8
 * (pk_reg_id_valid). In keys, "blk(x)" is len(1) || x, so prefixes never
 * collide. A pair key is blk(lo) || blk(hi) with lo < hi in memcmp order of
 * the blk() encodings, so (a, b) and (b, a) name one pair.
 *
 *   bucket kms_dev      blk(device) -> ver(1)=1 mode(1) created_ms(8) blk(pool|"")
 *                                      sealed(K)   (K 16 or 32 bytes; pk_wrap
 *                                      bound to ("kms_dev", blk(device)))
 *   bucket kms_allow    pair -> ""                 explicitly allowed pairs
 *   bucket kms_peer     blk(a) || blk(b) -> ""     the same, indexed both ways
 *   bucket kms_grp      blk(group) || blk(member) -> ""
 *   bucket kms_grpm     blk(member) || blk(group) -> ""   (index)
 *                      a group allows every pair of two of its members
 *   bucket kms_root     pair -> ksi(4) created_ms(8) sealed(K_D, 32)
 *                                      created once (pk_txn_insert claim);
 *                                      sealed bound to ("kms_root", pair)
 *   bucket kms_pool     blk(pool) -> n(4) created_ms(8)
 *   bucket kms_poolkey  blk(pool) || ksi(4) -> sealed(key, 32)
 *                                      bound to ("kms_poolkey", that key)
 *   bucket kms_win      blk(device) -> lo_ksi(4) hi_ksi(4)
 *                                      legacy (per-device windows, before the
 *                                      fixed key set): no longer written; read
 *                                      by nothing, deleted with the device
 *   bucket kms_alloc    ksi(4) -> pair || at_ms(8)  exclusive, never deleted:
 *                                      a KSI allocated once is never reused
 *   bucket kms_pairalloc pair -> ksi(4)            the pair's allocation
 *   bucket kms_dir      blk(device) -> blk(node) at_ms(8)   node directory
 *   sequence kms_ksi    every KSI (root keys, pool keys and pool
 *                       allocations: one namespace, never reused)
 *
 *   Master keys (Toshiba US 9,294,269; DESIGN 3.6; domain.c):
 *   bucket kms_dom      blk(domain) -> ver(1)=1 domain_id(4) created_ms(8)
 *   bucket kms_dommem   blk(device) -> blk(domain)   a device is in <= 1 domain
 *   bucket kms_domdev   blk(domain) || blk(device) -> ""         (index)
 *   bucket kms_mk       blk(domain) || mk_id(4) -> ver(1)=1 not_before_ms(8)
 *                                      expiry_ms(8) created_ms(8) sealed(MK, 32)
 *                                      bound to ("kms_mk", that key)
 *   sequence kms_domid  domain IDs (u32, the clients' domain ID)
 *   sequence kms_mkid   master-key IDs (u32, one namespace for all domains)
 *   A domain's keys have strictly increasing not_before (rotate refuses an
 *   earlier one); expired keys are deleted at the next rotation. The key
 *   served at time t is the one with the latest not_before <= t that has
 *   not expired ("current"), plus the earliest with not_before > t ("next").
 *   log kms_audit       audit records (format below)
 *
 * ---- Option 2: pool keys and allocations -------------------------------------
 *
 * Key set. Every device of a pool holds the same keys: the pool's first
 * min(total, PK_REG_MAX_KEYS) keys in KSI order (one scan of at most 32
 * rows; keys beyond the 32nd are never handed out). The set is fixed when
 * the pool is created, so a re-registration returns the same keys and never
 * invalidates a pair's KSI, and registration costs do not depend on the
 * number of allocations.
 *
 * Allocation. A pair's KSI is a fresh identifier from the kms_ksi sequence
 * (so it differs from every root-key, pool-key and allocation KSI ever
 * issued), claimed by an insert into kms_alloc and one into kms_pairalloc,
 * with its POOL_ALLOC audit record, in one serialisable transaction that
 * first checked the pair has none: two kms instances on one SQLite file or
 * one PostgreSQL database never hand out one KSI twice nor give one pair
 * two (the sequence is transactional, the check and the claim are one
 * transaction, and each insert is a second, independent guard). Later
 * requests for the pair get the same KSI (with a fresh param). Allocation
 * never fails for lack of keys; only 2^32 KSIs in all (PK_ERR_EXPIRED
 * then). Without group_writes the claim is the request's own transaction,
 * and each pk_kms_t leases 32 identifiers at a time in one committed
 * transaction and hands them out one per allocation (fewer conflicts on the
 * sequence row between instances); a lease lost with its process leaves a
 * gap, never a reuse. With group_writes the claim is a write intent applied
 * by the batch's commit, which takes the KSI from the sequence in the
 * batch's transaction ("Durability" below).
 *
 * KSI -> key. The pool key a KSI selects is entry (KSI mod n) of the key
 * set sorted by ascending pool-key KSI, n = the set's size (the same for
 * every device of the pool). The kms never sends the key index: the device
 * computes it (pk_reg_dev_lookup), so LINK_IND keeps its format.
 *
 * Why sharing a pool key between pairs is safe: the link root key is
 * KDF(pool key, FC 0xEB, param(16), id initiator, id responder)
 * (PK_FC_POOL_LINK). The param is fresh per allocation and travels only in
 * the AEAD-protected LINK_IND to the pair's two devices, so another holder
 * of the same pool key cannot derive the pair's key; the KSI only names the
 * allocation. Trade-off: a device's compromise exposes the pool keys of
 * every holder, and with them any pair whose param the attacker also learns
 * (the node sees params): option 1 (per-pair keys) stays the recommended
 * mode; option 2 saves the per-pair keys in the accept.
 *
 * Secrets (K, K_D, pool keys) are only ever stored sealed under the KEK with
 * the row's identity as associated data (store/wrap.h).
 *
 * ---- Audit record (log kms_audit), never a key value ------------------------
 *
 *   ver(1)=1 what(1) at_ms(8) ksi(4) count(2) blk(node) blk(device) blk(peer)
 *
 *   what (enum pk_kms_audit_what): VECTOR (an authentication vector for
 *   device to node), ROOT_KEY (option 1: root key ksi of pair (device, peer)
 *   to node), POOL_KEYS (option 2: count pool keys from ksi (the key set's
 *   lowest) to node for device; peer = the pool name), POOL_ALLOC (ksi
 *   allocated to the pair (device = initiator, peer) for node), and admin
 *   events with node = "admin": DEVICE_ADD, DEVICE_REMOVE, ALLOW, DENY,
 *   GROUP_ADD, GROUP_REMOVE (device = member, peer = group), POOL_CREATE
 *   (peer = pool, count = keys, ksi = first KSI).
 *
 * ---- Durability and group commit --------------------------------------------
 *
 * Issuance records (VECTOR, ROOT_KEY, POOL_KEYS) are queued in memory by
 * pk_kms_handle() and committed together by pk_kms_flush() (or, in a shell
 * with a committer thread, pk_kms_batch_take() + pk_kms_batch_commit()).
 * CONTRACT: a response produced by pk_kms_handle() may leave the kms only
 * after the batch that was open when it was made (pk_kms_batch_gen()) has
 * committed; so no key or vector is ever sent whose audit record is not
 * durable. If that commit fails, the caller sends KMS_ERR(BUSY) instead
 * (pk_kms_err_frame()). Everything else commits before pk_kms_handle()
 * returns: all admin operations; and, unless cfg.group_writes is set, new
 * root keys, directory updates and pool allocations (each allocation with
 * its audit record, in the same transaction).
 *
 * First registrations in the group commit (cfg.group_writes). A KEYS_REQ
 * that finds a root key missing or the directory naming another node (a
 * device's first registration, or its move to another node) needs a write.
 * With group_writes the core does not write: it queues a *write intent* in
 * the open batch - the device, the node, and for each missing pair a fresh
 * candidate K_D already sealed under the KEK for that pair's kms_root row
 * (no plaintext key and no KSI yet) - and returns PK_KMS_DEFER with nothing
 * to send. The batch's commit applies its intents in the same transaction as
 * its audit records: for each candidate it re-checks, inside the
 * transaction, that the pair has no root key yet, that both devices exist in
 * mode pairs and that the pair is still allowed, and only then takes a KSI
 * from kms_ksi and inserts the row (pk_txn_insert); a candidate that lost
 * (another request, batch or kms instance created the pair's key first) is
 * dropped, so a pair keeps one key. Then it writes the directory entry. The
 * caller hands the same request to pk_kms_handle() again once that batch is
 * done (committed or failed): it is then answered from the committed rows
 * like any registration (its audit records in the then open batch, so its
 * answer waits for that batch too), or deferred again (the batch failed, or
 * another node moved the device meanwhile). No key is ever answered from a
 * candidate: whatever a response carries was read back from the store after
 * the commit that made it durable. A caller bounds the re-submissions
 * (PK_KMS_DEFER_TRIES) and then answers KMS_ERR(BUSY). A batch holds at most
 * cfg.intent_max intents; when the open batch is full a KEYS_REQ that needs
 * a write is deferred without an intent (it queues one after that batch).
 *
 * Allocations in the group commit (cfg.group_writes). An ALLOC_REQ is first
 * checked in a read transaction (both devices in mode pool, of one pool, the
 * pair allowed): a refusal is answered at once. If the pair has its KSI, the
 * answer is made from that row with a fresh param and its POOL_ALLOC record
 * is queued (no write now; the answer waits for its batch like any key). If
 * not, the core queues an allocation *intent* - initiator, peer, node, time;
 * no KSI - and returns PK_KMS_DEFER (one intent per pair and batch: a second
 * request for the pair while its intent is open is deferred without one).
 * The batch's commit applies it in its transaction: it checks again
 * everything the read checked, and that the pair still has no KSI (an
 * earlier intent of the batch, an earlier batch or another kms instance may
 * have allocated it); only then does it take a KSI from kms_ksi and claim it
 * (kms_alloc and kms_pairalloc inserts) with the allocation's POOL_ALLOC
 * audit record. An intent whose pair was denied, or whose device was removed
 * or changed mode or pool, writes nothing. A KSI that kms_alloc already
 * holds (never: the sequence does not repeat) is skipped for the next one;
 * a pair that has a KSI after the check fails the batch (never: the check and
 * the insert are in one serialisable transaction). The request handed in
 * again after the batch is answered from the committed row as above, so a
 * new allocation leaves after two commits and has two POOL_ALLOC records:
 * the allocation's (written with it, so no KSI is ever stored without its
 * record) and the answer's (like every later answer for the pair).
 *
 * ---- Caches ------------------------------------------------------------------
 *
 * Unwrapped device keys are cached (direct-mapped, cfg.cache_slots entries,
 * each valid cfg.cache_ttl_ms); an evicted or expired entry is wiped. Admin
 * calls through this pk_kms_t invalidate at once; a change made by another
 * kms instance or process is seen within the TTL.
 *
 * Thread safety: none; one pk_kms_t per thread (it owns no thread). The store
 * belongs to the pk_kms_t's thread too; pk_kms_batch_commit() takes its own.
 */
#ifndef PK_PROTO_KMS_KMS_H
#define PK_PROTO_KMS_KMS_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "proto/kms/messages.h"
#include "proto/reg/messages.h"
#include "store/store.h"
#include "store/wrap.h"

#define PK_KMS_SCHEMA_VERSION 1
#define PK_KMS_AUDIT_LOG      "kms_audit"
#define PK_KMS_ADMIN_NODE     "admin"
#define PK_KMS_POOL_MAX_KEYS  100000 /* keys one pool_create may make */
#define PK_KMS_AUDIT_MAX      (1 + 1 + 8 + 4 + 2 + 3 * (1 + PK_REG_ID_MAX)) /* 211 */
#define PK_KMS_RESP_MAX       PK_REG_NET_MAX /* largest response pk_kms_handle writes */

enum pk_kms_audit_what {
    PK_KMS_A_VECTOR = 1,
    PK_KMS_A_ROOT_KEY = 2,
    PK_KMS_A_POOL_KEYS = 3,
    PK_KMS_A_POOL_ALLOC = 4,
    PK_KMS_A_MASTER_KEY = 5, /* MK ksi=mk_id sent to node for device (peer = domain) */
    PK_KMS_A_DEVICE_ADD = 16,
    PK_KMS_A_DEVICE_REMOVE = 17,
    PK_KMS_A_ALLOW = 18,
    PK_KMS_A_DENY = 19,
    PK_KMS_A_GROUP_ADD = 20,
    PK_KMS_A_GROUP_REMOVE = 21,
    PK_KMS_A_POOL_CREATE = 22,
    PK_KMS_A_DOMAIN_ADD = 23,     /* peer = domain, ksi = domain ID */
    PK_KMS_A_DOMAIN_JOIN = 24,    /* device joined domain (peer) */
    PK_KMS_A_DOMAIN_LEAVE = 25,   /* device left domain (peer) */
    PK_KMS_A_MK_CREATE = 26,      /* master key ksi = MK ID made for domain (peer) */
    PK_KMS_A_TRIGGER_KEY = 32,    /* trigger key of device issued to node ("admin": made) */
    PK_KMS_A_TRIGGER_REMOVE = 33, /* device's trigger key deleted */
};

/* A decoded audit record. */
typedef struct pk_kms_audit {
    uint64_t seqno; /* log position (pk_kms_audit_list) */
    uint8_t what;   /* enum pk_kms_audit_what */
    uint64_t at_ms;
    uint32_t ksi;
    uint16_t count;
    pk_reg_id_t node, device, peer; /* len 0 when absent */
} pk_kms_audit_t;

/* "vector", "root_key", ... ("?" for unknown). */
const char *pk_kms_audit_what_name(uint8_t what);
/* Encodes/decodes one record (exact size). PK_ERR_MALFORMED / PK_ERR_SPACE. */
int pk_kms_audit_encode(const pk_kms_audit_t *a, uint8_t *buf, size_t cap, size_t *len);
int pk_kms_audit_decode(const uint8_t *buf, size_t len, pk_kms_audit_t *a);

typedef struct pk_kms_cfg {
    pk_store_t *store;     /* borrowed for the kms's life */
    const uint8_t *kek;    /* PK_WRAP_KEK_LEN bytes; copied (and wiped at free) */
    const pk_rng_t *rng;   /* borrowed; NULL = pk_rng_system */
    size_t cache_slots;    /* device-key cache size; 0 = 4096 */
    uint64_t cache_ttl_ms; /* 0 = 5000 */
    size_t audit_max;      /* queued audit records before PK_ERR_LIMIT; 0 = 8192 */
    int group_writes;      /* 1: first registrations' and allocations' writes go
                            * into the group commit as intents (PK_KMS_DEFER) */
    size_t intent_max;     /* write intents in one batch; 0 = PK_KMS_INTENT_MAX */
} pk_kms_cfg_t;

#define PK_KMS_INTENT_MAX  256 /* default bound of the write intents in one batch */
#define PK_KMS_DEFER       1   /* pk_kms_handle: deferred, nothing to send yet */
#define PK_KMS_DEFER_TRIES 16  /* re-submissions of a deferred request before BUSY */

/* Counters (for logs and tests). */
typedef struct pk_kms_stats {
    uint64_t vectors, root_keys_issued, pool_keys_issued, allocs, dir_lookups;
    uint64_t root_keys_created;
    uint64_t master_keys_issued;
    uint64_t refused; /* requests answered with KMS_ERR or nothing */
    uint64_t cache_hits, cache_misses;
    uint64_t batches, batched_records;
    uint64_t deferred; /* PK_KMS_DEFER answers (group_writes) */
    uint64_t intents;  /* write intents queued (group_writes) */
} pk_kms_stats_t;

typedef struct pk_kms pk_kms_t;

/*
 * Creates a kms over cfg->store and brings the store's "kms" schema to
 * PK_KMS_SCHEMA_VERSION (pk_store_migrate). PK_OK and *out, or PK_ERR_INVAL,
 * PK_ERR_NOMEM, PK_ERR_VERSION (store from a newer proxkey), PK_ERR_BUSY,
 * PK_ERR_IO, PK_ERR_CRYPTO.
 */
int pk_kms_new(const pk_kms_cfg_t *cfg, pk_kms_t **out);

/* Wipes caches and the KEK, drops unflushed audit records (their responses
 * must not have been sent), frees. The store is not closed. NULL ok. */
void pk_kms_free(pk_kms_t *k);

const pk_kms_stats_t *pk_kms_stats(const pk_kms_t *k);

/*
 * Handles one request frame req[0..len) from the node whose TLS certificate
 * CN is node_cn (NUL-terminated), at wall time now_ms (audit timestamps,
 * cache TTL). Writes the answer to resp[0..cap) (cap >= PK_KMS_RESP_MAX is
 * always enough) and sets *resp_len (0: send nothing, close the connection).
 *
 *   KMS_VEC_REQ   node_id must equal node_cn. A vector from the device's K
 *                 (RAND from the rng) -> KMS_VEC_RESP; audit VECTOR queued.
 *   KMS_KEYS_REQ  option 1 (device mode pairs): the root key of every
 *                 allowed pair of the device whose peer exists in mode pairs
 *                 (the first PK_REG_PEERS_MAX peers in peer order; every
 *                 missing one is created, whatever the page), each created
 *                 once and the same for both devices and any node. With a
 *                 cursor: the page of PK_REG_MAX_KEYS after it, paged (the
 *                 set's total, more, and tag = first 8 bytes of SHA-256 over
 *                 blk(peer) || KSI(4) of the whole set in peer order; the
 *                 master keys with the first page only); without one (a node
 *                 from before paging), the first PK_REG_MAX_KEYS, unpaged;
 *                 option 2 (mode pool): the pool's key set (its first
 *                 PK_REG_MAX_KEYS keys; the same for every device, read-only).
 *                 The directory records node_cn as the device's node.
 *                 When the device is in a domain with a valid master key,
 *                 the master-key block (current, and next when scheduled)
 *                 follows the entries.
 *                 -> KMS_KEYS_RESP; audit ROOT_KEY per key / POOL_KEYS queued,
 *                 MASTER_KEY per master key.
 *   KMS_MK_REQ    -> KMS_MK_RESP with the device's master-key block only
 *                 (the refresh of a registered device); audit MASTER_KEY.
 *   KMS_ALLOC_REQ initiator and peer both in mode pool, one pool, allowed:
 *                 the pair's KSI if it has one, else a fresh one from the
 *                 kms_ksi sequence, claimed in one transaction with its
 *                 audit record ("Option 2" above); a fresh param (rng).
 *                 -> KMS_ALLOC_RESP. With group_writes: the claim is an
 *                 intent (PK_KMS_DEFER); an answer's audit record POOL_ALLOC
 *                 is queued.
 *   KMS_DIR_REQ   -> KMS_DIR_RESP with the device's node.
 *
 * With cfg.group_writes, a KEYS_REQ that needs a write, or an ALLOC_REQ
 * whose pair has no KSI yet, returns PK_KMS_DEFER
 * (a positive value, not an error) with *resp_len = 0: nothing to send yet;
 * the caller keeps the request (in its place in the connection's answer
 * order) and hands it in again once batch pk_kms_batch_gen(), read before
 * this call, is done - committed or failed ("Durability" above).
 *
 * Returns PK_OK, or an error with the refusal in resp (KMS_ERR, when len >=
 * PK_KMS_REQ_MIN, else *resp_len = 0):
 *   PK_ERR_MALFORMED (ST_MALFORMED: truncated, oversized, unknown or response
 *     type, bad id), PK_ERR_DENIED (ST_DENIED: node id differs from node_cn,
 *     pair not allowed, wrong mode), PK_ERR_NOTFOUND (ST_UNKNOWN: unknown
 *     device or no directory entry), PK_ERR_LIMIT (ST_BUSY: too many queued
 *     audit records - flush, then retry), PK_ERR_EXPIRED (ST_EXHAUSTED: a
 *     pool without keys, or the 32-bit KSI space used up),
 *     PK_ERR_BUSY / PK_ERR_IO (ST_BUSY), others (ST_ERROR).
 * A refused request changes no state and queues no audit record.
 * resp holds keys on success: the caller wipes it after sending.
 */
int pk_kms_handle(pk_kms_t *k, const char *node_cn, const uint8_t *req, size_t len, uint64_t now_ms,
                  uint8_t *resp, size_t cap, size_t *resp_len);

/* Writes KMS_ERR(status for err, req_type) into resp (>= 3 bytes) and
 * returns its length (3), or 0 when req_len < PK_KMS_REQ_MIN. */
size_t pk_kms_err_frame(int err, uint8_t req_type, size_t req_len, uint8_t *resp, size_t cap);

/* The status byte KMS_ERR carries for an error code. */
uint8_t pk_kms_status_of(int err);

/* ---- group commit ---- */

/* Audit records and write intents queued and not yet taken. */
size_t pk_kms_pending(const pk_kms_t *k);
/* The number of the open batch (starts at 1): the batch that records queued
 * now go into. A response made now may be sent once batch gen committed. */
uint64_t pk_kms_batch_gen(const pk_kms_t *k);

typedef struct pk_kms_batch pk_kms_batch_t;

/* Detaches the queued records and write intents as a batch (owned by the
 * caller) and opens batch gen + 1. *out is NULL when nothing was queued (gen
 * does not move). PK_OK or PK_ERR_NOMEM (nothing detached). */
int pk_kms_batch_take(pk_kms_t *k, pk_kms_batch_t **out);
/* The batch's number (the gen its responses wait for) and record count. */
uint64_t pk_kms_batch_number(const pk_kms_batch_t *b);
size_t pk_kms_batch_count(const pk_kms_batch_t *b);
/* Applies the batch's write intents (above) and appends its records to
 * kms_audit, all in one transaction on store s (any store over the same
 * database; may be another thread's: it touches no pk_kms_t), retrying the
 * whole transaction on PK_ERR_BUSY. An intent that no longer applies (its
 * device removed, a pair denied, keyed or allocated meanwhile) writes what
 * still applies and nothing else; it does not fail the batch. PK_OK once durable,
 * else the store's error: then nothing of the batch was written (but a
 * PK_ERR_IO from a COMMIT on PostgreSQL leaves the outcome unknown; running
 * the batch again is safe for its intents, which re-check everything). */
int pk_kms_batch_commit(pk_store_t *s, const pk_kms_batch_t *b);
void pk_kms_batch_free(pk_kms_batch_t *b);

/* take + commit on the kms's own store + free; PK_OK when nothing queued.
 * On error the records and intents are dropped (their responses must not be
 * sent; deferred requests may be handed in again). */
int pk_kms_flush(pk_kms_t *k);

/* ---- admin operations (each one committed transaction, audited) ---- */

typedef struct pk_kms_device_info {
    pk_reg_id_t id;
    uint8_t mode; /* enum pk_reg_keymode */
    uint8_t klen; /* 16 or 32 */
    uint64_t created_ms;
    pk_reg_id_t pool; /* mode pool */
    pk_reg_id_t node; /* directory: serving node (len 0: none yet) */
    uint32_t npairs;  /* allowed peers (explicit and through groups) */
} pk_kms_device_info_t;

/*
 * Adds device id (1..64 bytes) with the long-term key key[0..klen) (16 or
 * 32), or a new random 32-byte key when key is NULL, copied to gen_key
 * (32 bytes; may be NULL) for provisioning the device. mode pool needs pool
 * (existing); mode pairs needs pool NULL. PK_ERR_EXISTS, PK_ERR_INVAL,
 * PK_ERR_NOTFOUND (no such pool), store errors.
 */
int pk_kms_device_add(pk_kms_t *k, const char *id, const uint8_t *key, size_t klen, uint8_t mode,
                      const char *pool, uint64_t now_ms, uint8_t gen_key[32]);
/* Removes the device, its explicit allows, group memberships, directory
 * entry and window, and the root keys of pairs no longer allowed.
 * PK_ERR_NOTFOUND. */
int pk_kms_device_remove(pk_kms_t *k, const char *id, uint64_t now_ms);
/* Reads a device's public facts (never its key). PK_ERR_NOTFOUND. */
int pk_kms_device_show(pk_kms_t *k, const char *id, pk_kms_device_info_t *info);
/* Calls cb for each device in id order, starting after `after` (NULL: from
 * the first), at most limit; cb returns 0 to go on. */
typedef int (*pk_kms_device_cb)(void *ctx, const pk_kms_device_info_t *info);
int pk_kms_device_list(pk_kms_t *k, const char *after, size_t limit, pk_kms_device_cb cb,
                       void *ctx);

/* Allows pair (a, b), a != b (devices need not exist yet). PK_ERR_EXISTS
 * when already explicitly allowed. */
int pk_kms_allow(pk_kms_t *k, const char *a, const char *b, uint64_t now_ms);
/* Removes the explicit allow; if no group still allows the pair, its root
 * key is deleted (a later allow makes a new one; issuance stops at once).
 * *still_allowed (may be NULL) = 1 when a group still allows it.
 * PK_ERR_NOTFOUND when not explicitly allowed. */
int pk_kms_deny(pk_kms_t *k, const char *a, const char *b, uint64_t now_ms, int *still_allowed);
/* 1 when the pair is allowed (explicitly or through a group), 0 when not,
 * or a negative error. */
int pk_kms_is_allowed(pk_kms_t *k, const char *a, const char *b);
/* Adds member to group (created implicitly). PK_ERR_EXISTS. */
int pk_kms_group_add(pk_kms_t *k, const char *group, const char *member, uint64_t now_ms);
/* Removes member from group (member NULL: every member, i.e. the group);
 * root keys of pairs no longer allowed are deleted. PK_ERR_NOTFOUND. */
int pk_kms_group_remove(pk_kms_t *k, const char *group, const char *member, uint64_t now_ms);
/* Creates pool name with n (1..PK_KMS_POOL_MAX_KEYS) random keys, KSIs from
 * the kms_ksi sequence; *first_ksi (may be NULL) the first. PK_ERR_EXISTS. */
int pk_kms_pool_create(pk_kms_t *k, const char *name, uint32_t n, uint64_t now_ms,
                       uint32_t *first_ksi);
/* Total keys of a pool, and *allocated its keys that are themselves in
 * kms_alloc: legacy (per-key allocations before the fixed key set); new
 * allocations take fresh KSIs and consume no key, so this stays constant -
 * count allocations with kms_pairalloc (POOL_ALLOC audit records are one
 * per answer, plus one per allocation with group_writes). PK_ERR_NOTFOUND. */
int pk_kms_pool_info(pk_kms_t *k, const char *name, uint32_t *total, uint32_t *allocated);

/* ---- domains and master keys (domain.c; Toshiba, DESIGN 3.6) ---- */

#define PK_KMS_MK_LIFETIME_DEF (24ull * 3600 * 1000)       /* 24 h */
#define PK_KMS_MK_LIFETIME_MAX (366ull * 24 * 3600 * 1000) /* a year */
#define PK_KMS_MK_PER_DOMAIN   64 /* unexpired master keys a domain may hold */

typedef struct pk_kms_mk_info {
    uint32_t id;
    uint64_t not_before_ms, expiry_ms, created_ms;
} pk_kms_mk_info_t;

/* Creates domain name (1..64 bytes) with the next domain ID (*domain_id, may
 * be NULL). It has no master key until pk_kms_master_rotate. PK_ERR_EXISTS. */
int pk_kms_domain_add(pk_kms_t *k, const char *name, uint64_t now_ms, uint32_t *domain_id);
/* Puts device in domain (both must exist; a device is in at most one
 * domain: PK_ERR_EXISTS when it is in one). PK_ERR_NOTFOUND. */
int pk_kms_domain_member_add(pk_kms_t *k, const char *domain, const char *device, uint64_t now_ms);
/* Takes device out of domain. PK_ERR_NOTFOUND when it is not a member. */
int pk_kms_domain_member_remove(pk_kms_t *k, const char *domain, const char *device,
                                uint64_t now_ms);
/* The domain of device: PK_OK with *domain (and *domain_id), PK_ERR_NOTFOUND. */
int pk_kms_domain_of(pk_kms_t *k, const char *device, pk_reg_id_t *domain, uint32_t *domain_id);
/*
 * Makes the domain's next master key: 32 random bytes (rng), the next MK ID,
 * effective at at_ms, expiring lifetime_ms later (0: PK_KMS_MK_LIFETIME_DEF;
 * at most PK_KMS_MK_LIFETIME_MAX), sealed under the KEK; deletes the
 * domain's keys expired at now_ms; audit MK_CREATE. *out (may be NULL)
 * receives the new key's facts. PK_ERR_NOTFOUND (domain), PK_ERR_INVAL
 * (lifetime, at_ms + lifetime <= now_ms), PK_ERR_STATE (a key with
 * not_before >= at_ms exists), PK_ERR_LIMIT (PK_KMS_MK_PER_DOMAIN).
 */
int pk_kms_master_rotate(pk_kms_t *k, const char *domain, uint64_t at_ms, uint64_t lifetime_ms,
                         uint64_t now_ms, pk_kms_mk_info_t *out);
/* The domain's stored master keys (never their values) in ID order into
 * out[0..max), *n their number, *domain_id the domain's ID. PK_ERR_NOTFOUND. */
int pk_kms_master_list(pk_kms_t *k, const char *domain, uint32_t *domain_id, pk_kms_mk_info_t *out,
                       size_t max, size_t *n);
/* The master-key block the kms would send for device at now_ms (tests and
 * tools; the caller wipes mk). PK_OK (mk->n = 0 when none). */
int pk_kms_master_for(pk_kms_t *k, const char *device, uint64_t now_ms, pk_reg_mkset_t *mk);

/* ---- trigger keys (trigger.c; the gts's per-device K1 and first UID1) ----
 *
 *   bucket kms_trig  blk(device) -> ver(1)=1 flags(1) created_ms(8)
 *                                   sealed(K1 || UID1, 32) bound to
 *                                   ("kms_trig", blk(device))
 *
 * K1 (16 bytes, the trigger protocol's AES-128-GCM and identity KDF key) and
 * UID1 (16 random bytes, unrelated to the device ID) are drawn from the rng.
 * A device has at most one trigger key; pk_kms_device_remove deletes it.
 * Audit: TRIGGER_KEY with node "admin" when made, with node = the recipient
 * when exported (pk_kms_trigger_export); TRIGGER_REMOVE. Never the key.
 * A trigger device's ID is also its name in the gts and in the device's
 * whitespace-separated state line: it must hold no byte <= 0x20 nor 0x7f.
 */
#define PK_KMS_TRIG_KEY_LEN 16
#define PK_KMS_TRIG_UID_LEN 16
#define PK_KMS_TRIG_ROTATE  0x01 /* the gts rotates K with every identity */

typedef struct pk_kms_trigger {
    pk_reg_id_t id;
    uint8_t flags; /* PK_KMS_TRIG_* */
    uint64_t created_ms;
    uint8_t k1[PK_KMS_TRIG_KEY_LEN];   /* filled by _add and _export only */
    uint8_t uid1[PK_KMS_TRIG_UID_LEN]; /* (the caller wipes them) */
} pk_kms_trigger_t;

/* Makes device id's trigger key (the device must exist) with flags
 * (PK_KMS_TRIG_ROTATE or 0), audit TRIGGER_KEY (node "admin"), in one
 * transaction; *out (NULL ok) gets K1 and UID1 for provisioning the device.
 * PK_ERR_INVAL (bad id or flags, or id unusable as a trigger name),
 * PK_ERR_NOTFOUND (no such device), PK_ERR_EXISTS (it has one: remove first). */
int pk_kms_trigger_add(pk_kms_t *k, const char *id, uint8_t flags, uint64_t now_ms,
                       pk_kms_trigger_t *out);
/* Deletes device id's trigger key; audit TRIGGER_REMOVE. PK_ERR_NOTFOUND. */
int pk_kms_trigger_remove(pk_kms_t *k, const char *id, uint64_t now_ms);
/* Public facts of id's trigger key (k1 and uid1 zero). PK_ERR_NOTFOUND. */
int pk_kms_trigger_show(pk_kms_t *k, const char *id, pk_kms_trigger_t *out);
/* Calls cb for each trigger device in id order after `after` (NULL: from
 * the first), at most limit; k1 and uid1 are zero. cb returns 0 to go on. */
typedef int (*pk_kms_trigger_cb)(void *ctx, const pk_kms_trigger_t *t);
int pk_kms_trigger_list(pk_kms_t *k, const char *after, size_t limit, pk_kms_trigger_cb cb,
                        void *ctx);
/* Opens id's K1 and UID1 into *out for recipient `to` (1..64 bytes, e.g.
 * "gts") and records TRIGGER_KEY (node = to) in the same transaction: the
 * key leaves only with a durable audit record. The caller wipes *out.
 * PK_ERR_NOTFOUND, PK_ERR_INVAL, PK_ERR_CRYPTO (KEK or row mismatch). */
int pk_kms_trigger_export(pk_kms_t *k, const char *id, const char *to, uint64_t now_ms,
                          pk_kms_trigger_t *out);

/* Calls cb for audit records numbered from `from` (>= 1), at most limit. */
typedef int (*pk_kms_audit_cb)(void *ctx, const pk_kms_audit_t *a);
int pk_kms_audit_list(pk_kms_t *k, uint64_t from, size_t limit, pk_kms_audit_cb cb, void *ctx);

#endif
