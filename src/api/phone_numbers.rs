//! `/v1/phone-numbers`: buy numbers through the provider (pointed at our
//! voice and status webhooks), list them, release them.
//!
//! Nothing is left half-written: a `pending` row claims the number before
//! the provider is asked and is removed if the provider refuses; a number
//! bought but not recorded is released again; a release the provider
//! refuses leaves the number active.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::error::ApiJson;
use super::{AppError, AppState};
use crate::phone::E164;
use crate::providers::{ProviderError, ProvisionRequest};
use crate::store::{now_ms, NumberStatus, PhoneNumber};

/// Where the provider sends a number's inbound calls and their status.
pub const VOICE_PATH: &str = "/v1/providers/twilio/voice";
pub const STATUS_PATH: &str = "/v1/providers/twilio/status";

/// Longest friendly name (Twilio's limit).
const MAX_FRIENDLY_NAME: usize = 64;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionBody {
    /// The number to buy, international format (`+1 415 555 2671`,
    /// `+14155552671`, `0044…`); stored in E.164.
    number: String,
    friendly_name: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NumberList {
    phone_numbers: Vec<PhoneNumber>,
}

pub async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<Json<NumberList>, AppError> {
    Ok(Json(NumberList {
        phone_numbers: state.store.list_numbers(&who.tenant_id).await?,
    }))
}

pub async fn provision(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(body): ApiJson<ProvisionBody>,
) -> Result<(StatusCode, Json<PhoneNumber>), AppError> {
    let number = E164::normalize(&body.number, None)
        .map_err(|e| AppError::BadRequest(format!("number: {e}")))?;
    if let Some(name) = &body.friendly_name {
        if name.trim().is_empty()
            || name.chars().count() > MAX_FRIENDLY_NAME
            || name.chars().any(char::is_control)
        {
            return Err(AppError::BadRequest(format!(
                "friendly_name must be 1 to {MAX_FRIENDLY_NAME} printable characters"
            )));
        }
    }
    let creds = state.provider_credentials(&who.tenant_id).await?;
    let request = ProvisionRequest {
        number: number.clone(),
        voice_url: state.public_endpoint(VOICE_PATH)?,
        status_callback: Some(state.public_endpoint(STATUS_PATH)?),
        friendly_name: body.friendly_name.clone(),
    };
    let tenant = &who.tenant_id;
    let pending = state
        .store
        .insert_pending_number(
            tenant,
            number.as_str(),
            state.provider.name(),
            body.friendly_name.as_deref(),
            now_ms(),
        )
        .await?;
    let bought = match state.provider.provision_number(&creds, &request).await {
        Ok(bought) => bought,
        Err(e) => {
            // A timeout leaves the outcome unknown at the provider; say so
            // in the log, keep nothing here so the client can retry.
            if matches!(e, ProviderError::Timeout(_) | ProviderError::Transport(_)) {
                tracing::warn!(number_id = %pending.id, error = %e, "provisioning outcome unknown");
            }
            if let Err(db) = state.store.delete_pending_number(tenant, &pending.id).await {
                tracing::error!(number_id = %pending.id, error = %db, "pending number left behind");
            }
            return Err(e.into());
        }
    };
    match state
        .store
        .activate_number(
            tenant,
            &pending.id,
            &bought.provider_id,
            bought.friendly_name.as_deref(),
            now_ms(),
        )
        .await
    {
        Ok(row) => Ok((StatusCode::CREATED, Json(row))),
        Err(db) => {
            // Bought but not recorded: give it back rather than pay for a
            // number nobody can see.
            tracing::error!(number_id = %pending.id, error = %db, "bought number not recorded; releasing it");
            if let Err(e) = state
                .provider
                .release_number(&creds, &bought.provider_id)
                .await
            {
                tracing::error!(
                    number_id = %pending.id,
                    provider_id = %bought.provider_id,
                    error = %e,
                    "number bought but neither recorded nor released: release it by hand"
                );
            }
            Err(AppError::Internal(db.to_string()))
        }
    }
}

pub async fn release(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let tenant = &who.tenant_id;
    let number = state.store.get_number(tenant, &id).await?;
    let (NumberStatus::Active, Some(provider_id)) = (number.status, number.provider_id.clone())
    else {
        return Err(AppError::Conflict(format!(
            "the number is {}, not active",
            number.status
        )));
    };
    let creds = state.provider_credentials(tenant).await?;
    state
        .store
        .set_number_status(
            tenant,
            &id,
            NumberStatus::Active,
            NumberStatus::Releasing,
            now_ms(),
        )
        .await
        .map_err(|_| AppError::Conflict("the number is already being released".into()))?;
    match state.provider.release_number(&creds, &provider_id).await {
        // Gone at the provider already: released all the same.
        Ok(()) | Err(ProviderError::Api { status: 404, .. }) => {
            state
                .store
                .set_number_status(
                    tenant,
                    &id,
                    NumberStatus::Releasing,
                    NumberStatus::Released,
                    now_ms(),
                )
                .await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => {
            if let Err(db) = state
                .store
                .set_number_status(
                    tenant,
                    &id,
                    NumberStatus::Releasing,
                    NumberStatus::Active,
                    now_ms(),
                )
                .await
            {
                tracing::error!(number_id = %id, error = %db, "number left releasing");
            }
            Err(e.into())
        }
    }
}
