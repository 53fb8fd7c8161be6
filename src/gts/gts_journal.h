/*
 * The gts journal: an append-only file of fixed-size, sealed device-state
 * records, made durable in groups by a dedicated sync thread, and folded
 * into the store by checkpoints. Format (docs/protocol.md, Trigger "Durability"):
 *
 *   file  <base>.<gen as 16 hex digits>
 *   header (GTS_JNL_HDR_LEN = 64 bytes)
 *     0  magic  "PKGTSJNL"
 *     8  version u32 (1) | 12 entry size u32 (GTS_JNL_ENT_LEN)
 *    16  gen u64          | 24 salt (16 random bytes)
 *    40  reserved (8, zero)
 *    48  tag (16): AES-256-GCM tag of an empty message, nonce 0, aad bytes 0..47
 *   then one frame per group commit, back to back:
 *     0  type u8 (1: group) | 1 reserved (3, zero) | 4 count u32 (1..GTS_JNL_FRAME_MAX)
 *     8  seq u64 (frame number in the file: 1, 2, 3, ...)
 *    16  ciphertext of count entries of GTS_JNL_ENT_LEN = 92 bytes:
 *          0 dev_no u32 | 4 delivered command seq u64 (0: none)
 *         12 device record (PK_TRIG_REC_LEN = 80 bytes, srv.c layout)
 *     .  tag (16)
 *   AES-256-GCM under JK = HMAC-SHA-256(KEK, "proxkey gts journal v1" || gen || salt),
 *   nonce = 0x00000000 || seq (u64 BE), aad = frame bytes 0..15. A group is
 *   one frame: it replays whole or not at all (the tag is the torn-write check).
 *
 * A file is never appended to after it was closed or after a crash: recovery
 * folds it into the store and starts a new generation with a new salt, so a
 * (key, nonce) pair never seals two different records.
 */
#ifndef PK_SRC_GTS_JOURNAL_H
#define PK_SRC_GTS_JOURNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "proto/trigger/srv.h"

#define GTS_JNL_HDR_LEN   64
#define GTS_JNL_FRAME_HDR 16
#define GTS_JNL_ENT_LEN   92
#define GTS_JNL_TAG_LEN   16
#define GTS_JNL_FRAME_MAX 1048576 /* entries per frame */
#define GTS_JNL_VERSION   1
#define GTS_JNL_PATH_MAX  4096

typedef struct gts_jnl {
    int fd; /* -1: no file (ephemeral memory: store): groups are "durable" at once */
    char path[GTS_JNL_PATH_MAX];
    uint64_t gen, seq, off; /* seq of the last sealed frame; file offset of the next write */
    pk_aead_t aead;         /* under JK */
    /* the sync thread: one request at a time (write len bytes at off, fdatasync) */
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int efd; /* eventfd, readable when a request is done */
    int req, quit, err;
    int busy; /* main thread: submitted, completion not yet collected */
    const uint8_t *wbuf;
    size_t wlen;
    uint64_t woff;
    uint8_t *wframe; /* a frame the sync thread seals before writing (or NULL) */
    size_t wcount;
    uint64_t wseq;
    uint64_t syncs, sync_us; /* counters */
} gts_jnl_t;

/* Starts the sync thread and the eventfd (fd -1 until gts_jnl_create). */
int gts_jnl_init(gts_jnl_t *j);
/* Stops the thread (waits for a running request), closes the file, wipes JK. */
void gts_jnl_fini(gts_jnl_t *j);

/* Creates journal file <base>.<gen> (O_EXCL), writes and syncs its header and
 * the directory. base NULL: no file (fd -1). Replaces the current file, which
 * must be idle (no request running). PK_OK, PK_ERR_IO, PK_ERR_EXISTS. */
int gts_jnl_create(gts_jnl_t *j, const char *base, const uint8_t kek[32], uint64_t gen);

/* Writes one plaintext entry (ent: GTS_JNL_ENT_LEN bytes). */
void gts_jnl_entry(uint8_t *ent, uint32_t dev_no, uint64_t delivered_seq,
                   const uint8_t rec[PK_TRIG_REC_LEN]);

/* Seals a frame in place: buf holds GTS_JNL_FRAME_HDR bytes of room, count
 * entries, and GTS_JNL_TAG_LEN bytes of room after them (the caller's
 * layout); the next seq is used. *len receives the frame length. PK_OK,
 * PK_ERR_INVAL (count 0 or too many), PK_ERR_CRYPTO. */
int gts_jnl_seal_frame(gts_jnl_t *j, uint8_t *buf, size_t count, size_t *len);

/* Hands len bytes (sealed frames) to the sync thread (write + fdatasync);
 * buf must stay untouched until gts_jnl_done() returned for it. With no file
 * the request completes at once (the eventfd still fires). PK_ERR_STATE
 * while the previous request's completion is not collected. */
int gts_jnl_submit(gts_jnl_t *j, const uint8_t *buf, size_t len);

/* As gts_jnl_seal_frame + gts_jnl_submit, the sealing done by the sync
 * thread (the serving thread hands over plaintext entries and goes on); a
 * sealing failure is the request's error. The next seq is taken now.
 * PK_ERR_INVAL (count), PK_ERR_STATE (as gts_jnl_submit). */
int gts_jnl_submit_frame(gts_jnl_t *j, uint8_t *buf, size_t count);
/* After the eventfd fired: consumes it and returns the request's result
 * (PK_OK: the records are on disk; PK_ERR_BUSY: not done yet; else PK_ERR_IO). */
int gts_jnl_done(gts_jnl_t *j);

/*
 * Reads every journal <base>.<gen> with gen > after_gen, oldest first, and
 * calls cb for each entry of each valid frame in order, stopping in each
 * file at the first frame that is short, out of sequence or fails
 * authentication (a torn tail: a group that was never acknowledged). *max_gen receives the highest
 * gen found (after_gen if none). A file with a bad header is an error (PK_ERR_AUTH /
 * PK_ERR_MALFORMED) unless it is shorter than a header or its header is all zero (a crash while
 * creating it, before its header was synced and so before any record in it could be acknowledged:
 * skipped). cb returning non-zero stops with that.
 */
typedef int (*gts_jnl_cb)(void *ctx, uint32_t dev_no, uint64_t delivered_seq,
                          const uint8_t rec[PK_TRIG_REC_LEN]);
int gts_jnl_replay(const char *base, const uint8_t kek[32], uint64_t after_gen, gts_jnl_cb cb,
                   void *ctx, uint64_t *max_gen);

/* The file name of generation gen: "<base>.<gen as 16 lower-case hex>".
 * PK_OK, or PK_ERR_INVAL when it does not fit in n bytes. */
int gts_jnl_path(char *out, size_t n, const char *base, uint64_t gen);

/* Removes every journal <base>.<gen> with gen <= upto (then syncs the directory). */
int gts_jnl_remove_upto(const char *base, uint64_t upto);

#endif
