/*
 * `proxkey kms serve`: the core behind mutual TLS 1.3, with the audit group
 * commit on a committer thread.
 *
 * Group commit. pk_kms_handle() queues the audit record of every vector and
 * key it issues; the response waits, held in its connection's FIFO, until the
 * batch holding the record is durable. A committer thread (its own store
 * handle) commits one batch at a time: while it commits, new records gather
 * in the next batch, so under load one commit carries everything that
 * arrived during the previous one. When a batch fails to commit, its held
 * responses are replaced by KMS_ERR(BUSY): no key leaves without a durable
 * audit record. Responses that need no record (refusals, directory lookups;
 * with --group-writes off, allocations, which then commit their own record)
 * still wait behind earlier ones on their connection, so each connection
 * answers in request order.
 *
 * First registrations and allocations (the core's group_writes, kms.h
 * "Durability"; on unless --group-writes off). A KEYS_REQ that needs a root
 * key or directory entry written, or an ALLOC_REQ whose pair has no KSI yet,
 * is deferred: the core queues its writes as an intent in the open batch,
 * and the request itself (not an answer) waits in its place in the
 * connection's queue. When
 * that batch is done - committed or failed - the request is handed to the
 * core again and answered from what is now in the store, its audit records
 * going into the next batch (so it leaves after two commits); a failed batch
 * only means it is deferred again. After PK_KMS_DEFER_TRIES re-submissions
 * it is answered KMS_ERR(BUSY). Answers held behind a deferred request may
 * wait longer than their own batch: a failed batch's answers are therefore
 * turned into KMS_ERR(BUSY) at once, wherever they are queued.
 */
#include <errno.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"
#include "kms_shell.h"
#include "net/loop.h"
#include "net/tls.h"
#include "store/wrap.h"

typedef struct held {
    struct held *next;
    uint64_t gen; /* 0: needs no commit; deferred: the batch to wait for */
    uint8_t req_type;
    uint8_t deferred; /* buf holds the request, to hand in again after gen */
    uint8_t tries;    /* re-submissions so far */
    size_t len;
    uint8_t buf[]; /* an answer, or (deferred) the request; PK_KMS_RESP_MAX then */
} held_t;

typedef struct kconn {
    struct kconn *prev, *next;
    struct server *srv;
    pk_tls_conn_t *c;
    held_t *head, *tail;
    size_t ndefer; /* deferred entries in the queue */
    char cn[PK_TLS_CN_MAX + 1];
} kconn_t;

typedef struct server {
    pk_rng_pool_t rngpool; /* the core's randomness: OpenSSL's DRBG, buffered */
    pk_rng_t rng;
    pk_loop_t *loop;
    pk_tls_ctx_t *tls;
    pk_tls_listener_t *lis;
    pk_store_t *st;
    pk_kms_t *kms;
    kconn_t *conns;
    const char *db;
    /* committer */
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int efd;
    pk_kms_batch_t *todo; /* handed to the thread */
    int busy, quit, thr_started;
    uint64_t done_number; /* results, under mu */
    int done_rc, done_ready;
    uint64_t timer;
    uint64_t refused, commit_failed, defer_busy;
} server_t;

static void held_free(held_t *h)
{
    pk_wipe(h->buf, h->len);
    free(h);
}

static void conn_drop(kconn_t *k)
{
    server_t *s = k->srv;
    while (k->head) {
        held_t *h = k->head;
        k->head = h->next;
        held_free(h);
    }
    if (k->prev)
        k->prev->next = k->next;
    else
        s->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    free(k);
}

/* --log-level debug: one line per answer sent (type byte and length only). */
static void trace_send(const kconn_t *k, const uint8_t *b, size_t n)
{
    pk_debug("msg", "from=kms to=%s type=0x%02x len=%zu", k->cn, n ? b[0] : 0, n);
}

/* Sends what may leave, in order: answers whose batch committed (up to
 * `upto`) or that need none; stops at a deferred request. */
