/*
 * libFuzzer target for the device state import (device/device.h):
 * pk_device_reg_import, pk_device_link_import and pk_device_link_peek.
 *
 * Input: sel(1) blob. sel & 1 == 0: the blob is a registration state,
 * imported for device "dev-a" at node "node-1" (sel & 2: into a caller's key
 * store of PK_REG_PEERS_MAX entries, else the 32 inside pk_reg_dev_t); else
 * a link state, imported for self "dev-a" with a lookup that knows a root key
 * for every KSI but 0.
 *
 * Invariants: only the documented codes are returned; a failed import leaves
 * the destination cleared (all zero bytes, as pk_*_clear leaves it); a
 * successful import is REGISTERED / ESTABLISHED and exports again to exactly
 * the input bytes; pk_device_link_peek succeeds exactly when the link blob
 * parses (the import fails with neither MALFORMED nor VERSION), its peer
 * pointer lies inside the blob and names the imported link's peer.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes valid states (checked to import) into dir.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "device/device.h"

#include "fuzz_assert.h"

static const uint8_t dev_k[32] = {0x11, 0x22, 0x33};
static pk_reg_dev_cfg_t rcfg, scfg; /* scfg: with the key store */
static pk_reg_key_t store[PK_REG_PEERS_MAX];
static pk_link_cfg_t lcfg;

static int lookup(void *ctx, uint32_t ksi, const uint8_t *peer, size_t peer_len,
                  uint8_t k_d[PK_LINK_KD_LEN])
{
    (void)ctx;
    if (ksi == 0 || peer_len == 0 || peer_len > PK_LINK_ID_MAX || !peer)
        return PK_ERR_NOTFOUND;
    memset(k_d, 0x5c, PK_LINK_KD_LEN);
    k_d[0] = (uint8_t)ksi;
    return PK_OK;
}

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

static void setup(void)
{
    pk_crypto_init();
    memset(&rcfg, 0, sizeof rcfg);
    if (pk_reg_id_set(&rcfg.dev_id, "dev-a", 5) != PK_OK ||
        pk_reg_id_set(&rcfg.node_id, "node-1", 6) != PK_OK)
        abort();
    rcfg.k = dev_k;
    rcfg.klen = sizeof dev_k;
    rcfg.rto_ms = 1000;
    rcfg.max_tries = 3;
    lcfg = (pk_link_cfg_t){(const uint8_t *)"dev-a", 5, lookup, NULL, 1000, 3};
    scfg = rcfg;
    scfg.keys = store;
    scfg.nkeys = PK_REG_PEERS_MAX;
}

/* ---- seeds: states written by hand from the layouts in device.h ---- */

static void wr_ctr(pk_wr_t *w, uint64_t tx, uint64_t top)
{
    pk_wr_u64(w, tx);
    pk_wr_u64(w, top);
    /* counters 2 and 3 seen when top >= 3, none otherwise: a window a
     * receiver can have written (pk_record_rx_check refuses counter 0 and
     * bits above the top; the seeds had 0x5 before that check existed) */
    for (unsigned i = 0; i < PK_RECORD_WINDOW_WORDS; i++)
        pk_wr_u64(w, i == 0 && top >= 3 ? 0xc : 0);
}

static size_t reg_seed(uint8_t *b, size_t cap, int mode, int nind, int mk)
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
    wr_ctr(&w, 7, 3);
    pk_wr_block8(&w, "tmp-9", 5);
    pk_wr_u8(&w, (uint8_t)mode);
    pk_wr_u8(&w, 2);
    for (unsigned i = 0; i < 2; i++) {
        pk_wr_u32(&w, 100 + i);
        for (unsigned j = 0; j < PK_REG_ROOT_KEY_LEN; j++)
            pk_wr_u8(&w, (uint8_t)(i * 32 + j));
        if (mode == PK_REG_MODE_PAIRS)
            pk_wr_block8(&w, i ? "dev-c" : "dev-b", 5);
        else
            pk_wr_u8(&w, 0);
    }
    pk_wr_u8(&w, (uint8_t)nind);
    for (int i = 0; i < nind; i++) {
        pk_wr_u8(&w, (uint8_t)(2 * i + 1)); /* slot */
        pk_wr_u8(&w, (uint8_t)(i & 1));     /* role */
        pk_wr_u32(&w, 200 + (uint32_t)i);
        for (unsigned j = 0; j < PK_REG_PARAM_LEN; j++)
            pk_wr_u8(&w, (uint8_t)(i + j));
        pk_wr_block8(&w, "dev-b", 5);
    }
    pk_wr_u8(&w, (uint8_t)(nind * 2)); /* ind_next */
    if (mk) {
        pk_wr_u8(&w, 2);
        pk_wr_u32(&w, 7);
        for (unsigned i = 0; i < 2; i++) {
            pk_wr_u32(&w, 1 + i);
            pk_wr_u64(&w, 1000 * i);
            pk_wr_u64(&w, 100000 + 1000 * i);
            for (unsigned j = 0; j < PK_REG_MK_LEN; j++)
                pk_wr_u8(&w, (uint8_t)(0x51 + i));
        }
    }
    ASSERT(pk_wr_ok(&w) == PK_OK);
    return w.len;
}

