//! Reader for CTranslate2's `model.bin` (binary version 6).
//!
//! Layout, all integers little-endian (CTranslate2
//! `python/ctranslate2/specs/model_spec.py`, `ModelSpec._serialize`):
//!
//! ```text
//! u32 binary_version (6)   string spec_name   u32 spec_revision
//! u32 n_variables, then per variable, sorted by name:
//!     string name   u8 rank   u32 dims[rank]   u8 dtype   u32 n_bytes   bytes
//! u32 n_aliases, then per alias: string alias   string target
//! string = u16 length (including a trailing NUL), UTF-8 bytes, NUL
//! ```
//!
//! Variables borrow their bytes from the input, so a 150 MB model is not
//! copied while it is converted.

use super::error::ModelError;

/// The only binary version this reader understands.
pub const BINARY_VERSION: u32 = 6;

/// Element types, in the order of CTranslate2's `DataType` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl DType {
    fn from_id(id: u8) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::BF16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }

    /// CTranslate2's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    /// Floating-point types convert to ggml directly; integer weights are
    /// quantised and would need their scales applied first.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

/// One named array of the model.
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    pub name: String,
    /// Row-major (numpy) shape; empty for scalars.
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl Variable<'_> {
    /// Number of elements (1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of an integer or boolean scalar (CT2 stores flags as int8,
    /// head counts as int16 or int32).
    pub fn scalar_int(&self) -> Option<i64> {
        if !self.shape.is_empty() {
            return None;
        }
        let d = self.data;
        Some(match self.dtype {
            DType::I8 => i8::from_le_bytes([d[0]]) as i64,
            DType::I16 => i16::from_le_bytes([d[0], d[1]]) as i64,
            DType::I32 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => return None,
        })
    }
}

/// A parsed `model.bin`.
#[derive(Debug, Clone)]
pub struct Ct2Model<'a> {
    pub spec_name: String,
    pub spec_revision: u32,
    /// In file order (sorted by name).
    pub variables: Vec<Variable<'a>>,
    /// `(alias, target)`: a variable stored once under `target`.
    pub aliases: Vec<(String, String)>,
}

impl<'a> Ct2Model<'a> {
    /// Parses a whole `model.bin`. Sizes are checked against the shape and
    /// dtype of every variable, and nothing may follow the aliases.
    pub fn parse(bytes: &'a [u8]) -> Result<Ct2Model<'a>, ModelError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u32("binary version")?;
        if version != BINARY_VERSION {
            return Err(ModelError::UnsupportedBinaryVersion(version));
        }
        let spec_name = r.string("spec name")?;
        let spec_revision = r.u32("spec revision")?;
        let n_variables = r.u32("variable count")? as usize;
        let mut variables = Vec::with_capacity(n_variables.min(4096));
        for _ in 0..n_variables {
            let name = r.string("variable name")?;
            let rank = r.u8("rank")? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(r.u32("dimension")? as usize);
            }
            let id = r.u8("dtype")?;
            let dtype = DType::from_id(id).ok_or_else(|| ModelError::UnknownDtype {
                name: name.clone(),
                id,
            })?;
            let n_bytes = r.u32("data size")? as usize;
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .unwrap_or(usize::MAX);
            if n_bytes != expected {
                return Err(ModelError::BadSize {
                    name,
                    actual: n_bytes,
                    expected,
                });
            }
            let data = r.take(n_bytes, &name)?;
            variables.push(Variable {
                name,
                shape,
                dtype,
                data,
            });
        }
        let n_aliases = r.u32("alias count")? as usize;
        let mut aliases = Vec::with_capacity(n_aliases.min(4096));
        for _ in 0..n_aliases {
            let alias = r.string("alias name")?;
            let target = r.string("alias target")?;
            aliases.push((alias, target));
        }
        if r.pos != bytes.len() {
            return Err(ModelError::TrailingBytes(bytes.len() - r.pos));
        }
        Ok(Ct2Model {
            spec_name,
            spec_revision,
            variables,
            aliases,
        })
    }

    /// The variable called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Variable<'a>> {
        // Variables are written sorted by name, but do not rely on it.
        self.variables.iter().find(|v| v.name == name)
    }
}

/// A bounds-checked cursor over the file.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ModelError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ModelError::Truncated {
                what: what.to_string(),
                needed: self.pos.saturating_add(n),
                len: self.bytes.len(),
            }),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, ModelError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ModelError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, ModelError> {
        let len = self.u16(what)? as usize;
        let b = self.take(len, what)?;
        // The length counts a trailing NUL.
        let text = match b.split_last() {
            Some((0, text)) => text,
            _ => {
                return Err(ModelError::Malformed {
                    offset: self.pos,
                    reason: format!("{what} is not NUL-terminated"),
                })
            }
        };
        String::from_utf8(text.to_vec()).map_err(|_| ModelError::Malformed {
            offset: self.pos,
            reason: format!("{what} is not UTF-8"),
        })
    }
}
