/*
 * Secrets at rest: AES-256-GCM sealing bound to the row, and the KEK file.
 */
#include "store/wrap.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AAD_LABEL     "proxkey-wrap"
#define AAD_LABEL_LEN (sizeof(AAD_LABEL) - 1)
#define BUCKET_MAX    63
#define KEY_MAX       255
#define AAD_MAX       (AAD_LABEL_LEN + 1 + 1 + BUCKET_MAX + 1 + KEY_MAX)

/* The associated data naming the row; 0 when bucket or key is out of range. */
static size_t build_aad(uint8_t out[AAD_MAX], const char *bucket, const uint8_t *key, size_t klen)
{
    if (bucket == NULL || key == NULL || klen == 0 || klen > KEY_MAX)
        return 0;
    size_t bl = strnlen(bucket, BUCKET_MAX + 1);
    if (bl == 0 || bl > BUCKET_MAX)
        return 0;
    size_t n = 0;
    memcpy(out, AAD_LABEL, AAD_LABEL_LEN);
    n += AAD_LABEL_LEN;
    out[n++] = PK_WRAP_VERSION;
    out[n++] = (uint8_t)bl;
    memcpy(out + n, bucket, bl);
    n += bl;
    out[n++] = (uint8_t)klen;
    memcpy(out + n, key, klen);
    return n + klen;
}

int pk_wrap_ctx_init(pk_wrap_ctx_t *w, const uint8_t kek[PK_WRAP_KEK_LEN])
{
    if (w == NULL || kek == NULL)
        return PK_ERR_INVAL;
    return pk_aead_init(&w->aead, kek, PK_WRAP_KEK_LEN);
}

void pk_wrap_ctx_clear(pk_wrap_ctx_t *w)
{
    if (w != NULL)
        pk_aead_clear(&w->aead);
}

int pk_wrap_ctx_seal(pk_wrap_ctx_t *w, const pk_rng_t *rng, const char *bucket, const uint8_t *key,
                     size_t klen, const uint8_t *secret, size_t len, uint8_t *out, size_t cap,
                     size_t *outlen)
{
    uint8_t aad[AAD_MAX];
    size_t aadlen = build_aad(aad, bucket, key, klen);
    if (w == NULL || aadlen == 0 || (secret == NULL && len != 0) || out == NULL || outlen == NULL ||
        len > SIZE_MAX - PK_WRAP_OVERHEAD)
        return PK_ERR_INVAL;
    *outlen = len + PK_WRAP_OVERHEAD;
    if (cap < *outlen)
        return PK_ERR_SPACE;
    if (rng == NULL)
        rng = &pk_rng_system;
    uint8_t *nonce = out + 1, *ct = out + 1 + PK_AEAD_NONCE_LEN, *tag = ct + len;
    int rc = pk_rng_fill(rng, nonce, PK_AEAD_NONCE_LEN);
    if (rc == PK_OK)
        rc = pk_aead_seal(&w->aead, nonce, aad, aadlen, secret, len, len ? ct : NULL, tag);
    if (rc == PK_OK)
        out[0] = PK_WRAP_VERSION;
    else
        pk_wipe(out, *outlen);
    return rc;
}

int pk_wrap_ctx_open(pk_wrap_ctx_t *w, const char *bucket, const uint8_t *key, size_t klen,
                     const uint8_t *blob, size_t blen, uint8_t *secret, size_t cap, size_t *outlen)
{
    uint8_t aad[AAD_MAX];
    size_t aadlen = build_aad(aad, bucket, key, klen);
    if (w == NULL || aadlen == 0 || blob == NULL || outlen == NULL || (secret == NULL && cap))
        return PK_ERR_INVAL;
    if (blen < PK_WRAP_OVERHEAD)
        return PK_ERR_MALFORMED;
    if (blob[0] != PK_WRAP_VERSION)
        return PK_ERR_VERSION;
    size_t len = blen - PK_WRAP_OVERHEAD;
    *outlen = len;
    if (cap < len)
        return PK_ERR_SPACE;
    const uint8_t *nonce = blob + 1, *ct = blob + 1 + PK_AEAD_NONCE_LEN, *tag = ct + len;
    /* pk_aead_open wipes the output when the tag does not verify */
    return pk_aead_open(&w->aead, nonce, aad, aadlen, len ? ct : NULL, len, tag,
                        len ? secret : NULL);
}

int pk_wrap_seal(const uint8_t kek[PK_WRAP_KEK_LEN], const pk_rng_t *rng, const char *bucket,
                 const uint8_t *key, size_t klen, const uint8_t *secret, size_t len, uint8_t *out,
                 size_t cap, size_t *outlen)
{
    pk_wrap_ctx_t w = {0};
    int rc = pk_wrap_ctx_init(&w, kek);
    if (rc == PK_OK)
        rc = pk_wrap_ctx_seal(&w, rng, bucket, key, klen, secret, len, out, cap, outlen);
    pk_wrap_ctx_clear(&w);
    return rc;
}

int pk_wrap_open(const uint8_t kek[PK_WRAP_KEK_LEN], const char *bucket, const uint8_t *key,
                 size_t klen, const uint8_t *blob, size_t blen, uint8_t *secret, size_t cap,
                 size_t *outlen)
{
    pk_wrap_ctx_t w = {0};
    int rc = pk_wrap_ctx_init(&w, kek);
    if (rc == PK_OK)
        rc = pk_wrap_ctx_open(&w, bucket, key, klen, blob, blen, secret, cap, outlen);
    pk_wrap_ctx_clear(&w);
    return rc;
}

/* ---- the KEK file ---- */

