#!/usr/bin/env python3
"""The independent Python device (regdev.py) against the real kms and nodes.

    test_regdev.py PROXKEY

On loopback only, in a scratch directory removed at the end, with every
daemon started here and stopped at the end:

  0. offline: the KDF and record-layer vectors of docs/protocol.md, the
     message sizes of its tables, record refusals (tamper, replay, window);
  1. a dev CA, `kms serve`, two `node serve` (ephemeral ports, read from the
     logs), devices and allowed pairs made with the `kms` CLI;
  2. registration of Python devices: AUTN verified, K_reg derived, the
     ACCEPT opened, its key set equal to what the C device of the pair got
     (`device keys --show-secrets`); a lost CHALLENGE and a lost ACCEPT
     (same bytes again), a lost REQUEST (retransmission); a wrong key gets
     a CHALLENGE whose AUTN fails and sends nothing; wrong-size and badly
     padded REQUESTs, a wrong RES and an unknown device get no answer; the
     C device registers with a Python stand-in node (bad AUTN refused, our
     ACCEPT opened and its key set stored);
  3. option 1 direct links with the C device (`device listen`/`send`) in
     both roles, a lost SMCOMPLETE; tampered, replayed, reflected,
     wrong-session, wrong-epoch and wrong-type records refused by the C
     listener; a hostile Python responder (bad SMC MAC, other caps, other
     KSI) makes the C initiator give up;
  4. option 2: LINK_REQ -> LINK_IND through the nodes (Python device on
     node-1, C device on node-2 and the reverse), a link with the indicated
     KSI; a pair not allowed gets LINK_REJ denied;
  5. master keys (the ACCEPT's block, MK_REFRESH/MK_UPDATE): a beacon, START/PROC/END1/END2 with
     `device mk run` in both roles (the C initiator with --wrap), the same
     individual key in the C device's table, records both ways with
     `mk run` / `mk send`; refused STARTs, END1 and records.
"""

import ctypes
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import regdev as rd  # noqa: E402

B = None  # the proxkey binary
DIR = None
PROCS = []  # (name, Popen, log path)
CHECKS = 0
KMS = None  # "127.0.0.1:port"
NODES = {}  # node id -> (udp addr tuple, tls port, Popen)
LOCAL = ("127.0.0.1", 0)


class Fail(Exception):
    pass


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise Fail(what)


