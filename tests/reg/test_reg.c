/* Registration: device core <-> node core <-> kms functions, in process. */
#include "harness.h"

#define NODE "node-1.example"

static void test_sizes(void)
{
    /* no amplification: the challenge is never larger than the request */
    CHECK(PK_REG_CHALLENGE_LEN <= PK_REG_REQUEST_LEN);
    CHECK_EQ_INT(PK_REG_REQUEST_LEN, 83);
    CHECK_EQ_INT(PK_REG_CHALLENGE_LEN, 50);
    CHECK_EQ_INT(PK_REG_RESPONSE_MIN, 36);
    CHECK_EQ_INT(PK_REG_RESPONSE_MAX, 99);
    /* ids: UTF-8 1..64 bytes */
    CHECK(pk_reg_id_valid((const uint8_t *)"d\xc3\xa9vice", 7));
    CHECK(!pk_reg_id_valid((const uint8_t *)"a\0b", 3));
    CHECK(!pk_reg_id_valid((const uint8_t *)"\xc0\xaf", 2));     /* overlong */
    CHECK(!pk_reg_id_valid((const uint8_t *)"\xed\xa0\x80", 3)); /* surrogate */
    CHECK(!pk_reg_id_valid((const uint8_t *)"\xe2\x82", 2));     /* truncated */
    uint8_t big[65];
    memset(big, 'a', sizeof big);
    CHECK(pk_reg_id_valid(big, 64));
    CHECK(!pk_reg_id_valid(big, 65));
    CHECK(!pk_reg_id_valid(big, 0));
}

/* The _cx derivations on one re-used context give the one-shot results,
 * whatever key the context held before (16- and 32-byte keys alternating). */
static void test_derive_cx(void)
{
    uint8_t k16[16], k32[32], rand[16], nd[16];
    uint8_t a1[16], r1[16], x1[32], a2[16], r2[16], x2[32];
    pk_kdf_t kdf = {0};
    memset(k16, 3, sizeof k16);
    memset(k32, 9, sizeof k32);
    memset(rand, 1, sizeof rand);
    memset(nd, 2, sizeof nd);
    pk_reg_id_t node = h_id(NODE), dev = h_id("dev-a");
    for (unsigned i = 0; i < 4; i++) {
        const uint8_t *k = i & 1 ? k32 : k16;
        size_t kl = i & 1 ? 32 : 16;
        rand[0] = (uint8_t)i;
        CHECK_EQ_INT(pk_reg_derive(k, kl, rand, nd, &node, &dev, a1, r1, x1), PK_OK);
        CHECK_EQ_INT(pk_reg_derive_cx(&kdf, k, kl, rand, nd, &node, &dev, a2, r2, x2), PK_OK);
        CHECK_MEM(a1, a2, 16);
        CHECK_MEM(r1, r2, 16);
        CHECK_MEM(x1, x2, 32);
    }
    /* channel keys: a record sealed by the one-shot side opens on the _cx side */
    pk_record_t dev_side, node_side;
    memset(&dev_side, 0, sizeof dev_side);
    memset(&node_side, 0, sizeof node_side);
    CHECK_EQ_INT(pk_reg_chan_init(&dev_side, x1, 9, 0), PK_OK);
    CHECK_EQ_INT(pk_reg_chan_init_cx(&kdf, &node_side, x1, 9, 1), PK_OK);
    uint8_t rec[64], pt[8];
    size_t rl = 0, pl = 0;
    uint8_t type = 0;
    CHECK_EQ_INT(
        pk_record_seal(&dev_side, 0x10, (const uint8_t *)"uplink", 6, rec, sizeof rec, &rl), PK_OK);
    CHECK_EQ_INT(pk_record_open(&node_side, rec, rl, &type, pt, sizeof pt, &pl), PK_OK);
    CHECK(pl == 6 && memcmp(pt, "uplink", 6) == 0);
    /* a wrong key on the same context does not open */
    pk_record_clear(&node_side);
    x1[0] ^= 1;
    CHECK_EQ_INT(pk_reg_chan_init_cx(&kdf, &node_side, x1, 9, 1), PK_OK);
    CHECK_EQ_INT(
        pk_record_seal(&dev_side, 0x10, (const uint8_t *)"uplink", 6, rec, sizeof rec, &rl), PK_OK);
    CHECK_EQ_INT(pk_record_open(&node_side, rec, rl, &type, pt, sizeof pt, &pl), PK_ERR_AUTH);
    pk_record_clear(&dev_side);
    pk_record_clear(&node_side);
    pk_kdf_clear(&kdf);
}

/* The kms and the device compute the same AUTN/RES/K_reg, and each input matters. */
static void test_derive(void)
{
    uint8_t k[16], rand[16], nd[16], a1[16], r1[16], k1[32], a2[16], r2[16], k2[32];
    memset(k, 7, 16);
    memset(rand, 1, 16);
    memset(nd, 2, 16);
    pk_reg_id_t node = h_id(NODE), dev = h_id("dev-a"), other = h_id("node-2");
    CHECK_EQ_INT(pk_reg_derive(k, 16, rand, nd, &node, &dev, a1, r1, k1), PK_OK);
    CHECK_EQ_INT(pk_reg_derive(k, 16, rand, nd, &other, &dev, a2, r2, k2), PK_OK);
    CHECK(memcmp(a1, a2, 16) != 0 && memcmp(r1, r2, 16) != 0 && memcmp(k1, k2, 32) != 0);
    nd[0] ^= 1;
    CHECK_EQ_INT(pk_reg_derive(k, 16, rand, nd, &node, &dev, a2, r2, k2), PK_OK);
    CHECK(memcmp(a1, a2, 16) != 0);
    CHECK(memcmp(a1, r1, 16) != 0); /* different FCs */
    CHECK_EQ_INT(pk_reg_derive(k, 15, rand, nd, &node, &dev, a2, r2, k2), PK_ERR_INVAL);
}

static void test_full_registration(void)
{
    static h_world_t w;
    pk_reg_dev_t a, b;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 1);
    h_world_init(&w, NODE, 8);
    unsigned ia = h_kms_add(&w.kms, "dev-a", 0xA1);
    unsigned ib = h_kms_add(&w.kms, "dev-b", 0xB2);
    unsigned ic = h_kms_add(&w.kms, "dev-c", 0xC3);
    h_kms_pair(&w.kms, ia, ib);
    h_kms_pair(&w.kms, ia, ic);
    h_dev_init(&a, "dev-a", NODE, 0xA1);
    h_dev_init(&b, "dev-b", NODE, 0xB2);

    CHECK_EQ_INT(h_register(&w, &a, 11, &rng, 100), PK_OK);
    CHECK_EQ_INT(h_register(&w, &b, 12, &rng, 100), PK_OK);
    CHECK_EQ_INT(a.state, PK_REG_D_REGISTERED);
    CHECK_EQ_INT(pk_reg_dev_next_deadline(&a), UINT64_MAX);
    CHECK_EQ_INT(a.keys.mode, PK_REG_MODE_PAIRS);
    CHECK_EQ_INT(a.keys.n, 2);
    CHECK_EQ_INT(b.keys.n, 1);
    CHECK_MEM(a.keys.k[0].key, w.kms.keys[ia].k[0].key, 32);
    CHECK_MEM(a.keys.k[0].key, b.keys.k[0].key, 32); /* the pair's key */
    CHECK_EQ_INT(a.keys.k[0].ksi, b.keys.k[0].ksi);
    CHECK(pk_reg_id_eq(&a.keys.k[0].peer, &b.id));
    CHECK(pk_reg_id_eq(&b.keys.k[0].peer, &a.id));
    CHECK(a.temp_id.len > 0 && !pk_reg_id_eq(&a.temp_id, &b.temp_id));

    /* the node never saw K: the device's K_reg matches the kms's, and the
     * channels work both ways (uplink, downlink) */
    pk_reg_link_pt_t m, m2;
    uint8_t buf[PK_REG_SEALED_MAX], type = 0;
    size_t len = 0;
    memset(&m, 0, sizeof m);
    m.peer = b.id;
    CHECK_EQ_INT(pk_reg_chan_seal_link(&a.chan, PK_REG_T_LINK_REQ, &m, buf, sizeof buf, &len),
                 PK_OK);
    CHECK_EQ_INT(pk_reg_chan_open_link(&w.node_chan[ia], buf, len, &type, &m2), PK_OK);
    CHECK_EQ_INT(type, PK_REG_T_LINK_REQ);
    CHECK(pk_reg_id_eq(&m2.peer, &b.id));
    /* replayed uplink record */
    CHECK_EQ_INT(pk_reg_chan_open_link(&w.node_chan[ia], buf, len, &type, &m2), PK_ERR_REPLAY);
    /* b's channel cannot open a's record */
    CHECK(pk_reg_chan_open_link(&w.node_chan[ib], buf, len, &type, &m2) != PK_OK);

    pk_reg_dev_clear(&a);
    pk_reg_dev_clear(&b);
    h_world_clear(&w);
}

