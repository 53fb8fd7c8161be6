/*
 * `proxkey sim` and `proxkey bench sim`: the command-line face of the
 * deterministic simulator (lib/proto/sim). See docs/simulator.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "proto/sim/scen.h"
#include "sim/sim_cmd.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: proxkey sim [options]\n"
               "\n"
               "Runs the protocol cores (the same code the daemons run) over a virtual\n"
               "network and clock with seeded faults, then checks invariants. Exits 1\n"
               "and prints the seed when an invariant breaks; `--seed N` replays a run\n"
               "exactly (same trace, byte for byte).\n"
               "\n"
               "options:\n"
               "  --scenario NAME  trigger | mk | reg | all (default all)\n"
               "  --seed N         seed (default 1)\n"
               "  --devices N      devices (reg, trigger) or clients (mk); default per scenario\n"
               "  --loss P         loss probability per copy (default 0.1)\n"
               "  --dup P          duplication probability (default 0.05)\n"
               "  --reorder P      probability of an extra delay of up to 2 s (default 0.1)\n"
               "  --crash-rate P   per virtual second: each server crashes with P, each\n"
               "                   device with P/100 (mk clients P/10) (default 0.01)\n"
               "  --pool PCT       reg: percent of pairs on option 2 (default 50)\n"
               "  --crowd N        reg: the option-1 devices among the first N form one group\n"
               "                   (more than 33: paged key sets; default 0, max 2048)\n"
               "  --trace FILE     write the full trace to FILE\n"
               "  --json           print the summary as one JSON object per scenario\n"
               "  --progress       progress bar on stderr (default: when stderr is a TTY)\n"
               "  --no-progress    no progress bar\n"
               "  -h, --help       this text\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_p(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0 && v <= 1))
        return -1;
    *out = v;
    return 0;
}

static int run_one(const char *name, const pk_sim_opts_t *o, int json)
{
    pk_sim_result_t r;
    int rc = pk_sim_scenario_run(name, o, stdout, json, &r);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey sim: scenario %s: %s\n", name, pk_strerror(rc));
        return 2;
    }
    if (r.failures) {
        fprintf(stderr,
                "proxkey sim: scenario %s: INVARIANT BROKEN (%" PRIu64 " failures), first: %s\n"
                "  replay with: proxkey sim --scenario %s --seed %" PRIu64
                " --devices %u --loss %g --dup %g --reorder %g --crash-rate %g --pool %u"
                " --crowd %u\n",
                name, r.failures, r.first_failure, name, o->seed, o->devices, o->loss, o->dup,
                o->reorder, o->crash_rate, o->pool_pct, o->crowd);
        return 1;
    }
    return 0;
}

int pk_cmd_sim(int argc, char **argv)
{
    pk_sim_opts_t o;
    const char *scen = "all", *trace = NULL;
    int json = 0, progress = -1;
    pk_sim_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t u;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--progress") == 0) {
            progress = 1;
        } else if (strcmp(a, "--no-progress") == 0) {
            progress = 0;
        } else if (!v) {
            fprintf(stderr, "proxkey sim: %s needs a value (or is unknown)\n", a);
            return 2;
        } else if (strcmp(a, "--scenario") == 0) {
            scen = v, i++;
        } else if (strcmp(a, "--trace") == 0) {
            trace = v, i++;
        } else if (strcmp(a, "--seed") == 0 && parse_u64(v, &u) == 0) {
            o.seed = u, i++;
        } else if (strcmp(a, "--devices") == 0 && parse_u64(v, &u) == 0 && u <= 10000000) {
            o.devices = (uint32_t)u, i++;
        } else if (strcmp(a, "--pool") == 0 && parse_u64(v, &u) == 0 && u <= 100) {
            o.pool_pct = (uint32_t)u, i++;
        } else if (strcmp(a, "--crowd") == 0 && parse_u64(v, &u) == 0 && u <= 2048) {
            o.crowd = (uint32_t)u, i++;
        } else if (strcmp(a, "--loss") == 0 && parse_p(v, &o.loss) == 0) {
            i++;
        } else if (strcmp(a, "--dup") == 0 && parse_p(v, &o.dup) == 0) {
            i++;
        } else if (strcmp(a, "--reorder") == 0 && parse_p(v, &o.reorder) == 0) {
            i++;
        } else if (strcmp(a, "--crash-rate") == 0 && parse_p(v, &o.crash_rate) == 0) {
            i++;
        } else {
            fprintf(stderr, "proxkey sim: bad option or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    o.progress = progress >= 0 ? progress : isatty(2);
    FILE *tf = NULL;
    if (trace) {
        tf = fopen(trace, "w");
        if (!tf) {
            fprintf(stderr, "proxkey sim: cannot open %s: %s\n", trace, strerror(errno));
            return 2;
        }
        o.trace = tf;
    }
    int worst = 0;
    if (strcmp(scen, "all") == 0) {
        for (const char *const *n = pk_sim_scenarios; *n; n++) {
            int rc = run_one(*n, &o, json);
            worst = rc > worst ? rc : worst;
        }
    } else {
        int known = 0;
        for (const char *const *n = pk_sim_scenarios; *n; n++)
            known |= strcmp(*n, scen) == 0;
        if (!known) {
            fprintf(stderr, "proxkey sim: unknown scenario %s\n", scen);
            worst = 2;
        } else {
            worst = run_one(scen, &o, json);
        }
    }
    if (tf && fclose(tf) != 0) {
        fprintf(stderr, "proxkey sim: writing %s failed\n", trace);
        worst = worst ? worst : 2;
    }
    return worst;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int pk_bench_suite_sim(int argc, char **argv)
{
    pk_sim_opts_t o;
    const char *scen = "reg";
    int json = 0;
    pk_sim_opts_default(&o);
    /* The target: 100,000 devices through registration and one direct link
     * each. Option 1 by default (--pool 0): option 2 at this scale is bound
     * by the kms's pool windows (docs/simulator.md, findings). */
    o.devices = 100000;
    o.pool_pct = 0;
    o.progress = isatty(2);
    for (int i = 1; i < argc; i++) {
        uint64_t u;
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--devices") == 0 && i + 1 < argc &&
                   parse_u64(argv[i + 1], &u) == 0 && u <= 10000000) {
            o.devices = (uint32_t)u;
            i++;
        } else if (strcmp(argv[i], "--pool") == 0 && i + 1 < argc &&
                   parse_u64(argv[i + 1], &u) == 0 && u <= 100) {
            o.pool_pct = (uint32_t)u;
            i++;
        } else if (strcmp(argv[i], "--scenario") == 0 && i + 1 < argc) {
            scen = argv[++i];
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc &&
                   parse_u64(argv[i + 1], &u) == 0) {
            o.seed = u;
            i++;
        } else {
            fprintf(stderr, "usage: proxkey bench sim [--devices N] [--scenario NAME] [--seed N] "
                            "[--json]\n");
            return 2;
        }
    }
    pk_sim_result_t r;
    double t0 = wall_s();
    int rc = pk_sim_scenario_run(scen, &o, json ? NULL : stdout, 0, &r);
    double dt = wall_s() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (rc != PK_OK) {
        fprintf(stderr, "proxkey bench sim: %s\n", pk_strerror(rc));
        return 1;
    }
    double mib = (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
    if (json)
        printf("{\"suite\":\"sim\",\"scenario\":\"%s\",\"devices\":%u,\"seed\":%" PRIu64
               ",\"pool_pct\":%u,\"wall_s\":%.3f,\"peak_rss_mib\":%.1f,\"events\":%" PRIu64
               ",\"events_per_s\":%.0f,\"failures\":%" PRIu64 "}\n",
               scen, o.devices, o.seed, o.pool_pct, dt, mib, r.events, (double)r.events / dt,
               r.failures);
    else
        printf("bench sim: scenario %s, %u devices%s: wall %.2f s, peak RSS %.1f MiB, %" PRIu64
               " events (%.0f/s), %" PRIu64 " invariant failures\n",
               scen, o.devices,
               strcmp(scen, "reg") ? "" : (o.pool_pct ? " (option 1 and 2)" : " (option 1)"), dt,
               mib, r.events, (double)r.events / dt, r.failures);
    return r.failures ? 1 : 0;
}
