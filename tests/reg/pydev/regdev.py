#!/usr/bin/env python3
"""An independent registration (PC3) and direct-link (PC5) device for proxkey.

Written from docs/protocol.md ("Key derivations", "Record layer",
"Registration (PC3) and the direct link (PC5)", "Master keys and
individual keys"), README.md and
docs/operators.md, device.md, node.md, kms.md only, without reading
proxkey's C sources, to check that the document suffices to interoperate.

Library use (one UDP socket per device: it registers from it, so the node's
LINK_IND reaches it there, and it opens and accepts direct links on it):

    d = Device("dev-a", K)                  # binds 127.0.0.1:0
    reg = d.register(("127.0.0.1", port), "node-1")
    link = d.connect(("127.0.0.1", peer_port), "dev-b")      # option 1
    link.send(b"hello")
    link = d.accept()                                         # responder
    data = link.recv()
    mk = MkClient(d)                       # the ACCEPT's master key
    key = mk.authenticate(("127.0.0.1", port), "dev-b")       # or respond()

Only Python 3 and the `cryptography` package (AES-GCM) are used; HMAC and
SHA-256 come from the standard library.
"""

import dataclasses
import hashlib
import hmac
import os
import select
import socket
import struct
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# --- Key derivations: 3GPP TS 33.220 Annex B.2, one-byte FC -----------------

FC_KDSESS = 0x7F  # K_D-sess = KDF(K_D, Nonce_1, Nonce_2)
FC_PEKPIK = 0x7E  # PEK/PIK = last 16 of KDF(K_D-sess, 0x00|0x01, alg)
FC_AUTN = 0xE0  # AUTN = first 16 of KDF(K, RAND, nonce_d, node id)
FC_RES = 0xE1  # RES = first 16 of KDF(K, RAND, nonce_d, node id)
FC_KREG = 0xE2  # K_reg = KDF(K, RAND, nonce_d, node id, device id)
FC_REGMSG = 0xE3  # device<->node record keys: KDF(K_reg, dir)
FC_LINKREC = 0xE6  # direct-link record keys: KDF(PEK, dir)
FC_POOL = 0xEB  # option-2 K_D = KDF(pool key, param, initiator, responder)


def kdf(key, fc, *params):
    """HMAC-SHA-256(key, FC || P0 || L0 || ... || Pn || Ln), 32 bytes."""
    s = bytearray([fc])
    for p in params:
        if len(p) > 0xFFFF:
            raise ValueError("KDF parameter longer than 65535 bytes")
        s += p
        s += struct.pack(">H", len(p))
    return hmac.new(key, bytes(s), hashlib.sha256).digest()


def first16(x):
    return x[:16]


def last16(x):
    return x[16:32]


def check_id(ident):
    """An id: 1..64 bytes of UTF-8, no NUL. Returns the bytes."""
    b = ident.encode("utf-8") if isinstance(ident, str) else bytes(ident)
    if not 1 <= len(b) <= 64 or 0 in b:
        raise ValueError("id must be 1..64 bytes of UTF-8 without NUL")
    b.decode("utf-8")  # strict: overlong forms and surrogates refused
    return b


def derive_autn(k, rand, nonce_d, node_id):
    return first16(kdf(k, FC_AUTN, rand, nonce_d, check_id(node_id)))


def derive_res(k, rand, nonce_d, node_id):
    return first16(kdf(k, FC_RES, rand, nonce_d, check_id(node_id)))


def derive_kreg(k, rand, nonce_d, node_id, dev_id):
    return kdf(k, FC_KREG, rand, nonce_d, check_id(node_id), check_id(dev_id))


def record_keys(base, fc, direction):
    """(AES-128 key = bytes 16..31, salt = bytes 0..3) of KDF(base, fc,
    dir)."""
    out = kdf(base, fc, bytes([direction]))
    return out[16:32], out[0:4]


def derive_pool_kd(pool_key, param, initiator, responder):
    return kdf(pool_key, FC_POOL, param, check_id(initiator),
               check_id(responder))


def derive_link(k_d, nonce1, nonce2, alg):
    """(K_D-sess, PEK, PIK) of a direct link."""
    kds = kdf(k_d, FC_KDSESS, nonce1, nonce2)
    pek = last16(kdf(kds, FC_PEKPIK, b"\x00", bytes([alg])))
    pik = last16(kdf(kds, FC_PEKPIK, b"\x01", bytes([alg])))
    return kds, pek, pik


# --- Record layer -----------------------------------------------------------

REC_HDR = 12
REC_TAG = 16
REC_MIN = REC_HDR + REC_TAG
REC_MAX = 65535
CTR_MAX = 2**64 - 2
WINDOW = 960  # accepted out of order iff top - WINDOW < counter <= top


class Drop(Exception):
    """A datagram the receiver must drop without any state change."""


class RecordTx:
    def __init__(self, key, salt, sid, epoch=0, counter=1):
        self.aead, self.salt = AESGCM(key), salt
        self.sid, self.epoch = sid, epoch
        self.next = counter

    def seal(self, rtype, pt, counter=None):
        if counter is None:
            counter = self.next
            if counter > CTR_MAX:
                raise ValueError("counter exhausted: rekey")
            self.next += 1
        hdr = struct.pack(">BHBQ", rtype, self.sid, self.epoch, counter)
        nonce = self.salt + struct.pack(">Q", counter)
        return hdr + self.aead.encrypt(nonce, bytes(pt), hdr)


