/*
 * Trigger cores: wire formats, the seed's three figures, hostile input,
 * commands, key rotation, persistence, and identity properties.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "core/codec.h"
#include "core/err.h"
#include "core/out.h"
#include "proto/trigger/dev.h"
#include "proto/trigger/messages.h"
#include "proto/trigger/srv.h"
#include "sim.h"

static const uint8_t K1[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t UID1[16] = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
static const pk_trig_dev_cfg_t CFG = {1000, 4, 1, 86400};

static uint8_t arena[8192];

/* Runs one datagram through the server; returns rc and the response (if any). */
static int srv_in(pk_trig_srv_t *s, const uint8_t *p, size_t len, uint64_t now, pk_out_t *out,
                  const uint8_t **resp, size_t *resp_len)
{
    pk_out_init(out, arena, sizeof arena);
    int rc = pk_trig_srv_input(s, p, len, now, out);
    *resp = NULL;
    *resp_len = 0;
    for (unsigned i = 0; i < out->n; i++) {
        if (out->act[i].kind == PK_ACT_SEND) {
            *resp = out->act[i].data;
            *resp_len = out->act[i].len;
        } else if (out->act[i].code == PK_TRIG_EV_PERSIST) {
            pk_trig_srv_persisted(s, (uint32_t)out->act[i].dest);
        }
    }
    return rc;
}

static void test_kdf_vectors(void)
{
    /* Computed independently: HMAC-SHA-256(K1, FC || P0 || L0 || P1 || L1). */
    uint8_t rand[16], exp_u2[16], exp_k2[16], u2[16], k2[16];
    for (int i = 0; i < 16; i++)
        rand[i] = (uint8_t)(0xa0 + i);
    check_unhex("e2596f0b5c40277c1f7e051476bd99bb", exp_u2, 16);
    check_unhex("e3e318c163aa1070f9c729e02f021b4d", exp_k2, 16);
    CHECK_EQ_INT(pk_trig_derive_uid2(K1, UID1, rand, u2), PK_OK);
    CHECK_MEM(u2, exp_u2, 16);
    CHECK_EQ_INT(pk_trig_derive_k2(K1, rand, u2, k2), PK_OK);
    CHECK_MEM(k2, exp_k2, 16);
}

static void test_poll_wire(void)
{
    uint8_t p[PK_TRIG_POLL_LEN + 1];
    pk_trig_poll_t pp;
    pk_trig_poll_build(3, UID1, p);
    CHECK_EQ_INT(p[0], 1);
    CHECK_EQ_INT(p[1], 1);
    CHECK_EQ_INT(p[2], 3);
    CHECK_EQ_INT(p[3], 0);
    CHECK_MEM(p + 4, UID1, 16);
    CHECK_EQ_INT(pk_trig_poll_parse(p, PK_TRIG_POLL_LEN, &pp), PK_OK);
    CHECK_EQ_INT(pp.try_no, 3);
    CHECK_EQ_INT(pk_trig_poll_parse(p, PK_TRIG_POLL_LEN - 1, &pp), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_trig_poll_parse(p, PK_TRIG_POLL_LEN + 1, &pp), PK_ERR_MALFORMED);
    CHECK(PK_TRIG_POLL_LEN <= 32);
    CHECK(PK_TRIG_RESP_FIXED <= 64);
    p[2] = 0;
    CHECK_EQ_INT(pk_trig_poll_parse(p, PK_TRIG_POLL_LEN, &pp), PK_ERR_MALFORMED);
    p[2] = 1;
    p[3] = 1;
    CHECK_EQ_INT(pk_trig_poll_parse(p, PK_TRIG_POLL_LEN, &pp), PK_ERR_MALFORMED);
    p[3] = 0;
    p[0] = 2;
    CHECK_EQ_INT(pk_trig_poll_parse(p, PK_TRIG_POLL_LEN, &pp), PK_ERR_MALFORMED);
    p[0] = 1;
    p[1] = PK_TRIG_T_RESP;
    CHECK_EQ_INT(pk_trig_poll_parse(p, PK_TRIG_POLL_LEN, &pp), PK_ERR_MALFORMED);
}

