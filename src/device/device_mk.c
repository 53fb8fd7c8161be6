/*
 * `proxkey device mk`: the master-key client shell (device_mk.h). The
 * protocol is the pk_mk core; this file does sockets, the wall clock (master
 * and individual keys expire at absolute times), files and printing.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include "device_util.h"
#include "cli.h"
#include "conf.h"
#include "core/codec.h"
#include "device_mk.h"
#include "net/addr.h"
#include "net/loop.h"

#define TABLE_FILE  "mk-table"
#define TABLE_MAGIC "PKMT"
#define TABLE_VER   1
#define ENTRY_MAX   (4 + PK_MK_IK_LEN + 8 + 8 + 4 + 1 + 1 + 1 + PK_MK_ID_MAX + 8)
#define TABLE_MAX   (5 + 1 + PK_DMK_TABLE_CAP * ENTRY_MAX)
#define RX_FILE     "mk-rx"
#define RX_MAGIC    "PKMR"
#define RX_VER      1
#define RUN_LOCK    "mk-run.lock"
#define PEERS_MAX   32
#define RX_MAX      16
#define DGRAM_MAX   2048
#define TEXT_MAX    1024
#define RELOAD_MS   250
#define BEACON_MS   1000
#define RECV_BATCH  64

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void print_masked(FILE *f, const uint8_t *k, size_t n, int reveal)
{
    for (size_t i = 0; i < n; i++) {
        if (reveal || i < 2)
            fprintf(f, "%02x", k[i]);
        else
            fputs("**", f);
    }
}

/* ---------------- the key table file ---------------- */

_Static_assert(PK_DMK_TABLE_MAX == TABLE_MAX, "PK_DMK_TABLE_MAX in device_mk.h");

int pk_dmk_table_parse(const uint8_t *buf, size_t len, dmk_file_t *f)
{
    pk_rd_t r;
    int rc;
    memset(f, 0, sizeof *f);
    pk_rd_init(&r, buf, len);
    const uint8_t *magic = pk_rd_borrow(&r, 4);
    uint8_t ver = pk_rd_u8(&r), n = pk_rd_u8(&r);
    if (r.err != PK_OK || memcmp(magic, TABLE_MAGIC, 4) != 0 || ver != TABLE_VER ||
        n > PK_DMK_TABLE_CAP)
        r.err = PK_ERR_MALFORMED;
    for (unsigned i = 0; i < n && r.err == PK_OK; i++) {
        pk_mk_entry_t *e = &f->e[i];
        e->key_id = pk_rd_u32(&r);
        pk_rd_copy(&r, e->key, PK_MK_IK_LEN);
        e->expiry_ms = pk_rd_u64(&r);
        e->created_ms = pk_rd_u64(&r);
        e->mk_id = pk_rd_u32(&r);
        e->role = pk_rd_u8(&r);
        e->flags = pk_rd_u8(&r);
        pk_rd_t p = pk_rd_block8(&r, PK_MK_ID_MAX);
        f->tx[i] = pk_rd_u64(&r);
        if (r.err != PK_OK || p.err != PK_OK || p.left == 0 || e->key_id == 0 ||
            !(e->flags & PK_MK_E_USED) ||
            (e->role != PK_MK_ROLE_INITIATOR && e->role != PK_MK_ROLE_RESPONDER)) {
            r.err = PK_ERR_MALFORMED;
            break;
        }
        memcpy(e->partner, p.p, p.left);
        e->partner_len = (uint8_t)p.left;
    }
    f->n = n;
    rc = pk_rd_done(&r);
    if (rc != PK_OK)
        pk_wipe(f, sizeof *f);
    return rc;
}

/* Reads mk-table (absent: empty). PK_OK, PK_ERR_MALFORMED, file errors. */
static int table_read(const pk_dstate_t *s, dmk_file_t *f)
{
    static uint8_t buf[TABLE_MAX];
    size_t len = 0;
    memset(f, 0, sizeof *f);
    int rc = pk_dstate_read(s->dir, TABLE_FILE, buf, sizeof buf, &len);
    if (rc == PK_ERR_NOTFOUND)
        return PK_OK;
    if (rc != PK_OK)
        return rc;
    rc = pk_dmk_table_parse(buf, len, f);
    pk_wipe(buf, sizeof buf);
    return rc;
}

int pk_dmk_table_encode(const dmk_file_t *f, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    pk_wr_init(&w, buf, cap);
    pk_wr_bytes(&w, TABLE_MAGIC, 4);
    pk_wr_u8(&w, TABLE_VER);
    pk_wr_u8(&w, (uint8_t)f->n);
    for (size_t i = 0; i < f->n; i++) {
        const pk_mk_entry_t *e = &f->e[i];
        pk_wr_u32(&w, e->key_id);
        pk_wr_bytes(&w, e->key, PK_MK_IK_LEN);
        pk_wr_u64(&w, e->expiry_ms);
        pk_wr_u64(&w, e->created_ms);
        pk_wr_u32(&w, e->mk_id);
        pk_wr_u8(&w, e->role);
        pk_wr_u8(&w, e->flags);
        pk_wr_block8(&w, e->partner, e->partner_len);
        pk_wr_u64(&w, f->tx[i]);
    }
    int rc = pk_wr_ok(&w);
    *len = rc == PK_OK ? w.len : 0;
    return rc;
}

static int table_write(const pk_dstate_t *s, const dmk_file_t *f)
{
    static uint8_t buf[TABLE_MAX];
    size_t len = 0;
    int rc = pk_dmk_table_encode(f, buf, sizeof buf, &len);
    if (rc == PK_OK)
        rc = pk_dstate_write(s->dir, TABLE_FILE, buf, len);
    pk_wipe(buf, sizeof buf);
    return rc;
}

/* Writes the live entries of t, keeping for each key the larger tx counter
 * of the file and of tx_of (may be NULL). Takes the state lock. */
static int table_save(pk_dstate_t *s, const pk_mk_table_t *t)
{
    static dmk_file_t old, nw;
    int rc = pk_dstate_lock(s);
    if (rc != PK_OK)
        return rc;
    if (table_read(s, &old) != PK_OK)
        memset(&old, 0, sizeof old); /* damaged: rewrite it from memory */
    memset(&nw, 0, sizeof nw);
    for (size_t i = 0; i < t->cap && nw.n < PK_DMK_TABLE_CAP; i++) {
        const pk_mk_entry_t *e = &t->e[i];
        if (!(e->flags & PK_MK_E_USED))
            continue;
        nw.e[nw.n] = *e;
        nw.tx[nw.n] = PK_RECORD_COUNTER_FIRST;
        for (size_t j = 0; j < old.n; j++)
            if (old.e[j].key_id == e->key_id && old.tx[j] > nw.tx[nw.n])
                nw.tx[nw.n] = old.tx[j];
        nw.n++;
    }
    rc = table_write(s, &nw);
    pk_dstate_unlock(s);
    pk_wipe(&old, sizeof old);
    pk_wipe(&nw, sizeof nw);
    return rc;
}

/* ---------------- the receive windows file (mk-rx) ---------------- */

_Static_assert(PK_DMK_RX_CAP <= 255, "n is one byte");

int pk_dmk_rx_parse(const uint8_t *buf, size_t len, dmk_rx_file_t *f)
{
    pk_rd_t r;
    int rc;
    memset(f, 0, sizeof *f);
    pk_rd_init(&r, buf, len);
    const uint8_t *magic = pk_rd_borrow(&r, 4);
    uint8_t ver = pk_rd_u8(&r);
    if (r.err != PK_OK || memcmp(magic, RX_MAGIC, 4) != 0)
        return PK_ERR_MALFORMED;
    if (ver != RX_VER)
        return PK_ERR_VERSION;
    pk_rd_t id = pk_rd_block8(&r, PK_MK_ID_MAX);
    uint8_t n = pk_rd_u8(&r);
    if (r.err != PK_OK || id.err != PK_OK || id.left == 0 || n > PK_DMK_RX_CAP)
        r.err = PK_ERR_MALFORMED;
    if (r.err == PK_OK) {
        memcpy(f->id, id.p, id.left);
        f->id_len = id.left;
    }
    for (unsigned i = 0; i < n && r.err == PK_OK; i++) {
        dmk_rxwin_t *e = &f->e[i];
        e->key_id = pk_rd_u32(&r);
        e->created_ms = pk_rd_u64(&r);
        pk_rd_copy(&r, e->w, sizeof e->w);
        if (r.err != PK_OK || e->key_id == 0 || pk_record_rx_check(e->w) != PK_OK)
            r.err = PK_ERR_MALFORMED;
        for (unsigned j = 0; j < i && r.err == PK_OK; j++)
            if (f->e[j].key_id == e->key_id && f->e[j].created_ms == e->created_ms)
                r.err = PK_ERR_MALFORMED; /* one window per key */
    }
    f->n = n;
    rc = pk_rd_done(&r);
    if (rc != PK_OK)
        pk_wipe(f, sizeof *f);
    return rc;
}

