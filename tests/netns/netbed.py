"""A NAT test bed in network namespaces (docs/testing.md, "NAT suite").

    internet 10.77.0.0/24 (a bridge in namespace "wan")
      public   10.77.0.10   np-server
      visitor  10.77.0.20   visitors
      router   10.77.0.1 (wan0) | 192.168.77.1 (lan0): forwarding, nftables masquerade, stateful firewall
    home 192.168.77.0/24
      home     192.168.77.2  np-client and the private services
    with NetBed(second_nat=True), a second home behind its own NAT on the same internet:
      vrouter  10.77.0.2 (wan0) | 192.168.78.1 (lan0)
    vhome 192.168.78.0/24
      vhome    192.168.78.2

Every address lives inside namespaces this module creates (named np<pid>-*), and everything is torn
down on exit, also when a test fails or is interrupted. The router forwards only what the home side
started (conntrack), with nf_conntrack_tcp_loose=0 so that lost NAT state really breaks connections as
a home router's reboot would. public and visitor even get a route to 192.168.77.0/24 through the
router: only the NAT stops them.

Each router's NAT behaviour can be chosen (set_nat): "apdf" (the default: endpoint-independent mapping,
address-and-port-dependent filtering), "eim" (full cone: endpoint-independent mapping and filtering) or
"random" (a new random port per destination). server_delay= puts a user-space link (wire.py) with a
delay between the public host and the internet.
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
VROUTER_WAN, VROUTER_LAN, VHOME_IP = "10.77.0.2", "192.168.78.1", "192.168.78.2"
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


NAT_MODES = ("eim", "apdf", "random")
EIM_TIMEOUT = "120s"  # how long an "eim" mapping admits strangers after the inside's last packet


def nat_ruleset(mode="apdf", wan_input="accept"):
    """A router's nftables tables for a NAT mode (docs/testing.md, "Two NATs and NAT behaviours").
    Every mode forwards what the inside started and drops whatever else comes in to be forwarded.
      apdf: masquerade keeps the inside port where it can (endpoint-independent mapping); only
            replies from the very address:port the inside sent to get in (plain conntrack).
      eim:  the same mapping; an outgoing packet also records its mapping (protocol . mapped port
            -> inside address . port) in the dynamic map @eim, and a new packet from anyone to a
            recorded port is DNATed to that inside address and port (endpoint-independent
            filtering, "full cone"). Ports never mapped stay closed.
      random: masquerade random,fully-random: a new random port per destination (a new conntrack
            entry); filtering as apdf.
    wan_input: "accept" (the bed's default) lets a new packet from the internet to the router's own
    address (one no mapping claims) reach its stack, which answers with an ICMP error or a RST; its
    conntrack entry stays, and a later mapping of the inside whose reply would look the same (a
    punch toward the peer whose own punch arrived first) collides with it and gets another port.
    "drop" drops such a packet in the input hook, before conntrack confirms its entry, as home
    routers' input policy does: no entry is left, nothing is answered (docs/testing.md)."""
    if mode not in NAT_MODES:
        raise ValueError(f"NAT mode {mode!r}: one of {NAT_MODES}")
    if wan_input not in ("accept", "drop"):
        raise ValueError(f"wan_input {wan_input!r}: accept or drop")
    masq = "masquerade random,fully-random" if mode == "random" else "masquerade"
    eim = mode == "eim"
    nat = ['table ip nat {']
    if eim:
        nat += ['  map eim {',
                '    type inet_proto . inet_service : ipv4_addr . inet_service',
                f'    flags dynamic, timeout; timeout {EIM_TIMEOUT}',
                '  }',
                '  chain pre {',
                '    type nat hook prerouting priority dstnat;',
                '    iifname "wan0" meta l4proto { tcp, udp }',
                '      dnat ip addr . port to meta l4proto . th dport map @eim',
                '  }']
    nat += [f'  chain post {{ type nat hook postrouting priority srcnat; oifname "wan0" {masq}; }}']
    if eim:
        # After the masquerade (priority srcnat) the reply tuple holds the mapped port.
        nat += ['  chain mapped {',
                '    type filter hook postrouting priority srcnat + 10;',
                '    oifname "wan0" ct direction original meta l4proto { tcp, udp } update @eim '
                '{ meta l4proto . ct reply proto-dst : ct original ip saddr . ct original proto-src }',
                '  }']
    fw = ['}',
          'table inet fw {',
          '  chain forwarding {',
          '    type filter hook forward priority filter; policy drop;',
          '    ct state established,related accept',
          '    iifname "lan0" oifname "wan0" ct state new accept',
          *(['    iifname "wan0" oifname "lan0" ct status dnat accept'] if eim else []),
          '  }',
          '  chain impair { type filter hook forward priority filter - 10; }',
          *(['  chain input {',
             '    type filter hook input priority filter;',
             '    iifname "wan0" ct state new drop',
             '  }'] if wan_input == "drop" else []),
          '}']
    return "\n".join(nat + fw) + "\n"


ROUTER_NFT = nat_ruleset()


class NetBed:
    def __init__(self, wire=None, hosts=None, second_nat=False, server_delay=None, wan_input="accept"):
        """wire: None for a plain veth between home and router, or dict(delay=, jitter=, loss=,
        reorder=) for the user-space link (wire.py) with those impairments. hosts: more namespaces
        on the internet side, {name: address in 10.77.0.0/24} (a second server, a load balancer).
        second_nat: also a second home, "vhome" (192.168.78.2), behind its own NAT, "vrouter"
        (10.77.0.2). server_delay: milliseconds each way on the public host's link (a wire.py
        between "public" and the internet), so that paths through the server take longer than
        direct ones. Both routers start in NAT mode "apdf" (set_nat), with wan_input (nat_ruleset:
        "drop" keeps a peer's early punch from leaving state on the router)."""
        if os.geteuid() != 0:
            raise Skip("the NAT suite needs root (network namespaces)")
        self.prefix = f"np{os.getpid()}"
        self.hosts = dict(hosts or {})
        self.second_nat = bool(second_nat)
        self.routers = ("router", "vrouter") if self.second_nat else ("router",)
        second = ("vrouter", "vhome") if self.second_nat else ()
        self.ns = {n: f"{self.prefix}-{n}" for n in ("wan", "public", "router", "home", "visitor",
                                                      *second, *self.hosts)}
        self.nat = {r: "apdf" for r in self.routers}
        self.wan_input = {r: wan_input for r in self.routers}
        self.wire = None
        self.server_wire = None
        self.made = []
        atexit.register(self.down)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            self._up(wire, server_delay)
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

    def _up(self, wire, server_delay):
        for n in self.ns.values():
            r = sh("ip", "netns", "add", n, check=False)
            if r.returncode != 0:
                raise Skip(f"cannot create network namespaces: {r.stderr.strip()}")
            self.made.append(n)
            sh("nsenter", f"--net=/run/netns/{n}", "ip", "link", "set", "lo", "up")
        self.ip("wan", "link", "add", "br0", "type", "bridge")
        self.ip("wan", "link", "set", "br0", "up")
        extra = [(ns, f"h{i}") for i, ns in enumerate(self.hosts)]
        vport = [("vrouter", "vrt")] if self.second_nat else []
        for ns, port in (("public", "pub"), ("visitor", "vis"), ("router", "rtr"), *vport, *extra):
            if ns == "public" and server_delay is not None:
                self.server_wire = self._wire(dict(delay=server_delay), "c", "public", "eth0", "wan",
                                              port)
            else:
                self._veth(ns, "wan0" if ns in self.routers else "eth0", "wan", port)
            self.ip("wan", "link", "set", port, "master", "br0")
            self.ip("wan", "link", "set", port, "up")
        if wire is None:
            self._veth("router", "lan0", "home", "eth0")
        else:
            self.wire = self._wire(wire, "a", "router", "lan0", "home", "eth0")
        vaddrs = []
        if self.second_nat:
            self._veth("vrouter", "lan0", "vhome", "eth0")
            vaddrs = [("vrouter", "wan0", VROUTER_WAN + "/24"),
                      ("vrouter", "lan0", VROUTER_LAN + "/24"), ("vhome", "eth0", VHOME_IP + "/24")]
        for ns, dev, addr in (("public", "eth0", PUBLIC_IP + "/24"), ("visitor", "eth0", VISITOR_IP + "/24"),
                              ("router", "wan0", ROUTER_WAN + "/24"), ("router", "lan0", ROUTER_LAN + "/24"),
                              ("home", "eth0", HOME_IP + "/24"), *vaddrs,
                              *((ns, "eth0", ip + "/24") for ns, ip in self.hosts.items())):
            self.ip(ns, "addr", "add", addr, "dev", dev)
            self.ip(ns, "link", "set", dev, "up")
        self.ip("home", "route", "add", "default", "via", ROUTER_LAN)
        for ns in ("public", "visitor"):
            self.ip(ns, "route", "add", "192.168.77.0/24", "via", ROUTER_WAN)
        if self.second_nat:
            self.ip("vhome", "route", "add", "default", "via", VROUTER_LAN)
            for ns in ("public", "visitor"):
                self.ip(ns, "route", "add", "192.168.78.0/24", "via", VROUTER_WAN)
        for r in self.routers:
            self.run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            sh(*self.enter(r), "nft", "-f", "-", input=nat_ruleset("apdf", self.wan_input[r]))
            # Loading the nat table brings conntrack into the namespace; now its sysctls exist.
            self.run(r, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0")

    def _wire(self, p, tag, ns_a, name_a, ns_b, name_b):
        """A wire.py link between name_a in ns_a and name_b in ns_b; returns its process. tag tells
        the TAP devices' temporary names apart."""
        a, b = f"{self.prefix}{tag}0"[-15:], f"{self.prefix}{tag}1"[-15:]
        argv = [sys.executable, os.path.join(HERE, "wire.py"), a, b, "--delay", str(p.get("delay", 0)),
                "--jitter", str(p.get("jitter", 0)), "--loss", str(p.get("loss", 0)),
                "--reorder", str(p.get("reorder", 0))]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"wire.py did not start: {proc.stderr.read()}")
        sh("ip", "link", "set", a, "netns", self.ns[ns_a])
        sh("ip", "link", "set", b, "netns", self.ns[ns_b])
        self.ip(ns_a, "link", "set", a, "name", name_a)
        self.ip(ns_b, "link", "set", b, "name", name_b)
        return proc

    # ---- NAT behaviour ------------------------------------------------------------------------------

    def set_nat(self, router, mode, wan_input=None):
        """Give router ("router", or "vrouter" with second_nat) NAT mode "eim", "apdf" or "random"
        (nat_ruleset tells what each does), for UDP and TCP alike: its tables are replaced in one
        nft transaction (each declared, deleted, made anew), so no packet sees a mix. Existing
        conntrack entries keep the mappings they have; flush_conntrack(router) forgets them too.
        wan_input: "accept" or "drop" (nat_ruleset), None to keep the router's."""
        if router not in self.routers:
            raise ValueError(f"no router {router!r} in this bed: {self.routers}")
        wan_input = wan_input or self.wan_input[router]
        script = ("table ip nat\ndelete table ip nat\ntable inet fw\ndelete table inet fw\n" +
                  nat_ruleset(mode, wan_input))
        sh(*self.enter(router), "nft", "-f", "-", input=script)
        self.nat[router], self.wan_input[router] = mode, wan_input

    # ---- faults -------------------------------------------------------------------------------------

    def cut(self):
        """Drop every forwarded packet, both ways, silently (no RST, no ICMP)."""
        self.run("router", "nft", "add", "rule", "inet", "fw", "impair", "drop")

    def restore(self):
        self.run("router", "nft", "flush", "chain", "inet", "fw", "impair")

    def flush_conntrack(self, router="router"):
        """Forget every NAT mapping, as a router reboot would."""
        self.run(router, "conntrack", "-F", check=False)  # exits 1 with "0 entries" on an empty table

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
        for w in (self.wire, self.server_wire):
            if w is not None and w.poll() is None:
                w.terminate()
                try:
                    w.wait(5)
                except subprocess.TimeoutExpired:
                    w.kill()
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
