/*
 * Small files that hold secrets (device keys, trigger identities), for the
 * shells: written atomically (temporary file, fsync, rename, fsync of the
 * directory, so the new content is durable before the caller goes on) with
 * mode 0600, and read only when nobody else may read them.
 */
#ifndef PK_SRC_COMMON_SECFILE_H
#define PK_SRC_COMMON_SECFILE_H

#include <stddef.h>

#define PK_SECFILE_PATH_MAX 1024

/* "dir/name" into out[PK_SECFILE_PATH_MAX]. PK_OK or PK_ERR_INVAL (too long). */
int pk_secfile_path(char *out, const char *dir, const char *name);

/* Writes dir/name atomically and durably with mode 0600 (O_NOFOLLOW).
 * PK_OK, PK_ERR_INVAL (path too long) or PK_ERR_IO. */
int pk_secfile_write(const char *dir, const char *name, const void *data, size_t len);

/* Reads dir/name into buf[0..cap), *len bytes. PK_OK, PK_ERR_NOTFOUND,
 * PK_ERR_SPACE (larger than cap), PK_ERR_DENIED (group or others have any
 * permission: mode & 077), PK_ERR_INVAL, PK_ERR_IO (also: not a regular
 * file, or a symbolic link). */
int pk_secfile_read(const char *dir, const char *name, void *buf, size_t cap, size_t *len);

/* Makes renames and unlinks in dir durable (fsync of the directory; a file
 * system that cannot sync directories counts as done). PK_OK or PK_ERR_IO. */
int pk_secfile_sync_dir(const char *dir);

/* Splits path into its directory ("." when none) and file name, each
 * NUL-terminated in dir[PK_SECFILE_PATH_MAX] and name[PK_SECFILE_PATH_MAX].
 * PK_OK or PK_ERR_INVAL (empty, too long, or ending in '/'). */
int pk_secfile_split(const char *path, char *dir, char *name);

#endif
