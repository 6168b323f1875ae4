//! `callstream transcribe FILE…`: decode files and transcribe them at batch
//! priority, printing each transcript as soon as it is ready.
//!
//! One bad file must not cost the others: a file that cannot be decoded or
//! transcribed is reported on stderr and the run goes on; the summary says
//! how many failed so the command can exit non-zero at the end.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::engine::{
    resolve_model, AsrEngine, AsrError, DecodeOptions, EngineConfig, Transcription,
};
use super::scheduler::Priority;
use crate::audio::{decode_file, DecodeError, DecodedAudio};
use crate::transcript::export::{render, to_json, Format, LabelledSegment};

/// Options of `callstream transcribe`.
#[derive(Debug, Clone, clap::Args)]
pub struct TranscribeArgs {
    /// Audio files: WAV, FLAC, MP3, Ogg Vorbis or Ogg Opus, any rate and channels.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Txt)]
    pub format: Format,
    /// A ggml model file, or a model name looked up as models/ggml-NAME.bin
    /// (tiny.en, base, ...).
    #[arg(long, default_value = "tiny.en")]
    pub model: String,
    /// Threads for Whisper (default: all available cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Why one file produced no transcript.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error("decoder task failed")]
    Panicked,
}

/// A transcribed file.
#[derive(Debug, Clone)]
pub struct FileTranscript {
    /// What the decoder found; its `samples` were moved to the engine and
    /// are empty here.
    pub audio: DecodedAudio,
    pub transcription: Transcription,
    /// Wall time spent decoding and transcribing.
    pub elapsed: std::time::Duration,
}

/// How a run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchSummary {
    pub succeeded: usize,
    pub failed: usize,
}

/// Options for the engine the CLI builds from its thread budget (`--threads`,
/// default all cores): one file gets every thread; several files are
/// transcribed side by side, a thread each, since one short decode gains
/// little from a second thread while a second file doubles the throughput.
pub fn engine_config(args: &TranscribeArgs, models_dir: &Path) -> EngineConfig {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let budget = args.threads.unwrap_or(cores).max(1);
    let jobs = budget.min(args.files.len()).max(1);
    EngineConfig {
        model_path: resolve_model(&args.model, models_dir),
        threads_per_job: budget / jobs,
        max_parallel_jobs: jobs,
        ..EngineConfig::default()
    }
}

/// Decodes `path` (on the blocking pool) and transcribes it at
/// [`Priority::Batch`]. Short files ask for a fitted encoder window, which
/// the engine raises to its floor (and retries in full when the text looks
/// like a loop).
pub async fn transcribe_file(engine: &AsrEngine, path: &Path) -> Result<FileTranscript, FileError> {
    let started = Instant::now();
    let owned = path.to_path_buf();
    let mut audio = tokio::task::spawn_blocking(move || decode_file(&owned))
        .await
        .map_err(|_| FileError::Panicked)??;
    let samples = std::mem::take(&mut audio.samples);
    let opts = DecodeOptions::batch(samples.len());
    let transcription = engine.transcribe(samples, opts, Priority::Batch).await?;
    Ok(FileTranscript {
        audio,
        transcription,
        elapsed: started.elapsed(),
    })
}

/// One file's output in `format`. JSON is one line per file (JSON Lines), so
/// several files still parse line by line.
pub fn render_file(format: Format, path: &Path, file: &FileTranscript) -> String {
    let segments: Vec<LabelledSegment> = file
        .transcription
        .segments
        .iter()
        .cloned()
        .map(LabelledSegment::from)
        .collect();
    match format {
        Format::Json => {
            let mut doc = to_json(&segments);
            doc["file"] = path.display().to_string().into();
            doc["audio_ms"] = file.transcription.audio_ms.into();
            doc["codec"] = file.audio.codec.clone().into();
            doc["source_rate"] = file.audio.source_rate.into();
            doc["source_channels"] = file.audio.source_channels.into();
            serde_json::to_string(&doc).unwrap_or_default() + "\n"
        }
        other => render(other, &segments),
    }
}

/// Runs the command: loads the model, transcribes the files (as many at
/// once as the engine has jobs), writes transcripts to `out` in the order
/// given and per-file problems to stderr. Only a
/// failure to set up the engine is an `Err`; file failures are counted.
pub async fn run(args: TranscribeArgs, out: &mut dyn Write) -> Result<BatchSummary, AsrError> {
    let config = engine_config(&args, Path::new("models"));
    let jobs = config.max_parallel_jobs;
    let engine = tokio::task::spawn_blocking(move || AsrEngine::load(config))
        .await
        .map_err(|_| AsrError::Panicked)??;

    let several = args.files.len() > 1;
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(
            Some(args.files.len() as u64),
            ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut summary = BatchSummary::default();
    // `buffered` runs `jobs` files ahead but yields them in order.
    let engine = &engine;
    let mut results = futures::stream::iter(&args.files)
        .map(|path| async move { (path, transcribe_file(engine, path).await) })
        .buffered(jobs);
    while let Some((path, result)) = results.next().await {
        progress.set_message(path.display().to_string());
        // Keep the bar from interleaving with what we print.
        progress.suspend(|| match &result {
            Ok(file) => {
                summary.succeeded += 1;
                if file.audio.truncated {
                    eprintln!(
                        "warning: {}: the file ends early; transcribed what is there",
                        path.display()
                    );
                }
                if file.audio.damaged_packets > 0 {
                    eprintln!(
                        "warning: {}: skipped {} damaged packets",
                        path.display(),
                        file.audio.damaged_packets
                    );
                }
                // Several text-like transcripts get `tail`-style headers;
                // JSON Lines carry the file name inside.
                let framed = several && args.format != Format::Json;
                let body = render_file(args.format, path, file);
                let written = if framed {
                    write!(out, "==> {} <==\n{body}\n", path.display())
                } else {
                    write!(out, "{body}")
                };
                if let Err(e) = written.and_then(|_| out.flush()) {
                    eprintln!("error: cannot write output: {e}");
                }
                tracing::debug!(
                    file = %path.display(),
                    audio_ms = file.transcription.audio_ms,
                    elapsed_ms = file.elapsed.as_millis() as u64,
                    "transcribed"
                );
            }
            Err(e) => {
                summary.failed += 1;
                eprintln!("error: {}: {e}", path.display());
            }
        });
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(summary)
}