/* A version-2 state (device.h): n keys in mode pairs, peers "p-0000".. in
 * order, `missing` more. */
static size_t reg_seed_v2(uint8_t *b, size_t cap, unsigned n, unsigned missing)
{
    pk_wr_t w;
    pk_wr_init(&w, b, cap);
    pk_wr_bytes(&w, "PKDR", 4);
    pk_wr_u8(&w, 2);
    pk_wr_block8(&w, "dev-a", 5);
    pk_wr_block8(&w, "node-1", 6);
    for (unsigned i = 0; i < PK_REG_KREG_LEN; i++)
        pk_wr_u8(&w, (uint8_t)(0x40 + i));
    pk_wr_u16(&w, 0x1234);
    wr_ctr(&w, 7, 3);
    pk_wr_block8(&w, "tmp-9", 5);
    pk_wr_u8(&w, PK_REG_MODE_PAIRS);
    pk_wr_u16(&w, (uint16_t)n);
    for (unsigned i = 0; i < n; i++) {
        char id[8];
        snprintf(id, sizeof id, "p-%04u", i);
        pk_wr_u32(&w, 100 + i);
        for (unsigned j = 0; j < PK_REG_ROOT_KEY_LEN; j++)
            pk_wr_u8(&w, (uint8_t)(i + j));
        pk_wr_block8(&w, id, 6);
    }
    pk_wr_u16(&w, (uint16_t)missing);
    pk_wr_u8(&w, 0); /* no indications */
    pk_wr_u8(&w, 0);
    ASSERT(pk_wr_ok(&w) == PK_OK);
    return w.len;
}

static size_t link_seed(uint8_t *b, size_t cap, int role)
{
    pk_wr_t w;
    pk_wr_init(&w, b, cap);
    pk_wr_bytes(&w, "PKDL", 4);
    pk_wr_u8(&w, 1);
    pk_wr_u8(&w, (uint8_t)role);
    pk_wr_block8(&w, "dev-a", 5);
    pk_wr_block8(&w, "dev-b", 5);
    pk_wr_u32(&w, 42);
    pk_wr_u16(&w, 0xBEEF);
    pk_wr_u8(&w, PK_LINK_ALG_AES128GCM_HMAC);
    pk_wr_u8(&w, 0);
    for (unsigned i = 0; i < 2 * PK_LINK_NONCE_LEN; i++)
        pk_wr_u8(&w, (uint8_t)(0x90 + i));
    wr_ctr(&w, 1, 0);
    ASSERT(pk_wr_ok(&w) == PK_OK);
    return w.len;
}

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

static void dump_seeds(const char *dir)
{
    static uint8_t b[PK_DEVICE_REG_STATE_MAX];
    static pk_reg_dev_t d;
    static pk_link_t l;
    static const struct {
        const char *name;
        int mode, nind, mk;
    } regs[] = {
        {"reg-pairs", PK_REG_MODE_PAIRS, 0, 0},
        {"reg-pairs-mk", PK_REG_MODE_PAIRS, 0, 1},
        {"reg-pool-ind", PK_REG_MODE_POOL, 3, 0},
        {"reg-pool-ind-mk", PK_REG_MODE_POOL, 2, 1},
    };
    for (size_t i = 0; i < sizeof regs / sizeof regs[0]; i++) {
        size_t n = reg_seed(b, sizeof b, regs[i].mode, regs[i].nind, regs[i].mk);
        memset(&d, 0, sizeof d);
        ASSERT(pk_device_reg_import(&d, &rcfg, b, n) == PK_OK); /* the seed is valid */
        pk_reg_dev_clear(&d);
        dump(dir, regs[i].name, 0, b, n);
    }
    static const struct {
        const char *name;
        unsigned n, missing;
    } v2[] = {{"reg-v2-40", 40, 0}, {"reg-v2-10-missing", 10, 90}};
    for (size_t i = 0; i < sizeof v2 / sizeof v2[0]; i++) {
        size_t n = reg_seed_v2(b, sizeof b, v2[i].n, v2[i].missing);
        memset(&d, 0, sizeof d);
        ASSERT(pk_device_reg_import(&d, &scfg, b, n) == PK_OK);
        pk_reg_dev_clear(&d);
        dump(dir, v2[i].name, 2, b, n);
    }
    for (int role = 0; role < 2; role++) {
        size_t n = link_seed(b, sizeof b, role);
        memset(&l, 0, sizeof l);
        ASSERT(pk_device_link_import(&l, &lcfg, b, n) == PK_OK);
        pk_link_clear(&l);
        dump(dir, role ? "link-responder" : "link-initiator", 1, b, n);
    }
}

