/* proxkey: one executable, a subcommand per role. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "core/crypto.h"

#include <openssl/crypto.h>

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const pk_cmd_t commands[] = {
    PK_COMMANDS /* the role subcommands, from commands.h */
    {"demo", pk_cmd_demo, "run the whole system on loopback and show what happens"},
    {"bench", pk_cmd_bench, "run the benchmarks (proxkey bench --help)"},
    {"version", cmd_version, "print the version"},
    {"help", cmd_help, "this help"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: proxkey <command> [options]   (proxkey <command> --help for each)\n\n"
               "proxkey hands devices the keys they need to talk to each other securely.\n\n"
               "commands:\n");
    if (f == stdout)
        pk_cli_list(commands);
}

static int cmd_version(int argc, char **argv)
{
    if (argc > 1 && pk_cli_is_help(argv[1])) {
        printf(
            "usage: proxkey version\n\nPrints the version of proxkey, of the OpenSSL it runs on\n"
            "and the crypto backend in use (PROXKEY_CRYPTO=evp or provider).\n");
        return 0;
    }
    if (argc > 1)
        return pk_cli_usage_error("version", "takes no arguments");
    printf("proxkey %s\n", PROXKEY_VERSION);
    printf("%s, crypto backend %s\n", OpenSSL_version(OPENSSL_VERSION), pk_crypto_backend());
    return 0;
}

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    usage(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        fprintf(stderr, "proxkey: no command given (try 'proxkey --help')\n");
        return 2;
    }
    /* PROXKEY_CRYPTO=evp: every primitive through EVP (lib/core/crypto.c) */
    const char *be = getenv("PROXKEY_CRYPTO");
    if (be && strcmp(be, "evp") == 0)
        (void)pk_crypto_use_evp();
    else if (be && *be && strcmp(be, "provider") != 0)
        return pk_cli_usage_error("PROXKEY_CRYPTO", "must be 'evp' or 'provider', not '%s'", be);
    if (pk_cli_is_help(argv[1]))
        return cmd_help(argc - 1, argv + 1);
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(1, argv + 1);
    if (argv[1][0] == '-')
        return pk_cli_usage_error("proxkey", "unknown option '%s' (try 'proxkey --help')", argv[1]);
    const pk_cmd_t *c = pk_cli_find(commands, "proxkey", argv[1]);
    if (!c)
        return 2;
    if (pk_crypto_init() != 0) {
        fprintf(stderr, "proxkey: OpenSSL 3 algorithms unavailable\n");
        return 1;
    }
    return c->fn(argc - 1, argv + 1);
}
