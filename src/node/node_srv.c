/* `proxkey node serve`: the node daemon shell (see node_srv.h). */
#include "node_srv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/log.h"
#include "net/loop.h"
#include "net/ratelimit.h"
#include "net/tls.h"
#include "net/udp.h"

#define DGRAM_CAP      256 /* longer than any device->node message: longer = oversized */
#define TICK_MS        100
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define V6_SLOTS       4096
#define ARENA_BYTES    (PK_NODE_OUT_MIN + 1024)
#define MAX_FRAME      (64u * 1024)

#define H_V4 (1ull << 60)
#define H_V6 (2ull << 60)

/* Shell drop reasons follow the core's. */
enum { SD_OVERSIZED = PK_NODE_DROP_N, SD_IP_RATE, SD_KMS_DESYNC, SD_NO_ROUTE, SD_BAD_HANDLE, SD_N };

typedef struct v6_slot {
    pk_addr_t a;
    uint32_t gen;
    uint8_t used;
} v6_slot_t;

struct node_srv;

typedef struct peer_conn {
    struct node_srv *s;
    unsigned idx;
    pk_tls_conn_t *conn;
    uint64_t retry_at, backoff;
} peer_conn_t;

struct node_srv {
    node_srv_opts_t o;
    pk_rng_pool_t rngpool; /* the core's randomness: OpenSSL's DRBG, buffered */
    pk_rng_t rng;
    pk_node_t *core;
    pk_loop_t *loop;
    pk_udp_t *udp;
    pk_udp_batch_t batch;
    pk_ratelimit_t *rl;
    pk_tls_ctx_t *cli, *srv;
    pk_tls_listener_t *lst;
    pk_tls_conn_t *kms;
    int kms_open;
    uint64_t kms_backoff, kms_timer;
    uint64_t connects;
    peer_conn_t peer[NODE_MAX_PEERS];
    v6_slot_t *v6;
    pk_drops_t drops;
    const char *drop_names[SD_N];
    uint8_t *arena;
    pk_out_t out;
    int flush_pending;
    uint64_t next_stats;
};

static void perform(node_srv_t *s, pk_out_t *o);

/* ---- address handles ---- */

static uint64_t addr_handle(node_srv_t *s, const pk_addr_t *a)
{
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        return H_V4 | (uint64_t)ntohl(in->sin_addr.s_addr) << 16 | ntohs(in->sin_port);
    }
    if (a->ss.ss_family != AF_INET6)
        return 0;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
    uint32_t h = 2166136261u;
    for (unsigned i = 0; i < 16; i++)
        h = (h ^ in6->sin6_addr.s6_addr[i]) * 16777619u;
    h = (h ^ in6->sin6_port) * 16777619u;
    uint32_t i = h % V6_SLOTS;
    v6_slot_t *e = &s->v6[i];
    if (!e->used || !pk_addr_eq(&e->a, a)) {
        e->a = *a;
        e->used = 1;
        e->gen++;
    }
    return H_V6 | (uint64_t)(e->gen & 0xFFFFFFFFu) << 16 | i;
}

static int handle_addr(const node_srv_t *s, uint64_t h, pk_addr_t *a)
{
    memset(a, 0, sizeof *a);
    if ((h & (0xFull << 60)) == H_V4) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl((uint32_t)(h >> 16));
        in->sin_port = htons((uint16_t)h);
        a->len = sizeof *in;
        return PK_OK;
    }
    if ((h & (0xFull << 60)) == H_V6) {
        uint32_t i = (uint32_t)(h & 0xFFFF), gen = (uint32_t)(h >> 16);
        if (i >= V6_SLOTS || !s->v6[i].used || s->v6[i].gen != gen)
            return PK_ERR_NOTFOUND;
        *a = s->v6[i].a;
        return PK_OK;
    }
    return PK_ERR_NOTFOUND;
}

static void sdrop(node_srv_t *s, unsigned reason, const pk_addr_t *from)
{
    char b[PK_ADDR_STRLEN];
    pk_drop(&s->drops, reason, pk_loop_now_ms(s->loop), from ? pk_addr_format(from, b) : NULL);
}

