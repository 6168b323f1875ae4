//! Decoding of every fixture format and `callstream transcribe` end to end
//! with the real tiny.en model.
//!
//! The model is not committed (models/*.bin is ignored): these tests need
//! `models/ggml-tiny.en.bin` and fail, never skip, with an install hint when
//! it is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use callstream::asr::engine::{AsrEngine, AsrError, DecodeOptions, EngineConfig, Transcription};
use callstream::asr::scheduler::Priority;
use callstream::audio::{decode_bytes, decode_file, DecodeError, TARGET_RATE};
use callstream::transcript::wer::{wer, word_errors};

const BIN: &str = env!("CARGO_BIN_EXE_callstream");
const REFERENCE: &str = "And so my fellow Americans, ask not what your country can do for you, \
                         ask what you can do for your country.";

/// (file, codec, source rate, channels, lossy)
const FIXTURES: [(&str, &str, u32, usize, bool); 6] = [
    ("jfk.wav", "pcm_s16le", 16_000, 1, false),
    ("jfk.flac", "flac", 16_000, 1, false),
    ("jfk-8k-ulaw.wav", "pcm_mulaw", 8_000, 1, true),
    ("jfk.mp3", "mp3", 44_100, 2, true),
    ("jfk.ogg", "vorbis", 22_050, 1, true),
    ("jfk.opus", "opus", 48_000, 2, true),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("media-fixtures").join(name)
}

/// The model every test here uses; panics with how to get it.
fn model() -> PathBuf {
    let path = root().join("models/ggml-tiny.en.bin");
    assert!(
        path.is_file(),
        "{} is missing. These tests need the Whisper tiny.en model in whisper.cpp ggml form: \
         install it with `cargo run --release -- model install tiny.en` (or put or symlink a \
         converted ggml-tiny.en.bin there)",
        path.display()
    );
    path
}

