#!/usr/bin/env python3
"""The README's tool examples, run as written (issue 17).

The README is read at test time (NP_README names another copy): the ```sh blocks of every section
that runs np-server or np-client are run line by line with /bin/sh, in README order, with only the
substitutions a reader makes on their own machines (SUBSTITUTIONS below: addresses, ports, paths,
secrets). Nothing of the README is copied here, so an edited README whose commands no longer work
fails this test. What the commands do is checked byte for byte: data through every public port
against the local service's own answer, the one-line form's "listening at HOST:PORT", trust on first
use's known_servers line, and the fingerprint the README's `np-server --fingerprint` prints.

Two machines are modelled in the test's temp dir: the public host (its /etc/natproxy, home and state
directory) and, for each client block, a fresh private machine (home, state directory): the blocks
are alternatives ("or, ..."), each tried as a first-time reader would.

When it can, the test runs in a network namespace of its own (unshare -rn, loopback only), where
`--bind :7000` (every IPv4 address) and public ports on 0.0.0.0 reach nothing but the loopback, as
the README writes them. Elsewhere the server's addresses become 127.0.0.1 (the fallback rows of the
table)."""

import os
import re
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nptest import (CLIENT, LOOP, SANITIZED, SERVER, WRAP, Fail, Proc, check,  # noqa: E402
                    pattern, recv_all, run)

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", ".."))
README = os.environ.get("NP_README") or os.path.join(SRC, "README.md")
IN_NETNS = os.environ.get("NP_README_NETNS") == "1"
TIMEOUT = 60 if WRAP else 15  # one event (a log line, a port), or one short command
TOOLS = ("np-server", "np-client")
# Flags that make a tool print something and exit rather than run.
ONE_SHOT = {"np-server": {"--gen-token", "--fingerprint", "--help", "-h", "--version", "-V"},
            "np-client": {"--help", "-h", "--version", "-V"}}
# np-client flags that take no value (the others take the next word).
NO_VALUE = {"--trust-on-first-use", "--takeover", "--insecure"}
TOKEN_RE = r"[A-Za-z0-9_-]{43}"  # np-server --gen-token: 256 bits, base64url

# Sections whose ```sh blocks are not run, and why. Sections not listed here run every block that
# calls np-server or np-client; blocks that call neither are listed as not run.
SKIPPED_SECTIONS = {
    "Running under systemd":
        "its commands need systemd as PID 1 and root (systemd-sysusers, systemctl, journalctl, "
        "install -o natproxy): the units are checked by tests/check-units.sh and "
        "tests/install/check-install.sh instead",
    "Quick start": "./scripts/demo and ./scripts/test install packages and run the whole suite",
    "Building by hand": "the build itself (meson, ninja): what this test runs on",
}


def hosts_name_localhost():
    """Whether /etc/hosts names localhost (read, never resolved: a debootstrap chroot has no
    /etc/hosts, and a test never asks a name server)."""
    try:
        with open("/etc/hosts") as f:
            return any(not line.startswith("#") and re.search(r"\blocalhost\b", line)
                       for line in f)
    except OSError:
        return False