/* Drives a device up to the point where it holds a challenge; returns it. */
static void to_challenge(h_world_t *w, pk_reg_dev_t *d, uint64_t src, const pk_rng_t *rng,
                         uint8_t req[PK_REG_REQUEST_LEN], uint8_t ch[PK_REG_CHALLENGE_LEN])
{
    uint8_t ar[1024];
    pk_out_t o;
    pk_out_init(&o, ar, sizeof ar);
    CHECK_EQ_INT(pk_reg_dev_start(d, rng, 0, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    CHECK_EQ_INT(o.act[0].len, PK_REG_REQUEST_LEN);
    memcpy(req, o.act[0].data, PK_REG_REQUEST_LEN);
    pk_out_reset(&w->out);
    CHECK_EQ_INT(pk_reg_node_input(&w->node, src, req, PK_REG_REQUEST_LEN, 0, &w->out), PK_OK);
    CHECK(h_has_event(&w->out, PK_REG_EV_NEED_VECTOR));
    h_node_service(w, &w->out, 0);
    pk_act_t *c = h_find_send(&w->out, PK_REG_T_CHALLENGE);
    CHECK(c != NULL);
    if (c)
        memcpy(ch, c->data, PK_REG_CHALLENGE_LEN);
}

static void test_wrong_autn(void)
{
    static h_world_t w;
    pk_reg_dev_t d;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 2);
    uint8_t req[PK_REG_REQUEST_LEN], ch[PK_REG_CHALLENGE_LEN], bad[PK_REG_CHALLENGE_LEN];
    uint8_t ar[1024];
    pk_out_t o;
    pk_out_init(&o, ar, sizeof ar);
    h_world_init(&w, NODE, 8);
    h_kms_add(&w.kms, "dev-a", 0xA1);
    h_dev_init(&d, "dev-a", NODE, 0xA1);
    to_challenge(&w, &d, 1, &rng, req, ch);

    /* every bit of AUTN and RAND matters; the device sends nothing */
    for (size_t i = 18; i < PK_REG_CHALLENGE_LEN; i++) {
        memcpy(bad, ch, sizeof bad);
        bad[i] ^= 0x01;
        CHECK_EQ_INT(pk_reg_dev_input(&d, bad, sizeof bad, 1, &o), PK_ERR_AUTH);
        CHECK_EQ_INT(o.n, 0);
        CHECK_EQ_INT(d.state, PK_REG_D_WAIT_CHALLENGE);
    }
    /* a stale nonce_d is not ours */
    memcpy(bad, ch, sizeof bad);
    bad[2] ^= 1;
    CHECK_EQ_INT(pk_reg_dev_input(&d, bad, sizeof bad, 1, &o), PK_ERR_STATE);
    CHECK_EQ_INT(o.n, 0);

    /* a genuine vector made for another node (a node relaying someone else's
     * challenge) fails: AUTN binds the node ID */
    pk_reg_vector_t v;
    pk_reg_id_t other = h_id("node-evil");
    CHECK_EQ_INT(pk_reg_kms_vector(w.kms.k[0], 16, &w.kms.rng, d.nonce_d, &d.id, &other, &v),
                 PK_OK);
    pk_reg_challenge_t c;
    size_t len = 0;
    memcpy(c.nonce_d, d.nonce_d, 16);
    memcpy(c.rand, v.rand, 16);
    memcpy(c.autn, v.autn, 16);
    CHECK_EQ_INT(pk_reg_challenge_encode(&c, bad, sizeof bad, &len), PK_OK);
    CHECK_EQ_INT(pk_reg_dev_input(&d, bad, len, 1, &o), PK_ERR_AUTH);
    CHECK_EQ_INT(o.n, 0);

    /* the genuine challenge still works afterwards */
    CHECK_EQ_INT(pk_reg_dev_input(&d, ch, sizeof ch, 2, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    CHECK_EQ_INT(o.act[0].code, PK_REG_T_RESPONSE);
    CHECK_EQ_INT(d.state, PK_REG_D_WAIT_ACCEPT);
    pk_reg_dev_clear(&d);
    h_world_clear(&w);
}

static void test_wrong_res(void)
{
    static h_world_t w;
    pk_reg_dev_t d;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 3);
    uint8_t req[PK_REG_REQUEST_LEN], ch[PK_REG_CHALLENGE_LEN], resp[PK_REG_RESPONSE_MAX];
    uint8_t ar[1024];
    pk_out_t o;
    pk_out_init(&o, ar, sizeof ar);
    h_world_init(&w, NODE, 8);
    h_kms_add(&w.kms, "dev-a", 0xA1);
    h_dev_init(&d, "dev-a", NODE, 0xA1);
    to_challenge(&w, &d, 1, &rng, req, ch);
    CHECK_EQ_INT(pk_reg_dev_input(&d, ch, sizeof ch, 1, &o), PK_OK);
    size_t rl = o.act[0].len;
    memcpy(resp, o.act[0].data, rl);

    static pk_reg_half_t snap[H_HALF];
    memcpy(snap, w.half, sizeof snap);
    for (size_t i = rl - 16; i < rl; i++) {
        resp[i] ^= 0x80;
        pk_out_reset(&w.out);
        CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, resp, rl, 2, &w.out), PK_ERR_AUTH);
        CHECK_EQ_INT(w.out.n, 0);
        resp[i] ^= 0x80;
    }
    CHECK_EQ_INT(w.node.drops[PK_REG_DROP_BAD_RES], 16);
    CHECK(memcmp(snap, w.half, sizeof snap) == 0); /* no state change */
    /* a right RES from another source is not this entry */
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 2, resp, rl, 2, &w.out), PK_ERR_NOTFOUND);
    /* the right one is accepted */
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, resp, rl, 2, &w.out), PK_OK);
    CHECK(h_has_event(&w.out, PK_REG_EV_NEED_KEYS));
    pk_reg_dev_clear(&d);
    h_world_clear(&w);
}

/* Truncated, oversized, wrong-type and random datagrams: dropped, no state
 * change on either side, nothing sent. */
static void test_garbage(void)
{
    static h_world_t w;
    static pk_reg_half_t snap[H_HALF];
    static pk_reg_dev_t d, dsnap;
    h_rng_t rs, gs;
    pk_rng_t rng = h_rng(&rs, 4), g = h_rng(&gs, 44);
    uint8_t req[PK_REG_REQUEST_LEN], ch[PK_REG_CHALLENGE_LEN];
    uint8_t buf[PK_REG_ACCEPT_MAX + 8];
    uint8_t ar[8192];
    pk_out_t o;
    pk_out_init(&o, ar, sizeof ar);
    h_world_init(&w, NODE, 1000);
    h_kms_add(&w.kms, "dev-a", 0xA1);
    h_dev_init(&d, "dev-a", NODE, 0xA1);
    to_challenge(&w, &d, 1, &rng, req, ch);
    memcpy(snap, w.half, sizeof snap);
    dsnap = d;

    /* node: every truncation and an extension of a valid request */
    for (size_t n = 0; n < sizeof req; n++) {
        pk_out_reset(&w.out);
        CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, req, n, 5, &w.out), PK_ERR_MALFORMED);
        CHECK_EQ_INT(w.out.n, 0);
    }
    memcpy(buf, req, sizeof req);
    buf[sizeof req] = 0;
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, buf, sizeof req + 1, 5, &w.out), PK_ERR_MALFORMED);
    /* nonzero padding, id length over 64, zero id length, bad UTF-8, version */
    memcpy(buf, req, sizeof req);
    buf[sizeof req - 1] = 1;
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, buf, sizeof req, 5, &w.out), PK_ERR_MALFORMED);
    memcpy(buf, req, sizeof req);
    buf[18] = 65;
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, buf, sizeof req, 5, &w.out), PK_ERR_MALFORMED);
    buf[18] = 0;
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, buf, sizeof req, 5, &w.out), PK_ERR_MALFORMED);
    memcpy(buf, req, sizeof req);
    buf[19] = 0xff;
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, buf, sizeof req, 5, &w.out), PK_ERR_MALFORMED);
    memcpy(buf, req, sizeof req);
    buf[1] = 2;
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, buf, sizeof req, 5, &w.out), PK_ERR_VERSION);
    /* wrong types: a challenge or an accept sent to the node */
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, ch, sizeof ch, 5, &w.out), PK_ERR_MALFORMED);
    buf[0] = PK_REG_T_ACCEPT;
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, buf, 200, 5, &w.out), PK_ERR_MALFORMED);
    CHECK_EQ_INT(w.out.n, 0);

    /* device: truncations and extension of the challenge, wrong types */
    for (size_t n = 0; n < sizeof ch; n++) {
        CHECK(pk_reg_dev_input(&d, ch, n, 5, &o) != PK_OK);
        CHECK_EQ_INT(o.n, 0);
    }
    memcpy(buf, ch, sizeof ch);
    CHECK_EQ_INT(pk_reg_dev_input(&d, buf, sizeof ch + 1, 5, &o), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_reg_dev_input(&d, req, sizeof req, 5, &o), PK_ERR_MALFORMED);
    CHECK(pk_reg_dev_input(&d, buf, sizeof buf, 5, &o) != PK_OK);

    /* random bytes, random lengths, each valid first byte too */
    static const uint8_t types[] = {0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12, 0x40, 0xff};
    for (int i = 0; i < 3000; i++) {
        uint8_t l2[2];
        pk_rng_fill(&g, l2, 2);
        size_t n = (size_t)(l2[0] | l2[1] << 8) % sizeof buf;
        pk_rng_fill(&g, buf, n);
        if (n)
            buf[0] = types[l2[0] % sizeof types];
        pk_out_reset(&w.out);
        CHECK(pk_reg_node_input(&w.node, 1 + (i & 3), buf, n, 5, &w.out) != PK_OK);
        CHECK_EQ_INT(w.out.n, 0);
        CHECK(pk_reg_dev_input(&d, buf, n, 5, &o) != PK_OK);
        CHECK_EQ_INT(o.n, 0);
    }
    CHECK(memcmp(snap, w.half, sizeof snap) == 0);
    CHECK(memcmp(&dsnap, &d, sizeof d) == 0);
    CHECK(w.node.drops[PK_REG_DROP_MALFORMED] > 3000);
    /* and the genuine exchange still completes */
    CHECK_EQ_INT(pk_reg_dev_input(&d, ch, sizeof ch, 6, &o), PK_OK);
    pk_reg_dev_clear(&d);
    h_world_clear(&w);
}

