/* ASSERT for fuzz targets: a broken invariant names itself on stderr and
 * aborts, so libFuzzer keeps the input (fuzz/README.md "A good target"). */
#ifndef PK_FUZZ_ASSERT_H
#define PK_FUZZ_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