int pk_dmk_rx_encode(const dmk_rx_file_t *f, uint8_t *buf, size_t cap, size_t *len)
{
    pk_wr_t w;
    *len = 0;
    if (f->id_len == 0 || f->id_len > PK_MK_ID_MAX || f->n > PK_DMK_RX_CAP)
        return PK_ERR_INVAL;
    pk_wr_init(&w, buf, cap);
    pk_wr_bytes(&w, RX_MAGIC, 4);
    pk_wr_u8(&w, RX_VER);
    pk_wr_block8(&w, f->id, f->id_len);
    pk_wr_u8(&w, (uint8_t)f->n);
    for (size_t i = 0; i < f->n; i++) {
        pk_wr_u32(&w, f->e[i].key_id);
        pk_wr_u64(&w, f->e[i].created_ms);
        pk_wr_bytes(&w, f->e[i].w, sizeof f->e[i].w);
    }
    int rc = pk_wr_ok(&w);
    *len = rc == PK_OK ? w.len : 0;
    return rc;
}

/* ---------------- master keys ---------------- */

/* The master key to use at now: the next one once effective, else the current. */
static const pk_reg_mk_t *mk_pick(const pk_reg_mkset_t *mk, uint64_t now)
{
    if (mk->n == 0)
        return NULL;
    if (mk->n == 2 && now >= mk->k[1].not_before_ms)
        return &mk->k[1];
    return &mk->k[0];
}

void pk_dmk_print(const pk_dstate_t *s, const pk_reg_dev_t *d, int reveal)
{
    static dmk_file_t f;
    uint64_t now = pk_now_realtime_ms();
    const pk_reg_mkset_t *mk = &d->keys.mk;
    const pk_reg_mk_t *use = mk_pick(mk, now);
    for (unsigned i = 0; i < mk->n; i++) {
        const pk_reg_mk_t *k = &mk->k[i];
        const char *st = k->expiry_ms <= now      ? "expired"
                         : k == use               ? "current"
                         : k->not_before_ms > now ? "next"
                                                  : "superseded";
        printf("master domain_id=%" PRIu32 " mk_id=%" PRIu32 " not_before_ms=%" PRIu64
               " expiry_ms=%" PRIu64 " state=%s key=",
               mk->domain_id, k->id, k->not_before_ms, k->expiry_ms, st);
        print_masked(stdout, k->key, PK_REG_MK_LEN, reveal);
        putchar('\n');
    }
    if (table_read(s, &f) != PK_OK) {
        printf("individual keys: %s/%s is damaged\n", s->dir, TABLE_FILE);
        return;
    }
    for (size_t i = 0; i < f.n; i++) {
        char line[512];
        if (f.e[i].expiry_ms <= now)
            continue;
        if (pk_mk_entry_format(&f.e[i], reveal, line, sizeof line))
            printf("individual %s\n", line);
    }
    pk_wipe(&f, sizeof f);
}

/* ---------------- the node channel: MK_REFRESH / MK_UPDATE ---------------- */

/* A UDP socket for the node channel bound to the registered local address
 * (or any port when reg_addr is 0 or the address is taken); *node the node. */
