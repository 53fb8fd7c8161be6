/*
 * The gts journal (format and contract in gts_journal.h).
 */
#include "gts_journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/kdf.h"
#include "core/kdf_fc.h"

static const uint8_t jnl_magic[8] = {'P', 'K', 'G', 'T', 'S', 'J', 'N', 'L'};
#define FRAME_T_GROUP 1

/* JK = KDF(KEK, FC 0xF1, gen(8), salt(16)): a per-file AES-256 key (TS 33.220
 * KDF, registry entry "gts journal key"). */
static int jnl_key(const uint8_t kek[32], uint64_t gen, const uint8_t salt[16], pk_aead_t *a)
{
    uint8_t g[8], jk[PK_KDF_OUT_LEN];
    pk_put_u64(g, gen);
    const pk_kdf_param_t p[2] = {{g, sizeof g}, {salt, 16}};
    int rc = pk_kdf(kek, 32, PK_FC_GTS_JOURNAL, p, 2, jk);
    if (rc == PK_OK)
        rc = pk_aead_rekey(a, jk, sizeof jk);
    pk_wipe(jk, sizeof jk);
    return rc;
}

static void nonce_of(uint64_t seq, uint8_t n[PK_AEAD_NONCE_LEN])
{
    memset(n, 0, 4);
    pk_put_u64(n + 4, seq);
}

static void hdr_fields(uint8_t h[GTS_JNL_HDR_LEN], uint64_t gen, const uint8_t salt[16])
{
    memset(h, 0, GTS_JNL_HDR_LEN);
    memcpy(h, jnl_magic, 8);
    pk_put_u32(h + 8, GTS_JNL_VERSION);
    pk_put_u32(h + 12, GTS_JNL_ENT_LEN);
    pk_put_u64(h + 16, gen);
    memcpy(h + 24, salt, 16);
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return PK_ERR_IO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return PK_OK;
}

/* Seals frame (header room, count plaintext entries, tag room) in place as
 * frame number seq: header, then AES-256-GCM under JK. */
static int seal_at(gts_jnl_t *j, uint8_t *buf, size_t count, uint64_t seq)
{
    uint8_t n[PK_AEAD_NONCE_LEN];
    size_t ctlen = count * GTS_JNL_ENT_LEN;
    buf[0] = FRAME_T_GROUP;
    buf[1] = buf[2] = buf[3] = 0;
    pk_put_u32(buf + 4, (uint32_t)count);
    pk_put_u64(buf + 8, seq);
    nonce_of(seq, n);
    return pk_aead_seal(&j->aead, n, buf, GTS_JNL_FRAME_HDR, buf + GTS_JNL_FRAME_HDR, ctlen,
                        buf + GTS_JNL_FRAME_HDR, buf + GTS_JNL_FRAME_HDR + ctlen);
}

static void *sync_main(void *arg)
{
    gts_jnl_t *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->req && !j->quit)
            pthread_cond_wait(&j->cv, &j->mu);
        if (!j->req && j->quit)
            break;
        const uint8_t *buf = j->wbuf;
        uint8_t *frame = j->wframe;
        size_t len = j->wlen, count = j->wcount;
        uint64_t off = j->woff, seq = j->wseq;
        int fd = j->fd;
        pthread_mutex_unlock(&j->mu);

        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = PK_OK;
        if (frame) /* sealed here, off the serving thread (gts_jnl_submit_frame) */
            rc = seal_at(j, frame, count, seq);
        if (fd >= 0 && rc == PK_OK) {
            rc = write_all(fd, buf, len, off);
            if (rc == PK_OK && fdatasync(fd) != 0)
                rc = PK_ERR_IO;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);

        pthread_mutex_lock(&j->mu);
        j->err = rc;
        j->req = 0;
        j->syncs++;
        j->sync_us +=
            (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
        uint64_t one = 1;
        if (write(j->efd, &one, sizeof one) != (ssize_t)sizeof one)
            j->err = PK_ERR_IO;
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int gts_jnl_init(gts_jnl_t *j)
{
    memset(j, 0, sizeof *j);
    j->fd = -1;
    j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (j->efd < 0)
        return PK_ERR_IO;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (pthread_create(&j->th, NULL, sync_main, j) != 0) {
        close(j->efd);
        j->efd = -1;
        return PK_ERR_NOMEM;
    }
    j->th_started = 1;
    return PK_OK;
}

void gts_jnl_fini(gts_jnl_t *j)
{
    if (j->th_started) {
        pthread_mutex_lock(&j->mu);
        j->quit = 1;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->th, NULL);
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        j->th_started = 0;
    }
    if (j->fd >= 0)
        close(j->fd);
    j->fd = -1;
    if (j->efd >= 0)
        close(j->efd);
    j->efd = -1;
    pk_aead_clear(&j->aead);
}

