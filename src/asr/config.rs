//! The `[asr]` section: local Whisper settings, owned by the speech
//! domain that runs them. Loaded and layered by [`crate::config`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// Local Whisper settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    /// Transcribe live calls. Needs the model (`callstream model install`).
    pub enabled: bool,
    /// whisper.cpp model file.
    pub model_path: PathBuf,
    /// CPU threads one Whisper job uses.
    pub threads_per_job: usize,
    /// Whisper jobs run at once (each holds a decoder state). Threads used
    /// in all: `threads_per_job * max_parallel_jobs`.
    pub max_parallel_jobs: usize,
    /// New speech between two partial captions of an utterance.
    pub partial_interval_ms: u64,
    /// Silence that ends an utterance (and yields its final).
    pub end_silence_ms: u64,
    /// Longest utterance before a final is forced.
    pub max_utterance_ms: u64,
    /// Fewest encoder positions (20 ms each) a short window is decoded
    /// with; 1500 = always Whisper's full 30 s window. Shrinking the window
    /// saves CPU but makes Whisper loop on short real utterances; the
    /// default is what the real-speech evaluation (`scripts/eval-asr.sh`)
    /// shows costs no accuracy.
    pub min_audio_ctx: u32,
    /// Calls captioned live at once; a call that finds every slot taken
    /// gets no live captions (watchers are told) and is transcribed from
    /// its recording after it ends. 0 (default): from the thread budget
    /// and the model, see [`AsrConfig::live_capacity`].
    pub max_live_calls: usize,
}

impl Default for AsrConfig {
    fn default() -> Self {
        let live = crate::asr::live::LiveConfig::default();
        Self {
            enabled: true,
            model_path: PathBuf::from("models/ggml-tiny.en.bin"),
            threads_per_job: 1,
            max_parallel_jobs: 2,
            partial_interval_ms: live.partial_interval_ms,
            end_silence_ms: live.end_silence_ms,
            max_utterance_ms: live.max_utterance_ms,
            min_audio_ctx: crate::asr::engine::DEFAULT_MIN_AUDIO_CTX,
            max_live_calls: 0,
        }
    }
}

impl AsrConfig {
    /// The speech engine these settings describe.
    pub fn engine(&self) -> crate::asr::engine::EngineConfig {
        crate::asr::engine::EngineConfig {
            model_path: self.model_path.clone(),
            threads_per_job: self.threads_per_job,
            max_parallel_jobs: self.max_parallel_jobs,
            min_audio_ctx: self.min_audio_ctx,
        }
    }

    /// Live caption slots: `max_live_calls`, or when 0 an estimate from the
    /// thread budget and the model's size. The load test (both parties
    /// talking at once, partial p95 < 2.5 s, final p95 < 2 s) held 4 calls
    /// per core with tiny.en; larger models hold fewer (about one per core
    /// for base). Measure with `scripts/loadtest.sh` and set it.
    pub fn live_capacity(&self) -> usize {
        if self.max_live_calls > 0 {
            return self.max_live_calls;
        }
        let threads = self.threads_per_job * self.max_parallel_jobs;
        let model_mb = std::fs::metadata(&self.model_path).map_or(0, |m| m.len() >> 20);
        let per_thread = if model_mb <= 100 { 4 } else { 1 };
        (threads * per_thread).max(1)
    }

    /// The live captioning policy these settings describe.
    pub fn live(&self) -> crate::asr::live::LiveConfig {
        crate::asr::live::LiveConfig {
            partial_interval_ms: self.partial_interval_ms,
            end_silence_ms: self.end_silence_ms,
            max_utterance_ms: self.max_utterance_ms,
            ..crate::asr::live::LiveConfig::default()
        }
    }

    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = self;
        if a.threads_per_job == 0 || a.max_parallel_jobs == 0 {
            return Err(invalid(
                "asr.threads_per_job/max_parallel_jobs",
                "must be at least 1",
            ));
        }
        if a.threads_per_job * a.max_parallel_jobs > 256 {
            return Err(invalid(
                "asr.threads_per_job",
                "thread budget is unreasonably large",
            ));
        }
        if !(1..=crate::asr::engine::FULL_AUDIO_CTX).contains(&a.min_audio_ctx) {
            return Err(invalid(
                "asr.min_audio_ctx",
                "must be between 1 and 1500 (the full 30 s window)",
            ));
        }
        if !(100..=5_000).contains(&a.partial_interval_ms) {
            return Err(invalid(
                "asr.partial_interval_ms",
                "must be between 100 and 5000",
            ));
        }
        if !(200..=5_000).contains(&a.end_silence_ms) {
            return Err(invalid(
                "asr.end_silence_ms",
                "must be between 200 and 5000",
            ));
        }
        if !(2_000..=30_000).contains(&a.max_utterance_ms) {
            return Err(invalid(
                "asr.max_utterance_ms",
                "must be between 2000 and 30000 (Whisper hears 30 s at most)",
            ));
        }
        Ok(())
    }
}
