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
 *   mk-rx          the receive replay windows of `mk run`, one per individual
 *                  key it has accepted a record under, format (version 1):
 *                  "PKMR" ver(1)=1 block8(client id) n(1)
 *                  n x { key_id(4) created_ms(8) window(136) }
 *                  window = pk_record_rx_export() (top, 16 ring words). A key
 *                  is named by its key ID and its table row's created_ms (a
 *                  later key may reuse a key ID). Written (atomically, 0600,
 *                  fsync) once per batch of records `mk run` accepts, before
 *                  they are printed; only `mk run` writes it (mk-run.lock).
 *   mk-run.lock    flock()ed by `mk run` for its whole life: one receiver per
 *                  directory, so one writer of mk-rx and one set of windows.
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

/* The saved receive windows (mk-rx) at most: the keys of the table as last
 * written to mk-table plus the keys that took a record since (an entry goes
 * only once mk-table has been written without its key). */
#define PK_DMK_RX_CAP       (2 * PK_DMK_TABLE_CAP)
#define PK_DMK_RX_ENTRY_LEN (4 + 8 + PK_RECORD_RX_STATE_LEN) /* 148 */
#define PK_DMK_RX_MAX       (4 + 1 + 1 + PK_MK_ID_MAX + 1 + PK_DMK_RX_CAP * PK_DMK_RX_ENTRY_LEN)

/* One saved window: the key (ID and the created_ms of its table row). */
typedef struct dmk_rxwin {
    uint32_t key_id;
    uint64_t created_ms;
    uint8_t w[PK_RECORD_RX_STATE_LEN];
} dmk_rxwin_t;

/* The mk-rx file in memory: whose it is, and the windows. */
typedef struct dmk_rx_file {
    uint8_t id[PK_MK_ID_MAX];
    size_t id_len;
    dmk_rxwin_t e[PK_DMK_RX_CAP];
    size_t n;
} dmk_rx_file_t;

/* Parses an mk-rx file image buf[0..len) (format above) into *f: PK_OK;
 * PK_ERR_VERSION (the magic is right, the version is not); PK_ERR_MALFORMED
 * (anything else: a length that is not exact, an ID of 0 or more than
 * PK_MK_ID_MAX bytes, n > PK_DMK_RX_CAP, a key ID 0, a key twice, a window
 * pk_record_rx_check() refuses). On failure *f is wiped. Whose file it is
 * (f->id) is the caller's check. Pure (no I/O). */
int pk_dmk_rx_parse(const uint8_t *buf, size_t len, dmk_rx_file_t *f);
/* Writes f as an mk-rx file image into buf[0..cap), *len its length: PK_OK,
 * PK_ERR_SPACE, or PK_ERR_INVAL (f->id_len or f->n out of range). */
int pk_dmk_rx_encode(const dmk_rx_file_t *f, uint8_t *buf, size_t cap, size_t *len);

/* `proxkey device mk run|send|refresh|show` (argv[0] = "mk"). */
int pk_cmd_device_mk(int argc, char **argv);

/* Prints the master keys of d and the individual-key table of s (for
 * `proxkey device keys`): values masked unless reveal. */
void pk_dmk_print(const pk_dstate_t *s, const pk_reg_dev_t *d, int reveal);

#endif
