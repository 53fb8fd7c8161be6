/*
 * `proxkey gts serve`: the trigger server shell. One thread runs the epoll
 * loop with batched UDP I/O and the core; a second thread (gts_journal.c)
 * writes and fdatasyncs journal groups.
 *
 * Group commit, pipelined: every PERSIST of the core becomes one sealed
 * journal record in the group being built (G_b), and every response is held
 * in G_b too. At most one group is syncing (G_f). When G_f's fdatasync
 * returns, its responses are sent, and G_b (everything that arrived
 * meanwhile) is handed to the sync thread. So the loop keeps receiving and
 * computing while the disk syncs, and a response leaves only after every
 * journal record appended before it is on disk. A failed write or sync stops
 * the server (exit 1) with nothing of G_f or G_b sent: the store plus the
 * journal, not memory, is the truth it restarts from.
 *
 * Checkpoints fold the journal into the store: every N records or T ms (and
 * at a clean stop), with no group syncing, the records of every device
 * changed since the last checkpoint and the deletions of delivered commands
 * go into one store transaction that also marks the journal generation as
 * folded; then a new journal file (new generation, new key) starts and the
 * old one is removed. G_b's records are covered by that transaction, so its
 * responses are released at once.
 */
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/out.h"
#include "gts.h"
#include "gts_journal.h"
#include "net/loop.h"
#include "net/ratelimit.h"
#include "net/udp.h"

#define PREFETCH_AHEAD 4 /* polls between a slot prefetch and its use */
#define SLOT_BYTES     (PK_TRIG_REC_LEN + 8 + PK_TRIG_RESP_MAX + 64)
#define INBOX_MS       200
#define CKPT_TICK_MS   1000
#define GROUP_MAX      65536 /* responses held in G_b before the loop waits for G_f */

enum { DROP_TRUNC, DROP_MALFORMED, DROP_UNKNOWN, DROP_RETX, DROP_SPACE, DROP_N };
static const char *const drop_names[] = {"oversized", "malformed", "unknown_uid", "retx_limited",
                                         "no_space"};

typedef struct held {
    pk_addr_t peer;
    uint32_t off, len;
} held_t;

/* recs: room for the frame header, nrec plaintext journal entries, room for
 * the tag; sealed in place into one frame when the group is handed off. */
#define RECS_BYTES(n) (GTS_JNL_FRAME_HDR + (size_t)(n)*GTS_JNL_ENT_LEN + GTS_JNL_TAG_LEN)

typedef struct group {
    uint8_t *recs;
    uint32_t *devs;
    size_t nrec, caprec, capdev;
    uint8_t *resp; /* held responses */
    size_t rused, rcap;
    held_t *held;
    size_t nheld, capheld;
} group_t;

struct gts_server {
    gts_db_t db;
    pk_rng_pool_t rngpool; /* the core's randomness: OpenSSL's DRBG, buffered */
    pk_rng_t rng;
    pk_wrap_ctx_t wrap;
    pk_trig_srv_t *core;
    pk_loop_t *loop;
    pk_udp_t *udp;
    pk_udp_batch_t batch;
    pk_drops_t drops;
    /* answers to retransmissions, per source address (the core's gate) */
    pk_ratelimit_t *retx_rl;
    const pk_addr_t *cur_src; /* the datagram the core is handling */
    uint64_t cur_now;
    uint8_t *arena; /* one output slot */
    pk_out_t out;
    int fatal, quiet;
    /* journal and groups */
    gts_jnl_t jnl;
    int jnl_ready;
    char jbase[GTS_JNL_PATH_MAX];
    group_t g[2];
    group_t *gb, *gf; /* building, syncing */
    int inflight;
    /* since the last checkpoint */
    uint32_t *dirty;
    size_t ndirty, capdirty;
    uint8_t *dirtymap;
    size_t mapbytes;
    uint64_t *deliv;
    size_t ndeliv, capdeliv;
    uint64_t since_ckpt, last_ckpt_ms, ckpt_records, ckpt_ms;
    /* the checkpoint thread: folds a snapshot into the store off the loop */
    pthread_t ck_th;
    int ck_started, ck_efd;
    pthread_mutex_t ck_mu;
    pthread_cond_t ck_cv;
    int ck_req, ck_quit, ck_err; /* under ck_mu */
    int ck_busy;                 /* loop thread: a snapshot is being folded */
    pk_wrap_ctx_t ck_wrap;
    uint8_t *ck_recs; /* snapshot: ck_n records of the devices ck_devs */
    uint32_t *ck_devs;
    size_t ck_n, ck_caprec, ck_capdev;
    uint64_t *ck_deliv;
    size_t ck_nd, ck_capd;
    uint64_t ck_gen, ck_t0;
    gts_server_stats_t st;
    /* the store's lease (gts_owner.c); none with memory: */
    gts_owner_t me;
    gts_owner_t ck_me; /* the checkpoint thread's copy while it folds */
    int leased;
    uint64_t lease_ms;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return PK_OK;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return PK_ERR_NOMEM;
    *p = np;
    *cap = nc;
    return PK_OK;
}

