/*
 * Registration state import (lib/device/state.c), from blobs written by hand
 * from the layout in device.h: the indications must come in ascending slot
 * order, as export writes them, so a state has exactly one encoding and an
 * import re-exports to the same bytes (found by fuzz_device_state: slots
 * 1, 3, 0 were accepted and re-exported as 0, 1, 3).
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "core/codec.h"
#include "device/device.h"

static const uint8_t dev_k[32] = {0x11, 0x22, 0x33};

static void cfg_of(pk_reg_dev_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    pk_reg_id_set(&c->dev_id, "dev-a", 5);
    pk_reg_id_set(&c->node_id, "node-1", 6);
    c->k = dev_k;
    c->klen = sizeof dev_k;
    c->rto_ms = 1000;
    c->max_tries = 3;
}

/* A pool-mode registration state with indications in the given slots. */
static size_t blob(uint8_t *b, size_t cap, const uint8_t *slots, unsigned n)
{
    pk_wr_t w;
    pk_wr_init(&w, b, cap);
    pk_wr_bytes(&w, "PKDR", 4);
    pk_wr_u8(&w, 1);
    pk_wr_block8(&w, "dev-a", 5);
    pk_wr_block8(&w, "node-1", 6);
    for (unsigned i = 0; i < PK_REG_KREG_LEN; i++)
        pk_wr_u8(&w, (uint8_t)(0x40 + i));
    pk_wr_u16(&w, 0x1234);
    pk_wr_u64(&w, 7); /* tx_next */
    pk_wr_u64(&w, 3); /* rx_top */
    for (unsigned i = 0; i < PK_RECORD_WINDOW_WORDS; i++)
        pk_wr_u64(&w, i == 0 ? 0xc : 0); /* counters 2 and 3 seen */
    pk_wr_block8(&w, "tmp-9", 5);
    pk_wr_u8(&w, PK_REG_MODE_POOL);
    pk_wr_u8(&w, 1);
    pk_wr_u32(&w, 100);
    for (unsigned j = 0; j < PK_REG_ROOT_KEY_LEN; j++)
        pk_wr_u8(&w, (uint8_t)j);
    pk_wr_u8(&w, 0); /* pool key: no peer */
    pk_wr_u8(&w, (uint8_t)n);
    for (unsigned i = 0; i < n; i++) {
        pk_wr_u8(&w, slots[i]);
        pk_wr_u8(&w, PK_REG_ROLE_INITIATOR);
        pk_wr_u32(&w, 200 + i);
        for (unsigned j = 0; j < PK_REG_PARAM_LEN; j++)
            pk_wr_u8(&w, (uint8_t)(i + j));
        pk_wr_block8(&w, "dev-b", 5);
    }
    pk_wr_u8(&w, 4); /* ind_next */
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
    return w.len;
}

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

static void test_ind_slot_order(void)
{
    static uint8_t b[PK_DEVICE_REG_STATE_MAX], out[PK_DEVICE_REG_STATE_MAX];
    static pk_reg_dev_t d;
    pk_reg_dev_cfg_t cfg;
    size_t n, olen = 0;
    cfg_of(&cfg);

    /* ascending: imports, re-exports to the same bytes */
    const uint8_t up[3] = {0, 1, 3};
    n = blob(b, sizeof b, up, 3);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_OK);
    CHECK(d.ind[0].used && d.ind[1].used && !d.ind[2].used && d.ind[3].used);
    CHECK_EQ_INT(d.ind[3].ksi, 202);
    CHECK_EQ_INT(pk_device_reg_export(&d, out, sizeof out, &olen), PK_OK);
    CHECK_EQ_INT(olen, n);
    CHECK_MEM(out, b, n);
    pk_reg_dev_clear(&d);

    /* out of order (the fuzzer's find), descending, duplicate: refused, cleared */
    const uint8_t bad[3][3] = {{1, 3, 0}, {3, 1, 0}, {1, 1, 2}};
    for (unsigned k = 0; k < 3; k++) {
        n = blob(b, sizeof b, bad[k], 3);
        memset(&d, 0, sizeof d);
        CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_MALFORMED);
        CHECK(all_zero(&d, sizeof d));
    }
    /* a slot out of range */
    const uint8_t far[1] = {PK_REG_MAX_IND};
    n = blob(b, sizeof b, far, 1);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_MALFORMED);
    /* the highest slot alone is fine */
    const uint8_t last[1] = {PK_REG_MAX_IND - 1};
    n = blob(b, sizeof b, last, 1);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_OK);
    CHECK(d.ind[PK_REG_MAX_IND - 1].used);
    pk_reg_dev_clear(&d);
}

