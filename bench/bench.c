/*
 * Micro-benchmark runner: calibration, rounds, median (bench.h).
 */
#include "bench.h"

#include <stdlib.h>
#include <time.h>

#include "bench_suites.h"

#define PK_BENCH_MAX_ROUNDS 101
/* Calibration stops doubling once a run lasts this fraction of a round. */
#define PK_BENCH_CAL_DIV   8
#define PK_BENCH_CAL_STEPS 48 /* 2^48 iterations: far beyond any real round */

static FILE *pk_bench_json;

void pk_bench_set_json(FILE *f)
{
    pk_bench_json = f;
}

uint64_t pk_bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times one call of fn(ctx, iters); returns ns (at least 1) or 0 on failure. */
static uint64_t time_once(pk_bench_fn fn, void *ctx, uint64_t iters)
{
    uint64_t t0 = pk_bench_now_ns();
    if (fn(ctx, iters) != 0)
        return 0;
    uint64_t dt = pk_bench_now_ns() - t0;
    return dt ? dt : 1;
}

/* Finds iters so that one call lasts about round_ms; 0 on failure. */
static uint64_t calibrate(pk_bench_fn fn, void *ctx, unsigned round_ms)
{
    uint64_t target = (uint64_t)round_ms * 1000000u, iters = 1, dt = 0;

    for (int step = 0; step < PK_BENCH_CAL_STEPS; step++) {
        dt = time_once(fn, ctx, iters);
        if (!dt)
            return 0;
        if (dt >= target / PK_BENCH_CAL_DIV)
            break;
        iters *= 2;
    }
    double scaled = (double)iters * (double)target / (double)dt;
    return scaled < 1.0 ? 1 : (uint64_t)scaled;
}

static void summarise(double *rates, unsigned n, pk_bench_result_t *res)
{
    qsort(rates, n, sizeof rates[0], cmp_double);
    res->rounds = n;
    res->min_per_s = rates[0];
    res->max_per_s = rates[n - 1];
    res->median_per_s = n % 2 ? rates[n / 2] : (rates[n / 2 - 1] + rates[n / 2]) / 2;
}

static unsigned clamp_rounds(unsigned rounds)
{
    if (rounds < 1)
        return 1;
    return rounds > PK_BENCH_MAX_ROUNDS ? PK_BENCH_MAX_ROUNDS : rounds;
}

int pk_bench_run(pk_bench_fn fn, void *ctx, unsigned rounds, unsigned round_ms,
                 pk_bench_result_t *res)
{
    double rates[PK_BENCH_MAX_ROUNDS];
    uint64_t iters;

    if (!fn || !res)
        return -1;
    rounds = clamp_rounds(rounds);
    iters = calibrate(fn, ctx, round_ms ? round_ms : 1);
    if (!iters)
        return -1;
    for (unsigned r = 0; r < rounds; r++) {
        uint64_t dt = time_once(fn, ctx, iters);
        if (!dt)
            return -1;
        rates[r] = (double)iters * 1e9 / (double)dt;
    }
    summarise(rates, rounds, res);
    return 0;
}

int pk_bench_run_pair(pk_bench_fn fa, void *ca, pk_bench_fn fb, void *cb, unsigned rounds,
                      unsigned round_ms, pk_bench_result_t *ra, pk_bench_result_t *rb)
{
    double rates_a[PK_BENCH_MAX_ROUNDS], rates_b[PK_BENCH_MAX_ROUNDS];
    uint64_t ia, ib;

    if (!fa || !fb || !ra || !rb)
        return -1;
    rounds = clamp_rounds(rounds);
    if (!round_ms)
        round_ms = 1;
    ia = calibrate(fa, ca, round_ms);
    ib = calibrate(fb, cb, round_ms);
    if (!ia || !ib)
        return -1;
    for (unsigned r = 0; r < rounds; r++) {
        uint64_t da = time_once(fa, ca, ia);
        uint64_t db = time_once(fb, cb, ib);
        if (!da || !db)
            return -1;
        rates_a[r] = (double)ia * 1e9 / (double)da;
        rates_b[r] = (double)ib * 1e9 / (double)db;
    }
    summarise(rates_a, rounds, ra);
    summarise(rates_b, rounds, rb);
    return 0;
}

/* Writes s as a JSON string (names are ours, but escape anyway). */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void pk_bench_report(const char *name, const pk_bench_result_t *r, const char *base_name,
                     const pk_bench_result_t *base, double target_ratio)
{
    int has_base = base_name && base && base->median_per_s > 0;
    double ratio = has_base ? r->median_per_s / base->median_per_s : 0;

    printf("%-28s %14.0f ops/s", name, r->median_per_s);
    if (has_base) {
        printf("  [baseline: %s %.0f ops/s, ratio %.2f", base_name, base->median_per_s, ratio);
        if (target_ratio > 0)
            printf(", target >= %.2f%s", target_ratio, ratio >= target_ratio ? "" : " MISSED");
        printf("]");
    }
    printf("\n");
    fflush(stdout);

    if (!pk_bench_json)
        return;
    FILE *f = pk_bench_json;
    fprintf(f, "{\"name\":");
    json_str(f, name);
    fprintf(f, ",\"median_per_s\":%.1f,\"min_per_s\":%.1f,\"max_per_s\":%.1f,\"rounds\":%u",
            r->median_per_s, r->min_per_s, r->max_per_s, r->rounds);
    if (has_base) {
        fprintf(f, ",\"baseline\":");
        json_str(f, base_name);
        fprintf(f, ",\"baseline_per_s\":%.1f,\"ratio\":%.4f", base->median_per_s, ratio);
        if (target_ratio > 0)
            fprintf(f, ",\"target\":%.2f,\"met\":%s", target_ratio,
                    ratio >= target_ratio ? "true" : "false");
    }
    fprintf(f, "}\n");
    fflush(f);
}
