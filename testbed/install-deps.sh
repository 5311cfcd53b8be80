#!/bin/bash
# Installs what building, testing and demonstrating lbd needs on Debian 12.
# Idempotent: packages already present are not touched, and apt runs only
# when something is missing. Must run as root.
set -euo pipefail

PACKAGES=(
    # Build: DPDK headers and libraries, bindgen's libclang, the C shim.
    libdpdk-dev pkg-config build-essential libclang1-14 libclang-common-14-dev
    # dpdk: the vdev drivers (net_pcap, net_af_packet, ...); dpdk-dev: dpdk-testpmd.
    # (This script starts no DPDK process; every one the project starts
    # passes --no-pci, so the machine's own NIC is never probed.)
    dpdk dpdk-dev
    # Testbed: namespaces, veth offloads, real clients and servers.
    iproute2 ethtool procps iputils-ping curl socat iperf3 python3 python3-scapy
    # End-to-end benchmark (benches/e2e.py): HTTP load and real web servers.
    wrk nginx-light
    # Health-check tests make a backend hang by dropping its traffic.
    nftables
    # `lbctl top` is tested in a detached tmux session (tests/top.rs).
    tmux
    # A real Prometheus server for the metrics test (not started as a service).
    prometheus
    ca-certificates
    # Host deployment tests (tests/deploy.rs): the Debian package
    # (dpkg-shlibdeps, strip) and EAL's syslog copies seen through strace.
    # (`systemd-analyze verify` runs where the systemd package is there.)
    dpkg-dev binutils strace
)

if [[ $EUID -ne 0 ]]; then
    echo "install-deps.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "install-deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        echo "install-deps.sh: cargo is in $HOME/.cargo/bin; add it to PATH" >&2
    else
        echo "install-deps.sh: installing the Rust toolchain with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    fi
fi
echo "install-deps.sh: all dependencies present"