def record_header(rec):
    """(type, session id, epoch, counter) of a record, or raises Drop."""
    if not REC_MIN <= len(rec) <= REC_MAX:
        raise Drop("record length %d" % len(rec))
    rtype, sid, epoch, ctr = struct.unpack(">BHBQ", rec[:REC_HDR])
    if ctr == 0 or ctr == 2**64 - 1:
        raise Drop("counter %d" % ctr)
    return rtype, sid, epoch, ctr


class RecordRx:
    """Receiver checks of docs/protocol.md "Record layer", "Receiver"."""

    def __init__(self, key, salt, sid, epoch=0):
        self.aead, self.salt = AESGCM(key), salt
        self.sid, self.epoch = sid, epoch
        self.top = 0
        self.seen = set()  # accepted counters within the window

    def open(self, rec, rtype=None):
        t, sid, epoch, ctr = record_header(rec)
        if sid != self.sid or epoch != self.epoch:
            raise Drop("no context for sid 0x%04x epoch %d" % (sid, epoch))
        if rtype is not None and t != rtype:
            raise Drop("record type 0x%02x" % t)
        if ctr <= self.top and (ctr + WINDOW <= self.top or ctr in self.seen):
            raise Drop("replay of counter %d" % ctr)
        nonce = self.salt + struct.pack(">Q", ctr)
        try:
            pt = self.aead.decrypt(nonce, bytes(rec[REC_HDR:]),
                                   bytes(rec[:REC_HDR]))
        except Exception as e:  # InvalidTag
            raise Drop("auth") from e
        self.seen.add(ctr)
        if ctr > self.top:
            self.top = ctr
            self.seen = {c for c in self.seen if c + WINDOW > self.top}
        return t, ctr, pt


# --- Registration messages --------------------------------------------------

VER = 1
T_REQUEST, T_CHALLENGE, T_RESPONSE, T_ACCEPT = 0x01, 0x02, 0x03, 0x04
T_LINK_REQ, T_LINK_IND, T_LINK_REJ = 0x10, 0x11, 0x12
T_MK_REFRESH, T_MK_UPDATE = 0x13, 0x14
REQUEST_LEN = 83
CHALLENGE_LEN = 50
DIR_UP, DIR_DOWN = 0x00, 0x01
MODE_PAIRS, MODE_POOL = 1, 2
KEYSET_MAX = 32
MKSET_LENS = (57, 109)


def block8(b):
    if len(b) > 255:
        raise ValueError("block8 longer than 255")
    return bytes([len(b)]) + b


class Reader:
    """Bounds-checked reader: any overrun raises Drop."""

    def __init__(self, b):
        self.b, self.o = bytes(b), 0

    def take(self, n):
        if self.o + n > len(self.b):
            raise Drop("truncated")
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def block8(self):
        return self.take(self.u8())

    def ident(self):
        b = self.block8()
        try:
            return check_id(b).decode()
        except (ValueError, UnicodeDecodeError) as e:
            raise Drop("bad id") from e

    def left(self):
        return len(self.b) - self.o


def build_request(nonce_d, dev_id):
    i = check_id(dev_id)
    return (bytes([T_REQUEST, VER]) + nonce_d + bytes([len(i)]) +
            i + bytes(64 - len(i)))


def parse_challenge(dg):
    """(nonce_d, RAND, AUTN) of a CHALLENGE, or raises Drop."""
    if len(dg) != CHALLENGE_LEN or dg[0] != T_CHALLENGE or dg[1] != VER:
        raise Drop("not a challenge")
    return dg[2:18], dg[18:34], dg[34:50]


def build_response(nonce_d, dev_id, res):
    return bytes([T_RESPONSE, VER]) + nonce_d + block8(check_id(dev_id)) + res


def build_challenge(nonce_d, rand, autn):
    return bytes([T_CHALLENGE, VER]) + nonce_d + rand + autn


def parse_request(dg):
    """(nonce_d, device id) of a REQUEST, or raises Drop."""
    if len(dg) != REQUEST_LEN or dg[0] != T_REQUEST or dg[1] != VER:
        raise Drop("not a request")
    n = dg[18]
    if not 1 <= n <= 64 or any(dg[19 + n:]):
        raise Drop("id length or padding")
    try:
        return bytes(dg[2:18]), check_id(dg[19:19 + n]).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise Drop("bad id") from e


def parse_response(dg):
    """(nonce_d, device id, RES) of a RESPONSE, or raises Drop."""
    if not 36 <= len(dg) <= 99 or dg[0] != T_RESPONSE or dg[1] != VER:
        raise Drop("not a response")
    r = Reader(dg)
    r.take(2)
    nonce_d, dev_id, res = r.take(16), r.ident(), r.take(16)
    if r.left():
        raise Drop("bytes after RES")
    return nonce_d, dev_id, res


def accept_pt(nonce_d, temp_id, mode, keys, mkblock=b""):
    """What a node seals into the ACCEPT (keys: [(ksi, key, peer)])."""
    pt = nonce_d + block8(check_id(temp_id)) + bytes([mode, len(keys)])
    for ksi, key, peer in keys:
        pt += struct.pack(">I", ksi) + key + block8(peer.encode())
    return pt + mkblock


@dataclasses.dataclass
class KeyEntry:
    ksi: int
    key: bytes
    peer: str  # "" in pool mode


