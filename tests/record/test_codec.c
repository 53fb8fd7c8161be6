/*
 * Wire codec tests (lib/core/codec.h): every reader and writer function,
 * sticky errors, exact consumption, length-prefixed blocks with their max,
 * lengths near SIZE_MAX, and a writer that refuses to pass its capacity.
 */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/codec.h"

static const uint8_t SRC[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                              0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14};

/* consumed + left == len, always. */
#define CHECK_ACCOUNT(r, base, len) CHECK((size_t)((r)->p - (base)) + (r)->left == (len))

static void test_rd_ints(void)
{
    pk_rd_t r;
    pk_rd_init(&r, SRC, 15);
    CHECK_EQ_INT(pk_rd_u8(&r), 0x01);
    CHECK_EQ_INT(pk_rd_u16(&r), 0x0203);
    CHECK(pk_rd_u32(&r) == 0x04050607u);
    CHECK(pk_rd_u64(&r) == 0x08090a0b0c0d0e0fULL);
    CHECK_EQ_INT(r.left, 0);
    CHECK_EQ_INT(r.err, PK_OK);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);
    CHECK_ACCOUNT(&r, SRC, 15);

    /* High bits survive (no sign extension). */
    static const uint8_t ff[8] = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8};
    pk_rd_init(&r, ff, 8);
    CHECK(pk_rd_u64(&r) == 0xfffefdfcfbfaf9f8ULL);
    pk_rd_init(&r, ff, 8);
    CHECK_EQ_INT(pk_rd_u16(&r), 0xfffe);
    CHECK(pk_rd_u32(&r) == 0xfdfcfbfau);
    CHECK_EQ_INT(pk_rd_u8(&r), 0xf9);
    CHECK_EQ_INT(pk_rd_u8(&r), 0xf8);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);
}

/* Each integer read on one byte too few fails, yields 0, consumes nothing. */
static void test_rd_short(void)
{
    static const size_t width[] = {1, 2, 4, 8};
    for (size_t w = 0; w < 4; w++) {
        for (size_t have = 0; have < width[w]; have++) {
            pk_rd_t r;
            uint64_t v = 1;
            pk_rd_init(&r, SRC, have);
            switch (width[w]) {
            case 1: v = pk_rd_u8(&r); break;
            case 2: v = pk_rd_u16(&r); break;
            case 4: v = pk_rd_u32(&r); break;
            case 8: v = pk_rd_u64(&r); break;
            }
            CHECK(v == 0);
            CHECK_EQ_INT(r.err, PK_ERR_MALFORMED);
            CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);
            CHECK_EQ_INT(r.left, have); /* a failed read does nothing else */
            CHECK(r.p == SRC);
        }
    }
}

static void test_rd_sticky(void)
{
    pk_rd_t r;
    uint8_t out[4] = {9, 9, 9, 9};
    pk_rd_init(&r, SRC, 6);
    CHECK_EQ_INT(pk_rd_u32(&r), 0x01020304);
    CHECK_EQ_INT(pk_rd_u32(&r), 0); /* 2 left: fails */
    CHECK_EQ_INT(r.left, 2);
    /* Reads that would fit now fail too, and consume nothing. */
    CHECK_EQ_INT(pk_rd_u8(&r), 0);
    CHECK_EQ_INT(pk_rd_u16(&r), 0);
    CHECK(pk_rd_borrow(&r, 0) == NULL);
    CHECK(pk_rd_borrow(&r, 1) == NULL);
    pk_rd_copy(&r, out, 2);
    CHECK(out[0] == 0 && out[1] == 0 && out[2] == 9);
    CHECK_EQ_INT(pk_rd_need(&r, 0), 0);
    CHECK_EQ_INT(r.left, 2);
    CHECK_ACCOUNT(&r, SRC, 6);
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);
}

