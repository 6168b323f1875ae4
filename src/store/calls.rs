//! Calls and their append-only lifecycle log.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_enum, new_id, text_enum, Result, Store, StoreError};

text_enum! {
    pub enum Direction {
        Inbound => "inbound",
        Outbound => "outbound",
    }
}

text_enum! {
    /// Lifecycle of a call. `interrupted` is ours: the media stream ended
    /// without the provider saying so (socket lost, gateway shut down).
    pub enum CallStatus {
        Queued => "queued",
        Ringing => "ringing",
        InProgress => "in_progress",
        Completed => "completed",
        Busy => "busy",
        Failed => "failed",
        NoAnswer => "no_answer",
        Canceled => "canceled",
        Interrupted => "interrupted",
    }
}

impl CallStatus {
    /// Whether the call can change no further.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            CallStatus::Queued | CallStatus::Ringing | CallStatus::InProgress
        )
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    pub id: String,
    pub tenant_id: String,
    pub direction: Direction,
    pub status: CallStatus,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub provider: String,
    pub external_call_id: String,
    pub stream_id: Option<String>,
    pub started_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub recording_id: Option<String>,
    pub transcript_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CallLog {
    pub id: String,
    pub event: String,
    pub detail: serde_json::Value,
    pub created_at: i64,
}

/// One page of calls, newest first, with the cursor for the next.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallPage {
    pub calls: Vec<Call>,
    pub next_cursor: Option<String>,
}

/// The provider's view of a call whose media stream has started.
#[derive(Debug, Clone)]
pub struct StreamCall<'a> {
    pub provider: &'a str,
    pub external_call_id: &'a str,
    pub stream_id: &'a str,
    pub direction: Direction,
    pub from_number: Option<&'a str>,
    pub to_number: Option<&'a str>,
}

pub(super) const CALL_COLUMNS: &str =
    "id, tenant_id, direction, status, from_number, to_number, provider, \
     external_call_id, stream_id, started_at, answered_at, ended_at, duration_ms, recording_id, \
     transcript_id, created_at, updated_at";

