//! CTranslate2 Whisper (`WhisperSpec` revision 3) → whisper.cpp ggml.
//!
//! The two formats hold the same weights under different names and with a
//! few structural differences, all handled here:
//! - CT2 fuses projections: self-attention `linear_0` is Q|K|V stacked by
//!   rows, cross-attention `linear_0` is Q and `linear_1` is K|V. whisper.cpp
//!   wants them apart.
//! - CT2 stores a bias for keys (always zero, Whisper has none); whisper.cpp
//!   has no key-bias tensor, so it is checked to be zero and dropped.
//! - CT2 ties the output projection to the token embedding through an alias;
//!   whisper.cpp does the same implicitly, so the alias is not written.
//! - Types follow `convert-pt-to-ggml.py`: 1-D tensors, conv biases (reshaped
//!   to `[n, 1]`) and both positional embeddings in f32, everything else f16.
//!
//! Tensors are written in openai-whisper's `state_dict` order. Every CT2
//! variable must be either converted or a known, unused option; anything
//! else is an error, so a layout change cannot slip through silently.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;

use half::{bf16, f16};

use super::ct2::{Ct2Model, DType, Variable};
use super::error::ModelError;
use super::ggml::{self, GgmlType, Hparams};
use super::mel::mel_filters;
use super::quantize;
use super::vocab::ggml_vocabulary;

/// Whisper's audio front end: 16 kHz, 400-sample FFT.
const SAMPLE_RATE: u32 = 16_000;
const N_FFT: usize = 400;

/// CT2 variables that describe runtime options whisper.cpp does not read
/// (it has its own alignment-head presets).
const IGNORED: &[&str] = &["decoder/alignment_heads", "decoder/alignment_layer"];

/// The alias CT2 writes for the tied output projection.
const TIED_PROJECTION: (&str, &str) = ("decoder/projection/weight", "decoder/embeddings/weight");

/// What a conversion produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionSummary {
    pub hparams: Hparams,
    /// Tensors written (167 for tiny/tiny.en, 245 for base).
    pub n_tensors: usize,
    /// Ordinary tokens written (50256 English-only, 50257 multilingual).
    pub n_tokens: usize,
}

/// Converts a parsed CT2 Whisper model and its `vocabulary.txt` into a ggml
/// file written to `out`. Deterministic: the same input gives the same bytes.
pub fn convert_ct2_to_ggml(
    model: &Ct2Model<'_>,
    vocabulary_txt: &[u8],
    out: &mut impl Write,
) -> Result<ConversionSummary, ModelError> {
    if model.spec_name != "WhisperSpec" || model.spec_revision != 3 {
        return Err(ModelError::UnsupportedSpec {
            name: model.spec_name.clone(),
            revision: model.spec_revision,
        });
    }
    // Quantised weights first: their error is the one a user needs to see.
    for v in &model.variables {
        if !v.shape.is_empty() && !v.dtype.is_float() {
            return Err(ModelError::Quantized {
                name: v.name.clone(),
                dtype: v.dtype.name(),
            });
        }
    }
    for (alias, target) in &model.aliases {
        if (alias.as_str(), target.as_str()) != TIED_PROJECTION {
            return Err(ModelError::UnexpectedVariable(format!(
                "{alias} (alias of {target})"
            )));
        }
    }

    let mut plan = Planner::new(model);
    let hparams = plan.hparams()?;
    plan.check_options()?;
    plan.encoder(&hparams)?;
    plan.decoder(&hparams)?;
    plan.finish()?;

    let tokens = ggml_vocabulary(vocabulary_txt, hparams.n_vocab as usize)?;
    let n_mels = hparams.n_mels as usize;
    let filters = mel_filters(SAMPLE_RATE, N_FFT, n_mels);

    let io = ModelError::Write;
    ggml::write_header(out, &hparams).map_err(io)?;
    ggml::write_mel_filters(out, n_mels, N_FFT / 2 + 1, &filters).map_err(io)?;
    ggml::write_vocabulary(out, &tokens).map_err(io)?;
    for t in &plan.tensors {
        ggml::write_tensor_header(out, &t.name, &t.shape, t.ty).map_err(io)?;
        out.write_all(&t.encode()).map_err(io)?;
    }
    Ok(ConversionSummary {
        hparams,
        n_tensors: plan.tensors.len(),
        n_tokens: tokens.len(),
    })
}

