#!/usr/bin/python3
"""End to end: real kernels, real clients and servers, the balancer seat
taken in turn by the kernel's nftables DNAT and by lbd.

    benches/e2e.py [--runs 3] [--seconds 10] [--seats nft,lbd,xdp]
                   [--connections 50] [--smoke] [--json FILE]
                   [--no-build] [--bin-dir DIR] [--work DIR]

(as root). Unless --no-build, it first installs what is missing
(testbed/install-deps.sh, idempotent: wrk, nginx-light, iperf3, nftables)
and builds lbd (`cargo build --release --bin lbd`).

Testbed (namespaces and veths named after the runner's PID, all removed
when it ends, also on an error or Ctrl-C):

  [T-client]        [T-lb]  balancer seat       [T-sw]           [T-be1..3]
   eth0 10.0.0.2 <-> T-e           T-i <-----> sw-up -- br0 -- eth0 10.1.0.1N
   gw 10.0.0.1                                                   gw 10.1.0.1
                                                                 nginx :80
                                                                 (be1: iperf3 :5201)

VIP 10.0.0.100: tcp 80 to the three nginx, tcp 5201 to be1's iperf3.
Offloads as in testbed/topology.sh: no GRO/LRO on the seat's veths (frames
above an mbuf stall af_packet), software checksums in client and backends
(`ethtool -K eth0 tx off`, which also turns TSO off there). Same settings
for every seat. The backends route back through the seat (no SNAT), so a
backend sees the client's own address.

Seats (--seats, in this order within each run; runs back to back):
  nft    the seat's kernel: addresses on both veths, ip_forward, nftables
         DNAT, `numgen inc mod 3` round robin over the nginx backends
  lbd    lbd, 1 worker, net_af_packet on both veths (framecnt=4096, see
         below), --no-huge, --no-pci, exception off (the seat namespace
         holds no address at all), the worker pinned to the last CPU
  xdp    the same lbd on net_af_xdp (rx/tx_descriptors 4096)
  lbd:K=V:K=V ...   lbd with other net_af_packet arguments (framecnt=512
         for DPDK's default ring, qdisc_bypass=0, ...); `idle_sleep=20us`,
         `burst=N` and `cpus=0+1` go to lcores, `float=1` leaves the worker
         free to run on any allowed CPU (an EAL --lcores set instead of a
         pin), `rxd=N`/`txd=N` to the
         ports' rx/tx_descriptors (af_xdp's ring sizes); `nice=N` runs lbd under
         nice(1) and `tcdrop=1` drops what the seat's kernel receives on
         the veths after af_packet has it (diagnostics)
         (xdp:K=V likewise for net_af_xdp)

Why framecnt=4096 (af_xdp: 4096 descriptors) and the last CPU: with
DPDK's 512-frame ring, bulk TCP lost ~5 % of its frames in the ring (one
retransmission each; af_xdp with 1024 descriptors ~1.5 %), and every
lbd pins worker 1 to the first allowed CPU unless told otherwise, so on a
shared host concurrent lbd instances all busy-poll CPU 0 (RESULTS.md).

Per seat and run: wrk keep-alive (req/s), wrk with `Connection: close`
(each request a new connection: conn/s), iperf3 client -> be1 through the
VIP (Gbit/s of the receiver, retransmits from iperf3's --json), and whether
the backends saw the client's address (probe requests logged by nginx).
Every figure is parsed from the tool's final summary (wrk's last lines,
iperf3's --json end record) after the tool exits. It also records CPU time
per component (/proc) and, for lbd, its counters (--stats-out).

--threaded-napi (an experiment, every seat): GRO and a NAPI kernel thread
on the bridge's veth towards the seat, TSO off on the seat's backend veth,
so that the bridge and backend work no longer runs inside the seat's
transmitting system call (RESULTS.md, end to end, item 5).

--rps CPUS (an experiment, every seat): receive packet steering to CPUS on
the bridge's veth towards the seat and on the client's eth0, so that what
the seat transmits is processed in those CPUs' backlog rather than inside
the transmitting system call (RESULTS.md, "Round two, eighth sitting").

2 CPUs shared by client, servers, the seat and anything else running:
absolute figures move with the load average (recorded); compare seats
within one sitting. --smoke: one run of 1-second tools, checks that the
runner works, says nothing about speed.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import lbdstats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIP = "10.0.0.100"
CLIENT_IP = "10.0.0.2"
BACKENDS = [f"10.1.0.1{i}" for i in (1, 2, 3)]
IPERF_PORT = 5201


def log(msg):
    print(f"e2e: {msg}", file=sys.stderr, flush=True)


def sh(*cmd, check=True, capture=False, timeout=60):
    r = subprocess.run(list(cmd), text=True, capture_output=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")
    return r.stdout if capture else r


def nsx(ns, *cmd, **kw):
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def proc_stat():
    """Machine-wide CPU jiffies by kind."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return dict(zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), v))


def task_cpu(pid):
    """{thread name: [utime, stime] jiffies} of every thread of `pid`."""
    out = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            name = s[s.index("(") + 1:s.rindex(")")]
            fields = s[s.rindex(")") + 2:].split()
            out[f"{name}/{tid}"] = [int(fields[11]), int(fields[12])]
    except OSError:
        pass
    return out


