/*
 * The receive-window file of `proxkey device mk run` (DIR/mk-rx,
 * src/device/device_mk.h): pk_dmk_rx_parse and pk_dmk_rx_encode on
 * hand-made images. A file that round-trips; every truncation, a byte too
 * many, a wrong magic, another version, an empty or too long client ID, too
 * many windows, a key ID 0, a key twice and an impossible window are refused
 * with the file wiped; the encoder refuses what the parser would.
 */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "core/codec.h"
#include "device_mk.h"

static dmk_rx_file_t f, g;
static uint8_t img[PK_DMK_RX_MAX + 16];
static size_t img_len;

/* Client "c2" with three windows: tops 5, 1100 and 0 (none accepted yet);
 * the second and third share a key ID (two keys, told apart by created_ms). */
static void sample(void)
{
    memset(&f, 0, sizeof f);
    memcpy(f.id, "c2", 2);
    f.id_len = 2;
    f.n = 3;
    f.e[0].key_id = 0x11112222;
    f.e[0].created_ms = 1700000000000ull;
    pk_put_u64(f.e[0].w, 5);
    pk_put_u64(f.e[0].w + 8, 1u << 5 | 1u << 3); /* counters 3 and 5 */
    f.e[1].key_id = 0x33334444;
    f.e[1].created_ms = 1700000001000ull;
    pk_put_u64(f.e[1].w, 1100);
    pk_put_u64(f.e[1].w + 8 + 8 * (1100 / 64 % 16), 1ull << (1100 % 64));
    f.e[2].key_id = 0x33334444;
    f.e[2].created_ms = 1700000002000ull;
    CHECK_EQ_INT(pk_dmk_rx_encode(&f, img, sizeof img, &img_len), PK_OK);
}

static int parse(const uint8_t *b, size_t n)
{
    static const dmk_rx_file_t zero;
    memset(&g, 0x5a, sizeof g);
    int rc = pk_dmk_rx_parse(b, n, &g);
    if (rc != PK_OK)
        CHECK_MEM(&g, &zero, sizeof g); /* wiped on failure */
    return rc;
}

static void test_roundtrip(void)
{
    uint8_t again[PK_DMK_RX_MAX];
    size_t n = 0;
    sample();
    CHECK_EQ_INT(img_len, 4 + 1 + 1 + 2 + 1 + 3 * PK_DMK_RX_ENTRY_LEN);
    CHECK_MEM(img,
              "PKMR\x01\x02"
              "c2\x03",
              9);
    CHECK_EQ_INT(parse(img, img_len), PK_OK);
    CHECK(g.n == 3 && g.id_len == 2 && memcmp(g.id, "c2", 2) == 0);
    CHECK_MEM(g.e, f.e, 3 * sizeof f.e[0]);
    CHECK_EQ_INT(pk_dmk_rx_encode(&g, again, sizeof again, &n), PK_OK);
    CHECK(n == img_len && memcmp(again, img, n) == 0);
    /* no window at all is a file too */
    f.n = 0;
    CHECK_EQ_INT(pk_dmk_rx_encode(&f, img, sizeof img, &img_len), PK_OK);
    CHECK_EQ_INT(img_len, 9);
    CHECK_EQ_INT(parse(img, img_len), PK_OK);
    CHECK(g.n == 0 && g.id_len == 2);
}

