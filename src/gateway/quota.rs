//! Tenant quotas (settings `quotas`), enforced where work starts: at call
//! answer (voice webhook → polite rejection), at stream start (close with
//! the reason) and at transcription job creation ([`check_transcription_job`],
//! 429). Every refusal is counted in `callstream_quota_rejections_total`.
//!
//! Monthly quotas count calendar months in UTC from the stored rows (see
//! `store::usage`); the concurrent-stream quota counts this node's open
//! streams (see `SessionRegistry::try_reserve_tenant`). Batch job creation is
//! checked by `api::quota::check_transcription_job`.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::metrics::Metrics;
use crate::store::{CallPolicy, Store, StoreError, TenantSettings};

/// A quota that can turn work away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    ConcurrentStreams,
    TranscriptionMinutes,
    RecordingMinutes,
}

impl Quota {
    /// Metric label (one of `metrics::QUOTAS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::ConcurrentStreams => "concurrent_streams",
            Quota::TranscriptionMinutes => "transcription_minutes",
            Quota::RecordingMinutes => "recording_minutes",
        }
    }

    /// The reason given to whoever was refused.
    pub fn message(self) -> &'static str {
        match self {
            Quota::ConcurrentStreams => "quota exceeded: concurrent streams",
            Quota::TranscriptionMinutes => "quota exceeded: monthly transcription minutes",
            Quota::RecordingMinutes => "quota exceeded: monthly recording minutes",
        }
    }
}

/// Where a quota was enforced (metric label, one of `metrics::QUOTA_POINTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    CallAnswer,
    StreamStart,
    JobCreate,
}

impl At {
    fn as_str(self) -> &'static str {
        match self {
            At::CallAnswer => "call_answer",
            At::StreamStart => "stream_start",
            At::JobCreate => "job_create",
        }
    }
}

/// `[start of this UTC month, start of the next)` in unix ms.
pub fn month_bounds(now_ms: i64) -> (i64, i64) {
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let first = |year: i32, month: Month| {
        Date::from_calendar_date(year, month, 1)
            .map(|d| PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc())
            .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    };
    let (y, m) = (now.year(), now.month());
    let next = if m == Month::December {
        first(y + 1, Month::January)
    } else {
        first(y, m.next())
    };
    (first(y, m), next)
}

/// Whether a monthly minutes quota is used up this month. Unlimited
/// quotas cost no query.
pub async fn monthly_exhausted(
    store: &Store,
    tenant_id: &str,
    settings: &TenantSettings,
    quota: Quota,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let limit = match quota {
        Quota::TranscriptionMinutes => settings.quotas.monthly_transcription_minutes,
        Quota::RecordingMinutes => settings.quotas.monthly_recording_minutes,
        Quota::ConcurrentStreams => return Ok(false),
    };
    let Some(limit) = limit else {
        return Ok(false);
    };
    let (from, to) = month_bounds(now_ms);
    let used_ms = match quota {
        Quota::TranscriptionMinutes => store.transcribed_ms(tenant_id, from, to).await?,
        _ => store.recorded_ms(tenant_id, from, to).await?,
    };
    Ok(used_ms >= i64::from(limit) * 60_000)
}

/// The monthly quotas a new call or stream would draw on: transcription
/// when its policy transcribes it live, recording when its policy records
/// it. The first one used up, counted as a rejection at `at`.
pub async fn exhausted_for_call(
    store: &Store,
    metrics: &Metrics,
    tenant_id: &str,
    settings: &TenantSettings,
    policy: &CallPolicy,
    at: At,
) -> Result<Option<Quota>, StoreError> {
    let now = crate::store::now_ms();
    let mut candidates = Vec::new();
    if policy.transcribe_live {
        candidates.push(Quota::TranscriptionMinutes);
    }
    if policy.record {
        candidates.push(Quota::RecordingMinutes);
    }
    for quota in candidates {
        if monthly_exhausted(store, tenant_id, settings, quota, now).await? {
            rejected(metrics, quota, at);
            return Ok(Some(quota));
        }
    }
    Ok(None)
}

/// Counts a refusal in the metrics.
pub fn rejected(metrics: &Metrics, quota: Quota, at: At) {
    metrics.quota_rejected(quota.as_str(), at.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_bounds_are_utc_calendar_months() {
        // 2026-11-26T04:00:00Z
        let now = 1_795_665_600_000;
        let (from, to) = month_bounds(now);
        assert_eq!(from, 1_793_491_200_000); // 2026-11-01
        assert_eq!(to, 1_796_083_200_000); // 2026-12-01
                                           // December rolls into next year.
        let (from, to) = month_bounds(1_797_000_000_000); // 2026-12-11
        assert_eq!(from, 1_796_083_200_000);
        assert_eq!(to, 1_798_761_600_000); // 2027-01-01
        assert_eq!(month_bounds(from), (from, to));
    }
}