/* ---- the target ---- */

static void fuzz_reg(const uint8_t *buf, size_t len, int with_store)
{
    static pk_reg_dev_t d;
    static uint8_t out[PK_DEVICE_REG_STATE_MAX];
    size_t olen = 0;

    memset(&d, 0, sizeof d);
    int rc = pk_device_reg_import(&d, with_store ? &scfg : &rcfg, buf, len);
    ASSERT(rc == PK_OK || rc == PK_ERR_INVAL || rc == PK_ERR_MALFORMED || rc == PK_ERR_VERSION ||
           rc == PK_ERR_CRYPTO || rc == PK_ERR_SPACE);
    ASSERT(rc != PK_ERR_SPACE || !with_store); /* the store holds any state */
    if (rc != PK_OK) {
        ASSERT(all_zero(&d, sizeof d));        /* cleared */
        ASSERT(all_zero(store, sizeof store)); /* and the keys wiped */
        return;
    }
    ASSERT(d.state == PK_REG_D_REGISTERED);
    ASSERT(len <= PK_DEVICE_REG_STATE_MAX);
    rc = pk_device_reg_export(&d, out, sizeof out, &olen);
    if (rc != PK_OK || olen != len || memcmp(out, buf, len) != 0)
        fprintf(stderr, "re-export: rc %d, %zu bytes for %zu in\n", rc, olen, len);
    ASSERT(rc == PK_OK);
    ASSERT(olen == len && memcmp(out, buf, len) == 0);
    /* one byte short of room: PK_ERR_SPACE and a wiped buffer */
    rc = pk_device_reg_export(&d, out, len - 1, &olen);
    ASSERT(rc == PK_ERR_SPACE && all_zero(out, len - 1));
    pk_reg_dev_clear(&d);
    ASSERT(all_zero(&d, sizeof d));
    ASSERT(all_zero(store, sizeof store));
}

static void fuzz_link(const uint8_t *buf, size_t len)
{
    static pk_link_t l;
    static uint8_t out[PK_DEVICE_LINK_STATE_MAX];
    size_t olen = 0, plen = 0;
    const uint8_t *peer = NULL;
    int role = -1;

    int prc = pk_device_link_peek(buf, len, &role, &peer, &plen);
    ASSERT(prc == PK_OK || prc == PK_ERR_MALFORMED);
    if (prc == PK_OK) {
        ASSERT(role == PK_LINK_INITIATOR || role == PK_LINK_RESPONDER);
        ASSERT(plen >= 1 && plen <= PK_LINK_ID_MAX);
        ASSERT(peer > buf && peer + plen <= buf + len);
        ASSERT(peer[-1] == plen); /* the block8 length in front of it */
    }

    memset(&l, 0, sizeof l);
    int rc = pk_device_link_import(&l, &lcfg, buf, len);
    ASSERT(rc == PK_OK || rc == PK_ERR_INVAL || rc == PK_ERR_MALFORMED || rc == PK_ERR_VERSION ||
           rc == PK_ERR_NOTFOUND || rc == PK_ERR_CRYPTO);
    ASSERT((prc == PK_OK) == (rc != PK_ERR_MALFORMED && rc != PK_ERR_VERSION));
    if (rc != PK_OK) {
        ASSERT(all_zero(&l, sizeof l)); /* cleared */
        return;
    }
    ASSERT(l.state == PK_LINK_S_ESTABLISHED);
    ASSERT(l.role == role && l.peer_len == plen && memcmp(l.peer_id, peer, plen) == 0);
    ASSERT(len <= PK_DEVICE_LINK_STATE_MAX);
    rc = pk_device_link_export(&l, out, sizeof out, &olen);
    if (rc != PK_OK || olen != len || memcmp(out, buf, len) != 0)
        fprintf(stderr, "re-export: rc %d, %zu bytes for %zu in\n", rc, olen, len);
    ASSERT(rc == PK_OK);
    ASSERT(olen == len && memcmp(out, buf, len) == 0);
    ASSERT(pk_device_link_export(&l, out, len - 1, &olen) == PK_ERR_SPACE);
    pk_link_clear(&l);
    ASSERT(all_zero(&l, sizeof l));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");
        if (dir)
            dump_seeds(dir);
        ready = 1;
    }
    if (size < 1 || size > 2 * PK_DEVICE_REG_STATE_MAX)
        return 0;
    if ((data[0] & 1) == 0)
        fuzz_reg(data + 1, size - 1, (data[0] & 2) != 0);
    else
        fuzz_link(data + 1, size - 1);
    return 0;
}
