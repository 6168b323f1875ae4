//! Download of a provider-side recording (Twilio's own call recording)
//! into our encrypted storage, linked to the call.
//!
//! Queued by the recording status callback once the provider says the
//! recording is `completed`, one job per recording (the job's dedup key is
//! the provider's recording id). The download uses the tenant's own
//! credentials; network trouble, 429 and 5xx are retried with backoff,
//! other refusals fail the job and are logged on the call.
//!
//! A call whose policy does not record it (`record_calls` off when it
//! started, or now) gets nothing downloaded: the job ends with
//! `provider_recording_skipped` in the call's log.
//!
//! Exactly once: a successful store is logged on the call
//! (`provider_recording_stored` with the provider's recording id) and a
//! re-run that finds that log stores nothing. (A crash between the store
//! and the log could leave one unlinked duplicate object; the call keeps
//! the first recording linked either way.)

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{JobContext, JobError, JobHandler};
use crate::providers::{
    Credentials, ProviderError, RecordingFetch, RecordingLocator, TelephonyProvider,
};
use crate::recording::{RecordingError, Recordings};
use crate::store::{now_ms, Job, Store, StoreError};

/// `jobs.kind` of provider recording downloads.
pub const KIND: &str = "provider_recording_fetch";

/// Largest provider recording accepted (a 4 h stereo 8 kHz WAV is ~460 MB).
pub const MAX_RECORDING_BYTES: u64 = 512 * 1024 * 1024;

/// The call log event of a stored provider recording.
pub const STORED_EVENT: &str = "provider_recording_stored";

/// The call log event of a provider recording not fetched because the
/// call's policy does not record it.
pub const SKIPPED_EVENT: &str = "provider_recording_skipped";

/// A fetch job's payload: what the recording callback said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchPayload {
    pub account_sid: String,
    pub call_sid: String,
    pub recording_sid: String,
    pub url: String,
    pub channels: Option<u8>,
}

/// Runs [`KIND`] jobs.
pub struct RecordingFetchHandler {
    pub store: Store,
    pub recordings: Recordings,
    pub provider: Arc<dyn TelephonyProvider>,
}

fn store_err(e: StoreError) -> JobError {
    match e {
        StoreError::NotFound => JobError::permanent("not found"),
        other => JobError::retry(other.to_string()),
    }
}

fn provider_err(e: ProviderError) -> JobError {
    if e.is_retryable() {
        JobError::Retry {
            message: e.to_string(),
            after: e.retry_after(),
        }
    } else {
        JobError::permanent(e.to_string())
    }
}

impl RecordingFetchHandler {
    async fn log(
        &self,
        tenant: &str,
        call_id: Option<&str>,
        event: &str,
        detail: serde_json::Value,
    ) {
        if let Some(call_id) = call_id {
            if let Err(e) = self
                .store
                .append_call_log(tenant, call_id, event, &detail, now_ms())
                .await
            {
                tracing::warn!(error = %e, "cannot log on the call");
            }
        }
    }

    async fn fetch(
        &self,
        job: &Job,
        p: &FetchPayload,
        call_id: Option<&str>,
    ) -> Result<serde_json::Value, JobError> {
        let tenant = job.tenant_id.as_str();
        let creds = self
            .store
            .twilio_credentials_for(&p.account_sid)
            .await
            .map_err(store_err)?;
        if creds.tenant_id != tenant {
            return Err(JobError::permanent("the account belongs to another tenant"));
        }
        let creds = Credentials::new(creds.account_sid, creds.auth_token);
        let download = self
            .provider
            .fetch_recording(
                &creds,
                &RecordingLocator::Url(p.url.clone()),
                RecordingFetch {
                    dual_channel: p.channels == Some(2),
                },
            )
            .await
            .map_err(provider_err)?;
        let bytes = download
            .into_bytes(MAX_RECORDING_BYTES)
            .await
            .map_err(provider_err)?;
        let size = bytes.len();
        let rec = self
            .recordings
            .store_wav(tenant, call_id, std::io::Cursor::new(bytes))
            .await
            .map_err(|e| match e {
                e @ (RecordingError::InvalidWav(_) | RecordingError::Corrupt(_)) => {
                    JobError::permanent(e.to_string())
                }
                other => JobError::retry(other.to_string()),
            })?;
        let detail = serde_json::json!({
            "recording_sid": p.recording_sid,
            "recording_id": rec.id,
            "bytes": size,
            "duration_ms": rec.duration_ms,
            "channels": rec.channels,
        });
        self.log(tenant, call_id, STORED_EVENT, detail).await;
        Ok(serde_json::json!({
            "recording_id": rec.id,
            "recording_sid": p.recording_sid,
            "call_id": call_id,
        }))
    }
}

#[async_trait::async_trait]
impl JobHandler for RecordingFetchHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn run(&self, job: &Job, _ctx: &JobContext) -> Result<serde_json::Value, JobError> {
        let p: FetchPayload = serde_json::from_value(job.payload.clone())
            .map_err(|_| JobError::permanent("invalid job payload"))?;
        let tenant = job.tenant_id.as_str();
        let call = self
            .store
            .find_call_by_external_id(tenant, self.provider.name(), &p.call_sid)
            .await
            .map_err(store_err)?;
        let call_id = call.as_ref().map(|c| c.id.as_str());
        if let Some(call_id) = call_id {
            let logs = self
                .store
                .list_call_logs(tenant, call_id)
                .await
                .map_err(store_err)?;
            if let Some(done) = logs
                .iter()
                .find(|l| l.event == STORED_EVENT && l.detail["recording_sid"] == p.recording_sid)
            {
                return Ok(serde_json::json!({
                    "recording_id": done.detail["recording_id"],
                    "recording_sid": p.recording_sid,
                    "call_id": call_id,
                    "reused": true,
                }));
            }
        }
        // Recording off for the call (or, for a call we do not know, for
        // the tenant): nothing is downloaded, nothing stored.
        let policy = self
            .store
            .policy_after_call(tenant, call.as_ref())
            .await
            .map_err(store_err)?;
        if !policy.record {
            let detail = serde_json::json!({
                "recording_sid": p.recording_sid,
                "reason": "recording is off for this call",
            });
            self.log(tenant, call_id, SKIPPED_EVENT, detail).await;
            return Ok(serde_json::json!({
                "recording_sid": p.recording_sid,
                "call_id": call_id,
                "skipped": "recording is off for this call",
            }));
        }
        let outcome = self.fetch(job, &p, call_id).await;
        match &outcome {
            Err(JobError::Permanent(error)) => {
                let detail = serde_json::json!({"recording_sid": p.recording_sid, "error": error});
                self.log(tenant, call_id, "provider_recording_failed", detail)
                    .await;
            }
            Err(JobError::Retry { message, .. }) => {
                let detail = serde_json::json!({
                    "recording_sid": p.recording_sid,
                    "attempt": job.attempts,
                    "error": message,
                });
                self.log(tenant, call_id, "provider_recording_fetch_error", detail)
                    .await;
            }
            Ok(_) => {}
        }
        outcome
    }
}
