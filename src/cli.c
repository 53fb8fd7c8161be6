#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const pk_cmd_t *pk_cli_find(const pk_cmd_t *table, const char *prog, const char *name)
{
    for (const pk_cmd_t *c = table; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    fprintf(stderr, "%s: unknown command '%s' (try '%s --help')\n", prog, name, prog);
    return NULL;
}

static void list_to(FILE *f, const pk_cmd_t *table)
{
    for (const pk_cmd_t *c = table; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
}

void pk_cli_list(const pk_cmd_t *table)
{
    list_to(stdout, table);
}

static void group_usage(FILE *f, const pk_cli_group_t *g)
{
    fprintf(f, "%s\n\n", g->usage);
    if (f == stdout && g->about)
        fprintf(f, "%s\n\n", g->about);
    fprintf(f, "commands:\n");
    list_to(f, g->cmds);
}

const pk_cmd_t *pk_cli_select(const pk_cli_group_t *g, int argc, char **argv, int *rc)
{
    *rc = 2;
    if (argc < 2) {
        group_usage(stderr, g);
        fprintf(stderr, "%s: no command given (try '%s --help')\n", g->prog, g->prog);
        return NULL;
    }
    if (pk_cli_is_help(argv[1])) {
        group_usage(stdout, g);
        *rc = 0;
        return NULL;
    }
    if (argv[1][0] == '-') {
        fprintf(stderr, "%s: unknown option '%s' (try '%s --help')\n", g->prog, argv[1], g->prog);
        return NULL;
    }
    return pk_cli_find(g->cmds, g->prog, argv[1]);
}

int pk_cli_is_help(const char *arg)
{
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 || strcmp(arg, "help") == 0;
}

int pk_cli_usage_error(const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "proxkey: %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

int pk_cli_parse_u64(const char *s, unsigned long long min, unsigned long long max,
                     unsigned long long *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int pk_cli_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    unsigned long long v;
    if (pk_cli_parse_u64(s, lo, hi, &v) != 0)
        return -1;
    *out = (unsigned)v;
    return 0;
}
