/*
 * `proxkey gts ...` and `proxkey device poll`: the operator's and the
 * device's command lines around the trigger protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "core/codec.h"
#include "core/crypto.h"
#include "core/log.h"
#include "gts.h"
#include "secfile.h"
#include "gts_journal.h"
#include "net/addr.h"
#include "net/loop.h"
#include "proto/kms/kms.h"
#include "proto/trigger/dev.h"

#define DEFAULT_STORE  "proxkey-gts.db"
#define DEFAULT_LISTEN "127.0.0.1:7700"

typedef struct common_opts {
    const char *store, *kek, *journal;
} common_opts_t;

/* Takes --db (alias --store), --kek and --journal out of argv; returns the
 * remaining count. --db is the name every role uses for its store. */
static int take_common(int argc, char **argv, common_opts_t *c)
{
    int j = 0;
    c->store = getenv("PROXKEY_GTS_STORE") ? getenv("PROXKEY_GTS_STORE") : DEFAULT_STORE;
    c->kek = NULL;
    c->journal = NULL;
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "--db") == 0 || strcmp(argv[i], "--store") == 0) && i + 1 < argc)
            c->store = argv[++i];
        else if (strcmp(argv[i], "--journal") == 0 && i + 1 < argc)
            c->journal = argv[++i];
        else if (strcmp(argv[i], "--kek") == 0 && i + 1 < argc)
            c->kek = argv[++i];
        else
            argv[j++] = argv[i];
    }
    return j;
}

static const char *common_help =
    "  --db URI      store: a SQLite path (default " DEFAULT_STORE ", or $PROXKEY_GTS_STORE),\n"
    "                sqlite:PATH, postgresql://... or memory: (--store is the same)\n"
    "  --kek FILE    key-encryption key file (default STORE.kek)\n"
    "  --journal P   journal files P.<generation> (default STORE.journal; required\n"
    "                with PostgreSQL; none with memory:)\n";

/* ---- serve ---- */

static gts_server_t *g_srv;

static int cmd_serve(int argc, char **argv)
{
    common_opts_t c;
    gts_serve_opts_t o = {0};
    argc = take_common(argc, argv, &c);
    o.listen = DEFAULT_LISTEN;
    for (int i = 1; i < argc; i++) {
        unsigned long long v;
        if (pk_cli_is_help(argv[i])) {
            printf("usage: proxkey gts serve [--listen ADDR] [--reserve N] [--quiet] [--db URI]\n"
                   "Answers trigger polls on UDP ADDR (default " DEFAULT_LISTEN ").\n%s"
                   "  --reserve N   size the UID index for N devices\n"
                   "  --quiet       no per-delivery log lines\n"
                   "  --checkpoint-records N  fold the journal into the store every N records\n"
                   "                (default 1048576) ...\n"
                   "  --checkpoint-ms MS      ... or every MS ms with changes (default 60000)\n"
                   "  --retx-rate N  answers to retransmitted polls per second per source\n"
                   "                address (IPv4, or IPv6 /64), default %u; a copy of a\n"
                   "                device's poll sent from a spoofed address is answered\n"
                   "                at most this often there\n"
                   "  --retx-burst N ... after a burst of N (default twice the rate)\n"
                   "  --no-retx-limit  answer every retransmission\n"
                   "  --lease-s S   one gts serves a store: it holds a lease there, renewed\n"
                   "                while it runs (default %u s). Another gts takes over when\n"
                   "                this one stopped cleanly, crashed on the same host, or\n"
                   "                let its lease run out (host down, process stopped)\n"
                   "  --force-takeover  take over from a gts of another host even though\n"
                   "                its unfolded journal is not here\n",
                   common_help, GTS_RETX_RATE, GTS_LEASE_MS / 1000);
            return 0;
        } else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            o.listen = argv[++i];
        } else if (strcmp(argv[i], "--reserve") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 0, 100000000, &v) == 0) {
            o.reserve = (size_t)v;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            o.quiet = 1;
        } else if (strcmp(argv[i], "--checkpoint-records") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 1, 1ull << 40, &v) == 0) {
            o.ckpt_records = v;
        } else if (strcmp(argv[i], "--checkpoint-ms") == 0 && i + 1 < argc &&
                   pk_cli_parse_u64(argv[++i], 1, 86400000, &v) == 0) {
            o.ckpt_ms = v;
        } else if (strcmp(argv[i], "--retx-rate") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 1, 1000000, &v) != 0)
                return pk_cli_usage_error("gts serve", "--retx-rate wants 1..1000000");
            o.retx_rate = (uint32_t)v;
        } else if (strcmp(argv[i], "--retx-burst") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 1, 1000000, &v) != 0)
                return pk_cli_usage_error("gts serve", "--retx-burst wants 1..1000000");
            o.retx_burst = (uint32_t)v;
        } else if (strcmp(argv[i], "--no-retx-limit") == 0) {
            o.retx_unlimited = 1;
        } else if (strcmp(argv[i], "--lease-s") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 2, 3600, &v) != 0)
                return pk_cli_usage_error("gts serve", "--lease-s wants 2..3600");
            o.lease_ms = v * 1000;
        } else if (strcmp(argv[i], "--force-takeover") == 0) {
            o.force_takeover = 1;
        } else {
            return pk_cli_usage_error("gts serve", "unknown argument '%s'", argv[i]);
        }
    }
    o.store = c.store;
    o.kek = c.kek;
    o.journal = c.journal;
    o.signals = 1;
    pk_log_set_role("gts");
    if (pk_crypto_init() != PK_OK)
        return 1;
    int rc = gts_server_new(&g_srv, &o);
    if (rc != PK_OK)
        return 1;
    pk_info("gts_listening", "port=%u devices=%zu store=%s", gts_server_port(g_srv),
            gts_server_devices(g_srv), o.store);
    rc = gts_server_run(g_srv);
    gts_server_free(g_srv);
    g_srv = NULL;
    return rc == PK_OK ? 0 : 1;
}

