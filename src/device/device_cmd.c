/*
 * `proxkey device`: init, register, keys, listen, send (and poll, defined by
 * the gts shell). A thin shell: sockets, the clock, files and printing; the
 * protocol runs in libproxkey-device (docs/device.md).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "device_util.h"
#include "cli.h"
#include "conf.h"
#include "core/log.h"
#include "device_cmd.h"
#include "device_mk.h"
#include "net/addr.h"
#include "net/loop.h"

/* `proxkey device poll` lives in src/gts (gts_cli.c). Weak, so this library
 * links without it; the lead's executable links both. */
int pk_cmd_device_poll(int argc, char **argv) __attribute__((weak));

#define DGRAM_MAX  4096
#define MAX_LINKS  16
#define DEF_TRIES  5
#define DEF_RTO_MS 300

static volatile sig_atomic_t g_stop;
/* PROXKEY_TRACE set (as `proxkey demo` does): one debug log line on stderr
 * per datagram sent, with the type byte and length only (never content). */
static int g_trace;
static char g_self[PK_REG_ID_MAX + 1];
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ---------------- small helpers ---------------- */

/* Parses argv with keys; positional args into pos. 0 or the usage exit code. */
static int parse(const char *cmd, pk_conf_t *c, const pk_conf_key_t *keys, size_t n, int argc,
                 char **argv, char **pos, int max_pos, int *npos)
{
    pk_conf_init(c, keys, n);
    if (pk_conf_args(c, argc, argv, pos, max_pos, npos) != 0)
        return pk_dcli_usage(cmd, c->err);
    return 0;
}

/* Loads the state of --dir with a one-line error; 0 or an exit code. */
static int load_state(const char *cmd, const char *dir, pk_dstate_t *s)
{
    int rc = pk_dstate_load(s, dir);
    switch (rc) {
    case PK_OK:
        snprintf(g_self, sizeof g_self, "%.*s", (int)s->id.len, (const char *)s->id.b);
        return 0;
    case PK_ERR_NOTFOUND:
        return pk_dcli_fail(
            cmd, "%s is not a device state directory (run 'proxkey device init --dir %s')", dir,
            dir);
    case PK_ERR_DENIED:
        return pk_dcli_fail(cmd, "%s: permissions too open (directory must be 0700, files 0600)",
                            dir);
    case PK_ERR_MALFORMED: return pk_dcli_fail(cmd, "%s/identity or %s/node is damaged", dir, dir);
    default: return pk_dcli_fail(cmd, "cannot read %s: %s", dir, strerror(errno));
    }
}

static int load_reg(const char *cmd, pk_dstate_t *s, pk_reg_dev_t *d)
{
    int rc = pk_dstate_load_reg(s, d);
    if (rc == PK_OK)
        return 0;
    if (rc == PK_ERR_NOTFOUND)
        return pk_dcli_fail(cmd,
                            "no registration yet in %s (run 'proxkey device register --dir %s')",
                            s->dir, s->dir);
    return pk_dcli_fail(cmd, "%s/registration is damaged or belongs to another device (%s)", s->dir,
                        pk_strerror(rc));
}

static int lock_state(const char *cmd, pk_dstate_t *s)
{
    if (pk_dstate_lock(s) == PK_OK)
        return 0;
    return pk_dcli_fail(cmd, "%s is in use by another proxkey device process", s->dir);
}

/* A UDP socket bound to bind_addr (NULL: any port of to's family). */
static int udp_socket(const pk_addr_t *bind_addr, int family)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (bind_addr && bind(fd, (const struct sockaddr *)&bind_addr->ss, bind_addr->len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void trace_send(int fd, const pk_addr_t *to, const uint8_t *b, size_t n)
{
    pk_addr_t me;
    char src[PK_ADDR_STRLEN] = "?", dst[PK_ADDR_STRLEN];
    if (pk_addr_local(fd, &me) == PK_OK)
        pk_addr_format(&me, src);
    pk_debug("msg", "from=%s src=%s to=%s type=0x%02x len=%zu", g_self, src,
             pk_addr_format(to, dst), n ? b[0] : 0, n);
}

static void send_to(int fd, const pk_addr_t *to, const uint8_t *b, size_t n)
{
    if (g_trace)
        trace_send(fd, to, b, n);
    (void)sendto(fd, b, n, 0, (const struct sockaddr *)&to->ss, to->len);
}

/* Receives one datagram; returns its length, 0 when none, -1 on error. */
static ssize_t recv_from(int fd, uint8_t *buf, size_t cap, pk_addr_t *from)
{
    from->len = sizeof from->ss;
    ssize_t r = recvfrom(fd, buf, cap, 0, (struct sockaddr *)&from->ss, &from->len);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED))
        return 0;
    return r;
}

/* text=... with non-printable bytes, backslash and spaces escaped. */
static void print_text(FILE *f, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] == '\\')
            fputs("\\\\", f);
        else if (b[i] >= 0x20 && b[i] < 0x7f)
            fputc(b[i], f);
        else
            fprintf(f, "\\x%02x", b[i]);
    }
}

static int parse_addr(const char *cmd, const char *opt, const char *s, pk_addr_t *a)
{
    const char *why = NULL;
    char msg[200];
    if (pk_addr_parse(s, a, &why) == PK_OK)
        return 0;
    snprintf(msg, sizeof msg, "%s %s: %s", opt, s, why ? why : "bad address");
    return pk_dcli_usage(cmd, msg);
}

static int parse_u(const char *cmd, const char *opt, const char *v, unsigned long long lo,
                   unsigned long long hi, unsigned long long *out)
{
    char msg[120];
    if (!v)
        return 0;
    if (pk_cli_parse_u64(v, lo, hi, out) == 0)
        return 0;
    snprintf(msg, sizeof msg, "%s wants a number in %llu..%llu", opt, lo, hi);
    return pk_dcli_usage(cmd, msg);
}

/* ---------------- init ---------------- */

static const pk_conf_key_t init_keys[] = {
    {"dir", "DIR   the device's state directory (created 0700)", NULL, 0},
    {"id", "ID     the device identity (1..64 bytes of UTF-8)", NULL, 0},
    {"key", "HEX   the device key K, 32 or 64 hex digits", NULL, 0},
    {"key-file", "FILE  read K (hex) from FILE instead", NULL, 0},
    {"node", "ADDR  the node to register with (host:port)", NULL, 0},
    {"node-id", "ID    the node's identity", "node-1", 0},
    {"force",
     "replace an existing identity (drops the registration; with another ID also the stored "
     "links, individual keys and their receive windows)",
     NULL, 1},
};