static void core_drop(node_srv_t *s, const pk_addr_t *from)
{
    unsigned r = pk_node_last_drop(s->core);
    if (r < PK_NODE_DROP_N)
        sdrop(s, r, from);
}

static pk_out_t *fresh_out(node_srv_t *s)
{
    pk_out_reset(&s->out);
    return &s->out;
}

/* ---- UDP ---- */

static void flush_timer(pk_loop_t *loop, uint64_t id, void *ctx)
{
    node_srv_t *s = ctx;
    (void)loop;
    (void)id;
    s->flush_pending = 0;
    pk_udp_flush(s->udp);
}

/* UDP sends made from TLS callbacks go out together at the end of the
 * loop iteration (a timer due now fires after the fd events). */
static void schedule_flush(node_srv_t *s)
{
    if (s->flush_pending || pk_udp_pending(s->udp) == 0)
        return;
    if (pk_loop_timer_add(s->loop, pk_loop_now_ms(s->loop), flush_timer, s) != 0)
        s->flush_pending = 1;
    else
        pk_udp_flush(s->udp);
}

static void on_dgram(node_srv_t *s, const pk_udp_dgram_t *dg, uint64_t now)
{
    if (dg->truncated || dg->len == 0) {
        sdrop(s, dg->truncated ? SD_OVERSIZED : PK_REG_DROP_MALFORMED, &dg->peer);
        return;
    }
    uint8_t t = dg->data[0];
    if ((t == PK_REG_T_REQUEST || t == PK_REG_T_RESPONSE) &&
        !pk_ratelimit_allow(s->rl, &dg->peer, now)) {
        sdrop(s, SD_IP_RATE, &dg->peer);
        return;
    }
    uint64_t h = addr_handle(s, &dg->peer);
    if (h == 0) {
        sdrop(s, SD_BAD_HANDLE, &dg->peer);
        return;
    }
    pk_out_t *o = fresh_out(s);
    int rc = pk_node_device_input(s->core, h, dg->data, dg->len, now, o);
    if (rc != PK_OK || pk_node_last_drop(s->core) != PK_NODE_DROP_NONE)
        core_drop(s, &dg->peer);
    perform(s, o);
}

static void on_readable(pk_udp_t *u, void *ctx)
{
    node_srv_t *s = ctx;
    for (int round = 0; round < 16; round++) {
        int n = pk_udp_recv_batch(u, &s->batch);
        if (n <= 0)
            break;
        uint64_t now = pk_loop_now_ms(s->loop);
        for (unsigned i = 0; i < s->batch.n; i++)
            on_dgram(s, &s->batch.dg[i], now);
        pk_udp_flush(u);
    }
}

/* ---- the kms connection ---- */

static void kms_connect(node_srv_t *s);

static void kms_timer_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    node_srv_t *s = ctx;
    (void)loop;
    (void)id;
    s->kms_timer = 0;
    kms_connect(s);
}

static void kms_schedule(node_srv_t *s)
{
    if (s->kms_timer || s->kms)
        return;
    s->kms_timer =
        pk_loop_timer_add(s->loop, pk_loop_now_ms(s->loop) + s->kms_backoff, kms_timer_cb, s);
    s->kms_backoff = s->kms_backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->kms_backoff * 2;
}

/* Drops the connection (ours to close) and schedules a new one. */
static void kms_reset(node_srv_t *s, const char *why)
{
    pk_warn("node_kms_reset", "why=%s pending=%zu", why, pk_node_kms_pending(s->core));
    if (s->kms)
        pk_tls_conn_close(s->kms);
    s->kms = NULL;
    s->kms_open = 0;
    pk_node_kms_down(s->core);
    kms_schedule(s);
}

