#!/usr/bin/python3
"""Packet-rate runner: lbd against dpdk-testpmd, same vdevs, same core,
same run.

    benches/run.py [--runs 3] [--seconds 5] [--warmup 2] [--only N[,N]]
                   [--record] [--smoke] [--json FILE] [--no-build]
                   [--profile release] [--bin-dir DIR] [--work DIR]

(as root). Unless --no-build, it first installs what is missing
(testbed/install-deps.sh, idempotent) and builds the release binaries.

For every scenario it generates the pcaps it needs (benches/pcapgen.rs;
nothing large is committed), runs lbd with
`net_pcap,rx_pcap=...,infinite_rx=1` into `net_null,no-rx=1`, reads lbd's
counters over a fixed window after a warm-up, then runs
`dpdk-testpmd --forward-mode=io` (non-interactive) on the same vdevs and CPU
and reads its cumulative RX counter (telemetry) at both ends of the same window, and
prints one row per scenario: the medians of --runs runs. A window with
no packets is an error; --json never holds NaN or Infinity.
Sessions that a scenario needs beforehand are created by streaming a SYN
file through a second pcap port first (not measured).

2 MB hugepages are reserved when the machine can spare them (they are
worth +40-60 % here); otherwise every DPDK process runs with --no-huge and
the table says so. --record writes benches/RESULTS.md. --smoke runs tiny
sizes once for a few seconds (the new-flow scenario keeps its 1M flows,
see scenarios()): it checks that the runner works and that each scenario
does what its name says, never how fast anything is.
"""

import argparse
import datetime
import glob
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
SINK = "/dev/null"
# Set from the command line: where generated files go, where the binaries are.
WORK = "/tmp/lbd-bench"
BURST = None  # lcores.burst; None: lbd's default
BIN = os.path.join(ROOT, "target/release")


# lbcore::rss::RSS_KEY as `sessions.hash_key`.
FIXED_HASH_KEY = "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"


class Scenario:
    def __init__(self, name, replay, flows, sample=None, prefill=0, workers=1, split="owner", churn=False,
                 replay_side="client", udp=False, syn_proxy=False):
        self.name = name
        self.replay = replay  # pcapgen kind replayed forever
        self.flows = flows  # flows the replay draws from
        self.sample = sample  # packets in the replay file (None: one per flow)
        self.prefill = prefill  # sessions created before measuring
        self.workers = workers
        self.split = split
        self.churn = churn  # every SYN must create a session
        self.replay_side = replay_side  # which port the replay enters
        self.udp = udp
        self.syn_proxy = syn_proxy  # the TCP listener answers SYNs with cookies


def scenarios(smoke, replay):
    """`replay`: packets in each replay file (flows drawn at random from
    the scenario's sessions). The pcap PMD copies every packet out of its
    stored copy, so a replay much bigger than the CPU caches makes the I/O
    itself, and testpmd with it, several times slower; the `cold` rows
    show that case."""
    m = 5_000 if smoke else 1_000_000
    big = 20_000 if smoke else 10_000_000
    k = min(replay, m)
    cold = m
    # New flows: a SYN creates a session only if its flow's previous SYN
    # session has lapsed, i.e. if the replay cycle (flows / packet rate)
    # is longer than the SYN timeout (100 ms, the shortest the config
    # accepts; lbd checks expiry on lookup to the millisecond, so the sweep
    # adds no delay). One million flows keeps the cycle above 100 ms up
    # to 10 Mpps, about twice the fastest creation rate measured here with
    # hugepages (4.6 M/s) and 2.7 times that without (3.7); the smoke run uses
    # the same size, since a smaller one makes the scenario measure
    # lookups of live SYN sessions (5000 flows came round every ~2 ms).
    churn = 1_000_000
    return [
        # The same replay size in every established row, so that only the
        # table size differs between them.
        Scenario("tcp established, 1k sessions", "est", 1000, k, prefill=1000),
        Scenario("tcp established, 1M sessions", "est", m, k, prefill=m),
        Scenario("tcp established, 10M sessions", "est", big, k, prefill=big),
        Scenario("tcp new flows (every packet a SYN creating a session)", "syn", churn, churn=True),
        # A spoofed-source SYN flood at the proxy: every SYN is answered with
        # a cookie from the VIP and leaves no state (the row above is the
        # same flood without the proxy, each SYN a half-open session).
        Scenario("tcp SYN flood, syn_proxy on (every SYN answered with a cookie)", "syn", churn, syn_proxy=True),
        Scenario("udp, 1M flows", "udp", m, k, prefill=m, udp=True),
        Scenario("return path (backend to client), 1M sessions", "reply", m, k, prefill=m, replay_side="backend"),
        # Two workers replay twice as many packets, so that each queue's
        # replay (the pcap PMD copies every packet out of its stored copy,
        # whose lines compete with the session table's for the caches) and
        # each worker's set of hot flows are as big as the one worker's
        # above: with the same total, each worker had half of both, and
        # the scaling came out at 2.8x.
        Scenario("tcp established, 1M sessions, 2 workers, RSS-aligned queues", "est", m, 2 * k, prefill=m, workers=2,
                 split="owner"),
        Scenario("tcp established, 1M sessions, 2 workers, software hand-off", "est", m, 2 * k, prefill=m, workers=2,
                 split="spread"),
        Scenario("cold: tcp established, 1M sessions, 1M-packet replay", "est", m, cold, prefill=m),
        Scenario("cold: tcp established, 10M sessions, 1M-packet replay", "est", big, cold, prefill=big),
    ]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def pcapgen():
    return os.path.join(BIN, "examples/pcapgen")


