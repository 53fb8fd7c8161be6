/* Fuzz target: the poll parser and the server core's input path. Hostile
 * datagrams must never crash, never change state unless they are a valid
 * poll of a known identity, and never produce an answer otherwise. The
 * retransmission gate refuses every third retransmission: a refusal sends
 * nothing and changes no device's record. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/out.h"
#include "proto/trigger/messages.h"
#include "proto/trigger/srv.h"

static int fuzz_rng_fill(void *ctx, uint8_t *buf, size_t n)
{
    uint64_t *x = ctx;
    for (size_t i = 0; i < n; i++) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        buf[i] = (uint8_t)*x;
    }
    return 0;
}

static unsigned gate_calls;

static int gate(void *ctx)
{
    (void)ctx;
    return ++gate_calls % 3 != 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pk_trig_srv_t *srv;
    static uint64_t seed = 0x9e3779b97f4a7c15ull;
    static pk_rng_t rng = {fuzz_rng_fill, &seed};
    static uint8_t arena[4096];
    if (!srv) {
        if (pk_trig_srv_new(&srv, &rng, 16) != 0)
            abort();
        for (uint32_t i = 0; i < 4; i++) {
            uint8_t k[16], u[16];
            memset(k, (int)i + 1, sizeof k);
            memset(u, 0xA0 + (int)i, sizeof u); /* UID 0xA0.. (seed corpus uses it) */
            if (pk_trig_srv_add(srv, i, k, u, i & 1) != 0)
                abort();
            pk_trig_srv_queue(srv, i, 1, PK_TRIG_CMD_APP, (const uint8_t *)"x", 1);
        }
        pk_trig_srv_set_retx_gate(srv, gate, NULL);
    }
    uint8_t rec0[4][PK_TRIG_REC_LEN], rec1[PK_TRIG_REC_LEN];
    for (uint32_t i = 0; i < 4; i++)
        if (pk_trig_srv_record(srv, i, rec0[i]) != 0)
            abort();
    unsigned calls0 = gate_calls;
    pk_trig_poll_t p;
    int prc = pk_trig_poll_parse(data, size, &p);
    if (prc == 0 && size != PK_TRIG_POLL_LEN)
        abort();
    pk_out_t out;
    pk_out_init(&out, arena, sizeof arena);
    pk_trig_srv_stats_t before, after;
    pk_trig_srv_stats(srv, &before);
    int rc = pk_trig_srv_input(srv, data, size, 1000, &out);
    pk_trig_srv_stats(srv, &after);
    if (rc != 0 && out.n != 0)
        abort(); /* an error never comes with actions */
    if (rc != 0 && after.answered != before.answered)
        abort();
    if (gate_calls - calls0 > 1 ||
        (rc == PK_ERR_LIMIT) != (after.retx_refused > before.retx_refused))
        abort(); /* asked at most once; refused exactly when it said no */
    if (rc == PK_ERR_LIMIT)
        for (uint32_t i = 0; i < 4; i++)
            if (pk_trig_srv_record(srv, i, rec1) != 0 || memcmp(rec1, rec0[i], sizeof rec1) != 0)
                abort(); /* a refused retransmission changes nothing */
    if (rc == 0) {
        if (prc != 0 || out.n == 0 || out.act[out.n - 1].kind != PK_ACT_SEND)
            abort();
        for (unsigned i = 0; i < out.n; i++)
            pk_trig_srv_persisted(srv, (uint32_t)out.act[i].dest);
    }
    return 0;
}
