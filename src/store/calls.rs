//! Calls and their append-only lifecycle log.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_enum, new_id, text_enum, EventType, Result, Store, StoreError};

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
    /// The customer the call was matched to by phone number (or linked by hand).
    pub customer_id: Option<String>,
    /// The ticket the call is linked to.
    pub ticket_id: Option<String>,
    /// The agent (a user of the tenant) the call is assigned to.
    pub assigned_user_id: Option<String>,
    pub disposition: Option<String>,
    pub notes: Option<String>,
    /// The provider conference the call's leg is in (Twilio `CF…`); hold and
    /// mute need one.
    pub conference_sid: Option<String>,
    /// What the tenant's settings said about this call when it started
    /// (see [`super::CallPolicy`]); `None` until it is resolved.
    pub policy: Option<super::CallPolicy>,
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

/// Filters for [`Store::list_calls_filtered`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub status: Option<CallStatus>,
    pub direction: Option<Direction>,
    /// Normalised E.164; matches the caller or the callee.
    pub number: Option<String>,
    /// Created at or after (ms since the epoch).
    pub created_from: Option<i64>,
    /// Created before (ms since the epoch).
    pub created_to: Option<i64>,
}

/// An outbound call the provider accepted, as stored.
#[derive(Debug, Clone)]
pub struct OutboundCallRow<'a> {
    pub provider: &'a str,
    pub external_call_id: &'a str,
    pub from_number: &'a str,
    pub to_number: &'a str,
    pub customer_id: Option<&'a str>,
    pub assigned_user_id: Option<&'a str>,
}

/// Changes to a call's record; the outer `None` leaves a field alone, an
/// inner `None` clears it. References are checked by the caller.
#[derive(Debug, Clone, Default)]
pub struct CallRecordUpdate {
    pub disposition: Option<Option<String>>,
    pub notes: Option<Option<String>>,
    pub assigned_user_id: Option<Option<String>>,
    pub ticket_id: Option<Option<String>>,
    pub customer_id: Option<Option<String>>,
    pub conference_sid: Option<Option<String>>,
}

impl CallRecordUpdate {
    pub fn is_empty(&self) -> bool {
        self.disposition.is_none()
            && self.notes.is_none()
            && self.assigned_user_id.is_none()
            && self.ticket_id.is_none()
            && self.customer_id.is_none()
            && self.conference_sid.is_none()
    }
}

/// A bind value for queries assembled from optional filters.
enum Bind {
    Text(String),
    Int(i64),
}

