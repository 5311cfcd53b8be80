#!/usr/bin/python3
"""The soak run's driver (started by testbed/soak.sh, which says what it does).

Runs the traffic loops in the client namespace and the churn against lbd,
samples lbd every 15 s, and at the end judges flatness. Every process it
starts is kept by PID and stopped by PID.
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
VIP = "10.0.0.100"
STATE_ROOT = "/run/lbd-testbed"

# Drops of the internet-facing defences: none is expected in a soak.
DEFENCE_DROPS = ("security_group_denied", "syn_proxy_bad_cookie", "syn_proxy_no_buffer", "syn_proxy_pending",
                 "half_open_full", "listener_rate_limited", "source_rate_limited", "source_session_limit",
                 "vip_scrubbed", "vip_blackholed")

class Soak:
    def __init__(self, a):
        self.a = a
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.totals = {"tcp_flows_ok": 0, "tcp_flows_failed": 0, "udp_flows_ok": 0, "udp_flows_failed": 0,
                       "steady_tcp_sent": 0, "steady_tcp_answered": 0, "steady_udp_sent": 0,
                       "steady_udp_answered": 0, "iperf_runs": 0, "iperf_failed": 0, "config_changes": 0,
                       "config_changes_refused": 0, "reloads": 0, "health_flaps": 0, "loop_errors": []}
        self.children = set()

    # --- helpers -----------------------------------------------------------

    def client(self, *cmd):
        return ["ip", "netns", "exec", f"{self.a.topology}-client", *cmd]

    def run(self, cmd, timeout):
        """Runs cmd, keeping its PID until it ends; (rc, stdout)."""
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with self.lock:
            self.children.add(p)
        try:
            out, _ = p.communicate(timeout=timeout)
            return p.returncode, out
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return -1, ""
        finally:
            with self.lock:
                self.children.discard(p)

    def lbctl(self, *args):
        return subprocess.run([self.a.lbctl, "--socket", self.a.socket, "--json", *args],
                              capture_output=True, text=True, timeout=30)

    def note_error(self, what):
        with self.lock:
            if len(self.totals["loop_errors"]) < 20:
                self.totals["loop_errors"].append(what)

    def add(self, **kv):
        with self.lock:
            for k, v in kv.items():
                self.totals[k] += v

    def sleep(self, seconds):
        return self.stop.wait(seconds)

    # --- traffic -----------------------------------------------------------

    def short_flows(self):
        while not self.stop.is_set():
            rc, out = self.run(self.client(PY, f"{HERE}/flows.py", "--vip", VIP, "--udp-flows", "200",
                                           "--tcp-flows", "200", "--parallel", "8"), 300)
            try:
                s = json.loads(out)
                self.add(tcp_flows_ok=s["tcp"].get("ok", 0),
                         tcp_flows_failed=sum(v for k, v in s["tcp"].items() if k != "ok"),
                         udp_flows_ok=s["udp"].get("ok", 0),
                         udp_flows_failed=sum(v for k, v in s["udp"].items() if k != "ok"))
            except (ValueError, KeyError):
                self.note_error(f"flows.py rc {rc}: {out[-200:]}")
            self.sleep(1)

    def steady_flows(self):
        while not self.stop.is_set():
            rc, out = self.run(self.client(PY, f"{HERE}/steady.py", "--vip", VIP, "--udp-flows", "20",
                                           "--tcp-flows", "10", "--seconds", "120", "--pause", "0.05"), 400)
            try:
                s = json.loads(out)
                self.add(steady_tcp_sent=s["tcp"]["sent"], steady_tcp_answered=s["tcp"]["answered"],
                         steady_udp_sent=s["udp"]["sent"], steady_udp_answered=s["udp"]["answered"])
            except (ValueError, KeyError):
                self.note_error(f"steady.py rc {rc}: {out[-200:]}")

    def bulk(self):
        while not self.sleep(110):
            rc, _ = self.run(self.client("iperf3", "-c", VIP, "-p", "5201", "-t", "10", "-J"), 120)
            self.add(iperf_runs=1, iperf_failed=0 if rc == 0 else 1)

    # --- churn -------------------------------------------------------------

    def changes(self):
        steps = [
            ("backend", "set-weight", "web", "10.1.0.13:8080", "3"),
            ("backend", "set-weight", "web", "10.1.0.13:8080", "1"),
            ("backend", "drain", "echo", "10.1.0.12:9000"),
            ("backend", "undrain", "echo", "10.1.0.12:9000"),
            ("backend", "del", "web", "10.1.0.13:8080"),
            ("backend", "add", "web", "10.1.0.13:8080"),
            "reload",
        ]
        i = 0
        while not self.sleep(10):
            if steps[i % len(steps)] == "reload":
                # The file's backends again: in the same sequence as the
                # edits, so no edit meets a state a reload just replaced.
                os.kill(self.a.lbd_pid, signal.SIGHUP)
                self.add(reloads=1)
                i += 1
                continue
            r = self.lbctl(*steps[i % len(steps)])
            if r.returncode == 0:
                self.add(config_changes=1)
            else:
                self.add(config_changes_refused=1)
                self.note_error(f"lbctl {' '.join(steps[i % len(steps)])}: {r.stdout[-200:]}{r.stderr[-200:]}")
            i += 1

    def health_flaps(self):
        st = f"{STATE_ROOT}/{self.a.topology}"
        while not self.sleep(90):
            pid = int(open(f"{st}/be3.pid").read())
            os.kill(pid, signal.SIGTERM)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # started by topology.sh, not our child
            if self.sleep(20):
                pass
            log = open(f"{st}/be3.log", "a")
            p = subprocess.Popen(["ip", "netns", "exec", f"{self.a.topology}-be3", PY, f"{HERE}/backend.py",
                                  "--name", "be3", "--http-port", "8080", "--udp-port", "9000"],
                                 stdout=log, stderr=subprocess.STDOUT)
            open(f"{st}/be3.pid", "w").write(str(p.pid))
            self.add(health_flaps=1)

    # --- sampling ----------------------------------------------------------

    def sample(self, t0):
        rss_kib = 0
        with open(f"/proc/{self.a.lbd_pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        stats = json.loads(self.lbctl("stats").stdout)
        stats = stats.get("stats", stats)
        sessions = int(json.loads(self.lbctl("sessions", "--count").stdout)["count"])
        self.last_drops = {k: v for k, v in stats["drops"].items() if v}
        return {"t": round(time.monotonic() - t0, 1), "rss_kib": rss_kib,
                "mempool_in_use": stats["mempool_in_use"], "sessions": sessions,
                "drops_total": stats["drops_total"],
                "rx_packets": sum(p["rx_packets"] for p in stats["ports"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topology", required=True)
    ap.add_argument("--lbd-pid", type=int, required=True)
    ap.add_argument("--lbctl", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--summary", required=True)
    a = ap.parse_args()
    soak = Soak(a)
    t0 = time.monotonic()
    idle = soak.sample(t0)
    samples = [idle]
    loops = [soak.short_flows, soak.steady_flows, soak.bulk, soak.changes, soak.health_flaps]
    threads = [threading.Thread(target=f, daemon=True) for f in loops]
    for t in threads:
        t.start()
    end = t0 + a.minutes * 60
    while time.monotonic() < end:
        time.sleep(min(15, max(0, end - time.monotonic())))
        samples.append(soak.sample(t0))
        print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
    soak.stop.set()
    for t in threads:
        t.join(timeout=420)
    # Whatever still runs (a child past its own end) is stopped by PID.
    with soak.lock:
        for p in list(soak.children):
            p.kill()
    # Idle: wait (3 minutes at most) for the timeouts to empty the tables.
    deadline = time.monotonic() + 180
    final = soak.sample(t0)
    while final["sessions"] and time.monotonic() < deadline:
        time.sleep(2)
        final = soak.sample(t0)
    samples.append(final)

    warm = samples[max(1, len(samples) // 4)]
    peak = max(s["sessions"] for s in samples)
    rss_growth = final["rss_kib"] - warm["rss_kib"]
    checks = {
        "sessions_back_to_zero": final["sessions"] == 0,
        "mempool_back_to_idle": final["mempool_in_use"] == idle["mempool_in_use"],
        "rss_flat_after_warmup": rss_growth <= max(4096, warm["rss_kib"] // 50),
        "lbd_alive": os.path.exists(f"/proc/{a.lbd_pid}"),
        "traffic_answered": soak.totals["tcp_flows_ok"] > 0 and soak.totals["steady_tcp_answered"] > 0,
        # The defences (SYN proxy on web and iperf, a security group
        # admitting the client network, per-source limits on echo, VIP
        # protection far above the traffic) never drop legitimate traffic.
        "defences_quiet": not any(soak.last_drops.get(r) for r in DEFENCE_DROPS),
    }
    summary = {"minutes": a.minutes, "workers": a.workers, "samples": len(samples),
               "idle_start": idle, "after_warmup": warm, "end_idle": final, "peak_sessions": peak,
               "rss_growth_kib_after_warmup": rss_growth,
               "rss_max_kib": max(s["rss_kib"] for s in samples),
               "mempool_in_use_max": max(s["mempool_in_use"] for s in samples),
               "drops_by_reason": soak.last_drops, "totals": soak.totals, "checks": checks, "pass": all(checks.values())}
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0]))
        w.writeheader()
        w.writerows(samples)
    with open(a.summary, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    sys.exit(0 if summary["pass"] else 1)


if __name__ == "__main__":
    main()