/* A receive window no receiver can have written is refused, not restored
 * (pk_record_rx_check): counter 0 marked seen, a bit above the top. */
static void test_impossible_window(void)
{
    static uint8_t b[PK_DEVICE_REG_STATE_MAX];
    static pk_reg_dev_t d;
    pk_reg_dev_cfg_t cfg;
    const uint8_t one[1] = {0};
    /* the window's first ring word sits after magic, version, two ids,
     * K_reg, the session id, tx_next and top */
    const size_t word0 = 4 + 1 + 6 + 7 + PK_REG_KREG_LEN + 2 + 8 + 8;
    cfg_of(&cfg);
    const uint64_t bad[2] = {0x1, 0x10}; /* counter 0; counter 4 with top 3 */
    for (unsigned k = 0; k < 2; k++) {
        size_t n = blob(b, sizeof b, one, 1);
        CHECK(pk_get_u64(b + word0 - 8) == 3 && pk_get_u64(b + word0) == 0xc); /* top, word 0 */
        pk_put_u64(b + word0, bad[k]);
        memset(&d, 0, sizeof d);
        CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_MALFORMED);
        CHECK(all_zero(&d, sizeof d));
    }
    size_t n = blob(b, sizeof b, one, 1); /* and the valid one imports */
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_OK);
    pk_reg_dev_clear(&d);
}

/* ---- version 2: a key table of any size (paged key sets) ---- */

/* A mode-pairs blob, version ver: n keys for peers "peer-0000".. (ascending
 * unless swap: entries 1 and 2 swapped), KSIs 1000.. (entry 5 repeats entry
 * 4's when dupksi), `missing` counted (version 2 only). */
static size_t blob_pairs(uint8_t *b, size_t cap, uint8_t ver, unsigned n, unsigned missing,
                         int swap, int dupksi)
{
    pk_wr_t w;
    pk_wr_init(&w, b, cap);
    pk_wr_bytes(&w, "PKDR", 4);
    pk_wr_u8(&w, ver);
    pk_wr_block8(&w, "dev-a", 5);
    pk_wr_block8(&w, "node-1", 6);
    for (unsigned i = 0; i < PK_REG_KREG_LEN; i++)
        pk_wr_u8(&w, (uint8_t)(0x40 + i));
    pk_wr_u16(&w, 0x1234);
    pk_wr_u64(&w, 7);
    pk_wr_u64(&w, 3);
    for (unsigned i = 0; i < PK_RECORD_WINDOW_WORDS; i++)
        pk_wr_u64(&w, i == 0 ? 0xc : 0);
    pk_wr_block8(&w, "tmp-9", 5);
    pk_wr_u8(&w, PK_REG_MODE_PAIRS);
    if (ver == 1)
        pk_wr_u8(&w, (uint8_t)n);
    else
        pk_wr_u16(&w, (uint16_t)n);
    for (unsigned i = 0; i < n; i++) {
        unsigned p = swap && (i == 1 || i == 2) ? 3 - i : i;
        char id[16];
        snprintf(id, sizeof id, "peer-%04u", p);
        pk_wr_u32(&w, dupksi && i == 5 ? 1004 : 1000 + i);
        for (unsigned j = 0; j < PK_REG_ROOT_KEY_LEN; j++)
            pk_wr_u8(&w, (uint8_t)(i + j));
        pk_wr_block8(&w, id, strlen(id));
    }
    if (ver == 2)
        pk_wr_u16(&w, (uint16_t)missing);
    pk_wr_u8(&w, 0); /* no indications */
    pk_wr_u8(&w, 0); /* ind_next */
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
    return w.len;
}

