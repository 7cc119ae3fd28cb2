"""Shared harness for the end-to-end tests: run the real np-server / np-client binaries and small local
services, wait for events (log lines, ports) instead of sleeping, and always clean up."""

import hashlib
import os
import queue
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

SERVER = os.environ.get("NP_SERVER", "build/tools/np-server")
CLIENT = os.environ.get("NP_CLIENT", "build/tools/np-client")
# A command prefix for the tools, e.g. valgrind; a child that then exits with WRAP_FAIL failed.
WRAP = os.environ.get("NP_WRAP", "").split()
WRAP_FAIL = 99
# Exit statuses that mean a tool broke, whatever the test expected: valgrind's (99), LeakSanitizer's
# (23), and deaths by SIGABRT (sanitizers abort), SIGSEGV, SIGBUS, SIGFPE, SIGILL.
BROKEN_EXITS = {WRAP_FAIL, 23, -6, -11, -7, -8, -4}
SANITIZED = os.environ.get("NP_SANITIZED") == "1"
LOOP = "127.0.0.1"
# NP_E2E_TLS=0 runs a case in clear (--insecure on both sides; meson's plain-* cases); TLS is the
# default.
TLS = os.environ.get("NP_E2E_TLS") != "0"


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class Proc:
    """A child process whose stdout and stderr lines are collected as they come."""

    def __init__(self, env, name, argv, environ=None):
        self.name = name
        self.argv = argv
        self.lines = []  # (stream, text)
        self.cond = threading.Condition()
        if WRAP and argv[0] in (SERVER, CLIENT):
            argv = WRAP + argv
        # Each test's own state directory (remembered ports, known_servers, a TLS identity without
        # --tls-dir): never the machine's, and never another test's.
        environ = {"STATE_DIRECTORY": env.state_dir, **(environ or {})}
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                  env={**os.environ, **environ} if environ else None)
        self.pumps = [threading.Thread(target=self._pump, args=(stream,), daemon=True)
                      for stream in ("stdout", "stderr")]
        for t in self.pumps:
            t.start()
        env.procs.append(self)

    def _pump(self, stream):
        for line in getattr(self.p, stream):
            with self.cond:
                self.lines.append((stream, line.rstrip("\n")))
                self.cond.notify_all()

    def wait_line(self, pattern, timeout=10, stream=None, after=0):
        """Wait until a line (index >= after) matches pattern; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for s, text in self.lines[after:]:
                    if stream in (None, s):
                        m = rx.search(text)
                        if m:
                            return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Fail(f"{self.name}: no line matching /{pattern}/ within {timeout}s")
                self.cond.wait(left)

    def mark(self):
        with self.cond:
            return len(self.lines)

    def count(self, pattern, after=0):
        """Lines so far (index >= after) that match pattern."""
        rx = re.compile(pattern)
        with self.cond:
            return sum(1 for _, text in self.lines[after:] if rx.search(text))

    def wait_exit(self, timeout=10):
        """The exit status, once every line the process wrote has been collected."""
        try:
            code = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Fail(f"{self.name}: still running after {timeout}s")
        for t in self.pumps:
            t.join(timeout)
        return code

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def dump(self, limit=None):
        """The process's lines; with limit, only its last ones (a test runner keeps the tail)."""
        out = [f"---- {self.name}: {' '.join(self.argv)} (exit {self.p.poll()})"]
        with self.cond:
            lines = self.lines
            if limit is not None and len(lines) > limit:
                out.append(f"  ... {len(lines) - limit} earlier lines left out")
                lines = lines[-limit:]
            out += [f"  [{s[3:]}] {t}" for s, t in lines]
        return "\n".join(out)


