//! Local speech recognition, audio to text: Whisper model files ([`model`]),
//! the engine that runs them ([`engine`]) with its [`scheduler`] and the
//! [`cleanup`] of what Whisper decodes, the live captioning policy
//! ([`live`]), caption fan-out ([`captions`]), batch transcription
//! ([`batch`]), the `[asr]` settings ([`config`]) and the real-speech
//! evaluation ([`eval`]). What is done with
//! the text afterwards is [`crate::transcript`]'s.

pub mod batch;
pub mod captions;
pub mod cleanup;
pub mod config;
pub mod engine;
pub mod eval;
pub mod live;
pub mod model;
pub mod scheduler;