static int read_key_file(const char *path, char *out, size_t cap)
{
    char buf[512];
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the first hex token of 32 or 64 digits ("key = HEX" or a bare HEX) */
    for (char *p = buf; *p;) {
        size_t l = strspn(p, "0123456789abcdefABCDEF");
        if ((l == 32 || l == 64) && (p == buf || !isalnum((unsigned char)p[-1])) && l < cap) {
            memcpy(out, p, l);
            out[l] = '\0';
            pk_wipe(buf, sizeof buf);
            return 0;
        }
        p += l ? l : 1;
    }
    pk_wipe(buf, sizeof buf);
    return -1;
}

static int cmd_init(int argc, char **argv)
{
    static pk_conf_t c;
    static pk_dstate_t s;
    char *pos[1];
    int npos = 0, rc;
    char keyhex[80];
    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device init --dir DIR --id ID (--key HEX | --key-file FILE)\n"
               "                           [--node ADDR] [--node-id ID] [--force]\n"
               "Provisions a device state directory with its identity and long-term key K\n"
               "(as 'proxkey kms device add' generates them).\n");
        pk_conf_init(&c, init_keys, sizeof init_keys / sizeof *init_keys);
        pk_conf_help(&c);
        return 0;
    }
    if ((rc = parse("init", &c, init_keys, sizeof init_keys / sizeof *init_keys, argc, argv, pos, 0,
                    &npos)))
        return rc;
    const char *dir = pk_conf_get(&c, "dir"), *id = pk_conf_get(&c, "id");
    const char *key = pk_conf_get(&c, "key"), *kf = pk_conf_get(&c, "key-file");
    const char *node = pk_conf_get(&c, "node"), *nid = pk_conf_get(&c, "node-id");
    if (!dir)
        return pk_dcli_usage("init", "--dir DIR is required");
    if (!id)
        return pk_dcli_usage("init", "--id ID is required");
    if (!key == !kf)
        return pk_dcli_usage("init", "give exactly one of --key HEX and --key-file FILE");
    memset(&s, 0, sizeof s);
    s.lock_fd = -1;
    if (pk_reg_id_set(&s.id, id, strlen(id)) != PK_OK)
        return pk_dcli_usage("init", "--id must be 1..64 bytes of UTF-8 without NUL");
    if (pk_reg_id_set(&s.node_id, nid, strlen(nid)) != PK_OK)
        return pk_dcli_usage("init", "--node-id must be 1..64 bytes of UTF-8 without NUL");
    if (kf && read_key_file(kf, keyhex, sizeof keyhex) != 0)
        return pk_dcli_fail("init", "%s: no key (32 or 64 hex digits) found", kf);
    if (key && strlen(key) < sizeof keyhex)
        snprintf(keyhex, sizeof keyhex, "%s", key);
    else if (key)
        keyhex[0] = '\0';
    rc = pk_dstate_parse_key(keyhex, s.k, &s.klen);
    pk_wipe(keyhex, sizeof keyhex);
    if (rc != PK_OK)
        return pk_dcli_usage("init", "the key must be 32 or 64 hex digits (16 or 32 bytes)");
    if (node) {
        pk_addr_t a;
        if ((rc = parse_addr("init", "--node", node, &a)))
            return rc;
        snprintf(s.node_addr, sizeof s.node_addr, "%s", node);
        s.has_node = 1;
    }
    if (strlen(dir) >= sizeof s.dir - 64)
        return pk_dcli_usage("init", "--dir path too long");
    snprintf(s.dir, sizeof s.dir, "%s", dir);
    if (pk_dstate_dir(dir, 1) != PK_OK)
        return pk_dcli_fail("init", "cannot create %s: %s", dir, strerror(errno));
    if (lock_state("init", &s))
        return 1;
    char probe[8];
    size_t plen;
    rc = pk_dstate_read(dir, "identity", probe, sizeof probe, &plen);
    if (rc != PK_ERR_NOTFOUND && !pk_conf_flag(&c, "force")) {
        pk_dstate_clear(&s);
        return pk_dcli_fail("init",
                            "%s already holds a device identity (use --force to replace it)", dir);
    }
    if (rc != PK_ERR_NOTFOUND) {
        /* --force over another device ID: the old identity's individual
         * keys, receive windows and links belong to another device (mk run
         * would refuse the windows of another client) */
        pk_dstate_t old;
        memset(&old, 0, sizeof old);
        old.lock_fd = -1;
        int same = pk_dstate_load(&old, dir) == PK_OK && pk_reg_id_eq(&old.id, &s.id);
        pk_dstate_clear(&old);
        if (!same && pk_dstate_forget_peers(dir) != PK_OK) {
            pk_dstate_clear(&s);
            return pk_dcli_fail("init", "cannot clear the old identity's keys in %s: %s", dir,
                                strerror(errno));
        }
    }
    char path[PK_DSTATE_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/registration", dir);
    unlink(path); /* a registration of another identity is worthless */
    rc = pk_dstate_save_identity(&s);
    if (rc == PK_OK && s.has_node)
        rc = pk_dstate_save_node(&s);
    pk_dstate_clear(&s);
    if (rc != PK_OK)
        return pk_dcli_fail("init", "cannot write %s: %s", dir, strerror(errno));
    printf("initialised %s: id=%s\n", dir, id);
    return 0;
}

/* ---------------- register ---------------- */

static const pk_conf_key_t reg_keys[] = {
    {"dir", "DIR    the device's state directory", NULL, 0},
    {"node", "ADDR   the node (host:port; default: the one in DIR/node)", NULL, 0},
    {"node-id", "ID     the node's identity (default: DIR/node, else node-1)", NULL, 0},
    {"bind", "ADDR   local address to register from (default: the previous one, else port 0)", NULL,
     0},
    {"tries", "N      sends of each message before giving up (1..16, default 5)", NULL, 0},
    {"rto-ms", "MS     first retransmission timeout, doubled per try (default 300)", NULL, 0},
};

