//! Tenants and their provider credentials.

use sqlx::Row;

use super::secrets::TWILIO_AUTH_TOKEN;
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
/// without migrations; rows written before a field existed read its
/// default. Unknown keys are kept out by [`TenantSettings::validate`]'s
/// callers (the API parses with `deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Redact card numbers, phone numbers, e-mail and SSN-like numbers from
    /// final transcript text before it is stored or shown.
    pub pii_redaction: bool,
    /// Record calls (both tracks, encrypted at rest). Default on.
    pub record_calls: bool,
    /// Transcribe calls live (captions, finals, summary). Default on.
    pub transcribe_live: bool,
    /// Days recordings and transcripts are kept; `None` keeps them.
    pub retention_days: Option<u32>,
    /// Said to callers before the call is connected (recording consent);
    /// `None` says nothing.
    pub consent_announcement: Option<String>,
    pub quotas: Quotas,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            pii_redaction: false,
            record_calls: true,
            transcribe_live: true,
            retention_days: None,
            consent_announcement: None,
            quotas: Quotas::default(),
        }
    }
}

/// Per-tenant limits; `None` is unlimited, 0 allows nothing.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Media streams open at once.
    pub max_concurrent_streams: Option<u32>,
    /// Minutes of audio transcribed per calendar month (UTC), live and batch.
    pub monthly_transcription_minutes: Option<u32>,
    /// Minutes of calls recorded per calendar month (UTC).
    pub monthly_recording_minutes: Option<u32>,
}

/// Longest retention accepted: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Longest consent announcement, in characters (a spoken sentence or three).
pub const MAX_ANNOUNCEMENT_CHARS: usize = 1000;
/// Largest finite quota accepted; anything larger is a typo (use `null` for
/// unlimited).
pub const MAX_QUOTA: u32 = 100_000_000;

impl TenantSettings {
    /// Checks values a type cannot: ranges and text. The message names the
    /// field, for a 400 the caller can act on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(days) = self.retention_days {
            if !(1..=MAX_RETENTION_DAYS).contains(&days) {
                return Err(format!(
                    "retention_days must be between 1 and {MAX_RETENTION_DAYS} (or null to keep everything)"
                ));
            }
        }
        if let Some(text) = &self.consent_announcement {
            if text.trim().is_empty() {
                return Err("consent_announcement must not be blank (use null for none)".into());
            }
            if text.chars().count() > MAX_ANNOUNCEMENT_CHARS {
                return Err(format!(
                    "consent_announcement must be at most {MAX_ANNOUNCEMENT_CHARS} characters"
                ));
            }
            if text.chars().any(char::is_control) {
                return Err("consent_announcement must not contain control characters".into());
            }
        }
        let q = &self.quotas;
        for (name, value) in [
            ("max_concurrent_streams", q.max_concurrent_streams),
            (
                "monthly_transcription_minutes",
                q.monthly_transcription_minutes,
            ),
            ("monthly_recording_minutes", q.monthly_recording_minutes),
        ] {
            if value.is_some_and(|v| v > MAX_QUOTA) {
                return Err(format!(
                    "quotas.{name} must be at most {MAX_QUOTA} (or null for unlimited)"
                ));
            }
        }
        Ok(())
    }
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
        let sealed = twilio
            .map(|(_, token)| self.seal_provider_secret(&tenant.id, TWILIO_AUTH_TOKEN, token))
            .transpose()?;
        let (token, sealed_by) = sealed.unzip();
        let _writer = self.writer().await;
        let result = sqlx::query(
            "INSERT INTO tenants (id, name, twilio_account_sid, twilio_auth_token, \
             secrets_master_key_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(twilio.map(|(sid, _)| sid.to_string()))
        .bind(token)
        .bind(sealed_by)
        .bind(tenant.created_at)
        .execute(self.pool())
        .await;
        self.tenants_changed();
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
            "SELECT id, twilio_account_sid, twilio_auth_token, secrets_master_key_id FROM tenants \
             WHERE twilio_account_sid = $1 AND twilio_auth_token IS NOT NULL",
        )
        .bind(account_sid)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        self.credentials(&row)
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
            "SELECT id, twilio_account_sid, twilio_auth_token, secrets_master_key_id FROM tenants \
             WHERE twilio_account_sid IS NOT NULL AND twilio_auth_token IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| self.credentials(r)).collect()
    }

    /// A tenant's credentials from a row with `id`, `twilio_account_sid`,
    /// `twilio_auth_token` and `secrets_master_key_id`; the token opened.
    pub(super) fn credentials(&self, row: &sqlx::any::AnyRow) -> Result<TwilioCredentials> {
        let tenant_id: String = row.try_get("id")?;
        let auth_token = self.open_provider_secret(
            &tenant_id,
            TWILIO_AUTH_TOKEN,
            row.try_get("twilio_auth_token")?,
            row.try_get("secrets_master_key_id")?,
        )?;
        Ok(TwilioCredentials {
            tenant_id,
            account_sid: row.try_get("twilio_account_sid")?,
            auth_token,
        })
    }
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
                retention_days: Some(30),
                consent_announcement: Some("This call is recorded.".into()),
                quotas: Quotas {
                    max_concurrent_streams: Some(5),
                    ..Quotas::default()
                },
                ..TenantSettings::default()
            };
            store.set_tenant_settings(&t.id, &on).await.unwrap();
            assert_eq!(store.tenant_settings(&t.id).await.unwrap(), on);
            // Settings stored before a field existed read its default.
            sqlx::query("UPDATE tenants SET settings = $1 WHERE id = $2")
                .bind(r#"{"pii_redaction":true}"#)
                .bind(&t.id)
                .execute(store.pool())
                .await
                .unwrap();
            let old = store.tenant_settings(&t.id).await.unwrap();
            assert!(old.pii_redaction && old.record_calls && old.transcribe_live);
            assert_eq!(old.quotas, Quotas::default());
            assert!(matches!(
                store.set_tenant_settings("nope", &on).await,
                Err(StoreError::NotFound)
            ));
        }
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert_eq!(TenantSettings::default().validate(), Ok(()));
        type Change = fn(&mut TenantSettings);
        let cases: [(Change, &str); 7] = [
            (|s| s.retention_days = Some(0), "retention_days"),
            (
                |s| s.retention_days = Some(MAX_RETENTION_DAYS + 1),
                "retention_days",
            ),
            (
                |s| s.consent_announcement = Some("  ".into()),
                "consent_announcement",
            ),
            (
                |s| s.consent_announcement = Some("x".repeat(1001)),
                "at most 1000",
            ),
            (
                |s| s.consent_announcement = Some("bell\u{7}".into()),
                "control",
            ),
            (
                |s| s.quotas.max_concurrent_streams = Some(MAX_QUOTA + 1),
                "quotas.max_concurrent_streams",
            ),
            (
                |s| s.quotas.monthly_recording_minutes = Some(u32::MAX),
                "quotas.monthly_recording_minutes",
            ),
        ];
        for (change, says) in cases {
            let mut s = TenantSettings::default();
            change(&mut s);
            let err = s.validate().unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        let fine = TenantSettings {
            retention_days: Some(MAX_RETENTION_DAYS),
            consent_announcement: Some(
                "Calls are recorded for quality. Gespräche werden aufgezeichnet.".into(),
            ),
            quotas: Quotas {
                max_concurrent_streams: Some(0),
                ..Quotas::default()
            },
            ..TenantSettings::default()
        };
        assert_eq!(fine.validate(), Ok(()));
    }
}