/* As grow() for a buffer of secrets: the old copy is wiped, not just freed. */
static int grow_wiped(uint8_t **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return PK_OK;
    size_t nc = *cap ? *cap : 4096;
    while (nc < need)
        nc *= 2;
    uint8_t *np = malloc(nc);
    if (!np)
        return PK_ERR_NOMEM;
    if (*p) {
        memcpy(np, *p, *cap);
        pk_wipe(*p, *cap);
        free(*p);
    }
    *p = np;
    *cap = nc;
    return PK_OK;
}

static void group_free(group_t *g)
{
    if (g->recs)
        pk_wipe(g->recs, g->caprec);
    free(g->recs);
    free(g->devs);
    free(g->resp);
    free(g->held);
    memset(g, 0, sizeof *g);
}

static void fatal(gts_server_t *s, const char *what, int rc)
{
    pk_error(what, "err=%s action=stop", pk_strerror(rc));
    s->fatal = 1;
    pk_loop_stop(s->loop);
}

/* Another server holds the store now (this one was stopped or cut off for
 * longer than its lease): stop at once, sending nothing more. */
static void lease_lost(gts_server_t *s)
{
    pk_error("gts_lease_lost", "action=stop why=\"another gts serves the store now\"");
    s->leased = 0; /* nothing more is written to the store */
    s->fatal = 1;
    pk_loop_stop(s->loop);
}

/* Responses leave only while a sixth of the lease is left to run: a server
 * that was paused past its lease may have been replaced, and must not
 * answer from a state the new one does not know. */
static int lease_ok(gts_server_t *s)
{
    if (!s->leased)
        return !s->fatal;
    if (pk_now_realtime_ms() + s->lease_ms / 6 < s->me.until_ms) /* 5 s of 30 */
        return 1;
    pk_error("gts_lease_expiring", "action=stop why=\"the lease could not be renewed in time\"");
    s->fatal = 1;
    pk_loop_stop(s->loop);
    return 0;
}

static int mark_dirty(gts_server_t *s, uint32_t dev)
{
    size_t byte = dev / 8;
    if (byte >= s->mapbytes) {
        size_t nb = s->mapbytes ? s->mapbytes : 4096;
        while (nb <= byte)
            nb *= 2;
        uint8_t *nm = realloc(s->dirtymap, nb);
        if (!nm)
            return PK_ERR_NOMEM;
        memset(nm + s->mapbytes, 0, nb - s->mapbytes);
        s->dirtymap = nm;
        s->mapbytes = nb;
    }
    if (s->dirtymap[byte] & (1u << (dev % 8)))
        return PK_OK;
    int rc = grow((void **)&s->dirty, &s->capdirty, s->ndirty + 1, sizeof *s->dirty);
    if (rc != PK_OK)
        return rc;
    s->dirtymap[byte] |= (uint8_t)(1u << (dev % 8));
    s->dirty[s->ndirty++] = dev;
    return PK_OK;
}

/* Sends a group's held responses and clears it (its records are durable). */
static void release(gts_server_t *s, group_t *g)
{
    if (g->nheld && !lease_ok(s))
        return; /* stopping: nothing of the group is sent */
    for (size_t i = 0; i < g->nrec; i++)
        pk_trig_srv_persisted(s->core, g->devs[i]);
    /* a sendmmsg per PK_UDP_BATCH_MAX responses, so the send queue stays a
     * batch long (and in cache) however large the group */
    for (size_t i = 0; i < g->nheld; i++) {
        (void)pk_udp_send(s->udp, &g->held[i].peer, g->resp + g->held[i].off, g->held[i].len);
        s->st.answered++;
        if ((i + 1) % PK_UDP_BATCH_MAX == 0)
            pk_udp_flush(s->udp);
    }
    if (g->nheld)
        pk_udp_flush(s->udp);
    if (g->nrec)
        pk_wipe(g->recs, RECS_BYTES(g->nrec)); /* plaintext entries when never sealed */
    g->nrec = g->rused = g->nheld = 0;
}

/* Forgets a group's held responses (a stop): its state is folded by the
 * final checkpoint; the devices retransmit. */
static void release_drop(gts_server_t *s, group_t *g)
{
    for (size_t i = 0; i < g->nrec; i++)
        pk_trig_srv_persisted(s->core, g->devs[i]);
    if (g->nrec)
        pk_wipe(g->recs, RECS_BYTES(g->nrec));
    g->nrec = g->rused = g->nheld = 0;
}

/* Hands G_b to the sync thread when none is syncing. */
static void kick(gts_server_t *s)
{
    if (s->inflight || s->fatal)
        return;
    group_t *b = s->gb;
    if (b->nrec == 0) {
        release(s, b); /* depends only on records already durable */
        return;
    }
    /* the sync thread seals the frame, then writes and syncs it */
    int rc = gts_jnl_submit_frame(&s->jnl, b->recs, b->nrec);
    if (rc == PK_OK) {
        s->gb = s->gf;
        s->gf = b;
    }
    if (rc != PK_OK) {
        fatal(s, "gts_journal_failed", rc);
        return;
    }
    s->inflight = 1;
    s->st.groups++;
}

