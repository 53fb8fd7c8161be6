/*
 * `proxkey kms ...`: init, serve, and the admin commands over the same core
 * functions the simulator and the tests call. Exit status: 0 ok, 1 failure,
 * 2 usage error (one line on stderr).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "core/log.h"
#include "kms_shell.h"
#include "net/loop.h"
#include "store/wrap.h"

static const char usage_text[] =
    "usage: proxkey kms COMMAND [options]\n"
    "\n"
    "The key management server: device keys, the allowed lists, root keys per pair\n"
    "(option 1), root-key pools (option 2), the node directory and the audit log.\n"
    "\n"
    "  init                            create the KEK file (0600) and the store\n"
    "  serve                           serve nodes over mutual TLS 1.3\n"
    "  device add ID [--mode pairs|pool] [--pool NAME] [--device-key HEX] [--trigger]\n"
    "                                  add a device; without --device-key a 256-bit key is\n"
    "                                  generated and printed once (for provisioning)\n"
    "  device list [--after ID] [--limit N]\n"
    "  device show ID\n"
    "  device remove ID\n"
    "  allow A B                       allow the pair (A, B)\n"
    "  deny A B                        withdraw it (its root key is revoked)\n"
    "  group add GROUP MEMBER...       a group allows every pair of its members\n"
    "  group remove GROUP [MEMBER...]  remove members (none given: the whole group)\n"
    "  pool create NAME N              a pool of N root keys (option 2; devices hold up to 32)\n"
    "  pool show NAME\n"
    "  audit [--from N] [--limit N]    the audit log (never key values)\n"
    "  domain add NAME                 a domain: a named group of devices sharing master keys\n"
    "  domain member add|remove DOMAIN DEVICE...\n"
    "  domain show DEVICE              the domain a device is in\n"
    "  master rotate DOMAIN [--at TIME] [--lifetime DUR]\n"
    "                                  make the domain's next master key, effective at TIME\n"
    "                                  (now, +DUR, ms since the epoch or YYYY-MM-DDTHH:MM:SSZ)\n"
    "  master list DOMAIN              its master keys (IDs and validity, never values)\n"
    "  trigger add ID [--rotate] [--out FILE]\n"
    "                                  a trigger key (K1, first UID1) for the gts; prints the\n"
    "                                  device's state line once (or writes FILE, 0600)\n"
    "  trigger remove ID | trigger list\n"
    "\n"
    "Common options: --db URI (default kms.db: SQLite; postgresql://... for PostgreSQL),\n"
    "--kek FILE (default kms.kek, mode 0600), --log-level LEVEL, --config FILE.\n"
    "Each command takes --help.\n";

static int usage_err(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_err(const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "proxkey kms %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

static int is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/* ---- options ---- */

#define COMMON_KEYS                                                                                \
    {"db", "store URI: a SQLite path, sqlite:PATH or postgresql://...", KMS_DEFAULT_DB, 0},        \
        {"kek", "key-encryption key file (32 bytes or 64 hex digits, mode 0600)", KMS_DEFAULT_KEK, \
         0},                                                                                       \
    {                                                                                              \
        "log-level", "error, warn, info or debug", "info", 0                                       \
    }

static const pk_conf_key_t keys_common[] = {COMMON_KEYS};
static const pk_conf_key_t keys_serve[] = {
    COMMON_KEYS,
    {"listen", "ADDR:PORT to serve nodes on (port 0: any free port)", KMS_DEFAULT_LISTEN, 0},
    {"ca", "CA certificate (PEM) that node certificates must chain to", NULL, 0},
    {"cert", "this kms's certificate (PEM)", NULL, 0},
    {"key", "this kms's private key (PEM)", NULL, 0},
    {"port-file", "write the bound port to this file once listening", NULL, 0},
    {"cache-ttl-ms", "how long an unwrapped device key stays cached (ms)", "5000", 0},
    {"max-conns", "most node connections at once", "1024", 0},
    {"group-writes",
     "on: first registrations' and allocations' writes join the audit group commit; off: each "
     "commits alone before its answer",
     "on", 0},
};
static const pk_conf_key_t keys_dev_add[] = {
    COMMON_KEYS,
    {"mode", "root keys: pairs (option 1) or pool (option 2)", "pairs", 0},
    {"pool", "the pool of a mode-pool device", NULL, 0},
    {"device-key", "the device's long-term key, 32 or 64 hex digits (default: generate)", NULL, 0},
    {"domain", "put the device in this domain (master keys)", NULL, 0},
    {"trigger", "also make a trigger key (see: proxkey kms trigger add)", NULL, 1},
    {"trigger-rotate", "with --trigger: the gts rotates K with every identity", NULL, 1},
    {"trigger-out", "with --trigger: write the device's state line to FILE (0600)", NULL, 0},
};
static const pk_conf_key_t keys_trig_add[] = {
    COMMON_KEYS,
    {"rotate", "the gts rotates K with every identity (K2 = KDF(K1, ...))", NULL, 1},
    {"out", "write the device's state line to FILE (mode 0600) instead of stdout", NULL, 0},
};
static const pk_conf_key_t keys_rotate[] = {
    COMMON_KEYS,
    {"at", "effective from: now, +DUR, ms since the epoch or YYYY-MM-DDTHH:MM:SSZ", "now", 0},
    {"lifetime", "validity from TIME: N[ms|s|m|h|d] (default 24h)", "24h", 0},
};
static const pk_conf_key_t keys_dev_list[] = {
    COMMON_KEYS,
    {"after", "list devices after this ID", NULL, 0},
    {"limit", "at most this many", "1000", 0},
};
static const pk_conf_key_t keys_audit[] = {
    COMMON_KEYS,
    {"from", "first record number", "1", 0},
    {"limit", "at most this many records", "1000", 0},
};

