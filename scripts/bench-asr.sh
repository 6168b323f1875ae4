#!/usr/bin/env bash
# Batch transcription speed, end to end, as a multiple of real time:
# `callstream transcribe` (release) on media-fixtures/jfk.wav (11.0 s) with
# tiny.en, RUNS times; prints the median wall time (process start, model load,
# decode, Whisper, output) and audio seconds / wall seconds.
#
#   scripts/bench-asr.sh [RUNS] [extra transcribe args, e.g. --threads 1]
#
# Needs models/ggml-tiny.en.bin (`callstream model install tiny.en`). Whisper's
# worker threads spin while they wait for each other, so other load on the
# machine skews this badly: the script waits (up to 10 minutes) for the
# 1-minute load average to fall below 0.5 first. For the engine alone, without
# process start and model load, see benches/asr_batch.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-7}"
shift || true

model=models/ggml-tiny.en.bin
[ -f "$model" ] || { echo "missing $model: run \`cargo run --release -- model install tiny.en\`" >&2; exit 1; }
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/callstream"
# A private copy: a shared target directory may be rebuilt under us.
copy="$(mktemp)"
trap 'rm -f "$copy"' EXIT
cp "$bin" "$copy"
chmod +x "$copy"

for _ in $(seq 60); do
  awk '{ exit !($1 < 0.5) }' /proc/loadavg && break
  sleep 10
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

audio_s=11.0
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s.%N)
  RUST_LOG=warn "$copy" transcribe --model "$model" "$@" media-fixtures/jfk.wav >/dev/null
  end=$(date +%s.%N)
  times+=("$(echo "$end - $start" | bc -l)")
done
median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
printf 'tiny.en jfk.wav end to end: median %.3f s over %d runs = %.1fx real time\n' \
  "$median" "$runs" "$(echo "$audio_s / $median" | bc -l)"
