/*
 * One gts serves a store at a time: the serving instance's lease (gts.h).
 *
 * Two `gts serve` on one store would each keep devices' identities in
 * memory and in their own journal, and each fold its journal into the store
 * over the other's: a device answered by one is unknown to the other, and
 * a checkpoint of one brings back identities the other has retired. So the
 * server that serves a store holds a lease in it, gts_meta["owner"]:
 *
 *   ver(1)=1 id(16) until_ms(8) gen(8) pid(4) start(8) host_key(16) hlen(1) host(hlen)
 *
 * id is random per start; until_ms the lease's end on the holder's wall
 * clock; gen the journal generation it writes; host_key the first 16 bytes
 * of SHA-256(hostname 0 boot_id 0 pid namespace), all zero when they cannot
 * be read; start the process's start time (/proc/PID/stat, clock ticks
 * since boot), so a pid used again by another process is not mistaken for
 * the owner. A claimant takes the store when there is no owner, when the
 * owner's lease has run out, or when the owner ran on this very host (same
 * host key) and its process is gone - no such pid, a zombie, or another
 * process under that pid (a crash: no need to wait for the lease).
 * The holder renews in the inbox transaction (every 200 ms it checks, and
 * extends when less than two thirds of the lease is left) and in every
 * checkpoint transaction, which first checks that it is still the owner
 * (fencing: a stale server never writes a checkpoint over a new one).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "gts.h"

static const uint8_t owner_key[] = "owner";

#define OWNER_VER 1
#define OWNER_MIN (1 + 16 + 8 + 8 + 4 + 8 + 16 + 1)
#define OWNER_MAX (OWNER_MIN + GTS_OWNER_HOST_MAX)

/* The first line of a small file under /proc, or "" (trailing newline cut). */
static void read_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (!f)
        return;
    if (!fgets(out, (int)n, f))
        out[0] = 0;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
}

/* State and start time of process pid (/proc/PID/stat fields 3 and 22).
 * 0, or -1 when there is no such process (or it cannot be read). */
static int proc_stat(uint32_t pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold anything */
    if (!p || p[1] != ' ' || !p[2])
        return -1;
    *state = p[2];
    p += 3;
    for (int field = 4; field <= 22; field++) { /* p: at field `field` */
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p)
        return -1;
    *start = v;
    return 0;
}

void gts_owner_self(gts_owner_t *me)
{
    char boot[64], ns[64] = "", buf[GTS_OWNER_HOST_MAX + 1 + 64 + 1 + 64];
    uint8_t h[PK_SHA256_LEN];
    memset(me, 0, sizeof *me);
    if (pk_random(me->id, sizeof me->id) != PK_OK)
        memset(me->id, 0xff, sizeof me->id); /* never all zero: still ours alone per pid */
    me->pid = (uint32_t)getpid();
    char st;
    if (proc_stat(me->pid, &st, &me->start) != 0)
        me->start = 0;
    if (gethostname(me->host, sizeof me->host) != 0)
        me->host[0] = 0;
    me->host[GTS_OWNER_HOST_MAX] = 0;
    read_line("/proc/sys/kernel/random/boot_id", boot, sizeof boot);
    ssize_t l = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    ns[l > 0 ? l : 0] = 0;
    if (!boot[0] || !ns[0])
        return; /* host key all zero: never "this host" */
    int n = snprintf(buf, sizeof buf, "%s%c%s%c%s", me->host, 0, boot, 0, ns);
    if (n > 0 && (size_t)n < sizeof buf && pk_sha256(buf, (size_t)n, h) == PK_OK)
        memcpy(me->host_key, h, sizeof me->host_key);
}

static size_t owner_encode(const gts_owner_t *o, uint8_t v[OWNER_MAX])
{
    size_t hl = strnlen(o->host, GTS_OWNER_HOST_MAX);
    v[0] = OWNER_VER;
    memcpy(v + 1, o->id, 16);
    pk_put_u64(v + 17, o->until_ms);
    pk_put_u64(v + 25, o->gen);
    pk_put_u32(v + 33, o->pid);
    pk_put_u64(v + 37, o->start);
    memcpy(v + 45, o->host_key, 16);
    v[61] = (uint8_t)hl;
    memcpy(v + 62, o->host, hl);
    return OWNER_MIN + hl;
}

static int owner_decode(const uint8_t *v, size_t vl, gts_owner_t *o)
{
    if (vl < OWNER_MIN || v[0] != OWNER_VER || vl != OWNER_MIN + (size_t)v[61] ||
        v[61] > GTS_OWNER_HOST_MAX)
        return PK_ERR_MALFORMED;
    memset(o, 0, sizeof *o);
    memcpy(o->id, v + 1, 16);
    o->until_ms = pk_get_u64(v + 17);
    o->gen = pk_get_u64(v + 25);
    o->pid = pk_get_u32(v + 33);
    o->start = pk_get_u64(v + 37);
    memcpy(o->host_key, v + 45, 16);
    memcpy(o->host, v + 62, v[61]);
    for (size_t i = 0; i < v[61]; i++)
        if ((unsigned char)o->host[i] < 0x20 || (unsigned char)o->host[i] > 0x7e)
            o->host[i] = '?'; /* printed in messages */
    return PK_OK;
}