/* Performs the actions of one output: SENDs to the node. */
static void send_all(int fd, const pk_addr_t *to, const pk_out_t *o)
{
    for (unsigned i = 0; i < o->n; i++)
        if (o->act[i].kind == PK_ACT_SEND)
            send_to(fd, to, o->act[i].data, o->act[i].len);
}

static int has_event(const pk_out_t *o, uint16_t code, const pk_act_t **a)
{
    for (unsigned i = 0; i < o->n; i++)
        if (o->act[i].kind == PK_ACT_EVENT && o->act[i].code == code) {
            if (a)
                *a = &o->act[i];
            return 1;
        }
    return 0;
}

static int cmd_register(int argc, char **argv)
{
    static pk_conf_t c;
    static pk_dstate_t s;
    static pk_reg_dev_t d;
    static uint8_t arena[8192], buf[DGRAM_MAX];
    char *pos[1];
    int npos = 0, rc, fd = -1, ret = 1, auth_fail = 0;
    unsigned long long tries = DEF_TRIES, rto = DEF_RTO_MS;
    pk_addr_t node, local;
    pk_out_t o;

    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device register --dir DIR [--node ADDR] [--node-id ID]\n"
               "                               [--bind ADDR] [--tries N] [--rto-ms MS]\n"
               "Registers with the node over UDP (REQUEST, CHALLENGE with AUTN checked\n"
               "before answering, RESPONSE, ACCEPT) and stores the temp ID and key set.\n");
        pk_conf_init(&c, reg_keys, sizeof reg_keys / sizeof *reg_keys);
        pk_conf_help(&c);
        return 0;
    }
    if ((rc = parse("register", &c, reg_keys, sizeof reg_keys / sizeof *reg_keys, argc, argv, pos,
                    0, &npos)))
        return rc;
    const char *dir = pk_conf_get(&c, "dir");
    if (!dir)
        return pk_dcli_usage("register", "--dir DIR is required");
    if ((rc = parse_u("register", "--tries", pk_conf_get(&c, "tries"), 1, 16, &tries)) ||
        (rc = parse_u("register", "--rto-ms", pk_conf_get(&c, "rto-ms"), 1, 60000, &rto)))
        return rc;
    if (load_state("register", dir, &s))
        return 1;
    const char *na = pk_conf_get(&c, "node"), *nid = pk_conf_get(&c, "node-id");
    const char *bind_s = pk_conf_get(&c, "bind");
    if (na) {
        if ((rc = parse_addr("register", "--node", na, &node)))
            goto out_rc;
        snprintf(s.node_addr, sizeof s.node_addr, "%s", na);
    } else if (!s.has_node || !s.node_addr[0]) {
        rc = pk_dcli_usage("register",
                           "--node ADDR is required (no node recorded in the state directory)");
        goto out_rc;
    } else if ((rc = parse_addr("register", "--node", s.node_addr, &node))) {
        goto out_rc;
    }
    if (nid) {
        if (pk_reg_id_set(&s.node_id, nid, strlen(nid)) != PK_OK) {
            rc = pk_dcli_usage("register", "--node-id must be 1..64 bytes of UTF-8");
            goto out_rc;
        }
    } else if (!s.has_node || s.node_id.len == 0) {
        (void)pk_reg_id_set(&s.node_id, "node-1", 6);
    }
    if (bind_s) {
        if ((rc = parse_addr("register", "--bind", bind_s, &local)))
            goto out_rc;
    } else if (s.local[0] && pk_addr_parse(s.local, &local, NULL) == PK_OK &&
               local.ss.ss_family == node.ss.ss_family) {
        /* the previous local address: the node knows us there */
    } else {
        (void)pk_addr_parse(node.ss.ss_family == AF_INET6 ? "[::1]:0" : "127.0.0.1:0", &local,
                            NULL);
    }
    if (lock_state("register", &s))
        goto out;
    fd = udp_socket(&local, local.ss.ss_family);
    if (fd < 0 && !bind_s && pk_addr_port(&local) != 0) { /* previous port taken: any port */
        (void)pk_addr_parse(node.ss.ss_family == AF_INET6 ? "[::1]:0" : "127.0.0.1:0", &local,
                            NULL);
        fd = udp_socket(&local, local.ss.ss_family);
    }
    if (fd < 0) {
        pk_dcli_fail("register", "cannot bind %s: %s",
                     pk_addr_format(&local, (char[PK_ADDR_STRLEN]){0}), strerror(errno));
        goto out;
    }
    (void)pk_addr_local(fd, &local);
    pk_addr_format(&local, s.local);

    pk_reg_dev_cfg_t cfg = pk_dstate_reg_cfg(&s, rto, (unsigned)tries);
    if (pk_reg_dev_init(&d, &cfg) != PK_OK) {
        pk_dcli_fail("register", "bad identity");
        goto out;
    }
    pk_out_init(&o, arena, sizeof arena);
    if (pk_reg_dev_start(&d, &pk_rng_system, pk_now_mono_ms(), &o) != PK_OK) {
        pk_dcli_fail("register", "cannot start");
        goto out;
    }
    send_all(fd, &node, &o);
    for (int guard = 0; guard < 10000 && !g_stop; guard++) {
        uint64_t now = pk_now_mono_ms(), dl = pk_reg_dev_next_deadline(&d);
        int wait = dl == UINT64_MAX ? 1000 : (dl > now ? (int)(dl - now) : 0);
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, wait);
        pk_out_reset(&o);
        now = pk_now_mono_ms();
        if (pr > 0) {
            pk_addr_t from;
            ssize_t n;
            while ((n = recv_from(fd, buf, sizeof buf, &from)) > 0) {
                if (!pk_addr_eq(&from, &node))
                    continue; /* only the node may answer */
                pk_out_reset(&o);
                rc = pk_reg_dev_input(&d, buf, (size_t)n, now, &o);
                if (rc == PK_ERR_AUTH)
                    auth_fail = 1;
                send_all(fd, &node, &o);
                if (has_event(&o, PK_REG_EV_REGISTERED, NULL))
                    break;
            }
        } else {
            (void)pk_reg_dev_timeout(&d, now, &o);
            send_all(fd, &node, &o);
        }
        if (d.state == PK_REG_D_REGISTERED || d.state == PK_REG_D_FAILED)
            break;
    }
    if (d.state != PK_REG_D_REGISTERED) {
        if (auth_fail)
            pk_dcli_fail("register", "node %s failed authentication (AUTN): wrong key or node id?",
                         s.node_addr);
        else
            pk_dcli_fail("register", "node %s did not answer after %llu tries", s.node_addr, tries);
        goto out;
    }
    s.has_node = 1;
    if (pk_dstate_save_node(&s) != PK_OK || pk_dstate_save_reg(&s, &d) != PK_OK) {
        pk_dcli_fail("register", "cannot write %s: %s", dir, strerror(errno));
        goto out;
    }
    printf("registered %.*s with %.*s at %s: temp_id=", (int)s.id.len, (const char *)s.id.b,
           (int)s.node_id.len, (const char *)s.node_id.b, s.node_addr);
    pk_dcli_print_id(stdout, d.temp_id.b, d.temp_id.len);
    size_t nk = 0;
    (void)pk_reg_dev_keys(&d, &nk);
    printf(" mode=%s keys=%zu\n", d.keys.mode == PK_REG_MODE_POOL ? "pool" : "pairs", nk);
    if (pk_reg_dev_keys_missing(&d) > 0)
        fprintf(stderr,
                "proxkey device register: warning: %u keys of the set did not fit the key "
                "store\n",
                (unsigned)pk_reg_dev_keys_missing(&d));
    ret = 0;
