/*
 * `proxkey demo trigger`: a gts on loopback (a child process over a SQLite
 * store in a temporary directory), three devices, queued commands delivered,
 * and a lost response recovered by retransmission (the seed's figure 2).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/crypto.h"
#include "core/log.h"
#include "gts.h"
#include "net/addr.h"
#include "net/loop.h"
#include "proto/trigger/dev.h"

/* One exchange over UDP; drop_first: throw the first response away. */
static int demo_exchange(int fd, pk_trig_dev_t *d, int drop_first, pk_trig_dev_msg_t *msg,
                         const char *name)
{
    uint8_t pl[PK_TRIG_POLL_LEN], buf[PK_TRIG_RESP_MAX + 1];
    uint64_t now = pk_now_mono_ms();
    if (pk_trig_dev_poll(d, now, pl) != PK_OK)
        return -1;
    printf("  %s -> gts  poll try=1 UID=%02x%02x%02x%02x...\n", name, pl[4], pl[5], pl[6], pl[7]);
    (void)send(fd, pl, sizeof pl, 0);
    for (int guard = 0; guard < 100; guard++) {
        now = pk_now_mono_ms();
        uint64_t dl = pk_trig_dev_next_deadline(d);
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, dl > now ? (int)(dl - now) : 0);
        now = pk_now_mono_ms();
        if (pr > 0) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0)
                continue;
            if (drop_first) {
                drop_first = 0;
                printf("  gts -> %s  response of %zd bytes LOST (dropped by the demo)\n", name, r);
                continue;
            }
            int rc = pk_trig_dev_input(d, buf, (size_t)r, now, msg);
            if (rc != PK_OK) {
                printf("  %s: response rejected: %s\n", name, pk_strerror(rc));
                continue;
            }
            (void)pk_trig_dev_saved(d, now); /* the demo's device "stores" in memory */
            printf("  gts -> %s  %zd bytes, verified: Sent=%u, next UID=%02x%02x%02x%02x...\n",
                   name, r, msg->sent, d->uid[0], d->uid[1], d->uid[2], d->uid[3]);
            return 0;
        }
        int snd = 0;
        if (pk_trig_dev_timeout(d, now, pl, &snd) == PK_ERR_TIMEOUT)
            return -1;
        if (snd) {
            printf("  %s: timeout, Resend_Counter=%u -> retransmit the same UID (try=%u)\n", name,
                   d->resend, pl[2]);
            (void)send(fd, pl, sizeof pl, 0);
        }
    }
    return -1;
}

static void show_cmd(const char *name, const pk_trig_dev_msg_t *m)
{
    const char *nm = pk_trig_cmd_name(m->cmd);
    printf("  %s executes: %s", name, nm ? nm : "?");
    if (m->cmd == PK_TRIG_CMD_POLL_FASTER || m->cmd == PK_TRIG_CMD_POLL_SLOWER)
        printf(" (interval now %us)", m->interval_s);
    else if (m->arglen)
        printf(" %.*s", (int)m->arglen, (const char *)m->arg);
    printf("\n");
}

