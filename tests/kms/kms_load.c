/*
 * Load generator for `proxkey kms serve` (not a ctest: run by hand):
 * C mutual-TLS connections, each keeping W KMS_VEC_REQ in flight, for S
 * seconds; prints vectors per second.
 *
 *   test_kms_load ADDR CA CERT KEY NODE_CN DEVICE CONNS WINDOW SECONDS
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/loop.h"
#include "net/tls.h"
#include "proto/kms/kms.h"

static uint8_t req[PK_REG_NET_MAX];
static size_t reqlen;
static uint64_t done, errors;
static unsigned window;
static int open_conns;

static void on_open(pk_tls_conn_t *c, void *ud)
{
    (void)ud;
    open_conns++;
    for (unsigned i = 0; i < window; i++)
        (void)pk_tls_conn_send(c, req, reqlen);
}

static void on_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    if (n == PK_REG_KMS_VEC_RESP_LEN && p[0] == PK_REG_T_KMS_VEC_RESP)
        done++;
    else
        errors++;
    (void)pk_tls_conn_send(c, req, reqlen);
}

static void on_close(pk_tls_conn_t *c, int why, void *ud)
{
    (void)c;
    (void)ud;
    fprintf(stderr, "connection closed: %s\n", pk_strerror(why));
    open_conns--;
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: %s ADDR CA CERT KEY NODE DEVICE CONNS WINDOW SECONDS\n", argv[0]);
        return 2;
    }
    unsigned conns = (unsigned)atoi(argv[7]), secs = (unsigned)atoi(argv[9]);
    window = (unsigned)atoi(argv[8]);
    pk_reg_net_t q = {.type = PK_REG_T_KMS_VEC_REQ};
    if (pk_reg_id_set(&q.a, argv[5], strlen(argv[5])) ||
        pk_reg_id_set(&q.b, argv[6], strlen(argv[6])) ||
        pk_reg_net_encode(&q, req, sizeof req, &reqlen))
        return 2;
    pk_loop_t *loop = pk_loop_new();
    pk_tls_ctx_t *ctx = NULL;
    if (!loop || pk_tls_ctx_new(&ctx, PK_TLS_CLIENT, argv[2], argv[3], argv[4]) != PK_OK)
        return 1;
    pk_tls_cbs_t cbs = {.on_open = on_open, .on_frame = on_frame, .on_close = on_close};
    pk_tls_conn_t *cs[64];
    for (unsigned i = 0; i < conns && i < 64; i++)
        if (pk_tls_connect(loop, ctx, argv[1], "kms", &cbs, &cs[i]) != PK_OK)
            return 1;
    uint64_t t0 = pk_now_mono_ms(), warm = 0, start = 0;
    while (pk_now_mono_ms() - t0 < 1000ull * (secs + 1)) {
        pk_loop_run_once(loop, 10);
        if (!start && pk_now_mono_ms() - t0 >= 1000) { /* 1 s warm-up */
            start = pk_now_mono_ms();
            warm = done;
        }
    }
    uint64_t el = pk_now_mono_ms() - start;
    printf("vectors=%llu errors=%llu seconds=%.2f rate=%.0f/s conns=%u window=%u\n",
           (unsigned long long)(done - warm), (unsigned long long)errors, el / 1000.0,
           (done - warm) * 1000.0 / (double)el, conns, window);
    for (unsigned i = 0; i < conns && i < 64 && open_conns > 0; i++)
        (void)0;
    pk_tls_ctx_free(ctx);
    pk_loop_free(loop);
    return 0;
}
