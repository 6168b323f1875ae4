//! Provider webhooks: delivery deduplication and the call lifecycle driven
//! by status callbacks, which arrive late, twice, or out of order.

use sqlx::Row;

use super::calls::{call_from_row, CALL_COLUMNS};
use super::{get_enum, new_id, Call, CallStatus, Direction, Result, Store, StoreError};

/// Position in the lifecycle; a call never moves to a lower one.
fn rank(status: CallStatus) -> u8 {
    match status {
        CallStatus::Queued => 0,
        CallStatus::Ringing => 1,
        CallStatus::InProgress => 2,
        _ => 3,
    }
}

/// What to do with a provider's status for a call in `current` state whose
/// highest applied sequence is `current_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Apply,
    /// Nothing changes; the reason goes to the call log.
    Ignore(&'static str),
}

/// The ordering rule: sequences only go up; statuses only move forward;
/// an ended call stays ended, except that the provider's own ending
/// replaces our `interrupted` (we only knew the stream was lost).
pub fn transition(
    current: CallStatus,
    current_seq: Option<i64>,
    status: CallStatus,
    seq: Option<i64>,
) -> Transition {
    if let (Some(cur), Some(new)) = (current_seq, seq) {
        if new <= cur {
            return Transition::Ignore("older or repeated sequence number");
        }
    }
    if current.is_terminal() {
        return if current == CallStatus::Interrupted
            && status.is_terminal()
            && status != CallStatus::Interrupted
        {
            Transition::Apply
        } else {
            Transition::Ignore("call already ended")
        };
    }
    if rank(status) > rank(current) {
        Transition::Apply
    } else if rank(status) == rank(current) {
        Transition::Ignore("no change")
    } else {
        Transition::Ignore("out of order: call is further along")
    }
}

/// A call's state as the provider reports it.
#[derive(Debug, Clone)]
pub struct ProviderCallEvent<'a> {
    pub provider: &'a str,
    pub external_call_id: &'a str,
    pub status: CallStatus,
    pub sequence: Option<i64>,
    /// Length the provider reports once the call ended.
    pub duration_ms: Option<i64>,
    pub from_number: Option<&'a str>,
    pub to_number: Option<&'a str>,
    /// Creates the call with this direction if we do not know it yet;
    /// `None` leaves unknown calls alone.
    pub create_as: Option<Direction>,
}

/// What [`Store::apply_call_event`] did.
#[derive(Debug, Clone)]
pub enum CallEventOutcome {
    Created(Call),
    Applied(Call),
    Ignored(Call, &'static str),
    /// No such call and `create_as` was `None`.
    UnknownCall,
}

impl Store {
    /// Records that a webhook delivery is being acted on. `false` when its
    /// key was taken before: a redelivery, to be acknowledged and ignored.
    pub async fn claim_webhook(
        &self,
        tenant_id: &str,
        provider: &str,
        dedup_key: &str,
        idempotency_token: Option<&str>,
        kind: &str,
        now: i64,
    ) -> Result<bool> {
        let _writer = self.writer().await;
        let res = sqlx::query(
            "INSERT INTO webhook_deliveries (id, tenant_id, provider, dedup_key, \
             idempotency_token, kind, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id())
        .bind(tenant_id)
        .bind(provider)
        .bind(dedup_key)
        .bind(idempotency_token)
        .bind(kind)
        .bind(now)
        .execute(self.pool())
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a claim back after acting on the delivery failed, so the
    /// provider's retry is acted on.
    pub async fn release_webhook_claim(
        &self,
        tenant_id: &str,
        provider: &str,
        dedup_key: &str,
    ) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND provider = $2 AND dedup_key = $3",
        )
        .bind(tenant_id)
        .bind(provider)
        .bind(dedup_key)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The call by the provider's id.
    pub async fn find_provider_call(
        &self,
        tenant_id: &str,
        provider: &str,
        external_call_id: &str,
    ) -> Result<Option<Call>> {
        let row = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls \
             WHERE tenant_id = $1 AND provider = $2 AND external_call_id = $3"
        ))
        .bind(tenant_id)
        .bind(provider)
        .bind(external_call_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(call_from_row).transpose()
    }

