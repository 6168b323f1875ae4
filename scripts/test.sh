#!/usr/bin/env bash
# Runs callstream's whole test suite on a fresh machine: installs what the
# build and tests need, starts the services they use, then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Build dependencies and the Whisper model, plus the tools the tests use to
# make real speech (espeak-ng, sox) and to decrypt recordings independently
# of our code (the age CLI).
bash scripts/setup.sh espeak-ng sox age

# PostgreSQL: the repository tests run against it as well as SQLite.
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  fi
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
    # Each test run makes its own schemas; drop those of earlier runs.
    psql "$TEST_POSTGRES_URL" -Atqc "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'cstest\_%'" 2>/dev/null \
      | while read -r s; do psql "$TEST_POSTGRES_URL" -qc "DROP SCHEMA $s CASCADE" >/dev/null 2>&1 || true; done
  fi
fi

# Chromium and playwright-core for the browser test (tests/ui.rs).
bash scripts/setup-browser.sh

cargo test --release --all-targets "$@"

# The API fuzzed from its own OpenAPI document (fails on any 5xx or a
# response that contradicts the document).
bash scripts/fuzz-api.sh