/* ---- device add / list ---- */

static int cmd_device_add(int argc, char **argv)
{
    common_opts_t c;
    argc = take_common(argc, argv, &c);
    const char *name = NULL, *outpath = NULL;
    unsigned long long count = 1, interval = 0;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        if (pk_cli_is_help(argv[i])) {
            printf("usage: proxkey gts device add NAME [--count N] [--rotate] [--interval S]\n"
                   "                                [--out FILE]\n"
                   "Provisions a device (or N devices NAME-0..NAME-N-1) with a random trigger key\n"
                   "K1 and first identity UID1; prints 'name dev_no K1 UID1 [S]' per device (hex)\n"
                   "for the device side (proxkey device poll --state FILE).\n%s"
                   "  --rotate      rotate the key with every identity (K2 = KDF(K1, ...))\n"
                   "  --interval S  the devices poll every S seconds (1..604800) until a command\n"
                   "                changes it; in their lines, and known to 'gts status'\n"
                   "  --out FILE    write the provisioning lines to FILE (mode 0600)\n",
                   common_help);
            return 0;
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 1, 1000000, &count) != 0)
                return pk_cli_usage_error("gts device add", "--count wants 1..1000000");
        } else if (strcmp(argv[i], "--rotate") == 0) {
            flags |= PK_TRIG_DEV_ROTATE;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], PK_TRIG_INTERVAL_MIN_S, PK_TRIG_INTERVAL_MAX_S,
                                 &interval) != 0)
                return pk_cli_usage_error("gts device add", "--interval wants seconds, %u..%u",
                                          PK_TRIG_INTERVAL_MIN_S, PK_TRIG_INTERVAL_MAX_S);
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            outpath = argv[++i];
        } else if (!name && argv[i][0] != '-') {
            name = argv[i];
        } else {
            return pk_cli_usage_error("gts device add", "unknown argument '%s'", argv[i]);
        }
    }
    if (!name)
        return pk_cli_usage_error("gts device add", "NAME is required");
    FILE *out = stdout;
    if (outpath) {
        int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        out = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!out) {
            fprintf(stderr, "proxkey gts device add: %s: %s\n", outpath, strerror(errno));
            return 1;
        }
    }
    gts_db_t db;
    int rc = gts_db_open(&db, c.store, c.kek, 1);
    if (rc == PK_OK) {
        rc = gts_db_add(&db, name, (unsigned)count, flags, (uint32_t)interval, out);
        gts_db_close(&db);
    }
    if (out != stdout && fclose(out) != 0 && rc == PK_OK)
        rc = PK_ERR_IO;
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts device add: %s%s\n", pk_strerror(rc),
                rc == PK_ERR_EXISTS ? " (name taken)" : "");
        return 1;
    }
    return 0;
}

/* ---- device import (from the kms) ---- */

typedef struct import_names {
    gts_import_t *v;
    size_t n, cap;
    int err;
} import_names_t;

static gts_import_t *import_push(import_names_t *l, const pk_reg_id_t *id)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        gts_import_t *nv = calloc(nc, sizeof *nv);
        if (!nv) {
            l->err = PK_ERR_NOMEM;
            return NULL;
        }
        if (l->v) {
            memcpy(nv, l->v, l->n * sizeof *nv);
            pk_wipe(l->v, l->n * sizeof *nv);
            free(l->v);
        }
        l->v = nv;
        l->cap = nc;
    }
    gts_import_t *d = &l->v[l->n++];
    memset(d, 0, sizeof *d);
    memcpy(d->name, id->b, id->len); /* id->len <= 64 = GTS_NAME_MAX */
    return d;
}

static int import_list_cb(void *ctx, const pk_kms_trigger_t *t)
{
    import_names_t *l = ctx;
    return import_push(l, &t->id) ? 0 : 1;
}

