#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_tls_sni.c (tests/fuzz/corpus/tls_sni/): real ClientHellos from
Python's ssl module (OpenSSL), and a few hand-built inputs. Each seed is one byte that seeds how the
harness cuts the input (0: whole), then the bytes of the connection. Run once; the output is
checked in, like the other corpora.

usage: gen-corpus-tls-sni.py [DIR]"""

import os
import ssl
import struct
import sys


def client_hello(sni, max_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        ctx.maximum_version = max_version
    out = ssl.MemoryBIO()
    conn = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=sni)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def reframe(records, parts):
    """The handshake bytes of a one-record hello, framed as PARTS records."""
    hs = records[5:]
    step = len(hs) // parts
    out = b""
    for i in range(parts):
        chunk = hs[i * step:] if i == parts - 1 else hs[i * step:(i + 1) * step]
        out += struct.pack(">BHH", 0x16, 0x0301, len(chunk)) + chunk
    return out


def hand_hello(exts):
    body = struct.pack(">H", 0x0303) + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return struct.pack(">BHH", 0x16, 0x0301, len(hs)) + hs


def sni_ext(entries):
    lst = b"".join(struct.pack(">BH", t, len(n)) + n for t, n in entries)
    data = struct.pack(">H", len(lst)) + lst
    return struct.pack(">HH", 0, len(data)) + data


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus",
                                                             "tls_sni")
    os.makedirs(out, exist_ok=True)
    tls13 = client_hello("Example.COM.")
    seeds = {
        "tls13_sni": b"\x00" + tls13,
        "tls13_sni_cut": b"\x07" + tls13,
        "tls12_sni": b"\x01" + client_hello("www.example.org", ssl.TLSVersion.TLSv1_2),
        "tls13_no_sni": b"\x00" + client_hello(None),
        "two_records": b"\x00" + reframe(tls13, 2),
        "four_records": b"\x2a" + reframe(tls13, 4),
        "two_names": b"\x00" + hand_hello(sni_ext([(1, b"\x01\x02"), (0, b"a.example"),
                                                   (0, b"b.example")])),
        "http": b"\x00GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
