#!/usr/bin/env bash
# Load test: a release gateway on SQLite plus `callstream loadgen` on this
# machine. Prints the loadgen's JSON report with the gateway's CPU time added
# (cpu_s; cpu_ms_per_stream_second = CPU ms the gateway spent per second of
# one stream's audio).
# Usage: [RAMP=SECS] [TURNS=1] scripts/loadtest.sh STREAMS [DURATION_SECS] [extra serve args...]
# TURNS=1: caller and agent take turns (a conversation) instead of double talk.
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${1:-100}
duration=${2:-20}
shift $(( $# > 2 ? 2 : $# ))
ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet
bin=target/release/callstream
dir=$(mktemp -d)
port=$(( 20000 + RANDOM % 20000 ))
sid=AC$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$bin" tenant create LoadTest --data-dir "$dir" --twilio-account-sid "$sid" --twilio-auth-token "$token" >/dev/null
CALLSTREAM_LOG=warn "$bin" serve --data-dir "$dir" --listen "127.0.0.1:$port" "$@" 2>"$dir/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; cp "$dir/serve.log" "${TMPDIR:-/tmp}/callstream-loadtest.log"; rm -rf "$dir"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(cpu)
report=$("$bin" loadgen --url "ws://127.0.0.1:$port/v1/providers/twilio/stream" \
  --account-sid "$sid" --auth-token "$token" --streams "$streams" --duration "$duration" \
  --audio media-fixtures/jfk.wav --ramp "${RAMP:-5}" ${TURNS:+--turns})
after=$(cpu)
python3 - "$report" "$before" "$after" "$ticks" "$streams" "$duration" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4])
r["gateway_cpu_s"] = round(cpu, 2)
r["gateway_cpu_ms_per_stream_second"] = round(1000 * cpu / (int(sys.argv[5]) * int(sys.argv[6])), 3)
print(json.dumps(r))
PY