static void test_v2_table(void)
{
    static uint8_t b[PK_DEVICE_REG_STATE_MAX], out[PK_DEVICE_REG_STATE_MAX];
    static pk_reg_key_t store[400], small[100];
    static pk_reg_dev_t d;
    pk_reg_dev_cfg_t cfg;
    size_t n, olen = 0, nk = 0;
    cfg_of(&cfg);
    cfg.keys = store;
    cfg.nkeys = 400;

    /* 300 keys: imported into the store, re-exported to the same bytes */
    n = blob_pairs(b, sizeof b, 2, 300, 0, 0, 0);
    CHECK(n <= PK_DEVICE_REG_STATE_LEN(300));
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_OK);
    const pk_reg_key_t *t = pk_reg_dev_keys(&d, &nk);
    CHECK_EQ_INT(nk, 300);
    CHECK(t == store && store[299].ksi == 1299 && memcmp(store[299].peer.b, "peer-0299", 9) == 0);
    uint32_t ksi = 0;
    pk_reg_id_t last;
    CHECK_EQ_INT(pk_reg_id_set(&last, "peer-0299", 9), PK_OK);
    CHECK_EQ_INT(pk_device_link_ksi(&d, &last, &ksi), PK_OK);
    CHECK_EQ_INT(ksi, 1299);
    CHECK_EQ_INT(pk_device_reg_export(&d, out, sizeof out, &olen), PK_OK);
    CHECK_EQ_INT(olen, n);
    CHECK_MEM(out, b, n);
    /* a buffer sized for fewer keys: refused and wiped */
    CHECK_EQ_INT(pk_device_reg_export(&d, out, PK_DEVICE_REG_STATE_LEN(100), &olen), PK_ERR_SPACE);
    CHECK(all_zero(out, PK_DEVICE_REG_STATE_LEN(100)));
    pk_reg_dev_clear(&d);
    CHECK(all_zero(store, 300 * sizeof store[0])); /* the clear wipes the store */

    /* a store smaller than the blob's table: PK_ERR_SPACE, all wiped */
    cfg.keys = small;
    cfg.nkeys = 100;
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_SPACE);
    CHECK(all_zero(&d, sizeof d) && all_zero(small, sizeof small));
    /* no store (the 32 entries inside pk_reg_dev_t): the same */
    cfg.keys = NULL;
    cfg.nkeys = 0;
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_SPACE);
    CHECK(all_zero(&d, sizeof d));

    /* keys the store could not hold are remembered: 20 held, 280 missing */
    cfg.keys = store;
    cfg.nkeys = 400;
    n = blob_pairs(b, sizeof b, 2, 20, 280, 0, 0);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_OK);
    CHECK_EQ_INT(pk_reg_dev_keys_missing(&d), 280);
    CHECK_EQ_INT(pk_device_reg_export(&d, out, sizeof out, &olen), PK_OK);
    CHECK_EQ_INT(olen, n);
    CHECK_MEM(out, b, n); /* still version 2: it says what is missing */
    pk_reg_dev_clear(&d);

    /* one encoding per state: out of order, a repeated KSI, more than
     * PK_REG_PEERS_MAX keys or missing, version 3 */
    size_t bad[4];
    bad[0] = blob_pairs(b, sizeof b, 2, 40, 0, 1, 0);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, bad[0]), PK_ERR_MALFORMED);
    CHECK(all_zero(&d, sizeof d) && all_zero(store, sizeof store));
    bad[1] = blob_pairs(b, sizeof b, 2, 40, 0, 0, 1);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, bad[1]), PK_ERR_MALFORMED);
    CHECK(all_zero(store, sizeof store));
    bad[2] = blob_pairs(b, sizeof b, 2, 10, PK_REG_PEERS_MAX + 1, 0, 0);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, bad[2]), PK_ERR_MALFORMED);
    bad[2] = blob_pairs(b, sizeof b, 2, 32, 0, 0, 0); /* version 1 says it: not version 2 */
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, bad[2]), PK_ERR_MALFORMED);
    static pk_reg_key_t huge[PK_REG_PEERS_MAX + 2];
    static uint8_t hb[PK_DEVICE_REG_STATE_LEN(PK_REG_PEERS_MAX + 1)];
    cfg.keys = huge;
    cfg.nkeys = PK_REG_PEERS_MAX + 2;
    bad[3] = blob_pairs(hb, sizeof hb, 2, PK_REG_PEERS_MAX + 1, 0, 0, 0);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, hb, bad[3]), PK_ERR_MALFORMED);
    bad[3] = blob_pairs(hb, sizeof hb, 2, PK_REG_PEERS_MAX, 0, 0, 0); /* the bound itself */
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, hb, bad[3]), PK_OK);
    CHECK(bad[3] <= PK_DEVICE_REG_STATE_MAX);
    pk_reg_dev_clear(&d);
    cfg.keys = store;
    cfg.nkeys = 400;
    n = blob_pairs(b, sizeof b, 3, 10, 0, 0, 0);
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_VERSION);
}

