#include "device_util.h"

#include <stdarg.h>

#include "cli.h"

int pk_dcli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "proxkey device %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int pk_dcli_usage(const char *cmd, const char *msg)
{
    char what[64];
    snprintf(what, sizeof what, "device %s", cmd);
    return pk_cli_usage_error(what, "%s (try 'proxkey device %s --help')", msg, cmd);
}

int pk_dcli_want_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (pk_cli_is_help(argv[i]))
            return 1;
    return 0;
}

void pk_dcli_print_id(FILE *f, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fputc(b[i] > 0x20 && b[i] < 0x7f ? b[i] : '?', f);
}
