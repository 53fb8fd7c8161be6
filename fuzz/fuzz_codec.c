/*
 * Fuzz target for the wire codec (lib/core/codec.h).
 *
 * Input: [nops (1)] [ops (nops bytes)] [wcap (1)] [data ...]. Each op byte
 * runs one reader operation (low nibble: which; high nibble: its parameter)
 * on a stack of readers (blocks push sub-readers), against a naive model of
 * where each reader should be. After every op the real reader must match the
 * model exactly: position, bytes left, error flag, values and borrowed
 * pointers; consumed + left == len always; a failed read consumes nothing and
 * yields zeros; errors are sticky; pk_rd_done() is OK only on exact
 * consumption. Every successful top-level read is written back through a
 * pk_wr_t of capacity wcap*4, modelled the same way (each write all or
 * nothing); at the end the writer's bytes must equal the consumed input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"

#include "fuzz_assert.h"

#define DEPTH 8

typedef struct model {
    const uint8_t *base; /* NULL for a failed sub-reader */
    size_t len, pos;
    int err;
} model_t;

static int take(model_t *m, size_t n)
{
    if (m->err || m->len - m->pos < n) {
        m->err = 1;
        return 0;
    }
    m->pos += n;
    return 1;
}

static void agree(const pk_rd_t *r, const model_t *m)
{
    ASSERT(r->err == (m->err ? PK_ERR_MALFORMED : PK_OK));
    ASSERT(r->left == m->len - m->pos);
    ASSERT(r->p == (m->base ? m->base + m->pos : NULL));
    ASSERT(m->pos <= m->len);
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* The writer model: each call writes all of its bytes or nothing. */
typedef struct wmodel {
    size_t cap, len;
    int err;
} wmodel_t;

static void wtake(wmodel_t *wm, size_t n)
{
    if (wm->err || wm->cap - wm->len < n)
        wm->err = 1;
    else
        wm->len += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (size < 2)
        return 0;
    size_t nops = in[0];
    if (nops > size - 2)
        nops = size - 2;
    const uint8_t *ops = in + 1;
    size_t wcap = (size_t)in[1 + nops] * 4;
    const uint8_t *data = in + 2 + nops;
    size_t len = size - 2 - nops;

    pk_rd_t st[DEPTH];
    model_t md[DEPTH];
    int top = 0;
    pk_rd_init(&st[0], data, len);
    md[0] = (model_t){data, len, 0, 0};
    agree(&st[0], &md[0]);

    uint8_t *wbuf = malloc(wcap ? wcap : 1);
    ASSERT(wbuf);
    pk_wr_t w;
    wmodel_t wm = {wcap, 0, 0};
    pk_wr_init(&w, wbuf, wcap);

    for (size_t i = 0; i < nops; i++) {
        pk_rd_t *r = &st[top];
        model_t *m = &md[top];
        unsigned op = ops[i] & 0x0f, par = ops[i] >> 4;
        size_t before = m->pos;
        int cur = top;
        const uint8_t *src = m->base ? m->base + m->pos : NULL;
        int wrote = 0; /* top-level bytes to write back: [before, m->pos) */

        switch (op) {
        case 0:
        case 1:
        case 2:
        case 3: { /* u8 u16 u32 u64 */
            size_t n = (size_t)1 << op;
            uint64_t v = op == 0   ? pk_rd_u8(r)
                         : op == 1 ? pk_rd_u16(r)
                         : op == 2 ? pk_rd_u32(r)
                                   : pk_rd_u64(r);
            uint64_t want = take(m, n) ? be(src, n) : 0;
            ASSERT(v == want);
            if (top == 0 && !m->err) {
                if (op == 0)
                    pk_wr_u8(&w, (uint8_t)v);
                else if (op == 1)
                    pk_wr_u16(&w, (uint16_t)v);
                else if (op == 2)
                    pk_wr_u32(&w, (uint32_t)v);
                else
                    pk_wr_u64(&w, v);
                wrote = 1;
            }
            break;
        }
        case 4: { /* copy par bytes */
            uint8_t out[16];
            memset(out, 0xa5, sizeof out);
            pk_rd_copy(r, out, par);
            if (take(m, par)) {
                ASSERT(par == 0 || memcmp(out, src, par) == 0);
                if (top == 0) {
                    pk_wr_bytes(&w, out, par);
                    wrote = 1;
                }
            } else {
                for (unsigned k = 0; k < par; k++)
                    ASSERT(out[k] == 0);
            }
            ASSERT(par == 16 || out[par] == 0xa5); /* nothing written past n */
            break;
        }
        case 5:
        case 6: { /* borrow par*par bytes; or need() them */
            size_t n = (size_t)par * par;
            if (op == 5) {
                const uint8_t *p = pk_rd_borrow(r, n);
                if (take(m, n)) {
                    ASSERT(p == src);
                    if (top == 0) {
                        pk_wr_bytes(&w, p, n);
                        wrote = 1;
                    }
                } else {
                    ASSERT(p == NULL);
                }
            } else {
                int ok = pk_rd_need(r, n);
                int want = !m->err && m->len - m->pos >= n;
                if (!want)
                    m->err = 1;
                ASSERT(ok == want);
            }
            break;
        }
        case 7:
        case 8: { /* block8 / block16 with max from par */
            size_t pl = op == 7 ? 1 : 2;
            size_t max = op == 7 ? (size_t)par * 17 : (par == 15 ? SIZE_MAX : (size_t)par * 300);
            pk_rd_t sub = op == 7 ? pk_rd_block8(r, max) : pk_rd_block16(r, max);
            model_t ms = {NULL, 0, 0, 1};
            size_t L = 0;
            if (take(m, pl)) {
                L = (size_t)be(src, pl);
                if (L > max)
                    m->err = 1;
                else if (take(m, L))
                    ms = (model_t){src + pl, L, 0, 0};
            }
            agree(&sub, &ms);
            if (top == 0 && !m->err) {
                if (op == 7)
                    pk_wr_block8(&w, sub.p, sub.left);
                else
                    pk_wr_block16(&w, sub.p, sub.left);
                wrote = 1;
            }
            if (top + 1 < DEPTH) {
                top++;
                st[top] = sub;
                md[top] = ms;
            }
            break;
        }
        case 9: /* pop back to the parent reader */
            if (top > 0)
                top--;
            break;
        case 10: { /* lengths near SIZE_MAX must fail, not wrap */
            size_t n = SIZE_MAX - par;
            ASSERT(pk_rd_borrow(r, n) == NULL);
            ASSERT(!take(m, n));
            break;
        }
        case 11: { /* done */
            int want = m->err ? PK_ERR_MALFORMED : (m->pos == m->len ? PK_OK : PK_ERR_MALFORMED);
            ASSERT(pk_rd_done(r) == want);
            break;
        }
        case 12:
        case 13: { /* borrow exactly the rest, or one more */
            size_t n = r->left + (op == 13);
            const uint8_t *p = pk_rd_borrow(r, n);
            ASSERT((p != NULL) == (take(m, n) != 0));
            if (p && top == 0) {
                pk_wr_bytes(&w, p, n);
                wrote = 1;
            }
            break;
        }
        default: { /* 14, 15: writer reservations on a scratch copy */
            pk_wr_t t = w;
            size_t room = t.cap - t.len;
            if (op == 14) { /* near SIZE_MAX: must fail, not wrap */
                ASSERT(pk_wr_reserve(&t, SIZE_MAX - par) == NULL);
            } else { /* one past the room fails, the exact room fits */
                ASSERT(pk_wr_reserve(&t, room + 1 + par) == NULL);
                t = w;
                uint8_t *d = pk_wr_reserve(&t, room);
                ASSERT(wm.err ? d == NULL : (d == wbuf + w.len && t.len == t.cap));
            }
            ASSERT(wm.err || t.len <= t.cap);
            break;
        }
        }

        if (wrote)
            wtake(&wm, m->pos - before); /* the bytes just consumed, written back */
        agree(&st[cur], &md[cur]);
        agree(&st[top], &md[top]);
        /* consumed + left == len, at every level */
        for (int k = 0; k <= top; k++) {
            if (md[k].base)
                ASSERT((size_t)(st[k].p - md[k].base) + st[k].left == md[k].len);
        }
        ASSERT(pk_wr_ok(&w) == (wm.err ? PK_ERR_SPACE : PK_OK));
        ASSERT(w.len == wm.len);
    }

    /* Everything written back is exactly the consumed top-level input. */
    ASSERT(w.len <= wcap);
    ASSERT(w.len == 0 || memcmp(wbuf, data, w.len) == 0);
    if (!wm.err && !md[0].err)
        ASSERT(w.len == md[0].pos);
    ASSERT(w.len <= md[0].pos);
    free(wbuf);
    return 0;
}