static void kms_on_open(pk_tls_conn_t *c, void *ud)
{
    node_srv_t *s = ud;
    (void)c;
    s->kms_open = 1;
    s->kms_backoff = BACKOFF_MIN_MS;
    pk_info("node_kms_connected", "kms=%s cn=%s pending=%zu", s->o.kms, pk_tls_conn_peer_cn(c),
            pk_node_kms_pending(s->core));
    uint64_t now = pk_loop_now_ms(s->loop);
    for (size_t guard = 0; guard < 1000000; guard++) {
        pk_out_t *o = fresh_out(s);
        size_t left = pk_node_kms_up(s->core, now, o);
        perform(s, o);
        if (left == 0 || !s->kms_open)
            break;
    }
    schedule_flush(s);
}

static void kms_on_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    node_srv_t *s = ud;
    (void)c;
    if (!s->kms_open)
        return;
    pk_out_t *o = fresh_out(s);
    int rc = pk_node_kms_input(s->core, p, n, pk_loop_now_ms(s->loop), o);
    if (rc != PK_OK) {
        sdrop(s, SD_KMS_DESYNC, NULL);
        kms_reset(s, pk_strerror(rc));
        return;
    }
    if (pk_node_last_drop(s->core) != PK_NODE_DROP_NONE)
        core_drop(s, NULL);
    perform(s, o);
    schedule_flush(s);
}

static void kms_on_close(pk_tls_conn_t *c, int why, void *ud)
{
    node_srv_t *s = ud;
    (void)c;
    pk_warn("node_kms_disconnected", "kms=%s why=%s pending=%zu", s->o.kms, pk_strerror(why),
            pk_node_kms_pending(s->core));
    s->kms = NULL;
    s->kms_open = 0;
    pk_node_kms_down(s->core);
    kms_schedule(s);
}

static void kms_connect(node_srv_t *s)
{
    pk_tls_cbs_t cbs = {kms_on_open, kms_on_frame, kms_on_close, s};
    s->connects++;
    int rc = pk_tls_connect(s->loop, s->cli, s->o.kms, s->o.kms_cn, &cbs, &s->kms);
    if (rc != PK_OK) {
        s->kms = NULL;
        pk_warn("node_kms_connect_failed", "kms=%s err=%s", s->o.kms, pk_strerror(rc));
        kms_schedule(s);
    }
}

/* ---- other nodes ---- */

static void peer_on_open(pk_tls_conn_t *c, void *ud)
{
    peer_conn_t *p = ud;
    (void)c;
    p->backoff = BACKOFF_MIN_MS;
    pk_info("node_peer_connected", "peer=%s", p->s->o.peers[p->idx].id);
}

static void peer_on_frame(pk_tls_conn_t *c, const uint8_t *d, size_t n, void *ud)
{
    peer_conn_t *p = ud;
    (void)c;
    (void)d;
    (void)n;
    /* nodes send nothing back on a connection we opened */
    pk_drop(&p->s->drops, PK_NODE_DROP_PEER_MALFORMED, pk_loop_now_ms(p->s->loop),
            p->s->o.peers[p->idx].id);
}

static void peer_on_close(pk_tls_conn_t *c, int why, void *ud)
{
    peer_conn_t *p = ud;
    (void)c;
    pk_warn("node_peer_disconnected", "peer=%s why=%s", p->s->o.peers[p->idx].id, pk_strerror(why));
    p->conn = NULL;
    p->retry_at = pk_loop_now_ms(p->s->loop) + p->backoff;
    p->backoff = p->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff * 2;
}

static void peer_send(node_srv_t *s, uint64_t idx, const uint8_t *d, size_t n)
{
    if (idx >= s->o.npeers) {
        sdrop(s, SD_NO_ROUTE, NULL);
        return;
    }
    peer_conn_t *p = &s->peer[idx];
    if (!p->conn) {
        if (pk_loop_now_ms(s->loop) < p->retry_at) {
            sdrop(s, SD_NO_ROUTE, NULL);
            return;
        }
        pk_tls_cbs_t cbs = {peer_on_open, peer_on_frame, peer_on_close, p};
        if (pk_tls_connect(s->loop, s->cli, s->o.peers[idx].addr, s->o.peers[idx].id, &cbs,
                           &p->conn) != PK_OK) {
            p->conn = NULL;
            p->retry_at = pk_loop_now_ms(s->loop) + p->backoff;
            sdrop(s, SD_NO_ROUTE, NULL);
            return;
        }
    }
    if (pk_tls_conn_send(p->conn, d, n) != PK_OK) { /* queued until the handshake is done */
        pk_tls_conn_close(p->conn);
        p->conn = NULL;
        sdrop(s, SD_NO_ROUTE, NULL);
    }
}