static void *ck_main(void *arg)
{
    gts_server_t *s = arg;
    pthread_mutex_lock(&s->ck_mu);
    for (;;) {
        while (!s->ck_req && !s->ck_quit)
            pthread_cond_wait(&s->ck_cv, &s->ck_mu);
        if (!s->ck_req)
            break;
        pthread_mutex_unlock(&s->ck_mu);
        int rc =
            gts_db_checkpoint(&s->db, &s->ck_wrap, s->ck_devs, s->ck_recs, s->ck_n, s->ck_deliv,
                              s->ck_nd, s->ck_gen, s->leased ? &s->ck_me : NULL, s->lease_ms);
        if (rc == PK_OK && s->jbase[0])
            rc = gts_jnl_remove_upto(s->jbase, s->ck_gen);
        pk_wipe(s->ck_recs, s->ck_n * PK_TRIG_REC_LEN);
        pthread_mutex_lock(&s->ck_mu);
        s->ck_err = rc;
        s->ck_req = 0;
        uint64_t one = 1;
        if (write(s->ck_efd, &one, sizeof one) != (ssize_t)sizeof one)
            s->ck_err = PK_ERR_IO;
    }
    pthread_mutex_unlock(&s->ck_mu);
    return NULL;
}

/*
 * Starts a checkpoint (no group syncing, none folding): snapshots the records
 * of the devices changed since the last one and the delivered commands,
 * switches to a new journal generation (G_b will be sealed into it), and
 * lets the checkpoint thread fold the snapshot into the store and then
 * remove the old generation. Until it is done the store belongs to it.
 */
static void checkpoint(gts_server_t *s)
{
    int rc;
    uint64_t gen = s->jnl.gen;
    if (s->inflight || s->ck_busy || s->fatal)
        return;
    rc = grow_wiped(&s->ck_recs, &s->ck_caprec, (s->ndirty + 1) * PK_TRIG_REC_LEN);
    if (rc == PK_OK)
        rc = grow((void **)&s->ck_devs, &s->ck_capdev, s->ndirty + 1, sizeof *s->ck_devs);
    if (rc == PK_OK)
        rc = grow((void **)&s->ck_deliv, &s->ck_capd, 2 * (s->ndeliv + 1), sizeof *s->ck_deliv);
    size_t n = 0;
    for (size_t i = 0; rc == PK_OK && i < s->ndirty; i++) {
        s->ck_devs[n] = s->dirty[i];
        rc = pk_trig_srv_record(s->core, s->dirty[i], s->ck_recs + n * PK_TRIG_REC_LEN);
        if (rc == PK_OK)
            n++;
        else if (rc == PK_ERR_NOTFOUND)
            rc = PK_OK; /* removed since it changed: nothing to write back */
    }
    if (rc != PK_OK) {
        fatal(s, "gts_checkpoint_failed", rc);
        return;
    }
    s->ck_n = n;
    if (s->ndeliv)
        memcpy(s->ck_deliv, s->deliv, s->ndeliv * 2 * sizeof *s->deliv);
    s->ck_nd = s->ndeliv;
    s->ck_gen = gen;
    rc = gts_jnl_create(&s->jnl, s->jbase[0] ? s->jbase : NULL, s->db.kek, gen + 1);
    if (rc != PK_OK) {
        fatal(s, "gts_journal_failed", rc);
        return;
    }
    for (size_t i = 0; i < s->ndirty; i++)
        s->dirtymap[s->dirty[i] / 8] = 0;
    s->ndirty = s->ndeliv = 0;
    s->since_ckpt = 0;
    s->ck_busy = 1;
    s->ck_me = s->me;
    s->ck_t0 = pk_now_mono_ms();
    pthread_mutex_lock(&s->ck_mu);
    s->ck_req = 1;
    pthread_cond_signal(&s->ck_cv);
    pthread_mutex_unlock(&s->ck_mu);
}

/* The checkpoint thread is done. */
static void ck_done(gts_server_t *s)
{
    uint64_t v;
    if (read(s->ck_efd, &v, sizeof v) != (ssize_t)sizeof v)
        return;
    pthread_mutex_lock(&s->ck_mu);
    int rc = s->ck_err;
    pthread_mutex_unlock(&s->ck_mu);
    s->ck_busy = 0;
    s->last_ckpt_ms = pk_now_mono_ms();
    s->st.checkpoints++;
    s->st.ckpt_us += (s->last_ckpt_ms - s->ck_t0) * 1000;
    if (rc == PK_OK && s->leased)
        s->me = s->ck_me; /* extended by the checkpoint, with the new generation */
    if (rc == PK_ERR_DENIED)
        lease_lost(s); /* fenced: the checkpoint wrote nothing */
    else if (rc != PK_OK)
        fatal(s, "gts_checkpoint_failed", rc); /* the journal still holds everything */
}

static void on_ck(pk_loop_t *loop, int fd, unsigned events, void *ctx)
{
    (void)loop;
    (void)fd;
    (void)events;
    ck_done(ctx);
}

