#!/bin/bash
# Makes sure a Docker engine answers, and the base images the Dockerfile
# names exist locally. Idempotent; run as root.
#
#   docker/engine.sh up      engine running (installing docker.io and
#                            starting dockerd when needed), base images present
#   docker/engine.sh down    stops the dockerd this script started, if any
#
# The Dockerfile is the one a user with a registry builds unchanged: it
# names the official `rust` and `debian` images. Where no registry can be
# reached (the CI machines of this project), this script creates those
# images locally instead of pulling them:
#   debian:12             from Debian's packages with debootstrap (minbase)
#   rust:<ver>-bookworm   that debian:12 plus this machine's own Rust
#                         toolchain (rustc must be the version named)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE=/run/lbd-docker
PIDFILE="$STATE/dockerd.pid"
DEBIAN_IMAGE=debian:12
RUST_IMAGE=$(sed -n 's/^ARG RUST_IMAGE=//p' "$ROOT/Dockerfile")
say() { echo "docker/engine.sh: $*"; }

engine_up() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        say "installing docker.io and debootstrap"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
    fi
    # No init system runs services here (and where one does, docker.service
    # is already up and `docker info` answered above): start dockerd
    # ourselves and keep its PID, so `down` stops exactly that process.
    mkdir -p "$STATE"
    say "starting dockerd (log $STATE/dockerd.log)"
    setsid dockerd --host unix:///var/run/docker.sock --pidfile "$STATE/dockerd.own.pid" \
        >"$STATE/dockerd.log" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 300); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
        sleep 0.2
    done
    say "dockerd did not come up; its log:" >&2
    tail -20 "$STATE/dockerd.log" >&2 || true
    exit 1
}

engine_down() {
    [[ -f "$PIDFILE" ]] || return 0
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping dockerd (PID $pid)"
        kill -TERM "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$PIDFILE"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# A registry, where one answers, gives the real image; a pull that cannot
# reach one fails within seconds on a closed network, the timeout covers
# one that hangs.
try_pull() { timeout 60 docker pull -q "$1" >/dev/null 2>&1; }

# The certificates in this machine's trust bundle that Debian's
# ca-certificates package does not ship, one file each, into $1.
host_extra_cas() {
    local bundle=/etc/ssl/certs/ca-certificates.crt
    [[ -f "$bundle" ]] || return 0
    mkdir -p "$1"
    python3 - "$bundle" "$1" <<'PY'
import glob, re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
shipped = {c for f in glob.glob("/usr/share/ca-certificates/**/*.crt", recursive=True) for c in pem.findall(open(f).read())}
extra = [c for c in pem.findall(open(sys.argv[1]).read()) if c not in shipped]
for i, c in enumerate(extra):
    with open(f"{sys.argv[2]}/host-ca-{i}.crt", "w") as f:
        f.write(c + "\n")
print(f"docker/engine.sh: {len(extra)} CA certificate(s) of this machine's trust store added to the image")
PY
}

debian_image() {
    have_image "$DEBIAN_IMAGE" && return
    try_pull "$DEBIAN_IMAGE" && { say "pulled $DEBIAN_IMAGE"; return; }
    command -v debootstrap >/dev/null 2>&1 || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    local dir
    dir=$(mktemp -d /tmp/lbd-debootstrap.XXXXXX)
    trap 'rm -rf "$dir"' RETURN
    say "no registry: creating $DEBIAN_IMAGE with debootstrap (about a minute)"
    debootstrap --variant=minbase bookworm "$dir/root" http://deb.debian.org/debian >"$dir/log" 2>&1 || {
        tail -20 "$dir/log" >&2
        exit 1
    }
    # This machine may reach crates.io through a TLS-inspecting proxy whose
    # CA its trust store has and Debian's ca-certificates has not: the
    # local image trusts what this machine trusts, so a build stage that
    # installs ca-certificates picks those CAs up too.
    host_extra_cas "$dir/root/usr/local/share/ca-certificates"
    # Debian's official image cleans the apt lists too.
    rm -rf "$dir"/root/var/lib/apt/lists/* "$dir"/root/var/cache/apt/*.bin
    tar -C "$dir/root" -c . | docker import -c 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
}

rust_image() {
    have_image "$RUST_IMAGE" && return
    try_pull "$RUST_IMAGE" && { say "pulled $RUST_IMAGE"; return; }
    local want have sysroot dir
    want=${RUST_IMAGE#rust:}
    want=${want%-bookworm}
    export PATH="$HOME/.cargo/bin:$PATH"
    have=$(rustc --version 2>/dev/null | awk '{print $2}')
    if [[ "$have" != "$want" && "$have" != "$want".* ]]; then
        say "no registry, and this machine's rustc is '${have:-missing}', not $want: cannot create $RUST_IMAGE" >&2
        exit 1
    fi
    sysroot=$(rustc --print sysroot)
    dir=$(mktemp -d /tmp/lbd-rust-image.XXXXXX)
    trap 'rm -rf "$dir"' RETURN
    say "no registry: creating $RUST_IMAGE from $DEBIAN_IMAGE and this machine's Rust $have"
    # The documentation (share/doc) is most of a toolchain's size and no
    # build reads it.
    mkdir "$dir/rust"
    tar -C "$sysroot" -c --exclude=./share/doc . | tar -x -C "$dir/rust"
    # The official image's layout: tools on PATH under /usr/local/cargo/bin.
    cat >"$dir/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_IMAGE
COPY rust /usr/local/rust
RUN mkdir -p /usr/local/cargo/bin && ln -s /usr/local/rust/bin/* /usr/local/cargo/bin/
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
    docker build -q -t "$RUST_IMAGE" "$dir" >/dev/null
}

case "${1:-up}" in
    up)
        [[ $EUID -eq 0 ]] || { say "run as root" >&2; exit 1; }
        engine_up
        debian_image
        rust_image
        say "engine up; base images $DEBIAN_IMAGE and $RUST_IMAGE present"
        ;;
    down) engine_down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
