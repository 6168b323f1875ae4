# Sourced by scripts that drive a real gateway: builds the release binary,
# creates a tenant with fresh Twilio credentials in a temporary data dir and
# starts `callstream serve` on a random port, waiting until it answers.
# Sets: bin dir port sid token api_key pid. The caller's EXIT trap should
# run stop_gateway. Usage: start_gateway NAME [serve args...]
# BIN=PATH runs that binary instead of building one (to compare two builds).
start_gateway() {
  local name=$1; shift
  if [ -n "${BIN:-}" ]; then bin=$BIN; else
    cargo build --release --quiet
    bin=${CARGO_TARGET_DIR:-target}/release/callstream
  fi
  dir=$(mktemp -d)
  port=$(( 20000 + RANDOM % 20000 ))
  sid=AC$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  token=$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  api_key=$("$bin" tenant create "$name" --data-dir "$dir" --twilio-account-sid "$sid" \
    --twilio-auth-token-stdin <<<"$token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  CALLSTREAM_LOG=${CALLSTREAM_LOG:-warn} "$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" "$@" 2>"$dir/serve.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "the gateway did not start:" >&2; cat "$dir/serve.log" >&2; return 1
}

# Stops the gateway; keeps its log as $1 when given.
stop_gateway() {
  [ -n "${pid:-}" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  [ -n "${1:-}" ] && [ -n "${dir:-}" ] && cp "$dir/serve.log" "$1"
  [ -n "${dir:-}" ] && rm -rf "$dir"
  return 0
}
