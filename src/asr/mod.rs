//! Speech recognition: the shared Whisper engine and its scheduler, batch
//! transcription of files, transcript export and word error rate.

pub mod batch;
pub mod engine;
pub mod export;
pub mod wer;