int pk_demo_trigger(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/proxkey-demo-gts-XXXXXX", store[256], provpath[300];
    int rc = 1, pfd[2] = {-1, -1}, fd = -1;
    pid_t child = -1;
    gts_db_t db;
    static pk_trig_dev_msg_t msg;
    pk_trig_dev_t devs[3];
    const char *names[3] = {"meter-0", "meter-1", "meter-2"};

    if (!mkdtemp(dir) || pk_crypto_init() != PK_OK)
        return 1;
    snprintf(store, sizeof store, "%s/gts.db", dir);
    snprintf(provpath, sizeof provpath, "%s/prov.txt", dir);
    printf("gts store %s; provisioning 3 devices (K1 and UID1 random, UID unrelated to the name)\n",
           store);
    FILE *prov = fopen(provpath, "w+");
    if (!prov || gts_db_open(&db, store, NULL, 1) != PK_OK)
        goto out;
    if (gts_db_add(&db, "meter", 3, 0, 0, prov) != PK_OK) {
        gts_db_close(&db);
        goto out;
    }
    uint8_t iv[4] = {0, 0, 0, 30};
    int q = gts_db_send(&db, "meter-0", PK_TRIG_CMD_UPDATE,
                        (const uint8_t *)"https://ota.example/fw-2.1", 26, NULL, NULL);
    q |= gts_db_send(&db, "meter-1", PK_TRIG_CMD_POLL_FASTER, iv, 4, NULL, NULL);
    q |= gts_db_send(&db, "meter-2", PK_TRIG_CMD_APP, (const uint8_t *)"set-tariff:night", 16, NULL,
                     NULL);
    q |= gts_db_send(&db, "meter-2", PK_TRIG_CMD_KEYGEN, NULL, 0, NULL, NULL);
    gts_db_close(&db);
    if (q != PK_OK)
        goto out;
    printf(
        "queued: meter-0 update URL; meter-1 poll-faster 30s; meter-2 app payload, then keygen\n");
    rewind(prov);
    pk_trig_dev_cfg_t cfg = {300, 5, 1, 86400};
    for (int i = 0; i < 3; i++) {
        char nm[80], kh[64], uh[64];
        unsigned no;
        uint8_t k[16], u[16];
        if (fscanf(prov, "%79s %u %63s %63s", nm, &no, kh, uh) != 4 ||
            gts_unhex(kh, k, 16) != PK_OK || gts_unhex(uh, u, 16) != PK_OK)
            goto out;
        pk_trig_dev_init(&devs[i], &cfg, k, u, 60, 0);
        pk_wipe(k, sizeof k);
        pk_wipe(kh, sizeof kh);
    }

    /* the gts in a child process (the store is opened after the fork) */
    if (pipe(pfd) != 0)
        goto out;
    fflush(stdout);
    child = fork();
    if (child == 0) {
        gts_server_t *s;
        gts_serve_opts_t o = {.store = store, .listen = "127.0.0.1:0"};
        pk_log_set_role("gts");
        pk_log_set_level(PK_LOG_WARN);
        uint16_t port = 0;
        if (gts_server_new(&s, &o) == PK_OK)
            port = gts_server_port(s);
        if (write(pfd[1], &port, sizeof port) != (ssize_t)sizeof port || !port)
            _exit(1);
        gts_server_run(s);
        gts_server_free(s);
        _exit(0);
    }
    uint16_t port = 0;
    if (child < 0 || read(pfd[0], &port, sizeof port) != (ssize_t)sizeof port || !port)
        goto out;
    printf("gts listening on 127.0.0.1:%u (UDP)\n", port);
    char addrs[64];
    pk_addr_t to;
    snprintf(addrs, sizeof addrs, "127.0.0.1:%u", port);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (pk_addr_parse(addrs, &to, NULL) != PK_OK || fd < 0 ||
        connect(fd, (struct sockaddr *)&to.ss, to.len) != 0)
        goto out;

    int fail = 0;
    printf("\n-- round 1: every device polls; meter-0's response is lost (seed figure 2)\n");
    for (int i = 0; i < 3; i++) {
        if (demo_exchange(fd, &devs[i], i == 0, &msg, names[i]) != 0) {
            fail = 1;
            continue;
        }
        show_cmd(names[i], &msg);
        if (i == 0 && msg.sent != 2)
            fail = 1;
    }
    printf("\n-- round 2: the devices poll with their new identities; the server\n"
           "   retires the old ones and counts the commands as delivered\n");
    for (int i = 0; i < 3; i++) {
        if (demo_exchange(fd, &devs[i], 0, &msg, names[i]) != 0) {
            fail = 1;
            continue;
        }
        show_cmd(names[i], &msg);
    }
    printf("\n-- an eavesdropper replays meter-2's first poll: no answer\n");
    {
        uint8_t old[PK_TRIG_POLL_LEN], buf[128];
        rewind(prov);
        char nm[80], kh[64], uh[64];
        unsigned no;
        for (int i = 0; i < 3; i++)
            if (fscanf(prov, "%79s %u %63s %63s", nm, &no, kh, uh) != 4)
                fail = 1;
        pk_wipe(kh, sizeof kh);
        uint8_t u[16];
        if (gts_unhex(uh, u, 16) != PK_OK)
            fail = 1;
        pk_trig_poll_build(1, u, old);
        (void)send(fd, old, sizeof old, 0);
        struct pollfd p = {fd, POLLIN, 0};
        int got = poll(&p, 1, 300) > 0 && recv(fd, buf, sizeof buf, 0) > 0;
        printf("  replayed UID1 of meter-2: %s\n",
               got ? "ANSWERED (wrong)" : "no answer (DoS counter)");
        if (got)
            fail = 1;
    }
    usleep(300 * 1000); /* let the server's durable state settle */
    printf("\n-- proxkey gts status meter-2\n");
    fflush(stdout);
    {
        char *av[] = {"gts", "status", "meter-2", "--store", store, NULL};
        if (pk_cmd_gts(5, av) != 0)
            fail = 1;
    }
    rc = fail;
out:
    if (fd >= 0)
        close(fd);
    if (child > 0) {
        kill(child, SIGTERM);
        waitpid(child, NULL, 0);
    }
    if (pfd[0] >= 0) {
        close(pfd[0]);
        close(pfd[1]);
    }
    if (prov)
        fclose(prov);
    static const char *const files[] = {"gts.db", "gts.db-wal", "gts.db-shm", "gts.db.kek",
                                        "prov.txt"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[400];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        (void)unlink(p);
    }
    (void)rmdir(dir);
    for (int i = 0; i < 3; i++)
        pk_trig_dev_clear(&devs[i]);
    printf("\ndemo trigger: %s\n", rc == 0 ? "ok" : "FAILED");
    return rc;
}
