/*
 * FC codes of every derivation proxkey performs (TS 33.220 Annex B KDF).
 * 3GPP's own values where 3GPP defines the derivation; proxkey's own in
 * 0xE0-0xFE, a range no 3GPP specification allocates. The full table, with
 * parameters and purpose, is pk_kdf_registry() and docs/protocol.md.
 *
 * Parameters are listed in order as P0, P1, ...; sizes in bytes; "id" is a
 * device or node identity as UTF-8 (1..64 bytes).
 */
#ifndef PK_CORE_KDF_FC_H
#define PK_CORE_KDF_FC_H

/* 3GPP */
/* TS 33.536: K_D-sess = KDF(K_D, Nonce_1(16), Nonce_2(16)) */
#define PK_FC_KD_SESS 0x7F
/* TS 33.536: PEK/PIK = KDF(K_D-sess, type(1): 0x00 enc 0x01 int, algorithm identity(1));
 * 128-bit key = last 16 bytes
 */
#define PK_FC_PEK_PIK 0x7E
/* TS 33.303 A.3: PTK = KDF(PGK, group member identity(3), PTK identity(2), group identity(3)) */
#define PK_FC_PTK 0x4A

/* proxkey: registration (device key K at the kms) */
/* MAC-A = KDF(K, RAND(16), nonce_d(16), node id); AUTN = first 16 */
#define PK_FC_REG_AUTN 0xE0
/* RES = XRES = first 16 of KDF(K, RAND(16), nonce_d(16), node id) */
#define PK_FC_REG_RES 0xE1
/* K_reg = KDF(K, RAND(16), nonce_d(16), node id, device id) */
#define PK_FC_REG_KREG 0xE2
/* message key = KDF(K_reg, direction(1): 0x00 up 0x01 down); AES-128 key = last 16, nonce salt
 * = first 4
 */
#define PK_FC_REG_MSG 0xE3
/* K_d2d = KDF(K_reg, node id) (serving-node key issue) */
#define PK_FC_KD2D 0xE4
/* K_serv = KDF(K_d2d, nonce(16), id A, id B, area(4)) */
#define PK_FC_KSERV 0xE5
/* direct-link record key = KDF(PEK or individual key, direction(1): 0x00 initiator->responder,
 * 0x01 back); AES-128 key = last 16, salt = first 4
 */
#define PK_FC_LINK_REC 0xE6
/* option-2 link root key = KDF(pool key, param(16), id initiator, id responder): binds a pool
 * key to one pair
 */
#define PK_FC_POOL_LINK 0xEB
/* public-key mode: K_D-sess = KDF(X25519 shared(32), Nonce_1(16), Nonce_2(16), id initiator, id
 * responder)
 */
#define PK_FC_PK_SESS 0xE7

/* proxkey: master and individual keys (Toshiba) */
/* individual key = KDF(MK, min(n1,n2)(16), max(n1,n2)(16), min(id1,id2), max(id1,id2), MK
 * ID(4))
 */
#define PK_FC_IK 0xE8
/* K_auth = KDF(MK, MK ID(4)): the key of the auth MACs */
#define PK_FC_MK_AUTH 0xE9
/* K_wrap = KDF(MK, MK ID(4), nonce(16)): one-sided variant */
#define PK_FC_IK_WRAP 0xEA

/* proxkey: trigger server (Thales) */
/* UID2 = first 16 of KDF(K1, UID1(16), UID_RAND(16)) */
#define PK_FC_UID2 0xEC
/* K2 = KDF(K1, UID_RAND(16), UID2(16)); AES-128 key = last 16 */
#define PK_FC_K2 0xED

/* proxkey: storage */
/* reserved: per-table wrap key = KDF(KEK, table name) */
#define PK_FC_ROW_KEY 0xF0
/* gts journal file key JK = KDF(KEK, generation(8), salt(16)); AES-256-GCM key = all 32 bytes */
#define PK_FC_GTS_JOURNAL 0xF1

#endif
