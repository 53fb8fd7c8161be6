/*
 * Writes the seed corpora of the codec and record fuzz targets:
 *
 *   cmake --build build/x --target fuzz_gen_seeds
 *   build/x/fuzz/fuzz_gen_seeds fuzz/corpus
 *
 * Deterministic: the same files every run (the committed seeds are its
 * output). Record seeds are valid records under fuzz_record_keys.h, so the
 * record target starts from inputs that pass authentication.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/record.h"
#include "fuzz_record_keys.h"

static void put(const char *dir, const char *sub, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "gen_seeds: cannot write %s\n", path);
        exit(1);
    }
}

static void record_seeds(const char *dir)
{
    static uint8_t pt[1400], rec[1400 + PK_RECORD_OVERHEAD];
    static const struct {
        const char *name;
        uint16_t session;
        uint8_t epoch, type;
        uint64_t counter;
        size_t len;
    } s[] = {
        {"empty", FZ_SESSION, FZ_EPOCH, 0x01, 1, 0},
        {"one", FZ_SESSION, FZ_EPOCH, 0x02, 2, 1},
        {"small", FZ_SESSION, FZ_EPOCH, 0x10, 7, 16},
        {"64", FZ_SESSION, FZ_EPOCH, 0x11, 1000, 64},
        {"1400", FZ_SESSION, FZ_EPOCH, 0x12, 0x0102030405060708ULL, 1400},
        {"lastctr", FZ_SESSION, FZ_EPOCH, 0xff, UINT64_MAX - 1, 33},
        {"othersession", 0x0001, FZ_EPOCH, 0x01, 3, 20},
        {"otherepoch", FZ_SESSION, FZ_EPOCH + 1, 0x01, 3, 20},
    };
    for (size_t i = 0; i < sizeof pt; i++)
        pt[i] = (uint8_t)(i * 37 + 11);
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        pk_record_t r = {0};
        size_t n = 0;
        char name[64];
        if (pk_record_init(&r, s[i].session, s[i].epoch, FZ_KEY_AB, FZ_SALT_AB, NULL, NULL) !=
                PK_OK ||
            pk_record_set_tx_next(&r, s[i].counter) != PK_OK ||
            pk_record_seal(&r, s[i].type, pt, s[i].len, rec, sizeof rec, &n) != PK_OK) {
            fprintf(stderr, "gen_seeds: seal failed\n");
            exit(1);
        }
        snprintf(name, sizeof name, "rec-%s", s[i].name);
        put(dir, "record", name, rec, n);
        pk_record_clear(&r);
    }
}

/* Codec inputs: [nops][ops][wcap][data]; op = param << 4 | kind
 * (0 u8, 1 u16, 2 u32, 3 u64, 4 copy, 5 borrow, 6 need, 7 block8, 8 block16,
 * 9 pop, 10 huge borrow, 11 done, 12 rest, 13 rest+1, 14/15 writer). */
static void codec_seeds(const char *dir)
{
    static const uint8_t ints[] = {6, 0x00, 0x01, 0x02, 0x03, 0x0b, 0x0b, 16, 1,  2,  3, 4,
                                   5, 6,    7,    8,    9,    10,   11,   12, 13, 14, 15};
    static const uint8_t blocks[] = {8, 0xf7, 0x01, 0x0b, 0x09, 0xf8, 0x5c, 0x0b, 0x09, 16,
                                     3, 'a',  'b',  'c',  0x00, 0x04, 'd',  'e',  'f',  'g'};
    static const uint8_t nested[] = {7, 0xf8, 0xf7, 0xf7, 0x00, 0x0b, 0x09, 0x0d,
                                     2, 0x00, 0x05, 0x04, 0x03, 'x',  'y',  'z'};
    static const uint8_t shortu64[] = {2, 0x03, 0x0b, 1, 1, 2, 3, 4, 5};
    static const uint8_t overflow[] = {5, 0x0a, 0xfa, 0x36, 0x0e, 0xff, 0, 1, 2, 3};
    static const uint8_t tightw[] = {4, 0x03, 0x03, 0x0f, 0x44, 3,  1,  2,  3,  4,  5,  6,  7,
                                     8, 9,    10,   11,   12,   13, 14, 15, 16, 17, 18, 19, 20};
    put(dir, "codec", "ints", ints, sizeof ints);
    put(dir, "codec", "blocks", blocks, sizeof blocks);
    put(dir, "codec", "nested", nested, sizeof nested);
    put(dir, "codec", "short-u64", shortu64, sizeof shortu64);
    put(dir, "codec", "overflow", overflow, sizeof overflow);
    put(dir, "codec", "tight-writer", tightw, sizeof tightw);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (containing codec/ and record/)\n", argv[0]);
        return 2;
    }
    record_seeds(argv[1]);
    codec_seeds(argv[1]);
    return 0;
}
