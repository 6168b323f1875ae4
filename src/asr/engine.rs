//! The Whisper engine: one model in memory, shared CPU, live work first.
//!
//! Whisper's cost is CPU time, and live calls and batch jobs compete for the
//! same cores. [`AsrEngine`] therefore owns
//! - one [`WhisperContext`] (the weights, loaded once and shared),
//! - a pool of reusable [`WhisperState`]s (per-run buffers, tens of MB each,
//!   created on first need and kept),
//! - a [`Scheduler`] with `max_parallel_jobs` slots, each run using
//!   `threads_per_job` threads, so the engine never uses more threads than
//!   the configured budget. Waiting jobs are served by [`Priority`]: live
//!   finals, then live partials, then batch; FIFO within a priority. Batch
//!   waits as long as live work is queued: size the budget so that live load
//!   alone leaves slots idle.
//!
//! # Which method when
//! - [`AsrEngine::load`] once at start-up. It blocks (reads the model, builds
//!   a first state): call it before serving, or from `spawn_blocking`.
//! - [`AsrEngine::transcribe`] per utterance, window or file, from any task;
//!   clone the engine freely (it is an `Arc`). The future waits for a slot,
//!   then runs Whisper on the blocking pool.
//! - To cancel a stale live partial, set its [`DecodeOptions::abort`] flag:
//!   a queued job then never starts, a running one stops at the next encoder
//!   or decoder step, and the call returns [`AsrError::Aborted`]. Dropping the
//!   future alone frees a queue place, but a run already started finishes.
//!
//! # Guards against Whisper's failure modes
//! Whisper hallucinates on silence and loops on short or noisy windows. The
//! engine caps tokens per window when the encoder is shrunk, redoes a
//! shrunk-window decode that [`looks_degenerate`] with the full window, and
//! passes every run through [`clean_segments`] (see [`crate::asr::cleanup`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::asr::cleanup::{clean_segments, looks_degenerate};
use crate::asr::scheduler::{Permit, Priority, Scheduler};

/// Samples per second of engine input.
pub const SAMPLE_RATE: usize = 16_000;
/// Audio per encoder position: Whisper's encoder sees 1500 positions per 30 s.
const MS_PER_AUDIO_CTX: usize = 20;

/// Why the engine could not produce a transcription.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("invalid engine configuration: {0}")]
    Config(String),
    #[error(
        "Whisper model not found at {0}. Model files are not committed: install one with \
         `callstream model install tiny.en` (or `base`; writes models/ggml-<name>.bin), or pass \
         --model PATH"
    )]
    ModelMissing(PathBuf),
    #[error("cannot load Whisper model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("no audio to transcribe")]
    EmptyAudio,
    #[error("invalid decode options: {0}")]
    InvalidOptions(String),
    /// The caller's abort flag was set before or during the run.
    #[error("transcription aborted")]
    Aborted,
    #[error("Whisper failed: {0}")]
    Whisper(String),
    #[error("transcription worker panicked")]
    Panicked,
}

/// Engine sizing. `threads_per_job × max_parallel_jobs` is the CPU budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// A whisper.cpp ggml model file (e.g. `models/ggml-tiny.en.bin`).
    pub model_path: PathBuf,
    /// Threads one Whisper run uses. More threads shorten one run (latency);
    /// more parallel jobs serve more calls (throughput).
    pub threads_per_job: usize,
    /// Runs at once; also the number of `WhisperState`s kept.
    pub max_parallel_jobs: usize,
    /// Fewest encoder positions (20 ms each) a run that asks for a fitted
    /// window gets; 1500 (30 s) makes every run use the full window. The
    /// encoder's cost grows with its window, but a window much shorter
    /// than the 30 s Whisper was trained on makes it loop on short real
    /// utterances ("front, left, left, front…"): the floor is set from the
    /// real-speech evaluation (`scripts/eval-asr.sh`), never by speed alone.
    pub min_audio_ctx: u32,
}

/// The fitted-window floor the real-speech evaluation supports (see
/// [`EngineConfig::min_audio_ctx`] and the README's evaluation table).
pub const DEFAULT_MIN_AUDIO_CTX: u32 = 384;
/// Encoder positions of Whisper's full 30 s window.
pub const FULL_AUDIO_CTX: u32 = 1500;

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            model_path: PathBuf::from("models/ggml-tiny.en.bin"),
            threads_per_job: 1,
            max_parallel_jobs: 1,
            min_audio_ctx: DEFAULT_MIN_AUDIO_CTX,
        }
    }
}

