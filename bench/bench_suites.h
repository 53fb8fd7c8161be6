/*
 * The suites of `proxkey bench` and the entry point (bench_main.c).
 *
 * A suite is `int fn(const pk_bench_opts_t *o)`: it measures what it
 * measures with pk_bench_run()/pk_bench_run_pair() (bench.h), honouring
 * o->rounds and o->round_ms, prints one pk_bench_report() line per figure,
 * and returns 0, or 1 when the code under test failed (not when a target
 * ratio was missed: the machine is shared and ratios are informational).
 *
 * To add a suite: declare its function below, define it in your own
 * bench_<x>.c, add the file to bench/CMakeLists.txt and one row to the
 * table in bench_main.c.
 */
#ifndef PK_BENCH_SUITES_H
#define PK_BENCH_SUITES_H

#include <stdint.h>
#include <stdio.h>

#include "bench.h"

typedef struct pk_bench_opts {
    unsigned rounds;   /* measured rounds per figure (median taken), >= 1 */
    unsigned round_ms; /* target duration of one round */
} pk_bench_opts_t;

typedef int (*pk_bench_suite_fn)(const pk_bench_opts_t *o);

typedef struct pk_bench_suite {
    const char *name;
    pk_bench_suite_fn fn;
    const char *summary;
    int micro; /* 1: run by `proxkey bench` with no suite named */
} pk_bench_suite_t;

/* `proxkey bench [SUITE...] [--json] [--rounds N] [--round-ms N] [--list]`;
 * argv[0] is the subcommand's own name. Returns 0, 1 (a suite failed) or 2
 * (usage error). */
int pk_bench_main(int argc, char **argv);

/* Where pk_bench_report() also writes one JSON object per line; NULL (the
 * default) for none. */
void pk_bench_set_json(FILE *f);

/*
 * Like pk_bench_run() for two functions measured in alternating rounds
 * (a, b, a, b, ...), so that a noisy neighbour on the shared machine hits
 * both alike and their ratio stays meaningful.
 */
int pk_bench_run_pair(pk_bench_fn fa, void *ca, pk_bench_fn fb, void *cb, unsigned rounds,
                      unsigned round_ms, pk_bench_result_t *ra, pk_bench_result_t *rb);

/* ---- suites ---- */
int pk_bench_suite_kdf(const pk_bench_opts_t *o);    /* bench_crypto.c */
int pk_bench_suite_aead(const pk_bench_opts_t *o);   /* bench_crypto.c */
int pk_bench_suite_record(const pk_bench_opts_t *o); /* bench_record.c */
int pk_bench_suite_link(const pk_bench_opts_t *o);   /* bench_link.c */

#endif
