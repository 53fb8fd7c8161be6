#!/usr/bin/env python3
"""Known-answer vectors for the record layer (lib/core/record.h), computed
with an implementation independent of proxkey (pyca/cryptography AESGCM).

    record = type(1) || session id(2) || epoch(1) || counter(8)
             || AES-128-GCM(key, nonce = salt(4) || counter(8), aad = header, pt)

Run: python3 tests/record/gen_vectors.py  (prints the C table used by
test_record.c)."""
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = bytes(range(16))
SALT = bytes.fromhex("a0a1a2a3")
SESSION, EPOCH = 0x1234, 7

CASES = [
    (0x17, 1, b""),
    (0x17, 2, b"proxkey record layer"),
    (0xFF, 0x0102030405060708, bytes(range(64))),
    (0x00, 0xFFFFFFFFFFFFFFFE, b"last counter"),
]

for typ, ctr, pt in CASES:
    hdr = bytes([typ]) + SESSION.to_bytes(2, "big") + bytes([EPOCH]) + ctr.to_bytes(8, "big")
    nonce = SALT + ctr.to_bytes(8, "big")
    rec = hdr + AESGCM(KEY).encrypt(nonce, pt, hdr)
    print("    {0x%02x, 0x%016xULL, \"%s\", \"%s\"}," % (typ, ctr, pt.hex(), rec.hex()))
