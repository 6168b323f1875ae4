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
source scripts/lib/gateway.sh
trap 'stop_gateway' EXIT
CALLSTREAM_ASR__ENABLED=false start_gateway Fuzz
status=0
python3 -m schemathesis.cli run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $api_key" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance \
  --max-examples "${EXAMPLES:-40}" --seed 1 --workers 2 \
  --report ndjson --report-ndjson-path "$dir/events.ndjson" --no-color || status=$?
requests=$(grep -o '"request"' "$dir/events.ndjson" 2>/dev/null | wc -l)
echo "fuzz: $requests requests; schemathesis exit $status"
if grep -q "panicked" "$dir/serve.log"; then echo "fuzz: the gateway panicked" >&2; grep -m5 panicked "$dir/serve.log" >&2; status=1; fi
exit "$status"