static void wait_ck(gts_server_t *s)
{
    while (s->ck_busy) {
        struct pollfd p = {s->ck_efd, POLLIN, 0};
        if (poll(&p, 1, 1000) > 0)
            ck_done(s);
    }
}

static int ckpt_due(gts_server_t *s)
{
    if (s->ck_busy)
        return 0;
    if (s->since_ckpt >= s->ckpt_records)
        return 1;
    return (s->ndirty || s->ndeliv) && pk_now_mono_ms() - s->last_ckpt_ms >= s->ckpt_ms;
}

/* The sync thread finished G_f. */
static void sync_done(gts_server_t *s)
{
    int rc = gts_jnl_done(&s->jnl);
    if (rc == PK_ERR_BUSY)
        return;
    s->inflight = 0;
    if (rc != PK_OK) {
        fatal(s, "gts_journal_failed", rc);
        return; /* nothing of G_f or G_b is sent */
    }
    s->since_ckpt += s->gf->nrec;
    s->st.records += s->gf->nrec;
    release(s, s->gf);
    if (ckpt_due(s))
        checkpoint(s);
    kick(s);
}

static void on_sync(pk_loop_t *loop, int fd, unsigned events, void *ctx)
{
    (void)loop;
    (void)fd;
    (void)events;
    sync_done(ctx);
}

/* Blocks until G_f's sync is done (back-pressure, and at stop). */
static void wait_sync(gts_server_t *s)
{
    while (s->inflight && !s->fatal) {
        struct pollfd p = {s->jnl.efd, POLLIN, 0};
        if (poll(&p, 1, 1000) > 0)
            sync_done(s);
    }
}

static void ckpt_timer(pk_loop_t *loop, uint64_t id, void *ctx)
{
    gts_server_t *s = ctx;
    (void)id;
    if (!s->inflight && !s->fatal && ckpt_due(s)) {
        checkpoint(s);
        kick(s);
    }
    pk_loop_timer_add(loop, pk_loop_now_ms(loop) + CKPT_TICK_MS, ckpt_timer, s);
}

/* Takes one input's actions into G_b. */
static int take(gts_server_t *s, const pk_addr_t *peer)
{
    group_t *b = s->gb;
    pk_out_t *o = &s->out;
    uint64_t deliv = 0;
    int rc = PK_OK;
    for (unsigned a = 0; a < o->n && rc == PK_OK; a++) {
        pk_act_t *act = &o->act[a];
        uint32_t dev = (uint32_t)act->dest;
        if (act->kind == PK_ACT_EVENT && act->code == PK_TRIG_EV_DELIVERED) {
            /* journalled together with the PERSIST that follows (one record) */
            deliv = pk_get_u64(act->data);
            rc = grow((void **)&s->deliv, &s->capdeliv, 2 * (s->ndeliv + 1), sizeof *s->deliv);
            if (rc == PK_OK) {
                s->deliv[2 * s->ndeliv] = dev;
                s->deliv[2 * s->ndeliv + 1] = deliv;
                s->ndeliv++;
            }
            if (!s->quiet)
                pk_info("gts_delivered", "dev_no=%u seq=%llu", (unsigned)dev,
                        (unsigned long long)deliv);
        } else if (act->kind == PK_ACT_EVENT && act->code == PK_TRIG_EV_PERSIST) {
            rc = grow_wiped(&b->recs, &b->caprec, RECS_BYTES(b->nrec + 1));
            if (rc == PK_OK)
                rc = grow((void **)&b->devs, &b->capdev, b->nrec + 1, sizeof *b->devs);
            if (rc == PK_OK)
                gts_jnl_entry(b->recs + GTS_JNL_FRAME_HDR + b->nrec * GTS_JNL_ENT_LEN, dev, deliv,
                              act->data);
            if (rc == PK_OK)
                rc = mark_dirty(s, dev);
            if (rc == PK_OK)
                b->devs[b->nrec++] = dev;
            deliv = 0;
        } else if (act->kind == PK_ACT_SEND) {
            rc = grow((void **)&b->resp, &b->rcap, b->rused + act->len, 1);
            if (rc == PK_OK)
                rc = grow((void **)&b->held, &b->capheld, b->nheld + 1, sizeof *b->held);
            if (rc == PK_OK) {
                memcpy(b->resp + b->rused, act->data, act->len);
                b->held[b->nheld].peer = *peer;
                b->held[b->nheld].off = (uint32_t)b->rused;
                b->held[b->nheld].len = (uint32_t)act->len;
                b->nheld++;
                b->rused += act->len;
            }
        }
    }
    return rc;
}

/* The core's retransmission gate: one token of the source's bucket. */
static int retx_gate(void *ctx)
{
    gts_server_t *s = ctx;
    return s->cur_src && pk_ratelimit_allow(s->retx_rl, s->cur_src, s->cur_now);
}