static void srv_on_open(pk_tls_conn_t *c, void *ud)
{
    node_srv_t *s = ud;
    const char *cn = pk_tls_conn_peer_cn(c);
    if (pk_node_peer_find(s->core, (const uint8_t *)cn, strlen(cn)) < 0) {
        char a[PK_ADDR_STRLEN];
        pk_drop(&s->drops, PK_NODE_DROP_PEER_UNKNOWN, pk_loop_now_ms(s->loop),
                pk_addr_format(pk_tls_conn_peer_addr(c), a));
        pk_tls_conn_close(c);
    }
}

static void srv_on_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    node_srv_t *s = ud;
    const char *cn = pk_tls_conn_peer_cn(c);
    pk_out_t *o = fresh_out(s);
    int rc = pk_node_peer_input(s->core, (const uint8_t *)cn, strlen(cn), p, n,
                                pk_loop_now_ms(s->loop), o);
    if (rc != PK_OK)
        core_drop(s, pk_tls_conn_peer_addr(c));
    perform(s, o);
    schedule_flush(s);
}

static void srv_on_close(pk_tls_conn_t *c, int why, void *ud)
{
    (void)c;
    (void)why;
    (void)ud;
}

/* ---- actions ---- */

static void log_link(int level, const char *ev, const pk_act_t *a)
{
    if (a->len < 2 || a->data[0] + 2u > a->len ||
        a->data[0] + 2u + a->data[1 + a->data[0]] != a->len)
        return;
    const uint8_t *x = a->data + 1, *y = a->data + 2 + a->data[0];
    pk_log(level, ev, "initiator=%.*s target=%.*s %s=%llu", (int)a->data[0], (const char *)x,
           (int)a->data[1 + a->data[0]], (const char *)y,
           a->code == PK_NODE_EV_LINK ? "ksi" : "reason", (unsigned long long)a->dest);
}

/* --log-level debug: one line per message sent (type byte and length only;
 * `proxkey demo` draws its trace from these). */
static void trace_send(const node_srv_t *s, const pk_act_t *a)
{
    char to[PK_ADDR_STRLEN];
    pk_addr_t ad;
    switch (a->code & PK_NODE_DST_MASK) {
    case PK_NODE_DST_DEVICE:
        if (handle_addr(s, a->dest, &ad) != PK_OK)
            return;
        pk_addr_format(&ad, to);
        break;
    case PK_NODE_DST_KMS: snprintf(to, sizeof to, "%s", s->o.kms_cn); break;
    case PK_NODE_DST_NODE:
        if (a->dest >= s->o.npeers)
            return;
        snprintf(to, sizeof to, "%s", s->o.peers[a->dest].id);
        break;
    default: return;
    }
    pk_debug("msg", "from=%s to=%s type=0x%02x len=%zu", s->o.id, to, a->len ? a->data[0] : 0,
             a->len);
}

