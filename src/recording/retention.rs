//! Retention: deletes recordings older than their retention: the shorter
//! of their call's pinned `retention_days` (its policy) and the tenant's
//! current one (file and key material via [`Recordings::delete`]; the
//! row stays as `deleted`, the call log says when and why). A background
//! task sweeps on an interval; one sweep is a plain function of "now" so
//! tests can move the clock instead of waiting days.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{RecordingError, Recordings};

/// Rows looked at per query; a sweep loops until a tenant has no more.
const BATCH: u32 = 200;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub deleted: usize,
    /// Recordings whose deletion failed (logged; retried next sweep).
    pub failed: usize,
}

/// Deletes, for every tenant, the recordings created more than their
/// retention (see the module docs) before `now_ms`. One recording that
/// cannot be deleted does not stop the others.
pub async fn sweep(recordings: &Recordings, now_ms: i64) -> Result<SweepReport, RecordingError> {
    let store = recordings.store();
    let mut report = SweepReport::default();
    for (tenant, current_days) in store.tenant_retention().await? {
        let mut skip = std::collections::HashSet::new();
        loop {
            let batch = store
                .recordings_past_retention(&tenant, now_ms, current_days, BATCH + skip.len() as u32)
                .await?;
            let todo: Vec<_> = batch
                .iter()
                .filter(|(r, _)| !skip.contains(&r.id))
                .collect();
            if todo.is_empty() {
                break;
            }
            for (rec, days) in todo {
                let reason = format!("retention: older than {days} days");
                match recordings.delete(&tenant, &rec.id, &reason).await {
                    Ok(_) => report.deleted += 1,
                    Err(e) => {
                        tracing::error!(recording_id = %rec.id, error = %e, "retention could not delete a recording; will retry");
                        report.failed += 1;
                        skip.insert(rec.id.clone());
                    }
                }
            }
        }
    }
    if report.deleted > 0 || report.failed > 0 {
        tracing::info!(
            deleted = report.deleted,
            failed = report.failed,
            "retention sweep"
        );
    }
    Ok(report)
}

/// The clock a worker reads (ms since the epoch); injectable for tests.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// Runs [`sweep`] now and then every `interval` until `stop` is cancelled
/// (the task then ends; await its handle to know).
/// A failed sweep is logged and retried at the next tick.
pub fn spawn(
    recordings: Recordings,
    interval: Duration,
    clock: Clock,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            // A sweep in progress finishes (it is not cut between deleting
            // a file and marking its row).
            if let Err(e) = sweep(&recordings, clock()).await {
                tracing::error!(error = %e, "retention sweep failed; will retry");
            }
        }
    })
}

/// The system clock.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(crate::store::now_ms)
}
