/*
 * Bounds-checked wire codec: a reader cursor and a writer that cannot overflow.
 *
 * Both carry a sticky error flag. Every read or write past the end sets it and
 * does nothing else: a reader then yields zeros and NULL borrowed pointers, a
 * writer writes nothing more. Callers may therefore run a whole message's
 * reads and check once at the end with pk_rd_done() (which also demands that
 * the input was consumed exactly) or pk_wr_ok().
 *
 * All integers are big-endian (network order). Lengths are checked by
 * subtraction, never by adding to a pointer, so no check can overflow.
 *
 * Borrowed pointers (pk_rd_borrow) point into the reader's input and stay
 * valid as long as that input does.
 */
#ifndef PK_CORE_CODEC_H
#define PK_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/err.h"

typedef struct pk_rd {
    const uint8_t *p; /* next unread byte */
    size_t left;      /* bytes left */
    int err;          /* PK_OK or PK_ERR_MALFORMED, sticky */
} pk_rd_t;

typedef struct pk_wr {
    uint8_t *p; /* start of the caller's buffer */
    size_t cap; /* its size */
    size_t len; /* bytes written */
    int err;    /* PK_OK or PK_ERR_SPACE, sticky */
} pk_wr_t;

static inline void pk_rd_init(pk_rd_t *r, const void *buf, size_t len)
{
    r->p = (const uint8_t *)buf;
    r->left = buf ? len : 0;
    r->err = PK_OK;
}

/* Marks the reader failed unless n bytes remain; returns 1 when they do. */
static inline int pk_rd_need(pk_rd_t *r, size_t n)
{
    if (r->err != PK_OK || r->left < n) {
        r->err = PK_ERR_MALFORMED;
        return 0;
    }
    return 1;
}

static inline uint8_t pk_rd_u8(pk_rd_t *r)
{
    if (!pk_rd_need(r, 1))
        return 0;
    uint8_t v = r->p[0];
    r->p += 1;
    r->left -= 1;
    return v;
}

static inline uint16_t pk_rd_u16(pk_rd_t *r)
{
    if (!pk_rd_need(r, 2))
        return 0;
    uint16_t v = (uint16_t)((uint16_t)r->p[0] << 8 | r->p[1]);
    r->p += 2;
    r->left -= 2;
    return v;
}

static inline uint32_t pk_rd_u32(pk_rd_t *r)
{
    if (!pk_rd_need(r, 4))
        return 0;
    uint32_t v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 |
                 (uint32_t)r->p[3];
    r->p += 4;
    r->left -= 4;
    return v;
}

static inline uint64_t pk_rd_u64(pk_rd_t *r)
{
    if (!pk_rd_need(r, 8))
        return 0;
    uint64_t hi = pk_rd_u32(r);
    uint64_t lo = pk_rd_u32(r);
    return hi << 32 | lo;
}

/* Copies n bytes out; on failure fills out with zeros. */
static inline void pk_rd_copy(pk_rd_t *r, void *out, size_t n)
{
    if (!pk_rd_need(r, n)) {
        if (n)
            memset(out, 0, n);
        return;
    }
    if (n)
        memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
}

/* Returns a pointer to the next n bytes and skips them, or NULL. */
static inline const uint8_t *pk_rd_borrow(pk_rd_t *r, size_t n)
{
    if (!pk_rd_need(r, n))
        return NULL;
    const uint8_t *v = r->p;
    r->p += n;
    r->left -= n;
    return v;
}

/*
 * Reads a u8- or u16-length-prefixed block and returns a sub-reader over
 * exactly its bytes; the outer reader moves past it. A length above max
 * fails the outer reader.
 */
static inline pk_rd_t pk_rd_block8(pk_rd_t *r, size_t max)
{
    pk_rd_t sub;
    size_t n = pk_rd_u8(r);
    if (n > max)
        r->err = PK_ERR_MALFORMED;
    pk_rd_init(&sub, pk_rd_borrow(r, n), n);
    sub.err = r->err;
    return sub;
}

static inline pk_rd_t pk_rd_block16(pk_rd_t *r, size_t max)
{
    pk_rd_t sub;
    size_t n = pk_rd_u16(r);
    if (n > max)
        r->err = PK_ERR_MALFORMED;
    pk_rd_init(&sub, pk_rd_borrow(r, n), n);
    sub.err = r->err;
    return sub;
}