static void test_retransmitted_request(void)
{
    static h_world_t w;
    pk_reg_dev_t d;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 5);
    uint8_t req[PK_REG_REQUEST_LEN], ch[PK_REG_CHALLENGE_LEN];
    uint8_t ar[1024];
    pk_out_t o;
    pk_out_init(&o, ar, sizeof ar);
    h_world_init(&w, NODE, 8);
    h_kms_add(&w.kms, "dev-a", 0xA1);
    h_dev_init(&d, "dev-a", NODE, 0xA1);

    /* a duplicate while the node waits for the kms asks the kms nothing */
    CHECK_EQ_INT(pk_reg_dev_start(&d, &rng, 0, &o), PK_OK);
    memcpy(req, o.act[0].data, sizeof req);
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, req, sizeof req, 0, &w.out), PK_OK);
    CHECK_EQ_INT(w.out.n, 1);
    pk_out_t o2;
    uint8_t ar2[1024];
    pk_out_init(&o2, ar2, sizeof ar2);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, req, sizeof req, 1, &o2), PK_OK);
    CHECK_EQ_INT(o2.n, 0);
    CHECK_EQ_INT(w.node.drops[PK_REG_DROP_DUP], 1);
    h_node_service(&w, &w.out, 0);
    pk_act_t *c = h_find_send(&w.out, PK_REG_T_CHALLENGE);
    CHECK(c != NULL);
    if (!c)
        return;
    memcpy(ch, c->data, sizeof ch);

    /* the device's timer retransmits the identical request; the node answers
     * with the identical challenge (same RAND), and asks the kms nothing */
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_timeout(&d, 999, &o), PK_OK);
    CHECK_EQ_INT(o.n, 0);
    CHECK_EQ_INT(pk_reg_dev_timeout(&d, 1000, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    CHECK_MEM(o.act[0].data, req, sizeof req);
    for (int i = 0; i < 3; i++) {
        pk_out_reset(&o2);
        CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, o.act[0].data, o.act[0].len, 2, &o2), PK_OK);
        CHECK_EQ_INT(o2.n, 1);
        CHECK_EQ_INT(o2.act[0].kind, PK_ACT_SEND);
        CHECK_EQ_INT(o2.act[0].len, sizeof ch);
        CHECK_MEM(o2.act[0].data, ch, sizeof ch);
    }
    CHECK_EQ_INT(pk_reg_node_count(&w.node), 1);
    /* the device answers only once: the duplicates find it in WAIT_ACCEPT */
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_input(&d, ch, sizeof ch, 3, &o), PK_OK);
    CHECK_EQ_INT(pk_reg_dev_input(&d, ch, sizeof ch, 3, &o), PK_ERR_STATE);
    CHECK_EQ_INT(o.n, 1);
    pk_reg_dev_clear(&d);
    h_world_clear(&w);
}

/* The accept is lost: the device's timer retransmits its response and the
 * node answers with the cached, identical accept. */
static void test_lost_accept(void)
{
    static h_world_t w;
    pk_reg_dev_t d;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 6);
    uint8_t req[PK_REG_REQUEST_LEN], ch[PK_REG_CHALLENGE_LEN], acc[PK_REG_ACCEPT_MAX];
    uint8_t ar[4096];
    pk_out_t o;
    pk_out_init(&o, ar, sizeof ar);
    h_world_init(&w, NODE, 8);
    unsigned ia = h_kms_add(&w.kms, "dev-a", 0xA1);
    unsigned ib = h_kms_add(&w.kms, "dev-b", 0xB1);
    h_kms_pair(&w.kms, ia, ib);
    h_dev_init(&d, "dev-a", NODE, 0xA1);
    to_challenge(&w, &d, 1, &rng, req, ch);
    CHECK_EQ_INT(pk_reg_dev_input(&d, ch, sizeof ch, 10, &o), PK_OK);
    uint8_t resp[PK_REG_RESPONSE_MAX];
    size_t rl = o.act[0].len;
    memcpy(resp, o.act[0].data, rl);
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, resp, rl, 11, &w.out), PK_OK);
    /* a retransmitted response while the kms answers: nothing more */
    pk_out_t o2;
    uint8_t ar2[4096];
    pk_out_init(&o2, ar2, sizeof ar2);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, resp, rl, 11, &o2), PK_OK);
    CHECK_EQ_INT(o2.n, 0);
    h_node_service(&w, &w.out, 11);
    pk_act_t *a = h_find_send(&w.out, PK_REG_T_ACCEPT);
    CHECK(a != NULL);
    if (!a)
        return;
    size_t al = a->len;
    memcpy(acc, a->data, al);
    /* (lost) */
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_timeout(&d, 10 + 1000, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    CHECK_MEM(o.act[0].data, resp, rl);
    pk_out_reset(&o2);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 1, o.act[0].data, o.act[0].len, 1011, &o2), PK_OK);
    CHECK_EQ_INT(o2.n, 1);
    CHECK_EQ_INT(o2.act[0].len, al);
    CHECK_MEM(o2.act[0].data, acc, al);
    /* tampered accept: refused, no state change */
    acc[al - 1] ^= 1;
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_input(&d, acc, al, 1012, &o), PK_ERR_AUTH);
    CHECK_EQ_INT(d.state, PK_REG_D_WAIT_ACCEPT);
    acc[al - 1] ^= 1;
    CHECK_EQ_INT(pk_reg_dev_input(&d, o2.act[0].data, o2.act[0].len, 1012, &o), PK_OK);
    CHECK_EQ_INT(d.state, PK_REG_D_REGISTERED);
    CHECK(h_has_event(&o, PK_REG_EV_REGISTERED));
    CHECK_EQ_INT(d.keys.n, 1);
    /* a second copy is not accepted twice */
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_input(&d, acc, al, 1013, &o), PK_ERR_STATE);
    CHECK_EQ_INT(o.n, 0);
    pk_reg_dev_clear(&d);
    h_world_clear(&w);
}