impl EngineConfig {
    /// Checks the budget against the cores this process may use.
    pub fn validate(&self) -> Result<(), AsrError> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        self.validate_for(cores)
    }

    /// Checks the budget against `cores`: oversubscribing cores makes every
    /// run slower, live ones included, which defeats the priorities.
    pub fn validate_for(&self, cores: usize) -> Result<(), AsrError> {
        if self.threads_per_job == 0 || self.max_parallel_jobs == 0 {
            return Err(AsrError::Config(
                "threads_per_job and max_parallel_jobs must be at least 1".into(),
            ));
        }
        if !(1..=FULL_AUDIO_CTX).contains(&self.min_audio_ctx) {
            return Err(AsrError::Config(format!(
                "min_audio_ctx must be between 1 and {FULL_AUDIO_CTX} (the full 30 s window)"
            )));
        }
        let total = self.threads_per_job.saturating_mul(self.max_parallel_jobs);
        if total > cores {
            return Err(AsrError::Config(format!(
                "{} threads per job × {} parallel jobs = {total} threads, more than the {cores} \
                 available cores",
                self.threads_per_job, self.max_parallel_jobs
            )));
        }
        Ok(())
    }
}

/// Per-run Whisper options.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Encoder positions to use (20 ms each, at most 1500 = 30 s). Shrinking
    /// it for short windows cuts encoder time; the audio must fit in it. See
    /// [`DecodeOptions::fitted_audio_ctx`].
    pub audio_ctx: Option<i32>,
    /// Most text tokens per 30 s window. Defaults, when `audio_ctx` is set,
    /// to a bound from the audio length: small encoders loop more easily.
    pub max_tokens: Option<i32>,
    /// Text that conditions the decoder: names, jargon, the previous final.
    pub initial_prompt: Option<String>,
    /// Emit one segment for the whole input (live windows).
    pub single_segment: bool,
    /// Do not condition a window on the text of the previous one.
    pub no_context: bool,
    /// Compute per-token timestamps and return [`Segment::words`] (costs a
    /// little time; live partials need them to commit agreed words).
    pub token_timestamps: bool,
    /// Never re-decode with sampling when a greedy pass fails whisper.cpp's
    /// checks: the result is then deterministic and the run's cost bounded
    /// (live windows; the repetition guards below still apply).
    pub no_fallback: bool,
    /// Added to every segment time: where this audio starts in the call.
    pub offset_ms: i64,
    /// Set to `true` to cancel (see the type-level docs).
    pub abort: Option<Arc<AtomicBool>>,
}

impl DecodeOptions {
    /// An `audio_ctx` covering `n_samples` plus about a second of padding,
    /// or `None` when the audio needs the full 30 s encoder.
    pub fn fitted_audio_ctx(n_samples: usize) -> Option<i32> {
        let ms = n_samples * 1000 / SAMPLE_RATE;
        let ctx = (ms.div_ceil(MS_PER_AUDIO_CTX) + 50).next_multiple_of(32);
        (ctx < 1500).then_some(ctx as i32)
    }

    /// Batch decoding of one whole recording or file of `n_samples`: a
    /// fitted window (the engine raises it to its floor), no context, so a
    /// reused decoder state never carries another file's text in, and
    /// greedy only (a degenerate decode is redone with the full window
    /// instead), so the same file always gives the same transcript.
    pub fn batch(n_samples: usize) -> Self {
        Self {
            audio_ctx: Self::fitted_audio_ctx(n_samples),
            no_context: true,
            no_fallback: true,
            ..Self::default()
        }
    }

    fn aborted(&self) -> bool {
        self.abort
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Relaxed))
    }
}

/// A stretch of recognised speech.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
    /// Mean probability of the segment's text tokens.
    pub confidence: Option<f32>,
    /// Whisper's probability that its window held no speech.
    pub no_speech_prob: f32,
    /// Word timings, when [`DecodeOptions::token_timestamps`] was set (and
    /// the repetition guards left the text as decoded).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

