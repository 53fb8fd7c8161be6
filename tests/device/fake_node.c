/*
 * A stand-in serving node for the `proxkey device` CLI tests, until the node
 * and kms daemons land: one UDP socket, the real node core (pk_reg_node_*),
 * the real kms functions (pk_reg_kms_vector) over an in-memory device table,
 * and option-2 authorisation (LINK_REQ -> LINK_IND to both devices).
 *
 *   fake_node ADDR pairs|pool ID=HEXKEY... [--deny A:B] [--max-s S]
 *
 * Prints "ready PORT" on stdout once bound; exits after S seconds (default
 * 60) or on SIGTERM. Node id "node-1".
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/addr.h"
#include "proto/reg/reg.h"

#define MAXD 8

typedef struct fdev {
    pk_reg_id_t id;
    uint8_t k[32];
    size_t klen;
    pk_reg_keyset_t keys;
    int registered;
    pk_addr_t addr;
    pk_record_t chan;
} fdev_t;

static fdev_t devs[MAXD];
static unsigned ndev;
static pk_addr_t srcs[64];
static unsigned nsrc;
static volatile sig_atomic_t stop;
static void on_sig(int s)
{
    (void)s;
    stop = 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t src_handle(const pk_addr_t *a)
{
    for (unsigned i = 0; i < nsrc; i++)
        if (pk_addr_eq(&srcs[i], a))
            return i + 1;
    if (nsrc == 64)
        return 0;
    srcs[nsrc++] = *a;
    return nsrc;
}

static fdev_t *find(const pk_reg_id_t *id)
{
    for (unsigned i = 0; i < ndev; i++)
        if (pk_reg_id_eq(&devs[i].id, id))
            return &devs[i];
    return NULL;
}

static int hexkey(const char *h, uint8_t *k, size_t *klen)
{
    size_t n = strlen(h);
    if (n != 32 && n != 64)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1)
            return -1;
        k[i] = (uint8_t)v;
    }
    *klen = n / 2;
    return 0;
}

int main(int argc, char **argv)
{
    static pk_reg_half_t half[16];
    static pk_reg_bucket_t bucket[16];
    static pk_reg_node_t node;
    static uint8_t arena[16384], buf[4096];
    char deny[2][80] = {"", ""};
    unsigned max_s = 60;
    uint16_t next_sid = 0x100;
    uint32_t next_ksi = 0;
    pk_reg_id_t node_id;
    pk_addr_t la;
    pk_out_t o;

    if (argc < 4 || pk_addr_parse(argv[1], &la, NULL) != PK_OK)
        return fprintf(stderr, "usage: fake_node ADDR pairs|pool ID=HEX...\n"), 2;
    int pool = strcmp(argv[2], "pool") == 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--max-s") == 0 && i + 1 < argc) {
            max_s = (unsigned)atoi(argv[++i]);
            continue;
        }
        if (strcmp(argv[i], "--deny") == 0 && i + 1 < argc) {
            char *c = strchr(argv[++i], ':');
            if (!c)
                return 2;
            snprintf(deny[0], sizeof deny[0], "%.*s", (int)(c - argv[i]), argv[i]);
            snprintf(deny[1], sizeof deny[1], "%s", c + 1);
            continue;
        }
        char *eq = strchr(argv[i], '=');
        if (!eq || ndev == MAXD || pk_reg_id_set(&devs[ndev].id, argv[i], (size_t)(eq - argv[i])) ||
            hexkey(eq + 1, devs[ndev].k, &devs[ndev].klen))
            return fprintf(stderr, "fake_node: bad device '%s'\n", argv[i]), 2;
        ndev++;
    }
    if (pk_crypto_init() != PK_OK)
        return 1;
    /* key sets: a root key per pair (option 1) or one pool for all (option 2) */
    if (pool) {
        pk_reg_keyset_t ks;
        memset(&ks, 0, sizeof ks);
        ks.mode = PK_REG_MODE_POOL;
        ks.n = 4;
        for (unsigned i = 0; i < 4; i++) {
            ks.k[i].ksi = 0x2000 + i;
            if (pk_random(ks.k[i].key, 32) != PK_OK)
                return 1;
        }
        for (unsigned d = 0; d < ndev; d++)
            devs[d].keys = ks;
    } else {
        uint32_t ksi = 0x1000;
        for (unsigned d = 0; d < ndev; d++)
            devs[d].keys.mode = PK_REG_MODE_PAIRS;
        for (unsigned a = 0; a < ndev; a++)
            for (unsigned b = a + 1; b < ndev; b++) {
                pk_reg_key_t *ka = &devs[a].keys.k[devs[a].keys.n++];
                pk_reg_key_t *kb = &devs[b].keys.k[devs[b].keys.n++];
                ka->ksi = kb->ksi = ksi++;
                if (pk_random(ka->key, 32) != PK_OK)
                    return 1;
                memcpy(kb->key, ka->key, 32);
                ka->peer = devs[b].id;
                kb->peer = devs[a].id;
            }
    }
    (void)pk_reg_id_set(&node_id, "node-1", 6);
    pk_reg_node_cfg_t cfg = {.node_id = node_id,
                             .half = half,
                             .nhalf = 16,
                             .bucket = bucket,
                             .nbucket = 16,
                             .burst = 20,
                             .per_sec = 20,
                             .half_ttl_ms = 30000};
    if (pk_reg_node_init(&node, &cfg) != PK_OK)
        return 1;
    int fd = socket(la.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&la.ss, la.len) != 0)
        return perror("fake_node: bind"), 1;
    (void)pk_addr_local(fd, &la);
    printf("ready %u\n", pk_addr_port(&la));
    fflush(stdout);
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    uint64_t end = now_ms() + (uint64_t)max_s * 1000;
    pk_out_init(&o, arena, sizeof arena);
    while (!stop && now_ms() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        pk_addr_t from;
        from.len = sizeof from.ss;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from.ss, &from.len);
        if (n <= 0)
            continue;
        uint64_t src = src_handle(&from), now = now_ms();
        pk_out_reset(&o);
        if (buf[0] == PK_REG_T_LINK_REQ) { /* option 2: FIG. 5 S41..S44 */
            fdev_t *a = NULL;
            for (unsigned i = 0; i < ndev; i++)
                if (devs[i].registered && pk_addr_eq(&devs[i].addr, &from))
                    a = &devs[i];
            uint8_t type = 0;
            pk_reg_link_pt_t m;
            if (!a || pk_reg_chan_open_link(&a->chan, buf, (size_t)n, &type, &m) != PK_OK)
                continue;
            fdev_t *b = find(&m.peer);
            uint8_t out[PK_REG_SEALED_MAX];
            size_t ol = 0;
            int denied = deny[0][0] && m.peer.len == strlen(deny[1]) &&
                         memcmp(m.peer.b, deny[1], m.peer.len) == 0 &&
                         a->id.len == strlen(deny[0]) && memcmp(a->id.b, deny[0], a->id.len) == 0;
            if (!b || !b->registered || denied) {
                pk_reg_link_pt_t r = {.peer = m.peer,
                                      .reason = denied ? PK_REG_REJ_DENIED : PK_REG_REJ_UNKNOWN};
                if (pk_reg_chan_seal_link(&a->chan, PK_REG_T_LINK_REJ, &r, out, sizeof out, &ol) ==
                    PK_OK)
                    sendto(fd, out, ol, 0, (struct sockaddr *)&a->addr.ss, a->addr.len);
                continue;
            }
            pk_reg_link_pt_t ia = {
                .peer = b->id, .role = PK_REG_ROLE_INITIATOR, .ksi = 0x2000 + (next_ksi++ % 4)};
            if (pk_random(ia.param, sizeof ia.param) != PK_OK)
                continue;
            pk_reg_link_pt_t ib = ia;
            ib.peer = a->id;
            ib.role = PK_REG_ROLE_RESPONDER;
            if (pk_reg_chan_seal_link(&b->chan, PK_REG_T_LINK_IND, &ib, out, sizeof out, &ol) ==
                PK_OK)
                sendto(fd, out, ol, 0, (struct sockaddr *)&b->addr.ss, b->addr.len);
            if (pk_reg_chan_seal_link(&a->chan, PK_REG_T_LINK_IND, &ia, out, sizeof out, &ol) ==
                PK_OK)
                sendto(fd, out, ol, 0, (struct sockaddr *)&a->addr.ss, a->addr.len);
            fprintf(stderr, "fake_node: link %.*s -> %.*s ksi=0x%x\n", a->id.len,
                    (const char *)a->id.b, b->id.len, (const char *)b->id.b, ia.ksi);
            continue;
        }
        if (pk_reg_node_input(&node, src, buf, (size_t)n, now, &o) != PK_OK)
            continue;
        for (int round = 0; round < 4; round++) { /* the "kms", in process */
            for (unsigned i = 0; i < o.n; i++) {
                pk_act_t *a = &o.act[i];
                if (a->kind != PK_ACT_EVENT)
                    continue;
                a->kind = 0;
                pk_reg_net_t q;
                if (pk_reg_net_decode(a->data, a->len, &q) != PK_OK)
                    continue;
                if (a->code == PK_REG_EV_NEED_VECTOR) {
                    fdev_t *d = find(&q.b);
                    pk_reg_vector_t v;
                    if (d && pk_reg_kms_vector(d->k, d->klen, &pk_rng_system, q.nonce_d, &q.b,
                                               &node_id, &v) == PK_OK)
                        (void)pk_reg_node_vector(&node, a->dest, &q.b, q.nonce_d, &v, now, &o);
                    pk_wipe(&v, sizeof v);
                } else if (a->code == PK_REG_EV_NEED_KEYS) {
                    fdev_t *d = find(&q.a);
                    if (!d)
                        continue;
                    char tid[32];
                    snprintf(tid, sizeof tid, "tmp-%04x", next_sid);
                    pk_reg_id_t t;
                    (void)pk_reg_id_set(&t, tid, strlen(tid));
                    pk_record_clear(&d->chan);
                    if (pk_reg_node_accept(&node, a->dest, &q.a, next_sid++, &t, &d->keys, &d->chan,
                                           now, &o) == PK_OK) {
                        d->registered = 1;
                        d->addr = srcs[a->dest - 1];
                        fprintf(stderr, "fake_node: registered %.*s\n", d->id.len,
                                (const char *)d->id.b);
                    }
                }
                pk_wipe(&q, sizeof q);
            }
        }
        for (unsigned i = 0; i < o.n; i++)
            if (o.act[i].kind == PK_ACT_SEND && o.act[i].dest >= 1 && o.act[i].dest <= nsrc)
                sendto(fd, o.act[i].data, o.act[i].len, 0,
                       (struct sockaddr *)&srcs[o.act[i].dest - 1].ss, srcs[o.act[i].dest - 1].len);
    }
    for (unsigned i = 0; i < ndev; i++)
        pk_record_clear(&devs[i].chan);
    pk_reg_node_clear(&node);
    close(fd);
    return 0;
}