static int chan_socket(const pk_dstate_t *s, int reg_addr, pk_addr_t *node)
{
    pk_addr_t local;
    if (!s->has_node || pk_addr_parse(s->node_addr, node, NULL) != PK_OK)
        return -1;
    if (!reg_addr || !s->local[0] || pk_addr_parse(s->local, &local, NULL) != PK_OK)
        (void)pk_addr_parse(node->ss.ss_family == AF_INET6 ? "[::1]:0" : "127.0.0.1:0", &local,
                            NULL);
    int fd = socket(local.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd >= 0 && bind(fd, (const struct sockaddr *)&local.ss, local.len) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Seals an MK_REFRESH under the state lock (the counter is stored before it
 * is used) into buf. PK_OK, or the error. */
static int chan_refresh(pk_dstate_t *s, uint8_t buf[PK_REG_MK_REFRESH_MAX], size_t *len)
{
    static pk_reg_dev_t d;
    uint8_t arena[PK_REG_MK_REFRESH_MAX + 16];
    pk_out_t o;
    int rc = pk_dstate_lock(s);
    if (rc != PK_OK)
        return rc;
    memset(&d, 0, sizeof d);
    pk_out_init(&o, arena, sizeof arena);
    rc = pk_dstate_load_reg(s, &d);
    if (rc == PK_OK)
        rc = pk_reg_dev_mk_refresh(&d, &o);
    if (rc == PK_OK)
        rc = pk_dstate_save_reg(s, &d);
    if (rc == PK_OK) {
        memcpy(buf, o.act[0].data, o.act[0].len);
        *len = o.act[0].len;
    }
    pk_dstate_unlock(s);
    pk_reg_dev_clear(&d);
    pk_wipe(arena, sizeof arena);
    return rc;
}

/* One datagram from the node: an MK_UPDATE is opened on the stored
 * registration and the new block stored (0600, durable) before anyone uses
 * it, all under the state lock. PK_OK with *newest (0: the kms has none) and
 * *changed, or the error (nothing stored). */
static int chan_update(pk_dstate_t *s, const uint8_t *b, size_t n, uint32_t *newest, int *changed)
{
    static pk_reg_dev_t d;
    uint8_t arena[64];
    pk_out_t o;
    if (n < 1 || b[0] != PK_REG_T_MK_UPDATE)
        return PK_ERR_MALFORMED;
    int rc = pk_dstate_lock(s);
    if (rc != PK_OK)
        return rc;
    memset(&d, 0, sizeof d);
    pk_out_init(&o, arena, sizeof arena);
    rc = pk_dstate_load_reg(s, &d);
    if (rc == PK_OK)
        rc = pk_reg_dev_input(&d, b, n, 0, &o);
    if (rc == PK_OK && (o.n != 1 || o.act[0].code != PK_REG_EV_MK_UPDATE))
        rc = PK_ERR_STATE;
    if (rc == PK_OK)
        rc = pk_dstate_save_reg(s, &d); /* also the channel's replay window */
    if (rc == PK_OK) {
        *newest = (uint32_t)o.act[0].dest;
        *changed = o.act[0].data[0];
    }
    pk_dstate_unlock(s);
    pk_reg_dev_clear(&d);
    return rc;
}

/* ---------------- mk run ---------------- */

typedef struct peer {
    uint8_t used, configured;
    uint8_t id[PK_MK_ID_MAX];
    uint8_t id_len; /* 0: not known yet */
    pk_addr_t addr;
    uint64_t seen_ms;
} peer_t;

/* A receive context for one individual key (an LRU cache of RX_MAX); its
 * window is restored from r->rxf whenever it is set up. */
typedef struct rxctx {
    uint8_t used;
    uint32_t key_id;
    uint64_t created_ms; /* with key_id: which key (a later one may reuse the ID) */
    uint64_t used_ms;
    pk_record_t rec;
} rxctx_t;

/* A record accepted in the current batch, waiting for its window to be
 * durable before it is printed. */
typedef struct rxmsg {
    uint32_t key_id;
    uint8_t pending; /* under our pending key: confirm it once durable */
    uint8_t partner[PK_MK_ID_MAX];
    uint8_t partner_len;
    size_t len;
    uint8_t text[TEXT_MAX];
} rxmsg_t;

typedef struct runner {
    pk_dstate_t *s;
    pk_reg_dev_t *d;
    pk_mk_client_t c;
    pk_mk_table_t t;
    pk_mk_entry_t e[PK_DMK_TABLE_CAP];
    peer_t peer[PEERS_MAX];
    rxctx_t rx[RX_MAX];
    dmk_rx_file_t rxf;      /* every saved window: DIR/mk-rx, plus this batch's */
    dmk_rx_file_t rxf_snap; /* rxf as last written, while a batch is open */
    int rx_open;            /* records accepted since rxf was last written */
    rxmsg_t q[RECV_BATCH];  /* their contents, printed once rxf is written */
    size_t nq;
    int run_lock; /* DIR/mk-run.lock, held for the whole run */
    int fd;
    uint8_t flags;
    int have_beacon;
    pk_addr_t beacon;
    uint32_t cur_mk;
    int dirty;              /* mk-table must be written */
    uint64_t save_retry_ms; /* after a failed write: not before this */
    int nfd;                /* the node channel on the registered address (pushes), -1: none */
    pk_addr_t node;         /* the node's address */
    uint64_t next_poll;     /* the next MK_REFRESH when the key nears expiry */
    uint64_t stats_keys, stats_drops, stats_msgs;
} runner_t;

static const char *addr_str(const pk_addr_t *a, char buf[PK_ADDR_STRLEN])
{
    return pk_addr_format(a, buf);
}

/* The handle (index) of the peer at address a, adding it when new. */
static int peer_of_addr(runner_t *r, const pk_addr_t *a, uint64_t now)
{
    int free_i = -1, old_i = -1;
    for (int i = 0; i < PEERS_MAX; i++) {
        if (r->peer[i].used && pk_addr_eq(&r->peer[i].addr, a)) {
            r->peer[i].seen_ms = now;
            return i;
        }
        if (!r->peer[i].used && free_i < 0)
            free_i = i;
        if (r->peer[i].used && !r->peer[i].configured &&
            (old_i < 0 || r->peer[i].seen_ms < r->peer[old_i].seen_ms))
            old_i = i;
    }
    int i = free_i >= 0 ? free_i : old_i;
    if (i < 0)
        return -1;
    memset(&r->peer[i], 0, sizeof r->peer[i]);
    r->peer[i].used = 1;
    r->peer[i].addr = *a;
    r->peer[i].seen_ms = now;
    return i;
}

static int peer_of_id(const runner_t *r, const uint8_t *id, size_t n)
{
    for (int i = 0; i < PEERS_MAX; i++)
        if (r->peer[i].used && r->peer[i].id_len == n && memcmp(r->peer[i].id, id, n) == 0)
            return i;
    return -1;
}

static void peer_learn(runner_t *r, int h, const uint8_t *id, size_t n)
{
    if (h < 0 || h >= PEERS_MAX || n == 0 || n > PK_MK_ID_MAX)
        return;
    int o = peer_of_id(r, id, n);
    if (o >= 0 && o != h && !r->peer[o].configured)
        r->peer[o].id_len = 0; /* the partner moved */
    memcpy(r->peer[h].id, id, n);
    r->peer[h].id_len = (uint8_t)n;
}

static void say(const runner_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const runner_t *r, const char *fmt, ...)
{
    va_list ap;
    printf("mk client=%.*s ", (int)r->s->id.len, (const char *)r->s->id.b);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void flush_out(runner_t *r, pk_out_t *o, int src)
{
    char a[PK_ADDR_STRLEN];
    for (size_t i = 0; i < o->n; i++) {
        const pk_act_t *act = &o->act[i];
        if (act->kind == PK_ACT_SEND) {
            if (act->dest >= PEERS_MAX || !r->peer[act->dest].used)
                continue;
            const pk_addr_t *to = &r->peer[act->dest].addr;
            if (sendto(r->fd, act->data, act->len, 0, (const struct sockaddr *)&to->ss, to->len) <
                0)
                say(r, "event=send_failed to=%s errno=%d", addr_str(to, a), errno);
        } else if (act->kind == PK_ACT_EVENT && act->code == PK_MK_EV_KEY) {
            const pk_mk_entry_t *e =
                pk_mk_table_find(&r->t, (uint32_t)act->dest, pk_now_realtime_ms());
            peer_learn(r, src, act->data, act->len);
            r->stats_keys++;
            r->dirty = 1;
            printf("mk client=%.*s event=key partner=", (int)r->s->id.len,
                   (const char *)r->s->id.b);
            pk_dcli_print_id(stdout, act->data, act->len);
            printf(" key_id=%" PRIu64 " mk_id=%" PRIu32 " expiry_ms=%" PRIu64 " role=%s\n",
                   act->dest, e ? e->mk_id : 0, e ? e->expiry_ms : 0,
                   e && e->role == PK_MK_ROLE_INITIATOR ? "initiator" : "responder");
            fflush(stdout);
        }
    }
    pk_out_reset(o);
}

static void start_auth(runner_t *r, const uint8_t *id, size_t n, int h, const char *why,
                       uint64_t now, pk_out_t *o)
{
    int rc = pk_mk_client_start(&r->c, id, n, r->flags, (uint64_t)h, now, o);
    printf("mk client=%.*s event=auth_start partner=", (int)r->s->id.len, (const char *)r->s->id.b);
    pk_dcli_print_id(stdout, id, n);
    printf(" why=%s mk_id=%" PRIu32 " result=%s\n", why, r->cur_mk,
           rc == PK_OK ? "sent" : pk_strerror(rc));
    fflush(stdout);
    flush_out(r, o, h);
}

/* Installs the master key to use now from the registration; 1 when changed. */
static int install_master(runner_t *r, uint64_t now)
{
    const pk_reg_mk_t *k = mk_pick(&r->d->keys.mk, now);
    if (!k || (r->c.has_mk && k->id == r->cur_mk))
        return 0;
    if (r->d->keys.mk.domain_id != r->c.domain_id && r->c.has_mk) {
        say(r, "event=domain_changed ignored (restart the client)");
        return 0;
    }
    uint32_t old = r->cur_mk;
    int rc = pk_mk_client_set_master(&r->c, k->key, PK_REG_MK_LEN, k->id, k->expiry_ms, now);
    if (rc != PK_OK) {
        say(r, "event=master_refused mk_id=%" PRIu32 " reason=%s", k->id, pk_strerror(rc));
        return 0;
    }
    r->cur_mk = k->id;
    if (old)
        say(r,
            "event=master_changed old_mk_id=%" PRIu32 " mk_id=%" PRIu32 " expiry_ms=%" PRIu64
            " (FIG. 8: re-authenticate every partner)",
            old, k->id, k->expiry_ms);
    else
        say(r, "event=master mk_id=%" PRIu32 " domain_id=%" PRIu32 " expiry_ms=%" PRIu64, k->id,
            r->d->keys.mk.domain_id, k->expiry_ms);
    return 1;
}

/* Re-reads the registration (a refresh or re-registration by another
 * command may have brought a new master key). */
static void reload_master(runner_t *r, uint64_t now)
{
    static pk_reg_dev_t nd;
    memset(&nd, 0, sizeof nd);
    if (pk_dstate_load_reg_aside(r->s, &nd) == PK_OK) {
        const pk_reg_mk_t *a = mk_pick(&nd.keys.mk, now);
        if (a && (!r->c.has_mk || a->id != r->cur_mk || nd.keys.mk.n != r->d->keys.mk.n))
            pk_dstate_reg_move(r->d, &nd); /* nd is wiped: moved */
    }
    pk_reg_dev_clear(&nd);
    install_master(r, now);
}

/* ---- replay protection that survives restarts and evicted contexts ----
 *
 * Every record mk run accepts is made durable in DIR/mk-rx before it is
 * printed: the context's window is exported into r->rxf, and after each
 * batch of datagrams (up to RECV_BATCH from one poll) the whole file is
 * written once (temp file, fsync, rename, directory fsync); only then are
 * the batch's records printed. A context set up later for the same key
 * (after a restart, or after LRU eviction) starts from that key's window in
 * r->rxf, so at the end of every batch each context's window is its entry in
 * r->rxf (none: empty). A window leaves the file only once mk-table has been
 * written without its key, so a key that can still be loaded always has its
 * window. */

/* The table row holding this key (ID and creation time), or NULL. */
static const pk_mk_entry_t *key_row(const runner_t *r, uint32_t key_id, uint64_t created_ms)
{
    for (size_t i = 0; i < PK_DMK_TABLE_CAP; i++)
        if ((r->e[i].flags & PK_MK_E_USED) && r->e[i].key_id == key_id &&
            r->e[i].created_ms == created_ms)
            return &r->e[i];
    return NULL;
}

static int rx_find(const runner_t *r, uint32_t key_id, uint64_t created_ms)
{
    for (size_t i = 0; i < r->rxf.n; i++)
        if (r->rxf.e[i].key_id == key_id && r->rxf.e[i].created_ms == created_ms)
            return (int)i;
    return -1;
}

static int rx_write(const runner_t *r)
{
    static uint8_t buf[PK_DMK_RX_MAX];
    size_t len = 0;
    int rc = pk_dmk_rx_encode(&r->rxf, buf, sizeof buf, &len);
    if (rc == PK_OK)
        rc = pk_dstate_write(r->s->dir, RX_FILE, buf, len);
    return rc;
}

/* Reads DIR/mk-rx into *f (absent: no window yet, f->id ours). PK_OK, or the
 * error with *why saying what is wrong. */
static int rx_read(const pk_dstate_t *s, dmk_rx_file_t *f, const char **why)
{
    static uint8_t buf[PK_DMK_RX_MAX];
    size_t len = 0;
    memset(f, 0, sizeof *f);
    int rc = pk_dstate_read(s->dir, RX_FILE, buf, sizeof buf, &len);
    if (rc == PK_ERR_NOTFOUND) {
        memcpy(f->id, s->id.b, s->id.len);
        f->id_len = s->id.len;
        return PK_OK;
    }
    if (rc == PK_OK)
        rc = pk_dmk_rx_parse(buf, len, f);
    else if (rc == PK_ERR_SPACE)
        rc = PK_ERR_MALFORMED; /* larger than any file we write */
    if (rc == PK_OK && (f->id_len != s->id.len || memcmp(f->id, s->id.b, f->id_len) != 0)) {
        pk_wipe(f, sizeof *f);
        rc = PK_ERR_STATE;
    }
    *why = rc == PK_ERR_DENIED    ? "is readable by others"
           : rc == PK_ERR_STATE   ? "belongs to another client identity"
           : rc == PK_ERR_VERSION ? "has an unsupported version"
           : rc == PK_ERR_IO      ? "cannot be read"
                                  : "is damaged";
    return rc;
}

/* Drops the windows of keys that are no longer in the table. Call only when
 * mk-table has just been written from this table (or was just loaded), so
 * no key that can still be loaded loses its window. Returns how many went. */
static size_t rx_prune(runner_t *r)
{
    size_t k = 0, n = r->rxf.n;
    for (size_t i = 0; i < n; i++) {
        if (key_row(r, r->rxf.e[i].key_id, r->rxf.e[i].created_ms))
            r->rxf.e[k++] = r->rxf.e[i];
    }
    for (size_t i = k; i < n; i++)
        pk_wipe(&r->rxf.e[i], sizeof r->rxf.e[i]);
    r->rxf.n = k;
    return n - k;
}

/* Receive contexts of keys gone from the table: cleared (their keys wiped). */
static void rx_ctx_prune(runner_t *r)
{
    for (int i = 0; i < RX_MAX; i++)
        if (r->rx[i].used && !key_row(r, r->rx[i].key_id, r->rx[i].created_ms)) {
            pk_record_clear(&r->rx[i].rec);
            memset(&r->rx[i], 0, sizeof r->rx[i]);
        }
}

/* mk-table and then the windows file without the windows of removed keys. */
static int table_save_all(runner_t *r)
{
    int rc = table_save(r->s, &r->t);
    if (rc == PK_OK && rx_prune(r) > 0 && rx_write(r) != PK_OK)
        say(r, "event=rx_save_failed (the old file keeps more windows; retried with the next "
               "record)");
    return rc;
}

static rxctx_t *rx_for(runner_t *r, const pk_mk_entry_t *e, uint64_t now)
{
    rxctx_t *slot = NULL;
    for (int i = 0; i < RX_MAX; i++)
        if (r->rx[i].used && r->rx[i].key_id == e->key_id && r->rx[i].created_ms == e->created_ms) {
            r->rx[i].used_ms = now;
            return &r->rx[i];
        }
    for (int i = 0; i < RX_MAX; i++)
        if (!r->rx[i].used || !slot || (slot->used && r->rx[i].used_ms < slot->used_ms))
            if (!slot || slot->used)
                slot = &r->rx[i];
    pk_record_clear(&slot->rec);
    memset(slot, 0, sizeof *slot);
    uint8_t tk[16], ts[4], rk[16], rs[4];
    uint16_t sid = 0;
    int rc = pk_mk_record_keys(e, tk, ts, rk, rs, &sid);
    if (rc == PK_OK)
        rc = pk_record_init(&slot->rec, sid, 0, NULL, NULL, rk, rs);
    pk_wipe(tk, sizeof tk);
    pk_wipe(ts, sizeof ts);
    pk_wipe(rk, sizeof rk);
    pk_wipe(rs, sizeof rs);
    /* every record accepted under this key before, here or before a restart */
    int w = rx_find(r, e->key_id, e->created_ms);
    if (rc == PK_OK && w >= 0)
        rc = pk_record_rx_import(&slot->rec, r->rxf.e[w].w);
    if (rc != PK_OK) {
        pk_record_clear(&slot->rec);
        return NULL;
    }
    slot->used = 1;
    slot->key_id = e->key_id;
    slot->created_ms = e->created_ms;
    slot->used_ms = now;
    return slot;
}

/* Records x's new window (after a record opened under it) in r->rxf. The
 * first acceptance of a batch keeps rxf as last written in rxf_snap. When
 * rxf is full and mk-table cannot be written to make room: PK_ERR_LIMIT,
 * and x's window is rolled back to before[]. */
static int rx_accept(runner_t *r, rxctx_t *x, const uint8_t before[PK_RECORD_RX_STATE_LEN])
{
    int i = rx_find(r, x->key_id, x->created_ms);
    if (i < 0 && r->rxf.n == PK_DMK_RX_CAP)
        (void)table_save_all(r); /* drops the windows of keys gone from the table */
    if (i < 0 && r->rxf.n == PK_DMK_RX_CAP) {
        if (pk_record_rx_import(&x->rec, before) != PK_OK)
            abort(); /* our own bug: before was exported from x */
        return PK_ERR_LIMIT;
    }
    if (!r->rx_open) {
        r->rxf_snap = r->rxf;
        r->rx_open = 1;
    }
    if (i < 0) {
        i = (int)r->rxf.n++;
        memset(&r->rxf.e[i], 0, sizeof r->rxf.e[i]);
        r->rxf.e[i].key_id = x->key_id;
        r->rxf.e[i].created_ms = x->created_ms;
    }
    if (pk_record_rx_export(&x->rec, r->rxf.e[i].w) != PK_OK)
        abort(); /* our own bug: x has an rx direction */
    return PK_OK;
}

/* Ends a batch (group commit): writes DIR/mk-rx once for every record
 * accepted since the last write, and only then prints them. If the write
 * fails, rxf and every receive context go back to the windows last written,
 * so none of those records was accepted (a retransmission may be), and they
 * are dropped. */
static void rx_flush(runner_t *r, uint64_t now)
{
    if (!r->rx_open)
        return;
    int rc = rx_write(r);
    if (rc != PK_OK) {
        static const uint8_t empty[PK_RECORD_RX_STATE_LEN];
        r->rxf = r->rxf_snap;
        for (int i = 0; i < RX_MAX; i++) {
            if (!r->rx[i].used)
                continue;
            int w = rx_find(r, r->rx[i].key_id, r->rx[i].created_ms);
            if (pk_record_rx_import(&r->rx[i].rec, w >= 0 ? r->rxf.e[w].w : empty) != PK_OK)
                abort(); /* our own bug: rxf holds checked windows only */
        }
    }
    for (size_t k = 0; k < r->nq; k++) {
        rxmsg_t *m = &r->q[k];
        if (rc != PK_OK) {
            r->stats_drops++;
            say(r, "event=record_dropped key_id=%" PRIu32 " reason=%s", m->key_id, pk_strerror(rc));
        } else {
            r->stats_msgs++;
            /* The partner sent under our pending key: it holds it, so the key
             * is current now even though its END2 was lost (table.h). */
            if (m->pending && pk_mk_table_confirm(&r->t, m->key_id, 0, now) == PK_OK)
                r->dirty = 1;
            printf("mk client=%.*s event=message from=", (int)r->s->id.len,
                   (const char *)r->s->id.b);
            pk_dcli_print_id(stdout, m->partner, m->partner_len);
            printf(" key_id=%" PRIu32 " text=", m->key_id);
            for (size_t i = 0; i < m->len; i++)
                putchar(m->text[i] >= 0x20 && m->text[i] < 0x7f ? m->text[i] : '?');
            putchar('\n');
        }
        pk_wipe(m, sizeof *m);
    }
    fflush(stdout);
    r->nq = 0;
    r->rx_open = 0;
}

/* One record: opened under its key's context and accepted into the batch;
 * printed by rx_flush() once its window is durable. */
static void on_record(runner_t *r, const uint8_t *b, size_t n, const pk_addr_t *from, uint64_t now)
{
    pk_record_hdr_t h;
    uint8_t type = 0, before[PK_RECORD_RX_STATE_LEN];
    size_t ptlen = 0;
    char a[PK_ADDR_STRLEN];
    if (pk_record_peek(b, n, &h) != PK_OK || h.type != PK_DMK_T_DATA || h.epoch != 0) {
        r->stats_drops++;
        return;
    }
    if (r->nq == RECV_BATCH)
        rx_flush(r, now); /* callers flush per batch: cannot happen */
    rxmsg_t *m = &r->q[r->nq];
    const pk_mk_entry_t *e = pk_mk_table_find_sid(&r->t, h.session_id, now);
    rxctx_t *x = e ? rx_for(r, e, now) : NULL;
    int rc = x ? pk_record_rx_export(&x->rec, before) : PK_ERR_NOTFOUND;
    if (rc == PK_OK)
        rc = pk_record_open(&x->rec, b, n, &type, m->text, sizeof m->text, &ptlen);
    if (rc == PK_OK)
        rc = rx_accept(r, x, before);
    if (rc != PK_OK) {
        pk_wipe(m, sizeof *m);
        r->stats_drops++;
        say(r, "event=record_dropped from=%s sid=%u reason=%s", addr_str(from, a), h.session_id,
            pk_strerror(rc));
        return;
    }
    m->key_id = e->key_id;
    m->pending = (e->flags & PK_MK_E_PENDING) != 0;
    memcpy(m->partner, e->partner, e->partner_len);
    m->partner_len = e->partner_len;
    m->len = ptlen;
    r->nq++;
}

static void send_beacons(runner_t *r)
{
    uint8_t b[PK_MK_BEACON_MAX];
    size_t len = 0;
    if (pk_mk_client_beacon(&r->c, b, sizeof b, &len) != PK_OK)
        return;
    for (int i = 0; i < PEERS_MAX; i++)
        if (r->peer[i].used && r->peer[i].configured)
            (void)sendto(r->fd, b, len, 0, (const struct sockaddr *)&r->peer[i].addr.ss,
                         r->peer[i].addr.len);
    if (r->have_beacon)
        (void)sendto(r->fd, b, len, 0, (const struct sockaddr *)&r->beacon.ss, r->beacon.len);
}

#define POLL_MS 10000 /* MK_REFRESH near expiry at most this often */

/* Datagrams on the node channel: pushed (or answered) MK_UPDATEs. The new
 * block is stored first; the periodic reload then runs the FIG. 8 cascade. */
static void node_input(runner_t *r, uint8_t *dg, uint64_t now)
{
    char a[PK_ADDR_STRLEN];
    for (int k = 0; k < RECV_BATCH; k++) {
        pk_addr_t from;
        memset(&from, 0, sizeof from);
        from.len = sizeof from.ss;
        ssize_t n =
            recvfrom(r->nfd, dg, DGRAM_MAX, 0, (struct sockaddr *)&from.ss, (socklen_t *)&from.len);
        if (n < 0)
            break;
        if (!pk_addr_eq(&from, &r->node) || n < 1 || dg[0] != PK_REG_T_MK_UPDATE) {
            r->stats_drops++;
            continue;
        }
        uint32_t newest = 0;
        int changed = 0;
        int rc = chan_update(r->s, dg, (size_t)n, &newest, &changed);
        if (rc != PK_OK) {
            r->stats_drops++;
            say(r, "event=mk_update_dropped from=%s reason=%s", addr_str(&from, a),
                pk_strerror(rc));
            continue;
        }
        say(r, "event=mk_update newest_mk_id=%" PRIu32 " changed=%d (stored)", newest, changed);
        if (changed)
            reload_master(r, now);
    }
}

/* When the master key in use nears expiry and no later one is known, asks
 * the node (MK_REFRESH from the registered address; the MK_UPDATE comes back
 * there) at most every POLL_MS. */
static void poll_refresh(runner_t *r, uint64_t lead, uint64_t now)
{
    const pk_reg_mkset_t *mk = &r->d->keys.mk;
    const pk_reg_mk_t *k = mk_pick(mk, now);
    if (r->nfd < 0 || !k || now < r->next_poll || lead == 0)
        return;
    if (k->expiry_ms > now + lead || (mk->n == 2 && k == &mk->k[0]))
        return; /* not near expiry, or the next key is already here */
    uint8_t buf[PK_REG_MK_REFRESH_MAX];
    size_t len = 0;
    r->next_poll = now + POLL_MS;
    int rc = chan_refresh(r->s, buf, &len);
    if (rc == PK_OK &&
        sendto(r->nfd, buf, len, 0, (const struct sockaddr *)&r->node.ss, r->node.len) < 0)
        rc = PK_ERR_IO;
    say(r, "event=mk_refresh_sent why=near_expiry mk_id=%" PRIu32 " result=%s", k->id,
        rc == PK_OK ? "sent" : pk_strerror(rc));
}

static int parse_secs(const char *v, uint64_t max, uint64_t *ms)
{
    char *end = NULL;
    if (!v)
        return 0;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || !end || *end || d < 0 || d > (double)max)
        return -1;
    *ms = (uint64_t)(d * 1000.0);
    return 0;
}

/* --peer ID=ADDR[,ID=ADDR...] (ID may be empty: "=ADDR"). */
static int parse_peers(runner_t *r, const char *spec)
{
    char buf[2048];
    if (!spec)
        return 0;
    if (strlen(spec) >= sizeof buf)
        return -1;
    strcpy(buf, spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        const char *addr = eq ? eq + 1 : tok;
        size_t idl = eq ? (size_t)(eq - tok) : 0;
        pk_addr_t a;
        if (pk_addr_parse(addr, &a, NULL) != PK_OK || idl > PK_MK_ID_MAX)
            return -1;
        int h = peer_of_addr(r, &a, 0);
        if (h < 0)
            return -1;
        r->peer[h].configured = 1;
        if (idl) {
            memcpy(r->peer[h].id, tok, idl);
            r->peer[h].id_len = (uint8_t)idl;
        }
    }
    return 0;
}

/* Takes DIR/mk-run.lock for the life of mk run (released when the process
 * ends): one receiver per directory. PK_OK, PK_ERR_BUSY, PK_ERR_IO. */
static int run_lock(const pk_dstate_t *s, int *fd)
{
    char path[PK_DSTATE_PATH_MAX + sizeof RUN_LOCK + 1];
    snprintf(path, sizeof path, "%s/%s", s->dir, RUN_LOCK);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd < 0)
        return PK_ERR_IO;
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        close(*fd);
        *fd = -1;
        return PK_ERR_BUSY;
    }
    return PK_OK;
}

