/*
 * `proxkey device mk ...`: the master-key client (Toshiba US 9,294,269;
 * DESIGN 3.6; docs/protocol.md "Master keys from the kms to the clients") around the pure pk_mk core (proto/mk):
 * discovery, mutual authentication with the domain's master key, the
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

/* `proxkey device mk run|send|refresh|show` (argv[0] = "mk"). */
int pk_cmd_device_mk(int argc, char **argv);

/* Prints the master keys of d and the individual-key table of s (for
 * `proxkey device keys`): values masked unless reveal. */
void pk_dmk_print(const pk_dstate_t *s, const pk_reg_dev_t *d, int reveal);

#endif
