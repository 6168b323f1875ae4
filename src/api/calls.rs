//! Call records: list and detail, tenant-scoped.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::error::ApiQuery;
use super::{AppError, AppState};
use crate::store::{Call, CallLog, CallPage, Recording, Transcript};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<CallPage>, AppError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(AppError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let page = state
        .store
        .list_calls(&who.tenant_id, limit, params.cursor.as_deref())
        .await?;
    Ok(Json(page))
}

#[derive(Debug, Serialize)]
pub struct CallDetail {
    #[serde(flatten)]
    call: Call,
    logs: Vec<CallLog>,
    /// The call's transcript status and, once the call has ended, its summary.
    transcript: Option<Transcript>,
    /// The call's recording (`recording_id`): status, duration, size.
    recording: Option<Recording>,
}

pub async fn get(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<CallDetail>, AppError> {
    let call = state.store.get_call(&who.tenant_id, &id).await?;
    let logs = state.store.list_call_logs(&who.tenant_id, &id).await?;
    let transcript = match &call.transcript_id {
        Some(t) => Some(state.store.get_transcript(&who.tenant_id, t).await?),
        None => None,
    };
    let recording = match &call.recording_id {
        Some(r) => Some(state.store.get_recording(&who.tenant_id, r).await?),
        None => None,
    };
    Ok(Json(CallDetail {
        call,
        logs,
        transcript,
        recording,
    }))
}
