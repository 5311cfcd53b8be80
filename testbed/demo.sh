#!/bin/bash
# The README demo: install what is missing, build lbd, bring up the
# namespace testbed, run lbd with config/demo.yaml in a namespace of its
# own, send 300 HTTP requests and 100 UDP datagrams from the client
# namespace to the VIP, show which backend got what and which client
# address the backends saw; then stop a backend's server and watch the
# health checks take it out and bring it back while requests keep
# succeeding; tear down. Run as root on Debian 12.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOPO=lbdemo
WORK=$(mktemp -d /tmp/lbd-demo.XXXXXX)
LBD_PID=""

cleanup() {
    local rc=$?
    if [[ -n "$LBD_PID" ]] && kill -0 "$LBD_PID" 2>/dev/null; then
        kill -TERM "$LBD_PID" 2>/dev/null || true
        wait "$LBD_PID" 2>/dev/null || true
    fi
    "$ROOT/testbed/topology.sh" down "$TOPO" || true
    rm -rf /var/run/dpdk/lbd-demo
    if ((rc != 0)); then
        echo "demo failed (exit $rc); lbd log:" >&2
        tail -20 "$WORK/lbd.log" >&2 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT INT TERM

step() { printf '\n==> %s\n' "$*"; }

if [[ -n "${LBD_BIN_DIR:-}" ]]; then
    # Prebuilt binaries (the container image): nothing to install or build.
    LBD="$LBD_BIN_DIR/lbd"
    LBCTL="$LBD_BIN_DIR/lbctl"
else
    step "Installing missing packages"
    "$ROOT/testbed/install-deps.sh"
    export PATH="$HOME/.cargo/bin:$PATH"

    step "Building lbd (release)"
    cargo build --release --locked -q --workspace --bins
    LBD="$ROOT/target/release/lbd"
    LBCTL="$ROOT/target/release/lbctl"
fi
"$LBD" --version

step "Bringing up the testbed: client, 3 backends, lbd in between (in namespace $TOPO-lb)"
"$ROOT/testbed/topology.sh" up "$TOPO" lbns

step "Starting lbd with config/demo.yaml"
"$LBD" --check-config config/demo.yaml
# `ip netns exec` execs lbd in place: $! is lbd's PID.
ip netns exec "$TOPO-lb" "$LBD" -c config/demo.yaml --stats-out "$WORK/stats.json" >"$WORK/stdout" 2>"$WORK/lbd.log" &
LBD_PID=$!
for _ in $(seq 600); do
    grep -q "lbd: ready" "$WORK/lbd.log" && break
    kill -0 "$LBD_PID" 2>/dev/null || { echo "lbd exited:"; cat "$WORK/lbd.log"; exit 1; }
    sleep 0.1
done
grep "lbd: ready" "$WORK/lbd.log"

C=(ip netns exec "$TOPO-client")

step "300 HTTP requests from the client (10.0.0.2) to http://10.0.0.100/"
seq 300 | xargs -P 8 -I{} "${C[@]}" curl -sS --max-time 5 http://10.0.0.100/ >"$WORK/http.txt"
step "100 UDP datagrams to 10.0.0.100:9000 (one socket and source port each, each waiting for its answer)"
# shellcheck disable=SC2046
"${C[@]}" /usr/bin/python3 "$ROOT/testbed/udp-ask.py" --timeout 3 10.0.0.100 9000 $(seq -f "datagram-%g" 100) >"$WORK/udp.txt" || true

step "Results"
/usr/bin/python3 - "$WORK" <<'PY'
import collections, json, sys
work = sys.argv[1]
def parse(path):
    per, clients, n = collections.Counter(), collections.Counter(), 0
    for line in open(path):
        parts = dict(p.split("=", 1) for p in line.split() if "=" in p)
        if "backend" in parts:
            n += 1
            per[parts["backend"]] += 1
            clients[parts["client"].rsplit(":", 1)[0]] += 1
    return n, per, clients
ok = True
for title, path, sent in (("HTTP", f"{work}/http.txt", 300), ("UDP", f"{work}/udp.txt", 100)):
    n, per, clients = parse(path)
    print(f"{title}: {n}/{sent} answered")
    for b in sorted(per):
        print(f"  {b}: {per[b]:4d} {'#' * (per[b] * 40 // max(sent, 1))}")
    print("  client address seen by the backends: " + ", ".join(f"{c} ({k})" for c, k in clients.items()))
    ok &= n == sent and len(per) == 3 and list(clients) == ["10.0.0.2"]
sys.exit(0 if ok else 1)
PY

step "What lbctl says about the running lbd"
"$LBCTL" status
"$LBCTL" backend list
"$LBCTL" sessions --limit 5

step "The host keeps a network stack on the DPDK ports (kernel interfaces lbd-ext, lbd-int)"
ip netns exec "$TOPO-lb" ip -br -4 address show
ip netns exec "$TOPO-lb" ping -n -c 2 -W 2 10.1.0.11

# health STATE LISTENER BACKEND: waits (20 s at most) until lbctl shows
# BACKEND of LISTENER in STATE.
health() {
    for _ in $(seq 200); do
        "$LBCTL" --json backend list --listener "$2" | /usr/bin/python3 -c '
import json, sys
want, state = sys.argv[1], sys.argv[2]
ok = any("%s:%d" % (b["address"], b["port"]) == want and b["health"] == state for b in json.load(sys.stdin)["backends"])
sys.exit(0 if ok else 1)' "$3" "$1" && return 0
        sleep 0.1
    done
    echo "$3 of $2 did not become $1" >&2
    return 1
}

step "Health checks: stopping be2's servers (kill by its recorded PID)"
kill "$(cat /run/lbd-testbed/$TOPO/be2.pid)"
T0=$(date +%s%N)
health down web 10.1.0.12:8080
health down echo 10.1.0.12:9000
echo "be2 taken out $(( ($(date +%s%N) - T0) / 1000000 )) ms after it stopped (checks every 500 ms, down after 2 failures)"
"$LBCTL" backend list --listener web
step "100 HTTP requests with be2 down"
seq 100 | xargs -P 8 -I{} "${C[@]}" curl -sS --max-time 5 http://10.0.0.100/ >"$WORK/http-down.txt" || true

step "Restarting be2; it rejoins after 2 successful checks"
ip netns exec "$TOPO-be2" /usr/bin/python3 "$ROOT/testbed/backend.py" --name be2 --http-port 8080 --udp-port 9000 \
    >>"/run/lbd-testbed/$TOPO/be2.log" 2>&1 &
echo $! >"/run/lbd-testbed/$TOPO/be2.pid"
health up web 10.1.0.12:8080
health up echo 10.1.0.12:9000
"$LBCTL" backend list --listener web
step "100 HTTP requests with be2 back"
seq 100 | xargs -P 8 -I{} "${C[@]}" curl -sS --max-time 5 http://10.0.0.100/ >"$WORK/http-up.txt"
/usr/bin/python3 - "$WORK" <<'PY'
import collections, sys
work = sys.argv[1]
ok = True
for title, path, want in (("be2 down", f"{work}/http-down.txt", {"be1", "be3"}),
                          ("be2 back", f"{work}/http-up.txt", {"be1", "be2", "be3"})):
    per = collections.Counter(l.split()[0].split("=", 1)[1] for l in open(path) if l.startswith("backend="))
    n = sum(per.values())
    print(f"{title}: {n}/100 answered, by " + ", ".join(f"{b} {per[b]}" for b in sorted(per)))
    ok &= n == 100 and set(per) == want
sys.exit(0 if ok else 1)
PY

step "Stopping lbd; its final counters"
kill -TERM "$LBD_PID"
wait "$LBD_PID" || true
LBD_PID=""
/usr/bin/python3 - "$WORK/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for p in s["ports"]:
    print(f"  port {p['name']:4} rx {p['rx_packets']:7d} pkts  tx {p['tx_packets']:7d} pkts")
for l in s["listeners"]:
    print(f"  listener {l['name']:5} {l['protocol']} {l['vip']}:{l['port']}  sessions {l['sessions_created']}  "
          f"in {l['packets_in']} pkts  out {l['packets_out']} pkts")
drops = {k: v for k, v in s["drops"].items() if v}
print(f"  drops: {drops if drops else 'none'}")
PY
echo
echo "Demo complete: every request reached a backend through the VIP, the backends saw the client's own address,"
echo "and a stopped backend was taken out and brought back by the health checks without a failed request."
