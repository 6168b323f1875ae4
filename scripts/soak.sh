#!/usr/bin/env bash
# Soak test: CALLS short Twilio calls (signed upgrade, start, 200 ms of real
# speech on both tracks, stop) through one gateway built as `callstream
# serve` builds it (recordings on, ASR off), CONCURRENCY at a time; then
# open fds, RSS, tokio tasks and the gateway's per-call state must be back
# where they were after the first half. Prints the figures as one JSON line
# (before, after_first_half, after_all).
# Usage: [CONCURRENCY=50] scripts/soak.sh [CALLS=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
SOAK_CALLS=${1:-10000} SOAK_CONCURRENCY=${CONCURRENCY:-50} \
  cargo test --release --test soak -- --nocapture