static void test_resp_wire(void)
{
    uint8_t nonce[12] = {0}, rand[16], buf[PK_TRIG_RESP_MAX], pt[PK_TRIG_RESP_MAX];
    size_t len;
    pk_trig_resp_t r;
    memset(rand, 0x55, 16);
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, PK_TRIG_CMD_APP, 0, (const uint8_t *)"abc", 3,
                                   2, rand, buf, sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(len, PK_TRIG_RESP_FIXED + 3);
    CHECK_EQ_INT(pk_trig_resp_open(K1, UID1, buf, len, pt, sizeof pt, &r), PK_OK);
    CHECK_EQ_INT(r.cmd, PK_TRIG_CMD_APP);
    CHECK_EQ_INT(r.sent, 2);
    CHECK_EQ_INT(r.arglen, 3);
    CHECK_MEM(r.arg, "abc", 3);
    CHECK_MEM(r.rand, rand, 16);
    /* UID1 is not in the datagram: identity privacy. */
    for (size_t i = 0; i + 4 <= len; i++)
        CHECK(memcmp(buf + i, UID1, 4) != 0);
    /* Every single-bit flip is rejected (tag = SIG). */
    int all_rejected = 1;
    for (size_t i = 0; i < len; i++) {
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (uint8_t)(1 << b);
            if (pk_trig_resp_open(K1, UID1, buf, len, pt, sizeof pt, &r) == PK_OK)
                all_rejected = 0;
            buf[i] ^= (uint8_t)(1 << b);
        }
    }
    CHECK(all_rejected);
    /* Wrong UID1 as associated data (the response of another identity). */
    uint8_t other[16];
    memcpy(other, UID1, 16);
    other[15] ^= 1;
    CHECK_EQ_INT(pk_trig_resp_open(K1, other, buf, len, pt, sizeof pt, &r), PK_ERR_AUTH);
    /* Truncated and extended. */
    CHECK(pk_trig_resp_open(K1, UID1, buf, len - 1, pt, sizeof pt, &r) != PK_OK);
    CHECK(pk_trig_resp_open(K1, UID1, buf, PK_TRIG_RESP_FIXED - 1, pt, sizeof pt, &r) ==
          PK_ERR_MALFORMED);
    buf[len] = 0;
    CHECK(pk_trig_resp_open(K1, UID1, buf, len + 1, pt, sizeof pt, &r) != PK_OK);
    CHECK_EQ_INT(r.unsupported, 0);
    /* An authentic response whose command this device cannot use (an
     * argument that does not match its encoding; a command newer than this
     * code): opened, marked unsupported, so the exchange still completes. */
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, PK_TRIG_CMD_POLL_FASTER, 0,
                                   (const uint8_t *)"abc", 3, 1, rand, buf, sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_trig_resp_open(K1, UID1, buf, len, pt, sizeof pt, &r), PK_OK);
    CHECK_EQ_INT(r.unsupported, 1);
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, 0x09, 0, (const uint8_t *)"x", 1, 1, rand, buf,
                                   sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_trig_resp_open(K1, UID1, buf, len, pt, sizeof pt, &r), PK_OK);
    CHECK_EQ_INT(r.unsupported, 1);
    CHECK_EQ_INT(r.cmd, 0x09);
    /* Unknown flags (they may change how keys are derived): refused. */
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, PK_TRIG_CMD_NONE, 0x80, NULL, 0, 1, rand, buf,
                                   sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_trig_resp_open(K1, UID1, buf, len, pt, sizeof pt, &r), PK_ERR_MALFORMED);
}

/* A device given an authentic response with a command it cannot use
 * completes the exchange (moves to UID2, so the server retires UID1 and
 * the queue goes on) and reports the command without acting on it. */
static void test_unsupported_command_completes(void)
{
    static const uint8_t nonce[12] = {7};
    uint8_t rand[16], buf[PK_TRIG_RESP_MAX], poll[PK_TRIG_POLL_LEN], uid2[16];
    size_t len;
    pk_trig_dev_t d;
    pk_trig_dev_msg_t msg;
    pk_trig_dev_cfg_t cfg = {1000, 3, 1, PK_TRIG_INTERVAL_MAX_S};
    memset(rand, 0x5a, sizeof rand);
    CHECK_EQ_INT(pk_trig_derive_uid2(K1, UID1, rand, uid2), PK_OK);
    /* a newer command (0x09), then poll-faster with a 3-byte argument */
    const struct {
        uint8_t cmd;
        const char *arg;
    } cases[] = {{0x09, "future"}, {PK_TRIG_CMD_POLL_FASTER, "abc"}};
    for (size_t i = 0; i < 2; i++) {
        CHECK_EQ_INT(pk_trig_dev_init(&d, &cfg, K1, UID1, 600, 0), PK_OK);
        CHECK_EQ_INT(pk_trig_dev_poll(&d, 0, poll), PK_OK);
        CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, cases[i].cmd, 0,
                                       (const uint8_t *)cases[i].arg, strlen(cases[i].arg), 1, rand,
                                       buf, sizeof buf, &len),
                     PK_OK);
        CHECK_EQ_INT(pk_trig_dev_input(&d, buf, len, 1, &msg), PK_OK);
        CHECK_EQ_INT(msg.unsupported, 1);
        CHECK_EQ_INT(msg.cmd, cases[i].cmd);
        CHECK_EQ_INT(msg.interval_s, 600); /* not acted on */
        CHECK_EQ_INT(d.interval_s, 600);
        CHECK_EQ_INT(d.state, PK_TRIG_DEV_SAVE);
        CHECK_MEM(d.uid, uid2, 16); /* the identity moved on */
        pk_trig_dev_clear(&d);
    }
}

static void test_cmd_check(void)
{
    uint8_t iv[4];
    pk_put_u32(iv, 60);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_NONE, NULL, 0), PK_OK);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_NONE, iv, 1), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_POLL_SLOWER, iv, 4), PK_OK);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_POLL_SLOWER, iv, 3), PK_ERR_MALFORMED);
    pk_put_u32(iv, 0);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_POLL_FASTER, iv, 4), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_UPDATE, (const uint8_t *)"https://x/y", 11), PK_OK);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_UPDATE, (const uint8_t *)"a b", 3),
                 PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_trig_cmd_check(PK_TRIG_CMD_UPDATE, NULL, 0), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_trig_cmd_check(0x7f, NULL, 0), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_trig_cmd_parse("ota-https"), PK_TRIG_CMD_OTA_HTTPS);
    CHECK_EQ_INT(pk_trig_cmd_parse("bogus"), -1);
}

typedef struct pair {
    sim_rng_t rs;
    pk_rng_t rng;
    pk_trig_srv_t *srv;
    pk_trig_dev_t dev;
} pair_t;

