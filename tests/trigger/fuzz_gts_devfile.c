/*
 * libFuzzer target for the device's trigger state line (src/gts/gts.h,
 * gts_devfile_parse). Invariants: no crash or out-of-bounds read; a refusal
 * says why and leaves the result zeroed; an accepted line has a name of
 * 1..64 printable bytes without blanks and an interval of 1..604800, and
 * written back in the canonical form it parses to the same result.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "fuzz_assert.h"
#include "gts.h"
#include "proto/trigger/messages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gts_devfile_t f, g;
    const char *why = NULL;
    int rc = gts_devfile_parse((const char *)data, size, &f, &why);
    if (rc != PK_OK) {
        static const gts_devfile_t zero;
        ASSERT(rc == PK_ERR_MALFORMED && why && memcmp(&f, &zero, sizeof f) == 0);
        return 0;
    }
    size_t nl = strlen(f.name);
    ASSERT(nl >= 1 && nl <= GTS_NAME_MAX);
    ASSERT(f.interval >= PK_TRIG_INTERVAL_MIN_S && f.interval <= PK_TRIG_INTERVAL_MAX_S);
    for (size_t i = 0; i < nl; i++)
        ASSERT(f.name[i] > ' ' && f.name[i] < 0x7f);
    char kh[33], uh[33], line[GTS_DEVFILE_MAX];
    gts_hex(f.k, 16, kh);
    gts_hex(f.uid, 16, uh);
    int n = snprintf(line, sizeof line, "%s %u %s %s %u\n", f.name, f.dev_no, kh, uh, f.interval);
    ASSERT(n > 0 && (size_t)n < sizeof line);
    ASSERT(gts_devfile_parse(line, (size_t)n, &g, &why) == PK_OK);
    ASSERT(memcmp(&f, &g, sizeof f) == 0); /* the canonical line parses back */
    return 0;
}
