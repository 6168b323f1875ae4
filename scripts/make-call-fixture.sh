#!/usr/bin/env bash
# Regenerates media-fixtures/call-{caller,agent}.wav: a two-party call spoken
# by two espeak-ng voices, one per track, aligned in time (8 kHz mono 16-bit,
# as a phone line carries it before G.711). See media-fixtures/call.md.
set -euo pipefail
cd "$(dirname "$0")/../media-fixtures"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
say() { # voice text out
  espeak-ng -v "$1" -s 150 -w "$tmp/raw.wav" "$2"
  sox "$tmp/raw.wav" -r 8000 -c 1 -b 16 "$3" norm -3
}
say en-us+m3 "Hi, I am calling because my internet has been down since Monday." "$tmp/c1.wav"
say en-gb+f3 "I am sorry to hear that. I will schedule a technician for tomorrow morning." "$tmp/a1.wav"
say en-us+m3 "Thank you, that works for me." "$tmp/c2.wav"
# Place each line on its own track: caller at 0.5 s and 11.0 s, agent at 5.5 s.
sox "$tmp/c1.wav" "$tmp/c1p.wav" pad 0.5
sox "$tmp/c2.wav" "$tmp/c2p.wav" pad 11.0
sox "$tmp/a1.wav" "$tmp/a1p.wav" pad 5.5
# Both tracks exactly 15 s: each line mixed (unscaled) over 15 s of silence.
sox -n -r 8000 -c 1 -b 16 "$tmp/silence.wav" trim 0 15
sox -m -v 1 "$tmp/silence.wav" -v 1 "$tmp/c1p.wav" -v 1 "$tmp/c2p.wav" call-caller.wav trim 0 15
sox -m -v 1 "$tmp/silence.wav" -v 1 "$tmp/a1p.wav" call-agent.wav trim 0 15
soxi call-caller.wav call-agent.wav | grep -E "Duration|Sample Rate"