def ensure_pcap(kind, flows, sample, queues, split):
    """The replay or prefill files, generated once per parameter set."""
    os.makedirs(WORK, exist_ok=True)
    base = f"{WORK}/{kind}-{flows}-{sample or 'all'}-{queues}-{split}"
    files = [f"{base}.pcap"] if queues == 1 else [f"{base}-{q}.pcap" for q in range(queues)]
    if not all(os.path.exists(f) for f in files):
        cmd = [pcapgen(), kind, "--flows", str(flows)]
        if sample:
            cmd += ["--sample", str(sample)]
        if queues > 1:
            cmd += ["--queues", str(queues), "--split", split]
        sh(cmd + [base])
    return files


def hugepages(needed_mb):
    """Reserves 2 MB pages for the runs; returns True when available."""
    want = (needed_mb + 1) // 2
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        avail_mb = int(info["MemAvailable"].split()[0]) // 1024
        have = int(info["HugePages_Total"].split()[0])
        if have < want and avail_mb > want * 2 + 2048:
            with open("/proc/sys/vm/nr_hugepages", "w") as f:
                f.write(str(want))
        if not os.path.ismount("/dev/hugepages"):
            os.makedirs("/dev/hugepages", exist_ok=True)
            sh(["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"])
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["HugePages_Free"].split()[0]) >= want
    except (OSError, subprocess.CalledProcessError, KeyError, ValueError):
        return False


def mem_args(huge, mb):
    return [] if huge else ["--no-huge", "-m", str(mb)]


def cpus():
    return sorted(os.sched_getaffinity(0))


# The EAL arguments of every DPDK process started, for --json: the smoke
# test checks that each one keeps off the machine's PCI devices.
DPDK_EAL = []


def eal_args(prefix, huge, mem_mb):
    """What every DPDK process here starts with: no PCI probing (the
    machine's own NIC is never touched), its own file prefix, no telemetry
    socket, and its memory."""
    return ["--no-pci", "--file-prefix", prefix, "--no-telemetry"] + mem_args(huge, mem_mb)


def mbuf_memory(s, huge):
    """mbufs for the scenario's replay plus each worker's own, and the MB
    of DPDK memory they take: about 2.5 KB each on hugepages; without, a
    pool this big is laid out page by page and a 4 KB page holds one
    (2.4 KB) mbuf. Plus slack."""
    mbufs = (s.sample or s.flows) + 65536 * s.workers + 16384
    return mbufs, mbufs * (2560 if huge else 4096) // (1 << 20) + 512


