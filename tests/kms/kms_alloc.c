/*
 * Option-2 allocations against real `proxkey kms serve` processes
 * (tests/kms/alloc.sh): a node-side client that pipelines KMS_ALLOC_REQ for
 * many pool pairs that have no KSI yet, records every KSI the kms answers,
 * can kill a kms with SIGKILL in the middle, and checks the store afterwards.
 *
 *   test_kms_alloc provision DB KEK PREFIX NPAIRS
 *       pool PREFIX-pool (4 keys), devices PREFIX-<i>-a and PREFIX-<i>-b in
 *       it (mode pool), each pair allowed
 *   test_kms_alloc run ADDR[,ADDR2] CA CERT KEY PREFIX NPAIRS OUT TRIES [KILL_PID AFTER]
 *       two connections, 48 requests in flight each: the first asks for
 *       (a, b) of every pair, the second for (b, a), both in pair order, so
 *       both sides of a pair are asked at about the same time - of one kms,
 *       or of two when ADDR2 is given (the second connection goes there).
 *       A KMS_ERR(BUSY) answer is asked again (at the end of its
 *       connection's queue) up to TRIES times in all; each answered KSI is
 *       appended to OUT as "initiator peer ksi"; after AFTER answers,
 *       SIGKILL to KILL_PID (answers already on their way are still read).
 *       Ends when every request is answered or given up, or both
 *       connections closed (60 s at most). Prints
 *       "answered=N busy=N other=N gaveup=N closed=N".
 *   test_kms_alloc verify DB KEK PREFIX NPAIRS [--claim] [OUT...]
 *       every recorded KSI is the pair's stored one (kms_pairalloc) and its
 *       kms_alloc row names the pair, with a POOL_ALLOC audit record of that
 *       pair and KSI; all records of a pair agree; a pair has at least as
 *       many POOL_ALLOC records as answers (each answer's own record is
 *       durable), one more with --claim (group_writes: the allocation's
 *       record is written with it, each answer writes its own). Over the whole store: a
 *       KSI in kms_pairalloc at most once, a pair in kms_alloc at most once,
 *       both buckets agree row for row, and every allocation of PREFIX has
 *       its audit record. Prints "records=N pairs_allocated=N allocs=N
 *       duplicate_ksis=N pairs_twice=N mismatched=N unaudited=N bad=N".
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

#define CONNS    2
#define WINDOW   48
#define MAXPAIRS 4000
#define PAIRMAX  (2 * (1 + PK_REG_ID_MAX))

static void dev_name(char *out, size_t cap, const char *prefix, unsigned i, char side)
{
    snprintf(out, cap, "%s-%u-%c", prefix, i, side);
}

static int open_kms(const char *db, const char *kekp, pk_store_t **st, pk_kms_t **k)
{
    char why[200] = "";
    uint8_t kek[PK_WRAP_KEK_LEN];
    if (pk_kek_load(kekp, kek, why, sizeof why) != PK_OK) {
        fprintf(stderr, "kek: %s\n", why);
        return 1;
    }
    pk_kms_cfg_t cfg = {.kek = kek};
    int rc = pk_store_open(db, st);
    cfg.store = *st;
    if (rc == PK_OK)
        rc = pk_kms_new(&cfg, k);
    pk_wipe(kek, sizeof kek);
    return rc != PK_OK;
}

/* The kms's pair key: blk(lo) || blk(hi) in memcmp order of the blocks. */
static size_t pair_key(uint8_t out[PAIRMAX], const char *a, const char *b)
{
    uint8_t x[1 + PK_REG_ID_MAX], y[1 + PK_REG_ID_MAX];
    size_t al = strlen(a), bl = strlen(b);
    if (al == 0 || al > PK_REG_ID_MAX || bl == 0 || bl > PK_REG_ID_MAX)
        return 0;
    x[0] = (uint8_t)al;
    memcpy(x + 1, a, al);
    y[0] = (uint8_t)bl;
    memcpy(y + 1, b, bl);
    size_t xl = al + 1, yl = bl + 1, m = xl < yl ? xl : yl;
    int c = memcmp(x, y, m);
    int swap = c > 0 || (c == 0 && xl > yl);
    memcpy(out, swap ? y : x, swap ? yl : xl);
    memcpy(out + (swap ? yl : xl), swap ? x : y, swap ? xl : yl);
    return xl + yl;
}

/* ---- provision ---- */

