#!/usr/bin/env python3
"""The first five minutes (issue 17): a token kept out of the command line (token_file, NP_TOKEN)
and one np-server makes for you (--gen-token)."""

import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nptest import (CLIENT, LOOP, SERVER, Greeter, Proc, check, greet,  # noqa: E402
                    low_free_ports, proxy_ports, run, wait_until)

EXIT_AUTH = 3
EXIT_USAGE = 2


def secret_file(env, name, text):
    path = os.path.join(env.tmp.name, name)
    with open(path + ".new", "w") as f:
        f.write(text)
    os.chmod(path + ".new", 0o600)
    os.replace(path + ".new", path)
    return path


def client(env, srv, *args, name="np-client", environ=None):
    return Proc(env, name, [CLIENT, "--server", f"{LOOP}:{srv.port}", "--log-level", "debug",
                            "--reconnect-max", "1s", *env.tls_client_args(srv), *args],
                environ=environ)


def cmdline(p):
    with open(f"/proc/{p.p.pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ")


def test_token_file_and_env(env):
    """--gen-token prints one base64url token of 256 bits and says how to use it; --token-file
    and NP_TOKEN log in with it and keep it out of ps; a wrong NP_TOKEN exits 3; an unreadable or
    empty token file is exit 2 with the file named; a reload rereads the token file (a rotated
    token) and closes the session that used the old one."""
    out = subprocess.run([SERVER, "--gen-token"], capture_output=True, text=True, timeout=10)
    token = out.stdout.strip()
    check(out.returncode == 0 and re.fullmatch(r"[A-Za-z0-9_-]{43}", token),
          f"--gen-token: {out.returncode} {out.stdout!r}")
    check("--token-file" in out.stderr and "NP_TOKEN" in out.stderr, f"how to use it: {out.stderr}")
    again = subprocess.run([SERVER, "--gen-token"], capture_output=True, text=True, timeout=10)
    check(again.stdout.strip() != token, "a new token each time")

    path = secret_file(env, "token", token + "\n")
    cfg = secret_file(env, "server.ini", f"[server]\ntoken_file = {path}\n")
    srv = env.server("-c", cfg)
    check(token.encode() not in cmdline(srv), "the token is not on np-server's command line")
    svc = env.service(Greeter)
    a = client(env, srv, "--token-file", path, "--name", "a", "-R", f"{LOOP}:0:{LOOP}:{svc}")
    (port,) = proxy_ports(a).values()
    check(greet(port, b"a") == b"you are a\n", "--token-file logs in")
    check(token.encode() not in cmdline(a), "the token is not on np-client's command line")
    b = client(env, srv, "--name", "b", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="np-client-env",
               environ={"NP_TOKEN": token})
    (port_b,) = proxy_ports(b).values()
    check(greet(port_b, b"b") == b"you are b\n", "NP_TOKEN logs in")
    bad = client(env, srv, "--name", "c", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="np-client-bad",
                 environ={"NP_TOKEN": "wrong"})
    check(bad.wait_exit() == EXIT_AUTH, "a wrong NP_TOKEN exits 3")
    # flags win over the environment
    both = client(env, srv, "--token-file", path, "--name", "d", "-R", f"{LOOP}:0:{LOOP}:{svc}",
                  name="np-client-both", environ={"NP_TOKEN": "wrong"})
    proxy_ports(both)

    missing = client(env, srv, "--token-file", os.path.join(env.tmp.name, "nope"), "-R",
                     f"{LOOP}:0:{LOOP}:{svc}", name="np-client-missing")
    check(missing.wait_exit() == EXIT_USAGE, "a missing token file: exit 2")
    missing.wait_line(r"--token-file: token_file: cannot read .*nope: No such file or directory")
    empty = secret_file(env, "empty", "\n")
    e = client(env, srv, "--token-file", empty, "-R", f"{LOOP}:0:{LOOP}:{svc}",
               name="np-client-empty")
    check(e.wait_exit() == EXIT_USAGE, "an empty token file: exit 2")
    e.wait_line(r"holds no token on its first line")

    # rotation: the file changes, a reload reads it, the old token's sessions go
    mark = srv.mark()
    secret_file(env, "token", "n3w-t0ken\n")
    srv.signal(signal.SIGHUP)
    srv.wait_line(r"reload: token changed; in effect for new work", after=mark)
    srv.wait_line(r"client a: the shared token changed, closing its session", after=mark)
    check(a.wait_exit() == EXIT_AUTH, "the old token's client exits 3")
    fresh = client(env, srv, "--name", "e", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="np-client-new",
                   environ={"NP_TOKEN": "n3w-t0ken"})
    proxy_ports(fresh)


