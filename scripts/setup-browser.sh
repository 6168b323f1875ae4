#!/usr/bin/env bash
# Installs what the browser test (tests/ui.rs) needs: Debian's Chromium and
# fonts, Node.js, and playwright-core from package-lock.json into
# ./node_modules. Playwright drives /usr/bin/chromium; it downloads no
# browser of its own. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! node -e 'require("playwright-core")' >/dev/null 2>&1; then
  npm ci --no-audit --no-fund --ignore-scripts
fi

echo "browser test ready: $(chromium --version 2>/dev/null), playwright-core $(node -p 'require("playwright-core/package.json").version')"