static void handle_batch(gts_server_t *s)
{
    pk_udp_batch_t *b = &s->batch;
    uint64_t now = pk_loop_now_ms(s->loop);
    uint64_t wall = pk_now_realtime_ms();
    /* the index lines of the whole batch, then each device's slot a few
     * polls ahead: the misses overlap (see pk_trig_srv_prefetch) */
    for (unsigned i = 0; i < b->n; i++)
        pk_trig_srv_prefetch(s->core, b->dg[i].data, b->dg[i].len, 0);
    for (unsigned i = 0; i < b->n && i < PREFETCH_AHEAD; i++)
        pk_trig_srv_prefetch(s->core, b->dg[i].data, b->dg[i].len, 1);
    for (unsigned i = 0; i < b->n && !s->fatal; i++) {
        pk_out_t *o = &s->out;
        if (i + PREFETCH_AHEAD < b->n)
            pk_trig_srv_prefetch(s->core, b->dg[i + PREFETCH_AHEAD].data,
                                 b->dg[i + PREFETCH_AHEAD].len, 1);
        pk_out_init(o, s->arena, SLOT_BYTES);
        if (b->dg[i].truncated) {
            pk_drop(&s->drops, DROP_TRUNC, now, NULL);
            continue;
        }
        s->cur_src = &b->dg[i].peer;
        s->cur_now = now;
        int rc = pk_trig_srv_input(s->core, b->dg[i].data, b->dg[i].len, wall, o);
        s->cur_src = NULL;
        if (rc != PK_OK) {
            char src[PK_ADDR_STRLEN];
            unsigned r = rc == PK_ERR_DENIED      ? DROP_UNKNOWN
                         : rc == PK_ERR_MALFORMED ? DROP_MALFORMED
                         : rc == PK_ERR_LIMIT     ? DROP_RETX
                                                  : DROP_SPACE;
            pk_drop(&s->drops, r, now, pk_addr_format(&b->dg[i].peer, src));
            continue;
        }
        rc = take(s, &b->dg[i].peer);
        pk_out_reset(o);
        if (rc != PK_OK)
            fatal(s, "gts_journal_failed", rc); /* the core is ahead of any durable state */
    }
    kick(s);
}

static void on_readable(pk_udp_t *u, void *ctx)
{
    gts_server_t *s = ctx;
    for (int round = 0; round < 16 && !s->fatal; round++) {
        if (s->gb->nheld >= GROUP_MAX)
            wait_sync(s); /* back-pressure: the disk is the bottleneck */
        int n = pk_udp_recv_batch(u, &s->batch);
        if (n <= 0)
            break;
        handle_batch(s);
    }
}

/* ---- inbox: devices and commands added by the CLI while we run ---- */

typedef struct inbox_ctx {
    gts_server_t *s;
    uint8_t keys[256][8];
    size_t klen[256];
    unsigned n;
} inbox_ctx_t;

static int inbox_collect(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
                         size_t vlen)
{
    inbox_ctx_t *c = ctx;
    (void)val;
    (void)vlen;
    if (klen > 8 || c->n >= 256)
        return 1;
    memcpy(c->keys[c->n], key, klen);
    c->klen[c->n++] = klen;
    return 0;
}

static int inbox_fn(pk_txn_t *txn, void *ctx)
{
    inbox_ctx_t *c = ctx;
    gts_server_t *s = c->s;
    int rc;
    /* new devices first, so their commands find them */
    c->n = 0;
    rc = pk_txn_scan(txn, "gts_newdev", NULL, 0, NULL, 0, 256, inbox_collect, c);
    for (unsigned i = 0; rc == PK_OK && i < c->n; i++) {
        uint8_t val[PK_TRIG_REC_LEN + PK_WRAP_OVERHEAD], rec[PK_TRIG_REC_LEN];
        size_t vl;
        if (c->klen[i] != 4)
            continue;
        rc = pk_txn_get(txn, "gts_dev", c->keys[i], 4, val, sizeof val, &vl);
        if (rc == PK_OK)
            rc = gts_rec_open(&s->db, c->keys[i], val, vl, rec);
        if (rc == PK_OK) {
            rc = pk_trig_srv_load(s->core, pk_get_u32(c->keys[i]), rec, sizeof rec);
            if (rc == PK_ERR_EXISTS)
                rc = PK_OK;
        }
        pk_wipe(rec, sizeof rec);
        if (rc == PK_OK)
            rc = pk_txn_del(txn, "gts_newdev", c->keys[i], 4);
    }
    if (rc != PK_OK)
        return rc;
    c->n = 0;
    rc = pk_txn_scan(txn, "gts_inbox", NULL, 0, NULL, 0, 256, inbox_collect, c);
    for (unsigned i = 0; rc == PK_OK && i < c->n; i++) {
        uint8_t dev[4], key[12], val[1 + PK_TRIG_ARG_MAX];
        size_t dl, vl;
        if (c->klen[i] != 8)
            continue;
        rc = pk_txn_get(txn, "gts_inbox", c->keys[i], 8, dev, sizeof dev, &dl);
        if (rc == PK_OK && dl == 4) {
            memcpy(key, dev, 4);
            memcpy(key + 4, c->keys[i], 8);
            rc = pk_txn_get(txn, "gts_cmd", key, 12, val, sizeof val, &vl);
            if (rc == PK_OK && vl >= 1) {
                rc = pk_trig_srv_queue(s->core, pk_get_u32(dev), pk_get_u64(c->keys[i]), val[0],
                                       val + 1, vl - 1);
                if (rc != PK_OK)
                    pk_warn("gts_queue_refused", "seq=%llu err=%s",
                            (unsigned long long)pk_get_u64(c->keys[i]), pk_strerror(rc));
                rc = PK_OK;
            } else if (rc == PK_ERR_NOTFOUND) {
                rc = PK_OK;
            }
        }
        if (rc == PK_OK)
            rc = pk_txn_del(txn, "gts_inbox", c->keys[i], 8);
    }
    if (rc != PK_OK)
        return rc;
    /* devices removed (gts_db_remove): out of memory; their records are
     * gone from the store and the tombstone keeps the journal from
     * bringing them back, so nothing else is needed */
    c->n = 0;
    rc = pk_txn_scan(txn, "gts_deldev", NULL, 0, NULL, 0, 256, inbox_collect, c);
    for (unsigned i = 0; rc == PK_OK && i < c->n; i++) {
        if (c->klen[i] == 4) {
            uint32_t dev = pk_get_u32(c->keys[i]);
            if (pk_trig_srv_remove(s->core, dev) == PK_OK && !s->quiet)
                pk_info("gts_device_removed", "dev_no=%u", (unsigned)dev);
        }
        rc = pk_txn_del(txn, "gts_deldev", c->keys[i], c->klen[i]);
    }
    return rc;
}

