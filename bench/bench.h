/*
 * Micro-benchmark helpers: run a function in rounds, report the median rate.
 * The machine is shared, so every figure is printed beside a baseline
 * measured in the same run, as a ratio.
 */
#ifndef PK_BENCH_BENCH_H
#define PK_BENCH_BENCH_H

#include <stdint.h>
#include <stdio.h>

/* One unit of work, called iters times per round. Returns 0 or fails the bench. */
typedef int (*pk_bench_fn)(void *ctx, uint64_t iters);

typedef struct pk_bench_result {
    double median_per_s; /* operations per second, median over rounds */
    double min_per_s, max_per_s;
    unsigned rounds;
} pk_bench_result_t;

/* Calibrates iters so a round lasts ~round_ms, then runs `rounds` rounds. */
int pk_bench_run(pk_bench_fn fn, void *ctx, unsigned rounds, unsigned round_ms,
                 pk_bench_result_t *res);

/* Prints one line: name, median ops/s, baseline name and rate, ratio; and
 * (when json is non-NULL) appends a JSON object to it. */
void pk_bench_report(const char *name, const pk_bench_result_t *r, const char *base_name,
                     const pk_bench_result_t *base, double target_ratio);

/* Monotonic nanoseconds. */
uint64_t pk_bench_now_ns(void);

#endif
