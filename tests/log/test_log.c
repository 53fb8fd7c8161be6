/* Logging: key=value lines, level filter, rate-limited drop counters. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "core/log.h"

static int count_lines(FILE *f, const char *needle)
{
    char line[2048];
    int n = 0;
    rewind(f);
    while (fgets(line, sizeof line, f))
        if (!needle || strstr(line, needle))
            n++;
    return n;
}

static void test_format_and_level(void)
{
    FILE *f = tmpfile();
    CHECK(f != NULL);
    pk_log_set_file(f);
    pk_log_set_role("kms");
    pk_log_set_level(PK_LOG_INFO);
    pk_info("device_added", "device=%s mode=%s", "dev-1", "pairs");
    pk_debug("hidden", "x=%d", 1);
    pk_log_set_level(PK_LOG_DEBUG);
    pk_debug("shown", "x=%d", 2);
    CHECK_EQ_INT(count_lines(f, NULL), 2);
    CHECK_EQ_INT(count_lines(f, "level=info role=kms event=device_added device=dev-1 mode=pairs"),
                 1);
    CHECK_EQ_INT(count_lines(f, "event=hidden"), 0);
    CHECK_EQ_INT(count_lines(f, "event=shown x=2"), 1);
    /* Every line starts with an ISO 8601 UTC timestamp. */
    char line[256];
    rewind(f);
    CHECK(fgets(line, sizeof line, f) != NULL);
    CHECK(strlen(line) > 24 && line[4] == '-' && line[10] == 'T' && line[23] == 'Z');
    pk_log_set_file(NULL);
    pk_log_set_role(NULL);
    pk_log_set_level(PK_LOG_INFO);
    fclose(f);
}

static void test_long_line_truncated(void)
{
    FILE *f = tmpfile();
    char big[4000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    pk_log_set_file(f);
    pk_info("big", "v=%s", big);
    CHECK_EQ_INT(count_lines(f, "event=big"), 1);
    pk_log_set_file(NULL);
    fclose(f);
}

enum { R_SHORT, R_AUTH, R_OTHER, R_N };
static const char *const reasons[R_N] = {"truncated", "bad_mac", "other"};

static void test_drops_rate_limited(void)
{
    FILE *f = tmpfile();
    pk_log_set_file(f);
    pk_drops_t d;
    pk_drops_init(&d, reasons, R_N);
    /* 1000 drops in the same second: counted, logged once. */
    for (int i = 0; i < 1000; i++)
        pk_drop(&d, R_SHORT, 5000 + (uint64_t)(i % 900), "127.0.0.1:9");
    CHECK_EQ_INT(d.count[R_SHORT], 1000);
    CHECK_EQ_INT(count_lines(f, "reason=truncated"), 1);
    /* A second later: logged again, with what was suppressed. */
    pk_drop(&d, R_SHORT, 6100, "127.0.0.1:9");
    CHECK_EQ_INT(count_lines(f, "reason=truncated"), 2);
    CHECK_EQ_INT(count_lines(f, "suppressed=999"), 1);
    /* Reasons are independent; an out-of-range reason lands in the last. */
    pk_drop(&d, R_AUTH, 6100, NULL);
    pk_drop(&d, 77, 6100, NULL);
    CHECK_EQ_INT(d.count[R_AUTH], 1);
    CHECK_EQ_INT(d.count[R_OTHER], 1);
    CHECK_EQ_INT(pk_drops_total(&d), 1003);
    CHECK_EQ_INT(count_lines(f, "reason=bad_mac src=-"), 1);
    pk_log_set_file(NULL);
    fclose(f);
}

static void test_level_parse(void)
{
    CHECK_EQ_INT(pk_log_level_parse("debug"), PK_LOG_DEBUG);
    CHECK_EQ_INT(pk_log_level_parse("error"), PK_LOG_ERROR);
    CHECK_EQ_INT(pk_log_level_parse("verbose"), -1);
}

int main(void)
{
    RUN(test_format_and_level);
    RUN(test_long_line_truncated);
    RUN(test_drops_rate_limited);
    RUN(test_level_parse);
    return check_report();
}
