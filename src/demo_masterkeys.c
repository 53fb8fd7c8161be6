/*
 * `proxkey demo master-keys`: master keys and individual keys (Toshiba US
 * 9,294,269; DESIGN 3.6; docs/protocol.md "Master keys from the kms to the clients"), end to end
 * with real processes on 127.0.0.1: a kms and a node daemon (mutual TLS between them), three
 * devices in one domain that register (the ACCEPT carries the domain's master
 * key), three `proxkey device mk run` clients that derive pairwise individual
 * keys, a master-key rotation at the kms and its FIG. 8 cascade, with one
 * client stopped (SIGSTOP: partitioned) during the rotation: its partners keep
 * their old key with it until that key expires, then drop it; once it is back
 * and has refreshed, everybody re-keys. Every step runs the same `proxkey`
 * binary and code paths an operator would; the trace is their output.
 * Exit 0 when every check held, 1 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "demo_proc.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define RUN_MS    20000
#define START_MS  8000
#define IK_LIFE_S "15"

#define ARGV PK_DEMO_ARGV

static pk_demo_t D = {.err_fd = -1, .run_ms = RUN_MS};
static int g_failed;
static unsigned g_kms_port, g_node_port, g_port[3];
static const char *const g_id[3] = {"dev-a", "dev-b", "dev-c"};
static long g_seen[3]; /* bytes of each client's output already shown */

static int check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check(int ok, const char *fmt, ...)
{
    va_list ap;
    printf("  [%s] ", ok ? "ok" : "FAILED");
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
    printf("\n== %s\n", what);
    fflush(stdout);
}

/* Prints the new lines of client i's output (its trace). */
static void show_client(int i)
{
    static char buf[1 << 16];
    char name[32];
    snprintf(name, sizeof name, "run-%s.txt", g_id[i]);
    if (pk_demo_read_file(&D, name, buf, sizeof buf) != 0)
        return;
    size_t len = strlen(buf);
    if ((size_t)g_seen[i] >= len)
        return;
    static char last[3][512];
    static unsigned rep[3];
    char *p = buf + g_seen[i], *nl;
    while ((nl = strchr(p, '\n'))) {
        *nl = '\0';
        const char *l = strncmp(p, "mk client=", 10) == 0 ? p + 10 : p;
        /* retries repeat the same line: show it once, then how often */
        if (strncmp(last[i], l, sizeof last[i] - 1) == 0) {
            rep[i]++;
        } else {
            if (rep[i])
                printf("    | %.5s ... the line above %u more time%s\n", last[i], rep[i],
                       rep[i] > 1 ? "s" : "");
            rep[i] = 0;
            printf("    | %s\n", l);
            snprintf(last[i], sizeof last[i], "%s", l);
        }
        p = nl + 1;
    }
    g_seen[i] = (long)(p - buf);
    fflush(stdout);
}

static void show_all(void)
{
    for (int i = 0; i < 3; i++)
        show_client(i);
}

/* Counts lines in client i's output holding every needle (NULL-terminated). */
static int count_in(int i, const char *a, const char *b)
{
    static char buf[1 << 16];
    char name[32];
    int n = 0;
    snprintf(name, sizeof name, "run-%s.txt", g_id[i]);
    if (pk_demo_read_file(&D, name, buf, sizeof buf) != 0)
        return 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, a) && (!b || strstr(line, b)))
            n++;
    return n;
}

/* Waits until client i printed a line with a (and b); shows traces meanwhile. */
static int wait_for(int i, const char *a, const char *b, int want, long ms)
{
    for (long t = 0; t <= ms; t += 100) {
        if (count_in(i, a, b) >= want)
            return 1;
        show_all();
        pk_demo_sleep_ms(100);
    }
    return 0;
}