/* Constant-time hex digit value (libsodium's sodium_hex2bin method): sets
 * *bad on a non-hex character without branching on the character. */
static uint8_t hex_nibble(uint8_t c, unsigned *bad)
{
    unsigned num = c ^ 48u;                    /* '0'..'9' -> 0..9 */
    unsigned num_ok = ((num - 10u) >> 8) & 1u; /* num < 10 */
    unsigned alpha = (c & ~32u) - 55u;         /* 'A'..'F', 'a'..'f' -> 10..15 */
    unsigned alpha_ok = (((alpha - 10u) ^ (alpha - 16u)) >> 8) & 1u; /* 10 <= alpha < 16 */
    *bad |= (num_ok | alpha_ok) ^ 1u;
    return (uint8_t)(((0u - num_ok) & num) | ((0u - alpha_ok) & alpha));
}

/* Constant-time nibble to lower-case hex digit. */
static char hex_digit(unsigned n)
{
    return (char)(n + 48u + (((9u - n) >> 8) & 39u));
}

__attribute__((format(printf, 3, 4))) static void set_why(char *why, size_t whylen, const char *fmt,
                                                          ...)
{
    va_list ap;
    if (why == NULL || whylen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

int pk_kek_load(const char *path, uint8_t kek[PK_WRAP_KEK_LEN], char *why, size_t whylen)
{
    int rc = PK_ERR_IO, fd = -1;
    uint8_t buf[2 * PK_WRAP_KEK_LEN + 2];
    size_t got = 0;
    struct stat st;

    if (why != NULL && whylen > 0)
        why[0] = '\0';
    if (path == NULL || kek == NULL)
        return PK_ERR_INVAL;
    memset(kek, 0, PK_WRAP_KEK_LEN);
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ELOOP)
            set_why(why, whylen, "kek file is a symbolic link");
        else
            set_why(why, whylen, "cannot open kek file: %s", strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_why(why, whylen, "kek file is not a regular file");
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        set_why(why, whylen, "kek file mode %04o allows group/other access; chmod 600 it",
                (unsigned)(st.st_mode & 07777));
        rc = PK_ERR_DENIED;
        goto out;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        set_why(why, whylen, "kek file is owned by uid %u, not by this user or root",
                (unsigned)st.st_uid);
        rc = PK_ERR_DENIED;
        goto out;
    }
    for (int i = 0; i < 8 && got < sizeof(buf); i++) { /* short reads: bounded retries */
        ssize_t n = read(fd, buf + got, sizeof(buf) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            set_why(why, whylen, "cannot read kek file");
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    rc = PK_ERR_MALFORMED;
    if (got == PK_WRAP_KEK_LEN) {
        memcpy(kek, buf, PK_WRAP_KEK_LEN);
        rc = PK_OK;
    } else if (got == 2 * PK_WRAP_KEK_LEN ||
               (got == 2 * PK_WRAP_KEK_LEN + 1 && buf[2 * PK_WRAP_KEK_LEN] == '\n')) {
        unsigned bad = 0;
        for (size_t i = 0; i < PK_WRAP_KEK_LEN; i++)
            kek[i] =
                (uint8_t)(hex_nibble(buf[2 * i], &bad) << 4 | hex_nibble(buf[2 * i + 1], &bad));
        rc = bad ? PK_ERR_MALFORMED : PK_OK;
    }
    if (rc != PK_OK)
        set_why(why, whylen, "kek file must hold 32 raw bytes or 64 hex digits");
out:
    if (rc != PK_OK)
        pk_wipe(kek, PK_WRAP_KEK_LEN);
    pk_wipe(buf, sizeof(buf));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* fsyncs the directory holding path, so a new file's name is durable. */
static int sync_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (slash == NULL) {
        dir[0] = '.';
        n = 1;
    } else if (n == 0) {
        dir[0] = '/';
        n = 1;
    } else if (n >= sizeof(dir)) {
        return PK_ERR_IO;
    } else {
        memcpy(dir, path, n);
    }
    dir[n] = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return PK_ERR_IO;
    int rc = fsync(fd) == 0 ? PK_OK : PK_ERR_IO;
    close(fd);
    return rc;
}

int pk_kek_generate(const char *path)
{
    uint8_t kek[PK_WRAP_KEK_LEN];
    char text[2 * PK_WRAP_KEK_LEN + 1];
    int rc = PK_ERR_IO, fd = -1, created = 0;

    if (path == NULL || path[0] == '\0')
        return PK_ERR_INVAL;
    rc = pk_random(kek, sizeof(kek));
    if (rc != PK_OK)
        goto out;
    for (size_t i = 0; i < PK_WRAP_KEK_LEN; i++) {
        text[2 * i] = hex_digit(kek[i] >> 4);
        text[2 * i + 1] = hex_digit(kek[i] & 15u);
    }
    text[2 * PK_WRAP_KEK_LEN] = '\n';
    rc = PK_ERR_IO;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? PK_ERR_EXISTS : PK_ERR_IO;
        goto out;
    }
    created = 1;
    if (fchmod(fd, 0600) != 0) /* the umask may have taken away more */
        goto out;
    size_t off = 0;
    for (int i = 0; i < 8 && off < sizeof(text); i++) {
        ssize_t n = write(fd, text + off, sizeof(text) - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto out;
        off += (size_t)n;
    }
    if (off != sizeof(text) || fsync(fd) != 0)
        goto out;
    rc = sync_dir(path);
out:
    if (fd >= 0)
        close(fd);
    if (rc != PK_OK && created)
        unlink(path);
    pk_wipe(kek, sizeof(kek));
    pk_wipe(text, sizeof(text));
    return rc;
}
