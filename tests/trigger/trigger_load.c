/*
 * Load driver for the kill -9 test: N devices (from a provisioning file of
 * `gts device add --out`), one UDP socket each, polling a gts every second
 * with retransmission. Exits 0 when every device has received the APP
 * commands "c1".."cNCMD" exactly once and in order and then completed one
 * more exchange (so the server has seen the delivery); 1 on a duplicate,
 * a reordering or the time limit.
 *
 * usage: trigger_load PROVFILE PORT NCMD SECONDS
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/loop.h"
#include "proto/trigger/dev.h"

#define MAXDEV 2000

static int unhex(const char *s, uint8_t *o, size_t n)
{
    if (strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        o[i] = (uint8_t)v;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static pk_trig_dev_t dev[MAXDEV];
    static int fds[MAXDEV], got[MAXDEV], after[MAXDEV];
    static pk_trig_dev_msg_t msg;
    if (argc != 5)
        return 2;
    FILE *f = fopen(argv[1], "r");
    int port = atoi(argv[2]), ncmd = atoi(argv[3]), secs = atoi(argv[4]);
    if (!f)
        return 2;
    pk_trig_dev_cfg_t cfg = {150, 254, 1, 3600};
    char name[80], kh[64], uh[64];
    unsigned no;
    int n = 0;
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    to.sin_addr.s_addr = htonl(0x7f000001);
    int ep = epoll_create1(0);
    uint64_t t0 = pk_now_mono_ms();
    while (n < MAXDEV && fscanf(f, "%79s %u %63s %63s", name, &no, kh, uh) == 4) {
        uint8_t k[16], u[16];
        if (unhex(kh, k, 16) || unhex(uh, u, 16))
            return 2;
        pk_trig_dev_init(&dev[n], &cfg, k, u, 1, t0 + (uint64_t)(n % 1000));
        fds[n] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fds[n] < 0 || connect(fds[n], (struct sockaddr *)&to, sizeof to) != 0)
            return 2;
        struct epoll_event ev = {EPOLLIN, {.u32 = (uint32_t)n}};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[n], &ev);
        n++;
    }
    fclose(f);
    uint64_t end = t0 + (uint64_t)secs * 1000, polls = 0, exch = 0, last_report = t0;
    int dup = 0, bad_order = 0, done = 0;
    while (pk_now_mono_ms() < end && !done && !dup && !bad_order) {
        struct epoll_event evs[64];
        int k = epoll_wait(ep, evs, 64, 20);
        uint64_t now = pk_now_mono_ms();
        for (int e = 0; e < k; e++) {
            int i = (int)evs[e].data.u32;
            uint8_t buf[PK_TRIG_RESP_MAX + 1];
            ssize_t len;
            while ((len = recv(fds[i], buf, sizeof buf, 0)) > 0) {
                if (pk_trig_dev_input(&dev[i], buf, (size_t)len, now, &msg) != PK_OK)
                    continue;
                (void)pk_trig_dev_saved(&dev[i], now);
                exch++;
                if (msg.cmd == PK_TRIG_CMD_APP) {
                    char exp[16];
                    int l = snprintf(exp, sizeof exp, "c%d", got[i] + 1);
                    if (msg.arglen == (uint16_t)l && memcmp(msg.arg, exp, (size_t)l) == 0) {
                        got[i]++;
                    } else {
                        int seen = 0;
                        for (int c = 1; c <= got[i]; c++) {
                            l = snprintf(exp, sizeof exp, "c%d", c);
                            if (msg.arglen == (uint16_t)l && !memcmp(msg.arg, exp, (size_t)l))
                                seen = 1;
                        }
                        if (seen) {
                            dup++;
                            fprintf(stderr, "device %d: duplicate command %.*s\n", i,
                                    (int)msg.arglen, (const char *)msg.arg);
                        } else {
                            bad_order++;
                            fprintf(stderr, "device %d: unexpected command %.*s\n", i,
                                    (int)msg.arglen, (const char *)msg.arg);
                        }
                    }
                } else if (got[i] >= ncmd) {
                    after[i]++;
                }
            }
        }
        done = 1;
        for (int i = 0; i < n; i++) {
            uint8_t p[PK_TRIG_POLL_LEN];
            int snd = 0;
            if (dev[i].state == PK_TRIG_DEV_IDLE && pk_trig_dev_next_deadline(&dev[i]) <= now) {
                if (pk_trig_dev_poll(&dev[i], now, p) == PK_OK)
                    snd = 1;
            } else {
                (void)pk_trig_dev_timeout(&dev[i], now, p, &snd);
            }
            if (snd) {
                polls++;
                (void)send(fds[i], p, sizeof p, 0);
            }
            if (got[i] < ncmd || after[i] < 1)
                done = 0;
        }
        if (now - last_report >= 2000) {
            last_report = now;
            int complete = 0;
            for (int i = 0; i < n; i++)
                complete += got[i] >= ncmd && after[i] >= 1;
            printf("t=%llus polls=%llu exchanges=%llu devices complete=%d/%d\n",
                   (unsigned long long)((now - t0) / 1000), (unsigned long long)polls,
                   (unsigned long long)exch, complete, n);
            fflush(stdout);
        }
    }
    int complete = 0;
    for (int i = 0; i < n; i++)
        complete += got[i] >= ncmd && after[i] >= 1;
    printf("result: devices=%d complete=%d duplicates=%d out_of_order=%d polls=%llu "
           "exchanges=%llu\n",
           n, complete, dup, bad_order, (unsigned long long)polls, (unsigned long long)exch);
    return done && !dup && !bad_order ? 0 : 1;
}
