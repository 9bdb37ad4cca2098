#!/usr/bin/env bash
# The C libraries the build links, from Debian when missing: OpenSSL (rdkafka's `ssl`, TLS for
# PostgreSQL, HTTPS) and SQLite (the embedded SQL catalog). librdkafka itself is built from source
# with gcc and make.
set -euo pipefail
if ! dpkg -s libssl-dev libsqlite3-dev pkg-config >/dev/null 2>&1; then
  echo "installing the C headers the build links (libssl-dev libsqlite3-dev pkg-config)..." >&2
  apt-get update -qq && apt-get install -y -qq libssl-dev libsqlite3-dev pkg-config
fi
