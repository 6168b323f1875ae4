#!/usr/bin/env bash
# The whole test suite (the README's test command) beside a CPU hog: one
# busy loop per core at the same priority, so the tests run at about half
# the CPU they would get alone. A test that asserts before what it waits
# for has happened fails here (issue 10, item 8).
#   scripts/test-under-load.sh [cargo test args...]   HOGS=N busy loops (default: cores)
set -euo pipefail
cd "$(dirname "$0")/.."
hogs=()
trap 'kill "${hogs[@]}" 2>/dev/null || true' EXIT
for _ in $(seq "${HOGS:-$(nproc)}"); do
  (while :; do :; done) &
  hogs+=($!)
done
echo "test-under-load: ${#hogs[@]} busy loops beside the suite" >&2
bash scripts/test.sh "$@"