/* No answer at all: bounded retries with growing timeouts, then FAILED. */
static void test_device_gives_up(void)
{
    pk_reg_dev_t d;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 7);
    uint8_t ar[1024];
    pk_out_t o;
    pk_out_init(&o, ar, sizeof ar);
    h_dev_init(&d, "dev-a", NODE, 0xA1);
    CHECK_EQ_INT(pk_reg_dev_start(&d, &rng, 0, &o), PK_OK);
    CHECK_EQ_INT(pk_reg_dev_start(&d, &rng, 0, &o), PK_ERR_STATE);
    uint64_t prev = 0, gap = 0;
    unsigned sends = 1;
    for (int i = 0; i < 10 && d.state == PK_REG_D_WAIT_CHALLENGE; i++) {
        uint64_t t = pk_reg_dev_next_deadline(&d);
        CHECK(t - prev >= gap);
        gap = t - prev;
        prev = t;
        pk_out_reset(&o);
        CHECK_EQ_INT(pk_reg_dev_timeout(&d, t, &o), PK_OK);
        if (h_find_send(&o, PK_REG_T_REQUEST))
            sends++;
    }
    CHECK_EQ_INT(sends, 4);
    CHECK_EQ_INT(d.state, PK_REG_D_FAILED);
    CHECK(h_has_event(&o, PK_REG_EV_FAILED));
    CHECK_EQ_INT(pk_reg_dev_next_deadline(&d), UINT64_MAX);
    pk_reg_dev_clear(&d);
}

/* The half-open table never grows past its capacity; the oldest goes. */
static void test_half_open_bounded(void)
{
    static h_world_t w;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 8);
    h_world_init(&w, NODE, 1000);
    pk_reg_request_t q;
    uint8_t buf[PK_REG_REQUEST_LEN], first_nonce[16];
    size_t len = 0;
    for (unsigned i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "dev-%u", i);
        q.dev = h_id(id);
        pk_rng_fill(&rng, q.nonce_d, 16);
        if (i == 0)
            memcpy(first_nonce, q.nonce_d, 16);
        CHECK_EQ_INT(pk_reg_request_encode(&q, buf, sizeof buf, &len), PK_OK);
        pk_out_reset(&w.out);
        CHECK_EQ_INT(pk_reg_node_input(&w.node, 100 + i % 3, buf, len, i, &w.out), PK_OK);
        CHECK(pk_reg_node_count(&w.node) <= H_HALF);
    }
    CHECK_EQ_INT(pk_reg_node_count(&w.node), H_HALF);
    CHECK_EQ_INT(w.node.drops[PK_REG_DROP_EVICTED], 50 - H_HALF);
    /* the kms's late answer for an evicted entry is harmless */
    pk_reg_vector_t v;
    memset(&v, 0, sizeof v);
    pk_reg_id_t d0 = h_id("dev-0");
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_vector(&w.node, 100, &d0, first_nonce, &v, 60, &w.out),
                 PK_ERR_NOTFOUND);
    CHECK_EQ_INT(w.out.n, 0);
    /* entries expire */
    CHECK_EQ_INT(pk_reg_node_next_deadline(&w.node), 46 + 30000);
    pk_reg_node_timeout(&w.node, 47 + 30000);
    CHECK_EQ_INT(pk_reg_node_count(&w.node), 2);
    pk_reg_node_timeout(&w.node, 49 + 30000);
    CHECK_EQ_INT(pk_reg_node_count(&w.node), 0);
    CHECK_EQ_INT(pk_reg_node_next_deadline(&w.node), UINT64_MAX);
    h_world_clear(&w);
}

/* The half-open index against a model: many sources and devices through a
 * 64-entry table (chains, replacement by a new nonce, eviction of the
 * oldest, expiry) and 8 buckets reused least-recently-used first. */
static void test_half_open_index(void)
{
    enum { NH = 64, NB = 8, OPS = 3000, KEYS = 150 };
    static pk_reg_half_t half[NH];
    static pk_reg_bucket_t bucket[NB];
    static uint8_t arena[8192];
    static struct {
        int live;
        uint64_t seq, t;
        uint8_t nonce[16];
    } m[KEYS];
    pk_reg_node_t n;
    pk_out_t o;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 11);
    pk_reg_node_cfg_t cfg = {.node_id = h_id(NODE),
                             .half = half,
                             .nhalf = NH,
                             .bucket = bucket,
                             .nbucket = NB,
                             .burst = 1000000,
                             .per_sec = 1000000,
                             .half_ttl_ms = 500,
                             .hash_seed = 42};
    CHECK_EQ_INT(pk_reg_node_init(&n, &cfg), PK_OK);
    pk_out_init(&o, arena, sizeof arena);
    uint64_t seq = 0, evicted = 0;
    int bad = 0;
    for (unsigned op = 0; op < OPS && !bad; op++) {
        uint8_t r[2];
        pk_rng_fill(&rng, r, 2);
        unsigned k = (unsigned)(r[0] | r[1] << 8) % KEYS;
        uint64_t now = op; /* 1 ms per op: entries expire after 500 ops */
        char id[16];
        pk_reg_request_t q;
        uint8_t buf[PK_REG_REQUEST_LEN];
        size_t len = 0;
        snprintf(id, sizeof id, "d%u", k / 10);
        q.dev = h_id(id); /* 15 devices x 10 sources */
        uint64_t src = 1000 + k % 10;
        if (op % 97 == 0) { /* expiry, as the model sees it */
            pk_reg_node_timeout(&n, now);
            for (unsigned j = 0; j < KEYS; j++)
                if (m[j].live && now - m[j].t >= 500)
                    m[j].live = 0;
        }
        int retx = m[k].live && (r[0] & 3) == 0;
        if (retx)
            memcpy(q.nonce_d, m[k].nonce, 16);
        else
            pk_rng_fill(&rng, q.nonce_d, 16);
        CHECK_EQ_INT(pk_reg_request_encode(&q, buf, sizeof buf, &len), PK_OK);
        uint64_t dup0 = n.drops[PK_REG_DROP_DUP];
        pk_out_reset(&o);
        CHECK_EQ_INT(pk_reg_node_input(&n, src, buf, len, now, &o), PK_OK);
        if (retx) { /* found: counted as a duplicate, nothing new */
            bad |= n.drops[PK_REG_DROP_DUP] != dup0 + 1 || o.n != 0;
            continue;
        }
        bad |= o.n != 1;
        unsigned live = 0, oldest = KEYS;
        for (unsigned j = 0; j < KEYS; j++)
            if (m[j].live && j != k) {
                live++;
                if (oldest == KEYS || m[j].seq < m[oldest].seq)
                    oldest = j;
            }
        if (live >= NH) { /* the model evicts the oldest too */
            m[oldest].live = 0;
            evicted++;
        }
        m[k].live = 1;
        m[k].seq = ++seq;
        m[k].t = now;
        memcpy(m[k].nonce, q.nonce_d, 16);
        unsigned count = 0;
        for (unsigned j = 0; j < KEYS; j++)
            count += m[j].live;
        bad |= pk_reg_node_count(&n) != count;
    }
    CHECK(!bad);
    CHECK(evicted > 100); /* the table was full for much of the run */
    CHECK_EQ_INT(n.drops[PK_REG_DROP_EVICTED], evicted);
    /* every live entry is found (a vector is taken), every other one not */
    for (unsigned j = 0; j < KEYS; j++) {
        char id[16];
        snprintf(id, sizeof id, "d%u", j / 10);
        pk_reg_id_t dev = h_id(id);
        pk_reg_vector_t v;
        memset(&v, 0, sizeof v);
        pk_out_reset(&o);
        int rc = pk_reg_node_vector(&n, 1000 + j % 10, &dev, m[j].nonce, &v, OPS, &o);
        if (m[j].live)
            CHECK_EQ_INT(rc, PK_OK);
        else
            CHECK_EQ_INT(rc, PK_ERR_NOTFOUND);
    }
    /* the LRU bucket went to new sources: 10 sources shared 8 buckets */
    unsigned used = 0;
    for (unsigned b = 0; b < NB; b++)
        used += bucket[b].used;
    CHECK_EQ_INT(used, NB);
    pk_reg_node_clear(&n);
    CHECK_EQ_INT(pk_reg_node_count(&n), 0);
    CHECK_EQ_INT(pk_reg_node_next_deadline(&n), UINT64_MAX);
}

/* The half-open timers against a naive scan of the table: many entries made
 * at different times (several at the same ms, the clock sometimes stepping
 * back), replaced by new nonces and evicted. next_deadline must be the true
 * minimum of created_ms + ttl, timeout must free exactly the entries the old
 * whole-table rule (now >= created && now - created >= ttl) frees, eviction
 * takes the earliest made (insertion order among equal times), and the age
 * list stays in created_ms order. */
static uint64_t naive_deadline(const pk_reg_half_t *t, size_t nt, uint64_t ttl)
{
    uint64_t d = UINT64_MAX;
    for (size_t i = 0; i < nt; i++)
        if (t[i].state != PK_REG_H_FREE) {
            uint64_t e = t[i].created_ms > UINT64_MAX - ttl ? UINT64_MAX : t[i].created_ms + ttl;
            if (e < d)
                d = e;
        }
    return d;
}

