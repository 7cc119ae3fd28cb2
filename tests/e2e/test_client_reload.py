#!/usr/bin/env python3
"""np-client's reload on the live session (SIGHUP, POST /api/v1/reload) and its admin endpoint:
proxies added, removed or changed in its file are registered, closed or replaced without a
reconnect; the unchanged ones keep their visitors, under load too; a broken file changes nothing;
the status API shows what the server made of each proxy."""

import json
import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nptest import (LOOP, Fail, Proc, check, connect, low_free_ports,  # noqa: E402
                    port_closed, proxy_ports, run, wait_until)
from test_reload import Echo, closed_by_peer, curl, echo, write  # noqa: E402

LOGIN = r"client rl logged in from"


def proxies_ini(**proxies):
    """[proxy NAME] sections: NAME=(remote_port, local_port)."""
    return "".join(f"[proxy {name}]\nremote_port = {port}\nlocal = {LOOP}:{local}\n\n"
                   for name, (port, local) in proxies.items())


def admin_port(cl):
    return int(cl.wait_line(r"admin API, /metrics and /healthz on \S+ \(port (\d+)\)").group(1))


def status(port, token):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", f"Authorization: Bearer {token}",
                          f"http://{LOOP}:{port}/api/v1/status"], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        raise Fail(f"status: {out.stderr.strip()}")
    return json.loads(out.stdout)


def by_name(st):
    return {p["name"]: p for p in st["proxies"]}


def test_client_reload_file(env):
    """SIGHUP: one proxy removed (closed on the server with its visitor), one added, one kept (its
    open connection goes on byte for byte), one changed (a new port); live and restart keys; a
    broken file changes nothing; one login in all."""
    svc = env.service(Echo)
    keep, drop, add, moved = low_free_ports(4)
    cfg = write(env, "client.ini", proxies_ini(keep=(keep, svc), drop=(drop, svc)))
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "--name", "rl", "-c", cfg, wait=False)
    ports = proxy_ports(cl, 2)
    check(ports == {"keep": keep, "drop": drop}, f"registered: {ports}")
    a, b = connect(keep), connect(drop)
    check(echo(a, b"before-a") == b"before-a", "the kept proxy carries data")
    check(echo(b, b"before-b") == b"before-b", "the dropped proxy carries data")

    mark, smark = cl.mark(), srv.mark()
    write(env, "client.ini", "[client]\nwork_pool = 2\ndial_timeout = 7s\n\n" +
          proxies_ini(keep=(keep, svc), added=(add, svc)))
    cl.signal(signal.SIGHUP)
    cl.wait_line(r"reload: proxy drop removed; closing it on the server with its visitors", after=mark)
    cl.wait_line(r"reload: proxy added added", after=mark)
    cl.wait_line(r"reload: dial_timeout changed, which takes effect only at a restart", after=mark)
    cl.wait_line(r"reload: work_pool changed; in effect from now on", after=mark)
    srv.wait_line(r"client rl: proxy drop closed: at the client's request \(removed from the "
                  r"client's configuration\)", after=smark)
    check(proxy_ports(cl, 1, after=mark) == {"added": add}, "the added proxy is registered")
    check(closed_by_peer(b), "the removed proxy's open visitor is closed")
    wait_until(lambda: port_closed(drop), 5, "the removed proxy's port closed on the server")
    big = os.urandom(1 << 20)
    check(echo(a, big) == big, "the kept proxy's open connection goes on, byte for byte")
    c = connect(add)
    check(echo(c, b"new proxy") == b"new proxy", "the added proxy carries data")
    c.close()

    # changed: a new remote port is a close and a registration again; its visitors go
    c = connect(add)
    check(echo(c, b"x") == b"x", "a visitor of the proxy about to change")
    mark, smark = cl.mark(), srv.mark()
    write(env, "client.ini", proxies_ini(keep=(keep, svc), added=(moved, svc)))
    cl.signal(signal.SIGHUP)
    cl.wait_line(r"reload: proxy added changed \(remote_port\); closing it on the server and "
                 r"registering it again: its open visitors are closed", after=mark)
    check(proxy_ports(cl, 1, after=mark) == {"added": moved}, "the changed proxy's new port")
    check(closed_by_peer(c), "the changed proxy's open visitor is closed")
    wait_until(lambda: port_closed(add), 5, "the changed proxy's old port closed")
    c = connect(moved)
    check(echo(c, b"moved") == b"moved", "the changed proxy carries data on its new port")
    c.close()

    # any error: nothing changes, and the log says where
    mark = cl.mark()
    write(env, "client.ini", proxies_ini(keep=(keep, svc)) + "[proxy bad]\nremote_port = lots\n")
    cl.signal(signal.SIGHUP)
    cl.wait_line(r"reload: .*client\.ini:6: remote_port: .*; nothing changed", after=mark)
    check(echo(a, b"still") == b"still", "a broken file closes nothing")
    c = connect(moved)
    check(echo(c, b"still") == b"still", "a broken file leaves the other proxy too")
    c.close()
    check(srv.count(LOGIN) == 1, f"one login in all, no reconnect: {srv.count(LOGIN)}")
    check(cl.count(r"lost the connection|DISCONNECTED") == 0, "the session never dropped")


