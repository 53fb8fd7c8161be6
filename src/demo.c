/*
 * proxkey demo: runs the system on loopback and prints a readable trace.
 * `proxkey demo` runs every scenario; `proxkey demo NAME` runs one.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static int demo_selftest(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return pk_selftest_run(1) == 0 ? 0 : 1;
}

static const pk_cmd_t scenarios[] = {
    {"selftest", demo_selftest, "the core self-checks: KDF, AEAD, signatures, records, storage"},
    PK_DEMOS{NULL, NULL, NULL},
};

int pk_cmd_demo(int argc, char **argv)
{
    if (argc > 1 && pk_cli_is_help(argv[1])) {
        printf("usage: proxkey demo [SCENARIO]\n\n"
               "Runs proxkey on loopback in a temporary directory and prints who sends what to\n"
               "whom. Exits non-zero if anything fails. With no scenario, runs them all.\n\n"
               "scenarios:\n");
        pk_cli_list(scenarios);
        return 0;
    }
    if (argc > 2)
        return pk_cli_usage_error("demo", "at most one scenario (try 'proxkey demo --help')");
    if (argc == 2) {
        const pk_cmd_t *s = pk_cli_find(scenarios, "proxkey demo", argv[1]);
        return s ? s->fn(argc - 1, argv + 1) : 2;
    }
    int failed = 0;
    for (const pk_cmd_t *s = scenarios; s->name; s++) {
        printf("\n=== demo: %s — %s\n", s->name, s->summary);
        char *sargv[] = {(char *)s->name, NULL};
        int rc = s->fn(1, sargv);
        printf("=== demo: %s %s\n", s->name, rc == 0 ? "ok" : "FAILED");
        failed |= rc != 0;
    }
    printf("\nproxkey demo: %s\n", failed ? "FAILED" : "all scenarios ok");
    return failed;
}
