#!/usr/bin/env python3
"""Generates tests/vectors/kdf_vectors.h: known-answer vectors for the
TS 33.220 Annex B.2 KDF, one (or more) per FC code in lib/core/kdf_fc.h.

An independent implementation: Python's hmac and hashlib only, no proxkey
code. The FC values are read from kdf_fc.h itself, and the script fails if an
FC there has no sample parameters below, so a new derivation cannot be added
without a vector.

    derived = HMAC-SHA-256(Key, FC || P0 || L0 || P1 || L1 || ...)
    Li = len(Pi) as two bytes, big-endian

Regenerate (from the repository root):
    python3 tests/vectors/gen_kdf.py > tests/vectors/kdf_vectors.h
"""
import hashlib
import hmac
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FC_HEADER = os.path.join(HERE, "..", "..", "lib", "core", "kdf_fc.h")


def kdf(key: bytes, fc: int, params) -> bytes:
    s = bytearray([fc])
    for p in params:
        if len(p) > 0xFFFF:
            raise ValueError("parameter longer than 65535 bytes")
        s += p
        s += len(p).to_bytes(2, "big")
    return hmac.new(key, bytes(s), hashlib.sha256).digest()


def seq(start: int, n: int) -> bytes:
    """n bytes counting up from start (mod 256): readable sample values."""
    return bytes((start + i) & 0xFF for i in range(n))


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


K256 = seq(0x00, 32)
K128 = seq(0x40, 16)
N1 = seq(0xA0, 16)
N2 = seq(0xB0, 16)
RAND = seq(0xC0, 16)
NONCE_D = seq(0xD0, 16)
DEV_A = b"device-0001"
DEV_B = b"device-0002"
NODE = b"node-1.example"
AREA = u32(0x00010203)
MK_ID = u32(0x0000002A)

# Sample inputs per FC name (the PK_FC_ suffix): list of (label, key, params).
SAMPLES = {
    "KD_SESS": [("K_D-sess", K256, [N1, N2])],
    "PEK_PIK": [
        ("PEK (enc, alg 0x02)", seq(0x10, 32), [b"\x00", b"\x02"]),
        ("PIK (int, alg 0x02)", seq(0x10, 32), [b"\x01", b"\x02"]),
    ],
    "PTK": [("PTK", seq(0x20, 32), [bytes.fromhex("0a0b0c"), bytes.fromhex("0001"),
                                    bytes.fromhex("112233")])],
    "REG_AUTN": [("MAC-A, 128-bit K", K128, [RAND, NONCE_D, NODE]),
                 ("MAC-A, 256-bit K", K256, [RAND, NONCE_D, NODE])],
    "REG_RES": [("RES/XRES", K128, [RAND, NONCE_D, NODE])],
    "REG_KREG": [("K_reg", K128, [RAND, NONCE_D, NODE, DEV_A])],
    "REG_MSG": [("reg message key up", seq(0x30, 32), [b"\x00"]),
                ("reg message key down", seq(0x30, 32), [b"\x01"])],
    "KD2D": [("K_d2d", seq(0x30, 32), [NODE])],
    "KSERV": [("K_serv", seq(0x50, 32), [N1, DEV_A, DEV_B, AREA])],
    "LINK_REC": [("link record key i->r", seq(0x60, 32), [b"\x00"]),
                 ("link record key r->i", seq(0x60, 32), [b"\x01"])],
    "POOL_LINK": [("pool link key", seq(0x68, 32), [N1, DEV_A, DEV_B])],
    "PK_SESS": [("K_D-sess public-key mode", seq(0x70, 32), [N1, N2, DEV_A, DEV_B])],
    "IK": [("individual key", seq(0x80, 32), [N1, N2, DEV_A, DEV_B, MK_ID])],
    "MK_AUTH": [("K_auth", seq(0x80, 32), [MK_ID])],
    "IK_WRAP": [("K_wrap", seq(0x80, 32), [MK_ID, N1])],
    "UID2": [("UID2", K128, [seq(0x90, 16), seq(0xE0, 16)])],
    "K2": [("K2", K128, [seq(0xE0, 16), seq(0xF0, 16)])],
    "GTS_JOURNAL": [("gts journal key", seq(0xB0, 32), [u32(0) + u32(7), seq(0xC0, 16)])],
    "ROW_KEY": [("row wrap key", seq(0xA0, 32), [b"devices"])],
}

