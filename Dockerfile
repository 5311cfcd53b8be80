# lbd, lbctl, dpdk-testpmd and the testbed/bench scripts on Debian 12 with
# Debian's DPDK 22.11. Two stages: the build stage compiles in release
# against libdpdk-dev; the runtime stage carries the binaries, DPDK's
# runtime libraries and drivers, and what the demo and the bench run.
#
#   docker build -t lbd .
#
# Where no registry can be reached, `docker/engine.sh up` first creates the
# two base images below locally (debian:12 by debootstrap, the rust image
# from this machine's toolchain); this file stays the same either way.
# Entry points (docker/entrypoint.sh; `docker run --rm lbd help`):
#   lbd [ARGS]      the daemon (default: -c /etc/lbd/lbd.yaml, mount it)
#   lbctl ARGS      the CLI, against a control socket you mount
#   bench [ARGS]    the packet-rate runner against dpdk-testpmd (benches/run.py)
#   demo            the namespace demo (testbed/demo.sh) in this one container
#   testpmd ARGS    dpdk-testpmd (a generator or a sink for docker/bench.sh)
# README "Containers" gives the `docker run` lines with the privileges each needs.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG DEBIAN_IMAGE=debian:12

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates build-essential pkg-config libdpdk-dev dpdk-dev \
        libclang1-14 libclang-common-14-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What cargo reads, nothing else: an edit of the scripts, configs or docs
# keeps the compiled layer.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src/ src/
COPY benches/ benches/
COPY core/ core/
COPY dpdk-sys/ dpdk-sys/
COPY engine/ engine/
COPY health/ health/
COPY lbctl/ lbctl/
COPY proto/ proto/
# The context has no .git: `lbd --version` gets the revision from here.
ARG LBD_GIT_REVISION=unknown
ENV LBD_GIT_REVISION=${LBD_GIT_REVISION}
RUN cargo build --release --locked -p lbd -p lbctl --bin lbd --bin lbctl --example pcapgen \
    && mkdir -p /out/examples \
    && cp target/release/lbd target/release/lbctl /out/ \
    && cp target/release/examples/pcapgen /out/examples/ \
    && strip --strip-debug /out/lbd /out/lbctl /out/examples/pcapgen
# The Debian packages of every shared library lbd, pcapgen and testpmd
# link to: the runtime stage installs exactly these (as dpkg-shlibdeps
# would), so a change of what lbd links cannot leave the image short.
RUN for lib in $(ldd /out/lbd /out/examples/pcapgen /usr/bin/dpdk-testpmd | awk '/=> \//{print $3}' | sort -u); do \
        dpkg -S "$lib" 2>/dev/null || dpkg -S "$(realpath "$lib")" || dpkg -S "/usr$lib"; \
    done | cut -d: -f1 | sort -u >/out/runtime-packages \
    && cat /out/runtime-packages

FROM ${DEBIAN_IMAGE}
COPY --from=build /out/runtime-packages /tmp/
# The libraries the binaries link to (from the build stage), DPDK's
# poll-mode drivers loaded at start-up: the virtual devices (af_packet,
# af_xdp, tap, memif, pcap, null, ring) and common NICs (Intel, Mellanox, virtio,
# VMware, AWS ENA); then what the demo and the bench run
# (testbed/demo.sh, testbed/topology.sh, benches/run.py).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        $(cat /tmp/runtime-packages) librte-mempool-ring23 \
        librte-net-af-packet23 librte-net-af-xdp23 librte-net-tap23 librte-net-memif23 librte-net-pcap23 \
        librte-net-null23 librte-net-ring23 librte-net-i40e23 librte-net-iavf23 \
        librte-net-ice23 librte-net-ixgbe23 librte-net-e1000-23 librte-net-mlx5-23 \
        librte-net-virtio23 librte-net-vmxnet3-23 librte-net-ena23 \
        iproute2 ethtool procps iputils-ping curl socat python3 \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=build /usr/bin/dpdk-testpmd /usr/bin/
COPY --from=build /out/lbd /out/lbctl /opt/lbd/bin/
COPY --from=build /out/examples/ /opt/lbd/bin/examples/
COPY config/ /opt/lbd/config/
COPY testbed/ /opt/lbd/testbed/
COPY benches/run.py benches/lbdstats.py /opt/lbd/benches/
COPY docker/entrypoint.sh /usr/local/bin/lbd-entrypoint
RUN ln -s /opt/lbd/bin/lbd /opt/lbd/bin/lbctl /usr/local/bin/ \
    && mkdir -p /etc/lbd /run/lbd
WORKDIR /opt/lbd
ENTRYPOINT ["/usr/local/bin/lbd-entrypoint"]
CMD ["lbd", "-c", "/etc/lbd/lbd.yaml"]
