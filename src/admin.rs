//! What the operator commands do (`callstream tenant …`, `user …`,
//! `stream-token`, `recording key …`), as library functions: the binary
//! only parses arguments and prints what these return, so the commands can
//! be called (and tested) without a process.

use crate::config::Config;
use crate::recording::keys::KeyError;
use crate::secret::Secret;
use crate::store::{Role, Store, StoreError, TenantSettings};

/// Why an operator command failed; the message is what the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A bad argument (the message names the flag).
    #[error("{0}")]
    Invalid(&'static str),
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error("the tenant has no recording key with that id")]
    UnknownKey,
    #[error("the tenant has no such user")]
    UnknownUser,
    #[error("the tenant has no user with that e-mail")]
    UnknownEmail,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Recording(#[from] crate::recording::RecordingError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("cannot load the stream token secret: {0}")]
    TokenSecret(std::io::Error),
}

/// The unknown-tenant error for `tenant`, or the store's own.
fn tenant_error(tenant: &str) -> impl FnOnce(StoreError) -> AdminError + '_ {
    move |e| match e {
        StoreError::NotFound => AdminError::UnknownTenant(tenant.to_string()),
        other => other.into(),
    }
}

/// `tenant create`: the tenant, its first admin user and that user's API
/// key (shown once here, stored hashed). Twilio credentials come both or
/// neither.
pub async fn tenant_create(
    store: &Store,
    name: &str,
    twilio_account_sid: Option<&str>,
    twilio_auth_token: Option<&Secret>,
) -> Result<serde_json::Value, AdminError> {
    let twilio = match (twilio_account_sid, twilio_auth_token) {
        (Some(sid), Some(token)) => {
            if !sid.starts_with("AC") || sid.len() != 34 {
                return Err(AdminError::Invalid(
                    "--twilio-account-sid must look like AC followed by 32 hex digits",
                ));
            }
            if token.expose().is_empty() {
                return Err(AdminError::Invalid("--twilio-auth-token must not be empty"));
            }
            Some((sid, token))
        }
        (None, None) => None,
        _ => {
            return Err(AdminError::Invalid(
                "give --twilio-account-sid with --twilio-auth-token-file or --twilio-auth-token-stdin, or neither",
            ))
        }
    };
    let tenant = store.create_tenant(name, twilio).await?;
    let admin = store
        .create_user(&tenant.id, "admin", None, Role::Admin)
        .await?;
    Ok(serde_json::json!({
        "tenant_id": tenant.id,
        "name": tenant.name,
        "twilio_account_sid": tenant.twilio_account_sid,
        "user_id": admin.user.id,
        "api_key": admin.key.plaintext.expose(),
        "api_key_id": admin.key.key.id,
        "role": admin.user.role,
    }))
}

/// `tenant settings`: the tenant's settings after applying the changes given.
pub async fn tenant_settings(
    store: &Store,
    tenant: &str,
    pii_redaction: Option<bool>,
) -> Result<TenantSettings, AdminError> {
    let mut settings = store
        .tenant_settings(tenant)
        .await
        .map_err(tenant_error(tenant))?;
    if let Some(on) = pii_redaction {
        settings.pii_redaction = on;
        store.set_tenant_settings(tenant, &settings).await?;
    }
    Ok(settings)
}

/// `user create`: validates, then writes the user and their key in one
/// transaction; the key is shown once here.
pub async fn user_create(
    store: &Store,
    tenant: &str,
    role: Role,
    name: Option<String>,
    email: Option<String>,
    password: Option<Secret>,
) -> Result<serde_json::Value, AdminError> {
    let name = name.unwrap_or_else(|| role.as_str().to_string());
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AdminError::Invalid("--name must be 1 to 200 characters"));
    }
    if let Some(email) = &email {
        let valid = email.len() <= 254
            && !email.chars().any(char::is_whitespace)
            && email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if !valid {
            return Err(AdminError::Invalid(
                "--email must look like name@example.com",
            ));
        }
    }
    let new = store
        .create_user(tenant, name, email.as_deref(), role)
        .await
        .map_err(tenant_error(tenant))?;
    if let Some(password) = &password {
        store
            .set_user_password(tenant, &new.user.id, password)
            .await?;
    }
    Ok(serde_json::json!({
        "tenant_id": new.user.tenant_id,
        "user_id": new.user.id,
        "name": new.user.name,
        "email": new.user.email,
        "role": new.user.role,
        "api_key": new.key.plaintext.expose(),
        "api_key_id": new.key.key.id,
        "password_set": password.is_some(),
    }))
}

