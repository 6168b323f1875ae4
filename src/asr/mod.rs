//! Speech recognition: Whisper models and, later, the engine that runs them.

pub mod model;