static const pk_conf_key_t run_keys[] = {
    {"dir", "DIR     the device's state directory", NULL, 0},
    {"listen", "ADDR    UDP address to listen on (host:port)", NULL, 0},
    {"peer", "ID=ADDR[,ID=ADDR...]  partners to authenticate with and beacon to", NULL, 0},
    {"beacon", "ADDR:PORT  also send beacons here (may be a broadcast address)", NULL, 0},
    {"lead-time", "S       renew an individual key this long before it expires", "300", 0},
    {"lifetime", "S       lifetime of individual keys this client makes", "3600", 0},
    {"retry", "S       retry a failed renewal after this", "30", 0},
    {"grace", "S       a replaced key stays usable this long", "30", 0},
    {"auth-timeout", "S       drop an unfinished authentication after this", "5", 0},
    {"wrap", "third embodiment: make the key and send it wrapped under the master key", NULL, 1},
    {"no-autostart", "do not authenticate with clients found by their beacons", NULL, 1},
    {"duration", "S       exit after S seconds (default: run until SIGTERM)", NULL, 0},
    {"refresh-lead",
     "S       ask the node for the next master key this long before the current "
     "one expires, when none is known",
     "120", 0},
    {"no-push", "do not listen for the node's MK_UPDATE pushes on the registered address", NULL, 1},
};