static int cmd_device_import(int argc, char **argv)
{
    common_opts_t c;
    argc = take_common(argc, argv, &c);
    const char *kms_db = NULL, *kms_kek = NULL;
    unsigned long long interval = 0;
    int all = 0, nids = 0, failed = 0, rc = PK_OK;
    for (int i = 1; i < argc; i++) {
        if (pk_cli_is_help(argv[i])) {
            printf("usage: proxkey gts device import --kms-db URI --kms-kek FILE (ID... | --all)\n"
                   "                                   [--interval S]\n"
                   "Provisions trigger devices from the kms store (proxkey kms trigger add, or\n"
                   "kms device add --trigger): their K1, first identity UID1 and rotation flag,\n"
                   "exported through the kms core (audit trigger_key node=gts), stored exactly as\n"
                   "'gts device add' stores them; a running 'gts serve' on this store picks them\n"
                   "up within a second. The gts device name is the kms device ID.\n"
                   "Idempotent: a device already in the gts store is kept as it is - its current\n"
                   "identity, key and queue are never reset (a device that has rotated past UID1\n"
                   "keeps working) and its key is not exported again. An ID that is not a kms\n"
                   "trigger device is an error, and then nothing is imported.\n%s"
                   "  --kms-db URI    the kms store (SQLite path or postgresql://...)\n"
                   "  --kms-kek FILE  the kms's key-encryption key file\n"
                   "  --all           every trigger device of the kms\n"
                   "  --interval S    the poll interval (1..604800 s) the imported devices were\n"
                   "                  set up with, known to 'gts status' (which flags a device\n"
                   "                  silent for twice its interval); kept devices keep theirs\n",
                   common_help);
            return 0;
        } else if (strcmp(argv[i], "--kms-db") == 0 && i + 1 < argc) {
            kms_db = argv[++i];
        } else if (strcmp(argv[i], "--kms-kek") == 0 && i + 1 < argc) {
            kms_kek = argv[++i];
        } else if (strcmp(argv[i], "--all") == 0) {
            all = 1;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], PK_TRIG_INTERVAL_MIN_S, PK_TRIG_INTERVAL_MAX_S,
                                 &interval) != 0)
                return pk_cli_usage_error("gts device import", "--interval wants seconds, %u..%u",
                                          PK_TRIG_INTERVAL_MIN_S, PK_TRIG_INTERVAL_MAX_S);
        } else if (argv[i][0] != '-') {
            argv[++nids] = argv[i]; /* IDs gathered at argv[1..nids] */
        } else {
            return pk_cli_usage_error("gts device import", "unknown argument '%s'", argv[i]);
        }
    }
    if (!kms_db || !kms_kek)
        return pk_cli_usage_error("gts device import",
                                  "--kms-db URI and --kms-kek FILE are required");
    if (all == (nids > 0))
        return pk_cli_usage_error("gts device import", "give device IDs or --all (not both)");
    if (pk_crypto_init() != PK_OK)
        return 1;

    /* the kms, through its core: the same store interface on SQLite and PostgreSQL */
    uint8_t kek[PK_WRAP_KEK_LEN];
    char why[256] = "";
    pk_store_t *kst = NULL;
    pk_kms_t *kms = NULL;
    import_names_t l = {0};
    gts_db_t db;
    int db_open = 0;
    unsigned imported = 0, kept = 0;
    rc = pk_kek_load(kms_kek, kek, why, sizeof why);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts device import: kms KEK %s: %s%s%s\n", kms_kek, pk_strerror(rc),
                why[0] ? ": " : "", why);
        goto out;
    }
    rc = pk_store_open(kms_db, &kst);
    if (rc == PK_OK) {
        pk_kms_cfg_t cfg = {.store = kst, .kek = kek};
        rc = pk_kms_new(&cfg, &kms);
    }
    pk_wipe(kek, sizeof kek);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts device import: kms store %s: %s\n", kms_db, pk_strerror(rc));
        goto out;
    }
    if (all) {
        pk_reg_id_t after = {0};
        for (unsigned page = 0; page < 100000 && rc == PK_OK; page++) {
            size_t before = l.n;
            char a[PK_REG_ID_MAX + 1];
            snprintf(a, sizeof a, "%.*s", after.len, (const char *)after.b);
            rc = pk_kms_trigger_list(kms, after.len ? a : NULL, 1000, import_list_cb, &l);
            if (rc == PK_OK && l.err)
                rc = l.err;
            if (rc != PK_OK || l.n == before)
                break;
            (void)pk_reg_id_set(&after, l.v[l.n - 1].name, strlen(l.v[l.n - 1].name));
        }
    } else {
        for (int i = 1; i <= nids && rc == PK_OK; i++) {
            pk_kms_trigger_t t;
            pk_kms_device_info_t info;
            int r = pk_kms_trigger_show(kms, argv[i], &t);
            if (r == PK_OK) {
                if (!import_push(&l, &t.id))
                    rc = l.err;
                continue;
            }
            if (r == PK_ERR_NOTFOUND && pk_kms_device_show(kms, argv[i], &info) == PK_OK)
                fprintf(stderr,
                        "proxkey gts device import: %s: the kms device has no trigger key "
                        "(proxkey kms trigger add %s)\n",
                        argv[i], argv[i]);
            else if (r == PK_ERR_NOTFOUND || r == PK_ERR_INVAL)
                fprintf(stderr, "proxkey gts device import: %s: no such device in the kms\n",
                        argv[i]);
            else
                fprintf(stderr, "proxkey gts device import: %s: %s\n", argv[i], pk_strerror(r));
            failed = 1;
        }
    }
    if (rc != PK_OK || failed) {
        if (rc != PK_OK)
            fprintf(stderr, "proxkey gts device import: kms: %s\n", pk_strerror(rc));
        else
            fprintf(stderr, "proxkey gts device import: nothing imported\n");
        rc = rc != PK_OK ? rc : PK_ERR_NOTFOUND;
        goto out;
    }
    rc = gts_db_open(&db, c.store, c.kek, 1);
    if (rc != PK_OK)
        goto out;
    db_open = 1;
    /* devices the gts has already are kept without exporting their key again */
    for (size_t i = 0; i < l.n && rc == PK_OK; i++) {
        gts_import_t *d = &l.v[i];
        pk_kms_trigger_t t;
        int h = gts_db_has(&db, d->name, &d->dev_no);
        if (h < 0) {
            rc = h;
            break;
        }
        if (h == 1) {
            d->skip = d->kept = 1;
            continue;
        }
        rc = pk_kms_trigger_export(kms, d->name, "gts", pk_now_realtime_ms(), &t);
        if (rc == PK_OK) {
            memcpy(d->k1, t.k1, sizeof d->k1);
            memcpy(d->uid1, t.uid1, sizeof d->uid1);
            d->flags = t.flags & PK_KMS_TRIG_ROTATE ? PK_TRIG_DEV_ROTATE : 0;
            d->interval_s = (uint32_t)interval;
        } else {
            fprintf(stderr, "proxkey gts device import: %s: kms export: %s\n", d->name,
                    pk_strerror(rc));
        }
        pk_wipe(&t, sizeof t);
    }
    if (rc == PK_OK)
        rc = gts_db_import(&db, l.v, l.n);
    if (rc == PK_OK) {
        for (size_t i = 0; i < l.n; i++) {
            if (l.v[i].kept) {
                kept++;
                printf("kept %s dev_no=%u (already provisioned: identity state untouched)\n",
                       l.v[i].name, l.v[i].dev_no);
            } else {
                imported++;
                printf("imported %s dev_no=%u\n", l.v[i].name, l.v[i].dev_no);
            }
        }
        printf("%u imported, %u kept\n", imported, kept);
        pk_info("gts_import", "imported=%u kept=%u kms=%s", imported, kept, kms_db);
    } else {
        fprintf(stderr, "proxkey gts device import: %s (nothing imported)\n", pk_strerror(rc));
    }