/// `user set-password`: by user id or e-mail, within the tenant; the
/// user's sessions end with the old password.
pub async fn user_set_password(
    store: &Store,
    tenant: &str,
    user: Option<String>,
    email: Option<String>,
    password: &Secret,
) -> Result<serde_json::Value, AdminError> {
    let user_id = match (user, email) {
        (Some(id), _) => id,
        (None, Some(email)) => match store.user_by_email(tenant, &email).await {
            Ok(u) => u.id,
            Err(StoreError::NotFound) => return Err(AdminError::UnknownEmail),
            Err(e) => return Err(e.into()),
        },
        (None, None) => return Err(AdminError::Invalid("give --user or --email")),
    };
    match store.set_user_password(tenant, &user_id, password).await {
        Ok(()) => {
            Ok(serde_json::json!({"tenant_id": tenant, "user_id": user_id, "password_set": true}))
        }
        Err(StoreError::NotFound) => Err(AdminError::UnknownUser),
        Err(e) => Err(e.into()),
    }
}

/// `stream-token`: a per-call stream token for a known tenant, valid for
/// `stream.token_ttl_secs`.
pub async fn stream_token(
    cfg: &Config,
    store: &Store,
    tenant: &str,
    call_sid: &str,
) -> Result<serde_json::Value, AdminError> {
    store
        .get_tenant(tenant)
        .await
        .map_err(tenant_error(tenant))?;
    let secret = crate::load_token_secret(cfg).map_err(AdminError::TokenSecret)?;
    let expires_at = crate::store::now_ms() / 1000 + cfg.stream.token_ttl_secs as i64;
    let token = crate::providers::twilio::token::issue(
        secret.expose().as_bytes(),
        tenant,
        call_sid,
        expires_at,
    );
    Ok(serde_json::json!({"token": token, "expires_at": expires_at}))
}

/// `recording key export`: the tenant's age identities (all, or the one
/// with `key_id`), oldest first, each under a comment naming it. Secret:
/// the caller prints it and nothing else.
pub async fn recording_key_export(
    cfg: &Config,
    store: &Store,
    tenant: &str,
    key_id: Option<&str>,
) -> Result<Secret, AdminError> {
    store
        .get_tenant(tenant)
        .await
        .map_err(tenant_error(tenant))?;
    let ring = crate::recording::keyring(cfg, store.clone())?;
    let all = ring.identities(tenant).await?;
    let chosen: Vec<_> = all
        .iter()
        .filter(|k| key_id.is_none_or(|id| id == k.key.id))
        .collect();
    if chosen.is_empty() {
        return Err(AdminError::UnknownKey);
    }
    let mut out = String::new();
    for k in &chosen {
        let created = time::OffsetDateTime::from_unix_timestamp(k.key.created_at / 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "# callstream tenant: {tenant}\n# key id: {} ({})\n# created: {created}\n# public key: {}\n{}\n",
            k.key.id,
            k.key.status.as_str(),
            k.key.recipient,
            k.secret_string().expose(),
        ));
    }
    let ids: Vec<&str> = chosen.iter().map(|k| k.key.id.as_str()).collect();
    tracing::warn!(tenant_id = %tenant, key_ids = ?ids, "recording keys exported");
    Ok(Secret::new(out))
}

/// `recording key rotate`: retires the active key, makes a new one.
pub async fn recording_key_rotate(
    cfg: &Config,
    store: &Store,
    tenant: &str,
) -> Result<serde_json::Value, AdminError> {
    store
        .get_tenant(tenant)
        .await
        .map_err(tenant_error(tenant))?;
    let ring = crate::recording::keyring(cfg, store.clone())?;
    let key = ring.rotate(tenant).await?;
    Ok(serde_json::json!({"tenant_id": tenant, "key_id": key.id, "public_key": key.recipient}))
}

/// `model install`'s answer.
pub fn model_install_json(report: &crate::asr::model::InstallReport) -> serde_json::Value {
    serde_json::json!({
        "model": report.model.as_str(),
        "path": report.path,
        "sha256": report.sha256,
        "status": report.outcome.as_str(),
        "verified": report.verified,
        "fetch_seconds": report.fetch_time.as_secs_f64(),
        "convert_seconds": report.convert_time.as_secs_f64(),
    })
}
