/*
 * The gts journal (src/gts/gts_journal.c): records written through the sync
 * thread come back in order; a torn tail, a flipped bit, a reordered record
 * or a wrong KEK stop the replay at that point (or refuse the file); older
 * generations are skipped and removed. And the store side of a removal: a
 * checkpoint snapshot taken before `gts device remove` does not bring the
 * device back.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/crypto.h"
#include "gts.h"
#include "gts_journal.h"
#include "store/wrap.h"

#define NREC  50 /* written as 5 frames (groups) of 10 entries */
#define FRAME (GTS_JNL_FRAME_HDR + 10 * GTS_JNL_ENT_LEN + GTS_JNL_TAG_LEN)

static char dir[64], base[128];
static uint8_t kek[32];

typedef struct got {
    unsigned n;
    uint32_t dev[4 * NREC];
    uint64_t deliv[4 * NREC];
    uint8_t rec[4 * NREC][PK_TRIG_REC_LEN];
} got_t;

static int collect(void *ctx, uint32_t dev_no, uint64_t deliv, const uint8_t rec[PK_TRIG_REC_LEN])
{
    got_t *g = ctx;
    if (g->n >= 4 * NREC)
        return PK_ERR_LIMIT;
    g->dev[g->n] = dev_no;
    g->deliv[g->n] = deliv;
    memcpy(g->rec[g->n], rec, PK_TRIG_REC_LEN);
    g->n++;
    return PK_OK;
}

static void rec_of(unsigned i, uint8_t rec[PK_TRIG_REC_LEN])
{
    for (unsigned b = 0; b < PK_TRIG_REC_LEN; b++)
        rec[b] = (uint8_t)(i * 7 + b);
}

/* Writes NREC entries (5 groups of 10) into journal generation gen; the
 * odd groups are sealed by the sync thread (gts_jnl_submit_frame), so the
 * frame numbers of both ways interleave. */
static void write_journal(uint64_t gen)
{
    gts_jnl_t j;
    static uint8_t buf[FRAME];
    CHECK_EQ_INT(gts_jnl_init(&j), PK_OK);
    CHECK_EQ_INT(gts_jnl_create(&j, base, kek, gen), PK_OK);
    for (unsigned g = 0; g < NREC / 10; g++) {
        size_t len = 0;
        for (unsigned i = 0; i < 10; i++) {
            uint8_t rec[PK_TRIG_REC_LEN];
            unsigned k = g * 10 + i;
            rec_of(k + (unsigned)gen * 1000, rec);
            gts_jnl_entry(buf + GTS_JNL_FRAME_HDR + i * GTS_JNL_ENT_LEN, k, k % 3 ? 0 : 1000 + k,
                          rec);
        }
        if (g % 2) { /* odd groups: sealed by the sync thread, as the server does */
            CHECK_EQ_INT(gts_jnl_submit_frame(&j, buf, 10), PK_OK);
            CHECK_EQ_INT(gts_jnl_submit_frame(&j, buf, 10), PK_ERR_STATE);
            len = FRAME;
        } else {
            CHECK_EQ_INT(gts_jnl_seal_frame(&j, buf, 10, &len), PK_OK);
            CHECK_EQ_INT(len, FRAME);
            CHECK_EQ_INT(gts_jnl_submit(&j, buf, len), PK_OK);
            /* a second request while one is pending is refused */
            CHECK_EQ_INT(gts_jnl_submit(&j, buf, len), PK_ERR_STATE);
        }
        struct pollfd p = {j.efd, POLLIN, 0};
        CHECK(poll(&p, 1, 5000) == 1);
        CHECK_EQ_INT(gts_jnl_done(&j), PK_OK);
    }
    size_t len;
    CHECK_EQ_INT(gts_jnl_seal_frame(&j, buf, 0, &len), PK_ERR_INVAL);
    CHECK_EQ_INT(gts_jnl_submit_frame(&j, buf, 0), PK_ERR_INVAL);
    gts_jnl_fini(&j);
}

static char *path_of(uint64_t gen)
{
    static char p[256];
    snprintf(p, sizeof p, "%s.%016llx", base, (unsigned long long)gen);
    return p;
}