/* 1 owner read into *o, 0 none, < 0 error. */
static int owner_read(pk_txn_t *txn, gts_owner_t *o)
{
    uint8_t v[OWNER_MAX];
    size_t vl = 0;
    int rc = pk_txn_get(txn, "gts_meta", owner_key, sizeof owner_key - 1, v, sizeof v, &vl);
    if (rc == PK_ERR_NOTFOUND)
        return 0;
    if (rc == PK_ERR_SPACE)
        return PK_ERR_MALFORMED;
    if (rc != PK_OK)
        return rc;
    rc = owner_decode(v, vl, o);
    return rc == PK_OK ? 1 : rc;
}

static int owner_write(pk_txn_t *txn, const gts_owner_t *o)
{
    uint8_t v[OWNER_MAX];
    size_t vl = owner_encode(o, v);
    return pk_txn_put(txn, "gts_meta", owner_key, sizeof owner_key - 1, v, vl);
}

int gts_owner_same_host(const gts_owner_t *a, const gts_owner_t *b)
{
    static const uint8_t zero[16];
    return memcmp(a->host_key, zero, 16) != 0 && memcmp(a->host_key, b->host_key, 16) == 0;
}

/* Process o->pid of this host is gone: no such process, a zombie, or
 * another process that took the pid (its start time differs). */
static int proc_gone(const gts_owner_t *o)
{
    char st = 0;
    uint64_t start = 0;
    if (o->pid == 0)
        return 0;
    if (proc_stat(o->pid, &st, &start) != 0)
        return kill((pid_t)o->pid, 0) != 0 && errno == ESRCH;
    return st == 'Z' || st == 'X' || (o->start != 0 && start != o->start);
}

/* The owner o (not me) still holds the store at now_ms. */
static int owner_live(const gts_owner_t *o, const gts_owner_t *me, uint64_t now_ms)
{
    if (o->until_ms <= now_ms)
        return 0; /* its lease ran out */
    if (gts_owner_same_host(o, me) && proc_gone(o))
        return 0; /* it ran here and is gone */
    return 1;
}

typedef struct claim_ctx {
    gts_owner_t *me, *prev;
    uint64_t now, lease;
    int had, busy;
} claim_ctx_t;

static int claim_fn(pk_txn_t *txn, void *ctx)
{
    claim_ctx_t *c = ctx;
    int r = owner_read(txn, c->prev);
    c->had = c->busy = 0;
    if (r < 0)
        return r;
    if (r == 1) {
        c->had = 1;
        if (memcmp(c->prev->id, c->me->id, 16) != 0 && owner_live(c->prev, c->me, c->now)) {
            c->busy = 1;
            return PK_OK; /* nothing written */
        }
    }
    c->me->until_ms = c->now + c->lease;
    return owner_write(txn, c->me);
}

int gts_owner_claim(gts_db_t *db, gts_owner_t *me, uint64_t now_ms, uint64_t lease_ms,
                    gts_owner_t *prev, int *had_prev)
{
    claim_ctx_t c = {me, prev, now_ms, lease_ms, 0, 0};
    memset(prev, 0, sizeof *prev);
    int rc = pk_store_run(db->st, claim_fn, &c, 5);
    *had_prev = c.had;
    if (rc == PK_OK && c.busy)
        return PK_ERR_BUSY;
    return rc;
}

int gts_owner_fence(pk_txn_t *txn, gts_owner_t *me, uint64_t now_ms, uint64_t lease_ms, int extend)
{
    gts_owner_t o;
    int r = owner_read(txn, &o);
    if (r < 0)
        return r;
    if (r == 0 || memcmp(o.id, me->id, 16) != 0)
        return PK_ERR_DENIED; /* released or taken over: no longer ours */
    if (!extend)
        return PK_OK;
    uint64_t until = now_ms + lease_ms;
    if (until > me->until_ms)
        me->until_ms = until; /* (a txn retried: the later of the two) */
    return owner_write(txn, me);
}

static int release_fn(pk_txn_t *txn, void *ctx)
{
    gts_owner_t *me = ctx;
    int rc = gts_owner_fence(txn, me, 0, 0, 0);
    if (rc == PK_ERR_DENIED)
        return PK_OK; /* not ours (any more): leave it */
    if (rc == PK_OK)
        rc = pk_txn_del(txn, "gts_meta", owner_key, sizeof owner_key - 1);
    return rc;
}

int gts_owner_release(gts_db_t *db, gts_owner_t *me)
{
    return pk_store_run(db->st, release_fn, me, 5);
}

typedef struct get_ctx {
    gts_owner_t *o;
    int r;
} get_ctx_t;

static int get_fn(pk_txn_t *txn, void *ctx)
{
    get_ctx_t *g = ctx;
    g->r = owner_read(txn, g->o);
    return g->r < 0 ? g->r : PK_OK;
}

int gts_owner_get(gts_db_t *db, gts_owner_t *o)
{
    get_ctx_t g = {o, 0};
    int rc = pk_store_run_read(db->st, get_fn, &g, 5);
    return rc == PK_OK ? g.r : rc;
}
