/* `proxkey node ...`: the command line of the serving node. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "conf.h"
#include "core/crypto.h"
#include "core/log.h"
#include "node_srv.h"

static const pk_conf_key_t keys[] = {
    {"id", "this node's id (must be the CN of its certificate)", NULL, 0},
    {"listen-udp", "ADDR:PORT where devices register", "127.0.0.1:7300", 0},
    {"listen-tls", "ADDR:PORT where other nodes connect (unset: none)", NULL, 0},
    {"kms", "ADDR:PORT of the kms", NULL, 0},
    {"kms-cn", "the CN the kms's certificate must carry", "kms", 0},
    {"ca", "CA certificate (PEM) that signs kms, node certificates", NULL, 0},
    {"cert", "this node's certificate (PEM)", NULL, 0},
    {"key", "this node's private key (PEM)", NULL, 0},
    {"peers", "file of peer nodes: one 'ID ADDR:PORT' (or ID=ADDR:PORT) per line", NULL, 0},
    {"db", "accepted for uniform configs: the node keeps no durable state", NULL, 0},
    {"log-level", "error|warn|info|debug", "info", 0},
    {"max-devices", "device contexts kept (1..65535)", "16384", 0},
    {"max-half", "half-open registrations kept", "2048", 0},
    {"max-kms", "kms requests in flight", "16384", 0},
    {"reg-burst", "REQUESTs at once per device address", "8", 0},
    {"reg-rate", "REQUESTs per second per device address", "4", 0},
    {"ip-burst", "unauthenticated datagrams at once per source IP", "400", 0},
    {"ip-rate", "unauthenticated datagrams per second per source IP", "200", 0},
    {"kms-timeout-ms", "kms answer timeout before reconnecting", "5000", 0},
    {"stats-ms", "interval of the counters log line (0: only on SIGHUP and exit)", "10000", 0},
    {"mk-check-ms", "how often to ask the kms for newer master keys (0: never)", "60000", 0},
    {"mk-push-per-tick", "MK_UPDATE pushes per timer tick", "8", 0},
    {"max-domains", "master-key domains tracked for pushes (1..4096)", "256", 0},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: proxkey node serve --id ID --kms ADDR --ca FILE --cert FILE --key FILE\n"
               "                          [--listen-udp ADDR] [--listen-tls ADDR]\n"
               "                          [--peer ID=ADDR ...] [--peers FILE] [options]\n"
               "       proxkey node serve --help\n\n"
               "The serving node: devices register with it over UDP (mutual authentication\n"
               "through the kms, which never gives it a device's key); it hands them their\n"
               "root keys (option 1) or pool (option 2), authorizes option-2 links and\n"
               "indicates the KSI to both devices, through the peer's node (mutual TLS).\n"
               "See docs/node.md.\n");
}

/* ID=ADDR or "ID ADDR" into p. */
static int parse_peer(const char *s, node_peer_cfg_t *p)
{
    const char *sep = strchr(s, '=');
    if (!sep)
        sep = strpbrk(s, " \t");
    if (!sep || sep == s)
        return -1;
    size_t il = (size_t)(sep - s);
    const char *a = sep + 1;
    while (*a == ' ' || *a == '\t')
        a++;
    size_t al = strcspn(a, " \t\r\n");
    if (il > PK_REG_ID_MAX || al == 0 || al >= sizeof p->addr ||
        a[al + strspn(a + al, " \t\r\n")] != '\0')
        return -1;
    memcpy(p->id, s, il);
    p->id[il] = '\0';
    memcpy(p->addr, a, al);
    p->addr[al] = '\0';
    return 0;
}

