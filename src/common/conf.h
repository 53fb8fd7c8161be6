/*
 * Configuration files for the daemons: one `key = value` per line, `#`
 * comments, blank lines ignored, surrounding whitespace trimmed, values may
 * be "double-quoted". Every error names the file and line:
 *
 *   kms.conf:7: unknown key 'listne' (known: listen, db, kek, ca, cert, key, log-level)
 *
 * Each key may appear once. Command-line flags use the same names
 * (`--listen ADDR` is `listen = ADDR`), so a daemon fills one pk_conf_t from
 * the file and then from argv, the command line winning.
 */
#ifndef PK_SHELL_CONF_H
#define PK_SHELL_CONF_H

#include <stddef.h>

#define PK_CONF_MAX     32
#define PK_CONF_VAL_MAX 512

typedef struct pk_conf_key {
    const char *name; /* e.g. "listen" */
    const char *help; /* one line for --help, e.g. "ADDR:PORT to serve nodes on" */
    const char *dflt; /* default value or NULL (unset) */
    int is_flag;      /* 1: a boolean switch with no value (--foreground) */
} pk_conf_key_t;

typedef struct pk_conf {
    const pk_conf_key_t *keys;
    size_t n;
    char val[PK_CONF_MAX][PK_CONF_VAL_MAX];
    unsigned char set[PK_CONF_MAX]; /* 0 unset, 1 default, 2 file, 3 command line */
    char err[600];                  /* the last error, one line */
} pk_conf_t;

/* Sets up conf with keys (n <= PK_CONF_MAX) and their defaults. */
void pk_conf_init(pk_conf_t *c, const pk_conf_key_t *keys, size_t n);

/* Reads a file; 0 on success, -1 with c->err set. */
int pk_conf_load(pk_conf_t *c, const char *path);

/*
 * Parses argv[1..argc) for --name VALUE, --name=VALUE and --flag (and
 * --config FILE, loaded at once). Non-option arguments are collected into
 * pos (at most max_pos; their count in *npos). Returns 0, or -1 with c->err
 * set (unknown option, missing value, too many arguments).
 */
int pk_conf_args(pk_conf_t *c, int argc, char **argv, char **pos, int max_pos, int *npos);

/* The value of name, or NULL when unset. Aborts on a name not in keys (a bug). */
const char *pk_conf_get(const pk_conf_t *c, const char *name);
/* 1 when a flag is set. */
int pk_conf_flag(const pk_conf_t *c, const char *name);

/* Prints the options table for --help. */
void pk_conf_help(const pk_conf_t *c);

#endif
