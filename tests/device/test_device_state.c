/*
 * Registration state import (lib/device/state.c), from blobs written by hand
 * from the layout in device.h: the indications must come in ascending slot
 * order, as export writes them, so a state has exactly one encoding and an
 * import re-exports to the same bytes (found by fuzz_device_state: slots
 * 1, 3, 0 were accepted and re-exported as 0, 1, 3).
 */
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

int main(void)
{
    pk_crypto_init();
    RUN(test_ind_slot_order);
    RUN(test_impossible_window);
    return check_report();
}