/* The lease, in the inbox's transaction: still ours (else the server stops:
 * another one serves the store now), extended once a third of it is used. */
static int lease_fn(pk_txn_t *txn, void *ctx)
{
    gts_server_t *s = ctx;
    uint64_t now = pk_now_realtime_ms();
    int extend = now + s->lease_ms * 2 / 3 >= s->me.until_ms;
    return gts_owner_fence(txn, &s->me, now, s->lease_ms, extend);
}

static int inbox_lease_fn(pk_txn_t *txn, void *ctx)
{
    inbox_ctx_t *c = ctx;
    int rc = c->s->leased ? lease_fn(txn, c->s) : PK_OK;
    return rc == PK_OK ? inbox_fn(txn, c) : rc;
}

static void inbox_timer(pk_loop_t *loop, uint64_t id, void *ctx)
{
    gts_server_t *s = ctx;
    (void)id;
    inbox_ctx_t *c = s->ck_busy ? NULL : calloc(1, sizeof *c); /* the store is busy: later */
    if (c) {
        c->s = s;
        int rc = pk_store_run(s->db.st, inbox_lease_fn, c, 5);
        free(c);
        if (rc == PK_ERR_DENIED) {
            lease_lost(s);
            return;
        }
        if (rc != PK_OK)
            pk_warn("gts_inbox", "err=%s", pk_strerror(rc));
    }
    pk_loop_timer_add(loop, pk_loop_now_ms(loop) + INBOX_MS, inbox_timer, s);
}

/* ---- lifecycle ---- */

static int lease_renew_fn(pk_txn_t *txn, void *ctx)
{
    gts_server_t *s = ctx;
    return gts_owner_fence(txn, &s->me, pk_now_realtime_ms(), s->lease_ms, 1);
}

/*
 * Takes the store's lease before anything else touches the store (gts.h,
 * gts_owner.c). Refused while another server holds it, and when the last
 * one ran on another host and left a journal generation that is neither
 * folded into the store nor here (the devices it answered would not be
 * recognised); --force-takeover accepts that loss.
 */
static int claim(gts_server_t *s, const gts_serve_opts_t *o)
{
    gts_owner_t prev;
    uint64_t now = pk_now_realtime_ms(), folded = 0;
    int had = 0, rc;
    char f[GTS_JNL_PATH_MAX + 20];
    gts_owner_self(&s->me);
    rc = gts_owner_get(&s->db, &prev);
    /* (a holder whose lease runs is refused below, by the claim) */
    if (rc == 1 && prev.until_ms <= now && !gts_owner_same_host(&prev, &s->me) && prev.gen &&
        !o->force_takeover && (rc = gts_db_folded(&s->db, &folded)) == PK_OK && prev.gen > folded) {
        if (gts_jnl_path(f, sizeof f, s->jbase, prev.gen) != PK_OK || access(f, F_OK) != 0) {
            fprintf(stderr,
                    "proxkey gts serve: %s was last served by pid %u on %s, whose journal "
                    "generation %llu is not folded into the store and not here (%s); start "
                    "there, or point --journal at its files (--force-takeover: devices it "
                    "answered since its last checkpoint will not be recognised)\n",
                    o->store, prev.pid, prev.host, (unsigned long long)prev.gen, f);
            return PK_ERR_BUSY;
        }
    }
    if (rc < 0) {
        fprintf(stderr, "proxkey gts serve: reading the lease: %s\n", pk_strerror(rc));
        return rc;
    }
    rc = gts_owner_claim(&s->db, &s->me, now, s->lease_ms, &prev, &had);
    if (rc == PK_ERR_BUSY) {
        fprintf(stderr,
                "proxkey gts serve: %s is served by another gts (pid %u on %s, lease for %llu s "
                "more); stop it first\n",
                o->store, prev.pid, prev.host,
                (unsigned long long)((prev.until_ms - now + 999) / 1000));
        return rc;
    }
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: taking the lease: %s\n", pk_strerror(rc));
        return rc;
    }
    s->leased = 1;
    if (had)
        pk_warn("gts_takeover", "prev_pid=%u prev_host=%s prev_gen=%llu reason=%s", prev.pid,
                prev.host, (unsigned long long)prev.gen,
                prev.until_ms <= now ? "lease_over" : "gone_from_this_host");
    return PK_OK;
}

