//! Local speech recognition: Whisper models and engine, live captioning
//! policy, caption fan-out, summaries, redaction and exports.

pub mod captions;
pub mod live;
pub mod model;
pub mod redact;
pub mod summary;
