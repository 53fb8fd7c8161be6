/* Internals shared by kms.c (node requests) and admin.c (admin operations). */
#ifndef PK_PROTO_KMS_IMPL_H
#define PK_PROTO_KMS_IMPL_H

#include "core/kdf.h"
#include "proto/kms/kms.h"

#define B_DEV       "kms_dev"
#define B_ALLOW     "kms_allow"
#define B_PEER      "kms_peer"
#define B_GRP       "kms_grp"
#define B_GRPM      "kms_grpm"
#define B_ROOT      "kms_root"
#define B_POOL      "kms_pool"
#define B_POOLKEY   "kms_poolkey"
#define B_WIN       "kms_win"
#define B_ALLOC     "kms_alloc"
#define B_PAIRALLOC "kms_pairalloc"
#define B_DIR       "kms_dir"
#define S_KSI       "kms_ksi"
#define B_DOM       "kms_dom"
#define B_DOMMEM    "kms_dommem"
#define B_DOMDEV    "kms_domdev"
#define B_MK        "kms_mk"
#define S_DOMID     "kms_domid"
#define S_MKID      "kms_mkid"

#define BLK_MAX     (1 + PK_REG_ID_MAX)
#define PAIR_MAX    (2 * BLK_MAX)
#define KEY_LEN     PK_REG_ROOT_KEY_LEN
#define SEALED_KEY  (KEY_LEN + PK_WRAP_OVERHEAD)
#define DEV_VAL_MAX (1 + 1 + 8 + BLK_MAX + 32 + PK_WRAP_OVERHEAD)
#define PEERS_MAX   4096                               /* allowed peers gathered for one device */
#define TAGBUF_MAX  (PK_REG_PEERS_MAX * (BLK_MAX + 4)) /* a key set's tag input */
#define STORE_TRIES 16
#define NEED_WRITE  1  /* internal: a read transaction found work for a write one */
#define KSI_LEASE   32 /* KSIs one lease transaction takes from kms_ksi */

/* A write intent (group_writes, kms.h "Durability"): what one deferred
 * KEYS_REQ (kind KEYS: root keys, directory) or ALLOC_REQ (kind ALLOC: the
 * pair (dev, peer)'s KSI) needs written; applied by the batch's commit. */
struct kms_cand {
    pk_reg_id_t peer;
    uint8_t sealed[SEALED_KEY]; /* a fresh K_D sealed for ("kms_root", pair) */
};

enum { KMS_INTENT_KEYS = 0, KMS_INTENT_ALLOC = 1 };

struct kms_intent {
    uint8_t kind; /* KMS_INTENT_* (calloc: KEYS) */
    pk_reg_id_t dev, node;
    pk_reg_id_t peer; /* ALLOC: the responder (dev is the initiator) */
    uint64_t now_ms;
    uint8_t set_dir; /* the directory does not name node yet */
    unsigned n;      /* candidates, <= PK_REG_PEERS_MAX */
    struct kms_cand c[];
};

struct kms_cache_ent {
    uint8_t used, mode, klen;
    uint64_t loaded_ms;
    pk_reg_id_t id, pool;
    uint8_t k[32];
};

struct pk_kms {
    pk_store_t *st;
    pk_wrap_ctx_t wrap;
    pk_kdf_t kdf; /* re-keyed per vector (holds the last device key's schedule) */
    const pk_rng_t *rng;
    struct kms_cache_ent *cache;
    size_t nslots;
    uint64_t ttl_ms;
    uint8_t *q;     /* qmax x PK_KMS_AUDIT_MAX */
    uint16_t *qlen; /* qmax */
    size_t qn, qmax;
    uint64_t gen;
    int group;              /* cfg.group_writes */
    struct kms_intent **iq; /* imax: the open batch's write intents */
    size_t in, imax;
    pk_reg_id_t *peers; /* PEERS_MAX scratch */
    pk_reg_id_t *miss;  /* PK_REG_PEERS_MAX scratch: pairs without a root key (KEYS) */
    uint8_t *tagbuf;    /* TAGBUF_MAX scratch: a key set's tag input (KEYS) */
    pk_kms_stats_t stats;
    /* option 2: KSIs leased from kms_ksi (committed, so this instance's
     * alone) and handed to allocations one by one (kms.c) */
    uint32_t lease[KSI_LEASE];
    unsigned nlease, lease_i;
};

/* A device record, decoded. */
typedef struct kms_dev {
    uint8_t mode, klen;
    uint64_t created_ms;
    pk_reg_id_t pool;
    uint8_t k[32];
} kms_dev_t;

size_t kms_blk(uint8_t *out, const pk_reg_id_t *id);
size_t kms_pair(uint8_t out[PAIR_MAX], const pk_reg_id_t *a, const pk_reg_id_t *b);
/* Reads device id in txn; with_key also unwraps K (wipe d). PK_ERR_NOTFOUND. */
int kms_dev_get(pk_kms_t *k, pk_txn_t *txn, const pk_reg_id_t *id, int with_key, kms_dev_t *d);
/* Appends to out[*n..max) the identities x of the keys prefix || blk(x). */
int kms_scan_ids(pk_txn_t *txn, const char *bucket, const uint8_t *prefix, size_t plen,
                 pk_reg_id_t *out, size_t *n, size_t max);
/* 1 allowed, 0 not, < 0 error. */
int kms_allowed(pk_txn_t *txn, const pk_reg_id_t *a, const pk_reg_id_t *b);
/* Gathers the allowed peers of dev (explicit and through groups), sorted by
 * blk order and unique, into k->peers; *n their count. */
int kms_peers(pk_kms_t *k, pk_txn_t *txn, const pk_reg_id_t *dev, size_t *n);
/* Deletes the pair's root key unless the pair is still allowed. */
int kms_revoke_if_unallowed(pk_txn_t *txn, const pk_reg_id_t *a, const pk_reg_id_t *b);
/* Appends an audit record in txn. */
int kms_audit_append(pk_txn_t *txn, uint8_t what, uint64_t now_ms, uint32_t ksi, uint16_t count,
                     const pk_reg_id_t *node, const pk_reg_id_t *dev, const pk_reg_id_t *peer);
void kms_cache_drop(pk_kms_t *k, const pk_reg_id_t *id);
/* domain.c: the master keys of dev's domain valid at now_ms (current, and
 * the next when scheduled) into mk (n = 0 when dev is in no domain or the
 * domain has no valid key); *domain receives the domain name (len 0: none).
 * Read-only. The caller wipes mk. */
int kms_mk_fill(pk_kms_t *k, pk_txn_t *txn, const pk_reg_id_t *dev, uint64_t now_ms,
                pk_reg_mkset_t *mk, pk_reg_id_t *domain);
/* domain.c: drops dev's domain membership (device removal). */
int kms_domain_forget(pk_txn_t *txn, const pk_reg_id_t *dev);
/* trigger.c: deletes dev's trigger key, if any (device removal). */
int kms_trigger_forget(pk_txn_t *txn, const pk_reg_id_t *dev);

#endif