@dataclasses.dataclass
class MasterKey:
    mk_id: int
    not_before: int
    expiry: int
    key: bytes


@dataclasses.dataclass
class Accept:
    nonce_d: bytes
    temp_id: str
    mode: int
    keys: list
    domain_id: int = None
    master: list = None  # [current, next?] MasterKey


def parse_accept_pt(pt):
    r = Reader(pt)
    nonce_d = r.take(16)
    temp_id = r.ident()
    mode, count = r.u8(), r.u8()
    if mode not in (MODE_PAIRS, MODE_POOL) or count > KEYSET_MAX:
        raise Drop("keyset mode %d count %d" % (mode, count))
    keys = []
    for _ in range(count):
        ksi, key = r.u32(), r.take(32)
        peer = r.block8()
        if mode == MODE_PAIRS:
            try:
                peer = check_id(peer).decode()
            except (ValueError, UnicodeDecodeError) as e:
                raise Drop("bad peer id") from e
        elif peer:
            raise Drop("peer id in pool mode")
        else:
            peer = ""
        keys.append(KeyEntry(ksi, key, peer))
    if len({k.ksi for k in keys}) != len(keys):
        raise Drop("KSI twice in the key set")
    acc = Accept(nonce_d, temp_id, mode, keys)
    if r.left():
        if r.left() not in MKSET_LENS:
            raise Drop("%d bytes after the key set" % r.left())
        n, acc.domain_id = r.u8(), r.u32()
        if n != (1 if r.left() == 52 else 2):
            raise Drop("master-key block n=%d" % n)
        acc.master = []
        for _ in range(n):
            mk_id = r.u32()
            nb, ex = struct.unpack(">QQ", r.take(16))
            acc.master.append(MasterKey(mk_id, nb, ex, r.take(32)))
        ids = [m.mk_id for m in acc.master]
        if 0 in ids or len(set(ids)) != n or any(
                m.not_before >= m.expiry for m in acc.master) or (
                n == 2 and
                acc.master[1].not_before <= acc.master[0].not_before):
            raise Drop("master-key block rules")
    return acc


# --- Direct link messages ---------------------------------------------------

T_DCR, T_SMC, T_SMCOMPLETE, T_DATA = 0x20, 0x21, 0x22, 0x23
SUITE = 0x01  # AES-128-GCM records + HMAC-SHA-256-128; also P1 of PEK/PIK
CAPS = 0x01
SMC_LEN = 42
SMCOMPLETE_LEN = 20
DATA_MAX = 1428
ROLE_INITIATOR, ROLE_RESPONDER = 0, 1


DCR_MIN = SMC_LEN  # padded: an unauthenticated DCR is never smaller than its SMC


def pad_dcr(fields):
    """Zero bytes up to DCR_MIN (protocol.md: exactly max(42, fields))."""
    return fields + bytes(max(0, DCR_MIN - len(fields)))


def build_dcr(sid_msb, caps, ksi, nonce1, initiator, responder):
    return pad_dcr(bytes([T_DCR, VER, sid_msb, caps]) + struct.pack(">I", ksi) +
                   nonce1 + block8(check_id(initiator)) +
                   block8(check_id(responder)))


@dataclasses.dataclass
class Dcr:
    sid_msb: int
    caps: int
    ksi: int
    nonce1: bytes
    initiator: str
    responder: str
    raw: bytes


def parse_dcr(dg):
    if not DCR_MIN <= len(dg) <= 154 or dg[0] != T_DCR or dg[1] != VER:
        raise Drop("not a DCR")
    r = Reader(dg)
    r.take(2)
    sid_msb, caps, ksi, nonce1 = r.u8(), r.u8(), r.u32(), r.take(16)
    ini, resp = r.ident(), r.ident()
    fields = len(dg) - r.left()
    if len(dg) != max(DCR_MIN, fields) or any(r.take(r.left())):
        raise Drop("bytes after the DCR, or padding not zero")
    return Dcr(sid_msb, caps, ksi, nonce1, ini, resp, bytes(dg))


def mac16(pik, data):
    return hmac.new(pik, data, hashlib.sha256).digest()[:16]


def build_smc(pik, dcr_raw, sid, alg, caps, ksi, nonce2):
    body = (bytes([T_SMC, VER]) + struct.pack(">HBBI", sid, alg, caps, ksi) +
            nonce2)
    return body + mac16(pik, dcr_raw + body)


def build_smcomplete(pik, dcr_raw, smc_raw, sid):
    body = bytes([T_SMCOMPLETE, VER]) + struct.pack(">H", sid)
    return body + mac16(pik, dcr_raw + smc_raw + body)


# --- The device: one socket --------------------------------------------------


class NoAnswer(Exception):
    pass


class Refused(Exception):
    """The peer or the node refused (AUTN failed, LINK_REJ, ...)."""


@dataclasses.dataclass
class Registration:
    node: tuple
    node_id: str
    k_reg: bytes
    sid: int  # registration context id
    accept: Accept
    tx: RecordTx  # uplink
    rx: RecordRx  # downlink
    challenge: bytes  # the CHALLENGE and ACCEPT datagrams as received
    accept_raw: bytes
    sends: dict  # how many times each message was sent