/* An old (version 1) blob still loads - into a caller's store too - and is
 * written back byte for byte: a table of <= 32 keys with nothing missing
 * stays version 1. */
static void test_v1_still(void)
{
    static uint8_t b[PK_DEVICE_REG_STATE_MAX], out[PK_DEVICE_REG_STATE_MAX];
    static pk_reg_key_t store[64];
    static pk_reg_dev_t d;
    pk_reg_dev_cfg_t cfg;
    size_t n, olen = 0, nk = 0;
    const uint8_t one[1] = {2};
    for (int with_store = 0; with_store <= 1; with_store++) {
        cfg_of(&cfg);
        if (with_store) {
            cfg.keys = store;
            cfg.nkeys = 64;
        }
        /* pool mode (blob()) and pairs mode with 32 keys */
        for (int k = 0; k < 2; k++) {
            n = k == 0 ? blob(b, sizeof b, one, 1) : blob_pairs(b, sizeof b, 1, 32, 0, 0, 0);
            memset(&d, 0, sizeof d);
            CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_OK);
            const pk_reg_key_t *t = pk_reg_dev_keys(&d, &nk);
            CHECK_EQ_INT(nk, k == 0 ? 1 : 32);
            CHECK(t == (with_store ? store : d.keys.k));
            CHECK_EQ_INT(pk_device_reg_export(&d, out, sizeof out, &olen), PK_OK);
            CHECK_EQ_INT(out[4], 1);
            CHECK_EQ_INT(olen, n);
            CHECK_MEM(out, b, n);
            pk_reg_dev_clear(&d);
        }
    }
    /* a version-1 keyset holding the paging flag and a well-formed paging
     * block (total 3, no more, a tag) is not a state */
    n = blob_pairs(b, sizeof b, 1, 3, 0, 0, 0);
    const size_t mode_at =
        4 + 1 + 6 + 7 + PK_REG_KREG_LEN + 2 + 8 + 8 + 8 * PK_RECORD_WINDOW_WORDS + 6;
    CHECK_EQ_INT(b[mode_at], PK_REG_MODE_PAIRS);
    b[mode_at] |= PK_REG_MODE_PAGED;
    const uint8_t page[PK_REG_PAGE_LEN] = {0, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    memmove(b + n - 2 + sizeof page, b + n - 2, 2); /* n_ind, ind_next after the block */
    memcpy(b + n - 2, page, sizeof page);
    n += sizeof page;
    memset(&d, 0, sizeof d);
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_MALFORMED);
    b[mode_at] = PK_REG_MODE_PAIRS; /* the block without the flag: trailing garbage */
    CHECK_EQ_INT(pk_device_reg_import(&d, &cfg, b, n), PK_ERR_MALFORMED);
}

int main(void)
{
    pk_crypto_init();
    RUN(test_ind_slot_order);
    RUN(test_impossible_window);
    RUN(test_v2_table);
    RUN(test_v1_still);
    return check_report();
}