out:
    if (db_open)
        gts_db_close(&db);
    pk_kms_free(kms);
    pk_store_close(kst);
    if (l.v) {
        pk_wipe(l.v, l.cap * sizeof *l.v);
        free(l.v);
    }
    return rc == PK_OK ? 0 : 1;
}

typedef struct list_ctx {
    gts_db_t *db;
    gts_overlay_t *ov;
    pk_txn_t *txn;
    uint8_t last[4];
    unsigned n;
} list_ctx_t;

static void fmt_age(uint32_t last_s, char *buf, size_t n)
{
    if (!last_s) {
        snprintf(buf, n, "never");
        return;
    }
    uint64_t now = pk_now_realtime_ms() / 1000;
    snprintf(buf, n, "%llus ago", (unsigned long long)(now > last_s ? now - last_s : 0));
}

static int list_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen)
{
    list_ctx_t *l = ctx;
    if (klen != 4)
        return 0;
    memcpy(l->last, key, 4);
    l->n++;
    uint8_t rec[PK_TRIG_REC_LEN], dv[PK_TRIG_REC_LEN + PK_WRAP_OVERHEAD];
    size_t dl;
    pk_trig_srv_info_t in;
    char seen[32];
    uint64_t q = 0;
    memset(&in, 0, sizeof in);
    unsigned nd = 0;
    int rc = PK_OK;
    if (!gts_overlay_get(l->ov, pk_get_u32(key), rec, &nd)) {
        rc = pk_txn_get(l->txn, "gts_dev", key, 4, dv, sizeof dv, &dl);
        if (rc == PK_OK)
            rc = gts_rec_open(l->db, key, dv, dl, rec);
    }
    if (rc == PK_OK)
        rc = pk_trig_rec_info(rec, sizeof rec, &in);
    pk_wipe(rec, sizeof rec);
    (void)pk_txn_count(l->txn, "gts_cmd", key, 4, &q);
    q = q > nd ? q - nd : 0; /* delivered per the journal, not yet folded */
    fmt_age(in.last_seen_s, seen, sizeof seen);
    printf("%-24.*s dev_no=%-7u %s queued=%llu last_seen=%s exchanges=%u%s\n", (int)vlen,
           (const char *)val, pk_get_u32(key), rc == PK_OK ? "ok" : pk_strerror(rc),
           (unsigned long long)q, seen, in.exchanges, in.rotate ? " rotate" : "");
    return 0;
}

static int list_fn(pk_txn_t *txn, void *ctx)
{
    list_ctx_t *l = ctx;
    l->txn = txn;
    int have = 0;
    for (;;) {
        unsigned before = l->n;
        int rc = pk_txn_scan(txn, "gts_devname", NULL, 0, have ? l->last : NULL, have ? 4 : 0, 1000,
                             list_cb, l);
        if (rc != PK_OK)
            return rc;
        if (l->n == before)
            return PK_OK;
        have = 1;
    }
}

static int cmd_device_list(int argc, char **argv)
{
    common_opts_t c;
    argc = take_common(argc, argv, &c);
    if (argc > 1 && pk_cli_is_help(argv[1])) {
        printf("usage: proxkey gts device list [--db URI]\nLists provisioned devices.\n%s",
               common_help);
        return 0;
    }
    if (argc > 1)
        return pk_cli_usage_error("gts device list", "unknown argument '%s'", argv[1]);
    gts_db_t db;
    if (gts_db_open(&db, c.store, c.kek, 0) != PK_OK)
        return 1;
    list_ctx_t l = {&db, NULL, NULL, {0}, 0};
    char jb[GTS_JNL_PATH_MAX];
    int rc = gts_db_journal_base(c.store, c.journal, jb, sizeof jb);
    if (rc == PK_OK)
        rc = gts_overlay_load(&db, jb, &l.ov);
    if (rc == PK_OK)
        rc = pk_store_run_read(db.st, list_fn, &l, 5);
    gts_overlay_free(l.ov);
    gts_db_close(&db);
    printf("%u device(s)\n", l.n);
    return rc == PK_OK ? 0 : 1;
}

/* ---- send ---- */

/* Prints " ARG" for a command argument: as text when every byte is printable
 * ASCII, else as 0x and hex digits; at most max bytes, "..." when cut. */
static void print_arg(const uint8_t *a, size_t n, size_t max)
{
    size_t show = n > max ? max : n;
    int text = 1;
    for (size_t i = 0; i < show; i++)
        text &= a[i] >= 0x20 && a[i] < 0x7f;
    if (text) {
        printf(" %.*s", (int)show, (const char *)a);
    } else {
        printf(" 0x");
        for (size_t i = 0; i < show; i++)
            printf("%02x", a[i]);
    }
    if (show < n)
        printf("...");
}

/* ARG of `gts send`: seconds for the interval commands, text otherwise, or
 * with hex the bytes given as hex digits (the caller allows it for app only). */
static int parse_cmd_arg(uint8_t cmd, const char *arg, int hex, uint8_t *buf, size_t *len)
{
    *len = 0;
    if (cmd == PK_TRIG_CMD_POLL_FASTER || cmd == PK_TRIG_CMD_POLL_SLOWER) {
        unsigned long long s;
        if (!arg || pk_cli_parse_u64(arg, PK_TRIG_INTERVAL_MIN_S, PK_TRIG_INTERVAL_MAX_S, &s) != 0)
            return -1;
        pk_put_u32(buf, (uint32_t)s);
        *len = 4;
    } else if (arg && hex) {
        size_t n = strlen(arg);
        if (n % 2 || n / 2 > PK_TRIG_ARG_MAX || (n && gts_unhex(arg, buf, n / 2) != PK_OK))
            return -1;
        *len = n / 2;
    } else if (arg) {
        size_t n = strlen(arg);
        if (n > PK_TRIG_ARG_MAX)
            return -1;
        memcpy(buf, arg, n);
        *len = n;
    }
    return pk_trig_cmd_check(cmd, buf, *len) == PK_OK ? 0 : -1;
}