/// What [`Store::claim_stream_call`] made of a stream's start.
#[derive(Debug, Clone)]
pub enum StreamClaim {
    /// The call is in progress with this stream.
    Started(Box<Call>),
    /// The call has ended; it was left untouched.
    Ended(CallStatus),
    /// The call already has a stream; it was left untouched.
    Taken,
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
     transcript_id, customer_id, ticket_id, assigned_user_id, disposition, notes, conference_sid, \
     policy, created_at, updated_at";

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
        customer_id: row.try_get("customer_id")?,
        ticket_id: row.try_get("ticket_id")?,
        assigned_user_id: row.try_get("assigned_user_id")?,
        disposition: row.try_get("disposition")?,
        notes: row.try_get("notes")?,
        conference_sid: row.try_get("conference_sid")?,
        policy: super::policy::parse_policy(row.try_get("policy")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates the call a media stream belongs to, or matches the existing one
    /// by the provider's call id (within the tenant), and sets it in progress.
    /// A call that has ended, or already has its stream, is refused
    /// ([`StoreError::Conflict`]) and left as it is; see
    /// [`Store::claim_stream_call`] to tell the two apart.
    pub async fn start_stream_call(
        &self,
        tenant_id: &str,
        call: &StreamCall<'_>,
        now: i64,
    ) -> Result<Call> {
        match self.claim_stream_call(tenant_id, call, now).await? {
            StreamClaim::Started(call) => Ok(*call),
            StreamClaim::Ended(status) => Err(StoreError::Conflict(format!(
                "the call has ended ({})",
                status.as_str()
            ))),
            StreamClaim::Taken => Err(StoreError::Conflict(
                "the call already has a media stream".into(),
            )),
        }
    }

    /// Gives a media stream its call: creates the call, or takes the
    /// existing one (matched by the provider's call id within the tenant)
    /// if it is still open and has no stream yet, and sets it in progress.
    /// One call carries one stream: a second stream, or one for a call that
    /// has ended, changes nothing and is told why. The check and the change
    /// are one statement, so racing streams (on any node) cannot both win.
    pub async fn claim_stream_call(
        &self,
        tenant_id: &str,
        call: &StreamCall<'_>,
        now: i64,
    ) -> Result<StreamClaim> {
        // Two attempts: a concurrent insert of the same call makes the first
        // fail on the unique key, after which the update path finds it.
        for _ in 0..2 {
            // One guard over the statements: on SQLite no other writer of
            // this process can slip in between.
            let _writer = self.writer().await;
            let updated = sqlx::query(&format!(
                "UPDATE calls SET status = $1, stream_id = $2, \
                 started_at = COALESCE(started_at, $3), answered_at = COALESCE(answered_at, $3), \
                 from_number = COALESCE(from_number, $4), to_number = COALESCE(to_number, $5), \
                 updated_at = $3 \
                 WHERE tenant_id = $6 AND provider = $7 AND external_call_id = $8 \
                 AND stream_id IS NULL AND status IN ('queued', 'ringing', 'in_progress') \
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
                let call = call_from_row(&row)?;
                self.publish_call_started(&call, now).await;
                return Ok(StreamClaim::Started(Box::new(call)));
            }
            let existing = sqlx::query(
                "SELECT status FROM calls \
                 WHERE tenant_id = $1 AND provider = $2 AND external_call_id = $3",
            )
            .bind(tenant_id)
            .bind(call.provider)
            .bind(call.external_call_id)
            .fetch_optional(self.pool())
            .await?;
            if let Some(row) = existing {
                let status: CallStatus = get_enum(&row, "status")?;
                return Ok(if status.is_terminal() {
                    StreamClaim::Ended(status)
                } else {
                    StreamClaim::Taken
                });
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
                Ok(row) => {
                    let call = call_from_row(&row)?;
                    self.publish_call_started(&call, now).await;
                    return Ok(StreamClaim::Started(Box::new(call)));
                }
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
        let Some(call) = row.as_ref().map(call_from_row).transpose()? else {
            return Ok(None);
        };
        let kind = if status == CallStatus::Interrupted {
            EventType::CallInterrupted
        } else {
            EventType::CallCompleted
        };
        let data = serde_json::json!({
            "call_id": call.id, "status": call.status, "duration_ms": call.duration_ms,
        });
        self.publish_locked(tenant_id, kind, Some(&call.id), data, now)
            .await;
        Ok(Some(call))
    }

    /// `call.started`: a media stream took the call (the writer guard is held).
    async fn publish_call_started(&self, call: &Call, now: i64) {
        let data = serde_json::json!({
            "call_id": call.id, "status": call.status, "direction": call.direction,
        });
        self.publish_locked(
            &call.tenant_id,
            EventType::CallStarted,
            Some(&call.id),
            data,
            now,
        )
        .await;
    }

    /// Sets when an interrupted call ended (e.g. where its recovered audio
    /// stops), and its duration from that; other calls are left alone.
    pub async fn set_interrupted_call_end(
        &self,
        tenant_id: &str,
        call_id: &str,
        ended_at: i64,
        now: i64,
    ) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "UPDATE calls SET ended_at = $1, duration_ms = CASE \
             WHEN $1 > COALESCE(answered_at, started_at, created_at) \
             THEN $1 - COALESCE(answered_at, started_at, created_at) ELSE 0 END, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status = 'interrupted'",
        )
        .bind(ended_at)
        .bind(now)
        .bind(tenant_id)
        .bind(call_id)
        .execute(self.pool())
        .await?;
        Ok(())
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
        self.list_calls_filtered(tenant_id, &CallFilter::default(), limit, cursor)
            .await
    }

    /// Calls matching `filter`, newest first. `cursor` is the last id of the
    /// previous page (ids are time-ordered, so paging by id is stable while
    /// new calls arrive).
    pub async fn list_calls_filtered(
        &self,
        tenant_id: &str,
        filter: &CallFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<CallPage> {
        let limit = limit.clamp(1, 500) as i64;
        let mut sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE tenant_id = $1");
        let mut binds: Vec<Bind> = vec![Bind::Text(tenant_id.to_string())];
        let mut push = |clause: &str, value: Bind, sql: &mut String| {
            binds.push(value);
            let n = binds.len();
            sql.push_str(&clause.replace("$?", &format!("${n}")));
        };
        if let Some(c) = cursor {
            push(" AND id < $?", Bind::Text(c.to_string()), &mut sql);
        }
        if let Some(s) = filter.status {
            push(" AND status = $?", Bind::Text(s.as_str().into()), &mut sql);
        }
        if let Some(d) = filter.direction {
            push(
                " AND direction = $?",
                Bind::Text(d.as_str().into()),
                &mut sql,
            );
        }
        if let Some(n) = &filter.number {
            push(" AND (from_number = $?", Bind::Text(n.clone()), &mut sql);
            push(" OR to_number = $?)", Bind::Text(n.clone()), &mut sql);
        }
        if let Some(t) = filter.created_from {
            push(" AND created_at >= $?", Bind::Int(t), &mut sql);
        }
        if let Some(t) = filter.created_to {
            push(" AND created_at < $?", Bind::Int(t), &mut sql);
        }
        push(" ORDER BY id DESC LIMIT $?", Bind::Int(limit + 1), &mut sql);
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut calls = rows.iter().map(call_from_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if calls.len() as i64 > limit {
            calls.truncate(limit as usize);
            calls.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(CallPage { calls, next_cursor })
    }

    /// Records an outbound call the provider accepted. A status callback that
    /// raced ahead and created the row first is merged into, not duplicated.
    pub async fn create_outbound_call(
        &self,
        tenant_id: &str,
        call: &OutboundCallRow<'_>,
        now: i64,
    ) -> Result<Call> {
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "INSERT INTO calls (id, tenant_id, direction, status, from_number, to_number, provider, \
             external_call_id, customer_id, assigned_user_id, created_at, updated_at) \
             VALUES ($1, $2, 'outbound', 'queued', $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (tenant_id, provider, external_call_id) DO UPDATE SET \
             direction = 'outbound', \
             from_number = COALESCE(calls.from_number, excluded.from_number), \
             to_number = COALESCE(calls.to_number, excluded.to_number), \
             customer_id = COALESCE(calls.customer_id, excluded.customer_id), \
             assigned_user_id = COALESCE(calls.assigned_user_id, excluded.assigned_user_id), \
             updated_at = excluded.updated_at \
             RETURNING {CALL_COLUMNS}"
        ))
        .bind(new_id())
        .bind(tenant_id)
        .bind(call.from_number)
        .bind(call.to_number)
        .bind(call.provider)
        .bind(call.external_call_id)
        .bind(call.customer_id)
        .bind(call.assigned_user_id)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        call_from_row(&row)
    }

    /// Applies an edit of the call record. The caller checks that referenced
    /// users, tickets and customers belong to the tenant.
    pub async fn update_call_record(
        &self,
        tenant_id: &str,
        call_id: &str,
        update: &CallRecordUpdate,
        now: i64,
    ) -> Result<Call> {
        let mut sql = String::from("UPDATE calls SET updated_at = $1");
        let mut binds: Vec<Option<String>> = Vec::new();
        let mut set = |col: &str, v: &Option<Option<String>>, sql: &mut String| {
            if let Some(v) = v {
                binds.push(v.clone());
                sql.push_str(&format!(", {col} = ${}", binds.len() + 1));
            }
        };
        set("disposition", &update.disposition, &mut sql);
        set("notes", &update.notes, &mut sql);
        set("assigned_user_id", &update.assigned_user_id, &mut sql);
        set("ticket_id", &update.ticket_id, &mut sql);
        set("customer_id", &update.customer_id, &mut sql);
        set("conference_sid", &update.conference_sid, &mut sql);
        let n = binds.len() + 1;
        sql.push_str(&format!(
            " WHERE tenant_id = ${} AND id = ${} RETURNING {CALL_COLUMNS}",
            n + 1,
            n + 2
        ));
        let mut query = sqlx::query(&sql).bind(now);
        for b in binds {
            query = query.bind(b);
        }
        let _writer = self.writer().await;
        let row = query
            .bind(tenant_id)
            .bind(call_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        call_from_row(&row)
    }

    /// The tenant's own Twilio account, `None` when it has none configured.
    pub async fn tenant_twilio_credentials(
        &self,
        tenant_id: &str,
    ) -> Result<Option<super::TwilioCredentials>> {
        let row = sqlx::query(
            "SELECT id, twilio_account_sid, twilio_auth_token, secrets_master_key_id FROM tenants \
             WHERE id = $1 AND twilio_account_sid IS NOT NULL AND twilio_auth_token IS NOT NULL",
        )
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| self.credentials(&r)).transpose()
    }

    /// The tenant's live phone numbers (not released or failed), E.164.
    pub async fn tenant_caller_ids(&self, tenant_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT number FROM phone_numbers WHERE tenant_id = $1 \
             AND status IN ('active', 'pending') ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("number")?)).collect()
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

    use crate::store::testing::stream_call;

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
            // A second stream for the same call is refused and changes nothing;
            // another tenant's call with the same callSid is its own.
            assert!(matches!(
                store
                    .claim_stream_call(&a.id, &stream_call("CA1", "MZ2"), 2_000)
                    .await
                    .unwrap(),
                StreamClaim::Taken
            ));
            let again = store.get_call(&a.id, &call.id).await.unwrap();
            assert_eq!(again.stream_id.as_deref(), Some("MZ1"));
            assert_eq!(again.updated_at, 1_000);
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
            // A stream replayed after the call ended does not reopen it.
            assert!(matches!(
                store
                    .claim_stream_call(&a.id, &stream_call("CA1", "MZ9"), 80_000)
                    .await
                    .unwrap(),
                StreamClaim::Ended(CallStatus::Completed)
            ));
            assert!(matches!(
                store
                    .start_stream_call(&a.id, &stream_call("CA1", "MZ9"), 80_000)
                    .await,
                Err(StoreError::Conflict(_))
            ));
            let after = store.get_call(&a.id, &call.id).await.unwrap();
            assert_eq!(
                (after.status, after.stream_id.as_deref(), after.ended_at),
                (CallStatus::Completed, Some("MZ1"), Some(61_000))
            );
        }
    }

    #[tokio::test]
    async fn answered_call_takes_its_one_stream() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let answered = store
                .create_outbound_call(
                    &a.id,
                    &OutboundCallRow {
                        provider: "twilio",
                        external_call_id: "CA7",
                        from_number: "+14155550100",
                        to_number: "+14155550101",
                        customer_id: None,
                        assigned_user_id: None,
                    },
                    500,
                )
                .await
                .unwrap();
            let StreamClaim::Started(call) = store
                .claim_stream_call(&a.id, &stream_call("CA7", "MZ7"), 1_000)
                .await
                .unwrap()
            else {
                panic!("an answered call without a stream takes one");
            };
            assert_eq!(call.id, answered.id);
            assert_eq!(call.status, CallStatus::InProgress);
            assert_eq!(call.stream_id.as_deref(), Some("MZ7"));
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