def lbd_config(s, replay_files, prefill_file, mbufs, huge, mem_mb, prefix, sock):
    w = s.workers
    sinks = ",".join(f"tx_pcap={SINK}" for _ in range(w))
    rep_rx = ",".join(f"rx_pcap={f}" for f in replay_files)
    # No tx_pcap on the replay port: the pcap PMD then drops what is sent
    # there (one counting queue per RX queue), as net_null does. What lbd
    # answers on it (the SYN proxy's SYN-ACKs) used to be written out with
    # libpcap's fwrite, which took 15 % of the SYN-proxy row's samples and
    # is no part of lbd's cost.
    vdevs = [f"net_pcap0,{rep_rx},infinite_rx=1", "net_null0,no-rx=1"]
    if prefill_file:
        vdevs.append(f"net_pcap1,rx_pcap={prefill_file},{sinks}")
    eal = eal_args(prefix, huge, mem_mb)
    for v in vdevs:
        eal += ["--vdev", v]
    # exception off: the runner's lbd lives in the root namespace.
    client = {"name": "ext", "address": "10.0.0.1/24", "exception": "off", "gateway": "10.0.0.254", "mac": "02:00:00:00:00:01",
              "neighbors": [{"ip": "10.0.0.254", "mac": "02:00:00:00:00:fe"}]}
    backend = {"name": "int", "address": "10.1.0.1/24", "exception": "off", "mac": "02:00:00:00:00:01",
               "neighbors": [{"ip": f"10.1.0.{b}", "mac": f"02:00:00:00:00:{b:02x}"} for b in range(11, 15)]}
    # The replay enters on the pcap port; what lbd forwards leaves on null.
    if s.replay_side == "client":
        client["device"], backend["device"] = "net_pcap0", "net_null0"
    else:
        client["device"], backend["device"] = "net_null0", "net_pcap0"
    ports = [client, backend]
    if prefill_file:
        ports.append({"name": "pre", "device": "net_pcap1", "address": "10.9.0.1/24", "mac": "02:00:00:00:00:01",
                      "exception": "off"})
    per_worker = max(s.prefill, s.flows) // w + 65536
    if s.churn:
        per_worker = 2 * s.flows // w + 65536
    cfg = {
        "eal": eal,
        "lcores": {"workers": w, "cpus": cpus()[:w] if len(cpus()) >= w else cpus(), **({"burst": BURST} if BURST else {})},
        "ports": ports,
        "listeners": [
            {"name": "web", "vip": "10.0.0.100", "protocol": "tcp", "port": 80,
             **({"syn_proxy": "on"} if s.syn_proxy else {}),
             # The replay runs from the start, beside the prefill. Under the
             # default (`schedule`) its ACKs created the replayed flows'
             # sessions before the prefill's SYNs got there, so the hot
             # sessions sat in consecutive slots in replay order, and the
             # request rows read memory sequentially where the return path
             # (whose early packets find no session) read it at random.
             # Dropped instead, every replayed flow's session is the
             # prefill's, at its random place in the table.
             **({"tcp_non_syn": "drop"} if s.prefill else {}),
             "backends": [{"address": f"10.1.0.{b}", "port": 8080} for b in range(11, 15)]},
            {"name": "dns", "vip": "10.0.0.100", "protocol": "udp", "port": 53,
             "backends": [{"address": f"10.1.0.{b}", "port": 8080} for b in range(11, 15)]},
        ],
        # Prefilled SYN sessions must outlive the run; churn needs SYN
        # sessions to lapse before their flow's next SYN comes round.
        "timeouts": {"tcp_syn": "100ms" if s.churn else "1h", "tcp_established": "1h", "udp": "1h"},
        # The fixed key pcapgen places flows on their owner's queue by
        # (lbd draws a random one by default, which pcapgen cannot know).
        "sessions": {"capacity_per_worker": per_worker, "hash_key": FIXED_HASH_KEY,
                     # The prefill creates its sessions with SYNs, so they
                     # are half-open: under the default cap (a quarter of
                     # the table) all but the newest quarter were evicted,
                     # and the 1M and 10M rows held 0.33M and 2.6M
                     # sessions. The new-flow rows keep the default.
                     **({} if s.churn or s.syn_proxy else {"half_open_max_per_worker": per_worker})},
        "mempool": {"mbufs": mbufs},
        "control": {"socket": sock},
        "metrics": {"listen": "off"},
    }
    return json.dumps(cfg)  # JSON is YAML