/// One word with its time, from whisper.cpp's token timestamps (an estimate
/// good to a few tens of ms at pauses, coarser inside fast speech).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Word {
    pub start_ms: i64,
    pub end_ms: i64,
    /// As decoded, with its punctuation.
    pub text: String,
    /// Mean probability of its tokens.
    pub probability: f32,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcription {
    pub segments: Vec<Segment>,
    /// Length of the audio transcribed.
    pub audio_ms: u64,
}

impl Transcription {
    /// Segment texts joined by spaces.
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Shared handle to the model, its state pool and its scheduler.
#[derive(Clone)]
pub struct AsrEngine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    ctx: WhisperContext,
    states: Mutex<Vec<WhisperState>>,
    scheduler: Arc<Scheduler>,
    multilingual: bool,
    n_audio_ctx: i32,
}

impl AsrEngine {
    /// Loads the model and prepares the first state. Blocking; see the
    /// type-level docs for when to call it.
    pub fn load(config: EngineConfig) -> Result<Self, AsrError> {
        config.validate()?;
        if !config.model_path.is_file() {
            return Err(AsrError::ModelMissing(config.model_path.clone()));
        }
        // whisper.cpp logs through `tracing` instead of printing to stderr.
        whisper_rs::install_logging_hooks();
        let load_err = |reason: String| AsrError::ModelLoad {
            path: config.model_path.clone(),
            reason,
        };
        let ctx = WhisperContext::new_with_params(
            &config.model_path,
            WhisperContextParameters::default(),
        )
        .map_err(|e| load_err(format!("{e} (is it a whisper.cpp ggml file?)")))?;
        // One state up front: fails now, not on the first call, if memory is short.
        let first = ctx.create_state().map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                scheduler: Scheduler::new(config.max_parallel_jobs),
                multilingual: ctx.is_multilingual(),
                n_audio_ctx: ctx.n_audio_ctx(),
                states: Mutex::new(vec![first]),
                ctx,
                config,
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The scheduler, for queue-depth metrics.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.inner.scheduler
    }

    /// Transcribes 16 kHz mono `samples` once `priority` earns a slot.
    pub async fn transcribe(
        &self,
        samples: Vec<f32>,
        opts: DecodeOptions,
        priority: Priority,
    ) -> Result<Transcription, AsrError> {
        self.inner.check(&samples, &opts)?;
        if opts.aborted() {
            return Err(AsrError::Aborted);
        }
        let permit = self.reserve(priority).await;
        // It may have gone stale while queued: spend no CPU on it.
        if opts.aborted() {
            return Err(AsrError::Aborted);
        }
        self.transcribe_reserved(permit, samples, opts).await
    }

    /// Waits for a slot at `priority` without committing to audio yet: a
    /// live partial takes its audio once the slot is its own, so it shows
    /// the freshest speech however long it queued.
    pub async fn reserve(&self, priority: Priority) -> Permit {
        self.inner.scheduler.acquire(priority).await
    }

    /// Runs on a slot from [`AsrEngine::reserve`] (released when done).
    pub async fn transcribe_reserved(
        &self,
        permit: Permit,
        samples: Vec<f32>,
        opts: DecodeOptions,
    ) -> Result<Transcription, AsrError> {
        self.inner.check(&samples, &opts)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.run(&samples, &opts)
        })
        .await
        .map_err(|_| AsrError::Panicked)?
    }
}

impl Inner {
    fn check(&self, samples: &[f32], opts: &DecodeOptions) -> Result<(), AsrError> {
        if samples.is_empty() {
            return Err(AsrError::EmptyAudio);
        }
        if i32::try_from(samples.len()).is_err() {
            return Err(AsrError::InvalidOptions(
                "audio too long for one run".into(),
            ));
        }
        if let Some(ctx) = opts.audio_ctx {
            if ctx < 1 || ctx > self.n_audio_ctx {
                return Err(AsrError::InvalidOptions(format!(
                    "audio_ctx {ctx} outside 1..={}",
                    self.n_audio_ctx
                )));
            }
            // Beyond the shrunk encoder whisper.cpp would skip audio silently.
            let covered = ctx as usize * MS_PER_AUDIO_CTX;
            let audio_ms = samples.len() * 1000 / SAMPLE_RATE;
            if audio_ms > covered {
                return Err(AsrError::InvalidOptions(format!(
                    "audio_ctx {ctx} covers {covered} ms but the audio is {audio_ms} ms"
                )));
            }
        }
        if opts.max_tokens.is_some_and(|m| m < 1) {
            return Err(AsrError::InvalidOptions(
                "max_tokens must be at least 1".into(),
            ));
        }
        if opts
            .initial_prompt
            .as_deref()
            .is_some_and(|p| p.contains('\0'))
        {
            return Err(AsrError::InvalidOptions(
                "initial_prompt contains NUL".into(),
            ));
        }
        Ok(())
    }

