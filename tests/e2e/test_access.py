#!/usr/bin/env python3
"""Who may do what: the users file (per-client tokens, ports and proxy counts, reread on SIGHUP),
the failed-login back-off, and visitor allow lists (allow_ips)."""

import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from nptest import (LOOP, Greeter, check, greet, low_free_ports, port_closed,  # noqa: E402
                    proxy_ports, recv_all, run, server_stats, wait_until)

NP_EBACKOFF = -7021
EXIT_AUTH = 3


def users_file(env, text):
    path = os.path.join(env.tmp.name, "users.ini")
    with open(path + ".new", "w") as f:
        f.write(text)
    os.chmod(path + ".new", 0o600)
    os.replace(path + ".new", path)  # atomically, as an admin's editor would
    return path


def login_status(srv, name, token, source=None):
    return npwire.Client(srv, name=name, token=token, source=source).login


def test_users_file_and_reload(env):
    svc = env.service(Greeter)
    p_alice, p_denied, p_other = low_free_ports(3)
    path = users_file(env, f"""; clients and what each may open
[alice]
token = alice-secret
allow_ports = {p_alice}
[bob]
token = bob-secret
max_proxies = 1
""")
    srv = env.server("--users-file", path, "--login-backoff", "0")
    srv.wait_line(r"users file .*: 2 clients")
    # alice: her port opens, one outside her list is refused with a reason
    alice = env.client(srv, "--name", "alice", "-R", f"{LOOP}:{p_alice}:{LOOP}:{svc}",
                       "-R", f"{LOOP}:{p_denied}:{LOOP}:{svc}", token="alice-secret", wait=False,
                       name="alice")
    alice.wait_line(rf"refused by the server: port {p_denied} is outside the ports client "
                    rf"'alice' may open")
    alice.wait_line(rf"proxy tcp-{p_alice}: public port {p_alice}")
    check(greet(p_alice, b"alice") == b"you are alice\n", "alice's tunnel carries data")
    # bob: one proxy at most
    bob = env.client(srv, "--name", "bob", "-R", f"{LOOP}:0:{LOOP}:{svc}", "-R",
                     f"{LOOP}:{p_other}:{LOOP}:{svc}", token="bob-secret", wait=False, name="bob")
    bob.wait_line(r"refused by the server: at most 1 proxy for client 'bob'")
    # wrong token, or a name the file does not list: refused, and the tool exits 3
    for name, token in (("alice", "bob-secret"), ("mallory", "alice-secret"), ("mallory", "")):
        cl = env.client(srv, "--name", name, "-R", f"{LOOP}:0:{LOOP}:{svc}", token=token,
                        wait=False, name=f"{name}-{token}")
        check(cl.wait_exit() == EXIT_AUTH, f"{name} with token '{token}' exits {EXIT_AUTH}")
    srv.wait_line(r"login as 'mallory' refused: no such client in the users file")
    srv.wait_line(r"login as 'alice' refused: wrong token")

    # SIGHUP: alice gets a new token, bob leaves, carol arrives; the sessions whose credentials
    # went are closed at once, and their clients give up at the next login
    mark = srv.mark()
    users_file(env, f"""[alice]
token = alice-new
allow_ports = {p_alice}
[carol]
token = carol-secret
""")
    srv.signal(signal.SIGHUP)
    srv.wait_line(r"users file .*: 2 clients", after=mark)
    srv.wait_line(r"client alice: new token in the users file, closing its session", after=mark)
    srv.wait_line(r"client bob: no longer in the users file, closing its session", after=mark)
    check(alice.wait_exit() == EXIT_AUTH, "alice's old client exits 3")
    check(bob.wait_exit() == EXIT_AUTH, "bob's client exits 3")
    wait_until(lambda: port_closed(p_alice), 5, "alice's old port closed")
    carol = env.client(srv, "--name", "carol", "-R", f"{LOOP}:0:{LOOP}:{svc}",
                       token="carol-secret", name="carol")
    (port,) = carol.ports.values()
    check(greet(port, b"carol") == b"you are carol\n", "carol's tunnel carries data")
    check(login_status(srv, "alice", "alice-new")["status"] == 0, "alice's new token works")

    # A broken file is refused whole: the server keeps the users it had and says where
    mark = srv.mark()
    users_file(env, "[carol]\ntoken = carol-secret\nallow_port = 80\n")
    srv.signal(signal.SIGHUP)
    srv.wait_line(r"users file: .*users.ini:3: \[carol\]: unknown key 'allow_port'", after=mark)
    srv.wait_line(r"reload: keeping the users file read before", after=mark)
    check(greet(port, b"still carol") == b"you are still carol\n", "carol still served")
    check(login_status(srv, "alice", "alice-new")["status"] == 0, "alice still logs in")


