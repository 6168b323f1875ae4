//! What is made of transcript text: call summaries ([`summary`]), PII
//! redaction ([`redact`]), export formats ([`export`]) and word error rate
//! ([`wer`]).
//!
//! Pure text: no audio, no model, no I/O (from [`crate::asr`] only the
//! segment types it hands over). Each part is deterministic and tested on
//! strings alone, and runs where the text is (a stored transcript
//! summarised again, a partial redacted) without loading Whisper. The
//! vocabulary the rules consult is plain-text lists in `words/`.

pub mod export;
pub mod redact;
pub mod summary;
pub mod wer;
mod words;
