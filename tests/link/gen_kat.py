#!/usr/bin/env python3
"""Independent known-answer vectors for the direct link and registration
derivations (TS 33.220 Annex B KDF: HMAC-SHA-256(key, FC || P0 || L0 || ...)).
Uses only the Python standard library; prints the vectors as C string macros
that tests/link/test_link.c pastes in. Run: python3 tests/link/gen_kat.py"""
import hashlib
import hmac


def kdf(key, fc, *params):
    s = bytes([fc])
    for p in params:
        s += p + len(p).to_bytes(2, "big")
    return hmac.new(key, s, hashlib.sha256).digest()


def out(name, b):
    print('#define %s "%s"' % (name, b.hex()))


# direct link: TS 33.536 FCs 0x7F / 0x7E, proxkey record keys 0xE6
K_D = bytes(range(32))
N1 = bytes(range(0x40, 0x50))
N2 = bytes(range(0x80, 0x90))
ALG = b"\x01"
ksess = kdf(K_D, 0x7F, N1, N2)
pek = kdf(ksess, 0x7E, b"\x00", ALG)[16:]
pik = kdf(ksess, 0x7E, b"\x01", ALG)[16:]
i2r = kdf(pek, 0xE6, b"\x00")
r2i = kdf(pek, 0xE6, b"\x01")
out("KAT_KSESS", ksess)
out("KAT_PEK", pek)
out("KAT_PIK", pik)
out("KAT_REC_I2R_KEY", i2r[16:])
out("KAT_REC_I2R_SALT", i2r[:4])
out("KAT_REC_R2I_KEY", r2i[16:])
out("KAT_REC_R2I_SALT", r2i[:4])

# registration: FCs 0xE0..0xE3, and the option-2 per-link key 0xEB
K = bytes([0x0F] * 16)
RAND = bytes(range(0xA0, 0xB0))
ND = bytes(range(0xC0, 0xD0))
NODE = b"node-1.example"
DEV = b"dev-a"
out("KAT_AUTN", kdf(K, 0xE0, RAND, ND, NODE)[:16])
out("KAT_RES", kdf(K, 0xE1, RAND, ND, NODE)[:16])
kreg = kdf(K, 0xE2, RAND, ND, NODE, DEV)
out("KAT_KREG", kreg)
up = kdf(kreg, 0xE3, b"\x00")
out("KAT_UP_KEY", up[16:])
out("KAT_UP_SALT", up[:4])
POOL = bytes([0x77] * 32)
PARAM = bytes(range(0x10, 0x20))
out("KAT_POOL_LINK", kdf(POOL, 0xEB, PARAM, b"dev-a", b"dev-b"))