static int cmd_run(int argc, char **argv)
{
    static pk_conf_t conf;
    static pk_dstate_t s;
    static pk_reg_dev_t d;
    static runner_t r;
    static dmk_file_t f;
    static uint8_t obuf[8192], dg[DGRAM_MAX];
    pk_out_t o;
    char *pos[1];
    int npos = 0, ret = 1;
    char a[PK_ADDR_STRLEN];

    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device mk run --dir DIR --listen ADDR [--peer ID=ADDR,...]\n"
               "         [--beacon ADDR:PORT] [--lead-time S] [--lifetime S] [--wrap] "
               "[--duration S]\n"
               "The master-key client: finds the other clients of its domain (configured peers,\n"
               "beacons), authenticates each with the domain's master key and keeps the\n"
               "individual key it shares with each (DIR/mk-table); renews keys before expiry,\n"
               "re-authenticates every partner when the master key changes (FIG. 8), removes\n"
               "expired keys, and prints messages received under individual keys.\n");
        pk_conf_init(&conf, run_keys, sizeof run_keys / sizeof *run_keys);
        pk_conf_help(&conf);
        return 0;
    }
    pk_conf_init(&conf, run_keys, sizeof run_keys / sizeof *run_keys);
    if (pk_conf_args(&conf, argc, argv, pos, 0, &npos) != 0)
        return pk_dcli_usage("mk run", conf.err);
    const char *dir = pk_conf_get(&conf, "dir"), *listen = pk_conf_get(&conf, "listen");
    if (!dir || !listen)
        return pk_dcli_usage("mk run", "--dir DIR and --listen ADDR are required");
    pk_mk_cfg_t cfg;
    pk_mk_cfg_default(&cfg);
    uint64_t dur = 0, refresh_lead = 0;
    if (parse_secs(pk_conf_get(&conf, "lead-time"), 86400, &cfg.renew_lead_ms) ||
        parse_secs(pk_conf_get(&conf, "lifetime"), 86400, &cfg.ik_lifetime_ms) ||
        parse_secs(pk_conf_get(&conf, "retry"), 86400, &cfg.retry_ms) ||
        parse_secs(pk_conf_get(&conf, "grace"), 86400, &cfg.grace_ms) ||
        parse_secs(pk_conf_get(&conf, "auth-timeout"), 3600, &cfg.auth_timeout_ms) ||
        parse_secs(pk_conf_get(&conf, "duration"), 1e7, &dur) ||
        parse_secs(pk_conf_get(&conf, "refresh-lead"), 86400, &refresh_lead) ||
        cfg.ik_lifetime_ms == 0 || cfg.retry_ms == 0 || cfg.auth_timeout_ms == 0)
        return pk_dcli_usage("mk run", "times are seconds (lifetime and retry > 0)");
    cfg.beacon_autostart = !pk_conf_flag(&conf, "no-autostart");
    memset(&r, 0, sizeof r);
    r.fd = -1;
    r.nfd = -1;
    r.run_lock = -1;
    r.flags = pk_conf_flag(&conf, "wrap") ? PK_MK_FLAG_WRAP : 0;
    if (parse_peers(&r, pk_conf_get(&conf, "peer")))
        return pk_dcli_usage("mk run", "--peer: ID=HOST:PORT[,ID=HOST:PORT...]");
    const char *bc = pk_conf_get(&conf, "beacon");
    if (bc && pk_addr_parse(bc, &r.beacon, NULL) != PK_OK)
        return pk_dcli_usage("mk run", "--beacon: HOST:PORT");
    r.have_beacon = bc != NULL;

    if (pk_dstate_load(&s, dir) != PK_OK)
        return pk_dcli_fail("mk run", "%s is not a device state directory", dir);
    if (pk_dstate_load_reg(&s, &d) != PK_OK) {
        pk_dcli_fail("mk run", "no registration in %s (run 'proxkey device register --dir %s')",
                     dir, dir);
        goto out;
    }
    if (d.keys.mk.n == 0) {
        pk_dcli_fail("mk run",
                     "the registration holds no master key: the device is in no domain (kms "
                     "domain member add), or its domain has no key (kms master rotate)");
        goto out;
    }
    r.s = &s;
    r.d = &d;
    if (run_lock(&s, &r.run_lock) != PK_OK) {
        pk_dcli_fail("mk run", "%s is in use by another 'proxkey device mk run'", dir);
        goto out;
    }
    if (pk_mk_client_init(&r.c, s.id.b, s.id.len, d.keys.mk.domain_id, &cfg, &r.t, r.e,
                          PK_DMK_TABLE_CAP, &pk_rng_system) != PK_OK) {
        pk_dcli_fail("mk run", "cannot set up the client");
        goto out;
    }
    /* restore the table, then the master key (which marks keys of older MKs) */
    if (table_read(&s, &f) == PK_OK) {
        for (size_t i = 0; i < f.n; i++)
            r.e[i] = f.e[i];
    } else {
        say(&r, "event=table_damaged (starting empty)");
    }
    pk_wipe(&f, sizeof f);
    /* the replay windows of those keys: without them a record accepted
     * before would be accepted again, so a bad file stops us */
    const char *why = "";
    int rxrc = rx_read(&s, &r.rxf, &why);
    if (rxrc != PK_OK) {
        pk_dcli_fail("mk run",
                     "%s/%s %s: not starting, since records accepted before could be "
                     "accepted again; restore the file, or remove it together with %s/%s (the "
                     "individual keys it protects) to start with new keys",
                     dir, RX_FILE, why, dir, TABLE_FILE);
        goto out;
    }
    (void)rx_prune(&r); /* windows of keys no longer in mk-table */
    uint64_t now = pk_now_realtime_ms();
    if (!install_master(&r, now)) {
        pk_dcli_fail("mk run", "the master key is not usable (expired?)");
        goto out;
    }
    pk_addr_t la;
    if (pk_addr_parse(listen, &la, NULL) != PK_OK) {
        pk_dcli_usage("mk run", "--listen: HOST:PORT");
        goto out;
    }
    r.fd = socket(la.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (r.fd < 0 || setsockopt(r.fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) != 0 ||
        bind(r.fd, (const struct sockaddr *)&la.ss, la.len) != 0) {
        pk_dcli_fail("mk run", "cannot bind %s: %s", listen, strerror(errno));
        goto out;
    }
    pk_addr_t me;
    if (pk_addr_local(r.fd, &me) == PK_OK)
        say(&r, "event=listening addr=%s domain_id=%" PRIu32 " keys=%zu windows=%zu",
            addr_str(&me, a), d.keys.mk.domain_id, pk_mk_table_count(&r.t), r.rxf.n);

    if (!pk_conf_flag(&conf, "no-push")) {
        r.nfd = chan_socket(&s, 1, &r.node);
        if (r.nfd >= 0)
            say(&r, "event=push_listening addr=%s node=%s", s.local, s.node_addr);
        else
            say(&r, "event=push_unavailable addr=%s (polling the node near expiry)", s.local);
    }
    if (r.nfd < 0 && s.has_node)
        (void)pk_addr_parse(s.node_addr, &r.node, NULL);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    pk_out_init(&o, obuf, sizeof obuf);
    uint64_t end = dur ? now + dur : UINT64_MAX;
    uint64_t next_beacon = 0, next_reload = now + RELOAD_MS;
    /* FIG. 5 S5-S8: authenticate with the configured partners without a fresh key */
    for (int i = 0; i < PEERS_MAX; i++)
        if (r.peer[i].used && r.peer[i].id_len &&
            !pk_mk_table_is_fresh(&r.t, r.peer[i].id, r.peer[i].id_len, now))
            start_auth(&r, r.peer[i].id, r.peer[i].id_len, i, "start", now, &o);
    r.dirty = 1;

    for (unsigned long iter = 0; !g_stop && iter < 100000000UL; iter++) {
        now = pk_now_realtime_ms();
        if (now >= end)
            break;
        uint64_t dl = pk_mk_client_next_deadline(&r.c);
        uint64_t wake = next_beacon < next_reload ? next_beacon : next_reload;
        if (dl < wake)
            wake = dl;
        if (end < wake)
            wake = end;
        int wait = wake <= now ? 0 : (int)(wake - now > 200 ? 200 : wake - now);
        struct pollfd pf[2] = {{r.fd, POLLIN, 0}, {r.nfd, POLLIN, 0}};
        int pr = poll(pf, r.nfd >= 0 ? 2 : 1, wait);
        now = pk_now_realtime_ms();
        if (pr > 0 && r.nfd >= 0 && (pf[1].revents & POLLIN))
            node_input(&r, dg, now);
        if (pr > 0 && (pf[0].revents & POLLIN)) {
            for (int k = 0; k < RECV_BATCH; k++) {
                pk_addr_t from;
                memset(&from, 0, sizeof from);
                from.len = sizeof from.ss;
                ssize_t n = recvfrom(r.fd, dg, sizeof dg, 0, (struct sockaddr *)&from.ss,
                                     (socklen_t *)&from.len);
                if (n < 0)
                    break;
                if (pk_addr_eq(&from, &me))
                    continue; /* our own broadcast beacon */
                if (n > 0 && dg[0] == PK_MK_VERSION) {
                    int h = peer_of_addr(&r, &from, now);
                    if (h < 0)
                        continue;
                    int rc = pk_mk_client_input(&r.c, dg, (size_t)n, (uint64_t)h, now, &o);
                    if (rc != PK_OK && !(n > 1 && dg[1] == PK_MK_T_BEACON)) {
                        r.stats_drops++;
                        say(&r, "event=auth_dropped from=%s type=0x%02x reason=%s",
                            addr_str(&from, a), n > 1 ? dg[1] : 0, pk_strerror(rc));
                    }
                    flush_out(&r, &o, h);
                } else if (n > 0 && dg[0] == PK_DMK_T_DATA) {
                    on_record(&r, dg, (size_t)n, &from, now);
                } else {
                    r.stats_drops++;
                }
            }
            rx_flush(&r, now); /* one durable write for the batch, then its records */
        }
        pk_mk_client_timeout(&r.c, now);
        poll_refresh(&r, refresh_lead, now);
        if (now >= next_reload) {
            reload_master(&r, now);
            next_reload = now + RELOAD_MS;
        }
        /* expiry and renewal (FIG. 8 cascade when the master key changed) */
        size_t before = pk_mk_table_count(&r.t);
        pk_mk_renew_t rn[16];
        size_t nr = pk_mk_table_tick(&r.t, now, rn, 16);
        size_t after = pk_mk_table_count(&r.t);
        if (after < before) {
            say(&r, "event=expired removed=%zu keys=%zu", before - after, after);
            r.dirty = 1;
        }
        rx_ctx_prune(&r);
        for (size_t i = 0; i < nr; i++) {
            int h = peer_of_id(&r, rn[i].partner, rn[i].partner_len);
            if (h < 0) {
                printf("mk client=%.*s event=renew_skipped partner=", (int)s.id.len,
                       (const char *)s.id.b);
                pk_dcli_print_id(stdout, rn[i].partner, rn[i].partner_len);
                printf(" (no address known)\n");
                fflush(stdout);
                continue;
            }
            start_auth(&r, rn[i].partner, rn[i].partner_len, h,
                       rn[i].reason == PK_MK_RENEW_MASTER ? "master_changed" : "renew", now, &o);
        }
        if (now >= next_beacon) {
            send_beacons(&r);
            next_beacon = now + BEACON_MS;
        }
        if (r.dirty && now >= r.save_retry_ms) {
            /* a failed write stays due: retried every second, so keys made
             * meanwhile are not only in memory until the next change */
            if (table_save_all(&r) != PK_OK) {
                say(&r, "event=table_save_failed retry_ms=1000");
                r.save_retry_ms = now + 1000;
            } else {
                r.dirty = 0;
            }
        }
    }
    say(&r, "event=stop keys=%zu made=%" PRIu64 " messages=%" PRIu64 " drops=%" PRIu64,
        pk_mk_table_count(&r.t), r.stats_keys, r.stats_msgs, r.stats_drops);
    (void)table_save_all(&r);
    ret = 0;
out:
    if (r.fd >= 0)
        close(r.fd);
    if (r.run_lock >= 0)
        close(r.run_lock);
    if (r.nfd >= 0)
        close(r.nfd);
    for (int i = 0; i < RX_MAX; i++)
        pk_record_clear(&r.rx[i].rec);
    pk_mk_client_clear(&r.c);
    pk_wipe(&r, sizeof r);
    pk_reg_dev_clear(&d);
    pk_dstate_clear(&s);
    return ret;
}