def task_sched(pid):
    """{thread name: [ns on CPU, ns runnable but waiting for a CPU,
    timeslices, voluntary and involuntary context switches]} of `pid`'s
    threads (/proc/PID/task/TID/schedstat and status)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, wait, slices = (int(x) for x in f.read().split()[:3])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
            name = st["Name"].strip()
            out[f"{name}/{tid}"] = [run, wait, slices, int(st["voluntary_ctxt_switches"]), int(st["nonvoluntary_ctxt_switches"])]
        except (OSError, ValueError, KeyError):
            continue
    return out


def link_stats(ns):
    """{ifname: counters} of the namespace's links (`ip -s -j link`)."""
    out = {}
    for l in json.loads(nsx(ns, "ip", "-s", "-j", "link", "show", capture=True)):
        st = l.get("stats64", {})
        out[l["ifname"]] = {f"{d}_{k}": st.get(d, {}).get(k, 0) for d in ("rx", "tx") for k in ("packets", "dropped", "errors")}
    return out


def delta(b, a):
    if isinstance(b, dict):
        return {k: delta(b[k], a.get(k, 0) if isinstance(a, dict) else 0) for k in b}
    return b - a


def sweep_stale_testbeds():
    """Removes what earlier sittings left when they could not clean up (a
    SIGKILL, e.g. when the machine's session ended under a test run): the
    namespaces of a testbed `e2eTAG-*` and the DPDK runtime folders
    `lbde2ePIDrN` whose e2e.py is gone. A sitting's names carry its PID
    (TAG is the PID modulo 100000), so a live sitting's are recognised and
    kept; a namespace with a process still in it is kept too (nothing is
    killed here)."""
    live = set()
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and b"e2e.py" in open(f"/proc/{d}/cmdline", "rb").read():
                live.add(int(d))
        except OSError:
            pass
    tags = {pid % 100000 for pid in live}
    for line in sh("ip", "netns", "list", capture=True).splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"e2e(\d+)-(client|lb|sw|be\d)$", name)
        if m and int(m[1]) not in tags and not sh("ip", "netns", "pids", name, check=False, capture=True).strip():
            log(f"removing namespace {name}, left by an earlier sitting")
            sh("ip", "netns", "del", name, check=False)
    for d in os.listdir("/var/run/dpdk") if os.path.isdir("/var/run/dpdk") else []:
        m = re.match(r"lbde2e(\d+)r\d+$", d)
        if m and int(m[1]) not in live:
            log(f"removing /var/run/dpdk/{d}, left by an earlier sitting")
            shutil.rmtree(os.path.join("/var/run/dpdk", d), ignore_errors=True)