static void pair_init(pair_t *p, unsigned flags)
{
    p->rs.s = 42;
    p->rng = sim_pk_rng(&p->rs);
    CHECK_EQ_INT(pk_trig_srv_new(&p->srv, &p->rng, 0), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_add(p->srv, 7, K1, UID1, flags), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_init(&p->dev, &CFG, K1, UID1, 60, 0), PK_OK);
}

/* Figure 1: no loss. */
static void test_figure1_no_loss(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN], poll1[PK_TRIG_POLL_LEN];
    pk_trig_dev_msg_t msg;
    pk_trig_srv_info_t info;
    pair_init(&p, 0);

    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 0, poll), PK_OK); /* step 101: UID1 */
    memcpy(poll1, poll, sizeof poll);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 10, &out, &resp, &rlen), PK_OK);
    CHECK(resp != NULL);
    CHECK_EQ_INT(out.n, 2); /* PERSIST then SEND */
    CHECK_EQ_INT(out.act[0].kind, PK_ACT_EVENT);
    CHECK_EQ_INT(out.act[0].code, PK_TRIG_EV_PERSIST);
    CHECK_EQ_INT(out.act[0].dest, 7);
    CHECK_EQ_INT(out.act[1].kind, PK_ACT_SEND);
    CHECK_EQ_INT(rlen, PK_TRIG_RESP_FIXED);
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 7, &info), PK_OK);
    CHECK(info.pending);
    CHECK_EQ_INT(info.sent, 1);
    /* steps 104-105: device verifies, Sent = 1, derives UID2 */
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp, rlen, 20, &msg), PK_OK);
    CHECK_EQ_INT(msg.sent, 1);
    CHECK_EQ_INT(msg.cmd, PK_TRIG_CMD_NONE);
    CHECK_EQ_INT(p.dev.state, PK_TRIG_DEV_SAVE);
    CHECK(memcmp(p.dev.uid, UID1, 16) != 0);
    /* new identity must be saved before use */
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 30, poll), PK_ERR_STATE);
    CHECK_EQ_INT(pk_trig_dev_saved(&p.dev, 30), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_next_deadline(&p.dev), 30 + 60000);
    /* step 106: UID2 */
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 60030, poll), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 60040, &out, &resp, &rlen), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 7, &info), PK_OK);
    CHECK_EQ_INT(info.exchanges, 1);
    /* a new exchange is pending on UID2: the server keeps the UID3 it leads
     * to (what a copy of the device derives from this response) */
    CHECK(info.pending);
    {
        pk_trig_dev_t d2 = p.dev;
        pk_trig_dev_msg_t m2;
        CHECK_EQ_INT(pk_trig_dev_input(&d2, resp, rlen, 60045, &m2), PK_OK);
        CHECK_MEM(info.uid, d2.uid, 16);
        CHECK(memcmp(info.uid, poll + 4, 16) != 0);
    }
    /* UID1 retired: it gets no answer (a DoS signal), state unchanged */
    CHECK_EQ_INT(srv_in(p.srv, poll1, sizeof poll1, 60050, &out, &resp, &rlen), PK_ERR_DENIED);
    CHECK_EQ_INT(out.n, 0);
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp ? resp : poll, 51, 60060, &msg) == PK_OK, 0);
    pk_trig_srv_free(p.srv);
}

/* Figure 2: the response is lost; the retransmission gets Sent = 2, same UID_RAND. */
static void test_figure2_response_lost(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN], lost[PK_TRIG_RESP_MAX], pt[PK_TRIG_RESP_MAX];
    size_t lost_len;
    int send;
    pk_trig_dev_msg_t msg;
    pk_trig_resp_t r1, r2;
    pair_init(&p, 0);

    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 0, poll), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 10, &out, &resp, &rlen), PK_OK);
    memcpy(lost, resp, rlen); /* step 120: Resp1* lost */
    lost_len = rlen;
    CHECK_EQ_INT(pk_trig_dev_timeout(&p.dev, 500, poll, &send), PK_OK);
    CHECK_EQ_INT(send, 0); /* not yet */
    CHECK_EQ_INT(pk_trig_dev_timeout(&p.dev, 1000, poll, &send), PK_OK);
    CHECK_EQ_INT(send, 1);
    CHECK_EQ_INT(p.dev.resend, 1); /* Resend_Counter = 1 */
    CHECK_EQ_INT(poll[2], 2);      /* try 2 */
    CHECK_MEM(poll + 4, UID1, 16); /* step 122: same UID1 */
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 1010, &out, &resp, &rlen), PK_OK);
    CHECK_EQ_INT(out.n, 1); /* retransmission: already durable, SEND only */
    CHECK_EQ_INT(pk_trig_resp_open(K1, UID1, lost, lost_len, pt, sizeof pt, &r1), PK_OK);
    uint8_t rand1[16];
    memcpy(rand1, r1.rand, 16);
    CHECK_EQ_INT(pk_trig_resp_open(K1, UID1, resp, rlen, pt, sizeof pt, &r2), PK_OK);
    CHECK_EQ_INT(r2.sent, 2);
    CHECK_MEM(r2.rand, rand1, 16); /* UID_RAND reused */
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp, rlen, 1020, &msg), PK_OK);
    CHECK_EQ_INT(msg.sent, 2);
    uint8_t u2[16];
    CHECK_EQ_INT(pk_trig_derive_uid2(K1, UID1, rand1, u2), PK_OK);
    CHECK_MEM(p.dev.uid, u2, 16);
    pk_trig_srv_free(p.srv);
}