def test_every_proxy_refused(env):
    """A client whose every proxy the server refuses at its first login gives up with exit 6 and
    the server's reason; one with a proxy served keeps running."""
    srv = env.server("--token", "s3cret", "--allow-ports", "1-1023")
    svc = env.service(Greeter)
    cl = client(env, srv, "--token", "s3cret", "-R", f"{LOOP}:40123:{LOOP}:{svc}")
    check(cl.wait_exit() == 6, "every proxy refused: exit 6")
    cl.wait_line(r"giving up: the server refused every proxy \(tcp-40123: port 40123 is outside "
                 r"the server's allow_ports\)")


def test_name_that_does_not_resolve(env):
    """A server name that does not resolve is a warning once, then retried at the back-off at debug
    level. In a network namespace of its own (unshare -rn): no name server is ever asked."""
    if os.environ.get("NP_FIRST_NETNS") != "1":
        try:
            subprocess.run(["unshare", "-rn", "true"], check=True, timeout=10, capture_output=True)
        except (OSError, subprocess.SubprocessError):
            print("skip: no unshare -rn here")
            return
        out = subprocess.run(["unshare", "-rn", sys.executable, os.path.abspath(__file__),
                              "name_that_does_not_resolve"],
                             env={**os.environ, "NP_FIRST_NETNS": "1"}, capture_output=True,
                             text=True, timeout=100)
        sys.stderr.write(out.stderr)
        check(out.returncode == 0, "in its namespace: " + out.stdout.strip())
        return
    cl = Proc(env, "np-client", [CLIENT, "--server", "np-test.invalid:7000", "--token", "x",
                                 "--insecure", "--log-level", "debug", "--reconnect-min", "50ms",
                                 "--reconnect-max", "100ms", "-R", f"{LOOP}:0:{LOOP}:9"])
    wait_until(lambda: cl.count(r"debug +cannot resolve the server's name np-test\.invalid") >= 3,
               15, "three more failures, at debug level")
    check(cl.count(r"warn +cannot resolve the server's name np-test\.invalid:7000: .*check "
                   r"--server") == 1, "one warning")
    check(cl.p.poll() is None, "still retrying")


def tofu_client(env, srv, known, *args, name="np-client"):
    return Proc(env, name, [CLIENT, "--server", f"{LOOP}:{srv.port}", "--token", "s3cret",
                            "--log-level", "debug", "--reconnect-max", "1s",
                            "--known-servers", known, *args])


