//! whisper.cpp's legacy ggml model file: writer pieces and a reader for its
//! headers.
//!
//! Layout, all integers little-endian i32 (whisper.cpp
//! `models/convert-pt-to-ggml.py` writes it, `whisper_model_load` reads it):
//!
//! ```text
//! magic 0x67676d6c ("ggml")
//! hparams: n_vocab n_audio_ctx n_audio_state n_audio_head n_audio_layer
//!          n_text_ctx n_text_state n_text_head n_text_layer n_mels ftype
//! mel filters: n_mel n_fft, then n_mel·n_fft f32
//! vocabulary: count, then per token u32 length + raw bytes
//! tensors until EOF: n_dims name_len ttype (0 = f32, 1 = f16, 8 = q8_0),
//!     dims[n_dims] innermost first (numpy shape reversed), name, data
//! ```

use std::io::{BufReader, Read, Seek, Write};
use std::path::Path;

use super::error::ModelError;

/// `"ggml"` read as a little-endian u32.
pub const GGML_MAGIC: u32 = 0x6767_6d6c;

/// ggml tensor types this project writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    /// Blocks of 32 values: an f16 scale, then 32 signed bytes
    /// (ggml's `block_q8_0`).
    Q8_0 = 8,
}

/// Values per `Q8_0` block, and the block's size in bytes.
pub const Q8_0_BLOCK: usize = 32;
pub const Q8_0_BLOCK_BYTES: usize = 2 + Q8_0_BLOCK;

impl GgmlType {
    fn from_id(id: i32) -> Option<GgmlType> {
        match id {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            8 => Some(GgmlType::Q8_0),
            _ => None,
        }
    }

    /// Bytes `n` elements take, or `None` when `n` does not fill whole
    /// blocks of a block type.
    pub fn bytes(self, n: usize) -> Option<usize> {
        match self {
            GgmlType::F32 => n.checked_mul(4),
            GgmlType::F16 => n.checked_mul(2),
            GgmlType::Q8_0 => (n % Q8_0_BLOCK == 0).then_some(n / Q8_0_BLOCK * Q8_0_BLOCK_BYTES),
        }
    }
}

/// Model dimensions as whisper.cpp reads them from the file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hparams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    /// 1: large weights are f16 (small ones are always f32); 2007: they
    /// are q8_0 (ggml's quantisation version 2 × 1000 + `MOSTLY_Q8_0`).
    pub ftype: i32,
}

impl Hparams {
    fn fields(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }

    fn from_fields(f: [i32; 11]) -> Hparams {
        Hparams {
            n_vocab: f[0],
            n_audio_ctx: f[1],
            n_audio_state: f[2],
            n_audio_head: f[3],
            n_audio_layer: f[4],
            n_text_ctx: f[5],
            n_text_state: f[6],
            n_text_head: f[7],
            n_text_layer: f[8],
            n_mels: f[9],
            ftype: f[10],
        }
    }
}

