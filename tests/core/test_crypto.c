/*
 * Known-answer and tamper tests for lib/core/crypto.c:
 *  - HMAC-SHA-256: RFC 4231 test cases 1-7 (incl. long key and truncation);
 *  - AES-GCM: McGrew-Viega (GCM spec) test cases 2, 4, 14, 16 and NIST CAVP
 *    gcmEncryptExtIV128/256 vectors with AAD; tamper cases;
 *  - Ed25519: RFC 8032 section 7.1 tests 1-3;
 *  - X25519: RFC 7748 sections 5.2 and 6.1, and the all-zero rejection.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/crypto.h"

#include <openssl/evp.h>

/* Decodes a hex string of any even length; returns the byte count. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    if (n > cap) {
        fprintf(stderr, "test vector too long\n");
        abort();
    }
    check_unhex(hex, out, n);
    return n;
}

static int all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* ---- HMAC-SHA-256, RFC 4231 ---- */

struct hmac_vec {
    const char *key;  /* hex */
    const char *data; /* hex */
    const char *mac;  /* hex; 16 bytes for the truncated test case 5 */
};

/* Data strings of RFC 4231 in hex ("Hi There", "what do ya want...", ...). */
static const struct hmac_vec rfc4231[] = {
    /* 1 */
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    /* 2: key "Jefe" */
    {"4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    /* 3 */
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
     "dddddddddddd",
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    /* 4 */
    {"0102030405060708090a0b0c0d0e0f10111213141516171819",
     "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
     "cdcdcdcdcdcd",
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    /* 5: "Test With Truncation", output truncated to 128 bits */
    {"0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c", "546573742057697468205472756e636174696f6e",
     "a3b6167473100ee06e0c796c2955552b"},
    /* 6: 131-byte key, "Test Using Larger Than Block-Size Key - Hash Key First" */
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368"
     "204b6579204669727374",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    /* 7: 131-byte key, larger-than-block-size data */
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a"
     "65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865"
     "206b6579206e6565647320746f20626520686173686564206265666f7265206265696e672075736564206279"
     "2074686520484d414320616c676f726974686d2e",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
};

static void test_hmac_rfc4231(void)
{
    uint8_t key[200], data[200], want[32], out[32];

    for (size_t i = 0; i < sizeof rfc4231 / sizeof rfc4231[0]; i++) {
        size_t kl = unhex(rfc4231[i].key, key, sizeof key);
        size_t dl = unhex(rfc4231[i].data, data, sizeof data);
        size_t ml = unhex(rfc4231[i].mac, want, sizeof want);

        /* one-off */
        memset(out, 0, sizeof out);
        CHECK_EQ_INT(pk_hmac_sha256(key, kl, data, dl, out), PK_OK);
        CHECK_MEM(out, want, ml);

        /* reusable context: twice with the same key, then streamed */
        pk_hmac_t h = {0};
        CHECK_EQ_INT(pk_hmac_init(&h, key, kl), PK_OK);
        for (int rep = 0; rep < 2; rep++) {
            memset(out, 0, sizeof out);
            CHECK_EQ_INT(pk_hmac(&h, data, dl, out), PK_OK);
            CHECK_MEM(out, want, ml);
        }
        memset(out, 0, sizeof out);
        CHECK_EQ_INT(pk_hmac_begin(&h), PK_OK);
        for (size_t off = 0; off < dl; off += 7) {
            size_t n = dl - off < 7 ? dl - off : 7;
            CHECK_EQ_INT(pk_hmac_update(&h, data + off, n), PK_OK);
        }
        CHECK_EQ_INT(pk_hmac_final(&h, out), PK_OK);
        CHECK_MEM(out, want, ml);
        pk_hmac_clear(&h);
        CHECK(h.ctx == NULL);
        pk_hmac_clear(&h); /* clearing twice is allowed */
    }
}

static void test_hmac_rekey(void)
{
    uint8_t k1[20], k2[4], d1[8], d2[28], w1[32], w2[32], out[32];
    unhex(rfc4231[0].key, k1, sizeof k1);
    unhex(rfc4231[0].data, d1, sizeof d1);
    unhex(rfc4231[0].mac, w1, sizeof w1);
    unhex(rfc4231[1].key, k2, sizeof k2);
    unhex(rfc4231[1].data, d2, sizeof d2);
    unhex(rfc4231[1].mac, w2, sizeof w2);

    pk_hmac_t h = {0};
    CHECK_EQ_INT(pk_hmac_init(&h, k1, sizeof k1), PK_OK);
    CHECK_EQ_INT(pk_hmac_init(&h, k1, sizeof k1), PK_ERR_INVAL); /* not cleared */
    CHECK_EQ_INT(pk_hmac(&h, d1, sizeof d1, out), PK_OK);
    CHECK_MEM(out, w1, 32);
    CHECK_EQ_INT(pk_hmac_rekey(&h, k2, sizeof k2), PK_OK);
    CHECK_EQ_INT(pk_hmac(&h, d2, sizeof d2, out), PK_OK);
    CHECK_MEM(out, w2, 32);
    CHECK_EQ_INT(pk_hmac_rekey(&h, k1, sizeof k1), PK_OK);
    CHECK_EQ_INT(pk_hmac(&h, d1, sizeof d1, out), PK_OK);
    CHECK_MEM(out, w1, 32);
    pk_hmac_clear(&h);
    /* rekey of a cleared context sets it up again */
    CHECK_EQ_INT(pk_hmac_rekey(&h, k2, sizeof k2), PK_OK);
    CHECK_EQ_INT(pk_hmac(&h, d2, sizeof d2, out), PK_OK);
    CHECK_MEM(out, w2, 32);
    pk_hmac_clear(&h);
    CHECK_EQ_INT(pk_hmac(&h, d2, sizeof d2, out), PK_ERR_INVAL);
}

static void test_sha256(void)
{
    /* FIPS 180-2 "abc" and the empty string */
    uint8_t out[32], want[32];
    CHECK_EQ_INT(pk_sha256("abc", 3, out), PK_OK);
    check_unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    CHECK_MEM(out, want, 32);
    CHECK_EQ_INT(pk_sha256(NULL, 0, out), PK_OK);
    check_unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want, 32);
    CHECK_MEM(out, want, 32);
}

/* ---- AES-GCM ---- */

struct gcm_vec {
    const char *src;
    const char *key, *iv, *pt, *aad, *ct, *tag; /* hex */
};

static const struct gcm_vec gcm_vecs[] = {
    {"McGrew-Viega test case 2 (AES-128, no AAD)", "00000000000000000000000000000000",
     "000000000000000000000000", "00000000000000000000000000000000", "",
     "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"},
    {"McGrew-Viega test case 4 (AES-128, AAD)", "feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e24"
     "49a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5a"
     "ac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"},
    {"NIST gcmEncryptExtIV128 PTlen=0 AADlen=128 Count=0", "77be63708971c4e240d1cb79e8d77feb",
     "e0e00f19fed7ba0136a797f3", "", "7a43ec1d9c0a5a78a0b16533a6213cab", "",
     "209fcc8d3675ed938e9c7166709dd946"},
    {"NIST gcmEncryptExtIV128 PTlen=408 AADlen=160", "fe47fcce5fc32665d2ae399e4eec72ba",
     "5adb9609dbaeb58cbd6e7275",
     "7c0e88c88899a779228465074797cd4c2e1498d259b54390b85e3eef1c02df60e743f1b840382c4bccaf3baf"
     "b4ca8429bea063",
     "88319d6e1d3ffa5f987199166c8a9b56c2aeba5a",
     "98f4826f05a265e6dd2be82db241c0fbbbf9ffb1c173aa83964b7cf5393043736365253ddbc5db8778371495"
     "da76d269e5db3e",
     "291ef1982e4defedaa2249f898556b47"},
    {"McGrew-Viega test case 14 (AES-256, no AAD)",
     "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
     "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18",
     "d0d1c8a799996bf0265b98b5d48ab919"},
    {"McGrew-Viega test case 16 (AES-256, AAD)",
     "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e24"
     "49a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
     "56828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
    {"NIST gcmEncryptExtIV256 PTlen=0 AADlen=128 Count=0",
     "78dc4e0aaf52d935c3c01eea57428f00ca1fd475f5da86a49c8dd73d68c8e223", "d79cf22d504cc793c3fb6c8a",
     "", "b96baa8c1c75a671bfb2d08d06be5f36", "", "3e5d486aa2e30b22e040b85723a06e76"},
};

static void test_gcm_vectors(void)
{
    uint8_t key[32], iv[12], pt[128], aad[64], ct[128], tag[16], out[128], otag[16];

    for (size_t i = 0; i < sizeof gcm_vecs / sizeof gcm_vecs[0]; i++) {
        const struct gcm_vec *v = &gcm_vecs[i];
        size_t kl = unhex(v->key, key, sizeof key);
        unhex(v->iv, iv, sizeof iv);
        size_t pl = unhex(v->pt, pt, sizeof pt);
        size_t al = unhex(v->aad, aad, sizeof aad);
        size_t cl = unhex(v->ct, ct, sizeof ct);
        unhex(v->tag, tag, sizeof tag);
        CHECK_EQ_INT(pl, cl);

        pk_aead_t a = {0};
        CHECK_EQ_INT(pk_aead_init(&a, key, kl), PK_OK);
        CHECK_EQ_INT(a.keylen, kl);
        for (int rep = 0; rep < 2; rep++) { /* the reused context gives the same answer */
            memset(out, 0xEE, sizeof out);
            memset(otag, 0, sizeof otag);
            CHECK_EQ_INT(pk_aead_seal(&a, iv, al ? aad : NULL, al, pl ? pt : NULL, pl,
                                      pl ? out : NULL, otag),
                         PK_OK);
            if (memcmp(out, ct, cl) || memcmp(otag, tag, 16))
                fprintf(stderr, "  vector: %s\n", v->src);
            CHECK_MEM(out, ct, cl);
            CHECK_MEM(otag, tag, 16);

            memset(out, 0xEE, sizeof out);
            CHECK_EQ_INT(
                pk_aead_open(&a, iv, al ? aad : NULL, al, cl ? ct : NULL, cl, tag, cl ? out : NULL),
                PK_OK);
            CHECK_MEM(out, pt, pl);
        }
        /* in place */
        if (pl) {
            memcpy(out, pt, pl);
            CHECK_EQ_INT(pk_aead_seal(&a, iv, aad, al, out, pl, out, otag), PK_OK);
            CHECK_MEM(out, ct, cl);
            CHECK_EQ_INT(pk_aead_open(&a, iv, aad, al, out, cl, otag, out), PK_OK);
            CHECK_MEM(out, pt, pl);
        }
        pk_aead_clear(&a);
        CHECK(a.enc == NULL && a.dec == NULL);
        pk_aead_clear(&a);
    }
}

/* One vector through a context that may have held other keys before. */
static void gcm_check_vec(pk_aead_t *a, const struct gcm_vec *v)
{
    uint8_t key[32], iv[12], pt[128], aad[64], ct[128], tag[16], out[128], otag[16];
    size_t kl = unhex(v->key, key, sizeof key);
    unhex(v->iv, iv, sizeof iv);
    size_t pl = unhex(v->pt, pt, sizeof pt);
    size_t al = unhex(v->aad, aad, sizeof aad);
    size_t cl = unhex(v->ct, ct, sizeof ct);
    unhex(v->tag, tag, sizeof tag);

    CHECK_EQ_INT(pk_aead_rekey(a, key, kl), PK_OK);
    CHECK_EQ_INT(a->keylen, kl);
    memset(out, 0xEE, sizeof out);
    CHECK_EQ_INT(
        pk_aead_seal(a, iv, al ? aad : NULL, al, pl ? pt : NULL, pl, pl ? out : NULL, otag), PK_OK);
    if (memcmp(out, ct, cl) || memcmp(otag, tag, 16))
        fprintf(stderr, "  vector after rekey: %s\n", v->src);
    CHECK_MEM(out, ct, cl);
    CHECK_MEM(otag, tag, 16);
    memset(out, 0xEE, sizeof out);
    CHECK_EQ_INT(pk_aead_open(a, iv, al ? aad : NULL, al, cl ? ct : NULL, cl, tag, cl ? out : NULL),
                 PK_OK);
    CHECK_MEM(out, pt, pl);
}

/* pk_aead_rekey: every vector through one context, in order, reversed and
 * alternating between two keys (including AES-128 <-> AES-256 switches);
 * a message sealed under the old key no longer opens after the rekey. */
static void test_gcm_rekey(void)
{
    const size_t nv = sizeof gcm_vecs / sizeof gcm_vecs[0];
    size_t i16 = nv, i32 = nv;
    pk_aead_t a = {0};

    for (size_t i = 0; i < nv; i++) { /* a cleared context is set up by rekey */
        gcm_check_vec(&a, &gcm_vecs[i]);
        if (strlen(gcm_vecs[i].key) == 32 && i16 == nv)
            i16 = i;
        if (strlen(gcm_vecs[i].key) == 64 && i32 == nv)
            i32 = i;
    }
    for (size_t i = nv; i-- > 0;)
        gcm_check_vec(&a, &gcm_vecs[i]);
    CHECK(i16 < nv && i32 < nv);
    for (int rep = 0; rep < 6; rep++) { /* 16 <-> 32 <-> 16 ... and 16 <-> 16 */
        gcm_check_vec(&a, &gcm_vecs[i16]);
        gcm_check_vec(&a, &gcm_vecs[rep % 2 ? i32 : (i16 + 1) % nv]);
    }

    /* old key's ciphertext is refused after a rekey to another key */
    uint8_t k1[16], k2[16], iv[12] = {0}, pt[20] = "twenty bytes of text", ct[20], tag[16], out[20];
    memset(k1, 0x11, sizeof k1);
    memset(k2, 0x22, sizeof k2);
    CHECK_EQ_INT(pk_aead_rekey(&a, k1, 16), PK_OK);
    CHECK_EQ_INT(pk_aead_seal(&a, iv, NULL, 0, pt, sizeof pt, ct, tag), PK_OK);
    CHECK_EQ_INT(pk_aead_rekey(&a, k2, 16), PK_OK);
    CHECK_EQ_INT(pk_aead_open(&a, iv, NULL, 0, ct, sizeof ct, tag, out), PK_ERR_AUTH);
    CHECK_EQ_INT(pk_aead_rekey(&a, k1, 16), PK_OK);
    CHECK_EQ_INT(pk_aead_open(&a, iv, NULL, 0, ct, sizeof ct, tag, out), PK_OK);
    CHECK_MEM(out, pt, sizeof pt);

    /* seal-only rekey: seals as a full context would, refuses to open, and a
     * full rekey afterwards restores both directions; sizes switch both ways */
    for (int rep = 0; rep < 4; rep++) {
        const struct gcm_vec *v = &gcm_vecs[rep % 2 ? i32 : i16];
        uint8_t key[32], viv[12], vpt[128], vaad[64], vct[128], vtag[16], o[128], otag[16];
        size_t kl = unhex(v->key, key, sizeof key);
        unhex(v->iv, viv, sizeof viv);
        size_t pl = unhex(v->pt, vpt, sizeof vpt);
        size_t al = unhex(v->aad, vaad, sizeof vaad);
        size_t cl = unhex(v->ct, vct, sizeof vct);
        unhex(v->tag, vtag, sizeof vtag);
        CHECK_EQ_INT(pk_aead_rekey_seal(&a, key, kl), PK_OK);
        CHECK(a.dec == NULL);
        CHECK_EQ_INT(
            pk_aead_seal(&a, viv, al ? vaad : NULL, al, pl ? vpt : NULL, pl, pl ? o : NULL, otag),
            PK_OK);
        CHECK_MEM(o, vct, cl);
        CHECK_MEM(otag, vtag, 16);
        CHECK_EQ_INT(
            pk_aead_open(&a, viv, al ? vaad : NULL, al, cl ? vct : NULL, cl, vtag, cl ? o : NULL),
            PK_ERR_INVAL);
    }
    gcm_check_vec(&a, &gcm_vecs[i16]); /* full rekey after seal-only */
    pk_aead_clear(&a);
    CHECK_EQ_INT(pk_aead_rekey_seal(&a, k1, 16), PK_OK); /* from a cleared context */
    CHECK_EQ_INT(pk_aead_seal(&a, iv, NULL, 0, pt, sizeof pt, out, tag), PK_OK);
    CHECK_MEM(out, ct, sizeof ct);
    CHECK_EQ_INT(pk_aead_rekey_seal(&a, k1, 24), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_aead_rekey(&a, k1, 16), PK_OK);

    /* bad sizes and arguments: refused, and the context is left usable or cleared */
    CHECK_EQ_INT(pk_aead_rekey(&a, k1, 24), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_aead_rekey(&a, NULL, 16), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_aead_rekey(NULL, k1, 16), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_aead_open(&a, iv, NULL, 0, ct, sizeof ct, tag, out), PK_OK);
    pk_aead_clear(&a);
    CHECK(a.enc == NULL && a.dec == NULL);
    pk_aead_clear(&a);
}

/* Flips each kind of input in turn; every one must fail with PK_ERR_AUTH
 * and leave the output buffer wiped. */
static void test_gcm_tamper(void)
{
    const struct gcm_vec *v = &gcm_vecs[1]; /* test case 4: PT and AAD */
    uint8_t key[16], iv[12], pt[64], aad[20], ct[64], tag[16], out[64];
    size_t pl, al, cl;

    unhex(v->key, key, sizeof key);
    pl = unhex(v->pt, pt, sizeof pt);
    al = unhex(v->aad, aad, sizeof aad);
    cl = unhex(v->ct, ct, sizeof ct);
    pk_aead_t a = {0};
    CHECK_EQ_INT(pk_aead_init(&a, key, sizeof key), PK_OK);

    for (int what = 0; what < 6; what++) {
        unhex(v->iv, iv, sizeof iv);
        unhex(v->aad, aad, sizeof aad);
        unhex(v->ct, ct, sizeof ct);
        unhex(v->tag, tag, sizeof tag);
        size_t alen = al, clen = cl;
        switch (what) {
        case 0: ct[7] ^= 0x01; break;
        case 1: ct[cl - 1] ^= 0x80; break;
        case 2: tag[15] ^= 0x01; break;
        case 3: aad[0] ^= 0x40; break;
        case 4: iv[11] ^= 0x01; break;
        case 5: alen = al - 1; break; /* truncated AAD */
        }
        memset(out, 0xEE, sizeof out);
        CHECK_EQ_INT(pk_aead_open(&a, iv, aad, alen, ct, clen, tag, out), PK_ERR_AUTH);
        CHECK(all_zero(out, clen));
    }
    /* truncated ciphertext */
    unhex(v->iv, iv, sizeof iv);
    unhex(v->aad, aad, sizeof aad);
    unhex(v->ct, ct, sizeof ct);
    unhex(v->tag, tag, sizeof tag);
    memset(out, 0xEE, sizeof out);
    CHECK_EQ_INT(pk_aead_open(&a, iv, aad, al, ct, cl - 1, tag, out), PK_ERR_AUTH);
    CHECK(all_zero(out, cl - 1));
    /* in-place open of a forgery wipes the buffer too */
    memcpy(out, ct, cl);
    tag[0] ^= 1;
    CHECK_EQ_INT(pk_aead_open(&a, iv, aad, al, out, cl, tag, out), PK_ERR_AUTH);
    CHECK(all_zero(out, cl));
    /* the context still works after failures */
    tag[0] ^= 1;
    CHECK_EQ_INT(pk_aead_open(&a, iv, aad, al, ct, cl, tag, out), PK_OK);
    CHECK_MEM(out, pt, pl);
    /* wrong key */
    pk_aead_clear(&a);
    key[0] ^= 1;
    CHECK_EQ_INT(pk_aead_init(&a, key, sizeof key), PK_OK);
    CHECK_EQ_INT(pk_aead_open(&a, iv, aad, al, ct, cl, tag, out), PK_ERR_AUTH);
    CHECK(all_zero(out, cl));
    pk_aead_clear(&a);
}

static void test_gcm_args(void)
{
    uint8_t key[32] = {1}, iv[12] = {0}, tag[16], buf[16] = {0};
    pk_aead_t a = {0};
    CHECK_EQ_INT(pk_aead_init(&a, key, 24), PK_ERR_INVAL); /* AES-192 not offered */
    CHECK_EQ_INT(pk_aead_init(&a, key, 0), PK_ERR_INVAL);
    CHECK(a.enc == NULL);
    CHECK_EQ_INT(pk_aead_seal(&a, iv, NULL, 0, buf, 16, buf, tag), PK_ERR_INVAL); /* no key */
    CHECK_EQ_INT(pk_aead_init(&a, key, 32), PK_OK);
    CHECK_EQ_INT(pk_aead_init(&a, key, 32), PK_ERR_INVAL); /* not cleared first */
    CHECK_EQ_INT(pk_aead_seal(&a, iv, NULL, 5, buf, 16, buf, tag), PK_ERR_INVAL);
    /* empty message and empty AAD: a bare tag that still authenticates */
    CHECK_EQ_INT(pk_aead_seal(&a, iv, NULL, 0, NULL, 0, NULL, tag), PK_OK);
    CHECK_EQ_INT(pk_aead_open(&a, iv, NULL, 0, NULL, 0, tag, NULL), PK_OK);
    tag[3] ^= 1;
    CHECK_EQ_INT(pk_aead_open(&a, iv, NULL, 0, NULL, 0, tag, NULL), PK_ERR_AUTH);
    pk_aead_clear(&a);
}

/* ---- Ed25519, RFC 8032 7.1 ---- */

struct ed_vec {
    const char *sk, *pk, *msg, *sig;
};

static const struct ed_vec ed_vecs[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
     "1cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613"
     "d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760"
     "984dc6594a7c15e9716ed28dc027beceea1ec40a"},
};

static void test_ed25519(void)
{
    uint8_t sk[32], pk[32], want_pk[32], msg[4], sig[64], want_sig[64];

    for (size_t i = 0; i < sizeof ed_vecs / sizeof ed_vecs[0]; i++) {
        unhex(ed_vecs[i].sk, sk, sizeof sk);
        unhex(ed_vecs[i].pk, want_pk, sizeof want_pk);
        size_t ml = unhex(ed_vecs[i].msg, msg, sizeof msg);
        unhex(ed_vecs[i].sig, want_sig, sizeof want_sig);

        CHECK_EQ_INT(pk_ed25519_public(sk, pk), PK_OK);
        CHECK_MEM(pk, want_pk, 32);
        CHECK_EQ_INT(pk_ed25519_sign(sk, ml ? msg : NULL, ml, sig), PK_OK);
        CHECK_MEM(sig, want_sig, 64);
        CHECK_EQ_INT(pk_ed25519_verify(pk, ml ? msg : NULL, ml, sig), PK_OK);

        /* tampering: signature R and S halves, message, public key */
        sig[0] ^= 1;
        CHECK_EQ_INT(pk_ed25519_verify(pk, msg, ml, sig), PK_ERR_AUTH);
        sig[0] ^= 1;
        sig[63] ^= 0x10;
        CHECK_EQ_INT(pk_ed25519_verify(pk, msg, ml, sig), PK_ERR_AUTH);
        sig[63] ^= 0x10;
        uint8_t longer[5] = {0};
        memcpy(longer, msg, ml);
        CHECK_EQ_INT(pk_ed25519_verify(pk, longer, ml + 1, sig), PK_ERR_AUTH);
        pk[5] ^= 0x01;
        CHECK_EQ_INT(pk_ed25519_verify(pk, msg, ml, sig), PK_ERR_AUTH);
    }
}

/* A deterministic pk_rng_t: counts up from a seed byte. */
static int counter_fill(void *ctx, uint8_t *buf, size_t n)
{
    uint8_t *c = ctx;
    for (size_t i = 0; i < n; i++)
        buf[i] = (*c)++;
    return PK_OK;
}

static int failing_fill(void *ctx, uint8_t *buf, size_t n)
{
    (void)ctx;
    (void)buf;
    (void)n;
    return PK_ERR_CRYPTO;
}

static void test_keygen_rng(void)
{
    uint8_t seed = 7, sk1[32], pk1[32], sk2[32], pk2[32], pk[32], sig[64];
    pk_rng_t rng = {counter_fill, &seed};

    CHECK_EQ_INT(pk_ed25519_keygen(&rng, sk1, pk1), PK_OK);
    seed = 7;
    CHECK_EQ_INT(pk_ed25519_keygen(&rng, sk2, pk2), PK_OK);
    CHECK_MEM(sk1, sk2, 32); /* deterministic from the injected source */
    CHECK_MEM(pk1, pk2, 32);
    for (int i = 0; i < 32; i++)
        CHECK_EQ_INT(sk1[i], 7 + i); /* the secret is exactly the rng's bytes */
    CHECK_EQ_INT(pk_ed25519_public(sk1, pk), PK_OK);
    CHECK_MEM(pk, pk1, 32);
    CHECK_EQ_INT(pk_ed25519_sign(sk1, "m", 1, sig), PK_OK);
    CHECK_EQ_INT(pk_ed25519_verify(pk1, "m", 1, sig), PK_OK);

    seed = 100;
    CHECK_EQ_INT(pk_x25519_keygen(&rng, sk1, pk1), PK_OK);
    CHECK_EQ_INT(pk_x25519_public(sk1, pk), PK_OK);
    CHECK_MEM(pk, pk1, 32);

    pk_rng_t bad = {failing_fill, NULL};
    memset(sk1, 0xAA, sizeof sk1);
    CHECK_EQ_INT(pk_x25519_keygen(&bad, sk1, pk1), PK_ERR_CRYPTO);
    CHECK(all_zero(sk1, sizeof sk1));

    /* the system source gives distinct keys */
    CHECK_EQ_INT(pk_x25519_keygen(&pk_rng_system, sk1, pk1), PK_OK);
    CHECK_EQ_INT(pk_x25519_keygen(&pk_rng_system, sk2, pk2), PK_OK);
    CHECK(memcmp(sk1, sk2, 32) != 0);
    CHECK(!all_zero(sk1, 32));
}

/* ---- X25519, RFC 7748 ---- */

static void test_x25519_rfc7748(void)
{
    static const char *v52[][3] = {
        {"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
         "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
         "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
        {"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
         "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
         "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
    };
    uint8_t k[32], u[32], want[32], out[32];

    for (int i = 0; i < 2; i++) {
        check_unhex(v52[i][0], k, 32);
        check_unhex(v52[i][1], u, 32);
        check_unhex(v52[i][2], want, 32);
        CHECK_EQ_INT(pk_x25519(k, u, out), PK_OK);
        CHECK_MEM(out, want, 32);
    }

    /* 5.2 iterated: k = u = 9; after 1 and 1000 iterations */
    memset(k, 0, 32);
    k[0] = 9;
    memcpy(u, k, 32);
    for (int i = 1; i <= 1000; i++) {
        CHECK_EQ_INT(pk_x25519(k, u, out), PK_OK);
        memcpy(u, k, 32);
        memcpy(k, out, 32);
        if (i == 1) {
            check_unhex("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079", want,
                        32);
            CHECK_MEM(k, want, 32);
        }
    }
    check_unhex("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51", want, 32);
    CHECK_MEM(k, want, 32);
}

static void test_x25519_dh(void)
{
    uint8_t a[32], b[32], pa[32], pb[32], want[32], s1[32], s2[32];
    check_unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a, 32);
    check_unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", b, 32);

    CHECK_EQ_INT(pk_x25519_public(a, pa), PK_OK);
    check_unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", want, 32);
    CHECK_MEM(pa, want, 32);
    CHECK_EQ_INT(pk_x25519_public(b, pb), PK_OK);
    check_unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", want, 32);
    CHECK_MEM(pb, want, 32);

    check_unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742", want, 32);
    CHECK_EQ_INT(pk_x25519(a, pb, s1), PK_OK);
    CHECK_EQ_INT(pk_x25519(b, pa, s2), PK_OK);
    CHECK_MEM(s1, want, 32);
    CHECK_MEM(s2, want, 32);
}

static void test_x25519_zero(void)
{
    /* Small-order points: the shared secret would be all zero. */
    static const char *low[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    };
    uint8_t a[32], u[32], out[32];
    check_unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a, 32);
    for (size_t i = 0; i < sizeof low / sizeof low[0]; i++) {
        check_unhex(low[i], u, 32);
        memset(out, 0xAB, sizeof out);
        CHECK_EQ_INT(pk_x25519(a, u, out), PK_ERR_AUTH);
        /* nothing written on failure */
        for (size_t j = 0; j < 32; j++)
            CHECK_EQ_INT(out[j], 0xAB);
    }
}

static void test_misc(void)
{
    uint8_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8];
    memcpy(b, a, sizeof a);
    CHECK_EQ_INT(pk_crypto_init(), PK_OK);
    CHECK_EQ_INT(pk_crypto_init(), PK_OK);
    CHECK(pk_ct_eq(a, b, 8) == 1);
    b[7] ^= 1;
    CHECK(pk_ct_eq(a, b, 8) == 0);
    CHECK(pk_ct_eq(a, b, 7) == 1);
    pk_wipe(a, sizeof a);
    CHECK(all_zero(a, sizeof a));
    pk_wipe(NULL, 0);

    uint8_t r1[64] = {0}, r2[64] = {0};
    CHECK_EQ_INT(pk_random(r1, sizeof r1), PK_OK);
    CHECK_EQ_INT(pk_rng_fill(&pk_rng_system, r2, sizeof r2), PK_OK);
    CHECK(memcmp(r1, r2, sizeof r1) != 0);
    CHECK(!all_zero(r1, sizeof r1));
}

