//! `GET /v1/usage?from=&to=`: what the tenant used in a time range, and
//! where it stands against its quotas this month.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use super::auth::Auth;
use super::error::ApiQuery;
use super::{AppError, AppState};
use crate::gateway::quota::month_bounds;
use crate::store::{now_ms, CallUsage};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// Start, inclusive: RFC 3339 (`2026-11-01T00:00:00Z`) or a UTC date
    /// (`2026-11-01`). Default: the start of this month (UTC).
    from: Option<String>,
    /// End, exclusive, same forms. Default: now.
    to: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Minutes {
    count: i64,
    minutes: f64,
}

impl From<CallUsage> for Minutes {
    fn from(u: CallUsage) -> Self {
        Self {
            count: u.count,
            minutes: minutes(u.duration_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CallsByDirection {
    inbound: Minutes,
    outbound: Minutes,
}

#[derive(Debug, Serialize)]
pub struct QuotaUse {
    /// `null`: unlimited.
    limit: Option<u32>,
    used: f64,
}

#[derive(Debug, Serialize)]
pub struct QuotaStatus {
    /// Streams open now on this node against the limit.
    concurrent_streams: QuotaUse,
    /// This calendar month (UTC).
    monthly_transcription_minutes: QuotaUse,
    monthly_recording_minutes: QuotaUse,
}

#[derive(Debug, Serialize)]
pub struct Usage {
    from: String,
    to: String,
    calls: CallsByDirection,
    recorded_minutes: f64,
    transcribed_minutes: f64,
    /// Bytes still stored of the recordings made within the range.
    storage_bytes: i64,
    /// Most media streams open at once within the range.
    concurrent_streams_peak: u32,
    quotas: QuotaStatus,
}

/// Minutes to two decimals.
fn minutes(ms: i64) -> f64 {
    (ms as f64 / 600.0).round() / 100.0
}

fn parse_instant(name: &str, raw: &str) -> Result<i64, AppError> {
    let t = OffsetDateTime::parse(raw, &Rfc3339)
        .or_else(|_| {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            Date::parse(raw, &fmt).map(|d| PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc())
        })
        .map_err(|_| {
            AppError::BadRequest(format!(
                "{name} must be an RFC 3339 time (2026-11-01T00:00:00Z) or a date (2026-11-01)"
            ))
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| AppError::BadRequest(format!("{name} is out of range")))
}

fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub async fn get(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Json<Usage>, AppError> {
    let now = now_ms();
    let (month_start, month_end) = month_bounds(now);
    let from = match &params.from {
        Some(raw) => parse_instant("from", raw)?,
        None => month_start,
    };
    let to = match &params.to {
        Some(raw) => parse_instant("to", raw)?,
        None => now,
    };
    if from >= to {
        return Err(AppError::BadRequest("from must be before to".into()));
    }
    let tenant = &who.tenant_id;
    let totals = state.store.usage_totals(tenant, from, to).await?;
    let settings = state.store.tenant_settings(tenant).await?;
    let q = &settings.quotas;
    let quotas = QuotaStatus {
        concurrent_streams: QuotaUse {
            limit: q.max_concurrent_streams,
            used: f64::from(state.sessions.tenant_streams(tenant)),
        },
        monthly_transcription_minutes: QuotaUse {
            limit: q.monthly_transcription_minutes,
            used: minutes(
                state
                    .store
                    .transcribed_ms(tenant, month_start, month_end)
                    .await?,
            ),
        },
        monthly_recording_minutes: QuotaUse {
            limit: q.monthly_recording_minutes,
            used: minutes(
                state
                    .store
                    .recorded_ms(tenant, month_start, month_end)
                    .await?,
            ),
        },
    };
    Ok(Json(Usage {
        from: format_ms(from),
        to: format_ms(to),
        calls: CallsByDirection {
            inbound: totals.inbound.into(),
            outbound: totals.outbound.into(),
        },
        recorded_minutes: minutes(totals.recorded_ms),
        transcribed_minutes: minutes(totals.transcribed_ms),
        storage_bytes: totals.storage_bytes,
        concurrent_streams_peak: totals.concurrent_streams_peak,
        quotas,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_minutes() {
        assert_eq!(
            parse_instant("from", "2026-11-01").unwrap(),
            1_793_491_200_000
        );
        assert_eq!(
            parse_instant("from", "2026-11-01T01:00:00+01:00").unwrap(),
            1_793_491_200_000
        );
        let err = parse_instant("to", "yesterday").unwrap_err().to_string();
        assert!(err.starts_with("to must be"), "{err}");
        assert_eq!(minutes(90_000), 1.5);
        assert_eq!(minutes(1), 0.0);
        assert_eq!(format_ms(1_793_491_200_000), "2026-11-01T00:00:00Z");
    }
}