static int cmd_provision(char **av)
{
    pk_store_t *st = NULL;
    pk_kms_t *k = NULL;
    char pool[80];
    unsigned n = (unsigned)atoi(av[3]);
    int bad = n == 0 || n > MAXPAIRS || open_kms(av[0], av[1], &st, &k);
    snprintf(pool, sizeof pool, "%s-pool", av[2]);
    if (!bad)
        bad = pk_kms_pool_create(k, pool, 4, 1, NULL) != PK_OK;
    for (unsigned i = 0; !bad && i < n; i++) {
        char a[80], b[80];
        dev_name(a, sizeof a, av[2], i, 'a');
        dev_name(b, sizeof b, av[2], i, 'b');
        bad = pk_kms_device_add(k, a, NULL, 0, PK_REG_MODE_POOL, pool, 1, NULL) != PK_OK ||
              pk_kms_device_add(k, b, NULL, 0, PK_REG_MODE_POOL, pool, 1, NULL) != PK_OK ||
              pk_kms_allow(k, a, b, 1) != PK_OK;
    }
    pk_kms_free(k);
    pk_store_close(st);
    if (bad)
        fprintf(stderr, "provision failed\n");
    return bad;
}

/* ---- run ---- */

static struct {
    const char *prefix;
    unsigned npairs, max_tries;
    /* per connection: the pairs still to ask (ring), those in flight */
    unsigned queue[CONNS][2 * MAXPAIRS], qh[CONNS], qt[CONNS];
    unsigned tries[CONNS][MAXPAIRS];
    unsigned inflight[CONNS][WINDOW], ih[CONNS], in[CONNS];
    unsigned settled[CONNS];
    pk_tls_conn_t *c[CONNS];
    int closed;
    unsigned answered, busy, other, gaveup;
    pid_t kill_pid;
    unsigned kill_after;
    int killed;
    FILE *out;
} R;

/* Connection ci asks for (a, b) (ci 0) or (b, a) (ci 1) of pair i. */
static void names_of(int ci, unsigned i, char *ini, size_t icap, char *peer, size_t pcap)
{
    dev_name(ini, icap, R.prefix, i, ci ? 'b' : 'a');
    dev_name(peer, pcap, R.prefix, i, ci ? 'a' : 'b');
}