# The only changes made to the README's commands, in one table: (regex, replacement, why). The
# replacement is a function of the run's context (ctx) and of where the text goes: "cmd" for a
# command, "out" for what the README says a tool prints. All rows are applied in one pass, so a
# replacement is never rewritten by another row (a fingerprint holding ":80:", a path with "22").
SUBSTITUTIONS = [
    (r"tunnel\.example\.org(?::7000)?",
     lambda c, where: LOOP if where == "out" else f"{LOOP}:{c.ctrl}",
     "the public host's name: ours is 127.0.0.1, and its control port is not 7000 (so the port is "
     "named; in what np-client prints, the host alone)"),
    (r"(?<=--bind ):(?=7000\b)", lambda c, where: ":" if IN_NETNS else f"{LOOP}:",
     "--bind :PORT is every IPv4 address: kept in a network namespace of our own (only the "
     "loopback there), 127.0.0.1 outside one"),
    (r"\b7000\b", lambda c, where: str(c.ctrl), "the control port: a free one"),
    (r"\b6000\b", lambda c, where: str(c.lo), "the first public port: a free one"),
    (r"\b6100\b", lambda c, where: str(c.hi), "the last public port: 100 above it"),
    (r"(?<=:)80\b", lambda c, where: str(c.svc["http"].port),
     "the private web server on port 80: the test's own, on a free port"),
    (r"(?<=:)22\b", lambda c, where: str(c.svc["ssh"].port),
     "the private ssh on port 22: the test's echo service (an ssh-like banner, then each byte "
     "back), on a free port"),
    (r"\b8000\b", lambda c, where: str(c.svc["dev"].port),
     "the private service on port 8000: the test's second web server, on a free port"),
    (r"\blocalhost\b", lambda c, where: "localhost" if c.hosts_localhost else LOOP,
     "only where /etc/hosts does not name localhost (a debootstrap chroot): 127.0.0.1, since a "
     "test never asks a name server"),
    (r"/etc/natproxy\b", lambda c, where: os.path.join(c.public.root, "etc", "natproxy"),
     "the public host's /etc/natproxy: the test's (its /etc exists, /etc/natproxy does not, as on "
     "a fresh machine)"),
    (r"NP_TOKEN=\.\.\.", lambda c, where: f"NP_TOKEN={c.need('token')}",
     "the token: the one the README's np-server --gen-token made"),
    (r"sha256:[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*:\.\.\.(?::[0-9A-Fa-f]{2})*",
     lambda c, where: c.need("fingerprint"),
     "the server's fingerprint: what the README's `np-server --fingerprint` printed"),
]
# Made in the environment rather than in the text.
ENVIRONMENT = [
    ("np-server, np-client", "the build's (NP_SERVER, NP_CLIENT), first on PATH, under NP_WRAP "
     "(valgrind) when it is set"),
    ("HOME", "each machine's home in the temp dir: ~/.natproxy-token is the private machine's"),
    ("STATE_DIRECTORY", "each machine's state directory in the temp dir (the e2e harness's rule): "
     "the server's TLS identity, the client's known_servers (which the README places in "
     "~/.local/state/natproxy, a user's who is not root)"),
    ("the token file", "a private machine gets a copy of the public host's token file where its "
     "commands' --token-file names it, as the reader copies it over"),
    ("long-running commands", "run with `exec` before the tool (after any VAR=value), so the test "
     "signals the tool itself; stopped with SIGINT once checked"),
]
FALLBACK_ONLY = ("without a network namespace: --proxy-bind-addr 127.0.0.1 is added to the "
                 "server's command (public ports would listen on every address)")


class Machine:
    """One machine of the README's: a root with etc/, home/ and state/."""

    def __init__(self, ctx, name):
        self.root = os.path.join(ctx.env.tmp.name, name)
        self.home = os.path.join(self.root, "home")
        self.state = os.path.join(self.root, "state")
        for d in ("etc", "home"):
            os.makedirs(os.path.join(self.root, d))
        self.environ = {"PATH": ctx.bin + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
                        "HOME": self.home, "STATE_DIRECTORY": self.state,
                        "NP_TOKEN": ""}  # the README's NP_TOKEN=... only, never the caller's

    def expand(self, word):
        return self.home + word[1:] if word == "~" or word.startswith("~/") else word


class Service:
    """A private service on 127.0.0.1: port, and probe(port) -> the bytes it answers through port
    (the same probe, sent to the service itself, gives the bytes expected)."""

    def __init__(self, env, kind, seed):
        self.kind = kind
        if kind == "echo":
            banner = b"SSH-2.0-np-readme-test\r\n"

            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    self.request.sendall(banner)
                    while True:
                        b = self.request.recv(1 << 16)
                        if not b:
                            return
                        self.request.sendall(b)
            self.data = pattern(96 * 1024, seed)
        else:
            body = pattern(256 * 1024, seed)
            answer = (b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body)) + body

            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 8192:
                        b = self.request.recv(4096)
                        if not b:
                            return
                        head += b
                    self.request.sendall(answer)
        self.port = env.service(Handler)

    def probe(self, port):
        s = socket.create_connection((LOOP, port), timeout=TIMEOUT)
        s.settimeout(TIMEOUT)
        if self.kind == "echo":
            # Sent from a thread: the echo answers while we send, and both directions must move.
            def send():
                s.sendall(self.data)
                s.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=send, daemon=True)
            t.start()
            got = recv_all(s)
            t.join(TIMEOUT)
        else:
            s.sendall(b"GET / HTTP/1.0\r\nHost: readme\r\n\r\n")
            got = recv_all(s)
        s.close()
        return got


