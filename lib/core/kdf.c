/*
 * The TS 33.220 Annex B.2 KDF and the registry of every derivation proxkey
 * performs (kdf.h; docs/protocol.md "Key derivations" carries the same table).
 */
#include "core/kdf.h"

#include <string.h>

#include "core/kdf_fc.h"

/* S is assembled in one stack buffer when it fits, so a typical derivation
 * (two nonces and an identity) is a single HMAC update; larger inputs stream. */

int pk_kdf_init(pk_kdf_t *k, const uint8_t *key, size_t keylen)
{
    if (!k)
        return PK_ERR_INVAL;
    return pk_hmac_init(&k->h, key, keylen);
}

static void pk_kdf_wipe_s(pk_kdf_t *k)
{
    pk_wipe(k->s, k->sused);
    k->sused = 0;
}

int pk_kdf_rekey(pk_kdf_t *k, const uint8_t *key, size_t keylen)
{
    if (!k)
        return PK_ERR_INVAL;
    pk_kdf_wipe_s(k);
    return pk_hmac_rekey(&k->h, key, keylen);
}

void pk_kdf_clear(pk_kdf_t *k)
{
    if (k) {
        pk_kdf_wipe_s(k);
        pk_hmac_clear(&k->h);
    }
}

/* Checks the parameter list; *total receives the length of S. */
static int pk_kdf_check(const pk_kdf_param_t *params, size_t np, size_t *total)
{
    size_t t = 1; /* FC */

    if (np > PK_KDF_MAX_PARAMS || (np && !params))
        return PK_ERR_INVAL;
    for (size_t i = 0; i < np; i++) {
        if (params[i].len > 0xFFFF || (params[i].len && !params[i].p))
            return PK_ERR_INVAL;
        t += params[i].len + 2; /* at most 8 * 65537 + 1: cannot overflow */
    }
    *total = t;
    return PK_OK;
}

int pk_kdf_derive(pk_kdf_t *k, uint8_t fc, const pk_kdf_param_t *params, size_t np,
                  uint8_t out[PK_KDF_OUT_LEN])
{
    size_t total = 0, off = 0;
    int rc;

    if (!k || !out)
        return PK_ERR_INVAL;
    rc = pk_kdf_check(params, np, &total);
    if (rc != PK_OK)
        return rc;

    if (total <= sizeof k->s) {
        uint8_t *s = k->s;
        s[off++] = fc;
        for (size_t i = 0; i < np; i++) {
            if (params[i].len == 16) /* nonces, RAND, UIDs: an inlined copy */
                memcpy(s + off, params[i].p, 16);
            else if (params[i].len)
                memcpy(s + off, params[i].p, params[i].len);
            off += params[i].len;
            s[off++] = (uint8_t)(params[i].len >> 8);
            s[off++] = (uint8_t)params[i].len;
        }
        if (off > k->sused)
            k->sused = off; /* S stays until rekey/clear (see kdf.h) */
        rc = pk_hmac(&k->h, s, off, out);
        goto out;
    }

    rc = pk_hmac_begin(&k->h);
    if (rc == PK_OK)
        rc = pk_hmac_update(&k->h, &fc, 1);
    for (size_t i = 0; rc == PK_OK && i < np; i++) {
        uint8_t l[2] = {(uint8_t)(params[i].len >> 8), (uint8_t)params[i].len};
        rc = pk_hmac_update(&k->h, params[i].p, params[i].len);
        if (rc == PK_OK)
            rc = pk_hmac_update(&k->h, l, sizeof l);
    }
    if (rc == PK_OK)
        rc = pk_hmac_final(&k->h, out);
out:
    if (rc != PK_OK)
        pk_wipe(out, PK_KDF_OUT_LEN);
    return rc;
}

int pk_kdf(const uint8_t *key, size_t keylen, uint8_t fc, const pk_kdf_param_t *params, size_t np,
           uint8_t out[PK_KDF_OUT_LEN])
{
    pk_kdf_t k = {0};
    int rc = pk_kdf_init(&k, key, keylen);

    if (rc == PK_OK)
        rc = pk_kdf_derive(&k, fc, params, np, out);
    pk_kdf_clear(&k);
    return rc;
}

/*
 * The registry. Sizes in bytes; "id" is a device or node identity as UTF-8
 * (1..64 bytes). Keep in step with kdf_fc.h (a unit test parses that header
 * and fails on any FC missing here) and with docs/protocol.md.
 */
