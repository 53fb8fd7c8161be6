/*
 * `proxkey bench`: runs the micro-benchmark suites (bench_suites.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_suites.h"

/* One row per suite: {name, fn, summary, micro}. */
static const pk_bench_suite_t suites[] = {
    {"kdf", pk_bench_suite_kdf, "KDF derivations/s vs raw OpenSSL HMAC-SHA-256", 1},
    {"aead", pk_bench_suite_aead, "AES-128-GCM seal at 64 and 1400 bytes vs raw OpenSSL EVP", 1},
    {"record", pk_bench_suite_record, "record seal/open at 64 and 1400 bytes vs raw OpenSSL EVP",
     1},
    {"link", pk_bench_suite_link, "direct-link setups/s in memory vs raw keyed HMAC-SHA-256", 1},
};

#define NSUITES (sizeof suites / sizeof suites[0])

#define PK_BENCH_DEFAULT_ROUNDS   5
#define PK_BENCH_DEFAULT_ROUND_MS 200

static void usage(FILE *f)
{
    fprintf(f,
            "usage: proxkey bench [SUITE...] [--json] [--rounds N] [--round-ms N] [--list]\n\n"
            "Runs micro-benchmarks. Each figure is the median over N rounds, printed beside\n"
            "a baseline measured in the same run (the machine may be shared) as a ratio.\n"
            "With no SUITE, runs every micro suite.\n\n"
            "  --json         also print one JSON object per figure\n"
            "  --rounds N     rounds per figure (1..101, default %d)\n"
            "  --round-ms N   target length of a round in ms (1..10000, default %d)\n"
            "  --list         list the suites\n\n"
            "suites:\n",
            PK_BENCH_DEFAULT_ROUNDS, PK_BENCH_DEFAULT_ROUND_MS);
    for (size_t i = 0; i < NSUITES; i++)
        fprintf(f, "  %-10s %s%s\n", suites[i].name, suites[i].summary,
                suites[i].micro ? "" : " (run only when named)");
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "proxkey: bench: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
    char *end = NULL;
    unsigned long v;

    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    v = strtoul(s, &end, 10);
    if (*end != '\0' || v < min || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static const pk_bench_suite_t *find_suite(const char *name)
{
    for (size_t i = 0; i < NSUITES; i++)
        if (strcmp(suites[i].name, name) == 0)
            return &suites[i];
    return NULL;
}

int pk_bench_main(int argc, char **argv)
{
    pk_bench_opts_t o = {PK_BENCH_DEFAULT_ROUNDS, PK_BENCH_DEFAULT_ROUND_MS};
    const pk_bench_suite_t *chosen[NSUITES];
    size_t nchosen = 0;
    int json = 0, rc = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--list") == 0) {
            for (size_t s = 0; s < NSUITES; s++)
                printf("%s\n", suites[s].name);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--rounds") == 0) {
            if (i + 1 >= argc || parse_uint(argv[++i], 1, 101, &o.rounds) != 0)
                return usage_error("--rounds needs a number in 1..101", NULL);
        } else if (strcmp(a, "--round-ms") == 0) {
            if (i + 1 >= argc || parse_uint(argv[++i], 1, 10000, &o.round_ms) != 0)
                return usage_error("--round-ms needs a number in 1..10000", NULL);
        } else if (a[0] == '-') {
            return usage_error("unknown option", a);
        } else {
            const pk_bench_suite_t *s = find_suite(a);
            if (!s)
                return usage_error("unknown suite (see --list)", a);
            if (nchosen < NSUITES)
                chosen[nchosen++] = s;
        }
    }
    if (nchosen == 0)
        for (size_t s = 0; s < NSUITES; s++)
            if (suites[s].micro)
                chosen[nchosen++] = &suites[s];

    pk_bench_set_json(json ? stdout : NULL);
    for (size_t i = 0; i < nchosen; i++) {
        printf("# %s: %s (%u rounds x %u ms)\n", chosen[i]->name, chosen[i]->summary, o.rounds,
               o.round_ms);
        if (chosen[i]->fn(&o) != 0) {
            fprintf(stderr, "proxkey: bench: suite %s failed\n", chosen[i]->name);
            rc = 1;
        }
    }
    pk_bench_set_json(NULL);
    return rc;
}