out:
    if (fd >= 0)
        close(fd);
    pk_reg_dev_clear(&d);
    pk_dstate_clear(&s);
    return ret;
out_rc:
    pk_dstate_clear(&s);
    return rc;
}

/* ---------------- keys ---------------- */

static const pk_conf_key_t keys_keys[] = {
    {"dir", "DIR  the device's state directory", NULL, 0},
    {"show-secrets", "print key values (masked otherwise)", NULL, 1},
};

static void print_key(const uint8_t *k, size_t n, int reveal)
{
    for (size_t i = 0; i < n; i++) {
        if (reveal || i < 2)
            printf("%02x", k[i]);
        else
            fputs("**", stdout);
    }
}

static int cmd_keys(int argc, char **argv)
{
    static pk_conf_t c;
    static pk_dstate_t s;
    static pk_reg_dev_t d;
    char *pos[1];
    int npos = 0, rc;
    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device keys --dir DIR [--show-secrets]\n"
               "Prints the key table: one line per root key (KSI, peer, mode, expiry,\n"
               "masked key) and one per option-2 indication from the node.\n");
        pk_conf_init(&c, keys_keys, sizeof keys_keys / sizeof *keys_keys);
        pk_conf_help(&c);
        return 0;
    }
    if ((rc = parse("keys", &c, keys_keys, sizeof keys_keys / sizeof *keys_keys, argc, argv, pos, 0,
                    &npos)))
        return rc;
    const char *dir = pk_conf_get(&c, "dir");
    int reveal = pk_conf_flag(&c, "show-secrets");
    if (!dir)
        return pk_dcli_usage("keys", "--dir DIR is required");
    if (load_state("keys", dir, &s))
        return 1;
    if (load_reg("keys", &s, &d)) {
        pk_dstate_clear(&s);
        return 1;
    }
    const char *mode = d.keys.mode == PK_REG_MODE_POOL ? "pool" : "pairs";
    printf("device=%.*s node=%.*s temp_id=", (int)s.id.len, (const char *)s.id.b,
           (int)s.node_id.len, (const char *)s.node_id.b);
    pk_dcli_print_id(stdout, d.temp_id.b, d.temp_id.len);
    size_t nk = 0;
    const pk_reg_key_t *tk = pk_reg_dev_keys(&d, &nk);
    printf(" mode=%s keys=%zu", mode, nk);
    if (pk_reg_dev_keys_missing(&d) > 0)
        printf(" missing=%u", (unsigned)pk_reg_dev_keys_missing(&d));
    putchar('\n');
    for (size_t i = 0; i < nk; i++) {
        const pk_reg_key_t *k = &tk[i];
        printf("ksi=0x%08x peer=", k->ksi);
        if (k->peer.len)
            pk_dcli_print_id(stdout, k->peer.b, k->peer.len);
        else
            fputs("(pool)", stdout);
        /* the ACCEPT key set carries no expiry: root keys live until the next
         * registration replaces them */
        printf(" mode=%s expiry=registration key=", mode);
        print_key(k->key, sizeof k->key, reveal);
        putchar('\n');
    }
    for (unsigned i = 0; i < PK_REG_MAX_IND; i++) {
        const pk_reg_ind_t *in = &d.ind[i];
        if (!in->used)
            continue;
        printf("indication ksi=0x%08x peer=", in->ksi);
        pk_dcli_print_id(stdout, in->peer.b, in->peer.len);
        printf(" role=%s param=", in->role == PK_REG_ROLE_INITIATOR ? "initiator" : "responder");
        print_key(in->param, sizeof in->param, reveal);
        putchar('\n');
    }
    pk_dmk_print(&s, &d, reveal); /* master keys and individual keys (device_mk.c) */
    pk_reg_dev_clear(&d);
    pk_dstate_clear(&s);
    return 0;
}

/* ---------------- links: shared by listen and send ---------------- */

static pk_link_cfg_t link_cfg(pk_dstate_t *s, pk_reg_dev_t *d, unsigned long long rto,
                              unsigned long long tries)
{
    pk_link_cfg_t c = {.self_id = s->id.b,
                       .self_len = s->id.len,
                       .lookup = pk_reg_dev_lookup,
                       .lookup_ctx = d,
                       .rto_ms = rto,
                       .max_tries = (unsigned)tries};
    return c;
}

/* The node channel of a registered device: its recorded local address. */
static int node_socket(const char *cmd, pk_dstate_t *s, pk_addr_t *node)
{
    pk_addr_t local;
    if (!s->has_node || pk_addr_parse(s->node_addr, node, NULL) != PK_OK)
        return pk_dcli_fail(cmd, "no node recorded in %s", s->dir), -1;
    if (!s->local[0] || pk_addr_parse(s->local, &local, NULL) != PK_OK)
        (void)pk_addr_parse(node->ss.ss_family == AF_INET6 ? "[::1]:0" : "127.0.0.1:0", &local,
                            NULL);
    int fd = udp_socket(&local, local.ss.ss_family);
    if (fd < 0)
        pk_dcli_fail(cmd, "cannot bind the node channel %s: %s", s->local, strerror(errno));
    return fd;
}