class Device:
    def __init__(self, dev_id, k, bind=("127.0.0.1", 0)):
        self.id = dev_id
        self.k = bytes(k)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.addr = self.sock.getsockname()
        self.backlog = []  # (datagram, source) received, not yet consumed
        self.reg = None
        self.indications = {}  # (ksi, peer) -> (role, param)
        self.rejects = []
        self.node_records = []  # (type, counter) of the node's records
        self.links = []
        self.log = []  # (direction, kind, bytes) of everything sent/seen

    def close(self):
        self.sock.close()

    # datagrams

    def sendto(self, dg, addr):
        self.log.append(("tx", dg[0], bytes(dg)))
        self.sock.sendto(dg, addr)

    def _recv_one(self, timeout):
        if not select.select([self.sock], [], [], max(timeout, 0))[0]:
            return None
        dg, src = self.sock.recvfrom(65536)
        self.log.append(("rx", dg[0] if dg else None, dg))
        return dg, src

    def wait(self, match, timeout):
        """Feeds datagrams (the backlog first) to match(dg, src) until it
        returns something other than None; unmatched ones stay in the
        backlog (node records are handled on the way). None on timeout."""
        for i, (dg, src) in enumerate(self.backlog):
            v = match(dg, src)
            if v is not None:
                del self.backlog[i]
                return v
        end = time.monotonic() + timeout
        while True:
            got = self._recv_one(end - time.monotonic())
            if got is None:
                return None
            dg, src = got
            if self.reg and src == self.reg.node and dg and dg[0] in (
                    T_LINK_IND, T_LINK_REJ):
                self._node_record(dg)
                continue
            v = match(dg, src)
            if v is not None:
                return v
            if len(self.backlog) < 64:
                self.backlog.append((dg, src))

    def drain(self, timeout=0.0):
        """Everything that arrives within timeout, the backlog first."""
        out, self.backlog = self.backlog, []
        end = time.monotonic() + timeout
        while True:
            got = self._recv_one(end - time.monotonic())
            if got is None:
                return out
            out.append(got)

    # registration

    def register(self, node, node_id, tries=5, rto=0.3, lose_rx=None,
                 lose_tx=None, nonce_d=None, on_rx=None):
        """REQUEST, CHALLENGE (AUTN checked), RESPONSE, ACCEPT.

        lose_rx / lose_tx: {T_CHALLENGE: n} drops the first n such datagrams
        received / {T_REQUEST: n} does not send the first n such sends, as a
        lossy network would. on_rx(dg) sees every datagram from the node."""
        lose_rx = dict(lose_rx or {})
        lose_tx = dict(lose_tx or {})
        sends = {T_REQUEST: 0, T_RESPONSE: 0}
        nonce_d = nonce_d or os.urandom(16)

        def exchange(dg, match):
            """sends dg until match(reply) gives a value; doubling timeout."""
            t = rto
            for _ in range(tries):
                sends[dg[0]] += 1
                if lose_tx.get(dg[0], 0) > 0:
                    lose_tx[dg[0]] -= 1
                else:
                    self.sendto(dg, node)

                def m(reply, src):
                    if src != node:
                        return None  # answers only from the node
                    if on_rx:
                        on_rx(reply)
                    if reply and lose_rx.get(reply[0], 0) > 0:
                        lose_rx[reply[0]] -= 1
                        return False  # lost: consumed, not used
                    try:
                        return match(reply)
                    except Drop:
                        return False  # dropped: consumed

                end = time.monotonic() + t
                while True:
                    v = self.wait(m, end - time.monotonic())
                    if v is None:
                        break
                    if v is not False:
                        return v
                t = min(t * 2, rto * 64)
            raise NoAnswer("node %s:%d did not answer %s after %d sends" %
                           (node[0], node[1], "REQUEST" if dg[0] == T_REQUEST
                            else "RESPONSE", tries))

        autn_bad = []

        def on_challenge(reply):
            nd, rand, autn = parse_challenge(reply)
            if nd != nonce_d:
                raise Drop("another nonce_d")
            if not hmac.compare_digest(autn,
                                       derive_autn(self.k, rand, nonce_d,
                                                   node_id)):
                autn_bad.append(reply)
                raise Drop("AUTN")
            return bytes(reply), rand

        try:
            challenge, rand = exchange(build_request(nonce_d, self.id),
                                       on_challenge)
        except NoAnswer:
            if autn_bad:
                raise Refused("failed authentication (AUTN)")
            raise
        res = derive_res(self.k, rand, nonce_d, node_id)
        k_reg = derive_kreg(self.k, rand, nonce_d, node_id, self.id)
        up = record_keys(k_reg, FC_REGMSG, DIR_UP)
        down = record_keys(k_reg, FC_REGMSG, DIR_DOWN)
        if up == down:
            raise Refused("both directions share key and salt")

        def on_accept(reply):
            t, sid, epoch, ctr = record_header(reply)
            if t != T_ACCEPT or epoch != 0 or ctr != 1:
                raise Drop("not an accept")
            rx = RecordRx(*down, sid)
            _, _, pt = rx.open(reply, T_ACCEPT)
            acc = parse_accept_pt(pt)
            if acc.nonce_d != nonce_d:
                raise Drop("accept for another nonce_d")
            return bytes(reply), sid, rx, acc

        accept_raw, sid, rx, acc = exchange(
            build_response(nonce_d, self.id, res), on_accept)
        self.reg = Registration(node, node_id, k_reg, sid, acc,
                                RecordTx(*up, sid), rx, challenge, accept_raw,
                                sends)
        self.indications = {}
        self.node_records = []
        return self.reg

    # option 2: LINK_REQ over the node channel, LINK_IND / LINK_REJ back

    def _node_record(self, dg):
        try:
            t, ctr, pt = self.reg.rx.open(dg)
            self.node_records.append((t, ctr))
            r = Reader(pt)
            peer = r.ident()
            if t == T_LINK_IND:
                role, ksi, param = r.u8(), r.u32(), r.take(16)
                if r.left() or role not in (0, 1):
                    raise Drop("LINK_IND layout")
                self.indications[(ksi, peer)] = (role, param)
            elif t == T_LINK_REJ:
                reason = r.u8()
                if r.left():
                    raise Drop("LINK_REJ layout")
                self.rejects.append((peer, reason))
        except Drop as e:
            self.log.append(("drop", dg[0], str(e)))

    def mk_refresh(self, held_mk_id=None, timeout=5.0):
        """MK_REFRESH (0x13) on the node channel; returns the MK_UPDATE's
        plaintext (b"" or a master-key block), None without an answer."""
        pt = b"" if held_mk_id is None else struct.pack(">I", held_mk_id)
        self.sendto(self.reg.tx.seal(T_MK_REFRESH, pt), self.reg.node)

        def m(dg, src):
            if src != self.reg.node or not dg or dg[0] != T_MK_UPDATE:
                return None
            try:
                return self.reg.rx.open(dg, T_MK_UPDATE)[2]
            except Drop:
                return False

        end = time.monotonic() + timeout
        while True:
            v = self.wait(m, end - time.monotonic())
            if v is None or v is not False:
                return v

    def link_request(self, peer):
        pt = block8(check_id(peer))
        dg = self.reg.tx.seal(T_LINK_REQ, pt)
        self.sendto(dg, self.reg.node)
        return dg

    def wait_indication(self, peer, role, timeout, tries=3):
        """Sends LINK_REQ (unless role is responder) and waits for the
        LINK_IND naming peer; returns its KSI. LINK_REJ raises Refused."""
        for _ in range(tries):
            if role == ROLE_INITIATOR:
                self.link_request(peer)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                for (ksi, p), (r, _) in self.indications.items():
                    if p == peer and r == role:
                        return ksi
                for p, reason in self.rejects:
                    if p == peer:
                        raise Refused("LINK_REJ %s reason %d" % (p, reason))
                self.wait(lambda dg, src: None,
                          min(0.05, end - time.monotonic()))
        raise NoAnswer("no LINK_IND for %s" % peer)

    # the key lookup of the direct link: (KSI, peer id, initiator, responder)

    def lookup(self, ksi, peer, initiator, responder):
        acc = self.reg.accept
        if acc.mode == MODE_PAIRS:
            for e in acc.keys:
                if e.ksi == ksi and e.peer == peer:
                    return e.key
            return None
        ind = self.indications.get((ksi, peer))
        if ind is None or not acc.keys:
            return None
        pool = sorted(acc.keys, key=lambda e: e.ksi)
        return derive_pool_kd(pool[ksi % len(pool)].key, ind[1], initiator,
                              responder)

    def pair_ksi(self, peer):
        for e in self.reg.accept.keys:
            if e.peer == peer:
                return e.ksi
        raise Refused("unknown peer %r" % peer)

    # direct links

    def connect(self, to, peer, ksi=None, tries=5, rto=0.3,
                skip_complete=False, caps=CAPS, sid_msb=None, on_smc=None,
                k_d=None):
        """Initiator: DCR until an SMC verifies, then SMCOMPLETE. k_d: the
        root key, when not from this device's registration."""
        if ksi is None:
            ksi = self.pair_ksi(peer)
        if k_d is None:
            k_d = self.lookup(ksi, peer, self.id, peer)
        if k_d is None:
            raise Refused("no root key for KSI 0x%08x and %s" % (ksi, peer))
        nonce1 = os.urandom(16)
        sid_msb = os.urandom(1)[0] if sid_msb is None else sid_msb
        dcr = build_dcr(sid_msb, caps, ksi, nonce1, self.id, peer)

        def on_reply(dg, src):
            if src != to or len(dg) != SMC_LEN or dg[0] != T_SMC:
                return None
            if on_smc:
                on_smc(dg)
            sid, alg, ecaps, eksi = struct.unpack(">HBBI", dg[2:10])
            if dg[1] != VER or sid >> 8 != sid_msb or eksi != ksi or \
                    ecaps != caps or alg != SUITE or not caps & alg:
                return False
            nonce2 = dg[10:26]
            _, pek, pik = derive_link(k_d, nonce1, nonce2, alg)
            if not hmac.compare_digest(dg[26:42], mac16(pik, dcr + dg[:26])):
                return False
            return bytes(dg), sid, nonce2, pek, pik

        t = rto
        for _ in range(tries):
            self.sendto(dcr, to)
            end = time.monotonic() + t
            while True:
                v = self.wait(on_reply, end - time.monotonic())
                if v is None or v is not False:
                    break
            if v:
                break
            t *= 2
        else:
            raise NoAnswer("no SMC from %s after %d DCRs" % (to, tries))
        smc, sid, nonce2, pek, pik = v
        cmpl = build_smcomplete(pik, dcr, smc, sid)
        if not skip_complete:
            self.sendto(cmpl, to)
        link = Link(self, to, peer, ROLE_INITIATOR, sid, ksi, nonce1, nonce2,
                    pek, pik, dcr, smc, cmpl)
        self.links.append(link)
        return link

    def accept(self, timeout=10.0, expect_peer=None, smc_hook=None):
        """Responder: waits for a DCR to us, answers SMC, waits for the
        SMCOMPLETE (or an authentic DATA record, when it was lost)."""
        end = time.monotonic() + timeout
        pending = None  # (dcr, smc, sid, pek, pik, src)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise NoAnswer("no link established")

            def m(dg, src):
                return (dg, src) if dg and dg[0] in (T_DCR, T_SMCOMPLETE,
                                                     T_DATA) else None

            got = self.wait(m, left)
            if got is None:
                continue
            dg, src = got
            if dg[0] == T_DCR:
                if pending and dg == pending[0].raw and src == pending[5]:
                    self.sendto(pending[1], src)  # the same SMC again
                    continue
                try:
                    dcr = parse_dcr(dg)
                except Drop:
                    continue
                if dcr.responder != self.id or not dcr.caps & CAPS or (
                        expect_peer and dcr.initiator != expect_peer):
                    continue
                k_d = self.lookup(dcr.ksi, dcr.initiator, dcr.initiator,
                                  self.id)
                if k_d is None:
                    continue
                nonce2 = os.urandom(16)
                sid = dcr.sid_msb << 8 | os.urandom(1)[0]
                _, pek, pik = derive_link(k_d, dcr.nonce1, nonce2, SUITE)
                smc = build_smc(pik, dcr.raw, sid, SUITE, dcr.caps, dcr.ksi,
                                nonce2)
                if smc_hook:  # a hostile responder, for tests
                    smc = smc_hook(smc, pik, dcr)
                pending = (dcr, smc, sid, pek, pik, src)
                self.sendto(smc, src)
                continue
            if pending is None or src != pending[5]:
                continue
            dcr, smc, sid, pek, pik, src0 = pending
            link = Link(self, src0, dcr.initiator, ROLE_RESPONDER, sid,
                        dcr.ksi, dcr.nonce1, smc[10:26], pek, pik, dcr.raw,
                        smc, None)
            if dg[0] == T_SMCOMPLETE:
                want = build_smcomplete(pik, dcr.raw, smc, sid)
                if len(dg) == SMCOMPLETE_LEN and hmac.compare_digest(dg, want):
                    link.cmpl = bytes(dg)
                    self.links.append(link)
                    return link
                continue
            try:  # DATA: a lost SMCOMPLETE
                link.inbox.append(link.open(dg))
            except Drop:
                continue
            self.links.append(link)
            return link