/* PK_OK when every read succeeded and the input was consumed exactly. */
static inline int pk_rd_done(const pk_rd_t *r)
{
    if (r->err != PK_OK)
        return r->err;
    return r->left == 0 ? PK_OK : PK_ERR_MALFORMED;
}

static inline void pk_wr_init(pk_wr_t *w, void *buf, size_t cap)
{
    w->p = (uint8_t *)buf;
    w->cap = buf ? cap : 0;
    w->len = 0;
    w->err = PK_OK;
}

/* Reserves n bytes and returns where to write them, or NULL (sticky error). */
static inline uint8_t *pk_wr_reserve(pk_wr_t *w, size_t n)
{
    if (w->err != PK_OK || w->cap - w->len < n) {
        w->err = PK_ERR_SPACE;
        return NULL;
    }
    uint8_t *d = w->p + w->len;
    w->len += n;
    return d;
}

static inline void pk_wr_u8(pk_wr_t *w, uint8_t v)
{
    uint8_t *d = pk_wr_reserve(w, 1);
    if (d)
        d[0] = v;
}

static inline void pk_wr_u16(pk_wr_t *w, uint16_t v)
{
    uint8_t *d = pk_wr_reserve(w, 2);
    if (d) {
        d[0] = (uint8_t)(v >> 8);
        d[1] = (uint8_t)v;
    }
}

static inline void pk_wr_u32(pk_wr_t *w, uint32_t v)
{
    uint8_t *d = pk_wr_reserve(w, 4);
    if (d) {
        d[0] = (uint8_t)(v >> 24);
        d[1] = (uint8_t)(v >> 16);
        d[2] = (uint8_t)(v >> 8);
        d[3] = (uint8_t)v;
    }
}

static inline void pk_wr_u64(pk_wr_t *w, uint64_t v)
{
    uint8_t *d = pk_wr_reserve(w, 8);
    if (d)
        for (int i = 0; i < 8; i++)
            d[i] = (uint8_t)(v >> (56 - 8 * i));
}

static inline void pk_wr_bytes(pk_wr_t *w, const void *src, size_t n)
{
    uint8_t *d = pk_wr_reserve(w, n);
    if (d && n)
        memcpy(d, src, n);
}

/* Writes a u8/u16 length then the bytes, all or nothing; fails if n does not
 * fit the prefix or the buffer. */
static inline void pk_wr_block8(pk_wr_t *w, const void *src, size_t n)
{
    if (n > 0xff || w->err != PK_OK || w->cap - w->len < 1 + n) {
        w->err = PK_ERR_SPACE;
        return;
    }
    pk_wr_u8(w, (uint8_t)n);
    pk_wr_bytes(w, src, n);
}

static inline void pk_wr_block16(pk_wr_t *w, const void *src, size_t n)
{
    if (n > 0xffff || w->err != PK_OK || w->cap - w->len < 2 + n) {
        w->err = PK_ERR_SPACE;
        return;
    }
    pk_wr_u16(w, (uint16_t)n);
    pk_wr_bytes(w, src, n);
}

static inline int pk_wr_ok(const pk_wr_t *w)
{
    return w->err;
}

/* Plain big-endian helpers for fixed layouts. */
static inline void pk_put_u16(uint8_t *d, uint16_t v)
{
    d[0] = (uint8_t)(v >> 8);
    d[1] = (uint8_t)v;
}
static inline void pk_put_u32(uint8_t *d, uint32_t v)
{
    d[0] = (uint8_t)(v >> 24);
    d[1] = (uint8_t)(v >> 16);
    d[2] = (uint8_t)(v >> 8);
    d[3] = (uint8_t)v;
}
static inline void pk_put_u64(uint8_t *d, uint64_t v)
{
    pk_put_u32(d, (uint32_t)(v >> 32));
    pk_put_u32(d + 4, (uint32_t)v);
}
static inline uint16_t pk_get_u16(const uint8_t *s)
{
    return (uint16_t)((uint16_t)s[0] << 8 | s[1]);
}
static inline uint32_t pk_get_u32(const uint8_t *s)
{
    return (uint32_t)s[0] << 24 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 8 | (uint32_t)s[3];
}
static inline uint64_t pk_get_u64(const uint8_t *s)
{
    return (uint64_t)pk_get_u32(s) << 32 | pk_get_u32(s + 4);
}

#endif
