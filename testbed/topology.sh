#!/bin/bash
# Network-namespace testbed for lbd.
#
#   topology.sh up NAME [lbns]
#                            build the topology below, start the backends;
#                            with `lbns`, lbd's two veth ends live in a
#                            namespace NAME-lb instead of the root one (lbd
#                            then runs there: `ip netns exec NAME-lb lbd ...`)
#                            and lbd's kernel exception interfaces, which
#                            carry the port addresses, are created there
#   topology.sh down NAME    stop what `up` started and delete all of it
#   topology.sh config NAME WORKERS EAL_PREFIX [IDLE_SLEEP]
#                            print an lbd configuration for the topology
#                            (exception interfaces on only with `lbns`)
#
#  [NAME-client]                 root namespace                [NAME-sw]         [NAME-be1..3]
#   eth0 10.0.0.2/24  <--veth-->  NAME-e (lbd port ext,          br0 -- sw-beN <--veth--> eth0 10.1.0.1N/24
#   gw 10.0.0.1                    net_af_packet0, 10.0.0.1)      |                       gw 10.1.0.1
#                                 NAME-i (lbd port int,  <--veth--> sw-up                 http :8080, udp :9000
#                                   net_af_packet1, 10.1.0.1)                             (be1 also iperf3 :5201)
#
# VIP 10.0.0.100 (tcp 80, udp 9000, tcp 5201) lives on the ext port.
# NAME is at most 8 characters (interface names are limited to 15).
# `down` is idempotent and only touches what carries NAME; processes are
# stopped by the PIDs `up` recorded, never by name.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
STATE_ROOT=/run/lbd-testbed

die() { echo "topology.sh: $*" >&2; exit 1; }