    /// Moves a call along its lifecycle by [`transition`]'s rule, creating
    /// it if asked. Read and write are one step: under the SQLite writer
    /// lock, and on PostgreSQL by an update conditional on what was read
    /// (retried if another node moved the call meanwhile).
    pub async fn apply_call_event(
        &self,
        tenant_id: &str,
        ev: &ProviderCallEvent<'_>,
        now: i64,
    ) -> Result<CallEventOutcome> {
        for _ in 0..4 {
            let _writer = self.writer().await;
            let current = sqlx::query(
                "SELECT id, status, status_sequence, started_at, answered_at, ended_at, \
                 duration_ms, created_at FROM calls \
                 WHERE tenant_id = $1 AND provider = $2 AND external_call_id = $3",
            )
            .bind(tenant_id)
            .bind(ev.provider)
            .bind(ev.external_call_id)
            .fetch_optional(self.pool())
            .await?;
            let Some(row) = current else {
                let Some(direction) = ev.create_as else {
                    return Ok(CallEventOutcome::UnknownCall);
                };
                let answered = (ev.status == CallStatus::InProgress
                    || ev.status == CallStatus::Completed && ev.duration_ms.is_some())
                .then_some(now);
                let ended = ev.status.is_terminal().then_some(now);
                let duration = ended.map(|_| ev.duration_ms.unwrap_or(0));
                let inserted = sqlx::query(&format!(
                    "INSERT INTO calls (id, tenant_id, direction, status, from_number, to_number, \
                     provider, external_call_id, started_at, answered_at, ended_at, duration_ms, \
                     status_sequence, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $9, $9) \
                     RETURNING {CALL_COLUMNS}"
                ))
                .bind(new_id())
                .bind(tenant_id)
                .bind(direction.as_str())
                .bind(ev.status.as_str())
                .bind(ev.from_number)
                .bind(ev.to_number)
                .bind(ev.provider)
                .bind(ev.external_call_id)
                .bind(now)
                .bind(answered)
                .bind(ended)
                .bind(duration)
                .bind(ev.sequence)
                .fetch_one(self.pool())
                .await;
                match inserted {
                    Ok(row) => return Ok(CallEventOutcome::Created(call_from_row(&row)?)),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            let id: String = row.try_get("id")?;
            let status: CallStatus = get_enum(&row, "status")?;
            let seq: Option<i64> = row.try_get("status_sequence")?;
            let started_at: Option<i64> = row.try_get("started_at")?;
            let mut answered_at: Option<i64> = row.try_get("answered_at")?;
            let mut ended_at: Option<i64> = row.try_get("ended_at")?;
            let mut duration_ms: Option<i64> = row.try_get("duration_ms")?;
            let created_at: i64 = row.try_get("created_at")?;
            if let Transition::Ignore(why) = transition(status, seq, ev.status, ev.sequence) {
                let call = self.get_call(tenant_id, &id).await?;
                return Ok(CallEventOutcome::Ignored(call, why));
            }
            if ev.status == CallStatus::InProgress {
                answered_at = answered_at.or(Some(now));
            }
            if ev.status.is_terminal() {
                if status == CallStatus::Interrupted {
                    // Keep when the stream was lost; take the provider's length.
                    duration_ms = ev.duration_ms.or(duration_ms);
                } else {
                    ended_at = Some(now);
                    duration_ms = Some(
                        ev.duration_ms
                            .unwrap_or_else(|| answered_at.map_or(0, |a| now - a.min(now))),
                    );
                    if answered_at.is_none() && ev.duration_ms.is_some_and(|d| d > 0) {
                        answered_at = Some(now - ev.duration_ms.unwrap_or(0));
                    }
                }
            }
            let new_seq = match (seq, ev.sequence) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let updated = sqlx::query(&format!(
                "UPDATE calls SET status = $1, status_sequence = $2, \
                 started_at = $3, answered_at = $4, ended_at = $5, duration_ms = $6, \
                 from_number = COALESCE(from_number, $7), to_number = COALESCE(to_number, $8), \
                 updated_at = $9 \
                 WHERE tenant_id = $10 AND id = $11 AND status = $12 \
                 AND COALESCE(status_sequence, -1) = $13 RETURNING {CALL_COLUMNS}"
            ))
            .bind(ev.status.as_str())
            .bind(new_seq)
            .bind(started_at.or(Some(created_at)))
            .bind(answered_at)
            .bind(ended_at)
            .bind(duration_ms)
            .bind(ev.from_number)
            .bind(ev.to_number)
            .bind(now)
            .bind(tenant_id)
            .bind(&id)
            .bind(status.as_str())
            .bind(seq.unwrap_or(-1))
            .fetch_optional(self.pool())
            .await?;
            if let Some(row) = updated {
                return Ok(CallEventOutcome::Applied(call_from_row(&row)?));
            }
        }
        Err(StoreError::Conflict("call changed concurrently".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::stores;
    use CallStatus::*;

    #[test]
    fn statuses_only_move_forward() {
        assert_eq!(transition(Queued, None, Ringing, None), Transition::Apply);
        assert_eq!(
            transition(Ringing, Some(1), InProgress, Some(2)),
            Transition::Apply
        );
        assert_eq!(
            transition(InProgress, Some(2), Completed, Some(3)),
            Transition::Apply
        );
        // Late ringing after answer, by rank alone and by sequence.
        assert!(matches!(
            transition(InProgress, None, Ringing, None),
            Transition::Ignore(_)
        ));
        assert!(matches!(
            transition(InProgress, Some(2), Ringing, Some(1)),
            Transition::Ignore(_)
        ));
        // Same sequence again: a repeat.
        assert!(matches!(
            transition(Ringing, Some(1), Ringing, Some(1)),
            Transition::Ignore(_)
        ));
        // Ended stays ended...
        for end in [Completed, Busy, NoAnswer, Canceled, Failed] {
            assert!(matches!(
                transition(end, None, InProgress, None),
                Transition::Ignore(_)
            ));
            assert!(matches!(
                transition(end, None, Completed, None),
                Transition::Ignore(_)
            ));
        }
        // ...except that the provider's ending replaces our guess.
        assert_eq!(
            transition(Interrupted, None, Completed, None),
            Transition::Apply
        );
        assert!(matches!(
            transition(Interrupted, None, InProgress, None),
            Transition::Ignore(_)
        ));
    }

    fn event(status: CallStatus, seq: Option<i64>) -> ProviderCallEvent<'static> {
        ProviderCallEvent {
            provider: "twilio",
            external_call_id: "CA0123",
            status,
            sequence: seq,
            duration_ms: None,
            from_number: Some("+14155550100"),
            to_number: Some("+14155552671"),
            create_as: Some(Direction::Inbound),
        }
    }

    #[tokio::test]
    async fn out_of_order_events_leave_the_latest_state() {
        for store in stores().await {
            let t = store.create_tenant("A", None).await.unwrap();
            let created = store
                .apply_call_event(&t.id, &event(Ringing, Some(1)), 1_000)
                .await
                .unwrap();
            assert!(matches!(created, CallEventOutcome::Created(_)));
            let mut completed = event(Completed, Some(3));
            completed.duration_ms = Some(42_000);
            let done = store
                .apply_call_event(&t.id, &completed, 50_000)
                .await
                .unwrap();
            let CallEventOutcome::Applied(call) = done else {
                panic!("{done:?}")
            };
            assert_eq!(call.status, Completed);
            assert_eq!(call.duration_ms, Some(42_000));
            assert_eq!(call.ended_at, Some(50_000));
            // The answer callback arrives last: ignored.
            let late = store
                .apply_call_event(&t.id, &event(InProgress, Some(2)), 60_000)
                .await
                .unwrap();
            let CallEventOutcome::Ignored(call, _) = late else {
                panic!("{late:?}")
            };
            assert_eq!(call.status, Completed);
            // Not created twice.
            let page = store.list_calls(&t.id, 10, None).await.unwrap();
            assert_eq!(page.calls.len(), 1);
            // Unknown calls are left alone unless asked.
            let mut other = event(Ringing, None);
            other.external_call_id = "CA9999";
            other.create_as = None;
            assert!(matches!(
                store.apply_call_event(&t.id, &other, 1).await.unwrap(),
                CallEventOutcome::UnknownCall
            ));
            // Deliveries: claimed once.
            assert!(store
                .claim_webhook(&t.id, "twilio", "k1", Some("tok"), "call", 1)
                .await
                .unwrap());
            assert!(!store
                .claim_webhook(&t.id, "twilio", "k1", Some("tok"), "call", 2)
                .await
                .unwrap());
            store
                .release_webhook_claim(&t.id, "twilio", "k1")
                .await
                .unwrap();
            assert!(store
                .claim_webhook(&t.id, "twilio", "k1", None, "call", 3)
                .await
                .unwrap());
        }
    }
}
