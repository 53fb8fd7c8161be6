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
#include "core/record.h"
#include "store/store.h"

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

static void check_record(int v)
{
    pk_record_t a = {0}, b = {0};
    uint8_t k1[16] = {1}, k2[16] = {2}, s1[4] = {3}, s2[4] = {4};
    uint8_t rec[128], rec2[128], pt[128], type = 0;
    size_t n = 0, n2 = 0, ptlen = 0;
    int ok =
        pk_record_init(&a, 7, 0, k1, s1, k2, s2) == PK_OK &&
        pk_record_init(&b, 7, 0, k2, s2, k1, s1) == PK_OK &&
        pk_record_seal(&a, 0x20, (const uint8_t *)"hello peer", 10, rec, sizeof rec, &n) == PK_OK &&
        pk_record_seal(&a, 0x20, (const uint8_t *)"second", 6, rec2, sizeof rec2, &n2) == PK_OK;
    /* Out of order inside the window is fine; a replay is not. */
    ok = ok && pk_record_open(&b, rec2, n2, &type, pt, sizeof pt, &ptlen) == PK_OK &&
         pk_record_open(&b, rec, n, &type, pt, sizeof pt, &ptlen) == PK_OK && ptlen == 10 &&
         memcmp(pt, "hello peer", 10) == 0;
    report(v, ok, "record layer: seal, open out of order");
    ok = pk_record_open(&b, rec, n, &type, pt, sizeof pt, &ptlen) == PK_ERR_REPLAY;
    report(v, ok, "record layer: a replayed record is refused");
    pk_record_clear(&a);
    pk_record_clear(&b);
}

static void check_store(int v)
{
    pk_store_t *s = NULL;
    pk_txn_t *t = NULL;
    uint64_t id1 = 0, id2 = 0;
    uint8_t val[8];
    size_t vlen = 0;
    int ok =
        pk_store_open("memory:", &s) == PK_OK && pk_store_begin(s, &t) == PK_OK &&
        pk_txn_put(t, "selftest", (const uint8_t *)"k", 1, (const uint8_t *)"v1", 2) == PK_OK &&
        pk_txn_next_id(t, "ksi", &id1) == PK_OK && pk_txn_next_id(t, "ksi", &id2) == PK_OK &&
        pk_txn_commit(t) == PK_OK && id1 == 1 && id2 == 2;
    t = NULL;
    ok = ok && pk_store_begin(s, &t) == PK_OK &&
         pk_txn_insert(t, "selftest", (const uint8_t *)"k", 1, (const uint8_t *)"v2", 2) ==
             PK_ERR_EXISTS &&
         pk_txn_get(t, "selftest", (const uint8_t *)"k", 1, val, sizeof val, &vlen) == PK_OK &&
         vlen == 2 && memcmp(val, "v1", 2) == 0;
    if (t)
        pk_txn_abort(t);
    report(v, ok, "store: transactions, claims and never-reused identifiers");
    pk_store_close(s);
}

int pk_selftest_run(int verbose)
{
    failures = 0;
    check_hmac(verbose);
    check_kdf(verbose);
    check_aead(verbose);
    check_sign(verbose);
    check_record(verbose);
    check_store(verbose);
    if (verbose)
        printf("  self-checks: %s\n", failures ? "FAILED" : "all passed");
    return failures ? -1 : 0;
}