/* The retransmission gate: asked only for a poll on the UID1 of a pending
 * exchange; refusing it sends nothing and changes nothing; new exchanges and
 * completions never ask it. */
typedef struct gate {
    int allow;
    unsigned asked;
} gate_t;

static int gate_fn(void *ctx)
{
    gate_t *g = ctx;
    g->asked++;
    return g->allow;
}

static void test_retx_gate(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN], rec0[PK_TRIG_REC_LEN], rec1[PK_TRIG_REC_LEN];
    pk_trig_dev_msg_t msg;
    pk_trig_srv_stats_t st;
    pk_trig_srv_info_t info;
    gate_t g = {0, 0};
    int send;
    pair_init(&p, 0);
    pk_trig_srv_set_retx_gate(p.srv, gate_fn, &g);

    /* a new exchange: not gated, even with the gate closed */
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 0, poll), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 10, &out, &resp, &rlen), PK_OK);
    CHECK(resp != NULL);
    CHECK_EQ_INT(g.asked, 0);
    /* the response is lost; the retransmission (and copies of it) are gated */
    CHECK_EQ_INT(pk_trig_dev_timeout(&p.dev, 1000, poll, &send), PK_OK);
    CHECK_EQ_INT(send, 1);
    CHECK_EQ_INT(pk_trig_srv_record(p.srv, 7, rec0), PK_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 1010, &out, &resp, &rlen), PK_ERR_LIMIT);
        CHECK_EQ_INT(out.n, 0);
    }
    CHECK_EQ_INT(g.asked, 3);
    CHECK_EQ_INT(pk_trig_srv_record(p.srv, 7, rec1), PK_OK);
    CHECK_MEM(rec1, rec0, sizeof rec0); /* nothing changed */
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 7, &info), PK_OK);
    CHECK_EQ_INT(info.sent, 1);
    pk_trig_srv_stats(p.srv, &st);
    CHECK_EQ_INT(st.retx_refused, 3);
    CHECK_EQ_INT(st.retransmits, 0);
    /* the gate opens: answered, Sent = 2, and the device moves on */
    g.allow = 1;
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 1020, &out, &resp, &rlen), PK_OK);
    CHECK(resp != NULL);
    CHECK_EQ_INT(g.asked, 4);
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp, rlen, 1030, &msg), PK_OK);
    CHECK_EQ_INT(msg.sent, 2);
    CHECK_EQ_INT(pk_trig_dev_saved(&p.dev, 1030), PK_OK);
    /* the completing poll (UID2) and the exchange it starts: not gated */
    g.allow = 0;
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 61030, poll), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 61040, &out, &resp, &rlen), PK_OK);
    CHECK(resp != NULL);
    CHECK_EQ_INT(g.asked, 4);
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 7, &info), PK_OK);
    CHECK_EQ_INT(info.exchanges, 1);
    pk_trig_srv_free(p.srv);
}

/* Figure 3: the poll is lost; the retransmission is the server's first sight, Sent = 1. */
static void test_figure3_poll_lost(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN];
    int send;
    pk_trig_dev_msg_t msg;
    pair_init(&p, 0);

    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 0, poll), PK_OK); /* step 130: lost */
    CHECK_EQ_INT(pk_trig_dev_timeout(&p.dev, 1000, poll, &send), PK_OK);
    CHECK_EQ_INT(send, 1); /* steps 131-132 */
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 1010, &out, &resp, &rlen), PK_OK);
    CHECK_EQ_INT(out.n, 2); /* a new exchange: PERSIST + SEND */
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp, rlen, 1020, &msg), PK_OK);
    CHECK_EQ_INT(msg.sent, 1); /* step 135 */
    CHECK_EQ_INT(msg.resend, 1);
    pk_trig_srv_free(p.srv);
}

/* Sent above Resend_Counter + 1 is refused; so is a response when none is awaited. */
static void test_sent_check(void)
{
    pk_trig_dev_t d;
    uint8_t poll[PK_TRIG_POLL_LEN], buf[PK_TRIG_RESP_MAX], nonce[12] = {0}, rand[16] = {0};
    size_t len;
    pk_trig_dev_msg_t msg;
    int send;
    CHECK_EQ_INT(pk_trig_dev_init(&d, &CFG, K1, UID1, 60, 0), PK_OK);
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, 0, 0, NULL, 0, 1, rand, buf, sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_trig_dev_input(&d, buf, len, 0, &msg), PK_ERR_STATE);
    CHECK_EQ_INT(pk_trig_dev_poll(&d, 0, poll), PK_OK);
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, 0, 0, NULL, 0, 2, rand, buf, sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_trig_dev_input(&d, buf, len, 0, &msg), PK_ERR_REPLAY);
    CHECK_MEM(d.uid, UID1, 16);
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, 0, 0, NULL, 0, 0, rand, buf, sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_trig_dev_input(&d, buf, len, 0, &msg), PK_ERR_REPLAY);
    CHECK_EQ_INT(pk_trig_dev_timeout(&d, 1000, poll, &send), PK_OK);
    CHECK_EQ_INT(pk_trig_resp_seal(K1, UID1, nonce, 0, 0, NULL, 0, 2, rand, buf, sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_trig_dev_input(&d, buf, len, 0, &msg), PK_OK);
    /* give up after max_resend */
    pk_trig_dev_t d2;
    CHECK_EQ_INT(pk_trig_dev_init(&d2, &CFG, K1, UID1, 60, 0), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_poll(&d2, 0, poll), PK_OK);
    int rc = PK_OK;
    uint64_t t = 0;
    for (int i = 0; i < 10 && rc == PK_OK; i++) {
        t += 1000;
        rc = pk_trig_dev_timeout(&d2, t, poll, &send);
    }
    CHECK_EQ_INT(rc, PK_ERR_TIMEOUT);
    CHECK_EQ_INT(d2.polls_sent, 1 + CFG.max_resend);
    CHECK_EQ_INT(d2.state, PK_TRIG_DEV_IDLE);
    CHECK_MEM(d2.uid, UID1, 16);
}

