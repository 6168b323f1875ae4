//! Secrets at rest: provider credentials in tenant rows are sealed by the
//! master key, as recording keys are ([`crate::secret::MasterKey`], one
//! sealing for both), and [`Store::reseal_secrets`] moves every sealed value
//! to a new master key in one transaction.
//!
//! `tenants.secrets_master_key_id` names the key that sealed the row's
//! provider secrets; NULL marks a row written before sealing existed, whose
//! token is plaintext until [`Store::with_master_key`] seals it at the next
//! start. Reading takes either, so an upgrade never locks a tenant out.

use std::sync::Arc;

use sqlx::Row;

use super::{Result, Store, StoreError};
use crate::secret::{MasterKey, SealDomain, Secret};

/// The column holding a tenant's Twilio auth token (also its name in the
/// sealed value's associated data).
pub(super) const TWILIO_AUTH_TOKEN: &str = "twilio_auth_token";

/// How many sealed values a rotation moved to the new master key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResealCount {
    pub recording_keys: u64,
    pub provider_secrets: u64,
}

impl Store {
    /// This store, sealing and opening provider secrets with `key`. Rows
    /// still holding a plaintext token (written before sealing) are sealed
    /// now, in one transaction.
    pub async fn with_master_key(mut self, key: Arc<MasterKey>) -> Result<Self> {
        self.master = Some(key);
        let sealed = self.seal_plaintext_secrets().await?;
        if sealed > 0 {
            tracing::info!(
                tenants = sealed,
                "sealed provider auth tokens stored in plaintext by an older version"
            );
        }
        Ok(self)
    }

    fn master(&self) -> Result<&MasterKey> {
        self.master.as_deref().ok_or(StoreError::NoMasterKey)
    }

    /// `value` sealed for `tenant_id`'s `column`, with the sealing key's id.
    pub(super) fn seal_provider_secret(
        &self,
        tenant_id: &str,
        column: &str,
        value: &Secret,
    ) -> Result<(String, String)> {
        let master = self.master()?;
        let sealed = master.seal(
            SealDomain::ProviderSecret,
            tenant_id,
            column,
            value.expose().as_bytes(),
        );
        Ok((sealed, master.id().to_string()))
    }

    /// The plaintext of a stored provider secret: sealed by
    /// `sealed_by`, or plaintext when `sealed_by` is NULL (an old row).
    pub(super) fn open_provider_secret(
        &self,
        tenant_id: &str,
        column: &str,
        stored: String,
        sealed_by: Option<String>,
    ) -> Result<Secret> {
        let Some(sealed_by) = sealed_by else {
            return Ok(Secret::new(stored));
        };
        let master = self.master()?;
        if sealed_by != master.id() {
            return Err(StoreError::WrongMasterKey {
                sealed_by,
                configured: master.id().to_string(),
            });
        }
        let plain = master
            .open(SealDomain::ProviderSecret, tenant_id, column, &stored)
            .map_err(|_| StoreError::Corrupt(format!("sealed {column}")))?;
        String::from_utf8(plain.to_vec())
            .map(Secret::new)
            .map_err(|_| StoreError::Corrupt(format!("sealed {column}")))
    }