static const pk_kdf_entry_t pk_kdf_table[] = {
    /* ---- 3GPP ---- */
    {"K_D-sess", PK_FC_KD_SESS, "K_D (256-bit root key of the pair; K_NRP in TS 33.536)",
     "P0 Nonce_1 (16), P1 Nonce_2 (16)", "session key of a direct link; input to PEK/PIK (0x7E)",
     "TS 33.536 Annex A (K_NRP-sess from K_NRP)"},
    {"PEK/PIK", PK_FC_PEK_PIK, "K_D-sess (256 bit)",
     "P0 algorithm type distinguisher (1): 0x00 PEK (encryption), 0x01 PIK (integrity); "
     "P1 algorithm identity (1), TS 33.501 coding",
     "direct-link encryption or integrity key: 128-bit key = last 16 bytes",
     "TS 33.536 Annex A (NRPEK/NRPIK from K_NRP-sess)"},
    {"PTK", PK_FC_PTK, "PGK (256-bit ProSe group key)",
     "P0 group member identity (3; the sender's layer-2 source address in 3GPP), "
     "P1 PTK identity (2), P2 group identity (3)",
     "per-sender traffic key of a group", "TS 33.303 A.3"},

    /* ---- proxkey: registration ---- */
    {"MAC-A (AUTN)", PK_FC_REG_AUTN, "K (device key, 128 or 256 bit)",
     "P0 RAND (16), P1 nonce_d (16), P2 node id (id)",
     "network authentication: AUTN = first 16 bytes", "proxkey"},
    {"RES/XRES", PK_FC_REG_RES, "K (device key)", "P0 RAND (16), P1 nonce_d (16), P2 node id (id)",
     "device authentication: RES = XRES = first 16 bytes", "proxkey"},
    {"K_reg", PK_FC_REG_KREG, "K (device key)",
     "P0 RAND (16), P1 nonce_d (16), P2 node id (id), P3 device id (id)",
     "registration context key (256 bit) of device and node", "proxkey"},
    {"registration message key", PK_FC_REG_MSG, "K_reg",
     "P0 direction (1): 0x00 up (device to node), 0x01 down",
     "device<->node record key: AES-128 key = last 16 bytes, nonce salt = first 4 bytes",
     "proxkey"},
    {"K_d2d", PK_FC_KD2D, "K_reg", "P0 node id (id)",
     "device-specific D2D key kept by the serving node", "proxkey"},
    {"K_serv", PK_FC_KSERV, "K_d2d", "P0 nonce (16), P1 id A (id), P2 id B (id), P3 area (4)",
     "serving-node session key of a beacon pair (inter-node method)", "proxkey"},
    {"link record key", PK_FC_LINK_REC, "PEK (direct link) or individual key (master-key clients)",
     "P0 direction (1): 0x00 initiator to responder, 0x01 back",
     "direct-link record key: AES-128 key = last 16 bytes, nonce salt = first 4 bytes", "proxkey"},
    {"pool link key", PK_FC_POOL_LINK, "pool root key (256 bit), selected by the indicated KSI",
     "P0 fresh parameter (16), P1 id initiator (id), P2 id responder (id)",
     "option-2 link root key K_D for one pair: a third holder of the pool cannot derive it",
     "proxkey"},
    {"K_D-sess (public-key mode)", PK_FC_PK_SESS, "X25519 shared secret (32)",
     "P0 Nonce_1 (16), P1 Nonce_2 (16), P2 id initiator (id), P3 id responder (id)",
     "session key of a signed X25519 link; then PEK/PIK (0x7E)", "proxkey"},

    /* ---- proxkey: master and individual keys ---- */
    {"individual key", PK_FC_IK, "MK (master key)",
     "P0 min(n1,n2) (16), P1 max(n1,n2) (16), P2 min(id1,id2) (id), P3 max(id1,id2) (id), "
     "P4 MK ID (4)",
     "individual key of a client pair", "proxkey"},
    {"K_auth", PK_FC_MK_AUTH, "MK (master key)", "P0 MK ID (4)",
     "key of the mutual-authentication MACs between clients", "proxkey"},
    {"K_wrap", PK_FC_IK_WRAP, "MK (master key)", "P0 MK ID (4), P1 nonce (16)",
     "wraps an individual key made by one client (one-sided variant)", "proxkey"},

    /* ---- proxkey: trigger server ---- */
    {"UID2", PK_FC_UID2, "K1 (trigger key)", "P0 UID1 (16), P1 UID_RAND (16)",
     "next pseudonymous identity: UID2 = first 16 bytes", "proxkey"},
    {"K2", PK_FC_K2, "K1 (trigger key)", "P0 UID_RAND (16), P1 UID2 (16)",
     "optional next trigger key: AES-128 key = last 16 bytes", "proxkey"},

    /* ---- proxkey: storage ---- */
    {"row wrap key (reserved)", PK_FC_ROW_KEY, "KEK (key-encryption key)",
     "P0 table name (UTF-8, 1..64)", "reserved: per-table wrap key of stored secrets", "proxkey"},
    {"gts journal key", PK_FC_GTS_JOURNAL, "KEK (256-bit key-encryption key of the gts store)",
     "P0 journal generation (8), P1 random salt (16)",
     "seals the trigger server's journal file: AES-256-GCM key = the whole 32 bytes", "proxkey"},
};

const pk_kdf_entry_t *pk_kdf_registry(size_t *n)
{
    if (n)
        *n = sizeof pk_kdf_table / sizeof pk_kdf_table[0];
    return pk_kdf_table;
}
