#!/usr/bin/env python3
"""An independent trigger-protocol device (Thales/gts method) for proxkey.

Written from docs/protocol.md ("Trigger protocol (Thales GTS method)" and
"Key derivations") and docs/operators.md section 5 only, without reading
proxkey's C sources, to check that the document suffices to interoperate.

Library use: DeviceState.load(path), Device(state, path).exchange(sock).
Command line:

    trigdev.py poll --state FILE --server HOST:PORT [--timeout-ms MS]
                    [--max-resend N]

prints "name: command [argument]" for the command received, as a device
would hand it to its application.
"""

import argparse
import dataclasses
import hashlib
import hmac
import os
import re
import select
import socket
import stat
import struct
import sys
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# --- Key derivations: 3GPP TS 33.220 Annex B.2, one-byte FC -----------------

FC_UID2 = 0xEC  # UID2 = first 16 of KDF(K1, 0xEC, UID1, UID_RAND)
FC_K2 = 0xED  # K2 = last 16 of KDF(K1, 0xED, UID_RAND, UID2)


def kdf(key, fc, *params):
    """HMAC-SHA-256(key, FC || P0 || L0 || ... || Pn || Ln), 32 bytes."""
    s = bytearray([fc])
    for p in params:
        if len(p) > 0xFFFF:
            raise ValueError("KDF parameter longer than 65535 bytes")
        s += p
        s += struct.pack(">H", len(p))
    return hmac.new(key, bytes(s), hashlib.sha256).digest()


def derive_uid2(k1, uid1, uid_rand):
    return kdf(k1, FC_UID2, uid1, uid_rand)[:16]


def derive_k2(k1, uid_rand, uid2):
    return kdf(k1, FC_K2, uid_rand, uid2)[-16:]


# --- Messages ---------------------------------------------------------------

VER = 0x01
T_POLL = 0x01
T_RESP = 0x02
POLL_LEN = 20
RESP_FIXED = 51  # ver, type, nonce(12), cmd, flags, arglen(2), Sent,
#                  UID_RAND(16), tag(16)
ARG_MAX = 1024
FLAG_ROTATE = 0x01

CMD_NONE = 0x00
CMD_UPDATE = 0x01
CMD_POLL_FASTER = 0x02
CMD_POLL_SLOWER = 0x03
CMD_KEYGEN = 0x04
CMD_OTA_HTTPS = 0x05
CMD_APP = 0x06

CMD_NAMES = {
    CMD_NONE: "none",
    CMD_UPDATE: "update",
    CMD_POLL_FASTER: "poll-faster",
    CMD_POLL_SLOWER: "poll-slower",
    CMD_KEYGEN: "keygen",
    CMD_OTA_HTTPS: "ota-https",
    CMD_APP: "app",
}

INTERVAL_MIN = 1
INTERVAL_MAX = 604800


class Malformed(Exception):
    """A datagram the device must drop (no state change)."""


def build_poll(uid, try_):
    if not 1 <= try_ <= 255:
        raise ValueError("try must be 1..255")
    if len(uid) != 16:
        raise ValueError("uid must be 16 bytes")
    return bytes([VER, T_POLL, try_, 0x00]) + uid


def seal_resp(key, uid1, nonce, cmd, flags, arg, sent, uid_rand):
    """What the gts sends: for the offline self-checks of this module."""
    pt = (bytes([cmd, flags]) + struct.pack(">H", len(arg)) + arg
          + bytes([sent]) + uid_rand)
    hdr = bytes([VER, T_RESP])
    return hdr + nonce + AESGCM(key).encrypt(nonce, pt, hdr + uid1)


def _url_ok(arg):
    return 1 <= len(arg) <= 512 and all(0x21 <= b <= 0x7E for b in arg)


def check_arg(cmd, arg):
    """Returns the decoded argument, or raises Malformed."""
    if cmd in (CMD_NONE, CMD_KEYGEN):
        if arg:
            raise Malformed("argument on a command that takes none")
        return None
    if cmd in (CMD_UPDATE, CMD_OTA_HTTPS):
        if not _url_ok(arg):
            raise Malformed("URL not 1..512 printable ASCII bytes")
        return arg.decode("ascii")
    if cmd in (CMD_POLL_FASTER, CMD_POLL_SLOWER):
        if len(arg) != 4:
            raise Malformed("interval is not a u32")
        (v,) = struct.unpack(">I", arg)
        if not INTERVAL_MIN <= v <= INTERVAL_MAX:
            raise Malformed("interval out of 1..604800")
        return v
    if cmd == CMD_APP:
        return bytes(arg)  # 0..1024, bounded by the datagram size
    raise Malformed("unknown command 0x%02x" % cmd)


