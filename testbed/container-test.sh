#!/bin/bash
# The container test (testbed/test.sh runs it): builds the image from the
# Dockerfile, checks its entry points, runs the namespace demo inside one
# container with the privileges README gives it, the packet-rate runner's
# smoke run inside a container, and the generator -> lbd -> sink benchmark
# across three containers over memif and over af_packet veths
# (benches/containers.py --smoke). Removes every container and network it
# made, and stops the Docker engine if it started it.
#
# Skips, with a message saying so, only when no Docker engine can be had:
# docker.io cannot be installed or dockerd does not start.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
IMAGE=${LBD_TEST_IMAGE:-lbd:test}
NAME="lbd-ctest-$$"
STARTED_ENGINE=0

[[ $EUID -eq 0 ]] || { echo "container-test.sh: run as root" >&2; exit 1; }

step() { printf '\n==> container test: %s\n' "$*"; }
trap 'echo "container-test.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cleanup() {
    local rc=$?
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        for c in $(docker ps -aq --filter "name=$NAME" 2>/dev/null); do docker rm -f "$c" >/dev/null 2>&1 || true; done
    fi
    if ((STARTED_ENGINE)); then "$ROOT/docker/engine.sh" down || true; fi
    exit $rc
}
trap cleanup EXIT INT TERM

step "Docker engine and base images"
if ! docker info >/dev/null 2>&1 && [[ ! -f /run/lbd-docker/dockerd.pid ]]; then
    STARTED_ENGINE=1
fi
if ! "$ROOT/docker/engine.sh" up; then
    if ! command -v dockerd >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
        echo "SKIPPED: the container test: no Docker engine could be installed or started here (see above)" >&2
        exit 0
    fi
    exit 1
fi

step "docker build -t $IMAGE ."
T0=$(date +%s)
docker build -q -t "$IMAGE" --build-arg LBD_GIT_REVISION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" . >/dev/null
echo "built in $(($(date +%s) - T0)) s; image size $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"

step "entry points"
# (Outputs are captured, then searched: `cmd | grep -q` under pipefail
# fails whenever grep exits before cmd has written everything.)
out=$(docker run --rm --name "$NAME-help" "$IMAGE" help)
grep -q "the namespace demo" <<<"$out"
docker run --rm --name "$NAME-shell" "$IMAGE" bash -c 'command -v dpdk-testpmd' >/dev/null
# (Output is captured, then shown: `tee /dev/stderr` would reopen, and
# truncate, a log file that stderr goes to.)
out=$(docker run --rm --name "$NAME-version" "$IMAGE" lbd --version)
echo "$out"
grep -q "^lbd " <<<"$out"
docker run --rm --name "$NAME-lbctl" "$IMAGE" lbctl --help >/dev/null
docker run --rm --name "$NAME-check" "$IMAGE" lbd --check-config /opt/lbd/config/reference.yaml
if docker run --rm --name "$NAME-bad" "$IMAGE" frobnicate >/dev/null 2>&1; then
    echo "an unknown command did not fail" >&2
    exit 1
fi

step "lbd as a daemon: config mounted read-only, no added privilege, lbctl from a second container"
RUNDIR=$(mktemp -d /tmp/lbd-ctest.XXXXXX)
cat >"$RUNDIR/lbd.yaml" <<'YAML'
eal: ["--no-pci", "--no-huge", "-m", "256", "--no-telemetry", "--vdev", "net_null0", "--vdev", "net_null1"]
lcores: {workers: 1}
ports:
  - {name: ext, device: net_null0, address: 10.0.0.1/24, exception: off}
  - {name: int, device: net_null1, address: 10.1.0.1/24, exception: off}
listeners:
  - {name: web, vip: 10.0.0.100, protocol: tcp, port: 80, backends: [{address: 10.1.0.11, port: 8080}]}
mempool: {mbufs: 8192}
metrics: {listen: "off"}
YAML
mkdir "$RUNDIR/run"
docker run -d --name "$NAME-lbd" -v "$RUNDIR/lbd.yaml:/etc/lbd/lbd.yaml:ro" -v "$RUNDIR/run:/run/lbd" "$IMAGE" >/dev/null
for _ in $(seq 300); do
    [[ -S "$RUNDIR/run/lbd.sock" ]] && break
    [[ "$(docker inspect -f '{{.State.Running}}' "$NAME-lbd")" == true ]] || break
    sleep 0.2
done
# lbd sees this lbctl, in another PID namespace, as pid 0 (SO_PEERCRED).
out=$(docker run --rm --name "$NAME-lbctl2" -v "$RUNDIR/run:/run/lbd" "$IMAGE" lbctl listener list)
echo "$out"
grep -q "10.0.0.100" <<<"$out"
docker kill -s TERM "$NAME-lbd" >/dev/null
[[ "$(docker wait "$NAME-lbd")" == 0 ]] || { docker logs "$NAME-lbd" >&2; exit 1; }
out=$(docker logs "$NAME-lbd" 2>&1)
grep -q '"listeners"' <<<"$out"   # the final counters, as JSON on stdout
docker rm "$NAME-lbd" >/dev/null
rm -rf "$RUNDIR"

step "the demo inside one container"
# The demo makes network namespaces and veths (NET_ADMIN, SYS_ADMIN for
# `ip netns`), writes their sysctls (/proc/sys writable: systempaths),
# gives lbd kernel exception interfaces (/dev/net/tun) and runs it on
# af_packet without hugepages. The privileges README gives; no --privileged.
docker run --rm --name "$NAME-demo" \
    --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun \
    --security-opt systempaths=unconfined --security-opt apparmor=unconfined \
    "$IMAGE" demo >"/tmp/$NAME-demo.log" 2>&1 || {
    tail -40 "/tmp/$NAME-demo.log" >&2
    rm -f "/tmp/$NAME-demo.log"
    exit 1
}
grep -E "answered|Demo complete" "/tmp/$NAME-demo.log"
grep -q "^Demo complete" "/tmp/$NAME-demo.log"
rm -f "/tmp/$NAME-demo.log"

step "the packet-rate runner inside a container (smoke: established TCP and the SYN flood)"
out=$(docker run --rm --name "$NAME-bench" "$IMAGE" bench --smoke --only 1,5)
tail -4 <<<"$out"

step "generator -> lbd -> sink in three containers, over memif and af_packet (smoke)"
python3 "$ROOT/benches/containers.py" --image "$IMAGE" --smoke --json "/tmp/$NAME-bench.json"
python3 - "/tmp/$NAME-bench.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
assert [r["path"] for r in rows] == ["memif", "af_packet"], rows
for r in rows:
    assert r["lbd_sessions_created"] > 0 and r["lbd_to_backends"] > 0 and r["testpmd_mpps"] > 0, r
PY
rm -f "/tmp/$NAME-bench.json"
left=$(docker ps -aq --filter "name=lbdbench-" | wc -l)
[[ $left -eq 0 ]] || { echo "benches/containers.py left $left containers" >&2; exit 1; }
echo "container test passed"
