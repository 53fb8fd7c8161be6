/* The `proxkey device` state directory (device_cmd.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "device_cmd.h"
#include "secfile.h"

int pk_dstate_dir(const char *dir, int create)
{
    struct stat st;
    if (strlen(dir) + 64 >= PK_DSTATE_PATH_MAX)
        return PK_ERR_INVAL;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT || !create)
            return errno == ENOENT ? PK_ERR_NOTFOUND : PK_ERR_IO;
        if (mkdir(dir, 0700) != 0)
            return PK_ERR_IO;
        if (stat(dir, &st) != 0)
            return PK_ERR_IO;
    }
    if (!S_ISDIR(st.st_mode))
        return PK_ERR_IO;
    if ((st.st_mode & 077) != 0) {
        if (!create)
            return PK_ERR_DENIED;
        if (chmod(dir, 0700) != 0) /* init tightens a directory it was given */
            return PK_ERR_IO;
    }
    return PK_OK;
}

int pk_dstate_write(const char *dir, const char *name, const void *data, size_t len)
{
    return pk_secfile_write(dir, name, data, len);
}

int pk_dstate_read(const char *dir, const char *name, void *buf, size_t cap, size_t *len)
{
    return pk_secfile_read(dir, name, buf, cap, len);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int pk_dstate_parse_key(const char *hex, uint8_t k[32], size_t *klen)
{
    size_t n = strlen(hex);
    int bad = 0;
    if (n != 32 && n != 64)
        return PK_ERR_MALFORMED;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval((unsigned char)hex[2 * i]), lo = hexval((unsigned char)hex[2 * i + 1]);
        bad |= hi < 0 || lo < 0;
        k[i] = (uint8_t)((hi & 15) << 4 | (lo & 15));
    }
    if (bad) {
        pk_wipe(k, 32);
        return PK_ERR_MALFORMED;
    }
    *klen = n / 2;
    return PK_OK;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = '\0';
}

int pk_dstate_save_identity(const pk_dstate_t *s)
{
    char buf[256], kh[65];
    hex(s->k, s->klen, kh);
    int n = snprintf(buf, sizeof buf, "id = %.*s\nkey = %s\n", (int)s->id.len,
                     (const char *)s->id.b, kh);
    int rc = n > 0 && (size_t)n < sizeof buf ? pk_dstate_write(s->dir, "identity", buf, (size_t)n)
                                             : PK_ERR_INVAL;
    pk_wipe(buf, sizeof buf);
    pk_wipe(kh, sizeof kh);
    return rc;
}

int pk_dstate_save_node(const pk_dstate_t *s)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "addr = %s\nnode_id = %.*s\nlocal = %s\n", s->node_addr,
                     (int)s->node_id.len, (const char *)s->node_id.b, s->local);
    if (n <= 0 || (size_t)n >= sizeof buf)
        return PK_ERR_INVAL;
    return pk_dstate_write(s->dir, "node", buf, (size_t)n);
}

/* Finds "name = value" in a text file's lines; copies value into out. */
static int kv(const char *text, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, nl) != 0)
            continue;
        const char *q = p + nl;
        while (*q == ' ')
            q++;
        if (*q != '=')
            continue;
        q++;
        while (*q == ' ')
            q++;
        size_t n = strcspn(q, "\n");
        if (n >= cap)
            return PK_ERR_MALFORMED;
        memcpy(out, q, n);
        out[n] = '\0';
        return PK_OK;
    }
    return PK_ERR_NOTFOUND;
}