pub(super) fn call_from_row(row: &AnyRow) -> Result<Call> {
    Ok(Call {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        direction: get_enum(row, "direction")?,
        status: get_enum(row, "status")?,
        from_number: row.try_get("from_number")?,
        to_number: row.try_get("to_number")?,
        provider: row.try_get("provider")?,
        external_call_id: row.try_get("external_call_id")?,
        stream_id: row.try_get("stream_id")?,
        started_at: row.try_get("started_at")?,
        answered_at: row.try_get("answered_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        recording_id: row.try_get("recording_id")?,
        transcript_id: row.try_get("transcript_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates the call a media stream belongs to, or matches the existing one
    /// by the provider's call id (within the tenant), and sets it in progress.
    pub async fn start_stream_call(
        &self,
        tenant_id: &str,
        call: &StreamCall<'_>,
        now: i64,
    ) -> Result<Call> {
        // Two attempts: a concurrent insert of the same call makes the first
        // fail on the unique key, after which the update path finds it.
        for _ in 0..2 {
            // One guard over both statements: on SQLite no other writer of
            // this process can slip in between.
            let _writer = self.writer().await;
            let updated = sqlx::query(&format!(
                "UPDATE calls SET status = $1, stream_id = $2, \
                 started_at = COALESCE(started_at, $3), answered_at = COALESCE(answered_at, $3), \
                 from_number = COALESCE(from_number, $4), to_number = COALESCE(to_number, $5), \
                 ended_at = NULL, duration_ms = NULL, updated_at = $3 \
                 WHERE tenant_id = $6 AND provider = $7 AND external_call_id = $8 \
                 RETURNING {CALL_COLUMNS}"
            ))
            .bind(CallStatus::InProgress.as_str())
            .bind(call.stream_id)
            .bind(now)
            .bind(call.from_number)
            .bind(call.to_number)
            .bind(tenant_id)
            .bind(call.provider)
            .bind(call.external_call_id)
            .fetch_optional(self.pool())
            .await?;
            if let Some(row) = updated {
                return call_from_row(&row);
            }
            let inserted = sqlx::query(&format!(
                "INSERT INTO calls (id, tenant_id, direction, status, from_number, to_number, provider, \
                 external_call_id, stream_id, started_at, answered_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10, $10) \
                 RETURNING {CALL_COLUMNS}"
            ))
            .bind(new_id())
            .bind(tenant_id)
            .bind(call.direction.as_str())
            .bind(CallStatus::InProgress.as_str())
            .bind(call.from_number)
            .bind(call.to_number)
            .bind(call.provider)
            .bind(call.external_call_id)
            .bind(call.stream_id)
            .bind(now)
            .fetch_one(self.pool())
            .await;
            match inserted {
                Ok(row) => return call_from_row(&row),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict("call changed concurrently".into()))
    }

    /// Ends a call that is still open, computing its duration from when it
    /// was answered. A call already ended keeps its first ending.
    pub async fn end_call(
        &self,
        tenant_id: &str,
        call_id: &str,
        status: CallStatus,
        now: i64,
    ) -> Result<Option<Call>> {
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "UPDATE calls SET status = $1, ended_at = $2, \
             duration_ms = $2 - COALESCE(answered_at, started_at, created_at), updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status IN ('queued', 'ringing', 'in_progress') \
             RETURNING {CALL_COLUMNS}"
        ))
        .bind(status.as_str())
        .bind(now)
        .bind(tenant_id)
        .bind(call_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(call_from_row).transpose()
    }

    pub async fn get_call(&self, tenant_id: &str, call_id: &str) -> Result<Call> {
        let row = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(call_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        call_from_row(&row)
    }

    /// Calls newest first. `cursor` is the last id of the previous page.
    pub async fn list_calls(
        &self,
        tenant_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<CallPage> {
        let limit = limit.clamp(1, 500) as i64;
        let rows = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let mut calls = rows.iter().map(call_from_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if calls.len() as i64 > limit {
            calls.truncate(limit as usize);
            calls.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(CallPage { calls, next_cursor })
    }

    /// Appends one lifecycle event; rows are never updated.
    pub async fn append_call_log(
        &self,
        tenant_id: &str,
        call_id: &str,
        event: &str,
        detail: &serde_json::Value,
        at: i64,
    ) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO call_logs (id, tenant_id, call_id, event, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new_id())
        .bind(tenant_id)
        .bind(call_id)
        .bind(event)
        .bind(detail.to_string())
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn list_call_logs(&self, tenant_id: &str, call_id: &str) -> Result<Vec<CallLog>> {
        let rows = sqlx::query(
            "SELECT id, event, detail, created_at FROM call_logs \
             WHERE tenant_id = $1 AND call_id = $2 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .bind(call_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(CallLog {
                    id: row.try_get("id")?,
                    event: row.try_get("event")?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|_| StoreError::Corrupt("call log detail".into()))?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Marks calls still in progress as interrupted, for a single-node
    /// gateway starting after a crash (its streams cannot have survived).
    /// Returns (tenant id, call id) of each call marked.
    pub async fn interrupt_open_calls(&self, now: i64) -> Result<Vec<(String, String)>> {
        let _writer = self.writer().await;
        let rows = sqlx::query(
            "UPDATE calls SET status = 'interrupted', ended_at = $1, \
             duration_ms = $1 - COALESCE(answered_at, started_at, created_at), updated_at = $1 \
             WHERE status = 'in_progress' AND stream_id IS NOT NULL RETURNING tenant_id, id",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("id")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn stream_call<'a>(call_sid: &'a str, stream: &'a str) -> StreamCall<'a> {
        StreamCall {
            provider: "twilio",
            external_call_id: call_sid,
            stream_id: stream,
            direction: Direction::Inbound,
            from_number: None,
            to_number: None,
        }
    }

    #[tokio::test]
    async fn lifecycle_is_tenant_scoped() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();

            let call = store
                .start_stream_call(&a.id, &stream_call("CA1", "MZ1"), 1_000)
                .await
                .unwrap();
            assert_eq!(call.status, CallStatus::InProgress);
            // The same callSid in the same tenant matches; another tenant gets its own.
            let again = store
                .start_stream_call(&a.id, &stream_call("CA1", "MZ2"), 2_000)
                .await
                .unwrap();
            assert_eq!(again.id, call.id);
            assert_eq!(again.stream_id.as_deref(), Some("MZ2"));
            assert_eq!(again.started_at, Some(1_000));
            let other = store
                .start_stream_call(&b.id, &stream_call("CA1", "MZ3"), 2_000)
                .await
                .unwrap();
            assert_ne!(other.id, call.id);

            assert!(matches!(
                store.get_call(&b.id, &call.id).await,
                Err(StoreError::NotFound)
            ));
            store
                .append_call_log(
                    &a.id,
                    &call.id,
                    "dtmf",
                    &serde_json::json!({"digit": "1"}),
                    1_500,
                )
                .await
                .unwrap();
            assert!(store
                .list_call_logs(&b.id, &call.id)
                .await
                .unwrap()
                .is_empty());
            assert_eq!(
                store.list_call_logs(&a.id, &call.id).await.unwrap().len(),
                1
            );

            let ended = store
                .end_call(&a.id, &call.id, CallStatus::Completed, 61_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ended.duration_ms, Some(60_000));
            // A second ending changes nothing.
            assert!(store
                .end_call(&a.id, &call.id, CallStatus::Interrupted, 70_000)
                .await
                .unwrap()
                .is_none());
            assert!(store
                .end_call(&b.id, &call.id, CallStatus::Completed, 70_000)
                .await
                .unwrap()
                .is_none());
        }
    }

    #[tokio::test]
    async fn pages_newest_first() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            for i in 0..5 {
                let sid = format!("CA{i}");
                store
                    .start_stream_call(&a.id, &stream_call(&sid, "MZ"), i)
                    .await
                    .unwrap();
            }
            let first = store.list_calls(&a.id, 2, None).await.unwrap();
            assert_eq!(first.calls[0].external_call_id, "CA4");
            let second = store
                .list_calls(&a.id, 2, first.next_cursor.as_deref())
                .await
                .unwrap();
            assert_eq!(second.calls[0].external_call_id, "CA2");
            let third = store
                .list_calls(&a.id, 2, second.next_cursor.as_deref())
                .await
                .unwrap();
            assert_eq!(third.calls.len(), 1);
            assert!(third.next_cursor.is_none());

            let open = store.interrupt_open_calls(100).await.unwrap();
            assert_eq!(open.len(), 5);
        }
    }
}
