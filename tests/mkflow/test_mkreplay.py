#!/usr/bin/env python3
"""Replay protection of `proxkey device mk run` across restarts and evicted
receive contexts, with real processes on 127.0.0.1 (docs/protocol.md "Master
keys from the kms to the clients" §4; the mk-rx file in docs/device.md).

usage: test_mkreplay.py PROXKEY

A kms and a node give two devices (c1, c2) a master key; their `mk run`
clients make an individual key. c1's records to c2 go through a UDP relay
that keeps a copy of each, so the test can send any of them again:

- restart: a record delivered before c2 is killed (SIGKILL) and restarted is
  not delivered again, nor is a newer one; a record sealed before the restart
  but never delivered (late, inside the window) still is, once; a fresh
  record still is;
- windows that cannot be saved: the records are not delivered, and the same
  records are delivered once the file can be written again (nothing was
  accepted);
- a damaged, truncated, foreign, future-version or world-readable mk-rx stops
  `mk run` with a clear error, and a second `mk run` on the directory is
  refused;
- eviction: with 17 keys in use (16 receive contexts), a record under the key
  whose context was evicted is not delivered again; a fresh one is (the
  extra keys are written into both mk-table files, as docs/device.md gives
  the format);
- a key that expires takes its window out of mk-rx.
"""
import os
import re
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkharness  # noqa: E402
from mkharness import check, count, free_port, read, run, start, wait_for  # noqa: E402


class Relay:
    """UDP relay in front of a client: keeps every datagram it is sent and
    forwards it unless holding."""

    def __init__(self, target_port):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(0.1)
        self.port = self.s.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.target = ("127.0.0.1", target_port)
        self.hold = False
        self.seen = []
        self.lock = threading.Lock()
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        end = time.time() + 300
        while not self.stop and time.time() < end:
            try:
                data, _ = self.s.recvfrom(65535)
            except socket.timeout:
                continue
            with self.lock:
                self.seen.append(data)
                if not self.hold:
                    self.s.sendto(data, self.target)

    def last(self, after):
        """The first datagram kept after the first `after` ones (waits for it)."""
        end = time.time() + 5
        while time.time() < end:
            with self.lock:
                if len(self.seen) > after:
                    return self.seen[after]
            time.sleep(0.02)
        return None

    def inject(self, data):
        self.s.sendto(data, self.target)

    def close(self):
        self.stop = True
        self.t.join(2)
        self.s.close()


def send_via(relay, src, partner, text):
    """`mk send` from src to partner through the relay; the record it sent."""
    n = len(relay.seen)
    p = run("device", "mk", "send", partner, text, "--dir", src, "--to", relay.addr)
    check(p.returncode == 0, f"mk send {partner} {text!r}")
    return relay.last(n)


# ---- the state files, as docs/device.md gives them ----

def table_rows(path):
    """mk-table: "PKMT" ver(1)=1 n(1) n x {key_id(4) key(16) expiry(8) created(8)
    mk_id(4) role(1) flags(1) block8(partner) tx_next(8)}"""
    b = open(path, "rb").read()
    assert b[:5] == b"PKMT\x01", b[:5]
    rows, off = [], 6
    for _ in range(b[5]):
        kid, key, exp, cre, mk, role, flags, plen = struct.unpack_from(">I16sQQIBBB", b, off)
        off += 43
        partner = b[off:off + plen]
        off += plen
        (tx,) = struct.unpack_from(">Q", b, off)
        off += 8
        rows.append(dict(key_id=kid, key=key, expiry=exp, created=cre, mk_id=mk, role=role,
                         flags=flags, partner=partner, tx=tx))
    assert off == len(b)
    return rows


def table_write(path, rows):
    out = b"PKMT\x01" + bytes([len(rows)])
    for r in rows:
        out += struct.pack(">I16sQQIBBB", r["key_id"], r["key"], r["expiry"], r["created"],
                           r["mk_id"], r["role"], r["flags"], len(r["partner"]))
        out += r["partner"] + struct.pack(">Q", r["tx"])
    with open(path, "wb") as f:
        f.write(out)
    os.chmod(path, 0o600)


