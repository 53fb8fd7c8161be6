#!/usr/bin/env python3
"""Master keys end to end with real processes on 127.0.0.1 (docs/protocol.md "Master keys from the kms to the clients").

usage: test_mkflow.py PROXKEY

Checks: the master key reaches devices in the registration ACCEPT; `kms master
list` never shows a value; a rotation at the kms reaches one running client by
the node's push and another by `device mk refresh` over the registration
channel, neither registering again; the refresh falls back to registering
when the node is down or has lost the channel; `device keys` masks values; a client whose master key is
old fails authentication and stores no key; three clients derive identical
pairwise keys, exchange messages under them, and re-key when the master key
changes (FIG. 8); an individual key expires and is removed.
"""
import datetime
import os
import re
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkharness  # noqa: E402
from mkharness import check, free_port, read, run, start, wait_for  # noqa: E402


def individual(dev, reveal=False):
    args = ["device", "mk", "show", "--dir", dev] + (["--show-secrets"] if reveal else [])
    out = run(*args).stdout
    rows = []
    for line in out.splitlines():
        if line.startswith("individual "):
            rows.append(dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv))
    return rows


def key_with(dev, partner, mk):
    for r in individual(dev, reveal=True):
        if r["partner"] == partner and r["mk_id"] == str(mk):
            return r["key"]
    return None