class Ctx:
    def __init__(self, env):
        self.env = env
        self.hosts_localhost = hosts_name_localhost()
        self.bin = os.path.join(env.tmp.name, "bin")
        os.makedirs(self.bin)
        for name, path in (("np-server", SERVER), ("np-client", CLIENT)):
            with open(os.path.join(self.bin, name), "w") as f:
                f.write("#!/bin/sh\nexec " + " ".join(shlex.quote(w) for w in
                                                      [*WRAP, os.path.abspath(path)]) + ' "$@"\n')
            os.chmod(os.path.join(self.bin, name), 0o755)
        self.ctrl, self.lo, self.hi = free_port_block()
        self.svc = {"http": Service(env, "http", 80), "ssh": Service(env, "echo", 22),
                    "dev": Service(env, "http", 8000)}
        self.public = Machine(self, "public")
        self.privates = 0
        self.values = {}  # token, fingerprint: known once the README's commands made them
        self.server = None
        self.covered = []
        rows = [f"(?P<r{i}>{rx})" for i, (rx, _, _) in enumerate(SUBSTITUTIONS)]
        self.rx = re.compile("|".join(rows))

    def need(self, what):
        if what not in self.values:
            raise Fail(f"the README uses the {what} before a command of its made it")
        return self.values[what]

    def subst(self, text, where="cmd"):
        return self.rx.sub(lambda m: SUBSTITUTIONS[int(m.lastgroup[1:])][1](self, where), text)

    def table(self):
        out = ["substitutions (README -> this run):"]
        for rx, f, why in SUBSTITUTIONS:
            try:
                value = f(self, "cmd")
            except Fail:
                value = "(once made)"
            out.append(f"  /{rx}/ -> \"{value}\": {why}")
        out += [f"  {what}: {why}" for what, why in ENVIRONMENT]
        if not IN_NETNS:
            out.append(f"  {FALLBACK_ONLY}")
        return "\n".join(out)

    def private(self):
        self.privates += 1
        return Machine(self, f"private-{self.privates}")


def free_port_block():
    """A control port and a range of 101 public ports after it, all free (TCP and UDP: the
    datagram path binds the control port's number in UDP), below the ephemeral range."""
    start = 20000 + (os.getpid() * 13) % 10000
    for base in range(start, 32000 - 102, 7):
        ok = True
        for port in range(base, base + 102):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                try:
                    s.bind(("0.0.0.0" if IN_NETNS else LOOP, port))
                except OSError:
                    ok = False
                finally:
                    s.close()
                if not ok:
                    break
            if not ok:
                break
        if ok:
            return base, base + 1, base + 101
    raise Fail("no block of 102 free ports below 32000")


def sections(text):
    """The README's sections (# and ## headings): [(title, prose, [(lang, code, line)])]."""
    out = [["(top)", [], []]]
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        if fence is None:
            m = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", line)
            if m:
                fence = (m.group(1), m.group(2), n, [])
                continue
            h = re.match(r"^#{1,2}\s+(.*?)\s*$", line)
            if h:
                out.append([h.group(1), [], []])
            else:
                out[-1][1].append(line)
        elif line.strip().startswith(fence[0]) and not line.strip().strip(fence[0][0]):
            out[-1][2].append((fence[1], "\n".join(fence[3]), fence[2]))
            fence = None
        else:
            fence[3].append(line)
    if fence is not None:
        raise Fail(f"README: the code block at line {fence[2]} is not closed")
    return [(t, "\n".join(p), b) for t, p, b in out]