class Env:
    """Everything a test started; torn down at the end, logs printed when the test failed."""

    def __init__(self):
        self.procs = []
        self.servers = []
        self.tmp = tempfile.TemporaryDirectory(prefix="np-e2e-")
        self.state_dir = os.path.join(self.tmp.name, "state")

    def tls_server_args(self, tls_dir=None):
        """A state directory for a server's TLS identity (fresh unless given), or --insecure."""
        if not TLS:
            return ["--insecure"]
        return ["--tls-dir", tls_dir or tempfile.mkdtemp(dir=self.tmp.name)]

    def tls_client_args(self, server):
        """Pin server's certificate (it printed the fingerprint), or --insecure."""
        fp = getattr(server, "fingerprint", None)
        return ["--server-fingerprint", fp] if fp else ["--insecure"]

    def server(self, *args, name="np-server", bind=f"{LOOP}:0", tls_dir=None, wait=True):
        tls = self.tls_server_args(tls_dir)
        # NP_E2E_WORKERS=N runs a case on a server of N event loops (meson's workers1-* cases; the
        # default is one per core)
        workers = ["--workers", os.environ["NP_E2E_WORKERS"]] if os.environ.get(
            "NP_E2E_WORKERS") and "--workers" not in args else []
        p = Proc(self, name, [SERVER, "--bind", bind, "--proxy-bind-addr", LOOP,
                              "--log-level", "debug", *workers, *tls, *args])
        if not wait:
            return p
        p.port = int(p.wait_line(r"listening on .* \(port (\d+)").group(1))
        # clients dial the server where it listens: 127.0.0.1, or [::1] for a server bound there
        p.host = bind.rsplit(":", 1)[0] if bind.startswith("[") else LOOP
        p.fingerprint = None
        p.tls_dir = tls[1] if TLS else None
        # The start-up lines end with TLS's (the fingerprint, or the warning that it is off): a test
        # that marks the log from here on sees none of them.
        if "--insecure" not in p.argv:
            p.fingerprint = p.wait_line(r"TLS certificate (sha256:[0-9A-F:]+)").group(1)
        else:
            p.wait_line(r"TLS is off")
        # The last line of a start: how many event loops (workers) it runs, once each has started.
        p.workers = int(p.wait_line(r"(\d+) workers? on port").group(1))
        # Port 0 picks a free TCP port; the datagram path binds the same number in UDP, which a
        # test running beside this one may hold: pick again rather than fail that case by chance.
        if bind.endswith(":0") and p.count(r"datagram path off: cannot bind UDP port") > 0:
            p.signal(signal.SIGINT)
            p.wait_exit()
            self.procs.remove(p)
            return self.server(*args, name=name, bind=bind, tls_dir=tls_dir, wait=wait)
        return p

    def client(self, server, *args, name="np-client", token="s3cret", wait=True):
        # NP_E2E_MUX=0 runs a case with a TCP connection per visitor (meson's nomux-* cases);
        # multiplexing is the default
        mux = ["--mux", "false"] if os.environ.get("NP_E2E_MUX") == "0" else []
        host = getattr(server, "host", LOOP)  # a stand-in server of a test's own has no host
        p = Proc(self, name, [CLIENT, "--server", f"{host}:{server.port}", "--token", token,
                              "--log-level", "debug", "--reconnect-max", "1s", *mux,
                              *self.tls_client_args(server), *args])
        if wait:
            p.ports = proxy_ports(p)
        return p

    def service(self, handler):
        srv = socketserver.ThreadingTCPServer((LOOP, 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.servers.append(srv)
        return srv.server_address[1]

    def close(self, failed):
        """Stop everything; return the names of children that the wrapper (valgrind) failed."""
        for p in self.procs:
            p.signal(signal.SIGCONT)
            # SIGINT stops our tools at once; their SIGTERM drains (test_drain.py's subject)
            ours = SERVER in p.argv or CLIENT in p.argv
            p.signal(signal.SIGINT if ours else signal.SIGTERM)
        hung = []
        for p in self.procs:
            try:
                p.p.wait(20 if WRAP else 5)
            except subprocess.TimeoutExpired:
                p.p.kill()
                p.p.wait()
                if SERVER in p.argv or CLIENT in p.argv:
                    hung.append(f"{p.name} (did not stop on SIGINT)")
        for s in self.servers:
            s.shutdown()
            s.server_close()
        self.tmp.cleanup()
        wrapped = hung + [f"{p.name} (exit {p.p.returncode})" for p in self.procs
                          if p.p.returncode in BROKEN_EXITS and (SERVER in p.argv or CLIENT in p.argv)]
        if (failed or wrapped) and self.procs:
            # Every process's full log goes to a file, the tails to stderr: meson shows only the last
            # 100 lines of a failed test, and the reason is printed after these.
            keep = os.environ.get("NP_E2E_LOGS", tempfile.gettempdir())
            path = os.path.join(keep, f"np-e2e-{os.getpid()}-{int(time.time())}.log")
            try:
                with open(path, "w") as f:
                    for p in self.procs:
                        print(p.dump(), file=f)
                print(f"full logs: {path}", file=sys.stderr)
            except OSError:
                pass
            for p in self.procs:
                print(p.dump(limit=12), file=sys.stderr)
        return wrapped


def stdout_table(proc, rx, key, value, want, timeout=10, after=0, what="lines"):
    """{group key: int(group value)} of proc's stdout lines matching rx, once it has want of them."""
    deadline = time.monotonic() + timeout
    with proc.cond:
        while True:
            got = {}
            for s, text in proc.lines[after:]:
                m = rx.match(text) if s == "stdout" else None
                if m:
                    got[m.group(key)] = int(m.group(value))
            if len(got) >= want:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"{proc.name}: {len(got)} of {want} {what} after {timeout}s")
            proc.cond.wait(left)


def proxy_ports(client, count=None, timeout=10, after=0):
    """Public ports the client printed ("proxy NAME: public port N"), by proxy name."""
    want = count if count is not None else sum(a in ("-R", "-U") for a in client.argv) or 1
    return stdout_table(client, re.compile(r"^proxy (\S+): public port (\d+)$"), 1, 2, want,
                        timeout, after, "proxies ready")


def connect(port, timeout=10):
    s = socket.create_connection((LOOP, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def tls_wrap(sock, fingerprint):
    """Client TLS over sock, trusting exactly the certificate with this fingerprint (as np-client
    --server-fingerprint does)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # checked below, by fingerprint
    s = ctx.wrap_socket(sock)
    seen = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
    if seen != fingerprint[7:].replace(":", "").lower():
        raise Fail(f"server certificate {seen} is not {fingerprint}")
    return s


def dial(server, timeout=10, source=None):
    """A connection to server's control port, in TLS unless the server runs with --insecure; from
    the loopback address source when given (127.0.0.0/8 is all ours)."""
    s = socket.create_connection((LOOP, server.port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    return tls_wrap(s, server.fingerprint) if server.fingerprint else s


def half_close(s):
    """Shut down the sending side: TLS close_notify (without waiting for the peer's), or FIN."""
    if not isinstance(s, ssl.SSLSocket):
        s.shutdown(socket.SHUT_WR)
        return
    t = s.gettimeout()
    s.setblocking(False)
    try:
        s.unwrap()
    except ssl.SSLWantReadError:
        pass  # close_notify sent; the peer's comes later
    s.settimeout(t)


def greet(port, who):
    """One exchange with a Greeter behind port: send a line, read everything until EOF."""
    s = connect(port)
    s.sendall(who + b"\n")
    got = recv_all(s)
    s.close()
    return got


def recv_all(s):
    chunks = []
    while True:
        try:
            b = s.recv(1 << 16)
        except ssl.SSLZeroReturnError:
            b = b""
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def port_closed(port):
    """True when nothing listens on port. A connect that races with the listener closing is reset
    rather than refused: that counts as closed too."""
    try:
        socket.create_connection((LOOP, port), timeout=2).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def low_free_ports(count):
    """Ports below the ephemeral range (32768+), so no outgoing connection takes them meanwhile."""
    found = []
    for port in range(20000 + (os.getpid() * 7) % 10000, 32000):
        s = socket.socket()
        try:
            s.bind((LOOP, port))
            found.append(port)
        except OSError:
            pass
        finally:
            s.close()
        if len(found) == count:
            return found
    raise RuntimeError("no free ports below 32000")


def rss_kib(pid):
    """Resident memory of a process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Fail(f"no VmRSS for {pid}")


def server_stats(srv):
    """np-server's counters, from the line SIGUSR1 makes it log (np-client's too: its line has the
    same form)."""
    mark = srv.mark()
    srv.signal(signal.SIGUSR1)
    line = srv.wait_line(r"stats: (.*)", after=mark).group(1)
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split())}


def wait_until(pred, timeout, what, step=0.05):
    """Poll a condition that has no event to wait on (a port being released), bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(step)
    raise Fail(f"{what}: not within {timeout}s")


def pattern(n, seed=0):
    """n deterministic pseudo-random bytes."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d-%d" % (seed, block)).digest() * 64
        block += 1
    return bytes(out[:n])


class Greeter(socketserver.BaseRequestHandler):
    """Reads one line, answers 'you are LINE', closes."""

    def handle(self):
        f = self.request.makefile("rb")
        line = f.readline().strip()
        self.request.sendall(b"you are " + line + b"\n")


class Digest(socketserver.BaseRequestHandler):
    """Reads until EOF (the peer's half-close), then answers the byte count and SHA-256."""

    def handle(self):
        h, n = hashlib.sha256(), 0
        while True:
            b = self.request.recv(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        self.request.sendall(b"%d %s\n" % (n, h.hexdigest().encode()))


def run(tests):
    """Run the test named in argv[1] (or all); print a summary line the CI reads."""
    names = sys.argv[1:] or list(tests)
    passed = failed = 0
    for name in names:
        env = Env()
        ok = False
        reason = ""
        where = ""
        t0 = time.monotonic()
        try:
            tests[name](env)
            ok = True
        except Exception as e:  # noqa: BLE001 - report any failure with the processes' logs
            reason = f"{type(e).__name__}: {e}"
            where = traceback.format_exc(limit=-4)
        finally:
            wrapped = env.close(not ok)
            if wrapped:
                print(f"FAIL {name}: broken exit of {wrapped}: a crash, or a report from "
                      f"{' '.join(WRAP) or 'a sanitizer'}", file=sys.stderr)
                ok = False
        # After the logs, which a test runner may cut to their last lines, on both streams: meson
        # shows stderr after stdout.
        if where:
            print(where, file=sys.stderr, end="")
        if not ok:
            print(f"FAIL {name}: {reason or 'see above'}", file=sys.stderr, flush=True)
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({time.monotonic() - t0:.2f}s){' ' + reason if reason else ''}")
        passed += ok
        failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