static void send_next(int ci)
{
    while (R.c[ci] && R.in[ci] < WINDOW && R.qh[ci] != R.qt[ci]) {
        unsigned i = R.queue[ci][R.qh[ci]++ % (2 * MAXPAIRS)];
        char a[80], b[80];
        uint8_t req[PK_REG_NET_MAX];
        size_t n = 0;
        pk_reg_net_t q = {.type = PK_REG_T_KMS_ALLOC_REQ};
        names_of(ci, i, a, sizeof a, b, sizeof b);
        if (pk_reg_id_set(&q.a, a, strlen(a)) != PK_OK ||
            pk_reg_id_set(&q.b, b, strlen(b)) != PK_OK ||
            pk_reg_net_encode(&q, req, sizeof req, &n) != PK_OK ||
            pk_tls_conn_send(R.c[ci], req, n) != PK_OK) {
            R.other++;
            R.settled[ci]++;
            continue;
        }
        R.tries[ci][i]++;
        R.inflight[ci][(R.ih[ci] + R.in[ci]) % WINDOW] = i;
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
    if (ci >= 0)
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
    unsigned i = R.inflight[ci][R.ih[ci]]; /* answers come in request order */
    R.ih[ci] = (R.ih[ci] + 1) % WINDOW;
    R.in[ci]--;
    char a[80], b[80];
    names_of(ci, i, a, sizeof a, b, sizeof b);
    pk_reg_net_t r;
    if (n == PK_KMS_ERR_LEN && p[0] == PK_KMS_T_ERR && p[1] == PK_KMS_ST_BUSY) {
        R.busy++;
        if (R.tries[ci][i] < R.max_tries) {
            R.queue[ci][R.qt[ci]++ % (2 * MAXPAIRS)] = i; /* later, as a node would */
        } else {
            R.gaveup++;
            R.settled[ci]++;
        }
    } else if (pk_reg_net_decode(p, n, &r) == PK_OK && r.type == PK_REG_T_KMS_ALLOC_RESP) {
        R.answered++;
        R.settled[ci]++;
        fprintf(R.out, "%s %s %u\n", a, b, (unsigned)r.ksi);
        fflush(R.out);
        pk_wipe(&r, sizeof r);
    } else {
        R.other++;
        R.settled[ci]++;
        fprintf(stderr, "unexpected answer for %s %s: type 0x%02x len %zu status %u\n", a, b,
                n ? p[0] : 0, n, n > 1 ? p[1] : 0);
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
    char addr[2][128];
    const char *comma = strchr(av[0], ',');
    snprintf(addr[0], sizeof addr[0], "%.*s", comma ? (int)(comma - av[0]) : 127, av[0]);
    snprintf(addr[1], sizeof addr[1], "%s", comma ? comma + 1 : addr[0]);
    R.prefix = av[4];
    R.npairs = (unsigned)atoi(av[5]);
    R.max_tries = (unsigned)atoi(av[7]);
    if (R.npairs == 0 || R.npairs > MAXPAIRS || R.max_tries == 0)
        return 2;
    if (ac == 10) {
        R.kill_pid = (pid_t)atoi(av[8]);
        R.kill_after = (unsigned)atoi(av[9]);
    }
    if (!(R.out = fopen(av[6], "a")))
        return 1;
    for (int ci = 0; ci < CONNS; ci++)
        for (unsigned i = 0; i < R.npairs; i++)
            R.queue[ci][R.qt[ci]++] = i;
    pk_loop_t *loop = pk_loop_new();
    pk_tls_ctx_t *ctx = NULL;
    if (!loop || pk_tls_ctx_new(&ctx, PK_TLS_CLIENT, av[1], av[2], av[3]) != PK_OK)
        return 1;
    pk_tls_cbs_t cbs = {.on_open = on_open, .on_frame = on_frame, .on_close = on_close};
    for (int i = 0; i < CONNS; i++)
        if (pk_tls_connect(loop, ctx, addr[i], "kms", &cbs, &R.c[i]) != PK_OK)
            return 1;
    uint64_t t0 = pk_now_mono_ms();
    for (;;) {
        unsigned done = 0;
        for (int ci = 0; ci < CONNS; ci++)
            done += R.settled[ci] >= R.npairs || !R.c[ci];
        if (done == CONNS || pk_now_mono_ms() - t0 > 60000)
            break;
        pk_loop_run_once(loop, 50);
    }
    printf("answered=%u busy=%u other=%u gaveup=%u closed=%d\n", R.answered, R.busy, R.other,
           R.gaveup, R.closed);
    fclose(R.out);
    pk_tls_ctx_free(ctx);
    pk_loop_free(loop);
    return 0;
}

/* ---- verify ---- */

/* One row of kms_alloc or kms_pairalloc. */
struct row {
    uint8_t pair[PAIRMAX];
    size_t pl;
    uint32_t ksi;
};

struct rows {
    struct row *r;
    size_t n, cap;
    uint8_t last[PAIRMAX];
    size_t lastl, seen;
    int alloc; /* 1: kms_alloc (key ksi, value pair || at_ms); 0: kms_pairalloc */
};

static int rows_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    struct rows *s = ctx;
    if (klen > sizeof s->last)
        return PK_ERR_MALFORMED;
    memcpy(s->last, key, klen);
    s->lastl = klen;
    s->seen++;
    if (s->n >= s->cap)
        return PK_ERR_SPACE;
    struct row *r = &s->r[s->n];
    const uint8_t *pair = s->alloc ? val : key, *ksi = s->alloc ? key : val;
    size_t pl = s->alloc ? vlen - 8 : klen;
    if ((s->alloc ? klen : vlen) != 4 || (s->alloc && vlen < 8) || pl > PAIRMAX)
        return PK_ERR_MALFORMED;
    memcpy(r->pair, pair, pl);
    r->pl = pl;
    r->ksi = pk_get_u32(ksi);
    s->n++;
    return 0;
}

static int rows_fn(pk_txn_t *txn, void *ctx)
{
    struct rows *s = ctx;
    s->n = s->lastl = 0;
    for (int page = 0; page < 100000; page++) {
        s->seen = 0;
        int rc = pk_txn_scan(txn, s->alloc ? "kms_alloc" : "kms_pairalloc", NULL, 0,
                             s->lastl ? s->last : NULL, s->lastl, PK_STORE_SCAN_MAX, rows_cb, s);
        if (rc != PK_OK)
            return rc;
        if (s->seen < PK_STORE_SCAN_MAX)
            break;
    }
    return PK_OK;
}

static int by_pair(const void *x, const void *y)
{
    const struct row *a = x, *b = y;
    if (a->pl != b->pl)
        return a->pl < b->pl ? -1 : 1;
    return memcmp(a->pair, b->pair, a->pl);
}

static int by_ksi(const void *x, const void *y)
{
    const struct row *a = x, *b = y;
    return a->ksi < b->ksi ? -1 : a->ksi > b->ksi;
}

/* POOL_ALLOC audit records as rows (pair of device and peer, ksi). */
struct audit_all {
    struct row *r;
    size_t n, cap;
    uint64_t last, seen;
};

static int audit_cb(void *ctx, const pk_kms_audit_t *a)
{
    struct audit_all *c = ctx;
    c->last = a->seqno;
    c->seen++;
    if (a->what != PK_KMS_A_POOL_ALLOC || c->n >= c->cap)
        return 0;
    char d[PK_REG_ID_MAX + 1], p[PK_REG_ID_MAX + 1];
    snprintf(d, sizeof d, "%.*s", a->device.len, (const char *)a->device.b);
    snprintf(p, sizeof p, "%.*s", a->peer.len, (const char *)a->peer.b);
    struct row *r = &c->r[c->n];
    if ((r->pl = pair_key(r->pair, d, p)) == 0)
        return 0;
    r->ksi = a->ksi;
    c->n++;
    return 0;
}

static int by_pair_ksi(const void *x, const void *y)
{
    int c = by_pair(x, y);
    return c ? c : by_ksi(x, y);
}

/* 1 when the pair (given as a blk pair) is one of PREFIX-<i>-a/b, i < n. */
static int ours(const struct row *r, const char *prefix, unsigned n)
{
    size_t l = strlen(prefix);
    if (r->pl < 2 || r->pair[0] < l + 3 || r->pair[0] + 1u >= r->pl)
        return 0;
    if (memcmp(r->pair + 1, prefix, l) != 0 || r->pair[1 + l] != '-')
        return 0;
    unsigned i = 0;
    for (size_t j = l + 2; j < r->pair[0] + 1u && r->pair[j] >= '0' && r->pair[j] <= '9'; j++)
        i = i * 10 + (unsigned)(r->pair[j] - '0');
    return i < n;
}

static int cmd_verify(int ac, char **av)
{
    pk_store_t *st = NULL;
    pk_kms_t *k = NULL;
    unsigned npairs = (unsigned)atoi(av[3]), bad = 0, lines = 0;
    if (npairs == 0 || npairs > MAXPAIRS || open_kms(av[0], av[1], &st, &k))
        return 1;
    size_t cap = 200000;
    struct rows al = {.cap = cap, .alloc = 1}, pa = {.cap = cap};
    static struct audit_all aa;
    al.r = calloc(cap, sizeof *al.r);
    pa.r = calloc(cap, sizeof *pa.r);
    aa.cap = 400000;
    aa.r = calloc(aa.cap, sizeof *aa.r);
    if (!al.r || !pa.r || !aa.r || pk_store_run_read(st, rows_fn, &al, 4) != PK_OK ||
        pk_store_run_read(st, rows_fn, &pa, 4) != PK_OK) {
        fprintf(stderr, "cannot read the allocations\n");
        return 1;
    }
    for (int page = 0; page < 100000; page++) {
        aa.seen = 0;
        if (pk_kms_audit_list(k, aa.last + 1, PK_STORE_SCAN_MAX, audit_cb, &aa) != PK_OK)
            return 1;
        if (aa.seen < PK_STORE_SCAN_MAX)
            break;
    }
    qsort(aa.r, aa.n, sizeof *aa.r, by_pair_ksi);
    /* the whole store: a KSI at most once in kms_pairalloc, a pair at most
     * once in kms_alloc, and the two agree row for row */
    unsigned dup_ksi = 0, twice = 0, mismatched = 0, unaudited = 0, mine = 0;
    qsort(pa.r, pa.n, sizeof *pa.r, by_ksi);
    for (size_t i = 1; i < pa.n; i++)
        dup_ksi += pa.r[i].ksi == pa.r[i - 1].ksi;
    qsort(al.r, al.n, sizeof *al.r, by_pair);
    for (size_t i = 1; i < al.n; i++)
        twice += by_pair(&al.r[i], &al.r[i - 1]) == 0;
    qsort(pa.r, pa.n, sizeof *pa.r, by_pair);
    mismatched += al.n != pa.n;
    for (size_t i = 0; i < al.n; i++) {
        const struct row *p = bsearch(&al.r[i], pa.r, pa.n, sizeof *pa.r, by_pair);
        if (!p || p->ksi != al.r[i].ksi) {
            mismatched++;
            continue;
        }
        if (!ours(&al.r[i], av[2], npairs))
            continue;
        mine++;
        if (!bsearch(&al.r[i], aa.r, aa.n, sizeof *aa.r, by_pair_ksi))
            unaudited++; /* an allocation without its record */
    }
    /* every answer: the stored allocation, audited, the same for the pair */
    int f0 = 4, extra = 0;
    if (ac > 4 && strcmp(av[4], "--claim") == 0) {
        f0 = 5;
        extra = 1;
    }
    size_t nans = 0;
    struct row *ans = calloc(4 * MAXPAIRS * 8, sizeof *ans);
    if (!ans)
        return 1;
    for (int f = f0; f < ac; f++) {
        FILE *in = fopen(av[f], "r");
        char a[80], b[80];
        unsigned ksi;
        if (!in) {
            fprintf(stderr, "cannot read %s\n", av[f]);
            bad++;
            continue;
        }
        while (fscanf(in, "%79s %79s %u", a, b, &ksi) == 3) {
            struct row key;
            lines++;
            if ((key.pl = pair_key(key.pair, a, b)) == 0) {
                bad++;
                continue;
            }
            key.ksi = ksi;
            const struct row *p = bsearch(&key, pa.r, pa.n, sizeof *pa.r, by_pair);
            const struct row *q = bsearch(&key, al.r, al.n, sizeof *al.r, by_pair);
            if (!p || p->ksi != ksi || !q || q->ksi != ksi) {
                fprintf(stderr, "%s %s: answered ksi %u, stored %u / %u\n", a, b, ksi,
                        p ? (unsigned)p->ksi : 0, q ? (unsigned)q->ksi : 0);
                bad++;
            }
            if (!bsearch(&key, aa.r, aa.n, sizeof *aa.r, by_pair_ksi)) {
                fprintf(stderr, "%s %s %u: no pool_alloc audit record\n", a, b, ksi);
                bad++;
            }
            if (nans < 4 * MAXPAIRS * 8)
                ans[nans++] = key;
        }
        fclose(in);
    }
    /* each answer's own record is durable: a pair's records are at least
     * its answers (plus, --claim, the allocation's own record) */
    unsigned short_audit = 0;
    qsort(ans, nans, sizeof *ans, by_pair_ksi);
    for (size_t i = 0; i < nans;) {
        size_t j = i, nrec = 0;
        while (j < nans && by_pair_ksi(&ans[j], &ans[i]) == 0)
            j++;
        const struct row *h = bsearch(&ans[i], aa.r, aa.n, sizeof *aa.r, by_pair_ksi);
        if (h) {
            while (h > aa.r && by_pair_ksi(h - 1, &ans[i]) == 0)
                h--;
            for (; h < aa.r + aa.n && by_pair_ksi(h, &ans[i]) == 0; h++)
                nrec++;
        }
        if (nrec < j - i + (size_t)extra) {
            fprintf(stderr, "%u answers of ksi %u, %zu audit records\n", (unsigned)(j - i),
                    (unsigned)ans[i].ksi, nrec);
            short_audit++;
        }
        i = j;
    }
    bad += short_audit;
    free(ans);
    printf("records=%u pairs_allocated=%u allocs=%zu duplicate_ksis=%u pairs_twice=%u "
           "mismatched=%u unaudited=%u bad=%u\n",
           lines, mine, al.n, dup_ksi, twice, mismatched, unaudited, bad);
    free(al.r);
    free(pa.r);
    free(aa.r);
    pk_kms_free(k);
    pk_store_close(st);
    return bad || dup_ksi || twice || mismatched || unaudited;
}

int main(int argc, char **argv)
{
    if (pk_crypto_init() != PK_OK)
        return 1;
    if (argc == 6 && strcmp(argv[1], "provision") == 0)
        return cmd_provision(argv + 2);
    if ((argc == 10 || argc == 12) && strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (argc >= 6 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 2, argv + 2);
    fprintf(stderr,
            "usage: %s provision DB KEK PREFIX NPAIRS\n"
            "       %s run ADDR[,ADDR2] CA CERT KEY PREFIX NPAIRS OUT TRIES "
            "[KILL_PID AFTER]\n"
            "       %s verify DB KEK PREFIX NPAIRS [--claim] [OUT...]\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
