/*
 * The core self-checks behind `proxkey demo selftest`: each primitive run
 * against a known answer or a property, with one printed line per check.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/crypto.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"

static int failures;

static void report(int verbose, int ok, const char *what)
{
    if (!ok)
        failures++;
    if (verbose || !ok)
        printf("  [%s] %s\n", ok ? " ok " : "FAIL", what);
}

static void unhex(const char *h, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void check_hmac(int v)
{
    uint8_t mac[32], want[32];
    unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", want, 32);
    int ok = pk_hmac_sha256((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28, mac) ==
                 PK_OK &&
             memcmp(mac, want, 32) == 0;
    report(v, ok, "HMAC-SHA-256 matches RFC 4231 test case 2");
}

static void check_kdf(int v)
{
    uint8_t key[32], n1[16], n2[16], out[32], want[32];
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)i;
    memset(n1, 1, sizeof n1);
    memset(n2, 2, sizeof n2);
    /* Made independently with Python's hmac module (see tests/vectors/). */
    unhex("49b435bcb603377f5b2b899541a34b63a38c60bcd78d276da12db23579081fc4", want, 32);
    pk_kdf_param_t p[2] = {{n1, 16}, {n2, 16}};
    int ok = pk_kdf(key, 32, PK_FC_KD_SESS, p, 2, out) == PK_OK && memcmp(out, want, 32) == 0;
    report(v, ok, "TS 33.220 KDF: K_D-sess (FC 0x7F, TS 33.536) matches an independent vector");
    size_t n = 0;
    const pk_kdf_entry_t *reg = pk_kdf_registry(&n);
    report(v, reg && n >= 10, "KDF registry lists every derivation");
}

static void check_aead(int v)
{
    pk_aead_t a = {0};
    uint8_t key[16] = {7}, nonce[12] = {1}, msg[64], ct[64], tag[16], pt[64];
    memset(msg, 0x5a, sizeof msg);
    int ok = pk_aead_init(&a, key, 16) == PK_OK &&
             pk_aead_seal(&a, nonce, (const uint8_t *)"ad", 2, msg, 64, ct, tag) == PK_OK &&
             pk_aead_open(&a, nonce, (const uint8_t *)"ad", 2, ct, 64, tag, pt) == PK_OK &&
             memcmp(pt, msg, 64) == 0;
    report(v, ok, "AES-128-GCM seal/open round trip");
    ct[3] ^= 1;
    ok = pk_aead_open(&a, nonce, (const uint8_t *)"ad", 2, ct, 64, tag, pt) == PK_ERR_AUTH;
    report(v, ok, "AES-128-GCM rejects a flipped ciphertext bit");
    pk_aead_clear(&a);
}

static void check_sign(int v)
{
    uint8_t sk[32], pk[32], sig[64];
    int ok = pk_ed25519_keygen(&pk_rng_system, sk, pk) == PK_OK &&
             pk_ed25519_sign(sk, "hello", 5, sig) == PK_OK &&
             pk_ed25519_verify(pk, "hello", 5, sig) == PK_OK &&
             pk_ed25519_verify(pk, "hellO", 5, sig) == PK_ERR_AUTH;
    report(v, ok, "Ed25519 sign, verify, reject a changed message");
    pk_wipe(sk, sizeof sk);

    uint8_t a[32], ap[32], b[32], bp[32], s1[32], s2[32];
    ok = pk_x25519_keygen(&pk_rng_system, a, ap) == PK_OK &&
         pk_x25519_keygen(&pk_rng_system, b, bp) == PK_OK && pk_x25519(a, bp, s1) == PK_OK &&
         pk_x25519(b, ap, s2) == PK_OK && memcmp(s1, s2, 32) == 0;
    report(v, ok, "X25519 both sides agree");
    pk_wipe(a, 32);
    pk_wipe(b, 32);
    pk_wipe(s1, 32);
    pk_wipe(s2, 32);
}

int pk_selftest_run(int verbose)
{
    failures = 0;
    check_hmac(verbose);
    check_kdf(verbose);
    check_aead(verbose);
    check_sign(verbose);
    if (verbose)
        printf("  self-checks: %s\n", failures ? "FAILED" : "all passed");
    return failures ? -1 : 0;
}
