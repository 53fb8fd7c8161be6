/*
 * `proxkey gts serve`: the trigger server shell. One thread, one epoll loop,
 * batched UDP I/O. Per batch of datagrams: run each through the core, then
 * make every PERSIST and DELIVERED of the batch durable in one transaction
 * (group commit), then send the batch's responses. A commit that fails
 * stops the server (exit 1): the store, not memory, is the truth it restarts
 * from, so no response ever leaves ahead of its state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/out.h"
#include "gts.h"
#include "net/loop.h"
#include "net/udp.h"

#define SLOT_BYTES (PK_TRIG_REC_LEN + 8 + PK_TRIG_RESP_MAX + 64)
#define INBOX_MS   200

enum { DROP_TRUNC, DROP_MALFORMED, DROP_UNKNOWN, DROP_SPACE, DROP_N };
static const char *const drop_names[] = {"oversized", "malformed", "unknown_uid", "no_space"};

struct gts_server {
    gts_db_t db;
    pk_wrap_ctx_t wrap;
    pk_trig_srv_t *core;
    pk_loop_t *loop;
    pk_udp_t *udp;
    pk_udp_batch_t batch;
    pk_drops_t drops;
    uint8_t *arena; /* PK_UDP_BATCH_MAX slots */
    pk_out_t outs[PK_UDP_BATCH_MAX];
    int fatal, quiet;
    uint64_t commits, persisted, answered;
};

typedef struct commit_ctx {
    gts_server_t *s;
    unsigned n;
} commit_ctx_t;

static int commit_fn(pk_txn_t *txn, void *ctx)
{
    commit_ctx_t *c = ctx;
    gts_server_t *s = c->s;
    int rc = PK_OK;
    for (unsigned i = 0; i < c->n && rc == PK_OK; i++) {
        pk_out_t *o = &s->outs[i];
        for (unsigned a = 0; a < o->n && rc == PK_OK; a++) {
            pk_act_t *act = &o->act[a];
            uint8_t key[12];
            if (act->kind != PK_ACT_EVENT)
                continue;
            pk_put_u32(key, (uint32_t)act->dest);
            if (act->code == PK_TRIG_EV_DELIVERED) {
                memcpy(key + 4, act->data, 8);
                rc = pk_txn_del(txn, "gts_cmd", key, 12);
                if (rc == PK_ERR_NOTFOUND)
                    rc = PK_OK;
            } else if (act->code == PK_TRIG_EV_PERSIST) {
                uint8_t val[PK_TRIG_REC_LEN + PK_WRAP_OVERHEAD];
                size_t vl;
                rc = pk_wrap_ctx_seal(&s->wrap, NULL, "gts_dev", key, 4, act->data, act->len, val,
                                      sizeof val, &vl);
                if (rc == PK_OK)
                    rc = pk_txn_put(txn, "gts_dev", key, 4, val, vl);
            }
        }
    }
    return rc;
}

