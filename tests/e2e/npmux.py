"""A yamux endpoint in Python, written from hashicorp/yamux's spec.md (docs/protocol.md,
"Multiplexed connections"): just enough to play either side of a multiplexed connection that
misbehaves on purpose: a forwarding server that lies to an owner, or an owner that stalls or lies
to a forwarding server. Small messages only: it never sends a window update beyond the opening
one, so it suits exchanges well under the 256 KiB window."""

import select
import struct
import time

import npwire

DATA, WINDOW, PING, GOAWAY = range(4)
SYN, ACK, FIN, RST = 1, 2, 4, 8


def frame(ftype, flags, sid, length, data=b""):
    return struct.pack(">BBHII", 0, ftype, flags, sid, length) + data


class Stream:
    def __init__(self, sid):
        self.sid, self.data, self.fin, self.rst = sid, b"", False, False


class Mux:
    """One side of a yamux session on the socket s (TCP or TLS). The client side opens odd
    stream ids, the server side even ones; streams the other side opens queue in accepted."""

    def __init__(self, s, client=True):
        self.s, self.buf, self.closed = s, b"", False
        self.streams, self.accepted = {}, []
        self.next_id = 1 if client else 2
        self.goaway = None

    def open(self, data=b""):
        sid, self.next_id = self.next_id, self.next_id + 2
        self.streams[sid] = Stream(sid)
        self.s.sendall(frame(WINDOW, SYN, sid, 0) + (frame(DATA, 0, sid, len(data), data) if data else b""))
        return sid

    def send(self, sid, data, flags=0):
        self.s.sendall(frame(DATA, flags, sid, len(data), data))

    def send_msg(self, sid, mtype, **f):
        self.send(sid, npwire.encode(mtype, **f))

    def fin(self, sid):
        self.s.sendall(frame(WINDOW, FIN, sid, 0))

    def pump(self, timeout):
        """Read what came within timeout seconds and take its frames: pings answered, new streams
        acknowledged. False once the connection ended."""
        if self.closed:
            return False
        if not self.buf_has_frame():
            pending = getattr(self.s, "pending", lambda: 0)()
            if not pending:
                r, _, _ = select.select([self.s], [], [], timeout)
                if not r:
                    return True
            try:
                chunk = self.s.recv(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                self.closed = True
                return False
            self.buf += chunk
        while self.buf_has_frame():
            _, ftype, flags, sid, length = struct.unpack(">BBHII", self.buf[:12])
            body = length if ftype == DATA else 0
            data, self.buf = self.buf[12:12 + body], self.buf[12 + body:]
            if ftype == PING:
                if flags & SYN:
                    self.s.sendall(frame(PING, ACK, 0, length))
                continue
            if ftype == GOAWAY:
                self.goaway = length
                continue
            st = self.streams.get(sid)
            if st is None and flags & SYN:
                st = self.streams[sid] = Stream(sid)
                self.accepted.append(sid)
                self.s.sendall(frame(WINDOW, ACK, sid, 0))
            if st is None:
                continue
            st.data += data
            st.fin |= bool(flags & FIN)
            st.rst |= bool(flags & RST)
        return True

    def buf_has_frame(self):
        if len(self.buf) < 12:
            return False
        ftype, length = self.buf[1], struct.unpack(">I", self.buf[8:12])[0]
        return len(self.buf) >= 12 + (length if ftype == DATA else 0)

    def wait(self, pred, timeout):
        """Pump until pred() holds; False if the connection ended or timeout passed first."""
        end = time.monotonic() + timeout
        while not pred():
            left = end - time.monotonic()
            if left <= 0 or not self.pump(min(left, 0.2)):
                return pred()
        return True

    def recv_msg(self, sid, timeout=10, answer_pings=True):
        """The next native message on stream sid: (type, fields); None if the stream or the
        connection ended, or nothing came within timeout."""
        st = self.streams[sid]
        while True:
            def whole():
                if len(st.data) < 4:
                    return False
                return len(st.data) >= 4 + struct.unpack(">I", st.data[:4])[0]
            if not self.wait(lambda: whole() or st.fin or st.rst, timeout) or not whole():
                return None
            (n,) = struct.unpack(">I", st.data[:4])
            body, st.data = st.data[4:4 + n], st.data[4 + n:]
            t, m = npwire.decode_body(body)
            if t == npwire.PING and answer_pings:
                self.send_msg(sid, npwire.PONG, id=m["id"])
                continue
            return t, m

    def ended(self, sid, timeout=10):
        """True once stream sid was closed by the other side (FIN or RST) or the connection ended."""
        st = self.streams[sid]
        return self.wait(lambda: st.fin or st.rst, timeout) or self.closed
