//! The tenant event log behind `/v1/events`: what happened to calls,
//! recordings and transcripts, as small JSON objects of ids.
//!
//! Events are written by the repository methods that make the change
//! (a stream claiming its call, a call ending, a recording finished, a
//! transcript completed), so every path that changes those states publishes
//! without knowing about it. Ids increase per tenant (one sequence row per
//! tenant, taken in the event's own transaction, so ids commit in order and
//! a reader resuming after id N misses nothing). The table is bounded by
//! count and age per tenant ([`EventRetention`]).
//!
//! Live delivery goes through an [`EventFanout`]: this process's
//! [`LocalFanout`] now; a PostgreSQL `LISTEN/NOTIFY` fan-out for several
//! nodes implements the same trait. A notice carries only (tenant, id):
//! subscribers read the events themselves, so a missed notice costs
//! latency, never an event.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sqlx::Row;
use tokio::sync::broadcast;

use super::{get_enum, text_enum, Result, Store, StoreError};

text_enum! {
    /// What an event says happened. `call.ringing`, `call.answered` and
    /// `call.held` are defined for call routing; today's gateway emits the
    /// others.
    pub enum EventType {
        CallRinging => "call.ringing",
        CallAnswered => "call.answered",
        CallStarted => "call.started",
        CallHeld => "call.held",
        CallCompleted => "call.completed",
        CallInterrupted => "call.interrupted",
        TranscriptReady => "transcript.ready",
        RecordingReady => "recording.ready",
    }
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TenantEvent {
    /// Increases per tenant; the SSE `id:` and the resume point.
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub call_id: Option<String>,
    /// Ids and statuses only: never numbers, names or transcript text.
    pub data: serde_json::Value,
    pub created_at: i64,
}

/// "Tenant T has events up to id N."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNotice {
    pub tenant_id: String,
    pub id: i64,
}

/// Tells subscribers that a tenant has new events. The local one is a
/// broadcast channel; one for several nodes would publish through
/// PostgreSQL `NOTIFY` and feed its `LISTEN`er's notices to subscribers.
pub trait EventFanout: Send + Sync {
    /// After an event is committed.
    fn notify(&self, notice: EventNotice);
    /// Notices from now on (a lagging receiver only loses notices, not events).
    fn subscribe(&self) -> broadcast::Receiver<EventNotice>;
}

/// Fan-out within this process.
pub struct LocalFanout(broadcast::Sender<EventNotice>);

impl Default for LocalFanout {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl EventFanout for LocalFanout {
    fn notify(&self, notice: EventNotice) {
        let _ = self.0.send(notice);
    }
    fn subscribe(&self) -> broadcast::Receiver<EventNotice> {
        self.0.subscribe()
    }
}

/// How many events a tenant keeps, and for how long (config `[events]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    pub max_per_tenant: i64,
    pub max_age_ms: i64,
}

