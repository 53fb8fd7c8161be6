/*
 * Test helpers for the trigger cores: a seeded RNG (splitmix64) usable as a
 * pk_rng_t, and a binary min-heap of timed events for the in-process lossy
 * network simulation.
 */
#ifndef PK_TESTS_TRIGGER_SIM_H
#define PK_TESTS_TRIGGER_SIM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"

typedef struct sim_rng {
    uint64_t s;
} sim_rng_t;

static inline uint64_t sim_next(sim_rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static inline uint64_t sim_below(sim_rng_t *r, uint64_t n)
{
    return sim_next(r) % n;
}
/* 1 with probability pct/100. */
static inline int sim_pct(sim_rng_t *r, unsigned pct)
{
    return sim_below(r, 100) < pct;
}

static inline int sim_rng_fill(void *ctx, uint8_t *buf, size_t n)
{
    sim_rng_t *r = ctx;
    while (n) {
        uint64_t v = sim_next(r);
        size_t c = n < 8 ? n : 8;
        memcpy(buf, &v, c);
        buf += c;
        n -= c;
    }
    return 0;
}

static inline pk_rng_t sim_pk_rng(sim_rng_t *r)
{
    return (pk_rng_t){sim_rng_fill, r};
}

/* ---- event heap ---- */

typedef struct sim_ev {
    uint64_t t;
    uint64_t order; /* tie-break: insertion order, for determinism */
    int kind;
    uint32_t dev;
    uint16_t len;
    uint8_t *data; /* owned (malloc), may be NULL */
} sim_ev_t;

typedef struct sim_heap {
    sim_ev_t *v;
    size_t n, cap;
    uint64_t order;
} sim_heap_t;

static inline int sim_ev_less(const sim_ev_t *a, const sim_ev_t *b)
{
    return a->t < b->t || (a->t == b->t && a->order < b->order);
}

static inline void sim_push(sim_heap_t *h, uint64_t t, int kind, uint32_t dev, const void *data,
                            size_t len)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->v = realloc(h->v, h->cap * sizeof *h->v);
        if (!h->v)
            abort();
    }
    sim_ev_t e = {t, h->order++, kind, dev, (uint16_t)len, NULL};
    if (len) {
        e.data = malloc(len);
        if (!e.data)
            abort();
        memcpy(e.data, data, len);
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!sim_ev_less(&e, &h->v[p]))
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
}

/* Pops the earliest event into *e (caller frees e->data). 0 when empty. */
static inline int sim_pop(sim_heap_t *h, sim_ev_t *e)
{
    if (!h->n)
        return 0;
    *e = h->v[0];
    sim_ev_t last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const sim_ev_t *best = &last;
        if (l < h->n && sim_ev_less(&h->v[l], best)) {
            m = l;
            best = &h->v[l];
        }
        if (r < h->n && sim_ev_less(&h->v[r], best))
            m = r;
        if (m == i)
            break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n)
        h->v[i] = last;
    return 1;
}

static inline void sim_heap_free(sim_heap_t *h)
{
    sim_ev_t e;
    while (sim_pop(h, &e))
        free(e.data);
    free(h->v);
    memset(h, 0, sizeof *h);
}

#endif