class Link:
    def __init__(self, dev, to, peer, role, sid, ksi, nonce1, nonce2, pek,
                 pik, dcr, smc, cmpl):
        self.dev, self.to, self.peer, self.role = dev, to, peer, role
        self.sid, self.ksi, self.nonce1, self.nonce2 = sid, ksi, nonce1, nonce2
        self.pek, self.pik = pek, pik
        self.dcr, self.smc, self.cmpl = dcr, smc, cmpl
        i2r = record_keys(pek, FC_LINKREC, 0x00)
        r2i = record_keys(pek, FC_LINKREC, 0x01)
        if i2r == r2i:
            raise Refused("both directions share key and salt")
        mine, theirs = (i2r, r2i) if role == ROLE_INITIATOR else (r2i, i2r)
        self.tx = RecordTx(*mine, sid)
        self.rx = RecordRx(*theirs, sid)
        self.inbox = []

    def seal(self, data):
        if len(data) > DATA_MAX - REC_MIN:
            raise ValueError("DATA plaintext over %d" % (DATA_MAX - REC_MIN))
        return self.tx.seal(T_DATA, data)

    def send(self, data):
        dg = self.seal(data)
        self.dev.sendto(dg, self.to)
        return dg

    def open(self, dg):
        if len(dg) > DATA_MAX:
            raise Drop("DATA over %d" % DATA_MAX)
        return self.rx.open(dg, T_DATA)[2]

    def recv(self, timeout=5.0):
        """The next data record's plaintext on this link (None: timeout)."""
        if self.inbox:
            return self.inbox.pop(0)

        def m(dg, src):
            # the context is selected by the session id, not the source
            # address: a one-shot initiator (`proxkey device send`) sends
            # each record of a stored link from a new port
            if len(dg) < REC_MIN or dg[0] != T_DATA or \
                    struct.unpack(">H", dg[1:3])[0] != self.sid:
                return None
            try:
                pt = self.open(dg)
            except Drop:
                return False
            self.to = src  # answer where the last authentic record came from
            return pt

        end = time.monotonic() + timeout
        while True:
            v = self.dev.wait(m, end - time.monotonic())
            if v is None or v is not False:
                return v