    /// Seals the tokens of rows written before sealing existed.
    async fn seal_plaintext_secrets(&self) -> Result<u64> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // Across tenants on purpose: an upgrade step, keyed by each row's id.
        let rows = sqlx::query(
            "SELECT id, twilio_auth_token FROM tenants \
             WHERE twilio_auth_token IS NOT NULL AND secrets_master_key_id IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let token = Secret::new(row.try_get::<String, _>("twilio_auth_token")?);
            let (sealed, by) = self.seal_provider_secret(&id, TWILIO_AUTH_TOKEN, &token)?;
            sqlx::query(
                "UPDATE tenants SET twilio_auth_token = $1, secrets_master_key_id = $2 \
                 WHERE id = $3 AND secrets_master_key_id IS NULL",
            )
            .bind(sealed)
            .bind(by)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Re-seals every sealed secret (recording keys and provider tokens of
    /// every tenant) under `new`, in one transaction: either all of them
    /// move or none does. A value that does not open with this store's
    /// master key aborts the rotation and changes nothing.
    pub async fn reseal_secrets(&self, new: &MasterKey) -> Result<ResealCount> {
        let old = self.master()?;
        let mut count = ResealCount::default();
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // Across tenants on purpose: rotation covers the whole database;
        // every update names the tenant and row it read.
        let keys =
            sqlx::query("SELECT id, tenant_id, wrapped_secret, master_key_id FROM recording_keys")
                .fetch_all(&mut *tx)
                .await?;
        for row in &keys {
            let id: String = row.try_get("id")?;
            let tenant: String = row.try_get("tenant_id")?;
            let sealed_by: String = row.try_get("master_key_id")?;
            if sealed_by != old.id() {
                return Err(StoreError::WrongMasterKey {
                    sealed_by,
                    configured: old.id().to_string(),
                });
            }
            let wrapped: String = row.try_get("wrapped_secret")?;
            let plain = old
                .open(SealDomain::RecordingKey, &tenant, &id, &wrapped)
                .map_err(|_| StoreError::Corrupt(format!("recording key {id}")))?;
            let resealed = new.seal(SealDomain::RecordingKey, &tenant, &id, &plain);
            sqlx::query(
                "UPDATE recording_keys SET wrapped_secret = $1, master_key_id = $2 \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(resealed)
            .bind(new.id())
            .bind(&tenant)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            count.recording_keys += 1;
        }
        let tenants = sqlx::query(
            "SELECT id, twilio_auth_token, secrets_master_key_id FROM tenants \
             WHERE twilio_auth_token IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &tenants {
            let id: String = row.try_get("id")?;
            let token = self.open_provider_secret(
                &id,
                TWILIO_AUTH_TOKEN,
                row.try_get("twilio_auth_token")?,
                row.try_get("secrets_master_key_id")?,
            )?;
            let resealed = new.seal(
                SealDomain::ProviderSecret,
                &id,
                TWILIO_AUTH_TOKEN,
                token.expose().as_bytes(),
            );
            sqlx::query(
                "UPDATE tenants SET twilio_auth_token = $1, secrets_master_key_id = $2 \
                 WHERE id = $3",
            )
            .bind(resealed)
            .bind(new.id())
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            count.provider_secrets += 1;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// The master key ids the stored sealed values name (to tell which key
    /// an interrupted rotation left the database under).
    pub async fn sealing_key_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT master_key_id AS k FROM recording_keys \
             UNION SELECT secrets_master_key_id AS k FROM tenants \
             WHERE secrets_master_key_id IS NOT NULL AND twilio_auth_token IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("k")?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    /// The stored token column, as bytes on disk would show it.
    async fn stored_token(store: &Store, tenant: &str) -> (String, Option<String>) {
        let row = sqlx::query(
            "SELECT twilio_auth_token, secrets_master_key_id FROM tenants WHERE id = $1",
        )
        .bind(tenant)
        .fetch_one(store.pool())
        .await
        .unwrap();
        (
            row.try_get("twilio_auth_token").unwrap(),
            row.try_get("secrets_master_key_id").unwrap(),
        )
    }

    #[tokio::test]
    async fn tokens_are_sealed_old_rows_upgraded_and_rotation_moves_everything() {
        for store in testing::stores().await {
            let token = Secret::new("plain-auth-token-1");
            let t = store
                .create_tenant("A", Some(("AC1", &token)))
                .await
                .unwrap();
            let (stored, by) = stored_token(&store, &t.id).await;
            assert!(!stored.contains("plain-auth-token-1"));
            assert_eq!(by.as_deref(), Some(store.master().unwrap().id()));
            assert_eq!(
                store
                    .twilio_credentials_for("AC1")
                    .await
                    .unwrap()
                    .auth_token,
                token
            );

            // A row an older version wrote: plaintext, no key id. Read as
            // is, sealed by the next start with a master key.
            let old = store.create_tenant("Old", None).await.unwrap();
            sqlx::query(
                "UPDATE tenants SET twilio_account_sid = 'AC2', twilio_auth_token = 'legacy-tok' \
                 WHERE id = $1",
            )
            .bind(&old.id)
            .execute(store.pool())
            .await
            .unwrap();
            let creds = store.tenant_twilio_credentials(&old.id).await.unwrap();
            assert_eq!(creds.unwrap().auth_token.expose(), "legacy-tok");
            let master = store.master.clone().unwrap();
            let store = store
                .store
                .clone()
                .with_master_key(master.clone())
                .await
                .unwrap();
            let (stored, by) = stored_token(&store, &old.id).await;
            assert!(by.is_some() && !stored.contains("legacy-tok"));
            assert_eq!(
                store
                    .twilio_credentials_for("AC2")
                    .await
                    .unwrap()
                    .auth_token
                    .expose(),
                "legacy-tok"
            );
            // A sealed token moved to another tenant's row does not open.
            sqlx::query("UPDATE tenants SET twilio_auth_token = $1 WHERE id = $2")
                .bind(stored_token(&store, &t.id).await.0)
                .bind(&old.id)
                .execute(store.pool())
                .await
                .unwrap();
            assert!(matches!(
                store.twilio_credentials_for("AC2").await,
                Err(StoreError::Corrupt(_))
            ));
            sqlx::query("UPDATE tenants SET twilio_auth_token = NULL WHERE id = $1")
                .bind(&old.id)
                .execute(store.pool())
                .await
                .unwrap();

            // Rotation: every sealed value moves; the old key opens nothing.
            let ring = crate::recording::Keyring::new(store.clone(), master.clone());
            let (rk, _) = ring.active(&t.id).await.unwrap();
            let new = Arc::new(MasterKey::generate());
            let moved = store.reseal_secrets(&new).await.unwrap();
            assert_eq!(
                moved,
                ResealCount {
                    recording_keys: 1,
                    provider_secrets: 1
                }
            );
            assert_eq!(
                store.sealing_key_ids().await.unwrap(),
                vec![new.id().to_string()]
            );
            assert!(matches!(
                store.twilio_credentials_for("AC1").await,
                Err(StoreError::WrongMasterKey { .. })
            ));
            assert!(ring.identity(&t.id, &rk.id).await.is_err());
            let store = store.clone().with_master_key(new.clone()).await.unwrap();
            assert_eq!(
                store
                    .twilio_credentials_for("AC1")
                    .await
                    .unwrap()
                    .auth_token,
                token
            );
            let ring = crate::recording::Keyring::new(store.clone(), new.clone());
            ring.identity(&t.id, &rk.id).await.unwrap();
            // Rotating with a key that does not match aborts and changes nothing.
            let stranger = store
                .clone()
                .with_master_key(Arc::new(MasterKey::generate()))
                .await
                .unwrap();
            assert!(matches!(
                stranger.reseal_secrets(&MasterKey::generate()).await,
                Err(StoreError::WrongMasterKey { .. })
            ));
            assert_eq!(
                store.sealing_key_ids().await.unwrap(),
                vec![new.id().to_string()]
            );
        }
    }
}
