/*
 * proxkey demo root-keys: the first embodiment on loopback, end to end.
 *
 * In a temporary directory: a development CA, one kms (SQLite), two nodes and
 * four devices, every one a child process of this very executable
 * (/proc/self/exe) running the ordinary CLI:
 *
 *   dev-a1, dev-a2 register with node-1; dev-b1, dev-b2 with node-2.
 *   option 1 (root key per pair): dev-a1 <-> dev-b1 allowed, a message each way
 *   option 2 (pool p, KSI by the node): dev-a2 <-> dev-b2 allowed, each way
 *   refused: dev-a1 -> dev-b2 (no root key) and dev-a2 -> dev-b1 (the kms
 *   refuses the allocation, the node answers LINK_REJ); neither device ever
 *   holds a key or an indication for the other, and the audit log has none.
 *
 * The trace: the daemons run with --log-level debug and the devices with
 * PROXKEY_TRACE=1, so every process logs one `event=msg from= to= type= len=`
 * line per message it sends, before sending it. All of them write to one
 * O_APPEND file, one write() per line, so the file's order is the causal
 * order; the demo reads it after each step and prints "who -> whom  MESSAGE",
 * naming addresses it learned (node UDP ports, the devices' source addresses
 * from their own lines, the listeners' ports it chose).
 *
 * Every child is stopped on exit, also on failure or SIGINT/SIGTERM. Exit
 * status 0 when every step and check passed, 1 otherwise (the directory is
 * then kept and named for inspection).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "demo_proc.h"
#include "core/crypto.h"
#include "proto/kms/messages.h"
#include "proto/link/messages.h"
#include "proto/reg/messages.h"

#define MAX_NAMES   48
#define RUN_MS      20000 /* any one CLI command */
#define START_MS    10000 /* a daemon to come up */
#define LISTEN_SECS "10"

typedef struct name_map {
    char addr[64];
    char name[32];
} name_map_t;

#define ARGV PK_DEMO_ARGV

static pk_demo_t D = {.err_fd = -1, .trace = 1, .run_ms = RUN_MS};
static int g_trace_fd = -1;
static FILE *g_trace_rd;
static name_map_t g_names[MAX_NAMES];
static unsigned g_nnames, g_msgs;
static int g_failed;

/* ---- files ---- */

/* Finds a line holding needle in the trace file (from its start) into line;
 * waits up to ms. 0 or -1. */
static int wait_trace(const char *needle, char *line, size_t cap, long ms)
{
    char path[128];
    snprintf(path, sizeof path, "%s/trace.log", D.dir);
    for (long t = 0; t <= ms; t += 20) {
        FILE *f = fopen(path, "r");
        char l[1024];
        int found = 0;
        while (f && !found && fgets(l, sizeof l, f))
            if (strstr(l, needle)) {
                snprintf(line, cap, "%s", l);
                found = 1;
            }
        if (f)
            fclose(f);
        if (found)
            return 0;
        pk_demo_sleep_ms(20);
    }
    return -1;
}

/* ---- the trace ---- */

static void name_add(const char *addr, const char *name)
{
    char lo[64];
    if (strncmp(addr, "0.0.0.0:", 8) == 0) { /* a wildcard socket: reached on loopback */
        snprintf(lo, sizeof lo, "127.0.0.1:%s", addr + 8);
        addr = lo;
    }
    for (unsigned i = 0; i < g_nnames; i++)
        if (strcmp(g_names[i].addr, addr) == 0) {
            snprintf(g_names[i].name, sizeof g_names[i].name, "%s", name);
            return;
        }
    if (g_nnames < MAX_NAMES) {
        snprintf(g_names[g_nnames].addr, sizeof g_names[0].addr, "%s", addr);
        snprintf(g_names[g_nnames].name, sizeof g_names[0].name, "%s", name);
        g_nnames++;
    }
}

static const char *name_of(const char *addr)
{
    for (unsigned i = 0; i < g_nnames; i++)
        if (strcmp(g_names[i].addr, addr) == 0)
            return g_names[i].name;
    return addr;
}

