#!/bin/bash
# The image's entry point: the first argument names what to run.
set -euo pipefail

usage() {
    cat <<'USAGE'
lbd container image. Commands:
  lbd [ARGS]       the load balancer daemon (default: lbd -c /etc/lbd/lbd.yaml)
  lbctl ARGS       the CLI (mount lbd's control socket directory at /run/lbd)
  bench [ARGS]     the packet-rate runner: lbd against dpdk-testpmd on the same
                   vdevs (benches/run.py --no-build; try `bench --smoke`)
  demo             the namespace demo: client, 3 backends and lbd, all inside
                   this container (testbed/demo.sh)
  testpmd ARGS     dpdk-testpmd, e.g. a generator or a sink (benches/containers.py)
  help             this text
  COMMAND [ARGS]   any other program in the image (bash, ip, ...)
Every DPDK process you start here should pass --no-pci, or an explicit -a
allow-list of the PCI devices it may use.
USAGE
}

# LBD_WAIT_IFACES="eth0 eth1": wait (60 s at most) until these interfaces
# exist, for containers started with `--network none` whose veths are put
# in from outside once they run (benches/containers.py does).
for iface in ${LBD_WAIT_IFACES:-}; do
    for _ in $(seq 600); do
        [[ -e "/sys/class/net/$iface" ]] && break
        sleep 0.1
    done
    [[ -e "/sys/class/net/$iface" ]] || { echo "lbd-entrypoint: interface $iface did not appear within 60 s" >&2; exit 1; }
done

cmd=${1:-help}
[[ $# -gt 0 ]] && shift
case "$cmd" in
    lbd) exec /opt/lbd/bin/lbd "$@" ;;
    lbctl) exec /opt/lbd/bin/lbctl "$@" ;;
    bench) exec python3 /opt/lbd/benches/run.py --no-build --bin-dir /opt/lbd/bin --work /tmp/lbd-bench "$@" ;;
    demo) LBD_BIN_DIR=/opt/lbd/bin exec /opt/lbd/testbed/demo.sh "$@" ;;
    testpmd) exec /usr/bin/dpdk-testpmd "$@" ;;
    help | -h | --help) usage ;;
    *)
        if command -v "$cmd" >/dev/null 2>&1; then
            exec "$cmd" "$@"
        fi
        echo "lbd-entrypoint: unknown command '$cmd'" >&2
        usage >&2
        exit 2
        ;;
esac
