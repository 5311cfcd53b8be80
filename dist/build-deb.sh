#!/bin/bash
# Builds the Debian package of lbd: lbd and lbctl, the systemd unit, the
# hugepage helper, the sample configurations and bash completions. The
# DPDK runtime dependencies come from dpkg-shlibdeps (what the binaries
# link) plus the drivers EAL loads at run time.
#
#   dist/build-deb.sh [--profile release] [--bin-dir DIR] [--out DIR]
#
# --bin-dir takes lbd and lbctl already built (the tests pass the ci
# profile's); otherwise `cargo build --profile PROFILE` builds them.
# Needs dpkg-dev (dpkg-deb, dpkg-shlibdeps) and binutils (strip). Prints
# the path of the .deb on its last line.
#
# Why not cargo-deb: a `cargo install cargo-deb` builds ~200 crates (minutes
# on a small CI machine, every run); this is dpkg-deb and dpkg-shlibdeps,
# which every Debian build machine has.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROFILE=release
BIN_DIR=
OUT="$ROOT/target/debian"
while (($#)); do
    case $1 in
        --profile) PROFILE=$2; shift ;;
        --bin-dir) BIN_DIR=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

for tool in dpkg-deb dpkg-shlibdeps strip; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool missing (apt-get install dpkg-dev binutils)" >&2; exit 1; }
done

if [[ -z $BIN_DIR ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --locked -p lbd -p lbctl --bins) >&2
    BIN_DIR="$ROOT/target/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")"
fi
for b in lbd lbctl; do
    [[ -x $BIN_DIR/$b ]] || { echo "build-deb.sh: $BIN_DIR/$b missing" >&2; exit 1; }
done

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
ARCH=$(dpkg --print-architecture)
PKG=lbd
DEB_VERSION="$VERSION-1"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/$PKG"

install -d "$STAGE/DEBIAN" "$STAGE/usr/bin" "$STAGE/usr/sbin" "$STAGE/lib/systemd/system" \
    "$STAGE/etc/lbd" "$STAGE/usr/share/doc/$PKG/examples" "$STAGE/usr/share/bash-completion/completions"
for b in lbd lbctl; do
    install -m 0755 "$BIN_DIR/$b" "$STAGE/usr/bin/$b"
    strip --strip-unneeded "$STAGE/usr/bin/$b"
done
install -m 0755 "$ROOT/dist/lbd-hugepages" "$STAGE/usr/sbin/lbd-hugepages"
install -m 0644 "$ROOT/dist/lbd.service" "$STAGE/lib/systemd/system/lbd.service"
# The configuration the unit starts with: the production sample, to edit
# (a conffile: upgrades keep the operator's version).
install -m 0640 "$ROOT/config/production.yaml" "$STAGE/etc/lbd/lbd.yaml"
for f in production.yaml reference.yaml demo.yaml; do
    install -m 0644 "$ROOT/config/$f" "$STAGE/usr/share/doc/$PKG/examples/$f"
done
install -m 0644 "$ROOT/README.md" "$STAGE/usr/share/doc/$PKG/README.md"
cat >"$STAGE/usr/share/doc/$PKG/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lbd

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF
"$STAGE/usr/bin/lbctl" completions bash >"$STAGE/usr/share/bash-completion/completions/lbctl"
"$STAGE/usr/bin/lbd" --completions bash >"$STAGE/usr/share/bash-completion/completions/lbd"

echo /etc/lbd/lbd.yaml >"$STAGE/DEBIAN/conffiles"

# dpkg-shlibdeps wants a source package around the binaries it reads.
install -d "$WORK/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" >"$WORK/debian/control"
SHLIBS=$(cd "$WORK" && dpkg-shlibdeps -O "$STAGE/usr/bin/lbd" "$STAGE/usr/bin/lbctl" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[[ -n $SHLIBS ]] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
# EAL loads drivers at run time (no link-time dependency): the mempool
# ring driver every pool needs, the PCI and vdev buses. The NICs' own
# drivers come with `dpdk` (Recommends) or one librte-net-* package.
RUNTIME="librte-mempool-ring23, librte-bus-pci23, librte-bus-vdev23"

cat >"$STAGE/DEBIAN/control" <<EOF
Package: $PKG
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: lbd maintainers <lbd@example.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: $SHLIBS, $RUNTIME
Recommends: dpdk
Suggests: bash-completion
Section: net
Priority: optional
Homepage: https://example.invalid/lbd
Description: layer-4 load balancer on DPDK
 lbd is a NAT-mode layer-4 (TCP/UDP) load balancer running on DPDK, with
 Maglev consistent hashing, health checks, SYN proxy, rate limits and a
 control CLI (lbctl). The package installs the daemon, lbctl, a systemd
 unit (not enabled), the lbd-hugepages helper and sample configurations.
EOF

mkdir -p "$OUT"
DEB="$OUT/${PKG}_${DEB_VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >&2
echo "$DEB"