/* positional arguments one command takes at most (group add GROUP MEMBER...) */
#define POS_MAX 256

typedef struct cmdenv {
    pk_conf_t conf;
    char *pos[POS_MAX];
    int npos;
    pk_store_t *st;
    pk_kms_t *kms;
} cmdenv_t;

static int parse(cmdenv_t *e, const char *what, const pk_conf_key_t *keys, size_t n, int argc,
                 char **argv, const char *help)
{
    pk_conf_init(&e->conf, keys, n);
    for (int i = 1; i < argc; i++)
        if (is_help(argv[i])) {
            printf("usage: proxkey kms %s\n\nOptions:\n", help);
            pk_conf_help(&e->conf);
            return 1;
        }
    if (pk_conf_args(&e->conf, argc, argv, e->pos, POS_MAX, &e->npos) != 0)
        return usage_err(what, "%s", e->conf.err);
    int lvl = pk_log_level_parse(pk_conf_get(&e->conf, "log-level"));
    if (lvl < 0)
        return usage_err(what, "unknown log level '%s' (error, warn, info, debug)",
                         pk_conf_get(&e->conf, "log-level"));
    pk_log_set_level(lvl);
    pk_log_set_role("kms");
    return 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int unhex(const char *s, uint8_t *out, size_t *n)
{
    size_t l = strlen(s);
    if (l != 32 && l != 64)
        return -1;
    for (size_t i = 0; i < l / 2; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = s[2 * i + (size_t)j];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v |= (unsigned)(c - 'A' + 10);
            else
                return -1;
        }
        out[i] = (uint8_t)v;
    }
    *n = l / 2;
    return 0;
}

/* Opens KEK, store and core for an admin command. */
static int open_env(cmdenv_t *e, const char *what)
{
    uint8_t kek[PK_WRAP_KEK_LEN];
    char why[256] = "";
    const char *kp = pk_conf_get(&e->conf, "kek"), *db = pk_conf_get(&e->conf, "db");
    int rc = pk_kek_load(kp, kek, why, sizeof why);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey kms %s: KEK %s: %s%s%s\n", what, kp, pk_strerror(rc),
                why[0] ? ": " : "", why);
        if (rc == PK_ERR_IO)
            fprintf(stderr, "  (run: proxkey kms init --db %s --kek %s)\n", db, kp);
        return 1;
    }
    rc = pk_store_open(db, &e->st);
    if (rc == PK_OK) {
        pk_kms_cfg_t cfg = {.store = e->st, .kek = kek};
        rc = pk_kms_new(&cfg, &e->kms);
    }
    pk_wipe(kek, sizeof kek);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey kms %s: store %s: %s\n", what, db, pk_strerror(rc));
        return 1;
    }
    return 0;
}

static void close_env(cmdenv_t *e)
{
    pk_kms_free(e->kms);
    pk_store_close(e->st);
    e->kms = NULL;
    e->st = NULL;
}

static int fail(const char *what, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(const char *what, int rc, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "proxkey kms %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s\n", pk_strerror(rc));
    return 1;
}

static uint64_t wall(void)
{
    return pk_now_realtime_ms();
}

/* ---- commands ---- */

static int cmd_init(int argc, char **argv)
{
    cmdenv_t e = {0};
    int r = parse(&e, "init", keys_common, 3, argc, argv, "init [--db URI] [--kek FILE]");
    if (r)
        return r == 1 ? 0 : r;
    if (e.npos)
        return usage_err("init", "unexpected argument '%s'", e.pos[0]);
    const char *kp = pk_conf_get(&e.conf, "kek");
    int rc = pk_kek_generate(kp);
    if (rc == PK_OK)
        printf("created KEK %s (mode 0600)\n", kp);
    else if (rc == PK_ERR_EXISTS)
        printf("KEK %s exists: kept\n", kp);
    else
        return fail("init", rc, "cannot create KEK %s", kp);
    if (open_env(&e, "init"))
        return 1;
    printf("store %s ready (%s, kms schema v%d)\n", pk_conf_get(&e.conf, "db"),
           pk_store_backend(e.st), PK_KMS_SCHEMA_VERSION);
    pk_info("kms_init", "db=%s kek=%s", pk_conf_get(&e.conf, "db"), kp);
    close_env(&e);
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    cmdenv_t e = {0};
    int r = parse(&e, "serve", keys_serve, sizeof keys_serve / sizeof keys_serve[0], argc, argv,
                  "serve --ca FILE --cert FILE --key FILE [--listen ADDR:PORT] [--db URI] "
                  "[--kek FILE] [--config FILE]");
    if (r)
        return r == 1 ? 0 : r;
    if (e.npos)
        return usage_err("serve", "unexpected argument '%s'", e.pos[0]);
    const char *need[3] = {"ca", "cert", "key"};
    for (int i = 0; i < 3; i++)
        if (!pk_conf_get(&e.conf, need[i]))
            return usage_err("serve",
                             "missing --%s (make them with: proxkey ca init DIR; "
                             "proxkey ca issue DIR kms)",
                             need[i]);
    uint64_t ttl = 0, mc = 0;
    if (parse_u64(pk_conf_get(&e.conf, "cache-ttl-ms"), 1, 86400000, &ttl))
        return usage_err("serve", "--cache-ttl-ms must be 1..86400000");
    if (parse_u64(pk_conf_get(&e.conf, "max-conns"), 1, 100000, &mc))
        return usage_err("serve", "--max-conns must be 1..100000");
    const char *gw = pk_conf_get(&e.conf, "group-writes");
    if (strcmp(gw, "on") != 0 && strcmp(gw, "off") != 0)
        return usage_err("serve", "--group-writes must be on or off");
    kms_serve_opts_t o = {.db = pk_conf_get(&e.conf, "db"),
                          .kek = pk_conf_get(&e.conf, "kek"),
                          .listen = pk_conf_get(&e.conf, "listen"),
                          .ca = pk_conf_get(&e.conf, "ca"),
                          .cert = pk_conf_get(&e.conf, "cert"),
                          .key = pk_conf_get(&e.conf, "key"),
                          .port_file = pk_conf_get(&e.conf, "port-file"),
                          .cache_ttl_ms = ttl,
                          .max_conns = (unsigned)mc,
                          .no_group_writes = strcmp(gw, "off") == 0};
    return kms_serve(&o);
}