/* ---------------- mk send ---------------- */

static const pk_conf_key_t send_keys[] = {
    {"dir", "DIR   the device's state directory", NULL, 0},
    {"to", "ADDR  where the partner's client listens (host:port)", NULL, 0},
};

static int cmd_send(int argc, char **argv)
{
    static pk_conf_t conf;
    static pk_dstate_t s;
    static dmk_file_t f;
    static pk_mk_entry_t ents[PK_DMK_TABLE_CAP];
    pk_mk_table_t t;
    pk_record_t rec;
    uint8_t out[TEXT_MAX + PK_RECORD_OVERHEAD];
    char *pos[2];
    int npos = 0, ret = 1, fd = -1;

    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device mk send PEER MESSAGE --dir DIR --to ADDR\n"
               "Sends MESSAGE to PEER's client as one record under the individual key shared\n"
               "with PEER (DIR/mk-table; made by 'proxkey device mk run').\n");
        pk_conf_init(&conf, send_keys, sizeof send_keys / sizeof *send_keys);
        pk_conf_help(&conf);
        return 0;
    }
    pk_conf_init(&conf, send_keys, sizeof send_keys / sizeof *send_keys);
    if (pk_conf_args(&conf, argc, argv, pos, 2, &npos) != 0)
        return pk_dcli_usage("mk send", conf.err);
    const char *dir = pk_conf_get(&conf, "dir"), *to = pk_conf_get(&conf, "to");
    pk_addr_t ta;
    if (!dir || !to || npos != 2)
        return pk_dcli_usage("mk send", "expected PEER MESSAGE --dir DIR --to ADDR");
    if (pk_addr_parse(to, &ta, NULL) != PK_OK)
        return pk_dcli_usage("mk send", "--to: HOST:PORT");
    size_t plen = strlen(pos[0]), mlen = strlen(pos[1]);
    if (plen == 0 || plen > PK_MK_ID_MAX || mlen > TEXT_MAX)
        return pk_dcli_usage("mk send", "PEER is 1..64 bytes, MESSAGE at most 1024");
    if (pk_dstate_load(&s, dir) != PK_OK)
        return pk_dcli_fail("mk send", "%s is not a device state directory", dir);
    memset(&rec, 0, sizeof rec);
    memset(&t, 0, sizeof t);
    if (pk_dstate_lock(&s) != PK_OK) {
        pk_dcli_fail("mk send", "%s is busy", dir);
        goto out;
    }
    if (table_read(&s, &f) != PK_OK) {
        pk_dcli_fail("mk send", "%s/%s is damaged", dir, TABLE_FILE);
        goto out;
    }
    uint64_t now = pk_now_realtime_ms();
    (void)pk_mk_table_init(&t, ents, PK_DMK_TABLE_CAP, 0, 0, 0);
    for (size_t i = 0; i < f.n; i++)
        ents[i] = f.e[i];
    const pk_mk_entry_t *e = pk_mk_table_current(&t, (const uint8_t *)pos[0], plen, now);
    if (!e) {
        pk_dcli_fail("mk send",
                     "no individual key with %s (is 'proxkey device mk run' running on both?)",
                     pos[0]);
        goto out;
    }
    size_t idx = (size_t)(e - ents);
    uint64_t ctr = f.tx[idx] < PK_RECORD_COUNTER_FIRST ? PK_RECORD_COUNTER_FIRST : f.tx[idx];
    f.tx[idx] = ctr + 1; /* reserved before use: never reused, even after a crash */
    if (table_write(&s, &f) != PK_OK) {
        pk_dcli_fail("mk send", "cannot write %s/%s", dir, TABLE_FILE);
        goto out;
    }
    pk_dstate_unlock(&s);
    uint8_t tk[16], ts[4], rk[16], rs[4];
    uint16_t sid = 0;
    size_t len = 0;
    int rc = pk_mk_record_keys(e, tk, ts, rk, rs, &sid);
    if (rc == PK_OK)
        rc = pk_record_init(&rec, sid, 0, tk, ts, NULL, NULL);
    if (rc == PK_OK)
        rc = pk_record_set_tx_next(&rec, ctr);
    if (rc == PK_OK)
        rc = pk_record_seal(&rec, PK_DMK_T_DATA, (const uint8_t *)pos[1], mlen, out, sizeof out,
                            &len);
    pk_wipe(tk, sizeof tk);
    pk_wipe(ts, sizeof ts);
    pk_wipe(rk, sizeof rk);
    pk_wipe(rs, sizeof rs);
    if (rc != PK_OK) {
        pk_dcli_fail("mk send", "sealing failed: %s", pk_strerror(rc));
        goto out;
    }
    fd = socket(ta.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, out, len, 0, (const struct sockaddr *)&ta.ss, ta.len) < 0) {
        pk_dcli_fail("mk send", "sending to %s: %s", to, strerror(errno));
        goto out;
    }
    printf("sent to=%s key_id=%" PRIu32 " mk_id=%" PRIu32 " counter=%" PRIu64 " len=%zu\n", pos[0],
           e->key_id, e->mk_id, ctr, len);
    ret = 0;
