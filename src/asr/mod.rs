//! Local speech recognition: Whisper models and the shared engine with its
//! scheduler, live captioning policy, caption fan-out, batch transcription,
//! summaries, redaction, transcript export and word error rate.

pub mod batch;
pub mod captions;
pub mod cleanup;
pub mod engine;
pub mod eval;
pub mod export;
pub mod live;
pub mod model;
pub mod redact;
pub mod scheduler;
pub mod summary;
pub mod wer;
