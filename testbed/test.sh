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
echo "==> all tests passed"
