/*
 * libFuzzer target for the direct link: the first byte picks a core state
 * (responder IDLE, initiator WAIT_SMC, responder WAIT_COMPLETE, both
 * ESTABLISHED); the rest is one datagram. Invariant: a refused datagram
 * produces no output and leaves the link unchanged.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes the handshake's messages as seeds.
 */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "proto/link/link.h"

static uint8_t kd[PK_LINK_KD_LEN];

static int lookup(void *ctx, uint32_t ksi, const uint8_t *peer, size_t plen,
                  uint8_t out[PK_LINK_KD_LEN])
{
    (void)ctx;
    if (ksi != 7 || plen != 5 || (memcmp(peer, "dev-a", 5) != 0 && memcmp(peer, "dev-b", 5) != 0))
        return PK_ERR_NOTFOUND;
    memcpy(out, kd, sizeof kd);
    return PK_OK;
}

static int fill(void *ctx, uint8_t *b, size_t n)
{
    uint8_t *c = ctx;
    for (size_t i = 0; i < n; i++)
        b[i] = (*c)++;
    return PK_OK;
}

static uint8_t rc_a = 1, rc_b = 101;
static const pk_rng_t ra = {fill, &rc_a}, rb = {fill, &rc_b};
static pk_link_t s_idle, s_wait_smc, s_wait_cmpl, s_est_a, s_est_b;
static int ready;

static void dump(const char *dir, const char *name, uint8_t sel, const uint8_t *b, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(&sel, 1, 1, f);
    fwrite(b, 1, n, f);
    fclose(f);
}

static void setup(void)
{
    static uint8_t ar[4096];
    static uint8_t dcr[PK_LINK_DCR_MAX], smc[PK_LINK_SMC_LEN], cm[PK_LINK_SMCOMPLETE_LEN], rec[64];
    size_t dl, recl;
    pk_out_t o;
    const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");
    pk_crypto_init();
    memset(kd, 0x42, sizeof kd);
    pk_link_cfg_t ca = {(const uint8_t *)"dev-a", 5, lookup, NULL, 100, 3};
    pk_link_cfg_t cb = {(const uint8_t *)"dev-b", 5, lookup, NULL, 100, 3};
    pk_link_init(&s_wait_smc, &ca, PK_LINK_INITIATOR);
    pk_link_init(&s_idle, &cb, PK_LINK_RESPONDER);
    s_wait_cmpl = s_idle;
    pk_out_init(&o, ar, sizeof ar);
    pk_link_connect(&s_wait_smc, (const uint8_t *)"dev-b", 5, 7, &ra, 0, &o);
    dl = o.act[0].len;
    memcpy(dcr, o.act[0].data, dl);
    pk_out_reset(&o);
    if (pk_link_input(&s_wait_cmpl, dcr, dl, &rb, 0, &o) != PK_OK)
        abort();
    memcpy(smc, o.act[0].data, sizeof smc);
    s_est_a = s_wait_smc;
    pk_out_reset(&o);
    /* s_est_a gets its own record contexts: s_wait_smc keeps none */
    if (pk_link_input(&s_est_a, smc, sizeof smc, &ra, 0, &o) != PK_OK)
        abort();
    memcpy(cm, o.act[0].data, sizeof cm);
    pk_out_reset(&o);
    pk_link_send(&s_est_a, (const uint8_t *)"seed", 4, &o);
    recl = o.act[0].len;
    memcpy(rec, o.act[0].data, recl);
    /* s_est_b shares s_wait_cmpl's record contexts (same keys): fine, the
     * fuzzer restores the struct after each input and frees nothing */
    s_est_b = s_wait_cmpl;
    s_est_b.state = PK_LINK_S_ESTABLISHED;
    s_est_b.deadline = UINT64_MAX;
    if (dir) {
        dump(dir, "dcr", 0, dcr, dl);
        dump(dir, "smc", 1, smc, sizeof smc);
        dump(dir, "complete", 2, cm, sizeof cm);
        dump(dir, "data", 3, rec, recl);
    }
    ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t ar[4096];
    static pk_link_t l, snap;
    pk_out_t o;
    if (!ready)
        setup();
    if (size < 1)
        return 0;
    uint8_t sel = data[0] % 5;
    const pk_link_t *src[5] = {&s_idle, &s_wait_smc, &s_wait_cmpl, &s_est_b, &s_est_a};
    snap = *src[sel];
    l = snap;
    pk_out_init(&o, ar, sizeof ar);
    int rc = pk_link_input(&l, data + 1, size - 1, &rb, 1, &o);
    if (rc != PK_OK && (o.n != 0 || memcmp(&l, &snap, sizeof l) != 0))
        abort();
    /* a successful input may have made new record contexts: free those only */
    if (rc == PK_OK && l.rec.rc_tx.enc != snap.rec.rc_tx.enc)
        pk_record_clear(&l.rec);
    return 0;
}
