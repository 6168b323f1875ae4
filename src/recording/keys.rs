//! Recording keys: a master key outside the database wraps per-tenant age
//! identities stored inside it.
//!
//! The envelope is age's own: every recording file gets a fresh random file
//! key, wrapped in the file's header to the tenant's X25519 recipient.
//! Writing needs only the public recipient; the tenant's secret identity is
//! unwrapped (in memory, on demand, never cached or logged) to read a
//! recording back, to finalise one, or for an operator's explicit export.
//!
//! Tenant secrets are sealed by the master key ([`crate::secret::MasterKey`],
//! which seals provider tokens too) with the tenant id and key id as
//! associated data: a wrapped secret copied to another tenant's row, or
//! another key id, fails to unwrap instead of decrypting the wrong tenant's
//! recordings.
//!
//! Rotation: [`Keyring::rotate`] retires the tenant's active key and makes a
//! new one; recordings keep the `key_id` they were written with, and retired
//! keys stay to read them.

use std::str::FromStr;

use age::secrecy::ExposeSecret;

pub use crate::secret::{MasterKey, MasterKeyError};
use crate::secret::{SealDomain, Secret};
use crate::store::{NewRecordingKey, RecordingKey, Store, StoreError};

/// `recordings.algorithm` / `recording_keys.algorithm`: age v1 files, X25519
/// recipient stanza wrapping a per-file key, payload in ChaCha20-Poly1305
/// STREAM chunks of 64 KiB.
pub const ALGORITHM: &str = "age-x25519";

/// Why a key could not be loaded, made or used. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Master(#[from] MasterKeyError),
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
    pub fn new(store: Store, master: impl Into<std::sync::Arc<MasterKey>>) -> Self {
        Self {
            store,
            master: master.into(),
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
        let wrapped = self.master.seal(
            SealDomain::RecordingKey,
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
            .open(
                SealDomain::RecordingKey,
                &key.tenant_id,
                &key.id,
                &key.wrapped_secret,
            )
            .map_err(|_| KeyError::Unwrap(key.id.clone()))?;
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
        let d = SealDomain::RecordingKey;
        let w = m.seal(d, "t1", "k1", b"secret");
        assert_eq!(m.open(d, "t1", "k1", &w).unwrap().as_slice(), b"secret");
        assert!(m.open(d, "t2", "k1", &w).is_err());
        assert!(m.open(d, "t1", "k2", &w).is_err());
        assert!(MasterKey::generate().open(d, "t1", "k1", &w).is_err());
        let mut tampered = w.clone();
        tampered.pop();
        tampered.push('A');
        assert!(m.open(d, "t1", "k1", &tampered).is_err());
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
            Err(MasterKeyError::BadMasterKey)
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
