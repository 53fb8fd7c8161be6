/*
 * libFuzzer target for the gts journal reader (src/gts/gts_journal.h,
 * gts_jnl_replay) and the device records it carries (pk_trig_srv_load /
 * pk_trig_rec_info, lib/proto/trigger/srv.h). The journal under a fixed KEK
 * is built here from the format in gts_journal.h (generation 1, fixed salt),
 * written to a temporary file and replayed.
 *
 * Input: mode(1) then, by mode % 3,
 *   0  raw frames: the file is a valid header followed by the input bytes;
 *   1  raw file: the file is the input bytes (header included);
 *   2  structured: cut(2) flip(2) bit(1) stop(1), then frames, each
 *      count(1) (1 + count % 8 entries) and count x 92 plaintext entry bytes
 *      (dev_no(4) delivered(8) record(80)), at most MAX_FRAMES; the frames
 *      are sealed with seq 1, 2, ... then the file is cut short by `cut`
 *      bytes and, when bit & 8, bit (bit & 7) of byte `flip` is flipped; the
 *      callback stops the replay at entry `stop` (0: never).
 *
 * Invariants: no crash or out-of-bounds read; a valid header is PK_OK, a raw
 * header one of PK_OK / PK_ERR_MALFORMED / PK_ERR_AUTH; garbage frames are
 * never delivered; in structured mode exactly the entries of the frames
 * wholly before the first damaged byte are delivered, in order and
 * byte-exact (a damaged header: PK_ERR_MALFORMED or PK_ERR_AUTH and none; a
 * file shorter than a header: PK_OK and none), and a callback's non-zero
 * result stops the replay with that result. Each delivered record is parsed
 * by pk_trig_rec_info and pk_trig_srv_load, which agree; a loaded record
 * serialises back to the same bytes (bound seq 0: no command is queued), or
 * for a version-1 record to its version-2 upgrade (UID1's tag at 76, the
 * pending UID2 derived at 4).
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes structured and raw seeds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/crypto.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"
#include "gts_journal.h"

#include "fuzz_assert.h"

#define MAX_FRAMES  16
#define MAX_ENTRIES (MAX_FRAMES * 8)
#define FRAME_MAX   (GTS_JNL_FRAME_HDR + 8 * GTS_JNL_ENT_LEN + GTS_JNL_TAG_LEN)
#define FILE_MAX    (GTS_JNL_HDR_LEN + MAX_FRAMES * FRAME_MAX)
#define IN_MAX      (FILE_MAX + 64)
#define LOAD_MAX    8 /* records per input also loaded into a server core */

static const uint8_t kek[32] = {0x4b, 0x45, 0x4b, 1, 2, 3};
static const uint8_t salt[16] = {0x5a, 0x17, 9, 8, 7, 6, 5, 4, 3, 2, 1};
static char dir[96], base[128], path[160];
static uint8_t hdr[GTS_JNL_HDR_LEN];
static pk_aead_t jk; /* JK of generation 1 */

/* ---- what the callback saw ---- */
typedef struct seen {
    size_t n, stop;
    uint8_t ent[MAX_ENTRIES][GTS_JNL_ENT_LEN];
    int garbage; /* entries delivered in a raw mode */
} seen_t;

static int collect(void *ctx, uint32_t dev_no, uint64_t deliv, const uint8_t rec[PK_TRIG_REC_LEN])
{
    seen_t *s = ctx;
    if (s->n < MAX_ENTRIES)
        gts_jnl_entry(s->ent[s->n], dev_no, deliv, rec);
    else
        s->garbage = 1;
    s->n++;
    if (s->stop && s->n == s->stop)
        return PK_ERR_LIMIT;
    return PK_OK;
}

static void cleanup(void)
{
    if (path[0])
        unlink(path);
    if (dir[0])
        rmdir(dir);
}