static void test_roundtrip(void)
{
    got_t *g = calloc(1, sizeof *g);
    uint64_t maxg;
    write_journal(1);
    CHECK_EQ_INT(gts_jnl_replay(base, kek, 0, collect, g, &maxg), PK_OK);
    CHECK_EQ_INT(g->n, NREC);
    CHECK_EQ_INT(maxg, 1);
    for (unsigned i = 0; i < g->n; i++) {
        uint8_t rec[PK_TRIG_REC_LEN];
        rec_of(i + 1000, rec);
        CHECK_EQ_INT(g->dev[i], i);
        CHECK(g->deliv[i] == (i % 3 ? 0 : 1000 + i));
        CHECK_MEM(g->rec[i], rec, PK_TRIG_REC_LEN);
    }
    /* the file holds no record in the clear */
    uint8_t rec0[PK_TRIG_REC_LEN], file[GTS_JNL_HDR_LEN + 5 * FRAME];
    rec_of(1000, rec0);
    FILE *f = fopen(path_of(1), "rb");
    CHECK(f != NULL);
    size_t fl = f ? fread(file, 1, sizeof file, f) : 0;
    if (f)
        fclose(f);
    CHECK_EQ_INT(fl, sizeof file);
    CHECK(memmem(file, fl, rec0 + 8, 16) == NULL);
    /* a second journal (generation 2) replays after the first; after_gen skips */
    write_journal(2);
    g->n = 0;
    CHECK_EQ_INT(gts_jnl_replay(base, kek, 0, collect, g, &maxg), PK_OK);
    CHECK_EQ_INT(g->n, 2 * NREC);
    CHECK_EQ_INT(maxg, 2);
    g->n = 0;
    CHECK_EQ_INT(gts_jnl_replay(base, kek, 1, collect, g, &maxg), PK_OK);
    CHECK_EQ_INT(g->n, NREC);
    uint8_t rec[PK_TRIG_REC_LEN];
    rec_of(2000, rec);
    CHECK_MEM(g->rec[0], rec, PK_TRIG_REC_LEN);
    /* removal up to 1 leaves generation 2 only */
    CHECK_EQ_INT(gts_jnl_remove_upto(base, 1), PK_OK);
    CHECK(access(path_of(1), F_OK) != 0);
    CHECK(access(path_of(2), F_OK) == 0);
    CHECK_EQ_INT(gts_jnl_remove_upto(base, 2), PK_OK);
    g->n = 0;
    CHECK_EQ_INT(gts_jnl_replay(base, kek, 0, collect, g, &maxg), PK_OK);
    CHECK_EQ_INT(g->n, 0);
    CHECK_EQ_INT(maxg, 0);
    free(g);
}

/* Rewrites byte off of generation gen's file with v (or appends n bytes). */
static void poke(uint64_t gen, long off, uint8_t xor)
{
    int fd = open(path_of(gen), O_RDWR);
    uint8_t b = 0;
    CHECK(fd >= 0);
    CHECK(pread(fd, &b, 1, off) == 1);
    b ^= xor;
    CHECK(pwrite(fd, &b, 1, off) == 1);
    close(fd);
}

static unsigned replay_count(uint64_t after, int *rc)
{
    got_t *g = calloc(1, sizeof *g);
    uint64_t maxg;
    *rc = gts_jnl_replay(base, kek, after, collect, g, &maxg);
    unsigned n = g->n;
    free(g);
    return n;
}

