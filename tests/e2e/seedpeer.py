"""The seed article's server and client, written from its protocol description (shared/seed/SUMMARY.md,
docs/protocol.md): three ports, ASCII lines KEEP_ALIVE and NEW_CONNECTION, tunnel connections without a
header. Used to prove np-server and np-client interoperate with the article's programs."""

import socket
import threading
import time

KEEP_ALIVE = b"KEEP_ALIVE\n"
NEW_CONNECTION = b"NEW_CONNECTION\n"


def _pipe(src, dst):
    """One direction of a join, with half-close (unlike the article, which closes both on first EOF)."""
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            dst.sendall(b)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def join(a, b):
    threads = [threading.Thread(target=_pipe, args=(a, b), daemon=True),
               threading.Thread(target=_pipe, args=(b, a), daemon=True)]
    for t in threads:
        t.start()

    def closer():
        for t in threads:
            t.join()
        a.close()
        b.close()
    threading.Thread(target=closer, daemon=True).start()


def _listen():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


class SeedServer:
    """Control, tunnel and visit ports; one client; pending visitors matched to tunnel connections in
    arrival order (the article uses map order; FIFO is the best the protocol allows)."""

    def __init__(self, keepalive=0.5):
        self.control, self.tunnel, self.visit = _listen(), _listen(), _listen()
        self.ports = [s.getsockname()[1] for s in (self.control, self.tunnel, self.visit)]
        self.client = None
        self.pending = []
        self.lock = threading.Lock()
        self.keepalive = keepalive
        self.stopped = False
        for fn in (self._accept_control, self._accept_visitors, self._accept_tunnels):
            threading.Thread(target=fn, daemon=True).start()

    def _accept_control(self):
        while not self.stopped:
            try:
                c, _ = self.control.accept()
            except OSError:
                return
            with self.lock:
                if self.client is not None:
                    c.close()  # the article: one client at a time
                    continue
                self.client = c
            threading.Thread(target=self._keepalive, args=(c,), daemon=True).start()

    def _keepalive(self, c):
        while not self.stopped:
            try:
                c.sendall(KEEP_ALIVE)
            except OSError:
                with self.lock:
                    if self.client is c:  # not a newer client's connection, accepted meanwhile
                        self.client = None
                return
            time.sleep(self.keepalive)

    def _accept_visitors(self):
        while not self.stopped:
            try:
                v, _ = self.visit.accept()
            except OSError:
                return
            with self.lock:
                self.pending.append(v)
                if self.client is not None:
                    try:
                        self.client.sendall(NEW_CONNECTION)
                    except OSError:
                        pass

    def _accept_tunnels(self):
        while not self.stopped:
            try:
                t, _ = self.tunnel.accept()
            except OSError:
                return
            with self.lock:
                v = self.pending.pop(0) if self.pending else None
            if v is None:
                t.close()
            else:
                join(v, t)

    def stop(self):
        self.stopped = True
        for s in (self.control, self.tunnel, self.visit):
            s.close()
        if self.client is not None:
            self.client.close()


class SeedClient:
    """Dials the control port; for each NEW_CONNECTION dials the local service and the tunnel port and
    joins them (in a thread each, as the article's goroutines do)."""

    def __init__(self, host, control, tunnel, local):
        self.tunnel = (host, tunnel)
        self.local = local
        self.keepalives = 0
        self.sock = socket.create_connection((host, control))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        f = self.sock.makefile("rb")
        for line in f:
            if line == KEEP_ALIVE:
                self.keepalives += 1
            elif line == NEW_CONNECTION:
                threading.Thread(target=self._connect, daemon=True).start()

    def _connect(self):
        try:
            local = socket.create_connection(self.local)
        except OSError:
            local = None
        remote = socket.create_connection(self.tunnel)
        if local is None:
            remote.close()
        else:
            join(local, remote)

    def stop(self):
        # shutdown, not just close: the reader's makefile() still holds the descriptor
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