# --- Master keys and individual keys (Toshiba method) ------------------------
#
# docs/protocol.md "Master keys and individual keys": START, PROC, END1, END2
# under K_auth = KDF(MK, 0xE9, MK ID), the individual key IK from FC 0xE8,
# records of type 0x20 under KDF(IK, 0xE6, dir), session id = key ID & 0xFFFF.

FC_IK = 0xE8
FC_KAUTH = 0xE9
FC_KWRAP = 0xEA
MK_VER = 1
MK_BEACON, MK_START, MK_PROC, MK_END1, MK_END2 = 0x01, 0x02, 0x03, 0x04, 0x05
MK_FLAG_WRAP = 0x01
MK_BEACON_LEN = 205
MK_MAC = 32
T_MK_RECORD = 0x20


def derive_kauth(mk, mk_id):
    return kdf(mk, FC_KAUTH, struct.pack(">I", mk_id))


def derive_ik(mk, mk_id, n_i, n_r, id_i, id_r):
    a, b = check_id(id_i), check_id(id_r)
    return last16(kdf(mk, FC_IK, min(n_i, n_r), max(n_i, n_r), min(a, b),
                      max(a, b), struct.pack(">I", mk_id)))


def derive_kwrap(mk, mk_id, n_r):
    out = kdf(mk, FC_KWRAP, struct.pack(">I", mk_id), n_r)
    return last16(out), out[:12]