int gts_server_new(gts_server_t **out, const gts_serve_opts_t *o)
{
    gts_server_t *s = calloc(1, sizeof *s);
    pk_addr_t addr;
    const char *why = NULL;
    uint64_t max_seq = 0;
    int rc;
    if (!s)
        return PK_ERR_NOMEM;
    s->quiet = o->quiet;
    pk_drops_init(&s->drops, drop_names, DROP_N);
    rc = pk_addr_parse(o->listen, &addr, &why);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: --listen %s: %s\n", o->listen, why ? why : "bad");
        goto fail;
    }
    rc = gts_db_open(&s->db, o->store, o->kek, 1);
    if (rc != PK_OK)
        goto fail;
    rc = pk_wrap_ctx_init(&s->wrap, s->db.kek);
    if (rc != PK_OK)
        goto fail;
    pk_rng_pool_init(&s->rngpool, &s->rng);
    rc = pk_trig_srv_new(&s->core, &s->rng, o->reserve);
    if (rc != PK_OK)
        goto fail;
    if (!o->retx_unlimited) {
        uint8_t k[PK_RATELIMIT_KEY_LEN];
        uint32_t rate = o->retx_rate ? o->retx_rate : GTS_RETX_RATE;
        pk_ratelimit_cfg_t rl = {rate, o->retx_burst ? o->retx_burst : 2 * rate, 65536};
        rc = pk_random(k, sizeof k);
        if (rc == PK_OK)
            rc = pk_ratelimit_new(&s->retx_rl, &rl, k);
        pk_wipe(k, sizeof k);
        if (rc != PK_OK) {
            fprintf(stderr, "proxkey gts serve: rate limiter: %s\n", pk_strerror(rc));
            goto fail;
        }
        pk_trig_srv_set_retx_gate(s->core, retx_gate, s);
    }
    s->gb = &s->g[0];
    s->gf = &s->g[1];
    s->ckpt_records = o->ckpt_records ? o->ckpt_records : 1048576;
    s->ckpt_ms = o->ckpt_ms ? o->ckpt_ms : 60000;
    s->last_ckpt_ms = pk_now_mono_ms();
    uint64_t gen = 0;
    rc = gts_db_journal_base(o->store, o->journal, s->jbase, sizeof s->jbase);
    if (rc == PK_OK && strncmp(o->store, "memory:", 7) != 0) {
        s->lease_ms = o->lease_ms ? o->lease_ms : GTS_LEASE_MS;
        if ((rc = claim(s, o)) != PK_OK)
            goto fail;
    }
    if (rc == PK_OK)
        rc = gts_db_recover(&s->db, s->jbase, &gen);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: journal recovery: %s\n", pk_strerror(rc));
        goto fail;
    }
    s->loop = pk_loop_new();
    if (!s->loop) {
        rc = PK_ERR_NOMEM;
        goto fail;
    }
    /* SIGINT/SIGTERM stop the loop (then a final checkpoint); blocked before
     * the sync thread starts so that it inherits the mask */
    if (o->signals && (rc = pk_loop_signals(s->loop, NULL, NULL)) != PK_OK)
        goto fail;
    rc = gts_jnl_init(&s->jnl);
    s->ck_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rc == PK_OK && s->ck_efd < 0)
        rc = PK_ERR_IO;
    if (rc == PK_OK)
        rc = pk_wrap_ctx_init(&s->ck_wrap, s->db.kek);
    if (rc == PK_OK) {
        pthread_mutex_init(&s->ck_mu, NULL);
        pthread_cond_init(&s->ck_cv, NULL);
        if (pthread_create(&s->ck_th, NULL, ck_main, s) != 0)
            rc = PK_ERR_NOMEM;
        else
            s->ck_started = 1;
    }
    if (rc == PK_OK) {
        s->jnl_ready = 1;
        rc = gts_jnl_create(&s->jnl, s->jbase[0] ? s->jbase : NULL, s->db.kek, gen + 1);
    }
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: cannot create the journal %s: %s\n", s->jbase,
                pk_strerror(rc));
        goto fail;
    }
    if (s->leased) { /* the generation this server writes, in its lease */
        s->me.gen = gen + 1;
        rc = pk_store_run(s->db.st, lease_renew_fn, s, 5);
        if (rc != PK_OK) {
            fprintf(stderr, "proxkey gts serve: writing the lease: %s\n", pk_strerror(rc));
            goto fail;
        }
    }
    rc = gts_db_load(&s->db, s->core, &max_seq);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: loading the store: %s\n", pk_strerror(rc));
        goto fail;
    }
    s->arena = malloc(SLOT_BYTES);
    if (!s->arena) {
        rc = PK_ERR_NOMEM;
        goto fail;
    }
    pk_udp_opts_t uo = {4 << 20, 4 << 20, 8192};
    rc = pk_udp_open(&s->udp, &addr, &uo);
    if (rc == PK_OK)
        rc = pk_udp_batch_init(&s->batch, PK_TRIG_POLL_LEN + 1); /* longer = truncated */
    if (rc == PK_OK)
        rc = pk_udp_attach(s->udp, s->loop, on_readable, s);
    if (rc == PK_OK)
        rc = pk_loop_add_fd(s->loop, s->jnl.efd, PK_EV_READ, on_sync, s);
    if (rc == PK_OK)
        rc = pk_loop_add_fd(s->loop, s->ck_efd, PK_EV_READ, on_ck, s);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: cannot listen on %s: %s\n", o->listen, pk_strerror(rc));
        goto fail;
    }
    pk_loop_timer_add(s->loop, pk_loop_now_ms(s->loop) + INBOX_MS, inbox_timer, s);
    pk_loop_timer_add(s->loop, pk_loop_now_ms(s->loop) + CKPT_TICK_MS, ckpt_timer, s);
    *out = s;
    return PK_OK;
