//! The media domain's error type.

/// Why the media core refused an input.
///
/// Errors never poison a session: whatever was accepted before stays placed,
/// and the next frame is handled normally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The MIME type / encoding name is not one we decode.
    #[error("unsupported codec {0:?}")]
    UnsupportedCodec(String),
    /// The resampler has no fixed ratio configured for this rate.
    #[error("unsupported sample rate {0} Hz")]
    UnsupportedSampleRate(u32),
    /// 16-bit PCM needs whole samples; a torn sample means a framing bug upstream.
    #[error("L16 payload of {0} bytes is not a whole number of samples")]
    OddPayloadLength(usize),
    /// The timestamp would place audio beyond any position we can represent.
    #[error("timestamp {0} ms is out of range")]
    TimestampOutOfRange(u64),
    /// The session was finished; it accepts no more audio.
    #[error("media session already finished")]
    Finished,
}