class Lbd:
    def __init__(self, cfg_path, stats_path, log_path):
        self.stats_path = stats_path
        self.log = open(log_path, "w")
        self.p = subprocess.Popen([os.path.join(BIN, "lbd"), "-c", cfg_path, "--stats-out", stats_path],
                                  stdout=subprocess.DEVNULL, stderr=self.log)
        self.seq = 0

    def stats(self):
        exited = lambda: f"lbd exited: {open(self.log.name).read()}" if self.p.poll() is not None else None
        d = lbdstats.request(self.p.pid, self.stats_path, self.seq, exited, timeout=30)
        self.seq = d["seq"]
        return d

    def stop(self, prefix):
        try:
            finish(self.p, signal.SIGTERM, prefix)
        finally:
            self.log.close()


def wait_ready(log_path, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "lbd: ready" in open(log_path).read():
            return
        if proc.poll() is not None:
            raise RuntimeError(open(log_path).read())
        time.sleep(0.05)
    raise RuntimeError(f"lbd not ready: {open(log_path).read()}")


def finish(p, sig, prefix):
    """Stops the DPDK process `p` started with --file-prefix PREFIX (SIGKILL
    after 60 s) and removes what it may leave behind: its runtime directory,
    and its hugepage files when it did not exit cleanly. A signal to the
    runner meanwhile (Ctrl-C, SIGTERM) does not cut this short: it takes
    effect afterwards."""
    interrupted = None
    if p.poll() is None:
        p.send_signal(sig)
    deadline = time.time() + 60
    while p.returncode is None:
        try:
            p.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
        except (SystemExit, KeyboardInterrupt) as e:
            interrupted = e
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    for f in glob.glob(f"/dev/hugepages/{prefix}map_*"):
        os.remove(f)
    if interrupted:
        raise interrupted


def core_round_trip():
    """ns for one cache line to go from the first allowed CPU to the second
    and back (examples/corelat), or None without two CPUs or the binary.
    On the 2-vCPU machines this runner was written on it moved between
    ~57 and ~330 ns from one second to the next, with the host's placement
    of the vCPUs, and the hand-off row moved with it; so the 2-worker rows
    record it before and after each run (nothing else running then)."""
    exe = os.path.join(BIN, "examples/corelat")
    if len(cpus()) < 2 or not os.path.exists(exe):
        return None
    p = subprocess.run([exe, str(cpus()[0]), str(cpus()[1])], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{exe} failed ({p.returncode}): {p.stderr.strip()}")
    return float(p.stdout)


def run_lbd(s, replay_files, prefill_file, args, huge, run_no):
    rtt_before = core_round_trip() if s.workers >= 2 else None
    prefix = f"lbdbench{os.getpid()}{run_no}"
    mbufs, mem_mb = mbuf_memory(s, huge)
    cfg_path, stats_path, log_path = f"{WORK}/lbd.yaml", f"{WORK}/stats.json", f"{WORK}/lbd.log"
    cfg = lbd_config(s, replay_files, prefill_file, mbufs, huge, mem_mb, prefix, f"{WORK}/lbd.sock")
    DPDK_EAL.append(json.loads(cfg)["eal"])
    with open(cfg_path, "w") as f:
        f.write(cfg)
    for p in (stats_path,):
        if os.path.exists(p):
            os.remove(p)
    lbd = Lbd(cfg_path, stats_path, log_path)
    try:
        wait_ready(log_path, lbd.p)
        # Prefill: the SYN file streams through port `pre` once.
        if prefill_file:
            deadline = time.time() + 600
            while True:
                d = lbd.stats()
                pre = d["ports"][2]["rx_packets"]
                if pre >= s.prefill:
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"prefill stuck at {pre}")
                time.sleep(0.5)
        time.sleep(args.warmup)
        a = lbd.stats()
        time.sleep(args.seconds)
        b = lbd.stats()
    finally:
        lbd.stop(prefix)
    rtt_after = core_round_trip() if rtt_before is not None else None
    dt = b["uptime_seconds"] - a["uptime_seconds"]
    port = 0 if s.replay_side == "client" else 1
    rx = b["ports"][port]["rx_packets"] - a["ports"][port]["rx_packets"]
    if rx <= 0 or dt <= 0:
        raise RuntimeError(f"{s.name}: lbd received nothing in the window ({rx} packets in {dt} s); see {WORK}/lbd.log")
    made = b["events"]["sessions_created"] - a["events"]["sessions_created"]
    hand = b["events"]["handoff_out"] - a["events"]["handoff_out"]
    answered = b["events"]["syn_proxy_syn_acks"] - a["events"]["syn_proxy_syn_acks"]
    drops = b["drops_total"] - a["drops_total"]
    return {
        "mpps": rx / dt / 1e6,
        "created_mps": made / dt / 1e6,
        # Share of the window's packets that created a session: ~1 in the
        # new-flow scenario, 0 where every session was prefilled.
        "created_share": made / rx,
        "handoff_share": hand / rx,
        # Share answered with a SYN cookie (the SYN-flood row: ~1).
        "answered_share": answered / rx,
        "drops": drops,
        "sessions": b["sessions_active"],
        "bytes_per_session": b["session_memory_bytes"] / max(1, b["sessions_capacity"]),
        "session_memory_mb": b["session_memory_bytes"] / 2**20,
        # Per-packet processing time (each burst's time over its packets)
        # from lbd's histogram: cumulative since lbd started, so the
        # prefill and the warm-up are in it too (in the 10M row the
        # prefill is about a sixth of the packets, elsewhere a few %).
        "p50_ns": b["latency"]["p50_ns"],
        "p99_ns": b["latency"]["p99_ns"],
        "p999_ns": b["latency"]["p999_ns"],
        # Not a median: kept per run (see `core_round_trip`); absent, never
        # null, where not measured.
        **({"core_rtt_ns": [round(rtt_before, 1), round(rtt_after, 1)]} if rtt_after is not None else {}),
    }


class Testpmd:
    """dpdk-testpmd non-interactive, forwarding from the start; its
    counters are read through DPDK's telemetry socket
    (/var/run/dpdk/PREFIX/dpdk_telemetry.v2). Interactive testpmd on a
    terminal spins its main thread at 97 % of a CPU, which in the 2-worker
    rows took CPU from its own forwarding lcores; non-interactive, the main
    thread waits on stdin (kept open here: "Press enter to exit") and
    sleeps. Its output goes to `log`."""

    def __init__(self, cmd, log_path, prefix):
        self.log = open(log_path, "wb")
        self.sock_path = f"/var/run/dpdk/{prefix}/dpdk_telemetry.v2"
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, cmd):
        """One telemetry command's answer (JSON), and when it was read:
        the middle of the round trip."""
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            s.connect(self.sock_path)
            s.recv(16384)  # the greeting: version, pid, max_output_len
            before = time.monotonic()
            s.send(cmd.encode())
            answer = json.loads(s.recv(1 << 20))
            after = time.monotonic()
        finally:
            s.close()
        return answer, (before + after) / 2

    def rx_packets(self, port):
        """Port `port`'s cumulative RX counter, and when it was read."""
        answer, t = self.query(f"/ethdev/stats,{port}")
        return int(answer["/ethdev/stats"]["ipackets"]), t

    def wait_forwarding(self, timeout):
        """Until port 0 has received packets: the ports are started (the
        replay file loaded into mbufs, a while for big files) and the
        forwarding lcores run."""
        deadline = time.time() + timeout
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"testpmd exited (status {self.p.returncode}): see {self.log.name}")
            try:
                n, _ = self.rx_packets(0)
                if n > 0:
                    return
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no socket yet, or the port is not there yet
            if time.time() > deadline:
                raise RuntimeError(f"testpmd did not start forwarding in {timeout} s: see {self.log.name}")
            time.sleep(0.1)

    def close(self, prefix):
        try:
            if self.p.poll() is None:
                try:
                    # "Press enter to exit": testpmd stops its ports and exits.
                    self.p.stdin.write(b"\n")
                    self.p.stdin.close()
                except OSError:
                    pass
            finish(self.p, signal.SIGINT, prefix)
        finally:
            self.log.close()


