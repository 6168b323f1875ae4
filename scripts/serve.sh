#!/usr/bin/env bash
# Runs the gateway on a fresh machine: installs what it needs (scripts/setup.sh),
# then `callstream serve` on SQLite under ./data. Extra arguments go to serve,
# e.g. scripts/serve.sh --listen 0.0.0.0:8080 --public-url https://gw.example.com
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --quiet -- serve "$@"
