//! Local speech recognition: Whisper engine, live captioning policy, exports.

pub mod live;
pub mod redact;
pub mod summary;
