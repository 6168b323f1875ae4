//! `GET/PUT /v1/settings/telephony`: the tenant's telephony settings
//! (recording, live transcription, retention, consent announcement, PII
//! redaction, quotas) as one JSON document.

use axum::extract::State;
use axum::Json;

use super::auth::Auth;
use super::error::ApiJson;
use super::{AppError, AppState};
use crate::store::TenantSettings;

pub async fn get(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<Json<TenantSettings>, AppError> {
    Ok(Json(state.store.tenant_settings(&who.tenant_id).await?))
}

/// Replaces the whole document: every field must be present (`null` where
/// allowed), so a client that has not seen a newer field cannot reset it
/// by leaving it out. Unknown fields, wrong types and out-of-range values
/// are refused with 400 and nothing is written.
pub async fn put(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<TenantSettings>, AppError> {
    let template = serde_json::to_value(TenantSettings::default())
        .map_err(|e| AppError::Internal(e.to_string()))?;
    require_all_fields(&template, &body, "")?;
    let settings: TenantSettings =
        serde_json::from_value(body).map_err(|e| AppError::BadRequest(e.to_string()))?;
    settings.validate().map_err(AppError::BadRequest)?;
    state
        .store
        .set_tenant_settings(&who.tenant_id, &settings)
        .await?;
    Ok(Json(settings))
}

/// Every key of `template`'s objects must appear in `body` (recursively),
/// and where `template` has an object so must `body`: serde would also take
/// a struct as an array, and `[]` would then reset everything to defaults.
fn require_all_fields(
    template: &serde_json::Value,
    body: &serde_json::Value,
    prefix: &str,
) -> Result<(), AppError> {
    let Some(template) = template.as_object() else {
        // Other type mismatches are left to the typed parse, which names them.
        return Ok(());
    };
    let Some(body) = body.as_object() else {
        let what = match prefix.strip_suffix('.') {
            Some(name) => format!("`{name}`"),
            None => "the settings document".to_string(),
        };
        return Err(AppError::BadRequest(format!(
            "{what} must be a JSON object"
        )));
    };
    for (key, inner) in template {
        let name = format!("{prefix}{key}");
        let Some(value) = body.get(key) else {
            return Err(AppError::BadRequest(format!(
                "missing field `{name}`: PUT takes the whole settings document (GET it first)"
            )));
        };
        require_all_fields(inner, value, &format!("{name}."))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_are_named_with_their_path() {
        let template = serde_json::to_value(TenantSettings::default()).unwrap();
        let mut body = template.clone();
        assert!(require_all_fields(&template, &body, "").is_ok());
        body["quotas"]
            .as_object_mut()
            .unwrap()
            .remove("monthly_recording_minutes");
        let err = require_all_fields(&template, &body, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`quotas.monthly_recording_minutes`"), "{err}");
        body["quotas"] = template["quotas"].clone();
        body.as_object_mut().unwrap().remove("record_calls");
        let err = require_all_fields(&template, &body, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`record_calls`"), "{err}");
        // Not an object, anywhere an object belongs.
        let err = require_all_fields(&template, &serde_json::json!([]), "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the settings document must be a JSON object"),
            "{err}"
        );
        let mut body = template.clone();
        body["quotas"] = serde_json::json!([]);
        let err = require_all_fields(&template, &body, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`quotas` must be a JSON object"), "{err}");
        // Other types are left to the typed parse.
        body["quotas"] = template["quotas"].clone();
        body["retention_days"] = serde_json::json!([]);
        assert!(require_all_fields(&template, &body, "").is_ok());
    }
}
