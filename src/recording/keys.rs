//! Recording keys: a master key outside the database wraps per-tenant age
//! identities stored inside it.
//!
//! The envelope is age's own: every recording file gets a fresh random file
//! key, wrapped in the file's header to the tenant's X25519 recipient.
//! Writing needs only the public recipient; the tenant's secret identity is
//! unwrapped (in memory, on demand, never cached or logged) to read a
//! recording back, to finalise one, or for an operator's explicit export.
//!
//! Tenant secrets are wrapped with XChaCha20-Poly1305 under the master key,
//! with the tenant id and key id as associated data: a wrapped secret
//! copied to another tenant's row, or another key id, fails to unwrap
//! instead of decrypting the wrong tenant's recordings. A random 192-bit
//! nonce per wrap makes nonce reuse a non-issue without a counter.
//!
//! Rotation: [`Keyring::rotate`] retires the tenant's active key and makes a
//! new one; recordings keep the `key_id` they were written with, and retired
//! keys stay to read them.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::store::{NewRecordingKey, RecordingKey, Store, StoreError};

/// `recordings.algorithm` / `recording_keys.algorithm`: age v1 files, X25519
/// recipient stanza wrapping a per-file key, payload in ChaCha20-Poly1305
/// STREAM chunks of 64 KiB.
pub const ALGORITHM: &str = "age-x25519";

/// How wrapped secrets are stored (prefix of `wrapped_secret`).
const WRAP_VERSION: &str = "xc20p1";

/// Why a key could not be loaded, made or used. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key must be 64 hex digits (32 bytes)")]
    BadMasterKey,
    #[error("cannot read or create the master key file {path}: {source}")]
    MasterKeyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("recording key {key_id} was wrapped by master key {wrapped_by}, but the configured master key is {configured}")]
    WrongMasterKey {
        key_id: String,
        wrapped_by: String,
        configured: String,
    },
    #[error("recording key {0} failed to unwrap (corrupt, or not this tenant's)")]
    Unwrap(String),
    #[error("recording key {0} is not a valid age identity")]
    BadIdentity(String),
    #[error("no such recording key")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => KeyError::NotFound,
            other => KeyError::Store(other),
        }
    }
}

/// The key that wraps every tenant key. Lives in a file or the environment,
/// never in the database; `Debug` shows only its id.
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
    pub fn from_hex(hex_key: &str) -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.trim(), key.as_mut()).map_err(|_| KeyError::BadMasterKey)?;
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: Zeroizing<[u8; 32]>) -> Self {
        // A public fingerprint, so a wrapped key can say which master key
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

    /// Reads the key file, creating it (mode 0600, 64 hex digits) when it
    /// does not exist, so a first `callstream serve` needs no setup.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let err = |source| KeyError::MasterKeyFile {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..2 {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let text = Zeroizing::new(text);
                    return Self::from_hex(&text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
            let key = Self::generate();
            match write_new_private(path, hex::encode(key.key.as_ref()).as_bytes()) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), master_key_id = %key.id, "created the recording master key");
                    return Ok(key);
                }
                // Another process created it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(std::io::Error::other("master key file keeps changing")))
    }

    /// Public fingerprint of this key (stored beside every wrapped secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(tenant_id: &str, key_id: &str) -> Vec<u8> {
        let mut aad = b"callstream recording key v1\0".to_vec();
        aad.extend_from_slice(tenant_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(key_id.as_bytes());
        aad
    }

    /// Wraps `secret` for storage as `tenant_id`'s key `key_id`.
    pub fn wrap(&self, tenant_id: &str, key_id: &str, secret: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(self.key.as_ref()));
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = Self::aad(tenant_id, key_id);
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
            "{WRAP_VERSION}:{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// Unwraps what [`wrap`](Self::wrap) made for the same tenant and key id.
    pub fn unwrap(
        &self,
        tenant_id: &str,
        key_id: &str,
        wrapped: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let bad = || KeyError::Unwrap(key_id.to_string());
        let blob = wrapped
            .strip_prefix(WRAP_VERSION)
            .and_then(|r| r.strip_prefix(':'))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(bad)?;
        let (nonce, ct) = blob.split_at(24);
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(self.key.as_ref()));
        let aad = Self::aad(tenant_id, key_id);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| bad())
    }
}

fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
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

/// A tenant identity ready to decrypt, with the row it came from.
pub struct TenantIdentity {
    pub key: RecordingKey,
    pub identity: age::x25519::Identity,
}

impl TenantIdentity {
    /// The `AGE-SECRET-KEY-1…` string, for an operator's export only.
    pub fn secret_string(&self) -> Secret {
        Secret::new(self.identity.to_string().expose_secret().to_string())
    }
}

/// Tenant keys over the store and the master key. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    store: Store,
    master: std::sync::Arc<MasterKey>,
}

impl Keyring {
    pub fn new(store: Store, master: MasterKey) -> Self {
        Self {
            store,
            master: std::sync::Arc::new(master),
        }
    }

    pub fn master_key_id(&self) -> &str {
        self.master.id()
    }

    /// The tenant's active key (id and public recipient), generated on
    /// first need. Encrypting needs nothing secret.
    pub async fn active(
        &self,
        tenant_id: &str,
    ) -> Result<(RecordingKey, age::x25519::Recipient), KeyError> {
        let key = match self.store.active_recording_key(tenant_id).await? {
            Some(k) => k,
            None => self.generate(tenant_id, false).await?,
        };
        let recipient = age::x25519::Recipient::from_str(&key.recipient)
            .map_err(|_| KeyError::BadIdentity(key.id.clone()))?;
        Ok((key, recipient))
    }

