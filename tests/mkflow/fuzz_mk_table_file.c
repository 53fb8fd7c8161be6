/*
 * libFuzzer target for the device's individual-key table file reader
 * (DIR/mk-table, src/device/device_mk.h): pk_dmk_table_parse, the parser
 * behind `proxkey device mk`'s table_read.
 *
 * Invariants: PK_OK or PK_ERR_MALFORMED; a failure leaves the table wiped
 * (all zero); a success holds at most PK_DMK_TABLE_CAP entries, each USED,
 * with a non-zero key ID, a known role and a 1..PK_MK_ID_MAX byte partner,
 * and encodes back to exactly the input bytes.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes valid tables (0, 1, 3 and 64 entries).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_mk.h"

#include "fuzz_assert.h"

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

static void dump_seeds(const char *dir)
{
    static dmk_file_t f, g;
    static uint8_t buf[PK_DMK_TABLE_MAX];
    static const size_t counts[] = {0, 1, 3, PK_DMK_TABLE_CAP};
    for (size_t s = 0; s < sizeof counts / sizeof counts[0]; s++) {
        memset(&f, 0, sizeof f);
        f.n = counts[s];
        for (size_t i = 0; i < f.n; i++) {
            pk_mk_entry_t *e = &f.e[i];
            e->key_id = 1000 + (uint32_t)i;
            memset(e->key, (int)(0x30 + i), PK_MK_IK_LEN);
            e->expiry_ms = 1700000000000ull + 3600000 * i;
            e->created_ms = 1690000000000ull + i;
            e->mk_id = 1 + (uint32_t)(i % 2);
            e->role = (uint8_t)(i % 2 ? PK_MK_ROLE_RESPONDER : PK_MK_ROLE_INITIATOR);
            e->flags = (uint8_t)(PK_MK_E_USED | (i % 3 == 2 ? PK_MK_E_SUPERSEDED : 0));
            e->partner_len = (uint8_t)(i == PK_DMK_TABLE_CAP - 1
                                           ? PK_MK_ID_MAX
                                           : (size_t)snprintf((char *)e->partner, sizeof e->partner,
                                                              "client-%zu", i));
            if (e->partner_len == PK_MK_ID_MAX)
                memset(e->partner, 'z', PK_MK_ID_MAX);
            f.tx[i] = 1 + 17 * i;
        }
        size_t len = 0;
        ASSERT(pk_dmk_table_encode(&f, buf, sizeof buf, &len) == PK_OK);
        ASSERT(pk_dmk_table_parse(buf, len, &g) == PK_OK && g.n == f.n);
        char path[512];
        snprintf(path, sizeof path, "%s/table-%zu", dir, counts[s]);
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
    static dmk_file_t f;
    static uint8_t out[PK_DMK_TABLE_MAX];
    if (!ready) {
        const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");
        if (dir)
            dump_seeds(dir);
        ready = 1;
    }

    memset(&f, 0xa5, sizeof f); /* the parser must reset all of it */
    int rc = pk_dmk_table_parse(data, size, &f);
    ASSERT(rc == PK_OK || rc == PK_ERR_MALFORMED);
    if (rc != PK_OK) {
        ASSERT(all_zero(&f, sizeof f));
        return 0;
    }
    ASSERT(size <= PK_DMK_TABLE_MAX);
    ASSERT(f.n <= PK_DMK_TABLE_CAP);
    for (size_t i = 0; i < f.n; i++) {
        const pk_mk_entry_t *e = &f.e[i];
        ASSERT(e->key_id != 0 && (e->flags & PK_MK_E_USED));
        ASSERT(e->role == PK_MK_ROLE_INITIATOR || e->role == PK_MK_ROLE_RESPONDER);
        ASSERT(e->partner_len >= 1 && e->partner_len <= PK_MK_ID_MAX);
        ASSERT(e->next_try_ms == 0);
    }
    for (size_t i = f.n; i < PK_DMK_TABLE_CAP; i++)
        ASSERT(all_zero(&f.e[i], sizeof f.e[i]) && f.tx[i] == 0);
    size_t len = 0;
    ASSERT(pk_dmk_table_encode(&f, out, sizeof out, &len) == PK_OK);
    ASSERT(len == size && memcmp(out, data, size) == 0);
    /* one byte short: PK_ERR_SPACE */
    ASSERT(pk_dmk_table_encode(&f, out, size - 1, &len) == PK_ERR_SPACE && len == 0);
    return 0;
}