static void test_rd_need_copy_borrow(void)
{
    pk_rd_t r;
    uint8_t out[8];
    pk_rd_init(&r, SRC, 10);
    CHECK_EQ_INT(pk_rd_need(&r, 10), 1);
    CHECK_EQ_INT(pk_rd_need(&r, 0), 1);
    CHECK_EQ_INT(r.left, 10); /* need consumes nothing */
    pk_rd_copy(&r, out, 3);
    CHECK_MEM(out, SRC, 3);
    pk_rd_copy(&r, out, 0);
    const uint8_t *b = pk_rd_borrow(&r, 4);
    CHECK(b == SRC + 3); /* borrowed, not copied */
    CHECK(pk_rd_borrow(&r, 0) == SRC + 7);
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED); /* 3 left: not exact */
    CHECK_EQ_INT(r.err, PK_OK);                     /* ... but no read failed */
    memset(out, 0xaa, sizeof out);
    pk_rd_copy(&r, out, 4); /* only 3 left */
    CHECK(out[0] == 0 && out[3] == 0 && out[4] == 0xaa);
    CHECK_EQ_INT(r.left, 3);
    CHECK_EQ_INT(pk_rd_need(&r, 1), 0);

    /* A failed need() fails the reader. */
    pk_rd_init(&r, SRC, 2);
    CHECK_EQ_INT(pk_rd_need(&r, 3), 0);
    CHECK_EQ_INT(pk_rd_u8(&r), 0);
}

static void test_rd_done_exact(void)
{
    pk_rd_t r;
    pk_rd_init(&r, SRC, 3);
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);
    (void)pk_rd_u16(&r);
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);
    (void)pk_rd_u8(&r);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);
    (void)pk_rd_u8(&r); /* reading past the end after exact consumption */
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);

    /* Empty input: done at once; NULL buffer reads as empty. */
    pk_rd_init(&r, SRC, 0);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);
    pk_rd_init(&r, NULL, 100);
    CHECK_EQ_INT(r.left, 0);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);
    CHECK_EQ_INT(pk_rd_u8(&r), 0);
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);
}

static void test_rd_overflow(void)
{
    pk_rd_t r;
    pk_rd_init(&r, SRC, 20);
    (void)pk_rd_u8(&r);
    /* Lengths whose pointer sum would wrap must fail, not pass. */
    CHECK_EQ_INT(pk_rd_need(&r, SIZE_MAX), 0);
    pk_rd_init(&r, SRC, 20);
    (void)pk_rd_u8(&r);
    CHECK(pk_rd_borrow(&r, SIZE_MAX) == NULL);
    CHECK_EQ_INT(r.left, 19);
    pk_rd_init(&r, SRC, 20);
    (void)pk_rd_u8(&r);
    CHECK(pk_rd_borrow(&r, SIZE_MAX - 18) == NULL);
    CHECK(pk_rd_borrow(&r, 20) == NULL);
    pk_rd_init(&r, SRC, 20);
    (void)pk_rd_u8(&r);
    CHECK(pk_rd_borrow(&r, (size_t)0 - (uintptr_t)SRC) == NULL);
    pk_rd_init(&r, SRC, 20);
    CHECK(pk_rd_borrow(&r, 20) == SRC);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);
}