# Encoding edge cases, not tied to one derivation (FC values arbitrary).
EDGE = [
    ("edge: no parameters", K256, 0x7F, []),
    ("edge: one empty parameter", K256, 0x7F, [b""]),
    ("edge: eight parameters (the maximum)", K256, 0xE5,
     [seq(i * 16, i + 1) for i in range(8)]),
    ("edge: 300-byte parameter (L = 0x01 0x2C, streamed)", K256, 0xE2, [seq(0x01, 300)]),
    ("edge: S exactly 256 bytes (inline limit)", K256, 0xE2, [seq(0x02, 253)]),
    ("edge: S 257 bytes (first streamed size)", K256, 0xE2, [seq(0x03, 254)]),
    ("edge: 100-byte key (hashed by HMAC)", seq(0x05, 100), 0x7E, [b"\x00", b"\x02"]),
    ("edge: empty key", b"", 0xE0, [RAND]),
]


def read_fcs(path):
    fcs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*#\s*define\s+PK_FC_(\w+)\s+0x([0-9A-Fa-f]{1,2})\b", line)
            if m:
                fcs[m.group(1)] = int(m.group(2), 16)
    return fcs


def c_str(b: bytes) -> str:
    return '"' + b.hex() + '"'


def main():
    fcs = read_fcs(FC_HEADER)
    if not fcs:
        sys.exit("no PK_FC_ defines found in " + FC_HEADER)
    missing = sorted(set(fcs) - set(SAMPLES))
    if missing:
        sys.exit("no sample parameters for: " + ", ".join("PK_FC_" + m for m in missing))
    stale = sorted(set(SAMPLES) - set(fcs))
    if stale:
        sys.exit("samples for FCs no longer in kdf_fc.h: " + ", ".join(stale))

    rows = []
    for name in sorted(fcs, key=lambda n: (fcs[n], n)):
        for label, key, params in SAMPLES[name]:
            rows.append((label, "PK_FC_" + name, fcs[name], key, params))
    for label, key, fc, params in EDGE:
        rows.append((label, None, fc, key, params))

    out = []
    w = out.append
    w("/* Generated by tests/vectors/gen_kdf.py (Python hmac/hashlib); do not edit.")
    w(" * Regenerate: python3 tests/vectors/gen_kdf.py > tests/vectors/kdf_vectors.h */")
    w("#ifndef PK_TESTS_KDF_VECTORS_H")
    w("#define PK_TESTS_KDF_VECTORS_H")
    w("")
    w("typedef struct pk_kdf_vector {")
    w("    const char *label;")
    w("    const char *fc_name; /* the kdf_fc.h define, or NULL for encoding edge cases */")
    w("    unsigned fc;")
    w("    const char *key; /* hex */")
    w("    unsigned np;")
    w("    const char *p[8]; /* hex, \"\" = empty parameter */")
    w("    const char *out;  /* hex, 32 bytes */")
    w("} pk_kdf_vector_t;")
    w("")
    w("static const pk_kdf_vector_t pk_kdf_vectors[] = {")
    for label, fc_name, fc, key, params in rows:
        derived = kdf(key, fc, params)
        w("    {")
        w('        "%s",' % label)
        w("        %s," % ('"%s"' % fc_name if fc_name else "NULL"))
        w("        0x%02X," % fc)
        w("        %s," % c_str(key))
        w("        %d," % len(params))
        w("        {")
        for p in params:
            w("            %s," % c_str(p))
        w("        },")
        w("        %s," % c_str(derived))
        w("    },")
    w("};")
    w("")
    w("#endif")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