static int age_list_ok(const pk_reg_node_t *n)
{
    const pk_reg_half_t *t = n->cfg.half;
    size_t c = 0;
    uint32_t prev = UINT32_MAX;
    for (uint32_t i = n->holdest; i != UINT32_MAX; i = t[i].newer) {
        if (++c > n->cfg.nhalf || t[i].state == PK_REG_H_FREE || t[i].older != prev)
            return 0;
        if (prev != UINT32_MAX && t[prev].created_ms > t[i].created_ms)
            return 0;
        prev = i;
    }
    return prev == n->hnewest && c == pk_reg_node_count(n);
}

static void test_half_open_deadline_model(void)
{
    enum { NH = 256, NB = 4, OPS = 6000, KEYS = 600 };
    const uint64_t ttl = 300;
    static pk_reg_half_t half[NH];
    static pk_reg_bucket_t bucket[NB];
    static uint8_t arena[4096];
    static uint8_t was_live[NH];
    static struct {
        int live;
        uint64_t seq, t;
    } m[KEYS];
    pk_reg_node_t n;
    pk_out_t o;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 23);
    pk_reg_node_cfg_t cfg = {.node_id = h_id(NODE),
                             .half = half,
                             .nhalf = NH,
                             .bucket = bucket,
                             .nbucket = NB,
                             .burst = 1000000,
                             .per_sec = 1000000,
                             .half_ttl_ms = ttl,
                             .hash_seed = 7};
    CHECK_EQ_INT(pk_reg_node_init(&n, &cfg), PK_OK);
    pk_out_init(&o, arena, sizeof arena);
    CHECK_EQ_INT(pk_reg_node_next_deadline(&n), UINT64_MAX);
    uint64_t now = 5000, latest = 0, seq = 0, evicted = 0, expired = 0, backsteps = 0;
    unsigned bad_deadline = 0, bad_expiry = 0, bad_model = 0, bad_list = 0;
    for (unsigned op = 0; op < OPS; op++) {
        uint8_t r[4];
        pk_rng_fill(&rng, r, sizeof r);
        now += r[2] % 4; /* often the same ms */
        if (op > OPS / 2 && r[3] < 4 && now > 400) {
            now -= 1 + (r[3] * 97u + r[2]) % 400; /* the clock steps back */
            backsteps++;
        }
        if (r[3] % 11 == 0) { /* timeout against the old rule */
            unsigned want = 0;
            uint8_t exp[NH];
            for (unsigned i = 0; i < NH; i++) {
                was_live[i] = half[i].state != PK_REG_H_FREE;
                exp[i] =
                    was_live[i] && now >= half[i].created_ms && now - half[i].created_ms >= ttl;
                want += exp[i];
            }
            pk_reg_node_timeout(&n, now);
            for (unsigned i = 0; i < NH; i++)
                bad_expiry += (half[i].state != PK_REG_H_FREE) != (was_live[i] && !exp[i]);
            expired += want;
            for (unsigned j = 0; j < KEYS; j++)
                if (m[j].live && now >= m[j].t && now - m[j].t >= ttl)
                    m[j].live = 0;
        }
        unsigned k = (unsigned)(r[0] | r[1] << 8) % KEYS;
        char id[16];
        snprintf(id, sizeof id, "d%u", k / 20);
        pk_reg_request_t q;
        uint8_t buf[PK_REG_REQUEST_LEN];
        size_t len = 0;
        q.dev = h_id(id);
        pk_rng_fill(&rng, q.nonce_d, 16);
        CHECK_EQ_INT(pk_reg_request_encode(&q, buf, sizeof buf, &len), PK_OK);
        pk_out_reset(&o);
        CHECK_EQ_INT(pk_reg_node_input(&n, 500 + k % 20, buf, len, now, &o), PK_OK);
        latest = now > latest ? now : latest;
        /* the model: the entry is replaced; when full the earliest made goes */
        unsigned live = 0, oldest = KEYS;
        for (unsigned j = 0; j < KEYS; j++)
            if (m[j].live && j != k) {
                live++;
                if (oldest == KEYS || m[j].t < m[oldest].t ||
                    (m[j].t == m[oldest].t && m[j].seq < m[oldest].seq))
                    oldest = j;
            }
        if (live >= NH) {
            m[oldest].live = 0;
            evicted++;
        }
        m[k].live = 1;
        m[k].seq = ++seq;
        m[k].t = now;
        unsigned count = 0;
        uint64_t md = UINT64_MAX;
        for (unsigned j = 0; j < KEYS; j++)
            if (m[j].live) {
                count++;
                if (m[j].t + ttl < md)
                    md = m[j].t + ttl;
            }
        bad_model += pk_reg_node_count(&n) != count || pk_reg_node_next_deadline(&n) != md;
        bad_deadline += pk_reg_node_next_deadline(&n) != naive_deadline(half, NH, ttl);
        if (op % 50 == 0)
            bad_list += !age_list_ok(&n);
    }
    CHECK_EQ_INT(bad_deadline, 0);
    CHECK_EQ_INT(bad_expiry, 0);
    CHECK_EQ_INT(bad_model, 0);
    CHECK_EQ_INT(bad_list, 0);
    CHECK(age_list_ok(&n));
    CHECK(evicted > 100 && expired > 100 && backsteps > 10); /* every path was taken */
    CHECK_EQ_INT(n.drops[PK_REG_DROP_EVICTED], evicted);
    /* every live entry is still found, every other one not */
    for (unsigned j = 0; j < KEYS; j++) {
        char id[16];
        snprintf(id, sizeof id, "d%u", j / 20);
        pk_reg_id_t dev = h_id(id);
        pk_reg_half_t *h = NULL;
        for (unsigned i = 0; i < NH; i++)
            if (half[i].state != PK_REG_H_FREE && half[i].src == 500 + j % 20 &&
                pk_reg_id_eq(&half[i].dev, &dev))
                h = &half[i];
        CHECK((h != NULL) == m[j].live);
        if (h)
            CHECK_EQ_INT(h->created_ms, m[j].t);
    }
    /* draining: a deadline in the past frees everything up to it, no more */
    uint64_t d = pk_reg_node_next_deadline(&n);
    size_t before = pk_reg_node_count(&n);
    pk_reg_node_timeout(&n, d - 1);
    CHECK_EQ_INT(pk_reg_node_count(&n), before);
    pk_reg_node_timeout(&n, d);
    CHECK(pk_reg_node_count(&n) < before);
    CHECK(pk_reg_node_next_deadline(&n) > d);
    CHECK_EQ_INT(pk_reg_node_next_deadline(&n), naive_deadline(half, NH, ttl));
    pk_reg_node_timeout(&n, latest + ttl);
    CHECK_EQ_INT(pk_reg_node_count(&n), 0);
    CHECK_EQ_INT(pk_reg_node_next_deadline(&n), UINT64_MAX);
    CHECK(age_list_ok(&n));
    /* an entry whose deadline does not fit in 64 bits never expires */
    {
        pk_reg_request_t q;
        uint8_t buf[PK_REG_REQUEST_LEN];
        size_t len = 0;
        q.dev = h_id("late");
        memset(q.nonce_d, 0x5a, 16);
        CHECK_EQ_INT(pk_reg_request_encode(&q, buf, sizeof buf, &len), PK_OK);
        pk_out_reset(&o);
        CHECK_EQ_INT(pk_reg_node_input(&n, 9, buf, len, UINT64_MAX - 10, &o), PK_OK);
        CHECK_EQ_INT(pk_reg_node_next_deadline(&n), UINT64_MAX);
        pk_reg_node_timeout(&n, UINT64_MAX);
        CHECK_EQ_INT(pk_reg_node_count(&n), 1);
    }
    pk_reg_node_clear(&n);
    CHECK_EQ_INT(pk_reg_node_next_deadline(&n), UINT64_MAX);
}