def test_trust_on_first_use(env):
    """--trust-on-first-use: the first connection records the server's fingerprint and says so
    once; the next ones check it (without the flag too: a known_servers line pins); a server with
    another key on the same address is refused with both fingerprints and the file's line (exit
    4); without TOFU and without a line, the CA decides and the error suggests TOFU."""
    if os.environ.get("NP_E2E_TLS") == "0":
        print("skip: TLS is off in this variant")
        return
    svc = env.service(Greeter)
    known = os.path.join(env.tmp.name, "state", "known_servers")
    srv = env.server("--token", "s3cret")
    a = tofu_client(env, srv, known, "--trust-on-first-use", "-R", f"{LOOP}:0:{LOOP}:{svc}")
    (port,) = proxy_ports(a).values()
    a.wait_line(rf"trusting {LOOP}:{srv.port} on first use: its certificate is "
                rf"{re.escape(srv.fingerprint)}; recorded in {re.escape(known)}:1")
    check(greet(port, b"a") == b"you are a\n", "the tunnel works")
    with open(known) as f:
        check(f.read() == f"{LOOP}:{srv.port} {srv.fingerprint}\n", "the line recorded")
    check(os.stat(known).st_mode & 0o777 == 0o600, "known_servers is 0600")
    check(os.stat(os.path.dirname(known)).st_mode & 0o777 == 0o700, "its directory is 0700")
    a.signal(signal.SIGINT)
    a.wait_exit()
    b = tofu_client(env, srv, known, "-R", f"{LOOP}:0:{LOOP}:{svc}", name="np-client-known")
    proxy_ports(b)
    check(b.count(r"trusting .* on first use") == 0, "a known server is not announced again")
    b.signal(signal.SIGINT)
    b.wait_exit()

    # the same address, another key: refused, and the message says what to do
    port_was = srv.port
    srv.signal(signal.SIGINT)
    srv.wait_exit()
    other = env.server("--token", "s3cret", bind=f"{LOOP}:{port_was}", name="np-server-other")
    c = tofu_client(env, other, known, "--trust-on-first-use", "-R", f"{LOOP}:0:{LOOP}:{svc}",
                    name="np-client-changed")
    check(c.wait_exit() == 4, "a changed key: exit 4")
    c.wait_line(rf"the server's certificate is {re.escape(other.fingerprint)}, but "
                rf"{re.escape(known)}:1 records {re.escape(srv.fingerprint)} for {LOOP}:{port_was}: "
                rf"if the server's certificate was replaced on purpose, delete line 1 of")
    # no line and no TOFU: the CA (the system's) decides, and the error points at TOFU
    d = tofu_client(env, other, os.path.join(env.tmp.name, "none"), "-R",
                    f"{LOOP}:0:{LOOP}:{svc}", name="np-client-ca")
    check(d.wait_exit() == 4, "an unknown self-signed server without TOFU: exit 4")
    d.wait_line(r"--trust-on-first-use")
    bad = tofu_client(env, other, known, "--trust-on-first-use", "--server-fingerprint",
                      other.fingerprint, "-R", f"{LOOP}:0:{LOOP}:{svc}", name="np-client-both")
    check(bad.wait_exit() == 2, "TOFU and a pin: exit 2")
    # a known_servers that cannot be read, or a first use that cannot be recorded, is refused: an
    # unrecorded certificate would be trusted as new at every connection
    for i, (where, why) in enumerate(((env.tmp.name, r"cannot read .*: illegal operation on a directory"),
                                      ("/proc/np-test-known-servers",
                                       r"trust on first use cannot record it in /proc/"))):
        e = tofu_client(env, other, where, "--trust-on-first-use", "-R", f"{LOOP}:0:{LOOP}:{svc}",
                        name=f"np-client-unrecorded-{i}")
        check(e.wait_exit() == 4, f"{where}: exit 4")
        e.wait_line(why)


def test_one_line_client(env):
    """np-client HOST:PORT LOCAL_PORT (and --to HOST:PORT LOCAL_PORT), the token from the
    environment: one TCP proxy on a port the server picks, printed as "listening at HOST:PORT"."""
    srv = env.server("--token", "s3cret")
    svc = env.service(Greeter)
    for name, argv in (("np-client-1", [f"{LOOP}:{srv.port}", str(svc)]),
                       ("np-client-to", ["--to", f"{LOOP}:{srv.port}", f"{LOOP}:{svc}",
                                         "--name", "second"])):
        cl = Proc(env, name, [CLIENT, *argv, *env.tls_client_args(srv)],
                  environ={"NP_TOKEN": "s3cret"})
        m = cl.wait_line(rf"^listening at {LOOP}:(\d+)$", stream="stdout")
        port = int(m.group(1))
        check(port > 0 and greet(port, name.encode()) == b"you are " + name.encode() + b"\n",
              f"{name}: the printed address serves")
    bad = Proc(env, "np-client-bad", [CLIENT, "a", "b", "c"])
    check(bad.wait_exit() == EXIT_USAGE, "three arguments: exit 2")
    bad.wait_line(r"too many arguments")


