/*
 * Tests of the TS 33.220 Annex B.2 KDF and its registry:
 *  - known answers for every FC in lib/core/kdf_fc.h, made by an independent
 *    implementation (tests/vectors/gen_kdf.py, Python hmac/hashlib);
 *  - the registry has unique FCs, complete entries, and covers every
 *    PK_FC_* define of kdf_fc.h (parsed from the header file at run time, so
 *    a define added without a registry entry fails here);
 *  - argument limits (parameter count and length).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"
#include "kdf_vectors.h"

#ifndef PK_KDF_FC_HEADER
#error "PK_KDF_FC_HEADER (path of lib/core/kdf_fc.h) must be defined by the build"
#endif

#define NVEC (sizeof pk_kdf_vectors / sizeof pk_kdf_vectors[0])

static size_t unhex_any(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    if (n > cap)
        abort();
    check_unhex(hex, out, n);
    return n;
}

/* The decoded inputs of one vector (parameters point into bufs). */
struct decoded {
    uint8_t key[128];
    size_t keylen;
    uint8_t bufs[8][400];
    pk_kdf_param_t params[8];
    size_t np;
    uint8_t want[32];
};

static void decode(const pk_kdf_vector_t *v, struct decoded *d)
{
    d->keylen = unhex_any(v->key, d->key, sizeof d->key);
    d->np = v->np;
    for (size_t i = 0; i < v->np; i++) {
        d->params[i].len = unhex_any(v->p[i], d->bufs[i], sizeof d->bufs[i]);
        d->params[i].p = d->params[i].len ? d->bufs[i] : NULL;
    }
    check_unhex(v->out, d->want, 32);
}

static void test_vectors_oneoff(void)
{
    static struct decoded d;
    uint8_t out[32];

    for (size_t i = 0; i < NVEC; i++) {
        decode(&pk_kdf_vectors[i], &d);
        memset(out, 0, sizeof out);
        CHECK_EQ_INT(pk_kdf(d.key, d.keylen, (uint8_t)pk_kdf_vectors[i].fc, d.params, d.np, out),
                     PK_OK);
        if (memcmp(out, d.want, 32) != 0)
            fprintf(stderr, "  vector: %s\n", pk_kdf_vectors[i].label);
        CHECK_MEM(out, d.want, 32);
    }
}

/* One context re-keyed across all vectors, each derived twice. */
static void test_vectors_rekeyed_context(void)
{
    static struct decoded d;
    uint8_t out[32];
    pk_kdf_t k = {0};

    for (size_t i = 0; i < NVEC; i++) {
        decode(&pk_kdf_vectors[i], &d);
        if (i == 0)
            CHECK_EQ_INT(pk_kdf_init(&k, d.key, d.keylen), PK_OK);
        else
            CHECK_EQ_INT(pk_kdf_rekey(&k, d.key, d.keylen), PK_OK);
        for (int rep = 0; rep < 2; rep++) {
            memset(out, 0, sizeof out);
            CHECK_EQ_INT(pk_kdf_derive(&k, (uint8_t)pk_kdf_vectors[i].fc, d.params, d.np, out),
                         PK_OK);
            CHECK_MEM(out, d.want, 32);
        }
    }
    pk_kdf_clear(&k);
    pk_kdf_clear(&k);
}

/* Alternating rekeys between two vectors with 16- and 32-byte keys (and
 * back), the pattern of a server deriving for one device after another. */
static void test_rekey_alternating(void)
{
    static struct decoded d16, d32;
    size_t i16 = NVEC, i32 = NVEC;
    uint8_t out[32];
    pk_kdf_t k = {0};

    for (size_t i = 0; i < NVEC; i++) {
        size_t kl = strlen(pk_kdf_vectors[i].key) / 2;
        if (kl == 16 && i16 == NVEC)
            i16 = i;
        if (kl == 32 && i32 == NVEC)
            i32 = i;
    }
    CHECK(i16 < NVEC && i32 < NVEC);
    if (i16 == NVEC || i32 == NVEC)
        return;
    decode(&pk_kdf_vectors[i16], &d16);
    decode(&pk_kdf_vectors[i32], &d32);
    for (int rep = 0; rep < 8; rep++) {
        const struct decoded *d = rep % 2 ? &d32 : &d16;
        size_t vi = rep % 2 ? i32 : i16;
        /* rekey of a zeroed context sets it up */
        CHECK_EQ_INT(pk_kdf_rekey(&k, d->key, d->keylen), PK_OK);
        memset(out, 0, sizeof out);
        CHECK_EQ_INT(pk_kdf_derive(&k, (uint8_t)pk_kdf_vectors[vi].fc, d->params, d->np, out),
                     PK_OK);
        CHECK_MEM(out, d->want, 32);
    }
    pk_kdf_clear(&k);
}

/* A changed FC, parameter byte, parameter split or key changes the output:
 * the length fields make (P0="ab", P1="c") differ from (P0="a", P1="bc"). */