/// Writes the magic and the hparams.
pub(crate) fn write_header(out: &mut impl Write, h: &Hparams) -> std::io::Result<()> {
    out.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in h.fields() {
        out.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

/// Writes the `n_mel × n_fft` filterbank (`n_fft` here is the number of
/// frequency bins, 201 for Whisper, as whisper.cpp names it).
pub(crate) fn write_mel_filters(
    out: &mut impl Write,
    n_mel: usize,
    n_fft: usize,
    filters: &[f32],
) -> std::io::Result<()> {
    debug_assert_eq!(filters.len(), n_mel * n_fft);
    out.write_all(&(n_mel as i32).to_le_bytes())?;
    out.write_all(&(n_fft as i32).to_le_bytes())?;
    let mut buf = Vec::with_capacity(filters.len() * 4);
    for v in filters {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    out.write_all(&buf)
}

/// Writes the ordinary tokens' bytes.
pub(crate) fn write_vocabulary(out: &mut impl Write, tokens: &[Vec<u8>]) -> std::io::Result<()> {
    out.write_all(&(tokens.len() as i32).to_le_bytes())?;
    for t in tokens {
        out.write_all(&(t.len() as u32).to_le_bytes())?;
        out.write_all(t)?;
    }
    Ok(())
}

/// Writes one tensor header; `shape` is the numpy (row-major) shape. The
/// caller writes the data right after.
pub(crate) fn write_tensor_header(
    out: &mut impl Write,
    name: &str,
    shape: &[usize],
    ty: GgmlType,
) -> std::io::Result<()> {
    out.write_all(&(shape.len() as i32).to_le_bytes())?;
    out.write_all(&(name.len() as i32).to_le_bytes())?;
    out.write_all(&(ty as i32).to_le_bytes())?;
    for d in shape.iter().rev() {
        out.write_all(&(*d as i32).to_le_bytes())?;
    }
    out.write_all(name.as_bytes())
}

/// A tensor's header as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: innermost (fastest-varying) dimension first.
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Where the data starts in the file.
    pub offset: u64,
}

/// Everything in a ggml Whisper file except the tensor data.
#[derive(Debug, Clone)]
pub struct GgmlInfo {
    pub hparams: Hparams,
    pub n_mel: usize,
    pub n_fft: usize,
    /// Row-major `n_mel × n_fft`.
    pub mel_filters: Vec<f32>,
    pub vocabulary: Vec<Vec<u8>>,
    pub tensors: Vec<TensorInfo>,
}

/// Reads the headers of a ggml Whisper file, skipping tensor data, so tests
/// and tools can check a converted model without loading it into whisper.cpp.
pub fn read_ggml_info(path: &Path) -> Result<GgmlInfo, ModelError> {
    let file = std::fs::File::open(path).map_err(ModelError::io(path))?;
    let len = file.metadata().map_err(ModelError::io(path))?.len();
    let mut r = BufReader::new(file);
    let bad = |reason: String| ModelError::BadGgml {
        path: path.to_path_buf(),
        reason,
    };
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };

    let magic = read_i32(&mut r).map_err(io)? as u32;
    if magic != GGML_MAGIC {
        return Err(bad(format!("bad magic {magic:#010x}")));
    }
    let mut fields = [0i32; 11];
    for f in &mut fields {
        *f = read_i32(&mut r).map_err(io)?;
    }
    let hparams = Hparams::from_fields(fields);

    let n_mel = read_len(&mut r, "n_mel", 1 << 12, &bad, &io)?;
    let n_fft = read_len(&mut r, "n_fft", 1 << 16, &bad, &io)?;
    let mut mel = vec![0u8; n_mel * n_fft * 4];
    r.read_exact(&mut mel).map_err(io)?;
    let mel_filters = mel
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let n_tokens = read_len(&mut r, "vocabulary size", 1 << 20, &bad, &io)?;
    let mut vocabulary = Vec::with_capacity(n_tokens);
    for _ in 0..n_tokens {
        let n = read_len(&mut r, "token length", 1 << 16, &bad, &io)?;
        let mut t = vec![0u8; n];
        r.read_exact(&mut t).map_err(io)?;
        vocabulary.push(t);
    }

    let mut tensors = Vec::new();
    loop {
        let pos = r.stream_position().map_err(io)?;
        if pos == len {
            break;
        }
        let n_dims = read_len(&mut r, "n_dims", 4, &bad, &io)?;
        let name_len = read_len(&mut r, "name length", 1 << 10, &bad, &io)?;
        let ty_id = read_i32(&mut r).map_err(io)?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| bad(format!("tensor type {ty_id}")))?;
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(read_len(&mut r, "dimension", 1 << 24, &bad, &io)?);
        }
        let mut name = vec![0u8; name_len];
        r.read_exact(&mut name).map_err(io)?;
        let name = String::from_utf8(name).map_err(|_| bad("tensor name is not UTF-8".into()))?;
        let n_bytes = ty
            .bytes(dims.iter().product::<usize>())
            .ok_or_else(|| bad(format!("tensor {name} does not fill whole {ty:?} blocks")))?;
        let offset = r.stream_position().map_err(io)?;
        let end = offset + n_bytes as u64;
        if end > len {
            return Err(bad(format!("tensor {name} runs past the end of the file")));
        }
        r.seek_relative(n_bytes as i64).map_err(io)?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }

    Ok(GgmlInfo {
        hparams,
        n_mel,
        n_fft,
        mel_filters,
        vocabulary,
        tensors,
    })
}

fn read_i32(r: &mut impl Read) -> std::io::Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(i32::from_le_bytes(b))
}

/// Reads a count or size and checks it is in `0..=max`, so a corrupt file
/// cannot make us allocate gigabytes.
fn read_len(
    r: &mut impl Read,
    what: &str,
    max: usize,
    bad: &impl Fn(String) -> ModelError,
    io: &impl Fn(std::io::Error) -> ModelError,
) -> Result<usize, ModelError> {
    let v = read_i32(r).map_err(io)?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= max)
        .ok_or_else(|| bad(format!("{what} {v} is out of range")))
}