def test_stable_port_zero(env):
    """A port-0 proxy gets the same public port when its client comes back, and after the server's
    restart (remembered in the state directory); another client's port-0 proxy gets another."""
    svc = env.service(Greeter)
    tls_dir = None if os.environ.get("NP_E2E_TLS") == "0" else os.path.join(env.tmp.name, "tls")
    srv = env.server("--token", "s3cret", tls_dir=tls_dir)
    a = env.client(srv, "--name", "alpha", "-R", f"{LOOP}:0:{LOOP}:{svc}")
    (port,) = a.ports.values()
    a.signal(signal.SIGINT)
    a.wait_exit()
    again = env.client(srv, "--name", "alpha", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="np-client-2")
    check(list(again.ports.values()) == [port], f"the client came back to port {port}: "
          f"{again.ports}")
    # the server restarts: the ports file in its state directory brings the port back
    control = srv.port
    srv.signal(signal.SIGINT)
    check(srv.wait_exit() == 0, "the server stopped")
    state = os.path.join(tls_dir or env.state_dir, "ports")
    with open(state) as f:
        text = f.read()
    check(re.search(rf"^alpha\t\S+\t{port}$", text, re.M), f"the port is in {state}: {text}")
    mark = again.mark()
    srv2 = env.server("--token", "s3cret", bind=f"{LOOP}:{control}", tls_dir=tls_dir,
                      name="np-server-2")
    srv2.wait_line(r"remembered ports: 1 from ")
    check(list(proxy_ports(again, after=mark).values()) == [port],
          "the same port after the server's restart")
    check(greet(port, b"back") == b"you are back\n", "and it serves")
    # another client asking for port 0 does not take it; without memory a new port is picked
    b = env.client(srv2, "--name", "beta", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="np-client-beta")
    check(list(b.ports.values()) != [port], "beta gets another port")


def test_try_examples(env):
    """docs/examples/try-server.ini and try-client.ini run as written: a first try on one machine
    needs nothing edited. Only their fixed ports are moved to free ones, so this test cannot meet
    another program on 7000; the token comes from NP_TOKEN, as the files say."""
    examples = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                            "examples")
    control, public = low_free_ports(2)
    svc = env.service(Greeter)
    moves = {"127.0.0.1:7000": f"127.0.0.1:{control}", "6000-6100": f"{public}-{public}",
             "remote_port = 6080": f"remote_port = {public}", "127.0.0.1:8000": f"127.0.0.1:{svc}"}
    files = {}
    for which in ("try-server.ini", "try-client.ini"):
        with open(os.path.join(examples, which)) as f:
            text = f.read()
        for a, b in moves.items():
            text = text.replace(a, b)
        files[which] = secret_file(env, which, text)
    token = subprocess.run([SERVER, "--gen-token"], capture_output=True, text=True,
                           timeout=10).stdout.strip()
    srv = Proc(env, "np-server", [SERVER, "-c", files["try-server.ini"]],
               environ={"NP_TOKEN": token})
    srv.wait_line(rf"listening on 127\.0\.0\.1:{control}\b")
    cl = Proc(env, "np-client", [CLIENT, "-c", files["try-client.ini"]],
              environ={"NP_TOKEN": token})
    check(proxy_ports(cl) == {"web": public}, f"proxy web on port {public}")
    cl.wait_line(r"trusting .* on first use")
    check(greet(public, b"a first try") == b"you are a first try\n", "the service answers")


TESTS = {
    "token_file_and_env": test_token_file_and_env,
    "every_proxy_refused": test_every_proxy_refused,
    "name_that_does_not_resolve": test_name_that_does_not_resolve,
    "trust_on_first_use": test_trust_on_first_use,
    "one_line_client": test_one_line_client,
    "stable_port_zero": test_stable_port_zero,
    "try_examples": test_try_examples,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
