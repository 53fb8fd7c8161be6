/*
 * libproxkey-device: the embeddable device side of proxkey.
 *
 * The device cores (registration, direct links, trigger polling, individual
 * keys) live in lib/proto/ and are linked into this library; it adds no I/O
 * and allocates nothing itself: every context is owned by the caller.
 */
#ifndef PK_DEVICE_DEVICE_H
#define PK_DEVICE_DEVICE_H

#define PK_DEVICE_VERSION "0.1.0"

const char *pk_device_version(void);

#endif
