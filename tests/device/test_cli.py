#!/usr/bin/env python3
"""`proxkey device` as real processes over loopback UDP.

usage: test_cli.py PROXKEY FAKE_NODE

Covers: init and its file modes (0700 / 0600), keys on a fresh directory,
bad arguments (exit 2, one line), registration against the stand-in node
(device_fake_node: the real node core and kms functions), an unreachable node
(exit 1, one line), option 1 listen/send with the node gone, a stored link
reused, a replayed and a tampered datagram ignored (through a UDP relay that
records what the sender sent), a restarted listener keeping its replay
window, and option 2 (LINK_REQ -> LINK_IND to both devices -> link).
Every wait is bounded.
"""
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

PK, NODE = sys.argv[1], sys.argv[2]
KA = "00112233445566778899aabbccddeeff"
KB = "ffeeddccbbaa99887766554433221100" * 2  # a 32-byte key
KC = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)
        print("FAIL", what, flush=True)


def run(*args, timeout=30):
    p = subprocess.run([PK, "device", *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_node(mode, *devs, extra=()):
    p = subprocess.Popen([NODE, "127.0.0.1:0", mode, *devs, "--max-s", "90", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("ready "), line
    return p, int(line.split()[1])


def start_listen(d, port, *extra):
    p = subprocess.Popen([PK, "device", "listen", "--dir", d, "--listen", f"127.0.0.1:{port}",
                          *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # ready when it says so on stderr
    line = p.stderr.readline()
    assert line.startswith("listening on"), line
    return p


class Relay:
    """UDP relay sender <-> listener that records the sender's datagrams."""

    def __init__(self, target_port):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.s.settimeout(0.1)
        self.port = self.s.getsockname()[1]
        self.target = ("127.0.0.1", target_port)
        self.client = None
        self.seen = []  # datagrams from the sender
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        end = time.time() + 60
        while not self.stop and time.time() < end:
            try:
                data, addr = self.s.recvfrom(65535)
            except socket.timeout:
                continue
            if addr == self.target:
                if self.client:
                    self.s.sendto(data, self.client)
            else:
                self.client = addr
                self.seen.append(data)
                self.s.sendto(data, self.target)

    def inject(self, data):
        self.s.sendto(data, self.target)

    def close(self):
        self.stop = True
        self.t.join(2)
        self.s.close()


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


with tempfile.TemporaryDirectory() as tmp:
    A, B, C = (os.path.join(tmp, n) for n in ("a", "b", "c"))

    # ---- init, modes, fresh keys, bad arguments ----
    rc, out, err = run("init", "--dir", A, "--id", "dev-a", "--key", KA)
    check(rc == 0 and "initialised" in out, f"init a: {rc} {err}")
    check(mode_of(A) == 0o700, f"dir mode {oct(mode_of(A))}")
    check(mode_of(os.path.join(A, "identity")) == 0o600, "identity mode")
    keyfile = os.path.join(tmp, "kb.key")
    with open(keyfile, "w") as f:
        f.write(f"key = {KB}\n")
    rc, out, err = run("init", "--dir", B, "--id", "dev-b", "--key-file", keyfile)
    check(rc == 0, f"init b from key file: {err}")
    rc, out, err = run("init", "--dir", A, "--id", "dev-a", "--key", KA)
    check(rc == 1 and err.count("\n") == 1 and "already" in err, f"init twice: {rc} {err}")
    rc, out, err = run("keys", "--dir", A)
    check(rc == 1 and err.count("\n") == 1 and "no registration yet" in err, f"fresh keys: {err}")
    # --force: the same ID keeps what the directory holds for its peers;
    # another ID drops it (links, individual keys, their receive windows)
    D = os.path.join(tmp, "d")
    rc, out, err = run("init", "--dir", D, "--id", "dev-d", "--key", KA)
    peer_files = ("mk-table", "mk-rx", "link-i-00aa", "link-r-00bb")
    for name in peer_files + ("trigger",):
        with open(os.path.join(D, name), "w") as f:
            f.write("x")
    rc, out, err = run("init", "--dir", D, "--id", "dev-d", "--key", KB, "--force")
    check(rc == 0 and all(os.path.exists(os.path.join(D, n)) for n in peer_files),
          f"init --force, same ID, keeps the peers' files: {rc} {err} {os.listdir(D)}")
    rc, out, err = run("init", "--dir", D, "--id", "dev-e", "--key", KB, "--force")
    left = sorted(os.listdir(D))
    check(rc == 0 and not any(os.path.exists(os.path.join(D, n)) for n in peer_files) and
          "trigger" in left and "identity" in left,
          f"init --force, another ID, drops the peers' files: {rc} {err} {left}")
    for args, what in [
        (("init", "--dir", C, "--id", "x", "--key", "00zz"), "bad key hex"),
        (("init", "--dir", C, "--id", "x", "--key", KA[:30]), "short key"),
        (("init", "--dir", C, "--key", KA), "no id"),
        (("keys",), "no dir"),
        (("keys", "--dir", A, "--frob"), "unknown option"),
        (("send", "dev-b", "--dir", A, "--to", "127.0.0.1:1"), "send one arg"),
        (("send", "dev-b", "x", "--dir", A, "--to", "nohost"), "send bad addr"),
        (("listen", "--dir", A), "listen no addr"),
        (("listen", "--dir", A, "--listen", "127.0.0.1:1", "--count", "0"), "count 0"),
        (("register", "--dir", A, "--tries", "99", "--node", "127.0.0.1:1"), "tries 99"),
        (("frobnicate",), "unknown command"),
    ]:
        rc, out, err = run(*args)
        check(rc == 2 and err.count("\n") == 1, f"{what}: exit {rc}, stderr {err!r}")
    check(not os.path.exists(C), "no directory made on a usage error")
    rc, out, err = run("keys", "--dir", os.path.join(tmp, "nowhere"))
    check(rc == 1 and err.count("\n") == 1, f"keys on a missing dir: {rc} {err!r}")
    os.chmod(A, 0o755)
    rc, out, err = run("keys", "--dir", A)
    check(rc == 1 and "permissions" in err, f"open dir refused: {err!r}")
    os.chmod(A, 0o700)

    # ---- unreachable node ----
    dead = free_port()
    rc, out, err = run("register", "--dir", A, "--node", f"127.0.0.1:{dead}", "--tries", "3",
                       "--rto-ms", "30")
    check(rc == 1 and err.strip().endswith(f"node 127.0.0.1:{dead} did not answer after 3 tries")
          and err.count("\n") == 1, f"unreachable node: {rc} {err!r}")

    # ---- registration (option 1) against the stand-in node ----
    node, nport = start_node("pairs", f"dev-a={KA}", f"dev-b={KB}", f"dev-c={KC}")
    NA = f"127.0.0.1:{nport}"
    rc, out, err = run("register", "--dir", A, "--node", NA)
    check(rc == 0 and "mode=pairs keys=2" in out, f"register a: {rc} {out} {err}")
    rc, out, err = run("register", "--dir", B, "--node", NA)
    check(rc == 0, f"register b: {err}")
    for name in ("identity", "node", "registration"):
        check(mode_of(os.path.join(A, name)) == 0o600, f"{name} mode")
    check(not [f for f in os.listdir(A) if f.endswith(".tmp")], "no temp files left")
    rc, out, err = run("keys", "--dir", A)
    lines = out.strip().split("\n")
    check(rc == 0 and len(lines) == 3 and "peer=dev-b" in out and "peer=dev-c" in out,
          f"keys table: {out}")
    check(all("ksi=0x" in l and "mode=pairs" in l and "expiry=" in l for l in lines[1:]),
          f"keys columns: {out}")
    check("*" * 20 in lines[1], "keys masked")
    rc, out2, err = run("keys", "--dir", A, "--show-secrets")
    check(rc == 0 and "*" * 20 not in out2, "--show-secrets reveals")
    # the wrong key: the device refuses the node's AUTN and says so
    W = os.path.join(tmp, "w")
    run("init", "--dir", W, "--id", "dev-c", "--key", KA)
    rc, out, err = run("register", "--dir", W, "--node", NA, "--tries", "2", "--rto-ms", "50")
    check(rc == 1 and "AUTN" in err, f"wrong key: {rc} {err!r}")
    node.terminate()
    node.wait(5)

    # ---- option 1 with no network: listen / send, reuse, replay, tamper ----
    lport = free_port()
    lis = start_listen(B, lport, "--timeout", "30")
    relay = Relay(lport)
    RA = f"127.0.0.1:{relay.port}"
    rc, out, err = run("send", "dev-b", "hello over pc5", "--dir", A, "--to", RA)
    check(rc == 0 and "(new link)" in out, f"send 1: {rc} {out} {err}")
    rc, out, err = run("send", "dev-b", "second", "--dir", A, "--to", RA)
    check(rc == 0 and "(stored link)" in out, f"send 2 reuses: {out} {err}")
    rc, out, err = run("send", "dev-x", "who", "--dir", A, "--to", RA)
    check(rc == 1 and "unknown peer 'dev-x'" in err and err.count("\n") == 1, f"unknown peer: {err!r}")
    time.sleep(0.3)
    data = [d for d in relay.seen if d[0] == 0x23]
    check(len(data) == 2, f"two DATA records seen by the relay ({len(data)})")
    if data:
        relay.inject(data[0])  # replay
        t = bytearray(data[-1])
        t[-1] ^= 1  # tampered tag
        relay.inject(bytes(t))
        t = bytearray(data[-1])
        t[14] ^= 0x80  # tampered ciphertext
        relay.inject(bytes(t))
    time.sleep(0.3)
    rc, out, err = run("send", "dev-b", "third", "--dir", A, "--to", RA)
    check(rc == 0, "send 3")
    time.sleep(0.3)
    relay.close()
    lis.send_signal(2)
    out, err = lis.communicate(timeout=10)
    got = [l for l in out.split("\n") if l]
    check(got == ["from=dev-a text=hello over pc5", "from=dev-a text=second",
                  "from=dev-a text=third"], f"listener output {got!r}")
    check(os.path.exists(os.path.join(B, "link-r-" + b"dev-a".hex())), "responder link stored")

    # a restarted listener keeps the link and its replay window
    lis = start_listen(B, lport, "--count", "1", "--timeout", "10")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if data:
        s.sendto(data[0], ("127.0.0.1", lport))  # an old record: refused
    time.sleep(0.2)
    rc, out, err = run("send", "dev-b", "after restart", "--dir", A, "--to", f"127.0.0.1:{lport}",
                       "--new")
    check(rc == 0 and "(new link)" in out, f"send --new: {err}")
    out, err = lis.communicate(timeout=15)
    check(lis.returncode == 0 and out.strip() == "from=dev-a text=after restart",
          f"restarted listener: {lis.returncode} {out!r} {err!r}")
    # and the stored link to the restarted listener still works too
    lis = start_listen(B, lport, "--count", "1", "--timeout", "10")
    rc, out, err = run("send", "dev-b", "stored again", "--dir", A, "--to", f"127.0.0.1:{lport}")
    check(rc == 0 and "(stored link)" in out, f"stored link after restart: {out}")
    out, err = lis.communicate(timeout=15)
    check(out.strip() == "from=dev-a text=stored again", f"stored link delivered: {out!r}")
    s.close()

    # a listener that does not answer: the sender gives up with one line
    rc, out, err = run("send", "dev-b", "x", "--dir", A, "--to", f"127.0.0.1:{free_port()}",
                       "--new", "--tries", "2", "--rto-ms", "30")
    check(rc == 1 and "did not answer after 2 tries" in err and err.count("\n") == 1,
          f"silent peer: {err!r}")

    # listen --count with too few messages: timeout, exit 1
    rc, out, err = run("listen", "--dir", B, "--listen", f"127.0.0.1:{free_port()}",
                       "--count", "1", "--timeout", "1")
    check(rc == 1 and "timeout" in err, f"listen timeout: {rc} {err!r}")

    # ---- option 2: pool keys, the node indicates the KSI ----
    P, Q = os.path.join(tmp, "p"), os.path.join(tmp, "q")
    run("init", "--dir", P, "--id", "dev-p", "--key", KA)
    run("init", "--dir", Q, "--id", "dev-q", "--key", KC)
    node, nport = start_node("pool", f"dev-p={KA}", f"dev-q={KC}", f"dev-r={KB}",
                             extra=("--deny", "dev-p:dev-r"))
    NP = f"127.0.0.1:{nport}"
    rc, out, err = run("register", "--dir", P, "--node", NP)
    check(rc == 0 and "mode=pool keys=4" in out, f"register p: {out} {err}")
    rc, out, err = run("register", "--dir", Q, "--node", NP)
    check(rc == 0, f"register q: {err}")
    qport = free_port()
    lis = start_listen(Q, qport, "--node", "--count", "1", "--timeout", "20")
    rc, out, err = run("send", "dev-q", "pooled hello", "--dir", P, "--to", f"127.0.0.1:{qport}")
    check(rc == 0 and "(new link)" in out, f"option-2 send: {rc} {out} {err}")
    out, err = lis.communicate(timeout=25)
    check(lis.returncode == 0 and out.strip() == "from=dev-p text=pooled hello",
          f"option-2 listener: {lis.returncode} {out!r} {err!r}")
    rc, out, err = run("keys", "--dir", Q)
    check("indication" in out and "peer=dev-p" in out and "role=responder" in out,
          f"indication in keys: {out}")
    rc, out, err = run("send", "dev-r", "no", "--dir", P, "--to", f"127.0.0.1:{qport}")
    check(rc == 1 and "refused" in err and "not allowed" in err, f"denied link: {err!r}")
    node.terminate()
    node.wait(5)
    rc, out, err = run("send", "dev-q", "x", "--dir", P, "--to", f"127.0.0.1:{qport}", "--new",
                       "--tries", "2", "--rto-ms", "30")
    check(rc == 1 and f"node {NP} did not answer after 2 tries" in err, f"option-2 no node: {err!r}")

print(f"{passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