static void test_rd_block8(void)
{
    /* len 3 {a b c}, len 0 {}, len 2 {d e} */
    static const uint8_t m[] = {3, 'a', 'b', 'c', 0, 2, 'd', 'e'};
    pk_rd_t r, s;
    pk_rd_init(&r, m, sizeof m);
    s = pk_rd_block8(&r, 3);
    CHECK_EQ_INT(s.left, 3);
    CHECK(s.p == m + 1);
    CHECK_EQ_INT(pk_rd_u8(&s), 'a');
    CHECK_EQ_INT(pk_rd_done(&s), PK_ERR_MALFORMED); /* not consumed */
    CHECK_EQ_INT(pk_rd_u16(&s), 'b' << 8 | 'c');
    CHECK_EQ_INT(pk_rd_done(&s), PK_OK);
    CHECK_EQ_INT(pk_rd_u8(&s), 0); /* cannot read past the block */
    CHECK_EQ_INT(r.err, PK_OK);    /* the sub-reader's failure stays in it */
    s = pk_rd_block8(&r, 0);
    CHECK_EQ_INT(s.left, 0);
    CHECK_EQ_INT(pk_rd_done(&s), PK_OK);
    s = pk_rd_block8(&r, 255);
    CHECK_EQ_INT(pk_rd_u16(&s), 'd' << 8 | 'e');
    CHECK_EQ_INT(pk_rd_done(&s), PK_OK);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);

    /* A length above max fails both readers. */
    pk_rd_init(&r, m, sizeof m);
    s = pk_rd_block8(&r, 2);
    CHECK_EQ_INT(r.err, PK_ERR_MALFORMED);
    CHECK_EQ_INT(s.err, PK_ERR_MALFORMED);
    CHECK_EQ_INT(s.left, 0);
    CHECK_EQ_INT(pk_rd_u8(&s), 0);
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);

    /* A length beyond the input fails both. */
    static const uint8_t t[] = {5, 'a', 'b'};
    pk_rd_init(&r, t, sizeof t);
    s = pk_rd_block8(&r, 255);
    CHECK_EQ_INT(r.err, PK_ERR_MALFORMED);
    CHECK_EQ_INT(s.err, PK_ERR_MALFORMED);
    CHECK(s.p == NULL && s.left == 0);
    CHECK_ACCOUNT(&r, t, sizeof t);

    /* No length byte at all. */
    pk_rd_init(&r, t, 0);
    s = pk_rd_block8(&r, 255);
    CHECK_EQ_INT(s.err, PK_ERR_MALFORMED);

    /* A failed outer reader yields a failed block. */
    pk_rd_init(&r, m, sizeof m);
    (void)pk_rd_u64(&r);
    (void)pk_rd_u8(&r);
    s = pk_rd_block8(&r, 255);
    CHECK_EQ_INT(s.err, PK_ERR_MALFORMED);
}

static void test_rd_block16(void)
{
    static uint8_t m[2 + 300 + 2];
    pk_rd_t r, s;
    pk_put_u16(m, 300);
    for (int i = 0; i < 300; i++)
        m[2 + i] = (uint8_t)i;
    pk_put_u16(m + 302, 0);
    pk_rd_init(&r, m, sizeof m);
    s = pk_rd_block16(&r, 300);
    CHECK_EQ_INT(s.left, 300);
    CHECK(pk_rd_borrow(&s, 300) == m + 2);
    CHECK_EQ_INT(pk_rd_done(&s), PK_OK);
    s = pk_rd_block16(&r, 0);
    CHECK_EQ_INT(pk_rd_done(&s), PK_OK);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);

    pk_rd_init(&r, m, sizeof m);
    s = pk_rd_block16(&r, 299);
    CHECK_EQ_INT(r.err, PK_ERR_MALFORMED);
    CHECK_EQ_INT(s.err, PK_ERR_MALFORMED);
    CHECK_EQ_INT(s.left, 0);

    /* 0xffff claimed, 300 present. */
    pk_put_u16(m, 0xffff);
    pk_rd_init(&r, m, sizeof m);
    s = pk_rd_block16(&r, SIZE_MAX);
    CHECK_EQ_INT(s.err, PK_ERR_MALFORMED);
    CHECK_EQ_INT(pk_rd_done(&r), PK_ERR_MALFORMED);
    /* One length byte only. */
    pk_rd_init(&r, m, 1);
    s = pk_rd_block16(&r, SIZE_MAX);
    CHECK_EQ_INT(s.err, PK_ERR_MALFORMED);
    CHECK_EQ_INT(r.left, 1);
}

