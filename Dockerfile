# syntax=docker/dockerfile:1
#
# sessionize: one static-ish Rust binary on Debian slim.
#
#   docker build -t sessionize .
#   docker run --rm --init sessionize run --help
#
# Build arguments:
#   RUST_VERSION    the rust:<version>-bookworm builder image (Cargo.toml's rust-version is 1.94)
#   CARGO_RUSTFLAGS replaces the flags of .cargo/config.toml, which build x86-64 for
#                   target-cpu=x86-64-v3 (AVX2; every x86 server CPU since 2015). For an older CPU:
#                   --build-arg CARGO_RUSTFLAGS="-C target-cpu=x86-64". arm64 builds ignore that file.
#
# Run it with --init (`docker run --init`, `init: true` in compose): sessionize installs no SIGTERM
# handler, and as PID 1 the kernel ignores SIGTERM, so without an init `docker stop` waits for its
# timeout and then kills it. Killing it is safe at any instant (exactly once); it is only slower.
#
# No HEALTHCHECK: sessionize has no HTTP endpoint yet (/healthz comes with the metrics work), and it
# exits on every failure rather than hang, so the container's own exit is the signal to act on.
#
# Storage: checkpoints (always, under <warehouse>/_sessionize) and the data files of SQL catalogs go
# to a local directory, so every process of a cluster must mount the same shared filesystem at the
# same path (a named volume, NFS, a ReadWriteMany volume). Table data on S3 works through a REST
# catalog that places tables there (--catalog-option s3.*); checkpoints on S3 do not yet.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder

# What the -sys crates need: librdkafka is built from source by rdkafka-sys (./configure and make, and
# python3 for its linker script), linked against the system OpenSSL (`ssl`) and zlib (`libz`); the
# SQL catalog links the system SQLite; mimalloc and zstd are compiled by the cc crate. Most are in
# the rust image already; listed so that the build does not depend on what that image carries.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config libssl-dev libsqlite3-dev zlib1g-dev python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependency cache: build every dependency against stub sources, so that a change to the project's
# own code rebuilds only the project. Cargo.toml names benches and examples, whose files must exist
# for the manifest to load (they are not built).
COPY Cargo.toml Cargo.lock ./
COPY .cargo/ .cargo/
ARG CARGO_RUSTFLAGS=
RUN set -eu; \
    if [ -n "${CARGO_RUSTFLAGS}" ]; then export RUSTFLAGS="${CARGO_RUSTFLAGS}"; fi; \
    mkdir -p src dataflows benches examples; \
    echo 'fn main() {}' > dataflows/sessionize.rs; \
    : > src/lib.rs; \
    awk '/^\[\[(bench|example)\]\]$/ { dir = ($0 == "[[bench]]") ? "benches" : "examples"; next } \
         /^\[/ { dir = "" } \
         dir != "" && $1 == "name" { gsub(/"/, "", $3); print "fn main() {}" > (dir "/" $3 ".rs") }' \
        Cargo.toml; \
    cargo build --release --locked --bin sessionize; \
    rm -rf src dataflows benches examples

# The real sources. schemas/ is compiled in (the Avro schema of `produce --format avro`).
COPY src/ src/
COPY dataflows/ dataflows/
COPY schemas/ schemas/
COPY benches/ benches/
COPY examples/ examples/
# touch: the copied files may be older than the stubs, and cargo compares modification times.
# strip --strip-debug: the release profile keeps debug info (about 270 MB of the binary); the symbols
# stay, so a panic's backtrace still names functions.
RUN set -eu; \
    if [ -n "${CARGO_RUSTFLAGS}" ]; then export RUSTFLAGS="${CARGO_RUSTFLAGS}"; fi; \
    touch src/lib.rs dataflows/sessionize.rs; \
    cargo build --release --locked --bin sessionize; \
    mkdir -p /out; \
    strip --strip-debug -o /out/sessionize target/release/sessionize; \
    /out/sessionize --version

# ---------------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# The binary's shared libraries (ldd): libssl3/libcrypto3, libz, libsqlite3, libgcc_s, libc, libm;
# the last three are part of the base image. ca-certificates for TLS to Kafka, REST catalogs and
# registries.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsqlite3-0 zlib1g \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid/gid (10001), so that volumes and securityContext (runAsUser, fsGroup) can name
# it. /warehouse belongs to it: an empty named volume mounted there starts with that owner.
RUN groupadd --system --gid 10001 sessionize \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sessionize --create-home \
      --shell /usr/sbin/nologin sessionize \
 && install -d -o 10001 -g 10001 /warehouse

COPY --from=builder /out/sessionize /usr/local/bin/sessionize
# For `run --format avro --avro-schema /usr/share/sessionize/clickstream_event.avsc`.
COPY schemas/clickstream_event.avsc /usr/share/sessionize/clickstream_event.avsc

USER 10001:10001
WORKDIR /var/lib/sessionize
# 2101: the cluster port the hostfile (-h) names, one per process.
EXPOSE 2101

ENTRYPOINT ["sessionize"]
CMD ["--help"]
