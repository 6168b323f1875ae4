//! Audio files in, 16 kHz mono `f32` out: decoding for batch transcription.
//!
//! Consumes no other domain's types; the live path's audio comes through
//! [`crate::media`] instead.

pub mod decode;

pub use crate::media::resample::{resample, ResampleError, StreamResampler};
pub use decode::{decode_bytes, decode_file, DecodeError, DecodedAudio, TARGET_RATE};
