/*
 * `proxkey device mk ...`: the master-key client (Toshiba US 9,294,269;
 * DESIGN 3.6; docs/protocol.md "Master keys from the kms to the clients") around the pure pk_mk
 * core (proto/mk): discovery, mutual authentication with the domain's master key, the
 * individual-key table, renewal, the FIG. 8 cascade and traffic under the
 * individual key (record layer). A shell: sockets, clock, files, printing.
 *
 * State directory additions (0600, atomic writes, see device_cmd.h):
 *   registration   holds the master-key block from the ACCEPT (current and
 *                  next master key of the device's domain)
 *   mk-table       the individual-key table, format (version 1):
 *                  "PKMT" ver(1)=1 n(1) n x { key_id(4) key(16) expiry_ms(8)
 *                  created_ms(8) mk_id(4) role(1) flags(1) block8(partner)
 *                  tx_next(8) }
 *                  tx_next is the next record counter `mk send` may use under
 *                  that key; every writer holds the state lock and keeps the
 *                  larger of the file's and its own value, so a counter is
 *                  never used twice.
 */
#ifndef PK_SRC_DEVICE_DEVICE_MK_H
#define PK_SRC_DEVICE_DEVICE_MK_H

#include "device_cmd.h"

#define PK_DMK_TABLE_CAP 64   /* individual keys one client keeps */
#define PK_DMK_T_DATA    0x20 /* record type of client-to-client traffic */

/* The mk-table file in memory: the entries and each one's tx_next. */
typedef struct dmk_file {
    pk_mk_entry_t e[PK_DMK_TABLE_CAP];
    uint64_t tx[PK_DMK_TABLE_CAP];
    size_t n;
} dmk_file_t;

/* The largest mk-table file: header, then PK_DMK_TABLE_CAP entries of at most
 * key_id key expiry created mk_id role flags block8(partner) tx_next. */
#define PK_DMK_TABLE_MAX                                                                           \
    (5 + 1 + PK_DMK_TABLE_CAP * (4 + PK_MK_IK_LEN + 8 + 8 + 4 + 1 + 1 + 1 + PK_MK_ID_MAX + 8))

/* Parses an mk-table file image buf[0..len) (format above) into *f: PK_OK, or
 * PK_ERR_MALFORMED with *f wiped. Pure (no I/O); the file reader's parser. */
int pk_dmk_table_parse(const uint8_t *buf, size_t len, dmk_file_t *f);
/* Writes f as an mk-table file image into buf[0..cap), *len its length:
 * PK_OK or PK_ERR_SPACE. */
int pk_dmk_table_encode(const dmk_file_t *f, uint8_t *buf, size_t cap, size_t *len);

/* `proxkey device mk run|send|refresh|show` (argv[0] = "mk"). */
int pk_cmd_device_mk(int argc, char **argv);

/* Prints the master keys of d and the individual-key table of s (for
 * `proxkey device keys`): values masked unless reveal. */
void pk_dmk_print(const pk_dstate_t *s, const pk_reg_dev_t *d, int reveal);

#endif