/* Duplicated polls raise the server's Sent but never past the poll's try. */
static void test_duplicates(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN], last[PK_TRIG_RESP_MAX];
    size_t last_len = 0;
    pk_trig_dev_msg_t msg;
    pk_trig_srv_info_t info;
    pair_init(&p, 0);
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 0, poll), PK_OK);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 10, &out, &resp, &rlen), PK_OK);
        memcpy(last, resp, rlen);
        last_len = rlen;
    }
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 7, &info), PK_OK);
    CHECK_EQ_INT(info.sent, 5);
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, last, last_len, 20, &msg), PK_OK);
    CHECK_EQ_INT(msg.sent, 1);
    pk_trig_srv_free(p.srv);
}

/* Hostile datagrams: no answer, no state change. */
static void test_hostile(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN + 8], rec0[PK_TRIG_REC_LEN], rec1[PK_TRIG_REC_LEN];
    pk_trig_srv_stats_t st;
    pair_init(&p, 0);
    CHECK_EQ_INT(pk_trig_srv_record(p.srv, 7, rec0), PK_OK);
    pk_trig_poll_build(1, UID1, poll);
    memset(poll + PK_TRIG_POLL_LEN, 0, 8);
    /* truncated, oversized */
    for (size_t l = 0; l < PK_TRIG_POLL_LEN + 8; l++) {
        if (l == PK_TRIG_POLL_LEN)
            continue;
        CHECK_EQ_INT(srv_in(p.srv, poll, l, 1, &out, &resp, &rlen), PK_ERR_MALFORMED);
        CHECK_EQ_INT(out.n, 0);
    }
    /* unknown identities */
    uint8_t bad[PK_TRIG_POLL_LEN];
    memcpy(bad, poll, sizeof bad);
    for (int i = 0; i < 16; i++) {
        bad[4 + i] ^= 0x01;
        CHECK_EQ_INT(srv_in(p.srv, bad, sizeof bad, 1, &out, &resp, &rlen), PK_ERR_DENIED);
        CHECK_EQ_INT(out.n, 0);
        bad[4 + i] ^= 0x01;
    }
    /* the device's UID2, guessed before it exists */
    uint8_t rand0[16] = {0}, u2[16];
    CHECK_EQ_INT(pk_trig_derive_uid2(K1, UID1, rand0, u2), PK_OK);
    pk_trig_poll_build(1, u2, bad);
    CHECK_EQ_INT(srv_in(p.srv, bad, sizeof bad, 1, &out, &resp, &rlen), PK_ERR_DENIED);
    CHECK_EQ_INT(pk_trig_srv_record(p.srv, 7, rec1), PK_OK);
    CHECK_MEM(rec0, rec1, sizeof rec0);
    pk_trig_srv_stats(p.srv, &st);
    CHECK_EQ_INT(st.answered, 0);
    CHECK_EQ_INT(st.unknown, 17);
    CHECK_EQ_INT(st.malformed, PK_TRIG_POLL_LEN + 7);
    /* an output without room: PK_ERR_SPACE and nothing changes */
    uint8_t small[64];
    pk_out_init(&out, small, sizeof small);
    CHECK_EQ_INT(pk_trig_srv_input(p.srv, poll, PK_TRIG_POLL_LEN, 1, &out), PK_ERR_SPACE);
    CHECK_EQ_INT(out.n, 0);
    CHECK_EQ_INT(pk_trig_srv_record(p.srv, 7, rec1), PK_OK);
    CHECK_MEM(rec0, rec1, sizeof rec0);
    pk_trig_srv_free(p.srv);
}

/* Drives a pair through one exchange, losing nothing; returns the message. */
static int exchange(pair_t *p, uint64_t *now, pk_trig_dev_msg_t *msg, uint64_t *delivered_seq)
{
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN];
    *now = pk_trig_dev_next_deadline(&p->dev);
    if (pk_trig_dev_poll(&p->dev, *now, poll) != PK_OK)
        return -1;
    if (srv_in(p->srv, poll, sizeof poll, *now, &out, &resp, &rlen) != PK_OK)
        return -2;
    *delivered_seq = 0;
    for (unsigned i = 0; i < out.n; i++)
        if (out.act[i].code == PK_TRIG_EV_DELIVERED && out.act[i].kind == PK_ACT_EVENT)
            *delivered_seq = pk_get_u64(out.act[i].data);
    if (pk_trig_dev_input(&p->dev, resp, rlen, *now, msg) != PK_OK)
        return -3;
    return pk_trig_dev_saved(&p->dev, *now);
}