static const char *mode_name(uint8_t m)
{
    return m == PK_REG_MODE_PAIRS ? "pairs" : m == PK_REG_MODE_POOL ? "pool" : "?";
}

static void print_info(const pk_kms_device_info_t *i)
{
    printf("device=%.*s mode=%s key_bits=%u created_ms=%" PRIu64 " pairs=%u", i->id.len,
           (const char *)i->id.b, mode_name(i->mode), i->klen * 8u, i->created_ms, i->npairs);
    if (i->pool.len)
        printf(" pool=%.*s", i->pool.len, (const char *)i->pool.b);
    if (i->node.len)
        printf(" node=%.*s", i->node.len, (const char *)i->node.b);
    printf("\n");
}

/* A device in mode pairs with more allowed peers than a registration hands
 * root keys for (PK_REG_PEERS_MAX, in pages): say so (stderr), since the ones
 * past that get no root key. */
static void warn_key_limit(pk_kms_t *k, const char *id, const char *group)
{
    pk_kms_device_info_t i;
    if (pk_kms_device_show(k, id, &i) != PK_OK || i.mode != PK_REG_MODE_PAIRS ||
        i.npairs <= PK_REG_PEERS_MAX)
        return;
    fprintf(stderr,
            "proxkey kms: warning: %s%s now %s %u allowed peers; in mode pairs a registration "
            "hands out the root keys of at most %d (the lowest peer IDs), so the others cannot "
            "be reached directly; use a pool (mode pool) for larger groups\n",
            group ? "members of group " : "", group ? group : id, group ? "have up to" : "has",
            i.npairs, PK_REG_PEERS_MAX);
}

static int list_cb(void *ctx, const pk_kms_device_info_t *info)
{
    (*(unsigned *)ctx)++;
    print_info(info);
    return 0;
}

static int trigger_make(cmdenv_t *e, const char *what, const char *id, int rotate,
                        const char *outpath);