/* `device keys` of client i into buf (masked unless reveal). */
static int keys_of(int i, int reveal, char *buf, size_t cap)
{
    char dir[16];
    snprintf(dir, sizeof dir, "%s", g_id[i]);
    int rc = reveal ? pk_demo_run(&D, "keys.txt",
                                  ARGV("device", "mk", "show", "--dir", dir, "--show-secrets"))
                    : pk_demo_run(&D, "keys.txt", ARGV("device", "keys", "--dir", dir));
    return rc == 0 ? pk_demo_read_file(&D, "keys.txt", buf, cap) : -1;
}

static void print_indented(const char *s)
{
    char tmp[8192];
    snprintf(tmp, sizeof tmp, "%s", s);
    for (char *l = strtok(tmp, "\n"); l; l = strtok(NULL, "\n"))
        printf("    %s\n", l);
}

/* The individual key of client i with partner p under mk_id: "key=HEX" value
 * (revealed; kept in memory only) into out. */
static int ik_of(int i, const char *partner, const char *mk, char *out, size_t cap)
{
    char buf[8192], want_p[80], want_m[32];
    if (keys_of(i, 1, buf, sizeof buf) != 0)
        return -1;
    snprintf(want_p, sizeof want_p, " partner=%s ", partner);
    snprintf(want_m, sizeof want_m, " mk_id=%s ", mk);
    int found = -1;
    for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
        if (strncmp(l, "individual ", 11) || !strstr(l, want_p) || !strstr(l, want_m) ||
            strstr(l, "superseded"))
            continue;
        const char *k = strstr(l, " key=");
        if (k && sscanf(k + 5, "%63s", out) == 1 && cap > 64)
            found = 0;
    }
    memset(buf, 0, sizeof buf);
    return found;
}

static int has_partner(int i, const char *partner, const char *mk)
{
    char buf[8192], want_p[80], want_m[32];
    if (keys_of(i, 0, buf, sizeof buf) != 0)
        return 0;
    snprintf(want_p, sizeof want_p, " partner=%s ", partner);
    snprintf(want_m, sizeof want_m, " mk_id=%s ", mk ? mk : "");
    for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n"))
        if (strncmp(l, "individual ", 11) == 0 && strstr(l, want_p) && (!mk || strstr(l, want_m)))
            return 1;
    return 0;
}

static int same_key(int i, int j, const char *mk)
{
    char a[80] = "", b[80] = "";
    int ok = ik_of(i, g_id[j], mk, a, sizeof a) == 0 && ik_of(j, g_id[i], mk, b, sizeof b) == 0 &&
             strcmp(a, b) == 0;
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    return ok;
}

static pid_t g_client[3];

static int start_client(int i)
{
    char dir[16], listen[32], peers[128] = "", out[32];
    snprintf(dir, sizeof dir, "%s", g_id[i]);
    snprintf(listen, sizeof listen, "127.0.0.1:%u", g_port[i]);
    snprintf(out, sizeof out, "run-%s.txt", g_id[i]);
    for (int j = 0; j < 3; j++) {
        if (j == i)
            continue;
        size_t l = strlen(peers);
        snprintf(peers + l, sizeof peers - l, "%s%s=127.0.0.1:%u", l ? "," : "", g_id[j],
                 g_port[j]);
    }
    g_client[i] = pk_demo_start(&D, out,
                                ARGV("device", "mk", "run", "--dir", dir, "--listen", listen,
                                     "--peer", peers, "--lifetime", IK_LIFE_S, "--lead-time", "3",
                                     "--retry", "1", "--auth-timeout", "1", "--grace", "2"));
    return g_client[i] > 0 && wait_for(i, "event=listening", NULL, 1, START_MS);
}

static int send_msg(int from, int to, const char *text)
{
    char dir[16], addr[32];
    snprintf(dir, sizeof dir, "%s", g_id[from]);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", g_port[to]);
    int rc = pk_demo_run(
        &D, NULL,
        ARGV("device", "mk", "send", (char *)g_id[to], (char *)text, "--dir", dir, "--to", addr));
    char needle[128];
    snprintf(needle, sizeof needle, "text=%s", text);
    return rc == 0 && wait_for(to, "event=message", needle, 1, 3000);
}