def mk_beacon(domain, mk_id, ident):
    i = check_id(ident)
    return (bytes([MK_VER, MK_BEACON]) + struct.pack(">II", domain, mk_id) +
            bytes([len(i)]) + i + bytes(194 - len(i)))


@dataclasses.dataclass
class MkMsg:
    type: int
    flags: int
    domain: int
    mk_id: int
    n_i: bytes
    n_r: bytes
    id_i: str
    id_r: str
    body: bytes
    raw: bytes


def mk_build(kauth, mtype, flags, domain, mk_id, n_i, n_r, id_i, id_r,
             body=b""):
    m = (bytes([MK_VER, mtype, flags]) + struct.pack(">II", domain, mk_id) +
         n_i + n_r + block8(check_id(id_i)) + block8(check_id(id_r)) + body)
    return m + hmac.new(kauth, m, hashlib.sha256).digest()


def mk_body_len(mtype, flags):
    if mtype in (MK_START, MK_PROC):
        return 0
    if mtype == MK_END1:
        return 12 + (32 if flags & MK_FLAG_WRAP else 0)
    if mtype == MK_END2:
        return 12
    raise Drop("mk type %d" % mtype)


def mk_parse(dg, kauth):
    """Parses an authentication message (exact length) and checks its MAC."""
    r = Reader(dg)
    if r.u8() != MK_VER:
        raise Drop("mk version")
    mtype, flags = r.u8(), r.u8()
    if flags & ~MK_FLAG_WRAP:
        raise Drop("mk flags")
    domain, mk_id = r.u32(), r.u32()
    n_i, n_r = r.take(16), r.take(16)
    id_i, id_r = r.ident(), r.ident()
    body = r.take(mk_body_len(mtype, flags))
    mac = r.take(MK_MAC)
    if r.left():
        raise Drop("mk length")
    if not hmac.compare_digest(mac, hmac.new(kauth, dg[:-MK_MAC],
                                             hashlib.sha256).digest()):
        raise Drop("mk MAC")
    return MkMsg(mtype, flags, domain, mk_id, n_i, n_r, id_i, id_r, body,
                 bytes(dg))


@dataclasses.dataclass
class IndividualKey:
    key_id: int
    ik: bytes
    expiry: int
    partner: str
    role: int  # ROLE_INITIATOR: we transmit with direction 0x00
    tx: RecordTx = None
    rx: RecordRx = None

    def __post_init__(self):
        i2r = record_keys(self.ik, FC_LINKREC, 0x00)
        r2i = record_keys(self.ik, FC_LINKREC, 0x01)
        mine, theirs = (i2r, r2i) if self.role == ROLE_INITIATOR else (r2i,
                                                                       i2r)
        sid = self.key_id & 0xFFFF
        self.tx = RecordTx(*mine, sid)
        self.rx = RecordRx(*theirs, sid)

    def seal(self, data):
        return self.tx.seal(T_MK_RECORD, data)

    def open(self, dg):
        return self.rx.open(dg, T_MK_RECORD)[2]