static int cmd_device(int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs("usage: proxkey kms device add|list|show|remove ... (see proxkey kms --help)\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    cmdenv_t e = {0};
    int r, rc;
    char what[32];
    snprintf(what, sizeof what, "device %.16s", sub);
    if (strcmp(sub, "add") == 0) {
        r = parse(&e, what, keys_dev_add, sizeof keys_dev_add / sizeof keys_dev_add[0], argc - 1,
                  argv + 1,
                  "device add ID [--mode pairs|pool] [--pool NAME] [--device-key HEX]\n"
                  "          [--domain NAME] [--trigger [--trigger-rotate] [--trigger-out FILE]]");
        if (r)
            return r == 1 ? 0 : r;
        if (e.npos != 1)
            return usage_err(what, "expected one device ID");
        const char *m = pk_conf_get(&e.conf, "mode"), *pool = pk_conf_get(&e.conf, "pool");
        uint8_t mode = strcmp(m, "pairs") == 0  ? PK_REG_MODE_PAIRS
                       : strcmp(m, "pool") == 0 ? PK_REG_MODE_POOL
                                                : 0;
        if (!mode)
            return usage_err(what, "--mode must be pairs or pool");
        if (!pk_conf_flag(&e.conf, "trigger") &&
            (pk_conf_flag(&e.conf, "trigger-rotate") || pk_conf_get(&e.conf, "trigger-out")))
            return usage_err(what, "--trigger-rotate and --trigger-out go with --trigger");
        for (const char *c = e.pos[0]; pk_conf_flag(&e.conf, "trigger") && *c; c++)
            if ((unsigned char)*c <= 0x20 || *c == 0x7f)
                return usage_err(what, "a trigger device's ID has no spaces or control "
                                       "characters (it is its name in the gts)");
        if ((mode == PK_REG_MODE_POOL) != (pool != NULL))
            return usage_err(what, "--pool NAME goes with --mode pool (and only with it)");
        uint8_t key[32], gen[32];
        size_t klen = 0;
        const char *hex = pk_conf_get(&e.conf, "device-key");
        if (hex && unhex(hex, key, &klen) != 0)
            return usage_err(what, "--device-key must be 32 or 64 hex digits");
        if (open_env(&e, what))
            return 1;
        rc = pk_kms_device_add(e.kms, e.pos[0], hex ? key : NULL, klen, mode, pool, wall(),
                               hex ? NULL : gen);
        pk_wipe(key, sizeof key);
        if (rc == PK_OK) {
            pk_info("device_added", "device=%s mode=%s", e.pos[0], m);
            if (hex) {
                printf("added %s (mode %s)\n", e.pos[0], m);
            } else {
                printf("added %s (mode %s) key ", e.pos[0], m);
                for (int i = 0; i < 32; i++)
                    printf("%02x", gen[i]);
                printf("\n");
            }
        }
        pk_wipe(gen, sizeof gen);
        const char *dom = pk_conf_get(&e.conf, "domain");
        if (rc == PK_OK && dom) {
            rc = pk_kms_domain_member_add(e.kms, dom, e.pos[0], wall());
            if (rc == PK_OK)
                printf("added %s to domain %s\n", e.pos[0], dom);
            else
                fprintf(stderr, "proxkey kms %s: domain %s: %s (device added without it)\n", what,
                        dom, pk_strerror(rc));
        }
        if (rc == PK_OK && pk_conf_flag(&e.conf, "trigger") &&
            trigger_make(&e, what, e.pos[0], pk_conf_flag(&e.conf, "trigger-rotate"),
                         pk_conf_get(&e.conf, "trigger-out")) != 0) {
            fprintf(stderr, "proxkey kms %s: %s added without a trigger key\n", what, e.pos[0]);
            close_env(&e);
            return 1;
        }
        close_env(&e);
        if (rc == PK_ERR_INVAL)
            return usage_err(what, "bad device ID or pool name (1..64 bytes of UTF-8)");
        if (rc == PK_ERR_NOTFOUND)
            return fail(what, rc, "no pool '%s' (proxkey kms pool create)", pool);
        return rc == PK_OK ? 0 : fail(what, rc, "%s", e.pos[0]);
    }
    if (strcmp(sub, "list") == 0) {
        r = parse(&e, what, keys_dev_list, sizeof keys_dev_list / sizeof keys_dev_list[0], argc - 1,
                  argv + 1, "device list [--after ID] [--limit N]");
        if (r)
            return r == 1 ? 0 : r;
        uint64_t lim = 0;
        if (e.npos)
            return usage_err(what, "unexpected argument '%s'", e.pos[0]);
        if (parse_u64(pk_conf_get(&e.conf, "limit"), 1, 1000000, &lim))
            return usage_err(what, "--limit must be 1..1000000");
        if (open_env(&e, what))
            return 1;
        unsigned n = 0;
        rc = pk_kms_device_list(e.kms, pk_conf_get(&e.conf, "after"), lim, list_cb, &n);
        close_env(&e);
        return rc == PK_OK ? 0 : fail(what, rc, "listing");
    }
    if (strcmp(sub, "show") == 0 || strcmp(sub, "remove") == 0) {
        r = parse(&e, what, keys_common, 3, argc - 1, argv + 1,
                  strcmp(sub, "show") == 0 ? "device show ID" : "device remove ID");
        if (r)
            return r == 1 ? 0 : r;
        if (e.npos != 1)
            return usage_err(what, "expected one device ID");
        if (open_env(&e, what))
            return 1;
        if (strcmp(sub, "show") == 0) {
            pk_kms_device_info_t info;
            rc = pk_kms_device_show(e.kms, e.pos[0], &info);
            if (rc == PK_OK)
                print_info(&info);
        } else {
            rc = pk_kms_device_remove(e.kms, e.pos[0], wall());
            if (rc == PK_OK) {
                printf("removed %s\n", e.pos[0]);
                pk_info("device_removed", "device=%s", e.pos[0]);
            }
        }
        close_env(&e);
        if (rc == PK_ERR_NOTFOUND)
            return fail(what, rc, "no device '%s'", e.pos[0]);
        return rc == PK_OK ? 0 : fail(what, rc, "%s", e.pos[0]);
    }
    return usage_err("device", "unknown subcommand '%s' (add, list, show, remove)", sub);
}

static int cmd_pair(int argc, char **argv, int allow)
{
    cmdenv_t e = {0};
    const char *what = allow ? "allow" : "deny";
    int r = parse(&e, what, keys_common, 3, argc, argv, allow ? "allow A B" : "deny A B");
    if (r)
        return r == 1 ? 0 : r;
    if (e.npos != 2)
        return usage_err(what, "expected two device IDs");
    if (strcmp(e.pos[0], e.pos[1]) == 0)
        return usage_err(what, "a pair needs two different devices");
    if (open_env(&e, what))
        return 1;
    int rc, still = 0;
    if (allow)
        rc = pk_kms_allow(e.kms, e.pos[0], e.pos[1], wall());
    else
        rc = pk_kms_deny(e.kms, e.pos[0], e.pos[1], wall(), &still);
    if (allow && rc == PK_OK) {
        warn_key_limit(e.kms, e.pos[0], NULL);
        warn_key_limit(e.kms, e.pos[1], NULL);
    }
    close_env(&e);
    if (rc == PK_OK) {
        printf("%s %s %s%s\n", allow ? "allowed" : "denied", e.pos[0], e.pos[1],
               still ? " (a group still allows the pair)" : "");
        pk_info(allow ? "pair_allowed" : "pair_denied", "a=%s b=%s", e.pos[0], e.pos[1]);
        return 0;
    }
    if (rc == PK_ERR_EXISTS) {
        printf("%s %s already allowed\n", e.pos[0], e.pos[1]);
        return 0;
    }
    if (rc == PK_ERR_NOTFOUND)
        return fail(what, rc, "%s %s was not explicitly allowed", e.pos[0], e.pos[1]);
    if (rc == PK_ERR_INVAL)
        return usage_err(what, "bad device ID (1..64 bytes of UTF-8)");
    return fail(what, rc, "%s %s", e.pos[0], e.pos[1]);
}

static int cmd_group(int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs("usage: proxkey kms group add GROUP MEMBER... | group remove GROUP [MEMBER...]\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    int add = strcmp(argv[1], "add") == 0;
    if (!add && strcmp(argv[1], "remove") != 0)
        return usage_err("group", "unknown subcommand '%s' (add, remove)", argv[1]);
    cmdenv_t e = {0};
    const char *what = add ? "group add" : "group remove";
    int r = parse(&e, what, keys_common, 3, argc - 1, argv + 1,
                  add ? "group add GROUP MEMBER..." : "group remove GROUP [MEMBER...]");
    if (r)
        return r == 1 ? 0 : r;
    if (e.npos < (add ? 2 : 1))
        return usage_err(what, add ? "expected GROUP and at least one MEMBER" : "expected GROUP");
    if (open_env(&e, what))
        return 1;
    int rc = PK_OK, failed = 0;
    if (!add && e.npos == 1) {
        rc = pk_kms_group_remove(e.kms, e.pos[0], NULL, wall());
        if (rc == PK_OK)
            printf("removed group %s\n", e.pos[0]);
        else
            failed = fail(what, rc, "group %s", e.pos[0]);
    }
    for (int i = 1; i < e.npos; i++) {
        rc = add ? pk_kms_group_add(e.kms, e.pos[0], e.pos[i], wall())
                 : pk_kms_group_remove(e.kms, e.pos[0], e.pos[i], wall());
        if (rc == PK_OK)
            printf("%s %s %s\n", add ? "added" : "removed", e.pos[i], e.pos[0]);
        else if (add && rc == PK_ERR_EXISTS)
            printf("%s already in %s\n", e.pos[i], e.pos[0]);
        else
            failed = fail(what, rc, "%s in %s", e.pos[i], e.pos[0]);
    }
    if (add && e.npos > 1) /* the last member added has about the group's size */
        warn_key_limit(e.kms, e.pos[e.npos - 1], e.pos[0]);
    close_env(&e);
    return failed;
}

static int cmd_pool(int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs("usage: proxkey kms pool create NAME N | pool show NAME\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    int create = strcmp(argv[1], "create") == 0;
    if (!create && strcmp(argv[1], "show") != 0)
        return usage_err("pool", "unknown subcommand '%s' (create, show)", argv[1]);
    cmdenv_t e = {0};
    const char *what = create ? "pool create" : "pool show";
    int r = parse(&e, what, keys_common, 3, argc - 1, argv + 1,
                  create ? "pool create NAME N" : "pool show NAME");
    if (r)
        return r == 1 ? 0 : r;
    uint64_t n = 0;
    if (e.npos != (create ? 2 : 1))
        return usage_err(what, create ? "expected NAME and N" : "expected NAME");
    if (create && parse_u64(e.pos[1], 1, PK_KMS_POOL_MAX_KEYS, &n))
        return usage_err(what, "N must be 1..%d", PK_KMS_POOL_MAX_KEYS);
    if (open_env(&e, what))
        return 1;
    int rc;
    if (create) {
        uint32_t first = 0;
        rc = pk_kms_pool_create(e.kms, e.pos[0], (uint32_t)n, wall(), &first);
        if (rc == PK_OK) {
            printf("created pool %s: %" PRIu64 " keys, first KSI %" PRIu32 "\n", e.pos[0], n,
                   first);
            if (n > PK_REG_MAX_KEYS)
                printf("note: every device of the pool holds the pool's first %d keys; the other "
                       "%" PRIu64 " are not handed out\n",
                       PK_REG_MAX_KEYS, n - PK_REG_MAX_KEYS);
            pk_info("pool_created", "pool=%s keys=%" PRIu64, e.pos[0], n);
        }
    } else {
        uint32_t total = 0;
        rc = pk_kms_pool_info(e.kms, e.pos[0], &total, NULL);
        if (rc == PK_OK)
            printf("pool=%s keys=%" PRIu32 " held_by_each_device=%" PRIu32
                   " (each pair gets a fresh KSI; KSIs are never reused)\n",
                   e.pos[0], total, total < PK_REG_MAX_KEYS ? total : PK_REG_MAX_KEYS);
    }
    close_env(&e);
    if (rc == PK_ERR_EXISTS || rc == PK_ERR_NOTFOUND)
        return fail(what, rc, "pool %s", e.pos[0]);
    if (rc == PK_ERR_INVAL)
        return usage_err(what, "bad pool name (1..64 bytes of UTF-8)");
    return rc == PK_OK ? 0 : fail(what, rc, "pool %s", e.pos[0]);
}

/* ---- domains and master keys ---- */

/* N[ms|s|m|h|d] -> ms. 0 or -1. */
static int parse_dur(const char *s, uint64_t *ms)
{
    char *end = NULL;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = 1000;
    if (errno || end == s)
        return -1;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0 || *end == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else if (strcmp(end, "d") == 0)
        mul = 86400000;
    else
        return -1;
    if (v > UINT64_MAX / mul)
        return -1;
    *ms = v * mul;
    return 0;
}

/* now | +DUR | ms since the epoch | YYYY-MM-DDTHH:MM:SSZ -> ms. */
static int parse_time(const char *s, uint64_t now, uint64_t *ms)
{
    struct tm tm;
    uint64_t d = 0;
    if (strcmp(s, "now") == 0) {
        *ms = now;
        return 0;
    }
    if (s[0] == '+') {
        if (parse_dur(s + 1, &d))
            return -1;
        *ms = now + d;
        return 0;
    }
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end && *end == 0) {
        time_t t = timegm(&tm);
        if (t < 0)
            return -1;
        *ms = (uint64_t)t * 1000;
        return 0;
    }
    return parse_u64(s, 1, UINT64_MAX / 2, ms);
}

static void print_ts(uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char ts[32] = "?";
    if (gmtime_r(&t, &tm))
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    printf("%s.%03uZ", ts, (unsigned)(ms % 1000));
}

static int cmd_domain(int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs("usage: proxkey kms domain add NAME | domain member add|remove DOMAIN DEVICE... | "
              "domain show DEVICE\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    cmdenv_t e = {0};
    int rc = PK_OK, failed = 0, r;
    if (strcmp(argv[1], "add") == 0 || strcmp(argv[1], "show") == 0) {
        int add = argv[1][0] == 'a';
        const char *what = add ? "domain add" : "domain show";
        r = parse(&e, what, keys_common, 3, argc - 1, argv + 1,
                  add ? "domain add NAME" : "domain show DEVICE");
        if (r)
            return r == 1 ? 0 : r;
        if (e.npos != 1)
            return usage_err(what, add ? "expected one domain NAME" : "expected one DEVICE");
        if (open_env(&e, what))
            return 1;
        uint32_t id = 0;
        pk_reg_id_t dom;
        if (add) {
            rc = pk_kms_domain_add(e.kms, e.pos[0], wall(), &id);
            if (rc == PK_OK)
                printf("added domain %s id=%" PRIu32
                       " (no master key yet: proxkey kms master rotate %s)\n",
                       e.pos[0], id, e.pos[0]);
        } else {
            rc = pk_kms_domain_of(e.kms, e.pos[0], &dom, &id);
            if (rc == PK_OK)
                printf("device=%s domain=%.*s domain_id=%" PRIu32 "\n", e.pos[0], dom.len,
                       (const char *)dom.b, id);
        }
        close_env(&e);
        if (rc == PK_ERR_INVAL)
            return usage_err(what, "bad name (1..64 bytes of UTF-8)");
        return rc == PK_OK ? 0 : fail(what, rc, "%s", e.pos[0]);
    }
    if (strcmp(argv[1], "member") != 0 || argc < 3 ||
        (strcmp(argv[2], "add") != 0 && strcmp(argv[2], "remove") != 0))
        return usage_err("domain", "unknown subcommand (add, member add, member remove, show)");
    int add = strcmp(argv[2], "add") == 0;
    const char *what = add ? "domain member add" : "domain member remove";
    r = parse(&e, what, keys_common, 3, argc - 2, argv + 2,
              add ? "domain member add DOMAIN DEVICE..." : "domain member remove DOMAIN DEVICE...");
    if (r)
        return r == 1 ? 0 : r;
    if (e.npos < 2)
        return usage_err(what, "expected DOMAIN and at least one DEVICE");
    if (open_env(&e, what))
        return 1;
    for (int i = 1; i < e.npos; i++) {
        rc = add ? pk_kms_domain_member_add(e.kms, e.pos[0], e.pos[i], wall())
                 : pk_kms_domain_member_remove(e.kms, e.pos[0], e.pos[i], wall());
        if (rc == PK_OK)
            printf("%s %s %s %s\n", add ? "added" : "removed", e.pos[i], add ? "to" : "from",
                   e.pos[0]);
        else if (rc == PK_ERR_EXISTS)
            failed = fail(what, rc, "%s is already in a domain", e.pos[i]);
        else
            failed = fail(what, rc, "%s in %s", e.pos[i], e.pos[0]);
    }
    if (add && e.npos > 1) /* the last member added has about the group's size */
        warn_key_limit(e.kms, e.pos[e.npos - 1], e.pos[0]);
    close_env(&e);
    return failed;
}

static int cmd_master(int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs("usage: proxkey kms master rotate DOMAIN [--at TIME] [--lifetime DUR] | master list "
              "DOMAIN\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    int rot = strcmp(argv[1], "rotate") == 0;
    if (!rot && strcmp(argv[1], "list") != 0)
        return usage_err("master", "unknown subcommand '%s' (rotate, list)", argv[1]);
    cmdenv_t e = {0};
    const char *what = rot ? "master rotate" : "master list";
    int r = rot ? parse(&e, what, keys_rotate, sizeof keys_rotate / sizeof keys_rotate[0], argc - 1,
                        argv + 1, "master rotate DOMAIN [--at TIME] [--lifetime DUR]")
                : parse(&e, what, keys_common, 3, argc - 1, argv + 1, "master list DOMAIN");
    if (r)
        return r == 1 ? 0 : r;
    if (e.npos != 1)
        return usage_err(what, "expected one DOMAIN");
    uint64_t now = wall(), at = 0, life = 0;
    if (rot && parse_time(pk_conf_get(&e.conf, "at"), now, &at))
        return usage_err(what, "--at: now, +DUR, ms since the epoch or YYYY-MM-DDTHH:MM:SSZ");
    if (rot && (parse_dur(pk_conf_get(&e.conf, "lifetime"), &life) || life == 0 ||
                life > PK_KMS_MK_LIFETIME_MAX))
        return usage_err(what, "--lifetime: N[ms|s|m|h|d], at most 366d");
    if (open_env(&e, what))
        return 1;
    int rc;
    if (rot) {
        pk_kms_mk_info_t mi;
        rc = pk_kms_master_rotate(e.kms, e.pos[0], at, life, now, &mi);
        if (rc == PK_OK) {
            printf("domain=%s mk_id=%" PRIu32 " not_before=", e.pos[0], mi.id);
            print_ts(mi.not_before_ms);
            printf(" expiry=");
            print_ts(mi.expiry_ms);
            printf("\n");
            pk_info("master_key_created", "domain=%s mk_id=%" PRIu32, e.pos[0], mi.id);
        }
    } else {
        pk_kms_mk_info_t mi[PK_KMS_MK_PER_DOMAIN + 1];
        size_t n = 0;
        uint32_t did = 0;
        rc = pk_kms_master_list(e.kms, e.pos[0], &did, mi, PK_KMS_MK_PER_DOMAIN + 1, &n);
        if (rc == PK_OK) {
            printf("domain=%s domain_id=%" PRIu32 " master_keys=%zu\n", e.pos[0], did, n);
            for (size_t i = 0; i < n; i++) {
                const char *st = mi[i].expiry_ms <= now      ? "expired"
                                 : mi[i].not_before_ms > now ? "scheduled"
                                                             : "valid";
                printf("mk_id=%" PRIu32 " not_before=", mi[i].id);
                print_ts(mi[i].not_before_ms);
                printf(" expiry=");
                print_ts(mi[i].expiry_ms);
                printf(" state=%s\n", st);
            }
        }
    }
    close_env(&e);
    if (rc == PK_ERR_STATE)
        return fail(what, rc, "%s already has a key effective at or after that time", e.pos[0]);
    if (rc == PK_ERR_INVAL)
        return usage_err(what, "bad domain name or times");
    return rc == PK_OK ? 0 : fail(what, rc, "domain %s", e.pos[0]);
}

/* ---- trigger keys ---- */

/* The device's state line, as `proxkey gts device add` writes it and
 * `proxkey device poll --state FILE` reads it: "name dev_no K1 UID1" (hex).
 * dev_no is the gts's number, assigned at import; the device does not use it. */
static int trigger_line(const char *what, pk_kms_trigger_t *t, const char *outpath)
{
    static const char d[] = "0123456789abcdef";
    char line[PK_REG_ID_MAX + 96];
    int n = snprintf(line, sizeof line, "%.*s 0 ", t->id.len, (const char *)t->id.b), rc = 0;
    for (int i = 0; i < PK_KMS_TRIG_KEY_LEN + PK_KMS_TRIG_UID_LEN; i++) {
        uint8_t b = i < PK_KMS_TRIG_KEY_LEN ? t->k1[i] : t->uid1[i - PK_KMS_TRIG_KEY_LEN];
        if (i == PK_KMS_TRIG_KEY_LEN)
            line[n++] = ' ';
        line[n++] = d[b >> 4];
        line[n++] = d[b & 15];
    }
    line[n++] = '\n';
    if (!outpath) {
        rc = fwrite(line, 1, (size_t)n, stdout) == (size_t)n ? 0 : 1;
    } else {
        FILE *f = NULL;
        int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0 && !(f = fdopen(fd, "w")))
            close(fd);
        if (!f || fwrite(line, 1, (size_t)n, f) != (size_t)n || fflush(f) != 0 ||
            fsync(fileno(f)) != 0)
            rc = 1;
        if (f && fclose(f) != 0)
            rc = 1;
        if (rc)
            fprintf(stderr, "proxkey kms %s: %s: %s\n", what, outpath, strerror(errno));
        else
            printf("trigger state line for %.*s written to %s (0600)\n", t->id.len,
                   (const char *)t->id.b, outpath);
    }
    pk_wipe(line, sizeof line);
    pk_wipe(t, sizeof *t);
    return rc;
}

/* Makes the trigger key of an existing device and hands out its line. */
static int trigger_make(cmdenv_t *e, const char *what, const char *id, int rotate,
                        const char *outpath)
{
    pk_kms_trigger_t t;
    int rc = pk_kms_trigger_add(e->kms, id, rotate ? PK_KMS_TRIG_ROTATE : 0, wall(), &t);
    if (rc == PK_OK) {
        pk_info("trigger_key_added", "device=%s rotate=%d", id, rotate);
        return trigger_line(what, &t, outpath);
    }
    if (rc == PK_ERR_INVAL)
        fprintf(stderr,
                "proxkey kms %s: %s: not usable as a trigger device (1..64 bytes, no spaces "
                "or control characters)\n",
                what, id);
    else if (rc == PK_ERR_NOTFOUND)
        fail(what, rc, "no device '%s' (proxkey kms device add %s --trigger)", id, id);
    else if (rc == PK_ERR_EXISTS)
        fail(what, rc, "%s already has a trigger key (proxkey kms trigger remove %s)", id, id);
    else
        fail(what, rc, "%s", id);
    return 1;
}

static int trig_list_cb(void *ctx, const pk_kms_trigger_t *t)
{
    (*(unsigned *)ctx)++;
    printf("device=%.*s created=", t->id.len, (const char *)t->id.b);
    print_ts(t->created_ms);
    printf("%s\n", t->flags & PK_KMS_TRIG_ROTATE ? " rotate" : "");
    return 0;
}

static int cmd_trigger(int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs("usage: proxkey kms trigger add ID [--rotate] [--out FILE] | trigger remove ID | "
              "trigger list\n",
              argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    cmdenv_t e = {0};
    int r, rc = 1;
    char what[32];
    snprintf(what, sizeof what, "trigger %.16s", sub);
    if (strcmp(sub, "add") == 0) {
        r = parse(&e, what, keys_trig_add, sizeof keys_trig_add / sizeof keys_trig_add[0], argc - 1,
                  argv + 1,
                  "trigger add ID [--rotate] [--out FILE]\n\n"
                  "Makes the device's trigger key K1 (128 bits) and first identity UID1 (16\n"
                  "random bytes), sealed under the KEK (audit: trigger_key, never the key).\n"
                  "The device's state line 'ID 0 K1 UID1' (hex; what proxkey device poll\n"
                  "--state FILE reads) is printed once, or written to --out FILE (0600).\n"
                  "The gts takes the device with: proxkey gts device import --kms-db URI\n"
                  "--kms-kek FILE ID");
        if (r)
            return r == 1 ? 0 : r;
        if (e.npos != 1)
            return usage_err(what, "expected one device ID");
        if (open_env(&e, what))
            return 1;
        rc = trigger_make(&e, what, e.pos[0], pk_conf_flag(&e.conf, "rotate"),
                          pk_conf_get(&e.conf, "out"));
        close_env(&e);
        return rc;
    }
    if (strcmp(sub, "remove") == 0) {
        r = parse(&e, what, keys_common, 3, argc - 1, argv + 1, "trigger remove ID");
        if (r)
            return r == 1 ? 0 : r;
        if (e.npos != 1)
            return usage_err(what, "expected one device ID");
        if (open_env(&e, what))
            return 1;
        rc = pk_kms_trigger_remove(e.kms, e.pos[0], wall());
        close_env(&e);
        if (rc == PK_OK) {
            printf("removed the trigger key of %s\n", e.pos[0]);
            pk_info("trigger_key_removed", "device=%s", e.pos[0]);
            return 0;
        }
        if (rc == PK_ERR_NOTFOUND)
            return fail(what, rc, "%s has no trigger key", e.pos[0]);
        return fail(what, rc, "%s", e.pos[0]);
    }
    if (strcmp(sub, "list") == 0) {
        r = parse(&e, what, keys_dev_list, sizeof keys_dev_list / sizeof keys_dev_list[0], argc - 1,
                  argv + 1, "trigger list [--after ID] [--limit N]");
        if (r)
            return r == 1 ? 0 : r;
        uint64_t lim = 0;
        if (e.npos)
            return usage_err(what, "unexpected argument '%s'", e.pos[0]);
        if (parse_u64(pk_conf_get(&e.conf, "limit"), 1, 1000000, &lim))
            return usage_err(what, "--limit must be 1..1000000");
        if (open_env(&e, what))
            return 1;
        unsigned n = 0;
        rc = pk_kms_trigger_list(e.kms, pk_conf_get(&e.conf, "after"), lim, trig_list_cb, &n);
        close_env(&e);
        if (rc == PK_OK)
            printf("%u trigger device(s)\n", n);
        return rc == PK_OK ? 0 : fail(what, rc, "listing");
    }
    return usage_err("trigger", "unknown subcommand '%s' (add, remove, list)", sub);
}

static int audit_cb(void *ctx, const pk_kms_audit_t *a)
{
    (void)ctx;
    time_t t = (time_t)(a->at_ms / 1000);
    struct tm tm;
    char ts[32] = "?";
    if (gmtime_r(&t, &tm))
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    printf("%" PRIu64 " %s.%03uZ what=%s node=%.*s device=%.*s", a->seqno, ts,
           (unsigned)(a->at_ms % 1000), pk_kms_audit_what_name(a->what), a->node.len,
           (const char *)a->node.b, a->device.len, (const char *)a->device.b);
    /* the record's peer and ksi fields, named for what they hold in this
     * kind of record (docs/kms.md "Audit record") */
    const char *peer = "peer", *num = "ksi";
    switch (a->what) {
    case PK_KMS_A_POOL_KEYS:
    case PK_KMS_A_POOL_CREATE: peer = "pool"; break;
    case PK_KMS_A_GROUP_ADD:
    case PK_KMS_A_GROUP_REMOVE: peer = "group"; break;
    case PK_KMS_A_DOMAIN_ADD: peer = "domain", num = "domain_id"; break;
    case PK_KMS_A_DOMAIN_JOIN:
    case PK_KMS_A_DOMAIN_LEAVE: peer = "domain"; break;
    case PK_KMS_A_MASTER_KEY:
    case PK_KMS_A_MK_CREATE: peer = "domain", num = "mk_id"; break;
    default: break;
    }
    if (a->peer.len)
        printf(" %s=%.*s", peer, a->peer.len, (const char *)a->peer.b);
    if (a->ksi)
        printf(" %s=%" PRIu32, num, a->ksi);
    if (a->count > 1)
        printf(" count=%u", a->count);
    printf("\n");
    return 0;
}

static int cmd_audit(int argc, char **argv)
{
    cmdenv_t e = {0};
    int r = parse(&e, "audit", keys_audit, sizeof keys_audit / sizeof keys_audit[0], argc, argv,
                  "audit [--from N] [--limit N]");
    if (r)
        return r == 1 ? 0 : r;
    uint64_t from = 0, lim = 0;
    if (e.npos)
        return usage_err("audit", "unexpected argument '%s'", e.pos[0]);
    if (parse_u64(pk_conf_get(&e.conf, "from"), 1, UINT64_MAX, &from) ||
        parse_u64(pk_conf_get(&e.conf, "limit"), 1, PK_STORE_SCAN_MAX, &lim))
        return usage_err("audit", "--from must be >= 1 and --limit 1..%d", PK_STORE_SCAN_MAX);
    if (open_env(&e, "audit"))
        return 1;
    int rc = pk_kms_audit_list(e.kms, from, lim, audit_cb, NULL);
    close_env(&e);
    return rc == PK_OK ? 0 : fail("audit", rc, "reading the log");
}

int pk_cmd_kms(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        fprintf(stderr, "proxkey kms: no command given (try 'proxkey kms --help')\n");
        return 2;
    }
    const char *c = argv[1];
    if (is_help(c)) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(c, "init") == 0)
        return cmd_init(argc - 1, argv + 1);
    if (strcmp(c, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(c, "device") == 0)
        return cmd_device(argc - 1, argv + 1);
    if (strcmp(c, "allow") == 0)
        return cmd_pair(argc - 1, argv + 1, 1);
    if (strcmp(c, "deny") == 0)
        return cmd_pair(argc - 1, argv + 1, 0);
    if (strcmp(c, "group") == 0)
        return cmd_group(argc - 1, argv + 1);
    if (strcmp(c, "pool") == 0)
        return cmd_pool(argc - 1, argv + 1);
    if (strcmp(c, "audit") == 0)
        return cmd_audit(argc - 1, argv + 1);
    if (strcmp(c, "domain") == 0)
        return cmd_domain(argc - 1, argv + 1);
    if (strcmp(c, "master") == 0)
        return cmd_master(argc - 1, argv + 1);
    if (strcmp(c, "trigger") == 0)
        return cmd_trigger(argc - 1, argv + 1);
    fprintf(stderr, "proxkey kms: unknown command '%s' (try 'proxkey kms --help')\n", c);
    return 2;
}
