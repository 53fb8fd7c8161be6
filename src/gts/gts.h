/*
 * The gts shell: the trigger server daemon, its store schema and the CLI.
 *
 * Store schema (component "gts", version 1):
 *   bucket gts_dev     dev_no (u32 BE) -> sealed device record (pk_wrap under the
 *                      KEK, bound to the row; the record holds K1)
 *   bucket gts_devname dev_no (u32 BE) -> name
 *   bucket gts_name    name -> dev_no (u32 BE)
 *   bucket gts_cmd     dev_no (u32 BE) || seq (u64 BE) -> cmd(1) arg   (the queues)
 *   bucket gts_inbox   seq (u64 BE) -> dev_no (u32 BE)   commands queued since the
 *                      server last looked (it polls this bucket every 200 ms)
 *   bucket gts_newdev  dev_no (u32 BE) -> ""             devices added since then
 *   bucket gts_meta    "journal_ckpt" -> u64 BE: every journal generation up to this
 *                      one is folded into the store (gts_journal.h)
 *   sequences gts_dev_no, gts_cmd_seq
 * The running server journals device state changes (gts_journal.h) and
 * folds them into gts_dev / gts_cmd by checkpoints; readers that want the
 * newest state overlay the journal (gts_overlay_*).
 * Only the server writes gts_dev records after provisioning; the CLI only
 * adds devices and commands, so the two never race on a row.
 */
#ifndef PK_SRC_GTS_GTS_H
#define PK_SRC_GTS_GTS_H

#include <stdint.h>
#include <stdio.h>

#include "proto/trigger/srv.h"
#include "store/store.h"
#include "store/wrap.h"

typedef struct gts_db {
    pk_store_t *st;
    uint8_t kek[PK_WRAP_KEK_LEN];
} gts_db_t;

#define GTS_NAME_MAX 64

/* The serving instance's lease (gts_owner.c): one gts serves a store at a
 * time. */
#define GTS_OWNER_HOST_MAX 64
typedef struct gts_owner {
    uint8_t id[16];    /* random per start */
    uint64_t until_ms; /* the lease's end, holder's wall clock */
    uint64_t gen;      /* the journal generation it writes */
    uint32_t pid;
    uint64_t start;       /* the process's start time (/proc/PID/stat), 0: unknown */
    uint8_t host_key[16]; /* hash of hostname, boot id, pid namespace; 0: unknown */
    char host[GTS_OWNER_HOST_MAX + 1];
} gts_owner_t;
/* This process: a fresh id, pid, host name and key (until_ms, gen 0). */
void gts_owner_self(gts_owner_t *me);
/* 1 when a and b ran on one host (same non-zero host key): pids compare. */
int gts_owner_same_host(const gts_owner_t *a, const gts_owner_t *b);
/* Takes the store for me until now_ms + lease_ms. PK_OK: ours (*had_prev: a
 * previous owner was there, crashed or its lease over, in *prev);
 * PK_ERR_BUSY: *prev still holds it (nothing written). */
int gts_owner_claim(gts_db_t *db, gts_owner_t *me, uint64_t now_ms, uint64_t lease_ms,
                    gts_owner_t *prev, int *had_prev);
/* Inside a transaction: PK_OK while me owns the store (extend: and writes
 * me with until_ms = now_ms + lease_ms, me->gen as set), PK_ERR_DENIED when
 * it was released or taken over. */
int gts_owner_fence(pk_txn_t *txn, gts_owner_t *me, uint64_t now_ms, uint64_t lease_ms, int extend);
/* Deletes the lease if it is still me's (a clean stop). */
int gts_owner_release(gts_db_t *db, gts_owner_t *me);
/* The current owner: 1 (in *o), 0 none, < 0 error. */
int gts_owner_get(gts_db_t *db, gts_owner_t *o);

/* Opens the store and its KEK (kek_path NULL: "<sqlite path>.kek", or an
 * ephemeral random KEK for memory:). create: generate the KEK file if absent. */
int gts_db_open(gts_db_t *db, const char *uri, const char *kek_path, int create);
void gts_db_close(gts_db_t *db);

