/*
 * Secrets at rest: the sealed format (checked against an independent build
 * from the documented layout), row binding, tampering, truncation, and the
 * KEK file's permission rules.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/crypto.h"
#include "store/wrap.h"

static uint8_t kek[PK_WRAP_KEK_LEN];
static char dir[256];

/* A deterministic "rng": bytes 0xa0, 0xa1, ... */
static int fixed_fill(void *ctx, uint8_t *buf, size_t n)
{
    uint8_t *next = ctx;
    for (size_t i = 0; i < n; i++)
        buf[i] = (*next)++;
    return PK_OK;
}

static int failing_fill(void *ctx, uint8_t *buf, size_t n)
{
    (void)ctx;
    (void)buf;
    (void)n;
    return PK_ERR_CRYPTO;
}

#define K(s) (const uint8_t *)(s), (sizeof(s) - 1)

static void test_format_known_answer(void)
{
    static const uint8_t secret[] = "root key material, 32 bytes long";
    uint8_t ctr = 0xa0;
    pk_rng_t rng = {fixed_fill, &ctr};
    uint8_t blob[64 + PK_WRAP_OVERHEAD];
    size_t bl = 0;
    CHECK_EQ_INT(pk_wrap_seal(kek, &rng, "kms.root",
                              K("\x00\x01"
                                "dev-7"),
                              secret, 32, blob, sizeof(blob), &bl),
                 PK_OK);
    CHECK_EQ_INT(bl, 32 + PK_WRAP_OVERHEAD);

    /* the same thing built by hand from the layout in wrap.h */
    uint8_t nonce[12], aad[64], expect[32 + PK_WRAP_OVERHEAD];
    for (int i = 0; i < 12; i++)
        nonce[i] = (uint8_t)(0xa0 + i);
    size_t al = 0;
    memcpy(aad, "proxkey-wrap", 12);
    al = 12;
    aad[al++] = 1;
    aad[al++] = 8;
    memcpy(aad + al, "kms.root", 8);
    al += 8;
    aad[al++] = 7;
    memcpy(aad + al,
           "\x00\x01"
           "dev-7",
           7);
    al += 7;
    pk_aead_t a = {0};
    CHECK_EQ_INT(pk_aead_init(&a, kek, 32), PK_OK);
    expect[0] = 1;
    memcpy(expect + 1, nonce, 12);
    CHECK_EQ_INT(pk_aead_seal(&a, nonce, aad, al, secret, 32, expect + 13, expect + 13 + 32),
                 PK_OK);
    pk_aead_clear(&a);
    CHECK_MEM(blob, expect, sizeof(expect));

    uint8_t out[64];
    size_t ol = 0;
    CHECK_EQ_INT(pk_wrap_open(kek, "kms.root",
                              K("\x00\x01"
                                "dev-7"),
                              blob, bl, out, sizeof(out), &ol),
                 PK_OK);
    CHECK_EQ_INT(ol, 32);
    CHECK_MEM(out, secret, 32);
}

static void test_round_trip_ctx(void)
{
    pk_wrap_ctx_t w = {0};
    uint8_t secret[100], blob[200], out[100];
    size_t bl, ol;
    for (size_t i = 0; i < sizeof(secret); i++)
        secret[i] = (uint8_t)(i * 31);
    CHECK_EQ_INT(pk_wrap_ctx_init(&w, kek), PK_OK);
    for (size_t len = 0; len <= sizeof(secret); len += 25) {
        CHECK_EQ_INT(pk_wrap_ctx_seal(&w, NULL, "b", K("k"), secret, len, blob, sizeof(blob), &bl),
                     PK_OK);
        CHECK_EQ_INT(bl, len + PK_WRAP_OVERHEAD);
        CHECK_EQ_INT(blob[0], PK_WRAP_VERSION);
        memset(out, 0xee, sizeof(out));
        CHECK_EQ_INT(pk_wrap_ctx_open(&w, "b", K("k"), blob, bl, out, sizeof(out), &ol), PK_OK);
        CHECK_EQ_INT(ol, len);
        CHECK_MEM(out, secret, len);
    }
    /* random nonces: two seals of one secret differ */
    uint8_t b2[200];
    size_t bl2;
    CHECK_EQ_INT(pk_wrap_ctx_seal(&w, NULL, "b", K("k"), secret, 16, blob, sizeof(blob), &bl),
                 PK_OK);
    CHECK_EQ_INT(pk_wrap_ctx_seal(&w, NULL, "b", K("k"), secret, 16, b2, sizeof(b2), &bl2), PK_OK);
    CHECK(memcmp(blob + 1, b2 + 1, 12) != 0);
    CHECK(memcmp(blob, b2, bl) != 0);
    pk_wrap_ctx_clear(&w);
    pk_wrap_ctx_clear(&w); /* twice is fine */
}