static void handle_batch(gts_server_t *s)
{
    pk_udp_batch_t *b = &s->batch;
    uint64_t now = pk_loop_now_ms(s->loop);
    uint64_t wall = pk_now_realtime_ms();
    int need_commit = 0;
    for (unsigned i = 0; i < b->n; i++) {
        pk_out_t *o = &s->outs[i];
        pk_out_init(o, s->arena + (size_t)i * SLOT_BYTES, SLOT_BYTES);
        if (b->dg[i].truncated) {
            pk_drop(&s->drops, DROP_TRUNC, now, NULL);
            continue;
        }
        int rc = pk_trig_srv_input(s->core, b->dg[i].data, b->dg[i].len, wall, o);
        if (rc != PK_OK) {
            char src[PK_ADDR_STRLEN];
            unsigned r = rc == PK_ERR_DENIED      ? DROP_UNKNOWN
                         : rc == PK_ERR_MALFORMED ? DROP_MALFORMED
                                                  : DROP_SPACE;
            pk_drop(&s->drops, r, now, pk_addr_format(&b->dg[i].peer, src));
            continue;
        }
        for (unsigned a = 0; a < o->n; a++)
            if (o->act[a].kind == PK_ACT_EVENT)
                need_commit = 1;
    }
    if (need_commit) {
        commit_ctx_t c = {s, b->n};
        int rc = pk_store_run(s->db.st, commit_fn, &c, 50);
        if (rc != PK_OK) {
            pk_error("gts_commit_failed", "err=%s action=stop", pk_strerror(rc));
            s->fatal = 1;
            pk_loop_stop(s->loop);
            return; /* nothing of this batch is sent */
        }
        s->commits++;
    }
    for (unsigned i = 0; i < b->n; i++) {
        pk_out_t *o = &s->outs[i];
        for (unsigned a = 0; a < o->n; a++) {
            pk_act_t *act = &o->act[a];
            if (act->kind == PK_ACT_EVENT && act->code == PK_TRIG_EV_PERSIST) {
                pk_trig_srv_persisted(s->core, (uint32_t)act->dest);
                s->persisted++;
            } else if (act->kind == PK_ACT_EVENT && act->code == PK_TRIG_EV_DELIVERED &&
                       !s->quiet) {
                pk_info("gts_delivered", "dev_no=%u seq=%llu", (unsigned)act->dest,
                        (unsigned long long)pk_get_u64(act->data));
            } else if (act->kind == PK_ACT_SEND) {
                (void)pk_udp_send(s->udp, &b->dg[i].peer, act->data, act->len);
                s->answered++;
            }
        }
        pk_out_reset(o);
    }
    pk_udp_flush(s->udp);
}

static void on_readable(pk_udp_t *u, void *ctx)
{
    gts_server_t *s = ctx;
    for (int round = 0; round < 16 && !s->fatal; round++) {
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
    return rc;
}

static void inbox_timer(pk_loop_t *loop, uint64_t id, void *ctx)
{
    gts_server_t *s = ctx;
    (void)id;
    inbox_ctx_t *c = calloc(1, sizeof *c);
    if (c) {
        c->s = s;
        int rc = pk_store_run(s->db.st, inbox_fn, c, 5);
        if (rc != PK_OK)
            pk_warn("gts_inbox", "err=%s", pk_strerror(rc));
        free(c);
    }
    pk_loop_timer_add(loop, pk_loop_now_ms(loop) + INBOX_MS, inbox_timer, s);
}

/* ---- lifecycle ---- */

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
    rc = pk_trig_srv_new(&s->core, &pk_rng_system, o->reserve);
    if (rc != PK_OK)
        goto fail;
    rc = gts_db_load(&s->db, s->core, &max_seq);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: loading the store: %s\n", pk_strerror(rc));
        goto fail;
    }
    s->arena = malloc((size_t)PK_UDP_BATCH_MAX * SLOT_BYTES);
    s->loop = pk_loop_new();
    if (!s->arena || !s->loop) {
        rc = PK_ERR_NOMEM;
        goto fail;
    }
    pk_udp_opts_t uo = {4 << 20, 4 << 20, 8192};
    rc = pk_udp_open(&s->udp, &addr, &uo);
    if (rc == PK_OK)
        rc = pk_udp_batch_init(&s->batch, PK_TRIG_POLL_LEN + 1); /* longer = truncated */
    if (rc == PK_OK)
        rc = pk_udp_attach(s->udp, s->loop, on_readable, s);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts serve: cannot listen on %s: %s\n", o->listen, pk_strerror(rc));
        goto fail;
    }
    pk_loop_timer_add(s->loop, pk_loop_now_ms(s->loop) + INBOX_MS, inbox_timer, s);
    *out = s;
    return PK_OK;
fail:
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
    pk_udp_close(s->udp);
    pk_udp_batch_free(&s->batch);
    pk_loop_free(s->loop);
    pk_trig_srv_free(s->core);
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