static void test_refused(void)
{
    sample();
    for (size_t n = 0; n < img_len; n++)
        CHECK_EQ_INT(parse(img, n), PK_ERR_MALFORMED);
    CHECK_EQ_INT(parse(img, img_len + 1), PK_ERR_MALFORMED); /* img[img_len] is 0 */
    struct {
        size_t off;
        uint8_t v;
        int want;
    } bad[] = {
        {0, 'X', PK_ERR_MALFORMED}, /* magic */
        {4, 0, PK_ERR_VERSION},     /* version 0 */
        {4, 2, PK_ERR_VERSION},     /* version 2 */
        {5, 0, PK_ERR_MALFORMED},   /* empty client ID */
        {5, 65, PK_ERR_MALFORMED},  /* longer than PK_MK_ID_MAX (and the file) */
        {8, 2, PK_ERR_MALFORMED},   /* n = 2: a window left over */
        {8, 4, PK_ERR_MALFORMED},   /* n = 4: one missing */
        {8, PK_DMK_RX_CAP + 1, PK_ERR_MALFORMED},
        {9 + 20 + 7, 0x21, PK_ERR_MALFORMED}, /* first window: counter 0 seen */
        {9 + 20 + 7, 0x60, PK_ERR_MALFORMED}, /* first window: counter 6 > top 5 */
        {9 + 12 + 7, 0, PK_ERR_MALFORMED},    /* first window: top 0 with counters seen */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t save = img[bad[i].off];
        img[bad[i].off] = bad[i].v;
        int rc = parse(img, img_len);
        if (rc != bad[i].want)
            fprintf(stderr, "case %zu: offset %zu = 0x%02x: %d\n", i, bad[i].off, bad[i].v, rc);
        CHECK_EQ_INT(rc, bad[i].want);
        img[bad[i].off] = save;
    }
    CHECK_EQ_INT(parse(img, img_len), PK_OK);
    /* key ID 0 */
    memset(img + 9, 0, 4);
    CHECK_EQ_INT(parse(img, img_len), PK_ERR_MALFORMED);
    /* the same key twice: the third window's created_ms as the second's
     * (same key ID); the first's key ID and created_ms on the second */
    sample();
    memcpy(img + 9 + 2 * 148 + 4, img + 9 + 148 + 4, 8);
    CHECK_EQ_INT(parse(img, img_len), PK_ERR_MALFORMED);
    sample();
    memcpy(img + 9 + 148, img + 9, 12);
    CHECK_EQ_INT(parse(img, img_len), PK_ERR_MALFORMED);
    /* an empty client ID with nothing after it to misread */
    CHECK_EQ_INT(parse((const uint8_t *)"PKMR\x01\x00\x00", 7), PK_ERR_MALFORMED);
    /* PK_DMK_RX_CAP + 1 well-formed windows: one too many for the table */
    static uint8_t big[9 + (PK_DMK_RX_CAP + 1) * PK_DMK_RX_ENTRY_LEN];
    memset(big, 0, sizeof big);
    memcpy(big,
           "PKMR\x01\x02"
           "c2",
           8);
    big[8] = PK_DMK_RX_CAP + 1;
    for (size_t i = 0; i <= PK_DMK_RX_CAP; i++)
        pk_put_u32(big + 9 + i * PK_DMK_RX_ENTRY_LEN, 1 + (uint32_t)i);
    CHECK_EQ_INT(parse(big, sizeof big), PK_ERR_MALFORMED);
    big[8] = PK_DMK_RX_CAP; /* with the last one cut off, it is a file */
    CHECK_EQ_INT(parse(big, sizeof big - PK_DMK_RX_ENTRY_LEN), PK_OK);
    /* top 2^64-1 is never accepted */
    sample();
    memset(img + 9 + 2 * 148 + 12, 0xff, 8);
    CHECK_EQ_INT(parse(img, img_len), PK_ERR_MALFORMED);
}

static void test_encode_limits(void)
{
    size_t n = 99;
    sample();
    CHECK_EQ_INT(pk_dmk_rx_encode(&f, img, img_len - 1, &n), PK_ERR_SPACE);
    CHECK_EQ_INT(n, 0);
    f.id_len = 0;
    CHECK_EQ_INT(pk_dmk_rx_encode(&f, img, sizeof img, &n), PK_ERR_INVAL);
    f.id_len = PK_MK_ID_MAX + 1;
    CHECK_EQ_INT(pk_dmk_rx_encode(&f, img, sizeof img, &n), PK_ERR_INVAL);
    f.id_len = 2;
    f.n = PK_DMK_RX_CAP + 1;
    CHECK_EQ_INT(pk_dmk_rx_encode(&f, img, sizeof img, &n), PK_ERR_INVAL);
    /* the largest file fits PK_DMK_RX_MAX exactly */
    memset(&f, 0, sizeof f);
    memset(f.id, 'z', PK_MK_ID_MAX);
    f.id_len = PK_MK_ID_MAX;
    f.n = PK_DMK_RX_CAP;
    for (size_t i = 0; i < f.n; i++)
        f.e[i].key_id = 1 + (uint32_t)i;
    CHECK_EQ_INT(pk_dmk_rx_encode(&f, img, sizeof img, &n), PK_OK);
    CHECK_EQ_INT(n, PK_DMK_RX_MAX);
    CHECK_EQ_INT(parse(img, n), PK_OK);
}

int main(void)
{
    RUN(test_roundtrip);
    RUN(test_refused);
    RUN(test_encode_limits);
    return check_report();
}
