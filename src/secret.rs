//! Secrets in memory and at rest.
//!
//! [`Secret`] wraps values that must never reach logs: auth tokens, API
//! keys, stream tokens. `Debug` and `Display` print a fixed placeholder; the
//! value is only reachable through an explicit [`Secret::expose`].
//!
//! [`MasterKey`] seals what must be stored: tenant recording keys and
//! provider auth tokens. It lives outside the database (a file or the
//! environment); sealed values are XChaCha20-Poly1305 with a random 192-bit
//! nonce (no counter to keep) and associated data naming what the value is
//! ([`SealDomain`]), the tenant and the row or column, so a sealed value
//! copied to another tenant, another key id or another column fails to open
//! instead of being used in the wrong place.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::Digest;
use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the few places that must use it (HMAC keys, hashing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Why a secret flag given its value on the command line is refused, naming
/// the two ways that keep it out of `ps` and shell history.
pub fn argv_refused(flag: &str) -> String {
    format!(
        "{flag} is not accepted: a secret on the command line is visible to every local user \
         in `ps` and stays in shell history; give it with {flag}-file PATH or {flag}-stdin"
    )
}

/// Reads a secret from `file`, or from standard input when `stdin`; `None`
/// when neither is asked for. Surrounding whitespace (the newline of `echo`)
/// is dropped; an empty secret is an error.
pub fn read_secret(file: Option<&Path>, stdin: bool) -> std::io::Result<Option<Secret>> {
    use std::io::Read;
    let mut text = Zeroizing::new(String::new());
    match (file, stdin) {
        (Some(path), _) => {
            std::fs::File::open(path)?.read_to_string(&mut text)?;
        }
        (None, true) => {
            std::io::stdin().lock().read_to_string(&mut text)?;
        }
        (None, false) => return Ok(None),
    }
    let value = text.trim();
    if value.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the secret is empty",
        ));
    }
    Ok(Some(Secret::new(value)))
}

/// How sealed values are stored (prefix of the stored text).
const SEAL_VERSION: &str = "xc20p1";

/// What a sealed value is: part of its associated data, so a value sealed
/// for one purpose never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealDomain {
    /// A tenant's age identity (`recording_keys.wrapped_secret`), named by
    /// its key id.
    RecordingKey,
    /// A provider credential in a tenant row (e.g. `tenants.twilio_auth_token`),
    /// named by its column.
    ProviderSecret,
}

impl SealDomain {
    fn label(self) -> &'static [u8] {
        match self {
            // The label recording keys have always been sealed with.
            SealDomain::RecordingKey => b"callstream recording key v1\0",
            SealDomain::ProviderSecret => b"callstream provider secret v1\0",
        }
    }
}

/// Why the master key could not be read, made or used. Never carries key
/// bytes or sealed contents.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key must be 64 hex digits (32 bytes)")]
    BadMasterKey,
    #[error("cannot read or create the master key file {path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("a sealed {0} failed to open (corrupt, or sealed for another tenant or row)")]
    Open(String),
}