static int cmd_send(int argc, char **argv)
{
    common_opts_t c;
    argc = take_common(argc, argv, &c);
    if (argc > 1 && pk_cli_is_help(argv[1])) {
        printf("usage: proxkey gts send DEVICE|--all COMMAND [ARG] [--hex]\n"
               "Queues a command; it goes out on a later poll and counts as delivered\n"
               "when the device's next identity is seen. Commands:\n"
               "  none                 no update\n"
               "  update URL           an update is available at URL\n"
               "  poll-faster SECONDS  poll more often: the new interval\n"
               "  poll-slower SECONDS  poll less often: the new interval\n"
               "  keygen               generate new keys on board\n"
               "  ota-https URL        open HTTPS to the OTA server at URL\n"
               "  app PAYLOAD          an opaque application payload (up to %d bytes);\n"
               "                       with --hex, PAYLOAD is the bytes in hex digits\n%s",
               PK_TRIG_ARG_MAX, common_help);
        return 0;
    }
    int hex = 0, n_args = 1;
    for (int i = 1; i < argc; i++) { /* --hex anywhere; the rest in order */
        if (strcmp(argv[i], "--hex") == 0)
            hex = 1;
        else
            argv[n_args++] = argv[i];
    }
    argc = n_args;
    if (argc < 3 || argc > 4)
        return pk_cli_usage_error("gts send",
                                  "usage: proxkey gts send DEVICE|--all COMMAND [ARG] [--hex]");
    const char *dev = strcmp(argv[1], "--all") == 0 ? NULL : argv[1];
    int cmd = pk_trig_cmd_parse(argv[2]);
    uint8_t arg[PK_TRIG_ARG_MAX];
    size_t arglen;
    if (cmd < 0)
        return pk_cli_usage_error("gts send", "unknown command '%s'", argv[2]);
    if (hex && cmd != PK_TRIG_CMD_APP)
        return pk_cli_usage_error("gts send", "--hex is for app payloads only");
    if (parse_cmd_arg((uint8_t)cmd, argc == 4 ? argv[3] : NULL, hex, arg, &arglen) != 0)
        return pk_cli_usage_error("gts send", "bad or missing argument for '%s'%s", argv[2],
                                  hex ? " (--hex: an even number of hex digits)" : "");
    gts_db_t db;
    if (gts_db_open(&db, c.store, c.kek, 0) != PK_OK)
        return 1;
    uint64_t seq;
    unsigned n;
    int rc = gts_db_send(&db, dev, (uint8_t)cmd, arg, arglen, &seq, &n);
    gts_db_close(&db);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts send: %s%s\n", pk_strerror(rc),
                rc == PK_ERR_NOTFOUND ? " (no such device)"
                : rc == PK_ERR_LIMIT  ? " (queue full)"
                                      : "");
        return 1;
    }
    printf("queued %s for %u device(s) (last seq %llu)\n", argv[2], n, (unsigned long long)seq);
    return 0;
}

/* ---- status ---- */

typedef struct status_ctx {
    gts_db_t *db;
    gts_overlay_t *ov;
    uint32_t dev_no;
    const char *name;
    int found;
    pk_txn_t *txn;
    uint32_t ival;     /* the last delivered poll interval (0: none) ... */
    uint64_t ival_seq; /* ... and the command that set it */
} status_ctx_t;

/* Delivered per the journal but not yet folded: a newer interval. */
static int status_ival_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
                          size_t vlen)
{
    status_ctx_t *s = ctx;
    uint32_t sec;
    uint64_t seq = klen == 12 ? pk_get_u64(key + 4) : 0;
    if (seq > s->ival_seq && gts_overlay_delivered(s->ov, s->dev_no, seq) &&
        gts_cmd_interval(val, vlen, &sec)) {
        s->ival = sec;
        s->ival_seq = seq;
    }
    return 0;
}

static int status_cmd_cb(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
                         size_t vlen)
{
    status_ctx_t *s = ctx;
    if (klen != 12 || vlen < 1 || gts_overlay_delivered(s->ov, s->dev_no, pk_get_u64(key + 4)))
        return 0;
    const char *nm = pk_trig_cmd_name(val[0]);
    printf("  queued seq=%llu %s", (unsigned long long)pk_get_u64(key + 4), nm ? nm : "?");
    if (val[0] == PK_TRIG_CMD_POLL_FASTER || val[0] == PK_TRIG_CMD_POLL_SLOWER) {
        if (vlen == 5)
            printf(" %us", pk_get_u32(val + 1));
    } else if (vlen > 1) {
        print_arg(val + 1, vlen - 1, 80);
    }
    printf("\n");
    return 0;
}