def rx_windows(path):
    """mk-rx: "PKMR" ver(1)=1 block8(id) n(1) n x {key_id(4) created(8) top(8) ring(128)};
    returns (id, {(key_id, created): top})."""
    b = open(path, "rb").read()
    assert b[:5] == b"PKMR\x01", b[:5]
    idl = b[5]
    cid = b[6:6 + idl]
    off = 6 + idl
    n = b[off]
    off += 1
    wins = {}
    for _ in range(n):
        kid, cre, top = struct.unpack_from(">IQQ", b, off)
        wins[(kid, cre)] = top
        off += 148
    assert off == len(b)
    return cid, wins


W = tempfile.mkdtemp(prefix="pk-mkreplay-")
mkharness.setup(sys.argv[1], W)
try:
    assert run("ca", "init", "ca").returncode == 0
    for cn in ("kms", "node-1"):
        assert run("ca", "issue", "ca", cn).returncode == 0
    assert run("kms", "init", "--log-level", "warn").returncode == 0
    assert run("kms", "domain", "add", "d1", "--log-level", "warn").returncode == 0
    for d in ("c1", "c2"):
        p = run("kms", "device", "add", d, "--log-level", "warn")
        key = re.search(r" key ([0-9a-f]{64})", p.stdout).group(1)
        run("device", "init", "--dir", d, "--id", d, "--key", key, "--node", "127.0.0.1:1")
    assert run("kms", "domain", "member", "add", "d1", "c1", "c2",
               "--log-level", "warn").returncode == 0
    assert run("kms", "master", "rotate", "d1", "--lifetime", "1h",
               "--log-level", "warn").returncode == 0
    kp = free_port(socket.SOCK_STREAM)
    start("kms", "serve", "--listen", f"127.0.0.1:{kp}", "--ca", "ca/ca.crt", "--cert",
          "ca/kms.crt", "--key", "ca/kms.key", "--log-level", "warn")
    node = f"127.0.0.1:{free_port()}"
    start("node", "serve", "--id", "node-1", "--listen-udp", node, "--kms", f"127.0.0.1:{kp}",
          "--ca", "ca/ca.crt", "--cert", "ca/node-1.crt", "--key", "ca/node-1.key",
          "--stats-ms", "0", "--log-level", "warn")

    def register(d):
        for _ in range(25):
            if run("device", "register", "--dir", d, "--node", node, ok=False).returncode == 0:
                return True
            time.sleep(0.2)
        return False

    check(register("c1") and register("c2"), "c1 and c2 registered (master key 1)")
    ports = {"c1": free_port(), "c2": free_port()}

    def client(d, out, peers=True):
        args = ["device", "mk", "run", "--dir", d, "--listen", f"127.0.0.1:{ports[d]}",
                "--lead-time", "2", "--retry", "1", "--auth-timeout", "1", "--no-push"]
        if peers:
            o = "c2" if d == "c1" else "c1"
            args += ["--peer", f"{o}=127.0.0.1:{ports[o]}"]
        p = start(*args, out=out)
        check(wait_for(out, r"event=listening "), f"{d}: mk run listening ({out})")
        return p

    # c2's mk-table cannot be written at first (its temporary file's name is
    # a directory): the key it makes must still reach the file, by a retry
    table, table_tmp = os.path.join(W, "c2", "mk-table"), os.path.join(W, "c2", "mk-table.tmp")
    os.mkdir(table_tmp)
    c1 = client("c1", "c1-a.txt")
    c2 = client("c2", "c2-a.txt")
    check(wait_for("c1-a.txt", r"event=key partner=c2 ") and
          wait_for("c2-a.txt", r"event=key partner=c1 "), "c1 and c2 share an individual key")
    check(wait_for("c2-a.txt", r"event=table_save_failed ") and not os.path.exists(table),
          "c2's mk-table cannot be written: the failure is reported")
    os.rmdir(table_tmp)
    end = time.time() + 5
    while time.time() < end and not os.path.exists(table):
        time.sleep(0.1)
    check(os.path.exists(table) and any(r["partner"] == b"c1" for r in table_rows(table)),
          "the write is retried: c2's key reaches mk-table without any further change")
    relay = Relay(ports["c2"])
    MSG = r"event=message from=c1 .*text=%s$"

    # ---- 1. restart: nothing accepted before is accepted again ----
    r1 = send_via(relay, "c1", "c2", "one")
    check(r1 is not None and wait_for("c2-a.txt", MSG % "one"), "record 1 delivered")
    relay.hold = True
    r2 = send_via(relay, "c1", "c2", "two")  # sealed, held back: a late record
    r3 = send_via(relay, "c1", "c2", "three")
    relay.hold = False
    relay.inject(r3)
    check(wait_for("c2-a.txt", MSG % "three"), "record 3 delivered (2 still held back)")
    relay.inject(r1)
    check(wait_for("c2-a.txt", r"event=record_dropped .*reason=replay"),
          "record 1 again while running: dropped as a replay")
    check(os.path.exists(os.path.join(W, "c2", "mk-rx")) and
          stat.S_IMODE(os.stat(os.path.join(W, "c2", "mk-rx")).st_mode) == 0o600 and
          not os.path.exists(os.path.join(W, "c2", "mk-rx.tmp")),
          "c2/mk-rx written 0600, no temporary file left")
    c2.send_signal(signal.SIGKILL)  # a crash: nothing is saved on the way out
    c2.wait(10)
    c2 = client("c2", "c2-b.txt")
    check(wait_for("c2-b.txt", r"event=listening .* windows=1$"),
          "restarted c2 loaded one saved window")
    relay.inject(r1)
    relay.inject(r3)
    check(wait_for("c2-b.txt", r"event=record_dropped .*reason=replay", 2),
          "after the restart, records 1 and 3 are dropped as replays")
    relay.inject(r2)
    check(wait_for("c2-b.txt", MSG % "two"), "the late record 2 (never delivered) is, once")
    relay.inject(r2)
    check(wait_for("c2-b.txt", r"event=record_dropped .*reason=replay", 3),
          "record 2 again: dropped")
    send_via(relay, "c1", "c2", "four")
    check(wait_for("c2-b.txt", MSG % "four"), "a fresh record after the restart is delivered")
    check(count("c2-b.txt", r"event=message ") == 2 and
          count("c2-a.txt", r"event=message ") == 2,
          "each record delivered exactly once over both runs (one, three; two, four)")

    # ---- 2. windows that cannot be saved: the records are not delivered ----
    relay.hold = True
    r5 = send_via(relay, "c1", "c2", "five")
    r5b = send_via(relay, "c1", "c2", "five-b")
    relay.hold = False
    tmp = os.path.join(W, "c2", "mk-rx.tmp")
    os.mkdir(tmp)  # the atomic write's temporary file cannot be created
    relay.inject(r5)
    relay.inject(r5b)  # most likely in the same batch (one write for both)
    check(wait_for("c2-b.txt", r"event=record_dropped .*reason=i/o error", 2),
          "mk-rx cannot be written: records 5 and 5b dropped")
    check(count("c2-b.txt", r"text=five") == 0, "neither was printed")
    os.rmdir(tmp)
    relay.inject(r5)
    relay.inject(r5b)
    send_via(relay, "c1", "c2", "six")
    check(wait_for("c2-b.txt", MSG % "six") and count("c2-b.txt", MSG % "five") == 1 and
          count("c2-b.txt", MSG % "five-b") == 1,
          "the same records once the file can be written: each delivered once (none was "
          "accepted)")

    # ---- 3. a bad mk-rx stops mk run; one mk run per directory ----
    p = run("device", "mk", "run", "--dir", "c2", "--listen", "127.0.0.1:0", "--duration", "1",
            "--no-push", ok=False)
    check(p.returncode == 1 and "in use by another 'proxkey device mk run'" in p.stderr,
          "a second mk run on c2 is refused")
    p = run("device", "mk", "send", "c1", "to c1", "--dir", "c2", "--to",
            f"127.0.0.1:{ports['c1']}")
    check(wait_for("c1-a.txt", r"event=message from=c2 .*text=to c1$"), "c2 -> c1 (c1 has a window)")
    c2.send_signal(signal.SIGTERM)
    c2.wait(10)
    rx = os.path.join(W, "c2", "mk-rx")
    good = open(rx, "rb").read()

    def bad_start(data, what, expect, mode=0o600):
        with open(rx, "wb") as f:
            f.write(data)
        os.chmod(rx, mode)
        p = run("device", "mk", "run", "--dir", "c2", "--listen", "127.0.0.1:0",
                "--duration", "2", "--no-push", ok=False)
        check(p.returncode == 1 and expect in p.stderr and "not starting" in p.stderr and
              "event=listening" not in p.stdout and p.stderr.count("\n") == 1,
              f"mk-rx {what}: mk run refuses to start ({p.stderr.strip()!r})")

    bad_start(good[:-1], "truncated", "c2/mk-rx is damaged")
    bad_start(good + b"\0", "with a byte too many", "c2/mk-rx is damaged")
    top_bit = bytearray(good)
    struct.pack_into(">Q", top_bit, len(good) - 136, 0xFFFFFFFFFFFFFFFF)  # top 2^64-1
    bad_start(bytes(top_bit), "with an impossible window", "c2/mk-rx is damaged")
    bad_start(b"PKMR\x02" + good[5:], "of version 2", "c2/mk-rx has an unsupported version")
    bad_start(open(os.path.join(W, "c1", "mk-rx"), "rb").read(), "of c1",
              "c2/mk-rx belongs to another client identity")
    bad_start(good, "readable by others", "c2/mk-rx is readable by others", 0o644)
    with open(rx, "wb") as f:
        f.write(good)
    os.chmod(rx, 0o600)

    # ---- 4. eviction (17 keys, 16 receive contexts); an expiring key ----
    c1.send_signal(signal.SIGTERM)
    c1.wait(10)
    t1, t2 = os.path.join(W, "c1", "mk-table"), os.path.join(W, "c2", "mk-table")
    rows1, rows2 = table_rows(t1), table_rows(t2)
    mk_id = rows2[0]["mk_id"]
    used = {r["key_id"] & 0xFFFF for r in rows1 + rows2}
    extra = []
    kid = 0x7E000000
    while len(extra) < 18:  # e01..e17, and "short", which expires soon
        kid += 1
        if kid & 0xFFFF not in used:
            extra.append(kid)
    now = int(time.time() * 1000)
    for i, k in enumerate(extra):
        name = "short" if i == 17 else f"{i + 1:02d}"
        exp = now + (10000 if i == 17 else 1200000)
        key = bytes([0x40 + i]) * 16
        rows1.append(dict(key_id=k, key=key, expiry=exp, created=now - 1000, mk_id=mk_id,
                          role=1, flags=1, partner=b"e" + name.encode(), tx=1))
        rows2.append(dict(key_id=k, key=key, expiry=exp, created=now - 2000 - i, mk_id=mk_id,
                          role=2, flags=1, partner=b"x" + name.encode(), tx=1))
    short = (extra[17], now - 2000 - 17)
    table_write(t1, rows1)
    table_write(t2, rows2)
    c2 = client("c2", "c2-c.txt", peers=False)
    send_via(relay, "c1", "eshort", "short-lived")
    check(wait_for("c2-c.txt", r"event=message from=xshort .*text=short-lived$"),
          "under a key that expires in 10 s: delivered")
    _, wins = rx_windows(rx)
    check(short in wins and len(wins) == 2, "mk-rx: 2 windows, the short-lived key's among them")
    ev1 = send_via(relay, "c1", "e01", "ev-01")
    check(wait_for("c2-c.txt", r"event=message from=x01 .*text=ev-01$"), "under key e01: delivered")
    for i in range(2, 18):
        send_via(relay, "c1", f"e{i:02d}", f"ev-{i:02d}")
    check(wait_for("c2-c.txt", r"event=message from=x17 .*text=ev-17$") and
          count("c2-c.txt", r"event=message from=x\d\d ") == 17,
          "16 more keys: 17 receive contexts needed, 16 kept (e01's evicted)")
    relay.inject(ev1)
    check(wait_for("c2-c.txt", r"event=record_dropped .*reason=replay"),
          "the record under e01 again, its context evicted: dropped as a replay")
    send_via(relay, "c1", "e01", "ev-01 again")
    check(wait_for("c2-c.txt", r"event=message from=x01 .*text=ev-01 again$") and
          count("c2-c.txt", r"text=ev-01$") == 1,
          "a fresh record under e01 is delivered; the old one was delivered once")
    check(wait_for("c2-c.txt", r"event=expired removed=1", 1, 20), "the short-lived key expired")
    time.sleep(0.5)
    cid, wins = rx_windows(rx)
    keys2 = {(r["key_id"], r["created"]) for r in table_rows(t2)}
    check(cid == b"c2" and short not in wins and set(wins) <= keys2 and len(wins) == 18,
          f"its window left mk-rx with it; each of the {len(wins)} windows is a key in mk-table")
    c2.send_signal(signal.SIGTERM)
    c2.wait(10)
    check(c2.returncode == 0 and re.search(r"event=stop .*messages=19 ", read("c2-c.txt")),
          "c2 stopped cleanly")
finally:
    status = mkharness.finish()
sys.exit(status)
