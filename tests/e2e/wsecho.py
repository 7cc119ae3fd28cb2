#!/usr/bin/python3
"""A WebSocket echo service and client on Debian's python3-websockets, for the HTTP vhost's
upgrade test. Run by Debian's own python3 (/usr/bin/python3), which is where python3-websockets
installs, whatever python3 runs the tests.

  wsecho.py serve PORT          echo every message back, prefixed with the request's path
  wsecho.py talk URL COUNT ADDR send COUNT messages of growing sizes (text and binary) and check
                                every echo byte for byte, connecting to ADDR (the URL's name is
                                the Host); prints "ok N" or fails (exit 1)
"""

import asyncio
import hashlib
import sys

import websockets


async def serve(port):
    async def echo(ws, path):
        async for msg in ws:
            await ws.send(msg if isinstance(msg, bytes) else f"{path} {msg}")

    async with websockets.serve(echo, "127.0.0.1", port, max_size=1 << 22):
        print("listening", flush=True)
        await asyncio.Future()


async def talk(url, count, addr):
    async with websockets.connect(url, max_size=1 << 22, open_timeout=10, host=addr) as ws:
        path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
        for i in range(count):
            text = f"hello {i} " + "x" * (i * 97)
            await ws.send(text)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != f"{path} {text}":
                sys.exit(f"text {i}: got {got[:80]!r}")
            data = hashlib.sha256(b"%d" % i).digest() * (1 + i * 300)
            await ws.send(data)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != data:
                sys.exit(f"binary {i}: {len(got)} bytes back of {len(data)}, or different")
    print(f"ok {count}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        asyncio.run(talk(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
