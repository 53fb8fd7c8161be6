/*
 * First registrations against a real `proxkey kms serve` (tests/kms/firstreg.sh):
 * a node-side client that pipelines KMS_KEYS_REQ for many devices that have
 * no root key yet, records every key the kms answers, can kill the kms with
 * SIGKILL in the middle, and checks the store afterwards.
 *
 *   test_kms_firstreg provision DB KEK PREFIX NPAIRS
 *       devices PREFIX-<i>-a and PREFIX-<i>-b (mode pairs), each pair allowed
 *   test_kms_firstreg run ADDR CA CERT KEY NODE PREFIX NPAIRS OUT TRIES [KILL_PID AFTER]
 *       KEYS_REQ for every device (the a sides, then the b sides) over 2
 *       connections with 48 requests in flight each; a KMS_ERR(BUSY) answer
 *       is retried up to TRIES times in all (as a node would); each answered
 *       key is appended to OUT as "device peer ksi sha256(key)[0..8]"; after
 *       AFTER answers, SIGKILL to KILL_PID (answers already on their way
 *       are still read). Ends when every device is
 *       answered or given up, or the connections close (60 s at most).
 *       Prints "answered=N keys=N busy=N other=N gaveup=N".
 *   test_kms_firstreg verify DB KEK PREFIX NPAIRS OUT...
 *       every recorded key is the pair's stored root key (KSI and key), has
 *       its ROOT_KEY audit record, and agrees with every other record of its
 *       pair; no KSI is stored for two pairs; prints "pairs_with_keys=N".
 *
 * Keys never leave the test's scratch files as more than a short hash.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "core/crypto.h"
#include "net/loop.h"
#include "net/tls.h"
#include "proto/kms/kms.h"
#include "proto/reg/reg.h"
#include "store/store.h"
#include "store/wrap.h"

#define CONNS  2
#define WINDOW 48
#define MAXDEV 4000

static void dev_name(char *out, size_t cap, const char *prefix, unsigned i, char side)
{
    snprintf(out, cap, "%s-%u-%c", prefix, i, side);
}

static void hash8(const uint8_t key[32], char out[17])
{
    uint8_t h[PK_SHA256_LEN];
    if (pk_sha256(key, 32, h) != PK_OK)
        memset(h, 0, sizeof h);
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
    pk_wipe(h, sizeof h);
}

static int open_kms(const char *db, const char *kekp, pk_store_t **st, pk_kms_t **k,
                    uint8_t kek[32])
{
    char why[200] = "";
    if (pk_kek_load(kekp, kek, why, sizeof why) != PK_OK) {
        fprintf(stderr, "kek: %s\n", why);
        return 1;
    }
    pk_kms_cfg_t cfg = {.kek = kek};
    if (pk_store_open(db, st) != PK_OK)
        return 1;
    cfg.store = *st;
    return pk_kms_new(&cfg, k) != PK_OK;
}

/* ---- provision ---- */

static int cmd_provision(char **av)
{
    pk_store_t *st = NULL;
    pk_kms_t *k = NULL;
    uint8_t kek[32];
    unsigned n = (unsigned)atoi(av[3]);
    int bad = open_kms(av[0], av[1], &st, &k, kek);
    for (unsigned i = 0; !bad && i < n; i++) {
        char a[80], b[80];
        dev_name(a, sizeof a, av[2], i, 'a');
        dev_name(b, sizeof b, av[2], i, 'b');
        bad = pk_kms_device_add(k, a, NULL, 0, PK_REG_MODE_PAIRS, NULL, 1, NULL) != PK_OK ||
              pk_kms_device_add(k, b, NULL, 0, PK_REG_MODE_PAIRS, NULL, 1, NULL) != PK_OK ||
              pk_kms_allow(k, a, b, 1) != PK_OK;
    }
    pk_kms_free(k);
    pk_store_close(st);
    pk_wipe(kek, sizeof kek);
    if (bad)
        fprintf(stderr, "provision failed\n");
    return bad;
}

/* ---- run ---- */

static struct {
    const char *prefix;
    unsigned ndev, npairs, max_tries;
    unsigned queue[MAXDEV * 2], qh, qt; /* devices to ask (ring) */
    unsigned tries[MAXDEV];
    int done[MAXDEV];
    unsigned inflight[CONNS][WINDOW], ih[CONNS], in[CONNS];
    pk_tls_conn_t *c[CONNS];
    int open[CONNS], closed;
    unsigned answered, keys, busy, other, gaveup;
    pid_t kill_pid;
    unsigned kill_after;

    int killed;
    FILE *out;
} R;