static int status_fn(pk_txn_t *txn, void *ctx)
{
    status_ctx_t *s = ctx;
    uint8_t key[4], dv[PK_TRIG_REC_LEN + PK_WRAP_OVERHEAD], rec[PK_TRIG_REC_LEN];
    size_t kl, dl;
    pk_trig_srv_info_t in;
    int rc = pk_txn_get(txn, "gts_name", (const uint8_t *)s->name, strlen(s->name), key, sizeof key,
                        &kl);
    if (rc != PK_OK)
        return rc;
    s->found = 1;
    s->dev_no = pk_get_u32(key);
    unsigned nd = 0;
    if (!gts_overlay_get(s->ov, s->dev_no, rec, &nd)) {
        rc = pk_txn_get(txn, "gts_dev", key, 4, dv, sizeof dv, &dl);
        if (rc == PK_OK)
            rc = gts_rec_open(s->db, key, dv, dl, rec);
    }
    if (rc == PK_OK)
        rc = pk_trig_rec_info(rec, sizeof rec, &in);
    pk_wipe(rec, sizeof rec);
    if (rc != PK_OK)
        return rc;
    char uid[33], seen[32];
    gts_hex(in.uid, 16, uid);
    fmt_age(in.last_seen_s, seen, sizeof seen);
    printf("device %s (dev_no %u)\n", s->name, pk_get_u32(key));
    if (in.pending)
        printf("  next identity UID2=%s (its first poll retires UID1)%s\n", uid,
               in.rotate ? " (key rotation on)" : "");
    else
        printf("  identity UID1=%s%s\n", uid, in.rotate ? " (key rotation on)" : "");
    printf("  last seen %s; valid polls %u, exchanges completed %u\n", seen, in.polls,
           in.exchanges);
    if (in.pending)
        printf("  exchange pending: Sent=%u, highest try %u%s\n", in.sent, in.try_max,
               in.bound ? ", carrying the queue head" : "");
    /* the poll interval: the last poll-faster/poll-slower delivered */
    uint8_t iv[12];
    size_t ivl = 0;
    rc = pk_txn_get(txn, "gts_ival", key, 4, iv, sizeof iv, &ivl);
    if (rc == PK_OK && ivl == sizeof iv) {
        s->ival = pk_get_u32(iv);
        s->ival_seq = pk_get_u64(iv + 4);
    } else if (rc != PK_OK && rc != PK_ERR_NOTFOUND) {
        return rc;
    }
    rc = pk_txn_scan(txn, "gts_cmd", key, 4, NULL, 0, PK_TRIG_QUEUE_MAX, status_ival_cb, s);
    if (rc != PK_OK)
        return rc;
    if (s->ival) {
        uint64_t now = pk_now_realtime_ms() / 1000;
        if (s->ival_seq)
            printf("  poll interval %us (set by command seq=%llu)\n", s->ival,
                   (unsigned long long)s->ival_seq);
        else
            printf("  poll interval %us (as provisioned)\n", s->ival);
        if (in.last_seen_s && now > in.last_seen_s + 2 * (uint64_t)s->ival)
            printf("  overdue: no poll for %llus, more than twice its interval\n",
                   (unsigned long long)(now - in.last_seen_s));
    } else {
        printf("  poll interval: the device's own (no interval command delivered)\n");
    }
    /* Loss estimate: the device sent `tries` polls in completed exchanges
     * (highest try of each); we answered `polls`; one response per exchange
     * got through. */
    uint32_t done_polls = in.polls - (in.pending && in.polls >= in.sent ? in.sent : 0);
    if (in.exchanges > 0 && in.tries > 0) {
        double up = in.tries > done_polls ? 1.0 - (double)done_polls / in.tries : 0.0;
        double down = done_polls > in.exchanges ? 1.0 - (double)in.exchanges / done_polls : 0.0;
        printf("  loss estimate from Sent/try: polls lost %.0f%%, responses lost %.0f%%\n",
               up * 100, down * 100);
    }
    uint64_t q = 0;
    (void)pk_txn_count(txn, "gts_cmd", key, 4, &q);
    q = q > nd ? q - nd : 0;
    printf("  %llu command(s) queued\n", (unsigned long long)q);
    return pk_txn_scan(txn, "gts_cmd", key, 4, NULL, 0, PK_TRIG_QUEUE_MAX, status_cmd_cb, s);
}

static int cmd_status(int argc, char **argv)
{
    common_opts_t c;
    argc = take_common(argc, argv, &c);
    if (argc > 1 && pk_cli_is_help(argv[1])) {
        printf("usage: proxkey gts status DEVICE [--db URI]\n"
               "Shows a device's identity, its command queue, when it was last seen, the\n"
               "poll interval its last delivered poll-faster/poll-slower set (and whether\n"
               "it is overdue) and the loss estimate from Sent (as of the server's last\n"
               "durable write).\n%s",
               common_help);
        return 0;
    }
    if (argc != 2)
        return pk_cli_usage_error("gts status", "usage: proxkey gts status DEVICE");
    gts_db_t db;
    if (gts_db_open(&db, c.store, c.kek, 0) != PK_OK)
        return 1;
    status_ctx_t s = {&db, NULL, 0, argv[1], 0, NULL, 0, 0};
    char jb[GTS_JNL_PATH_MAX];
    int rc = gts_db_journal_base(c.store, c.journal, jb, sizeof jb);
    if (rc == PK_OK)
        rc = gts_overlay_load(&db, jb, &s.ov);
    if (rc == PK_OK)
        rc = pk_store_run_read(db.st, status_fn, &s, 5);
    gts_overlay_free(s.ov);
    gts_owner_t own;
    int have = rc == PK_OK ? gts_owner_get(&db, &own) : 0;
    gts_db_close(&db);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts status: %s: %s\n", argv[1],
                rc == PK_ERR_NOTFOUND ? "no such device" : pk_strerror(rc));
        return 1;
    }
    uint64_t now = pk_now_realtime_ms();
    if (have == 1 && own.until_ms > now)
        printf("  served by gts pid %u on %s (lease %llu s more)\n", own.pid, own.host,
               (unsigned long long)((own.until_ms - now + 999) / 1000));
    else if (have == 1)
        printf("  no gts serves the store now (the last, pid %u on %s, stopped without a "
               "clean stop)\n",
               own.pid, own.host);
    else if (have == 0)
        printf("  no gts serves the store now\n");
    return 0;
}