class MkClient:
    """A master-key client on a Device's socket, with the MK of its ACCEPT."""

    def __init__(self, dev, lifetime_ms=3600_000):
        acc = dev.reg.accept
        if not acc.master:
            raise Refused("no master key")
        self.dev = dev
        self.domain = acc.domain_id
        self.mk = acc.master[0]  # current
        self.kauth = derive_kauth(self.mk.key, self.mk.mk_id)
        self.lifetime_ms = lifetime_ms
        self.keys = {}  # key_id -> IndividualKey

    def _wait_mk(self, to, mtype, n_i, timeout):
        def m(dg, src):
            if src != to or len(dg) < 2 or dg[0] != MK_VER or dg[1] != mtype:
                return None
            try:
                msg = mk_parse(dg, self.kauth)
            except Drop:
                return False
            if msg.n_i != n_i:
                return False
            return msg

        end = time.monotonic() + timeout
        while True:
            v = self.dev.wait(m, end - time.monotonic())
            if v is None or v is not False:
                return v

    def authenticate(self, to, peer, flags=0, timeout=5.0, tamper_end1=False,
                     expiry_ms=None, end2_timeout=None):
        """Initiator: START, PROC, END1, END2. Returns the IndividualKey."""
        me = self.dev.id
        n_i = os.urandom(16)
        z = bytes(16)
        start = mk_build(self.kauth, MK_START, flags, self.domain,
                         self.mk.mk_id, n_i, z, me, peer)
        self.dev.sendto(start, to)
        proc = self._wait_mk(to, MK_PROC, n_i, timeout)
        if proc is None:
            raise NoAnswer("no PROC")
        if (proc.id_i, proc.id_r, proc.flags, proc.domain, proc.mk_id) != (
                me, peer, flags, self.domain, self.mk.mk_id) or \
                proc.n_r == n_i:
            raise Refused("PROC fields")
        n_r = proc.n_r
        while True:
            key_id = struct.unpack(">I", os.urandom(4))[0]
            if key_id & 0xFFFF and all((k & 0xFFFF) != (key_id & 0xFFFF)
                                       for k in self.keys):
                break
        now = int(time.time() * 1000)
        offer = expiry_ms or min(now + self.lifetime_ms, self.mk.expiry)
        body = struct.pack(">IQ", key_id, offer)
        if flags & MK_FLAG_WRAP:
            ik = os.urandom(16)
            hdr = (bytes([MK_VER, MK_END1, flags]) +
                   struct.pack(">II", self.domain, self.mk.mk_id) + n_i + n_r +
                   block8(check_id(me)) + block8(check_id(peer)) + body)
            kw, nonce = derive_kwrap(self.mk.key, self.mk.mk_id, n_r)
            body += AESGCM(kw).encrypt(nonce, ik, hdr)
        else:
            ik = derive_ik(self.mk.key, self.mk.mk_id, n_i, n_r, me, peer)
        end1 = mk_build(self.kauth, MK_END1, flags, self.domain,
                        self.mk.mk_id, n_i, n_r, me, peer, body)
        if tamper_end1:
            bad = bytearray(end1)
            bad[50] ^= 1
            self.dev.sendto(bytes(bad), to)
            return self._wait_mk(to, MK_END2, n_i, end2_timeout or timeout)
        self.dev.sendto(end1, to)
        end2 = self._wait_mk(to, MK_END2, n_i, end2_timeout or timeout)
        if end2 is None:
            raise NoAnswer("no END2")
        k2, exp2 = struct.unpack(">IQ", end2.body)
        if end2.n_r != n_r or k2 != key_id or not now < exp2 <= offer:
            raise Refused("END2 fields: key %08x expiry %d" % (k2, exp2))
        key = IndividualKey(key_id, ik, exp2, peer, ROLE_INITIATOR)
        self.keys[key_id] = key
        return key

    def respond(self, timeout=10.0, flags_seen=None):
        """Responder: waits for a START to us, PROC, END1 (MAC, expiry, key
        ID, [unwrap]), END2. Returns the IndividualKey."""
        me = self.dev.id

        def m(dg, src):
            if len(dg) < 2 or dg[0] != MK_VER or dg[1] != MK_START:
                return None
            try:
                msg = mk_parse(dg, self.kauth)
            except Drop:
                return False
            if msg.id_r != me or msg.id_i == me or msg.domain != \
                    self.domain or msg.mk_id != self.mk.mk_id or \
                    msg.n_r != bytes(16):
                return False
            return msg, src

        end = time.monotonic() + timeout
        while True:
            v = self.dev.wait(m, end - time.monotonic())
            if v is None:
                raise NoAnswer("no START")
            if v is not False:
                break
        start, src = v
        if flags_seen is not None:
            flags_seen.append(start.flags)
        n_i, peer, flags = start.n_i, start.id_i, start.flags
        n_r = os.urandom(16)
        proc = mk_build(self.kauth, MK_PROC, flags, self.domain,
                        self.mk.mk_id, n_i, n_r, peer, me)
        self.dev.sendto(proc, src)
        end1 = self._wait_mk(src, MK_END1, n_i, max(end - time.monotonic(),
                                                    0.1))
        if end1 is None:
            raise NoAnswer("no END1")
        if end1.n_r != n_r or end1.flags != flags or end1.id_r != me:
            raise Refused("END1 fields")
        key_id, offer = struct.unpack(">IQ", end1.body[:12])
        now = int(time.time() * 1000)
        if not now < offer <= self.mk.expiry or not key_id & 0xFFFF:
            raise Refused("END1 expiry/key id")
        if flags & MK_FLAG_WRAP:
            kw, nonce = derive_kwrap(self.mk.key, self.mk.mk_id, n_r)
            hdr = end1.raw[:len(end1.raw) - MK_MAC - 32]
            try:
                ik = AESGCM(kw).decrypt(nonce, end1.body[12:44], hdr)
            except Exception as e:
                raise Refused("wrapped IK does not open") from e
        else:
            ik = derive_ik(self.mk.key, self.mk.mk_id, n_i, n_r, peer, me)
        expiry = min(offer, now + self.lifetime_ms)
        end2 = mk_build(self.kauth, MK_END2, flags, self.domain,
                        self.mk.mk_id, n_i, n_r, peer, me,
                        struct.pack(">IQ", key_id, expiry))
        self.dev.sendto(end2, src)
        key = IndividualKey(key_id, ik, expiry, peer, ROLE_RESPONDER)
        self.keys[key_id] = key
        return key

    def recv(self, timeout=5.0):
        """(key, plaintext) of the next record under one of our keys."""
        def m(dg, src):
            if len(dg) < REC_MIN or dg[0] != T_MK_RECORD:
                return None
            sid = struct.unpack(">H", dg[1:3])[0]
            for k in self.keys.values():
                if k.key_id & 0xFFFF == sid:
                    try:
                        return k, k.open(dg)
                    except Drop:
                        return False
            return False

        end = time.monotonic() + timeout
        while True:
            v = self.dev.wait(m, end - time.monotonic())
            if v is None or v is not False:
                return v
