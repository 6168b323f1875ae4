//! The quota check of job creation, as an HTTP answer; the quotas
//! themselves live in [`crate::gateway::quota`].

use super::{AppError, AppState};
use crate::gateway::quota::{monthly_exhausted, rejected, At, Quota};

/// For creating a batch transcription job: 429 `quota_exceeded` when the
/// tenant's monthly transcription minutes are used up.
pub async fn check_transcription_job(state: &AppState, tenant_id: &str) -> Result<(), AppError> {
    let settings = state.store.tenant_settings(tenant_id).await?;
    let quota = Quota::TranscriptionMinutes;
    if monthly_exhausted(
        &state.store,
        tenant_id,
        &settings,
        quota,
        crate::store::now_ms(),
    )
    .await?
    {
        rejected(&state.metrics, quota, At::JobCreate);
        return Err(AppError::QuotaExceeded(quota.message().into()));
    }
    Ok(())
}