static int cmd_device_remove(int argc, char **argv)
{
    common_opts_t c;
    argc = take_common(argc, argv, &c);
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (pk_cli_is_help(argv[i])) {
            printf("usage: proxkey gts device remove NAME [NAME...]\n"
                   "Removes devices: their key, identity and queued commands are deleted\n"
                   "and a running 'gts serve' on this store forgets them within a second\n"
                   "(their polls then get no answer). All or none: an unknown NAME is an\n"
                   "error and nothing is removed. A name may be provisioned again later; it\n"
                   "gets a new device number, key and identity.\n%s",
                   common_help);
            return 0;
        } else if (argv[i][0] != '-') {
            argv[++n] = argv[i]; /* names gathered at argv[1..n] */
        } else {
            return pk_cli_usage_error("gts device remove", "unknown argument '%s'", argv[i]);
        }
    }
    if (n == 0)
        return pk_cli_usage_error("gts device remove", "give the NAME of a device");
    gts_db_t db;
    if (gts_db_open(&db, c.store, c.kek, 0) != PK_OK)
        return 1;
    uint32_t *dev_nos = calloc((size_t)n, sizeof *dev_nos);
    size_t bad = 0;
    int rc = dev_nos ? gts_db_remove(&db, (const char *const *)argv + 1, (size_t)n, dev_nos, &bad)
                     : PK_ERR_NOMEM;
    gts_db_close(&db);
    if (rc == PK_ERR_NOTFOUND) {
        fprintf(stderr, "proxkey gts device remove: %s: no such device (nothing removed)\n",
                argv[1 + bad]);
    } else if (rc != PK_OK) {
        fprintf(stderr, "proxkey gts device remove: %s\n", pk_strerror(rc));
    } else {
        for (int i = 0; i < n; i++)
            printf("removed %s (dev_no %u)\n", argv[1 + i], (unsigned)dev_nos[i]);
    }
    free(dev_nos);
    return rc == PK_OK ? 0 : 1;
}

static const pk_cmd_t gts_device_cmds[] = {
    {"add", cmd_device_add, "provision devices with a random K1 and first identity"},
    {"import", cmd_device_import, "provision trigger devices made in the kms"},
    {"list", cmd_device_list, "list the provisioned devices"},
    {"remove", cmd_device_remove, "decommission devices (all or none)"},
    {NULL, NULL, NULL},
};

static int cmd_device(int argc, char **argv)
{
    static const pk_cli_group_t grp = {
        "proxkey gts device", "usage: proxkey gts device <command> [options]",
        "The devices the trigger server answers (--help on each).", gts_device_cmds};
    int rc;
    const pk_cmd_t *c = pk_cli_select(&grp, argc, argv, &rc);
    return c ? c->fn(argc - 1, argv + 1) : rc;
}

static const pk_cmd_t gts_cmds[] = {
    {"serve", cmd_serve, "run the trigger server (UDP)"},
    {"device", cmd_device, "provision (add, import from the kms), list or remove devices"},
    {"send", cmd_send, "queue a command for a device"},
    {"status", cmd_status, "show a device's queue, last poll and loss estimate"},
    {NULL, NULL, NULL},
};

int pk_cmd_gts(int argc, char **argv)
{
    static const pk_cli_group_t grp = {
        "proxkey gts", "usage: proxkey gts <command> [options]",
        "The trigger server of the Thales method: sleeping devices poll it with a\n"
        "one-time identity; it answers with an encrypted, signed command.",
        gts_cmds};
    int rc;
    const pk_cmd_t *c = pk_cli_select(&grp, argc, argv, &rc);
    return c ? c->fn(argc - 1, argv + 1) : rc;
}

/* ---- device poll ---- */

/* ---- the device's state file (gts.h) ---- */

static int dev_file_read(const char *path, gts_devfile_t *f, const char **why)
{
    char dir[PK_SECFILE_PATH_MAX], name[PK_SECFILE_PATH_MAX], buf[GTS_DEVFILE_MAX];
    size_t len = 0;
    *why = NULL;
    int rc = pk_secfile_split(path, dir, name);
    if (rc == PK_OK)
        rc = pk_secfile_read(dir, name, buf, sizeof buf, &len);
    if (rc == PK_ERR_SPACE)
        rc = PK_ERR_MALFORMED, *why = "longer than one state line";
    else if (rc == PK_OK)
        rc = gts_devfile_parse(buf, len, f, why);
    pk_wipe(buf, sizeof buf);
    return rc;
}

/* Rewrites the state file with f (temporary file, fsync, rename, fsync of
 * the directory): the new identity is durable before it is used. */
static int dev_file_write(const char *path, const gts_devfile_t *f)
{
    char dir[PK_SECFILE_PATH_MAX], name[PK_SECFILE_PATH_MAX], kh[33], uh[33];
    char line[GTS_DEVFILE_MAX];
    int rc = pk_secfile_split(path, dir, name);
    if (rc != PK_OK)
        return rc;
    gts_hex(f->k, 16, kh);
    gts_hex(f->uid, 16, uh);
    int n =
        snprintf(line, sizeof line, "%s %u %s %s %u\n", f->name, f->dev_no, kh, uh, f->interval);
    pk_wipe(kh, sizeof kh);
    rc = n > 0 && (size_t)n < sizeof line ? pk_secfile_write(dir, name, line, (size_t)n)
                                          : PK_ERR_INVAL;
    pk_wipe(line, sizeof line);
    return rc;
}

static void print_msg(const char *name, const pk_trig_dev_msg_t *m)
{
    const char *nm = pk_trig_cmd_name(m->cmd);
    if (m->unsupported) /* authentic, but nothing this device can act on */
        printf("%s: unsupported command 0x%02x with %u argument bytes, not acted on", name, m->cmd,
               (unsigned)m->arglen);
    else if (m->cmd == PK_TRIG_CMD_POLL_FASTER || m->cmd == PK_TRIG_CMD_POLL_SLOWER)
        printf("%s: %s interval=%us", name, nm, m->interval_s);
    else if (m->arglen) {
        printf("%s: %s", name, nm ? nm : "?");
        print_arg(m->arg, m->arglen, PK_TRIG_ARG_MAX);
    } else
        printf("%s: %s", name, nm ? nm : "?");
    printf(" (Sent=%u Resend_Counter=%u%s)\n", m->sent, m->resend,
           m->rotated ? " key rotated" : "");
    fflush(stdout);
}

