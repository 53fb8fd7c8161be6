/*
 * Socket addresses for the shells: parsing and printing "host:port".
 *
 *   "127.0.0.1:4500"   IPv4
 *   "[::1]:4500"       IPv6 (brackets required, as in URLs)
 *   "localhost:4500"   the one name accepted, = 127.0.0.1 (no DNS lookups here)
 *
 * Hosts are numeric literals only: a daemon's bind/connect addresses come
 * from its configuration and must not depend on a resolver. Port 0 is
 * accepted (bind to an ephemeral port; read it back with pk_addr_local()).
 */
#ifndef PK_NET_ADDR_H
#define PK_NET_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/err.h"

/* "[" + 45-char IPv6 text + "]:" + 5-digit port + NUL, rounded up. */
#define PK_ADDR_STRLEN 64

typedef struct pk_addr {
    struct sockaddr_storage ss; /* AF_INET or AF_INET6 */
    socklen_t len;              /* sizeof(struct sockaddr_in) or _in6 */
} pk_addr_t;

/*
 * Parses s into *out. On failure returns PK_ERR_INVAL, leaves *out zeroed and,
 * when why is not NULL, points *why at a static explanation suitable for an
 * error message ("missing port", "IPv6 address needs brackets", ...).
 */
int pk_addr_parse(const char *s, pk_addr_t *out, const char **why);

/* Writes "a.b.c.d:port" or "[v6]:port" into buf (always NUL-terminated;
 * "?" for an unknown family). Returns buf for use in printf arguments. */
char *pk_addr_format(const pk_addr_t *a, char buf[static PK_ADDR_STRLEN]);

/* The port in host order (0 for an unknown family). */
uint16_t pk_addr_port(const pk_addr_t *a);

/* 1 when a and b have the same family, address and port; else 0. */
int pk_addr_eq(const pk_addr_t *a, const pk_addr_t *b);

/*
 * The rate-limiting identity of a source: IPv4 addresses as their 4 bytes
 * (v4-mapped IPv6 included), IPv6 addresses as their /64 prefix (one host
 * usually owns a whole /64, as in WireGuard's ratelimiter). The port is not
 * part of it. Writes key[0..16) (zero-padded) and returns its family tag
 * (4 or 6), or 0 for an unknown family.
 */
int pk_addr_source_key(const pk_addr_t *a, uint8_t key[static 16]);

/* Fills *out with the local address fd is bound to. PK_OK or PK_ERR_IO. */
int pk_addr_local(int fd, pk_addr_t *out);

#endif