def run_testpmd(s, replay_files, args, huge, run_no):
    """testpmd io forwarding from the same replay files into net_null, on
    the CPUs lbd's workers used. The rate is testpmd's own cumulative
    RX counter of the replay port (telemetry), read at the start and the
    end of a window the runner times."""
    q = s.workers
    mbufs, mem_mb = mbuf_memory(s, huge)
    cs = cpus()
    rx = ",".join(f"rx_pcap={f}" for f in replay_files)
    # lcore 0 (main) floats; forwarding lcores pinned like lbd's workers.
    lcores = f"0@({','.join(map(str, cs))})," + ",".join(f"{i + 1}@{cs[i % len(cs)]}" for i in range(q))
    prefix = f"tpbench{os.getpid()}{run_no}"
    # With its telemetry socket (the only DPDK process here that has one).
    eal = [a for a in eal_args(prefix, huge, mem_mb) if a != "--no-telemetry"] + [
        "--lcores", lcores, "--vdev", f"net_pcap0,{rx},infinite_rx=1", "--vdev", "net_null0,no-rx=1"]
    DPDK_EAL.append(eal)
    cmd = ["dpdk-testpmd"] + eal + [
        "--", "--forward-mode=io", f"--total-num-mbufs={mbufs}",
        f"--rxq={q}", f"--txq={q}", f"--nb-cores={q}", "--mbcache=256", "--disable-link-check"]
    tp = Testpmd(cmd, f"{WORK}/testpmd.log", prefix)
    try:
        tp.wait_forwarding(300)
        time.sleep(args.warmup)
        a, ta = tp.rx_packets(0)
        time.sleep(args.seconds)
        b, tb = tp.rx_packets(0)
    finally:
        tp.close(prefix)
    if b <= a:
        raise RuntimeError(f"testpmd forwarded nothing in the window (port 0 RX {a} -> {b}); see {WORK}/testpmd.log")
    return (b - a) / (tb - ta) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--only", default="")
    ap.add_argument("--record", action="store_true", help="write benches/RESULTS.md")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one short run: does the runner work")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--replay-packets", type=int, default=65536, help="packets per replay file (default 65536)")
    ap.add_argument("--burst", type=int, help="lcores.burst for every row (default: lbd's, 64)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument("--profile", default="release", help="cargo profile to build and run (default release)")
    ap.add_argument("--bin-dir", help="where lbd, examples/pcapgen and examples/corelat are (default target/PROFILE; without corelat the 2-worker rows lack core_rtt_ns)")
    ap.add_argument("--work", default="/tmp/lbd-bench", help="generated pcaps and logs (kept between runs as a cache)")
    args = ap.parse_args()
    # Killed or hung up on: unwind, so every `finally` stops the DPDK
    # process it started and removes its files.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: sys.exit(128 + n))
    if os.geteuid() != 0:
        sys.exit("run.py: run as root (DPDK)")
    if args.smoke:
        if args.record:
            sys.exit("run.py: --smoke figures are not results; leave out --record")
        args.runs, args.seconds, args.warmup = 1, 1, 0.5
    global WORK, BIN, BURST
    WORK = os.path.abspath(args.work)
    BURST = args.burst
    BIN = os.path.abspath(args.bin_dir or os.path.join(ROOT, "target", args.profile))
    if not args.no_build:
        # A fresh machine: the same idempotent installer as the README's
        # commands (DPDK, dpdk-testpmd, Rust); a no-op when all is there.
        sh([os.path.join(ROOT, "testbed/install-deps.sh")], cwd=ROOT)
        os.environ["PATH"] = os.path.expanduser("~/.cargo/bin") + os.pathsep + os.environ.get("PATH", "")
        sh(["cargo", "build", "--profile", args.profile, "--workspace", "--bins", "--examples", "-q"], cwd=ROOT)
    for need in (os.path.join(BIN, "lbd"), pcapgen()):
        if not os.path.exists(need):
            sys.exit(f"run.py: {need} missing (build it, or leave out --no-build)")
    todo = scenarios(args.smoke, args.replay_packets)
    if args.only:
        # Exact scenario names, or numbers in the order above (1-based).
        keys = [k.strip() for k in args.only.split(",")]
        todo = [s for i, s in enumerate(todo) if s.name in keys or str(i + 1) in keys]
    machine = machine_info()
    print(f"# CPU: {machine['cpu_model']} ({machine['cpus']} CPUs); load average at the start: {machine['loadavg_start']}")
    biggest = max((s.sample or s.flows) for s in todo)
    # mbufs of the biggest replay plus lbd's own, about 2.4 KB each.
    huge = not args.smoke and hugepages((biggest + 200_000) * 2560 // (1 << 20) + 1024)
    rows = []
    for s in todo:
        replay = ensure_pcap(s.replay, s.flows, s.sample, s.workers, s.split)
        prefill = ensure_pcap("udp" if s.udp else "syn", s.prefill, None, 1, "owner")[0] if s.prefill else None
        lbd_runs, tp_runs = [], []
        for r in range(args.runs):
            lbd_runs.append(run_lbd(s, replay, prefill, args, huge, r))
            tp_runs.append(run_testpmd(s, replay, args, huge, r))
        med = {k: statistics.median(x[k] for x in lbd_runs) for k in lbd_runs[0] if k != "core_rtt_ns"}
        tp = statistics.median(tp_runs)
        # Both rates are > 0 (run_lbd and run_testpmd fail loudly
        # otherwise), so every figure below is finite.
        row = dict(scenario=s.name, workers=s.workers, lbd=med["mpps"], testpmd=tp, ratio=med["mpps"] / tp,
                   ns=1e3 * s.workers / med["mpps"], **{k: med[k] for k in med if k != "mpps"},
                   runs=[round(x["mpps"], 2) for x in lbd_runs], testpmd_runs=[round(t, 2) for t in tp_runs],
                   **({"core_rtt_ns": [x["core_rtt_ns"] for x in lbd_runs]} if all("core_rtt_ns" in x for x in lbd_runs) else {}))
        rows.append(row)
        print_row(row, header=len(rows) == 1, huge=huge)
    print()
    if args.smoke:
        print("smoke run: tiny sizes, one short run; these figures say only that the runner works")
    summary(rows)
    machine["loadavg_end"] = loadavg()
    print(f"# load average at the end: {machine['loadavg_end']}")
    if args.json:
        with open(args.json, "w") as f:
            # allow_nan=False: NaN and Infinity are not JSON; a figure that
            # could not be measured is an error above, never written here.
            json.dump({"hugepages": huge, "machine": machine, "rows": rows, "dpdk_eal": DPDK_EAL}, f, indent=1, allow_nan=False)
    if args.record:
        record(rows, args, huge, machine)


def loadavg():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg says them:
    the machine's other work shares the CPUs the runs use."""
    return " ".join(open("/proc/loadavg").read().split()[:3])


def machine_info():
    return {"cpu_model": lbdstats.cpu_description(), "cpus": os.cpu_count(), "loadavg_start": loadavg()}


def print_row(r, header, huge):
    if header:
        print(f"# memory: {'2 MB hugepages' if huge else 'no hugepages (--no-huge): expect 40-60 % lower rates'}")
        print(f"{'scenario':58} {'wk':>2} {'lbd Mpps':>9} {'testpmd':>8} {'ratio':>6} {'ns/pkt':>7} {'p50 ns':>6} {'p99 ns':>6} {'p99.9':>6} {'sessions':>9} {'B/sess':>6} {'handoff':>7} {'drops':>6}")
    print(f"{r['scenario']:58} {r['workers']:>2} {r['lbd']:>9.2f} {r['testpmd']:>8.2f} {r['ratio']:>6.3f} {r['ns']:>7.1f} "
          f"{r['p50_ns']:>6.0f} {r['p99_ns']:>6.0f} {r['p999_ns']:>6.0f} {r['sessions']:>9.0f} {r['bytes_per_session']:>6.1f} {100 * r['handoff_share']:>6.1f}% {r['drops']:>6.0f}", flush=True)
    if "core_rtt_ns" in r:
        print(f"  runs {r['runs']} Mpps; core-to-core round trip before/after each run (ns): {r['core_rtt_ns']}", flush=True)


def summary(rows):
    by = {r["scenario"]: r for r in rows}
    one = by.get("tcp established, 1M sessions")
    for two_name in ("tcp established, 1M sessions, 2 workers, RSS-aligned queues", "tcp established, 1M sessions, 2 workers, software hand-off"):
        two = by.get(two_name)
        if one and two:
            print(f"scaling, {two_name.split(', ')[-1]}: 2 workers = {two['lbd'] / one['lbd']:.2f} x 1 worker")
    k1, m10 = by.get("tcp established, 1k sessions"), by.get("tcp established, 10M sessions")
    if k1 and m10:
        print(f"10M sessions vs 1k: {100 * m10['lbd'] / k1['lbd']:.0f} % of the rate; session memory {m10['session_memory_mb']:.0f} MiB "
              f"({m10['bytes_per_session']:.1f} bytes per session slot)")
    new = by.get("tcp new flows (every packet a SYN creating a session)")
    if new:
        print(f"new flows: {new['created_mps']:.2f} M sessions created per second (the session-creating SYN alone, not full connections); "
              f"{100 * new['created_share']:.1f} % of the scenario's packets created one")
        if new["created_share"] < 0.9:
            # The replay came round to a flow before its SYN session had
            # lapsed: this machine forwards more than flows / tcp_syn
            # packets per second. The row then measures mostly lookups.
            print(f"WARNING: only {100 * new['created_share']:.1f} % of the new-flow scenario's packets created a session: "
                  f"its replay cycle (flows / rate) is shorter than the 100 ms SYN timeout; raise its flow count")
    flood = by.get("tcp SYN flood, syn_proxy on (every SYN answered with a cookie)")
    if flood:
        print(f"SYN flood with the proxy: {flood['lbd'] * flood['answered_share']:.2f} M SYNs answered with a cookie per second "
              f"({100 * flood['answered_share']:.1f} % of the SYNs), {flood['sessions']:.0f} sessions"
              + (f"; without the proxy each SYN costs a session: {new['created_mps']:.2f} M/s" if new else ""))


def record(rows, args, huge, machine):
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [
        "# Packet-rate results",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- machine: {machine['cpus']} CPUs (`nproc`), {machine['cpu_model']}",
        f"- load average (1, 5, 15 min): {machine['loadavg_start']} at the start, {machine['loadavg_end']} at the end",
        f"- memory: {'2 MB hugepages' if huge else 'no hugepages (--no-huge)'}",
        f"- command (as root): `benches/run.py --runs {args.runs} --seconds {args.seconds:g} --warmup {args.warmup:g} --replay-packets {args.replay_packets}{f' --burst {args.burst}' if args.burst else ''}{' --only ' + args.only if args.only else ''} --record`",
        "- lbd: `net_pcap,rx_pcap=REPLAY,infinite_rx=1` into `net_null,no-rx=1`; testpmd: `--forward-mode=io` on the same vdevs, same CPUs, same window",
        "- 64-byte packets; medians of the runs; ns/pkt is per worker core",
        "",
        "| scenario | workers | lbd Mpps | testpmd Mpps | ratio | lbd ns/packet/core | lbd p50 ns | p99 ns | p99.9 ns | sessions | bytes/session | hand-off | drops | lbd runs | testpmd runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['workers']} | {r['lbd']:.2f} | {r['testpmd']:.2f} | {r['ratio']:.3f} | {r['ns']:.1f} | {r['p50_ns']:.0f} | {r['p99_ns']:.0f} | {r['p999_ns']:.0f} | "
                     f"{r['sessions']:.0f} | {r['bytes_per_session']:.1f} | {100 * r['handoff_share']:.0f} % | {r['drops']:.0f} | {r['runs']} | {r['testpmd_runs']} |")
    rtt = [f"- {r['scenario']}: core-to-core round trip before/after each run {r['core_rtt_ns']} ns (examples/corelat)"
           for r in rows if "core_rtt_ns" in r]
    if rtt:
        lines += [""] + rtt
    lines.append("")
    path = os.path.join(ROOT, "benches/RESULTS.md")
    old = open(path).read() if os.path.exists(path) else ""
    notes = old.split("<!-- notes -->", 1)[1] if "<!-- notes -->" in old else "\n"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n<!-- notes -->" + notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