fn transcribe_cli(args: &[&str]) -> Output {
    let model = model();
    Command::new(BIN)
        .arg("transcribe")
        .arg("--model")
        .arg(&model)
        .args(args)
        .env_remove("CALLSTREAM_LOG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs the callstream binary")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// Lag (in samples, within ±`max_lag`) at which `b` best matches `a`, and
/// the normalised correlation there.
fn best_lag(a: &[f32], b: &[f32], max_lag: isize) -> (isize, f32) {
    let n = a.len().min(b.len()) as isize;
    (-max_lag..=max_lag)
        .map(|lag| {
            let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
            for i in max_lag..n - max_lag {
                let (x, y) = (a[i as usize] as f64, b[(i + lag) as usize] as f64);
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
            (lag, (ab / (aa * bb).sqrt()) as f32)
        })
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap()
}

#[test]
fn every_fixture_decodes_to_the_same_time_aligned_11_seconds() {
    let reference = decode_file(&fixture("jfk.wav")).unwrap();
    assert_eq!(reference.samples.len(), 176_000);
    for (name, codec, rate, channels, lossy) in FIXTURES {
        let audio = decode_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(audio.codec, codec, "{name}");
        assert_eq!(
            (audio.source_rate, audio.source_channels),
            (rate, channels),
            "{name}"
        );
        assert!(!audio.truncated && audio.damaged_packets == 0, "{name}");
        let len = audio.samples.len() as i64;
        assert!((len - 176_000).abs() <= 16 * 10, "{name}: {len} samples");
        if !lossy {
            assert_eq!(audio.samples, reference.samples, "{name} is lossless");
            continue;
        }
        // Encoder delay, Opus pre-skip and MP3 padding must all be undone:
        // the audio lines up with the original to within 1 ms.
        let (lag, corr) = best_lag(&reference.samples, &audio.samples, 320);
        eprintln!("{name}: {len} samples, lag {lag}, correlation {corr:.3}");
        assert!(lag.abs() <= 16, "{name}: offset by {lag} samples");
        assert!(corr > 0.8, "{name}: correlation {corr}");
    }
}

#[test]
fn damaged_fixtures_give_errors_or_partial_audio_never_a_panic() {
    for (name, ..) in FIXTURES {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let ext = Path::new(name).extension().and_then(|e| e.to_str());
        // Truncations, including inside the header.
        for cut in [
            1,
            4,
            12,
            30,
            44,
            100,
            1_000,
            bytes.len() / 3,
            bytes.len() - 1,
        ] {
            match decode_bytes(bytes[..cut].to_vec(), ext) {
                Ok(audio) => assert!(
                    audio.samples.len() < 176_000 + 160 && !audio.samples.is_empty(),
                    "{name} cut at {cut}"
                ),
                Err(e) => assert!(
                    !e.to_string().contains("decoder failed"),
                    "{name} cut at {cut}: a decoder panicked"
                ),
            }
        }
        // Bit rot in the middle of the stream.
        let mut rotten = bytes.clone();
        for i in (rotten.len() / 4..rotten.len()).step_by(97) {
            rotten[i] ^= 0x5a;
        }
        if let Err(e) = decode_bytes(rotten, ext) {
            assert!(!e.to_string().contains("decoder failed"), "{name}: {e}");
        }
    }
    // Plain garbage with an audio extension.
    let err = decode_bytes(vec![0x42; 10_000], Some("mp3")).unwrap_err();
    assert!(
        matches!(err, DecodeError::Unsupported(_) | DecodeError::Corrupt(_)),
        "{err}"
    );
}

#[test]
fn cli_transcribes_jfk_wav_within_5_percent_wer() {
    let out = transcribe_cli(&[fixture("jfk.wav").to_str().unwrap()]);
    let text = stdout(&out);
    let w = wer(REFERENCE, &text);
    assert!(w <= 0.05, "WER {w:.3}: {text:?}");
}

#[test]
fn every_format_transcribes_through_the_cli() {
    let paths: Vec<String> = FIXTURES
        .iter()
        .map(|f| fixture(f.0).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["--format", "json"];
    args.extend(paths.iter().map(String::as_str));
    let out = transcribe_cli(&args);
    let text = stdout(&out);
    let docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(docs.len(), FIXTURES.len());
    for (doc, (name, codec, _, _, lossy)) in docs.iter().zip(FIXTURES) {
        assert!(doc["file"].as_str().unwrap().ends_with(name));
        assert_eq!(doc["codec"], codec);
        let audio_ms = doc["audio_ms"].as_u64().unwrap();
        assert!((10_900..=11_100).contains(&audio_ms), "{name}: {audio_ms}");
        let hyp = doc["text"].as_str().unwrap();
        let stats = word_errors(REFERENCE, hyp);
        let limit = if lossy { 0.10 } else { 0.05 };
        eprintln!("{name}: WER {:.3} {hyp:?}", stats.wer());
        assert!(
            stats.wer() <= limit,
            "{name}: WER {:.3}: {hyp:?}",
            stats.wer()
        );
        let segments = doc["segments"].as_array().unwrap();
        assert!(!segments.is_empty());
        for s in segments {
            let (start, end) = (
                s["start_ms"].as_i64().unwrap(),
                s["end_ms"].as_i64().unwrap(),
            );
            assert!(0 <= start && start <= end && end <= 11_100, "{name}: {s}");
        }
    }
}

#[test]
fn vtt_and_srt_output_is_valid() {
    let wav = fixture("jfk.wav");
    let vtt = stdout(&transcribe_cli(&["--format", "vtt", wav.to_str().unwrap()]));
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");
    let mut words = String::new();
    for cue in vtt.trim_end().split("\n\n").skip(1) {
        let mut lines = cue.lines();
        let timing = lines.next().unwrap();
        assert!(is_timing(timing, '.'), "bad WebVTT timing line {timing:?}");
        let payload: Vec<&str> = lines.collect();
        assert!(!payload.is_empty() && payload.iter().all(|l| !l.contains("-->")));
        words.push_str(&payload.join(" "));
        words.push(' ');
    }
    assert!(wer(REFERENCE, &words) <= 0.05, "{vtt}");

    let srt = stdout(&transcribe_cli(&["--format", "srt", wav.to_str().unwrap()]));
    for (n, cue) in srt.trim_end().split("\n\n").enumerate() {
        let mut lines = cue.lines();
        assert_eq!(lines.next(), Some((n + 1).to_string().as_str()), "{srt}");
        let timing = lines.next().unwrap();
        assert!(is_timing(timing, ','), "bad SRT timing line {timing:?}");
        assert!(lines.next().is_some_and(|l| !l.is_empty()));
    }
}

/// `HH:MM:SS<sep>mmm --> HH:MM:SS<sep>mmm` with end after start.
fn is_timing(line: &str, sep: char) -> bool {
    let parse = |t: &str| -> Option<u64> {
        let (hms, ms) = t.split_once(sep)?;
        let parts: Vec<&str> = hms.split(':').collect();
        if parts.len() != 3 || ms.len() != 3 || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        let n: Vec<u64> = parts
            .iter()
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        (n[1] < 60 && n[2] < 60)
            .then_some(((n[0] * 60 + n[1]) * 60 + n[2]) * 1000 + ms.parse::<u64>().ok()?)
    };
    line.split_once(" --> ")
        .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
        .is_some_and(|(a, b)| b > a)
}

#[test]
fn a_corrupt_file_fails_alone_and_the_exit_code_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.mp3");
    std::fs::write(&bad, b"ID3 this is not really an mp3 file".repeat(40)).unwrap();
    let missing = dir.path().join("missing.wav");
    let good = fixture("jfk.wav");
    let out = transcribe_cli(&[
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.mp3"), "{stderr}");
    assert!(stderr.contains("missing.wav"), "{stderr}");
    assert!(stderr.contains("2 of 3 files failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The good file is transcribed, under its header.
    let section = stdout
        .split_once(&format!("==> {} <==\n", good.display()))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no header for the good file in {stdout:?}"));
    assert!(wer(REFERENCE, section) <= 0.05, "{stdout}");
    assert!(!stdout.contains("broken.mp3 <=="));
}

#[test]
fn a_missing_model_fails_with_an_install_hint() {
    let wav = fixture("jfk.wav");
    let out = Command::new(BIN)
        .args(["transcribe", "--model", "no-such-model"])
        .arg(&wav)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("models/ggml-no-such-model.bin") && stderr.contains("--model"),
        "{stderr}"
    );
}

fn engine(threads_per_job: usize, max_parallel_jobs: usize) -> AsrEngine {
    AsrEngine::load(EngineConfig {
        model_path: model(),
        threads_per_job,
        max_parallel_jobs,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn jfk_samples() -> Vec<f32> {
    decode_file(&fixture("jfk.wav")).unwrap().samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_runs_jobs_in_parallel_with_pooled_states_and_offsets() {
    let engine = engine(1, 2);
    let samples = jfk_samples();
    let live = DecodeOptions {
        audio_ctx: DecodeOptions::fitted_audio_ctx(samples.len()),
        single_segment: true,
        no_context: true,
        offset_ms: 60_000,
        ..DecodeOptions::default()
    };
    let (a, b) = tokio::join!(
        engine.transcribe(samples.clone(), live, Priority::LiveFinal),
        engine.transcribe(samples.clone(), DecodeOptions::default(), Priority::Batch),
    );
    let (a, b): (Transcription, Transcription) = (a.unwrap(), b.unwrap());
    assert_eq!(a.segments.len(), 1, "single segment");
    assert!(a.segments[0].start_ms >= 60_000, "offset applied");
    assert!(a.segments[0].confidence.is_some_and(|c| c > 0.5));
    for t in [&a, &b] {
        assert_eq!(t.audio_ms, 11_000);
        assert!(wer(REFERENCE, &t.text()) <= 0.05, "{}", t.text());
    }
    // Both states went back to the pool and are reused.
    let again = engine
        .transcribe(samples, DecodeOptions::default(), Priority::LivePartial)
        .await
        .unwrap();
    assert_eq!(again.text(), b.text());
}

#[tokio::test]
async fn abort_flag_cancels_and_bad_options_are_rejected() {
    let engine = engine(1, 1);
    let samples = jfk_samples();
    let abort = Arc::new(AtomicBool::new(true));
    let opts = DecodeOptions {
        abort: Some(abort),
        ..DecodeOptions::default()
    };
    assert!(matches!(
        engine
            .transcribe(samples.clone(), opts, Priority::LivePartial)
            .await,
        Err(AsrError::Aborted)
    ));
    assert!(matches!(
        engine
            .transcribe(Vec::new(), DecodeOptions::default(), Priority::Batch)
            .await,
        Err(AsrError::EmptyAudio)
    ));
    // An encoder shrunk below the audio length would silently drop speech.
    let too_small = DecodeOptions {
        audio_ctx: Some(100),
        ..DecodeOptions::default()
    };
    assert!(matches!(
        engine.transcribe(samples, too_small, Priority::Batch).await,
        Err(AsrError::InvalidOptions(_))
    ));
    // Silence yields no invented words.
    let silence = vec![0.0; TARGET_RATE as usize * 3];
    let t = engine
        .transcribe(silence, DecodeOptions::default(), Priority::Batch)
        .await
        .unwrap();
    assert!(t.text().is_empty(), "hallucinated {:?}", t.text());
}

#[tokio::test]
async fn audio_longer_than_one_window_is_transcribed_whole() {
    // jfk, 10 s of silence, jfk: 32 s, past Whisper's 30 s window, so the
    // batch path runs the full encoder over two windows.
    let jfk = jfk_samples();
    let mut samples = jfk.clone();
    samples.extend(std::iter::repeat_n(0.0, TARGET_RATE as usize * 10));
    samples.extend_from_slice(&jfk);
    assert_eq!(DecodeOptions::fitted_audio_ctx(samples.len()), None);
    let t = engine(1, 1)
        .transcribe(samples, DecodeOptions::default(), Priority::Batch)
        .await
        .unwrap();
    assert_eq!(t.audio_ms, 32_000);
    let twice = format!("{REFERENCE} {REFERENCE}");
    assert!(wer(&twice, &t.text()) <= 0.05, "{}", t.text());
    let last = t.segments.last().unwrap();
    assert!((30_000..=32_000).contains(&last.end_ms), "{last:?}");
}

/// The loop users hit ("Front, left, left, front, left…" for a two-word
/// prompt): short real utterances (digits, single words, two-word
/// commands, from media-fixtures/eval) through the batch path must not
/// repeat what was not said, and must score as the full-window decode does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_real_utterances_transcribe_without_loops() {
    use callstream::asr::eval::{has_new_repeat, Clip, Score};
    let clips = Clip::load_manifest(&root().join("media-fixtures/eval")).unwrap();
    let short: Vec<Clip> = Clip::slice(&clips, 16)
        .into_iter()
        .filter(|c| c.subset == "short")
        .collect();
    assert_eq!(short.len(), 16);
    let engine = engine(2, 1);
    let (mut batch, mut full) = (Score::default(), Score::default());
    for clip in &short {
        let got = callstream::asr::batch::transcribe_file(&engine, &clip.path)
            .await
            .unwrap()
            .transcription
            .text();
        let reference = engine
            .transcribe(
                decode_file(&clip.path).unwrap().samples,
                DecodeOptions {
                    no_context: true,
                    ..DecodeOptions::default()
                },
                Priority::Batch,
            )
            .await
            .unwrap()
            .text();
        eprintln!("{:?}: {got:?} (full window: {reference:?})", clip.reference);
        assert!(!has_new_repeat(&clip.reference, &got), "{got:?}");
        batch.add(&clip.reference, &got, clip.duration_s, 0.0);
        full.add(&clip.reference, &reference, clip.duration_s, 0.0);
    }
    let (b, f) = (batch.stats.errors() as f64, full.stats.errors() as f64);
    eprintln!("short clips: batch {b} errors, full window {f} errors");
    assert!(b <= (1.05 * f).max(f + 1.0), "batch {b} errors vs {f}");
}