static void test_commands_and_interval(void)
{
    pair_t p;
    uint64_t now = 0, dseq;
    pk_trig_dev_msg_t msg;
    uint8_t iv[4];
    pair_init(&p, 0);
    CHECK_EQ_INT(
        pk_trig_srv_queue(p.srv, 7, 1, PK_TRIG_CMD_UPDATE, (const uint8_t *)"https://ota/fw1", 15),
        PK_OK);
    pk_put_u32(iv, 30);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 2, PK_TRIG_CMD_POLL_FASTER, iv, 4), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 2, PK_TRIG_CMD_KEYGEN, NULL, 0), PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 3, PK_TRIG_CMD_KEYGEN, iv, 1), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 8, 3, PK_TRIG_CMD_KEYGEN, NULL, 0), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 3, PK_TRIG_CMD_KEYGEN, NULL, 0), PK_OK);

    CHECK_EQ_INT(exchange(&p, &now, &msg, &dseq), PK_OK);
    CHECK_EQ_INT(msg.cmd, PK_TRIG_CMD_UPDATE);
    CHECK_EQ_INT(msg.arglen, 15);
    CHECK_MEM(msg.arg, "https://ota/fw1", 15);
    CHECK_EQ_INT(dseq, 0);
    CHECK_EQ_INT(exchange(&p, &now, &msg, &dseq), PK_OK);
    CHECK_EQ_INT(dseq, 1); /* delivered when UID2 was seen */
    CHECK_EQ_INT(msg.cmd, PK_TRIG_CMD_POLL_FASTER);
    CHECK_EQ_INT(msg.interval_s, 30);
    CHECK_EQ_INT(p.dev.interval_s, 30);
    uint64_t t0 = now;
    CHECK_EQ_INT(exchange(&p, &now, &msg, &dseq), PK_OK);
    CHECK_EQ_INT(dseq, 2);
    CHECK_EQ_INT(now - t0, 30000); /* polled at the new interval */
    CHECK_EQ_INT(msg.cmd, PK_TRIG_CMD_KEYGEN);
    CHECK_EQ_INT(exchange(&p, &now, &msg, &dseq), PK_OK);
    CHECK_EQ_INT(dseq, 3);
    CHECK_EQ_INT(msg.cmd, PK_TRIG_CMD_NONE);
    pk_trig_srv_info_t info;
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 7, &info), PK_OK);
    CHECK_EQ_INT(info.queued, 0);
    CHECK_EQ_INT(info.exchanges, 3);
    /* queue limit */
    int rc = PK_OK;
    for (uint64_t s = 10; s < 10 + PK_TRIG_QUEUE_MAX + 1 && rc == PK_OK; s++)
        rc = pk_trig_srv_queue(p.srv, 7, s, PK_TRIG_CMD_NONE, NULL, 0);
    CHECK_EQ_INT(rc, PK_ERR_LIMIT);
    pk_trig_srv_free(p.srv);
}

static void test_rotation(void)
{
    pair_t p;
    uint64_t now = 0, dseq;
    pk_trig_dev_msg_t msg;
    uint8_t keys[6][16];
    pair_init(&p, PK_TRIG_DEV_ROTATE);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(exchange(&p, &now, &msg, &dseq), PK_OK);
        CHECK_EQ_INT(msg.rotated, 1);
        memcpy(keys[i], p.dev.key, 16);
        CHECK(memcmp(keys[i], K1, 16) != 0);
        for (int j = 0; j < i; j++)
            CHECK(memcmp(keys[i], keys[j], 16) != 0);
    }
    /* the server used the same keys: the last exchange verified under K2s */
    CHECK_EQ_INT(p.dev.exchanges, 6);
    /* a device that did not rotate (old K1) can no longer read responses */
    pk_trig_srv_free(p.srv);
}

/* Identities never repeat and carry nothing of the permanent ID. */
static void test_identity_properties(void)
{
    enum { N = 300 };
    static uint8_t seen[N][16];
    pair_t p;
    uint64_t now = 0, dseq;
    pk_trig_dev_msg_t msg;
    pair_init(&p, 0);
    memcpy(seen[0], UID1, 16);
    int repeats = 0, bad_dist = 0;
    for (int i = 1; i < N; i++) {
        CHECK_EQ_INT(exchange(&p, &now, &msg, &dseq), PK_OK);
        memcpy(seen[i], p.dev.uid, 16);
        for (int j = 0; j < i; j++)
            if (memcmp(seen[i], seen[j], 16) == 0)
                repeats++;
        int d = 0;
        for (int b = 0; b < 16; b++)
            d += __builtin_popcount((unsigned)(seen[i][b] ^ seen[i - 1][b]));
        if (d < 32 || d > 96) /* 128-bit random: 64 +- 8 sigma */
            bad_dist++;
        /* the device number (7) as a 32-bit big-endian value is not in it */
        static const uint8_t idb[4] = {0, 0, 0, 7};
        for (int b = 0; b + 4 <= 16; b++)
            if (memcmp(seen[i] + b, idb, 4) == 0)
                bad_dist++;
    }
    CHECK_EQ_INT(repeats, 0);
    CHECK_EQ_INT(bad_dist, 0);
    pk_trig_srv_free(p.srv);
}

/* Records round-trip: a server rebuilt from its PERSIST records answers the
 * device in any state (pending or not, UID1 or UID2). */
