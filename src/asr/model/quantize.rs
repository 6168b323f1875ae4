//! 8-bit weights (ggml `q8_0`) from an f16 ggml Whisper file.
//!
//! whisper.cpp spends most of a CPU decode in f16 matrix products; with
//! `q8_0` weights it multiplies int8 blocks instead (AVX-512 VNNI / AVX2),
//! and the weights take half the memory. Only the matrices whisper.cpp
//! creates with the model's weight type are quantised (every 2-D f16
//! tensor: attention and MLP weights, the token embedding); the convolution
//! kernels stay f16 and norms, biases and positional embeddings f32, as
//! whisper.cpp's own `quantize` tool leaves them. Whether the smaller
//! weights cost accuracy is for the real-speech evaluation to say
//! (`scripts/eval-asr.sh`), not this module.

use std::io::Write;
use std::path::Path;

use half::f16;

use super::error::ModelError;
use super::ggml::{self, read_ggml_info, GgmlType, Q8_0_BLOCK};

/// `hparams.ftype` of a `q8_0` file: ggml's quantisation version (2) ×
/// 1000 + `GGML_FTYPE_MOSTLY_Q8_0` (7).
pub const FTYPE_Q8_0: i32 = 2 * 1000 + 7;
/// `hparams.ftype` of the f16 files [`super::convert`] writes.
const FTYPE_F16: i32 = 1;
/// Byte offset of `hparams.ftype`: after the magic and ten other fields.
const FTYPE_OFFSET: usize = 4 + 10 * 4;

/// Where the `q8_0` copy of `model` goes by default: `ggml-tiny.en.bin` →
/// `ggml-tiny.en-q8_0.bin`, so `--model tiny.en-q8_0` finds it.
pub fn q8_0_path(model: &Path) -> std::path::PathBuf {
    let stem = model
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".bin").unwrap_or(n))
        .unwrap_or("model");
    model.with_file_name(format!("{stem}-q8_0.bin"))
}

/// What [`quantize_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeSummary {
    /// Tensors written as `q8_0`.
    pub quantized: usize,
    /// Tensors copied unchanged.
    pub kept: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Appends `values` as ggml `block_q8_0`s (an f16 scale `max|x| / 127`,
/// then 32 values rounded to `x / scale`, ggml's reference rounding), so
/// the file equals what whisper.cpp's quantiser writes. A trailing partial
/// block is padded with zeros; whisper's weight rows are whole blocks.
pub fn q8_0(values: &[f32], out: &mut Vec<u8>) {
    for block in values.chunks(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for j in 0..Q8_0_BLOCK {
            let q = block.get(j).map_or(0.0, |v| (v * id).round());
            out.push(q as i8 as u8);
        }
    }
}

/// Writes a `q8_0` copy of the f16 ggml Whisper model `src` to `dst`
/// (through a temporary file renamed into place, so `dst` is never half
/// written).
pub fn quantize_file(src: &Path, dst: &Path) -> Result<QuantizeSummary, ModelError> {
    let bad = |reason: String| ModelError::BadGgml {
        path: src.to_path_buf(),
        reason,
    };
    let info = read_ggml_info(src)?;
    if info.hparams.ftype != FTYPE_F16 {
        return Err(bad(format!(
            "weights are ftype {}, not f16 (1): already quantised?",
            info.hparams.ftype
        )));
    }
    let bytes = std::fs::read(src).map_err(ModelError::io(src))?;
    let header_len = |t: &ggml::TensorInfo| 12 + 4 * t.dims.len() + t.name.len();
    let preamble = info
        .tensors
        .first()
        .map_or(bytes.len(), |t| t.offset as usize - header_len(t));

    let mut out = Vec::with_capacity(bytes.len() / 2 + preamble);
    out.extend_from_slice(&bytes[..preamble]);
    out[FTYPE_OFFSET..FTYPE_OFFSET + 4].copy_from_slice(&FTYPE_Q8_0.to_le_bytes());
    let (mut quantized, mut kept) = (0, 0);
    for t in &info.tensors {
        let n: usize = t.dims.iter().product();
        let start = t.offset as usize;
        let len =
            t.ty.bytes(n)
                .ok_or_else(|| bad(format!("tensor {}", t.name)))?;
        let data = &bytes[start..start + len];
        // ggml dims are innermost first: rows of `dims[0]` values.
        let shape: Vec<usize> = t.dims.iter().rev().copied().collect();
        if t.ty == GgmlType::F16 && t.dims.len() == 2 && t.dims[0] % Q8_0_BLOCK == 0 {
            ggml::write_tensor_header(&mut out, &t.name, &shape, GgmlType::Q8_0)
                .map_err(ModelError::Write)?;
            let values: Vec<f32> = data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            q8_0(&values, &mut out);
            quantized += 1;
        } else {
            out.extend_from_slice(&bytes[start - header_len(t)..start + len]);
            kept += 1;
        }
    }

    let tmp = dst.with_extension("bin.part");
    let mut file = std::fs::File::create(&tmp).map_err(ModelError::io(&tmp))?;
    file.write_all(&out).map_err(ModelError::io(&tmp))?;
    file.sync_all().map_err(ModelError::io(&tmp))?;
    std::fs::rename(&tmp, dst).map_err(ModelError::io(dst))?;
    Ok(QuantizeSummary {
        quantized,
        kept,
        bytes_in: bytes.len() as u64,
        bytes_out: out.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_ggml_reference_rounding() {
        let mut values: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 8.0).collect();
        values[5] = -2.54;
        let mut out = Vec::new();
        q8_0(&values, &mut out);
        assert_eq!(out.len(), 34);
        let d = f16::from_le_bytes([out[0], out[1]]).to_f32();
        assert!((d - 2.54 / 127.0).abs() < 1e-4, "scale {d}");
        // The largest magnitude maps to ±127; the others round half away
        // from zero (C `roundf`).
        assert_eq!(out[2 + 5] as i8, -127);
        assert_eq!(out[2 + 16] as i8, 0);
        let q17 = out[2 + 17] as i8;
        assert_eq!(q17, (0.125f32 / (2.54 / 127.0)).round() as i8);
        for (j, v) in values.iter().enumerate() {
            let back = f32::from(out[2 + j] as i8) * d;
            // Half a step, plus what storing the scale as f16 moved it by
            // (values are quantised with the f32 scale, as ggml does).
            assert!((back - v).abs() <= 0.6 * d, "value {j}: {v} → {back}");
        }
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let mut out = Vec::new();
        q8_0(&[0.0; 32], &mut out);
        assert_eq!(out, vec![0u8; 34]);
    }
}
