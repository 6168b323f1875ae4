//! Recording rows and the per-tenant recording keys that encrypt them.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_enum, text_enum, Result, Store, StoreError};

text_enum! {
    /// Lifecycle of a recording: `recording` while a stream writes it, then
    /// `completed` (finalised with everything received), `interrupted`
    /// (recovered after the writing process died), `failed` (incomplete or
    /// absent: storage, keys or an overflowing sink), `deleted` (file and key
    /// material gone, row kept).
    pub enum RecordingStatus {
        Recording => "recording",
        Completed => "completed",
        Interrupted => "interrupted",
        Failed => "failed",
        Deleted => "deleted",
    }
}

text_enum! {
    pub enum RecordingSource {
        /// Written by our recorder from the media stream.
        Stream => "stream",
        /// Fetched from the provider's own recording.
        Provider => "provider",
    }
}

text_enum! {
    pub enum RecordingKeyStatus {
        Active => "active",
        Retired => "retired",
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Recording {
    pub id: String,
    pub tenant_id: String,
    pub call_id: Option<String>,
    pub status: RecordingStatus,
    pub source: RecordingSource,
    /// Storage key of the object; internal, not for clients.
    #[serde(skip_serializing)]
    pub storage_path: Option<String>,
    pub format: String,
    pub channels: i64,
    pub sample_rate: i64,
    pub duration_ms: Option<i64>,
    /// Size of the decrypted WAV (what a download serves).
    pub bytes: Option<i64>,
    /// Size at rest (ciphertext).
    pub stored_bytes: Option<i64>,
    pub key_id: Option<String>,
    pub algorithm: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

/// A recording about to be written.
#[derive(Debug, Clone)]
pub struct NewRecording<'a> {
    pub id: &'a str,
    pub call_id: Option<&'a str>,
    pub source: RecordingSource,
    pub status: RecordingStatus,
    pub format: &'a str,
    pub channels: u16,
    pub sample_rate: u32,
    pub storage_path: &'a str,
    pub key_id: &'a str,
    pub algorithm: &'a str,
}

/// What a finished recording turned out to be.
#[derive(Debug, Clone, Default)]
pub struct RecordingOutcome {
    pub channels: Option<u16>,
    pub sample_rate: Option<u32>,
    pub duration_ms: Option<i64>,
    pub bytes: Option<i64>,
    pub stored_bytes: Option<i64>,
}

/// A tenant's recording key. The secret is only ever held wrapped.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordingKey {
    pub id: String,
    pub tenant_id: String,
    pub algorithm: String,
    /// Public half (an `age1…` recipient).
    pub recipient: String,
    #[serde(skip_serializing)]
    pub wrapped_secret: String,
    pub master_key_id: String,
    pub status: RecordingKeyStatus,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// A key to store; `wrapped_secret` is already wrapped by the master key.
#[derive(Debug, Clone)]
pub struct NewRecordingKey<'a> {
    pub id: &'a str,
    pub algorithm: &'a str,
    pub recipient: &'a str,
    pub wrapped_secret: &'a str,
    pub master_key_id: &'a str,
}

const RECORDING_COLUMNS: &str = "id, tenant_id, call_id, status, source, storage_path, format, \
     channels, sample_rate, duration_ms, bytes, stored_bytes, key_id, algorithm, created_at, \
     updated_at, deleted_at";

const KEY_COLUMNS: &str = "id, tenant_id, algorithm, recipient, wrapped_secret, master_key_id, \
     status, created_at, retired_at";

fn recording_from_row(row: &AnyRow) -> Result<Recording> {
    Ok(Recording {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        call_id: row.try_get("call_id")?,
        status: get_enum(row, "status")?,
        source: get_enum(row, "source")?,
        storage_path: row.try_get("storage_path")?,
        format: row.try_get("format")?,
        channels: row.try_get("channels")?,
        sample_rate: row.try_get("sample_rate")?,
        duration_ms: row.try_get("duration_ms")?,
        bytes: row.try_get("bytes")?,
        stored_bytes: row.try_get("stored_bytes")?,
        key_id: row.try_get("key_id")?,
        algorithm: row.try_get("algorithm")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        deleted_at: row.try_get("deleted_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<RecordingKey> {
    Ok(RecordingKey {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        algorithm: row.try_get("algorithm")?,
        recipient: row.try_get("recipient")?,
        wrapped_secret: row.try_get("wrapped_secret")?,
        master_key_id: row.try_get("master_key_id")?,
        status: get_enum(row, "status")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

impl Store {
    /// Creates a recording and, when it belongs to a call, links it from
    /// the call row (`calls.recording_id`), in one transaction: a stream
    /// recording always (the newest stream wins), a provider recording only
    /// when the call has none (it stays findable by `recordings.call_id`).
    pub async fn create_recording(
        &self,
        tenant_id: &str,
        rec: &NewRecording<'_>,
        now: i64,
    ) -> Result<Recording> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO recordings (id, tenant_id, call_id, status, source, storage_path, format, \
             channels, sample_rate, key_id, algorithm, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             RETURNING {RECORDING_COLUMNS}"
        ))
        .bind(rec.id)
        .bind(tenant_id)
        .bind(rec.call_id)
        .bind(rec.status.as_str())
        .bind(rec.source.as_str())
        .bind(rec.storage_path)
        .bind(rec.format)
        .bind(i64::from(rec.channels))
        .bind(i64::from(rec.sample_rate))
        .bind(rec.key_id)
        .bind(rec.algorithm)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(call_id) = rec.call_id {
            // The newest stream recording is the call's recording; a
            // provider's copy only fills the link when there is none.
            let sql = match rec.source {
                RecordingSource::Stream => {
                    "UPDATE calls SET recording_id = $1, updated_at = $2 \
                     WHERE tenant_id = $3 AND id = $4"
                }
                RecordingSource::Provider => {
                    "UPDATE calls SET recording_id = COALESCE(recording_id, $1), updated_at = $2 \
                     WHERE tenant_id = $3 AND id = $4"
                }
            };
            let linked = sqlx::query(sql)
                .bind(rec.id)
                .bind(now)
                .bind(tenant_id)
                .bind(call_id)
                .execute(&mut *tx)
                .await?;
            if linked.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        }
        tx.commit().await?;
        recording_from_row(&row)
    }

    /// Ends a recording still in `recording` with `status` and what it
    /// turned out to be. `None` if it had already ended (a second ending
    /// changes nothing).
    pub async fn finish_recording(
        &self,
        tenant_id: &str,
        id: &str,
        status: RecordingStatus,
        outcome: &RecordingOutcome,
        now: i64,
    ) -> Result<Option<Recording>> {
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "UPDATE recordings SET status = $1, channels = COALESCE($2, channels), \
             sample_rate = COALESCE($3, sample_rate), duration_ms = $4, bytes = $5, \
             stored_bytes = $6, updated_at = $7 \
             WHERE tenant_id = $8 AND id = $9 AND status = 'recording' \
             RETURNING {RECORDING_COLUMNS}"
        ))
        .bind(status.as_str())
        .bind(outcome.channels.map(i64::from))
        .bind(outcome.sample_rate.map(i64::from))
        .bind(outcome.duration_ms)
        .bind(outcome.bytes)
        .bind(outcome.stored_bytes)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(rec) = row.as_ref().map(recording_from_row).transpose()? else {
            return Ok(None);
        };
        // Readable audio (a recovered, interrupted file included).
        if matches!(
            rec.status,
            RecordingStatus::Completed | RecordingStatus::Interrupted
        ) {
            let data = serde_json::json!({
                "recording_id": rec.id, "call_id": rec.call_id, "status": rec.status,
                "duration_ms": rec.duration_ms,
            });
            self.publish_locked(
                tenant_id,
                super::EventType::RecordingReady,
                rec.call_id.as_deref(),
                data,
                now,
            )
            .await;
        }
        Ok(Some(rec))
    }

    pub async fn get_recording(&self, tenant_id: &str, id: &str) -> Result<Recording> {
        let row = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        recording_from_row(&row)
    }

    /// Recordings still marked as being written, of every tenant: at start,
    /// those a dead process left behind (startup recovery is cross-tenant by
    /// nature; each row still carries its tenant).
    pub async fn unfinished_recordings(&self) -> Result<Vec<Recording>> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE status = 'recording' \
             ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// Marks a recording deleted (its file and key material are gone); the
    /// row stays. `None` if it was already deleted.
    pub async fn mark_recording_deleted(
        &self,
        tenant_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<Recording>> {
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "UPDATE recordings SET status = 'deleted', deleted_at = $1, updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND status <> 'deleted' \
             RETURNING {RECORDING_COLUMNS}"
        ))
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(recording_from_row).transpose()
    }

    /// The tenant's active recording key, if it has one yet.
    pub async fn active_recording_key(&self, tenant_id: &str) -> Result<Option<RecordingKey>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM recording_keys WHERE tenant_id = $1 AND status = 'active'"
        ))
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    pub async fn recording_key(&self, tenant_id: &str, key_id: &str) -> Result<RecordingKey> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM recording_keys WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(key_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        key_from_row(&row)
    }

    /// Every recording key of the tenant, oldest first.
    pub async fn recording_keys(&self, tenant_id: &str) -> Result<Vec<RecordingKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM recording_keys WHERE tenant_id = $1 \
             ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Stores `key` as the tenant's active key. With `rotate`, the current
    /// active key is retired in the same transaction; without, a tenant that
    /// already has an active key gets `Conflict` (two first uses racing).
    pub async fn add_recording_key(
        &self,
        tenant_id: &str,
        key: &NewRecordingKey<'_>,
        rotate: bool,
        now: i64,
    ) -> Result<RecordingKey> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        if rotate {
            sqlx::query(
                "UPDATE recording_keys SET status = 'retired', retired_at = $1 \
                 WHERE tenant_id = $2 AND status = 'active'",
            )
            .bind(now)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO recording_keys (id, tenant_id, algorithm, recipient, wrapped_secret, \
             master_key_id, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7) \
             RETURNING {KEY_COLUMNS}"
        ))
        .bind(key.id)
        .bind(tenant_id)
        .bind(key.algorithm)
        .bind(key.recipient)
        .bind(key.wrapped_secret)
        .bind(key.master_key_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(
                    "the tenant already has an active recording key".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        key_from_row(&row)
    }
}

