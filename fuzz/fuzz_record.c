/*
 * Fuzz target for the record layer (lib/core/record.h), with fixed keys
 * (fuzz_record_keys.h; the seeds in fuzz/corpus/record/ are valid records
 * under them, made by gen_seeds.c).
 *
 *  1. The input is a record arriving at B: open must return one of the
 *     hostile-input codes or PK_OK; on failure B is byte-for-byte unchanged
 *     and no output is reported; on success the plaintext has the expected
 *     length, an in-place open at a fresh receiver yields the same bytes, and
 *     a second open is PK_ERR_REPLAY.
 *  2. The input is a plaintext: A seals it (at a counter taken from the
 *     input), a fresh receiver opens it to the identical bytes and type;
 *     then B seals it in place and A opens it in place.
 *  3. One bit of that record, chosen by the input, is flipped: a fresh
 *     receiver rejects it with exactly the expected code and is unchanged,
 *     then still opens the genuine record, once.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/record.h"
#include "fuzz_record_keys.h"

#include "fuzz_assert.h"

static uint8_t buf[PK_RECORD_MAX_LEN + 1];
static uint8_t out[PK_RECORD_MAX_LEN];
static uint8_t rec[PK_RECORD_MAX_LEN];

static void init_rx(pk_record_t *r)
{
    memset(r, 0, sizeof *r);
    ASSERT(pk_record_init(r, FZ_SESSION, FZ_EPOCH, NULL, NULL, FZ_KEY_AB, FZ_SALT_AB) == PK_OK);
}

static void input_as_record(pk_record_t *b, const uint8_t *in, size_t size)
{
    pk_record_hdr_t h;
    pk_record_t snap, c;
    uint8_t type = 0xee;
    size_t n = 777;

    int prc = pk_record_peek(in, size, &h);
    memcpy(&snap, b, sizeof snap);
    int rc = pk_record_open(b, in, size, &type, out, sizeof out, &n);
    ASSERT(rc == PK_OK || rc == PK_ERR_MALFORMED || rc == PK_ERR_STATE || rc == PK_ERR_REPLAY ||
           rc == PK_ERR_AUTH);
    ASSERT((rc == PK_ERR_MALFORMED) == (prc != PK_OK));
    if (prc == PK_OK && (h.session_id != FZ_SESSION || h.epoch != FZ_EPOCH))
        ASSERT(rc == PK_ERR_STATE);
    if (rc != PK_OK) {
        ASSERT(memcmp(&snap, b, sizeof snap) == 0);
        ASSERT(n == 0 && type == 0);
        return;
    }
    ASSERT(n == size - PK_RECORD_OVERHEAD);
    ASSERT(type == h.type);
    ASSERT(pk_record_rx_top(b) == h.counter);

    init_rx(&c);
    memcpy(buf, in, size);
    size_t m = 1;
    uint8_t t2 = 0;
    ASSERT(pk_record_open(&c, buf, size, &t2, buf + PK_RECORD_HEADER_LEN,
                          sizeof buf - PK_RECORD_HEADER_LEN, &m) == PK_OK);
    ASSERT(m == n && t2 == type);
    ASSERT(memcmp(buf + PK_RECORD_HEADER_LEN, out, n) == 0);
    pk_record_clear(&c);

    memcpy(&snap, b, sizeof snap);
    ASSERT(pk_record_open(b, in, size, &type, out, sizeof out, &n) == PK_ERR_REPLAY);
    ASSERT(memcmp(&snap, b, sizeof snap) == 0);
}

static void input_as_plaintext(pk_record_t *a, pk_record_t *b, const uint8_t *in, size_t size)
{
    size_t ptlen = size < PK_RECORD_MAX_PLAINTEXT ? size : PK_RECORD_MAX_PLAINTEXT;
    uint8_t type = size ? in[0] : 0, t2 = 0;
    uint64_t start = size >= 8 ? pk_get_u64(in) : 1;
    size_t len = 0, n = 0;
    pk_record_t d;
    pk_record_hdr_t h;

    if (start == 0)
        start = 1;
    ASSERT(pk_record_set_tx_next(a, start) == PK_OK);
    int rc = pk_record_seal(a, type, in, ptlen, rec, sizeof rec, &len);
    if (start == PK_RECORD_COUNTER_LIMIT) {
        ASSERT(rc == PK_ERR_LIMIT && len == 0);
        return;
    }
    ASSERT(rc == PK_OK);
    ASSERT(len == PK_RECORD_LEN(ptlen));
    ASSERT(pk_record_tx_next(a) == start + 1);
    ASSERT(pk_record_peek(rec, len, &h) == PK_OK);
    ASSERT(h.type == type && h.session_id == FZ_SESSION && h.epoch == FZ_EPOCH &&
           h.counter == start);

    /* 3 first: the tampered copy at a fresh receiver. */
    init_rx(&d);
    if (size) {
        size_t pos = ((size_t)in[size - 1] * 257 + size) % len;
        memcpy(buf, rec, len);
        buf[pos] ^= (uint8_t)(1u << (in[0] & 7));
        int want = PK_ERR_AUTH;
        if (pos >= 1 && pos <= 3)
            want = PK_ERR_STATE;
        else if (pos >= 4 && pos < PK_RECORD_HEADER_LEN) {
            uint64_t c = pk_get_u64(buf + 4);
            if (c == 0 || c == PK_RECORD_COUNTER_LIMIT)
                want = PK_ERR_MALFORMED;
        }
        pk_record_t snap;
        memcpy(&snap, &d, sizeof snap);
        ASSERT(pk_record_open(&d, buf, len, &t2, out, sizeof out, &n) == want);
        ASSERT(memcmp(&snap, &d, sizeof snap) == 0 && n == 0);
    }

    /* 2: the genuine record opens to the same bytes, once. */
    ASSERT(pk_record_open(&d, rec, len, &t2, out, sizeof out, &n) == PK_OK);
    ASSERT(t2 == type && n == ptlen);
    ASSERT(ptlen == 0 || memcmp(out, in, ptlen) == 0);
    ASSERT(pk_record_open(&d, rec, len, &t2, out, sizeof out, &n) == PK_ERR_REPLAY);
    pk_record_clear(&d);

    /* B -> A in place. */
    memcpy(buf + PK_RECORD_HEADER_LEN, in, ptlen);
    ASSERT(pk_record_seal(b, (uint8_t)~type, buf + PK_RECORD_HEADER_LEN, ptlen, buf, sizeof buf,
                          &len) == PK_OK);
    ASSERT(len == PK_RECORD_LEN(ptlen));
    ASSERT(pk_record_open(a, buf, len, &t2, buf + PK_RECORD_HEADER_LEN,
                          sizeof buf - PK_RECORD_HEADER_LEN, &n) == PK_OK);
    ASSERT(t2 == (uint8_t)~type && n == ptlen);
    ASSERT(ptlen == 0 || memcmp(buf + PK_RECORD_HEADER_LEN, in, ptlen) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    pk_record_t a = {0}, b = {0};
    if (!in)
        return 0;
    ASSERT(pk_record_init(&a, FZ_SESSION, FZ_EPOCH, FZ_KEY_AB, FZ_SALT_AB, FZ_KEY_BA, FZ_SALT_BA) ==
           PK_OK);
    ASSERT(pk_record_init(&b, FZ_SESSION, FZ_EPOCH, FZ_KEY_BA, FZ_SALT_BA, FZ_KEY_AB, FZ_SALT_AB) ==
           PK_OK);
    input_as_record(&b, in, size);
    input_as_plaintext(&a, &b, in, size);
    pk_record_clear(&a);
    pk_record_clear(&b);
    return 0;
}
