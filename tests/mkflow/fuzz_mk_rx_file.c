/*
 * libFuzzer target for the receive-window file of `proxkey device mk run`
 * (DIR/mk-rx, src/device/device_mk.h): pk_dmk_rx_parse, the parser behind
 * mk run's rx_read, and pk_record_rx_check / pk_record_rx_import, which it
 * relies on for each window.
 *
 * Invariants: PK_OK, PK_ERR_MALFORMED or PK_ERR_VERSION (only with the right
 * magic); a failure leaves the file wiped (all zero); a success names a
 * client of 1..PK_MK_ID_MAX bytes and holds at most PK_DMK_RX_CAP windows,
 * each with a non-zero key ID, no key twice, each window importable into a
 * receive context and exported back to the same bytes; the file encodes back
 * to exactly the input bytes, and not into one byte less.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes valid files (0, 1, 3 and PK_DMK_RX_CAP
 * windows, made by real record contexts).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "device_mk.h"

#include "fuzz_assert.h"

static const uint8_t KEY[16] = {0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
                                0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70};
static const uint8_t SALT[4] = {0x71, 0x72, 0x73, 0x74};

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

/* A window as a receiver leaves it: seal records 1..last, open every third
 * one and the last. */
static void make_window(uint64_t last, uint8_t w[PK_RECORD_RX_STATE_LEN])
{
    pk_record_t tx, rx;
    uint8_t rec[PK_RECORD_OVERHEAD + 1], pt[1], type;
    size_t len = 0, ptlen = 0;
    memset(&tx, 0, sizeof tx);
    memset(&rx, 0, sizeof rx);
    ASSERT(pk_record_init(&tx, 7, 0, KEY, SALT, NULL, NULL) == PK_OK);
    ASSERT(pk_record_init(&rx, 7, 0, NULL, NULL, KEY, SALT) == PK_OK);
    for (uint64_t c = 1; c <= last; c++) {
        ASSERT(pk_record_seal(&tx, 0x20, (const uint8_t *)"x", 1, rec, sizeof rec, &len) == PK_OK);
        if (c % 3 == 0 || c == last)
            ASSERT(pk_record_open(&rx, rec, len, &type, pt, sizeof pt, &ptlen) == PK_OK);
    }
    ASSERT(pk_record_rx_export(&rx, w) == PK_OK);
    pk_record_clear(&tx);
    pk_record_clear(&rx);
}

static void dump_seeds(const char *dir)
{
    static dmk_rx_file_t f, g;
    static uint8_t buf[PK_DMK_RX_MAX];
    static const size_t counts[] = {0, 1, 3, PK_DMK_RX_CAP};
    for (size_t s = 0; s < sizeof counts / sizeof counts[0]; s++) {
        memset(&f, 0, sizeof f);
        f.id_len = s == 3 ? PK_MK_ID_MAX : (size_t)snprintf((char *)f.id, sizeof f.id, "c%zu", s);
        if (s == 3)
            memset(f.id, 'z', PK_MK_ID_MAX);
        f.n = counts[s];
        for (size_t i = 0; i < f.n; i++) {
            f.e[i].key_id = 0x7e000001u + (uint32_t)i;
            f.e[i].created_ms = 1700000000000ull + 1000 * i;
            make_window(i % 4 == 3 ? 1100 + i : 1 + 7 * i, f.e[i].w);
        }
        size_t len = 0;
        ASSERT(pk_dmk_rx_encode(&f, buf, sizeof buf, &len) == PK_OK);
        ASSERT(pk_dmk_rx_parse(buf, len, &g) == PK_OK && g.n == f.n);
        char path[512];
        snprintf(path, sizeof path, "%s/rx-%zu", dir, counts[s]);
        FILE *fp = fopen(path, "wb");
        if (fp) {
            fwrite(buf, 1, len, fp);
            fclose(fp);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static dmk_rx_file_t f;
    static pk_record_t rx;
    static uint8_t out[PK_DMK_RX_MAX];
    if (!ready) {
        const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");
        if (dir)
            dump_seeds(dir);
        ASSERT(pk_record_init(&rx, 7, 0, NULL, NULL, KEY, SALT) == PK_OK);
        ready = 1;
    }

    memset(&f, 0xa5, sizeof f); /* the parser must reset all of it */
    int rc = pk_dmk_rx_parse(data, size, &f);
    ASSERT(rc == PK_OK || rc == PK_ERR_MALFORMED || rc == PK_ERR_VERSION);
    if (rc == PK_ERR_VERSION)
        ASSERT(size >= 5 && memcmp(data, "PKMR", 4) == 0 && data[4] != 1);
    if (rc != PK_OK) {
        ASSERT(all_zero(&f, sizeof f));
        return 0;
    }
    ASSERT(size <= PK_DMK_RX_MAX);
    ASSERT(f.id_len >= 1 && f.id_len <= PK_MK_ID_MAX && f.n <= PK_DMK_RX_CAP);
    for (size_t i = f.id_len; i < PK_MK_ID_MAX; i++)
        ASSERT(f.id[i] == 0);
    for (size_t i = 0; i < f.n; i++) {
        uint8_t back[PK_RECORD_RX_STATE_LEN];
        ASSERT(f.e[i].key_id != 0);
        for (size_t j = 0; j < i; j++)
            ASSERT(f.e[j].key_id != f.e[i].key_id || f.e[j].created_ms != f.e[i].created_ms);
        ASSERT(pk_record_rx_check(f.e[i].w) == PK_OK);
        ASSERT(pk_record_rx_import(&rx, f.e[i].w) == PK_OK);
        ASSERT(pk_record_rx_export(&rx, back) == PK_OK);
        ASSERT(memcmp(back, f.e[i].w, sizeof back) == 0);
        ASSERT(pk_record_rx_top(&rx) == pk_get_u64(f.e[i].w));
    }
    for (size_t i = f.n; i < PK_DMK_RX_CAP; i++)
        ASSERT(all_zero(&f.e[i], sizeof f.e[i]));
    size_t len = 0;
    ASSERT(pk_dmk_rx_encode(&f, out, sizeof out, &len) == PK_OK);
    ASSERT(len == size && memcmp(out, data, size) == 0);
    ASSERT(pk_dmk_rx_encode(&f, out, size - 1, &len) == PK_ERR_SPACE && len == 0);
    return 0;
}