static const char *msg_name(unsigned t)
{
    switch (t) {
    case PK_REG_T_REQUEST: return "REQUEST";
    case PK_REG_T_CHALLENGE: return "CHALLENGE";
    case PK_REG_T_RESPONSE: return "RESPONSE";
    case PK_REG_T_ACCEPT: return "ACCEPT (keys)";
    case PK_REG_T_LINK_REQ: return "LINK_REQ";
    case PK_REG_T_LINK_IND: return "LINK_IND (KSI, param)";
    case PK_REG_T_LINK_REJ: return "LINK_REJ";
    case PK_REG_T_KEYS_REQ: return "KEYS_REQ (cursor)";
    case PK_REG_T_KEYS: return "KEYS (a page of keys)";
    case PK_LINK_T_DCR: return "DIRECT_COMM_REQUEST";
    case PK_LINK_T_SMC: return "SECURITY_MODE_COMMAND";
    case PK_LINK_T_SMCOMPLETE: return "SECURITY_MODE_COMPLETE";
    case PK_LINK_T_DATA: return "DATA";
    case PK_REG_T_KMS_VEC_REQ: return "KMS_VEC_REQ";
    case PK_REG_T_KMS_VEC_RESP: return "KMS_VEC_RESP";
    case PK_REG_T_KMS_KEYS_REQ: return "KMS_KEYS_REQ";
    case PK_REG_T_KMS_KEYS_RESP: return "KMS_KEYS_RESP";
    case PK_REG_T_KMS_ALLOC_REQ: return "KMS_ALLOC_REQ";
    case PK_REG_T_KMS_ALLOC_RESP: return "KMS_ALLOC_RESP (KSI, param)";
    case PK_KMS_T_DIR_REQ: return "KMS_DIR_REQ";
    case PK_KMS_T_DIR_RESP: return "KMS_DIR_RESP";
    case PK_KMS_T_ERR: return "KMS_ERR (refused)";
    case PK_REG_T_NODE_LINK_IND: return "NODE_LINK_IND";
    default: return "?";
    }
}

/* Copies the value of " key=" in line into v (up to a space). 0 or -1. */
static int field(const char *line, const char *key, char *v, size_t cap)
{
    char k[24];
    snprintf(k, sizeof k, " %s=", key);
    const char *p = strstr(line, k);
    if (!p)
        return -1;
    p += strlen(k);
    size_t n = strcspn(p, " \n");
    if (n >= cap)
        n = cap - 1;
    memcpy(v, p, n);
    v[n] = '\0';
    return 0;
}

static void show_line(const char *l)
{
    char from[80], to[80], type[8], len[16], src[80], ini[80], tgt[80];
    if (strstr(l, " event=msg ")) {
        if (field(l, "from", from, sizeof from) || field(l, "to", to, sizeof to) ||
            field(l, "type", type, sizeof type) || field(l, "len", len, sizeof len))
            return;
        if (field(l, "src", src, sizeof src) == 0)
            name_add(src, from);
        g_msgs++;
        printf("  %-8s -> %-8s %-28s %4s B\n", from, name_of(to),
               msg_name((unsigned)strtoul(type, NULL, 16)), len);
    } else if (strstr(l, " event=node_link_indicated ") ||
               strstr(l, " event=node_link_rejected ")) {
        if (field(l, "initiator", ini, sizeof ini) || field(l, "target", tgt, sizeof tgt))
            return;
        int ok = strstr(l, "indicated") != NULL;
        field(l, ok ? "ksi" : "reason", src, sizeof src);
        printf("      (node: link %s -> %s %s, %s %s)\n", ini, tgt, ok ? "authorized" : "REJECTED",
               ok ? "KSI" : "reason", src);
    } else if (strstr(l, " level=error ")) {
        printf("      ! %s", l);
    } else if (!strstr(l, " level=") && l[0]) {
        printf("      | %s", l); /* a device's own message */
    }
}

