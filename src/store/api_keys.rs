//! API keys: bearer credentials for the REST API, stored hashed.
//!
//! A key reads `csk_<prefix>_<secret>`. The prefix is public and indexed so a
//! lookup is one row; the secret carries 256 random bits, so a plain SHA-256
//! of the whole key is enough (no slow hash is needed against guessing).

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

use super::{get_enum, new_id, now_ms, text_enum, Result, Store};
use crate::secret::Secret;

text_enum! {
    /// What a key's holder may do; permissions derive from it.
    pub enum Role {
        Admin => "admin",
        Supervisor => "supervisor",
        Agent => "agent",
    }
}

/// A stored key (never the secret itself). It acts for its user, with the
/// user's current role.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

/// A key just created: the only time its plaintext exists.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub plaintext: Secret,
}

/// Who is calling, once a bearer key has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub user_id: String,
    pub key_id: String,
    pub role: Role,
}

pub(super) fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// Splits `csk_<prefix>_<secret>`; `None` for anything else.
fn key_prefix(plaintext: &str) -> Option<&str> {
    let rest = plaintext.strip_prefix("csk_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 12 && !secret.is_empty()).then_some(prefix)
}

/// Mints a key for `user_id` and inserts its hash on `conn` (the caller's
/// transaction, so a user is never left without the key it was created for).
pub(super) async fn insert_key(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    user_id: &str,
    name: &str,
    role: Role,
) -> Result<NewApiKey> {
    let mut prefix = [0u8; 6];
    let mut secret = [0u8; 32];
    {
        // ThreadRng is not Send: keep it out of the future's state.
        let mut rng = rand::thread_rng();
        rng.fill_bytes(&mut prefix);
        rng.fill_bytes(&mut secret);
    }
    let plaintext = format!(
        "csk_{}_{}",
        hex::encode(prefix),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let key = ApiKey {
        id: new_id(),
        tenant_id: tenant_id.to_string(),
        user_id: user_id.to_string(),
        name: name.to_string(),
        role,
        created_at: now_ms(),
    };
    // `role` is kept for old readers of the table; authentication reads the
    // user's role.
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, user_id, name, role, key_prefix, key_hash, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.id)
    .bind(tenant_id)
    .bind(user_id)
    .bind(name)
    .bind(role.as_str())
    .bind(hex::encode(prefix))
    .bind(hash_key(&plaintext))
    .bind(key.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(NewApiKey {
        key,
        plaintext: Secret::new(plaintext),
    })
}

impl Store {
    /// A key for a new user called `name` with `role`: the shortest way to a
    /// working credential (tenant bootstrap, tests). See
    /// [`Store::create_user`] to choose the user's e-mail.
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        role: Role,
    ) -> Result<NewApiKey> {
        Ok(self.create_user(tenant_id, name, None, role).await?.key)
    }

    /// The principal a bearer key stands for, or `None` if it is unknown,
    /// malformed or revoked, or its user is disabled. The hash comparison is
    /// constant-time.
    pub async fn authenticate_api_key(&self, plaintext: &str) -> Result<Option<Principal>> {
        let Some(prefix) = key_prefix(plaintext) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT k.id, k.tenant_id, k.user_id, k.key_hash, u.role FROM api_keys k \
             JOIN users u ON u.id = k.user_id AND u.tenant_id = k.tenant_id \
             WHERE k.key_prefix = $1 AND k.revoked_at IS NULL AND u.disabled_at IS NULL",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("key_hash")?;
        if !bool::from(stored.as_bytes().ct_eq(hash_key(plaintext).as_bytes())) {
            return Ok(None);
        }
        Ok(Some(Principal {
            tenant_id: row.try_get("tenant_id")?,
            user_id: row.try_get("user_id")?,
            key_id: row.try_get("id")?,
            role: get_enum(&row, "role")?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn keys_authenticate_only_exactly() {
        for store in testing::stores().await {
            let tenant = store.create_tenant("Acme", None).await.unwrap();
            let new = store
                .create_api_key(&tenant.id, "admin", Role::Admin)
                .await
                .unwrap();
            let key = new.plaintext.expose();
            let p = store.authenticate_api_key(key).await.unwrap().unwrap();
            assert_eq!(p.tenant_id, tenant.id);
            assert_eq!(p.role, Role::Admin);

            let mut tampered = key.to_string();
            tampered.push('x');
            assert!(store
                .authenticate_api_key(&tampered)
                .await
                .unwrap()
                .is_none());
            assert!(store
                .authenticate_api_key("csk_short")
                .await
                .unwrap()
                .is_none());
            assert!(store.authenticate_api_key("").await.unwrap().is_none());
            // The plaintext is not stored anywhere.
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE key_hash = $1")
                .bind(key)
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(n, 0);
        }
    }
}
