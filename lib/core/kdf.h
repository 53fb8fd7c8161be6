/*
 * The one key derivation function: 3GPP TS 33.220 Annex B.2,
 *
 *     derived = HMAC-SHA-256(Key, FC || P0 || L0 || P1 || L1 || ... )
 *
 * with each Li the two-byte big-endian length of Pi; the output is 256 bits
 * and a 128-bit algorithm key is its 16 least significant (last) bytes.
 *
 * Every derivation proxkey performs has one entry in the registry below (and
 * the same table in docs/protocol.md), with its FC code, input key and
 * parameters. 3GPP's FC values are used where 3GPP defines the derivation.
 */
#ifndef PK_CORE_KDF_H
#define PK_CORE_KDF_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"

#define PK_KDF_OUT_LEN    32
#define PK_KDF_MAX_PARAMS 8

typedef struct pk_kdf_param {
    const void *p;
    size_t len; /* at most 65535 */
} pk_kdf_param_t;

/* A re-keyable KDF context (the HMAC key schedule is kept between uses). */
#define PK_KDF_INLINE_MAX 256

/*
 * The input S of a derivation is built in the context (when it fits
 * PK_KDF_INLINE_MAX bytes) and left there: it is no more secret than the key
 * schedule beside it, and both are wiped by pk_kdf_rekey() and
 * pk_kdf_clear(). Wiping S after every derivation cost 5 % of one.
 */
typedef struct pk_kdf {
    pk_hmac_t h;
    size_t sused;                 /* bytes of s written since the last wipe */
    uint8_t s[PK_KDF_INLINE_MAX]; /* FC || P0 || L0 || ... of the last derivation */
} pk_kdf_t;

int pk_kdf_init(pk_kdf_t *k, const uint8_t *key, size_t keylen);
int pk_kdf_rekey(pk_kdf_t *k, const uint8_t *key, size_t keylen);
void pk_kdf_clear(pk_kdf_t *k);

/* Derives 32 bytes; np <= PK_KDF_MAX_PARAMS. */
int pk_kdf_derive(pk_kdf_t *k, uint8_t fc, const pk_kdf_param_t *params, size_t np,
                  uint8_t out[PK_KDF_OUT_LEN]);

/* One-off derivation with a fresh context (not for hot paths). */
int pk_kdf(const uint8_t *key, size_t keylen, uint8_t fc, const pk_kdf_param_t *params, size_t np,
           uint8_t out[PK_KDF_OUT_LEN]);

/* The 128-bit key taken from a 256-bit KDF output: its last 16 bytes. */
static inline const uint8_t *pk_kdf_key128(const uint8_t out[PK_KDF_OUT_LEN])
{
    return out + 16;
}

/* ---- registry: see docs/protocol.md "Key derivations" ---- */
/* (FC constants and the table are filled in by lib/core/kdf.c.) */

typedef struct pk_kdf_entry {
    const char *name;    /* e.g. "K_D-sess" */
    uint8_t fc;          /* FC code */
    const char *key;     /* input key, e.g. "K_D (root key)" */
    const char *params;  /* parameters with sizes, e.g. "P0 Nonce_1 (16), P1 Nonce_2 (16)" */
    const char *purpose; /* what the output is for */
    const char *source;  /* "TS 33.536 A.2" or "proxkey" */
} pk_kdf_entry_t;

/* The whole registry; *n receives its length. */
const pk_kdf_entry_t *pk_kdf_registry(size_t *n);

#endif