/// Retention: what the worker that enforces `retention_days` reads.
impl Store {
    /// Every tenant with its current `retention_days` (`None`: keep). All
    /// tenants, because a call can carry a shorter retention in its policy
    /// than its tenant has now. Cross-tenant by nature (one worker sweeps
    /// all); each result names its tenant and every later query is scoped
    /// to it.
    pub async fn tenant_retention(&self) -> Result<Vec<(String, Option<u32>)>> {
        let rows = sqlx::query("SELECT id, settings FROM tenants ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let id: String = row.try_get("id")?;
            let raw: String = row.try_get("settings")?;
            // One unreadable row must not stop retention for every tenant.
            match serde_json::from_str::<super::TenantSettings>(&raw) {
                Ok(settings) => out.push((id, settings.retention_days)),
                Err(_) => {
                    tracing::error!(tenant_id = %id, "tenant settings unreadable; retention skipped");
                }
            }
        }
        Ok(out)
    }

    /// A tenant's finished recordings (completed, interrupted or failed:
    /// not still being written, not already deleted) past their retention
    /// at `now` (ms), oldest first, at most `limit`, each with the days
    /// that applied: the shorter of their call's pinned retention and the
    /// tenant's `current_days` (either may be absent; both absent keeps).
    pub async fn recordings_past_retention(
        &self,
        tenant_id: &str,
        now: i64,
        current_days: Option<u32>,
        limit: u32,
    ) -> Result<Vec<(Recording, u32)>> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS}, days FROM ( \
               SELECT {RECORDING_COLUMNS}, ( \
                 SELECT CASE \
                   WHEN MIN(c.retention_days) IS NULL THEN CAST($3 AS BIGINT) \
                   WHEN CAST($3 AS BIGINT) IS NULL OR MIN(c.retention_days) < CAST($3 AS BIGINT) \
                     THEN MIN(c.retention_days) \
                   ELSE CAST($3 AS BIGINT) END \
                 FROM calls c WHERE c.tenant_id = recordings.tenant_id AND c.id = recordings.call_id \
               ) AS days \
               FROM recordings WHERE tenant_id = $1 \
               AND status IN ('completed', 'interrupted', 'failed') \
             ) r WHERE days IS NOT NULL AND created_at < $2 - days * 86400000 \
             ORDER BY created_at, id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(now)
        .bind(current_days.map(i64::from))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let days: i64 = row.try_get("days")?;
                Ok((
                    recording_from_row(row)?,
                    u32::try_from(days).unwrap_or(u32::MAX),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn new_key<'a>(id: &'a str) -> NewRecordingKey<'a> {
        NewRecordingKey {
            id,
            algorithm: "age-x25519",
            recipient: "age1example",
            wrapped_secret: "wrapped",
            master_key_id: "m1",
        }
    }

    #[tokio::test]
    async fn recording_lifecycle_is_tenant_scoped() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();
            let call = store
                .start_stream_call(&a.id, &testing::stream_call("CA1", "MZ1"), 1_000)
                .await
                .unwrap();
            let new = NewRecording {
                id: "r1",
                call_id: Some(&call.id),
                source: RecordingSource::Stream,
                status: RecordingStatus::Recording,
                format: "wav",
                channels: 2,
                sample_rate: 8000,
                storage_path: "a/r1.wav.age",
                key_id: "k1",
                algorithm: "age-x25519",
            };
            // Another tenant's call cannot be linked.
            assert!(matches!(
                store.create_recording(&b.id, &new, 1_000).await,
                Err(StoreError::NotFound)
            ));
            let rec = store.create_recording(&a.id, &new, 1_000).await.unwrap();
            assert_eq!(rec.status, RecordingStatus::Recording);
            assert_eq!(
                store
                    .get_call(&a.id, &call.id)
                    .await
                    .unwrap()
                    .recording_id
                    .as_deref(),
                Some("r1")
            );
            assert!(matches!(
                store.get_recording(&b.id, "r1").await,
                Err(StoreError::NotFound)
            ));
            assert_eq!(store.unfinished_recordings().await.unwrap().len(), 1);
            let outcome = RecordingOutcome {
                duration_ms: Some(1_500),
                bytes: Some(48_044),
                stored_bytes: Some(48_300),
                ..RecordingOutcome::default()
            };
            assert!(store
                .finish_recording(&b.id, "r1", RecordingStatus::Completed, &outcome, 2_000)
                .await
                .unwrap()
                .is_none());
            let done = store
                .finish_recording(&a.id, "r1", RecordingStatus::Completed, &outcome, 2_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (done.status, done.duration_ms, done.channels),
                (RecordingStatus::Completed, Some(1_500), 2)
            );
            // Ending twice changes nothing.
            assert!(store
                .finish_recording(&a.id, "r1", RecordingStatus::Failed, &outcome, 3_000)
                .await
                .unwrap()
                .is_none());
            assert!(store.unfinished_recordings().await.unwrap().is_empty());
            // The provider's copy does not take the call's link.
            let provider = NewRecording {
                id: "r2",
                source: RecordingSource::Provider,
                ..new.clone()
            };
            store
                .create_recording(&a.id, &provider, 2_500)
                .await
                .unwrap();
            assert_eq!(
                store
                    .get_call(&a.id, &call.id)
                    .await
                    .unwrap()
                    .recording_id
                    .as_deref(),
                Some("r1")
            );
            let gone = store
                .mark_recording_deleted(&a.id, "r1", 4_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(gone.deleted_at, Some(4_000));
        }
    }

    #[tokio::test]
    async fn one_active_key_per_tenant_and_rotation() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();
            assert!(store.active_recording_key(&a.id).await.unwrap().is_none());
            store
                .add_recording_key(&a.id, &new_key("k1"), false, 1)
                .await
                .unwrap();
            assert!(matches!(
                store
                    .add_recording_key(&a.id, &new_key("k2"), false, 2)
                    .await,
                Err(StoreError::Conflict(_))
            ));
            store
                .add_recording_key(&b.id, &new_key("kb"), false, 2)
                .await
                .unwrap();
            store
                .add_recording_key(&a.id, &new_key("k3"), true, 3)
                .await
                .unwrap();
            let active = store.active_recording_key(&a.id).await.unwrap().unwrap();
            assert_eq!(active.id, "k3");
            let all = store.recording_keys(&a.id).await.unwrap();
            assert_eq!(
                all.iter()
                    .map(|k| (k.id.as_str(), k.status))
                    .collect::<Vec<_>>(),
                [
                    ("k1", RecordingKeyStatus::Retired),
                    ("k3", RecordingKeyStatus::Active)
                ]
            );
            assert!(matches!(
                store.recording_key(&b.id, "k1").await,
                Err(StoreError::NotFound)
            ));
        }
    }

    fn new_recording<'a>(
        id: &'a str,
        call_id: Option<&'a str>,
        status: RecordingStatus,
    ) -> NewRecording<'a> {
        NewRecording {
            id,
            call_id,
            source: RecordingSource::Provider,
            status,
            format: "wav",
            channels: 1,
            sample_rate: 8000,
            storage_path: "p",
            key_id: "k",
            algorithm: "age-x25519",
        }
    }

    #[tokio::test]
    async fn retention_finds_old_finished_recordings_by_tenant_and_call_policy() {
        const DAY: i64 = 86_400_000;
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();
            let settings = crate::store::TenantSettings {
                retention_days: Some(7),
                ..Default::default()
            };
            store.set_tenant_settings(&a.id, &settings).await.unwrap();
            let found = store.tenant_retention().await.unwrap();
            assert!(found.contains(&(a.id.clone(), Some(7))));
            assert!(found.contains(&(b.id.clone(), None)));
            let mut ids = Vec::new();
            for (i, status) in [
                RecordingStatus::Completed,
                RecordingStatus::Recording,
                RecordingStatus::Failed,
                RecordingStatus::Completed,
            ]
            .into_iter()
            .enumerate()
            {
                let id = crate::store::new_id();
                store
                    .create_recording(&a.id, &new_recording(&id, None, status), 1_000 + i as i64)
                    .await
                    .unwrap();
                ids.push(id);
            }
            store
                .mark_recording_deleted(&a.id, &ids[3], 5_000)
                .await
                .unwrap();
            let now = 1_003 + 7 * DAY;
            let old = store
                .recordings_past_retention(&a.id, now, Some(7), 10)
                .await
                .unwrap();
            let got: Vec<(&str, u32)> = old.iter().map(|(r, d)| (r.id.as_str(), *d)).collect();
            // Still recording and already deleted are not retention's; the
            // cutoff is strict.
            assert_eq!(got, [(ids[0].as_str(), 7), (ids[2].as_str(), 7)]);
            let one = store
                .recordings_past_retention(&a.id, now, Some(7), 1)
                .await;
            assert_eq!(one.unwrap().len(), 1);
            // No retention anywhere: kept.
            let none = store.recordings_past_retention(&a.id, i64::MAX / 2, None, 10);
            assert!(none.await.unwrap().is_empty());

            // B keeps everything now, but one call was pinned at 1 day.
            let call = store
                .start_stream_call(&b.id, &testing::stream_call("CA1", "MZ1"), 1_000)
                .await
                .unwrap();
            let pinned = crate::store::CallPolicy {
                retention_days: Some(1),
                ..crate::store::CallPolicy::from_settings(&Default::default(), 1_000)
            };
            store
                .pin_call_policy(&b.id, &call.id, &pinned)
                .await
                .unwrap();
            let (with_call, without) = (crate::store::new_id(), crate::store::new_id());
            for (id, call_id) in [(&with_call, Some(call.id.as_str())), (&without, None)] {
                let new = new_recording(id, call_id, RecordingStatus::Completed);
                store.create_recording(&b.id, &new, 1_000).await.unwrap();
            }
            let old = store
                .recordings_past_retention(&b.id, 1_001 + DAY, None, 10)
                .await
                .unwrap();
            let got: Vec<(&str, u32)> = old.iter().map(|(r, d)| (r.id.as_str(), *d)).collect();
            assert_eq!(got, [(with_call.as_str(), 1)]);
            // The shorter wins: a tenant limit of 3 days does not lengthen it.
            let old = store
                .recordings_past_retention(&b.id, 1_001 + 3 * DAY, Some(3), 10)
                .await
                .unwrap();
            assert_eq!(old.len(), 2);
            assert!(old.iter().any(|(r, d)| r.id == with_call && *d == 1));
            assert!(old.iter().any(|(r, d)| r.id == without && *d == 3));
            // Another tenant sees none of them.
            let other = store.recordings_past_retention(&a.id, i64::MAX / 2, Some(1), 10);
            assert!(other
                .await
                .unwrap()
                .iter()
                .all(|(r, _)| ids.contains(&r.id)));
        }
    }
}