static void dev_of(unsigned d, char *out, size_t cap, char *peer, size_t pcap)
{
    unsigned pair = d % R.npairs;
    int bside = d >= R.npairs;
    dev_name(out, cap, R.prefix, pair, bside ? 'b' : 'a');
    dev_name(peer, pcap, R.prefix, pair, bside ? 'a' : 'b');
}

static void send_next(int ci)
{
    while (R.in[ci] < WINDOW && R.qh != R.qt) {
        unsigned d = R.queue[R.qh++ % (MAXDEV * 2)];
        char dev[80], peer[80];
        uint8_t req[PK_REG_NET_MAX];
        size_t n = 0;
        pk_reg_net_t q = {.type = PK_REG_T_KMS_KEYS_REQ};
        dev_of(d, dev, sizeof dev, peer, sizeof peer);
        if (pk_reg_id_set(&q.a, dev, strlen(dev)) != PK_OK ||
            pk_reg_net_encode(&q, req, sizeof req, &n) != PK_OK ||
            pk_tls_conn_send(R.c[ci], req, n) != PK_OK) {
            R.other++;
            continue;
        }
        R.tries[d]++;
        R.inflight[ci][(R.ih[ci] + R.in[ci]) % WINDOW] = d;
        R.in[ci]++;
    }
}

static int conn_index(pk_tls_conn_t *c)
{
    for (int i = 0; i < CONNS; i++)
        if (R.c[i] == c)
            return i;
    return -1;
}

static void on_open(pk_tls_conn_t *c, void *ud)
{
    (void)ud;
    int ci = conn_index(c);
    if (ci < 0)
        return;
    R.open[ci] = 1;
    send_next(ci);
}

static void on_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    int ci = conn_index(c);
    if (ci < 0 || R.in[ci] == 0) {
        R.other++;
        return;
    }
    unsigned d = R.inflight[ci][R.ih[ci]]; /* answers come in request order */
    R.ih[ci] = (R.ih[ci] + 1) % WINDOW;
    R.in[ci]--;
    char dev[80], peer[80];
    dev_of(d, dev, sizeof dev, peer, sizeof peer);
    pk_reg_net_t r;
    if (n == PK_KMS_ERR_LEN && p[0] == PK_KMS_T_ERR && p[1] == PK_KMS_ST_BUSY) {
        R.busy++;
        if (R.tries[d] < R.max_tries)
            R.queue[R.qt++ % (MAXDEV * 2)] = d; /* later, as a node would */
        else
            R.gaveup++;
    } else if (pk_reg_net_decode(p, n, &r) == PK_OK && r.type == PK_REG_T_KMS_KEYS_RESP) {
        R.answered++;
        R.done[d] = 1;
        for (unsigned i = 0; i < r.keys.n; i++) {
            char h[17];
            hash8(r.keys.k[i].key, h);
            fprintf(R.out, "%s %.*s %u %s\n", dev, r.keys.k[i].peer.len,
                    (const char *)r.keys.k[i].peer.b, (unsigned)r.keys.k[i].ksi, h);
            R.keys++;
        }
        fflush(R.out);
        pk_wipe(&r, sizeof r);
    } else {
        R.other++;
        fprintf(stderr, "unexpected answer for %s: type 0x%02x len %zu\n", dev, n ? p[0] : 0, n);
    }
    if (R.kill_pid > 0 && !R.killed && R.answered >= R.kill_after) {
        kill(R.kill_pid, SIGKILL); /* mid-stream: batches in flight */
        R.killed = 1;
        printf("killed after %u answers\n", R.answered);
    }
    send_next(ci);
}

static void on_close(pk_tls_conn_t *c, int why, void *ud)
{
    (void)ud;
    (void)why;
    int ci = conn_index(c);
    if (ci >= 0) {
        R.c[ci] = NULL;
        R.closed++;
    }
}