/* ---------------- listen ---------------- */

static const pk_conf_key_t listen_keys[] = {
    {"dir", "DIR    the device's state directory", NULL, 0},
    {"listen", "ADDR   where to accept direct links (host:port)", NULL, 0},
    {"count", "N      exit after N messages", NULL, 0},
    {"timeout", "S      exit after S seconds (exit 1 if --count was not reached)", NULL, 0},
    {"node", "also receive the node's indications (option 2) on the registered address", NULL, 1},
};

typedef struct slot {
    int used;
    pk_link_t l;
    uint64_t born;
} slot_t;

static void on_link_events(pk_dstate_t *s, slot_t *sl, const pk_out_t *o, const char *from,
                           unsigned long long *got)
{
    int save = 0;
    for (unsigned i = 0; i < o->n; i++) {
        const pk_act_t *a = &o->act[i];
        if (a->kind != PK_ACT_EVENT)
            continue;
        if (a->code == PK_LINK_EV_ESTABLISHED) {
            fprintf(stderr, "link established from=");
            pk_dcli_print_id(stderr, sl->l.peer_id, sl->l.peer_len);
            fprintf(stderr, " sid=0x%04x ksi=0x%08x\n", pk_link_session_id(&sl->l), sl->l.ksi);
            save = 1;
        } else if (a->code == PK_LINK_EV_DATA) {
            printf("from=");
            pk_dcli_print_id(stdout, sl->l.peer_id, sl->l.peer_len);
            printf(" text=");
            print_text(stdout, a->data, a->len);
            putchar('\n');
            fflush(stdout);
            (*got)++;
            save = 1;
        }
    }
    /* persisted so a restarted listener keeps the link and its replay window */
    if (save && pk_link_state(&sl->l) == PK_LINK_S_ESTABLISHED)
        (void)pk_dstate_save_link(s, &sl->l, from);
}

/* The session id a SMCOMPLETE or DATA datagram names (-1: none). */
static int dgram_sid(const uint8_t *b, size_t n)
{
    if (n >= 4 && b[0] == PK_LINK_T_SMCOMPLETE)
        return b[2] << 8 | b[3];
    if (n >= 3 && b[0] == PK_LINK_T_DATA)
        return b[1] << 8 | b[2];
    return -1;
}

/* Loads every persisted responder link of the directory into free slots. */
static void load_links(pk_dstate_t *s, slot_t *slots, const pk_link_cfg_t *cfg)
{
    unsigned n = 0;
    DIR *dh = opendir(s->dir);
    struct dirent *e;
    if (!dh)
        return;
    while (n < MAX_LINKS && (e = readdir(dh)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, "link-r-", 7) != 0 || strchr(name, '.'))
            continue;
        uint8_t peer[PK_LINK_ID_MAX];
        size_t hl = strlen(name + 7), pl = hl / 2;
        if (hl % 2 || pl < 1 || pl > sizeof peer)
            continue;
        int bad = 0;
        for (size_t i = 0; i < pl; i++) {
            unsigned v = 0;
            bad |= sscanf(name + 7 + 2 * i, "%2x", &v) != 1;
            peer[i] = (uint8_t)v;
        }
        char to[PK_DSTATE_ADDR_MAX];
        if (!bad &&
            pk_dstate_load_link(s, PK_LINK_RESPONDER, peer, pl, cfg, &slots[n].l, to) == PK_OK) {
            slots[n].used = 1;
            n++;
        }
    }
    closedir(dh);
}