static void setup(void)
{
    uint8_t g[8], k[PK_KDF_OUT_LEN], n[PK_AEAD_NONCE_LEN] = {0};
    pk_crypto_init();
    const char *t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/pkfuzzjnl.XXXXXX", t);
    ASSERT(mkdtemp(dir) != NULL);
    snprintf(base, sizeof base, "%s/j", dir);
    snprintf(path, sizeof path, "%s.%016llx", base, 1ull);
    atexit(cleanup);

    /* JK = KDF(KEK, FC 0xF1, gen(8), salt(16)), as gts_journal.h documents */
    pk_put_u64(g, 1);
    const pk_kdf_param_t p[2] = {{g, sizeof g}, {salt, sizeof salt}};
    ASSERT(pk_kdf(kek, sizeof kek, PK_FC_GTS_JOURNAL, p, 2, k) == PK_OK);
    ASSERT(pk_aead_init(&jk, k, sizeof k) == PK_OK);
    memcpy(hdr, "PKGTSJNL", 8);
    pk_put_u32(hdr + 8, GTS_JNL_VERSION);
    pk_put_u32(hdr + 12, GTS_JNL_ENT_LEN);
    pk_put_u64(hdr + 16, 1);
    memcpy(hdr + 24, salt, 16);
    ASSERT(pk_aead_seal(&jk, n, hdr, 48, NULL, 0, NULL, hdr + 48) == PK_OK);
}

static void write_file(const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ASSERT(f != NULL);
    ASSERT(n == 0 || fwrite(b, 1, n, f) == n);
    ASSERT(fclose(f) == 0);
}

/* One frame: hdr(16) entries tag, sealed with seq. */
static size_t seal_frame(uint8_t *out, const uint8_t *ents, size_t count, uint64_t seq)
{
    uint8_t n[PK_AEAD_NONCE_LEN] = {0};
    size_t ct = count * GTS_JNL_ENT_LEN;
    memset(out, 0, GTS_JNL_FRAME_HDR);
    out[0] = 1;
    pk_put_u32(out + 4, (uint32_t)count);
    pk_put_u64(out + 8, seq);
    pk_put_u64(n + 4, seq);
    ASSERT(pk_aead_seal(&jk, n, out, GTS_JNL_FRAME_HDR, ents, ct, out + GTS_JNL_FRAME_HDR,
                        out + GTS_JNL_FRAME_HDR + ct) == PK_OK);
    return GTS_JNL_FRAME_HDR + ct + GTS_JNL_TAG_LEN;
}

static int rng_fill(void *ctx, uint8_t *buf, size_t n)
{
    uint64_t *x = ctx;
    for (size_t i = 0; i < n; i++) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        buf[i] = (uint8_t)*x;
    }
    return PK_OK;
}

/* The device records: both parsers agree; a loaded record serialises back. */
static void check_records(const seen_t *s)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull; /* reset per input */
    const pk_rng_t rng = {rng_fill, &seed};
    pk_trig_srv_t *srv = NULL;
    size_t n = s->n < LOAD_MAX ? s->n : LOAD_MAX;
    if (n == 0)
        return;
    ASSERT(pk_trig_srv_new(&srv, &rng, 8) == PK_OK);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *rec = s->ent[i] + 12;
        pk_trig_srv_info_t info;
        uint8_t back[PK_TRIG_REC_LEN];
        int ri = pk_trig_rec_info(rec, PK_TRIG_REC_LEN, &info);
        ASSERT(ri == PK_OK || ri == PK_ERR_MALFORMED || ri == PK_ERR_VERSION);
        ASSERT(pk_trig_rec_info(rec, PK_TRIG_REC_LEN - 1, &info) == PK_ERR_MALFORMED);
        int rl = pk_trig_srv_load(srv, (uint32_t)i, rec, PK_TRIG_REC_LEN);
        if (ri != PK_OK) {
            ASSERT(rl == ri);
            ASSERT(pk_trig_srv_record(srv, (uint32_t)i, back) == PK_ERR_NOTFOUND);
            continue;
        }
        /* a UID (or the pending UID2) already taken by an earlier record */
        ASSERT(rl == PK_OK || rl == PK_ERR_EXISTS);
        if (rl != PK_OK) {
            ASSERT(pk_trig_srv_record(srv, (uint32_t)i, back) == PK_ERR_NOTFOUND);
            continue;
        }
        ASSERT(pk_trig_srv_record(srv, (uint32_t)i, back) == PK_OK);
        ASSERT(back[0] == PK_TRIG_REC_VERSION);
        ASSERT(memcmp(back + 1, rec + 1, 3) == 0 && memcmp(back + 20, rec + 20, 48) == 0);
        for (size_t k = 68; k < 76; k++)
            ASSERT(back[k] == 0); /* bound seq: no command is queued */
        if (rec[0] == PK_TRIG_REC_VERSION) {
            ASSERT(memcmp(back + 4, rec + 4, 16) == 0 && memcmp(back + 76, rec + 76, 4) == 0);
        } else {
            /* version 1 upgraded: UID1's tag at 76; a pending one keeps UID2 */
            uint8_t want[PK_TRIG_UID_LEN];
            ASSERT(rec[0] == 1 && memcmp(back + 76, rec + 4, 4) == 0);
            if (rec[1] & 0x01)
                ASSERT(pk_trig_derive_uid2(rec + 20, rec + 4, rec + 36, want) == PK_OK);
            else
                memcpy(want, rec + 4, sizeof want);
            ASSERT(memcmp(back + 4, want, sizeof want) == 0);
        }
        ASSERT(memcmp(info.uid, back + 4, PK_TRIG_UID_LEN) == 0);
        ASSERT(pk_trig_srv_load(srv, (uint32_t)i, rec, PK_TRIG_REC_LEN) == PK_ERR_EXISTS);
    }
    pk_trig_srv_free(srv);
}