static int run_demo(void)
{
    char out[8192], kms[32], node[32];

    step("a development CA: certificates for the kms and the node (CN = identity)");
    if (!check(pk_demo_run(&D, NULL, ARGV("ca", "init", "ca")) == 0 &&
                   pk_demo_run(&D, NULL, ARGV("ca", "issue", "ca", "kms")) == 0 &&
                   pk_demo_run(&D, NULL, ARGV("ca", "issue", "ca", "node-1")) == 0,
               "ca init; ca issue kms, node-1"))
        return -1;

    step("the kms: a domain (a named group of devices), three devices in it, its first master key");
    if (!check(pk_demo_run(&D, NULL, ARGV("kms", "init", "--log-level", "warn")) == 0 &&
                   pk_demo_run(&D, "out.txt",
                               ARGV("kms", "domain", "add", "plant-7", "--log-level", "warn")) == 0,
               "kms init; kms domain add plant-7"))
        return -1;
    for (int i = 0; i < 3; i++) {
        char name[32], key[80] = "";
        snprintf(name, sizeof name, "add-%s.txt", g_id[i]);
        if (pk_demo_run(&D, name,
                        ARGV("kms", "device", "add", (char *)g_id[i], "--domain", "plant-7",
                             "--log-level", "warn")) != 0 ||
            pk_demo_read_file(&D, name, out, sizeof out) != 0 || !strstr(out, " key ") ||
            sscanf(strstr(out, " key ") + 5, "%64s", key) != 1)
            return check(0, "kms device add %s --domain plant-7", g_id[i]), -1;
        printf("  kms: device %s in domain plant-7\n", g_id[i]);
        char dir[16];
        snprintf(dir, sizeof dir, "%s", g_id[i]);
        memset(out, 0, sizeof out);
        if (pk_demo_run(&D, NULL,
                        ARGV("device", "init", "--dir", dir, "--id", (char *)g_id[i], "--key", key,
                             "--node", "127.0.0.1:1")) != 0)
            return check(0, "device init %s", g_id[i]), -1;
        memset(key, 0, sizeof key);
    }
    if (!check(pk_demo_run(&D, "out.txt",
                           ARGV("kms", "master", "rotate", "plant-7", "--lifetime", "1h",
                                "--log-level", "warn")) == 0 &&
                   pk_demo_read_file(&D, "out.txt", out, sizeof out) == 0,
               "kms master rotate plant-7 (the first master key, valid 1 h)"))
        return -1;
    print_indented(out);

    step("daemons: the kms and node-1 on 127.0.0.1 (mutual TLS 1.3 between them)");
    if (pk_demo_start(&D, NULL,
                      ARGV("kms", "serve", "--listen", "127.0.0.1:0", "--port-file", "kms.port",
                           "--ca", "ca/ca.crt", "--cert", "ca/kms.crt", "--key", "ca/kms.key",
                           "--log-level", "warn")) < 0)
        return -1;
    for (long t = 0; t < START_MS && !g_kms_port; t += 50) {
        if (pk_demo_read_file(&D, "kms.port", out, sizeof out) == 0)
            g_kms_port = (unsigned)strtoul(out, NULL, 10);
        if (!g_kms_port)
            pk_demo_sleep_ms(50);
    }
    if (!check(g_kms_port != 0, "kms listening on 127.0.0.1:%u", g_kms_port))
        return -1;
    g_node_port = pk_demo_free_port(SOCK_DGRAM);
    snprintf(kms, sizeof kms, "127.0.0.1:%u", g_kms_port);
    snprintf(node, sizeof node, "127.0.0.1:%u", g_node_port);
    if (pk_demo_start(&D, NULL,
                      ARGV("node", "serve", "--id", "node-1", "--listen-udp", node, "--kms", kms,
                           "--ca", "ca/ca.crt", "--cert", "ca/node-1.crt", "--key", "ca/node-1.key",
                           "--stats-ms", "0", "--log-level", "warn")) < 0)
        return -1;
    printf("  node-1: udp %s (devices), kms %s\n", node, kms);

    step("registration: the ACCEPT carries the domain's master key, its ID and expiry "
         "(sealed under K_reg)");
    int regs = 0;
    for (int i = 0; i < 3; i++) {
        char dir[16];
        snprintf(dir, sizeof dir, "%s", g_id[i]);
        for (int attempt = 0; attempt < 20; attempt++) { /* the node may still be starting */
            if (pk_demo_run(&D, "out.txt",
                            ARGV("device", "register", "--dir", dir, "--node", node)) == 0) {
                regs++;
                break;
            }
            pk_demo_sleep_ms(200);
        }
    }
    if (!check(regs == 3, "dev-a, dev-b, dev-c registered with node-1"))
        return -1;
    if (keys_of(0, 0, out, sizeof out) == 0)
        print_indented(out);
    check(strstr(out, "master domain_id=") && strstr(out, "mk_id=1 ") &&
              strstr(out, "state=current") && strstr(out, "****"),
          "dev-a holds master key 1 of plant-7 (value masked)");

    step("three clients (proxkey device mk run): authenticate pairwise with the master key and a "
         "random from each side; individual key = KDF(MK, randoms, IDs)");
    for (int i = 0; i < 3; i++)
        g_port[i] = pk_demo_free_port(SOCK_DGRAM);
    for (int i = 0; i < 3; i++)
        if (!check(start_client(i), "%s listening on 127.0.0.1:%u", g_id[i], g_port[i]))
            return -1;
    int pairs = 1;
    for (int i = 0; i < 3; i++)
        pairs &= wait_for(i, "event=key", "mk_id=1 ", 2, 15000);
    show_all();
    check(pairs, "every client holds an individual key with each of the two others");
    check(same_key(0, 1, "1") && same_key(0, 2, "1") && same_key(1, 2, "1"),
          "both sides of each pair derived the identical key (compared, not printed)");
    if (keys_of(1, 0, out, sizeof out) == 0) {
        printf("  dev-b's table (proxkey device keys; values masked):\n");
        print_indented(out);
    }

    step("traffic between clients: records under the individual key");
    check(send_msg(0, 1, "hello-b-from-a"), "dev-a -> dev-b");
    check(send_msg(2, 0, "hello-a-from-c"), "dev-c -> dev-a");
    show_all();

    step("partition: dev-c stops (SIGSTOP) and misses the rotation");
    kill(g_client[2], SIGSTOP);
    printf("  dev-c stopped\n");

    step("rotation at the kms: master key 2 effective in 3 s; dev-a and dev-b refresh "
         "(FIG. 8 S10: authenticate with the node again, which fetches the key)");
    if (!check(pk_demo_run(&D, "out.txt",
                           ARGV("kms", "master", "rotate", "plant-7", "--at", "+3s", "--lifetime",
                                "1h", "--log-level", "warn")) == 0 &&
                   pk_demo_read_file(&D, "out.txt", out, sizeof out) == 0,
               "kms master rotate plant-7 --at +3s"))
        return -1;
    print_indented(out);
    if (pk_demo_run(&D, "out.txt",
                    ARGV("kms", "master", "list", "plant-7", "--log-level", "warn")) == 0 &&
        pk_demo_read_file(&D, "out.txt", out, sizeof out) == 0)
        print_indented(out);
    for (int i = 0; i < 2; i++) {
        char dir[16];
        snprintf(dir, sizeof dir, "%s", g_id[i]);
        check(pk_demo_run(&D, "out.txt",
                          ARGV("device", "mk", "refresh", "--dir", dir, "--node", node)) == 0,
              "%s: mk refresh (now holds key 1 current and key 2 next)", g_id[i]);
    }

    step("cascade (FIG. 8): at the switch each client re-authenticates every partner under key 2");
    int cascade = wait_for(0, "event=key", "mk_id=2 ", 1, 12000) &&
                  wait_for(1, "event=key", "mk_id=2 ", 1, 12000);
    pk_demo_sleep_ms(2500); /* the attempts towards the stopped dev-c time out */
    show_all();
    check(cascade && same_key(0, 1, "2"),
          "dev-a and dev-b share a new key made under master key 2");
    check(count_in(0, "event=master_changed", NULL) >= 1 &&
              count_in(0, "partner=dev-c why=master_changed", NULL) >= 1,
          "dev-a tried to re-key with dev-c too (unreachable)");
    check(has_partner(0, "dev-c", "1"), "dev-a still holds its key 1 with dev-c (not yet expired)");
    check(send_msg(1, 0, "after-rotation"), "dev-b -> dev-a under the new key");

    step("the old key with the unreachable dev-c expires and is removed");
    int gone = 0;
    for (long t = 0; t < 20000 && !gone; t += 500) {
        show_all();
        gone = !has_partner(0, "dev-c", NULL) && !has_partner(1, "dev-c", NULL);
        if (!gone)
            pk_demo_sleep_ms(500);
    }
    show_all();
    check(gone, "dev-a and dev-b no longer hold a key with dev-c");

    step("dev-c returns (SIGCONT), refreshes its master key and re-keys with both");
    kill(g_client[2], SIGCONT);
    check(pk_demo_run(&D, "out.txt",
                      ARGV("device", "mk", "refresh", "--dir", "dev-c", "--node", node)) == 0,
          "dev-c: mk refresh");
    int back = wait_for(2, "event=key", "mk_id=2 ", 2, 15000);
    show_all();
    check(back && same_key(0, 2, "2") && same_key(1, 2, "2"),
          "dev-c shares new keys under master key 2 with dev-a and dev-b");
    check(send_msg(2, 1, "c-is-back"), "dev-c -> dev-b");
    if (keys_of(2, 0, out, sizeof out) == 0) {
        printf("  dev-c's table:\n");
        print_indented(out);
    }

    step("the kms audit log: every master-key issuance (never a value)");
    if (pk_demo_run(&D, "out.txt", ARGV("kms", "audit", "--log-level", "warn")) == 0 &&
        pk_demo_read_file(&D, "out.txt", out, sizeof out) == 0) {
        int n = 0;
        for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n"))
            if (strstr(l, "what=master_key") || strstr(l, "what=mk_create") ||
                strstr(l, "what=domain")) {
                if (n++ < 12)
                    printf("    %s\n", l);
            }
        check(n >= 8, "%d domain and master-key records", n);
    }
    return 0;
}

int pk_demo_master_keys(int argc, char **argv)
{
    const char *kv = getenv("PROXKEY_DEMO_KEEP");
    int keep = kv && kv[0] && strcmp(kv, "0") != 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--keep") == 0) {
            keep = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: proxkey demo master-keys [--keep]\n"
                   "kms + node daemons, three devices in one domain, pairwise individual keys,\n"
                   "a master-key rotation and its cascade, a partitioned client (about 40 s).\n"
                   "PROXKEY_DEMO_KEEP=1 leaves the working directory for inspection.\n");
            return 0;
        } else {
            fprintf(stderr, "proxkey demo master-keys: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (pk_demo_setup(&D, "/tmp/proxkey-mk-XXXXXX") != 0)
        return 1;
    printf("proxkey demo master-keys (working directory %s)\n", D.dir);
    int rc = run_demo();
    if (rc != 0)
        g_failed = 1;
    pk_demo_stop_all();
    printf("\n%s\n", g_failed ? "demo FAILED" : "demo passed: every check held");
    pk_demo_finish(&D, g_failed || keep);
    return g_failed ? 1 : 0;
}