@dataclasses.dataclass
class Response:
    cmd: int
    flags: int
    arg: bytes
    value: object  # decoded argument (str URL, int interval, bytes, None)
    sent: int
    uid_rand: bytes
    nonce: bytes
    raw: bytes  # the datagram as received
    # authentic, but a command this device does not know or an argument not
    # valid for it: the exchange completes, the command is not acted on
    unsupported: bool = False

    @property
    def rotate(self):
        return bool(self.flags & FLAG_ROTATE)

    @property
    def name(self):
        if self.unsupported:
            return "unsupported command 0x%02x" % self.cmd
        return CMD_NAMES[self.cmd]


def open_resp(key, uid1, dgram, resend_counter):
    """Parses and verifies a RESP to a poll made with uid1 under key.

    resend_counter is the device's Resend_Counter when the datagram arrives.
    Raises Malformed for anything the device must drop.
    """
    n = len(dgram)
    if n < RESP_FIXED or n > RESP_FIXED + ARG_MAX:
        raise Malformed("length %d" % n)
    if dgram[0] != VER or dgram[1] != T_RESP:
        raise Malformed("ver/type")
    arglen = n - RESP_FIXED
    nonce = bytes(dgram[2:14])
    try:
        pt = AESGCM(key).decrypt(nonce, bytes(dgram[14:]),
                                 bytes(dgram[0:2]) + uid1)
    except Exception as e:  # InvalidTag
        raise Malformed("tag") from e
    assert len(pt) == 21 + arglen
    cmd, flags, plen = pt[0], pt[1], struct.unpack(">H", pt[2:4])[0]
    if plen != arglen:
        raise Malformed("arglen %d in a datagram for %d" % (plen, arglen))
    if flags & ~FLAG_ROTATE:
        raise Malformed("unknown flags 0x%02x" % flags)
    arg = pt[4:4 + arglen]
    try:
        value, unsupported = check_arg(cmd, arg), False
    except Malformed:
        value, unsupported = None, True  # authentic: accepted, not acted on
    sent = pt[4 + arglen]
    uid_rand = pt[5 + arglen:21 + arglen]
    if not 1 <= sent <= resend_counter + 1:
        raise Malformed("Sent %d with Resend_Counter %d" %
                        (sent, resend_counter))
    return Response(cmd, flags, bytes(arg), value, sent, bytes(uid_rand),
                    nonce, bytes(dgram), unsupported)


# --- Device state: "name dev_no K1 UID [interval_s]" ------------------------

_LINE = re.compile(r"(\S+) ([0-9]+) ([0-9a-fA-F]{32}) ([0-9a-fA-F]{32})"
                   r"(?: ([0-9]+))?\n?")


@dataclasses.dataclass
class DeviceState:
    name: str
    dev_no: int
    key: bytes
    uid: bytes
    interval: object = None  # int seconds, or None: the device's own

    @classmethod
    def parse(cls, text):
        m = _LINE.fullmatch(text)
        if not m:
            raise ValueError("not a trigger state line")
        interval = int(m.group(5)) if m.group(5) is not None else None
        if interval is not None and not (INTERVAL_MIN <= interval
                                         <= INTERVAL_MAX):
            raise ValueError("interval out of 1..604800")
        return cls(m.group(1), int(m.group(2)), bytes.fromhex(m.group(3)),
                   bytes.fromhex(m.group(4)), interval)

    @classmethod
    def load(cls, path):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            if os.fstat(fd).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ValueError("%s: readable by others; it holds the "
                                 "device's key (chmod 600)" % path)
            with os.fdopen(fd, "r", encoding="ascii") as f:
                fd = -1
                return cls.parse(f.read())
        finally:
            if fd >= 0:
                os.close(fd)

    def line(self):
        s = "%s %d %s %s" % (self.name, self.dev_no, self.key.hex(),
                             self.uid.hex())
        if self.interval is not None:
            s += " %d" % self.interval
        return s + "\n"

    def store(self, path):
        """Durably: temporary file (0600), fsync, rename, fsync the dir."""
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                     | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, self.line().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --- The device-side exchange -----------------------------------------------


