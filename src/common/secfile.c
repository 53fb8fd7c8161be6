/* Secret-bearing state files for the shells (secfile.h). */
#include "secfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

int pk_secfile_path(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PK_SECFILE_PATH_MAX, "%s/%s", dir, name);
    return n > 0 && n < PK_SECFILE_PATH_MAX ? PK_OK : PK_ERR_INVAL;
}

int pk_secfile_write(const char *dir, const char *name, const void *data, size_t len)
{
    char path[PK_SECFILE_PATH_MAX], tmp[PK_SECFILE_PATH_MAX + 8];
    int rc = PK_ERR_IO, fd;
    if (pk_secfile_path(path, dir, name) != PK_OK)
        return PK_ERR_INVAL;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return PK_ERR_IO;
    if (fchmod(fd, 0600) != 0)
        goto out;
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto out;
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0)
        goto out;
    rc = PK_OK;
out:
    if (close(fd) != 0)
        rc = PK_ERR_IO;
    if (rc == PK_OK && rename(tmp, path) != 0)
        rc = PK_ERR_IO;
    if (rc != PK_OK) {
        unlink(tmp);
        return rc;
    }
    /* the rename itself durable: a caller about to use the new content
     * (a device's next identity) must not find the old one after a crash */
    return pk_secfile_sync_dir(dir);
}

int pk_secfile_read(const char *dir, const char *name, void *buf, size_t cap, size_t *len)
{
    char path[PK_SECFILE_PATH_MAX];
    struct stat st;
    size_t got = 0;
    int rc = PK_OK;
    if (pk_secfile_path(path, dir, name) != PK_OK)
        return PK_ERR_INVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? PK_ERR_NOTFOUND : PK_ERR_IO;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = PK_ERR_IO;
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        rc = PK_ERR_DENIED;
        goto out;
    }
    if ((size_t)st.st_size > cap) {
        rc = PK_ERR_SPACE;
        goto out;
    }
    while (got < cap) {
        ssize_t r = read(fd, (uint8_t *)buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = PK_ERR_IO;
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    *len = got;
out:
    close(fd);
    return rc;
}

int pk_secfile_split(const char *path, char *dir, char *name)
{
    size_t n = strlen(path);
    if (n == 0 || n >= PK_SECFILE_PATH_MAX || path[n - 1] == '/')
        return PK_ERR_INVAL;
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
        memcpy(name, path, n + 1);
    } else if (slash == path) {
        strcpy(dir, "/");
        memcpy(name, slash + 1, n);
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
        memcpy(name, slash + 1, n - (size_t)(slash - path));
    }
    return PK_OK;
}

int pk_secfile_sync_dir(const char *dir)
{
    int rc = PK_OK, dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return PK_ERR_IO;
    if (fsync(dfd) != 0 && errno != EINVAL) /* EINVAL: no directory sync here */
        rc = PK_ERR_IO;
    close(dfd);
    return rc;
}