/* Provisions count devices named name (count 1) or name-0..name-(count-1),
 * with random K1 and UID1, in one transaction. For each, writes a line
 * "name dev_no k1hex uid1hex [interval_s]" to prov (may be NULL).
 * interval_s (0: not given) is the poll interval the devices start with: in
 * their lines and in gts_ival (command seq 0), so `gts status` knows it. */
int gts_db_add(gts_db_t *db, const char *name, unsigned count, unsigned flags, uint32_t interval_s,
               FILE *prov);

/* A device provisioned elsewhere (the kms trigger keys) for gts_db_import. */
typedef struct gts_import {
    char name[GTS_NAME_MAX + 1];
    uint8_t k1[16], uid1[16]; /* the caller wipes them */
    unsigned flags;           /* PK_TRIG_DEV_* */
    uint32_t interval_s;      /* poll interval it starts with (0: not given) */
    int skip;                 /* in: leave this entry out */
    /* out */
    uint32_t dev_no;
    int kept; /* 1: the name was provisioned already: left untouched */
} gts_import_t;

/* 1 (and *dev_no, may be NULL) when name is provisioned, 0 when not, < 0 error. */
int gts_db_has(gts_db_t *db, const char *name, uint32_t *dev_no);

/* Provisions devs[0..n) (skip == 0) in one transaction exactly as
 * gts_db_add does (same records, interval_s in gts_ival; gts_newdev, so a
 * running server loads them). A name already provisioned is kept as it is
 * (kept = 1): its current identity, key, interval and queue are never
 * reset. PK_ERR_INVAL (bad name). */
int gts_db_import(gts_db_t *db, gts_import_t *devs, size_t n);

/* Removes devices names[0..n) in one transaction (all or none): name, record,
 * queued commands and inbox entries deleted; a tombstone (gts_gone) keeps
 * journal entries and checkpoints from bringing the device back, and
 * gts_deldev tells a running server to drop it from memory. dev_nos[i]
 * receives each dev_no (never reused). PK_ERR_NOTFOUND: names[*bad] is not
 * provisioned (nothing removed). */
int gts_db_remove(gts_db_t *db, const char *const *names, size_t n, uint32_t *dev_nos, size_t *bad);

/* 1 and *interval_s when a stored command (cmd byte, argument) is
 * poll-faster/poll-slower, else 0. Delivered ones are remembered in
 * gts_ival[dev_no] = interval_s u32 ‖ command seq u64 (checkpoints and
 * recovery write it as they delete the command). */
int gts_cmd_interval(const uint8_t *val, size_t vlen, uint32_t *interval_s);

/* Queues a command for device name (or every device when name is NULL). */
int gts_db_send(gts_db_t *db, const char *name, uint8_t cmd, const uint8_t *arg, size_t arglen,
                uint64_t *seq, unsigned *ndev);

/* Loads every device and its queue into core. */
int gts_db_load(gts_db_t *db, pk_trig_srv_t *core, uint64_t *max_seq);

/* Opens a sealed gts_dev value of row key (4 bytes). */
int gts_rec_open(gts_db_t *db, const uint8_t *key, const uint8_t *val, size_t vlen,
                 uint8_t rec[PK_TRIG_REC_LEN]);

/* The journal base path for a store: opt when given; else "<sqlite path>.journal";
 * for memory: an empty string (no journal file: nothing is durable anyway).
 * PK_ERR_INVAL for PostgreSQL without opt (the journal is a local file). */
int gts_db_journal_base(const char *uri, const char *opt, char *out, size_t n);

/* The newest journal generation folded into the store (0: none). */
int gts_db_folded(gts_db_t *db, uint64_t *gen);

/* At start: folds the journals newer than the store's checkpoint into the
 * store (one transaction), removes them; *gen = the newest generation seen. */
int gts_db_recover(gts_db_t *db, const char *base, uint64_t *gen);

/* Checkpoint: writes the records recs[i] (PK_TRIG_REC_LEN bytes each) of
 * devs[i], i < ndev, sealed under w, and deletes the delivered commands
 * deliv[2*i] (dev_no), deliv[2*i+1] (seq), i < ndeliv, in one transaction
 * that also records journal generation gen as folded. me (NULL: no lease,
 * memory:) must still own the store (else PK_ERR_DENIED, nothing written);
 * its lease is extended by lease_ms and its generation recorded as gen + 1. */