static void perform(node_srv_t *s, pk_out_t *o)
{
    for (unsigned i = 0; i < o->n; i++) {
        pk_act_t *a = &o->act[i];
        if (a->kind == PK_ACT_SEND) {
            if (pk_log_get_level() >= PK_LOG_DEBUG)
                trace_send(s, a);
            switch (a->code & PK_NODE_DST_MASK) {
            case PK_NODE_DST_DEVICE: {
                pk_addr_t to;
                if (handle_addr(s, a->dest, &to) != PK_OK)
                    sdrop(s, SD_BAD_HANDLE, NULL);
                else
                    (void)pk_udp_send(s->udp, &to, a->data, a->len);
                break;
            }
            case PK_NODE_DST_KMS:
                if (s->kms && s->kms_open && pk_tls_conn_send(s->kms, a->data, a->len) != PK_OK)
                    kms_reset(s, "send_failed");
                break;
            case PK_NODE_DST_NODE: peer_send(s, a->dest, a->data, a->len); break;
            default: break;
            }
        } else if (a->kind == PK_ACT_EVENT) {
            switch (a->code) {
            case PK_NODE_EV_REGISTERED:
                pk_debug("node_registered", "device=%.*s ctx=%llu", (int)a->len,
                         (const char *)a->data, (unsigned long long)a->dest);
                break;
            case PK_NODE_EV_LINK: log_link(PK_LOG_INFO, "node_link_indicated", a); break;
            case PK_NODE_EV_LINK_REJ: log_link(PK_LOG_INFO, "node_link_rejected", a); break;
            case PK_NODE_EV_KMS_STALLED: kms_reset(s, "stalled"); break;
            default: break;
            }
        }
        if (a->kind == PK_ACT_SEND && (a->code & PK_NODE_DST_MASK) != PK_NODE_DST_DEVICE)
            pk_wipe(a->data, a->len); /* node frames may carry a param */
    }
    pk_out_reset(o);
}

/* ---- time and signals ---- */

void node_srv_log_stats(node_srv_t *s)
{
    const pk_node_stats_t *st = pk_node_stats(s->core);
    const pk_udp_stats_t *us = pk_udp_stats(s->udp);
    pk_info("node_stats",
            "devices=%zu half_open=%zu registered=%llu reregistered=%llu evicted=%llu "
            "kms_up=%d kms_pending=%zu kms_sent=%llu kms_answered=%llu kms_resent=%llu "
            "links_asked=%llu links_indicated=%llu links_rejected=%llu links_received=%llu "
            "mk_refreshes=%llu mk_updates=%llu mk_pushes=%llu mk_checks=%llu mk_refused=%llu "
            "mk_dom_full=%llu key_pages_asked=%llu key_pages_sent=%llu udp_rx=%llu udp_tx=%llu "
            "udp_tx_errors=%llu drops=%llu",
            pk_node_devices(s->core), pk_node_half_open(s->core),
            (unsigned long long)st->registered, (unsigned long long)st->reregistered,
            (unsigned long long)st->evicted_contexts, s->kms_open, pk_node_kms_pending(s->core),
            (unsigned long long)st->kms_sent, (unsigned long long)st->kms_answered,
            (unsigned long long)st->kms_resent, (unsigned long long)st->links_asked,
            (unsigned long long)st->links_indicated, (unsigned long long)st->links_rejected,
            (unsigned long long)st->links_received, (unsigned long long)st->mk_refreshes,
            (unsigned long long)st->mk_updates, (unsigned long long)st->mk_pushes,
            (unsigned long long)st->mk_checks, (unsigned long long)st->mk_refused,
            (unsigned long long)st->mk_dom_full, (unsigned long long)st->key_pages_asked,
            (unsigned long long)st->key_pages_sent, (unsigned long long)us->rx,
            (unsigned long long)us->tx, (unsigned long long)us->tx_errors,
            (unsigned long long)pk_drops_total(&s->drops));
    for (unsigned r = 0; r < SD_N; r++)
        if (s->drops.count[r])
            pk_info("node_drops", "reason=%s count=%llu", s->drop_names[r],
                    (unsigned long long)s->drops.count[r]);
}

static void tick(pk_loop_t *loop, uint64_t id, void *ctx)
{
    node_srv_t *s = ctx;
    (void)id;
    uint64_t now = pk_loop_now_ms(loop);
    for (int i = 0; i < 64 && pk_node_next_deadline(s->core) <= now; i++) {
        pk_out_t *o = fresh_out(s);
        pk_node_timeout(s->core, now, o);
        unsigned n = o->n;
        perform(s, o);
        if (n == 0)
            break;
    }
    pk_udp_flush(s->udp);
    if (s->o.stats_ms && now >= s->next_stats) {
        node_srv_log_stats(s);
        s->next_stats = now + s->o.stats_ms;
    }
    pk_loop_timer_add(loop, now + TICK_MS, tick, s);
}

