#!/usr/bin/env python3
"""The independent Python trigger device (trigdev.py) against the real gts.

    test_pydev.py TRIGGER_GTS

TRIGGER_GTS is proxkey or the trigger_gts test driver (same `gts ...` and
`device poll ...` subcommands). On loopback only, in a scratch directory
removed at the end, with the server stopped at the end:

  0. offline: the KDF vectors of docs/protocol.md, a sealed response
     round trip, and every malformed or forged response refused;
  1. devices provisioned with `gts device add` (one --rotate, one
     --interval), `gts serve --listen 127.0.0.1:0`, the port from its log;
  2. rounds of polls: a new identity every exchange (the one `gts status`
     says the server expects next), stored 0600 before it is used; the key
     changes only on the --rotate device, whose responses carry ROTATE;
  3. every command type queued with `gts send` arrives once, decoded, in
     queue order (largest URL and payload too; intervals clamped to the
     device's bounds);
  4. a lost response: the retransmission (try 2, 3) gets Sent = 2, 3 with
     the same UID_RAND and command under a fresh nonce; the stale response
     does not verify once the device moved on; a given-up exchange keeps
     the identity and the next poll (try 1) continues it with Sent = 1;
  5. retransmission on timeout (a silent loopback socket sees try 1, 2, 3
     with the same identity), and an unknown identity gets no answer;
  6. the C device (`device poll`) polls with the state lines the Python
     device wrote (rotated key included), and the Python device with the
     lines the C device wrote; an old identity is answered by neither;
  7. 300 copies of a pending poll sent from another address (127.0.0.2)
     get at most the per-address budget of answers, and the device's own
     retransmission is still answered.
"""

import ctypes
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trigdev as td  # noqa: E402

B = None  # the proxkey / trigger_gts binary
DIR = None
DB = None
SERVER = None  # Popen of gts serve
PORT = None
CHECKS = 0


class Fail(Exception):
    pass


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise Fail(what)


