#!/usr/bin/env python3
"""TLS between the real tools: whose certificate a client trusts (a pinned fingerprint, a CA, the
system store), client certificates, and every mismatch of TLS and clear text ending at once with
exit status 4 and a log line that says what to do."""

import os
import re
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from nptest import (CLIENT, LOOP, TLS, Greeter, Proc, check, greet,  # noqa: E402
                    proxy_ports, run)

EXIT_TLS = 4



def client_exits(env, srv, *args, timeout=3):
    """Run np-client against srv and expect it to give up: (exit status, seconds, stderr)."""
    t0 = time.monotonic()
    p = Proc(env, "np-client", [CLIENT, "--server", f"{LOOP}:{srv.port}", "--token", "s3cret",
                                "--reconnect-max", "1s", "-R", f"{LOOP}:0:{LOOP}:1", *args])
    code = p.wait_exit(timeout)
    took = time.monotonic() - t0
    return code, took, "\n".join(t for s, t in p.lines if s == "stderr")


def test_pinned_fingerprint_mismatch(env):
    srv = env.server("--token", "s3cret")
    wrong = "sha256:" + ":".join(["00"] * 32)
    code, took, err = client_exits(env, srv, "--server-fingerprint", wrong)
    check(code == EXIT_TLS, f"exit {code}")
    check(took < 2, f"gave up after {took:.2f}s")
    check(srv.fingerprint in err and wrong in err, f"both fingerprints named: {err}")
    srv.wait_line(r"the client does not trust this server's certificate")


def test_unpinned_self_signed(env):
    """No fingerprint: the system store does not know a self-signed server, and the error says which
    fingerprint to pin after checking it against the server's log."""
    srv = env.server("--token", "s3cret")
    code, took, err = client_exits(env, srv, "--tls-ca", "system")
    check(code == EXIT_TLS and took < 2, f"exit {code} after {took:.2f}s")
    check(f"pass --server-fingerprint {srv.fingerprint}" in err, f"advice: {err}")


def test_plaintext_client_tls_server(env):
    srv = env.server("--token", "s3cret")
    for mux in ("true", "false"):
        mark = srv.mark()
        code, took, err = client_exits(env, srv, "--insecure", "--mux", mux)
        check(code == EXIT_TLS and took < 1.5, f"mux {mux}: exit {code} after {took:.2f}s")
        check("requires TLS" in err, f"mux {mux}: {err}")
        srv.wait_line(r"plaintext connection to the TLS port", after=mark)


def test_tls_client_plaintext_server(env):
    srv = env.server("--token", "s3cret", "--insecure")
    pinned = ["--server-fingerprint", "sha256:" + ":".join(["AB"] * 32)]
    for mux in ("true", "false"):
        mark = srv.mark()
        code, took, err = client_exits(env, srv, "--mux", mux, *pinned)
        check(code == EXIT_TLS and took < 1.5, f"mux {mux}: exit {code} after {took:.2f}s")
        check("does not speak TLS" in err, f"mux {mux}: {err}")
        srv.wait_line(r"TLS client, but this server runs with --insecure", after=mark)


def test_handshake_reset_names_the_peer(env):
    """A peer that resets in the middle of its handshake is named in the log line that says so (the
    address is kept from accept: getpeername no longer answers after a reset, and the line used to
    say "?")."""
    srv = env.server("--token", "s3cret")
    s = socket.create_connection((LOOP, srv.port), timeout=5)
    me = f"{LOOP}:{s.getsockname()[1]}"
    s.sendall(bytes([0x16, 3, 1, 0, 200]) + b"\x01" * 10)  # a ClientHello record, cut short
    srv.wait_line(rf"connection from {re.escape(me)}$")
    time.sleep(0.2)  # let the server read the partial record and wait for the rest
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # linger 0: RST
    if TLS:
        srv.wait_line(rf"warn +{re.escape(me)}: connection reset by peer during the TLS handshake$")
    else:  # a server in clear refuses a TLS client at its first byte, before the reset
        srv.wait_line(rf"{re.escape(me)}: TLS client, but this server runs with --insecure")
    check(srv.count(r"\?: ") == 0, "no peer logged as '?'")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(d):
    """A CA, a server certificate for "localhost" and a client certificate, all signed by the CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj",
            "/CN=test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
                cwd=d)
    return {k: os.path.join(d, k) for k in ("ca.crt", "server.crt", "server.key", "client.crt",
                                           "client.key")}


def test_ca_and_client_certificates(env):
    """A CA-signed server is trusted through --tls-ca for its name; with --tls-client-ca the server
    admits only clients with a certificate from that CA."""
    f = make_ca(env.tmp.name)
    greeter = env.service(Greeter)
    srv = env.server("--token", "s3cret", "--tls-cert", f["server.crt"], "--tls-key", f["server.key"],
                     "--tls-client-ca", f["ca.crt"])
    # By address, naming the host the certificate must carry (no resolver needed for "localhost").
    base = [CLIENT, "--server", f"{LOOP}:{srv.port}", "--token", "s3cret", "--reconnect-max",
            "1s", "--tls-ca", f["ca.crt"], "-R", f"{LOOP}:0:{LOOP}:{greeter}"]
    # Right CA, wrong name: refused for good.
    bad = Proc(env, "wrong-name", base + ["--tls-server-name", "elsewhere.example"])
    base += ["--tls-server-name", "localhost"]
    check(bad.wait_exit(3) == EXIT_TLS, "a certificate for another name is not trusted")
    # Right CA and name, but no client certificate: the server ends the handshake; no port.
    mark = srv.mark()
    anon = Proc(env, "no-cert", base)
    srv.wait_line(r"TLS handshake failed: .*certificate", after=mark)
    check(anon.count(r"public port") == 0, "no port without a client certificate")
    anon.signal(15)
    # Everything right: served.
    cl = Proc(env, "np-client", base + ["--tls-cert", f["client.crt"], "--tls-key", f["client.key"]])
    (port,) = proxy_ports(cl).values()
    check(greet(port, b"mtls") == b"you are mtls\n", "served through mutual TLS")


TESTS = {f.__name__[5:]: f for f in [
    test_pinned_fingerprint_mismatch, test_unpinned_self_signed, test_plaintext_client_tls_server,
    test_tls_client_plaintext_server, test_handshake_reset_names_the_peer,
    test_ca_and_client_certificates,
]}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
