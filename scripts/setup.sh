#!/usr/bin/env bash
# Makes a fresh Debian machine ready to build and run callstream: the system
# packages the build needs (whisper.cpp wants cmake and a C++ compiler;
# bindgen wants libclang; Ogg Opus decoding wants libopus), then the Whisper
# model. Idempotent: a second run installs nothing.
# Usage: scripts/setup.sh [EXTRA_DEBIAN_PACKAGE...]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(cmake g++ libclang-dev libopus-dev pkg-config python3-pip "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash scripts/install-model.sh tiny.en
