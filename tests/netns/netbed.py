"""A NAT test bed in network namespaces (docs/testing.md, "NAT suite").

    internet 10.77.0.0/24 (a bridge in namespace "wan")
      public   10.77.0.10   np-server
      visitor  10.77.0.20   visitors
      router   10.77.0.1 (wan0) | 192.168.77.1 (lan0): forwarding, nftables masquerade, stateful firewall
    home 192.168.77.0/24
      home     192.168.77.2  np-client and the private services

Every address lives inside namespaces this module creates (named np<pid>-*), and everything is torn
down on exit, also when a test fails or is interrupted. The router forwards only what the home side
started (conntrack), with nf_conntrack_tcp_loose=0 so that lost NAT state really breaks connections as
a home router's reboot would. public and visitor even get a route to 192.168.77.0/24 through the
router: only the NAT stops them.
"""

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import nptest  # noqa: E402

PUBLIC_IP, VISITOR_IP, ROUTER_WAN, ROUTER_LAN, HOME_IP = (
    "10.77.0.10", "10.77.0.20", "10.77.0.1", "192.168.77.1", "192.168.77.2")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class Skip(Exception):
    pass


def sh(*cmd, input=None, check=True):
    r = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


_propagation = None


def mount_propagation():
    """unshare's --propagation for a mount namespace of a process's own. "private" (unshare's
    default) makes its copy of every mount private, so that nothing mounted in it shows outside.
    In a chroot whose root is no mount point (a debootstrap chroot) that step fails: the mounts are
    then taken as they are ("unchanged"), which keeps a mount inside only where the mount /etc is
    on is not shared. The ones the chroot shows are checked; its root's own is not visible from
    inside (a chroot made on a host whose root mount is shared would see the bind outside too)."""
    global _propagation
    if _propagation is None:
        if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                          capture_output=True).returncode == 0:
            _propagation = "private"
        else:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    fields = line.split()
                    point, tags = fields[4], fields[6:fields.index("-")]
                    if ("/etc/".startswith(point.rstrip("/") + "/") and
                            any(t.startswith("shared:") for t in tags)):
                        raise RuntimeError(f"the mount at {point} is shared: a bind over /etc "
                                           "would show outside this test")
            _propagation = "unchanged"
    return _propagation


@contextlib.contextmanager
def inside(ns):
    """Run the block with this thread in namespace ns: sockets created there belong to ns for life."""
    with open(f"/run/netns/{ns}") as target, open("/proc/thread-self/ns/net") as home:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            yield
        finally:
            _libc.setns(home.fileno(), CLONE_NEWNET)


ROUTER_NFT = """
table ip nat {
  chain post { type nat hook postrouting priority srcnat; oifname "wan0" masquerade; }
}
table inet fw {
  chain forwarding {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" ct state new accept
  }
  chain impair { type filter hook forward priority filter - 10; }
}
"""