static void test_wr_ints(void)
{
    uint8_t buf[16];
    pk_wr_t w;
    memset(buf, 0xee, sizeof buf);
    pk_wr_init(&w, buf, 15);
    pk_wr_u8(&w, 0x01);
    pk_wr_u16(&w, 0x0203);
    pk_wr_u32(&w, 0x04050607);
    pk_wr_u64(&w, 0x08090a0b0c0d0e0fULL);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
    CHECK_EQ_INT(w.len, 15);
    CHECK_MEM(buf, SRC, 15);
    CHECK_EQ_INT(buf[15], 0xee);

    /* The writer's output reads back with the reader. */
    pk_rd_t r;
    pk_rd_init(&r, buf, w.len);
    CHECK_EQ_INT(pk_rd_u8(&r), 0x01);
    CHECK_EQ_INT(pk_rd_u16(&r), 0x0203);
    CHECK(pk_rd_u32(&r) == 0x04050607u);
    CHECK(pk_rd_u64(&r) == 0x08090a0b0c0d0e0fULL);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);
}

static void test_wr_capacity(void)
{
    uint8_t buf[8];
    pk_wr_t w;
    /* Each write on one byte too few: refused, nothing written. */
    static const size_t width[] = {1, 2, 4, 8};
    for (size_t i = 0; i < 4; i++) {
        memset(buf, 0xee, sizeof buf);
        pk_wr_init(&w, buf, width[i] - 1);
        switch (width[i]) {
        case 1: pk_wr_u8(&w, 0x11); break;
        case 2: pk_wr_u16(&w, 0x1111); break;
        case 4: pk_wr_u32(&w, 0x11111111); break;
        case 8: pk_wr_u64(&w, 0x1111111111111111ULL); break;
        }
        CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
        CHECK_EQ_INT(w.len, 0);
        CHECK_EQ_INT(buf[0], 0xee);
    }

    /* Sticky: after a refusal, writes that would fit are refused too. */
    memset(buf, 0xee, sizeof buf);
    pk_wr_init(&w, buf, 3);
    pk_wr_u16(&w, 0x1234);
    pk_wr_u16(&w, 0x5678);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
    CHECK_EQ_INT(w.len, 2);
    pk_wr_u8(&w, 0x9a);
    CHECK_EQ_INT(w.len, 2);
    CHECK(pk_wr_reserve(&w, 0) == NULL);
    CHECK_EQ_INT(buf[2], 0xee);
    CHECK_EQ_INT(buf[0], 0x12);

    /* Exactly full is fine; one more is not. */
    pk_wr_init(&w, buf, 8);
    pk_wr_bytes(&w, SRC, 8);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
    pk_wr_bytes(&w, SRC, 0);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
    pk_wr_u8(&w, 0);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
    CHECK_EQ_INT(w.len, 8);
    CHECK_MEM(buf, SRC, 8);

    /* NULL buffer: capacity 0. */
    pk_wr_init(&w, NULL, 100);
    CHECK_EQ_INT(w.cap, 0);
    pk_wr_u8(&w, 1);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
}

static void test_wr_reserve_overflow(void)
{
    uint8_t buf[16];
    pk_wr_t w;
    pk_wr_init(&w, buf, sizeof buf);
    uint8_t *d = pk_wr_reserve(&w, 5);
    CHECK(d == buf);
    CHECK(pk_wr_reserve(&w, 0) == buf + 5);
    /* len + n would wrap to a small number: refused. */
    CHECK(pk_wr_reserve(&w, SIZE_MAX - 4) == NULL);
    CHECK_EQ_INT(w.len, 5);
    pk_wr_init(&w, buf, sizeof buf);
    (void)pk_wr_reserve(&w, 5);
    CHECK(pk_wr_reserve(&w, SIZE_MAX) == NULL);
    pk_wr_init(&w, buf, sizeof buf);
    (void)pk_wr_reserve(&w, 5);
    CHECK(pk_wr_reserve(&w, 12) == NULL);
    pk_wr_init(&w, buf, sizeof buf);
    (void)pk_wr_reserve(&w, 5);
    CHECK(pk_wr_reserve(&w, 11) == buf + 5);
    CHECK_EQ_INT(w.len, 16);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
}

