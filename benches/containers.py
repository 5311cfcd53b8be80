#!/usr/bin/python3
"""Packet rate through containers: a generator container, a middle box
container (lbd, or dpdk-testpmd io forwarding for the reference) and a
sink container, all from the lbd image, over two paths:

  memif       net_memif between the containers (sockets in a shared
              directory; copy mode, no hugepages)
  af_packet   net_af_packet on veth pairs the runner puts between the
              containers' own network namespaces (`--network none`)

    benches/containers.py [--image lbd] [--paths memif,af_packet]
                          [--runs 1] [--seconds 5] [--warmup 2]
                          [--smoke] [--json FILE]

(as root, with a Docker engine: `docker/engine.sh up`, then
`docker build -t lbd .`).

generator: `dpdk-testpmd --forward-mode=txonly` sends 64-byte UDP packets
           from many client addresses to the VIP 10.0.0.100:9000, to lbd's
           MAC
middle:    lbd (one worker, a UDP listener with four backends behind
           static neighbours), or `dpdk-testpmd --forward-mode=io` port 0
           -> port 1
sink:      `dpdk-testpmd --forward-mode=rxonly`; the rate is the growth of
           its cumulative RX-packets counter over a window the runner times
           after a warm-up (read with `show port stats`), the same for both
           middle boxes. Nothing depends on when a tool prints.

The two CPUs of this machine are split: the generator and the sink share
CPU 0, the middle box's forwarding core has CPU 1. Absolute figures drift
on shared machines; the ratio lbd / testpmd over the same path in the same
run is the figure to compare. With --smoke it runs each path briefly and
checks that packets crossed lbd (lbd's own counters: sessions made,
packets forwarded to backends) and that every container is gone after.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


LBD_MAC = "02:00:00:00:00:01"
VIP, VPORT = "10.0.0.100", 9000
CLIENT = "10.0.0.2"
BACKENDS = [f"10.1.0.{b}" for b in range(11, 15)]
# Every DPDK process: no PCI device is probed (the machine's NIC is a
# virtio PCI device that must never be touched), no hugepages. testpmd runs
# non-interactive (forwarding from the start) and is read through DPDK's
# telemetry socket: in interactive mode on a terminal its main thread
# spins (measured: 97 % of a CPU), which would halve a forwarding core
# that shares its CPU, and lbd's control thread does not.
EAL = ["--no-pci", "--no-huge", "-m", "1024"]
# memif rings of 16384 packets (af_packet: see vdev()). Three
# polling processes share two CPUs here, so each runs in scheduler slices
# of a few milliseconds; a ring has to hold what arrives while its reader
# waits for the CPU, or the figure measures the scheduler instead.
RING_LOG2 = 14


def sh(*cmd, check=True, capture=False):
    r = subprocess.run(list(cmd), check=False, text=True, capture_output=capture)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {(r.stderr or '').strip()}")
    return r


class Run:
    """Everything one measurement creates: containers (and with them the
    veths in their namespaces) and a directory, all removed by close()
    whatever happened."""

    def __init__(self, image, path, tag):
        self.image, self.path = image, path
        self.name = f"lbdbench-{os.getpid()}-{tag}"
        self.containers = []
        self.dir = tempfile.mkdtemp(prefix="lbd-containers-")
        os.chmod(self.dir, 0o755)

    def docker_args(self, role, cpu, ifaces):
        args = ["--name", f"{self.name}-{role}", "--cpuset-cpus", cpu, "--network", "none",
                "-v", f"{self.dir}:/run/memif"]
        if ifaces:
            # af_packet puts its interface in promiscuous mode: NET_ADMIN
            # (NET_RAW, for the socket, is in Docker's default set). The
            # entry point waits until the runner has put the veths in.
            args += ["--cap-add", "NET_ADMIN", "-e", f"LBD_WAIT_IFACES={' '.join(ifaces)}"]
        return args

    def vdev(self, i, sock, role):
        if self.path == "memif":
            # Abstract sockets live in a network namespace; a path in the
            # shared directory crosses containers.
            return f"net_memif{i},role={role},socket=/run/memif/{sock}.sock,socket-abstract=no,id=0,rsize={RING_LOG2}"
        # af_packet's rings are locked memory, and a container's limit is
        # the engine's (8 MiB here, which this machine cannot raise): 1024
        # frames of 2 KiB per direction.
        return f"net_af_packet{i},iface=eth{i},qpairs=1,framecnt=1024"

    def ifaces(self, n):
        return [f"eth{i}" for i in range(n)] if self.path == "af_packet" else []

    def testpmd(self, role, cpu, vdevs, fwd, extra):
        """A testpmd container, forwarding once its ports are up; its
        runtime directory (and so its telemetry socket) is visible here."""
        self.containers.append(f"{self.name}-{role}")
        os.makedirs(f"{self.dir}/dpdk-{role}")
        # -i: stdin stays open, so non-interactive testpmd waits on it
        # ("Press enter to exit") instead of exiting; -t: on a terminal its
        # stdout is line-buffered, so the logs show that line when it is
        # printed.
        sh("docker", "run", "-d", "-i", "-t", *self.docker_args(role, cpu, self.ifaces(len(vdevs))),
           "-v", f"{self.dir}/dpdk-{role}:/var/run/dpdk", self.image, "testpmd",
           *self.pmd_args(role, cpu, vdevs, fwd, extra), capture=True)

    def ready(self, role, says):
        """Waits (2 minutes at most) until container `role`'s output holds
        `says`: testpmd's "Press enter to exit" once it forwards, lbd's
        "lbd: ready"."""
        name = f"{self.name}-{role}"
        deadline = time.time() + 120
        while True:
            logs = sh("docker", "logs", name, check=False, capture=True)
            if says in logs.stdout + logs.stderr:
                return
            state = sh("docker", "inspect", "-f", "{{.State.Running}}", name, check=False, capture=True).stdout.strip()
            if state != "true" or time.time() > deadline:
                raise RuntimeError(f"{role} did not start in its container:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.2)

    def testpmd_ready(self, role):
        self.ready(role, "Press enter to exit")

    def rx_packets(self, role, port):
        """Port `port`'s cumulative RX counter of testpmd `role`, from its
        telemetry socket, and when it was read."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(f"{self.dir}/dpdk-{role}/{role}/dpdk_telemetry.v2")
            s.recv(16384)  # the greeting: version, pid, max_output_len
            before = time.monotonic()
            s.send(f"/ethdev/stats,{port}".encode())
            answer = json.loads(s.recv(65536))
            after = time.monotonic()
        finally:
            s.close()
        return int(answer["/ethdev/stats"]["ipackets"]), (before + after) / 2

    @staticmethod
    def pmd_args(role, cpu, vdevs, fwd, extra):
        # The main lcore and the forwarding lcore both on the container's
        # one CPU (the main one sleeps).
        eal = EAL + ["--file-prefix", role, "--lcores", f"0@{cpu},1@{cpu}"]
        for v in vdevs:
            eal += ["--vdev", v]
        # --disable-link-check: a memif server waits for its client, which
        # starts after it; without this testpmd would wait 9 s for the link.
        return eal + ["--", f"--forward-mode={fwd}", "--nb-cores=1", "--total-num-mbufs=65536", "--disable-link-check"] + extra

    def lbd(self, cpu, vdevs):
        """lbd in a container, started, not yet waited for (lbd_ready())."""
        name = f"{self.name}-lbd"
        self.containers.append(name)
        eal = EAL + ["--file-prefix", "lbd"]
        for v in vdevs:
            eal += ["--vdev", v]
        cfg = {
            "eal": eal,
            "lcores": {"workers": 1},
            "ports": [
                {"name": "ext", "device": vdevs[0].split(",")[0], "address": "10.0.0.1/24", "mac": LBD_MAC, "exception": "off"},
                {"name": "int", "device": vdevs[1].split(",")[0], "address": "10.1.0.1/24", "mac": LBD_MAC, "exception": "off",
                 "neighbors": [{"ip": b, "mac": f"02:00:00:00:01:{i:02x}"} for i, b in enumerate(BACKENDS)]},
            ],
            "listeners": [{"name": "udp", "vip": VIP, "protocol": "udp", "port": VPORT,
                           "backends": [{"address": b, "port": VPORT} for b in BACKENDS]}],
            "timeouts": {"udp": "1h"},
            "sessions": {"capacity_per_worker": 262144},
            "mempool": {"mbufs": 65536},
            "control": {"socket": "/run/memif/lbd.sock"},
            "metrics": {"listen": "off"},
        }
        with open(f"{self.dir}/lbd.yaml", "w") as f:
            json.dump(cfg, f)  # JSON is YAML
        sh("docker", "run", "-d", *self.docker_args("lbd", cpu, self.ifaces(2)), self.image,
           "lbd", "-c", "/run/memif/lbd.yaml", capture=True)

    def lbd_ready(self):
        self.ready("lbd", "lbd: ready")

    def lbd_stats(self):
        out = sh("docker", "exec", f"{self.name}-lbd", "lbctl", "--socket", "/run/memif/lbd.sock", "stats", "--json",
                 capture=True).stdout
        return json.loads(out)["stats"]  # {"kind": "stats", "stats": {...}}

    def pid(self, role):
        """The PID (in this namespace) of a container's first process,
        once it runs."""
        deadline = time.time() + 60
        while time.time() < deadline:
            r = sh("docker", "inspect", "-f", "{{.State.Pid}}", f"{self.name}-{role}", check=False, capture=True)
            if r.returncode == 0 and r.stdout.strip() not in ("", "0"):
                return int(r.stdout.strip())
            time.sleep(0.1)
        raise RuntimeError(f"container {self.name}-{role} did not start")

    def link(self, a, a_if, b, b_if):
        """A veth pair from container a's a_if to container b's b_if, up,
        without IPv6 (no router solicitations in the counts). It goes away
        with the containers' namespaces."""
        pa, pb = self.pid(a), self.pid(b)
        tmp_a, tmp_b = f"lbv{pa % 100000}{a_if[-1]}a", f"lbv{pb % 100000}{b_if[-1]}b"
        sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b, capture=True)
        for tmp, pid, name in ((tmp_a, pa, a_if), (tmp_b, pb, b_if)):
            sh("ip", "link", "set", tmp, "netns", str(pid), capture=True)
            ns = ["nsenter", "-t", str(pid), "-n"]
            sh(*ns, "ip", "link", "set", tmp, "name", name, capture=True)
            sh(*ns, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1", capture=True)
            sh(*ns, "ip", "link", "set", name, "up", capture=True)

    def close(self):
        for c in self.containers:
            sh("docker", "rm", "-f", c, check=False, capture=True)
        subprocess.run(["rm", "-rf", self.dir], check=False)


def measure(image, path, middle, args, tag):
    """Mpps at the sink with `middle` in the path, and lbd's counters."""
    r = Run(image, path, tag)
    try:
        gen_cpu, mid_cpu, sink_cpu = args.cpus.split(",")
        # memif: the sink is the server of the back link, the middle box the
        # server of the front link and a client of the back one.
        # A memif client connects once, when its port starts: each server
        # is waited for before its client starts. af_packet containers wait
        # for their veths instead, which need both ends running.
        memif = path == "memif"
        r.testpmd("sink", sink_cpu, [r.vdev(0, "back", "server")], "rxonly", [])
        if memif:
            r.testpmd_ready("sink")
        mid_vdevs = [r.vdev(0, "front", "server"), r.vdev(1, "back", "client")]
        mid_role = "lbd" if middle == "lbd" else "middle"
        if middle == "lbd":
            r.lbd(mid_cpu, mid_vdevs)
        else:
            r.testpmd("middle", mid_cpu, mid_vdevs, "io", [])
        ready_mid = r.lbd_ready if middle == "lbd" else (lambda: r.testpmd_ready("middle"))
        if memif:
            ready_mid()
        r.testpmd("gen", gen_cpu, [r.vdev(0, "front", "client")], "txonly",
                  [f"--eth-peer=0,{LBD_MAC}", f"--tx-ip={CLIENT},{VIP}", f"--tx-udp=1024,{VPORT}",
                   "--txonly-multi-flow", "--txpkts=64"])
        if not memif:
            r.link("gen", "eth0", mid_role, "eth0")
            r.link(mid_role, "eth1", "sink", "eth0")
            r.testpmd_ready("sink")
            ready_mid()
        r.testpmd_ready("gen")
        time.sleep(args.warmup)
        a, ta = r.rx_packets("sink", 0)
        time.sleep(args.seconds)
        b, tb = r.rx_packets("sink", 0)
        lbd = r.lbd_stats() if middle == "lbd" else None
        if b <= a:
            raise RuntimeError(f"{path}/{middle}: nothing reached the sink in the window (RX-packets {a} -> {b})")
        return (b - a) / (tb - ta) / 1e6, lbd
    finally:
        r.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="lbd")
    ap.add_argument("--paths", default="memif,af_packet")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--cpus", default="0,1,0", help="CPUs of the generator, the middle box and the sink (default 0,1,0)")
    ap.add_argument("--smoke", action="store_true", help="one short run per path; checks that lbd forwarded")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("containers.py: run as root (Docker, DPDK)")
    if args.smoke:
        args.runs, args.seconds, args.warmup = 1, 1, 0.5
    rows = []
    for path in [p.strip() for p in args.paths.split(",") if p.strip()]:
        if path not in ("memif", "af_packet"):
            sys.exit(f"containers.py: unknown path '{path}' (memif, af_packet)")
        got = {"lbd": [], "testpmd": []}
        stats = None
        for n in range(args.runs):
            for middle in ("testpmd", "lbd"):
                mpps, s = measure(args.image, path, middle, args, f"{path[:3]}{n}{middle[0]}")
                got[middle].append(mpps)
                stats = s or stats
        lbd, tp = statistics.median(got["lbd"]), statistics.median(got["testpmd"])
        udp = next(l for l in stats["listeners"] if l["name"] == "udp")
        to_backends = next(p for p in stats["ports"] if p["name"] == "int")["tx_packets"]
        drops = sum(v for v in stats["drops"].values())
        reasons = {k: v for k, v in stats["drops"].items() if v}
        row = {"path": path, "lbd_mpps": lbd, "testpmd_mpps": tp, "ratio": lbd / tp if tp > 0 else 0.0,
               "runs": args.runs, "lbd_sessions_created": udp["sessions_created"], "lbd_to_backends": to_backends,
               "lbd_drops": drops}
        rows.append(row)
        print(f"{path:10} lbd {lbd:6.3f} Mpps   testpmd io {tp:6.3f} Mpps   ratio {row['ratio']:.3f}   "
              f"(lbd: {udp['sessions_created']} sessions, {to_backends} packets to backends, drops {reasons or 0})",
              flush=True)
        if args.smoke and (udp["sessions_created"] == 0 or to_backends == 0):
            sys.exit(f"containers.py: lbd forwarded nothing over {path}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=1, allow_nan=False)


if __name__ == "__main__":
    main()