class NoAnswer(Exception):
    """Every try timed out: the exchange is given up, the identity kept."""


@dataclasses.dataclass
class Outcome:
    response: Response
    tries: int  # 1 + the Resend_Counter when the response was accepted
    old_uid: bytes
    new_uid: bytes
    rotated: bool
    interval: object  # the interval after the command


class Device:
    """IDLE -> WAIT -> SAVE -> IDLE, one exchange per call to exchange()."""

    def __init__(self, state, path=None, interval_bounds=(INTERVAL_MIN,
                                                          INTERVAL_MAX)):
        self.state = state
        self.path = path
        self.bounds = interval_bounds
        self.dropped = 0  # datagrams dropped while waiting

    def _clamp(self, v):
        lo, hi = self.bounds
        return max(lo, min(hi, v))

    def exchange(self, sock, timeout=0.5, max_resend=3, ignore=0,
                 on_datagram=None):
        """One exchange over a connected UDP socket.

        ignore: the first `ignore` valid responses are verified and then
        treated as lost (test hook: the exchange then times out and
        retransmits).  on_datagram(try_, Response) sees every response
        that verified.  Stores the next identity before returning it.
        """
        st = self.state
        rc = 0
        while True:
            sock.send(build_poll(st.uid, rc + 1))
            deadline = time.monotonic() + timeout
            resp = None
            while resp is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([sock], [], [], left)
                if not r:
                    break
                try:
                    dgram = sock.recv(2048)
                except ConnectionRefusedError:
                    continue  # ICMP from an earlier send: keep waiting
                try:
                    resp = open_resp(st.key, st.uid, dgram, rc)
                except Malformed:
                    self.dropped += 1
                    continue
                if on_datagram:
                    on_datagram(rc + 1, resp)
                if ignore > 0:
                    ignore -= 1
                    resp = None  # "lost": wait for the timeout
            if resp is not None:
                break
            if rc >= max_resend:
                raise NoAnswer("no answer after %d tries" % (rc + 1))
            rc += 1
        return self._accept(resp, rc + 1)

    def _accept(self, resp, tries):
        st = self.state
        uid2 = derive_uid2(st.key, st.uid, resp.uid_rand)
        key = derive_k2(st.key, resp.uid_rand, uid2) if resp.rotate else \
            st.key
        interval = st.interval
        if not resp.unsupported and resp.cmd in (CMD_POLL_FASTER,
                                                 CMD_POLL_SLOWER):
            interval = self._clamp(resp.value)
        new = DeviceState(st.name, st.dev_no, key, uid2, interval)
        if self.path is not None:
            new.store(self.path)  # SAVE: durable before UID2 is used
        old = st.uid
        self.state = new
        return Outcome(resp, tries, old, uid2, resp.rotate, interval)


def describe(name, resp):
    """One line, as the application would get it."""
    v = resp.value
    if v is None or v == b"":
        return "%s: %s" % (name, resp.name)
    if isinstance(v, bytes):
        try:
            txt = v.decode("ascii")
            if all(0x20 <= b <= 0x7E for b in v):
                return "%s: %s %s" % (name, resp.name, txt)
        except UnicodeDecodeError:
            pass
        return "%s: %s 0x%s" % (name, resp.name, v.hex())
    return "%s: %s %s" % (name, resp.name, v)


def connect(server):
    host, _, port = server.rpartition(":")
    host = host.strip("[]")
    info = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
    s = socket.socket(info[0], socket.SOCK_DGRAM)
    s.connect(info[4])
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("poll", help="one exchange with the gts")
    p.add_argument("--state", required=True)
    p.add_argument("--server", default="127.0.0.1:7700")
    p.add_argument("--timeout-ms", type=int, default=1000)
    p.add_argument("--max-resend", type=int, default=3)
    a = ap.parse_args(argv)
    try:
        dev = Device(DeviceState.load(a.state), a.state)
    except (OSError, ValueError) as e:
        print("trigdev: %s" % e, file=sys.stderr)
        return 1
    with connect(a.server) as s:
        try:
            out = dev.exchange(s, a.timeout_ms / 1000.0,
                               min(a.max_resend, 254))
        except NoAnswer as e:
            print("trigdev: %s: %s" % (dev.state.name, e), file=sys.stderr)
            return 1
    print(describe(dev.state.name, out.response))
    return 0


if __name__ == "__main__":
    sys.exit(main())
