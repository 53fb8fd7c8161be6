/* The device's trigger state line (src/gts/gts.h, gts_devfile_parse): what
 * it takes, what it refuses and why. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "core/err.h"
#include "gts.h"

#define K   "000102030405060708090a0b0c0d0e0f"
#define UID "F0E1D2C3B4A5968778695A4B3C2D1E0F"

static int parse(const char *s, gts_devfile_t *f)
{
    const char *why = NULL;
    int rc = gts_devfile_parse(s, strlen(s), f, &why);
    CHECK(rc == PK_OK ? why == NULL : why != NULL);
    return rc;
}

static void test_accepted(void)
{
    gts_devfile_t f;
    CHECK_EQ_INT(parse("meter-1 7 " K " " UID "\n", &f), PK_OK);
    CHECK(strcmp(f.name, "meter-1") == 0);
    CHECK_EQ_INT(f.dev_no, 7);
    CHECK_EQ_INT(f.k[0], 0x00);
    CHECK_EQ_INT(f.k[15], 0x0f);
    CHECK_EQ_INT(f.uid[0], 0xf0);
    CHECK_EQ_INT(f.uid[15], 0x0f);
    CHECK_EQ_INT(f.interval, 60);                     /* the default when absent */
    CHECK_EQ_INT(parse("m 0 " K " " UID, &f), PK_OK); /* no newline */
    CHECK_EQ_INT(parse("m 0 " K " " UID " 3600\n", &f), PK_OK);
    CHECK_EQ_INT(f.interval, 3600);
    CHECK_EQ_INT(parse("m 0 " K " " UID " 1", &f), PK_OK);
    CHECK_EQ_INT(parse("m 0 " K " " UID " 604800  \r\n", &f), PK_OK);
    CHECK_EQ_INT(f.interval, 604800);
    CHECK_EQ_INT(parse("m 2147483646 " K " " UID " \n", &f), PK_OK);
    CHECK_EQ_INT(f.dev_no, 2147483646u);
    char name64[65];
    memset(name64, 'n', 64);
    name64[64] = '\0';
    char line[256];
    snprintf(line, sizeof line, "%s 1 %s %s\n", name64, K, UID);
    CHECK_EQ_INT(parse(line, &f), PK_OK);
    CHECK_EQ_INT((int)strlen(f.name), 64);
}

static void test_refused(void)
{
    static const char *bad[] = {
        "",
        "\n",
        " m 0 " K " " UID "\n",                         /* a blank before the name */
        "m 0 " K "\n",                                  /* a field missing */
        "m " K " " UID "\n",                            /* the device number missing */
        "m -1 " K " " UID "\n",                         /* signs are not digits */
        "m 2147483647 " K " " UID "\n",                 /* beyond a device number */
        "m 99999999999 " K " " UID "\n",                /* beyond 32 bits */
        "m 0 " K "0 " UID "\n",                         /* 33 hex digits */
        "m 0 0001020304050607 " UID "\n",               /* a 64-bit key */
        "m 0 " K " G0E1D2C3B4A5968778695A4B3C2D1E0F\n", /* not hex */
        "m 0 " K " " UID " 0\n",                        /* interval below 1 s */
        "m 0 " K " " UID " 604801\n",                   /* above a week */
        "m 0 " K " " UID " 60s\n",
        "m 0 " K " " UID " 60 extra\n",           /* a sixth field */
        "m 0 " K " " UID "\nm 1 " K " " UID "\n", /* two lines */
        "m 0 " K " " UID "\n\n",
        "m  0 " K " " UID "\n", /* two blanks between fields */
        "m\t0 " K " " UID "\n", /* a tab between fields */
    };
    gts_devfile_t f;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = parse(bad[i], &f);
        if (rc != PK_ERR_MALFORMED)
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        CHECK_EQ_INT(rc, PK_ERR_MALFORMED);
    }
    char name65[66], line[256];
    memset(name65, 'n', 65);
    name65[65] = '\0';
    snprintf(line, sizeof line, "%s 1 %s %s\n", name65, K, UID);
    CHECK_EQ_INT(parse(line, &f), PK_ERR_MALFORMED); /* a name longer than 64 */
    /* a NUL inside the line is not the end of it */
    char nul[] = "m 0 " K " " UID "\n";
    nul[1] = '\0';
    const char *why = NULL;
    CHECK_EQ_INT(gts_devfile_parse(nul, sizeof nul - 1, &f, &why), PK_ERR_MALFORMED);
    /* a refusal leaves no key behind */
    static const uint8_t zero[sizeof f] = {0};
    CHECK_EQ_INT(parse("m 0 " K " " UID " 0\n", &f), PK_ERR_MALFORMED);
    CHECK_MEM(&f, zero, sizeof f);
}

int main(void)
{
    RUN(test_accepted);
    RUN(test_refused);
    return check_report();
}