class NetBed:
    def __init__(self, wire=None, hosts=None):
        """wire: None for a plain veth between home and router, or dict(delay=, jitter=, loss=,
        reorder=) for the user-space link (wire.py) with those impairments. hosts: more namespaces
        on the internet side, {name: address in 10.77.0.0/24} (a second server, a load balancer)."""
        if os.geteuid() != 0:
            raise Skip("the NAT suite needs root (network namespaces)")
        self.prefix = f"np{os.getpid()}"
        self.hosts = dict(hosts or {})
        self.ns = {n: f"{self.prefix}-{n}" for n in ("wan", "public", "router", "home", "visitor",
                                                      *self.hosts)}
        self.wire = None
        self.made = []
        atexit.register(self.down)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            self._up(wire)
        except Exception:
            self.down()
            raise

    def _on_signal(self, signum, frame):
        self.down()
        sys.exit(128 + signum)

    def enter(self, ns):
        """Command prefix that runs in namespace ns. nsenter --net, not ip netns exec: that one also
        remounts / and /sys, which fails where / is no mount point (a chroot) and is not needed."""
        return ["nsenter", f"--net=/run/netns/{self.ns[ns]}"]

    def ip(self, ns, *args):
        return sh(*self.enter(ns), "ip", *args)

    def run(self, ns, *cmd, check=True):
        return sh(*self.enter(ns), *cmd, check=check)

    def _veth(self, ns_a, name_a, ns_b, name_b):
        sh("ip", "link", "add", name_a, "netns", self.ns[ns_a], "type", "veth", "peer", "name", name_b,
           "netns", self.ns[ns_b])

    def _up(self, wire):
        for n in self.ns.values():
            r = sh("ip", "netns", "add", n, check=False)
            if r.returncode != 0:
                raise Skip(f"cannot create network namespaces: {r.stderr.strip()}")
            self.made.append(n)
            sh("nsenter", f"--net=/run/netns/{n}", "ip", "link", "set", "lo", "up")
        self.ip("wan", "link", "add", "br0", "type", "bridge")
        self.ip("wan", "link", "set", "br0", "up")
        extra = [(ns, f"h{i}") for i, ns in enumerate(self.hosts)]
        for ns, port in (("public", "pub"), ("visitor", "vis"), ("router", "rtr"), *extra):
            self._veth(ns, "wan0" if ns == "router" else "eth0", "wan", port)
            self.ip("wan", "link", "set", port, "master", "br0")
            self.ip("wan", "link", "set", port, "up")
        if wire is None:
            self._veth("router", "lan0", "home", "eth0")
        else:
            self._wire(wire)
        for ns, dev, addr in (("public", "eth0", PUBLIC_IP + "/24"), ("visitor", "eth0", VISITOR_IP + "/24"),
                              ("router", "wan0", ROUTER_WAN + "/24"), ("router", "lan0", ROUTER_LAN + "/24"),
                              ("home", "eth0", HOME_IP + "/24"),
                              *((ns, "eth0", ip + "/24") for ns, ip in self.hosts.items())):
            self.ip(ns, "addr", "add", addr, "dev", dev)
            self.ip(ns, "link", "set", dev, "up")
        self.ip("home", "route", "add", "default", "via", ROUTER_LAN)
        for ns in ("public", "visitor"):
            self.ip(ns, "route", "add", "192.168.77.0/24", "via", ROUTER_WAN)
        self.run("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(*self.enter("router"), "nft", "-f", "-", input=ROUTER_NFT)
        # Loading the nat table brings conntrack into the namespace; now its sysctls exist.
        self.run("router", "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")

    def _wire(self, p):
        a, b = f"{self.prefix}a"[-15:], f"{self.prefix}b"[-15:]
        argv = [sys.executable, os.path.join(HERE, "wire.py"), a, b, "--delay", str(p.get("delay", 0)),
                "--jitter", str(p.get("jitter", 0)), "--loss", str(p.get("loss", 0)),
                "--reorder", str(p.get("reorder", 0))]
        self.wire = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.wire.stdout.readline().strip() != "ready":
            raise RuntimeError(f"wire.py did not start: {self.wire.stderr.read()}")
        sh("ip", "link", "set", a, "netns", self.ns["router"])
        sh("ip", "link", "set", b, "netns", self.ns["home"])
        self.ip("router", "link", "set", a, "name", "lan0")
        self.ip("home", "link", "set", b, "name", "eth0")

    # ---- faults -------------------------------------------------------------------------------------

    def cut(self):
        """Drop every forwarded packet, both ways, silently (no RST, no ICMP)."""
        self.run("router", "nft", "add", "rule", "inet", "fw", "impair", "drop")

    def restore(self):
        self.run("router", "nft", "flush", "chain", "inet", "fw", "impair")

    def flush_conntrack(self):
        """Forget every NAT mapping, as a router reboot would."""
        self.run("router", "conntrack", "-F", check=False)  # exits 1 with "0 entries" on an empty table

    # ---- processes ----------------------------------------------------------------------------------

    def proc(self, env, ns, name, argv, ulimit_n=None, etc=None):
        """Start argv in namespace ns as an nptest.Proc (output collected, torn down by env).
        etc: {"hosts": path, ...}: argv alone sees path as /etc/NAME (what it resolves names
        with), in a mount namespace of its own: a copy of /etc, where each NAME links to its path
        (so a change to the file shows at once), bound over /etc. A copy rather than a bind over
        each file: a bind needs its target, and a debootstrap chroot has no /etc/hosts. The
        machine's files are not touched."""
        cmd = self.enter(ns)
        if ulimit_n is not None:
            cmd += ["sh", "-c", f'ulimit -n {ulimit_n} && exec "$@"', "sh"]
        if etc:
            d = tempfile.mkdtemp(dir=env.tmp.name)
            links = " && ".join(f"ln -sf {path} {d}/{n}" for n, path in etc.items())
            cmd += ["unshare", "--mount", "--propagation", mount_propagation(), "sh", "-c",
                    f'cp -a /etc/. {d}/ && {links} && mount --bind {d} /etc && exec "$@"', "sh"]
        return nptest.Proc(env, name, cmd + argv)

    def down(self):
        if self.wire is not None and self.wire.poll() is None:
            self.wire.terminate()
            try:
                self.wire.wait(5)
            except subprocess.TimeoutExpired:
                self.wire.kill()
        for n in reversed(self.made):
            # Kill whatever still runs in the namespace, then delete it.
            r = sh("ip", "netns", "pids", n, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", n, check=False)
        self.made = []
        # ip netns add bind-mounts /run/netns onto itself; leave no mount behind once no namespace
        # is left in it (a chroot cannot be removed with it in place).
        if os.path.isdir("/run/netns") and not os.listdir("/run/netns"):
            sh("umount", "/run/netns", check=False)


def main(tests):
    """A NAT-suite script's entry: --list names its cases; without root every case is skipped
    (exit 77, meson's "skipped"); else the cases named on the command line (or all) run."""
    if sys.argv[1:] == ["--list"]:
        print("\n".join(tests))
        sys.exit(0)
    if os.geteuid() != 0:
        print("the NAT suite needs root (network namespaces): skipped")
        sys.exit(77)
    sys.exit(nptest.run(tests))