def commands(code, first):
    """A sh block's commands with their README line numbers (the block's first line is first):
    continuation lines joined, blank and comment lines left out."""
    out, acc, at = [], "", None
    for n, line in enumerate(code.splitlines(), first):
        at = n if at is None else at
        if line.endswith("\\"):
            acc += line[:-1]  # as sh reads it: the backslash and the newline go, nothing else
            continue
        text = (acc + line).strip()
        if text and not text.startswith("#"):
            out.append((at, text))
        acc, at = "", None
    return out


def simple_commands(line):
    """[(assignments, program, args, redirected)] of a line, split at sh's operators."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out, words, redirected, skip = [], [], False, False
    for tok in list(lex) + [";"]:
        if skip:
            skip = False
            continue
        if tok in (">", ">>", "<", "2>", ">|"):
            redirected, skip = True, True
            continue
        if tok and set(tok) <= set("();<>|&"):
            assign = {}
            while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
                k, v = words.pop(0).split("=", 1)
                assign[k] = v
            if words:
                out.append((assign, words[0], words[1:], redirected))
            words, redirected = [], False
            continue
        words.append(tok)
    return out


def is_tool_line(line):
    return any(prog in TOOLS for _, prog, _, _ in simple_commands(line))


def long_running(line):
    """The program (np-server or np-client) of a line that starts one that keeps running."""
    cmds = simple_commands(line)
    if len(cmds) != 1 or re.search(r"[;&|()<>]", re.sub(r"#.*", "", line)):
        return None
    _, prog, args, _ = cmds[0]
    return prog if prog in TOOLS and not ONE_SHOT[prog] & set(args) else None


def with_exec(line):
    """`exec` before the program (after VAR=value words): sh becomes the tool, which the test then
    signals and whose exit status it reads."""
    m = re.match(r"^((?:[A-Za-z_]\w*=(?:'[^']*'|\"[^\"]*\"|[^\s'\"]+)*\s+)*)(.*)$", line, re.S)
    return m.group(1) + "exec " + m.group(2)


def parse_args(args):
    """np-client's argv: ({flag: [values]}, positional)."""
    opts, pos, i = {}, [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and len(a) > 1:
            if a.startswith("--") and "=" in a:
                k, v = a.split("=", 1)
            elif a in NO_VALUE:
                k, v = a, True
            else:
                check(i + 1 < len(args), f"{a} without a value")
                k, v = a, args[i + 1]
                i += 1
            opts.setdefault(k, []).append(v)
        else:
            pos.append(a)
        i += 1
    return opts, pos


def wait_for(p, what, found, timeout=TIMEOUT):
    """found(lines) -> a result or None, awaited as p writes; fails at once if p exits first."""
    deadline = time.monotonic() + timeout
    with p.cond:
        while True:
            r = found(p.lines)
            if r is not None:
                return r
            if p.p.poll() is not None and not any(t.is_alive() for t in p.pumps):
                said = " / ".join(text for _, text in p.lines[-3:])
                raise Fail(f"{p.name} exited with {p.p.returncode} before {what}: {said}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"{p.name}: no {what} within {timeout}s")
            p.cond.wait(min(left, 0.2))  # the pumps notify on each line; their end is polled


def wait_line(p, rx, after=0, stream=None, timeout=TIMEOUT):
    c = re.compile(rx)

    def found(lines):
        for s, text in lines[after:]:
            m = c.search(text) if stream in (None, s) else None
            if m:
                return m
        return None
    return wait_for(p, f"line /{rx}/", found, timeout)


def run_once(ctx, machine, line):
    """A command that ends by itself: run, and it must succeed."""
    print(f"$ {line}")
    out = subprocess.run(["sh", "-c", line], cwd=machine.root, capture_output=True, text=True,
                         env={**os.environ, **machine.environ}, timeout=4 * TIMEOUT,
                         stdin=subprocess.DEVNULL)
    for stream in (out.stdout, out.stderr):
        for text in stream.splitlines():
            print(f"  | {text}")
    said = " / ".join(out.stderr.strip().splitlines())  # one line: the FAIL line says it all
    check(out.returncode == 0, f"exited with {out.returncode}: {said[-600:]}")
    return out.stdout


def start(ctx, machine, line, prog, name):
    if prog == "np-server" and not IN_NETNS:
        line += f" --proxy-bind-addr {LOOP}"  # FALLBACK_ONLY
    print(f"$ {line}")
    return Proc(ctx.env, name, ["sh", "-c", with_exec(line)], environ=machine.environ)


def stop(p, srv=None):
    """SIGINT, which stops our tools at once: exit 0 (valgrind's 99, a crash: a failure). With the
    server given, until it has seen the client go (its name and ports are free for the next)."""
    mark = srv.mark() if srv else 0
    p.signal(signal.SIGINT)
    code = p.wait_exit(TIMEOUT)
    check(code == 0, f"{p.name} exited with {code} on SIGINT")
    if srv:
        wait_line(srv, r"client \S+ \(.*\) disconnected", after=mark)


def run_server(ctx, line, args):
    opts, _ = parse_args(args)
    for path in opts.get("--token-file", []):
        path = ctx.public.expand(path)
        check(os.path.exists(path), f"the server's token file {path} was not made")
        with open(path) as f:
            token = f.readline().strip()
        check(re.fullmatch(TOKEN_RE, token), f"{path}: {token!r} is not a --gen-token token")
        check(os.stat(path).st_mode & 0o077 == 0, f"{path} is readable by others")
        ctx.values["token"] = token
        ctx.token_file = path
    if "--token" in opts:
        ctx.values["token"] = opts["--token"][-1]
    srv = start(ctx, ctx.public, line, "np-server", "np-server")
    port = int(wait_line(srv, r"listening on \S+ \(port (\d+)").group(1))
    check(port == ctx.ctrl, f"np-server listens on port {port}, not {ctx.ctrl}")
    wait_line(srv, r"created a TLS key and self-signed certificate in ")  # "the first start..."
    srv.fingerprint = wait_line(srv, r"TLS certificate (sha256:[0-9A-F:]+)").group(1)
    ctx.values.setdefault("fingerprint", srv.fingerprint)
    ctx.server = srv
    print(f"  np-server up on port {port}, {srv.fingerprint}")


def public_ports(cl, want):
    """np-client's "proxy NAME: public port N" lines on stdout, once there are want of them."""
    def found(lines):
        ports = {}
        for s, text in lines:
            m = re.match(r"^proxy (\S+): public port (\d+)$", text) if s == "stdout" else None
            if m:
                ports[m.group(1)] = int(m.group(2))
        return ports if len(ports) >= want else None
    return wait_for(cl, f"{want} public port(s) on stdout", found)


def local_service(ctx, port, what):
    for svc in ctx.svc.values():
        if svc.port == port:
            return svc
    raise Fail(f"{what} names local port {port}, which the test has no service for: add a row "
               f"to SUBSTITUTIONS")


def run_client(ctx, machine, line, args, listening_form):
    check(ctx.server is not None, "a client command before any np-server command")
    opts, pos = parse_args(args)
    check("-U" not in opts, "the README tunnels UDP (-U): this test checks TCP only, extend it")
    check(len(pos) <= 2, f"np-client with {len(pos)} positional arguments")
    server = (opts.get("--server") or opts.get("-s") or opts.get("--to") or
              (pos[:1] if len(pos) == 2 else []))
    check(server, "np-client without a server")
    check(server[-1] == f"{LOOP}:{ctx.ctrl}", f"np-client dials {server[-1]}, not our server")
    want = []  # (remote port, local service, what)
    for spec in opts.get("-R", []):
        f = spec.split(":")
        check(len(f) in (3, 4), f"-R {spec}")
        rp, lport = int(f[-3]), int(f[-1])
        check(rp == 0 or ctx.lo <= rp <= ctx.hi,
              f"-R {spec}: remote port {rp} has no substitution (SUBSTITUTIONS)")
        want.append((rp, local_service(ctx, lport, f"-R {spec}"), f"-R {spec}"))
    if pos:
        lport = int(pos[-1].rsplit(":", 1)[-1])
        want.append((0, local_service(ctx, lport, f"the one-line form's {pos[-1]}"),
                     f"one-line {pos[-1]}"))
    for path in opts.get("--token-file", []):
        path = machine.expand(path)
        if not os.path.exists(path) and getattr(ctx, "token_file", None):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copy(ctx.token_file, path)
            os.chmod(path, 0o600)
    cl = start(ctx, machine, line, "np-client", f"np-client-{ctx.privates}")
    ports = public_ports(cl, len(want))
    for rp, svc, what in want:
        got = [p for n, p in ports.items() if p == rp or (rp == 0 and n.endswith(f"-{svc.port}"))]
        check(len(got) == 1, f"{what}: no public port of its own among {ports}")
        port = got[0]
        through, direct = svc.probe(port), svc.probe(svc.port)
        check(len(direct) > 0 and through == direct,
              f"{what}: {len(through)} bytes through public port {port}, the service answers "
              f"{len(direct)} (first difference at "
              f"{next((i for i, (a, b) in enumerate(zip(through, direct)) if a != b), None)})")
        print(f"  {what}: public port {port} answers the service's {len(direct)} bytes")
        if what.startswith("one-line"):
            rx = listening_form or r"^listening at (\S+):(\d+)$"
            m = wait_line(cl, rx, stream="stdout")
            check(int(m.group(m.lastindex)) == port, f"{m.group(0)!r} is not public port {port}")
            print(f"  prints {m.group(0)!r}, as the README writes")
            ctx.covered.append("one-line form")
    if "--trust-on-first-use" in opts:
        known = os.path.join(machine.state, "known_servers")
        wait_line(cl, rf"trusting {re.escape(server[-1])} on first use: its certificate is "
                      rf"{re.escape(ctx.server.fingerprint)}; recorded in {re.escape(known)}:1")
        with open(known) as f:
            text = f.read()
        check(text == f"{server[-1]} {ctx.server.fingerprint}\n", f"{known}: {text!r}")
        print(f"  known_servers: {text.strip()}")
        ctx.covered.append("trust on first use")
    if "--server-fingerprint" in opts:
        ctx.covered.append("pinned fingerprint")
    if "-R" in opts:
        ctx.covered.append("-R")
    stop(cl, ctx.server)


def listening_form(ctx, prose):
    """What the README says the one-line form prints (`listening at HOST:PORT`), as a regex with
    the host substituted."""
    for span in re.findall(r"`([^`\n]+)`", prose):
        m = re.match(r"^listening at (.+):(\d+)$", span)
        if m:
            return rf"^listening at {re.escape(ctx.subst(m.group(1), 'out'))}:(\d+)$"
    return None


def run_inline(ctx, spans):
    """The section's `np-server ...` spans that print and exit (`np-server --fingerprint`, which
    the README says prints the fingerprint again)."""
    for span in spans:
        cmds = simple_commands(span)
        if len(cmds) != 1 or cmds[0][1] not in TOOLS:
            continue
        if not ONE_SHOT[cmds[0][1]] & set(cmds[0][2]):
            continue
        machine = ctx.public if cmds[0][1] == "np-server" else ctx.private()
        try:
            out = run_once(ctx, machine, ctx.subst(span))
        except Fail as e:
            raise Fail(f"the README's `{span}`: {e}") from None
        if "--fingerprint" in cmds[0][2]:
            check(out.strip() == ctx.server.fingerprint,
                  f"`{span}` printed {out.strip()!r}, the server logged {ctx.server.fingerprint}")
            ctx.values["fingerprint"] = out.strip()
            ctx.covered.append("np-server --fingerprint")
        if "--gen-token" in cmds[0][2]:
            check(re.fullmatch(TOKEN_RE, out.strip()), f"`{span}` printed {out!r}")


def run_bounded(argv, environ, timeout):
    """A child run with everything it starts in its own process group, all killed if it outlasts
    timeout (tools left running in its namespace included)."""
    p = subprocess.Popen(argv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        err += f"\n{argv[-1]}: killed after {timeout}s\n"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # what it left behind, if anything
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def netns_works():
    try:
        subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], check=True,
                       timeout=10, capture_output=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def test_readme_tools(env):
    """Every np-server / np-client command of the README, run as written (with SUBSTITUTIONS)
    and checked by what it does."""
    if not IN_NETNS and os.environ.get("NP_README_NETNS") != "0":
        if netns_works():
            # Again in a network namespace of its own, the loopback up.
            out = run_bounded(["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"',
                               "sh", sys.executable, os.path.abspath(__file__), "readme_tools"],
                              {**os.environ, "NP_README_NETNS": "1"}, (8 if WRAP else 2) * 50)
            sys.stdout.write(out.stdout)
            sys.stderr.write(out.stderr)
            said = [ln for ln in out.stdout.splitlines() if ln.startswith("FAIL readme_tools")]
            check(out.returncode == 0, f"in its namespace: {said[-1] if said else out.returncode}")
            return
    if not IN_NETNS:
        print("no network namespace (unshare -rn and ip, or NP_README_NETNS=0): the server's "
              "addresses become 127.0.0.1 instead (the table's fallback rows)")
    with open(README) as f:
        text = f.read()
    ctx = Ctx(env)
    print(f"README: {README}{' (in a network namespace of its own)' if IN_NETNS else ''}")
    print(ctx.table())
    ran = 0
    for title, prose, blocks in sections(text):
        sh = [(code, n) for lang, code, n in blocks if lang in ("sh", "shell", "bash", "console")]
        if not sh:
            continue
        if title in SKIPPED_SECTIONS:
            print(f"skip: section {title!r} ({len(sh)} block(s)): {SKIPPED_SECTIONS[title]}")
            continue
        form = listening_form(ctx, prose)
        inline_pending = [s for s in re.findall(r"`([^`\n]+)`", prose)
                          if s.split()[0] in TOOLS]
        for code, n in sh:
            lines = commands(code, n + 1)
            if not any(is_tool_line(line) for _, line in lines):
                print(f"not run: section {title!r}, block at README line {n}: no np-server or "
                      f"np-client command")
                continue
            print(f"== section {title!r}, block at README line {n}")
            client_block = not any(prog == "np-server" for _, line in lines
                                   for _, prog, _, _ in simple_commands(line))
            machine = ctx.private() if client_block else ctx.public
            for at, raw in lines:
                line = ctx.subst(raw)
                try:
                    check("..." not in line, "a placeholder is left (no substitution for it)")
                    prog = long_running(line)
                    args = [machine.expand(w) for w in simple_commands(line)[0][2]] if prog else []
                    if prog == "np-server":
                        run_server(ctx, line, args)
                    elif prog == "np-client":
                        run_client(ctx, machine, line, args, form)
                    else:
                        run_once(ctx, machine, line)
                except Fail as e:
                    raise Fail(f"README line {at}: `{raw}`: {e}") from None
                ran += 1
            if ctx.server is not None and inline_pending:
                run_inline(ctx, inline_pending)
                inline_pending = []
    check(ctx.server is not None, "the README starts no np-server")
    check("-R" in ctx.covered, "the README's commands tunnel nothing (no -R was run)")
    srv = ctx.server
    srv.signal(signal.SIGINT)
    code = srv.wait_exit(TIMEOUT)
    check(code == 0, f"np-server exited with {code} on SIGINT")
    print(f"{ran} README commands ran; covered: {', '.join(dict.fromkeys(ctx.covered))}")


def test_readme_embedding(env):
    """The "Embedding" C block compiles and links against the build's library, found with the
    README's `pkg-config --cflags --libs natproxy` (the build's uninstalled natproxy.pc). It is a
    fragment: it is put in a function whose parameters are the names it leaves to its reader
    (loop, token) and after an on_event of the right type. Not run: it names
    tunnel.example.org."""
    with open(README) as f:
        text = f.read()
    code = [c for title, _, blocks in sections(text) if title == "Embedding"
            for lang, c, _ in blocks if lang == "c"]
    check(len(code) == 1, f"the Embedding section has {len(code)} C blocks, expected 1")
    build = os.path.dirname(os.path.dirname(os.path.abspath(SERVER)))
    pcdir = os.path.join(build, "meson-uninstalled")
    if not os.path.exists(os.path.join(pcdir, "natproxy-uninstalled.pc")):
        print(f"skip: no {pcdir}/natproxy-uninstalled.pc (NP_SERVER is not a build's tool)")
        return
    head = [ln for ln in code[0].splitlines() if ln.startswith("#")]
    body = [ln for ln in code[0].splitlines() if not ln.startswith("#")]
    prog = "\n".join(head + [
        "void readme_example(uv_loop_t *loop, const char *token);",
        "static void on_event(struct np_client *cl, const np_client_event *ev) {",
        "  (void)cl;", "  (void)ev;", "}",
        "void readme_example(uv_loop_t *loop, const char *token) {",
        *("  " + ln for ln in body), "}",
        "int main(void) {", "  return 0;", "}", ""])
    path = os.path.join(env.tmp.name, "embed.c")
    with open(path, "w") as f:
        f.write(prog)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "natproxy"], check=True,
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "PKG_CONFIG_PATH": pcdir}).stdout.split()
    san = ["-fsanitize=address,undefined"] if SANITIZED else []
    cc = os.environ.get("CC", "cc").split()
    out = subprocess.run([*cc, "-Wall", "-Wextra", "-Werror", *san, "-o",
                          os.path.join(env.tmp.name, "embed"), path, *flags],
                         capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, f"the README's C block does not build:\n{prog}\n{out.stderr}")
    print(f"the Embedding block builds and links: {' '.join(cc)} {' '.join(flags)}")