    fn lock_states(&self) -> MutexGuard<'_, Vec<WhisperState>> {
        // A panic elsewhere cannot leave the Vec itself inconsistent.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs Whisper on a pooled state. Called with a scheduler permit held,
    /// so at most `max_parallel_jobs` states exist.
    ///
    /// A run that may fall back to sampling gets a fresh state instead:
    /// whisper.cpp samples from a random generator kept in the state and
    /// seeded when the state is made, so on a reused state the same audio
    /// could come out differently depending on what the state decoded
    /// before ("removed." after four files, "We moved." after five). Greedy
    /// runs read no randomness and share states safely.
    fn run(&self, samples: &[f32], opts: &DecodeOptions) -> Result<Transcription, AsrError> {
        if !opts.no_fallback {
            return self.run_on(&mut self.new_state()?, samples, opts);
        }
        let pooled = self.lock_states().pop();
        let mut state = match pooled {
            Some(s) => s,
            None => self.new_state()?,
        };
        let result = self.run_on(&mut state, samples, opts);
        self.lock_states().push(state);
        result
    }

    fn new_state(&self) -> Result<WhisperState, AsrError> {
        self.ctx
            .create_state()
            .map_err(|e| AsrError::Whisper(format!("cannot create state: {e}")))
    }

    /// One run with the window `opts` asks for, raised to the configured
    /// floor; when that window was shrunk and the text looks degenerate
    /// (see [`looks_degenerate`]), the audio is decoded again with the full
    /// window. Both runs are greedy, so the result stays deterministic.
    fn run_on(
        &self,
        state: &mut WhisperState,
        samples: &[f32],
        opts: &DecodeOptions,
    ) -> Result<Transcription, AsrError> {
        let floor = i32::try_from(self.config.min_audio_ctx).unwrap_or(i32::MAX);
        let ctx = opts
            .audio_ctx
            .map(|c| c.max(floor))
            .filter(|&c| c < self.n_audio_ctx);
        let Some(ctx) = ctx else {
            return Ok(self.decode(state, samples, opts, None)?.transcription);
        };
        let fitted = self.decode(state, samples, opts, Some(ctx))?;
        if !looks_degenerate(
            &fitted.raw_text,
            fitted.transcription.audio_ms,
            fitted.hit_token_cap,
        ) {
            return Ok(fitted.transcription);
        }
        tracing::debug!(
            audio_ctx = ctx,
            "degenerate decode; retrying with the full window"
        );
        let full = self.decode(state, samples, opts, None)?;
        Ok(full.transcription)
    }

    fn decode(
        &self,
        state: &mut WhisperState,
        samples: &[f32],
        opts: &DecodeOptions,
        audio_ctx: Option<i32>,
    ) -> Result<Decoded, AsrError> {
        let audio_ms = (samples.len() * 1000 / SAMPLE_RATE) as u64;
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.config.threads_per_job as i32);
        params.set_language(Some(if self.multilingual { "auto" } else { "en" }));
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_no_context(opts.no_context);
        params.set_single_segment(opts.single_segment);
        params.set_token_timestamps(opts.token_timestamps);
        if opts.no_fallback {
            params.set_temperature_inc(0.0);
        }
        if let Some(ctx) = audio_ctx {
            params.set_audio_ctx(ctx);
        }
        let max_tokens = opts.max_tokens.or_else(|| {
            // About 4 words/s of fast speech at ~1.5 tokens a word, doubled.
            audio_ctx.map(|_| (audio_ms as i64 * 12 / 1000 + 8).min(i64::from(i32::MAX)) as i32)
        });
        if let Some(max) = max_tokens {
            params.set_max_tokens(max);
        }
        // whisper-rs leaks the prompt's CString per run (its FullParams has
        // no Drop); set it only when asked.
        if let Some(prompt) = opts.initial_prompt.as_deref().filter(|p| !p.is_empty()) {
            params.set_initial_prompt(prompt);
        }
        // No abort callback inside the run: whisper-rs 0.16's
        // `set_abort_callback_safe` boxes the closure as `Box<Box<dyn FnMut>>`
        // but its trampoline reads the pointer as the bare closure type, so
        // the flag read is garbage and runs (finals included) were aborted at
        // random (whisper error -6, "failed to encode"). The abort flag is
        // honoured before a run starts and when it is dequeued; live
        // partials are short, so a stale one costs a few hundred ms at most.

