#!/usr/bin/env bash
# Runs every test: Rust unit, property and integration tests (a real SQL catalog on SQLite and a
# real warehouse directory), then the independent pyiceberg check of a generated workload.
# Installs the Python reader it needs (pyiceberg) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import pyiceberg.catalog.sql, pyarrow, pyiceberg_core' 2>/dev/null; then
  echo "installing pyiceberg (the independent reader the tests check against)..." >&2
  python3 -m pip install --quiet "pyiceberg[sql-sqlite,pyarrow,pyiceberg-core]==0.12.*"
fi
python3 scripts/check_tables.py --self-test
cargo test --release
