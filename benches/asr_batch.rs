//! Batch transcription speed of tiny.en on the 11 s JFK clip, as a multiple
//! of real time, with the whole CPU on one job (what `callstream transcribe`
//! does).
//!
//! Throughput is in audio milliseconds, so criterion's `Kelem/s` reads
//! directly as "× real time". A plain summary line (median of a few runs)
//! is printed first.
//!
//! Needs `models/ggml-tiny.en.bin` and, in Cargo.toml,
//! `[[bench]] name = "asr_batch" harness = false`:
//!
//! `cargo bench --bench asr_batch -- --warm-up-time 2 --measurement-time 10`
//!
//! Variants: `fitted` shrinks the encoder to the clip (the batch default for
//! audio under 30 s); `full` runs the standard 30 s encoder window.
// Until Cargo.toml says `harness = false`, cargo builds this file with the
// libtest harness (cfg(test)), where criterion's `main` is unused.
#![cfg_attr(test, allow(dead_code))]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use callstream::asr::engine::{AsrEngine, DecodeOptions, EngineConfig};
use callstream::asr::scheduler::Priority;
use callstream::audio::decode_file;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn setup() -> (tokio::runtime::Runtime, AsrEngine, Vec<f32>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/ggml-tiny.en.bin");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let engine = AsrEngine::load(EngineConfig {
        model_path: model,
        threads_per_job: cores,
        max_parallel_jobs: 1,
        ..EngineConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let samples = decode_file(&root.join("media-fixtures/jfk.wav"))
        .expect("media-fixtures/jfk.wav decodes")
        .samples;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    (runtime, engine, samples)
}

fn options(fitted: bool, samples: &[f32]) -> DecodeOptions {
    DecodeOptions {
        audio_ctx: if fitted {
            DecodeOptions::fitted_audio_ctx(samples.len())
        } else {
            None
        },
        ..DecodeOptions::default()
    }
}

fn transcribe_once(
    rt: &tokio::runtime::Runtime,
    engine: &AsrEngine,
    samples: &[f32],
    fitted: bool,
) {
    let opts = options(fitted, samples);
    let t = rt
        .block_on(engine.transcribe(samples.to_vec(), opts, Priority::Batch))
        .expect("transcribes");
    assert!(!t.segments.is_empty());
}

fn asr_batch(c: &mut Criterion) {
    let (rt, engine, samples) = setup();
    let audio_ms = (samples.len() * 1000 / 16_000) as u64;
    for fitted in [true, false] {
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let start = Instant::now();
                transcribe_once(&rt, &engine, &samples, fitted);
                start.elapsed()
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2];
        println!(
            "tiny.en jfk.wav ({} encoder, {} threads): median {:.0} ms for {audio_ms} ms of audio = {:.1}× real time",
            if fitted { "fitted" } else { "full 30 s" },
            engine.config().threads_per_job,
            median.as_secs_f64() * 1000.0,
            audio_ms as f64 / 1000.0 / median.as_secs_f64(),
        );
    }

    let mut group = c.benchmark_group("asr_batch");
    group.sample_size(10);
    group.throughput(Throughput::Elements(audio_ms));
    group.bench_function("tiny.en/jfk/fitted", |b| {
        b.iter(|| transcribe_once(&rt, &engine, &samples, true))
    });
    group.bench_function("tiny.en/jfk/full", |b| {
        b.iter(|| transcribe_once(&rt, &engine, &samples, false))
    });
    group.finish();
}

criterion_group!(benches, asr_batch);
criterion_main!(benches);
