/*
 * Fuzz target for the master-key parsers and the client's input path: the
 * parsers must accept only exact-size messages, a write of what they parsed
 * must reproduce the input, and no input may change a client's state without
 * a valid MAC (here: no input ever yields a stored key).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/mk/mk.h"

static int zero_fill(void *ctx, uint8_t *buf, size_t n)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 37 + 11);
    return PK_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t mk[32] = {1, 2, 3};
    static const pk_rng_t rng = {zero_fill, NULL};
    pk_mk_msg_t m;
    pk_mk_beacon_t b;
    uint8_t buf[PK_MK_MSG_MAX];
    size_t len;

    if (pk_mk_msg_parse(data, size, &m) == PK_OK) {
        if (size != PK_MK_AUTH_LEN(m.type, m.flags, m.id_i_len, m.id_r_len))
            abort();
        if (pk_mk_msg_write(&m, buf, sizeof buf, &len) != PK_OK || len != size)
            abort();
        /* Everything but the MAC (written as zeros) round-trips. */
        if (memcmp(buf, data, size - PK_MK_MAC_LEN) != 0)
            abort();
    }
    if (pk_mk_beacon_parse(data, size, &b) == PK_OK) {
        if (pk_mk_beacon_write(&b, buf, sizeof buf, &len) != PK_OK || len != size ||
            memcmp(buf, data, size) != 0)
            abort();
    }

    /* The client's input path: a client "client-103" in domain 0x01020304
     * with MK ID 0x2A. Without K_auth the fuzzer cannot make a key appear. */
    pk_mk_client_t c;
    pk_mk_table_t t;
    pk_mk_entry_t e[4];
    uint8_t arena[1024];
    pk_out_t o;
    if (pk_mk_client_init(&c, (const uint8_t *)"client-103", 10, 0x01020304, NULL, &t, e, 4,
                          &rng) != PK_OK ||
        pk_mk_client_set_master(&c, mk, 32, 0x2A, 2000000, 1000) != PK_OK)
        abort();
    pk_out_init(&o, arena, sizeof arena);
    int rc = pk_mk_client_input(&c, data, size, 1, 1000, &o);
    if (rc != PK_OK && o.n != 0)
        abort();
    if (pk_mk_table_count(&t) != 0)
        abort();
    pk_mk_client_clear(&c);
    return 0;
}