out:
    if (fd >= 0)
        close(fd);
    pk_record_clear(&rec);
    pk_wipe(out, sizeof out);
    pk_wipe(&f, sizeof f);
    pk_wipe(ents, sizeof ents);
    pk_dstate_clear(&s);
    return ret;
}

/* ---------------- mk refresh / show ---------------- */

/* Fallback (FIG. 8 S14): the registration exchange, whose ACCEPT carries the
 * master-key block; av holds the register options. */
static int refresh_register(int argc, char **argv)
{
    char *av[64];
    int n = 0;
    av[n++] = "device";
    av[n++] = "register";
    for (int i = 0; i < argc && n < 63; i++)
        av[n++] = argv[i];
    av[n] = NULL;
    int rc = pk_cmd_device(n, av);
    if (rc == 0)
        printf("refresh path=register (FIG. 8 S14)\n");
    else
        fprintf(stderr, "proxkey device mk refresh: the node did not authenticate us; the old "
                        "master key stays until it expires (try again: FIG. 8 S14)\n");
    return rc;
}

static int cmd_refresh(int argc, char **argv)
{
    static pk_dstate_t s;
    static uint8_t dg[DGRAM_MAX];
    char *rest[64];
    int nrest = 0, fd = -1, ret = -1;
    unsigned long tries = 4, rto = 500;
    const char *dir = NULL;
    const char *why = "no answer";
    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device mk refresh --dir DIR [--tries N] [--rto MS] "
               "[register options]\n"
               "Fetches the domain's current master keys (FIG. 8 S10) without registering\n"
               "again: MK_REFRESH to the node over the registration's protected channel,\n"
               "retransmitted (--tries, default 4; first timeout --rto ms, default 500,\n"
               "doubled per try); the node answers with MK_UPDATE, which is stored before\n"
               "use. Only when that fails (no answer, no channel) does it register again\n"
               "(S14; the ACCEPT carries the block). Prints 'refresh path=channel' or\n"
               "'refresh path=register'. A running 'mk run' picks the new key up and\n"
               "re-keys its partners.\n");
        return 0;
    }
    for (int i = 1; i < argc && nrest < 62; i++) { /* ours out, the rest for register */
        const char *a = argv[i];
        if ((!strcmp(a, "--tries") || !strcmp(a, "--rto")) && i + 1 < argc) {
            char *end = NULL;
            unsigned long v = strtoul(argv[i + 1], &end, 10);
            if (!end || *end || v < 1 || v > (a[2] == 't' ? 16ul : 60000ul))
                return pk_dcli_usage("mk refresh", "--tries is 1..16, --rto 1..60000 ms");
            if (a[2] == 't')
                tries = v;
            else
                rto = v;
            i++;
            continue;
        }
        if (!strcmp(a, "--dir") && i + 1 < argc)
            dir = argv[i + 1];
        else if (!strncmp(a, "--dir=", 6))
            dir = a + 6;
        rest[nrest++] = argv[i];
    }
    if (!dir)
        return pk_dcli_usage("mk refresh", "--dir DIR is required");
    if (pk_dstate_load(&s, dir) != PK_OK)
        return pk_dcli_fail("mk refresh", "%s is not a device state directory", dir);
    pk_addr_t node;
    uint8_t req[PK_REG_MK_REFRESH_MAX];
    size_t rlen = 0;
    fd = chan_socket(&s, 0, &node); /* any port: 'mk run' may hold the registered one */
    if (fd < 0) {
        why = "no node channel";
        goto fallback;
    }
    for (unsigned long t = 0; t < tries && !g_stop && ret < 0; t++) {
        int rc = chan_refresh(&s, req, &rlen); /* a fresh counter per try */
        if (rc != PK_OK) {
            why = rc == PK_ERR_NOTFOUND ? "not registered" : pk_strerror(rc);
            goto fallback;
        }
        if (sendto(fd, req, rlen, 0, (const struct sockaddr *)&node.ss, node.len) < 0) {
            why = "channel refused";
            goto fallback;
        }
        uint64_t end = pk_now_mono_ms() + ((uint64_t)rto << (t < 6 ? t : 6));
        for (int guard = 0; guard < 1000 && ret < 0; guard++) {
            uint64_t now = pk_now_mono_ms();
            if (now >= end)
                break;
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, (int)(end - now)) <= 0)
                continue;
            pk_addr_t from;
            memset(&from, 0, sizeof from);
            from.len = sizeof from.ss;
            ssize_t n =
                recvfrom(fd, dg, sizeof dg, 0, (struct sockaddr *)&from.ss, (socklen_t *)&from.len);
            if (n < 0) {
                if (errno == ECONNREFUSED) { /* ICMP: nothing listens at the node */
                    why = "channel refused";
                    goto fallback;
                }
                continue;
            }
            if (!pk_addr_eq(&from, &node))
                continue;
            uint32_t newest = 0;
            int changed = 0;
            if (chan_update(&s, dg, (size_t)n, &newest, &changed) != PK_OK)
                continue; /* not for us, stale or forged: nothing stored */
            printf("refresh path=channel newest_mk_id=%" PRIu32 " changed=%d tries=%lu\n", newest,
                   changed, t + 1);
            if (newest == 0)
                printf("the kms holds no master key for this device (no domain, or no key)\n");
            ret = 0;
        }
    }
    if (ret == 0)
        goto out;
