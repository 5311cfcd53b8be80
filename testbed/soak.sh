#!/bin/bash
# Soak run: lbd on the namespace testbed under mixed traffic with churn
# for a fixed time, then checks that memory, mempool occupancy and the
# session count came back flat.
#
#   testbed/soak.sh [MINUTES] [WORKERS]     (default 30 minutes, 2 workers)
#
# Traffic (from the client namespace, all at once, in loops):
#   - new short flows: batches of TCP connections (one HTTP request, then
#     close) and UDP flows (one datagram and its echo), left to time out;
#   - established flows: keep-alive HTTP connections and UDP flows sending
#     in a loop for two minutes at a time;
#   - bulk: a 10 s iperf3 transfer every two minutes.
# Churn (driven by testbed/soak.py, through lbctl and signals):
#   - every 10 s one configuration change in turn: a backend's weight up and
#     back, drain and undrain, a backend removed and added back;
#   - every 70 s (in the same sequence) a SIGHUP reload of the file;
#   - every 90 s be3's server is stopped and restarted 20 s later, so the
#     health checks take it out and bring it back (a health flap).
# The defences are on and must never bite: a SYN proxy on web and iperf, a
# security group admitting the client network (default deny), per-source
# limits on echo, protection of the VIP far above the traffic.
# Every 15 s it samples lbd's resident memory (VmRSS), mbufs in use and
# sessions. At the end the traffic stops; once the idle timeouts have
# emptied the tables it samples again. Pass: sessions back to 0, mbufs in
# use back to the idle figure of the start, VmRSS at the end within 2 % (or
# 4 MiB) of the sample taken after the warm-up (the first quarter), no
# drop by a defence. The
# summary (JSON) goes to stdout and to soak-<date>.json under
# $LBD_SOAK_OUT (default /tmp); the samples to a CSV beside it.
# Run as root on Debian 12, after testbed/install-deps.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MINUTES=${1:-30}
WORKERS=${2:-2}
TOPO=soak$$
TOPO=${TOPO:0:8}
WORK=$(mktemp -d /tmp/lbd-soak.XXXXXX)
OUT=${LBD_SOAK_OUT:-/tmp}
LBD_PID=""
PREFIX="lbd-$TOPO"

cleanup() {
    local rc=$?
    if [[ -n "$LBD_PID" ]] && kill -0 "$LBD_PID" 2>/dev/null; then
        kill -TERM "$LBD_PID" 2>/dev/null || true
        wait "$LBD_PID" 2>/dev/null || true
    fi
    "$ROOT/testbed/topology.sh" down "$TOPO" || true
    rm -rf "/var/run/dpdk/$PREFIX"
    if ((rc != 0)); then
        echo "soak failed (exit $rc); lbd log:" >&2
        tail -20 "$WORK/lbd.log" >&2 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT INT TERM

export PATH="$HOME/.cargo/bin:$PATH"
cd "$ROOT"
cargo build --release --locked -q --workspace --bins
LBD="$ROOT/target/release/lbd"
LBCTL="$ROOT/target/release/lbctl"

"$ROOT/testbed/topology.sh" up "$TOPO" lbns
"$ROOT/testbed/topology.sh" config "$TOPO" "$WORKERS" "$PREFIX" >"$WORK/base.yaml"
# Short idle timeouts, so sessions come and go during the run and the
# tables empty within a minute after it; health checks for the flaps.
/usr/bin/python3 - "$WORK/base.yaml" "$WORK/lbd.yaml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = text.replace("    scheduler: maglev\n",
    "    scheduler: maglev\n"
    "    syn_proxy: on\n"
    "    health_check: {kind: http, path: /, interval: 500ms, timeout: 400ms, rise: 2, fall: 2}\n", 1)
text = text.replace("    port: 9000\n",
    "    port: 9000\n"
    "    health_check: {kind: udp, payload: ping, interval: 500ms, timeout: 400ms, rise: 2, fall: 2}\n", 1)
text = text.replace("    port: 5201\n", "    port: 5201\n    syn_proxy: on\n", 1)
text = text.replace("    port: 9000\n", "    port: 9000\n"
    "    limits: {per_source: {max_sessions: 100000, packets_per_second: 1000000}}\n", 1)
text += "timeouts: {tcp_syn: 5s, tcp_established: 60s, tcp_closing: 5s, udp: 10s}\n"
# The internet-facing defences, on and never meant to bite: every drop
# they count is a false positive (soak.py checks there is none).
text += ("security_groups:\n  clients: {rules: [{action: allow, source: 10.0.0.0/24}], default: deny}\n"
         "security: {default_group: clients}\n"
         "vips:\n  - {address: 10.0.0.100, protection: {scrub: {packets_per_second: 5000000}, hold: 10s}}\n")
open(sys.argv[2], "w").write(text)
PY
"$LBD" --check-config "$WORK/lbd.yaml"
ip netns exec "$TOPO-lb" "$LBD" -c "$WORK/lbd.yaml" >"$WORK/stdout" 2>"$WORK/lbd.log" &
LBD_PID=$!
for _ in $(seq 300); do
    grep -q "lbd: ready" "$WORK/lbd.log" && break
    kill -0 "$LBD_PID" 2>/dev/null || { echo "lbd exited:"; cat "$WORK/lbd.log"; exit 1; }
    sleep 0.1
done
grep -q "lbd: ready" "$WORK/lbd.log" || { echo "lbd not ready"; exit 1; }

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
/usr/bin/python3 "$ROOT/testbed/soak.py" --topology "$TOPO" --lbd-pid "$LBD_PID" --lbctl "$LBCTL" \
    --socket "/run/lbd-testbed/$TOPO/lbd.sock" --config "$WORK/lbd.yaml" --minutes "$MINUTES" \
    --workers "$WORKERS" --csv "$OUT/soak-$STAMP.csv" --summary "$OUT/soak-$STAMP.json"
