"""The native protocol (docs/protocol.md) in Python, written from the document: enough to play an
honest client that misbehaves on purpose, or a hostile peer."""

import hashlib
import hmac
import os
import struct
import time

from nptest import dial

(HELLO, LOGIN, LOGIN_RESP, PROXY, PROXY_RESP, REQ_WORK, WORK, WORK_FAIL, PING, PONG, CLOSE, WORK_IDLE,
 START, MUX, PROXY_OPT, PROXY_CLOSE, PEER, FORWARD, VISIT, DIRECT, DIRECT_INTRO) = range(1, 22)
STCP, SUDP = 4, 5  # PROXY's kinds of private proxies
NP_ENOPROXY, NP_ESECRET, NP_EDENIED = -7016, -7025, -7026
NP_EUNSUPPORTED = -7009
LOGIN_DIRECT = 2  # LOGIN status: the client takes DIRECT_INTRO
NP_EAUTH, NP_EPORTDENIED, NP_ENAMETAKEN, NP_EVERSION = -7004, -7005, -7006, -7003
NP_ENAMEINUSE = -7022
NP_EBACKOFF = -7021  # NP_EBACKOFF: wait the id's milliseconds and retry

LAYOUT = {
    HELLO: ["version", "nonce", "status", "id"],  # the server's features (NP_HELLO_*), instance
    LOGIN: ["version", "name", "nonce", "mac", "id", "status"],
    LOGIN_RESP: ["status", "id", "text"],
    PROXY: ["name", "addr", "port", "text", "kind"],
    PROXY_RESP: ["name", "status", "port", "text"],
    REQ_WORK: ["id", "name", "addr", "text"],  # addr: the visitor's; text: the public address
    WORK: ["id", "id2", "mac"],
    WORK_FAIL: ["id", "status", "text"],
    PING: ["id", "status"],
    PONG: ["id"],
    CLOSE: ["status", "text"],
    WORK_IDLE: ["id", "id2", "mac"],
    START: ["id", "name", "addr", "text"],
    MUX: ["version"],
    PROXY_OPT: ["name", "addr", "text"],  # proxy, key, value
    PROXY_CLOSE: ["name", "text"],  # proxy, why
    PEER: ["version", "name", "nonce", "mac"],  # another server's login: its cluster_advertise
    FORWARD: ["kind", "port", "text", "name", "addr", "status"],  # route, visitor, to; the answer
    VISIT: ["id", "id2", "kind", "name", "nonce", "mac", "status", "text"],  # a private proxy's visitor
    DIRECT: ["id", "id2", "kind", "name", "nonce", "mac", "status", "text"],  # a direct path asked
    DIRECT_INTRO: ["id", "id2", "name", "addr", "nonce", "mac", "status", "text"],  # to the owner
}
FMT = {"version": ">H", "port": ">H", "status": ">i", "id": ">Q", "id2": ">Q", "kind": ">B"}


def encode(mtype, **f):
    body = bytes([mtype])
    for name in LAYOUT[mtype]:
        if name in FMT:
            body += struct.pack(FMT[name], f.get(name, 0))
        elif name in ("nonce", "mac"):
            body += f.get(name, bytes(32))
        else:
            s = f.get(name, "").encode()
            body += bytes([len(s)]) + s
    return struct.pack(">I", len(body)) + body


def decode_body(body):
    mtype, p, out = body[0], 1, {}
    for name in LAYOUT[mtype]:
        if name in FMT:
            size = struct.calcsize(FMT[name])
            (out[name],) = struct.unpack(FMT[name], body[p:p + size])
            p += size
        elif name in ("nonce", "mac"):
            out[name], p = body[p:p + 32], p + 32
        else:
            n = body[p]
            out[name], p = body[p + 1:p + 1 + n].decode(), p + 1 + n
    return mtype, out


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError("connection closed")
        buf += b
    return buf


def recv_msg(s):
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    return decode_body(recv_exact(s, n))


def mac(key, *parts):
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


class Client:
    """A native client driven step by step by the test."""

    def __init__(self, server, token="s3cret", name="raw", source=None, login_fields=None):
        """server: an nptest server (its port, and its fingerprint unless it runs in clear); source:
        the loopback address to connect from."""
        self.server = server
        # On a server of several workers, a name held by a session on another worker is answered
        # "wait and retry" while that worker decides; np-client waits the time given and logs in
        # again, and so does this client (a few times at most).
        for attempt in range(8):
            self.s = dial(server, source=source)
            self.s.sendall(encode(HELLO, version=1))
            t, m = self.expect(HELLO)
            sn, cn = m["nonce"], os.urandom(32)
            tok = token.encode()
            self.key = mac(tok, b"np-session-1", sn, cn, name.encode())
            self.s.sendall(encode(LOGIN, version=1, name=name, nonce=cn,
                                  mac=mac(tok, b"np-login-1", sn, cn, name.encode()),
                                  **(login_fields or {})))
            t, m = self.expect(LOGIN_RESP)
            if m["status"] != NP_EBACKOFF or "another worker" not in m.get("text", ""):
                break
            self.s.close()
            time.sleep(m["id"] / 1000)  # the wait the server asked for
        self.login = m
        self.session = m["id"]

    def expect(self, want):
        while True:
            t, m = recv_msg(self.s)
            if t == PING:
                self.s.sendall(encode(PONG, id=m["id"]))
                continue
            if t != want:
                raise AssertionError(f"expected message {want}, got {t} {m}")
            return t, m

    def proxy(self, name, port=0, addr="127.0.0.1", kind=0):
        self.s.sendall(encode(PROXY, name=name, addr=addr, port=port, kind=kind))
        return self.expect(PROXY_RESP)[1]

    def idle_msg(self, serial, good=True):
        proof = mac(self.key, b"np-idle-1", struct.pack(">QQ", self.session, serial))
        return encode(WORK_IDLE, id=self.session, id2=serial, mac=proof if good else bytes(32))

    def idle(self, serial, good=True, raw=None):
        """Open a pre-opened work connection (or send raw bytes as its first message)."""
        w = dial(self.server)
        w.sendall(raw if raw is not None else self.idle_msg(serial, good))
        return w

    def work(self, visitor, good=True):
        """Open a work connection for visitor (with a wrong proof unless good)."""
        w = dial(self.server)
        proof = mac(self.key, b"np-work-1", struct.pack(">QQ", self.session, visitor))
        w.sendall(encode(WORK, id=self.session, id2=visitor, mac=proof if good else bytes(32)))
        return w

    def visit_msg(self, serial, target, secret, kind=STCP, session=None, key=None):
        """VISIT of the private proxy target ("OWNER.PROXY") with the proofs of the session (its
        key: this session's unless given) and of secret."""
        verifier = mac(secret.encode(), b"np-stcp-1", target.encode())
        sid = self.session if session is None else session
        k = self.key if key is None else key
        ids = struct.pack(">QQB", sid, serial, kind)
        return encode(VISIT, id=sid, id2=serial, kind=kind, name=target,
                      nonce=mac(k, b"np-visit-0", ids, target.encode()),
                      mac=mac(verifier, b"np-visit-1", k, ids, target.encode()))

    def visit(self, serial, target, secret, kind=STCP, session=None, key=None):
        """Open a visitor's connection with VISIT."""
        w = dial(self.server)
        w.sendall(self.visit_msg(serial, target, secret, kind, session, key))
        return w