static int cmd_listen(int argc, char **argv)
{
    static pk_conf_t c;
    static pk_dstate_t s;
    static pk_reg_dev_t d;
    static slot_t slots[MAX_LINKS];
    static uint8_t buf[DGRAM_MAX], arena[8192];
    char *pos[1];
    int npos = 0, rc, fd = -1, nfd = -1, ret = 1;
    unsigned long long count = 0, timeout = 0, got = 0;
    pk_addr_t la, node;
    pk_out_t o;

    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device listen --dir DIR --listen ADDR [--count N]\n"
               "                             [--timeout S] [--node]\n"
               "Accepts direct links (DCR -> SMC -> SMCOMPLETE) and prints each message\n"
               "received as 'from=PEER text=...'. Needs no network after registration\n"
               "(option 1); with --node it also takes the node's KSI indications (option 2).\n");
        pk_conf_init(&c, listen_keys, sizeof listen_keys / sizeof *listen_keys);
        pk_conf_help(&c);
        return 0;
    }
    if ((rc = parse("listen", &c, listen_keys, sizeof listen_keys / sizeof *listen_keys, argc, argv,
                    pos, 0, &npos)))
        return rc;
    const char *dir = pk_conf_get(&c, "dir"), *ls = pk_conf_get(&c, "listen");
    if (!dir)
        return pk_dcli_usage("listen", "--dir DIR is required");
    if (!ls)
        return pk_dcli_usage("listen", "--listen ADDR is required");
    if ((rc = parse_addr("listen", "--listen", ls, &la)) ||
        (rc = parse_u("listen", "--count", pk_conf_get(&c, "count"), 1, 1000000000, &count)) ||
        (rc = parse_u("listen", "--timeout", pk_conf_get(&c, "timeout"), 1, 86400 * 365, &timeout)))
        return rc;
    if (load_state("listen", dir, &s))
        return 1;
    if (load_reg("listen", &s, &d))
        goto out;
    if (lock_state("listen", &s))
        goto out;
    pk_link_cfg_t lc = link_cfg(&s, &d, DEF_RTO_MS, DEF_TRIES);
    load_links(&s, slots, &lc);
    fd = udp_socket(&la, la.ss.ss_family);
    if (fd < 0) {
        pk_dcli_fail("listen", "cannot bind %s: %s", ls, strerror(errno));
        goto out;
    }
    if (pk_conf_flag(&c, "node")) {
        if ((nfd = node_socket("listen", &s, &node)) < 0)
            goto out;
    }
    (void)pk_addr_local(fd, &la);
    char lbuf[PK_ADDR_STRLEN];
    fprintf(stderr, "listening on %s as %.*s\n", pk_addr_format(&la, lbuf), (int)s.id.len,
            (const char *)s.id.b);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    uint64_t end = timeout ? pk_now_mono_ms() + timeout * 1000 : UINT64_MAX;
    pk_out_init(&o, arena, sizeof arena);
    while (!g_stop && (count == 0 || got < count)) {
        uint64_t now = pk_now_mono_ms(), next = end;
        if (now >= end)
            break;
        for (unsigned i = 0; i < MAX_LINKS; i++)
            if (slots[i].used) {
                uint64_t dl = pk_link_next_deadline(&slots[i].l);
                next = dl < next ? dl : next;
            }
        int wait = next == UINT64_MAX ? 1000 : (next > now ? (int)(next - now) : 0);
        if (wait > 1000)
            wait = 1000;
        struct pollfd p[2] = {{fd, POLLIN, 0}, {nfd, POLLIN, 0}};
        int pr = poll(p, nfd >= 0 ? 2 : 1, wait);
        now = pk_now_mono_ms();
        if (pr < 0 && errno != EINTR)
            break;
        for (unsigned i = 0; i < MAX_LINKS; i++) { /* timers: a dead handshake frees its slot */
            if (!slots[i].used)
                continue;
            pk_out_reset(&o);
            (void)pk_link_timeout(&slots[i].l, now, &o);
            if (pk_link_state(&slots[i].l) == PK_LINK_S_FAILED) {
                pk_link_clear(&slots[i].l);
                slots[i].used = 0;
            }
        }
        if (pr <= 0)
            continue;
        if (nfd >= 0 && (p[1].revents & POLLIN)) {
            pk_addr_t from;
            ssize_t n;
            for (int k = 0; k < 64 && (n = recv_from(nfd, buf, sizeof buf, &from)) > 0; k++) {
                const pk_act_t *a;
                if (!pk_addr_eq(&from, &node))
                    continue;
                pk_out_reset(&o);
                if (pk_reg_dev_input(&d, buf, (size_t)n, now, &o) != PK_OK)
                    continue; /* hostile or stale: dropped, nothing changed */
                if (has_event(&o, PK_REG_EV_LINK_IND, &a)) {
                    (void)pk_dstate_save_reg(&s, &d);
                    fprintf(stderr, "indication from node: peer=");
                    pk_dcli_print_id(stderr, a->data, a->len);
                    fputc('\n', stderr);
                    /* a handshake with that peer still in progress was answered
                     * under its previous indication (a DCR that overtook this
                     * one): forget it, so the DCR's retransmission is answered
                     * under the new KSI and parameter */
                    for (unsigned i = 0; i < MAX_LINKS; i++)
                        if (slots[i].used && pk_link_state(&slots[i].l) != PK_LINK_S_ESTABLISHED &&
                            slots[i].l.peer_len == a->len &&
                            memcmp(slots[i].l.peer_id, a->data, a->len) == 0) {
                            pk_link_clear(&slots[i].l);
                            slots[i].used = 0;
                        }
                }
            }
        }
        if (!(p[0].revents & POLLIN))
            continue;
        for (int k = 0; k < 64; k++) {
            pk_addr_t from;
            ssize_t n = recv_from(fd, buf, sizeof buf, &from);
            if (n <= 0)
                break;
            char fs[PK_ADDR_STRLEN];
            pk_addr_format(&from, fs);
            int sid = dgram_sid(buf, (size_t)n), done = 0;
            /* existing links first: SMC retransmissions, SMCOMPLETE, DATA */
            for (unsigned i = 0; i < MAX_LINKS && !done; i++) {
                if (!slots[i].used || (sid >= 0 && pk_link_session_id(&slots[i].l) != sid) ||
                    (sid < 0 && buf[0] != PK_LINK_T_DCR))
                    continue;
                pk_out_reset(&o);
                if (pk_link_input(&slots[i].l, buf, (size_t)n, &pk_rng_system, now, &o) != PK_OK)
                    continue;
                done = 1;
                send_all(fd, &from, &o);
                on_link_events(&s, &slots[i], &o, fs, &got);
            }
            if (done || buf[0] != PK_LINK_T_DCR)
                continue; /* dropped: unknown session, replay, forgery */
            /* a new DCR: a free slot, else the oldest unfinished one */
            int pick = -1;
            for (unsigned i = 0; i < MAX_LINKS && pick < 0; i++)
                if (!slots[i].used)
                    pick = (int)i;
            for (unsigned i = 0; i < MAX_LINKS && pick < 0; i++)
                if (pk_link_state(&slots[i].l) != PK_LINK_S_ESTABLISHED)
                    pick = (int)i;
            if (pick < 0) { /* all established: the oldest goes (its file stays) */
                pick = 0;
                for (unsigned i = 1; i < MAX_LINKS; i++)
                    if (slots[i].born < slots[pick].born)
                        pick = (int)i;
            }
            slot_t *sl = &slots[pick];
            pk_link_clear(&sl->l);
            sl->used = 0;
            if (pk_link_init(&sl->l, &lc, PK_LINK_RESPONDER) != PK_OK)
                continue;
            pk_out_reset(&o);
            rc = pk_link_input(&sl->l, buf, (size_t)n, &pk_rng_system, now, &o);
            if (rc != PK_OK) {
                if (rc == PK_ERR_NOTFOUND)
                    fprintf(stderr, "dropped a DCR from %s: unknown KSI or peer\n", fs);
                pk_link_clear(&sl->l);
                continue;
            }
            sl->used = 1;
            sl->born = now;
            send_all(fd, &from, &o);
            on_link_events(&s, sl, &o, fs, &got);
        }
    }
    if (count && got < count && !g_stop) {
        pk_dcli_fail("listen", "timeout after %llu s: %llu of %llu messages", timeout, got, count);
        goto out;
    }
    ret = 0;
out:
    for (unsigned i = 0; i < MAX_LINKS; i++) {
        pk_link_clear(&slots[i].l);
        slots[i].used = 0;
    }
    if (fd >= 0)
        close(fd);
    if (nfd >= 0)
        close(nfd);
    pk_reg_dev_clear(&d);
    pk_dstate_clear(&s);
    return ret;
}

/* ---------------- send ---------------- */