static void on_signal(pk_loop_t *loop, int signo, void *ctx)
{
    (void)loop;
    if (signo == SIGHUP)
        node_srv_log_stats(ctx);
    else
        pk_info("node_stopping", "signal=%d", signo);
}

/* ---- lifecycle ---- */

int node_srv_new(node_srv_t **out, const node_srv_opts_t *o)
{
    int rc = PK_ERR_NOMEM;
    pk_addr_t ua;
    const char *why = NULL;
    node_srv_t *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s)
        return PK_ERR_NOMEM;
    s->o = *o;
    for (unsigned r = 0; r < PK_NODE_DROP_N; r++)
        s->drop_names[r] = pk_node_drop_names[r];
    s->drop_names[SD_OVERSIZED] = "oversized";
    s->drop_names[SD_IP_RATE] = "ip_rate";
    s->drop_names[SD_KMS_DESYNC] = "kms_desync";
    s->drop_names[SD_NO_ROUTE] = "no_route";
    s->drop_names[SD_BAD_HANDLE] = "bad_handle";
    pk_drops_init(&s->drops, s->drop_names, SD_N);
    s->kms_backoff = BACKOFF_MIN_MS;

    pk_rng_pool_init(&s->rngpool, &s->rng);
    pk_node_cfg_t nc = {.rng = &s->rng,
                        .max_half = o->max_half,
                        .max_buckets = 1024,
                        .burst = o->reg_burst,
                        .per_sec = o->reg_rate,
                        .max_devices = o->max_devices,
                        .max_kms = o->max_kms,
                        .kms_timeout_ms = o->kms_timeout_ms,
                        .max_domains = o->max_domains,
                        .mk_check_ms = o->mk_check_ms,
                        .mk_push_per_tick = o->mk_push_per_tick};
    if (pk_reg_id_set(&nc.node_id, o->id, strlen(o->id)) != PK_OK) {
        fprintf(stderr, "proxkey node serve: --id: 1..64 bytes of UTF-8 expected\n");
        rc = PK_ERR_INVAL;
        goto fail;
    }
    if ((rc = pk_node_new(&nc, &s->core)) != PK_OK) {
        fprintf(stderr, "proxkey node serve: node core: %s\n", pk_strerror(rc));
        goto fail;
    }
    for (unsigned i = 0; i < o->npeers; i++) {
        pk_reg_id_t pid;
        s->peer[i].s = s;
        s->peer[i].idx = i;
        s->peer[i].backoff = BACKOFF_MIN_MS;
        rc = pk_reg_id_set(&pid, o->peers[i].id, strlen(o->peers[i].id));
        if (rc == PK_OK)
            rc = pk_node_peer_add(s->core, &pid);
        if (rc < 0 || (unsigned)rc != i) {
            fprintf(stderr, "proxkey node serve: peer '%s': %s\n", o->peers[i].id,
                    rc < 0 ? pk_strerror(rc) : "duplicate");
            rc = PK_ERR_INVAL;
            goto fail;
        }
    }
    s->arena = malloc(ARENA_BYTES);
    s->v6 = calloc(V6_SLOTS, sizeof *s->v6);
    s->loop = pk_loop_new();
    if (!s->arena || !s->v6 || !s->loop) {
        rc = PK_ERR_NOMEM;
        goto fail;
    }
    pk_out_init(&s->out, s->arena, ARENA_BYTES);
    {
        uint8_t k[PK_RATELIMIT_KEY_LEN];
        pk_ratelimit_cfg_t rl = {o->ip_rate, o->ip_burst, 65536};
        rc = pk_random(k, sizeof k);
        if (rc == PK_OK)
            rc = pk_ratelimit_new(&s->rl, &rl, k);
        pk_wipe(k, sizeof k);
        if (rc != PK_OK) {
            fprintf(stderr, "proxkey node serve: rate limiter: %s\n", pk_strerror(rc));
            goto fail;
        }
    }
    if ((rc = pk_addr_parse(o->listen_udp, &ua, &why)) != PK_OK) {
        fprintf(stderr, "proxkey node serve: --listen-udp %s: %s\n", o->listen_udp, why);
        goto fail;
    }
    pk_udp_opts_t uo = {8 << 20, 8 << 20, 65536};
    rc = pk_udp_open(&s->udp, &ua, &uo);
    if (rc == PK_OK)
        rc = pk_udp_batch_init(&s->batch, DGRAM_CAP);
    if (rc == PK_OK)
        rc = pk_udp_attach(s->udp, s->loop, on_readable, s);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey node serve: cannot listen on udp %s: %s\n", o->listen_udp,
                pk_strerror(rc));
        goto fail;
    }
    rc = pk_tls_ctx_new(&s->cli, PK_TLS_CLIENT, o->ca, o->cert, o->key);
    if (rc == PK_OK)
        rc = pk_tls_ctx_new(&s->srv, PK_TLS_SERVER, o->ca, o->cert, o->key);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey node serve: TLS (--ca/--cert/--key): %s\n", pk_strerror(rc));
        goto fail;
    }
    pk_tls_ctx_set_max_frame(s->cli, MAX_FRAME);
    pk_tls_ctx_set_max_frame(s->srv, MAX_FRAME);
    if (o->listen_tls) {
        pk_tls_cbs_t cbs = {srv_on_open, srv_on_frame, srv_on_close, s};
        rc = pk_tls_listen(s->loop, s->srv, o->listen_tls, &cbs, &s->lst);
        if (rc != PK_OK) {
            fprintf(stderr, "proxkey node serve: cannot listen on tls %s: %s\n", o->listen_tls,
                    pk_strerror(rc));
            goto fail;
        }
    }
    if ((rc = pk_loop_signals(s->loop, on_signal, s)) != PK_OK)
        goto fail;
    s->next_stats = pk_loop_now_ms(s->loop) + o->stats_ms;
    pk_loop_timer_add(s->loop, pk_loop_now_ms(s->loop) + TICK_MS, tick, s);
    kms_connect(s);
    *out = s;
    return PK_OK;