int pk_dstate_load(pk_dstate_t *s, const char *dir)
{
    char text[1024], v[256];
    size_t len = 0;
    int rc;
    memset(s, 0, sizeof *s);
    s->lock_fd = -1;
    if (strlen(dir) >= sizeof s->dir - 64)
        return PK_ERR_INVAL;
    strcpy(s->dir, dir);
    if ((rc = pk_dstate_dir(dir, 0)) != PK_OK)
        return rc;
    rc = pk_dstate_read(dir, "identity", text, sizeof text - 1, &len);
    if (rc != PK_OK)
        goto out;
    text[len] = '\0';
    if (kv(text, "id", v, sizeof v) != PK_OK || pk_reg_id_set(&s->id, v, strlen(v)) != PK_OK ||
        kv(text, "key", v, sizeof v) != PK_OK || pk_dstate_parse_key(v, s->k, &s->klen) != PK_OK) {
        rc = PK_ERR_MALFORMED;
        goto out;
    }
    pk_wipe(text, sizeof text);
    rc = pk_dstate_read(dir, "node", text, sizeof text - 1, &len);
    if (rc == PK_ERR_NOTFOUND) {
        rc = PK_OK;
        goto out;
    }
    if (rc != PK_OK)
        goto out;
    text[len] = '\0';
    if (kv(text, "addr", s->node_addr, sizeof s->node_addr) != PK_OK ||
        kv(text, "node_id", v, sizeof v) != PK_OK ||
        pk_reg_id_set(&s->node_id, v, strlen(v)) != PK_OK) {
        rc = PK_ERR_MALFORMED;
        goto out;
    }
    if (kv(text, "local", s->local, sizeof s->local) != PK_OK)
        s->local[0] = '\0';
    s->has_node = 1;
out:
    pk_wipe(text, sizeof text);
    pk_wipe(v, sizeof v);
    return rc;
}

void pk_dstate_clear(pk_dstate_t *s)
{
    pk_dstate_unlock(s);
    pk_wipe(s->k, sizeof s->k);
}

/* The key stores of the command's registrations: [0] the one a command works
 * with, [1] a second one read beside it (pk_dstate_load_reg_aside). Room for
 * every key a device can be handed (PK_REG_PEERS_MAX, about 100 KB each). */
static pk_reg_key_t dstore[2][PK_REG_PEERS_MAX];

static pk_reg_dev_cfg_t reg_cfg(const pk_dstate_t *s, uint64_t rto_ms, unsigned tries, int which)
{
    pk_reg_dev_cfg_t c = {.dev_id = s->id,
                          .node_id = s->node_id,
                          .k = s->k,
                          .klen = s->klen,
                          .rto_ms = rto_ms,
                          .max_tries = tries,
                          .keys = dstore[which],
                          .nkeys = PK_REG_PEERS_MAX};
    return c;
}

pk_reg_dev_cfg_t pk_dstate_reg_cfg(const pk_dstate_t *s, uint64_t rto_ms, unsigned tries)
{
    return reg_cfg(s, rto_ms, tries, 0);
}

void pk_dstate_reg_move(pk_reg_dev_t *to, pk_reg_dev_t *from)
{
    pk_reg_dev_clear(to);
    *to = *from;
    if (from->store == dstore[1]) {
        memcpy(dstore[0], dstore[1], from->nstore * sizeof dstore[0][0]);
        pk_wipe(dstore[1], from->nstore * sizeof dstore[1][0]);
        to->store = dstore[0];
    }
    pk_wipe(from, sizeof *from);
}

int pk_dstate_save_reg(const pk_dstate_t *s, const pk_reg_dev_t *d)
{
    static uint8_t blob[PK_DEVICE_REG_STATE_MAX];
    size_t len = 0;
    int rc = pk_device_reg_export(d, blob, sizeof blob, &len);
    if (rc == PK_OK)
        rc = pk_dstate_write(s->dir, "registration", blob, len);
    pk_wipe(blob, sizeof blob);
    return rc;
}

static int load_reg(const pk_dstate_t *s, pk_reg_dev_t *d, int which)
{
    static uint8_t blob[PK_DEVICE_REG_STATE_MAX];
    size_t len = 0;
    if (!s->has_node)
        return PK_ERR_NOTFOUND;
    int rc = pk_dstate_read(s->dir, "registration", blob, sizeof blob, &len);
    if (rc == PK_OK) {
        pk_reg_dev_cfg_t cfg = reg_cfg(s, 500, 5, which);
        rc = pk_device_reg_import(d, &cfg, blob, len);
    }
    pk_wipe(blob, sizeof blob);
    return rc;
}

int pk_dstate_load_reg(const pk_dstate_t *s, pk_reg_dev_t *d)
{
    return load_reg(s, d, 0);
}

int pk_dstate_load_reg_aside(const pk_dstate_t *s, pk_reg_dev_t *d)
{
    return load_reg(s, d, 1);
}

static int link_name(char *out, size_t cap, int role, const uint8_t *peer, size_t peer_len)
{
    char h[2 * PK_LINK_ID_MAX + 1];
    if (peer_len < 1 || peer_len > PK_LINK_ID_MAX)
        return PK_ERR_INVAL;
    hex(peer, peer_len, h);
    snprintf(out, cap, "link-%c-%s", role == PK_LINK_INITIATOR ? 'i' : 'r', h);
    return PK_OK;
}