/* ---- seeds ---- */

static void rec_of(uint8_t *e, uint32_t dev, uint64_t deliv, unsigned k)
{
    uint8_t rec[PK_TRIG_REC_LEN];
    memset(rec, 0, sizeof rec);
    rec[0] = PK_TRIG_REC_VERSION;
    rec[1] = 0; /* flags */
    rec[2] = 0; /* sent */
    rec[3] = 3; /* try_max */
    for (unsigned b = 4; b < 52; b++)
        rec[b] = (uint8_t)(k * 31 + b); /* UID1, K1, UID_RAND */
    pk_put_u32(rec + 52, 1700000000u + k);
    pk_put_u32(rec + 56, k);
    memcpy(rec + 76, rec + 4, 4); /* not pending: UID1's tag */
    gts_jnl_entry(e, dev, deliv, rec);
}

static void dump(const char *d, const char *name, const uint8_t *b, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", d, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        return;
    fwrite(b, 1, n, f);
    fclose(f);
}

static void dump_seeds(const char *d)
{
    static uint8_t in[IN_MAX], fr[FRAME_MAX];
    size_t n;
    /* structured: 3 frames of 2, 1, 4 entries; intact, cut, flipped, stopped */
    static const struct {
        const char *name;
        uint16_t cut, flip;
        uint8_t bit, stop;
    } v[] = {
        {"struct-intact", 0, 0, 0, 0},
        {"struct-cut", 40, 0, 0, 0},
        {"struct-flip-frame2", 0, 64 + 216 + 30, 8 | 3, 0},
        {"struct-flip-header", 0, 50, 8 | 1, 0},
        {"struct-stop", 0, 0, 0, 3},
    };
    static const uint8_t counts[3] = {1, 0, 3}; /* 1 + c % 8 entries */
    for (size_t s = 0; s < sizeof v / sizeof v[0]; s++) {
        n = 0;
        in[n++] = 2;
        pk_put_u16(in + n, v[s].cut);
        pk_put_u16(in + n + 2, v[s].flip);
        in[n + 4] = v[s].bit;
        in[n + 5] = v[s].stop;
        n += 6;
        unsigned k = 0;
        for (unsigned f = 0; f < 3; f++) {
            in[n++] = counts[f];
            for (unsigned e = 0; e <= counts[f]; e++, k++) {
                rec_of(in + n, k, k % 2 ? 0 : 1000 + k, k);
                n += GTS_JNL_ENT_LEN;
            }
        }
        dump(d, v[s].name, in, n);
    }
    /* raw: a valid header and one sealed frame, then a frame of garbage */
    uint8_t ents[2 * GTS_JNL_ENT_LEN];
    rec_of(ents, 7, 0, 1);
    rec_of(ents + GTS_JNL_ENT_LEN, 8, 99, 2);
    size_t fl = seal_frame(fr, ents, 2, 1);
    in[0] = 0;
    memcpy(in + 1, fr, fl);
    dump(d, "raw-tail", in, 1 + fl);
    in[0] = 1;
    memcpy(in + 1, hdr, sizeof hdr);
    memcpy(in + 1 + sizeof hdr, fr, fl);
    dump(d, "raw-file", in, 1 + sizeof hdr + fl);
}

