//! Usage figures computed from the rows that record the work (calls,
//! recordings, transcripts, stream intervals), so they cannot drift from
//! what happened. Time ranges are half-open `[from, to)` in unix ms.

use sqlx::Row;

use super::{new_id, Direction, Result, Store};

/// Calls of one direction in a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallUsage {
    pub count: i64,
    pub duration_ms: i64,
}

/// Everything the usage report needs, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub inbound: CallUsage,
    pub outbound: CallUsage,
    pub recorded_ms: i64,
    pub transcribed_ms: i64,
    /// Bytes still stored (not deleted) of the recordings made in the range.
    pub storage_bytes: i64,
    pub concurrent_streams_peak: u32,
}

/// The most intervals open at one instant within `[from, to)`. An interval
/// still open (`None` end) runs to `to`; ends sort before starts at the
/// same instant (a stream that ended as another began is not overlap).
pub fn peak_concurrency(intervals: &[(i64, Option<i64>)], from: i64, to: i64) -> u32 {
    let mut edges: Vec<(i64, i32)> = Vec::with_capacity(intervals.len() * 2);
    for &(start, end) in intervals {
        let start = start.max(from);
        let end = end.unwrap_or(to).min(to);
        if start < end {
            edges.push((start, 1));
            edges.push((end, -1));
        }
    }
    edges.sort_unstable_by_key(|&(t, d)| (t, d));
    let (mut open, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        peak = peak.max(open);
    }
    peak.max(0) as u32
}

impl Store {
    /// A media stream of `call_id` began; returns the interval's id.
    pub async fn open_stream_usage(
        &self,
        tenant_id: &str,
        call_id: &str,
        now: i64,
    ) -> Result<String> {
        let id = new_id();
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO stream_usage (id, tenant_id, call_id, started_at, ended_at) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(call_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    pub async fn close_stream_usage(&self, tenant_id: &str, id: &str, now: i64) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "UPDATE stream_usage SET ended_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND ended_at IS NULL",
        )
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Closes intervals left open by a gateway that stopped (SQLite, single
    /// node: nothing can still be streaming at start).
    pub async fn close_open_stream_usage(&self, now: i64) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query("UPDATE stream_usage SET ended_at = $1 WHERE ended_at IS NULL")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Milliseconds of audio transcribed in `[from, to)`: per transcript,
    /// the call's length when known (live transcription hears all of it),
    /// else the end of its last segment.
    pub async fn transcribed_ms(&self, tenant_id: &str, from: i64, to: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(COALESCE(c.duration_ms, \
               (SELECT MAX(s.end_ms) FROM transcript_segments s \
                WHERE s.tenant_id = t.tenant_id AND s.transcript_id = t.id), 0)), 0) AS BIGINT) AS ms \
             FROM transcripts t LEFT JOIN calls c ON c.tenant_id = t.tenant_id AND c.id = t.call_id \
             WHERE t.tenant_id = $1 AND t.created_at >= $2 AND t.created_at < $3 \
             AND t.status <> 'failed'",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("ms")?)
    }

