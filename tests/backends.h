/*
 * The store backends a test suite runs on: memory, sqlite, and pg when
 * PK_TEST_PG names a PostgreSQL database (scripts/pg-harness.sh sets it).
 *
 *   test_x [--require-pg] [memory|sqlite|pg ...]
 *
 * With no backend named: memory and sqlite, and pg when PK_TEST_PG is set.
 * --require-pg fails (exit 1) when PK_TEST_PG is not set, so a test meant
 * for PostgreSQL cannot pass without it.
 */
#ifndef PK_TESTS_BACKENDS_H
#define PK_TESTS_BACKENDS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* *pg_uri: PK_TEST_PG or NULL. Returns 0 and runs suite(backend) for each
 * backend, or the exit status of a usage (2) or setup (1) error. */
static inline int pk_tb_run(int argc, char **argv, const char **pg_uri,
                            void (*suite)(const char *backend))
{
    const char *which[8];
    int n = 0, require_pg = 0;
    *pg_uri = getenv("PK_TEST_PG");
    if (*pg_uri && !**pg_uri)
        *pg_uri = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--require-pg") == 0)
            require_pg = 1;
        else if (n < 8 && (strcmp(argv[i], "memory") == 0 || strcmp(argv[i], "sqlite") == 0 ||
                           strcmp(argv[i], "pg") == 0))
            which[n++] = argv[i];
        else {
            fprintf(stderr, "usage: %s [--require-pg] [memory|sqlite|pg ...]\n", argv[0]);
            return 2;
        }
    }
    if (require_pg && !*pg_uri) {
        fprintf(stderr, "PK_TEST_PG is not set: no PostgreSQL to test against\n");
        return 1;
    }
    if (n == 0) {
        which[n++] = "memory";
        which[n++] = "sqlite";
        if (*pg_uri)
            which[n++] = "pg";
        else
            fprintf(stderr, "(PK_TEST_PG not set: PostgreSQL backend not tested here)\n");
    }
    for (int i = 0; i < n; i++)
        if (strcmp(which[i], "pg") == 0 && !*pg_uri) {
            fprintf(stderr, "pg requested but PK_TEST_PG is not set\n");
            return 1;
        }
    for (int i = 0; i < n; i++)
        suite(which[i]);
    return 0;
}

#endif
