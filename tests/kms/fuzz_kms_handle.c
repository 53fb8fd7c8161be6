/* libFuzzer: pk_kms_handle on a memory store with a pair, a pool and a device
 * of each mode; first input byte picks the node CN (bits 0-1) and whether the
 * kms with group_writes answers (bit 2; bit 3: commit its batch after a
 * deferral). Must never crash, never answer more bytes than it got, never
 * answer a refusal with anything but a 3-byte KMS_ERR, and never answer a
 * deferral (PK_KMS_DEFER) with any byte. */
#include <stdlib.h>
#include <string.h>

#include "proto/kms/kms.h"

static pk_store_t *st;
static pk_kms_t *kms, *gkms; /* gkms: group_writes, on the same store */

static void setup(void)
{
    uint8_t kek[32] = {1, 2, 3};
    pk_kms_cfg_t cfg = {.kek = kek};
    if (pk_store_open("memory:", &st) != PK_OK)
        abort();
    cfg.store = st;
    if (pk_kms_new(&cfg, &kms) != PK_OK)
        abort();
    cfg.group_writes = 1;
    cfg.intent_max = 4;
    if (pk_kms_new(&cfg, &gkms) != PK_OK)
        abort();
    uint64_t t = 1000;
    if (pk_kms_device_add(kms, "a", NULL, 0, PK_REG_MODE_PAIRS, NULL, t, NULL) ||
        pk_kms_device_add(kms, "b", NULL, 0, PK_REG_MODE_PAIRS, NULL, t, NULL) ||
        pk_kms_allow(kms, "a", "b", t) || pk_kms_pool_create(kms, "p", 40, t, NULL) ||
        pk_kms_device_add(kms, "x", NULL, 0, PK_REG_MODE_POOL, "p", t, NULL) ||
        pk_kms_device_add(kms, "y", NULL, 0, PK_REG_MODE_POOL, "p", t, NULL) ||
        pk_kms_allow(kms, "x", "y", t))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const cns[4] = {"n1", "n2", "", "a"};
    uint8_t resp[PK_KMS_RESP_MAX];
    size_t rl = 0;
    if (!kms)
        setup();
    if (size < 1)
        return 0;
    pk_kms_t *k = data[0] & 4 ? gkms : kms;
    int rc = pk_kms_handle(k, cns[data[0] & 3], data + 1, size - 1, 2000, resp, sizeof resp, &rl);
    if (rc == PK_KMS_DEFER) {
        if (rl != 0 || k != gkms)
            abort();
        if ((data[0] & 8) && pk_kms_flush(gkms) != PK_OK)
            abort();
        return 0;
    }
    if (rc != PK_OK && rl != 0 && (rl != PK_KMS_ERR_LEN || resp[0] != PK_KMS_T_ERR))
        abort();
    if (rc != PK_OK && rl > size - 1)
        abort();
    if (pk_kms_pending(kms) > 1000)
        (void)pk_kms_flush(kms);
    if (pk_kms_pending(gkms) > 1000)
        (void)pk_kms_flush(gkms);
    return 0;
}