static void test_wrong_row_and_kek(void)
{
    uint8_t secret[32], blob[64], out[32];
    size_t bl, ol;
    memset(secret, 0x5c, sizeof(secret));
    CHECK_EQ_INT(pk_wrap_seal(kek, NULL, "ab", K("c"), secret, 32, blob, sizeof(blob), &bl), PK_OK);
    /* wrong bucket, wrong key, and the same bytes split differently */
    memset(out, 0xee, sizeof(out));
    CHECK_EQ_INT(pk_wrap_open(kek, "ac", K("c"), blob, bl, out, sizeof(out), &ol), PK_ERR_AUTH);
    uint8_t zero[32] = {0};
    CHECK_MEM(out, zero, 32); /* no plaintext left behind */
    CHECK_EQ_INT(pk_wrap_open(kek, "ab", K("d"), blob, bl, out, sizeof(out), &ol), PK_ERR_AUTH);
    CHECK_EQ_INT(pk_wrap_open(kek, "a", K("bc"), blob, bl, out, sizeof(out), &ol), PK_ERR_AUTH);
    CHECK_EQ_INT(pk_wrap_open(kek, "ab", K("c\x00"), blob, bl, out, sizeof(out), &ol), PK_ERR_AUTH);
    uint8_t kek2[32];
    memcpy(kek2, kek, 32);
    kek2[31] ^= 1;
    CHECK_EQ_INT(pk_wrap_open(kek2, "ab", K("c"), blob, bl, out, sizeof(out), &ol), PK_ERR_AUTH);
    CHECK_EQ_INT(pk_wrap_open(kek, "ab", K("c"), blob, bl, out, sizeof(out), &ol), PK_OK);
    CHECK_MEM(out, secret, 32);
}

static void test_tamper_and_truncate(void)
{
    uint8_t secret[20], blob[64], out[32];
    size_t bl, ol;
    memset(secret, 0x33, sizeof(secret));
    CHECK_EQ_INT(pk_wrap_seal(kek, NULL, "kv", K("row"), secret, 20, blob, sizeof(blob), &bl),
                 PK_OK);
    int bad = 0;
    for (size_t i = 0; i < bl; i++) {
        for (int bit = 0; bit < 8; bit++) {
            blob[i] ^= (uint8_t)(1u << bit);
            int rc = pk_wrap_open(kek, "kv", K("row"), blob, bl, out, sizeof(out), &ol);
            int want = i == 0 ? PK_ERR_VERSION : PK_ERR_AUTH;
            bad += rc != want;
            blob[i] ^= (uint8_t)(1u << bit);
        }
    }
    CHECK_EQ_INT(bad, 0);
    for (size_t n = 0; n < bl; n++) {
        int rc = pk_wrap_open(kek, "kv", K("row"), blob, n, out, sizeof(out), &ol);
        CHECK_EQ_INT(rc, n < PK_WRAP_OVERHEAD ? PK_ERR_MALFORMED : PK_ERR_AUTH);
    }
    /* appended byte */
    blob[bl] = 0;
    CHECK_EQ_INT(pk_wrap_open(kek, "kv", K("row"), blob, bl + 1, out, sizeof(out), &ol),
                 PK_ERR_AUTH);
    CHECK_EQ_INT(pk_wrap_open(kek, "kv", K("row"), blob, bl, out, sizeof(out), &ol), PK_OK);
}