def run(*args, ok=True, timeout=60, cwd=None):
    p = subprocess.run([B, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout,
                       cwd=cwd or DIR)
    if ok and p.returncode != 0:
        raise Fail("%s: exit %d: %s%s" % (" ".join(args[:3]), p.returncode,
                                          p.stdout, p.stderr))
    return p


KMSOPT = ("--db", "kms.db", "--kek", "kms.kek")


def kms(*args, ok=True):
    return run("kms", *args, *KMSOPT, ok=ok)


def _die_with_parent():
    # the daemons must not outlive the test, even if the test is killed
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(name, *args):
    log = os.path.join(DIR, name + ".log")
    with open(log, "w") as f:
        p = subprocess.Popen([B, *args], stdout=f, stderr=subprocess.STDOUT,
                             cwd=DIR, preexec_fn=_die_with_parent)
    PROCS.append((name, p, log))
    return p, log


def wait_log(p, log, pattern, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(log) as f:
            m = re.search(pattern, f.read())
        if m:
            return m
        if p.poll() is not None:
            raise Fail("%s exited %d: %s" % (log, p.returncode,
                                             open(log).read()[-2000:]))
        time.sleep(0.05)
    raise Fail("timeout waiting for %r in %s" % (pattern, log))


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def stop_all():
    for _, p, _ in reversed(PROCS):
        stop(p)


def make_ca():
    run("ca", "init", "ca")
    for n in ("kms", "node-1", "node-2"):
        run("ca", "issue", "ca", n)
    kms("init")


def start_network():
    global KMS
    p, log = spawn("kms", "kms", "serve", *KMSOPT, "--ca", "ca/ca.crt",
                   "--cert", "ca/kms.crt", "--key", "ca/kms.key", "--listen",
                   "127.0.0.1:0", "--port-file", "kms.port")
    port_file = os.path.join(DIR, "kms.port")
    for _ in range(200):
        if os.path.exists(port_file) and open(port_file).read().strip():
            break
        if p.poll() is not None:
            raise Fail("kms exited: %s" % open(log).read())
        time.sleep(0.05)
    KMS = "127.0.0.1:%s" % open(port_file).read().strip()
    # node-2 first: node-1 needs its TLS port (node-2 never dials node-1)
    start_node("node-2", "node-1=127.0.0.1:9")
    start_node("node-1", "node-2=127.0.0.1:%d" % NODES["node-2"][1])


def start_node(nid, peer):
    p, log = spawn(nid, "node", "serve", "--id", nid, "--listen-udp",
                   "127.0.0.1:0", "--listen-tls", "127.0.0.1:0", "--kms", KMS,
                   "--ca", "ca/ca.crt", "--cert", "ca/%s.crt" % nid, "--key",
                   "ca/%s.key" % nid, "--peer", peer, "--stats-ms", "0",
                   "--reg-burst", "64", "--reg-rate", "64")
    wait_log(p, log, "node_kms_connected")
    m = wait_log(p, log, r"event=node_listening.* udp_port=([0-9]+)")
    udp = int(m.group(1))
    m = wait_log(p, log, r"event=node_listening.* tls_port=([0-9]+)")
    NODES[nid] = (("127.0.0.1", udp), int(m.group(1)), p, log)


def node_addr(nid):
    return NODES[nid][0]


def add_device(name, *extra):
    """kms device add; returns K (the kms prints the generated key once)."""
    out = kms("device", "add", name, *extra).stdout
    m = re.search(r" key ([0-9a-f]{32}|[0-9a-f]{64})$", out, re.M)
    check(m is not None, "device add %s: %s" % (name, out))
    return bytes.fromhex(m.group(1))


# --- the C device ------------------------------------------------------------

def cdev_init(name, k, nid):
    d = os.path.join(DIR, "c-" + name)
    run("device", "init", "--dir", d, "--id", name, "--key", k.hex(),
        "--node", "%s:%d" % node_addr(nid), "--node-id", nid)
    return d


def cdev_keys(d):
    """{(ksi, peer): key} from `device keys --show-secrets`."""
    out = run("device", "keys", "--dir", d, "--show-secrets").stdout
    keys = {}
    for m in re.finditer(r"^ksi=0x([0-9a-f]{8}) peer=(\S+) mode=(\S+) .*"
                         r"key=([0-9a-f]{64})", out, re.M):
        keys[(int(m.group(1), 16), m.group(2))] = bytes.fromhex(m.group(4))
    return keys, out


def c_listen(d, count, timeout, node=False):
    args = ["device", "listen", "--dir", d, "--listen", "127.0.0.1:0",
            "--count", str(count), "--timeout", str(timeout)]
    if node:
        args.append("--node")
    p, log = spawn("listen-%d" % len(PROCS), *args)
    m = wait_log(p, log, r"listening on 127\.0\.0\.1:([0-9]+)")
    return p, log, ("127.0.0.1", int(m.group(1)))


def c_send(d, peer, msg, to, new=True, ok=True, timeout=30):
    args = ["device", "send", peer, msg, "--dir", d, "--to",
            "%s:%d" % to]
    if new:
        args.append("--new")
    return run(*args, ok=ok, timeout=timeout)


def listener_lines(log):
    return re.findall(r"^from=(\S+) text=(.*)$", open(log).read(), re.M)


def answers(dev, dg, to, first=5.0, more=0.3):
    """What arrives for dg: waits up to `first` for an answer, then `more`
    for others (a loaded machine may be slow to answer, never too fast)."""
    dev.drain()
    dev.sendto(dg, to)
    got = dev.wait(lambda d, src: (d, src), first)
    return ([got] if got else []) + dev.drain(more)


def no_answer(dev, dg, to, wait=0.5):
    dev.drain()
    dev.sendto(dg, to)
    return not dev.drain(wait)


# --- 0. offline --------------------------------------------------------------

def offline_checks():
    # docs/protocol.md "The KDF", worked example
    check(rd.kdf(bytes(range(32)), 0x7F, bytes(range(0xA0, 0xB0)),
                 bytes(range(0xB0, 0xC0))).hex() ==
          "06d73aa996ea4b686f5f74b87960eb3ffc202350d0d18614cef02268539d4133",
          "KDF worked example")
    # "Record layer", known-answer vectors
    key, salt = bytes(range(16)), bytes.fromhex("a0a1a2a3")
    vec = [
        (0x17, 1, b"", "1712340700000000000000011c93aad025109f15174d9217"
         "98f70be0"),
        (0x17, 2, b"proxkey record layer", "171234070000000000000002d1540905"
         "da23d2e77fc5d859ef66ac6524fa345f4f38cbc061b85babdeaa4f3ab8551b72"),
        (0x00, 2**64 - 2, b"last counter", "00123407fffffffffffffffe8dfb65d9"
         "0acceb10c28af048ed3a6c249c7d91ca2dd5540a9e7d1bfb"),
    ]
    tx = rd.RecordTx(key, salt, 0x1234, epoch=7)
    rx = rd.RecordRx(key, salt, 0x1234, epoch=7)
    for t, ctr, pt, want in vec:
        rec = tx.seal(t, pt, counter=ctr)
        check(rec.hex() == want, "record vector counter %d" % ctr)
        check(rx.open(rec) == (t, ctr, pt), "record vector opens")

    def refused(r, rec, what):
        try:
            r.open(rec)
        except rd.Drop:
            check(True, what)
            return
        raise Fail("accepted: " + what)

    refused(rx, tx.seal(0x17, b"", counter=1), "replay of counter 1")
    refused(rx, tx.seal(0x17, b"", counter=2**64 - 1), "counter 2^64-1")
    refused(rx, tx.seal(0x17, b"", counter=0), "counter 0")
    rx2 = rd.RecordRx(key, salt, 0x1234, epoch=7)
    rec = tx.seal(0x17, b"abc", counter=5000)
    for i in range(len(rec)):
        bad = bytearray(rec)
        bad[i] ^= 0x80
        refused(rx2, bytes(bad), "record bit flipped in byte %d" % i)
    rx2.open(rec)
    refused(rx2, tx.seal(0x17, b"", counter=5000 - 960), "below the window")
    rx2.open(tx.seal(0x17, b"", counter=5000 - 959))
    refused(rx2, tx.seal(0x17, b"", counter=5000 - 959), "window replay")
    # message sizes of "2. Registration messages" and "5. Direct link"
    n = os.urandom(16)
    check(len(rd.build_request(n, "a")) == 83 ==
          len(rd.build_request(n, "x" * 64)), "REQUEST 83")
    check(len(rd.build_response(n, "a", n)) == 36 and
          len(rd.build_response(n, "x" * 64, n)) == 99, "RESPONSE 36..99")
    check(len(rd.build_dcr(0, 1, 0, n, "a", "b")) == 42 and
          rd.build_dcr(0, 1, 0, n, "a", "b")[28:] == bytes(14) and
          len(rd.build_dcr(0, 1, 0, n, "x" * 8, "y" * 8)) == 42 and
          len(rd.build_dcr(0, 1, 0, n, "x" * 8, "y" * 9)) == 43 and
          len(rd.build_dcr(0, 1, 0, n, "x" * 64, "y" * 64)) == 154,
          "DCR 42..154 (zero padding up to the SMC's 42)")
    check(len(rd.build_smc(n, b"", 0, 1, 1, 0, n)) == 42, "SMC 42")
    check(len(rd.build_smcomplete(n, b"", b"", 0)) == 20, "SMCOMPLETE 20")
    print("ok: offline (KDF and record vectors, refusals, sizes: %d checks)"
          % CHECKS)


# --- 2. registration ---------------------------------------------------------

def mk_block_bytes(acc):
    """The master-key block of an Accept, encoded again."""
    b = bytes([len(acc.master)]) + struct.pack(">I", acc.domain_id)
    for m in acc.master:
        b += struct.pack(">IQQ", m.mk_id, m.not_before, m.expiry) + m.key
    return b


def registration(keys):
    node = node_addr("node-1")
    a = rd.Device("py-a", keys["py-a"])
    reg = a.register(node, "node-1", rto=2.0)  # a first registration:
    # two kms group commits before the ACCEPT; a generous first timeout
    acc = reg.accept
    check(re.fullmatch(r"[0-9a-f]{16}@node-1", acc.temp_id) is not None,
          "temp id %r" % acc.temp_id)
    check(acc.mode == rd.MODE_PAIRS, "mode %d" % acc.mode)
    check(sorted(e.peer for e in acc.keys) == ["c-b", "c-c"],
          "py-a peers: %s" % [e.peer for e in acc.keys])
    check(reg.sends == {rd.T_REQUEST: 1, rd.T_RESPONSE: 1},
          "sends on a clean run %s" % reg.sends)
    print("ok: py-a registered with node-1: temp_id=%s sid=0x%04x keys=%d"
          % (acc.temp_id, reg.sid, len(acc.keys)))

    # the C devices of the pairs: the same K_D under the same KSI
    cb = cdev_init("c-b", keys["c-b"], "node-1")
    out = run("device", "register", "--dir", cb).stdout
    check("registered c-b with node-1" in out, "c-b register: %s" % out)
    ck, text = cdev_keys(cb)
    mine = {(e.ksi, e.peer): e.key for e in acc.keys}
    check(ck.get((a.pair_ksi("c-b"), "py-a")) == mine[(a.pair_ksi("c-b"),
                                                       "c-b")],
          "py-a/c-b root key differs between the devices: %s" % text)
    print("ok: c-b holds the same root key and KSI 0x%08x for the pair"
          % a.pair_ksi("c-b"))
    # the master-key block (py-a and c-b in domain d1: current and next)
    check(acc.domain_id == 1 and [m.mk_id for m in acc.master] == [1, 2],
          "master-key block: domain %s keys %s" % (acc.domain_id, acc.master))
    check(len(reg.accept_raw) == 28 + 16 + 1 + len(acc.temp_id) + 2 +
          sum(4 + 32 + 1 + len(e.peer) for e in acc.keys) + 109,
          "ACCEPT length %d" % len(reg.accept_raw))
    out = run("device", "mk", "show", "--dir", cb, "--show-secrets").stdout
    for m, state in zip(acc.master, ("current", "next")):
        line = ("master domain_id=1 mk_id=%d not_before_ms=%d expiry_ms=%d "
                "state=%s key=%s" % (m.mk_id, m.not_before, m.expiry, state,
                                     m.key.hex()))
        check(line in out, "c-b has not %r: %s" % (line, out))
    # MK_REFRESH over the channel: MK_UPDATE with the same block
    want = mk_block_bytes(acc)
    for held in (1, None):
        got = a.mk_refresh(held)
        check(got == want, "MK_UPDATE for held %s: %s" % (held, got and
                                                          got.hex()))
    check(no_answer(a, a.reg.tx.seal(rd.T_MK_REFRESH, bytes(4)), node),
          "MK_REFRESH with an explicit held MK ID 0 answered")
    check(no_answer(a, a.reg.tx.seal(rd.T_MK_REFRESH, b"\0\0\1"), node),
          "MK_REFRESH of 3 bytes answered")
    # a 128-bit device key, no peers, no domain: the shortest ACCEPT
    z = rd.Device("py-16", keys["py-16"])
    acc16 = z.register(node, "node-1").accept
    check(acc16.keys == [] and acc16.master is None and
          len(z.reg.accept_raw) == 28 + 16 + 1 + len(acc16.temp_id) + 2,
          "py-16 accept: %s" % acc16)
    z.close()
    print("ok: MK_REFRESH (held 1, none) answered by MK_UPDATE with that "
          "block; held 0 and a 3-byte plaintext unanswered")
    print("ok: master-key block (current and next) equal to c-b's; a 128-bit "
          "K with no peers gets a %d-byte ACCEPT" % len(z.reg.accept_raw))

    # lost CHALLENGE, lost ACCEPT: the retransmission gets the same bytes
    seen = []
    reg2 = a.register(node, "node-1", rto=0.5,
                      lose_rx={rd.T_CHALLENGE: 1, rd.T_ACCEPT: 1},
                      on_rx=seen.append)
    ch = [d for d in seen if d[0] == rd.T_CHALLENGE]
    ac = [d for d in seen if d[0] == rd.T_ACCEPT]
    # (a slow node may see one more retransmission: at least two each)
    check(len(ch) >= 2 and len(set(ch)) == 1,
          "lost CHALLENGE: %d challenges, %d different" %
          (len(ch), len(set(ch))))
    check(len(ac) >= 2 and len(set(ac)) == 1,
          "lost ACCEPT: %d accepts, %d different" % (len(ac), len(set(ac))))
    check(reg2.sends[rd.T_REQUEST] >= 2 and reg2.sends[rd.T_RESPONSE] >= 2,
          "sends after losses %s" % reg2.sends)
    check({(e.ksi, e.peer, e.key) for e in reg2.accept.keys} ==
          {(e.ksi, e.peer, e.key) for e in acc.keys},
          "a re-registration changed the key set")
    # lost REQUEST (uplink): retransmitted after the timeout
    t0 = time.monotonic()
    reg3 = a.register(node, "node-1", rto=0.2, lose_tx={rd.T_REQUEST: 2})
    check(reg3.sends[rd.T_REQUEST] >= 3 and time.monotonic() - t0 >= 0.6,
          "lost REQUESTs: %s" % reg3.sends)
    print("ok: lost CHALLENGE / ACCEPT: identical retransmissions (%d / %d "
          "bytes); lost REQUESTs resent with doubling timeout" %
          (len(ch[0]), len(ac[0])))

    # REQUEST and RESPONSE must come from one address: the half-open entry
    # is keyed by (source, device id); a RESPONSE from another port is
    # dropped, the same RESPONSE from the REQUEST's port is accepted
    nonce_d = os.urandom(16)
    a.sendto(rd.build_request(nonce_d, "py-a"), node)
    ch = a.wait(lambda dg, src: dg if src == node and dg[0] == rd.T_CHALLENGE
                else None, 3.0)
    check(ch is not None, "no CHALLENGE")
    _, rand, _ = rd.parse_challenge(ch)
    resp = rd.build_response(nonce_d, "py-a",
                             rd.derive_res(keys["py-a"], rand, nonce_d,
                                           "node-1"))
    elsewhere = rd.Device("py-a", keys["py-a"])
    check(no_answer(elsewhere, resp, node), "RESPONSE from another port "
          "answered")
    elsewhere.close()
    # a wrong RES gets nothing and changes nothing: the right one still works
    bad_res = resp[:-1] + bytes([resp[-1] ^ 0x01])
    check(no_answer(a, bad_res, node), "RESPONSE with a wrong RES answered")
    check(no_answer(a, resp[:-1], node), "RESPONSE one byte short answered")
    a.sendto(resp, node)
    acc_dg = a.wait(lambda dg, src: dg if src == node and dg[0] == rd.T_ACCEPT
                    else None, 3.0)
    check(acc_dg is not None, "no ACCEPT for the RESPONSE from the REQUEST's "
          "port")
    a.register(node, "node-1")  # the test's registration state again
    # DONE: the same REQUEST again draws nothing
    check(no_answer(a, rd.build_request(a.reg.accept.nonce_d, "py-a"), node),
          "a finished run's REQUEST answered")
    # a new nonce_d restarts the run: the old run's RESPONSE is dropped,
    # the new one's accepted
    runs = []
    for _ in range(2):
        nd = os.urandom(16)
        ch = answers(a, rd.build_request(nd, "py-a"), node)
        check(len(ch) == 1 and ch[0][0][0] == rd.T_CHALLENGE, "restart: %s"
              % ch)
        rand = rd.parse_challenge(ch[0][0])[1]
        runs.append(rd.build_response(nd, "py-a", rd.derive_res(
            keys["py-a"], rand, nd, "node-1")))
    check(no_answer(a, runs[0], node), "the replaced run's RESPONSE answered")
    got = answers(a, runs[1], node)
    check(len(got) == 1 and got[0][0][0] == rd.T_ACCEPT,
          "the new run's RESPONSE: %s" % got)
    a.register(node, "node-1")

    # wrong key: the CHALLENGE comes, its AUTN fails, nothing is sent
    bad = rd.Device("c-c", os.urandom(32))
    try:
        bad.register(node, "node-1", tries=2, rto=0.2)
        raise Fail("a wrong-key device registered")
    except rd.Refused:
        pass
    check([k for d, k, _ in bad.log if d == "tx"] == [rd.T_REQUEST] * 2,
          "wrong key: sent %s" % [k for d, k, _ in bad.log if d == "tx"])
    # right key, wrong node id: AUTN binds the node id
    try:
        rd.Device("c-c", keys["c-c"]).register(node, "node-2", tries=1,
                                               rto=0.3)
        raise Fail("registered under the wrong node id")
    except rd.Refused:
        pass
    bad.close()

    # no answer: wrong sizes, bad padding, wrong version, unknown device
    probe = rd.Device("py-probe", os.urandom(16))
    req = rd.build_request(os.urandom(16), "py-a")
    check(no_answer(probe, req[:82], node), "82-byte REQUEST answered")
    check(no_answer(probe, req + b"\0", node), "84-byte REQUEST answered")
    padded = bytearray(req)
    padded[-1] = 1
    check(no_answer(probe, bytes(padded), node), "non-zero padding answered")
    ver = bytearray(req)
    ver[1] = 2
    check(no_answer(probe, bytes(ver), node), "version 2 answered")
    ln = bytearray(req)
    ln[18] = 65
    check(no_answer(probe, bytes(ln), node), "id_len 65 answered")
    check(no_answer(probe, rd.build_request(os.urandom(16), "nobody"), node),
          "unknown device answered")
    check(not no_answer(probe, req, node), "the well-formed REQUEST "
          "(control) got no answer")
    probe.close()
    print("ok: RESPONSE only from the REQUEST's address, a wrong RES or a "
          "short RESPONSE unanswered (the right one accepted after); a "
          "finished run's REQUEST unanswered, a new nonce_d replaces a run; "
          "wrong key and wrong node id refused (AUTN, nothing sent); "
          "82/84-byte, badly padded, version 2, id_len 65 and "
          "unknown-device REQUESTs unanswered")
    return a, cb


# --- 2b. the C device against a Python node ----------------------------------

def c_register_with_python_node(keys):
    """A Python stand-in node (the kms's role too: it knows K) registers the
    C device: the C side checks AUTN, sends RES, opens our ACCEPT."""
    k = keys["c-e"]
    node = rd.Device("node-9", os.urandom(16))  # just the socket
    ce = os.path.join(DIR, "c-c-e")
    run("device", "init", "--dir", ce, "--id", "c-e", "--key", k.hex(),
        "--node", "%s:%d" % node.addr, "--node-id", "node-9")

    def request():
        got = node.wait(lambda dg, src: (dg, src) if dg[0] == rd.T_REQUEST
                        else None, 10)
        check(got is not None, "no REQUEST from the C device")
        nonce_d, dev_id = rd.parse_request(got[0])
        check(dev_id == "c-e", "REQUEST for %r" % dev_id)
        return got[0], got[1], nonce_d

    # a CHALLENGE whose AUTN is wrong: no RESPONSE, exit 1 saying so
    p = subprocess.Popen([B, "device", "register", "--dir", ce, "--tries",
                          "2", "--rto-ms", "300"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=DIR,
                         preexec_fn=_die_with_parent)
    req, src, nonce_d = request()
    rand = os.urandom(16)
    autn = rd.derive_autn(k, rand, nonce_d, "node-9")
    node.sendto(rd.build_challenge(nonce_d, rand, bytes(16)), src)
    node.sendto(rd.build_challenge(nonce_d, rand, autn[:15] +
                                   bytes([autn[15] ^ 1])), src)
    out, rc = finish(p)
    rest = [dg for dg, _ in node.drain(0.2)]
    check(rc == 1 and "failed authentication (AUTN)" in out,
          "C device after a bad AUTN: %d %s" % (rc, out))
    check(all(dg == req for dg in rest), "C device answered a bad AUTN: %s"
          % [dg[:2].hex() for dg in rest])

    # the full run: CHALLENGE, RESPONSE (RES checked), then an ACCEPT for
    # another nonce_d and one with counter 2 (both ignored), then the right one
    p = subprocess.Popen([B, "device", "register", "--dir", ce, "--rto-ms",
                          "300"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=DIR,
                         preexec_fn=_die_with_parent)
    req, src, nonce_d = request()
    # a valid CHALLENGE from another address than the node's: ignored
    imp = rd.Device("node-9", os.urandom(16))
    rand = os.urandom(16)
    imp.sendto(rd.build_challenge(nonce_d, rand, rd.derive_autn(
        k, rand, nonce_d, "node-9")), src)
    check(not imp.drain(0.5), "the C device answered another address")
    imp.close()
    rand = os.urandom(16)
    node.sendto(rd.build_challenge(nonce_d, rand, rd.derive_autn(
        k, rand, nonce_d, "node-9")), src)
    got = node.wait(lambda dg, s: dg if dg[0] == rd.T_RESPONSE else None, 5)
    check(got is not None, "no RESPONSE from the C device")
    nd, dev_id, res = rd.parse_response(got)
    check((nd, dev_id, res) == (nonce_d, "c-e",
                                rd.derive_res(k, rand, nonce_d, "node-9")),
          "RESPONSE fields")
    k_reg = rd.derive_kreg(k, rand, nonce_d, "node-9", "c-e")
    down = rd.record_keys(k_reg, rd.FC_REGMSG, rd.DIR_DOWN)
    kd = os.urandom(32)
    entries = [(0x1234, kd, "py-z"), (0x99, os.urandom(32), "py-y")]
    tx = rd.RecordTx(*down, 0x0042)
    wrong = rd.accept_pt(os.urandom(16), "t-1@node-9", rd.MODE_PAIRS, entries)
    node.sendto(tx.seal(rd.T_ACCEPT, wrong, counter=1), src)
    good = rd.accept_pt(nonce_d, "t-1@node-9", rd.MODE_PAIRS, entries)
    node.sendto(tx.seal(rd.T_ACCEPT, good, counter=2), src)
    # authentic ACCEPTs whose plaintext breaks a rule of the document
    tid = rd.block8(b"t-1@node-9")

    def ent(ksi, peer):
        return struct.pack(">I", ksi) + os.urandom(32) + rd.block8(peer)

    def mk(n, ids, nb=(1, 2), ex=(10, 20)):
        b = bytes([n]) + struct.pack(">I", 1)
        for i in range(len(ids)):
            b += struct.pack(">IQQ", ids[i], nb[i], ex[i]) + os.urandom(32)
        return b

    e1 = ent(1, b"py-z")
    bad = {
        "temp id with NUL": rd.block8(b"t\0x") + b"\1\1" + e1,
        "empty temp id": rd.block8(b"") + b"\1\1" + e1,
        "overlong UTF-8 temp id": rd.block8(b"t\xc0\xaf") + b"\1\1" + e1,
        "surrogate in the peer id": tid + b"\1\1" + ent(1, b"\xed\xa0\x80"),
        "mode 3": tid + b"\3\1" + e1,
        "33 keys": tid + b"\1\x21" + b"".join(
            ent(i, b"p%d" % i) for i in range(1, 34)),
        "empty peer in mode 1": tid + b"\1\1" + ent(1, b""),
        "a peer in mode 2": tid + b"\2\1" + ent(1, b"py-z"),
        "a KSI twice": tid + b"\1\2" + ent(7, b"a") + ent(7, b"b"),
        "count 2, one entry": tid + b"\1\2" + e1,
        "one byte after the key set": tid + b"\1\1" + e1 + b"\0",
        "master-key block n=0": tid + b"\1\1" + e1 + mk(0, []) + bytes(52),
        "master-key block, MK ID 0": tid + b"\1\1" + e1 + mk(1, [0]),
        "master-key block, not_before = expiry": tid + b"\1\1" + e1 +
        mk(1, [1], nb=(5,), ex=(5,)),
        "master-key block, same MK IDs": tid + b"\1\1" + e1 +
        mk(2, [3, 3]),
        "master-key block, next not after current": tid + b"\1\1" + e1 +
        mk(2, [3, 4], nb=(2, 2)),
        "master-key block n=2 with one key": tid + b"\1\1" + e1 +
        mk(2, [3]),
    }
    for what, pt in bad.items():
        node.sendto(tx.seal(rd.T_ACCEPT, nonce_d + pt, counter=1), src)
        time.sleep(0.05)
        if p.poll() is not None:
            raise Fail("the C device took an ACCEPT with %s: %s"
                       % (what, finish(p)[0]))
    time.sleep(0.2)
    if p.poll() is not None:
        raise Fail("the C device took a wrong ACCEPT: %s" % finish(p)[0])
    node.sendto(tx.seal(rd.T_ACCEPT, good, counter=1), src)
    out, rc = finish(p)
    check(rc == 0 and "registered c-e with node-9" in out and
          "temp_id=t-1@node-9 mode=pairs keys=2" in out,
          "C device with the Python node: %d %s" % (rc, out))
    ck, text = cdev_keys(ce)
    check(ck == {(0x1234, "py-z"): kd, (0x99, "py-y"): entries[1][1]},
          "C device's keys from our ACCEPT: %s" % text)
    node.close()
    print("ok: the C device registers with a Python node: a CHALLENGE from "
          "another address ignored, bad AUTN refused "
          "(nothing sent, exit 1), RES and K_reg as documented, ACCEPTs for "
          "another nonce_d, with counter 2 or breaking a layout rule (%d "
          "kinds) ignored, our key set stored" % len(bad))


def py_node_register(node, cdir, k, dev_id, node_id, plaintext):
    """Runs `device register` on cdir against the Python node socket `node`;
    plaintext(nonce_d) is the ACCEPT's. Returns (device address, downlink
    RecordTx after the ACCEPT, the register output)."""
    p = subprocess.Popen([B, "device", "register", "--dir", cdir, "--rto-ms",
                          "300"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=DIR,
                         preexec_fn=_die_with_parent)
    got = node.wait(lambda dg, src: (dg, src) if dg[0] == rd.T_REQUEST
                    else None, 10)
    check(got is not None, "no REQUEST from %s" % dev_id)
    src = got[1]
    nonce_d, _ = rd.parse_request(got[0])
    rand = os.urandom(16)
    node.sendto(rd.build_challenge(nonce_d, rand, rd.derive_autn(
        k, rand, nonce_d, node_id)), src)
    got = node.wait(lambda dg, s: dg if dg[0] == rd.T_RESPONSE else None, 5)
    check(got is not None, "no RESPONSE from %s" % dev_id)
    k_reg = rd.derive_kreg(k, rand, nonce_d, node_id, dev_id)
    tx = rd.RecordTx(*rd.record_keys(k_reg, rd.FC_REGMSG, rd.DIR_DOWN), 0x77)
    node.sendto(tx.seal(rd.T_ACCEPT, plaintext(nonce_d)), src)
    out, rc = finish(p)
    check(rc == 0, "register %s with the Python node: %s" % (dev_id, out))
    return src, tx, out


def c_pool_with_python_node():
    """The C device in pool mode, registered by the Python node with pool
    keys listed out of KSI order; the node's LINK_IND to `listen --node`;
    a Python initiator with the K_D the document says (pool key number
    KSI mod n in ascending KSI order)."""
    k = os.urandom(16)
    node = rd.Device("node-8", os.urandom(16))
    cf = os.path.join(DIR, "c-c-f")
    run("device", "init", "--dir", cf, "--id", "c-f", "--key", k.hex(),
        "--node", "%s:%d" % node.addr, "--node-id", "node-8")
    pool = {30: os.urandom(32), 10: os.urandom(32), 20: os.urandom(32)}
    entries = [(ksi, key, "") for ksi, key in pool.items()]  # 30, 10, 20
    src, tx, out = py_node_register(
        node, cf, k, "c-f", "node-8",
        lambda nd: rd.accept_pt(nd, "t-f@node-8", rd.MODE_POOL, entries))
    check("mode=pool keys=3" in out, "c-f register: %s" % out)
    lp, llog, laddr = c_listen(cf, 1, 20, node=True)
    ksi, param = 0x1003, os.urandom(16)  # 4099 mod 3 = 1: KSI 20's key
    ind = rd.block8(b"py-z") + bytes([rd.ROLE_RESPONDER]) + \
        struct.pack(">I", ksi) + param
    rec = tx.seal(rd.T_LINK_IND, ind)
    node.sendto(rec, src)
    wait_log(lp, llog, "indication from node: peer=py-z", 5)
    node.sendto(rec, src)  # a replayed LINK_IND: refused, changes nothing
    # a LINK_IND under the ACCEPT's counter (1), or tampered: not stored
    ind_q = rd.block8(b"py-q") + bytes([rd.ROLE_RESPONDER]) + \
        struct.pack(">I", 0x2000) + os.urandom(16)
    node.sendto(tx.seal(rd.T_LINK_IND, ind_q, counter=1), src)
    bad = bytearray(tx.seal(rd.T_LINK_IND, ind_q))
    bad[14] ^= 1
    node.sendto(bytes(bad), src)
    # authentic but malformed: role 2, a byte too many, an empty peer id
    for pt in (rd.block8(b"py-q") + b"\2" + ind_q[6:],
               ind_q + b"\0",
               rd.block8(b"") + ind_q[5:]):
        node.sendto(tx.seal(rd.T_LINK_IND, pt), src)
    z = rd.Device("py-z", os.urandom(16))
    # a DCR for this KSI from a device that is not the indicated peer
    other = rd.build_dcr(1, rd.CAPS, ksi, os.urandom(16), "py-w", "c-f")
    check(no_answer(z, other, laddr, 0.3), "DCR from py-w answered")
    # the KSI's pool key in the ACCEPT's order (10 at index 1) is wrong
    try:
        z.connect(laddr, "c-f", ksi=ksi, tries=1, rto=0.5,
                  k_d=rd.derive_pool_kd(pool[10], param, "py-z", "c-f"))
        raise Fail("c-f took the pool key in ACCEPT order")
    except rd.NoAnswer:
        pass  # the SMC's MAC did not verify under that key
    k_d = rd.derive_pool_kd(pool[20], param, "py-z", "c-f")
    link = z.connect(laddr, "c-f", ksi=ksi, k_d=k_d)
    link.send(b"pool key KSI mod n")
    rc = lp.wait(25)
    check(rc == 0 and listener_lines(llog) == [("py-z", "pool key KSI mod n")],
          "c-f listener (%d): %s" % (rc, open(llog).read()))
    _, text = cdev_keys(cf)
    check(re.findall(r"^indication .*$", text, re.M) ==
          [l for l in text.splitlines() if l.startswith(
              "indication ksi=0x%08x peer=py-z role=responder " % ksi)] and
          len(re.findall(r"^indication ", text, re.M)) == 1,
          "c-f indications: %s" % text)
    z.close()
    node.close()
    print("ok: the C device in pool mode with a Python node: pool keys "
          "listed 30, 10, 20; KSI 0x1003 selects KSI 20's key (ascending "
          "order, mod 3); LINK_IND stored (replayed, counter-1, tampered "
          "and malformed ones not), a link from the indicated peer only")


# --- 3. option 1 direct links ------------------------------------------------

def links_option1(a, cb, keys):
    # Python initiator, C responder
    lp, llog, laddr = c_listen(cb, 8, 20)
    link = a.connect(laddr, "c-b")
    check(link.sid >> 8 == link.dcr[2], "sid MSB")
    link.send(b"hello from python")
    link.send("ütf-8 and \\ and \x01".encode())
    # a lost SMCOMPLETE: the first DATA record establishes the link
    link2 = a.connect(laddr, "c-b", skip_complete=True)
    link2.send(b"no smcomplete")
    # tampered, replayed and wrong-session records: never printed
    rec = link.seal(b"tampered")
    bad = bytearray(rec)
    bad[-1] ^= 1
    a.sendto(bytes(bad), laddr)
    replay = link.send(b"once")
    time.sleep(0.2)
    a.sendto(replay, laddr)
    bad = bytearray(link.seal(b"other session"))
    bad[1] ^= 0xFF
    a.sendto(bytes(bad), laddr)
    a.sendto(link.dcr[:-1], laddr)  # truncated DCR: no SMC
    # sealed correctly but wrong: epoch 1, counter 0 and 2^64-1, type
    # 0x24, and a record in the responder's direction (reflection)
    ep1 = rd.RecordTx(*rd.record_keys(link.pek, rd.FC_LINKREC, 0), link.sid,
                      epoch=1)
    a.sendto(ep1.seal(rd.T_DATA, b"epoch 1"), laddr)
    i2r = rd.RecordTx(*rd.record_keys(link.pek, rd.FC_LINKREC, 0), link.sid)
    a.sendto(i2r.seal(rd.T_DATA, b"counter 0", counter=0), laddr)
    a.sendto(i2r.seal(rd.T_DATA, b"counter max", counter=2**64 - 1), laddr)
    a.sendto(link.tx.seal(0x24, b"type 0x24"), laddr)
    r2i = rd.RecordTx(*rd.record_keys(link.pek, rd.FC_LINKREC, 1), link.sid)
    a.sendto(r2i.seal(rd.T_DATA, b"reflected"), laddr)
    # an established link's DCR again: the listener gives it a fresh
    # responder (an SMC with another session id that nobody can complete);
    # the established link is untouched (its next record is printed)
    again = answers(a, link.dcr, laddr)
    check(len(again) == 1 and len(again[0][0]) == rd.SMC_LEN and
          again[0][0] != link.smc and
          struct.unpack(">H", again[0][0][2:4])[0] != link.sid,
          "replayed DCR: %s" % [dg.hex() for dg, _ in again])
    # a DCR retransmitted before the SMCOMPLETE: the same SMC again; a
    # tampered SMCOMPLETE does not establish, the right one does
    smcs = []
    link3 = a.connect(laddr, "c-b", skip_complete=True, on_smc=smcs.append)
    again = answers(a, link3.dcr, laddr)
    check([dg for dg, _ in again] == smcs, "DCR again: %d answers, same SMC "
          "%s" % (len(again), again and again[0][0] == smcs[0]))
    bad = bytearray(link3.cmpl)
    bad[5] ^= 0x10
    a.sendto(bytes(bad), laddr)
    time.sleep(0.3)
    est = "link established from=py-a sid=0x%04x" % link3.sid
    check(est not in open(llog).read(), "tampered SMCOMPLETE established")
    a.sendto(link3.cmpl, laddr)
    wait_log(lp, llog, est, 5)
    # malformed DCRs: a byte too many, version 2, a NUL in the responder
    # id, an id length past the end; unpadded (smaller than the SMC it
    # would draw), padding that is not zero: no SMC
    head = bytes([rd.T_DCR, rd.VER, 1, rd.CAPS]) + struct.pack(
        ">I", link.ksi) + os.urandom(16) + rd.block8(b"py-a")
    fields = head + rd.block8(b"c-b")
    good = rd.pad_dcr(fields)
    v2 = bytearray(good)
    v2[1] = 2
    for dg in (good + b"\0", bytes(v2),
               rd.pad_dcr(head + rd.block8(b"c-b\0")),
               rd.pad_dcr(head + b"\x30" + b"c-b"),
               fields, good[:-1] + b"\x01"):
        check(no_answer(a, dg, laddr, 0.2), "malformed DCR answered: %s"
              % dg.hex())
    # a DCR naming another responder: no SMC
    other = rd.build_dcr(1, rd.CAPS, link.ksi, os.urandom(16), "py-a", "c-x")
    check(no_answer(a, other, laddr, 0.3), "DCR for c-x answered by c-b")
    # a DCR for a KSI the responder has not: no SMC
    other = rd.build_dcr(1, rd.CAPS, link.ksi ^ 0x40000000, os.urandom(16),
                         "py-a", "c-b")
    check(no_answer(a, other, laddr, 0.3), "DCR with an unknown KSI answered")
    # caps: without the suite bit no SMC; unknown bits are echoed
    for caps in (0x00, 0x02):
        dcr = rd.build_dcr(7, caps, link.ksi, os.urandom(16), "py-a", "c-b")
        check(no_answer(a, dcr, laddr, 0.3), "DCR caps 0x%02x answered" % caps)
    link4 = a.connect(laddr, "c-b", caps=0x83)
    check(link4.smc[4:6] == bytes([rd.SUITE, 0x83]), "caps 0x83: alg/caps %s"
          % link4.smc[4:6].hex())
    # DATA: a 1428-byte record is delivered, a 1429-byte one is not
    a.sendto(link4.tx.seal(rd.T_DATA, b"y" * 1401), laddr)
    link4.send(b"z" * 1400)
    # the replay window's edge (docs/protocol.md "Receiver", step 4): after
    # counter 2000, 1041 (959 below) is taken once, 1040 (960 below) is not
    for ctr in (2000, 1040, 1041, 1041):
        a.sendto(link4.tx.seal(rd.T_DATA, b"ctr %d" % ctr, counter=ctr), laddr)
    # records of link3 must now be accepted as usual
    link3.send(b"after smcomplete")
    time.sleep(0.3)
    rc = lp.wait(25)
    lines = listener_lines(llog)
    check(rc == 0, "listener exit %d: %s" % (rc, open(llog).read()))
    check(lines == [("py-a", "hello from python"),
                    ("py-a", "\\xc3\\xbctf-8 and \\\\ and \\x01"),
                    ("py-a", "no smcomplete"), ("py-a", "once"),
                    ("py-a", "z" * 1400), ("py-a", "ctr 2000"),
                    ("py-a", "ctr 1041"), ("py-a", "after smcomplete")],
          "C listener printed %s" % lines)
    smc_seen = [d for d, k, _ in a.log if d == "rx" and k == rd.T_SMC]
    check(len(smc_seen) == 6, "SMCs received %d (truncated DCR answered?)"
          % len(smc_seen))
    print("ok: Python initiator -> C responder: records printed, lost "
          "SMCOMPLETE recovered by DATA; tampered, replayed, other-session, "
          "epoch-1, counter 0 and 2^64-1, type 0x24 and reflected records, "
          "a truncated DCR, malformed DCRs (long, version 2, NUL in an id, "
          "an id past the end), another responder, an unknown KSI, caps "
          "without the suite bit, a 1429-byte DATA, a counter 960 below "
          "the top and a tampered SMCOMPLETE refused (959 below taken "
          "once); a retransmitted DCR gets the same SMC, a replayed one a "
          "fresh SMC nobody can complete")

    # C initiator, Python responder: C sends, Python receives; then
    # Python sends back on the link the C device opened, to a C listener?
    # The C `send` exits after its record, so the data back goes through
    # the C device's stored link only in the initiator->responder direction;
    # the reverse direction is covered by the Python initiator above.
    p = spawn_send(cb, "py-a", "hello from c", a.addr)
    link = a.accept(timeout=15, expect_peer="c-b")
    got = link.recv(10)
    out, rc = finish(p)
    check(rc == 0 and "sent to=py-a" in out, "c send: %d %s" % (rc, out))
    check(got == b"hello from c", "Python responder got %r" % got)
    check(link.cmpl is not None, "SMCOMPLETE not received")
    m = re.search(r"sid=0x([0-9a-f]{4}) ksi=0x([0-9a-f]{8})", out)
    check(m and int(m.group(1), 16) == link.sid and
          int(m.group(2), 16) == link.ksi, "sid/ksi: %s" % out)
    # a hostile responder: a tampered SMC, or caps changed under a valid
    # MAC (bidding down): the C initiator sends neither SMCOMPLETE nor data
    def flip_mac(smc, pik, dcr):
        return smc[:-1] + bytes([smc[-1] ^ 1])

    def other_caps(smc, pik, dcr):
        sid, _, _, ksi = struct.unpack(">HBBI", smc[2:10])
        return rd.build_smc(pik, dcr.raw, sid, rd.SUITE, dcr.caps ^ 0x02, ksi,
                            smc[10:26])

    def other_ksi(smc, pik, dcr):
        sid, _, _, ksi = struct.unpack(">HBBI", smc[2:10])
        return rd.build_smc(pik, dcr.raw, sid, rd.SUITE, dcr.caps, ksi ^ 1,
                            smc[10:26])

    for hook in (flip_mac, other_caps, other_ksi):
        a.drain()
        sp = subprocess.Popen([B, "device", "send", "py-a", "never", "--dir",
                               cb, "--to", "%s:%d" % a.addr, "--new",
                               "--tries", "2", "--rto-ms", "200"],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=DIR,
                              preexec_fn=_die_with_parent)
        try:
            a.accept(timeout=2.0, expect_peer="c-b", smc_hook=hook)
            raise Fail("%s: the C initiator completed" % hook.__name__)
        except rd.NoAnswer:
            pass
        out, rc = finish(sp)
        late = [dg[0] for dg, _ in a.drain(0.2)]
        check(rc == 1 and rd.T_SMCOMPLETE not in late and
              rd.T_DATA not in late, "%s: send %d %s, then %s" %
              (hook.__name__, rc, out, late))
    # the stored link: a second send without a handshake
    p = spawn_send(cb, "py-a", "second on the stored link", a.addr, new=False)
    got2 = link.recv(10)
    out, rc = finish(p)
    check(got2 == b"second on the stored link" and "stored link" in out,
          "stored link: %r %s" % (got2, out))
    print("ok: C initiator -> Python responder: DCR answered, SMCOMPLETE "
          "verified, records opened (new and stored link); an SMC with a "
          "bad MAC, other caps or another KSI makes the C initiator give up")

    # the Python responder's own records reach the C device's link state:
    # the C listener is the responder side only, so data in the responder's
    # direction is checked against the Python initiator instead: a Python
    # responder and a Python initiator on the C-made root key.
    return link


# --- 4. option 2 -------------------------------------------------------------

def links_option2(keys):
    # py-p (node-1) -> c-q (node-2): LINK_REQ, NODE_LINK_IND, LINK_IND x 2
    p = rd.Device("py-p", keys["py-p"])
    reg = p.register(node_addr("node-1"), "node-1")
    check(reg.accept.mode == rd.MODE_POOL and len(reg.accept.keys) == 5 and
          all(e.peer == "" for e in reg.accept.keys),
          "pool accept: mode %d, %d keys" % (reg.accept.mode,
                                              len(reg.accept.keys)))
    cq = cdev_init("c-q", keys["c-q"], "node-2")
    run("device", "register", "--dir", cq)
    ck, text = cdev_keys(cq)
    check(sorted(k for (k, _) in ck) == sorted(e.ksi for e in reg.accept.keys)
          and all(ck[(e.ksi, "(pool)")] == e.key for e in reg.accept.keys),
          "c-q's pool keys differ: %s" % text)
    # a second registration (new K_reg, the node may keep the context id):
    # the channel's counters start again at 1 in both directions
    old_tx = reg.tx
    reg = p.register(node_addr("node-1"), "node-1")
    check(reg.tx.next == 1, "uplink counter")
    check(no_answer(p, old_tx.seal(rd.T_LINK_REQ, rd.block8(b"c-q")),
                    node_addr("node-1")),
          "a LINK_REQ under the previous registration's K_reg answered")
    lp, llog, laddr = c_listen(cq, 1, 20, node=True)
    ksi = p.wait_indication("c-q", rd.ROLE_INITIATOR, 5.0)
    check(p.node_records[:1] == [(rd.T_LINK_IND, 2)],
          "the first node record after the ACCEPT: %s" % p.node_records)
    check(ksi not in {e.ksi for e in reg.accept.keys},
          "the KSI names the allocation, not a pool key: 0x%08x" % ksi)
    link = p.connect(laddr, "c-q", ksi=ksi)
    link.send(b"option 2 from python")
    rc = lp.wait(25)
    check(rc == 0 and listener_lines(llog) == [("py-p",
                                                "option 2 from python")],
          "c-q listener (%d): %s" % (rc, open(llog).read()))
    _, text = cdev_keys(cq)
    check(re.search(r"ksi=0x%08x peer=py-p role=responder" % ksi, text),
          "c-q has no indication for KSI 0x%08x: %s" % (ksi, text))
    print("ok: option 2, Python initiator on node-1 -> C responder on "
          "node-2: LINK_IND KSI 0x%08x to both, K_D by FC 0xEB, record "
          "printed" % ksi)

    # c-s (node-1) -> py-u (node-2): the C device asks, Python responds
    u = rd.Device("py-u", keys["py-u"])
    u.register(node_addr("node-2"), "node-2")
    cs = cdev_init("c-s", keys["c-s"], "node-1")
    run("device", "register", "--dir", cs)
    sp = spawn_send(cs, "py-u", "option 2 from c", u.addr)
    link = u.accept(timeout=20, expect_peer="c-s")
    got = link.recv(10)
    out, rc = finish(sp)
    check(rc == 0 and got == b"option 2 from c",
          "c-s -> py-u: %r, send (%d) %s" % (got, rc, out))
    check(u.indications.get((link.ksi, "c-s"), (None,))[0] ==
          rd.ROLE_RESPONDER, "py-u: no responder LINK_IND for 0x%08x: %s"
          % (link.ksi, u.indications))
    print("ok: option 2, C initiator on node-1 -> Python responder on "
          "node-2: LINK_IND (responder) opened, DCR with its KSI answered, "
          "record opened")

    # a pair not allowed: LINK_REJ denied; the node channel replay window
    try:
        p.wait_indication("c-s", rd.ROLE_INITIATOR, 5.0, tries=1)
        raise Fail("py-p -> c-s (not allowed) indicated")
    except rd.Refused as e:
        check("reason 1" in str(e), "LINK_REJ: %s" % e)
    # a replayed LINK_REQ (same record) gets nothing; a fresh one does
    p.indications.clear()
    dg = p.link_request("c-q")
    ksi2 = p.wait_indication("c-q", rd.ROLE_INITIATOR, 5.0, tries=1)
    check(ksi2 == ksi, "the pair's KSI changed: 0x%08x 0x%08x" % (ksi, ksi2))
    p.indications.clear()
    p.drain(0.3)
    check(no_answer(p, dg, node_addr("node-1")), "replayed LINK_REQ answered")
    # a pool device of the pair never registered: LINK_REJ unknown (2)
    try:
        p.wait_indication("c-r", rd.ROLE_INITIATOR, 5.0, tries=1)
        raise Fail("py-p -> c-r (not registered) indicated")
    except rd.Refused as e:
        check("reason 2" in str(e), "LINK_REJ for c-r: %s" % e)
    # a LINK_REQ with a byte after the peer id, or one naming itself
    dg = p.reg.tx.seal(rd.T_LINK_REQ, rd.block8(b"c-q") + b"\0")
    check(no_answer(p, dg, node_addr("node-1")), "LINK_REQ + 1 byte answered")
    try:
        p.wait_indication("py-p", rd.ROLE_INITIATOR, 5.0, tries=1)
        raise Fail("a link to itself indicated")
    except rd.Refused as e:
        check("reason 1" in str(e), "LINK_REJ to itself: %s" % e)
    print("ok: LINK_REJ denied for a pair not allowed and for itself, unknown "
          "for a peer never registered; a LINK_REQ under the old K_reg or "
          "with a byte too many unanswered; the pair keeps its KSI; "
          "a replayed LINK_REQ unanswered")


# --- 5. master keys: client-to-client authentication -------------------------

def mk_run(d, *extra):
    p, log = spawn("mkrun-%d" % len(PROCS), "device", "mk", "run", "--dir", d,
                   "--listen", "127.0.0.1:0", "--duration", "40", *extra)
    m = wait_log(p, log, r"event=listening addr=127\.0\.0\.1:([0-9]+)")
    return p, log, ("127.0.0.1", int(m.group(1)))


def mk_messages(log):
    return re.findall(r"event=message from=(\S+) key_id=([0-9]+) text=(.*)$",
                      open(log).read(), re.M)


def master_keys(a, cb, keys):
    a.drain()
    c = rd.MkClient(a)
    p, log, to = mk_run(cb)
    # a beacon (badly padded: nothing; well-formed: c-b starts with us)
    b = bytearray(rd.mk_beacon(c.domain, c.mk.mk_id, "py-a"))
    b[-1] = 1
    check(no_answer(a, bytes(b), to, 0.5), "badly padded beacon answered")
    a.sendto(rd.mk_beacon(c.domain, c.mk.mk_id, "py-a"), to)
    kb = c.respond(timeout=5)
    check(kb.partner == "c-b", "beacon: START from %s" % kb.partner)
    wait_log(p, log, "event=key partner=py-a key_id=%d" % kb.key_id, 5)
    check(no_answer(a, rd.mk_beacon(c.domain, c.mk.mk_id, "py-a"), to, 0.5),
          "a beacon answered although c-b holds a fresh key with py-a")
    # wrong MK ID, or a START with a bad MAC: no PROC
    z = bytes(16)
    st = rd.mk_build(c.kauth, rd.MK_START, 0, c.domain, c.mk.mk_id + 1,
                     os.urandom(16), z, "py-a", "c-b")
    check(no_answer(a, st, to, 0.3), "START with another MK ID answered")
    st = bytearray(rd.mk_build(c.kauth, rd.MK_START, 0, c.domain,
                               c.mk.mk_id, os.urandom(16), z, "py-a", "c-b"))
    st[20] ^= 4
    check(no_answer(a, bytes(st), to, 0.3), "START with a bad MAC answered")
    # a tampered END1: no END2, no key
    nkeys = open(log).read().count("event=key ")
    check(c.authenticate(to, "c-b", tamper_end1=True, end2_timeout=0.5)
          is None,
          "END2 for a tampered END1")
    check(open(log).read().count("event=key ") == nkeys,
          "key from a tampered END1")
    # END1 offering an expiry past the MK's, or in the past: no END2
    for offer in (c.mk.expiry + 1, int(time.time() * 1000) - 1000):
        try:
            c.authenticate(to, "c-b", expiry_ms=offer, end2_timeout=0.5)
            raise Fail("END2 for an END1 with expiry %d" % offer)
        except rd.NoAnswer:
            pass
    # a START for another responder, and a START replayed: no PROC
    st = rd.mk_build(c.kauth, rd.MK_START, 0, c.domain, c.mk.mk_id,
                     os.urandom(16), z, "py-a", "c-x")
    check(no_answer(a, st, to, 0.3), "START for c-x answered by c-b")
    starts = [dg for d, t, dg in a.log if d == "tx" and dg[:2] == b"\1\2"]
    check(no_answer(a, starts[-1], to, 0.3), "replayed START answered")
    # Python initiator, C responder: the same IK at both ends
    k = c.authenticate(to, "c-b")
    shown = run("device", "mk", "show", "--dir", cb, "--show-secrets").stdout
    check(re.search(r"individual key_id=%d key=%s expiry_ms=%d partner=py-a "
                    r"mk_id=%d role=responder" % (k.key_id, k.ik.hex(),
                                                  k.expiry, c.mk.mk_id),
                    shown), "c-b's table: %s" % shown)
    rec = k.seal(b"mk hello from python")
    a.sendto(rec, to)
    wait_log(p, log, "text=mk hello from python", 5)
    a.sendto(rec, to)  # replayed: not printed again
    bad = bytearray(k.seal(b"mk tampered"))
    bad[-3] ^= 1
    a.sendto(bytes(bad), to)
    a.sendto(k.seal(b"mk second"), to)
    wait_log(p, log, "text=mk second", 5)
    check(mk_messages(log) == [("py-a", str(k.key_id),
                                "mk hello from python"),
                               ("py-a", str(k.key_id), "mk second")],
          "c-b printed %s" % mk_messages(log))
    # C -> Python under the same key (the responder's direction)
    out = run("device", "mk", "send", "py-a", "mk hello from c", "--dir", cb,
              "--to", "%s:%d" % a.addr).stdout
    got = c.recv(5)
    check(got is not None and got[0] is k and got[1] == b"mk hello from c",
          "Python got %r (%s)" % (got, out))
    print("ok: master keys: a beacon draws c-b's START (badly padded: "
          "nothing); Python initiator -> C responder: START/PROC/"
          "END1/END2, the same IK in c-b's table, records both ways; "
          "another MK ID, a bad MAC, another responder, a replayed START, "
          "a tampered END1, an expiry past the MK's or past, a replayed "
          "and a tampered record refused")

    # C initiator (with --wrap: the IK made by c-d, wrapped under K_wrap),
    # Python responder
    cd = cdev_init("c-d", keys["c-d"], "node-1")
    run("device", "register", "--dir", cd)
    flags = []
    p2, log2, to2 = mk_run(cd, "--peer", "py-a=%s:%d" % a.addr, "--wrap")
    k2 = c.respond(timeout=10, flags_seen=flags)
    check(flags == [rd.MK_FLAG_WRAP] and k2.partner == "c-d",
          "c-d START flags %s partner %s" % (flags, k2.partner))
    wait_log(p2, log2, "event=key partner=py-a key_id=%d" % k2.key_id, 5)
    shown = run("device", "mk", "show", "--dir", cd, "--show-secrets").stdout
    check(re.search(r"individual key_id=%d key=%s .*partner=py-a .*"
                    r"role=initiator" % (k2.key_id, k2.ik.hex()), shown),
          "c-d's table: %s" % shown)
    run("device", "mk", "send", "py-a", "wrapped key", "--dir", cd, "--to",
        "%s:%d" % a.addr)
    got = c.recv(5)
    check(got is not None and got[0] is k2 and got[1] == b"wrapped key",
          "Python got %r" % (got,))
    a.sendto(k2.seal(b"back to c-d"), to2)
    wait_log(p2, log2, "from=py-a key_id=%d text=back to c-d" % k2.key_id, 5)
    stop(p)
    stop(p2)
    print("ok: master keys, C initiator (--wrap) -> Python responder: the "
          "wrapped IK opened, records both ways")


def spawn_send(d, peer, msg, to, new=True):
    args = ["device", "send", peer, msg, "--dir", d, "--to", "%s:%d" % to]
    if new:
        args.append("--new")
    return subprocess.Popen([B, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=DIR,
                            preexec_fn=_die_with_parent)


def finish(p, timeout=20):
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out, p.returncode


def main():
    global B, DIR
    if len(sys.argv) != 2:
        print("usage: test_regdev.py PROXKEY", file=sys.stderr)
        return 2
    B = os.path.abspath(sys.argv[1])
    t0 = time.monotonic()
    DIR = tempfile.mkdtemp(prefix="proxkey-regdev-")

    def terminated(*_):
        print("FAIL: terminated")
        sys.exit(1)

    signal.signal(signal.SIGTERM, terminated)
    try:
        offline_checks()
        make_ca()
        keys = {}
        for name in ("py-a", "c-b", "c-c"):
            keys[name] = add_device(name)
        kms("allow", "py-a", "c-b")
        kms("allow", "py-a", "c-c")
        keys["py-16"] = os.urandom(16)
        kms("device", "add", "py-16", "--device-key", keys["py-16"].hex())
        keys["c-d"] = add_device("c-d")
        keys["c-e"] = os.urandom(32)  # known only to the Python node
        kms("domain", "add", "d1")
        kms("domain", "member", "add", "d1", "py-a", "c-b", "c-d")
        kms("master", "rotate", "d1")
        kms("master", "rotate", "d1", "--at", "+1h")
        kms("pool", "create", "p", "5")
        for name in ("py-p", "c-q", "c-s", "py-u", "c-r"):
            keys[name] = add_device(name, "--mode", "pool", "--pool", "p")
        kms("allow", "py-p", "c-q")
        kms("allow", "py-p", "c-r")
        kms("allow", "c-s", "py-u")
        start_network()
        a, cb = registration(keys)
        c_register_with_python_node(keys)
        c_pool_with_python_node()
        links_option1(a, cb, keys)
        links_option2(keys)
        master_keys(a, cb, keys)
        stop_all()
        print("ok: %d checks in %.1f s" % (CHECKS, time.monotonic() - t0))
        return 0
    except (Fail, rd.NoAnswer, rd.Refused, rd.Drop,
            subprocess.SubprocessError, OSError, ValueError) as e:
        print("FAIL: %s: %s" % (type(e).__name__, e))
        for name, _, log in PROCS:
            if os.path.exists(log):
                print("== %s" % name)
                print("".join(open(log).readlines()[-8:]), end="")
        return 1
    finally:
        stop_all()
        if os.environ.get("KEEP"):
            print("kept", DIR)
        else:
            shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