        if let Err(e) = state.full(params, samples) {
            return Err(if opts.aborted() {
                AsrError::Aborted
            } else {
                AsrError::Whisper(e.to_string())
            });
        }

        let eot = self.ctx.token_eot();
        let mut segments = Vec::new();
        let mut hit_token_cap = false;
        for seg in state.as_iter() {
            let text_tokens = (0..seg.n_tokens())
                .filter_map(|i| seg.get_token(i))
                .filter(|t| t.token_id() < eot)
                .count();
            if max_tokens.is_some_and(|max| text_tokens >= usize::try_from(max).unwrap_or(0)) {
                hit_token_cap = true;
            }
            let text = seg.to_str_lossy().map(|t| t.trim().to_owned());
            let Ok(text) = text else { continue };
            let probs: Vec<f32> = (0..seg.n_tokens())
                .filter_map(|i| seg.get_token(i))
                .filter(|t| t.token_id() < eot)
                .map(|t| t.token_probability())
                .collect();
            let confidence =
                (!probs.is_empty()).then(|| probs.iter().sum::<f32>() / probs.len() as f32);
            let words = if opts.token_timestamps {
                let tokens = (0..seg.n_tokens())
                    .filter_map(|i| seg.get_token(i))
                    .filter(|t| t.token_id() < eot)
                    .filter_map(|t| {
                        let d = t.token_data();
                        let text = t.to_str_lossy().ok()?.into_owned();
                        Some((text, d.t0 * 10, d.t1 * 10, d.p))
                    });
                words_from_tokens(tokens, opts.offset_ms)
            } else {
                Vec::new()
            };
            segments.push(Segment {
                // whisper.cpp times are in centiseconds.
                start_ms: seg.start_timestamp() * 10 + opts.offset_ms,
                end_ms: seg.end_timestamp() * 10 + opts.offset_ms,
                text,
                confidence,
                no_speech_prob: seg.no_speech_probability(),
                words,
            });
        }
        let raw_text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Decoded {
            transcription: Transcription {
                segments: clean_segments(segments),
                audio_ms,
            },
            raw_text,
            hit_token_cap,
        })
    }
}

/// One decode, with what [`looks_degenerate`] judges it by.
struct Decoded {
    transcription: Transcription,
    /// The text before the clean-up guards (which hide loops).
    raw_text: String,
    /// A segment used every text token the run allowed.
    hit_token_cap: bool,
}

/// Joins tokens `(text, t0_ms, t1_ms, probability)` into words: a token that
/// starts with a space starts a word (Whisper's BPE marks word starts so);
/// punctuation stays on the word it follows.
fn words_from_tokens(
    tokens: impl IntoIterator<Item = (String, i64, i64, f32)>,
    offset_ms: i64,
) -> Vec<Word> {
    let mut words: Vec<Word> = Vec::new();
    let mut probs: Vec<Vec<f32>> = Vec::new();
    for (text, t0, t1, p) in tokens {
        if text.is_empty() {
            continue;
        }
        let starts_word = text.starts_with(' ') || words.is_empty();
        let punct_only = text.trim().chars().all(|c| !c.is_alphanumeric());
        match words.last_mut() {
            Some(w) if !starts_word || (punct_only && !text.trim().is_empty()) => {
                w.text.push_str(text.trim_start());
                w.end_ms = w.end_ms.max(t1 + offset_ms);
                if let Some(ps) = probs.last_mut() {
                    ps.push(p);
                }
            }
            _ => {
                if text.trim().is_empty() {
                    continue;
                }
                words.push(Word {
                    start_ms: t0 + offset_ms,
                    end_ms: t1.max(t0) + offset_ms,
                    text: text.trim_start().to_string(),
                    probability: 0.0,
                });
                probs.push(vec![p]);
            }
        }
    }
    for (w, ps) in words.iter_mut().zip(probs) {
        w.probability = ps.iter().sum::<f32>() / ps.len().max(1) as f32;
    }
    words
}