def run(*args, ok=True, timeout=60):
    p = subprocess.run([B, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if ok and p.returncode != 0:
        raise Fail("%s: exit %d: %s%s" % (" ".join(args[:3]), p.returncode,
                                          p.stdout, p.stderr))
    return p


def gts(*args, ok=True):
    return run("gts", *args, "--db", DB, ok=ok)


def _die_with_parent():
    # the server must not outlive the test, even if the test is killed
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_server():
    global SERVER, PORT
    log = os.path.join(DIR, "gts.log")
    with open(log, "w") as f:
        SERVER = subprocess.Popen([B, "gts", "serve", "--db", DB, "--listen",
                                   "127.0.0.1:0"], stdout=subprocess.DEVNULL,
                                  stderr=f, preexec_fn=_die_with_parent)
    for _ in range(100):
        with open(log) as f:
            m = re.search(r"event=gts_listening port=([0-9]+)", f.read())
        if m:
            PORT = int(m.group(1))
            return
        if SERVER.poll() is not None:
            raise Fail("gts did not start: %s" % open(log).read())
        time.sleep(0.1)
    raise Fail("no gts_listening line")


def stop_server():
    global SERVER
    if SERVER is not None and SERVER.poll() is None:
        SERVER.terminate()
        try:
            SERVER.wait(10)
        except subprocess.TimeoutExpired:
            SERVER.kill()
            SERVER.wait()
    SERVER = None


def server_addr():
    return "127.0.0.1:%d" % PORT


class PyDev:
    """A Python device on its state file, with what the test saw of it."""

    def __init__(self, name, bounds=(td.INTERVAL_MIN, td.INTERVAL_MAX)):
        self.name = name
        self.path = os.path.join(DIR, name + ".state")
        self.bounds = bounds
        self.reload()
        self.uids = [self.dev.state.uid]
        self.keys = [self.dev.state.key]

    def reload(self):
        self.dev = td.Device(td.DeviceState.load(self.path), self.path,
                             self.bounds)

    def poll(self, **kw):
        """One exchange; checks what every accepted exchange must show."""
        kw.setdefault("timeout", 1.0)
        kw.setdefault("max_resend", 4)
        before = self.dev.state
        with td.connect(server_addr()) as s:
            out = self.dev.exchange(s, **kw)
        st = self.dev.state
        check(out.old_uid == before.uid and out.new_uid == st.uid,
              "%s: outcome identities" % self.name)
        check(st.uid not in self.uids,
              "%s: identity %s seen before" % (self.name, st.uid.hex()))
        check(st.uid == td.derive_uid2(before.key, before.uid,
                                       out.response.uid_rand),
              "%s: UID2 derivation" % self.name)
        # stored before it is used: the file holds the new identity, 0600
        on_disk = td.DeviceState.load(self.path)
        check(on_disk == st, "%s: state file not the new state" % self.name)
        mode = stat.S_IMODE(os.stat(self.path).st_mode)
        check(mode == 0o600, "%s: state file mode %o" % (self.name, mode))
        check(not os.path.exists(self.path + ".tmp"),
              "%s: temporary file left" % self.name)
        if out.rotated:
            check(st.key == td.derive_k2(before.key, out.response.uid_rand,
                                         st.uid),
                  "%s: K2 derivation" % self.name)
            check(st.key not in self.keys, "%s: K2 seen before" % self.name)
        else:
            check(st.key == before.key, "%s: key changed" % self.name)
        self.uids.append(st.uid)
        self.keys.append(st.key)
        return out

    def expect_uid_at_server(self):
        """gts status names the identity the server waits for: ours."""
        out = gts("status", self.name).stdout
        m = re.search(r"next identity UID2=([0-9a-f]{32})", out)
        check(m is not None, "%s: status: %s" % (self.name, out))
        check(m.group(1) == self.dev.state.uid.hex(),
              "%s: server expects %s, device holds %s" %
              (self.name, m.group(1), self.dev.state.uid.hex()))


def c_poll(path, timeout_ms=500, max_resend=5, ok=True):
    return run("device", "poll", "--state", path, "--server", server_addr(),
               "--timeout-ms", str(timeout_ms), "--max-resend",
               str(max_resend), ok=ok)


# --- 0. offline -------------------------------------------------------------

def offline_checks():
    # docs/protocol.md, "Keys and identities" and "The KDF"
    k1 = bytes(range(0x01, 0x11))
    uid1 = bytes(range(0x10, 0x20))
    rnd = bytes(range(0xA0, 0xB0))
    uid2 = td.derive_uid2(k1, uid1, rnd)
    check(uid2.hex() == "e2596f0b5c40277c1f7e051476bd99bb", "UID2 vector")
    check(td.derive_k2(k1, rnd, uid2).hex() ==
          "e3e318c163aa1070f9c729e02f021b4d", "K2 vector")
    check(td.kdf(bytes(range(32)), 0x7F, bytes(range(0xA0, 0xB0)),
                 bytes(range(0xB0, 0xC0))).hex() ==
          "06d73aa996ea4b686f5f74b87960eb3ffc202350d0d18614cef02268539d4133",
          "KDF worked example")
    check(td.build_poll(uid1, 3) == bytes([1, 1, 3, 0]) + uid1, "POLL")

    key = os.urandom(16)
    nonce = os.urandom(12)

    def seal(cmd=td.CMD_APP, flags=0, arg=b"x", sent=1, uid=uid1, k=key):
        return td.seal_resp(k, uid, nonce, cmd, flags, arg, sent, rnd)

    r = td.open_resp(key, uid1, seal(), 0)
    check((r.cmd, r.arg, r.sent, r.uid_rand) == (td.CMD_APP, b"x", 1, rnd),
          "round trip")
    check(len(seal(arg=b"a" * 1024)) == 1075, "largest response")
    td.open_resp(key, uid1, seal(arg=b"a" * 1024), 0)

    def refused(dgram, rc=0, uid=uid1, what=""):
        try:
            td.open_resp(key, uid, dgram, rc)
        except td.Malformed:
            check(True, what)
            return
        raise Fail("accepted: " + what)

    good = seal()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        refused(bytes(bad), what="bit flipped in byte %d" % i)
    refused(good[:-1], what="short")
    refused(good + b"\0", what="long")
    refused(good[:50], what="shorter than 51")
    refused(seal(uid=bytes(16)), what="other UID1 as associated data")
    refused(seal(k=os.urandom(16)), what="other key")
    refused(seal(sent=0), what="Sent 0")
    refused(seal(sent=2), what="Sent 2 with Resend_Counter 0")
    td.open_resp(key, uid1, seal(sent=2), 1)
    refused(seal(sent=3), rc=1, what="Sent 3 with Resend_Counter 1")
    refused(seal(flags=0x02), what="unknown flag")

    # authentic, but not usable: accepted as unsupported (the exchange must
    # complete, or the command would be bound to every retransmission)
    def unsupported(dgram, what):
        r = td.open_resp(key, uid1, dgram, 0)
        check(r.unsupported and r.value is None, "unsupported: " + what)

    unsupported(seal(cmd=0x07, arg=b""), what="unknown command")
    unsupported(seal(cmd=td.CMD_NONE, arg=b"x"), what="argument on none")
    unsupported(seal(cmd=td.CMD_KEYGEN, arg=b"x"), what="argument on keygen")
    unsupported(seal(cmd=td.CMD_UPDATE, arg=b""), what="empty URL")
    unsupported(seal(cmd=td.CMD_UPDATE, arg=b"a b"), what="URL with a space")
    unsupported(seal(cmd=td.CMD_OTA_HTTPS, arg=b"a" * 513),
                what="513-byte URL")
    unsupported(seal(cmd=td.CMD_POLL_FASTER, arg=b"\0\0\0"),
                what="u24 interval")
    unsupported(seal(cmd=td.CMD_POLL_SLOWER, arg=bytes(4)), what="interval 0")
    unsupported(seal(cmd=td.CMD_POLL_SLOWER,
                     arg=(604801).to_bytes(4, "big")),
                what="interval 604801")
    check(not td.open_resp(key, uid1, seal(), 0).unsupported,
          "a usable command is not marked unsupported")
    # the plaintext's arglen must account for every byte
    pt = (bytes([td.CMD_APP, 0]) + (2).to_bytes(2, "big") + b"x" + b"\1" +
          rnd)
    hdr = bytes([1, 2])
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    forged = hdr + nonce + AESGCM(key).encrypt(nonce, pt, hdr + uid1)
    refused(forged, what="arglen that does not match the length")

    # the state line
    line = "m-1 7 %s %s 30\n" % (key.hex(), uid1.hex())
    st = td.DeviceState.parse(line)
    check((st.name, st.dev_no, st.key, st.uid, st.interval) ==
          ("m-1", 7, key, uid1, 30) and st.line() == line, "state line")
    for bad in ("m-1 7 %s %s 0\n", "m-1 7 %s %s 30 x\n", "m-1 %s %s\n"):
        try:
            td.DeviceState.parse(bad % (key.hex(), uid1.hex()))
        except ValueError:
            check(True, "bad line")
            continue
        raise Fail("bad state line accepted: %r" % bad)
    print("ok: offline (KDF vectors, round trip, refusals: %d checks)"
          % CHECKS)


# --- 2, 3. rounds and commands ----------------------------------------------

def send(name, *cmd):
    p = gts("send", name, *cmd)
    check("queued %s" % cmd[0] in p.stdout, "send: %s" % p.stdout)


def deliver(dev, sends, expect, max_polls=12):
    """Queues `sends`, polls until the first command, then expects the
    whole list `expect` of (name, value) on consecutive exchanges and
    nothing more on two more."""
    for cmd in sends:
        send(dev.name, *cmd)
    time.sleep(0.45)  # the server reads its inbox every 200 ms
    got = []
    for _ in range(max_polls):
        out = dev.poll()
        if out.response.cmd != td.CMD_NONE or cmd_none_expected(expect):
            got.append(out)
            break
        time.sleep(0.2)
    check(got, "%s: %s never arrived" % (dev.name, sends))
    while len(got) < len(expect):
        got.append(dev.poll())
    for out, (name, value) in zip(got, expect):
        r = out.response
        check(r.name == name and r.value == value,
              "%s: expected %s %r, got %s %r" % (dev.name, name, value,
                                                 r.name, r.value))
    for _ in range(2):  # each exactly once
        r = dev.poll().response
        check(r.cmd == td.CMD_NONE,
              "%s: %s delivered again" % (dev.name, r.name))
    return got


def cmd_none_expected(expect):
    return expect[0][0] == "none"


def rounds(devs):
    for _ in range(3):
        for d in devs:
            out = d.poll()
            r = out.response
            check(r.cmd == td.CMD_NONE and 1 <= r.sent <= out.tries,
                  "%s: idle round: %s Sent=%d after %d tries" %
                  (d.name, r.name, r.sent, out.tries))
            check(r.rotate == (d.name == "py-rot"),
                  "%s: ROTATE flag %d" % (d.name, r.rotate))
            d.expect_uid_at_server()
    print("ok: 3 idle rounds, every identity new and the one the server "
          "expects; K2 on the --rotate device only")


def commands(plain, rot, ivl):
    url = "https://ota.example/fw-2.bin"
    big_url = "https://" + "u" * 504
    deliver(plain, [("update", url)], [("update", url)])
    deliver(plain, [("ota-https", big_url)], [("ota-https", big_url)])
    deliver(plain, [("keygen",)], [("keygen", None)])
    deliver(plain, [("app", "hello-from-gts")], [("app", b"hello-from-gts")])
    deliver(plain, [("app", "p" * 1024)], [("app", b"p" * 1024)])
    # in queue order, each once, a queued `none` among them
    deliver(plain, [("app", "first"), ("none",), ("app", "third")],
            [("app", b"first"), ("none", None), ("app", b"third")])
    print("ok: update, ota-https (512-byte URL), keygen, app (1024 bytes), "
          "queue order with none")

    deliver(rot, [("app", "rotating")], [("app", b"rotating")])
    deliver(rot, [("keygen",)], [("keygen", None)])
    print("ok: commands on the rotating device")

    check(ivl.dev.state.interval == 30, "py-ivl: provisioned interval")
    deliver(ivl, [("poll-faster", "10")], [("poll-faster", 10)])
    check(ivl.dev.state.interval == 10, "py-ivl: interval after poll-faster")
    deliver(ivl, [("poll-slower", "120")], [("poll-slower", 120)])
    check(ivl.dev.state.interval == 120, "py-ivl: after poll-slower")
    ivl.bounds = ivl.dev.bounds = (5, 3600)  # the device's own bounds
    deliver(ivl, [("poll-slower", "7200")], [("poll-slower", 7200)])
    check(ivl.dev.state.interval == 3600, "py-ivl: not clamped to 3600")
    deliver(ivl, [("poll-faster", "2")], [("poll-faster", 2)])
    check(ivl.dev.state.interval == 5, "py-ivl: not clamped to 5")
    check(td.DeviceState.load(ivl.path).interval == 5,
          "py-ivl: interval not stored")
    print("ok: poll-faster/slower with the interval, clamped, stored")


# --- 4. a lost response -----------------------------------------------------

def lost_response(dev):
    send(dev.name, "app", "once-despite-loss")
    time.sleep(0.5)
    seen = []
    out = dev.poll(ignore=1, timeout=0.8,
                   on_datagram=lambda t, r: seen.append((t, r)))
    check(out.tries == 2 and len(seen) == 2,
          "lost: tries %d, seen %d" % (out.tries, len(seen)))
    (t1, r1), (t2, r2) = seen
    check((t1, r1.sent, t2, r2.sent) == (1, 1, 2, 2),
          "lost: try/Sent %d/%d then %d/%d" % (t1, r1.sent, t2, r2.sent))
    check(r1.uid_rand == r2.uid_rand, "lost: UID_RAND changed")
    check((r1.name, r1.value) == (r2.name, r2.value) ==
          ("app", b"once-despite-loss"), "lost: not the same command")
    check(r1.nonce != r2.nonce, "lost: nonce reused")
    # the stale response no longer verifies for the device's new identity
    try:
        td.open_resp(dev.dev.state.key, dev.dev.state.uid, r1.raw, 4)
        raise Fail("lost: a response to UID1 verifies under UID2")
    except td.Malformed:
        pass
    check(dev.poll().response.cmd == td.CMD_NONE, "lost: command again")

    # two losses: Sent 1, 2, 3
    seen = []
    out = dev.poll(ignore=2, timeout=0.8,
                   on_datagram=lambda t, r: seen.append((t, r)))
    check([(t, r.sent) for t, r in seen] == [(1, 1), (2, 2), (3, 3)],
          "lost twice: %s" % [(t, r.sent) for t, r in seen])
    check(len({r.uid_rand for _, r in seen}) == 1, "lost twice: UID_RAND")

    # every answer lost: the exchange is given up, the identity kept ...
    before = open(dev.path).read()
    seen = []
    try:
        dev.poll(ignore=3, timeout=0.8, max_resend=2,
                 on_datagram=lambda t, r: seen.append((t, r)))
        raise Fail("given up: an exchange was accepted")
    except td.NoAnswer:
        pass
    check(open(dev.path).read() == before, "given up: state changed")
    check([(t, r.sent) for t, r in seen] == [(1, 1), (2, 2), (3, 3)],
          "given up: %s" % [(t, r.sent) for t, r in seen])
    # ... and the next exchange (try 1) continues it: the server's Sent is
    # 4 now, the response says 1 (min(Sent, try)), with the same UID_RAND
    again = []
    dev.poll(on_datagram=lambda t, r: again.append((t, r)))
    check([(t, r.sent) for t, r in again] == [(1, 1)] and
          again[0][1].uid_rand == seen[0][1].uid_rand,
          "after giving up: %s" % [(t, r.sent) for t, r in again])
    print("ok: lost responses: Sent 2, 3 with the same UID_RAND and command, "
          "fresh nonces; a given-up exchange keeps the identity")


# --- 5. timeouts ------------------------------------------------------------

def timeouts(dev):
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    before = open(dev.path).read()
    with hole, td.connect("127.0.0.1:%d" % hole.getsockname()[1]) as s:
        t0 = time.monotonic()
        try:
            dev.dev.exchange(s, timeout=0.15, max_resend=2)
            raise Fail("silent server: an exchange was accepted")
        except td.NoAnswer:
            pass
        took = time.monotonic() - t0
        polls = []
        while select.select([hole], [], [], 0)[0]:
            polls.append(hole.recv(2048))
    check(polls == [td.build_poll(dev.dev.state.uid, t) for t in (1, 2, 3)],
          "retransmissions: %s" % [p.hex() for p in polls])
    check(took >= 0.45, "gave up after %.2f s, not 3 x 0.15 s" % took)
    check(open(dev.path).read() == before, "silent server: state changed")

    # an identity the gts does not know: no answer at all
    line = "py-ghost 99 %s %s\n" % (os.urandom(16).hex(),
                                    os.urandom(16).hex())
    ghost = os.path.join(DIR, "py-ghost.state")
    fd = os.open(ghost, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, line.encode())
    os.close(fd)
    g = td.Device(td.DeviceState.load(ghost), ghost)
    with td.connect(server_addr()) as s:
        try:
            g.exchange(s, timeout=0.2, max_resend=1)
            raise Fail("an unknown identity was answered")
        except td.NoAnswer:
            pass
    print("ok: retransmission on timeout with try 1, 2, 3; unknown identity "
          "unanswered")


# --- 6. the C device on the same state files --------------------------------

def cross_check(devs, first_lines):
    for d in devs:
        line_before = open(d.path).read()
        p = c_poll(d.path)
        check(p.stdout.startswith("%s: none" % d.name),
              "C device on %s: %s" % (d.name, p.stdout))
        st = td.DeviceState.load(d.path)  # the C device's line
        check(st.uid != d.dev.state.uid, "C device: identity not moved")
        check((st.key != d.dev.state.key) == (d.name == "py-rot"),
              "C device: key rotation on %s" % d.name)
        check(open(d.path).read() != line_before, "C device: line unchanged")
        d.reload()
        d.uids.append(st.uid)
        d.keys.append(st.key)
        d.expect_uid_at_server()
        d.poll()  # Python again, on the line the C device wrote
    # a command through the C device, the interval it stores read by Python
    rot, plain = devs[0], devs[1]
    send(rot.name, "app", "to-the-c-device")
    send(plain.name, "poll-slower", "90")
    time.sleep(0.5)
    for d, want in ((rot, "app to-the-c-device"),
                    (plain, "poll-slower interval=90s")):
        p = c_poll(d.path)
        check(p.stdout.startswith("%s: %s" % (d.name, want)),
              "C device: %s" % p.stdout)
        d.reload()
        d.uids.append(d.dev.state.uid)
        d.keys.append(d.dev.state.key)
    check(plain.dev.state.interval == 90, "interval stored by the C device")
    for d in devs:
        check(d.poll().response.cmd == td.CMD_NONE, "%s: again" % d.name)
    # the provisioned identity is retired: neither device is answered
    old = os.path.join(DIR, "old.state")
    for d in devs:
        fd = os.open(old, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, first_lines[d.name].encode())
        os.close(fd)
        p = c_poll(old, timeout_ms=150, max_resend=1, ok=False)
        check(p.returncode != 0, "C device: retired UID1 of %s answered" %
              d.name)
        g = td.Device(td.DeviceState.load(old), None)
        with td.connect(server_addr()) as s:
            try:
                g.exchange(s, timeout=0.15, max_resend=1)
                raise Fail("retired UID1 of %s answered" % d.name)
            except td.NoAnswer:
                pass
    print("ok: the C device polls on the Python device's lines and back "
          "(rotated key, command, interval); retired identities unanswered")


# --- 7. copies of a pending poll from another address ----------------------

def copies(dev):
    """Anyone who saw a poll can send it again, from any address: the gts
    answers such retransmissions at most --retx-rate times per second per
    source address, after a burst of --retx-burst (16 and 32 by default),
    and the device's own retransmission from its address is not held back."""
    st = dev.dev.state
    sock = td.connect(server_addr())
    sock.send(td.build_poll(st.uid, 1))  # a new exchange; its answer "lost"
    r, _, _ = select.select([sock], [], [], 2.0)
    check(r, "copies: no answer to the first poll")
    td.open_resp(st.key, st.uid, sock.recv(2048), 0)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.2", 0))  # still loopback: all of 127/8 is
    copy = td.build_poll(st.uid, 2)
    t0 = time.monotonic()
    for _ in range(300):
        other.sendto(copy, ("127.0.0.1", PORT))
    answered = 0
    while True:
        r, _, _ = select.select([other], [], [], 0.5)
        if not r:
            break
        other.recv(2048)
        answered += 1
    elapsed = time.monotonic() - t0
    other.close()
    bound = 32 + 16 * elapsed + 1
    check(1 <= answered <= bound,
          "copies: %d of 300 answered in %.2f s (at most %.0f)" %
          (answered, elapsed, bound))
    # the device's own retransmission, from its own address: answered
    sock.send(td.build_poll(st.uid, 2))
    r, _, _ = select.select([sock], [], [], 2.0)
    check(r, "copies: the device's retransmission was not answered")
    resp = td.open_resp(st.key, st.uid, sock.recv(2048), 1)
    check(resp.sent == 2, "copies: Sent %d, want 2" % resp.sent)
    sock.close()
    log = open(os.path.join(DIR, "gts.log")).read()
    check("reason=retx_limited src=127.0.0.2:" in log,
          "copies: no retx_limited drop logged")
    dev.poll()  # the device completes the exchange as usual
    print("ok: %d of 300 copies from another address answered in %.2f s; "
          "the device's own retransmission answered" % (answered, elapsed))


def main():
    global B, DIR, DB
    if len(sys.argv) != 2:
        print("usage: test_pydev.py TRIGGER_GTS", file=sys.stderr)
        return 2
    B = os.path.abspath(sys.argv[1])
    t0 = time.monotonic()
    DIR = tempfile.mkdtemp(prefix="proxkey-pydev-")
    DB = os.path.join(DIR, "gts.db")

    def terminated(*_):
        print("FAIL: terminated")
        sys.exit(1)

    signal.signal(signal.SIGTERM, terminated)
    try:
        offline_checks()
        names = {"py-rot": ["--rotate"], "py-plain": [],
                 "py-ivl": ["--interval", "30"], "py-lost": [],
                 "py-copy": []}
        first = {}
        for name, extra in names.items():
            path = os.path.join(DIR, name + ".state")
            gts("device", "add", name, *extra, "--out", path)
            first[name] = open(path).read()
        check(first["py-ivl"].endswith(" 30\n"), "py-ivl line: no interval")
        start_server()
        devs = {n: PyDev(n) for n in names}
        rounds(list(devs.values()))
        commands(devs["py-plain"], devs["py-rot"], devs["py-ivl"])
        lost_response(devs["py-lost"])
        timeouts(devs["py-lost"])
        copies(devs["py-copy"])
        cross_check([devs["py-rot"], devs["py-plain"], devs["py-ivl"]],
                    first)
        stop_server()
        print("ok: %d checks in %.1f s" % (CHECKS, time.monotonic() - t0))
        return 0
    except (Fail, td.NoAnswer, td.Malformed, subprocess.SubprocessError,
            OSError, ValueError) as e:
        print("FAIL: %s: %s" % (type(e).__name__, e))
        log = os.path.join(DIR, "gts.log")
        if os.path.exists(log):
            print("".join(open(log).readlines()[-5:]), end="")
        return 1
    finally:
        stop_server()
        shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
