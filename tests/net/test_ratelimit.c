/* Per-source token buckets, with injected time. */
#include "check.h"
#include "net/ratelimit.h"

static const uint8_t KEY[PK_RATELIMIT_KEY_LEN] = {1, 2,  3,  4,  5,  6,  7,  8,
                                                  9, 10, 11, 12, 13, 14, 15, 16};

static pk_addr_t addr(const char *s)
{
    pk_addr_t a;
    if (pk_addr_parse(s, &a, NULL) != PK_OK)
        abort();
    return a;
}

static int allow_n(pk_ratelimit_t *rl, const pk_addr_t *a, uint64_t now, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += pk_ratelimit_allow(rl, a, now);
    return ok;
}

static void test_burst_refuse_refill(void)
{
    pk_ratelimit_cfg_t cfg = {.rate_per_s = 10, .burst = 5, .max_entries = 64};
    pk_ratelimit_t *rl = NULL;
    pk_addr_t a = addr("192.0.2.1:500"), a2 = addr("192.0.2.1:4500"), b = addr("192.0.2.2:500");

    CHECK_EQ_INT(pk_ratelimit_new(&rl, &cfg, KEY), PK_OK);
    /* Burst of 5 at t=1000, then refused. */
    CHECK_EQ_INT(allow_n(rl, &a, 1000, 5), 5);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &a, 1000), 0);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &a2, 1000), 0); /* another port: same source */
    CHECK_EQ_INT(allow_n(rl, &b, 1000, 5), 5);          /* another source: own bucket */
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &b, 1000), 0);
    /* 10/s: 99 ms earns nothing, 100 ms earns exactly one packet. */
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &a, 1099), 0);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &a, 1100), 1);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &a, 1100), 0);
    /* 250 ms more earns 2.5: two packets, the half token is kept... */
    CHECK_EQ_INT(allow_n(rl, &a, 1350, 3), 2);
    /* ...and completes at 1400 */
    CHECK_EQ_INT(allow_n(rl, &a, 1400, 2), 1);
    /* A long pause refills only up to the burst. */
    CHECK_EQ_INT(allow_n(rl, &a, 60000, 10), 5);
    /* Time going backwards earns nothing and breaks nothing. */
    CHECK_EQ_INT(allow_n(rl, &a, 50000, 3), 0);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &a, 60100), 1);
    CHECK_EQ_INT(pk_ratelimit_count(rl), 1); /* b, idle since 1000, was collected */
    pk_ratelimit_free(rl);
}

static void test_ipv6_prefix_and_families(void)
{
    pk_ratelimit_cfg_t cfg = {.rate_per_s = 1, .burst = 2, .max_entries = 64};
    pk_ratelimit_t *rl = NULL;
    pk_addr_t x = addr("[2001:db8:0:1::1]:1"), y = addr("[2001:db8:0:1:ffff::2]:2");
    pk_addr_t z = addr("[2001:db8:0:2::1]:1");
    pk_addr_t v4 = addr("198.51.100.9:1"), mapped = addr("[::ffff:198.51.100.9]:1");
    pk_addr_t none;

    CHECK_EQ_INT(pk_ratelimit_new(&rl, &cfg, KEY), PK_OK);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &x, 0), 1);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &y, 0), 1); /* same /64: shares x's bucket */
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &x, 0), 0);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &z, 0), 1); /* another /64 */
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &v4, 0), 1);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &mapped, 0), 1);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &v4, 0), 0); /* v4-mapped is the same source */
    memset(&none, 0, sizeof none);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &none, 0), 0); /* unknown family: refused */
    CHECK_EQ_INT(pk_ratelimit_count(rl), 3);
    pk_ratelimit_free(rl);
}

static void test_table_cap_and_gc(void)
{
    pk_ratelimit_cfg_t cfg = {.rate_per_s = 10, .burst = 5, .max_entries = 4};
    pk_ratelimit_t *rl = NULL;
    char s[32];

    CHECK_EQ_INT(pk_ratelimit_new(&rl, &cfg, KEY), PK_OK);
    for (int i = 0; i < 4; i++) {
        snprintf(s, sizeof s, "10.0.0.%d:1", i + 1);
        pk_addr_t a = addr(s);
        CHECK_EQ_INT(pk_ratelimit_allow(rl, &a, 5000), 1);
    }
    CHECK_EQ_INT(pk_ratelimit_count(rl), 4);
    pk_addr_t fifth = addr("10.0.0.99:1"), first = addr("10.0.0.1:1");
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &fifth, 5000), 0); /* full of active sources */
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &first, 5000), 1); /* known sources still served */
    /* The buckets refill in 500 ms; later the table has room again. */
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &fifth, 5400), 0);
    CHECK_EQ_INT(pk_ratelimit_allow(rl, &fifth, 5600), 1);
    CHECK_EQ_INT(pk_ratelimit_count(rl), 1); /* the four refilled ones were collected */
    CHECK_EQ_INT(pk_ratelimit_gc(rl, 7000), 1);
    CHECK_EQ_INT(pk_ratelimit_count(rl), 0);
    /* A collected source starts again with a full bucket. */
    CHECK_EQ_INT(allow_n(rl, &first, 7000, 6), 5);
    pk_ratelimit_free(rl);
}

static void test_many_sources(void)
{
    pk_ratelimit_cfg_t cfg = {.rate_per_s = 20, .burst = 1, .max_entries = 20000};
    pk_ratelimit_t *rl = NULL;
    char s[32];
    int first = 0, second = 0;

    CHECK_EQ_INT(pk_ratelimit_new(&rl, &cfg, KEY), PK_OK);
    for (int i = 0; i < 20000; i++) {
        snprintf(s, sizeof s, "10.%d.%d.%d:9", i >> 16, (i >> 8) & 255, i & 255);
        pk_addr_t a = addr(s);
        first += pk_ratelimit_allow(rl, &a, 100);
    }
    for (int i = 0; i < 20000; i++) {
        snprintf(s, sizeof s, "10.%d.%d.%d:9", i >> 16, (i >> 8) & 255, i & 255);
        pk_addr_t a = addr(s);
        second += pk_ratelimit_allow(rl, &a, 100);
    }
    CHECK_EQ_INT(first, 20000);
    CHECK_EQ_INT(second, 0); /* every source found again in its own bucket */
    CHECK_EQ_INT(pk_ratelimit_count(rl), 20000);
    pk_ratelimit_free(rl);
}

static void test_bad_config(void)
{
    pk_ratelimit_t *rl = (pk_ratelimit_t *)1;
    pk_ratelimit_cfg_t c0 = {.rate_per_s = 0, .burst = 1, .max_entries = 1};
    pk_ratelimit_cfg_t c1 = {.rate_per_s = 1, .burst = 0, .max_entries = 1};
    pk_ratelimit_cfg_t c2 = {.rate_per_s = 1, .burst = 1, .max_entries = 0};
    CHECK_EQ_INT(pk_ratelimit_new(&rl, &c0, KEY), PK_ERR_INVAL);
    CHECK(rl == NULL);
    CHECK_EQ_INT(pk_ratelimit_new(&rl, &c1, KEY), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_ratelimit_new(&rl, &c2, KEY), PK_ERR_INVAL);
    pk_ratelimit_free(NULL);
}

int main(void)
{
    RUN(test_burst_refuse_refill);
    RUN(test_ipv6_prefix_and_families);
    RUN(test_table_cap_and_gc);
    RUN(test_many_sources);
    RUN(test_bad_config);
    return check_report();
}