static void test_domain_separation(void)
{
    /* last byte non-zero: HMAC zero-pads keys, so a trailing zero byte would
     * make the 31-byte prefix the same key */
    static const uint8_t key[32] = {1, 2, 3, [31] = 4};
    uint8_t o1[32], o2[32];
    pk_kdf_param_t a[2] = {{"ab", 2}, {"c", 1}};
    pk_kdf_param_t b[2] = {{"a", 1}, {"bc", 2}};
    pk_kdf_param_t c[1] = {{"abc", 3}};

    CHECK_EQ_INT(pk_kdf(key, sizeof key, PK_FC_KD_SESS, a, 2, o1), PK_OK);
    CHECK_EQ_INT(pk_kdf(key, sizeof key, PK_FC_KD_SESS, b, 2, o2), PK_OK);
    CHECK(memcmp(o1, o2, 32) != 0);
    CHECK_EQ_INT(pk_kdf(key, sizeof key, PK_FC_KD_SESS, c, 1, o2), PK_OK);
    CHECK(memcmp(o1, o2, 32) != 0);
    CHECK_EQ_INT(pk_kdf(key, sizeof key, PK_FC_PEK_PIK, a, 2, o2), PK_OK);
    CHECK(memcmp(o1, o2, 32) != 0);
    CHECK_EQ_INT(pk_kdf(key, 31, PK_FC_KD_SESS, a, 2, o2), PK_OK);
    CHECK(memcmp(o1, o2, 32) != 0);
    /* the 128-bit key is the last 16 bytes */
    CHECK(pk_kdf_key128(o1) == o1 + 16);
}

static void test_limits(void)
{
    static uint8_t big[65536];
    static const uint8_t key[16] = {9};
    uint8_t out[32], ref[32];
    pk_kdf_param_t p[PK_KDF_MAX_PARAMS + 1];
    pk_kdf_t k = {0};

    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i <= PK_KDF_MAX_PARAMS; i++) {
        p[i].p = big;
        p[i].len = 1;
    }
    CHECK_EQ_INT(pk_kdf_init(&k, key, sizeof key), PK_OK);

    /* count */
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, PK_KDF_MAX_PARAMS, out), PK_OK);
    memset(out, 0xAA, sizeof out);
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, PK_KDF_MAX_PARAMS + 1, out), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, NULL, 1, out), PK_ERR_INVAL);

    /* length: 65535 is the largest Li can express */
    p[0].len = 65535;
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, 1, out), PK_OK);
    /* the same S fed to HMAC by hand (the encoding, not the HMAC, is under test) */
    {
        pk_hmac_t h = {0};
        uint8_t fc = 0xE0, l[2] = {0xFF, 0xFF};
        CHECK_EQ_INT(pk_hmac_init(&h, key, sizeof key), PK_OK);
        CHECK_EQ_INT(pk_hmac_begin(&h), PK_OK);
        CHECK_EQ_INT(pk_hmac_update(&h, &fc, 1), PK_OK);
        CHECK_EQ_INT(pk_hmac_update(&h, big, 65535), PK_OK);
        CHECK_EQ_INT(pk_hmac_update(&h, l, 2), PK_OK);
        CHECK_EQ_INT(pk_hmac_final(&h, ref), PK_OK);
        pk_hmac_clear(&h);
        CHECK_MEM(out, ref, 32);
    }
    p[0].len = 65536;
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, 1, out), PK_ERR_INVAL);
    p[0].len = 1;
    p[1].len = 70000; /* a bad later parameter is caught before any hashing */
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, 2, out), PK_ERR_INVAL);
    p[1].p = NULL;
    p[1].len = 3;
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, 2, out), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_kdf(key, sizeof key, 0xE0, p, 2, out), PK_ERR_INVAL);

    /* the context still derives correctly after rejected calls */
    p[1].p = big;
    p[1].len = 1;
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, 2, out), PK_OK);
    CHECK_EQ_INT(pk_kdf(key, sizeof key, 0xE0, p, 2, ref), PK_OK);
    CHECK_MEM(out, ref, 32);
    pk_kdf_clear(&k);
    CHECK_EQ_INT(pk_kdf_derive(&k, 0xE0, p, 2, out), PK_ERR_INVAL);
}

/* Reads every "#define PK_FC_<NAME> 0x<hex>" of kdf_fc.h. */
static size_t read_fc_header(char names[][64], unsigned *fcs, size_t cap)
{
    FILE *f = fopen(PK_KDF_FC_HEADER, "r");
    char line[512];
    size_t n = 0;

    if (!f) {
        fprintf(stderr, "cannot open %s\n", PK_KDF_FC_HEADER);
        return 0;
    }
    while (n < cap && fgets(line, sizeof line, f)) {
        char name[48];
        unsigned v;
        const char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        if (sscanf(s, "#define PK_FC_%47[A-Za-z0-9_] 0x%x", name, &v) == 2) {
            snprintf(names[n], 64, "PK_FC_%s", name);
            fcs[n] = v;
            n++;
        }
    }
    fclose(f);
    return n;
}