static void conn_release(kconn_t *k, uint64_t upto)
{
    while (k->head && !k->head->deferred && (k->head->gen == 0 || k->head->gen <= upto)) {
        held_t *h = k->head;
        k->head = h->next;
        if (!k->head)
            k->tail = NULL;
        trace_send(k, h->buf, h->len);
        (void)pk_tls_conn_send(k->c, h->buf, h->len);
        held_free(h);
    }
}

/* Batch `failed` did not commit: its held answers become KMS_ERR(BUSY), now,
 * also those still queued behind a deferred request (their keys are wiped). */
static void conn_fail(kconn_t *k, uint64_t failed)
{
    for (held_t *h = k->head; h; h = h->next) {
        if (h->deferred || h->gen != failed)
            continue;
        pk_wipe(h->buf, h->len);
        h->len = pk_kms_err_frame(PK_ERR_BUSY, h->req_type, PK_KMS_REQ_MIN, h->buf, h->len);
        h->gen = 0;
    }
}

/* Hands deferred request h to the core again (its batch is done) and puts
 * the outcome in its place: an answer (held for the batch now open when it
 * queued audit records), a refusal, or the request deferred again - at most
 * PK_KMS_DEFER_TRIES times, then KMS_ERR(BUSY). */
static void resubmit(kconn_t *k, held_t *h)
{
    server_t *s = k->srv;
    uint8_t resp[PK_KMS_RESP_MAX];
    size_t rl = 0;
    size_t before = pk_kms_pending(s->kms);
    uint64_t gen = pk_kms_batch_gen(s->kms);
    int rc =
        pk_kms_handle(s->kms, k->cn, h->buf, h->len, pk_now_realtime_ms(), resp, sizeof resp, &rl);
    h->tries++;
    if (rc == PK_KMS_DEFER && h->tries < PK_KMS_DEFER_TRIES) {
        h->gen = gen;
        return;
    }
    if (rc == PK_KMS_DEFER || rl == 0) {
        s->defer_busy += rc == PK_KMS_DEFER;
        pk_debug("request_deferred_busy", "node=%s type=0x%02x tries=%u err=%s", k->cn, h->req_type,
                 h->tries, pk_strerror(rc == PK_KMS_DEFER ? PK_ERR_BUSY : rc));
        rl = pk_kms_err_frame(PK_ERR_BUSY, h->req_type, PK_KMS_REQ_MIN, resp, sizeof resp);
        rc = PK_ERR_BUSY;
    }
    if (rc != PK_OK) {
        s->refused++;
        pk_debug("request_refused", "node=%s type=0x%02x len=%zu err=%s", k->cn, h->req_type,
                 h->len, pk_strerror(rc));
    }
    int needs = rc == PK_OK && pk_kms_pending(s->kms) > before;
    pk_wipe(h->buf, h->len);
    memcpy(h->buf, resp, rl); /* rl <= PK_KMS_RESP_MAX, the buffer's size */
    pk_wipe(resp, rl);
    h->len = rl;
    h->gen = needs ? gen : 0;
    h->deferred = 0;
    k->ndefer--;
}

/* ---- committer thread ---- */

static void *committer(void *arg)
{
    server_t *s = arg;
    pk_store_t *st = NULL;
    int orc = pk_store_open(s->db, &st);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->todo && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->todo && s->quit)
            break;
        pk_kms_batch_t *b = s->todo;
        pthread_mutex_unlock(&s->mu);
        int rc = orc != PK_OK ? orc : pk_kms_batch_commit(st, b);
        if (rc == PK_ERR_IO && st) { /* one reconnect/retry for a lost connection */
            rc = pk_kms_batch_commit(st, b);
        }
        pthread_mutex_lock(&s->mu);
        s->todo = NULL;
        s->done_number = pk_kms_batch_number(b);
        s->done_rc = rc;
        s->done_ready = 1;
        pk_kms_batch_free(b);
        uint64_t one = 1;
        if (write(s->efd, &one, sizeof one) < 0) { /* the loop reads it; cannot fail short */
        }
    }
    pthread_mutex_unlock(&s->mu);
    pk_store_close(st);
    return NULL;
}