fail:
    /* it answered nothing: whatever recovery folded is in the store and its
     * own journal is empty, so the next server (of any host) needs none */
    if (s->leased && gts_owner_release(&s->db, &s->me) == PK_OK)
        s->leased = 0;
    gts_server_free(s);
    return rc;
}

uint16_t gts_server_port(const gts_server_t *s)
{
    pk_addr_t a;
    if (pk_udp_local_addr(s->udp, &a) != PK_OK)
        return 0;
    return pk_addr_port(&a);
}

int gts_server_run(gts_server_t *s)
{
    int rc = pk_loop_run(s->loop);
    if (s->fatal)
        return PK_ERR_IO;
    return rc;
}

void gts_server_stop(gts_server_t *s)
{
    pk_loop_stop(s->loop);
}

void gts_server_free(gts_server_t *s)
{
    if (!s)
        return;
    if (s->jnl_ready && s->ck_started && s->core && s->udp && !s->fatal) {
        /* clean stop: let the syncing group and a running checkpoint finish,
         * then fold everything (G_b is dropped: none of it was sent) */
        wait_sync(s);
        wait_ck(s);
        if (!s->fatal) {
            release_drop(s, s->gb);
            checkpoint(s);
            wait_ck(s);
        }
        /* everything folded: the next server needs no journal of ours */
        if (!s->fatal && s->leased && gts_owner_release(&s->db, &s->me) == PK_OK)
            s->leased = 0;
    }
    if (s->ck_started) {
        pthread_mutex_lock(&s->ck_mu);
        s->ck_quit = 1;
        pthread_cond_signal(&s->ck_cv);
        pthread_mutex_unlock(&s->ck_mu);
        pthread_join(s->ck_th, NULL);
        pthread_mutex_destroy(&s->ck_mu);
        pthread_cond_destroy(&s->ck_cv);
    }
    if (s->ck_efd > 0) {
        if (s->loop)
            (void)pk_loop_del_fd(s->loop, s->ck_efd);
        close(s->ck_efd);
    }
    pk_wrap_ctx_clear(&s->ck_wrap);
    if (s->ck_recs) {
        pk_wipe(s->ck_recs, s->ck_caprec);
        free(s->ck_recs);
    }
    free(s->ck_devs);
    free(s->ck_deliv);
    if (s->jnl_ready && s->loop && s->jnl.efd >= 0)
        (void)pk_loop_del_fd(s->loop, s->jnl.efd);
    if (s->jnl_ready)
        gts_jnl_fini(&s->jnl);
    group_free(&s->g[0]);
    group_free(&s->g[1]);
    free(s->dirty);
    free(s->dirtymap);
    free(s->deliv);
    pk_rng_pool_clear(&s->rngpool);
    pk_udp_close(s->udp);
    pk_udp_batch_free(&s->batch);
    pk_loop_free(s->loop);
    pk_trig_srv_free(s->core);
    pk_ratelimit_free(s->retx_rl);
    pk_wrap_ctx_clear(&s->wrap);
    if (s->db.st)
        gts_db_close(&s->db);
    free(s->arena);
    free(s);
}

size_t gts_server_devices(const gts_server_t *s)
{
    return pk_trig_srv_count(s->core);
}

pk_trig_srv_t *gts_server_core(gts_server_t *s)
{
    return s->core;
}

void gts_server_stats(const gts_server_t *s, gts_server_stats_t *st)
{
    *st = s->st;
    gts_jnl_t *j = (gts_jnl_t *)&s->jnl; /* the counter is the sync thread's */
    pthread_mutex_lock(&j->mu);
    st->sync_us = j->sync_us;
    pthread_mutex_unlock(&j->mu);
}