static void test_persist_reload(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll[PK_TRIG_POLL_LEN], rec[PK_TRIG_REC_LEN];
    pk_trig_dev_msg_t msg;
    pair_init(&p, PK_TRIG_DEV_ROTATE);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 5, PK_TRIG_CMD_APP, (const uint8_t *)"hi", 2), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 0, poll), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 10, &out, &resp, &rlen), PK_OK);
    CHECK_EQ_INT(out.act[0].code, PK_TRIG_EV_PERSIST);
    memcpy(rec, out.act[0].data, PK_TRIG_REC_LEN);
    /* crash after persist, response lost with it */
    pk_trig_srv_free(p.srv);
    CHECK_EQ_INT(pk_trig_srv_new(&p.srv, &p.rng, 4), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_load(p.srv, 7, rec, sizeof rec), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 5, PK_TRIG_CMD_APP, (const uint8_t *)"hi", 2), PK_OK);
    int send;
    CHECK_EQ_INT(pk_trig_dev_timeout(&p.dev, 1000, poll, &send), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 1010, &out, &resp, &rlen), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp, rlen, 1020, &msg), PK_OK);
    CHECK_EQ_INT(msg.cmd, PK_TRIG_CMD_APP);
    CHECK_EQ_INT(pk_trig_dev_saved(&p.dev, 1020), PK_OK);
    /* crash again; the device now uses UID2 (and K2) */
    CHECK_EQ_INT(pk_trig_srv_record(p.srv, 7, rec), PK_OK);
    pk_trig_srv_free(p.srv);
    CHECK_EQ_INT(pk_trig_srv_new(&p.srv, &p.rng, 0), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_load(p.srv, 7, rec, sizeof rec), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 5, PK_TRIG_CMD_APP, (const uint8_t *)"hi", 2), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 70000, poll), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll, sizeof poll, 70010, &out, &resp, &rlen), PK_OK);
    CHECK_EQ_INT(out.act[0].code, PK_TRIG_EV_DELIVERED);
    CHECK_EQ_INT(pk_get_u64(out.act[0].data), 5);
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp, rlen, 70020, &msg), PK_OK);
    CHECK_EQ_INT(msg.cmd, PK_TRIG_CMD_NONE);
    /* a version-1 record (UID1 at 4, 0 at 76) of a pending exchange is
     * upgraded on loading to the version-2 state: UID2 at 4, UID1's tag */
    {
        pk_trig_srv_t *s2;
        uint8_t v1[PK_TRIG_REC_LEN], again[PK_TRIG_REC_LEN];
        CHECK_EQ_INT(pk_trig_srv_record(p.srv, 7, rec), PK_OK);
        CHECK_EQ_INT(rec[0], 2);
        CHECK_MEM(rec + 76, poll + 4, 4);
        memcpy(v1, rec, sizeof v1);
        v1[0] = 1;
        memcpy(v1 + 4, poll + 4, 16);
        memset(v1 + 76, 0, 4);
        CHECK_EQ_INT(pk_trig_srv_new(&s2, &p.rng, 0), PK_OK);
        CHECK_EQ_INT(pk_trig_srv_load(s2, 7, v1, sizeof v1), PK_OK);
        CHECK_EQ_INT(pk_trig_srv_record(s2, 7, again), PK_OK);
        CHECK_MEM(again, rec, sizeof rec);
        v1[79] = 1; /* version 1 had 0 there */
        CHECK_EQ_INT(pk_trig_srv_load(s2, 8, v1, sizeof v1), PK_ERR_MALFORMED);
        pk_trig_srv_free(s2);
    }
    /* bad records */
    rec[0] = 9;
    CHECK_EQ_INT(pk_trig_srv_load(p.srv, 8, rec, sizeof rec), PK_ERR_VERSION);
    rec[0] = PK_TRIG_REC_VERSION;
    CHECK_EQ_INT(pk_trig_srv_load(p.srv, 8, rec, sizeof rec - 1), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_trig_srv_load(p.srv, 7, rec, sizeof rec), PK_ERR_EXISTS);
    /* device export/import */
    uint8_t blob[PK_TRIG_DEV_STATE_LEN];
    pk_trig_dev_t d2;
    pk_trig_dev_export(&p.dev, blob);
    CHECK_EQ_INT(pk_trig_dev_import(&d2, &CFG, blob, sizeof blob, 0), PK_OK);
    CHECK_MEM(d2.uid, p.dev.uid, 16);
    CHECK_MEM(d2.key, p.dev.key, 16);
    CHECK_EQ_INT(pk_trig_dev_import(&d2, &CFG, blob, sizeof blob - 1, 0), PK_ERR_MALFORMED);
    pk_trig_srv_free(p.srv);
}

/* Removal: a removed device's identities (UID1 and the pending UID2) are
 * unknown at once, its queue is freed (the sanitiser build checks leaks),
 * another device is untouched, and its old UID may be provisioned again. */
