/*
 * `proxkey bench`: the micro-benchmark suites of bench/ (kdf, aead, record)
 * and the system benchmarks that run real roles (gts, sim, ...), each with
 * its own options (`proxkey bench gts --help`).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

#ifdef PK_HAVE_GTS
int pk_bench_suite_gts(int argc, char **argv);
#endif
#ifdef PK_HAVE_SIM
int pk_bench_suite_sim(int argc, char **argv);
#endif
#if defined(PK_HAVE_KMS) && defined(PK_HAVE_NODE)
int pk_bench_suite_reg(int argc, char **argv);
#endif
#ifdef PK_HAVE_KMS
int pk_bench_suite_alloc(int argc, char **argv);
#endif

static const pk_cmd_t systems[] = {
#ifdef PK_HAVE_GTS
    {"gts", pk_bench_suite_gts, "trigger polls/s on loopback vs a bare batched UDP echo"},
#endif
#ifdef PK_HAVE_SIM
    {"sim", pk_bench_suite_sim, "simulator: 100,000 devices through registration and a link"},
#endif
#if defined(PK_HAVE_KMS) && defined(PK_HAVE_NODE)
    {"reg", pk_bench_suite_reg, "registrations/s through real kms and node daemons on loopback"},
#endif
#ifdef PK_HAVE_KMS
    {"alloc", pk_bench_suite_alloc,
     "option-2 allocations/s through kms serve, group commit vs each committed alone"},
#endif
    {NULL, NULL, NULL},
};

int pk_cmd_bench(int argc, char **argv)
{
    if (argc > 1) {
        for (const pk_cmd_t *s = systems; s->name; s++)
            if (strcmp(argv[1], s->name) == 0)
                return s->fn(argc - 1, argv + 1);
    }
    int rc = pk_bench_main(argc, argv);
    if (argc > 1 && pk_cli_is_help(argv[1]) && systems[0].name) {
        printf("\nsystem benchmarks (proxkey bench NAME --help):\n");
        pk_cli_list(systems);
    }
    return rc;
}