/* Per-source token bucket: burst, then refill; other sources unaffected. */
static void test_rate_limit(void)
{
    static h_world_t w;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 9);
    h_world_init(&w, NODE, 2); /* burst 2, 1 per second */
    pk_reg_request_t q;
    uint8_t buf[PK_REG_REQUEST_LEN];
    size_t len = 0;
    int rcs[4];
    q.dev = h_id("dev-x");
    for (int i = 0; i < 4; i++) {
        pk_rng_fill(&rng, q.nonce_d, 16); /* new nonce each time: new runs */
        CHECK_EQ_INT(pk_reg_request_encode(&q, buf, sizeof buf, &len), PK_OK);
        pk_out_reset(&w.out);
        rcs[i] = pk_reg_node_input(&w.node, 7, buf, len, 1000, &w.out);
    }
    CHECK_EQ_INT(rcs[0], PK_OK);
    CHECK_EQ_INT(rcs[1], PK_OK);
    CHECK_EQ_INT(rcs[2], PK_ERR_LIMIT);
    CHECK_EQ_INT(rcs[3], PK_ERR_LIMIT);
    CHECK_EQ_INT(w.node.drops[PK_REG_DROP_RATE], 2);
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 8, buf, len, 1000, &w.out), PK_OK); /* other source */
    pk_rng_fill(&rng, q.nonce_d, 16);
    CHECK_EQ_INT(pk_reg_request_encode(&q, buf, sizeof buf, &len), PK_OK);
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 7, buf, len, 1999, &w.out), PK_ERR_LIMIT);
    pk_out_reset(&w.out);
    CHECK_EQ_INT(pk_reg_node_input(&w.node, 7, buf, len, 2000, &w.out), PK_OK);
    h_world_clear(&w);
}

/* node<->kms and node<->node frames round-trip; bad ones are refused. */
static pk_reg_mkset_t mkset(uint8_t n)
{
    pk_reg_mkset_t m;
    memset(&m, 0, sizeof m);
    m.n = n;
    m.domain_id = 0x01020304;
    for (unsigned i = 0; i < n; i++) {
        m.k[i].id = 100 + i;
        m.k[i].not_before_ms = 1000 + 500 * i;
        m.k[i].expiry_ms = 90000 + 500 * i;
        memset(m.k[i].key, 0x40 + (int)i, PK_REG_MK_LEN);
    }
    return m;
}

/* The master-key block (Toshiba): carried by the ACCEPT through the node core
 * to the device, byte layout, bounds, canonical form, refusals. */