static void test_remove(void)
{
    pair_t p;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    uint8_t poll1[PK_TRIG_POLL_LEN], poll2[PK_TRIG_POLL_LEN], pb[PK_TRIG_POLL_LEN];
    uint8_t kb[16], ub[16];
    pk_trig_dev_msg_t msg;
    pk_trig_dev_t b;
    pk_trig_srv_info_t info;
    pair_init(&p, PK_TRIG_DEV_ROTATE);
    for (int i = 0; i < 16; i++) {
        kb[i] = (uint8_t)(0x40 + i);
        ub[i] = (uint8_t)(0x90 + i);
    }
    CHECK_EQ_INT(pk_trig_srv_add(p.srv, 9, kb, ub, 0), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_init(&b, &CFG, kb, ub, 60, 0), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 1, PK_TRIG_CMD_APP, (const uint8_t *)"a", 1), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 2, PK_TRIG_CMD_KEYGEN, NULL, 0), PK_OK);
    /* device 7: an exchange pending (command 1 bound), its response taken */
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 0, poll1), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll1, sizeof poll1, 10, &out, &resp, &rlen), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_input(&p.dev, resp, rlen, 20, &msg), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_saved(&p.dev, 20), PK_OK);
    CHECK_EQ_INT(pk_trig_dev_poll(&p.dev, 60020, poll2), PK_OK); /* UID2, not yet sent */
    CHECK_EQ_INT(pk_trig_srv_count(p.srv), 2);

    CHECK_EQ_INT(pk_trig_srv_remove(p.srv, 7), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_count(p.srv), 1);
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 7, &info), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(srv_in(p.srv, poll1, sizeof poll1, 30, &out, &resp, &rlen), PK_ERR_DENIED);
    CHECK_EQ_INT(srv_in(p.srv, poll2, sizeof poll2, 40, &out, &resp, &rlen), PK_ERR_DENIED);
    CHECK_EQ_INT(out.n, 0);
    CHECK_EQ_INT(pk_trig_srv_queue(p.srv, 7, 3, PK_TRIG_CMD_KEYGEN, NULL, 0), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_trig_srv_remove(p.srv, 7), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_trig_srv_remove(p.srv, 12345), PK_ERR_NOTFOUND);

    /* device 9 is untouched: two full exchanges */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(pk_trig_dev_poll(&b, 100 + (uint64_t)i * 70000, pb), PK_OK);
        CHECK_EQ_INT(srv_in(p.srv, pb, sizeof pb, 110 + (uint64_t)i * 70000, &out, &resp, &rlen),
                     PK_OK);
        CHECK_EQ_INT(pk_trig_dev_input(&b, resp, rlen, 120 + (uint64_t)i * 70000, &msg), PK_OK);
        CHECK_EQ_INT(pk_trig_dev_saved(&b, 120 + (uint64_t)i * 70000), PK_OK);
    }
    CHECK_EQ_INT(pk_trig_srv_info(p.srv, 9, &info), PK_OK);
    CHECK_EQ_INT(info.exchanges, 1);
    /* the old UID1 is free again (a new dev_no, as the shell would use) */
    CHECK_EQ_INT(pk_trig_srv_add(p.srv, 10, K1, UID1, 0), PK_OK);
    CHECK_EQ_INT(srv_in(p.srv, poll1, sizeof poll1, 200000, &out, &resp, &rlen), PK_OK);
    pk_trig_srv_free(p.srv);
}

/* The index stays consistent through growth and many deletions. */
static void test_index_growth(void)
{
    sim_rng_t rs = {7};
    pk_rng_t rng = sim_pk_rng(&rs);
    pk_trig_srv_t *s;
    pk_out_t out;
    const uint8_t *resp;
    size_t rlen;
    enum { N = 3000 };
    static uint8_t uids[N][16];
    CHECK_EQ_INT(pk_trig_srv_new(&s, &rng, 0), PK_OK);
    for (uint32_t i = 0; i < N; i++) {
        sim_rng_fill(&rs, uids[i], 16);
        CHECK_EQ_INT(pk_trig_srv_add(s, i, K1, uids[i], 0), PK_OK);
    }
    CHECK_EQ_INT(pk_trig_srv_add(s, N, K1, uids[5], 0), PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_trig_srv_add(s, 5, K1, K1, 0), PK_ERR_EXISTS);
    /* every device advances twice (UID1 -> UID2 -> UID3) */
    int bad = 0;
    for (int round = 0; round < 3; round++) {
        for (uint32_t i = 0; i < N; i++) {
            uint8_t poll[PK_TRIG_POLL_LEN], pt[PK_TRIG_RESP_MAX];
            pk_trig_resp_t r;
            pk_trig_poll_build(1, uids[i], poll);
            if (srv_in(s, poll, sizeof poll, 1, &out, &resp, &rlen) != PK_OK ||
                pk_trig_resp_open(K1, uids[i], resp, rlen, pt, sizeof pt, &r) != PK_OK) {
                bad++;
                continue;
            }
            uint8_t u2[16];
            if (pk_trig_derive_uid2(K1, uids[i], r.rand, u2) != PK_OK)
                bad++;
            if (round < 2)
                memcpy(uids[i], u2, 16);
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(pk_trig_srv_count(s), N);
    CHECK(pk_trig_srv_index_bytes(s) > 0);
    pk_trig_srv_free(s);
}

int main(void)
{
    RUN(test_kdf_vectors);
    RUN(test_poll_wire);
    RUN(test_resp_wire);
    RUN(test_cmd_check);
    RUN(test_unsupported_command_completes);
    RUN(test_figure1_no_loss);
    RUN(test_figure2_response_lost);
    RUN(test_figure3_poll_lost);
    RUN(test_retx_gate);
    RUN(test_sent_check);
    RUN(test_duplicates);
    RUN(test_hostile);
    RUN(test_commands_and_interval);
    RUN(test_rotation);
    RUN(test_identity_properties);
    RUN(test_persist_reload);
    RUN(test_remove);
    RUN(test_index_growth);
    return check_report();
}
