/*
 * Per-source token buckets for unauthenticated UDP input (after WireGuard's
 * ratelimiter.c): each source may send `burst` packets at once and then
 * `rate_per_s` per second. Pure: no clock (now_ms comes in), no allocation
 * after pk_ratelimit_new(), no I/O.
 *
 * Sources are keyed by pk_addr_source_key(): the IPv4 address, or the IPv6
 * /64, never the port. The table holds at most max_entries sources in
 * preallocated memory; an entry idle long enough to have refilled its
 * bucket is indistinguishable from a new one and is garbage-collected: by
 * pk_ratelimit_allow() once per second of now_ms (and, while the table is
 * full, at most every 100 ms), or by pk_ratelimit_gc(). A sweep visits the
 * whole table. When the table is full of active sources, packets from new
 * sources are refused: memory stays bounded under a flood of spoofed
 * addresses, at the cost of new sources waiting for the flood's entries to
 * expire (as in WireGuard).
 *
 * Buckets are found by SipHash-2-4 of the source key (OpenSSL's EVP_MAC
 * "SIPHASH") under a 16-byte secret key, so a sender who picks its source
 * addresses cannot aim them all at one hash chain (hash flooding). A plain
 * unkeyed mix would let it; a keyed MAC is the standard answer (Linux's
 * socket hashes, WireGuard), and OpenSSL's implementation keeps the "no
 * crypto by hand" rule. Cost: ~120 ns per lookup on this machine.
 */
#ifndef PK_NET_RATELIMIT_H
#define PK_NET_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "net/addr.h"

#define PK_RATELIMIT_KEY_LEN 16

typedef struct pk_ratelimit_cfg {
    uint32_t rate_per_s;  /* sustained packets per second per source (>= 1) */
    uint32_t burst;       /* bucket size in packets (>= 1) */
    uint32_t max_entries; /* sources tracked at most (>= 1, <= 1<<24) */
} pk_ratelimit_cfg_t;

typedef struct pk_ratelimit pk_ratelimit_t;

/*
 * A new limiter with all its memory allocated. key is the hash key: draw it
 * with pk_random() in a daemon, fix it in tests. cfg and key are copied.
 * Returns PK_OK and *out, PK_ERR_INVAL (bad cfg), PK_ERR_NOMEM or
 * PK_ERR_CRYPTO (SipHash unavailable).
 */
int pk_ratelimit_new(pk_ratelimit_t **out, const pk_ratelimit_cfg_t *cfg,
                     const uint8_t key[static PK_RATELIMIT_KEY_LEN]);

/* Wipes the key and frees everything. NULL is accepted. */
void pk_ratelimit_free(pk_ratelimit_t *rl);

/*
 * 1 if a packet from src at now_ms is within its source's budget (and takes
 * one token), else 0 (over budget, table full, unknown address family or
 * hashing failure: fail closed). now_ms is any monotonic clock; a value
 * lower than a previous one is treated as no time passing.
 */
int pk_ratelimit_allow(pk_ratelimit_t *rl, const pk_addr_t *src, uint64_t now_ms);

/* Drops entries whose bucket has refilled by now_ms. Returns how many. */
unsigned pk_ratelimit_gc(pk_ratelimit_t *rl, uint64_t now_ms);

/* Sources currently tracked. */
unsigned pk_ratelimit_count(const pk_ratelimit_t *rl);

#endif