static void test_master_key_block(void)
{
    static h_world_t w;
    static pk_reg_accept_pt_t pt, back;
    pk_reg_dev_t a, b;
    uint8_t buf[PK_REG_ACCEPT_PT_MAX + 8], plain[PK_REG_ACCEPT_PT_MAX];
    size_t len = 0, plen = 0;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 77);

    CHECK_EQ_INT(PK_REG_MKSET_MAX, 109);
    CHECK_EQ_INT(PK_REG_ACCEPT_MAX, 3463); /* 3452 + the paging block (11) */
    /* end to end: the kms's block reaches the device through the node */
    h_world_init(&w, NODE, 8);
    unsigned ia = h_kms_add(&w.kms, "dev-a", 0xA1);
    unsigned ib = h_kms_add(&w.kms, "dev-b", 0xB2);
    h_kms_pair(&w.kms, ia, ib);
    w.kms.keys[ia].mk = mkset(2);
    h_dev_init(&a, "dev-a", NODE, 0xA1);
    h_dev_init(&b, "dev-b", NODE, 0xB2);
    CHECK_EQ_INT(h_register(&w, &a, 11, &rng, 100), PK_OK);
    CHECK_EQ_INT(h_register(&w, &b, 12, &rng, 100), PK_OK);
    CHECK_EQ_INT(a.keys.mk.n, 2);
    CHECK_EQ_INT(a.keys.mk.domain_id, 0x01020304);
    CHECK_EQ_INT(a.keys.mk.k[1].id, 101);
    CHECK_EQ_INT(a.keys.mk.k[1].not_before_ms, 1500);
    CHECK_MEM(a.keys.mk.k[1].key, w.kms.keys[ia].mk.k[1].key, PK_REG_MK_LEN);
    CHECK_EQ_INT(b.keys.mk.n, 0); /* in no domain: no block */
    CHECK_EQ_INT(a.keys.n, 1);

    /* layout: the block follows the key entries, byte for byte */
    memset(&pt, 0, sizeof pt);
    memset(pt.nonce_d, 7, sizeof pt.nonce_d);
    pt.temp_id = h_id("t1");
    pt.keys.mode = PK_REG_MODE_PAIRS;
    pt.keys.mk = mkset(1);
    CHECK_EQ_INT(pk_reg_accept_pt_encode(&pt, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(len, 16 + 3 + 2 + 1 + 4 + 52);
    static const uint8_t blk[] = {1, 1, 2,    3,    4, 0, 0, 0, 100, 0,    0,    0,   0,
                                  0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0,   0x01, 0x5f, 0x90};
    CHECK_MEM(buf + 21, blk, sizeof blk);
    CHECK_EQ_INT(buf[len - 1], 0x40);
    CHECK_EQ_INT(pk_reg_accept_pt_decode(buf, len, &back), PK_OK);
    CHECK_EQ_INT(back.keys.mk.n, 1);
    CHECK_MEM(back.keys.mk.k[0].key, pt.keys.mk.k[0].key, PK_REG_MK_LEN);
    /* every truncation inside the block fails; one byte more fails */
    for (size_t n = 22; n < len; n++)
        CHECK_EQ_INT(pk_reg_accept_pt_decode(buf, n, &back), PK_ERR_MALFORMED);
    buf[len] = 0;
    CHECK_EQ_INT(pk_reg_accept_pt_decode(buf, len + 1, &back), PK_ERR_MALFORMED);
    /* no block: the accept is what it was before master keys (and decodes) */
    pt.keys.mk.n = 0;
    CHECK_EQ_INT(pk_reg_accept_pt_encode(&pt, plain, sizeof plain, &plen), PK_OK);
    CHECK_EQ_INT(plen, 21);
    CHECK_EQ_INT(pk_reg_accept_pt_decode(plain, plen, &back), PK_OK);
    CHECK_EQ_INT(back.keys.mk.n, 0);
    /* an explicit n = 0, n = 3, zero ID, not_before >= expiry, equal IDs,
     * next not later than current: refused on decode (and on encode) */
    memcpy(plain + plen, "\0", 1);
    CHECK_EQ_INT(pk_reg_accept_pt_decode(plain, plen + 1, &back), PK_ERR_MALFORMED);
    pt.keys.mk = mkset(2);
    CHECK_EQ_INT(pk_reg_accept_pt_encode(&pt, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(pk_reg_accept_pt_decode(buf, len, &back), PK_OK);
    buf[21] = 3;
    CHECK_EQ_INT(pk_reg_accept_pt_decode(buf, len, &back), PK_ERR_MALFORMED);
    CHECK_EQ_INT(back.keys.mk.n, 0);
    for (int bad = 0; bad < 4; bad++) {
        pt.keys.mk = mkset(2);
        if (bad == 0)
            pt.keys.mk.k[0].id = 0;
        if (bad == 1)
            pt.keys.mk.k[0].not_before_ms = pt.keys.mk.k[0].expiry_ms;
        if (bad == 2)
            pt.keys.mk.k[1].id = pt.keys.mk.k[0].id;
        if (bad == 3)
            pt.keys.mk.k[1].not_before_ms = pt.keys.mk.k[0].not_before_ms;
        CHECK(!pk_reg_mkset_valid(&pt.keys.mk));
        CHECK(pk_reg_accept_pt_encode(&pt, buf, sizeof buf, &len) != PK_OK);
    }
    /* KMS_KEYS_RESP carries the same block and round-trips */
    {
        static pk_reg_net_t q, r;
        uint8_t fb[PK_REG_NET_MAX];
        size_t fl = 0;
        memset(&q, 0, sizeof q);
        q.type = PK_REG_T_KMS_KEYS_RESP;
        q.keys.mode = PK_REG_MODE_PAIRS;
        q.keys.mk = mkset(2);
        CHECK_EQ_INT(pk_reg_net_encode(&q, fb, sizeof fb, &fl), PK_OK);
        CHECK_EQ_INT(fl, 4 + 1 + 4 + 2 * 52);
        CHECK_EQ_INT(pk_reg_net_decode(fb, fl, &r), PK_OK);
        CHECK_EQ_INT(r.keys.mk.n, 2);
        CHECK_MEM(r.keys.mk.k[1].key, q.keys.mk.k[1].key, PK_REG_MK_LEN);
        CHECK_EQ_INT(pk_reg_net_decode(fb, fl - 1, &r), PK_ERR_MALFORMED);
    }
    pk_reg_dev_clear(&a);
    pk_reg_dev_clear(&b);
}

/* MK_REFRESH / MK_UPDATE on the device<->node channel: layouts and bounds,
 * the device core's refresh and update (replace, stale refused, empty, replay,
 * tamper, wrong direction). */
static void test_mk_refresh_update(void)
{
    static h_world_t w;
    static pk_reg_mkset_t m, back;
    pk_reg_dev_t a, snap;
    uint8_t buf[PK_REG_MK_UPDATE_MAX + 8], pt[PK_REG_MK_UPDATE_PT_MAX + 8], ar[1024];
    size_t len = 0, plen = 0;
    uint32_t held = 99;
    uint8_t type = 0;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 78);
    pk_out_t o;

    CHECK_EQ_INT(PK_REG_MK_REFRESH_MAX, 32);
    CHECK_EQ_INT(PK_REG_MK_UPDATE_PT_MIN, 57);
    CHECK_EQ_INT(PK_REG_MK_UPDATE_MAX, 137);
    /* MK_REFRESH plaintext: empty or held_mk_id(4) */
    CHECK_EQ_INT(pk_reg_mk_refresh_pt_encode(0, pt, sizeof pt, &plen), PK_OK);
    CHECK_EQ_INT(plen, 0);
    CHECK_EQ_INT(pk_reg_mk_refresh_pt_decode(pt, 0, &held), PK_OK);
    CHECK_EQ_INT(held, 0);
    CHECK_EQ_INT(pk_reg_mk_refresh_pt_encode(0x0A0B0C0D, pt, sizeof pt, &plen), PK_OK);
    static const uint8_t ref[] = {0x0A, 0x0B, 0x0C, 0x0D};
    CHECK_EQ_INT(plen, 4);
    CHECK_MEM(pt, ref, 4);
    CHECK_EQ_INT(pk_reg_mk_refresh_pt_decode(pt, 4, &held), PK_OK);
    CHECK_EQ_INT(held, 0x0A0B0C0D);
    for (size_t n = 1; n < 8; n++)
        if (n != 4)
            CHECK_EQ_INT(pk_reg_mk_refresh_pt_decode(pt, n, &held), PK_ERR_MALFORMED);
    memset(pt, 0, 4); /* an explicit 0 is not canonical */
    CHECK_EQ_INT(pk_reg_mk_refresh_pt_decode(pt, 4, &held), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_reg_mk_refresh_pt_encode(7, pt, 3, &plen), PK_ERR_SPACE);
    /* MK_UPDATE plaintext: exactly the ACCEPT's block (same bytes) or empty */
    m = mkset(1);
    CHECK_EQ_INT(pk_reg_mk_update_pt_encode(&m, pt, sizeof pt, &plen), PK_OK);
    CHECK_EQ_INT(plen, 57);
    static const uint8_t blk[] = {1, 1, 2,    3,    4, 0, 0, 0, 100, 0,    0,    0,   0,
                                  0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0,   0x01, 0x5f, 0x90};
    CHECK_MEM(pt, blk, sizeof blk);
    CHECK_EQ_INT(pk_reg_mk_update_pt_decode(pt, plen, &back), PK_OK);
    CHECK_EQ_INT(back.n, 1);
    CHECK_MEM(back.k[0].key, m.k[0].key, PK_REG_MK_LEN);
    for (size_t n = 1; n < plen; n++)
        CHECK_EQ_INT(pk_reg_mk_update_pt_decode(pt, n, &back), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_reg_mk_update_pt_decode(pt, plen + 1, &back), PK_ERR_MALFORMED);
    CHECK_EQ_INT(back.n, 0);
    m = mkset(2);
    CHECK_EQ_INT(pk_reg_mk_update_pt_encode(&m, pt, sizeof pt, &plen), PK_OK);
    CHECK_EQ_INT(plen, PK_REG_MK_UPDATE_PT_MAX);
    CHECK_EQ_INT(pk_reg_mk_update_pt_decode(pt, plen, &back), PK_OK);
    CHECK_EQ_INT(back.k[1].id, 101);
    pt[0] = 1; /* n says 1 but 109 bytes follow */
    CHECK_EQ_INT(pk_reg_mk_update_pt_decode(pt, plen, &back), PK_ERR_MALFORMED);
    m.k[1].id = m.k[0].id; /* a block breaking the rules is not written */
    CHECK_EQ_INT(pk_reg_mk_update_pt_encode(&m, pt, sizeof pt, &plen), PK_ERR_INVAL);
    m.n = 0;
    CHECK_EQ_INT(pk_reg_mk_update_pt_encode(&m, pt, sizeof pt, &plen), PK_OK);
    CHECK_EQ_INT(plen, 0);
    CHECK_EQ_INT(pk_reg_mk_update_pt_decode(pt, 0, &back), PK_OK);
    CHECK_EQ_INT(back.n, 0);

    /* through the channel: device a registered with master key 100 */
    h_world_init(&w, NODE, 8);
    unsigned ia = h_kms_add(&w.kms, "dev-a", 0xA1);
    unsigned ib = h_kms_add(&w.kms, "dev-b", 0xB2);
    h_kms_pair(&w.kms, ia, ib);
    w.kms.keys[ia].mk = mkset(1);
    h_dev_init(&a, "dev-a", NODE, 0xA1);
    CHECK_EQ_INT(h_register(&w, &a, 11, &rng, 100), PK_OK);
    CHECK_EQ_INT(pk_reg_mkset_newest(&a.keys.mk), 100);
    pk_out_init(&o, ar, sizeof ar);
    CHECK_EQ_INT(pk_reg_dev_mk_refresh(&a, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    CHECK_EQ_INT(o.act[0].code, PK_REG_T_MK_REFRESH);
    CHECK_EQ_INT(o.act[0].len, PK_REG_MK_REFRESH_MAX);
    CHECK_EQ_INT(
        pk_reg_chan_open_mk(&w.node_chan[ia], o.act[0].data, o.act[0].len, &type, &held, &back),
        PK_OK);
    CHECK_EQ_INT(type, PK_REG_T_MK_REFRESH);
    CHECK_EQ_INT(held, 100);
    CHECK_EQ_INT(
        pk_reg_chan_open_mk(&w.node_chan[ia], o.act[0].data, o.act[0].len, &type, &held, &back),
        PK_ERR_REPLAY);
    /* a LINK_REQ opener does not take it, nor the other device's channel */
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_mk_refresh(&a, &o), PK_OK);
    {
        pk_reg_link_pt_t lm;
        CHECK_EQ_INT(
            pk_reg_chan_open_link(&w.node_chan[ia], o.act[0].data, o.act[0].len, &type, &lm),
            PK_ERR_MALFORMED);
    }
    CHECK(pk_reg_chan_open_mk(&w.node_chan[ib], o.act[0].data, o.act[0].len, &type, &held, &back) !=
          PK_OK);
    /* the node seals MK_UPDATE(keys 100, 101): the device takes it */
    m = mkset(2);
    CHECK_EQ_INT(
        pk_reg_chan_seal_mk(&w.node_chan[ia], PK_REG_T_MK_UPDATE, 0, &m, buf, sizeof buf, &len),
        PK_OK);
    CHECK_EQ_INT(len, PK_REG_MK_UPDATE_MAX);
    CHECK_EQ_INT(buf[0], PK_REG_T_MK_UPDATE);
    /* tampered: refused, nothing changed */
    buf[len - 1] ^= 1;
    snap = a;
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_input(&a, buf, len, 200, &o), PK_ERR_AUTH);
    CHECK_EQ_INT(o.n, 0);
    CHECK(memcmp(&snap, &a, sizeof a) == 0);
    buf[len - 1] ^= 1;
    CHECK_EQ_INT(pk_reg_dev_input(&a, buf, len, 200, &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    CHECK_EQ_INT(o.act[0].code, PK_REG_EV_MK_UPDATE);
    CHECK_EQ_INT(o.act[0].dest, 101);
    CHECK_EQ_INT(o.act[0].data[0], 1);
    CHECK_EQ_INT(a.keys.mk.n, 2);
    CHECK_MEM(a.keys.mk.k[1].key, m.k[1].key, PK_REG_MK_LEN);
    CHECK_EQ_INT(a.keys.n, 1); /* the root keys stay */
    /* replayed: refused */
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_input(&a, buf, len, 200, &o), PK_ERR_REPLAY);
    CHECK_EQ_INT(o.n, 0);
    /* the same block again: taken, unchanged */
    CHECK_EQ_INT(
        pk_reg_chan_seal_mk(&w.node_chan[ia], PK_REG_T_MK_UPDATE, 0, &m, buf, sizeof buf, &len),
        PK_OK);
    CHECK_EQ_INT(pk_reg_dev_input(&a, buf, len, 200, &o), PK_OK);
    CHECK_EQ_INT(o.act[0].data[0], 0);
    /* older than held (newest 100 < 101, same domain): refused, keys kept */
    m = mkset(1);
    CHECK_EQ_INT(
        pk_reg_chan_seal_mk(&w.node_chan[ia], PK_REG_T_MK_UPDATE, 0, &m, buf, sizeof buf, &len),
        PK_OK);
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_input(&a, buf, len, 200, &o), PK_ERR_STATE);
    CHECK_EQ_INT(o.n, 0);
    CHECK_EQ_INT(a.keys.mk.n, 2);
    /* empty: "the kms has none": the held keys stay */
    m.n = 0;
    CHECK_EQ_INT(
        pk_reg_chan_seal_mk(&w.node_chan[ia], PK_REG_T_MK_UPDATE, 0, &m, buf, sizeof buf, &len),
        PK_OK);
    CHECK_EQ_INT(len, PK_RECORD_LEN(0));
    CHECK_EQ_INT(pk_reg_dev_input(&a, buf, len, 200, &o), PK_OK);
    CHECK_EQ_INT(o.act[0].dest, 0);
    CHECK_EQ_INT(a.keys.mk.n, 2);
    /* a downlink MK_REFRESH (wrong direction) is not an update */
    CHECK_EQ_INT(
        pk_reg_chan_seal_mk(&w.node_chan[ia], PK_REG_T_MK_REFRESH, 5, NULL, buf, sizeof buf, &len),
        PK_OK);
    pk_out_reset(&o);
    CHECK(pk_reg_dev_input(&a, buf, len, 200, &o) != PK_OK);
    CHECK_EQ_INT(o.n, 0);
    /* other types are not sealed as MK messages */
    CHECK_EQ_INT(
        pk_reg_chan_seal_mk(&w.node_chan[ia], PK_REG_T_LINK_REQ, 0, &m, buf, sizeof buf, &len),
        PK_ERR_INVAL);
    /* not registered: no refresh */
    pk_reg_dev_t idle;
    h_dev_init(&idle, "dev-b", NODE, 0xB2);
    pk_out_reset(&o);
    CHECK_EQ_INT(pk_reg_dev_mk_refresh(&idle, &o), PK_ERR_STATE);
    CHECK_EQ_INT(o.n, 0);
    pk_reg_dev_clear(&idle);
    pk_reg_dev_clear(&a);
    h_world_clear(&w);
}

/* Option 2: an indicated KSI selects pool key (KSI mod n) in ascending KSI
 * order, whatever order the keys arrived in; the link key is
 * KDF(that key, FC 0xEB, param, initiator, responder). */
static void test_pool_ksi_lookup(void)
{
    static pk_reg_dev_t d;
    const uint32_t ksis[5] = {0x30, 0x10, 0x50, 0x20, 0x40}; /* ascending: 10 20 30 40 50 */
    uint8_t k_d[PK_REG_ROOT_KEY_LEN], want[PK_REG_ROOT_KEY_LEN];
    memset(&d, 0, sizeof d);
    d.state = PK_REG_D_REGISTERED;
    d.id = h_id("dev-a");
    d.keys.mode = PK_REG_MODE_POOL;
    d.keys.n = 5;
    for (unsigned i = 0; i < 5; i++) {
        d.keys.k[i].ksi = ksis[i];
        memset(d.keys.k[i].key, (int)(0xA0 + i), PK_REG_ROOT_KEY_LEN);
    }
    pk_reg_ind_t *in = &d.ind[0];
    in->used = 1;
    in->role = PK_REG_ROLE_RESPONDER;
    in->peer = h_id("dev-b");
    memset(in->param, 0x5A, PK_REG_PARAM_LEN);
    /* allocation KSIs from the kms sequence: larger than every pool key's */
    const struct {
        uint32_t ksi;
        unsigned entry; /* index into ksis[] of the rank-(ksi mod 5) key */
    } cases[] = {{1000, 1}, {1001, 3}, {1002, 0}, {1003, 4}, {1004, 2}, {0xFFFFFFFFu, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        in->ksi = cases[c].ksi;
        pk_reg_id_t ini = in->peer, rsp = d.id; /* this device responds */
        CHECK_EQ_INT(
            pk_reg_pool_link_key(d.keys.k[cases[c].entry].key, in->param, &ini, &rsp, want), PK_OK);
        CHECK_EQ_INT(pk_reg_dev_lookup(&d, cases[c].ksi, in->peer.b, in->peer.len, k_d), PK_OK);
        CHECK_MEM(k_d, want, sizeof want);
        /* not the key of a neighbouring rank */
        CHECK_EQ_INT(pk_reg_pool_link_key(d.keys.k[(cases[c].entry + 1) % 5].key, in->param, &ini,
                                          &rsp, want),
                     PK_OK);
        CHECK(memcmp(k_d, want, sizeof want) != 0);
    }
    /* no indication for this KSI or this peer, or no keys: nothing */
    uint8_t zero[PK_REG_ROOT_KEY_LEN] = {0};
    CHECK_EQ_INT(pk_reg_dev_lookup(&d, 1000, in->peer.b, in->peer.len, k_d), PK_ERR_NOTFOUND);
    CHECK_MEM(k_d, zero, sizeof zero); /* wiped on failure */
    CHECK_EQ_INT(pk_reg_dev_lookup(&d, in->ksi, (const uint8_t *)"dev-c", 5, k_d), PK_ERR_NOTFOUND);
    d.keys.n = 0;
    CHECK_EQ_INT(pk_reg_dev_lookup(&d, in->ksi, in->peer.b, in->peer.len, k_d), PK_ERR_NOTFOUND);
    pk_wipe(&d, sizeof d);
    pk_wipe(want, sizeof want);
}

static void test_net_frames(void)
{
    static pk_reg_net_t m, m2;
    uint8_t buf[PK_REG_NET_MAX];
    size_t len = 0;
    memset(&m, 0, sizeof m);
    m.type = PK_REG_T_NODE_LINK_IND;
    m.a = h_id("dev-a");
    m.b = h_id("dev-b");
    m.ksi = 0x01020304;
    memset(m.param, 0x5a, 16);
    CHECK_EQ_INT(pk_reg_net_encode(&m, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_OK);
    CHECK(pk_reg_id_eq(&m2.a, &m.a) && pk_reg_id_eq(&m2.b, &m.b));
    CHECK_EQ_INT(m2.ksi, m.ksi);
    CHECK_MEM(m2.param, m.param, 16);
    for (size_t n = 0; n < len; n++)
        CHECK_EQ_INT(pk_reg_net_decode(buf, n, &m2), PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_reg_net_decode(buf, len + 1, &m2), PK_ERR_MALFORMED);

    memset(&m, 0, sizeof m);
    m.type = PK_REG_T_KMS_VEC_RESP;
    memset(&m.vec, 0x33, sizeof m.vec);
    CHECK_EQ_INT(pk_reg_net_encode(&m, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(len, PK_REG_KMS_VEC_RESP_LEN);
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_OK);
    CHECK_MEM(&m2.vec, &m.vec, sizeof m.vec);

    /* a key set with too many keys, duplicate KSIs, or a pool key with a peer */
    memset(&m, 0, sizeof m);
    m.type = PK_REG_T_KMS_KEYS_RESP;
    m.keys.mode = PK_REG_MODE_POOL;
    m.keys.n = 2;
    m.keys.k[0].ksi = 1;
    m.keys.k[1].ksi = 2;
    CHECK_EQ_INT(pk_reg_net_encode(&m, buf, sizeof buf, &len), PK_OK);
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_OK);
    buf[4 + 4 + 32 + 1 + 3] = 1; /* second KSI := 1 */
    CHECK_EQ_INT(pk_reg_net_decode(buf, len, &m2), PK_ERR_MALFORMED);
    m.keys.k[1].peer = h_id("x");
    CHECK(pk_reg_net_encode(&m, buf, sizeof buf, &len) != PK_OK);
    m.keys.k[1].peer.len = 0;
    m.keys.n = PK_REG_MAX_KEYS + 1;
    CHECK(pk_reg_net_encode(&m, buf, sizeof buf, &len) != PK_OK);
}

int main(void)
{
    if (pk_crypto_init() != PK_OK)
        return 1;
    RUN(test_sizes);
    RUN(test_derive);
    RUN(test_derive_cx);
    RUN(test_full_registration);
    RUN(test_wrong_autn);
    RUN(test_wrong_res);
    RUN(test_garbage);
    RUN(test_retransmitted_request);
    RUN(test_lost_accept);
    RUN(test_device_gives_up);
    RUN(test_half_open_bounded);
    RUN(test_half_open_index);
    RUN(test_half_open_deadline_model);
    RUN(test_rate_limit);
    RUN(test_net_frames);
    RUN(test_pool_ksi_lookup);
    RUN(test_master_key_block);
    RUN(test_mk_refresh_update);
    return check_report();
}
