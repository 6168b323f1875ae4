#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis (PyPI):
# a release gateway on SQLite with a tenant and an admin key, then every
# operation in /openapi.json with generated valid and invalid inputs. Fails
# on any 5xx or a response that contradicts the document. Prints the number
# of requests made.
# Usage: [EXAMPLES=N] scripts/fuzz-api.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check 'schemathesis>=4,<5' 2>&1 | grep -v "as the 'root' user" || true
cargo build --release --quiet
bin=target/release/callstream
dir=$(mktemp -d)
port=$(( 20000 + RANDOM % 20000 ))
sid=AC$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
key=$("$bin" tenant create Fuzz --data-dir "$dir" --twilio-account-sid "$sid" --twilio-auth-token "$token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
CALLSTREAM_ASR__ENABLED=false CALLSTREAM_LOG=warn "$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" 2>"$dir/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
status=0
python3 -m schemathesis.cli run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance \
  --max-examples "${EXAMPLES:-40}" --seed 1 --workers 2 \
  --report ndjson --report-ndjson-path "$dir/events.ndjson" --no-color || status=$?
requests=$(grep -o '"request"' "$dir/events.ndjson" 2>/dev/null | wc -l)
echo "fuzz: $requests requests; schemathesis exit $status"
if grep -q "panicked" "$dir/serve.log"; then echo "fuzz: the gateway panicked" >&2; grep -m5 panicked "$dir/serve.log" >&2; status=1; fi
exit "$status"