static void test_torn_and_tampered(void)
{
    int rc;
    /* torn tails of every length: all complete records still come back */
    for (unsigned cut = 1; cut < FRAME; cut += 97) {
        write_journal(3);
        FILE *f = fopen(path_of(3), "ab");
        for (unsigned i = 0; f && i < cut; i++)
            fputc((int)(i * 31 + cut), f);
        if (f)
            fclose(f);
        CHECK_EQ_INT(replay_count(0, &rc), NREC);
        CHECK_EQ_INT(rc, PK_OK);
        /* a torn last frame (a group cut short) ends the replay before it */
        CHECK_EQ_INT(truncate(path_of(3), GTS_JNL_HDR_LEN + 4 * FRAME + cut), 0);
        CHECK_EQ_INT(replay_count(0, &rc), NREC - 10);
        unlink(path_of(3));
    }
    /* one flipped bit in frame 2 (entries 20..29: its header fields, its
     * ciphertext, its tag): replay stops there */
    static const long fields[] = {0, 2, 4, 7, 8, 15, 16, 500, FRAME - 16, FRAME - 1};
    for (unsigned f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        write_journal(4);
        poke(4, GTS_JNL_HDR_LEN + 2 * FRAME + fields[f], 0x01);
        CHECK_EQ_INT(replay_count(0, &rc), 20);
        CHECK_EQ_INT(rc, PK_OK);
        unlink(path_of(4));
    }
    /* frames out of order (two swapped): stops at the first */
    write_journal(5);
    {
        int fd = open(path_of(5), O_RDWR);
        static uint8_t a[FRAME], b[FRAME];
        long oa = GTS_JNL_HDR_LEN + FRAME, ob = oa + FRAME;
        CHECK(pread(fd, a, sizeof a, oa) == (ssize_t)sizeof a);
        CHECK(pread(fd, b, sizeof b, ob) == (ssize_t)sizeof b);
        CHECK(pwrite(fd, b, sizeof b, oa) == (ssize_t)sizeof b);
        CHECK(pwrite(fd, a, sizeof a, ob) == (ssize_t)sizeof a);
        close(fd);
    }
    CHECK_EQ_INT(replay_count(0, &rc), 10);
    /* a tampered header or a wrong KEK: the file is refused, not silently skipped */
    poke(5, 20, 0x80);
    CHECK_EQ_INT(replay_count(0, &rc), 0);
    CHECK(rc != PK_OK);
    unlink(path_of(5));
    write_journal(6);
    kek[0] ^= 1;
    CHECK_EQ_INT(replay_count(0, &rc), 0);
    CHECK_EQ_INT(rc, PK_ERR_AUTH);
    kek[0] ^= 1;
    CHECK_EQ_INT(replay_count(0, &rc), NREC);
    /* a file cut inside its header (crash while creating it) is skipped */
    CHECK_EQ_INT(truncate(path_of(6), 30), 0);
    CHECK_EQ_INT(replay_count(0, &rc), 0);
    CHECK_EQ_INT(rc, PK_OK);
    write_journal(8);
    {
        uint8_t z[GTS_JNL_HDR_LEN] = {0};
        int fd = open(path_of(8), O_RDWR);
        CHECK(pwrite(fd, z, sizeof z, 0) == (ssize_t)sizeof z);
        close(fd);
    }
    CHECK_EQ_INT(replay_count(6, &rc), 0);
    CHECK_EQ_INT(rc, PK_OK);
    /* a generation that exists is never reopened for writing */
    gts_jnl_t j;
    CHECK_EQ_INT(gts_jnl_init(&j), PK_OK);
    CHECK_EQ_INT(gts_jnl_create(&j, base, kek, 6), PK_ERR_EXISTS);
    gts_jnl_fini(&j);
    CHECK_EQ_INT(gts_jnl_remove_upto(base, 100), PK_OK);
}

/* Two journals of one generation number (a store restored from a backup)
 * never share a key: the same record seals differently. */
static void test_fresh_key_per_file(void)
{
    gts_jnl_t j1, j2;
    uint8_t rec[PK_TRIG_REC_LEN], a[GTS_JNL_FRAME_HDR + GTS_JNL_ENT_LEN + GTS_JNL_TAG_LEN],
        b[sizeof a];
    size_t la, lb;
    rec_of(1, rec);
    gts_jnl_entry(a + GTS_JNL_FRAME_HDR, 1, 0, rec);
    memcpy(b, a, sizeof a);
    CHECK_EQ_INT(gts_jnl_init(&j1), PK_OK);
    CHECK_EQ_INT(gts_jnl_init(&j2), PK_OK);
    CHECK_EQ_INT(gts_jnl_create(&j1, NULL, kek, 7), PK_OK);
    CHECK_EQ_INT(gts_jnl_create(&j2, NULL, kek, 7), PK_OK);
    CHECK_EQ_INT(gts_jnl_seal_frame(&j1, a, 1, &la), PK_OK);
    CHECK_EQ_INT(gts_jnl_seal_frame(&j2, b, 1, &lb), PK_OK);
    CHECK_EQ_INT(la, sizeof a);
    CHECK_MEM(a, b, GTS_JNL_FRAME_HDR); /* same frame header (seq 1) ... */
    CHECK(memcmp(a + GTS_JNL_FRAME_HDR, b + GTS_JNL_FRAME_HDR, la - GTS_JNL_FRAME_HDR) != 0);
    CHECK(memmem(a, la, rec, 16) == NULL); /* ... other keys, nothing in the clear */
    gts_jnl_fini(&j1);
    gts_jnl_fini(&j2);
}

