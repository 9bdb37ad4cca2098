#!/usr/bin/env bash
# Runs every test: Rust unit, property and integration tests (a real SQL catalog on SQLite and a
# real warehouse directory), then the independent pyiceberg check of a generated workload.
# Installs what the tests use from Python (pyiceberg to read, fastavro to encode) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import pyiceberg.catalog.sql, pyarrow, pyiceberg_core, fastavro' 2>/dev/null; then
  echo "installing pyiceberg and fastavro (the independent reader and Avro encoder the tests check against)..." >&2
  python3 -m pip install --quiet "pyiceberg[sql-sqlite,pyarrow,pyiceberg-core]==0.12.*" "fastavro==1.*"
fi
bash scripts/install_build_deps.sh
# The real services the tests start (PostgreSQL, Kafka, Iceberg's REST catalog, a schema registry);
# quick when cached.
bash scripts/services/install.sh
python3 scripts/check_tables.py --self-test
cargo test --release