/* The buffered system source: fresh bytes, served bytes wiped from the pool,
 * refills when short, large requests straight through. */
static void test_rng_pool(void)
{
    static pk_rng_pool_t pool;
    pk_rng_t rng;
    uint8_t a[32], b[32], zero[32] = {0}, big[2048];
    pk_rng_pool_init(&pool, &rng);
    CHECK_EQ_INT(pk_rng_fill(&rng, a, sizeof a), PK_OK);
    CHECK_EQ_INT(pk_rng_fill(&rng, b, sizeof b), PK_OK);
    CHECK(memcmp(a, b, sizeof a) != 0);
    CHECK(memcmp(a, zero, sizeof a) != 0);
    CHECK_EQ_INT(pool.pos, 64);
    CHECK_MEM(pool.buf, zero, 32); /* served bytes are gone from the pool */
    CHECK_MEM(pool.buf + 32, zero, 32);
    /* Drain to the end: the next request refills. */
    for (int i = 0; i < PK_RNG_POOL / 32 - 2; i++)
        CHECK_EQ_INT(pk_rng_fill(&rng, a, sizeof a), PK_OK);
    CHECK_EQ_INT(pool.pos, PK_RNG_POOL);
    CHECK_EQ_INT(pk_rng_fill(&rng, a, 16), PK_OK);
    CHECK_EQ_INT(pool.pos, 16);
    /* More than a quarter of the pool bypasses it. */
    CHECK_EQ_INT(pk_rng_fill(&rng, big, sizeof big), PK_OK);
    CHECK_EQ_INT(pool.pos, 16);
    pk_rng_pool_clear(&pool);
    CHECK_EQ_INT(pool.pos, PK_RNG_POOL);
}

