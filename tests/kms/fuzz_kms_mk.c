/*
 * libFuzzer target for the kms frame codec (proto/kms/messages.h) on every
 * type -- KMS_DIR_REQ/RESP, KMS_MK_REQ, KMS_MK_RESP, KMS_ERR -- for the
 * master-key block of proto/reg/messages.h alone, and for the audit record
 * codec (proto/kms/kms.h). The kms_handle target reaches pk_kms_msg_decode
 * only with the request types, and reg_msg reaches the master-key block only
 * inside ACCEPT / KMS_KEYS_RESP; the node's parser of KMS_MK_RESP and the
 * audit records read back from the store had no target.
 *
 * Input: sel(1) bytes. sel % 3: 0 pk_kms_msg_decode, 1 pk_kms_audit_decode,
 * 2 pk_reg_mkset_read_opt then pk_rd_done.
 * Invariants: PK_OK or PK_ERR_MALFORMED; a failure leaves the output all
 * zero; what decodes encodes back to exactly the input bytes; a decoded
 * KMS_MK_RESP has status 0 and either n == 0 at exactly 3 bytes or a block
 * that pk_reg_mkset_valid accepts; decoded identities are valid.
 *
 * PK_FUZZ_DUMP_SEEDS=dir writes a valid input of every kind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/kms/kms.h"
#include "proto/kms/messages.h"

#include "fuzz_assert.h"

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= b[i];
    return acc == 0;
}

static void mkset_of(pk_reg_mkset_t *mk, unsigned n)
{
    memset(mk, 0, sizeof *mk);
    mk->n = (uint8_t)n;
    mk->domain_id = 7;
    for (unsigned j = 0; j < n; j++) {
        mk->k[j].id = 1 + j;
        mk->k[j].not_before_ms = 1000 * j;
        mk->k[j].expiry_ms = 100000 + 1000 * j;
        memset(mk->k[j].key, 0x51 + (int)j, PK_REG_MK_LEN);
    }
}

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

static void dump_seeds(const char *dir)
{
    uint8_t b[512];
    size_t n = 0;
    pk_kms_msg_t m;
    static const struct {
        const char *name;
        uint8_t type, status, req_type;
        const char *id;
        unsigned nmk;
    } msgs[] = {
        {"dir_req", PK_KMS_T_DIR_REQ, 0, 0, "dev-a", 0},
        {"dir_resp", PK_KMS_T_DIR_RESP, 0, 0, "node-1", 0},
        {"mk_req", PK_KMS_T_MK_REQ, 0, 0, "dev-b", 0},
        {"mk_resp_0", PK_KMS_T_MK_RESP, 0, 0, NULL, 0},
        {"mk_resp_1", PK_KMS_T_MK_RESP, 0, 0, NULL, 1},
        {"mk_resp_2", PK_KMS_T_MK_RESP, 0, 0, NULL, 2},
        {"err", PK_KMS_T_ERR, PK_KMS_ST_BUSY, PK_KMS_T_MK_REQ, NULL, 0},
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        memset(&m, 0, sizeof m);
        m.type = msgs[i].type;
        m.status = msgs[i].status;
        m.req_type = msgs[i].req_type;
        if (msgs[i].id)
            ASSERT(pk_reg_id_set(&m.id, msgs[i].id, strlen(msgs[i].id)) == PK_OK);
        if (msgs[i].nmk)
            mkset_of(&m.mk, msgs[i].nmk);
        ASSERT(pk_kms_msg_encode(&m, b, sizeof b, &n) == PK_OK);
        dump(dir, msgs[i].name, 0, b, n);
    }
    pk_kms_audit_t a;
    memset(&a, 0, sizeof a);
    a.what = PK_KMS_A_MASTER_KEY;
    a.at_ms = 1700000000000ull;
    a.ksi = 3;
    a.count = 1;
    pk_reg_id_set(&a.node, "node-1", 6);
    pk_reg_id_set(&a.device, "dev-a", 5);
    ASSERT(pk_kms_audit_encode(&a, b, sizeof b, &n) == PK_OK);
    dump(dir, "audit_mk", 1, b, n);
    pk_reg_id_set(&a.peer, "dev-b", 5);
    a.what = PK_KMS_A_ROOT_KEY;
    ASSERT(pk_kms_audit_encode(&a, b, sizeof b, &n) == PK_OK);
    dump(dir, "audit_root_key", 1, b, n);
    for (unsigned k = 1; k <= 2; k++) {
        pk_reg_mkset_t mk;
        pk_wr_t w;
        mkset_of(&mk, k);
        pk_wr_init(&w, b, sizeof b);
        pk_reg_mkset_write(&w, &mk);
        ASSERT(pk_wr_ok(&w) == PK_OK);
        dump(dir, k == 1 ? "mkset_1" : "mkset_2", 2, b, w.len);
    }
}

static void fuzz_msg(const uint8_t *d, size_t n)
{
    static pk_kms_msg_t m;
    static uint8_t out[PK_KMS_MK_RESP_MAX + 16];
    size_t olen = 0;
    memset(&m, 0xa5, sizeof m);
    int rc = pk_kms_msg_decode(d, n, &m);
    ASSERT(rc == PK_OK || rc == PK_ERR_MALFORMED);
    if (rc != PK_OK) {
        ASSERT(all_zero(&m, sizeof m));
        return;
    }
    ASSERT(n <= PK_KMS_MK_RESP_MAX && m.type == d[0]);
    switch (m.type) {
    case PK_KMS_T_DIR_REQ:
    case PK_KMS_T_MK_REQ:
    case PK_KMS_T_DIR_RESP: ASSERT(pk_reg_id_valid(m.id.b, m.id.len)); break;
    case PK_KMS_T_MK_RESP:
        ASSERT(m.status == 0);
        ASSERT(m.mk.n == 0 ? n == 3 : pk_reg_mkset_valid(&m.mk));
        ASSERT(n == 3 || n == 2 + 1 + 4 + (size_t)m.mk.n * PK_REG_MK_ENTRY_LEN);
        break;
    case PK_KMS_T_ERR: ASSERT(n == PK_KMS_ERR_LEN); break;
    default: ASSERT(0 && "decoded an unknown type");
    }
    ASSERT(pk_kms_msg_encode(&m, out, sizeof out, &olen) == PK_OK);
    ASSERT(olen == n && memcmp(out, d, n) == 0);
    ASSERT(pk_kms_msg_encode(&m, out, n - 1, &olen) == PK_ERR_SPACE);
}

static void fuzz_audit(const uint8_t *d, size_t n)
{
    static pk_kms_audit_t a;
    static uint8_t out[PK_KMS_AUDIT_MAX + 16];
    size_t olen = 0;
    memset(&a, 0xa5, sizeof a);
    int rc = pk_kms_audit_decode(d, n, &a);
    ASSERT(rc == PK_OK || rc == PK_ERR_MALFORMED);
    if (rc != PK_OK) {
        ASSERT(all_zero(&a, sizeof a));
        return;
    }
    const pk_reg_id_t *ids[3] = {&a.node, &a.device, &a.peer};
    for (int i = 0; i < 3; i++)
        ASSERT(ids[i]->len == 0 || pk_reg_id_valid(ids[i]->b, ids[i]->len));
    ASSERT(pk_kms_audit_what_name(a.what) != NULL);
    ASSERT(pk_kms_audit_encode(&a, out, sizeof out, &olen) == PK_OK);
    ASSERT(olen == n && memcmp(out, d, n) == 0);
}

static void fuzz_mkset(const uint8_t *d, size_t n)
{
    static pk_reg_mkset_t mk;
    static uint8_t out[PK_REG_MKSET_MAX + 16];
    pk_rd_t r;
    pk_wr_t w;
    memset(&mk, 0xa5, sizeof mk);
    pk_rd_init(&r, d, n);
    pk_reg_mkset_read_opt(&r, &mk);
    int rerr = r.err;
    size_t left = r.left;
    int rc = pk_rd_done(&r);
    ASSERT(rc == PK_OK || rc == PK_ERR_MALFORMED);
    if (rerr != PK_OK) {
        ASSERT(all_zero(&mk, sizeof mk));
        return;
    }
    if (rc != PK_OK) /* a valid block with bytes after it */
        ASSERT(pk_reg_mkset_valid(&mk) && n > 1 + 4 + (size_t)mk.n * PK_REG_MK_ENTRY_LEN);
    if (n == 0) {
        ASSERT(mk.n == 0 && all_zero(&mk, sizeof mk));
        return;
    }
    ASSERT(pk_reg_mkset_valid(&mk));
    pk_wr_init(&w, out, sizeof out);
    pk_reg_mkset_write(&w, &mk);
    ASSERT(pk_wr_ok(&w) == PK_OK);
    ASSERT(w.len == n - left && memcmp(out, d, w.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        const char *dir = getenv("PK_FUZZ_DUMP_SEEDS");
        if (dir)
            dump_seeds(dir);
        ready = 1;
    }
    if (size < 1 || size > 4096)
        return 0;
    switch (data[0] % 3) {
    case 0: fuzz_msg(data + 1, size - 1); break;
    case 1: fuzz_audit(data + 1, size - 1); break;
    default: fuzz_mkset(data + 1, size - 1); break;
    }
    return 0;
}
