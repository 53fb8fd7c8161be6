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

void pk_cli_list(const pk_cmd_t *table)
{
    for (const pk_cmd_t *c = table; c->name; c++)
        printf("  %-10s %s\n", c->name, c->summary);
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