static int cmd_run(int ac, char **av)
{
    R.prefix = av[5];
    R.npairs = (unsigned)atoi(av[6]);
    R.ndev = 2 * R.npairs;
    R.max_tries = (unsigned)atoi(av[8]);
    if (R.ndev == 0 || R.ndev > MAXDEV || R.max_tries == 0)
        return 2;
    if (ac == 11) {
        R.kill_pid = (pid_t)atoi(av[9]);
        R.kill_after = (unsigned)atoi(av[10]);
    }
    if (!(R.out = fopen(av[7], "a")))
        return 1;
    for (unsigned d = 0; d < R.ndev; d++)
        R.queue[R.qt++] = d;
    pk_loop_t *loop = pk_loop_new();
    pk_tls_ctx_t *ctx = NULL;
    if (!loop || pk_tls_ctx_new(&ctx, PK_TLS_CLIENT, av[1], av[2], av[3]) != PK_OK)
        return 1;
    pk_tls_cbs_t cbs = {.on_open = on_open, .on_frame = on_frame, .on_close = on_close};
    for (int i = 0; i < CONNS; i++)
        if (pk_tls_connect(loop, ctx, av[0], "kms", &cbs, &R.c[i]) != PK_OK)
            return 1;
    (void)av[4]; /* the node's name is its certificate's CN */
    uint64_t t0 = pk_now_mono_ms();
    for (;;) {
        unsigned settled = 0, busy = 0;
        for (unsigned d = 0; d < R.ndev; d++)
            settled += R.done[d];
        settled += R.gaveup;
        for (int i = 0; i < CONNS; i++)
            busy += R.in[i];
        if ((settled >= R.ndev && busy == 0) || R.closed == CONNS || pk_now_mono_ms() - t0 > 60000)
            break;
        pk_loop_run_once(loop, 50);
    }
    printf("answered=%u keys=%u busy=%u other=%u gaveup=%u closed=%d\n", R.answered, R.keys, R.busy,
           R.other, R.gaveup, R.closed);
    fclose(R.out);
    pk_tls_ctx_free(ctx);
    pk_loop_free(loop);
    return 0;
}

/* ---- verify ---- */

struct vctx {
    uint8_t kek[32];
    const char *dev, *peer;
    uint32_t ksi;
    int audit_found;
    char hash[17];
    int found;
};

static size_t pair_key(uint8_t *out, const char *a, const char *b)
{
    pk_reg_id_t x, y;
    uint8_t xa[65], yb[65];
    if (pk_reg_id_set(&x, a, strlen(a)) != PK_OK || pk_reg_id_set(&y, b, strlen(b)) != PK_OK)
        return 0;
    xa[0] = x.len;
    memcpy(xa + 1, x.b, x.len);
    yb[0] = y.len;
    memcpy(yb + 1, y.b, y.len);
    size_t xl = x.len + 1u, yl = y.len + 1u, m = xl < yl ? xl : yl;
    int c = memcmp(xa, yb, m);
    const uint8_t *lo = (c > 0 || (c == 0 && xl > yl)) ? yb : xa, *hi = lo == xa ? yb : xa;
    memcpy(out, lo, lo[0] + 1u);
    memcpy(out + lo[0] + 1, hi, hi[0] + 1u);
    return lo[0] + hi[0] + 2u;
}

static int root_fn(pk_txn_t *txn, void *ctx)
{
    struct vctx *v = ctx;
    uint8_t pk[130], val[4 + 8 + 32 + PK_WRAP_OVERHEAD], key[32];
    size_t pl = pair_key(pk, v->dev, v->peer), vl = 0, kl = 0;
    v->found = 0;
    int rc = pk_txn_get(txn, "kms_root", pk, pl, val, sizeof val, &vl);
    if (rc == PK_ERR_NOTFOUND)
        return PK_OK;
    if (rc != PK_OK || vl != sizeof val)
        return rc != PK_OK ? rc : PK_ERR_MALFORMED;
    rc = pk_wrap_open(v->kek, "kms_root", pk, pl, val + 12, vl - 12, key, sizeof key, &kl);
    if (rc != PK_OK)
        return rc;
    v->found = 1;
    v->ksi = pk_get_u32(val);
    hash8(key, v->hash);
    pk_wipe(key, sizeof key);
    return PK_OK;
}

struct ksiscan {
    uint32_t *ksi;
    size_t n, cap;
    uint8_t last[256];
    size_t lastl, seen;
};

static int ksi_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct ksiscan *s = ctx;
    if (klen > sizeof s->last || vlen < 4)
        return PK_ERR_MALFORMED;
    memcpy(s->last, key, klen);
    s->lastl = klen;
    s->seen++;
    if (s->n < s->cap)
        s->ksi[s->n++] = pk_get_u32(val);
    return 0;
}

static int ksi_fn(pk_txn_t *txn, void *ctx)
{
    struct ksiscan *s = ctx;
    s->n = s->lastl = 0;
    for (int page = 0; page < 1000; page++) {
        s->seen = 0;
        int rc = pk_txn_scan(txn, "kms_root", NULL, 0, s->lastl ? s->last : NULL, s->lastl, 1000,
                             ksi_cb, s);
        if (rc != PK_OK)
            return rc;
        if (s->seen < 1000)
            break;
    }
    return PK_OK;
}