static void dir_of(const char *path, char *dir, size_t n)
{
    const char *sl = strrchr(path, '/');
    if (!sl)
        snprintf(dir, n, ".");
    else if (sl == path)
        snprintf(dir, n, "/");
    else
        snprintf(dir, n, "%.*s", (int)(sl - path), path);
}

static int sync_dir(const char *path)
{
    char dir[GTS_JNL_PATH_MAX];
    dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return PK_ERR_IO;
    int rc = fsync(fd) == 0 ? PK_OK : PK_ERR_IO;
    close(fd);
    return rc;
}

int gts_jnl_create(gts_jnl_t *j, const char *base, const uint8_t kek[32], uint64_t gen)
{
    uint8_t salt[16], h[GTS_JNL_HDR_LEN], n[PK_AEAD_NONCE_LEN];
    int rc, fd;

    if (j->fd >= 0)
        close(j->fd);
    j->fd = -1;
    j->gen = gen;
    j->seq = 0;
    j->off = GTS_JNL_HDR_LEN;
    rc = pk_random(salt, sizeof salt);
    if (rc == PK_OK)
        rc = jnl_key(kek, gen, salt, &j->aead);
    if (rc != PK_OK || !base)
        return rc;
    if (gts_jnl_path(j->path, sizeof j->path, base, gen) != PK_OK)
        return PK_ERR_INVAL;
    fd = open(j->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? PK_ERR_EXISTS : PK_ERR_IO;
    hdr_fields(h, gen, salt);
    nonce_of(0, n);
    rc = pk_aead_seal(&j->aead, n, h, 48, NULL, 0, NULL, h + 48);
    if (rc == PK_OK)
        rc = write_all(fd, h, sizeof h, 0);
    if (rc == PK_OK && fsync(fd) != 0)
        rc = PK_ERR_IO;
    if (rc == PK_OK)
        rc = sync_dir(j->path);
    if (rc != PK_OK) {
        close(fd);
        unlink(j->path);
        return rc;
    }
    j->fd = fd;
    return PK_OK;
}

void gts_jnl_entry(uint8_t *ent, uint32_t dev_no, uint64_t delivered_seq,
                   const uint8_t rec[PK_TRIG_REC_LEN])
{
    pk_put_u32(ent, dev_no);
    pk_put_u64(ent + 4, delivered_seq);
    memcpy(ent + 12, rec, PK_TRIG_REC_LEN);
}

int gts_jnl_seal_frame(gts_jnl_t *j, uint8_t *buf, size_t count, size_t *len)
{
    if (count == 0 || count > GTS_JNL_FRAME_MAX)
        return PK_ERR_INVAL;
    int rc = seal_at(j, buf, count, j->seq + 1);
    if (rc != PK_OK)
        return rc;
    j->seq++;
    *len = GTS_JNL_FRAME_HDR + count * GTS_JNL_ENT_LEN + GTS_JNL_TAG_LEN;
    return PK_OK;
}

/* One request to the sync thread: write len bytes of buf at the journal's
 * end and fdatasync; with frame, seal it (count entries, as seq) first. */
static int submit(gts_jnl_t *j, const uint8_t *buf, size_t len, uint8_t *frame, size_t count,
                  uint64_t seq)
{
    if (j->busy) /* the previous request's completion is not collected yet */
        return PK_ERR_STATE;
    pthread_mutex_lock(&j->mu);
    j->busy = 1;
    j->wbuf = buf;
    j->wlen = len;
    j->wframe = frame;
    j->wcount = count;
    j->wseq = seq;
    j->woff = j->off;
    j->off += len;
    j->req = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return PK_OK;
}

int gts_jnl_submit(gts_jnl_t *j, const uint8_t *buf, size_t len)
{
    return submit(j, buf, len, NULL, 0, 0);
}

int gts_jnl_submit_frame(gts_jnl_t *j, uint8_t *buf, size_t count)
{
    if (count == 0 || count > GTS_JNL_FRAME_MAX)
        return PK_ERR_INVAL;
    int rc = submit(j, buf, GTS_JNL_FRAME_HDR + count * GTS_JNL_ENT_LEN + GTS_JNL_TAG_LEN, buf,
                    count, j->seq + 1);
    if (rc == PK_OK)
        j->seq++; /* a failed seal fails the request: the server stops */
    return rc;
}

int gts_jnl_done(gts_jnl_t *j)
{
    uint64_t v;
    if (read(j->efd, &v, sizeof v) != (ssize_t)sizeof v)
        return PK_ERR_BUSY;
    j->busy = 0;
    pthread_mutex_lock(&j->mu);
    int rc = j->err;
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* ---- replay ---- */

/* Lists the generations of base's journal files, sorted ascending. */
static int list_gens(const char *base, uint64_t **gens, size_t *n)
{
    char dir[GTS_JNL_PATH_MAX];
    const char *name = strrchr(base, '/');
    name = name ? name + 1 : base;
    size_t nl = strlen(name), cap = 0;
    dir_of(base, dir, sizeof dir);
    *gens = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? PK_OK : PK_ERR_IO;
    struct dirent *e;
    int rc = PK_OK;
    while ((e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        if (strncmp(s, name, nl) != 0 || s[nl] != '.' || strlen(s + nl + 1) != 16)
            continue;
        char *end = NULL;
        errno = 0;
        unsigned long long g = strtoull(s + nl + 1, &end, 16);
        if (errno || !end || *end)
            continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            uint64_t *ng = realloc(*gens, nc * sizeof *ng);
            if (!ng) {
                rc = PK_ERR_NOMEM;
                break;
            }
            *gens = ng;
            cap = nc;
        }
        (*gens)[(*n)++] = g;
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++) /* insertion sort: few files */
        for (size_t k = i; k > 0 && (*gens)[k - 1] > (*gens)[k]; k--) {
            uint64_t t = (*gens)[k];
            (*gens)[k] = (*gens)[k - 1];
            (*gens)[k - 1] = t;
        }
    return rc;
}

static int replay_file(const char *path, uint64_t gen, const uint8_t kek[32], gts_jnl_cb cb,
                       void *ctx)
{
    uint8_t h[GTS_JNL_HDR_LEN], fh[GTS_JNL_FRAME_HDR], n[PK_AEAD_NONCE_LEN];
    uint8_t *body = NULL;
    size_t bodycap = 0, bodylen = 0;
    pk_aead_t a = {0};
    int rc = PK_OK;
    FILE *f = fopen(path, "rbe");
    if (!f)
        return errno == ENOENT ? PK_OK : PK_ERR_IO;
    if (fread(h, 1, sizeof h, f) != sizeof h)
        goto out; /* crashed while creating: nothing was ever acknowledged from it */
    {
        uint8_t acc = 0; /* all zero: created, size set, header never written */
        for (size_t i = 0; i < sizeof h; i++)
            acc |= h[i];
        if (!acc)
            goto out;
    }
    rc = PK_ERR_MALFORMED;
    if (memcmp(h, jnl_magic, 8) != 0 || pk_get_u32(h + 8) != GTS_JNL_VERSION ||
        pk_get_u32(h + 12) != GTS_JNL_ENT_LEN || pk_get_u64(h + 16) != gen)
        goto out;
    rc = jnl_key(kek, gen, h + 24, &a);
    if (rc != PK_OK)
        goto out;
    nonce_of(0, n);
    rc = pk_aead_open(&a, n, h, 48, NULL, 0, h + 48, NULL);
    if (rc != PK_OK)
        goto out;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        rc = PK_ERR_IO;
        goto out;
    }
    uint64_t left = (uint64_t)st.st_size > sizeof h ? (uint64_t)st.st_size - sizeof h : 0;
    for (uint64_t seq = 1;; seq++) {
        if (left < sizeof fh || fread(fh, 1, sizeof fh, f) != sizeof fh)
            break; /* end, or a torn tail */
        left -= sizeof fh;
        uint32_t count = pk_get_u32(fh + 4);
        if (fh[0] != FRAME_T_GROUP || fh[1] || fh[2] || fh[3] || pk_get_u64(fh + 8) != seq ||
            count == 0 || count > GTS_JNL_FRAME_MAX)
            break;
        size_t ctlen = (size_t)count * GTS_JNL_ENT_LEN;
        /* the count is not authenticated before the tag: a frame longer
         * than the rest of the file is a torn tail, and nothing is
         * allocated for it (the buffer never exceeds the file) */
        if (ctlen + GTS_JNL_TAG_LEN > left)
            break;
        left -= ctlen + GTS_JNL_TAG_LEN;
        if (ctlen + GTS_JNL_TAG_LEN > bodycap) {
            uint8_t *nb = malloc(ctlen + GTS_JNL_TAG_LEN);
            if (!nb) {
                rc = PK_ERR_NOMEM;
                break;
            }
            if (body) {
                pk_wipe(body, bodylen);
                free(body);
            }
            body = nb;
            bodycap = ctlen + GTS_JNL_TAG_LEN;
        }
        if (fread(body, 1, ctlen + GTS_JNL_TAG_LEN, f) != ctlen + GTS_JNL_TAG_LEN)
            break; /* torn */
        bodylen = ctlen;
        nonce_of(seq, n);
        if (pk_aead_open(&a, n, fh, sizeof fh, body, ctlen, body + ctlen, body) != PK_OK)
            break; /* torn: this group was never acknowledged, nor anything after */
        for (uint32_t i = 0; i < count && rc == PK_OK; i++) {
            const uint8_t *e = body + (size_t)i * GTS_JNL_ENT_LEN;
            rc = cb(ctx, pk_get_u32(e), pk_get_u64(e + 4), e + 12);
        }
        if (rc != PK_OK)
            break;
    }
out:
    if (body) {
        pk_wipe(body, bodylen);
        free(body);
    }
    pk_aead_clear(&a);
    fclose(f);
    return rc;
}

int gts_jnl_replay(const char *base, const uint8_t kek[32], uint64_t after_gen, gts_jnl_cb cb,
                   void *ctx, uint64_t *max_gen)
{
    uint64_t *gens;
    size_t n;
    int rc = list_gens(base, &gens, &n);
    *max_gen = after_gen;
    for (size_t i = 0; rc == PK_OK && i < n; i++) {
        char path[GTS_JNL_PATH_MAX + 20];
        if (gens[i] <= after_gen)
            continue;
        rc = gts_jnl_path(path, sizeof path, base, gens[i]);
        if (rc == PK_OK)
            rc = replay_file(path, gens[i], kek, cb, ctx);
        if (rc == PK_OK)
            *max_gen = gens[i];
    }
    free(gens);
    return rc;
}

int gts_jnl_path(char *out, size_t n, const char *base, uint64_t gen)
{
    int l = snprintf(out, n, "%s.%016llx", base, (unsigned long long)gen);
    return l < 0 || (size_t)l >= n ? PK_ERR_INVAL : PK_OK;
}

int gts_jnl_remove_upto(const char *base, uint64_t upto)
{
    uint64_t *gens;
    size_t n;
    int rc = list_gens(base, &gens, &n), removed = 0;
    for (size_t i = 0; rc == PK_OK && i < n; i++) {
        char path[GTS_JNL_PATH_MAX + 20];
        if (gens[i] > upto)
            continue;
        rc = gts_jnl_path(path, sizeof path, base, gens[i]);
        if (rc == PK_OK && unlink(path) != 0 && errno != ENOENT)
            rc = PK_ERR_IO;
        removed = 1;
    }
    free(gens);
    if (rc == PK_OK && removed)
        rc = sync_dir(base);
    return rc;
}