static void test_args_and_space(void)
{
    uint8_t secret[8] = {1, 2, 3, 4, 5, 6, 7, 8}, blob[64], out[8];
    size_t bl = 0, ol = 0;
    CHECK_EQ_INT(pk_wrap_seal(kek, NULL, "b", K("k"), secret, 8, blob, 8 + 28, &bl), PK_ERR_SPACE);
    CHECK_EQ_INT(bl, 8 + PK_WRAP_OVERHEAD);
    CHECK_EQ_INT(pk_wrap_seal(kek, NULL, "", K("k"), secret, 8, blob, sizeof(blob), &bl),
                 PK_ERR_INVAL);
    CHECK_EQ_INT(pk_wrap_seal(kek, NULL, "b", NULL, 0, secret, 8, blob, sizeof(blob), &bl),
                 PK_ERR_INVAL);
    CHECK_EQ_INT(pk_wrap_seal(kek, NULL,
                              "0123456789012345678901234567890123456789012345678901234567890123",
                              K("k"), secret, 8, blob, sizeof(blob), &bl),
                 PK_ERR_INVAL);
    pk_rng_t broken = {failing_fill, NULL};
    CHECK_EQ_INT(pk_wrap_seal(kek, &broken, "b", K("k"), secret, 8, blob, sizeof(blob), &bl),
                 PK_ERR_CRYPTO);
    CHECK_EQ_INT(pk_wrap_seal(kek, NULL, "b", K("k"), secret, 8, blob, sizeof(blob), &bl), PK_OK);
    CHECK_EQ_INT(pk_wrap_open(kek, "b", K("k"), blob, bl, out, 7, &ol), PK_ERR_SPACE);
    CHECK_EQ_INT(ol, 8);
    blob[0] = 2;
    CHECK_EQ_INT(pk_wrap_open(kek, "b", K("k"), blob, bl, out, 8, &ol), PK_ERR_VERSION);
}

/* ---- the KEK file ---- */

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || write(fd, data, n) != (ssize_t)n || fchmod(fd, mode) != 0)
        abort();
    close(fd);
}

static void test_kek_generate_and_load(void)
{
    char p[512], why[128];
    uint8_t k[32], k2[32];
    struct stat st;
    path_in(p, sizeof(p), "kek");
    umask(022); /* generate must not depend on the umask */
    CHECK_EQ_INT(pk_kek_generate(p), PK_OK);
    CHECK_EQ_INT(stat(p, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0600);
    CHECK_EQ_INT(st.st_size, 65);
    CHECK_EQ_INT(pk_kek_generate(p), PK_ERR_EXISTS); /* never overwrites */
    CHECK_EQ_INT(pk_kek_load(p, k, why, sizeof(why)), PK_OK);
    /* the file holds the key in hex */
    char text[66] = {0};
    FILE *f = fopen(p, "r");
    CHECK(f && fread(text, 1, 65, f) == 65);
    if (f)
        fclose(f);
    CHECK(text[64] == '\n');
    text[64] = 0;
    check_unhex(text, k2, 32);
    CHECK_MEM(k, k2, 32);
    /* a second generated key differs */
    char p2[512];
    path_in(p2, sizeof(p2), "kek2");
    CHECK_EQ_INT(pk_kek_generate(p2), PK_OK);
    CHECK_EQ_INT(pk_kek_load(p2, k2, NULL, 0), PK_OK);
    CHECK(memcmp(k, k2, 32) != 0);
    /* mode 0400 is fine */
    CHECK_EQ_INT(chmod(p, 0400), 0);
    CHECK_EQ_INT(pk_kek_load(p, k2, NULL, 0), PK_OK);
    CHECK_MEM(k, k2, 32);
}

static void test_kek_refused_modes(void)
{
    char p[512], why[128];
    uint8_t k[32];
    path_in(p, sizeof(p), "kek-open");
    static const mode_t modes[] = {0644, 0640, 0604, 0660, 0606, 0700 | 0004, 0620};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        write_file(p, kek, 32, modes[i]);
        memset(k, 0x77, sizeof(k));
        why[0] = 0;
        CHECK_EQ_INT(pk_kek_load(p, k, why, sizeof(why)), PK_ERR_DENIED);
        uint8_t zero[32] = {0};
        CHECK_MEM(k, zero, 32);
        CHECK(strstr(why, "group/other") != NULL);
    }
    write_file(p, kek, 32, 0644);
    CHECK_EQ_INT(pk_kek_load(p, k, why, sizeof(why)), PK_ERR_DENIED);
    CHECK(strstr(why, "0644") != NULL);
    fprintf(stderr, "     (refusal reads: %s)\n", why);
    /* the same file, fixed */
    CHECK_EQ_INT(chmod(p, 0600), 0);
    CHECK_EQ_INT(pk_kek_load(p, k, why, sizeof(why)), PK_OK);
    CHECK_MEM(k, kek, 32); /* 32 raw bytes */
}