static void test_registry(void)
{
    size_t n = 0;
    const pk_kdf_entry_t *r = pk_kdf_registry(&n);
    static char names[64][64];
    unsigned fcs[64];
    size_t nh = read_fc_header(names, fcs, 64);

    CHECK(r != NULL);
    CHECK(n > 0);
    CHECK(nh >= 17); /* sanity: the parser found the header's defines */

    /* unique FCs, complete entries */
    for (size_t i = 0; i < n; i++) {
        CHECK(r[i].name && r[i].name[0]);
        CHECK(r[i].key && r[i].key[0]);
        CHECK(r[i].params && r[i].params[0]);
        CHECK(r[i].purpose && r[i].purpose[0]);
        CHECK(r[i].source && r[i].source[0]);
        CHECK(r[i].fc != 0xFF); /* 0xFF is TS 33.220's two-octet FC escape */
        for (size_t j = i + 1; j < n; j++)
            CHECK(r[i].fc != r[j].fc);
        /* proxkey's own codes stay in their range; 3GPP entries cite the TS */
        if (strcmp(r[i].source, "proxkey") == 0)
            CHECK(r[i].fc >= 0xE0 && r[i].fc <= 0xFE);
        else
            CHECK(strncmp(r[i].source, "TS 33.", 6) == 0);
    }

    /* every define in kdf_fc.h is in the registry, and nothing else is */
    CHECK_EQ_INT(n, nh);
    for (size_t h = 0; h < nh; h++) {
        int found = 0;
        for (size_t i = 0; i < n; i++)
            found |= r[i].fc == fcs[h];
        if (!found)
            fprintf(stderr, "  %s (0x%02X) has no registry entry\n", names[h], fcs[h]);
        CHECK(found);
    }

    /* the 3GPP values are 3GPP's */
    CHECK_EQ_INT(PK_FC_KD_SESS, 0x7F);
    CHECK_EQ_INT(PK_FC_PEK_PIK, 0x7E);
    CHECK_EQ_INT(PK_FC_PTK, 0x4A);
}

/* Every registry entry has at least one known-answer vector, and every
 * vector's FC name agrees with the header. */
static void test_vectors_cover_registry(void)
{
    size_t n = 0;
    const pk_kdf_entry_t *r = pk_kdf_registry(&n);
    static char names[64][64];
    unsigned fcs[64];
    size_t nh = read_fc_header(names, fcs, 64);

    for (size_t i = 0; i < n; i++) {
        int found = 0;
        for (size_t v = 0; v < NVEC; v++)
            found |= pk_kdf_vectors[v].fc_name && pk_kdf_vectors[v].fc == r[i].fc;
        if (!found)
            fprintf(stderr, "  no vector for FC 0x%02X (%s)\n", r[i].fc, r[i].name);
        CHECK(found);
    }
    for (size_t v = 0; v < NVEC; v++) {
        if (!pk_kdf_vectors[v].fc_name)
            continue;
        int ok = 0;
        for (size_t h = 0; h < nh; h++)
            ok |=
                strcmp(names[h], pk_kdf_vectors[v].fc_name) == 0 && fcs[h] == pk_kdf_vectors[v].fc;
        CHECK(ok);
    }
}

/* The input S kept in the context is wiped by rekey and clear (kdf.h). */
static void test_s_wiped(void)
{
    static pk_kdf_t k; /* zero-initialised */
    static const uint8_t zero[PK_KDF_INLINE_MAX];
    uint8_t key[32] = {9}, n1[16], n2[16], out[32];
    memset(n1, 0xa5, sizeof n1);
    memset(n2, 0x5a, sizeof n2);
    pk_kdf_param_t p[2] = {{n1, 16}, {n2, 16}};
    CHECK_EQ_INT(pk_kdf_init(&k, key, sizeof key), PK_OK);
    CHECK_EQ_INT(pk_kdf_derive(&k, 0x7F, p, 2, out), PK_OK);
    CHECK_EQ_INT(k.sused, 37);
    CHECK(memcmp(k.s, zero, 37) != 0);
    CHECK_EQ_INT(pk_kdf_rekey(&k, key, 16), PK_OK);
    CHECK_EQ_INT(k.sused, 0);
    CHECK_MEM(k.s, zero, sizeof zero);
    CHECK_EQ_INT(pk_kdf_derive(&k, 0x7F, p, 2, out), PK_OK);
    pk_kdf_clear(&k);
    CHECK_EQ_INT(k.sused, 0);
    CHECK_MEM(k.s, zero, sizeof zero);
}

int main(void)
{
    const char *want = getenv("PROXKEY_CRYPTO");
    if (want && strcmp(want, "evp") == 0 && pk_crypto_use_evp() != PK_OK)
        return 1;
    RUN(test_vectors_oneoff);
    RUN(test_vectors_rekeyed_context);
    RUN(test_rekey_alternating);
    RUN(test_domain_separation);
    RUN(test_limits);
    RUN(test_registry);
    RUN(test_vectors_cover_registry);
    RUN(test_s_wiped);
    return check_report();
}
