/*
 * A tiny test harness: CHECK macros that count and report, and a runner that
 * prints "N passed, N failed" and exits non-zero on any failure.
 *
 *   static void test_x(void) { CHECK(1 + 1 == 2); CHECK_EQ_INT(f(), PK_OK); }
 *   int main(void) { RUN(test_x); return check_report(); }
 */
#ifndef PK_TESTS_CHECK_H
#define PK_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed_, check_failed_, check_cur_failed_;

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                  \
            check_cur_failed_ = 1;                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, a_, b_);                                                               \
            check_cur_failed_ = 1;                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK_MEM(a, b, n)                                                                         \
    do {                                                                                           \
        if (memcmp((a), (b), (n)) != 0) {                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: memory %s == %s (%zu bytes)\n", __FILE__,        \
                    __LINE__, #a, #b, (size_t)(n));                                                \
            check_cur_failed_ = 1;                                                                 \
        }                                                                                          \
    } while (0)

/* Runs one test function and records whether any CHECK in it failed. */
#define RUN(fn)                                                                                    \
    do {                                                                                           \
        check_cur_failed_ = 0;                                                                     \
        fn();                                                                                      \
        if (check_cur_failed_) {                                                                   \
            check_failed_++;                                                                       \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
        } else {                                                                                   \
            check_passed_++;                                                                       \
            fprintf(stderr, "ok   %s\n", #fn);                                                     \
        }                                                                                          \
    } while (0)

static inline int check_report(void)
{
    printf("%d passed, %d failed\n", check_passed_, check_failed_);
    return check_failed_ ? 1 : 0;
}

/* Hex helper for vectors: decodes exactly n bytes or aborts (test data bug). */
static inline void check_unhex(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != 2 * n) {
        fprintf(stderr, "bad test vector length: %s\n", hex);
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            abort();
        out[i] = (unsigned char)v;
    }
}

#endif
