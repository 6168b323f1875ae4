//! Tenants and their provider credentials.

use sqlx::Row;

use super::{new_id, now_ms, Result, Store, StoreError};
use crate::secret::Secret;

/// A customer organisation; every other row belongs to exactly one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub twilio_account_sid: Option<String>,
    pub created_at: i64,
}

/// Per-tenant behaviour switches, stored as JSON so settings can grow
/// without migrations. Unknown keys in storage are kept out by the API.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Redact card numbers, phone numbers, e-mail and SSN-like numbers from
    /// final transcript text before it is stored or shown.
    pub pii_redaction: bool,
}

/// What is needed to authenticate a tenant's Twilio traffic.
#[derive(Debug, Clone)]
pub struct TwilioCredentials {
    pub tenant_id: String,
    pub account_sid: String,
    pub auth_token: Secret,
}

impl Store {
    /// Creates a tenant; a Twilio account can belong to one tenant only.
    pub async fn create_tenant(
        &self,
        name: &str,
        twilio: Option<(&str, &Secret)>,
    ) -> Result<Tenant> {
        let tenant = Tenant {
            id: new_id(),
            name: name.to_string(),
            twilio_account_sid: twilio.map(|(sid, _)| sid.to_string()),
            created_at: now_ms(),
        };
        let _writer = self.writer().await;
        let result = sqlx::query(
            "INSERT INTO tenants (id, name, twilio_account_sid, twilio_auth_token, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(twilio.map(|(sid, _)| sid.to_string()))
        .bind(twilio.map(|(_, token)| token.expose().to_string()))
        .bind(tenant.created_at)
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => Ok(tenant),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                "that Twilio account already belongs to a tenant".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Tenant> {
        let row = sqlx::query(
            "SELECT id, name, twilio_account_sid, created_at FROM tenants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(Tenant {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            twilio_account_sid: row.try_get("twilio_account_sid")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// The tenant a Twilio account SID maps to, with its auth token.
    pub async fn twilio_credentials_for(&self, account_sid: &str) -> Result<TwilioCredentials> {
        let row = sqlx::query(
            "SELECT id, twilio_account_sid, twilio_auth_token FROM tenants \
             WHERE twilio_account_sid = $1 AND twilio_auth_token IS NOT NULL",
        )
        .bind(account_sid)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        credentials(&row)
    }

    pub async fn tenant_settings(&self, tenant_id: &str) -> Result<TenantSettings> {
        let raw: String = sqlx::query_scalar("SELECT settings FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        serde_json::from_str(&raw).map_err(|_| StoreError::Corrupt("tenant settings".into()))
    }

    pub async fn set_tenant_settings(
        &self,
        tenant_id: &str,
        settings: &TenantSettings,
    ) -> Result<()> {
        let json = serde_json::to_string(settings)
            .map_err(|_| StoreError::Corrupt("tenant settings".into()))?;
        let _writer = self.writer().await;
        let done = sqlx::query("UPDATE tenants SET settings = $1, updated_at = $2 WHERE id = $3")
            .bind(json)
            .bind(super::now_ms())
            .bind(tenant_id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Changes whenever a tenant is added or its credentials change, so a
    /// cache of credentials knows when to reload.
    pub async fn tenants_fingerprint(&self) -> Result<String> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(updated_at), 0) AS latest FROM tenants",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(format!(
            "{}:{}",
            row.try_get::<i64, _>("n")?,
            row.try_get::<i64, _>("latest")?
        ))
    }

    /// Every tenant's Twilio credentials (to match a signed upgrade request,
    /// which names no account, against each tenant's token).
    pub async fn all_twilio_credentials(&self) -> Result<Vec<TwilioCredentials>> {
        let rows = sqlx::query(
            "SELECT id, twilio_account_sid, twilio_auth_token FROM tenants \
             WHERE twilio_account_sid IS NOT NULL AND twilio_auth_token IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(credentials).collect()
    }
}

fn credentials(row: &sqlx::any::AnyRow) -> Result<TwilioCredentials> {
    Ok(TwilioCredentials {
        tenant_id: row.try_get("id")?,
        account_sid: row.try_get("twilio_account_sid")?,
        auth_token: Secret::new(row.try_get::<String, _>("twilio_auth_token")?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn account_sid_maps_to_one_tenant() {
        for store in testing::stores().await {
            let token = Secret::new("tok");
            let t = store
                .create_tenant("Acme", Some(("AC1", &token)))
                .await
                .unwrap();
            let creds = store.twilio_credentials_for("AC1").await.unwrap();
            assert_eq!(creds.tenant_id, t.id);
            assert_eq!(creds.auth_token.expose(), "tok");
            assert!(matches!(
                store.create_tenant("Other", Some(("AC1", &token))).await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                store.twilio_credentials_for("AC2").await,
                Err(StoreError::NotFound)
            ));
            assert_eq!(store.all_twilio_credentials().await.unwrap().len(), 1);
            assert_eq!(store.get_tenant(&t.id).await.unwrap().name, "Acme");
            assert_eq!(
                store.tenant_settings(&t.id).await.unwrap(),
                TenantSettings::default()
            );
            let on = TenantSettings {
                pii_redaction: true,
            };
            store.set_tenant_settings(&t.id, &on).await.unwrap();
            assert_eq!(store.tenant_settings(&t.id).await.unwrap(), on);
            assert!(matches!(
                store.set_tenant_settings("nope", &on).await,
                Err(StoreError::NotFound)
            ));
        }
    }
}