/* A checkpoint that snapshotted a device just before `gts device remove`
 * committed does not write it back: the tombstone wins (gts_db.c ckpt_fn),
 * while the other device of the same checkpoint is written. */
static void test_checkpoint_after_remove(void)
{
    gts_db_t db;
    pk_trig_srv_t *core = NULL, *again = NULL;
    pk_wrap_ctx_t w = {0};
    uint32_t devs[2], gone[1];
    uint8_t recs[2 * PK_TRIG_REC_LEN], rec[PK_TRIG_REC_LEN];
    uint64_t maxseq = 0;
    size_t bad = 0;
    const char *names[] = {"ck-a"};
    CHECK_EQ_INT(gts_db_open(&db, "memory:", NULL, 1), PK_OK);
    CHECK_EQ_INT(gts_db_add(&db, "ck-a", 1, 0, 0, NULL), PK_OK);
    CHECK_EQ_INT(gts_db_add(&db, "ck-b", 1, 0, 0, NULL), PK_OK);
    CHECK_EQ_INT(gts_db_has(&db, "ck-a", &devs[0]), 1);
    CHECK_EQ_INT(gts_db_has(&db, "ck-b", &devs[1]), 1);
    CHECK_EQ_INT(pk_trig_srv_new(&core, &pk_rng_system, 4), PK_OK);
    CHECK_EQ_INT(gts_db_load(&db, core, &maxseq), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_count(core), 2);
    for (int i = 0; i < 2; i++)
        CHECK_EQ_INT(pk_trig_srv_record(core, devs[i], recs + i * PK_TRIG_REC_LEN), PK_OK);
    recs[PK_TRIG_REC_LEN + 56] ^= 1; /* ck-b's poll counter: a change to write */

    CHECK_EQ_INT(gts_db_remove(&db, names, 1, gone, &bad), PK_OK);
    CHECK_EQ_INT(gone[0], devs[0]);
    CHECK_EQ_INT(pk_wrap_ctx_init(&w, db.kek), PK_OK);
    CHECK_EQ_INT(gts_db_checkpoint(&db, &w, devs, recs, 2, NULL, 0, 1, NULL, 0), PK_OK);
    pk_wrap_ctx_clear(&w);

    CHECK_EQ_INT(gts_db_has(&db, "ck-a", NULL), 0);
    CHECK_EQ_INT(pk_trig_srv_new(&again, &pk_rng_system, 4), PK_OK);
    CHECK_EQ_INT(gts_db_load(&db, again, &maxseq), PK_OK);
    CHECK_EQ_INT(pk_trig_srv_count(again), 1);
    CHECK_EQ_INT(pk_trig_srv_record(again, devs[0], rec), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_trig_srv_record(again, devs[1], rec), PK_OK);
    CHECK_MEM(rec, recs + PK_TRIG_REC_LEN, PK_TRIG_REC_LEN);
    /* a second removal of the name: unknown, nothing changes */
    CHECK_EQ_INT(gts_db_remove(&db, names, 1, gone, &bad), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(bad, 0);
    pk_trig_srv_free(core);
    pk_trig_srv_free(again);
    gts_db_close(&db);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/proxkey-jnl-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(base, sizeof base, "%s/gts.journal", dir);
    if (pk_random(kek, sizeof kek) != PK_OK)
        return 1;
    RUN(test_roundtrip);
    RUN(test_torn_and_tampered);
    RUN(test_fresh_key_per_file);
    RUN(test_checkpoint_after_remove);
    rmdir(dir);
    return check_report();
}