class Testbed:
    """Namespaces, veths and processes of one sitting. close() removes all
    of them whatever happened: processes by the PIDs kept here, then
    what is left in the namespaces this object created (their own PIDs,
    `ip netns pids`), then the namespaces, which takes their veths."""

    def __init__(self, tag, work, threaded_napi=False, rps=None):
        self.tag, self.work = tag, work
        self.threaded_napi = threaded_napi
        self.rps = rps
        self.namespaces = []
        self.procs = []  # (name, Popen)
        self.ns = {k: f"{tag}-{k}" for k in ("client", "lb", "sw", "be1", "be2", "be3")}
        self.ext, self.int = f"{tag}-e", f"{tag}-i"

    def spawn(self, name, ns, cmd, log_name=None):
        out = open(os.path.join(self.work, log_name or f"{name}.log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        out.close()
        self.procs.append((name, p))
        return p

    def up(self):
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            nsx(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            nsx(ns, "ip", "link", "set", "lo", "up")
        lb, cl, sw = self.ns["lb"], self.ns["client"], self.ns["sw"]
        # Created straight in their namespaces: nothing of ours in the root one.
        sh("ip", "link", "add", self.ext, "netns", lb, "type", "veth", "peer", "name", "eth0", "netns", cl)
        sh("ip", "link", "add", self.int, "netns", lb, "type", "veth", "peer", "name", "sw-up", "netns", sw)
        for dev in (self.ext, self.int):
            nsx(lb, "ethtool", "-K", dev, "gro", "off", "lro", "off", check=False)
            nsx(lb, "ip", "link", "set", dev, "up")
        nsx(cl, "ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        nsx(cl, "ip", "link", "set", "eth0", "up")
        nsx(cl, "ip", "route", "add", "default", "via", "10.0.0.1")
        nsx(cl, "ethtool", "-K", "eth0", "tx", "off")
        # Connection: close at 10k+ conn/s: the default ephemeral range
        # (28 k ports) would run out within seconds.
        nsx(cl, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
        nsx(sw, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        nsx(sw, "ip", "link", "set", "br0", "up")
        nsx(sw, "ip", "link", "set", "sw-up", "master", "br0", "up")
        if self.threaded_napi:
            # Experiment: the bridge side of the seat's backend veth gets a
            # NAPI context of its own (GRO on) run by a kernel thread, so
            # what arrives from the seat is processed there instead of in
            # the softirq of the sender's system call.
            nsx(sw, "ethtool", "-K", "sw-up", "gro", "on")
            nsx(sw, "sh", "-c", "echo 1 > /sys/class/net/sw-up/threaded")
            # veth takes the NAPI path only for frames from a sender
            # without TSO (veth_skb_is_eligible_for_gro).
            nsx(self.ns["lb"], "ethtool", "-K", self.int, "tso", "off")
        if self.rps is not None:
            # Experiment: receive packet steering on the two veths that the
            # seat transmits into (the bridge's port towards the seat, the
            # client's eth0), so what arrives there is processed in the
            # backlog of the CPUs named, not in the softirq of the seat's
            # transmitting system call.
            # rps_cpus takes comma-separated groups of 32 bits, highest first.
            bits = 0
            for c in set(self.rps):
                bits |= 1 << c
            groups = []
            while True:
                groups.append(format(bits & 0xFFFFFFFF, "08x"))
                bits >>= 32
                if not bits:
                    break
            mask = ",".join(reversed(groups))
            nsx(sw, "sh", "-c", f"echo {mask} > /sys/class/net/sw-up/queues/rx-0/rps_cpus")
            nsx(cl, "sh", "-c", f"echo {mask} > /sys/class/net/eth0/queues/rx-0/rps_cpus")
        www = os.path.join(self.work, "www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("<html><body><h1>lbd e2e</h1><p>" + "x" * 512 + "</p></body></html>\n")
        with open(os.path.join(www, "probe"), "w") as f:
            f.write("probe\n")
        os.chmod(self.work, 0o755)
        for i in (1, 2, 3):
            be = self.ns[f"be{i}"]
            sh("ip", "link", "add", f"sw{i}-{self.tag}", "netns", sw, "type", "veth", "peer", "name", "eth0", "netns", be)
            nsx(sw, "ip", "link", "set", f"sw{i}-{self.tag}", "master", "br0", "up")
            nsx(be, "ip", "addr", "add", f"{BACKENDS[i - 1]}/24", "dev", "eth0")
            nsx(be, "ip", "link", "set", "eth0", "up")
            nsx(be, "ip", "route", "add", "default", "via", "10.1.0.1")
            nsx(be, "ethtool", "-K", "eth0", "tx", "off")
            self.spawn(f"nginx-be{i}", be, ["nginx", "-c", self.nginx_conf(i), "-e", os.path.join(self.work, f"nginx-be{i}.err")])
        self.spawn("iperf3-server", self.ns["be1"], ["iperf3", "-s", "-p", str(IPERF_PORT)])
        for i in (1, 2, 3):
            self.wait_listen(self.ns[f"be{i}"], 80)
        self.wait_listen(self.ns["be1"], IPERF_PORT)

    def nginx_conf(self, i):
        d = os.path.join(self.work, f"be{i}")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "nginx.conf")
        # Only /probe is logged: the client-address check, not a disk
        # writer competing for the 2 CPUs during the measurements.
        # keepalive_requests: wrk's keep-alive connections stay open for the
        # whole run (nginx's default closes them after 1000 requests).
        with open(path, "w") as f:
            f.write(f"""daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.work}/nginx-be{i}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    map $uri $probe {{ /probe 1; default 0; }}
    log_format who '$remote_addr $uri';
    server {{
        listen 80 backlog=4096;
        root {self.work}/www;
        access_log {d}/access.log who if=$probe;
    }}
}}
""")
        return path

    def wait_listen(self, ns, port, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if nsx(ns, "ss", "-H", "-ltn", f"sport = :{port}", capture=True).strip():
                return
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}); see {self.work}/{name}.log")
            time.sleep(0.1)
        raise RuntimeError(f"nothing listens on tcp/{port} in {ns}")

    def stop(self, name, p, sig=signal.SIGTERM, wait=10):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def close(self):
        interrupted = None
        for name, p in list(self.procs):
            try:
                self.stop(name, p)
            except (KeyboardInterrupt, SystemExit) as e:
                interrupted = e
                p.kill()
        for ns in self.namespaces:
            # Left-overs in our own namespaces (an nginx worker whose master
            # was killed): by their PIDs, only those inside ns.
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.namespaces = []
        if interrupted:
            raise interrupted

    def flush_neighbours(self):
        for k in ("client", "be1", "be2", "be3", "lb"):
            nsx(self.ns[k], "ip", "neigh", "flush", "all", check=False)


class NftSeat:
    name = "nft"

    def __init__(self, tb):
        self.tb = tb
        self.table = f"e2e{os.getpid()}"

    def start(self):
        lb = self.tb.ns["lb"]
        nsx(lb, "ip", "addr", "add", "10.0.0.1/24", "dev", self.tb.ext)
        nsx(lb, "ip", "addr", "add", f"{VIP}/32", "dev", self.tb.ext)
        nsx(lb, "ip", "addr", "add", "10.1.0.1/24", "dev", self.tb.int)
        nsx(lb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = f"""table ip {self.table} {{
    chain pre {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {VIP} tcp dport 80 dnat to numgen inc mod 3 map {{ 0 : {BACKENDS[0]}, 1 : {BACKENDS[1]}, 2 : {BACKENDS[2]} }}
        ip daddr {VIP} tcp dport {IPERF_PORT} dnat to {BACKENDS[0]}
    }}
}}
"""
        path = os.path.join(self.tb.work, "nft.rules")
        with open(path, "w") as f:
            f.write(rules)
        nsx(lb, "nft", "-f", path)

    def stop(self):
        lb = self.tb.ns["lb"]
        nsx(lb, "nft", "delete", "table", "ip", self.table, check=False)
        nsx(lb, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        for dev in (self.tb.ext, self.tb.int):
            nsx(lb, "ip", "addr", "flush", "dev", dev, check=False)
        # conntrack entries of the seat die with the table's users; flush
        # what is left so the next seat starts clean.
        nsx(lb, "sh", "-c", "command -v conntrack >/dev/null && conntrack -F", check=False)

    def procs(self):
        return {}

    def counters(self):
        return {}


class LbdSeat:
    """lbd in the seat namespace. `kind` af_packet or af_xdp; `extra`
    vdev arguments; lcores keys idle_sleep/burst taken out of extra."""

    def __init__(self, tb, spec, bin_dir, run_no):
        self.tb, self.name = tb, spec
        kind, *extra = spec.split(":")
        self.pmd = "net_af_xdp" if kind == "xdp" else "net_af_packet"
        self.lcores = {"workers": 1}
        self.nice = None
        self.descriptors = {}
        self.tcdrop = False
        self.floating = False
        self.vdev_extra = []
        for kv in extra:
            k, _, v = kv.partition("=")
            if k in ("idle_sleep",):
                self.lcores[k] = v
            elif k == "burst":
                self.lcores[k] = int(v)
            elif k == "cpus":
                self.lcores[k] = [int(c) for c in v.split("+")]
            elif k in ("rxd", "txd"):
                # ports[].rx/tx_descriptors: af_xdp sizes its rings by them
                # (af_packet ignores them; its ring is framecnt).
                self.descriptors[{"rxd": "rx_descriptors", "txd": "tx_descriptors"}[k]] = int(v)
            elif k == "tcdrop":
                # After af_packet's tap has its copy, an nftables netdev
                # ingress chain drops the frame, so the seat's kernel does not also run it through
                # its IP input (a route lookup ending in a drop, per frame).
                self.tcdrop = v == "1"
            elif k == "float":
                # The worker not pinned: lcore 1 may run on any allowed
                # CPU (an EAL --lcores set), so the kernel's scheduler can
                # move it away from the clients and servers it shares with.
                self.floating = v == "1"
            elif k == "nice":
                # Diagnostic: the whole of lbd at a lower priority, to see
                # what its share of the CPUs costs the rest of the path.
                self.nice = int(v)
            else:
                self.vdev_extra.append(kv)
        # af_packet's default RX ring (framecnt=512: 3-5 ms of a bulk TCP
        # flow) overflows whenever the worker is off its CPU for a
        # scheduler slice, and every lost frame is a TCP retransmission
        # (benches/RESULTS.md, end to end). lbd:framecnt=512 restores it.
        if self.pmd == "net_af_packet" and not any(kv.startswith("framecnt=") for kv in self.vdev_extra):
            self.vdev_extra.append("framecnt=4096")
        # The same for af_xdp, whose rings are the port's descriptors
        # (lbd's default 1024: 10-20 k retransmits per 10 s; 4096: none).
        if self.pmd == "net_af_xdp":
            self.descriptors.setdefault("rx_descriptors", 4096)
            self.descriptors.setdefault("tx_descriptors", 4096)
        # lbd pins worker 1 to the first allowed CPU by default, and so
        # does every other lbd on the machine: on a shared host they all
        # busy-poll on CPU 0. The bench takes the last one (cpus=N
        # overrides).
        if self.floating:
            # lbd refuses lcores.cpus beside an EAL --lcores map.
            if "cpus" in self.lcores:
                raise SystemExit(f"seat {spec}: float=1 and cpus= exclude each other")
        else:
            self.lcores.setdefault("cpus", [sorted(os.sched_getaffinity(0))[-1]])
        self.bin = os.path.join(bin_dir, "lbd")
        self.prefix = f"lbde2e{os.getpid()}r{run_no}"
        self.p = None
        self.seq = 0
        self.stats_path = os.path.join(tb.work, f"lbd-stats-{run_no}.json")
        self.log_path = None

    def config(self):
        tb = self.tb
        vd = []
        for i, dev in enumerate((tb.ext, tb.int)):
            base = f"{self.pmd}{i},iface={dev}"
            if self.pmd == "net_af_xdp":
                base += ",start_queue=0,queue_count=1"
            vd += ["--vdev", ",".join([base] + self.vdev_extra)]
        eal = ["--no-pci", "--no-huge", "-m", "1024", "--file-prefix", self.prefix, "--no-telemetry"] + vd
        if self.floating:
            cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
            eal.append(f"--lcores=0@({cpus}),1@({cpus})")
        cfg = {
            "eal": eal,
            "lcores": self.lcores,
            # exception off: the seat namespace keeps no address of its own,
            # so its kernel neither answers ARP nor forwards beside lbd.
            "ports": [
                {"name": "ext", "device": f"{self.pmd}0", "address": "10.0.0.1/24", "exception": "off", **self.descriptors},
                {"name": "int", "device": f"{self.pmd}1", "address": "10.1.0.1/24", "exception": "off", **self.descriptors},
            ],
            "listeners": [
                {"name": "web", "vip": VIP, "protocol": "tcp", "port": 80, "scheduler": "maglev",
                 "backends": [{"address": b, "port": 80} for b in BACKENDS]},
                {"name": "iperf", "vip": VIP, "protocol": "tcp", "port": IPERF_PORT,
                 "backends": [{"address": BACKENDS[0], "port": IPERF_PORT}]},
            ],
            # Connection: close at ~15 k/s for 10 s, each session lingering
            # for its TIME_WAIT/FIN timeout: room for all of them.
            "sessions": {"capacity_per_worker": 1_000_000},
            "control": {"socket": os.path.join(tb.work, f"lbd-{self.prefix}.sock")},
            "metrics": {"listen": "off"},
        }
        return cfg

    def start(self):
        cfg = self.config()
        path = os.path.join(self.tb.work, f"lbd-{self.prefix}.yaml")
        with open(path, "w") as f:
            json.dump(cfg, f)  # JSON is YAML
        self.cfg = cfg
        self.log_path = os.path.join(self.tb.work, f"lbd-{self.prefix}.log")
        if os.path.exists(self.stats_path):
            os.remove(self.stats_path)
        if self.tcdrop:
            rules = os.path.join(self.tb.work, "ingress-drop.nft")
            with open(rules, "w") as f:
                f.write("table netdev e2edrop {\n" + "".join(
                    f"    chain {n} {{ type filter hook ingress device \"{dev}\" priority 0; policy drop; }}\n"
                    for n, dev in (("ext", self.tb.ext), ("int", self.tb.int))) + "}\n")
            nsx(self.tb.ns["lb"], "nft", "-f", rules)
        nice = ["nice", "-n", str(self.nice)] if self.nice is not None else []
        self.p = self.tb.spawn("lbd", self.tb.ns["lb"], nice + [self.bin, "-c", path, "--stats-out", self.stats_path],
                               log_name=f"lbd-{self.prefix}.log")
        deadline = time.time() + 60
        while "lbd: ready" not in open(self.log_path).read():
            if self.p.poll() is not None:
                raise RuntimeError(f"lbd exited ({self.p.returncode}): {open(self.log_path).read()[-2000:]}")
            if time.time() > deadline:
                raise RuntimeError(f"lbd not ready: {open(self.log_path).read()[-2000:]}")
            time.sleep(0.05)

    def lbd_pid(self):
        # `ip netns exec` execs lbd: the Popen PID is lbd's own.
        return self.p.pid

    def procs(self):
        return {"lbd": self.lbd_pid()}

    def counters(self):
        exited = lambda: "lbd exited" if self.p.poll() is not None else None
        d = lbdstats.request(self.lbd_pid(), self.stats_path, self.seq, exited, timeout=20)
        self.seq = d["seq"]
        return d

    def stop(self):
        if self.p is not None:
            self.tb.stop("lbd", self.p, signal.SIGTERM, wait=30)
            self.p = None
        shutil.rmtree(f"/var/run/dpdk/{self.prefix}", ignore_errors=True)
        if self.tcdrop:
            nsx(self.tb.ns["lb"], "nft", "delete", "table", "netdev", "e2edrop", check=False)


def parse_wrk(out):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    r = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not r:
        raise RuntimeError(f"no summary in wrk's output: {out[-1500:]}")
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    n2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = dict(zip(("connect", "read", "write", "timeout"), map(int, e.groups()))) if e else \
        {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    return {"requests": int(m.group(1)), "per_second": float(r.group(1)), "errors": errs,
            "non_2xx": int(n2.group(1)) if n2 else 0}


def parse_iperf(out):
    try:
        d = json.loads(out)
        end = d["end"]
        return {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
                "sender_gbps": end["sum_sent"]["bits_per_second"] / 1e9,
                "retransmits": int(end["sum_sent"].get("retransmits", 0))}
    except (ValueError, KeyError) as e:
        raise RuntimeError(f"iperf3 gave no end record ({e}): {out[-1500:]}")


class Sitting:
    def __init__(self, tb, args):
        self.tb, self.args = tb, args

    def measured(self, seat, fn):
        """Runs fn() and records machine CPU, per-process CPU and link
        counters around it."""
        tb = self.tb
        pids = dict(seat.procs())
        for name, p in tb.procs:
            if name.startswith(("nginx", "iperf3")):
                pids[name] = p.pid
        a_cpu, a_tasks = proc_stat(), {k: task_cpu(v) for k, v in pids.items()}
        a_links = {ns: link_stats(tb.ns[ns]) for ns in ("lb", "client")}
        a_lbd = seat.counters()
        a_sched = task_sched(pids["lbd"]) if "lbd" in pids else {}
        t0 = time.time()
        res = fn()
        dt = time.time() - t0
        b_cpu, b_tasks = proc_stat(), {k: task_cpu(v) for k, v in pids.items()}
        b_links = {ns: link_stats(tb.ns[ns]) for ns in ("lb", "client")}
        b_lbd = seat.counters()
        b_sched = task_sched(pids["lbd"]) if "lbd" in pids else {}
        hz = os.sysconf("SC_CLK_TCK")
        cpu = delta(b_cpu, a_cpu)
        total = max(1, sum(cpu.values()))
        res["cpu_share"] = {k: round(v / total, 3) for k, v in cpu.items()}
        res["cpu_seconds"] = {k: round(sum(sum(v) - sum(a_tasks[k].get(t, [0, 0])) for t, v in b_tasks[k].items()) / hz, 2)
                              for k in pids}
        if "lbd" in pids:
            res["lbd_threads"] = {t: [round((u - a_tasks["lbd"].get(t, [0, 0])[i]) / hz, 2) for i, u in enumerate(v)]
                                  for t, v in b_tasks["lbd"].items()}
        res["links"] = {ns: {dev: delta(b_links[ns][dev], a_links[ns].get(dev, {})) for dev in b_links[ns]}
                        for ns in b_links}
        if b_sched:
            # The worker only: on CPU, waiting for one (its RX rings fill
            # meanwhile), context switches.
            for t, v in b_sched.items():
                if t.startswith("rte-worker") and t in a_sched:
                    d = [x - y for x, y in zip(v, a_sched[t])]
                    res["lbd_worker_sched"] = {"on_cpu_s": round(d[0] / 1e9, 3), "runnable_waiting_s": round(d[1] / 1e9, 3),
                                               "timeslices": d[2], "voluntary_switches": d[3], "involuntary_switches": d[4]}
        if b_lbd:
            res["lbd"] = lbd_summary(a_lbd, b_lbd)
            # af_packet and af_xdp report no receive drops to DPDK: frames
            # the kernel could not put into a full ring show only as the
            # difference between what the seat's veth received and what lbd
            # received (both read around the same window; a few frames in
            # flight at either end are noise).
            for port, dev in zip(res["lbd"]["ports"], (tb.ext, tb.int)):
                port["kernel_rx_minus_lbd_rx"] = res["links"]["lb"][dev]["rx_packets"] - port.get("rx_packets", 0)
        res["wall_seconds"] = round(dt, 2)
        return res

    def wrk(self, close):
        a = self.args
        cmd = ["wrk", "-t", str(a.threads), "-c", str(a.connections), "-d", f"{a.seconds:g}s", "--timeout", "5s"]
        if close:
            cmd += ["-H", "Connection: close"]
        r = nsx(self.tb.ns["client"], *cmd, f"http://{VIP}/", check=False, timeout=a.seconds + 60)
        if r.returncode != 0:
            raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.strip()} {r.stdout[-500:]}")
        return parse_wrk(r.stdout)

    def iperf(self):
        a = self.args
        r = nsx(self.tb.ns["client"], "iperf3", "-c", VIP, "-p", str(IPERF_PORT), "-t", f"{a.seconds:g}", "-J",
                check=False, timeout=a.seconds + 60)
        if r.returncode != 0:
            raise RuntimeError(f"iperf3 failed ({r.returncode}): {r.stdout[-800:]} {r.stderr.strip()}")
        return parse_iperf(r.stdout)

    def probe(self, n, timeout=30):
        """n requests for /probe through the VIP once the seat answers;
        returns the addresses each backend logged for them."""
        tb = self.tb
        logs = [os.path.join(tb.work, f"be{i}", "access.log") for i in (1, 2, 3)]
        for p in logs:
            open(p, "a").close()
        before = [os.path.getsize(p) for p in logs]
        deadline = time.time() + timeout
        ok = 0
        while ok < n:
            r = nsx(tb.ns["client"], "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", f"http://{VIP}/probe",
                    check=False, capture=False, timeout=10)
            if r.stdout.strip() == "200":
                ok += 1
            elif time.time() > deadline:
                raise RuntimeError(f"the VIP does not answer through seat (curl: {r.stdout!r} {r.stderr.strip()})")
            else:
                time.sleep(0.2)
        seen = {}
        # nginx writes each line as the request ends; curl has its answer
        # by then, but give the write a moment.
        deadline = time.time() + 5
        while True:
            seen = {}
            for i, p in enumerate(logs):
                with open(p) as f:
                    f.seek(before[i])
                    for line in f:
                        seen.setdefault(f"be{i + 1}", []).append(line.split()[0])
            if sum(map(len, seen.values())) >= n or time.time() > deadline:
                return seen
            time.sleep(0.1)

    def seat_run(self, seat):
        self.tb.flush_neighbours()
        seat.start()
        try:
            seen = self.probe(6)
            addrs = sorted({a for v in seen.values() for a in v})
            row = {"seat": seat.name, "client_ip_kept": addrs == [CLIENT_IP], "backend_saw": addrs,
                   "lbd_config": {k: seat.cfg[k] for k in ("eal", "lcores")} if hasattr(seat, "cfg") else None,
                   "probes_per_backend": {k: len(v) for k, v in sorted(seen.items())}}
            tools = self.args.tools
            if "keepalive" in tools:
                row["keepalive"] = self.measured(seat, lambda: self.wrk(False))
            if "close" in tools:
                row["close"] = self.measured(seat, lambda: self.wrk(True))
            if "iperf" in tools:
                row["iperf"] = self.measured(seat, self.iperf)
            row["loadavg"] = loadavg()
            return row
        finally:
            seat.stop()


def lbd_summary(a, b):
    """What lbd counted during the seat's three tools."""
    out = {"drops_total": b.get("drops_total", 0) - a.get("drops_total", 0)}
    drops = {}
    for k, v in (b.get("drops") or {}).items():
        if isinstance(v, (int, float)):
            d = v - (a.get("drops") or {}).get(k, 0)
            if d:
                drops[k] = d
    out["drops"] = drops
    ports = []
    for pb, pa in zip(b.get("ports", []), a.get("ports", [])):
        ports.append({k: pb[k] - pa.get(k, 0) for k in pb if isinstance(pb[k], (int, float)) and not isinstance(pb[k], bool)})
        ports[-1]["name"] = pb.get("name")
        dev_b, dev_a = pb.get("device_stats") or {}, pa.get("device_stats") or {}
        ports[-1]["device_stats"] = {k: v - dev_a.get(k, 0) for k, v in dev_b.items() if isinstance(v, (int, float))}
    out["ports"] = ports
    ev_b, ev_a = b.get("events") or {}, a.get("events") or {}
    out["events"] = {k: v - ev_a.get(k, 0) for k, v in ev_b.items() if v - ev_a.get(k, 0)}
    if out["events"].get("polls"):
        out["busy_poll_share"] = round(out["events"].get("busy_polls", 0) / out["events"]["polls"], 4)
    return out


def med_range(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def summarise(rows, seats):
    """Per seat: medians and ranges over the runs (a tool left out with
    --tools has no entry)."""
    table = []
    for s in seats:
        rs = [r for r in rows if r["seat"] == s]
        if not rs:
            continue
        t = {"seat": s, "client_ip_kept": all(r["client_ip_kept"] for r in rs)}
        for tool, key in (("keepalive", "keepalive_rps"), ("close", "close_cps")):
            if tool in rs[0]:
                t[key] = med_range([round(r[tool]["per_second"], 1) for r in rs])
                t[tool + "_errors"] = [sum(r[tool]["errors"].values()) + r[tool]["non_2xx"] for r in rs]
        if "iperf" in rs[0]:
            t["iperf_gbps"] = med_range([round(r["iperf"]["gbps"], 3) for r in rs])
            t["iperf_retransmits"] = med_range([r["iperf"]["retransmits"] for r in rs])
            t["idle_share_iperf"] = [r["iperf"]["cpu_share"]["idle"] for r in rs]
            if "lbd" in rs[0]["iperf"]["cpu_seconds"]:
                t["lbd_cpu_share_iperf"] = [round(r["iperf"]["cpu_seconds"]["lbd"] / max(0.01, r["iperf"]["wall_seconds"]), 2) for r in rs]
                t["rx_ring_drops_iperf"] = [r["iperf"]["lbd"]["ports"][0]["kernel_rx_minus_lbd_rx"] for r in rs]
        table.append(t)
    return table


def k(x):
    return f"{x / 1000:.1f} k"


def cell(t, key, fmt, runs):
    m = t.get(key)
    if not m:
        return "–"
    return fmt(m["median"]) + (f" ({fmt(m['min'])}–{fmt(m['max'])})" if runs > 1 else "")


def print_table(table, runs):
    print("| in the balancer seat | keep-alive req/s | conn/s (Connection: close) | iperf3 Gbit/s | iperf3 retransmits | client IP kept |")
    print("|---|---|---|---|---|---|")
    for t in table:
        errs = sum(t.get("close_errors", [])) + sum(t.get("keepalive_errors", []))
        print(f"| {t['seat']} | {cell(t, 'keepalive_rps', k, runs)} | {cell(t, 'close_cps', k, runs)}"
              + (f", {errs} socket errors" if errs else "")
              + f" | {cell(t, 'iperf_gbps', lambda x: f'{x:.2f}', runs)} | {cell(t, 'iperf_retransmits', lambda x: f'{x:.0f}', runs)}"
              + f" | {'yes' if t['client_ip_kept'] else 'NO'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10, help="length of each wrk and iperf3 run (default 10)")
    ap.add_argument("--seats", default="nft,lbd", help="comma-separated seats: nft, lbd, xdp, lbd:K=V:... (default nft,lbd)")
    ap.add_argument("--lbd-args", default="", help="extra net_af_packet/net_af_xdp arguments for every lbd seat, K=V:K=V")
    ap.add_argument("--tools", default="keepalive,close,iperf",
                    help="which measurements, comma-separated (default keepalive,close,iperf)")
    ap.add_argument("--threaded-napi", action="store_true",
                    help="experiment: GRO and threaded NAPI on the bridge's veth towards the seat (every seat)")
    def cpu_list(text):
        try:
            cs = [int(c) for c in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: want CPU numbers, comma-separated")
        bad = [c for c in cs if c not in os.sched_getaffinity(0)]
        if bad:
            raise argparse.ArgumentTypeError(f"{text!r}: CPUs {bad} are not among this process's {sorted(os.sched_getaffinity(0))}")
        return cs

    ap.add_argument("--rps", type=cpu_list, help="experiment: receive packet steering to these CPUs (comma-separated) on the "
                    "bridge's veth towards the seat and the client's eth0 (every seat)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--smoke", action="store_true", help="one run of 1-second tools: does the runner work")
    ap.add_argument("--json", help="also write every measurement as JSON to this file")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", help="where lbd is (default target/release)")
    ap.add_argument("--work", default="/tmp/lbd-e2e", help="configs and logs (a directory per sitting inside)")
    args = ap.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: sys.exit(128 + n))
    if os.geteuid() != 0:
        sys.exit("e2e.py: run as root (namespaces, DPDK)")
    if args.smoke:
        args.runs, args.seconds = 1, 1
    bin_dir = os.path.abspath(args.bin_dir or os.path.join(ROOT, "target/release"))
    if not args.no_build:
        sh(os.path.join(ROOT, "testbed/install-deps.sh"), timeout=1800)
        os.environ["PATH"] = os.path.expanduser("~/.cargo/bin") + os.pathsep + os.environ.get("PATH", "")
        subprocess.run(["cargo", "build", "--release", "--bin", "lbd", "-q"], cwd=ROOT, check=True)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not args.tools or any(t not in ("keepalive", "close", "iperf") for t in args.tools):
        sys.exit("e2e.py: --tools takes keepalive, close, iperf")
    seats = [s.strip() for s in args.seats.split(",") if s.strip()]
    for s in seats:
        if s != "nft" and s.split(":")[0] not in ("lbd", "xdp"):
            sys.exit(f"e2e.py: unknown seat {s!r} (nft, lbd, xdp, lbd:K=V...)")
    if args.lbd_args:
        seats = [s if s == "nft" else s + ":" + args.lbd_args for s in seats]
    need = ["wrk", "nginx", "iperf3", "nft", "curl", "ethtool"]
    missing = [t for t in need if not shutil.which(t)]
    if any(s != "nft" for s in seats) and not os.path.exists(os.path.join(bin_dir, "lbd")):
        missing.append(os.path.join(bin_dir, "lbd"))
    if missing:
        sys.exit(f"e2e.py: missing {', '.join(missing)} (testbed/install-deps.sh; build lbd, or leave out --no-build)")
    tag = f"e2e{os.getpid() % 100000}"
    work = os.path.join(os.path.abspath(args.work), tag)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
            "cpu_model": lbdstats.cpu_description(), "cpus": os.cpu_count(), "kernel": os.uname().release,
            "loadavg_before": loadavg(), "runs": args.runs, "seconds": args.seconds,
            "connections": args.connections, "threaded_napi": args.threaded_napi, "rps": args.rps, "wrk_threads": args.threads, "seats": seats,
            "command": " ".join(["benches/e2e.py"] + sys.argv[1:])}
    log(f"{meta['cpu_model']}, {meta['cpus']} CPUs, load {meta['loadavg_before']}; testbed {tag}, logs in {work}")
    rows = []
    tb = Testbed(tag, work, args.threaded_napi, args.rps)
    try:
        sweep_stale_testbeds()
        tb.up()
        sit = Sitting(tb, args)
        for run in range(args.runs):
            for i, s in enumerate(seats):
                seat = NftSeat(tb) if s == "nft" else LbdSeat(tb, s, bin_dir, run * 100 + i)
                log(f"run {run + 1}/{args.runs}: {s} (load {loadavg()})")
                row = sit.seat_run(seat)
                row["run"] = run + 1
                rows.append(row)
                log("  " + ", ".join(
                    ([f"keep-alive {row['keepalive']['per_second']:.0f} req/s"] if "keepalive" in row else [])
                    + ([f"close {row['close']['per_second']:.0f} conn/s"] if "close" in row else [])
                    + ([f"iperf3 {row['iperf']['gbps']:.2f} Gbit/s ({row['iperf']['retransmits']} retransmits)"] if "iperf" in row else [])
                    + [f"client IP kept: {row['client_ip_kept']}"]))
    finally:
        tb.close()
    meta["loadavg_after"] = loadavg()
    table = summarise(rows, seats)
    print(f"\n{meta['date']}, commit {meta['commit']}, {meta['cpu_model']} ({meta['cpus']} CPUs), "
          f"load average {meta['loadavg_before']} before, {meta['loadavg_after']} after; "
          f"{args.runs} run(s) of {args.seconds:g} s, wrk -t{args.threads} -c{args.connections}; medians (min–max)\n")
    print_table(table, args.runs)
    if args.smoke:
        print("\nsmoke run: one run of 1-second tools; these figures say only that the runner works")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "table": table, "rows": rows}, f, indent=1, allow_nan=False)
    bad = [t["seat"] for t in table if not t["client_ip_kept"]]
    if bad:
        sys.exit(f"e2e.py: the backends did not see the client's address through {', '.join(bad)}")


if __name__ == "__main__":
    main()
