/*
 * The `proxkey device` shell: a state directory around libproxkey-device
 * (docs/device.md). Everything here does I/O; the protocol is in the cores.
 *
 * State directory (created 0700; every file 0600, written by temp file +
 * fsync + rename + directory fsync, so a crash leaves the old or the new file):
 *   identity       text: "id = ID" and "key = HEX" (the device key K)
 *   node           text: "addr = ADDR", "node_id = ID", "local = ADDR" (the
 *                  UDP address the device registered from; reused so the node
 *                  can reach the device with indications)
 *   registration   pk_device_reg_export() blob (K_reg, root keys, counters)
 *   link-i-HEX     an established link we initiated to peer HEX(peer id):
 *   link-r-HEX     ... that the peer initiated; format: tolen(1) to(tolen)
 *                  then the pk_device_link_export() blob (no keys)
 *   lock           flock()ed while a command changes state
 */
#ifndef PK_SRC_DEVICE_DEVICE_CMD_H
#define PK_SRC_DEVICE_DEVICE_CMD_H

#include <stddef.h>
#include <stdint.h>

#include "device/device.h"

#define PK_DSTATE_PATH_MAX 1024
#define PK_DSTATE_ADDR_MAX 64

typedef struct pk_dstate {
    char dir[PK_DSTATE_PATH_MAX];
    pk_reg_id_t id;
    uint8_t k[32];
    size_t klen;
    int has_node;
    char node_addr[PK_DSTATE_ADDR_MAX];
    pk_reg_id_t node_id;
    char local[PK_DSTATE_ADDR_MAX]; /* "" when never registered */
    int lock_fd;
} pk_dstate_t;

/* Creates dir (0700) when create, else requires it; refuses a directory or
 * file readable by others (mode & 077). PK_OK, PK_ERR_NOTFOUND, PK_ERR_DENIED
 * (permissions), PK_ERR_IO. */
int pk_dstate_dir(const char *dir, int create);

/* Writes dir/name atomically with mode 0600. PK_OK or PK_ERR_IO. */
int pk_dstate_write(const char *dir, const char *name, const void *data, size_t len);
/* Reads dir/name into buf[0..cap). PK_OK, PK_ERR_NOTFOUND, PK_ERR_SPACE,
 * PK_ERR_DENIED (mode & 077 != 0), PK_ERR_IO. */
int pk_dstate_read(const char *dir, const char *name, void *buf, size_t cap, size_t *len);

/* Parses hex (16 or 32 bytes) into k. PK_OK or PK_ERR_MALFORMED. */
int pk_dstate_parse_key(const char *hex, uint8_t k[32], size_t *klen);

/* identity + node files. load: PK_ERR_NOTFOUND when no identity (not
 * initialised); the node part is optional (s->has_node). */
int pk_dstate_save_identity(const pk_dstate_t *s);
int pk_dstate_save_node(const pk_dstate_t *s);
int pk_dstate_load(pk_dstate_t *s, const char *dir);

/* Deletes what dir holds for the previous identity's peers: the
 * individual-key table and its receive windows (mk-table, then mk-rx) and
 * every stored direct link (link-*); then syncs the directory. For `init
 * --force` with another device ID. PK_OK or PK_ERR_IO. */
int pk_dstate_forget_peers(const char *dir);
void pk_dstate_clear(pk_dstate_t *s);

/* The registration core's configuration for s (borrowing s->k). */
pk_reg_dev_cfg_t pk_dstate_reg_cfg(const pk_dstate_t *s, uint64_t rto_ms, unsigned tries);

/* registration file <-> d (d zeroed or cleared). load: PK_ERR_NOTFOUND when
 * never registered. */
int pk_dstate_save_reg(const pk_dstate_t *s, const pk_reg_dev_t *d);
int pk_dstate_load_reg(const pk_dstate_t *s, pk_reg_dev_t *d);
/* The registrations of a command keep their root keys in one of two static
 * key stores: pk_dstate_reg_cfg() and pk_dstate_load_reg() use the first;
 * _load_reg_aside() reads a second registration beside it into the other,
 * and pk_dstate_reg_move() makes it the command's (clearing `to`). */
int pk_dstate_load_reg_aside(const pk_dstate_t *s, pk_reg_dev_t *d);
void pk_dstate_reg_move(pk_reg_dev_t *to, pk_reg_dev_t *from);

/* link files (role PK_LINK_INITIATOR -> link-i-, RESPONDER -> link-r-). */
int pk_dstate_save_link(const pk_dstate_t *s, const pk_link_t *l, const char *to);
int pk_dstate_load_link(const pk_dstate_t *s, int role, const uint8_t *peer, size_t peer_len,
                        const pk_link_cfg_t *cfg, pk_link_t *l, char to[PK_DSTATE_ADDR_MAX]);
int pk_dstate_drop_link(const pk_dstate_t *s, int role, const uint8_t *peer, size_t peer_len);

/* Exclusive lock on dir/lock (blocks up to ~5 s). PK_OK or PK_ERR_BUSY. */
int pk_dstate_lock(pk_dstate_t *s);
void pk_dstate_unlock(pk_dstate_t *s);

/* `proxkey device ...` (argv[0] = "device"). */
int pk_cmd_device(int argc, char **argv);

#endif