static int load_peers(const char *path, node_srv_opts_t *o)
{
    FILE *f = fopen(path, "r");
    char line[256];
    unsigned ln = 0;
    if (!f) {
        fprintf(stderr, "proxkey node serve: --peers %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        ln++;
        char *p = line + strspn(line, " \t");
        p[strcspn(p, "\r\n")] = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        if (o->npeers >= NODE_MAX_PEERS || parse_peer(p, &o->peers[o->npeers]) != 0) {
            fprintf(stderr, "proxkey node serve: %s:%u: expected 'ID ADDR:PORT'\n", path, ln);
            fclose(f);
            return -1;
        }
        o->npeers++;
    }
    fclose(f);
    return 0;
}

static int num(const pk_conf_t *c, const char *name, unsigned long long lo, unsigned long long hi,
               unsigned long long *v)
{
    if (pk_cli_parse_u64(pk_conf_get(c, name), lo, hi, v) != 0) {
        pk_cli_usage_error("node serve", "--%s wants %llu..%llu", name, lo, hi);
        return -1;
    }
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    static pk_conf_t c;
    static node_srv_opts_t o;
    char *rest[64], *pos[4];
    int nrest = 0, npos = 0;
    memset(&o, 0, sizeof o);
    /* --peer may repeat: taken out before the one-value-per-key parser */
    for (int i = 0; i < argc; i++) {
        if (i > 0 && pk_cli_is_help(argv[i])) {
            usage(stdout);
            pk_conf_init(&c, keys, NKEYS);
            printf("\n");
            pk_conf_help(&c);
            printf("  --peer ID=ADDR           a peer node (repeatable; with --peers FILE too)\n");
            return 0;
        }
        if (strcmp(argv[i], "--peer") == 0 || strncmp(argv[i], "--peer=", 7) == 0) {
            const char *v = argv[i][6] == '=' ? argv[i] + 7 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || o.npeers >= NODE_MAX_PEERS || parse_peer(v, &o.peers[o.npeers]) != 0)
                return pk_cli_usage_error("node serve", "--peer wants ID=ADDR:PORT");
            o.npeers++;
            continue;
        }
        if (nrest >= 64)
            return pk_cli_usage_error("node serve", "too many arguments");
        rest[nrest++] = argv[i];
    }
    pk_conf_init(&c, keys, NKEYS);
    if (pk_conf_args(&c, nrest, rest, pos, 4, &npos) != 0)
        return pk_cli_usage_error("node serve", "%s", c.err);
    if (npos > 0)
        return pk_cli_usage_error("node serve", "unexpected argument '%s'", pos[0]);
    static const char *required[] = {"id", "kms", "ca", "cert", "key"};
    for (unsigned i = 0; i < 5; i++)
        if (!pk_conf_get(&c, required[i]))
            return pk_cli_usage_error("node serve", "--%s is required", required[i]);
    int lvl = pk_log_level_parse(pk_conf_get(&c, "log-level"));
    if (lvl < 0)
        return pk_cli_usage_error("node serve", "--log-level wants error|warn|info|debug");
    unsigned long long v;
    if (num(&c, "max-devices", 1, 65535, &v))
        return 2;
    o.max_devices = (size_t)v;
    if (num(&c, "max-half", 1, 1 << 20, &v))
        return 2;
    o.max_half = (size_t)v;
    if (num(&c, "max-kms", 1, 1 << 22, &v))
        return 2;
    o.max_kms = (size_t)v;
    if (num(&c, "reg-burst", 1, 1u << 30, &v))
        return 2;
    o.reg_burst = (uint32_t)v;
    if (num(&c, "reg-rate", 1, 1u << 30, &v))
        return 2;
    o.reg_rate = (uint32_t)v;
    if (num(&c, "ip-burst", 1, 1u << 30, &v))
        return 2;
    o.ip_burst = (uint32_t)v;
    if (num(&c, "ip-rate", 1, 1u << 30, &v))
        return 2;
    o.ip_rate = (uint32_t)v;
    if (num(&c, "kms-timeout-ms", 100, 3600000, &v))
        return 2;
    o.kms_timeout_ms = v;
    if (num(&c, "stats-ms", 0, 86400000, &v))
        return 2;
    o.stats_ms = v;
    if (num(&c, "mk-check-ms", 0, 86400000, &v))
        return 2;
    o.mk_check_ms = v ? v : UINT64_MAX;
    if (num(&c, "mk-push-per-tick", 1, 4096, &v))
        return 2;
    o.mk_push_per_tick = (unsigned)v;
    if (num(&c, "max-domains", 1, 4096, &v))
        return 2;
    o.max_domains = (size_t)v;
    o.id = pk_conf_get(&c, "id");
    o.listen_udp = pk_conf_get(&c, "listen-udp");
    o.listen_tls = pk_conf_get(&c, "listen-tls");
    o.kms = pk_conf_get(&c, "kms");
    o.kms_cn = pk_conf_get(&c, "kms-cn");
    o.ca = pk_conf_get(&c, "ca");
    o.cert = pk_conf_get(&c, "cert");
    o.key = pk_conf_get(&c, "key");
    if (pk_conf_get(&c, "peers") && load_peers(pk_conf_get(&c, "peers"), &o) != 0)
        return 2;

    pk_log_set_role("node");
    pk_log_set_level(lvl);
    if (pk_crypto_init() != PK_OK)
        return 1;
    node_srv_t *s = NULL;
    if (node_srv_new(&s, &o) != PK_OK)
        return 1;
    pk_info("node_listening", "id=%s udp_port=%u tls_port=%u kms=%s peers=%u", o.id,
            node_srv_udp_port(s), node_srv_tls_port(s), o.kms, o.npeers);
    int rc = node_srv_run(s);
    node_srv_log_stats(s);
    node_srv_free(s);
    pk_info("node_stopped", "rc=%s", pk_strerror(rc));
    return rc == PK_OK ? 0 : 1;
}

int pk_cmd_node(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        fprintf(stderr, "proxkey node: no command given (try 'proxkey node --help')\n");
        return 2;
    }
    if (pk_cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    fprintf(stderr, "proxkey node: unknown command '%s' (try 'proxkey node --help')\n", argv[1]);
    return 2;
}