/// Resolves a `--model` argument: an existing path or one with a `/` or a
/// `.bin` suffix is a path; anything else is a model name looked up as
/// `{models_dir}/ggml-{name}.bin` (`tiny.en` → `models/ggml-tiny.en.bin`).
pub fn resolve_model(spec: &str, models_dir: &Path) -> PathBuf {
    let path = Path::new(spec);
    let is_path = path.exists()
        || spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || spec.ends_with(".bin");
    if is_path {
        path.to_path_buf()
    } else {
        models_dir.join(format!("ggml-{spec}.bin"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_join_into_words_with_their_punctuation() {
        let t = |text: &str, t0, t1, p| (text.to_string(), t0, t1, p);
        let words = words_from_tokens(
            [
                t(" And", 0, 30, 0.9),
                t(" so", 30, 60, 0.8),
                t(",", 60, 60, 0.7),
                t(" Amer", 80, 120, 0.6),
                t("icans", 120, 170, 0.4),
                t(".", 170, 170, 1.0),
            ],
            1_000,
        );
        let texts: Vec<_> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["And", "so,", "Americans."]);
        assert_eq!((words[2].start_ms, words[2].end_ms), (1_080, 1_170));
        assert!((words[1].probability - 0.75).abs() < 1e-6);
    }

    #[test]
    fn thread_budget_is_validated() {
        let cfg = |threads_per_job, max_parallel_jobs| EngineConfig {
            model_path: "m.bin".into(),
            threads_per_job,
            max_parallel_jobs,
            ..EngineConfig::default()
        };
        assert!(cfg(2, 1).validate_for(2).is_ok());
        assert!(cfg(1, 2).validate_for(2).is_ok());
        assert!(matches!(
            cfg(2, 2).validate_for(2),
            Err(AsrError::Config(_))
        ));
        assert!(matches!(
            cfg(0, 1).validate_for(2),
            Err(AsrError::Config(_))
        ));
        assert!(matches!(
            cfg(1, 0).validate_for(2),
            Err(AsrError::Config(_))
        ));
        assert!(matches!(
            cfg(usize::MAX, 2).validate_for(2),
            Err(AsrError::Config(_))
        ));
    }

    #[test]
    fn missing_model_names_the_path_and_how_to_get_it() {
        let err = AsrEngine::load(EngineConfig {
            model_path: "/nonexistent/ggml-tiny.en.bin".into(),
            threads_per_job: 1,
            max_parallel_jobs: 1,
            ..EngineConfig::default()
        })
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(matches!(err, AsrError::ModelMissing(_)));
        assert!(msg.contains("/nonexistent/ggml-tiny.en.bin") && msg.contains("--model"));
    }

    #[test]
    fn fitted_audio_ctx_covers_the_audio_with_margin() {
        let ctx = DecodeOptions::fitted_audio_ctx(176_000).unwrap();
        assert!(ctx as usize * MS_PER_AUDIO_CTX >= 11_000 + 1_000);
        assert_eq!(ctx % 32, 0);
        assert_eq!(DecodeOptions::fitted_audio_ctx(16_000 * 29), None);
        assert!(DecodeOptions::fitted_audio_ctx(1).is_some());
    }

    #[test]
    fn model_names_resolve_under_models() {
        let dir = Path::new("models");
        assert_eq!(
            resolve_model("tiny.en", dir),
            PathBuf::from("models/ggml-tiny.en.bin")
        );
        assert_eq!(
            resolve_model("base", dir),
            PathBuf::from("models/ggml-base.bin")
        );
        assert_eq!(resolve_model("/x/y.bin", dir), PathBuf::from("/x/y.bin"));
        assert_eq!(
            resolve_model("custom.bin", dir),
            PathBuf::from("custom.bin")
        );
    }
}