static void test_wr_blocks(void)
{
    static uint8_t big[70000];
    static uint8_t buf[70010];
    pk_wr_t w;
    pk_rd_t r, s;

    pk_wr_init(&w, buf, sizeof buf);
    pk_wr_block8(&w, "abc", 3);
    pk_wr_block8(&w, NULL, 0);
    pk_wr_block16(&w, "de", 2);
    pk_wr_block16(&w, big, 0xffff);
    pk_wr_block8(&w, big, 0xff);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
    CHECK_EQ_INT(w.len, 4 + 1 + 4 + 2 + 0xffff + 1 + 0xff);
    static const uint8_t head[] = {3, 'a', 'b', 'c', 0, 0, 2, 'd', 'e', 0xff, 0xff};
    CHECK_MEM(buf, head, sizeof head);

    pk_rd_init(&r, buf, w.len);
    s = pk_rd_block8(&r, 3);
    CHECK_EQ_INT(s.left, 3);
    s = pk_rd_block8(&r, 0);
    CHECK_EQ_INT(s.left, 0);
    s = pk_rd_block16(&r, 2);
    CHECK_EQ_INT(s.left, 2);
    s = pk_rd_block16(&r, 0xffff);
    CHECK_EQ_INT(s.left, 0xffff);
    s = pk_rd_block8(&r, 0xff);
    CHECK_EQ_INT(s.left, 0xff);
    CHECK_EQ_INT(pk_rd_done(&r), PK_OK);

    /* Lengths that do not fit the prefix are refused, nothing written. */
    pk_wr_init(&w, buf, sizeof buf);
    pk_wr_block8(&w, big, 0x100);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
    CHECK_EQ_INT(w.len, 0);
    pk_wr_init(&w, buf, sizeof buf);
    pk_wr_block16(&w, big, 0x10000);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
    CHECK_EQ_INT(w.len, 0);
    pk_wr_init(&w, buf, sizeof buf);
    pk_wr_block16(&w, big, SIZE_MAX);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
    /* Prefix fits but the body does not: all or nothing, like every write. */
    memset(buf, 0xee, 8);
    pk_wr_init(&w, buf, 4);
    pk_wr_block8(&w, "abcd", 4);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
    CHECK_EQ_INT(w.len, 0);
    CHECK_EQ_INT(buf[0], 0xee);
    pk_wr_init(&w, buf, 5);
    pk_wr_block16(&w, "abcd", 4);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_ERR_SPACE);
    CHECK_EQ_INT(w.len, 0);
    pk_wr_init(&w, buf, 6);
    pk_wr_block16(&w, "abcd", 4);
    CHECK_EQ_INT(pk_wr_ok(&w), PK_OK);
    CHECK_EQ_INT(w.len, 6);
}

static void test_put_get(void)
{
    uint8_t b[8];
    pk_put_u16(b, 0xa1b2);
    CHECK(b[0] == 0xa1 && b[1] == 0xb2);
    CHECK_EQ_INT(pk_get_u16(b), 0xa1b2);
    pk_put_u32(b, 0xa1b2c3d4);
    CHECK(b[0] == 0xa1 && b[3] == 0xd4);
    CHECK(pk_get_u32(b) == 0xa1b2c3d4u);
    pk_put_u64(b, 0xa1b2c3d4e5f60718ULL);
    CHECK(b[0] == 0xa1 && b[7] == 0x18);
    CHECK(pk_get_u64(b) == 0xa1b2c3d4e5f60718ULL);
    CHECK(pk_get_u64(SRC) == 0x0102030405060708ULL);
}

int main(void)
{
    RUN(test_rd_ints);
    RUN(test_rd_short);
    RUN(test_rd_sticky);
    RUN(test_rd_need_copy_borrow);
    RUN(test_rd_done_exact);
    RUN(test_rd_overflow);
    RUN(test_rd_block8);
    RUN(test_rd_block16);
    RUN(test_wr_ints);
    RUN(test_wr_capacity);
    RUN(test_wr_reserve_overflow);
    RUN(test_wr_blocks);
    RUN(test_put_get);
    return check_report();
}