def test_shared_token_beside_users_file(env):
    """Names in the users file need their own token; other names the shared one."""
    path = users_file(env, "[alice]\ntoken = alice-secret\n")
    srv = env.server("--users-file", path, "--token", "shared", "--login-backoff", "0")
    srv.wait_line(r"users file .*: 1 client; other names log in with the shared token")
    check(login_status(srv, "zed", "shared")["status"] == 0, "an unlisted name: shared token")
    check(login_status(srv, "alice", "alice-secret")["status"] == 0, "alice: her own token")
    check(login_status(srv, "alice", "shared")["status"] == npwire.NP_EAUTH,
          "alice cannot use the shared token")
    # a server that cannot read its users file does not start, and says why
    bad = env.server("--users-file", os.path.join(env.tmp.name, "missing.ini"), name="bad",
                     wait=False)
    check(bad.wait_exit() == 1, "a missing users file stops the server")
    bad.wait_line(r"users file: .*missing.ini: cannot open: no such file or directory")


def test_login_backoff(env):
    """Three failed logins from an address are free; then each failure doubles the time its logins
    are refused unheard (even with the right token), other addresses unaffected; a success clears
    it."""
    srv = env.server("--token", "s3cret", "--login-backoff", "500ms", "--login-backoff-max", "2s")
    bad = "127.0.0.2"
    for i in range(3):
        check(login_status(srv, "guess", f"guess{i}", source=bad)["status"] == npwire.NP_EAUTH,
              "a wrong token is refused")
    check(login_status(srv, "raw", "s3cret", source=bad)["status"] == 0,
          "the right token still works after three failures")
    # the success cleared the record: three more free failures, then the back-off starts
    for i in range(4):
        login_status(srv, "guess", f"again{i}", source=bad)
    srv.wait_line(r"127\.0\.0\.2:\d+: wrong token; 4 failed logins from this address, its next "
                  r"login is refused unheard for 500ms")
    m = login_status(srv, "raw", "s3cret", source=bad)
    t_refused = time.monotonic()
    check(m["status"] == NP_EBACKOFF and "retry in 1 s" in m["text"] and 0 < m["id"] <= 500,
          f"the right token is refused unheard during the back-off, with the wait in ms: {m}")
    check(login_status(srv, "raw", "s3cret", source="127.0.0.3")["status"] == 0,
          "another address logs in meanwhile")
    srv.wait_line(r"login as 'raw' refused unheard: too many failed logins")
    # the wait ends on its own (the event here is time passing: poll for it, bounded); the next
    # failure doubles it
    t_next = wait_until(lambda: login_status(srv, "guess", "later", source=bad)["status"] ==
                        npwire.NP_EAUTH, 3, "a login heard after the back-off")
    check(t_next - t_refused < 1.5, f"back-off of 500ms lasted {t_next - t_refused:.2f}s")
    srv.wait_line(r"5 failed logins from this address, its next login is refused unheard for "
                  r"1000ms")
    check(login_status(srv, "raw", "s3cret", source=bad)["status"] == NP_EBACKOFF,
          "refused again")
    wait_until(lambda: login_status(srv, "raw", "s3cret", source=bad)["status"] == 0, 3,
               "login after the second back-off")


def test_bare_connects_do_not_count(env):
    """Health checks and port scans (a connect closed without a byte, or reset) are not logins: 15
    of them from one address put nobody into back-off, log no warning, and the next login from that
    address is heard. Garbage where a login belongs still counts."""
    srv = env.server("--token", "s3cret", "--login-backoff", "5s")
    mark = srv.mark()
    for i in range(15):
        s = socket.create_connection((LOOP, srv.port), timeout=5)
        if i % 3 == 0:  # some reset instead of closing
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    wait_until(lambda: srv.count(r"closed the connection before saying anything") >= 15, 10,
               "the server saw the 15 probes end")
    st = server_stats(srv)
    check(st["logins_failed"] == 0, f"probes counted as failed logins: {st}")
    warned = [t for _, t in srv.lines[mark:] if re.match(r"\S+ (warn|error) ", t)]
    check(not warned, f"probes logged warnings: {warned}")
    check(login_status(srv, "raw", "s3cret")["status"] == 0, "the next login is heard")
    # garbage where a login belongs does count (four of them start the back-off)
    for _ in range(4):
        s = socket.create_connection((LOOP, srv.port), timeout=5)
        s.sendall(b"\x16\x03\x01\x00\x05hello" if srv.fingerprint else b"GET / HTTP/1.0\r\n\r\n")
        recv_all(s)
        s.close()
    srv.wait_line(r"4 failed logins from this address, its next login is refused unheard")