int gts_db_checkpoint(gts_db_t *db, pk_wrap_ctx_t *w, const uint32_t *devs, const uint8_t *recs,
                      size_t ndev, const uint64_t *deliv, size_t ndeliv, uint64_t gen,
                      gts_owner_t *me, uint64_t lease_ms);

/* The journal's newest state over a store snapshot, for readers (CLI). */
typedef struct gts_overlay gts_overlay_t;
int gts_overlay_load(gts_db_t *db, const char *base, gts_overlay_t **out);
/* The newest record of dev_no (1) or none (0); *ndeliv = commands of dev_no
 * delivered according to the journal (still in the store until a checkpoint). */
int gts_overlay_get(const gts_overlay_t *o, uint32_t dev_no, uint8_t rec[PK_TRIG_REC_LEN],
                    unsigned *ndeliv);
/* 1 when (dev_no, seq) was delivered according to the journal. */
int gts_overlay_delivered(const gts_overlay_t *o, uint32_t dev_no, uint64_t seq);
void gts_overlay_free(gts_overlay_t *o);

/* Hex helpers. */
/* A device's trigger state file (`proxkey device poll --state FILE`, made by
 * `gts device add --out` or `kms trigger add --out`): one line
 * "name dev_no K1hex UIDhex [interval_s]" — name 1..64 printable bytes
 * without blanks, dev_no decimal, K1 and UID exactly 32 hex digits each,
 * interval 1..604800 (default 60 when absent); blanks and one newline may
 * follow, nothing else. */
#define GTS_DEVFILE_MAX 256
typedef struct gts_devfile {
    char name[GTS_NAME_MAX + 1];
    uint32_t dev_no;
    uint8_t k[16], uid[16];
    uint32_t interval;
} gts_devfile_t;

/* PK_OK or PK_ERR_MALFORMED (*why: what is wrong, a static string). */
int gts_devfile_parse(const char *buf, size_t len, gts_devfile_t *f, const char **why);

void gts_hex(const uint8_t *b, size_t n, char *out);
int gts_unhex(const char *s, uint8_t *out, size_t n);

/* The server. */
typedef struct gts_server gts_server_t;
typedef struct gts_serve_opts {
    const char *store, *kek, *listen;
    int quiet;
    size_t reserve;
    const char *journal;   /* journal base path (NULL: from the store, see gts_db_journal_base) */
    uint64_t ckpt_records; /* checkpoint after this many journal records (0: 1048576) */
    uint64_t ckpt_ms;      /* ... or this long with anything unfolded (0: 60000) */
    int signals;           /* SIGINT/SIGTERM stop the server cleanly (for the CLI) */
    /* Answers to retransmissions per source address (IPv4 address or IPv6
     * /64; the core's retransmission gate, srv.h): retx_rate per second
     * (0: GTS_RETX_RATE) after a burst of retx_burst (0: twice the rate);
     * retx_unlimited: no limit. */
    uint32_t retx_rate, retx_burst;
    int retx_unlimited;
    /* The store's lease (gts_owner_t): lease_ms (0: GTS_LEASE_MS); take over
     * from a server of another host even though its journal is not here. */
    uint64_t lease_ms;
    int force_takeover;
} gts_serve_opts_t;
#define GTS_LEASE_MS  30000
#define GTS_RETX_RATE 16
int gts_server_new(gts_server_t **out, const gts_serve_opts_t *o);
int gts_server_run(gts_server_t *s);   /* until stopped */
void gts_server_stop(gts_server_t *s); /* any thread */
uint16_t gts_server_port(const gts_server_t *s);
void gts_server_free(gts_server_t *s);
size_t gts_server_devices(const gts_server_t *s);
pk_trig_srv_t *gts_server_core(gts_server_t *s); /* for the bench: provision in place */
typedef struct gts_server_stats {
    uint64_t answered, records, groups, sync_us, checkpoints, ckpt_us;
} gts_server_stats_t;
void gts_server_stats(const gts_server_t *s, gts_server_stats_t *st);

int pk_cmd_gts(int argc, char **argv);
int pk_cmd_device_poll(int argc, char **argv);
int pk_demo_trigger(int argc, char **argv);
int pk_bench_suite_gts(int argc, char **argv);

#endif
