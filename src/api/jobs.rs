//! Job endpoints: queue a batch re-transcription of a call's recording and
//! follow it; the Twilio recording status callback that queues the
//! download of a provider-side recording. The work itself runs in
//! [`crate::jobs`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::auth::Auth;
use super::{AppError, AppState};
use crate::jobs::{fetch, transcribe};
use crate::providers::{RecordingStatus, StatusEvent, WebhookError, WebhookRequest};
use crate::store::{now_ms, Job, JobStatus, NewJob};

/// A transcription job as the API shows it.
#[derive(Debug, Serialize)]
pub struct TranscriptionJob {
    pub id: String,
    pub call_id: Option<String>,
    pub recording_id: Option<String>,
    pub status: JobStatus,
    /// 0.0–1.0.
    pub progress: f64,
    pub attempts: i64,
    pub max_attempts: i64,
    /// The last attempt's error (kept while a retry is pending).
    pub error: Option<String>,
    /// When a queued retry may start (unix ms).
    pub run_after: i64,
    /// The transcript made, once succeeded (`GET /v1/calls/{id}/transcript`
    /// shows it: it becomes the call's transcript).
    pub transcript_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<Job> for TranscriptionJob {
    fn from(j: Job) -> Self {
        let text = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_string);
        Self {
            call_id: text(&j.payload, "call_id"),
            recording_id: text(&j.payload, "recording_id"),
            transcript_id: j.result.as_ref().and_then(|r| text(r, "transcript_id")),
            id: j.id,
            status: j.status,
            progress: j.progress,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            error: j.error,
            run_after: j.run_after,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// `POST /v1/calls/{id}/transcriptions`: 202 with the queued job; 404 for
/// an unknown call, 409 when it has no readable recording. Takes no body.
pub async fn create_transcription(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(call_id): Path<String>,
) -> Result<Response, AppError> {
    let tenant = who.tenant_id.as_str();
    let call = state.store.get_call(tenant, &call_id).await?;
    if call.recording_id.is_none() {
        return Err(AppError::Conflict("the call has no recording".into()));
    }
    // Monthly transcription minutes (429 and counted when used up).
    super::quota::check_transcription_job(&state, tenant).await?;
    let job = transcribe::queue_for_call(&state.store, &call, state.config.jobs.max_attempts, None)
        .await
        .map_err(|e| match e {
            transcribe::QueueError::Store(e) => AppError::from(e),
            other => AppError::Conflict(other.to_string()),
        })?;
    let location = format!("/v1/transcription-jobs/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(TranscriptionJob::from(job)),
    )
        .into_response())
}

/// `GET /v1/transcription-jobs/{id}`.
pub async fn get_transcription_job(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<TranscriptionJob>, AppError> {
    let job = state.store.get_job(&who.tenant_id, &id).await?;
    if job.kind != transcribe::KIND {
        return Err(AppError::NotFound);
    }
    Ok(Json(job.into()))
}

/// Largest recording callback body read (Twilio's are about 1 KiB).
const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

fn webhook_error(e: WebhookError) -> Response {
    let (status, code) = match e {
        WebhookError::MissingSignature | WebhookError::BadSignature => {
            (StatusCode::FORBIDDEN, "forbidden")
        }
        WebhookError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        _ => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": e.to_string()}})),
    )
        .into_response()
}

/// `POST /v1/providers/twilio/recording`: Twilio's recording status
/// callback, authenticated by `X-Twilio-Signature` with the auth token of
/// the tenant owning the `AccountSid`. `completed` queues one download job
/// per `RecordingSid` (repeated callbacks find the same job); every status
/// is noted in the call's log. Answers 204.
pub async fn twilio_recording_callback(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > MAX_WEBHOOK_BYTES {
        return webhook_error(WebhookError::TooLarge(MAX_WEBHOOK_BYTES));
    }
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = WebhookRequest {
        url: format!(
            "{}/{}",
            state.config.public_url().as_str().trim_end_matches('/'),
            path_and_query.trim_start_matches('/')
        ),
        content_type: header_text("content-type"),
        body,
        signature: header_text(crate::providers::twilio::SIGNATURE_HEADER),
        idempotency_token: header_text("i-twilio-idempotency-token"),
    };
    let provider = state.provider.clone();
    let account = match provider.webhook_account_id(&request) {
        Ok(a) => a,
        Err(e) => return webhook_error(e),
    };
    // An unknown account cannot be verified: the same answer as a bad
    // signature, so callers learn nothing about which accounts exist.
    let creds = match state.store.twilio_credentials_for(&account).await {
        Ok(c) => c,
        Err(crate::store::StoreError::NotFound) => {
            return webhook_error(WebhookError::BadSignature)
        }
        Err(e) => return AppError::from(e).into_response(),
    };
    if let Err(e) = provider.verify_webhook(&creds.auth_token, &request) {
        tracing::warn!(url = %request.url, "recording callback refused: {e}");
        return webhook_error(e);
    }
    let event = match provider.parse_status_callback(&request) {
        Ok(StatusEvent::Recording(e)) => e,
        Ok(_) => return webhook_error(WebhookError::Malformed("not a recording status callback")),
        Err(e) => return webhook_error(e),
    };
    let tenant = creds.tenant_id.as_str();
    let now = now_ms();
    let call = match state
        .store
        .find_call_by_external_id(tenant, provider.name(), &event.call_id)
        .await
    {
        Ok(c) => c,
        Err(e) => return AppError::from(e).into_response(),
    };
    let mut job_id = None;
    if event.status == RecordingStatus::Completed {
        let Some(url) = event.url.clone() else {
            return webhook_error(WebhookError::MissingField("RecordingUrl"));
        };
        let payload = fetch::FetchPayload {
            account_sid: creds.account_sid.clone(),
            call_sid: event.call_id.clone(),
            recording_sid: event.recording_id.clone(),
            url,
            channels: event.channels,
        };
        let payload = match serde_json::to_value(&payload) {
            Ok(p) => p,
            Err(e) => return AppError::Internal(e.to_string()).into_response(),
        };
        match state
            .store
            .enqueue_job(
                tenant,
                &NewJob {
                    kind: fetch::KIND,
                    payload: &payload,
                    max_attempts: state.config.jobs.max_attempts,
                    dedup_key: Some(&event.recording_id),
                    run_after: None,
                },
                now,
            )
            .await
        {
            Ok(job) => job_id = Some(job.id),
            Err(e) => return AppError::from(e).into_response(),
        }
    }
    if let Some(call) = call {
        // A repeated callback (same recording, same status) is logged once.
        match state.store.list_call_logs(tenant, &call.id).await {
            Ok(logs)
                if logs.iter().any(|l| {
                    l.event == "provider_recording_status"
                        && l.detail["recording_sid"] == event.recording_id
                        && l.detail["status"] == event.status.as_str()
                }) =>
            {
                return StatusCode::NO_CONTENT.into_response()
            }
            Ok(_) => {}
            Err(e) => return AppError::from(e).into_response(),
        }
        let detail = serde_json::json!({
            "recording_sid": event.recording_id,
            "status": event.status.as_str(),
            "job_id": job_id,
        });
        if let Err(e) = state
            .store
            .append_call_log(tenant, &call.id, "provider_recording_status", &detail, now)
            .await
        {
            return AppError::from(e).into_response();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
