/*
 * libFuzzer target for every registration parser and core input: the node
 * core (with an entry waiting for a response), the device core waiting for a
 * challenge, for an accept, and registered (link indications, MK_UPDATE), and
 * the node<->kms frames, MK_REFRESH/MK_UPDATE and KEYS_REQ/KEYS plaintexts,
 * and a device fetching the pages of its key set (WAIT_KEYS, KEYS records).
 * The first input byte picks the target.
 * Invariant: an input that is refused produces no output and leaves the core unchanged.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes the valid messages of the setup as seeds.
 */
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

static h_world_t w;
static pk_reg_dev_t d_ch, d_acc, d_reg, d_keys;
static pk_reg_key_t kstore[64], kstore_snap[64]; /* d_keys's key store */
static pk_record_t node_keys_chan;               /* the node's side of d_keys's channel */
static pk_reg_half_t half_snap[H_HALF];
static pk_reg_bucket_t bucket_snap[4];
static pk_reg_node_t node_snap;
static int ready;

static void dump(const char *dir, const char *name, uint8_t sel, const uint8_t *b, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(&sel, 1, 1, f);
    fwrite(b, 1, n, f);
    fclose(f);
}

static void setup(void)
{
    static h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 99);
    uint8_t ar[8192], req[PK_REG_REQUEST_LEN], ch[PK_REG_CHALLENGE_LEN];
    uint8_t resp[PK_REG_RESPONSE_MAX], acc[PK_REG_ACCEPT_MAX], ind[PK_REG_SEALED_MAX];
    size_t rl = 0, al = 0, il = 0;
    pk_out_t o;
    const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");

    pk_crypto_init();
    h_world_init(&w, "node-1", 1000);
    unsigned ia = h_kms_add(&w.kms, "dev-a", 0xA1);
    unsigned ib = h_kms_add(&w.kms, "dev-b", 0xB2);
    h_kms_pair(&w.kms, ia, ib);
    /* both in a domain: accepts and KMS_KEYS_RESP carry a master-key block */
    for (unsigned i = 0; i < 2; i++) {
        pk_reg_mkset_t *mk = &w.kms.keys[i == 0 ? ia : ib].mk;
        mk->n = 2;
        mk->domain_id = 7;
        for (unsigned j = 0; j < 2; j++) {
            mk->k[j].id = 1 + j;
            mk->k[j].not_before_ms = 1000 * j;
            mk->k[j].expiry_ms = 100000 + 1000 * j;
            memset(mk->k[j].key, 0x51 + (int)j, PK_REG_MK_LEN);
        }
    }
    /* d_reg: registered; d_acc: waiting for its accept; d_ch: for a challenge */
    h_dev_init(&d_reg, "dev-b", "node-1", 0xB2);
    if (h_register(&w, &d_reg, 2, &rng, 0) != PK_OK)
        abort();
    h_dev_init(&d_acc, "dev-a", "node-1", 0xA1);
    pk_out_init(&o, ar, sizeof ar);
    pk_reg_dev_start(&d_acc, &rng, 0, &o);
    memcpy(req, o.act[0].data, sizeof req);
    pk_out_reset(&w.out);
    pk_reg_node_input(&w.node, 1, req, sizeof req, 0, &w.out);
    h_node_service(&w, &w.out, 0);
    memcpy(ch, h_find_send(&w.out, PK_REG_T_CHALLENGE)->data, sizeof ch);
    d_ch = d_acc;
    pk_out_reset(&o);
    if (pk_reg_dev_input(&d_acc, ch, sizeof ch, 0, &o) != PK_OK)
        abort();
    rl = o.act[0].len;
    memcpy(resp, o.act[0].data, rl);
    /* d_keys: dev-c, 40 allowed peers, the accept held the first 32: it
     * waits for the page after "q-31" */
    unsigned ic = h_kms_add(&w.kms, "dev-c", 0xC3);
    pk_reg_keyset_t *ks = &w.kms.keys[ic];
    ks->paged = 1;
    ks->more = 1;
    ks->total = 40;
    for (unsigned i = 0; i < 32; i++) {
        char id[8];
        snprintf(id, sizeof id, "q-%02u", i);
        ks->k[i].ksi = 0x3000 + i;
        memset(ks->k[i].key, 0x60 + (int)i, PK_REG_ROOT_KEY_LEN);
        ks->k[i].peer = h_id(id);
    }
    ks->n = 32;
    pk_reg_dev_cfg_t kc = {.dev_id = h_id("dev-c"),
                           .node_id = h_id("node-1"),
                           .k = (const uint8_t *)"\xc3\xc3\xc3\xc3\xc3\xc3\xc3\xc3"
                                                 "\xc3\xc3\xc3\xc3\xc3\xc3\xc3\xc3",
                           .klen = 16,
                           .rto_ms = 1000,
                           .max_tries = 4,
                           .keys = kstore,
                           .nkeys = 64};
    if (pk_reg_dev_init(&d_keys, &kc) != PK_OK)
        abort();
    pk_out_reset(&o);
    pk_reg_dev_start(&d_keys, &rng, 0, &o);
    for (int step = 0; step < 2; step++) {
        pk_out_reset(&w.out);
        if (pk_reg_node_input(&w.node, 3, o.act[0].data, o.act[0].len, 0, &w.out) != PK_OK)
            abort();
        h_node_service(&w, &w.out, 0);
        pk_act_t *a = NULL;
        for (unsigned i = 0; i < w.out.n; i++)
            if (w.out.act[i].kind == PK_ACT_SEND)
                a = &w.out.act[i];
        pk_out_reset(&o);
        if (!a || pk_reg_dev_input(&d_keys, a->data, a->len, 0, &o) != PK_OK)
            abort();
    }
    if (d_keys.state != PK_REG_D_WAIT_KEYS)
        abort();
    node_keys_chan = w.node_chan[ic];
    memcpy(kstore_snap, kstore, sizeof kstore);
    memcpy(half_snap, w.half, sizeof half_snap);
    memcpy(bucket_snap, w.bucket, sizeof bucket_snap);
    node_snap = w.node; /* the tables' index heads live in the node */
    if (dir) {          /* the page that answers it; the KEYS_REQ and KEYS plaintexts */
        static pk_reg_keyset_t pg;
        static uint8_t kr[PK_REG_KEYS_MAX], pt[PK_REG_KEYS_PT_MAX];
        size_t kl = 0, pl = 0;
        pk_reg_id_t after = ks->k[31].peer;
        memset(&pg, 0, sizeof pg);
        pg.mode = PK_REG_MODE_PAIRS;
        pg.paged = 1;
        pg.total = 40;
        for (unsigned i = 0; i < 8; i++) {
            char id[8];
            snprintf(id, sizeof id, "q-%02u", 32 + i);
            pg.k[i].ksi = 0x3020 + i;
            pg.k[i].peer = h_id(id);
        }
        pg.n = 8;
        pk_record_t nc = w.node_chan[ic]; /* a copy: the world's counter stays */
        if (pk_reg_chan_seal_keys(&nc, &after, &pg, kr, sizeof kr, &kl) != PK_OK)
            abort();
        dump(dir, "keys", 5, kr, kl);
        /* the device's KEYS_REQ, as the node receives it */
        pk_record_t dc = d_keys.chan;
        if (pk_reg_chan_seal_keys_req(&dc, &after, kr, sizeof kr, &kl) != PK_OK)
            abort();
        dump(dir, "keys_req", 6, kr, kl);
        pk_reg_keys_pt_encode(&after, &pg, pt, sizeof pt, &pl);
        dump(dir, "keys_pt", 4, pt, pl);
        pk_reg_keys_req_pt_encode(&after, pt, sizeof pt, &pl);
        dump(dir, "keys_req_pt", 4, pt, pl);
        pk_reg_net_t q;
        memset(&q, 0, sizeof q);
        q.type = PK_REG_T_KMS_KEYS_REQ;
        q.a = h_id("dev-c");
        q.paged = 1;
        q.after = after;
        pk_reg_net_encode(&q, pt, sizeof pt, &pl);
        dump(dir, "kms_keys_req_cursor", 4, pt, pl);
        memset(&q, 0, sizeof q);
        q.type = PK_REG_T_KMS_KEYS_RESP;
        q.keys = *ks;
        pk_reg_net_encode(&q, pt, sizeof pt, &pl);
        dump(dir, "kms_keys_resp_paged", 4, pt, pl);
    }
    if (dir) {
        /* a full accept (for seeds only: the world moves on, then is rebuilt) */
        static h_world_t w2;
        static pk_reg_dev_t d2;
        w2 = w;
        d2 = d_acc;
        pk_out_reset(&w2.out);
        pk_reg_node_input(&w2.node, 1, resp, rl, 0, &w2.out);
        h_node_service(&w2, &w2.out, 0);
        pk_act_t *a = h_find_send(&w2.out, PK_REG_T_ACCEPT);
        al = a->len;
        memcpy(acc, a->data, al);
        pk_reg_link_pt_t m;
        memset(&m, 0, sizeof m);
        m.peer = h_id("dev-a");
        m.ksi = w.kms.keys[ib].k[0].ksi;
        pk_reg_chan_seal_link(&w.node_chan[ib], PK_REG_T_LINK_IND, &m, ind, sizeof ind, &il);
        pk_reg_net_t q;
        uint8_t fb[PK_REG_NET_MAX];
        size_t fl = 0;
        memset(&q, 0, sizeof q);
        q.type = PK_REG_T_KMS_KEYS_RESP;
        q.keys = w.kms.keys[ia];
        pk_reg_net_encode(&q, fb, sizeof fb, &fl);
        dump(dir, "request", 0, req, sizeof req);
        dump(dir, "response", 0, resp, rl);
        dump(dir, "challenge", 1, ch, sizeof ch);
        dump(dir, "accept", 2, acc, al);
        dump(dir, "link_ind", 3, ind, il);
        dump(dir, "keys_resp", 4, fb, fl);
        /* MK_UPDATE sealed to the registered device; the MK plaintexts */
        uint8_t upd[PK_REG_MK_UPDATE_MAX], mpt[PK_REG_MK_UPDATE_PT_MAX];
        size_t ul = 0, ml = 0;
        pk_reg_chan_seal_mk(&w.node_chan[ib], PK_REG_T_MK_UPDATE, 0, &w.kms.keys[ib].mk, upd,
                            sizeof upd, &ul);
        dump(dir, "mk_update", 3, upd, ul);
        pk_reg_mk_update_pt_encode(&w.kms.keys[ib].mk, mpt, sizeof mpt, &ml);
        dump(dir, "mk_update_pt", 4, mpt, ml);
        pk_reg_mk_refresh_pt_encode(2, mpt, sizeof mpt, &ml);
        dump(dir, "mk_refresh_pt", 4, mpt, ml);
        (void)d2;
        /* w2's node shares w's tables: put them back */
        memcpy(w.half, half_snap, sizeof half_snap);
        memcpy(w.bucket, bucket_snap, sizeof bucket_snap);
    }
    ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t ar[8192];
    static pk_reg_dev_t d, snap;
    static pk_reg_net_t q;
    pk_out_t o;
    if (!ready)
        setup();
    if (size < 1)
        return 0;
    uint8_t sel = data[0] % 7;
    data++;
    size--;
    pk_out_init(&o, ar, sizeof ar);
    int rc;
    switch (sel) {
    case 0:
        rc = pk_reg_node_input(&w.node, 1 + (size & 1), data, size, 1, &o);
        if (rc != PK_OK) {
            if (o.n != 0 || memcmp(half_snap, w.half, sizeof half_snap) != 0)
                abort();
        }
        memcpy(w.half, half_snap, sizeof half_snap); /* back to the setup state */
        memcpy(w.bucket, bucket_snap, sizeof bucket_snap);
        w.node = node_snap;
        break;
    case 1:
    case 2:
    case 3:
        snap = sel == 1 ? d_ch : sel == 2 ? d_acc : d_reg;
        d = snap;
        rc = pk_reg_dev_input(&d, data, size, 1, &o);
        if (rc != PK_OK && (o.n != 0 || memcmp(&d, &snap, sizeof d) != 0))
            abort();
        if (rc == PK_OK && d.state == PK_REG_D_REGISTERED && sel == 2)
            pk_record_clear(&d.chan); /* a forged accept would be a finding anyway */
        break;
    case 5: /* a page for the device fetching its key set */
        snap = d_keys;
        d = snap;
        rc = pk_reg_dev_input(&d, data, size, 1, &o);
        if (rc != PK_OK && (o.n != 0 || memcmp(&d, &snap, sizeof d) != 0 ||
                            memcmp(kstore, kstore_snap, sizeof kstore) != 0))
            abort();
        if (rc == PK_OK) { /* taken: keys in order, none past the store */
            size_t n = 0;
            const pk_reg_key_t *t = pk_reg_dev_keys(&d, &n);
            if (n > 64)
                abort();
            for (size_t i = 1; i < n && d.state != PK_REG_D_FAILED; i++)
                if (pk_reg_id_cmp(&t[i - 1].peer, &t[i].peer) >= 0)
                    abort();
        }
        memcpy(kstore, kstore_snap, sizeof kstore); /* d's channel is d_keys's: not cleared */
        break;
    case 6: { /* a KEYS_REQ at the node: refused leaves the channel as it was */
        static pk_record_t c;
        pk_reg_id_t after;
        c = node_keys_chan;
        rc = pk_reg_chan_open_keys_req(&c, data, size, &after);
        if (rc != PK_OK && memcmp(&c, &node_keys_chan, sizeof c) != 0)
            abort();
        if (rc == PK_OK &&
            (after.len > PK_REG_ID_MAX || (after.len > 0 && !pk_reg_id_valid(after.b, after.len))))
            abort();
        break;
    }
    case 4: { /* the KEYS_REQ / KEYS plaintexts: what decodes re-encodes to the same bytes */
        static pk_reg_keyset_t pg;
        static uint8_t b[PK_REG_KEYS_PT_MAX];
        pk_reg_id_t after;
        size_t n = 0;
        if (pk_reg_keys_req_pt_decode(data, size, &after) == PK_OK &&
            (pk_reg_keys_req_pt_encode(&after, b, sizeof b, &n) != PK_OK || n != size ||
             memcmp(b, data, n) != 0))
            abort();
        if (pk_reg_keys_pt_decode(data, size, &after, &pg) == PK_OK &&
            (pk_reg_keys_pt_encode(&after, &pg, b, sizeof b, &n) != PK_OK || n != size ||
             memcmp(b, data, n) != 0))
            abort();
    }
        rc = pk_reg_net_decode(data, size, &q);
        if (rc == PK_OK) { /* what decodes re-encodes to the same bytes */
            static uint8_t b[PK_REG_NET_MAX];
            size_t n = 0;
            if (pk_reg_net_encode(&q, b, sizeof b, &n) != PK_OK || n != size ||
                memcmp(b, data, n) != 0)
                abort();
        }
        {
            static pk_reg_accept_pt_t a;
            (void)pk_reg_accept_pt_decode(data, size, &a);
        }
        { /* the MK plaintexts: what decodes re-encodes to the same bytes */
            static pk_reg_mkset_t mk;
            uint8_t b[PK_REG_MK_UPDATE_PT_MAX];
            size_t n = 0;
            uint32_t held = 0;
            if (pk_reg_mk_update_pt_decode(data, size, &mk) == PK_OK &&
                (pk_reg_mk_update_pt_encode(&mk, b, sizeof b, &n) != PK_OK || n != size ||
                 memcmp(b, data, n) != 0))
                abort();
            if (pk_reg_mk_refresh_pt_decode(data, size, &held) == PK_OK &&
                (pk_reg_mk_refresh_pt_encode(held, b, sizeof b, &n) != PK_OK || n != size ||
                 memcmp(b, data, n) != 0))
                abort();
        }
        break;
    }
    return 0;
}