def test_client_honours_backoff(env):
    """np-client refused during a back-off waits as long as the server says, then logs in."""
    svc = env.service(Greeter)
    srv = env.server("--token", "s3cret", "--login-backoff", "1500ms")
    for i in range(4):  # from 127.0.0.1, where np-client comes from
        login_status(srv, "guess", f"guess{i}")
    srv.wait_line(r"its next login is refused unheard for 1500ms")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{svc}", "--reconnect-min", "100ms",
                    "--reconnect-max", "200ms", wait=False)
    m = cl.wait_line(r"too many failed logins from your address; retry in 2 s \(NP_EBACKOFF\); "
                     r"retrying in (\d+)ms")
    check(int(m.group(1)) >= 1000, f"the client waited {m.group(1)}ms, not the server's ~1500ms")
    (port,) = proxy_ports(cl).values()
    check(greet(port, b"later") == b"you are later\n", "served after the wait")


def test_allow_ips(env):
    """Visitors from outside a proxy's allow_ips are closed at accept; the rest are served."""
    svc = env.service(Greeter)
    srv = env.server("--token", "s3cret")
    conf = os.path.join(env.tmp.name, "client.ini")
    with open(conf, "w") as f:
        f.write(f"""[client]
allow_ips = 127.0.0.2
[proxy only-three]
local = {LOOP}:{svc}
remote_port = 0
allow_ips = 127.0.0.3/32, 2001:db8::/32
[proxy default]
local = {LOOP}:{svc}
remote_port = 0
""")
    cl = env.client(srv, "-c", conf, wait=False)
    ports = proxy_ports(cl, count=2)
    srv.wait_line(r"proxy only-three listening on .*, visitors only from 127\.0\.0\.3/32, "
                  r"2001:db8::/32")
    for name, allowed in (("only-three", "127.0.0.3"), ("default", "127.0.0.2")):
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            try:  # the reset at accept may even beat the connect's return
                s = socket.create_connection((LOOP, ports[name]), timeout=5,
                                             source_address=(source, 0))
                s.sendall(b"from " + source.encode() + b"\n")
                got = recv_all(s)
                s.close()
            except (ConnectionResetError, BrokenPipeError):
                got = b""
            want = b"you are from " + source.encode() + b"\n" if source == allowed else b""
            check(got == want, f"proxy {name}, visitor from {source}: got {got!r}")
    srv.wait_line(r"proxy only-three: visitor 127\.0\.0\.1:\d+ is outside allow_ips, closed")
    wait_until(lambda: srv.count(r"is outside allow_ips, closed") >= 4, 5, "four refusals logged")
    check(srv.count(r"is outside allow_ips, closed") == 4, "exactly four visitors closed at accept")
    srv.signal(signal.SIGUSR1)  # and counted, for the operator too
    srv.wait_line(r"stats: clients=1 proxies=2 .* visitors_total=6 joined=2 .* denied=4 ")
    # ... per proxy and per client: one visitor let in and two turned away each; each served
    # visitor sent "from 127.0.0.N\n" (15 bytes) and got "you are from 127.0.0.N\n" (23)
    for name in ("only-three", "default"):
        srv.wait_line(rf"stats proxy={name} client=\S+ type=tcp port={ports[name]} visitors=1 "
                      r"denied=2 joined=1 dropped=0 active=\d bytes_in=15 bytes_out=23$")
    srv.wait_line(r"stats client=\S+ addr=127\.0\.0\.1:\d+ proxies=2 visitors=2 denied=4 joined=2 "
                  r"dropped=0 active=\d bytes_in=30 bytes_out=46$")
    # a bad list is the client's configuration error, before it dials
    bad = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{svc}", "--allow-ips", "10.0.0.0/33",
                     wait=False, name="bad")
    check(bad.wait_exit() == 2, "a bad allow_ips is a usage error")
    bad.wait_line(r"--allow-ips: allow_ips: '10.0.0.0/33' has a bad prefix length")


TESTS = {
    "users_file_and_reload": test_users_file_and_reload,
    "shared_token_beside_users_file": test_shared_token_beside_users_file,
    "login_backoff": test_login_backoff,
    "bare_connects_do_not_count": test_bare_connects_do_not_count,
    "client_honours_backoff": test_client_honours_backoff,
    "allow_ips": test_allow_ips,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