/// One ggml tensor: part `part` of `parts` equal row blocks of a CT2 variable.
struct Planned<'m, 'a> {
    name: String,
    source: &'m Variable<'a>,
    part: usize,
    parts: usize,
    /// numpy shape written to ggml.
    shape: Vec<usize>,
    ty: GgmlType,
}

impl<'a> Planned<'_, 'a> {
    fn elements(&self) -> (usize, usize) {
        let n = self.source.len() / self.parts;
        (self.part * n, n)
    }

    /// The tensor's data in its ggml type (borrowed when no conversion is
    /// needed, which is the case for all the big f16 weights).
    fn encode(&self) -> Cow<'a, [u8]> {
        let (start, n) = self.elements();
        let src = self.source;
        let es = src.dtype.size();
        let bytes = &src.data[start * es..(start + n) * es];
        match (src.dtype, self.ty) {
            (DType::F16, GgmlType::F16) | (DType::F32, GgmlType::F32) => Cow::Borrowed(bytes),
            (_, ty) => {
                let mut out = Vec::with_capacity(ty.bytes(n).unwrap_or(0));
                match ty {
                    GgmlType::F32 => {
                        for v in floats(src.dtype, bytes) {
                            out.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                    GgmlType::F16 => {
                        for v in floats(src.dtype, bytes) {
                            out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
                        }
                    }
                    GgmlType::Q8_0 => {
                        let values: Vec<f32> = floats(src.dtype, bytes).collect();
                        quantize::q8_0(&values, &mut out);
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

/// Decodes float elements (the planner has checked the dtype is a float).
fn floats(dtype: DType, bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    let es = dtype.size();
    bytes.chunks_exact(es).map(move |b| match dtype {
        DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    })
}

/// Builds the ordered tensor list, checking shapes and recording which CT2
/// variables were used.
struct Planner<'m, 'a> {
    model: &'m Ct2Model<'a>,
    used: HashSet<&'m str>,
    tensors: Vec<Planned<'m, 'a>>,
}

impl<'m, 'a> Planner<'m, 'a> {
    fn new(model: &'m Ct2Model<'a>) -> Self {
        Planner {
            model,
            used: HashSet::new(),
            tensors: Vec::new(),
        }
    }

    fn get(&mut self, name: &str) -> Result<&'m Variable<'a>, ModelError> {
        let v = self
            .model
            .get(name)
            .ok_or_else(|| ModelError::MissingVariable(name.to_string()))?;
        self.used.insert(v.name.as_str());
        Ok(v)
    }

    fn shaped(&mut self, name: &str, shape: &[usize]) -> Result<&'m Variable<'a>, ModelError> {
        let v = self.get(name)?;
        if v.shape != shape {
            return Err(ModelError::BadShape {
                name: name.to_string(),
                actual: v.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(v)
    }

    fn scalar(&mut self, name: &str) -> Result<i64, ModelError> {
        let v = self.get(name)?;
        v.scalar_int().ok_or_else(|| ModelError::BadShape {
            name: name.to_string(),
            actual: v.shape.clone(),
            expected: vec![],
        })
    }

    /// Number of `{prefix}/layer_N` blocks, N = 0, 1, … without gaps.
    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let p = format!("{prefix}/layer_{i}/");
                self.model.variables.iter().any(|v| v.name.starts_with(&p))
            })
            .count()
    }

    fn hparams(&mut self) -> Result<Hparams, ModelError> {
        let conv1 = self.get("encoder/conv1/weight")?;
        let (n_audio_state, n_mels) = match conv1.shape[..] {
            [s, m, 3] => (s, m),
            _ => {
                return Err(ModelError::BadShape {
                    name: conv1.name.clone(),
                    actual: conv1.shape.clone(),
                    expected: vec![384, 80, 3],
                })
            }
        };
        let dim0 = |v: &Variable<'_>, rank: usize| -> Result<usize, ModelError> {
            match v.shape.len() == rank {
                true => Ok(v.shape[0]),
                false => Err(ModelError::BadShape {
                    name: v.name.clone(),
                    actual: v.shape.clone(),
                    expected: vec![0; rank],
                }),
            }
        };
        let n_audio_ctx = dim0(self.get("encoder/position_encodings/encodings")?, 2)?;
        let emb = self.get("decoder/embeddings/weight")?;
        let n_vocab = dim0(emb, 2)?;
        let n_text_state = emb.shape[1];
        let n_text_ctx = dim0(self.get("decoder/position_encodings/encodings")?, 2)?;
        if n_text_state != n_audio_state {
            return Err(ModelError::Inconsistent(format!(
                "decoder width {n_text_state} differs from encoder width {n_audio_state}"
            )));
        }
        let n_audio_head = self.scalar("encoder/num_heads")?;
        let n_text_head = self.scalar("decoder/num_heads")?;
        let to_i32 = |name: &str, v: usize| -> Result<i32, ModelError> {
            i32::try_from(v).map_err(|_| {
                ModelError::Inconsistent(format!("{name} = {v} does not fit a ggml header"))
            })
        };
        let heads = |name: &str, v: i64, state: usize| -> Result<i32, ModelError> {
            if v <= 0 || state % v as usize != 0 {
                return Err(ModelError::Inconsistent(format!(
                    "{name} = {v} does not divide the width {state}"
                )));
            }
            Ok(v as i32)
        };
        Ok(Hparams {
            n_vocab: to_i32("n_vocab", n_vocab)?,
            n_audio_ctx: to_i32("n_audio_ctx", n_audio_ctx)?,
            n_audio_state: to_i32("n_audio_state", n_audio_state)?,
            n_audio_head: heads("encoder/num_heads", n_audio_head, n_audio_state)?,
            n_audio_layer: to_i32("n_audio_layer", self.count_layers("encoder"))?,
            n_text_ctx: to_i32("n_text_ctx", n_text_ctx)?,
            n_text_state: to_i32("n_text_state", n_text_state)?,
            n_text_head: heads("decoder/num_heads", n_text_head, n_text_state)?,
            n_text_layer: to_i32("n_text_layer", self.count_layers("decoder"))?,
            n_mels: to_i32("n_mels", n_mels)?,
            ftype: 1,
        })
    }

    /// The decoder options must describe the plain Whisper decoder, the only
    /// one whisper.cpp implements.
    fn check_options(&mut self) -> Result<(), ModelError> {
        for (name, expected) in [
            ("decoder/pre_norm", 1),
            ("decoder/activation", 3), // CT2 ActivationType::GELU
            ("decoder/alibi", 0),
            ("decoder/scale_embeddings", 0),
            ("decoder/start_from_zero_embedding", 0),
        ] {
            let value = self.scalar(name)?;
            if value != expected {
                return Err(ModelError::UnsupportedOption {
                    name: name.to_string(),
                    value,
                    expected,
                });
            }
        }
        for name in IGNORED {
            self.get(name)?;
        }
        Ok(())
    }

    fn push(
        &mut self,
        name: String,
        source: &'m Variable<'a>,
        part: usize,
        parts: usize,
        shape: Vec<usize>,
    ) {
        // convert-pt-to-ggml.py: small and positional tensors stay f32.
        let ty = if shape.len() < 2
            || name.ends_with("conv1.bias")
            || name.ends_with("conv2.bias")
            || name.ends_with("positional_embedding")
        {
            GgmlType::F32
        } else {
            GgmlType::F16
        };
        self.tensors.push(Planned {
            name,
            source,
            part,
            parts,
            shape,
            ty,
        });
    }

    /// A CT2 variable converted whole, reshaped to `shape` (same size).
    fn whole(
        &mut self,
        ggml: &str,
        ct2: &str,
        ct2_shape: &[usize],
        shape: &[usize],
    ) -> Result<(), ModelError> {
        let v = self.shaped(ct2, ct2_shape)?;
        self.push(ggml.to_string(), v, 0, 1, shape.to_vec());
        Ok(())
    }

    /// A linear layer: `{ct2}/weight` [out, in] and `{ct2}/bias` [out].
    fn linear(&mut self, ggml: &str, ct2: &str, out: usize, inp: usize) -> Result<(), ModelError> {
        self.whole(
            &format!("{ggml}.weight"),
            &format!("{ct2}/weight"),
            &[out, inp],
            &[out, inp],
        )?;
        self.whole(
            &format!("{ggml}.bias"),
            &format!("{ct2}/bias"),
            &[out],
            &[out],
        )
    }

    fn layer_norm(&mut self, ggml: &str, ct2: &str, n: usize) -> Result<(), ModelError> {
        self.whole(
            &format!("{ggml}.weight"),
            &format!("{ct2}/gamma"),
            &[n],
            &[n],
        )?;
        self.whole(&format!("{ggml}.bias"), &format!("{ct2}/beta"), &[n], &[n])
    }

    /// Splits a fused projection of `names.len()` blocks of `n` rows each into
    /// `{ggml}.{name}`; the key's bias must be zero and is dropped.
    fn fused(&mut self, ggml: &str, ct2: &str, names: &[&str], n: usize) -> Result<(), ModelError> {
        let parts = names.len();
        let w = self.shaped(&format!("{ct2}/weight"), &[parts * n, n])?;
        let b = self.shaped(&format!("{ct2}/bias"), &[parts * n])?;
        for (part, name) in names.iter().enumerate() {
            self.push(format!("{ggml}.{name}.weight"), w, part, parts, vec![n, n]);
            if *name == "key" {
                let bytes = &b.data[part * n * b.dtype.size()..(part + 1) * n * b.dtype.size()];
                let max = floats(b.dtype, bytes).fold(0.0f32, |m, v| m.max(v.abs()));
                if max != 0.0 || floats(b.dtype, bytes).any(f32::is_nan) {
                    return Err(ModelError::NonZeroKeyBias {
                        name: b.name.clone(),
                        max,
                    });
                }
            } else {
                self.push(format!("{ggml}.{name}.bias"), b, part, parts, vec![n]);
            }
        }
        Ok(())
    }

    fn mlp(&mut self, ggml: &str, ct2: &str, n: usize) -> Result<(), ModelError> {
        self.linear(
            &format!("{ggml}.mlp.0"),
            &format!("{ct2}/ffn/linear_0"),
            4 * n,
            n,
        )?;
        self.linear(
            &format!("{ggml}.mlp.2"),
            &format!("{ct2}/ffn/linear_1"),
            n,
            4 * n,
        )?;
        self.layer_norm(
            &format!("{ggml}.mlp_ln"),
            &format!("{ct2}/ffn/layer_norm"),
            n,
        )
    }

    fn self_attention(&mut self, ggml: &str, ct2: &str, n: usize) -> Result<(), ModelError> {
        let sa = format!("{ct2}/self_attention");
        self.fused(
            &format!("{ggml}.attn"),
            &format!("{sa}/linear_0"),
            &["query", "key", "value"],
            n,
        )?;
        self.linear(&format!("{ggml}.attn.out"), &format!("{sa}/linear_1"), n, n)?;
        self.layer_norm(&format!("{ggml}.attn_ln"), &format!("{sa}/layer_norm"), n)
    }

    fn encoder(&mut self, h: &Hparams) -> Result<(), ModelError> {
        let (s, m, ctx) = (
            h.n_audio_state as usize,
            h.n_mels as usize,
            h.n_audio_ctx as usize,
        );
        self.whole(
            "encoder.positional_embedding",
            "encoder/position_encodings/encodings",
            &[ctx, s],
            &[ctx, s],
        )?;
        self.whole(
            "encoder.conv1.weight",
            "encoder/conv1/weight",
            &[s, m, 3],
            &[s, m, 3],
        )?;
        self.whole("encoder.conv1.bias", "encoder/conv1/bias", &[s], &[s, 1])?;
        self.whole(
            "encoder.conv2.weight",
            "encoder/conv2/weight",
            &[s, s, 3],
            &[s, s, 3],
        )?;
        self.whole("encoder.conv2.bias", "encoder/conv2/bias", &[s], &[s, 1])?;
        for i in 0..h.n_audio_layer {
            let (g, c) = (format!("encoder.blocks.{i}"), format!("encoder/layer_{i}"));
            self.self_attention(&g, &c, s)?;
            self.mlp(&g, &c, s)?;
        }
        self.layer_norm("encoder.ln_post", "encoder/layer_norm", s)
    }

    fn decoder(&mut self, h: &Hparams) -> Result<(), ModelError> {
        let (t, ctx, v) = (
            h.n_text_state as usize,
            h.n_text_ctx as usize,
            h.n_vocab as usize,
        );
        self.whole(
            "decoder.positional_embedding",
            "decoder/position_encodings/encodings",
            &[ctx, t],
            &[ctx, t],
        )?;
        self.whole(
            "decoder.token_embedding.weight",
            "decoder/embeddings/weight",
            &[v, t],
            &[v, t],
        )?;
        for i in 0..h.n_text_layer {
            let (g, c) = (format!("decoder.blocks.{i}"), format!("decoder/layer_{i}"));
            self.self_attention(&g, &c, t)?;
            let ca = format!("{c}/attention");
            self.linear(
                &format!("{g}.cross_attn.query"),
                &format!("{ca}/linear_0"),
                t,
                t,
            )?;
            self.fused(
                &format!("{g}.cross_attn"),
                &format!("{ca}/linear_1"),
                &["key", "value"],
                t,
            )?;
            self.linear(
                &format!("{g}.cross_attn.out"),
                &format!("{ca}/linear_2"),
                t,
                t,
            )?;
            self.layer_norm(
                &format!("{g}.cross_attn_ln"),
                &format!("{ca}/layer_norm"),
                t,
            )?;
            self.mlp(&g, &c, t)?;
        }
        self.layer_norm("decoder.ln", "decoder/layer_norm", t)
    }

    /// Every CT2 variable must have been used.
    fn finish(&self) -> Result<(), ModelError> {
        match self
            .model
            .variables
            .iter()
            .find(|v| !self.used.contains(v.name.as_str()))
        {
            Some(v) => Err(ModelError::UnexpectedVariable(v.name.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::model::ggml::read_ggml_info;

    /// A CT2 variable for the synthetic model: name, shape, dtype id, bytes.
    type Var = (String, Vec<usize>, u8, Vec<u8>);

    fn f16s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values
            .into_iter()
            .flat_map(|v| f16::from_f32(v).to_le_bytes())
            .collect()
    }

    /// `model.bin` bytes as CTranslate2 writes them.
    fn ct2_bytes(vars: &[Var], aliases: &[(&str, &str)]) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        let mut vars = vars.to_vec();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = 6u32.to_le_bytes().to_vec();
        string(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        for (name, shape, dtype, data) in &vars {
            string(&mut out, name);
            out.push(shape.len() as u8);
            for d in shape {
                out.extend_from_slice(&(*d as u32).to_le_bytes());
            }
            out.push(*dtype);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
        for (a, t) in aliases {
            string(&mut out, a);
            string(&mut out, t);
        }
        out
    }

    const S: usize = 8; // width
    const VOCAB: usize = 51864;

    /// A complete, tiny WhisperSpec: width 8, 2 heads, 1+1 layers, 4 mels.
    /// Fused projections hold their part number + 1 so splits are visible;
    /// everything else holds a value derived from its position.
    fn whisper_vars() -> Vec<Var> {
        let f = |name: &str, shape: &[usize]| -> Var {
            let n: usize = shape.iter().product();
            let data = f16s((0..n).map(|i| (i % 7) as f32 * 0.25 - 0.5));
            (name.to_string(), shape.to_vec(), 4, data)
        };
        let fused = |name: &str, parts: usize, zero_key: Option<usize>| -> [Var; 2] {
            let w = f16s((0..parts * S * S).map(|i| (i / (S * S) + 1) as f32));
            let b = f16s((0..parts * S).map(|i| {
                let part = i / S;
                if Some(part) == zero_key {
                    0.0
                } else {
                    (part + 1) as f32
                }
            }));
            [
                (format!("{name}/weight"), vec![parts * S, S], 4, w),
                (format!("{name}/bias"), vec![parts * S], 4, b),
            ]
        };
        let scalar = |name: &str, dtype: u8, bytes: &[u8]| -> Var {
            (name.to_string(), vec![], dtype, bytes.to_vec())
        };
        let mut v = vec![
            f("encoder/conv1/weight", &[S, 4, 3]),
            f("encoder/conv1/bias", &[S]),
            f("encoder/conv2/weight", &[S, S, 3]),
            f("encoder/conv2/bias", &[S]),
            f("encoder/position_encodings/encodings", &[10, S]),
            f("encoder/layer_norm/gamma", &[S]),
            f("encoder/layer_norm/beta", &[S]),
            scalar("encoder/num_heads", 2, &2i16.to_le_bytes()),
            f("decoder/embeddings/weight", &[VOCAB, S]),
            f("decoder/position_encodings/encodings", &[6, S]),
            f("decoder/layer_norm/gamma", &[S]),
            f("decoder/layer_norm/beta", &[S]),
            scalar("decoder/num_heads", 2, &2i16.to_le_bytes()),
            scalar("decoder/activation", 1, &[3]),
            scalar("decoder/alibi", 1, &[0]),
            scalar("decoder/alignment_heads", 2, &[1, 0]),
            scalar("decoder/alignment_layer", 2, &[0xff, 0xff]),
            scalar("decoder/pre_norm", 1, &[1]),
            scalar("decoder/scale_embeddings", 1, &[0]),
            scalar("decoder/start_from_zero_embedding", 1, &[0]),
        ];
        for side in ["encoder", "decoder"] {
            let l = format!("{side}/layer_0");
            v.extend(fused(&format!("{l}/self_attention/linear_0"), 3, Some(1)));
            v.push(f(&format!("{l}/self_attention/linear_1/weight"), &[S, S]));
            v.push(f(&format!("{l}/self_attention/linear_1/bias"), &[S]));
            for ln in ["self_attention/layer_norm", "ffn/layer_norm"] {
                v.push(f(&format!("{l}/{ln}/gamma"), &[S]));
                v.push(f(&format!("{l}/{ln}/beta"), &[S]));
            }
            v.push(f(&format!("{l}/ffn/linear_0/weight"), &[4 * S, S]));
            v.push(f(&format!("{l}/ffn/linear_0/bias"), &[4 * S]));
            v.push(f(&format!("{l}/ffn/linear_1/weight"), &[S, 4 * S]));
            v.push(f(&format!("{l}/ffn/linear_1/bias"), &[S]));
        }
        let a = "decoder/layer_0/attention";
        v.push(f(&format!("{a}/linear_0/weight"), &[S, S]));
        v.push(f(&format!("{a}/linear_0/bias"), &[S]));
        v.extend(fused(&format!("{a}/linear_1"), 2, Some(0)));
        v.push(f(&format!("{a}/linear_2/weight"), &[S, S]));
        v.push(f(&format!("{a}/linear_2/bias"), &[S]));
        v.push(f(&format!("{a}/layer_norm/gamma"), &[S]));
        v.push(f(&format!("{a}/layer_norm/beta"), &[S]));
        v
    }

    fn vocabulary() -> Vec<u8> {
        let mut out = Vec::new();
        for id in 0..VOCAB {
            let tok = match id {
                50256 => "<|endoftext|>".to_string(),
                i if i > 50256 => format!("<|x{i}|>"),
                i => format!("t{i}"),
            };
            out.extend_from_slice(tok.as_bytes());
            out.push(b'\n');
        }
        out
    }

    const ALIAS: (&str, &str) = TIED_PROJECTION;

    fn convert_bytes(model_bin: &[u8]) -> Result<(ConversionSummary, Vec<u8>), ModelError> {
        let ct2 = Ct2Model::parse(model_bin)?;
        let mut out = Vec::new();
        let summary = convert_ct2_to_ggml(&ct2, &vocabulary(), &mut out)?;
        Ok((summary, out))
    }

    fn set(vars: &mut [Var], name: &str, dtype: u8, data: Vec<u8>) {
        let v = vars.iter_mut().find(|v| v.0 == name).unwrap();
        v.2 = dtype;
        v.3 = data;
    }

    #[test]
    fn converts_to_whisper_cpp_layout_and_splits_fused_projections() {
        let (summary, bytes) = convert_bytes(&ct2_bytes(&whisper_vars(), &[ALIAS])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        std::fs::write(&path, &bytes).unwrap();
        let info = read_ggml_info(&path).unwrap();

        let h = info.hparams;
        assert_eq!(h, summary.hparams);
        assert_eq!(
            (
                h.n_vocab,
                h.n_audio_ctx,
                h.n_audio_state,
                h.n_audio_head,
                h.n_audio_layer
            ),
            (VOCAB as i32, 10, S as i32, 2, 1)
        );
        assert_eq!(
            (h.n_text_ctx, h.n_text_state, h.n_text_head, h.n_text_layer),
            (6, 8, 2, 1)
        );
        assert_eq!((h.n_mels, h.ftype), (4, 1));
        assert_eq!((info.n_mel, info.n_fft), (4, 201));
        assert_eq!(info.mel_filters, mel_filters(16_000, 400, 4));
        assert_eq!(info.vocabulary.len(), 50256);
        assert_eq!(info.vocabulary[7], b"t7");
        // 7 + 15 per encoder layer + 4 + 24 per decoder layer.
        assert_eq!(info.tensors.len(), 7 + 15 + 4 + 24);
        assert_eq!(summary.n_tensors, info.tensors.len());

        let t = |name: &str| info.tensors.iter().find(|t| t.name == name).unwrap();
        assert_eq!(info.tensors[0].name, "encoder.positional_embedding");
        assert_eq!(t("encoder.positional_embedding").ty, GgmlType::F32);
        assert_eq!(t("encoder.conv1.weight").dims, [3, 4, S]);
        assert_eq!(t("encoder.conv1.weight").ty, GgmlType::F16);
        assert_eq!(t("encoder.conv1.bias").dims, [1, S]);
        assert_eq!(t("encoder.conv1.bias").ty, GgmlType::F32);
        assert_eq!(t("encoder.blocks.0.mlp.0.weight").dims, [S, 4 * S]);
        assert_eq!(t("decoder.token_embedding.weight").dims, [S, VOCAB]);
        assert_eq!(t("decoder.ln.bias").ty, GgmlType::F32);
        for gone in [
            "encoder.blocks.0.attn.key.bias",
            "decoder.blocks.0.cross_attn.key.bias",
        ] {
            assert!(info.tensors.iter().all(|t| t.name != gone));
        }
        assert!(info.tensors.iter().all(|t| !t.name.contains("projection")));

        // Fused rows: Q|K|V hold 1, 2, 3 and K|V hold 1, 2.
        let first_f16 = |name: &str| {
            let o = t(name).offset as usize;
            f16::from_le_bytes([bytes[o], bytes[o + 1]]).to_f32()
        };
        let first_f32 = |name: &str| {
            let o = t(name).offset as usize;
            f32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
        };
        for (side, kv) in [
            ("encoder.blocks.0.attn", 1.0),
            ("decoder.blocks.0.attn", 1.0),
        ] {
            assert_eq!(first_f16(&format!("{side}.query.weight")), kv);
            assert_eq!(first_f16(&format!("{side}.key.weight")), 2.0);
            assert_eq!(first_f16(&format!("{side}.value.weight")), 3.0);
            assert_eq!(first_f32(&format!("{side}.query.bias")), 1.0);
            assert_eq!(first_f32(&format!("{side}.value.bias")), 3.0);
        }
        assert_eq!(first_f16("decoder.blocks.0.cross_attn.key.weight"), 1.0);
        assert_eq!(first_f16("decoder.blocks.0.cross_attn.value.weight"), 2.0);
        assert_eq!(first_f32("decoder.blocks.0.cross_attn.value.bias"), 2.0);
    }

    #[test]
    fn conversion_is_deterministic() {
        let bin = ct2_bytes(&whisper_vars(), &[ALIAS]);
        assert_eq!(
            convert_bytes(&bin).unwrap().1,
            convert_bytes(&bin).unwrap().1
        );
    }

    #[test]
    fn float32_and_bfloat16_sources_give_the_same_file() {
        let reference = convert_bytes(&ct2_bytes(&whisper_vars(), &[ALIAS]))
            .unwrap()
            .1;
        for (dtype, width) in [(0u8, 4usize), (5, 2)] {
            let vars: Vec<Var> = whisper_vars()
                .into_iter()
                .map(|(name, shape, d, data)| {
                    if d != 4 {
                        return (name, shape, d, data);
                    }
                    let data = data
                        .chunks_exact(2)
                        .flat_map(|b| {
                            let v = f16::from_le_bytes([b[0], b[1]]).to_f32();
                            let b32 = v.to_le_bytes();
                            // All test values are exact in bfloat16 too.
                            if width == 4 {
                                b32.to_vec()
                            } else {
                                b32[2..].to_vec()
                            }
                        })
                        .collect();
                    (name, shape, dtype, data)
                })
                .collect();
            assert_eq!(
                convert_bytes(&ct2_bytes(&vars, &[ALIAS])).unwrap().1,
                reference
            );
        }
    }

    #[test]
    fn nonzero_key_bias_is_refused() {
        let mut vars = whisper_vars();
        let mut bias = f16s((0..3 * S).map(|i| if i / S == 1 { 0.0 } else { 1.0 }));
        // Element S + 3 is in the key block (2 bytes per element).
        bias[2 * (S + 3)..2 * (S + 4)].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        set(
            &mut vars,
            "encoder/layer_0/self_attention/linear_0/bias",
            4,
            bias,
        );
        assert!(matches!(
            convert_bytes(&ct2_bytes(&vars, &[ALIAS])),
            Err(ModelError::NonZeroKeyBias { .. })
        ));
    }

    #[test]
    fn int8_models_get_a_clear_error() {
        let mut vars = whisper_vars();
        set(&mut vars, "encoder/conv2/weight", 1, vec![0; S * S * 3]);
        let err = convert_bytes(&ct2_bytes(&vars, &[ALIAS])).unwrap_err();
        assert!(matches!(err, ModelError::Quantized { .. }), "{err}");
        assert!(err.to_string().contains("int8"));
    }

    #[test]
    fn layout_surprises_are_errors() {
        let mut extra = whisper_vars();
        extra.push((
            "decoder/layer_0/extra/weight".into(),
            vec![1],
            4,
            vec![0, 0],
        ));
        assert!(matches!(
            convert_bytes(&ct2_bytes(&extra, &[ALIAS])),
            Err(ModelError::UnexpectedVariable(_))
        ));

        let missing: Vec<Var> = whisper_vars()
            .into_iter()
            .filter(|v| v.0 != "decoder/layer_0/attention/linear_2/bias")
            .collect();
        assert!(matches!(
            convert_bytes(&ct2_bytes(&missing, &[ALIAS])),
            Err(ModelError::MissingVariable(_))
        ));

        let mut wide = whisper_vars();
        let v = wide
            .iter_mut()
            .find(|v| v.0 == "encoder/layer_0/ffn/linear_0/bias")
            .unwrap();
        v.1 = vec![4 * S + 2];
        v.3 = f16s((0..4 * S + 2).map(|_| 0.0));
        assert!(matches!(
            convert_bytes(&ct2_bytes(&wide, &[ALIAS])),
            Err(ModelError::BadShape { .. })
        ));

        let mut scaled = whisper_vars();
        set(&mut scaled, "decoder/scale_embeddings", 1, vec![1]);
        assert!(matches!(
            convert_bytes(&ct2_bytes(&scaled, &[ALIAS])),
            Err(ModelError::UnsupportedOption { .. })
        ));

        assert!(matches!(
            convert_bytes(&ct2_bytes(&whisper_vars(), &[ALIAS, ("x", "y")])),
            Err(ModelError::UnexpectedVariable(_))
        ));
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let bin = ct2_bytes(&whisper_vars(), &[ALIAS]);
        for cut in [0, 3, 10, 200, bin.len() / 2, bin.len() - 1] {
            assert!(Ct2Model::parse(&bin[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bin.clone();
        long.push(0);
        assert!(matches!(
            Ct2Model::parse(&long),
            Err(ModelError::TrailingBytes(1))
        ));
        let mut v5 = bin.clone();
        v5[0] = 5;
        assert!(matches!(
            Ct2Model::parse(&v5),
            Err(ModelError::UnsupportedBinaryVersion(5))
        ));
    }
}
