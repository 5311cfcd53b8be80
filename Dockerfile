# lbd in a container (Debian 12, DPDK 22.11 from Debian).
# A stub until the packaging issue: it builds and runs lbd, but the image
# is not size-optimised and the run needs --privileged (hugepages, NICs or
# af_packet on the host's veths).
#
#   docker build -t lbd .
#   docker run --rm --privileged --network host -v /etc/lbd:/etc/lbd lbd -c /etc/lbd/lbd.yaml
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl build-essential pkg-config libdpdk-dev \
        libclang1-14 libclang-common-14-dev \
    && rm -rf /var/lib/apt/lists/*
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lbd --bin lbctl

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends dpdk \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/lbd /src/target/release/lbctl /usr/local/bin/
COPY config/ /usr/share/lbd/config/
ENTRYPOINT ["/usr/local/bin/lbd"]