static const pk_conf_key_t send_keys[] = {
    {"dir", "DIR    the device's state directory", NULL, 0},
    {"to", "ADDR   where the peer listens (host:port)", NULL, 0},
    {"new", "open a new link even if one to PEER is stored", NULL, 1},
    {"tries", "N      sends of the DCR / LINK_REQ before giving up (1..16, default 5)", NULL, 0},
    {"rto-ms", "MS     first retransmission timeout (default 300)", NULL, 0},
};

/* Option 2: LINK_REQ to the node, wait for the LINK_IND (or LINK_REJ). */
static int ask_node(pk_dstate_t *s, pk_reg_dev_t *d, const pk_reg_id_t *peer,
                    unsigned long long tries, unsigned long long rto)
{
    static uint8_t arena[4096], buf[DGRAM_MAX];
    pk_addr_t node;
    pk_out_t o;
    int fd = node_socket("send", s, &node), ret = 1;
    if (fd < 0)
        return 1;
    pk_out_init(&o, arena, sizeof arena);
    for (unsigned long long t = 0; t < tries && !g_stop; t++) {
        pk_out_reset(&o);
        if (pk_reg_dev_link_request(d, peer, &o) != PK_OK) {
            pk_dcli_fail("send", "cannot make a link request");
            goto out;
        }
        if (pk_dstate_save_reg(s, d) != PK_OK) { /* the counter is stored before it is used */
            pk_dcli_fail("send", "cannot write %s/registration", s->dir);
            goto out;
        }
        send_all(fd, &node, &o);
        uint64_t end = pk_now_mono_ms() + (rto << (t < 6 ? t : 6));
        for (int guard = 0; guard < 1000; guard++) {
            uint64_t now = pk_now_mono_ms();
            if (now >= end)
                break;
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, (int)(end - now)) <= 0)
                continue;
            pk_addr_t from;
            ssize_t n;
            while ((n = recv_from(fd, buf, sizeof buf, &from)) > 0) {
                const pk_act_t *a;
                if (!pk_addr_eq(&from, &node))
                    continue;
                pk_out_reset(&o);
                if (pk_reg_dev_input(d, buf, (size_t)n, pk_now_mono_ms(), &o) != PK_OK)
                    continue;
                (void)pk_dstate_save_reg(s, d);
                if (has_event(&o, PK_REG_EV_LINK_REJ, &a) && a->len == peer->len + 1u &&
                    memcmp(a->data, peer->b, peer->len) == 0) {
                    uint8_t why = a->data[peer->len];
                    pk_dcli_fail("send", "node %s refused a link to %.*s: %s", s->node_addr,
                                 (int)peer->len, (const char *)peer->b,
                                 why == PK_REG_REJ_DENIED    ? "not allowed"
                                 : why == PK_REG_REJ_UNKNOWN ? "peer unknown"
                                                             : "busy, try later");
                    goto out;
                }
                uint32_t ksi;
                if (pk_device_link_ksi(d, peer, &ksi) == PK_OK) {
                    ret = 0;
                    goto out;
                }
            }
        }
    }
    pk_dcli_fail("send", "node %s did not answer after %llu tries", s->node_addr, tries);
out:
    close(fd);
    return ret;
}