def start_nginx(env):
    """One nginx worker answering a 612-byte page from its configuration (no file: its worker runs
    as nobody, who may not read a root's temporary directory); its port."""
    tmp = env.tmp.name
    port, = low_free_ports(1)
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(f"daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log stderr error;\n"
                f"events {{ worker_connections 1024; }}\n"
                f"http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};\n"
                f"  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n"
                f"  server {{ listen {LOOP}:{port}; default_type text/html;\n"
                f"    location / {{ return 200 '{'x' * 612}'; }} }} }}\n")
    Proc(env, "nginx", ["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp])
    wait_until(lambda: not port_closed(port), 10, "nginx listening")
    return port


def wrk(port, seconds):
    return subprocess.Popen(["wrk", "-t", "1", "-c", "8", "-d", f"{seconds}s",
                             f"http://{LOOP}:{port}/"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wrk_result(p, seconds):
    try:
        out, _ = p.communicate(timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        p.kill()
        raise Fail("wrk did not end")
    done = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (int(done.group(1)) if done else 0,
            sum(map(int, errors.groups())) if errors else 0,
            int(non2xx.group(1)) if non2xx else 0, out)


def test_client_reload_under_load(env):
    """wrk through two proxies while one of them is removed and another added: zero failed
    requests on the unchanged one."""
    www = start_nginx(env)
    web, gone, added = low_free_ports(3)
    cfg = write(env, "client.ini", proxies_ini(web=(web, www), gone=(gone, www)))
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "--name", "rl", "-c", cfg, "--admin-bind", f"{LOOP}:0",
                    "--admin-token", "t0k", wait=False)
    admin = admin_port(cl)
    proxy_ports(cl, 2)
    seconds = 4
    kept, other = wrk(web, seconds), wrk(gone, seconds)
    wait_until(lambda: all(p["stats"]["visitors_joined"] > 0
                           for p in status(admin, "t0k")["proxies"]), 5,
               "wrk's traffic through both proxies", step=0.1)
    mark = cl.mark()
    write(env, "client.ini", proxies_ini(web=(web, www), added=(added, www)))
    cl.signal(signal.SIGHUP)
    check(proxy_ports(cl, 1, after=mark) == {"added": added}, "the added proxy is registered")
    code, body = curl(added, "/")
    check(code == 200 and len(body) == 612, f"the added proxy serves: {code}")
    check(kept.poll() is None, "the reload came while wrk ran")
    done, errors, non2xx, out = wrk_result(kept, seconds)
    wrk_result(other, seconds)  # the removed proxy's: its failures are the point
    check(done > 0 and errors == 0 and non2xx == 0,
          f"the unchanged proxy: {done} requests, {errors} socket errors, {non2xx} non-2xx\n{out}")
    print(f"figure: the unchanged proxy through the reload: {done} requests in {seconds}s, "
          f"{errors} socket errors, {non2xx} non-2xx")
    check(srv.count(LOGIN) == 1, "no reconnect")
    st = by_name(status(admin, "t0k"))
    check(set(st) == {"web", "added"} and st["added"]["status"] == "ok", f"status after: {st}")


def test_client_admin(env):
    """The client's admin endpoint: status as registered (a refused proxy shows the server's
    reason), /metrics that promtool accepts, a reload through the API (422 on a broken file),
    credentials."""
    svc = env.service(Echo)
    ok, bad, third = low_free_ports(3)
    cfg = write(env, "client.ini", proxies_ini(ok=(ok, svc), bad=(bad, svc)))
    srv = env.server("--token", "s3cret", "--allow-ports", f"{ok},{third}")
    cl = env.client(srv, "--name", "rl", "-c", cfg, "--admin-bind", f"{LOOP}:0",
                    "--admin-token", "t0k", wait=False)
    admin = admin_port(cl)
    cl.wait_line(rf"proxy bad refused by the server: port {bad} is outside")
    proxy_ports(cl, 1)

    code, _ = curl(admin, "/api/v1/status")
    check(code == 401, f"no token: {code}")
    code, body = curl(admin, "/healthz")
    check(code == 200, f"/healthz is open: {code}")
    st = status(admin, "t0k")
    s = st["session"]
    check(s["state"] == "logged-in" and s["name"] == "rl" and s["server"] == f"{LOOP}:{srv.port}"
          and s["reconnects"] == 0 and s["tls"] == ("--insecure" not in cl.argv),
          f"session: {s}")
    px = by_name(st)
    check(px["ok"]["status"] == "ok" and px["ok"]["port"] == ok and px["ok"]["remote_port"] == ok
          and px["ok"]["local"] == f"{LOOP}:{svc}" and px["ok"]["type"] == "tcp", f"ok: {px['ok']}")
    check(px["bad"]["status"] == "refused" and px["bad"]["port"] == 0 and
          f"port {bad} is outside the server's allow_ports" in px["bad"]["error"], f"bad: {px['bad']}")
    c = connect(ok)
    check(echo(c, b"count me") == b"count me", "traffic through ok")
    wait_until(lambda: by_name(status(admin, "t0k"))["ok"]["stats"]["bytes_in"] >= 8, 5,
               "the proxy's bytes counted while its connection is open", step=0.1)

    metrics = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Authorization: Bearer t0k",
                              f"http://{LOOP}:{admin}/metrics"], capture_output=True, text=True,
                             timeout=30).stdout
    for want in ('natproxy_client_proxy_status{proxy="bad",type="tcp",status="refused"} 1',
                 'natproxy_client_proxy_status{proxy="ok",type="tcp",status="ok"} 1',
                 "natproxy_client_connects_total 1", "natproxy_client_logged_in 1"):
        check(want in metrics, f"/metrics has {want}")
    lint = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True,
                          text=True, timeout=30)
    check(lint.returncode == 0, f"promtool: {lint.stdout}{lint.stderr}")

    # reload through the API: bad goes, third comes
    mark = cl.mark()
    write(env, "client.ini", proxies_ini(ok=(ok, svc), third=(third, svc)))
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-H", "Authorization: Bearer t0k",
                          f"http://{LOOP}:{admin}/api/v1/reload"], capture_output=True, text=True,
                         timeout=30).stdout
    check(json.loads(out) == {"reloaded": True}, f"reload: {out}")
    check(proxy_ports(cl, 1, after=mark) == {"third": third}, "the added proxy is registered")
    px = by_name(status(admin, "t0k"))
    check(set(px) == {"ok", "third"} and px["third"]["status"] == "ok", f"after the reload: {px}")
    check(echo(c, b"still") == b"still", "the kept proxy's connection goes on")

    write(env, "client.ini", proxies_ini(ok=(ok, svc)) + "[proxy x]\nnonsense\n")
    code, body = curl(admin, "/api/v1/reload", "POST")
    check(code == 401, "POST without a token")
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", "-H",
                          "Authorization: Bearer t0k", f"http://{LOOP}:{admin}/api/v1/reload"],
                         capture_output=True, text=True, timeout=30).stdout
    body, _, code = out.rpartition("\n")
    check(code == "422" and "client.ini:6" in json.loads(body)["error"], f"broken: {code} {body}")
    check(set(by_name(status(admin, "t0k"))) == {"ok", "third"}, "a broken file changes nothing")
    code, _ = curl(admin, "/api/v1/reload")
    check(code == 401, "GET without a token")  # credentials come before the method's check

    # an address others can reach needs credentials, as the server's does
    p = env.client(srv, "--name", "open", "-R", f"0:{LOOP}:{svc}", "--admin-bind", "0.0.0.0:0",
                   name="open", wait=False)
    check(p.wait_exit() == 2, "a non-loopback admin_bind without credentials is refused")
    check(p.count(r"admin_bind 0\.0\.0\.0:0 is not a loopback address") == 1, "and says why")


TESTS = {
    "client_reload_file": test_client_reload_file,
    "client_reload_under_load": test_client_reload_under_load,
    "client_admin": test_client_admin,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