int pk_cmd_device_poll(int argc, char **argv)
{
    const char *server = DEFAULT_LISTEN, *state = NULL;
    char dirstate[4096];
    unsigned long long count = 1, timeout = 1000, resend = 5, wait_max = 0;
    for (int i = 1; i < argc; i++) {
        if (pk_cli_is_help(argv[i])) {
            printf("usage: proxkey device poll (--state FILE | --dir DIR) [--server ADDR] [--count "
                   "N]\n"
                   "          [--timeout-ms MS] [--max-resend N] [--wait-max-ms MS]\n"
                   "Polls the trigger server as a device: sends its one-time identity, waits,\n"
                   "retransmits (Resend_Counter) on timeout, verifies the response, stores the\n"
                   "next identity in FILE (fsync + rename) before using it, prints the command.\n"
                   "FILE holds a line from 'proxkey gts device add' or 'proxkey kms trigger add';\n"
                   "--dir DIR means DIR/trigger, beside the device's other state.\n"
                   "  --count N        polls to make (default 1); between polls the device\n"
                   "                   waits its interval, capped at --wait-max-ms (default 0)\n");
            return 0;
        } else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
            server = argv[++i];
        } else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc) {
            state = argv[++i];
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            int n = snprintf(dirstate, sizeof dirstate, "%s/trigger", argv[++i]);
            if (n < 0 || (size_t)n >= sizeof dirstate)
                return pk_cli_usage_error("device poll", "--dir: path too long");
            state = dirstate;
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 1, 1000000, &count))
                return pk_cli_usage_error("device poll", "--count wants 1..1000000");
        } else if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 1, 600000, &timeout))
                return pk_cli_usage_error("device poll", "--timeout-ms wants 1..600000");
        } else if (strcmp(argv[i], "--max-resend") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 0, 254, &resend))
                return pk_cli_usage_error("device poll", "--max-resend wants 0..254");
        } else if (strcmp(argv[i], "--wait-max-ms") == 0 && i + 1 < argc) {
            if (pk_cli_parse_u64(argv[++i], 0, 86400000, &wait_max))
                return pk_cli_usage_error("device poll", "--wait-max-ms wants 0..86400000");
        } else {
            return pk_cli_usage_error("device poll", "unknown argument '%s'", argv[i]);
        }
    }
    if (!state)
        return pk_cli_usage_error("device poll", "--state FILE or --dir DIR is required");
    pk_addr_t to;
    const char *why = NULL;
    if (pk_addr_parse(server, &to, &why) != PK_OK)
        return pk_cli_usage_error("device poll", "--server %s: %s", server, why ? why : "bad");
    gts_devfile_t f;
    const char *bad = NULL;
    int frc = dev_file_read(state, &f, &bad);
    if (frc != PK_OK) {
        if (frc == PK_ERR_DENIED)
            fprintf(stderr,
                    "proxkey device poll: %s: readable by others; it holds the device's key "
                    "(chmod 600 %s)\n",
                    state, state);
        else if (frc == PK_ERR_MALFORMED)
            fprintf(stderr, "proxkey device poll: %s: not a trigger state line: %s\n", state,
                    bad ? bad : "malformed");
        else
            fprintf(stderr, "proxkey device poll: cannot read %s: %s\n", state,
                    frc == PK_ERR_NOTFOUND ? "no such file" : pk_strerror(frc));
        return 1;
    }
    int fd = socket(to.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to.ss, to.len) != 0) {
        fprintf(stderr, "proxkey device poll: socket: %s\n", strerror(errno));
        return 1;
    }
    pk_trig_dev_cfg_t cfg = {(uint32_t)timeout, (uint8_t)resend, 1, PK_TRIG_INTERVAL_MAX_S};
    pk_trig_dev_t d;
    static pk_trig_dev_msg_t msg;
    int failures = 0;
    pk_trig_dev_init(&d, &cfg, f.k, f.uid, f.interval, pk_now_mono_ms());
    for (unsigned long long n = 0; n < count; n++) {
        uint8_t pl[PK_TRIG_POLL_LEN], buf[PK_TRIG_RESP_MAX + 1];
        uint64_t now = pk_now_mono_ms();
        if (n > 0) {
            uint64_t w = (uint64_t)d.interval_s * 1000;
            if (w > wait_max)
                w = wait_max;
            struct timespec ts = {(time_t)(w / 1000), (long)(w % 1000) * 1000000};
            nanosleep(&ts, NULL);
            now = pk_now_mono_ms();
        }
        (void)pk_trig_dev_poll(&d, now, pl);
        (void)send(fd, pl, sizeof pl, 0);
        int done = 0;
        while (!done) {
            now = pk_now_mono_ms();
            uint64_t dl = pk_trig_dev_next_deadline(&d);
            int wait = dl > now ? (int)(dl - now) : 0;
            struct pollfd pfd = {fd, POLLIN, 0};
            int pr = poll(&pfd, 1, wait);
            now = pk_now_mono_ms();
            if (pr > 0) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0 && pk_trig_dev_input(&d, buf, (size_t)r, now, &msg) == PK_OK) {
                    memcpy(f.uid, d.uid, 16);
                    memcpy(f.k, d.key, 16);
                    f.interval = d.interval_s;
                    if (dev_file_write(state, &f) != PK_OK) {
                        fprintf(stderr, "proxkey device poll: cannot save %s\n", state);
                        close(fd);
                        return 1; /* never use an identity we could not store */
                    }
                    (void)pk_trig_dev_saved(&d, now);
                    print_msg(f.name, &msg);
                    done = 1;
                }
            } else {
                int snd = 0;
                int rc = pk_trig_dev_timeout(&d, now, pl, &snd);
                if (snd)
                    (void)send(fd, pl, sizeof pl, 0);
                if (rc == PK_ERR_TIMEOUT) {
                    fprintf(stderr, "%s: no answer after %u retransmissions\n", f.name,
                            (unsigned)resend);
                    failures++;
                    done = 1;
                }
            }
        }
    }
    close(fd);
    pk_trig_dev_clear(&d);
    pk_wipe(&f, sizeof f);
    return failures ? 1 : 0;
}