/// The key that seals every stored secret. Lives in a file or the
/// environment, never in the database; `Debug` shows only its id.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// Parses 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<Self, MasterKeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.trim(), key.as_mut())
            .map_err(|_| MasterKeyError::BadMasterKey)?;
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: Zeroizing<[u8; 32]>) -> Self {
        // A public fingerprint, so a sealed value can say which master key
        // it needs without revealing anything about it.
        let mut h = sha2::Sha256::new();
        h.update(b"callstream master key id v1\0");
        h.update(key.as_ref());
        let id = hex::encode(&h.finalize()[..8]);
        Self { key, id }
    }

    /// Generates a new random master key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(key.as_mut());
        Self::from_bytes(key)
    }

    /// Reads the key file (64 hex digits).
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| MasterKeyError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hex(&Zeroizing::new(text))
    }

    /// Reads the key file, creating it (mode 0600, 64 hex digits) when it
    /// does not exist, so a first `callstream serve` needs no setup.
    pub fn load_or_create(path: &Path) -> Result<Self, MasterKeyError> {
        let err = |source| MasterKeyError::File {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..2 {
            match Self::load(path) {
                Err(MasterKeyError::File { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                other => return other,
            }
            let key = Self::generate();
            match key.write_new(path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), master_key_id = %key.id, "created the master key");
                    return Ok(key);
                }
                // Another process created it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(std::io::Error::other("master key file keeps changing")))
    }

    /// Writes this key to a new file (mode 0600, synced); fails if the file
    /// exists.
    pub fn write_new(&self, path: &Path) -> std::io::Result<()> {
        let hex_key = Zeroizing::new(hex::encode(self.key.as_ref()));
        write_new_private(path, hex_key.as_bytes())
    }

    /// Public fingerprint of this key (stored beside every sealed value).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(domain: SealDomain, tenant_id: &str, name: &str) -> Vec<u8> {
        let mut aad = domain.label().to_vec();
        aad.extend_from_slice(tenant_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(name.as_bytes());
        aad
    }

    /// Seals `secret` for storage as `tenant_id`'s `name` (a key id, a
    /// column) in `domain`.
    pub fn seal(&self, domain: SealDomain, tenant_id: &str, name: &str, secret: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(self.key.as_ref()));
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = Self::aad(domain, tenant_id, name);
        // Encryption into a Vec cannot fail for inputs this small.
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!(
            "{SEAL_VERSION}:{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// Opens what [`seal`](Self::seal) made for the same domain, tenant and
    /// name.
    pub fn open(
        &self,
        domain: SealDomain,
        tenant_id: &str,
        name: &str,
        sealed: &str,
    ) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let bad = || MasterKeyError::Open(name.to_string());
        let blob = sealed
            .strip_prefix(SEAL_VERSION)
            .and_then(|r| r.strip_prefix(':'))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(bad)?;
        let (nonce, ct) = blob.split_at(24);
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(self.key.as_ref()));
        let aad = Self::aad(domain, tenant_id, name);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| bad())
    }
}

/// Takes away any permission of `path` beyond `mode` (e.g. 0o700 for a
/// directory of secrets, 0o600 for a database file); a missing path is
/// fine. Returns whether it changed anything.
pub fn tighten_mode(path: &Path, mode: u32) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if current & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))?;
            return Ok(true);
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(false)
}

/// Creates `dir` and its missing parents with mode 0700, and tightens `dir`
/// itself to 0700 if it exists with looser permissions.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    tighten_mode(dir, 0o700).map(|_| ())
}

/// Creates `path` (and its directory) readable by its owner only, writes
/// `contents` and a newline, and syncs; fails if the file exists.
pub fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            create_private_dir(dir)?;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2-token");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-token");
    }

    #[test]
    fn sealing_is_bound_to_domain_tenant_and_name() {
        use SealDomain::*;
        let m = MasterKey::generate();
        let w = m.seal(ProviderSecret, "t1", "twilio_auth_token", b"secret");
        let open = |d, t, n, w: &str| m.open(d, t, n, w).map(|v| v.to_vec());
        assert_eq!(
            open(ProviderSecret, "t1", "twilio_auth_token", &w).unwrap(),
            b"secret"
        );
        assert!(open(RecordingKey, "t1", "twilio_auth_token", &w).is_err());
        assert!(open(ProviderSecret, "t2", "twilio_auth_token", &w).is_err());
        assert!(open(ProviderSecret, "t1", "other", &w).is_err());
        assert!(MasterKey::generate()
            .open(ProviderSecret, "t1", "twilio_auth_token", &w)
            .is_err());
        assert!(!w.contains("secret"));
        assert!(!format!("{m:?}").contains(&hex::encode(m.key.as_ref())));
    }
}