W = tempfile.mkdtemp(prefix="pk-mkflow-")
mkharness.setup(sys.argv[1], W)
try:
    assert run("ca", "init", "ca").returncode == 0
    for cn in ("kms", "node-1"):
        assert run("ca", "issue", "ca", cn).returncode == 0
    assert run("kms", "init", "--log-level", "warn").returncode == 0
    check(run("kms", "domain", "add", "d1", "--log-level", "warn").returncode == 0,
          "kms domain add")
    check(run("kms", "domain", "add", "d1", "--log-level", "warn", ok=False).returncode == 1,
          "a domain name is unique")
    keys = {}
    for d in ("c1", "c2", "c3", "c4"):
        p = run("kms", "device", "add", d, "--log-level", "warn")
        keys[d] = re.search(r" key ([0-9a-f]{64})", p.stdout).group(1)
        run("device", "init", "--dir", d, "--id", d, "--key", keys[d], "--node", "127.0.0.1:1")
    check(run("kms", "domain", "member", "add", "d1", "c1", "c2", "c3",
              "--log-level", "warn").returncode == 0, "kms domain member add (c4 stays out)")
    check(run("kms", "domain", "member", "add", "d1", "c1", "--log-level", "warn",
              ok=False).returncode == 1, "a device is in at most one domain")
    check(run("kms", "domain", "member", "add", "d1", "nobody", "--log-level", "warn",
              ok=False).returncode == 1, "an unknown device cannot join")
    p = run("kms", "master", "rotate", "d1", "--lifetime", "1h", "--log-level", "warn")
    check(p.returncode == 0 and "mk_id=1 " in p.stdout, "kms master rotate: the first key")
    lst = run("kms", "master", "list", "d1", "--log-level", "warn").stdout
    nb = re.search(r"^mk_id=1 not_before=(\S+)Z ", lst, re.M).group(1)
    nb_ms = int(datetime.datetime.strptime(nb, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000)
    p = run("kms", "master", "rotate", "d1", "--at", str(nb_ms - 1000), "--log-level", "warn",
            ok=False)
    check(p.returncode == 1 and "effective at or after" in p.stderr,
          "a key effective before the latest one is refused")
    check("mk_id=1 " in lst and "state=valid" in lst and "key" not in lst.replace("master_keys", ""),
          "kms master list: IDs and validity, never a value")

    kp = free_port(socket.SOCK_STREAM)
    start("kms", "serve", "--listen", f"127.0.0.1:{kp}", "--ca", "ca/ca.crt", "--cert",
          "ca/kms.crt", "--key", "ca/kms.key", "--log-level", "warn")
    np_ = free_port()
    node = f"127.0.0.1:{np_}"
    node_args = ("node", "serve", "--id", "node-1", "--listen-udp", node, "--kms",
                 f"127.0.0.1:{kp}", "--ca", "ca/ca.crt", "--cert", "ca/node-1.crt", "--key",
                 "ca/node-1.key", "--stats-ms", "0", "--log-level", "debug")
    node_p = start(*node_args, err="node.log")

    def challenges():  # the node's CHALLENGEs sent (debug trace): one per registration run
        return len(re.findall(r"type=0x02 ", read("node.log")))

    def register(d):
        for _ in range(25):
            if run("device", "register", "--dir", d, "--node", node, ok=False).returncode == 0:
                return True
            time.sleep(0.2)
        return False

    check(all(register(d) for d in ("c1", "c2", "c3", "c4")), "four devices registered")
    out = run("device", "keys", "--dir", "c1").stdout
    m = re.search(r"^master domain_id=(\d+) mk_id=1 .*state=current key=(\S+)$", out, re.M)
    check(m is not None, "the ACCEPT delivered master key 1 to c1")
    check(m is not None and re.fullmatch(r"[0-9a-f]{4}\*{60}", m.group(2)) is not None,
          "device keys masks the master key")
    full = run("device", "keys", "--dir", "c1", "--show-secrets").stdout
    mf = re.search(r"^master .* key=([0-9a-f]{64})$", full, re.M)
    check(mf is not None and mf.group(1) not in out, "--show-secrets reveals it, default never")
    out4 = run("device", "keys", "--dir", "c4").stdout
    check("master " not in out4, "a device in no domain gets no master key")
    p = run("device", "mk", "run", "--dir", "c4", "--listen", "127.0.0.1:0", "--duration", "1",
            ok=False)
    check(p.returncode == 1 and "no master key" in p.stderr, "mk run refuses without a master key")

    # three clients, pairwise keys
    ports = {d: free_port() for d in ("c1", "c2", "c3")}

    def client(d, extra=(), life="60"):
        peers = ",".join(f"{o}=127.0.0.1:{ports[o]}" for o in ports if o != d)
        return start("device", "mk", "run", "--dir", d, "--listen", f"127.0.0.1:{ports[d]}",
                     "--peer", peers, "--lifetime", life, "--lead-time", "2", "--retry", "1",
                     "--auth-timeout", "1", "--grace", "1", *extra, out=f"run-{d}.txt")

    cl = {d: client(d) for d in ports}
    ok = all(wait_for(f"run-{d}.txt", r"event=key .*mk_id=1 ", 2) for d in ports)
    check(ok, "three clients: two keys each under master key 1")
    for a, b in (("c1", "c2"), ("c1", "c3"), ("c2", "c3")):
        ka, kb = key_with(a, b, 1), key_with(b, a, 1)
        check(ka is not None and ka == kb, f"{a} and {b} hold the identical individual key")
    masked = run("device", "keys", "--dir", "c1").stdout
    rows = [l for l in masked.splitlines() if l.startswith("individual ")]
    check(len(rows) == 2 and all(re.search(r" key=[0-9a-f]{4}\*{28} ", l) for l in rows),
          "device keys lists the individual keys, masked")
    p = run("device", "mk", "send", "c2", "hello there", "--dir", "c1", "--to",
            f"127.0.0.1:{ports['c2']}")
    check(p.returncode == 0 and wait_for("run-c2.txt", r"event=message from=c1 .*text=hello there"),
          "c1 -> c2 under the individual key")
    p2 = run("device", "mk", "send", "c2", "second", "--dir", "c1", "--to",
             f"127.0.0.1:{ports['c2']}")
    check(re.search(r"counter=2 ", p2.stdout) is not None, "the record counter persists per key")
    p = run("device", "mk", "send", "c4", "x", "--dir", "c1", "--to", "127.0.0.1:9", ok=False)
    check(p.returncode == 1, "no key with c4: send refused")

    # rotation at the kms; c2 refreshes over the channel, c1 gets it by push,
    # c3 (stopped) does not (old master key)
    cl["c3"].send_signal(signal.SIGTERM)
    cl["c3"].wait(10)
    check(wait_for("run-c1.txt", r"event=push_listening "), "mk run listens for pushes")
    p = run("kms", "master", "rotate", "d1", "--lifetime", "1h", "--log-level", "warn")
    check(p.returncode == 0 and "mk_id=2 " in p.stdout, "kms master rotate: key 2, effective now")
    ch0 = challenges()
    p = run("device", "mk", "refresh", "--dir", "c2", "--node", node)
    check(p.returncode == 0 and "refresh path=channel newest_mk_id=2 changed=1" in p.stdout,
          "c2: mk refresh over the channel (MK_REFRESH -> MK_UPDATE)")
    check(wait_for("run-c1.txt", r"event=mk_update newest_mk_id=2 changed=1"),
          "c1's running client got master key 2 by push (it asked nothing)")
    check(wait_for("run-c2.txt", r"event=master_changed old_mk_id=1 mk_id=2"),
          "c2's running client took the refreshed key from the state directory")
    check(challenges() == ch0 and ch0 >= 4, "no registration ran for either (no new CHALLENGE)")
    out = run("device", "mk", "show", "--dir", "c1").stdout
    check(re.search(r"^master .*mk_id=2 .*state=current", out, re.M) is not None,
          "the refresh brought master key 2")
    ok = wait_for("run-c1.txt", r"event=master_changed old_mk_id=1 mk_id=2") and \
        wait_for("run-c1.txt", r"event=key partner=c2 .*mk_id=2 ")
    check(ok and key_with("c1", "c2", 2) == key_with("c2", "c1", 2),
          "cascade: c1 and c2 re-keyed under master key 2 (FIG. 8)")
    # c3 restarts with master key 1 only: every authentication fails, no key stored
    open(os.path.join(W, "run-c3.txt"), "w").close()
    os.remove(os.path.join(W, "c3", "mk-table"))  # no keys: it starts to its peers at once
    before = [r for r in individual("c3") if r["mk_id"] == "2"]
    cl["c3"] = client("c3")
    check(wait_for("run-c3.txt", r"event=auth_start", 1, 5), "c3 (old master key) tries")
    time.sleep(3)
    check(wait_for("run-c1.txt", r"event=auth_dropped .*reason=denied", 1, 1),
          "c1 refuses c3's START made under the old master key")
    check([r for r in individual("c3") if r["mk_id"] == "2"] == before == [] and
          "event=key" not in read("run-c3.txt"),
          "c3 stored no key")
    # c3 refreshes: it joins in under key 2
    p = run("device", "mk", "refresh", "--dir", "c3", "--node", node)
    check(p.returncode == 0 and "refresh path=channel" in p.stdout, "c3: mk refresh (channel)")
    check(wait_for("run-c3.txt", r"event=key .*mk_id=2 ", 2, 20), "c3 re-keyed with c1 and c2")
    # expiry: a short-lived key disappears
    for p in cl.values():
        p.send_signal(signal.SIGTERM)
    for p in cl.values():
        p.wait(10)
    n_before = len(individual("c1"))
    a = start("device", "mk", "run", "--dir", "c1", "--listen", f"127.0.0.1:{ports['c1']}",
              "--lifetime", "60", "--duration", "4", out="exp.txt")
    a.wait(20)
    check(n_before >= 2, "c1 has keys before the expiry run")
    # keys made above under master key 1 expired their grace; the remaining ones live
    check(all(r["mk_id"] == "2" for r in individual("c1")),
          "keys of the replaced master key were removed once past their time")
    # fallback (FIG. 8 S14): the node is down, then back with no contexts
    node_p.send_signal(signal.SIGTERM)
    node_p.wait(10)
    p = run("kms", "master", "rotate", "d1", "--lifetime", "1h", "--log-level", "warn")
    check(p.returncode == 0 and "mk_id=3 " in p.stdout, "kms master rotate: key 3")
    p = run("device", "mk", "refresh", "--dir", "c1", "--node", node, "--tries", "2", "--rto",
            "200", ok=False, timeout=60)
    check(p.returncode != 0 and "registering again" in p.stderr and "path=channel" not in p.stdout,
          "node down: no MK_UPDATE, fell back to registering (which fails too)")
    node_p = start(*node_args, err="node2.log")
    got = None
    for _ in range(25):  # the restarted node knows no channel: the refresh falls back
        got = run("device", "mk", "refresh", "--dir", "c1", "--node", node, "--tries", "2",
                  "--rto", "200", ok=False, timeout=60)
        if got.returncode == 0:
            break
        time.sleep(0.2)
    check(got.returncode == 0 and "refresh path=register" in got.stdout and
          "registering again" in got.stderr, "restarted node: the refresh registered again (S14)")
    out = run("device", "mk", "show", "--dir", "c1").stdout
    check(re.search(r"^master .*mk_id=3 .*state=current", out, re.M) is not None,
          "the re-registration brought master key 3")
    audit = run("kms", "audit", "--log-level", "warn").stdout
    check(len(re.findall(r"what=master_key ", audit)) >= 6 and "what=mk_create" in audit,
          "the kms audit records every master-key issuance")
    # the record's fields named for what they hold: the domain and the MK ID
    check(re.search(r"what=master_key node=node-1 device=c1 domain=\S+ mk_id=3$", audit, re.M)
          is not None and
          re.search(r"what=mk_create node=admin device= domain=\S+ mk_id=3$", audit, re.M)
          is not None and
          re.search(r"what=domain_add node=admin device= domain=\S+ domain_id=\d+$", audit, re.M)
          is not None and " peer=" not in "".join(
              ln for ln in audit.splitlines(True)
              if "what=master_key" in ln or "what=domain_" in ln),
          "the audit names a master key's domain and MK ID")
finally:
    status = mkharness.finish()
sys.exit(status)