static void test_kek_contents(void)
{
    char p[512], l[512], why[128];
    uint8_t k[32], expect[32];
    path_in(p, sizeof(p), "kek-c");
    static const char hex[] = "000102030405060708090A0B0C0D0E0Ff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    check_unhex("000102030405060708090a0b0c0d0e0ff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", expect, 32);
    write_file(p, hex, 64, 0600); /* no newline, mixed case */
    CHECK_EQ_INT(pk_kek_load(p, k, NULL, 0), PK_OK);
    CHECK_MEM(k, expect, 32);
    char bad[66];
    memcpy(bad, hex, 64);
    bad[64] = '\n';
    const char *nonhex = "gG/:@`\x00 ";
    for (size_t i = 0; i < 8; i++) {
        memcpy(bad, hex, 64);
        bad[(i * 9) % 64] = nonhex[i];
        write_file(p, bad, 65, 0600);
        CHECK_EQ_INT(pk_kek_load(p, k, why, sizeof(why)), PK_ERR_MALFORMED);
    }
    write_file(p, hex, 63, 0600);
    CHECK_EQ_INT(pk_kek_load(p, k, NULL, 0), PK_ERR_MALFORMED);
    write_file(p, kek, 31, 0600);
    CHECK_EQ_INT(pk_kek_load(p, k, NULL, 0), PK_ERR_MALFORMED);
    memcpy(bad, hex, 64);
    bad[64] = ' ';
    write_file(p, bad, 65, 0600);
    CHECK_EQ_INT(pk_kek_load(p, k, NULL, 0), PK_ERR_MALFORMED);
    write_file(p, "", 0, 0600);
    CHECK_EQ_INT(pk_kek_load(p, k, NULL, 0), PK_ERR_MALFORMED);
    /* not a regular file, a symlink, missing */
    CHECK_EQ_INT(pk_kek_load(dir, k, why, sizeof(why)), PK_ERR_IO);
    write_file(p, hex, 64, 0600);
    path_in(l, sizeof(l), "kek-link");
    CHECK_EQ_INT(symlink(p, l), 0);
    CHECK_EQ_INT(pk_kek_load(l, k, why, sizeof(why)), PK_ERR_IO);
    CHECK(strstr(why, "symbolic link") != NULL);
    path_in(l, sizeof(l), "missing");
    CHECK_EQ_INT(pk_kek_load(l, k, why, sizeof(why)), PK_ERR_IO);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/pkwrap.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL || pk_crypto_init() != PK_OK)
        return 2;
    check_unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", kek, 32);
    RUN(test_format_known_answer);
    RUN(test_round_trip_ctx);
    RUN(test_wrong_row_and_kek);
    RUN(test_tamper_and_truncate);
    RUN(test_args_and_space);
    RUN(test_kek_generate_and_load);
    RUN(test_kek_refused_modes);
    RUN(test_kek_contents);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return check_report();
}