    /// Milliseconds recorded in `[from, to)` (deleted recordings count: the
    /// minutes were used).
    pub async fn recorded_ms(&self, tenant_id: &str, from: i64, to: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) AS ms FROM recordings \
             WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 AND status <> 'failed'",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("ms")?)
    }

    /// The usage report's figures for `[from, to)`.
    pub async fn usage_totals(&self, tenant_id: &str, from: i64, to: i64) -> Result<UsageTotals> {
        let mut totals = UsageTotals::default();
        let rows = sqlx::query(
            "SELECT direction, COUNT(*) AS n, CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) AS ms \
             FROM calls WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3 \
             GROUP BY direction",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        for row in rows {
            let direction: Direction = super::get_enum(&row, "direction")?;
            let usage = CallUsage {
                count: row.try_get("n")?,
                duration_ms: row.try_get("ms")?,
            };
            match direction {
                Direction::Inbound => totals.inbound = usage,
                Direction::Outbound => totals.outbound = usage,
            }
        }
        totals.recorded_ms = self.recorded_ms(tenant_id, from, to).await?;
        totals.transcribed_ms = self.transcribed_ms(tenant_id, from, to).await?;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS b FROM recordings \
             WHERE tenant_id = $1 AND status <> 'deleted' AND created_at >= $2 AND created_at < $3",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_one(self.pool())
        .await?;
        totals.storage_bytes = row.try_get("b")?;
        let rows = sqlx::query(
            "SELECT started_at, ended_at FROM stream_usage WHERE tenant_id = $1 \
             AND started_at < $2 AND (ended_at IS NULL OR ended_at >= $3)",
        )
        .bind(tenant_id)
        .bind(to)
        .bind(from)
        .fetch_all(self.pool())
        .await?;
        let intervals = rows
            .iter()
            .map(|r| Ok((r.try_get("started_at")?, r.try_get("ended_at")?)))
            .collect::<Result<Vec<(i64, Option<i64>)>>>()?;
        totals.concurrent_streams_peak = peak_concurrency(&intervals, from, to);
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::stores;

    #[test]
    fn peak_counts_overlap_only() {
        assert_eq!(peak_concurrency(&[], 0, 100), 0);
        // Back to back: never two at once.
        assert_eq!(
            peak_concurrency(&[(0, Some(10)), (10, Some(20))], 0, 100),
            1
        );
        assert_eq!(
            peak_concurrency(
                &[(0, Some(50)), (10, Some(20)), (15, None), (60, Some(70))],
                0,
                100
            ),
            3
        );
        // Outside the range: not counted; straddling the start: counted.
        assert_eq!(
            peak_concurrency(&[(0, Some(10)), (5, Some(30))], 20, 100),
            1
        );
        assert_eq!(peak_concurrency(&[(200, None)], 0, 100), 0);
    }

    #[tokio::test]
    async fn totals_from_rows() {
        for store in stores().await {
            let t = store.create_tenant("A", None).await.unwrap();
            let other = store.create_tenant("B", None).await.unwrap();
            for (tenant, sid, dir) in [
                (&t.id, "CA1", Direction::Inbound),
                (&t.id, "CA2", Direction::Inbound),
                (&t.id, "CA3", Direction::Outbound),
                (&other.id, "CA4", Direction::Inbound),
            ] {
                let ev = crate::store::ProviderCallEvent {
                    provider: "twilio",
                    external_call_id: sid,
                    status: crate::store::CallStatus::Completed,
                    sequence: None,
                    duration_ms: Some(90_000),
                    from_number: None,
                    to_number: None,
                    create_as: Some(dir),
                };
                store.apply_call_event(tenant, &ev, 1_000).await.unwrap();
            }
            let calls = store.list_calls(&t.id, 10, None).await.unwrap().calls;
            let a = store
                .open_stream_usage(&t.id, &calls[0].id, 1_000)
                .await
                .unwrap();
            let _b = store
                .open_stream_usage(&t.id, &calls[1].id, 1_500)
                .await
                .unwrap();
            store.close_stream_usage(&t.id, &a, 2_000).await.unwrap();
            let _c = store
                .open_stream_usage(&t.id, &calls[2].id, 2_000)
                .await
                .unwrap();
            let u = store.usage_totals(&t.id, 0, i64::MAX).await.unwrap();
            assert_eq!(
                u.inbound,
                CallUsage {
                    count: 2,
                    duration_ms: 180_000
                }
            );
            assert_eq!(
                u.outbound,
                CallUsage {
                    count: 1,
                    duration_ms: 90_000
                }
            );
            assert_eq!(u.concurrent_streams_peak, 2);
            assert_eq!(
                (u.recorded_ms, u.transcribed_ms, u.storage_bytes),
                (0, 0, 0)
            );
            let none = store.usage_totals(&t.id, 5_000, 6_000).await.unwrap();
            assert_eq!(none.inbound.count, 0);
            assert_eq!(none.concurrent_streams_peak, 2, "two streams still open");
        }
    }

    #[tokio::test]
    async fn storage_bytes_count_recordings_made_in_the_range() {
        use crate::store::{NewRecording, RecordingOutcome, RecordingSource, RecordingStatus};
        for store in stores().await {
            let t = store.create_tenant("A", None).await.unwrap();
            for (at, bytes, deleted) in [(1_000, 100, false), (2_000, 20, false), (2_500, 7, true)]
            {
                let id = new_id();
                let new = NewRecording {
                    id: &id,
                    call_id: None,
                    source: RecordingSource::Stream,
                    status: RecordingStatus::Recording,
                    format: "wav",
                    channels: 2,
                    sample_rate: 8000,
                    storage_path: "p",
                    key_id: "k",
                    algorithm: "age-x25519",
                };
                store.create_recording(&t.id, &new, at).await.unwrap();
                let outcome = RecordingOutcome {
                    bytes: Some(bytes),
                    ..Default::default()
                };
                store
                    .finish_recording(&t.id, &id, RecordingStatus::Completed, &outcome, at)
                    .await
                    .unwrap();
                if deleted {
                    store.mark_recording_deleted(&t.id, &id, at).await.unwrap();
                }
            }
            let bytes = |from, to| {
                let store = store.clone();
                let t = t.id.clone();
                async move {
                    store
                        .usage_totals(&t, from, to)
                        .await
                        .unwrap()
                        .storage_bytes
                }
            };
            assert_eq!(bytes(0, i64::MAX).await, 120);
            assert_eq!(bytes(1_500, 3_000).await, 20, "deleted ones are not stored");
            assert_eq!(bytes(0, 1_000).await, 0, "the end is exclusive");
            assert_eq!(bytes(3_000, 4_000).await, 0);
        }
    }
}