check_name() {
    [[ "$1" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "NAME must be 1-8 of [a-z0-9], starting with a letter: '$1'"
}

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

quiet_ns() {
    # No IPv6 chatter (router solicitations, DAD) on the test links.
    nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    nsx "$1" ip link set lo up
}

start_bg() {
    # start_bg NAME TAG NS CMD...: run CMD in NS, record its PID.
    local name=$1 tag=$2 ns=$3; shift 3
    local st="$STATE_ROOT/$name"
    ip netns exec "$ns" "$@" >"$st/$tag.log" 2>&1 &
    echo $! >"$st/$tag.pid"
}

wait_port() {
    # wait_port NS PROTO PORT: until something listens there (60 s: a
    # Python start on a loaded machine can take several).
    local ns=$1 proto=$2 port=$3
    for _ in $(seq 600); do
        if nsx "$ns" ss -H -l"${proto:0:1}"n "sport = :$port" | grep -q .; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on $proto/$port in $ns"
}

up() {
    local name=$1 lbns=${2:-}
    check_name "$name"
    local st="$STATE_ROOT/$name"
    [[ -e "$st" ]] && down "$name"
    mkdir -p "$st"

    local spaces=(client sw be1 be2 be3)
    [[ "$lbns" == lbns ]] && spaces+=(lb)
    for ns in "${spaces[@]}"; do
        ip netns add "$name-$ns"
        quiet_ns "$name-$ns"
    done

    # Client side: NAME-e (DPDK takes it) <-> eth0 in the client.
    ip link add "$name-e" type veth peer name eth0 netns "$name-client"
    # Backend side: NAME-i (DPDK) <-> sw-up in the switch namespace.
    ip link add "$name-i" type veth peer name sw-up netns "$name-sw"
    local lbx=()
    if [[ "$lbns" == lbns ]]; then
        ip link set "$name-e" netns "$name-lb"
        ip link set "$name-i" netns "$name-lb"
        lbx=(ip netns exec "$name-lb")
    fi
    for dev in "$name-e" "$name-i"; do
        "${lbx[@]}" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1"
        # Frames above the mbuf size stall af_packet: no GRO towards DPDK.
        "${lbx[@]}" ethtool -K "$dev" gro off lro off >/dev/null 2>&1 || true
        "${lbx[@]}" ip link set "$dev" up
        if [[ "$lbns" == lbns ]]; then
            # af_packet leaves the veth to the kernel too, and the kernel of
            # NAME-lb owns the port addresses (on lbd's exception
            # interfaces): without these it would answer ARP and accept IP
            # arriving on the veth itself, beside lbd. Strict reverse-path
            # filtering drops that IP (its source routes via lbd's
            # interface), arp_ignore=8 silences ARP.
            "${lbx[@]}" sysctl -qw "net.ipv4.conf.$dev.rp_filter=1" "net.ipv4.conf.$dev.arp_ignore=8"
        fi
    done

    nsx "$name-client" ip addr add 10.0.0.2/24 dev eth0
    nsx "$name-client" ip link set eth0 up
    nsx "$name-client" ip route add default via 10.0.0.1
    # The kernel would leave TCP/UDP checksums to an offload that an
    # af_packet reader never performs: compute them in software.
    nsx "$name-client" ethtool -K eth0 tx off >/dev/null

    # No multicast snooping: the bridge would send IGMP reports of its own
    # into lbd's port, noise that is not test traffic.
    nsx "$name-sw" ip link add br0 type bridge mcast_snooping 0
    nsx "$name-sw" ip link set br0 up
    nsx "$name-sw" ip link set sw-up master br0 up
    for i in 1 2 3; do
        local ns="$name-be$i"
        ip link add "sw$i-$name" netns "$name-sw" type veth peer name eth0 netns "$ns"
        nsx "$name-sw" ip link set "sw$i-$name" master br0 up
        nsx "$ns" ip addr add "10.1.0.1$i/24" dev eth0
        nsx "$ns" ip link set eth0 up
        nsx "$ns" ip route add default via 10.1.0.1
        nsx "$ns" ethtool -K eth0 tx off >/dev/null
        start_bg "$name" "be$i" "$ns" "$PY" "$HERE/backend.py" --name "be$i" --http-port 8080 --udp-port 9000
    done
    if command -v iperf3 >/dev/null; then
        start_bg "$name" iperf3 "$name-be1" iperf3 -s -p 5201
    fi
    for i in 1 2 3; do
        wait_port "$name-be$i" tcp 8080
        wait_port "$name-be$i" udp 9000
    done
    if command -v iperf3 >/dev/null; then
        wait_port "$name-be1" tcp 5201
    fi
    echo "topology $name is up"
}

down() {
    local name=$1
    check_name "$name"
    local st="$STATE_ROOT/$name"
    if [[ -d "$st" ]]; then
        for f in "$st"/*.pid; do
            [[ -e "$f" ]] || continue
            local pid
            pid=$(cat "$f")
            kill "$pid" 2>/dev/null || true
        done
        sleep 0.2
        for f in "$st"/*.pid; do
            [[ -e "$f" ]] || continue
            kill -9 "$(cat "$f")" 2>/dev/null || true
        done
        rm -rf "$st"
    fi
    # Deleting a namespace deletes its veths and their root-side peers.
    for ns in client sw be1 be2 be3 lb; do
        ip netns del "$name-$ns" 2>/dev/null || true
    done
    ip link del "$name-e" 2>/dev/null || true
    ip link del "$name-i" 2>/dev/null || true
    return 0
}

config() {
    local name=$1 workers=$2 prefix=$3 idle=${4:-50us}
    check_name "$name"
    # Exception interfaces carry the port addresses into the kernel of the
    # namespace lbd runs in: never into the root namespace of the machine.
    local exception=off
    ip netns list | grep -qx "$name-lb\( (id: [0-9]*)\)\?" && exception=on
    cat <<EOF
# lbd configuration for testbed topology "$name" (generated by topology.sh).
eal: ["--no-pci", "--no-huge", "-m", "1024", "--file-prefix", "$prefix", "--no-telemetry",
      "--vdev", "net_af_packet0,iface=$name-e,qpairs=$workers,framecnt=4096",
      "--vdev", "net_af_packet1,iface=$name-i,qpairs=$workers,framecnt=4096"]
lcores: {workers: $workers, idle_sleep: $idle$( ((workers > 1)) && echo ", cpus: [0, 1]")}
ports:
  - {name: ext, device: net_af_packet0, address: 10.0.0.1/24, exception: $exception}
  - {name: int, device: net_af_packet1, address: 10.1.0.1/24, exception: $exception}
listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    scheduler: maglev
    backends:
      - {address: 10.1.0.11, port: 8080}
      - {address: 10.1.0.12, port: 8080}
      - {address: 10.1.0.13, port: 8080}
  - name: echo
    vip: 10.0.0.100
    protocol: udp
    port: 9000
    backends:
      - {address: 10.1.0.11, port: 9000}
      - {address: 10.1.0.12, port: 9000}
      - {address: 10.1.0.13, port: 9000}
  - name: iperf
    vip: 10.0.0.100
    protocol: tcp
    port: 5201
    backends:
      - {address: 10.1.0.11, port: 5201}
sessions: {capacity_per_worker: 100000}
control: {socket: $STATE_ROOT/$name/lbd.sock}
metrics: {listen: "127.0.0.1:0"}
EOF
}

case "${1:-}" in
    up) [[ $# -eq 2 || ( $# -eq 3 && "$3" == lbns ) ]] || die "usage: $0 up NAME [lbns]"; up "$2" "${3:-}" ;;
    down) [[ $# -eq 2 ]] || die "usage: $0 down NAME"; down "$2" ;;
    config) [[ $# -ge 4 ]] || die "usage: $0 config NAME WORKERS EAL_PREFIX [IDLE_SLEEP]"; config "$2" "$3" "$4" "${5:-50us}" ;;
    *) die "usage: $0 up|down|config NAME ..." ;;
esac