    /// Retires the active key (if any) and makes a new one.
    pub async fn rotate(&self, tenant_id: &str) -> Result<RecordingKey, KeyError> {
        self.generate(tenant_id, true).await
    }

    async fn generate(&self, tenant_id: &str, rotate: bool) -> Result<RecordingKey, KeyError> {
        let id = crate::store::new_id();
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let wrapped = self.master.wrap(
            tenant_id,
            &id,
            identity.to_string().expose_secret().as_bytes(),
        );
        let new = NewRecordingKey {
            id: &id,
            algorithm: ALGORITHM,
            recipient: &recipient,
            wrapped_secret: &wrapped,
            master_key_id: self.master.id(),
        };
        match self
            .store
            .add_recording_key(tenant_id, &new, rotate, crate::store::now_ms())
            .await
        {
            Ok(k) => {
                tracing::info!(tenant_id, key_id = %k.id, rotate, "recording key created");
                Ok(k)
            }
            // Another first use won the race: theirs is the key.
            Err(StoreError::Conflict(_)) if !rotate => self
                .store
                .active_recording_key(tenant_id)
                .await?
                .ok_or(KeyError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// The secret identity of one of the tenant's keys.
    pub async fn identity(
        &self,
        tenant_id: &str,
        key_id: &str,
    ) -> Result<TenantIdentity, KeyError> {
        let key = self.store.recording_key(tenant_id, key_id).await?;
        self.open(key)
    }

    /// Every key of the tenant (oldest first), unwrapped; the active one is
    /// generated if the tenant has none yet. For the operator's export.
    pub async fn identities(&self, tenant_id: &str) -> Result<Vec<TenantIdentity>, KeyError> {
        self.active(tenant_id).await?;
        let keys = self.store.recording_keys(tenant_id).await?;
        keys.into_iter().map(|k| self.open(k)).collect()
    }

    fn open(&self, key: RecordingKey) -> Result<TenantIdentity, KeyError> {
        if key.master_key_id != self.master.id() {
            return Err(KeyError::WrongMasterKey {
                key_id: key.id,
                wrapped_by: key.master_key_id,
                configured: self.master.id().to_string(),
            });
        }
        let secret = self
            .master
            .unwrap(&key.tenant_id, &key.id, &key.wrapped_secret)?;
        let text =
            std::str::from_utf8(&secret).map_err(|_| KeyError::BadIdentity(key.id.clone()))?;
        let identity = age::x25519::Identity::from_str(text)
            .map_err(|_| KeyError::BadIdentity(key.id.clone()))?;
        Ok(TenantIdentity { key, identity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[test]
    fn wrapping_is_bound_to_tenant_and_key_id() {
        let m = MasterKey::generate();
        let w = m.wrap("t1", "k1", b"secret");
        assert_eq!(m.unwrap("t1", "k1", &w).unwrap().as_slice(), b"secret");
        assert!(m.unwrap("t2", "k1", &w).is_err());
        assert!(m.unwrap("t1", "k2", &w).is_err());
        assert!(MasterKey::generate().unwrap("t1", "k1", &w).is_err());
        let mut tampered = w.clone();
        tampered.pop();
        tampered.push('A');
        assert!(m.unwrap("t1", "k1", &tampered).is_err());
        assert!(!format!("{m:?}").contains(&hex::encode(m.key.as_ref())));
    }

    #[test]
    fn master_key_file_is_created_private_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("master.key");
        let a = MasterKey::load_or_create(&path).unwrap();
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "too short").unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&path),
            Err(KeyError::BadMasterKey)
        ));
    }

    #[tokio::test]
    async fn tenant_keys_are_made_once_rotate_and_stay_readable() {
        for store in testing::stores().await {
            let t = store.create_tenant("A", None).await.unwrap();
            let ring = Keyring::new(store.store.clone(), MasterKey::generate());
            let (k1, r1) = ring.active(&t.id).await.unwrap();
            let (again, _) = ring.active(&t.id).await.unwrap();
            assert_eq!(k1.id, again.id);
            // The stored row holds no secret in clear.
            assert!(!k1.wrapped_secret.contains("AGE-SECRET-KEY"));
            let id1 = ring.identity(&t.id, &k1.id).await.unwrap();
            assert_eq!(id1.identity.to_public().to_string(), r1.to_string());

            let k2 = ring.rotate(&t.id).await.unwrap();
            assert_ne!(k2.id, k1.id);
            assert_eq!(ring.active(&t.id).await.unwrap().0.id, k2.id);
            let all = ring.identities(&t.id).await.unwrap();
            assert_eq!(all.len(), 2);
            assert!(all[0]
                .secret_string()
                .expose()
                .starts_with("AGE-SECRET-KEY-1"));

            // Another tenant cannot use this tenant's key id.
            let other = store.create_tenant("B", None).await.unwrap();
            assert!(matches!(
                ring.identity(&other.id, &k1.id).await,
                Err(KeyError::NotFound)
            ));
            // A different master key is named, not silently wrong.
            let wrong = Keyring::new(store.store.clone(), MasterKey::generate());
            assert!(matches!(
                wrong.identity(&t.id, &k1.id).await,
                Err(KeyError::WrongMasterKey { .. })
            ));
        }
    }
}
