#!/usr/bin/env bash
# Regenerates media-fixtures/pii-caller.wav: a caller reading out a phone
# number and an e-mail address, for the PII-redaction test. Festival's HTS
# voice (Debian festival + festvox-us-slt-hts): espeak-ng's digits are too
# robotic for tiny.en to write down as numbers. 8 kHz mono 16-bit, as a
# phone line carries it before G.711. See media-fixtures/pii-caller.md.
set -euo pipefail
cd "$(dirname "$0")/../media-fixtures"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "Hi, please call me back on four one five, five five five, zero one three four. Or email me at jane dot doe at example dot com." > "$tmp/line.txt"
text2wave -eval "(voice_cmu_us_slt_arctic_hts)" "$tmp/line.txt" -o "$tmp/raw.wav"
# Half a second of silence before and a second after, like a call.
sox "$tmp/raw.wav" -r 8000 -c 1 -b 16 pii-caller.wav norm -3 pad 0.5 1.0
soxi pii-caller.wav | grep -E "Duration|Sample Rate"
