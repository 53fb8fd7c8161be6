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
#include "gts.h"
#include "proto/trigger/messages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gts_devfile_t f, g;
    const char *why = NULL;
    int rc = gts_devfile_parse((const char *)data, size, &f, &why);
    if (rc != PK_OK) {
        static const gts_devfile_t zero;
        if (rc != PK_ERR_MALFORMED || !why || memcmp(&f, &zero, sizeof f) != 0)
            abort();
        return 0;
    }
    size_t nl = strlen(f.name);
    if (nl == 0 || nl > GTS_NAME_MAX || f.interval < PK_TRIG_INTERVAL_MIN_S ||
        f.interval > PK_TRIG_INTERVAL_MAX_S)
        abort();
    for (size_t i = 0; i < nl; i++)
        if (f.name[i] <= ' ' || f.name[i] >= 0x7f)
            abort();
    char kh[33], uh[33], line[GTS_DEVFILE_MAX];
    gts_hex(f.k, 16, kh);
    gts_hex(f.uid, 16, uh);
    int n = snprintf(line, sizeof line, "%s %u %s %s %u\n", f.name, f.dev_no, kh, uh, f.interval);
    if (n <= 0 || (size_t)n >= sizeof line)
        abort();
    if (gts_devfile_parse(line, (size_t)n, &g, &why) != PK_OK || memcmp(&f, &g, sizeof f) != 0)
        abort();
    return 0;
}