int pk_dstate_save_link(const pk_dstate_t *s, const pk_link_t *l, const char *to)
{
    uint8_t buf[1 + PK_DSTATE_ADDR_MAX + PK_DEVICE_LINK_STATE_MAX];
    char name[160];
    size_t tl = strlen(to), len = 0;
    int rc;
    if (tl >= PK_DSTATE_ADDR_MAX)
        return PK_ERR_INVAL;
    if ((rc = link_name(name, sizeof name, l->role, l->peer_id, l->peer_len)) != PK_OK)
        return rc;
    buf[0] = (uint8_t)tl;
    memcpy(buf + 1, to, tl);
    rc = pk_device_link_export(l, buf + 1 + tl, sizeof buf - 1 - tl, &len);
    if (rc == PK_OK)
        rc = pk_dstate_write(s->dir, name, buf, 1 + tl + len);
    return rc;
}

int pk_dstate_load_link(const pk_dstate_t *s, int role, const uint8_t *peer, size_t peer_len,
                        const pk_link_cfg_t *cfg, pk_link_t *l, char to[PK_DSTATE_ADDR_MAX])
{
    uint8_t buf[1 + PK_DSTATE_ADDR_MAX + PK_DEVICE_LINK_STATE_MAX];
    char name[160];
    size_t len = 0;
    int rc;
    if ((rc = link_name(name, sizeof name, role, peer, peer_len)) != PK_OK)
        return rc;
    if ((rc = pk_dstate_read(s->dir, name, buf, sizeof buf, &len)) != PK_OK)
        return rc;
    if (len < 1 || buf[0] >= PK_DSTATE_ADDR_MAX || len < 1u + buf[0])
        return PK_ERR_MALFORMED;
    memcpy(to, buf + 1, buf[0]);
    to[buf[0]] = '\0';
    return pk_device_link_import(l, cfg, buf + 1 + buf[0], len - 1 - buf[0]);
}

int pk_dstate_drop_link(const pk_dstate_t *s, int role, const uint8_t *peer, size_t peer_len)
{
    char name[160], path[PK_DSTATE_PATH_MAX];
    if (link_name(name, sizeof name, role, peer, peer_len) != PK_OK ||
        pk_secfile_path(path, s->dir, name) != PK_OK)
        return PK_ERR_INVAL;
    return unlink(path) == 0 || errno == ENOENT ? PK_OK : PK_ERR_IO;
}

int pk_dstate_lock(pk_dstate_t *s)
{
    char path[PK_DSTATE_PATH_MAX];
    if (s->lock_fd >= 0)
        return PK_OK;
    if (pk_secfile_path(path, s->dir, "lock") != PK_OK)
        return PK_ERR_INVAL;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return PK_ERR_IO;
    for (int i = 0; i < 500; i++) { /* bounded: ~5 s */
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            s->lock_fd = fd;
            return PK_OK;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(fd);
    return PK_ERR_BUSY;
}

void pk_dstate_unlock(pk_dstate_t *s)
{
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
        s->lock_fd = -1;
    }
}

int pk_dstate_forget_peers(const char *dir)
{
    char path[PK_DSTATE_PATH_MAX];
    int rc = PK_OK;
    /* the key table before its receive windows: without the keys, no record
     * the windows guard against can open */
    static const char *const names[] = {"mk-table", "mk-rx"};
    for (size_t i = 0; i < 2 && rc == PK_OK; i++)
        if (pk_secfile_path(path, dir, names[i]) != PK_OK || (unlink(path) != 0 && errno != ENOENT))
            rc = PK_ERR_IO;
    DIR *d = rc == PK_OK ? opendir(dir) : NULL;
    if (rc == PK_OK && !d)
        rc = PK_ERR_IO;
    for (struct dirent *e; d && rc == PK_OK && (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "link-", 5) != 0)
            continue;
        if (pk_secfile_path(path, dir, e->d_name) != PK_OK ||
            (unlink(path) != 0 && errno != ENOENT))
            rc = PK_ERR_IO;
    }
    if (d)
        closedir(d);
    return rc == PK_OK ? pk_secfile_sync_dir(dir) : rc;
}
