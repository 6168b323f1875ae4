#!/usr/bin/env bash
# The real-speech evaluation (media-fixtures/eval): WER of the batch path,
# of the live path (streamed at real time through the Twilio endpoint as
# 8 kHz μ-law, caller and agent on separate tracks) and of the full-window
# reference decode of the same audio, per subset and overall, with
# real-time factors. Prints a Markdown table (the README's).
#
#   scripts/eval-asr.sh                    # tiny.en and base, the whole set
#   scripts/eval-asr.sh --model tiny.en --per-subset 10 --check
#
# Options go to benches/asr_eval.rs: --model NAME (repeatable),
# --per-subset N, --live-calls C, --no-live, --json FILE, --min-audio-ctx N,
# --check (exit 1 when a subset misses the targets), --show (every clip).
# CI runs a checked slice of it as part of `cargo test --all-targets`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  bash scripts/install-model.sh base
  set -- --model tiny.en --model base
fi
bash scripts/fetch-eval-set.sh --check
exec cargo bench --bench asr_eval -- "$@"