/* ---- the target ---- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t file[FILE_MAX + IN_MAX];
    static uint8_t plain[MAX_ENTRIES][GTS_JNL_ENT_LEN];
    static seen_t s;
    static int ready;
    size_t flen = 0, nplain = 0;
    size_t fend[MAX_FRAMES], fcount[MAX_FRAMES], nframes = 0;
    uint64_t maxg = 77;

    if (!ready) {
        setup();
        const char *d = getenv("PK_FUZZ_DUMP_SEEDS");
        if (d)
            dump_seeds(d);
        ready = 1;
    }
    if (size < 1 || size > IN_MAX)
        return 0;
    unsigned mode = data[0] % 3;
    memset(&s, 0, sizeof s);

    if (mode == 0 || mode == 1) {
        if (mode == 0) {
            memcpy(file, hdr, sizeof hdr);
            flen = sizeof hdr;
        }
        memcpy(file + flen, data + 1, size - 1);
        flen += size - 1;
        write_file(file, flen);
        int rc = gts_jnl_replay(base, kek, 0, collect, &s, &maxg);
        if (mode == 0)
            ASSERT(rc == PK_OK);
        else
            ASSERT(rc == PK_OK || rc == PK_ERR_MALFORMED || rc == PK_ERR_AUTH);
        ASSERT(maxg == (rc == PK_OK ? 1u : 0u));
        /* without the key nothing is delivered, except frames the input
         * copied whole from a seed (sealed under the same key): those must
         * come out exactly as sealed, which check_records exercises */
        if (mode == 1 && s.n)
            ASSERT(memcmp(file, hdr, sizeof hdr) == 0);
        ASSERT(!s.garbage);
        check_records(&s);
        return 0;
    }

    /* structured */
    if (size < 7)
        return 0;
    size_t cut = pk_get_u16(data + 1), flip = pk_get_u16(data + 3);
    uint8_t bit = data[5];
    s.stop = data[6];
    const uint8_t *p = data + 7, *end = data + size;
    memcpy(file, hdr, sizeof hdr);
    flen = sizeof hdr;
    while (nframes < MAX_FRAMES && p < end) {
        size_t count = 1 + (size_t)(*p++ % 8);
        if ((size_t)(end - p) < count * GTS_JNL_ENT_LEN)
            break;
        memcpy(plain[nplain], p, count * GTS_JNL_ENT_LEN);
        p += count * GTS_JNL_ENT_LEN;
        flen += seal_frame(file + flen, plain[nplain], count, nframes + 1);
        nplain += count;
        fcount[nframes] = count;
        fend[nframes++] = flen;
    }
    size_t total = flen;
    flen -= cut < flen ? cut : flen;
    size_t dmg = flen; /* the first damaged byte (flen: none) */
    if ((bit & 8) && flip < flen) {
        file[flip] ^= (uint8_t)(1u << (bit & 7));
        dmg = flip;
    }
    write_file(file, flen);
    int rc = gts_jnl_replay(base, kek, 0, collect, &s, &maxg);

    size_t want = 0;
    int hdr_bad = flen >= GTS_JNL_HDR_LEN && dmg < GTS_JNL_HDR_LEN;
    if (!hdr_bad && flen >= GTS_JNL_HDR_LEN)
        for (size_t f = 0; f < nframes && fend[f] <= dmg; f++)
            want += fcount[f];
    (void)total;
    if (hdr_bad) {
        ASSERT(rc == PK_ERR_MALFORMED || rc == PK_ERR_AUTH);
        ASSERT(s.n == 0 && maxg == 0);
    } else if (s.stop && s.stop <= want) {
        ASSERT(rc == PK_ERR_LIMIT && s.n == s.stop && maxg == 0);
    } else {
        if (rc != PK_OK || s.n != want)
            fprintf(stderr,
                    "rc %d, %zu entries delivered, %zu expected (file %zu bytes, "
                    "damage at %zu)\n",
                    rc, s.n, want, flen, dmg);
        ASSERT(rc == PK_OK && s.n == want && maxg == 1);
    }
    for (size_t i = 0; i < s.n && i < MAX_ENTRIES; i++)
        ASSERT(memcmp(s.ent[i], plain[i], GTS_JNL_ENT_LEN) == 0);
    check_records(&s);
    return 0;
}
