#!/usr/bin/env python3
"""Servers of a cluster that misbehave (docs/protocol.md, "Between servers"). On the owner's side, a
hostile forwarder written here from the document: FORWARD where no peer logged in, PEER where it
does not belong or with a wrong proof, a login left half-way, FORWARD of an unknown kind, with the
visitor's bytes before the answer, cut short, oversized, or lying about addresses: each gets a clear
refusal or a closed stream, the link and the honest visitors go on. On the forwarding side, fake
owners that stall, never answer, answer with the wrong message, refuse, send garbage or vanish:
every visitor gets a 502 within the deadline, said in the log, and the server goes on."""

import hashlib
import hmac
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from npmux import Mux  # noqa: E402
from nptest import LOOP, check, dial, run, server_stats, wait_until  # noqa: E402
from test_forward import cluster_server, curl  # noqa: E402
from test_http_vhost import answers, echo_service, start_client  # noqa: E402
from test_protocol import closed  # noqa: E402
from test_routes import free_port, redis, redis_cli, routes  # noqa: E402
from test_routes import PREFIX  # noqa: E402
from test_udp import Echo  # noqa: E402

CLUSTER_TOKEN = "cluster-s3cret"
NP_ENOPROXY = -7016


def peer_mac(token, sn, cn, name):
    return hmac.new(token.encode(), b"np-peer-1" + sn + cn + name.encode(), hashlib.sha256).digest()


def mux_dial(srv):
    s = dial(srv, timeout=10)
    s.sendall(npwire.encode(npwire.MUX, version=1))
    return Mux(s)


def peer_login(srv, token=CLUSTER_TOKEN, name="127.0.0.1:9"):
    """A multiplexed connection to srv whose first stream logged in with PEER: (mux, LOGIN_RESP)."""
    mux = mux_dial(srv)
    sid = mux.open(npwire.encode(npwire.HELLO, version=1))
    t, hello = mux.recv_msg(sid)
    check(t == npwire.HELLO, f"HELLO first: {t}")
    cn = os.urandom(32)
    mux.send_msg(sid, npwire.PEER, version=1, name=name, nonce=cn,
                 mac=peer_mac(token, hello["nonce"], cn, name))
    t, resp = mux.recv_msg(sid)
    check(t == npwire.LOGIN_RESP, f"LOGIN_RESP to PEER: {t} {resp}")
    return mux, resp


def forward(mux, kind=2, port=0, host="", visitor="127.0.0.50:4000",
            to="", extra=b""):
    sid = mux.open()
    mux.send(sid, npwire.encode(npwire.FORWARD, kind=kind, port=port, text=host, name=visitor,
                                addr=to) + extra)
    return sid


