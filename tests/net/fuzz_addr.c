/*
 * libFuzzer target for the address parser (net/addr.h): pk_addr_parse on the
 * input as a C string (cut at the first NUL).
 *
 * Invariants: the result is PK_OK or PK_ERR_INVAL; a failure leaves *out
 * all zero and sets a non-empty explanation; a success has family AF_INET
 * (len sizeof sockaddr_in) or AF_INET6 (len sizeof sockaddr_in6), and its
 * port is the decimal port after the last ':'; what parses formats to a
 * string shorter than PK_ADDR_STRLEN that parses back to an equal address,
 * formats to the same string again, and has the same source key.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes the seed inputs into dir.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"

#include "fuzz_assert.h"

#define IN_MAX 256 /* longer inputs only test the length check */

static const char *const seeds[] = {
    "127.0.0.1:4500",
    "[::1]:4500",
    "localhost:0",
    "0.0.0.0:65535",
    "[::ffff:1.2.3.4]:80",
    "[fe80::1%lo]:1",
    "[2001:db8::1]:65536",
    "1.2.3.4",
    "::1:80",
    "[::1]",
    "255.255.255.255:00080",
    "[1:2:3:4:5:6:7:8]:9",
};

static void dump_seeds(const char *dir)
{
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/seed-%02zu", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f)
            continue;
        fwrite(seeds[i], 1, strlen(seeds[i]), f);
        fclose(f);
    }
}

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int dumped;
    char s[IN_MAX + 1];
    pk_addr_t a, b;
    const char *why = NULL;

    if (!dumped) {
        const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");
        if (dir)
            dump_seeds(dir);
        dumped = 1;
    }
    if (size > IN_MAX)
        size = IN_MAX;
    memcpy(s, data, size);
    s[size] = '\0';

    memset(&a, 0xa5, sizeof a); /* the parser must overwrite all of it */
    int rc = pk_addr_parse(s, &a, &why);
    ASSERT(rc == PK_OK || rc == PK_ERR_INVAL);
    if (rc != PK_OK) {
        ASSERT(all_zero(&a, sizeof a));
        ASSERT(why != NULL && why[0] != '\0');
        ASSERT(pk_addr_port(&a) == 0);
        return 0;
    }
    size_t n = strlen(s);
    ASSERT(n > 0 && n < PK_ADDR_STRLEN);

    /* family and length agree */
    if (a.ss.ss_family == AF_INET)
        ASSERT(a.len == sizeof(struct sockaddr_in));
    else
        ASSERT(a.ss.ss_family == AF_INET6 && a.len == sizeof(struct sockaddr_in6));

    /* the port is the decimal number after the last ':' */
    const char *colon = strrchr(s, ':');
    ASSERT(colon != NULL);
    unsigned long want = strtoul(colon + 1, NULL, 10);
    ASSERT(want <= 65535 && pk_addr_port(&a) == want);
    ASSERT(pk_addr_eq(&a, &a));

    /* format -> parse round trip */
    char f1[PK_ADDR_STRLEN], f2[PK_ADDR_STRLEN];
    ASSERT(pk_addr_format(&a, f1) == f1);
    ASSERT(strlen(f1) < PK_ADDR_STRLEN);
    memset(&b, 0x5a, sizeof b);
    why = NULL;
    rc = pk_addr_parse(f1, &b, &why);
    if (rc != PK_OK)
        fprintf(stderr, "'%s' formatted as '%s' does not parse: %s\n", s, f1, why);
    ASSERT(rc == PK_OK);
    ASSERT(pk_addr_eq(&a, &b) && pk_addr_eq(&b, &a));
    ASSERT(a.len == b.len);
    pk_addr_format(&b, f2);
    ASSERT(strcmp(f1, f2) == 0);

    uint8_t ka[16], kb[16];
    int fa = pk_addr_source_key(&a, ka), fb = pk_addr_source_key(&b, kb);
    ASSERT(fa == fb && (fa == 4 || fa == 6) && memcmp(ka, kb, 16) == 0);
    return 0;
}