fallback:
    fprintf(stderr,
            "proxkey device mk refresh: no MK_UPDATE from the node (%s): registering "
            "again (FIG. 8 S14)\n",
            why);
    if (fd >= 0)
        close(fd);
    fd = -1;
    pk_dstate_clear(&s);
    return refresh_register(nrest, rest);
out:
    if (fd >= 0)
        close(fd);
    pk_dstate_clear(&s);
    return ret;
}

static const pk_conf_key_t show_keys[] = {
    {"dir", "DIR  the device's state directory", NULL, 0},
    {"show-secrets", "print key values (masked otherwise)", NULL, 1},
};

static int cmd_show(int argc, char **argv)
{
    static pk_conf_t conf;
    static pk_dstate_t s;
    static pk_reg_dev_t d;
    char *pos[1];
    int npos = 0;
    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device mk show --dir DIR [--show-secrets]\n"
               "Prints the master keys and the individual-key table (values masked).\n");
        return 0;
    }
    pk_conf_init(&conf, show_keys, sizeof show_keys / sizeof *show_keys);
    if (pk_conf_args(&conf, argc, argv, pos, 0, &npos) != 0)
        return pk_dcli_usage("mk show", conf.err);
    const char *dir = pk_conf_get(&conf, "dir");
    if (!dir)
        return pk_dcli_usage("mk show", "--dir DIR is required");
    if (pk_dstate_load(&s, dir) != PK_OK)
        return pk_dcli_fail("mk show", "%s is not a device state directory", dir);
    if (pk_dstate_load_reg(&s, &d) != PK_OK) {
        pk_dstate_clear(&s);
        return pk_dcli_fail("mk show", "no registration in %s", dir);
    }
    pk_dmk_print(&s, &d, pk_conf_flag(&conf, "show-secrets"));
    pk_reg_dev_clear(&d);
    pk_dstate_clear(&s);
    return 0;
}

static const pk_cmd_t mk_cmds[] = {
    {"run", cmd_run, "the client: find partners, authenticate, keep and renew individual keys"},
    {"send", cmd_send, "send a message to a partner under the individual key"},
    {"refresh", cmd_refresh, "fetch the current master key from the node (FIG. 8 S10)"},
    {"show", cmd_show, "print the master keys and the individual-key table"},
    {NULL, NULL, NULL},
};

int pk_cmd_device_mk(int argc, char **argv)
{
    static const pk_cli_group_t grp = {
        "proxkey device mk", "usage: proxkey device mk <command> --dir DIR [options]",
        "Master keys and individual keys (Toshiba, docs/protocol.md).", mk_cmds};
    int rc;
    const pk_cmd_t *c = pk_cli_select(&grp, argc, argv, &rc);
    if (!c)
        return rc;
    g_stop = 0;
    return c->fn(argc - 1, argv + 1);
}
