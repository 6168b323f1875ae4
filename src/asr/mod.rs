//! Local speech recognition: Whisper engine, live captioning policy, exports.

pub mod captions;
pub mod live;
pub mod redact;
pub mod summary;