fail:
    node_srv_free(s);
    return rc;
}

int node_srv_run(node_srv_t *s)
{
    return pk_loop_run(s->loop);
}

void node_srv_stop(node_srv_t *s)
{
    pk_loop_stop(s->loop);
}

uint16_t node_srv_udp_port(const node_srv_t *s)
{
    pk_addr_t a;
    return pk_udp_local_addr(s->udp, &a) == PK_OK ? pk_addr_port(&a) : 0;
}

uint16_t node_srv_tls_port(const node_srv_t *s)
{
    pk_addr_t a;
    return s->lst && pk_tls_listener_addr(s->lst, &a) == PK_OK ? pk_addr_port(&a) : 0;
}

void node_srv_free(node_srv_t *s)
{
    if (!s)
        return;
    if (s->udp)
        pk_udp_flush(s->udp);
    if (s->kms)
        pk_tls_conn_close(s->kms);
    for (unsigned i = 0; i < NODE_MAX_PEERS; i++)
        if (s->peer[i].conn)
            pk_tls_conn_close(s->peer[i].conn);
    pk_tls_listener_close(s->lst);
    pk_tls_ctx_free(s->cli); /* closes what is left, without callbacks */
    pk_tls_ctx_free(s->srv);
    pk_udp_close(s->udp);
    pk_udp_batch_free(&s->batch);
    pk_ratelimit_free(s->rl);
    pk_loop_free(s->loop);
    pk_node_free(s->core);
    free(s->arena);
    free(s->v6);
    pk_rng_pool_clear(&s->rngpool);
    free(s);
}