/* The backend is the one asked for: the provider backend on a stock OpenSSL
 * 3 (a silent fall-back to EVP would hide a self-test failure), EVP with
 * PROXKEY_CRYPTO=evp (ctest runs this file both ways). */
static void test_backend(void)
{
    const char *want = getenv("PROXKEY_CRYPTO");
    CHECK_EQ_INT(pk_crypto_init(), PK_OK);
    CHECK_EQ_INT(pk_crypto_use_evp(), PK_ERR_INVAL); /* too late */
    CHECK(strcmp(pk_crypto_backend(), want && strcmp(want, "evp") == 0 ? "evp" : "provider") == 0);
}

/* Differential: pk_hmac and pk_aead against OpenSSL's own one-shot EVP calls
 * over random keys and lengths across the block boundaries (key 0..150
 * bytes: hashed above 64; messages 0..300 bytes, streamed in two pieces). */
static void test_differential(void)
{
    uint8_t key[150], msg[300], a[32], b[32], ct[300], ct2[300], tag[16], tag2[16], back[300];
    uint8_t nonce[12];
    srand(7);
    for (int it = 0; it < 400; it++) {
        size_t kl = (size_t)rand() % sizeof key, ml = (size_t)rand() % sizeof msg;
        size_t cut = ml ? (size_t)rand() % ml : 0, outl = 0;
        for (size_t i = 0; i < sizeof key; i++)
            key[i] = (uint8_t)rand();
        for (size_t i = 0; i < sizeof msg; i++)
            msg[i] = (uint8_t)rand();
        for (size_t i = 0; i < sizeof nonce; i++)
            nonce[i] = (uint8_t)rand();

        pk_hmac_t h = {0};
        CHECK_EQ_INT(pk_hmac_init(&h, kl ? key : NULL, kl), PK_OK);
        CHECK_EQ_INT(pk_hmac_begin(&h), PK_OK);
        CHECK_EQ_INT(pk_hmac_update(&h, msg, cut), PK_OK);
        CHECK_EQ_INT(pk_hmac_update(&h, msg + cut, ml - cut), PK_OK);
        CHECK_EQ_INT(pk_hmac_final(&h, a), PK_OK);
        pk_hmac_clear(&h);
        CHECK(EVP_Q_mac(NULL, "HMAC", NULL, "SHA2-256", NULL, kl ? key : (const uint8_t *)"", kl,
                        msg, ml, b, sizeof b, &outl) != NULL &&
              outl == 32);
        CHECK_MEM(a, b, 32);

        size_t akl = it % 2 ? 32 : 16, al = (size_t)rand() % 40;
        const EVP_CIPHER *c = EVP_get_cipherbyname(akl == 16 ? "aes-128-gcm" : "aes-256-gcm");
        EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new();
        int l1 = 0, l2 = 0;
        CHECK(e && EVP_EncryptInit_ex2(e, c, key, nonce, NULL) == 1 &&
              EVP_EncryptUpdate(e, NULL, &l1, msg + 200, (int)al) == 1 &&
              EVP_EncryptUpdate(e, ct2, &l1, msg, (int)ml) == 1 &&
              EVP_EncryptFinal_ex(e, ct2 + l1, &l2) == 1 &&
              EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_AEAD_GET_TAG, 16, tag2) == 1);
        EVP_CIPHER_CTX_free(e);
        pk_aead_t x = {0};
        CHECK_EQ_INT(pk_aead_init(&x, key, akl), PK_OK);
        CHECK_EQ_INT(pk_aead_seal(&x, nonce, al ? msg + 200 : NULL, al, ml ? msg : NULL, ml,
                                  ml ? ct : NULL, tag),
                     PK_OK);
        CHECK_MEM(ct, ct2, ml);
        CHECK_MEM(tag, tag2, 16);
        CHECK_EQ_INT(pk_aead_open(&x, nonce, al ? msg + 200 : NULL, al, ml ? ct : NULL, ml, tag,
                                  ml ? back : NULL),
                     PK_OK);
        CHECK_MEM(back, msg, ml);
        pk_aead_clear(&x);
    }
}

int main(void)
{
    const char *want = getenv("PROXKEY_CRYPTO");
    if (want && strcmp(want, "evp") == 0 && pk_crypto_use_evp() != PK_OK)
        return 1;
    RUN(test_backend);
    RUN(test_differential);
    RUN(test_misc);
    RUN(test_hmac_rfc4231);
    RUN(test_hmac_rekey);
    RUN(test_sha256);
    RUN(test_gcm_vectors);
    RUN(test_gcm_rekey);
    RUN(test_gcm_tamper);
    RUN(test_gcm_args);
    RUN(test_ed25519);
    RUN(test_keygen_rng);
    RUN(test_x25519_rfc7748);
    RUN(test_x25519_dh);
    RUN(test_x25519_zero);
    RUN(test_rng_pool);
    return check_report();
}