# Self-check: a README whose commands were changed so that they no longer work makes readme_tools
# fail, naming the command. (first occurrence after "## Using the tools", replacement)
MUTATIONS = [
    ("--allow-ports", "--allowed-ports"),      # a server flag renamed
    ("--server-fingerprint", "--fingerprint"),  # a client flag renamed (to the server's)
    ("np-client --trust-on-first-use tunnel", "np-client tunnel"),  # one-line form without TOFU
]


def test_readme_mutated_fails(env):
    """readme_tools fails on copies of the README whose commands were broken (MUTATIONS)."""
    with open(README) as f:
        text = f.read()
    section = text.find("\n## Using the tools")
    check(section >= 0, "no 'Using the tools' section")
    for old, new in MUTATIONS:
        i = text.find(old, section)
        check(i >= 0, f"{old!r} is not in the README's 'Using the tools' any more")
        path = os.path.join(env.tmp.name, "README.md")
        with open(path, "w") as f:
            f.write(text[:i] + new + text[i + len(old):])
        out = run_bounded([sys.executable, os.path.abspath(__file__), "readme_tools"],
                          {**os.environ, "NP_README": path}, (8 if WRAP else 2) * 50)
        said = out.stdout + out.stderr
        # The README line of the command that holds it (its first, if it is continued).
        lines = text[:i].split("\n")
        at = len(lines)
        while at > 1 and lines[at - 2].endswith("\\"):
            at -= 1
        reason = [ln for ln in out.stdout.splitlines() if ln.startswith("FAIL readme_tools")]
        if out.returncode == 0 or not reason or f"README line {at}:" not in reason[-1]:
            sys.stderr.write(said[-4000:])
            raise Fail(f"{old} -> {new}: readme_tools did not fail at README line {at} "
                       f"(exit {out.returncode})")
        print(f"{old} -> {new}: fails as it should: {reason[-1][:400]}")


TESTS = {
    "readme_tools": test_readme_tools,
    "readme_embedding": test_readme_embedding,
    "readme_mutated_fails": test_readme_mutated_fails,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
