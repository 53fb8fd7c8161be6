#include "net/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* Parses a decimal port of 1..5 digits, value 0..65535, consuming all of s. */
static int parse_port(const char *s, uint16_t *port)
{
    size_t n = strlen(s);
    unsigned v = 0;

    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

int pk_addr_parse(const char *s, pk_addr_t *out, const char **why)
{
    char host[PK_ADDR_STRLEN];
    const char *port_s, *msg = NULL;
    uint16_t port;
    size_t hlen;

    memset(out, 0, sizeof *out);
    if (s == NULL || *s == '\0') {
        msg = "empty address";
        goto fail;
    }
    if (strlen(s) >= PK_ADDR_STRLEN) {
        msg = "address too long";
        goto fail;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL) {
            msg = "missing ']' after IPv6 address";
            goto fail;
        }
        if (close[1] != ':') {
            msg = "missing ':port' after ']'";
            goto fail;
        }
        hlen = (size_t)(close - (s + 1));
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        port_s = close + 2;
        if (parse_port(port_s, &port) != 0) {
            msg = "port must be a number 0..65535";
            goto fail;
        }
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&out->ss;
        if (hlen == 0 || inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) {
            msg = "not a numeric IPv6 address";
            goto fail;
        }
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        out->len = sizeof *a6;
        return PK_OK;
    }
    const char *colon = strrchr(s, ':');
    if (colon == NULL) {
        msg = "missing ':port'";
        goto fail;
    }
    if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
        msg = "IPv6 address needs brackets: [addr]:port";
        goto fail;
    }
    hlen = (size_t)(colon - s);
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    if (parse_port(colon + 1, &port) != 0) {
        msg = "port must be a number 0..65535";
        goto fail;
    }
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *a4 = (struct sockaddr_in *)&out->ss;
    if (hlen == 0 || inet_pton(AF_INET, host, &a4->sin_addr) != 1) {
        msg = "not a numeric IPv4 address (names other than localhost are not resolved)";
        goto fail;
    }
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    out->len = sizeof *a4;
    return PK_OK;

fail:
    memset(out, 0, sizeof *out);
    if (why != NULL)
        *why = msg;
    return PK_ERR_INVAL;
}

char *pk_addr_format(const pk_addr_t *a, char buf[static PK_ADDR_STRLEN])
{
    char host[INET6_ADDRSTRLEN];

    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &a4->sin_addr, host, sizeof host);
        snprintf(buf, PK_ADDR_STRLEN, "%s:%u", host, (unsigned)ntohs(a4->sin_port));
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof host);
        snprintf(buf, PK_ADDR_STRLEN, "[%s]:%u", host, (unsigned)ntohs(a6->sin6_port));
    } else {
        snprintf(buf, PK_ADDR_STRLEN, "?");
    }
    return buf;
}

uint16_t pk_addr_port(const pk_addr_t *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}

int pk_addr_eq(const pk_addr_t *a, const pk_addr_t *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return 0;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->ss;
        const struct sockaddr_in *y = (const struct sockaddr_in *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->ss;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->ss;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
    }
    return 0;
}

int pk_addr_source_key(const pk_addr_t *a, uint8_t key[static 16])
{
    memset(key, 0, 16);
    if (a->ss.ss_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)&a->ss)->sin_addr, 4);
        return 4;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct in6_addr *ip = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(ip)) {
            memcpy(key, ip->s6_addr + 12, 4);
            return 4;
        }
        memcpy(key, ip->s6_addr, 8);
        return 6;
    }
    return 0;
}

int pk_addr_local(int fd, pk_addr_t *out)
{
    memset(out, 0, sizeof *out);
    out->len = sizeof out->ss;
    if (getsockname(fd, (struct sockaddr *)&out->ss, &out->len) != 0)
        return PK_ERR_IO;
    return PK_OK;
}
