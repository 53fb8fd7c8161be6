/*
 * A node-side test client for `proxkey kms serve` (tests/kms/kms_serve.sh):
 * calls the kms over mutual TLS with pk_tls_client_call and checks the
 * answers.
 *
 *   test_kms_client ADDR CA CERT KEY NODE_CN DEVICE DEVICE_KEY_HEX PEER
 *
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/crypto.h"
#include "net/tls.h"
#include "proto/kms/kms.h"
#include "proto/reg/reg.h"

static const char *addr, *node;
static pk_tls_ctx_t *ctx;

static int call(const void *req, size_t len, uint8_t *resp, size_t *rl)
{
    return pk_tls_client_call(ctx, addr, "kms", req, len, resp, PK_KMS_RESP_MAX, rl, 5000);
}

static int net_call(const pk_reg_net_t *q, uint8_t *resp, size_t *rl)
{
    uint8_t req[PK_REG_NET_MAX];
    size_t n = 0;
    if (pk_reg_net_encode(q, req, sizeof req, &n) != PK_OK)
        return PK_ERR_INVAL;
    return call(req, n, resp, rl);
}

static char **argv;

static void test_all(void)
{
    uint8_t k[32], resp[PK_KMS_RESP_MAX];
    size_t rl = 0;
    addr = argv[1];
    node = argv[5];
    check_unhex(argv[7], k, 32);
    CHECK_EQ_INT(pk_tls_ctx_new(&ctx, PK_TLS_CLIENT, argv[2], argv[3], argv[4]), PK_OK);
    if (!ctx)
        return;

    /* a vector, checked against the device key */
    pk_reg_net_t q = {.type = PK_REG_T_KMS_VEC_REQ}, r;
    CHECK_EQ_INT(pk_reg_id_set(&q.a, node, strlen(node)), PK_OK);
    CHECK_EQ_INT(pk_reg_id_set(&q.b, argv[6], strlen(argv[6])), PK_OK);
    memset(q.nonce_d, 0x5A, sizeof q.nonce_d);
    CHECK_EQ_INT(net_call(&q, resp, &rl), PK_OK);
    CHECK_EQ_INT(rl, PK_REG_KMS_VEC_RESP_LEN);
    CHECK_EQ_INT(pk_reg_net_decode(resp, rl, &r), PK_OK);
    uint8_t autn[16], res[16], kreg[32];
    CHECK_EQ_INT(pk_reg_derive(k, 32, r.vec.rand, q.nonce_d, &q.a, &q.b, autn, res, kreg), PK_OK);
    CHECK_MEM(autn, r.vec.autn, 16);
    CHECK_MEM(res, r.vec.xres, 16);
    CHECK_MEM(kreg, r.vec.k_reg, 32);
    printf("vector ok\n");

    /* in another node's name: refused with a 3-byte KMS_ERR */
    pk_reg_net_t q2 = q;
    CHECK_EQ_INT(pk_reg_id_set(&q2.a, "node-other", 10), PK_OK);
    CHECK_EQ_INT(net_call(&q2, resp, &rl), PK_OK);
    CHECK(rl == 3 && resp[0] == PK_KMS_T_ERR && resp[1] == PK_REG_ST_DENIED &&
          resp[2] == PK_REG_T_KMS_VEC_REQ);

    /* root keys of both devices of the pair: the same key and KSI */
    pk_reg_net_t kq = {.type = PK_REG_T_KMS_KEYS_REQ}, kr1, kr2;
    CHECK_EQ_INT(pk_reg_id_set(&kq.a, argv[6], strlen(argv[6])), PK_OK);
    CHECK_EQ_INT(net_call(&kq, resp, &rl), PK_OK);
    CHECK_EQ_INT(pk_reg_net_decode(resp, rl, &kr1), PK_OK);
    CHECK_EQ_INT(pk_reg_id_set(&kq.a, argv[8], strlen(argv[8])), PK_OK);
    CHECK_EQ_INT(net_call(&kq, resp, &rl), PK_OK);
    CHECK_EQ_INT(pk_reg_net_decode(resp, rl, &kr2), PK_OK);
    CHECK(kr1.type == PK_REG_T_KMS_KEYS_RESP && kr1.keys.n == 1 && kr2.keys.n == 1);
    CHECK_EQ_INT(kr1.keys.k[0].ksi, kr2.keys.k[0].ksi);
    CHECK_MEM(kr1.keys.k[0].key, kr2.keys.k[0].key, 32);
    printf("root key ok ksi=%u\n", (unsigned)kr1.keys.k[0].ksi);

    /* the directory now names this node */
    pk_kms_msg_t dm = {.type = PK_KMS_T_DIR_REQ}, dr;
    uint8_t dreq[80];
    size_t dl = 0;
    CHECK_EQ_INT(pk_reg_id_set(&dm.id, argv[6], strlen(argv[6])), PK_OK);
    CHECK_EQ_INT(pk_kms_msg_encode(&dm, dreq, sizeof dreq, &dl), PK_OK);
    CHECK_EQ_INT(call(dreq, dl, resp, &rl), PK_OK);
    CHECK_EQ_INT(pk_kms_msg_decode(resp, rl, &dr), PK_OK);
    CHECK(dr.type == PK_KMS_T_DIR_RESP && dr.id.len == strlen(node) &&
          memcmp(dr.id.b, node, dr.id.len) == 0);

    /* garbage: an error frame no longer than the request, or nothing */
    uint8_t junk[10] = {0x99, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    int rc = call(junk, sizeof junk, resp, &rl);
    CHECK(rc != PK_OK || (rl == 3 && resp[0] == PK_KMS_T_ERR && resp[1] == PK_KMS_ST_MALFORMED));
    rc = call(junk, 2, resp, &rl); /* too short to answer: the kms closes */
    CHECK(rc != PK_OK);

    /* a session of many pipelined-in-order requests on one connection */
    pk_tls_session_t *s = NULL;
    CHECK_EQ_INT(pk_tls_client_open(ctx, addr, "kms", 5000, &s), PK_OK);
    if (s) {
        uint8_t req[PK_REG_NET_MAX];
        size_t n = 0;
        CHECK_EQ_INT(pk_reg_net_encode(&q, req, sizeof req, &n), PK_OK);
        int good = 0;
        for (int i = 0; i < 50; i++) {
            req[n - 1] = (uint8_t)i;
            if (pk_tls_client_exchange(s, req, n, resp, sizeof resp, &rl, 5000) == PK_OK &&
                rl == PK_REG_KMS_VEC_RESP_LEN && resp[0] == PK_REG_T_KMS_VEC_RESP)
                good++;
        }
        CHECK_EQ_INT(good, 50);
        pk_tls_client_close(s);
    }
    pk_wipe(&r, sizeof r);
    pk_wipe(&kr1, sizeof kr1);
    pk_wipe(&kr2, sizeof kr2);
    pk_wipe(resp, sizeof resp);
    pk_wipe(k, sizeof k);
    pk_tls_ctx_free(ctx);
}

int main(int argc, char **av)
{
    if (argc != 9) {
        fprintf(stderr, "usage: %s ADDR CA CERT KEY NODE_CN DEVICE KEYHEX PEER\n", av[0]);
        return 2;
    }
    argv = av;
    RUN(test_all);
    return check_report();
}