static void on_kick_timer(pk_loop_t *loop, uint64_t id, void *ctx);

/* Hands the queued records to the committer when it is idle. If the batch
 * cannot be taken (no memory for its copy), everything stays queued and
 * this is tried again in KICK_RETRY_MS: held answers must not wait for the
 * next frame to arrive, which may never come. */
#define KICK_RETRY_MS 10
static void kick(server_t *s)
{
    if (s->busy || pk_kms_pending(s->kms) == 0)
        return;
    pk_kms_batch_t *b = NULL;
    int rc = pk_kms_batch_take(s->kms, &b);
    if (rc != PK_OK || !b) {
        if (rc != PK_OK && !s->timer) {
            pk_warn("audit_batch_take_failed", "err=%s retry_ms=%d", pk_strerror(rc),
                    KICK_RETRY_MS);
            s->timer = pk_loop_timer_add(s->loop, pk_loop_now_ms(s->loop) + KICK_RETRY_MS,
                                         on_kick_timer, s);
        }
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->todo = b;
    s->busy = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void on_kick_timer(pk_loop_t *loop, uint64_t id, void *ctx)
{
    server_t *s = ctx;
    (void)loop;
    (void)id;
    s->timer = 0;
    kick(s);
}

static void schedule_kick(server_t *s)
{
    /* a due timer runs after this iteration's fd events: all frames read in
     * one iteration share a batch */
    if (!s->busy && !s->timer)
        s->timer = pk_loop_timer_add(s->loop, 0, on_kick_timer, s);
}

static void on_committed(pk_loop_t *loop, int fd, unsigned ev, void *ctx)
{
    server_t *s = ctx;
    uint64_t v;
    (void)loop;
    (void)ev;
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
        return;
    pthread_mutex_lock(&s->mu);
    int ready = s->done_ready, rc = s->done_rc;
    uint64_t num = s->done_number;
    s->done_ready = 0;
    pthread_mutex_unlock(&s->mu);
    if (!ready)
        return;
    s->busy = 0;
    if (rc != PK_OK) {
        s->commit_failed++;
        pk_error("audit_commit_failed", "batch=%" PRIu64 " err=%s", num, pk_strerror(rc));
    }
    for (kconn_t *k = s->conns; k; k = k->next) {
        if (rc != PK_OK)
            conn_fail(k, num);
        size_t left = k->ndefer; /* bounded: each entry at most once */
        for (held_t *h = k->head; h && left > 0; h = h->next) {
            if (!h->deferred)
                continue;
            left--;
            if (h->gen <= num)
                resubmit(k, h);
        }
        conn_release(k, num);
    }
    kick(s); /* what gathered meanwhile */
}

/* ---- connections ---- */

static void on_open(pk_tls_conn_t *c, void *ud)
{
    server_t *s = ud;
    kconn_t *k = calloc(1, sizeof *k);
    if (!k) {
        pk_tls_conn_close(c);
        return;
    }
    k->srv = s;
    k->c = c;
    snprintf(k->cn, sizeof k->cn, "%s", pk_tls_conn_peer_cn(c));
    k->next = s->conns;
    if (s->conns)
        s->conns->prev = k;
    s->conns = k;
    pk_tls_conn_set_ud(c, k);
    pk_info("node_connected", "node=%s", k->cn);
}

static void on_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    kconn_t *k = ud;
    server_t *s = k->srv;
    uint8_t resp[PK_KMS_RESP_MAX];
    size_t rl = 0;
    size_t before = pk_kms_pending(s->kms);
    uint64_t gen = pk_kms_batch_gen(s->kms);
    int rc = pk_kms_handle(s->kms, k->cn, p, n, pk_now_realtime_ms(), resp, sizeof resp, &rl);
    if (rc == PK_KMS_DEFER) { /* a first registration or allocation: writes in batch gen */
        held_t *h = malloc(sizeof *h + PK_KMS_RESP_MAX);
        if (!h || n > PK_KMS_RESP_MAX) {
            free(h);
            pk_tls_conn_close(c);
            conn_drop(k);
            return;
        }
        h->next = NULL;
        h->gen = gen;
        h->req_type = p[0];
        h->deferred = 1;
        h->tries = 0;
        h->len = n;
        memcpy(h->buf, p, n);
        if (k->tail)
            k->tail->next = h;
        else
            k->head = h;
        k->tail = h;
        k->ndefer++;
        schedule_kick(s);
        return;
    }
    if (rc != PK_OK) {
        s->refused++;
        pk_debug("request_refused", "node=%s type=0x%02x len=%zu err=%s", k->cn, n ? p[0] : 0, n,
                 pk_strerror(rc));
    }
    if (rl == 0) { /* nothing to say to it: close */
        pk_warn("node_dropped", "node=%s reason=%s", k->cn, pk_strerror(rc));
        pk_tls_conn_close(c);
        conn_drop(k);
        return;
    }
    int needs = pk_kms_pending(s->kms) > before;
    if (!needs && !k->head) {
        trace_send(k, resp, rl);
        (void)pk_tls_conn_send(c, resp, rl);
        pk_wipe(resp, rl);
        return;
    }
    held_t *h = malloc(sizeof *h + rl);
    if (!h) {
        pk_wipe(resp, rl);
        pk_tls_conn_close(c);
        conn_drop(k);
        return;
    }
    h->next = NULL;
    h->gen = needs ? gen : 0;
    h->req_type = p[0];
    h->deferred = 0;
    h->tries = 0;
    h->len = rl;
    memcpy(h->buf, resp, rl);
    pk_wipe(resp, rl);
    if (k->tail)
        k->tail->next = h;
    else
        k->head = h;
    k->tail = h;
    if (needs)
        schedule_kick(s);
}

static void on_close(pk_tls_conn_t *c, int why, void *ud)
{
    (void)c;
    kconn_t *k = ud;
    if (!k) /* server-side connections are reported only once open */
        return;
    pk_info("node_disconnected", "node=%s why=%s", k->cn, pk_strerror(why));
    conn_drop(k);
}

/* ---- main ---- */

static void on_signal(pk_loop_t *loop, int signo, void *ctx)
{
    (void)loop;
    (void)ctx;
    pk_info("signal", "signo=%d", signo);
}

int kms_serve(const kms_serve_opts_t *o)
{
    server_t s;
    uint8_t kek[PK_WRAP_KEK_LEN];
    char why[256] = "";
    int rc, status = 1;

    memset(&s, 0, sizeof s);
    s.efd = -1;
    s.db = o->db;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
#ifdef __GLIBC__
    /* SQLite and the held answers allocate and free per request, on two
     * threads: without a fixed trim threshold glibc gives the top of each
     * heap back and faults it in again (~15% of the kms's CPU under load) */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
#endif
    if ((rc = pk_crypto_init()) != PK_OK) {
        pk_error("crypto_init_failed", "err=%s", pk_strerror(rc));
        goto out;
    }
    if ((rc = pk_kek_load(o->kek, kek, why, sizeof why)) != PK_OK) {
        pk_error("kek_load_failed", "path=%s err=%s why=\"%s\"", o->kek, pk_strerror(rc), why);
        goto out;
    }
    if ((rc = pk_store_open(o->db, &s.st)) != PK_OK) {
        pk_error("store_open_failed", "db=%s err=%s", o->db, pk_strerror(rc));
        goto out;
    }
    pk_rng_pool_init(&s.rngpool, &s.rng);
    pk_kms_cfg_t cfg = {.store = s.st,
                        .kek = kek,
                        .rng = &s.rng,
                        .cache_ttl_ms = o->cache_ttl_ms,
                        .audit_max = o->audit_max,
                        .group_writes = !o->no_group_writes}; /* the committer applies them */
    rc = pk_kms_new(&cfg, &s.kms);
    pk_wipe(kek, sizeof kek);
    if (rc != PK_OK) {
        pk_error("kms_init_failed", "db=%s err=%s", o->db, pk_strerror(rc));
        goto out;
    }
    if (!(s.loop = pk_loop_new()) || (s.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        pk_error("loop_failed", "err=%s", strerror(errno));
        goto out;
    }
    if (pk_loop_signals(s.loop, on_signal, &s) != PK_OK ||
        pk_loop_add_fd(s.loop, s.efd, PK_EV_READ, on_committed, &s) != PK_OK) {
        pk_error("loop_failed", "what=signals");
        goto out;
    }
    if ((rc = pk_tls_ctx_new(&s.tls, PK_TLS_SERVER, o->ca, o->cert, o->key)) != PK_OK) {
        pk_error("tls_failed", "ca=%s cert=%s key=%s err=%s", o->ca, o->cert, o->key,
                 pk_strerror(rc));
        goto out;
    }
    pk_tls_ctx_set_max_frame(s.tls, PK_REG_NET_MAX);
    if (o->max_conns)
        pk_tls_ctx_set_max_conns(s.tls, o->max_conns);
    if (pthread_create(&s.thr, NULL, committer, &s) != 0) {
        pk_error("thread_failed", "what=committer");
        goto out;
    }
    s.thr_started = 1;
    pk_tls_cbs_t cbs = {.on_open = on_open, .on_frame = on_frame, .on_close = on_close, .ud = &s};
    if ((rc = pk_tls_listen(s.loop, s.tls, o->listen, &cbs, &s.lis)) != PK_OK) {
        pk_error("listen_failed", "addr=%s err=%s", o->listen, pk_strerror(rc));
        goto out;
    }
    pk_addr_t bound;
    char abuf[PK_ADDR_STRLEN] = "?";
    if (pk_tls_listener_addr(s.lis, &bound) == PK_OK)
        pk_addr_format(&bound, abuf);
    const char *colon = strrchr(abuf, ':');
    if (o->port_file) {
        FILE *f = fopen(o->port_file, "w");
        if (!f || fprintf(f, "%s\n", colon ? colon + 1 : abuf) < 0 || fclose(f) != 0) {
            pk_error("port_file_failed", "path=%s", o->port_file);
            goto out;
        }
    }
    pk_info("listening", "addr=%s db=%s backend=%s group_writes=%s", abuf, o->db,
            pk_store_backend(s.st), o->no_group_writes ? "off" : "on");
    rc = pk_loop_run(s.loop);
    status = rc == PK_OK ? 0 : 1;
out:
    if (s.lis)
        pk_tls_listener_close(s.lis);
    if (s.thr_started) {
        pthread_mutex_lock(&s.mu);
        s.quit = 1;
        pthread_cond_signal(&s.cv);
        pthread_mutex_unlock(&s.mu);
        pthread_join(s.thr, NULL);
    }
    if (s.kms && pk_kms_pending(s.kms) > 0) { /* unsent responses: their records anyway */
        int frc = pk_kms_flush(s.kms);
        if (frc != PK_OK)
            pk_warn("final_flush_failed", "err=%s", pk_strerror(frc));
    }
    while (s.conns) {
        kconn_t *k = s.conns;
        pk_tls_conn_close(k->c);
        conn_drop(k);
    }
    if (s.kms) {
        const pk_kms_stats_t *st = pk_kms_stats(s.kms);
        pk_info("stopped",
                "vectors=%" PRIu64 " root_keys=%" PRIu64 " pool_keys=%" PRIu64 " allocs=%" PRIu64
                " refused=%" PRIu64 " batches=%" PRIu64 " records=%" PRIu64
                " commit_failed=%" PRIu64 " deferred=%" PRIu64 " intents=%" PRIu64
                " deferred_busy=%" PRIu64,
                st->vectors, st->root_keys_issued, st->pool_keys_issued, st->allocs, st->refused,
                st->batches, st->batched_records, s.commit_failed, st->deferred, st->intents,
                s.defer_busy);
    }
    pk_tls_ctx_free(s.tls);
    if (s.loop)
        pk_loop_free(s.loop);
    if (s.efd >= 0)
        close(s.efd);
    pk_kms_free(s.kms);
    pk_rng_pool_clear(&s.rngpool);
    pk_store_close(s.st);
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    return status;
}
