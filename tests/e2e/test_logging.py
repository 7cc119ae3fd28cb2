#!/usr/bin/env python3
"""log_format = json (--log-format json): every line np-server and np-client write on stderr is one
JSON object with time, level, component and msg, also when the message holds quotes, backslashes, a
line break or bytes that are not UTF-8 (here from a client's name and a users file's path and key),
and also for the tools' own lines (a failed start, a usage error)."""

import json
import os
import re
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, Greeter, Proc, check, run  # noqa: E402

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = {"error", "warn", "info", "debug", "trace"}
# A name with what JSON must escape: np__name_ok lets quotes and backslashes through.
NAME = 'we"ird\\one'


# The harness reads the tools' output as UTF-8: a byte that is not ends its reading thread with an
# exception, which lands here.
READ_ERRORS = []
threading.excepthook = lambda args: READ_ERRORS.append(f"{args.exc_type.__name__}: {args.exc_value}")


def json_log(p):
    """p's stderr lines, each checked to be a JSON log object; returns the objects."""
    check(not READ_ERRORS, f"the tools' output is UTF-8: {READ_ERRORS}")
    out = []
    for stream, text in list(p.lines):
        if stream != "stderr":
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            check(False, f"{p.name}: not a JSON line ({e}): {text!r}")
        check(isinstance(obj, dict) and list(obj)[:2] == ["time", "level"] and "msg" in obj,
              f"{p.name}: keys time, level, ..., msg: {text!r}")
        check(TIME.match(obj["time"]) is not None, f"{p.name}: RFC 3339 UTC time: {obj['time']}")
        check(obj["level"] in LEVELS, f"{p.name}: level {obj['level']}")
        check(obj.get("component") == os.path.basename(p.argv[0]),
              f"{p.name}: component {obj.get('component')!r}")
        out.append(obj)
    check(out, f"{p.name}: wrote log lines")
    return out


def test_json_lines(env):
    # A users file whose path holds a quote, a backslash and a line break: np-server logs the path
    # when it reads the file. (Bytes that are not UTF-8 come below, from inside a file: in argv they
    # would break the harness's own printing.)
    users = os.path.join(env.tmp.name, 'users "q" \\ \n.ini')
    with open(users, "w") as f:
        f.write(f"[{NAME}]\ntoken = t0ken\n")
    os.chmod(users, 0o600)
    srv = env.server("--log-format", "json", "--users-file", users)
    svc = env.service(Greeter)
    cl = env.client(srv, "--name", NAME, "--log-format", "json", "-R", f"0:{LOOP}:{svc}",
                    token="t0ken")
    check(len(cl.ports) == 1, "the client's proxy is up (stdout keeps its plain line)")
    srv.wait_line(r"client we\\\"ird\\\\one logged in from")
    # A wrong option value once the format is known: the usage error is JSON too.
    bad = Proc(env, "np-server-bad", [os.environ["NP_SERVER"], "--log-format", "json",
                                      "--bind", "nowhere"])
    check(bad.wait_exit() == 2, "a bad --bind is exit 2")
    # A users file with a key that is not UTF-8: np-server cannot start, and says why in JSON.
    broken = os.path.join(env.tmp.name, "broken\n.ini")
    with open(broken, "wb") as f:
        f.write(b"[x]\ntoken = t\nk\xfe\"y = 1\n")
    os.chmod(broken, 0o600)
    gone = Proc(env, "np-server-broken", [os.environ["NP_SERVER"], "--log-format", "json",
                                          "--bind", f"{LOOP}:0", "--insecure",
                                          "--users-file", broken])
    check(gone.wait_exit() == 2, "a broken users file stops np-server (a configuration error)")

    srv_log = json_log(srv)
    check(any(f"users file {users}: 1 client" in o["msg"] for o in srv_log),
          f"the users file's path with its quotes, backslash and line break: {srv_log[:6]}")
    check(any(f"client {NAME} logged in" in o["msg"] for o in srv_log), "the login, unescaped")
    json_log(cl)
    check(json_log(bad)[-1]["msg"] == "--bind: bind: 'nowhere' is not IP:PORT",
          f"the usage error: {bad.lines}")
    last = json_log(gone)
    check(any("k\ufffd\"y" in o["msg"] and "broken\n.ini" in o["msg"] for o in last),
          f"the users file's error names the key and the path: {last}")
    check(last[-1]["level"] == "error", "the last line is an error")


TESTS = {
    "log_json_lines": test_json_lines,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
