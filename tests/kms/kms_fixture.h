/*
 * What the kms core's suites (test_kms, test_kms_group) share: the backend
 * under test and its databases, a per-run name tag, the KEK and the clock.
 * Header-only: each suite is one translation unit.
 */
#ifndef PK_TESTS_KMS_FIXTURE_H
#define PK_TESTS_KMS_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    const char *name; /* "memory", "sqlite", "pg" */
    int persistent;   /* data survives close/reopen */
    char dir[256];    /* sqlite: this backend's temporary directory */
    char uri[600];    /* the current database */
    char path[512];   /* sqlite: its file */
    char tag[24];     /* unique to this run: device names in a shared pg */
    unsigned ndb;
} B;

static const char *pg_uri;
static uint8_t kek[32];
static uint64_t now = 1700000000000ull;

/* "<tag>-<base>" (static rotating buffers). */
static const char *nm(const char *base)
{
    static char buf[16][80];
    static unsigned i;
    char *b = buf[i++ % 16];
    snprintf(b, 80, "%s-%s", B.tag, base);
    return b;
}

/* Points B.uri at a fresh database (sqlite: a new file; memory: a new store
 * anyway; pg: the one database, names keep runs apart). */
static void fresh_db(void)
{
    if (strcmp(B.name, "sqlite") == 0) {
        snprintf(B.path, sizeof B.path, "%s/k%u.db", B.dir, B.ndb++);
        snprintf(B.uri, sizeof B.uri, "sqlite:%s", B.path);
    } else if (strcmp(B.name, "pg") == 0) {
        snprintf(B.uri, sizeof B.uri, "%s", pg_uri);
    } else {
        snprintf(B.uri, sizeof B.uri, "memory:");
    }
}

/* Sets B up for backend name; tag_prefix tells suites apart in one pg. */
static void backend_begin(const char *name, char tag_prefix)
{
    memset(&B, 0, sizeof B);
    B.name = name;
    B.persistent = strcmp(name, "memory") != 0;
    snprintf(B.tag, sizeof B.tag, "%c%lx%x", tag_prefix, (unsigned long)time(NULL) & 0xffffff,
             (unsigned)getpid() & 0xffff);
    if (strcmp(name, "sqlite") == 0) {
        snprintf(B.dir, sizeof B.dir, "/tmp/pk-kms-test-XXXXXX");
        if (!mkdtemp(B.dir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    fprintf(stderr, "== backend %s\n", name);
}

/* Removes the backend's temporary directory. */
static void backend_end(void)
{
    if (B.dir[0]) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", B.dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", B.dir);
    }
}

#endif
