//! Users of a tenant. A user has one role; API keys belong to a user and act
//! with the user's current role, so disabling a user stops all their keys.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::api_keys::insert_key;
use super::{get_enum, new_id, now_ms, NewApiKey, Result, Role, Store, StoreError};

/// A person or integration acting in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// A user just created, with their first key (the only time its plaintext
/// exists).
#[derive(Debug)]
pub struct NewUser {
    pub user: User,
    pub key: NewApiKey,
}

const USER_COLUMNS: &str = "id, tenant_id, name, email, role, created_at, disabled_at";

fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        role: get_enum(row, "role")?,
        created_at: row.try_get("created_at")?,
        disabled_at: row.try_get("disabled_at")?,
    })
}

impl Store {
    /// Creates a user and their first API key in one transaction. The tenant
    /// must exist (`NotFound` otherwise); an e-mail is unique within a tenant
    /// (`Conflict`). The e-mail is stored lower-cased.
    pub async fn create_user(
        &self,
        tenant_id: &str,
        name: &str,
        email: Option<&str>,
        role: Role,
    ) -> Result<NewUser> {
        let user = User {
            id: new_id(),
            tenant_id: tenant_id.to_string(),
            name: name.to_string(),
            email: email.map(|e| e.trim().to_lowercase()),
            role,
            created_at: now_ms(),
            disabled_at: None,
        };
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let known: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(StoreError::NotFound);
        }
        let inserted = sqlx::query(
            "INSERT INTO users (id, tenant_id, name, email, role, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(tenant_id)
        .bind(&user.name)
        .bind(user.email.as_deref())
        .bind(role.as_str())
        .bind(user.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(
                    "a user with that e-mail already exists in this tenant".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let key = insert_key(&mut tx, tenant_id, &user.id, name, role).await?;
        tx.commit().await?;
        Ok(NewUser { user, key })
    }

    /// Another key for an enabled user of this tenant (`NotFound` for any
    /// other user id).
    pub async fn create_user_key(
        &self,
        tenant_id: &str,
        user_id: &str,
        name: &str,
    ) -> Result<NewApiKey> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL"
        ))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let user = user_from_row(&row)?;
        let key = insert_key(&mut tx, tenant_id, user_id, name, user.role).await?;
        tx.commit().await?;
        Ok(key)
    }

    pub async fn get_user(&self, tenant_id: &str, user_id: &str) -> Result<User> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    /// The tenant's users, oldest first.
    pub async fn list_users(&self, tenant_id: &str) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Disables a user: none of their keys authenticate from now on, and
    /// their browser sessions end. Disabling twice keeps the first time.
    pub async fn disable_user(&self, tenant_id: &str, user_id: &str) -> Result<()> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "UPDATE users SET disabled_at = COALESCE(disabled_at, $1) \
             WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.delete_user_sessions_locked(tenant_id, user_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn users_own_keys_within_their_tenant() {
        for store in testing::stores().await {
            let acme = store.create_tenant("Acme", None).await.unwrap();
            let other = store.create_tenant("Other", None).await.unwrap();

            let new = store
                .create_user(&acme.id, "Ann", Some(" Ann@Example.com "), Role::Agent)
                .await
                .unwrap();
            assert_eq!(new.user.email.as_deref(), Some("ann@example.com"));
            assert_eq!(new.key.key.user_id, new.user.id);
            let p = store
                .authenticate_api_key(new.key.plaintext.expose())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (p.tenant_id.as_str(), p.user_id.as_str(), p.role),
                (acme.id.as_str(), new.user.id.as_str(), Role::Agent)
            );
            assert_eq!(
                store.get_user(&acme.id, &new.user.id).await.unwrap(),
                new.user
            );

            // E-mail unique per tenant (case-insensitively), not globally.
            assert!(matches!(
                store
                    .create_user(&acme.id, "Ann 2", Some("ann@EXAMPLE.com"), Role::Agent)
                    .await,
                Err(StoreError::Conflict(_))
            ));
            store
                .create_user(&other.id, "Ann", Some("ann@example.com"), Role::Admin)
                .await
                .unwrap();

            // Unknown tenant: nothing written.
            assert!(matches!(
                store.create_user("nope", "X", None, Role::Agent).await,
                Err(StoreError::NotFound)
            ));
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = 'nope'")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(n, 0);

            // Other tenants' users are invisible.
            assert!(matches!(
                store.get_user(&other.id, &new.user.id).await,
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                store.create_user_key(&other.id, &new.user.id, "x").await,
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                store.disable_user(&other.id, &new.user.id).await,
                Err(StoreError::NotFound)
            ));
            assert_eq!(store.list_users(&acme.id).await.unwrap().len(), 1);
            assert_eq!(store.list_users(&other.id).await.unwrap().len(), 1);

            // A second key; disabling the user stops both.
            let second = store
                .create_user_key(&acme.id, &new.user.id, "laptop")
                .await
                .unwrap();
            assert!(store
                .authenticate_api_key(second.plaintext.expose())
                .await
                .unwrap()
                .is_some());
            store.disable_user(&acme.id, &new.user.id).await.unwrap();
            for key in [&new.key.plaintext, &second.plaintext] {
                assert!(store
                    .authenticate_api_key(key.expose())
                    .await
                    .unwrap()
                    .is_none());
            }
            assert!(matches!(
                store.create_user_key(&acme.id, &new.user.id, "x").await,
                Err(StoreError::NotFound)
            ));
        }
    }

    /// The 0003 migration gives every key that predates users a user of its
    /// own, so old keys keep authenticating with their old role.
    #[tokio::test]
    async fn keys_from_before_users_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        // Only the schema as it was before users.
        let before: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
        let mut before = before;
        before.migrations = std::borrow::Cow::Owned(
            before
                .migrations
                .iter()
                .filter(|m| m.version < 3)
                .cloned()
                .collect(),
        );
        before.run(&pool).await.unwrap();
        let plaintext = "csk_0123456789ab_old-key-secret";
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ('t1', 'Old', 1, 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, key_prefix, key_hash, created_at) \
             VALUES ('k1', 't1', 'ops', 'supervisor', '0123456789ab', $1, 1)",
        )
        .bind(crate::store::api_keys::hash_key(plaintext))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::connect(&url).await.unwrap();
        let p = store
            .authenticate_api_key(plaintext)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p.tenant_id.as_str(), p.role), ("t1", Role::Supervisor));
        let user = store.get_user("t1", &p.user_id).await.unwrap();
        assert_eq!(user.name, "ops");
    }
}