/* Prints what the trace file gained since the last call. */
static void show_trace(void)
{
    char l[1024];
    if (!g_trace_rd)
        return;
    for (int guard = 0; guard < 100000; guard++) {
        long at = ftell(g_trace_rd);
        if (!fgets(l, sizeof l, g_trace_rd))
            break;
        if (!strchr(l, '\n')) { /* being written: read it next time */
            fseek(g_trace_rd, at, SEEK_SET);
            break;
        }
        show_line(l);
    }
    clearerr(g_trace_rd);
    fflush(stdout);
}

/* ---- steps ---- */

static int check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check(int ok, const char *fmt, ...)
{
    va_list ap;
    show_trace();
    printf(ok ? "  ok    " : "  FAIL  ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (!ok)
        g_failed = 1;
    return ok;
}

static void step(const char *what)
{
    show_trace();
    printf("\n-- %s\n", what);
    fflush(stdout);
}

typedef struct dev {
    const char *id, *node;
    char key[80];
} dev_t_;

static dev_t_ g_dev[4] = {
    {"dev-a1", "node-1", ""},
    {"dev-a2", "node-1", ""},
    {"dev-b1", "node-2", ""},
    {"dev-b2", "node-2", ""},
};

static unsigned g_udp[2], g_tls[2], g_kms_port;

static int add_device(dev_t_ *d, int pool)
{
    char out[512];
    int rc = pool ? pk_demo_run(&D, "out.txt",
                                ARGV("kms", "device", "add", (char *)d->id, "--mode", "pool",
                                     "--pool", "p", "--log-level", "warn"))
                  : pk_demo_run(&D, "out.txt",
                                ARGV("kms", "device", "add", (char *)d->id, "--log-level", "warn"));
    if (rc != 0 || pk_demo_read_file(&D, "out.txt", out, sizeof out) != 0)
        return -1;
    const char *k = strstr(out, " key ");
    if (!k || strlen(k + 5) < 64)
        return -1;
    memcpy(d->key, k + 5, 64);
    d->key[64] = '\0';
    pk_wipe(out, sizeof out);
    printf("  kms: device %s (mode %s)\n", d->id, pool ? "pool, pool p" : "pairs");
    return 0;
}

/* Starts node i (node-1 or node-2) with the other as its peer; retries with
 * another TLS port if the chosen one was taken meanwhile. */
static int start_node(int i)
{
    char id[8], cert[32], key[32], peer[64], tls[32], kms[32], line[1024], needle[64], v[16];
    snprintf(id, sizeof id, "node-%d", i + 1);
    snprintf(cert, sizeof cert, "ca/%s.crt", id);
    snprintf(key, sizeof key, "ca/%s.key", id);
    snprintf(kms, sizeof kms, "127.0.0.1:%u", g_kms_port);
    for (int attempt = 0; attempt < 3; attempt++) {
        snprintf(peer, sizeof peer, "node-%d=127.0.0.1:%u", 2 - i, g_tls[1 - i]);
        snprintf(tls, sizeof tls, "127.0.0.1:%u", g_tls[i]);
        pid_t p = pk_demo_start(&D, NULL,
                                ARGV("node", "serve", "--id", id, "--listen-udp", "127.0.0.1:0",
                                     "--listen-tls", tls, "--kms", kms, "--ca", "ca/ca.crt",
                                     "--cert", cert, "--key", key, "--peer", peer, "--stats-ms",
                                     "0", "--log-level", "debug"));
        if (p < 0)
            return -1;
        snprintf(needle, sizeof needle, "event=node_listening id=%s ", id);
        for (long t = 0; t < START_MS; t += 50) {
            if (wait_trace(needle, line, sizeof line, 0) == 0 &&
                field(line, "udp_port", v, sizeof v) == 0) {
                g_udp[i] = (unsigned)strtoul(v, NULL, 10);
                char a[32];
                snprintf(a, sizeof a, "127.0.0.1:%u", g_udp[i]);
                name_add(a, id);
                printf("  %s: udp %s (devices), tls %s (nodes), kms %s\n", id, a, tls, kms);
                return 0;
            }
            if (pk_demo_exited(p)) /* exited: port taken? */
                break;
            pk_demo_sleep_ms(50);
        }
        g_tls[i] = pk_demo_free_port(SOCK_STREAM);
    }
    return -1;
}

static int keys_of(const char *dev, char *out, size_t cap)
{
    return pk_demo_run(&D, "keys.txt", ARGV("device", "keys", "--dir", (char *)dev)) == 0
               ? pk_demo_read_file(&D, "keys.txt", out, cap)
               : -1;
}

/* One message from a to b over a direct link; b listens (with --node for
 * option 2: it learns the KSI from its node). */
static void link_once(const char *a, const char *b, int option2)
{
    char to[32], text[128], out[2048], want[160], needle[64];
    unsigned port = pk_demo_free_port(SOCK_DGRAM);
    snprintf(to, sizeof to, "127.0.0.1:%u", port);
    snprintf(text, sizeof text, "hello %s, this is %s (option %d)", b, a, option2 ? 2 : 1);
    name_add(to, b);
    pid_t l = option2 ? pk_demo_start(&D, "listen.txt",
                                      ARGV("device", "listen", "--dir", (char *)b, "--listen", to,
                                           "--count", "1", "--timeout", LISTEN_SECS, "--node"))
                      : pk_demo_start(&D, "listen.txt",
                                      ARGV("device", "listen", "--dir", (char *)b, "--listen", to,
                                           "--count", "1", "--timeout", LISTEN_SECS));
    snprintf(needle, sizeof needle, "listening on %s ", to);
    char line[1024];
    if (l < 0 ||
        !check(wait_trace(needle, line, sizeof line, START_MS) == 0, "%s listens on %s", b, to)) {
        if (l > 0)
            pk_demo_wait(l, 0);
        return;
    }
    int rc = pk_demo_run(&D, "send.txt",
                         ARGV("device", "send", (char *)b, text, "--dir", (char *)a, "--to", to));
    int lrc = pk_demo_wait(l, 12000);
    snprintf(want, sizeof want, "from=%s text=%s\n", a, text);
    show_trace();
    if (rc == 0 && pk_demo_read_file(&D, "send.txt", out, sizeof out) == 0)
        printf("      | %s", out);
    if (pk_demo_read_file(&D, "listen.txt", out, sizeof out) != 0)
        out[0] = '\0';
    check(rc == 0 && lrc == 0 && strstr(out, want) != NULL, "%s -> %s: \"%s\" delivered", a, b,
          text);
}

static int refused(const char *a, const char *b, const char *why)
{
    char to[32];
    snprintf(to, sizeof to, "127.0.0.1:%u", pk_demo_free_port(SOCK_DGRAM));
    int rc = pk_demo_run(&D, "send.txt",
                         ARGV("device", "send", (char *)b, "not allowed", "--dir", (char *)a,
                              "--to", to, "--tries", "2", "--rto-ms", "200"));
    char line[1024];
    int said = wait_trace(why, line, sizeof line, 1000) == 0;
    return check(rc == 1 && said, "%s -> %s refused (%s)", a, b, why);
}

static int run_demo(void)
{
    char out[4096], line[1024];

    step("a development CA: certificates for the kms and both nodes (CN = identity)");
    if (!check(pk_demo_run(&D, NULL, ARGV("ca", "init", "ca")) == 0 &&
                   pk_demo_run(&D, NULL, ARGV("ca", "issue", "ca", "kms")) == 0 &&
                   pk_demo_run(&D, NULL, ARGV("ca", "issue", "ca", "node-1")) == 0 &&
                   pk_demo_run(&D, NULL, ARGV("ca", "issue", "ca", "node-2")) == 0,
               "ca init; ca issue kms, node-1, node-2"))
        return -1;

    step("the kms: store (SQLite), devices, allowed pairs, a pool");
    if (!check(pk_demo_run(&D, NULL, ARGV("kms", "init", "--log-level", "warn")) == 0 &&
                   pk_demo_run(&D, NULL,
                               ARGV("kms", "pool", "create", "p", "64", "--log-level", "warn")) ==
                       0,
               "kms init; pool p with 64 root keys"))
        return -1;
    if (!check(add_device(&g_dev[0], 0) == 0 && add_device(&g_dev[2], 0) == 0 &&
                   add_device(&g_dev[1], 1) == 0 && add_device(&g_dev[3], 1) == 0,
               "four devices, each with its own long-term key K"))
        return -1;
    if (!check(pk_demo_run(&D, NULL,
                           ARGV("kms", "allow", "dev-a1", "dev-b1", "--log-level", "warn")) == 0 &&
                   pk_demo_run(&D, NULL,
                               ARGV("kms", "allow", "dev-a2", "dev-b2", "--log-level", "warn")) ==
                       0,
               "allowed: dev-a1 <-> dev-b1 (option 1), dev-a2 <-> dev-b2 (option 2); "
               "not allowed: every other pair"))
        return -1;

    step("daemons: kms and two nodes on 127.0.0.1 (mutual TLS 1.3 between them)");
    if (pk_demo_start(&D, NULL,
                      ARGV("kms", "serve", "--listen", "127.0.0.1:0", "--port-file", "kms.port",
                           "--ca", "ca/ca.crt", "--cert", "ca/kms.crt", "--key", "ca/kms.key",
                           "--log-level", "debug")) < 0)
        return -1;
    for (long t = 0; t < START_MS && !g_kms_port; t += 50) {
        if (pk_demo_read_file(&D, "kms.port", out, sizeof out) == 0)
            g_kms_port = (unsigned)strtoul(out, NULL, 10);
        if (!g_kms_port)
            pk_demo_sleep_ms(50);
    }
    if (!check(g_kms_port != 0, "kms listening on 127.0.0.1:%u", g_kms_port))
        return -1;
    g_tls[0] = pk_demo_free_port(SOCK_STREAM);
    g_tls[1] = pk_demo_free_port(SOCK_STREAM);
    if (!check(start_node(0) == 0 && start_node(1) == 0, "node-1 and node-2 up"))
        return -1;

    step("registration: each device with its node (the node asks the kms for a vector and keys)");
    for (int i = 0; i < 4; i++) {
        dev_t_ *d = &g_dev[i];
        char node[32];
        snprintf(node, sizeof node, "127.0.0.1:%u", g_udp[d->node[5] - '1']);
        int rc = pk_demo_run(&D, NULL,
                             ARGV("device", "init", "--dir", (char *)d->id, "--id", (char *)d->id,
                                  "--key", d->key, "--node", node, "--node-id", (char *)d->node));
        pk_wipe(d->key, sizeof d->key);
        if (rc == 0)
            rc = pk_demo_run(&D, "out.txt", ARGV("device", "register", "--dir", (char *)d->id));
        if (rc == 0 && pk_demo_read_file(&D, "out.txt", out, sizeof out) == 0) {
            show_trace();
            printf("      | %s", out);
        }
        if (!check(rc == 0, "%s registered with %s", d->id, d->node))
            return -1;
    }
    check(keys_of("dev-a1", out, sizeof out) == 0 && strstr(out, "peer=dev-b1 mode=pairs"),
          "dev-a1 holds the root key of (dev-a1, dev-b1)");
    {
        char ka[4096];
        const char *p = strstr(out, "ksi=");
        snprintf(ka, sizeof ka, "%.14s", p ? p : "none");
        check(keys_of("dev-b1", out, sizeof out) == 0 && p && strstr(out, ka),
              "dev-b1 (other node) holds the same KSI %s for the pair", ka + 4);
    }

    step("option 1: dev-a1 (node-1) -> dev-b1 (node-2), direct, with the pair's root key");
    link_once("dev-a1", "dev-b1", 0);
    step("option 1: dev-b1 (node-2) -> dev-a1 (node-1)");
    link_once("dev-b1", "dev-a1", 0);
    step("option 2: dev-a2 (node-1) -> dev-b2 (node-2): node-1 allocates a pool KSI, "
         "node-2 indicates it");
    link_once("dev-a2", "dev-b2", 1);
    step("option 2: dev-b2 (node-2) -> dev-a2 (node-1)");
    link_once("dev-b2", "dev-a2", 1);

    step("not allowed: dev-a1 -> dev-b2 (option 1) and dev-a2 -> dev-b1 (option 2)");
    refused("dev-a1", "dev-b2", "unknown peer 'dev-b2'");
    refused("dev-a2", "dev-b1", "refused a link to dev-b1: not allowed");
    check(keys_of("dev-a1", out, sizeof out) == 0 && !strstr(out, "peer=dev-b2"),
          "dev-a1 has no key for dev-b2");
    check(keys_of("dev-a2", out, sizeof out) == 0 && !strstr(out, "peer=dev-b1"),
          "dev-a2 has no indication for dev-b1");
    check(keys_of("dev-b1", out, sizeof out) == 0 && !strstr(out, "peer=dev-a2") &&
              !strstr(out, "peer=dev-b2"),
          "dev-b1 has no key or indication for dev-a2 or dev-b2");
    {
        static char audit[65536];
        int rc = pk_demo_run(&D, "audit.txt",
                             ARGV("kms", "audit", "--limit", "1000", "--log-level", "warn"));
        int ok = rc == 0 && pk_demo_read_file(&D, "audit.txt", audit, sizeof audit) == 0;
        int allocs = 0, bad = 0;
        for (char *l = audit, *nl; ok && *l; l = nl + 1) {
            nl = strchr(l, '\n');
            if (!nl)
                break;
            *nl = '\0';
            if (strstr(l, "what=pool_alloc"))
                allocs++;
            if (!strstr(l, "node=admin") &&
                ((strstr(l, "device=dev-a1") && strstr(l, "peer=dev-b2")) ||
                 (strstr(l, "device=dev-b2") && strstr(l, "peer=dev-a1")) ||
                 (strstr(l, "device=dev-a2") && strstr(l, "peer=dev-b1")) ||
                 (strstr(l, "device=dev-b1") && strstr(l, "peer=dev-a2"))))
                bad++;
        }
        check(ok && bad == 0 && allocs >= 1,
              "kms audit log: %d pool allocations, no issuance to a disallowed pair", allocs);
    }
    (void)line;
    show_trace();
    return 0;
}

int pk_demo_root_keys(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char path[128];
    if (pk_demo_setup(&D, "/tmp/pk-demo.XXXXXX") != 0)
        return 1;
    snprintf(path, sizeof path, "%s/trace.log", D.dir);
    g_trace_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    g_trace_rd = g_trace_fd >= 0 ? fopen(path, "r") : NULL;
    D.err_fd = g_trace_fd; /* every child's stderr: the shared trace */
    if (!g_trace_rd) {
        fprintf(stderr, "proxkey demo root-keys: %s: %s\n", path, strerror(errno));
        g_failed = 1;
        goto out;
    }
    g_nnames = g_msgs = 0;
    g_kms_port = 0;
    g_failed = 0;
    fflush(stdout); /* the children must not inherit buffered output */
    printf("root-keys: one kms, node-1 (dev-a1, dev-a2), node-2 (dev-b1, dev-b2) in %s\n", D.dir);
    if (run_demo() != 0)
        g_failed = 1;
    pk_demo_stop_all();
    show_trace();
out:
    if (g_trace_rd)
        fclose(g_trace_rd);
    g_trace_rd = NULL;
    if (g_trace_fd >= 0)
        close(g_trace_fd);
    g_trace_fd = -1;
    if (g_failed) {
        printf("\nroot-keys: FAILED (%u messages traced; logs kept in %s)\n", g_msgs, D.dir);
        return 1;
    }
    pk_demo_finish(&D, 0);
    printf("\nroot-keys: ok (%u messages traced)\n", g_msgs);
    return 0;
}
