#!/usr/bin/env python3
"""UDP helpers for tests/system/system.sh (loopback only, bounded in time).

relay PORTFILE NODE_PORT RECORD SECONDS
    Forwards one device's datagrams to the node at 127.0.0.1:NODE_PORT and the
    node's answers back; appends every device->node datagram (hex) to RECORD.
attack NODE_PORT RECORD
    Sends bad input to the node: truncated, oversized, wrong type, random
    bytes, the recorded REQUEST replayed, the recorded RESPONSE with a wrong
    RES, the recorded protected record (LINK_REQ) replayed. Exits 1 if any
    answer is larger than the request it follows or is anything but the
    CHALLENGE a REQUEST may provoke; prints what it sent and received.
"""
import os
import random
import select
import socket
import sys
import time


def relay(portfile, node_port, record, seconds):
    node = ("127.0.0.1", int(node_port))
    down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    down.bind(("127.0.0.1", 0))
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.bind(("127.0.0.1", 0))
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % down.getsockname()[1])
    os.rename(portfile + ".tmp", portfile)
    client = None
    end = time.time() + float(seconds)
    with open(record, "a") as rec:
        while time.time() < end:
            r, _, _ = select.select([down, up], [], [], 0.2)
            for s in r:
                data, addr = s.recvfrom(65536)
                if s is down:
                    client = addr
                    rec.write(data.hex() + "\n")
                    rec.flush()
                    up.sendto(data, node)
                elif client and addr == node:
                    down.sendto(data, client)


def attack(node_port, record):
    node = ("127.0.0.1", int(node_port))
    grams = [bytes.fromhex(l.strip()) for l in open(record) if l.strip()]
    req = next(g for g in grams if g[0] == 0x01 and len(g) == 83)
    resp = next(g for g in grams if g[0] == 0x03)
    linkreq = [g for g in grams if g[0] == 0x10]
    assert linkreq, "no LINK_REQ recorded"
    rnd = random.Random(20260101)
    cases = [
        ("truncated REQUEST", req[:40]),
        ("truncated RESPONSE", resp[:-1]),
        ("oversized", bytes([0x01]) + bytes(599)),
        ("wrong type", bytes([0x7F]) + bytes(82)),
        ("wrong version", req[:1] + bytes([9]) + req[2:]),
    ]
    cases += [("random", bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200))))
              for _ in range(60)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    bad = 0

    def answers(t=0.3):
        got = []
        end = time.time() + t
        while True:
            left = end - time.time()
            if left <= 0 or not select.select([s], [], [], left)[0]:
                return got
            got.append(s.recvfrom(65536)[0])

    for name, g in cases:
        s.sendto(g, node)
    got = answers()
    for a in got:  # garbage may start with 0x01 at 83 bytes only by chance: none here
        print("answer to garbage: %d bytes type 0x%02x" % (len(a), a[0]))
        bad += 1
    # replayed REQUEST (new address): at most a 50-byte CHALLENGE, never more
    s.sendto(req, node)
    got = answers(1.0)
    for a in got:
        if len(a) > len(req) or a[0] != 0x02:
            print("replayed REQUEST: bad answer %d bytes type 0x%02x" % (len(a), a[0]))
            bad += 1
    print("replayed REQUEST: %d answer(s) %s" % (len(got), [len(a) for a in got]))
    # the recorded RESPONSE with a wrong RES, for that half-open run
    s.sendto(resp[:-1] + bytes([resp[-1] ^ 0x5A]), node)
    # the protected LINK_REQ replayed
    for g in linkreq:
        s.sendto(g, node)
    got = answers(0.5)
    for a in got:
        print("wrong RES / replayed record: answer %d bytes type 0x%02x" % (len(a), a[0]))
        bad += 1
    print("sent %d bad datagrams, %d bad answers" % (len(cases) + 2 + len(linkreq), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "relay":
        relay(*sys.argv[2:6])
    elif sys.argv[1] == "attack":
        sys.exit(attack(*sys.argv[2:4]))
    else:
        sys.exit("usage: udp_tool.py relay|attack ...")