impl Default for EventRetention {
    fn default() -> Self {
        Self {
            max_per_tenant: 10_000,
            max_age_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// The event log's live parts, shared by every clone of a [`Store`].
pub(super) struct EventLog {
    fanout: std::sync::RwLock<Arc<dyn EventFanout>>,
    max_per_tenant: AtomicI64,
    max_age_ms: AtomicI64,
}

impl Default for EventLog {
    fn default() -> Self {
        let r = EventRetention::default();
        Self {
            fanout: std::sync::RwLock::new(Arc::new(LocalFanout::default())),
            max_per_tenant: AtomicI64::new(r.max_per_tenant),
            max_age_ms: AtomicI64::new(r.max_age_ms),
        }
    }
}

const EVENT_COLUMNS: &str = "id, type, call_id, data, created_at";

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<TenantEvent> {
    let data: String = row.try_get("data")?;
    Ok(TenantEvent {
        id: row.try_get("id")?,
        kind: get_enum(row, "type")?,
        call_id: row.try_get("call_id")?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Sets the retention every clone of this store prunes with.
    pub fn set_event_retention(&self, retention: EventRetention) {
        self.events
            .max_per_tenant
            .store(retention.max_per_tenant, Ordering::Relaxed);
        self.events
            .max_age_ms
            .store(retention.max_age_ms, Ordering::Relaxed);
    }

    /// Replaces the fan-out (several nodes: one over PostgreSQL).
    pub fn set_event_fanout(&self, fanout: Arc<dyn EventFanout>) {
        if let Ok(mut f) = self.events.fanout.write() {
            *f = fanout;
        }
    }

    fn fanout(&self) -> Arc<dyn EventFanout> {
        match self.events.fanout.read() {
            Ok(f) => f.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Notices of new events, from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<EventNotice> {
        self.fanout().subscribe()
    }

    /// Records an event, prunes the tenant's log to its retention and tells
    /// subscribers. Called by the methods that make the change, after it is
    /// made, with the SQLite writer guard held (none is needed on
    /// PostgreSQL, where the sequence row's lock orders publishers). A
    /// failure is logged and swallowed: the change stands either way.
    pub(super) async fn publish_locked(
        &self,
        tenant_id: &str,
        kind: EventType,
        call_id: Option<&str>,
        data: serde_json::Value,
        now: i64,
    ) {
        match self
            .insert_event(tenant_id, kind, call_id, &data, now)
            .await
        {
            Ok(id) => self.fanout().notify(EventNotice {
                tenant_id: tenant_id.to_string(),
                id,
            }),
            Err(e) => tracing::warn!(error = %e, event = kind.as_str(), "event not recorded"),
        }
    }

    async fn insert_event(
        &self,
        tenant_id: &str,
        kind: EventType,
        call_id: Option<&str>,
        data: &serde_json::Value,
        now: i64,
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO event_sequences (tenant_id, last_id) VALUES ($1, 1) \
             ON CONFLICT (tenant_id) DO UPDATE SET last_id = event_sequences.last_id + 1 \
             RETURNING last_id",
        )
        .bind(tenant_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO events (tenant_id, id, type, call_id, data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(kind.as_str())
        .bind(call_id)
        .bind(data.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let keep = self.events.max_per_tenant.load(Ordering::Relaxed);
        let max_age = self.events.max_age_ms.load(Ordering::Relaxed);
        sqlx::query("DELETE FROM events WHERE tenant_id = $1 AND (id <= $2 OR created_at < $3)")
            .bind(tenant_id)
            .bind(id - keep)
            .bind(now - max_age)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Records an event from outside the repositories (tests; later, the
    /// call routing that emits `call.ringing`/`call.held`).
    pub async fn publish_event(
        &self,
        tenant_id: &str,
        kind: EventType,
        call_id: Option<&str>,
        data: serde_json::Value,
        now: i64,
    ) {
        let _writer = self.writer().await;
        self.publish_locked(tenant_id, kind, call_id, data, now)
            .await;
    }

    /// The tenant's events after `after_id`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        tenant_id: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<TenantEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The tenant's newest event id (0 before its first event).
    pub async fn last_event_id(&self, tenant_id: &str) -> Result<i64> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT last_id FROM event_sequences WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(self.pool())
                .await?;
        Ok(id.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;
    use serde_json::json;

    #[tokio::test]
    async fn ids_increase_per_tenant_and_the_log_is_bounded() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();
            let mut notices = store.subscribe_events();
            store.set_event_retention(EventRetention {
                max_per_tenant: 3,
                max_age_ms: 1_000_000,
            });
            for i in 0..5 {
                store
                    .publish_event(
                        &a.id,
                        EventType::CallStarted,
                        Some("c1"),
                        json!({"i": i}),
                        10,
                    )
                    .await;
            }
            store
                .publish_event(&b.id, EventType::RecordingReady, None, json!({}), 10)
                .await;
            assert_eq!(store.last_event_id(&a.id).await.unwrap(), 5);
            assert_eq!(store.last_event_id(&b.id).await.unwrap(), 1);
            let kept = store.events_after(&a.id, 0, 100).await.unwrap();
            assert_eq!(kept.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
            assert_eq!(kept[0].data, json!({"i": 2}));
            assert_eq!(store.events_after(&a.id, 4, 100).await.unwrap().len(), 1);
            let other = store.events_after(&b.id, 0, 100).await.unwrap();
            assert_eq!(other.len(), 1);
            assert_eq!(other[0].kind, EventType::RecordingReady);
            assert_eq!(
                notices.recv().await.unwrap(),
                EventNotice {
                    tenant_id: a.id.clone(),
                    id: 1
                }
            );
            // Old events go by age too.
            store
                .publish_event(
                    &a.id,
                    EventType::CallCompleted,
                    Some("c1"),
                    json!({}),
                    2_000_000,
                )
                .await;
            let kept = store.events_after(&a.id, 0, 100).await.unwrap();
            assert_eq!(kept.iter().map(|e| e.id).collect::<Vec<_>>(), [6]);
        }
    }
}
