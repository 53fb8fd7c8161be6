/*
 * The output of a pure protocol core.
 *
 * Cores never touch sockets, clocks or storage. An input or timeout call
 * appends what should happen to a caller-owned pk_out_t: messages to send (to
 * an opaque destination the shell maps to an address or connection) and
 * events (a key was established, a device registered, ...). The shell then
 * performs the actions in order. Everything is fixed-capacity; a core that
 * finds no room returns PK_ERR_SPACE and changes no state.
 *
 *   pk_out_t out; uint8_t arena[4096];
 *   pk_out_init(&out, arena, sizeof arena);
 *   rc = pk_trigger_srv_input(srv, dgram, len, now_ms, &out);
 *   for (i = 0; i < out.n; i++) ... out.act[i] ...
 */
#ifndef PK_CORE_OUT_H
#define PK_CORE_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/err.h"

#define PK_OUT_MAX 16

enum pk_act_kind {
    PK_ACT_SEND = 1,  /* send data[0..len) to dest */
    PK_ACT_EVENT = 2, /* a core-specific event: code, with optional data */
};

typedef struct pk_act {
    uint8_t kind;  /* enum pk_act_kind */
    uint16_t code; /* message type (SEND) or event code (EVENT), core-specific */
    uint64_t dest; /* destination handle (SEND) or subject id (EVENT) */
    uint8_t *data; /* into the arena */
    size_t len;
} pk_act_t;

typedef struct pk_out {
    pk_act_t act[PK_OUT_MAX];
    unsigned n;
    uint8_t *arena;
    size_t cap, used;
} pk_out_t;

static inline void pk_out_init(pk_out_t *o, uint8_t *arena, size_t cap)
{
    o->n = 0;
    o->arena = arena;
    o->cap = cap;
    o->used = 0;
}

static inline void pk_out_reset(pk_out_t *o)
{
    o->n = 0;
    o->used = 0;
}

/* Appends an action with room for len bytes and returns the buffer to fill
 * (or NULL when there is no room: the caller returns PK_ERR_SPACE). */
static inline uint8_t *pk_out_push(pk_out_t *o, uint8_t kind, uint16_t code, uint64_t dest,
                                   size_t len)
{
    if (o->n >= PK_OUT_MAX || o->cap - o->used < len)
        return NULL;
    pk_act_t *a = &o->act[o->n++];
    a->kind = kind;
    a->code = code;
    a->dest = dest;
    a->data = o->arena + o->used;
    a->len = len;
    o->used += len;
    return a->data ? a->data : (uint8_t *)"";
}

/* Shrinks the last action's data to len bytes (after writing it with pk_wr). */
static inline void pk_out_trim(pk_out_t *o, size_t len)
{
    pk_act_t *a = &o->act[o->n - 1];
    o->used -= a->len - len;
    a->len = len;
}

#endif