def test_hostile_forwarder(env):
    store = redis(env)
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name)
    a = cluster_server(env, store.port, "np-server-a", tls_dir,
                       extra=("--login-timeout", "1s", "--udp-max-flows", "2"))
    web = echo_service(env, "web")
    start_client(env, a, "alpha", {"web": f"local = {LOOP}:{web}\ncustom_domains = web.example.com"})
    udp_echo = Echo()
    uport, = env.client(a, "--name", "udp", "-U", f"0:{LOOP}:{udp_echo.port}").ports.values()

    def honest():
        out = curl(a.vport, f"http://web.example.com:{a.vport}/h", source="127.0.0.60")
        got, = answers(out.stdout)
        return got["service"] == "web" and got["xff"] == ["127.0.0.60"]
    check(honest(), "an honest visitor first")

    # FORWARD where no peer logged in: on a plain connection, and on a client's multiplexed one
    mark = a.mark()
    s = dial(a)
    s.sendall(npwire.encode(npwire.FORWARD, kind=2, text="web.example.com", name="127.0.0.50:1"))
    check(closed(s), "FORWARD as a first message: closed")
    a.wait_line(r"unexpected FORWARD message, closing", after=mark)
    mux = mux_dial(a)
    sid = mux.open(npwire.encode(npwire.HELLO, version=1))
    t, hello = mux.recv_msg(sid)
    cn = os.urandom(32)
    mux.send_msg(sid, npwire.LOGIN, version=1, name="sneaky", nonce=cn,
                 mac=hmac.new(b"s3cret", b"np-login-1" + hello["nonce"] + cn + b"sneaky",
                              hashlib.sha256).digest())
    t, resp = mux.recv_msg(sid)
    check(t == npwire.LOGIN_RESP and resp["status"] == 0, f"a client logged in: {resp}")
    f = forward(mux, host="web.example.com")
    check(mux.ended(f) and mux.streams[f].data == b"", "FORWARD on a client's stream: closed, unanswered")
    check(honest(), "honest after FORWARD without a peer")

    # PEER where it does not belong: on a plain connection, or with a wrong proof
    s = dial(a)
    s.sendall(npwire.encode(npwire.HELLO, version=1))
    t, hello = npwire.recv_msg(s)
    cn = os.urandom(32)
    s.sendall(npwire.encode(npwire.PEER, version=1, name="127.0.0.1:9", nonce=cn,
                            mac=peer_mac(CLUSTER_TOKEN, hello["nonce"], cn, "127.0.0.1:9")))
    t, resp = npwire.recv_msg(s)
    check(t == npwire.LOGIN_RESP and resp["status"] == npwire.NP_EAUTH and
          "multiplexed" in resp["text"], f"PEER on a plain connection: {resp}")
    check(closed(s), "and closed")
    before = server_stats(a)
    mux, resp = peer_login(a, token="not-the-cluster-token")
    check(resp["status"] == npwire.NP_EAUTH and resp["text"] == "wrong cluster_token",
          f"a wrong cluster_token: {resp}")
    a.wait_line(r"peer login as 127\.0\.0\.1:9 refused: wrong cluster_token")
    after = server_stats(a)
    check(after["logins_failed"] > before["logins_failed"], "counted as a failed login")

    # a login left half-way: closed at the login deadline
    t0 = time.monotonic()
    mux = mux_dial(a)
    sid = mux.open(npwire.encode(npwire.HELLO, version=1))
    check(mux.recv_msg(sid)[0] == npwire.HELLO, "HELLO")
    check(mux.wait(lambda: mux.closed, 5), "a silent peer's connection closed")
    took = time.monotonic() - t0
    check(0.8 <= took < 3, f"closed after {took:.2f} s, login deadline 1 s")
    # The back-off the wrong token earned (from 127.0.0.1) has passed by now.

    # a logged-in peer that lies
    mux, resp = peer_login(a)
    check(resp["status"] == 0, f"an honest PEER login: {resp}")
    base = server_stats(a)
    f = forward(mux, kind=77, host="web.example.com")
    t, m = mux.recv_msg(f)
    check(t == npwire.FORWARD and m["status"] == NP_ENOPROXY and mux.ended(f),
          f"an unknown kind: refused ({m}), the stream ended")
    f = forward(mux, host="web.example.com", extra=b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
    check(mux.ended(f) and mux.streams[f].data == b"", "visitor bytes before the answer: stream reset")
    f = mux.open()
    whole = npwire.encode(npwire.FORWARD, kind=2, text="web.example.com", name="127.0.0.50:1")
    mux.send(f, whole[:len(whole) - 5])
    mux.fin(f)
    check(mux.ended(f) and mux.streams[f].data == b"", "a FORWARD cut short: stream closed")
    f = mux.open()
    mux.send(f, struct.pack(">I", 0x7FFFFFF0) + bytes([npwire.FORWARD]))
    check(mux.ended(f) and mux.streams[f].data == b"", "an oversized FORWARD: stream closed")
    # lying addresses: the visitor is served, its address is not made up
    f = forward(mux, host="web.example.com", visitor="not-an-address", to="nor:this")
    t, m = mux.recv_msg(f)
    check(t == npwire.FORWARD and m["status"] == 0, f"bad addresses: taken ({m})")
    mux.send(f, b"GET /lie HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
    check(mux.ended(f), "answered and closed")
    got, = answers(mux.streams[f].data)
    check(got["path"] == "/lie" and got["xff"] == [], f"served, with no address made up: {got}")
    # a host the owner lacks: the 404 any visitor gets
    f = forward(mux, host="nobody.example.com")
    t, m = mux.recv_msg(f)
    check(m["status"] == 0, f"unknown host taken: {m}")
    mux.send(f, b"GET / HTTP/1.1\r\nHost: nobody.example.com\r\n\r\n")
    check(mux.ended(f) and mux.streams[f].data.startswith(b"HTTP/1.1 404"),
          f"404: {mux.streams[f].data[:40]!r}")
    # a TCP port nobody holds here
    f = forward(mux, kind=0, port=free_port(), host="")
    t, m = mux.recv_msg(f)
    check(t == npwire.FORWARD and m["status"] != 0 and mux.ended(f), f"unheld TCP port: {m}")
    # a UDP flow: datagrams framed both ways; a frame longer than any datagram ends it
    f = forward(mux, kind=1, port=uport)
    t, m = mux.recv_msg(f)
    check(t == npwire.FORWARD and m["status"] == 0, f"a UDP flow taken: {m}")
    mux.send(f, struct.pack(">H", 5) + b"hello")
    check(mux.wait(lambda: len(mux.streams[f].data) >= 2 and len(mux.streams[f].data) >=
                   2 + struct.unpack(">H", mux.streams[f].data[:2])[0], 5), "a datagram back")
    back = mux.streams[f].data[2:]
    check(back.endswith(b"|hello"), f"the service's answer, framed: {back!r}")
    mux.send(f, b"\xff\xff" + b"x" * 16)
    check(mux.ended(f), "a frame longer than any datagram: the flow's stream ended")
    a.wait_line(r"UDP flow \S+ closed: malformed datagram frame from the other server")
    # flows with no known address, up to udp_max_flows (2) and one more: that one is refused
    held = [forward(mux, kind=1, port=uport, visitor=v) for v in ("x", "0.0.0.0:0")]
    for f in held:
        t, m = mux.recv_msg(f)
        check(t == npwire.FORWARD and m["status"] == 0, f"a flow without an address: {m}")
    f = forward(mux, kind=1, port=uport, visitor="neither")
    check(mux.ended(f), "a flow over udp_max_flows: its stream ended")
    for f in held:
        mux.fin(f)
    udp_echo.close()
    # the link lives on: its first stream still answers a ping
    mux.send_msg(1, npwire.PING, id=42)
    t, m = mux.recv_msg(1, answer_pings=False)
    while t == npwire.PING:  # the owner's own heartbeat may come first
        mux.send_msg(1, npwire.PONG, id=m["id"])
        t, m = mux.recv_msg(1, answer_pings=False)
    check(t == npwire.PONG and m["id"] == 42, f"the link's stream answers: {t} {m}")
    st = server_stats(a)
    check(st["peer_visitors"] - base["peer_visitors"] == 6, f"six forwarded visitors taken: {st}")
    check(honest(), "honest visitors served throughout")
    check(a.p.poll() is None, "the owner is up")


class FakeOwner:
    """A server that holds a route in the store and misbehaves when a forwarding server links to
    it: how is one of silent, mute, liar, refuser, garbage, vanisher."""

    def __init__(self, env, tls_dir, how):
        self.how, self.port = how, free_port()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(os.path.join(tls_dir, "server.crt"),
                                 os.path.join(tls_dir, "server.key"))
        self.ls = socket.create_server((LOOP, self.port))
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()
        env.servers.append(self)  # closed with the test's other servers

    def shutdown(self):
        self.ls.close()
        for c in self.conns:
            c.close()

    def server_close(self):
        pass

    def serve(self):
        while True:
            try:
                raw, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(raw)
            threading.Thread(target=self.one, args=(raw,), daemon=True).start()

    def one(self, raw):
        try:
            raw.settimeout(30)
            s = self.ctx.wrap_socket(raw, server_side=True)
            self.conns.append(s)
            if self.how == "garbage":
                s.sendall(os.urandom(512))
            npwire.recv_exact(s, 7)  # MUX{1}
            mux = Mux(s, client=False)
            if self.how == "silent":
                mux.wait(lambda: False, 30)
                return
            mux.wait(lambda: mux.accepted, 10)
            sid = mux.accepted[0]
            mux.recv_msg(sid)  # HELLO
            mux.send_msg(sid, npwire.HELLO, version=1, nonce=os.urandom(32))
            mux.recv_msg(sid)  # PEER: not checked, this owner takes anyone
            mux.send_msg(sid, npwire.LOGIN_RESP, status=0)
            seen = 1
            while mux.wait(lambda: len(mux.accepted) > seen, 30):
                f = mux.accepted[seen]
                seen += 1
                t, m = mux.recv_msg(f)
                if self.how == "liar":
                    mux.send_msg(f, npwire.LOGIN_RESP, status=0)
                elif self.how == "refuser":
                    mux.send_msg(f, npwire.FORWARD, kind=m["kind"], status=NP_ENOPROXY,
                                 text="no such route here")
                elif self.how == "vanisher":
                    s.close()
                    return
                # mute: nothing
        except (OSError, EOFError, ssl.SSLError):
            pass


def test_hostile_owner(env):
    store = redis(env)
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name)
    c = cluster_server(env, store.port, "np-server-c", tls_dir, extra=("--login-timeout", "1s"))
    fakes = {how: FakeOwner(env, tls_dir, how)
             for how in ("silent", "mute", "liar", "refuser", "garbage", "vanisher")}
    for how, fake in fakes.items():
        redis_cli(store.port, "SET", f"{PREFIX}http:{how}.example.com@{LOOP}:{fake.port}", "1",
                  "PX", "600000")
    wait_until(lambda: all(routes(c).get(f"http:{how}.example.com") == f"{LOOP}:{fake.port}"
                           for how, fake in fakes.items()), 5, "c read the fake owners' routes")
    logs = {
        "silent": r"cannot link: no answer to its login",
        "mute": r"not forwarded to \S+: no answer in time",
        "liar": r"not forwarded to \S+: the other server answered with another message",
        "refuser": r"not forwarded to \S+: refused there: no such route here",
        "garbage": r"cannot link: ",
        "vanisher": r"link lost: ",
    }
    for how, fake in fakes.items():
        mark = c.mark()
        t0 = time.monotonic()
        out = curl(c.vport, f"http://{how}.example.com:{c.vport}/", "-o", "/dev/null", "-w",
                   "%{http_code}")
        took = time.monotonic() - t0
        check(out.stdout == b"502", f"{how}: {out.stdout}")
        check(took < 3, f"{how}: answered after {took:.2f} s (deadline 1 s)")
        c.wait_line(rf"peer {LOOP}:{fake.port}: " + logs[how] if "link" in logs[how]
                    else logs[how].replace(r"\S+", re.escape(f"{LOOP}:{fake.port}")), after=mark)
    st = server_stats(c)
    check(st["peer_forward_failed"] == len(fakes) and st["peer_forwarded"] == 0, f"counters: {st}")
    out = subprocess.run(["curl", "-sS", f"http://{LOOP}:{c.admin}/healthz"], capture_output=True,
                         timeout=20)
    check(out.returncode == 0 and c.p.poll() is None, "the forwarding server is up")


TESTS = {
    "peer_hostile_forwarder": test_hostile_forwarder,
    "peer_hostile_owner": test_hostile_owner,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
