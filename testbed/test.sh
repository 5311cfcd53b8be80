#!/bin/bash
# Runs every test of the project: unit and property tests, the pcap golden
# tests (lbd on net_pcap), and the network-namespace tests (lbd on
# af_packet with real clients and servers). Installs what is missing
# first. Run as root on Debian 12; .ci/run calls this.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ $EUID -ne 0 ]]; then
    echo "test.sh: run as root (the tests start DPDK and create network namespaces)" >&2
    exit 1
fi

"$ROOT/testbed/install-deps.sh"
export PATH="$HOME/.cargo/bin:$PATH"

# The container test (testbed/container-test.sh: image build, demo and
# benchmarks in containers) runs beside the cargo tests: most of its time
# is a release build and package downloads, most of theirs waiting on
# namespaces and timeouts, so the two overlap well on 2 CPUs. Nothing in
# either depends on how fast the other runs. Its log follows at the end.
CTEST_PID=""
CTEST_LOG=$(mktemp /tmp/lbd-container-test.XXXXXX)
stop_ctest() {
    if [[ -n "$CTEST_PID" ]] && kill -0 "$CTEST_PID" 2>/dev/null; then
        kill -TERM -- "-$CTEST_PID" 2>/dev/null || true
        wait "$CTEST_PID" 2>/dev/null || true
        echo "container test stopped early; its log:" >&2
        tail -20 "$CTEST_LOG" >&2 || true
    fi
    rm -f "$CTEST_LOG"
}
trap stop_ctest EXIT
if [[ "${LBD_SKIP_CONTAINER_TEST:-0}" == 1 ]]; then
    echo "==> container test SKIPPED (LBD_SKIP_CONTAINER_TEST=1)"
else
    echo "==> container test started in the background (log at the end)"
    setsid nice -n 5 "$ROOT/testbed/container-test.sh" >"$CTEST_LOG" 2>&1 </dev/null &
    CTEST_PID=$!
fi

# The `ci` profile: release optimisation with debug assertions and
# overflow checks on, so the data path runs at speed and still traps bugs.
# The integration tests run lbd and lbctl binaries: build them first.
echo "==> cargo build (workspace binaries, ci profile)"
cargo build --workspace --profile ci --locked --bins --examples
echo "==> cargo test (workspace, ci profile)"
cargo test --workspace --profile ci --locked -- --test-threads "${LBD_TEST_THREADS:-2}"
# Benchmarks in test mode: each criterion benchmark runs once, the change
# propagation bench runs against a real lbd; figures are printed, never
# asserted (benches/README.md).
echo "==> benchmarks, test mode"
cargo test --profile ci --locked --benches
# The end-to-end bench once with 1-second tools: it builds its testbed,
# takes the balancer seat with nftables, lbd on af_packet and lbd on
# af_xdp, and fails unless the backends saw the client's own address
# through each. Its figures say nothing here.
echo "==> end-to-end bench, smoke (benches/e2e.py)"
python3 "$ROOT/benches/e2e.py" --smoke --no-build --bin-dir "$ROOT/target/ci" --seats nft,lbd,xdp
if [[ -n "$CTEST_PID" ]]; then
    echo "==> container test (waiting for it to finish)"
    rc=0
    wait "$CTEST_PID" || rc=$?
    CTEST_PID=""
    cat "$CTEST_LOG"
    if ((rc != 0)); then
        echo "==> container test FAILED (exit $rc)" >&2
        exit "$rc"
    fi
fi
echo "==> all tests passed"