static int u32_cmp(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

/* The audit log, read once: ROOT_KEY records as "device peer ksi" lines. */
struct audit_all {
    char (*line)[200];
    size_t n, cap;
    uint64_t last, seen;
};

static int audit_cb(void *ctx, const pk_kms_audit_t *a)
{
    struct audit_all *c = ctx;
    c->last = a->seqno;
    c->seen++;
    if (a->what == PK_KMS_A_ROOT_KEY && c->n < c->cap)
        snprintf(c->line[c->n++], 200, "%.*s %.*s %u", a->device.len, (const char *)a->device.b,
                 a->peer.len, (const char *)a->peer.b, (unsigned)a->ksi);
    return 0;
}

static int str_cmp(const void *x, const void *y)
{
    return strcmp((const char *)x, (const char *)y);
}

static int cmd_verify(int ac, char **av)
{
    pk_store_t *st = NULL;
    pk_kms_t *k = NULL;
    struct vctx v;
    memset(&v, 0, sizeof v);
    unsigned npairs = (unsigned)atoi(av[3]), bad = 0, lines = 0;
    if (npairs == 0 || npairs > MAXDEV / 2 || open_kms(av[0], av[1], &st, &k, v.kek))
        return 1;
    static struct audit_all aa;
    aa.cap = 20000;
    aa.line = calloc(aa.cap, sizeof *aa.line);
    if (!aa.line)
        return 1;
    for (int page = 0; page < 1000; page++) {
        aa.seen = 0;
        if (pk_kms_audit_list(k, aa.last + 1, PK_STORE_SCAN_MAX, audit_cb, &aa) != PK_OK)
            return 1;
        if (aa.seen < PK_STORE_SCAN_MAX)
            break;
    }
    qsort(aa.line, aa.n, sizeof *aa.line, str_cmp);
    for (int f = 4; f < ac; f++) {
        FILE *in = fopen(av[f], "r");
        char dev[80], peer[80], h[17], key[200];
        unsigned ksi;
        if (!in) {
            fprintf(stderr, "cannot read %s\n", av[f]);
            bad++;
            continue;
        }
        while (fscanf(in, "%79s %79s %u %16s", dev, peer, &ksi, h) == 4) {
            lines++;
            v.dev = dev;
            v.peer = peer;
            if (pk_store_run_read(st, root_fn, &v, 4) != PK_OK || !v.found) {
                fprintf(stderr, "%s %s ksi %u: no root key stored\n", dev, peer, ksi);
                bad++;
                continue;
            }
            if (v.ksi != ksi || strcmp(v.hash, h) != 0) {
                fprintf(stderr, "%s %s: answered ksi %u %s, stored ksi %u %s\n", dev, peer, ksi, h,
                        (unsigned)v.ksi, v.hash);
                bad++;
            }
            snprintf(key, sizeof key, "%s %s %u", dev, peer, ksi);
            if (!bsearch(key, aa.line, aa.n, sizeof *aa.line, str_cmp)) {
                fprintf(stderr, "%s: no root_key audit record\n", key);
                bad++;
            }
        }
        fclose(in);
    }
    /* every KSI in kms_root once */
    struct ksiscan ks = {.cap = 2 * MAXDEV + 100000};
    ks.ksi = calloc(ks.cap, sizeof *ks.ksi);
    unsigned dups = 0;
    if (!ks.ksi || pk_store_run_read(st, ksi_fn, &ks, 4) != PK_OK) {
        bad++;
    } else {
        qsort(ks.ksi, ks.n, sizeof *ks.ksi, u32_cmp);
        for (size_t i = 1; i < ks.n; i++)
            dups += ks.ksi[i] == ks.ksi[i - 1];
    }
    unsigned with = 0;
    for (unsigned i = 0; i < npairs; i++) {
        char a[80], b[80];
        dev_name(a, sizeof a, av[2], i, 'a');
        dev_name(b, sizeof b, av[2], i, 'b');
        v.dev = a;
        v.peer = b;
        if (pk_store_run_read(st, root_fn, &v, 4) == PK_OK && v.found)
            with++;
    }
    printf("records=%u pairs_with_keys=%u root_keys=%zu duplicate_ksis=%u bad=%u\n", lines, with,
           ks.n, dups, bad);
    free(ks.ksi);
    free(aa.line);
    pk_wipe(&v, sizeof v);
    pk_kms_free(k);
    pk_store_close(st);
    return bad || dups;
}

int main(int argc, char **argv)
{
    if (pk_crypto_init() != PK_OK)
        return 1;
    if (argc == 6 && strcmp(argv[1], "provision") == 0)
        return cmd_provision(argv + 2);
    if ((argc == 11 || argc == 13) && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (argc >= 7 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 2, argv + 2);
    fprintf(stderr,
            "usage: %s provision DB KEK PREFIX NPAIRS\n"
            "       %s run ADDR CA CERT KEY NODE PREFIX NPAIRS OUT TRIES "
            "[KILL_PID AFTER]\n"
            "       %s verify DB KEK PREFIX NPAIRS OUT...\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