static int cmd_send(int argc, char **argv)
{
    static pk_conf_t c;
    static pk_dstate_t s;
    static pk_reg_dev_t d;
    static pk_link_t l;
    static uint8_t arena[8192], arena2[4096], buf[DGRAM_MAX];
    char *pos[3];
    int npos = 0, rc, fd = -1, ret = 1, reused = 0;
    unsigned long long tries = DEF_TRIES, rto = DEF_RTO_MS;
    pk_addr_t to;
    pk_out_t o, hs;
    pk_reg_id_t peer;

    if (pk_dcli_want_help(argc, argv)) {
        printf("usage: proxkey device send PEER MESSAGE --dir DIR --to ADDR [--new]\n"
               "                           [--tries N] [--rto-ms MS]\n"
               "Sends MESSAGE to PEER over a direct link: reuses the stored link to PEER,\n"
               "or opens one (DCR -> SMC -> SMCOMPLETE) with the root key for PEER\n"
               "(option 1) or with the KSI the node indicates (option 2: LINK_REQ first).\n");
        pk_conf_init(&c, send_keys, sizeof send_keys / sizeof *send_keys);
        pk_conf_help(&c);
        return 0;
    }
    if ((rc = parse("send", &c, send_keys, sizeof send_keys / sizeof *send_keys, argc, argv, pos, 3,
                    &npos)))
        return rc;
    if (npos != 2)
        return pk_dcli_usage("send", "wants exactly two arguments: PEER MESSAGE");
    const char *dir = pk_conf_get(&c, "dir"), *ts = pk_conf_get(&c, "to");
    const char *msg = pos[1];
    size_t mlen = strlen(msg);
    if (!dir)
        return pk_dcli_usage("send", "--dir DIR is required");
    if (!ts)
        return pk_dcli_usage("send", "--to ADDR is required");
    if (pk_reg_id_set(&peer, pos[0], strlen(pos[0])) != PK_OK)
        return pk_dcli_usage("send", "PEER must be 1..64 bytes of UTF-8");
    if (mlen > PK_LINK_DATA_PT_MAX)
        return pk_dcli_usage("send", "MESSAGE is longer than 1400 bytes");
    if ((rc = parse_addr("send", "--to", ts, &to)) ||
        (rc = parse_u("send", "--tries", pk_conf_get(&c, "tries"), 1, 16, &tries)) ||
        (rc = parse_u("send", "--rto-ms", pk_conf_get(&c, "rto-ms"), 1, 60000, &rto)))
        return rc;
    if (load_state("send", dir, &s))
        return 1;
    if (load_reg("send", &s, &d))
        goto out;
    if (pk_reg_id_eq(&peer, &s.id)) {
        pk_dcli_fail("send", "PEER is this device itself");
        goto out;
    }
    if (lock_state("send", &s))
        goto out;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    pk_link_cfg_t lc = link_cfg(&s, &d, rto, tries);
    pk_out_init(&o, arena, sizeof arena);
    pk_out_init(&hs, arena2, sizeof arena2);
    {
        pk_addr_t any; /* bound now, so the trace (PROXKEY_TRACE) shows the port */
        (void)pk_addr_parse(to.ss.ss_family == AF_INET6 ? "[::]:0" : "0.0.0.0:0", &any, NULL);
        fd = udp_socket(&any, to.ss.ss_family);
    }
    if (fd < 0) {
        pk_dcli_fail("send", "socket: %s", strerror(errno));
        goto out;
    }

    /* 1. a stored link to the same peer at the same address */
    char stored_to[PK_DSTATE_ADDR_MAX];
    if (!pk_conf_flag(&c, "new") &&
        pk_dstate_load_link(&s, PK_LINK_INITIATOR, peer.b, peer.len, &lc, &l, stored_to) == PK_OK) {
        pk_addr_t st;
        if (pk_addr_parse(stored_to, &st, NULL) == PK_OK && pk_addr_eq(&st, &to))
            reused = 1;
        else
            pk_link_clear(&l);
    }

    /* 2. otherwise a new link: KSI from the pair key (option 1) or the node (option 2) */
    if (!reused) {
        uint32_t ksi;
        if (pk_device_link_ksi(&d, &peer, &ksi) != PK_OK || pk_conf_flag(&c, "new")) {
            if (d.keys.mode != PK_REG_MODE_POOL) {
                if (pk_reg_dev_pair_ksi(&d, &peer, &ksi) != PK_OK) {
                    pk_dcli_fail("send",
                                 "unknown peer '%.*s': no root key for it (see 'proxkey device "
                                 "keys --dir %s')",
                                 (int)peer.len, (const char *)peer.b, dir);
                    goto out;
                }
            } else {
                if (ask_node(&s, &d, &peer, tries, rto))
                    goto out;
                if (pk_device_link_ksi(&d, &peer, &ksi) != PK_OK)
                    goto out;
            }
        }
        if (pk_link_init(&l, &lc, PK_LINK_INITIATOR) != PK_OK ||
            pk_link_connect(&l, peer.b, peer.len, ksi, &pk_rng_system, pk_now_mono_ms(), &hs) !=
                PK_OK) {
            pk_dcli_fail("send", "cannot open a link to '%.*s' with KSI 0x%08x", (int)peer.len,
                         (const char *)peer.b, ksi);
            goto out;
        }
        send_all(fd, &to, &hs);
        for (int guard = 0; guard < 10000 && !g_stop; guard++) {
            uint64_t now = pk_now_mono_ms(), dl = pk_link_next_deadline(&l);
            int wait = dl == UINT64_MAX ? 1000 : (dl > now ? (int)(dl - now) : 0);
            struct pollfd p = {fd, POLLIN, 0};
            int pr = poll(&p, 1, wait);
            now = pk_now_mono_ms();
            pk_out_reset(&hs);
            if (pr > 0) {
                pk_addr_t from;
                ssize_t n;
                while ((n = recv_from(fd, buf, sizeof buf, &from)) > 0) {
                    if (!pk_addr_eq(&from, &to))
                        continue;
                    if (pk_link_input(&l, buf, (size_t)n, &pk_rng_system, now, &hs) == PK_OK)
                        break;
                }
            } else {
                (void)pk_link_timeout(&l, now, &hs);
                send_all(fd, &to, &hs); /* DCR retransmission */
                pk_out_reset(&hs);
            }
            if (pk_link_state(&l) == PK_LINK_S_ESTABLISHED || pk_link_state(&l) == PK_LINK_S_FAILED)
                break;
        }
        if (pk_link_state(&l) != PK_LINK_S_ESTABLISHED) {
            pk_dcli_fail("send", "peer '%.*s' at %s did not answer after %llu tries", (int)peer.len,
                         (const char *)peer.b, ts, tries);
            goto out;
        }
        /* hs holds the SMCOMPLETE: sent below, before the data */
    }

    /* 3. seal, store the link (counter) BEFORE the record leaves, send */
    if (pk_link_send(&l, (const uint8_t *)msg, mlen, &o) != PK_OK) {
        pk_dcli_fail("send", "cannot seal the message");
        goto out;
    }
    if (pk_dstate_save_link(&s, &l, ts) != PK_OK) {
        pk_dcli_fail("send", "cannot write the link state in %s", dir);
        goto out;
    }
    if (!reused)
        send_all(fd, &to, &hs);
    send_all(fd, &to, &o);
    printf("sent to=%.*s sid=0x%04x ksi=0x%08x bytes=%zu%s\n", (int)peer.len, (const char *)peer.b,
           pk_link_session_id(&l), l.ksi, mlen, reused ? " (stored link)" : " (new link)");
    ret = 0;
out:
    if (fd >= 0)
        close(fd);
    pk_link_clear(&l);
    pk_reg_dev_clear(&d);
    pk_dstate_clear(&s);
    return ret;
}

/* ---------------- dispatch ---------------- */

static int cmd_poll(int argc, char **argv)
{
    if (pk_cmd_device_poll)
        return pk_cmd_device_poll(argc, argv);
    fprintf(stderr, "proxkey device poll: not built into this proxkey (src/gts)\n");
    return 1;
}

static const pk_cmd_t device_cmds[] = {
    {"init", cmd_init, "provision a state directory with the device's identity and key"},
    {"register", cmd_register, "register with a node (4 messages over UDP), store the key set"},
    {"keys", cmd_keys, "print the key table (KSI, peer, mode, expiry; keys masked)"},
    {"listen", cmd_listen, "accept direct links and print what arrives"},
    {"send", cmd_send, "open or reuse a direct link to PEER and send a message"},
    {"poll", cmd_poll, "poll the trigger server (proxkey device poll --help)"},
    {"mk", pk_cmd_device_mk, "master keys: client-to-client keys (proxkey device mk --help)"},
    {NULL, NULL, NULL},
};

int pk_cmd_device(int argc, char **argv)
{
    static const pk_cli_group_t grp = {
        "proxkey device", "usage: proxkey device <command> --dir DIR [options]",
        "The device side: register with a node, keep the key table, open direct\n"
        "links to other devices and send or receive over them.",
        device_cmds};
    int rc;
    const pk_cmd_t *c = pk_cli_select(&grp, argc, argv, &rc);
    if (!c)
        return rc;
    g_stop = 0;
    const char *tr = getenv("PROXKEY_TRACE");
    g_trace = tr && tr[0] && strcmp(tr, "0") != 0;
    if (g_trace) {
        pk_log_set_level(PK_LOG_DEBUG);
        pk_log_set_role("device");
    }
    return c->fn(argc - 1, argv + 1);
}
