/*
 * The proxkey command line: one executable, one subcommand per role.
 *
 * Every subcommand is `int fn(int argc, char **argv)` with argv[0] the
 * subcommand's own name; it returns the process exit status: 0 success,
 * 1 failure at run time, 2 usage error (a one-line message was printed).
 */
#ifndef PK_SRC_CLI_H
#define PK_SRC_CLI_H

#include <stddef.h>

typedef int (*pk_cmd_fn)(int argc, char **argv);

typedef struct pk_cmd {
    const char *name;
    pk_cmd_fn fn;
    const char *summary;
} pk_cmd_t;

/* Finds name in a NULL-terminated table; prints a one-line error if absent. */
const pk_cmd_t *pk_cli_find(const pk_cmd_t *table, const char *prog, const char *name);

/* Prints "usage" lines of a table (name + summary), aligned, to stdout. */
void pk_cli_list(const pk_cmd_t *table);

/* A group of subcommands (`proxkey device`, `proxkey gts device`, ...). */
typedef struct pk_cli_group {
    const char *prog;  /* "proxkey device" */
    const char *usage; /* "usage: proxkey device <command> --dir DIR [options]" */
    const char *about; /* what the group is for (one paragraph), or NULL */
    const pk_cmd_t *cmds;
} pk_cli_group_t;

/*
 * The front of every command group, so that all of them behave alike:
 *   -h/--help/help      usage, about and the commands on stdout; *rc = 0
 *   no command          usage and the commands on stderr, then
 *                       "PROG: no command given (try 'PROG --help')"; *rc = 2
 *   an option (-x)      "PROG: unknown option '-x' (try 'PROG --help')"; *rc = 2
 *   an unknown name     "PROG: unknown command 'x' (try 'PROG --help')"; *rc = 2
 * Returns the command to run with (argc - 1, argv + 1), or NULL with *rc.
 */
const pk_cmd_t *pk_cli_select(const pk_cli_group_t *g, int argc, char **argv, int *rc);

/* 1 when argv[i] is -h or --help. */
int pk_cli_is_help(const char *arg);

/* Prints "proxkey: <what>: <msg>" to stderr and returns 2 (usage error). */
int pk_cli_usage_error(const char *what, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parses an unsigned decimal in [min, max]; returns 0 on success. */
int pk_cli_parse_u64(const char *s, unsigned long long min, unsigned long long max,
                     unsigned long long *out);
/* pk_cli_parse_u64 into an unsigned int (lo <= hi <= UINT_MAX). */
int pk_cli_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out);

/* Subcommands implemented in src/. */
int pk_cmd_demo(int argc, char **argv);
int pk_selftest_run(int verbose);

#endif
