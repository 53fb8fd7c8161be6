/*
 * libFuzzer target for the daemons' configuration reader (src/common/conf.h).
 *
 * Input: FILE [0xFF ARGS]. FILE is written to a temporary file and read with
 * pk_conf_load; ARGS is split at NUL bytes into at most MAX_ARGS arguments
 * for pk_conf_args (any argument starting with "--config" becomes
 * "--config=<the temporary file>", so no other file is ever opened).
 *
 * Invariants: results are 0 or -1, -1 with a non-empty error (one line for
 * a file); every
 * value is NUL-terminated within PK_CONF_VAL_MAX and holds no newline; set
 * levels are 0..3 and a value set from a file or the command line (level 2
 * or 3) was not set at a default-only key unless given; a flag's value is
 * "1" or ""; loading the same file into a fresh conf twice gives the same
 * state (no hidden state); and a file read after the command line changes
 * no value that the command line set.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes the seed inputs into dir.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"

#include "fuzz_assert.h"

#define MAX_ARGS 16
#define MAX_POS  3

static const pk_conf_key_t keys[] = {
    {"listen", "ADDR:PORT", "127.0.0.1:4500", 0},
    {"db", "store", NULL, 0},
    {"kek", "key file", NULL, 0},
    {"log-level", "level", "info", 0},
    {"foreground", "stay in the foreground", NULL, 1},
    {"verbose", "more output", "", 1},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static char tmpdir[64], path[128];

static void cleanup(void)
{
    if (path[0])
        unlink(path);
    if (tmpdir[0])
        rmdir(tmpdir);
}

static void setup(void)
{
    const char *t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"; /* memory if we can */
    snprintf(tmpdir, sizeof tmpdir, "%s/pkfuzzconf.XXXXXX", t);
    if (!mkdtemp(tmpdir))
        abort();
    snprintf(path, sizeof path, "%s/f.conf", tmpdir);
    atexit(cleanup);
}

#define SEED(x)                                                                                    \
    {                                                                                              \
        x, sizeof x - 1                                                                            \
    }
static const struct {
    const char *b;
    size_t n;
} seeds[] = {
    SEED("listen = 127.0.0.1:9000\n# comment\n\ndb = \"sqlite:/tmp/x.db\"\nforeground = true\n"),
    SEED("  log-level=debug  \nverbose = false\n\xff--listen\0[::1]:1\0pos\0--foreground"),
    SEED("kek = /k\n\xff--config\0--db=memory:\0--\0a\0b"),
    SEED("listen = a\nlisten = b\n"),
    SEED("nokey = 1\n"),
    SEED("\xff--verbose=1\0-x\0--log-level"),
    SEED("db = \"\"\nkek = \"\n\xff--db\0x\0--config=whatever"),
};

static void dump_seeds(const char *dir)
{
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/seed-%02zu", dir, i);
        FILE *f = fopen(p, "wb");
        if (!f)
            continue;
        fwrite(seeds[i].b, 1, seeds[i].n, f);
        fclose(f);
    }
}

/* oneline: the error names only the file (pk_conf_args echoes the user's own
 * arguments, newlines included). */
static void check(const pk_conf_t *c, int rc, int oneline)
{
    ASSERT(rc == 0 || rc == -1);
    ASSERT(memchr(c->err, 0, sizeof c->err) != NULL);
    if (rc != 0)
        ASSERT(c->err[0] != '\0' && (!oneline || strchr(c->err, '\n') == NULL));
    for (size_t k = 0; k < NKEYS; k++) {
        ASSERT(c->set[k] <= 3);
        ASSERT(memchr(c->val[k], 0, PK_CONF_VAL_MAX) != NULL); /* < PK_CONF_VAL_MAX */
        if (c->set[k] == 0) {
            ASSERT(keys[k].dflt == NULL);
            ASSERT(pk_conf_get(c, keys[k].name) == NULL);
            continue;
        }
        ASSERT(pk_conf_get(c, keys[k].name) == c->val[k]);
        ASSERT(strlen(c->val[k]) < PK_CONF_VAL_MAX);
        if (c->set[k] == 1)
            ASSERT(keys[k].dflt && strcmp(c->val[k], keys[k].dflt) == 0);
        if (c->set[k] == 2)
            ASSERT(strchr(c->val[k], '\n') == NULL);
        if (keys[k].is_flag && c->set[k] >= 2)
            ASSERT(strcmp(c->val[k], "1") == 0 || strcmp(c->val[k], "") == 0);
    }
    for (size_t k = NKEYS; k < PK_CONF_MAX; k++)
        ASSERT(c->set[k] == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pk_conf_t c1, c2, c3;
    static char argbuf[4096 + MAX_ARGS + 1], cfgarg[160];
    char *argv[MAX_ARGS + 1], *pos[MAX_POS];
    int argc = 1, npos = -1;

    if (!path[0]) {
        setup();
        const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");
        if (dir)
            dump_seeds(dir);
    }
    if (size > 8192)
        return 0;
    const uint8_t *sep = memchr(data, 0xFF, size);
    size_t flen = sep ? (size_t)(sep - data) : size;

    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT(fwrite(data, 1, flen, f) == flen || flen == 0);
    ASSERT(fclose(f) == 0);

    /* 1. the file alone, twice: the same result and state */
    pk_conf_init(&c1, keys, NKEYS);
    int rc1 = pk_conf_load(&c1, path);
    check(&c1, rc1, 1);
    pk_conf_init(&c3, keys, NKEYS);
    ASSERT(pk_conf_load(&c3, path) == rc1);
    ASSERT(memcmp(c1.val, c3.val, sizeof c1.val) == 0 &&
           memcmp(c1.set, c3.set, sizeof c1.set) == 0);
    ASSERT(strcmp(c1.err, c3.err) == 0);
    if (rc1 == 0)
        for (size_t k = 0; k < NKEYS; k++)
            ASSERT(c1.set[k] <= 2);

    /* 2. the arguments, then the file again */
    argv[0] = (char *)"fuzz";
    if (sep) {
        size_t alen = size - flen - 1;
        if (alen > 4096)
            alen = 4096;
        memcpy(argbuf, sep + 1, alen);
        argbuf[alen] = '\0';
        char *p = argbuf, *end = argbuf + alen;
        while (argc < MAX_ARGS && p <= end) {
            argv[argc++] = strncmp(p, "--config", 8) == 0 ? cfgarg : p;
            p += strlen(p) + 1;
        }
        snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
    }
    argv[argc] = NULL;
    pk_conf_init(&c2, keys, NKEYS);
    int rc2 = pk_conf_args(&c2, argc, argv, pos, MAX_POS, &npos);
    check(&c2, rc2, 0);
    if (rc2 == 0) {
        ASSERT(npos >= 0 && npos <= MAX_POS);
        for (int i = 0; i < npos; i++) {
            ASSERT((pos[i] >= argbuf && pos[i] < argbuf + sizeof argbuf) || pos[i] == cfgarg);
            ASSERT(pos[i][0] != '-' || pos[i][1] == '\0' || pos[i] == argv[argc - npos + i]);
        }
        pk_conf_t *snap = &c3;
        *snap = c2;
        int rc = pk_conf_load(&c2, path);
        check(&c2, rc, 0);
        for (size_t k = 0; k < NKEYS; k++)
            if (snap->set[k] == 3)
                ASSERT(c2.set[k] == 3 && strcmp(c2.val[k], snap->val[k]) == 0);
    }
    return 0;
}
