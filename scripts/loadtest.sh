#!/usr/bin/env bash
# Load test: a release gateway on SQLite plus `callstream loadgen` on this
# machine. Prints the loadgen's JSON report with the gateway's CPU time added
# (cpu_s; cpu_ms_per_stream_second = CPU ms the gateway spent per second of
# one stream's audio). RECORDING=off runs the gateway without recording
# (default on), to compare; with it on, the report adds what the recordings
# took: recording_bytes_per_minute (encrypted bytes per recorded minute of
# stereo audio) and the outcomes of the recordings.
# Usage: [RAMP=SECS] [TURNS=1] [RECORDING=on|off] scripts/loadtest.sh STREAMS [DURATION_SECS] [extra serve args...]
# TURNS=1: caller and agent take turns (a conversation) instead of double talk.
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${1:-100}
duration=${2:-20}
shift $(( $# > 2 ? 2 : $# ))
ulimit -n "$(ulimit -Hn)"
case "${RECORDING:-on}" in
  on) recording=true ;;
  off) recording=false ;;
  *) echo "RECORDING must be on or off" >&2; exit 2 ;;
esac
source scripts/lib/gateway.sh
trap 'stop_gateway "${TMPDIR:-/tmp}/callstream-loadtest.log"' EXIT
# loadgen invents its calls: nothing announced them and no Twilio API can
# vouch for them, so the gateway is told to accept them.
CALLSTREAM_STREAM__ACCEPT_UNANNOUNCED_CALLS=true CALLSTREAM_RECORDING__ENABLED=$recording start_gateway LoadTest "$@"
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(cpu)
report=$("$bin" loadgen --url "ws://127.0.0.1:$port/v1/providers/twilio/stream" \
  --account-sid "$sid" --auth-token-stdin <<<"$token" --streams "$streams" --duration "$duration" \
  --audio media-fixtures/jfk.wav --ramp "${RAMP:-5}" ${TURNS:+--turns})
after=$(cpu)
python3 - "$report" "$before" "$after" "$ticks" "$streams" "$duration" "$recording" "$port" <<'PY'
import json, sys, time, urllib.request
r = json.loads(sys.argv[1])
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4])
r["gateway_cpu_s"] = round(cpu, 2)
r["gateway_cpu_ms_per_stream_second"] = round(1000 * cpu / (int(sys.argv[5]) * int(sys.argv[6])), 3)
r["recording"] = sys.argv[7] == "true"
if r["recording"]:
    def metrics():
        text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[8]}/metrics").read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out
    # Recordings are finalised just after their streams stop.
    for _ in range(100):
        m = metrics()
        done = sum(m.get(f'callstream_recordings_total{{outcome="{o}"}}', 0) for o in ("completed", "failed", "interrupted"))
        if done >= r.get("streams", 0):
            break
        time.sleep(0.1)
    secs = m.get("callstream_recording_seconds_total", 0)
    r["recordings_completed"] = int(m.get('callstream_recordings_total{outcome="completed"}', 0))
    r["recordings_failed"] = int(m.get('callstream_recordings_total{outcome="failed"}', 0))
    r["recording_bytes_per_minute"] = round(m.get("callstream_recording_bytes_total", 0) * 60 / secs) if secs else None
print(json.dumps(r))
PY
